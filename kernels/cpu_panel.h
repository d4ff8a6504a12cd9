/* cpu_panel.h - the per-panel kernels each SIMD level provides (internal).
 * A panel is 16 rows of an R16C32 matrix: col_tiles tiles of 16 x 32 BF16. */
#ifndef Q3_CPU_PANEL_H
#define Q3_CPU_PANEL_H

#include <stdint.h>
#include "../format/q3_format.h"

/* The R16C32 geometry (spec.md 8) as the kernels use it. The SIMD loops that
 * unroll over a panel's rows keep the literal 16 their unroll pragmas need. */
#define PANEL_ROWS Q3_TILE_ROWS                  /* rows of a panel */
#define TILE_COLS Q3_TILE_COLS                   /* columns of a tile */
#define TILE_ELEMS (Q3_TILE_ROWS * Q3_TILE_COLS) /* BF16 values of a tile (1 KiB) */
/* Tiles across a matrix of cols columns. */
static inline uint64_t q3_col_tiles(uint64_t cols) { return (cols + TILE_COLS - 1) / TILE_COLS; }

/* y[r] = dot(row r, x) for the panel's 16 rows; x has cols floats (no padding). */
typedef void (*q3_gemv_panel_fn)(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS]);

/* y[t * ldy + r] = dot(row r, x_t) for t < n_tok, r < n_rows (<= 16).
 * xb: the tokens' activations as BF16, row stride xb_stride (a multiple of 32, zero padded). */
typedef void (*q3_gemm_panel_fn)(const uint16_t *panel, uint64_t cols, const uint16_t *xb, uint64_t xb_stride,
                                 int n_tok, float *y, uint64_t ldy, int n_rows);

void q3_gemv_panel_scalar(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS]);
void q3_gemv_panel_avx2(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS]);
void q3_gemv_panel_avx2_prefetch(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS]);
void q3_gemv_panel_avx512(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS]);
/* The same, with software prefetch (faster on Intel, slower on Zen 4). */
void q3_gemv_panel_avx512_prefetch(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS]);
/* The _prefetch GEMVs (AVX2 and AVX-512) ask for the lines GEMV_PREFETCH tiles (1 KiB each)
 * ahead with __builtin_prefetch's locality GEMV_PREFETCH_LOCALITY: 2 is prefetcht1, into L2
 * only, which leaves L1's fill buffers to the loads. On the Sapphire-Rapids-class Intel guest
 * (docs/perf.md, sixth session of 2026-12-03) the products went from 77-79 % of the probe
 * (AVX2; AVX-512 82-88 %) with prefetcht0 2 tiles ahead to 85-89 % at one thread and 91-95 %
 * at two (AVX-512 95-98 %) with prefetcht1 3 tiles ahead (2, 4, 6 and 8 measured), decode
 * +10 to +20 %. On Zen 4 any software prefetch was slower (decode 1 thread: none 18.4-19.1
 * tok/s, prefetcht0 2 tiles 16.7-17.0, 4 tiles 15.5-16.5, 8 tiles 14.9-15.5), so cpu_dispatch.c
 * picks the variant by vendor. Both are build options. */
#ifndef GEMV_PREFETCH
#define GEMV_PREFETCH 3
#endif
#ifndef GEMV_PREFETCH_LOCALITY
#define GEMV_PREFETCH_LOCALITY 2
#endif
/* 1 when the GEMV (AVX-512 and AVX2) should prefetch: GenuineIntel, unless Q3_GEMV_PREFETCH=0|1 says otherwise. */
int q3_gemv_prefetch_wanted(void);
/* AVX2 GEMM (cpu_avx2_gemm.c): tokens in groups of Q3_AVX2_NR, activations packed once
 * per call as xpk[128-column block][group][column][Q3_AVX2_NR] f32 (columns zero padded to whole tiles,
 * missing tokens of the last group zero). q3_avx2_pack_x packs groups [g_lo, g_hi). */
#define Q3_AVX2_NR 6
void q3_avx2_pack_x(const float *x, uint64_t cols, int n_tok, float *xpk, int g_lo, int g_hi);
/* y[t * ldy + r] = dot(row r, x_t) for t < n_tok, r < n_rows, from the packed xpk. */
void q3_gemm_panel_avx2(const uint16_t *panel, uint64_t cols, const float *xpk, int n_tok, float *y, uint64_t ldy,
                        int n_rows);
