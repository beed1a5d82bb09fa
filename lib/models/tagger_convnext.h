/* WD tagger, ConvNeXt architecture (SmilingWolf wd-convnext-tagger-v3: timm `convnext_base`,
 * act_layer gelu_tanh, 448×448 input, model.safetensors). Used through models/tagger.h
 * (sd_tagger_open detects it from stem.0.weight and dispatches here).
 *
 * Model (timm ConvNeXt with stem_type "patch", conv_mlp False, head_norm_first False, no
 * head_hidden_size; every LayerNorm eps 1e-6):
 *   stem.0 conv P×P stride P (bias) -> stem.1 LayerNorm2d (over the channels of each pixel)
 *   stages.S: [downsample.0 LayerNorm2d -> downsample.1 conv k×k stride k (bias), when present:
 *              stages 1.. in timm, k = 2]
 *             blocks.B: x += gamma ⊙ permute(mlp.fc2(act(mlp.fc1(norm(permute(conv_dw(x)))))))
 *               conv_dw: depthwise k×k (7), padding k/2, bias; norm: LayerNorm over channels
 *               (channels-last); fc1 C -> 4C, fc2 4C -> C (Linear, bias); gamma [C] (layer scale,
 *               optional when the file has none)
 *   head: global average pool -> head.norm (LayerNorm over channels) -> head.fc (Linear).
 * Sizes come from the tensor shapes: stage count from the stages.S.blocks.0 keys, widths from
 * conv_dw.weight [C,1,k,k], depths from the blocks.B keys, the MLP width from mlp.fc1, the classes
 * from head.fc.weight. Not stored in the file: the input size (the __metadata__ key "img_size" if
 * present, else 448, the v3 taggers' size) and the MLP activation ("act_layer": "gelu_tanh", the
 * v3 config's and the default, or "gelu" for the exact erf form).
 * Loading is strict (a missing, extra or ill-shaped tensor is an SD_EFORMAT naming file and key);
 * F32/F16/BF16 weights are held as f32. The forward uses only the op API (CPU or CUDA). */
#ifndef SD_MODELS_TAGGER_CONVNEXT_H
#define SD_MODELS_TAGGER_CONVNEXT_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "nn/nn.h"

#define SD_CONVNEXT_MAX_STAGES 8

typedef struct sd_convnext_block {
    sd_param *dw_w, *dw_b, *gamma;       /* conv_dw [C,1,k,k], [C]; gamma [C] or NULL */
    sd_layernorm norm;
    sd_linear fc1, fc2;
} sd_convnext_block;

typedef struct sd_convnext_stage {
    int64_t dim, depth, mlp, kernel;     /* width, blocks, MLP width, conv_dw size */
    int64_t h;                           /* spatial size (square) of the stage's blocks */
    int has_down;
    sd_layernorm down_norm;
    sd_conv2d down;
    sd_convnext_block *blocks;
} sd_convnext_stage;

typedef struct sd_tagger_convnext {
    int64_t patch, stem_h, nstages, classes, size;
    sd_act act;
    sd_conv2d stem;
    sd_layernorm stem_norm;
    sd_convnext_stage stages[SD_CONVNEXT_MAX_STAGES];
    sd_layernorm head_norm;
    sd_linear head;
} sd_tagger_convnext;

/* Register the model's parameters in `r` (sizes from the file's shapes; see above) and fill
 * c->size and c->classes; the caller allocates and loads `r`. Errors name the file. */
int sd_tagger_convnext_build(sd_tagger_convnext *c, sd_params *r, const sd_safetensors *st);
void sd_tagger_convnext_free(sd_tagger_convnext *c);

/* logits [N, classes] (f32) = model(x [N, 3, size, size] f32), all on the parameters' device. */
int sd_tagger_convnext_forward(sd_ctx *ctx, sd_tagger_convnext *c, sd_tensor *logits, const sd_tensor *x);

/* sd_tagger_open() for a ConvNeXt file: m->cnx built, m->r allocated and loaded (on `dev`),
 * m->size and m->classes set (the ViT-only fields stay 0). */
struct sd_tagger;
int sd_tagger_convnext_open(struct sd_tagger *m, const sd_safetensors *st, sd_devkind dev);

/* Bytes of ctx scratch one image of a forward needs (activations; the caller adds slack). */
size_t sd_tagger_convnext_scratch_per_image(const sd_tagger_convnext *c);

#endif
