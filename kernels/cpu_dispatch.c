/* cpu_dispatch.c - pick the SIMD level at run time and split matrix products
 * across the pool by 16-row panels. */
#include <cpuid.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "../format/q3_format.h"
#include "cpu_kernels.h"
#include "cpu_panel.h"

/* Below this many tokens a product is a GEMV per token (exact f32 activations). */
#define GEMM_MIN_TOKENS 4

static int level_forced = -1;

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

static q3_simd detect_once(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return Q3_SIMD_SCALAR;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return Q3_SIMD_SCALAR;
    uint64_t xcr0 = xgetbv0();
    int os_avx = (xcr0 & 0x6) == 0x6, os_avx512 = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Q3_SIMD_SCALAR;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1;
    int avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    unsigned a1 = 0, b1, c1, d1;
    __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    int bf16 = (a1 >> 5) & 1;
    int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    int os_amx = (xcr0 & 0x60000) == 0x60000; /* XTILECFG and XTILEDATA */
    if (os_avx512 && avx512f && avx512bw && avx512vl && avx512dq && bf16 && fma && f16c) {
        if (amx_bf16 && amx_tile && os_amx && q3_amx_enable()) return Q3_SIMD_AMX;
        return Q3_SIMD_AVX512BF16;
    }
    if (os_avx && avx2 && fma && f16c) return Q3_SIMD_AVX2;
    return Q3_SIMD_SCALAR;
}

q3_simd q3_simd_detect(void)
{
    /* Detected once: the AMX request is a system call. */
    static _Atomic int detected = -1;
    int v = atomic_load(&detected);
    if (v < 0) atomic_store(&detected, v = (int)detect_once());
    return (q3_simd)v;
}

static q3_simd level_from_env(q3_simd best)
{
    const char *e = getenv("Q3_SIMD");
    q3_simd want = best;
    if (!e) return best;
    if (strcmp(e, "scalar") == 0) want = Q3_SIMD_SCALAR;
    else if (strcmp(e, "avx2") == 0) want = Q3_SIMD_AVX2;
    else if (strcmp(e, "avx512bf16") == 0) want = Q3_SIMD_AVX512BF16;
    else if (strcmp(e, "amx") == 0) want = Q3_SIMD_AMX;
    return want < best ? want : best; /* never above what the CPU has */
}

q3_simd q3_simd_active(void)
{
    if (level_forced < 0) level_forced = (int)level_from_env(q3_simd_detect());
    return (q3_simd)level_forced;
}

void q3_simd_set(q3_simd level)
{
    q3_simd best = q3_simd_detect();
    level_forced = (int)(level < best ? level : best);
}

const char *q3_simd_name(q3_simd level)
{
    switch (level) {
    case Q3_SIMD_AMX: return "amx";
    case Q3_SIMD_AVX512BF16: return "avx512bf16";
    case Q3_SIMD_AVX2: return "avx2";
    default: return "scalar";
    }
}

typedef enum { MODE_GEMV, MODE_AVX2_GEMM, MODE_AVX512_GEMM, MODE_AMX } matmul_mode;

typedef struct {
    const q3_matmul_op *ops;
    int n_ops;
    const float *x;
    int n_tok;
    matmul_mode mode;
    const uint16_t *xb; /* AVX-512 GEMM: BF16 activations, rows of xb_stride; AMX: packed B tiles */
    float *xf;          /* AVX2 GEMM: f32 activations packed by q3_avx2_pack_x */
    uint64_t xb_stride;
    uint64_t total_panels, pack_units;
    uint64_t nth;               /* threads */
    _Atomic uint64_t next;      /* the first panel no thread has taken */
    q3_gemv_panel_fn gemv;
} matmul_job;

static uint64_t panels_of(const q3_matmul_op *op) { return (op->rows + PANEL_ROWS - 1) / PANEL_ROWS; }

/* Panels [lo, hi) of one op. */
static void run_panels(const matmul_job *j, const q3_matmul_op *op, uint64_t lo, uint64_t hi)
{
    uint64_t panel_elems = q3_col_tiles(op->cols) * TILE_ELEMS;
    if (j->mode == MODE_AMX) {
        q3_amx_gemm(op->w, op->rows, op->cols, lo, hi, j->xb, j->n_tok, op->y, op->ldy);
        return;
    }
    for (uint64_t p = lo; p < hi; p++) {
        const uint16_t *panel = op->w + p * panel_elems;
        int n_rows = op->rows - p * PANEL_ROWS < PANEL_ROWS ? (int)(op->rows - p * PANEL_ROWS) : (int)PANEL_ROWS;
        float *y = op->y + p * PANEL_ROWS;
        if (j->mode == MODE_AVX2_GEMM) {
            q3_gemm_panel_avx2(panel, op->cols, j->xf, j->n_tok, y, op->ldy, n_rows);
            continue;
        }
        if (j->mode == MODE_AVX512_GEMM) {
            q3_gemm_panel_avx512bf16(panel, op->cols, j->xb, j->xb_stride, j->n_tok, y, op->ldy, n_rows);
            continue;
        }
        /* Token by token: the panel stays in cache after the first. */
        for (int t = 0; t < j->n_tok; t++) {
            float out[PANEL_ROWS];
            j->gemv(panel, op->cols, j->x + (uint64_t)t * op->cols, out);
            for (int r = 0; r < n_rows; r++) y[(uint64_t)t * op->ldy + r] = out[r];
        }
    }
}

