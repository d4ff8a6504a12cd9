/* qwen3_attention.cl - attention over the KV cache (decode and prompts) and the
 * q/k norm + RoPE that fills the cache. Part of the program qwen3.cl starts
 * (bf16(), the shared constants of qwen3_shared.h).
 *
 * The KV cache is F16 (IEEE half), written with vstore_half_rte (round to
 * nearest even, as the CPU backend's cache) and read back exactly:
 *  - K of a layer: [kv head][HEAD_DIM / 8][n_ctx][8 halves]. The attention
 *    kernels give each thread one key position, so a warp reads 32 consecutive
 *    positions' 16 bytes of one column group: coalesced. A 64-position tile of
 *    a head is HEAD_DIM / 8 contiguous runs of 1 KiB.
 *  - V of a layer: [kv head][n_ctx][HEAD_DIM]: a row per position, read by a
 *    group of threads side by side. */
#define D4 (HEAD_DIM / 4)
#define D8 (HEAD_DIM / 8)
#define ATT_GROUPS (ATT_WG / D4) /* attention_prefill: V rows read side by side, a float4 a thread */
#define ATT_G8 (ATT_WG / D8)     /* attention: V rows read side by side, 8 halves a thread */
#define ATT_RED 16               /* two-level reductions: ATT_RED partials */

