/* test_convert_safetensors.c - the safetensors writer (byte-exact header) and the
 * reader's validation: every malformed header or file is refused with a message
 * naming the file and the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/stat.h>
#include "../convert/safetensors.h"
#include "../convert/safetensors_write.h"
#include "convert_test_util.h"

static char *dir; /* where the files of a test go: tu_tmp, or a subdirectory of it */

/* A raw file: u64 length, the header text (unpadded), data_size bytes of a pattern. */
static void write_raw(const char *name, uint64_t declared_len, const char *header, size_t data_size)
{
    char p[4096];
    tu_path(p, sizeof p, dir, name);
    size_t hl = strlen(header);
    uint8_t *buf = calloc(1, 8 + hl + data_size + 1);
    assert_non_null(buf);
    q3_wr64(buf, declared_len);
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_size; i++) buf[8 + hl + i] = (uint8_t)(i * 7 + 1);
    tu_write(p, buf, 8 + hl + data_size);
    free(buf);
}

static void write_hdr(const char *name, const char *header, size_t data_size)
{
    write_raw(name, strlen(header), header, data_size);
}

/* Open dir/name and expect failure with a message containing every needle. */
static void expect_fail(const char *name, const char *n1, const char *n2)
{
    char p[4096];
    q3_st_model m;
    q3_err err = {{0}};
    tu_path(p, sizeof p, dir, name);
    assert_int_equal(q3_st_open_file(&m, p, &err), -1);
    tu_assert_contains(err.msg, name);
    tu_assert_contains(err.msg, n1);
    if (n2) tu_assert_contains(err.msg, n2);
}

static const q3_st_spec specs[] = {
    {"b.weight", Q3_ST_BF16, 2, {2, 3}},
    {"a.f16", Q3_ST_F16, 1, {4}},
    {"c.f32", Q3_ST_F32, 2, {2, 2}},
};

static int fill(void *ctx, uint32_t index, uint8_t *dst, q3_err *err)
{
    (void)ctx;
    (void)err;
    uint64_t n = 1;
    for (uint32_t d = 0; d < specs[index].ndim; d++) n *= specs[index].shape[d];
    for (uint64_t i = 0; i < n * q3_st_dtype_size(specs[index].dtype); i++) dst[i] = (uint8_t)(index * 40 + i);
    return 0;
}

static void test_write_python_header(void **state)
{
    (void)state;
    char p[4096];
    q3_err err = {{0}};
    tu_path(p, sizeof p, dir, "w.safetensors");
    assert_int_equal(q3_st_write(p, specs, 3, fill, NULL, &err), 0);
    /* What json.dumps(header, separators=(",", ":")) gives, space-padded to 8. */
    const char *want = "{\"b.weight\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                       "\"a.f16\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]},"
                       "\"c.f32\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[20,36]},"
                       "\"__metadata__\":{\"format\":\"pt\"}}";
    size_t wl = strlen(want), padded = (wl + 7) / 8 * 8;
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    uint8_t buf[512];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(n, 8 + padded + 36);
    assert_int_equal(q3_rd64(buf), padded);
    assert_memory_equal(buf + 8, want, wl);
    for (size_t i = wl; i < padded; i++) assert_int_equal(buf[8 + i], ' ');

    q3_st_model m;
    assert_int_equal(q3_st_open_file(&m, p, &err), 0);
    assert_int_equal(m.n_tensors, 3);
    assert_string_equal(m.tensors[0].name, "a.f16"); /* sorted by name */
    const q3_st_tensor *t = q3_st_find(&m, "c.f32");
    assert_non_null(t);
    assert_int_equal(t->dtype, Q3_ST_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->n_elems, 4);
    assert_int_equal(t->nbytes, 16);
    assert_int_equal(t->data[0], 80);
    assert_ptr_equal(t->data, m.files[0].map + 8 + padded + 20);
    assert_null(q3_st_find(&m, "nope"));
    q3_st_close(&m);
}

