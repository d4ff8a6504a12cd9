/* tokenizer.c - byte-level BPE as HuggingFace tokenizers runs it for Qwen3:
 * added tokens split out first, then per segment the normalizer, the
 * pre-tokenizer (regex from the file, PCRE2 JIT) and BPE merges by rank.
 * Internally every token is its raw bytes (the byte-level alphabet undone). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include "tok_internal.h"
#include "tokenizer.h"
#include "utf8.h"

/* GPT-2's byte <-> unicode alphabet: printable bytes map to themselves, the
 * rest to U+0100 upwards in byte order. */
static void byte_alphabet(uint32_t byte_to_cp[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        byte_to_cp[b] = printable ? (uint32_t)b : 256u + (uint32_t)n++;
    }
}

/* Undo the alphabet: the token's bytes, or NULL-length -1 when a char is outside
 * it (then HF keeps the raw UTF-8, which the caller does). */
static int unmap_piece(const tok_ctx *tk, const char *s, size_t n, uint8_t *out)
{
    size_t o = 0, i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0 || cp < 0 || cp >= 512 || tk->cp_to_byte[cp] < 0) return -1;
        out[o++] = (uint8_t)tk->cp_to_byte[cp];
        i += (size_t)k;
    }
    return (int)o;
}

/* ---- hash maps ---- */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}
static uint64_t hash_pair(uint32_t a, uint32_t b)
{
    uint64_t h = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 31);
}

static int32_t bytes_lookup(const tok_ctx *tk, const char *s, size_t n)
{
    for (uint64_t h = hash_bytes(s, n) & tk->bytes_mask; tk->bytes_slots[h] >= 0; h = (h + 1) & tk->bytes_mask) {
        int32_t id = tk->bytes_slots[h];
        if (tk->tok_len[id] == n && memcmp(tk->tok_bytes + tk->tok_off[id], s, n) == 0) return id;
    }
    return -1;
}

static const tok_merge_slot *merge_lookup(const tok_ctx *tk, uint32_t a, uint32_t b)
{
    for (uint64_t h = hash_pair(a, b) & tk->merge_mask; tk->merge_slots[h].rank != UINT32_MAX;
         h = (h + 1) & tk->merge_mask)
        if (tk->merge_slots[h].left == a && tk->merge_slots[h].right == b) return &tk->merge_slots[h];
    return NULL;
}

/* ---- build ---- */

static int parse_pipeline(tok_ctx *tk, const q3_tokdata *td, q3_err *err);

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t c = 16;
    while (c < n) c *= 2;
    return c;
}

