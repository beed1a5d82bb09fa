/* Internal: the sd_cpu_* entry points of linear, matmul, conv2d, group/layer norm and attention,
 * as a template over `real` (see kern.h): each one takes the sizes from the tensors (validated by
 * ops.c), takes its scratch from ctx and calls its kern_*.h kernel with OpenBLAS pinned to one
 * thread. Included once per program by the float library (lib/tensor/cpu_nn.c) and by the double
 * gradient tests (tests/grad/test_nn_f64.h, with SD_KERN_F64), so both run this very code.
 *
 * The includer first includes tensor/kern_{attn,conv,dwconv,linear,norm}.h and tensor/backend.h,
 * defines FP(t) (the `real *` holding tensor t's numbers; NULL for a NULL tensor) and
 *   static const real *weight_real(sd_ctx *ctx, const sd_tensor *w, int *rc);
 * (a weight's numbers as `real`, possibly converted into ctx scratch; NULL with *rc set when it
 * cannot). */
#ifndef SD_TENSOR_CPU_WRAP_NN_H
#define SD_TENSOR_CPU_WRAP_NN_H

/* These ops call the BLAS gemm on their own fixed partitions, from inside OpenMP loops or from the
 * calling thread: OpenBLAS must run single-threaded meanwhile (never nest two thread pools).
 * The previous OpenBLAS thread count (the process's policy, base/threads.h) is restored. */
static int blas_serial_begin(void)
{
    int prev = openblas_get_num_threads();
    if (prev != 1) openblas_set_num_threads(1);
    return prev;
}

static void blas_serial_end(int prev)
{
    if (prev != 1) openblas_set_num_threads(prev);
}

static int linear_impl(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    const real *wf = weight_real(ctx, w, &rc);
    if (!wf) return rc;
    int64_t in = w->shape[1], out = w->shape[0], r = in ? sd_tensor_numel(x) / in : 0;
    KN(sd_k_linear)(ctx, FP(y), FP(x), wf, FP(b), r, in, out);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

static int linear_bwd_impl(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                           const sd_tensor *x, const sd_tensor *w)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    const real *wf = dx ? weight_real(ctx, w, &rc) : NULL;
    if (rc) return rc;
    int64_t in = w->shape[1], out = w->shape[0], r = out ? sd_tensor_numel(dy) / out : 0;
    KN(sd_k_linear_bwd)(ctx, FP(dx), FP(dw), FP(db), FP(dy), FP(x), wf, r, in, out);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

static int matmul_impl(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a, const sd_tensor *b,
                       int trans_b, float alpha, float beta)
{
    int64_t m = c->shape[c->ndim - 2], n = c->shape[c->ndim - 1];
    int64_t k = trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t batch = (m > 0 && n > 0) ? sd_tensor_numel(c) / (m * n) : 0;
    int64_t sa = a->ndim > 2 ? m * k : 0, sb = b->ndim > 2 ? k * n : 0;
    KN(sd_k_matmul)(ctx, FP(c), FP(a), trans_a, FP(b), trans_b, alpha, beta, batch, m, n, k, sa, sb);
    return SD_OK;
}

static void conv_plan(sd_k_conv *p, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, sd_conv2d_geom g)
{
    sd_k_conv_plan(p, x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2],
                   w->shape[3], y->shape[2], y->shape[3], g.stride, g.pad_t, g.pad_l);
}

static int conv2d_impl(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                       sd_conv2d_geom g)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    const real *wf = weight_real(ctx, w, &rc);
    if (!wf) return rc;
    sd_k_conv p;
    conv_plan(&p, x, w, y, g);
    rc = KN(sd_k_conv2d)(ctx, &p, FP(y), FP(x), wf, FP(b));
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static int conv2d_bwd_impl(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                           const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    const real *wf = dx ? weight_real(ctx, w, &rc) : NULL;
    if (rc) return rc;
    sd_k_conv p;
    conv_plan(&p, x, w, dy, g);
    rc = KN(sd_k_conv2d_bwd)(ctx, &p, FP(dx), FP(dw), FP(db), FP(dy), FP(x), wf);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static void conv_dw_plan(sd_k_dwconv *p, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, sd_conv2d_geom g)
{
    p->n = x->shape[0]; p->c = x->shape[1]; p->h = x->shape[2]; p->w = x->shape[3];
    p->kh = w->shape[2]; p->kw = w->shape[3]; p->ho = y->shape[2]; p->wo = y->shape[3];
    p->stride = g.stride; p->pt = g.pad_t; p->pl = g.pad_l;
}

static int conv2d_dw_impl(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                          sd_conv2d_geom g)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    const real *wf = weight_real(ctx, w, &rc);
    if (!wf) return rc;
    sd_k_dwconv p;
    conv_dw_plan(&p, x, w, y, g);
    KN(sd_k_conv2d_dw)(ctx, &p, FP(y), FP(x), wf, FP(b));
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

static int conv2d_dw_bwd_impl(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                              const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    const real *wf = dx ? weight_real(ctx, w, &rc) : NULL;
    if (rc) return rc;
    sd_k_dwconv p;
    conv_dw_plan(&p, x, w, dy, g);
    KN(sd_k_conv2d_dw_bwd)(ctx, &p, FP(dx), FP(dw), FP(db), FP(dy), FP(x), wf);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
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
    KN(sd_k_group_norm)(ctx, FP(y), FP(mean), FP(rstd), FP(x), FP(gamma), FP(beta), n, c, s, groups, eps, act);
    return SD_OK;
}

int sd_cpu_group_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy,
                          const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd,
                          const sd_tensor *gamma, const sd_tensor *beta, int groups, sd_act act)
{
    int64_t n, c, s;
    gn_dims(x, &n, &c, &s);
    size_t mark = sd_arena_mark(&ctx->scratch);
    real *part = KN(sd_k_scratch)(ctx, 2 * n * c);
    if (!part) return SD_ENOMEM;
    KN(sd_k_group_norm_bwd)(ctx, FP(dx), FP(dgamma), FP(dbeta), FP(dy), FP(x), FP(mean), FP(rstd),
                            FP(gamma), FP(beta), n, c, s, groups, act, part);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

int sd_cpu_layer_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x,
                      const sd_tensor *gamma, const sd_tensor *beta, float eps)
{
    int64_t c = x->shape[x->ndim - 1], rows = c ? sd_tensor_numel(x) / c : 0;
    KN(sd_k_layer_norm)(ctx, FP(y), FP(mean), FP(rstd), FP(x), FP(gamma), FP(beta), rows, c, eps);
    return SD_OK;
}

