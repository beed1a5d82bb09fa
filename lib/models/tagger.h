/* WD tagger (SmilingWolf wd-*-tagger-v3, timm model.safetensors): the ViT architecture, its
 * image preprocessing, and detection of the architectures; the ConvNeXt (wd-convnext-tagger-v3)
 * is in models/tagger_convnext.h, the SwinV2 (wd-swinv2-tagger-v3) in models/tagger_swinv2.h and the
 * EVA02 (wd-eva02-large-tagger-v3) in models/tagger_eva02.h, reached through the same
 * sd_tagger_open/forward/free (and sd_tagger_move, which carries their computed tables).
 *
 * Model (timm VisionTransformer as the v3 config builds it: vit_base_patch16_224 with img_size
 * 448, class_token False, global_pool "avg", fc_norm False, act_layer gelu_tanh):
 *   x [N,3,S,S] -> patch_embed.proj (conv P×P, stride P, bias) -> [N,T,D] (T = (S/P)², row-major
 *   patches) + pos_embed [1,T,D] -> blocks.i: x += attn.proj(attention(norm1(x))) with one
 *   attn.qkv linear (rows q|k|v, heads contiguous, bias), x += mlp.fc2(gelu_tanh(mlp.fc1(norm2(x))))
 *   -> norm -> mean over the T tokens -> head (Linear D -> classes). LayerNorm eps 1e-6 (timm's).
 * Every size comes from the tensor shapes: D and P from patch_embed.proj.weight [D,3,P,P], T from
 * pos_embed (a square number), the depth from the blocks.N keys, the MLP width from mlp.fc1, the
 * classes from head.weight. The head count is not stored in the file: it is D/64 (timm's ViTs all
 * use a head width of 64) unless the file's __metadata__ has "num_heads" (tiny test models).
 * Weights may be F32, F16 or BF16 (held as f32). Strict loading: a missing tensor, a wrong shape
 * or an unexpected tensor is an error naming the file and the key.
 *
 * ConvNeXt files (stem.0.weight or stages.0.blocks.0.conv_dw.weight) go to
 * models/tagger_convnext.h, SwinV2 files (layers.0.blocks.0.attn.logit_scale) to
 * models/tagger_swinv2.h, EVA02 files (blocks.0.attn.q_proj.weight or blocks.0.mlp.fc1_g.weight)
 * to models/tagger_eva02.h. Other architectures are recognised from their keys and refused with
 * SD_EUNSUPPORTED ("m.safetensors: ViT with a class token, register tokens or fc_norm is not supported;
 * only the ViT, ConvNeXt, SwinV2 and EVA02 taggers are"): ViTs with a class/register token or
 * fc_norm.
 *
 * The forward uses only the op API, so it runs on the registry's device (CPU or CUDA). */
#ifndef SD_MODELS_TAGGER_H
#define SD_MODELS_TAGGER_H

#include <stdint.h>

#include "io/image.h"
#include "io/safetensors.h"
#include "models/vit.h"
#include "nn/nn.h"

typedef sd_vit_block sd_tagger_block;

struct sd_tagger_convnext;
struct sd_tagger_eva02;
struct sd_tagger_swinv2;

typedef struct sd_tagger {
    int arch;                          /* SD_TAGGER_ARCH_VIT or SD_TAGGER_ARCH_CONVNEXT */
    struct sd_tagger_convnext *cnx;    /* the ConvNeXt (models/tagger_convnext.h), else NULL */
    struct sd_tagger_eva02 *eva;       /* the EVA02 (models/tagger_eva02.h), else NULL */
    struct sd_tagger_swinv2 *swin;     /* the SwinV2 (models/tagger_swinv2.h), else NULL */
    int64_t width, heads, depth, patch, size, grid, tokens, mlp, classes;   /* size, classes: both archs */
    sd_params r;
    sd_conv2d patch_embed;
    sd_param *pos;
    sd_tagger_block *blocks;
    sd_layernorm norm;
    sd_linear head;
} sd_tagger;

