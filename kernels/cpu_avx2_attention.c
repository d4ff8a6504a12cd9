/* cpu_avx2_attention.c - AVX2+FMA attention kernels over an F16 KV cache (F16C
 * widens 8 halves per instruction): scores 4 keys at a time, the weighted sum of V
 * 64 columns (8 registers) at a time, the same for 2 queries sharing one pass over
 * K and V, and a vectorized softmax; tails in scalar code. */
#include <immintrin.h>
#include <math.h>
#include "cpu_avx2_util.h"
#include "cpu_half.h"
#include "cpu_panel.h"

float q3_dot_avx2(const float *a, const float *b, uint64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float r = q3_hsum256(_mm256_add_ps(s0, s1));
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
    for (; i + 8 <= d; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), q3_load_h8(k + i), s0);
    float r = q3_hsum256(s0);
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
            a0 = _mm256_fmadd_ps(q3_load_h8(k0 + i), qv, a0);
            a1 = _mm256_fmadd_ps(q3_load_h8(k1 + i), qv, a1);
            a2 = _mm256_fmadd_ps(q3_load_h8(k2 + i), qv, a2);
            a3 = _mm256_fmadd_ps(q3_load_h8(k3 + i), qv, a3);
        }
        float s0 = q3_hsum256(a0), s1 = q3_hsum256(a1), s2 = q3_hsum256(a2), s3 = q3_hsum256(a3);
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
                acc[c] = _mm256_fmadd_ps(pj, q3_load_h8(vj + c * 8), acc[c]);
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

/* expf per position was ~1.8 M calls a token at 4096 positions (0.6B): a vector exp
 * keeps the softmax small next to the reads of K and V. */
void q3_softmax_avx2(float *s, int n)
{
    if (n <= 0) return;
    int n8 = n / 8 * 8;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < n8; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
    float maxf = q3_hmax256(mv);
    for (int j = n8; j < n; j++) maxf = s[j] > maxf ? s[j] : maxf;
    __m256 maxv = _mm256_set1_ps(maxf), sum = _mm256_setzero_ps();
    for (int j = 0; j < n8; j += 8) {
        __m256 e = q3_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), maxv));
        sum = _mm256_add_ps(sum, e);
        _mm256_storeu_ps(s + j, e);
    }
    float tail[8] = {0};
    for (int j = n8; j < n; j++) tail[j - n8] = s[j] - maxf;
    __m256 e = q3_exp256(_mm256_loadu_ps(tail));
    _mm256_storeu_ps(tail, e);
    float total = q3_hsum256(sum);
    for (int j = n8; j < n; j++) total += s[j] = tail[j - n8];
    __m256 inv = _mm256_set1_ps(1.0f / total);
    for (int j = 0; j < n8; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv));
    for (int j = n8; j < n; j++) s[j] *= 1.0f / total;
}

/* 2 queries x 4 keys (a GQA pair, or two prompt tokens of one head) share each pass
 * over K: scores[qi * ld + j]. Before, each query read all of K and V on its own:
 * at 4096 positions a head's K and V are 1 MiB each, so the second query read them
 * again from L3 or memory. The 8 dot products are finished by one hadd tree. */