/* Panels [begin, end) of the numbering over all ops. All ops of a call share
 * cols, so every panel is the same size. */
static void run_range(const matmul_job *j, uint64_t begin, uint64_t end)
{
    uint64_t base = 0;
    for (int o = 0; o < j->n_ops && base < end; o++) {
        const q3_matmul_op *op = &j->ops[o];
        uint64_t np = panels_of(op);
        uint64_t lo = begin > base ? begin - base : 0;
        uint64_t hi = end - base < np ? end - base : np;
        if (lo < hi) run_panels(j, op, lo, hi);
        base += np;
    }
}

/* Threads take units of consecutive panels from a shared counter: each unit is
 * one sequential stream, and a thread that the OS descheduled (a busy machine)
 * leaves its share to the others instead of holding up the whole call. Guided:
 * a unit is half an even share of the panels left (an even count, so AMX keeps
 * its panel pairs), long at first, short at the end, where fixed units of 1/16
 * of the call left one thread idle for up to a unit. At least 4 panels (128 KiB
 * at cols 1024) for the prefetchers of a streaming GEMV; the GEMMs, where a
 * panel is much work, take 2. */
static void matmul_worker(void *ctx, int ith, int nth)
{
    (void)ith, (void)nth;
    matmul_job *j = ctx;
    uint64_t min_chunk = j->mode == MODE_GEMV ? 4 : 2;
    for (;;) {
        uint64_t begin = atomic_load_explicit(&j->next, memory_order_relaxed), len;
        do {
            if (begin >= j->total_panels) return;
            uint64_t rest = j->total_panels - begin;
            len = (rest + 2 * j->nth - 1) / (2 * j->nth);
            if (len < min_chunk) len = min_chunk;
            len += len & 1;
            if (len > rest) len = rest;
        } while (!atomic_compare_exchange_weak_explicit(&j->next, &begin, begin + len, memory_order_relaxed,
                                                        memory_order_relaxed));
        run_range(j, begin, begin + len);
    }
}

static void pack_worker(void *ctx, int ith, int nth)
{
    const matmul_job *j = ctx;
    uint64_t lo = j->pack_units * (uint64_t)ith / (uint64_t)nth, hi = j->pack_units * (uint64_t)(ith + 1) / (uint64_t)nth;
    q3_amx_pack_x(j->x, j->ops[0].cols, j->n_tok, (uint16_t *)j->xb, lo, hi);
}

/* Round tokens [t0, t1) of the activations to BF16, rows padded with zeros to whole tiles. */
static void to_bf16_padded(const float *x, int t0, int t1, uint64_t cols, uint16_t *xb, uint64_t stride)
{
    for (int t = t0; t < t1; t++) {
        const float *src = x + (uint64_t)t * cols;
        uint16_t *dst = xb + (uint64_t)t * stride;
        for (uint64_t c = 0; c < cols; c++) dst[c] = q3_f32_to_bf16(src[c]);
        for (uint64_t c = cols; c < stride; c++) dst[c] = 0;
    }
}

/* The rounding is spread over the pool: on one core it was 2 % of a prompt. */
static void bf16_worker(void *ctx, int ith, int nth)
{
    const matmul_job *j = ctx;
    int t0 = (int)((int64_t)j->n_tok * ith / nth), t1 = (int)((int64_t)j->n_tok * (ith + 1) / nth);
    to_bf16_padded(j->x, t0, t1, j->ops[0].cols, (uint16_t *)j->xb, j->xb_stride);
}

/* AVX2: the token groups are packed by all threads, each its share. */
static void avx2_pack_worker(void *ctx, int ith, int nth)
{
    const matmul_job *j = ctx;
    int groups = (j->n_tok + Q3_AVX2_NR - 1) / Q3_AVX2_NR;
    q3_avx2_pack_x(j->x, j->ops[0].cols, j->n_tok, j->xf, (int)((int64_t)groups * ith / nth),
                   (int)((int64_t)groups * (ith + 1) / nth));
}

