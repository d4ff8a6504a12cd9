/* test_kernels.c - every SIMD level's matrix product against a double-precision
 * reference, on shapes that exercise the tile padding, for 1 and 2 threads.
 * Tolerance: the GEMV path accumulates in f32 (relative error ~ sqrt(cols) * 2^-24
 * of the sum of |terms|); the AVX-512 GEMM path rounds activations to BF16
 * (relative error 2^-9 per term), so its bound is 2^-8 of the sum of |terms|. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../format/q3_format.h"
#include "../kernels/cpu_half.h"
#include "../kernels/cpu_kernels.h"
#include "../kernels/cpu_panel.h"

static uint32_t rng = 12345u;
static float frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return ((float)(rng >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static void check_shape(q3_pool *pool, uint64_t rows, uint64_t cols, int n_tok)
{
    uint16_t *w = malloc(rows * cols * 2);
    uint16_t *tiled = malloc(q3_layout_elems(Q3_LAYOUT_R16C32, rows, cols) * 2);
    float *x = malloc((size_t)n_tok * cols * sizeof *x);
    float *y = malloc((size_t)n_tok * (rows + 3) * sizeof *y);
    for (uint64_t i = 0; i < rows * cols; i++) w[i] = q3_f32_to_bf16(frand());
    for (uint64_t i = 0; i < (uint64_t)n_tok * cols; i++) x[i] = frand();
    q3_tile_pack(Q3_LAYOUT_R16C32, w, rows, cols, tiled);
    uint64_t ldy = rows + 3;
    for (uint64_t i = 0; i < (uint64_t)n_tok * ldy; i++) y[i] = -12345.0f;
    q3_matmul_op op = {tiled, rows, cols, y, ldy};
    q3_matmul(pool, &op, 1, x, n_tok);
    int gemm = q3_simd_active() >= Q3_SIMD_AVX512BF16 && n_tok >= 4;
    for (int t = 0; t < n_tok; t++) {
        for (uint64_t r = 0; r < rows; r++) {
            double ref = 0, mag = 0;
            for (uint64_t c = 0; c < cols; c++) {
                double term = (double)q3_bf16_to_f32(w[r * cols + c]) * x[(uint64_t)t * cols + c];
                ref += term;
                mag += fabs(term);
            }
            double tol = gemm ? mag / 256.0 + 1e-6 : mag * 1e-6 + 1e-6;
            double got = y[(uint64_t)t * ldy + r];
            if (fabs(got - ref) > tol)
                fail_msg("%s rows %llu cols %llu tok %d/%d row %llu: got %g want %g (tol %g)",
                         q3_simd_name(q3_simd_active()), (unsigned long long)rows, (unsigned long long)cols, t,
                         n_tok, (unsigned long long)r, got, ref, tol);
        }
        /* Past the rows nothing is written. */
        for (uint64_t r = rows; r < ldy; r++) assert_true(y[(uint64_t)t * ldy + r] == -12345.0f);
    }
    free(w);
    free(tiled);
    free(x);
    free(y);
}

static void test_all_levels(void **state)
{
    (void)state;
    /* 20 x 300: the AVX2 GEMM's 256-column weight blocks, a whole one and a short one */
    static const uint64_t shapes[][2] = {{16, 32}, {1, 1}, {37, 45}, {64, 1024}, {100, 70}, {33, 96}, {20, 300}};
    static const int toks[] = {1, 2, 5, 13, 37};
    q3_simd best = q3_simd_detect();
    for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
        q3_simd_set((q3_simd)level);
        assert_int_equal(q3_simd_active(), level);
        for (int threads = 1; threads <= 2; threads++) {
            q3_pool *pool = q3_pool_create(threads);
            assert_non_null(pool);
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++)
                    check_shape(pool, shapes[s][0], shapes[s][1], toks[k]);
            /* More tokens than one CPU pass: the AVX2 GEMM's second chunk of tokens. */
            check_shape(pool, 20, 300, Q3_CPU_PASS_TOKENS + 13);
            q3_pool_destroy(pool);
        }
    }
    q3_simd_set(best);
}

/* Several ops in one call (Q, K, V style: shared x, different rows), at every level,
 * for decode and prefill, so the thread split crosses op boundaries mid-op. */
