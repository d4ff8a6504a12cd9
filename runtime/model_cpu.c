/* model_cpu.c - the Qwen3 graph on the CPU (spec.md 4): weights straight from
 * the mmap, f32 activations, an F16 (or 8-bit) KV cache, every buffer allocated at
 * create. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../kernels/cpu_half.h"
#include "../kernels/cpu_kernels.h"
#include "backend.h"
#include "env_help.h"
#include "weights.h"

/* Prompt tokens per batch (cpu_kernels.h says why 512). */
#define MAX_BATCH Q3_CPU_PASS_TOKENS

typedef struct cpu_backend {
    q3_backend base;
    q3_config cfg;
    q3_pool *pool;
    int batch;
    uint64_t q_dim, kv_dim;
    /* activations, batch rows each */
    float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up;
    /* F16, [layer][kv_head][n_ctx][head_dim]: one head's rows are contiguous, so a
     * pass over them is one stream that stays in L2 (rows kv_dim apart all fell in the
     * same cache sets) */
    uint16_t *key_cache, *val_cache;
    /* Or, with --cache-type q8_0 (cache_q8), the same layout in 8 bits: values and
     * their per-block scales (cpu_kernels.h, Q3_Q8_BLOCK); key_cache and val_cache NULL. */
    int cache_q8;
    int8_t *key_q8, *val_q8;
    uint16_t *key_scale, *val_scale;
    float *rope_cos, *rope_sin;   /* [n_ctx][head_dim / 2] */
    float *scores;                /* [threads][SCORES_PER_THREAD(n_ctx)] */
    /* norm weights widened once to f32 */
    float *input_norm, *post_norm, *q_norm, *k_norm, *final_norm;
    /* A batched decode step run on this context's threads and activations (cpu_decode_batch):
     * row t is one token of context seq[t] at position seq_pos[t], with its own cache.
     * NULL in a pass of this context's own tokens (consecutive positions of its cache). */
    struct cpu_backend *const *seq;
    const int *seq_pos;
    float *batch_logits; /* [rows][vocab] for the batch's head, grown on first use */
    int batch_logits_rows;
} cpu_backend;

static void widen(const q3_tensor *t, float *dst)
{
    for (uint64_t i = 0; i < t->shape[0]; i++) dst[i] = q3_bf16_to_f32(t->data[i]);
}

typedef struct {
    cpu_backend *m;
    int layer, n_tok, pos;
} attn_job;

/* Scratch floats per thread for q3_attend_rows: 4 queries x (n_ctx + 3) scores. */
#define SCORES_PER_THREAD(n_ctx) (4 * ((uint64_t)(n_ctx) + 4))

/* The cache is [layer][kv head][n_ctx][head_dim]: a head's first n rows are one run
 * at cache_run(), the state's [kv head][n][head_dim] one run per head. */
static uint64_t cache_run(const cpu_backend *m, uint32_t layer, uint64_t head)
{
    return ((uint64_t)layer * m->cfg.num_kv_heads + head) * (uint64_t)m->base.n_ctx * m->cfg.head_dim;
}

/* q3_attend_rows (or its 8-bit twin) of n_q queries over KV head g of this layer in kv's
 * cache, whichever type that cache is. */
static void attend_kv_head(const cpu_backend *kv, uint32_t layer, uint32_t g, const float *q, uint64_t q_stride,
                           int n_q, int pos_step, int n_pos, float scale, float *scores, float *out,
                           uint64_t out_stride)
{
    int D = (int)kv->cfg.head_dim;
    uint64_t at = cache_run(kv, layer, g);
    if (kv->cache_q8)
        q3_attend_rows_q8(q, q_stride, n_q, pos_step, kv->key_q8 + at, kv->key_scale + at / Q3_Q8_BLOCK,
                          kv->val_q8 + at, kv->val_scale + at / Q3_Q8_BLOCK, n_pos, D, scale, scores, out,
                          out_stride);
    else
        q3_attend_rows(q, q_stride, n_q, pos_step, kv->key_cache + at, kv->val_cache + at, (uint64_t)D, n_pos, D,
                       scale, scores, out, out_stride);
}

