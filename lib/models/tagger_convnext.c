/* WD tagger: timm ConvNeXt build and forward (see tagger_convnext.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "models/tagger.h"
#include "models/tagger_convnext.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

static int has(const sd_safetensors *st, const char *k) { return sd_safetensors_find(st, k) != NULL; }

static int shape_of(const sd_safetensors *st, const char *name, int ndim, const sd_st_tensor **t)
{
    return sd_safetensors_get_dims(st, name, ndim, "timm ConvNeXt tagger", t);
}

void sd_tagger_convnext_free(sd_tagger_convnext *c)
{
    for (int s = 0; s < SD_CONVNEXT_MAX_STAGES; s++) free(c->stages[s].blocks);
    memset(c, 0, sizeof *c);
}

int sd_tagger_convnext_build(sd_tagger_convnext *c, sd_params *r, const sd_safetensors *st)
{
    memset(c, 0, sizeof *c);
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *t;
    char key[160], p[128];
    int rc;
    long v;
    int64_t d0;
    TRY(shape_of(st, "stem.0.weight", 4, &t));
    TRY(sd_tagger_patch_dims(st, t, &d0, &c->patch));
    TRY(sd_tagger_meta_int(st, "img_size", 1, 8192, 448, &v));
    c->size = v;
    TRY(sd_tagger_meta_act(st, &c->act));
    if (c->size < c->patch)
        TRY(sd_err(SD_EFORMAT, "%s: input size %lld is smaller than the stem's patch %lld", path, (long long)c->size,
                   (long long)c->patch));
    c->stem_h = c->size / c->patch;
    TRY(sd_tagger_count_stages(st, "stages", "blocks.0.conv_dw.weight", "no ConvNeXt stages", SD_CONVNEXT_MAX_STAGES,
                               &c->nstages));
    TRY(sd_conv2d_init(&c->stem, r, "stem.0", 3, d0, (int)c->patch, (int)c->patch,
                       sd_conv2d_geom_make((int)c->patch, 0), SD_NN_BIAS));
    TRY(sd_layernorm_init(&c->stem_norm, r, "stem.1", d0, 1e-6f));
    int64_t prev = d0, h = c->stem_h;
    for (int s = 0; s < c->nstages; s++) {
        sd_convnext_stage *g = &c->stages[s];
        snprintf(key, sizeof key, "stages.%d.blocks.0.conv_dw.weight", s);
        TRY(shape_of(st, key, 4, &t));
        g->dim = t->shape[0];
        g->kernel = t->shape[2];
        if (t->shape[1] != 1 || t->shape[3] != g->kernel || g->kernel % 2 == 0)
            TRY(sd_err(SD_EFORMAT, "%s: %s must be [C,1,k,k] with k odd", path, key));
        snprintf(key, sizeof key, "stages.%d.blocks.0.mlp.fc1.weight", s);
        TRY(shape_of(st, key, 2, &t));
        g->mlp = t->shape[0];
        for (g->depth = 0; g->depth < 1000; g->depth++) {
            snprintf(key, sizeof key, "stages.%d.blocks.%d.conv_dw.weight", s, (int)g->depth);
            if (!has(st, key)) break;
        }
        snprintf(key, sizeof key, "stages.%d.downsample.1.weight", s);
        g->has_down = has(st, key);
        if (g->has_down) {
            TRY(shape_of(st, key, 4, &t));
            int64_t k = t->shape[2];
            if (t->shape[0] != g->dim || t->shape[1] != prev || t->shape[3] != k)
                TRY(sd_err(SD_EFORMAT, "%s: %s must be [%lld,%lld,k,k]", path, key, (long long)g->dim, (long long)prev));
            if (h < k)
                TRY(sd_err(SD_EFORMAT, "%s: input size %lld is too small for stage %d (%lldx%lld before its "
                                       "downsample)", path, (long long)c->size, s, (long long)h, (long long)h));
            snprintf(p, sizeof p, "stages.%d.downsample.0", s);
            TRY(sd_layernorm_init(&g->down_norm, r, p, prev, 1e-6f));
            snprintf(p, sizeof p, "stages.%d.downsample.1", s);
            TRY(sd_conv2d_init(&g->down, r, p, prev, g->dim, (int)k, (int)k, sd_conv2d_geom_make((int)k, 0),
                               SD_NN_BIAS));
            h = (h - k) / k + 1;
        } else if (prev != g->dim) {
            TRY(sd_err(SD_EFORMAT, "%s: stage %d changes the width from %lld to %lld without a downsample", path, s,
                       (long long)prev, (long long)g->dim));
        }
        g->h = h;
        snprintf(key, sizeof key, "stages.%d.blocks.0.gamma", s);
        const int gamma = has(st, key);
        g->blocks = calloc((size_t)g->depth, sizeof *g->blocks);
        if (!g->blocks) TRY(sd_err(SD_ENOMEM, "out of memory"));
        for (int b = 0; b < g->depth; b++) {
            sd_convnext_block *bl = &g->blocks[b];
#define K(x) (snprintf(p, sizeof p, "stages.%d.blocks.%d." x, s, b), p)
            TRY(sd_params_add(r, K("conv_dw"), "weight", 4, (int64_t[]){ g->dim, 1, g->kernel, g->kernel },
                              SD_PARAM_HALF_OK, &bl->dw_w));
            TRY(sd_params_add(r, K("conv_dw"), "bias", 1, (int64_t[]){ g->dim }, 0, &bl->dw_b));
            TRY(sd_layernorm_init(&bl->norm, r, K("norm"), g->dim, 1e-6f));
            TRY(sd_linear_init(&bl->fc1, r, K("mlp.fc1"), g->dim, g->mlp, SD_NN_BIAS));
            TRY(sd_linear_init(&bl->fc2, r, K("mlp.fc2"), g->mlp, g->dim, SD_NN_BIAS));
#undef K
            snprintf(p, sizeof p, "stages.%d.blocks.%d", s, b);
            if (gamma) TRY(sd_params_add(r, p, "gamma", 1, (int64_t[]){ g->dim }, 0, &bl->gamma));
        }
        prev = g->dim;
    }
    TRY(shape_of(st, "head.fc.weight", 2, &t));
    c->classes = t->shape[0];
    if (t->shape[1] != prev)
        TRY(sd_err(SD_EFORMAT, "%s: head.fc.weight is [%lld,%lld], expected [classes,%lld]%s", path,
                   (long long)t->shape[0], (long long)t->shape[1], (long long)prev,
                   has(st, "head.pre_logits.fc.weight") ? " (a head with a hidden MLP is not supported)" : ""));
    TRY(sd_layernorm_init(&c->head_norm, r, "head.norm", prev, 1e-6f));
    TRY(sd_linear_init(&c->head, r, "head.fc", prev, c->classes, SD_NN_BIAS));
out:
    if (rc) sd_tagger_convnext_free(c);
    return rc;
}

int sd_tagger_convnext_open(sd_tagger *m, const sd_safetensors *st, sd_devkind dev)
{
    int rc;
    m->arch = SD_TAGGER_ARCH_CONVNEXT;
    m->cnx = calloc(1, sizeof *m->cnx);
    if (!m->cnx) TRY(sd_err(SD_ENOMEM, "out of memory"));
    TRY(sd_tagger_convnext_build(m->cnx, &m->r, st));
    m->size = m->cnx->size;
    m->classes = m->cnx->classes;
    TRY(sd_params_set_trainable(&m->r, "", 0) < 0 ? SD_ESTATE : SD_OK);
    TRY(sd_params_alloc(&m->r, SD_DEV_CPU));
    TRY(sd_params_load_safetensors(&m->r, st, NULL, 0, 0, NULL));
    if (dev != SD_DEV_CPU) TRY(sd_params_move(&m->r, dev));
out:
    if (rc) sd_tagger_free(m);
    return rc;
}

/* ---- forward -------------------------------------------------------------------------------- */

