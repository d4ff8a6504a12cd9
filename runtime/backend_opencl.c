/* backend_opencl.c - the whole Qwen3 graph on an OpenCL device (kernels/qwen3.cl).
 * The weights section is uploaded once per model and device as one buffer, in the
 * file's tiled layout, and shared by every context there (ocl_shared); each context
 * has its own queue, kernels, activations and KV cache on the device. Per pass the
 * host sends the token ids and reads back only the logits it asked for. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../kernels/cl_sources.h"
#include "../kernels/qwen3_shared.h"
#include "backend.h"
#include "env_help.h"
#include "ocl_device.h"
#include "sampler.h"
#include "ocl_ptx.h"
#include "weights.h"

#define MAX_BATCH 512 /* prompt tokens per pass, and the fewest the activations hold (att_split partials) */
/* On a GPU with BIG_BATCH_MEM bytes or more, BIG_BATCH tokens a pass: the prompt
 * GEMMs get 8x the token blocks (whole waves of work-groups, no column splits) and
 * prompt attention 8x the query blocks. H200, 4B: pp4096 17.1k -> 20.3k tok/s
 * with 2048, 22.5k with 4096; 0.6B 67k -> 114k (docs/opencl.md). The activations
 * grow to ~1 GB at 4B. Q3_OPENCL_BATCH (1..BATCH_LIMIT), a tuning knob, sets it. */
#define BIG_BATCH 4096
#define BIG_BATCH_MEM (16ull << 30)
#define BATCH_LIMIT 8192
#define SMALL_MAX 8    /* up to this many tokens: matmul_small, else matmul_gemm */
/* Decode attention splits the positions over ATT_SPLIT work-groups per query-head
 * group, ATT_SPLIT_DEEP from position ATT_DEEP_POS on (more work-groups once each
 * has two blocks of keys or more; H200: 8 splits 785 -> 777 tok/s at depth 512 with
 * 16, 563 -> 647 at depth 4096, Qwen3-0.6B). Q3_OPENCL_ATT_SPLIT fixes one count. */
#define ATT_SPLIT 8
#define ATT_SPLIT_DEEP 16
#define ATT_DEEP_POS 1536
#define KSPLIT 4    /* matmul_mma: most column splits of a lone matrix */
/* gate/up's tail split: chosen by glu_tail (-1; 0: off). H200, two rounds interleaved: pp512
 * 4B +4.6 to +4.8 %, 1.7B +3.4 to +4.1 %, pp4096 level (docs/opencl.md) */
#define MM_TAIL_DEFAULT (-1)
#define MM_PER_CU 2 /* matmul_mma work-groups resident a compute unit (254 registers x 128 threads) */
/* The most MiB of the next decode launch's weights matvec prefetches into L2.
 * H200, decode tok/s against none: 4 MiB +1-3 % at every size; 8 better at 0.6B
 * but -1 % at 1.7B; 16 and 32 slower at 1.7B and 4B (docs/opencl.md). */
#define PREFETCH_MB_DEFAULT 4
#define MV_PER_CU 2 /* matvec work-groups per compute unit (two of 256 threads fit an SM) */
#define ACT_REGIONS 22 /* the most regions of the activation buffer (21 used) */
/* logits_greedy's chunks a row: H200, 0.6B, one work-group a row (600 KB) took a decode
 * token ~40 us longer than reading the logits and taking the greedy token on the host. */
#define GREEDY_CHUNKS 32
/* The narrow program's attention_mma has FA_WIDE_WG threads (8 warps, 128 queries a work-group:
 * each K and V tile serves twice the queries); a prompt pass takes it where it still gives
 * FA_WIDE_ROUNDS work-groups a compute unit or more (H200: +2-3 % at 4096 tokens, 1.7B and 4B;
 * -1.6 % at 512, where 4 warps keep more work-groups). */
#define FA_WIDE_WG 256
#define FA_WIDE_ROUNDS 2
_Static_assert(DB_STAGE_INTS <= MAX_BATCH + 1, "a batched step's staging fits the staging buffer");

enum {
    K_MM_SMALL, K_MATVEC, K_MM_GEMM, K_EMBED, K_NORM, K_QKROPE, K_ATTN, K_ATTN_PF, K_SILU, K_ADD_PARTS, K_MM_MMA,
    K_ATTN_MMA, K_MM_MMA64, K_MV_STAGE, K_MV_BATCH, K_ATTN_BATCH, K_MM_MMA_GLU, K_ATTN_TC, K_ATTN_BATCH_TC,
    K_ATTN_MMA_WIDE, K_MV_MMA, K_MV_MMA_BATCH, K_MM_WG, K_MM_WG_GLU, K_MM_MMA_GLU_PARTS, K_GLU_PARTS_SUM, K_GREEDY,
    K_MV_CHAIN, K_COUNT
};
static const char *const kernel_names[K_COUNT] = {
    "matmul_small", "matvec", "matmul_gemm", "embed", "rmsnorm", "qk_norm_rope",
    "attention", "attention_prefill", "silu_mul", "add_parts", "matmul_mma", "attention_mma",
    "matmul_mma", /* K_MM_MMA64: the same kernel from the narrow program (64-token blocks) */
    "matvec_stage", "matvec_batch", "attention_batch", "matmul_mma_glu", "attention_tc", "attention_batch_tc",
    "attention_mma", /* K_ATTN_MMA_WIDE: the same kernel from the narrow program (FA_WIDE_WG threads) */
    "matvec_mma", "matvec_mma_batch", "matmul_wg", "matmul_wg_glu", "matmul_mma_glu_parts", "glu_parts_sum",
    "logits_greedy", "matvec_chain",
};
/* The work-group size each is launched with (1: the runtime's choice). */
static const unsigned kernel_group_size[K_COUNT] = {MV_WG,  MV_WG,  GM_WG, 1, NORM_WG, ROPE_WG,
                                                   ATT_WG, ATT_WG, 1,     1, MM_WG,   FA_WG, MM_WG,
                                                   MV_WG,  MV_WG,  ATT_WG, MM_WG, ATT_TC_WG, ATT_TC_WG,
                                                   FA_WIDE_WG, MV_WG, MV_WG, MM_WG, MM_WG, MM_WG, 1, NORM_WG, MV_WG};
/* The tensor-core kernels, built only where sh->mma (matmul_mma_glu only with 2 panels a warp;
 * decode attention's only where att_tc: head_dim 64 or 128). */
static int is_mma_kernel(int i)
{
    return i == K_MM_MMA || i == K_ATTN_MMA || i == K_MM_MMA64 || i == K_MM_MMA_GLU || i == K_ATTN_TC ||
           i == K_ATTN_BATCH_TC || i == K_ATTN_MMA_WIDE || i == K_MV_MMA || i == K_MV_MMA_BATCH || i == K_MM_WG ||
           i == K_MM_WG_GLU || i == K_MM_MMA_GLU_PARTS;
}
/* The kernels of gate/up's pairing (2 panels a warp), built only with MM_RP 2. */
static int is_glu_kernel(int i) { return i == K_MM_MMA_GLU || i == K_MM_MMA_GLU_PARTS; }
/* The kernels taken from the narrow program (its other kernels are not created). */
static int is_narrow_kernel(int i) { return i == K_MM_MMA64 || i == K_ATTN_MMA_WIDE; }
static int is_att_tc_kernel(int i) { return i == K_ATTN_TC || i == K_ATTN_BATCH_TC; }
/* The kernels of the wgmma program (built with Q3_WGMMA, its PTX retargeted to sm_90a), only there. */
static int is_wg_kernel(int i) { return i == K_MM_WG || i == K_MM_WG_GLU; }
/* Which of a model's programs a kernel comes from. */
enum { PROG_MAIN, PROG_NARROW, PROG_WG };
static int program_of_kernel(int i) { return is_narrow_kernel(i) ? PROG_NARROW : is_wg_kernel(i) ? PROG_WG : PROG_MAIN; }
/* The optional tensor-core kernels a build goes without: the program's check and each
 * context's kernel objects skip the same ones. */
static int option_kernel_off(int i, int att_tc, int fa_wide, int mv_mma)
{
    return (is_att_tc_kernel(i) && !att_tc) || (i == K_ATTN_MMA_WIDE && !fa_wide) ||
           ((i == K_MV_MMA || i == K_MV_MMA_BATCH) && !mv_mma);
}
/* matmul_mma's second build, for fused products (q/k/v, gate/up) too small to give
 * every compute unit a 128 x 128 block: 64-token blocks.
 * H200, 512-token prompt: q/k/v at 1.7B 64.4 -> 53.6 us, at 0.6B 36.8 -> 30.0;
 * no gain where the wide blocks fill the device (docs/opencl.md). Measured with
 * the matmul_mma before its weights went to registers; not measured again since. */
#define NARROW_BT 64

#define PROF_SLOTS 32
#define PROF_PENDING 4096
typedef struct {
    int kind;
    cl_uint rows, cols;
    cl_ulong ns, calls;
} prof_entry;

/* One recorded launch of the single-token (decode) pass. */
#define PLAN_MAX 2048
#define PLAN_BATCH 2 /* plans 0 and 1: single-token passes (ATT_DEEP_POS); 2: a batched step */
#define PLAN_CHAIN 3 /* 3 and 4: plans 0 and 1 chained (matvec_chain) */
#define PLAN_COUNT 5
typedef struct {
    cl_kernel k;
    int kind;
    cl_uint dims;
    size_t global[3], local[3];
    int has_local;
    cl_uint rows, cols;
    int borrowed;         /* k is another entry's (a chained plan's copy): released there */
    cl_ulong mv[MVP_N];   /* a matvec's arguments and grid, its row of a matvec_chain table */
} plan_entry;

/* What the contexts of one model on one device share (q3_backend_impl.shared_create):
 * the device's context, the program built for this model, the uploaded weights. */
typedef struct {
    q3_cl_device d;
    cl_context ctx;
    cl_program program;
    cl_program narrow; /* matmul_mma with NARROW_BT-token blocks, or NULL */
    int narrow_mode;   /* 0 never, 1 where the wide blocks do not fill the device, 2 always (tests) */
    int mma, mma_emulate, verbose;
    int att_tc; /* decode attention on tensor cores (attention_tc, attention_batch_tc) */
    int att_once; /* ... attention_tc combines a token's splits itself, not o_proj (Q3_OPENCL_ATT_ONCE=0: o_proj) */
    cl_uint att_tc_wg; /* ... their work-group size (ATT_TC_WG) */
    int fa_wide;       /* the narrow program's attention_mma (FA_WIDE_WG) for long prompt passes */
    int mv_mma;        /* decode products on tensor cores (matvec_mma; Q3_OPENCL_MV_MMA=1) */
    cl_program wgp;    /* the wgmma program (matmul_wg, matmul_wg_glu), or NULL */
    int wgmma;         /* prompt GEMMs by wgmma (Q3_OPENCL_WGMMA=1, being measured): wgp built */
    cl_uint att_hg, att_splits[2], mvx, mm_br, mm_bt, mm_wg, mm_rp, fa_wg;
    cl_uint mm_ksplit;  /* tuning: every lone matrix's column split (Q3_OPENCL_MM_KSPLIT), 0: chosen */
    int mm_tail;        /* gate/up's tail split over the columns: -1 chosen, 0 never, N its last N row blocks (Q3_OPENCL_MM_TAIL) */
    cl_uint mvb_r;      /* matvec_batch: rows a thread, items a work-group (MVB_R) */
    int mm_token_major; /* matmul_mma's grid: token blocks in dimension 0 (MM_TOKEN_MAJOR) */
    int mm_glu, mm_defer; /* matmul_mma stores silu(gate) up itself; rmsnorm adds split sums (mm_gemm's MMG_*) */
    uint64_t pf_cap;    /* matvec's L2 prefetch of the next launch's weights, the most bytes */
    char *chain_trace; /* Q3_OPENCL_CHAIN_TRACE, read once (a copy): the program stamps (-DCHAIN_TRACE)
                        * and every context reserves the stamps' room and writes them to this file */
    cl_mem weights;
    uint64_t w_base;
    cl_ulong max_alloc;
    uint64_t act_align;
    size_t mv_groups;
} ocl_shared;

typedef struct {
    q3_backend base;
    q3_weights w;   /* a copy of the model's binding (its layers array stays the model's) */
    q3_config cfg;
    /* ctx, program, weights, w_base and the values the program is built for are the
     * shared ones (ocl_shared), copied */
    cl_context ctx;
    cl_command_queue queue;
    cl_program program, narrow; /* narrow: K_MM_MMA64's, or NULL */
    int narrow_mode;
    cl_uint compute_units;
    cl_kernel k[K_COUNT];
    int mma; /* matmul_mma (NVIDIA tensor cores) for prompts instead of matmul_gemm */
    int mma_emulate; /* Q3_OPENCL_MMA=emulate: the same kernels without PTX (tests on PoCL) */
    int att_tc;      /* decode attention on tensor cores (ocl_shared's) */
    int att_once;    /* ... combining its splits (ocl_shared's) */
    cl_uint att_tc_wg; /* ... their work-group size */
    int fa_wide;       /* K_ATTN_MMA_WIDE built (ocl_shared's) */
    int mv_mma;        /* decode products by matvec_mma (ocl_shared's) */
    cl_program wgp;    /* ocl_shared's */
    int wgmma;         /* prompt GEMMs by matmul_wg (ocl_shared's) */
    int verbose;
    cl_uint att_hg;    /* query heads per decode attention work-group (ATT_HG) */
    cl_uint att_split; /* decode attention: work-groups per query-head group, of the plan being recorded */
    cl_uint att_splits[2]; /* ... of each plan: below ATT_DEEP_POS, and from there on */
    cl_uint mvx;       /* matvec takes matrices of up to mvx columns (MVX) */
    cl_uint mm_br;     /* matmul_mma: rows of a block (MM_BR) */
    cl_uint mm_bt;     /* ... and tokens (MM_BT) */
    cl_uint mm_wg;     /* matmul_mma: its work-group size (MM_WG) */
    cl_uint mm_ksplit; /* ... a fixed column split of lone matrices, or 0 (ocl_shared) */
    int mm_tail;       /* ... gate/up's tail split (ocl_shared) */
    cl_uint mvb_r;     /* matvec_batch: items a work-group (ocl_shared) */
    int mm_token_major; /* ... and its grid's order (ocl_shared) */
    int mm_glu, mm_defer; /* ... gate/up's silu and o_proj/down's split sums (ocl_shared) */
    cl_uint fa_wg;     /* attention_mma: its work-group size (FA_WG; FA_Q = FA_WG / 2 queries) */
    cl_mem weights;    /* the WEIGHTS section */
    uint64_t w_base;   /* its file offset */
    cl_mem x, xn, q, kk, v, att, tmp, gate, up, tokens, logits, att_ml, rope_cos, rope_sin;
    cl_mem att_cnt; /* attention_tc's count of finished splits per work-group column (att_once), zero between launches */
    cl_mem greedy;  /* logits_greedy's (index, logit bits) of each chunk: DEC_BATCH_MAX x GREEDY_CHUNKS */
    cl_int2 greedy_chunks[DEC_BATCH_MAX * GREEDY_CHUNKS]; /* ... read back here */
    cl_mem xb; /* a prompt GEMM's input in BF16, written by its producer (tensor-core path) */
    cl_mem bx; /* a batched decode step's x, each token's staged as matvec stages it: DEC_BATCH_MAX x mvx */
    cl_mem parts; /* split-K partial products: KSPLIT x batch x hidden */
    cl_uint pend_parts, pend_stride; /* parts not yet added to x: the next rmsnorm of x adds them (or flush_parts) */
    /* The buffers above are regions (sub-buffers) of one buffer, act: the decode
     * kernels take act and float offsets instead, since NVIDIA's enqueue costs
     * ~0.3 us of host time per buffer argument, and it runs beside the device. */
    cl_mem act;
    struct {
        cl_mem *buf;
        uint64_t off, bytes;
    } regions[ACT_REGIONS];
    int n_regions;
    uint64_t act_bytes, act_align;
    cl_mem pinned; /* host memory for the logits, mapped until destroy (logits_buffer) */
    float *pinned_map;
    size_t pinned_floats;
    cl_mem *kcache, *vcache; /* per layer, F16 (layouts in qwen3_attention.cl) */
    uint64_t q_dim, kv_dim;
    cl_int *stage; /* [first position, ids...] for m->tokens: base.max_batch + 1 */
    int recording;               /* kern() hands out fresh kernels, launch() records */
    cl_int record_failed;
    plan_entry plan[PLAN_MAX];   /* the single-token passes, arguments set once: */
    int n_plan, plan_start[PLAN_COUNT], plan_len[PLAN_COUNT]; /* plan 0 below ATT_DEEP_POS, plan 1 from there, */
    /* plan 2 (PLAN_BATCH): a batched decode step led by this context (ocl_decode_batch),
     * recorded on its first one; its token count and other contexts' caches are set
     * when they change: for batch_n contexts, these by uid */
    int batching;          /* recording plan 2: mm_small and run_layer take the batch kernels */
    int batch_recorded, batch_unsupported, batch_n;
    unsigned long batch_uid[DEC_BATCH_MAX];
    unsigned long uid;     /* this context, unique in the process (the batch plan's caches) */
    /* plans PLAN_CHAIN + 0 and + 1: plans 0 and 1 with each run of matvec launches in one
     * matvec_chain launch (chain_plan) */
    int chain;             /* single-token passes take the chained plans (Q3_OPENCL_CHAIN) */
    size_t chain_groups;   /* ... whose launches are this many work-groups (all resident at once) */
    cl_mem chain_rows;     /* their tables: plan_entry.mv rows */
    cl_mem chain_sync;     /* their barrier's counts (CHAIN_SYNC_INTS), zero between launches */
    cl_int chain_flag;     /* sync[2] read back after a chained pass: a barrier timed out */
    int chain_pending;     /* ... that read is in flight */
    const char *chain_trace; /* ocl_shared's: the file the stamps go to at the end (a diagnostic), or NULL */
    uint64_t att_trace_ints; /* ... attention_tc's count and stamps, after its counts in att_cnt */
    int profile;    /* Q3_OPENCL_PROFILE=1: events per launch (device time per kernel) */
    int host_timing; /* =1 or =host: the host's time per pass (no events: the pace stays as it is) */
    long n_decode;   /* single-token passes timed */
    double dec_enqueue_ms, dec_read_ms;
    size_t mv_groups; /* matvec grid: about the work-groups resident at once */
    /* matvec's L2 prefetch (decode): the weights the next launch streams first,
     * set by prefetch_next before the matvec that issues it, taken by mm_small */
    cl_ulong pf_off; /* in uint4s from the weights' start */
    cl_uint pf_lines; /* 128-byte lines; 0: none */
    uint64_t pf_cap;  /* the most bytes prefetched (Q3_OPENCL_PREFETCH_MB) */
    double host_enqueue_ms, host_read_ms; /* profile: host time enqueueing, and waiting in the logits read */
    prof_entry prof[PROF_SLOTS];
    int n_prof, n_pending;
    struct {
        cl_event ev;
        int slot;
    } pending[PROF_PENDING];
} ocl_backend;

