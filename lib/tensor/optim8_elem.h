/* bitsandbytes' 8-bit blockwise and 32-bit optimizer steps (train/optim8bit.h for the semantics
 * and the sources), shared by the host loops (train/optim8bit.c), the CPU ops (tensor/cpu_optim.c)
 * and the CUDA kernels (tensor/cuda/ops_optim.cu) so that all give the same bits: every operation
 * is one IEEE-rounded float operation (optim_elem.h's sd_el_*: never contracted into an FMA by nvcc,
 * as bnb's own kernels would be), the block's absmax a max (order-free), the codes quantize_2D's
 * binary search over the map.
 *   2-state (AdamW8bit, PagedAdamW8bit, PagedAdamW, PagedAdamW32bit): sd_bnb2_elem32 (f32 state),
 *       sd_bnb2_block8 (one 256-element block of 8-bit codes)
 *   1-state (Lion8bit, PagedLion8bit, SGD8bit): sd_bnb1_elem32, sd_bnb1_block8 */
#ifndef SD_TENSOR_OPTIM8_ELEM_H
#define SD_TENSOR_OPTIM8_ELEM_H

#include <float.h>
#include <stdint.h>

#include "tensor/optim_elem.h"

#define SD_BNB_BLOCK 256   /* = train/optim8bit.h SD_BNB_BLOCKSIZE */

/* The per-step scalars of the 2-state kernels, rounded to float as bnb does (optim8bit.c). */
typedef struct sd_bnb2_scalars {
    float beta1, beta2, omb1, omb2, eps, lr, wd, decay, c2, step_size;
} sd_bnb2_scalars;

/* The per-step scalars of the 1-state kernels. */
typedef struct sd_bnb1_scalars {
    float beta1, beta2, omb1, omb2, lr, wd, decay;
    int first;   /* step == 1 */
    int half;    /* the kernel's T: 0 float, 1 half, 2 bfloat16 */
    int lion;    /* 1: Lion, 0: momentum (SGD8bit) */
} sd_bnb1_scalars;

/* The quantisation maps: q1 signed ("dynamic", state1), q2 unsigned ("udynamic", state2). */
typedef struct sd_bnb_qmaps {
    float q1[256], q2[256];
} sd_bnb_qmaps;

/* kernels.cu quantize_2D<SIGNED>: the first probe is code[127], then code[63|191], then code[pivot]. */
SD_EL_FN uint8_t sd_bnb_quantize_el(const float *code, int is_signed, float x)
{
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = is_signed ? -1.0f : 0.0f;
    float upper = 1.0f;
    float val = code[127];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (x > val) {
        float midpoint = sd_el_mul(sd_el_add(upper, val), 0.5f);
        return (uint8_t)(x > midpoint ? upper_pivot : pivot);
    } else {
        float midpoint = sd_el_mul(sd_el_add(lower, val), 0.5f);
        return (uint8_t)(x < midpoint ? lower_pivot : pivot);
    }
}

/* state1's code for s / absmax, keeping the value's sign (the kernels' sign fix) */
SD_EL_FN uint8_t sd_bnb_quantize_signed_fix(const float *q1, float s, float nmax)
{
    uint8_t k = sd_bnb_quantize_el(q1, 1, sd_el_div(s, nmax));
    if (signbit(q1[k]) != signbit(s)) k = (uint8_t)(s > 0.0f ? k + 1 : k - 1);
    return k;
}

SD_EL_FN int sd_bnb_finite(float x) { return !isnan(x) && !isinf(x); }
SD_EL_FN float sd_bnb_sgn(float x) { return (float)((0.0f < x) - (x < 0.0f)); }

/* kOptimizer32bit2State<float, ADAM>, one element. */
SD_EL_FN void sd_bnb2_elem32(const sd_bnb2_scalars *s, float *p, float g, float *m, float *v)
{
    const float eps_c2 = sd_el_mul(s->eps, s->c2);
    float mi = sd_el_add(sd_el_mul(*m, s->beta1), sd_el_mul(s->omb1, g));
    float vi = sd_el_add(sd_el_mul(*v, s->beta2), sd_el_mul(s->omb2, sd_el_mul(g, g)));
    float den = sd_el_add(sd_el_sqrt(vi), eps_c2);
    float upd = sd_el_mul(s->step_size, sd_el_div(mi, den));   /* update_scale (1.0f) · step_size first: exact */
    float pi = sd_el_add(*p, upd);
    if (s->wd > 0.0f) pi = sd_el_mul(pi, s->decay);
    *m = mi;
    *v = vi;
    *p = pi;
}

/* kOptimizerStatic8bit2StateBlockwise<float, ADAM, 256, 1>, block blk of `valid` elements (p, g, the
 * codes: the block's first element). */
