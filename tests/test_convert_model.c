/* test_convert_model.c - q3convert's library entry point on real and synthetic
 * checkpoints: every tensor read back through q3_open + q3_tile_unpack equals the
 * source bit for bit (F32 and F16 after round-to-nearest-even), and every kind of
 * bad input is refused with a message that names it, leaving nothing at the output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>
#include "../convert/convert.h"
#include "../convert/hf_config.h"
#include "../format/q3_arch.h"
#include "../convert/safetensors.h"
#include "../convert/safetensors_write.h"
#include "../convert/synth.h"
#include "convert_test_util.h"

/* ---- reference conversions, written from spec.md 9 independently of the converter ---- */

static uint16_t ref_f32_bits(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static uint16_t ref_f16_bits(uint16_t h)
{
    _Float16 x;
    memcpy(&x, &h, 2);
    float f = (float)x; /* exact widening by the compiler */
    uint32_t u;
    memcpy(&u, &f, 4);
    return ref_f32_bits(u);
}

static uint16_t ref_elem(const q3_st_tensor *t, uint64_t i)
{
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case Q3_ST_BF16: return (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
    case Q3_ST_F16: return ref_f16_bits((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    default: return ref_f32_bits(q3_rd32(p + 4 * i));
    }
}

/* The .q3 file holds exactly the checkpoint's tensors, bit for bit, and its config. */
static void verify_against_source(const char *q3_path, const char *hf_dir)
{
    q3_file f;
    q3_st_model st;
    q3_hf_config hc;
    q3_err err = {{0}};
    if (q3_open(&f, q3_path, Q3_OPEN_VERIFY_META | Q3_OPEN_VERIFY_WEIGHTS, &err)) fail_msg("%s", err.msg);
    if (q3_st_open(&st, hf_dir, &err) || q3_hf_config_load(hf_dir, &hc, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(&f.config, &hc.config, sizeof f.config);
    assert_int_equal(f.generation.eos_token_ids[0], hc.config.eos_token_id);
    uint32_t expected = 3 + 11 * hc.config.num_layers - hc.config.tie_word_embeddings;
    assert_int_equal(f.n_tensors, expected);
    uint64_t compared = 0;
    for (uint32_t i = 0; i < f.n_tensors; i++) {
        const q3_tensor *t = &f.tensors[i];
        const q3_st_tensor *s = q3_st_find(&st, t->name);
        if (!s) fail_msg("%s: tensor '%s' is not in the checkpoint", q3_path, t->name);
        assert_int_equal(t->ndim, s->ndim);
        assert_int_equal(t->shape[0], s->shape[0]);
        assert_int_equal(t->shape[1], s->ndim == 2 ? s->shape[1] : 1);
        assert_int_equal(t->layout, s->ndim == 2 ? Q3_LAYOUT_R16C32 : Q3_LAYOUT_ROWMAJOR);
        uint64_t n = t->shape[0] * t->shape[1];
        uint16_t *rm = malloc(n * 2);
        assert_non_null(rm);
        q3_tile_unpack(t->layout, t->data, t->shape[0], t->shape[1], rm);
        for (uint64_t k = 0; k < n; k++)
            if (rm[k] != ref_elem(s, k))
                fail_msg("%s: tensor '%s' element %llu is %04x, expected %04x", q3_path, t->name,
                         (unsigned long long)k, rm[k], ref_elem(s, k));
        free(rm);
        compared += n;
    }
    assert_true(compared > 0);
    q3_tokdata td;
    if (q3_read_tokenizer(&f, &td, &err)) fail_msg("%s", err.msg);
    assert_true(td.n_vocab > 0);
    q3_tokdata_free(&td);
    q3_st_close(&st);
    q3_close(&f);
}

/* allow_nonfinite: the checkpoint holds NaN and Inf on purpose (their rounding is tested). */
static void convert_ok_with(const char *hf_dir, const char *name, int allow_nonfinite)
{
    char out[4096];
    q3_err err = {{0}};
    q3_convert_stats stats;
    q3_convert_opts opts = {.allow_nonfinite = allow_nonfinite};
    tu_path(out, sizeof out, tu_tmp, name);
    if (q3_convert(hf_dir, out, &opts, &stats, &err)) fail_msg("%s", err.msg);
    assert_true(stats.n_tensors > 0);
    verify_against_source(out, hf_dir);
    assert_int_equal(remove(out), 0);
}

static void convert_ok(const char *hf_dir, const char *name) { convert_ok_with(hf_dir, name, 0); }

static void fixture_dir(char *out, size_t cap, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "fixtures/%s", name);
    tu_path(out, cap, tu_build(), rel);
    if (access(out, F_OK) != 0) fail_msg("%s is missing: run `make fixtures`", out);
}

static void test_hf_tiny_bf16(void **state)
{
    (void)state;
    char d[4096];
    fixture_dir(d, sizeof d, "hf-tiny");
    convert_ok(d, "hf-tiny.q3");
}

static void test_hf_tiny_f32_sharded(void **state)
{
    (void)state;
    char d[4096];
    fixture_dir(d, sizeof d, "hf-tiny-f32");
    convert_ok(d, "hf-tiny-f32.q3");
}

static void test_demo_tiny(void **state)
{
    (void)state;
    char d[4096];
    fixture_dir(d, sizeof d, "demo-tiny");
    convert_ok(d, "demo-tiny.q3");
}

/* A synthetic checkpoint made by the C port of synth_qwen3.py, with the Qwen3 tokenizer beside it. */
static void synth_checkpoint(const char *config, const char *name, char *dir, size_t cap)
{
    char cfg[4096], p[4096], tok[4096];
    q3_err err = {{0}};
    snprintf(cfg, sizeof cfg, "tests/fixtures/configs/%s", config);
    tu_path(dir, cap, tu_tmp, name);
    if (q3_synth_checkpoint(cfg, dir, &err)) fail_msg("%s", err.msg);
    fixture_dir(tok, sizeof tok, "tokenizer.json");
    tu_path(p, sizeof p, dir, "tokenizer.json");
    tu_copy(tok, p);
    tu_path(p, sizeof p, dir, "tokenizer_config.json");
    tu_copy("tests/fixtures/tokenizer_config.json", p);
}

static void test_syn_a(void **state)
{
    (void)state;
    char d[4096];
    synth_checkpoint("syn-a.json", "syn-a", d, sizeof d);
    convert_ok(d, "syn-a.q3");
}

static void test_syn_b_untied(void **state)
{
    (void)state;
    char d[4096];
    synth_checkpoint("syn-b.json", "syn-b", d, sizeof d);
    convert_ok(d, "syn-b.q3");
}

/* ---- a small checkpoint written here, in any source dtype, with one defect at a time ---- */

typedef struct {
    uint32_t dtype;
    int tie;
    const char *drop;      /* leave this tensor out */
    const char *extra;     /* add this tensor, shape [4] */
    const char *reshape;   /* this tensor gets its first dimension halved */
    int lm_head;           /* tied: 1 adds lm_head.weight equal to the embedding, 2 a different one */
    const char *model_type;
    int nonfinite;         /* keep the NaN / Inf / huge values of the patterns below (else all finite) */
    const char *poison;    /* this tensor gets poison_bits at element poison_index */
    uint64_t poison_index;
    uint32_t poison_bits;  /* in the tensor's dtype */
} mini_opts;

typedef struct {
    const q3_st_spec *specs;
    const char *const *seed_names;
    const mini_opts *o;
} mini_fill_ctx;

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* F16: every bit pattern in turn (NaNs, infinities, subnormals); F32: random bits with
 * exact ties, NaNs, infinities and signed zeros mixed in; BF16: random bits. Unless
 * o->nonfinite, the top exponent bit is cleared, which leaves every value finite
 * (|v| < 2) and keeps the rest of the patterns. */
static int mini_fill(void *ctx, uint32_t index, uint8_t *dst, q3_err *err)
{
    (void)err;
    const mini_fill_ctx *c = ctx;
    const q3_st_spec *s = &c->specs[index];
    uint64_t seed = 0;
    for (const char *p = c->seed_names[index]; *p; p++) seed = seed * 131 + (uint8_t)*p;
    uint64_t n = 1;
    for (uint32_t d = 0; d < s->ndim; d++) n *= s->shape[d];
    static const uint32_t specials[] = {0x7f800001u, 0xffc00000u, 0x7f800000u, 0xff800000u, 0x80000000u, 0,
                                        0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x00008000u, 0x0001ffffu};
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = mix(seed + i);
        if (s->dtype == Q3_ST_F32) {
            uint32_t u = (uint32_t)r;
            if (i % 5 == 0) u = (u & 0xffff0000u) | 0x8000u; /* exactly halfway */
            if (i % 13 == 0) u = specials[(i / 13) % (sizeof specials / sizeof specials[0])];
            if (!c->o->nonfinite) u &= ~0x40000000u;
            if (c->o->poison && strcmp(s->name, c->o->poison) == 0 && i == c->o->poison_index) u = c->o->poison_bits;
            q3_wr32(dst + 4 * i, u);
        } else {
            uint16_t h = s->dtype == Q3_ST_F16 ? (uint16_t)(i + seed) : (uint16_t)r;
            if (!c->o->nonfinite) h &= (uint16_t)~0x4000u;
            if (c->o->poison && strcmp(s->name, c->o->poison) == 0 && i == c->o->poison_index)
                h = (uint16_t)c->o->poison_bits;
            dst[2 * i] = (uint8_t)h;
            dst[2 * i + 1] = (uint8_t)(h >> 8);
        }
    }
    return 0;
}

static void write_mini(const char *dir, const mini_opts *o)
{
    char cfg[2048], p[4096], tok[4096];
    assert_true(mkdir(dir, 0755) == 0 || errno == EEXIST);
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"%s\", \"vocab_size\": 8320, "
             "\"hidden_size\": 48, \"intermediate_size\": 72, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
             "\"num_key_value_heads\": 1, \"head_dim\": 24, \"max_position_embeddings\": 256, "
             "\"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, "
             "\"bos_token_id\": 8192, \"eos_token_id\": [8192, 8193], \"pad_token_id\": null}",
             o->model_type ? o->model_type : "qwen3", o->tie ? "true" : "false");
    tu_write_text(dir, "config.json", cfg);
    q3_config c = {.vocab_size = 8320, .hidden_size = 48, .intermediate_size = 72, .num_layers = 1,
                   .num_heads = 2, .num_kv_heads = 1, .head_dim = 24, .tie_word_embeddings = (uint32_t)o->tie};
    q3_tensor_spec *specs;
    uint32_t n;
    q3_err err = {{0}};
    assert_int_equal(q3_arch_tensor_specs(&q3_arch_qwen3, &c, &specs, &n, &err), 0);
    q3_st_spec st[20];
    const char *seeds[20];
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (o->drop && strcmp(specs[i].name, o->drop) == 0) continue;
        st[m] = (q3_st_spec){specs[i].name, o->dtype, specs[i].ndim, {specs[i].shape[0], specs[i].shape[1]}};
        if (o->reshape && strcmp(specs[i].name, o->reshape) == 0) st[m].shape[0] /= 2;
        seeds[m] = specs[i].name;
        m++;
    }
    if (o->extra) {
        st[m] = (q3_st_spec){o->extra, o->dtype, 1, {4}};
        seeds[m++] = o->extra;
    }
    if (o->lm_head) {
        st[m] = (q3_st_spec){"lm_head.weight", o->dtype, 2, {8320, 48}};
        seeds[m++] = o->lm_head == 1 ? "model.embed_tokens.weight" : "lm_head.weight";
    }
    mini_fill_ctx fc = {st, seeds, o};
    tu_path(p, sizeof p, dir, "model.safetensors");
    if (q3_st_write(p, st, m, mini_fill, &fc, &err)) fail_msg("%s", err.msg);
    free(specs);
    /* demo-tiny's tokenizer: 8192 BPE tokens + specials from 8192, below vocab_size 8320. */
    fixture_dir(tok, sizeof tok, "demo-tiny/tokenizer.json");
    tu_path(p, sizeof p, dir, "tokenizer.json");
    tu_copy(tok, p);
    fixture_dir(tok, sizeof tok, "demo-tiny/tokenizer_config.json");
    tu_path(p, sizeof p, dir, "tokenizer_config.json");
    tu_copy(tok, p);
}

static void test_mini_f16_exhaustive(void **state)
{
    (void)state;
    char d[4096];
    tu_path(d, sizeof d, tu_tmp, "mini-f16");
    write_mini(d, &(mini_opts){.dtype = Q3_ST_F16, .tie = 1, .nonfinite = 1});
    convert_ok_with(d, "mini-f16.q3", 1);
}

static void test_mini_f32_untied(void **state)
{
    (void)state;
    char d[4096];
    tu_path(d, sizeof d, tu_tmp, "mini-f32");
    write_mini(d, &(mini_opts){.dtype = Q3_ST_F32, .tie = 0, .nonfinite = 1});
    convert_ok_with(d, "mini-f32.q3", 1);
}

/* A tied checkpoint that still carries lm_head.weight: fine when it is the embedding. */
static void test_mini_tied_with_lm_head_copy(void **state)
{
    (void)state;
    char d[4096], out[4096];
    q3_file f;
    q3_err err = {{0}};
    tu_path(d, sizeof d, tu_tmp, "mini-copy");
    tu_path(out, sizeof out, tu_tmp, "mini-copy.q3");
    write_mini(d, &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1, .lm_head = 1});
    if (q3_convert(d, out, NULL, NULL, &err)) fail_msg("%s", err.msg);
    assert_int_equal(q3_open(&f, out, Q3_OPEN_VERIFY_META, &err), 0);
    assert_null(q3_find_tensor(&f, "lm_head.weight"));
    assert_int_equal(f.generation.n_eos, 2);
    assert_int_equal(f.generation.eos_token_ids[1], 8193);
    q3_close(&f);
    assert_int_equal(remove(out), 0);
}

