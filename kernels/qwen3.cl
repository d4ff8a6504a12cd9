/* qwen3.cl - the Qwen3 graph for OpenCL C 1.2 devices.
 * Weights stay BF16 in the file's R16C32 tiled layout (spec.md 8) in one device
 * buffer; a BF16 is widened by a shift (as_float(bits << 16)). Activations and
 * the KV cache are f32.
 *
 * A tile is 16 rows x 32 columns, row-major: 1 KiB = 64 uint4, and uint4 j of a
 * tile holds row j / 4, columns 8 (j % 4) .. 8 (j % 4) + 7. */

#ifndef HEAD_DIM
#define HEAD_DIM 128 /* the host builds with -DHEAD_DIM=<config head_dim> */
#endif
#ifndef ATT_HG
#define ATT_HG 1 /* query heads per decode-attention work-group (the host: 1, 2 or 4 of a KV group) */
#endif
#ifndef MVX
#define MVX 4096 /* matvec stages x whole: the host passes the widest matrix it runs (<= local memory) */
#endif
#ifndef MVX_NORM
#define MVX_NORM 4096 /* ... and the hidden size rounded up to 1024 (the normalised x) */
#endif
/* The constants shared with the host (MV_WG, TOKB, XMODE_*, ...) are in
 * kernels/qwen3_shared.h, the first source string of this program. */

inline float bf16_lo(uint w) { return as_float(w << 16); }
inline float bf16_hi(uint w) { return as_float(w & 0xffff0000u); }
inline float bf16(ushort h) { return as_float((uint)h << 16); }

/* Two floats rounded to BF16 (to nearest even; a NaN stays a NaN), a in the low
 * half: a prompt's activations for the tensor-core GEMM, rounded as the CPU
 * backend's GEMM rounds them. */
inline ushort bf16_round(float a)
{
    uint ua = as_uint(a);
    ua = (ua & 0x7fffffffu) > 0x7f800000u ? (ua | 0x400000u) : ua + 0x7fffu + ((ua >> 16) & 1u);
    return (ushort)(ua >> 16);
}
inline uint bf16_pack(float a, float b) { return (uint)bf16_round(a) | (uint)bf16_round(b) << 16; }

inline float dot8(uint4 w, float4 a, float4 b)
{
    return bf16_lo(w.x) * a.x + bf16_hi(w.x) * a.y + bf16_lo(w.y) * a.z + bf16_hi(w.y) * a.w +
           bf16_lo(w.z) * b.x + bf16_hi(w.z) * b.y + bf16_lo(w.w) * b.z + bf16_hi(w.w) * b.w;
}

/* The weights of one head's nsplit decode-attention splits, exp(max_sp - max) / the total of
 * exp(max_sp - max) sum_sp, written through weight_at for sp = 0..nsplit-1; max_at and sum_at
 * read split sp's (max, sum) (expressions in the loop variable sp). One definition for every
 * place that combines the splits (o_proj's staging, attention_tc's own combine), so that all
 * give the same bits. Splits that saw no position (max -inf) weigh 0. */
#define ATT_SPLIT_WEIGHTS(nsplit, sp, max_at, sum_at, weight_at)                                                      \
    do {                                                                                                             \
        float mx_ = -INFINITY, den_ = 0.0f;                                                                          \
        for (uint sp = 0; sp < (nsplit); sp++) mx_ = fmax(mx_, (max_at));                                            \
        for (uint sp = 0; sp < (nsplit); sp++) den_ += exp((max_at) - mx_) * (sum_at);                               \
        for (uint sp = 0; sp < (nsplit); sp++) (weight_at) = exp((max_at) - mx_) / den_;                             \
    } while (0)

/* Orders this thread's global stores before its later global accesses at device scope
 * (another work-group's atomic count and loads). NVIDIA: fence.acq_rel.gpu (OpenCL 1.2's
 * mem_fence orders only within the work-group there); elsewhere (the emulation on PoCL)
 * mem_fence. */
inline void device_fence(void)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
#else
    mem_fence(CLK_GLOBAL_MEM_FENCE);
#endif
}

/* Loads of what other compute units wrote during this launch: from L2 (ld.global.cg), never
 * a line an earlier read left in this unit's L1 (a neighbouring head's (max, sum) shares one).
 * Elsewhere (the emulation on PoCL) plain volatile loads. */
inline float4 load_l2_f4(__global const float *p)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    float4 v;
    asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "l"((ulong)p));
    return v;
#else
    volatile __global const float *q = p;
    return (float4)(q[0], q[1], q[2], q[3]);
#endif
}
inline float2 load_l2_f2(__global const float *p)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    float2 v;
    asm volatile("ld.global.cg.v2.f32 {%0, %1}, [%2];" : "=f"(v.x), "=f"(v.y) : "l"((ulong)p));
    return v;
#else
    volatile __global const float *q = p;
    return (float2)(q[0], q[1]);
#endif
}

/* x, as a decode product stages it: on NVIDIA from L2 (ld.global.cg), since inside
 * matvec_chain the previous product's work-groups on other compute units wrote it during
 * this launch; elsewhere a plain load (matvec_chain runs there as one work-group). */
inline float4 load_x4(__global const float4 *p)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    return load_l2_f4((__global const float *)p);
#else
    return *p;
#endif
}
inline float load_x1(__global const float *p)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"((ulong)p));
    return v;
#else
    return *p;
#endif
}

/* matvec_chain's device-wide barrier between two products, in two halves: grid_arrive once
 * a work-group's stores of the last product are issued, grid_wait before it reads what the
 * others stored; between them it issues its first weight loads of the next product, so
 * that neither the release nor the wait holds them up. sync[0] counts arrivals, so the
 * p-th barrier of a launch waits for p x G of them (target); sync[1] counts the
 * work-groups done (grid_exit: the last resets both, so each launch starts from zero); a
 * wait longer than CHAIN_TIMEOUT_NS (or, where there is no clock, CHAIN_SPIN_MAX polls)
 * sets sync[2] and goes on: the work-groups were not all resident, and the host runs the
 * step again without chains. One thread a work-group arrives (a release at device scope:
 * the work-group's stores, ordered before it by the barrier) and waits (acquire loads);
 * the barriers hold the others. */
