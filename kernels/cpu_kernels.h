/* cpu_kernels.h - CPU thread pool and BF16 matrix kernels with runtime SIMD dispatch.
 * Matrices are BF16 in the R16C32 tiled layout of spec.md, read straight from the mmap. */
#ifndef Q3_CPU_KERNELS_H
#define Q3_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Each level includes the ones below it. AMX is AVX-512 BF16 plus AMX tiles for
 * prefill (decode stays on the AVX-512 GEMV). */
typedef enum { Q3_SIMD_SCALAR = 0, Q3_SIMD_AVX2 = 1, Q3_SIMD_AVX512BF16 = 2, Q3_SIMD_AMX = 3 } q3_simd;

/* Best level this CPU supports (cpuid + OS xsave state). */
q3_simd q3_simd_detect(void);
/* Level in use: detected, unless Q3_SIMD=scalar|avx2|avx512bf16|amx in the environment or
 * q3_simd_set() lowered it (tests run every level the CPU has). */
q3_simd q3_simd_active(void);
void q3_simd_set(q3_simd level);
const char *q3_simd_name(q3_simd level);

/* Prompt tokens per CPU pass (runtime/model_cpu.c): each weight panel is reused this
 * many times per pass (512 measured 3-5 % faster than 128 for a 512-token prompt on
 * Zen 4, docs/perf.md); the AVX2 GEMM keeps a whole pass's results of a panel in L1. */
#define Q3_CPU_PASS_TOKENS 512

typedef struct q3_pool q3_pool;
q3_pool *q3_pool_create(int n_threads); /* n_threads <= 0: online cores */
void q3_pool_destroy(q3_pool *p);
int q3_pool_size(const q3_pool *p);
/* Run fn(ctx, ith, nth) on every thread (the caller is thread 0) and wait. */
void q3_pool_run(q3_pool *p, void (*fn)(void *ctx, int ith, int nth), void *ctx);
/* A buffer of at least bytes owned by the pool (grows, never shrinks; 64-byte aligned);
 * NULL when out of memory. Valid until the next call. */
void *q3_pool_scratch(q3_pool *p, size_t bytes);

/* One matrix product: y[t][r] = sum_c W[r][c] * x[t][c] for t < n_tok.
 * W: rows x cols BF16, R16C32 tiled. x: n_tok x cols f32 (row stride cols).
 * y: n_tok x rows f32 (row stride ldy >= rows). */
typedef struct {
    const uint16_t *w;
    uint64_t rows, cols;
    float *y;
    uint64_t ldy;
} q3_matmul_op;

/* Run several products that share the same input x (e.g. Q, K and V; gate and up)
 * in one parallel pass, rows split across the pool's threads. */
void q3_matmul(q3_pool *p, const q3_matmul_op *ops, int n_ops, const float *x, int n_tok);

/* The same products, each token's row bit for bit what a one-token q3_matmul gives
 * (the GEMV, f32 activations), while each weight panel still comes from memory once
 * for all tokens (the GEMV runs token after token on a panel in cache). For batched
 * decode: every sequence of the batch gets exactly the logits it would get alone,
 * which the GEMM (BF16-rounded activations on AVX-512, another summation order on
 * AVX2) would not guarantee. */
void q3_matmul_rows(q3_pool *p, const q3_matmul_op *ops, int n_ops, const float *x, int n_tok);

/* Scratch bytes q3_matmul takes from the pool for n_tok tokens of cols columns;
 * reserve it once with q3_pool_scratch at start-up so no call allocates. */
size_t q3_matmul_scratch_bytes(uint64_t cols, int n_tok);

/* The KV cache is IEEE half (F16): half the memory and reads of f32, 11 significant
 * bits (BF16 has 8). dst[i] = src[i] rounded to nearest even (beyond 65504: inf), at
 * the SIMD level in use; every level gives the same bits (F16C or plain C). */
void q3_f16_store(uint16_t *dst, const float *src, uint64_t n);

/* Attention of one query head over positions 0..n_pos-1 of one KV head, K and V in
 * F16, arithmetic in f32: out[0..head_dim) = sum_j softmax_j(scale * dot(q, k_j)) * v_j,
 * where row j of K is k + j * kv_stride and of V is v + j * kv_stride (in halves).
 * scores: n_pos floats of scratch (left holding the softmax numerators). n_pos = 0
 * gives zeros. */