/* ---- refusals: the message names the problem and nothing appears at the output ---- */

static void expect_refused(const char *hf_dir, const char *n1, const char *n2)
{
    char out[4096];
    q3_err err = {{0}};
    tu_path(out, sizeof out, tu_tmp, "out.q3");
    assert_int_equal(q3_convert(hf_dir, out, NULL, NULL, &err), -1);
    tu_assert_contains(err.msg, n1);
    if (n2) tu_assert_contains(err.msg, n2);
    assert_int_equal(access(out, F_OK), -1);
    assert_int_equal(tu_count_prefix(tu_tmp, "out.q3"), 0);
}

/* Replace a same-length byte string inside a file. */
static void patch_file(const char *path, const char *from, const char *to)
{
    size_t len = strlen(from);
    assert_int_equal(strlen(to), len);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    void *at = memmem(buf, n, from, len);
    if (!at) fail_msg("%s: '%s' not found in its first %zu bytes", path, from, n);
    assert_int_equal(fseek(f, (long)((char *)at - buf), SEEK_SET), 0);
    assert_int_equal(fwrite(to, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void mini_with(const char *name, const mini_opts *o, char *dir, char *st_path, size_t cap)
{
    tu_path(dir, cap, tu_tmp, name);
    write_mini(dir, o);
    tu_path(st_path, cap, dir, "model.safetensors");
}

static void test_bad_safetensors(void **state)
{
    (void)state;
    char d[4096], p[4096];
    const mini_opts ok = {.dtype = Q3_ST_BF16, .tie = 1};

    mini_with("trunc", &ok, d, p, sizeof d);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(truncate(p, sb.st_size - 50), 0);
    expect_refused(d, "model.safetensors: tensor 'model.norm.weight': data_offsets", "run past end of data");

    mini_with("hlen", &ok, d, p, sizeof d);
    uint8_t len[8];
    q3_wr64(len, 1ull << 40);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    assert_int_equal(fclose(f), 0);
    expect_refused(d, "model.safetensors: header length", "invalid");

    mini_with("json", &ok, d, p, sizeof d);
    patch_file(p, "\"shape\":[8320,48]", "\"shape\":[8320,48}");
    expect_refused(d, "model.safetensors: header: malformed JSON at byte", NULL);

    mini_with("dtype", &ok, d, p, sizeof d);
    patch_file(p, "\"dtype\":\"BF16\"", "\"dtype\":\"I16\" ");
    expect_refused(d, "model.safetensors: tensor 'model.embed_tokens.weight': dtype 'I16' is not supported", NULL);

    mini_with("span", &ok, d, p, sizeof d);
    patch_file(p, "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[48]",
               "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[47]");
    expect_refused(d, "tensor 'model.norm.weight': data_offsets", "span 96 bytes, but BF16 shape of 47 elements needs 94");
}

static void test_wrong_tensor_set(void **state)
{
    (void)state;
    char d[4096], p[4096];
    mini_with("missing", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1, .drop = "model.layers.0.self_attn.k_norm.weight"},
              d, p, sizeof d);
    expect_refused(d, "tensor 'model.layers.0.self_attn.k_norm.weight' is missing (expected shape [24])", NULL);

    mini_with("extra", &(mini_opts){.dtype = Q3_ST_F32, .tie = 1, .extra = "model.layers.0.self_attn.q_proj.bias"},
              d, p, sizeof d);
    expect_refused(d, "model.safetensors: unexpected tensor 'model.layers.0.self_attn.q_proj.bias' (shape [4])", NULL);

    mini_with("shape", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1, .reshape = "model.layers.0.mlp.down_proj.weight"},
              d, p, sizeof d);
    expect_refused(d, "model.safetensors: tensor 'model.layers.0.mlp.down_proj.weight' has shape [24, 72], expected [48, 72]",
                   NULL);

    mini_with("untied", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 0, .drop = "lm_head.weight"}, d, p, sizeof d);
    expect_refused(d, "tensor 'lm_head.weight' is missing (expected shape [8320, 48])", NULL);

    mini_with("tieddiff", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1, .lm_head = 2}, d, p, sizeof d);
    expect_refused(d, "unexpected tensor 'lm_head.weight'", "tie_word_embeddings is true and lm_head differs");
}

