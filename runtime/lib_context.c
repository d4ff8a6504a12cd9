/* lib_context.c - q3.h's contexts (a KV cache on a backend, on a model's shared
 * weights) and the backend listing. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "lib_model.h"

static const q3_backend_impl *find_backend(const char *name, q3_err *err)
{
    const q3_backend_impl *impl = q3_backend_find(name ? name : q3_backend_names()[0]);
    if (!impl) {
        char all[128];
        q3_backend_names_join(all, sizeof all);
        q3_set_err(err, "unknown backend '%s' (available: %s)", name, all);
    }
    return impl;
}

int q3_backend_device_count(const char *backend, int *n, q3_err *err)
{
    const q3_backend_impl *impl = find_backend(backend, err);
    *n = -1;
    if (!impl) return Q3_ERROR_ARG;
    if (!impl->device_count) return Q3_OK;
    *n = impl->device_count(err);
    return *n > 0 ? Q3_OK : Q3_ERROR;
}

int q3_backend_device_describe(const char *backend, int i, char *buf, size_t cap, q3_err *err)
{
    const q3_backend_impl *impl = find_backend(backend, err);
    if (!impl) return Q3_ERROR_ARG;
    if (!impl->device_describe) {
        q3_set_err(err, "backend %s has no numbered devices", impl->name);
        return Q3_ERROR_ARG;
    }
    return impl->device_describe(i, buf, cap, err) ? Q3_ERROR : Q3_OK;
}

q3_context_params q3_context_default_params(void)
{
    return (q3_context_params){
        .backend = NULL, .n_ctx = 0, .n_threads = 0, .device = -1, .verbose = 0, .cache_type = Q3_CACHE_F16};
}

static const char *const cache_type_names[] = {[Q3_CACHE_F16] = "f16", [Q3_CACHE_Q8_0] = "q8_0"};
#define N_CACHE_TYPES (sizeof cache_type_names / sizeof cache_type_names[0])

const char *q3_cache_type_name(q3_cache_type type)
{
    return (unsigned)type < N_CACHE_TYPES ? cache_type_names[type] : NULL;
}

int q3_cache_type_parse(const char *name, q3_cache_type *type, q3_err *err)
{
    for (unsigned i = 0; name && i < N_CACHE_TYPES; i++)
        if (!strcmp(name, cache_type_names[i])) {
            *type = (q3_cache_type)i;
            return Q3_OK;
        }
    q3_set_err(err, "unknown cache type '%s' (f16 or q8_0)", name ? name : "(null)");
    return Q3_ERROR_ARG;
}

int q3_context_create(q3_model *m, const q3_context_params *params, q3_context **out, q3_err *err)
{
    q3_context_params p = params ? *params : q3_context_default_params();
    *out = NULL;
    const q3_backend_impl *impl = find_backend(p.backend, err);
    if (!impl) return Q3_ERROR_ARG;
    if (!q3_cache_type_name(p.cache_type)) {
        q3_set_err(err, "%s: unknown KV cache type %d", m->file.path, (int)p.cache_type);
        return Q3_ERROR_ARG;
    }
    if (p.cache_type != Q3_CACHE_F16 && !impl->has_cache_q8) {
        q3_set_err(err, "%s: the %s backend keeps its KV cache in f16 (cache type %s is the cpu backend's)",
                   m->file.path, impl->name, q3_cache_type_name(p.cache_type));
        return Q3_ERROR_ARG;
    }
    q3_backend_opts o = {.n_threads = p.n_threads,
                         .n_ctx = p.n_ctx,
                         .device = p.device,
                         .verbose = p.verbose,
                         .cache_q8 = p.cache_type == Q3_CACHE_Q8_0};
    q3_context *c = calloc(1, sizeof *c);
    if (!c) {
        q3_set_err(err, "%s: out of memory", m->file.path);
        return Q3_ERROR_NOMEM;
    }
    c->model = m;
    q3_backend_model *bm = q3_model_backend(m, impl, &o, err);
    if (!bm || !(c->b = q3_backend_context_create(bm, &o, err))) {
        free(c);
        return Q3_ERROR;
    }
    c->logits = q3_backend_logits(c->b, m->file.config.vocab_size, &c->logits_owned);
    if (!c->logits) {
        q3_set_err(err, "%s: out of memory for the logits", m->file.path);
        q3_context_free(c);
        return Q3_ERROR_NOMEM;
    }
    *out = c;
    return Q3_OK;
}

void q3_context_free(q3_context *c)
{
    if (!c) return;
    if (c->logits_owned) free(c->logits);
    q3_backend_destroy(c->b);
    free(c);
}

int q3_context_size(const q3_context *c) { return c->b->n_ctx; }
int q3_context_used(const q3_context *c) { return c->pos; }
int q3_context_pass_size(const q3_context *c) { return c->b->max_batch; }

void q3_context_describe(const q3_context *c, q3_context_info *info)
{
    memset(info, 0, sizeof *info);
    info->backend = c->b->name;
    if (c->b->impl->describe) c->b->impl->describe(c->b, &info->threads, &info->variant);
}

static int eval(q3_context *c, const int32_t *tokens, size_t n, float *all, q3_err *err)
{
    int n_ctx = c->b->n_ctx;
    if (n == 0) return Q3_OK;
    if (n > (size_t)(n_ctx - c->pos)) {
        q3_set_err(err, "%s: the prompt needs %zu positions but only %d of the context (--ctx %d) are left",
                   c->model->file.path, n, n_ctx - c->pos, n_ctx);
        return Q3_ERROR_CONTEXT_FULL;
    }
    if (q3_backend_forward(c->b, tokens, (int)n, c->pos, all ? all : c->logits, all != NULL, err)) {
        c->logits_valid = 0; /* a pass may have stopped halfway through them */
        return Q3_ERROR;
    }
    c->logits_valid = 1;
    if (all) /* the last row is what q3_logits hands out */
        memcpy(c->logits, all + (n - 1) * c->model->file.config.vocab_size,
               c->model->file.config.vocab_size * sizeof *all);
    c->pos += (int)n;
    return Q3_OK;
}

