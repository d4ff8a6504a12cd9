/* test_sampler.c - the sampler keeps at least the most likely token through every
 * filter (issue 14: top-p 0 at a high temperature read order[-1]), refuses
 * non-finite logits, and stays finite under extreme penalties and temperatures. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include "../runtime/sampler.h"

#define VOCAB 1000

static int32_t sample_once(q3_sampler_params p, float *logits, uint32_t vocab)
{
    q3_sampler s;
    assert_int_equal(q3_sampler_init(&s, &p, vocab), 0);
    int32_t t = q3_sampler_sample(&s, logits);
    q3_sampler_free(&s);
    return t;
}

static void fill_ramp(float *l, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) l[i] = (float)(i % 97) * 0.01f;
}

/* The reproduction of issue 14: every probability ~1/n, below the top-p cut 1/(n-1). */
static void test_top_p_zero_at_huge_temperature_keeps_the_best(void **state)
{
    (void)state;
    float l[VOCAB];
    fill_ramp(l, VOCAB);
    l[123] = 5.0f;
    q3_sampler_params p = {.temperature = 100000.0f, .top_p = 0.0f, .repetition_penalty = 1.0f, .seed = 7};
    assert_int_equal(sample_once(p, l, VOCAB), 123);
    /* all equal: the lowest id, deterministically */
    for (int i = 0; i < VOCAB; i++) l[i] = 1.0f;
    assert_int_equal(sample_once(p, l, VOCAB), 0);
}

static void test_every_filter_keeps_one(void **state)
{
    (void)state;
    float l[VOCAB];
    q3_sampler_params ps[] = {
        {.temperature = 1e4f, .top_p = 1e-9f, .repetition_penalty = 1.0f, .seed = 1},
        {.temperature = 1.0f, .top_k = 1, .repetition_penalty = 1.0f, .seed = 2},
        {.temperature = 1.0f, .min_p = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = 3},
        {.temperature = 1e-30f, .top_p = 0.0f, .min_p = 1.0f, .repetition_penalty = 1.0f, .seed = 4},
        {.temperature = 1.0f, .top_k = 5, .top_p = 0.0f, .min_p = 1.0f, .repetition_penalty = 1.0f, .seed = 5},
    };
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        fill_ramp(l, VOCAB);
        l[400] = 3.0f;
        assert_int_equal(sample_once(ps[k], l, VOCAB), 400);
    }
}

/* top-k's quickselect on many small shuffled ranges (it looped forever on a two-id
 * range whose pivot was its last id): top-k 1 is the argmax, ties to the lowest id. */
static void test_top_k_one_is_the_argmax(void **state)
{
    (void)state;
    float l[64];
    srand(14);
    for (int round = 0; round < 2000; round++) {
        uint32_t n = 1 + (uint32_t)(rand() % 64);
        for (uint32_t i = 0; i < n; i++) l[i] = (float)(rand() % 8);
        int32_t best = q3_argmax(l, n);
        q3_sampler_params p = {.temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .repetition_penalty = 1.0f,
                               .seed = (uint64_t)round};
        assert_int_equal(sample_once(p, l, n), best);
    }
}

static void test_nonfinite_logits_are_refused(void **state)
{
    (void)state;
    float l[VOCAB];
    float bad[] = {NAN, INFINITY, -INFINITY};
    q3_sampler_params ps[] = {
        {.temperature = 0.0f, .repetition_penalty = 1.0f},
        {.temperature = 0.7f, .top_p = 0.9f, .repetition_penalty = 1.0f},
        {.temperature = 0.7f, .top_k = 20, .repetition_penalty = 1.3f},
    };
    for (size_t b = 0; b < 3; b++)
        for (size_t k = 0; k < 3; k++) {
            fill_ramp(l, VOCAB);
            l[777] = bad[b];
            assert_int_equal(q3_logits_first_nonfinite(l, VOCAB), 777);
            assert_int_equal(sample_once(ps[k], l, VOCAB), -1);
        }
    fill_ramp(l, VOCAB);
    assert_int_equal(q3_logits_first_nonfinite(l, VOCAB), -1);
}

/* q3_argmax and q3_logits_first_nonfinite work in blocks and lanes: each must give what
 * the one-pass definition gives (the first largest, ties and signed zeros included, a
 * NaN never larger unless first; the first infinity or NaN) at every length and position. */
static int32_t argmax_one_pass(const float *l, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return (int32_t)best;
}