static void test_bad_config(void **state)
{
    (void)state;
    char d[4096], p[4096];
    mini_with("llama", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1, .model_type = "llama"}, d, p, sizeof d);
    expect_refused(d, "config.json: model_type is \"llama\"; q3 converts only \"qwen3\"", NULL);

    mini_with("badjson", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1}, d, p, sizeof d);
    tu_write_text(d, "config.json", "{\"model_type\": \"qwen3\", \"vocab_size\": 8320");
    expect_refused(d, "config.json: malformed JSON at byte", NULL);

    tu_path(p, sizeof p, d, "config.json");
    assert_int_equal(remove(p), 0);
    expect_refused(d, "config.json: cannot open: No such file or directory", NULL);

    expect_refused("/nonexistent/q3/checkpoint", "/nonexistent/q3/checkpoint/config.json: cannot open", NULL);
}

static void test_unwritable_output(void **state)
{
    (void)state;
    char d[4096], p[4096], out[4096];
    q3_err err = {{0}};
    mini_with("unwritable", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1}, d, p, sizeof d);
    assert_int_equal(q3_convert(d, "/nonexistent/dir/out.q3", NULL, NULL, &err), -1);
    tu_assert_contains(err.msg, "/nonexistent/dir/out.q3: cannot create a temporary file in /nonexistent/dir");
    assert_int_equal(access("/nonexistent/dir/out.q3", F_OK), -1);
    /* A parent that is a regular file (refused even for root). */
    tu_path(out, sizeof out, d, "config.json/out.q3");
    assert_int_equal(q3_convert(d, out, NULL, NULL, &err), -1);
    tu_assert_contains(err.msg, "cannot create a temporary file");
    tu_assert_contains(err.msg, "Not a directory");
    /* A directory in the way of the target: refused before any work (output_path.h). */
    tu_path(out, sizeof out, tu_tmp, "out.q3");
    assert_int_equal(mkdir(out, 0755), 0);
    assert_int_equal(q3_convert(d, out, NULL, NULL, &err), -1);
    tu_assert_contains(err.msg, "out.q3");
    assert_int_equal(rmdir(out), 0);
    assert_int_equal(tu_count_prefix(tu_tmp, "out.q3"), 0);
}

