/* cpu_avx512_util.h - small AVX-512 helpers shared by the cpu_avx512_*.c files
 * (internal; include only from files built with the AVX-512 flags). */
#ifndef Q3_CPU_AVX512_UTIL_H
#define Q3_CPU_AVX512_UTIL_H

#include <immintrin.h>

/* Sum each of 16 vectors: r[m] = sum of the 16 lanes of v[m]. A shuffle-and-add
 * tree (4 levels, 45 ops) instead of 16 separate reductions (~130 ops). After
 * the tree, lane 4l + e holds the sum of v[4e + l]; one permute puts it right. */
static inline __m512 q3_reduce16(const __m512 v[16])
{
    __m512 x[8], y[4], z[2];
    /* Fully unrolled, so the callers' accumulators stay in registers: left as loops,
     * GCC -O2 kept v[] in memory and stored all 16 accumulators on every iteration
     * of the callers' dot-product loops. */
    _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++)
        x[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xee));
    _Pragma("GCC unroll 4") for (int m = 0; m < 4; m++)
        y[m] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * m], x[2 * m + 1], 0x88),
                             _mm512_shuffle_f32x4(x[2 * m], x[2 * m + 1], 0xdd));
    _Pragma("GCC unroll 2") for (int n = 0; n < 2; n++)
        z[n] = _mm512_add_ps(_mm512_shuffle_ps(y[2 * n], y[2 * n + 1], 0x44), _mm512_shuffle_ps(y[2 * n], y[2 * n + 1], 0xee));
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], 0x88), _mm512_shuffle_ps(z[0], z[1], 0xdd));
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(idx, r);
}

#endif
