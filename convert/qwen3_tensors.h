/* qwen3_tensors.h - the tensors a Qwen3 dense checkpoint has, from its config (spec.md 7). */
#ifndef Q3_QWEN3_TENSORS_H
#define Q3_QWEN3_TENSORS_H

#include "../format/q3_format.h"

/* Names, shapes and .q3 layouts (matrices R16C32, vectors row-major), in
 * HuggingFace order: embedding, each layer, final norm, lm_head when untied.
 * *specs is malloc'd. */
int q3_qwen3_tensor_specs(const q3_config *c, q3_tensor_spec **specs, uint32_t *n, q3_err *err);

#endif
