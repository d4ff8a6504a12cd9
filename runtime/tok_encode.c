/* tok_encode.c - text to ids as HF tokenizers' encode(add_special_tokens=False):
 * added tokens split out (raw, then normalized), the normalizer, the
 * pre-tokenizer stages, byte-level BPE (a heap of candidate merges, O(n log n)
 * per piece) and a word cache. */
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
    int regex_rc; /* a PCRE2 error (not "no match") stopped the pre-tokenizer */
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
    if (n_ids) memcpy(c->ids + c->ids_len, ids, n_ids * sizeof *ids); /* a piece may encode to nothing */
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
    if (tk->ignore_merges) { /* a piece that is a whole vocab token is taken as is */
        int32_t whole = tok_bytes_lookup(tk, (const char *)s, n);
        if (whole >= 0) {
            push_id(out, whole);
            return out->failed ? -1 : 0;
        }
    }
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
        if (id[i] >= 0) push_id(out, id[i]); /* a byte with no symbol is dropped, as HF does */
    if (!out->failed) cache_put(&tk->cache, s, n, out->n > start ? out->v + start : NULL, out->n - start);
    free(id), free(next), free(prev), free(heap);
    return out->failed ? -1 : 0;
}

/* ---- normalizer ---- */

int tok_normalize(const tok_ctx *tk, const uint8_t *s, size_t n, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    if (!tk->norm_opts || !n) return 0;
    /* Fast path: text below U+0300 is already NFC (only combining marks,
     * which start there, compose); for the other forms only ASCII is stable. */
    uint8_t limit = tk->norm_opts == (UTF8PROC_STABLE | UTF8PROC_COMPOSE) ? 0xcc : 0x80;
    size_t i = 0;
    while (i < n && s[i] < limit) i++;
    if (i == n) return 0;
    uint8_t *norm = NULL;
    utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)n, &norm, (utf8proc_option_t)tk->norm_opts);
    if (r < 0) return -1;
    *out = norm;
    *out_len = (size_t)r;
    return 0;
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

/* Append one part (a match or the gap before it) of span number `first`
 * onwards, as HF's NormalizedString::split applies the behaviour. */
typedef struct {
    span_vec *out;
    size_t first;     /* out index of this input span's first part */
    int prev_match;   /* the previous part was a match */
    span pending;     /* MergedWithNext: a match waiting for the part after it */
    int has_pending;
} split_state;

static int emit_part(split_state *st, int behavior, size_t off, size_t len, int is_match)
{
    span_vec *out = st->out;
    int rc = 0;
    switch (behavior) {
    case TOK_REMOVED:
        if (!is_match) rc = push_span(out, off, len);
        break;
    case TOK_ISOLATED:
        rc = push_span(out, off, len);
        break;
    case TOK_MERGED_PREV: /* a match joins the part before it */
        if (is_match && !st->prev_match && out->n > st->first) out->v[out->n - 1].len = off + len - out->v[out->n - 1].off;
        else rc = push_span(out, off, len);
        break;
    case TOK_CONTIGUOUS: /* runs of matches become one part */
        if (is_match == st->prev_match && out->n > st->first) out->v[out->n - 1].len = off + len - out->v[out->n - 1].off;
        else rc = push_span(out, off, len);
        break;
    case TOK_MERGED_NEXT: /* a match joins the part after it */
        if (st->has_pending) {
            if (!is_match) {
                rc = push_span(out, st->pending.off, off + len - st->pending.off);
                st->has_pending = 0;
                break;
            }
            rc = push_span(out, st->pending.off, st->pending.len);
            st->has_pending = 0;
        }
        if (is_match) {
            st->pending = (span){off, len};
            st->has_pending = 1;
        } else {
            rc = push_span(out, off, len);
        }
        break;
    }
    st->prev_match = is_match;
    return rc;
}

/* Split every span of `in` by one regex stage into `out`. The regex sees only
 * the span, as HF matches each piece on its own. */
