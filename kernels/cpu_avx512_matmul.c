/* cpu_avx512_matmul.c - AVX-512 panel kernels.
 * GEMV (decode): BF16 weights widened to f32, f32 FMA, so decode is as exact as
 * an f32 reference; it is memory-bound, the widening costs nothing.
 * GEMM (prefill): activations rounded to BF16 once per call and multiplied with
 * vdpbf16ps (f32 accumulation), which doubles the arithmetic rate. */
#include <immintrin.h>
#include "cpu_avx512_util.h"
#include "cpu_panel.h"

/* The _prefetch variant asks for the lines GEMV_PREFETCH tiles ahead into L2
 * (GEMV_PREFETCH_LOCALITY; cpu_panel.h says why and what was measured). Past the panel's
 * end it prefetches the next panel, which this thread reads next; a prefetch never faults. */

/* A tile row is 16 32-bit words, each holding BF16 elements 2i (low half) and
 * 2i+1 (high half). A BF16 value is the top half of the f32 it stands for, so
 * word << 16 is element 2i and word & 0xffff0000 is element 2i+1, exactly:
 * two cheap ALU ops instead of two cross-lane widenings. x is split into its
 * even and odd columns once per tile to match. */
static inline __attribute__((always_inline)) void gemv_panel(const uint16_t *panel, uint64_t cols, const float *x,
                                                              float y[PANEL_ROWS], int prefetch)
{
    const __m512i even_idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i hi_mask = _mm512_set1_epi32((int)0xffff0000u);
    __m512 acc[16];
    _Pragma("GCC unroll 16")
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
    uint64_t col_tiles = (cols + 31) / 32;
    for (uint64_t t = 0; t < col_tiles; t++) {
        const uint16_t *tile = panel + t * 512;
        uint64_t left = cols - t * 32;
        __m512 x0, x1;
        if (left >= 32) {
            x0 = _mm512_loadu_ps(x + t * 32);
            x1 = _mm512_loadu_ps(x + t * 32 + 16);
        } else { /* last tile: x past cols is not ours to read (the weights there are zero) */
            __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            __mmask16 m1 = left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            x0 = _mm512_maskz_loadu_ps(m0, x + t * 32);
            x1 = _mm512_maskz_loadu_ps(m1, x + t * 32 + 16);
        }
        __m512 xe = _mm512_permutex2var_ps(x0, even_idx, x1);
        __m512 xo = _mm512_permutex2var_ps(x0, odd_idx, x1);
        if (prefetch) {
            _Pragma("GCC unroll 16")
            for (int r = 0; r < 16; r++) __builtin_prefetch(tile + GEMV_PREFETCH * 512 + r * 32, 0, GEMV_PREFETCH_LOCALITY);
        }
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 16; r++) {
            __m512i w = _mm512_loadu_si512((const void *)(tile + r * 32));
            acc[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)), xe, acc[r]);
            acc[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(w, hi_mask)), xo, acc[r]);
        }
    }
    _Pragma("GCC unroll 16")
    for (int r = 0; r < 16; r++) y[r] = _mm512_reduce_add_ps(acc[r]);
}

void q3_gemv_panel_avx512(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS])
{
    gemv_panel(panel, cols, x, y, 0);
}

void q3_gemv_panel_avx512_prefetch(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS])
{
    gemv_panel(panel, cols, x, y, 1);
}

/* 4 rows x 4 tokens of dot products per step: 16 accumulators, each weight row
 * loaded once per 4 tokens, each activation chunk once per 4 rows, all 16 sums
 * finished together by one shuffle tree (q3_reduce16) instead of 16 separate
 * reductions. Loops have fixed trip counts so the accumulators stay in
 * registers; a short last token group repeats its last token (not stored). */
void q3_gemm_panel_avx512bf16(const uint16_t *panel, uint64_t cols, const uint16_t *xb, uint64_t xb_stride,
                              int n_tok, float *y, uint64_t ldy, int n_rows)
{
    uint64_t col_tiles = (cols + 31) / 32;
    for (int t0 = 0; t0 < n_tok; t0 += 4) {
        int nt = n_tok - t0 < 4 ? n_tok - t0 : 4;
        const uint16_t *xt[4];
        for (int t = 0; t < 4; t++) xt[t] = xb + (uint64_t)(t0 + (t < nt ? t : nt - 1)) * xb_stride;
        for (int r0 = 0; r0 < n_rows; r0 += 4) {
            __m512 acc[16];
            _Pragma("GCC unroll 16") for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_ps();
            for (uint64_t c = 0; c < col_tiles; c++) {
                const uint16_t *tile = panel + c * 512 + r0 * 32;
                __m512i w[4];
                _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) w[r] = _mm512_loadu_si512((const void *)(tile + r * 32));
                _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) {
                    __m512i xv = _mm512_loadu_si512((const void *)(xt[t] + c * 32));
                    _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)
                        acc[t * 4 + r] = _mm512_dpbf16_ps(acc[t * 4 + r], (__m512bh)w[r], (__m512bh)xv);
                }
            }
            /* lane t * 4 + r: token t0 + t, row r0 + r */
            __m512 sums = q3_reduce16(acc);
            __mmask16 rows_m = (__mmask16)(n_rows - r0 >= 4 ? 0xf : (1u << (n_rows - r0)) - 1);
            float out[16];
            _mm512_storeu_ps(out, sums);
            for (int t = 0; t < nt; t++)
                _mm_mask_storeu_ps(y + (uint64_t)(t0 + t) * ldy + r0, rows_m, _mm_loadu_ps(out + t * 4));
        }
    }
}
