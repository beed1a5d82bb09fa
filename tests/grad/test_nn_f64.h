/* Test-only double-precision backend for the op API (used by tests/grad/test_nn_layers.c).
 *
 * The program defines every sd_cpu_* entry point itself, so the linker takes these instead of
 * lib/tensor/cpu_elem.o and cpu_nn.o: ops.c validates as usual and then lands here, where each
 * f32 tensor's numbers live in a double "shadow" of its memory region (element i of a float at
 * address p is the double at shadow(p)). The bodies are lib/tensor/cpu_elem.c and cpu_nn.c with
 * the kern_*.h templates instantiated in double (SD_KERN_F64), so every layer in lib/nn runs
 * unchanged in double precision. Regions (parameter blocks, arenas, the ctx scratch) are
 * registered with shadow_add(); half-precision tensors and host uploads are not shadowed. */
#ifndef TEST_NN_F64_H
#define TEST_NN_F64_H

#define SD_KERN_F64
#include "tensor/kern_attn.h"
#include "tensor/kern_conv.h"
#include "tensor/kern_elem.h"
#include "tensor/kern_linear.h"
#include "tensor/kern_norm.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "tensor/backend.h"

typedef struct { const unsigned char *base; size_t cap; double *shadow; } shadow_region;
static shadow_region g_shadow[32];
static int g_nshadow;

static void shadow_add(const void *base, size_t cap)
{
    if (!base || !cap) return;
    if (g_nshadow == 32) { fprintf(stderr, "shadow_add: too many regions\n"); abort(); }
    void *s = mmap(NULL, cap * 2 + 64, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) { fprintf(stderr, "shadow_add: mmap failed\n"); abort(); }
    g_shadow[g_nshadow].base = base;
    g_shadow[g_nshadow].cap = cap;
    g_shadow[g_nshadow].shadow = s;
    g_nshadow++;
}

static void shadow_remove(const void *base)
{
    for (int i = 0; i < g_nshadow; i++)
        if (g_shadow[i].base == base) {
            munmap(g_shadow[i].shadow, g_shadow[i].cap * 2 + 64);
            memmove(&g_shadow[i], &g_shadow[i + 1], (size_t)(g_nshadow - i - 1) * sizeof *g_shadow);
            g_nshadow--;
            return;
        }
}

static void shadow_clear(void)
{
    for (int i = 0; i < g_nshadow; i++) munmap(g_shadow[i].shadow, g_shadow[i].cap * 2 + 64);
    g_nshadow = 0;
}

static double *shadow_of(const void *p)
{
    const unsigned char *c = p;
    for (int i = g_nshadow - 1; i >= 0; i--)
        if (c >= g_shadow[i].base && c < g_shadow[i].base + g_shadow[i].cap)
            return g_shadow[i].shadow + (c - g_shadow[i].base) / 4;
    fprintf(stderr, "shadow_of: %p is in no registered region\n", p);
    abort();
}

#define FP(t) ((t) ? shadow_of((t)->data) : NULL)

int sd_cpu_fill(sd_ctx *ctx, sd_tensor *y, float value)
{
    if (y->dtype != SD_F32) return sd_err(SD_EUNSUPPORTED, "f64 test backend: fill of a half tensor");
    double *p = FP(y);
    int64_t n = sd_tensor_numel(y);
    for (int64_t i = 0; i < n; i++) p[i] = value;
    return SD_OK;
}

int sd_cpu_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    if (x->dtype != SD_F32 || y->dtype != SD_F32) return sd_err(SD_EUNSUPPORTED, "f64 test backend: half conversion");
    memmove(shadow_of(y->data), shadow_of(x->data), (size_t)sd_tensor_numel(x) * sizeof(double));
    return SD_OK;
}

int sd_cpu_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm)
{
    sd_k_permute_f64(ctx, FP(y), FP(x), x->ndim, x->shape, perm, 0);
    return SD_OK;
}

int sd_cpu_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm)
{
    int inv[SD_MAX_DIMS];
    for (int i = 0; i < dy->ndim; i++) inv[perm[i]] = i;
    sd_k_permute_f64(ctx, FP(dx), FP(dy), dy->ndim, dy->shape, inv, 1);
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
    sd_k_binary_f64(ctx, 0, FP(y), FP(a), FP(b), &p);
    return SD_OK;
}

int sd_cpu_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    sd_k_bcast p;
    plan(&p, a, b);
    sd_k_binary_f64(ctx, 1, FP(y), FP(a), FP(b), &p);
    return SD_OK;
}

int sd_cpu_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy, const sd_tensor *a,
                   const sd_tensor *b)
{
    sd_k_bcast p;
    plan(&p, a, b);
    if (da) sd_k_binary_f64(ctx, 2, FP(da), FP(dy), FP(b), &p);
    if (db) sd_k_sum_to_f64(ctx, FP(db), 1, FP(dy), FP(a), &p, sd_tensor_numel(b));
    return SD_OK;
}

