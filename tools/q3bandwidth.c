/* q3bandwidth - how fast can this machine read memory, and how close do the
 * q3 matrix kernels get to it?
 *
 *   q3bandwidth [--gib G] [--threads N] [--runs R] [--json]
 *       Read bandwidth: a G GiB buffer (default 2) summed with 64-byte (AVX-512)
 *       or 32-byte (AVX2) loads by 1..N threads (default: online cores), each
 *       thread one contiguous slice; best of R runs (default 5).
 *   q3bandwidth --matmul [--threads N] [--runs R] [--tokens T] [--json]
 *       q3_matmul on the Qwen3-0.6B shapes (random BF16 weights, R16C32).
 *       Decode (T = 1): every shape on its own, cycling through enough copies
 *       to exceed the caches, then one whole-model token (28 layers + lm_head,
 *       1.19 GB); reported as GB/s of weights read. Prefill (T > 1):
 *       the 28 layers' products for T tokens, as GFLOP/s and tokens/s.
 *   q3bandwidth --peak [--runs R] [--json]
 *       One core's clock and FMA peak: a chain of dependent integer adds (one
 *       cycle each) gives cycles per CPU second; 12 independent FMA chains give
 *       the f32 FMA throughput (AVX2, and AVX-512 where the CPU has it). CPU time,
 *       not wall time, so a busy machine does not lower the figures.
 *   q3bandwidth --gemm-panel [--cols C] [--tokens T] [--runs R]
 *       The AVX2 prefill GEMM on 16-row panels of C columns (default 1024) for T
 *       tokens (default 512), one thread, next to the AVX2 FMA peak measured in the
 *       same run: one panel hot in cache, cold panels (a 64 MiB ring), and cold
 *       panels writing y with a model's row stride (2048 floats). Each figure is the
 *       best of R x 8 short windows (default R 5), so another program's bursts on
 *       the core are left out: the kernel's own rate, not a prompt's.
 *   q3bandwidth --gemv-panel [--cols C] [--runs R]
 *       The decode GEMV of the SIMD level in use (Q3_SIMD) on 16-row panels of C
 *       columns (default 1024), one thread, with and without its software
 *       prefetch: one panel hot in cache (the kernel's own rate), then a 256 MiB
 *       ring of panels read once each, beside the probe reading the same ring in
 *       the same run; GB/s of weights, best of R (default 5). What a decode
 *       matvec reads at one thread without the pool, the other shapes or steps.
 *   q3bandwidth --attention [--positions P] [--runs R] [--json]
 *       One thread, head_dim 128, P positions (default 600), K/V hot in cache:
 *       q3_attend_head per query, q3_attend_rows for 16 causal queries and for a
 *       GQA pair, with K/V rows contiguous (stride 128) and 4 KiB apart (1024).
 *   q3bandwidth --attention-decode [--positions P] [--group G] [--cache-type T] [--runs R] [--json]
 *       A decode token's attention at 0.6B (28 layers x 8 KV heads x G query heads
 *       each, default 2; 4B has 4) over a P-position F16 cache (default 600; 4096:
 *       470 MB) or with --cache-type q8_0 an 8-bit one (250 MB), one thread, as GB/s
 *       of K and V read next to the probe reading the same bytes.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include "../format/q3_format.h"
#include "../kernels/cpu_kernels.h"
#include "../kernels/cpu_panel.h"
#include "../runtime/env_help.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads). */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- clock and FMA peak of one core ---- */

/* 8 dependent register adds per iteration: 8 cycles (add has a latency of one cycle;
 * register operands, since Golden Cove folds chains of adds of small immediates at
 * rename and ran them at "10.8 GHz"). */
static void add_chain(uint64_t iters)
{
    uint64_t x = 0, one = 1;
    for (uint64_t i = 0; i < iters; i++)
        __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
                         "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0"
                         : "+r"(x)
                         : "r"(one));
}

/* 12 independent chains of 8 FMAs: enough in flight for 2 FMA units of latency 4-5. */
#define FMA12(T, fma)                                                                                                  \
    _Pragma("GCC unroll 12") for (int a = 0; a < 12; a++) acc[a] = fma(acc[a], m, acc[a]);
__attribute__((target("avx2,fma"))) static float fma_avx2(uint64_t iters)
{
    __m256 acc[12], m = _mm256_set1_ps(0.999999f);
    for (int a = 0; a < 12; a++) acc[a] = _mm256_set1_ps((float)a);
    for (uint64_t i = 0; i < iters; i++) {
        FMA12(__m256, _mm256_fmadd_ps)
        __asm__ volatile("" : "+x"(m)); /* keep the loop */
    }
    float s = 0;
    for (int a = 0; a < 12; a++) s += _mm256_cvtss_f32(acc[a]);
    return s;
}
__attribute__((target("avx512f"))) static float fma_avx512(uint64_t iters)
{
    __m512 acc[12], m = _mm512_set1_ps(0.999999f);
    for (int a = 0; a < 12; a++) acc[a] = _mm512_set1_ps((float)a);
    for (uint64_t i = 0; i < iters; i++) {
        FMA12(__m512, _mm512_fmadd_ps)
        __asm__ volatile("" : "+v"(m));
    }
    float s = 0;
    for (int a = 0; a < 12; a++) s += _mm512_cvtss_f32(acc[a]);
    return s;
}

