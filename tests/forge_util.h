/* forge_util.h - forged .q3 files for the tests: edit a copy of a valid file, then
 * recompute every checksum as a careful forger would, so that only the checks under
 * test stand between the forgery and the runtime (header-only; include after cmocka.h). */
#ifndef Q3_FORGE_UTIL_H
#define Q3_FORGE_UTIL_H

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zlib.h>
#include "../format/q3_format.h"

typedef struct {
    uint8_t *p;
    size_t size;
} forged;

static inline forged forge_copy(const uint8_t *p, size_t size)
{
    forged f = {malloc(size), size};
    assert_non_null(f.p);
    memcpy(f.p, p, size);
    return f;
}

/* The table entry of a section kind, or NULL when the (forged) table does not have it. */
static inline uint8_t *find_entry(forged *f, uint32_t kind)
{
    uint64_t table = q3_rd64(f->p + 24);
    if (table > f->size || f->size - table < 5 * 48) return NULL;
    for (uint32_t i = 0; i < 5; i++) {
        uint8_t *e = f->p + table + 48 * i;
        if (q3_rd32(e) == kind) return e;
    }
    return NULL;
}
static inline uint8_t *entry(forged *f, uint32_t kind)
{
    uint8_t *e = find_entry(f, kind);
    if (!e) fail_msg("section %u not in the table", kind);
    return e;
}

/* Recompute every checksum, as a careful forger would: only structure checks are left. */
static inline void reseal(forged *f)
{
    uint8_t *dirent = find_entry(f, Q3_SEC_TENSORS);
    if (dirent && q3_rd64(dirent + 8) <= f->size - 8) {
        uint8_t *dir = f->p + q3_rd64(dirent + 8);
        uint32_t n = q3_rd32(dir);
        for (uint32_t i = 0; i < n && (size_t)(dir - f->p) + 8 + 128 * (uint64_t)(i + 1) <= f->size; i++) {
            uint8_t *t = dir + 8 + 128 * i;
            uint64_t off = q3_rd64(t + 104), size = q3_rd64(t + 112);
            if (off <= f->size && size <= f->size - off) q3_wr64(t + 120, XXH3_64bits(f->p + off, size));
        }
    }
    uint64_t table = q3_rd64(f->p + 24);
    for (uint32_t i = 0; i < 5 && table <= f->size && f->size - table >= 48 * (i + 1); i++) {
        uint8_t *e = f->p + table + 48 * i;
        uint64_t off = q3_rd64(e + 8), size = q3_rd64(e + 16);
        if (off <= f->size && size <= f->size - off) q3_wr64(e + 40, XXH3_64bits(f->p + off, size));
    }
    if (q3_rd64(f->p + 16) == f->size) q3_wr64(f->p + 40, XXH3_64bits(f->p + 64, f->size - 64));
    q3_wr64(f->p + 56, XXH3_64bits(f->p, 56));
}

static inline uint8_t *tensor_entry(forged *f, const char *name)
{
    uint8_t *dir = f->p + q3_rd64(entry(f, Q3_SEC_TENSORS) + 8);
    for (uint32_t i = 0; i < q3_rd32(dir); i++)
        if (strcmp((const char *)dir + 8 + 128 * i, name) == 0) return dir + 8 + 128 * i;
    fail_msg("no tensor %s", name);
    return NULL;
}

/* Inflate the tokenizer section, let edit change the records, deflate and reseal. */
static inline void forge_tokenizer(forged *f, void (*edit)(uint8_t *blob, size_t *size))
{
    uint8_t *e = entry(f, Q3_SEC_TOKENIZER);
    uint64_t off = q3_rd64(e + 8), size = q3_rd64(e + 16), raw = q3_rd64(e + 24);
    uLongf n = (uLongf)raw + 64;
    uint8_t *blob = malloc(n);
    assert_non_null(blob);
    uLong in = (uLong)size;
    assert_int_equal(uncompress2(blob, &n, f->p + off, &in), Z_OK);
    size_t bsize = n;
    edit(blob, &bsize);
    uLongf zn = compressBound(bsize);
    uint8_t *z = malloc(zn);
    assert_non_null(z);
    assert_int_equal(compress2(z, &zn, blob, bsize, 9), Z_OK);
    /* The tokenizer is followed by padding up to the weights: room to grow a little. */
    assert_true(zn <= size + 1024 && off + zn <= q3_rd64(entry(f, Q3_SEC_WEIGHTS) + 8));
    memcpy(f->p + off, z, zn);
    q3_wr64(e + 16, zn);
    q3_wr64(e + 24, bsize);
    free(z);
    free(blob);
    reseal(f);
}

#endif
