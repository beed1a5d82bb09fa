/* WD tagger: timm EVA02 build and forward (see tagger_eva02.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "models/tagger.h"
#include "models/tagger_eva02.h"
#include "models/vit.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

static int has(const sd_safetensors *st, const char *k) { return sd_safetensors_find(st, k) != NULL; }

static int shape_of(const sd_safetensors *st, const char *name, int ndim, const sd_st_tensor **t)
{
    return sd_safetensors_get_dims(st, name, ndim, "timm EVA02 tagger", t);
}

/* __metadata__ ref_feat_shape: "R" or "R,R'" (also "[R, R']"); absent: the grid. */
static int ref_shape(const sd_safetensors *st, int64_t grid, int64_t *rh, int64_t *rw)
{
    const char *s = sd_safetensors_meta_get(st, "ref_feat_shape");
    *rh = *rw = grid;
    if (!s) return SD_OK;
    long v[2];
    int n = 0;
    const char *p = s;
    while (*p == ' ' || *p == '[' || *p == '(') p++;
    while (n < 2) {
        char *end;
        v[n] = strtol(p, &end, 10);
        if (end == p || v[n] < 1 || v[n] > 65536) break;
        n++;
        p = end;
        while (*p == ' ') p++;
        if (*p != ',') break;
        p++;
        while (*p == ' ') p++;
    }
    while (*p == ' ' || *p == ']' || *p == ')') p++;
    if (n == 0 || *p)
        return sd_err(SD_EFORMAT, "%s: __metadata__ ref_feat_shape '%s' is not \"R\" or \"R,R'\" (positive integers)",
                      sd_safetensors_path(st), s);
    *rh = v[0];
    *rw = n == 2 ? v[1] : v[0];
    return SD_OK;
}

void sd_tagger_eva02_free(sd_tagger_eva02 *e)
{
    free(e->blocks);
    sd_tensor_free(&e->rope);
    memset(e, 0, sizeof *e);
}

