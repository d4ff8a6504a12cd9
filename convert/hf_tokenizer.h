/* hf_tokenizer.h - read a HuggingFace tokenizer (tokenizer.json, tokenizer_config.json,
 * chat_template.jinja) into the records of the .q3 TOKENIZER section (spec.md 6). */
#ifndef Q3_HF_TOKENIZER_H
#define Q3_HF_TOKENIZER_H

#include "../format/q3_format.h"

/* td owns its memory afterwards (free with q3_tokdata_free). */
int q3_hf_tokenizer_load(const char *hf_dir, q3_tokdata *td, q3_err *err);

#endif
