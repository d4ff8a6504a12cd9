/* backend.c - what every backend does the same way: binding the weights, the
 * context size, creating and destroying, the checks on a forward call, cutting
 * it into passes, the RoPE tables, the caller's logits memory. */
#include "backend.h"
#include "sampler.h"
#include <math.h>
#include <stdlib.h>

q3_backend_model *q3_backend_model_create(const q3_backend_impl *impl, const q3_file *f, const q3_backend_opts *o,
                                          q3_err *err)
{
    q3_backend_model *bm = calloc(1, sizeof *bm);
    if (!bm) {
        q3_set_err(err, "%s: out of memory", f->path);
        return NULL;
    }
    bm->impl = impl;
    bm->file = f;
    if (q3_weights_bind(&bm->w, f, err) || (impl->resolve_device && impl->resolve_device(f, o, &bm->device, err))) {
        q3_backend_model_free(bm);
        return NULL;
    }
    if (impl->shared_create && !(bm->shared = impl->shared_create(f, &bm->w, bm->device, o, err))) {
        q3_backend_model_free(bm);
        return NULL;
    }
    return bm;
}

void q3_backend_model_free(q3_backend_model *bm)
{
    if (!bm) return;
    if (bm->shared) bm->impl->shared_free(bm->shared);
    q3_weights_free(&bm->w);
    free(bm);
}

/* o->n_ctx, or min(max_position_embeddings, 4096); more than the model's maximum is an error. */
static int context_size(const q3_file *f, const q3_backend_opts *o, int *n_ctx, q3_err *err)
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

q3_backend *q3_backend_context_create(q3_backend_model *bm, const q3_backend_opts *o, q3_err *err)
{
    const q3_file *f = bm->file;
    int n_ctx;
    if (context_size(f, o, &n_ctx, err)) return NULL;
    q3_backend *b = calloc(1, bm->impl->size);
    if (!b) {
        q3_set_err(err, "%s: out of memory", f->path);
        return NULL;
    }
    b->impl = bm->impl;
    b->name = bm->impl->name;
    b->file = f;
    b->w = &bm->w;
    b->shared = bm->shared;
    b->n_ctx = n_ctx;
    b->max_batch = b->impl->max_batch;
    q3_backend_opts none = {.device = -1};
    if (b->impl->init(b, o ? o : &none, err)) {
        q3_backend_destroy(b);
        return NULL;
    }
    return b;
}

q3_backend *q3_backend_create(const char *name, const q3_file *f, const q3_backend_opts *o, q3_err *err)
{
    const q3_backend_impl *impl = q3_backend_find(name);
    if (!impl) {
        char all[128];
        q3_backend_names_join(all, sizeof all);
        q3_set_err(err, "unknown backend '%s' (available: %s)", name ? name : "(none)", all);
        return NULL;
    }
    int n_ctx;
    if (context_size(f, o, &n_ctx, err)) return NULL; /* before the slow part */
    q3_backend_model *bm = q3_backend_model_create(impl, f, o, err);
    q3_backend *b = bm ? q3_backend_context_create(bm, o, err) : NULL;
    if (!b) {
        q3_backend_model_free(bm);
        return NULL;
    }
    b->owned = bm;
    return b;
}

void q3_backend_destroy(q3_backend *b)
{
    if (!b) return;
    b->impl->release(b);
    q3_backend_model_free(b->owned);
    free(b);
}

/* The positions fit the context and the ids the vocabulary. */
static int check_call(const q3_backend *b, const int32_t *tokens, int n_tokens, int pos, q3_err *err)
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

int q3_backend_forward(q3_backend *b, const int32_t *tokens, int n_tokens, int pos, float *logits, int all_logits,
                       q3_err *err)
{
    if (check_call(b, tokens, n_tokens, pos, err)) return -1;
    uint64_t V = b->file->config.vocab_size;
    /* every token's logits: passes of the impl's batch, which backends size that output for */
    int batch = all_logits ? b->impl->max_batch : b->max_batch;
    for (int done = 0; done < n_tokens; done += batch) {
        int nb = n_tokens - done < batch ? n_tokens - done : batch;
        /* Each pass restarts the residual stream from its embeddings; only the KV
         * cache carries context, so earlier passes need no logits. */
        float *out = all_logits ? logits + (uint64_t)done * V : done + nb == n_tokens ? logits : NULL;
        if (b->impl->pass(b, tokens + done, nb, pos + done, out, all_logits, err)) return -1;
    }
    return 0;
}

int q3_backend_decode_batch(q3_backend *const *bs, const int32_t *tokens, const int *pos, int n, float *const *logits,
                            const unsigned char *only, int32_t *greedy, q3_err *err)
{
    for (int i = 0; i < n; i++) {
        if (bs[i]->w != bs[0]->w) {
            q3_set_err(err, "%s: a batched decode step takes contexts of one model on one backend and device",
                       bs[0]->file->path);
            return -1;
        }
        if (check_call(bs[i], &tokens[i], 1, pos[i], err)) return -1;
    }
    const q3_backend_impl *impl = bs[0]->impl;
    if (!impl->decode_batch) { /* correct, not faster: the weights are read once per context */
        for (int i = 0; i < n; i++)
            if (impl->pass(bs[i], &tokens[i], 1, pos[i], logits[i], 0, err)) return -1;
    } else {
        int most = impl->max_decode ? impl->max_decode : impl->max_batch;
        for (int done = 0; done < n; done += most) {
            int nb = n - done < most ? n - done : most;
            int rc = only && impl->decode_batch_greedy
                         ? impl->decode_batch_greedy(bs + done, tokens + done, pos + done, nb, logits + done,
                                                     only + done, greedy + done, err)
                         : impl->decode_batch(bs + done, tokens + done, pos + done, nb, logits + done, err);
            if (rc) return -1;
        }
        if (impl->decode_batch_greedy) return 0;
    }
    for (int i = 0; only && i < n; i++) /* the backend gave every context its logits */
        if (only[i]) greedy[i] = q3_greedy_token(logits[i], bs[i]->file->config.vocab_size);
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
    float *p = b->impl->logits_buffer ? b->impl->logits_buffer(b, n_floats) : NULL;
    *owned = p == NULL;
    return p ? p : malloc(n_floats * sizeof *p);
}
