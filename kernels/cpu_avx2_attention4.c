/* cpu_avx2_attention4.c - AVX2 attention for 4 queries of one KV head at once (4
 * consecutive prompt tokens of a head, or 4 query heads of a GQA group): each K and
 * V row is widened from F16 once for all 4, and every sum stays in a register.
 * A prompt's K and V are in L2, so these kernels are bound by the FMA ports, not by
 * memory: the pair kernels (cpu_avx2_attention.c) widened each row for 2 queries
 * and kept their V sums in an L1 buffer (2 loads and 2 stores per 2 FMAs), and ran a
 * prompt's attention no faster per query than one query alone did. */
#include <immintrin.h>
#include "cpu_avx2_util.h"
#include "cpu_half.h"
#include "cpu_panel.h"

/* dot(q, k_j) of 4 queries with one key row in scalar code (last row, head_dim tail). */
static void dot4_tail(const float *const q[4], const uint16_t *kj, int i0, int d, float s[4])
{
    for (int i = i0; i < d; i++) {
        float kf = q3_half_to_float(kj[i]);
        for (int qi = 0; qi < 4; qi++) s[qi] += q[qi][i] * kf;
    }
}

/* 4 queries x 2 keys per step: 8 sums (enough independent FMAs for 2 ports of
 * latency 4) + 2 widened keys, the queries read as memory operands; 16 ymm would not
 * hold 4 x 4 sums. The 8 sums end in one hadd tree. The dot-product loop is unrolled
 * 4 times (16 iterations at head_dim 128): 4.6 -> 4.2 us per query over a 512-position
 * block (q3bandwidth --attention); unrolling the V loop below gave nothing. */
void q3_attn_scores4_avx2(const float *const q[4], const uint16_t *k, uint64_t stride, int n_pos, int d, float scale,
                          float *scores, uint64_t ld)
{
    int j = 0, d8 = d / 8 * 8;
    const __m256 sc = _mm256_set1_ps(scale);
    for (; j + 2 <= n_pos; j += 2) {
        const uint16_t *k0 = k + (uint64_t)j * stride, *k1 = k0 + stride;
        __m256 a[8];
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
        _Pragma("GCC unroll 4") for (int i = 0; i < d8; i += 8) {
            __m256 x0 = q3_load_h8(k0 + i), x1 = q3_load_h8(k1 + i);
            _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++) {
                __m256 qv = _mm256_loadu_ps(q[qi] + i);
                a[2 * qi] = _mm256_fmadd_ps(qv, x0, a[2 * qi]);
                a[2 * qi + 1] = _mm256_fmadd_ps(qv, x1, a[2 * qi + 1]);
            }
        }
        /* hadd within 128-bit lanes: h0 = [a0 a1 a2 a3 | a0 a1 a2 a3] partial sums
         * (low and high halves of each), h1 the same for a4..a7; adding the lanes
         * gives lane m = sum of a[m] = query m / 2, key m % 2. */
        __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
        __m256 s = _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
        _Alignas(32) float out[8];
        _mm256_store_ps(out, s);
        if (d8 < d) { /* head_dim not a multiple of 8 */
            float t0[4] = {0}, t1[4] = {0};
            dot4_tail(q, k0, d8, d, t0);
            dot4_tail(q, k1, d8, d, t1);
            for (int qi = 0; qi < 4; qi++) out[2 * qi] += t0[qi], out[2 * qi + 1] += t1[qi];
        }
        _mm256_store_ps(out, _mm256_mul_ps(_mm256_load_ps(out), sc));
        for (int qi = 0; qi < 4; qi++) {
            scores[qi * ld + j] = out[2 * qi];
            scores[qi * ld + j + 1] = out[2 * qi + 1];
        }
    }
    for (; j < n_pos; j++) {
        const uint16_t *kj = k + (uint64_t)j * stride;
        __m256 a[4];
        _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++) a[qi] = _mm256_setzero_ps();
        for (int i = 0; i < d8; i += 8) {
            __m256 x0 = q3_load_h8(kj + i);
            _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++)
                a[qi] = _mm256_fmadd_ps(_mm256_loadu_ps(q[qi] + i), x0, a[qi]);
        }
        float s[4] = {q3_hsum256(a[0]), q3_hsum256(a[1]), q3_hsum256(a[2]), q3_hsum256(a[3])};
        dot4_tail(q, kj, d8, d, s);
        for (int qi = 0; qi < 4; qi++) scores[qi * ld + j] = s[qi] * scale;
    }
}

/* 4 queries: out[qi] = sum_j p[qi * ld + j] * v_j. 16 columns (2 ymm) per pass over
 * V: 8 sums in registers, per row 2 widenings, 4 broadcasts (load-port only) and 8
 * FMAs. A pass reads 32 bytes of each row; the next pass finds the rest of those
 * cache lines in L1 (a 512-position head: 32 KiB) or L2. Two out pointers may be
 * equal when their queries are (the same values are stored twice). */
void q3_attn_pv4_avx2(const float *p, uint64_t ld, const uint16_t *v, uint64_t stride, int n_pos, int d,
                      float *const out[4])
{
    int c0 = 0;
    for (; c0 + 16 <= d; c0 += 16) {
        __m256 a[4][2];
        _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++) a[qi][0] = a[qi][1] = _mm256_setzero_ps();
        const uint16_t *vj = v + c0;
        for (int j = 0; j < n_pos; j++, vj += stride) {
            __m256 x0 = q3_load_h8(vj), x1 = q3_load_h8(vj + 8);
            _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++) {
                __m256 pj = _mm256_broadcast_ss(p + qi * ld + j);
                a[qi][0] = _mm256_fmadd_ps(pj, x0, a[qi][0]);
                a[qi][1] = _mm256_fmadd_ps(pj, x1, a[qi][1]);
            }
        }
        _Pragma("GCC unroll 4") for (int qi = 0; qi < 4; qi++) {
            _mm256_storeu_ps(out[qi] + c0, a[qi][0]);
            _mm256_storeu_ps(out[qi] + c0 + 8, a[qi][1]);
        }
    }
    for (; c0 < d; c0++) /* head_dim not a multiple of 16: the last columns one by one */
        for (int qi = 0; qi < 4; qi++) {
            float s = 0.0f;
            for (int j = 0; j < n_pos; j++) s += p[qi * ld + j] * q3_half_to_float(v[(uint64_t)j * stride + c0]);
            out[qi][c0] = s;
        }
}