static void test_multi_op(void **state)
{
    (void)state;
    enum { N_OPS = 3, MAX_TOK = 20 };
    const uint64_t rows[N_OPS] = {48, 17, 33}, cols = 70;
    uint16_t *flat[N_OPS], *w[N_OPS];
    float *y[N_OPS], *x = malloc(MAX_TOK * cols * sizeof *x);
    q3_matmul_op ops[N_OPS];
    assert_non_null(x);
    for (uint64_t i = 0; i < MAX_TOK * cols; i++) x[i] = frand();
    for (int o = 0; o < N_OPS; o++) {
        flat[o] = malloc(rows[o] * cols * 2);
        w[o] = malloc(q3_layout_elems(Q3_LAYOUT_R16C32, rows[o], cols) * 2);
        y[o] = malloc(MAX_TOK * rows[o] * sizeof(float));
        assert_true(flat[o] && w[o] && y[o]);
        for (uint64_t i = 0; i < rows[o] * cols; i++) flat[o][i] = q3_f32_to_bf16(frand());
        q3_tile_pack(Q3_LAYOUT_R16C32, flat[o], rows[o], cols, w[o]);
        ops[o] = (q3_matmul_op){w[o], rows[o], cols, y[o], rows[o]};
    }
    q3_simd best = q3_simd_detect();
    q3_pool *pool = q3_pool_create(2);
    assert_non_null(pool);
    for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
        q3_simd_set((q3_simd)level);
        for (int n_tok = 1; n_tok <= MAX_TOK; n_tok += MAX_TOK - 1) {
            for (int o = 0; o < N_OPS; o++)
                for (uint64_t i = 0; i < (uint64_t)n_tok * rows[o]; i++) y[o][i] = NAN;
            q3_matmul(pool, ops, N_OPS, x, n_tok);
            int gemm = level >= Q3_SIMD_AVX512BF16 && n_tok >= 4;
            for (int o = 0; o < N_OPS; o++)
                for (int t = 0; t < n_tok; t++)
                    for (uint64_t r = 0; r < rows[o]; r++) {
                        double ref = 0, mag = 0;
                        for (uint64_t c = 0; c < cols; c++) {
                            double term = (double)q3_bf16_to_f32(flat[o][r * cols + c]) * x[(uint64_t)t * cols + c];
                            ref += term;
                            mag += fabs(term);
                        }
                        double got = y[o][(uint64_t)t * rows[o] + r], tol = gemm ? mag / 256.0 + 1e-6 : mag * 1e-6 + 1e-6;
                        if (!(fabs(got - ref) <= tol))
                            fail_msg("%s op %d tok %d/%d row %llu: got %g want %g", q3_simd_name((q3_simd)level), o, t,
                                     n_tok, (unsigned long long)r, got, ref);
                    }
        }
    }
    q3_simd_set(best);
    q3_pool_destroy(pool);
    for (int o = 0; o < N_OPS; o++) free(flat[o]), free(w[o]), free(y[o]);
    free(x);
}

static void count_calls(void *ctx, int ith, int nth)
{
    (void)nth;
    __atomic_fetch_add((int *)ctx + ith, 1, __ATOMIC_RELAXED);
}

static void test_pool_runs_every_thread(void **state)
{
    (void)state;
    q3_pool *pool = q3_pool_create(2);
    int calls[2] = {0, 0};
    for (int i = 0; i < 1000; i++) q3_pool_run(pool, count_calls, calls);
    assert_int_equal(calls[0], 1000);
    assert_int_equal(calls[1], q3_pool_size(pool) == 2 ? 1000 : 0);
    q3_pool_destroy(pool);
}

/* F16 conversions: q3_half_to_float against the format library's converter for all
 * 65536 halves; q3_half_from_float gives back every finite half and rounds each
 * midpoint between neighbours to the even one; q3_f16_store gives the same bits at
 * every level (F16C's vcvtps2ph on AVX2 and AVX-512) on random and edge values. */
