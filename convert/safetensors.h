/* safetensors.h - read HuggingFace .safetensors checkpoints (one file or sharded) through mmap.
 * Every header field is validated before any data is touched. */
#ifndef Q3_SAFETENSORS_H
#define Q3_SAFETENSORS_H

#include <stdint.h>
#include "../format/q3_format.h"

enum q3_st_dtype { Q3_ST_BF16 = 1, Q3_ST_F16 = 2, Q3_ST_F32 = 3 };
#define Q3_ST_MAX_DIMS 8u
#define Q3_ST_MAX_HEADER (100u << 20) /* the limit the reference implementation uses */

typedef struct {
    char *name;             /* owned */
    uint32_t dtype;         /* Q3_ST_* */
    uint32_t ndim;
    uint64_t shape[Q3_ST_MAX_DIMS];
    uint64_t n_elems;
    const uint8_t *data;    /* into the file's mapping, not aligned */
    uint64_t nbytes;
    uint32_t file;          /* index into q3_st_model.files */
} q3_st_tensor;

typedef struct {
    char *path;             /* owned */
    const uint8_t *map;
    uint64_t size;
} q3_st_file;

typedef struct {
    uint32_t n_files;
    q3_st_file *files;
    uint32_t n_tensors;
    q3_st_tensor *tensors;  /* sorted by name once q3_st_open returns */
} q3_st_model;

/* Open HF_DIR/model.safetensors, or every shard named by HF_DIR/model.safetensors.index.json. */
int q3_st_open(q3_st_model *m, const char *hf_dir, q3_err *err);
/* Open exactly one .safetensors file. */
int q3_st_open_file(q3_st_model *m, const char *path, q3_err *err);
void q3_st_close(q3_st_model *m);

const q3_st_tensor *q3_st_find(const q3_st_model *m, const char *name);
const char *q3_st_dtype_name(uint32_t dtype);
uint32_t q3_st_dtype_size(uint32_t dtype);
/* The file's pages of this tensor are not needed again (keeps memory flat while streaming). */
void q3_st_release(const q3_st_tensor *t);

#endif
