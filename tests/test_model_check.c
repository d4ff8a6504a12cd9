/* test_model_check.c - issue 14: "q3check OK" must mean "q3run loads it". Forged
 * files whose checksums are all correct and whose structure is valid, but whose
 * config contradicts the tensor directory, whose tokenizer the runtime cannot build,
 * or whose weights are not finite: runtime/model_check.h refuses each, naming the
 * file, and so do the q3check and q3run binaries. Base: fuzz/corpus/q3/tiny-tied
 * (vocab 16, hidden 32, intermediate 32, 1 layer, 2 heads, 1 KV head, head_dim 16, tied). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../runtime/model_check.h"
#include "forge_util.h"

#define BASE "fuzz/corpus/q3/tiny-tied"

static uint8_t *base;
static size_t base_size;
static char dir[] = "/tmp/q3_test_model_check_XXXXXX";

static int setup(void **state)
{
    (void)state;
    FILE *f = fopen(BASE, "rb");
    if (!f || !mkdtemp(dir)) return -1;
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
    return rmdir(dir);
}

static const char *build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Run a tool on path; its exit status, and stdout + stderr in out. */
static int run_tool(const char *cmd_fmt, const char *path, char *out, size_t cap)
{
    char cmd[1024], log[512];
    snprintf(log, sizeof log, "%s/log", dir);
    snprintf(cmd, sizeof cmd, cmd_fmt, build_dir(), path);
    strncat(cmd, " >", sizeof cmd - strlen(cmd) - 1);
    strncat(cmd, log, sizeof cmd - strlen(cmd) - 1);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    int st = system(cmd);
    FILE *f = fopen(log, "rb");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    unlink(log);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The forgery, resealed and written to disk, is refused by q3_model_check with want
 * in one line naming the file; q3check says FAILED (exit 1) naming the same problem,
 * and q3run refuses it at load (exit 1). */
static void expect_unloadable(forged *f, const char *want)
{
    char path[512], out[8192];
    reseal(f);
    snprintf(path, sizeof path, "%s/forged.q3", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(f->p, 1, f->size, fp), f->size);
    assert_int_equal(fclose(fp), 0);
    free(f->p);

    q3_file qf;
    q3_err err = {{0}};
    if (q3_open(&qf, path, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS, &err))
        fail_msg("the forgery must pass the structure and checksum checks: %s", err.msg);
    q3_tokdata td;
    q3_tokenizer *tk;
    int rc = q3_model_check(&qf, &td, &tk, &err);
    q3_close(&qf);
    if (rc == 0) {
        q3_tokenizer_free(tk);
        q3_tokdata_free(&td);
        if (strstr(want, "non-finite")) goto tools; /* loadable; only q3check's finite scan objects */
        fail_msg("q3_model_check accepted a forgery (expected: %s)", want);
    }
    assert_non_null(strstr(err.msg, path));
    assert_null(strchr(err.msg, '\n'));
    if (!strstr(err.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
    assert_int_equal(run_tool("%s/q3run %s Hi -n 1 --temp 0", path, out, sizeof out), 1);
    if (!strstr(out, want)) fail_msg("q3run: \"%s\" lacks \"%s\"", out, want);
tools:
    assert_int_equal(run_tool("%s/q3check %s", path, out, sizeof out), 1);
    if (!strstr(out, want) || !strstr(out, ": FAILED ("))
        fail_msg("q3check: \"%s\" lacks \"%s\" or FAILED", out, want);
    unlink(path);
}

static void test_base_is_loadable(void **state)
{
    (void)state;
    char path[512], out[8192];
    forged f = forge_copy(base, base_size);
    snprintf(path, sizeof path, "%s/base.q3", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(f.p, 1, f.size, fp), f.size);
    assert_int_equal(fclose(fp), 0);
    free(f.p);
    assert_int_equal(run_tool("%s/q3check %s", path, out, sizeof out), 0);
    assert_non_null(strstr(out, ": OK ("));
    unlink(path);
}

/* Configs that contradict the tensors: each field that shapes a tensor, in turn. */
static void test_config_against_tensors(void **state)
{
    (void)state;
    static const struct { uint32_t off, value; const char *want; } cases[] = {
        {4, 64, "tensor 'model.embed_tokens.weight': expected BF16 [16, 64]"},          /* hidden_size */
        {8, 48, "tensor 'model.layers.0.mlp.gate_proj.weight': expected BF16 [48, 32]"}, /* intermediate_size */
        {12, 2, "tensor 'model.layers.1.input_layernorm.weight' is missing"},           /* num_hidden_layers */
        {16, 4, "tensor 'model.layers.0.self_attn.q_proj.weight': expected BF16 [64, 32]"}, /* heads */
        {20, 2, "tensor 'model.layers.0.self_attn.k_proj.weight': expected BF16 [32, 32]"}, /* KV heads */
        {24, 8, "tensor 'model.layers.0.self_attn.q_proj.weight': expected BF16 [16, 32]"}, /* head_dim */
        {0, 32, "tensor 'model.embed_tokens.weight': expected BF16 [32, 32]"},           /* vocab_size */
        {32, 0, "tensor 'lm_head.weight' is missing"},                                  /* untied */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        forged f = forge_copy(base, base_size);
        q3_wr32(f.p + q3_rd64(entry(&f, Q3_SEC_CONFIG) + 8) + cases[i].off, cases[i].value);
        expect_unloadable(&f, cases[i].want);
    }
}

/* A decoder the runtime does not support, in a tokenizer section that parses. */
static void unsupported_decoder(uint8_t *blob, size_t *size)
{
    uint8_t *at = memmem(blob, *size, "\"type\":\"ByteLevel\"", 18);
    uint8_t *last = NULL;
    for (; at; at = memmem(at + 1, *size - (size_t)(at + 1 - blob), "\"type\":\"ByteLevel\"", 18)) last = at;
    assert_non_null(last); /* the decoder is the last JSON string before the template */
    memcpy(last + 8, "BytxLevel", 9);
}

static void test_tokenizer_build(void **state)
{
    (void)state;
    forged f = forge_copy(base, base_size);
    forge_tokenizer(&f, unsupported_decoder);
    expect_unloadable(&f, "tokenizer: decoder");
}

static void test_nonfinite_weight(void **state)
{
    (void)state;
    forged f = forge_copy(base, base_size);
    uint8_t *t = tensor_entry(&f, "model.layers.0.mlp.up_proj.weight");
    /* Stored element 512 + 37 of the tiled [32, 32] matrix is logical (16 + 1, 5). */
    q3_wr32(f.p + q3_rd64(t + 104) + 2 * (512 + 37), 0x7fc07fc0u);
    expect_unloadable(&f, "tensor 'model.layers.0.mlp.up_proj.weight': 2 non-finite values (NaN or Inf), the first "
                          "at [17, 5]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_is_loadable),
        cmocka_unit_test(test_config_against_tensors),
        cmocka_unit_test(test_tokenizer_build),
        cmocka_unit_test(test_nonfinite_weight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