static int run_peak(int runs, int json)
{
    const uint64_t iters = 50000000;
    double ghz = 0, avx2 = 0, avx512 = 0;
    int has512 = q3_simd_detect() >= Q3_SIMD_AVX512BF16;
    volatile float sink = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = cpu_now();
        add_chain(iters);
        double g = 8.0 * (double)iters / (cpu_now() - t0) / 1e9;
        ghz = g > ghz ? g : ghz;
        t0 = cpu_now();
        sink += fma_avx2(iters / 4);
        double f = 12.0 * 8 * 2 * (double)(iters / 4) / (cpu_now() - t0) / 1e9;
        avx2 = f > avx2 ? f : avx2;
        if (has512) {
            t0 = cpu_now();
            sink += fma_avx512(iters / 4);
            f = 12.0 * 16 * 2 * (double)(iters / 4) / (cpu_now() - t0) / 1e9;
            avx512 = f > avx512 ? f : avx512;
        }
    }
    (void)sink;
    if (json)
        printf("{\"clock_ghz\":%.3f,\"avx2_fma_gflops\":%.1f,\"avx2_flop_per_cycle\":%.2f,\"avx512_fma_gflops\":%.1f,"
               "\"avx512_flop_per_cycle\":%.2f}\n", ghz, avx2, avx2 / ghz, avx512, avx512 / ghz);
    else {
        printf("one core, best of %d runs, per CPU second:\n  clock (dependent adds): %.3f GHz\n"
               "  AVX2 f32 FMA: %.1f GFLOP/s = %.2f flop/cycle (2 FMA units: 32)\n", runs, ghz, avx2, avx2 / ghz);
        if (has512) printf("  AVX-512 f32 FMA: %.1f GFLOP/s = %.2f flop/cycle (2 FMA units: 64)\n", avx512, avx512 / ghz);
    }
    return 0;
}

/* ---- read bandwidth ---- */

/* Software prefetch distance in bytes for the second pass (0: hardware prefetcher only). */
static size_t prefetch_bytes;

__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint8_t *p, size_t n)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t pf = prefetch_bytes;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        if (pf) {
            _mm_prefetch((const char *)(p + i + pf), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i + pf + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i + pf + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i + pf + 192), _MM_HINT_T0);
        }
        a0 = _mm512_xor_si512(a0, _mm512_loadu_si512((const void *)(p + i)));
        a1 = _mm512_xor_si512(a1, _mm512_loadu_si512((const void *)(p + i + 64)));
        a2 = _mm512_xor_si512(a2, _mm512_loadu_si512((const void *)(p + i + 128)));
        a3 = _mm512_xor_si512(a3, _mm512_loadu_si512((const void *)(p + i + 192)));
    }
    a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
    return (uint64_t)_mm512_reduce_add_epi64(a0);
}

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint8_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t pf = prefetch_bytes;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        if (pf) {
            _mm_prefetch((const char *)(p + i + pf), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i + pf + 64), _MM_HINT_T0);
        }
        a0 = _mm256_xor_si256(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, a0);
    return out[0] ^ out[1] ^ out[2] ^ out[3];
}

static uint64_t sum_scalar(const uint8_t *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        s ^= v;
    }
    return s;
}

typedef struct {
    const uint8_t *buf;
    size_t bytes;
    q3_simd level;
    uint64_t sink[256 * 8]; /* one cache line per thread */
} read_job;

static void read_worker(void *ctx, int ith, int nth)
{
    read_job *j = ctx;
    size_t lines = j->bytes / 256;
    size_t lo = lines * (size_t)ith / (size_t)nth * 256, hi = lines * (size_t)(ith + 1) / (size_t)nth * 256;
    uint64_t s = j->level >= Q3_SIMD_AVX512BF16 ? sum_avx512(j->buf + lo, hi - lo)
                 : j->level == Q3_SIMD_AVX2     ? sum_avx2(j->buf + lo, hi - lo)
                                                : sum_scalar(j->buf + lo, hi - lo);
    j->sink[ith * 8] = s;
}

/* The best probe figure so far per CPU second of each thread (bytes / (process CPU
 * time / threads)): what a thread reads while it runs, which a busy machine's
 * descheduling does not lower. */
static double probe_cpu_gbps;

/* One timed read of j's buffer, best of plain loads and prefetched loads; GB/s. */
static double read_once(q3_pool *pool, read_job *j, double best[2])
{
    for (int v = 0; v < 2; v++) {
        prefetch_bytes = v ? 2048 : 0;
        double t0 = now(), c0 = cpu_now();
        q3_pool_run(pool, read_worker, j);
        double gbps = (double)j->bytes / (now() - t0) / 1e9;
        double cpu_gbps = (double)j->bytes / ((cpu_now() - c0) / q3_pool_size(pool)) / 1e9;
        if (gbps > best[v]) best[v] = gbps;
        if (cpu_gbps > probe_cpu_gbps) probe_cpu_gbps = cpu_gbps;
    }
    return best[0] > best[1] ? best[0] : best[1];
}

