/* CPU backend: the optimizer ops of ops.h (AdamW, Lion, SGDNesterov and Adafactor updates, sum of
 * squares, scale/round with the non-finite check). Elementwise loops are split over the threads
 * (the same bytes for any count); Adafactor's row and column means each sum serially in index order
 * (rows and columns split over the threads); the sum of squares runs serially in element order.
 * Arguments were validated by ops.c. */
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

int sd_cpu_lion(sd_ctx *ctx, sd_tensor *pt, const sd_tensor *gt, sd_tensor *mt, const sd_lion_scalars *s)
{
    float *p = pt->data, *m = mt->data;
    const float *g = gt->data;
    int64_t n = sd_tensor_numel(pt);
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) sd_lion_elem(&p[i], g[i], &m[i], s);
    return SD_OK;
}

int sd_cpu_sgd(sd_ctx *ctx, sd_tensor *pt, const sd_tensor *gt, sd_tensor *bt, const sd_sgd_scalars *s)
{
    float *p = pt->data, *b = bt->data;
    const float *g = gt->data;
    int64_t n = sd_tensor_numel(pt);
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) sd_sgd_elem(&p[i], g[i], &b[i], s);
    return SD_OK;
}

int sd_cpu_adafactor_sq(sd_ctx *ctx, const sd_tensor *gt, sd_tensor *rowt, sd_tensor *colt, sd_tensor *rmt,
                        sd_tensor *vt, sd_tensor *ut, const sd_adafactor_scalars *s)
{
    const float *g = gt->data;
    float *u = ut->data;
    const int64_t n = sd_tensor_numel(gt);
    if (vt) {
        float *v = vt->data;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++) u[i] = sd_adafactor_u_unfactored(g[i], &v[i], s);
        return SD_OK;
    }
    float *row = rowt->data, *col = colt->data, *rm = rmt->data;
    const int64_t C = gt->shape[gt->ndim - 1], R = gt->shape[gt->ndim - 2], B = R && C ? n / (R * C) : 0;
    const float e1 = s->eps1, fr = (float)R, fc = (float)C;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t br = 0; br < B * R; br++) {   /* exp_avg_sq_row: mean over the last dim */
        const float *x = g + br * C;
        double a = 0;
        for (int64_t k = 0; k < C; k++) a += (double)sd_adafactor_sq(x[k], e1);
        row[br] = sd_adafactor_ema(row[br], a, fc, s);
    }
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t bk = 0; bk < B * C; bk++) {   /* exp_avg_sq_col: mean over the one before */
        const float *x = g + (bk / C) * R * C + bk % C;
        double a = 0;
        for (int64_t r = 0; r < R; r++) a += (double)sd_adafactor_sq(x[r * C], e1);
        col[bk] = sd_adafactor_ema(col[bk], a, fr, s);
    }
    for (int64_t b = 0; b < B; b++) {
        double a = 0;
        for (int64_t r = 0; r < R; r++) a += row[b * R + r];
        rm[b] = sd_el_div((float)a, fr);
    }
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const int64_t b = i / (R * C), r = i / C % R, k = i % C;
        u[i] = sd_adafactor_u_factored(g[i], row[b * R + r], rm[b], col[b * C + k]);
    }
    return SD_OK;
}

int sd_cpu_adafactor_apply(sd_ctx *ctx, sd_tensor *pt, const sd_tensor *ut, sd_tensor *mt, const sd_adafactor_scalars *s)
{
    float *p = pt->data, *m = mt ? (float *)mt->data : NULL;
    const float *u = ut->data;
    int64_t n = sd_tensor_numel(pt);
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) sd_adafactor_apply_elem(&p[i], u[i], m ? &m[i] : NULL, s);
    return SD_OK;
}

int sd_cpu_bnb2_step(sd_ctx *ctx, sd_tensor *pt, const sd_tensor *gt, const sd_bnb_state_ptrs *st,
                     const sd_bnb2_scalars *s, const sd_bnb_qmaps *q)
{
    float *p = pt->data;
    const float *g = gt->data;
    const int64_t n = st->numel;
    if (!st->mode8) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++) sd_bnb2_elem32(s, &p[i], g[i], &st->m32[i], &st->v32[i]);
        return SD_OK;
    }
    const int64_t nb = (n + SD_BNB_BLOCK - 1) / SD_BNB_BLOCK;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i = b * SD_BNB_BLOCK;
        int valid = (int)(n - i >= SD_BNB_BLOCK ? SD_BNB_BLOCK : n - i);
        sd_bnb2_block8(s, q, p + i, g + i, st->m8 + i, st->v8 + i, st->absmax1, st->absmax2, b, valid);
    }
    return SD_OK;
}

int sd_cpu_bnb1_step(sd_ctx *ctx, sd_tensor *pt, const sd_tensor *gt, const sd_bnb_state_ptrs *st,
                     const sd_bnb1_scalars *s, const sd_bnb_qmaps *q)
{
    float *p = pt->data;
    const float *g = gt->data;
    const int64_t n = st->numel;
    if (!st->mode8) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++) sd_bnb1_elem32(s, &p[i], g[i], &st->m32[i]);
        return SD_OK;
    }
    const int64_t nb = (n + SD_BNB_BLOCK - 1) / SD_BNB_BLOCK;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i = b * SD_BNB_BLOCK;
        int valid = (int)(n - i >= SD_BNB_BLOCK ? SD_BNB_BLOCK : n - i);
        sd_bnb1_block8(s, q, p + i, g + i, st->m8 + i, st->absmax1, b, valid);
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
