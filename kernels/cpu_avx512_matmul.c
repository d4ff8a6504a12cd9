/* cpu_avx512_matmul.c - AVX-512 panel kernels.
 * GEMV (decode): BF16 weights widened to f32, f32 FMA, so decode is as exact as
 * an f32 reference; it is memory-bound, the widening costs nothing.
 * GEMM (prefill): activations rounded to BF16 once per call and multiplied with
 * vdpbf16ps (f32 accumulation), which doubles the arithmetic rate. */
#include <immintrin.h>
#include "cpu_panel.h"

static inline __m512 bf16x16_to_f32(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

void q3_gemv_panel_avx512(const uint16_t *panel, uint64_t cols, const float *x, float y[16])
{
    __m512 acc[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
    uint64_t col_tiles = (cols + 31) / 32;
    for (uint64_t t = 0; t < col_tiles; t++) {
        const uint16_t *tile = panel + t * 512;
        uint64_t left = cols - t * 32;
        __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        __mmask16 m1 = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        __m512 x0 = _mm512_maskz_loadu_ps(m0, x + t * 32);
        __m512 x1 = _mm512_maskz_loadu_ps(m1, x + t * 32 + 16);
        _mm_prefetch((const char *)(tile + 512 * 4), _MM_HINT_T0);
        for (int r = 0; r < 16; r++) {
            __m512i w = _mm512_loadu_si512((const void *)(tile + r * 32));
            acc[r] = _mm512_fmadd_ps(bf16x16_to_f32(_mm512_castsi512_si256(w)), x0, acc[r]);
            acc[r] = _mm512_fmadd_ps(bf16x16_to_f32(_mm512_extracti64x4_epi64(w, 1)), x1, acc[r]);
        }
    }
    for (int r = 0; r < 16; r++) y[r] = _mm512_reduce_add_ps(acc[r]);
}

/* 4 rows x 6 tokens of dot products per step: 24 accumulators, each weight row
 * loaded once per 6 tokens, each activation chunk once per 4 rows. */
#define GEMM_ROWS 4
#define GEMM_TOKS 6

void q3_gemm_panel_avx512bf16(const uint16_t *panel, uint64_t cols, const uint16_t *xb, uint64_t xb_stride,
                              int n_tok, float *y, uint64_t ldy, int n_rows)
{
    uint64_t col_tiles = (cols + 31) / 32;
    for (int t0 = 0; t0 < n_tok; t0 += GEMM_TOKS) {
        int nt = n_tok - t0 < GEMM_TOKS ? n_tok - t0 : GEMM_TOKS;
        for (int r0 = 0; r0 < 16; r0 += GEMM_ROWS) {
            __m512 acc[GEMM_ROWS][GEMM_TOKS];
            for (int r = 0; r < GEMM_ROWS; r++)
                for (int t = 0; t < GEMM_TOKS; t++) acc[r][t] = _mm512_setzero_ps();
            for (uint64_t c = 0; c < col_tiles; c++) {
                const uint16_t *tile = panel + c * 512 + r0 * 32;
                __m512i w[GEMM_ROWS];
                for (int r = 0; r < GEMM_ROWS; r++) w[r] = _mm512_loadu_si512((const void *)(tile + r * 32));
                for (int t = 0; t < GEMM_TOKS; t++) {
                    if (t >= nt) break;
                    __m512i xv = _mm512_loadu_si512((const void *)(xb + (uint64_t)(t0 + t) * xb_stride + c * 32));
                    for (int r = 0; r < GEMM_ROWS; r++)
                        acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)w[r], (__m512bh)xv);
                }
            }
            for (int r = 0; r < GEMM_ROWS; r++) {
                if (r0 + r >= n_rows) break;
                for (int t = 0; t < nt; t++) y[(uint64_t)(t0 + t) * ldy + r0 + r] = _mm512_reduce_add_ps(acc[r][t]);
            }
        }
    }
}