/* Elements of the largest stage tensor [C,H,W] and MLP hidden [H·W, mlp] of one image. */
static void maxima(const sd_tagger_convnext *c, int64_t *act, int64_t *hid, int64_t *pix)
{
    int64_t d0 = c->stem.cout, hw0 = c->stem_h * c->stem_h;
    *act = d0 * hw0;
    *hid = 0;
    *pix = hw0;
    for (int s = 0; s < c->nstages; s++) {
        const sd_convnext_stage *g = &c->stages[s];
        int64_t hw = g->h * g->h;
        if (g->dim * hw > *act) *act = g->dim * hw;
        if (g->mlp * hw > *hid) *hid = g->mlp * hw;
        if (hw > *pix) *pix = hw;
    }
}

size_t sd_tagger_convnext_scratch_per_image(const sd_tagger_convnext *c)
{
    int64_t act, hid, pix;
    maxima(c, &act, &hid, &pix);
    /* the 4 stage tensors, the MLP hidden, LayerNorm mean/rstd, the pooled row, and the largest
     * im2col matrix of the stem's and downsamples' convolutions (CUDA: one image's at least) */
    int64_t col = 3 * c->patch * c->patch * c->stem_h * c->stem_h, prev = c->stem.cout;
    for (int s = 0; s < c->nstages; s++) {
        const sd_convnext_stage *g = &c->stages[s];
        if (g->has_down && prev * g->down.kh * g->down.kw * g->h * g->h > col)
            col = prev * g->down.kh * g->down.kw * g->h * g->h;
        prev = g->dim;
    }
    return (size_t)(4 * act + hid + 2 * pix + 2 * prev + col) * sizeof(float) + 64 * 16;
}

