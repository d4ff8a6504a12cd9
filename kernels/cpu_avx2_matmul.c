/* cpu_avx2_matmul.c - AVX2+FMA panel kernel: BF16 widened to f32, f32 accumulation. */
#include <immintrin.h>
#include <string.h>
#include "cpu_panel.h"

static inline __m256 bf16x8_to_f32(const uint16_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

void q3_gemv_panel_avx2(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS])
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

/* Prefill GEMM: 2 rows x 4 tokens per step (8 accumulators, 4 activation and 2
 * weight registers), so each widened weight vector feeds 4 FMAs and each
 * activation vector 2. Activations stay f32 (exact products, f32 sums).
 * xf: n_tok rows of xf_stride floats, zero padded to whole tiles. A short last
 * token group repeats its last token (results not stored). */
#define GEMM2_ROWS 2
#define GEMM2_TOKS 4

static inline __m256 widen8(const uint16_t *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void q3_gemm_panel_avx2(const uint16_t *panel, uint64_t cols, const float *xf, uint64_t xf_stride, int n_tok, float *y,
                        uint64_t ldy, int n_rows)
{
    uint64_t col_tiles = (cols + 31) / 32;
    for (int t0 = 0; t0 < n_tok; t0 += GEMM2_TOKS) {
        int nt = n_tok - t0 < GEMM2_TOKS ? n_tok - t0 : GEMM2_TOKS;
        const float *xt[GEMM2_TOKS];
        for (int t = 0; t < GEMM2_TOKS; t++) xt[t] = xf + (uint64_t)(t0 + (t < nt ? t : nt - 1)) * xf_stride;
        for (int r0 = 0; r0 < n_rows; r0 += GEMM2_ROWS) {
            __m256 acc[GEMM2_ROWS][GEMM2_TOKS];
            _Pragma("GCC unroll 2") for (int r = 0; r < GEMM2_ROWS; r++)
                _Pragma("GCC unroll 4") for (int t = 0; t < GEMM2_TOKS; t++) acc[r][t] = _mm256_setzero_ps();
            for (uint64_t c = 0; c < col_tiles; c++) {
                const uint16_t *tile = panel + c * 512 + r0 * 32;
                _Pragma("GCC unroll 4") for (int k = 0; k < 32; k += 8) {
                    __m256 xv[GEMM2_TOKS];
                    _Pragma("GCC unroll 4") for (int t = 0; t < GEMM2_TOKS; t++) xv[t] = _mm256_loadu_ps(xt[t] + c * 32 + k);
                    _Pragma("GCC unroll 2") for (int r = 0; r < GEMM2_ROWS; r++) {
                        __m256 wv = widen8(tile + r * 32 + k);
                        _Pragma("GCC unroll 4") for (int t = 0; t < GEMM2_TOKS; t++)
                            acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
                    }
                }
            }
            for (int r = 0; r < GEMM2_ROWS && r0 + r < n_rows; r++)
                for (int t = 0; t < nt; t++) y[(uint64_t)(t0 + t) * ldy + r0 + r] = hsum8(acc[r][t]);
        }
    }
}
