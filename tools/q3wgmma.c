/* q3wgmma - does Hopper's warpgroup MMA (wgmma) run under NVIDIA's OpenCL here, with
 * which operand layouts, and how fast is a GEMM built on it?
 *
 *   q3wgmma [--runs R] [--wn N] [--wait W]
 *
 * NVIDIA's OpenCL compiles for `.target sm_90` and ptxas refuses wgmma there; the
 * kernels below mark each wgmma instruction (runtime/ocl_ptx.h), and the program's PTX
 * is retargeted to sm_90a and built again from the binary. Then, each in a context of
 * its own (a fault in one does not spoil the next):
 *  1. layouts: D[64x32] = A[64x64] B[32x64]^T by four m64n32k16 BF16 steps over small
 *     integers (exact sums, against the host's): A from registers (mma.m16n8k16's A
 *     fragment) or from local memory, B from local memory; no swizzle (8 x 16-byte core
 *     matrices, the descriptor's LBO the stride along K, SBO along M or N) or the
 *     128-byte swizzle.
 *  2. a GEMM as matmul_mma's inputs are laid out (weights in 16-row x 32-column tiles,
 *     x in BF16 rows, y in f32 rows): a work-group of one warpgroup (128 threads) takes
 *     128 rows x 128 tokens, 32 columns a step, both operands copied to local memory by
 *     cp.async (3 steps in flight, 48 KiB) in the no-swizzle layout, and
 *     wgmma.m64nNk16 with both from local memory (N = --wn, default the widest the
 *     compiler takes of 128 and 64: inline asm of N/2 outputs). Checked against the
 *     host on a shape with partial blocks, then timed (best of R, default 5) on the
 *     Qwen3-4B shapes of a 512- and a 4096-token prompt, as TFLOP/s.
 * --wait W: wgmma groups left in flight before a step's buffer is refilled (0 or 1).
 * Exit status: 0 every check passed, 1 a check failed or there is no NVIDIA device,
 * 2 usage. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/ocl_ptx.h"

static const char usage[] = "usage: q3wgmma [--runs R] [--wn 64|128] [--wait 0|1]\n"
                            "  checks that wgmma runs under NVIDIA's OpenCL (PTX retargeted to sm_90a), which\n"
                            "  operand layouts it reads, and times a wgmma GEMM on the Qwen3-4B shapes\n"
                            "  --runs R   timed launches a shape, the best reported (default 5)\n"
                            "  --wn N     the wgmma's N (default: 128, else 64 where the compiler refuses)\n"
                            "  --wait W   wgmma groups in flight when a step's buffer is refilled (default 1)\n"
                            "exit status: 0 all checks passed, 1 a check failed or no NVIDIA device, 2 usage\n"
                            "environment:\n"
                            "  OCL_ICD_VENDORS=DIR  where the OpenCL loader looks for drivers\n";

/* ---- the kernels: WN, WG_REGS, WG_OUTS(a) and MARK come from the host ---- */
static const char kernel_src[] =
    "#define WG(s) MARK s \"\\n\"\n"
    "inline uint sm_addr(__local const void *p) { return (uint)(ulong)p; }\n"
    "/* a matrix descriptor: start, LBO, SBO in 16-byte units; swizzle mode in bits 62-63 */\n"
    "inline ulong desc(uint addr, uint lbo, uint sbo, uint sw) {\n"
    "    return (ulong)((addr >> 4) & 0x3fff) | ((ulong)((lbo >> 4) & 0x3fff) << 16) |\n"
    "           ((ulong)((sbo >> 4) & 0x3fff) << 32) | ((ulong)sw << 62); }\n"
    "/* element (r, k) of a 64-wide-K operand: mode 1 no swizzle (core matrix (r/8, k/8) at\n"
    "   r/8 nst + k/8 kst), mode 2 the 128-byte swizzle (row r at 128 r, 16-byte chunk k/8\n"
    "   at chunk (k/8) ^ (r%8)) */\n"
    "inline uint off_of(uint mode, uint r, uint k, uint kst, uint nst) {\n"
    "    if (mode == 1) return (r / 8) * nst + (k / 8) * kst + (r % 8) * 16 + (k % 8) * 2;\n"
    "    return r * 128 + (((k / 8) ^ (r % 8)) * 16) + (k % 8) * 2; }\n"
    "__kernel __attribute__((reqd_work_group_size(128, 1, 1)))\n"
    "void layout(__global const ushort *A, __global const ushort *B, __global float *D, uint amode, uint akst,\n"
    "            uint anst, uint alf, uint asf, uint bmode, uint bkst, uint bnst, uint blf, uint bsf)\n"
    "{\n"
    "    __local uint4 raw[(8192 + 4096 + 1024) / 16];\n"
    "    uint l = get_local_id(0), warp = l / 32, lane = l % 32, g = lane / 4, tig = lane % 4;\n"
    "    uint pad = (1024 - (sm_addr(raw) & 1023)) & 1023;\n"
    "    __local uchar *sa = (__local uchar *)raw + pad, *sb = sa + 8192;\n"
    "    for (uint i = l; i < 64 * 64; i += 128)\n"
    "        if (amode) *(__local ushort *)(sa + off_of(amode, i / 64, i % 64, akst, anst)) = A[i];\n"
    "    for (uint i = l; i < 32 * 64; i += 128) *(__local ushort *)(sb + off_of(bmode, i / 64, i % 64, bkst, bnst)) = B[i];\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    asm volatile(\"fence.proxy.async.shared::cta;\" ::: \"memory\");\n"
    "    float d[16];\n"
    "    for (uint i = 0; i < 16; i++) d[i] = 0.0f;\n"
    "    uint ra = 16 * warp + g;\n"
    "    asm volatile(WG(\"wgmma.fence.sync.aligned;\") ::: \"memory\");\n"
    "    for (uint s = 0; s < 4; s++) {\n"
    "        uint bo = bmode == 1 ? 2 * s * bkst : 32 * s, ao = amode == 1 ? 2 * s * akst : 32 * s;\n"
    "        ulong db = desc(sm_addr(sb) + bo, blf, bsf, bmode == 2 ? 1 : 0);\n"
    "        if (amode == 0) {\n"
    "            uint k0 = 16 * s + 2 * tig;\n"
    "            uint a0 = A[ra * 64 + k0] | (uint)A[ra * 64 + k0 + 1] << 16;\n"
    "            uint a1 = A[(ra + 8) * 64 + k0] | (uint)A[(ra + 8) * 64 + k0 + 1] << 16;\n"
    "            uint a2 = A[ra * 64 + k0 + 8] | (uint)A[ra * 64 + k0 + 9] << 16;\n"
    "            uint a3 = A[(ra + 8) * 64 + k0 + 8] | (uint)A[(ra + 8) * 64 + k0 + 9] << 16;\n"
    "            asm volatile(\"{.reg .pred p; setp.ne.b32 p, %21, 0;\\n\" WG(\"wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 \"\n"
    "                \"{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\") \"}\"\n"
    "                : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3]), \"+f\"(d[4]), \"+f\"(d[5]), \"+f\"(d[6]), \"+f\"(d[7]),\n"
    "                  \"+f\"(d[8]), \"+f\"(d[9]), \"+f\"(d[10]), \"+f\"(d[11]), \"+f\"(d[12]), \"+f\"(d[13]), \"+f\"(d[14]), \"+f\"(d[15])\n"
    "                : \"r\"(a0), \"r\"(a1), \"r\"(a2), \"r\"(a3), \"l\"(db), \"r\"(1));\n"
    "        } else {\n"
    "            ulong da = desc(sm_addr(sa) + ao, alf, asf, amode == 2 ? 1 : 0);\n"
    "            asm volatile(\"{.reg .pred p; setp.ne.b32 p, %18, 0;\\n\" WG(\"wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 \"\n"
    "                \"{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\") \"}\"\n"
    "                : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3]), \"+f\"(d[4]), \"+f\"(d[5]), \"+f\"(d[6]), \"+f\"(d[7]),\n"
    "                  \"+f\"(d[8]), \"+f\"(d[9]), \"+f\"(d[10]), \"+f\"(d[11]), \"+f\"(d[12]), \"+f\"(d[13]), \"+f\"(d[14]), \"+f\"(d[15])\n"
    "                : \"l\"(da), \"l\"(db), \"r\"(1));\n"
    "        }\n"
    "    }\n"
    "    asm volatile(WG(\"wgmma.commit_group.sync.aligned;\") ::: \"memory\");\n"
    "    asm volatile(WG(\"wgmma.wait_group.sync.aligned 0;\") ::: \"memory\");\n"
    "    for (uint j = 0; j < 4; j++) {\n"
    "        uint c = 8 * j + 2 * tig;\n"
    "        D[ra * 32 + c] = d[4 * j], D[ra * 32 + c + 1] = d[4 * j + 1];\n"
    "        D[(ra + 8) * 32 + c] = d[4 * j + 2], D[(ra + 8) * 32 + c + 1] = d[4 * j + 3];\n"
    "    }\n"
    "}\n"
    "\n"
    "/* ---- the GEMM: y[t][r] = sum_k W[r][k] x[t][k], 128 rows x 128 tokens a work-group ---- */\n"
    "#define BR 128 /* rows a block: two m64 halves */\n"
    "#define BT 128 /* tokens a block */\n"
    "#define STAGES 3\n"
    "#define OPB (128 * 64) /* bytes of one operand's step: 128 rows x 32 columns BF16 */\n"
    "/* no swizzle: row r, 16-byte chunk j (columns 8j..8j+7) at r/8 * 512 + j * 128 + r%8 * 16:\n"
    "   LBO (along K) 128, SBO (along rows) 512 */\n"
    "#define CHUNK_OFF(r, j) (((r) / 8) * 512 + (j) * 128 + ((r) % 8) * 16)\n"
    "#define CP16(dst, src, ok) asm volatile(\"cp.async.cg.shared.global [%0], [%1], 16, %2;\" :: \"r\"(dst), \"l\"((ulong)(src)), \"r\"((ok) ? 16 : 0) : \"memory\")\n"
    "#define WGMMA(acc, da, db) asm volatile(\"{.reg .pred p; setp.ne.b32 p, %\" WG_NP \", 0;\\n\" \\\n"
    "    WG(\"wgmma.mma_async.sync.aligned.m64n\" WN_S \"k16.f32.bf16.bf16 {\" WG_REGS \"}, %\" WG_NA \", %\" WG_NB \", p, 1, 1, 0, 0;\") \"}\" \\\n"
    "    : WG_OUTS(acc) : \"l\"(da), \"l\"(db), \"r\"(1))\n"
    "__kernel __attribute__((reqd_work_group_size(128, 1, 1)))\n"
    "void gemm(__global const uint4 *W, __global const ushort *xb, __global float *y, uint rows, uint cols,\n"
    "          uint n_tok, uint ldx, uint ldy)\n"
    "{\n"
    "    __local uint4 smem[STAGES * 2 * OPB / 16];\n"
    "    uint l = get_local_id(0), warp = l / 32, lane = l % 32, g = lane / 4, tig = lane % 4;\n"
    "    uint rb = get_group_id(0) * BR, tb = get_group_id(1) * BT, n_steps = cols / 32, n_panels = (rows + 15) / 16;\n"
    "    uint base = sm_addr(smem);\n"
    "    /* thread l copies chunks q = l + 128 i: row (q % 8) + 8 (q / 32), chunk (q / 8) % 4, so that 8\n"
    "       neighbouring threads fill one core matrix (128 contiguous bytes) */\n"
    "#define LOAD_STEP(buf, c) do { \\\n"
    "        uint sa_ = base + (buf) * 2 * OPB, sb_ = sa_ + OPB; \\\n"
    "        _Pragma(\"unroll\") for (uint i_ = 0; i_ < 4; i_++) { \\\n"
    "            uint q_ = l + 128 * i_, r_ = q_ % 8 + 8 * (q_ / 32), j_ = (q_ / 8) % 4; \\\n"
    "            uint p_ = (rb + r_) / 16, rr_ = (rb + r_) % 16; int okw_ = p_ < n_panels; \\\n"
    "            __global const uint4 *ws_ = W + (okw_ ? ((ulong)p_ * n_steps + (c)) * 64 + (rr_ < 8 ? 0 : 32) + 4 * (rr_ % 8) + j_ : 0); \\\n"
    "            CP16(sa_ + CHUNK_OFF(r_, j_), ws_, okw_); \\\n"
    "            int okx_ = tb + r_ < n_tok; \\\n"
    "            __global const ushort *xs_ = xb + (okx_ ? (ulong)(tb + r_) * ldx + (c) * 32 + j_ * 8 : 0); \\\n"
    "            CP16(sb_ + CHUNK_OFF(r_, j_), xs_, okx_); \\\n"
    "        } \\\n"
    "    } while (0)\n"
    "    float acc[2][BT / WN][WN / 2];\n"
    "#pragma unroll\n"
    "    for (uint h = 0; h < 2; h++)\n"
    "#pragma unroll\n"
    "        for (uint n = 0; n < BT / WN; n++)\n"
    "#pragma unroll\n"
    "            for (uint i = 0; i < WN / 2; i++) acc[h][n][i] = 0.0f;\n"
    "#pragma unroll\n"
    "    for (uint s = 0; s < STAGES - 1; s++) {\n"
    "        if (s < n_steps) LOAD_STEP(s, s);\n"
    "        asm volatile(\"cp.async.commit_group;\" ::: \"memory\");\n"
    "    }\n"
    "    for (uint kt = 0; kt < n_steps; kt++) {\n"
    "        asm volatile(\"cp.async.wait_group 1;\" ::: \"memory\"); /* STAGES - 2 */\n"
    "        barrier(CLK_LOCAL_MEM_FENCE);\n"
    "        asm volatile(\"fence.proxy.async.shared::cta;\" ::: \"memory\");\n"
    "        uint sa = base + (kt % STAGES) * 2 * OPB, sb = sa + OPB;\n"
    "        asm volatile(WG(\"wgmma.fence.sync.aligned;\") ::: \"memory\");\n"
    "#pragma unroll\n"
    "        for (uint ks = 0; ks < 2; ks++)\n"
    "#pragma unroll\n"
    "        for (uint h = 0; h < 2; h++)\n"
    "#pragma unroll\n"
    "        for (uint n = 0; n < BT / WN; n++) {\n"
    "            ulong da = desc(sa + h * 8 * 512 + ks * 256, 128, 512, 0);\n"
    "            ulong db = desc(sb + n * (WN / 8) * 512 + ks * 256, 128, 512, 0);\n"
    "            WGMMA(acc[h][n], da, db);\n"
    "        }\n"
    "        asm volatile(WG(\"wgmma.commit_group.sync.aligned;\") ::: \"memory\");\n"
    "#if WAIT == 0\n"
    "        asm volatile(WG(\"wgmma.wait_group.sync.aligned 0;\") ::: \"memory\");\n"
    "#else\n"
    "        asm volatile(WG(\"wgmma.wait_group.sync.aligned 1;\") ::: \"memory\"); /* step kt - 1's are done */\n"
    "#endif\n"
    "        uint nx = kt + STAGES - 1; /* into step kt - 1's buffer */\n"
    "        if (nx < n_steps) LOAD_STEP(nx % STAGES, nx);\n"
    "        asm volatile(\"cp.async.commit_group;\" ::: \"memory\");\n"
    "    }\n"
    "    asm volatile(WG(\"wgmma.wait_group.sync.aligned 0;\") ::: \"memory\");\n"
    "    /* m64nN: lane (g, tig) of warp w holds rows 16 w + g (+ 8: e / 2) of tokens 8 j + 2 tig (+ e % 2) */\n"
    "#pragma unroll\n"
    "    for (uint h = 0; h < 2; h++)\n"
    "#pragma unroll\n"
    "    for (uint n = 0; n < BT / WN; n++)\n"
    "#pragma unroll\n"
    "    for (uint i = 0; i < WN / 2; i++) {\n"
    "        uint j = i / 4, e = i % 4;\n"
    "        uint r = rb + 64 * h + 16 * warp + g + 8 * (e / 2), t = tb + n * WN + 8 * j + 2 * tig + e % 2;\n"
    "        if (r < rows && t < n_tok) y[(ulong)t * ldy + r] = acc[h][n][i];\n"
    "    }\n"
    "}\n";