static void test_f16(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = q3_half_to_float((uint16_t)h), g = q3_f16_to_f32((uint16_t)h);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) {
            assert_true(isnan(f) && isnan(g));
            continue;
        }
        assert_memory_equal(&f, &g, sizeof f);
        assert_int_equal(q3_half_from_float(f), h);
        if ((h & 0x7fffu) < 0x7bffu) { /* midpoint to the next larger magnitude */
            float mid = (float)(((double)f + (double)q3_half_to_float((uint16_t)(h + 1))) / 2);
            uint16_t want = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
            assert_int_equal(q3_half_from_float(mid), want);
            assert_int_equal(q3_half_from_float(nextafterf(mid, 0.0f)), h);
        }
    }
    assert_int_equal(q3_half_from_float(65519.0f), 0x7bff);
    assert_int_equal(q3_half_from_float(65520.0f), 0x7c00);
    assert_int_equal(q3_half_from_float(-1e30f), 0xfc00);
    assert_int_equal(q3_half_from_float(1e-30f), 0);
    enum { N = 4099 };
    float *x = malloc(N * sizeof *x);
    uint16_t *want = malloc(N * sizeof *want), *got = malloc((N + 1) * sizeof *got);
    assert_true(x && want && got);
    static const float edges[] = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 1e9f, -1e9f, 6.1e-5f, 5.96e-8f,
                                  2.98e-8f, 2.99e-8f, 1e-40f, INFINITY, -INFINITY, 1.0f / 3, 0.1f};
    for (int i = 0; i < N; i++) {
        union { uint32_t u; float f; } r;
        rng = rng * 1664525u + 1013904223u;
        r.u = (rng & 0x807fffffu) | (((rng >> 3) % 40u + 100u) << 23); /* exponents 2^-27 .. 2^12 */
        x[i] = i < (int)(sizeof edges / sizeof edges[0]) ? edges[i] : r.f;
        want[i] = q3_half_from_float(x[i]);
    }
    q3_simd best = q3_simd_detect();
    for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
        q3_simd_set((q3_simd)level);
        for (int n = N; n >= N - 17; n--) { /* every tail length */
            got[n] = 0x1234;
            q3_f16_store(got, x, (uint64_t)n);
            assert_memory_equal(got, want, (size_t)n * sizeof *got);
            assert_int_equal(got[n], 0x1234);
        }
    }
    q3_simd_set(best);
    free(x);
    free(want);
    free(got);
}

/* Random F16 K or V values in [-1, 1]; ref holds them as floats (exact). */
static void fill_f16(uint16_t *h, float *ref, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        h[i] = q3_half_from_float(frand());
        ref[i] = q3_f16_to_f32(h[i]);
    }
}

/* Softmax attention of one head against a double-precision reference, at every level.
 * K and V are F16; the reference reads the same halves exactly, so the error is the
 * f32 arithmetic's. Tolerance 1e-4 absolute on outputs in [-1, 1]: scores are f32 dot
 * products (error ~ head_dim * 2^-24 * |score| ~ 1e-5 for |score| ~ 10) and a softmax
 * weight moves by that relative amount; expf adds ~1e-7. */
