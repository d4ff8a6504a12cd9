/* tokenizer.c - building the tokenizer from the TOKENIZER section: the vocab
 * as raw bytes (the byte-level alphabet undone), hash maps for bytes -> id and
 * (left, right) -> merge, the pipeline read from the file's JSON; lookups and
 * decoding. Encoding is in tok_encode.c. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
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

int32_t tok_bytes_lookup(const tok_ctx *tk, const char *s, size_t n) { return bytes_lookup(tk, s, n); }

/* One token's text: its piece, and the bytes the ByteLevel decoder makes of it
 * (the alphabet undone, or the UTF-8 as is when a char is outside it). */
static void set_token(tok_ctx *tk, uint32_t id, const char *text, uint32_t len, uint64_t *po, uint64_t *bo)
{
    memcpy(tk->pieces + *po, text, len);
    tk->piece_off[id] = *po;
    tk->piece_len[id] = len;
    *po += len;
    int n = unmap_piece(tk, text, len, tk->tok_bytes + *bo);
    if (n < 0) {
        memcpy(tk->tok_bytes + *bo, text, len);
        n = (int)len;
    }
    tk->tok_off[id] = *bo;
    tk->tok_len[id] = (uint32_t)n;
    *bo += (uint64_t)n;
}

/* The two added-token passes: tokens matched on the raw text, then the
 * `normalized` ones on the normalized text (with their normalized content). */
static int build_added(tok_ctx *tk, const q3_tokdata *td, q3_err *err)
{
    uint64_t total = 0;
    tk->n_added = td->n_added;
    tk->added = calloc(td->n_added ? td->n_added : 1, sizeof *tk->added);
    tk->raw_set.idx = calloc(td->n_added ? td->n_added : 1, sizeof *tk->raw_set.idx);
    tk->norm_set.idx = calloc(td->n_added ? td->n_added : 1, sizeof *tk->norm_set.idx);
    uint8_t **norm = calloc(td->n_added ? td->n_added : 1, sizeof *norm);
    size_t *norm_len = calloc(td->n_added ? td->n_added : 1, sizeof *norm_len);
    int rc = -1;
    if (!tk->added || !tk->raw_set.idx || !tk->norm_set.idx || !norm || !norm_len) goto oom;
    for (uint32_t i = 0; i < td->n_added; i++) {
        const q3_tok_added *a = &td->added[i];
        norm_len[i] = a->len;
        if ((a->flags & Q3_ADDED_NORMALIZED) &&
            tok_normalize(tk, (const uint8_t *)a->text, a->len, &norm[i], &norm_len[i]))
            goto oom;
        total += norm_len[i];
    }
    tk->match_text = malloc(total + 1);
    if (!tk->match_text) goto oom;
    uint64_t off = 0;
    for (uint32_t i = 0; i < td->n_added; i++) {
        const q3_tok_added *a = &td->added[i];
        const char *m = norm[i] ? (const char *)norm[i] : a->text;
        if (!norm_len[i]) {
            q3_set_err(err, "tokenizer: added token %u (id %u) is empty", i, a->id);
            goto out;
        }
        memcpy(tk->match_text + off, m, norm_len[i]);
        tk->added[i] = (tok_added){a->id, a->flags, off, (uint32_t)norm_len[i]};
        off += norm_len[i];
        tok_added_set *set = (a->flags & Q3_ADDED_NORMALIZED) ? &tk->norm_set : &tk->raw_set;
        set->idx[set->n++] = i;
        set->first[(uint8_t)m[0]] = 1;
    }
    rc = 0;
    goto out;
oom:
    q3_set_err(err, "tokenizer: out of memory");
out:
    for (uint32_t i = 0; norm && i < td->n_added; i++) free(norm[i]);
    free(norm);
    free(norm_len);
    return rc;
}

