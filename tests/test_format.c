/* test_format.c - the .q3 reader and writer on a small forged model: round trip,
 * tile layout, tokenizer records, and every kind of damage the reader must catch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../format/q3_format.h"

#define N_TENSORS 3
static const q3_tensor_spec specs[N_TENSORS] = {
    {"model.embed_tokens.weight", Q3_LAYOUT_R16C32, 2, {37, 45}},
    {"model.norm.weight", Q3_LAYOUT_ROWMAJOR, 1, {45, 1}},
    {"w.big", Q3_LAYOUT_R16C32, 2, {64, 96}},
};

static uint16_t value_at(uint32_t t, uint64_t i) { return (uint16_t)(0x3f00u + (t * 7919u + i * 31u) % 251u); }

static int fill(void *ctx, uint32_t index, uint16_t *dst, q3_err *err)
{
    (void)ctx;
    (void)err;
    uint64_t n = specs[index].shape[0] * specs[index].shape[1];
    for (uint64_t i = 0; i < n; i++) dst[i] = value_at(index, i);
    return 0;
}

static char dir_path[] = "/tmp/q3_test_format_XXXXXX";
static char model_path[512];

static void make_tokdata(q3_tokdata *td, q3_tok_entry *vocab, q3_tok_merge *merge, q3_tok_added *added)
{
    memset(td, 0, sizeof *td);
    vocab[0] = (q3_tok_entry){0, 1, "a"};
    vocab[1] = (q3_tok_entry){1, 1, "b"};
    vocab[2] = (q3_tok_entry){2, 2, "ab"};
    *merge = (q3_tok_merge){0, 1, 2};
    *added = (q3_tok_added){3, Q3_ADDED_SPECIAL, 5, "<|x|>"};
    td->n_vocab = 3;
    td->vocab = vocab;
    td->n_merges = 1;
    td->merges = merge;
    td->n_added = 1;
    td->added = added;
    td->model_json = (q3_str){17, "{\"type\":\"BPE\"}xx"};
    td->model_json.len = 14;
    td->pretok_json = (q3_str){4, "null"};
    td->chat_template = (q3_str){3, "tpl"};
    td->eos_token = (q3_str){5, "<|x|>"};
}

static int write_model(const char *path, q3_err *err)
{
    q3_config cfg = {.vocab_size = 37, .hidden_size = 45, .intermediate_size = 64, .num_layers = 1,
                     .num_heads = 3, .num_kv_heads = 1, .head_dim = 16, .max_position_embeddings = 128,
                     .tie_word_embeddings = 1, .bos_token_id = -1, .eos_token_id = 3, .pad_token_id = -1,
                     .rope_theta = 10000.0, .rms_norm_eps = 1e-6};
    q3_generation gen;
    q3_generation_defaults(&gen);
    gen.n_eos = 1;
    gen.eos_token_ids[0] = 3;
    q3_tokdata td;
    q3_tok_entry vocab[3];
    q3_tok_merge merge;
    q3_tok_added added;
    make_tokdata(&td, vocab, &merge, &added);
    q3_write_job job = {&cfg, &gen, &td, N_TENSORS, specs, fill, NULL, NULL, NULL};
    return q3_write_file(path, &job, err);
}

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*size);
    assert_int_equal(fread(p, 1, *size, f), *size);
    fclose(f);
    return p;
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir_path)) return -1;
    snprintf(model_path, sizeof model_path, "%s/m.q3", dir_path);
    q3_err err;
    if (write_model(model_path, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(model_path);
    rmdir(dir_path);
    return 0;
}

static void test_round_trip(void **state)
{
    (void)state;
    q3_file f;
    q3_err err;
    assert_int_equal(q3_open(&f, model_path, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS, &err), 0);
    assert_int_equal(f.config.hidden_size, 45);
    assert_int_equal(f.generation.eos_token_ids[0], 3);
    assert_int_equal(f.n_tensors, N_TENSORS);
    for (uint32_t i = 0; i < N_TENSORS; i++) {
        const q3_tensor *t = q3_find_tensor(&f, specs[i].name);
        assert_non_null(t);
        assert_int_equal(t->offset % Q3_TENSOR_ALIGN, 0);
        uint64_t n = t->shape[0] * t->shape[1];
        uint16_t *flat = malloc(n * 2);
        q3_tile_unpack(t->layout, t->data, t->shape[0], t->shape[1], flat);
        for (uint64_t k = 0; k < n; k++) assert_int_equal(flat[k], value_at(i, k));
        /* One row read straight from the tiles equals the row-major row. */
        uint16_t row[128];
        q3_tensor_row_bf16(t, t->shape[0] - 1, row);
        assert_memory_equal(row, flat + (t->shape[0] - 1) * t->shape[1], t->shape[1] * 2);
        free(flat);
    }
    q3_tokdata td;
    assert_int_equal(q3_read_tokenizer(&f, &td, &err), 0);
    assert_int_equal(td.n_vocab, 3);
    assert_int_equal(td.merges[0].result, 2);
    assert_int_equal(td.added[0].flags, Q3_ADDED_SPECIAL);
    assert_memory_equal(td.added[0].text, "<|x|>", 5);
    assert_int_equal(td.model_json.len, 14);
    assert_memory_equal(td.chat_template.text, "tpl", 3);
    q3_tokdata_free(&td);
    q3_close(&f);
}

