/* cpu_avx512_attention.c - AVX-512 attention kernels over an F16 KV cache
 * (vcvtph2ps widens 16 halves per instruction). Scores: 4 keys at a time
 * (4 independent sums hide the FMA and reduction latency). Weighted sum of V:
 * 128 output columns held in 8 registers while every position streams by.
 * Tails (head_dim not a multiple of 16) are masked: nothing is read past a row. */
#include <immintrin.h>
#include <math.h>
#include "cpu_avx512_util.h"
#include "cpu_half.h"
#include "cpu_panel.h"

static inline __mmask16 tail_mask(int left) { return left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1); }

/* 16 halves (those outside m read as 0, nothing past them touched) as f32. A whole
 * vector is a plain load: on the Zen 5 guest the masked load of K and V rows from
 * memory held a decode's attention over 4096 positions at 67 ms a token, the plain
 * one 23 ms (q3bandwidth --attention-decode, 0.6B, 1 thread; docs/perf.md). */
static inline __m512 load_h(__mmask16 m, const uint16_t *p)
{
    return _mm512_cvtph_ps(m == 0xffff ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(m, p));
}

/* vcvtps2ph rounds to nearest even, as q3_half_from_float does. */
void q3_f16_store_avx512(uint16_t *dst, const float *src, uint64_t n)
{
    for (uint64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)(n - i < 16 ? n - i : 16));
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(dst + i, m, h);
    }
}

/* dot(q, k) over d values, k in F16. */
static float dot_h(const float *q, const uint16_t *k, int d)
{
    __m512 s0 = _mm512_setzero_ps();
    for (int i = 0; i < d; i += 16) {
        __mmask16 m = tail_mask(d - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), load_h(m, k + i), s0);
    }
    return _mm512_reduce_add_ps(s0);
}

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

void q3_attn_scores_avx512(const float *q, const uint16_t *k, uint64_t stride, int n_pos, int d, float scale, float *scores)
{
    int j = 0;
    for (; j + 4 <= n_pos; j += 4) {
        const uint16_t *k0 = k + (uint64_t)j * stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < d; i += 16) {
            __mmask16 m = tail_mask(d - i);
            __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
            a0 = _mm512_fmadd_ps(load_h(m, k0 + i), qv, a0);
            a1 = _mm512_fmadd_ps(load_h(m, k0 + stride + i), qv, a1);
            a2 = _mm512_fmadd_ps(load_h(m, k0 + 2 * stride + i), qv, a2);
            a3 = _mm512_fmadd_ps(load_h(m, k0 + 3 * stride + i), qv, a3);
        }
        scores[j] = _mm512_reduce_add_ps(a0) * scale;
        scores[j + 1] = _mm512_reduce_add_ps(a1) * scale;
        scores[j + 2] = _mm512_reduce_add_ps(a2) * scale;
        scores[j + 3] = _mm512_reduce_add_ps(a3) * scale;
    }
    for (; j < n_pos; j++) scores[j] = dot_h(q, k + (uint64_t)j * stride, d) * scale;
}

void q3_attn_pv_avx512(const float *p, const uint16_t *v, uint64_t stride, int n_pos, int d, float *out)
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
            const uint16_t *vj = v + (uint64_t)j * stride + i0;
            __m512 pj = _mm512_set1_ps(p[j]);
            _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++)
                acc[c] = _mm512_fmadd_ps(pj, load_h(m[c], vj + c * 16), acc[c]);
        }
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) _mm512_mask_storeu_ps(out + i0 + c * 16, m[c], acc[c]);
    }
}

/* 4 queries x 4 keys: scores[qi * ld + j + r] = scale * dot(q_qi, k_{j+r}) for j..j+3. */
void q3_attn_scores4_avx512(const float *const q[4], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                            float *scores, uint64_t ld)
{
    const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3];
    __m512 sc = _mm512_set1_ps(scale);
    int j = 0;
    for (; j + 4 <= n_pos; j += 4) {
        const uint16_t *k0 = k + (uint64_t)j * stride;
        __m512 acc[16];
        _Pragma("GCC unroll 16") for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_ps();
        for (int i = 0; i < d; i += 16) {
            __mmask16 m = tail_mask(d - i);
            __m512 qv[4] = {_mm512_maskz_loadu_ps(m, q0 + i), _mm512_maskz_loadu_ps(m, q1 + i),
                            _mm512_maskz_loadu_ps(m, q2 + i), _mm512_maskz_loadu_ps(m, q3 + i)};
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
                __m512 kv = load_h(m, k0 + r * stride + i);
                _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++)
                    acc[qi * 4 + r] = _mm512_fmadd_ps(qv[qi], kv, acc[qi * 4 + r]);
            }
        }
        __m512 s = _mm512_mul_ps(q3_reduce16(acc), sc); /* lane qi * 4 + r */
        _mm_storeu_ps(scores + j, _mm512_extractf32x4_ps(s, 0));
        _mm_storeu_ps(scores + ld + j, _mm512_extractf32x4_ps(s, 1));
        _mm_storeu_ps(scores + 2 * ld + j, _mm512_extractf32x4_ps(s, 2));
        _mm_storeu_ps(scores + 3 * ld + j, _mm512_extractf32x4_ps(s, 3));
    }
    for (; j < n_pos; j++) {
        const uint16_t *kj = k + (uint64_t)j * stride;
        scores[j] = dot_h(q0, kj, d) * scale;
        scores[ld + j] = dot_h(q1, kj, d) * scale;
        scores[2 * ld + j] = dot_h(q2, kj, d) * scale;
        scores[3 * ld + j] = dot_h(q3, kj, d) * scale;
    }
}

