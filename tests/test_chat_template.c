/* test_chat_template.c - Qwen3's chat template against transformers'
 * apply_chat_template goldens: identical text and identical ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../convert/hf_tokenizer.h"
#include "../runtime/chat_template.h"
#include "../runtime/tokenizer.h"

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    s[n] = 0;
    fclose(f);
    return s;
}

static const char *build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Every golden: identical text, then identical ids through the tokenizer. */
static void render_goldens(const char *tpl, size_t tpl_len, q3_tokenizer *tk)
{
    char *text = read_text("tests/fixtures/goldens/chat_template.json");
    assert_non_null(text);
    cJSON *g = cJSON_Parse(text);
    assert_non_null(g);
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, "cases"))
    {
        const cJSON *ms = cJSON_GetObjectItem(c, "messages");
        size_t n = (size_t)cJSON_GetArraySize(ms);
        q3_chat_message *msgs = calloc(n, sizeof *msgs);
        for (size_t i = 0; i < n; i++) {
            const cJSON *m = cJSON_GetArrayItem(ms, (int)i);
            msgs[i].role = cJSON_GetObjectItem(m, "role")->valuestring;
            msgs[i].content = cJSON_GetObjectItem(m, "content")->valuestring;
        }
        char *out;
        size_t len;
        q3_err err;
        int think = cJSON_IsTrue(cJSON_GetObjectItem(c, "enable_thinking"));
        if (q3_chat_render(tpl, tpl_len, msgs, n, 1, think, &out, &len, &err)) fail_msg("%s", err.msg);
        assert_string_equal(out, cJSON_GetObjectItem(c, "text")->valuestring);
        assert_int_equal(len, strlen(out));
        int32_t *ids;
        size_t n_ids;
        assert_int_equal(q3_tokenize(tk, out, len, &ids, &n_ids, &err), 0);
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        assert_int_equal(n_ids, cJSON_GetArraySize(want));
        for (size_t i = 0; i < n_ids; i++) assert_int_equal(ids[i], cJSON_GetArrayItem(want, (int)i)->valueint);
        free(ids);
        free(out);
        free(msgs);
        n_cases++;
    }
    assert_int_equal(n_cases, 8);
    cJSON_Delete(g);
    free(text);
}

/* hf-tiny: the template from chat_template.jinja (transformers 5). */
static void test_goldens_jinja(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fixtures/hf-tiny", build_dir());
    q3_tokdata td;
    q3_err err;
    if (q3_hf_tokenizer_load(dir, &td, &err)) fail_msg("%s", err.msg);
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    assert_non_null(tk);
    assert_int_equal(q3_chat_template_kind(td.chat_template.text, td.chat_template.len), Q3_CHAT_QWEN3);
    render_goldens(td.chat_template.text, td.chat_template.len, tk);
    q3_tokenizer_free(tk);
    q3_tokdata_free(&td);
}

/* The published files: tokenizer.json + tokenizer_config.json with the template inline. */
static void test_goldens_inline(void **state)
{
    (void)state;
    char dir[] = "/tmp/q3_chat_XXXXXX", a[600], b[600], src[600];
    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof a, "%s/tokenizer.json", dir);
    snprintf(b, sizeof b, "%s/tokenizer_config.json", dir);
    snprintf(src, sizeof src, "%s/fixtures/tokenizer.json", build_dir());
    char *abs_src = realpath(src, NULL), *abs_cfg = realpath("tests/fixtures/tokenizer_config.json", NULL);
    assert_non_null(abs_src);
    assert_non_null(abs_cfg);
    assert_int_equal(symlink(abs_src, a), 0);
    assert_int_equal(symlink(abs_cfg, b), 0);
    q3_tokdata td;
    q3_err err;
    int rc = q3_hf_tokenizer_load(dir, &td, &err);
    unlink(a);
    unlink(b);
    rmdir(dir);
    free(abs_src);
    free(abs_cfg);
    if (rc) fail_msg("%s", err.msg);
    assert_true(td.chat_template.len > 1000);
    assert_int_equal(td.eos_token.len, strlen("<|im_end|>"));
    assert_memory_equal(td.eos_token.text, "<|im_end|>", td.eos_token.len);
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    assert_non_null(tk);
    render_goldens(td.chat_template.text, td.chat_template.len, tk);
    q3_tokenizer_free(tk);
    q3_tokdata_free(&td);
}

/* Qwen3's template, from the published tokenizer_config.json. */
static char *qwen3_template(void)
{
    char *text = read_text("tests/fixtures/tokenizer_config.json");
    assert_non_null(text);
    cJSON *cfg = cJSON_Parse(text);
    assert_non_null(cfg);
    char *tpl = strdup(cJSON_GetObjectItem(cfg, "chat_template")->valuestring);
    cJSON_Delete(cfg);
    free(text);
    return tpl;
}

