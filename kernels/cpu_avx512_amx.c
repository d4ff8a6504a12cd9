/* cpu_avx512_amx.c - prefill GEMM on AMX tiles (Sapphire Rapids and later).
 *
 * An R16C32 weight tile (16 rows x 32 BF16 columns, 64-byte rows) is exactly an
 * AMX A tile, loaded straight from the mmap. The activations are rounded to BF16
 * once per call and packed as B tiles: for 16 tokens and one 32-column tile,
 * B row i holds the pair of columns (2i, 2i+1) of each of the 16 tokens. One
 * TDPBF16PS then adds a 16-row x 16-token block of dot products over 32 columns,
 * accumulating in f32. Each thread works on 2 panels x 2 token groups at a time
 * (4 accumulator tiles, 2 A, 2 B: all 8 tile registers).
 *
 * Built with the AVX-512 flags; the AMX instructions are enabled for this file
 * only, and run only after q3_amx_enable() says the CPU and the kernel allow them. */
#pragma GCC target("amx-tile,amx-bf16")
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "cpu_panel.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int q3_amx_enable(void)
{
    /* Linux hands out the 8 KiB tile state only on request (once per process). */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* In-register transpose of a 16 x 16 matrix of 32-bit words (r[i] = row i). */
static inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int k = 0; k < 16; k += 2) {
        t[k] = _mm512_unpacklo_epi32(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_epi32(r[k], r[k + 1]);
    }
    for (int k = 0; k < 16; k += 4) {
        r[k] = _mm512_unpacklo_epi64(t[k], t[k + 2]);
        r[k + 1] = _mm512_unpackhi_epi64(t[k], t[k + 2]);
        r[k + 2] = _mm512_unpacklo_epi64(t[k + 1], t[k + 3]);
        r[k + 3] = _mm512_unpackhi_epi64(t[k + 1], t[k + 3]);
    }
    for (int k = 0; k < 16; k += 8)
        for (int i = 0; i < 4; i++) {
            t[k + i] = _mm512_shuffle_i32x4(r[k + i], r[k + i + 4], 0x88);
            t[k + i + 4] = _mm512_shuffle_i32x4(r[k + i], r[k + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

/* Pack B tiles [lo, hi) of the n_groups x col_tiles grid (group-major).
 * Tokens past n_tok and columns past cols are zeros. */
void q3_amx_pack_x(const float *x, uint64_t cols, int n_tok, uint16_t *xpk, uint64_t lo, uint64_t hi)
{
    uint64_t col_tiles = q3_col_tiles(cols);
    for (uint64_t u = lo; u < hi; u++) {
        uint64_t g = u / col_tiles, c = u % col_tiles, left = cols - c * 32;
        __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        __mmask16 m1 = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        /* Row n: token n's 32 columns as 16 words (BF16 pairs); transposed, row i
         * holds word i (columns 2i, 2i+1) of every token, as TDPBF16PS wants B. */
        __m512i rows[16];
        for (int n = 0; n < 16; n++) {
            int64_t tok = (int64_t)g * 16 + n;
            rows[n] = _mm512_setzero_si512();
            if (tok < n_tok) {
                const float *src = x + (uint64_t)tok * cols + c * 32;
                __m512 x0 = _mm512_maskz_loadu_ps(m0, src), x1 = _mm512_maskz_loadu_ps(m1, src + 16);
                rows[n] = (__m512i)_mm512_cvtne2ps_pbh(x1, x0); /* x0 in the low half: columns in order */
            }
        }
        transpose16(rows);
        for (int i = 0; i < 16; i++) _mm512_storeu_si512((void *)(xpk + u * 512 + i * 32), rows[i]);
    }
}

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Write the 16 x 16 block C[r][n] (row r of panel p, token n of group g) into
 * y[token][row], leaving rows past n_rows and tokens past n_tok alone. */
static void store_block(const float *c, float *y, uint64_t ldy, int n_rows, int n_tok)
{
    __m512i rows[16];
    for (int r = 0; r < 16; r++) rows[r] = _mm512_load_si512((const void *)(c + r * 16));
    transpose16(rows); /* rows[n] = C[.][n] */
    __mmask16 m = (__mmask16)((1u << n_rows) - 1);
    for (int n = 0; n < n_tok; n++) _mm512_mask_storeu_ps(y + (uint64_t)n * ldy, m, _mm512_castsi512_ps(rows[n]));
}

/* np panels (1 or 2) x ng token groups (1 or 2); tile numbers must be constants,
 * so every shape is its own branch, folded away after inlining. */
static inline __attribute__((always_inline)) void block(const uint16_t *a0, const uint16_t *a1, const uint16_t *b0,
                                                        const uint16_t *b1, uint64_t col_tiles, uint64_t b_step,
                                                        int np, int ng, float c[4][256])
{
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (uint64_t k = 0; k < col_tiles; k++) {
        /* All loads first, then the products: the loads of step k overlap the
         * products of step k - 1 still in flight. */
        _tile_loadd(4, a0 + k * 512, 64);
        _tile_loadd(6, b0 + k * b_step, 64);
        if (np == 2) _tile_loadd(5, a1 + k * 512, 64);
        if (ng == 2) _tile_loadd(7, b1 + k * b_step, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (ng == 2) _tile_dpbf16ps(1, 4, 7);
        if (np == 2) _tile_dpbf16ps(2, 5, 6);
        if (np == 2 && ng == 2) _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c[0], 64);
    if (ng == 2) _tile_stored(1, c[1], 64);
    if (np == 2) _tile_stored(2, c[2], 64);
    if (np == 2 && ng == 2) _tile_stored(3, c[3], 64);
}

void q3_amx_gemm(const uint16_t *w, uint64_t rows, uint64_t cols, uint64_t p_lo, uint64_t p_hi, const uint16_t *xpk,
                 int n_tok, float *y, uint64_t ldy)
{
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    _tile_loadconfig(&cfg);
    uint64_t col_tiles = q3_col_tiles(cols), panel_elems = col_tiles * TILE_ELEMS;
    int n_groups = (n_tok + AMX_TOKENS - 1) / AMX_TOKENS;
    float c[4][256] __attribute__((aligned(64)));
    for (uint64_t p = p_lo; p < p_hi; p += 2) {
        int np = p + 1 < p_hi ? 2 : 1;
        const uint16_t *a0 = w + p * panel_elems, *a1 = a0 + panel_elems;
        for (int g = 0; g < n_groups; g += 2) {
            int ng = g + 1 < n_groups ? 2 : 1;
            const uint16_t *b0 = xpk + (uint64_t)g * panel_elems, *b1 = b0 + panel_elems;
            if (np == 2 && ng == 2) block(a0, a1, b0, b1, col_tiles, 512, 2, 2, c);
            else if (np == 2) block(a0, a1, b0, b1, col_tiles, 512, 2, 1, c);
            else if (ng == 2) block(a0, a1, b0, b1, col_tiles, 512, 1, 2, c);
            else block(a0, a1, b0, b1, col_tiles, 512, 1, 1, c);
            for (int i = 0; i < np; i++)
                for (int k = 0; k < ng; k++) {
                    uint64_t p_i = p + (uint64_t)i;
                    int t0 = (g + k) * 16;
                    int nr = rows - p_i * 16 < 16 ? (int)(rows - p_i * 16) : 16;
                    int nt = n_tok - t0 < 16 ? n_tok - t0 : 16;
                    store_block(c[i * 2 + k], y + (uint64_t)t0 * ldy + p_i * 16, ldy, nr, nt);
                }
        }
    }
    _tile_release();
}
