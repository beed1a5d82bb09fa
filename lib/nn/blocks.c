/* Blocks: ldm ResBlock, BasicTransformerBlock, SpatialTransformer, with optional gradient
 * checkpointing (see nn.h).
 *
 * Each block has an impl forward that takes its saved tensors from `A` (the activation arena in
 * training, ctx->scratch in inference, or a region carved from ctx->scratch when a checkpointed
 * block recomputes its internals before the backward). The recomputation runs exactly the same
 * ops on the same inputs, so its saved tensors, and hence the gradients, are bit-identical. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"
#include "nn/nn_internal.h"

static void subkey(char *buf, size_t n, const char *prefix, const char *name)
{
    snprintf(buf, n, "%s%s%s", prefix ? prefix : "", prefix && *prefix ? "." : "", name);
}

static int64_t numel_of(int ndim, const int64_t *s)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= s[d];
    return n;
}

/* ---- ResBlock ------------------------------------------------------------------------------- */

int sd_resblock_init(sd_resblock *b, sd_params *r, const char *prefix, int64_t cin, int64_t cout,
                     int64_t emb_dim)
{
    memset(b, 0, sizeof *b);
    b->cin = cin;
    b->cout = cout;
    b->emb_dim = emb_dim;
    b->has_skip = cin != cout;
    char key[512];
    int rc;
    sd_conv2d_geom g3 = sd_conv2d_geom_make(1, 1);
    subkey(key, sizeof key, prefix, "in_layers.0");
    if ((rc = sd_groupnorm_init(&b->norm1, r, key, cin, 32, 1e-5f, SD_ACT_SILU))) return rc;
    subkey(key, sizeof key, prefix, "in_layers.2");
    if ((rc = sd_conv2d_init(&b->conv1, r, key, cin, cout, 3, 3, g3, SD_NN_BIAS))) return rc;
    subkey(key, sizeof key, prefix, "emb_layers.1");
    if ((rc = sd_linear_init(&b->emb, r, key, emb_dim, cout, SD_NN_BIAS))) return rc;
    subkey(key, sizeof key, prefix, "out_layers.0");
    if ((rc = sd_groupnorm_init(&b->norm2, r, key, cout, 32, 1e-5f, SD_ACT_SILU))) return rc;
    subkey(key, sizeof key, prefix, "out_layers.3");
    if ((rc = sd_conv2d_init(&b->conv2, r, key, cout, cout, 3, 3, g3, SD_NN_BIAS))) return rc;
    if (b->has_skip) {
        subkey(key, sizeof key, prefix, "skip_connection");
        rc = sd_conv2d_init(&b->skip, r, key, cin, cout, 1, 1, sd_conv2d_geom_make(1, 0), SD_NN_BIAS);
    }
    return rc;
}

