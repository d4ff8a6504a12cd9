/* qwen3_mma.cl - prompts on NVIDIA tensor cores: the GEMM (matmul_mma) and causal
 * attention (attention_mma, flash-attention style). Part of
 * the program qwen3.cl starts. The host defines Q3_NV_MMA on NVIDIA's platform
 * (and builds without it if the compiler refuses); NVIDIA's OpenCL compiler
 * takes inline PTX, so the kernels issue warp-level instructions directly:
 *  - cp.async: global -> local memory copies of 16 bytes that bypass registers,
 *    MM_STAGES steps in flight (a pipeline);
 *  - ldmatrix: a warp loads 8x8 BF16 matrices from local memory straight into
 *    the fragment layout of mma;
 *  - mma.sync.m16n8k16: BF16 (GEMM) or F16 (attention) products, f32 accumulation;
 *  - shfl.sync: values exchanged between the 4 lanes that hold one row.
 * With Q3_MMA_EMULATE as well (Q3_OPENCL_MMA=emulate), each of the three is
 * done in plain OpenCL C through local memory instead, slowly but with the
 * same data movement, so that PoCL in CI checks the indexing of these kernels
 * (Q3_EMU_CP, Q3_EMU_LDSM, Q3_EMU_MMA, Q3_EMU_SHFL emulate one of them: a
 * bisection aid). */
#ifdef Q3_NV_MMA
#ifdef Q3_MMA_EMULATE
#define Q3_EMU_CP
#define Q3_EMU_LDSM
#define Q3_EMU_MMA
#define Q3_EMU_SHFL
#endif

#define MM_BK 32   /* columns per pipeline step: one R16C32 tile of each 16-row panel */
#define MM_ROWB 64 /* bytes of a staged row of x: MM_BK BF16 */
#ifndef MM_STAGES
#define MM_STAGES 3  /* steps of x in local memory (3, 4, 5 measured alike on the H200; 3 takes least) */
#endif
#define MM_X_CHUNKS (MM_BT * 4) /* 16-byte copies of a step's tokens (4 a row): MM_WG threads share them */

inline uint lds_addr(__local const uchar *p) { return (uint)(ulong)p; }

#ifndef Q3_EMU_CP
/* 16 bytes global -> local (both 16-byte aligned), zero-filled where !ok (src must still be mapped) */
#define CP_ASYNC16(smem, off, src, ok)                                                                            \
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(lds_addr(smem) + (off)), "l"((ulong)(src)), \
                 "r"((ok) ? 16 : 0)                                                                               \
                 : "memory")
#define CP_COMMIT() asm volatile("cp.async.commit_group;" ::: "memory")
#define CP_WAIT_ALL() asm volatile("cp.async.wait_group 0;" ::: "memory")
/* wait until at most MM_STAGES - 2 copy groups are in flight (PTX wants a literal) */
#if MM_STAGES == 2
#define CP_WAIT_STAGES() asm volatile("cp.async.wait_group 0;" ::: "memory")
#elif MM_STAGES == 3
#define CP_WAIT_STAGES() asm volatile("cp.async.wait_group 1;" ::: "memory")
#elif MM_STAGES == 4
#define CP_WAIT_STAGES() asm volatile("cp.async.wait_group 2;" ::: "memory")
#else
#define CP_WAIT_STAGES() asm volatile("cp.async.wait_group 3;" ::: "memory")
#endif
#else
#define CP_ASYNC16(smem, off, src, ok) \
    (*(__local uint4 *)((smem) + (off)) = (ok) ? *(__global const uint4 *)(src) : (uint4)(0))
#define CP_COMMIT()
#define CP_WAIT_ALL()
#define CP_WAIT_STAGES()
#endif

#if defined(Q3_EMU_LDSM) || defined(Q3_EMU_MMA) || defined(Q3_EMU_SHFL)
#define MM_EMU_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define MM_EMU_WG MM_EMU_MAX2(MM_EMU_MAX2(MM_WG, FA_WG), MM_EMU_MAX2(ATT_TC_WG, MV_WG)) /* the largest such work-group */
#define MM_EMU_DECL __local uint mm_scr[MM_EMU_WG * 6]; /* 6 words a lane */
#define MM_EMU_PARAM , __local uint *mm_scr /* ... handed to an inlined body */
#define MM_EMU_ARG , mm_scr
#else
#define MM_EMU_DECL
#define MM_EMU_PARAM
#define MM_EMU_ARG
#endif

#ifndef Q3_EMU_LDSM
/* ldmatrix .x4: lane l gives the address of row l % 8 of matrix l / 8 (16 bytes
 * each) and receives, of each matrix j, row lane / 4, elements 2 (lane % 4) + {0, 1};
 * .trans: rows 2 (lane % 4) and 2 (lane % 4) + 1 at column lane / 4. */
#define LDSM_X4_OP(op, smem, off, r)                                                                              \
    do {                                                                                                          \
        uint r0_, r1_, r2_, r3_;                                                                                  \
        asm volatile(op " {%0,%1,%2,%3}, [%4];"                                                                   \
                     : "=r"(r0_), "=r"(r1_), "=r"(r2_), "=r"(r3_)                                                 \
                     : "r"(lds_addr(smem) + (off))                                                                \
                     : "memory");                                                                                 \
        (r)[0] = r0_, (r)[1] = r1_, (r)[2] = r2_, (r)[3] = r3_;                                                   \
    } while (0)
#define LDSM_X4(smem, off, r) LDSM_X4_OP("ldmatrix.sync.aligned.m8n8.x4.shared.b16", smem, off, r)
#define LDSM_X4_T(smem, off, r) LDSM_X4_OP("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", smem, off, r)
#else
inline void ldsm_x4_emu(__local const uchar *smem, uint off, uint *r, __local uint *scr)
{
    uint l = get_local_id(0), lane = l & 31;
    __local uint *w = scr + (l - lane) * 6;
    w[lane] = off;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint j = 0; j < 4; j++) r[j] = *(__local const uint *)(smem + w[8 * j + lane / 4] + 4 * (lane % 4));
    barrier(CLK_LOCAL_MEM_FENCE);
}

inline void ldsm_x4_t_emu(__local const uchar *smem, uint off, uint *r, __local uint *scr)
{
    uint l = get_local_id(0), lane = l & 31;
    __local uint *w = scr + (l - lane) * 6;
    w[lane] = off;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint j = 0; j < 4; j++) {
        uint lo = *(__local const ushort *)(smem + w[8 * j + 2 * (lane % 4)] + 2 * (lane / 4));
        uint hi = *(__local const ushort *)(smem + w[8 * j + 2 * (lane % 4) + 1] + 2 * (lane / 4));
        r[j] = lo | hi << 16;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}
#define LDSM_X4(smem, off, r) ldsm_x4_emu(smem, off, r, mm_scr)
#define LDSM_X4_T(smem, off, r) ldsm_x4_t_emu(smem, off, r, mm_scr)
#endif