int sd_cpu_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta)
{
    sd_k_axpby_f64(ctx, FP(y), alpha, FP(x), beta, sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x)
{
    sd_k_bcast p;
    plan(&p, x, y);
    sd_k_sum_to_f64(ctx, FP(y), alpha, FP(x), NULL, &p, sd_tensor_numel(y));
    return SD_OK;
}

int sd_cpu_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x)
{
    sd_k_act_f64(ctx, act, FP(y), FP(x), sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    sd_k_act_bwd_f64(ctx, act, FP(dx), FP(dy), FP(x), sd_tensor_numel(x));
    return SD_OK;
}

int sd_cpu_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t d = y->shape[y->ndim - 1];
    sd_k_geglu_f64(ctx, FP(y), FP(x), d ? sd_tensor_numel(y) / d : 0, d);
    return SD_OK;
}

int sd_cpu_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    int64_t d = dy->shape[dy->ndim - 1];
    sd_k_geglu_bwd_f64(ctx, FP(dx), FP(dy), FP(x), d ? sd_tensor_numel(dy) / d : 0, d);
    return SD_OK;
}

int sd_cpu_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = x->shape[x->ndim - 1];
    sd_k_softmax_f64(ctx, FP(y), FP(x), n ? sd_tensor_numel(x) / n : 0, n);
    return SD_OK;
}

int sd_cpu_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y)
{
    int64_t n = y->shape[y->ndim - 1];
    sd_k_softmax_bwd_f64(ctx, FP(dx), FP(dy), FP(y), n ? sd_tensor_numel(y) / n : 0, n);
    return SD_OK;
}

int sd_cpu_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    sd_k_upsample_f64(ctx, FP(y), FP(x), x->shape[0] * x->shape[1], x->shape[2], x->shape[3],
                      (int)(y->shape[2] / x->shape[2]));
    return SD_OK;
}

int sd_cpu_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy)
{
    sd_k_upsample_bwd_f64(ctx, FP(dx), FP(dy), dx->shape[0] * dx->shape[1], dx->shape[2], dx->shape[3],
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
    const double *ptr[64];
    int64_t len[64], outer, inner;
    for (int i = 0; i < n; i++) { ptr[i] = FP(xs[i]); len[i] = xs[i]->shape[axis]; }
    concat_geom(y, axis, &outer, &inner);
    sd_k_concat_f64(ctx, FP(y), ptr, len, n, outer, inner, 0);
    return SD_OK;
}

int sd_cpu_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis)
{
    const double *ptr[64];
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
    sd_k_concat_f64(ctx, FP(dy), ptr, len, n, outer, inner, 1);
    return SD_OK;
}

int sd_cpu_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    sd_k_embedding_f64(ctx, FP(y), FP(table), ids->data, sd_tensor_numel(ids), table->shape[1]);
    return SD_OK;
}

int sd_cpu_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids)
{
    sd_k_embedding_bwd_f64(ctx, FP(dtable), FP(dy), ids->data, sd_tensor_numel(ids), dtable->shape[1]);
    return SD_OK;
}

int sd_cpu_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos,
                              float freq_shift, float max_period)
{
    sd_k_timestep_embedding_f64(FP(y), FP(t), t->shape[0], y->shape[1], flip_sin_to_cos, freq_shift, max_period);
    return SD_OK;
}

int sd_cpu_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred,
                const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    double l = sd_k_loss_f64(ctx, FP(per_sample), FP(pred), FP(target), FP(weight), FP(c), kind, n, m);
    FP(loss)[0] = l;
    return SD_OK;
}

int sd_cpu_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target,
                    const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    sd_k_loss_bwd_f64(ctx, FP(dpred), FP(pred), FP(target), FP(weight), FP(c), kind, dloss, n, m);
    return SD_OK;
}

static const double *weight_f64(sd_ctx *ctx, const sd_tensor *w, int *rc)
{
    (void)ctx;
    *rc = SD_OK;
    if (w->dtype == SD_F32) return FP(w);
    *rc = sd_err(SD_EUNSUPPORTED, "f64 test backend: half weight");
    return NULL;
}

int sd_cpu_linear(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    const double *wf = weight_f64(ctx, w, &rc);
    if (!wf) return rc;
    int64_t in = w->shape[1], out = w->shape[0], r = in ? sd_tensor_numel(x) / in : 0;
    sd_k_linear_f64(ctx, FP(y), FP(x), wf, FP(b), r, in, out);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

int sd_cpu_linear_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                      const sd_tensor *x, const sd_tensor *w)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    const double *wf = dx ? weight_f64(ctx, w, &rc) : NULL;
    if (rc) return rc;
    int64_t in = w->shape[1], out = w->shape[0], r = out ? sd_tensor_numel(dy) / out : 0;
    sd_k_linear_bwd_f64(ctx, FP(dx), FP(dw), FP(db), FP(dy), FP(x), wf, r, in, out);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