int sd_tagger_eva02_build(sd_tagger_eva02 *e, sd_params *r, const sd_safetensors *st)
{
    memset(e, 0, sizeof *e);
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *pw, *pe, *hw, *f1;
    char key[160], p[128];
    int rc;
    if (has(st, "blocks.0.attn.qkv.weight"))
        TRY(sd_err(SD_EUNSUPPORTED, "%s: an EVA02 with a fused attn.qkv is not supported (the EVA02 tagger has "
                                    "separate q_proj/k_proj/v_proj)", path));
    TRY(shape_of(st, "patch_embed.proj.weight", 4, &pw));
    TRY(shape_of(st, "pos_embed", 3, &pe));
    TRY(shape_of(st, "head.weight", 2, &hw));
    TRY(shape_of(st, "blocks.0.mlp.fc1_g.weight", 2, &f1));
    TRY(sd_tagger_patch_dims(st, pw, &e->width, &e->patch));
    e->tokens = pe->shape[1];
    int64_t g = 1;
    while (g * g < e->tokens - 1) g++;
    if (pe->shape[0] != 1 || pe->shape[2] != e->width || g * g != e->tokens - 1)
        TRY(sd_err(SD_EFORMAT, "%s: pos_embed must be [1,1+T,%lld] with T a square number (class token + patches)",
                   path, (long long)e->width));
    e->grid = g;
    e->size = g * e->patch;
    if (e->size > 8192) TRY(sd_err(SD_EFORMAT, "%s: input size %lld is too large", path, (long long)e->size));
    e->classes = hw->shape[0];
    e->mlp = f1->shape[0];
    if (hw->shape[1] != e->width)
        TRY(sd_err(SD_EFORMAT, "%s: head.weight is [%lld,%lld], expected [classes,%lld]", path,
                   (long long)hw->shape[0], (long long)hw->shape[1], (long long)e->width));
    for (e->depth = 0; e->depth < 1000; e->depth++) {
        snprintf(key, sizeof key, "blocks.%d.norm1.weight", (int)e->depth);
        if (!has(st, key)) break;
    }
    TRY(sd_vit_heads(st, "num_heads", e->width, &e->heads));
    if ((e->width / e->heads) % 4)
        TRY(sd_err(SD_EFORMAT, "%s: head width %lld is not a multiple of 4 (2-D RoPE)", path,
                   (long long)(e->width / e->heads)));
    TRY(ref_shape(st, g, &e->ref_h, &e->ref_w));
    const int64_t D = e->width;
    TRY(sd_conv2d_init(&e->patch_embed, r, "patch_embed.proj", 3, D, (int)e->patch, (int)e->patch,
                       sd_conv2d_geom_make((int)e->patch, 0), SD_NN_BIAS));
    TRY(sd_params_add(r, NULL, "cls_token", 3, (int64_t[]){ 1, 1, D }, 0, &e->cls));
    TRY(sd_params_add(r, NULL, "pos_embed", 3, pe->shape, 0, &e->pos));
    e->blocks = calloc((size_t)(e->depth ? e->depth : 1), sizeof *e->blocks);
    if (!e->blocks) TRY(sd_err(SD_ENOMEM, "out of memory"));
    const int gamma = has(st, "blocks.0.gamma_1");
    for (int i = 0; i < e->depth; i++) {
        sd_eva02_block *b = &e->blocks[i];
#define K(s) (snprintf(p, sizeof p, "blocks.%d." s, i), p)
        TRY(sd_layernorm_init(&b->norm1, r, K("norm1"), D, 1e-6f));
        TRY(sd_linear_init(&b->q, r, K("attn.q_proj"), D, D, SD_NN_BIAS));
        TRY(sd_linear_init(&b->k, r, K("attn.k_proj"), D, D, 0));
        TRY(sd_linear_init(&b->v, r, K("attn.v_proj"), D, D, SD_NN_BIAS));
        TRY(sd_linear_init(&b->proj, r, K("attn.proj"), D, D, SD_NN_BIAS));
        TRY(sd_layernorm_init(&b->norm2, r, K("norm2"), D, 1e-6f));
        TRY(sd_linear_init(&b->fc1_g, r, K("mlp.fc1_g"), D, e->mlp, SD_NN_BIAS));
        TRY(sd_linear_init(&b->fc1_x, r, K("mlp.fc1_x"), D, e->mlp, SD_NN_BIAS));
        TRY(sd_layernorm_init(&b->mlp_norm, r, K("mlp.norm"), e->mlp, 1e-6f));
        TRY(sd_linear_init(&b->fc2, r, K("mlp.fc2"), e->mlp, D, SD_NN_BIAS));
#undef K
        if (gamma) {
            snprintf(p, sizeof p, "blocks.%d", i);
            TRY(sd_params_add(r, p, "gamma_1", 1, (int64_t[]){ D }, 0, &b->gamma1));
            TRY(sd_params_add(r, p, "gamma_2", 1, (int64_t[]){ D }, 0, &b->gamma2));
        }
    }
    TRY(sd_layernorm_init(&e->fc_norm, r, "fc_norm", D, 1e-6f));
    TRY(sd_linear_init(&e->head, r, "head", D, e->classes, SD_NN_BIAS));
out:
    if (rc) sd_tagger_eva02_free(e);
    return rc;
}

void sd_tagger_eva02_rope_table(int64_t grid, int64_t head_dim, int64_t ref_h, int64_t ref_w, float *tab)
{
    /* timm: bands = 1/(10000 ** (arange(nb)/nb)); t = arange(G)/G*R; angle = t·band (all float32);
     * per token (r, c): [r-angles, c-angles] each band twice (repeat_interleave 2), sin then cos. */
    const int64_t nb = head_dim / 4, d = head_dim;
    for (int64_t r = 0; r < grid; r++)
        for (int64_t c = 0; c < grid; c++) {
            float *row = tab + (r * grid + c) * 2 * d;
            float tr = (float)r / (float)grid * (float)ref_h, tc = (float)c / (float)grid * (float)ref_w;
            for (int64_t j = 0; j < nb; j++) {
                float band = 1.0f / powf(10000.0f, (float)j / (float)nb);
                float ar = tr * band, ac = tc * band;
                row[2 * j] = row[2 * j + 1] = sinf(ar);
                row[2 * nb + 2 * j] = row[2 * nb + 2 * j + 1] = sinf(ac);
                row[d + 2 * j] = row[d + 2 * j + 1] = cosf(ar);
                row[d + 2 * nb + 2 * j] = row[d + 2 * nb + 2 * j + 1] = cosf(ac);
            }
        }
}