static void test_attention(void **state)
{
    (void)state;
    static const int dims[] = {128, 37, 16};
    static const int positions[] = {0, 1, 5, 300};
    const uint64_t stride = 200;
    uint16_t *k = malloc(300 * stride * 2), *v = malloc(300 * stride * 2);
    float *kf = malloc(300 * stride * sizeof(float)), *vf = malloc(300 * stride * sizeof(float));
    float q[128], out[129], scores[300];
    assert_true(k && v && kf && vf);
    fill_f16(k, kf, 300 * stride);
    fill_f16(v, vf, 300 * stride);
    for (int i = 0; i < 128; i++) q[i] = frand() * 3.0f;
    q3_simd best = q3_simd_detect();
    for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
        q3_simd_set((q3_simd)level);
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
            for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
                int d = dims[di], n = positions[pi];
                float scale = 1.0f / sqrtf((float)d);
                for (int i = 0; i < 128; i++) out[i] = NAN;
                out[d] = 7.0f; /* past head_dim: untouched */
                q3_attend_head(q, k, v, stride, n, d, scale, scores, out);
                double sc[300], maxv = -INFINITY, sum = 0;
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int i = 0; i < d; i++) s += (double)q[i] * kf[(uint64_t)j * stride + i];
                    sc[j] = s * scale;
                    if (sc[j] > maxv) maxv = sc[j];
                }
                for (int j = 0; j < n; j++) sum += (sc[j] = exp(sc[j] - maxv));
                for (int i = 0; i < d; i++) {
                    double ref = 0;
                    for (int j = 0; j < n; j++) ref += sc[j] / sum * vf[(uint64_t)j * stride + i];
                    if (!(fabs(out[i] - ref) <= 1e-4))
                        fail_msg("%s attention d %d n_pos %d out[%d]: got %g want %g", q3_simd_name((q3_simd)level), d,
                                 n, i, out[i], ref);
                }
                if (d < 128) assert_true(out[d] == 7.0f);
                /* q3_dot: f32 sums, bound n * 2^-24 * sum |a b| */
                double ref = 0, mag = 0;
                for (int i = 0; i < d; i++) ref += (double)q[i] * kf[i], mag += fabs((double)q[i] * kf[i]);
                assert_true(fabs(q3_dot(q, kf, (uint64_t)d) - ref) <= d * mag / 16777216.0 + 1e-7);
            }
    }
    q3_simd_set(best);
    free(k);
    free(v);
    free(kf);
    free(vf);
}

/* Several queries against one KV head: causal consecutive tokens (pos_step 1) and
 * the heads of one GQA group (pos_step 0), against the same double reference. */
/* q3_attend_rows' (or its 8-bit twin's) out[r * 131 + i] for n_q queries at q[r * 130]
 * against a double-precision softmax attention (scores times scale) over the rows K and V
 * hold (kf, vf: row j at j * kv_stride), query r seeing n_pos + r * step rows; past d, out
 * stays 7. */
static void check_rows(const char *what, q3_simd level, const float *q, int n_q, int step, int n_pos, int d,
                       float scale, const float *kf, const float *vf, int kv_stride, const float *out)
{
    enum { MAXROWS = 64 };
    for (int r = 0; r < n_q; r++) {
        int np = n_pos + r * step;
        assert_true(np <= MAXROWS);
        double sc[MAXROWS], maxv = -INFINITY, sum = 0;
        for (int j = 0; j < np; j++) {
            double t = 0;
            for (int i = 0; i < d; i++) t += (double)q[r * 130 + i] * kf[j * kv_stride + i];
            sc[j] = t * scale;
            if (sc[j] > maxv) maxv = sc[j];
        }
        for (int j = 0; j < np; j++) sum += (sc[j] = exp(sc[j] - maxv));
        for (int i = 0; i < d; i++) {
            double ref = 0;
            for (int j = 0; j < np; j++) ref += sc[j] / sum * vf[j * kv_stride + i];
            if (!(fabs(out[r * 131 + i] - ref) <= 1e-4))
                fail_msg("%s %s d %d n_q %d step %d n_pos %d q %d out[%d]: got %g want %g", q3_simd_name(level), what, d,
                         n_q, step, n_pos, r, i, out[r * 131 + i], ref);
        }
        for (int i = d; i < 131; i++) assert_true(out[r * 131 + i] == 7.0f);
    }
}

static void test_attention_rows(void **state)
{
    (void)state;
    enum { MAXQ = 9, NPOS = 40, STRIDE = 140 };
    static const int dims[] = {128, 37};
    static const int n_qs[] = {1, 2, 4, 6, 7, 9};
    static const int n_poss[] = {1, 2, 5, 31}; /* 2: an odd last row for 4 distinct queries */
    uint16_t *k = malloc(NPOS * STRIDE * 2), *v = malloc(NPOS * STRIDE * 2);
    float *kf = malloc(NPOS * STRIDE * sizeof(float)), *vf = malloc(NPOS * STRIDE * sizeof(float));
    float q[MAXQ * 130], out[MAXQ * 131], scores[4 * NPOS];
    assert_true(k && v && kf && vf);
    fill_f16(k, kf, NPOS * STRIDE);
    fill_f16(v, vf, NPOS * STRIDE);
    for (int i = 0; i < MAXQ * 130; i++) q[i] = frand() * 3.0f;
    q3_simd best = q3_simd_detect();
    for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
        q3_simd_set((q3_simd)level);
        for (size_t di = 0; di < 2; di++)
            for (size_t qi = 0; qi < 6; qi++)
                for (size_t pi = 0; pi < sizeof n_poss / sizeof n_poss[0]; pi++)
                    for (int step = 0; step <= 1; step++) {
                        int d = dims[di], n_q = n_qs[qi], n_pos = n_poss[pi];
                        float scale = 1.0f / sqrtf((float)d);
                        for (int i = 0; i < MAXQ * 131; i++) out[i] = 7.0f;
                        q3_attend_rows(q, 130, n_q, step, k, v, STRIDE, n_pos, d, scale, scores, out, 131);
                        check_rows("rows", (q3_simd)level, q, n_q, step, n_pos, d, scale, kf, vf, STRIDE, out);
                    }
    }
    q3_simd_set(best);
    free(k);
    free(v);
    free(kf);
    free(vf);
}