inline float hsum4(float4 v) { return (v.x + v.y) + (v.z + v.w); }
inline float hsum8(float8 v) { return hsum4(v.lo + v.hi); }
inline float lane4(float4 v, uint i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

inline ulong kt_index(uint g, uint i, uint n_ctx, uint p) /* half index of element i of K[p] of KV head g */
{
    return (((ulong)g * D8 + i / 8) * n_ctx + p) * 8 + i % 8;
}

inline ulong v_index(uint g, uint i, uint n_ctx, uint p) /* half index of element i of V[p] of KV head g */
{
    return ((ulong)g * n_ctx + p) * HEAD_DIM + i;
}

/* IEEE half bits (the low 16 of h) to float, exactly (the exponent rebased by a
 * multiply by 2^112, as kernels/cpu_half.h): for halves already in registers. */
inline float half_bits(uint h)
{
    return as_float(as_uint(as_float((h & 0x7fffu) << 13) * 0x1p112f) | ((h & 0x8000u) << 16));
}

/* The two halves of w (low first) to floats. On NVIDIA one cvt.f32.f16 each (exact, as
 * half_bits for every finite half) instead of half_bits' six integer and float
 * operations: decode attention widens 8 V halves a row a thread, and at depth it is
 * bound by its instructions, not by memory (H200: an L2 prefetch of its K and V lost). */
inline float2 half2_bits(uint w)
{
#if defined(Q3_NV_MMA) && !defined(Q3_MMA_EMULATE)
    float a, b;
    asm("{.reg .b16 q3l, q3h; mov.b32 {q3l, q3h}, %2; cvt.f32.f16 %0, q3l; cvt.f32.f16 %1, q3h;}"
        : "=f"(a), "=f"(b)
        : "r"(w));
    return (float2)(a, b);
#else
    return (float2)(half_bits(w), half_bits(w >> 16));
#endif
}

inline float8 half8_bits(uint4 w)
{
    return (float8)(half2_bits(w.x), half2_bits(w.y), half2_bits(w.z), half2_bits(w.w));
}

/* The q/k norm and RoPE are computed in the same order by qk_norm_rope (a
 * prompt) and attention (a decode step), so that a position's K rounds to the
 * same halves whichever wrote it: the sum of squares as ATT_RED partial sums of
 * consecutive elements, then the partials in order; one rotation helper. */
#define NORM_PART (HEAD_DIM / ATT_RED) /* elements per partial sum */

inline float sumsq_part(__local const float *v, uint j) /* partial j of a head's sum of squares */
{
    float s = 0.0f;
    for (uint k = 0; k < NORM_PART; k++) s += v[j * NORM_PART + k] * v[j * NORM_PART + k];
    return s;
}

inline float head_rms_inv(__local const float *part, float eps) /* 1 / rms from the ATT_RED partials */
{
    float t = 0.0f;
    for (uint k = 0; k < ATT_RED; k++) t += part[k];
    return 1.0f / sqrt(t / (float)HEAD_DIM + eps);
}

/* Element i of a normalised head after rotate-half RoPE: x[i] c - x[i + half] s
 * below half, x[i] c + x[i - half] s above. */
inline float rope_at(__local const float *xn, uint i, float c, float s)
{
    const uint half_d = HEAD_DIM / 2;
    return i < half_d ? xn[i] * c - xn[i + half_d] * s : xn[i] * c + xn[i - half_d] * s;
}

/* Per head: q_norm / k_norm, rotate-half RoPE, and K, V into the cache.
 * Work-group (ROPE_WG) per (head, token); heads 0..nq-1 are queries, then KV heads. */
__kernel __attribute__((reqd_work_group_size(ROPE_WG, 1, 1)))
void qk_norm_rope(__global float *q, __global float *k, __global const float *v, __global const ushort *W,
                  ulong qn_off, ulong kn_off, __global const float *cos_t, __global const float *sin_t,
                  __global half *kcache, __global half *vcache, uint nq, uint nkv, uint n_ctx,
                  __global const int *stage, float eps)
{
    __local float xl[HEAD_DIM], part[ATT_RED];
    const uint half_d = HEAD_DIM / 2;
    uint h = get_group_id(0), t = get_group_id(1), l = get_local_id(0), p = (uint)stage[0] + t;
    int is_q = h < nq;
    uint hh = is_q ? h : h - nq;
    __global float *vec = is_q ? q + ((ulong)t * nq + hh) * HEAD_DIM : k + ((ulong)t * nkv + hh) * HEAD_DIM;
    ulong off = is_q ? qn_off : kn_off;
    for (uint i = l; i < HEAD_DIM; i += ROPE_WG) xl[i] = vec[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    if (l < ATT_RED) part[l] = sumsq_part(xl, l);
    barrier(CLK_LOCAL_MEM_FENCE);
    float inv = head_rms_inv(part, eps);
    for (uint i = l; i < HEAD_DIM; i += ROPE_WG) xl[i] = bf16(W[off + i]) * (xl[i] * inv); /* own elements only */
    barrier(CLK_LOCAL_MEM_FENCE);
    ulong src = ((ulong)t * nkv + hh) * HEAD_DIM;
    for (uint i = l; i < HEAD_DIM; i += ROPE_WG) {
        float r = rope_at(xl, i, cos_t[(ulong)p * half_d + i % half_d], sin_t[(ulong)p * half_d + i % half_d]);
        if (is_q) {
            vec[i] = r;
        } else {
            vstore_half_rte(r, 0, kcache + kt_index(hh, i, n_ctx, p));
            vstore_half_rte(v[src + i], 0, vcache + v_index(hh, i, n_ctx, p));
        }
    }
}

/* Reductions over an ATT_WG work-group in three barriers, not log2(ATT_WG):
 * ATT_RED threads fold ATT_WG / ATT_RED values each, then every thread folds
 * those. red holds ATT_WG + ATT_RED entries. */
inline float4 att_sum4(float4 v, __local float4 *red, uint l)
{
    red[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (l < ATT_RED) {
        float4 s = (float4)(0.0f);
        for (uint k = 0; k < ATT_WG / ATT_RED; k++) s += red[l * (ATT_WG / ATT_RED) + k];
        red[ATT_WG + l] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float4 t = (float4)(0.0f);
    for (uint k = 0; k < ATT_RED; k++) t += red[ATT_WG + k];
    barrier(CLK_LOCAL_MEM_FENCE);
    return t;
}

inline float4 att_max4(float4 v, __local float4 *red, uint l)
{
    red[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (l < ATT_RED) {
        float4 s = (float4)(-INFINITY);
        for (uint k = 0; k < ATT_WG / ATT_RED; k++) s = fmax(s, red[l * (ATT_WG / ATT_RED) + k]);
        red[ATT_WG + l] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float4 t = (float4)(-INFINITY);
    for (uint k = 0; k < ATT_RED; k++) t = fmax(t, red[ATT_WG + k]);
    barrier(CLK_LOCAL_MEM_FENCE);
    return t;
}

/* Attention of the one token of a decode step, at position last, over positions
 * 0..last. Work-group (c, sp) takes the ATT_HG query heads c ATT_HG.. (of one KV
 * group: every K and V row it reads serves all of them, side by side as the
 * lanes of a float4) and a 1/nsplit share of the positions, ATT_WG keys at a
 * time with a running max and sum per head (online softmax). It leaves each
 * head's unnormalised output and (max, sum) for o_proj to combine
 * (XMODE_ATTN). It also does qk_norm_rope's job for its heads, every input
 * loaded in one trip to memory; the work-group whose share holds position last
 * writes the new K and V (groups of the same KV head write the same values).
 * kcache / vcache are one layer's. The work of one work-group, (c, sp), is
 * ATTEND_TOKEN_BODY, shared by attention and attention_batch (one definition: a
 * batched step gives each token the bits of its own decode). */
/* The local memory ATTEND_TOKEN_BODY works in, declared by each kernel that uses it. */
/* ATTEND_PREP's: the heads' q, then the new k (row ATT_HG); the rotated q; the norms' partials */
#define ATT_PREP_LOCALS                                                                                              \
    __local float qa[ATT_HG + 1][HEAD_DIM];                                                                          \
    __local float qs[ATT_HG][HEAD_DIM];                                                                              \
    __local float part_ss[ATT_HG + 1][ATT_RED]
#define ATT_LOCALS                                                                                                   \
    ATT_PREP_LOCALS;                                                                                                 \
    __local float4 red[ATT_WG + ATT_RED];                                                                            \
    __local float4 ps[ATT_WG];                                                                                       \
    __local float8 part[ATT_HG][ATT_WG]

/* The work of one work-group (c, sp) of decode attention for one token, as a macro so that
 * each kernel using it is one function: as a function (inlined or not) it made NVIDIA's
 * compiler give `attention` 142 registers instead of 138, and single-token decode was 3 us a
 * layer slower after 4096 positions on the H200. It expects, in scope: q, k_new, v_new, cos_t,
 * sin_t, out, part_ml (this token's), kcache, vcache, W, nq, nkv, qn_off, kn_off, eps, nsplit,
 * n_ctx, last (the new position), c, sp, l and the local arrays of ATT_LOCALS.
 * ATTEND_PREP is its start, shared with the tensor-core body (attention_tc, qwen3_mma.cl, whose
 * work-groups may be larger: ATTEND_PREP_WG): the positions of the share, the heads' q
 * normalised and rotated into qs, the new K and V written (ATT_PREP_LOCALS). */
#define ATT_PREP_IT(wg_) ((HEAD_DIM + (wg_) - 1) / (wg_)) /* a thread's elements of a head */
#define ATTEND_PREP_WG(wg_)                                                                                          \
    uint h0 = c * ATT_HG, g = h0 / (nq / nkv);                                                                       \
    uint span = (last + nsplit) / nsplit, lo = sp * span, hi = min(lo + span, last + 1);                             \
    int has_last = lo <= last && last < hi;                                                                          \
    const uint half_d = HEAD_DIM / 2;                                                                                \
                                                                                                                     \
    /* q of the heads and the new k, normalised (as qk_norm_rope does) and rotated. Everything                       \
     * the three steps read from memory (q, k, v, the norms' weights, cos and sin) is asked for                     \
     * at once, into registers: one trip to memory before the first barrier, not three. */                          \
    float wq_[ATT_PREP_IT(wg_)], wk_[ATT_PREP_IT(wg_)], cs_[ATT_PREP_IT(wg_)], sn_[ATT_PREP_IT(wg_)];                 \
    float vn_[ATT_PREP_IT(wg_)];                                                                                     \
_Pragma("unroll")                                                                                                    \
    for (uint t_ = 0; t_ < ATT_PREP_IT(wg_); t_++) {                                                                 \
        uint i = l + t_ * (wg_);                                                                                     \
        if (i < HEAD_DIM) {                                                                                          \
_Pragma("unroll")                                                                                                    \
            for (uint hh = 0; hh < ATT_HG; hh++) qa[hh][i] = q[(ulong)(h0 + hh) * HEAD_DIM + i];                     \
            qa[ATT_HG][i] = k_new[(ulong)g * HEAD_DIM + i];                                                          \
            wq_[t_] = bf16(W[qn_off + i]), wk_[t_] = bf16(W[kn_off + i]);                                            \
            cs_[t_] = cos_t[(ulong)last * half_d + i % half_d], sn_[t_] = sin_t[(ulong)last * half_d + i % half_d];  \
            vn_[t_] = has_last ? v_new[(ulong)g * HEAD_DIM + i] : 0.0f;                                              \
        }                                                                                                            \
    }                                                                                                                \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                                    \
    if (l < (ATT_HG + 1) * ATT_RED) part_ss[l / ATT_RED][l % ATT_RED] = sumsq_part(qa[l / ATT_RED], l % ATT_RED);    \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                                    \
_Pragma("unroll")                                                                                                    \
    for (uint t_ = 0; t_ < ATT_PREP_IT(wg_); t_++) { /* own elements only: no barrier before */                     \
        uint i = l + t_ * (wg_);                                                                                     \
        if (i < HEAD_DIM) {                                                                                          \
_Pragma("unroll")                                                                                                    \
            for (uint hh = 0; hh < ATT_HG; hh++) qa[hh][i] = wq_[t_] * (qa[hh][i] * head_rms_inv(part_ss[hh], eps)); \
            qa[ATT_HG][i] = wk_[t_] * (qa[ATT_HG][i] * head_rms_inv(part_ss[ATT_HG], eps));                          \
        }                                                                                                            \
    }                                                                                                                \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                                    \
_Pragma("unroll")                                                                                                    \
    for (uint t_ = 0; t_ < ATT_PREP_IT(wg_); t_++) {                                                                 \
        uint i = l + t_ * (wg_);                                                                                     \
        if (i < HEAD_DIM) {                                                                                          \
_Pragma("unroll")                                                                                                    \
            for (uint hh = 0; hh < ATT_HG; hh++) qs[hh][i] = rope_at(qa[hh], i, cs_[t_], sn_[t_]);                   \
            if (has_last) { /* only the work-groups that read position last write it */                              \
                vstore_half_rte(rope_at(qa[ATT_HG], i, cs_[t_], sn_[t_]), 0, kcache + kt_index(g, i, n_ctx, last));  \
                vstore_half_rte(vn_[t_], 0, vcache + v_index(g, i, n_ctx, last));                                    \
            }                                                                                                        \
        }                                                                                                            \
    }                                                                                                                \
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE)
#define ATTEND_PREP ATTEND_PREP_WG(ATT_WG)

#define ATTEND_TOKEN_BODY                                                                                            \
    ATTEND_PREP;                                                                                                     \
    const float scale = 1.0f / sqrt((float)HEAD_DIM);                                                                \
    /* lanes past ATT_HG carry finite dummies (no -inf - -inf) and are never read */                                 \
    const float4 s_none = (float4)(-INFINITY, ATT_HG > 1 ? -INFINITY : 0.0f, ATT_HG > 2 ? -INFINITY : 0.0f,          \
                                   ATT_HG > 3 ? -INFINITY : 0.0f);                                                   \
    float4 m_run = (float4)(-INFINITY), l_sum = (float4)(0.0f);                                                      \
    float8 acc[ATT_HG];                                                                                              \
_Pragma("unroll")                                                                                                    \
    for (uint hh = 0; hh < ATT_HG; hh++) acc[hh] = (float8)(0.0f);                                                   \
    uint grp = l / D8, d8 = l % D8;                                                                                  \
    __global const half *kt = kcache + (ulong)g * D8 * n_ctx * 8;                                                    \
    __global const half *vg = vcache + v_index(g, d8 * 8, n_ctx, 0);                                                 \
    for (uint base = lo; base < hi; base += ATT_WG) {                                                                \
        uint jj = base + l, n = min((uint)ATT_WG, hi - base);                                                        \
        /* Every V row of the block is requested first, with the K loads: one                                        \
         * trip to memory, its latency hidden behind the scores and the softmax. */                                  \
        uint4 vr[D8]; /* ATT_WG / ATT_G8 rows a thread */                                                            \
_Pragma("unroll")                                                                                                    \
        for (uint r = 0; r < D8; r++) {                                                                              \
            uint k = grp + r * ATT_G8;                                                                               \
            vr[r] = k < n ? *(__global const uint4 *)(vg + (ulong)(base + k) * HEAD_DIM) : (uint4)(0);               \
        }                                                                                                            \
        float4 s = s_none;                                                                                           \
        if (jj < hi) {                                                                                               \
            float8 a[ATT_HG];                                                                                        \
_Pragma("unroll")                                                                                                    \
            for (uint hh = 0; hh < ATT_HG; hh++) a[hh] = (float8)(0.0f);                                             \
_Pragma("unroll")                                                                                                    \
            for (uint i = 0; i < D8; i++) {                                                                          \
                float8 k8 = vload_half8(0, kt + ((ulong)i * n_ctx + jj) * 8);                                        \
_Pragma("unroll")                                                                                                    \
                for (uint hh = 0; hh < ATT_HG; hh++) a[hh] += vload8(i, qs[hh]) * k8;                                \
            }                                                                                                        \
            float sc[4] = {s.x, s.y, s.z, s.w};                                                                      \
_Pragma("unroll")                                                                                                    \
            for (uint hh = 0; hh < ATT_HG; hh++) sc[hh] = hsum8(a[hh]) * scale;                                      \
            s = (float4)(sc[0], sc[1], sc[2], sc[3]);                                                                \
        }                                                                                                            \
        float4 m_new = fmax(m_run, att_max4(s, red, l));                                                             \
        float4 corr = exp(m_run - m_new); /* 0 on the first block (m_run = -inf) */                                  \
        float4 p = jj < hi ? exp(s - m_new) : (float4)(0.0f);                                                        \
        ps[l] = p;                                                                                                   \
        l_sum = l_sum * corr + p;                                                                                    \
_Pragma("unroll")                                                                                                    \
        for (uint hh = 0; hh < ATT_HG; hh++) acc[hh] *= lane4(corr, hh);                                             \
        m_run = m_new;                                                                                               \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                \
_Pragma("unroll")                                                                                                    \
        for (uint r = 0; r < D8; r++) {                                                                              \
            uint k = grp + r * ATT_G8;                                                                               \
            if (k < n) {                                                                                             \
                float8 v = half8_bits(vr[r]);                                                                        \
                float4 pk = ps[k];                                                                                   \
_Pragma("unroll")                                                                                                    \
                for (uint hh = 0; hh < ATT_HG; hh++) acc[hh] += lane4(pk, hh) * v;                                   \
            }                                                                                                        \
        }                                                                                                            \
    }                                                                                                                \
    /* The weight sums over the work-group, and each head's output over the row groups. */                           \
    float4 tot = att_sum4(l_sum, red, l);                                                                            \
_Pragma("unroll")                                                                                                    \
    for (uint hh = 0; hh < ATT_HG; hh++) part[hh][l] = acc[hh];                                                      \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                                    \
    for (uint o = l; o < ATT_HG * D8; o += ATT_WG) {                                                                 \
        uint hh = o / D8, d = o % D8, h = h0 + hh;                                                                   \
        float8 s8 = (float8)(0.0f);                                                                                  \
        for (uint k = 0; k < ATT_G8; k++) s8 += part[hh][k * D8 + d];                                                \
        vstore8(s8, d, out + ((ulong)sp * nq + h) * HEAD_DIM);                                                       \
        if (d == 0) part_ml[(sp * nq + h) * 2] = lane4(m_run, hh), part_ml[(sp * nq + h) * 2 + 1] = lane4(tot, hh);  \
    }                                                                                                                \
    do {} while (0)

/* A decode attention kernel's arguments, and the names ATTEND_PREP expects made of them
 * (attention and attention_tc). The activations are regions of one buffer (fewer
 * arguments to enqueue). */
#define ATT_TOKEN_PARAMS                                                                                             \
    __global float *act, __global half *kcache, __global half *vcache, __global const ushort *W, uint nq, uint nkv,  \
        ulong qn_off, ulong kn_off, float eps, uint nsplit, uint n_ctx, ulong q_off, ulong out_off, ulong stage_off, \
        ulong k_new_off, ulong v_new_off, ulong cos_off, ulong sin_off, ulong ml_off
#define ATT_TOKEN_SETUP                                                                                              \
    __global const float *q = act + q_off, *k_new = act + k_new_off, *v_new = act + v_new_off;                       \
    __global const float *cos_t = act + cos_off, *sin_t = act + sin_off;                                             \
    __global const int *stage = (__global const int *)(act + stage_off);                                             \
    __global float *out = act + out_off, *part_ml = act + ml_off;                                                    \
    uint c = get_group_id(0), sp = get_group_id(1), l = get_local_id(0);                                             \
    uint last = (uint)stage[0]

__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention(ATT_TOKEN_PARAMS)
{
    ATT_LOCALS;
    ATT_TOKEN_SETUP;
    ATTEND_TOKEN_BODY;
}

/* attention for the tokens of a batched decode step: work-group (c, sp, t) is
 * work-group (c, sp) of token t's own attention launch, with the position, split
 * count and cache size of sequence t from the staging buffer (DB_POS, DB_SPLIT,
 * DB_NCTX) and its caches, one layer's: kcache / vcache for t = 0, k1 / v1 ...
 * for the others. Its q, new k and v are rows t of q_off, k_new_off, v_new_off;
 * it writes its partial outputs and (max, sum) at out_off + t out_ld and
 * ml_off + t ml_ld. */
#define CACHES15(p)                                                                                                  \
    __global half *p##1, __global half *p##2, __global half *p##3, __global half *p##4, __global half *p##5,         \
        __global half *p##6, __global half *p##7, __global half *p##8, __global half *p##9, __global half *p##10,    \
        __global half *p##11, __global half *p##12, __global half *p##13, __global half *p##14,                     \
        __global half *p##15
#define PICK16(t, p, p0)                                                                                             \
    ((t) == 0 ? p0 : (t) == 1 ? p##1 : (t) == 2 ? p##2 : (t) == 3 ? p##3 : (t) == 4 ? p##4 : (t) == 5 ? p##5         \
     : (t) == 6 ? p##6 : (t) == 7 ? p##7 : (t) == 8 ? p##8 : (t) == 9 ? p##9 : (t) == 10 ? p##10                    \
     : (t) == 11 ? p##11 : (t) == 12 ? p##12 : (t) == 13 ? p##13 : (t) == 14 ? p##14 : p##15)
/* attention_batch's (and attention_batch_tc's) arguments, and token t's names made of them.
 * Work-groups past this token's split count (another token of the step has more) find
 * no position in their share and write partials o_proj never reads. They must not
 * return early: PoCL then gave wrong results, barriers or not. */
#define ATT_BATCH_PARAMS                                                                                             \
    __global float *act, __global half *kcache0, __global half *vcache0, __global const ushort *W, uint nq,          \
        uint nkv, ulong qn_off, ulong kn_off, float eps, uint nsplit_unused, uint n_ctx_unused, ulong q_off,         \
        ulong out_off, ulong stage_off, ulong k_new_off, ulong v_new_off, ulong cos_off, ulong sin_off,              \
        ulong ml_off, ulong out_ld, ulong ml_ld, CACHES15(k), CACHES15(v)
#define ATT_BATCH_SETUP                                                                                              \
    uint c = get_group_id(0), sp = get_group_id(1), t = get_group_id(2), l = get_local_id(0);                        \
    __global const int *stage = (__global const int *)(act + stage_off);                                             \
    uint nsplit = (uint)stage[DB_SPLIT + t], n_ctx = (uint)stage[DB_NCTX + t], last = (uint)stage[DB_POS + t];      \
    ulong qd = (ulong)nq * HEAD_DIM, kvd = (ulong)nkv * HEAD_DIM;                                                    \
    __global const float *q = act + q_off + t * qd, *k_new = act + k_new_off + t * kvd,                              \
                         *v_new = act + v_new_off + t * kvd;                                                         \
    __global const float *cos_t = act + cos_off, *sin_t = act + sin_off;                                             \
    __global float *out = act + out_off + t * out_ld, *part_ml = act + ml_off + t * ml_ld;                           \
    __global half *kcache = PICK16(t, k, kcache0), *vcache = PICK16(t, v, vcache0)

__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention_batch(ATT_BATCH_PARAMS)
{
    ATT_LOCALS;
    ATT_BATCH_SETUP;
    ATTEND_TOKEN_BODY;
}

/* Causal attention for a prompt, on any device: one work-group per (head, block
 * of QB consecutive tokens), so each K and V row read serves QB queries. Online
 * softmax as in attention, with the running max, sum and output per query. */
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention_prefill(__global const float *q, __global const half *kcache, __global const half *vcache,
                       __global float *out, uint nq, uint nkv, uint n_tok, __global const int *stage, uint n_ctx,
                       uint out_bf16)
{
    __local float4 red4[ATT_WG + ATT_RED];
    __local float4 ps4[ATT_WG];
    __local float8 qs[QB][D8];
    __local float4 part[ATT_WG];
    uint h = get_group_id(0), t0 = get_group_id(1) * QB, l = get_local_id(0);
    uint pos = (uint)stage[0], g = h / (nq / nkv);
    uint nt = min((uint)QB, n_tok - t0), first = pos + t0, last = first + nt - 1;
    uint grp = l / D4, d4 = l % D4;
    for (uint i = l; i < QB * D8; i += ATT_WG) {
        uint qi = i / D8, c = i % D8, tq = t0 + min(qi, nt - 1);
        qs[qi][c] = vload8(c, q + ((ulong)tq * nq + h) * HEAD_DIM);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float scale = 1.0f / sqrt((float)HEAD_DIM);
    float4 m_run = (float4)(-INFINITY), l_sum = (float4)(0.0f);
    float4 acc0 = (float4)(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    __global const half *kt = kcache + (ulong)g * D8 * n_ctx * 8;
    for (uint base = 0; base <= last; base += ATT_WG) {
        uint jj = base + l;
        float4 s = (float4)(-INFINITY);
        if (jj <= last) {
            float8 d0 = (float8)(0.0f), d1 = d0, d2 = d0, d3 = d0;
#pragma unroll
            for (uint i = 0; i < D8; i++) {
                float8 k = vload_half8(0, kt + ((ulong)i * n_ctx + jj) * 8);
                d0 += qs[0][i] * k;
                d1 += qs[1][i] * k;
                d2 += qs[2][i] * k;
                d3 += qs[3][i] * k;
            }
            /* query i (token t0 + i) sees positions up to first + i */
            s.x = jj <= first ? hsum8(d0) * scale : -INFINITY;
            s.y = jj <= first + 1 ? hsum8(d1) * scale : -INFINITY;
            s.z = jj <= first + 2 ? hsum8(d2) * scale : -INFINITY;
            s.w = jj <= first + 3 ? hsum8(d3) * scale : -INFINITY;
        }
        /* The first block holds position 0, which every query sees: m_new is finite. */
        float4 m_new = fmax(m_run, att_max4(s, red4, l));
        float4 corr = exp(m_run - m_new);
        float4 p = exp(s - m_new);
        ps4[l] = p;
        l_sum = l_sum * corr + p;
        acc0 *= corr.x, acc1 *= corr.y, acc2 *= corr.z, acc3 *= corr.w;
        m_run = m_new;
        barrier(CLK_LOCAL_MEM_FENCE);
        uint n = min((uint)ATT_WG, last - base + 1);
        __global const half *vb = vcache + v_index(g, 0, n_ctx, base);
        for (uint k = grp; k < n; k += ATT_GROUPS) {
            float4 v = vload_half4(d4, vb + (ulong)k * HEAD_DIM), pk = ps4[k];
            acc0 += pk.x * v, acc1 += pk.y * v, acc2 += pk.z * v, acc3 += pk.w * v;
        }
    }
    float4 tot = att_sum4(l_sum, red4, l);
    for (uint qi = 0; qi < QB; qi++) {
        part[l] = qi == 0 ? acc0 : qi == 1 ? acc1 : qi == 2 ? acc2 : acc3;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < D4 && qi < nt) {
            float4 s4 = (float4)(0.0f);
            for (uint k = 0; k < ATT_GROUPS; k++) s4 += part[k * D4 + l];
            float den = qi == 0 ? tot.x : qi == 1 ? tot.y : qi == 2 ? tot.z : tot.w;
            ulong o = ((ulong)(t0 + qi) * nq + h) * HEAD_DIM;
            float4 r = s4 / den;
            if (out_bf16) /* BF16 pairs: the tensor-core GEMM's input */
                vstore2((uint2)(bf16_pack(r.x, r.y), bf16_pack(r.z, r.w)), 0, (__global uint *)out + o / 2 + 2 * l);
            else
                vstore4(r, l, out + o);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