#define CHECK(call, what)                                                                              \
    do {                                                                                               \
        cl_int rc_ = (call);                                                                           \
        if (rc_ != CL_SUCCESS) {                                                                       \
            q3_set_err(err, "%s: OpenCL: %s failed: %s (%d)", m->base.file->path, what, q3_cl_err_name(rc_), rc_); \
            return -1;                                                                                 \
        }                                                                                              \
    } while (0)

static cl_mem dev_alloc(ocl_backend *m, uint64_t bytes, cl_int *rc)
{
    if (*rc != CL_SUCCESS) return NULL;
    return clCreateBuffer(m->ctx, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, rc);
}

/* Reserves a region of act for *buf, made by act_create. */
static void act_reserve(ocl_backend *m, cl_mem *buf, uint64_t bytes)
{
    uint64_t off = (m->act_bytes + m->act_align - 1) / m->act_align * m->act_align;
    m->regions[m->n_regions].buf = buf;
    m->regions[m->n_regions].off = off;
    m->regions[m->n_regions++].bytes = bytes ? bytes : 4;
    m->act_bytes = off + (bytes ? bytes : 4);
}

static cl_int act_create(ocl_backend *m)
{
    cl_int rc;
    m->act = clCreateBuffer(m->ctx, CL_MEM_READ_WRITE, m->act_bytes, NULL, &rc);
    for (int i = 0; i < m->n_regions && rc == CL_SUCCESS; i++) {
        cl_buffer_region r = {m->regions[i].off, m->regions[i].bytes};
        *m->regions[i].buf = clCreateSubBuffer(m->act, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, &rc);
    }
    return rc;
}

/* Where a region starts in act, in floats (regions are 4-byte aligned at least). */
static cl_ulong aoff(const ocl_backend *m, cl_mem buf)
{
    for (int i = 0; i < m->n_regions; i++)
        if (*m->regions[i].buf == buf) return (cl_ulong)(m->regions[i].off / 4);
    return 0; /* every buffer the decode kernels take is a region */
}

/* A token's decode attention leaves its partial outputs and (max, sum) for up to
 * the larger split count of the two plans: floats per token of att and att_ml in a
 * batched step (rows of those regions). */
static cl_ulong most_splits(const ocl_backend *m)
{
    return m->att_splits[0] > m->att_splits[1] ? m->att_splits[0] : m->att_splits[1];
}
static cl_ulong att_rows_ld(const ocl_backend *m) { return most_splits(m) * m->q_dim; }
static cl_ulong att_ml_ld(const ocl_backend *m) { return most_splits(m) * m->cfg.num_heads * 2; }

static cl_uint round_up(cl_uint v, cl_uint to) { return (v + to - 1) / to * to; }

/* matvec stages the whole x in local memory: its stage is sized for the widest
 * matrix the model multiplies by one token (down_proj's intermediate size),
 * as far as the device's local memory allows; wider ones take matmul_small. */
static cl_uint matvec_cols(const q3_config *c, cl_ulong local_bytes)
{
    cl_uint widest = c->intermediate_size > c->hidden_size ? c->intermediate_size : c->hidden_size;
    cl_uint qd = c->num_heads * c->head_dim;
    widest = round_up(widest > qd ? widest : qd, 1024);
    cl_ulong fits = local_bytes > MVX_LOCAL_SPARE ? (local_bytes - MVX_LOCAL_SPARE) / 4 / 1024 * 1024 : 0;
    if (fits < 1024) fits = 1024;
    return widest < fits ? widest : (cl_uint)fits;
}

/* The normalised x (XMODE_NORM) is the hidden state: its registers are sized for that. */
static cl_uint norm_cols(const q3_config *c, cl_uint mvx)
{
    cl_uint h = round_up(c->hidden_size, 1024);
    return h < mvx ? h : mvx;
}
static cl_uint matvec_norm_cols(const ocl_backend *m) { return norm_cols(&m->cfg, m->mvx); }

/* The wgmma program's second build: its PTX (the build from source) with the marked
 * wgmma instructions unmarked and retargeted to sm_90a (runtime/ocl_ptx.h), built
 * again from that binary in place of *prog. */
