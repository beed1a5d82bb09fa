/* Basic layers: linear, conv2d, group norm, layer norm, down/upsample (see nn.h). */
#include <stdio.h>
#include <string.h>

#include "nn/nn.h"
#include "nn/nn_internal.h"

int sd_nn_arena_init(sd_arena *a, sd_devkind device, size_t bytes)
{
    return sd_arena_init(a, device, bytes ? bytes : 64);
}

static sd_tensor *grad_of(sd_param *p) { return sd_param_grad(p); }
static const sd_tensor *value_of(const sd_param *p) { return p ? &p->value : NULL; }

/* ---- linear --------------------------------------------------------------------------------- */

int sd_linear_init(sd_linear *l, sd_params *r, const char *prefix, int64_t in, int64_t out, unsigned flags)
{
    memset(l, 0, sizeof *l);
    if (in < 1 || out < 1) return sd_err(SD_EINVAL, "linear '%s': bad size %lld -> %lld", prefix, (long long)in, (long long)out);
    l->in = in;
    l->out = out;
    int rc = (flags & SD_NN_CONV1X1)
                 ? sd_params_add(r, prefix, "weight", 4, (int64_t[]){ out, in, 1, 1 }, SD_PARAM_TRAINABLE | SD_PARAM_HALF_OK, &l->w)
                 : sd_params_add(r, prefix, "weight", 2, (int64_t[]){ out, in }, SD_PARAM_TRAINABLE | SD_PARAM_HALF_OK, &l->w);
    if (!rc && (flags & SD_NN_BIAS)) rc = sd_params_add(r, prefix, "bias", 1, &out, SD_PARAM_TRAINABLE, &l->b);
    return rc;
}

int sd_linear_set_lora(sd_linear *l, sd_lora *lora)
{
    if (lora && (lora->conv || lora->in != l->in || lora->out != l->out))
        return sd_err(SD_EINVAL, "LoRA %s does not fit linear %lld -> %lld", lora->down->key,
                      (long long)l->in, (long long)l->out);
    l->lora = lora;
    return SD_OK;
}

int sd_linear_set_oft(sd_linear *l, sd_oft *oft)
{
    if (oft && (oft->out != l->out || oft->row != l->in || l->lora))
        return sd_err(SD_EINVAL, "OFT %s does not fit linear %lld -> %lld%s", oft->blocks->key, (long long)l->in,
                      (long long)l->out, l->lora ? " (it has a LoRA)" : "");
    l->oft = oft;
    return SD_OK;
}

int sd_linear_set_lyco(sd_linear *l, sd_lyco *m)
{
    if (m && (m->out != l->out || m->row != l->in || l->lora || l->oft))
        return sd_err(SD_EINVAL, "LyCORIS module %s does not fit linear %lld -> %lld%s", m->p[0]->key, (long long)l->in,
                      (long long)l->out, l->lora || l->oft ? " (it has another module)" : "");
    l->lyco = m;
    return SD_OK;
}

/* A weight module: the layer runs with a weight computed from W (OFT's RW, LyCORIS's W + mΔW). */
typedef struct wmod {
    sd_oft *oft;
    sd_lyco *lyco;
} wmod;

static int wmod_on(wmod m) { return m.oft || m.lyco; }
static int wmod_has_grad(wmod m)
{
    if (m.oft) return nn_has_grad(m.oft->blocks);
    for (int i = 0; m.lyco && i < 4; i++)
        if (nn_has_grad(m.lyco->p[i])) return 1;
    return 0;
}
static const char *wmod_key(wmod m) { return m.oft ? m.oft->blocks->key : m.lyco->p[0]->key; }

/* Scratch of a layer with a weight module: RW and dL/dRW (f32) beside the module's own. */
static size_t wmod_plan_bytes(wmod m)
{
    if (m.oft) return 2 * nn_bytes(m.oft->out * m.oft->row) + sd_oft_scratch_bytes(m.oft);
    return 2 * nn_bytes(m.lyco->out * m.lyco->row) + sd_lyco_scratch_bytes(m.lyco);
}

