/* qwen3.cl - the Qwen3 graph for OpenCL C 1.2 devices.
 * Weights stay BF16 in the file's R16C32 tiled layout (spec.md 8) in one device
 * buffer; a BF16 is widened by a shift (as_float(bits << 16)). Activations and
 * the KV cache are f32.
 *
 * A tile is 16 rows x 32 columns, row-major: 1 KiB = 64 uint4, and uint4 j of a
 * tile holds row j / 4, columns 8 (j % 4) .. 8 (j % 4) + 7. */

#ifndef HEAD_DIM
#define HEAD_DIM 128 /* the host builds with -DHEAD_DIM=<config head_dim> */
#endif
#define TOKB 4     /* tokens per matmul_small work-group: each weight load serves 4 tokens */
#define MV_WG 256  /* matmul_small: 4 groups of 64 threads, each group one uint4 of a tile */
#define MODE_STORE 0
#define MODE_ADD 1    /* y += W x: the residual add of o_proj and down_proj */

inline float bf16_lo(uint w) { return as_float(w << 16); }
inline float bf16_hi(uint w) { return as_float(w & 0xffff0000u); }
inline float bf16(ushort h) { return as_float((uint)h << 16); }

inline float dot8(uint4 w, float4 a, float4 b)
{
    return bf16_lo(w.x) * a.x + bf16_hi(w.x) * a.y + bf16_lo(w.y) * a.z + bf16_hi(w.y) * a.w +
           bf16_lo(w.z) * b.x + bf16_hi(w.z) * b.y + bf16_lo(w.w) * b.z + bf16_hi(w.w) * b.w;
}

#define XCH 1024 /* columns of x staged in local memory at a time */
#define UNR 8    /* tiles per thread per chunk: XCH / 32 columns / 4 groups */
#define XMODE_PLAIN 0
#define XMODE_NORM 1 /* x is RMS-normalised with the weight at norm_off (the layer's norm fused in) */
#define XMODE_SILU 2 /* x = silu(x) * x2 (gate and up, fused into down_proj) */
#define XMODE_ATTN 3 /* x = the nsplit partial attention outputs in x, their (max, sum) in x2, combined */
#define ATT_COMBINE_MAX 1024 /* nsplit x heads */

/* Matrix times a few tokens (decode, short prompts). One work-group per 16-row
 * panel and block of TOKB tokens; up to three matrices that share x run in one
 * launch (q, k, v; gate, up), their panels numbered one after another. Each
 * thread keeps UNR tile loads in flight (the next chunk's are issued before
 * this chunk's products); x is staged, transformed per xmode, in local memory. */