q3_tokenizer *q3_tokenizer_create(const q3_tokdata *td, q3_err *err)
{
    tok_ctx *tk = calloc(1, sizeof *tk);
    if (!tk) goto oom;
    uint32_t byte_to_cp[256];
    byte_alphabet(byte_to_cp);
    for (int i = 0; i < 512; i++) tk->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) tk->cp_to_byte[byte_to_cp[b]] = (int16_t)b;

    uint32_t size = 0;
    for (uint32_t i = 0; i < td->n_vocab; i++) size = td->vocab[i].id + 1 > size ? td->vocab[i].id + 1 : size;
    for (uint32_t i = 0; i < td->n_added; i++) size = td->added[i].id + 1 > size ? td->added[i].id + 1 : size;
    tk->size = size;
    uint64_t total = 0;
    for (uint32_t i = 0; i < td->n_vocab; i++) total += td->vocab[i].len;
    for (uint32_t i = 0; i < td->n_added; i++) total += td->added[i].len;
    tk->tok_off = calloc(size ? size : 1, sizeof *tk->tok_off);
    tk->tok_len = calloc(size ? size : 1, sizeof *tk->tok_len);
    tk->piece_off = calloc(size ? size : 1, sizeof *tk->piece_off);
    tk->piece_len = calloc(size ? size : 1, sizeof *tk->piece_len);
    tk->flags = calloc(size ? size : 1, sizeof *tk->flags);
    tk->tok_bytes = malloc(total + 1);
    tk->pieces = malloc(total + 1);
    if (!tk->tok_off || !tk->tok_len || !tk->piece_off || !tk->piece_len || !tk->flags || !tk->tok_bytes ||
        !tk->pieces)
        goto oom;
    uint64_t bo = 0, po = 0;
    for (uint32_t i = 0; i < td->n_vocab; i++) {
        const q3_tok_entry *e = &td->vocab[i];
        if (tk->flags[e->id] & TOK_PRESENT) {
            q3_set_err(err, "tokenizer: vocab id %u appears twice", e->id);
            goto fail;
        }
        tk->flags[e->id] = TOK_PRESENT;
        memcpy(tk->pieces + po, e->text, e->len);
        tk->piece_off[e->id] = po;
        tk->piece_len[e->id] = e->len;
        po += e->len;
        int n = unmap_piece(tk, e->text, e->len, tk->tok_bytes + bo);
        if (n < 0) {
            memcpy(tk->tok_bytes + bo, e->text, e->len);
            n = (int)e->len;
        }
        tk->tok_off[e->id] = bo;
        tk->tok_len[e->id] = (uint32_t)n;
        bo += (uint64_t)n;
    }
    tk->n_added = td->n_added;
    tk->added = calloc(td->n_added ? td->n_added : 1, sizeof *tk->added);
    if (!tk->added) goto oom;
    for (uint32_t i = 0; i < td->n_added; i++) {
        const q3_tok_added *a = &td->added[i];
        /* An added token's text is literal (HF matches and decodes its content as is). */
        tk->flags[a->id] = TOK_PRESENT | TOK_ADDED | ((a->flags & Q3_ADDED_SPECIAL) ? TOK_SPECIAL : 0);
        memcpy(tk->pieces + po, a->text, a->len);
        tk->piece_off[a->id] = po;
        tk->piece_len[a->id] = a->len;
        po += a->len;
        memcpy(tk->tok_bytes + bo, a->text, a->len);
        tk->tok_off[a->id] = bo;
        tk->tok_len[a->id] = a->len;
        bo += a->len;
        tk->added[i] = (tok_added){a->id, a->flags};
        if (a->len) tk->added_first[(uint8_t)a->text[0]] = 1;
    }

    /* bytes -> id for the BPE vocab (added tokens are matched separately). */
    tk->bytes_mask = pow2_at_least(2ull * td->n_vocab) - 1;
    tk->bytes_slots = malloc((tk->bytes_mask + 1) * sizeof *tk->bytes_slots);
    if (!tk->bytes_slots) goto oom;
    memset(tk->bytes_slots, 0xff, (tk->bytes_mask + 1) * sizeof *tk->bytes_slots);
    for (uint32_t i = 0; i < td->n_vocab; i++) {
        uint32_t id = td->vocab[i].id;
        uint64_t h = hash_bytes(tk->tok_bytes + tk->tok_off[id], tk->tok_len[id]) & tk->bytes_mask;
        while (tk->bytes_slots[h] >= 0) h = (h + 1) & tk->bytes_mask;
        tk->bytes_slots[h] = (int32_t)id;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        tk->byte_id[b] = bytes_lookup(tk, &c, 1);
    }

    tk->merge_mask = pow2_at_least(2ull * td->n_merges) - 1;
    tk->merge_slots = malloc((tk->merge_mask + 1) * sizeof *tk->merge_slots);
    if (!tk->merge_slots) goto oom;
    for (uint64_t i = 0; i <= tk->merge_mask; i++) tk->merge_slots[i].rank = UINT32_MAX;
    for (uint32_t r = 0; r < td->n_merges; r++) {
        const q3_tok_merge *m = &td->merges[r];
        if (m->left >= size || m->right >= size || m->result >= size) {
            q3_set_err(err, "tokenizer: merge %u refers to an id beyond the vocabulary (%u)", r, size);
            goto fail;
        }
        if (merge_lookup(tk, m->left, m->right)) continue; /* the first (lowest) rank wins */
        uint64_t h = hash_pair(m->left, m->right) & tk->merge_mask;
        while (tk->merge_slots[h].rank != UINT32_MAX) h = (h + 1) & tk->merge_mask;
        tk->merge_slots[h] = (tok_merge_slot){m->left, m->right, r, m->result};
    }
    if (parse_pipeline(tk, td, err)) goto fail;
    return (q3_tokenizer *)tk;
