/* tok_encode.c - text to ids: added tokens, normalizer, pre-tokenizer splits,
 * byte-level BPE (a heap of candidate merges, O(n log n) per piece) and a word cache. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include "tok_internal.h"
#include "tokenizer.h"
#include "utf8.h"

typedef struct {
    int32_t *v;
    size_t n, cap;
    int failed;
} id_vec;

static void push_id(id_vec *out, int32_t id)
{
    if (out->failed) return;
    if (out->n == out->cap) {
        size_t cap = out->cap ? 2 * out->cap : 256;
        int32_t *p = realloc(out->v, cap * sizeof *p);
        if (!p) {
            out->failed = 1;
            return;
        }
        out->v = p;
        out->cap = cap;
    }
    out->v[out->n++] = id;
}

/* ---- word cache ---- */

#define CACHE_SLOTS (1u << 17)
#define CACHE_MAX_ENTRIES (1u << 16)

void tok_cache_free(tok_cache *c)
{
    free(c->slots);
    free(c->entries);
    free(c->keys);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

static uint64_t hash_key(const uint8_t *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h ^ (h >> 31);
}

static const struct cache_entry *cache_get(const tok_cache *c, const uint8_t *s, size_t n)
{
    if (!c->slots) return NULL;
    for (uint32_t h = (uint32_t)hash_key(s, n) & c->mask; c->slots[h]; h = (h + 1) & c->mask) {
        const struct cache_entry *e = &c->entries[c->slots[h] - 1];
        if (e->key_len == n && memcmp(c->keys + e->key_off, s, n) == 0) return e;
    }
    return NULL;
}

static int grow(void **p, uint64_t *cap, uint64_t need, size_t elem)
{
    if (need <= *cap) return 0;
    uint64_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static void cache_put(tok_cache *c, const uint8_t *s, size_t n, const int32_t *ids, size_t n_ids)
{
    if (!c->slots) {
        c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
        c->entries = malloc(CACHE_MAX_ENTRIES * sizeof *c->entries);
        if (!c->slots || !c->entries) {
            tok_cache_free(c);
            return;
        }
        c->mask = CACHE_SLOTS - 1;
    }
    if (c->n_entries == CACHE_MAX_ENTRIES || n > 256) {
        if (n > 256) return; /* long pieces are rare: not worth keeping */
        memset(c->slots, 0, CACHE_SLOTS * sizeof *c->slots);
        c->n_entries = 0;
        c->keys_len = 0;
        c->ids_len = 0;
    }
    if (grow((void **)&c->keys, &c->keys_cap, c->keys_len + n, 1) ||
        grow((void **)&c->ids, &c->ids_cap, c->ids_len + n_ids, sizeof *c->ids))
        return;
    struct cache_entry *e = &c->entries[c->n_entries++];
    *e = (struct cache_entry){c->keys_len, (uint32_t)n, (uint32_t)c->ids_len, (uint32_t)n_ids};
    memcpy(c->keys + c->keys_len, s, n);
    memcpy(c->ids + c->ids_len, ids, n_ids * sizeof *ids);
    c->keys_len += n;
    c->ids_len += n_ids;
    uint32_t h = (uint32_t)hash_key(s, n) & c->mask;
    while (c->slots[h]) h = (h + 1) & c->mask;
    c->slots[h] = c->n_entries;
}

/* ---- BPE on one piece ---- */

typedef struct {
    uint32_t rank, pos;
} heap_item;

static int item_less(heap_item a, heap_item b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(heap_item *h, size_t *n, heap_item it)
{
    size_t i = (*n)++;
    while (i > 0 && item_less(it, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = it;
}

static heap_item heap_pop(heap_item *h, size_t *n)
{
    heap_item top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && item_less(h[c + 1], h[c])) c++;
        if (!item_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static const tok_merge_slot *find_merge(const tok_ctx *tk, uint32_t a, uint32_t b)
{
    uint64_t h = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull;
    for (h = (h ^ (h >> 31)) & tk->merge_mask; tk->merge_slots[h].rank != UINT32_MAX; h = (h + 1) & tk->merge_mask)
        if (tk->merge_slots[h].left == a && tk->merge_slots[h].right == b) return &tk->merge_slots[h];
    return NULL;
}

static int bpe_piece(tok_ctx *tk, const uint8_t *s, size_t n, id_vec *out)
{
    const struct cache_entry *hit = cache_get(&tk->cache, s, n);
    if (hit) {
        for (uint32_t i = 0; i < hit->n_ids; i++) push_id(out, tk->cache.ids[hit->ids_off + i]);
        return 0;
    }
    int32_t *id = malloc(n * sizeof *id);
    int32_t *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
    heap_item *heap = malloc((3 * n + 4) * sizeof *heap);
    if (!id || !next || !prev || !heap) {
        free(id), free(next), free(prev), free(heap);
        return -1;
    }
    size_t nh = 0, start = out->n;
    for (size_t i = 0; i < n; i++) {
        id[i] = tk->byte_id[s[i]];
        next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const tok_merge_slot *m = id[i] >= 0 && id[i + 1] >= 0 ? find_merge(tk, (uint32_t)id[i], (uint32_t)id[i + 1]) : NULL;
        if (m) heap_push(heap, &nh, (heap_item){m->rank, (uint32_t)i});
    }
    while (nh) {
        heap_item it = heap_pop(heap, &nh);
        int32_t a = (int32_t)it.pos, b = next[a];
        if (id[a] < 0 || b < 0 || id[b] < 0) continue;
        const tok_merge_slot *m = find_merge(tk, (uint32_t)id[a], (uint32_t)id[b]);
        if (!m || m->rank != it.rank) continue; /* stale: a neighbour changed since it was queued */
        id[a] = (int32_t)m->result;
        id[b] = -2; /* merged away */
        next[a] = next[b];
        if (next[b] >= 0) prev[next[b]] = a;
        if (prev[a] >= 0 && id[prev[a]] >= 0) {
            const tok_merge_slot *l = find_merge(tk, (uint32_t)id[prev[a]], (uint32_t)id[a]);
            if (l) heap_push(heap, &nh, (heap_item){l->rank, (uint32_t)prev[a]});
        }
        if (next[a] >= 0 && id[next[a]] >= 0) {
            const tok_merge_slot *r = find_merge(tk, (uint32_t)id[a], (uint32_t)id[next[a]]);
            if (r) heap_push(heap, &nh, (heap_item){r->rank, (uint32_t)a});
        }
    }
    for (int32_t i = 0; i >= 0 && (size_t)i < n; i = next[i])
        if (id[i] >= 0) push_id(out, id[i]); /* a byte with no token is dropped, as HF does without byte_fallback */
    if (!out->failed) cache_put(&tk->cache, s, n, out->v + start, out->n - start);
    free(id), free(next), free(prev), free(heap);
    return out->failed ? -1 : 0;
}

/* ---- pre-tokenizer ---- */

typedef struct {
    size_t off, len;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} span_vec;

static int push_span(span_vec *sv, size_t off, size_t len)
{
    if (!len) return 0;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? 2 * sv->cap : 64;
        span *p = realloc(sv->v, cap * sizeof *p);
        if (!p) return -1;
        sv->v = p;
        sv->cap = cap;
    }
    sv->v[sv->n++] = (span){off, len};
    return 0;
}

/* Split every span of `in` by one regex stage into `out`. */
static int split_stage(const tok_split *st, const uint8_t *text, const span_vec *in, span_vec *out)
{
    out->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        size_t base = in->v[k].off, len = in->v[k].len, pos = 0;
        while (pos < len) {
            int rc = pcre2_match(st->re, text + base, len, pos, PCRE2_NO_UTF_CHECK, st->match, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->match);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* empty match: step over one character */
                int cl = q3_utf8_seq(text + base + ms, len - ms);
                pos = ms + (size_t)(cl > 0 ? cl : 1);
                continue;
            }
            int keep_gap = st->invert ? 1 : st->behavior == TOK_ISOLATED;
            int keep_match = st->invert ? st->behavior == TOK_ISOLATED : 1;
            if (keep_gap && push_span(out, base + pos, ms - pos)) return -1;
            if (keep_match && push_span(out, base + ms, me - ms)) return -1;
            pos = me;
        }
        int keep_tail = st->invert ? 1 : st->behavior == TOK_ISOLATED;
        if (keep_tail && pos < len && push_span(out, base + pos, len - pos)) return -1;
    }
    return 0;
}

/* One segment of valid UTF-8 without added tokens. */
static int encode_segment(tok_ctx *tk, const uint8_t *s, size_t n, id_vec *out)
{
    uint8_t *norm = NULL, *prefixed = NULL;
    const uint8_t *text = s;
    size_t len = n;
    int rc = -1;
    span_vec a = {0}, b = {0};
    if (tk->norm_opts && n) {
        utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)n, &norm, (utf8proc_option_t)tk->norm_opts);
        if (r < 0) goto out;
        text = norm;
        len = (size_t)r;
    }
    if (tk->add_prefix_space && len && text[0] != ' ') {
        prefixed = malloc(len + 1);
        if (!prefixed) goto out;
        prefixed[0] = ' ';
        memcpy(prefixed + 1, text, len);
        text = prefixed;
        len++;
    }
    if (push_span(&a, 0, len)) goto out;
    for (int i = 0; i < tk->n_splits; i++) {
        if (split_stage(&tk->splits[i], text, &a, &b)) goto out;
        span_vec t = a;
        a = b;
        b = t;
    }
    for (size_t k = 0; k < a.n; k++)
        if (bpe_piece(tk, text + a.v[k].off, a.v[k].len, out)) goto out;
    rc = 0;
out:
    free(a.v);
    free(b.v);
    free(norm);
    free(prefixed);
    return rc;
}

/* Text between added tokens; invalid UTF-8 bytes are encoded one by one. */
static int encode_plain(tok_ctx *tk, const uint8_t *s, size_t n, id_vec *out)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        int k;
        while (j < n && (k = q3_utf8_seq(s + j, n - j)) > 0) j += (size_t)k;
        if (j > i && encode_segment(tk, s + i, j - i, out)) return -1;
        if (j < n) {
            if (tk->byte_id[s[j]] >= 0) push_id(out, tk->byte_id[s[j]]);
            j++;
        }
        i = j;
    }
    return out->failed ? -1 : 0;
}

