/* cpu_avx2_util.h - small AVX2 helpers shared by the cpu_avx2_*.c files (internal;
 * include only from files built with the AVX2 flags): horizontal sums, F16 loads
 * and the vector exp of the softmax and SiLU. */
#ifndef Q3_CPU_AVX2_UTIL_H
#define Q3_CPU_AVX2_UTIL_H

#include <immintrin.h>
#include <stdint.h>

static inline float q3_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float q3_hmax256(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 halves as f32 (F16C). */
static inline __m256 q3_load_h8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* The bounds of q3_exp256's argument: below Q3_EXP_MIN it gives e^Q3_EXP_MIN (~1e-38,
 * a normal float), above Q3_EXP_MAX e^Q3_EXP_MAX (~1.65e38), where expf would give 0
 * or inf; the softmax and SiLU results do not change by more than ~1e-38 for it. */
#define Q3_EXP_MIN (-87.5f)
#define Q3_EXP_MAX 88.0f

/* e^x, as the AVX-512 softmax's (cpu_avx512_attention.c): 2^n * e^r with n = round(x /
 * ln 2), |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial (truncation <= 1.2e-7
 * relative), 2^n built in the exponent field (n in -126..127 after the clamp: a normal
 * float). Relative error <= ~3e-7 over [Q3_EXP_MIN, Q3_EXP_MAX] (tests/test_kernels.c
 * measures it against exp()). */
static inline __m256 q3_exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(Q3_EXP_MIN)), _mm256_set1_ps(Q3_EXP_MAX));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x); /* ln2 split in two for exactness */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#endif
