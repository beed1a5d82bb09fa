/* Shared by the 8-bit optimizer tests (test_optim8bit.c, test_optim8bit1.c): the deterministic
 * parameters and gradients of tests/golden/gen/make_optim8bit_golden.py's hash, and the generators'
 * learning-rate schedule. */
#ifndef SD_TESTS_OPTIM8BIT_INPUTS_H
#define SD_TESTS_OPTIM8BIT_INPUTS_H

#include <math.h>
#include <stdint.h>

static inline uint32_t o8_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* a 16-bit mantissa scaled by 2^-(15 + lo_exp + h % span) */
static inline float o8_hval(uint32_t seed, uint32_t i, int lo_exp, int span)
{
    uint32_t h = o8_mix32(seed * 0x9E3779B1u + i);
    int mant = (int)(h & 0xFFFF) - 32768;
    int e = 15 + lo_exp + (span > 0 ? (int)((h >> 16) % (uint32_t)span) : 0);
    return ldexpf((float)mant, -e);
}

static inline void o8_gen_params(uint32_t seed, float *p, int n)
{
    for (int i = 0; i < n; i++) p[i] = o8_hval(seed, (uint32_t)i, 0, 0);
}

static inline void o8_gen_grads(uint32_t seed, int step, int span, float *g, int n)
{
    for (int i = 0; i < n; i++) g[i] = o8_hval(seed + 1000u * (uint32_t)step, (uint32_t)i, 3, span);
}

/* the learning rate of steps 1..6 (times a case's lrscale) */
static const double O8_LRS[6] = { 1e-3, 9e-4, 7.5e-4, 5e-4, 2.5e-4, 1e-4 };

#endif
