/* safetensors_write.h - write a .safetensors file whose header is byte-for-byte what
 * Python's json.dumps(header, separators=(",", ":")) gives (tensors in the given order,
 * then "__metadata__": {"format": "pt"}), space-padded to a multiple of 8. */
#ifndef Q3_SAFETENSORS_WRITE_H
#define Q3_SAFETENSORS_WRITE_H

#include <stdint.h>
#include "../format/q3_format.h"
#include "safetensors.h"

typedef struct {
    const char *name;   /* printable ASCII without '"' or '\\' (no JSON escapes needed) */
    uint32_t dtype;     /* Q3_ST_* */
    uint32_t ndim;      /* 0 to Q3_ST_MAX_DIMS */
    uint64_t shape[Q3_ST_MAX_DIMS];
} q3_st_spec;

/* Write tensor `index`'s bytes (elements * dtype size, little-endian) into dst. */
typedef int (*q3_st_fill_fn)(void *ctx, uint32_t index, uint8_t *dst, q3_err *err);

/* The file is written front to back, one tensor in memory at a time; on
 * failure it is removed. */
int q3_st_write(const char *path, const q3_st_spec *specs, uint32_t n, q3_st_fill_fn fill, void *ctx, q3_err *err);

#endif
