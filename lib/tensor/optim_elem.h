/* The optimizer's elementwise AdamW update (train/optim.h), shared by the CPU loops (train/optim.c,
 * tensor/cpu_optim.c) and the CUDA kernel (tensor/cuda/ops_optim.cu) so that both give the same
 * bits: every step is one correctly rounded IEEE float operation. On the device the products,
 * sums and quotients are __fmul_rn / __fadd_rn / __fdiv_rn / __fsqrt_rn (never contracted into
 * fused multiply-adds by nvcc) and the fused ones __fmaf_rn, where the CPU code (compiled as ISO C,
 * no contraction) calls fmaf.
 *
 * sd_adamw_elem_f32: torch 1.13's single-tensor AdamW in float32 (its CPU kernels' order):
 *     p = p·decay;  m = fma(1-β1, g, m·β1);  v = fma((1-β2)·g, g, v·β2)
 *     p = p + (-step)·m / (sqrt(v) / sqrt(1-β2^t) + eps)
 * sd_adamw_elem_half: the reference's AdamW on f16/bf16 tensors (--full_fp16 / --full_bf16), torch
 *     2.x's foreach path on CUDA: each operation computed in float and rounded to the dtype (R):
 *     p = R(p·decay) (when decay ≠ 1);  m = R(lerp(m, g, 1-β1));  v = R(fma(1-β2, g·g, R(v·β2)))
 *     d = R(R(R(sqrt(v)) / sqrt(1-β2^t)) + eps);  p = R(fma(-step, m / d, p)) */
#ifndef SD_TENSOR_OPTIM_ELEM_H
#define SD_TENSOR_OPTIM_ELEM_H

#include <math.h>

#include "base/half.h"

/* The per-step scalars of AdamW, computed in double and rounded once (train/optim.c
 * sd_adamw_scalars_make), as torch uses them. */
typedef struct sd_adamw_scalars {
    float decay;            /* 1 - lr·wd */
    float beta1, omb1;      /* β1, 1-β1 */
    float beta2, omb2;      /* β2, 1-β2 */
    float bc2_sqrt;         /* sqrt(1 - β2^t) */
    float eps;
    float neg_step;         /* -lr / (1 - β1^t) */
} sd_adamw_scalars;

#ifdef __CUDACC__
#define SD_EL_FN static inline __host__ __device__
#else
#define SD_EL_FN static inline
#endif

#ifdef __CUDA_ARCH__
SD_EL_FN float sd_el_mul(float a, float b) { return __fmul_rn(a, b); }
SD_EL_FN float sd_el_add(float a, float b) { return __fadd_rn(a, b); }
SD_EL_FN float sd_el_sub(float a, float b) { return __fsub_rn(a, b); }
SD_EL_FN float sd_el_div(float a, float b) { return __fdiv_rn(a, b); }
SD_EL_FN float sd_el_sqrt(float a) { return __fsqrt_rn(a); }
SD_EL_FN float sd_el_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
#else
SD_EL_FN float sd_el_mul(float a, float b) { return a * b; }
SD_EL_FN float sd_el_add(float a, float b) { return a + b; }
SD_EL_FN float sd_el_sub(float a, float b) { return a - b; }
SD_EL_FN float sd_el_div(float a, float b) { return a / b; }
SD_EL_FN float sd_el_sqrt(float a) { return sqrtf(a); }
SD_EL_FN float sd_el_fma(float a, float b, float c) { return fmaf(a, b, c); }
#endif

SD_EL_FN void sd_adamw_elem_f32(float *p, float g, float *m, float *v, const sd_adamw_scalars *s)
{
    float pi = sd_el_mul(*p, s->decay);
    float mi = sd_el_fma(s->omb1, g, sd_el_mul(*m, s->beta1));
    float vi = sd_el_fma(sd_el_mul(s->omb2, g), g, sd_el_mul(*v, s->beta2));
    float denom = sd_el_add(sd_el_div(sd_el_sqrt(vi), s->bc2_sqrt), s->eps);
    *p = sd_el_add(pi, sd_el_div(sd_el_mul(s->neg_step, mi), denom));
    *m = mi;
    *v = vi;
}

SD_EL_FN float sd_el_round(float x, int bf16)
{
    return bf16 ? sd_round_bf16(x) : sd_round_f16(x);
}

SD_EL_FN void sd_adamw_elem_half(float *p, float g, float *m, float *v, const sd_adamw_scalars *s, int bf16)
{
    const float w = s->omb1;
    float mi = *m;
    float pi = s->decay != 1.0f ? sd_el_round(sd_el_mul(*p, s->decay), bf16) : *p;   /* _foreach_mul_(p, 1-lr·wd) */
    float d = sd_el_sub(g, mi);                                                       /* lerp_(m, g, w) */
    mi = w < 0.5f ? sd_el_round(sd_el_fma(w, d, mi), bf16) : sd_el_round(sd_el_fma(-d, sd_el_sub(1.0f, w), g), bf16);
    float vi = sd_el_round(sd_el_fma(s->omb2, sd_el_mul(g, g), sd_el_round(sd_el_mul(*v, s->beta2), bf16)), bf16);
    float den = sd_el_round(sd_el_sqrt(vi), bf16);                                    /* sqrt, div_, add_(eps) */
    den = sd_el_round(sd_el_add(sd_el_round(sd_el_div(den, s->bc2_sqrt), bf16), s->eps), bf16);
    *p = sd_el_round(sd_el_fma(s->neg_step, sd_el_div(mi, den), pi), bf16);          /* addcdiv_ */
    *m = mi;
    *v = vi;
}

#endif
