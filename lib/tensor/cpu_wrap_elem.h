/* Internal: the sd_cpu_* entry points of the elementwise, shape, embedding and loss ops, as a
 * template over `real` (see kern.h): each one takes the sizes from the tensors (validated by
 * ops.c) and calls its kern_elem.h kernel. Included once per program by the float library
 * (lib/tensor/cpu_elem.c) and by the double gradient tests (tests/grad/test_nn_f64.h, with
 * SD_KERN_F64), so both run this very code.
 *
 * The includer first includes tensor/kern_elem.h and tensor/backend.h, defines
 * FP(t) (the `real *` holding tensor t's numbers; NULL for a NULL tensor), and defines
 * sd_cpu_fill and sd_cpu_convert itself (they depend on how the numbers are stored). */
#ifndef SD_TENSOR_CPU_WRAP_ELEM_H
#define SD_TENSOR_CPU_WRAP_ELEM_H

int sd_cpu_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm)
{
    KN(sd_k_permute)(ctx, FP(y), FP(x), x->ndim, x->shape, perm, 0);
    return SD_OK;
}

int sd_cpu_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm)
{
    int inv[SD_MAX_DIMS];
    for (int i = 0; i < dy->ndim; i++) inv[perm[i]] = i;
    KN(sd_k_permute)(ctx, FP(dx), FP(dy), dy->ndim, dy->shape, inv, 1);
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
    KN(sd_k_binary)(ctx, 0, FP(y), FP(a), FP(b), &p);
    return SD_OK;
}

int sd_cpu_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    sd_k_bcast p;
    plan(&p, a, b);
    KN(sd_k_binary)(ctx, 1, FP(y), FP(a), FP(b), &p);
    return SD_OK;
}

int sd_cpu_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy, const sd_tensor *a,
                   const sd_tensor *b)
{
    sd_k_bcast p;
    plan(&p, a, b);
    if (da) KN(sd_k_binary)(ctx, 2, FP(da), FP(dy), FP(b), &p);
    if (db) KN(sd_k_sum_to)(ctx, FP(db), 1, FP(dy), FP(a), &p, sd_tensor_numel(b));
    return SD_OK;
}

int sd_cpu_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta)
{
    KN(sd_k_axpby)(ctx, FP(y), alpha, FP(x), beta, sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x)
{
    sd_k_bcast p;
    plan(&p, x, y);
    KN(sd_k_sum_to)(ctx, FP(y), alpha, FP(x), NULL, &p, sd_tensor_numel(y));
    return SD_OK;
}

int sd_cpu_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x)
{
    KN(sd_k_act)(ctx, act, FP(y), FP(x), sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    KN(sd_k_act_bwd)(ctx, act, FP(dx), FP(dy), FP(x), sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t d = y->shape[y->ndim - 1];
    KN(sd_k_geglu)(ctx, FP(y), FP(x), d ? sd_tensor_numel(y) / d : 0, d);
    return SD_OK;
}

int sd_cpu_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    int64_t d = dy->shape[dy->ndim - 1];
    KN(sd_k_geglu_bwd)(ctx, FP(dx), FP(dy), FP(x), d ? sd_tensor_numel(dy) / d : 0, d);
    return SD_OK;
}

int sd_cpu_rope(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *table)
{
    int64_t d = table->shape[1] / 2;
    KN(sd_k_rope)(ctx, FP(y), FP(x), FP(table), x->shape[0], x->shape[1], x->shape[2], d, x->shape[1] - table->shape[0]);
    return SD_OK;
}

int sd_cpu_rope_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *table)
{
    int64_t d = table->shape[1] / 2;
    KN(sd_k_rope_bwd)(ctx, FP(dx), FP(dy), FP(table), dy->shape[0], dy->shape[1], dy->shape[2], d,
                      dy->shape[1] - table->shape[0]);
    return SD_OK;
}

int sd_cpu_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = x->shape[x->ndim - 1];
    KN(sd_k_softmax)(ctx, FP(y), FP(x), n ? sd_tensor_numel(x) / n : 0, n);
    return SD_OK;
}

int sd_cpu_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y)
{
    int64_t n = y->shape[y->ndim - 1];
    KN(sd_k_softmax_bwd)(ctx, FP(dx), FP(dy), FP(y), n ? sd_tensor_numel(y) / n : 0, n);
    return SD_OK;
}

int sd_cpu_l2_normalize(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, float eps)
{
    int64_t n = x->shape[x->ndim - 1];
    KN(sd_k_l2norm)(ctx, FP(y), FP(x), n ? sd_tensor_numel(x) / n : 0, n, (real)eps);
    return SD_OK;
}

int sd_cpu_l2_normalize_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x, float eps)
{
    int64_t n = x->shape[x->ndim - 1];
    KN(sd_k_l2norm_bwd)(ctx, FP(dx), FP(dy), FP(x), n ? sd_tensor_numel(x) / n : 0, n, (real)eps);
    return SD_OK;
}

int sd_cpu_window(sd_ctx *ctx, sd_tensor *win, sd_tensor *x, int ws, int shift, int to_win, int acc)
{
    KN(sd_k_window)(ctx, FP(win), FP(x), x->shape[0], x->shape[1], x->shape[2], x->shape[3], ws, shift, to_win, acc);
    return SD_OK;
}

int sd_cpu_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    KN(sd_k_upsample)(ctx, FP(y), FP(x), x->shape[0] * x->shape[1], x->shape[2], x->shape[3],
                      (int)(y->shape[2] / x->shape[2]));
    return SD_OK;
}

int sd_cpu_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy)
{
    KN(sd_k_upsample_bwd)(ctx, FP(dx), FP(dy), dx->shape[0] * dx->shape[1], dx->shape[2], dx->shape[3],
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
    const real *ptr[64];
    int64_t len[64], outer, inner;
    for (int i = 0; i < n; i++) { ptr[i] = FP(xs[i]); len[i] = xs[i]->shape[axis]; }
    concat_geom(y, axis, &outer, &inner);
    KN(sd_k_concat)(ctx, FP(y), ptr, len, n, outer, inner, 0);
    return SD_OK;
}

int sd_cpu_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis)
{
    const real *ptr[64];
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
    KN(sd_k_concat)(ctx, FP(dy), ptr, len, n, outer, inner, 1);
    return SD_OK;
}

int sd_cpu_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    KN(sd_k_embedding)(ctx, FP(y), FP(table), ids->data, sd_tensor_numel(ids), table->shape[1]);
    return SD_OK;
}

int sd_cpu_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids)
{
    KN(sd_k_embedding_bwd)(ctx, FP(dtable), FP(dy), ids->data, sd_tensor_numel(ids), dtable->shape[1]);
    return SD_OK;
}

int sd_cpu_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos,
                              float freq_shift, float max_period)
{
    KN(sd_k_timestep_embedding)(FP(y), FP(t), t->shape[0], y->shape[1], flip_sin_to_cos, freq_shift, max_period);
    return SD_OK;
}

int sd_cpu_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred,
                const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    double l = KN(sd_k_loss)(ctx, FP(per_sample), FP(pred), FP(target), FP(weight), FP(c), kind, n, m);
    FP(loss)[0] = (real)l;
    return SD_OK;
}

int sd_cpu_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target,
                    const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    KN(sd_k_loss_bwd)(ctx, FP(dpred), FP(pred), FP(target), FP(weight), FP(c), kind, dloss, n, m);
    return SD_OK;
}

#endif