static int rebuild_sm90a(ocl_shared *sh, const q3_file *f, cl_program *prog, const char *opts, q3_err *err)
{
    cl_int rc = CL_SUCCESS;
    int r = q3_cl_program_to_sm90a(sh->ctx, sh->d.id, prog, opts, &rc);
    if (r == -1) {
        q3_set_err(err, "%s: OpenCL: the program's PTX is not for sm_90 (wgmma needs a Hopper GPU)", f->path);
        return -1;
    }
    if (r) {
        char log[1024] = "";
        if (*prog) clGetProgramBuildInfo(*prog, sh->d.id, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        for (char *p = log; *p; p++)
            if (*p == '\n') *p = ' ';
        q3_set_err(err, "%s: OpenCL: the sm_90a PTX did not build: %s (%d) %.300s", f->path, q3_cl_err_name(rc), rc, log);
        return -1;
    }
    return 0;
}

/* Builds a shared program, *prog, from the kernels' sources for the model, with
 * bt-token matmul_mma blocks, fa_wg-thread attention_mma and the options in more,
 * and checks that the device runs each kernel it will create (which: PROG_NARROW
 * only is_narrow_kernel's, PROG_WG only is_wg_kernel's, their PTX retargeted to
 * sm_90a) at its group size; each context then creates its own kernel objects. */
static int build_one(ocl_shared *sh, const q3_file *f, cl_program *prog, cl_uint bt, cl_uint fa_wg, const char *more,
                     int which, q3_err *err)
{
    const q3_config *c = &f->config;
    cl_device_id dev = sh->d.id;
    const char *srcs[16];
    cl_uint n = 0;
    for (const q3_cl_source *s = q3_cl_sources; s->name && n < 16; s++) srcs[n++] = s->text;
    cl_int rc;
    *prog = clCreateProgramWithSource(sh->ctx, n, srcs, NULL, &rc);
    if (rc != CL_SUCCESS) {
        q3_set_err(err, "%s: OpenCL: clCreateProgramWithSource failed: %s (%d)", f->path, q3_cl_err_name(rc), rc);
        return -1;
    }
    /* Q3_OPENCL_BUILD_OPTS: more options for the OpenCL compiler (tuning and
     * bisection, e.g. -DMM_STAGES=3 or -DQ3_EMU_CP; docs/opencl.md) */
    const char *extra = getenv("Q3_OPENCL_BUILD_OPTS");
    char opts[512];
    snprintf(opts, sizeof opts,
             "-cl-std=CL1.2 -DHEAD_DIM=%u -DATT_HG=%u -DMVX=%u -DMVX_NORM=%u -DMM_BT=%u -DMM_WG=%u -DMM_RP=%u -DFA_WG=%u -DMVB_R=%u "
             "-DATT_TC_WG=%u%s%s%s%s %s",
             c->head_dim, sh->att_hg, sh->mvx, norm_cols(c, sh->mvx), bt, sh->mm_wg, sh->mm_rp, fa_wg, sh->mvb_r,
             sh->att_tc_wg,
             sh->mma ? (sh->mma_emulate ? " -DQ3_NV_MMA -DQ3_MMA_EMULATE" : " -DQ3_NV_MMA") : "",
             sh->mm_token_major ? " -DMM_TOKEN_MAJOR" : "", sh->chain_trace ? " -DCHAIN_TRACE" : "",
             more, extra ? extra : "");
    rc = clBuildProgram(*prog, 1, &dev, opts, NULL, NULL);
    if (rc != CL_SUCCESS) {
        char log[4096] = "";
        clGetProgramBuildInfo(*prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        for (char *p = log; *p; p++)
            if (*p == '\n') *p = ' '; /* one line */
        q3_set_err(err, "%s: OpenCL: building the kernels (kernels/*.cl) failed: %.400s", f->path, log);
        return -1;
    }
    if (which == PROG_WG && !sh->mma_emulate && rebuild_sm90a(sh, f, prog, extra ? extra : "", err)) return -1;
    if (sh->verbose > 1) { /* -v -v: the compiler's log (NVIDIA with -cl-nv-verbose: registers per kernel) */
        size_t len = 0;
        clGetProgramBuildInfo(*prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
        char *log = len ? malloc(len + 1) : NULL;
        if (log && clGetProgramBuildInfo(*prog, dev, CL_PROGRAM_BUILD_LOG, len, log, NULL) == CL_SUCCESS) {
            log[len] = 0;
            fprintf(stderr, "q3: build log (%s):\n%s\n", opts, log);
        }
        free(log);
    }
    for (int i = 0; i < K_COUNT; i++) {
        if ((is_mma_kernel(i) && !sh->mma) || which != program_of_kernel(i) || (is_glu_kernel(i) && sh->mm_rp != 2) ||
            option_kernel_off(i, sh->att_tc, sh->fa_wide, sh->mv_mma))
            continue;
        cl_kernel k = clCreateKernel(*prog, kernel_names[i], &rc);
        if (rc != CL_SUCCESS) {
            q3_set_err(err, "%s: OpenCL: kernel '%s' missing from the program: %s", f->path, kernel_names[i],
                       q3_cl_err_name(rc));
            return -1;
        }
        /* What this device allows this kernel (registers, local memory), not what
         * OpenCL 1.2 promises in general: the launches use fixed group sizes. */
        size_t max_wg = 0;
        cl_ulong local_used = 0, local_have = 0, priv = 0;
        clGetKernelWorkGroupInfo(k, dev, CL_KERNEL_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
        clGetKernelWorkGroupInfo(k, dev, CL_KERNEL_LOCAL_MEM_SIZE, sizeof local_used, &local_used, NULL);
        clGetKernelWorkGroupInfo(k, dev, CL_KERNEL_PRIVATE_MEM_SIZE, sizeof priv, &priv, NULL);
        clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local_have, &local_have, NULL);
        clReleaseKernel(k);
        unsigned want_wg = i == K_MM_MMA || is_glu_kernel(i) || i == K_MM_MMA64 || is_wg_kernel(i) ? sh->mm_wg
                           : i == K_ATTN_MMA || i == K_ATTN_MMA_WIDE            ? fa_wg
                           : is_att_tc_kernel(i)                                ? sh->att_tc_wg
                                                                                : kernel_group_size[i];
        if (max_wg < want_wg || (local_have && local_used > local_have)) {
            q3_set_err(err,
                       "%s: OpenCL: kernel '%s' needs work-groups of %u and %llu bytes of local memory; the device "
                       "allows %zu and has %llu",
                       f->path, kernel_names[i], want_wg, (unsigned long long)local_used, max_wg,
                       (unsigned long long)local_have);
            return -1;
        }
        if (sh->verbose > 1) /* -v -v: what each kernel takes (private memory: register spills) */
            fprintf(stderr, "q3: kernel %-18s local %6llu B, private %5llu B, up to %zu work-items\n", kernel_names[i],
                    (unsigned long long)local_used, (unsigned long long)priv, max_wg);
    }
    return 0;
}

/* The program, and where the narrow blocks or the wide prompt attention may be
 * used, the narrow build: matmul_mma of NARROW_BT-token blocks and attention_mma of
 * FA_WIDE_WG threads (not having it only costs speed: its failure is not one). */
static int build_program(ocl_shared *sh, const q3_file *f, q3_err *err)
{
    if (build_one(sh, f, &sh->program, sh->mm_bt, sh->fa_wg, "", PROG_MAIN, err)) return -1;
    if (sh->wgmma) {
        q3_err wg_err = {{0}};
        if (build_one(sh, f, &sh->wgp, sh->mm_bt, sh->fa_wg, " -DQ3_WGMMA", PROG_WG, &wg_err)) {
            if (sh->mma_emulate) { /* tests: the emulation must build */
                *err = wg_err;
                return -1;
            }
            if (sh->verbose) fprintf(stderr, "q3: wgmma matmul did not build (%s)\n", wg_err.msg);
            if (sh->wgp) clReleaseProgram(sh->wgp);
            sh->wgp = NULL;
            sh->wgmma = 0;
        }
    }
    if (!sh->mma || (!sh->narrow_mode && !sh->fa_wide)) return 0;
    q3_err narrow_err = {{0}};
    if (build_one(sh, f, &sh->narrow, NARROW_BT, FA_WIDE_WG, "", PROG_NARROW, &narrow_err)) {
        if (sh->mma_emulate) { /* tests: the emulation must build every variant */
            *err = narrow_err;
            return -1;
        }
        if (sh->verbose) fprintf(stderr, "q3: narrow matmul_mma did not build (%s)\n", narrow_err.msg);
        if (sh->narrow) clReleaseProgram(sh->narrow);
        sh->narrow = NULL;
        sh->fa_wide = 0;
    }
    return 0;
}

/* The program kernel i comes from. */
static cl_program program_of(const ocl_backend *m, int i)
{
    int p = program_of_kernel(i);
    return p == PROG_NARROW ? m->narrow : p == PROG_WG ? m->wgp : m->program;
}

/* This context's kernel objects (clSetKernelArg is not safe across threads on one kernel). */
static int create_kernels(ocl_backend *m, q3_err *err)
{
    for (int i = 0; i < K_COUNT; i++) {
        if ((is_mma_kernel(i) && !m->mma) || (is_narrow_kernel(i) && !m->narrow) || (is_wg_kernel(i) && !m->wgmma) ||
            ((is_glu_kernel(i) || i == K_MM_WG_GLU) && !m->mm_glu) || option_kernel_off(i, m->att_tc, m->fa_wide, m->mv_mma) ||
            i == K_MV_CHAIN) /* matvec_chain: only the chained plans launch it, each on its own (chain_plan) */
            continue;
        cl_int rc;
        m->k[i] = clCreateKernel(program_of(m, i), kernel_names[i], &rc);
        CHECK(rc, kernel_names[i]);
    }
    return 0;
}

/* Offset of a tensor inside the weights buffer, in units of `unit` bytes. */
static cl_ulong woff(const ocl_backend *m, const q3_tensor *t, unsigned unit)
{
    return (cl_ulong)((t->offset - m->w_base) / unit);
}

#define ARG(kern, i, v) clSetKernelArg(kern, i, sizeof(v), &(v))

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Q3_OPENCL_PROFILE=1: device time per kernel (matmuls by shape), printed on
 * stderr when the backend is destroyed. Off: no events are created. */
static int prof_slot(ocl_backend *m, int kind, cl_uint rows, cl_uint cols)
{
    for (int i = 0; i < m->n_prof; i++)
        if (m->prof[i].kind == kind && m->prof[i].rows == rows && m->prof[i].cols == cols) return i;
    if (m->n_prof == PROF_SLOTS) return PROF_SLOTS - 1;
    m->prof[m->n_prof] = (prof_entry){kind, rows, cols, 0, 0};
    return m->n_prof++;
}

static void prof_collect(ocl_backend *m)
{
    for (int i = 0; i < m->n_pending; i++) {
        cl_ulong t0 = 0, t1 = 0;
        clGetEventProfilingInfo(m->pending[i].ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        clGetEventProfilingInfo(m->pending[i].ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
        m->prof[m->pending[i].slot].ns += t1 - t0;
        m->prof[m->pending[i].slot].calls++;
        clReleaseEvent(m->pending[i].ev);
    }
    m->n_pending = 0;
}

static void prof_print(ocl_backend *m)
{
    double total = 0;
    for (int i = 0; i < m->n_prof; i++) total += (double)m->prof[i].ns;
    fprintf(stderr, "q3 opencl profile: %.3f ms device time in all; host: %.3f ms enqueueing, %.3f ms in logits reads\n",
            total / 1e6, m->host_enqueue_ms, m->host_read_ms);
    for (int i = 0; i < m->n_prof; i++) {
        const prof_entry *e = &m->prof[i];
        fprintf(stderr, "  %-14s %6u x %-6u %8llu calls %10.3f ms %5.1f%% %8.2f us/call\n", kernel_names[e->kind],
                e->rows, e->cols, (unsigned long long)e->calls, (double)e->ns / 1e6, 100.0 * (double)e->ns / total,
                (double)e->ns / 1e3 / (double)e->calls);
    }
}

/* The kernel object a helper sets its arguments on: the shared one, or while
 * recording the decode plan a fresh one whose arguments then never change. */
static cl_kernel kern(ocl_backend *m, int kind)
{
    if (!m->recording) return m->k[kind];
    cl_int rc;
    cl_kernel k = clCreateKernel(program_of(m, kind), kernel_names[kind], &rc);
    if (rc != CL_SUCCESS) m->record_failed = rc;
    return k;
}

/* Every kernel goes through here, so profiling sees all of them. */
static int launch(ocl_backend *m, cl_kernel k, int kind, cl_uint dims, const size_t *global, const size_t *local,
                  cl_uint rows, cl_uint cols, q3_err *err)
{
    if (m->recording) {
        if (!k || m->n_plan == PLAN_MAX) {
            if (k) clReleaseKernel(k);
            m->record_failed = m->record_failed ? m->record_failed : CL_OUT_OF_HOST_MEMORY;
            return 0;
        }
        plan_entry *e = &m->plan[m->n_plan++];
        *e = (plan_entry){k, kind, dims, {1, 1, 1}, {1, 1, 1}, local != NULL, rows, cols, 0, {0}};
        for (cl_uint d = 0; d < dims && d < 3; d++) {
            e->global[d] = global[d];
            if (local) e->local[d] = local[d];
        }
        return 0;
    }
    cl_event ev = NULL, *evp = m->profile ? &ev : NULL;
    if (m->profile && m->n_pending == PROF_PENDING) prof_collect(m); /* waits on finished events */
    CHECK(clEnqueueNDRangeKernel(m->queue, k, dims, NULL, global, local, 0, NULL, evp), kernel_names[kind]);
    if (m->profile) {
        m->pending[m->n_pending].ev = ev;
        m->pending[m->n_pending++].slot = prof_slot(m, kind, rows, cols);
    }
    return 0;
}

/* Replays a recorded single-token pass: no argument is set, only enqueues. */
static int run_plan(ocl_backend *m, int which, q3_err *err)
{
    for (int i = m->plan_start[which]; i < m->plan_start[which] + m->plan_len[which]; i++) {
        const plan_entry *e = &m->plan[i];
        if (launch(m, e->k, e->kind, e->dims, e->global, e->has_local ? e->local : NULL, e->rows, e->cols, err))
            return -1;
    }
    return 0;
}

/* One matrix of a matmul_small launch: weights, where its rows go. */
typedef struct {
    const q3_tensor *t;
    cl_mem y;
    cl_uint ld;
} mm_seg;

/* What the next decode launch streams first, for the matvec about to be set up
 * to prefetch into L2 as it ends (kernels/qwen3.cl, prefetch_l2): the span of
 * ts[0..n) where they lie one after another in the file (the writer's table
 * order: q, k, v; gate, up), else ts[0] alone; at most pf_cap bytes. */
static void prefetch_next(ocl_backend *m, const q3_tensor *const *ts, int n)
{
    uint64_t lo = ts[0]->offset, hi = lo + ts[0]->size;
    for (int i = 1; i < n && ts[i]->offset >= hi && ts[i]->offset - hi < Q3_TENSOR_ALIGN; i++)
        hi = ts[i]->offset + ts[i]->size;
    uint64_t bytes = hi - lo < m->pf_cap ? hi - lo : m->pf_cap;
    m->pf_off = (cl_ulong)((lo - m->w_base) / 16);
    m->pf_lines = (cl_uint)(bytes / 128);
}

/* matvec's and matmul_small's argument n_tok: a batched step sets it when its
 * token count changes (run_batch_plan). */
#define MV_ARG_NTOK 9

/* A batched decode step's x for a product that matvec would run: each token's
 * (rows ldx floats apart; XMODE_ATTN: its attention's rows, att_rows_ld and
 * att_ml_ld) staged by matvec_stage as matvec stages it, into m->bx, mvx floats
 * a token. One work-group per token (run_batch_plan sets how many). */
static int stage_batch(ocl_backend *m, cl_uint cols, cl_mem x, cl_mem x2, cl_uint ldx, cl_uint xmode,
                       const q3_tensor *norm, cl_uint out_bf16, q3_err *err)
{
    cl_kernel k = kern(m, K_MV_STAGE);
    cl_ulong x_off = aoff(m, x), x2_off = aoff(m, x2), norm_off = norm ? woff(m, norm, 2) : 0;
    cl_ulong x_ld = xmode == XMODE_ATTN ? att_rows_ld(m) : ldx, x2_ld = xmode == XMODE_ATTN ? att_ml_ld(m) : ldx;
    cl_ulong stage_off = aoff(m, m->tokens), out_off = aoff(m, m->bx), out_ld = m->mvx;
    cl_float eps = (cl_float)m->cfg.rms_norm_eps;
    cl_int rc = ARG(k, 0, m->weights) | ARG(k, 1, cols) | ARG(k, 2, m->act) | ARG(k, 3, x_off) | ARG(k, 4, x2_off) |
                ARG(k, 5, x_ld) | ARG(k, 6, x2_ld) | ARG(k, 7, xmode) | ARG(k, 8, norm_off) | ARG(k, 9, eps) |
                ARG(k, 10, stage_off) | ARG(k, 11, out_off) | ARG(k, 12, out_ld) | ARG(k, 13, out_bf16);
    CHECK(rc, "setting matvec_stage arguments");
    size_t global = MV_WG, local = MV_WG;
    return launch(m, k, K_MV_STAGE, 1, &global, &local, 0, cols, err);
}

/* W x for n_tok tokens through matmul_small: up to three matrices sharing x (and
 * cols). xmode: XMODE_NORM normalises x with norm first, XMODE_SILU takes
 * silu(x) * x2; ymode: MODE_STORE or MODE_ADD. Recording a batched step
 * (m->batching): matvec's products stage each token's x, then stream the
 * weights once for all (matvec_batch); matmul_small's take every token (each
 * token's rows are the bits of a launch of its own), but cannot combine the
 * attention splits of more than one. */
static int mm_small(ocl_backend *m, const mm_seg *segs, int n_segs, cl_mem x, cl_mem x2, cl_uint ldx, cl_uint xmode,
                    const q3_tensor *norm, cl_uint n_tok, cl_uint ymode, cl_uint nsplit, q3_err *err)
{
    cl_uint cols = (cl_uint)segs[0].t->shape[1];
    /* One token: matvec, where x fits its stage and the attention weights its 256 threads. */
    int vec = n_tok == 1 && cols <= m->mvx && cols % 32 == 0 && (xmode != XMODE_NORM || cols <= matvec_norm_cols(m));
    int kind = vec ? K_MATVEC : K_MM_SMALL;
    if (m->batching && !vec && xmode == XMODE_ATTN) m->batch_unsupported = 1;
    if (m->batching && vec) { /* matvec_mma: each token's x in BF16, mvx apart */
        if (stage_batch(m, cols, x, x2, ldx, xmode, norm, (cl_uint)m->mv_mma, err)) return -1;
        kind = m->mv_mma ? K_MV_MMA_BATCH : K_MV_BATCH, x = x2 = m->bx, ldx = m->mvx;
        if (m->mv_mma) xmode = XMODE_BF16;
    } else if (vec && m->mv_mma)
        kind = K_MV_MMA;
    cl_kernel k = kern(m, kind);
    cl_ulong norm_off = norm ? woff(m, norm, 2) : 0;
    cl_float eps = (cl_float)m->cfg.rms_norm_eps;
    cl_ulong x_off = aoff(m, x), x2_off = aoff(m, x2);
    cl_uint eps_bits;
    memcpy(&eps_bits, &eps, sizeof eps_bits);
    cl_int rc = ARG(k, 0, m->weights) | ARG(k, 1, cols) | ARG(k, 2, m->act) | ARG(k, 3, x_off) | ARG(k, 4, x2_off) |
                ARG(k, 5, ldx) | ARG(k, 6, xmode) | ARG(k, 7, norm_off) | ARG(k, 8, eps) | ARG(k, 9, n_tok) |
                ARG(k, 10, ymode);
    /* the same arguments as a row of matvec_chain's table (MVP_*, qwen3_shared.h) */
    cl_ulong row[MVP_N] = {[MVP_COLS] = cols, [MVP_X_OFF] = x_off, [MVP_X2_OFF] = x2_off, [MVP_LDX] = ldx,
                           [MVP_XMODE] = xmode, [MVP_NORM_OFF] = norm_off, [MVP_EPS] = eps_bits,
                           [MVP_NTOK] = n_tok, [MVP_YMODE] = ymode};
    size_t panels = 0;
    cl_uint rows_all = 0;
    for (int i = 0; i < 3; i++) {
        const mm_seg *sg = &segs[i < n_segs ? i : 0];
        cl_ulong off = woff(m, sg->t, 16);
        cl_uint rows = i < n_segs ? (cl_uint)sg->t->shape[0] : 0;
        cl_ulong y_off = aoff(m, sg->y);
        rc |= ARG(k, 13 + 4 * i, off) | ARG(k, 14 + 4 * i, rows) | ARG(k, 15 + 4 * i, y_off) |
              ARG(k, 16 + 4 * i, sg->ld);
        row[MVP_OFF0 + 4 * i] = off, row[MVP_ROWS0 + 4 * i] = rows, row[MVP_Y0 + 4 * i] = y_off;
        row[MVP_LD0 + 4 * i] = sg->ld;
        panels += (rows + 15) / 16;
        rows_all += rows;
    }
    /* Few panels (o_proj, down_proj): 2 or 4 work-groups per panel, so that at
     * least 256 are in flight. (Choosing the split that fills matvec's rounds
     * best was tried: Qwen3-4B decode 280 -> 260 tok/s; docs/opencl.md.) */
    cl_uint rsplit = kind == K_MV_MMA || kind == K_MV_MMA_BATCH || panels >= 256 ? 1 : panels >= 128 ? 2 : 4; /* matvec_mma: whole panels */
    rc |= ARG(k, 11, rsplit) | ARG(k, 12, nsplit) | ARG(k, 25, m->pf_off) | ARG(k, 26, m->pf_lines);
    row[MVP_RSPLIT] = rsplit, row[MVP_NSPLIT] = nsplit, row[MVP_PF_OFF] = m->pf_off, row[MVP_PF_LINES] = m->pf_lines;
    m->pf_off = 0, m->pf_lines = 0; /* one launch's */
    CHECK(rc, "setting matmul_small arguments");
    /* (panel, part) items a work-group at once: matvec_batch's MVB_R, else 1; capped, a stride
     * of cap x items keeps each work-group's parts */
    size_t per_group = kind == K_MV_BATCH ? m->mvb_r : 1, groups = (panels * rsplit + per_group - 1) / per_group;
    size_t cap = m->mv_groups < rsplit ? rsplit : m->mv_groups / rsplit * rsplit; /* a multiple of rsplit */
    if (vec && groups > cap) groups = cap;
    size_t global[2] = {groups * MV_WG, (size_t)((n_tok + TOKB - 1) / TOKB)}, local[2] = {MV_WG, 1};
    int n_before = m->n_plan;
    if (launch(m, k, kind, 2, global, local, rows_all, cols, err)) return -1;
    if (kind == K_MATVEC && m->recording && m->n_plan > n_before) { /* a single-token pass's: chain_plan's row */
        row[MVP_GROUPS] = groups;
        memcpy(m->plan[m->n_plan - 1].mv, row, sizeof row);
    }
    return 0;
}

/* The column split of a lone matrix of few row blocks (o_proj, down_proj) whose
 * blocks number n: the count (1 to KSPLIT, each split keeping 8 column steps or
 * more) with the fewest rounds of resident work-groups (MM_PER_CU a compute
 * unit) per share of the work, the smaller on a tie (add_parts costs a pass).
 * Qwen3-4B's o_proj at 512 tokens, 80 blocks on 132 units: 3 splits, 240
 * work-groups in one round, where doubling to 4 made 320 in two. */
static size_t mm_ksplit(const ocl_backend *m, size_t n, size_t steps)
{
    if (m->mm_ksplit) return m->mm_ksplit <= steps ? m->mm_ksplit : 1;
    size_t slots = (size_t)m->compute_units * MM_PER_CU, best = 1, best_rounds = (n + slots - 1) / slots;
    for (size_t ks = 2; ks <= KSPLIT && steps / ks >= 8; ks++) {
        size_t rounds = (n * ks + slots - 1) / slots;
        if (rounds * best < best_rounds * ks) best = ks, best_rounds = rounds;
    }
    return best;
}

/* y (+)= the sum of np partial products in m->parts (stride floats apart, rows
 * a token), in a fixed order: add_parts. cols: the product's, for the profile. */
static int add_parts(ocl_backend *m, cl_uint np, cl_uint stride, cl_mem y, cl_uint ld, cl_uint rows, cl_uint add,
                     cl_uint n_tok, cl_uint cols, q3_err *err)
{
    cl_kernel k = kern(m, K_ADD_PARTS);
    cl_int rc = ARG(k, 0, m->parts) | ARG(k, 1, np) | ARG(k, 2, stride) | ARG(k, 3, y) | ARG(k, 4, ld) |
                ARG(k, 5, rows) | ARG(k, 6, add);
    CHECK(rc, "setting add_parts arguments");
    size_t ga[2] = {rows, n_tok};
    return launch(m, k, K_ADD_PARTS, 2, ga, NULL, rows, cols, err);
}

/* x += the pending partial products of a split GEMM, where no rmsnorm of x
 * comes to add them. */
static int flush_parts(ocl_backend *m, cl_uint n_tok, q3_err *err)
{
    if (!m->pend_parts) return 0;
    cl_uint np = m->pend_parts, H = m->cfg.hidden_size;
    m->pend_parts = 0;
    return add_parts(m, np, m->pend_stride, m->x, H, H, 1, n_tok, 0, err);
}

/* gate/up (matmul_mma_glu) where its last round of blocks would leave compute units idle:
 * the row blocks that fill whole rounds run as they are, the rest (the tail) again split
 * over the columns into ks partial products of gate and up (matmul_mma_glu_parts), which
 * glu_parts_sum adds and turns into silu(gate) up. Qwen3-4B at 512 tokens: 608 blocks on
 * 264 slots took 3 rounds for 2.3 rounds' work (profiled: a round costs the same however
 * full); now 528 blocks in 2 rounds and the last 20 row blocks' 80 as 240 thirds in a
 * third of a round. Returns the tail's row blocks (0: none) and sets *ks; the split must
 * fit m->parts (KSPLIT x batch x hidden floats). */
static size_t glu_tail(const ocl_backend *m, size_t rblocks, size_t tblocks, size_t steps, size_t rows_per_rb,
                       size_t *ks)
{
    size_t slots = (size_t)m->compute_units * MM_PER_CU, total = rblocks * tblocks;
    size_t fits = (size_t)KSPLIT * m->cfg.hidden_size; /* ks x 2 x tail rows at most */
    *ks = 1;
    if (m->mm_tail == 0) return 0;
    if (m->mm_tail > 0) { /* forced (tests): the last mm_tail row blocks, 2 splits (Q3_OPENCL_MM_KSPLIT's, if set) */
        size_t tail = (size_t)m->mm_tail < rblocks ? (size_t)m->mm_tail : rblocks - 1;
        *ks = m->mm_ksplit ? m->mm_ksplit : 2;
        if (*ks > steps) *ks = steps;
        return tail && *ks > 1 && *ks * 2 * tail * rows_per_rb <= fits ? tail : 0;
    }
    size_t head = total / slots * slots / tblocks; /* row blocks within whole rounds */
    if (head == 0 || head >= rblocks) return 0;
    size_t tail = rblocks - head, n = tail * tblocks;
    double before = (double)((total + slots - 1) / slots), head_rounds = (double)((head * tblocks + slots - 1) / slots);
    double best = before - 0.25; /* the gain must pay for glu_parts_sum's pass */
    for (size_t k = 2; k <= KSPLIT && steps / k >= 8 && k * 2 * tail * rows_per_rb <= fits; k++) {
        double after = head_rounds + (double)((n * k + slots - 1) / slots) / (double)k;
        if (after < best) best = after, *ks = k;
    }
    return *ks > 1 ? tail : 0;
}

/* The tail of gate/up (glu_tail): rows from head_rows on, split ks ways into m->parts, then
 * summed into silu(gate) up at the same rows of y (BF16, ld apart). */
static int glu_tail_run(ocl_backend *m, const mm_seg *segs, cl_mem x, cl_uint ldx, cl_uint n_tok, size_t tblocks,
                        size_t tail_rb, cl_uint head_rows, size_t ks, q3_err *err)
{
    cl_uint cols = (cl_uint)segs[0].t->shape[1], rows = (cl_uint)segs[0].t->shape[0] - head_rows;
    cl_ulong shift = (cl_ulong)(head_rows / 16) * ((cols + 31) / 32) * 64; /* head_rows / 16 panels, in uint4s */
    cl_ulong off0 = woff(m, segs[0].t, 16) + shift, off1 = woff(m, segs[1].t, 16) + shift;
    cl_uint zero = 0, ld = 2 * rows, stride = n_tok * 2 * rows;
    cl_kernel k = kern(m, K_MM_MMA_GLU_PARTS);
    cl_int rc = ARG(k, 0, m->weights) | ARG(k, 1, cols) | ARG(k, 2, x) | ARG(k, 3, ldx) | ARG(k, 4, n_tok) |
                ARG(k, 5, zero) | ARG(k, 6, stride);
    for (int i = 0; i < 3; i++) { /* gate's rows (y: the parts), up's (its offset is all the kernel reads) */
        cl_ulong off = i == 1 ? off1 : off0;
        cl_uint n_rows = i < 2 ? rows : zero;
        rc |= ARG(k, 7 + 4 * i, off) | ARG(k, 8 + 4 * i, n_rows) | ARG(k, 9 + 4 * i, m->parts) | ARG(k, 10 + 4 * i, ld);
    }
    CHECK(rc, "setting matmul_mma_glu_parts arguments");
    size_t global[3] = {tail_rb * m->mm_wg, tblocks, ks}, local[3] = {m->mm_wg, 1, 1};
    if (m->mm_token_major) global[0] = tblocks * m->mm_wg, global[1] = tail_rb;
    if (launch(m, k, K_MM_MMA_GLU_PARTS, 3, global, local, 2 * rows, cols, err)) return -1;
    k = kern(m, K_GLU_PARTS_SUM);
    cl_uint np = (cl_uint)ks, ldy = segs[0].ld;
    rc = ARG(k, 0, m->parts) | ARG(k, 1, np) | ARG(k, 2, stride) | ARG(k, 3, rows) | ARG(k, 4, segs[0].y) |
         ARG(k, 5, ldy) | ARG(k, 6, head_rows);
    CHECK(rc, "setting glu_parts_sum arguments");
    size_t ga[2] = {rows, n_tok};
    return launch(m, k, K_GLU_PARTS_SUM, 2, ga, NULL, rows, cols, err);
}

/* How mm_gemm runs a product (bits). MMG_GLU: segs are gate and up, and
 * silu(gate) up goes in BF16 to segs[0].y (not x's buffer: other work-groups
 * still read x), rows segs[0].ld apart (matmul_mma with 2 panels a warp; else
 * gate and up to their y, and mm_gemm returns 1). MMG_DEFER: a split product's sums are left
 * for the next rmsnorm of m->x to add (segs[0].y is m->x, add set). */
#define MMG_GLU 1u
#define MMG_DEFER 2u

/* y (+)= W x for many tokens: matmul_mma on tensor cores, else matmul_gemm; up
 * to three matrices sharing x (and cols). A lone matrix of few row blocks
 * (o_proj, down_proj) on tensor cores is split over the columns into up to
 * KSPLIT partial products that add_parts (or, deferred, rmsnorm) sums, so that
 * enough work-groups run. 0 done, 1 done without MMG_GLU (the caller runs
 * silu_mul), -1 error. */
static int mm_gemm(ocl_backend *m, const mm_seg *segs, int n_segs, cl_mem x, cl_uint ldx, cl_uint n_tok, cl_uint add,
                   unsigned how, q3_err *err)
{
    int kind = m->mma ? K_MM_MMA : K_MM_GEMM; /* x: BF16 (m->xb) for matmul_mma, else f32 */
    size_t br = m->mma ? m->mm_br : GM_R, bt = m->mma ? m->mm_bt : GM_T;
    int glu = (how & MMG_GLU) && m->mma && m->mm_glu && n_segs == 2;
    cl_uint cols = (cl_uint)segs[0].t->shape[1], rows0 = (cl_uint)segs[0].t->shape[0];
    if (flush_parts(m, n_tok, err)) return -1; /* m->parts is rewritten below (not reached: a norm comes between) */
    size_t blocks = 0, tblocks = (n_tok + bt - 1) / bt, ksplit = 1;
    for (int i = 0; i < n_segs; i++) blocks += (segs[i].t->shape[0] + br - 1) / br;
    if (glu) blocks = (rows0 + br / 2 - 1) / (br / 2); /* gate's and up's rows together */
    /* fused products that leave compute units without a block: narrower ones */
    if (m->mma && m->narrow && m->narrow_mode && n_segs > 1 &&
        (m->narrow_mode == 2 || blocks * tblocks < m->compute_units)) {
        kind = K_MM_MMA64, bt = NARROW_BT, tblocks = (n_tok + bt - 1) / bt;
        if (glu) glu = 0, blocks = ((rows0 + br - 1) / br) * 2; /* the narrow program has no matmul_mma_glu */
    } else if (glu)
        kind = K_MM_MMA_GLU;
    if (m->wgmma && (kind == K_MM_MMA || kind == K_MM_MMA_GLU)) /* the same blocks, grid and arguments */
        kind = kind == K_MM_MMA ? K_MM_WG : K_MM_WG_GLU;
    cl_kernel k = kern(m, kind);
    if (m->mma && n_segs == 1 && rows0 <= m->cfg.hidden_size) ksplit = mm_ksplit(m, blocks * tblocks, (cols + 31) / 32);
    size_t tail_ks = 1, tail_rb = kind == K_MM_MMA_GLU ? glu_tail(m, blocks, tblocks, (cols + 31) / 32, br / 2, &tail_ks) : 0;
    blocks -= tail_rb;
    cl_mem y0 = ksplit > 1 ? m->parts : segs[0].y;
    cl_uint ld0 = ksplit > 1 ? rows0 : segs[0].ld, part_stride = n_tok * rows0;
    cl_int rc = ARG(k, 0, m->weights) | ARG(k, 1, cols) | ARG(k, 2, x) | ARG(k, 3, ldx) | ARG(k, 4, n_tok);
    cl_uint add_here = ksplit > 1 ? 0 : add;
    rc |= ARG(k, 5, add_here);
    int a0 = 6;
    if (m->mma) rc |= ARG(k, 6, part_stride), a0 = 7;
    cl_uint rows_all = 0;
    for (int i = 0; i < 3; i++) {
        const mm_seg *sg = &segs[i < n_segs ? i : 0];
        cl_ulong off = woff(m, sg->t, 16);
        cl_uint rows = i < n_segs ? (cl_uint)sg->t->shape[0] : 0;
        cl_mem y = i == 0 ? y0 : sg->y;
        cl_uint ld = i == 0 ? ld0 : sg->ld;
        rc |= ARG(k, a0 + 4 * i, off) | ARG(k, a0 + 1 + 4 * i, rows) | ARG(k, a0 + 2 + 4 * i, y) |
              ARG(k, a0 + 3 + 4 * i, ld);
        rows_all += rows;
    }
    CHECK(rc, "setting matmul arguments");
    size_t wg = m->mma ? m->mm_wg : kernel_group_size[kind];
    size_t global[3] = {blocks * wg, tblocks, ksplit}, local[3] = {wg, 1, 1};
    if (m->mma && m->mm_token_major) global[0] = tblocks * wg, global[1] = blocks;
    if (launch(m, k, kind, 3, global, local, rows_all, cols, err)) return -1;
    if (tail_rb && glu_tail_run(m, segs, x, ldx, n_tok, tblocks, tail_rb, (cl_uint)(blocks * (br / 2)), tail_ks, err))
        return -1;
    if (ksplit > 1) {
        int defer = (how & MMG_DEFER) && m->mm_defer && segs[0].y == m->x && segs[0].ld == rows0 && add &&
                    rows0 == m->cfg.hidden_size;
        if (defer)
            m->pend_parts = (cl_uint)ksplit, m->pend_stride = part_stride;
        else if (add_parts(m, (cl_uint)ksplit, part_stride, segs[0].y, segs[0].ld, rows0, add, n_tok, cols, err))
            return -1;
    }
    return glu ? 0 : 1;
}

/* W x: matmul_small for a few tokens, matmul_gemm for a prompt. */
static int mm(ocl_backend *m, const q3_tensor *t, cl_mem x, cl_uint ldx, cl_mem y, cl_uint ldy, cl_uint n_tok,
              cl_uint add, q3_err *err)
{
    if (n_tok <= SMALL_MAX) {
        mm_seg sg = {t, y, ldy};
        return mm_small(m, &sg, 1, x, x, ldx, XMODE_PLAIN, NULL, n_tok, add ? MODE_ADD : MODE_STORE, 1, err);
    }
    mm_seg sg = {t, y, ldy};
    return mm_gemm(m, &sg, 1, x, ldx, n_tok, add, 0, err) < 0 ? -1 : 0;
}

/* The input buffer of a prompt GEMM, and whether its producer writes it in BF16
 * (the tensor-core GEMM reads BF16 through cp.async; the portable one f32). */
static cl_mem gemm_in(const ocl_backend *m, cl_mem f32) { return m->mma ? m->xb : f32; }

static int run_norm(ocl_backend *m, cl_mem x, const q3_tensor *w, cl_mem out, cl_uint n_tok, q3_err *err)
{
    cl_kernel k = kern(m, K_NORM);
    cl_ulong off = woff(m, w, 2);
    cl_uint n = (cl_uint)w->shape[0], bf = out == m->xb;
    cl_float eps = (cl_float)m->cfg.rms_norm_eps;
    if (x != m->x && flush_parts(m, n_tok, err)) return -1;
    cl_uint np = x == m->x ? m->pend_parts : 0; /* a split product's sums, added to x here */
    cl_int rc = ARG(k, 0, x) | ARG(k, 1, m->weights) | ARG(k, 2, off) | ARG(k, 3, out) | ARG(k, 4, n) | ARG(k, 5, eps) |
                ARG(k, 6, bf) | ARG(k, 7, m->parts) | ARG(k, 8, np) | ARG(k, 9, m->pend_stride);
    CHECK(rc, "setting rmsnorm arguments");
    m->pend_parts = 0;
    size_t global = (size_t)n_tok * NORM_WG, local = NORM_WG;
    return launch(m, k, K_NORM, 1, &global, &local, n, 0, err);
}

/* silu(gate) * up over n values (a prompt's down_proj input), into gate or, in
 * BF16, into m->xb. */
static int silu_mul(ocl_backend *m, size_t n, q3_err *err)
{
    cl_kernel k = kern(m, K_SILU);
    cl_uint bf = m->mma;
    CHECK(ARG(k, 0, m->gate) | ARG(k, 1, m->up) | ARG(k, 2, m->xb) | ARG(k, 3, bf), "setting silu_mul arguments");
    size_t pairs = n / 2;
    return launch(m, k, K_SILU, 1, &pairs, NULL, 0, 0, err);
}

/* attention_batch's own arguments (after attention's): the rows of each token's
 * partial outputs, and layer l's caches of the n contexts of a batched step (the
 * slots past n take the first's: every argument must be set). */
#define ATT_ARG_OUT_LD 19
#define ATT_ARG_K1 (ATT_ARG_OUT_LD + 2)
#define ATT_ARG_V1 (ATT_ARG_K1 + DEC_BATCH_MAX - 1)
static int batch_attention_args(ocl_backend *m, cl_kernel k, uint32_t l, q3_backend *const *bs, int n, q3_err *err)
{
    cl_ulong out_ld = att_rows_ld(m), ml_ld = att_ml_ld(m);
    cl_int rc = ARG(k, ATT_ARG_OUT_LD, out_ld) | ARG(k, ATT_ARG_OUT_LD + 1, ml_ld);
    for (int i = 0; i < DEC_BATCH_MAX; i++) {
        const ocl_backend *s = (const ocl_backend *)bs[i < n ? i : 0];
        rc |= i == 0 ? ARG(k, 1, s->kcache[l]) | ARG(k, 2, s->vcache[l])
                     : ARG(k, ATT_ARG_K1 + i - 1, s->kcache[l]) | ARG(k, ATT_ARG_V1 + i - 1, s->vcache[l]);
    }
    CHECK(rc, "setting attention_batch arguments");
    return 0;
}

/* One layer on m->x (the residual stream, updated in place). A few tokens: six
 * launches (norms fused into the projections, residual adds into o_proj and
 * down_proj, SiLU into gate/up); a prompt: GEMMs with separate norms. */
static int run_layer(ocl_backend *m, uint32_t l, cl_uint n_tok, q3_err *err)
{
    const q3_layer_weights *L = &m->w.layers[l];
    const q3_config *c = &m->cfg;
    cl_uint nq = c->num_heads, nkv = c->num_kv_heads, n_ctx = (cl_uint)m->base.n_ctx;
    cl_uint qd = (cl_uint)m->q_dim, kvd = (cl_uint)m->kv_dim, H = c->hidden_size, I = c->intermediate_size;
    cl_float eps = (cl_float)c->rms_norm_eps;
    int small = n_tok <= SMALL_MAX;
    int one = n_tok == 1;
    if (small && flush_parts(m, n_tok, err)) return -1; /* (a pass keeps its size: not reached) */
    if (small) {
        mm_seg qkv[3] = {{L->wq, m->q, qd}, {L->wk, m->kk, kvd}, {L->wv, m->v, kvd}};
        if (one) prefetch_next(m, &L->slot[Q3_QWEN3_WO], 1); /* o_proj: it streams during attention */
        if (mm_small(m, qkv, 3, m->x, m->x, H, XMODE_NORM, L->input_norm, n_tok, MODE_STORE, 1, err)) return -1;
    } else {
        mm_seg qkv[3] = {{L->wq, m->q, qd}, {L->wk, m->kk, kvd}, {L->wv, m->v, kvd}};
        if (run_norm(m, m->x, L->input_norm, gemm_in(m, m->xn), n_tok, err) ||
            mm_gemm(m, qkv, 3, gemm_in(m, m->xn), H, n_tok, 0, 0, err) < 0)
            return -1;
    }
    cl_ulong qn = woff(m, L->q_norm, 2), kn = woff(m, L->k_norm, 2);
    cl_kernel k;
    cl_int rc;
    if (n_tok == 1) {
        /* q/k norm and RoPE happen inside the attention launch, the positions are
         * split over att_split work-groups per group of att_hg heads, and o_proj
         * combines them. */
        cl_uint nsplit = m->att_split;
        /* a batched step: the tokens in a third dimension; tensor cores where att_tc */
        int kind = m->batching ? (m->att_tc ? K_ATTN_BATCH_TC : K_ATTN_BATCH) : m->att_tc ? K_ATTN_TC : K_ATTN;
        k = kern(m, kind);
        cl_ulong a_off[8] = {aoff(m, m->q),        aoff(m, m->att),      aoff(m, m->tokens),   aoff(m, m->kk),
                             aoff(m, m->v),        aoff(m, m->rope_cos), aoff(m, m->rope_sin), aoff(m, m->att_ml)};
        rc = ARG(k, 0, m->act) | ARG(k, 1, m->kcache[l]) | ARG(k, 2, m->vcache[l]) | ARG(k, 3, m->weights) |
             ARG(k, 4, nq) | ARG(k, 5, nkv) | ARG(k, 6, qn) | ARG(k, 7, kn) | ARG(k, 8, eps) | ARG(k, 9, nsplit) |
             ARG(k, 10, n_ctx);
        for (int i = 0; i < 8; i++) rc |= ARG(k, 11 + i, a_off[i]);
        /* attention_tc alone combines the splits (att_once); o_proj then stages them plain */
        cl_uint once = kind == K_ATTN_TC && m->att_once;
        cl_ulong cnt_off = aoff(m, m->att_cnt);
        if (kind == K_ATTN_TC) rc |= ARG(k, 19, once) | ARG(k, 20, cnt_off);
        CHECK(rc, "setting attention arguments");
        int batch = kind == K_ATTN_BATCH || kind == K_ATTN_BATCH_TC;
        if (batch && batch_attention_args(m, k, l, (q3_backend *const *)&m, 1, err)) return -1;
        size_t wg = m->att_tc ? m->att_tc_wg : ATT_WG;
        size_t ga[3] = {(size_t)(nq / m->att_hg) * wg, nsplit, 1}, la[3] = {wg, 1, 1};
        mm_seg o = {L->wo, m->x, H};
        if (launch(m, k, kind, batch ? 3 : 2, ga, la, 0, 0, err)) return -1;
        prefetch_next(m, &L->slot[Q3_QWEN3_W_GATE], 2);
        if (mm_small(m, &o, 1, m->att, m->att_ml, qd, once ? XMODE_PLAIN : XMODE_ATTN, NULL, 1, MODE_ADD, nsplit, err))
            return -1;
    } else {
        k = kern(m, K_QKROPE);
        rc = ARG(k, 0, m->q) | ARG(k, 1, m->kk) | ARG(k, 2, m->v) | ARG(k, 3, m->weights) | ARG(k, 4, qn) |
             ARG(k, 5, kn) | ARG(k, 6, m->rope_cos) | ARG(k, 7, m->rope_sin) | ARG(k, 8, m->kcache[l]) |
             ARG(k, 9, m->vcache[l]) | ARG(k, 10, nq) | ARG(k, 11, nkv) | ARG(k, 12, n_ctx) | ARG(k, 13, m->tokens) |
             ARG(k, 14, eps);
        CHECK(rc, "setting qk_norm_rope arguments");
        size_t g2[2] = {(size_t)(nq + nkv) * ROPE_WG, n_tok}, l2[2] = {ROPE_WG, 1};
        if (launch(m, k, K_QKROPE, 2, g2, l2, 0, 0, err)) return -1;
        /* o_proj's input: BF16 in m->xb for a tensor-core GEMM (more than SMALL_MAX
         * tokens), else f32 in m->att */
        int gemm = n_tok > SMALL_MAX;
        cl_mem att_out = gemm ? gemm_in(m, m->att) : m->att;
        cl_uint bf = att_out == m->xb;
        /* on tensor cores (attention_mma, FA_Q queries a work-group) where the
         * device has them, else attention_prefill (QB queries) */
        int fa = m->mma && m->cfg.head_dim <= FA_MAX_D;
        /* 8 warps a work-group where that still leaves FA_WIDE_ROUNDS a compute unit */
        int wide = fa && m->fa_wide && (size_t)nq * ((n_tok + FA_WIDE_WG / 2 - 1) / (FA_WIDE_WG / 2)) >=
                                           (size_t)FA_WIDE_ROUNDS * m->compute_units;
        int kind = wide ? K_ATTN_MMA_WIDE : fa ? K_ATTN_MMA : K_ATTN_PF;
        k = kern(m, kind);
        rc = ARG(k, 0, m->q) | ARG(k, 1, m->kcache[l]) | ARG(k, 2, m->vcache[l]) | ARG(k, 3, att_out) | ARG(k, 4, nq) |
             ARG(k, 5, nkv) | ARG(k, 6, n_tok) | ARG(k, 7, m->tokens) | ARG(k, 8, n_ctx) | ARG(k, 9, bf);
        CHECK(rc, "setting the prompt attention's arguments");
        size_t wg = wide ? FA_WIDE_WG : fa ? m->fa_wg : ATT_WG, per = fa ? wg / 2 : QB; /* FA_Q */
        size_t ga[2] = {(size_t)nq * wg, (n_tok + per - 1) / per}, la[2] = {wg, 1};
        if (launch(m, k, kind, 2, ga, la, 0, 0, err)) return -1;
        if (gemm) { /* its sums added to x by the post-attention norm */
            mm_seg o = {L->wo, m->x, H};
            if (mm_gemm(m, &o, 1, att_out, qd, n_tok, 1, MMG_DEFER, err) < 0) return -1;
        } else if (mm(m, L->wo, att_out, qd, m->x, H, n_tok, 1, err))
            return -1;
    }
    if (small) {
        mm_seg gu[2] = {{L->w_gate, m->gate, I}, {L->w_up, m->up, I}};
        if (one) prefetch_next(m, &L->slot[Q3_QWEN3_W_DOWN], 1);
        if (mm_small(m, gu, 2, m->x, m->x, H, XMODE_NORM, L->post_norm, n_tok, MODE_STORE, 1, err)) return -1;
        /* then the next layer's q, k, v, or lm_head */
        if (one && l + 1 < c->num_layers) prefetch_next(m, &m->w.layers[l + 1].slot[Q3_QWEN3_WQ], 3);
        else if (one) prefetch_next(m, &m->w.slot[Q3_QWEN3_LM_HEAD], 1);
        return mm_small(m, &(mm_seg){L->w_down, m->x, H}, 1, m->gate, m->up, I, XMODE_SILU, NULL, n_tok, MODE_ADD,
                        1, err);
    }
    /* on tensor cores gate/up stores silu(gate) up in BF16 itself (MMG_GLU), and
     * down's split sums wait for the next norm of x */
    mm_seg gu[2] = {{L->w_gate, m->gate, I}, {L->w_up, m->up, I}}, down = {L->w_down, m->x, H};
    if (run_norm(m, m->x, L->post_norm, gemm_in(m, m->xn), n_tok, err)) return -1;
    int rc_gu = mm_gemm(m, gu, 2, gemm_in(m, m->xn), H, n_tok, 0, MMG_GLU, err); /* 0: BF16 in m->gate */
    if (rc_gu < 0 || (rc_gu > 0 && silu_mul(m, (size_t)n_tok * I, err))) return -1;
    cl_mem down_in = rc_gu == 0 ? m->gate : gemm_in(m, m->gate);
    return mm_gemm(m, &down, 1, down_in, I, n_tok, 1, MMG_DEFER, err) < 0 ? -1 : 0;
}

/* Embedding, the layers and the logits for nb tokens at the staged position.
 * logits: 0 none, 1 the last token's (norm fused into lm_head), 2 every token's. */
static int enqueue_pass(ocl_backend *m, cl_uint nb, int logits, q3_err *err)
{
    const q3_config *c = &m->cfg;
    cl_uint H = c->hidden_size, V = c->vocab_size;
    cl_kernel k = kern(m, K_EMBED);
    cl_ulong off = woff(m, m->w.embed, 2);
    CHECK(ARG(k, 0, m->weights) | ARG(k, 1, off) | ARG(k, 2, H) | ARG(k, 3, m->tokens) | ARG(k, 4, m->x),
          "setting embed arguments");
    size_t ge[2] = {H, nb};
    if (launch(m, k, K_EMBED, 2, ge, NULL, 0, 0, err)) return -1;
    for (uint32_t l = 0; l < c->num_layers; l++)
        if (run_layer(m, l, nb, err)) return -1;
    if (logits != 2 && flush_parts(m, nb, err)) return -1; /* the last down_proj's sums (logits 2: the norm adds them) */
    if (logits == 2) {
        cl_mem xn = nb > SMALL_MAX ? gemm_in(m, m->xn) : m->xn;
        return run_norm(m, m->x, m->w.norm, xn, nb, err) || mm(m, m->w.lm_head, xn, H, m->logits, V, nb, 0, err);
    }
    if (logits == 0) return 0;
    /* Only the last token's row: copied out, then normed inside the lm_head launch. */
    cl_mem last = m->x;
    if (nb > 1) {
        CHECK(clEnqueueCopyBuffer(m->queue, m->x, m->tmp, (size_t)(nb - 1) * H * sizeof(float), 0, H * sizeof(float),
                                  0, NULL, NULL), "copying the last state");
        last = m->tmp;
    }
    mm_seg sg = {m->w.lm_head, m->logits, V};
    if (nb == 1) prefetch_next(m, &m->w.layers[0].slot[Q3_QWEN3_WQ], 3); /* the next token's first launch */
    return mm_small(m, &sg, 1, last, last, H, XMODE_NORM, m->w.norm, 1, MODE_STORE, 1, err);
}

/* One pass of nb tokens at pos onto the queue, lm_head's rows (rows: 0 none, 1 the last
 * token's, 2 every token's) left in m->logits. The pass's first position, then its ids,
 * in one write; kernels read the position from there, so the decode plan's arguments
 * never change. Non-blocking when the pass ends with a blocking read (rows), before the
 * staging array is touched again. */
static int chain_failed(ocl_backend *m);
/* matvec_chain's flag (a barrier gave up) read into chain_flag once the queue gets there;
 * chain_failed looks at it after a blocking call. */
static int chain_flag_read(ocl_backend *m, cl_bool blocking, q3_err *err)
{
    CHECK(clEnqueueReadBuffer(m->queue, m->chain_sync, blocking, 2 * sizeof(cl_int), sizeof m->chain_flag,
                              &m->chain_flag, 0, NULL, NULL), "reading matvec_chain's flag");
    m->chain_pending = 1;
    return 0;
}
static int pass_enqueue(ocl_backend *m, const int32_t *tokens, cl_uint nb, int pos, int rows, q3_err *err)
{
    m->stage[0] = pos;
    memcpy(m->stage + 1, tokens, nb * sizeof(cl_int));
    CHECK(clEnqueueWriteBuffer(m->queue, m->tokens, rows ? CL_FALSE : CL_TRUE, 0, (nb + 1) * sizeof(cl_int), m->stage,
                               0, NULL, NULL), "writing token ids");
    if (nb == 1 && m->n_plan) {
        int chained = m->chain;
        if (run_plan(m, (chained ? PLAN_CHAIN : 0) + (pos >= ATT_DEEP_POS), err)) return -1;
        if (!chained) return 0;
        /* whether a barrier gave up: read with the pass's own blocking read (rows), else now */
        if (chain_flag_read(m, rows ? CL_FALSE : CL_TRUE, err)) return -1;
        if (!rows && chain_failed(m)) return pass_enqueue(m, tokens, nb, pos, rows, err);
        return 0;
    }
    return enqueue_pass(m, nb, rows, err);
}

/* logits_greedy over the first n rows of m->logits, its chunks read into m->greedy_chunks;
 * a blocking read waits for them (else a later blocking call on the queue does). */
static int greedy_enqueue(ocl_backend *m, int n, cl_bool blocking, q3_err *err)
{
    cl_kernel k = kern(m, K_GREEDY);
    cl_uint V = m->cfg.vocab_size;
    CHECK(ARG(k, 0, m->logits) | ARG(k, 1, V) | ARG(k, 2, m->greedy), "setting logits_greedy arguments");
    size_t g[2] = {(size_t)GREEDY_CHUNKS * NORM_WG, (size_t)n}, l[2] = {NORM_WG, 1};
    if (launch(m, k, K_GREEDY, 2, g, l, 0, 0, err)) return -1;
    CHECK(clEnqueueReadBuffer(m->queue, m->greedy, blocking, 0, (size_t)n * GREEDY_CHUNKS * sizeof(cl_int2),
                              m->greedy_chunks, 0, NULL, NULL),
          "reading the greedy tokens");
    return 0;
}

/* Row r's greedy token from its chunks (logits_greedy): -1 if one holds a NaN or infinity,
 * else the first chunk's index whose logit is the largest (chunks in index order, each
 * already its first index of its largest). */
static int32_t greedy_of_chunks(const ocl_backend *m, int r)
{
    const cl_int2 *ch = m->greedy_chunks + (size_t)r * GREEDY_CHUNKS;
    int32_t at = -1;
    float best = 0.0f;
    for (int c = 0; c < GREEDY_CHUNKS; c++) {
        if (ch[c].s[0] < 0) return -1;
        if ((uint32_t)ch[c].s[0] >= m->cfg.vocab_size) continue; /* an empty chunk */
        float v;
        memcpy(&v, &ch[c].s[1], sizeof v);
        if (at < 0 || v > best) best = v, at = ch[c].s[0];
    }
    return at;
}

/* One pass of nb <= base.max_batch tokens at pos; logits as q3_backend_impl.pass says. */
static int ocl_pass(q3_backend *b, const int32_t *tokens, int n, int pos, float *logits, int all_logits, q3_err *err)
{
    ocl_backend *m = (ocl_backend *)b;
    cl_uint V = m->cfg.vocab_size, nb = (cl_uint)n;
    double t_pass = m->host_timing ? now_ms() : 0;
    if (pass_enqueue(m, tokens, nb, pos, !logits ? 0 : all_logits ? 2 : 1, err)) return -1;
    if (!logits) return 0;
    size_t n_rows = all_logits ? nb : 1;
    double t_read = m->host_timing ? now_ms() : 0;
    if (m->host_timing) {
        m->host_enqueue_ms += t_read - t_pass;
        if (nb == 1) m->dec_enqueue_ms += t_read - t_pass, m->n_decode++;
    }
    CHECK(clEnqueueReadBuffer(m->queue, m->logits, CL_TRUE, 0, n_rows * V * sizeof(float), logits, 0, NULL, NULL),
          "reading logits");
    if (m->host_timing) {
        double dt = now_ms() - t_read;
        m->host_read_ms += dt;
        if (nb == 1) m->dec_read_ms += dt;
    }
    if (chain_failed(m)) return ocl_pass(b, tokens, n, pos, logits, all_logits, err); /* now unchained */
    return 0;
}

/* Batched decode (q3_backend_impl.decode_batch, decode_batch_greedy). The step runs on the queue and
 * activations of one context, the lead, in rows of DEC_BATCH_MAX tokens; each
 * token's attention reads and writes its own context's cache. Every context of the
 * model shares the device's cl_context, so the lead's queue can use another's
 * caches; each of the library's calls on a context ends with a blocking read of its
 * logits (or a finish), so no other queue still has work on them. */
/* Records plan p: the single-token pass (as enqueue_pass issues it, attention
 * split split ways) on kernel objects of its own whose arguments stay set; what
 * names it in an error. */
static int record_plan(ocl_backend *m, int p, cl_uint split, const char *what, q3_err *err)
{
    m->recording = 1;
    m->att_split = split;
    m->plan_start[p] = m->n_plan;
    int rc = enqueue_pass(m, 1, 1, err);
    m->plan_len[p] = m->n_plan - m->plan_start[p];
    m->recording = 0;
    if (rc) return -1;
    if (m->record_failed) {
        q3_set_err(err, "%s: OpenCL: recording %s failed: %s (%d)", m->base.file->path, what,
                   q3_cl_err_name(m->record_failed), m->record_failed);
        return -1;
    }
    return 0;
}

/* The step is recorded once per lead (as the single-token passes are), with the
 * token count 1 and the lead's own caches; run_batch_plan adapts it. The split
 * count is unused by the batch kernels: each token's comes from the stage. */
static int record_batch_plan(ocl_backend *m, q3_err *err)
{
    m->batching = 1;
    int rc = record_plan(m, PLAN_BATCH, m->att_splits[0], "the batched decode step", err);
    m->batching = 0;
    if (rc) return -1;
    m->batch_recorded = 1;
    m->batch_n = 0; /* its token count and caches are set before the first replay */
    return 0;
}

/* Plan PLAN_CHAIN + p: plan p with each run of two or more matvec launches (a layer's
 * o_proj, gate/up and down and the next layer's q/k/v; the last layer's with lm_head) as
 * one matvec_chain launch of their rows (kernels/qwen3.cl), appended to rows (*n_rows of
 * cap used, at chain_rows on the device). Its other launches are plan p's, borrowed. */
static int chain_plan(ocl_backend *m, int p, cl_ulong *rows, size_t *n_rows, size_t cap, q3_err *err)
{
    int end = m->plan_start[p] + m->plan_len[p];
    m->plan_start[PLAN_CHAIN + p] = m->n_plan;
    for (int i = m->plan_start[p], j; i < end; i = j) {
        for (j = i; j < end && m->plan[j].kind == K_MATVEC; j++) {}
        if (j == i) j = i + 1;
        if (m->n_plan == PLAN_MAX || *n_rows + (size_t)(j - i) > cap) {
            q3_set_err(err, "%s: OpenCL: the chained decode pass does not fit its plan", m->base.file->path);
            return -1;
        }
        plan_entry *e = &m->plan[m->n_plan];
        if (j - i == 1) { /* a lone launch stays as it is */
            *e = m->plan[i];
            e->borrowed = 1;
            m->n_plan++;
            continue;
        }
        cl_int rc;
        cl_kernel k = clCreateKernel(program_of(m, K_MV_CHAIN), kernel_names[K_MV_CHAIN], &rc);
        CHECK(rc, "creating matvec_chain");
        cl_ulong ph_off = aoff(m, m->chain_rows) + *n_rows * MVP_N * (sizeof(cl_ulong) / sizeof(float));
        cl_ulong sync_off = aoff(m, m->chain_sync);
        cl_uint nph = (cl_uint)(j - i);
        *e = (plan_entry){k, K_MV_CHAIN, 1, {m->chain_groups * MV_WG, 1, 1}, {MV_WG, 1, 1}, 1, 0, nph, 0, {0}};
        m->n_plan++; /* released with the plan from here on */
        rc = ARG(k, 0, m->weights) | ARG(k, 1, m->act) | ARG(k, 2, ph_off) | ARG(k, 3, nph) | ARG(k, 4, sync_off);
        CHECK(rc, "setting matvec_chain arguments");
        for (int q = i; q < j; q++) memcpy(rows + (*n_rows)++ * MVP_N, m->plan[q].mv, sizeof m->plan[q].mv);
    }
    m->plan_len[PLAN_CHAIN + p] = m->n_plan - m->plan_start[PLAN_CHAIN + p];
    return 0;
}

/* After a chained pass: was one of its barriers given up on (grid_wait)? Then its
 * work-groups were not all resident and the pass is wrong: the chained plans are
 * dropped for good and the caller runs the pass again (the same position and tokens
 * write the same cache rows). Call once the pass's blocking read is done. */
static int chain_failed(ocl_backend *m)
{
    if (!m->chain_pending) return 0;
    m->chain_pending = 0;
    if (!m->chain_flag) return 0;
    cl_int zero = 0;
    clEnqueueWriteBuffer(m->queue, m->chain_sync, CL_TRUE, 2 * sizeof(cl_int), sizeof zero, &zero, 0, NULL, NULL);
    m->chain = 0;
    if (m->verbose)
        fprintf(stderr, "q3 opencl: matvec_chain's work-groups were not all resident; decoding without it\n");
    return 1;
}

/* The chained plans (Q3_OPENCL_CHAIN: on by default on NVIDIA with its PTX, where the
 * launch is mv_groups work-groups; =1 elsewhere too, as one work-group: the tests on
 * PoCL; =0 off), then one of their launches run alone as a probe: if its barriers wait
 * in vain, the device does not hold that many work-groups at once and the plain plans
 * stay. */
static int chain_setup(ocl_backend *m, q3_err *err)
{
    const char *env = getenv("Q3_OPENCL_CHAIN");
    int nvidia = m->mma && !m->mma_emulate;
    if (!(env && *env ? strcmp(env, "0") != 0 : nvidia)) return 0;
    m->chain_groups = nvidia ? m->mv_groups : 1;
    size_t cap = 2 * (4 * (size_t)m->cfg.num_layers + 1), n_rows = 0;
    cl_ulong *rows = malloc(cap * MVP_N * sizeof *rows);
    if (!rows) {
        q3_set_err(err, "%s: out of memory", m->base.file->path);
        return -1;
    }
    int rc = chain_plan(m, 0, rows, &n_rows, cap, err) || chain_plan(m, 1, rows, &n_rows, cap, err) ? -1 : 0;
    cl_int zero = 0, crc = CL_SUCCESS;
    if (rc == 0 && n_rows)
        crc = clEnqueueWriteBuffer(m->queue, m->chain_rows, CL_TRUE, 0, n_rows * MVP_N * sizeof *rows, rows, 0, NULL,
                                   NULL);
    free(rows);
    if (rc) return -1;
    CHECK(crc, "writing matvec_chain's tables");
    CHECK(clEnqueueFillBuffer(m->queue, m->chain_sync, &zero, sizeof zero, 0, CHAIN_SYNC_INTS * sizeof zero, 0, NULL,
                              NULL), "clearing matvec_chain's counts");
    m->chain = 1;
    for (int i = m->plan_start[PLAN_CHAIN]; i < m->plan_start[PLAN_CHAIN] + m->plan_len[PLAN_CHAIN]; i++) {
        const plan_entry *e = &m->plan[i];
        if (e->kind != K_MV_CHAIN) continue;
        /* its products read and write activations only; the next pass writes them all again */
        if (launch(m, e->k, e->kind, e->dims, e->global, e->local, e->rows, e->cols, err) ||
            chain_flag_read(m, CL_TRUE, err))
            return -1;
        chain_failed(m);
        break;
    }
    if (m->verbose && m->chain)
        fprintf(stderr, "q3: decode products chained: matvec_chain, %zu work-groups, %d and %d launches a token\n",
                m->chain_groups, m->plan_len[PLAN_CHAIN], m->plan_len[0]);
    return 0;
}

/* Replays the batched step for the n contexts bs: the launches' sizes by n (a
 * work-group a token for the staging, a third dimension of attention up to the
 * largest split count), matvec_batch's and matmul_small's token count and the
 * attention launches' caches where they changed since the last step. */
static int run_batch_plan(ocl_backend *m, q3_backend *const *bs, int n, cl_uint max_split, q3_err *err)
{
    int same = m->batch_n == n;
    for (int i = 0; i < n && same; i++) same = m->batch_uid[i] == ((const ocl_backend *)bs[i])->uid;
    cl_uint n_tok = (cl_uint)n;
    uint32_t layer = 0;
    for (int i = m->plan_start[PLAN_BATCH]; i < m->plan_start[PLAN_BATCH] + m->plan_len[PLAN_BATCH]; i++) {
        const plan_entry *e = &m->plan[i];
        size_t g[3] = {e->global[0], e->global[1], e->global[2]};
        if (e->kind == K_EMBED) g[1] = (size_t)n;
        else if (e->kind == K_MV_STAGE) g[0] = (size_t)n * MV_WG;
        else if (e->kind == K_MM_SMALL) g[1] = (size_t)(n + TOKB - 1) / TOKB;
        else if (e->kind == K_ATTN_BATCH || e->kind == K_ATTN_BATCH_TC) {
            g[1] = max_split, g[2] = (size_t)n;
            if (!same && batch_attention_args(m, e->k, layer, bs, n, err)) return -1;
            layer++;
        }
        if (!same && (e->kind == K_MV_BATCH || e->kind == K_MV_MMA_BATCH || e->kind == K_MM_SMALL))
            CHECK(ARG(e->k, MV_ARG_NTOK, n_tok), "setting the batch's token count");
        if (launch(m, e->k, e->kind, e->dims, g, e->has_local ? e->local : NULL, e->rows, e->cols, err)) return -1;
    }
    m->batch_n = n;
    for (int i = 0; i < n; i++) m->batch_uid[i] = ((const ocl_backend *)bs[i])->uid;
    return 0;
}

/* One decode step of n <= DEC_BATCH_MAX contexts: [unused, tokens, positions,
 * split counts, cache sizes] staged in one write (each token's split count that
 * of the plan its own decode would replay), the recorded step replayed, each
 * token's logits read into its context's memory. The lead is the context with
 * the largest cache, whose RoPE tables cover every position. One context alone,
 * or a model whose o_proj matvec does not take (matmul_small cannot combine the
 * attention of several tokens), runs its own single-token passes. The contexts only
 * marks (decode_batch_greedy) get greedy[i] from logits_greedy on the device: 4 bytes
 * read each instead of V floats (H200, 16 streams at 0.6B: 2.9 -> 2.7 ms a step). */
static int ocl_decode_batch_greedy(q3_backend *const *bs, const int32_t *tokens, const int *pos, int n,
                                   float *const *logits, const unsigned char *only, int32_t *greedy, q3_err *err)
{
    ocl_backend *m = (ocl_backend *)bs[0];
    for (int i = 1; i < n; i++)
        if (bs[i]->n_ctx > m->base.n_ctx) m = (ocl_backend *)bs[i];
    if (n > 1 && !m->batch_recorded && !m->batch_unsupported && record_batch_plan(m, err)) return -1;
    if (n == 1 || m->batch_unsupported) {
        for (int i = 0; i < n; i++) {
            ocl_backend *mi = (ocl_backend *)bs[i];
            if (!(only && only[i])) {
                if (ocl_pass(bs[i], &tokens[i], 1, pos[i], logits[i], 0, err)) return -1;
            } else {
                if (pass_enqueue(mi, &tokens[i], 1, pos[i], 1, err) || greedy_enqueue(mi, 1, CL_TRUE, err)) return -1;
                if (chain_failed(mi) &&
                    (pass_enqueue(mi, &tokens[i], 1, pos[i], 1, err) || greedy_enqueue(mi, 1, CL_TRUE, err)))
                    return -1;
                greedy[i] = greedy_of_chunks(mi, 0);
            }
        }
        return 0;
    }
    cl_uint V = m->cfg.vocab_size, max_split = 0;
    memset(m->stage, 0, DB_STAGE_INTS * sizeof *m->stage);
    for (int i = 0; i < n; i++) {
        cl_uint split = m->att_splits[pos[i] >= ATT_DEEP_POS];
        m->stage[DB_TOK + i] = tokens[i];
        m->stage[DB_POS + i] = pos[i];
        m->stage[DB_SPLIT + i] = (cl_int)split;
        m->stage[DB_NCTX + i] = bs[i]->n_ctx;
        if (split > max_split) max_split = split;
    }
    CHECK(clEnqueueWriteBuffer(m->queue, m->tokens, CL_FALSE, 0, DB_STAGE_INTS * sizeof(cl_int), m->stage, 0, NULL,
                               NULL), "writing the batch's tokens");
    if (run_batch_plan(m, bs, n, max_split, err)) return -1;
    int last = -1, n_only = 0; /* the last logits read, and the greedy-only contexts */
    for (int i = 0; i < n; i++) {
        if (only && only[i]) n_only++;
        else last = i;
    }
    if (n_only && greedy_enqueue(m, n, last < 0, err)) return -1;
    /* the last read blocks: the queue is in order, so every read (and the stage write) is done after it */
    for (int i = 0; i <= last; i++)
        if (!(only && only[i]))
            CHECK(clEnqueueReadBuffer(m->queue, m->logits, i == last ? CL_TRUE : CL_FALSE, (size_t)i * V * sizeof(float),
                                      V * sizeof(float), logits[i], 0, NULL, NULL),
                  "reading logits");
    for (int i = 0; n_only && i < n; i++)
        if (only[i]) greedy[i] = greedy_of_chunks(m, i);
    return 0;
}

static int ocl_decode_batch(q3_backend *const *bs, const int32_t *tokens, const int *pos, int n,
                            float *const *logits, q3_err *err)
{
    return ocl_decode_batch_greedy(bs, tokens, pos, n, logits, NULL, NULL, err);
}

/* Pinned host memory: an ALLOC_HOST_PTR buffer, mapped once. One per backend. */
static float *ocl_logits_buffer(q3_backend *b, size_t n_floats)
{
    ocl_backend *m = (ocl_backend *)b;
    if (m->pinned) return n_floats <= m->pinned_floats ? m->pinned_map : NULL;
    cl_int rc;
    m->pinned = clCreateBuffer(m->ctx, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, n_floats * sizeof(float), NULL, &rc);
    if (rc != CL_SUCCESS) return m->pinned = NULL, NULL;
    m->pinned_map = clEnqueueMapBuffer(m->queue, m->pinned, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE, 0,
                                       n_floats * sizeof(float), 0, NULL, NULL, &rc);
    if (rc != CL_SUCCESS) {
        clReleaseMemObject(m->pinned);
        m->pinned = NULL;
        return NULL;
    }
    m->pinned_floats = n_floats;
    return m->pinned_map;
}

/* Q3_OPENCL_CHAIN_TRACE=FILE: matvec_chain's counts and stamps (qwen3_shared.h) into FILE,
 * after a header of the work-groups, products, launches and stamps of its layout; then
 * attention_tc's: a header of its work-group columns, splits, launches and stamps, its count
 * of work-groups started and its stamps (32-bit words; tools/chain_trace.py reads them). A
 * diagnostic: a failure is only reported. */
static void chain_trace_write(ocl_backend *m)
{
    /* the launches' layout is by their work-groups (chain_groups <= mv_groups, reserved) */
    size_t n = CHAIN_SYNC_INTS + (size_t)CHAIN_TRACE_LAUNCHES * CHAIN_TRACE_PH * m->chain_groups * CHAIN_TRACE_STAMPS;
    size_t na = (size_t)m->att_trace_ints, nq = m->cfg.num_heads;
    cl_uint *buf = malloc((n > nq + na ? n : nq + na) * sizeof *buf);
    FILE *fp = buf ? fopen(m->chain_trace, "wb") : NULL;
    cl_uint head[4] = {(cl_uint)m->chain_groups, CHAIN_TRACE_PH, CHAIN_TRACE_LAUNCHES, CHAIN_TRACE_STAMPS};
    cl_uint head_att[4] = {m->cfg.num_heads / m->att_hg, ATT_TRACE_SPLITS, ATT_TRACE_LAUNCHES, ATT_TRACE_STAMPS};
    int ok = fp && !clEnqueueReadBuffer(m->queue, m->chain_sync, CL_TRUE, 0, n * sizeof *buf, buf, 0, NULL, NULL) &&
             fwrite(head, sizeof head, 1, fp) == 1 && fwrite(buf, sizeof *buf, n, fp) == n &&
             !clEnqueueReadBuffer(m->queue, m->att_cnt, CL_TRUE, 0, (nq + na) * sizeof *buf, buf, 0, NULL, NULL) &&
             fwrite(head_att, sizeof head_att, 1, fp) == 1 && fwrite(buf + nq, sizeof *buf, na, fp) == na;
    if (fp && fclose(fp)) ok = 0;
    if (!ok) fprintf(stderr, "q3 opencl: %s: could not write the decode trace\n", m->chain_trace);
    free(buf);
}

static void ocl_release(q3_backend *b)
{
    ocl_backend *m = (ocl_backend *)b;
    if (m->pinned) {
        clEnqueueUnmapMemObject(m->queue, m->pinned, m->pinned_map, 0, NULL, NULL);
        clFinish(m->queue);
        clReleaseMemObject(m->pinned);
    }
    if (m->profile && m->queue) {
        clFinish(m->queue);
        prof_collect(m);
        prof_print(m);
    }
    if (m->chain_trace && m->queue && m->chain_sync && m->att_cnt) chain_trace_write(m);
    if (m->host_timing && m->n_decode)
        fprintf(stderr, "q3 opencl host: %ld single-token passes, %.1f us enqueueing and %.1f us waiting for the logits each\n",
                m->n_decode, m->dec_enqueue_ms * 1e3 / (double)m->n_decode, m->dec_read_ms * 1e3 / (double)m->n_decode);
    /* every region (a sub-buffer keeps act alive), then act: the regions' list is the one
     * reserve_activations made */
    for (int i = 0; i < m->n_regions; i++)
        if (*m->regions[i].buf) clReleaseMemObject(*m->regions[i].buf);
    if (m->act) clReleaseMemObject(m->act);
    for (uint32_t l = 0; l < m->cfg.num_layers; l++) {
        if (m->kcache && m->kcache[l]) clReleaseMemObject(m->kcache[l]);
        if (m->vcache && m->vcache[l]) clReleaseMemObject(m->vcache[l]);
    }
    free(m->kcache);
    free(m->vcache);
    free(m->stage);
    for (int i = 0; i < K_COUNT; i++)
        if (m->k[i]) clReleaseKernel(m->k[i]);
    for (int i = 0; i < m->n_plan; i++)
        if (!m->plan[i].borrowed) clReleaseKernel(m->plan[i].k);
    if (m->queue) clReleaseCommandQueue(m->queue);
}

/* The device opts ask for (Q3_OPENCL_DEVICE when they name none), by its index. */
static int ocl_resolve_device(const q3_file *f, const q3_backend_opts *o, int *device, q3_err *err)
{
    int want = o ? o->device : -1;
    const char *env = getenv("Q3_OPENCL_DEVICE");
    if (want < 0 && env && *env) want = atoi(env);
    q3_cl_device d;
    q3_err derr = {{0}};
    if (q3_cl_pick_device(want, &d, &derr)) {
        q3_set_err(err, "%s: %s", f->path, derr.msg);
        return -1;
    }
    *device = d.index;
    return 0;
}

static void ocl_shared_free(void *p)
{
    ocl_shared *sh = p;
    if (!sh) return;
    if (sh->weights) clReleaseMemObject(sh->weights);
    if (sh->program) clReleaseProgram(sh->program);
    if (sh->narrow) clReleaseProgram(sh->narrow);
    if (sh->wgp) clReleaseProgram(sh->wgp);
    if (sh->ctx) clReleaseContext(sh->ctx);
    free(sh->chain_trace);
    free(sh);
}

/* What the model's contexts on this device share: checks of the shapes the kernels
 * take, the values the program is built for, the device's context, the program and
 * the weights. */
static int shared_setup(ocl_shared *sh, const q3_file *f, int device, const q3_backend_opts *o, q3_err *err)
{
    const q3_config *c = &f->config;
    /* Decode attention: a work-group serves 4, 2 or 1 query heads of a KV group,
     * and att_split work-groups share the positions; o_proj combines at most
     * ATT_COMBINE_MAX (split, head) pairs. */
    uint32_t group = c->num_heads / c->num_kv_heads;
    sh->att_hg = group % 4 == 0 ? 4 : group % 2 == 0 ? 2 : 1;
    const char *hg_env = getenv("Q3_OPENCL_ATT_HG"); /* tuning: 1 or 2 instead */
    if (hg_env && (atoi(hg_env) == 1 || (atoi(hg_env) == 2 && group % 2 == 0))) sh->att_hg = (cl_uint)atoi(hg_env);
    const char *split_env = getenv("Q3_OPENCL_ATT_SPLIT");
    int fixed = split_env && atoi(split_env) > 0;
    for (int p = 0; p < 2; p++) {
        cl_uint sp = fixed ? (cl_uint)atoi(split_env) : p ? ATT_SPLIT_DEEP : ATT_SPLIT;
        while (sp > 1 && (uint64_t)sp * c->num_heads > ATT_COMBINE_MAX) sp /= 2;
        sh->att_splits[p] = sp;
    }
    if (c->num_heads > ATT_COMBINE_MAX || sh->att_splits[0] > MAX_BATCH || sh->att_splits[1] > MAX_BATCH) {
        q3_set_err(err, "%s: OpenCL backend: %u heads unsupported (at most %d)", f->path, c->num_heads,
                   ATT_COMBINE_MAX);
        return -1;
    }
    /* the attention kernels read K 8 halves and V 4 or 8 at a time, split a head
     * over ATT_WG / (D / 4) lanes and its sum of squares into 16 partials */
    uint32_t D = c->head_dim;
    if (D % 16 || D > ATT_MAX_D || ATT_WG % (D / 4)) {
        q3_set_err(err, "%s: OpenCL backend: head_dim %u unsupported (a multiple of 16 dividing 512, at most %d)",
                   f->path, D, ATT_MAX_D);
        return -1;
    }
    q3_err derr = {{0}};
    if (q3_cl_pick_device(device, &sh->d, &derr)) {
        q3_set_err(err, "%s: %s", f->path, derr.msg);
        return -1;
    }
    const q3_cl_device *d = &sh->d;
    cl_device_id dev = d->id;
    if (o->verbose)
        fprintf(stderr, "q3: opencl backend on device %d: %s (%s, %s, %u compute units)\n", d->index, d->name,
                d->platform_name, d->c_version, d->compute_units);
    cl_int rc;
    sh->verbose = o->verbose;
    const char *kv = getenv("Q3_OPENCL_VERBOSE"); /* 2: each kernel's local and private memory */
    if (kv && atoi(kv) > sh->verbose) sh->verbose = atoi(kv);
    sh->ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &rc);
    if (rc != CL_SUCCESS) {
        q3_set_err(err, "%s: OpenCL: clCreateContext failed: %s (%d)", f->path, q3_cl_err_name(rc), rc);
        return -1;
    }
    sh->mv_groups = (size_t)d->compute_units * MV_PER_CU;
    cl_ulong local_bytes = 0;
    clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local_bytes, &local_bytes, NULL);
    sh->mvx = matvec_cols(c, local_bytes);
    /* tuning: blocks of 64, 96, 128, 160 or 192 tokens (256 would stage 48 KiB + 16 B of x: on the
     * H200 it built and ran 12x slower; 96 leaves room in the registers for a third work-group a
     * compute unit, untried), 4 or 8 warps of 1 or 2 16-row panels each */
    const char *bt_env = getenv("Q3_OPENCL_MM_BT"), *wg_env = getenv("Q3_OPENCL_MM_WG");
    int bt = bt_env ? atoi(bt_env) : 0;
    sh->mm_bt = bt >= 64 && bt <= 192 && bt % 32 == 0 ? (cl_uint)bt : MM_BT;
    sh->mm_wg = wg_env && (atoi(wg_env) == 128 || atoi(wg_env) == 256) ? (cl_uint)atoi(wg_env) : MM_WG;
    const char *rp_env = getenv("Q3_OPENCL_MM_RP"); /* tuning: 1 or 2 16-row panels a warp */
    sh->mm_rp = rp_env && (atoi(rp_env) == 1 || atoi(rp_env) == 2) ? (cl_uint)atoi(rp_env) : MM_RP;
    sh->mm_br = sh->mm_wg / 2 * sh->mm_rp; /* MM_BR: MM_RP 16-row panels a warp */
    /* matmul_mma's grid: the token blocks of one row block launch together, so its
     * weights come from memory once (H200: 4B pp4096 +2 %, 1.7B pp512 +3 %, the
     * rest within 0.5 %); tuning: Q3_OPENCL_MM_RASTER=row, the other order */
    const char *raster_env = getenv("Q3_OPENCL_MM_RASTER");
    sh->mm_token_major = !(raster_env && !strcmp(raster_env, "row"));
    /* gate/up's silu in matmul_mma (needs 2 panels a warp) and o_proj/down's split sums in the next
     * rmsnorm, each saving a pass over the activations; tuning: Q3_OPENCL_MM_GLU=0, _MM_DEFER=0 */
    const char *glu_env = getenv("Q3_OPENCL_MM_GLU"), *defer_env = getenv("Q3_OPENCL_MM_DEFER");
    sh->mm_glu = sh->mm_rp == 2 && !(glu_env && !strcmp(glu_env, "0"));
    sh->mm_defer = !(defer_env && !strcmp(defer_env, "0"));
    /* tuning: the most MiB matvec prefetches into L2 for the next launch (0: none) */
    const char *pf_env = getenv("Q3_OPENCL_PREFETCH_MB");
    int pf_mb = pf_env && *pf_env ? atoi(pf_env) : PREFETCH_MB_DEFAULT;
    sh->pf_cap = (uint64_t)(pf_mb > 0 ? pf_mb : 0) << 20;
    const char *narrow_env = getenv("Q3_OPENCL_MM_NARROW"); /* tuning and tests: 0 never, all always */
    sh->narrow_mode = !narrow_env || !*narrow_env ? 1 : !strcmp(narrow_env, "0") ? 0 : !strcmp(narrow_env, "all") ? 2 : 1;
    const char *fa_env = getenv("Q3_OPENCL_FA_WG"); /* tuning: 256, 128 query rows a work-group */
    sh->fa_wg = fa_env && (atoi(fa_env) == 128 || atoi(fa_env) == 256) ? (cl_uint)atoi(fa_env) : FA_WG;
    /* tuning and tests: Q3_OPENCL_FA_WIDE=0, attention_mma of fa_wg threads for every pass */
    const char *wide_env = getenv("Q3_OPENCL_FA_WIDE");
    sh->fa_wide = sh->fa_wg != FA_WIDE_WG && c->head_dim <= FA_MAX_D && !(wide_env && !strcmp(wide_env, "0"));
    const char *ks_env = getenv("Q3_OPENCL_MM_KSPLIT"); /* tuning: 1-4 column splits of o_proj/down */
    sh->mm_ksplit = ks_env && atoi(ks_env) >= 1 && atoi(ks_env) <= KSPLIT ? (cl_uint)atoi(ks_env) : 0;
    /* gate/up's tail split (glu_tail): auto (the default) chooses it, N >= 1 always splits the
     * last N row blocks (tests), 0 never */
    const char *tail_env = getenv("Q3_OPENCL_MM_TAIL");
    sh->mm_tail = !tail_env || !*tail_env ? MM_TAIL_DEFAULT : !strcmp(tail_env, "auto") ? -1
                  : atoi(tail_env) > 0 ? atoi(tail_env) : 0;
    const char *mvb_env = getenv("Q3_OPENCL_MVB_R"); /* tuning: matvec_batch's rows a thread, 1, 2 or 4 */
    int mvb = mvb_env ? atoi(mvb_env) : 0;
    sh->mvb_r = mvb == 1 || mvb == 2 || mvb == 4 ? (cl_uint)mvb : MVB_R;
    const char *pcu_env = getenv("Q3_OPENCL_MV_PER_CU"); /* tuning: matvec work-groups per compute unit */
    if (pcu_env && atoi(pcu_env) > 0 && atoi(pcu_env) <= 8) sh->mv_groups = (size_t)d->compute_units * atoi(pcu_env);
    /* Tensor cores through inline PTX on NVIDIA's platform; if its compiler
     * refuses that, the portable GEMM. Q3_OPENCL_MMA=0 asks for the portable one,
     * =1 tries tensor cores on any platform (a test of the fallback elsewhere). */
    const char *mma_env = getenv("Q3_OPENCL_MMA");
    sh->mma = mma_env && *mma_env ? strcmp(mma_env, "0") != 0 : strstr(d->platform_name, "NVIDIA") != NULL;
    sh->mma_emulate = sh->mma && mma_env && !strcmp(mma_env, "emulate");
    /* the tensor-core GEMM copies x in 16-byte chunks of BF16 rows */
    if (c->hidden_size % 8 || c->intermediate_size % 8 || (c->num_heads * c->head_dim) % 8) sh->mma = 0;
    /* decode attention on tensor cores (attention_tc) where its fragments fit the head:
     * head_dim 64 or 128; Q3_OPENCL_ATT_TC=0 keeps the scalar kernel (tuning, A/B) */
    const char *tc_env = getenv("Q3_OPENCL_ATT_TC");
    sh->att_tc = sh->mma && (c->head_dim == 64 || c->head_dim == 128) && !(tc_env && !strcmp(tc_env, "0"));
    const char *tcwg_env = getenv("Q3_OPENCL_ATT_TC_WG"); /* tuning: 256, 8 warps */
    sh->att_tc_wg = tcwg_env && atoi(tcwg_env) == 256 ? 256 : ATT_TC_WG;
    /* attention_tc combines the splits in its q staging, free by then: nsplit x ATT_HG
     * (max, sum) pairs in qs (ATT_HG x head_dim floats) */
    const char *once_env = getenv("Q3_OPENCL_ATT_ONCE");
    sh->att_once = sh->att_tc && !(once_env && !strcmp(once_env, "0")) && sh->att_splits[0] <= c->head_dim / 2 &&
                   sh->att_splits[1] <= c->head_dim / 2;
    /* decode products on tensor cores, single and batched alike (an option being measured) */
    const char *trace_env = getenv("Q3_OPENCL_CHAIN_TRACE"); /* a diagnostic (chain_trace_write) */
    if (trace_env && *trace_env && !(sh->chain_trace = strdup(trace_env))) {
        q3_set_err(err, "%s: out of memory", f->path);
        return -1;
    }
    const char *mvm_env = getenv("Q3_OPENCL_MV_MMA");
    sh->mv_mma = sh->mma && mvm_env && !strcmp(mvm_env, "1");
    /* prompt GEMMs by wgmma (Hopper; an option being measured): matmul_mma's blocks, one warpgroup */
    const char *wgmma_env = getenv("Q3_OPENCL_WGMMA");
    sh->wgmma = sh->mma && wgmma_env && !strcmp(wgmma_env, "1") && sh->mm_bt == 128 && sh->mm_wg == 128 && sh->mm_rp == 2;
    if (build_program(sh, f, err)) {
        if (!sh->mma || sh->mma_emulate) return -1; /* the emulation is plain OpenCL C: no fallback */
        if (o->verbose)
            fprintf(stderr, "q3: tensor-core kernels did not build (%s); using the portable GEMM\n", err->msg);
        if (sh->program) clReleaseProgram(sh->program);
        if (sh->narrow) clReleaseProgram(sh->narrow);
        if (sh->wgp) clReleaseProgram(sh->wgp);
        sh->program = sh->narrow = sh->wgp = NULL;
        sh->mma = sh->att_tc = sh->mv_mma = sh->wgmma = 0;
        if (build_program(sh, f, err)) return -1;
    }
    if (o->verbose && sh->mma) fprintf(stderr, "q3: prompts on tensor cores (%s)\n", sh->wgmma ? "matmul_wg: wgmma" : "matmul_mma");

    const q3_section *ws = q3_get_section(f, Q3_SEC_WEIGHTS);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof sh->max_alloc, &sh->max_alloc, NULL);
    if (ws->size > sh->max_alloc) {
        q3_set_err(err, "%s: OpenCL: the weights (%llu bytes) exceed the device's largest buffer (%llu bytes) on %s",
                   f->path, (unsigned long long)ws->size, (unsigned long long)sh->max_alloc, d->name);
        return -1;
    }
    sh->w_base = ws->offset;
    /* matmul kernels read tiles as uint4: every tensor must start 16-byte aligned */
    for (uint32_t i = 0; i < f->n_tensors; i++)
        if ((f->tensors[i].offset - ws->offset) % 16) {
            q3_set_err(err, "%s: tensor %s at offset %llu is not 16-byte aligned in the weights section", f->path,
                       f->tensors[i].name, (unsigned long long)f->tensors[i].offset);
            return -1;
        }
    sh->weights = clCreateBuffer(sh->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, ws->size,
                                 (void *)(f->map + ws->offset), &rc);
    if (rc != CL_SUCCESS) {
        q3_set_err(err, "%s: OpenCL: uploading the weights failed: %s (%d)", f->path, q3_cl_err_name(rc), rc);
        return -1;
    }
    cl_uint align_bits = 0; /* sub-buffer origins must be multiples of this */
    clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    sh->act_align = align_bits / 8 > 256 ? align_bits / 8 : 256;
    return 0;
}


static void *ocl_shared_create(const q3_file *f, const q3_weights *w, int device, const q3_backend_opts *o,
                               q3_err *err)
{
    ocl_shared *sh = calloc(1, sizeof *sh);
    if (!sh) {
        q3_set_err(err, "%s: out of memory", f->path);
        return NULL;
    }
    if (shared_setup(sh, f, device, o, err)) {
        ocl_shared_free(sh);
        return NULL;
    }
    return sh;
}

/* The activations' regions for passes of batch tokens (at least MAX_BATCH: att
 * also holds a token's att_split partial outputs), and for a batched decode step
 * of DEC_BATCH_MAX tokens. Every token's logits come in passes of MAX_BATCH
 * (q3_backend_forward), so logits holds MAX_BATCH rows. */
static void reserve_activations(ocl_backend *m, int batch)
{
    const q3_config *c = &m->cfg;
    uint64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, half = c->head_dim / 2;
    uint64_t B = batch > MAX_BATCH ? (uint64_t)batch : MAX_BATCH, n_ctx = (uint64_t)m->base.n_ctx;
    uint64_t att_floats = B * m->q_dim, att_batch = DEC_BATCH_MAX * att_rows_ld(m);
    act_reserve(m, &m->x, B * H * 4);
    act_reserve(m, &m->xn, B * H * 4);
    act_reserve(m, &m->tmp, B * H * 4);
    act_reserve(m, &m->q, B * m->q_dim * 4);
    /* also att_split partial outputs (B >= att_split), of every token of a batched step */
    act_reserve(m, &m->att, (att_floats > att_batch ? att_floats : att_batch) * 4);
    act_reserve(m, &m->att_ml, DEC_BATCH_MAX * att_ml_ld(m) * 4);
    act_reserve(m, &m->bx, (uint64_t)DEC_BATCH_MAX * m->mvx * 4);
    act_reserve(m, &m->kk, B * m->kv_dim * 4);
    act_reserve(m, &m->v, B * m->kv_dim * 4);
    act_reserve(m, &m->gate, B * I * 4);
    uint64_t widest = H > I ? H : I;
    act_reserve(m, &m->xb, B * (widest > m->q_dim ? widest : m->q_dim) * 2);
    act_reserve(m, &m->up, B * I * 4);
    act_reserve(m, &m->tokens, (B + 1) * 4);
    act_reserve(m, &m->parts, (uint64_t)KSPLIT * B * H * 4);
    act_reserve(m, &m->logits, (uint64_t)MAX_BATCH * V * 4);
    act_reserve(m, &m->rope_cos, n_ctx * half * 4);
    act_reserve(m, &m->rope_sin, n_ctx * half * 4);
    /* Q3_OPENCL_CHAIN_TRACE: attention_tc's count of work-groups started and stamps after its counts */
    m->att_trace_ints = m->chain_trace ? 1 + (uint64_t)ATT_TRACE_LAUNCHES * (c->num_heads / m->att_hg) *
                                                 ATT_TRACE_SPLITS * ATT_TRACE_STAMPS : 0;
    act_reserve(m, &m->att_cnt, ((uint64_t)c->num_heads + m->att_trace_ints) * 4);
    act_reserve(m, &m->greedy, (uint64_t)DEC_BATCH_MAX * GREEDY_CHUNKS * sizeof(cl_int2));
    /* matvec_chain: a row for each matvec of the two single-token plans (4 a layer, lm_head) */
    act_reserve(m, &m->chain_rows, 2 * (4 * (uint64_t)c->num_layers + 1) * MVP_N * sizeof(cl_ulong));
    uint64_t chain_trace_ints = /* matvec_chain's stamps after its counts (chain_groups <= mv_groups) */
        m->chain_trace ? (uint64_t)CHAIN_TRACE_LAUNCHES * CHAIN_TRACE_PH * m->mv_groups * CHAIN_TRACE_STAMPS : 0;
    act_reserve(m, &m->chain_sync, (CHAIN_SYNC_INTS + chain_trace_ints) * sizeof(cl_int));
}

/* A context: its queue, kernels, activations, KV cache, RoPE tables and decode plans. */
static int ocl_init(q3_backend *b, const q3_backend_opts *o, q3_err *err)
{
    ocl_backend *m = (ocl_backend *)b;
    const ocl_shared *sh = b->shared;
    const q3_file *f = b->file;
    m->cfg = f->config;
    m->w = *b->w;
    const q3_config *c = &m->cfg;
    m->q_dim = (uint64_t)c->num_heads * c->head_dim;
    m->kv_dim = (uint64_t)c->num_kv_heads * c->head_dim;
    m->ctx = sh->ctx;
    m->program = sh->program;
    m->narrow = sh->narrow;
    m->narrow_mode = sh->narrow_mode;
    m->compute_units = sh->d.compute_units;
    m->mma = sh->mma;
    m->mma_emulate = sh->mma_emulate;
    m->att_tc = sh->att_tc;
    m->att_once = sh->att_once;
    m->att_tc_wg = sh->att_tc_wg;
    m->fa_wide = sh->fa_wide && sh->narrow;
    m->mv_mma = sh->mv_mma;
    m->wgp = sh->wgp;
    m->wgmma = sh->wgmma && sh->wgp;
    m->verbose = sh->verbose;
    m->att_hg = sh->att_hg;
    m->att_splits[0] = sh->att_splits[0];
    m->att_splits[1] = sh->att_splits[1];
    m->mvx = sh->mvx;
    m->mm_br = sh->mm_br;
    m->mm_bt = sh->mm_bt;
    m->mm_wg = sh->mm_wg;
    m->mm_ksplit = sh->mm_ksplit;
    m->mm_tail = sh->mm_tail;
    m->mvb_r = sh->mvb_r;
    m->mm_token_major = sh->mm_token_major;
    m->mm_glu = sh->mm_glu, m->mm_defer = sh->mm_defer;
    m->fa_wg = sh->fa_wg;
    m->weights = sh->weights;
    m->w_base = sh->w_base;
    m->mv_groups = sh->mv_groups;
    m->pf_cap = sh->pf_cap;
    m->act_align = sh->act_align;
    cl_ulong max_alloc = sh->max_alloc;
    const char *name = sh->d.name;
    static atomic_ulong next_uid;
    m->uid = atomic_fetch_add(&next_uid, 1) + 1;
    const char *prof = getenv("Q3_OPENCL_PROFILE");
    m->host_timing = prof && *prof && strcmp(prof, "0") != 0;
    m->profile = m->host_timing && strcmp(prof, "host") != 0;
    m->chain_trace = sh->chain_trace; /* before the activations are laid out: their room for the stamps */
    cl_int rc;
    m->queue = clCreateCommandQueue(m->ctx, sh->d.id, m->profile ? CL_QUEUE_PROFILING_ENABLE : 0, &rc);
    CHECK(rc, "clCreateCommandQueue");
    if (create_kernels(m, err)) return -1;

    /* The tokens a pass takes: BIG_BATCH on a big GPU, halved while the
     * activations would not fit the device's largest buffer; Q3_OPENCL_BATCH
     * (tuning) asks for another. */
    const char *batch_env = getenv("Q3_OPENCL_BATCH");
    int batch = sh->d.is_gpu && sh->d.global_mem >= BIG_BATCH_MEM ? BIG_BATCH : MAX_BATCH;
    if (batch_env && atoi(batch_env) > 0) batch = atoi(batch_env) < BATCH_LIMIT ? atoi(batch_env) : BATCH_LIMIT;
    for (;;) {
        m->n_regions = 0, m->act_bytes = 0;
        reserve_activations(m, batch);
        if (m->act_bytes <= max_alloc || batch <= MAX_BATCH) break;
        batch /= 2;
    }
    b->max_batch = batch;
    m->stage = malloc(((size_t)batch + 1) * sizeof *m->stage);
    if (!m->stage) {
        q3_set_err(err, "%s: out of memory", f->path);
        return -1;
    }
    uint64_t n_ctx = (uint64_t)m->base.n_ctx, half = c->head_dim / 2;
    if (m->act_bytes > max_alloc) {
        q3_set_err(err, "%s: OpenCL: the activations (%llu bytes in one buffer) exceed the device's largest buffer "
                   "(%llu bytes) on %s (try a smaller --ctx)", f->path, (unsigned long long)m->act_bytes,
                   (unsigned long long)max_alloc, name);
        return -1;
    }
    rc = act_create(m);
    m->kcache = calloc(c->num_layers, sizeof *m->kcache);
    m->vcache = calloc(c->num_layers, sizeof *m->vcache);
    if (!m->kcache || !m->vcache) {
        q3_set_err(err, "%s: out of memory", f->path);
        return -1;
    }
    for (uint32_t l = 0; l < c->num_layers; l++) {
        m->kcache[l] = dev_alloc(m, n_ctx * m->kv_dim * 2, &rc);
        m->vcache[l] = dev_alloc(m, n_ctx * m->kv_dim * 2, &rc);
    }
    CHECK(rc, "allocating activations and the KV cache (try a smaller --ctx)");

    /* RoPE tables, the same as the CPU backend's. */
    float *cs = malloc(n_ctx * half * sizeof *cs), *sn = malloc(n_ctx * half * sizeof *sn);
    if (!cs || !sn) {
        free(cs);
        free(sn);
        q3_set_err(err, "%s: out of memory for RoPE tables", f->path);
        return -1;
    }
    q3_rope_tables(c, (int)n_ctx, cs, sn);
    rc = clEnqueueWriteBuffer(m->queue, m->rope_cos, CL_TRUE, 0, n_ctx * half * 4, cs, 0, NULL, NULL);
    if (rc == CL_SUCCESS) rc = clEnqueueWriteBuffer(m->queue, m->rope_sin, CL_TRUE, 0, n_ctx * half * 4, sn, 0, NULL, NULL);
    free(cs);
    free(sn);
    CHECK(rc, "uploading RoPE tables");
    cl_int zero = 0; /* attention_tc's counts start at zero and each launch leaves them there */
    CHECK(clEnqueueFillBuffer(m->queue, m->att_cnt, &zero, sizeof zero, 0,
                              ((size_t)c->num_heads + (m->att_trace_ints ? 1 : 0)) * 4, 0, NULL, NULL),
          "clearing the attention counts");
    CHECK(clFinish(m->queue), "finishing the upload");

    /* Record the single-token pass once per split count: decode then only enqueues. */
    for (int p = 0; p < 2; p++)
        if (record_plan(m, p, m->att_splits[p], "the decode pass", err)) return -1;
    return chain_setup(m, err);
}

/* The state's layout (lib_state.c) is [kv head][n][HEAD_DIM] for K and for V. V on
 * the device is that with n_ctx rows a head: one rectangular copy. K on the device is
 * [kv head][HEAD_DIM / 8][n_ctx][8] (qwen3_attention.cl): its first n positions are
 * copied as [kv head][HEAD_DIM / 8][n][8] into host memory (one rectangular copy)
 * and transposed there, 8 halves (16 bytes) at a time. */
typedef struct {
    size_t k_region[3], v_region[3];
    size_t k_dev_pitch, v_dev_pitch, k_host_pitch, v_host_pitch;
} kv_copy_shape;

static kv_copy_shape kv_shape(const ocl_backend *m, int n)
{
    size_t D = m->cfg.head_dim, G = m->cfg.num_kv_heads, n_ctx = (size_t)m->base.n_ctx;
    return (kv_copy_shape){.k_region = {(size_t)n * 16, G * (D / 8), 1},
                           .v_region = {(size_t)n * D * 2, G, 1},
                           .k_dev_pitch = n_ctx * 16,
                           .v_dev_pitch = n_ctx * D * 2,
                           .k_host_pitch = (size_t)n * 16,
                           .v_host_pitch = (size_t)n * D * 2};
}

/* K from the device's order, [kv head][HEAD_DIM / 8][n][8], into the state's,
 * [kv head][n][HEAD_DIM] (from_device), or back. */
static void k_transpose(const ocl_backend *m, int n, const char *src, char *dst, int from_device)
{
    size_t D8 = m->cfg.head_dim / 8;
    for (size_t g = 0; g < m->cfg.num_kv_heads; g++)
        for (size_t d = 0; d < D8; d++)
            for (size_t p = 0; p < (size_t)n; p++) {
                size_t dev = ((g * D8 + d) * (size_t)n + p) * 16, state = ((g * (size_t)n + p) * D8 + d) * 16;
                memcpy(dst + (from_device ? state : dev), src + (from_device ? dev : state), 16);
            }
}

static int ocl_kv_save(q3_backend *b, uint32_t layer, int n, void *k, void *v, q3_err *err)
{
    ocl_backend *m = (ocl_backend *)b;
    kv_copy_shape sh = kv_shape(m, n);
    const size_t zero[3] = {0, 0, 0};
    char *t = malloc((size_t)n * m->kv_dim * 2);
    if (!t) {
        q3_set_err(err, "%s: out of memory saving the KV cache", b->file->path);
        return -1;
    }
    cl_int rc = clEnqueueReadBufferRect(m->queue, m->kcache[layer], CL_FALSE, zero, zero, sh.k_region, sh.k_dev_pitch,
                                        0, sh.k_host_pitch, 0, t, 0, NULL, NULL);
    if (rc == CL_SUCCESS)
        rc = clEnqueueReadBufferRect(m->queue, m->vcache[layer], CL_FALSE, zero, zero, sh.v_region, sh.v_dev_pitch, 0,
                                     sh.v_host_pitch, 0, v, 0, NULL, NULL);
    cl_int done = clFinish(m->queue); /* t is freed below: nothing may still write into it */
    if (rc == CL_SUCCESS) rc = done;
    if (rc == CL_SUCCESS) k_transpose(m, n, t, k, 1);
    free(t);
    CHECK(rc, "reading the KV cache");
    return 0;
}

static int ocl_kv_load(q3_backend *b, uint32_t layer, int n, const void *k, const void *v, q3_err *err)
{
    ocl_backend *m = (ocl_backend *)b;
    kv_copy_shape sh = kv_shape(m, n);
    const size_t zero[3] = {0, 0, 0};
    char *t = malloc((size_t)n * m->kv_dim * 2);
    if (!t) {
        q3_set_err(err, "%s: out of memory loading the KV cache", b->file->path);
        return -1;
    }
    k_transpose(m, n, k, t, 0);
    cl_int rc = clEnqueueWriteBufferRect(m->queue, m->kcache[layer], CL_FALSE, zero, zero, sh.k_region, sh.k_dev_pitch,
                                         0, sh.k_host_pitch, 0, t, 0, NULL, NULL);
    if (rc == CL_SUCCESS)
        rc = clEnqueueWriteBufferRect(m->queue, m->vcache[layer], CL_FALSE, zero, zero, sh.v_region, sh.v_dev_pitch, 0,
                                      sh.v_host_pitch, 0, v, 0, NULL, NULL);
    cl_int done = clFinish(m->queue); /* the host memory must outlive the copies */
    if (rc == CL_SUCCESS) rc = done;
    free(t);
    CHECK(rc, "writing the KV cache");
    return 0;
}

static int ocl_device_count(q3_err *err)
{
    int n = q3_cl_count_devices();
    if (n == 0)
        q3_set_err(err, "no OpenCL device found (install an ICD such as pocl-opencl-icd, or set OCL_ICD_VENDORS)");
    return n;
}

static int ocl_device_describe(int i, char *buf, size_t cap, q3_err *err)
{
    q3_cl_device d;
    if (q3_cl_pick_device(i, &d, err)) return -1;
    snprintf(buf, cap, "%s | %s | %s | %u compute units | %.1f GiB%s", d.name, d.platform_name, d.c_version,
             d.compute_units, (double)d.global_mem / (1u << 30), d.is_gpu ? " | GPU" : "");
    return 0;
}

const q3_backend_impl q3_backend_opencl = {
    .name = "opencl",
    .size = sizeof(ocl_backend),
    .max_batch = MAX_BATCH,
    .resolve_device = ocl_resolve_device,
    .shared_create = ocl_shared_create,
    .shared_free = ocl_shared_free,
    .init = ocl_init,
    .pass = ocl_pass,
    .decode_batch = ocl_decode_batch,
    .decode_batch_greedy = ocl_decode_batch_greedy,
    .max_decode = DEC_BATCH_MAX,
    .release = ocl_release,
    .logits_buffer = ocl_logits_buffer,
    .device_count = ocl_device_count,
    .device_describe = ocl_device_describe,
    .kv_save = ocl_kv_save,
    .kv_load = ocl_kv_load,
    .env_help = Q3_ENV_HELP_OPENCL,
};
