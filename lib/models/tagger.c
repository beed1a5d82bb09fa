/* WD tagger: timm ViT forward, architecture detection, preprocessing (see tagger.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/resample.h"
#include "models/tagger.h"
#include "models/tagger_convnext.h"
#include "models/tagger_eva02.h"
#include "models/tagger_swinv2.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

/* ---- detection ------------------------------------------------------------------------------ */

static int has(const sd_safetensors *st, const char *k) { return sd_safetensors_find(st, k) != NULL; }

int sd_tagger_detect(const sd_safetensors *st)
{
    if (has(st, "stem.0.weight") || has(st, "stages.0.blocks.0.conv_dw.weight")) return SD_TAGGER_ARCH_CONVNEXT;
    if (has(st, "layers.0.blocks.0.attn.logit_scale") || has(st, "layers.0.blocks.0.attn.cpb_mlp.0.weight"))
        return SD_TAGGER_ARCH_SWINV2;
    if (has(st, "blocks.0.attn.q_proj.weight") || has(st, "blocks.0.mlp.fc1_g.weight")) return SD_TAGGER_ARCH_EVA02;
    if (has(st, "patch_embed.proj.weight") && has(st, "blocks.0.attn.qkv.weight")) {
        if (has(st, "cls_token") || has(st, "reg_token") || has(st, "fc_norm.weight")) return SD_TAGGER_ARCH_VIT_CLS;
        return SD_TAGGER_ARCH_VIT;
    }
    return SD_TAGGER_ARCH_UNKNOWN;
}

const char *sd_tagger_arch_name(int arch)
{
    switch (arch) {
    case SD_TAGGER_ARCH_VIT: return "ViT tagger (wd-vit-tagger-v3)";
    case SD_TAGGER_ARCH_VIT_CLS: return "ViT with a class token, register tokens or fc_norm";
    case SD_TAGGER_ARCH_CONVNEXT: return "ConvNeXt tagger (wd-convnext-tagger-v3)";
    case SD_TAGGER_ARCH_SWINV2: return "SwinV2 tagger (wd-swinv2-tagger-v3)";
    case SD_TAGGER_ARCH_EVA02: return "EVA02 tagger (wd-eva02-large-tagger-v3)";
    default: return "unknown model";
    }
}

/* ---- build and load ------------------------------------------------------------------------- */

static int shape_of(const sd_safetensors *st, const char *name, int ndim, const sd_st_tensor **t)
{
    return sd_safetensors_get_dims(st, name, ndim, "timm ViT tagger", t);
}

void sd_tagger_free(sd_tagger *m)
{
    if (m->cnx) sd_tagger_convnext_free(m->cnx);
    free(m->cnx);
    if (m->eva) sd_tagger_eva02_free(m->eva);
    free(m->eva);
    if (m->swin) sd_tagger_swinv2_free(m->swin);
    free(m->swin);
    free(m->blocks);
    sd_params_free(&m->r);
    memset(m, 0, sizeof *m);
}

int sd_tagger_meta_int(const sd_safetensors *st, const char *key, long lo, long hi, long def, long *out)
{
    const char *s = sd_safetensors_meta_get(st, key);
    *out = def;
    if (!s) return SD_OK;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi)
        return sd_err(SD_EFORMAT, "%s: __metadata__ %s '%s' is not an integer in [%ld, %ld]", sd_safetensors_path(st),
                      key, s, lo, hi);
    *out = v;
    return SD_OK;
}

int sd_tagger_meta_act(const sd_safetensors *st, sd_act *act)
{
    const char *a = sd_safetensors_meta_get(st, "act_layer");
    if (!a || !strcmp(a, "gelu_tanh")) *act = SD_ACT_GELU_TANH;
    else if (!strcmp(a, "gelu")) *act = SD_ACT_GELU;
    else
        return sd_err(SD_EUNSUPPORTED, "%s: __metadata__ act_layer '%s' is not supported (gelu_tanh, gelu)",
                      sd_safetensors_path(st), a);
    return SD_OK;
}

int sd_tagger_patch_dims(const sd_safetensors *st, const sd_st_tensor *t, int64_t *dim, int64_t *patch)
{
    *dim = t->shape[0];
    *patch = t->shape[2];
    if (t->shape[1] != 3 || t->shape[3] != *patch)
        return sd_err(SD_EFORMAT, "%s: %s must be [D,3,P,P]", sd_safetensors_path(st), t->name);
    return SD_OK;
}

int sd_tagger_count_stages(const sd_safetensors *st, const char *prefix, const char *key, const char *arch, int max,
                           int64_t *n)
{
    char k[160];
    for (*n = 0; *n <= max; (*n)++) {
        snprintf(k, sizeof k, "%s.%d.%s", prefix, (int)*n, key);
        if (!has(st, k)) break;
    }
    if (*n < 1 || *n > max)
        return sd_err(SD_EFORMAT, "%s: %s (%s.S.%s for S = 0..%d)", sd_safetensors_path(st),
                      *n ? "too many stages" : arch, prefix, key, max - 1);
    return SD_OK;
}

