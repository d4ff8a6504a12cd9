/* convert.h - HuggingFace Qwen3 checkpoint directory -> .q3 file. */
#ifndef Q3_CONVERT_H
#define Q3_CONVERT_H

#include "../format/q3_format.h"

typedef struct {
    uint32_t n_tensors;
    uint64_t weight_bytes; /* stored BF16 bytes, tile padding included */
} q3_convert_stats;

typedef struct {
    q3_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    int allow_nonfinite; /* write NaN / Inf weights (and values that round to Inf) instead of refusing them */
} q3_convert_opts;

/* Refuse an output path that is not a regular file or is one of the inputs
 * (output_path.h); read config.json, generation_config.json (optional), the
 * safetensors (single or sharded) and the tokenizer files of hf_dir; check that the
 * checkpoint holds exactly the tensors the config implies and that q3run would
 * accept the tokenizer and chat template (runtime/model_check.h); write out_path
 * atomically, refusing non-finite weights unless opts allows them. Nothing is
 * created at out_path unless everything succeeds. opts and stats may be NULL. */
int q3_convert(const char *hf_dir, const char *out_path, const q3_convert_opts *opts, q3_convert_stats *stats,
               q3_err *err);

#endif
