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

/* float8_e4m3fn (1 sign, 4 exponent bits biased 7, 3 mantissa bits; no infinity; S.1111.111 is
 * NaN; largest finite 448). Decoding is exact. Encoding is PyTorch's c10
 * fp8e4m3fn_from_fp32_value, bit for bit: round to nearest even, as if 480 were the next code
 * after 448, so |f| > 464 (and 480, inf, NaN) give NaN (0x7f, with the sign); 464 rounds to 448;
 * below 2^-6 the subnormals (steps of 2^-9), ties to even, down to ±0. */
SD_HALF_FN float sd_f8e4m3_to_f32(uint8_t c)
{
    uint32_t sign = (uint32_t)(c & 0x80) << 24, e = (c >> 3) & 15, m = c & 7, u;
    if (e == 15 && m == 7) u = sign | 0x7ff00000u;                      /* NaN (bits as c10) */
    else if (e) u = sign | ((e + 120) << 23) | (m << 20);               /* normal: bias 7 -> 127 */
    else {                                                              /* subnormal m * 2^-9 */
        float f = (float)m * (1.0f / 512.0f);
        memcpy(&u, &f, 4);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

SD_HALF_FN uint8_t sd_f32_to_f8e4m3(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint8_t r;
    if (u >= (1087u << 20)) {                 /* >= 480, inf, NaN */
        r = 0x7f;
    } else if (u < (121u << 23)) {            /* below 2^-6: the float add rounds into the subnormal grid */
        const uint32_t dm = 141u << 23;
        float a, b;
        memcpy(&a, &u, 4);
        memcpy(&b, &dm, 4);
        a += b;
        memcpy(&u, &a, 4);
        r = (uint8_t)(u - dm);
    } else {
        uint32_t odd = (u >> 20) & 1;
        u += ((uint32_t)(7 - 127) << 23) + 0x7ffff + odd;
        r = (uint8_t)(u >> 20);
    }
    return (uint8_t)(r | (sign >> 24));
}

SD_HALF_FN float sd_round_f8e4m3(float x) { return sd_f8e4m3_to_f32(sd_f32_to_f8e4m3(x)); }

void sd_f8e4m3_to_f32_n(const uint8_t *src, float *dst, size_t n);
void sd_f32_to_f8e4m3_n(const float *src, uint8_t *dst, size_t n);
void sd_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void sd_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);
/* x[i] = sd_round_bf16(x[i]) (bf16 != 0) or sd_round_f16(x[i]), split over the OpenMP team for
 * large n (elementwise: the same bytes for any thread count). */
void sd_round_half_n(float *x, size_t n, int bf16);

#endif