oom:
    q3_set_err(err, "tokenizer: out of memory");
fail:
    q3_tokenizer_free((q3_tokenizer *)tk);
    return NULL;
}

void q3_tokenizer_free(q3_tokenizer *t)
{
    tok_ctx *tk = (tok_ctx *)t;
    if (!tk) return;
    for (int i = 0; i < tk->n_splits; i++) {
        pcre2_match_data_free(tk->splits[i].match);
        pcre2_code_free(tk->splits[i].re);
    }
    free(tk->tok_off);
    free(tk->tok_len);
    free(tk->piece_off);
    free(tk->piece_len);
    free(tk->flags);
    free(tk->tok_bytes);
    free(tk->pieces);
    free(tk->added);
    free(tk->bytes_slots);
    free(tk->merge_slots);
    tok_cache_free(&tk->cache);
    free(tk);
}

/* ---- pipeline description from the file's JSON ---- */

static int add_split(tok_ctx *tk, const char *pattern, int is_regex, int behavior, int invert, q3_err *err)
{
    if (tk->n_splits >= TOK_MAX_SPLITS) {
        q3_set_err(err, "tokenizer: more than %d split stages", TOK_MAX_SPLITS);
        return -1;
    }
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (is_regex ? 0 : PCRE2_LITERAL);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        q3_set_err(err, "tokenizer: pre-tokenizer regex does not compile at offset %zu: %s", (size_t)off, (char *)msg);
        return -1;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT is unavailable */
    tok_split *s = &tk->splits[tk->n_splits++];
    s->re = re;
    s->match = pcre2_match_data_create_from_pattern(re, NULL);
    s->behavior = behavior;
    s->invert = invert;
    return s->match ? 0 : -1;
}

static const char *GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pretok(tok_ctx *tk, const cJSON *p, q3_err *err)
{
    if (!p || cJSON_IsNull(p)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsString(type)) {
        q3_set_err(err, "tokenizer: pre_tokenizer without a \"type\"");
        return -1;
    }
    const char *t = type->valuestring;
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers")) if (parse_pretok(tk, e, err)) return -1;
        return 0;
    }
    if (strcmp(t, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex"), *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        static const char *names[] = {"Removed", "Isolated"}; /* the behaviours BPE tokenizers use */
        int behavior = -1;
        for (int i = 0; i < 2 && cJSON_IsString(beh); i++)
            if (strcmp(beh->valuestring, names[i]) == 0) behavior = i;
        if ((!cJSON_IsString(re) && !cJSON_IsString(str)) || behavior < 0) {
            q3_set_err(err, "tokenizer: Split pre-tokenizer needs a Regex or String pattern and behavior Isolated or Removed");
            return -1;
        }
        int invert = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "invert"));
        return add_split(tk, cJSON_IsString(re) ? re->valuestring : str->valuestring, cJSON_IsString(re), behavior,
                         invert, err);
    }
    if (strcmp(t, "ByteLevel") == 0) {
        tk->byte_level = 1;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space"))) tk->add_prefix_space = 1;
        const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        if (!use_regex || cJSON_IsTrue(use_regex)) return add_split(tk, GPT2_REGEX, 1, TOK_ISOLATED, 0, err);
        return 0;
    }
    q3_set_err(err, "tokenizer: pre-tokenizer type \"%s\" is not supported", t);
    return -1;
}