#ifndef Q3_EMU_MMA
/* d += a b for a 16 x 16 A and a 16 x 8 B fragment, f32 sums (the layouts: mma_emu) */
#define MMA_OP(op, d, a, b0, b1)                                                                                  \
    do {                                                                                                          \
        float d0_ = (d)->x, d1_ = (d)->y, d2_ = (d)->z, d3_ = (d)->w;                                             \
        asm volatile(op " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                                  \
                     : "+f"(d0_), "+f"(d1_), "+f"(d2_), "+f"(d3_)                                                 \
                     : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "r"(b0), "r"(b1));                     \
        *(d) = (float4)(d0_, d1_, d2_, d3_);                                                                      \
    } while (0)
#define MMA_BF16(d, a, b0, b1) MMA_OP("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", d, a, b0, b1)
#define MMA_F16(d, a, b0, b1) MMA_OP("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", d, a, b0, b1)
#else
inline float bf16_of(uint w, uint k) { return k & 1 ? bf16_hi(w) : bf16_lo(w); }
inline float f16_of(uint w, uint k) { return half_bits(k & 1 ? w >> 16 : w); }

/* m16n8k16: A row r, column k in register (r / 8) + 2 (k / 8) of lane (r % 8) 4 + (k % 8) / 2;
 * B row k, column n in register k / 8 of lane 4 n + (k % 8) / 2; C element e of lane
 * (g, t) = (lane / 4, lane % 4) at row g + 8 (e / 2), column 2 t + e % 2. */
inline void mma_emu(float4 *d, const uint *a, uint b0, uint b1, __local uint *scr, int f16)
{
    uint l = get_local_id(0), lane = l & 31;
    __local uint *w = scr + (l - lane) * 6;
    for (uint i = 0; i < 4; i++) w[lane * 6 + i] = a[i];
    w[lane * 6 + 4] = b0, w[lane * 6 + 5] = b1;
    barrier(CLK_LOCAL_MEM_FENCE);
    float c[4] = {d->x, d->y, d->z, d->w};
    for (uint e = 0; e < 4; e++) {
        uint r = lane / 4 + 8 * (e / 2), n = 2 * (lane % 4) + e % 2;
        for (uint k = 0; k < 16; k++) {
            uint aw = w[((r % 8) * 4 + (k % 8) / 2) * 6 + r / 8 + 2 * (k / 8)], bw = w[(n * 4 + (k % 8) / 2) * 6 + 4 + k / 8];
            float av = f16 ? f16_of(aw, k) : bf16_of(aw, k), bv = f16 ? f16_of(bw, k) : bf16_of(bw, k);
            c[e] += av * bv;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    *d = (float4)(c[0], c[1], c[2], c[3]);
}
#define MMA_BF16(d, a, b0, b1) mma_emu(d, a, b0, b1, mm_scr, 0)
#define MMA_F16(d, a, b0, b1) mma_emu(d, a, b0, b1, mm_scr, 1)
#endif

#ifndef Q3_EMU_SHFL
/* v of the lane whose index differs from this one's in the bits of mask (butterfly) */
inline float shfl_xor(float v, uint mask)
{
    float r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(mask));
    return r;
}
#define SHFL_XOR(v, mask) shfl_xor(v, mask)
#else
inline float shfl_xor_emu(float v, uint mask, __local uint *scr)
{
    uint l = get_local_id(0), lane = l & 31;
    __local uint *w = scr + (l - lane) * 6;
    w[lane] = as_uint(v);
    barrier(CLK_LOCAL_MEM_FENCE);
    float r = as_float(w[lane ^ mask]);
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}
#define SHFL_XOR(v, mask) shfl_xor_emu(v, mask, mm_scr)
#endif

/* Two floats as IEEE halves, rounded to nearest even, a in the low half (P and Q
 * of attention_mma). Plain C: every device; exact for subnormals, as
 * kernels/cpu_half.h. */
inline uint half_of(float f)
{
    uint x = as_uint(f), sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;        /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;       /* rounds past 65504: inf */
    if (a >= 0x38800000u) {                             /* a normal half */
        uint r = a - 0x38000000u;                       /* rebias 127 -> 15, in place */
        r += 0xfffu + ((r >> 13) & 1u);
        return sign | (r >> 13);
    }
    if (a <= 0x33000000u) return sign;                  /* <= 2^-25: rounds to (even) zero */
    uint e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, sh = 126u - e; /* units of 2^-24 */
    uint q = m >> sh, rem = m & ((1u << sh) - 1u), hf = 1u << (sh - 1u);
    q += rem > hf || (rem == hf && (q & 1u));
    return sign | q;
}
#ifndef Q3_EMU_MMA
inline uint half2_of(float a, float b) /* cvt.rn.f16x2.f32 d, hi, lo */
{
    uint r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
    return r;
}
#else
inline uint half2_of(float a, float b) { return half_of(a) | half_of(b) << 16; }
#endif

/* y (+)= W x for a prompt on tensor cores, x in BF16 (xb: [n_tok][ldx]). A
 * work-group of MM_WG / 32 warps takes MM_BR = 16 MM_RP rows a warp x MM_BT
 * tokens, MM_BK columns a step. Warp w owns the MM_RP 16-row panels from
 * rb / 16 + w MM_RP on and multiplies them by every token of the block: no two
 * warps share a weight, so the weights go from memory straight to registers,
 * two steps ahead (MM_APF), and local memory holds x alone, MM_STAGES steps of
 * it in flight through cp.async; each x fragment serves the warp's MM_RP panels
 * (2: half the local-memory reads of 1 per product; H200 +3-8 % on 1.7B and 4B).
 * A step's 32 columns are taken in an order of the kernel's own (a sum does not
 * care in which order its columns come, so long as W and x agree): lane
 * (g, tig) takes columns 8 tig .. 8 tig + 7 as k = 2 tig, 2 tig + 1, 2 tig + 8,
 * 2 tig + 9 of the first k16 product and the same of the second. Its weights
 * are then two 16-byte loads a panel (rows g and g + 8 of the tile; a warp's
 * load is 512 contiguous bytes) and its x fragments of both products one
 * 16-byte local load a token (row 8 b + g, chunk tig: 8 lanes read 128
 * contiguous bytes, no bank conflict), where mma's own order took 16 4-byte
 * loads of weights scattered over the tile and an ldmatrix for x (H200,
 * 2026-12-02: +5 to +10 % at every size and length).
 * Every loop over fragments is unrolled: an array indexed in a loop the
 * compiler keeps goes to the stack. (Weights in local memory too, as before
 * 2026-12-01, left room for 2 steps: 5-12 % slower.) Up to three matrices that
 * share x (q, k, v; gate, up) run in one launch, their row blocks numbered one
 * after another. A grid of depth nz > 1 splits the columns: work-group z stores
 * its partial product part_stride floats further on, and add_parts (or rmsnorm)
 * sums them in a fixed order (deterministic).
 * matmul_mma_glu (gate and up, MM_RP 2): a block is MM_BR / 2 rows of both, warp
 * w's two panels are gate's and up's panel rb / 16 + w, so each thread holds gate
 * and up of the same elements and stores silu(gate) up in BF16 (y0: down_proj's
 * x, ld0 apart), as silu_mul would from their f32 sums: no f32 gate and up in
 * memory, no silu_mul pass. One body, inlined into each kernel with glu a
 * constant, so that matmul_mma compiles as if glu did not exist (glu 2:
 * matmul_mma_glu_parts, the f32 partial sums of both). */
#define MM_STAGE_BYTES (MM_BT * MM_ROWB)
#define MM_FN (MM_BT / 8)
/* Steps ahead the weights are loaded (1 and 3: tuning build options). H200, main
 * 9538fe0, two rounds interleaved: 2 against 1 +5.1 / +1.8 % (0.6B pp512 /
 * pp4096), +3.6 / +3.0 % (1.7B), +3.1 / +1.9 % (4B); lost with 8 warps a block. */
#ifndef MM_APF
#define MM_APF 2
#endif
#define MM_ARGS                                                                                               \
    __global const uint4 *W, uint cols, __global const ushort *xb, uint ldx, uint n_tok, uint add, uint part_stride, \
        ulong off0, uint rows0, __global float *y0, uint ld0, ulong off1, uint rows1, __global float *y1, uint ld1,  \
        ulong off2, uint rows2, __global float *y2, uint ld2
#define MM_ARG_NAMES W, cols, xb, ldx, n_tok, add, part_stride, off0, rows0, y0, ld0, off1, rows1, y1, ld1, off2, rows2, y2, ld2
/* A GEMM work-group's block, one definition for matmul_mma and matmul_wg (qwen3_wgmma.cl):
 * its row block rb (glu: MM_BR / 2 rows of gate and the same of up) and token block tb, the
 * matrix seg of the (up to three) that block falls in, with its rows, y and ld, the steps
 * c_lo .. c_lo + nk of its column split (y moved to its part), and the weights' first tile
 * wpb, up's pdelta uint4s past gate's (glu). Expects glu and the MM_ARGS in scope. */
#ifdef MM_TOKEN_MAJOR /* the token blocks of a row block launch one after another: its weights read once */
#define MM_BLOCK_IDS uint blk = get_group_id(1), tb = get_group_id(0) * MM_BT
#else
#define MM_BLOCK_IDS uint blk = get_group_id(0), tb = get_group_id(1) * MM_BT
#endif
#define MM_BLOCK_SETUP                                                                                        \
    MM_BLOCK_IDS;                                                                                             \
    uint seg = glu ? 0 : seg_of(&blk, (rows0 + MM_BR - 1) / MM_BR, (rows1 + MM_BR - 1) / MM_BR);              \
    ulong off = PICK3(seg, off0, off1, off2);                                                                 \
    uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);                              \
    __global float *y = PICK3(seg, y0, y1, y2);                                                               \
    uint rb = blk * (glu ? MM_BR / 2 : MM_BR);                                                                \
    uint col_tiles = (cols + 31) / 32, n_steps = (cols + MM_BK - 1) / MM_BK, n_panels = (rows + 15) / 16;     \
    uint nz = get_num_groups(2), per = (n_steps + nz - 1) / nz, c_lo = get_group_id(2) * per;                 \
    uint c_hi = min(n_steps, c_lo + per), nk = c_hi > c_lo ? c_hi - c_lo : 0;                                 \
    y += (ulong)get_group_id(2) * part_stride;                                                                \
    long pdelta = glu ? (long)off1 - (long)off0 : 0;                                                          \
    __global const uint4 *wpb = W + off
inline __attribute__((always_inline)) void mm_body(MM_ARGS, const uint glu, __local uchar *smem MM_EMU_PARAM)
{
    uint l = get_local_id(0), lane = l & 31, warp = l >> 5, g = lane >> 2, tig = lane & 3;
    MM_BLOCK_SETUP;

    /* this warp's panels (MM_RP of them, consecutive; glu: gate's and up's), in uint4s: tile c
     * at 64 c, row r at 4 r; panel p is pdelta uint4s past panel 0 and its index panel0 + p pstep */
    uint panel0 = rb / 16 + (glu ? warp : warp * MM_RP), pstep = glu ? 0 : 1;
/* rows g and g + 8 of the step's tile, uint4 tig of each (columns 8 tig .. 8 tig + 7): two
 * 16-byte loads a panel, the fragments of both k16 products (the order above) */
#define MM_LOAD_A(dst, c)                                                                                       \
    do {                                                                                                         \
        _Pragma("unroll") for (uint p_ = 0; p_ < MM_RP; p_++) {                                                 \
            int pok_ = panel0 + p_ * pstep < n_panels;                                                           \
            __global const uint4 *t_ = wpb + (pok_ ? (glu ? (long)panel0 * col_tiles * 64 + (long)p_ * pdelta    \
                                                      : (ulong)(panel0 + p_) * col_tiles * 64) : 0) +            \
                                       (ulong)(c) * 64;                                                          \
            uint4 r0_ = pok_ ? t_[4 * g + tig] : (uint4)(0), r8_ = pok_ ? t_[32 + 4 * g + tig] : (uint4)(0);     \
            (dst)[p_][0][0] = r0_.x, (dst)[p_][0][1] = r8_.x, (dst)[p_][0][2] = r0_.y, (dst)[p_][0][3] = r8_.y;  \
            (dst)[p_][1][0] = r0_.z, (dst)[p_][1][1] = r8_.z, (dst)[p_][1][2] = r0_.w, (dst)[p_][1][3] = r8_.w;  \
        }                                                                                                        \
    } while (0)
/* the weight fragments of one step, register array to register array */
#define MM_COPY_A(dst, src)                                                                                     \
    do {                                                                                                         \
        _Pragma("unroll") for (uint p_ = 0; p_ < MM_RP; p_++)                                                   \
        _Pragma("unroll") for (uint ks_ = 0; ks_ < MM_BK / 16; ks_++)                                           \
        _Pragma("unroll") for (uint i_ = 0; i_ < 4; i_++)(dst)[p_][ks_][i_] = (src)[p_][ks_][i_];                 \
    } while (0)
#define MM_LOAD_X(buf, c)                                                                                       \
    do {                                                                                                         \
        __local uchar *st_ = smem + (buf) * MM_STAGE_BYTES;                                                     \
        for (uint i_ = 0; i_ < (MM_X_CHUNKS + MM_WG - 1) / MM_WG; i_++) {                                        \
            uint q_ = l + i_ * MM_WG, t_ = q_ / 4, k_ = (c) * MM_BK + (q_ % 4) * 8;                              \
            if (MM_X_CHUNKS % MM_WG && q_ >= MM_X_CHUNKS) break;                                                 \
            int ok_ = tb + t_ < n_tok && k_ < cols;                                                               \
            __global const ushort *src_ = xb + (ok_ ? (ulong)(tb + t_) * ldx + k_ : 0);                           \
            CP_ASYNC16(st_, t_ * MM_ROWB + (q_ % 4) * 16, src_, ok_);                                            \
        }                                                                                                        \
    } while (0)

    float4 acc[MM_RP][MM_FN];
#pragma unroll
    for (uint p = 0; p < MM_RP; p++)
#pragma unroll
        for (uint b = 0; b < MM_FN; b++) acc[p][b] = (float4)(0.0f);
#pragma unroll
    for (uint s = 0; s < MM_STAGES - 1; s++) {
        if (s < nk) MM_LOAD_X(s, c_lo + s);
        CP_COMMIT();
    }
    uint an[MM_RP][MM_BK / 16][4];
    if (nk) MM_LOAD_A(an, c_lo);
#if MM_APF >= 2 /* the weights two steps ahead (8 more registers a panel) */
    uint an2[MM_RP][MM_BK / 16][4];
    if (nk > 1) MM_LOAD_A(an2, c_lo + 1);
#endif
#if MM_APF == 3 /* tuning: three (8 more) */
    uint an3[MM_RP][MM_BK / 16][4];
    if (nk > 2) MM_LOAD_A(an3, c_lo + 2);
#endif
    for (uint kt = 0; kt < nk; kt++) {
        uint af[MM_RP][MM_BK / 16][4];
        MM_COPY_A(af, an);
#if MM_APF == 3
        MM_COPY_A(an, an2);
        MM_COPY_A(an2, an3);
        if (kt + 3 < nk) MM_LOAD_A(an3, c_lo + kt + 3);
#elif MM_APF == 2
        MM_COPY_A(an, an2);
        if (kt + 2 < nk) MM_LOAD_A(an2, c_lo + kt + 2);
#else
        if (kt + 1 < nk) MM_LOAD_A(an, c_lo + kt + 1);
#endif
        CP_WAIT_STAGES(); /* this thread's copies of step kt have landed ... */
        barrier(CLK_LOCAL_MEM_FENCE); /* ... everyone's; and step kt - 1's buffer is free */
        uint nx = kt + MM_STAGES - 1;
        if (nx < nk) MM_LOAD_X(nx % MM_STAGES, c_lo + nx);
        CP_COMMIT();
        __local uchar *xt = smem + (kt % MM_STAGES) * MM_STAGE_BYTES;
#pragma unroll
        for (uint b = 0; b < MM_FN; b++) {
            /* token 8 b + g's x fragments of both k16 products (columns 8 tig .. 8 tig + 7) */
            uint4 xv = *(__local const uint4 *)(xt + (8 * b + g) * MM_ROWB + tig * 16);
#pragma unroll
            for (uint p = 0; p < MM_RP; p++) { /* each x fragment serves MM_RP panels */
                MMA_BF16(&acc[p][b], af[p][0], xv.x, xv.y);
                MMA_BF16(&acc[p][b], af[p][1], xv.z, xv.w);
            }
        }
    }
#undef MM_LOAD_A
#undef MM_COPY_A
#undef MM_LOAD_X

#if MM_RP == 2
    if (glu) { /* (a constant: one of the kernels) */
        __global ushort *yb = (__global ushort *)y;
#pragma unroll
        for (uint b = 0; b < MM_FN; b++) {
            uint r = rb + warp * 16 + g, t = tb + b * 8 + tig * 2;
            float gv[4] = {acc[0][b].x, acc[0][b].y, acc[0][b].z, acc[0][b].w};
            float uv[4] = {acc[1][b].x, acc[1][b].y, acc[1][b].z, acc[1][b].w};
#pragma unroll
            for (uint e = 0; e < 4; e++) {
                uint re = r + (e >> 1) * 8, te = t + (e & 1);
                if (re >= rows || te >= n_tok) continue;
                if (glu == 2) /* matmul_mma_glu_parts: the partial sums, gate's at row re, up's rows further */
                    y[(ulong)te * ld + re] = gv[e], y[(ulong)te * ld + rows + re] = uv[e];
                else
                    yb[(ulong)te * ld + re] = bf16_round(gv[e] / (1.0f + exp(-gv[e])) * uv[e]);
            }
        }
        return;
    }
#endif
#pragma unroll
    for (uint p = 0; p < MM_RP; p++)
#pragma unroll
    for (uint b = 0; b < MM_FN; b++) {
        uint r = rb + (warp * MM_RP + p) * 16 + g, t = tb + b * 8 + tig * 2;
        float v[4] = {acc[p][b].x, acc[p][b].y, acc[p][b].z, acc[p][b].w};
#pragma unroll
        for (uint e = 0; e < 4; e++) {
            uint re = r + (e >> 1) * 8, te = t + (e & 1);
            if (re < rows && te < n_tok) {
                __global float *dst = y + (ulong)te * ld + re;
                *dst = add ? *dst + v[e] : v[e];
            }
        }
    }
}

__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void matmul_mma(MM_ARGS)
{
    __local uint4 smem_v[MM_STAGES * MM_STAGE_BYTES / 16];
    MM_EMU_DECL
    mm_body(MM_ARG_NAMES, 0, (__local uchar *)smem_v MM_EMU_ARG);
}

#if MM_RP == 2
__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void matmul_mma_glu(MM_ARGS)
{
    __local uint4 smem_v[MM_STAGES * MM_STAGE_BYTES / 16];
    MM_EMU_DECL
    mm_body(MM_ARG_NAMES, 1, (__local uchar *)smem_v MM_EMU_ARG);
}

/* gate/up's tail split over the columns (the host's glu_tail): matmul_mma_glu's blocks, but
 * each stores its f32 partial sums of gate (row r of token t at y0 + t ld0 + r) and up (rows0
 * further), its part part_stride floats on; glu_parts_sum adds them up. */
__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void matmul_mma_glu_parts(MM_ARGS)
{
    __local uint4 smem_v[MM_STAGES * MM_STAGE_BYTES / 16];
    MM_EMU_DECL
    mm_body(MM_ARG_NAMES, 2, (__local uchar *)smem_v MM_EMU_ARG);
}
#endif
/* Causal attention for a prompt on tensor cores (flash-attention style). A
 * work-group of 4 warps takes FA_Q query tokens of one head, 16 a warp, and
 * walks the keys FA_K at a time: S = Q K^T (F16 products of Q rounded to F16,
 * the cache's K; f32 sums), the running max and sum per row (online softmax, the
 * 4 lanes of a row meeting through shfl), then O += P V with P rounded to F16
 * and kept in registers: the accumulator layout of S is the operand layout of
 * P. K and V tiles come through cp.async, V's copy in flight during S and the
 * next K's during P V. Q is staged once through the K buffer. Output: o_proj's
 * input, BF16 pairs (out_bf16) or f32. Query blocks run heaviest first. */
#define FA_ROWB (HEAD_DIM * 2) /* bytes of a staged row (F16) */
#define FA_CH (HEAD_DIM / 8)   /* its 16-byte chunks */
#define FA_SWM (FA_CH < 8 ? FA_CH - 1 : 7)
#define FA_KS (HEAD_DIM / 16) /* k16 steps of Q K^T */
#ifdef Q3_FA_NATIVE_EXP
#define FA_EXP2(x) native_exp2(x) /* ex2.approx: 2 ulp; the probabilities are rounded to F16 anyway */
#else
#define FA_EXP2(x) exp2(x)
#endif
#define FA_NF (HEAD_DIM / 8)  /* n8 fragments of O */

/* chunk c of row r at c ^ (r & 7) within its group of 8: 8 rows of one chunk, 8 slots */
inline uint fa_swz(uint r, uint c) { return r * FA_ROWB + (((c & ~(uint)FA_SWM) | ((c ^ r) & FA_SWM)) << 4); }

__kernel __attribute__((reqd_work_group_size(FA_WG, 1, 1)))
void attention_mma(__global const float *q, __global const half *kcache, __global const half *vcache,
                   __global float *out, uint nq, uint nkv, uint n_tok, __global const int *stage, uint n_ctx,
                   uint out_bf16)
{
    __local uint4 kv_v[2 * FA_K * FA_ROWB / 16];
    __local uchar *ks = (__local uchar *)kv_v, *vs = ks + FA_K * FA_ROWB;
    MM_EMU_DECL
    uint l = get_local_id(0), lane = l & 31, warp = l >> 5, g = lane >> 2, tig = lane & 3;
    uint h = get_group_id(0), kvh = h / (nq / nkv);
    uint t0 = (get_num_groups(1) - 1 - get_group_id(1)) * FA_Q; /* the longest rows first */
    uint pos0 = (uint)stage[0], t_last = min(t0 + FA_Q, n_tok) - 1;
    uint key_end = pos0 + t_last + 1, n_steps = (key_end - 1) / FA_K + 1;
    __global const half *kg = kcache + (ulong)kvh * FA_CH * n_ctx * 8;
    __global const half *vg = vcache + (ulong)kvh * n_ctx * HEAD_DIM;

    /* Q, rounded to F16, through the K buffer into registers: A fragments */
    for (uint i = l; i < FA_Q * HEAD_DIM / 2; i += FA_WG) {
        uint r = i / (HEAD_DIM / 2), d = 2 * (i % (HEAD_DIM / 2));
        float2 v = t0 + r < n_tok ? vload2(0, q + ((ulong)(t0 + r) * nq + h) * HEAD_DIM + d) : (float2)(0.0f);
        *(__local uint *)(ks + fa_swz(r, d / 8) + (d % 8) * 2) = half2_of(v.x, v.y);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    uint qf[FA_KS][4];
    uint a_row = warp * 16 + (lane & 7) + 8 * ((lane >> 3) & 1), a_chk = lane >> 4;
    for (uint kk = 0; kk < FA_KS; kk++) LDSM_X4(ks, fa_swz(a_row, a_chk + 2 * kk), qf[kk]);
    barrier(CLK_LOCAL_MEM_FENCE);

#define FA_LOAD_K(j)                                                                                             \
    for (uint i_ = l; i_ < FA_K * FA_CH; i_ += FA_WG) {                                                          \
        uint c_ = i_ / FA_K, p_ = (j) * FA_K + i_ % FA_K;                                                        \
        int ok_ = p_ < key_end; /* rows past it: zeros (stale cache could hold NaN; 0 * NaN) */                  \
        CP_ASYNC16(ks, fa_swz(i_ % FA_K, c_), kg + (ok_ ? ((ulong)c_ * n_ctx + p_) * 8 : 0), ok_);               \
    }
#define FA_LOAD_V(j)                                                                                             \
    for (uint i_ = l; i_ < FA_K * FA_CH; i_ += FA_WG) {                                                          \
        uint r_ = i_ / FA_CH, c_ = i_ % FA_CH, p_ = (j) * FA_K + r_;                                              \
        int ok_ = p_ < key_end;                                                                                  \
        CP_ASYNC16(vs, fa_swz(r_, c_), vg + (ok_ ? (ulong)p_ * HEAD_DIM + c_ * 8 : 0), ok_);                     \
    }
    FA_LOAD_K(0);
    CP_COMMIT();

    const float sc = 1.4426950408889634f / sqrt((float)HEAD_DIM); /* scores in log2 units: exp2 */
    uint qpos0 = pos0 + t0 + warp * 16 + g, qpos1 = qpos0 + 8;    /* this lane's two rows */
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    float4 o[FA_NF];
    for (uint f = 0; f < FA_NF; f++) o[f] = (float4)(0.0f);
    uint b_key = (lane & 7) + 8 * (lane >> 4), b_chk = (lane >> 3) & 1;    /* K: as matmul_mma's B */
    uint v_key = (lane & 7) + 8 * ((lane >> 3) & 1), v_chk = lane >> 4;    /* V: .trans */

    for (uint j = 0; j < n_steps; j++) {
        CP_WAIT_ALL();
        barrier(CLK_LOCAL_MEM_FENCE); /* K(j) in; every warp done with V(j - 1) */
        FA_LOAD_V(j);
        CP_COMMIT();
        float4 s[FA_K / 8];
        for (uint f = 0; f < FA_K / 8; f++) s[f] = (float4)(0.0f);
        for (uint kk = 0; kk < FA_KS; kk++)
            for (uint nb = 0; nb < FA_K / 16; nb++) {
                uint b[4];
                LDSM_X4(ks, fa_swz(nb * 16 + b_key, 2 * kk + b_chk), b);
                MMA_F16(&s[2 * nb], qf[kk], b[0], b[1]);
                MMA_F16(&s[2 * nb + 1], qf[kk], b[2], b[3]);
            }
        /* mask (causal), scale, running max per row: lanes 4g..4g+3 hold row g's columns */
        float mx0 = m0, mx1 = m1;
        for (uint f = 0; f < FA_K / 8; f++) {
            uint key = j * FA_K + f * 8 + 2 * tig;
            s[f].x = key <= qpos0 ? s[f].x * sc : -INFINITY;
            s[f].y = key + 1 <= qpos0 ? s[f].y * sc : -INFINITY;
            s[f].z = key <= qpos1 ? s[f].z * sc : -INFINITY;
            s[f].w = key + 1 <= qpos1 ? s[f].w * sc : -INFINITY;
            mx0 = fmax(mx0, fmax(s[f].x, s[f].y));
            mx1 = fmax(mx1, fmax(s[f].z, s[f].w));
        }
        mx0 = fmax(mx0, SHFL_XOR(mx0, 1));
        mx0 = fmax(mx0, SHFL_XOR(mx0, 2));
        mx1 = fmax(mx1, SHFL_XOR(mx1, 1));
        mx1 = fmax(mx1, SHFL_XOR(mx1, 2));
        /* a row of padding or with no key yet seen keeps -inf: nothing to rescale */
        float c0 = mx0 == -INFINITY ? 1.0f : FA_EXP2(m0 - mx0), c1 = mx1 == -INFINITY ? 1.0f : FA_EXP2(m1 - mx1);
        float base0 = mx0 == -INFINITY ? 0.0f : mx0, base1 = mx1 == -INFINITY ? 0.0f : mx1;
        m0 = mx0, m1 = mx1;
        l0 *= c0, l1 *= c1;
        for (uint f = 0; f < FA_NF; f++) o[f] *= (float4)(c0, c0, c1, c1);
        uint pf[FA_K / 16][4];
        for (uint f = 0; f < FA_K / 8; f++) {
            float4 p = FA_EXP2(s[f] - (float4)(base0, base0, base1, base1));
            l0 += p.x + p.y, l1 += p.z + p.w;
            pf[f / 2][2 * (f & 1)] = half2_of(p.x, p.y);     /* row g: a0 / a2 */
            pf[f / 2][2 * (f & 1) + 1] = half2_of(p.z, p.w); /* row g + 8: a1 / a3 */
        }
        CP_WAIT_ALL();
        barrier(CLK_LOCAL_MEM_FENCE); /* V(j) in; every warp done with K(j) */
        if (j + 1 < n_steps) FA_LOAD_K(j + 1);
        CP_COMMIT();
        for (uint kk = 0; kk < FA_K / 16; kk++)
            for (uint c = 0; c < FA_CH; c += 2) {
                uint b[4];
                LDSM_X4_T(vs, fa_swz(kk * 16 + v_key, c + v_chk), b);
                MMA_F16(&o[c], pf[kk], b[0], b[1]);
                MMA_F16(&o[c + 1], pf[kk], b[2], b[3]);
            }
    }
#undef FA_LOAD_K
#undef FA_LOAD_V
    l0 += SHFL_XOR(l0, 1);
    l0 += SHFL_XOR(l0, 2);
    l1 += SHFL_XOR(l1, 1);
    l1 += SHFL_XOR(l1, 2);
    uint r0 = t0 + warp * 16 + g, r1 = r0 + 8;
    for (uint f = 0; f < FA_NF; f++) {
        uint d = f * 8 + 2 * tig;
        float2 v0 = o[f].xy / l0, v1 = o[f].zw / l1;
        if (out_bf16) {
            __global uint *ob = (__global uint *)out;
            if (r0 < n_tok) ob[(((ulong)r0 * nq + h) * HEAD_DIM + d) / 2] = bf16_pack(v0.x, v0.y);
            if (r1 < n_tok) ob[(((ulong)r1 * nq + h) * HEAD_DIM + d) / 2] = bf16_pack(v1.x, v1.y);
        } else {
            if (r0 < n_tok) vstore2(v0, 0, out + ((ulong)r0 * nq + h) * HEAD_DIM + d);
            if (r1 < n_tok) vstore2(v1, 0, out + ((ulong)r1 * nq + h) * HEAD_DIM + d);
        }
    }
}
/* Decode attention on tensor cores (HEAD_DIM 64 or 128): work-group (c, sp) does what
 * attention's does (ATTEND_PREP, then the same partial output and (max, sum) for o_proj), but
 * each of its ATT_WG / 32 warps walks 16-position chunks of the share on its own (chunks warp,
 * warp + TC_WARPS, ...), with its own running max and sum and no barrier, and the warps meet in
 * local memory at the end. A chunk: S = Q K^T (mma.m16n8k16, F16 products of q rounded to F16
 * and the cache's K, f32 sums; A's rows are the ATT_HG heads, the rest zeros; B is K^T, 8
 * positions an n8 tile), the online softmax over the 4 lanes that hold a head, then O += P V
 * with P rounded to F16, the accumulator layout of S being the operand layout of P (as
 * attention_mma). Orders of the kernel's own, so that every global load is 16 bytes of one row:
 *  - Q K^T: lane (g, t) takes dimensions 32 s + 8 t .. + 7 as k = 2t, 2t + 1, 2t + 8, 2t + 9 of
 *    product (s, 0) (the first four) and (s, 1): its K of a position is one uint4 of the cache's
 *    [HEAD_DIM / 8][n_ctx][8] layout;
 *  - P V: O's n8 tile nt, column n, is dimension TC_NT n + nt, so lane (g, t) reads dimensions
 *    TC_NT g .. + TC_NT - 1 of its four V rows (positions 2t, 2t + 1, 2t + 8, 2t + 9 of the
 *    chunk) and ends holding dimensions 2 t TC_NT .. + 2 TC_NT - 1 of head g.
 * (The scalar kernel gives each thread one position and meets at seven barriers a block: at
 * depth it ran at 4 warps a compute unit, bound by its instructions.) attention_batch_tc is
 * attention_batch with this body: a batched step gives each token the bits of its own decode. */
#if HEAD_DIM % 64 == 0 && HEAD_DIM <= 128
#define TC_NT (HEAD_DIM / 8)   /* n8 tiles of O */
#define TC_KS (HEAD_DIM / 32)  /* 32-dimension steps of Q K^T, two k16 products each */
#define TC_VW (TC_NT / 2)      /* words (half pairs) of a lane's share of a V row */
#define TC_WARPS (ATT_TC_WG / 32)
#define ATT_TC_LOCALS                                                                                         \
    ATT_PREP_LOCALS;                                                                                          \
    __local float tc_o[TC_WARPS][ATT_HG][HEAD_DIM]; /* each warp's O, max and sum per head */                  \
    __local float2 tc_ml[TC_WARPS][ATT_HG];                                                                   \
    MM_EMU_DECL
/* b0 / b1 of P V's tile nt from V rows a, b (positions 2t, 2t + 1, or 2t + 8, 2t + 9): half nt of each */
inline uint tc_vpair(const uint *a, const uint *b, uint nt)
{
    uint u = nt >> 1;
    return nt & 1 ? (a[u] >> 16) | (b[u] & 0xffff0000u) : (a[u] & 0xffffu) | (b[u] << 16);
}
#ifndef ATT_TC_PF
#define ATT_TC_PF 0 /* 1: the next round's K and V loaded during this round's products (a tuning build option) */
#endif
/* K of positions base + gq and base + 8 + gq, V rows base + 2 tig, + 1, + 8, + 9: zeros past hi
 * (the cache there may hold anything, and 0 x NaN is NaN) */
#define TC_LOAD(kq, vw, base)                                                                                 \
    do {                                                                                                      \
        _Pragma("unroll") for (uint j_ = 0; j_ < 2; j_++) {                                                   \
            uint p_ = (base) + 8 * j_ + gq;                                                                   \
            _Pragma("unroll") for (uint s_ = 0; s_ < TC_KS; s_++)                                             \
                (kq)[j_][s_] = p_ < hi ? *(__global const uint4 *)(ktc + ((ulong)(4 * s_ + tig) * n_ctx + p_) * 8) \
                                      : (uint4)(0);                                                           \
        }                                                                                                     \
        _Pragma("unroll") for (uint i_ = 0; i_ < 4; i_++) {                                                   \
            uint p_ = (base) + 2 * tig + (i_ & 1) + 8 * (i_ >> 1);                                            \
            __global const uint4 *src_ = (__global const uint4 *)(vtc + (ulong)p_ * HEAD_DIM);                \
            _Pragma("unroll") for (uint u_ = 0; u_ < TC_VW / 4; u_++) {                                       \
                uint4 w_ = p_ < hi ? src_[u_] : (uint4)(0);                                                   \
                (vw)[i_][4 * u_] = w_.x, (vw)[i_][4 * u_ + 1] = w_.y;                                         \
                (vw)[i_][4 * u_ + 2] = w_.z, (vw)[i_][4 * u_ + 3] = w_.w;                                     \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)
#define ATTEND_TOKEN_TC                                                                                       \
    ATTEND_PREP_WG(ATT_TC_WG);                                                                                \
    ATT_STAMP(1);                                                                                             \
    uint lane = l & 31, warp = l >> 5, gq = lane >> 2, tig = lane & 3;                                        \
    uint qf[TC_KS][2][4]; /* A fragments of q: rows gq (head h0 + gq) and gq + 8 (zeros) */                     \
    _Pragma("unroll") for (uint s_ = 0; s_ < TC_KS; s_++) {                                                   \
        float4 qa_ = gq < ATT_HG ? vload4(0, &qs[gq < ATT_HG ? gq : 0][32 * s_ + 8 * tig]) : (float4)(0.0f);  \
        float4 qb_ = gq < ATT_HG ? vload4(0, &qs[gq < ATT_HG ? gq : 0][32 * s_ + 8 * tig + 4]) : (float4)(0.0f); \
        qf[s_][0][0] = half2_of(qa_.x, qa_.y), qf[s_][0][2] = half2_of(qa_.z, qa_.w);                          \
        qf[s_][1][0] = half2_of(qb_.x, qb_.y), qf[s_][1][2] = half2_of(qb_.z, qb_.w);                          \
        qf[s_][0][1] = qf[s_][0][3] = qf[s_][1][1] = qf[s_][1][3] = 0u;                                        \
    }                                                                                                         \
    const float scale = 1.0f / sqrt((float)HEAD_DIM);                                                         \
    float m_w = -INFINITY, l_w = 0.0f;                                                                        \
    float4 o[TC_NT];                                                                                          \
    _Pragma("unroll") for (uint nt = 0; nt < TC_NT; nt++) o[nt] = (float4)(0.0f);                             \
    __global const half *ktc = kcache + (ulong)g * D8 * n_ctx * 8;                                            \
    __global const half *vtc = vcache + v_index(g, TC_NT * gq, n_ctx, 0);                                     \
    uint n_chunks = hi > lo ? (hi - lo + 15) / 16 : 0, n_rounds = (n_chunks + TC_WARPS - 1) / TC_WARPS;        \
    uint4 kq[2][TC_KS];                                                                                       \
    uint vw[4][TC_VW];                                                                                        \
    if (ATT_TC_PF) TC_LOAD(kq, vw, lo + warp * 16);                                                           \
    for (uint r = 0; r < n_rounds; r++) { /* the same count in every warp (the emulation's barriers) */      \
        uint base = lo + (r * TC_WARPS + warp) * 16;                                                          \
        if (!ATT_TC_PF) TC_LOAD(kq, vw, base);                                                                \
        uint4 kc[2][TC_KS];                                                                                   \
        uint vc[4][TC_VW];                                                                                    \
        _Pragma("unroll") for (uint j = 0; j < 2; j++)                                                        \
        _Pragma("unroll") for (uint s_ = 0; s_ < TC_KS; s_++) kc[j][s_] = kq[j][s_];                           \
        _Pragma("unroll") for (uint i = 0; i < 4; i++)                                                        \
        _Pragma("unroll") for (uint u = 0; u < TC_VW; u++) vc[i][u] = vw[i][u];                               \
        if (ATT_TC_PF) TC_LOAD(kq, vw, base + TC_WARPS * 16);                                                 \
        float4 st[2] = {(float4)(0.0f), (float4)(0.0f)};                                                      \
        _Pragma("unroll") for (uint j = 0; j < 2; j++)                                                        \
        _Pragma("unroll") for (uint s_ = 0; s_ < TC_KS; s_++) {                                               \
            MMA_F16(&st[j], qf[s_][0], kc[j][s_].x, kc[j][s_].y);                                             \
            MMA_F16(&st[j], qf[s_][1], kc[j][s_].z, kc[j][s_].w);                                             \
        }                                                                                                     \
        /* lane (gq, tig): head gq at positions base + 8 j + 2 tig + e in st[j] .x (e 0), .y (e 1) */        \
        uint pq = base + 2 * tig;                                                                             \
        float sv0 = pq < hi ? st[0].x * scale : -INFINITY, sv1 = pq + 1 < hi ? st[0].y * scale : -INFINITY;   \
        float sv2 = pq + 8 < hi ? st[1].x * scale : -INFINITY, sv3 = pq + 9 < hi ? st[1].y * scale : -INFINITY; \
        float mx = fmax(m_w, fmax(fmax(sv0, sv1), fmax(sv2, sv3)));                                           \
        mx = fmax(mx, SHFL_XOR(mx, 1));                                                                       \
        mx = fmax(mx, SHFL_XOR(mx, 2));                                                                       \
        /* nothing seen yet: -inf stays, nothing to rescale */                                               \
        float corr = mx == -INFINITY ? 1.0f : exp(m_w - mx), based = mx == -INFINITY ? 0.0f : mx;             \
        m_w = mx;                                                                                             \
        float p0 = exp(sv0 - based), p1 = exp(sv1 - based), p2 = exp(sv2 - based), p3 = exp(sv3 - based);     \
        l_w = l_w * corr + ((p0 + p1) + (p2 + p3));                                                           \
        uint pa[4] = {half2_of(p0, p1), 0u, half2_of(p2, p3), 0u};                                            \
        _Pragma("unroll") for (uint nt = 0; nt < TC_NT; nt++) {                                               \
            o[nt] *= corr;                                                                                    \
            MMA_F16(&o[nt], pa, tc_vpair(vc[0], vc[1], nt), tc_vpair(vc[2], vc[3], nt));                      \
        }                                                                                                     \
    }                                                                                                         \
    ATT_STAMP(2);                                                                                             \
    l_w += SHFL_XOR(l_w, 1);                                                                                  \
    l_w += SHFL_XOR(l_w, 2);                                                                                  \
    if (gq < ATT_HG) {                                                                                        \
        _Pragma("unroll") for (uint nt = 0; nt < TC_NT; nt++) {                                               \
            tc_o[warp][gq][TC_NT * 2 * tig + nt] = o[nt].x;                                                   \
            tc_o[warp][gq][TC_NT * (2 * tig + 1) + nt] = o[nt].y;                                             \
        }                                                                                                     \
        if (tig == 0) tc_ml[warp][gq] = (float2)(m_w, l_w);                                                   \
    }                                                                                                         \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                             \
    /* the warps' results weighed by exp(max_w - max), as o_proj weighs the splits' */                       \
    for (uint i = l; i < ATT_HG * HEAD_DIM; i += ATT_TC_WG) {                                                 \
        uint hh = i / HEAD_DIM, d = i % HEAD_DIM, h = h0 + hh;                                                \
        float mm = -INFINITY, sum = 0.0f, tot = 0.0f;                                                         \
        for (uint w = 0; w < TC_WARPS; w++) mm = fmax(mm, tc_ml[w][hh].x);                                    \
        for (uint w = 0; w < TC_WARPS; w++) {                                                                 \
            float2 ml = tc_ml[w][hh];                                                                         \
            float f = ml.x == -INFINITY ? 0.0f : exp(ml.x - mm);                                              \
            sum += f * tc_o[w][hh][d], tot += f * ml.y;                                                       \
        }                                                                                                     \
        out[((ulong)sp * nq + h) * HEAD_DIM + d] = sum;                                                       \
        if (d == 0) part_ml[(sp * nq + h) * 2] = mm, part_ml[(sp * nq + h) * 2 + 1] = tot;                    \
    }                                                                                                         \
    do {} while (0)

/* The splits of work-group column c's heads combined once (combine != 0), by the last of
 * its nsplit work-groups to finish: each counts itself in at cnt[c] after its stores, and
 * the one that counts nsplit resets the count and writes every head's combined output in
 * split 0's place. o_proj then stages that x as it is (XMODE_PLAIN) instead of each of its
 * ~264 work-groups weighing nsplit x q_dim floats from L2 (XMODE_ATTN). The arithmetic and
 * its order are mv_stage's for XMODE_ATTN (ATT_SPLIT_WEIGHTS, then the sum in split order):
 * the same values. The loads of the partials are issued before the sums need them: (max,
 * sum) pairs a thread each into ml_l (nsplit x ATT_HG float pairs), the weights by a thread
 * a head into attw, then a float4 of output a thread, ATT_ONCE_LOADS splits' loads in
 * flight together. */
#define ATTEND_COMBINE_ONCE(cnt, last_wg, attw, ml_l)                                                         \
    device_fence();                                                                                           \
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);                                                      \
    if (l == 0) {                                                                                             \
        int done_ = atomic_inc((cnt) + c) == (int)nsplit - 1;                                                 \
        if (done_) atomic_xchg((cnt) + c, 0);                                                                 \
        device_fence();                                                                                       \
        (last_wg) = done_;                                                                                    \
    }                                                                                                         \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                             \
    if (last_wg) {                                                                                            \
        for (uint i_ = l; i_ < nsplit * ATT_HG; i_ += ATT_TC_WG)                                              \
            vstore2(load_l2_f2(part_ml + 2 * ((i_ / ATT_HG) * nq + h0 + i_ % ATT_HG)), i_, (ml_l));            \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                         \
        if (l < ATT_HG)                                                                                       \
            ATT_SPLIT_WEIGHTS(nsplit, s_, (ml_l)[2 * (s_ * ATT_HG + l)], (ml_l)[2 * (s_ * ATT_HG + l) + 1],   \
                              (attw)[s_ * ATT_HG + l]);                                                       \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                         \
        for (uint i_ = l; i_ < ATT_HG * HEAD_DIM / 4; i_ += ATT_TC_WG) {                                      \
            uint hh_ = i_ / (HEAD_DIM / 4);                                                                   \
            ulong o_ = (ulong)h0 * HEAD_DIM + 4 * i_;                                                         \
            float4 a_ = (float4)(0.0f);                                                                       \
            for (uint s0_ = 0; s0_ < nsplit; s0_ += ATT_ONCE_LOADS) {                                         \
                float4 v_[ATT_ONCE_LOADS];                                                                    \
                _Pragma("unroll") for (uint s_ = 0; s_ < ATT_ONCE_LOADS; s_++)                                \
                    if (s0_ + s_ < nsplit) v_[s_] = load_l2_f4(out + (ulong)(s0_ + s_) * nq * HEAD_DIM + o_); \
                _Pragma("unroll") for (uint s_ = 0; s_ < ATT_ONCE_LOADS; s_++) {                              \
                    float w_ = s0_ + s_ < nsplit ? (attw)[(s0_ + s_) * ATT_HG + hh_] : 0.0f;                  \
                    if (w_ != 0.0f) a_ += w_ * v_[s_];                                                        \
                }                                                                                             \
            }                                                                                                 \
            vstore4(a_, 0, out + o_);                                                                         \
        }                                                                                                     \
    }                                                                                                         \
    do {} while (0)

/* Q3_OPENCL_CHAIN_TRACE (-DCHAIN_TRACE, NVIDIA): attention_tc's stamps (qwen3_shared.h), kept by
 * thread 0 in registers and written at the end; its place from a count of work-groups started,
 * asked for at the start (at nq ints past cnt_off) */
#if defined(CHAIN_TRACE) && defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
#define ATT_STAMP(k) \
    if (l == 0) ats_[k] = nv_globaltimer()
#else
#define ATT_STAMP(k) do {} while (0) /* no clock: the count and places only (the tests), stamps 0 */
#endif
/* combine, cnt_off: ATTEND_COMBINE_ONCE's (cnt_off: nq / ATT_HG ints of act, zero between launches) */
__kernel __attribute__((reqd_work_group_size(ATT_TC_WG, 1, 1)))
void attention_tc(ATT_TOKEN_PARAMS, uint combine, ulong cnt_off)
{
    ATT_TC_LOCALS;
    __local int last_wg;
    ATT_TOKEN_SETUP;
#ifdef CHAIN_TRACE
    ulong ats_[ATT_TRACE_STAMPS] = {0};
    uint ncol = nq / ATT_HG, started = 0;
    ATT_STAMP(0);
    if (l == 0) started = (uint)atomic_inc((__global int *)(act + cnt_off) + nq);
#endif
    ATTEND_TOKEN_TC;
    if (combine) {
        ATTEND_COMBINE_ONCE((__global int *)(act + cnt_off), last_wg, qa[0], qs[0]);
    }
#ifdef CHAIN_TRACE
    ATT_STAMP(3);
    if (l == 0 && sp < ATT_TRACE_SPLITS) {
        uint launch = started / (ncol * nsplit);
        __global uint *tr = (__global uint *)(act + cnt_off) + nq + 1 +
                            ((ulong)(launch % ATT_TRACE_LAUNCHES) * ncol * ATT_TRACE_SPLITS + sp * ncol + c) * ATT_TRACE_STAMPS;
        for (uint k = 0; k < ATT_TRACE_STAMPS; k++) tr[k] = (uint)ats_[k];
    }
#endif
}
#undef ATT_STAMP
#define ATT_STAMP(k) do {} while (0)

__kernel __attribute__((reqd_work_group_size(ATT_TC_WG, 1, 1)))
void attention_batch_tc(ATT_BATCH_PARAMS)
{
    ATT_TC_LOCALS;
    ATT_BATCH_SETUP;
    ATTEND_TOKEN_TC;
}
#endif
/* Decode products on tensor cores (Q3_OPENCL_MV_MMA=1, an option being measured): W x
 * for the n_tok <= DEC_BATCH_MAX tokens of a decode step, mma.m16n8k16 BF16 over 16 rows
 * x 32 columns x 8 tokens at a time, so that a batched step's products cost about one
 * token's weight traffic instead of matvec_batch's FP32 work. A work-group takes 16-row
 * panels one after another (get_num_groups(0) apart, as matvec), its MVM_WARPS warps
 * each the panel's 32-column steps warp, warp + MVM_WARPS, ..., and sums the warps'
 * products in a fixed order. x is BF16: a single token's (matvec_mma) staged here by
 * mv_stage, as matvec stages it, then rounded (bf16_pack); a batched step's
 * (matvec_mma_batch, XMODE_BF16) by matvec_stage, rounded the same way, ldx BF16 apart.
 * A token's rows are then the same bits alone or in a batch: the same x, steps, products
 * and order of sums (the two kernels are one body; only where x comes from and how many
 * steps' loads are in flight differ). Each lane takes a step's columns in matmul_mma's
 * order (columns 8 tig .. + 7 of rows g and g + 8: two 16-byte weight loads; of token g:
 * one 16-byte x load), the weights (and a batch's x) of `ahead` steps in flight; the last
 * round of a panel loads the first steps of the work-group's next panel, so the loads
 * run on through the warps' reduction. */
#define MVM_WARPS (MV_WG / 32)
#ifdef Q3_MMA_EMULATE /* PoCL's compiler takes minutes over unrolled steps of barriers */
#undef MVM_AHEAD
#undef MVM_AHEAD1
#define MVM_AHEAD 1
#define MVM_AHEAD1 1
#endif
#ifndef MVM_AHEAD
#define MVM_AHEAD 4 /* steps a warp's loads run ahead in a batch (weights and x; a tuning build option) */
#endif
#ifndef MVM_AHEAD1
#define MVM_AHEAD1 4 /* ... for one token (weights only: x is in local memory; 8: H200 -20 %) */
#endif
#define MVM_AHEAD_MAX (MVM_AHEAD > MVM_AHEAD1 ? MVM_AHEAD : MVM_AHEAD1)
#define MVM_RTOK 4 /* tokens a round of the warps' reduction (MVM_WARPS x 16 x MVM_RTOK floats) */
/* the first uint4 of the 16-row panel of work item `item` (seg: its matrix, panel: its index there) */
inline __global const uint4 *mvm_panel(__global const uint4 *W, uint item, uint p0, uint p1, ulong off0, ulong off1,
                                       ulong off2, uint n_steps, uint *seg, uint *panel)
{
    *panel = item;
    *seg = seg_of(panel, p0, p1);
    return W + PICK3(*seg, off0, off1, off2) + (ulong)*panel * n_steps * 64;
}
inline __attribute__((always_inline)) void mvm_body(MM_SMALL_ARGS, const uint batch, __local float4 *xs,
                                                    __local float *red, __local float *attw MM_EMU_PARAM)
{
    const uint ahead = batch ? MVM_AHEAD : MVM_AHEAD1;
    uint l = get_local_id(0), lane = l & 31, warp = l >> 5, g = lane >> 2, tig = lane & 3;
    uint nb = batch ? min(n_tok, (uint)DEC_BATCH_MAX) : 1;
    uint n_steps = cols / 32, per_warp = (n_steps + MVM_WARPS - 1) / MVM_WARPS;
    uint n_rounds = (per_warp + ahead - 1) / ahead;
    uint p0 = (rows0 + 15) / 16, p1 = (rows1 + 15) / 16, p2 = (rows2 + 15) / 16, n_items = p0 + p1 + p2;
    __global const ushort *xg = (__global const ushort *)(act + x_off);
    __local const uint4 *xl = (__local const uint4 *)xs;
    __local float *rb = batch ? (__local float *)xs : (__local float *)xs + MVX / 2; /* the reduction's */
    if (!batch) {
        mv_stage(xs, red, attw, act + x_off, act + x2_off, W, cols, xmode, norm_off, eps, nsplit, l);
        float4 v[MVX / 4 / MV_WG]; /* then rounded to BF16 in place: every float read before any write */
#pragma unroll
        for (uint i = 0; i < MVX / 4 / MV_WG; i++) v[i] = l + i * MV_WG < cols / 4 ? xs[l + i * MV_WG] : (float4)(0.0f);
        barrier(CLK_LOCAL_MEM_FENCE);
        __local uint2 *x2l = (__local uint2 *)xs;
#pragma unroll
        for (uint i = 0; i < MVX / 4 / MV_WG; i++)
            if (l + i * MV_WG < cols / 4) x2l[l + i * MV_WG] = (uint2)(bf16_pack(v[i].x, v[i].y), bf16_pack(v[i].z, v[i].w));
        barrier(CLK_LOCAL_MEM_FENCE);
    }
/* step k of this warp (column step warp + MVM_WARPS k) of panel P (none where ok_p is 0): rows
 * g and g + 8 of the tile, and for a batch tokens g and g + 8's x; zeros past the last step
 * (the same padded steps alone or not) */
#define MVM_LOAD(wd, xd, P, ok_p, k)                                                                          \
    do {                                                                                                      \
        uint s_ = warp + MVM_WARPS * (k);                                                                     \
        int ok_ = (ok_p) && s_ < n_steps;                                                                     \
        __global const uint4 *t_ = (P) + (ok_ ? (ulong)s_ * 64 : 0);                                           \
        (wd)[0] = ok_ ? t_[4 * g + tig] : (uint4)(0), (wd)[1] = ok_ ? t_[32 + 4 * g + tig] : (uint4)(0);     \
        if (batch) {                                                                                          \
            _Pragma("unroll") for (uint h_ = 0; h_ < 2; h_++) {                                               \
                uint tk_ = g + 8 * h_;                                                                        \
                (xd)[h_] = ok_ && tk_ < nb ? *(__global const uint4 *)(xg + (ulong)tk_ * ldx + s_ * 32 + tig * 8) \
                                           : (uint4)(0);                                                      \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)
    uint item = get_group_id(0), seg, panel;
    __global const uint4 *P = mvm_panel(W, item, p0, p1, off0, off1, off2, n_steps, &seg, &panel);
    uint4 wa[MVM_AHEAD_MAX][2], xa[MVM_AHEAD_MAX][2];
#pragma unroll
    for (uint j = 0; j < ahead; j++) MVM_LOAD(wa[j], xa[j], P, item < n_items, j);
    for (; item < n_items; item += get_num_groups(0)) {
        uint next = item + get_num_groups(0), nseg, npanel;
        __global const uint4 *Pn = mvm_panel(W, next < n_items ? next : item, p0, p1, off0, off1, off2, n_steps, &nseg, &npanel);
        float4 acc[2] = {(float4)(0.0f), (float4)(0.0f)}; /* tokens 0..7, 8..15 */
        for (uint r = 0; r < n_rounds; r++) {
            int last = r + 1 == n_rounds;
#pragma unroll
            for (uint j = 0; j < ahead; j++) {
                uint k = r * ahead + j;
                uint4 w0 = wa[j][0], w8 = wa[j][1], x0 = xa[j][0], x8 = xa[j][1];
                if (last) /* the next panel's first steps */
                    MVM_LOAD(wa[j], xa[j], Pn, next < n_items, j);
                else
                    MVM_LOAD(wa[j], xa[j], P, 1, k + ahead);
                if (!batch) { /* token 0 (lanes g = 0) from local memory */
                    uint s_ = min(warp + MVM_WARPS * k, n_steps - 1);
                    x0 = g == 0 && warp + MVM_WARPS * k < n_steps ? xl[s_ * 4 + tig] : (uint4)(0);
                }
                uint a0[4] = {w0.x, w8.x, w0.y, w8.y}, a1[4] = {w0.z, w8.z, w0.w, w8.w};
                MMA_BF16(&acc[0], a0, x0.x, x0.y);
                MMA_BF16(&acc[0], a1, x0.z, x0.w);
                if (nb > 8) {
                    MMA_BF16(&acc[1], a0, x8.x, x8.y);
                    MMA_BF16(&acc[1], a1, x8.z, x8.w);
                }
            }
        }
        if (next >= n_items) prefetch_l2(W, pf_off, pf_lines); /* as matvec: the next launch's */
        /* lane (g, tig) holds rows g (.x .y) and g + 8 (.z .w) of tokens 2 tig, 2 tig + 1 (+ 8 in acc[1]);
         * the warps' sums meet in rb, MVM_RTOK tokens a round, added in warp order */
        __global float *y = act + PICK3(seg, y0, y1, y2);
        uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);
        for (uint tb = 0; tb < nb; tb += MVM_RTOK) {
            barrier(CLK_LOCAL_MEM_FENCE); /* the last round's sums are read */
#pragma unroll
            for (uint e = 0; e < 8; e++) {
                uint tok = 8 * (e >> 2) + 2 * tig + (e & 1), row = g + 8 * ((e >> 1) & 1);
                float4 a = acc[e >> 2];
                float v = (e & 3) == 0 ? a.x : (e & 3) == 1 ? a.y : (e & 3) == 2 ? a.z : a.w;
                if (tok >= tb && tok < tb + MVM_RTOK) rb[(warp * 16 + row) * MVM_RTOK + tok - tb] = v;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (uint i = l; i < 16 * MVM_RTOK; i += MV_WG) {
                uint row = i / MVM_RTOK, tok = tb + i % MVM_RTOK, rw = panel * 16 + row;
                if (tok < nb && rw < rows) {
                    float s = 0.0f;
                    for (uint w = 0; w < MVM_WARPS; w++) s += rb[(w * 16 + row) * MVM_RTOK + tok - tb];
                    __global float *dst = y + (ulong)tok * ld + rw;
                    *dst = ymode == MODE_ADD ? *dst + s : s;
                }
            }
        }
        P = Pn, seg = nseg, panel = npanel;
    }
#undef MVM_LOAD
}
__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_mma(MM_SMALL_ARGS)
{
    __local float4 xs[MVX / 4]; /* mv_stage's x, then its BF16 in the first half */
    __local float red[MV_WG];
    __local float attw[ATT_COMBINE_MAX];
    MM_EMU_DECL
    mvm_body(MM_SMALL_ARG_NAMES, 0, xs, red, attw MM_EMU_ARG);
}
__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_mma_batch(MM_SMALL_ARGS)
{
    __local float4 xs[MVM_WARPS * 16 * MVM_RTOK / 4]; /* the warps' sums (x is in global memory) */
    MM_EMU_DECL
    mvm_body(MM_SMALL_ARG_NAMES, 1, xs, NULL, NULL MM_EMU_ARG);
}
#endif