typedef struct {
    cl_platform_id platform;
    cl_device_id dev;
    cl_context ctx;
    cl_command_queue q;
    cl_program prog;
} wg_env;

static void release(wg_env *e)
{
    if (e->prog) clReleaseProgram(e->prog);
    if (e->q) clReleaseCommandQueue(e->q);
    if (e->ctx) clReleaseContext(e->ctx);
    e->prog = NULL, e->q = NULL, e->ctx = NULL;
}

static void print_log(cl_program p, cl_device_id dev, size_t max)
{
    size_t n = 0;
    clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
    char *log = calloc(1, n + 1);
    if (!log) return;
    clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
    fprintf(stderr, "%.*s\n", (int)(n < max ? n : max), log);
    free(log);
}

/* The source with the host's definitions in front (WN: the wgmma's N). */
static char *make_source(int wn, int wait)
{
    size_t cap = sizeof kernel_src + 16384;
    char *s = malloc(cap);
    if (!s) return NULL;
    int n = snprintf(s, cap, "#define MARK \"%s\"\n#define WN %d\n#define WN_S \"%d\"\n#define WAIT %d\n", Q3_PTX_SM90A_MARK, wn,
                     wn, wait);
    n += snprintf(s + n, cap - (size_t)n, "#define WG_NA \"%d\"\n#define WG_NB \"%d\"\n#define WG_NP \"%d\"\n#define WG_REGS \"",
                  wn / 2, wn / 2 + 1, wn / 2 + 2);
    for (int i = 0; i < wn / 2; i++) n += snprintf(s + n, cap - (size_t)n, "%s%%%d", i ? "," : "", i);
    n += snprintf(s + n, cap - (size_t)n, "\"\n#define WG_OUTS(a) ");
    for (int i = 0; i < wn / 2; i++) n += snprintf(s + n, cap - (size_t)n, "%s\"+f\"((a)[%d])", i ? ", " : "", i);
    n += snprintf(s + n, cap - (size_t)n, "\n");
    memcpy(s + n, kernel_src, sizeof kernel_src);
    return s;
}

