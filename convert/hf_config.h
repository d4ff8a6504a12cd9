/* hf_config.h - a HuggingFace Qwen3 config.json and generation_config.json -> q3 records.
 * Only Qwen3 dense models are accepted: no RoPE scaling, no sliding window, no attention bias. */
#ifndef Q3_HF_CONFIG_H
#define Q3_HF_CONFIG_H

#include <cjson/cJSON.h>
#include "../format/q3_format.h"

typedef struct {
    q3_config config;
    uint32_t n_eos;               /* every id of config.json's eos_token_id (int or list) */
    int32_t eos_ids[Q3_MAX_EOS];
} q3_hf_config;

/* root is the parsed config.json; name is used in messages. */
int q3_hf_config_parse(const cJSON *root, const char *name, q3_hf_config *hc, q3_err *err);
/* Read HF_DIR/config.json. */
int q3_hf_config_load(const char *hf_dir, q3_hf_config *hc, q3_err *err);

/* root may be NULL (no generation_config.json): spec.md 5 defaults, ids from hc. */
int q3_hf_generation_parse(const cJSON *root, const char *name, const q3_hf_config *hc, q3_generation *g,
                           q3_err *err);
/* Read HF_DIR/generation_config.json when it exists. */
int q3_hf_generation_load(const char *hf_dir, const q3_hf_config *hc, q3_generation *g, q3_err *err);

#endif
