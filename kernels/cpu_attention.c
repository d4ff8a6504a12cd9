/* cpu_attention.c - one query head's softmax attention over a KV cache, and the
 * f32 dot product, dispatched to the SIMD level in use (scalar versions here).
 * Scores and the weighted sum of V are the per-level kernels; the softmax is
 * shared (expf over n_pos values costs little next to 2 * n_pos * head_dim FMAs). */
#include <math.h>
#include "cpu_kernels.h"
#include "cpu_panel.h"

float q3_dot_scalar(const float *a, const float *b, uint64_t n)
{
    float s = 0.0f;
    for (uint64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void q3_attn_scores_scalar(const float *q, const float *k, uint64_t stride, int n_pos, int d, float scale, float *scores)
{
    for (int j = 0; j < n_pos; j++) scores[j] = q3_dot_scalar(q, k + (uint64_t)j * stride, (uint64_t)d) * scale;
}

void q3_attn_pv_scalar(const float *p, const float *v, uint64_t stride, int n_pos, int d, float *out)
{
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int j = 0; j < n_pos; j++)
        for (int i = 0; i < d; i++) out[i] += p[j] * v[(uint64_t)j * stride + i];
}

float q3_dot(const float *a, const float *b, uint64_t n)
{
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) return q3_dot_avx512(a, b, n);
    if (level == Q3_SIMD_AVX2) return q3_dot_avx2(a, b, n);
    return q3_dot_scalar(a, b, n);
}

void q3_attend_head(const float *q, const float *k, const float *v, uint64_t kv_stride, int n_pos, int head_dim,
                    float scale, float *scores, float *out)
{
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) q3_attn_scores_avx512(q, k, kv_stride, n_pos, head_dim, scale, scores);
    else if (level == Q3_SIMD_AVX2) q3_attn_scores_avx2(q, k, kv_stride, n_pos, head_dim, scale, scores);
    else q3_attn_scores_scalar(q, k, kv_stride, n_pos, head_dim, scale, scores);
    float maxv = -INFINITY, sum = 0.0f;
    for (int j = 0; j < n_pos; j++) maxv = scores[j] > maxv ? scores[j] : maxv;
    for (int j = 0; j < n_pos; j++) sum += scores[j] = expf(scores[j] - maxv);
    float inv = n_pos > 0 ? 1.0f / sum : 0.0f;
    for (int j = 0; j < n_pos; j++) scores[j] *= inv;
    if (level >= Q3_SIMD_AVX512BF16) q3_attn_pv_avx512(scores, v, kv_stride, n_pos, head_dim, out);
    else if (level == Q3_SIMD_AVX2) q3_attn_pv_avx2(scores, v, kv_stride, n_pos, head_dim, out);
    else q3_attn_pv_scalar(scores, v, kv_stride, n_pos, head_dim, out);
}
