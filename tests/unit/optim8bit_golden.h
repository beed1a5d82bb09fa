/* Shared by the 8-bit optimizer tests (test_optim8bit.c, test_optim8bit1.c): the deterministic
 * parameters and gradients of tests/golden/gen/make_optim8bit_golden.py's hash, the generators'
 * learning-rate schedule, and a case's parameters and states checked against the golden file's
 * tensors "<case>.<what>". Uses test.h's T_* macros. */
#ifndef SD_TESTS_OPTIM8BIT_GOLDEN_H
#define SD_TESTS_OPTIM8BIT_GOLDEN_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "test.h"

/* a 16-bit mantissa scaled by 2^-(15 + lo_exp + h % span) */
static inline float o8_hval(uint32_t seed, uint32_t i, int lo_exp, int span)
{
    uint32_t h = t_mix32(seed * 0x9E3779B1u + i);
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

static inline int o8_read_golden(const sd_safetensors *st, const char *name, sd_st_dtype dt, void *dst, size_t n)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    if (!t || t->dtype != dt || (size_t)t->numel != n) {
        printf("#   golden tensor %s missing or malformed\n", name);
        return -1;
    }
    return sd_safetensors_read(st, t, dt, dst, n);
}

static inline int o8_bits_eq(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* the parameters after step 1 bit for bit as "<case>.p1" (want: n floats of scratch) */
static inline void o8_check_p1(const sd_safetensors *st, const char *cname, const float *p, float *want, int n)
{
    char name[64];
    snprintf(name, sizeof name, "%s.p1", cname);
    if (o8_read_golden(st, name, SD_ST_F32, want, (size_t)n) == 0) {
        int same = 1;
        for (int i = 0; i < n; i++) same &= o8_bits_eq(p[i], want[i]);
        T_CHECKF(same, "case %s step 1 parameters differ", cname);
    }
}

/* the final parameters against "<case>.p": the worst relative error and how many are not bitwise
 * equal; -1 (nothing set) when the golden tensor is missing */
static inline int o8_param_err(const sd_safetensors *st, const char *cname, const float *p, float *want, int n,
                               double *worst, int *nbits)
{
    char name[64];
    snprintf(name, sizeof name, "%s.p", cname);
    if (o8_read_golden(st, name, SD_ST_F32, want, (size_t)n) != 0) return -1;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)p[i] - want[i]) / fmax(fabs((double)want[i]), 1e-30);
        if (d > *worst) *worst = d;
        *nbits += !o8_bits_eq(p[i], want[i]);
    }
    return 0;
}

/* the 8-bit state `have` byte for byte as "<case>.<what>" */
static inline void o8_check_u8(const sd_safetensors *st, const char *cname, const char *what, const uint8_t *have,
                               int n)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", cname, what);
    uint8_t *q = malloc((size_t)n);
    if (q && o8_read_golden(st, name, SD_ST_U8, q, (size_t)n) == 0) {
        int bad = 0;
        for (int i = 0; i < n; i++) bad += q[i] != have[i];
        T_CHECKF(bad == 0, "case %s: %d %s bytes differ", cname, bad, what);
    }
    free(q);
}

/* the absmax blocks `have` bit for bit as "<case>.<what>" */
static inline void o8_check_absmax(const sd_safetensors *st, const char *cname, const char *what, const float *have,
                                   int nblocks)
{
    char name[64];
    float *am = malloc((size_t)nblocks * sizeof *am + 1);
    snprintf(name, sizeof name, "%s.%s", cname, what);
    if (am && o8_read_golden(st, name, SD_ST_F32, am, (size_t)nblocks) == 0)
        for (int b = 0; b < nblocks; b++) T_CHECKF(o8_bits_eq(am[b], have[b]), "%s %s[%d]", cname, what, b);
    free(am);
}

/* the 32-bit state `have` bit for bit as "<case>.<what>" (want: n floats of scratch) */
static inline void o8_check_f32(const sd_safetensors *st, const char *cname, const char *what, const float *have,
                                float *want, int n)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", cname, what);
    if (o8_read_golden(st, name, SD_ST_F32, want, (size_t)n) == 0) {
        int bad = 0;
        for (int i = 0; i < n; i++) bad += !o8_bits_eq(want[i], have[i]);
        T_CHECKF(bad == 0, "case %s: %d %s values differ", cname, bad, what);
    }
}

#endif