/* The RoPE table on `dev` (replacing the one held). */
static int rope_upload(sd_tagger_eva02 *e, sd_devkind dev)
{
    const int64_t T = e->grid * e->grid, d = e->width / e->heads;
    float *tab = malloc((size_t)(T * 2 * d) * sizeof(float));
    if (!tab) return sd_err(SD_ENOMEM, "out of memory");
    sd_tagger_eva02_rope_table(e->grid, d, e->ref_h, e->ref_w, tab);
    sd_tensor t;
    int rc = sd_tensor_alloc_on(&t, dev, SD_F32, 2, (int64_t[]){ T, 2 * d });
    if (!rc) rc = sd_tensor_upload(&t, tab, (size_t)(T * 2 * d) * sizeof(float));
    free(tab);
    if (rc) {
        sd_tensor_free(&t);
        return rc;
    }
    sd_tensor_free(&e->rope);
    e->rope = t;
    return SD_OK;
}

int sd_tagger_eva02_move(sd_tagger_eva02 *e, sd_params *r, sd_devkind dev)
{
    int rc = sd_params_move(r, dev);
    return rc ? rc : rope_upload(e, dev);
}

int sd_tagger_eva02_open(sd_tagger *m, const sd_safetensors *st, sd_devkind dev)
{
    int rc;
    m->arch = SD_TAGGER_ARCH_EVA02;
    m->eva = calloc(1, sizeof *m->eva);
    if (!m->eva) TRY(sd_err(SD_ENOMEM, "out of memory"));
    sd_tagger_eva02 *e = m->eva;
    TRY(sd_tagger_eva02_build(e, &m->r, st));
    m->size = e->size;
    m->classes = e->classes;
    TRY(sd_params_set_trainable(&m->r, "", 0) < 0 ? SD_ESTATE : SD_OK);
    TRY(sd_params_alloc(&m->r, SD_DEV_CPU));
    TRY(sd_params_load_safetensors(&m->r, st, NULL, 0, 0, NULL));
    TRY(rope_upload(e, SD_DEV_CPU));
    if (dev != SD_DEV_CPU) TRY(sd_tagger_eva02_move(e, &m->r, dev));
out:
    if (rc) sd_tagger_free(m);
    return rc;
}

/* ---- forward -------------------------------------------------------------------------------- */

size_t sd_tagger_eva02_scratch_per_image(const sd_tagger_eva02 *e)
{
    /* the stream, the norm output, q, k, v, the attention output, the projections (8 × tokens×D),
     * the two SwiGLU halves and their norm (3 × tokens×MLP), LayerNorm mean/rstd and lse, the
     * patch conv output and its permute, and the conv's im2col (3·P²·T) */
    const int64_t T1 = e->tokens, T = T1 - 1, D = e->width;
    int64_t n = T1 * (8 * D + 3 * e->mlp + 2 * e->heads + 4) + 2 * T * D + 3 * e->patch * e->patch * T + T1 + 4 * D;
    return (size_t)n * sizeof(float) + 64 * 32;
}

static int tens(sd_ctx *ctx, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "EVA02 tagger activations") : SD_OK;
}

