/* synth.h - deterministic synthetic Qwen3 checkpoints, byte-identical to
 * tests/fixtures/synth_qwen3.py (its docstring holds the recipe). */
#ifndef Q3_SYNTH_H
#define Q3_SYNTH_H

#include "../format/q3_format.h"

/* Read config_path, write out_dir/model.safetensors (BF16) and out_dir/config.json
 * (a copy of config_path). out_dir is created when missing. */
int q3_synth_checkpoint(const char *config_path, const char *out_dir, q3_err *err);

#endif