/* The 8-bit cache's store: llama.cpp's q8_0 rounding (d = max|x| / 127 in F16, q =
 * round(x / d)), zeros for a zero block, a NaN scale for a block with an inf or NaN. */
static void test_q8_store(void **state)
{
    (void)state;
    float x[64];
    int8_t q[64];
    uint16_t sc[2], back[64];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) * 0.25f; /* max |x| = 4 */
    for (int i = 32; i < 64; i++) x[i] = 0.0f;
    q3_q8_store(q, sc, x, 64);
    assert_true(sc[0] == q3_half_from_float(4.0f / 127.0f));
    assert_int_equal(q[0], -127);                    /* -4 */
    assert_int_equal(q[16], 0);                      /* 0 */
    assert_int_equal(q[17], (int)roundf(0.25f * 127.0f / 4.0f)); /* 7.94 -> 8 */
    assert_int_equal(q[31], (int)roundf(3.75f * 127.0f / 4.0f));
    assert_true(sc[1] == 0);
    for (int i = 32; i < 64; i++) assert_int_equal(q[i], 0);
    q3_q8_load_f16(back, q, sc, 64);
    for (int i = 0; i < 64; i++) /* within half a step (4/254) and the F16 rounding */
        assert_true(fabsf(q3_half_to_float(back[i]) - x[i]) <= 4.0f / 254.0f + 4.0f / 1024.0f);
    x[40] = NAN;
    x[3] = INFINITY;
    q3_q8_store(q, sc, x, 64);
    assert_true(isnan(q3_half_to_float(sc[0])) && isnan(q3_half_to_float(sc[1])));
    /* Ties round to even (a block whose largest is 127: d = 1). */
    for (int i = 0; i < 32; i++) x[i] = (float)(i % 8) - 3.5f;
    x[31] = 127.0f;
    q3_q8_store(q, sc, x, 32);
    assert_int_equal(q[0], -4); /* -3.5 */
    assert_int_equal(q[1], -2); /* -2.5 */
    assert_int_equal(q[3], 0);  /* -0.5 */
    assert_int_equal(q[4], 0);  /* 0.5 */
    assert_int_equal(q[6], 2);  /* 2.5 */
    /* Every level stores the scalar level's bits (random rows, ties, a bad block). */
    enum { N = 4096 };
    static float r[N];
    static int8_t want[N], got[N];
    static uint16_t want_s[N / 32], got_s[N / 32];
    for (int i = 0; i < N; i++) r[i] = frand() * (float)(1 + i / 512);
    for (int i = 0; i < 32; i++) r[i] = (float)(i % 8) - 3.5f;
    r[31] = 127.0f;
    r[100] = -INFINITY;
    q3_q8_store_scalar(want, want_s, r, N);
    q3_simd best = q3_simd_detect();
    for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
        q3_simd_set((q3_simd)level);
        memset(got, 0x55, sizeof got);
        q3_q8_store(got, got_s, r, N);
        for (int i = 0; i < N; i++)
            if (got[i] != want[i]) fail_msg("%s: q8 value %d is %d, scalar %d", q3_simd_name((q3_simd)level), i, got[i], want[i]);
        for (int i = 0; i < N / 32; i++)
            if (got_s[i] != want_s[i])
                fail_msg("%s: q8 scale %d is %04x, scalar %04x", q3_simd_name((q3_simd)level), i, got_s[i], want_s[i]);
    }
    q3_simd_set(best);
}