q3_tokenizer *q3_tokenizer_create(const q3_tokdata *td, q3_err *err)
{
    tok_ctx *tk = calloc(1, sizeof *tk);
    if (!tk) goto oom;
    pthread_mutex_init(&tk->encode_lock, NULL);
    uint32_t byte_to_cp[256];
    byte_alphabet(byte_to_cp);
    for (int i = 0; i < 512; i++) tk->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) tk->cp_to_byte[byte_to_cp[b]] = (int16_t)b;

    /* Ids index flat arrays: they must be (nearly) dense. */
    uint64_t size = 0, count = (uint64_t)td->n_vocab + td->n_added;
    for (uint32_t i = 0; i < td->n_vocab; i++) size = td->vocab[i].id + 1ull > size ? td->vocab[i].id + 1ull : size;
    for (uint32_t i = 0; i < td->n_added; i++) size = td->added[i].id + 1ull > size ? td->added[i].id + 1ull : size;
    if (size > 2 * count + 1024) {
        q3_set_err(err, "tokenizer: token ids reach %llu for %llu tokens; ids must be dense",
                   (unsigned long long)size - 1, (unsigned long long)count);
        goto fail;
    }
    tk->size = (uint32_t)size;
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
        set_token(tk, e->id, e->text, e->len, &po, &bo);
    }
    for (uint32_t i = 0; i < td->n_added; i++) {
        const q3_tok_added *a = &td->added[i];
        uint8_t f = tk->flags[a->id];
        if (f & TOK_ADDED) {
            q3_set_err(err, "tokenizer: added token id %u appears twice", a->id);
            goto fail;
        }
        /* An added token may name a vocab entry, with the same text (HF would
         * decode the added content; a different text is not supported). */
        if ((f & TOK_PRESENT) &&
            (tk->piece_len[a->id] != a->len || memcmp(tk->pieces + tk->piece_off[a->id], a->text, a->len) != 0)) {
            q3_set_err(err, "tokenizer: added token \"%.*s\" has id %u, which the vocab gives to another text",
                       (int)(a->len < 40 ? a->len : 40), a->text, a->id);
            goto fail;
        }
        tk->flags[a->id] = TOK_PRESENT | TOK_ADDED | ((a->flags & Q3_ADDED_SPECIAL) ? TOK_SPECIAL : 0);
        if (!(f & TOK_PRESENT)) set_token(tk, a->id, a->text, a->len, &po, &bo);
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

    tk->merge_mask = pow2_at_least(2ull * td->n_merges) - 1;
    tk->merge_slots = malloc((tk->merge_mask + 1) * sizeof *tk->merge_slots);
    if (!tk->merge_slots) goto oom;
    for (uint64_t i = 0; i <= tk->merge_mask; i++) tk->merge_slots[i].rank = UINT32_MAX;
    for (uint32_t r = 0; r < td->n_merges; r++) {
        const q3_tok_merge *m = &td->merges[r];
        if (m->left >= size || m->right >= size || m->result >= size || !(tk->flags[m->left] & TOK_PRESENT) ||
            !(tk->flags[m->right] & TOK_PRESENT) || !(tk->flags[m->result] & TOK_PRESENT)) {
            q3_set_err(err, "tokenizer: merge %u (%u + %u -> %u) names an id that is not in the vocabulary", r,
                       m->left, m->right, m->result);
            goto fail;
        }
        if (merge_lookup(tk, m->left, m->right)) continue; /* the first (lowest) rank wins */
        uint64_t h = hash_pair(m->left, m->right) & tk->merge_mask;
        while (tk->merge_slots[h].rank != UINT32_MAX) h = (h + 1) & tk->merge_mask;
        tk->merge_slots[h] = (tok_merge_slot){m->left, m->right, r, m->result};
    }
    tk->jit_stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
    tk->match_ctx = pcre2_match_context_create(NULL);
    if (!tk->jit_stack || !tk->match_ctx) goto oom;
    pcre2_jit_stack_assign(tk->match_ctx, NULL, tk->jit_stack);
    if (parse_pipeline(tk, td, err) || build_added(tk, td, err)) goto fail;
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
    for (int i = 0; i < tk->n_stages; i++) {
        pcre2_match_data_free(tk->stages[i].match);
        pcre2_code_free(tk->stages[i].re);
    }
    pcre2_match_context_free(tk->match_ctx);
    pcre2_jit_stack_free(tk->jit_stack);
    free(tk->tok_off);
    free(tk->tok_len);
    free(tk->piece_off);
    free(tk->piece_len);
    free(tk->flags);
    free(tk->tok_bytes);
    free(tk->pieces);
    free(tk->added);
    free(tk->match_text);
    free(tk->raw_set.idx);
    free(tk->norm_set.idx);
    free(tk->bytes_slots);
    free(tk->merge_slots);
    tok_cache_free(&tk->cache);
    pthread_mutex_destroy(&tk->encode_lock);
    free(tk);
}

