/* Attention (to_q/to_k/to_v/to_out.0) and feed-forward layers (see nn.h). */
#include <stdio.h>
#include <string.h>

#include "nn/nn.h"
#include "nn/nn_internal.h"

static void subkey(char *buf, size_t n, const char *prefix, const char *name)
{
    snprintf(buf, n, "%s%s%s", prefix ? prefix : "", prefix && *prefix ? "." : "", name);
}

/* ---- attention ------------------------------------------------------------------------------ */

int sd_attention_init(sd_attention *a, sd_params *r, const char *prefix, int64_t dim,
                      int64_t context_dim, int heads, int64_t dim_head, sd_attn_style style)
{
    memset(a, 0, sizeof *a);
    if (dim < 1 || heads < 1 || dim_head < 1 || context_dim < 0)
        return sd_err(SD_EINVAL, "attention '%s': bad size", prefix);
    a->dim = dim;
    a->context_dim = context_dim;
    a->heads = heads;
    a->inner = heads * dim_head;
    int64_t cd = context_dim ? context_dim : dim;
    static const char *names[3][4] = { { "to_q", "to_k", "to_v", "to_out.0" },
                                       { "q_proj", "k_proj", "v_proj", "out_proj" },
                                       { "q", "k", "v", "proj_out" } };
    if (style < SD_ATTN_LDM || style > SD_ATTN_VAE) return sd_err(SD_EINVAL, "attention '%s': bad style", prefix);
    unsigned qkv_flags = style == SD_ATTN_LDM ? 0 : SD_NN_BIAS;
    unsigned out_flags = SD_NN_BIAS;
    if (style == SD_ATTN_VAE) {
        qkv_flags |= SD_NN_CONV1X1;
        out_flags |= SD_NN_CONV1X1;
    }
    char key[512];
    int rc;
    subkey(key, sizeof key, prefix, names[style][0]);
    if ((rc = sd_linear_init(&a->q, r, key, dim, a->inner, qkv_flags))) return rc;
    subkey(key, sizeof key, prefix, names[style][1]);
    if ((rc = sd_linear_init(&a->k, r, key, cd, a->inner, qkv_flags))) return rc;
    subkey(key, sizeof key, prefix, names[style][2]);
    if ((rc = sd_linear_init(&a->v, r, key, cd, a->inner, qkv_flags))) return rc;
    subkey(key, sizeof key, prefix, names[style][3]);
    return sd_linear_init(&a->out, r, key, a->inner, dim, out_flags);
}

static sd_attn_args attn_args(const sd_attention *a)
{
    sd_attn_args g = { a->heads, 0.0f, a->causal };
    return g;
}

int sd_attention_forward(sd_ctx *ctx, sd_attention *a, sd_arena *save, sd_tensor *y,
                         const sd_tensor *x, const sd_tensor *context)
{
    if (context && !a->context_dim)
        return sd_err(SD_EINVAL, "%s: self-attention given a context", a->q.w->key);
    if (!context && a->context_dim)
        return sd_err(SD_EINVAL, "%s: cross-attention needs a context", a->q.w->key);
    if (x->ndim != 3 || (context && context->ndim != 3))
        return sd_err(SD_EINVAL, "%s: inputs must be [B,T,C]", a->q.w->key);
    const sd_tensor *c = context ? context : x;
    int64_t B = x->shape[0], T = x->shape[1], S = c->shape[1];
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor q, k, v, o, lse;
    int rc;
    NN_TRY(nn_tensor(A, &q, 3, (int64_t[]){ B, T, a->inner }));
    NN_TRY(nn_tensor(A, &k, 3, (int64_t[]){ B, S, a->inner }));
    NN_TRY(nn_tensor(A, &v, 3, (int64_t[]){ B, S, a->inner }));
    NN_TRY(nn_tensor(A, &o, 3, (int64_t[]){ B, T, a->inner }));
    NN_TRY(nn_tensor(A, &lse, 3, (int64_t[]){ B, a->heads, T }));
    NN_TRY(sd_linear_forward(ctx, &a->q, save, &q, x));
    NN_TRY(sd_linear_forward(ctx, &a->k, save, &k, c));
    NN_TRY(sd_linear_forward(ctx, &a->v, save, &v, c));
    rc = sd_op_attention(ctx, &o, &lse, &q, &k, &v, attn_args(a));
    if (rc) { rc = sd_err_prefix(rc, "%s", a->q.w->key); goto out; }
    NN_TRY(sd_linear_forward(ctx, &a->out, save, y, &o));
    if (save) {
        a->x = *x;
        if (context) a->context = *context;
        else a->context.data = NULL;
        a->qt = q;
        a->kt = k;
        a->vt = v;
        a->ot = o;
        a->lse = lse;
    } else {
        a->qt.data = NULL;
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_attention_backward(sd_ctx *ctx, sd_attention *a, sd_tensor *dx, sd_tensor *dcontext,
                          const sd_tensor *dy)
{
    if (!a->qt.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", a->q.w->key);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor dout, dq, dk, dv;
    int rc;
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dout, 3, a->ot.shape));
    NN_TRY(sd_linear_backward(ctx, &a->out, &dout, dy));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dq, 3, a->qt.shape));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dk, 3, a->kt.shape));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dv, 3, a->vt.shape));
    rc = sd_op_attention_bwd(ctx, &dq, &dk, &dv, &dout, &a->qt, &a->kt, &a->vt, &a->ot, &a->lse, attn_args(a));
    if (rc) { rc = sd_err_prefix(rc, "%s", a->q.w->key); goto out; }
    sd_tensor *dc = a->context.data ? dcontext : dx;
    NN_TRY(sd_linear_backward(ctx, &a->q, dx, &dq));
    NN_TRY(sd_linear_backward(ctx, &a->k, dc, &dk));
    NN_TRY(sd_linear_backward(ctx, &a->v, dc, &dv));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