static int run_bandwidth(double gib, int max_threads, int runs, int json)
{
    size_t bytes = (size_t)(gib * 1073741824.0) / 256 * 256;
    uint8_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        fprintf(stderr, "q3bandwidth: cannot map a %.2f GiB buffer\n", gib);
        return 1;
    }
    memset(buf, 1, bytes); /* touch every page: fault them in before timing */
    read_job *j = calloc(1, sizeof *j);
    if (!j) {
        fprintf(stderr, "q3bandwidth: out of memory\n");
        return 1;
    }
    j->buf = buf;
    j->bytes = bytes;
    j->level = q3_simd_active();
    if (json) printf("{\"loads\":\"%s\",\"bytes\":%zu,\"runs\":%d,\"read_gbps\":[", j->level >= Q3_SIMD_AVX512BF16 ? "avx512" : q3_simd_name(j->level), bytes, runs);
    else printf("read bandwidth, %.2f GiB buffer, %s loads, best of %d runs\n", gib,
                j->level >= Q3_SIMD_AVX512BF16 ? "avx512" : q3_simd_name(j->level), runs);
    for (int t = 1; t <= max_threads; t++) {
        q3_pool *pool = q3_pool_create(t);
        if (!pool) {
            fprintf(stderr, "q3bandwidth: cannot start %d threads\n", t);
            return 1;
        }
        /* Plain loads, then loads with a software prefetch 2 KiB ahead (the
         * prefetch past a slice's end reads at most 2 KiB of the next slice). */
        double best[2] = {0, 0};
        for (int r = 0; r < runs; r++) read_once(pool, j, best);
        double top = best[0] > best[1] ? best[0] : best[1];
        if (json)
            printf("%s{\"threads\":%d,\"gbps\":%.2f,\"plain_gbps\":%.2f,\"prefetch_gbps\":%.2f}", t > 1 ? "," : "", t,
                   top, best[0], best[1]);
        else printf("  threads %d: %6.2f GB/s   (plain loads %.2f, with prefetch %.2f)\n", t, top, best[0], best[1]);
        q3_pool_destroy(pool);
    }
    if (json) printf("]}\n");
    munmap(buf, bytes);
    free(j);
    return 0;
}

/* ---- matmul on the Qwen3-0.6B shapes ---- */

