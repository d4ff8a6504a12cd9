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

/* Launches of up to three matrices that share x number their panels (or row
 * blocks) one matrix after another: seg_of says which matrix unit *u (of n0
 * in the first, n1 in the second) belongs to and makes *u relative to it;
 * PICK3 takes that matrix's argument. */
inline uint seg_of(uint *u, uint n0, uint n1)
{
    if (*u < n0) return 0;
    *u -= n0;
    if (*u < n1) return 1;
    *u -= n1;
    return 2;
}
#define PICK3(s, a, b, c) ((s) == 0 ? (a) : (s) == 1 ? (b) : (c))

/* Matrix times a few tokens (decode, short prompts). One work-group per 16-row
 * panel and block of TOKB tokens; up to three matrices that share x run in one
 * launch (q, k, v; gate, up), their panels numbered one after another. Each
 * thread keeps UNR tile loads in flight (the next chunk's are issued before
 * this chunk's products); x is staged, transformed per xmode, in local memory. */

/* matmul_small and matvec take the same arguments, set once by mm_small
 * (backend_opencl.c) for either. x, x2 and the outputs y0..y2 are regions of
 * act, given as float offsets: one buffer argument, not six (NVIDIA's enqueue
 * costs the host per buffer). off0..off2: each matrix's tiles, in uint4s. */
#define MM_SMALL_ARGS                                                                                                 \
    __global const uint4 *W, uint cols, __global float *act, ulong x_off, ulong x2_off, uint ldx, uint xmode,        \
        ulong norm_off, float eps, uint n_tok, uint ymode, uint rsplit, uint nsplit,                                  \
        ulong off0, uint rows0, ulong y0, uint ld0,                                                                    \
        ulong off1, uint rows1, ulong y1, uint ld1,                                                                    \
        ulong off2, uint rows2, ulong y2, uint ld2

__kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matmul_small(MM_SMALL_ARGS)
{
    __global const float *x = act + x_off, *x2 = act + x2_off;
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
    uint seg = seg_of(&panel, (rows0 + 15) / 16, (rows1 + 15) / 16);
    ulong off = PICK3(seg, off0, off1, off2);
    uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);
    __global float *y = act + PICK3(seg, y0, y1, y2);

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

/* Matrix times one token (decode). The tile walk of matmul_small, but x is
 * staged whole (cols <= MVX) and transformed once per work-group: loaded as
 * float4 into registers for the norm (one trip to memory, not two), the
 * attention splits combined with their weights computed in parallel. A
 * work-group then takes (panel, part) items get_num_groups(0) apart, the
 * next item's first tile loads issued before this item's last products, so
 * a grid of about the resident work-groups streams the whole matrix without
 * waves and stages x once. The host keeps that stride a multiple of rsplit. */
