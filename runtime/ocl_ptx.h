/* ocl_ptx.h - Hopper's warpgroup instructions (wgmma) under NVIDIA's OpenCL.
 * NVIDIA's OpenCL compiler emits PTX for `.target sm_90`, and ptxas refuses wgmma
 * there (it needs sm_90a), whatever -cl-nv-arch says. So a kernel writes each such
 * instruction inside a PTX comment that starts with Q3_PTX_SM90A_MARK (legal for
 * sm_90; the asm's operand constraints still bind its registers), the program is
 * built from source, its PTX taken from CL_PROGRAM_BINARIES, the marks dropped and
 * the target moved to sm_90a here, and the result built again with
 * clCreateProgramWithBinary (probed on an H200, docs/opencl.md). */
#ifndef Q3_OCL_PTX_H
#define Q3_OCL_PTX_H

#include <stddef.h>
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

/* What a kernel's asm strings put before an sm_90a-only instruction. */
#define Q3_PTX_SM90A_MARK "//Q3SM90A "

/* The PTX text ptx (n bytes, NUL-terminated or not) with every Q3_PTX_SM90A_MARK
 * removed and its `.target sm_90` line (the first directive of that name) retargeted
 * to `.target sm_90a`, in a malloc'd NUL-terminated string (*out, *out_len without
 * the NUL). Returns 0; -1 where the text has no `.target sm_90` directive (another
 * architecture, already sm_90a, or not PTX: build without the marked kernels), or
 * on allocation failure. */
int q3_ptx_to_sm90a(const char *ptx, size_t n, char **out, size_t *out_len);

/* *prog, built from source for dev alone, replaced by its PTX through q3_ptx_to_sm90a,
 * built with opts. Returns 0; -1 where there is no binary or it is not PTX for sm_90
 * (*prog left as it was); -2 where OpenCL refuses the retargeted PTX (*rc its code,
 * *prog that program, its build log to read, or NULL). One definition for the backend
 * and tools/q3wgmma. */
int q3_cl_program_to_sm90a(cl_context ctx, cl_device_id dev, cl_program *prog, const char *opts, cl_int *rc);

#endif
