/* env_help.h - the environment variables the runtime reads, as each tool's --help
 * lists them (one definition: the runtime's getenv calls are in kernels/cpu_dispatch.c
 * and runtime/backend_opencl.c; OCL_ICD_VENDORS is read by the OpenCL ICD loader).
 * Programs on q3.h get each backend's lines from q3_backend_env_help (the backends
 * hand these out); kernel-level tools (q3bandwidth) include this header. */
#ifndef Q3_ENV_HELP_H
#define Q3_ENV_HELP_H

#define Q3_ENV_HELP_CPU                                                                       \
    "  Q3_SIMD=scalar|avx2|avx512bf16|amx   CPU kernel level (default: the best this CPU has)\n" \
    "  Q3_GEMV_PREFETCH=0|1                 software prefetch in decode matvecs (default by CPU vendor)\n"
#define Q3_ENV_HELP_OPENCL                                                                      \
    "  Q3_OPENCL_DEVICE=N                   OpenCL device when --device is not given\n"           \
    "  Q3_OPENCL_MMA=0|1|emulate            NVIDIA tensor cores for prompts (default 1 there)\n"   \
    "  Q3_OPENCL_MV_MMA=0|1                 NVIDIA: decode products on tensor cores (default 0; q3serve 1)\n" \
    "  Q3_OPENCL_PROFILE=1|host             time per kernel (or the host's enqueue time) at exit\n" \
    "  Q3_OPENCL_CHAIN_TRACE=FILE           NVIDIA: decode's timestamps at exit (tools/chain_trace.py)\n" \
    "  Q3_OPENCL_VERBOSE=N                  device details (2: each kernel's local memory)\n"     \
    "  Q3_OPENCL_ATT_SPLIT, _ATT_HG, _MM_BT, _MM_WG, _MV_PER_CU, _WGMMA, _BUILD_OPTS   tuning (docs/opencl.md)\n" \
    "  OCL_ICD_VENDORS=DIR                  where the OpenCL loader looks for drivers\n"
#define Q3_ENV_HELP_NONE "environment: none read\n"

#endif
