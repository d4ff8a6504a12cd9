/* qwen3_wgmma.cl - prompt GEMMs on Hopper's warpgroup MMA (wgmma), an option being
 * measured (Q3_OPENCL_WGMMA=1; the program built with Q3_WGMMA). NVIDIA's OpenCL emits
 * PTX for sm_90, where ptxas refuses wgmma, so each wgmma instruction is written inside a
 * PTX comment that starts with WG_MARK (runtime/ocl_ptx.h's Q3_PTX_SM90A_MARK) and the
 * host retargets the program's PTX to sm_90a (q3_ptx_to_sm90a) and builds that. Same
 * arguments, blocks and grid as matmul_mma (128 rows x 128 tokens, 32 columns a step, the
 * column split, matmul_mma_glu's gate/up pairing), so the host swaps the kernel alone. A
 * work-group is one warpgroup (4 warps); both operands go to local memory by cp.async,
 * WG_STAGES steps in flight (3 x 16 KiB: NVIDIA's 48 KiB), in wgmma's no-swizzle K-major
 * layout: 8 rows x 16 bytes (8 columns) a core matrix, 128 contiguous bytes; row r's
 * chunk j (columns 8j..8j+7 of the step) at (r / 8) 512 + j 128 + (r % 8) 16, so the
 * descriptor's LBO (the stride along K) is 128 and SBO (along rows) 512 (the reading
 * tools/q3wgmma checks on the device). Each step is 4 wgmma.m64n128k16: two 64-row halves
 * (glu: gate's and up's rows of the block) x two k16 halves of the step, every thread
 * holding 2 x 64 f32 sums. With Q3_MMA_EMULATE the wgmma is done in plain OpenCL C from
 * the same local memory (tests on PoCL check the indexing). */
#ifdef Q3_WGMMA
#if MM_BT != 128 || MM_WG != 128 || MM_RP != 2
#error "matmul_wg needs 128-token blocks and one warpgroup of 128 rows (MM_BT 128, MM_WG 128, MM_RP 2)"
#endif
#define WG_MARK "//Q3SM90A " /* = Q3_PTX_SM90A_MARK */
#ifndef WG_STAGES
#define WG_STAGES 3
#endif
#ifndef WG_WAIT
#define WG_WAIT 1 /* wgmma groups left in flight when a step's buffer is refilled (0: none) */
#endif
#ifndef WG_DIAG
#define WG_DIAG 0 /* q3wgmma's bisection (results wrong): 1 no wgmma, 2 no loads past the first steps, 3 neither loads nor barriers */
#endif
#ifndef WG_ONLY
#define WG_ONLY 0 /* q3wgmma's bisection: 1 loads the weights alone, 2 x alone */
#endif
#if WG_STAGES != 3
#error "matmul_wg's cp.async wait is for 3 steps in flight (48 KiB of local memory)"
#endif
#ifndef Q3_EMU_CP
#define WG_CP_WAIT() asm volatile("cp.async.wait_group 1;" ::: "memory") /* WG_STAGES - 2 groups left */
#else
#define WG_CP_WAIT()
#endif
#define WG_OPB (128 * MM_ROWB) /* one operand's step: 128 rows (or tokens) x 32 columns, BF16 */
#define WG_CHUNK(r, j) (((r) / 8) * 512 + (j) * 128 + ((r) % 8) * 16)

#ifndef Q3_MMA_EMULATE
#define WG_ASM(s) asm volatile(WG_MARK s "\n" ::: "memory")
/* a matrix descriptor: start address, LBO 128, SBO 512 (16-byte units), no swizzle */
inline ulong wg_desc(uint addr) { return (ulong)((addr >> 4) & 0x3fff) | ((ulong)(128 >> 4) << 16) | ((ulong)(512 >> 4) << 32); }
#define WG_OUT8(a, i)                                                                                          \
    "+f"((a)[i]), "+f"((a)[i + 1]), "+f"((a)[i + 2]), "+f"((a)[i + 3]), "+f"((a)[i + 4]), "+f"((a)[i + 5]),     \
        "+f"((a)[i + 6]), "+f"((a)[i + 7])