enum { H = 1024, QD = 2048, KVD = 1024, FF = 3072, VOCAB = 151936, LAYERS = 28 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint16_t rand_bf16(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    float f = (float)(int32_t)(rng >> 32) * (1.0f / 2147483648.0f) * 0.05f;
    return q3_f32_to_bf16(f);
}

/* Matrices carved from one arena; the contents are random, the layout is R16C32. */
typedef struct {
    uint16_t *base;
    uint64_t used, cap; /* in elements */
} arena;

static uint16_t *carve(arena *a, uint64_t rows, uint64_t cols)
{
    uint64_t n = q3_layout_elems(Q3_LAYOUT_R16C32, rows, cols);
    if (a->used + n > a->cap) return NULL;
    uint16_t *w = a->base + a->used;
    a->used += n;
    return w;
}

typedef struct {
    uint16_t *q, *k, *v, *o, *gate, *up, *down;
} layer_w;

static double time_model_token(q3_pool *pool, const layer_w *L, const uint16_t *lm_head, float *x, float **y,
                               int n_tok, int with_head)
{
    double t0 = now();
    for (int l = 0; l < LAYERS; l++) {
        q3_matmul_op qkv[3] = {{L[l].q, QD, H, y[0], QD}, {L[l].k, KVD, H, y[1], KVD}, {L[l].v, KVD, H, y[2], KVD}};
        q3_matmul(pool, qkv, 3, x, n_tok);
        q3_matmul_op o = {L[l].o, H, QD, y[3], H};
        q3_matmul(pool, &o, 1, y[0], n_tok);
        q3_matmul_op gu[2] = {{L[l].gate, FF, H, y[4], FF}, {L[l].up, FF, H, y[5], FF}};
        q3_matmul(pool, gu, 2, x, n_tok);
        q3_matmul_op d = {L[l].down, H, FF, y[3], H};
        q3_matmul(pool, &d, 1, y[4], n_tok);
    }
    if (with_head) {
        q3_matmul_op head = {lm_head, VOCAB, H, y[6], VOCAB};
        q3_matmul(pool, &head, 1, x, 1);
    }
    return now() - t0;
}

static int run_matmul(int threads, int runs, int n_tok, int json)
{
    const uint64_t layer_elems = (uint64_t)QD * H + 2ull * KVD * H + (uint64_t)H * QD + 3ull * FF * H;
    const uint64_t model_elems = LAYERS * layer_elems + (uint64_t)VOCAB * H;
    arena a = {NULL, 0, model_elems};
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, a.cap * 2) == 0) a.base = mem; /* a .q3 aligns tensors to 256 */
    float *x = malloc((size_t)n_tok * FF * sizeof(float));
    float *y[7];
    int ok = a.base && x;
    for (int i = 0; i < 7; i++) ok &= (y[i] = calloc((size_t)(i == 6 ? 1 : n_tok) * (i == 6 ? VOCAB : FF), sizeof(float))) != NULL;
    q3_pool *pool = q3_pool_create(threads);
    if (!ok || !pool) {
        fprintf(stderr, "q3bandwidth: out of memory for the %.2f GB model\n", model_elems * 2 / 1e9);
        return 1;
    }
    for (uint64_t i = 0; i < a.cap; i++) a.base[i] = rand_bf16();
    for (size_t i = 0; i < (size_t)n_tok * FF; i++) x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    layer_w L[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        L[l].q = carve(&a, QD, H), L[l].k = carve(&a, KVD, H), L[l].v = carve(&a, KVD, H);
        L[l].o = carve(&a, H, QD), L[l].gate = carve(&a, FF, H), L[l].up = carve(&a, FF, H);
        L[l].down = carve(&a, H, FF);
    }
    uint16_t *lm_head = carve(&a, VOCAB, H);
    int nth = q3_pool_size(pool);
    const char *simd = q3_simd_name(q3_simd_active());
    if (json) printf("{\"simd\":\"%s\",\"threads\":%d,\"tokens\":%d", simd, nth, n_tok);
    else printf("q3_matmul, Qwen3-0.6B shapes, %s, %d thread(s), best of %d runs\n", simd, nth, runs);

    if (n_tok == 1) {
        /* Each shape alone: cycle through copies (the arena's matrices of that shape)
         * so every call reads from memory, not from the caches. */
        static const struct { const char *name; uint64_t rows, cols; } shapes[] = {
            {"1024x1024 (k, v)", KVD, H}, {"2048x1024 (q)", QD, H}, {"1024x2048 (o)", H, QD},
            {"3072x1024 (gate, up)", FF, H}, {"1024x3072 (down)", H, FF}, {"151936x1024 (lm_head)", VOCAB, H}};
        if (json) printf(",\"gemv\":[");
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            uint64_t elems = q3_layout_elems(Q3_LAYOUT_R16C32, shapes[s].rows, shapes[s].cols);
            uint64_t copies = model_elems / elems;
            if (copies > 4096) copies = 4096;
            double best = 0;
            for (int r = 0; r < runs; r++) {
                double t0 = now();
                for (uint64_t c = 0; c < copies; c++) {
                    q3_matmul_op op = {a.base + c * elems, shapes[s].rows, shapes[s].cols, y[6], shapes[s].rows};
                    q3_matmul(pool, &op, 1, x, 1);
                }
                double gbps = (double)(copies * elems * 2) / (now() - t0) / 1e9;
                if (gbps > best) best = gbps;
            }
            if (json) printf("%s{\"shape\":\"%s\",\"gbps\":%.2f}", s ? "," : "", shapes[s].name, best);
            else printf("  GEMV %-22s %6.2f GB/s (%llu copies per run)\n", shapes[s].name, best,
                        (unsigned long long)copies);
        }
        /* The whole token, each run next to a read of the same 1.19 GB with the
         * bandwidth probe, so both see the same memory at the same moment. */
        read_job *rj = calloc(1, sizeof *rj);
        if (!rj) {
            fprintf(stderr, "q3bandwidth: out of memory\n");
            return 1;
        }
        rj->buf = (const uint8_t *)a.base;
        rj->bytes = model_elems * 2 / 256 * 256;
        rj->level = q3_simd_active();
        double best = 1e30, best_cpu = 1e30, probe[2] = {0, 0}, probe_best = 0;
        probe_cpu_gbps = 0;
        for (int r = 0; r < runs; r++) {
            probe_best = read_once(pool, rj, probe);
            double c0 = cpu_now();
            double t = time_model_token(pool, L, lm_head, x, y, 1, 1);
            double c = (cpu_now() - c0) / nth;
            if (t < best) best = t;
            if (c < best_cpu) best_cpu = c;
        }
        free(rj);
        double gb = model_elems * 2 / 1e9;
        if (json)
            printf("],\"decode_token_ms\":%.3f,\"decode_gbps\":%.2f,\"probe_gbps\":%.2f,\"ratio\":%.3f,"
                   "\"decode_cpu_gbps\":%.2f,\"probe_cpu_gbps\":%.2f,\"cpu_ratio\":%.3f}\n",
                   best * 1e3, gb / best, probe_best, gb / best / probe_best, gb / best_cpu, probe_cpu_gbps,
                   gb / best_cpu / probe_cpu_gbps);
        else
            printf("  decode token (all matmuls, %.3f GB): %.2f ms = %.2f GB/s = %.1f tokens/s (matmuls only)\n"
                   "  probe reading the same weights, same runs: %.2f GB/s -> decode at %.1f%% of it\n"
                   "  per CPU second of each thread: decode %.2f GB/s, probe %.2f GB/s -> %.1f%%\n",
                   gb, best * 1e3, gb / best, 1.0 / best, probe_best, 100.0 * gb / best / probe_best, gb / best_cpu,
                   probe_cpu_gbps, 100.0 * gb / best_cpu / probe_cpu_gbps);
    } else {
        time_model_token(pool, L, lm_head, x, y, n_tok, 0); /* warm up */
        /* Wall time, and the process's CPU time (all threads, spinning included):
         * on a busy machine the CPU time still says what the kernel does per core. */
        double best = 1e30, best_cpu = 1e30;
        for (int r = 0; r < runs; r++) {
            double c0 = cpu_now();
            double t = time_model_token(pool, L, lm_head, x, y, n_tok, 0);
            double c = cpu_now() - c0;
            if (t < best) best = t;
            if (c < best_cpu) best_cpu = c;
        }
        double flops = 2.0 * LAYERS * layer_elems * n_tok;
        if (json)
            printf(",\"prefill_s\":%.4f,\"gflops\":%.1f,\"tokens_per_s\":%.1f,\"cpu_s\":%.4f,\"gflops_per_cpu_s\":%.1f}\n",
                   best, flops / best / 1e9, n_tok / best, best_cpu, flops / best_cpu / 1e9);
        else
            printf("  prefill %d tokens, 28 layers' matmuls: %.3f s = %.1f GFLOP/s = %.1f tokens/s (matmuls only)\n"
                   "  CPU time %.3f s (all threads) = %.1f GFLOP per CPU second\n",
                   n_tok, best, flops / best / 1e9, n_tok / best, best_cpu, flops / best_cpu / 1e9);
    }
    q3_pool_destroy(pool);
    for (int i = 0; i < 7; i++) free(y[i]);
    free(x);
    free(a.base);
    return 0;
}