static int tens(sd_ctx *ctx, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "ConvNeXt tagger activations") : SD_OK;
}

/* A [shape] view of the start of the flat buffer `buf`. */
static int view(const sd_tensor *buf, int ndim, const int64_t *shape, sd_tensor *out)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    sd_tensor t;
    int rc = sd_tensor_narrow0(buf, 0, n, &t);
    return rc ? rc : sd_tensor_reshape(&t, ndim, shape, out);
}

/* LayerNorm2d: y [N,C,H,W] = permute back(LN over C(permute(x) [N,H,W,C])), via tmp and tmp2. */
static int layernorm2d(sd_ctx *ctx, sd_layernorm *ln, sd_tensor *y, const sd_tensor *x, const sd_tensor *tmp,
                       const sd_tensor *tmp2)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    sd_tensor a, b;
    int rc = view(tmp, 4, (int64_t[]){ N, H, W, C }, &a);
    if (!rc) rc = view(tmp2, 4, (int64_t[]){ N, H, W, C }, &b);
    if (!rc) rc = sd_op_permute(ctx, &a, x, (const int[]){ 0, 2, 3, 1 });
    if (!rc) rc = sd_layernorm_forward(ctx, ln, NULL, &b, &a);
    if (!rc) rc = sd_op_permute(ctx, y, &b, (const int[]){ 0, 3, 1, 2 });
    return rc;
}

