/* The SD1.x / SD2.x / SDXL-base UNet (ldm/sgm openaimodel.UNetModel with SpatialTransformers),
 * config-driven, with explicit forward and backward.
 *
 * Structure and checkpoint names (below the prefix, "model.diffusion_model." in single files;
 * Diffusers names in brackets):
 *   time_embed.0 / .2               linear mc → 4·mc, SiLU, linear 4·mc → 4·mc (on the sinusoidal
 *                                   timestep embedding, [cos, sin], max period 10000)
 *                                   [time_embedding.linear_1 / linear_2]
 *   label_emb.0.0 / .0.2            only when adm_in_channels > 0 (SDXL: 2816): linear adm → 4·mc,
 *                                   SiLU, linear 4·mc → 4·mc on the vector input `vec`, added to
 *                                   the time embedding before any ResBlock uses it (sgm: emb =
 *                                   time_embed(t_emb) + label_emb(y)) [add_embedding.linear_1 / _2]
 *   input_blocks.0.0                conv_in 3×3 (in_channels → mc) [conv_in]
 *   input_blocks.k.{0,1}            per level, num_res_blocks × [ResBlock, SpatialTransformer with
 *                                   transformer_depth[level] blocks if the level is in
 *                                   attention_resolutions]; input_blocks.k.0.op is the stride-2
 *                                   Downsample between levels [down_blocks.L.resnets.j,
 *                                   .attentions.j, .downsamplers.0.conv]
 *   middle_block.{0,1,2}            ResBlock, SpatialTransformer (transformer_depth_middle blocks),
 *                                   ResBlock [mid_block.resnets.0, .attentions.0, .resnets.1]
 *   output_blocks.k.{0,1,2}         per level (deepest first), num_res_blocks+1 × [ResBlock on
 *                                   cat(h, skip), SpatialTransformer if attention, Upsample
 *                                   ("conv") at the end of every level but the last]
 *                                   [up_blocks.(L-1-level).resnets.j, .attentions.j, .upsamplers.0.conv]
 *   out.0 / out.2                   GroupNorm(32)+SiLU, conv 3×3 (mc → out_channels)
 *                                   [conv_norm_out, conv_out]
 * Inside a SpatialTransformer the names are the same in both namings: norm, proj_in,
 * transformer_blocks.i.{norm1,attn1,norm2,attn2,norm3,ff}, proj_out.
 * SD1: heads = num_heads, proj_in/proj_out stored as 1×1 convs; SD2 and SDXL: head width
 * num_head_channels, linear proj_in/proj_out (use_linear_in_transformer). Both run as the same
 * linear math. SDXL base: levels 320/640/1280, no attention at level 0 (Diffusers DownBlock2D /
 * UpBlock2D: down_blocks.0 and up_blocks.2 have resnets only), depth 2 at level 1, 10 at level 2
 * and in the middle, context 2048, label_emb 2816 → 1280. SDXL single files use exactly these ldm
 * names (kohya's sdxl_original_unet keeps them, so its LoRA names are "lora_unet_" + the ldm name
 * with '.' → '_': "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q").
 *
 * Training step (no allocation inside):
 *   sd_nn_plan p = sd_unet_plan(&u, N, H, W, S);     once per latent/context shape
 *   sd_nn_arena_init(&act, SD_DEV_CPU, p.saved);      once (reuse for smaller shapes)
 *   sd_unet_forward(ctx, &u, &act, &eps, &x, &t, &c, vec_or_NULL);
 *   ... loss, d eps ...
 *   sd_unet_backward(ctx, &u, &dx_or_NULL, &dc_or_NULL, &dvec_or_NULL, &deps);
 *   sd_arena_reset(&act, 0);
 * Backward ACCUMULATES into dx, dcontext, dvec and the gradients of the trainable parameters
 * (frozen ones get none; see nn/params.h). ctx->scratch must hold p.scratch plus the ops' own
 * scratch. */
#ifndef SD_MODELS_UNET_H
#define SD_MODELS_UNET_H