/* The weight a layer runs with: w itself, or its module's (in scratch, w's dtype). */
static int wmod_weight(sd_ctx *ctx, wmod m, const sd_tensor *w, sd_tensor *out)
{
    if (!wmod_on(m)) {
        *out = *w;
        return SD_OK;
    }
    int rc = sd_arena_tensor(&ctx->scratch, out, (sd_dtype)w->dtype, w->ndim, w->shape);
    if (rc) return sd_err_prefix(rc, "layer activations");
    return m.oft ? sd_oft_weight(ctx, m.oft, w, out) : sd_lyco_weight(ctx, m.lyco, w, out);
}

static int wmod_backward(sd_ctx *ctx, wmod m, const sd_tensor *w, const sd_tensor *drw)
{
    return m.oft ? sd_oft_weight_backward(ctx, m.oft, w, drw) : sd_lyco_weight_backward(ctx, m.lyco, drw);
}

int sd_linear_forward(sd_ctx *ctx, sd_linear *l, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    sd_tensor w, wr;
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = nn_view2(&l->w->value, &w);
    if (!rc) rc = wmod_weight(ctx, (wmod){ l->oft, l->lyco }, &w, &wr);
    if (!rc) rc = sd_op_linear(ctx, y, x, &wr, value_of(l->b));
    sd_arena_reset(&ctx->scratch, mark);
    if (!rc && l->lora) rc = sd_lora_forward(ctx, l->lora, save, y, x);
    if (rc) return sd_err_prefix(rc, "%s", l->w->key);
    if (save) l->x = *x;
    else l->x.data = NULL;
    return SD_OK;
}

