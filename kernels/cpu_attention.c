/* cpu_attention.c - one query head's softmax attention over an F16 KV cache, the
 * cache store and the f32 dot product, dispatched to the SIMD level in use
 * (scalar versions here).
 * Scores and the weighted sum of V are the per-level kernels; so is the softmax at
 * AVX2 and AVX-512 (a vector exp), the scalar level uses expf. */
#include <math.h>
#include "cpu_half.h"
#include "cpu_kernels.h"
#include "cpu_panel.h"

float q3_dot_scalar(const float *a, const float *b, uint64_t n)
{
    float s = 0.0f;
    for (uint64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void q3_attn_scores_scalar(const float *q, const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                           float *scores)
{
    for (int j = 0; j < n_pos; j++) {
        const uint16_t *kj = k + (uint64_t)j * stride;
        float s = 0.0f;
        for (int i = 0; i < d; i++) s += q[i] * q3_half_to_float(kj[i]);
        scores[j] = s * scale;
    }
}

void q3_attn_pv_scalar(const float *p, const uint16_t *v, uint64_t stride, int n_pos, int d, float *out)
{
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int j = 0; j < n_pos; j++)
        for (int i = 0; i < d; i++) out[i] += p[j] * q3_half_to_float(v[(uint64_t)j * stride + i]);
}

void q3_f16_store(uint16_t *dst, const float *src, uint64_t n)
{
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) q3_f16_store_avx512(dst, src, n);
    else if (level == Q3_SIMD_AVX2) q3_f16_store_avx2(dst, src, n);
    else
        for (uint64_t i = 0; i < n; i++) dst[i] = q3_half_from_float(src[i]);
}

float q3_dot(const float *a, const float *b, uint64_t n)
{
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) return q3_dot_avx512(a, b, n);
    if (level == Q3_SIMD_AVX2) return q3_dot_avx2(a, b, n);
    return q3_dot_scalar(a, b, n);
}

void q3_softmax_masked(float *scores, int n, int n_zero)
{
    for (int j = n; j < n_zero; j++) scores[j] = 0.0f;
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) {
        q3_softmax_avx512(scores, n);
        return;
    }
    if (level == Q3_SIMD_AVX2) {
        q3_softmax_avx2(scores, n);
        return;
    }
    float maxv = -INFINITY, sum = 0.0f;
    for (int j = 0; j < n; j++) maxv = scores[j] > maxv ? scores[j] : maxv;
    for (int j = 0; j < n; j++) sum += scores[j] = expf(scores[j] - maxv);
    float inv = n > 0 ? 1.0f / sum : 0.0f;
    for (int j = 0; j < n; j++) scores[j] *= inv;
}

/* AVX-512 or AVX2: queries i..i+3 (those past n_q repeat the last one: same
 * result, stored twice) in one pass over K and V. Rows a query may not see get
 * weight 0; they lie within what the last query sees. */
static void rows4(int avx512, const float *q, uint64_t q_stride, int n_q, int i, int pos_step, const uint16_t *k,
                  const uint16_t *v, uint64_t kv_stride, int n_pos, int head_dim, float scale, float *scores,
                  float *out, uint64_t out_stride)
{
    const float *qp[4];
    float *op[4];
    int np[4];
    for (int r = 0; r < 4; r++) {
        int qi = i + r < n_q ? i + r : n_q - 1;
        qp[r] = q + (uint64_t)qi * q_stride;
        op[r] = out + (uint64_t)qi * out_stride;
        np[r] = n_pos + qi * pos_step;
    }
    int last = np[3]; /* the largest: pos_step >= 0 */
    if (avx512) q3_attn_scores4_avx512(qp, k, kv_stride, last, head_dim, scale, scores, (uint64_t)last);
    else q3_attn_scores4_avx2(qp, k, kv_stride, last, head_dim, scale, scores, (uint64_t)last);
    for (int r = 0; r < 4; r++) q3_softmax_masked(scores + (uint64_t)r * last, np[r], last);
    if (avx512) q3_attn_pv4_avx512(scores, (uint64_t)last, v, kv_stride, last, head_dim, op);
    else q3_attn_pv4_avx2(scores, (uint64_t)last, v, kv_stride, last, head_dim, op);
}