/* A context on the NVIDIA device and the program built through its PTX; 0 or -1. */
static int open_env(wg_env *e, int wn, int wait, int verbose)
{
    cl_int rc;
    e->ctx = clCreateContext(NULL, 1, &e->dev, NULL, NULL, &rc);
    if (rc) return -1;
    e->q = clCreateCommandQueue(e->ctx, e->dev, CL_QUEUE_PROFILING_ENABLE, &rc);
    if (rc) return -1;
    char *src = make_source(wn, wait);
    if (!src) return -1;
    const char *srcs[1] = {src};
    cl_program p = clCreateProgramWithSource(e->ctx, 1, srcs, NULL, &rc);
    free(src);
    if (rc) return -1;
    if ((rc = clBuildProgram(p, 1, &e->dev, "", NULL, NULL)) != CL_SUCCESS) {
        if (verbose) fprintf(stderr, "q3wgmma: the marked source (N %d) does not build (%d):\n", wn, rc), print_log(p, e->dev, 1500);
        clReleaseProgram(p);
        return -1;
    }
    size_t n = 0;
    clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL);
    unsigned char *ptx = malloc(n + 1), *bins[1] = {ptx};
    if (!ptx || clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL)) {
        free(ptx);
        clReleaseProgram(p);
        return -1;
    }
    clReleaseProgram(p);
    char *patched = NULL;
    size_t plen = 0;
    int bad = q3_ptx_to_sm90a((const char *)ptx, n, &patched, &plen);
    free(ptx);
    if (bad) {
        fprintf(stderr, "q3wgmma: the program's PTX has no .target sm_90 line (not a Hopper GPU?)\n");
        return -1;
    }
    const unsigned char *pb = (const unsigned char *)patched;
    e->prog = clCreateProgramWithBinary(e->ctx, 1, &e->dev, &plen, &pb, NULL, &rc);
    free(patched);
    if (rc) return -1;
    if ((rc = clBuildProgram(e->prog, 1, &e->dev, "-cl-nv-verbose", NULL, NULL)) != CL_SUCCESS) {
        fprintf(stderr, "q3wgmma: the sm_90a PTX does not build (%d):\n", rc);
        print_log(e->prog, e->dev, 3000);
        return -1;
    }
    if (verbose) print_log(e->prog, e->dev, 400);
    return 0;
}

