/* bench_fmt.h - q3bench's pure helpers: list parsing, the greedy top-2 of a logits row, test
 * names and the message that names where two runs' tokens differ. No I/O, so tests/test_bench.c
 * checks them directly. */
#ifndef Q3_BENCH_FMT_H
#define Q3_BENCH_FMT_H
#include <stddef.h>
#include <stdint.h>

/* The two best ids of one logits row (ties go to the lower id); id[1] is -1 when vocab is 1. */
typedef struct {
    int32_t id[2];
    float logit[2];
} bench_top2;

/* Parses "8" or "512,4096": at most max non-negative decimal integers, each in [lo, hi], no
 * empty, signed or repeated item.
 * Returns the count, or -1 (out is then unspecified). */
int bench_parse_list(const char *s, long lo, long hi, int *out, int max);

/* One pass over logits[0..vocab): fills *top and returns -1, or returns the index of the first
 * non-finite logit (then *top is unspecified). vocab >= 1. */
long bench_top2_scan(const float *logits, uint32_t vocab, bench_top2 *top);

/* "pp512", "tg128" (depth 0) or "tg128 @ d512", as llama-bench names its tests. */
void bench_test_name(char *out, size_t size, int is_tg, int len, int n);

/* "WHAT: A and B differ at token T: A 1234 (12.5000) over 777 (12.4900), margin 0.0100; B ..." */
void bench_fmt_diff(char *out, size_t size, const char *what, int token, const char *a, const bench_top2 *ta,
                    const char *b, const bench_top2 *tb);

#endif
