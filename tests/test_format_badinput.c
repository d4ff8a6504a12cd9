/* test_format_badinput.c - forged .q3 files whose checksums are all correct, so
 * only the reader's structural checks stand between them and the runtime: sizes,
 * offsets and counts that overflow 64 bits or point outside the file. Each must be
 * refused with one line that names the file; the base is fuzz/corpus/q3/tiny-tied. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zlib.h>
#include "../format/q3_format.h"

#define BASE "fuzz/corpus/q3/tiny-tied"
#define NAME "forged.q3"

static uint8_t *base;
static size_t base_size;

static int setup(void **state)
{
    (void)state;
    FILE *f = fopen(BASE, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (run from the repo root)\n", BASE);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    base_size = (size_t)ftell(f);
    rewind(f);
    base = malloc(base_size);
    if (!base || fread(base, 1, base_size, f) != base_size) return -1;
    fclose(f);
    return 0;
}
static int teardown(void **state)
{
    (void)state;
    free(base);
    return 0;
}

/* A writable copy of the base file. */
typedef struct {
    uint8_t *p;
    size_t size;
} forged;

static forged copy_base(void)
{
    forged f = {malloc(base_size), base_size};
    assert_non_null(f.p);
    memcpy(f.p, base, base_size);
    return f;
}

/* The table entry of a section kind, or NULL when the (forged) table does not have it. */
static uint8_t *find_entry(forged *f, uint32_t kind)
{
    uint64_t table = q3_rd64(f->p + 24);
    if (table > f->size || f->size - table < 5 * 48) return NULL;
    for (uint32_t i = 0; i < 5; i++) {
        uint8_t *e = f->p + table + 48 * i;
        if (q3_rd32(e) == kind) return e;
    }
    return NULL;
}
static uint8_t *entry(forged *f, uint32_t kind)
{
    uint8_t *e = find_entry(f, kind);
    if (!e) fail_msg("section %u not in the table", kind);
    return e;
}

/* Recompute every checksum, as a careful forger would: only structure checks are left. */
static void reseal(forged *f)
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

/* The file must be refused, by every flag combination, in one line naming it and containing want. */
static void expect_refused(forged *f, const char *want)
{
    reseal(f);
    for (unsigned flags = 0; flags < 8; flags++) {
        q3_file qf;
        q3_err err = {{0}};
        int rc = q3_open_mem(&qf, f->p, f->size, NAME, flags, &err);
        if (rc == 0) {
            q3_close(&qf);
            fail_msg("flags %u: forged file accepted (expected: %s)", flags, want);
        }
        assert_non_null(strstr(err.msg, NAME));
        assert_null(strchr(err.msg, '\n'));
        if (!strstr(err.msg, want)) fail_msg("flags %u: message \"%s\" lacks \"%s\"", flags, err.msg, want);
    }
    free(f->p);
}

static uint8_t *tensor_entry(forged *f, const char *name)
{
    uint8_t *dir = f->p + q3_rd64(entry(f, Q3_SEC_TENSORS) + 8);
    for (uint32_t i = 0; i < q3_rd32(dir); i++)
        if (strcmp((const char *)dir + 8 + 128 * i, name) == 0) return dir + 8 + 128 * i;
    fail_msg("no tensor %s", name);
    return NULL;
}

static void test_base_is_valid(void **state)
{
    (void)state;
    forged f = copy_base();
    reseal(&f);
    assert_memory_equal(f.p, base, base_size); /* reseal of an intact file changes nothing */
    q3_file qf;
    q3_err err = {{0}};
    assert_int_equal(q3_open_mem(&qf, f.p, f.size, NAME, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS, &err), 0);
    q3_close(&qf);
    free(f.p);
}

static void test_header(void **state)
{
    (void)state;
    forged f = copy_base();
    memcpy(f.p, "Q3MODEM", 8);
    expect_refused(&f, "bad magic");
    f = copy_base();
    q3_wr32(f.p + 8, 2);
    expect_refused(&f, "version 2");
    f = copy_base();
    q3_wr32(f.p + 12, 0xffffffffu);
    expect_refused(&f, "header_size");
    f = copy_base();
    q3_wr64(f.p + 16, UINT64_MAX);
    expect_refused(&f, "truncated or extended");
    f = copy_base();
    q3_wr64(f.p + 16, (uint64_t)base_size - 1);
    expect_refused(&f, "truncated or extended");
}

