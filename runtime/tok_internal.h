/* tok_internal.h - the tokenizer's tables, shared by its source files (internal). */
#ifndef Q3_TOK_INTERNAL_H
#define Q3_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum { TOK_PRESENT = 1, TOK_ADDED = 2, TOK_SPECIAL = 4 };
/* HF's SplitDelimiterBehavior. */
enum { TOK_REMOVED, TOK_ISOLATED, TOK_MERGED_PREV, TOK_MERGED_NEXT, TOK_CONTIGUOUS };
/* Pre-tokenizer stages, run in file order over every piece. */
enum { STAGE_SPLIT, STAGE_PREFIX_SPACE };
#define TOK_MAX_STAGES 16

typedef struct {
    uint32_t left, right, rank, result;
} tok_merge_slot;

/* An added token as the splitter matches it: content (or, for normalized
 * tokens, the normalized content) at match_off in tok_ctx.match_text. */
typedef struct {
    uint32_t id, flags; /* Q3_ADDED_* */
    uint64_t match_off;
    uint32_t match_len;
} tok_added;

/* One pass of the added-token splitter (HF runs two: raw, then normalized). */
typedef struct {
    uint32_t n;
    uint32_t *idx;      /* into tok_ctx.added */
    uint8_t first[256]; /* first bytes of the patterns, to skip scanning */
} tok_added_set;

typedef struct {
    int kind;
    pcre2_code *re;
    pcre2_match_data *match;
    int behavior, invert;
} tok_stage;

/* Word cache: piece bytes -> ids, cleared whole when full. */
typedef struct {
    uint32_t *slots; /* index into entries + 1, 0 = empty */
    uint32_t mask;
    struct cache_entry { uint64_t key_off; uint32_t key_len, ids_off, n_ids; } *entries;
    uint32_t n_entries, cap_entries;
    uint8_t *keys;
    uint64_t keys_len, keys_cap;
    int32_t *ids;
    uint64_t ids_len, ids_cap;
} tok_cache;

typedef struct {
    uint32_t size; /* 1 + highest id */
    uint64_t *tok_off, *piece_off;
    uint32_t *tok_len, *piece_len;
    uint8_t *flags;
    uint8_t *tok_bytes; /* what each token decodes to (ByteLevel decoder rule) */
    char *pieces;       /* tokenizer.json strings */
    int16_t cp_to_byte[512];
    int32_t byte_id[256]; /* initial symbol of each byte (vocab, <0xXX> fallback, unk or -1) */
    uint32_t n_added;
    tok_added *added;
    char *match_text;
    tok_added_set raw_set, norm_set;
    int32_t *bytes_slots; /* bytes -> BPE vocab id */
    uint64_t bytes_mask;
    tok_merge_slot *merge_slots;
    uint64_t merge_mask;
    int norm_opts; /* utf8proc options, 0 = none */
    int n_stages;
    tok_stage stages[TOK_MAX_STAGES];
    int ignore_merges;
    pcre2_jit_stack *jit_stack; /* 32 KiB growing to 64 MiB: long runs of one class */
    pcre2_match_context *match_ctx;
    tok_cache cache;
    /* q3_tokenize writes the regex stages' match data, the JIT stack, match_text and
     * the word cache, and q3.h lets threads tokenize with one model's tokenizer at
     * once: one encode at a time (each is short next to a decode step). */
    pthread_mutex_t encode_lock;
} tok_ctx;

void tok_cache_free(tok_cache *c);
/* bytes -> BPE vocab id, or -1. */
int32_t tok_bytes_lookup(const tok_ctx *tk, const char *s, size_t n);
/* NFC etc. as the normalizer says; *out malloc'd (NULL and n unchanged when no normalizer). */
int tok_normalize(const tok_ctx *tk, const uint8_t *s, size_t n, uint8_t **out, size_t *out_len);

#endif