#define WG_OUTS64(a)                                                                                           \
    WG_OUT8(a, 0), WG_OUT8(a, 8), WG_OUT8(a, 16), WG_OUT8(a, 24), WG_OUT8(a, 32), WG_OUT8(a, 40), WG_OUT8(a, 48), \
        WG_OUT8(a, 56)
/* acc (64 floats) += A B^T: A 64 rows x 16 columns at local address a, B 128 tokens x 16 at b */
#define WGMMA_M64N128K16(acc, a, b)                                                                            \
    asm volatile("{.reg .pred p; setp.ne.b32 p, %66, 0;\n" WG_MARK                                              \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "                                        \
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,"       \
                 "%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,"  \
                 "%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}" \
                 : WG_OUTS64(acc)                                                                               \
                 : "l"(wg_desc(a)), "l"(wg_desc(b)), "r"(1))
#define WG_FENCE() WG_ASM("wgmma.fence.sync.aligned;")
#define WG_COMMIT() WG_ASM("wgmma.commit_group.sync.aligned;")
#define WG_WAIT_ALL() WG_ASM("wgmma.wait_group.sync.aligned 0;")
#if WG_WAIT == 0
#define WG_WAIT_PREV() WG_ASM("wgmma.wait_group.sync.aligned 0;")
#else
#define WG_WAIT_PREV() WG_ASM("wgmma.wait_group.sync.aligned 1;")
#endif
#define WG_PROXY_FENCE() asm volatile("fence.proxy.async.shared::cta;" ::: "memory")
#else
/* m64n128k16 in plain C: lane (g, tig) of warp w holds, in acc[4 j + e], row 16 w + g + 8 (e / 2)
 * and token 8 j + 2 tig + e % 2 (the layout of mma.m16n8k16's C, 16 n8 tiles) */
inline void wgmma_emu(float *acc, __local const uchar *smem, uint a, uint b)
{
    uint l = get_local_id(0), warp = l >> 5, g = (l & 31) >> 2, tig = l & 3;
    for (uint i = 0; i < 64; i++) {
        uint j = i / 4, e = i % 4, r = 16 * warp + g + 8 * (e / 2), t = 8 * j + 2 * tig + e % 2;
        float s = acc[i];
        for (uint k = 0; k < 16; k++)
            s += bf16_lo(*(__local const ushort *)(smem + a + WG_CHUNK(r, k / 8) + (k % 8) * 2)) *
                 bf16_lo(*(__local const ushort *)(smem + b + WG_CHUNK(t, k / 8) + (k % 8) * 2));
        acc[i] = s;
    }
}
#define WGMMA_M64N128K16(acc, a, b) wgmma_emu(acc, smem, (a) - lds_addr(smem), (b) - lds_addr(smem))
#define WG_FENCE()
#define WG_COMMIT()
#define WG_WAIT_ALL()
#define WG_WAIT_PREV()
#define WG_PROXY_FENCE()
#endif