/* A full disk, made with a file-size limit (EFBIG): the temp file is removed. */
static void test_full_disk(void **state)
{
    (void)state;
    char d[4096], p[4096], out[4096];
    q3_err err = {{0}};
    mini_with("full", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1}, d, p, sizeof d);
    tu_path(out, sizeof out, tu_tmp, "out.q3");
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 256 * 1024; /* the model is about 1 MB */
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = q3_convert(d, out, NULL, NULL, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, -1);
    tu_assert_contains(err.msg, "out.q3: write failed at offset");
    tu_assert_contains(err.msg, "File too large");
    assert_int_equal(access(out, F_OK), -1);
    assert_int_equal(tu_count_prefix(tu_tmp, "out.q3"), 0);
}

/* ---- issue 14: weights that are not finite ---- */

static void test_nonfinite_refused(void **state)
{
    (void)state;
    char d[4096], p[4096], out[4096];
    q3_err err = {{0}};
    const char *up = "model.layers.0.mlp.up_proj.weight"; /* [72, 48]: element 100 is [2, 4] */
    mini_with("nan", &(mini_opts){.dtype = Q3_ST_F32, .tie = 1, .poison = up, .poison_index = 100,
                                  .poison_bits = 0x7fc00000u}, d, p, sizeof d);
    expect_refused(d, "model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight': element 100 [2, 4] is NaN",
                   "--allow-nonfinite");
    mini_with("huge", &(mini_opts){.dtype = Q3_ST_F32, .tie = 1, .poison = up, .poison_index = 100,
                                   .poison_bits = 0x7f7fffffu}, d, p, sizeof d);
    expect_refused(d, "element 100 [2, 4] is 3.40282e+38, which rounds to +Inf in BF16", NULL);
    mini_with("inf", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1, .poison = "model.norm.weight", .poison_index = 7,
                                  .poison_bits = 0xff80u}, d, p, sizeof d);
    expect_refused(d, "tensor 'model.norm.weight': element 7 [7] is -Inf", NULL);
    mini_with("f16inf", &(mini_opts){.dtype = Q3_ST_F16, .tie = 1, .poison = up, .poison_index = 0,
                                     .poison_bits = 0x7c00u}, d, p, sizeof d);
    expect_refused(d, "element 0 [0, 0] is +Inf", NULL);

    /* --allow-nonfinite writes them, and the reader's check finds them where they are. */
    mini_with("nan", &(mini_opts){.dtype = Q3_ST_F32, .tie = 1, .poison = up, .poison_index = 100,
                                  .poison_bits = 0x7fc00000u}, d, p, sizeof d);
    tu_path(out, sizeof out, tu_tmp, "nan.q3");
    q3_convert_opts opts = {.allow_nonfinite = 1};
    if (q3_convert(d, out, &opts, NULL, &err)) fail_msg("%s", err.msg);
    q3_file f;
    assert_int_equal(q3_open(&f, out, Q3_OPEN_VERIFY_META, &err), 0);
    unsigned bad = 0;
    for (uint32_t i = 0; i < f.n_tensors; i++) {
        if (q3_verify_finite(&f, &f.tensors[i], &err) == 0) continue;
        bad++;
        tu_assert_contains(err.msg, "nan.q3: tensor 'model.layers.0.mlp.up_proj.weight': 1 non-finite value "
                                    "(NaN or Inf), the first at [2, 4]");
    }
    assert_int_equal(bad, 1);
    q3_close(&f);
    assert_int_equal(remove(out), 0);
}