static int parse_normalizer(tok_ctx *tk, const cJSON *n, q3_err *err)
{
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) if (parse_normalizer(tk, e, err)) return -1;
        return 0;
    }
    static const struct { const char *name; int opts; } forms[] = {
        {"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
        {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
        {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
        {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (strcmp(t, forms[i].name) == 0) {
            if (tk->norm_opts) {
                q3_set_err(err, "tokenizer: more than one Unicode normalization form");
                return -1;
            }
            tk->norm_opts = forms[i].opts;
            return 0;
        }
    q3_set_err(err, "tokenizer: normalizer type \"%s\" is not supported", t);
    return -1;
}

static int parse_pipeline(tok_ctx *tk, const q3_tokdata *td, q3_err *err)
{
    cJSON *model = cJSON_ParseWithLength(td->model_json.text, td->model_json.len);
    cJSON *norm = cJSON_ParseWithLength(td->normalizer_json.text, td->normalizer_json.len);
    cJSON *pre = cJSON_ParseWithLength(td->pretok_json.text, td->pretok_json.len);
    int rc = -1;
    if (!model || !norm || !pre) {
        q3_set_err(err, "tokenizer: the %s JSON in the tokenizer section is malformed",
                   !model ? "model" : !norm ? "normalizer" : "pre_tokenizer");
        goto out;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0) {
        q3_set_err(err, "tokenizer: model type must be BPE");
        goto out;
    }
    tk->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    tk->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    if (parse_normalizer(tk, norm, err) || parse_pretok(tk, pre, err)) goto out;
    rc = 0;
out:
    cJSON_Delete(model);
    cJSON_Delete(norm);
    cJSON_Delete(pre);
    return rc;
}

/* ---- lookups ---- */

uint32_t q3_tokenizer_size(const q3_tokenizer *t) { return ((const tok_ctx *)t)->size; }

const char *q3_token_bytes(const q3_tokenizer *t, int32_t id, size_t *len)
{
    const tok_ctx *tk = (const tok_ctx *)t;
    if (id < 0 || (uint32_t)id >= tk->size || !(tk->flags[id] & TOK_PRESENT)) return NULL;
    *len = tk->tok_len[id];
    return (const char *)tk->tok_bytes + tk->tok_off[id];
}

const char *q3_token_piece(const q3_tokenizer *t, int32_t id, size_t *len)
{
    const tok_ctx *tk = (const tok_ctx *)t;
    if (id < 0 || (uint32_t)id >= tk->size || !(tk->flags[id] & TOK_PRESENT)) return NULL;
    *len = tk->piece_len[id];
    return tk->pieces + tk->piece_off[id];
}

int q3_token_is_special(const q3_tokenizer *t, int32_t id)
{
    const tok_ctx *tk = (const tok_ctx *)t;
    return id >= 0 && (uint32_t)id < tk->size && (tk->flags[id] & TOK_SPECIAL);
}

int32_t q3_token_lookup(const q3_tokenizer *t, const char *text, size_t len)
{
    const tok_ctx *tk = (const tok_ctx *)t;
    for (uint32_t i = 0; i < tk->n_added; i++) {
        uint32_t id = tk->added[i].id;
        if (tk->tok_len[id] == len && memcmp(tk->tok_bytes + tk->tok_off[id], text, len) == 0) return (int32_t)id;
    }
    return bytes_lookup(tk, text, len);
}

int q3_detokenize(const q3_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special, char **out,
                  size_t *out_len, q3_err *err)
{
    const tok_ctx *tk = (const tok_ctx *)t;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t n = 0;
        if (!q3_token_bytes(t, ids[i], &n)) {
            q3_set_err(err, "tokenizer: token id %d is not in the vocabulary (%u)", ids[i], tk->size);
            return -1;
        }
        total += n;
    }
    uint8_t *raw = malloc(total + 1);
    char *text = malloc(3 * total + 1);
    if (!raw || !text) {
        free(raw);
        free(text);
        q3_set_err(err, "tokenizer: out of memory decoding %zu tokens", n_ids);
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (skip_special && q3_token_is_special(t, ids[i])) continue;
        size_t n = 0;
        const char *b = q3_token_bytes(t, ids[i], &n);
        memcpy(raw + o, b, n);
        o += n;
    }
    size_t len = q3_utf8_lossy(raw, o, text);
    free(raw);
    text[len] = 0;
    *out = text;
    *out_len = len;
    return 0;
}
