/* test_tokenizer.c - the tokenizer against HF tokenizers' goldens: identical ids
 * and identical decoded text for every case, built from the HF files and from
 * a converted .q3 (the TOKENIZER section); streaming decode; edge inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../convert/convert.h"
#include "../convert/hf_tokenizer.h"
#include "../runtime/tokenizer.h"

static char *read_text(const char *path, size_t *len)
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
    if (len) *len = (size_t)n;
    return s;
}

static q3_tokenizer *load(const char *model)
{
    char dir[512];
    const char *b = getenv("BUILD");
    snprintf(dir, sizeof dir, "%s/fixtures/%s", b && *b ? b : "build", model);
    q3_tokdata td;
    q3_err err;
    if (q3_hf_tokenizer_load(dir, &td, &err)) fail_msg("%s", err.msg);
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    if (!tk) fail_msg("%s", err.msg);
    q3_tokdata_free(&td);
    return tk;
}

static void check_ids(const char *what, const int32_t *got, size_t n_got, const cJSON *want)
{
    size_t n = (size_t)cJSON_GetArraySize(want);
    for (size_t i = 0; i < n && i < n_got; i++)
        if (got[i] != cJSON_GetArrayItem(want, (int)i)->valueint)
            fail_msg("%s: id %zu is %d, golden %d", what, i, got[i], cJSON_GetArrayItem(want, (int)i)->valueint);
    if (n != n_got) fail_msg("%s: %zu ids, golden %zu", what, n_got, n);
}

static void run_shared_goldens(q3_tokenizer *tk)
{
    char *text = read_text("tests/fixtures/goldens/tokenizer_shared.json", NULL);
    assert_non_null(text);
    cJSON *g = cJSON_Parse(text);
    assert_non_null(g);
    int n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, "cases"))
    {
        const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
        int32_t *ids;
        size_t n;
        q3_err err;
        char what[128];
        snprintf(what, sizeof what, "case %d (%.40s)", n_cases, s);
        assert_int_equal(q3_tokenize(tk, s, strlen(s), &ids, &n, &err), 0);
        check_ids(what, ids, n, cJSON_GetObjectItem(c, "ids"));
        char *dec;
        size_t dec_len;
        assert_int_equal(q3_detokenize(tk, ids, n, 0, &dec, &dec_len, &err), 0);
        const char *want = cJSON_GetObjectItem(c, "decoded")->valuestring;
        if (strcmp(dec, want) != 0) fail_msg("%s: decoded '%s', golden '%s'", what, dec, want);
        free(dec);
        free(ids);
        n_cases++;
    }
    print_message("%d tokenizer cases identical\n", n_cases);
    assert_int_equal(n_cases, 332);
    cJSON_Delete(g);
    free(text);
}

static void test_shared_goldens(void **state)
{
    (void)state;
    q3_tokenizer *tk = load("hf-tiny");
    run_shared_goldens(tk);
    q3_tokenizer_free(tk);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* The same goldens through a converted .q3: q3_convert, q3_read_tokenizer, create. */
static void test_q3_goldens(void **state)
{
    (void)state;
    char dir[512], path[] = "/tmp/q3_tok_XXXXXX.q3";
    const char *b = getenv("BUILD");
    snprintf(dir, sizeof dir, "%s/fixtures/hf-tiny", b && *b ? b : "build");
    int fd = mkstemps(path, 3);
    assert_true(fd >= 0);
    close(fd);
    q3_err err;
    if (q3_convert(dir, path, NULL, NULL, &err)) fail_msg("%s", err.msg);
    double t0 = now_ms();
    q3_file f;
    q3_tokdata td;
    if (q3_open(&f, path, 0, &err) || q3_read_tokenizer(&f, &td, &err)) fail_msg("%s", err.msg);
    double t1 = now_ms();
    q3_tokenizer *tk = q3_tokenizer_create(&td, &err);
    if (!tk) fail_msg("%s", err.msg);
    double t2 = now_ms();
    print_message("load from .q3: %.1f ms open + read section, %.1f ms build (151k vocab + 151k merges)\n", t1 - t0,
                  t2 - t1);
    /* The chat template travels with it (hf-tiny has it in chat_template.jinja). */
    char jpath[600];
    size_t jlen;
    snprintf(jpath, sizeof jpath, "%s/chat_template.jinja", dir);
    char *jinja = read_text(jpath, &jlen);
    assert_non_null(jinja);
    assert_int_equal(td.chat_template.len, jlen);
    assert_memory_equal(td.chat_template.text, jinja, jlen);
    free(jinja);
    run_shared_goldens(tk);
    q3_tokenizer_free(tk);
    q3_tokdata_free(&td);
    q3_close(&f);
    unlink(path);
}

