/* weights.h - bind the tensors of a .q3 file to the Qwen3 graph, with shape checks.
 * Shared by every backend so that a missing or misshapen tensor is reported once, the same way.
 * Which tensors there are, and their shapes, is format/q3_arch_qwen3.c's table; the
 * named fields below are its slots (weights.c checks that they line up). */
#ifndef Q3_WEIGHTS_H
#define Q3_WEIGHTS_H

#include "../format/q3_arch.h"

typedef union {
    const q3_tensor *slot[Q3_QWEN3_LAYER_TENSORS];
    struct {
        const q3_tensor *input_norm; /* [hidden] */
        const q3_tensor *wq;         /* [heads*head_dim, hidden] R16C32 */
        const q3_tensor *wk;         /* [kv_heads*head_dim, hidden] */
        const q3_tensor *wv;         /* [kv_heads*head_dim, hidden] */
        const q3_tensor *wo;         /* [hidden, heads*head_dim] */
        const q3_tensor *q_norm;     /* [head_dim] */
        const q3_tensor *k_norm;     /* [head_dim] */
        const q3_tensor *post_norm;  /* [hidden] */
        const q3_tensor *w_gate;     /* [intermediate, hidden] */
        const q3_tensor *w_up;       /* [intermediate, hidden] */
        const q3_tensor *w_down;     /* [hidden, intermediate] */
    };
} q3_layer_weights;

typedef struct {
    const q3_config *cfg;
    union {
        const q3_tensor *slot[Q3_QWEN3_MODEL_TENSORS];
        struct {
            const q3_tensor *embed;   /* [vocab, hidden] R16C32 */
            const q3_tensor *norm;    /* [hidden] */
            const q3_tensor *lm_head; /* == embed when tied */
        };
    };
    uint32_t n_layers;
    q3_layer_weights *layers; /* n_layers entries, malloc'd */
} q3_weights;

/* Find every tensor the config implies and check dtype, layout and shape. */
int q3_weights_bind(q3_weights *w, const q3_file *f, q3_err *err);
void q3_weights_free(q3_weights *w);
/* Bytes of weights one decoded token reads (every matrix once, the embedding row, norms). */
uint64_t q3_weights_bytes_per_token(const q3_weights *w);

#endif