static void test_argmax_and_nonfinite_match_one_pass(void **state)
{
    (void)state;
    static float l[300];
    const float specials[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 7.0f};
    srand(23);
    for (int round = 0; round < 20000; round++) {
        uint32_t n = 1 + (uint32_t)(rand() % 300);
        for (uint32_t i = 0; i < n; i++) l[i] = (float)(rand() % 9) - 4.0f;
        int n_special = rand() % 3;
        for (int k = 0; k < n_special; k++) l[rand() % n] = specials[rand() % 6];
        assert_int_equal(q3_argmax(l, n), argmax_one_pass(l, n));
        int64_t first = -1;
        for (uint32_t i = 0; i < n && first < 0; i++)
            if (!isfinite(l[i])) first = i;
        assert_int_equal(q3_logits_first_nonfinite(l, n), first);
        /* greedy sampling without a penalty tests and takes the maximum in one pass */
        q3_sampler_params g = {.temperature = 0.0f, .repetition_penalty = 1.0f};
        assert_int_equal(sample_once(g, l, n), first >= 0 ? -1 : argmax_one_pass(l, n));
    }
}

/* Samplers on threads of their own draw what each draws alone (q3.h's promise; q3serve's
 * draws run side by side): two threads sample top-k / top-p from logits ranked in opposite
 * orders, each against its own single-thread draws. (The comparator's probabilities were
 * one global: the other thread's sort then ordered by the wrong array.) */
#define RACE_DRAWS 3000
typedef struct {
    int flip, failed;
    int32_t ids[RACE_DRAWS];
} race_job;

static void race_draws(race_job *j) /* no cmocka assertions: it runs on a second thread too */
{
    static _Thread_local float l[VOCAB];
    q3_sampler_params p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .repetition_penalty = 1.0f,
                           .seed = 77 + (uint64_t)j->flip};
    q3_sampler s;
    if ((j->failed = q3_sampler_init(&s, &p, VOCAB) != 0)) return;
    for (int i = 0; i < RACE_DRAWS; i++) {
        for (int v = 0; v < VOCAB; v++) l[v] = (float)((j->flip ? VOCAB - v : v) % 61) * 0.05f;
        j->ids[i] = q3_sampler_sample(&s, l);
    }
    q3_sampler_free(&s);
}

static void *race_main(void *arg)
{
    race_draws(arg);
    return NULL;
}

static void test_samplers_on_two_threads(void **state)
{
    (void)state;
    static race_job alone[2], together[2];
    for (int k = 0; k < 2; k++) alone[k].flip = together[k].flip = k, race_draws(&alone[k]);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race_main, &together[1]), 0);
    race_draws(&together[0]);
    pthread_join(t, NULL);
    for (int k = 0; k < 2; k++) {
        assert_false(alone[k].failed || together[k].failed);
        assert_memory_equal(alone[k].ids, together[k].ids, sizeof alone[k].ids);
    }
}

/* A penalty of 1e-30 divides FLT_MAX-sized logits past the float range: clamped. */
static void test_extreme_penalty_stays_finite(void **state)
{
    (void)state;
    float l[VOCAB];
    for (int i = 0; i < VOCAB; i++) l[i] = i % 2 ? 3e38f : -3e38f;
    q3_sampler_params p = {.temperature = 1.0f, .top_p = 0.5f, .repetition_penalty = 1e-30f, .seed = 9};
    q3_sampler s;
    assert_int_equal(q3_sampler_init(&s, &p, VOCAB), 0);
    for (int i = 0; i < VOCAB; i++) q3_sampler_accept(&s, i);
    int32_t t = q3_sampler_sample(&s, l);
    assert_true(t >= 0 && t < VOCAB);
    for (int i = 0; i < VOCAB; i++) assert_true(isfinite(l[i]));
    q3_sampler_free(&s);
}

static void test_forget_clears_the_penalty(void **state)
{
    (void)state;
    float l[4] = {1.0f, 2.0f, 0.5f, 0.0f};
    q3_sampler_params p = {.temperature = 0.0f, .repetition_penalty = 10.0f};
    q3_sampler s;
    assert_int_equal(q3_sampler_init(&s, &p, 4), 0);
    q3_sampler_accept(&s, 1);
    assert_int_equal(q3_sampler_sample(&s, l), 0); /* 2.0 / 10 < 1.0 */
    q3_sampler_forget(&s);
    float l2[4] = {1.0f, 2.0f, 0.5f, 0.0f};
    assert_int_equal(q3_sampler_sample(&s, l2), 1);
    q3_sampler_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_p_zero_at_huge_temperature_keeps_the_best),
        cmocka_unit_test(test_every_filter_keeps_one),
        cmocka_unit_test(test_top_k_one_is_the_argmax), cmocka_unit_test(test_samplers_on_two_threads),
        cmocka_unit_test(test_nonfinite_logits_are_refused),
        cmocka_unit_test(test_argmax_and_nonfinite_match_one_pass),
        cmocka_unit_test(test_extreme_penalty_stays_finite),
        cmocka_unit_test(test_forget_clears_the_penalty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
