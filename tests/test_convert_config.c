/* test_convert_config.c - config.json (both dialects) and generation_config.json
 * into q3_config / q3_generation, and the clear refusals of what q3 does not run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "../convert/hf_config.h"
#include "../convert/json_util.h"
#include "convert_test_util.h"

/* A minimal valid config (published dialect) with one field replaced or added. */
static const char *base_fields[][2] = {
    {"model_type", "\"qwen3\""}, {"vocab_size", "1000"}, {"hidden_size", "64"},
    {"intermediate_size", "160"}, {"num_hidden_layers", "2"}, {"num_attention_heads", "8"},
    {"num_key_value_heads", "2"}, {"head_dim", "32"}, {"max_position_embeddings", "4096"},
    {"rms_norm_eps", "1e-06"}, {"rope_theta", "1000000"}, {"tie_word_embeddings", "true"},
    {"bos_token_id", "1"}, {"eos_token_id", "2"},
};
#define N_BASE (sizeof base_fields / sizeof base_fields[0])

/* JSON text: the base with key set to value ("" drops the key), plus extra members. */
static void make_config(char *out, size_t cap, const char *key, const char *value, const char *extra)
{
    size_t len = (size_t)snprintf(out, cap, "{");
    int first = 1;
    for (size_t i = 0; i < N_BASE; i++) {
        const char *v = key && strcmp(key, base_fields[i][0]) == 0 ? value : base_fields[i][1];
        if (!*v) continue;
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\": %s", first ? "" : ", ", base_fields[i][0], v);
        first = 0;
    }
    int known = 0;
    for (size_t i = 0; key && i < N_BASE; i++) known |= strcmp(key, base_fields[i][0]) == 0;
    if (key && !known) len += (size_t)snprintf(out + len, cap - len, ", \"%s\": %s", key, value);
    if (extra) len += (size_t)snprintf(out + len, cap - len, ", %s", extra);
    assert_true(len + 2 < cap);
    snprintf(out + len, cap - len, "}");
}

static int parse_text(const char *text, q3_hf_config *hc, q3_err *err)
{
    cJSON *root;
    if (q3_json_parse(text, strlen(text), "config.json", &root, err)) return -1;
    int rc = q3_hf_config_parse(root, "config.json", hc, err);
    cJSON_Delete(root);
    return rc;
}

static void expect_ok(const char *key, const char *value, const char *extra, q3_hf_config *hc)
{
    char text[4096];
    q3_err err = {{0}};
    make_config(text, sizeof text, key, value, extra);
    if (parse_text(text, hc, &err)) fail_msg("%s rejected: %s", text, err.msg);
}

static void expect_refused(const char *key, const char *value, const char *extra, const char *needle)
{
    char text[4096];
    q3_hf_config hc;
    q3_err err = {{0}};
    make_config(text, sizeof text, key, value, extra);
    if (parse_text(text, &hc, &err) == 0) fail_msg("%s accepted", text);
    tu_assert_contains(err.msg, "config.json");
    tu_assert_contains(err.msg, needle);
}

static void test_published_dialect(void **state)
{
    (void)state;
    q3_hf_config hc;
    q3_err err = {{0}};
    assert_int_equal(q3_hf_config_load("tests/fixtures/configs", &hc, &err), -1); /* no config.json there */
    cJSON *root;
    assert_int_equal(q3_json_load("tests/fixtures/configs/syn-b.json", &root, &err), 0);
    assert_int_equal(q3_hf_config_parse(root, "syn-b.json", &hc, &err), 0);
    cJSON_Delete(root);
    const q3_config *c = &hc.config;
    assert_int_equal(c->vocab_size, 151936);
    assert_int_equal(c->hidden_size, 64);
    assert_int_equal(c->intermediate_size, 160);
    assert_int_equal(c->num_layers, 2);
    assert_int_equal(c->num_heads, 8);
    assert_int_equal(c->num_kv_heads, 2);
    assert_int_equal(c->head_dim, 32);
    assert_int_equal(c->max_position_embeddings, 40960);
    assert_int_equal(c->tie_word_embeddings, 0);
    assert_int_equal(c->bos_token_id, 151643);
    assert_int_equal(c->eos_token_id, 151645);
    assert_int_equal(c->pad_token_id, -1);
    assert_true(c->rope_theta == 10000.0);
    assert_true(c->rms_norm_eps == 1e-5);
}

