/* cpu_elementwise.c - the per-token steps of a layer (RMSNorm, RoPE, SwiGLU's SiLU,
 * the residual add) in plain C, the reference, and their dispatch: from AVX2 up
 * they run cpu_avx2_elementwise.c (256-bit is enough for steps this small; an
 * AVX-512 CPU has AVX2). */
#include <math.h>
#include "cpu_kernels.h"
#include "cpu_panel.h"

void q3_rmsnorm_scalar(float *out, const float *x, const float *w, uint64_t n, float eps)
{
    /* 8 partial sums, lane k taking the columns i % 8 == k: the AVX2 version adds in
     * the same order, so both give the same bits. */
    float part[Q3_RMS_LANES] = {0};
    uint64_t i = 0;
    for (; i + Q3_RMS_LANES <= n; i += Q3_RMS_LANES)
        for (int k = 0; k < Q3_RMS_LANES; k++) part[k] += x[i + k] * x[i + k];
    float ss = 0.0f;
    for (; i < n; i++) ss += x[i] * x[i];
    for (int k = 0; k < Q3_RMS_LANES; k++) ss += part[k];
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (i = 0; i < n; i++) out[i] = w[i] * (x[i] * scale);
}

void q3_rope_scalar(float *v, const float *cos_p, const float *sin_p, uint64_t half)
{
    for (uint64_t i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_p[i] - b * sin_p[i];
        v[i + half] = b * cos_p[i] + a * sin_p[i];
    }
}

void q3_silu_mul_scalar(float *g, const float *u, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void q3_rmsnorm(float *out, const float *x, const float *w, uint64_t n, float eps)
{
    if (q3_simd_active() >= Q3_SIMD_AVX2) q3_rmsnorm_avx2(out, x, w, n, eps);
    else q3_rmsnorm_scalar(out, x, w, n, eps);
}

void q3_rope(float *v, const float *cos_p, const float *sin_p, uint64_t half)
{
    if (q3_simd_active() >= Q3_SIMD_AVX2) q3_rope_avx2(v, cos_p, sin_p, half);
    else q3_rope_scalar(v, cos_p, sin_p, half);
}

void q3_silu_mul(float *g, const float *u, uint64_t n)
{
    if (q3_simd_active() >= Q3_SIMD_AVX2) q3_silu_mul_avx2(g, u, n);
    else q3_silu_mul_scalar(g, u, n);
}

void q3_add(float *x, const float *y, uint64_t n)
{
    if (q3_simd_active() >= Q3_SIMD_AVX2) {
        q3_add_avx2(x, y, n);
        return;
    }
    for (uint64_t i = 0; i < n; i++) x[i] += y[i];
}