inline __attribute__((always_inline)) void wg_body(MM_ARGS, const uint glu, __local uchar *smem)
{
    uint l = get_local_id(0), warp = l >> 5, g = (l & 31) >> 2, tig = l & 3;
    MM_BLOCK_SETUP; /* qwen3_mma.cl's: rb (glu: 64 rows of gate and the same of up), tb, nk steps from c_lo */
    uint base = lds_addr(smem);
/* step c into buffer buf: thread l copies chunks q = l + 128 i, row (q % 8) + 8 (q / 32), chunk
 * (q / 8) % 4 (8 neighbouring threads fill one core matrix), of the weights (block row r: glu,
 * gate's row rb + r below 64 and up's rb + r - 64 above) and of x (token tb + r) */
#define WG_LOAD(buf, c)                                                                                        \
    do {                                                                                                        \
        uint sa_ = (buf) * 2 * WG_OPB, sb_ = sa_ + WG_OPB;                                                      \
        _Pragma("unroll") for (uint i_ = 0; i_ < 4; i_++) {                                                    \
            uint q_ = l + 128 * i_, r_ = q_ % 8 + 8 * (q_ / 32), j_ = (q_ / 8) % 4;                             \
            uint wr_ = glu ? rb + r_ % 64 : rb + r_, p_ = wr_ / 16;                                              \
            int okw_ = p_ < n_panels;                                                                           \
            __global const uint4 *ws_ = wpb + (okw_ ? (long)((ulong)p_ * col_tiles + (c)) * 64 +                \
                                                          (glu && r_ >= 64 ? pdelta : 0) + 4 * (wr_ % 16) + j_   \
                                                    : 0);                                                       \
            if (WG_ONLY != 2) CP_ASYNC16(smem, sa_ + WG_CHUNK(r_, j_), ws_, okw_);                             \
            uint k_ = (c) * MM_BK + j_ * 8;                                                                     \
            int okx_ = tb + r_ < n_tok && k_ < cols;                                                            \
            __global const ushort *xs_ = xb + (okx_ ? (ulong)(tb + r_) * ldx + k_ : 0);                         \
            if (WG_ONLY != 1) CP_ASYNC16(smem, sb_ + WG_CHUNK(r_, j_), xs_, okx_);                             \
        }                                                                                                       \
    } while (0)

    float acc[2][64];
#pragma unroll
    for (uint h = 0; h < 2; h++)
#pragma unroll
        for (uint i = 0; i < 64; i++) acc[h][i] = 0.0f;
#pragma unroll
    for (uint s = 0; s < WG_STAGES - 1; s++) {
        if (s < nk) WG_LOAD(s, c_lo + s);
        CP_COMMIT();
    }
    for (uint kt = 0; kt < nk; kt++) {
#if WG_DIAG != 3
        WG_CP_WAIT();                 /* this thread's copies of step kt have landed, */
        WG_PROXY_FENCE();             /* are ordered before the async proxy's reads (wgmma), */
        barrier(CLK_LOCAL_MEM_FENCE); /* and so are everyone's */
#endif
        uint sa = base + (kt % WG_STAGES) * 2 * WG_OPB, sb = sa + WG_OPB;
#if WG_DIAG != 1
        WG_FENCE();
#pragma unroll
        for (uint ks = 0; ks < 2; ks++)
#pragma unroll
            for (uint h = 0; h < 2; h++) WGMMA_M64N128K16(acc[h], sa + h * 8 * 512 + ks * 256, sb + ks * 256);
        WG_COMMIT();
        WG_WAIT_PREV(); /* step kt - 1's products are done: its buffer is free */
#endif
        uint nx = kt + WG_STAGES - 1;
#if WG_DIAG == 0 || WG_DIAG == 1
        if (nx < nk) WG_LOAD(nx % WG_STAGES, c_lo + nx);
#endif
        CP_COMMIT();
    }
    WG_WAIT_ALL();
#undef WG_LOAD

    if (glu) { /* (a constant: one of the two kernels) silu(gate) up in BF16 */
        __global ushort *yb = (__global ushort *)y;
#pragma unroll
        for (uint i = 0; i < 64; i++) {
            uint j = i / 4, e = i % 4, re = rb + 16 * warp + g + 8 * (e / 2), te = tb + 8 * j + 2 * tig + e % 2;
            float gv = acc[0][i], uv = acc[1][i];
            if (re < rows && te < n_tok) yb[(ulong)te * ld + re] = bf16_round(gv / (1.0f + exp(-gv)) * uv);
        }
        return;
    }
#pragma unroll
    for (uint h = 0; h < 2; h++)
#pragma unroll
        for (uint i = 0; i < 64; i++) {
            uint j = i / 4, e = i % 4, re = rb + 64 * h + 16 * warp + g + 8 * (e / 2), te = tb + 8 * j + 2 * tig + e % 2;
            if (re < rows && te < n_tok) {
                __global float *dst = y + (ulong)te * ld + re;
                *dst = add ? *dst + acc[h][i] : acc[h][i];
            }
        }
}

__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void matmul_wg(MM_ARGS)
{
    __local uint4 smem_v[WG_STAGES * 2 * WG_OPB / 16];
    wg_body(MM_ARG_NAMES, 0, (__local uchar *)smem_v);
}

__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void matmul_wg_glu(MM_ARGS)
{
    __local uint4 smem_v[WG_STAGES * 2 * WG_OPB / 16];
    wg_body(MM_ARG_NAMES, 1, (__local uchar *)smem_v);
}
#endif