#define MVX 4096
__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void matvec(MM_SMALL_ARGS)
{
    __global const float *x = act + x_off, *x2 = act + x2_off;
    __local float4 xs[MVX / 4];
    __local float red[256];
    __local float attw[256];
    uint l = get_local_id(0), item = get_group_id(0), stride = get_num_groups(0);
    uint p0 = (rows0 + 15) / 16, p1 = (rows1 + 15) / 16, p2 = (rows2 + 15) / 16;
    uint n_items = (p0 + p1 + p2) * rsplit;
    uint part = item % rsplit, lanes = 64 / rsplit, nsub = 256 / lanes;
    uint col_tiles = cols / 32;
    uint jl = l % lanes, j = part * lanes + jl, sub = l / lanes, c0 = (j & 3) * 8;
    uint ntile = (col_tiles - sub + nsub - 1) / nsub; /* tiles this thread reads per item */
    ulong tile_stride = (ulong)nsub * 64;

    uint panel = item / rsplit, seg = seg_of(&panel, p0, p1);
    __global const uint4 *P =
        W + PICK3(seg, off0, off1, off2) + (ulong)panel * col_tiles * 64 + sub * 64 + j;
    uint4 wb[8];
#pragma unroll
    for (uint u = 0; u < 8; u++) wb[u] = item < n_items && u < ntile ? P[u * tile_stride] : (uint4)(0);

    uint c4 = cols / 4;
    __global const float4 *x4 = (__global const float4 *)x;
    __global const float4 *x24 = (__global const float4 *)x2;
    if (xmode == XMODE_NORM) {
        float4 v[MVX / 1024];
        float ss = 0.0f;
#pragma unroll
        for (uint i = 0; i < MVX / 1024; i++) {
            uint k = l + 256 * i;
            v[i] = k < c4 ? x4[k] : (float4)(0.0f);
            ss += dot(v[i], v[i]);
        }
        red[l] = ss;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < 32) {
            float s = 0.0f;
            for (uint i = 0; i < 8; i++) s += red[l * 8 + i];
            attw[l] = s;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        float tot = 0.0f;
        for (uint i = 0; i < 32; i++) tot += attw[i];
        float inv = 1.0f / sqrt(tot / (float)cols + eps);
        __global const ushort *g = (__global const ushort *)W + norm_off;
#pragma unroll
        for (uint i = 0; i < MVX / 1024; i++) {
            uint k = l + 256 * i;
            if (k < c4) {
                float4 gg = (float4)(bf16(g[4 * k]), bf16(g[4 * k + 1]), bf16(g[4 * k + 2]), bf16(g[4 * k + 3]));
                xs[k] = (v[i] * inv) * gg;
            }
        }
    } else if (xmode == XMODE_SILU) {
        for (uint k = l; k < c4; k += 256) {
            float4 a = x4[k], b = x24[k];
            xs[k] = a / (1.0f + exp(-a)) * b;
        }
    } else if (xmode == XMODE_ATTN) {
        uint nh = cols / HEAD_DIM, n = nh * nsplit; /* (max, sum) of split sp, head h at sp * nh + h */
        float m = -INFINITY, s = 0.0f, e = 0.0f, den = 0.0f;
        uint h = l % nh;
        if (l < n) m = x2[2 * l], s = x2[2 * l + 1];
        red[l] = m;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < n) {
            float mx = -INFINITY;
            for (uint sp = 0; sp < nsplit; sp++) mx = fmax(mx, red[sp * nh + h]);
            e = exp(m - mx);
            attw[l] = e * s; /* this split's share of the denominator */
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < n)
            for (uint sp = 0; sp < nsplit; sp++) den += attw[sp * nh + h];
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < n) attw[l] = e / den;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint k = l; k < c4; k += 256) {
            uint hk = k / (HEAD_DIM / 4);
            float4 a = (float4)(0.0f);
            for (uint sp = 0; sp < nsplit; sp++) a += attw[sp * nh + hk] * x4[(ulong)sp * c4 + k];
            xs[k] = a;
        }
    } else {
        for (uint k = l; k < c4; k += 256) xs[k] = x4[k];
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    uint prows = 16 / rsplit; /* rows of one part */
    for (; item < n_items; item += stride) {
        __global float *y = act + PICK3(seg, y0, y1, y2);
        uint rows = PICK3(seg, rows0, rows1, rows2), row0 = panel * 16 + part * prows;
        uint next_panel = (item + stride) / rsplit, next_seg = seg_of(&next_panel, p0, p1);
        __global const uint4 *Pn = W + PICK3(next_seg, off0, off1, off2) +
                                   (ulong)next_panel * col_tiles * 64 + sub * 64 + j;
        int more = item + stride < n_items;
        float acc = 0.0f;
        for (uint u0 = 0; u0 < ntile; u0 += 8) {
            uint4 cur[8];
#pragma unroll
            for (uint u = 0; u < 8; u++) cur[u] = wb[u];
            if (u0 + 8 < ntile) {
#pragma unroll
                for (uint u = 0; u < 8; u++) wb[u] = u0 + 8 + u < ntile ? P[(u0 + 8 + u) * tile_stride] : (uint4)(0);
            } else {
#pragma unroll
                for (uint u = 0; u < 8; u++) wb[u] = more && u < ntile ? Pn[u * tile_stride] : (uint4)(0);
            }
#pragma unroll
            for (uint u = 0; u < 8; u++) {
                uint xi = (sub + nsub * (u0 + u)) * 8 + (c0 >> 2);
                if (u0 + u < ntile) acc += dot8(cur[u], xs[xi], xs[xi + 1]);
            }
        }
        red[l] = acc;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < prows && row0 + l < rows) {
            float s = 0.0f;
            for (uint q = 0; q < nsub; q++)
                for (uint k = 0; k < 4; k++) s += red[q * lanes + l * 4 + k];
            __global float *dst = y + row0 + l;
            *dst = ymode == MODE_ADD ? *dst + s : s;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        P = Pn, panel = next_panel, seg = next_seg;
    }
}

