/* test_lib.c - the library through include/q3.h alone: several contexts on one
 * model at once (threads, each its own cache) give each one's single-context
 * tokens, on the CPU and on OpenCL (PoCL in CI); KV truncation, the seeded
 * sampler, the chat turn's end, and the error codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../include/q3.h"

#define N_GEN 12
#define N_PROMPTS 2

static const char *const prompts[N_PROMPTS] = {"The GNU General Public License", "def parse(self, text):"};

static q3_model *open_model(void)
{
    const char *b = getenv("BUILD");
    char path[512];
    snprintf(path, sizeof path, "%s/models/demo-tiny.q3", b && *b ? b : "build");
    q3_model *m;
    q3_err err = {{0}};
    if (q3_model_open(path, NULL, &m, &err)) fail_msg("%s", err.msg);
    return m;
}

typedef struct {
    q3_model *m;
    const char *backend;
    const char *prompt;
    int32_t ids[N_GEN];
    int rc;
    char msg[512];
} job;

/* Greedy continuation of the prompt on a fresh context. */
static void *generate(void *arg)
{
    job *j = arg;
    q3_err err = {{0}};
    const q3_tokenizer *tk;
    int32_t *p = NULL;
    size_t n = 0;
    q3_context *c = NULL;
    q3_context_params cp = q3_context_default_params();
    cp.backend = j->backend;
    cp.n_ctx = 64;
    cp.n_threads = 1;
    j->rc = q3_model_tokenizer(j->m, &tk, &err);
    if (!j->rc) j->rc = q3_tokenize(tk, j->prompt, strlen(j->prompt), &p, &n, &err);
    if (!j->rc) j->rc = q3_context_create(j->m, &cp, &c, &err);
    if (!j->rc) j->rc = q3_prefill(c, p, n, &err);
    for (int i = 0; i < N_GEN && !j->rc; i++) {
        j->ids[i] = q3_argmax(q3_logits(c), q3_model_config(j->m)->vocab_size);
        if (i + 1 < N_GEN) j->rc = q3_decode(c, j->ids[i], &err);
    }
    snprintf(j->msg, sizeof j->msg, "%s", err.msg);
    q3_context_free(c);
    q3_free(p);
    return NULL;
}

static void parallel_equals_single(const char *backend)
{
    q3_model *m = open_model();
    job single[N_PROMPTS], par[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        single[i] = (job){m, backend, prompts[i], {0}, 0, ""};
        generate(&single[i]);
        if (single[i].rc) fail_msg("%s: %s", backend, single[i].msg);
    }
    assert_memory_not_equal(single[0].ids, single[1].ids, sizeof single[0].ids);
    pthread_t th[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        par[i] = (job){m, backend, prompts[i], {0}, 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, generate, &par[i]), 0);
    }
    for (int i = 0; i < N_PROMPTS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_PROMPTS; i++) {
        if (par[i].rc) fail_msg("%s, in parallel: %s", backend, par[i].msg);
        assert_memory_equal(par[i].ids, single[i].ids, sizeof par[i].ids);
    }
    q3_model_close(m);
}

static void test_parallel_cpu(void **s) { (void)s; parallel_equals_single("cpu"); }

/* Every other backend: on OpenCL the contexts share one upload of the weights. */
static void test_parallel_other_backends(void **s)
{
    (void)s;
    for (const char *const *n = q3_backend_names() + 1; *n; n++) parallel_equals_single(*n);
}

/* Truncating the cache to the prompt and decoding again gives the same tokens;
 * the same seed gives the same sampled tokens. */
static void test_truncate_and_sampler(void **s)
{
    (void)s;
    q3_model *m = open_model();
    q3_err err = {{0}};
    q3_context *c;
    assert_int_equal(q3_context_create(m, NULL, &c, &err), Q3_OK);
    assert_string_equal(q3_backend_names()[0], "cpu");
    int32_t prompt[3] = {5, 6, 7};
    int32_t run[2][8];
    q3_sampler_params sp = q3_sampler_defaults(m);
    sp.temperature = 0.9f;
    sp.top_p = 0.95f;
    sp.seed = 42;
    for (int r = 0; r < 2; r++) {
        q3_sampler *smp;
        assert_int_equal(q3_sampler_create(m, &sp, &smp, &err), Q3_OK);
        assert_int_equal(q3_kv_truncate(c, 0, &err), Q3_OK);
        assert_int_equal(q3_prefill(c, prompt, 3, &err), Q3_OK);
        for (int i = 0; i < 8; i++) {
            run[r][i] = q3_sampler_sample(smp, q3_logits(c));
            q3_sampler_accept(smp, run[r][i]);
            assert_int_equal(q3_decode(c, run[r][i], &err), Q3_OK);
        }
        assert_int_equal(q3_context_used(c), 11);
        q3_sampler_destroy(smp);
    }
    assert_memory_equal(run[0], run[1], sizeof run[0]);
    assert_int_equal(q3_kv_truncate(c, 12, &err), Q3_ERROR_ARG);
    q3_context_free(c);
    q3_model_close(m);
}

static void test_errors_and_chat(void **s)
{
    (void)s;
    q3_model *m = open_model();
    q3_err err = {{0}};
    q3_context *c;
    q3_context_params cp = q3_context_default_params();
    cp.backend = "gpu";
    assert_int_equal(q3_context_create(m, &cp, &c, &err), Q3_ERROR_ARG);
    assert_non_null(strstr(err.msg, "available: cpu"));
    cp.backend = NULL;
    cp.n_ctx = 4;
    assert_int_equal(q3_context_create(m, &cp, &c, &err), Q3_OK);
    int32_t five[5] = {1, 2, 3, 4, 5};
    assert_int_equal(q3_prefill(c, five, 5, &err), Q3_ERROR_CONTEXT_FULL);
    assert_non_null(strstr(err.msg, "--ctx 4"));
    assert_int_equal(q3_prefill(c, five, 4, &err), Q3_OK);
    assert_int_equal(q3_decode(c, 1, &err), Q3_ERROR_CONTEXT_FULL);
    q3_context_free(c);
    int32_t *ids;
    size_t n;
    assert_int_equal(q3_chat_end_turn(m, &ids, &n, &err), Q3_OK);
    const q3_tokenizer *tk;
    assert_int_equal(q3_model_tokenizer(m, &tk, &err), Q3_OK);
    assert_int_equal(n, 2);
    assert_true(q3_token_is_special(tk, ids[0]));
    size_t len;
    const char *nl = q3_token_bytes(tk, ids[1], &len);
    assert_true(len == 1 && nl[0] == '\n');
    q3_free(ids);
    q3_model *none;
    assert_int_equal(q3_model_open("/nonexistent.q3", NULL, &none, &err), Q3_ERROR);
    assert_null(none);
    q3_model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_cpu),
        cmocka_unit_test(test_parallel_other_backends),
        cmocka_unit_test(test_truncate_and_sampler),
        cmocka_unit_test(test_errors_and_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