#include "io/safetensors.h"
#include "models/model_config_core.h"
#include "nn/nn.h"

/* What a linear or conv layer belongs to, in the reference's (kohya LoRA) terms. */
typedef enum sd_unet_role {
    SD_UNET_ROLE_TRANSFORMER = 1,  /* inside a SpatialTransformer (diffusers Transformer2DModel): proj_in,
                                      proj_out, attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj,
                                      ff.net.2. LoRA always targets these. */
    SD_UNET_ROLE_RESBLOCK = 2,     /* ResBlock (ResnetBlock2D): in_layers.2, out_layers.3 (3×3),
                                      emb_layers.1 (linear), skip_connection (1×1). LoRA with conv_dim. */
    SD_UNET_ROLE_SAMPLER = 3,      /* Downsample op / Upsample conv (3×3). LoRA with conv_dim. */
    SD_UNET_ROLE_OTHER = 4,        /* time_embed.*, label_emb.*, input_blocks.0.0, out.2: never LoRA
                                      targets */
} sd_unet_role;

/* One linear or conv layer, for attaching LoRA modules (sd_linear_set_lora/sd_conv2d_set_lora). */
typedef struct sd_unet_layer {
    const char *key;         /* ldm name below the UNet prefix, without ".weight":
                                "input_blocks.1.1.transformer_blocks.0.attn1.to_q" */
    const char *diffusers;   /* the same layer's Diffusers name (kohya's SD1/SD2 LoRA names; its
                                SDXL LoRA names come from `key`):
                                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" */
    sd_unet_role role;
    sd_linear *linear;       /* exactly one of linear / conv is set */
    sd_conv2d *conv;
    int64_t in, out;
    int kh, kw;              /* 1×1 for linears */
    int conv1x1;             /* a linear whose checkpoint weight is a 1×1 conv [out,in,1,1]
                                (SD1 proj_in/proj_out). kohya gives conv-shaped LoRA weights
                                ([r,in,1,1]/[out,r,1,1]) to these, and also to SD2's linear
                                proj_in/proj_out when the model came from a single-file checkpoint
                                (it reshapes them to 1×1 convs on load, spec §7.1), but not when it
                                came from Diffusers: the LoRA code decides from the source. */
} sd_unet_layer;

/* One TimestepEmbedSequential: up to three sub-layers run in order. */
typedef struct sd_unet_block {
    sd_conv2d *conv_in;             /* input_blocks.0 only */
    sd_resblock *res;
    sd_resblock *res2;              /* middle_block.2 */
    sd_spatial_transformer *st;
    sd_downsample *down;
    sd_upsample *up;
    int nsub;
    int kind[3];                    /* sub-layer kinds in order (internal) */
    int skip;                       /* output blocks: input block whose output is concatenated; else -1 */
    int64_t cin, cout;              /* channels in (after the concat) and out */
    char name[32];                  /* "input_blocks.4", "middle_block", "output_blocks.2" */
    /* state of the last training forward */
    sd_tensor t[4];                 /* t[0] input (the concat for output blocks), t[k+1] sub k output */
    int checkpoint;
} sd_unet_block;

typedef struct sd_unet {
    sd_unet_config cfg;
    sd_params *params;
    char *prefix;                   /* registry key prefix with its trailing '.', or "" */
    sd_linear time1, time2;
    sd_linear label1, label2;       /* label_emb.0.0 / .0.2 when cfg.adm_in_channels > 0 */
    sd_groupnorm out_norm;
    sd_conv2d out_conv;
    sd_unet_block *blocks;          /* n_in input blocks, the middle block, n_out output blocks */
    int n_in, n_out, nblocks;
    sd_unet_layer *layers;
    size_t nlayers;
    /* ldm ↔ diffusers prefix pairs ("input_blocks.1.0.in_layers.0." ↔ "down_blocks.0.resnets.0.norm1.") */
    char **map_ldm, **map_diff;
    size_t nmap;
    /* state of the last training forward */
    int trained;                    /* a training forward happened and no backward since */
    sd_tensor x, temb, e1, e1a, emb, context, o;
    sd_tensor vec, l1, l1a;         /* label_emb input, first linear's output, after SiLU */
    sd_tensor *dhs;                 /* backward: gradients of the input blocks' outputs (n_in) */
    /* ControlNet (sd_unet_set_control) */
    int encoder_only;               /* sd_unet_init_encoder: input blocks and the middle block only */
    const struct sd_unet_control *ctl;
    sd_tensor *skips;               /* forward with residuals: the skips plus them (n_in), the middle output plus its */
    sd_tensor midsum;
} sd_unet;

