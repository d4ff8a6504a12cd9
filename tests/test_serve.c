/* test_serve.c - q3serve's pure parts: the request parser (every field, its domain,
 * the OpenAI error it gives), the stop-sequence matcher over split tokens, the
 * prefill chunk plan, and the response objects and SSE framing as JSON a client reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../serve/serve_openai.h"
#include "../serve/serve_request.h"
#include "../serve/serve_sched.h"
#include "../serve/serve_sse.h"
#include "../serve/serve_stop.h"

static int parse(const char *body, int endpoint, serve_request *r, serve_error *e)
{
    return serve_request_parse(body, strlen(body), endpoint, r, e);
}

/* The body is refused with 400 naming param ("" for none) and saying want in its message. */
static void refused(const char *body, int endpoint, const char *param, const char *want)
{
    serve_request r;
    serve_error e;
    if (parse(body, endpoint, &r, &e) == 0) fail_msg("accepted: %s", body);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    if (strcmp(e.param, param) != 0) fail_msg("%s: param '%s', expected '%s' (%s)", body, e.param, param, e.message);
    if (!strstr(e.message, want)) fail_msg("%s: message '%s' lacks '%s'", body, e.message, want);
}

static void test_chat_fields(void **s)
{
    (void)s;
    serve_request r;
    serve_error e;
    const char *body = "{\"model\":\"x\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hel\"},{\"type\":\"text\",\"text\":\"lo\"}]},"
                       "{\"role\":\"assistant\",\"content\":\"Hi\"},{\"role\":\"user\",\"content\":\"again\"}],"
                       "\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,"
                       "\"repetition_penalty\":1.1,\"seed\":-1,\"stop\":[\"\\n\\n\",\"END\"],\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"chat_template_kwargs\":{\"enable_thinking\":false},"
                       "\"frequency_penalty\":0,\"presence_penalty\":0,\"n\":1,\"logprobs\":false,\"user\":\"u\"}";
    assert_int_equal(parse(body, SERVE_CHAT, &r, &e), 0);
    assert_int_equal(r.n_msgs, 4);
    assert_string_equal(r.msgs[0].role, "system"); /* developer is the system turn */
    assert_string_equal(r.msgs[1].content, "Hello");
    assert_string_equal(r.msgs[2].role, "assistant");
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.sp.temperature == 0.5f && r.sp.top_p == 0.9f && r.sp.top_k == 40 && r.sp.min_p == 0.05f);
    assert_true(r.sp.repetition_penalty == 1.1f);
    assert_true(r.sp.seed == UINT64_MAX);
    assert_int_equal(r.have, SERVE_HAVE_TEMPERATURE | SERVE_HAVE_TOP_P | SERVE_HAVE_TOP_K | SERVE_HAVE_MIN_P |
                                 SERVE_HAVE_PENALTY | SERVE_HAVE_SEED);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[0], "\n\n");
    assert_true(r.stream && r.include_usage);
    assert_int_equal(r.thinking, 0);
    serve_request_free(&r);
    /* The minimum: defaults everywhere. */
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":null,\"max_tokens\":null}",
                           SERVE_CHAT, &r, &e),
                     0);
    assert_true(r.have == 0 && r.max_tokens == 0 && r.n_stop == 0 && !r.stream && r.thinking == -1);
    serve_request_free(&r);
}

static void test_completion_fields(void **s)
{
    (void)s;
    serve_request r;
    serve_error e;
    assert_int_equal(parse("{\"prompt\":\"Once\",\"stop\":\"\\n\",\"max_completion_tokens\":3}", SERVE_COMPLETIONS,
                           &r, &e),
                     0);
    assert_string_equal(r.prompt, "Once");
    assert_int_equal(r.n_stop, 1);
    assert_int_equal(r.max_tokens, 3);
    serve_request_free(&r);
    assert_int_equal(parse("{\"prompt\":[\"one\"]}", SERVE_COMPLETIONS, &r, &e), 0);
    assert_string_equal(r.prompt, "one");
    serve_request_free(&r);
    assert_int_equal(parse("{\"prompt\":\"\"}", SERVE_COMPLETIONS, &r, &e), 0);
    serve_request_free(&r);
}