#ifndef CHAIN_TIMEOUT_NS
#define CHAIN_TIMEOUT_NS 200000000ul /* 0.2 s: a product waited for takes well under 1 ms */
#endif
#define CHAIN_SPIN_MAX (1u << 28)
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
/* NVIDIA's global nanosecond clock: grid_wait's timeout and Q3_OPENCL_CHAIN_TRACE's stamps */
inline ulong nv_globaltimer(void)
{
    ulong t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#endif
inline void grid_arrive(__global int *sync)
{
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
        asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"((ulong)sync) : "memory");
#else
        mem_fence(CLK_GLOBAL_MEM_FENCE);
        atomic_add(sync, 1);
#endif
    }
}
inline void grid_wait(__global int *sync, int target)
{
    if (get_local_id(0) == 0) {
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
        ulong t0 = nv_globaltimer();
        for (;;) {
            int v;
            asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"((ulong)sync) : "memory");
            if (v >= target) break;
#ifdef CHAIN_SLEEP_NS /* a tuning build option: each poll apart by this many ns (nanosleep) */
            asm volatile("nanosleep.u32 %0;" ::"r"(CHAIN_SLEEP_NS));
#endif
            if (nv_globaltimer() - t0 > CHAIN_TIMEOUT_NS) {
                atomic_xchg(sync + 2, 1);
                break;
            }
        }
#else
        volatile __global int *s = sync;
        for (uint i = 0; *s < target; i++)
            if (i == CHAIN_SPIN_MAX) {
                atomic_xchg(sync + 2, 1);
                break;
            }
        mem_fence(CLK_GLOBAL_MEM_FENCE);
#endif
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}
/* A work-group of matvec_chain is done: every work-group has passed every barrier once
 * the count reaches G, so the last may reset the counts for the next launch. */
inline void grid_exit(__global int *sync, int groups)
{
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0 && atomic_add(sync + 1, 1) == groups - 1) {
        atomic_xchg(sync, 0);
        atomic_xchg(sync + 1, 0);
#ifdef CHAIN_TRACE
        atomic_inc(sync + 3);
#endif
    }
}

#define XCH 1024 /* columns of x staged in local memory at a time */
#define UNR 8    /* tiles per thread per chunk: XCH / 32 columns / 4 groups */

/* matvec's x, transformed per xmode, into xs (cols / 4 float4s) by the 256
 * threads of a work-group: loaded as float4 into registers for the norm (one
 * trip to memory, not two), the attention splits combined with their weights
 * computed in parallel. red and attw are scratch. One definition for matvec
 * and matvec_stage (a batched step), so that each token of a batch is staged
 * to the bit as matvec stages it alone. Ends with a barrier. */
/* always inlined: a called function would reach the caller's local arrays through pointers
 * (clang left one such shared function of decode attention uninlined) */
#ifndef MV_STAGE_LD
#define MV_STAGE_LD 4 /* plain and silu x: float4 loads a thread asks for at once (each an L2 trip if alone) */
#endif
inline __attribute__((always_inline)) void
mv_stage(__local float4 *xs, __local float *red, __local float *attw, __global const float *x,
         __global const float *x2, __global const uint4 *W, uint cols, uint xmode, ulong norm_off,
         float eps, uint nsplit, uint l)
{
    uint c4 = cols / 4;
    __global const float4 *x4 = (__global const float4 *)x;
    __global const float4 *x24 = (__global const float4 *)x2;
    if (xmode == XMODE_NORM) {
        float4 v[MVX_NORM / 1024], gg[MVX_NORM / 1024];
        float ss = 0.0f;
        __global const ushort *g = (__global const ushort *)W + norm_off;
#pragma unroll
        for (uint i = 0; i < MVX_NORM / 1024; i++) { /* the norm's weights asked for with x, not after its sum */
            uint k = l + 256 * i;
            v[i] = k < c4 ? load_x4(x4 + k) : (float4)(0.0f);
            gg[i] = k < c4 ? (float4)(bf16(g[4 * k]), bf16(g[4 * k + 1]), bf16(g[4 * k + 2]), bf16(g[4 * k + 3]))
                           : (float4)(0.0f);
        }
#pragma unroll
        for (uint i = 0; i < MVX_NORM / 1024; i++) ss += dot(v[i], v[i]);
        red[l] = ss;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < 32) {
            float s = 0.0f;
            for (uint i = 0; i < 8; i++) s += red[l * 8 + i];
            attw[l] = s;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        float tot = 0.0f;
        for (uint i = 0; i < 32; i++) tot += attw[i];
        float inv = 1.0f / sqrt(tot / (float)cols + eps);
#pragma unroll
        for (uint i = 0; i < MVX_NORM / 1024; i++) {
            uint k = l + 256 * i;
            if (k < c4) xs[k] = (v[i] * inv) * gg[i];
        }
    } else if (xmode == XMODE_SILU) {
        for (uint k0 = l; k0 < c4; k0 += 256 * MV_STAGE_LD) {
            float4 a[MV_STAGE_LD], b[MV_STAGE_LD];
#pragma unroll
            for (uint i = 0; i < MV_STAGE_LD; i++) {
                uint k = k0 + 256 * i;
                a[i] = k < c4 ? load_x4(x4 + k) : (float4)(0.0f);
                b[i] = k < c4 ? load_x4(x24 + k) : (float4)(0.0f);
            }
#pragma unroll
            for (uint i = 0; i < MV_STAGE_LD; i++)
                if (k0 + 256 * i < c4) xs[k0 + 256 * i] = a[i] / (1.0f + exp(-a[i])) * b[i];
        }
    } else if (xmode == XMODE_ATTN) {
        /* (max, sum) of split sp, head h at x2[2 (sp nh + h)]; a thread per head
         * weighs its splits: exp(max_sp - max) / the total. Splits that saw no
         * position (max -inf) weigh 0 and are skipped below. */
        uint nh = cols / HEAD_DIM;
        for (uint h = l; h < nh; h += MV_WG)
            ATT_SPLIT_WEIGHTS(nsplit, sp, x2[2 * (sp * nh + h)], x2[2 * (sp * nh + h) + 1], attw[sp * nh + h]);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint k = l; k < c4; k += MV_WG) {
            uint hk = k / (HEAD_DIM / 4);
            float4 a = (float4)(0.0f);
            for (uint sp = 0; sp < nsplit; sp++) {
                float wgt = attw[sp * nh + hk];
                if (wgt != 0.0f) a += wgt * load_x4(x4 + (ulong)sp * c4 + k);
            }
            xs[k] = a;
        }
    } else {
        for (uint k0 = l; k0 < c4; k0 += 256 * MV_STAGE_LD) {
            float4 a[MV_STAGE_LD];
#pragma unroll
            for (uint i = 0; i < MV_STAGE_LD; i++) a[i] = k0 + 256 * i < c4 ? load_x4(x4 + k0 + 256 * i) : (float4)(0.0f);
#pragma unroll
            for (uint i = 0; i < MV_STAGE_LD; i++)
                if (k0 + 256 * i < c4) xs[k0 + 256 * i] = a[i];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Launches of up to three matrices that share x number their panels (or row
 * blocks) one matrix after another: seg_of says which matrix unit *u (of n0
 * in the first, n1 in the second) belongs to and makes *u relative to it;
 * PICK3 takes that matrix's argument. */
inline uint seg_of(uint *u, uint n0, uint n1)
{
    if (*u < n0) return 0;
    *u -= n0;
    if (*u < n1) return 1;
    *u -= n1;
    return 2;
}
#define PICK3(s, a, b, c) ((s) == 0 ? (a) : (s) == 1 ? (b) : (c))

/* Matrix times a few tokens (decode, short prompts). One work-group per 16-row
 * panel and block of TOKB tokens; up to three matrices that share x run in one
 * launch (q, k, v; gate, up), their panels numbered one after another. Each
 * thread keeps UNR tile loads in flight (the next chunk's are issued before
 * this chunk's products); x is staged, transformed per xmode, in local memory. */

/* matmul_small and matvec take the same arguments, set once by mm_small
 * (backend_opencl.c) for either. x, x2 and the outputs y0..y2 are regions of
 * act, given as float offsets: one buffer argument, not six (NVIDIA's enqueue
 * costs the host per buffer). off0..off2: each matrix's tiles, in uint4s. */
#define MM_SMALL_ARGS                                                                                                 \
    __global const uint4 *W, uint cols, __global float *act, ulong x_off, ulong x2_off, uint ldx, uint xmode,        \
        ulong norm_off, float eps, uint n_tok, uint ymode, uint rsplit, uint nsplit,                                  \
        ulong off0, uint rows0, ulong y0, uint ld0,                                                                    \
        ulong off1, uint rows1, ulong y1, uint ld1,                                                                    \
        ulong off2, uint rows2, ulong y2, uint ld2, ulong pf_off, uint pf_lines
#define MM_SMALL_ARG_NAMES                                                                                    \
    W, cols, act, x_off, x2_off, ldx, xmode, norm_off, eps, n_tok, ymode, rsplit, nsplit, off0, rows0, y0, ld0, \
        off1, rows1, y1, ld1, off2, rows2, y2, ld2, pf_off, pf_lines

/* Decode streams one matrix a launch, and between two launches (the last loads'
 * products, the reductions and stores, the next launch's start: ~5 us on NVIDIA)
 * the memory would idle: so matvec asks L2 for the next launch's first pf_lines
 * 128-byte lines of weights (from uint4 pf_off), every thread its share, once its
 * work-group has issued its own last loads. NVIDIA: prefetch.global.L2 (or with
 * -DQ3_PF_BULK sm_90's bulk prefetch, 4 KiB an instruction); elsewhere nothing. */
/* One 128-byte line asked of L2 (NVIDIA; elsewhere nothing). */
inline void prefetch_line_l2(__global const uint4 *p)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    asm volatile("prefetch.global.L2 [%0];" ::"l"((ulong)p));
#endif
}

/* The same lines asked for by work-group g of n_groups, its share of them. */
inline void prefetch_l2_share(__global const uint4 *W, ulong pf_off, uint pf_lines, uint g, uint n_groups)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    uint n = n_groups * MV_WG, i = g * MV_WG + get_local_id(0);
#ifdef Q3_PF_BULK
    for (i *= 32; i < pf_lines; i += n * 32)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"((ulong)(W + pf_off + (ulong)i * 8)),
                     "r"(min(32u, pf_lines - i) * 128u));
