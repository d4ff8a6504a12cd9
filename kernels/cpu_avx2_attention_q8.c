/* cpu_avx2_attention_q8.c - AVX2+FMA attention over the 8-bit KV cache (cpu_kernels.h):
 * G = 1..4 queries share each pass over K and V. The scores take each query in int16 and
 * K's values widened to int16 (vpmaddwd, exact block sums weighed by their scale in f32);
 * a query that is not finite takes the f32 form, each 8 int8 values of K widened to f32
 * (vpmovsxbd, vcvtdq2ps) and multiplied by their block's scale once for every query. V's
 * rows are weighted by p times their block's scale, from a table made once a chunk. At one
 * thread these kernels are bound by the widening instructions, not by the reads
 * (docs/kernels.md). head_dim is a multiple of Q3_Q8_BLOCK (the context checks it). */
#include <immintrin.h>
#include <math.h>
#include "cpu_avx2_util.h"
#include "cpu_kernels.h"
#include "cpu_panel.h"
#include "cpu_q8_util.h"

#ifndef Q8_SCORES_I16
#define Q8_SCORES_I16 1 /* the scores with q in int16 (scores_step_i16); 0: in f32 (a build option, to compare) */
#endif

Q3_Q8_INLINE __m256 load_q8(const int8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* As q3_q8_store_scalar, bit for bit: the same max, the same scalar scale and reciprocal,
 * the same products; vcvtps2dq rounds ties to even as nearbyintf does. A block with an
 * inf or a NaN goes to the scalar code (which gives it a NaN scale). */
void q3_q8_store_avx2(int8_t *dst, uint16_t *scales, const float *src, uint64_t n)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), inf = _mm256_set1_ps(INFINITY);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (uint64_t b = 0; b < n / Q3_Q8_BLOCK; b++) {
        const float *x = src + b * Q3_Q8_BLOCK;
        __m256 v[4], m = _mm256_setzero_ps();
        int bad = 0;
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + i * 8);
            __m256 a = _mm256_and_ps(v[i], abs_mask);
            bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_NLT_UQ)); /* inf or NaN */
            m = _mm256_max_ps(m, a);
        }
        if (bad) {
            q3_q8_store_scalar(dst + b * Q3_Q8_BLOCK, scales + b, x, Q3_Q8_BLOCK);
            continue;
        }
        float d = q3_hmax256(m) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        scales[b] = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int i = 0; i < 4; i++) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], idv));
        /* packs work within 128-bit lanes: the permute puts the 8 groups of 4 back in order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(dst + b * Q3_Q8_BLOCK), _mm256_permutevar8x32_epi32(p, order));
    }
}

/* lane i = the sum of v[i]'s 8 lanes, i < 8 (two hadd levels within 128-bit lanes,
 * then the two halves added). */
Q3_Q8_INLINE __m256 hsum8x8(const __m256 v[8])
{
    __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* Scores of P positions from j for G queries, P * G <= 8 sums (query-major) in
 * registers. Each 8 values of K are widened and multiplied by their block's scale once
 * and serve every query; the 8 sums end in one reduction. */
Q3_Q8_INLINE void scores_step(const float *const q[], int G, int P, const int8_t *k, const uint16_t *ks, int j,
                              int d, float scale, float *scores, uint64_t ld)
{
    int nb = d / Q3_Q8_BLOCK;
    float sc[8][Q3_Q8_MAX_HEAD_DIM / Q3_Q8_BLOCK]; /* the P rows' scales as f32 */
    q8_score_rows(k, ks, j, P, d, sc);
    __m256 tot[8];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) tot[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        _Pragma("GCC unroll 4") for (int v = 0; v < Q3_Q8_BLOCK / 8; v++) {
            int i = b * Q3_Q8_BLOCK + v * 8;
            __m256 qv[4];
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) qv[g] = _mm256_loadu_ps(q[g] + i);
            _Pragma("GCC unroll 8") for (int p = 0; p < P; p++) {
                __m256 kv = _mm256_mul_ps(load_q8(k + (uint64_t)(j + p) * d + i), _mm256_broadcast_ss(sc[p] + b));
                _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                    tot[g * P + p] = _mm256_fmadd_ps(qv[g], kv, tot[g * P + p]);
            }
        }
    }
    float s[8];
    _mm256_storeu_ps(s, _mm256_mul_ps(hsum8x8(tot), _mm256_set1_ps(scale)));
    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 8") for (int p = 0; p < P; p++) scores[(uint64_t)g * ld + j + p] = s[g * P + p];
}