static void test_refusals(void **s)
{
    (void)s;
    refused("", SERVE_CHAT, "", "does not parse");
    refused("{\"messages\":[", SERVE_CHAT, "", "does not parse");
    refused("[1,2]", SERVE_CHAT, "", "another JSON value");
    refused("{}", SERVE_CHAT, "messages", "required");
    refused("{\"messages\":[]}", SERVE_CHAT, "messages", "non-empty");
    refused("{\"messages\":\"hi\"}", SERVE_CHAT, "messages", "non-empty");
    refused("{\"messages\":[{\"content\":\"x\"}]}", SERVE_CHAT, "messages[0]", "role");
    refused("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", SERVE_CHAT, "messages[0]", "not supported");
    refused("{\"messages\":[{\"role\":\"user\"}]}", SERVE_CHAT, "messages[0].content", "required");
    refused("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", SERVE_CHAT, "messages[0].content", "string");
    refused("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", SERVE_CHAT,
            "messages[0].content", "text");
    refused("{}", SERVE_COMPLETIONS, "prompt", "required");
    refused("{\"prompt\":[1,2]}", SERVE_COMPLETIONS, "prompt", "string");
    refused("{\"prompt\":[\"a\",\"b\"]}", SERVE_COMPLETIONS, "prompt", "one string");
#define P "{\"prompt\":\"x\","
    refused(P "\"temperature\":\"hot\"}", SERVE_COMPLETIONS, "temperature", "number");
    refused(P "\"temperature\":2.5}", SERVE_COMPLETIONS, "temperature", "between 0 and 2");
    refused(P "\"temperature\":-0.1}", SERVE_COMPLETIONS, "temperature", "between");
    refused(P "\"top_p\":1.5}", SERVE_COMPLETIONS, "top_p", "between 0 and 1");
    refused(P "\"min_p\":-1}", SERVE_COMPLETIONS, "min_p", "between");
    refused(P "\"top_k\":2.5}", SERVE_COMPLETIONS, "top_k", "integer");
    refused(P "\"top_k\":-1}", SERVE_COMPLETIONS, "top_k", "between");
    refused(P "\"max_tokens\":0}", SERVE_COMPLETIONS, "max_tokens", "between 1");
    refused(P "\"max_tokens\":1e12}", SERVE_COMPLETIONS, "max_tokens", "between");
    refused(P "\"seed\":0.5}", SERVE_COMPLETIONS, "seed", "integer");
    refused(P "\"repetition_penalty\":0}", SERVE_COMPLETIONS, "repetition_penalty", "between");
    refused(P "\"frequency_penalty\":0.5}", SERVE_COMPLETIONS, "frequency_penalty", "repetition_penalty");
    refused(P "\"presence_penalty\":3}", SERVE_COMPLETIONS, "presence_penalty", "between");
    refused(P "\"n\":2}", SERVE_COMPLETIONS, "n", "between 1 and 1");
    refused(P "\"logprobs\":true}", SERVE_COMPLETIONS, "logprobs", "not supported");
    refused(P "\"logprobs\":3}", SERVE_COMPLETIONS, "logprobs", "not supported");
    refused(P "\"stream\":1}", SERVE_COMPLETIONS, "stream", "true or false");
    refused(P "\"stream_options\":true}", SERVE_COMPLETIONS, "stream_options", "object");
    refused(P "\"stream_options\":{\"include_usage\":\"yes\"}}", SERVE_COMPLETIONS, "include_usage", "true or false");
    refused(P "\"stop\":\"\"}", SERVE_COMPLETIONS, "stop", "empty");
    refused(P "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", SERVE_COMPLETIONS, "stop", "up to 4");
    refused(P "\"stop\":[\"a\",7]}", SERVE_COMPLETIONS, "stop", "non-empty strings");
    refused(P "\"chat_template_kwargs\":[]}", SERVE_COMPLETIONS, "chat_template_kwargs", "object");
#undef P
}

/* Feed the pieces one by one; returns everything released, and whether a stop matched. */
static char *stream_through(char *const *stop, int n_stop, const char *const *pieces, int n, int *matched)
{
    serve_stop st;
    serve_stop_init(&st, stop, n_stop);
    static char all[256];
    size_t len = 0;
    *matched = 0;
    for (int i = 0; i < n && !*matched; i++) {
        const char *out;
        size_t n_out;
        int rc = serve_stop_push(&st, pieces[i], strlen(pieces[i]), &out, &n_out);
        assert_true(rc >= 0);
        memcpy(all + len, out, n_out);
        len += n_out;
        *matched = rc == 1;
    }
    if (!*matched) {
        const char *out;
        size_t n_out;
        serve_stop_flush(&st, &out, &n_out);
        memcpy(all + len, out, n_out);
        len += n_out;
    }
    all[len] = 0;
    serve_stop_free(&st);
    return all;
}

