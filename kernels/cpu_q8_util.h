/* cpu_q8_util.h - what the AVX2 and AVX-512 kernels over the 8-bit KV cache share
 * (internal; include only from files built with F16C, cpu_avx2_* and cpu_avx512_*): the
 * chunking and prefetch distances, and the scale tables both build before their
 * vector-width-specific loops. */
#ifndef Q3_CPU_Q8_UTIL_H
#define Q3_CPU_Q8_UTIL_H

#include <immintrin.h>
#include <stdint.h>
#include "cpu_kernels.h"

#define Q3_Q8_INLINE static inline __attribute__((always_inline))

/* V rows per chunk: the column passes after the first read the chunk (8 KiB at
 * head_dim 128) from L1, so V streams from memory once, in order. */
#define PV_CHUNK 64
/* V: the next chunk's rows, a row at a time (two chunks ahead: no better at AVX-512,
 * 4-9 % slower at AVX2). K: rows 64 ahead of the scores (8 KiB at head_dim 128). Measured
 * with q3bandwidth --attention-decode --positions 4096 --cache-type q8_0 on the Zen 5
 * guest, two rounds, ms a token: AVX-512 16.5, 15.5 -> 13.8, 13.8; AVX2 17.8, 17.7 ->
 * 16.1, 16.2 (32 and 96 rows about the same). Both unconditional: measured on AMD, where
 * the F16 kernels' prefetch lost (cpu_panel.h). -DPV_PF_ROWS= / -DSC_PF_ROWS= to tune (0: none;
 * both help on the Intel guest too: docs/perf.md, fifth session of 2026-12-03). */
#ifndef PV_PF_ROWS
#define PV_PF_ROWS PV_CHUNK
#endif
#ifndef SC_PF_ROWS
#define SC_PF_ROWS 64
#endif

/* Every line of a row of d int8 values (past the cache: a prefetch never faults). */
Q3_Q8_INLINE void q8_prefetch_row(const int8_t *row, int d)
{
    for (int o = 0; o < d; o += 64) _mm_prefetch((const char *)(row + o), _MM_HINT_T0);
}

/* A row's nb block scales as f32, 4 widened at once. */
Q3_Q8_INLINE void q8_widen_scales(const uint16_t *s, int nb, float *out)
{
    int b = 0;
    for (; b + 4 <= nb; b += 4) _mm_storeu_ps(out + b, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(s + b))));
    for (; b < nb; b++) out[b] = _cvtsh_ss(s[b]);
}

/* The scores' first work for P rows from j (every level's score step): K's rows
 * SC_PF_ROWS ahead asked for, and the P rows' block scales widened to f32 into sc[p]. */
Q3_Q8_INLINE void q8_score_rows(const int8_t *k, const uint16_t *ks, int j, int P, int d,
                                float sc[][Q3_Q8_MAX_HEAD_DIM / Q3_Q8_BLOCK])
{
    int nb = d / Q3_Q8_BLOCK;
    if (SC_PF_ROWS)
        for (int p = 0; p < P; p++) q8_prefetch_row(k + (uint64_t)(j + p + SC_PF_ROWS) * d, d);
    _Pragma("GCC unroll 16") for (int p = 0; p < P; p++) q8_widen_scales(ks + (uint64_t)(j + p) * nb, nb, sc[p]);
}

/* V rows j0 .. j1's weights: w[((j - j0) * G + g) * nb + b] = p[g * ld + j] times the
 * scale of row j's block b, so each pass over the chunk broadcasts one float per block. */
Q3_Q8_INLINE void q8_chunk_weights(const float *p, uint64_t ld, int G, const uint16_t *vs, int j0, int j1, int nb,
                                   float *w)
{
    for (int j = j0; j < j1; j++) {
        const uint16_t *sj = vs + (uint64_t)j * nb;
        int b = 0;
        for (; b + 4 <= nb; b += 4) { /* 4 scales widened at once */
            __m128 sc = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(sj + b)));
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                _mm_storeu_ps(w + ((j - j0) * G + g) * nb + b, _mm_mul_ps(sc, _mm_set1_ps(p[(uint64_t)g * ld + j])));
        }
        for (; b < nb; b++)
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                w[((j - j0) * G + g) * nb + b] = p[(uint64_t)g * ld + j] * _cvtsh_ss(sj[b]);
    }
}

#endif