sd_nn_plan sd_attention_plan(const sd_attention *a, const int64_t *x_shape, const int64_t *context_shape)
{
    const int64_t *cs = context_shape ? context_shape : x_shape;
    int64_t B = x_shape[0], T = x_shape[1], S = cs[1];
    int64_t os[3] = { B, T, a->inner };
    size_t own = 2 * nn_bytes(B * T * a->inner) + 2 * nn_bytes(B * S * a->inner) + nn_bytes(B * a->heads * T);
    sd_nn_plan pq = sd_linear_plan(&a->q, 3, x_shape), pk = sd_linear_plan(&a->k, 3, cs),
               pv = sd_linear_plan(&a->v, 3, cs), po = sd_linear_plan(&a->out, 3, os);
    sd_nn_plan p;
    p.saved = own + pq.saved + pk.saved + pv.saved + po.saved;
    size_t child = nn_max(nn_max(pq.scratch, pk.scratch), nn_max(pv.scratch, po.scratch));
    /* inference: own tensors in scratch + the children's; backward: four gradients + a child's */
    p.scratch = nn_max(p.saved + child, own + child);
    return p;
}

/* ---- feed-forward --------------------------------------------------------------------------- */

int sd_ff_init(sd_ff *f, sd_params *r, const char *prefix, int64_t dim, int64_t inner, sd_ff_kind kind)
{
    memset(f, 0, sizeof *f);
    if (dim < 1 || inner < 1 || kind < SD_FF_GEGLU || kind > SD_FF_CLIP_GELU)
        return sd_err(SD_EINVAL, "feed-forward '%s': bad size or kind", prefix);
    f->kind = kind;
    f->dim = dim;
    f->inner = inner;
    const char *in_name = kind == SD_FF_GEGLU ? "net.0.proj" : kind == SD_FF_GELU ? "net.0.0" : "fc1";
    const char *out_name = kind <= SD_FF_GELU ? "net.2" : "fc2";
    char key[512];
    subkey(key, sizeof key, prefix, in_name);
    int rc = sd_linear_init(&f->proj, r, key, dim, kind == SD_FF_GEGLU ? 2 * inner : inner, SD_NN_BIAS);
    if (rc) return rc;
    subkey(key, sizeof key, prefix, out_name);
    return sd_linear_init(&f->out, r, key, inner, dim, SD_NN_BIAS);
}

static sd_act ff_act(sd_ff_kind k)
{
    return k == SD_FF_CLIP_QUICK_GELU ? SD_ACT_QUICK_GELU : SD_ACT_GELU;
}

static void ff_shapes(const sd_ff *f, int ndim, const int64_t *xs, int64_t *hs, int64_t *gs)
{
    memcpy(hs, xs, sizeof(int64_t) * (size_t)ndim);
    memcpy(gs, xs, sizeof(int64_t) * (size_t)ndim);
    hs[ndim - 1] = f->proj.out;
    gs[ndim - 1] = f->inner;
}

int sd_ff_forward(sd_ctx *ctx, sd_ff *f, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    if (x->ndim < 1) return sd_err(SD_EINVAL, "%s: scalar input", f->proj.w->key);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    int64_t hs[SD_MAX_DIMS], gs[SD_MAX_DIMS];
    ff_shapes(f, x->ndim, x->shape, hs, gs);
    sd_tensor h, g;
    int rc;
    NN_TRY(nn_tensor(A, &h, x->ndim, hs));
    NN_TRY(nn_tensor(A, &g, x->ndim, gs));
    NN_TRY(sd_linear_forward(ctx, &f->proj, save, &h, x));
    rc = f->kind == SD_FF_GEGLU ? sd_op_geglu(ctx, &g, &h) : sd_op_act(ctx, ff_act(f->kind), &g, &h);
    if (rc) goto out;
    NN_TRY(sd_linear_forward(ctx, &f->out, save, y, &g));
    f->h = h;
    f->g = g;
    if (!save) f->h.data = NULL;
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_ff_backward(sd_ctx *ctx, sd_ff *f, sd_tensor *dx, const sd_tensor *dy)
{
    if (!f->h.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", f->proj.w->key);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor dg, dh;
    int rc;
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dg, f->g.ndim, f->g.shape));
    NN_TRY(sd_linear_backward(ctx, &f->out, &dg, dy));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dh, f->h.ndim, f->h.shape));
    rc = f->kind == SD_FF_GEGLU ? sd_op_geglu_bwd(ctx, &dh, &dg, &f->h)
                                : sd_op_act_bwd(ctx, ff_act(f->kind), &dh, &dg, &f->h);
    if (rc) goto out;
    NN_TRY(sd_linear_backward(ctx, &f->proj, dx, &dh));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

sd_nn_plan sd_ff_plan(const sd_ff *f, int ndim, const int64_t *x_shape)
{
    int64_t hs[SD_MAX_DIMS], gs[SD_MAX_DIMS];
    ff_shapes(f, ndim, x_shape, hs, gs);
    int64_t rows = 1;
    for (int d = 0; d + 1 < ndim; d++) rows *= x_shape[d];
    size_t own = nn_bytes(rows * hs[ndim - 1]) + nn_bytes(rows * f->inner);
    sd_nn_plan pi = sd_linear_plan(&f->proj, ndim, x_shape), po = sd_linear_plan(&f->out, ndim, gs), p;
    p.saved = own + pi.saved + po.saved;
    p.scratch = p.saved + nn_max(pi.scratch, po.scratch);
    return p;
}