/* Matrix times many tokens (prefill): 64 rows x 64 tokens per work-group, 32
 * columns (one tile per panel) at a time through local memory; each thread
 * computes 4 rows x 4 tokens, and loads the next tile into registers while it
 * multiplies this one. Up to three matrices that share x run in one launch
 * (q, k, v; gate, up), their 64-row blocks numbered one after another.
 * y = W x, or y += W x with add. */
#define GM_R 64
#define GM_T 64
inline float4 gemm_x4(__global const float *x, uint ldx, uint tok, uint n_tok, uint col, uint cols)
{
    if (tok >= n_tok) return (float4)(0.0f);
    ulong o = (ulong)tok * ldx + col;
    if (col + 4 <= cols) return vload4(0, x + o);
    return (float4)(col < cols ? x[o] : 0.0f, col + 1 < cols ? x[o + 1] : 0.0f, col + 2 < cols ? x[o + 2] : 0.0f,
                    col + 3 < cols ? x[o + 3] : 0.0f);
}

/* gate = silu(gate) * up for a prompt's tokens, once, before down_proj's GEMM
 * (inside the GEMM every 64-row block would redo it). Global size n. */
__kernel void silu_mul(__global float *gate, __global const float *up)
{
    size_t i = get_global_id(0);
    float a = gate[i];
    gate[i] = a / (1.0f + exp(-a)) * up[i];
}

/* y (+)= the sum of nparts partial products (split-K GEMM), in a fixed order:
 * part p of token t, row r at parts[p * stride + t * rows + r]. Global (rows, n_tok). */
__kernel void add_parts(__global const float *parts, uint nparts, uint stride, __global float *y, uint ld, uint rows,
                        uint add)
{
    uint r = get_global_id(0), t = get_global_id(1);
    if (r >= rows) return;
    float s = 0.0f;
    for (uint p = 0; p < nparts; p++) s += parts[(ulong)p * stride + (ulong)t * rows + r];
    __global float *dst = y + (ulong)t * ld + r;
    *dst = add ? *dst + s : s;
}

__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void matmul_gemm(__global const uint4 *W, uint cols, __global const float *x, uint ldx, uint n_tok, uint add,
                 ulong off0, uint rows0, __global float *y0, uint ld0,
                 ulong off1, uint rows1, __global float *y1, uint ld1,
                 ulong off2, uint rows2, __global float *y2, uint ld2)
{
    __local float Ws[32][GM_R];
    __local float Xs[32][GM_T];
    uint l = get_local_id(0), tx = l & 15, ty = l >> 4;
    uint blk = get_group_id(0), tb = get_group_id(1) * GM_T;
    uint seg = seg_of(&blk, (rows0 + GM_R - 1) / GM_R, (rows1 + GM_R - 1) / GM_R);
    ulong off = PICK3(seg, off0, off1, off2);
    uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);
    __global float *y = PICK3(seg, y0, y1, y2);
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
    float4 xa = gemm_x4(x, ldx, tb + xt0, n_tok, xk, cols);
    float4 xb = gemm_x4(x, ldx, tb + xt1, n_tok, xk, cols);
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
            xa = gemm_x4(x, ldx, tb + xt0, n_tok, (c + 1) * 32 + xk, cols);
            xb = gemm_x4(x, ldx, tb + xt1, n_tok, (c + 1) * 32 + xk, cols);
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

#ifdef Q3_NV_MMA
/* Prompts on NVIDIA tensor cores: the host defines Q3_NV_MMA on NVIDIA's
 * platform (and builds without it if the compiler refuses), and the kernel
 * issues PTX mma.sync m16n8k16 BF16 products with f32 accumulation. x is
 * rounded to BF16 (to nearest even, as the CPU backend rounds a prompt's
 * activations) while it is staged. A work-group of 4 warps takes 64 rows x
 * 64 tokens, 32 columns (one tile per panel) per step; each warp 32 rows x
 * 32 tokens: 2 x 4 fragments. Rows of the staged tiles are padded to MM_LD
 * words so that a fragment's 32 loads hit 32 banks. A grid of depth nz > 1
 * splits the columns (see add_parts). */
#define MM_R 64
#define MM_T 64
#define MM_LD 20

