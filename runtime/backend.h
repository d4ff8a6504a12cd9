/* backend.h - what q3run, q3bench and the tests need from a compute backend.
 * A backend owns its KV cache; forward() appends tokens at positions pos.. and
 * returns logits. Backends embed q3_backend as their first member. */
#ifndef Q3_BACKEND_H
#define Q3_BACKEND_H

#include "../format/q3_format.h"

typedef struct {
    int n_threads;  /* CPU: worker threads (0 = all cores) */
    int n_ctx;      /* KV cache positions (0 = min(max_position_embeddings, 4096)) */
    int device;     /* OpenCL: device index across all platforms (-1 = first GPU, else first device) */
    int verbose;    /* print backend / device choice on stderr */
} q3_backend_opts;

typedef struct q3_backend {
    const char *name; /* "cpu" or "opencl" */
    const q3_file *file;
    int n_ctx;
    /* Run n_tokens tokens at positions pos..pos+n_tokens-1 (a prompt batch or one
     * decoded token). logits: vocab_size floats for the last token, or, when
     * all_logits, n_tokens * vocab_size floats. pos + n_tokens > n_ctx is an error. */
    int (*forward)(struct q3_backend *b, const int32_t *tokens, int n_tokens, int pos,
                   float *logits, int all_logits, q3_err *err);
    void (*destroy)(struct q3_backend *b);
    /* Optional (NULL when the backend has none): room for n_floats logits that
     * forward() delivers into fastest, owned by the backend until destroy. OpenCL:
     * pinned host memory (NVIDIA reads 608 KB of logits into it in 18 us, into
     * malloc'd memory in 65). NULL from the call: use memory of your own. */
    float *(*logits_buffer)(struct q3_backend *b, size_t n_floats);
} q3_backend;

/* b's logits_buffer if it has one, else *owned = 1 and malloc'd memory for the
 * caller to free. NULL: out of memory. */
float *q3_backend_logits(q3_backend *b, size_t n_floats, int *owned);

/* Shared by the backends (backend.c). The context a backend is created with:
 * o->n_ctx, or min(max_position_embeddings, 4096); more than the model's
 * maximum is an error. */
int q3_backend_n_ctx(const q3_file *f, const q3_backend_opts *o, int *n_ctx, q3_err *err);
/* A forward call's positions fit the context and its ids the vocabulary. */
int q3_backend_check_call(const q3_backend *b, const int32_t *tokens, int n_tokens, int pos, q3_err *err);
/* RoPE cos/sin for positions 0..n_ctx-1, [pos][head_dim / 2] each. */
void q3_rope_tables(const q3_config *c, int n_ctx, float *cos_t, float *sin_t);

q3_backend *q3_backend_cpu_create(const q3_file *f, const q3_backend_opts *o, q3_err *err);
/* Returns NULL with a clear err when no OpenCL platform/device is usable. */
q3_backend *q3_backend_opencl_create(const q3_file *f, const q3_backend_opts *o, q3_err *err);

#endif