static void test_section_table(void **state)
{
    (void)state;
    forged f = copy_base();
    q3_wr64(f.p + 24, UINT64_MAX - 7); /* offset + table size wraps to a small number */
    expect_refused(&f, "section table");
    f = copy_base();
    q3_wr64(f.p + 24, (uint64_t)base_size - 8);
    expect_refused(&f, "section table");
    f = copy_base();
    q3_wr32(f.p + 32, 0xffffffffu);
    expect_refused(&f, "section_count");
    f = copy_base();
    q3_wr32(f.p + 32, 0);
    expect_refused(&f, "section_count");
}

static void test_section_entries(void **state)
{
    (void)state;
    forged f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_WEIGHTS) + 16, UINT64_MAX);
    expect_refused(&f, "outside the file");
    f = copy_base();
    uint8_t *e = entry(&f, Q3_SEC_WEIGHTS);
    q3_wr64(e + 8, UINT64_MAX - 4095); /* aligned, and offset + size wraps */
    q3_wr64(e + 16, 8192);
    expect_refused(&f, "outside the file");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 8, 0); /* over the header */
    expect_refused(&f, "outside the file");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_GENERATION) + 8, q3_rd64(entry(&f, Q3_SEC_CONFIG) + 8));
    expect_refused(&f, "overlap");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_CONFIG) + 32, 3);
    expect_refused(&f, "alignment");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_CONFIG) + 32, 0);
    expect_refused(&f, "alignment");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_WEIGHTS) + 32, 1u << 31);
    expect_refused(&f, "alignment");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_TENSORS), Q3_SEC_CONFIG);
    expect_refused(&f, "repeated");
    f = copy_base();
    q3_wr32(entry(&f, Q3_SEC_WEIGHTS) + 4, Q3_COMP_ZLIB);
    expect_refused(&f, "compression");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 24, 1ull << 63);
    expect_refused(&f, "raw_size");
    f = copy_base();
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 16, 32);
    q3_wr64(entry(&f, Q3_SEC_CONFIG) + 24, 32);
    expect_refused(&f, "config section is 32 bytes");
}

static void test_tensor_directory(void **state)
{
    (void)state;
    const char *emb = "model.embed_tokens.weight", *norm = "model.norm.weight";
    forged f = copy_base();
    uint8_t *dir = f.p + q3_rd64(entry(&f, Q3_SEC_TENSORS) + 8);
    q3_wr32(dir, 0xffffffffu);
    expect_refused(&f, "entries need");
    /* rows * cols = 2^64 wraps to 0, as does the size the layout implies. */
    f = copy_base();
    uint8_t *t = tensor_entry(&f, emb);
    q3_wr64(t + 88, 1ull << 32);
    q3_wr64(t + 96, 1ull << 32);
    q3_wr64(t + 112, 0);
    expect_refused(&f, "shape");
    f = copy_base();
    t = tensor_entry(&f, norm);
    q3_wr32(t + 68, Q3_LAYOUT_ROWMAJOR);
    q3_wr32(t + 72, 2);
    q3_wr64(t + 88, 1ull << 32);
    q3_wr64(t + 96, 1ull << 32);
    q3_wr64(t + 112, 0);
    expect_refused(&f, "shape");
    f = copy_base();
    t = tensor_entry(&f, emb);
    q3_wr64(t + 88, 1ull << 21);
    q3_wr64(t + 96, 1ull << 21); /* 2^42 elements */
    expect_refused(&f, "too large");
    f = copy_base();
    t = tensor_entry(&f, emb);
    q3_wr64(t + 104, UINT64_MAX - 255); /* aligned; offset + size wraps */
    expect_refused(&f, "inside the weights section");
    f = copy_base();
    t = tensor_entry(&f, emb);
    q3_wr64(t + 112, UINT64_MAX);
    expect_refused(&f, "size");
    f = copy_base();
    t = tensor_entry(&f, norm);
    q3_wr64(t + 104, q3_rd64(tensor_entry(&f, emb) + 104));
    expect_refused(&f, "overlap");
    f = copy_base();
    t = tensor_entry(&f, emb);
    memset(t, 'x', 64);
    expect_refused(&f, "not NUL-terminated");
    f = copy_base();
    t = tensor_entry(&f, norm);
    memcpy(t, emb, strlen(emb) + 1);
    expect_refused(&f, "twice");
    f = copy_base();
    q3_wr32(tensor_entry(&f, emb) + 64, 2);
    expect_refused(&f, "dtype 2");
}

