/* CPU backend: elementwise, shape, embedding and loss ops (float instantiation of kern_elem.h).
 * Arguments were validated by ops.c. */
#include "tensor/kern_elem.h"

#include "base/half.h"
#include "tensor/backend.h"

#define FP(t) ((t) ? (float *)(t)->data : NULL)

int sd_cpu_fill(sd_ctx *ctx, sd_tensor *y, float value)
{
    int64_t n = sd_tensor_numel(y);
    if (y->dtype == SD_F32) {
        float *p = y->data;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n > SD_K_CHUNK)
        for (int64_t i = 0; i < n; i++) p[i] = value;
    } else {
        uint16_t h = y->dtype == SD_F16 ? sd_f32_to_f16(value) : sd_f32_to_bf16(value);
        uint16_t *p = y->data;
        for (int64_t i = 0; i < n; i++) p[i] = h;
    }
    return SD_OK;
}

int sd_cpu_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = sd_tensor_numel(x), nc = (n + SD_K_CHUNK - 1) / SD_K_CHUNK;
    if (x->dtype == y->dtype) {
        if (y->data != x->data) memmove(y->data, x->data, sd_tensor_nbytes(x));
        return SD_OK;
    }
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (nc > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t s = c * SD_K_CHUNK, m = n - s < SD_K_CHUNK ? n - s : SD_K_CHUNK;
        float tmp[SD_K_CHUNK];
        const float *src;
        if (x->dtype == SD_F32) src = (const float *)x->data + s;
        else if (x->dtype == SD_F16) { sd_f16_to_f32_n((const uint16_t *)x->data + s, tmp, (size_t)m); src = tmp; }
        else { sd_bf16_to_f32_n((const uint16_t *)x->data + s, tmp, (size_t)m); src = tmp; }
        if (y->dtype == SD_F32) memcpy((float *)y->data + s, src, (size_t)m * 4);
        else if (y->dtype == SD_F16) sd_f32_to_f16_n(src, (uint16_t *)y->data + s, (size_t)m);
        else sd_f32_to_bf16_n(src, (uint16_t *)y->data + s, (size_t)m);
    }
    return SD_OK;
}

int sd_cpu_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm)
{
    sd_k_permute_f32(ctx, FP(y), FP(x), x->ndim, x->shape, perm, 0);
    return SD_OK;
}

int sd_cpu_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm)
{
    int inv[SD_MAX_DIMS];
    for (int i = 0; i < dy->ndim; i++) inv[perm[i]] = i;
    sd_k_permute_f32(ctx, FP(dx), FP(dy), dy->ndim, dy->shape, inv, 1);
    return SD_OK;
}

static void plan(sd_k_bcast *p, const sd_tensor *a, const sd_tensor *b)
{
    sd_k_bcast_plan(p, a->ndim, a->shape, b->ndim, b->shape);
}

int sd_cpu_add(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    sd_k_bcast p;
    plan(&p, a, b);
    sd_k_binary_f32(ctx, 0, FP(y), FP(a), FP(b), &p);
    return SD_OK;
}

int sd_cpu_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    sd_k_bcast p;
    plan(&p, a, b);
    sd_k_binary_f32(ctx, 1, FP(y), FP(a), FP(b), &p);
    return SD_OK;
}

int sd_cpu_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy, const sd_tensor *a,
                   const sd_tensor *b)
{
    sd_k_bcast p;
    plan(&p, a, b);
    if (da) sd_k_binary_f32(ctx, 2, FP(da), FP(dy), FP(b), &p);
    if (db) sd_k_sum_to_f32(ctx, FP(db), 1, FP(dy), FP(a), &p, sd_tensor_numel(b));
    return SD_OK;
}

