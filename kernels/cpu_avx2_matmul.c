/* cpu_avx2_matmul.c - AVX2+FMA GEMV panel kernel (decode): BF16 widened to f32, f32
 * accumulation. The prefill GEMM is in cpu_avx2_gemm.c. */
#include <immintrin.h>
#include "cpu_panel.h"

/* The _prefetch variant's distance and hint: GEMV_PREFETCH, GEMV_PREFETCH_LOCALITY
 * (cpu_panel.h); the choice between the two variants follows the AVX-512 GEMV's
 * (q3_gemv_prefetch_wanted: on Intel only; docs/kernels.md). */

/* x[0..16) split into its even and odd columns, in order: shuffle_ps picks them per
 * 128-bit lane ([0 2 8 10 | 4 6 12 14]), the 64-bit permute puts the lanes right. */
static inline void split_even_odd(const float *x, __m256 *even, __m256 *odd)
{
    __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + 8);
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));
}

/* As the AVX-512 GEMV: a 32-bit word of a tile row holds BF16 columns 2i (low half)
 * and 2i+1 (high half), so word << 16 and word & 0xffff0000 are the two f32 values
 * exactly. One 32-byte load, two ALU ops and two FMAs per 16 weights; the earlier
 * vpmovzxwd widening took a shuffle-port uop per 8 weights and a shift besides. */
static inline __attribute__((always_inline)) void gemv_panel(const uint16_t *panel, uint64_t cols, const float *x,
                                                              float y[PANEL_ROWS], int prefetch)
{
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[16];
    _Pragma("GCC unroll 16")
    for (int r = 0; r < 16; r++) acc[r] = _mm256_setzero_ps();
    uint64_t col_tiles = (cols + 31) / 32;
    for (uint64_t t = 0; t < col_tiles; t++) {
        const uint16_t *tile = panel + t * 512;
        uint64_t left = cols - t * 32;
        float xpad[32];
        const float *xt = x + t * 32;
        if (left < 32) { /* last tile: x past cols is not ours to read (the weights there are zero) */
            for (int c = 0; c < 32; c++) xpad[c] = (uint64_t)c < left ? xt[c] : 0.0f;
            xt = xpad;
        }
        __m256 xe0, xo0, xe1, xo1;
        split_even_odd(xt, &xe0, &xo0);
        split_even_odd(xt + 16, &xe1, &xo1);
        if (prefetch) {
            _Pragma("GCC unroll 16")
            for (int r = 0; r < 16; r++) __builtin_prefetch(tile + GEMV_PREFETCH * 512 + r * 32, 0, GEMV_PREFETCH_LOCALITY);
        }
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 16; r++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(tile + r * 32));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(tile + r * 32 + 16));
            acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w0, 16)), xe0, acc[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w0, hi_mask)), xo0, acc[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w1, 16)), xe1, acc[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w1, hi_mask)), xo1, acc[r]);
        }
    }
    _Pragma("GCC unroll 16")
    for (int r = 0; r < 16; r++) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[r] = _mm_cvtss_f32(s);
    }
}

void q3_gemv_panel_avx2(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS])
{
    gemv_panel(panel, cols, x, y, 0);
}

void q3_gemv_panel_avx2_prefetch(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS])
{
    gemv_panel(panel, cols, x, y, 1);
}