/* One work item: a prompt's tokens t0..t0+3 of query head h (consecutive
 * positions: each pass over K and V serves 4 queries), or, for a single token,
 * the query heads that share KV head h (GQA: one pass serves the group). */
static void attend(cpu_backend *m, int layer, int item, int n_tok, int pos, float *scores)
{
    const q3_config *c = &m->cfg;
    uint64_t D = c->head_dim;
    uint32_t group = c->num_heads / c->num_kv_heads;
    float scale = 1.0f / sqrtf((float)D);
    if (n_tok == 1 || m->seq) {
        /* Decode: row t's query heads over its own cache (a batched step: item = t * kv heads + g). */
        int t = item / (int)c->num_kv_heads;
        uint32_t g = (uint32_t)item % c->num_kv_heads, h0 = g * group;
        const cpu_backend *kv = m->seq ? m->seq[t] : m;
        int n_pos = (m->seq ? m->seq_pos[t] : pos) + 1;
        uint64_t row = (uint64_t)t * m->q_dim + h0 * D;
        attend_kv_head(kv, (uint32_t)layer, g, m->q + row, D, (int)group, 0, n_pos, scale, scores, m->att + row, D);
        return;
    }
    int blocks = (n_tok + 3) / 4;
    uint32_t h = (uint32_t)(item / blocks), g = h / group;
    int t0 = (item % blocks) * 4, n_q = n_tok - t0 < 4 ? n_tok - t0 : 4;
    uint64_t row = (uint64_t)t0 * m->q_dim + h * D;
    attend_kv_head(m, (uint32_t)layer, g, m->q + row, m->q_dim, n_q, 1, pos + t0 + 1, scale, scores, m->att + row,
                   m->q_dim);
}

static void attn_worker(void *ctx, int ith, int nth)
{
    attn_job *j = ctx;
    cpu_backend *m = j->m;
    int items = j->n_tok == 1 || m->seq ? j->n_tok * (int)m->cfg.num_kv_heads
                                         : (int)m->cfg.num_heads * ((j->n_tok + 3) / 4);
    float *scores = m->scores + (uint64_t)ith * SCORES_PER_THREAD(m->base.n_ctx);
    /* Later token blocks see more positions: hand them out from the end so the
     * longest items start first. */
    for (int it = ith; it < items; it += nth) attend(m, j->layer, items - 1 - it, j->n_tok, j->pos, scores);
}

/* q/k norms, RoPE and the KV cache store (rounded to F16 or 8 bits) for token t (at position
 * pos + t of this context's cache, or in a batched step at its own context's position). */
static void qk_prepare(cpu_backend *m, int layer, int t, int pos)
{
    const q3_config *c = &m->cfg;
    uint64_t D = c->head_dim, half = D / 2, kv_dim = m->kv_dim;
    float eps = (float)c->rms_norm_eps;
    const float *qn = m->q_norm + (uint64_t)layer * D, *kn = m->k_norm + (uint64_t)layer * D;
    cpu_backend *kv = m->seq ? m->seq[t] : m;
    int p = m->seq ? m->seq_pos[t] : pos + t;
    const float *cs = kv->rope_cos + (uint64_t)p * half, *sn = kv->rope_sin + (uint64_t)p * half;
    for (uint32_t h = 0; h < c->num_heads; h++) {
        float *qh = m->q + (uint64_t)t * m->q_dim + h * D;
        q3_rmsnorm(qh, qh, qn, D, eps);
        q3_rope(qh, cs, sn, half);
    }
    for (uint32_t h = 0; h < c->num_kv_heads; h++) {
        float *kh = m->k + (uint64_t)t * kv_dim + h * D;
        q3_rmsnorm(kh, kh, kn, D, eps);
        q3_rope(kh, cs, sn, half);
        uint64_t row = cache_run(kv, (uint32_t)layer, h) + (uint64_t)p * D;
        const float *vh = m->v + (uint64_t)t * kv_dim + h * D;
        if (kv->cache_q8) {
            q3_q8_store(kv->key_q8 + row, kv->key_scale + row / Q3_Q8_BLOCK, kh, D);
            q3_q8_store(kv->val_q8 + row, kv->val_scale + row / Q3_Q8_BLOCK, vh, D);
        } else {
            q3_f16_store(kv->key_cache + row, kh, D);
            q3_f16_store(kv->val_cache + row, vh, D);
        }
    }
}