/* 4 queries: out_qi = sum_j p[qi * ld + j] * v_j over n_pos rows, 64 columns (4
 * registers per query, 16 accumulators) per pass over V. Two out pointers may be
 * equal when their queries are (the same values are stored twice). */
void q3_attn_pv4_avx512(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                        float *const out[4])
{
    for (int i0 = 0; i0 < d; i0 += 64) {
        __m512 acc[4][4];
        __mmask16 m[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
            int left = d - i0 - c * 16;
            m[c] = left <= 0 ? 0 : tail_mask(left);
            _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++) acc[qi][c] = _mm512_setzero_ps();
        }
        for (int j = 0; j < n_pos; j++) {
            const uint16_t *vj = v + (uint64_t)j * stride + i0;
            __m512 vv[4];
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) vv[c] = load_h(m[c], vj + c * 16);
            _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++) {
                __m512 pj = _mm512_set1_ps(p[qi * ld + j]);
                _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) acc[qi][c] = _mm512_fmadd_ps(pj, vv[c], acc[qi][c]);
            }
        }
        _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++)
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
                _mm512_mask_storeu_ps(out[qi] + i0 + c * 16, m[c], acc[qi][c]);
    }
}

/* exp(x) for x <= 0 (scores minus their max): 2^n * e^r with n = round(x / ln 2),
 * |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial. Measured over [-88, 0]
 * in steps of 4.4e-5: relative error <= 2.6e-7 after the softmax's division (expf:
 * ~1e-7); below -87.5 it is clamped, giving ~1e-38 where expf gives less: a
 * softmax weight that small is 0 next to the maximum's 1. */
static inline __m512 exp_nonpos(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.5f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x); /* ln2 split in two for exactness */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

void q3_softmax_avx512(float *s, int n)
{
    if (n <= 0) return;
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 16) mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(mv, tail_mask(n - j), s + j));
    __m512 maxv = _mm512_set1_ps(_mm512_reduce_max_ps(mv)), sum = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask(n - j);
        __m512 e = exp_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), maxv));
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
        _mm512_mask_storeu_ps(s + j, m, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask(n - j);
        _mm512_mask_storeu_ps(s + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv));
    }
}

/* 2 queries x 8 keys (a GQA pair): scores[qi * ld + j + r] for j..j+7. The pair
 * kernels are a decode's, over K and V in memory: they prefetch as the AVX2 ones. */
void q3_attn_scores2_avx512(const float *const q[2], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                            float *scores, uint64_t ld)
{
    __m512 sc = _mm512_set1_ps(scale);
    int j = 0, prefetch = q3_gemv_prefetch_wanted();
    for (; j + 8 <= n_pos; j += 8) {
        const uint16_t *k0 = k + (uint64_t)j * stride;
        if (prefetch)
            for (int r = 0; r < 8; r++) q3_prefetch_row(k0 + (uint64_t)(Q3_KV_PREFETCH_ROWS + r) * stride, d);
        __m512 acc[16];
        _Pragma("GCC unroll 16") for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_ps();
        for (int i = 0; i < d; i += 16) {
            __mmask16 m = tail_mask(d - i);
            __m512 q0 = _mm512_maskz_loadu_ps(m, q[0] + i), q1 = _mm512_maskz_loadu_ps(m, q[1] + i);
            _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {
                __m512 kv = load_h(m, k0 + r * stride + i);
                acc[r] = _mm512_fmadd_ps(q0, kv, acc[r]);
                acc[8 + r] = _mm512_fmadd_ps(q1, kv, acc[8 + r]);
            }
        }
        __m512 s = _mm512_mul_ps(q3_reduce16(acc), sc); /* lane qi * 8 + r */
        _mm256_storeu_ps(scores + j, _mm512_extractf32x8_ps(s, 0));
        _mm256_storeu_ps(scores + ld + j, _mm512_extractf32x8_ps(s, 1));
    }
    for (; j < n_pos; j++) {
        const uint16_t *kj = k + (uint64_t)j * stride;
        scores[j] = dot_h(q[0], kj, d) * scale;
        scores[ld + j] = dot_h(q[1], kj, d) * scale;
    }
}

/* 2 queries: out[qi] = sum_j p[qi * ld + j] * v_j, 128 columns (8 registers per
 * query) per pass over V. */
void q3_attn_pv2_avx512(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                        float *const out[2])
{
    int prefetch = q3_gemv_prefetch_wanted();
    for (int i0 = 0; i0 < d; i0 += 128) {
        __m512 a0[8], a1[8];
        __mmask16 m[8];
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) {
            int left = d - i0 - c * 16;
            m[c] = left <= 0 ? 0 : tail_mask(left);
            a0[c] = a1[c] = _mm512_setzero_ps();
        }
        for (int j = 0; j < n_pos; j++) {
            const uint16_t *vj = v + (uint64_t)j * stride + i0;
            if (prefetch) q3_prefetch_row(vj + (uint64_t)Q3_KV_PREFETCH_ROWS * stride, d - i0 < 128 ? d - i0 : 128);
            __m512 p0 = _mm512_set1_ps(p[j]), p1 = _mm512_set1_ps(p[ld + j]);
            _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) {
                __m512 vv = load_h(m[c], vj + c * 16);
                a0[c] = _mm512_fmadd_ps(p0, vv, a0[c]);
                a1[c] = _mm512_fmadd_ps(p1, vv, a1[c]);
            }
        }
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++) {
            _mm512_mask_storeu_ps(out[0] + i0 + c * 16, m[c], a0[c]);
            _mm512_mask_storeu_ps(out[1] + i0 + c * 16, m[c], a1[c]);
        }
    }
}
