/* q3_format.h - the .q3 model file: constants, on-disk records, reader and writer API.
 *
 * spec.md is the normative description; this header mirrors it. All on-disk
 * integers are little-endian; records are read field by field (never by casting
 * the mmap to a struct), so the code is independent of host padding rules.
 */
#ifndef Q3_FORMAT_H
#define Q3_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "../include/q3.h"

#define Q3_MAGIC "Q3MODEL"            /* 8 bytes on disk, including the NUL */
#define Q3_VERSION 1u
#define Q3_HEADER_SIZE 64u
#define Q3_SECTION_ENTRY_SIZE 48u
#define Q3_TENSOR_ENTRY_SIZE 128u
#define Q3_TENSOR_NAME_MAX 64u        /* bytes in the name field, NUL included */
#define Q3_CONFIG_SIZE 64u
#define Q3_GENERATION_SIZE 64u       /* 36 + Q3_MAX_EOS (7) * 4 */
#define Q3_WEIGHTS_ALIGN 4096u        /* weights section starts on a page */
#define Q3_TENSOR_ALIGN 256u          /* every tensor starts on 256 bytes */

/* Tiled matrix layout R16C32: 16-row panels, 32-column tiles, row-major inside a tile. */
#define Q3_TILE_ROWS 16u
#define Q3_TILE_COLS 32u

enum q3_section_kind {
    Q3_SEC_CONFIG = 1,
    Q3_SEC_GENERATION = 2,
    Q3_SEC_TOKENIZER = 3,
    Q3_SEC_TENSORS = 4, /* the tensor directory */
    Q3_SEC_WEIGHTS = 5,
    Q3_SEC_KIND_MAX = 5
};

enum q3_compression { Q3_COMP_NONE = 0, Q3_COMP_ZLIB = 1 };
enum q3_dtype { Q3_DTYPE_BF16 = 1 };
enum q3_layout { Q3_LAYOUT_ROWMAJOR = 0, Q3_LAYOUT_R16C32 = 1 };

/* Error reporting (q3_err and q3_set_err, include/q3.h): every failing call fills msg
 * with one line that names the file and the offset / section / tensor and what was expected. */

typedef struct {
    uint32_t kind;
    uint32_t compression;
    uint64_t offset;   /* absolute file offset of the stored bytes */
    uint64_t size;     /* stored (possibly compressed) size */
    uint64_t raw_size; /* size after decompression (== size when not compressed) */
    uint32_t alignment;
    uint64_t checksum; /* XXH3-64 of the stored bytes */
} q3_section;

/* The CONFIG and GENERATION sections are q3_config and q3_generation (include/q3.h):
 * the library hands them out as they are. A value the checkpoint does not give is
 * stored as the runtime default documented in spec.md. */

typedef struct {
    char name[Q3_TENSOR_NAME_MAX]; /* NUL-terminated */
    uint32_t dtype;                /* Q3_DTYPE_BF16 */
    uint32_t layout;               /* Q3_LAYOUT_* */
    uint32_t ndim;                 /* 1 or 2 */
    uint32_t tile_rows, tile_cols; /* 16, 32 for R16C32; 0 for row-major */
    uint64_t shape[2];             /* logical shape; shape[1] == 1 when ndim == 1 */
    uint64_t offset;               /* absolute file offset */
    uint64_t size;                 /* stored bytes, tile padding included */
    uint64_t checksum;             /* XXH3-64 of the stored bytes */
    const uint16_t *data;          /* reader only: points into the mmap */
} q3_tensor;

/* ---- tokenizer section ---- */

enum q3_added_flags {
    Q3_ADDED_SPECIAL = 1u << 0,
    Q3_ADDED_LSTRIP = 1u << 1,
    Q3_ADDED_RSTRIP = 1u << 2,
    Q3_ADDED_SINGLE_WORD = 1u << 3,
    Q3_ADDED_NORMALIZED = 1u << 4
};

typedef struct {
    uint32_t id;
    uint32_t len;
    const char *text; /* not NUL-terminated; len bytes (tokenizer.json's string) */
} q3_tok_entry;

typedef struct {
    uint32_t id;
    uint32_t flags; /* Q3_ADDED_* */
    uint32_t len;
    const char *text;
} q3_tok_added;

typedef struct {
    uint32_t left, right, result; /* vocab ids; rank = index in the merges array */
} q3_tok_merge;

typedef struct {
    uint32_t len;
    const char *text;
} q3_str;