size_t q3_matmul_scratch_bytes(uint64_t cols, int n_tok)
{
    uint64_t col_tiles = q3_col_tiles(cols), groups = ((uint64_t)n_tok + AMX_TOKENS - 1) / AMX_TOKENS;
    /* AMX: packed BF16 B tiles; AVX2: packed f32 token groups (the larger of the others) */
    uint64_t avx2_groups = ((uint64_t)n_tok + Q3_AVX2_NR - 1) / Q3_AVX2_NR;
    uint64_t amx = groups * col_tiles * TILE_ELEMS * 2, f32 = avx2_groups * Q3_AVX2_NR * col_tiles * TILE_COLS * 4;
    return (size_t)(amx > f32 ? amx : f32);
}

int q3_gemv_prefetch_wanted(void)
{
    static int wanted = -1; /* decided once; a race writes the same value */
    if (wanted < 0) {
        const char *env = getenv("Q3_GEMV_PREFETCH");
        unsigned a, b, c, d;
        if (env && (env[0] == '0' || env[0] == '1') && env[1] == 0)
            wanted = env[0] == '1';
        else /* vendor string "GenuineIntel" is ebx, edx, ecx of leaf 0 */
            wanted = __get_cpuid(0, &a, &b, &c, &d) && b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;
    }
    return wanted;
}

/* gemm_ok 0: every token through the GEMV (q3_matmul_rows). */
static void matmul(q3_pool *p, const q3_matmul_op *ops, int n_ops, const float *x, int n_tok, int gemm_ok)
{
    q3_simd level = q3_simd_active();
    matmul_job j;
    memset(&j, 0, sizeof j);
    j.ops = ops, j.n_ops = n_ops, j.x = x, j.n_tok = n_tok, j.mode = MODE_GEMV;
    j.gemv = level >= Q3_SIMD_AVX512BF16 ? (q3_gemv_prefetch_wanted() ? q3_gemv_panel_avx512_prefetch : q3_gemv_panel_avx512)
             : level == Q3_SIMD_AVX2     ? (q3_gemv_prefetch_wanted() ? q3_gemv_panel_avx2_prefetch : q3_gemv_panel_avx2)
                                         : q3_gemv_panel_scalar;
    for (int o = 0; o < n_ops; o++) j.total_panels += panels_of(&ops[o]);
    if (n_ops <= 0 || j.total_panels == 0) return;
    j.nth = (uint64_t)q3_pool_size(p);
    atomic_init(&j.next, 0);
    uint64_t col_tiles = q3_col_tiles(ops[0].cols); /* all ops of one call share x, hence cols */
    if (gemm_ok && level >= Q3_SIMD_AVX512BF16 && n_tok >= GEMM_MIN_TOKENS && p) {
        if (level == Q3_SIMD_AMX) {
            uint64_t groups = ((uint64_t)n_tok + AMX_TOKENS - 1) / AMX_TOKENS;
            uint16_t *xpk = q3_pool_scratch(p, (size_t)(groups * col_tiles * TILE_ELEMS * sizeof *xpk));
            if (xpk) {
                j.mode = MODE_AMX;
                j.xb = xpk;
                j.pack_units = groups * col_tiles;
                q3_pool_run(p, pack_worker, &j);
            }
        } else {
            uint64_t stride = col_tiles * 32;
            uint16_t *xb = q3_pool_scratch(p, (size_t)n_tok * stride * sizeof *xb);
            if (xb) {
                j.mode = MODE_AVX512_GEMM;
                j.xb = xb;
                j.xb_stride = stride;
                q3_pool_run(p, bf16_worker, &j);
            }
        }
    }
    if (gemm_ok && level == Q3_SIMD_AVX2 && n_tok >= GEMM_MIN_TOKENS && p) {
        uint64_t groups = ((uint64_t)n_tok + Q3_AVX2_NR - 1) / Q3_AVX2_NR;
        float *xf = q3_pool_scratch(p, (size_t)(groups * Q3_AVX2_NR * col_tiles * 32) * sizeof *xf);
        if (xf) {
            j.mode = MODE_AVX2_GEMM;
            j.xf = xf;
            q3_pool_run(p, avx2_pack_worker, &j);
        }
    }
    q3_pool_run(p, matmul_worker, &j);
}

void q3_matmul(q3_pool *p, const q3_matmul_op *ops, int n_ops, const float *x, int n_tok)
{
    matmul(p, ops, n_ops, x, n_tok, 1);
}

void q3_matmul_rows(q3_pool *p, const q3_matmul_op *ops, int n_ops, const float *x, int n_tok)
{
    matmul(p, ops, n_ops, x, n_tok, 0);
}
