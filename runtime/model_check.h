/* model_check.h - what a model must pass, beyond the file's structure and checksums,
 * for q3run to load it: the config against the tensor directory, the tokenizer built
 * from its records (every id inside the embedding), the chat template. One definition:
 * q3run and q3check run q3_model_check on a .q3 file, and q3convert runs the tokenizer
 * and template checks on what it is about to write, so that it never writes a file
 * q3run refuses. Every message names path. */
#ifndef Q3_MODEL_CHECK_H
#define Q3_MODEL_CHECK_H

#include "../format/q3_format.h"
#include "tokenizer.h"

/* Build the runtime tokenizer from td and check that every token id is below
 * vocab_size. On success *tk is the tokenizer (free with q3_tokenizer_free), or
 * it is freed at once when tk is NULL. */
int q3_check_tokenizer(const q3_tokdata *td, uint32_t vocab_size, const char *path, q3_tokenizer **tk, q3_err *err);
/* An empty template is allowed (--chat then says there is none); any other must be
 * one that q3_chat_render renders. */
int q3_check_chat_template(const q3_tokdata *td, const char *path, q3_err *err);
/* All of the above for an open file: tensors bind to the config, the tokenizer
 * section parses and builds, the template renders. On success the caller owns *td
 * and *tk; on failure both are left empty. */
int q3_model_check(const q3_file *f, q3_tokdata *td, q3_tokenizer **tk, q3_err *err);

#endif