int sd_tagger_eva02_forward(sd_ctx *ctx, sd_tagger_eva02 *e, sd_tensor *logits, const sd_tensor *x)
{
    const int64_t S = e->size, D = e->width, T1 = e->tokens, T = T1 - 1, g = e->grid, M = e->mlp;
    if (x->ndim != 4 || x->shape[1] != 3 || x->shape[2] != S || x->shape[3] != S || x->dtype != SD_F32)
        return sd_err(SD_EINVAL, "EVA02 tagger: input must be f32 [N,3,%lld,%lld]", (long long)S, (long long)S);
    const int64_t N = x->shape[0];
    if (logits->ndim != 2 || logits->shape[0] != N || logits->shape[1] != e->classes || logits->dtype != SD_F32)
        return sd_err(SD_EINVAL, "EVA02 tagger: logits must be f32 [%lld,%lld]", (long long)N, (long long)e->classes);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor c, pt, cls, h, n, q, k, v, o, a, lse, fg, fx, w, w0, pooled, pn, y3;
    int rc;
    /* patches [N,T,D], the class token [N,1,D], cat + pos_embed */
    TRY(tens(ctx, &c, 4, (int64_t[]){ N, D, g, g }));
    TRY(sd_conv2d_forward(ctx, &e->patch_embed, NULL, &c, x));
    TRY(tens(ctx, &pt, 4, (int64_t[]){ N, g, g, D }));
    TRY(sd_op_permute(ctx, &pt, &c, (const int[]){ 0, 2, 3, 1 }));
    TRY(sd_tensor_reshape(&pt, 3, (int64_t[]){ N, T, D }, &pt));
    TRY(tens(ctx, &cls, 3, (int64_t[]){ N, 1, D }));
    TRY(sd_op_fill(ctx, &cls, 0.0f));
    TRY(sd_op_add(ctx, &cls, &cls, &e->cls->value));
    const int64_t sh[3] = { N, T1, D };
    TRY(tens(ctx, &h, 3, sh));
    const sd_tensor *parts[2] = { &cls, &pt };
    TRY(sd_op_concat(ctx, &h, parts, 2, 1));
    TRY(sd_op_add(ctx, &h, &h, &e->pos->value));
    TRY(tens(ctx, &n, 3, sh));
    TRY(tens(ctx, &q, 3, sh));
    TRY(tens(ctx, &k, 3, sh));
    TRY(tens(ctx, &v, 3, sh));
    TRY(tens(ctx, &o, 3, sh));
    TRY(tens(ctx, &a, 3, sh));
    TRY(tens(ctx, &lse, 3, (int64_t[]){ N, e->heads, T1 }));
    TRY(tens(ctx, &fg, 3, (int64_t[]){ N, T1, M }));
    TRY(tens(ctx, &fx, 3, (int64_t[]){ N, T1, M }));
    sd_attn_args aa = { (int)e->heads, 0.0f, 0 };
    for (int i = 0; i < e->depth; i++) {
        sd_eva02_block *b = &e->blocks[i];
        TRY(sd_layernorm_forward(ctx, &b->norm1, NULL, &n, &h));
        TRY(sd_linear_forward(ctx, &b->q, NULL, &q, &n));
        TRY(sd_linear_forward(ctx, &b->k, NULL, &k, &n));
        TRY(sd_linear_forward(ctx, &b->v, NULL, &v, &n));
        TRY(sd_op_rope(ctx, &q, &q, &e->rope));
        TRY(sd_op_rope(ctx, &k, &k, &e->rope));
        TRY(sd_op_attention(ctx, &o, &lse, &q, &k, &v, aa));
        TRY(sd_linear_forward(ctx, &b->proj, NULL, &a, &o));
        if (b->gamma1) TRY(sd_op_mul(ctx, &a, &a, &b->gamma1->value));
        TRY(sd_op_add(ctx, &h, &h, &a));
        TRY(sd_layernorm_forward(ctx, &b->norm2, NULL, &n, &h));
        TRY(sd_linear_forward(ctx, &b->fc1_g, NULL, &fg, &n));
        TRY(sd_linear_forward(ctx, &b->fc1_x, NULL, &fx, &n));
        TRY(sd_op_act(ctx, SD_ACT_SILU, &fg, &fg));
        TRY(sd_op_mul(ctx, &fg, &fg, &fx));
        TRY(sd_layernorm_forward(ctx, &b->mlp_norm, NULL, &fx, &fg));
        TRY(sd_linear_forward(ctx, &b->fc2, NULL, &a, &fx));
        if (b->gamma2) TRY(sd_op_mul(ctx, &a, &a, &b->gamma2->value));
        TRY(sd_op_add(ctx, &h, &h, &a));
    }
    /* mean over the patch tokens: w [1,1+T] = (0, 1, …, 1) · [N,1+T,D] / T; fc_norm; head */
    TRY(tens(ctx, &w, 1, (int64_t[]){ T1 }));
    TRY(sd_op_fill(ctx, &w, 1.0f));
    TRY(sd_tensor_narrow0(&w, 0, 1, &w0));
    TRY(sd_op_fill(ctx, &w0, 0.0f));
    TRY(sd_tensor_reshape(&w, 2, (int64_t[]){ 1, T1 }, &w));
    TRY(tens(ctx, &pooled, 3, (int64_t[]){ N, 1, D }));
    TRY(sd_op_matmul(ctx, &pooled, &w, 0, &h, 0, 1.0f / (float)T, 0.0f));
    TRY(tens(ctx, &pn, 3, (int64_t[]){ N, 1, D }));
    TRY(sd_layernorm_forward(ctx, &e->fc_norm, NULL, &pn, &pooled));
    TRY(sd_tensor_reshape(logits, 3, (int64_t[]){ N, 1, e->classes }, &y3));
    TRY(sd_linear_forward(ctx, &e->head, NULL, &y3, &pn));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "EVA02 tagger") : SD_OK;
}