void q3_attend_head(const float *q, const uint16_t *k, const uint16_t *v, uint64_t kv_stride, int n_pos, int head_dim,
                    float scale, float *scores, float *out);
/* The same for n_q queries of one KV head at once: query i is at q + i * q_stride,
 * sees positions 0 .. n_pos + i * pos_step - 1 and writes out + i * out_stride.
 * pos_step 1: consecutive tokens of one head (causal prefill); pos_step 0: the query
 * heads that share this KV head (GQA), one token. K and V rows up to the last
 * query's last position must hold finite values. scores: 4 * (n_pos + (n_q - 1) *
 * pos_step) floats; pos_step >= 0. With AVX-512, 4 queries (or a pair) share each pass
 * over K and V; with AVX2, 4 prompt tokens (pos_step > 0) or a pair. */
void q3_attend_rows(const float *q, uint64_t q_stride, int n_q, int pos_step, const uint16_t *k, const uint16_t *v,
                    uint64_t kv_stride, int n_pos, int head_dim, float scale, float *scores, float *out,
                    uint64_t out_stride);
/* The 8-bit KV cache (--cache-type q8_0, about half the bytes of F16): a row of
 * head_dim values is head_dim / Q3_Q8_BLOCK blocks, each Q3_Q8_BLOCK int8 values and
 * one F16 scale (llama.cpp's q8_0: d = max|x| / 127, q = round(x / d)), values and
 * scales in two arrays so the values stay aligned; row j's values at k + j * head_dim,
 * its scales at ks + j * (head_dim / Q3_Q8_BLOCK). head_dim a multiple of the block. */
#define Q3_Q8_BLOCK 32
/* The largest head_dim the 8-bit cache takes (its kernels keep a head's weights in L1). */
#define Q3_Q8_MAX_HEAD_DIM 256
/* n values (a multiple of Q3_Q8_BLOCK) into dst and scales; the same bits at every level
 * (ties round to even: the vector conversion's rounding, where llama.cpp rounds them away
 * from zero). */
void q3_q8_store(int8_t *dst, uint16_t *scales, const float *src, uint64_t n);
/* dst[i] = the value q3_q8_store's row holds, rounded to F16 (a state's layout). */
void q3_q8_load_f16(uint16_t *dst, const int8_t *src, const uint16_t *scales, uint64_t n);
/* q3_attend_rows over an 8-bit cache (rows contiguous, as above): n_q queries, query i
 * at q + i * q_stride sees positions 0 .. n_pos + i * pos_step - 1 and writes out + i *
 * out_stride. scores as q3_attend_rows asks. */
void q3_attend_rows_q8(const float *q, uint64_t q_stride, int n_q, int pos_step, const int8_t *k, const uint16_t *ks,
                       const int8_t *v, const uint16_t *vs, int n_pos, int head_dim, float scale, float *scores,
                       float *out, uint64_t out_stride);
/* dot(a, b) over n floats at the SIMD level in use. */
float q3_dot(const float *a, const float *b, uint64_t n);

/* The per-token steps of a layer at the SIMD level in use (scalar; AVX2 from AVX2 up).
 * out[i] = w[i] * (x[i] / sqrt(mean(x^2) + eps)); out may be x. The same bits at
 * every level. */
void q3_rmsnorm(float *out, const float *x, const float *w, uint64_t n, float eps);
/* Rotate-half RoPE of one head (2 * half values) at one position's cos/sin rows;
 * the same bits at every level. */
void q3_rope(float *v, const float *cos_p, const float *sin_p, uint64_t half);
/* SwiGLU: g[i] = g[i] / (1 + e^-g[i]) * u[i]. Scalar: expf; AVX2 and up: a vector exp
 * within ~3e-7 relative (tests/test_kernels.c bounds the whole step). */
void q3_silu_mul(float *g, const float *u, uint64_t n);
/* x[i] += y[i]; the same bits at every level. */
void q3_add(float *x, const float *y, uint64_t n);

#endif