static int split_stage(const tok_ctx *tk, const tok_stage *stage, const uint8_t *text, const span_vec *in,
                       span_vec *out, int *regex_rc)
{
    out->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        size_t base = in->v[k].off, len = in->v[k].len, pos = 0, search = 0;
        split_state st = {out, out->n, 0, {0, 0}, 0};
        while (search < len) {
            int rc = pcre2_match(stage->re, text + base, len, search, PCRE2_NO_UTF_CHECK, stage->match, tk->match_ctx);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) { /* a limit: never guess the split */
                *regex_rc = rc;
                return -1;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(stage->match);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* empty match: not a split point; step over one character */
                int cl = q3_utf8_seq(text + base + ms, len - ms);
                search = ms + (size_t)(cl > 0 ? cl : 1);
                continue;
            }
            if (ms > pos && emit_part(&st, stage->behavior, base + pos, ms - pos, stage->invert)) return -1;
            if (emit_part(&st, stage->behavior, base + ms, me - ms, !stage->invert)) return -1;
            pos = search = me;
        }
        if (pos < len && emit_part(&st, stage->behavior, base + pos, len - pos, stage->invert)) return -1;
        if (st.has_pending && push_span(out, st.pending.off, st.pending.len)) return -1;
    }
    return 0;
}

/* ByteLevel's add_prefix_space: a space before every piece that lacks one. */
static int prefix_stage(const uint8_t **text, uint8_t **owned, span_vec *sv)
{
    size_t need = 0;
    for (size_t k = 0; k < sv->n; k++) need += sv->v[k].len + ((*text)[sv->v[k].off] != ' ');
    uint8_t *buf = malloc(need ? need : 1);
    if (!buf) return -1;
    size_t o = 0;
    for (size_t k = 0; k < sv->n; k++) {
        const uint8_t *p = *text + sv->v[k].off;
        size_t start = o;
        if (p[0] != ' ') buf[o++] = ' ';
        memcpy(buf + o, p, sv->v[k].len);
        o += sv->v[k].len;
        sv->v[k] = (span){start, o - start};
    }
    free(*owned);
    *owned = buf;
    *text = buf;
    return 0;
}