/* ---- attention ---- */

static int run_attention(int n_pos, int runs, int json)
{
    enum { D = 128, NQ = 16 };
    static const uint64_t strides[2] = {128, 1024};
    uint64_t rows = (uint64_t)n_pos + NQ;
    uint16_t *k = malloc(rows * 1024 * sizeof *k), *v = malloc(rows * 1024 * sizeof *v);
    float *q = malloc(NQ * D * sizeof *q), *out = malloc(NQ * D * sizeof *out);
    float *scores = malloc(4 * rows * sizeof *scores);
    if (!k || !v || !q || !out || !scores) {
        fprintf(stderr, "q3bandwidth: out of memory\n");
        return 1;
    }
    for (uint64_t i = 0; i < rows * 1024; i++) {
        float kf = (float)(i % 7) * 0.1f, vf = (float)(i % 5) * 0.1f;
        q3_f16_store(k + i, &kf, 1);
        q3_f16_store(v + i, &vf, 1);
    }
    for (int i = 0; i < NQ * D; i++) q[i] = (float)(i % 128) * 0.01f;
    float scale = 0.08838834764831845f; /* 1 / sqrt(128) */
    const char *simd = q3_simd_name(q3_simd_active());
    if (json) printf("{\"simd\":\"%s\",\"positions\":%d,\"attention_us\":[", simd, n_pos);
    else printf("attention, %s, 1 thread, head_dim 128, %d positions, hot in cache, best of %d runs (us per query head)\n",
                simd, n_pos, runs);
    for (int s = 0; s < 2; s++) {
        uint64_t st = strides[s];
        double head = 1e30, causal = 1e30, gqa = 1e30;
        for (int r = 0; r < runs; r++) {
            double t0 = now();
            for (int i = 0; i < NQ; i++) q3_attend_head(q + i * D, k, v, st, n_pos + i, D, scale, scores, out + i * D);
            double t = (now() - t0) / NQ;
            head = t < head ? t : head;
            t0 = now();
            q3_attend_rows(q, D, NQ, 1, k, v, st, n_pos, D, scale, scores, out, D);
            t = (now() - t0) / NQ;
            causal = t < causal ? t : causal;
            t0 = now();
            for (int i = 0; i < NQ; i += 2) q3_attend_rows(q + i * D, D, 2, 0, k, v, st, n_pos, D, scale, scores, out + i * D, D);
            t = (now() - t0) / NQ;
            gqa = t < gqa ? t : gqa;
        }
        if (json)
            printf("%s{\"kv_stride\":%llu,\"head\":%.2f,\"rows_causal16\":%.2f,\"rows_gqa2\":%.2f}", s ? "," : "",
                   (unsigned long long)st, head * 1e6, causal * 1e6, gqa * 1e6);
        else
            printf("  kv_stride %4llu: attend_head %6.2f   attend_rows 16 causal %6.2f   attend_rows GQA pair %6.2f\n",
                   (unsigned long long)st, head * 1e6, causal * 1e6, gqa * 1e6);
    }
    if (json) printf("]}\n");
    free(k), free(v), free(q), free(out), free(scores);
    return 0;
}

/* A decode token's attention over a cache of n_pos positions, K and V laid out as
 * the CPU backend's ([layer][kv_head][position][head_dim], F16), 28 layers x 8 KV
 * heads x a GQA group of `group` query heads, one thread: the cache (470 MB at 4096
 * positions) is beyond the caches, as in a real decode. Each run next to the probe reading the same
 * bytes (K, then V), so both see the same memory at the same moment. */
