/* cpu_half.h - IEEE half (F16) <-> f32 in plain C, for the KV cache: bit-exact
 * with the F16C instructions (vcvtps2ph with round-to-nearest-even, vcvtph2ps),
 * so every SIMD level stores and reads the same cache. */
#ifndef Q3_CPU_HALF_H
#define Q3_CPU_HALF_H

#include <stdint.h>

/* Exact: every half is a float. The exponent is rebased by a multiply by 2^112,
 * which also normalizes subnormal halves. */
static inline float q3_half_to_float(uint16_t h)
{
    union { uint32_t u; float f; } v = {(uint32_t)(h & 0x7fffu) << 13};
    if ((h & 0x7c00u) == 0x7c00u) v.u |= 0x7f800000u; /* inf, NaN (payload kept) */
    else v.f *= 0x1p112f;
    v.u |= (uint32_t)(h & 0x8000u) << 16;
    return v.f;
}

/* Round to nearest even; beyond the largest half (65504) -> inf; NaN stays a
 * quiet NaN with its payload's top bits, as vcvtps2ph does. */
static inline uint16_t q3_half_from_float(float f)
{
    union { float f; uint32_t u; } v = {f};
    uint32_t sign = (v.u >> 16) & 0x8000u, a = v.u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (a >= 0x38800000u) {                                  /* a normal half */
        uint32_t r = a - 0x38000000u;                        /* exponent bias 127 -> 15 */
        return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
    }
    if (a <= 0x33000000u) return (uint16_t)sign; /* <= 2^-25: rounds to (even) zero */
    /* a subnormal half: units of 2^-24 */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, s = 126u - e; /* s in 14..24 */
    uint32_t q = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1u);
    q += rem > half || (rem == half && (q & 1u));
    return (uint16_t)(sign | q);
}

#endif