#else
    for (; i < pf_lines; i += n) prefetch_line_l2(W + pf_off + (ulong)i * 8);
#endif
#endif
}
inline void prefetch_l2(__global const uint4 *W, ulong pf_off, uint pf_lines)
{
    prefetch_l2_share(W, pf_off, pf_lines, get_group_id(0), get_num_groups(0));
}

__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matmul_small(MM_SMALL_ARGS)
{
    __global const float *x = act + x_off, *x2 = act + x2_off;
    __local float4 xs[TOKB][XCH / 4];
    __local float red[TOKB][MV_WG];
    __local float inv[TOKB];
    /* rsplit (1, 2 or 4) work-groups share a panel, each taking 16 / rsplit of its
     * rows: more work-groups in flight for matrices of few panels. */
    uint l = get_local_id(0), tb = get_group_id(1) * TOKB, panel = get_group_id(0) / rsplit;
    uint part = get_group_id(0) % rsplit, lanes = 64 / rsplit, nsub = MV_WG / lanes, per_chunk = UNR / rsplit;
    uint nt = min((uint)TOKB, n_tok - tb);
    uint col_tiles = (cols + 31) / 32;

    /* Which matrix this panel belongs to. */
    uint seg = seg_of(&panel, (rows0 + 15) / 16, (rows1 + 15) / 16);
    ulong off = PICK3(seg, off0, off1, off2);
    uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);
    __global float *y = act + PICK3(seg, y0, y1, y2);

    uint jl = l % lanes, j = part * lanes + jl, sub = l / lanes, c0 = (j & 3) * 8;
    __global const uint4 *P = W + off + (ulong)panel * col_tiles * 64 + j;
    uint4 wb[UNR];
    for (uint u = 0; u < UNR; u++) {
        uint c = sub + nsub * u;
        wb[u] = u < per_chunk && c < col_tiles ? P[(ulong)c * 64] : (uint4)(0);
    }

    __global const ushort *g = (__global const ushort *)W + norm_off;
    if (xmode == XMODE_NORM) {
        for (uint t = 0; t < nt; t++) {
            __global const float *xt = x + (ulong)(tb + t) * ldx;
            float ss = 0.0f;
            for (uint i = l; i < cols; i += MV_WG) ss += xt[i] * xt[i];
            red[0][l] = ss;
            barrier(CLK_LOCAL_MEM_FENCE);
            for (uint s = MV_WG / 2; s > 0; s >>= 1) {
                if (l < s) red[0][l] += red[0][l + s];
                barrier(CLK_LOCAL_MEM_FENCE);
            }
            if (l == 0) inv[t] = 1.0f / sqrt(red[0][0] / (float)cols + eps);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }

    /* XMODE_ATTN: each split's weight per head, exp(max_s - max) / sum, once. */
    __local float attw[ATT_COMBINE_MAX];
    if (xmode == XMODE_ATTN) {
        uint nh = cols / HEAD_DIM;
        for (uint h = l; h < nh; h += MV_WG)
            ATT_SPLIT_WEIGHTS(nsplit, sp, x2[2 * (sp * nh + h)], x2[2 * (sp * nh + h) + 1], attw[sp * nh + h]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    float acc[TOKB];
    for (uint t = 0; t < TOKB; t++) acc[t] = 0.0f;
    uint n_chunks = (cols + XCH - 1) / XCH;
    for (uint ch = 0; ch < n_chunks; ch++) {
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint t = 0; t < nt; t++) {
            ulong row_off = (ulong)(tb + t) * ldx;
            __local float *xl = (__local float *)xs[t];
            for (uint i = l; i < XCH; i += MV_WG) {
                uint col = ch * XCH + i;
                float v = 0.0f;
                if (col < cols) {
                    v = x[row_off + col];
                    if (xmode == XMODE_NORM) v = (v * inv[t]) * bf16(g[col]);
                    else if (xmode == XMODE_SILU) v = v / (1.0f + exp(-v)) * x2[row_off + col];
                    else if (xmode == XMODE_ATTN) {
                        uint h = col / HEAD_DIM, nh = cols / HEAD_DIM;
                        v = 0.0f;
                        for (uint sp = 0; sp < nsplit; sp++) v += attw[sp * nh + h] * x[(ulong)sp * cols + col];
                    }
                }
                xl[i] = v;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        uint4 cur[UNR];
        for (uint u = 0; u < UNR; u++) cur[u] = wb[u];
        if (ch + 1 < n_chunks)
            for (uint u = 0; u < UNR; u++) {
                uint c = (ch + 1) * (XCH / 32) + sub + nsub * u;
                wb[u] = u < per_chunk && c < col_tiles ? P[(ulong)c * 64] : (uint4)(0);
            }
        for (uint u = 0; u < UNR; u++) {
            if (u >= per_chunk) break;
            uint xi = (sub + nsub * u) * 8 + (c0 >> 2);
            for (uint t = 0; t < TOKB; t++)
                if (t < nt) acc[t] += dot8(cur[u], xs[t][xi], xs[t][xi + 1]);
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint t = 0; t < TOKB; t++) red[t][l] = acc[t];
    barrier(CLK_LOCAL_MEM_FENCE);
    uint prows = 16 / rsplit; /* rows of this part */
    if (l < prows * TOKB) {
        uint t = l / prows, r = l % prows, row = panel * 16 + part * prows + r;
        if (t < nt && row < rows) {
            float s = 0.0f;
            for (uint q = 0; q < nsub; q++)
                for (uint k = 0; k < 4; k++) s += red[t][q * lanes + r * 4 + k];
            __global float *dst = y + (ulong)(tb + t) * ld + row;
            *dst = ymode == MODE_ADD ? *dst + s : s;
        }
    }
}

/* Matrix times one token (decode). The tile walk of matmul_small, but x is
 * staged whole (cols <= MVX) and transformed once per work-group: loaded as
 * float4 into registers for the norm (one trip to memory, not two), the
 * attention splits combined with their weights computed in parallel. A
 * work-group then takes (panel, part) items get_num_groups(0) apart, the
 * next item's first tile loads issued before this item's last products, so
 * a grid of about the resident work-groups streams the whole matrix without
 * waves and stages x once. The host keeps that stride a multiple of rsplit. */
#ifndef MV_LD
#define MV_LD 8 /* matvec: tile loads a thread keeps in flight (16: a tuning build option) */
#endif
/* Q3_OPENCL_CHAIN_TRACE: stamp k of a work-group's product at tr (NULL: none) */
#if defined(CHAIN_TRACE) && defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
#define CHAIN_STAMP(tr, k)                                                                                    \
    do {                                                                                                      \
        if ((tr) && get_local_id(0) == 0) (tr)[k] = (uint)nv_globaltimer();                                   \
    } while (0)
#else
#define CHAIN_STAMP(tr, k) do {} while (0)
#endif
/* Work-group `item` of a matvec grid of `stride` (get_group_id(0) and get_num_groups(0) in
 * matvec; matvec_chain's own), the kernel's local arrays passed in. sync: matvec_chain's
 * device-wide barrier: arrived at first, waited for (target) once this work-group's first
 * weight loads are issued and before it stages x, so that they are in flight while it
 * waits; NULL in matvec. tr: where Q3_OPENCL_CHAIN_TRACE's stamps 1 and 2 of this
 * product go (x waited for, x staged), or NULL. */
inline __attribute__((always_inline)) void mv_run(MM_SMALL_ARGS, __local float4 *xs, __local float *red,
                                                  __local float *attw, uint item, uint stride, __global int *sync,
                                                  int target, __global uint *tr)
{
    uint l = get_local_id(0), wg = item;
    if (sync) grid_arrive(sync);
    uint p0 = (rows0 + 15) / 16, p1 = (rows1 + 15) / 16, p2 = (rows2 + 15) / 16;
    uint n_items = (p0 + p1 + p2) * rsplit;
    uint part = item % rsplit, lanes = 64 / rsplit, nsub = 256 / lanes;
    uint col_tiles = cols / 32;
    uint jl = l % lanes, j = part * lanes + jl, sub = l / lanes, c0 = (j & 3) * 8;
    uint ntile = (col_tiles - sub + nsub - 1) / nsub; /* tiles this thread reads per item */
    ulong tile_stride = (ulong)nsub * 64;

    uint panel = item / rsplit, seg = seg_of(&panel, p0, p1);
    __global const uint4 *P =
        W + PICK3(seg, off0, off1, off2) + (ulong)panel * col_tiles * 64 + sub * 64 + j;
    uint4 wb[MV_LD];
#pragma unroll
    for (uint u = 0; u < MV_LD; u++) wb[u] = item < n_items && u < ntile ? P[u * tile_stride] : (uint4)(0);

    if (sync) grid_wait(sync, target);
    CHAIN_STAMP(tr, 1);
    mv_stage(xs, red, attw, act + x_off, act + x2_off, W, cols, xmode, norm_off, eps, nsplit, l);
    CHAIN_STAMP(tr, 2);

    uint prows = 16 / rsplit; /* rows of one part */
    for (; item < n_items; item += stride) {
        __global float *y = act + PICK3(seg, y0, y1, y2);
        uint rows = PICK3(seg, rows0, rows1, rows2), row0 = panel * 16 + part * prows;
        uint next_panel = (item + stride) / rsplit, next_seg = seg_of(&next_panel, p0, p1);
        __global const uint4 *Pn = W + PICK3(next_seg, off0, off1, off2) +
                                   (ulong)next_panel * col_tiles * 64 + sub * 64 + j;
        int more = item + stride < n_items;
        float acc = 0.0f;
        for (uint u0 = 0; u0 < ntile; u0 += MV_LD) {
            uint4 cur[MV_LD];
#pragma unroll
            for (uint u = 0; u < MV_LD; u++) cur[u] = wb[u];
            if (u0 + MV_LD < ntile) {
#pragma unroll
                for (uint u = 0; u < MV_LD; u++) wb[u] = u0 + MV_LD + u < ntile ? P[(u0 + MV_LD + u) * tile_stride] : (uint4)(0);
            } else {
#pragma unroll
                for (uint u = 0; u < MV_LD; u++) wb[u] = more && u < ntile ? Pn[u * tile_stride] : (uint4)(0);
                if (!more) prefetch_l2_share(W, pf_off, pf_lines, wg, stride);
            }
#pragma unroll
            for (uint u = 0; u < MV_LD; u++) {
                uint xi = (sub + nsub * (u0 + u)) * 8 + (c0 >> 2);
                if (u0 + u < ntile) acc += dot8(cur[u], xs[xi], xs[xi + 1]);
            }
        }
        red[l] = acc;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < prows && row0 + l < rows) {
            float s = 0.0f;
            for (uint q = 0; q < nsub; q++)
                for (uint k = 0; k < 4; k++) s += red[q * lanes + l * 4 + k];
            __global float *dst = y + row0 + l;
            *dst = ymode == MODE_ADD ? load_x1(dst) + s : s;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        P = Pn, panel = next_panel, seg = next_seg;
    }
}

__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec(MM_SMALL_ARGS)
{
    __local float4 xs[MVX / 4];
    __local float red[MV_WG];
    __local float attw[ATT_COMBINE_MAX]; /* XMODE_ATTN: each (split, head)'s weight; else scratch */
    mv_run(MM_SMALL_ARG_NAMES, xs, red, attw, get_group_id(0), get_num_groups(0), 0, 0, 0);
}

/* The decode products between two attention launches (a token's o_proj, gate/up, down and
 * the next layer's q/k/v, or lm_head) in one launch: each run as matvec runs it, by the
 * same work items of the same grid (so to the same bits), with a device-wide barrier
 * between two products instead of a launch's ~5 us (NVIDIA). Row p of the table at
 * act + ph_off holds product p's matvec arguments and grid (MVP_N values, qwen3_shared.h);
 * this launch's work-groups take that grid's get_num_groups(0) apart. On NVIDIA the launch
 * is as many work-groups as are resident at once (the host's mv_groups; a barrier that
 * waits too long says otherwise: sync[2], sync at act + sync_off); elsewhere one (the tests
 * on PoCL), which takes every work-group of each grid in turn and meets only itself. */
__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_chain(__global const uint4 *W, __global float *act, ulong ph_off, uint nph, ulong sync_off)
{
    __global const ulong *ph = (__global const ulong *)(act + ph_off);
    __global int *sync = (__global int *)(act + sync_off);
    __local float4 xs[MVX / 4];
    __local float red[MV_WG];
    __local float attw[ATT_COMBINE_MAX];
    uint g = get_group_id(0), G = get_num_groups(0);
    __global uint *trace = 0;
#ifdef CHAIN_TRACE /* this launch's stamps: the count of launches before it picks their place */
    trace = (__global uint *)(sync + CHAIN_SYNC_INTS) +
            (ulong)((uint)atomic_add(sync + 3, 0) % CHAIN_TRACE_LAUNCHES) * CHAIN_TRACE_PH * G * CHAIN_TRACE_STAMPS;
#endif
    for (uint p = 0; p < nph; p++) {
        __global const ulong *a = ph + (ulong)p * MVP_N;
        uint groups = (uint)a[MVP_GROUPS];
        __global int *s = p > 0 ? sync : 0;
        int target = (int)(p * G);
        __global uint *tr = trace && p < CHAIN_TRACE_PH ? trace + ((ulong)p * G + g) * CHAIN_TRACE_STAMPS : 0;
        CHAIN_STAMP(tr, 0);
        if (g >= groups && s) grid_arrive(s), grid_wait(s, target);
        for (uint v = g; v < groups; v += G, s = 0, tr = 0)
            mv_run(W, (uint)a[MVP_COLS], act, a[MVP_X_OFF], a[MVP_X2_OFF], (uint)a[MVP_LDX], (uint)a[MVP_XMODE],
                   a[MVP_NORM_OFF], as_float((uint)a[MVP_EPS]), (uint)a[MVP_NTOK], (uint)a[MVP_YMODE],
                   (uint)a[MVP_RSPLIT], (uint)a[MVP_NSPLIT], a[MVP_OFF0], (uint)a[MVP_ROWS0], a[MVP_Y0],
                   (uint)a[MVP_LD0], a[MVP_OFF0 + 4], (uint)a[MVP_ROWS0 + 4], a[MVP_Y0 + 4], (uint)a[MVP_LD0 + 4],
                   a[MVP_OFF0 + 8], (uint)a[MVP_ROWS0 + 8], a[MVP_Y0 + 8], (uint)a[MVP_LD0 + 8], a[MVP_PF_OFF],
                   (uint)a[MVP_PF_LINES], xs, red, attw, v, groups, s, target, tr);
        if (trace && p < CHAIN_TRACE_PH) CHAIN_STAMP(trace + ((ulong)p * G + g) * CHAIN_TRACE_STAMPS, 3);
    }
    grid_exit(sync, (int)G);
}

/* A batched decode step, its x: token t's x (at x_off + t x_ld, x2 at x2_off +
 * t x2_ld) staged by mv_stage, exactly as matvec stages it, then written to
 * out_off + t out_ld for matvec_batch (or, out_bf16, rounded to BF16 for matvec_mma,
 * out_ld BF16 apart). One work-group per token; token t's attention splits
 * (XMODE_ATTN) are the staging buffer's DB_SPLIT + t. */
__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_stage(__global const uint4 *W, uint cols, __global float *act, ulong x_off, ulong x2_off, ulong x_ld,
                  ulong x2_ld, uint xmode, ulong norm_off, float eps, ulong stage_off, ulong out_off, ulong out_ld,
                  uint out_bf16)
{
    __local float4 xs[MVX / 4];
    __local float red[MV_WG];
    __local float attw[ATT_COMBINE_MAX];
    uint t = get_group_id(0), l = get_local_id(0);
    uint nsplit = (uint)((__global const int *)(act + stage_off))[DB_SPLIT + t];
    mv_stage(xs, red, attw, act + x_off + t * x_ld, act + x2_off + t * x2_ld, W, cols, xmode, norm_off, eps, nsplit,
             l);
    if (out_bf16) { /* matvec_mma's x: out_ld BF16 apart, rounded as matvec_mma rounds one token's */
        __global uint2 *ob = (__global uint2 *)((__global ushort *)(act + out_off) + t * out_ld);
        for (uint k = l; k < cols / 4; k += MV_WG) ob[k] = (uint2)(bf16_pack(xs[k].x, xs[k].y), bf16_pack(xs[k].z, xs[k].w));
        return;
    }
    __global float4 *out = (__global float4 *)(act + out_off + t * out_ld);
    for (uint k = l; k < cols / 4; k += MV_WG) out[k] = xs[k];
}

/* Matrix times the n_tok (<= DEC_BATCH_MAX) tokens of a batched decode step,
 * each weight tile loaded once for all of them. x (x_off) holds each token's
 * staged x (matvec_stage), ldx floats apart; token t's rows go to y + t ld.
 * Row for row it gives each token the bits matvec gives it alone: every
 * partial sum is one of matvec's (the same rsplit from the host, items, lanes,
 * subs and tiles, each token's sum over its tiles in matvec's order), and the
 * partials are reduced in matvec's order. What differs is who computes them
 * and where x comes from:
 * - a thread takes MVB_R of matvec's lanes, MVB_R rows of one column group,
 *   so each x read serves MVB_R weight loads, and a work-group of MV_WG
 *   threads serves MVB_R items at once;
 * - x comes through local memory, MVB_XC columns of every token a round (the
 *   whole 16-token x does not fit), each thread's weights for the round
 *   requested before the stage so that the two trips overlap, and on NVIDIA
 *   the next round's asked of L2 during the products (MVB_PF: H200, 16
 *   tokens, +3 to +6 %; holding them in registers instead spilled and lost).
 * (One row a thread with x read through L1 ran a 16-token step at 4B in 10x a
 * token's time, 8 % of the FP32 rate.) xmode, x2, norm and nsplit were the
 * staging's. Like matvec it asks L2 for the next product's first weights
 * (pf_off, pf_lines) as it ends. */
#ifndef MVB_PF
#define MVB_PF 1 /* NVIDIA: the weights MVB_PF rounds ahead prefetched into L2 during this round's products (0: none) */
#endif
#define MVB_XC 512 /* columns of x staged a round: 16 tiles, a whole number of each thread's (nsub <= 16) */
#define MVB_TOK 8  /* tokens reduced a round (MVB_TOK x MV_WG x MVB_R floats, in the stage's memory) */
#define MVB_TPR (MVB_XC / 32 / 4) /* tiles a thread a round at the most (nsub >= 4) */
/* this thread's weights of round ch_ (tiles sub + nsub (ch_ per_round + u)), zeros past the end */
#define MVB_LOAD(dst, ch_)                                                                         \
    do {                                                                                          \
        _Pragma("unroll") for (uint u_ = 0; u_ < MVB_TPR; u_++) {                                \
            uint k_ = (ch_) * per_round + u_;                                                     \
            int ok_ = live && u_ < per_round && sub + nsub * k_ < col_tiles;                       \
            _Pragma("unroll") for (uint i_ = 0; i_ < MVB_R; i_++)                                \
                (dst)[u_][i_] = ok_ ? P[k_ * tile_stride + i_ * lpt] : (uint4)(0);                \
        }                                                                                         \
    } while (0)
__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_batch(MM_SMALL_ARGS)
{
    __global const float4 *xb = (__global const float4 *)(act + x_off);
    __local float4 xs[DEC_BATCH_MAX * MVB_XC / 4]; /* token b's column 4k at xs[b MVB_XC / 4 + k] */
    __local float *red = (__local float *)xs;      /* after the products: [MVB_TOK][MV_WG MVB_R] */
    uint l = get_local_id(0), tpi = MV_WG / MVB_R; /* threads an item */
    uint qd = l / tpi, t = l % tpi;                 /* this thread's item of the work-group's MVB_R */
    uint item = get_group_id(0) * MVB_R + qd, stride = get_num_groups(0) * MVB_R;
    uint p0 = (rows0 + 15) / 16, p1 = (rows1 + 15) / 16, p2 = (rows2 + 15) / 16;
    uint n_items = (p0 + p1 + p2) * rsplit;
    uint part = item % rsplit, lanes = 64 / rsplit, nsub = 256 / lanes, lpt = lanes / MVB_R;
    uint col_tiles = cols / 32, per_round = MVB_XC / 32 / nsub; /* this thread's tiles a round */
    /* matvec's lanes jl + lpt i (i < MVB_R) of sub: one column group, since lpt is a multiple of 4 */
    uint sub = t / lpt, jl = t % lpt, j = part * lanes + jl, c0 = (j & 3) * 8;
    ulong tile_stride = (ulong)nsub * 64;
    uint ld4 = ldx / 4, c4 = cols / 4, n_rounds = (cols + MVB_XC - 1) / MVB_XC;
    uint nb = min(n_tok, (uint)DEC_BATCH_MAX);
    uint prows = 16 / rsplit; /* rows of one part */

    /* every work-group runs the same number of item rounds (its barriers): items past the end compute nothing */
    uint base = get_group_id(0) * MVB_R, rounds = (n_items + stride - 1 - base) / stride;
    float acc[MVB_R][DEC_BATCH_MAX];
    uint4 cur[MVB_TPR][MVB_R];
    for (uint rd = 0; rd < rounds; rd++) {
        item = base + qd + rd * stride;
        int live = item < n_items;
        uint panel = item / rsplit, seg = seg_of(&panel, p0, p1);
        __global const uint4 *P =
            W + PICK3(seg, off0, off1, off2) + (ulong)panel * col_tiles * 64 + sub * 64 + j;
#pragma unroll
        for (uint i = 0; i < MVB_R; i++)
#pragma unroll
            for (uint b = 0; b < DEC_BATCH_MAX; b++) acc[i][b] = 0.0f;
        for (uint ch = 0; ch < n_rounds; ch++) {
            uint u_lo = ch * per_round;
            MVB_LOAD(cur, ch); /* requested before the stage: the two trips overlap */
            barrier(CLK_LOCAL_MEM_FENCE); /* the last round's products (or reduction) are done with xs */
            for (uint k = l; k < nb * (MVB_XC / 4); k += MV_WG) {
                uint b = k / (MVB_XC / 4), c = ch * (MVB_XC / 4) + k % (MVB_XC / 4);
                xs[k] = c < c4 ? xb[b * ld4 + c] : (float4)(0.0f);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
#if MVB_PF && defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE) /* elsewhere the loop would do nothing */
            /* the next round's weights asked of L2 now (no registers held), so that its loads
             * find them there: a lane in 8, one 128-byte line of 8 uint4 */
            if (live && ch + MVB_PF < n_rounds && (jl & 7) == 0) {
#pragma unroll
                for (uint u = 0; u < MVB_TPR; u++) {
                    uint k_ = (ch + MVB_PF) * per_round + u;
                    if (u < per_round && sub + nsub * k_ < col_tiles)
#pragma unroll
                        for (uint i = 0; i < MVB_R; i++)
                            prefetch_line_l2(P + k_ * tile_stride + i * lpt);
                }
            }
#endif
#pragma unroll
            for (uint u = 0; u < MVB_TPR; u++) {
                uint tile = sub + nsub * (u_lo + u);
                if (live && u < per_round && tile < col_tiles) {
                    uint xi = (tile - ch * (MVB_XC / 32)) * 8 + (c0 >> 2);
#pragma unroll
                    for (uint b = 0; b < DEC_BATCH_MAX; b++)
                        if (b < nb) {
                            float4 xa = xs[b * (MVB_XC / 4) + xi], xc = xs[b * (MVB_XC / 4) + xi + 1];
#pragma unroll
                            for (uint i = 0; i < MVB_R; i++) acc[i][b] += dot8(cur[u][i], xa, xc);
                        }
                }
            }
        }
        if (item + stride >= n_items) prefetch_l2(W, pf_off, pf_lines); /* as matvec: the next launch's */
        /* matvec's red[l] for lane jl + lpt i of sub, item qd: red[.][qd MV_WG + sub lanes + jl + lpt i];
         * MVB_TOK tokens a round, the rounds unrolled (acc indexed by constants only, or it would
         * leave registers) and all of them run whatever nb is: with a break before the barriers
         * PoCL gave wrong sums */
#pragma unroll
        for (uint h = 0; h < DEC_BATCH_MAX / MVB_TOK; h++) {
            uint tb = h * MVB_TOK;
            barrier(CLK_LOCAL_MEM_FENCE); /* xs's last products, or the last reduction, are done */
#pragma unroll
            for (uint b = 0; b < MVB_TOK; b++)
#pragma unroll
                for (uint i = 0; i < MVB_R; i++)
                    if (tb + b < nb) red[b * (MV_WG * MVB_R) + qd * MV_WG + sub * lanes + jl + lpt * i] = acc[i][tb + b];
            barrier(CLK_LOCAL_MEM_FENCE);
            uint nt = tb < nb ? min((uint)MVB_TOK, nb - tb) : 0, per_item = prows * nt;
            for (uint s_ = l; s_ < MVB_R * per_item; s_ += MV_WG) {
                uint iq = s_ / per_item, tt = (s_ % per_item) / prows, r = s_ % prows;
                uint it = base + rd * stride + iq, pn = it / rsplit, sg = seg_of(&pn, p0, p1);
                uint rw = pn * 16 + (it % rsplit) * prows + r;
                if (it < n_items && rw < PICK3(sg, rows0, rows1, rows2)) {
                    float s = 0.0f;
                    __local const float *rr = red + tt * (MV_WG * MVB_R) + iq * MV_WG + r * 4;
                    for (uint q = 0; q < nsub; q++)
                        for (uint k = 0; k < 4; k++) s += rr[q * lanes + k];
                    __global float *dst = act + PICK3(sg, y0, y1, y2) + (ulong)(tb + tt) * PICK3(sg, ld0, ld1, ld2) + rw;
                    *dst = ymode == MODE_ADD ? *dst + s : s;
                }
            }
        }
    }
}

/* Matrix times many tokens (prefill): 64 rows x 64 tokens per work-group, 32
 * columns (one tile per panel) at a time through local memory; each thread
 * computes 4 rows x 4 tokens, and loads the next tile into registers while it
 * multiplies this one. Up to three matrices that share x run in one launch
 * (q, k, v; gate, up), their 64-row blocks numbered one after another.
 * y = W x, or y += W x with add. */
#define GM_R 64
#define GM_T 64
inline float4 gemm_x4(__global const float *x, uint ldx, uint tok, uint n_tok, uint col, uint cols)
{
    if (tok >= n_tok) return (float4)(0.0f);
    ulong o = (ulong)tok * ldx + col;
    if (col + 4 <= cols) return vload4(0, x + o);
    return (float4)(col < cols ? x[o] : 0.0f, col + 1 < cols ? x[o + 1] : 0.0f, col + 2 < cols ? x[o + 2] : 0.0f,
                    col + 3 < cols ? x[o + 3] : 0.0f);
}

/* gate = silu(gate) * up for a prompt's tokens, once, before down_proj's GEMM
 * (inside the GEMM every block would redo it); with out_bf16, written as BF16
 * pairs to outb instead (the tensor-core GEMM's input). Global size n / 2. */
__kernel void silu_mul(__global float *gate, __global const float *up, __global uint *outb, uint out_bf16)
{
    size_t i = get_global_id(0);
    float2 a = vload2(i, gate), b = vload2(i, up);
    float2 r = a / (1.0f + exp(-a)) * b;
    if (out_bf16)
        outb[i] = bf16_pack(r.x, r.y);
    else
        vstore2(r, i, gate);
}

/* y (+)= the sum of nparts partial products (split-K GEMM), in a fixed order:
 * part p of token t, row r at parts[p * stride + t * rows + r]. Global (rows, n_tok). */
__kernel void add_parts(__global const float *parts, uint nparts, uint stride, __global float *y, uint ld, uint rows,
                        uint add)
{
    uint r = get_global_id(0), t = get_global_id(1);
    if (r >= rows) return;
    float s = 0.0f;
    for (uint p = 0; p < nparts; p++) s += parts[(ulong)p * stride + (ulong)t * rows + r];
    __global float *dst = y + (ulong)t * ld + r;
    *dst = add ? *dst + s : s;
}

/* gate/up's tail split over the columns (matmul_mma_glu_parts): gate's and up's sums of
 * nparts partial products in a fixed order (part p of token t: gate's row r at parts[p stride
 * + t 2 rows + r], up's rows further), and silu(gate) up stored in BF16 as matmul_mma_glu
 * stores it, at row row0 + r of token t (ld BF16 apart). Global (rows, n_tok). */
__kernel void glu_parts_sum(__global const float *parts, uint nparts, uint stride, uint rows, __global ushort *yb,
                            uint ld, uint row0)
{
    uint r = get_global_id(0), t = get_global_id(1);
    if (r >= rows) return;
    float g = 0.0f, u = 0.0f;
    for (uint p = 0; p < nparts; p++) {
        __global const float *pt = parts + (ulong)p * stride + (ulong)t * 2 * rows;
        g += pt[r];
        u += pt[rows + r];
    }
    yb[(ulong)t * ld + row0 + r] = bf16_round(g / (1.0f + exp(-g)) * u);
}

__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void matmul_gemm(__global const uint4 *W, uint cols, __global const float *x, uint ldx, uint n_tok, uint add,
                 ulong off0, uint rows0, __global float *y0, uint ld0,
                 ulong off1, uint rows1, __global float *y1, uint ld1,
                 ulong off2, uint rows2, __global float *y2, uint ld2)
{
    __local float Ws[32][GM_R];
    __local float Xs[32][GM_T];
    uint l = get_local_id(0), tx = l & 15, ty = l >> 4;
    uint blk = get_group_id(0), tb = get_group_id(1) * GM_T;
    uint seg = seg_of(&blk, (rows0 + GM_R - 1) / GM_R, (rows1 + GM_R - 1) / GM_R);
    ulong off = PICK3(seg, off0, off1, off2);
    uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);
    __global float *y = PICK3(seg, y0, y1, y2);
    uint rb = blk * GM_R;
    uint col_tiles = (cols + 31) / 32, n_panels = (rows + 15) / 16;
    uint q = l >> 6, j = l & 63, wr = q * 16 + (j >> 2), wc = (j & 3) * 8;
    uint panel = rb / 16 + q;
    int has_panel = panel < n_panels;
    __global const uint4 *P = W + off + (ulong)panel * col_tiles * 64 + j;
    uint xt0 = l >> 3, xt1 = (l + 256) >> 3, xk = (l & 7) * 4; /* the two float4 of x this thread stages */
    float acc[4][4];
    for (uint a = 0; a < 4; a++)
        for (uint b = 0; b < 4; b++) acc[a][b] = 0.0f;
    uint4 w = has_panel ? P[0] : (uint4)(0);
    float4 xa = gemm_x4(x, ldx, tb + xt0, n_tok, xk, cols);
    float4 xb = gemm_x4(x, ldx, tb + xt1, n_tok, xk, cols);
    for (uint c = 0; c < col_tiles; c++) {
        /* Row wr of column k lives in float4 group (wr / 4) ^ (k / 8): the four
         * threads that store one row's columns 0, 8, 16, 24 hit four banks. */
        uint ws = (((wr >> 2) ^ (wc >> 3)) << 2) | (wr & 3);
        Ws[wc + 0][ws] = bf16_lo(w.x);
        Ws[wc + 1][ws] = bf16_hi(w.x);
        Ws[wc + 2][ws] = bf16_lo(w.y);
        Ws[wc + 3][ws] = bf16_hi(w.y);
        Ws[wc + 4][ws] = bf16_lo(w.z);
        Ws[wc + 5][ws] = bf16_hi(w.z);
        Ws[wc + 6][ws] = bf16_lo(w.w);
        Ws[wc + 7][ws] = bf16_hi(w.w);
        Xs[xk + 0][xt0] = xa.x, Xs[xk + 1][xt0] = xa.y, Xs[xk + 2][xt0] = xa.z, Xs[xk + 3][xt0] = xa.w;
        Xs[xk + 0][xt1] = xb.x, Xs[xk + 1][xt1] = xb.y, Xs[xk + 2][xt1] = xb.z, Xs[xk + 3][xt1] = xb.w;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (c + 1 < col_tiles) { /* the next tile, in flight while this one is multiplied */
            w = has_panel ? P[(ulong)(c + 1) * 64] : (uint4)(0);
            xa = gemm_x4(x, ldx, tb + xt0, n_tok, (c + 1) * 32 + xk, cols);
            xb = gemm_x4(x, ldx, tb + xt1, n_tok, (c + 1) * 32 + xk, cols);
        }
        for (uint k = 0; k < 32; k++) {
            float4 a = vload4(0, &Ws[k][(ty ^ (k >> 3)) * 4]), b = vload4(0, &Xs[k][tx * 4]);
            acc[0][0] += a.x * b.x, acc[0][1] += a.x * b.y, acc[0][2] += a.x * b.z, acc[0][3] += a.x * b.w;
            acc[1][0] += a.y * b.x, acc[1][1] += a.y * b.y, acc[1][2] += a.y * b.z, acc[1][3] += a.y * b.w;
            acc[2][0] += a.z * b.x, acc[2][1] += a.z * b.y, acc[2][2] += a.z * b.z, acc[2][3] += a.z * b.w;
            acc[3][0] += a.w * b.x, acc[3][1] += a.w * b.y, acc[3][2] += a.w * b.z, acc[3][3] += a.w * b.w;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (uint a = 0; a < 4; a++) {
        uint row = rb + ty * 4 + a;
        if (row >= rows) break;
        for (uint b = 0; b < 4; b++) {
            uint t = tb + tx * 4 + b;
            if (t >= n_tok) break;
            __global float *dst = y + (ulong)t * ld + row;
            *dst = add ? *dst + acc[a][b] : acc[a][b];
        }
    }
}


/* x[t][c] = embedding row of token t; global size (hidden, n_tok). stage holds
 * the pass's first position, then its token ids. */
__kernel void embed(__global const ushort *W, ulong w_off, uint cols, __global const int *stage, __global float *x)
{
    uint c = get_global_id(0), t = get_global_id(1);
    uint r = (uint)stage[1 + t], col_tiles = (cols + 31) / 32;
    ulong idx = ((ulong)(r / 16) * col_tiles + c / 32) * 512 + (r % 16) * 32 + c % 32;
    x[(ulong)t * cols + c] = bf16(W[(ulong)w_off + idx]);
}

#define NORM_WG 256

/* The greedy token of each row of a decode step's logits, the device's half: work-group
 * (c, r) scans chunk c of row r (V floats in get_num_groups(0) chunks: one work-group
 * alone cannot pull a row's 600 KB at the memory's rate) and stores the chunk's first index
 * of its largest logit and that logit's bits, the index -1 where one of its logits is NaN or
 * infinite, V where the chunk is empty. The host picks each row's first largest among its
 * chunks (backend_opencl.c's greedy_of_chunks): q3_greedy_token's answer (runtime/sampler.c)
 * from the same floats. */
__kernel __attribute__((reqd_work_group_size(NORM_WG, 1, 1)))
void logits_greedy(__global const float *logits, uint V, __global int2 *chunks)
{
    __local float best_v[NORM_WG];
    __local uint best_i[NORM_WG];
    __local int bad;
    uint l = get_local_id(0), c = get_group_id(0), r = get_group_id(1), G = get_num_groups(0);
    uint per = (V + G - 1) / G, lo = min(V, c * per), hi = min(V, lo + per);
    __global const float *x = logits + (ulong)r * V;
    if (l == 0) bad = 0;
    float best = -INFINITY;
    uint at = V; /* none yet; indices rise, so a later equal value never replaces */
    int nonfinite = 0;
    for (uint i = lo + l; i < hi; i += NORM_WG) {
        float v = x[i];
        nonfinite |= !isfinite(v);
        if (at == V || v > best) best = v, at = i;
    }
    best_v[l] = best, best_i[l] = at;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (nonfinite) atomic_or(&bad, 1);
    for (uint s = NORM_WG / 2; s > 0; s >>= 1) {
        if (l < s && best_i[l + s] < V &&
            (best_i[l] == V || best_v[l + s] > best_v[l] || (best_v[l + s] == best_v[l] && best_i[l + s] < best_i[l])))
            best_v[l] = best_v[l + s], best_i[l] = best_i[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) chunks[r * G + c] = (int2)(bad ? -1 : (int)best_i[0], as_int(best_v[0]));
}

/* out = rmsnorm(x) * w; one work-group per token. With out_bf16, out holds BF16
 * pairs instead (the tensor-core GEMM's input; n is even). With nparts > 0 it first adds
 * a split GEMM's partial products to x (parts: nparts x stride floats, token t's
 * row n floats apart within each), as add_parts would, and stores the sums: the
 * residual add of o_proj and down_proj without a launch of its own. */
__kernel __attribute__((reqd_work_group_size(NORM_WG, 1, 1)))
void rmsnorm(__global float *x, __global const ushort *W, ulong w_off, __global float *out, uint n, float eps,
             uint out_bf16, __global const float *parts, uint nparts, uint stride)
{
    __local float red[NORM_WG];
    uint t = get_group_id(0), l = get_local_id(0);
    __global float *xt = x + (ulong)t * n;
    float ss = 0.0f;
    for (uint i = l; i < n; i += NORM_WG) {
        float v = xt[i];
        if (nparts) {
            float s = 0.0f;
            for (uint p = 0; p < nparts; p++) s += parts[(ulong)p * stride + (ulong)t * n + i];
            xt[i] = v = v + s;
        }
        ss += v * v;
    }
    red[l] = ss;
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE); /* the sums stored: read below by other threads */
    for (uint s = NORM_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float scale = 1.0f / sqrt(red[0] / (float)n + eps);
    if (out_bf16) {
        __global uint *ob = (__global uint *)out + (ulong)t * n / 2;
        for (uint i = 2 * l; i < n; i += 2 * NORM_WG)
            ob[i / 2] = bf16_pack((xt[i] * scale) * bf16(W[w_off + i]), (xt[i + 1] * scale) * bf16(W[w_off + i + 1]));
    } else {
        for (uint i = l; i < n; i += NORM_WG) out[(ulong)t * n + i] = (xt[i] * scale) * bf16(W[w_off + i]);
    }
}
