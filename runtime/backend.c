/* backend.c - what every backend does the same way: the context size, the
 * checks on a forward call, the RoPE tables, the caller's logits memory. */
#include "backend.h"
#include <math.h>
#include <stdlib.h>

int q3_backend_n_ctx(const q3_file *f, const q3_backend_opts *o, int *n_ctx, q3_err *err)
{
    uint32_t max_pos = f->config.max_position_embeddings;
    int n = o && o->n_ctx > 0 ? o->n_ctx : (int)(max_pos < 4096 ? max_pos : 4096);
    if ((uint32_t)n > max_pos) {
        q3_set_err(err, "%s: --ctx %d exceeds the model's max_position_embeddings %u", f->path, n, max_pos);
        return -1;
    }
    *n_ctx = n;
    return 0;
}

int q3_backend_check_call(const q3_backend *b, const int32_t *tokens, int n_tokens, int pos, q3_err *err)
{
    if (n_tokens <= 0 || pos < 0 || pos + n_tokens > b->n_ctx) {
        q3_set_err(err, "%s: %d tokens at position %d do not fit the context of %d positions (--ctx)", b->file->path,
                   n_tokens, pos, b->n_ctx);
        return -1;
    }
    uint32_t vocab = b->file->config.vocab_size;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= vocab) {
            q3_set_err(err, "%s: token id %d is outside the vocabulary (%u)", b->file->path, tokens[i], vocab);
            return -1;
        }
    return 0;
}

/* HF computes inv_freq and the angle in f32; do the same so long contexts agree. */
void q3_rope_tables(const q3_config *c, int n_ctx, float *cos_t, float *sin_t)
{
    uint64_t half = c->head_dim / 2;
    for (uint64_t i = 0; i < half; i++) {
        float inv_freq = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim));
        for (int p = 0; p < n_ctx; p++) {
            float angle = (float)p * inv_freq;
            cos_t[(uint64_t)p * half + i] = (float)cos((double)angle);
            sin_t[(uint64_t)p * half + i] = (float)sin((double)angle);
        }
    }
}

float *q3_backend_logits(q3_backend *b, size_t n_floats, int *owned)
{
    float *p = b->logits_buffer ? b->logits_buffer(b, n_floats) : NULL;
    *owned = p == NULL;
    return p ? p : malloc(n_floats * sizeof *p);
}
