/* qwen3_shared.h - the constants the OpenCL host code (runtime/backend_opencl.c) and
 * the kernels (kernels/qwen3.cl) must agree on, defined once. The host includes this
 * file; the build embeds it as the first source string of the OpenCL program, so the
 * kernels see the same text. Plain #defines only: it is read as C and as OpenCL C.
 * Per-model values (HEAD_DIM, ATT_HG, MVX, MVX_NORM) are not here: the host passes
 * them as -D options when it builds the program for a model. */
#ifndef Q3_QWEN3_SHARED_H
#define Q3_QWEN3_SHARED_H

/* Work-group sizes, each kernel's reqd_work_group_size. */
#define MV_WG 256   /* matmul_small and matvec: 4 groups of 64 threads, each one uint4 of a tile */
#define NORM_WG 256 /* rmsnorm */
#define ROPE_WG 64  /* qk_norm_rope */
#define ATT_WG 128  /* attention (decode) and attention_prefill: one key position per thread */
#define GM_WG 256   /* matmul_gemm */
#ifndef MM_WG
#define MM_WG 128   /* matmul_mma: 4 warps (Q3_OPENCL_MM_WG=256, a tuning knob, passes -DMM_WG: 8) */
#endif
#ifndef FA_WG
#define FA_WG 128   /* attention_mma: 4 warps, 16 query rows each (Q3_OPENCL_FA_WG=256, a tuning knob: 8) */
#endif
#ifndef ATT_TC_WG
#define ATT_TC_WG 128 /* attention_tc: 4 warps (Q3_OPENCL_ATT_TC_WG=256, a tuning knob, passes -DATT_TC_WG: 8) */
#endif

#define TOKB 4 /* tokens per matmul_small work-group: each weight load serves TOKB tokens */
#define GM_R 64 /* matmul_gemm: rows of a work-group's block */
#define GM_T 64 /* ... and tokens */
#ifndef MM_RP
#define MM_RP 2 /* matmul_mma: 16-row panels a warp, each x fragment serving both (Q3_OPENCL_MM_RP=1, a tuning knob) */
#endif
#define MM_BR (MM_WG / 2 * MM_RP) /* matmul_mma: rows of a work-group's block */
#ifndef MM_BT
#define MM_BT 128 /* ... and tokens (64 or 128; Q3_OPENCL_MM_BT, a tuning knob, passes -DMM_BT) */
#endif
#define QB 4    /* attention_prefill: query tokens per work-group */
#define FA_Q (FA_WG / 2) /* attention_mma: query tokens per work-group, 16 a warp (at most 2 FA_K: Q is staged in the K and V tiles) */
#define FA_K 64 /* attention_mma: key positions per step */
#define FA_MAX_D 128 /* attention_mma: the largest head_dim (its K and V tiles fill 32 KiB of local memory) */

/* matmul_small / matvec: how y is written, and how x is transformed while staged. */
#define MODE_STORE 0
#define MODE_ADD 1    /* y += W x: the residual add of o_proj and down_proj */
#define XMODE_PLAIN 0
#define XMODE_NORM 1 /* x is RMS-normalised with the weight at norm_off (the layer's norm fused in) */
#define XMODE_SILU 2 /* x = silu(x) * x2 (gate and up, fused into down_proj) */
#define XMODE_ATTN 3 /* x = the nsplit partial attention outputs in x, their (max, sum) in x2, combined */
#define XMODE_BF16 4 /* matvec_mma: x is each token's staged x in BF16 (matvec_stage's, ldx BF16 apart) */
/* matvec_chain's table: a row of MVP_N ulongs a product, matvec's arguments (MM_SMALL_ARGS,
 * without W and act) in this order, eps as its float's bits, then the product's grid in
 * work-groups. The host writes rows (backend_opencl.c, mv_row), the kernel reads them. */
#define MVP_COLS 0
#define MVP_X_OFF 1
#define MVP_X2_OFF 2
#define MVP_LDX 3
#define MVP_XMODE 4
#define MVP_NORM_OFF 5
#define MVP_EPS 6
#define MVP_NTOK 7
#define MVP_YMODE 8
#define MVP_RSPLIT 9
#define MVP_NSPLIT 10
#define MVP_OFF0 11 /* then ROWS0, Y0, LD0; matrix i's four at + 4 i */
#define MVP_ROWS0 12
#define MVP_Y0 13
#define MVP_LD0 14
#define MVP_PF_OFF 23
#define MVP_PF_LINES 24
#define MVP_GROUPS 25
#define MVP_N 26
#define CHAIN_SYNC_INTS 4 /* matvec_chain's arrivals, work-groups done, timed-out flag, launches traced */
/* Q3_OPENCL_CHAIN_TRACE (a diagnostic, NVIDIA): after the counts, each work-group's %globaltimer
 * stamps (low 32 bits, ns) of the last CHAIN_TRACE_LAUNCHES launches, CHAIN_TRACE_PH products
 * each: entered (before the barrier's arrival), waited, x staged, its items done */
#define CHAIN_TRACE_LAUNCHES 96
#define CHAIN_TRACE_PH 8
#define CHAIN_TRACE_STAMPS 4
/* ... and attention_tc's, after its counts at cnt_off: the work-groups started (at nq ints), then
 * ATT_TRACE_LAUNCHES launches of (nq / ATT_HG) x ATT_TRACE_SPLITS work-groups (split sp, column c
 * at sp x columns + c), each: started, q and k prepared, its positions done, ended (the last of a
 * column after the splits' combine) */
#define ATT_TRACE_LAUNCHES 96
#define ATT_TRACE_SPLITS 32
#define ATT_TRACE_STAMPS 4
#define ATT_COMBINE_MAX 1024 /* the most (split, head) pairs o_proj combines */
#define ATT_ONCE_LOADS 16 /* attention_tc combining the splits itself: the loads it keeps in flight a thread */

#define ATT_MAX_D 256 /* the largest head_dim the attention kernels take */

/* A batched decode step (matvec_stage, matvec_batch, attention_batch): up to
 * DEC_BATCH_MAX sequences, one token each. The staging buffer then holds, as ints,
 * [unused, token of each sequence, their positions, attention splits, cache sizes],
 * each list DEC_BATCH_MAX long. The tokens start at 1, where embed reads them. */
#define DEC_BATCH_MAX 16
/* matvec_batch: rows a thread, items a work-group (1, 2 or 4; the host passes
 * Q3_OPENCL_MVB_R's with -D). H200, 16 tokens: 2 (113-123 registers, two
 * work-groups an SM) ahead of 4 (193, one) and of 1 at every size (docs/serve.md). */
#ifndef MVB_R
#define MVB_R 2
#endif
#define DB_TOK 1
#define DB_POS (DB_TOK + DEC_BATCH_MAX)
#define DB_SPLIT (DB_POS + DEC_BATCH_MAX)
#define DB_NCTX (DB_SPLIT + DEC_BATCH_MAX)
#define DB_STAGE_INTS (DB_NCTX + DEC_BATCH_MAX)
#define MVX_LOCAL_SPARE ((MV_WG + ATT_COMBINE_MAX) * 4) /* matvec's local bytes beside the staged x */

#endif