/* q3_attend_rows_q8 at every level against a double-precision reference over the
 * values the 8-bit cache holds: every query count (1-4 share a pass, more are several
 * passes), causal prompt rows (step 1) and a decode's GQA group (step 0), position
 * counts that leave every kernel's tails, head_dims 128 (the real one), 96 (a pass
 * over 32 columns for one query) and 32. */
static void test_attention_rows_q8(void **state)
{
    (void)state;
    enum { MAXQ = 6, NPOS = 45, MAXD = 128 };
    static const int dims[] = {128, 96, 32};
    static const int n_qs[] = {1, 2, 3, 4, 6};
    static const int n_poss[] = {1, 3, 8, 13, 40};
    int8_t k[NPOS * MAXD], v[NPOS * MAXD];
    uint16_t ks[NPOS * MAXD / Q3_Q8_BLOCK], vs[NPOS * MAXD / Q3_Q8_BLOCK];
    float src[NPOS * MAXD], kf[NPOS * MAXD], vf[NPOS * MAXD], q[MAXQ * 130], out[MAXQ * 131], scores[4 * (NPOS + 4)];
    q3_simd best = q3_simd_detect();
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int d = dims[di];
        for (int kv = 0; kv < 2; kv++) { /* rows of d values, contiguous; kf/vf what they hold */
            for (int i = 0; i < NPOS * d; i++) src[i] = frand() * (kv ? 1.0f : 2.5f);
            int8_t *dst = kv ? v : k;
            uint16_t *scl = kv ? vs : ks;
            float *held = kv ? vf : kf;
            q3_q8_store(dst, scl, src, (uint64_t)NPOS * d);
            for (int i = 0; i < NPOS * d; i++) held[i] = dst[i] * q3_half_to_float(scl[i / Q3_Q8_BLOCK]);
        }
        for (int i = 0; i < MAXQ * 130; i++) q[i] = frand() * 3.0f;
        for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
            q3_simd_set((q3_simd)level);
            for (size_t qi = 0; qi < sizeof n_qs / sizeof n_qs[0]; qi++)
                for (size_t pi = 0; pi < sizeof n_poss / sizeof n_poss[0]; pi++)
                    for (int step = 0; step <= 1; step++) {
                        int n_q = n_qs[qi], n_pos = n_poss[pi];
                        float scale = 1.0f / sqrtf((float)d);
                        for (int i = 0; i < MAXQ * 131; i++) out[i] = 7.0f;
                        q3_attend_rows_q8(q, 130, n_q, step, k, ks, v, vs, n_pos, d, scale, scores, out, 131);
                        check_rows("q8", (q3_simd)level, q, n_q, step, n_pos, d, scale, kf, vf, d, out);
                    }
        }
    }
    q3_simd_set(best);
}

/* The 4-query kernels themselves (AVX2, AVX-512) against the scalar one-query
 * kernels, every query over every row: q3_attend_rows masks rows a causal query may
 * not see, so through it some of their results are never looked at. Odd row counts
 * (the AVX2 scores' last row), head_dim tails of 5 and 8 columns. */
