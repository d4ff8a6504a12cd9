/* q3wgmma - does Hopper's warpgroup MMA (wgmma) run under NVIDIA's OpenCL here, with
 * which operand layouts, and how fast is a GEMM built on it?
 *
 *   q3wgmma [--runs R] [--opts OPTIONS] [--emulate]
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
 *  2. the backend's own matmul_wg (kernels/qwen3_wgmma.cl, built as the backend builds it
 *     for a Qwen3-4B-like model with Q3_WGMMA): weights in their 16-row x 32-column tiles,
 *     x in BF16 rows, y in f32 rows, one warpgroup a 128 x 128 block, wgmma.m64n128k16
 *     with the weights from registers and x from local memory. Checked exactly against the host on
 *     shapes with partial blocks (small integers), then timed (best of R, default 5) on
 *     the Qwen3-4B shapes of a 512- and a 4096-token prompt, as TFLOP/s, beside the
 *     backend's mma.sync GEMM (matmul_mma) from the same program on the same shapes.
 * --emulate: on any OpenCL device (PoCL in CI), matmul_wg built with Q3_MMA_EMULATE and
 * checked against the host; no layout cases, no timing.
 * --opts O: more build options for the GEMM program (tuning, or WG_DIAG's bisection; the
 * checks are then reported only).
 * Exit status: 0 every check passed, 1 a check failed or there is no NVIDIA device,
 * 2 usage. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/cl_sources.h"
#include "../runtime/ocl_ptx.h"

static const char usage[] = "usage: q3wgmma [--runs R] [--opts OPTIONS] [--emulate]\n"
                            "  checks that wgmma runs under NVIDIA's OpenCL (PTX retargeted to sm_90a), which\n"
                            "  operand layouts it reads, and checks and times the backend's wgmma GEMM\n"
                            "  (matmul_wg) on the Qwen3-4B shapes\n"
                            "  --runs R   timed launches a shape, the best reported (default 5)\n"
                            "  --opts O   more build options for the GEMM program (tuning, e.g. -DWG_AHEAD=1; with\n"
                            "             -DWG_DIAG=1 or 2 it runs without its products or without its loads;\n"
                            "             its checks are then reported, not enforced)\n"
                            "  --emulate  on any OpenCL device: matmul_wg emulated in plain OpenCL C, the checks\n"
                            "             only (the harness and the kernel's indexing, no layouts, no timing)\n"
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
    ;

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

/* A context on the NVIDIA device and a program built through its PTX (the marks dropped,
 * the target moved to sm_90a): gemm 0 the layout probe above, 1 the backend's kernels as it
 * builds them for a Qwen3-4B-like model with Q3_WGMMA (runtime/backend_opencl.c's options;
 * extra: more options). 0 or -1 (printed where verbose). */