/* The element-wise steps of a layer, one token at a time; tokens are spread
 * over the pool (a prompt's norms, SiLU and residual adds would otherwise run on
 * one core while the others wait). */
enum { STEP_INPUT_NORM, STEP_QK, STEP_ADD_POST_NORM, STEP_SILU, STEP_ADD };

typedef struct {
    cpu_backend *m;
    int layer, n_tok, pos, step;
} token_job;

static void token_step(cpu_backend *m, int l, int t, int pos, int step)
{
    const q3_config *c = &m->cfg;
    uint64_t H = c->hidden_size, I = c->intermediate_size;
    float eps = (float)c->rms_norm_eps;
    float *x = m->x + (uint64_t)t * H, *xn = m->xn + (uint64_t)t * H, *tmp = m->tmp + (uint64_t)t * H;
    switch (step) {
    case STEP_INPUT_NORM: q3_rmsnorm(xn, x, m->input_norm + (uint64_t)l * H, H, eps); break;
    case STEP_QK: qk_prepare(m, l, t, pos); break;
    case STEP_ADD_POST_NORM:
        q3_add(x, tmp, H);
        q3_rmsnorm(xn, x, m->post_norm + (uint64_t)l * H, H, eps);
        break;
    case STEP_SILU: q3_silu_mul(m->gate + (uint64_t)t * I, m->up + (uint64_t)t * I, I); break;
    case STEP_ADD: q3_add(x, tmp, H); break;
    }
}

static void token_worker(void *ctx, int ith, int nth)
{
    token_job *j = ctx;
    int lo = (int)((int64_t)j->n_tok * ith / nth), hi = (int)((int64_t)j->n_tok * (ith + 1) / nth);
    for (int t = lo; t < hi; t++) token_step(j->m, j->layer, t, j->pos, j->step);
}

static void per_token(cpu_backend *m, int l, int n_tok, int pos, int step)
{
    if (n_tok == 1) {
        token_step(m, l, 0, pos, step);
        return;
    }
    token_job j = {m, l, n_tok, pos, step};
    q3_pool_run(m->pool, token_worker, &j);
}

/* A prompt's products go through the GEMM; a batched decode step's through the GEMV
 * row by row, so each sequence gets the bits it would get decoded alone. */
static void matmul(cpu_backend *m, const q3_matmul_op *ops, int n_ops, const float *x, int n_tok)
{
    (m->seq ? q3_matmul_rows : q3_matmul)(m->pool, ops, n_ops, x, n_tok);
}

static void layer_forward(cpu_backend *m, int l, int n_tok, int pos)
{
    const q3_config *c = &m->cfg;
    const q3_layer_weights *L = &m->base.w->layers[l];
    uint64_t H = c->hidden_size, I = c->intermediate_size;

    per_token(m, l, n_tok, pos, STEP_INPUT_NORM);
    q3_matmul_op qkv[3] = {
        {L->wq->data, m->q_dim, H, m->q, m->q_dim},
        {L->wk->data, m->kv_dim, H, m->k, m->kv_dim},
        {L->wv->data, m->kv_dim, H, m->v, m->kv_dim},
    };
    matmul(m, qkv, 3, m->xn, n_tok);
    per_token(m, l, n_tok, pos, STEP_QK);
    attn_job aj = {m, l, n_tok, pos};
    q3_pool_run(m->pool, attn_worker, &aj);
    q3_matmul_op o = {L->wo->data, H, m->q_dim, m->tmp, H};
    matmul(m, &o, 1, m->att, n_tok);
    per_token(m, l, n_tok, pos, STEP_ADD_POST_NORM);
    q3_matmul_op gu[2] = {{L->w_gate->data, I, H, m->gate, I}, {L->w_up->data, I, H, m->up, I}};
    matmul(m, gu, 2, m->xn, n_tok);
    per_token(m, l, n_tok, pos, STEP_SILU);
    q3_matmul_op down = {L->w_down->data, H, I, m->tmp, H};
    matmul(m, &down, 1, m->gate, n_tok);
    per_token(m, l, n_tok, pos, STEP_ADD);
}

