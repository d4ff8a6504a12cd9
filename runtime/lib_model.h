/* lib_model.h - the library's model and context (include/q3.h's q3_model and
 * q3_context), shared by the files that implement q3.h (internal). */
#ifndef Q3_LIB_MODEL_H
#define Q3_LIB_MODEL_H

#include <pthread.h>
#include "../format/q3_format.h"
#include "backend.h"
#include "tokenizer.h"

struct q3_model {
    q3_file file;
    /* Guards what is built on first use: the tokenizer and the backend models. */
    pthread_mutex_t lock;
    q3_tokdata td;     /* the TOKENIZER section (the chat template lives in it) */
    q3_tokenizer *tk;
    /* One per backend and device that a context was created on: the shared weights. */
    q3_backend_model **backends;
    int n_backends;
};

struct q3_context {
    q3_model *model;
    q3_backend *b;
    float *logits;    /* the last token's; the backend's own memory where it has some */
    int logits_owned; /* malloc'd here */
    int logits_valid; /* they are those of position pos - 1 (a saved state carries them) */
    int pos;          /* positions the cache holds */
};

/* The backend model of impl on the device o asks for, created on first use. */
q3_backend_model *q3_model_backend(q3_model *m, const q3_backend_impl *impl, const q3_backend_opts *o, q3_err *err);

#endif
