/* tok_internal.h - the tokenizer's tables, shared by its source files (internal). */
#ifndef Q3_TOK_INTERNAL_H
#define Q3_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

enum { TOK_PRESENT = 1, TOK_ADDED = 2, TOK_SPECIAL = 4 };
enum { TOK_REMOVED = 0, TOK_ISOLATED = 1 };
#define TOK_MAX_SPLITS 8

typedef struct {
    uint32_t left, right, rank, result;
} tok_merge_slot;

typedef struct {
    uint32_t id, flags; /* Q3_ADDED_* */
} tok_added;

typedef struct {
    pcre2_code *re;
    pcre2_match_data *match;
    int behavior, invert;
} tok_split;

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
    uint8_t *tok_bytes; /* raw bytes of every token */
    char *pieces;       /* tokenizer.json strings */
    int16_t cp_to_byte[512];
    int32_t byte_id[256];
    uint32_t n_added;
    tok_added *added;
    uint8_t added_first[256]; /* first bytes of added tokens, to skip scanning */
    int32_t *bytes_slots;     /* bytes -> BPE vocab id */
    uint64_t bytes_mask;
    tok_merge_slot *merge_slots;
    uint64_t merge_mask;
    int norm_opts; /* utf8proc options, 0 = none */
    int n_splits;
    tok_split splits[TOK_MAX_SPLITS];
    int byte_level, add_prefix_space, ignore_merges, byte_fallback;
    tok_cache cache;
} tok_ctx;

void tok_cache_free(tok_cache *c);

#endif
