/* CPU backend: the optimizer ops of ops.h (AdamW update, sum of squares, scale/round with the
 * non-finite check). Elementwise loops are split over the threads (the same bytes for any count);
 * the sum runs serially in element order. Arguments were validated by ops.c. */
#include <math.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/backend.h"
#include "tensor/optim_elem.h"

#define PAR_MIN ((int64_t)1 << 16)

int sd_cpu_adamw(sd_ctx *ctx, sd_tensor *pt, const sd_tensor *gt, sd_tensor *mt, sd_tensor *vt,
                 const sd_adamw_scalars *s, sd_dtype half)
{
    float *p = pt->data, *m = mt->data, *v = vt->data;
    const float *g = gt->data;
    int64_t n = sd_tensor_numel(pt);
    if (half == SD_F32) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++) sd_adamw_elem_f32(&p[i], g[i], &m[i], &v[i], s);
    } else {
        int bf = half == SD_BF16;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++) sd_adamw_elem_half(&p[i], g[i], &m[i], &v[i], s, bf);
    }
    return SD_OK;
}

int sd_cpu_sumsq(sd_ctx *ctx, const sd_tensor *x, double *out)
{
    const float *a = x->data;
    int64_t n = sd_tensor_numel(x);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    *out = s;
    return SD_OK;
}

int sd_cpu_scale_round(sd_ctx *ctx, sd_tensor *xt, float s, sd_dtype round, int *nonfinite)
{
    float *x = xt->data;
    int64_t n = sd_tensor_numel(xt);
    int bad = 0, mul = s != 1.0f, r = round != SD_F32, bf = round == SD_BF16;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) reduction(| : bad) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        bad |= !isfinite(v);
        if (mul) v *= s;
        if (r) v = sd_el_round(v, bf);
        x[i] = v;
    }
    if (nonfinite && bad) *nonfinite = 1;
    return SD_OK;
}
