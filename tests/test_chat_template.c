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

static void test_goldens(void **state)
{
    (void)state;
    char dir[512];
    const char *b = getenv("BUILD");
    snprintf(dir, sizeof dir, "%s/fixtures/hf-tiny", b && *b ? b : "build"); /* template from chat_template.jinja */
    q3_tokdata td;
    q3_err err;
    if (q3_hf_tokenizer_load(dir, &td, &err)) fail_msg("%s", err.msg);
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    assert_non_null(tk);
    char *text = read_text("tests/fixtures/goldens/chat_template.json");
    cJSON *g = cJSON_Parse(text);
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
        int think = cJSON_IsTrue(cJSON_GetObjectItem(c, "enable_thinking"));
        assert_int_equal(q3_chat_render(td.chat_template.text, td.chat_template.len, msgs, n, 1, think, &out, &len, &err), 0);
        assert_string_equal(out, cJSON_GetObjectItem(c, "text")->valuestring);
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
    assert_true(n_cases >= 8);
    cJSON_Delete(g);
    free(text);
    q3_tokenizer_free(tk);
    q3_tokdata_free(&td);
}

/* Reasoning of the turn after the last query is kept; earlier turns lose it. */
static void test_reasoning_after_last_query(void **state)
{
    (void)state;
    const char *tpl = "<|im_start|> ... <think> ...";
    q3_chat_message msgs[] = {{"user", "Hi"}, {"assistant", "<think>\nhmm\n</think>\n\nHello"}};
    char *out;
    size_t len;
    q3_err err;
    assert_int_equal(q3_chat_render(tpl, strlen(tpl), msgs, 2, 0, 1, &out, &len, &err), 0);
    assert_string_equal(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\nHello<|im_end|>\n");
    free(out);
    q3_chat_message bad[] = {{"robot", "x"}};
    assert_int_equal(q3_chat_render(tpl, strlen(tpl), bad, 1, 1, 1, &out, &len, &err), -1);
    assert_int_equal(q3_chat_render("{{ messages }}", 14, msgs, 2, 1, 1, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "not ChatML"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens),
        cmocka_unit_test(test_reasoning_after_last_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