static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
static float of_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* 1: one layout case, in a context of its own; returns the exact results (of 2048) or -1 */
static int layout_case(wg_env *e, const cl_uint c[10])
{
    static uint16_t A[64 * 64], B[32 * 64];
    static float ref[64 * 32], D[64 * 32];
    srand(7);
    for (int j = 0; j < 64 * 64; j++) A[j] = bf16((float)(rand() % 9 - 4));
    for (int j = 0; j < 32 * 64; j++) B[j] = bf16((float)(rand() % 9 - 4));
    for (int r = 0; r < 64; r++)
        for (int n = 0; n < 32; n++) {
            float s = 0;
            for (int k = 0; k < 64; k++) s += of_bf16(A[r * 64 + k]) * of_bf16(B[n * 64 + k]);
            ref[r * 32 + n] = s;
        }
    if (open_env(e, 64, 1, 0)) return -1;
    cl_int rc;
    cl_kernel k = clCreateKernel(e->prog, "layout", &rc);
    cl_mem ba = clCreateBuffer(e->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof A, A, &rc);
    cl_mem bb = clCreateBuffer(e->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof B, B, &rc);
    cl_mem bd = clCreateBuffer(e->ctx, CL_MEM_READ_WRITE, sizeof D, NULL, &rc);
    int good = -1;
    if (k && ba && bb && bd) {
        clSetKernelArg(k, 0, sizeof ba, &ba), clSetKernelArg(k, 1, sizeof bb, &bb), clSetKernelArg(k, 2, sizeof bd, &bd);
        for (int a = 0; a < 10; a++) clSetKernelArg(k, 3 + (cl_uint)a, sizeof(cl_uint), &c[a]);
        size_t gs = 128;
        if (!clEnqueueNDRangeKernel(e->q, k, 1, NULL, &gs, &gs, 0, NULL, NULL) &&
            !clEnqueueReadBuffer(e->q, bd, CL_TRUE, 0, sizeof D, D, 0, NULL, NULL)) {
            good = 0;
            for (int j = 0; j < 64 * 32; j++) good += D[j] == ref[j];
        }
    }
    if (k) clReleaseKernel(k);
    if (ba) clReleaseMemObject(ba);
    if (bb) clReleaseMemObject(bb);
    if (bd) clReleaseMemObject(bd);
    release(e);
    return good;
}