/* ControlNet hooks of a UNet's forward and backward (diffusers' ControlNetModel and
 * UNet2DConditionModel's down_block_additional_residuals / mid_block_additional_residual).
 * Full UNet: down[i] (the shape of input block i's output) is added to the skip connection input
 * block i feeds to its output block (not to the path into the next input block), mid to the middle
 * block's output; the backward adds d(down[i]) to ddown[i] and d(mid) to dmid and, with
 * stop_at_residuals, returns right there: nothing before the skips gets a gradient (a frozen UNet
 * trained through a ControlNet; dx, dcontext and dvec must then be NULL).
 * Encoder (sd_unet_init_encoder: ControlNet's copy of conv_in, the time embedding, the input
 * blocks and the middle block): add0 is added to input_blocks.0's output (conv_in, before the
 * first ResBlock: the conditioning embedding); the forward's y is NULL and its outputs are
 * sd_unet_block_output(u, 0..n_in); the backward's dy is NULL and dout gives the gradients of
 * those n_in + 1 outputs; dadd0 += d(add0). */
typedef struct sd_unet_control {
    const sd_tensor *down;          /* n_in tensors, or NULL */
    const sd_tensor *mid;
    const sd_tensor *add0;
    sd_tensor *ddown;               /* n_in, or NULL */
    sd_tensor *dmid;
    sd_tensor *dadd0;
    const sd_tensor *dout;          /* encoder backward: n_in + 1 */
    int stop_at_residuals;
} sd_unet_control;

/* Build the UNet of `cfg` (validated here) and register its parameters in `r` below `prefix`
 * ("model.diffusion_model" for the single-file names; NULL or "" for bare names). */
int sd_unet_init(sd_unet *u, sd_params *r, const char *prefix, const sd_unet_config *cfg);
void sd_unet_free(sd_unet *u);
/* The same without the output blocks and out.* (a ControlNet's copy of the UNet's encoder half:
 * same names below `prefix`, same config). */
int sd_unet_init_encoder(sd_unet *u, sd_params *r, const char *prefix, const sd_unet_config *cfg);
/* Hooks of the next forwards and backwards (NULL: none); `c` must stay alive and unchanged while
 * set. Set before sd_unet_plan: a plan with residuals counts the summed skips. */
void sd_unet_set_control(sd_unet *u, const sd_unet_control *c);
/* Output of block i of the last forward (0..n_in-1: input blocks, n_in: the middle block). */
const sd_tensor *sd_unet_block_output(const sd_unet *u, int i);

/* Gradient checkpointing of the ResBlocks and SpatialTransformers of one block ("input_blocks.4",
 * "middle_block", "output_blocks.2") or of all (block = NULL). Returns the number of blocks
 * changed, SD_ENOTFOUND for an unknown block name. Gradients are bit-identical either way. */
int sd_unet_set_checkpoint(sd_unet *u, const char *block, int on);

/* Activation-arena bytes of a training forward for x [N, in_channels, H, W], context
 * [N, S, context_dim] (and vec [N, adm_in_channels] when the config has one) (exact: arena use after the forward), and the layer-level scratch the
 * forward/backward/inference take from ctx->scratch at most (an upper bound, not counting the
 * ops' own temporaries). H and W must be multiples of 2^(levels-1). */
