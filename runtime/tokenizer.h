/* tokenizer.h - Qwen3 byte-level BPE, identical to HuggingFace tokenizers,
 * built from the TOKENIZER section of a .q3 file (internal: building it). */
#ifndef Q3_TOKENIZER_H
#define Q3_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "../format/q3_format.h"

typedef struct q3_tokenizer q3_tokenizer;

/* Build from decoded section data; copies what it keeps (td may be freed after). */
q3_tokenizer *q3_tokenizer_create(const q3_tokdata *td, q3_err *err);
void q3_tokenizer_free(q3_tokenizer *tk);

/* Encoding, decoding, token lookups and the streaming UTF-8 decoder are public:
 * include/q3.h declares them. */

#endif