static int run_attention_decode(int n_pos, int group, int q8, int runs, int json)
{
    enum { D = 128, KV_HEADS = 8, MAX_GROUP = 8 };
    uint64_t head_elems = (uint64_t)n_pos * D, cache_elems = (uint64_t)LAYERS * KV_HEADS * head_elems;
    /* bytes of K (and of V): F16, or 8-bit values with their scales beside them */
    uint64_t val_bytes = cache_elems * (q8 ? 1 : 2), scale_elems = cache_elems / Q3_Q8_BLOCK;
    uint16_t *k = NULL, *v = NULL, *ks = NULL, *vs = NULL;
    if (posix_memalign((void **)&k, 4096, val_bytes) || posix_memalign((void **)&v, 4096, val_bytes) ||
        (q8 && (posix_memalign((void **)&ks, 4096, scale_elems * 2) ||
                posix_memalign((void **)&vs, 4096, scale_elems * 2)))) {
        fprintf(stderr, "q3bandwidth: out of memory for a %d-position cache\n", n_pos);
        return 1;
    }
    float kf[D], vf[D];
    for (uint64_t j = 0; j < (uint64_t)n_pos; j++) { /* small values, as a normed model's; every head alike */
        for (uint64_t i = 0; i < D; i++) {
            uint64_t e = j * D + i;
            kf[i] = (float)(int)(e % 13 - 6) * 0.05f, vf[i] = (float)(int)(e % 7 - 3) * 0.1f;
        }
        if (q8) {
            q3_q8_store((int8_t *)k + j * D, ks + j * D / Q3_Q8_BLOCK, kf, D);
            q3_q8_store((int8_t *)v + j * D, vs + j * D / Q3_Q8_BLOCK, vf, D);
        } else {
            q3_f16_store(k + j * D, kf, D);
            q3_f16_store(v + j * D, vf, D);
        }
    }
    uint64_t head_bytes = val_bytes / ((uint64_t)LAYERS * KV_HEADS), head_scales = scale_elems / ((uint64_t)LAYERS * KV_HEADS);
    for (uint64_t h = 1; h < (uint64_t)LAYERS * KV_HEADS; h++) {
        memcpy((char *)k + h * head_bytes, k, head_bytes), memcpy((char *)v + h * head_bytes, v, head_bytes);
        if (q8) memcpy(ks + h * head_scales, ks, head_scales * 2), memcpy(vs + h * head_scales, vs, head_scales * 2);
    }
    float q[MAX_GROUP * D], out[MAX_GROUP * D], *scores = malloc(4 * ((size_t)n_pos + 4) * sizeof *scores);
    if (!scores) {
        fprintf(stderr, "q3bandwidth: out of memory\n");
        return 1;
    }
    for (int i = 0; i < MAX_GROUP * D; i++) q[i] = (float)(i % 17) * 0.03f;
    q3_pool *pool = q3_pool_create(1);
    read_job *rj = calloc(1, sizeof *rj);
    if (!pool || !rj) {
        fprintf(stderr, "q3bandwidth: out of memory\n");
        return 1;
    }
    rj->level = q3_simd_active();
    double best = 1e30, probe[2] = {0, 0}, probe_best = 0;
    for (int r = 0; r < runs; r++) {
        double t = 0;
        for (int half = 0; half < 2; half++) { /* the probe reads K, then V */
            rj->buf = (const uint8_t *)(half ? v : k);
            rj->bytes = val_bytes / 256 * 256;
            probe_best = read_once(pool, rj, probe);
        }
        double t0 = now();
        for (int l = 0; l < LAYERS; l++)
            for (int h = 0; h < KV_HEADS; h++) {
                uint64_t off = ((uint64_t)l * KV_HEADS + h) * head_elems;
                if (q8)
                    q3_attend_rows_q8(q, D, group, 0, (const int8_t *)k + off, ks + off / Q3_Q8_BLOCK,
                                      (const int8_t *)v + off, vs + off / Q3_Q8_BLOCK, n_pos, D, 0.0883883476f,
                                      scores, out, D);
                else
                    q3_attend_rows(q, D, group, 0, k + off, v + off, D, n_pos, D, 0.0883883476f, scores, out, D);
            }
        t = now() - t0;
        if (t < best) best = t;
    }
    double gb = (val_bytes + (q8 ? scale_elems * 2 : 0)) * 2 / 1e9;
    if (json)
        printf("{\"simd\":\"%s\",\"positions\":%d,\"group\":%d,\"cache_type\":\"%s\",\"decode_attention_ms\":%.3f,"
               "\"kv_gbps\":%.2f,\"probe_gbps\":%.2f,\"ratio\":%.3f}\n",
               q3_simd_name(rj->level), n_pos, group, q8 ? "q8_0" : "f16", best * 1e3, gb / best, probe_best, gb / best / probe_best);
    else
        printf("decode attention, %s, %s cache, 1 thread, 28 layers x 8 KV heads x %d query heads, %d positions, "
               "best of %d runs:\n  %.2f ms a token for %.3f GB of K and V = %.2f GB/s; the probe on the same bytes "
               "%.2f GB/s -> %.1f%%\n",
               q3_simd_name(rj->level), q8 ? "q8_0" : "f16", group, n_pos, runs, best * 1e3, gb, gb / best, probe_best,
               100.0 * gb / best / probe_best);
    q3_pool_destroy(pool);
    free(rj), free(scores), free(k), free(v), free(ks), free(vs);
    return 0;
}

/* ---- the AVX2 GEMM on single panels ---- */

/* GFLOP/s of the best of windows of 8 panel calls; panel p % n_panels of ring, y at
 * y + (p % y_cols) * 16 with row stride ldy. */
static double gemm_panel_rate(const uint16_t *ring, uint64_t n_panels, uint64_t cols, const float *xpk, int n_tok,
                              float *y, uint64_t ldy, uint64_t y_cols, int windows)
{
    uint64_t panel_elems = q3_col_tiles(cols) * TILE_ELEMS, p = 0;
    double best = 1e30;
    for (int w = 0; w < windows; w++) {
        double t0 = cpu_now();
        for (int i = 0; i < 8; i++, p++)
            q3_gemm_panel_avx2(ring + (p % n_panels) * panel_elems, cols, xpk, n_tok, y + (p % y_cols) * 16, ldy, 16);
        double t = cpu_now() - t0;
        best = t < best ? t : best;
    }
    return 8.0 * 2 * 16 * (double)cols * n_tok / best / 1e9;
}

