/* qwen3_wgmma.cl - prompt GEMMs on Hopper's warpgroup MMA (wgmma), an option being
 * measured (Q3_OPENCL_WGMMA=1; the program built with Q3_WGMMA). NVIDIA's OpenCL emits
 * PTX for sm_90, where ptxas refuses wgmma, so each wgmma instruction is written inside a
 * PTX comment that starts with WG_MARK (runtime/ocl_ptx.h's Q3_PTX_SM90A_MARK) and the
 * host retargets the program's PTX to sm_90a (q3_ptx_to_sm90a) and builds that. Same
 * arguments, blocks and grid as matmul_mma (128 rows x 128 tokens, 32 columns a step, the
 * column split, matmul_mma_glu's gate/up pairing), so the host swaps the kernel alone.
 *
 * A work-group is one warpgroup (4 warps) issuing wgmma.m64n128k16 with A (the weights)
 * from registers and B (x) from local memory: each step is 4 products, two 64-row halves
 * (glu: gate's and up's rows of the block) x two k16 halves of the step's 32 columns, every
 * thread holding 2 x 64 f32 sums. Warp w's A rows in half h are panel rb / 16 + 4 h + w
 * (glu: gate's, then up's, panel rb / 16 + w), loaded as matmul_mma loads its weights: two
 * 16-byte loads a panel and step straight into registers, WG_AHEAD steps ahead, in
 * matmul_mma's column order (lane (g, tig) takes columns 8 tig .. 8 tig + 7 as k = 2 tig,
 * 2 tig + 1, 2 tig + 8, 2 tig + 9 of the first k16 product and the same of the second).
 * x's columns must come to the tensor cores in that same order, so x is not copied by
 * cp.async (which copies 16-byte chunks as they are) but loaded into registers too, a
 * token's 64-byte row a thread, its 16 words transposed 4 x 4 (the step's word i = columns
 * 2i, 2i + 1 goes to chunk i % 4, place i / 4) and stored in wgmma's no-swizzle K-major
 * layout: 8 tokens x 16 bytes a core matrix, token n's chunk c at (n / 8) 512 + c 128 +
 * (n % 8) 16, chunks 2 ks and 2 ks + 1 the two core matrices along K of product ks (the
 * descriptor's LBO 128, SBO 512: the reading tools/q3wgmma checks on the device). Two
 * buffers of 8 KiB. (Both operands by cp.async into local memory ran at 100-145 TFLOP/s
 * on the H200 where its wgmma steps alone reach 790-840: cp.async moved ~2.3 TB/s in all;
 * matmul_mma, whose weights come by plain loads, reaches 350 on the 4096-token shapes.)
 * With Q3_MMA_EMULATE the wgmma is done in plain OpenCL C from the same registers and
 * local memory (tests on PoCL check the indexing and the two orders' agreement). */
#ifdef Q3_WGMMA
#if MM_BT != 128 || MM_WG != 128 || MM_RP != 2
#error "matmul_wg needs 128-token blocks and one warpgroup of 128 rows (MM_BT 128, MM_WG 128, MM_RP 2)"
#endif
#define WG_MARK "//Q3SM90A " /* = Q3_PTX_SM90A_MARK */
#ifndef WG_AHEAD
#define WG_AHEAD 2 /* steps ahead the weights and x are loaded into registers (1 or 2) */
#endif
#ifndef WG_DIAG
#define WG_DIAG 0 /* q3wgmma's bisection (results wrong): 1 no wgmma, 2 no loads past the first steps */
#endif
#define WG_XB (MM_BT * MM_ROWB) /* one step of x in local memory: 128 tokens x 64 bytes */
#define WG_CHUNK(r, c) (((r) / 8) * 512 + (c) * 128 + ((r) % 8) * 16)

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
/* acc (64 floats) += A B^T: A 64 rows x 16 columns in registers (a[4]: mma.m16n8k16's A
 * fragment of this warp's 16 rows), B 128 tokens x 16 columns at local address b */
#define WGMMA_RS(acc, a, b)                                                                                    \
    asm volatile("{.reg .pred p; setp.ne.b32 p, %69, 0;\n" WG_MARK                                              \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "                                        \
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,"       \
                 "%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,"  \
                 "%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, "\
                 "p, 1, 1, 0;\n}"                                                                               \
                 : WG_OUTS64(acc)                                                                               \
                 : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "l"(wg_desc(b)), "r"(1))
#define WG_FENCE() WG_ASM("wgmma.fence.sync.aligned;")
#define WG_COMMIT() WG_ASM("wgmma.commit_group.sync.aligned;")
#define WG_WAIT_ALL() WG_ASM("wgmma.wait_group.sync.aligned 0;")
#define WG_PROXY_FENCE() asm volatile("fence.proxy.async.shared::cta;" ::: "memory")
#define WG_EMU_PARAM
#define WG_EMU_ARG
#else
/* m64n128k16 in plain C: lane (g, tig) of warp w holds, in acc[4 j + e], row 16 w + g + 8 (e / 2)
 * and token 8 j + 2 tig + e % 2 (the layout of mma.m16n8k16's C, 16 n8 tiles); A's row 16 w + r,
 * column k is in register (r / 8) + 2 (k / 8) of lane 4 (r % 8) + (k % 8) / 2 of warp w, half
 * k % 2 (mma.m16n8k16's A), passed through scr (4 words a thread) */
