/* convert.h - HuggingFace Qwen3 checkpoint directory -> .q3 file. */
#ifndef Q3_CONVERT_H
#define Q3_CONVERT_H

#include "../format/q3_format.h"

typedef struct {
    uint32_t n_tensors;
    uint64_t weight_bytes; /* stored BF16 bytes, tile padding included */
} q3_convert_stats;

/* Read config.json, generation_config.json (optional), the safetensors
 * (single or sharded) and the tokenizer files of hf_dir; check that the
 * checkpoint holds exactly the tensors the config implies; write out_path
 * atomically. Nothing is created at out_path unless everything succeeds.
 * progress may be NULL; stats may be NULL. */
int q3_convert(const char *hf_dir, const char *out_path, q3_progress_fn progress, void *progress_ctx,
               q3_convert_stats *stats, q3_err *err);

#endif
