/* cpu_avx2_matmul.c - AVX2+FMA GEMV panel kernel (decode): BF16 widened to f32, f32
 * accumulation. The prefill GEMM is in cpu_avx2_gemm.c. */
#include <immintrin.h>
#include <string.h>
#include "cpu_panel.h"

static inline __m256 bf16x8_to_f32(const uint16_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

void q3_gemv_panel_avx2(const uint16_t *panel, uint64_t cols, const float *x, float y[16])
{
    __m256 acc[16];
    _Pragma("GCC unroll 16")
    for (int r = 0; r < 16; r++) acc[r] = _mm256_setzero_ps();
    uint64_t full = cols / 32;
    for (uint64_t t = 0; t < full; t++) {
        const uint16_t *tile = panel + t * 512;
        const float *xt = x + t * 32;
        __m256 x0 = _mm256_loadu_ps(xt), x1 = _mm256_loadu_ps(xt + 8);
        __m256 x2 = _mm256_loadu_ps(xt + 16), x3 = _mm256_loadu_ps(xt + 24);
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 16; r++) {
            const uint16_t *w = tile + r * 32;
            acc[r] = _mm256_fmadd_ps(bf16x8_to_f32(w), x0, acc[r]);
            acc[r] = _mm256_fmadd_ps(bf16x8_to_f32(w + 8), x1, acc[r]);
            acc[r] = _mm256_fmadd_ps(bf16x8_to_f32(w + 16), x2, acc[r]);
            acc[r] = _mm256_fmadd_ps(bf16x8_to_f32(w + 24), x3, acc[r]);
        }
    }
    if (cols % 32) {
        /* Last, partial tile: pad x with zeros (the weights are zero there too,
         * but x beyond cols is not ours to read). */
        float xt[32] = {0};
        memcpy(xt, x + full * 32, (cols % 32) * sizeof(float));
        const uint16_t *tile = panel + full * 512;
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 16; r++)
            for (int k = 0; k < 32; k += 8)
                acc[r] = _mm256_fmadd_ps(bf16x8_to_f32(tile + r * 32 + k), _mm256_loadu_ps(xt + k), acc[r]);
    }
    _Pragma("GCC unroll 16")
    for (int r = 0; r < 16; r++) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[r] = _mm_cvtss_f32(s);
    }
}