sd_nn_plan sd_unet_plan(const sd_unet *u, int64_t n, int64_t h, int64_t w, int64_t s);

/* y [N,out_channels,H,W] = UNet(x [N,in_channels,H,W], t [N] (f32 timesteps), context [N,S,C],
 * vec [N, adm_in_channels] (f32; required when cfg.adm_in_channels > 0, NULL otherwise: SDXL's
 * pooled text embedding + size embeddings)).
 * save = the activation arena (training) or NULL (inference: temporaries from ctx->scratch).
 * In training, x, t, context and vec must stay alive and unchanged until the backward. */
int sd_unet_forward(sd_ctx *ctx, sd_unet *u, sd_arena *save, sd_tensor *y, const sd_tensor *x,
                    const sd_tensor *t, const sd_tensor *context, const sd_tensor *vec);
/* dx [N,in,H,W], dcontext [N,S,C] and dvec [N,adm] (any may be NULL; dvec only with a vec) and
 * the trainable parameters' grads += the gradient of dy (the gradient of the output). */
int sd_unet_backward(sd_ctx *ctx, sd_unet *u, sd_tensor *dx, sd_tensor *dcontext, sd_tensor *dvec,
                     const sd_tensor *dy);

/* ---- LoRA hook points ------------------------------------------------------------------------ */

size_t sd_unet_layer_count(const sd_unet *u);
const sd_unet_layer *sd_unet_layer_at(const sd_unet *u, size_t i);
/* By ldm name (below the prefix, without ".weight"); NULL when absent. */
const sd_unet_layer *sd_unet_layer_find(const sd_unet *u, const char *key);

/* ---- checkpoint names ------------------------------------------------------------------------ */

typedef enum sd_unet_naming {
    SD_UNET_NAMES_LDM = 0,          /* ldm/original names (single-file checkpoints) */
    SD_UNET_NAMES_DIFFUSERS = 1,    /* Diffusers UNet2DConditionModel (unet/diffusion_pytorch_model.safetensors) */
} sd_unet_naming;

/* Convert one name below the UNet prefix between ldm and Diffusers naming (kohya's
 * model_util.py unet_conversion_map, generalised to this config's levels and block counts):
 * "input_blocks.1.0.in_layers.0.weight" ↔ "down_blocks.0.resnets.0.norm1.weight". SD_ENOTFOUND
 * when the name is not one of this UNet's; SD_ERANGE when `out` is too small. */
int sd_unet_name_to_diffusers(const sd_unet *u, const char *ldm, char *out, size_t n);
int sd_unet_name_from_diffusers(const sd_unet *u, const char *diffusers, char *out, size_t n);

/* Load the UNet's parameters (the registry must be allocated) from `st`.
 * LDM naming: tensors are `file_prefix` + ldm name ("model.diffusion_model." for a full
 * checkpoint, "" for a bare UNet file); other tensors of the file are ignored.
 * Diffusers naming: bare Diffusers names (file_prefix ignored); every tensor must belong to the UNet.
 * Strict otherwise (missing keys, wrong shapes); `flags` adds SD_LOAD_* leniencies. 1×1-conv and
 * linear spellings of proj_in/proj_out are both accepted (SD2 single files vs Diffusers). */
int sd_unet_load(sd_unet *u, const sd_safetensors *st, sd_unet_naming naming, const char *file_prefix,
                 unsigned flags, sd_load_report *rep);

/* Matrix-product FLOPs of one forward at latent h×w with s context tokens (2·M·N·K per conv,
 * linear and attention product, batch 1), for GFLOP/s figures in benchmarks. A frozen-weight
 * training step (input gradients only) is about twice this. */
double sd_unet_forward_flops(const sd_unet *u, int64_t h, int64_t w, int64_t s);
/* The part of those FLOPs in products with weights (every conv and linear; not the attention score
 * products): what the weight gradients of a full fine-tune step add to the frozen-weight step. */
double sd_unet_weight_flops(const sd_unet *u, int64_t h, int64_t w, int64_t s);

#endif
