/* test_lib.c - the library through include/q3.h alone: several contexts on one
 * model at once (threads, each its own cache) give each one's single-context
 * tokens, on the CPU and on OpenCL (PoCL in CI); a batched decode step gives each
 * context its single-context logits; KV truncation, the seeded
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

/* Batched decode (q3_decode_batch): contexts join the batch at different steps (so the
 * batch grows and shrinks, and their positions differ), one has a larger cache; each
 * one's logits at every step are bit for bit its single-context logits. */
#define N_SEQ 4
#define BATCH_STEPS 10
static const char *const seq_prompts[N_SEQ] = {"The GNU General Public License", "def parse(self, text):",
                                               "Once upon a time", "1, 2, 3, 4,"};

static q3_context *context_on(q3_model *m, const char *backend, int n_ctx)
{
    q3_context_params cp = q3_context_default_params();
    cp.backend = backend;
    cp.n_ctx = n_ctx;
    cp.n_threads = 2;
    q3_context *c;
    q3_err err = {{0}};
    if (q3_context_create(m, &cp, &c, &err)) fail_msg("%s: %s", backend, err.msg);
    return c;
}

static void prefill_prompt(q3_model *m, q3_context *c, const char *prompt)
{
    const q3_tokenizer *tk;
    int32_t *p;
    size_t n;
    q3_err err = {{0}};
    if (q3_model_tokenizer(m, &tk, &err) || q3_tokenize(tk, prompt, strlen(prompt), &p, &n, &err) ||
        q3_prefill(c, p, n, &err))
        fail_msg("%s", err.msg);
    q3_free(p);
}

static void batch_equals_single(const char *backend)
{
    q3_model *m = open_model();
    uint32_t V = q3_model_config(m)->vocab_size;
    q3_err err = {{0}};
    /* The reference: each sequence alone, its logits before each of BATCH_STEPS decodes. */
    float *ref = malloc((size_t)N_SEQ * (BATCH_STEPS + 1) * V * sizeof *ref);
    int32_t ids[N_SEQ][BATCH_STEPS + 1];
    assert_non_null(ref);
    for (int s = 0; s < N_SEQ; s++) {
        q3_context *c = context_on(m, backend, 64);
        prefill_prompt(m, c, seq_prompts[s]);
        for (int i = 0; i <= BATCH_STEPS; i++) {
            memcpy(ref + ((size_t)s * (BATCH_STEPS + 1) + i) * V, q3_logits(c), V * sizeof *ref);
            ids[s][i] = q3_argmax(q3_logits(c), V);
            if (i < BATCH_STEPS && q3_decode(c, ids[s][i], &err)) fail_msg("%s", err.msg);
        }
        q3_context_free(c);
    }
    assert_memory_not_equal(ids[0], ids[1], sizeof ids[0]);
    /* Batched: sequence s is prefilled and joins at step s; it leaves after BATCH_STEPS decodes. */
    q3_context *c[N_SEQ];
    int done[N_SEQ] = {0};
    for (int s = 0; s < N_SEQ; s++) c[s] = context_on(m, backend, s == 2 ? 96 : 64);
    for (int step = 0;; step++) {
        q3_context *batch[N_SEQ];
        int32_t tok[N_SEQ];
        int who[N_SEQ], n = 0;
        for (int s = 0; s < N_SEQ; s++) {
            if (s == step) prefill_prompt(m, c[s], seq_prompts[s]);
            if (s > step || done[s] == BATCH_STEPS) continue;
            const float *want = ref + ((size_t)s * (BATCH_STEPS + 1) + done[s]) * V;
            if (memcmp(q3_logits(c[s]), want, V * sizeof *want) != 0)
                fail_msg("%s: sequence %d, step %d: the batch's logits differ from its own", backend, s, done[s]);
            batch[n] = c[s], who[n] = s, tok[n++] = q3_argmax(q3_logits(c[s]), V);
        }
        if (n == 0) break;
        assert_int_equal(q3_decode_batch(batch, tok, (size_t)n, &err), Q3_OK);
        for (int i = 0; i < n; i++) assert_int_equal(tok[i], ids[who[i]][done[who[i]]++]);
    }
    /* Refused before anything runs: a context twice, and a full one. */
    int used = q3_context_used(c[0]);
    q3_context *twice[2] = {c[0], c[0]};
    int32_t two[2] = {1, 2};
    assert_int_equal(q3_decode_batch(twice, two, 2, &err), Q3_ERROR_ARG);
    assert_non_null(strstr(err.msg, "same context"));
    q3_context *full = context_on(m, backend, 4);
    int32_t four[4] = {1, 2, 3, 4};
    assert_int_equal(q3_prefill(full, four, 4, &err), Q3_OK);
    q3_context *with_full[2] = {c[0], full};
    assert_int_equal(q3_decode_batch(with_full, two, 2, &err), Q3_ERROR_CONTEXT_FULL);
    assert_non_null(strstr(err.msg, "context 1 is full"));
    assert_int_equal(q3_context_used(c[0]), used);
    q3_context_free(full);
    for (int s = 0; s < N_SEQ; s++) q3_context_free(c[s]);
    free(ref);
    q3_model_close(m);
}

static void test_batch_cpu(void **s) { (void)s; batch_equals_single("cpu"); }
static void test_batch_other_backends(void **s)
{
    (void)s;
    for (const char *const *n = q3_backend_names() + 1; *n; n++) batch_equals_single(*n);
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
        cmocka_unit_test(test_batch_cpu),
        cmocka_unit_test(test_batch_other_backends),
        cmocka_unit_test(test_truncate_and_sampler),
        cmocka_unit_test(test_errors_and_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
