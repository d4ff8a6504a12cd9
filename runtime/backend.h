/* backend.h - the interface between the library and a compute backend (internal).
 *
 * A backend is one file that defines a q3_backend_impl and one line in
 * backend_registry.c. Everything backends do alike lives in backend.c: the
 * weights binding, the context size, the checks on a call, the loop that cuts a
 * prompt into passes of at most max_batch tokens, creation and destruction.
 *
 * Two levels of state: a q3_backend_model is what all contexts of one model on
 * one device share (the bound weights; for OpenCL the program and the uploaded
 * weights), a q3_backend is one context (its KV cache and activations). */
#ifndef Q3_BACKEND_H
#define Q3_BACKEND_H

#include "../format/q3_format.h"
#include "weights.h"

typedef struct {
    int n_threads;  /* CPU: worker threads (0 = all cores) */
    int n_ctx;      /* KV cache positions (0 = min(max_position_embeddings, 4096)) */
    int device;     /* OpenCL: device index across all platforms (-1 = first GPU, else first device) */
    int verbose;    /* print backend / device choice on stderr */
    int cache_q8;   /* the KV cache in 8 bits (Q3_CACHE_Q8_0); a backend without it refuses */
} q3_backend_opts;

typedef struct q3_backend q3_backend;

typedef struct {
    const char *name;  /* what --backend takes */
    size_t size;       /* bytes of the backend's context struct, which begins with a q3_backend */
    int max_batch;     /* tokens per pass (init may set another in q3_backend.max_batch) */
    int has_cache_q8;  /* 1: init takes q3_backend_opts.cache_q8 (an 8-bit KV cache) */
    /* Optional (NULL: one device, 0): the device index opts ask for, resolved. */
    int (*resolve_device)(const q3_file *f, const q3_backend_opts *o, int *device, q3_err *err);
    /* Optional (NULL: nothing shared beyond the weights binding): state shared by every
     * context of the model on that device, freed by shared_free. */
    void *(*shared_create)(const q3_file *f, const q3_weights *w, int device, const q3_backend_opts *o, q3_err *err);
    void (*shared_free)(void *shared);
    /* A context: b's common fields are set (file, weights, shared, n_ctx); allocate the
     * rest. On failure release() still runs. */
    int (*init)(q3_backend *b, const q3_backend_opts *o, q3_err *err);
    /* One pass of 1..max_batch tokens at positions pos.. (checked by the caller).
     * logits NULL: none wanted (an earlier pass of a long prompt); else the last
     * token's vocab_size floats, or with all_logits every token's. */
    int (*pass)(q3_backend *b, const int32_t *tokens, int n, int pos, float *logits, int all_logits, q3_err *err);
    /* Optional: one decode step of n <= max_decode contexts of this backend model at once,
     * token i into bs[i] at position pos[i] (checked by the caller; no context twice),
     * its vocab_size logits into logits[i], each bit for bit what pass() would give for
     * that context alone. NULL: backend.c runs the contexts one after another. */
    int (*decode_batch)(q3_backend *const *bs, const int32_t *tokens, const int *pos, int n, float *const *logits,
                        q3_err *err);
    int max_decode; /* the most contexts decode_batch takes (0: max_batch); backend.c cuts larger steps */
    /* Optional: decode_batch, where the contexts with only[i] nonzero want only greedy[i]
     * (q3_greedy_token of their logits) and their logits[i] need not be written: taken where
     * the logits are, not copied out. NULL: backend.c takes it from decode_batch's logits. */
    int (*decode_batch_greedy)(q3_backend *const *bs, const int32_t *tokens, const int *pos, int n,
                               float *const *logits, const unsigned char *only, int32_t *greedy, q3_err *err);
    /* Frees what init allocated (the struct itself is freed by the caller). */
    void (*release)(q3_backend *b);
    /* Optional: room for n_floats logits that pass() delivers into fastest, owned by
     * the context until it is destroyed (OpenCL: pinned host memory). NULL: use your own. */
    float *(*logits_buffer)(q3_backend *b, size_t n_floats);
    /* Optional: worker threads and the kernel variant in use (CPU: its SIMD level). */
    void (*describe)(const q3_backend *b, int *threads, const char **variant);
    /* Optional (NULL: the backend has no numbered devices): how many there are (0:
     * err says why there is none and how to get one), and a one-line description of device i. */
    int (*device_count)(q3_err *err);
    int (*device_describe)(int i, char *buf, size_t cap, q3_err *err);
    /* Optional (NULL: its contexts cannot be saved, q3_state_save says so): copy
     * positions 0..n-1 (n >= 1) of one layer's KV cache out of the context, or into
     * it, in the state's layout (lib_state.c): k and v each [kv head][n][head_dim]
     * F16, no alignment promised (memcpy them). */
    int (*kv_save)(q3_backend *b, uint32_t layer, int n, void *k, void *v, q3_err *err);
    int (*kv_load)(q3_backend *b, uint32_t layer, int n, const void *k, const void *v, q3_err *err);
    /* Optional: the environment variables it reads, as q3_backend_env_help hands them out. */
    const char *env_help;
} q3_backend_impl;