void q3_attn_scores2_avx2(const float *const q[2], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                          float *scores, uint64_t ld)
{
    int j = 0, d8 = d / 8 * 8, prefetch = q3_gemv_prefetch_wanted();
    __m256 sc = _mm256_set1_ps(scale);
    for (; j + 4 <= n_pos; j += 4) {
        const uint16_t *k0 = k + (uint64_t)j * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
        if (prefetch)
            for (int r = 0; r < 4; r++) q3_prefetch_row(k0 + (uint64_t)(Q3_KV_PREFETCH_ROWS + r) * stride, d);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int i = 0; i < d8; i += 8) {
            __m256 q0 = _mm256_loadu_ps(q[0] + i), q1 = _mm256_loadu_ps(q[1] + i), kv;
            kv = q3_load_h8(k0 + i), a0 = _mm256_fmadd_ps(kv, q0, a0), b0 = _mm256_fmadd_ps(kv, q1, b0);
            kv = q3_load_h8(k1 + i), a1 = _mm256_fmadd_ps(kv, q0, a1), b1 = _mm256_fmadd_ps(kv, q1, b1);
            kv = q3_load_h8(k2 + i), a2 = _mm256_fmadd_ps(kv, q0, a2), b2 = _mm256_fmadd_ps(kv, q1, b2);
            kv = q3_load_h8(k3 + i), a3 = _mm256_fmadd_ps(kv, q0, a3), b3 = _mm256_fmadd_ps(kv, q1, b3);
        }
        /* hadd pairs within 128-bit lanes; the last step adds the two lanes:
         * lanes 0-3 = query 0 x keys 0-3, lanes 4-7 = query 1 x keys 0-3. */
        __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
        __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(b0, b1), _mm256_hadd_ps(b2, b3));
        __m256 s = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
        float out[8];
        _mm256_storeu_ps(out, s);
        for (int i = d8; i < d; i++) /* head_dim not a multiple of 8 */
            for (int r = 0; r < 4; r++) {
                float kf = q3_half_to_float(k[(uint64_t)(j + r) * stride + i]);
                out[r] += q[0][i] * kf, out[4 + r] += q[1][i] * kf;
            }
        s = _mm256_mul_ps(_mm256_loadu_ps(out), sc);
        _mm_storeu_ps(scores + j, _mm256_castps256_ps128(s));
        _mm_storeu_ps(scores + ld + j, _mm256_extractf128_ps(s, 1));
    }
    for (; j < n_pos; j++) {
        const uint16_t *kj = k + (uint64_t)j * stride;
        scores[j] = dot_h(q[0], kj, d) * scale;
        scores[ld + j] = dot_h(q[1], kj, d) * scale;
    }
}

/* 2 queries: out[qi] = sum_j p[qi * ld + j] * v_j in one sequential pass over V: the
 * 2 x head_dim sums stay in an L1 buffer (2 loads, 2 FMAs, 2 stores per 8 columns;
 * 16 ymm cannot hold 2 x 128 columns). The earlier 4 passes of 32 columns (sums in
 * registers) read every 4th cache line of V per pass: with the software prefetch
 * below, the single pass took a decode's attention at 4096 positions (0.6B, K/V
 * beyond the caches) from 72-74 to 57-59 ms a token. */
void q3_attn_pv2_avx2(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                      float *const out[2])
{
    if (d % 8 || d > 256) { /* head_dim 128 in every Qwen3; others column by column */
        for (int i = 0; i < d; i++) {
            float s0 = 0.0f, s1 = 0.0f;
            for (int j = 0; j < n_pos; j++) {
                float vf = q3_half_to_float(v[(uint64_t)j * stride + i]);
                s0 += p[j] * vf, s1 += p[ld + j] * vf;
            }
            out[0][i] = s0, out[1][i] = s1;
        }
        return;
    }
    _Alignas(32) float acc[2][256];
    for (int c = 0; c < d; c += 8) _mm256_store_ps(acc[0] + c, _mm256_setzero_ps()), _mm256_store_ps(acc[1] + c, _mm256_setzero_ps());
    int prefetch = q3_gemv_prefetch_wanted();
    for (int j = 0; j < n_pos; j++) {
        const uint16_t *vj = v + (uint64_t)j * stride;
        if (prefetch) q3_prefetch_row(vj + (uint64_t)Q3_KV_PREFETCH_ROWS * stride, d);
        __m256 p0 = _mm256_broadcast_ss(p + j), p1 = _mm256_broadcast_ss(p + ld + j);
        for (int c = 0; c < d; c += 8) {
            __m256 vv = q3_load_h8(vj + c);
            _mm256_store_ps(acc[0] + c, _mm256_fmadd_ps(p0, vv, _mm256_load_ps(acc[0] + c)));
            _mm256_store_ps(acc[1] + c, _mm256_fmadd_ps(p1, vv, _mm256_load_ps(acc[1] + c)));
        }
    }
    for (int c = 0; c < d; c += 8) _mm256_storeu_ps(out[0] + c, _mm256_load_ps(acc[0] + c)), _mm256_storeu_ps(out[1] + c, _mm256_load_ps(acc[1] + c));
}
