/* cpu_avx2_gemm.c - AVX2+FMA prefill GEMM, an outer-product microkernel in the BLIS
 * style: y[t][r] = sum_c W[r][c] * x[t][c] for a 16-row panel and many tokens.
 *
 * The old kernel (2 rows x 4 tokens of dot products) widened every BF16 weight once
 * per 4 FMAs and ended every output in a horizontal sum; it ran at ~42 % of the FMA
 * peak on Zen 3 (issue 17), 50-54 % on the Sapphire-Rapids-class guest. Here:
 *  - the weights of one panel are widened to f32 once per KC columns and transposed
 *    to [column][16 rows] (8 KiB: stays in L1) and then reused by every token of a
 *    prompt pass (once per call, not once per chunk of tokens);
 *  - the activations are packed once per call by q3_avx2_pack_x as [column block]
 *    [group of 6 tokens][column][6], so the micro-panels one weight block meets are
 *    one contiguous stream;
 *  - the register block is 16 rows (2 ymm) x 6 tokens = 12 accumulators; each step
 *    loads 2 weight vectors, broadcasts 6 activations (pure loads) and issues 12
 *    FMAs, so the FMA ports, not the loads or shuffles, set the pace;
 *  - a lane is one output, so results are stored as they are: y[t][r0..r0+15] is
 *    contiguous, no horizontal sums.
 * Activations stay f32 and every product is exact (BF16 widened to f32), so the
 * result differs from the scalar reference only in the order of the f32 sums. */
#include <immintrin.h>
#include "cpu_kernels.h"
#include "cpu_panel.h"

/* Columns per weight block: 16 rows x 128 f32 = 8 KiB, so that it and a whole pass's
 * results (cbuf, 33 KiB) share a 48 KiB L1 (256: 16 KiB, 2-5 % slower with NC at a
 * whole pass; the micro kernel alone runs at 95-97 % of the FMA peak either way).
 * A multiple of 32 (one tile). */
#define KC 128

/* 8 rows x 8 BF16 columns (row stride 32 halves, one tile row apart) -> 8 f32 columns
 * of 8 rows each, stored 16 floats apart (dst holds [column][16 rows]). */
