/* IEEE binary16 and bfloat16 conversions (round to nearest even; NaN kept NaN; inf kept). */
#ifndef SD_BASE_HALF_H
#define SD_BASE_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The scalar conversions also compile as CUDA device functions (lib/tensor/optim_elem.h). */
#ifdef __CUDACC__
#define SD_HALF_FN static inline __host__ __device__
#else
#define SD_HALF_FN static inline
#endif

SD_HALF_FN float sd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else {  /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            u = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) u = sign | 0x7f800000u | man << 13 | (man ? 0x400000u : 0);
    else u = sign | (exp + 112) << 23 | man << 13;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

SD_HALF_FN uint16_t sd_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);          /* overflow → inf */
    if (a < 0x38800000u) {                                             /* subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;                    /* < 2^-25 rounds to 0 */
        uint32_t m = (a & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(a >> 23);                              /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((a >> 13) - (112u << 10));
    uint32_t rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

SD_HALF_FN float sd_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

SD_HALF_FN uint16_t sd_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* x rounded to the nearest binary16 / bfloat16 value, as a float (f16: ±inf past 65504). */
SD_HALF_FN float sd_round_f16(float x) { return sd_f16_to_f32(sd_f32_to_f16(x)); }
SD_HALF_FN float sd_round_bf16(float x) { return sd_bf16_to_f32(sd_f32_to_bf16(x)); }

void sd_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void sd_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);
/* x[i] = sd_round_bf16(x[i]) (bf16 != 0) or sd_round_f16(x[i]), split over the OpenMP team for
 * large n (elementwise: the same bytes for any thread count). */
void sd_round_half_n(float *x, size_t n, int bf16);

#endif