static int is_word_byte(uint8_t c) { return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'); }
static int is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Leftmost-longest added token starting at or after `from`. */
static int find_added(const tok_ctx *tk, const uint8_t *s, size_t n, size_t from, size_t *ms, size_t *me, int32_t *id)
{
    for (size_t i = from; i < n; i++) {
        if (!tk->added_first[s[i]]) continue;
        size_t best = 0;
        int32_t best_id = -1;
        uint32_t best_flags = 0;
        for (uint32_t k = 0; k < tk->n_added; k++) {
            uint32_t a = tk->added[k].id, len = tk->tok_len[a];
            if (len > best && len <= n - i && memcmp(s + i, tk->tok_bytes + tk->tok_off[a], len) == 0) {
                if ((tk->added[k].flags & Q3_ADDED_SINGLE_WORD) &&
                    ((i > 0 && is_word_byte(s[i - 1])) || (i + len < n && is_word_byte(s[i + len]))))
                    continue;
                best = len;
                best_id = (int32_t)a;
                best_flags = tk->added[k].flags;
            }
        }
        if (best_id >= 0) {
            size_t b = i, e = i + best;
            if (best_flags & Q3_ADDED_LSTRIP)
                while (b > from && is_space(s[b - 1])) b--;
            if (best_flags & Q3_ADDED_RSTRIP)
                while (e < n && is_space(s[e])) e++;
            *ms = b;
            *me = e;
            *id = best_id;
            return 1;
        }
    }
    return 0;
}

int q3_tokenize(const q3_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids, q3_err *err)
{
    tok_ctx *tk = (tok_ctx *)t; /* the word cache is updated: not for concurrent use */
    const uint8_t *s = (const uint8_t *)text;
    id_vec out = {0};
    size_t pos = 0, ms, me;
    int32_t id;
    while (pos < len && find_added(tk, s, len, pos, &ms, &me, &id)) {
        if (encode_plain(tk, s + pos, ms - pos, &out)) goto fail;
        push_id(&out, id);
        pos = me;
    }
    if (encode_plain(tk, s + pos, len - pos, &out) || out.failed) goto fail;
    *ids = out.v ? out.v : malloc(sizeof(int32_t));
    *n_ids = out.n;
    return *ids ? 0 : -1;
fail:
    free(out.v);
    q3_set_err(err, "tokenizer: out of memory encoding %zu bytes", len);
    return -1;
}
