/* cpu_attention.c - one query head's softmax attention over a KV cache, and the
 * f32 dot product, dispatched to the SIMD level in use (scalar versions here).
 * Scores and the weighted sum of V are the per-level kernels; the softmax is
 * shared (expf over n_pos values costs little next to 2 * n_pos * head_dim FMAs). */
#include <math.h>
#include "cpu_kernels.h"
#include "cpu_panel.h"

float q3_dot_scalar(const float *a, const float *b, uint64_t n)
{
    float s = 0.0f;
    for (uint64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void q3_attn_scores_scalar(const float *q, const float *k, uint64_t stride, int n_pos, int d, float scale, float *scores)
{
    for (int j = 0; j < n_pos; j++) scores[j] = q3_dot_scalar(q, k + (uint64_t)j * stride, (uint64_t)d) * scale;
}

void q3_attn_pv_scalar(const float *p, const float *v, uint64_t stride, int n_pos, int d, float *out)
{
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int j = 0; j < n_pos; j++)
        for (int i = 0; i < d; i++) out[i] += p[j] * v[(uint64_t)j * stride + i];
}

float q3_dot(const float *a, const float *b, uint64_t n)
{
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) return q3_dot_avx512(a, b, n);
    if (level == Q3_SIMD_AVX2) return q3_dot_avx2(a, b, n);
    return q3_dot_scalar(a, b, n);
}

/* scores[0..n) <- softmax(scores[0..n)); scores[n..n_zero) <- 0 (masked positions). */
static void softmax_masked(float *scores, int n, int n_zero)
{
    for (int j = n; j < n_zero; j++) scores[j] = 0.0f;
    if (q3_simd_active() >= Q3_SIMD_AVX512BF16) {
        q3_softmax_avx512(scores, n);
        return;
    }
    float maxv = -INFINITY, sum = 0.0f;
    for (int j = 0; j < n; j++) maxv = scores[j] > maxv ? scores[j] : maxv;
    for (int j = 0; j < n; j++) sum += scores[j] = expf(scores[j] - maxv);
    float inv = n > 0 ? 1.0f / sum : 0.0f;
    for (int j = 0; j < n; j++) scores[j] *= inv;
}

void q3_attend_rows(const float *q, uint64_t q_stride, int n_q, int pos_step, const float *k, const float *v,
                    uint64_t kv_stride, int n_pos, int head_dim, float scale, float *scores, float *out,
                    uint64_t out_stride)
{
    if (q3_simd_active() >= Q3_SIMD_AVX512BF16) {
        /* 4 queries per pass over K and V: each row loaded once for 4. Rows a query
         * may not see get weight 0; they lie within what the last query sees. A
         * short last block repeats its last query (same result, stored twice). */
        for (int i = 0; i < n_q; i += 4) {
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
            q3_attn_scores4_avx512(qp, k, kv_stride, last, head_dim, scale, scores, (uint64_t)last);
            for (int r = 0; r < 4; r++) softmax_masked(scores + (uint64_t)r * last, np[r], last);
            q3_attn_pv4_avx512(scores, (uint64_t)last, v, kv_stride, last, head_dim, op);
        }
        return;
    }
    for (int i = 0; i < n_q; i++)
        q3_attend_head(q + (uint64_t)i * q_stride, k, v, kv_stride, n_pos + i * pos_step, head_dim, scale, scores,
                       out + (uint64_t)i * out_stride);
}

void q3_attend_head(const float *q, const float *k, const float *v, uint64_t kv_stride, int n_pos, int head_dim,
                    float scale, float *scores, float *out)
{
    q3_simd level = q3_simd_active();
    if (level >= Q3_SIMD_AVX512BF16) q3_attn_scores_avx512(q, k, kv_stride, n_pos, head_dim, scale, scores);
    else if (level == Q3_SIMD_AVX2) q3_attn_scores_avx2(q, k, kv_stride, n_pos, head_dim, scale, scores);
    else q3_attn_scores_scalar(q, k, kv_stride, n_pos, head_dim, scale, scores);
    softmax_masked(scores, n_pos, n_pos);
    if (level >= Q3_SIMD_AVX512BF16) q3_attn_pv_avx512(scores, v, kv_stride, n_pos, head_dim, out);
    else if (level == Q3_SIMD_AVX2) q3_attn_pv_avx2(scores, v, kv_stride, n_pos, head_dim, out);
    else q3_attn_pv_scalar(scores, v, kv_stride, n_pos, head_dim, out);
}