int sd_tagger_convnext_forward(sd_ctx *ctx, sd_tagger_convnext *c, sd_tensor *logits, const sd_tensor *x)
{
    const int64_t S = c->size;
    if (x->ndim != 4 || x->shape[1] != 3 || x->shape[2] != S || x->shape[3] != S || x->dtype != SD_F32)
        return sd_err(SD_EINVAL, "ConvNeXt tagger: input must be f32 [N,3,%lld,%lld]", (long long)S, (long long)S);
    const int64_t N = x->shape[0];
    if (logits->ndim != 2 || logits->shape[0] != N || logits->shape[1] != c->classes || logits->dtype != SD_F32)
        return sd_err(SD_EINVAL, "ConvNeXt tagger: logits must be f32 [%lld,%lld]", (long long)N,
                      (long long)c->classes);
    int64_t act, hid, pix;
    maxima(c, &act, &hid, &pix);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor B[4], H, cur, nxt, tv, uv, hv, ones, pooled, pn, y3;
    int rc;
    for (int i = 0; i < 4; i++) TRY(tens(ctx, &B[i], 1, (int64_t[]){ N * act }));
    TRY(tens(ctx, &H, 1, (int64_t[]){ N * hid }));
    /* stem: conv, LayerNorm2d; the stream lives in B[0]/B[1] (NCHW) */
    int64_t C = c->stem.cout, h = c->stem_h;
    int xi = 0;
    TRY(view(&B[1], 4, (int64_t[]){ N, C, h, h }, &tv));
    TRY(sd_conv2d_forward(ctx, &c->stem, NULL, &tv, x));
    TRY(view(&B[0], 4, (int64_t[]){ N, C, h, h }, &cur));
    TRY(layernorm2d(ctx, &c->stem_norm, &cur, &tv, &B[2], &B[3]));
    for (int s = 0; s < c->nstages; s++) {
        sd_convnext_stage *g = &c->stages[s];
        if (g->has_down) {
            TRY(view(&B[1 - xi], 4, cur.shape, &tv));
            TRY(layernorm2d(ctx, &g->down_norm, &tv, &cur, &B[2], &B[3]));
            C = g->dim;
            h = g->h;
            TRY(view(&B[xi], 4, (int64_t[]){ N, C, h, h }, &nxt));
            TRY(sd_conv2d_forward(ctx, &g->down, NULL, &nxt, &tv));
            cur = nxt;
        }
        const int64_t P = N * h * h;
        const sd_conv2d_geom dg = sd_conv2d_geom_make(1, (int)(g->kernel / 2));
        for (int b = 0; b < g->depth; b++) {
            sd_convnext_block *bl = &g->blocks[b];
            /* t = conv_dw(x) NCHW; u = permute to [N,H,W,C]; t = norm(u); hidden = act(fc1(t)); u = fc2 */
            TRY(view(&B[1 - xi], 4, (int64_t[]){ N, C, h, h }, &tv));
            TRY(sd_op_conv2d_dw(ctx, &tv, &cur, &bl->dw_w->value, &bl->dw_b->value, dg));
            TRY(view(&B[2], 4, (int64_t[]){ N, h, h, C }, &uv));
            TRY(sd_op_permute(ctx, &uv, &tv, (const int[]){ 0, 2, 3, 1 }));
            TRY(view(&B[3], 2, (int64_t[]){ P, C }, &tv));
            TRY(sd_tensor_reshape(&uv, 2, (int64_t[]){ P, C }, &uv));
            TRY(sd_layernorm_forward(ctx, &bl->norm, NULL, &tv, &uv));
            TRY(view(&H, 2, (int64_t[]){ P, g->mlp }, &hv));
            TRY(sd_linear_forward(ctx, &bl->fc1, NULL, &hv, &tv));
            TRY(sd_op_act(ctx, c->act, &hv, &hv));
            TRY(sd_linear_forward(ctx, &bl->fc2, NULL, &uv, &hv));
            if (bl->gamma) TRY(sd_op_mul(ctx, &uv, &uv, &bl->gamma->value));
            TRY(sd_tensor_reshape(&uv, 4, (int64_t[]){ N, h, h, C }, &uv));
            TRY(view(&B[1 - xi], 4, (int64_t[]){ N, C, h, h }, &tv));
            TRY(sd_op_permute(ctx, &tv, &uv, (const int[]){ 0, 3, 1, 2 }));
            TRY(sd_op_add(ctx, &cur, &cur, &tv));
        }
    }
    /* head: mean over the pixels ([N,C,HW] · ones [HW,1] / HW), LayerNorm, fc */
    TRY(tens(ctx, &ones, 2, (int64_t[]){ h * h, 1 }));
    TRY(sd_op_fill(ctx, &ones, 1.0f));
    TRY(tens(ctx, &pooled, 3, (int64_t[]){ N, C, 1 }));
    TRY(sd_tensor_reshape(&cur, 3, (int64_t[]){ N, C, h * h }, &tv));
    TRY(sd_op_matmul(ctx, &pooled, &tv, 0, &ones, 0, 1.0f / (float)(h * h), 0.0f));
    TRY(sd_tensor_reshape(&pooled, 3, (int64_t[]){ N, 1, C }, &pooled));
    TRY(tens(ctx, &pn, 3, (int64_t[]){ N, 1, C }));
    TRY(sd_layernorm_forward(ctx, &c->head_norm, NULL, &pn, &pooled));
    TRY(sd_tensor_reshape(logits, 3, (int64_t[]){ N, 1, c->classes }, &y3));
    TRY(sd_linear_forward(ctx, &c->head, NULL, &y3, &pn));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "ConvNeXt tagger") : SD_OK;
}