static void test_transformers5_dialect(void **state)
{
    (void)state;
    char dir[4096];
    q3_hf_config hc;
    q3_err err = {{0}};
    tu_path(dir, sizeof dir, tu_build(), "fixtures/hf-tiny");
    if (q3_hf_config_load(dir, &hc, &err)) fail_msg("%s (run `make fixtures`)", err.msg);
    const q3_config *c = &hc.config;
    assert_int_equal(c->hidden_size, 32);
    assert_int_equal(c->head_dim, 16);
    assert_int_equal(c->num_heads, 4);
    assert_int_equal(c->num_kv_heads, 2);
    assert_int_equal(c->tie_word_embeddings, 1);
    assert_int_equal(c->pad_token_id, -1); /* "pad_token_id": null */
    assert_true(c->rope_theta == 1e6);      /* rope_parameters.rope_theta */
    q3_generation g;
    assert_int_equal(q3_hf_generation_load(dir, &hc, &g, &err), 0);
    assert_int_equal(g.n_eos, 1);
    assert_int_equal(g.eos_token_ids[0], 151645);
    assert_int_equal(g.bos_token_id, 151643);
    assert_true(g.temperature == 1.0f && g.top_p == 1.0f && g.top_k == 0 && g.do_sample == 0);

    expect_ok("rope_theta", "",
              "\"dtype\": \"bfloat16\", \"rope_parameters\": {\"rope_theta\": 5000.0, \"rope_type\": \"default\"}", &hc);
    assert_true(hc.config.rope_theta == 5000.0);
}

static void test_defaults_and_ids(void **state)
{
    (void)state;
    q3_hf_config hc;
    expect_ok("head_dim", "", NULL, &hc);
    assert_int_equal(hc.config.head_dim, 8); /* hidden 64 / 8 heads */
    expect_ok("head_dim", "null", NULL, &hc);
    assert_int_equal(hc.config.head_dim, 8);
    expect_ok("num_key_value_heads", "", NULL, &hc);
    assert_int_equal(hc.config.num_kv_heads, 8);
    expect_ok("eos_token_id", "[7, 2, 9]", NULL, &hc);
    assert_int_equal(hc.config.eos_token_id, 7);
    assert_int_equal(hc.n_eos, 3);
    assert_int_equal(hc.eos_ids[2], 9);
    expect_ok("eos_token_id", "null", "\"pad_token_id\": null", &hc);
    assert_int_equal(hc.config.eos_token_id, -1);
    assert_int_equal(hc.config.pad_token_id, -1);
    assert_int_equal(hc.n_eos, 0);
    expect_ok("tie_word_embeddings", "", NULL, &hc);
    assert_int_equal(hc.config.tie_word_embeddings, 0);
}