static void test_attention4_kernels(void **state)
{
    (void)state;
    enum { NPOS = 33, STRIDE = 136 };
    static const int dims[] = {128, 37, 24};
    static const int n_poss[] = {1, 2, 3, 8, 33};
    q3_simd best = q3_simd_detect();
    if (best < Q3_SIMD_AVX2) {
        fprintf(stderr, "test_attention4_kernels: no AVX2 here, nothing to compare\n");
        return;
    }
    uint16_t *k = malloc(NPOS * STRIDE * 2), *v = malloc(NPOS * STRIDE * 2);
    float *kf = malloc(NPOS * STRIDE * sizeof(float)), *vf = malloc(NPOS * STRIDE * sizeof(float));
    float q[4][128], p[4 * NPOS], got[4 * NPOS], want[NPOS], out[4][129], ref[128];
    assert_true(k && v && kf && vf);
    fill_f16(k, kf, NPOS * STRIDE);
    fill_f16(v, vf, NPOS * STRIDE);
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 128; i++) q[r][i] = frand() * 3.0f;
    for (int j = 0; j < 4 * NPOS; j++) p[j] = frand() * 0.5f + 0.5f;
    const float *qp[4] = {q[0], q[1], q[2], q[3]};
    float *op[4] = {out[0], out[1], out[2], out[3]};
    for (int level = Q3_SIMD_AVX2; level <= (int)best && level <= Q3_SIMD_AVX512BF16; level++)
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
            for (size_t pi = 0; pi < sizeof n_poss / sizeof n_poss[0]; pi++) {
                int d = dims[di], n = n_poss[pi];
                const char *name = q3_simd_name((q3_simd)level);
                for (int r = 0; r < 4; r++) out[r][d] = 7.0f; /* past head_dim: untouched */
                if (level == Q3_SIMD_AVX2) {
                    q3_attn_scores4_avx2(qp, k, STRIDE, n, d, 0.25f, got, NPOS);
                    q3_attn_pv4_avx2(p, NPOS, v, STRIDE, n, d, op);
                } else {
                    q3_attn_scores4_avx512(qp, k, STRIDE, n, d, 0.25f, got, NPOS);
                    q3_attn_pv4_avx512(p, NPOS, v, STRIDE, n, d, op);
                }
                for (int r = 0; r < 4; r++) {
                    q3_attn_scores_scalar(q[r], k, STRIDE, n, d, 0.25f, want);
                    for (int j = 0; j < n; j++) /* f32 sums of d terms of |q k| < 3 */
                        if (!(fabs(got[r * NPOS + j] - want[j]) <= 1e-5 * d))
                            fail_msg("%s scores4 d %d n_pos %d q %d [%d]: got %g want %g", name, d, n, r, j,
                                     got[r * NPOS + j], want[j]);
                    q3_attn_pv_scalar(p + r * NPOS, v, STRIDE, n, d, ref);
                    for (int i = 0; i < d; i++)
                        if (!(fabs(out[r][i] - ref[i]) <= 1e-5 * n))
                            fail_msg("%s pv4 d %d n_pos %d q %d out[%d]: got %g want %g", name, d, n, r, i, out[r][i],
                                     ref[i]);
                    assert_true(out[r][d] == 7.0f);
                }
            }
    free(k);
    free(v);
    free(kf);
    free(vf);
}

/* Thread 1 sleeps past the spin window, so the caller must sleep on its futex and
 * be woken; the gap between runs lets the worker fall asleep and be woken too. */
static void slow_calls(void *ctx, int ith, int nth)
{
    (void)nth;
    if (ith == 1) {
        struct timespec ts = {0, 3000000};
        nanosleep(&ts, NULL);
    }
    __atomic_fetch_add((int *)ctx + ith, 1, __ATOMIC_RELAXED);
}

static void test_pool_sleeps_and_wakes(void **state)
{
    (void)state;
    q3_pool *pool = q3_pool_create(3); /* more threads than this CI machine's 2 cores */
    assert_non_null(pool);
    int calls[3] = {0, 0, 0};
    for (int i = 0; i < 20; i++) {
        q3_pool_run(pool, slow_calls, calls);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        for (int k = 0; k < q3_pool_size(pool); k++) assert_int_equal(calls[k], i + 1);
    }
    q3_pool_destroy(pool);
}

static void test_simd_names(void **state)
{
    (void)state;
    assert_string_equal(q3_simd_name(Q3_SIMD_SCALAR), "scalar");
    assert_string_equal(q3_simd_name(Q3_SIMD_AVX2), "avx2");
    assert_string_equal(q3_simd_name(Q3_SIMD_AVX512BF16), "avx512bf16");
    assert_string_equal(q3_simd_name(Q3_SIMD_AMX), "amx");
    /* q3_simd_set never goes above what the CPU has. */
    q3_simd best = q3_simd_detect();
    q3_simd_set(Q3_SIMD_AMX);
    assert_int_equal(q3_simd_active(), best);
}

/* The GEMV with and without software prefetch (chosen by CPU vendor) give the same
 * bits at each level: prefetching changes no arithmetic. */