void q3_gemm_panel_avx512bf16(const uint16_t *panel, uint64_t cols, const uint16_t *xb, uint64_t xb_stride,
                              int n_tok, float *y, uint64_t ldy, int n_rows);

/* The decode attention kernels (AVX2 and AVX-512 pairs) prefetch K and V rows this
 * far ahead (4 KiB at head_dim 128), on the CPUs where the GEMV prefetches
 * (q3_gemv_prefetch_wanted: Intel). A decode at 4096 positions reads 470 MB of K and
 * V a token (0.6B), beyond any cache; with AVX2, 8 and 16 rows measured best, 4 and
 * 32 slower, none 30-40 % slower. A prefetch past the cache never faults. */
#ifndef Q3_KV_PREFETCH_ROWS
#define Q3_KV_PREFETCH_ROWS 16
#endif
/* __builtin_prefetch's locality: 2, prefetcht1, into L2 only, as the GEMVs prefetch (the
 * Intel guest, F16 cache at 4096 positions: AVX2 67-69 -> 77-78 % of the probe, AVX-512 73-77
 * -> 81-82 %; 32 rows into L2 in between; docs/perf.md, sixth session of 2026-12-03); 3 is
 * prefetcht0 (a tuning build option, as the distance) */
#ifndef Q3_KV_PREFETCH_LOCALITY
#define Q3_KV_PREFETCH_LOCALITY 2
#endif
static inline void q3_prefetch_row(const uint16_t *row, int d)
{
    for (int b = 0; b < d * 2; b += 64) __builtin_prefetch((const char *)row + b, 0, Q3_KV_PREFETCH_LOCALITY);
}

/* Attention per level: dot(a, b) over n floats; scores[j] = scale * dot(q, k_j);
 * out = sum_j p[j] * v_j (overwritten). K and V are F16; row j is at k/v + j * stride. */
float q3_dot_scalar(const float *a, const float *b, uint64_t n);
float q3_dot_avx2(const float *a, const float *b, uint64_t n);
float q3_dot_avx512(const float *a, const float *b, uint64_t n);
void q3_f16_store_avx2(uint16_t *dst, const float *src, uint64_t n);
void q3_f16_store_avx512(uint16_t *dst, const float *src, uint64_t n);
void q3_attn_scores_scalar(const float *q, const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                           float *scores);
void q3_attn_scores_avx2(const float *q, const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                         float *scores);
void q3_attn_scores_avx512(const float *q, const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                           float *scores);
void q3_attn_pv_scalar(const float *p, const uint16_t *v, uint64_t stride, int n_pos, int d, float *out);
void q3_attn_pv_avx2(const float *p, const uint16_t *v, uint64_t stride, int n_pos, int d, float *out);
void q3_attn_pv_avx512(const float *p, const uint16_t *v, uint64_t stride, int n_pos, int d, float *out);

/* 4 queries at once: scores[qi * ld + j] for j < n_pos, and
 * out[qi] = sum_j p[qi * ld + j] * v_j. */
void q3_attn_scores4_avx512(const float *const q[4], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                            float *scores, uint64_t ld);
void q3_attn_pv4_avx512(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                        float *const out[4]);

/* The same for 2 queries (scores 2 x 8 keys at a time, V 128 columns per pass). */
void q3_attn_scores2_avx512(const float *const q[2], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                            float *scores, uint64_t ld);
void q3_attn_pv2_avx512(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                        float *const out[2]);
/* s[0..n) <- softmax(s[0..n)) with a vectorized exp. */
void q3_softmax_avx512(float *s, int n);
/* The same with AVX2: 4 queries x 2 keys, V 16 columns per pass (cpu_avx2_attention4.c);
 * 2 queries x 4 keys, V in one pass with the sums in L1; the softmax. */
