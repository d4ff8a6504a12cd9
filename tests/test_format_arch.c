/* test_format_arch.c - the Qwen3 tensor table (format/q3_arch_qwen3.c) is spec.md 7's
 * list: the same names in the same order, the same shapes and layouts; and the specs
 * the converter writes from it follow the config (tied or not). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../format/q3_arch.h"

/* spec.md's symbol for each dimension */
static const char *symbol(q3_dim d)
{
    switch (d) {
    case Q3_DIM_ONE: return "";
    case Q3_DIM_VOCAB: return "V";
    case Q3_DIM_HIDDEN: return "H";
    case Q3_DIM_INTER: return "I";
    case Q3_DIM_HEAD: return "D";
    case Q3_DIM_Q: return "Nq·D";
    case Q3_DIM_KV: return "Nkv·D";
    }
    return "?";
}

/* One row of the table as spec.md writes it: name | shape | layout. */
static void row_of(const q3_tensor_def *def, const char *prefix, char *out, size_t cap)
{
    char shape[64];
    if (def->cols == Q3_DIM_ONE)
        snprintf(shape, sizeof shape, "%s", symbol(def->rows));
    else
        snprintf(shape, sizeof shape, "%s × %s", symbol(def->rows), symbol(def->cols));
    snprintf(out, cap, "%s%s%s | %s | %s", prefix, def->name,
             def->flags & Q3_TDEF_UNTIED_ONLY ? " (only when tie_word_embeddings is 0)" : "", shape,
             def->cols == Q3_DIM_ONE ? "row-major" : "R16C32");
}

static void test_table_is_spec(void **state)
{
    (void)state;
    FILE *fp = fopen("spec.md", "r");
    assert_non_null(fp);
    char spec[64][512];
    int n_spec = 0;
    char line[512];
    while (fgets(line, sizeof line, fp) && n_spec < 64) {
        if (strncmp(line, "| model.", 8) != 0 && strncmp(line, "| lm_head", 9) != 0) continue;
        line[strcspn(line, "\n")] = 0;
        size_t len = strlen(line);
        assert_true(len > 4 && strcmp(line + len - 2, " |") == 0);
        line[len - 2] = 0;
        snprintf(spec[n_spec++], sizeof spec[0], "%s", line + 2);
    }
    fclose(fp);

    const q3_arch *a = &q3_arch_qwen3;
    char ours[64][256];
    int n = 0;
    for (int after = 0; after <= 1; after++) {
        if (after)
            for (uint32_t i = 0; i < a->n_layer; i++) row_of(&a->layer[i], "model.layers.{l}.", ours[n++], 256);
        for (uint32_t i = 0; i < a->n_model; i++)
            if (!!(a->model[i].flags & Q3_TDEF_AFTER_LAYERS) == after) row_of(&a->model[i], "", ours[n++], 256);
    }
    assert_int_equal(n, n_spec);
    for (int i = 0; i < n; i++)
        if (strcmp(ours[i], spec[i]) != 0) fail_msg("row %d: table '%s', spec.md '%s'", i, ours[i], spec[i]);
}

static void test_specs_follow_config(void **state)
{
    (void)state;
    q3_config c = {.vocab_size = 100, .hidden_size = 64, .intermediate_size = 96, .num_layers = 2, .num_heads = 4,
                   .num_kv_heads = 2, .head_dim = 16, .tie_word_embeddings = 1};
    q3_tensor_spec *s;
    uint32_t n;
    q3_err err = {{0}};
    assert_int_equal(q3_arch_tensor_specs(&q3_arch_qwen3, &c, &s, &n, &err), 0);
    assert_int_equal(n, 2 + 2 * 11);
    assert_string_equal(s[0].name, "model.embed_tokens.weight");
    assert_string_equal(s[1].name, "model.layers.0.input_layernorm.weight");
    assert_string_equal(s[2].name, "model.layers.0.self_attn.q_proj.weight");
    assert_int_equal(s[2].shape[0], 64);
    assert_int_equal(s[2].shape[1], 64);
    assert_int_equal(s[2].layout, Q3_LAYOUT_R16C32);
    assert_string_equal(s[14].name, "model.layers.1.self_attn.k_proj.weight");
    assert_int_equal(s[14].shape[0], 32);
    assert_string_equal(s[n - 1].name, "model.norm.weight");
    assert_int_equal(s[n - 1].ndim, 1);
    assert_int_equal(s[n - 1].layout, Q3_LAYOUT_ROWMAJOR);
    free(s);
    c.tie_word_embeddings = 0;
    assert_int_equal(q3_arch_tensor_specs(&q3_arch_qwen3, &c, &s, &n, &err), 0);
    assert_int_equal(n, 3 + 2 * 11);
    assert_string_equal(s[n - 1].name, "lm_head.weight");
    assert_int_equal(s[n - 1].shape[0], 100);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_is_spec),
        cmocka_unit_test(test_specs_follow_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
