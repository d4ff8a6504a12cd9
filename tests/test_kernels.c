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
#include "../format/q3_format.h"
#include "../kernels/cpu_kernels.h"

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
    static const uint64_t shapes[][2] = {{16, 32}, {1, 1}, {37, 45}, {64, 1024}, {100, 70}, {33, 96}};
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
            q3_pool_destroy(pool);
        }
    }
    q3_simd_set(best);
}

/* Several ops in one call, each row range split across threads. */
static void test_multi_op(void **state)
{
    (void)state;
    q3_pool *pool = q3_pool_create(2);
    uint64_t rows[3] = {48, 17, 17}, cols = 64;
    uint16_t *w[3];
    float *y[3], x[64];
    q3_matmul_op ops[3];
    for (int i = 0; i < 64; i++) x[i] = frand();
    for (int o = 0; o < 3; o++) {
        uint16_t *flat = malloc(rows[o] * cols * 2);
        for (uint64_t i = 0; i < rows[o] * cols; i++) flat[i] = q3_f32_to_bf16(frand());
        w[o] = malloc(q3_layout_elems(Q3_LAYOUT_R16C32, rows[o], cols) * 2);
        q3_tile_pack(Q3_LAYOUT_R16C32, flat, rows[o], cols, w[o]);
        y[o] = calloc(rows[o], sizeof(float));
        ops[o] = (q3_matmul_op){w[o], rows[o], cols, y[o], rows[o]};
        for (uint64_t r = 0; r < rows[o]; r++) {
            double ref = 0;
            for (uint64_t c = 0; c < cols; c++) ref += (double)q3_bf16_to_f32(flat[r * cols + c]) * x[c];
            ops[o].y[r] = (float)ref; /* expected, overwritten below */
        }
        free(flat);
    }
    float *expect[3];
    for (int o = 0; o < 3; o++) {
        expect[o] = malloc(rows[o] * sizeof(float));
        for (uint64_t r = 0; r < rows[o]; r++) expect[o][r] = y[o][r], y[o][r] = 0;
    }
    q3_matmul(pool, ops, 3, x, 1);
    for (int o = 0; o < 3; o++) {
        for (uint64_t r = 0; r < rows[o]; r++) assert_true(fabsf(y[o][r] - expect[o][r]) < 1e-4f);
        free(w[o]);
        free(y[o]);
        free(expect[o]);
    }
    q3_pool_destroy(pool);
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

int main(void)
{
    printf("best SIMD level on this CPU: %s\n", q3_simd_name(q3_simd_detect()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_levels),
        cmocka_unit_test(test_multi_op),
        cmocka_unit_test(test_pool_runs_every_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