/* ---- pipeline description from the file's JSON ---- */

static int add_stage(tok_ctx *tk, int kind, const char *pattern, int is_regex, int behavior, int invert, q3_err *err)
{
    if (tk->n_stages >= TOK_MAX_STAGES) {
        q3_set_err(err, "tokenizer: more than %d pre-tokenizer stages", TOK_MAX_STAGES);
        return -1;
    }
    tok_stage *s = &tk->stages[tk->n_stages];
    *s = (tok_stage){kind, NULL, NULL, behavior, invert};
    if (kind == STAGE_SPLIT) {
        int code;
        PCRE2_SIZE off;
        uint32_t opts = PCRE2_UTF | (is_regex ? PCRE2_UCP : PCRE2_LITERAL); /* LITERAL allows no UCP */
        s->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
        if (!s->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            q3_set_err(err, "tokenizer: pre-tokenizer regex does not compile at offset %zu: %s", (size_t)off,
                       (char *)msg);
            return -1;
        }
        pcre2_jit_compile(s->re, PCRE2_JIT_COMPLETE); /* the interpreter runs it when JIT is unavailable */
        s->match = pcre2_match_data_create_from_pattern(s->re, NULL);
        if (!s->match) {
            pcre2_code_free(s->re);
            q3_set_err(err, "tokenizer: out of memory");
            return -1;
        }
    }
    tk->n_stages++;
    return 0;
}

/* The regex ByteLevel splits with when use_regex is set (HF's, GPT-2's). */
static const char *GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pretok(tok_ctx *tk, const cJSON *p, int *byte_level, q3_err *err)
{
    if (!p || cJSON_IsNull(p)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsString(type)) {
        q3_set_err(err, "tokenizer: pre_tokenizer without a \"type\"");
        return -1;
    }
    const char *t = type->valuestring;
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *e, *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list)) {
            q3_set_err(err, "tokenizer: Sequence pre_tokenizer without a \"pretokenizers\" array");
            return -1;
        }
        cJSON_ArrayForEach(e, list) if (parse_pretok(tk, e, byte_level, err)) return -1;
        return 0;
    }
    if (strcmp(t, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex"), *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        int behavior = -1;
        for (int i = 0; i < 5 && cJSON_IsString(beh); i++)
            if (strcmp(beh->valuestring, names[i]) == 0) behavior = i;
        if ((!cJSON_IsString(re) && !cJSON_IsString(str)) || behavior < 0) {
            q3_set_err(err, "tokenizer: Split pre-tokenizer needs a Regex or String pattern and a known behavior "
                            "(Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
            return -1;
        }
        int invert = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "invert"));
        return add_stage(tk, STAGE_SPLIT, cJSON_IsString(re) ? re->valuestring : str->valuestring, cJSON_IsString(re),
                         behavior, invert, err);
    }
    if (strcmp(t, "ByteLevel") == 0) {
        *byte_level = 1;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space")) &&
            add_stage(tk, STAGE_PREFIX_SPACE, NULL, 0, 0, 0, err))
            return -1;
        const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        if (!use_regex || cJSON_IsTrue(use_regex)) return add_stage(tk, STAGE_SPLIT, GPT2_REGEX, 1, TOK_ISOLATED, 0, err);
        return 0;
    }
    q3_set_err(err, "tokenizer: pre-tokenizer type \"%s\" is not supported (Sequence, Split, ByteLevel are)", t);
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
    q3_set_err(err, "tokenizer: normalizer type \"%s\" is not supported (NFC, NFD, NFKC, NFKD and Sequence are)", t);
    return -1;
}