/* The decoded tokenizer section. All pointers point into `blob` (owned). */
typedef struct {
    uint8_t *blob;          /* decompressed section bytes, freed by q3_tokdata_free */
    size_t blob_size;
    uint32_t n_vocab;       /* model.vocab entries */
    q3_tok_entry *vocab;
    uint32_t n_merges;
    q3_tok_merge *merges;
    uint32_t n_added;
    q3_tok_added *added;
    q3_str model_json;      /* tokenizer.json "model" minus vocab and merges */
    q3_str normalizer_json; /* "normalizer" verbatim ("null" when absent) */
    q3_str pretok_json;     /* "pre_tokenizer" verbatim */
    q3_str decoder_json;    /* "decoder" verbatim */
    q3_str chat_template;   /* empty when the checkpoint has none */
    q3_str bos_token, eos_token, pad_token, unk_token; /* tokenizer_config strings, may be empty */
    uint32_t add_bos_token;
} q3_tokdata;

/* Serialize td (pointers may point anywhere) into a malloc'd uncompressed blob. */
int q3_tokdata_serialize(const q3_tokdata *td, uint8_t **out, size_t *out_size, q3_err *err);
/* Parse an uncompressed blob; takes ownership of blob on success and failure. */
int q3_tokdata_parse(uint8_t *blob, size_t size, q3_tokdata *td, const char *path, q3_err *err);
void q3_tokdata_free(q3_tokdata *td);

/* ---- reader ---- */

enum q3_open_flags {
    Q3_OPEN_VERIFY_META = 1u << 0,    /* check header, table, config, dir, tokenizer checksums */
    Q3_OPEN_VERIFY_WEIGHTS = 1u << 1, /* also hash every tensor (reads the whole file) */
    Q3_OPEN_NO_SECTION_CHECKS = 1u << 2, /* q3check: structure only, report checksums itself */
    Q3_OPEN_LOAD = 1u << 3               /* read the file into anonymous memory (huge pages), not mmap it */
};

typedef struct {
    char path[256];
    const uint8_t *map;   /* whole file, read-only */
    uint64_t size;
    int owns_map;         /* 1: munmap on close */
    int loaded;           /* 1: map is an anonymous copy (Q3_OPEN_LOAD), not the file's pages */
    uint32_t version;
    uint64_t file_checksum;
    uint64_t header_checksum;
    uint64_t section_table_offset;
    uint32_t n_sections;
    q3_section sections[Q3_SEC_KIND_MAX];
    int have_section[Q3_SEC_KIND_MAX + 1];
    q3_config config;
    q3_generation generation;
    uint32_t n_tensors;
    q3_tensor *tensors;
} q3_file;

/* Map a whole regular file read-only; an empty file gives map NULL, size 0. */
int q3_map_file(const char *path, const uint8_t **map, uint64_t *size, q3_err *err);
/* The same, but the bytes are read into anonymous memory marked for transparent
 * huge pages: a decode thread streaming 1 GB of weights then takes few TLB
 * misses and its prefetcher is not stopped at every 4 KiB page of the page
 * cache (docs/perf.md: +13 % decode on one core). Released by q3_unmap_file. */
int q3_load_file(const char *path, const uint8_t **map, uint64_t *size, q3_err *err);
void q3_unmap_file(const uint8_t *map, uint64_t size);
/* "a FIFO", "a directory", ... for a stat st_mode: what a path that should be a regular file is. */
const char *q3_file_type_name(unsigned mode);
/* A SIGBUS inside a registered mapping (its file shrank while mapped) prints one
 * line naming the file and the offset and exits with status 1 (q3_mapguard.c).
 * q3_map_file and q3_unmap_file register and unregister every mapping. */
void q3_mapguard_add(const uint8_t *map, uint64_t size, const char *path);
void q3_mapguard_remove(const uint8_t *map);
/* mmap and validate a file. Every offset, size, count and shape is checked
 * against the file size before use; the first problem is reported in err. */
int q3_open(q3_file *f, const char *path, unsigned flags, q3_err *err);
/* The same over a caller-owned buffer (tests, fuzzing); buf must outlive f. */
int q3_open_mem(q3_file *f, const void *buf, size_t size, const char *name, unsigned flags, q3_err *err);
void q3_close(q3_file *f);

const q3_tensor *q3_find_tensor(const q3_file *f, const char *name);
const q3_section *q3_get_section(const q3_file *f, uint32_t kind);
const char *q3_section_name(uint32_t kind);
/* Decompress and parse the tokenizer section. */
int q3_read_tokenizer(const q3_file *f, q3_tokdata *td, q3_err *err);