static int resblock_impl(sd_ctx *ctx, sd_resblock *b, sd_arena *save, sd_tensor *y,
                         const sd_tensor *x, const sd_tensor *emb)
{
    if (x->ndim != 4 || x->shape[1] != b->cin || emb->ndim != 2 || emb->shape[1] != b->emb_dim ||
        emb->shape[0] != x->shape[0])
        return sd_err(SD_EINVAL, "%s: bad input shapes", b->conv1.w->key);
    int64_t N = x->shape[0], H = x->shape[2], W = x->shape[3];
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor a1, h2, a2, e, eo, s;
    int rc;
    NN_TRY(nn_tensor(A, &e, 2, emb->shape));
    NN_TRY(nn_tensor(A, &a1, 4, x->shape));
    NN_TRY(nn_tensor(A, &h2, 4, (int64_t[]){ N, b->cout, H, W }));
    NN_TRY(nn_tensor(A, &a2, 4, h2.shape));
    NN_TRY(nn_tensor(&ctx->scratch, &eo, 4, (int64_t[]){ N, b->cout, 1, 1 }));
    NN_TRY(sd_groupnorm_forward(ctx, &b->norm1, save, &a1, x));
    NN_TRY(sd_conv2d_forward(ctx, &b->conv1, save, &h2, &a1));
    NN_TRY(sd_op_act(ctx, SD_ACT_SILU, &e, emb));
    sd_tensor eo2;
    NN_TRY(sd_tensor_reshape(&eo, 2, (int64_t[]){ N, b->cout }, &eo2));
    NN_TRY(sd_linear_forward(ctx, &b->emb, save, &eo2, &e));
    NN_TRY(sd_op_add(ctx, &h2, &h2, &eo));
    NN_TRY(sd_groupnorm_forward(ctx, &b->norm2, save, &a2, &h2));
    NN_TRY(sd_conv2d_forward(ctx, &b->conv2, save, y, &a2));
    if (b->has_skip) {
        NN_TRY(nn_tensor(&ctx->scratch, &s, 4, y->shape));
        NN_TRY(sd_conv2d_forward(ctx, &b->skip, save, &s, x));
        NN_TRY(sd_op_add(ctx, y, y, &s));
    } else {
        NN_TRY(sd_op_add(ctx, y, y, x));
    }
    if (save) {
        b->x = *x;
        b->embx = *emb;
        b->e = e;
        b->a1 = a1;
        b->h2 = h2;
        b->a2 = a2;
    } else {
        b->a1.data = NULL;
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static sd_nn_plan resblock_plan(const sd_resblock *b, const int64_t *xs, int ignore_ck)
{
    int64_t N = xs[0], HW = xs[2] * xs[3];
    int64_t hs[4] = { N, b->cout, xs[2], xs[3] };
    sd_nn_plan g1 = sd_groupnorm_plan(&b->norm1, 4, xs), c1 = sd_conv2d_plan(&b->conv1, xs),
               el = sd_linear_plan(&b->emb, 2, (int64_t[]){ N, b->emb_dim }),
               g2 = sd_groupnorm_plan(&b->norm2, 4, hs), c2 = sd_conv2d_plan(&b->conv2, hs),
               sk = { 0, 0 }, p;
    if (b->has_skip) sk = sd_conv2d_plan(&b->skip, xs);
    size_t own = nn_bytes(N * b->emb_dim) + nn_bytes(N * b->cin * HW) + 2 * nn_bytes(N * b->cout * HW);
    size_t full = own + g1.saved + c1.saved + el.saved + g2.saved + c2.saved + sk.saved;
    size_t child = nn_max(nn_max(nn_max(g1.scratch, c1.scratch), nn_max(el.scratch, g2.scratch)),
                          nn_max(c2.scratch, sk.scratch));
    size_t big = nn_bytes(N * nn_max((size_t)b->cin, (size_t)b->cout) * HW);
    size_t fwd = full + nn_bytes(N * b->cout) + big + child;               /* inference */
    size_t bwd = 3 * big + nn_bytes(N * b->cout) + nn_bytes(N * b->emb_dim) + child;
    p.saved = (b->checkpoint && !ignore_ck) ? 0 : full;
    p.scratch = nn_max(fwd, bwd);
    if (b->checkpoint) p.scratch = nn_max(p.scratch, full + big + bwd);   /* recompute + backward */
    return p;
}

sd_nn_plan sd_resblock_plan(const sd_resblock *b, const int64_t *x_shape)
{
    return resblock_plan(b, x_shape, 0);
}

int sd_resblock_forward(sd_ctx *ctx, sd_resblock *b, sd_arena *save, sd_tensor *y,
                        const sd_tensor *x, const sd_tensor *emb)
{
    b->recompute = 0;
    if (save && b->checkpoint) {
        int rc = resblock_impl(ctx, b, NULL, y, x, emb);
        if (rc) return rc;
        b->x = *x;
        b->embx = *emb;
        b->recompute = 1;
        return SD_OK;
    }
    return resblock_impl(ctx, b, save, y, x, emb);
}

static int resblock_bwd(sd_ctx *ctx, sd_resblock *b, sd_tensor *dx, sd_tensor *demb, const sd_tensor *dy)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int64_t N = b->x.shape[0];
    sd_tensor da2, dh2, deo, de, da1;
    int rc;
    if (b->has_skip) {
        NN_TRY(sd_conv2d_backward(ctx, &b->skip, dx, dy));
    } else if (dx) {
        NN_TRY(sd_op_axpby(ctx, dx, 1.0f, dy, 1.0f));
    }
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &da2, 4, b->a2.shape));
    NN_TRY(sd_conv2d_backward(ctx, &b->conv2, &da2, dy));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dh2, 4, b->h2.shape));
    NN_TRY(sd_groupnorm_backward(ctx, &b->norm2, &dh2, &da2));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &deo, 4, (int64_t[]){ N, b->cout, 1, 1 }));
    NN_TRY(sd_op_sum_to(ctx, &deo, 1.0f, &dh2));
    sd_tensor deo2;
    NN_TRY(sd_tensor_reshape(&deo, 2, (int64_t[]){ N, b->cout }, &deo2));
    if (demb) {
        NN_TRY(nn_zeros(ctx, &ctx->scratch, &de, 2, b->e.shape));
        NN_TRY(sd_linear_backward(ctx, &b->emb, &de, &deo2));
        NN_TRY(sd_op_act_bwd(ctx, SD_ACT_SILU, demb, &de, &b->embx));
    } else {
        NN_TRY(sd_linear_backward(ctx, &b->emb, NULL, &deo2));
    }
    if (!dx && !nn_has_grad(b->norm1.w) && !nn_has_grad(b->norm1.b)) {
        /* nothing below conv1 needs a gradient (e.g. the first block of a LoRA run) */
        NN_TRY(sd_conv2d_backward(ctx, &b->conv1, NULL, &dh2));
        goto out;
    }
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &da1, 4, b->a1.shape));
    NN_TRY(sd_conv2d_backward(ctx, &b->conv1, &da1, &dh2));
    NN_TRY(sd_groupnorm_backward(ctx, &b->norm1, dx, &da1));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_resblock_backward(sd_ctx *ctx, sd_resblock *b, sd_tensor *dx, sd_tensor *demb, const sd_tensor *dy)
{
    if (!b->recompute) {
        if (!b->a1.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", b->conv1.w->key);
        return resblock_bwd(ctx, b, dx, demb, dy);
    }
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_nn_plan p = resblock_plan(b, b->x.shape, 1);
    sd_arena sub;
    sd_tensor y;
    sd_tensor x = b->x, emb = b->embx;
    int rc;
    NN_TRY(nn_carve(ctx, &sub, p.saved));
    NN_TRY(nn_tensor(&ctx->scratch, &y, 4, dy->shape));
    NN_TRY(resblock_impl(ctx, b, &sub, &y, &x, &emb));
    NN_TRY(resblock_bwd(ctx, b, dx, demb, dy));
out:
    sd_arena_reset(&ctx->scratch, mark);
    b->a1.data = NULL;
    return rc;
}

/* ---- BasicTransformerBlock ------------------------------------------------------------------ */

int sd_transformer_block_init(sd_transformer_block *t, sd_params *r, const char *prefix, int64_t dim,
                              int heads, int64_t dim_head, int64_t context_dim)
{
    memset(t, 0, sizeof *t);
    t->dim = dim;
    char key[512];
    int rc;
    subkey(key, sizeof key, prefix, "attn1");
    if ((rc = sd_attention_init(&t->attn1, r, key, dim, 0, heads, dim_head, SD_ATTN_LDM))) return rc;
    subkey(key, sizeof key, prefix, "ff");
    if ((rc = sd_ff_init(&t->ff, r, key, dim, 4 * dim, SD_FF_GEGLU))) return rc;
    subkey(key, sizeof key, prefix, "attn2");
    if ((rc = sd_attention_init(&t->attn2, r, key, dim, context_dim, heads, dim_head, SD_ATTN_LDM))) return rc;
    subkey(key, sizeof key, prefix, "norm1");
    if ((rc = sd_layernorm_init(&t->norm1, r, key, dim, 1e-5f))) return rc;
    subkey(key, sizeof key, prefix, "norm2");
    if ((rc = sd_layernorm_init(&t->norm2, r, key, dim, 1e-5f))) return rc;
    subkey(key, sizeof key, prefix, "norm3");
    return sd_layernorm_init(&t->norm3, r, key, dim, 1e-5f);
}

static int tblock_impl(sd_ctx *ctx, sd_transformer_block *t, sd_arena *save, sd_tensor *y,
                       const sd_tensor *x, const sd_tensor *context)
{
    if (x->ndim != 3 || x->shape[2] != t->dim) return sd_err(SD_EINVAL, "%s: bad input shape", t->norm1.w->key);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor n1, h1, n2, h2, n3;
    int rc;
    NN_TRY(nn_tensor(A, &n1, 3, x->shape));
    NN_TRY(nn_tensor(A, &h1, 3, x->shape));
    NN_TRY(nn_tensor(A, &n2, 3, x->shape));
    NN_TRY(nn_tensor(A, &h2, 3, x->shape));
    NN_TRY(nn_tensor(A, &n3, 3, x->shape));
    NN_TRY(sd_layernorm_forward(ctx, &t->norm1, save, &n1, x));
    NN_TRY(sd_attention_forward(ctx, &t->attn1, save, &h1, &n1, NULL));
    NN_TRY(sd_op_add(ctx, &h1, &h1, x));
    NN_TRY(sd_layernorm_forward(ctx, &t->norm2, save, &n2, &h1));
    NN_TRY(sd_attention_forward(ctx, &t->attn2, save, &h2, &n2, context));
    NN_TRY(sd_op_add(ctx, &h2, &h2, &h1));
    NN_TRY(sd_layernorm_forward(ctx, &t->norm3, save, &n3, &h2));
    NN_TRY(sd_ff_forward(ctx, &t->ff, save, y, &n3));
    NN_TRY(sd_op_add(ctx, y, y, &h2));
    if (save) {
        t->x = *x;
        if (context) t->context = *context;
        else t->context.data = NULL;
        t->n1 = n1;
        t->h1 = h1;
        t->n2 = n2;
        t->h2 = h2;
        t->n3 = n3;
    } else {
        t->n1.data = NULL;
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static sd_nn_plan tblock_plan(const sd_transformer_block *t, const int64_t *xs, const int64_t *cs, int ignore_ck)
{
    size_t big = nn_bytes(numel_of(3, xs));
    sd_nn_plan l1 = sd_layernorm_plan(&t->norm1, 3, xs), a1 = sd_attention_plan(&t->attn1, xs, NULL),
               a2 = sd_attention_plan(&t->attn2, xs, t->attn2.context_dim ? cs : NULL),
               ff = sd_ff_plan(&t->ff, 3, xs), p;
    size_t full = 5 * big + 3 * l1.saved + a1.saved + a2.saved + ff.saved;
    size_t child = nn_max(nn_max(a1.scratch, a2.scratch), nn_max(ff.scratch, l1.scratch));
    size_t bwd = 2 * big + child;
    p.saved = (t->checkpoint && !ignore_ck) ? 0 : full;
    p.scratch = nn_max(full + child, bwd);
    if (t->checkpoint) p.scratch = nn_max(p.scratch, full + big + bwd);
    return p;
}

sd_nn_plan sd_transformer_block_plan(const sd_transformer_block *t, const int64_t *x_shape,
                                     const int64_t *context_shape)
{
    return tblock_plan(t, x_shape, context_shape, 0);
}

int sd_transformer_block_forward(sd_ctx *ctx, sd_transformer_block *t, sd_arena *save, sd_tensor *y,
                                 const sd_tensor *x, const sd_tensor *context)
{
    t->recompute = 0;
    if (save && t->checkpoint) {
        int rc = tblock_impl(ctx, t, NULL, y, x, context);
        if (rc) return rc;
        t->x = *x;
        if (context) t->context = *context;
        else t->context.data = NULL;
        t->recompute = 1;
        return SD_OK;
    }
    return tblock_impl(ctx, t, save, y, x, context);
}

static int tblock_bwd(sd_ctx *ctx, sd_transformer_block *t, sd_tensor *dx, sd_tensor *dcontext,
                      const sd_tensor *dy)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor dh, dn;
    int rc;
    NN_TRY(nn_tensor(&ctx->scratch, &dh, 3, t->x.shape));
    NN_TRY(sd_op_axpby(ctx, &dh, 1.0f, dy, 0.0f));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dn, 3, t->x.shape));
    NN_TRY(sd_ff_backward(ctx, &t->ff, &dn, dy));
    NN_TRY(sd_layernorm_backward(ctx, &t->norm3, &dh, &dn));          /* dh = d h2 */
    NN_TRY(sd_op_fill(ctx, &dn, 0.0f));
    NN_TRY(sd_attention_backward(ctx, &t->attn2, &dn, dcontext, &dh));
    NN_TRY(sd_layernorm_backward(ctx, &t->norm2, &dh, &dn));          /* dh = d h1 */
    NN_TRY(sd_op_fill(ctx, &dn, 0.0f));
    NN_TRY(sd_attention_backward(ctx, &t->attn1, &dn, NULL, &dh));
    NN_TRY(sd_layernorm_backward(ctx, &t->norm1, &dh, &dn));          /* dh = d x */
    if (dx) NN_TRY(sd_op_axpby(ctx, dx, 1.0f, &dh, 1.0f));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_transformer_block_backward(sd_ctx *ctx, sd_transformer_block *t, sd_tensor *dx,
                                  sd_tensor *dcontext, const sd_tensor *dy)
{
    if (!t->recompute) {
        if (!t->n1.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", t->norm1.w->key);
        return tblock_bwd(ctx, t, dx, dcontext, dy);
    }
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor x = t->x, c = t->context, y;
    const sd_tensor *cp = c.data ? &c : NULL;
    sd_nn_plan p = tblock_plan(t, x.shape, cp ? c.shape : NULL, 1);
    sd_arena sub;
    int rc;
    NN_TRY(nn_carve(ctx, &sub, p.saved));
    NN_TRY(nn_tensor(&ctx->scratch, &y, 3, x.shape));
    NN_TRY(tblock_impl(ctx, t, &sub, &y, &x, cp));
    NN_TRY(tblock_bwd(ctx, t, dx, dcontext, dy));
out:
    sd_arena_reset(&ctx->scratch, mark);
    t->n1.data = NULL;
    return rc;
}

/* ---- SpatialTransformer --------------------------------------------------------------------- */

int sd_spatial_transformer_init(sd_spatial_transformer *s, sd_params *r, const char *prefix, int64_t c,
                                int heads, int64_t dim_head, int depth, int64_t context_dim,
                                int linear_proj)
{
    memset(s, 0, sizeof *s);
    if (depth < 1) return sd_err(SD_EINVAL, "spatial transformer '%s': depth %d", prefix, depth);
    s->c = c;
    s->inner = heads * dim_head;
    s->depth = depth;
    s->linear_proj = linear_proj;
    s->blocks = calloc((size_t)depth, sizeof *s->blocks);
    s->t = calloc((size_t)depth + 1, sizeof *s->t);
    if (!s->blocks || !s->t) {
        sd_spatial_transformer_free(s);
        return sd_err(SD_ENOMEM, "spatial transformer: out of memory");
    }
    char key[512];
    int rc;
    unsigned pf = SD_NN_BIAS | (linear_proj ? 0 : SD_NN_CONV1X1);
    subkey(key, sizeof key, prefix, "norm");
    if ((rc = sd_groupnorm_init(&s->norm, r, key, c, 32, 1e-6f, SD_ACT_NONE))) return rc;
    subkey(key, sizeof key, prefix, "proj_in");
    if ((rc = sd_linear_init(&s->proj_in, r, key, c, s->inner, pf))) return rc;
    for (int i = 0; i < depth; i++) {
        char name[64];
        snprintf(name, sizeof name, "transformer_blocks.%d", i);
        subkey(key, sizeof key, prefix, name);
        if ((rc = sd_transformer_block_init(&s->blocks[i], r, key, s->inner, heads, dim_head, context_dim)))
            return rc;
    }
    subkey(key, sizeof key, prefix, "proj_out");
    return sd_linear_init(&s->proj_out, r, key, s->inner, c, pf);
}

void sd_spatial_transformer_free(sd_spatial_transformer *s)
{
    if (!s) return;
    free(s->blocks);
    free(s->t);
    s->blocks = NULL;
    s->t = NULL;
}

static const int perm021[3] = { 0, 2, 1 };

static int st_impl(sd_ctx *ctx, sd_spatial_transformer *s, sd_arena *save, sd_tensor *y,
                   const sd_tensor *x, const sd_tensor *context)
{
    if (x->ndim != 4 || x->shape[1] != s->c) return sd_err(SD_EINVAL, "%s: bad input shape", s->norm.w->key);
    int64_t B = x->shape[0], C = s->c, T = x->shape[2] * x->shape[3];
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor p, a, a3, u, y3;
    int rc;
    NN_TRY(nn_tensor(A, &p, 3, (int64_t[]){ B, T, C }));
    for (int i = 0; i <= s->depth; i++) NN_TRY(nn_tensor(A, &s->t[i], 3, (int64_t[]){ B, T, s->inner }));
    size_t m2 = sd_arena_mark(&ctx->scratch);
    NN_TRY(nn_tensor(&ctx->scratch, &a, 4, x->shape));
    NN_TRY(sd_groupnorm_forward(ctx, &s->norm, save, &a, x));
    NN_TRY(sd_tensor_reshape(&a, 3, (int64_t[]){ B, C, T }, &a3));
    NN_TRY(sd_op_permute(ctx, &p, &a3, perm021));
    sd_arena_reset(&ctx->scratch, m2);
    NN_TRY(sd_linear_forward(ctx, &s->proj_in, save, &s->t[0], &p));
    for (int i = 0; i < s->depth; i++)
        NN_TRY(sd_transformer_block_forward(ctx, &s->blocks[i], save, &s->t[i + 1], &s->t[i], context));
    NN_TRY(nn_tensor(&ctx->scratch, &u, 3, (int64_t[]){ B, T, C }));
    NN_TRY(sd_linear_forward(ctx, &s->proj_out, save, &u, &s->t[s->depth]));
    NN_TRY(sd_tensor_reshape(y, 3, (int64_t[]){ B, C, T }, &y3));
    NN_TRY(sd_op_permute(ctx, &y3, &u, perm021));
    NN_TRY(sd_op_add(ctx, y, y, x));
    if (save) {
        s->x = *x;
        if (context) s->context = *context;
        else s->context.data = NULL;
        s->p = p;
    } else {
        s->p.data = NULL;
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static sd_nn_plan st_plan(const sd_spatial_transformer *s, const int64_t *xs, const int64_t *cs, int ignore_ck)
{
    int64_t B = xs[0], T = xs[2] * xs[3];
    int64_t ps[3] = { B, T, s->c }, ts[3] = { B, T, s->inner };
    size_t pc = nn_bytes(B * T * s->c), pt = nn_bytes(B * T * s->inner);
    sd_nn_plan gn = sd_groupnorm_plan(&s->norm, 4, xs), pi = sd_linear_plan(&s->proj_in, 3, ps),
               po = sd_linear_plan(&s->proj_out, 3, ts), p;
    size_t full = pc + (size_t)(s->depth + 1) * pt + gn.saved + pi.saved + po.saved;
    size_t child = nn_max(nn_max(gn.scratch, pi.scratch), po.scratch);
    for (int i = 0; i < s->depth; i++) {
        sd_nn_plan b = sd_transformer_block_plan(&s->blocks[i], ts, cs);
        full += b.saved;
        child = nn_max(child, b.scratch);
    }
    size_t fwd = full + pc + child;
    size_t bwd = 3 * pc + 2 * pt + child;
    p.saved = (s->checkpoint && !ignore_ck) ? 0 : full;
    p.scratch = nn_max(fwd, bwd);
    if (s->checkpoint) p.scratch = nn_max(p.scratch, full + pc + bwd);
    return p;
}

sd_nn_plan sd_spatial_transformer_plan(const sd_spatial_transformer *s, const int64_t *x_shape,
                                       const int64_t *context_shape)
{
    return st_plan(s, x_shape, context_shape, 0);
}

int sd_spatial_transformer_forward(sd_ctx *ctx, sd_spatial_transformer *s, sd_arena *save, sd_tensor *y,
                                   const sd_tensor *x, const sd_tensor *context)
{
    s->recompute = 0;
    if (save && s->checkpoint) {
        int rc = st_impl(ctx, s, NULL, y, x, context);
        if (rc) return rc;
        s->x = *x;
        if (context) s->context = *context;
        else s->context.data = NULL;
        s->recompute = 1;
        return SD_OK;
    }
    return st_impl(ctx, s, save, y, x, context);
}

static int st_bwd(sd_ctx *ctx, sd_spatial_transformer *s, sd_tensor *dx, sd_tensor *dcontext, const sd_tensor *dy)
{
    int64_t B = s->x.shape[0], C = s->c, T = s->x.shape[2] * s->x.shape[3];
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor du, dta, dtb, dp, da, dy3, da4;
    int rc;
    if (dx) NN_TRY(sd_op_axpby(ctx, dx, 1.0f, dy, 1.0f));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &du, 3, (int64_t[]){ B, T, C }));
    NN_TRY(sd_tensor_reshape(dy, 3, (int64_t[]){ B, C, T }, &dy3));
    NN_TRY(sd_op_permute_bwd(ctx, &du, &dy3, perm021));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dta, 3, (int64_t[]){ B, T, s->inner }));
    NN_TRY(nn_tensor(&ctx->scratch, &dtb, 3, (int64_t[]){ B, T, s->inner }));
    NN_TRY(sd_linear_backward(ctx, &s->proj_out, &dta, &du));
    for (int i = s->depth - 1; i >= 0; i--) {
        NN_TRY(sd_op_fill(ctx, &dtb, 0.0f));
        NN_TRY(sd_transformer_block_backward(ctx, &s->blocks[i], &dtb, dcontext, &dta));
        sd_tensor tmp = dta;
        dta = dtb;
        dtb = tmp;
    }
    if (!dx && !nn_has_grad(s->norm.w) && !nn_has_grad(s->norm.b)) {
        NN_TRY(sd_linear_backward(ctx, &s->proj_in, NULL, &dta));
        goto out;
    }
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &dp, 3, (int64_t[]){ B, T, C }));
    NN_TRY(sd_linear_backward(ctx, &s->proj_in, &dp, &dta));
    NN_TRY(nn_zeros(ctx, &ctx->scratch, &da, 3, (int64_t[]){ B, C, T }));
    NN_TRY(sd_op_permute_bwd(ctx, &da, &dp, perm021));
    NN_TRY(sd_tensor_reshape(&da, 4, s->x.shape, &da4));
    NN_TRY(sd_groupnorm_backward(ctx, &s->norm, dx, &da4));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_spatial_transformer_backward(sd_ctx *ctx, sd_spatial_transformer *s, sd_tensor *dx,
                                    sd_tensor *dcontext, const sd_tensor *dy)
{
    if (!s->recompute) {
        if (!s->p.data) return sd_err(SD_ESTATE, "%s: backward without a training forward", s->norm.w->key);
        return st_bwd(ctx, s, dx, dcontext, dy);
    }
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor x = s->x, c = s->context, y;
    const sd_tensor *cp = c.data ? &c : NULL;
    sd_nn_plan p = st_plan(s, x.shape, cp ? c.shape : NULL, 1);
    sd_arena sub;
    int rc;
    NN_TRY(nn_carve(ctx, &sub, p.saved));
    NN_TRY(nn_tensor(&ctx->scratch, &y, 4, x.shape));
    NN_TRY(st_impl(ctx, s, &sub, &y, &x, cp));
    NN_TRY(st_bwd(ctx, s, dx, dcontext, dy));
out:
    sd_arena_reset(&ctx->scratch, mark);
    s->p.data = NULL;
    return rc;
}