/* What q3 does not run, and values out of range: each refused with a message naming it. */
static void test_refusals(void **state)
{
    (void)state;
    static const char *cases[][4] = {
        {"model_type", "\"llama\"", NULL, "model_type is \"llama\"; q3 converts only \"qwen3\""},
        {"model_type", "\"qwen3_moe\"", NULL, "\"qwen3_moe\""},
        {"model_type", "", NULL, "\"model_type\" is missing"},
        {"rope_scaling", "{\"type\": \"yarn\", \"factor\": 4.0}", NULL, "rope_scaling"},
        {"rope_theta", "", "\"rope_parameters\": {\"rope_theta\": 1e6, \"rope_type\": \"yarn\"}", "rope_type is \"yarn\""},
        {"use_sliding_window", "true", NULL, "use_sliding_window"},
        {"layer_types", "[\"full_attention\", \"sliding_attention\"]", NULL, "layer_types[1]"},
        {"attention_bias", "true", NULL, "attention_bias"},
        {"hidden_act", "\"gelu\"", NULL, "hidden_act"},
        {"hidden_size", "0", NULL, "hidden_size = 0"},
        {"hidden_size", "", NULL, "\"hidden_size\" is missing"},
        {"vocab_size", "-5", NULL, "\"vocab_size\" must be an integer"},
        {"vocab_size", "12.5", NULL, "\"vocab_size\" must be an integer"},
        {"num_hidden_layers", "\"2\"", NULL, "\"num_hidden_layers\" must be an integer"},
        {"num_key_value_heads", "3", NULL, "not a multiple of num_key_value_heads 3"},
        {"head_dim", "31", NULL, "head_dim 31 must be even"},
        {"head_dim", "", "\"hidden_size\": 60", "key \"hidden_size\" appears twice"},
        {"eos_token_id", "1000", NULL, "\"eos_token_id\" must be a token id in [0, vocab_size 1000)"},
        {"bos_token_id", "[1, 2]", NULL, "\"bos_token_id\" must be one token id"},
        {"eos_token_id", "[1,2,3,4,5,6,7,8]", NULL, "lists 8 ids, at most 7"},
        /* One field per message: these named head_dim, or both reals, before (issue 14). */
        {"rms_norm_eps", "-1e-6", NULL, "config: rms_norm_eps -1e-06 must be finite and positive"},
        {"num_hidden_layers", "5000", NULL, "config: num_hidden_layers 5000, expected at most 4096"},
        {"rms_norm_eps", "", NULL, "\"rms_norm_eps\" is missing"},
        {"rope_theta", "", NULL, "neither \"rope_theta\" nor \"rope_parameters.rope_theta\""},
        {"rope_theta", "\"big\"", NULL, "\"rope_theta\" must be a finite number"},
        {"tie_word_embeddings", "1", NULL, "\"tie_word_embeddings\" must be true or false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(cases[i][0], cases[i][1], cases[i][2], cases[i][3]);
}

static void test_head_dim_default_must_divide(void **state)
{
    (void)state;
    q3_hf_config hc;
    q3_err err = {{0}};
    assert_int_equal(parse_text("{\"model_type\": \"qwen3\", \"vocab_size\": 10, \"hidden_size\": 60, "
                                "\"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 8, "
                                "\"max_position_embeddings\": 64, \"rope_theta\": 1e4, \"rms_norm_eps\": 1e-6}",
                                &hc, &err), -1);
    tu_assert_contains(err.msg, "no \"head_dim\" and hidden_size 60 is not a multiple of num_attention_heads 8");
}

static void test_malformed_and_missing(void **state)
{
    (void)state;
    q3_hf_config hc;
    q3_err err = {{0}};
    char *dir = tu_mkdtemp();
    assert_int_equal(q3_hf_config_load(dir, &hc, &err), -1);
    tu_assert_contains(err.msg, "config.json: cannot open: No such file or directory");
    tu_write_text(dir, "config.json", "{\"model_type\": \"qwen3\",\n  \"vocab_size\": 10,,}");
    assert_int_equal(q3_hf_config_load(dir, &hc, &err), -1);
    tu_assert_contains(err.msg, "config.json: malformed JSON at byte");
    tu_assert_contains(err.msg, "line 2");
    tu_write_text(dir, "config.json", "[]");
    assert_int_equal(q3_hf_config_load(dir, &hc, &err), -1);
    tu_assert_contains(err.msg, "root is not an object");
    tu_rm_rf(dir);
}

static void test_generation(void **state)
{
    (void)state;
    q3_hf_config hc;
    q3_generation g;
    q3_err err = {{0}};
    expect_ok("eos_token_id", "[5, 6]", "\"pad_token_id\": 3", &hc);

    /* Absent file: spec.md 5 defaults and the config's ids. */
    assert_int_equal(q3_hf_generation_parse(NULL, "g", &hc, &g, &err), 0);
    assert_true(g.do_sample == 0 && g.top_k == 0 && g.temperature == 1.0f && g.top_p == 1.0f && g.min_p == 0.0f &&
                g.repetition_penalty == 1.0f);
    assert_int_equal(g.bos_token_id, 1);
    assert_int_equal(g.pad_token_id, 3);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_token_ids[1], 6);
    assert_int_equal(g.eos_token_ids[2], -1);

    /* Qwen3-0.6B's generation_config.json. */
    const char *qwen = "{\"bos_token_id\": 151643, \"do_sample\": true, \"eos_token_id\": [151645, 151643], "
                       "\"pad_token_id\": 151643, \"temperature\": 0.6, \"top_k\": 20, \"top_p\": 0.95, "
                       "\"min_p\": null, \"transformers_version\": \"4.51.0\"}";
    cJSON *root;
    hc.config.vocab_size = 151936;
    assert_int_equal(q3_json_parse(qwen, strlen(qwen), "g", &root, &err), 0);
    assert_int_equal(q3_hf_generation_parse(root, "g", &hc, &g, &err), 0);
    cJSON_Delete(root);
    assert_int_equal(g.do_sample, 1);
    assert_int_equal(g.top_k, 20);
    assert_true(g.temperature == 0.6f && g.top_p == 0.95f && g.min_p == 0.0f);
    assert_int_equal(g.bos_token_id, 151643);
    assert_int_equal(g.pad_token_id, 151643);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_token_ids[0], 151645);
    assert_int_equal(g.eos_token_ids[1], 151643);

    static const char *bad[][2] = {
        {"{\"top_p\": 2.0}", "generation: top_p 2, expected in [0, 1]"},
        {"{\"do_sample\": \"yes\"}", "\"do_sample\" must be true or false"},
        {"{\"top_k\": -1}", "\"top_k\" must be an integer"},
        {"{\"eos_token_id\": [1, 200000]}", "\"eos_token_id\" entries must be a token id"},
        {"{\"repetition_penalty\": 0}", "generation: repetition_penalty 0, expected finite and > 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(q3_json_parse(bad[i][0], strlen(bad[i][0]), "g", &root, &err), 0);
        assert_int_equal(q3_hf_generation_parse(root, "generation_config.json", &hc, &g, &err), -1);
        cJSON_Delete(root);
        tu_assert_contains(err.msg, "generation_config.json");
        tu_assert_contains(err.msg, bad[i][1]);
    }

    /* A present but malformed file is an error, a missing one is not. */
    char *dir = tu_mkdtemp();
    assert_int_equal(q3_hf_generation_load(dir, &hc, &g, &err), 0);
    tu_write_text(dir, "generation_config.json", "{\"top_k\": ");
    assert_int_equal(q3_hf_generation_load(dir, &hc, &g, &err), -1);
    tu_assert_contains(err.msg, "generation_config.json: malformed JSON");
    tu_rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_dialect),
        cmocka_unit_test(test_transformers5_dialect),
        cmocka_unit_test(test_defaults_and_ids),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_head_dim_default_must_divide),
        cmocka_unit_test(test_malformed_and_missing),
        cmocka_unit_test(test_generation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
