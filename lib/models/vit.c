/* Vision-transformer pieces shared by the tagger and BLIP (see vit.h). */
#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "models/vit.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

const sd_vit_names sd_vit_names_timm = { "norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2" };
const sd_vit_names sd_vit_names_hf = { "layer_norm1", "self_attn.qkv", "self_attn.projection",
                                       "layer_norm2", "mlp.fc1",       "mlp.fc2" };

int sd_vit_block_init(sd_vit_block *b, sd_params *r, const char *prefix, const sd_vit_names *nm, int64_t D,
                      int64_t mlp, float eps)
{
    char p[256];
    int rc;
#define K(s) (snprintf(p, sizeof p, "%s.%s", prefix, s), p)
    TRY(sd_layernorm_init(&b->norm1, r, K(nm->norm1), D, eps));
    TRY(sd_linear_init(&b->qkv, r, K(nm->qkv), D, 3 * D, SD_NN_BIAS));
    TRY(sd_linear_init(&b->proj, r, K(nm->proj), D, D, SD_NN_BIAS));
    TRY(sd_layernorm_init(&b->norm2, r, K(nm->norm2), D, eps));
    TRY(sd_linear_init(&b->fc1, r, K(nm->fc1), D, mlp, SD_NN_BIAS));
    TRY(sd_linear_init(&b->fc2, r, K(nm->fc2), mlp, D, SD_NN_BIAS));
#undef K
out:
    return rc;
}

static int tens(sd_ctx *ctx, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "ViT activations") : SD_OK;
}

int sd_vit_patch_embed(sd_ctx *ctx, sd_conv2d *pe, sd_tensor *out, const sd_tensor *x)
{
    const int64_t N = x->shape[0], D = pe->cout, g = x->shape[2] / pe->kh;
    if (out->ndim != 3 || out->shape[0] != N || out->shape[1] != g * g || out->shape[2] != D)
        return sd_err(SD_EINVAL, "ViT patch embedding: output must be [%lld,%lld,%lld]", (long long)N,
                      (long long)(g * g), (long long)D);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor c, h;
    int rc;
    TRY(tens(ctx, &c, 4, (int64_t[]){ N, D, g, g }));
    TRY(sd_conv2d_forward(ctx, pe, NULL, &c, x));
    TRY(sd_tensor_reshape(out, 4, (int64_t[]){ N, g, g, D }, &h));
    TRY(sd_op_permute(ctx, &h, &c, (const int[]){ 0, 2, 3, 1 }));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_vit_blocks_forward(sd_ctx *ctx, sd_vit_block *blocks, int depth, int heads, int64_t mlp, sd_act act,
                          sd_tensor *h)
{
    const int64_t N = h->shape[0], T = h->shape[1], D = h->shape[2];
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor n, q, k, v, o, lse, f;
    int rc;
    const int64_t sh[3] = { N, T, D };
    TRY(tens(ctx, &n, 3, sh));
    TRY(tens(ctx, &q, 3, sh));
    TRY(tens(ctx, &k, 3, sh));
    TRY(tens(ctx, &v, 3, sh));
    TRY(tens(ctx, &o, 3, sh));
    TRY(tens(ctx, &lse, 3, (int64_t[]){ N, heads, T }));
    TRY(tens(ctx, &f, 3, (int64_t[]){ N, T, mlp }));
    sd_attn_args aa = { heads, 0.0f, 0 };
    for (int i = 0; i < depth; i++) {
        sd_vit_block *b = &blocks[i];
        sd_tensor w[3], bias[3], *outs[3] = { &q, &k, &v };
        TRY(sd_layernorm_forward(ctx, &b->norm1, NULL, &n, h));
        for (int j = 0; j < 3; j++) {
            TRY(sd_tensor_narrow0(&b->qkv.w->value, j * D, D, &w[j]));
            TRY(sd_tensor_narrow0(&b->qkv.b->value, j * D, D, &bias[j]));
            TRY(sd_op_linear(ctx, outs[j], &n, &w[j], &bias[j]));
        }
        TRY(sd_op_attention(ctx, &o, &lse, &q, &k, &v, aa));
        TRY(sd_linear_forward(ctx, &b->proj, NULL, &q, &o));
        TRY(sd_op_add(ctx, h, h, &q));
        TRY(sd_layernorm_forward(ctx, &b->norm2, NULL, &n, h));
        TRY(sd_linear_forward(ctx, &b->fc1, NULL, &f, &n));
        TRY(sd_op_act(ctx, act, &f, &f));
        TRY(sd_linear_forward(ctx, &b->fc2, NULL, &q, &f));
        TRY(sd_op_add(ctx, h, h, &q));
    }
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_vit_heads(const sd_safetensors *st, const char *key, int64_t width, int64_t *heads)
{
    const char *path = sd_safetensors_path(st), *h = sd_safetensors_meta_get(st, key);
    if (h) {
        char *end;
        long v = strtol(h, &end, 10);
        if (end == h || *end || v < 1 || v > width || width % v)
            return sd_err(SD_EFORMAT, "%s: __metadata__ %s '%s' does not divide the width %lld", path, key, h,
                          (long long)width);
        *heads = v;
        return SD_OK;
    }
    if (width % 64)
        return sd_err(SD_EFORMAT, "%s: width %lld is not a multiple of 64 (heads of 64) and the file has no %s in "
                                  "__metadata__", path, (long long)width, key);
    *heads = width / 64;
    return SD_OK;
}