/* The layers over nb tokens (rows of m's activations); then, when logits is not
 * NULL, the head for rows first..nb-1 into logits (rows of vocab_size). */
static void forward_rows(cpu_backend *m, const int32_t *tokens, int nb, int pos, float *logits, int first)
{
    const q3_config *c = &m->cfg;
    uint64_t H = c->hidden_size, V = c->vocab_size;
    uint16_t *row = (uint16_t *)m->tmp; /* H bf16 fit in the H-float buffer */
    for (int t = 0; t < nb; t++) {
        q3_tensor_row_bf16(m->base.w->embed, (uint64_t)tokens[t], row);
        for (uint64_t i = 0; i < H; i++) m->x[t * H + i] = q3_bf16_to_f32(row[i]);
    }
    for (uint32_t l = 0; l < c->num_layers; l++) layer_forward(m, (int)l, nb, pos);
    if (!logits) return;
    for (int t = first; t < nb; t++)
        q3_rmsnorm(m->xn + (uint64_t)(t - first) * H, m->x + (uint64_t)t * H, m->final_norm, H, (float)c->rms_norm_eps);
    q3_matmul_op head = {m->base.w->lm_head->data, V, H, logits, V};
    matmul(m, &head, 1, m->xn, nb - first);
}

/* One pass of n_tok <= MAX_BATCH tokens; logits as q3_backend_impl.pass says. */
static int cpu_pass(q3_backend *b, const int32_t *tokens, int nb, int pos, float *logits, int all_logits, q3_err *err)
{
    forward_rows((cpu_backend *)b, tokens, nb, pos, logits, logits && !all_logits ? nb - 1 : 0);
    return 0;
}

/* One decode step of n contexts (q3_backend_impl.decode_batch): the weights are read
 * once for all of them. It runs on the threads and activations of the context with the
 * largest cache (its attention scratch fits every row), each row's attention on its own
 * context's cache. */
static int cpu_decode_batch(q3_backend *const *bs, const int32_t *tokens, const int *pos, int n, float *const *logits,
                            q3_err *err)
{
    cpu_backend *lead = (cpu_backend *)bs[0];
    for (int i = 1; i < n; i++)
        if (bs[i]->n_ctx > lead->base.n_ctx) lead = (cpu_backend *)bs[i];
    uint64_t V = lead->cfg.vocab_size;
    if (lead->batch_logits_rows < n) {
        float *grown = realloc(lead->batch_logits, (size_t)n * V * sizeof *grown);
        if (!grown) {
            q3_set_err(err, "%s: out of memory for the logits of %d sequences", bs[0]->file->path, n);
            return -1;
        }
        lead->batch_logits = grown;
        lead->batch_logits_rows = n;
    }
    lead->seq = (cpu_backend *const *)bs;
    lead->seq_pos = pos;
    forward_rows(lead, tokens, n, 0, lead->batch_logits, 0);
    lead->seq = NULL;
    lead->seq_pos = NULL;
    for (int i = 0; i < n; i++) memcpy(logits[i], lead->batch_logits + (uint64_t)i * V, V * sizeof(float));
    return 0;
}