int sd_tagger_move(sd_tagger *m, sd_devkind dev)
{
    if (m->eva) return sd_tagger_eva02_move(m->eva, &m->r, dev);
    int rc = sd_params_move(&m->r, dev);
    if (!rc && m->swin) rc = sd_tagger_swinv2_move(m->swin, dev);
    return rc;
}

int sd_tagger_open(sd_tagger *m, const sd_safetensors *st, sd_devkind dev)
{
    memset(m, 0, sizeof *m);
    sd_params_init(&m->r);
    const char *path = sd_safetensors_path(st);
    int arch = sd_tagger_detect(st);
    if (arch == SD_TAGGER_ARCH_CONVNEXT) return sd_tagger_convnext_open(m, st, dev);
    if (arch == SD_TAGGER_ARCH_EVA02) return sd_tagger_eva02_open(m, st, dev);
    if (arch == SD_TAGGER_ARCH_SWINV2) return sd_tagger_swinv2_open(m, st, dev);
    m->arch = arch;
    if (arch != SD_TAGGER_ARCH_VIT) {
        if (arch == SD_TAGGER_ARCH_UNKNOWN)
            return sd_err(SD_EFORMAT, "%s: not a WD tagger model (no patch_embed.proj.weight / "
                                      "blocks.0.attn.qkv.weight)", path);
        return sd_err(SD_EUNSUPPORTED, "%s: %s is not supported; only the ViT, ConvNeXt, SwinV2 and EVA02 taggers "
                      "(wd-vit-tagger-v3, wd-convnext-tagger-v3, wd-swinv2-tagger-v3, wd-eva02-large-tagger-v3) are",
                      path, sd_tagger_arch_name(arch));
    }
    const sd_st_tensor *pw, *pe, *hw, *f1;
    int rc;
    TRY(shape_of(st, "patch_embed.proj.weight", 4, &pw));
    TRY(shape_of(st, "pos_embed", 3, &pe));
    TRY(shape_of(st, "head.weight", 2, &hw));
    TRY(shape_of(st, "blocks.0.mlp.fc1.weight", 2, &f1));
    TRY(sd_tagger_patch_dims(st, pw, &m->width, &m->patch));
    m->tokens = pe->shape[1];
    int64_t g = 1;
    while (g * g < m->tokens) g++;
    if (pe->shape[0] != 1 || pe->shape[2] != m->width || g * g != m->tokens)
        TRY(sd_err(SD_EFORMAT, "%s: pos_embed must be [1,T,%lld] with T a square number (no class token)", path,
                   (long long)m->width));
    m->grid = g;
    m->size = g * m->patch;
    if (m->size > 8192) TRY(sd_err(SD_EFORMAT, "%s: input size %lld is too large", path, (long long)m->size));
    m->classes = hw->shape[0];
    m->mlp = f1->shape[0];
    if (hw->shape[1] != m->width)
        TRY(sd_err(SD_EFORMAT, "%s: head.weight is [%lld,%lld], expected [classes,%lld]", path,
                   (long long)hw->shape[0], (long long)hw->shape[1], (long long)m->width));
    char key[128];
    for (m->depth = 0; m->depth < 1000; m->depth++) {
        snprintf(key, sizeof key, "blocks.%d.norm1.weight", (int)m->depth);
        if (!has(st, key)) break;
    }
    TRY(sd_vit_heads(st, "num_heads", m->width, &m->heads));
    const int64_t D = m->width;
    TRY(sd_conv2d_init(&m->patch_embed, &m->r, "patch_embed.proj", 3, D, (int)m->patch, (int)m->patch,
                       sd_conv2d_geom_make((int)m->patch, 0), SD_NN_BIAS));
    TRY(sd_params_add(&m->r, NULL, "pos_embed", 3, pe->shape, 0, &m->pos));
    m->blocks = calloc((size_t)(m->depth ? m->depth : 1), sizeof *m->blocks);
    if (!m->blocks) TRY(sd_err(SD_ENOMEM, "out of memory"));
    for (int i = 0; i < m->depth; i++) {
        char p[64];
        snprintf(p, sizeof p, "blocks.%d", i);
        TRY(sd_vit_block_init(&m->blocks[i], &m->r, p, &sd_vit_names_timm, D, m->mlp, 1e-6f));
    }
    TRY(sd_layernorm_init(&m->norm, &m->r, "norm", D, 1e-6f));
    TRY(sd_linear_init(&m->head, &m->r, "head", D, m->classes, SD_NN_BIAS));
    TRY(sd_params_set_trainable(&m->r, "", 0) < 0 ? SD_ESTATE : SD_OK);
    TRY(sd_params_alloc(&m->r, SD_DEV_CPU));
    TRY(sd_params_load_safetensors(&m->r, st, NULL, 0, 0, NULL));
    if (dev != SD_DEV_CPU) TRY(sd_params_move(&m->r, dev));
out:
    if (rc) sd_tagger_free(m);
    return rc;
}

