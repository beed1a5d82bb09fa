/* The optimizers' elementwise updates (AdamW, Lion, SGDNesterov, Adafactor's pieces; train/optim.h), shared by the CPU loops (train/optim.c,
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
 *     d = R(R(R(sqrt(v)) / sqrt(1-β2^t)) + eps);  p = R(fma(-step, m / d, p))
 * sd_lion_elem: lion-pytorch's update (train/optim_kinds.c):
 *     u = fma(1-β1, g, m·β1);  p = fma(-lr, sign(u), p·decay);  m = fma(1-β2, g, m·β2)
 * sd_sgd_elem: torch.optim.SGD(nesterov=True) on one element:
 *     d = fma(wd, p, g) (wd ≠ 0);  b = d (first step) or fma(1-dampening, d, b·μ)
 *     d = fma(μ, b, d);  p = fma(-lr, d, p)
 * sd_adafactor_*: transformers' Adafactor, the elementwise parts between its reductions (the
 *     reductions themselves are double sums in a fixed order, the same on both sides):
 *     sq = g·g + eps1;  row/col/v = fma(1-β2t, mean or sq, old·β2t)
 *     u = (rsqrt(row / mean(row)) · rsqrt(col)) · g (factored) or rsqrt(v) · g, rsqrt(x) = 1 / sqrt(x)
 *     u = (u / den) · α;  m = u = fma(1-β1, u, m·β1) (with β1);  p = fma(-wd·α, p, p) (wd ≠ 0) - u
 * --full_fp16 / --full_bf16 with these three: the step runs in f32 and the parameter (and Lion's and
 * SGD's state) is rounded once after it (train/optim.c round_after_step, sd_op_scale_round). */
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

/* ---- Lion ---- */

typedef struct sd_lion_scalars {
    float decay;            /* 1 - lr·wd */
    float beta1, omb1;      /* β1, 1-β1 */
    float beta2, omb2;      /* β2, 1-β2 */
    float neg_lr;           /* -lr */
} sd_lion_scalars;

SD_EL_FN void sd_lion_elem(float *p, float g, float *m, const sd_lion_scalars *s)
{
    float u = sd_el_fma(s->omb1, g, sd_el_mul(*m, s->beta1));
    float sg = (float)((u > 0) - (u < 0));
    *p = sd_el_fma(s->neg_lr, sg, sd_el_mul(*p, s->decay));
    *m = sd_el_fma(s->omb2, g, sd_el_mul(*m, s->beta2));
}

/* ---- SGD with Nesterov momentum ---- */

typedef struct sd_sgd_scalars {
    float wd;               /* weight decay (coupled: added to the gradient) */
    float momentum, damp1;  /* μ, 1 - dampening */
    float neg_lr;           /* -lr */
    int decay;              /* wd ≠ 0 */
    int first;              /* the first step: the buffer becomes d */
} sd_sgd_scalars;

SD_EL_FN void sd_sgd_elem(float *p, float g, float *b, const sd_sgd_scalars *s)
{
    float d = s->decay ? sd_el_fma(s->wd, *p, g) : g;
    float bj = s->first ? d : sd_el_fma(s->damp1, d, sd_el_mul(*b, s->momentum));
    *b = bj;
    d = sd_el_fma(s->momentum, bj, d);
    *p = sd_el_fma(s->neg_lr, d, *p);
}

/* ---- Adafactor ---- */

typedef struct sd_adafactor_scalars {
    float beta2t, omb2t;    /* β2t = 1 - t^decay_rate, 1 - β2t */
    float eps1;             /* eps[0], added to g² */
    float den;              /* the clipping divisor max(1, RMS(u) / clip_threshold) */
    float alpha;            /* the step size α */
    float beta1, omb1;      /* the first moment (when kept) */
    float wda;              /* -wd·α */
    int decay;              /* wd ≠ 0 */
} sd_adafactor_scalars;

SD_EL_FN float sd_adafactor_sq(float g, float eps1) { return sd_el_add(sd_el_mul(g, g), eps1); }
/* the moving average of a mean (sum / count: the double sum rounded to f32, then divided in f32) */
SD_EL_FN float sd_adafactor_ema(float old, double sum, float count, const sd_adafactor_scalars *s)
{
    return sd_el_fma(s->omb2t, sd_el_div((float)sum, count), sd_el_mul(old, s->beta2t));
}
SD_EL_FN float sd_el_rsqrt(float x) { return sd_el_div(1.0f, sd_el_sqrt(x)); }
/* u of a factored tensor: row and col of its element, rmean the mean of its matrix's rows */
SD_EL_FN float sd_adafactor_u_factored(float g, float row, float rmean, float col)
{
    return sd_el_mul(sd_el_mul(sd_el_rsqrt(sd_el_div(row, rmean)), sd_el_rsqrt(col)), g);
}
/* v and u of an unfactored tensor (ndim < 2) */
SD_EL_FN float sd_adafactor_u_unfactored(float g, float *v, const sd_adafactor_scalars *s)
{
    float vj = sd_el_fma(s->omb2t, sd_adafactor_sq(g, s->eps1), sd_el_mul(*v, s->beta2t));
    *v = vj;
    return sd_el_mul(sd_el_rsqrt(vj), g);
}
/* clip, scale, first moment (m may be NULL), weight decay, step */
SD_EL_FN void sd_adafactor_apply_elem(float *p, float u, float *m, const sd_adafactor_scalars *s)
{
    float uj = sd_el_mul(sd_el_div(u, s->den), s->alpha);
    if (m) uj = *m = sd_el_fma(s->omb1, uj, sd_el_mul(*m, s->beta1));
    float pj = *p;
    if (s->decay) pj = sd_el_fma(s->wda, pj, pj);
    *p = sd_el_sub(pj, uj);
}

#endif