static void test_truncated(void **state)
{
    (void)state;
    write_hdr("trunc.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 15);
    expect_fail("trunc.safetensors", "tensor 'x': data_offsets [0, 16] run past end of data (size 15)", NULL);
    write_raw("tiny.safetensors", 1, "{", 0);
    expect_fail("tiny.safetensors", "too short", NULL);
    tu_write_text(dir, "empty.safetensors", "");
    expect_fail("empty.safetensors", "too short", NULL);
}

static void test_bad_header_length(void **state)
{
    (void)state;
    const char *h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_raw("long.safetensors", strlen(h) + 100, h, 4);
    expect_fail("long.safetensors", "header length", "offset 0");
    write_raw("huge.safetensors", 1ull << 62, h, 4);
    expect_fail("huge.safetensors", "header length", NULL);
    write_raw("short.safetensors", 10, h, 4); /* cuts the JSON */
    expect_fail("short.safetensors", "malformed JSON", NULL);
}

static void test_malformed_json(void **state)
{
    (void)state;
    write_hdr("json.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4);
    expect_fail("json.safetensors", "malformed JSON at byte", NULL);
    write_hdr("arr.safetensors", "[1, 2, 3]           ", 0);
    expect_fail("arr.safetensors", "does not start with '{'", NULL);
    write_hdr("junk.safetensors", "{} x", 0);
    expect_fail("junk.safetensors", "malformed JSON", NULL);
    write_hdr("fields.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    expect_fail("fields.safetensors", "tensor 'x'", "data_offsets");
    write_hdr("neg.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_fail("neg.safetensors", "tensor 'x': shape[0]", NULL);
    write_hdr("frac.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}", 4);
    expect_fail("frac.safetensors", "tensor 'x': data_offsets", NULL);
}

static void test_bad_dtype(void **state)
{
    (void)state;
    write_hdr("dt.safetensors", "{\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    expect_fail("dt.safetensors", "tensor 'ids': dtype 'I64' is not supported", "BF16, F16 or F32");
}

static void test_shape_offset_mismatch(void **state)
{
    (void)state;
    write_hdr("mm.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,10]}}", 12);
    expect_fail("mm.safetensors", "tensor 'w': data_offsets [0, 10] span 10 bytes", "needs 12");
    write_hdr("rev.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[4,2]}}", 12);
    expect_fail("rev.safetensors", "tensor 'w'", "begin <= end");
}

static void test_overlap(void **state)
{
    (void)state;
    write_hdr("ov.safetensors",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
              "\"__metadata__\":{\"format\":\"pt\"}}", 12);
    expect_fail("ov.safetensors", "tensors 'a' [0, 8] and 'b' [4, 12] overlap", NULL);
    write_hdr("dup.safetensors",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_fail("dup.safetensors", "header: key \"a\" appears twice", NULL);
}

/* Sharded checkpoints: every shard is validated and must agree with the index. */
static void test_sharded(void **state)
{
    (void)state;
    char sub[4096];
    tu_path(sub, sizeof sub, dir, "sharded");
    assert_int_equal(mkdir(sub, 0755), 0);
    char *saved = dir;
    dir = sub;
    write_hdr("s1.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    write_hdr("s2.safetensors", "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    q3_st_model m;
    q3_err err = {{0}};

    tu_write_text(sub, "model.safetensors.index.json",
                  "{\"metadata\":{},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    assert_int_equal(q3_st_open(&m, sub, &err), 0);
    assert_int_equal(m.n_files, 2);
    assert_int_equal(m.n_tensors, 2);
    assert_int_equal(q3_st_find(&m, "b")->dtype, Q3_ST_BF16);
    q3_st_close(&m);

    tu_write_text(sub, "model.safetensors.index.json",
                  "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}");
    assert_int_equal(q3_st_open(&m, sub, &err), -1);
    tu_assert_contains(err.msg, "tensor 'b' is listed in weight_map under s1.safetensors but that shard does not hold it");

    tu_write_text(sub, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"../x\"}}");
    assert_int_equal(q3_st_open(&m, sub, &err), -1);
    tu_assert_contains(err.msg, "weight_map['b']");

    tu_write_text(sub, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s3.safetensors\"}}");
    assert_int_equal(q3_st_open(&m, sub, &err), -1);
    tu_assert_contains(err.msg, "s3.safetensors: cannot open");

    write_hdr("s2.safetensors", "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                                "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", 8);
    tu_write_text(sub, "model.safetensors.index.json",
                  "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    assert_int_equal(q3_st_open(&m, sub, &err), -1);
    tu_assert_contains(err.msg, "s2.safetensors: tensor 'c' is not listed in");

    write_hdr("s2.safetensors", "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                                "\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", 8);
    assert_int_equal(q3_st_open(&m, sub, &err), -1);
    tu_assert_contains(err.msg, "tensor 'a' is defined twice (also in");

    /* A bad shard is named by its file. */
    write_hdr("s2.safetensors", "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,40]}}", 4);
    assert_int_equal(q3_st_open(&m, sub, &err), -1);
    tu_assert_contains(err.msg, "s2.safetensors: tensor 'b': data_offsets [0, 40] run past end of data (size 4)");

    tu_write_text(sub, "model.safetensors.index.json", "{\"weight_map\": [1]}");
    assert_int_equal(q3_st_open(&m, sub, &err), -1);
    tu_assert_contains(err.msg, "\"weight_map\" is missing or not an object");
    dir = saved;

    char empty[4096];
    tu_path(empty, sizeof empty, dir, "empty");
    assert_int_equal(mkdir(empty, 0755), 0);
    assert_int_equal(q3_st_open(&m, empty, &err), -1);
    tu_assert_contains(err.msg, "neither model.safetensors nor model.safetensors.index.json");
}

static int group_setup(void **state)
{
    tu_setup(state);
    dir = tu_tmp;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_python_header),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bad_header_length),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_bad_dtype),
        cmocka_unit_test(test_shape_offset_mismatch),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_sharded),
    };
    return cmocka_run_group_tests(tests, group_setup, tu_teardown);
}