static void test_stop_sequences(void **s)
{
    (void)s;
    char *stops[] = {"END", "\n\n"};
    int m;
    const char *split[] = {"one E", "N", "D two"}; /* split across three tokens */
    assert_string_equal(stream_through(stops, 2, split, 3, &m), "one ");
    assert_true(m);
    const char *almost[] = {"E", "N", "x", "EN"}; /* a prefix that did not finish, and one at the end */
    assert_string_equal(stream_through(stops, 2, almost, 4, &m), "ENxEN");
    assert_false(m);
    const char *nl[] = {"a\n", "\nb"};
    assert_string_equal(stream_through(stops, 2, nl, 2, &m), "a");
    assert_true(m);
    const char *earliest[] = {"x\n\nEND"}; /* the earlier of two matches in one piece */
    assert_string_equal(stream_through(stops, 2, earliest, 1, &m), "x");
    const char *plain[] = {"no ", "stops"};
    assert_string_equal(stream_through(NULL, 0, plain, 2, &m), "no stops");
    /* Held text is released as soon as it cannot begin a stop sequence. */
    serve_stop st;
    serve_stop_init(&st, stops, 2);
    const char *out;
    size_t n;
    assert_int_equal(serve_stop_push(&st, "abE", 3, &out, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(serve_stop_push(&st, "x", 1, &out, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "Ex", 2);
    serve_stop_free(&st);
}

static void test_prefill_chunks(void **s)
{
    (void)s;
    /* (fed, n, chunk, pass) -> next chunk */
    assert_int_equal(serve_prefill_chunk(0, 100, 64, 512), 64);
    assert_int_equal(serve_prefill_chunk(64, 100, 64, 512), 36);
    assert_int_equal(serve_prefill_chunk(0, 66, 64, 512), 66);   /* a 2-token tail joins the chunk before */
    assert_int_equal(serve_prefill_chunk(0, 68, 64, 512), 64);   /* a 4-token tail is a GEMM of its own */
    assert_int_equal(serve_prefill_chunk(0, 3, 64, 512), 3);     /* a short prompt: as one q3_prefill */
    assert_int_equal(serve_prefill_chunk(448, 513, 64, 512), 64); /* never across a pass ... */
    assert_int_equal(serve_prefill_chunk(512, 513, 64, 512), 1); /* ... so the pass's lone token stays alone */
    assert_int_equal(serve_prefill_chunk(448, 514, 62, 512), 64); /* the tail of the pass, not of the prompt */
    /* Every plan covers the prompt exactly with chunks of at most chunk + 3. */
    for (int n = 1; n < 1100; n += 7)
        for (int fed = 0, k; fed < n; fed += k) {
            k = serve_prefill_chunk(fed, n, 32, 512);
            assert_true(k >= 1 && k <= 35 && fed + k <= n);
            assert_true(fed / 512 == (fed + k - 1) / 512);
        }
}

static cJSON *parse_json(const char *s)
{
    cJSON *j = cJSON_Parse(s);
    if (!j) fail_msg("not JSON: %s", s);
    return j;
}

static void test_openai_objects(void **s)
{
    (void)s;
    serve_reply chat = {SERVE_CHAT, "chatcmpl-1", "m", 42}, cmpl = {SERVE_COMPLETIONS, "cmpl-1", "m", 42};
    char *t = serve_openai_completion(&chat, "a\"b\n\xc3\xa9", 6, SERVE_FINISH_LENGTH, (serve_usage){3, 4});
    cJSON *j = parse_json(t);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "message"), "content")->valuestring, "a\"b\n\xc3\xa9");
    assert_string_equal(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "length");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valueint, 7);
    cJSON_Delete(j);
    free(t);
    t = serve_openai_completion(&cmpl, "xy", 1, SERVE_FINISH_STOP, (serve_usage){1, 1});
    j = parse_json(t);
    c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(c0, "text")->valuestring, "x");
    assert_string_equal(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "stop");
    cJSON_Delete(j);
    free(t);
    /* Stream: the first chat chunk has the role, the last the finish reason and an empty delta. */
    t = serve_openai_chunk(&chat, "", 0, 1, SERVE_RUNNING, NULL);
    j = parse_json(t);
    c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "role")->valuestring, "assistant");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(c0, "finish_reason")));
    cJSON_Delete(j);
    free(t);
    t = serve_openai_chunk(&chat, "", 0, 0, SERVE_FINISH_STOP, NULL);
    j = parse_json(t);
    c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "content"));
    assert_string_equal(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "stop");
    cJSON_Delete(j);
    free(t);
    serve_usage u = {2, 5};
    t = serve_openai_chunk(&cmpl, "", 0, 0, SERVE_FINISH_STOP, &u);
    j = parse_json(t);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")), 0);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint, 5);
    cJSON_Delete(j);
    free(t);
    serve_error e;
    serve_error_set(&e, 400, "invalid_request_error", "top_p", "bad %d", 1);
    t = serve_openai_error(&e);
    assert_string_equal(t, "{\"error\":{\"message\":\"bad 1\",\"type\":\"invalid_request_error\",\"param\":\"top_p\","
                           "\"code\":null}}");
    free(t);
    /* SSE framing, taken in pieces. */
    serve_sse w = {0};
    assert_int_equal(serve_sse_event(&w, "{\"a\":1}"), 0);
    assert_int_equal(serve_sse_done(&w), 0);
    char buf[64];
    size_t n = serve_sse_take(&w, buf, 5);
    n += serve_sse_take(&w, buf + n, sizeof buf - n);
    buf[n] = 0;
    assert_string_equal(buf, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    assert_int_equal(serve_sse_waiting(&w), 0);
    serve_sse_free(&w);
}

int main(void)
{
    const char *only = getenv("Q3_TEST_FILTER");
    if (only && *only) cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_fields),    cmocka_unit_test(test_completion_fields),
        cmocka_unit_test(test_refusals),       cmocka_unit_test(test_stop_sequences),
        cmocka_unit_test(test_prefill_chunks), cmocka_unit_test(test_openai_objects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
