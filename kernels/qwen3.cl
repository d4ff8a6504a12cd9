/* qwen3.cl - the Qwen3 graph for OpenCL C 1.2 devices.
 * Weights stay BF16 in the file's R16C32 tiled layout (spec.md 8) in one device
 * buffer; a BF16 is widened by a shift (as_float(bits << 16)). Activations and
 * the KV cache are f32. */

#define TOKB 4    /* tokens per matmul work-group: each weight load serves 4 tokens */
#define MM_WG 128 /* threads per 16-row panel: one 1 KiB tile is 256 uints, 2 per thread */

inline float bf16_lo(uint w) { return as_float(w << 16); }
inline float bf16_hi(uint w) { return as_float(w & 0xffff0000u); }
inline float bf16(ushort h) { return as_float((uint)h << 16); }

/* y[t * ldy + r] = sum_c W[r][c] * x[t * cols + c]; one work-group per panel and
 * block of TOKB tokens. Thread l reads uints l and l + 128 of every tile: rows
 * l / 16 and l / 16 + 8, columns 2 (l % 16) and + 1; 16 threads share a row. */
__kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1)))
void matmul(__global const uint *W, ulong w_off, uint rows, uint cols, __global const float *x,
            __global float *y, uint ldy, uint n_tok)
{
    __local float red[MM_WG];
    uint panel = get_group_id(0), tb = get_group_id(1) * TOKB, l = get_local_id(0);
    uint col_tiles = (cols + 31) / 32;
    __global const uint *P = W + w_off + (ulong)panel * col_tiles * 256;
    uint cp = (l & 15) * 2;
    float acc0[TOKB], acc1[TOKB];
    for (int t = 0; t < TOKB; t++) acc0[t] = acc1[t] = 0.0f;
    for (uint c = 0; c < col_tiles; c++) {
        uint w0 = P[c * 256 + l], w1 = P[c * 256 + 128 + l];
        uint col = c * 32 + cp;
        for (int t = 0; t < TOKB; t++) {
            if (tb + t >= n_tok) break;
            __global const float *xt = x + (ulong)(tb + t) * cols;
            float x0 = col < cols ? xt[col] : 0.0f, x1 = col + 1 < cols ? xt[col + 1] : 0.0f;
            acc0[t] += bf16_lo(w0) * x0 + bf16_hi(w0) * x1;
            acc1[t] += bf16_lo(w1) * x0 + bf16_hi(w1) * x1;
        }
    }
    for (int t = 0; t < TOKB; t++) {
        if (tb + t >= n_tok) break;
        for (int hh2 = 0; hh2 < 2; hh2++) {
            red[l] = hh2 ? acc1[t] : acc0[t];
            barrier(CLK_LOCAL_MEM_FENCE);
            for (uint s = 8; s > 0; s >>= 1) {
                if ((l & 15) < s) red[l] += red[l + s];
                barrier(CLK_LOCAL_MEM_FENCE);
            }
            uint row = panel * 16 + (l >> 4) + (hh2 ? 8 : 0);
            if ((l & 15) == 0 && row < rows) y[(ulong)(tb + t) * ldy + row] = red[l];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
}

/* x[t][c] = embedding row tokens[t]; global size (hidden, n_tok). */
__kernel void embed(__global const ushort *W, ulong w_off, uint cols, __global const int *tokens, __global float *x)
{
    uint c = get_global_id(0), t = get_global_id(1);
    uint r = (uint)tokens[t], col_tiles = (cols + 31) / 32;
    ulong idx = ((ulong)(r / 16) * col_tiles + c / 32) * 512 + (r % 16) * 32 + c % 32;
    x[(ulong)t * cols + c] = bf16(W[(ulong)w_off + idx]);
}

#define NORM_WG 256

/* Optionally x += delta, then out = rmsnorm(x) * w; one work-group per token. */
__kernel __attribute__((reqd_work_group_size(NORM_WG, 1, 1)))
void add_rmsnorm(__global float *x, __global const float *delta, int add, __global const ushort *W, ulong w_off,
                 __global float *out, uint n, float eps)
{
    __local float red[NORM_WG];
    uint t = get_group_id(0), l = get_local_id(0);
    __global float *xt = x + (ulong)t * n;
    float ss = 0.0f;
    for (uint i = l; i < n; i += NORM_WG) {
        float v = xt[i];
        if (add) {
            v += delta[(ulong)t * n + i];
            xt[i] = v;
        }
        ss += v * v;
    }
    red[l] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = NORM_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float scale = 1.0f / sqrt(red[0] / (float)n + eps);
    for (uint i = l; i < n; i += NORM_WG) out[(ulong)t * n + i] = bf16(W[w_off + i]) * (xt[i] * scale);
}

/* Per head: q_norm / k_norm, rotate-hh2 RoPE, and K, V into the cache.
 * Work-group (64) per (head, token); heads 0..nq-1 are queries, then KV heads. */
__kernel __attribute__((reqd_work_group_size(64, 1, 1)))
void qk_norm_rope(__global float *q, __global float *k, __global const float *v, __global const ushort *W,
                  ulong qn_off, ulong kn_off, __global const float *cos_t, __global const float *sin_t,
                  __global float *kcache, __global float *vcache, uint nq, uint nkv, uint D, uint pos, float eps)
{
    __local float red[64];
    uint h = get_group_id(0), t = get_group_id(1), l = get_local_id(0), hh2 = D / 2, p = pos + t;
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
    for (uint i = l; i < hh2; i += 64) {
        float a = bf16(W[off + i]) * (vec[i] * scale), b = bf16(W[off + i + hh2]) * (vec[i + hh2] * scale);
        float c = cos_t[(ulong)p * hh2 + i], s = sin_t[(ulong)p * hh2 + i];
        vec[i] = a * c - b * s;
        vec[i + hh2] = b * c + a * s;
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

/* Causal attention for one (head, token): scores over 0..pos+t in global
 * scratch, softmax, weighted sum of V. kcache/vcache are one layer's. */
__kernel __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attention(__global const float *q, __global const float *kcache, __global const float *vcache,
               __global float *scores, __global float *out, uint nq, uint nkv, uint D, uint pos, uint n_ctx)
{
    __local float red[ATT_WG];
    uint h = get_group_id(0), t = get_group_id(1), l = get_local_id(0);
    uint g = h / (nq / nkv), last = pos + t;
    __global const float *qh = q + ((ulong)t * nq + h) * D;
    __global float *sc = scores + ((ulong)t * nq + h) * n_ctx;
    float scale = 1.0f / sqrt((float)D), mx = -INFINITY;
    for (uint j = l; j <= last; j += ATT_WG) {
        __global const float *kj = kcache + ((ulong)j * nkv + g) * D;
        float s = 0.0f;
        for (uint i = 0; i < D; i++) s += qh[i] * kj[i];
        s *= scale;
        sc[j] = s;
        mx = fmax(mx, s);
    }
    red[l] = mx;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = ATT_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] = fmax(red[l], red[l + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    mx = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float sum = 0.0f;
    for (uint j = l; j <= last; j += ATT_WG) {
        float e = exp(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    red[l] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = ATT_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float inv = 1.0f / red[0];
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (uint i = l; i < D; i += ATT_WG) {
        float acc = 0.0f;
        for (uint j = 0; j <= last; j++) acc += sc[j] * vcache[((ulong)j * nkv + g) * D + i];
        out[((ulong)t * nq + h) * D + i] = acc * inv;
    }
}

/* gate = silu(gate) * up */
__kernel void silu_mul(__global float *gate, __global const float *up)
{
    size_t i = get_global_id(0);
    float g = gate[i];
    gate[i] = g / (1.0f + exp(-g)) * up[i];
}

