/* lib_state.c - a context's state as bytes (q3_state_save / q3_state_load in
 * include/q3.h): the positions its KV cache holds and the last token's logits, so
 * that a prompt's cache can be kept and reused, or a conversation resumed, in this
 * context or another one of the same model.
 *
 * The layout is the library's, not a backend's (each backend copies its cache from
 * and to it: q3_backend_impl.kv_save / kv_load), so a state saved on one backend
 * loads on another, and into a context of another size that has room for it
 * (positions do not depend on the cache's size: RoPE is by position).
 *
 *   offset  0  "Q3STATE\0"
 *           8  u32 version (1)          12  u32 header bytes (64)
 *          16  u64 the model file's checksum (its header's whole-file XXH3)
 *          24  u32 num_layers           28  u32 num_kv_heads
 *          32  u32 head_dim             36  u32 vocab_size
 *          40  u32 positions held       44  u32 n_ctx of the context saved (for messages)
 *          48  u32 flags (1: logits follow)   52  u32 0
 *          56  u64 XXH3-64 of every byte after the header
 *          64  [flags & 1] vocab_size f32: the logits of the last position
 *              then per layer: K [kv head][position][head_dim] F16, V the same
 * Integers of the header little-endian; logits and cache in host byte order (x86,
 * as the weights are used straight from the file). */
#include <string.h>
#include <xxhash.h>
#include "lib_model.h"

#define STATE_MAGIC "Q3STATE" /* 8 bytes with its NUL */
#define STATE_VERSION 1u
#define STATE_HEADER 64u
#define STATE_HAS_LOGITS 1u

/* The header's fields that say which model, and how much. */
typedef struct {
    uint64_t model;
    uint32_t layers, kv_heads, head_dim, vocab;
    uint32_t n_pos, n_ctx, flags;
} state_shape;

static uint64_t logits_bytes(const state_shape *s)
{
    return s->flags & STATE_HAS_LOGITS ? (uint64_t)s->vocab * sizeof(float) : 0;
}

/* One layer's K (or V): [kv head][n_pos][head_dim] F16. */
static uint64_t layer_half_bytes(const state_shape *s)
{
    return (uint64_t)s->kv_heads * s->n_pos * s->head_dim * sizeof(uint16_t);
}

static uint64_t state_bytes(const state_shape *s)
{
    return STATE_HEADER + logits_bytes(s) + (uint64_t)s->layers * 2 * layer_half_bytes(s);
}

/* What this context would save now. */
static state_shape shape_of(const q3_context *c)
{
    const q3_file *f = &c->model->file;
    return (state_shape){.model = f->file_checksum,
                         .layers = f->config.num_layers,
                         .kv_heads = f->config.num_kv_heads,
                         .head_dim = f->config.head_dim,
                         .vocab = f->config.vocab_size,
                         .n_pos = (uint32_t)c->pos,
                         .n_ctx = (uint32_t)c->b->n_ctx,
                         .flags = c->logits_valid && c->pos > 0 ? STATE_HAS_LOGITS : 0};
}

size_t q3_state_size(const q3_context *c)
{
    state_shape s = shape_of(c);
    return (size_t)state_bytes(&s);
}

int q3_state_save(q3_context *c, void *buf, size_t cap, size_t *written, q3_err *err)
{
    const char *path = c->model->file.path;
    state_shape s = shape_of(c);
    uint64_t need = state_bytes(&s);
    if (written) *written = 0;
    if (cap < need) {
        q3_set_err(err, "%s: the state of %u positions needs %llu bytes, the buffer has %zu (q3_state_size)", path,
                   s.n_pos, (unsigned long long)need, cap);
        return Q3_ERROR_ARG;
    }
    if (s.n_pos > 0 && !c->b->impl->kv_save) {
        q3_set_err(err, "%s: the %s backend cannot save its KV cache", path, c->b->name);
        return Q3_ERROR_ARG;
    }
    uint8_t *h = buf, *at = h + STATE_HEADER;
    memset(h, 0, STATE_HEADER);
    memcpy(h, STATE_MAGIC, sizeof STATE_MAGIC);
    q3_wr32(h + 8, STATE_VERSION);
    q3_wr32(h + 12, STATE_HEADER);
    q3_wr64(h + 16, s.model);
    q3_wr32(h + 24, s.layers);
    q3_wr32(h + 28, s.kv_heads);
    q3_wr32(h + 32, s.head_dim);
    q3_wr32(h + 36, s.vocab);
    q3_wr32(h + 40, s.n_pos);
    q3_wr32(h + 44, s.n_ctx);
    q3_wr32(h + 48, s.flags);
    memcpy(at, c->logits, logits_bytes(&s));
    at += logits_bytes(&s);
    uint64_t half = layer_half_bytes(&s);
    for (uint32_t l = 0; l < s.layers && s.n_pos > 0; l++, at += 2 * half)
        if (c->b->impl->kv_save(c->b, l, (int)s.n_pos, at, at + half, err)) return Q3_ERROR;
    q3_wr64(h + 56, XXH3_64bits(h + STATE_HEADER, need - STATE_HEADER));
    if (written) *written = (size_t)need;
    return Q3_OK;
}