int sd_linear_backward(sd_ctx *ctx, sd_linear *l, sd_tensor *dx, const sd_tensor *dy)
{
    if (!l->x.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", l->w->key);
    sd_tensor w, dwv, *dw = grad_of(l->w), *db = grad_of(l->b);
    int rc = nn_view2(&l->w->value, &w);
    wmod wm = { l->oft, l->lyco };
    if (!rc && wmod_on(wm)) {
        if (dw) return sd_err(SD_EUNSUPPORTED, "%s: a trained weight under %s", l->w->key, wmod_key(wm));
        size_t mark = sd_arena_mark(&ctx->scratch);
        sd_tensor wr, drw;
        int g = wmod_has_grad(wm);
        rc = wmod_weight(ctx, wm, &w, &wr);
        if (!rc && g) rc = nn_zeros(ctx, &ctx->scratch, &drw, 2, w.shape);
        if (!rc) rc = sd_op_linear_bwd(ctx, dx, g ? &drw : NULL, db, dy, &l->x, &wr);
        if (!rc && g) rc = wmod_backward(ctx, wm, &w, &drw);
        sd_arena_reset(&ctx->scratch, mark);
        return rc ? sd_err_prefix(rc, "%s", l->w->key) : SD_OK;
    }
    if (!rc && dw) rc = nn_view2(dw, &dwv);
    if (!rc && (dx || dw || db)) rc = sd_op_linear_bwd(ctx, dx, dw ? &dwv : NULL, db, dy, &l->x, &w);
    if (!rc && l->lora) rc = sd_lora_backward(ctx, l->lora, dx, dy, &l->x);
    return rc ? sd_err_prefix(rc, "%s", l->w->key) : SD_OK;
}

sd_nn_plan sd_linear_plan(const sd_linear *l, int ndim, const int64_t *x_shape)
{
    sd_nn_plan p = { 0, 0 };
    if (l->oft || l->lyco) p.scratch = wmod_plan_bytes((wmod){ l->oft, l->lyco });
    if (!l->lora) return p;
    int64_t rows = 1;
    for (int d = 0; d + 1 < ndim; d++) rows *= x_shape[d];
    p.saved = sd_lora_saved_bytes(l->lora, rows * l->out, x_shape[0]);
    p.scratch = sd_lora_scratch_bytes(l->lora, rows * l->out, x_shape[0]);
    return p;
}

/* ---- conv2d --------------------------------------------------------------------------------- */

int sd_conv2d_init(sd_conv2d *c, sd_params *r, const char *prefix, int64_t cin, int64_t cout,
                   int kh, int kw, sd_conv2d_geom g, unsigned flags)
{
    memset(c, 0, sizeof *c);
    if (cin < 1 || cout < 1 || kh < 1 || kw < 1 || g.stride < 1)
        return sd_err(SD_EINVAL, "conv2d '%s': bad size", prefix);
    c->cin = cin;
    c->cout = cout;
    c->kh = kh;
    c->kw = kw;
    c->g = g;
    int rc = sd_params_add(r, prefix, "weight", 4, (int64_t[]){ cout, cin, kh, kw },
                           SD_PARAM_TRAINABLE | SD_PARAM_HALF_OK, &c->w);
    if (!rc && (flags & SD_NN_BIAS)) rc = sd_params_add(r, prefix, "bias", 1, &cout, SD_PARAM_TRAINABLE, &c->b);
    return rc;
}

int sd_conv2d_set_lora(sd_conv2d *c, sd_lora *lora)
{
    if (lora && (!lora->conv || lora->in != c->cin || lora->out != c->cout || lora->kh != c->kh ||
                 lora->kw != c->kw || memcmp(&lora->geom, &c->g, sizeof c->g)))
        return sd_err(SD_EINVAL, "LoRA %s does not fit conv %lld -> %lld (%dx%d)", lora->down->key,
                      (long long)c->cin, (long long)c->cout, c->kh, c->kw);
    c->lora = lora;
    return SD_OK;
}

void sd_conv2d_out_shape(const sd_conv2d *c, const int64_t *x, int64_t *y)
{
    y[0] = x[0];
    y[1] = c->cout;
    y[2] = (x[2] + c->g.pad_t + c->g.pad_b - c->kh) / c->g.stride + 1;
    y[3] = (x[3] + c->g.pad_l + c->g.pad_r - c->kw) / c->g.stride + 1;
}

int sd_conv2d_set_oft(sd_conv2d *c, sd_oft *oft)
{
    if (oft && (oft->out != c->cout || oft->row != c->cin * c->kh * c->kw || c->lora))
        return sd_err(SD_EINVAL, "OFT %s does not fit conv %lld -> %lld (%dx%d)%s", oft->blocks->key,
                      (long long)c->cin, (long long)c->cout, c->kh, c->kw, c->lora ? " (it has a LoRA)" : "");
    c->oft = oft;
    return SD_OK;
}

int sd_conv2d_set_lyco(sd_conv2d *c, sd_lyco *m)
{
    if (m && (m->out != c->cout || m->row != c->cin * c->kh * c->kw || c->lora || c->oft))
        return sd_err(SD_EINVAL, "LyCORIS module %s does not fit conv %lld -> %lld (%dx%d)%s", m->p[0]->key,
                      (long long)c->cin, (long long)c->cout, c->kh, c->kw, c->lora || c->oft ? " (it has another module)" : "");
    c->lyco = m;
    return SD_OK;
}

int sd_conv2d_forward(sd_ctx *ctx, sd_conv2d *c, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    sd_tensor wr;
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = wmod_weight(ctx, (wmod){ c->oft, c->lyco }, &c->w->value, &wr);
    if (!rc) rc = sd_op_conv2d(ctx, y, x, &wr, value_of(c->b), c->g);
    sd_arena_reset(&ctx->scratch, mark);
    if (!rc && c->lora) rc = sd_lora_forward(ctx, c->lora, save, y, x);
    if (rc) return sd_err_prefix(rc, "%s", c->w->key);
    if (save) c->x = *x;
    else c->x.data = NULL;
    return SD_OK;
}

int sd_conv2d_backward(sd_ctx *ctx, sd_conv2d *c, sd_tensor *dx, const sd_tensor *dy)
{
    if (!c->x.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", c->w->key);
    sd_tensor *dw = grad_of(c->w), *db = grad_of(c->b);
    int rc = SD_OK;
    wmod wm = { c->oft, c->lyco };
    if (wmod_on(wm)) {
        if (dw) return sd_err(SD_EUNSUPPORTED, "%s: a trained weight under %s", c->w->key, wmod_key(wm));
        size_t mark = sd_arena_mark(&ctx->scratch);
        sd_tensor wr, drw;
        int g = wmod_has_grad(wm);
        rc = wmod_weight(ctx, wm, &c->w->value, &wr);
        if (!rc && g) rc = nn_zeros(ctx, &ctx->scratch, &drw, 4, c->w->value.shape);
        if (!rc) rc = sd_op_conv2d_bwd(ctx, dx, g ? &drw : NULL, db, dy, &c->x, &wr, c->g);
        if (!rc && g) rc = wmod_backward(ctx, wm, &c->w->value, &drw);
        sd_arena_reset(&ctx->scratch, mark);
        return rc ? sd_err_prefix(rc, "%s", c->w->key) : SD_OK;
    }
    if (dx || dw || db) rc = sd_op_conv2d_bwd(ctx, dx, dw, db, dy, &c->x, &c->w->value, c->g);
    if (!rc && c->lora) rc = sd_lora_backward(ctx, c->lora, dx, dy, &c->x);
    return rc ? sd_err_prefix(rc, "%s", c->w->key) : SD_OK;
}

sd_nn_plan sd_conv2d_plan(const sd_conv2d *c, const int64_t *x_shape)
{
    sd_nn_plan p = { 0, 0 };
    if (c->oft || c->lyco) p.scratch = wmod_plan_bytes((wmod){ c->oft, c->lyco });
    if (!c->lora) return p;
    int64_t ys[4];
    sd_conv2d_out_shape(c, x_shape, ys);
    int64_t n = ys[0] * ys[1] * ys[2] * ys[3];
    p.saved = sd_lora_saved_bytes(c->lora, n, x_shape[0]);
    p.scratch = sd_lora_scratch_bytes(c->lora, n, x_shape[0]);
    return p;
}

/* ---- group norm ----------------------------------------------------------------------------- */

int sd_groupnorm_init(sd_groupnorm *g, sd_params *r, const char *prefix, int64_t c, int groups,
                      float eps, sd_act act)
{
    memset(g, 0, sizeof *g);
    if (c < 1 || groups < 1 || c % groups)
        return sd_err(SD_EINVAL, "group norm '%s': %lld channels in %d groups", prefix, (long long)c, groups);
    if (act != SD_ACT_NONE && act != SD_ACT_SILU)
        return sd_err(SD_EINVAL, "group norm '%s': only SiLU can be fused", prefix);
    g->c = c;
    g->groups = groups;
    g->eps = eps;
    g->act = act;
    int rc = sd_params_add(r, prefix, "weight", 1, &c, SD_PARAM_TRAINABLE, &g->w);
    if (!rc) rc = sd_params_add(r, prefix, "bias", 1, &c, SD_PARAM_TRAINABLE, &g->b);
    return rc;
}

int sd_groupnorm_forward(sd_ctx *ctx, sd_groupnorm *g, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    int64_t st[2] = { x->ndim > 0 ? x->shape[0] : 1, g->groups };
    sd_tensor mean, rstd;
    int rc = nn_tensor(A, &mean, 2, st);
    if (!rc) rc = nn_tensor(A, &rstd, 2, st);
    if (!rc) rc = sd_op_group_norm(ctx, y, &mean, &rstd, x, &g->w->value, &g->b->value, g->groups, g->eps, g->act);
    sd_arena_reset(&ctx->scratch, mark);
    if (rc) return sd_err_prefix(rc, "%s", g->w->key);
    if (save) {
        g->x = *x;
        g->mean = mean;
        g->rstd = rstd;
    } else {
        g->x.data = NULL;
    }
    return SD_OK;
}

int sd_groupnorm_backward(sd_ctx *ctx, sd_groupnorm *g, sd_tensor *dx, const sd_tensor *dy)
{
    if (!g->x.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", g->w->key);
    sd_tensor *dw = grad_of(g->w), *db = grad_of(g->b);
    if (!dx && !dw && !db) return SD_OK;
    int rc = sd_op_group_norm_bwd(ctx, dx, dw, db, dy, &g->x, &g->mean, &g->rstd, &g->w->value,
                                  &g->b->value, g->groups, g->act);
    return rc ? sd_err_prefix(rc, "%s", g->w->key) : SD_OK;
}

sd_nn_plan sd_groupnorm_plan(const sd_groupnorm *g, int ndim, const int64_t *x_shape)
{
    sd_nn_plan p;
    p.saved = 2 * nn_bytes((ndim > 0 ? x_shape[0] : 1) * g->groups);
    p.scratch = p.saved;
    return p;
}

/* ---- layer norm ----------------------------------------------------------------------------- */

int sd_layernorm_init(sd_layernorm *n, sd_params *r, const char *prefix, int64_t c, float eps)
{
    memset(n, 0, sizeof *n);
    if (c < 1) return sd_err(SD_EINVAL, "layer norm '%s': bad size", prefix);
    n->c = c;
    n->eps = eps;
    int rc = sd_params_add(r, prefix, "weight", 1, &c, SD_PARAM_TRAINABLE, &n->w);
    if (!rc) rc = sd_params_add(r, prefix, "bias", 1, &c, SD_PARAM_TRAINABLE, &n->b);
    return rc;
}

int sd_layernorm_forward(sd_ctx *ctx, sd_layernorm *n, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    if (x->ndim < 1) return sd_err(SD_EINVAL, "%s: scalar input", n->w->key);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor mean, rstd;
    int rc = nn_tensor(A, &mean, x->ndim - 1, x->shape);
    if (!rc) rc = nn_tensor(A, &rstd, x->ndim - 1, x->shape);
    if (!rc) rc = sd_op_layer_norm(ctx, y, &mean, &rstd, x, &n->w->value, &n->b->value, n->eps);
    sd_arena_reset(&ctx->scratch, mark);
    if (rc) return sd_err_prefix(rc, "%s", n->w->key);
    if (save) {
        n->x = *x;
        n->mean = mean;
        n->rstd = rstd;
    } else {
        n->x.data = NULL;
    }
    return SD_OK;
}

int sd_layernorm_backward(sd_ctx *ctx, sd_layernorm *n, sd_tensor *dx, const sd_tensor *dy)
{
    if (!n->x.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", n->w->key);
    sd_tensor *dw = grad_of(n->w), *db = grad_of(n->b);
    if (!dx && !dw && !db) return SD_OK;
    int rc = sd_op_layer_norm_bwd(ctx, dx, dw, db, dy, &n->x, &n->mean, &n->rstd, &n->w->value);
    return rc ? sd_err_prefix(rc, "%s", n->w->key) : SD_OK;
}

sd_nn_plan sd_layernorm_plan(const sd_layernorm *n, int ndim, const int64_t *x_shape)
{
    (void)n;
    int64_t rows = 1;
    for (int d = 0; d + 1 < ndim; d++) rows *= x_shape[d];
    sd_nn_plan p;
    p.saved = 2 * nn_bytes(rows);
    p.scratch = p.saved;
    return p;
}

/* ---- embedding ------------------------------------------------------------------------------ */

int sd_embedding_init(sd_embedding *e, sd_params *r, const char *prefix, const char *name, int64_t vocab,
                      int64_t dim)
{
    memset(e, 0, sizeof *e);
    if (vocab < 1 || dim < 1) return sd_err(SD_EINVAL, "embedding '%s': bad size", prefix);
    e->vocab = vocab;
    e->dim = dim;
    const int64_t shape[2] = { vocab, dim };
    if (name && *name) return sd_params_add(r, prefix, name, 2, shape, SD_PARAM_TRAINABLE, &e->w);
    return sd_params_add(r, NULL, prefix, 2, shape, SD_PARAM_TRAINABLE, &e->w);
}

int sd_embedding_forward(sd_ctx *ctx, sd_embedding *e, sd_arena *save, sd_tensor *y, const sd_tensor *ids)
{
    int rc = sd_op_embedding(ctx, y, &e->w->value, ids);
    if (rc) return sd_err_prefix(rc, "%s", e->w->key);
    if (save) e->ids = *ids;
    else e->ids.data = NULL;
    return SD_OK;
}

int sd_embedding_backward(sd_ctx *ctx, sd_embedding *e, const sd_tensor *dy)
{
    if (!e->ids.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", e->w->key);
    sd_tensor *gw = sd_param_grad(e->w);
    if (!gw) return SD_OK;
    int rc = sd_op_embedding_bwd(ctx, gw, dy, &e->ids);
    return rc ? sd_err_prefix(rc, "%s", e->w->key) : SD_OK;
}

sd_nn_plan sd_embedding_plan(const sd_embedding *e, int ndim, const int64_t *ids_shape)
{
    (void)e; (void)ndim; (void)ids_shape;
    sd_nn_plan p = { 0, 0 };
    return p;
}

/* ---- downsample / upsample ------------------------------------------------------------------ */

int sd_downsample_init(sd_downsample *d, sd_params *r, const char *prefix, int64_t cin, int64_t cout)
{
    char key[512];
    snprintf(key, sizeof key, "%s%sop", prefix ? prefix : "", prefix && *prefix ? "." : "");
    return sd_conv2d_init(&d->op, r, key, cin, cout, 3, 3, sd_conv2d_geom_make(2, 1), SD_NN_BIAS);
}

int sd_downsample_forward(sd_ctx *ctx, sd_downsample *d, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    return sd_conv2d_forward(ctx, &d->op, save, y, x);
}

int sd_downsample_backward(sd_ctx *ctx, sd_downsample *d, sd_tensor *dx, const sd_tensor *dy)
{
    return sd_conv2d_backward(ctx, &d->op, dx, dy);
}

sd_nn_plan sd_downsample_plan(const sd_downsample *d, const int64_t *x_shape)
{
    return sd_conv2d_plan(&d->op, x_shape);
}

int sd_upsample_init(sd_upsample *u, sd_params *r, const char *prefix, int64_t cin, int64_t cout)
{
    memset(u, 0, sizeof *u);
    char key[512];
    snprintf(key, sizeof key, "%s%sconv", prefix ? prefix : "", prefix && *prefix ? "." : "");
    return sd_conv2d_init(&u->conv, r, key, cin, cout, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS);
}

int sd_upsample_forward(sd_ctx *ctx, sd_upsample *u, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    if (x->ndim != 4) return sd_err(SD_EINVAL, "%s: input must be [N,C,H,W]", u->conv.w->key);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor up;
    int rc = nn_tensor(save ? save : &ctx->scratch, &up, 4,
                       (int64_t[]){ x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3] });
    if (!rc) rc = sd_op_upsample_nearest(ctx, &up, x);
    if (!rc) rc = sd_conv2d_forward(ctx, &u->conv, save, y, &up);
    sd_arena_reset(&ctx->scratch, mark);
    if (rc) return rc;
    u->u = up;
    if (!save) u->u.data = NULL;
    return SD_OK;
}

int sd_upsample_backward(sd_ctx *ctx, sd_upsample *u, sd_tensor *dx, const sd_tensor *dy)
{
    if (!u->u.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", u->conv.w->key);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor du;
    int rc = SD_OK;
    if (dx) {
        rc = nn_zeros(ctx, &ctx->scratch, &du, 4, u->u.shape);
        if (!rc) rc = sd_conv2d_backward(ctx, &u->conv, &du, dy);
        if (!rc) rc = sd_op_upsample_nearest_bwd(ctx, dx, &du);
    } else {
        rc = sd_conv2d_backward(ctx, &u->conv, NULL, dy);
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

sd_nn_plan sd_upsample_plan(const sd_upsample *u, const int64_t *x_shape)
{
    int64_t us[4] = { x_shape[0], x_shape[1], 2 * x_shape[2], 2 * x_shape[3] };
    sd_nn_plan c = sd_conv2d_plan(&u->conv, us), p;
    size_t ub = nn_bytes(us[0] * us[1] * us[2] * us[3]);
    p.saved = ub + c.saved;
    /* inference: u and the conv's temporaries in scratch; backward: du + the conv's */
    p.scratch = ub + nn_max(c.saved + c.scratch, c.scratch);
    return p;
}