/* A query rounded to int16 for scores_step_i16: qi = round(q / qs), qs = max|q| / 32767 (1
 * where q is all zeros). 0 where q holds a NaN or an infinity (the float step takes it). */
Q3_Q8_INLINE int query_i16(const float *q, int d, int16_t *qi, float *qs)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < d; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(q + i), abs_mask));
    float mx = q3_hmax256(m);
    for (int i = 0; i < d; i++) /* max_ps drops a NaN: look for one */
        if (q[i] != q[i]) return 0;
    if (!(mx < INFINITY)) return 0;
    *qs = mx > 0.0f ? mx / 32767.0f : 1.0f;
    __m256 inv = _mm256_set1_ps(mx > 0.0f ? 32767.0f / mx : 0.0f);
    for (int i = 0; i < d; i += 16) { /* packs saturates: a rounding up to 32768 stays 32767 */
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q + i), inv));
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q + i + 8), inv));
        _mm256_storeu_si256((__m256i *)(qi + i), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8));
    }
    return 1;
}

/* scores_step with each query in int16 (query_i16): a block's 32 products of K's int8
 * values (widened to int16 once for every query) by q's int16 are two vpmaddwd and an add,
 * exact in int32; the block's sum is then weighed by its scale in f32 (one conversion and
 * one FMA a block), as the scalar kernel weighs each block's sum. Half the float step's
 * conversions, multiplies and FMAs; q's rounding is 2^-16 of its largest value. */
Q3_Q8_INLINE void scores_step_i16(const int16_t *qi, const float *qs, int G, int P, const int8_t *k, const uint16_t *ks,
                                  int j, int d, float scale, float *scores, uint64_t ld)
{
    int nb = d / Q3_Q8_BLOCK;
    float sc[8][Q3_Q8_MAX_HEAD_DIM / Q3_Q8_BLOCK]; /* the P rows' scales as f32 */
    q8_score_rows(k, ks, j, P, d, sc);
    __m256 tot[8];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) tot[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        int i = b * Q3_Q8_BLOCK;
        _Pragma("GCC unroll 8") for (int p = 0; p < P; p++) {
            const int8_t *kp = k + (uint64_t)(j + p) * d + i;
            __m256i k0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)kp));
            __m256i k1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(kp + 16)));
            __m256 s = _mm256_broadcast_ss(sc[p] + b);
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
                const int16_t *qg = qi + g * Q3_Q8_MAX_HEAD_DIM + i;
                __m256i a = _mm256_add_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)qg), k0),
                                             _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(qg + 16)), k1));
                tot[g * P + p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), s, tot[g * P + p]);
            }
        }
    }
    float r[8];
    _mm256_storeu_ps(r, hsum8x8(tot));
    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 8") for (int p = 0; p < P; p++) scores[(uint64_t)g * ld + j + p] = r[g * P + p] * (qs[g] * scale);
}

/* The steps of P positions that fit n_pos, with G queries (constants where called, so each
 * step unrolls for them): int16 queries where ints, else f32. Returns the first position left. */
Q3_Q8_INLINE int scores_steps(const float *const q[], const int16_t *qi, const float *qs, int ints, int G, int P,
                              const int8_t *k, const uint16_t *ks, int n_pos, int d, float scale, float *scores,
                              uint64_t ld)
{
    int j = 0;
    if (ints)
        for (; j + P <= n_pos; j += P) scores_step_i16(qi, qs, G, P, k, ks, j, d, scale, scores, ld);
    else
        for (; j + P <= n_pos; j += P) scores_step(q, G, P, k, ks, j, d, scale, scores, ld);
    return j;
}

void q3_attn_scores_q8_avx2(const float *const q[], int G, const int8_t *k, const uint16_t *ks, int n_pos, int d,
                            float scale, float *scores, uint64_t ld)
{
    int j;
    _Alignas(32) int16_t qi[4 * Q3_Q8_MAX_HEAD_DIM];
    float qs[4];
    int ints = Q8_SCORES_I16;
    for (int g = 0; g < G && ints; g++) ints = query_i16(q[g], d, qi + g * Q3_Q8_MAX_HEAD_DIM, &qs[g]);
    switch (G) {
    case 1: j = scores_steps(q, qi, qs, ints, 1, 8, k, ks, n_pos, d, scale, scores, ld); break;
    case 2: j = scores_steps(q, qi, qs, ints, 2, 4, k, ks, n_pos, d, scale, scores, ld); break;
    case 3: j = scores_steps(q, qi, qs, ints, 3, 2, k, ks, n_pos, d, scale, scores, ld); break; /* 6 sums: the reduction's last two lanes unused */
    default: j = scores_steps(q, qi, qs, ints, 4, 2, k, ks, n_pos, d, scale, scores, ld); break;
    }
    if (j < n_pos) /* the last positions */
        q3_attn_scores_q8_scalar(q, G, k + (uint64_t)j * d, ks + (uint64_t)j * (d / Q3_Q8_BLOCK), n_pos - j, d, scale,
                                 scores + j, ld);
}