__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matmul_small(__global const uint4 *W, uint cols, __global const float *x,
                  __global const float *x2, uint ldx, uint xmode, ulong norm_off, float eps, uint n_tok, uint ymode,
                  uint rsplit, uint nsplit,
                  ulong off0, uint rows0, __global float *y0, uint ld0,
                  ulong off1, uint rows1, __global float *y1, uint ld1,
                  ulong off2, uint rows2, __global float *y2, uint ld2)
{
    __local float4 xs[TOKB][XCH / 4];
    __local float red[TOKB][MV_WG];
    __local float inv[TOKB];
    /* rsplit (1, 2 or 4) work-groups share a panel, each taking 16 / rsplit of its
     * rows: more work-groups in flight for matrices of few panels. */
    uint l = get_local_id(0), tb = get_group_id(1) * TOKB, panel = get_group_id(0) / rsplit;
    uint part = get_group_id(0) % rsplit, lanes = 64 / rsplit, nsub = MV_WG / lanes, per_chunk = UNR / rsplit;
    uint nt = min((uint)TOKB, n_tok - tb);
    uint col_tiles = (cols + 31) / 32;

    /* Which matrix this panel belongs to. */
    ulong off = off0;
    uint rows = rows0, ld = ld0;
    __global float *y = y0;
    uint p0 = (rows0 + 15) / 16, p1 = (rows1 + 15) / 16;
    if (panel >= p0) {
        panel -= p0;
        if (panel < p1) off = off1, rows = rows1, y = y1, ld = ld1;
        else panel -= p1, off = off2, rows = rows2, y = y2, ld = ld2;
    }

    uint jl = l % lanes, j = part * lanes + jl, sub = l / lanes, c0 = (j & 3) * 8;
    __global const uint4 *P = W + off + (ulong)panel * col_tiles * 64 + j;
    uint4 wb[UNR];
    for (uint u = 0; u < UNR; u++) {
        uint c = sub + nsub * u;
        wb[u] = u < per_chunk && c < col_tiles ? P[(ulong)c * 64] : (uint4)(0);
    }

    __global const ushort *g = (__global const ushort *)W + norm_off;
    if (xmode == XMODE_NORM) {
        for (uint t = 0; t < nt; t++) {
            __global const float *xt = x + (ulong)(tb + t) * ldx;
            float ss = 0.0f;
            for (uint i = l; i < cols; i += MV_WG) ss += xt[i] * xt[i];
            red[0][l] = ss;
            barrier(CLK_LOCAL_MEM_FENCE);
            for (uint s = MV_WG / 2; s > 0; s >>= 1) {
                if (l < s) red[0][l] += red[0][l + s];
                barrier(CLK_LOCAL_MEM_FENCE);
            }
            if (l == 0) inv[t] = 1.0f / sqrt(red[0][0] / (float)cols + eps);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }

    /* XMODE_ATTN: each split's weight per head, exp(max_s - max) / sum, once. */
    __local float attw[ATT_COMBINE_MAX];
    if (xmode == XMODE_ATTN) {
        uint nh = cols / HEAD_DIM;
        for (uint h = l; h < nh; h += MV_WG) {
            float mx = -INFINITY, den = 0.0f;
            for (uint sp = 0; sp < nsplit; sp++) mx = fmax(mx, x2[(sp * nh + h) * 2]);
            for (uint sp = 0; sp < nsplit; sp++) den += exp(x2[(sp * nh + h) * 2] - mx) * x2[(sp * nh + h) * 2 + 1];
            for (uint sp = 0; sp < nsplit; sp++) attw[sp * nh + h] = exp(x2[(sp * nh + h) * 2] - mx) / den;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    float acc[TOKB];
    for (uint t = 0; t < TOKB; t++) acc[t] = 0.0f;
    uint n_chunks = (cols + XCH - 1) / XCH;
    for (uint ch = 0; ch < n_chunks; ch++) {
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint t = 0; t < nt; t++) {
            ulong row_off = (ulong)(tb + t) * ldx;
            __local float *xl = (__local float *)xs[t];
            for (uint i = l; i < XCH; i += MV_WG) {
                uint col = ch * XCH + i;
                float v = 0.0f;
                if (col < cols) {
                    v = x[row_off + col];
                    if (xmode == XMODE_NORM) v = (v * inv[t]) * bf16(g[col]);
                    else if (xmode == XMODE_SILU) v = v / (1.0f + exp(-v)) * x2[row_off + col];
                    else if (xmode == XMODE_ATTN) {
                        uint h = col / HEAD_DIM, nh = cols / HEAD_DIM;
                        v = 0.0f;
                        for (uint sp = 0; sp < nsplit; sp++) v += attw[sp * nh + h] * x[(ulong)sp * cols + col];
                    }
                }
                xl[i] = v;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        uint4 cur[UNR];
        for (uint u = 0; u < UNR; u++) cur[u] = wb[u];
        if (ch + 1 < n_chunks)
            for (uint u = 0; u < UNR; u++) {
                uint c = (ch + 1) * (XCH / 32) + sub + nsub * u;
                wb[u] = u < per_chunk && c < col_tiles ? P[(ulong)c * 64] : (uint4)(0);
            }
        for (uint u = 0; u < UNR; u++) {
            if (u >= per_chunk) break;
            uint xi = (sub + nsub * u) * 8 + (c0 >> 2);
            for (uint t = 0; t < TOKB; t++)
                if (t < nt) acc[t] += dot8(cur[u], xs[t][xi], xs[t][xi + 1]);
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint t = 0; t < TOKB; t++) red[t][l] = acc[t];
    barrier(CLK_LOCAL_MEM_FENCE);
    uint prows = 16 / rsplit; /* rows of this part */
    if (l < prows * TOKB) {
        uint t = l / prows, r = l % prows, row = panel * 16 + part * prows + r;
        if (t < nt && row < rows) {
            float s = 0.0f;
            for (uint q = 0; q < nsub; q++)
                for (uint k = 0; k < 4; k++) s += red[t][q * lanes + r * 4 + k];
            __global float *dst = y + (ulong)(tb + t) * ld + row;
            *dst = ymode == MODE_ADD ? *dst + s : s;
        }
    }
}

/* Matrix times many tokens (prefill): 64 rows x 64 tokens per work-group, 32
 * columns (one tile per panel) at a time through local memory; each thread
 * computes 4 rows x 4 tokens, and loads the next tile into registers while it
 * multiplies this one. Up to three matrices that share x run in one launch
 * (q, k, v; gate, up), their 64-row blocks numbered one after another.
 * xmode XMODE_SILU takes x = silu(x) * x2. y = W x, or y += W x with add. */
#define GM_R 64
#define GM_T 64
inline float4 gemm_x4(__global const float *x, __global const float *x2, uint ldx, uint xmode, uint tok, uint n_tok,
                      uint col, uint cols)
{
    float4 v = (float4)(0.0f), u = (float4)(1.0f);
    if (tok >= n_tok) return v;
    ulong o = (ulong)tok * ldx + col;
    if (col + 4 <= cols) {
        v = vload4(0, x + o);
        if (xmode == XMODE_SILU) u = vload4(0, x2 + o);
    } else {
        v = (float4)(col < cols ? x[o] : 0.0f, col + 1 < cols ? x[o + 1] : 0.0f, col + 2 < cols ? x[o + 2] : 0.0f,
                     col + 3 < cols ? x[o + 3] : 0.0f);
        if (xmode == XMODE_SILU)
            u = (float4)(col < cols ? x2[o] : 0.0f, col + 1 < cols ? x2[o + 1] : 0.0f,
                         col + 2 < cols ? x2[o + 2] : 0.0f, col + 3 < cols ? x2[o + 3] : 0.0f);
    }
    if (xmode == XMODE_SILU) v = v / (1.0f + exp(-v)) * u;
    return v;
}

__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void matmul_gemm(__global const uint4 *W, uint cols, __global const float *x, __global const float *x2, uint ldx,
                 uint xmode, uint n_tok, uint add,
                 ulong off0, uint rows0, __global float *y0, uint ld0,
                 ulong off1, uint rows1, __global float *y1, uint ld1,
                 ulong off2, uint rows2, __global float *y2, uint ld2)
{
    __local float Ws[32][GM_R];
    __local float Xs[32][GM_T];
    uint l = get_local_id(0), tx = l & 15, ty = l >> 4;
    uint blk = get_group_id(0), tb = get_group_id(1) * GM_T;
    ulong off = off0;
    uint rows = rows0, ld = ld0;
    __global float *y = y0;
    uint b0 = (rows0 + GM_R - 1) / GM_R, b1 = (rows1 + GM_R - 1) / GM_R;
    if (blk >= b0) {
        blk -= b0;
        if (blk < b1) off = off1, rows = rows1, y = y1, ld = ld1;
        else blk -= b1, off = off2, rows = rows2, y = y2, ld = ld2;
    }
    uint rb = blk * GM_R;
    uint col_tiles = (cols + 31) / 32, n_panels = (rows + 15) / 16;
    uint q = l >> 6, j = l & 63, wr = q * 16 + (j >> 2), wc = (j & 3) * 8;
    uint panel = rb / 16 + q;
    int has_panel = panel < n_panels;
    __global const uint4 *P = W + off + (ulong)panel * col_tiles * 64 + j;
    uint xt0 = l >> 3, xt1 = (l + 256) >> 3, xk = (l & 7) * 4; /* the two float4 of x this thread stages */
    float acc[4][4];
    for (uint a = 0; a < 4; a++)
        for (uint b = 0; b < 4; b++) acc[a][b] = 0.0f;
    uint4 w = has_panel ? P[0] : (uint4)(0);
    float4 xa = gemm_x4(x, x2, ldx, xmode, tb + xt0, n_tok, xk, cols);
    float4 xb = gemm_x4(x, x2, ldx, xmode, tb + xt1, n_tok, xk, cols);
    for (uint c = 0; c < col_tiles; c++) {
        /* Row wr of column k lives in float4 group (wr / 4) ^ (k / 8): the four
         * threads that store one row's columns 0, 8, 16, 24 hit four banks. */
        uint ws = (((wr >> 2) ^ (wc >> 3)) << 2) | (wr & 3);
        Ws[wc + 0][ws] = bf16_lo(w.x);
        Ws[wc + 1][ws] = bf16_hi(w.x);
        Ws[wc + 2][ws] = bf16_lo(w.y);
        Ws[wc + 3][ws] = bf16_hi(w.y);
        Ws[wc + 4][ws] = bf16_lo(w.z);
        Ws[wc + 5][ws] = bf16_hi(w.z);
        Ws[wc + 6][ws] = bf16_lo(w.w);
        Ws[wc + 7][ws] = bf16_hi(w.w);
        Xs[xk + 0][xt0] = xa.x, Xs[xk + 1][xt0] = xa.y, Xs[xk + 2][xt0] = xa.z, Xs[xk + 3][xt0] = xa.w;
        Xs[xk + 0][xt1] = xb.x, Xs[xk + 1][xt1] = xb.y, Xs[xk + 2][xt1] = xb.z, Xs[xk + 3][xt1] = xb.w;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (c + 1 < col_tiles) { /* the next tile, in flight while this one is multiplied */
            w = has_panel ? P[(ulong)(c + 1) * 64] : (uint4)(0);
            xa = gemm_x4(x, x2, ldx, xmode, tb + xt0, n_tok, (c + 1) * 32 + xk, cols);
            xb = gemm_x4(x, x2, ldx, xmode, tb + xt1, n_tok, (c + 1) * 32 + xk, cols);
        }
        for (uint k = 0; k < 32; k++) {
            float4 a = vload4(0, &Ws[k][(ty ^ (k >> 3)) * 4]), b = vload4(0, &Xs[k][tx * 4]);
            acc[0][0] += a.x * b.x, acc[0][1] += a.x * b.y, acc[0][2] += a.x * b.z, acc[0][3] += a.x * b.w;
            acc[1][0] += a.y * b.x, acc[1][1] += a.y * b.y, acc[1][2] += a.y * b.z, acc[1][3] += a.y * b.w;
            acc[2][0] += a.z * b.x, acc[2][1] += a.z * b.y, acc[2][2] += a.z * b.z, acc[2][3] += a.z * b.w;
            acc[3][0] += a.w * b.x, acc[3][1] += a.w * b.y, acc[3][2] += a.w * b.z, acc[3][3] += a.w * b.w;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (uint a = 0; a < 4; a++) {
        uint row = rb + ty * 4 + a;
        if (row >= rows) break;
        for (uint b = 0; b < 4; b++) {
            uint t = tb + tx * 4 + b;
            if (t >= n_tok) break;
            __global float *dst = y + (ulong)t * ld + row;
            *dst = add ? *dst + acc[a][b] : acc[a][b];
        }
    }
}

/* x[t][c] = embedding row of token t; global size (hidden, n_tok). stage holds
 * the pass's first position, then its token ids. */
__kernel void embed(__global const ushort *W, ulong w_off, uint cols, __global const int *stage, __global float *x)
{
    uint c = get_global_id(0), t = get_global_id(1);
    uint r = (uint)stage[1 + t], col_tiles = (cols + 31) / 32;
    ulong idx = ((ulong)(r / 16) * col_tiles + c / 32) * 512 + (r % 16) * 32 + c % 32;
    x[(ulong)t * cols + c] = bf16(W[(ulong)w_off + idx]);
}

#define NORM_WG 256

/* out = rmsnorm(x) * w; one work-group per token. */
__kernel __attribute__((reqd_work_group_size(NORM_WG, 1, 1)))
void rmsnorm(__global const float *x, __global const ushort *W, ulong w_off, __global float *out, uint n, float eps)
{
    __local float red[NORM_WG];
    uint t = get_group_id(0), l = get_local_id(0);
    __global const float *xt = x + (ulong)t * n;
    float ss = 0.0f;
    for (uint i = l; i < n; i += NORM_WG) ss += xt[i] * xt[i];
    red[l] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = NORM_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float scale = 1.0f / sqrt(red[0] / (float)n + eps);
    for (uint i = l; i < n; i += NORM_WG) out[(ulong)t * n + i] = (xt[i] * scale) * bf16(W[w_off + i]);
}

/* Per head: q_norm / k_norm, rotate-half RoPE, and K, V into the cache.
 * Work-group (64) per (head, token); heads 0..nq-1 are queries, then KV heads. */
__kernel __attribute__((reqd_work_group_size(64, 1, 1)))
void qk_norm_rope(__global float *q, __global float *k, __global const float *v, __global const ushort *W,
                  ulong qn_off, ulong kn_off, __global const float *cos_t, __global const float *sin_t,
                  __global float *kcache, __global float *vcache, uint nq, uint nkv, uint D, __global const int *stage,
                  float eps)
{
    __local float red[64];
    uint h = get_group_id(0), t = get_group_id(1), l = get_local_id(0), half_d = D / 2, p = (uint)stage[0] + t;
    int is_q = h < nq;
    uint hh = is_q ? h : h - nq;
    __global float *vec = is_q ? q + ((ulong)t * nq + hh) * D : k + ((ulong)t * nkv + hh) * D;
    ulong off = is_q ? qn_off : kn_off;
    float ss = 0.0f;
    for (uint i = l; i < D; i += 64) ss += vec[i] * vec[i];
    red[l] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = 32; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float scale = 1.0f / sqrt(red[0] / (float)D + eps);
    for (uint i = l; i < half_d; i += 64) {
        float a = bf16(W[off + i]) * (vec[i] * scale), b = bf16(W[off + i + half_d]) * (vec[i + half_d] * scale);
        float c = cos_t[(ulong)p * half_d + i], s = sin_t[(ulong)p * half_d + i];
        vec[i] = a * c - b * s;
        vec[i + half_d] = b * c + a * s;
    }
    if (!is_q) {
        barrier(CLK_GLOBAL_MEM_FENCE);
        ulong dst = ((ulong)p * nkv + hh) * D, src = ((ulong)t * nkv + hh) * D;
        for (uint i = l; i < D; i += 64) {
            kcache[dst + i] = vec[i];
            vcache[dst + i] = v[src + i];
        }
    }
}

#define ATT_WG 128
#define D4 (HEAD_DIM / 4)
#define ATT_GROUPS (ATT_WG / D4)

/* rmsnorm(vec) * w, then rotate-half RoPE at position p, into dst (local or
 * private copy); the same arithmetic as qk_norm_rope. */
inline float att_inv_rms(__global const float *vec, __local float *red, uint l, float eps)
{
    float ss = 0.0f;
    for (uint i = l; i < HEAD_DIM; i += ATT_WG) ss += vec[i] * vec[i];
    red[l] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = ATT_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = 1.0f / sqrt(red[0] / (float)HEAD_DIM + eps);
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* Attention of the one token of a decode step, at position pos, over positions
 * 0..pos. Work-group (h, sp) takes a 1/nsplit share of the positions, ATT_WG
 * keys at a time with a running max and sum (online softmax), and leaves its
 * unnormalised output with its (max, sum) for o_proj to combine (XMODE_ATTN).
 * It also does qk_norm_rope's job for its head, and the work-group whose share
 * holds position pos writes the new K and V to the cache (the heads of one KV
 * group write the same values). The query sits in local memory; K and V are
 * read as float4, the V sum split over ATT_GROUPS groups of positions.
 * kcache/vcache are one layer's. */
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention(__global const float *q, __global float *kcache, __global float *vcache, __global float *out,
               uint nq, uint nkv, __global const int *stage, __global const float *k_new,
               __global const float *v_new, __global const ushort *W, ulong qn_off, ulong kn_off,
               __global const float *cos_t, __global const float *sin_t, float eps, uint nsplit,
               __global float *part_ml)
{
    __local float red[ATT_WG];
    __local float ps[ATT_WG];
    __local float4 qs[D4];
    __local float4 part[ATT_WG];
    uint h = get_group_id(0), sp = get_group_id(1), l = get_local_id(0);
    uint last = (uint)stage[0], g = h / (nq / nkv);
    uint span = (last + nsplit) / nsplit, lo = sp * span, hi = min(lo + span, last + 1);
    int has_last = lo <= last && last < hi;
    uint grp = l / D4, d4 = l % D4;
    __global const float *qh = q + (ulong)h * HEAD_DIM;
    __local float *qf = (__local float *)qs;
    const uint half_d = HEAD_DIM / 2;
    __global const float *cs = cos_t + (ulong)last * half_d, *sn = sin_t + (ulong)last * half_d;
    float sq = att_inv_rms(qh, red, l, eps);
    __global const float *kh = k_new + (ulong)g * HEAD_DIM;
    float sk = has_last ? att_inv_rms(kh, red, l, eps) : 0.0f;
    __global float *kc = kcache + ((ulong)last * nkv + g) * HEAD_DIM;
    __global float *vc = vcache + ((ulong)last * nkv + g) * HEAD_DIM;
    for (uint i = l; i < half_d; i += ATT_WG) {
        float c = cs[i], s = sn[i];
        float a = bf16(W[qn_off + i]) * (qh[i] * sq), b = bf16(W[qn_off + i + half_d]) * (qh[i + half_d] * sq);
        qf[i] = a * c - b * s;
        qf[i + half_d] = b * c + a * s;
        if (!has_last) continue; /* only the work-group that reads position last writes it */
        a = bf16(W[kn_off + i]) * (kh[i] * sk), b = bf16(W[kn_off + i + half_d]) * (kh[i + half_d] * sk);
        kc[i] = a * c - b * s;
        kc[i + half_d] = b * c + a * s;
    }
    if (has_last)
        for (uint i = l; i < HEAD_DIM; i += ATT_WG) vc[i] = v_new[(ulong)g * HEAD_DIM + i];
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    const float scale = 1.0f / sqrt((float)HEAD_DIM);
    float m_run = -INFINITY, l_sum = 0.0f;
    float4 acc = (float4)(0.0f);
    for (uint base = lo; base < hi; base += ATT_WG) {
        uint jj = base + l;
        float s = -INFINITY;
        if (jj < hi) {
            __global const float4 *kj = (__global const float4 *)(kcache + ((ulong)jj * nkv + g) * HEAD_DIM);
            float4 s0 = (float4)(0.0f), s1 = (float4)(0.0f);
#pragma unroll
            for (uint i = 0; i < D4; i += 2) {
                s0 += qs[i] * kj[i];
                s1 += qs[i + 1] * kj[i + 1];
            }
            s0 += s1;
            s = (s0.x + s0.y + s0.z + s0.w) * scale;
        }
        red[l] = s;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint st = ATT_WG / 2; st > 0; st >>= 1) {
            if (l < st) red[l] = fmax(red[l], red[l + st]);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        float m_new = fmax(m_run, red[0]);
        float corr = exp(m_run - m_new); /* 0 on the first block (m_run = -inf) */
        float p = jj < hi ? exp(s - m_new) : 0.0f;
        ps[l] = p;
        l_sum = l_sum * corr + p;
        acc *= corr;
        m_run = m_new;
        barrier(CLK_LOCAL_MEM_FENCE);
        uint n = min((uint)ATT_WG, hi - base);
        __global const float *vb = vcache + ((ulong)base * nkv + g) * HEAD_DIM;
        float4 a1 = (float4)(0.0f), a2 = (float4)(0.0f), a3 = (float4)(0.0f);
        uint k = grp;
        for (; k + 3 * ATT_GROUPS < n; k += 4 * ATT_GROUPS) {
            acc += ps[k] * vload4(d4, vb + (ulong)k * nkv * HEAD_DIM);
            a1 += ps[k + ATT_GROUPS] * vload4(d4, vb + (ulong)(k + ATT_GROUPS) * nkv * HEAD_DIM);
            a2 += ps[k + 2 * ATT_GROUPS] * vload4(d4, vb + (ulong)(k + 2 * ATT_GROUPS) * nkv * HEAD_DIM);
            a3 += ps[k + 3 * ATT_GROUPS] * vload4(d4, vb + (ulong)(k + 3 * ATT_GROUPS) * nkv * HEAD_DIM);
        }
        for (; k < n; k += ATT_GROUPS) acc += ps[k] * vload4(d4, vb + (ulong)k * nkv * HEAD_DIM);
        acc += (a1 + a2) + a3;
    }
    red[l] = l_sum;
    part[l] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint st = ATT_WG / 2; st > 0; st >>= 1) {
        if (l < st) red[l] += red[l + st];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l < D4) {
        float4 s4 = (float4)(0.0f);
        for (uint k = 0; k < ATT_GROUPS; k++) s4 += part[k * D4 + l];
        vstore4(s4, l, out + ((ulong)sp * nq + h) * HEAD_DIM);
        if (l == 0) part_ml[(sp * nq + h) * 2] = m_run, part_ml[(sp * nq + h) * 2 + 1] = red[0];
    }
}

#define QB 4 /* query tokens per attention_prefill work-group */

inline float hsum4(float4 v) { return (v.x + v.y) + (v.z + v.w); }

/* Causal attention for a prompt: one work-group per (head, block of QB
 * consecutive tokens), so each K and V row read serves QB queries. Online
 * softmax as in attention, with the running max, sum and output per query. */
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention_prefill(__global const float *q, __global const float *kcache, __global const float *vcache,
                       __global float *out, uint nq, uint nkv, uint n_tok, __global const int *stage)
{
    __local float4 red4[ATT_WG];
    __local float4 ps4[ATT_WG];
    __local float4 qs[QB][D4];
    __local float4 part[ATT_WG];
    uint h = get_group_id(0), t0 = get_group_id(1) * QB, l = get_local_id(0);
    uint pos = (uint)stage[0], g = h / (nq / nkv);
    uint nt = min((uint)QB, n_tok - t0), first = pos + t0, last = first + nt - 1;
    uint grp = l / D4, d4 = l % D4;
    for (uint i = l; i < QB * D4; i += ATT_WG) {
        uint qi = i / D4, c = i % D4, tq = t0 + min(qi, nt - 1);
        qs[qi][c] = vload4(c, q + ((ulong)tq * nq + h) * HEAD_DIM);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float scale = 1.0f / sqrt((float)HEAD_DIM);
    float4 m_run = (float4)(-INFINITY), l_sum = (float4)(0.0f);
    float4 acc0 = (float4)(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (uint base = 0; base <= last; base += ATT_WG) {
        uint jj = base + l;
        float4 s = (float4)(-INFINITY);
        if (jj <= last) {
            __global const float4 *kj = (__global const float4 *)(kcache + ((ulong)jj * nkv + g) * HEAD_DIM);
            float4 d0 = (float4)(0.0f), d1 = d0, d2 = d0, d3 = d0;
#pragma unroll
            for (uint i = 0; i < D4; i++) {
                float4 k = kj[i];
                d0 += qs[0][i] * k;
                d1 += qs[1][i] * k;
                d2 += qs[2][i] * k;
                d3 += qs[3][i] * k;
            }
            /* query i (token t0 + i) sees positions up to first + i */
            s.x = jj <= first ? hsum4(d0) * scale : -INFINITY;
            s.y = jj <= first + 1 ? hsum4(d1) * scale : -INFINITY;
            s.z = jj <= first + 2 ? hsum4(d2) * scale : -INFINITY;
            s.w = jj <= first + 3 ? hsum4(d3) * scale : -INFINITY;
        }
        red4[l] = s;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint st = ATT_WG / 2; st > 0; st >>= 1) {
            if (l < st) red4[l] = fmax(red4[l], red4[l + st]);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        /* The first block holds position 0, which every query sees: m_new is finite. */
        float4 m_new = fmax(m_run, red4[0]);
        float4 corr = exp(m_run - m_new);
        float4 p = exp(s - m_new);
        ps4[l] = p;
        l_sum = l_sum * corr + p;
        acc0 *= corr.x, acc1 *= corr.y, acc2 *= corr.z, acc3 *= corr.w;
        m_run = m_new;
        barrier(CLK_LOCAL_MEM_FENCE);
        uint n = min((uint)ATT_WG, last - base + 1);
        __global const float *vb = vcache + ((ulong)base * nkv + g) * HEAD_DIM;
        for (uint k = grp; k < n; k += ATT_GROUPS) {
            float4 v = vload4(d4, vb + (ulong)k * nkv * HEAD_DIM), pk = ps4[k];
            acc0 += pk.x * v, acc1 += pk.y * v, acc2 += pk.z * v, acc3 += pk.w * v;
        }
    }
    red4[l] = l_sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint st = ATT_WG / 2; st > 0; st >>= 1) {
        if (l < st) red4[l] += red4[l + st];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float4 tot = red4[0];
    for (uint qi = 0; qi < QB; qi++) {
        part[l] = qi == 0 ? acc0 : qi == 1 ? acc1 : qi == 2 ? acc2 : acc3;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < D4 && qi < nt) {
            float4 s4 = (float4)(0.0f);
            for (uint k = 0; k < ATT_GROUPS; k++) s4 += part[k * D4 + l];
            float den = qi == 0 ? tot.x : qi == 1 ? tot.y : qi == 2 ? tot.z : tot.w;
            vstore4(s4 / den, l, out + ((ulong)(t0 + qi) * nq + h) * HEAD_DIM);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