inline void wgmma_emu(float *acc, const uint *a, __local const uchar *smem, uint b, __local uint *scr)
{
    uint l = get_local_id(0), warp = l >> 5, g = (l & 31) >> 2, tig = l & 3;
    for (uint i = 0; i < 4; i++) scr[l * 4 + i] = a[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint i = 0; i < 64; i++) {
        uint j = i / 4, e = i % 4, r = g + 8 * (e / 2), t = 8 * j + 2 * tig + e % 2;
        float s = acc[i];
        for (uint k = 0; k < 16; k++) {
            uint aw = scr[(32 * warp + 4 * (r % 8) + (k % 8) / 2) * 4 + r / 8 + 2 * (k / 8)];
            float av = k & 1 ? bf16_hi(aw) : bf16_lo(aw);
            s += av * bf16_lo(*(__local const ushort *)(smem + b + WG_CHUNK(t, k / 8) + (k % 8) * 2));
        }
        acc[i] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}
#define WGMMA_RS(acc, a, b) wgmma_emu(acc, a, smem, (b) - lds_addr(smem), wg_scr)
#define WG_FENCE()
#define WG_COMMIT()
#define WG_WAIT_ALL()
#define WG_PROXY_FENCE()
#define WG_EMU_PARAM , __local uint *wg_scr
#define WG_EMU_ARG , wg_scr
#endif

inline __attribute__((always_inline)) void wg_body(MM_ARGS, const uint glu, __local uchar *smem WG_EMU_PARAM)
{
    uint l = get_local_id(0), warp = l >> 5, g = (l & 31) >> 2, tig = l & 3;
    MM_BLOCK_SETUP; /* qwen3_mma.cl's: rb (glu: 64 rows of gate and the same of up), tb, nk steps from c_lo */
    uint base = lds_addr(smem);

/* the weights of step c, both halves: rows g and g + 8 of the tile of panel rb / 16 + 4 h + warp
 * (glu: gate's and up's panel rb / 16 + warp), uint4 tig of each, as mma fragments */
#define WG_LOAD_A(dst, c)                                                                                      \
    do {                                                                                                        \
        _Pragma("unroll") for (uint h_ = 0; h_ < 2; h_++) {                                                    \
            uint p_ = rb / 16 + warp + (glu ? 0 : 4 * h_);                                                       \
            int pok_ = p_ < n_panels;                                                                            \
            __global const uint4 *t_ = wpb + (pok_ ? (long)((ulong)p_ * col_tiles + (c)) * 64 +                \
                                                         (glu && h_ ? pdelta : 0) : 0);                          \
            uint4 r0_ = pok_ ? t_[4 * g + tig] : (uint4)(0), r8_ = pok_ ? t_[32 + 4 * g + tig] : (uint4)(0);    \
            (dst)[h_][0][0] = r0_.x, (dst)[h_][0][1] = r8_.x, (dst)[h_][0][2] = r0_.y, (dst)[h_][0][3] = r8_.y; \
            (dst)[h_][1][0] = r0_.z, (dst)[h_][1][1] = r8_.z, (dst)[h_][1][2] = r0_.w, (dst)[h_][1][3] = r8_.w; \
        }                                                                                                       \
    } while (0)
#define WG_COPY_A(dst, src)                                                                                    \
    do {                                                                                                        \
        _Pragma("unroll") for (uint h_ = 0; h_ < 2; h_++)                                                      \
        _Pragma("unroll") for (uint k_ = 0; k_ < 2; k_++)                                                      \
        _Pragma("unroll") for (uint i_ = 0; i_ < 4; i_++)(dst)[h_][k_][i_] = (src)[h_][k_][i_];                  \
    } while (0)
/* token tb + l's 64 bytes of step c (zeros past the prompt or the columns) */
#define WG_LOAD_X(dst, c)                                                                                      \
    do {                                                                                                        \
        uint k_ = (c) * MM_BK;                                                                                  \
        int ok_ = tb + l < n_tok && k_ < cols;                                                                  \
        __global const uint4 *s_ = (__global const uint4 *)(xb + (ok_ ? (ulong)(tb + l) * ldx + k_ : 0));      \
        _Pragma("unroll") for (uint i_ = 0; i_ < 4; i_++)(dst)[i_] = ok_ ? s_[i_] : (uint4)(0);                \
    } while (0)
/* ... into buffer buf, transposed: chunk c = word c of each of its four 16-byte pieces */
#define WG_STORE_X(buf, src)                                                                                   \
    do {                                                                                                        \
        __local uchar *d_ = smem + (buf) * WG_XB;                                                              \
        *(__local uint4 *)(d_ + WG_CHUNK(l, 0)) = (uint4)((src)[0].x, (src)[1].x, (src)[2].x, (src)[3].x);     \
        *(__local uint4 *)(d_ + WG_CHUNK(l, 1)) = (uint4)((src)[0].y, (src)[1].y, (src)[2].y, (src)[3].y);     \
        *(__local uint4 *)(d_ + WG_CHUNK(l, 2)) = (uint4)((src)[0].z, (src)[1].z, (src)[2].z, (src)[3].z);     \
        *(__local uint4 *)(d_ + WG_CHUNK(l, 3)) = (uint4)((src)[0].w, (src)[1].w, (src)[2].w, (src)[3].w);     \
    } while (0)
#define WG_COPY_X(dst, src)                                                                                    \
    do {                                                                                                        \
        _Pragma("unroll") for (uint i_ = 0; i_ < 4; i_++)(dst)[i_] = (src)[i_];                                 \
    } while (0)

    float acc[2][64];
#pragma unroll
    for (uint h = 0; h < 2; h++)
#pragma unroll
        for (uint i = 0; i < 64; i++) acc[h][i] = 0.0f;
    /* at step kt: a0 its weights, a1 / x1 step kt + 1's (x1 stored during step kt), a2 / x2
     * step kt + 2's; local buffer kt % 2 holds its x */
    uint a0[2][2][4], a1[2][2][4];
    uint4 x1[4] = {(uint4)(0), (uint4)(0), (uint4)(0), (uint4)(0)};
    if (nk) WG_LOAD_X(x1, c_lo);
    WG_STORE_X(0, x1);
    if (nk > 1) WG_LOAD_X(x1, c_lo + 1);
    if (nk) WG_LOAD_A(a0, c_lo);
    if (nk > 1) WG_LOAD_A(a1, c_lo + 1);
#if WG_AHEAD >= 2
    uint a2[2][2][4];
    uint4 x2[4];
    if (nk > 2) WG_LOAD_X(x2, c_lo + 2);
    if (nk > 2) WG_LOAD_A(a2, c_lo + 2);
#endif
    WG_PROXY_FENCE();
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint kt = 0; kt < nk; kt++) {
        uint sb = base + (kt % 2) * WG_XB;
#if WG_DIAG != 1
        WG_FENCE();
#pragma unroll
        for (uint ks = 0; ks < 2; ks++)
#pragma unroll
            for (uint h = 0; h < 2; h++) WGMMA_RS(acc[h], a0[h][ks], sb + ks * 256);
        WG_COMMIT();
#endif
        /* while they run: step kt + 1's x into the other buffer (its last reader, step
         * kt - 1, is done), and the loads of step kt + 1 + WG_AHEAD */
        if (kt + 1 < nk) WG_STORE_X((kt + 1) % 2, x1);
#if WG_AHEAD >= 2
        WG_COPY_X(x1, x2);
#if WG_DIAG != 2
        if (kt + 3 < nk) WG_LOAD_X(x2, c_lo + kt + 3);
#endif
#else
#if WG_DIAG != 2
        if (kt + 2 < nk) WG_LOAD_X(x1, c_lo + kt + 2);
#endif
#endif
#if WG_DIAG != 1
        WG_WAIT_ALL(); /* step kt's products are done: a0 and this buffer are free */
#endif
        WG_COPY_A(a0, a1);
#if WG_AHEAD >= 2
        WG_COPY_A(a1, a2);
#if WG_DIAG != 2
        if (kt + 3 < nk) WG_LOAD_A(a2, c_lo + kt + 3);
#endif
#else
#if WG_DIAG != 2
        if (kt + 2 < nk) WG_LOAD_A(a1, c_lo + kt + 2);
#endif
#endif
        WG_PROXY_FENCE(); /* the stores above are ordered before the async proxy's reads (wgmma), */
        barrier(CLK_LOCAL_MEM_FENCE); /* and so are everyone's */
    }
#undef WG_LOAD_A
#undef WG_COPY_A
#undef WG_LOAD_X
#undef WG_STORE_X
#undef WG_COPY_X

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

#ifdef Q3_MMA_EMULATE
#define WG_EMU_DECL __local uint wg_scr[MM_WG * 4];
#else
#define WG_EMU_DECL
#endif
__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void matmul_wg(MM_ARGS)
{
    __local uint4 smem_v[2 * WG_XB / 16];
    WG_EMU_DECL
    wg_body(MM_ARG_NAMES, 0, (__local uchar *)smem_v WG_EMU_ARG);
}

__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void matmul_wg_glu(MM_ARGS)
{
    __local uint4 smem_v[2 * WG_XB / 16];
    WG_EMU_DECL
    wg_body(MM_ARG_NAMES, 1, (__local uchar *)smem_v WG_EMU_ARG);
}
#endif
