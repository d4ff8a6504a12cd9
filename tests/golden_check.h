/* golden_check.h - what the model tests share: the bound against the
 * HuggingFace goldens (test_model_goldens.c says why it is 0.08 + 1 %) and the
 * check of one prompt position's logits. Include after cmocka.h and cJSON. */
#ifndef Q3_GOLDEN_CHECK_H
#define Q3_GOLDEN_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LOGIT_TOL_ABS 0.08
#define LOGIT_TOL_REL 0.01
#define CLEAR_MARGIN 0.1 /* a top-2 margin above this is clear: the top-1 must match */
/* What a test adds to the bound and the margin for a run that rounds more than the
 * goldens' arithmetic does (the 8-bit KV cache: test_model_goldens.c); 0 otherwise. */
static double golden_extra_tol;

/* Where the build put binaries and fixtures: $BUILD, else build. */
static inline const char *build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* The whole file, NUL-terminated; NULL when it cannot be read. */
static inline char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* The first of the largest (as q3_argmax). */
static inline int argmax(const float *v, uint32_t n)
{
    int best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int)i;
    return best;
}

/* One position's logits against a golden {top_ids, top_logits}: each of the
 * golden's top logits within the bound, the top-1 equal where the golden's
 * margin is clear; *max_err keeps the largest difference seen. */
static inline void check_position(const char *where, const float *logits, uint32_t vocab, const cJSON *pos,
                                  double *max_err)
{
    const cJSON *ids = cJSON_GetObjectItem(pos, "top_ids"), *vals = cJSON_GetObjectItem(pos, "top_logits");
    int n = cJSON_GetArraySize(ids);
    assert_true(n >= 2);
    for (int i = 0; i < n; i++) {
        int id = cJSON_GetArrayItem(ids, i)->valueint;
        double want = cJSON_GetArrayItem(vals, i)->valuedouble, got = logits[id];
        double e = fabs(got - want);
        if (e > *max_err) *max_err = e;
        if (e > LOGIT_TOL_ABS + golden_extra_tol + LOGIT_TOL_REL * fabs(want))
            fail_msg("%s: logit of token %d is %f, golden %f", where, id, got, want);
    }
    double margin = cJSON_GetArrayItem(vals, 0)->valuedouble - cJSON_GetArrayItem(vals, 1)->valuedouble;
    int top = cJSON_GetArrayItem(ids, 0)->valueint;
    if (margin > CLEAR_MARGIN + 2 * golden_extra_tol && argmax(logits, vocab) != top)
        fail_msg("%s: top-1 is %d, golden %d (margin %f)", where, argmax(logits, vocab), top, margin);
}

#endif