/* W (rows x cols, row-major floats) into matmul's tiles: 16-row panels of 32-column steps,
 * each step's rows 64 bytes apart (rows 8-15 after rows 0-7: the same order) */
static void to_tiles(const uint16_t *w, int rows, int cols, uint16_t *t)
{
    int panels = (rows + 15) / 16, steps = cols / 32;
    memset(t, 0, (size_t)panels * 16 * (size_t)cols * 2);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            size_t p = (size_t)r / 16, rr = (size_t)r % 16, s = (size_t)k / 32, kk = (size_t)k % 32;
            t[((p * (size_t)steps + s) * 512) + rr * 32 + kk] = w[(size_t)r * (size_t)cols + (size_t)k];
        }
}

typedef struct {
    int rows, cols, tokens;
    const char *name;
} shape;

/* 2: the GEMM on one shape; check: compare with the host (small integers: exact); else
 * the best of runs launches' device time. Returns 0, or -1 (a failure, printed). */
static int gemm_shape(wg_env *e, const shape *sh, int check, int runs, double *best_ms)
{
    int rows = sh->rows, cols = sh->cols, tok = sh->tokens, panels = (rows + 15) / 16;
    size_t wn = (size_t)panels * 16 * (size_t)cols, xn = (size_t)tok * (size_t)cols, yn = (size_t)tok * (size_t)rows;
    uint16_t *w = malloc((size_t)rows * (size_t)cols * 2), *wt = malloc(wn * 2), *x = malloc(xn * 2);
    float *y = calloc(yn, 4);
    int ret = -1;
    if (!w || !wt || !x || !y) goto out;
    srand(11);
    for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) w[i] = bf16(check ? (float)(rand() % 7 - 3) : (float)(rand() % 1000) / 1000.0f - 0.5f);
    for (size_t i = 0; i < xn; i++) x[i] = bf16(check ? (float)(rand() % 5 - 2) : (float)(rand() % 1000) / 1000.0f - 0.5f);
    to_tiles(w, rows, cols, wt);
    cl_int rc;
    cl_kernel k = clCreateKernel(e->prog, "gemm", &rc);
    cl_mem bw = clCreateBuffer(e->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, wn * 2, wt, &rc);
    cl_mem bx = clCreateBuffer(e->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, xn * 2, x, &rc);
    cl_mem by = clCreateBuffer(e->ctx, CL_MEM_READ_WRITE, yn * 4, NULL, &rc);
    if (!k || !bw || !bx || !by) goto rel;
    cl_uint ur = (cl_uint)rows, uc = (cl_uint)cols, ut = (cl_uint)tok, ldx = (cl_uint)cols, ldy = (cl_uint)rows;
    clSetKernelArg(k, 0, sizeof bw, &bw), clSetKernelArg(k, 1, sizeof bx, &bx), clSetKernelArg(k, 2, sizeof by, &by);
    clSetKernelArg(k, 3, 4, &ur), clSetKernelArg(k, 4, 4, &uc), clSetKernelArg(k, 5, 4, &ut);
    clSetKernelArg(k, 6, 4, &ldx), clSetKernelArg(k, 7, 4, &ldy);
    size_t gs[2] = {(size_t)(rows + 127) / 128 * 128, (size_t)(tok + 127) / 128}, ls[2] = {128, 1};
    *best_ms = 1e30;
    for (int r = 0; r < (check ? 1 : runs + 1); r++) {
        cl_event ev;
        if ((rc = clEnqueueNDRangeKernel(e->q, k, 2, NULL, gs, ls, 0, NULL, &ev)) || (rc = clWaitForEvents(1, &ev))) {
            printf("  %s: launch failed (%d)\n", sh->name, rc);
            goto rel;
        }
        cl_ulong t0, t1;
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
        clReleaseEvent(ev);
        double ms = (double)(t1 - t0) / 1e6;
        if (r > 0 || check) *best_ms = ms < *best_ms ? ms : *best_ms;
    }
    if ((rc = clEnqueueReadBuffer(e->q, by, CL_TRUE, 0, yn * 4, y, 0, NULL, NULL))) {
        printf("  %s: read failed (%d)\n", sh->name, rc);
        goto rel;
    }
    if (check) {
        size_t good = 0, first_bad = yn;
        for (int t = 0; t < tok; t++)
            for (int r = 0; r < rows; r++) {
                float s = 0;
                for (int c = 0; c < cols; c++) s += of_bf16(w[(size_t)r * (size_t)cols + (size_t)c]) * of_bf16(x[(size_t)t * (size_t)cols + (size_t)c]);
                size_t i = (size_t)t * (size_t)rows + (size_t)r;
                if (y[i] == s) good++;
                else if (first_bad == yn) first_bad = i;
            }
        printf("  %s: %zu of %zu exact", sh->name, good, yn);
        if (first_bad < yn) printf(" (first wrong: token %zu row %zu)", first_bad / (size_t)rows, first_bad % (size_t)rows);
        printf("\n");
        ret = good == yn ? 0 : -1;
    } else
        ret = 0;