/* Pre-tokenize one piece of normalized text and run BPE on the results. */
static int pretok_bpe(tok_ctx *tk, const uint8_t *s, size_t n, id_vec *out)
{
    span_vec a = {0}, b = {0};
    uint8_t *owned = NULL;
    const uint8_t *text = s;
    int rc = -1;
    if (push_span(&a, 0, n)) goto out;
    for (int i = 0; i < tk->n_stages; i++) {
        if (tk->stages[i].kind == STAGE_PREFIX_SPACE) {
            if (prefix_stage(&text, &owned, &a)) goto out;
            continue;
        }
        if (split_stage(tk, &tk->stages[i], text, &a, &b, &out->regex_rc)) goto out;
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
    free(owned);
    return rc;
}

/* ---- added tokens ---- */

/* Unicode \w and \s as HF's splitter (Rust regex) sees them. */
static int is_word_cp(int32_t c)
{
    if (c == 0x200c || c == 0x200d) return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}
static int is_space_cp(int32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
/* The character ending at s[i] (exclusive), -1 when there is none or it is invalid. */
static int32_t cp_before(const uint8_t *s, size_t i, size_t *len)
{
    if (i == 0) return -1;
    size_t b = i - 1;
    while (b > 0 && i - b < 4 && (s[b] & 0xc0) == 0x80) b--;
    int k = q3_utf8_seq(s + b, i - b);
    if (k <= 0 || (size_t)k != i - b) return -1;
    utf8proc_int32_t c;
    utf8proc_iterate(s + b, k, &c);
    *len = (size_t)k;
    return c;
}
static int32_t cp_at(const uint8_t *s, size_t n, size_t *len)
{
    if (!n) return -1;
    int k = q3_utf8_seq(s, n);
    if (k <= 0) return -1;
    utf8proc_int32_t c;
    utf8proc_iterate(s, k, &c);
    *len = (size_t)k;
    return c;
}

/* The next added token of `set` in s[search..n), as HF's find_matches: the
 * leftmost-longest match; a single_word token touching a word is skipped
 * (the search resumes after it); lstrip/rstrip take in the whitespace around,
 * lstrip not before start_offset (the end of the previous token). */
static int next_added(const tok_ctx *tk, const tok_added_set *set, const uint8_t *s, size_t n, size_t search,
                      size_t start_offset, size_t *ms, size_t *me, int32_t *id)
{
    size_t i = search;
    while (i < n) {
        if (!set->first[s[i]]) {
            i++;
            continue;
        }
        const tok_added *best = NULL;
        for (uint32_t k = 0; k < set->n; k++) {
            const tok_added *a = &tk->added[set->idx[k]];
            if ((!best || a->match_len > best->match_len) && a->match_len <= n - i &&
                memcmp(s + i, tk->match_text + a->match_off, a->match_len) == 0)
                best = a;
        }
        if (!best) {
            i++;
            continue;
        }
        size_t start = i, stop = i + best->match_len, cl;
        int32_t c;
        if ((best->flags & Q3_ADDED_SINGLE_WORD) &&
            (((c = cp_before(s, start, &cl)) >= 0 && is_word_cp(c)) || ((c = cp_at(s + stop, n - stop, &cl)) >= 0 && is_word_cp(c)))) {
            i = stop;
            continue;
        }
        if (best->flags & Q3_ADDED_LSTRIP)
            while (start > start_offset && (c = cp_before(s, start, &cl)) >= 0 && is_space_cp(c)) start -= cl;
        if (best->flags & Q3_ADDED_RSTRIP)
            while ((c = cp_at(s + stop, n - stop, &cl)) >= 0 && is_space_cp(c)) stop += cl;
        *ms = start;
        *me = stop;
        *id = (int32_t)best->id;
        return 1;
    }
    return 0;
}

/* ---- encode ---- */

/* Valid UTF-8 between raw added tokens: normalize, split out the normalized
 * added tokens, pre-tokenize and BPE the rest. */
static int encode_segment(tok_ctx *tk, const uint8_t *s, size_t n, id_vec *out)
{
    uint8_t *norm = NULL;
    size_t len = n;
    if (tok_normalize(tk, s, n, &norm, &len)) return -1;
    const uint8_t *text = norm ? norm : s;
    size_t pos = 0, ms, me;
    int32_t id;
    int rc = -1;
    while (tk->norm_set.n && next_added(tk, &tk->norm_set, text, len, pos, pos, &ms, &me, &id)) {
        if (ms > pos && pretok_bpe(tk, text + pos, ms - pos, out)) goto out;
        push_id(out, id);
        pos = me;
    }
    if (pos < len && pretok_bpe(tk, text + pos, len - pos, out)) goto out;
    rc = out->failed ? -1 : 0;
out:
    free(norm);
    return rc;
}

/* Text between raw added tokens; invalid UTF-8 bytes are encoded one by one
 * (HF takes only valid text: this is our defined behaviour). */
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

static int tokenize_locked(tok_ctx *tk, const char *text, size_t len, int32_t **ids, size_t *n_ids, q3_err *err)
{
    const uint8_t *s = (const uint8_t *)text;
    id_vec out = {0};
    size_t pos = 0, ms, me;
    int32_t id;
    while (tk->raw_set.n && next_added(tk, &tk->raw_set, s, len, pos, pos, &ms, &me, &id)) {
        if (ms > pos && encode_plain(tk, s + pos, ms - pos, &out)) goto fail;
        push_id(&out, id);
        pos = me;
    }
    if (encode_plain(tk, s + pos, len - pos, &out) || out.failed) goto fail;
    *ids = out.v ? out.v : malloc(sizeof(int32_t));
    *n_ids = out.n;
    if (*ids) return 0;
fail:
    free(out.v);
    if (out.regex_rc) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(out.regex_rc, msg, sizeof msg);
        q3_set_err(err, "tokenizer: the pre-tokenizer regex failed on %zu bytes of input: %s", len, (char *)msg);
    } else {
        q3_set_err(err, "tokenizer: out of memory encoding %zu bytes", len);
    }
    return -1;
}

int q3_tokenize(const q3_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids, q3_err *err)
{
    tok_ctx *tk = (tok_ctx *)t; /* its encoding scratch and word cache are written: tok_internal.h */
    pthread_mutex_lock(&tk->encode_lock);
    int rc = tokenize_locked(tk, text, len, ids, n_ids, err);
    pthread_mutex_unlock(&tk->encode_lock);
    return rc;
}