/* What the contexts of one model on one device share. */
typedef struct {
    const q3_backend_impl *impl;
    const q3_file *file;
    int device;
    q3_weights w;
    void *shared;
} q3_backend_model;

struct q3_backend {
    const q3_backend_impl *impl;
    const char *name;
    const q3_file *file;
    const q3_weights *w;
    void *shared;
    int n_ctx;
    int max_batch; /* tokens per pass: impl->max_batch, unless init chose another for the device */
    q3_backend_model *owned; /* made by q3_backend_create for this context alone */
};

/* The registry (backend_registry.c): a backend by name (q3_backend_names, q3.h, lists them). */
const q3_backend_impl *q3_backend_find(const char *name);
/* The names joined by ", " into buf ("cpu, opencl"), for messages. */
void q3_backend_names_join(char *buf, size_t cap);

/* Model level: bind the weights and create what contexts on the device share. */
q3_backend_model *q3_backend_model_create(const q3_backend_impl *impl, const q3_file *f, const q3_backend_opts *o,
                                          q3_err *err);
void q3_backend_model_free(q3_backend_model *bm);
/* A context on a backend model (which must outlive it). */
q3_backend *q3_backend_context_create(q3_backend_model *bm, const q3_backend_opts *o, q3_err *err);
/* Both at once, the model level owned by the context (tests, fuzzing, one-context tools). */
q3_backend *q3_backend_create(const char *name, const q3_file *f, const q3_backend_opts *o, q3_err *err);
void q3_backend_destroy(q3_backend *b);

/* Run n_tokens tokens at positions pos..pos+n_tokens-1 (a prompt or one decoded
 * token), in passes of at most b->max_batch. logits: vocab_size floats for the last
 * token, or, when all_logits, n_tokens * vocab_size floats. pos + n_tokens > n_ctx
 * is an error. */
int q3_backend_forward(q3_backend *b, const int32_t *tokens, int n_tokens, int pos, float *logits, int all_logits,
                       q3_err *err);

/* One decode step of n contexts on one backend model (the weights bound once, the
 * same device): token i at position pos[i] of bs[i], logits[i] its vocab_size logits,
 * except where only (may be NULL) marks a context that wants only greedy[i]
 * (q3_greedy_token of its logits; its logits[i] may then be left unwritten). Every call
 * is checked as q3_backend_forward checks one before anything runs. */
int q3_backend_decode_batch(q3_backend *const *bs, const int32_t *tokens, const int *pos, int n, float *const *logits,
                            const unsigned char *only, int32_t *greedy, q3_err *err);

/* b's logits_buffer if it has one, else *owned = 1 and malloc'd memory for the
 * caller to free. NULL: out of memory. */
float *q3_backend_logits(q3_backend *b, size_t n_floats, int *owned);

/* RoPE cos/sin for positions 0..n_ctx-1, [pos][head_dim / 2] each. */
void q3_rope_tables(const q3_config *c, int n_ctx, float *cos_t, float *sin_t);

#endif
