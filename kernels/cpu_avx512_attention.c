/* cpu_avx512_attention.c - AVX-512 attention kernels. Scores: 4 keys at a time
 * (4 independent sums hide the FMA and reduction latency). Weighted sum of V:
 * 128 output columns held in 8 registers while every position streams by.
 * Tails (head_dim not a multiple of 16) are masked: nothing is read past a row. */
#include <immintrin.h>
#include "cpu_panel.h"

static inline __mmask16 tail_mask(int left) { return left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1); }

float q3_dot_avx512(const float *a, const float *b, uint64_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    uint64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask((int)(n - i < 16 ? n - i : 16));
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

void q3_attn_scores_avx512(const float *q, const float *k, uint64_t stride, int n_pos, int d, float scale, float *scores)
{
    int j = 0;
    for (; j + 4 <= n_pos; j += 4) {
        const float *k0 = k + (uint64_t)j * stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < d; i += 16) {
            __mmask16 m = tail_mask(d - i);
            __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, k0 + i), qv, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, k0 + stride + i), qv, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, k0 + 2 * stride + i), qv, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, k0 + 3 * stride + i), qv, a3);
        }
        scores[j] = _mm512_reduce_add_ps(a0) * scale;
        scores[j + 1] = _mm512_reduce_add_ps(a1) * scale;
        scores[j + 2] = _mm512_reduce_add_ps(a2) * scale;
        scores[j + 3] = _mm512_reduce_add_ps(a3) * scale;
    }
    for (; j < n_pos; j++) scores[j] = q3_dot_avx512(q, k + (uint64_t)j * stride, (uint64_t)d) * scale;
}

void q3_attn_pv_avx512(const float *p, const float *v, uint64_t stride, int n_pos, int d, float *out)
{
    for (int i0 = 0; i0 < d; i0 += 128) {
        __m512 acc[8];
        __mmask16 m[8];
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) {
            acc[c] = _mm512_setzero_ps();
            int left = d - i0 - c * 16;
            m[c] = left <= 0 ? 0 : tail_mask(left);
        }
        for (int j = 0; j < n_pos; j++) {
            const float *vj = v + (uint64_t)j * stride + i0;
            __m512 pj = _mm512_set1_ps(p[j]);
            _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++)
                acc[c] = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m[c], vj + c * 16), acc[c]);
        }
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) _mm512_mask_storeu_ps(out + i0 + c * 16, m[c], acc[c]);
    }
}