/* demo-tiny has its own 8k-token BPE: its golden prompts' ids. */
static void test_demo_tiny_prompts(void **state)
{
    (void)state;
    q3_tokenizer *tk = load("demo-tiny");
    char *text = read_text("tests/fixtures/goldens/demo-tiny.golden.json", NULL);
    cJSON *g = cJSON_Parse(text);
    assert_non_null(g);
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, "cases"))
    {
        const char *s = cJSON_GetObjectItem(c, "prompt")->valuestring;
        int32_t *ids;
        size_t n;
        q3_err err;
        assert_int_equal(q3_tokenize(tk, s, strlen(s), &ids, &n, &err), 0);
        check_ids(c->string, ids, n, cJSON_GetObjectItem(c, "ids"));
        free(ids);
        n_cases++;
    }
    assert_true(n_cases > 0);
    cJSON_Delete(g);
    free(text);
    q3_tokenizer_free(tk);
}

/* A character split across tokens comes out once, whole; bad bytes become U+FFFD. */
static void test_stream_decoder(void **state)
{
    (void)state;
    q3_utf8_stream s = {0};
    char out[64];
    const char *euro = "\xe2\x82\xac";
    assert_int_equal(q3_utf8_stream_push(&s, euro, 1, out, sizeof out), 0);
    assert_int_equal(q3_utf8_stream_push(&s, euro + 1, 1, out, sizeof out), 0);
    size_t n = q3_utf8_stream_push(&s, euro + 2, 1, out, sizeof out);
    assert_int_equal(n, 3);
    assert_memory_equal(out, euro, 3);
    n = q3_utf8_stream_push(&s, "a\xe2\x82", 3, out, sizeof out);
    assert_int_equal(n, 1);
    n = q3_utf8_stream_push(&s, "b", 1, out, sizeof out); /* the cut sequence was invalid */
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\xef\xbf\xbd" "b", 4);
    n = q3_utf8_stream_push(&s, "\xff", 1, out, sizeof out);
    assert_int_equal(n, 3);
    q3_utf8_stream_push(&s, "\xf0\x9f", 2, out, sizeof out);
    assert_int_equal(q3_utf8_stream_flush(&s, out, sizeof out), 3);
}

/* Invalid UTF-8, empty input and many MB: defined results, no crash. */
static void test_edge_inputs(void **state)
{
    (void)state;
    q3_tokenizer *tk = load("hf-tiny");
    int32_t *ids;
    size_t n;
    q3_err err;
    assert_int_equal(q3_tokenize(tk, "", 0, &ids, &n, &err), 0);
    assert_int_equal(n, 0);
    free(ids);
    const char bad[] = "ab\xff\xfe" "cd\xe2\x82";
    assert_int_equal(q3_tokenize(tk, bad, sizeof bad - 1, &ids, &n, &err), 0);
    char *dec;
    size_t dec_len;
    assert_int_equal(q3_detokenize(tk, ids, n, 0, &dec, &dec_len, &err), 0);
    assert_string_equal(dec, "ab\xef\xbf\xbd\xef\xbf\xbd" "cd\xef\xbf\xbd");
    free(dec);
    free(ids);
    size_t big = 8u << 20;
    char *s = malloc(big);
    for (size_t i = 0; i < big; i++) s[i] = "The quick brown fox, 1234 jumps!\n"[i % 33];
    s[big / 2] = 'a';
    memset(s + 1000, 'x', 100000); /* one very long word: BPE must stay O(n log n) */
    memset(s + 200000, ' ', 300000); /* long runs for the regex: \s+(?!\S), \s*[\r\n]+, \p{N} */
    memset(s + 600000, '\n', 300000);
    memset(s + 1000000, '7', 300000);
    assert_int_equal(q3_tokenize(tk, s, big, &ids, &n, &err), 0);
    assert_true(n > big / 10);
    assert_int_equal(q3_detokenize(tk, ids, n, 0, &dec, &dec_len, &err), 0);
    assert_int_equal(dec_len, big);
    assert_memory_equal(dec, s, big);
    free(dec);
    free(ids);
    free(s);
    assert_int_equal(q3_token_lookup(tk, "<|im_end|>", 10), 151645);
    assert_true(q3_token_is_special(tk, 151645));
    q3_tokenizer_free(tk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_goldens),
        cmocka_unit_test(test_q3_goldens),
        cmocka_unit_test(test_demo_tiny_prompts),
        cmocka_unit_test(test_stream_decoder),
        cmocka_unit_test(test_edge_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