/* The tokenizer section: inflate it, damage a record, deflate it back. */
static void tokenizer_forge(forged *f, void (*edit)(uint8_t *blob, size_t *size), const char *want)
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
    q3_file qf;
    q3_err err = {{0}};
    assert_int_equal(q3_open_mem(&qf, f->p, f->size, NAME, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS, &err), 0);
    q3_tokdata td;
    int rc = q3_read_tokenizer(&qf, &td, &err);
    if (rc == 0) {
        q3_tokdata_free(&td);
        fail_msg("forged tokenizer accepted (expected: %s)", want);
    }
    q3_close(&qf);
    assert_non_null(strstr(err.msg, NAME));
    assert_null(strchr(err.msg, '\n'));
    if (!strstr(err.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
    free(f->p);
}
static void huge_vocab(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 8, 0xffffffffu); }
static void huge_merges(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 12, 0x40000000u); }
static void huge_string(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 24 + 4, 0xffffffffu); } /* vocab[0] length */
static void big_id(uint8_t *b, size_t *n) { (void)n; q3_wr32(b + 24, 0x80000000u); }              /* vocab[0] id */
static void bad_magic(uint8_t *b, size_t *n) { (void)n; b[0] ^= 1; }
static void trailing(uint8_t *b, size_t *n) { b[(*n)++] = 0; }
static void cut(uint8_t *b, size_t *n) { (void)b; *n -= 1; }

static void test_tokenizer_records(void **state)
{
    (void)state;
    forged f = copy_base();
    tokenizer_forge(&f, huge_vocab, "exceed");
    f = copy_base();
    tokenizer_forge(&f, huge_merges, "exceed");
    f = copy_base();
    tokenizer_forge(&f, huge_string, "runs past its end");
    f = copy_base();
    tokenizer_forge(&f, big_id, "below 2^31");
    f = copy_base();
    tokenizer_forge(&f, bad_magic, "magic");
    f = copy_base();
    tokenizer_forge(&f, trailing, "left over");
    f = copy_base();
    tokenizer_forge(&f, cut, "runs past its end");
}

static void test_tokenizer_inflate(void **state)
{
    (void)state;
    /* raw_size larger than the stream inflates to: refused before the records are read. */
    forged f = copy_base();
    uint8_t *e = entry(&f, Q3_SEC_TOKENIZER);
    q3_wr64(e + 24, q3_rd64(e + 24) + 1);
    reseal(&f);
    q3_file qf;
    q3_err err = {{0}};
    assert_int_equal(q3_open_mem(&qf, f.p, f.size, NAME, Q3_OPEN_VERIFY_META, &err), 0);
    q3_tokdata td;
    assert_int_not_equal(q3_read_tokenizer(&qf, &td, &err), 0);
    assert_non_null(strstr(err.msg, "zlib"));
    /* A raw_size of 2^40: refused without trying to allocate it. */
    q3_close(&qf);
    e = entry(&f, Q3_SEC_TOKENIZER);
    q3_wr64(e + 24, 1ull << 40);
    reseal(&f);
    assert_int_equal(q3_open_mem(&qf, f.p, f.size, NAME, Q3_OPEN_VERIFY_META, &err), 0);
    assert_int_not_equal(q3_read_tokenizer(&qf, &td, &err), 0);
    assert_non_null(strstr(err.msg, "limit"));
    q3_close(&qf);
    free(f.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_is_valid),     cmocka_unit_test(test_header),
        cmocka_unit_test(test_section_table),     cmocka_unit_test(test_section_entries),
        cmocka_unit_test(test_tensor_directory),  cmocka_unit_test(test_tokenizer_records),
        cmocka_unit_test(test_tokenizer_inflate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
