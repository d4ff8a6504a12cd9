/* bench_fmt.c - q3bench's pure helpers (bench_fmt.h). */
#include "bench_fmt.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bench_parse_list(const char *s, long lo, long hi, int *out, int max)
{
    int n = 0;
    if (!s || !*s) return -1;
    for (;;) {
        char *end = NULL;
        if (*s < '0' || *s > '9') return -1; /* no sign, space or empty item */
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < lo || v > hi || n == max) return -1;
        for (int i = 0; i < n; i++)
            if (out[i] == v) return -1;
        out[n++] = (int)v;
        if (*end == 0) return n;
        if (*end != ',') return -1;
        s = end + 1;
    }
}

long bench_top2_scan(const float *logits, uint32_t vocab, bench_top2 *top)
{
    uint32_t best = 0;
    long second = -1;
    for (uint32_t i = 0; i < vocab; i++) {
        float v = logits[i];
        if (!isfinite(v)) return (long)i;
        if (i == 0) continue;
        if (v > logits[best]) {
            second = best;
            best = i;
        } else if (second < 0 || v > logits[second]) {
            second = i;
        }
    }
    top->id[0] = (int32_t)best;
    top->logit[0] = logits[best];
    top->id[1] = (int32_t)second;
    top->logit[1] = second >= 0 ? logits[second] : NAN;
    return -1;
}

void bench_test_name(char *out, size_t size, int is_tg, int len, int n)
{
    if (!is_tg)
        snprintf(out, size, "pp%d", len);
    else if (len == 0)
        snprintf(out, size, "tg%d", n);
    else
        snprintf(out, size, "tg%d @ d%d", n, len);
}

/* "NAME 1234 (12.5000) over 777 (12.4900), margin 0.0100" */
static void fmt_top2(char *out, size_t size, const char *name, const bench_top2 *t)
{
    if (t->id[1] < 0)
        snprintf(out, size, "%s %d (%.4f), no second id", name, (int)t->id[0], (double)t->logit[0]);
    else
        snprintf(out, size, "%s %d (%.4f) over %d (%.4f), margin %.4f", name, (int)t->id[0], (double)t->logit[0],
                 (int)t->id[1], (double)t->logit[1], (double)t->logit[0] - (double)t->logit[1]);
}

void bench_fmt_diff(char *out, size_t size, const char *what, int token, const char *a, const bench_top2 *ta,
                    const char *b, const bench_top2 *tb)
{
    char sa[160], sb[160];
    fmt_top2(sa, sizeof sa, a, ta);
    fmt_top2(sb, sizeof sb, b, tb);
    snprintf(out, size, "%s: %s and %s differ at token %d: %s; %s", what, a, b, token, sa, sb);
}