int sd_cpu_matmul(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a, const sd_tensor *b,
                  int trans_b, float alpha, float beta)
{
    int64_t m = c->shape[c->ndim - 2], n = c->shape[c->ndim - 1];
    int64_t k = trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t batch = (m > 0 && n > 0) ? sd_tensor_numel(c) / (m * n) : 0;
    int64_t sa = a->ndim > 2 ? m * k : 0, sb = b->ndim > 2 ? k * n : 0;
    sd_k_matmul_f64(ctx, FP(c), FP(a), trans_a, FP(b), trans_b, alpha, beta, batch, m, n, k, sa, sb);
    return SD_OK;
}

static void conv_plan(sd_k_conv *p, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, sd_conv2d_geom g)
{
    sd_k_conv_plan(p, x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2],
                   w->shape[3], y->shape[2], y->shape[3], g.stride, g.pad_t, g.pad_l);
}

int sd_cpu_conv2d(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                  sd_conv2d_geom g)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    const double *wf = weight_f64(ctx, w, &rc);
    if (!wf) return rc;
    sd_k_conv p;
    conv_plan(&p, x, w, y, g);
    rc = sd_k_conv2d_f64(ctx, &p, FP(y), FP(x), wf, FP(b));
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_cpu_conv2d_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                      const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    const double *wf = dx ? weight_f64(ctx, w, &rc) : NULL;
    if (rc) return rc;
    sd_k_conv p;
    conv_plan(&p, x, w, dy, g);
    rc = sd_k_conv2d_bwd_f64(ctx, &p, FP(dx), FP(dw), FP(db), FP(dy), FP(x), wf);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static void gn_dims(const sd_tensor *x, int64_t *n, int64_t *c, int64_t *s)
{
    *n = x->shape[0];
    *c = x->shape[1];
    *s = 1;
    for (int i = 2; i < x->ndim; i++) *s *= x->shape[i];
}

int sd_cpu_group_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x,
                      const sd_tensor *gamma, const sd_tensor *beta, int groups, float eps, sd_act act)
{
    int64_t n, c, s;
    gn_dims(x, &n, &c, &s);
    sd_k_group_norm_f64(ctx, FP(y), FP(mean), FP(rstd), FP(x), FP(gamma), FP(beta), n, c, s, groups, eps, act);
    return SD_OK;
}

int sd_cpu_group_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy,
                          const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd,
                          const sd_tensor *gamma, const sd_tensor *beta, int groups, sd_act act)
{
    int64_t n, c, s;
    gn_dims(x, &n, &c, &s);
    size_t mark = sd_arena_mark(&ctx->scratch);
    double *part = sd_k_scratch_f64(ctx, 2 * n * c);
    if (!part) return SD_ENOMEM;
    sd_k_group_norm_bwd_f64(ctx, FP(dx), FP(dgamma), FP(dbeta), FP(dy), FP(x), FP(mean), FP(rstd),
                            FP(gamma), FP(beta), n, c, s, groups, act, part);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

int sd_cpu_layer_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x,
                      const sd_tensor *gamma, const sd_tensor *beta, float eps)
{
    int64_t c = x->shape[x->ndim - 1], rows = c ? sd_tensor_numel(x) / c : 0;
    sd_k_layer_norm_f64(ctx, FP(y), FP(mean), FP(rstd), FP(x), FP(gamma), FP(beta), rows, c, eps);
    return SD_OK;
}

int sd_cpu_layer_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy,
                          const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd,
                          const sd_tensor *gamma)
{
    int64_t c = x->shape[x->ndim - 1], rows = c ? sd_tensor_numel(x) / c : 0;
    int64_t nblk = (rows + SD_K_LN_ROWBLK - 1) / SD_K_LN_ROWBLK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    double *part = sd_k_scratch_f64(ctx, 2 * nblk * c);
    if (!part) return SD_ENOMEM;
    sd_k_layer_norm_bwd_f64(ctx, FP(dx), FP(dgamma), FP(dbeta), FP(dy), FP(x), FP(mean), FP(rstd),
                            FP(gamma), rows, c, part);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

static void attn_geom(sd_k_attn *g, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, sd_attn_args a)
{
    g->b = q->shape[0];
    g->h = a.heads;
    g->tq = q->shape[1];
    g->tk = k->shape[1];
    g->dk = q->shape[2] / a.heads;
    g->dv = v->shape[2] / a.heads;
    g->scale = a.scale != 0 ? a.scale : 1.0 / sqrt((double)g->dk);
    g->causal = a.causal;
}

int sd_cpu_attention(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q, const sd_tensor *k,
                     const sd_tensor *v, sd_attn_args a)
{
    sd_k_attn g;
    attn_geom(&g, q, k, v, a);
    return sd_k_attention_f64(ctx, &g, FP(o), FP(lse), FP(q), FP(k), FP(v));
}

int sd_cpu_attention_bwd(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv, const sd_tensor *dout,
                         const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, const sd_tensor *o,
                         const sd_tensor *lse, sd_attn_args a)
{
    sd_k_attn g;
    attn_geom(&g, q, k, v, a);
    return sd_k_attention_bwd_f64(ctx, &g, FP(dq), FP(dk), FP(dv), FP(dout), FP(q), FP(k), FP(v), FP(o), FP(lse));
}

#endif