/* The header read and checked against this context, before anything is changed:
 * the same model and room for its positions; the length and checksum it declares. */
static int check_state(const q3_context *c, const uint8_t *h, size_t len, state_shape *s, q3_err *err)
{
    const char *path = c->model->file.path;
    if (len < STATE_HEADER || memcmp(h, STATE_MAGIC, sizeof STATE_MAGIC) != 0) {
        q3_set_err(err, "%s: not a q3 context state (%zu bytes; a state starts with \"" STATE_MAGIC "\")", path, len);
        return -1;
    }
    if (q3_rd32(h + 8) != STATE_VERSION || q3_rd32(h + 12) != STATE_HEADER) {
        q3_set_err(err, "%s: a context state of version %u (header %u bytes); this library reads version %u", path,
                   q3_rd32(h + 8), q3_rd32(h + 12), STATE_VERSION);
        return -1;
    }
    *s = (state_shape){.model = q3_rd64(h + 16),
                       .layers = q3_rd32(h + 24),
                       .kv_heads = q3_rd32(h + 28),
                       .head_dim = q3_rd32(h + 32),
                       .vocab = q3_rd32(h + 36),
                       .n_pos = q3_rd32(h + 40),
                       .n_ctx = q3_rd32(h + 44),
                       .flags = q3_rd32(h + 48)};
    state_shape mine = shape_of(c);
    if (s->model != mine.model || s->layers != mine.layers || s->kv_heads != mine.kv_heads ||
        s->head_dim != mine.head_dim || s->vocab != mine.vocab) {
        q3_set_err(err, "%s: the state is of another model (file checksum %016llx, %u layers of %u KV heads x %u, "
                   "vocabulary %u); this one is %016llx, %u layers of %u x %u, vocabulary %u", path,
                   (unsigned long long)s->model, s->layers, s->kv_heads, s->head_dim, s->vocab,
                   (unsigned long long)mine.model, mine.layers, mine.kv_heads, mine.head_dim, mine.vocab);
        return -1;
    }
    if (s->n_pos > mine.n_ctx) {
        q3_set_err(err, "%s: the state holds %u positions (saved from a context of %u) and this context has %u (--ctx)",
                   path, s->n_pos, s->n_ctx, mine.n_ctx);
        return -1;
    }
    if (s->flags & ~STATE_HAS_LOGITS || (s->flags && s->n_pos == 0)) {
        q3_set_err(err, "%s: a context state with flags %#x, which this library does not write", path, s->flags);
        return -1;
    }
    if (state_bytes(s) != len) {
        q3_set_err(err, "%s: a context state of %u positions is %llu bytes, this one %zu (cut short or padded)", path,
                   s->n_pos, (unsigned long long)state_bytes(s), len);
        return -1;
    }
    if (XXH3_64bits(h + STATE_HEADER, len - STATE_HEADER) != q3_rd64(h + 56)) {
        q3_set_err(err, "%s: the context state is damaged (its checksum does not match)", path);
        return -1;
    }
    return 0;
}

int q3_state_load(q3_context *c, const void *buf, size_t len, q3_err *err)
{
    state_shape s;
    const uint8_t *h = buf, *at = h + STATE_HEADER;
    if (check_state(c, h, len, &s, err)) return Q3_ERROR_ARG;
    if (s.n_pos > 0 && !c->b->impl->kv_load) {
        q3_set_err(err, "%s: the %s backend cannot load a KV cache", c->model->file.path, c->b->name);
        return Q3_ERROR_ARG;
    }
    memcpy(c->logits, at, logits_bytes(&s));
    at += logits_bytes(&s);
    uint64_t half = layer_half_bytes(&s);
    for (uint32_t l = 0; l < s.layers && s.n_pos > 0; l++, at += 2 * half)
        if (c->b->impl->kv_load(c->b, l, (int)s.n_pos, at, at + half, err)) {
            c->pos = 0; /* part of the cache is the state's, part what was there: neither */
            c->logits_valid = 0;
            return Q3_ERROR;
        }
    c->pos = (int)s.n_pos;
    c->logits_valid = (s.flags & STATE_HAS_LOGITS) != 0;
    return Q3_OK;
}
