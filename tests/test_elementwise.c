/* test_elementwise.c - the per-token steps (RMSNorm, RoPE, SiLU x up, the add) at
 * every SIMD level this CPU has: RMSNorm, RoPE and the add give the scalar
 * reference's bits exactly; SiLU (a vector exp from AVX2 up) is within a stated
 * bound of a double-precision one, at lengths that leave every tail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../kernels/cpu_kernels.h"
#include "../kernels/cpu_panel.h"

enum { MAXN = 3077 };
static const uint64_t lens[] = {1, 7, 8, 9, 64, 128, 1000, 1024, 3077};

static uint32_t rng = 777u;
static float frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return ((float)(rng >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static void fill(float *v, uint64_t n, float mag)
{
    for (uint64_t i = 0; i < n; i++) v[i] = frand() * mag;
}

static void test_rmsnorm_rope_add_exact(void **state)
{
    (void)state;
    static float x[MAXN], w[MAXN], want[MAXN], got[MAXN], cs[MAXN], sn[MAXN], y[MAXN];
    q3_simd best = q3_simd_detect();
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint64_t n = lens[li];
        fill(x, n, 5.0f), fill(w, n, 2.0f), fill(y, n, 3.0f);
        for (uint64_t i = 0; i < n; i++) cs[i] = cosf((float)i * 0.37f), sn[i] = sinf((float)i * 0.37f);
        q3_rmsnorm_scalar(want, x, w, n, 1e-6f);
        for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
            q3_simd_set((q3_simd)level);
            const char *name = q3_simd_name((q3_simd)level);
            q3_rmsnorm(got, x, w, n, 1e-6f);
            if (memcmp(got, want, n * sizeof *got)) fail_msg("%s rmsnorm n %llu differs", name, (unsigned long long)n);
            memcpy(got, x, n * sizeof *got); /* in place, as the q/k norms run */
            q3_rmsnorm(got, got, w, n, 1e-6f);
            if (memcmp(got, want, n * sizeof *got)) fail_msg("%s rmsnorm in place n %llu", name, (unsigned long long)n);
            if (n % 2 == 0) {
                float ref[MAXN];
                memcpy(ref, x, n * sizeof *ref), memcpy(got, x, n * sizeof *got);
                q3_rope_scalar(ref, cs, sn, n / 2);
                q3_rope(got, cs, sn, n / 2);
                if (memcmp(got, ref, n * sizeof *got)) fail_msg("%s rope n %llu differs", name, (unsigned long long)n);
            }
            memcpy(got, x, n * sizeof *got);
            q3_add(got, y, n);
            for (uint64_t i = 0; i < n; i++)
                if (got[i] != x[i] + y[i]) fail_msg("%s add n %llu [%llu]", name, (unsigned long long)n, (unsigned long long)i);
        }
    }
    q3_simd_set(best);
}

/* SiLU x up against double precision: relative error <= 1e-6 (the vector exp's
 * ~3e-7 plus the division's and products' roundings; expf's ~1e-7 likewise), plus
 * 1e-30 absolute for g below -87 where the vector exp's clamp gives ~1e-36 instead
 * of ~1e-40. Inputs cover [-100, 100], zero and both signs of u. */
static void test_silu_bound(void **state)
{
    (void)state;
    static float g[MAXN], u[MAXN], got[MAXN];
    q3_simd best = q3_simd_detect();
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint64_t n = lens[li];
        for (uint64_t i = 0; i < n; i++) g[i] = i % 97 == 5 ? 0.0f : i % 13 == 1 ? frand() * 100.0f : frand() * 8.0f;
        fill(u, n, 4.0f);
        for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
            q3_simd_set((q3_simd)level);
            memcpy(got, g, n * sizeof *got);
            q3_silu_mul(got, u, n);
            for (uint64_t i = 0; i < n; i++) {
                double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
                if (!(fabs(got[i] - ref) <= 1e-6 * fabs(ref) + 1e-30))
                    fail_msg("%s silu n %llu [%llu] g %.9g u %.9g: got %.9g want %.9g", q3_simd_name((q3_simd)level),
                             (unsigned long long)n, (unsigned long long)i, g[i], u[i], got[i], ref);
            }
        }
    }
    q3_simd_set(best);
}

/* Not finite inputs stay visible (q3run stops on non-finite logits): a NaN gate
 * gives NaN, +inf gives inf, at every level. */
static void test_silu_not_finite(void **state)
{
    (void)state;
    q3_simd best = q3_simd_detect();
    for (int level = Q3_SIMD_SCALAR; level <= (int)best; level++) {
        q3_simd_set((q3_simd)level);
        float g[9] = {NAN, INFINITY, 1.0f, NAN, 2.0f, 3.0f, 4.0f, 5.0f, NAN}, u[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
        q3_silu_mul(g, u, 9);
        assert_true(isnan(g[0]) && isnan(g[3]) && isnan(g[8]));
        assert_true(isinf(g[1]) && g[1] > 0);
        assert_true(isfinite(g[2]));
    }
    q3_simd_set(best);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_rope_add_exact),
        cmocka_unit_test(test_silu_bound),
        cmocka_unit_test(test_silu_not_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
