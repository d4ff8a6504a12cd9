/* lib_model.h - the library's model (include/q3.h's q3_model), shared by the
 * files that implement q3.h (internal). */
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

/* The backend model of impl on the device o asks for, created on first use. */
q3_backend_model *q3_model_backend(q3_model *m, const q3_backend_impl *impl, const q3_backend_opts *o, q3_err *err);

#endif