static inline void widen_transpose8(const uint16_t *src, float *dst)
{
    __m256 r[8];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) r[i] = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i * 32))), 16));
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_store_ps(dst + 0 * 16, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(dst + 1 * 16, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(dst + 2 * 16, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(dst + 3 * 16, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(dst + 4 * 16, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(dst + 5 * 16, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(dst + 6 * 16, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(dst + 7 * 16, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* kc columns (whole tiles) of a panel -> wpk[c][16] f32. */
static void pack_weights(const uint16_t *tiles, uint64_t kc, float *wpk)
{
    for (uint64_t t = 0; t < kc / 32; t++)
        for (int c8 = 0; c8 < 32; c8 += 8)
            for (int half = 0; half < 2; half++)
                widen_transpose8(tiles + t * 512 + half * 8 * 32 + c8, wpk + (t * 32 + c8) * 16 + half * 8);
}

/* Packed activations, block by block of KC columns: block k0 holds every group's kc
 * columns one group after another, so the groups a weight block meets are one
 * sequential stream (the prefetchers follow it; separate 6 KiB runs 24-72 KiB apart
 * restarted them at every group). Offset of (group g, column k0) in floats: */
static inline uint64_t xpk_offset(uint64_t k0, uint64_t kc, int groups, int g)
{
    return (k0 * (uint64_t)groups + (uint64_t)g * kc) * Q3_AVX2_NR;
}

/* 6 tokens' rows (8 floats each, at src[t] + c) -> 8 columns of 6 floats at dst, dst[j * 6 + t]:
 * an 8 x 8 transpose with two zero rows, each column stored as 4 + 2 floats. */
static inline void pack6x8(const float *const src[Q3_AVX2_NR], uint64_t c, float *dst)
{
    __m256 z = _mm256_setzero_ps();
    __m256 r0 = _mm256_loadu_ps(src[0] + c), r1 = _mm256_loadu_ps(src[1] + c), r2 = _mm256_loadu_ps(src[2] + c);
    __m256 r3 = _mm256_loadu_ps(src[3] + c), r4 = _mm256_loadu_ps(src[4] + c), r5 = _mm256_loadu_ps(src[5] + c);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, z, 0x44), u5 = _mm256_shuffle_ps(t4, z, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, z, 0x44), u7 = _mm256_shuffle_ps(t5, z, 0xee);
    __m256 col[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                     _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                     _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                     _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
        _mm_storeu_ps(dst + j * Q3_AVX2_NR, _mm256_castps256_ps128(col[j]));
        _mm_storel_pi((__m64 *)(dst + j * Q3_AVX2_NR + 4), _mm256_extractf128_ps(col[j], 1));
    }
}

void q3_avx2_pack_x(const float *x, uint64_t cols, int n_tok, float *xpk, int g_lo, int g_hi)
{
    uint64_t kpad = (cols + 31) / 32 * 32;
    int groups = (n_tok + Q3_AVX2_NR - 1) / Q3_AVX2_NR;
    for (int g = g_lo; g < g_hi; g++) {
        const float *src[Q3_AVX2_NR];
        int full = 1; /* all 6 tokens exist: the vector path */
        for (int t = 0; t < Q3_AVX2_NR; t++) {
            int tok = g * Q3_AVX2_NR + t;
            src[t] = tok < n_tok ? x + (uint64_t)tok * cols : NULL;
            full &= tok < n_tok;
        }
        for (uint64_t k0 = 0; k0 < kpad; k0 += KC) {
            uint64_t kc = kpad - k0 < KC ? kpad - k0 : KC, c = 0;
            float *dst = xpk + xpk_offset(k0, kc, groups, g);
            if (full)
                for (; c + 8 <= kc && k0 + c + 8 <= cols; c += 8) pack6x8(src, k0 + c, dst + c * Q3_AVX2_NR);
            /* The rest: missing tokens and the columns past cols are zeros. */
            for (; c < kc; c++)
                for (int t = 0; t < Q3_AVX2_NR; t++)
                    dst[c * Q3_AVX2_NR + t] = src[t] && k0 + c < cols ? src[t][k0 + c] : 0.0f;
        }
    }
}

/* Tokens per chunk: the chunk's 16 x NC results live in a contiguous buffer while the
 * weight blocks pass, and go to y once. Accumulating in y itself cost ~15 %: y's rows
 * are 4-12 KiB apart in the model, so a panel's 16-column stripe of y fell into a few
 * cache sets and was evicted between weight blocks. A whole CPU pass is one chunk
 * (33 KiB), so each weight block is widened once per call: with 192 tokens a chunk
 * (12 KiB) a 512-token pass widened every weight three times, ~6 % of the GEMM's
 * time; a panel at 1024 columns, hot, went from 89-92 % to 94-96 % of the FMA peak.
 * A multiple of NR. */
#define NC ((Q3_CPU_PASS_TOKENS + Q3_AVX2_NR - 1) / Q3_AVX2_NR * Q3_AVX2_NR)

/* One 16 x 6 block: acc = (first ? 0 : c) + wpk[0..kc) x xp[0..kc); stored to c, or,
 * on the last weight block (y != NULL), to y: tokens < nt, rows < n_rows only. */
static void micro_16x6(const float *wpk, const float *xp, uint64_t kc, float *c, int first, float *y, uint64_t ldy,
                       int nt, int n_rows)
{
    __m256 a00, a01, a02, a03, a04, a05, a10, a11, a12, a13, a14, a15;
    if (first) {
        a00 = a01 = a02 = a03 = a04 = a05 = a10 = a11 = a12 = a13 = a14 = a15 = _mm256_setzero_ps();
    } else {
        a00 = _mm256_load_ps(c + 0), a10 = _mm256_load_ps(c + 8), a01 = _mm256_load_ps(c + 16);
        a11 = _mm256_load_ps(c + 24), a02 = _mm256_load_ps(c + 32), a12 = _mm256_load_ps(c + 40);
        a03 = _mm256_load_ps(c + 48), a13 = _mm256_load_ps(c + 56), a04 = _mm256_load_ps(c + 64);
        a14 = _mm256_load_ps(c + 72), a05 = _mm256_load_ps(c + 80), a15 = _mm256_load_ps(c + 88);
    }
    _Pragma("GCC unroll 4") for (uint64_t k = 0; k < kc; k++) {
        __m256 w0 = _mm256_load_ps(wpk + k * 16), w1 = _mm256_load_ps(wpk + k * 16 + 8);
        const float *xk = xp + k * Q3_AVX2_NR;
        __m256 b;
        b = _mm256_broadcast_ss(xk + 0), a00 = _mm256_fmadd_ps(w0, b, a00), a10 = _mm256_fmadd_ps(w1, b, a10);
        b = _mm256_broadcast_ss(xk + 1), a01 = _mm256_fmadd_ps(w0, b, a01), a11 = _mm256_fmadd_ps(w1, b, a11);
        b = _mm256_broadcast_ss(xk + 2), a02 = _mm256_fmadd_ps(w0, b, a02), a12 = _mm256_fmadd_ps(w1, b, a12);
        b = _mm256_broadcast_ss(xk + 3), a03 = _mm256_fmadd_ps(w0, b, a03), a13 = _mm256_fmadd_ps(w1, b, a13);
        b = _mm256_broadcast_ss(xk + 4), a04 = _mm256_fmadd_ps(w0, b, a04), a14 = _mm256_fmadd_ps(w1, b, a14);
        b = _mm256_broadcast_ss(xk + 5), a05 = _mm256_fmadd_ps(w0, b, a05), a15 = _mm256_fmadd_ps(w1, b, a15);
    }
    if (!y) {
        _mm256_store_ps(c + 0, a00), _mm256_store_ps(c + 8, a10), _mm256_store_ps(c + 16, a01);
        _mm256_store_ps(c + 24, a11), _mm256_store_ps(c + 32, a02), _mm256_store_ps(c + 40, a12);
        _mm256_store_ps(c + 48, a03), _mm256_store_ps(c + 56, a13), _mm256_store_ps(c + 64, a04);
        _mm256_store_ps(c + 72, a14), _mm256_store_ps(c + 80, a05), _mm256_store_ps(c + 88, a15);
        return;
    }
    /* Masks for the rows of the two halves that exist (a panel's last rows may not). */
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n_rows), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n_rows - 8), lane);
#define STORE_Y(t, lo, hi)                                                                                             \
    if (t < nt) _mm256_maskstore_ps(y + (uint64_t)t * ldy, m0, lo), _mm256_maskstore_ps(y + (uint64_t)t * ldy + 8, m1, hi);
    STORE_Y(0, a00, a10) STORE_Y(1, a01, a11) STORE_Y(2, a02, a12)
    STORE_Y(3, a03, a13) STORE_Y(4, a04, a14) STORE_Y(5, a05, a15)
#undef STORE_Y
}

/* Bytes of the next weight block to be packed after block k0 of token chunk g0: the
 * next block of this panel, the first again for the next chunk, or the next panel
 * (panels are contiguous; a prefetch past the matrix is harmless). */
static const char *next_block(const uint16_t *panel, uint64_t kpad, uint64_t k0, int g0, int groups, uint64_t *bytes)
{
    uint64_t nk = k0 + KC < kpad ? k0 + KC : 0;
    const uint16_t *p = nk || g0 + NC / Q3_AVX2_NR < groups ? panel : panel + 16 * kpad;
    *bytes = (kpad - nk < KC ? kpad - nk : KC) * 16 * 2;
    return (const char *)(p + nk / 32 * 512);
}

void q3_gemm_panel_avx2(const uint16_t *panel, uint64_t cols, const float *xpk, int n_tok, float *y, uint64_t ldy,
                        int n_rows)
{
    _Alignas(64) float wpk[KC * 16];
    _Alignas(64) float cbuf[NC * 16];
    uint64_t kpad = (cols + 31) / 32 * 32;
    int groups = (n_tok + Q3_AVX2_NR - 1) / Q3_AVX2_NR;
    for (int g0 = 0; g0 < groups; g0 += NC / Q3_AVX2_NR) {
        int g1 = groups - g0 < NC / Q3_AVX2_NR ? groups : g0 + NC / Q3_AVX2_NR;
        for (uint64_t k0 = 0; k0 < kpad; k0 += KC) {
            uint64_t kc = kpad - k0 < KC ? kpad - k0 : KC, pf_bytes;
            int last = k0 + kc == kpad;
            pack_weights(panel + k0 / 32 * 512, kc, wpk);
            /* The weights come from memory once per call: fetch the next block into L2
             * while this one is in use, spread over the groups (packing stalled on
             * DRAM latency otherwise: -10 % with weights beyond the caches). */
            const char *pf = next_block(panel, kpad, k0, g0, groups, &pf_bytes);
            uint64_t pf_step = (pf_bytes / 64 + (uint64_t)(g1 - g0) - 1) / (uint64_t)(g1 - g0) * 64, pf_at = 0;
            for (int g = g0; g < g1; g++) {
                for (uint64_t b = 0; b < pf_step && pf_at < pf_bytes; b += 64, pf_at += 64)
                    _mm_prefetch(pf + pf_at, _MM_HINT_T1);
                int t0 = g * Q3_AVX2_NR, nt = n_tok - t0 < Q3_AVX2_NR ? n_tok - t0 : Q3_AVX2_NR;
                micro_16x6(wpk, xpk + xpk_offset(k0, kc, groups, g), kc, cbuf + (g - g0) * Q3_AVX2_NR * 16, k0 == 0,
                           last ? y + (uint64_t)t0 * ldy : NULL, ldy, nt, n_rows);
            }
        }
    }
}
