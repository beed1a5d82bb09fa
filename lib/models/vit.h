/* Vision-transformer pieces shared by the WD tagger (timm ViT, tagger.h) and the BLIP image
 * encoder (blip.h): the conv patch embedding and the pre-LN transformer block
 *   x += proj(attention(norm1(x)))  with one qkv linear (rows q|k|v, heads contiguous, bias)
 *   x += fc2(act(fc1(norm2(x))))
 * under the key names of either checkpoint family. Forward only (inference), op API only, so it
 * runs on the registry's device. */
#ifndef SD_MODELS_VIT_H
#define SD_MODELS_VIT_H

#include <stdint.h>

#include "io/safetensors.h"
#include "nn/nn.h"

typedef struct sd_vit_block {
    sd_layernorm norm1, norm2;
    sd_linear qkv, proj, fc1, fc2;
} sd_vit_block;

/* key names of a block's parts below its prefix */
typedef struct sd_vit_names {
    const char *norm1, *qkv, *proj, *norm2, *fc1, *fc2;
} sd_vit_names;

extern const sd_vit_names sd_vit_names_timm;   /* norm1 attn.qkv attn.proj norm2 mlp.fc1 mlp.fc2 (timm, BLIP) */
extern const sd_vit_names sd_vit_names_hf;     /* layer_norm1 self_attn.qkv self_attn.projection layer_norm2
                                                  mlp.fc1 mlp.fc2 (transformers' BLIP vision model) */

/* Head count of a transformer of `width` (not stored in the weights): the file's __metadata__ `key`
 * (e.g. "num_heads", tiny test models) when present, which must divide the width, else width / 64
 * (the 64-wide heads of every released ViT/BERT this project reads). SD_EFORMAT naming the file. */
int sd_vit_heads(const sd_safetensors *st, const char *key, int64_t width, int64_t *heads);

/* Register one block's parameters under `prefix` (e.g. "blocks.3"). */
int sd_vit_block_init(sd_vit_block *b, sd_params *r, const char *prefix, const sd_vit_names *nm, int64_t width,
                      int64_t mlp, float eps);

/* x [N,3,S,S] -> out [N, (S/P)², D]: the patch conv, tokens in row-major patch order. */
int sd_vit_patch_embed(sd_ctx *ctx, sd_conv2d *pe, sd_tensor *out, const sd_tensor *x);

/* h [N,T,D] (f32) through blocks[0..depth) in place; `act` between fc1 and fc2. */
int sd_vit_blocks_forward(sd_ctx *ctx, sd_vit_block *blocks, int depth, int heads, int64_t mlp, sd_act act,
                          sd_tensor *h);

#endif