/* ---- issue 14: an output that the final rename would make destructive ---- */

static void expect_output_refused(const char *hf_dir, const char *out, const char *what)
{
    q3_err err = {{0}};
    struct stat before, after;
    int existed = lstat(out, &before) == 0;
    assert_int_equal(q3_convert(hf_dir, out, NULL, NULL, &err), -1);
    tu_assert_contains(err.msg, out);
    tu_assert_contains(err.msg, what);
    assert_null(strchr(err.msg, '\n'));
    if (existed) { /* still the same thing, untouched */
        assert_int_equal(lstat(out, &after), 0);
        assert_true(after.st_ino == before.st_ino && after.st_mode == before.st_mode);
        assert_true(after.st_size == before.st_size && after.st_mtime == before.st_mtime);
    }
}

static void test_output_not_regular_or_an_input(void **state)
{
    (void)state;
    char d[4096], p[4096], out[4096], in[4096];
    mini_with("outputs", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1}, d, p, sizeof d);

    tu_path(out, sizeof out, tu_tmp, "fifo.q3");
    assert_int_equal(mkfifo(out, 0644), 0);
    expect_output_refused(d, out, "exists and is a FIFO");
    tu_path(out, sizeof out, tu_tmp, "dir.q3");
    assert_int_equal(mkdir(out, 0755), 0);
    expect_output_refused(d, out, "exists and is a directory");
    expect_output_refused(d, "/dev/null", "exists and is a character device");
    tu_path(out, sizeof out, tu_tmp, "link-to-fifo.q3");
    tu_path(in, sizeof in, tu_tmp, "fifo.q3");
    assert_int_equal(symlink(in, out), 0);
    expect_output_refused(d, out, "exists and is a FIFO");
    assert_int_equal(tu_count_prefix(tu_tmp, "fifo.q3.tmp"), 0);

    static const char *inputs[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        tu_path(in, sizeof in, d, inputs[i]);
        expect_output_refused(d, in, "is the same file as the input");
        tu_path(out, sizeof out, tu_tmp, "hard.q3");
        assert_int_equal(link(in, out), 0);
        expect_output_refused(d, out, inputs[i]);
        assert_int_equal(unlink(out), 0);
        tu_path(out, sizeof out, tu_tmp, "soft.q3");
        assert_int_equal(symlink(in, out), 0);
        expect_output_refused(d, out, inputs[i]);
        assert_int_equal(unlink(out), 0);
    }
    /* The same folder by another path. */
    assert_true((size_t)snprintf(out, sizeof out, "%.2000s/../%.1000s/model.safetensors", d, strrchr(d, '/') + 1) <
                sizeof out);
    expect_output_refused(d, out, "is the same file as the input");
    /* Optional inputs too, when they are there. */
    tu_write_text(d, "generation_config.json", "{}");
    tu_write_text(d, "chat_template.jinja", "{{ '<|im_start|>' }}");
    tu_path(in, sizeof in, d, "generation_config.json");
    expect_output_refused(d, in, "is the same file as the input");
    tu_path(in, sizeof in, d, "chat_template.jinja");
    expect_output_refused(d, in, "is the same file as the input");

    /* A shard of a sharded checkpoint, through a hard link. */
    fixture_dir(d, sizeof d, "hf-tiny-f32");
    tu_path(in, sizeof in, d, "model.safetensors.index.json");
    expect_output_refused(d, in, "is the same file as the input");
    tu_path(in, sizeof in, d, "model-00002-of-00002.safetensors");
    tu_path(out, sizeof out, tu_tmp, "shard.q3");
    if (link(in, out) == 0) { /* the build folder may lie on another file system */
        expect_output_refused(d, out, "model-00002-of-00002.safetensors");
        assert_int_equal(unlink(out), 0);
    }
    q3_err err = {{0}};
    assert_int_equal(q3_convert(d, "", NULL, NULL, &err), -1);
    tu_assert_contains(err.msg, "the output path is empty");
}