/* AVX-512 or AVX2: queries i, i+1 (a GQA pair, or two prompt tokens) in one pass over K and V. */
static void rows2(int avx512, const float *q, uint64_t q_stride, int i, int pos_step, const uint16_t *k,
                  const uint16_t *v, uint64_t kv_stride, int n_pos, int head_dim, float scale, float *scores, float *out,
                  uint64_t out_stride)
{
    const float *qp[2] = {q + (uint64_t)i * q_stride, q + (uint64_t)(i + 1) * q_stride};
    float *op[2] = {out + (uint64_t)i * out_stride, out + (uint64_t)(i + 1) * out_stride};
    int np0 = n_pos + i * pos_step, last = n_pos + (i + 1) * pos_step;
    if (avx512) q3_attn_scores2_avx512(qp, k, kv_stride, last, head_dim, scale, scores, (uint64_t)last);
    else q3_attn_scores2_avx2(qp, k, kv_stride, last, head_dim, scale, scores, (uint64_t)last);
    q3_softmax_masked(scores, np0, last);
    q3_softmax_masked(scores + last, last, last);
    if (avx512) q3_attn_pv2_avx512(scores, (uint64_t)last, v, kv_stride, last, head_dim, op);
    else q3_attn_pv2_avx2(scores, (uint64_t)last, v, kv_stride, last, head_dim, op);
}

void q3_attend_rows(const float *q, uint64_t q_stride, int n_q, int pos_step, const uint16_t *k, const uint16_t *v,
                    uint64_t kv_stride, int n_pos, int head_dim, float scale, float *scores, float *out,
                    uint64_t out_stride)
{
    q3_simd level = q3_simd_active();
    int avx512 = level >= Q3_SIMD_AVX512BF16, avx2 = level == Q3_SIMD_AVX2;
    for (int i = 0; i < n_q;) {
        int left = n_q - i;
        /* AVX2 keeps the pair kernels for a decode's GQA group (pos_step 0): they read
         * V in one sequential pass, where the 4-query kernel's 16-column passes stream
         * it from memory in strides. A group of 4 (4B) over 4096 positions, two
         * pairs against the 4-query kernels: 248-254 against 347-439 ms a token, at
         * 40-44 % and 30-33 % of the probe (q3bandwidth --attention-decode --group 4,
         * interleaved, a loaded machine). */
        if ((avx512 || (avx2 && pos_step > 0)) && left >= 3) {
            rows4(avx512, q, q_stride, n_q, i, pos_step, k, v, kv_stride, n_pos, head_dim, scale, scores, out, out_stride);
            i += 4;
        } else if ((avx512 && left == 2) || (avx2 && left >= 2)) {
            rows2(avx512, q, q_stride, i, pos_step, k, v, kv_stride, n_pos, head_dim, scale, scores, out, out_stride);
            i += 2;
        } else {
            q3_attend_head(q + (uint64_t)i * q_stride, k, v, kv_stride, n_pos + i * pos_step, head_dim, scale, scores,
                           out + (uint64_t)i * out_stride);
            i++;
        }
    }
}

void q3_attend_head(const float *q, const uint16_t *k, const uint16_t *v, uint64_t kv_stride, int n_pos, int head_dim,
                    float scale, float *scores, float *out)
{
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) q3_attn_scores_avx512(q, k, kv_stride, n_pos, head_dim, scale, scores);
    else if (level == Q3_SIMD_AVX2) q3_attn_scores_avx2(q, k, kv_stride, n_pos, head_dim, scale, scores);
    else q3_attn_scores_scalar(q, k, kv_stride, n_pos, head_dim, scale, scores);
    q3_softmax_masked(scores, n_pos, n_pos);
    if (level >= Q3_SIMD_AVX512BF16) q3_attn_pv_avx512(scores, v, kv_stride, n_pos, head_dim, out);
    else if (level == Q3_SIMD_AVX2) q3_attn_pv_avx2(scores, v, kv_stride, n_pos, head_dim, out);
    else q3_attn_pv_scalar(scores, v, kv_stride, n_pos, head_dim, out);
}