void q3_attn_scores4_avx2(const float *const q[4], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                          float *scores, uint64_t ld);
void q3_attn_pv4_avx2(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                      float *const out[4]);
void q3_attn_scores2_avx2(const float *const q[2], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                          float *scores, uint64_t ld);
void q3_attn_pv2_avx2(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                      float *const out[2]);
void q3_softmax_avx2(float *s, int n);

/* The 8-bit cache's kernels (cpu_kernels.h: q3_attend_rows_q8), for G = 1..4 queries:
 * scores[g * ld + j] = scale * dot(q[g], k_j) for j < n_pos, and out[g] = sum_j
 * p[g * ld + j] * v_j (overwritten). Scalar: the reference (cpu_attention_q8.c); AVX2
 * (cpu_avx2_attention_q8.c); AVX-512 (cpu_avx512_attention_q8.c, also at AMX). */
void q3_q8_store_scalar(int8_t *dst, uint16_t *scales, const float *src, uint64_t n);
void q3_q8_store_avx2(int8_t *dst, uint16_t *scales, const float *src, uint64_t n);
void q3_attn_scores_q8_scalar(const float *const q[], int G, const int8_t *k, const uint16_t *ks, int n_pos, int d,
                              float scale, float *scores, uint64_t ld);
void q3_attn_pv_q8_scalar(const float *p, uint64_t ld, int G, const int8_t *v, const uint16_t *vs, int n_pos, int d,
                          float *const out[]);
void q3_attn_scores_q8_avx2(const float *const q[], int G, const int8_t *k, const uint16_t *ks, int n_pos, int d,
                            float scale, float *scores, uint64_t ld);
void q3_attn_pv_q8_avx2(const float *p, uint64_t ld, int G, const int8_t *v, const uint16_t *vs, int n_pos, int d,
                        float *const out[]);
void q3_attn_scores_q8_avx512(const float *const q[], int G, const int8_t *k, const uint16_t *ks, int n_pos, int d,
                              float scale, float *scores, uint64_t ld);
void q3_attn_pv_q8_avx512(const float *p, uint64_t ld, int G, const int8_t *v, const uint16_t *vs, int n_pos, int d,
                          float *const out[]);
/* scores[0..n) <- softmax(scores[0..n)) at the level in use; scores[n..n_zero) <- 0. */
void q3_softmax_masked(float *scores, int n, int n_zero);

/* The per-token steps (cpu_elementwise.c, cpu_avx2_elementwise.c), as q3_rmsnorm and
 * the others in cpu_kernels.h say. RMSNorm sums x^2 in Q3_RMS_LANES partial sums, lane
 * k taking the columns i % Q3_RMS_LANES == k, at every level (the same bits). */
#define Q3_RMS_LANES 8
void q3_rmsnorm_scalar(float *out, const float *x, const float *w, uint64_t n, float eps);
void q3_rmsnorm_avx2(float *out, const float *x, const float *w, uint64_t n, float eps);
void q3_rope_scalar(float *v, const float *cos_p, const float *sin_p, uint64_t half);
void q3_rope_avx2(float *v, const float *cos_p, const float *sin_p, uint64_t half);
void q3_silu_mul_scalar(float *g, const float *u, uint64_t n);
void q3_silu_mul_avx2(float *g, const float *u, uint64_t n);
void q3_add_avx2(float *x, const float *y, uint64_t n);

/* AMX (cpu_avx512_amx.c). q3_amx_enable asks Linux for the tile state; 1 when granted.
 * A B tile holds AMX_TOKENS tokens' BF16 pairs of one 32-column tile. */
#define AMX_TOKENS 16
int q3_amx_enable(void);
/* Round x (n_tok x cols f32) to BF16 B tiles: units [lo, hi) of the ceil(n_tok/16) x
 * col_tiles grid, group-major, 512 BF16 each. */
void q3_amx_pack_x(const float *x, uint64_t cols, int n_tok, uint16_t *xpk, uint64_t lo, uint64_t hi);
/* y[t * ldy + r] = dot(row r, x_t) for the rows of panels [p_lo, p_hi) of w. */
void q3_amx_gemm(const uint16_t *w, uint64_t rows, uint64_t cols, uint64_t p_lo, uint64_t p_hi, const uint16_t *xpk,
                 int n_tok, float *y, uint64_t ldy);

#endif