int q3_prefill(q3_context *c, const int32_t *tokens, size_t n, q3_err *err) { return eval(c, tokens, n, NULL, err); }
int q3_decode(q3_context *c, int32_t token, q3_err *err) { return eval(c, &token, 1, NULL, err); }
int q3_prefill_all(q3_context *c, const int32_t *tokens, size_t n, float *all, q3_err *err)
{
    return eval(c, tokens, n, all, err);
}

/* q3_decode_batch, and q3_decode_batch_greedy where only (may be NULL) marks contexts that want
 * only their greedy token (greedy[i]) */
static int decode_batch(q3_context *const *ctxs, const int32_t *tokens, size_t n, const unsigned char *only,
                        int32_t *greedy, q3_err *err)
{
    if (n == 0) return Q3_OK;
    if (n > INT_MAX / 2) {
        q3_set_err(err, "q3_decode_batch: %zu contexts are more than one step takes", n);
        return Q3_ERROR_ARG;
    }
    for (size_t i = 0; i < n; i++) {
        const q3_context *c = ctxs[i];
        if (c->model != ctxs[0]->model) {
            q3_set_err(err, "q3_decode_batch: context %zu is on another model than context 0", i);
            return Q3_ERROR_ARG;
        }
        for (size_t j = 0; j < i; j++)
            if (ctxs[j] == c) { /* its cache would take two tokens at one position */
                q3_set_err(err, "q3_decode_batch: contexts %zu and %zu are the same context", j, i);
                return Q3_ERROR_ARG;
            }
        if (c->pos >= c->b->n_ctx) {
            q3_set_err(err, "%s: context %zu is full (--ctx %d)", c->model->file.path, i, c->b->n_ctx);
            return Q3_ERROR_CONTEXT_FULL;
        }
    }
    q3_backend **bs = calloc(n, sizeof *bs);
    int *pos = calloc(n, sizeof *pos);
    float **logits = calloc(n, sizeof *logits);
    int rc = Q3_ERROR_NOMEM;
    if (!bs || !pos || !logits) {
        q3_set_err(err, "q3_decode_batch: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) bs[i] = ctxs[i]->b, pos[i] = ctxs[i]->pos, logits[i] = ctxs[i]->logits;
    rc = q3_backend_decode_batch(bs, tokens, pos, (int)n, logits, only, greedy, err) ? Q3_ERROR : Q3_OK;
    for (size_t i = 0; i < n; i++) {
        /* a failed step may have written some of them; a greedy-only one left them unread */
        ctxs[i]->logits_valid = rc == Q3_OK && !(only && only[i]);
        ctxs[i]->pos += rc == Q3_OK;
    }
done:
    free(bs);
    free(pos);
    free(logits);
    return rc;
}

int q3_decode_batch(q3_context *const *ctxs, const int32_t *tokens, size_t n, q3_err *err)
{
    return decode_batch(ctxs, tokens, n, NULL, NULL, err);
}

int q3_decode_batch_greedy(q3_context *const *ctxs, const int32_t *tokens, size_t n, const unsigned char *only_greedy,
                           int32_t *greedy, q3_err *err)
{
    return decode_batch(ctxs, tokens, n, only_greedy, greedy, err);
}

float *q3_logits(q3_context *c) { return c->logits; }

int q3_kv_truncate(q3_context *c, int n_keep, q3_err *err)
{
    if (n_keep < 0 || n_keep > c->pos) {
        q3_set_err(err, "%s: cannot keep %d positions of a cache that holds %d", c->model->file.path, n_keep, c->pos);
        return Q3_ERROR_ARG;
    }
    if (n_keep != c->pos) c->logits_valid = 0; /* they are a dropped position's */
    c->pos = n_keep; /* later positions are overwritten before anything reads them */
    return Q3_OK;
}