static int run_gemm_panel(uint64_t cols, int n_tok, int runs)
{
    if (q3_simd_detect() < Q3_SIMD_AVX2) {
        fprintf(stderr, "q3bandwidth: --gemm-panel needs AVX2 and FMA\n");
        return 1;
    }
    const uint64_t ldy = 2048, ring_bytes = 64ull << 20;
    uint64_t panel_elems = q3_col_tiles(cols) * TILE_ELEMS, n_panels = ring_bytes / (panel_elems * 2);
    int groups = (n_tok + Q3_AVX2_NR - 1) / Q3_AVX2_NR;
    uint16_t *ring = NULL;
    float *x = malloc((size_t)n_tok * cols * sizeof *x), *y = malloc((size_t)n_tok * ldy * sizeof *y), *xpk = NULL;
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, n_panels * panel_elems * 2) == 0) ring = mem;
    mem = NULL;
    if (posix_memalign(&mem, 64, (size_t)groups * Q3_AVX2_NR * q3_col_tiles(cols) * TILE_COLS * sizeof *xpk) == 0)
        xpk = mem;
    if (!ring || !x || !y || !xpk || n_panels == 0) {
        fprintf(stderr, "q3bandwidth: out of memory\n");
        free(ring), free(x), free(y), free(xpk);
        return 1;
    }
    for (uint64_t i = 0; i < n_panels * panel_elems; i++) ring[i] = rand_bf16();
    for (uint64_t i = 0; i < (uint64_t)n_tok * cols; i++) x[i] = q3_bf16_to_f32(rand_bf16());
    q3_avx2_pack_x(x, cols, n_tok, xpk, 0, groups);
    double peak = 0, hot = 0, cold = 0, cold_ldy = 0, r;
    volatile float sink = 0;
    for (int i = 0; i < runs; i++) {
        double t0 = cpu_now();
        sink += fma_avx2(5000000);
        r = 12.0 * 8 * 2 * 5000000 / (cpu_now() - t0) / 1e9, peak = r > peak ? r : peak;
        r = gemm_panel_rate(ring, 1, cols, xpk, n_tok, y, 16, 1, 8), hot = r > hot ? r : hot;
        r = gemm_panel_rate(ring, n_panels, cols, xpk, n_tok, y, 16, 1, 8), cold = r > cold ? r : cold;
        r = gemm_panel_rate(ring, n_panels, cols, xpk, n_tok, y, ldy, ldy / 16, 8), cold_ldy = r > cold_ldy ? r : cold_ldy;
    }
    (void)sink;
    printf("AVX2 GEMM panels, %llu columns, %d tokens, 1 thread, best of %d x 8 windows, GFLOP per CPU second:\n"
           "  AVX2 FMA peak %.1f; one panel hot %.1f (%.0f %%); cold panels %.1f (%.0f %%); "
           "cold, y row stride %llu: %.1f (%.0f %%)\n",
           (unsigned long long)cols, n_tok, runs, peak, hot, 100 * hot / peak, cold, 100 * cold / peak,
           (unsigned long long)ldy, cold_ldy, 100 * cold_ldy / peak);
    free(ring), free(x), free(y), free(xpk);
    return 0;
}

/* ---- the decode GEMV on single panels ---- */

/* GB/s of n calls of gemv on consecutive panels of ring (n_panels of them, wrapping). */
static double gemv_panel_rate(q3_gemv_panel_fn gemv, const uint16_t *ring, uint64_t n_panels, uint64_t cols,
                              const float *x, uint64_t n)
{
    uint64_t panel_elems = q3_col_tiles(cols) * TILE_ELEMS;
    float y[PANEL_ROWS];
    volatile float sink = 0;
    double t0 = now();
    for (uint64_t p = 0; p < n; p++) {
        gemv(ring + (p % n_panels) * panel_elems, cols, x, y);
        sink += y[0];
    }
    (void)sink;
    return (double)n * panel_elems * 2 / (now() - t0) / 1e9;
}