/* Columns c0 .. c0 + 8 * NV of rows j0 .. j1 added into out[g] (NV * G <= 8 sums in
 * registers: 8 independent FMA chains, enough to hide the FMA's latency). w[(r * G + g)
 * * nb + b]: row j0 + r's weight for query g in block b (p times the block's scale). */
Q3_Q8_INLINE void pv_pass(const float *w, int G, int NV, const int8_t *v, int j0, int j1, int n_pos, int d,
                          int c0, float *const out[])
{
    int nb = d / Q3_Q8_BLOCK, b0 = c0 / Q3_Q8_BLOCK;
    __m256 acc[4][8];
    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[g][c] = _mm256_loadu_ps(out[g] + c0 + c * 8);
    for (int j = j0; j < j1; j++) {
        const int8_t *vj = v + (uint64_t)j * d + c0;
        const float *wj = w + (uint64_t)(j - j0) * G * nb + b0;
        if (PV_PF_ROWS && c0 == 0 && j + PV_PF_ROWS < n_pos) /* the next chunk's row, a row at a time */
            q8_prefetch_row(vj + (uint64_t)PV_PF_ROWS * d, d);
        __m256 wb[4][2]; /* [query][block of the pass]: NV <= 8 spans at most 2 blocks */
        _Pragma("GCC unroll 2") for (int bb = 0; bb < (NV * 8 + Q3_Q8_BLOCK - 1) / Q3_Q8_BLOCK; bb++)
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) wb[g][bb] = _mm256_broadcast_ss(wj + g * nb + bb);
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) {
            __m256 x = load_q8(vj + c * 8);
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                acc[g][c] = _mm256_fmadd_ps(wb[g][c * 8 / Q3_Q8_BLOCK], x, acc[g][c]);
        }
    }
    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) _mm256_storeu_ps(out[g] + c0 + c * 8, acc[g][c]);
}

/* Chunk by chunk: the weights of a chunk's rows first (a table in L1, each scale
 * widened once), then the passes, the first of which prefetches the next chunk's rows
 * (the passes read a row's lines out of order, which the hardware prefetcher does not
 * follow; all of a chunk's prefetches at once stalled on the fill buffers). */
Q3_Q8_INLINE void pv_chunks(const float *p, uint64_t ld, int G, int NV, const int8_t *v, const uint16_t *vs,
                            int n_pos, int d, float *const out[])
{
    int nb = d / Q3_Q8_BLOCK;
    _Alignas(32) float w[PV_CHUNK * 4 * (Q3_Q8_MAX_HEAD_DIM / Q3_Q8_BLOCK)];
    for (int j0 = 0; j0 < n_pos; j0 += PV_CHUNK) {
        int j1 = n_pos - j0 < PV_CHUNK ? n_pos : j0 + PV_CHUNK;
        q8_chunk_weights(p, ld, G, vs, j0, j1, nb, w);
        for (int c0 = 0; c0 < d; c0 += NV * 8) pv_pass(w, G, NV, v, j0, j1, n_pos, d, c0, out);
    }
}

void q3_attn_pv_q8_avx2(const float *p, uint64_t ld, int G, const int8_t *v, const uint16_t *vs, int n_pos, int d,
                        float *const out[])
{
    for (int g = 0; g < G; g++)
        for (int i = 0; i < d; i += 8) _mm256_storeu_ps(out[g] + i, _mm256_setzero_ps());
    /* 64 columns a pass for one query (32 where head_dim is not a multiple of 64), 32
     * for two, 16 for three or four: every pass lies within the row. */
    switch (G) {
    case 1:
        if (d % 64 == 0) pv_chunks(p, ld, 1, 8, v, vs, n_pos, d, out);
        else pv_chunks(p, ld, 1, 4, v, vs, n_pos, d, out);
        break;
    case 2: pv_chunks(p, ld, 2, 4, v, vs, n_pos, d, out); break;
    case 3: pv_chunks(p, ld, 3, 2, v, vs, n_pos, d, out); break;
    default: pv_chunks(p, ld, 4, 2, v, vs, n_pos, d, out); break;
    }
}
