/* cpu_avx2_attention.c - AVX2+FMA attention kernels over an F16 KV cache (F16C
 * widens 8 halves per instruction): scores 4 keys at a time, the weighted sum of V
 * 64 columns (8 registers) at a time; tails in scalar code. */
#include <immintrin.h>
#include "cpu_half.h"
#include "cpu_panel.h"

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load_h8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

float q3_dot_avx2(const float *a, const float *b, uint64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float r = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

/* vcvtps2ph rounds to nearest even, as q3_half_from_float does. */
void q3_f16_store_avx2(uint16_t *dst, const float *src, uint64_t n)
{
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = q3_half_from_float(src[i]);
}

static float dot_h(const float *q, const uint16_t *k, int d)
{
    __m256 s0 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= d; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_h8(k + i), s0);
    float r = hsum(s0);
    for (; i < d; i++) r += q[i] * q3_half_to_float(k[i]);
    return r;
}

void q3_attn_scores_avx2(const float *q, const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                         float *scores)
{
    int j = 0, d8 = d / 8 * 8;
    for (; j + 4 <= n_pos; j += 4) {
        const uint16_t *k0 = k + (uint64_t)j * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < d8; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(load_h8(k0 + i), qv, a0);
            a1 = _mm256_fmadd_ps(load_h8(k1 + i), qv, a1);
            a2 = _mm256_fmadd_ps(load_h8(k2 + i), qv, a2);
            a3 = _mm256_fmadd_ps(load_h8(k3 + i), qv, a3);
        }
        float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
        for (int i = d8; i < d; i++) {
            s0 += q[i] * q3_half_to_float(k0[i]), s1 += q[i] * q3_half_to_float(k1[i]);
            s2 += q[i] * q3_half_to_float(k2[i]), s3 += q[i] * q3_half_to_float(k3[i]);
        }
        scores[j] = s0 * scale, scores[j + 1] = s1 * scale, scores[j + 2] = s2 * scale, scores[j + 3] = s3 * scale;
    }
    for (; j < n_pos; j++) scores[j] = dot_h(q, k + (uint64_t)j * stride, d) * scale;
}

void q3_attn_pv_avx2(const float *p, const uint16_t *v, uint64_t stride, int n_pos, int d, float *out)
{
    int i0 = 0;
    for (; i0 + 64 <= d; i0 += 64) {
        __m256 acc[8];
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
        for (int j = 0; j < n_pos; j++) {
            const uint16_t *vj = v + (uint64_t)j * stride + i0;
            __m256 pj = _mm256_set1_ps(p[j]);
            _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++)
                acc[c] = _mm256_fmadd_ps(pj, load_h8(vj + c * 8), acc[c]);
        }
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) _mm256_storeu_ps(out + i0 + c * 8, acc[c]);
    }
    for (; i0 < d; i0 += 8) { /* last columns: 8 (or fewer) at a time */
        int n = d - i0 < 8 ? d - i0 : 8;
        float acc[8] = {0};
        for (int j = 0; j < n_pos; j++)
            for (int c = 0; c < n; c++) acc[c] += p[j] * q3_half_to_float(v[(uint64_t)j * stride + i0 + c]);
        for (int c = 0; c < n; c++) out[i0 + c] = acc[c];
    }
}