int sd_cpu_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta)
{
    sd_k_axpby_f32(ctx, FP(y), alpha, FP(x), beta, sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x)
{
    sd_k_bcast p;
    plan(&p, x, y);
    sd_k_sum_to_f32(ctx, FP(y), alpha, FP(x), NULL, &p, sd_tensor_numel(y));
    return SD_OK;
}

int sd_cpu_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x)
{
    sd_k_act_f32(ctx, act, FP(y), FP(x), sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    sd_k_act_bwd_f32(ctx, act, FP(dx), FP(dy), FP(x), sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t d = y->shape[y->ndim - 1];
    sd_k_geglu_f32(ctx, FP(y), FP(x), d ? sd_tensor_numel(y) / d : 0, d);
    return SD_OK;
}

int sd_cpu_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    int64_t d = dy->shape[dy->ndim - 1];
    sd_k_geglu_bwd_f32(ctx, FP(dx), FP(dy), FP(x), d ? sd_tensor_numel(dy) / d : 0, d);
    return SD_OK;
}

int sd_cpu_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = x->shape[x->ndim - 1];
    sd_k_softmax_f32(ctx, FP(y), FP(x), n ? sd_tensor_numel(x) / n : 0, n);
    return SD_OK;
}

int sd_cpu_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y)
{
    int64_t n = y->shape[y->ndim - 1];
    sd_k_softmax_bwd_f32(ctx, FP(dx), FP(dy), FP(y), n ? sd_tensor_numel(y) / n : 0, n);
    return SD_OK;
}

int sd_cpu_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    sd_k_upsample_f32(ctx, FP(y), FP(x), x->shape[0] * x->shape[1], x->shape[2], x->shape[3],
                      (int)(y->shape[2] / x->shape[2]));
    return SD_OK;
}

int sd_cpu_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy)
{
    sd_k_upsample_bwd_f32(ctx, FP(dx), FP(dy), dx->shape[0] * dx->shape[1], dx->shape[2], dx->shape[3],
                          (int)(dy->shape[2] / dx->shape[2]));
    return SD_OK;
}

static void concat_geom(const sd_tensor *y, int axis, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++) *outer *= y->shape[i];
    for (int i = axis + 1; i < y->ndim; i++) *inner *= y->shape[i];
}

int sd_cpu_concat(sd_ctx *ctx, sd_tensor *y, const sd_tensor *const *xs, int n, int axis)
{
    const float *ptr[64];
    int64_t len[64], outer, inner;
    for (int i = 0; i < n; i++) { ptr[i] = FP(xs[i]); len[i] = xs[i]->shape[axis]; }
    concat_geom(y, axis, &outer, &inner);
    sd_k_concat_f32(ctx, FP(y), ptr, len, n, outer, inner, 0);
    return SD_OK;
}

int sd_cpu_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis)
{
    const float *ptr[64];
    int64_t len[64], outer, inner, rest = dy->shape[axis];
    int nn = 0;
    for (int i = 0; i < n; i++) {
        ptr[i] = FP(dxs[i]);
        if (dxs[i]) { len[i] = dxs[i]->shape[axis]; rest -= len[i]; }
        else { len[i] = -1; nn++; }
    }
    /* a NULL gradient's length: the remainder when it is the only one (checked in ops.c) */
    for (int i = 0; i < n; i++) if (len[i] < 0) len[i] = nn == 1 ? rest : 0;
    concat_geom(dy, axis, &outer, &inner);
    sd_k_concat_f32(ctx, FP(dy), ptr, len, n, outer, inner, 1);
    return SD_OK;
}

int sd_cpu_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    sd_k_embedding_f32(ctx, FP(y), FP(table), ids->data, sd_tensor_numel(ids), table->shape[1]);
    return SD_OK;
}

int sd_cpu_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids)
{
    sd_k_embedding_bwd_f32(ctx, FP(dtable), FP(dy), ids->data, sd_tensor_numel(ids), dtable->shape[1]);
    return SD_OK;
}

int sd_cpu_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos,
                              float freq_shift, float max_period)
{
    sd_k_timestep_embedding_f32(FP(y), FP(t), t->shape[0], y->shape[1], flip_sin_to_cos, freq_shift, max_period);
    return SD_OK;
}

int sd_cpu_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred,
                const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    double l = sd_k_loss_f32(ctx, FP(per_sample), FP(pred), FP(target), FP(weight), FP(c), kind, n, m);
    ((float *)loss->data)[0] = (float)l;
    return SD_OK;
}

int sd_cpu_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target,
                    const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    sd_k_loss_bwd_f32(ctx, FP(dpred), FP(pred), FP(target), FP(weight), FP(c), kind, dloss, n, m);
    return SD_OK;
}