/* ---- issue 14: a tokenizer or template q3run would refuse is refused before writing ---- */

/* A mini checkpoint whose tokenizer.json (or, with key NULL, tokenizer_config.json's
 * chat_template) is changed: tokenizer.json's `key` is set to the JSON `value`. */
static void mini_tokenizer_with(const char *name, const char *key, const char *value, char *d, size_t cap)
{
    char p[4096];
    mini_with(name, &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1}, d, p, cap);
    tu_path(p, sizeof p, d, key ? "tokenizer.json" : "tokenizer_config.json");
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    static char text[4 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    cJSON *root = cJSON_Parse(text), *v = cJSON_Parse(value);
    assert_non_null(root);
    assert_non_null(v);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key ? key : "chat_template");
    cJSON_AddItemToObject(root, key ? key : "chat_template", v);
    char *out = cJSON_PrintUnformatted(root);
    tu_write(p, out, strlen(out));
    free(out);
    cJSON_Delete(root);
}

static void test_tokenizer_q3run_would_refuse(void **state)
{
    (void)state;
    char d[4096], p[4096];
    static const char *cases[][3] = {
        {"normalizer", "{\"type\": \"Lowercase\"}", "normalizer type \"Lowercase\" is not supported"},
        {"pre_tokenizer", "{\"type\": \"Whitespace\"}", "pre-tokenizer type \"Whitespace\" is not supported"},
        {"pre_tokenizer", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                          "{\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
                          "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}",
         "regex does not compile"},
        {"decoder", "{\"type\": \"WordPiece\"}", "decoder"},
        /* vocab_size is 8320: an added token at 8400 has no row in the embedding. */
        {"added_tokens", "[{\"id\": 8400, \"content\": \"<|x|>\", \"special\": true}]",
         "token id 8400 is not below vocab_size 8320"},
        {"added_tokens", "[{\"id\": 1000000, \"content\": \"<|x|>\", \"special\": true}]", "ids must be dense"},
        {NULL, "\"{{ messages }}\"", "chat template: it is not ChatML"},
        {NULL, "\"<think>{{ messages }}\"", "it uses <think> but is not Qwen3's template"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mini_tokenizer_with("tok", cases[i][0], cases[i][1], d, sizeof d);
        tu_path(p, sizeof p, d, "tokenizer.json");
        /* Tokenizer problems name tokenizer.json; template ones the checkpoint folder. */
        expect_refused(d, cases[i][0] ? p : d, cases[i][2]);
    }
    /* Invalid UTF-8 in a token (JSON is UTF-8; HuggingFace refuses such a file). */
    mini_with("utf8", &(mini_opts){.dtype = Q3_ST_BF16, .tie = 1}, d, p, sizeof d);
    tu_path(p, sizeof p, d, "tokenizer.json");
    patch_file(p, "\"<think>\"", "\"<th\xff\xfek>\"");
    expect_refused(d, "tokenizer.json: tokenizer: added token 8216 is not valid UTF-8 (byte 3 of 7)", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_tiny_bf16),
        cmocka_unit_test(test_hf_tiny_f32_sharded),
        cmocka_unit_test(test_demo_tiny),
        cmocka_unit_test(test_syn_a),
        cmocka_unit_test(test_syn_b_untied),
        cmocka_unit_test(test_mini_f16_exhaustive),
        cmocka_unit_test(test_mini_f32_untied),
        cmocka_unit_test(test_mini_tied_with_lm_head_copy),
        cmocka_unit_test(test_bad_safetensors),
        cmocka_unit_test(test_wrong_tensor_set),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_unwritable_output),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_nonfinite_refused),
        cmocka_unit_test(test_output_not_regular_or_an_input),
        cmocka_unit_test(test_tokenizer_q3run_would_refuse),
    };
    return cmocka_run_group_tests(tests, tu_setup, tu_teardown);
}