inline uint bf16_pack(float a, float b) /* a in the low half */
{
    uint ua = as_uint(a), ub = as_uint(b);
    ua = (ua & 0x7fffffffu) > 0x7f800000u ? (ua | 0x400000u) : ua + 0x7fffu + ((ua >> 16) & 1u);
    ub = (ub & 0x7fffffffu) > 0x7f800000u ? (ub | 0x400000u) : ub + 0x7fffu + ((ub >> 16) & 1u);
    return (ua >> 16) | (ub & 0xffff0000u);
}

inline void mma_bf16(float4 *d, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
{
    float d0 = d->x, d1 = d->y, d2 = d->z, d3 = d->w;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    *d = (float4)(d0, d1, d2, d3);
}

__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void matmul_mma(__global const uint4 *W, uint cols, __global const float *x, uint ldx, uint n_tok, uint add,
                uint part_stride,
                ulong off0, uint rows0, __global float *y0, uint ld0,
                ulong off1, uint rows1, __global float *y1, uint ld1,
                ulong off2, uint rows2, __global float *y2, uint ld2)
{
    __local uint Ws[MM_R * MM_LD];
    __local uint Xs[MM_T * MM_LD];
    uint l = get_local_id(0), lane = l & 31, warp = l >> 5, g = lane >> 2, tig = lane & 3;
    uint blk = get_group_id(0), tb = get_group_id(1) * MM_T;
    uint seg = seg_of(&blk, (rows0 + MM_R - 1) / MM_R, (rows1 + MM_R - 1) / MM_R);
    ulong off = PICK3(seg, off0, off1, off2);
    uint rows = PICK3(seg, rows0, rows1, rows2), ld = PICK3(seg, ld0, ld1, ld2);
    __global float *y = PICK3(seg, y0, y1, y2);
    uint rb = blk * MM_R;
    uint col_tiles = (cols + 31) / 32, n_panels = (rows + 15) / 16;
    /* Split-K: work-group z of nz takes its share of the column tiles and
     * stores its partial product part_stride floats further on (add_parts sums). */
    uint nz = get_num_groups(2), per = (col_tiles + nz - 1) / nz, c_lo = get_group_id(2) * per;
    uint c_hi = min(col_tiles, c_lo + per);
    y += (ulong)get_group_id(2) * part_stride;
    /* Staging: uint4 j of the tiles of panels pa and pa + 2 (16 rows each), and
     * four float4 of x: tokens xt + 16 i, columns xk..xk+3. */
    uint j = l & 63, pa = l >> 6, wr = pa * 16 + (j >> 2), wq = (j & 3) * 4;
    uint pA = rb / 16 + pa, pB = pA + 2;
    int hasA = pA < n_panels, hasB = pB < n_panels;
    __global const uint4 *PA = W + off + (ulong)pA * col_tiles * 64 + j;
    __global const uint4 *PB = W + off + (ulong)pB * col_tiles * 64 + j;
    uint xt = l >> 3, xk = (l & 7) * 4;
    uint4 wa = (uint4)(0), wb = (uint4)(0);
    float4 xv[4];
    if (c_lo < c_hi) {
        wa = hasA ? PA[(ulong)c_lo * 64] : (uint4)(0), wb = hasB ? PB[(ulong)c_lo * 64] : (uint4)(0);
        for (uint i = 0; i < 4; i++) xv[i] = gemm_x4(x, ldx, tb + xt + 16 * i, n_tok, c_lo * 32 + xk, cols);
    }
    float4 acc[2][4];
    for (uint a = 0; a < 2; a++)
        for (uint b = 0; b < 4; b++) acc[a][b] = (float4)(0.0f);
    uint wrow = (warp & 1) * 32, wtok = (warp >> 1) * 32;
    for (uint c = c_lo; c < c_hi; c++) {
        *(__local uint4 *)&Ws[wr * MM_LD + wq] = wa;
        *(__local uint4 *)&Ws[(wr + 32) * MM_LD + wq] = wb;
        for (uint i = 0; i < 4; i++)
            *(__local uint2 *)&Xs[(xt + 16 * i) * MM_LD + xk / 2] =
                (uint2)(bf16_pack(xv[i].x, xv[i].y), bf16_pack(xv[i].z, xv[i].w));
        barrier(CLK_LOCAL_MEM_FENCE);
        if (c + 1 < c_hi) { /* the next step's loads, in flight during the products */
            wa = hasA ? PA[(ulong)(c + 1) * 64] : (uint4)(0);
            wb = hasB ? PB[(ulong)(c + 1) * 64] : (uint4)(0);
            for (uint i = 0; i < 4; i++) xv[i] = gemm_x4(x, ldx, tb + xt + 16 * i, n_tok, (c + 1) * 32 + xk, cols);
        }
        for (uint ks = 0; ks < 16; ks += 8) {
            uint af[2][4], bfr[4][2];
            for (uint a = 0; a < 2; a++) {
                __local const uint *r0 = Ws + (wrow + a * 16 + g) * MM_LD + ks + tig, *r1 = r0 + 8 * MM_LD;
                af[a][0] = r0[0], af[a][1] = r1[0], af[a][2] = r0[4], af[a][3] = r1[4];
            }
            for (uint b = 0; b < 4; b++) {
                __local const uint *t0 = Xs + (wtok + b * 8 + g) * MM_LD + ks + tig;
                bfr[b][0] = t0[0], bfr[b][1] = t0[4];
            }
            for (uint a = 0; a < 2; a++)
                for (uint b = 0; b < 4; b++)
                    mma_bf16(&acc[a][b], af[a][0], af[a][1], af[a][2], af[a][3], bfr[b][0], bfr[b][1]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (uint a = 0; a < 2; a++)
        for (uint b = 0; b < 4; b++) {
            uint r = rb + wrow + a * 16 + g, t = tb + wtok + b * 8 + tig * 2;
            float v[4] = {acc[a][b].x, acc[a][b].y, acc[a][b].z, acc[a][b].w};
            for (uint e = 0; e < 4; e++) {
                uint re = r + (e >> 1) * 8, te = t + (e & 1);
                if (re < rows && te < n_tok) {
                    __global float *dst = y + (ulong)te * ld + re;
                    *dst = add ? *dst + v[e] : v[e];
                }
            }
        }
}
#endif

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

inline float hsum4(float4 v) { return (v.x + v.y) + (v.z + v.w); }

/* The K cache of a layer is [kv head][HEAD_DIM / 4][n_ctx] float4: the
 * threads of an attention work-group, one key position each, read
 * consecutive positions of one float4 column at a time (coalesced). V stays
 * [n_ctx][kv head][HEAD_DIM]: there a group of threads reads one row. */
inline ulong kt_index(uint g, uint i, uint n_ctx, uint p) /* float index of element i of K[p][g] */
{
    return (((ulong)g * (HEAD_DIM / 4) + i / 4) * n_ctx + p) * 4 + i % 4;
}

/* Per head: q_norm / k_norm, rotate-half RoPE, and K, V into the cache.
 * Work-group (64) per (head, token); heads 0..nq-1 are queries, then KV heads. */
__kernel __attribute__((reqd_work_group_size(64, 1, 1)))
void qk_norm_rope(__global float *q, __global float *k, __global const float *v, __global const ushort *W,
                  ulong qn_off, ulong kn_off, __global const float *cos_t, __global const float *sin_t,
                  __global float *kcache, __global float *vcache, uint nq, uint nkv, uint n_ctx,
                  __global const int *stage, float eps)
{
    __local float red[64];
    const uint D = HEAD_DIM, half_d = HEAD_DIM / 2;
    uint h = get_group_id(0), t = get_group_id(1), l = get_local_id(0), p = (uint)stage[0] + t;
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
            kcache[kt_index(hh, i, n_ctx, p)] = vec[i];
            vcache[dst + i] = v[src + i];
        }
    }
}

#define ATT_WG 128
#define D4 (HEAD_DIM / 4)
#define ATT_GROUPS (ATT_WG / D4)
#define ATT_RED 16                                  /* two-level reductions: ATT_RED partials */
#define ATT_PER ((HEAD_DIM + ATT_WG - 1) / ATT_WG) /* head elements per thread */

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

/* Attention of the one token of a decode step, at position pos, over positions
 * 0..pos. Work-group (h, sp) takes a 1/nsplit share of the positions, ATT_WG
 * keys at a time with a running max and sum (online softmax), and leaves its
 * unnormalised output with its (max, sum) for o_proj to combine (XMODE_ATTN).
 * It also does qk_norm_rope's job for its head: every input of the norms and
 * RoPE is loaded at once, one trip to memory; the work-group whose share holds
 * position pos writes the new K and V to the cache (the heads of one KV group
 * write the same values). kcache/vcache are one layer's. */
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention(__global float *act, __global float *kcache, __global float *vcache, __global const ushort *W,
               uint nq, uint nkv, ulong qn_off, ulong kn_off, float eps, uint nsplit, uint n_ctx,
               ulong q_off, ulong out_off, ulong stage_off, ulong k_new_off, ulong v_new_off, ulong cos_off,
               ulong sin_off, ulong ml_off)
{
    /* the activations are regions of one buffer (fewer arguments to enqueue) */
    __global const float *q = act + q_off, *k_new = act + k_new_off, *v_new = act + v_new_off;
    __global const float *cos_t = act + cos_off, *sin_t = act + sin_off;
    __global const int *stage = (__global const int *)(act + stage_off);
    __global float *out = act + out_off, *part_ml = act + ml_off;
    __local float4 red[ATT_WG + ATT_RED];
    __local float qa[HEAD_DIM], ka[HEAD_DIM];
    __local float ps[ATT_WG];
    __local float4 qs[D4];
    __local float4 part[ATT_WG];
    uint h = get_group_id(0), sp = get_group_id(1), l = get_local_id(0);
    uint last = (uint)stage[0], g = h / (nq / nkv);
    uint span = (last + nsplit) / nsplit, lo = sp * span, hi = min(lo + span, last + 1);
    int has_last = lo <= last && last < hi;
    uint grp = l / D4, d4 = l % D4;
    const uint half_d = HEAD_DIM / 2;

    float qv[ATT_PER], kv[ATT_PER], vv[ATT_PER], wq[ATT_PER], wk[ATT_PER], cs[ATT_PER], sn[ATT_PER];
    float4 ss = (float4)(0.0f);
    for (uint u = 0; u < ATT_PER; u++) {
        uint i = l + u * ATT_WG, ic = i % half_d;
        int in = i < HEAD_DIM;
        qv[u] = in ? q[(ulong)h * HEAD_DIM + i] : 0.0f;
        kv[u] = in ? k_new[(ulong)g * HEAD_DIM + i] : 0.0f;
        vv[u] = in ? v_new[(ulong)g * HEAD_DIM + i] : 0.0f;
        wq[u] = in ? bf16(W[qn_off + i]) : 0.0f;
        wk[u] = in ? bf16(W[kn_off + i]) : 0.0f;
        cs[u] = in ? cos_t[(ulong)last * half_d + ic] : 0.0f;
        sn[u] = in ? sin_t[(ulong)last * half_d + ic] : 0.0f;
        ss.x += qv[u] * qv[u];
        ss.y += kv[u] * kv[u];
    }
    float4 tot = att_sum4(ss, red, l);
    float sq = 1.0f / sqrt(tot.x / (float)HEAD_DIM + eps), sk = 1.0f / sqrt(tot.y / (float)HEAD_DIM + eps);
    for (uint u = 0; u < ATT_PER; u++) {
        uint i = l + u * ATT_WG;
        if (i < HEAD_DIM) qa[i] = wq[u] * (qv[u] * sq), ka[i] = wk[u] * (kv[u] * sk);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    __local float *qf = (__local float *)qs;
    for (uint u = 0; u < ATT_PER; u++) {
        uint i = l + u * ATT_WG;
        if (i >= HEAD_DIM) break;
        /* rotate-half: x[i] c - x[i + half] s below half, x[i] c + x[i - half] s above */
        float bq = i < half_d ? -qa[i + half_d] : qa[i - half_d];
        qf[i] = qa[i] * cs[u] + bq * sn[u];
        if (has_last) { /* only the work-group that reads position last writes it */
            float bk = i < half_d ? -ka[i + half_d] : ka[i - half_d];
            kcache[kt_index(g, i, n_ctx, last)] = ka[i] * cs[u] + bk * sn[u];
            vcache[((ulong)last * nkv + g) * HEAD_DIM + i] = vv[u];
        }
    }
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    const float scale = 1.0f / sqrt((float)HEAD_DIM);
    float m_run = -INFINITY, l_sum = 0.0f;
    float4 acc = (float4)(0.0f);
    __global const float4 *kt = (__global const float4 *)kcache + (ulong)g * D4 * n_ctx;
    for (uint base = lo; base < hi; base += ATT_WG) {
        uint jj = base + l;
        float s = -INFINITY;
        if (jj < hi) {
            float4 s0 = (float4)(0.0f), s1 = (float4)(0.0f);
#pragma unroll
            for (uint i = 0; i < D4; i += 2) {
                s0 += qs[i] * kt[(ulong)i * n_ctx + jj];
                s1 += qs[i + 1] * kt[(ulong)(i + 1) * n_ctx + jj];
            }
            s0 += s1;
            s = (s0.x + s0.y + s0.z + s0.w) * scale;
        }
        /* Every V row of the block is requested now, before the first product
         * and ahead of the softmax's barriers: one trip, its latency hidden. */
        uint n = min((uint)ATT_WG, hi - base);
        __global const float *vb = vcache + ((ulong)base * nkv + g) * HEAD_DIM;
        float4 vr[ATT_WG / ATT_GROUPS];
#pragma unroll
        for (uint i = 0; i < ATT_WG / ATT_GROUPS; i++) {
            uint k = grp + i * ATT_GROUPS;
            vr[i] = k < n ? vload4(d4, vb + (ulong)k * nkv * HEAD_DIM) : (float4)(0.0f);
        }
        float m_new = fmax(m_run, att_max4((float4)(s), red, l).x);
        float corr = exp(m_run - m_new); /* 0 on the first block (m_run = -inf) */
        float p = jj < hi ? exp(s - m_new) : 0.0f;
        ps[l] = p;
        l_sum = l_sum * corr + p;
        acc *= corr;
        m_run = m_new;
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (uint i = 0; i < ATT_WG / ATT_GROUPS; i++) {
            uint k = grp + i * ATT_GROUPS;
            if (k < n) acc += ps[k] * vr[i];
        }
    }
    /* The sum of the weights and the output over the thread groups, reduced
     * side by side: two barriers. */
    red[l] = (float4)(l_sum, 0.0f, 0.0f, 0.0f);
    part[l] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (l < ATT_RED) {
        float s = 0.0f;
        for (uint k = 0; k < ATT_WG / ATT_RED; k++) s += red[l * (ATT_WG / ATT_RED) + k].x;
        red[ATT_WG + l].x = s;
    }
    float4 s4 = (float4)(0.0f);
    if (l < D4)
        for (uint k = 0; k < ATT_GROUPS; k++) s4 += part[k * D4 + l];
    barrier(CLK_LOCAL_MEM_FENCE);
    if (l < D4) {
        vstore4(s4, l, out + ((ulong)sp * nq + h) * HEAD_DIM);
        if (l == 0) {
            float sum = 0.0f;
            for (uint k = 0; k < ATT_RED; k++) sum += red[ATT_WG + k].x;
            part_ml[(sp * nq + h) * 2] = m_run, part_ml[(sp * nq + h) * 2 + 1] = sum;
        }
    }
}

#define QB 4 /* query tokens per attention_prefill work-group */

/* Causal attention for a prompt: one work-group per (head, block of QB
 * consecutive tokens), so each K and V row read serves QB queries. Online
 * softmax as in attention, with the running max, sum and output per query. */
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention_prefill(__global const float *q, __global const float *kcache, __global const float *vcache,
                       __global float *out, uint nq, uint nkv, uint n_tok, __global const int *stage, uint n_ctx)
{
    __local float4 red4[ATT_WG + ATT_RED];
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
    __global const float4 *kt = (__global const float4 *)kcache + (ulong)g * D4 * n_ctx;
    for (uint base = 0; base <= last; base += ATT_WG) {
        uint jj = base + l;
        float4 s = (float4)(-INFINITY);
        if (jj <= last) {
            float4 d0 = (float4)(0.0f), d1 = d0, d2 = d0, d3 = d0;
#pragma unroll
            for (uint i = 0; i < D4; i++) {
                float4 k = kt[(ulong)i * n_ctx + jj];
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
        __global const float *vb = vcache + ((ulong)base * nkv + g) * HEAD_DIM;
        for (uint k = grp; k < n; k += ATT_GROUPS) {
            float4 v = vload4(d4, vb + (ulong)k * nkv * HEAD_DIM), pk = ps4[k];
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
            vstore4(s4 / den, l, out + ((ulong)(t0 + qi) * nq + h) * HEAD_DIM);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