static void expect_render(const char *tpl, const q3_chat_message *msgs, size_t n, int gen, int think, const char *want)
{
    char *out;
    size_t len;
    q3_err err;
    if (q3_chat_render(tpl, strlen(tpl), msgs, n, gen, think, &out, &len, &err)) fail_msg("%s", err.msg);
    assert_string_equal(out, want);
    free(out);
}

/* Branches the goldens do not reach: reasoning kept only after the last real
 * user query, tool results grouped in one user turn (and not counted as a
 * query), a later system turn, nested think markers. The expected strings are
 * what jinja2 3.1 renders from the published template (trim_blocks,
 * lstrip_blocks, as transformers sets it up). */
static void test_template_branches(void **state)
{
    (void)state;
    char *tpl = qwen3_template();
    q3_chat_message a[] = {{"user", "Hi"}, {"assistant", "<think>\nhmm\n</think>\n\nHello"}};
    expect_render(tpl, a, 2, 0, 1,
                  "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\nHello<|im_end|>\n");
    q3_chat_message b[] = {{"user", "Q"},
                           {"assistant", "<think>\nplan\n</think>\n\ncall"},
                           {"tool", "42"},
                           {"tool", "43"},
                           {"assistant", "\n\nno think here"},
                           {"system", "late"}};
    expect_render(tpl, b, 6, 1, 0,
                  "<|im_start|>user\nQ<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\nplan\n</think>\n\ncall<|im_end|>\n"
                  "<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\n43\n</tool_response><|im_end|>\n"
                  "<|im_start|>assistant\n\n\nno think here<|im_end|>\n"
                  "<|im_start|>system\nlate<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    /* A user turn that wraps a tool response is not a query either. */
    q3_chat_message c[] = {{"user", "Q"}, {"user", "<tool_response>x</tool_response>"}, {"assistant", "A"}};
    expect_render(tpl, c, 3, 0, 1,
                  "<|im_start|>user\nQ<|im_end|>\n<|im_start|>user\n<tool_response>x</tool_response><|im_end|>\n"
                  "<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n");
    /* Nested think markers: first </think> ends the reasoning, the last starts the answer. */
    q3_chat_message d[] = {{"user", "Q"}, {"assistant", "x<think>\n\nr1\n</think>mid</think>\n\nans"}, {"user", "Q2"}};
    expect_render(tpl, d, 3, 0, 1,
                  "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nans<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n");
    char *out;
    size_t len;
    q3_err err;
    assert_int_equal(q3_chat_render(tpl, strlen(tpl), NULL, 0, 1, 1, &out, &len, &err), -1); /* jinja2 fails too */
    assert_non_null(strstr(err.msg, "no messages"));
    free(tpl);
}

static void test_template_kinds(void **state)
{
    (void)state;
    char *tpl = qwen3_template();
    q3_chat_message msgs[] = {{"system", "S"}, {"user", "U"}};
    char *out;
    size_t len;
    q3_err err;
    /* A plain ChatML template renders plain turns, thinking or not. */
    const char *chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                         "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    assert_int_equal(q3_chat_template_kind(chatml, strlen(chatml)), Q3_CHAT_CHATML);
    expect_render(chatml, msgs, 2, 1, 0, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
    /* Qwen3's template with one branch changed is not rendered as Qwen3's. */
    char *p = strstr(tpl, "reasoning_content.strip('\\n')");
    assert_non_null(p);
    memcpy(p, "reasoning_content.strip('\\t')", strlen("reasoning_content.strip('\\t')"));
    assert_int_equal(q3_chat_template_kind(tpl, strlen(tpl)), Q3_CHAT_UNKNOWN);
    assert_int_equal(q3_chat_render(tpl, strlen(tpl), msgs, 2, 1, 1, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "not Qwen3's template"));
    assert_int_equal(q3_chat_render("{{ messages }}", 14, msgs, 2, 1, 1, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "not ChatML"));
    assert_int_equal(q3_chat_render("", 0, msgs, 2, 1, 1, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "has none"));
    q3_chat_message bad[] = {{"robot", "x"}};
    assert_int_equal(q3_chat_render(chatml, strlen(chatml), bad, 1, 1, 1, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "message 0"));
    free(tpl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens_jinja),
        cmocka_unit_test(test_goldens_inline),
        cmocka_unit_test(test_template_branches),
        cmocka_unit_test(test_template_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