enum sd_tagger_arch {
    SD_TAGGER_ARCH_UNKNOWN = 0,
    SD_TAGGER_ARCH_VIT,        /* implemented */
    SD_TAGGER_ARCH_VIT_CLS,    /* ViT with class/register tokens or fc_norm */
    SD_TAGGER_ARCH_CONVNEXT,   /* implemented (models/tagger_convnext.h) */
    SD_TAGGER_ARCH_SWINV2,     /* implemented (models/tagger_swinv2.h) */
    SD_TAGGER_ARCH_EVA02,      /* implemented (models/tagger_eva02.h) */
};

/* Architecture from the tensor names. */
int sd_tagger_detect(const sd_safetensors *st);
const char *sd_tagger_arch_name(int arch);

/* Build the model from an open file (sizes from the shapes), allocate it on `dev` and load it.
 * Errors name the file: SD_EUNSUPPORTED for another architecture, SD_EFORMAT for inconsistent
 * or missing tensors. */
int sd_tagger_open(sd_tagger *m, const sd_safetensors *st, sd_devkind dev);
void sd_tagger_free(sd_tagger *m);
/* For the architectures' loaders (not stored in the weights): the file's __metadata__ integer `key`
 * in [lo, hi], else `def`; and its act_layer (gelu_tanh, the v3 configurations', when absent, or
 * gelu). SD_EFORMAT / SD_EUNSUPPORTED naming the file. */
int sd_tagger_meta_int(const sd_safetensors *st, const char *key, long lo, long hi, long def, long *out);
int sd_tagger_meta_act(const sd_safetensors *st, sd_act *act);
/* For the loaders too: a patchify stem's weight `t` (of `st`) must be [D,3,P,P]: *dim = D, *patch = P.
 * And the number of stages, "<prefix>.S.<key>" present for S = 0, 1, …: *n, from 1 to max
 * (`arch` names the model when there is none). SD_EFORMAT naming the file. */
int sd_tagger_patch_dims(const sd_safetensors *st, const sd_st_tensor *t, int64_t *dim, int64_t *patch);
int sd_tagger_count_stages(const sd_safetensors *st, const char *prefix, const char *key, const char *arch, int max,
                           int64_t *n);

/* Move an open model to `dev`: the parameters and any constants an architecture derived from them
 * (the SwinV2's position biases and masks, the EVA02's RoPE table). */
int sd_tagger_move(sd_tagger *m, sd_devkind dev);

/* logits [N, classes] (f32) = model(x [N, 3, size, size] f32), all on the model's device. */
int sd_tagger_forward(sd_ctx *ctx, sd_tagger *m, sd_tensor *logits, const sd_tensor *x);

/* ---- preprocessing ------------------------------------------------------------------------ */

enum sd_tagger_preset {
    SD_TAGGER_PRE_KOHYA = 0,  /* tag_images_by_wd14_tagger.py: square >= size: OpenCV INTER_AREA,
                                 smaller: PIL LANCZOS */
    SD_TAGGER_PRE_WD = 1,     /* SmilingWolf (wd-tagger Space, wdv3-timm): PIL BICUBIC */
};

/* `rgb` (c = 3; alpha already composited over white: sd_image_load(..., SD_ALPHA_WHITE)) padded
 * to a white square of side max(w,h) (offsets floor((S-w)/2), floor((S-h)/2)) and resized to
 * size×size with the preset's filter (a square already of that size is copied). *out is RGB. */
int sd_tagger_prepare_image(const sd_image *rgb, int size, int preset, sd_image *out);
/* The model input of one prepared image: BGR planes, x/127.5 - 1, float [3, h, w]. */
void sd_tagger_image_to_input(const sd_image *im, float *chw);
/* The input of SmilingWolf's model.onnx graphs (v1-v3; sd-tag --onnx): the prepared image as
 * float [h, w, 3] (NHWC), BGR, values 0..255 (the graph scales them itself). */
void sd_tagger_image_to_nhwc_bgr(const sd_image *im, float *hwc);

#endif
