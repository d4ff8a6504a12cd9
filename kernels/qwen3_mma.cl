/* qwen3_mma.cl - prompts on NVIDIA tensor cores: the GEMM (matmul_mma). Part of
 * the program qwen3.cl starts. The host defines Q3_NV_MMA on NVIDIA's platform
 * (and builds without it if the compiler refuses); NVIDIA's OpenCL compiler
 * takes inline PTX, so the kernels issue warp-level instructions directly:
 *  - cp.async: global -> local memory copies of 16 bytes that bypass registers,
 *    MM_STAGES steps in flight (a pipeline);
 *  - ldmatrix: a warp loads 8x8 BF16 matrices from local memory straight into
 *    the fragment layout of mma;
 *  - mma.sync.m16n8k16: BF16 products with f32 accumulation.
 * With Q3_MMA_EMULATE as well (Q3_OPENCL_MMA=emulate), each of the three is
 * done in plain OpenCL C through local memory instead, slowly but with the
 * same data movement, so that PoCL in CI checks the indexing of these kernels. */
#ifdef Q3_NV_MMA

#define MM_BK 32     /* columns per pipeline step: one tile of each 16-row panel */
#define MM_ROWB 64   /* bytes of a staged row: MM_BK BF16, four 16-byte chunks */
#define MM_STAGES 3  /* pipeline steps in local memory */
#define MM_STAGE_BYTES ((MM_BR + MM_BT) * MM_ROWB)
#define MM_WARPS (MM_WG / 32)
#define MM_WR (MM_BR / 2) /* a warp's rows: the 4 warps are 2 x 2 */
#define MM_WT (MM_BT / 2) /* ... and tokens */
#define MM_FM (MM_WR / 16) /* m16 fragments per warp */
#define MM_FN (MM_WT / 8)  /* n8 fragments per warp */

/* Chunk c of staged row r is stored at chunk c ^ ((r >> 1) & 3): the 8 rows an
 * ldmatrix reads at once then hit 8 distinct groups of 4 banks. Byte offset: */
inline uint mm_swz(uint r, uint c) { return r * MM_ROWB + ((c ^ ((r >> 1) & 3u)) << 4); }

#ifndef Q3_MMA_EMULATE
inline uint lds_addr(__local const uchar *p) { return (uint)(ulong)p; }

/* 16 bytes global -> local, zero-filled where !ok (src must still be mapped) */
#define CP_ASYNC16(smem, off, src, ok)                                                                            \
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(lds_addr(smem) + (off)), "l"((ulong)(src)), \
                 "r"((ok) ? 16 : 0)                                                                               \
                 : "memory")
#define CP_COMMIT() asm volatile("cp.async.commit_group;" ::: "memory")
#define CP_WAIT_STAGES() asm volatile("cp.async.wait_group 1;" ::: "memory") /* MM_STAGES - 2 */

/* ldmatrix .x4: lane l gives the address of row l % 8 of matrix l / 8 (16 bytes
 * each) and receives, of each matrix j, row lane / 4, elements 2 (lane % 4) + {0, 1}. */
#define LDSM_X4(smem, off, r)                                                                                     \
    do {                                                                                                          \
        uint r0_, r1_, r2_, r3_;                                                                                  \
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"                            \
                     : "=r"(r0_), "=r"(r1_), "=r"(r2_), "=r"(r3_)                                                 \
                     : "r"(lds_addr(smem) + (off))                                                                \
                     : "memory");                                                                                 \
        (r)[0] = r0_, (r)[1] = r1_, (r)[2] = r2_, (r)[3] = r3_;                                                   \
    } while (0)

inline void mma_bf16(float4 *d, const uint *a, uint b0, uint b1)
{
    float d0 = d->x, d1 = d->y, d2 = d->z, d3 = d->w;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    *d = (float4)(d0, d1, d2, d3);
}
#define MMA_BF16(d, a, b0, b1) mma_bf16(d, a, b0, b1)
#define MM_EMU_DECL

#else /* Q3_MMA_EMULATE: the same operations through local memory (mm_scr, 6 words a lane) */

#define CP_ASYNC16(smem, off, src, ok) \
    (*(__local uint4 *)((smem) + (off)) = (ok) ? *(__global const uint4 *)(src) : (uint4)(0))
#define CP_COMMIT()
#define CP_WAIT_STAGES()
#define MM_EMU_DECL __local uint mm_scr[MM_WG * 6];

inline void ldsm_x4_emu(__local const uchar *smem, uint off, uint *r, __local uint *scr)
{
    uint l = get_local_id(0), lane = l & 31;
    __local uint *w = scr + (l - lane) * 6;
    w[lane] = off;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint j = 0; j < 4; j++) r[j] = *(__local const uint *)(smem + w[8 * j + lane / 4] + 4 * (lane % 4));
    barrier(CLK_LOCAL_MEM_FENCE);
}
#define LDSM_X4(smem, off, r) ldsm_x4_emu(smem, off, r, mm_scr)