static void cpu_release(q3_backend *b)
{
    cpu_backend *m = (cpu_backend *)b;
    q3_pool_destroy(m->pool);
    free(m->key_cache);
    free(m->val_cache);
    free(m->key_q8);
    free(m->val_q8);
    free(m->key_scale);
    free(m->val_scale);
    float *bufs[] = {m->x,        m->xn,         m->q,         m->k,         m->v,          m->att,
                     m->tmp,      m->gate,       m->up,        m->rope_cos,  m->rope_sin,   m->scores,
                     m->input_norm, m->post_norm, m->q_norm,   m->k_norm,    m->final_norm, m->batch_logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static float *alloc_f32(uint64_t n, int *failed)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *failed = 1;
    return p;
}

static int cpu_init(q3_backend *b, const q3_backend_opts *o, q3_err *err)
{
    cpu_backend *m = (cpu_backend *)b;
    const q3_file *f = b->file;
    int n_ctx = b->n_ctx;
    m->cfg = f->config;
    const q3_config *c = &m->cfg;
    m->pool = q3_pool_create(o->n_threads);
    m->batch = MAX_BATCH;
    uint64_t H = c->hidden_size, I = c->intermediate_size, D = c->head_dim, B = (uint64_t)m->batch;
    m->q_dim = (uint64_t)c->num_heads * D;
    m->kv_dim = (uint64_t)c->num_kv_heads * D;
    uint64_t wide = H > m->q_dim ? H : m->q_dim;
    int failed = !m->pool;
    m->x = alloc_f32(B * H, &failed);
    m->xn = alloc_f32(B * wide, &failed);
    m->q = alloc_f32(B * m->q_dim, &failed);
    m->k = alloc_f32(B * m->kv_dim, &failed);
    m->v = alloc_f32(B * m->kv_dim, &failed);
    m->att = alloc_f32(B * m->q_dim, &failed);
    m->tmp = alloc_f32(B * H, &failed);
    m->gate = alloc_f32(B * I, &failed);
    m->up = alloc_f32(B * I, &failed);
    uint64_t cache_elems = (uint64_t)c->num_layers * n_ctx * m->kv_dim;
    m->cache_q8 = o->cache_q8;
    if (m->cache_q8) {
        if (D % Q3_Q8_BLOCK || D > Q3_Q8_MAX_HEAD_DIM) {
            q3_set_err(err, "%s: head_dim %llu is not a multiple of %d up to %d: no 8-bit KV cache (use --cache-type f16)",
                       f->path, (unsigned long long)D, Q3_Q8_BLOCK, Q3_Q8_MAX_HEAD_DIM);
            return -1;
        }
        m->key_q8 = calloc(cache_elems ? cache_elems : 1, 1);
        m->val_q8 = calloc(cache_elems ? cache_elems : 1, 1);
        m->key_scale = calloc(cache_elems / Q3_Q8_BLOCK + 1, sizeof(uint16_t));
        m->val_scale = calloc(cache_elems / Q3_Q8_BLOCK + 1, sizeof(uint16_t));
        if (!m->key_q8 || !m->val_q8 || !m->key_scale || !m->val_scale) failed = 1;
    } else {
        m->key_cache = calloc(cache_elems ? cache_elems : 1, sizeof(uint16_t));
        m->val_cache = calloc(cache_elems ? cache_elems : 1, sizeof(uint16_t));
        if (!m->key_cache || !m->val_cache) failed = 1;
    }
    m->rope_cos = alloc_f32((uint64_t)n_ctx * D / 2, &failed);
    m->rope_sin = alloc_f32((uint64_t)n_ctx * D / 2, &failed);
    m->scores = alloc_f32((uint64_t)q3_pool_size(m->pool) * SCORES_PER_THREAD(n_ctx), &failed);
    m->input_norm = alloc_f32((uint64_t)c->num_layers * H, &failed);
    m->post_norm = alloc_f32((uint64_t)c->num_layers * H, &failed);
    m->q_norm = alloc_f32((uint64_t)c->num_layers * D, &failed);
    m->k_norm = alloc_f32((uint64_t)c->num_layers * D, &failed);
    m->final_norm = alloc_f32(H, &failed);
    if (failed) {
        q3_set_err(err, "%s: out of memory for activations and a KV cache of %d positions (try a smaller --ctx)",
                   f->path, n_ctx);
        return -1;
    }
    for (uint32_t l = 0; l < c->num_layers; l++) {
        const q3_layer_weights *L = &m->base.w->layers[l];
        widen(L->input_norm, m->input_norm + (uint64_t)l * H);
        widen(L->post_norm, m->post_norm + (uint64_t)l * H);
        widen(L->q_norm, m->q_norm + (uint64_t)l * D);
        widen(L->k_norm, m->k_norm + (uint64_t)l * D);
    }
    widen(m->base.w->norm, m->final_norm);
    q3_rope_tables(&m->cfg, m->base.n_ctx, m->rope_cos, m->rope_sin);
    /* Reserve the matmul scratch for the widest product of a full batch now, so
     * no forward call allocates. */
    uint64_t widest = H > I ? H : I;
    if (widest < m->q_dim) widest = m->q_dim;
    if (!q3_pool_scratch(m->pool, q3_matmul_scratch_bytes(widest, m->batch))) {
        q3_set_err(err, "%s: out of memory for matmul scratch", f->path);
        return -1;
    }
    if (o->verbose)
        fprintf(stderr, "q3: cpu backend, %d threads, %s kernels, context %d, %s KV cache\n", q3_pool_size(m->pool),
                q3_simd_name(q3_simd_active()), n_ctx, m->cache_q8 ? "q8_0" : "f16");
    return 0;
}

/* The state holds F16: an 8-bit cache is saved as the values it holds, rounded to F16,
 * and loaded by rounding those to 8 bits again (the same cache when the state came from
 * an 8-bit one, up to the F16 rounding of the saved values). */
static int cpu_kv_save(q3_backend *b, uint32_t layer, int n, void *k, void *v, q3_err *err)
{
    const cpu_backend *m = (const cpu_backend *)b;
    uint64_t run = (uint64_t)n * m->cfg.head_dim * sizeof(uint16_t);
    if (m->cache_q8) {
        uint64_t elems = (uint64_t)n * m->cfg.head_dim;
        for (uint64_t h = 0; h < m->cfg.num_kv_heads; h++) {
            uint64_t at = cache_run(m, layer, h);
            q3_q8_load_f16((uint16_t *)k + h * elems, m->key_q8 + at, m->key_scale + at / Q3_Q8_BLOCK, elems);
            q3_q8_load_f16((uint16_t *)v + h * elems, m->val_q8 + at, m->val_scale + at / Q3_Q8_BLOCK, elems);
        }
        return 0;
    }
    for (uint64_t h = 0; h < m->cfg.num_kv_heads; h++) {
        memcpy((char *)k + h * run, m->key_cache + cache_run(m, layer, h), run);
        memcpy((char *)v + h * run, m->val_cache + cache_run(m, layer, h), run);
    }
    return 0;
}

static int cpu_kv_load(q3_backend *b, uint32_t layer, int n, const void *k, const void *v, q3_err *err)
{
    cpu_backend *m = (cpu_backend *)b;
    uint64_t run = (uint64_t)n * m->cfg.head_dim * sizeof(uint16_t);
    if (m->cache_q8) {
        uint64_t D = m->cfg.head_dim;
        float row[Q3_Q8_MAX_HEAD_DIM]; /* cpu_init refused a larger head_dim */
        for (uint64_t h = 0; h < m->cfg.num_kv_heads; h++)
            for (int j = 0; j < n; j++) {
                uint64_t at = cache_run(m, layer, h) + (uint64_t)j * D, from = (h * (uint64_t)n + j) * D;
                for (uint64_t i = 0; i < D; i++) row[i] = q3_half_to_float(((const uint16_t *)k)[from + i]);
                q3_q8_store(m->key_q8 + at, m->key_scale + at / Q3_Q8_BLOCK, row, D);
                for (uint64_t i = 0; i < D; i++) row[i] = q3_half_to_float(((const uint16_t *)v)[from + i]);
                q3_q8_store(m->val_q8 + at, m->val_scale + at / Q3_Q8_BLOCK, row, D);
            }
        return 0;
    }
    for (uint64_t h = 0; h < m->cfg.num_kv_heads; h++) {
        memcpy(m->key_cache + cache_run(m, layer, h), (const char *)k + h * run, run);
        memcpy(m->val_cache + cache_run(m, layer, h), (const char *)v + h * run, run);
    }
    return 0;
}

static void cpu_describe(const q3_backend *b, int *threads, const char **variant)
{
    *threads = q3_pool_size(((const cpu_backend *)b)->pool);
    *variant = q3_simd_name(q3_simd_active());
}

const q3_backend_impl q3_backend_cpu = {
    .name = "cpu",
    .size = sizeof(cpu_backend),
    .max_batch = MAX_BATCH,
    .has_cache_q8 = 1,
    .init = cpu_init,
    .pass = cpu_pass,
    .decode_batch = cpu_decode_batch,
    .release = cpu_release,
    .describe = cpu_describe,
    .kv_save = cpu_kv_save,
    .kv_load = cpu_kv_load,
    .env_help = Q3_ENV_HELP_CPU,
};