SD_EL_FN void sd_bnb2_block8(const sd_bnb2_scalars *s, const sd_bnb_qmaps *q, float *p, const float *g,
                             uint8_t *c1s, uint8_t *c2s, float *absmax1, float *absmax2, int64_t blk, int valid)
{
    float m[SD_BNB_BLOCK], v[SD_BNB_BLOCK];
    const float am1 = absmax1[blk], am2 = absmax2[blk];
    float nmax1 = -FLT_MAX, nmax2 = -FLT_MAX;
    for (int j = 0; j < SD_BNB_BLOCK; j++) {
        /* past the end: cub's defaults g = 0, state1 code 128, state2 code 0 */
        float gj = j < valid ? g[j] : 0.0f;
        uint8_t k1 = j < valid ? c1s[j] : 128, k2 = j < valid ? c2s[j] : 0;
        float mj = 0.0f, vj = 0.0f;
        if (sd_bnb_finite(gj)) {
            vj = sd_el_mul(q->q2[k2], am2);
            vj = sd_el_add(sd_el_mul(vj, s->beta2), sd_el_mul(sd_el_mul(s->omb2, gj), gj));
            mj = sd_el_mul(q->q1[k1], am1);
            mj = sd_el_add(sd_el_mul(mj, s->beta1), sd_el_mul(s->omb1, gj));
        }
        m[j] = mj;
        v[j] = vj;
        nmax1 = fmaxf(nmax1, fabsf(mj));
        nmax2 = fmaxf(nmax2, fabsf(vj));
    }
    absmax1[blk] = nmax1;
    absmax2[blk] = nmax2;
    const float c2_eps = sd_el_mul(s->c2, s->eps);
    for (int j = 0; j < valid; j++) {
        if (sd_bnb_finite(g[j])) {
            float den = sd_el_add(sd_el_sqrt(v[j]), c2_eps);
            float pj = sd_el_add(p[j], sd_el_mul(s->step_size, sd_el_div(m[j], den)));
            if (s->wd > 0.0f) pj = sd_el_mul(pj, s->decay);
            p[j] = pj;
        }
    }
    for (int j = 0; j < valid; j++) {
        c1s[j] = sd_bnb_quantize_signed_fix(q->q1, m[j], nmax1);
        c2s[j] = sd_bnb_quantize_el(q->q2, 0, sd_el_div(v[j], nmax2));
    }
}

/* A store into a T variable of the 1-state kernels. */
SD_EL_FN float sd_bnb1_tround(const sd_bnb1_scalars *s, float x)
{
    return s->half == 0 ? x : sd_el_round(x, s->half == 2);
}

/* kOptimizer32bit1State<float, LION|MOMENTUM>, one element (gnorm_scale and update_scale 1). */
SD_EL_FN void sd_bnb1_elem32(const sd_bnb1_scalars *s, float *p, float g, float *st)
{
    float gi = g, pi = *p, si = *st;
    if (s->wd > 0.0f) gi = sd_bnb1_tround(s, sd_el_add(gi, sd_el_mul(pi, s->wd)));   /* g_vals[j] is a T */
    if (s->lion) {
        float u = sd_el_mul(s->lr, sd_bnb_sgn(sd_el_add(sd_el_mul(si, s->beta1), sd_el_mul(s->omb1, gi))));
        pi = sd_el_sub(pi, u);
        si = sd_el_add(sd_el_mul(si, s->beta2), sd_el_mul(s->omb2, gi));
    } else {
        si = s->first ? gi : sd_el_add(sd_el_mul(si, s->beta1), gi);
        pi = sd_el_add(pi, sd_el_mul(-s->lr, si));
    }
    *p = sd_bnb1_tround(s, pi);
    *st = si;
}

/* kOptimizerStatic8bit1StateBlockwise<float, LION|MOMENTUM, 256, 1>, one block. */
SD_EL_FN void sd_bnb1_block8(const sd_bnb1_scalars *s, const sd_bnb_qmaps *q, float *p, const float *g,
                             uint8_t *c1s, float *absmax1, int64_t blk, int valid)
{
    float sv[SD_BNB_BLOCK], pv[SD_BNB_BLOCK], uv[SD_BNB_BLOCK];
    const float am1 = absmax1[blk];
    const int decay = s->wd > 0.0f;
    float nmax1 = -FLT_MAX;
    for (int j = 0; j < SD_BNB_BLOCK; j++) {
        /* past the end: cub's defaults g = 0, p = 0, code 128 */
        float gj = j < valid ? g[j] : 0.0f, pj = j < valid ? p[j] : 0.0f;
        uint8_t k1 = j < valid ? c1s[j] : 128;
        if (decay) {
            if (s->lion) pj = sd_bnb1_tround(s, sd_el_mul(pj, s->decay));   /* p_vals[j] is a T */
            else gj = sd_el_add(gj, sd_el_mul(pj, s->wd));
        }
        float sj = sd_el_mul(q->q1[k1], am1);
        if (s->lion) {
            uv[j] = sd_bnb1_tround(s, sd_el_mul(s->lr, sd_bnb_sgn(sd_el_add(sd_el_mul(sj, s->beta1),
                                                                            sd_el_mul(s->omb1, gj)))));
            sj = sd_el_add(sd_el_mul(sj, s->beta2), sd_el_mul(s->omb2, gj));
        } else {
            uv[j] = 0.0f;
            sj = s->first ? gj : sd_el_add(sd_el_mul(sj, s->beta1), gj);
        }
        sv[j] = sj;
        pv[j] = pj;
        nmax1 = fmaxf(nmax1, fabsf(sj));
    }
    absmax1[blk] = nmax1;
    for (int j = 0; j < valid; j++)
        p[j] = sd_bnb1_tround(s, sd_el_sub(pv[j], s->lion ? uv[j] : sd_el_mul(s->lr, sv[j])));
    for (int j = 0; j < valid; j++) c1s[j] = sd_bnb_quantize_signed_fix(q->q1, sv[j], nmax1);
}

#endif