/* The decoder must be ByteLevel (alone or in a Sequence): decoding undoes the alphabet. */
static int check_decoder(const cJSON *d, q3_err *err)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(d, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "ByteLevel") == 0) return 0;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "Sequence") == 0 && cJSON_GetArraySize(list) == 1)
        return check_decoder(cJSON_GetArrayItem(list, 0), err);
    q3_set_err(err, "tokenizer: decoder %s is not supported (ByteLevel is)",
               cJSON_IsString(type) ? type->valuestring : "null");
    return -1;
}

static int parse_pipeline(tok_ctx *tk, const q3_tokdata *td, q3_err *err)
{
    cJSON *model = cJSON_ParseWithLength(td->model_json.text, td->model_json.len);
    cJSON *norm = cJSON_ParseWithLength(td->normalizer_json.text, td->normalizer_json.len);
    cJSON *pre = cJSON_ParseWithLength(td->pretok_json.text, td->pretok_json.len);
    cJSON *dec = cJSON_ParseWithLength(td->decoder_json.text, td->decoder_json.len);
    int rc = -1, byte_level = 0;
    if (!model || !norm || !pre || !dec) {
        q3_set_err(err, "tokenizer: the %s JSON in the tokenizer section is malformed",
                   !model ? "model" : !norm ? "normalizer" : !pre ? "pre_tokenizer" : "decoder");
        goto out;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0) {
        q3_set_err(err, "tokenizer: model type must be BPE");
        goto out;
    }
    /* BPE options that change the algorithm beyond what HF's byte-level models use. */
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    const cJSON *csp = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    const cJSON *eow = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if ((cJSON_IsNumber(dropout) && dropout->valuedouble > 0) || (cJSON_IsString(csp) && csp->valuestring[0]) ||
        (cJSON_IsString(eow) && eow->valuestring[0])) {
        q3_set_err(err, "tokenizer: BPE dropout, continuing_subword_prefix and end_of_word_suffix are not supported");
        goto out;
    }
    tk->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    if (parse_normalizer(tk, norm, err) || parse_pretok(tk, pre, &byte_level, err) || check_decoder(dec, err)) goto out;
    if (!byte_level) {
        q3_set_err(err, "tokenizer: only byte-level BPE is supported (the pre_tokenizer has no ByteLevel step)");
        goto out;
    }
    /* The initial symbol of each byte: its vocab token, else <0xXX> with
     * byte_fallback, else the unk token, else none (HF then drops it). */
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    int32_t unk_id = cJSON_IsString(unk) ? bytes_lookup(tk, unk->valuestring, strlen(unk->valuestring)) : -1;
    int byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    for (int b = 0; b < 256; b++) {
        char c = (char)b, hex[8];
        tk->byte_id[b] = bytes_lookup(tk, &c, 1);
        if (tk->byte_id[b] < 0 && byte_fallback) {
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            tk->byte_id[b] = bytes_lookup(tk, hex, 6);
        }
        if (tk->byte_id[b] < 0) tk->byte_id[b] = unk_id;
    }
    rc = 0;
out:
    cJSON_Delete(model);
    cJSON_Delete(norm);
    cJSON_Delete(pre);
    cJSON_Delete(dec);
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
    for (uint32_t i = 0; i < tk->n_added; i++) { /* an added token by its content */
        uint32_t id = tk->added[i].id;
        if (tk->piece_len[id] == len && memcmp(tk->pieces + tk->piece_off[id], text, len) == 0) return (int32_t)id;
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
