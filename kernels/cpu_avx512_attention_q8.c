/* cpu_avx512_attention_q8.c - AVX-512 attention over the 8-bit KV cache, the AVX2
 * kernels (cpu_avx2_attention_q8.c) at twice the width: 16 int8 values widened per
 * vpmovsxbd, so a row costs half the widening instructions, which is what bounds the
 * AVX2 kernels at one thread. 32 registers hold up to 16 sums: scores of 16 (query,
 * position) pairs end in one q3_reduce16; V passes cover 128 columns for one or two
 * queries, 64 for three or four. head_dim is a multiple of Q3_Q8_BLOCK (32). */
#include <immintrin.h>
#include "cpu_avx512_util.h"
#include "cpu_kernels.h"
#include "cpu_panel.h"
#include "cpu_q8_util.h"

Q3_Q8_INLINE __m512 load_q8(const int8_t *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* Scores of P positions from j for G queries, P * G <= 16 sums (query-major). */
Q3_Q8_INLINE void scores_step(const float *const q[], int G, int P, const int8_t *k, const uint16_t *ks, int j,
                              int d, float scale, float *scores, uint64_t ld)
{
    int nb = d / Q3_Q8_BLOCK;
    float sc[16][Q3_Q8_MAX_HEAD_DIM / Q3_Q8_BLOCK]; /* the P rows' scales as f32 */
    q8_score_rows(k, ks, j, P, d, sc);
    __m512 tot[16];
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) tot[i] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        _Pragma("GCC unroll 2") for (int v = 0; v < Q3_Q8_BLOCK / 16; v++) {
            int i = b * Q3_Q8_BLOCK + v * 16;
            __m512 qv[4];
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) qv[g] = _mm512_loadu_ps(q[g] + i);
            _Pragma("GCC unroll 16") for (int p = 0; p < P; p++) {
                __m512 kv = _mm512_mul_ps(load_q8(k + (uint64_t)(j + p) * d + i), _mm512_set1_ps(sc[p][b]));
                _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                    tot[g * P + p] = _mm512_fmadd_ps(qv[g], kv, tot[g * P + p]);
            }
        }
    }
    float s[16];
    _mm512_storeu_ps(s, _mm512_mul_ps(q3_reduce16(tot), _mm512_set1_ps(scale)));
    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 16") for (int p = 0; p < P; p++) scores[(uint64_t)g * ld + j + p] = s[g * P + p];
}

void q3_attn_scores_q8_avx512(const float *const q[], int G, const int8_t *k, const uint16_t *ks, int n_pos, int d,
                              float scale, float *scores, uint64_t ld)
{
    int j = 0;
    switch (G) {
    case 1:
        for (; j + 16 <= n_pos; j += 16) scores_step(q, 1, 16, k, ks, j, d, scale, scores, ld);
        break;
    case 2:
        for (; j + 8 <= n_pos; j += 8) scores_step(q, 2, 8, k, ks, j, d, scale, scores, ld);
        break;
    case 3:
        for (; j + 4 <= n_pos; j += 4) scores_step(q, 3, 4, k, ks, j, d, scale, scores, ld);
        break;
    default:
        for (; j + 4 <= n_pos; j += 4) scores_step(q, 4, 4, k, ks, j, d, scale, scores, ld);
        break;
    }
    if (j < n_pos) /* the last positions: the AVX2 kernel (and its scalar tail) */
        q3_attn_scores_q8_avx2(q, G, k + (uint64_t)j * d, ks + (uint64_t)j * (d / Q3_Q8_BLOCK), n_pos - j, d, scale,
                               scores + j, ld);
}

/* Columns c0 .. c0 + 16 * NV of rows j0 .. j1 added into out[g]; w as the AVX2 kernel's. */
Q3_Q8_INLINE void pv_pass(const float *w, int G, int NV, const int8_t *v, int j0, int j1, int n_pos, int d,
                          int c0, float *const out[])
{
    int nb = d / Q3_Q8_BLOCK, b0 = c0 / Q3_Q8_BLOCK;
    __m512 acc[4][8];
    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[g][c] = _mm512_loadu_ps(out[g] + c0 + c * 16);
    for (int j = j0; j < j1; j++) {
        const int8_t *vj = v + (uint64_t)j * d + c0;
        const float *wj = w + (uint64_t)(j - j0) * G * nb + b0;
        if (c0 == 0 && j + PV_PF_ROWS < n_pos) /* the next chunk's row, a row at a time */
            q8_prefetch_row(vj + (uint64_t)PV_PF_ROWS * d, d);
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) {
            __m512 x = load_q8(vj + c * 16);
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                acc[g][c] = _mm512_fmadd_ps(_mm512_set1_ps(wj[g * nb + c * 16 / Q3_Q8_BLOCK]), x, acc[g][c]);
        }
    }
    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) _mm512_storeu_ps(out[g] + c0 + c * 16, acc[g][c]);
}

Q3_Q8_INLINE void pv_chunks(const float *p, uint64_t ld, int G, int NV, const int8_t *v, const uint16_t *vs,
                            int n_pos, int d, float *const out[])
{
    int nb = d / Q3_Q8_BLOCK;
    _Alignas(64) float w[PV_CHUNK * 4 * (Q3_Q8_MAX_HEAD_DIM / Q3_Q8_BLOCK)];
    for (int j0 = 0; j0 < n_pos; j0 += PV_CHUNK) {
        int j1 = n_pos - j0 < PV_CHUNK ? n_pos : j0 + PV_CHUNK;
        q8_chunk_weights(p, ld, G, vs, j0, j1, nb, w);
        for (int c0 = 0; c0 < d; c0 += NV * 16) pv_pass(w, G, NV, v, j0, j1, n_pos, d, c0, out);
    }
}

void q3_attn_pv_q8_avx512(const float *p, uint64_t ld, int G, const int8_t *v, const uint16_t *vs, int n_pos, int d,
                          float *const out[])
{
    for (int g = 0; g < G; g++)
        for (int i = 0; i < d; i += 16) _mm512_storeu_ps(out[g] + i, _mm512_setzero_ps());
    /* Passes of 128 columns (64 for three or four queries) where head_dim allows,
     * else 32 (head_dim is a multiple of 32): every pass lies within the row. */
    int wide = G <= 2 ? d % 128 == 0 : d % 64 == 0;
    switch (G) {
    case 1:
        if (wide) pv_chunks(p, ld, 1, 8, v, vs, n_pos, d, out);
        else pv_chunks(p, ld, 1, 2, v, vs, n_pos, d, out);
        break;
    case 2:
        if (wide) pv_chunks(p, ld, 2, 8, v, vs, n_pos, d, out);
        else pv_chunks(p, ld, 2, 2, v, vs, n_pos, d, out);
        break;
    case 3:
        if (wide) pv_chunks(p, ld, 3, 4, v, vs, n_pos, d, out);
        else pv_chunks(p, ld, 3, 2, v, vs, n_pos, d, out);
        break;
    default:
        if (wide) pv_chunks(p, ld, 4, 4, v, vs, n_pos, d, out);
        else pv_chunks(p, ld, 4, 2, v, vs, n_pos, d, out);
        break;
    }
}