static int open_env(wg_env *e, int gemm, int emulate, const char *extra, int verbose)
{
    cl_int rc;
    e->ctx = clCreateContext(NULL, 1, &e->dev, NULL, NULL, &rc);
    if (rc) return -1;
    e->q = clCreateCommandQueue(e->ctx, e->dev, CL_QUEUE_PROFILING_ENABLE, &rc);
    if (rc) return -1;
    const char *srcs[17];
    cl_uint n = 0;
    char opts[512];
    if (gemm) {
        for (const q3_cl_source *cs = q3_cl_sources; cs->name && n < 16; cs++) srcs[n++] = cs->text;
        snprintf(opts, sizeof opts,
                 "-cl-std=CL1.2 -DHEAD_DIM=128 -DATT_HG=2 -DMVX=4096 -DMVX_NORM=4096 -DMM_BT=128 -DMM_WG=128 -DMM_RP=2 "
                 "-DFA_WG=128 -DMVB_R=2 -DATT_TC_WG=128 -DQ3_NV_MMA -DQ3_WGMMA -DMM_TOKEN_MAJOR%s %s",
                 emulate ? " -DQ3_MMA_EMULATE" : "", extra);
    } else {
        srcs[n++] = "#define MARK \"" Q3_PTX_SM90A_MARK "\"\n";
        srcs[n++] = kernel_src;
        snprintf(opts, sizeof opts, "-cl-std=CL1.2");
    }
    cl_program p = clCreateProgramWithSource(e->ctx, n, srcs, NULL, &rc);
    if (rc) return -1;
    if ((rc = clBuildProgram(p, 1, &e->dev, opts, NULL, NULL)) != CL_SUCCESS) {
        if (verbose) fprintf(stderr, "q3wgmma: the marked source does not build (%d):\n", rc), print_log(p, e->dev, 1500);
        clReleaseProgram(p);
        return -1;
    }
    e->prog = p;
    if (emulate) return 0; /* plain OpenCL C: no PTX */
    int r = q3_cl_program_to_sm90a(e->ctx, e->dev, &e->prog, "-cl-nv-verbose", &rc);
    if (r == -1 && verbose) fprintf(stderr, "q3wgmma: the program's PTX has no .target sm_90 line (not a Hopper GPU?)\n");
    if (r == -2 && verbose) {
        fprintf(stderr, "q3wgmma: the sm_90a PTX does not build (%d):\n", rc);
        if (e->prog) print_log(e->prog, e->dev, 3000);
    }
    if (r) return -1;
    if (verbose) { /* ptxas's lines on matmul_wg: registers, spills, injected waits */
        size_t ln = 0;
        clGetProgramBuildInfo(e->prog, e->dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &ln);
        char *log = calloc(1, ln + 1);
        if (log && !clGetProgramBuildInfo(e->prog, e->dev, CL_PROGRAM_BUILD_LOG, ln, log, NULL))
            for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"))
                if (strstr(line, "matmul_wg") || strstr(line, "C75") || strstr(line, "Used "))
                    printf("  ptxas: %.200s\n", line);
        free(log);
    }
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
    if (open_env(e, 0, 0, "", 0)) {
        release(e);
        return -1;
    }
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
static int gemm_shape(wg_env *e, const char *kname, const shape *sh, int check, int runs, double *best_ms)
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
    cl_kernel k = clCreateKernel(e->prog, kname, &rc);
    cl_mem bw = clCreateBuffer(e->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, wn * 2, wt, &rc);
    cl_mem bx = clCreateBuffer(e->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, xn * 2, x, &rc);
    cl_mem by = clCreateBuffer(e->ctx, CL_MEM_READ_WRITE, yn * 4, NULL, &rc);
    if (!k || !bw || !bx || !by) goto rel;
    /* matmul_wg's arguments (MM_ARGS): one matrix, stored (not added), no column split */
    cl_uint uc = (cl_uint)cols, ut = (cl_uint)tok, ldx = (cl_uint)cols, zero = 0, ur = (cl_uint)rows, ldy = (cl_uint)rows;
    cl_ulong off0 = 0;
    rc = clSetKernelArg(k, 0, sizeof bw, &bw) | clSetKernelArg(k, 1, 4, &uc) | clSetKernelArg(k, 2, sizeof bx, &bx) |
         clSetKernelArg(k, 3, 4, &ldx) | clSetKernelArg(k, 4, 4, &ut) | clSetKernelArg(k, 5, 4, &zero) |
         clSetKernelArg(k, 6, 4, &zero);
    for (cl_uint sgi = 0; sgi < 3; sgi++)
        rc |= clSetKernelArg(k, 7 + 4 * sgi, 8, &off0) | clSetKernelArg(k, 8 + 4 * sgi, 4, sgi ? &zero : &ur) |
              clSetKernelArg(k, 9 + 4 * sgi, sizeof by, &by) | clSetKernelArg(k, 10 + 4 * sgi, 4, &ldy);
    if (rc) {
        printf("  %s: %s's arguments refused (%d)\n", sh->name, kname, rc);
        goto rel;
    }
    /* MM_TOKEN_MAJOR, as the backend builds it: token blocks in dimension 0 */
    size_t gs[3] = {(size_t)(tok + 127) / 128 * 128, (size_t)(rows + 127) / 128, 1}, ls[3] = {128, 1, 1};
    *best_ms = 1e30;
    for (int r = 0; r < (check ? 1 : runs + 1); r++) {
        cl_event ev;
        if ((rc = clEnqueueNDRangeKernel(e->q, k, 3, NULL, gs, ls, 0, NULL, &ev)) || (rc = clWaitForEvents(1, &ev))) {
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

/* The first NVIDIA GPU, or with any set the first device of any platform. */
static int find_device(wg_env *e, int any)
{
    cl_platform_id ps[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, ps, &np) != CL_SUCCESS) return -1;
    for (cl_uint i = 0; i < np && i < 16; i++) {
        char name[256] = "";
        clGetPlatformInfo(ps[i], CL_PLATFORM_NAME, sizeof name, name, NULL);
        if (!any && !strstr(name, "NVIDIA")) continue;
        if (clGetDeviceIDs(ps[i], any ? CL_DEVICE_TYPE_ALL : CL_DEVICE_TYPE_GPU, 1, &e->dev, NULL) != CL_SUCCESS) continue;
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
    int runs = 5, emulate = 0;
    const char *extra = "";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--emulate")) {
            emulate = 1;
            continue;
        }
        int ok = 0;
        if (!strcmp(a, "--runs") && v) ok = (runs = atoi(v)) >= 1 && runs <= 1000;
        else if (!strcmp(a, "--opts") && v) ok = strlen(extra = v) < 256;
        if (!ok) {
            fprintf(stderr, "q3wgmma: bad argument '%s%s%s' (--help)\n", a, v ? " " : "", v ? v : "");
            return 2;
        }
        i++;
    }
    wg_env e = {0};
    if (find_device(&e, emulate)) {
        fprintf(stderr, emulate ? "q3wgmma: no OpenCL device\n" : "q3wgmma: no NVIDIA OpenCL GPU (the probe needs Hopper's wgmma)\n");
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
    if (!emulate) printf("layouts (exact results of 2048):\n");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] && !emulate; i++) {
        int good = layout_case(&e, cases[i].c);
        printf("  %-90s %d%s\n", cases[i].what, good, good < 0 ? " (failed to run)" : "");
        if (cases[i].expect && good != 2048) failed = 1;
    }
    /* 2. the backend's matmul_wg */
    if (open_env(&e, 1, emulate, extra, 1)) {
        fprintf(stderr, "q3wgmma: matmul_wg does not build\n");
        return 1;
    }
    printf("matmul_wg%s: wgmma m64n128k16, 128 x 128 blocks, weights from registers, x in local memory%s%s\n",
           emulate ? " (emulated)" : "", *extra ? ", built with " : "", extra);
    static const shape check_shapes[] = {{200, 256, 200, "check 200 rows x 256 columns x 200 tokens"},
                                         {512, 1024, 384, "check 512 rows x 1024 columns x 384 tokens"}};
    double ms;
    /* --opts may change what the kernel computes (WG_DIAG): its checks are then reported only */
    for (size_t i = 0; i < 2; i++)
        if (gemm_shape(&e, "matmul_wg", &check_shapes[i], 1, 1, &ms) && !*extra) failed = 1;
    static const shape timed[] = {
        {6144, 2560, 512, "4B q/k/v 6144 x 2560, 512 tokens"},  {2560, 4096, 512, "4B o_proj 2560 x 4096, 512"},
        {19456, 2560, 512, "4B gate/up 19456 x 2560, 512"},     {2560, 9728, 512, "4B down 2560 x 9728, 512"},
        {19456, 2560, 4096, "4B gate/up 19456 x 2560, 4096"},   {2560, 9728, 4096, "4B down 2560 x 9728, 4096"},
    };
    for (size_t i = 0; i < sizeof timed / sizeof timed[0] && !failed && !emulate; i++) {
        double ms_mma;
        if (gemm_shape(&e, "matmul_wg", &timed[i], 0, runs, &ms) ||
            gemm_shape(&e, "matmul_mma", &timed[i], 0, runs, &ms_mma)) {
            failed = 1;
            break;
        }
        double flop = 2.0 * timed[i].rows * (double)timed[i].cols * timed[i].tokens;
        printf("  %-40s %8.3f ms  %6.1f TFLOP/s  (matmul_mma %8.3f ms  %6.1f)\n", timed[i].name, ms,
               flop / (ms * 1e-3) / 1e12, ms_mma, flop / (ms_mma * 1e-3) / 1e12);
    }
    release(&e);
    printf("q3wgmma: %s\n", failed ? "a check failed" : *extra ? "checks not enforced (--opts)" : "all checks passed");
    return failed;
}