/* Checksums; each returns 0 when it matches, else fills err. */
int q3_verify_header(const q3_file *f, q3_err *err);
int q3_verify_section(const q3_file *f, uint32_t kind, q3_err *err);
int q3_verify_tensor(const q3_file *f, const q3_tensor *t, q3_err *err);
int q3_verify_file(const q3_file *f, q3_err *err);
/* Every value of the tensor is finite (no NaN, no Inf); else err names the tensor,
 * how many are not and where the first one is. */
int q3_verify_finite(const q3_file *f, const q3_tensor *t, q3_err *err);

/* ---- tile layout ---- */

/* Elements (uint16) a tensor of this shape occupies in the layout, padding included. */
uint64_t q3_layout_elems(uint32_t layout, uint64_t rows, uint64_t cols);
/* Index of logical element (r, c) in the stored array. */
static inline uint64_t q3_r16c32_index(uint64_t cols, uint64_t r, uint64_t c)
{
    uint64_t col_tiles = (cols + Q3_TILE_COLS - 1) / Q3_TILE_COLS;
    uint64_t tile = (r / Q3_TILE_ROWS) * col_tiles + c / Q3_TILE_COLS;
    return tile * (Q3_TILE_ROWS * Q3_TILE_COLS) + (r % Q3_TILE_ROWS) * Q3_TILE_COLS + c % Q3_TILE_COLS;
}
/* Row-major rows x cols -> layout (zero padding). dst has q3_layout_elems elements. */
void q3_tile_pack(uint32_t layout, const uint16_t *src, uint64_t rows, uint64_t cols, uint16_t *dst);
/* Layout -> row-major. */
void q3_tile_unpack(uint32_t layout, const uint16_t *src, uint64_t rows, uint64_t cols, uint16_t *dst);
/* Logical (row, col) of stored element `index` (the inverse of q3_r16c32_index). */
void q3_layout_position(uint32_t layout, uint64_t cols, uint64_t index, uint64_t *row, uint64_t *col);
/* Copy one logical row out of a stored tensor (embedding lookup). */
void q3_tensor_row_bf16(const q3_tensor *t, uint64_t row, uint16_t *dst);

/* ---- BF16 ---- */

static inline float q3_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
/* Inf and NaN have every exponent bit set. */
static inline int q3_bf16_is_finite(uint16_t h) { return (h & 0x7f80u) != 0x7f80u; }
/* Round-to-nearest-even; NaN stays NaN (quiet). */
static inline uint16_t q3_f32_to_bf16(float f)
{
    union { uint32_t u; float f; } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}
float q3_f16_to_f32(uint16_t h);

/* ---- writer ---- */

/* One tensor to write; the writer asks fill() for its row-major BF16 data. */
typedef struct {
    char name[Q3_TENSOR_NAME_MAX];
    uint32_t layout;
    uint32_t ndim;
    uint64_t shape[2];
} q3_tensor_spec;

/* Produce rows*cols row-major BF16 values of tensor `index` into dst. */
typedef int (*q3_fill_fn)(void *ctx, uint32_t index, uint16_t *dst, q3_err *err);
/* Progress: bytes of weights written so far out of total. */
typedef void (*q3_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct {
    const q3_config *config;
    const q3_generation *generation;
    const q3_tokdata *tokenizer;
    uint32_t n_tensors;
    const q3_tensor_spec *tensors;
    q3_fill_fn fill;
    void *fill_ctx;
    q3_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} q3_write_job;

/* Write the whole file atomically: a temporary file beside path, fsync, rename.
 * On any error the temporary file is removed and path is untouched. */
int q3_write_file(const char *path, const q3_write_job *job, q3_err *err);
/* Remove the temporary file of a q3_write_file in progress, if any; async-signal-safe,
 * for fatal-signal handlers. */
void q3_write_abandon(void);

/* Encoders for the fixed records (used by the writer and by tests that forge files). */
void q3_encode_config(const q3_config *c, uint8_t out[Q3_CONFIG_SIZE]);
int q3_decode_config(const uint8_t *in, size_t size, q3_config *c, const char *path, q3_err *err);
void q3_encode_generation(const q3_generation *g, uint8_t out[Q3_GENERATION_SIZE]);
int q3_decode_generation(const uint8_t *in, size_t size, q3_generation *g, const char *path, q3_err *err);
void q3_generation_defaults(q3_generation *g);

/* Little-endian helpers. */
static inline uint32_t q3_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t q3_rd64(const uint8_t *p) { return (uint64_t)q3_rd32(p) | (uint64_t)q3_rd32(p + 4) << 32; }
static inline void q3_wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void q3_wr64(uint8_t *p, uint64_t v) { q3_wr32(p, (uint32_t)v); q3_wr32(p + 4, (uint32_t)(v >> 32)); }

#endif