static int run_gemv_panel(uint64_t cols, int runs)
{
    q3_simd level = q3_simd_active();
    if (level < Q3_SIMD_AVX2) {
        fprintf(stderr, "q3bandwidth: --gemv-panel needs AVX2 and FMA\n");
        return 1;
    }
    int avx512 = level >= Q3_SIMD_AVX512BF16;
    q3_gemv_panel_fn plain = avx512 ? q3_gemv_panel_avx512 : q3_gemv_panel_avx2;
    q3_gemv_panel_fn pref = avx512 ? q3_gemv_panel_avx512_prefetch : q3_gemv_panel_avx2_prefetch;
    const uint64_t ring_bytes = 256ull << 20;
    uint64_t panel_elems = q3_col_tiles(cols) * TILE_ELEMS, n_panels = ring_bytes / (panel_elems * 2);
    uint16_t *ring = NULL;
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, n_panels * panel_elems * 2) == 0) ring = mem;
    float *x = malloc(q3_col_tiles(cols) * TILE_COLS * sizeof *x);
    if (!ring || !x || n_panels == 0) {
        fprintf(stderr, "q3bandwidth: out of memory\n");
        free(ring), free(x);
        return 1;
    }
    for (uint64_t i = 0; i < n_panels * panel_elems; i++) ring[i] = rand_bf16();
    for (uint64_t i = 0; i < q3_col_tiles(cols) * TILE_COLS; i++) x[i] = q3_bf16_to_f32(rand_bf16());
    read_job rj = {.buf = (const uint8_t *)ring, .bytes = n_panels * panel_elems * 2, .level = level};
    double hot = 0, cold = 0, hot_pf = 0, cold_pf = 0, probe = 0, r;
    uint64_t hot_calls = (64ull << 20) / (panel_elems * 2);
    for (int i = 0; i < runs; i++) { /* interleaved: the host's load moves them together */
        r = gemv_panel_rate(plain, ring, 1, cols, x, hot_calls), hot = r > hot ? r : hot;
        r = gemv_panel_rate(pref, ring, 1, cols, x, hot_calls), hot_pf = r > hot_pf ? r : hot_pf;
        r = gemv_panel_rate(plain, ring, n_panels, cols, x, n_panels), cold = r > cold ? r : cold;
        r = gemv_panel_rate(pref, ring, n_panels, cols, x, n_panels), cold_pf = r > cold_pf ? r : cold_pf;
        prefetch_bytes = 0;
        double t0 = now();
        read_worker(&rj, 0, 1);
        r = (double)rj.bytes / (now() - t0) / 1e9, probe = r > probe ? r : probe;
    }
    printf("%s GEMV panels, %llu columns, 1 thread, best of %d, GB/s of weights:\n"
           "  one panel hot %.1f (prefetch variant %.1f); a 256 MiB ring %.1f (%.0f %% of the probe), prefetch variant "
           "%.1f (%.0f %%); probe %.1f\n",
           avx512 ? "AVX-512" : "AVX2", (unsigned long long)cols, runs, hot, hot_pf, cold, 100 * cold / probe, cold_pf,
           100 * cold_pf / probe, probe);
    free(ring), free(x);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: q3bandwidth [--gib G] [--threads N] [--runs R] [--json]\n"
               "       q3bandwidth --matmul [--threads N] [--runs R] [--tokens T] [--json]\n"
               "       q3bandwidth --peak [--runs R] [--json]\n"
               "       q3bandwidth --gemm-panel [--cols C] [--tokens T] [--runs R]\n"
               "       q3bandwidth --gemv-panel [--cols C] [--runs R]\n"
               "       q3bandwidth --attention [--positions P] [--runs R] [--json]\n"
               "       q3bandwidth --attention-decode [--positions P] [--group G] [--cache-type f16|q8_0] [--runs R]\n"
               "                   [--json]\n"
               "  -h, --help  this text\n"
               "environment:\n" Q3_ENV_HELP_CPU
               "exit status: 0 measured, 1 error, 2 usage\n");
}

int main(int argc, char **argv)
{
    double gib = 2.0;
    int threads = 0, runs = 5, json = 0, matmul = 0, attention = 0, peak = 0, n_tok = 1, tok_set = 0, n_pos = 600, group = 2;
    int gemm_panel = 0, gemv_panel = 0, q8 = 0;
    long cols = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return q3_finish_stdout("q3bandwidth", 0);
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--matmul")) matmul = 1;
        else if (!strcmp(a, "--attention")) attention = 1;
        else if (!strcmp(a, "--attention-decode")) attention = 2;
        else if (!strcmp(a, "--peak")) peak = 1;
        else if (!strcmp(a, "--gemm-panel")) gemm_panel = 1;
        else if (!strcmp(a, "--gemv-panel")) gemv_panel = 1;
        else if (v && !strcmp(a, "--cols")) cols = atol(v), i++;
        else if (v && !strcmp(a, "--positions")) n_pos = atoi(v), i++;
        else if (v && !strcmp(a, "--group")) group = atoi(v), i++;
        else if (v && !strcmp(a, "--cache-type") && (!strcmp(v, "f16") || !strcmp(v, "q8_0"))) q8 = v[0] == 'q', i++;
        else if (v && !strcmp(a, "--gib")) gib = atof(v), i++;
        else if (v && !strcmp(a, "--threads")) threads = atoi(v), i++;
        else if (v && !strcmp(a, "--runs")) runs = atoi(v), i++;
        else if (v && !strcmp(a, "--tokens")) n_tok = atoi(v), tok_set = 1, i++;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (gib < 0.01 || gib > 64 || runs < 1 || runs > 1000 || threads < 0 || threads > 256 || n_tok < 1 || n_tok > 4096 ||
        n_pos < 1 || n_pos > 1000000 || group < 1 || group > 8 || cols < 1 || cols > 65536) {
        fprintf(stderr, "q3bandwidth: --gib must be 0.01..64, --runs 1..1000, --threads 0..256, --tokens 1..4096, "
                        "--positions 1..1000000, --group 1..8, --cols 1..65536\n");
        return 2;
    }
    if (attention == 2) return run_attention_decode(n_pos, group, q8, runs, json);
    if (attention) return run_attention(n_pos, runs, json);
    if (peak) return run_peak(runs, json);
    if (gemm_panel) return run_gemm_panel((uint64_t)cols, tok_set ? n_tok : 512, runs);
    if (gemv_panel) return run_gemv_panel((uint64_t)cols, runs);
    if (matmul) return run_matmul(threads, runs, tok_set ? n_tok : 1, json);
    if (threads == 0) {
        q3_pool *p = q3_pool_create(0);
        threads = q3_pool_size(p);
        q3_pool_destroy(p);
    }
    return run_bandwidth(gib, threads, runs, json);
}
