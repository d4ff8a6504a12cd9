/* tokenizer.h - Qwen3 byte-level BPE, identical to HuggingFace tokenizers,
 * built from the TOKENIZER section of a .q3 file. */
#ifndef Q3_TOKENIZER_H
#define Q3_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "../format/q3_format.h"

typedef struct q3_tokenizer q3_tokenizer;

/* Build from decoded section data; copies what it keeps (td may be freed after). */
q3_tokenizer *q3_tokenizer_create(const q3_tokdata *td, q3_err *err);
void q3_tokenizer_free(q3_tokenizer *tk);

/* Encode len bytes of text (special tokens are matched, as HF does with
 * add_special_tokens=False). Invalid UTF-8 is encoded byte by byte through the
 * byte-level alphabet, never rejected. *ids is malloc'd; returns 0 or -1 with err. */
int q3_tokenize(const q3_tokenizer *tk, const char *text, size_t len,
                int32_t **ids, size_t *n_ids, q3_err *err);

/* Raw bytes a token stands for (byte-level alphabet undone); NULL when id is unknown. */
const char *q3_token_bytes(const q3_tokenizer *tk, int32_t id, size_t *len);
/* The token's text as tokenizer.json writes it (for --pieces); NULL when unknown. */
const char *q3_token_piece(const q3_tokenizer *tk, int32_t id, size_t *len);
/* Id of a vocab or added token with exactly this text, or -1. */
int32_t q3_token_lookup(const q3_tokenizer *tk, const char *text, size_t len);
int q3_token_is_special(const q3_tokenizer *tk, int32_t id);
uint32_t q3_tokenizer_size(const q3_tokenizer *tk); /* 1 + highest id */

/* Decode ids to bytes (skip_special = 0 keeps special tokens' text); *out malloc'd, NUL-terminated. */
int q3_detokenize(const q3_tokenizer *tk, const int32_t *ids, size_t n_ids, int skip_special,
                  char **out, size_t *out_len, q3_err *err);

/* Streaming decode: emits only complete UTF-8 sequences, so a character split
 * across tokens prints once, whole. Invalid sequences come out as U+FFFD as HF does. */
typedef struct {
    uint8_t pending[8];
    size_t n_pending;
} q3_utf8_stream;
/* Append a token's bytes; writes the printable complete part into out (cap >= len + 8)
 * and returns its length. */
size_t q3_utf8_stream_push(q3_utf8_stream *s, const char *bytes, size_t len, char *out, size_t cap);
/* Flush what remains at the end of generation (incomplete tail as U+FFFD). */
size_t q3_utf8_stream_flush(q3_utf8_stream *s, char *out, size_t cap);

#endif