static void test_tile_padding_is_zero(void **state)
{
    (void)state;
    uint16_t src[3 * 5], tiled[16 * 32];
    for (int i = 0; i < 15; i++) src[i] = (uint16_t)(i + 1);
    assert_int_equal(q3_layout_elems(Q3_LAYOUT_R16C32, 3, 5), 16 * 32);
    q3_tile_pack(Q3_LAYOUT_R16C32, src, 3, 5, tiled);
    assert_int_equal(tiled[q3_r16c32_index(5, 2, 4)], 15);
    assert_int_equal(tiled[5], 0);
    assert_int_equal(tiled[3 * 32], 0);
    /* Second panel, second tile of a 20 x 40 matrix. */
    assert_int_equal(q3_r16c32_index(40, 17, 33), ((1 * 2 + 1) * 512) + 1 * 32 + 1);
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    assert_int_equal(q3_f32_to_bf16(1.0f), 0x3f80);
    union { uint32_t u; float f; } v;
    v.u = 0x3f808000u; /* exactly half way, even below: stays */
    assert_int_equal(q3_f32_to_bf16(v.f), 0x3f80);
    v.u = 0x3f818000u; /* half way, odd below: rounds up */
    assert_int_equal(q3_f32_to_bf16(v.f), 0x3f82);
    v.u = 0x3f808001u;
    assert_int_equal(q3_f32_to_bf16(v.f), 0x3f81);
    v.u = 0x7fc00001u;
    assert_true((q3_f32_to_bf16(v.f) & 0x7fffu) > 0x7f80u);
    assert_true(q3_f16_to_f32(0x3c00) == 1.0f);
    assert_true(q3_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    assert_true(q3_f16_to_f32(0xc000) == -2.0f);
}

/* Flip one bit inside each section: opening with full verification must fail and
 * the message must name that section (or the header / a tensor). */
static void test_bit_flips_are_named(void **state)
{
    (void)state;
    size_t size;
    uint8_t *orig = slurp(model_path, &size);
    q3_file f;
    q3_err err;
    assert_int_equal(q3_open_mem(&f, orig, size, "m.q3", Q3_OPEN_NO_SECTION_CHECKS, &err), 0);
    q3_section secs[Q3_SEC_KIND_MAX];
    memcpy(secs, f.sections, sizeof secs);
    q3_close(&f);
    uint8_t *copy = malloc(size);
    for (uint32_t k = 1; k <= Q3_SEC_KIND_MAX; k++) {
        memcpy(copy, orig, size);
        const q3_section *s = &secs[k - 1];
        copy[s->offset + s->size / 2] ^= 0x10;
        q3_file g;
        if (q3_open_mem(&g, copy, size, "m.q3", Q3_OPEN_NO_SECTION_CHECKS, &err) == 0) {
            int bad = q3_verify_section(&g, k, &err);
            q3_close(&g);
            assert_int_equal(bad, -1);
        }
        assert_non_null(strstr(err.msg, q3_section_name(k)));
    }
    memcpy(copy, orig, size);
    copy[20] ^= 1; /* inside file_size: structural refusal */
    assert_int_equal(q3_open_mem(&f, copy, size, "m.q3", Q3_OPEN_VERIFY_META, &err), -1);
    memcpy(copy, orig, size);
    copy[36] ^= 1; /* flags: only the header checksum notices */
    assert_int_equal(q3_open_mem(&f, copy, size, "m.q3", Q3_OPEN_VERIFY_META, &err), -1);
    assert_non_null(strstr(err.msg, "header"));
    free(copy);
    free(orig);
}

/* Every prefix of the file is refused with a message, never a crash. */
static void test_truncation_everywhere(void **state)
{
    (void)state;
    size_t size;
    uint8_t *orig = slurp(model_path, &size);
    for (size_t cut = 0; cut < size; cut += (cut < 512 ? 1 : 97)) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, orig, cut);
        q3_file f;
        q3_err err = {{0}};
        assert_int_equal(q3_open_mem(&f, p, cut, "m.q3", 0, &err), -1);
        assert_true(strlen(err.msg) > 0);
        assert_non_null(strstr(err.msg, "m.q3"));
        free(p);
    }
    free(orig);
}

