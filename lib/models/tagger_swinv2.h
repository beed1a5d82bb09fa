/* WD tagger, SwinV2 architecture (SmilingWolf wd-swinv2-tagger-v3: timm `swinv2_base_window8_256`
 * with img_size 448, window_size 14, act_layer gelu_tanh; model.safetensors). Used through
 * models/tagger.h (sd_tagger_open detects it from layers.0.blocks.0.attn.logit_scale and
 * dispatches here).
 *
 * Model (timm SwinTransformerV2, pretrained_window_sizes 0, every LayerNorm eps 1e-5 (torch's
 * nn.LayerNorm default), tokens channels-last [N,H,W,C]):
 *   patch_embed.proj conv P×P stride P (bias) -> patch_embed.norm (LayerNorm over C)
 *   layers.S: [downsample (stages 1.., timm ≥ 0.9 layout): PatchMerging = the 2×2 neighbourhood
 *              x[2i+a, 2j+b] concatenated in the order (a,b) = (0,0), (1,0), (0,1), (1,1)
 *              (timm's reshape(B,H/2,2,W/2,2,C).permute(0,1,3,4,2,5)), reduction Linear 4C->2C
 *              without bias, then norm (LayerNorm over 2C)]
 *             blocks.B (residual post-norm): x += norm1(attn(x)); x += norm2(mlp.fc2(act(mlp.fc1(x))))
 *   attn: window ws = min(target window, stage resolution); odd blocks shift by ws/2 when the
 *     resolution is larger than the window (else no shift); windows of the (rolled by −shift) map,
 *     qkv Linear (no bias of its own; bias = cat(q_bias, 0, v_bias)), per head:
 *     A = normalize(q)·normalize(k)ᵀ · exp(min(logit_scale, ln 100)) + 16·sigmoid(cpb bias)
 *         [+ the shifted-window mask: −100 between tokens of different regions],
 *     softmax, ·v, heads concatenated, proj Linear (bias), windows merged and rolled back.
 *     cpb bias: cpb_mlp (Linear 2->hidden with bias, ReLU, Linear hidden->heads without bias) over
 *     the relative-coordinate table t = sign(u)·log2(|u|+1)/log2(8), u = 8·d/(ws−1) for the
 *     offsets d in [−(ws−1), ws−1] of both axes, gathered by the pair's relative position.
 *   head: norm (LayerNorm) -> mean over the tokens -> head.fc (Linear).
 * Sizes come from the tensor shapes: C0 and P from patch_embed.proj.weight, the stage count from
 * the layers.S.blocks.0 keys, the widths from norm1, the heads from attn.logit_scale [heads,1,1],
 * the depths from the blocks.B keys, the MLP width from mlp.fc1, the classes from head.fc. Not in
 * the file: the input size (__metadata__ "img_size", else 448), the target window ("window_size",
 * else 14: the v3 config's) and the MLP activation ("act_layer": "gelu_tanh" (default) or "gelu").
 * (timm takes act_layer for SwinV2 from 1.0.3 on, a change by the tagger's author for the v3
 * models; timm 0.9.16 swallows the config's act_layer in **kwargs and runs nn.GELU, the exact form.
 * Otherwise 0.9.16 and 1.0 agree for the v3 geometry: 1.0 only adds padding of maps that the
 * window does not divide, which this refuses as 0.9 does.)
 * The tables, relative position index and masks are computed (timm keeps them as non-persistent
 * buffers; if a file has them they are checked for shape and ignored), and so are the per-block
 * constants: qkv bias, exp(clamped logit_scale) and the 16·sigmoid position bias [heads,T,T]
 * (T = ws²), computed once at open on the host from the file's weights and kept on the model's
 * device. A stage resolution that the window does not divide (timm ≥ 1.0 pads there; 0.9 fails)
 * and a window of 1 are refused. Loading is strict (missing, extra or ill-shaped tensor:
 * SD_EFORMAT naming file and key); F32/F16/BF16 weights are held as f32. The forward uses only
 * the op API (CPU or CUDA). */
#ifndef SD_MODELS_TAGGER_SWINV2_H
#define SD_MODELS_TAGGER_SWINV2_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "nn/nn.h"

#define SD_SWINV2_MAX_STAGES 8

typedef struct sd_swinv2_block {
    int shift;                           /* 0 or ws/2 */
    sd_layernorm norm1, norm2;
    sd_linear qkv, proj, fc1, fc2;       /* qkv without its own bias */
    sd_param *q_bias, *v_bias, *logit_scale, *cpb0_w, *cpb0_b, *cpb2_w;   /* loaded, used at open */
    sd_tensor qkv_b, scale, bias;        /* derived, views of c->derived: [3C], [heads,1,1], [heads,T,T] */
} sd_swinv2_block;

typedef struct sd_swinv2_stage {
    int64_t dim, depth, heads, mlp, cpb_hidden;
    int64_t h;                           /* resolution (square) of the stage's blocks */
    int ws;                              /* effective window */
    int has_down;
    sd_linear down_red;
    sd_layernorm down_norm;
    sd_tensor mask;                      /* [nW,1,T,T] for the shifted blocks (view of c->derived) */
    sd_swinv2_block *blocks;
} sd_swinv2_stage;

typedef struct sd_tagger_swinv2 {
    int64_t patch, grid, nstages, classes, size, window;
    sd_act act;
    sd_conv2d patch_embed;
    sd_layernorm patch_norm;
    sd_swinv2_stage stages[SD_SWINV2_MAX_STAGES];
    sd_layernorm norm;
    sd_linear head;
    float *host;                         /* the derived constants, built from the file */
    int64_t nderived;
    sd_tensor derived;                   /* the same on the model's device */
} sd_tagger_swinv2;

/* Register the model's parameters in `r` (sizes from the file's shapes; see above), compute the
 * derived constants on the host from the file, fill c->size and c->classes; the caller allocates
 * and loads `r`, then calls sd_tagger_swinv2_upload. Errors name the file. */
int sd_tagger_swinv2_build(sd_tagger_swinv2 *c, sd_params *r, const sd_safetensors *st);
/* Put the derived constants on `dev` (and free the host copy). */
int sd_tagger_swinv2_upload(sd_tagger_swinv2 *c, sd_devkind dev);
/* Move the derived constants to `dev` (sd_tagger_move: the parameters move with the registry). */
int sd_tagger_swinv2_move(sd_tagger_swinv2 *c, sd_devkind dev);
void sd_tagger_swinv2_free(sd_tagger_swinv2 *c);

/* logits [N, classes] (f32) = model(x [N, 3, size, size] f32), all on the parameters' device. */
int sd_tagger_swinv2_forward(sd_ctx *ctx, sd_tagger_swinv2 *c, sd_tensor *logits, const sd_tensor *x);

/* sd_tagger_open() for a SwinV2 file: m->swin built, m->r allocated and loaded (on `dev`),
 * m->size and m->classes set (the ViT-only fields stay 0). */
struct sd_tagger;
int sd_tagger_swinv2_open(struct sd_tagger *m, const sd_safetensors *st, sd_devkind dev);

/* Bytes of ctx scratch one image of a forward needs (activations; the caller adds slack). */
size_t sd_tagger_swinv2_scratch_per_image(const sd_tagger_swinv2 *c);

#endif