rel:
    if (k) clReleaseKernel(k);
    if (bw) clReleaseMemObject(bw);
    if (bx) clReleaseMemObject(bx);
    if (by) clReleaseMemObject(by);
out:
    free(w), free(wt), free(x), free(y);
    return ret;
}

static int find_nvidia(wg_env *e)
{
    cl_platform_id ps[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, ps, &np) != CL_SUCCESS) return -1;
    for (cl_uint i = 0; i < np && i < 16; i++) {
        char name[256] = "";
        clGetPlatformInfo(ps[i], CL_PLATFORM_NAME, sizeof name, name, NULL);
        if (!strstr(name, "NVIDIA")) continue;
        if (clGetDeviceIDs(ps[i], CL_DEVICE_TYPE_GPU, 1, &e->dev, NULL) != CL_SUCCESS) continue;
        e->platform = ps[i];
        char dn[256] = "", drv[64] = "";
        clGetDeviceInfo(e->dev, CL_DEVICE_NAME, sizeof dn, dn, NULL);
        clGetDeviceInfo(e->dev, CL_DRIVER_VERSION, sizeof drv, drv, NULL);
        printf("q3wgmma: %s, driver %s\n", dn, drv);
        return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    int runs = 5, wn = 0, wait = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        }
        int ok = 0;
        if (!strcmp(a, "--runs") && v) ok = (runs = atoi(v)) >= 1 && runs <= 1000;
        else if (!strcmp(a, "--wn") && v) ok = (wn = atoi(v)) == 64 || wn == 128;
        else if (!strcmp(a, "--wait") && v) ok = (wait = atoi(v)) == 0 || wait == 1;
        if (!ok) {
            fprintf(stderr, "q3wgmma: bad argument '%s%s%s' (--help)\n", a, v ? " " : "", v ? v : "");
            return 2;
        }
        i++;
    }
    wg_env e = {0};
    if (find_nvidia(&e)) {
        fprintf(stderr, "q3wgmma: no NVIDIA OpenCL GPU (the probe needs Hopper's wgmma)\n");
        return 1;
    }
    int failed = 0;
    /* 1. layouts: {amode, akst, anst, alf, asf, bmode, bkst, bnst, blf, bsf} (mode 0: A from
     * registers, 1: no swizzle, 2: 128-byte swizzle; kst/nst: where core matrices are placed,
     * lf/sf: what the descriptor says) */
    static const struct {
        cl_uint c[10];
        int expect; /* 1: the reading the GEMM relies on; 0: informative */
        const char *what;
    } cases[] = {
        {{0, 0, 0, 0, 0, 1, 128, 1024, 128, 1024}, 1, "A registers; B no swizzle, K-neighbours adjacent, LBO = K stride"},
        {{0, 0, 0, 0, 0, 1, 512, 128, 512, 128}, 1, "A registers; B no swizzle, N-neighbours adjacent, LBO = K stride"},
        {{1, 128, 1024, 128, 1024, 1, 128, 1024, 128, 1024}, 1, "A and B no swizzle, K-neighbours adjacent, LBO = K stride"},
        {{1, 1024, 128, 1024, 128, 1, 128, 1024, 128, 1024}, 0, "A no swizzle, M-neighbours adjacent, LBO = K stride"},
        {{0, 0, 0, 0, 0, 2, 0, 0, 16, 1024}, 0, "A registers; B 128-byte swizzle, SBO 1024"},
        {{2, 0, 0, 16, 1024, 2, 0, 0, 16, 1024}, 0, "A and B 128-byte swizzle, SBO 1024"},
        {{0, 0, 0, 0, 0, 1, 128, 1024, 1024, 128}, 0, "A registers; B no swizzle, K-neighbours adjacent, LBO = N stride (wrong reading)"},
    };
    printf("layouts (exact results of 2048):\n");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int good = layout_case(&e, cases[i].c);
        printf("  %-90s %d%s\n", cases[i].what, good, good < 0 ? " (failed to run)" : "");
        if (cases[i].expect && good != 2048) failed = 1;
    }
    /* 2. the GEMM: the widest N the compiler takes */
    int tried[2] = {wn ? wn : 128, wn ? 0 : 64};
    int built = 0;
    for (int i = 0; i < 2 && tried[i] && !built; i++)
        if (!open_env(&e, tried[i], wait, 1)) built = wn = tried[i];
        else release(&e);
    if (!built) {
        fprintf(stderr, "q3wgmma: the GEMM does not build\n");
        return 1;
    }
    printf("gemm: wgmma m64n%dk16, 128 x 128 blocks, 3 steps of 32 columns in flight, wait_group %d\n", wn, wait);
    static const shape check_shapes[] = {{200, 256, 200, "check 200 rows x 256 columns x 200 tokens"},
                                         {512, 1024, 384, "check 512 rows x 1024 columns x 384 tokens"}};
    double ms;
    for (size_t i = 0; i < 2; i++)
        if (gemm_shape(&e, &check_shapes[i], 1, 1, &ms)) failed = 1;
    static const shape timed[] = {
        {6144, 2560, 512, "4B q/k/v 6144 x 2560, 512 tokens"},  {2560, 4096, 512, "4B o_proj 2560 x 4096, 512"},
        {19456, 2560, 512, "4B gate/up 19456 x 2560, 512"},     {2560, 9728, 512, "4B down 2560 x 9728, 512"},
        {19456, 2560, 4096, "4B gate/up 19456 x 2560, 4096"},   {2560, 9728, 4096, "4B down 2560 x 9728, 4096"},
    };
    for (size_t i = 0; i < sizeof timed / sizeof timed[0] && !failed; i++) {
        if (gemm_shape(&e, &timed[i], 0, runs, &ms)) {
            failed = 1;
            break;
        }
        double flop = 2.0 * timed[i].rows * (double)timed[i].cols * timed[i].tokens;
        printf("  %-40s %8.3f ms  %6.1f TFLOP/s\n", timed[i].name, ms, flop / (ms * 1e-3) / 1e12);
    }
    release(&e);
    printf("q3wgmma: %s\n", failed ? "a check failed" : "all checks passed");
    return failed;
}