static void test_gemv_prefetch_variants(void **state)
{
    (void)state;
    q3_simd best = q3_simd_detect();
    if (best < Q3_SIMD_AVX2) {
        fprintf(stderr, "test_gemv_prefetch_variants: no AVX2 here, nothing to compare\n");
        return;
    }
    uint64_t rows = 48, cols[] = {32, 1000, 1024, 3072};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        uint64_t n = cols[i];
        uint16_t *w = malloc(rows * n * 2), *tiled = malloc(q3_layout_elems(Q3_LAYOUT_R16C32, rows, n) * 2);
        float *x = malloc(n * sizeof *x), a[16], b[16];
        assert_non_null(w);
        assert_non_null(tiled);
        assert_non_null(x);
        for (uint64_t k = 0; k < rows * n; k++) w[k] = q3_f32_to_bf16(frand());
        for (uint64_t k = 0; k < n; k++) x[k] = frand();
        q3_tile_pack(Q3_LAYOUT_R16C32, w, rows, n, tiled);
        uint64_t panel_elems = (n + 31) / 32 * 512;
        for (uint64_t p = 0; p < rows / 16; p++) {
            q3_gemv_panel_avx2(tiled + p * panel_elems, n, x, a);
            q3_gemv_panel_avx2_prefetch(tiled + p * panel_elems, n, x, b);
            assert_memory_equal(a, b, sizeof a);
            if (best < Q3_SIMD_AVX512BF16) continue;
            q3_gemv_panel_avx512(tiled + p * panel_elems, n, x, a);
            q3_gemv_panel_avx512_prefetch(tiled + p * panel_elems, n, x, b);
            assert_memory_equal(a, b, sizeof a);
        }
        free(w);
        free(tiled);
        free(x);
    }
}

/* The vectorized softmaxes (AVX2, AVX-512) against a double-precision one: relative
 * error <= 1e-6 per weight (their exp is within ~2.6e-7) plus what rounding x - max
 * to f32 costs (|x - max| * 2^-24, relative, as with expf); values far below the
 * maximum (clamped at -87.5) may differ only by ~1e-38. Lengths cover the tails. */
static void test_softmax_levels(void **state)
{
    (void)state;
    static const int lens[] = {1, 7, 8, 37, 1000};
    q3_simd best = q3_simd_detect();
    float s[1000], in[1000];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int n = lens[li];
        for (int j = 0; j < n; j++) in[j] = j % 11 == 3 ? -300.0f + frand() : frand() * 40.0f;
        double maxv = -INFINITY, sum = 0, ref[1000];
        for (int j = 0; j < n; j++) maxv = in[j] > maxv ? in[j] : maxv;
        for (int j = 0; j < n; j++) sum += ref[j] = exp((double)in[j] - maxv);
        for (int level = Q3_SIMD_AVX2; level <= (int)best && level <= Q3_SIMD_AVX512BF16; level++) {
            for (int j = 0; j < n; j++) s[j] = in[j];
            if (level == Q3_SIMD_AVX2) q3_softmax_avx2(s, n);
            else q3_softmax_avx512(s, n);
            for (int j = 0; j < n; j++)
                if (!(fabs(s[j] - ref[j] / sum) <= (1e-6 + fabs(in[j] - maxv) * 0x1p-24) * ref[j] / sum + 1e-30))
                    fail_msg("%s softmax n %d [%d]: got %.9g want %.9g", q3_simd_name((q3_simd)level), n, j, s[j],
                             ref[j] / sum);
        }
    }
}

int main(void)
{
    printf("best SIMD level on this CPU: %s\n", q3_simd_name(q3_simd_detect()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_levels),
        cmocka_unit_test(test_multi_op),
        cmocka_unit_test(test_pool_runs_every_thread),
        cmocka_unit_test(test_pool_sleeps_and_wakes),
        cmocka_unit_test(test_simd_names),
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_rows),
        cmocka_unit_test(test_attention4_kernels),
        cmocka_unit_test(test_q8_store),
        cmocka_unit_test(test_attention_rows_q8),
        cmocka_unit_test(test_gemv_prefetch_variants),
        cmocka_unit_test(test_softmax_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