static void test_bad_magic_version(void **state)
{
    (void)state;
    size_t size;
    uint8_t *p = slurp(model_path, &size);
    q3_file f;
    q3_err err;
    p[0] = 'X';
    assert_int_equal(q3_open_mem(&f, p, size, "m.q3", 0, &err), -1);
    assert_non_null(strstr(err.msg, "magic"));
    p[0] = 'Q';
    q3_wr32(p + 8, 2);
    assert_int_equal(q3_open_mem(&f, p, size, "m.q3", 0, &err), -1);
    assert_non_null(strstr(err.msg, "version"));
    free(p);
}

/* Forged tensor entries that overflow or point outside the weights are refused. */
static void test_forged_tensor_entries(void **state)
{
    (void)state;
    size_t size;
    uint8_t *orig = slurp(model_path, &size);
    q3_file f;
    q3_err err;
    assert_int_equal(q3_open_mem(&f, orig, size, "m.q3", 0, &err), 0);
    uint64_t dir = q3_get_section(&f, Q3_SEC_TENSORS)->offset;
    q3_close(&f);
    struct { size_t field; uint64_t value; const char *expect; } cases[] = {
        {88, 1ull << 40, "shape"},       /* rows */
        {96, 0, "shape"},                /* cols */
        {104, 0, "weights section"},      /* offset */
        {104, ~0ull - 10, "weights section"},
        {112, 2, "size"},
    };
    uint8_t *p = malloc(size);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(p, orig, size);
        q3_wr64(p + dir + 8 + cases[i].field, cases[i].value);
        assert_int_equal(q3_open_mem(&f, p, size, "m.q3", 0, &err), -1);
        assert_non_null(strstr(err.msg, cases[i].expect));
    }
    memcpy(p, orig, size);
    q3_wr32(p + dir, 1000000); /* tensor count beyond the section */
    assert_int_equal(q3_open_mem(&f, p, size, "m.q3", 0, &err), -1);
    free(p);
    free(orig);
}

static void test_missing_file(void **state)
{
    (void)state;
    q3_file f;
    q3_err err;
    assert_int_equal(q3_open(&f, "/nonexistent/x.q3", 0, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/x.q3"));
    assert_int_equal(q3_open(&f, "/nonexistent/x.q3", Q3_OPEN_LOAD, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/x.q3"));
}

/* Q3_OPEN_LOAD: the same bytes as the mapping, in memory of its own, every checksum right. */
static void test_load_into_memory(void **state)
{
    (void)state;
    q3_file a, b;
    q3_err err;
    assert_int_equal(q3_open(&a, model_path, Q3_OPEN_VERIFY_META, &err), 0);
    assert_int_equal(q3_open(&b, model_path, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS | Q3_OPEN_LOAD, &err), 0);
    assert_int_equal(a.loaded, 0);
    assert_int_equal(b.loaded, 1);
    assert_int_equal(a.size, b.size);
    assert_true(a.map != b.map);
    assert_memory_equal(a.map, b.map, a.size);
    assert_int_equal(b.n_tensors, N_TENSORS);
    q3_close(&a);
    q3_close(&b);
}

static void test_unwritable_directory_leaves_nothing(void **state)
{
    (void)state;
    q3_err err;
    assert_int_equal(write_model("/nonexistent-dir/m.q3", &err), -1);
    assert_non_null(strstr(err.msg, "temporary file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_tile_padding_is_zero),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bit_flips_are_named),
        cmocka_unit_test(test_truncation_everywhere),
        cmocka_unit_test(test_bad_magic_version),
        cmocka_unit_test(test_forged_tensor_entries),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_load_into_memory),
        cmocka_unit_test(test_unwritable_directory_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