/* ---- forward -------------------------------------------------------------------------------- */

static int tens(sd_ctx *ctx, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "tagger activations") : SD_OK;
}

int sd_tagger_forward(sd_ctx *ctx, sd_tagger *m, sd_tensor *logits, const sd_tensor *x)
{
    if (m->cnx) return sd_tagger_convnext_forward(ctx, m->cnx, logits, x);
    if (m->swin) return sd_tagger_swinv2_forward(ctx, m->swin, logits, x);
    if (m->eva) return sd_tagger_eva02_forward(ctx, m->eva, logits, x);
    const int64_t S = m->size, D = m->width, T = m->tokens, H = m->heads;
    if (x->ndim != 4 || x->shape[1] != 3 || x->shape[2] != S || x->shape[3] != S || x->dtype != SD_F32)
        return sd_err(SD_EINVAL, "tagger: input must be f32 [N,3,%lld,%lld]", (long long)S, (long long)S);
    const int64_t N = x->shape[0];
    if (logits->ndim != 2 || logits->shape[0] != N || logits->shape[1] != m->classes || logits->dtype != SD_F32)
        return sd_err(SD_EINVAL, "tagger: logits must be f32 [%lld,%lld]", (long long)N, (long long)m->classes);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor h, n, ones, pooled, y3;
    int rc;
    TRY(tens(ctx, &h, 3, (int64_t[]){ N, T, D }));
    TRY(sd_vit_patch_embed(ctx, &m->patch_embed, &h, x));
    TRY(sd_op_add(ctx, &h, &h, &m->pos->value));
    TRY(tens(ctx, &n, 3, (int64_t[]){ N, T, D }));
    TRY(sd_vit_blocks_forward(ctx, m->blocks, (int)m->depth, (int)H, m->mlp, SD_ACT_GELU_TANH, &h));
    TRY(sd_layernorm_forward(ctx, &m->norm, NULL, &n, &h));
    /* global average pool over the tokens: [1,T] · [N,T,D] / T */
    TRY(tens(ctx, &ones, 2, (int64_t[]){ 1, T }));
    TRY(sd_op_fill(ctx, &ones, 1.0f));
    TRY(tens(ctx, &pooled, 3, (int64_t[]){ N, 1, D }));
    TRY(sd_op_matmul(ctx, &pooled, &ones, 0, &n, 0, 1.0f / (float)T, 0.0f));
    TRY(sd_tensor_reshape(logits, 3, (int64_t[]){ N, 1, m->classes }, &y3));
    TRY(sd_linear_forward(ctx, &m->head, NULL, &y3, &pooled));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "tagger") : SD_OK;
}

/* ---- preprocessing -------------------------------------------------------------------------- */

int sd_tagger_prepare_image(const sd_image *rgb, int size, int preset, sd_image *out)
{
    memset(out, 0, sizeof *out);
    if (rgb->c != 3 || rgb->w < 1 || rgb->h < 1 || size < 1)
        return sd_err(SD_EINVAL, "tagger preprocessing: expected an RGB image");
    int S = rgb->w > rgb->h ? rgb->w : rgb->h;
    sd_image sq;
    int rc = sd_image_alloc(&sq, S, S, 3);
    if (rc) return rc;
    memset(sq.px, 255, (size_t)S * (size_t)S * 3);
    int ox = (S - rgb->w) / 2, oy = (S - rgb->h) / 2;
    for (int y = 0; y < rgb->h; y++)
        memcpy(sq.px + ((size_t)(y + oy) * (size_t)S + (size_t)ox) * 3, rgb->px + (size_t)y * (size_t)rgb->w * 3,
               (size_t)rgb->w * 3);
    if (S == size) {
        *out = sq;
        return SD_OK;
    }
    int filter = preset == SD_TAGGER_PRE_WD ? SD_RESAMPLE_BICUBIC
                 : S >= size                ? SD_RESAMPLE_AREA
                                            : SD_RESAMPLE_LANCZOS;
    rc = sd_resample(&sq, size, size, filter, out);
    sd_image_free(&sq);
    return rc;
}

void sd_tagger_image_to_input(const sd_image *im, float *chw)
{
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = (float)i / 127.5f - 1.0f;
    size_t hw = (size_t)im->w * (size_t)im->h;
    for (size_t p = 0; p < hw; p++) {
        const uint8_t *px = im->px + p * 3;
        chw[p] = lut[px[2]];          /* B */
        chw[hw + p] = lut[px[1]];     /* G */
        chw[2 * hw + p] = lut[px[0]]; /* R */
    }
}

void sd_tagger_image_to_nhwc_bgr(const sd_image *im, float *hwc)
{
    size_t hw = (size_t)im->w * (size_t)im->h;
    for (size_t p = 0; p < hw; p++) {
        const uint8_t *px = im->px + p * 3;
        hwc[3 * p] = (float)px[2];
        hwc[3 * p + 1] = (float)px[1];
        hwc[3 * p + 2] = (float)px[0];
    }
}