inline float bf16_of(uint w, uint k) { return k & 1 ? bf16_hi(w) : bf16_lo(w); }

/* m16n8k16: A row r, column k in register (r / 8) + 2 (k / 8) of lane (r % 8) 4 + (k % 8) / 2;
 * B row k, column n in register k / 8 of lane 4 n + (k % 8) / 2; C element e of lane
 * (g, t) = (lane / 4, lane % 4) at row g + 8 (e / 2), column 2 t + e % 2. */
inline void mma_emu(float4 *d, const uint *a, uint b0, uint b1, __local uint *scr)
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
            float av = bf16_of(w[((r % 8) * 4 + (k % 8) / 2) * 6 + r / 8 + 2 * (k / 8)], k);
            float bv = bf16_of(w[(n * 4 + (k % 8) / 2) * 6 + 4 + k / 8], k);
            c[e] += av * bv;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    *d = (float4)(c[0], c[1], c[2], c[3]);
}
#define MMA_BF16(d, a, b0, b1) mma_emu(d, a, b0, b1, mm_scr)
#endif

/* y (+)= W x for a prompt, x in BF16 (xb: [n_tok][ldx]). A work-group of 4
 * warps takes MM_BR rows x MM_BT tokens, MM_BK columns a step, MM_STAGES steps
 * in flight; each warp MM_WR x MM_WT: MM_FM x MM_FN fragments, loaded by
 * ldmatrix from rows swizzled by mm_swz. The weights' R16C32 tiles are 16
 * rows of 64 bytes, so a step of a 16-row panel is one contiguous KiB. Up to
 * three matrices that share x (q, k, v; gate, up) run in one launch, their row
 * blocks numbered one after another. A grid of depth nz > 1 splits the columns:
 * work-group z stores its partial product part_stride floats further on, and
 * add_parts sums them in a fixed order (deterministic). */
__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1)))
void matmul_mma(__global const uint4 *W, uint cols, __global const ushort *xb, uint ldx, uint n_tok, uint add,
                uint part_stride,
                ulong off0, uint rows0, __global float *y0, uint ld0,
                ulong off1, uint rows1, __global float *y1, uint ld1,
                ulong off2, uint rows2, __global float *y2, uint ld2)
{
    __local uchar smem[MM_STAGES * MM_STAGE_BYTES];
    MM_EMU_DECL
    uint l = get_local_id(0), lane = l & 31, warp = l >> 5, g = lane >> 2, tig = lane & 3;
    uint blk = get_group_id(0), tb = get_group_id(1) * MM_BT;
    uint seg = seg_of(&blk, (rows0 + MM_BR - 1) / MM_BR, (rows1 + MM_BR - 1) / MM_BR);
    ulong off = PICK3(seg, off0, off1, off2);
    uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);
    __global float *y = PICK3(seg, y0, y1, y2);
    uint rb = blk * MM_BR;
    uint col_tiles = (cols + MM_BK - 1) / MM_BK, n_panels = (rows + 15) / 16;
    uint nz = get_num_groups(2), per = (col_tiles + nz - 1) / nz, c_lo = get_group_id(2) * per;
    uint c_hi = min(col_tiles, c_lo + per), nk = c_hi > c_lo ? c_hi - c_lo : 0;
    y += (ulong)get_group_id(2) * part_stride;

    /* One step's copies: MM_BR rows and MM_BT tokens of four 16-byte chunks,
     * (MM_BR + MM_BT) * 4 / MM_WG of them a thread. Chunk q of the rows: panel
     * q / 64, uint4 q % 64 of its tile (row (q % 64) / 4, chunk q % 4). */