int sd_cpu_layer_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy,
                          const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd,
                          const sd_tensor *gamma)
{
    int64_t c = x->shape[x->ndim - 1], rows = c ? sd_tensor_numel(x) / c : 0;
    int64_t nblk = (rows + SD_K_LN_ROWBLK - 1) / SD_K_LN_ROWBLK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    real *part = KN(sd_k_scratch)(ctx, 2 * nblk * c);
    if (!part) return SD_ENOMEM;
    KN(sd_k_layer_norm_bwd)(ctx, FP(dx), FP(dgamma), FP(dbeta), FP(dy), FP(x), FP(mean), FP(rstd),
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
    g->scale = a.scale != 0 ? a.scale : (real)1 / R_SQRT((real)g->dk);
    g->causal = a.causal;
}

static int attention_impl(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q, const sd_tensor *k,
                          const sd_tensor *v, sd_attn_args a)
{
    sd_k_attn g;
    attn_geom(&g, q, k, v, a);
    return KN(sd_k_attention)(ctx, &g, FP(o), FP(lse), FP(q), FP(k), FP(v));
}

static int attention_bwd_impl(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv, const sd_tensor *dout,
                              const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, const sd_tensor *o,
                              const sd_tensor *lse, sd_attn_args a)
{
    sd_k_attn g;
    attn_geom(&g, q, k, v, a);
    return KN(sd_k_attention_bwd)(ctx, &g, FP(dq), FP(dk), FP(dv), FP(dout), FP(q), FP(k), FP(v), FP(o), FP(lse));
}

/* ---- entry points: BLAS pinned to one thread for the duration of the op ---------------------- */

#define SERIAL(call) do { int prev_ = blas_serial_begin(); int rc_ = (call); blas_serial_end(prev_); return rc_; } while (0)

int sd_cpu_linear(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
{
    SERIAL(linear_impl(ctx, y, x, w, b));
}

int sd_cpu_linear_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                      const sd_tensor *x, const sd_tensor *w)
{
    SERIAL(linear_bwd_impl(ctx, dx, dw, db, dy, x, w));
}

int sd_cpu_matmul(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a, const sd_tensor *b, int trans_b,
                  float alpha, float beta)
{
    SERIAL(matmul_impl(ctx, c, a, trans_a, b, trans_b, alpha, beta));
}

int sd_cpu_conv2d(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                  sd_conv2d_geom g)
{
    SERIAL(conv2d_impl(ctx, y, x, w, b, g));
}

int sd_cpu_conv2d_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                      const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g)
{
    SERIAL(conv2d_bwd_impl(ctx, dx, dw, db, dy, x, w, g));
}

int sd_cpu_conv2d_dw(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                     sd_conv2d_geom g)
{
    return conv2d_dw_impl(ctx, y, x, w, b, g);   /* no BLAS */
}

int sd_cpu_conv2d_dw_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                         const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g)
{
    return conv2d_dw_bwd_impl(ctx, dx, dw, db, dy, x, w, g);
}

int sd_cpu_attention(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q, const sd_tensor *k,
                     const sd_tensor *v, sd_attn_args a)
{
    SERIAL(attention_impl(ctx, o, lse, q, k, v, a));
}

int sd_cpu_attention_bwd(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv, const sd_tensor *dout,
                         const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, const sd_tensor *o,
                         const sd_tensor *lse, sd_attn_args a)
{
    SERIAL(attention_bwd_impl(ctx, dq, dk, dv, dout, q, k, v, o, lse, a));
}
#undef SERIAL

#endif
