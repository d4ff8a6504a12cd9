/* cpu_attention_q8.c - attention over the 8-bit KV cache (cpu_kernels.h, Q3_Q8_BLOCK):
 * the store (one definition of the rounding for every level), the scalar kernels that
 * are the reference, and the dispatch. Up to 4 queries share each pass over K and V
 * (a decode's GQA group, or 4 consecutive prompt tokens of one head), as q3_attend_rows
 * does for the F16 cache; the arithmetic is f32, each block's sum scaled once. */
#include <math.h>
#include "cpu_half.h"
#include "cpu_kernels.h"
#include "cpu_panel.h"

void q3_q8_store_scalar(int8_t *dst, uint16_t *scales, const float *src, uint64_t n)
{
    for (uint64_t b = 0; b < n / Q3_Q8_BLOCK; b++) {
        const float *x = src + b * Q3_Q8_BLOCK;
        float amax = 0.0f;
        int finite = 1;
        for (int i = 0; i < Q3_Q8_BLOCK; i++) {
            finite &= isfinite(x[i]) != 0;
            amax = fmaxf(amax, fabsf(x[i]));
        }
        /* A block with an inf or NaN gets a NaN scale: the scores and sums it enters are
         * NaN, as with the F16 cache, where the caller's checks see them. */
        float d = finite ? amax / 127.0f : NAN, id = finite && d > 0.0f ? 1.0f / d : 0.0f;
        scales[b] = q3_half_from_float(d);
        for (int i = 0; i < Q3_Q8_BLOCK; i++)
            dst[b * Q3_Q8_BLOCK + i] = (int8_t)(finite ? nearbyintf(x[i] * id) : 0.0f);
    }
}

void q3_q8_store(int8_t *dst, uint16_t *scales, const float *src, uint64_t n)
{
    if (q3_simd_active() >= Q3_SIMD_AVX2) q3_q8_store_avx2(dst, scales, src, n);
    else q3_q8_store_scalar(dst, scales, src, n);
}

void q3_q8_load_f16(uint16_t *dst, const int8_t *src, const uint16_t *scales, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) dst[i] = q3_half_from_float(src[i] * q3_half_to_float(scales[i / Q3_Q8_BLOCK]));
}

void q3_attn_scores_q8_scalar(const float *const q[], int G, const int8_t *k, const uint16_t *ks, int n_pos, int d,
                              float scale, float *scores, uint64_t ld)
{
    int nb = d / Q3_Q8_BLOCK;
    for (int j = 0; j < n_pos; j++) {
        const int8_t *kj = k + (uint64_t)j * d;
        for (int g = 0; g < G; g++) {
            float s = 0.0f;
            for (int b = 0; b < nb; b++) {
                float a = 0.0f;
                for (int i = b * Q3_Q8_BLOCK; i < (b + 1) * Q3_Q8_BLOCK; i++) a += q[g][i] * (float)kj[i];
                s += a * q3_half_to_float(ks[(uint64_t)j * nb + b]);
            }
            scores[(uint64_t)g * ld + j] = s * scale;
        }
    }
}

void q3_attn_pv_q8_scalar(const float *p, uint64_t ld, int G, const int8_t *v, const uint16_t *vs, int n_pos, int d,
                          float *const out[])
{
    int nb = d / Q3_Q8_BLOCK;
    for (int g = 0; g < G; g++)
        for (int i = 0; i < d; i++) out[g][i] = 0.0f;
    for (int j = 0; j < n_pos; j++)
        for (int b = 0; b < nb; b++) {
            float sc = q3_half_to_float(vs[(uint64_t)j * nb + b]);
            const int8_t *vj = v + (uint64_t)j * d + b * Q3_Q8_BLOCK;
            for (int g = 0; g < G; g++) {
                float c = p[(uint64_t)g * ld + j] * sc;
                for (int i = 0; i < Q3_Q8_BLOCK; i++) out[g][b * Q3_Q8_BLOCK + i] += c * (float)vj[i];
            }
        }
}

void q3_attend_rows_q8(const float *q, uint64_t q_stride, int n_q, int pos_step, const int8_t *k, const uint16_t *ks,
                       const int8_t *v, const uint16_t *vs, int n_pos, int head_dim, float scale, float *scores,
                       float *out, uint64_t out_stride)
{
    q3_simd level = q3_simd_active();
    for (int i = 0; i < n_q; i += 4) {
        int G = n_q - i < 4 ? n_q - i : 4;
        const float *qp[4];
        float *op[4];
        for (int g = 0; g < G; g++) {
            qp[g] = q + (uint64_t)(i + g) * q_stride;
            op[g] = out + (uint64_t)(i + g) * out_stride;
        }
        /* Every query scores the positions the last one sees; those it may not see get
         * weight 0 (a prompt's causal mask). */
        int last = n_pos + (i + G - 1) * pos_step;
        uint64_t ld = (uint64_t)last;
        if (level >= Q3_SIMD_AVX512BF16) q3_attn_scores_q8_avx512(qp, G, k, ks, last, head_dim, scale, scores, ld);
        else if (level == Q3_SIMD_AVX2) q3_attn_scores_q8_avx2(qp, G, k, ks, last, head_dim, scale, scores, ld);
        else q3_attn_scores_q8_scalar(qp, G, k, ks, last, head_dim, scale, scores, ld);
        for (int g = 0; g < G; g++) q3_softmax_masked(scores + (uint64_t)g * ld, n_pos + (i + g) * pos_step, last);
        if (level >= Q3_SIMD_AVX512BF16) q3_attn_pv_q8_avx512(scores, ld, G, v, vs, last, head_dim, op);
        else if (level == Q3_SIMD_AVX2) q3_attn_pv_q8_avx2(scores, ld, G, v, vs, last, head_dim, op);
        else q3_attn_pv_q8_scalar(scores, ld, G, v, vs, last, head_dim, op);
    }
}