#define MM_LOAD_STEP(buf, c)                                                                                     \
    do {                                                                                                         \
        __local uchar *st_ = smem + (buf) * MM_STAGE_BYTES;                                                      \
        for (uint i_ = 0; i_ < MM_BR * 4 / MM_WG; i_++) {                                                        \
            uint q_ = l + i_ * MM_WG, p_ = rb / 16 + q_ / 64, w_ = q_ % 64;                                       \
            int ok_ = p_ < n_panels;                                                                             \
            __global const uint4 *src_ = W + off + (ok_ ? ((ulong)p_ * col_tiles + (c)) * 64 + w_ : 0);         \
            CP_ASYNC16(st_, mm_swz(q_ / 64 * 16 + w_ / 4, w_ % 4), src_, ok_);                                    \
        }                                                                                                        \
        for (uint i_ = 0; i_ < MM_BT * 4 / MM_WG; i_++) {                                                        \
            uint q_ = l + i_ * MM_WG, t_ = q_ / 4, k_ = (c) * MM_BK + (q_ % 4) * 8;                               \
            int ok_ = tb + t_ < n_tok && k_ < cols;                                                               \
            __global const ushort *src_ = xb + (ok_ ? (ulong)(tb + t_) * ldx + k_ : 0);                           \
            CP_ASYNC16(st_ + MM_BR * MM_ROWB, mm_swz(t_, q_ % 4), src_, ok_);                                     \
        }                                                                                                        \
    } while (0)

    float4 acc[MM_FM][MM_FN];
    for (uint a = 0; a < MM_FM; a++)
        for (uint b = 0; b < MM_FN; b++) acc[a][b] = (float4)(0.0f);
    uint wrow = (warp & 1) * MM_WR, wtok = (warp >> 1) * MM_WT;
    /* ldmatrix row addresses: A (weights): matrix j = lane / 8 is rows +8 (j & 1),
     * chunk +(j >> 1); B (tokens): tokens +8 (j >> 1), chunk +(j & 1). */
    uint a_row = wrow + (lane & 7) + 8 * ((lane >> 3) & 1), a_chk = lane >> 4;
    uint b_tok = wtok + (lane & 7) + 8 * (lane >> 4), b_chk = (lane >> 3) & 1;

    for (uint s = 0; s < MM_STAGES - 1; s++) {
        if (s < nk) MM_LOAD_STEP(s, c_lo + s);
        CP_COMMIT();
    }
    for (uint kt = 0; kt < nk; kt++) {
        CP_WAIT_STAGES(); /* this thread's copies of step kt have landed ... */
        barrier(CLK_LOCAL_MEM_FENCE); /* ... everyone's; and step kt - 1's buffer is free */
        uint nx = kt + MM_STAGES - 1;
        if (nx < nk) MM_LOAD_STEP(nx % MM_STAGES, c_lo + nx);
        CP_COMMIT();
        __local uchar *st = smem + (kt % MM_STAGES) * MM_STAGE_BYTES, *xt = st + MM_BR * MM_ROWB;
        for (uint ks = 0; ks < MM_BK / 16; ks++) {
            uint af[MM_FM][4], bfr[MM_FN / 2][4];
            for (uint a = 0; a < MM_FM; a++) LDSM_X4(st, mm_swz(a_row + 16 * a, a_chk + 2 * ks), af[a]);
            for (uint b = 0; b < MM_FN / 2; b++) LDSM_X4(xt, mm_swz(b_tok + 16 * b, b_chk + 2 * ks), bfr[b]);
            for (uint a = 0; a < MM_FM; a++)
                for (uint b = 0; b < MM_FN; b++)
                    MMA_BF16(&acc[a][b], af[a], bfr[b / 2][2 * (b & 1)], bfr[b / 2][2 * (b & 1) + 1]);
        }
    }
#undef MM_LOAD_STEP

    for (uint a = 0; a < MM_FM; a++)
        for (uint b = 0; b < MM_FN; b++) {
            uint r = rb + wrow + a * 16 + g, t = tb + wtok + b * 8 + tig * 2;
            float v[4] = {acc[a][b].x, acc[a][b].y, acc[a][b].z, acc[a][b].w};
            for (uint e = 0; e < 4; e++) {
                uint re = r + (e >> 1) * 8, te = t + (e & 1);
                if (re < rows && te < n_tok) {
                    __global float *dst = y + (ulong)te * ld + re;
                    *dst = add ? *dst + v[e] : v[e];
                }
            }
        }
}
#endif
