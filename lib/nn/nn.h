/* Layers with explicit forward and backward (llm.c style, no autograd).
 *
 * Conventions (every layer below)
 * - init(layer, registry, key_prefix, sizes..., flags) registers the parameters under their
 *   ldm/diffusers checkpoint names ("in_layers.0.weight", "transformer_blocks.0.attn1.to_q.weight")
 *   below key_prefix. Values are read from the registry at run time (f16/bf16 frozen linear and
 *   conv weights are converted per use by the ops).
 * - forward(ctx, layer, save, outputs..., inputs...): outputs are allocated by the caller and
 *   overwritten. `save` is the activation arena of a training step: the layer takes the tensors
 *   its backward needs from it (in a fixed order) and remembers them, together with references to
 *   its inputs, in the layer struct. The caller keeps the inputs alive (unchanged) until the
 *   backward, and resets the arena after the step. save = NULL is inference: nothing is kept.
 *   Temporaries always come from ctx->scratch and are released before returning.
 * - backward(ctx, layer, input grads..., output grad) ACCUMULATES (+=) into the input gradients
 *   (NULL = not needed) and into the gradients of trainable parameters; frozen parameters get
 *   none (the ops receive dw = NULL). It uses what the last training forward saved.
 * - plan(layer, input shape(s)) returns the bytes a training forward takes from `save` (exact:
 *   arena use after forward == plan.saved, rounded to 64) and the layer-level scratch it needs
 *   at most (forward, backward, inference, recomputation), not counting the ops' own scratch.
 *   A model sums the saved bytes of its blocks (plus its own block outputs), allocates one arena
 *   once (sd_nn_arena_init) and resets it after each step: no allocation inside the step.
 * - Blocks (resblock, transformer block, spatial transformer) have `checkpoint`: when set, a
 *   training forward keeps only references to its inputs (saved bytes 0) and the backward
 *   recomputes the internals into scratch first. Gradients are bit-identical either way.
 * - LoRA: linear and conv layers have `lora` (sd_lora *, NULL = none); see lora_hook.h. A LoRA
 *   with dropouts saves its masks only while its runtime says `training`: plan after setting it,
 *   and keep rt->step unchanged between a forward and its backward (checkpointed blocks redraw
 *   the same masks from it). The host staging buffer for the masks grows on the first training
 *   step only.
 * - Layers never read tensor data on the host (they run unchanged on CUDA tensors). */
#ifndef SD_NN_NN_H
#define SD_NN_NN_H

#include <stddef.h>
#include <stdint.h>

#include "nn/lora_hook.h"
#include "nn/lyco.h"
#include "nn/oft.h"
#include "nn/params.h"
#include "tensor/ops.h"

typedef struct sd_nn_plan {
    size_t saved;     /* bytes taken from the activation arena by a training forward */
    size_t scratch;   /* peak layer-level bytes taken from ctx->scratch */
} sd_nn_plan;

/* Combine plans of blocks that run one after the other: saved bytes add up, scratch is the max. */
static inline void sd_nn_plan_add(sd_nn_plan *total, sd_nn_plan p)
{
    total->saved += p.saved;
    if (p.scratch > total->scratch) total->scratch = p.scratch;
}

/* Reserve an activation arena for `bytes` (a model's summed plan) on `device`. */
int sd_nn_arena_init(sd_arena *a, sd_devkind device, size_t bytes);

enum {
    SD_NN_BIAS = 1u << 0,         /* linear/conv: has a bias */
    SD_NN_CONV1X1 = 1u << 1,      /* linear: weight stored as a 1×1 conv [out, in, 1, 1] */
};

/* ---- linear: y[..., out] = x[..., in]·wᵀ + b ---------------------------------------------- */

typedef struct sd_linear {
    sd_param *w, *b;
    int64_t in, out;
    sd_lora *lora;
    sd_oft *oft;                  /* OFT module (NULL = none): the layer runs with RW instead of W */
    sd_lyco *lyco;                /* LyCORIS weight-delta module (NULL = none): runs with W + mΔW */
    sd_tensor x;                  /* saved: input reference */
} sd_linear;

int sd_linear_init(sd_linear *l, sd_params *r, const char *prefix, int64_t in, int64_t out, unsigned flags);
int sd_linear_forward(sd_ctx *ctx, sd_linear *l, sd_arena *save, sd_tensor *y, const sd_tensor *x);
int sd_linear_backward(sd_ctx *ctx, sd_linear *l, sd_tensor *dx, const sd_tensor *dy);
sd_nn_plan sd_linear_plan(const sd_linear *l, int ndim, const int64_t *x_shape);
/* Attach a LoRA branch (shapes checked: linear math, in/out equal). */
int sd_linear_set_lora(sd_linear *l, sd_lora *lora);
/* Attach an OFT module (nn/oft.h; rows checked; not together with a LoRA). */
int sd_linear_set_oft(sd_linear *l, sd_oft *oft);
/* Attach a LyCORIS weight-delta module (nn/lyco.h; size checked; not with a LoRA or OFT). */
int sd_linear_set_lyco(sd_linear *l, sd_lyco *m);

/* ---- conv2d: y [N,cout,Ho,Wo] = conv(x [N,cin,H,W]) + b ------------------------------------ */

typedef struct sd_conv2d {
    sd_param *w, *b;
    int64_t cin, cout;
    int kh, kw;
    sd_conv2d_geom g;
    sd_lora *lora;
    sd_oft *oft;
    sd_lyco *lyco;
    sd_tensor x;
} sd_conv2d;

int sd_conv2d_init(sd_conv2d *c, sd_params *r, const char *prefix, int64_t cin, int64_t cout,
                   int kh, int kw, sd_conv2d_geom g, unsigned flags);
void sd_conv2d_out_shape(const sd_conv2d *c, const int64_t *x_shape, int64_t *y_shape);
int sd_conv2d_forward(sd_ctx *ctx, sd_conv2d *c, sd_arena *save, sd_tensor *y, const sd_tensor *x);
int sd_conv2d_backward(sd_ctx *ctx, sd_conv2d *c, sd_tensor *dx, const sd_tensor *dy);
sd_nn_plan sd_conv2d_plan(const sd_conv2d *c, const int64_t *x_shape);
int sd_conv2d_set_lora(sd_conv2d *c, sd_lora *lora);
int sd_conv2d_set_oft(sd_conv2d *c, sd_oft *oft);
int sd_conv2d_set_lyco(sd_conv2d *c, sd_lyco *m);

/* ---- group norm (+ fused SiLU) over x [N, C, ...] -------------------------------------------- */

typedef struct sd_groupnorm {
    sd_param *w, *b;
    int64_t c;
    int groups;
    float eps;
    sd_act act;                   /* SD_ACT_NONE or SD_ACT_SILU */
    sd_tensor x, mean, rstd;
} sd_groupnorm;

int sd_groupnorm_init(sd_groupnorm *g, sd_params *r, const char *prefix, int64_t c, int groups,
                      float eps, sd_act act);
int sd_groupnorm_forward(sd_ctx *ctx, sd_groupnorm *g, sd_arena *save, sd_tensor *y, const sd_tensor *x);
int sd_groupnorm_backward(sd_ctx *ctx, sd_groupnorm *g, sd_tensor *dx, const sd_tensor *dy);
sd_nn_plan sd_groupnorm_plan(const sd_groupnorm *g, int ndim, const int64_t *x_shape);

/* ---- layer norm over the last axis ---------------------------------------------------------- */

typedef struct sd_layernorm {
    sd_param *w, *b;
    int64_t c;
    float eps;
    sd_tensor x, mean, rstd;
} sd_layernorm;

int sd_layernorm_init(sd_layernorm *n, sd_params *r, const char *prefix, int64_t c, float eps);
int sd_layernorm_forward(sd_ctx *ctx, sd_layernorm *n, sd_arena *save, sd_tensor *y, const sd_tensor *x);
int sd_layernorm_backward(sd_ctx *ctx, sd_layernorm *n, sd_tensor *dx, const sd_tensor *dy);
sd_nn_plan sd_layernorm_plan(const sd_layernorm *n, int ndim, const int64_t *x_shape);

/* ---- attention: to_q/to_k/to_v/to_out.0 (ldm CrossAttention) ------------------------------ */

typedef enum sd_attn_style {
    SD_ATTN_LDM = 0,    /* to_q, to_k, to_v (no bias), to_out.0 (bias) */
    SD_ATTN_CLIP = 1,   /* q_proj, k_proj, v_proj, out_proj (all with bias) (HF CLIP) */
    SD_ATTN_VAE = 2,    /* q, k, v, proj_out: 1×1 convs [C, C, 1, 1] with bias (ldm AttnBlock),
                           run as linears over [B, H·W, C] */
} sd_attn_style;

typedef struct sd_attention {
    sd_linear q, k, v, out;
    int64_t dim, context_dim, inner;
    int heads, causal;
    sd_tensor x, context;         /* saved references (context.data NULL: self-attention) */
    sd_tensor qt, kt, vt, ot, lse;
} sd_attention;

/* context_dim 0: self-attention. inner = heads·dim_head. */
int sd_attention_init(sd_attention *a, sd_params *r, const char *prefix, int64_t dim,
                      int64_t context_dim, int heads, int64_t dim_head, sd_attn_style style);
/* x [B,T,dim], context [B,S,context_dim] (NULL for self-attention), y [B,T,dim]. */
int sd_attention_forward(sd_ctx *ctx, sd_attention *a, sd_arena *save, sd_tensor *y,
                         const sd_tensor *x, const sd_tensor *context);
/* dcontext: gradient of the context (NULL: not needed; ignored for self-attention). */
int sd_attention_backward(sd_ctx *ctx, sd_attention *a, sd_tensor *dx, sd_tensor *dcontext,
                          const sd_tensor *dy);
sd_nn_plan sd_attention_plan(const sd_attention *a, const int64_t *x_shape, const int64_t *context_shape);

/* ---- feed-forward: proj (dim → inner or 2·inner) → act / GEGLU → out (inner → dim) ----------- */

typedef enum sd_ff_kind {
    SD_FF_GEGLU = 0,        /* ff.net.0.proj [2·inner, dim] → h·gelu(g) → ff.net.2 (SD) */
    SD_FF_GELU,             /* net.0.0 → exact GELU → net.2 (ldm FeedForward, glu=False) */
    SD_FF_CLIP_QUICK_GELU,  /* fc1 → quick_gelu → fc2 (OpenAI CLIP, SD1 text encoder) */
    SD_FF_CLIP_GELU,        /* fc1 → exact GELU → fc2 (OpenCLIP, SD2 text encoder) */
} sd_ff_kind;

typedef struct sd_ff {
    sd_linear proj, out;
    sd_ff_kind kind;
    int64_t dim, inner;
    sd_tensor h, g;               /* saved: proj output, activation output */
} sd_ff;

int sd_ff_init(sd_ff *f, sd_params *r, const char *prefix, int64_t dim, int64_t inner, sd_ff_kind kind);
int sd_ff_forward(sd_ctx *ctx, sd_ff *f, sd_arena *save, sd_tensor *y, const sd_tensor *x);
int sd_ff_backward(sd_ctx *ctx, sd_ff *f, sd_tensor *dx, const sd_tensor *dy);
sd_nn_plan sd_ff_plan(const sd_ff *f, int ndim, const int64_t *x_shape);

/* ---- ldm ResBlock with time embedding ------------------------------------------------------
 * in_layers: GroupNorm(32, eps 1e-5)+SiLU (in_layers.0), conv 3×3 (in_layers.2); emb_layers:
 * SiLU, linear (emb_layers.1); out_layers: GroupNorm+SiLU (out_layers.0), dropout (p = 0 only),
 * conv 3×3 (out_layers.3); skip_connection: 1×1 conv when cin != cout, identity otherwise.
 * out = skip(x) + out_layers(in_layers(x) + emb_layers(emb)[:, :, None, None]). */

typedef struct sd_resblock {
    sd_groupnorm norm1, norm2;
    sd_conv2d conv1, conv2, skip;
    sd_linear emb;
    int64_t cin, cout, emb_dim;
    int has_skip, checkpoint;
    sd_tensor x, embx;            /* saved references */
    sd_tensor e, a1, h2, a2;      /* saved internals */
    int recompute;                /* the last training forward was checkpointed */
} sd_resblock;

int sd_resblock_init(sd_resblock *b, sd_params *r, const char *prefix, int64_t cin, int64_t cout,
                     int64_t emb_dim);
/* x [N,cin,H,W], emb [N,emb_dim] (the time embedding, before SiLU), y [N,cout,H,W]. */
int sd_resblock_forward(sd_ctx *ctx, sd_resblock *b, sd_arena *save, sd_tensor *y,
                        const sd_tensor *x, const sd_tensor *emb);
int sd_resblock_backward(sd_ctx *ctx, sd_resblock *b, sd_tensor *dx, sd_tensor *demb, const sd_tensor *dy);
sd_nn_plan sd_resblock_plan(const sd_resblock *b, const int64_t *x_shape);

/* ---- BasicTransformerBlock: x += attn1(norm1(x)); x += attn2(norm2(x), ctx); x += ff(norm3(x)) */

typedef struct sd_transformer_block {
    sd_layernorm norm1, norm2, norm3;
    sd_attention attn1, attn2;
    sd_ff ff;
    int64_t dim;
    int checkpoint, recompute;
    sd_tensor x, context;
    sd_tensor n1, h1, n2, h2, n3;
} sd_transformer_block;

int sd_transformer_block_init(sd_transformer_block *t, sd_params *r, const char *prefix, int64_t dim,
                              int heads, int64_t dim_head, int64_t context_dim);
int sd_transformer_block_forward(sd_ctx *ctx, sd_transformer_block *t, sd_arena *save, sd_tensor *y,
                                 const sd_tensor *x, const sd_tensor *context);
int sd_transformer_block_backward(sd_ctx *ctx, sd_transformer_block *t, sd_tensor *dx,
                                  sd_tensor *dcontext, const sd_tensor *dy);
sd_nn_plan sd_transformer_block_plan(const sd_transformer_block *t, const int64_t *x_shape,
                                     const int64_t *context_shape);

/* ---- ldm SpatialTransformer ----------------------------------------------------------------
 * norm: GroupNorm(32, eps 1e-6); proj_in: 1×1 conv (SD1, weight [inner, C, 1, 1]) or linear (SD2,
 * use_linear_in_transformer, [inner, C]); transformer_blocks.0..depth-1 (dim inner, heads ·
 * dim_head = inner); proj_out likewise (inner → C); out = x + proj_out(...). Both proj variants
 * run as a linear over [B, H·W, C] (a 1×1 conv is the same product). */

typedef struct sd_spatial_transformer {
    sd_groupnorm norm;
    sd_linear proj_in, proj_out;
    sd_transformer_block *blocks;
    int depth, linear_proj, checkpoint, recompute;
    int64_t c, inner;
    sd_tensor x, context;
    sd_tensor p, *t;              /* saved: permuted norm output, block inputs/outputs t[0..depth] */
} sd_spatial_transformer;

int sd_spatial_transformer_init(sd_spatial_transformer *s, sd_params *r, const char *prefix, int64_t c,
                                int heads, int64_t dim_head, int depth, int64_t context_dim,
                                int linear_proj);
void sd_spatial_transformer_free(sd_spatial_transformer *s);
/* x [N,C,H,W], context [N,S,context_dim], y [N,C,H,W]. */
int sd_spatial_transformer_forward(sd_ctx *ctx, sd_spatial_transformer *s, sd_arena *save, sd_tensor *y,
                                   const sd_tensor *x, const sd_tensor *context);
int sd_spatial_transformer_backward(sd_ctx *ctx, sd_spatial_transformer *s, sd_tensor *dx,
                                    sd_tensor *dcontext, const sd_tensor *dy);
sd_nn_plan sd_spatial_transformer_plan(const sd_spatial_transformer *s, const int64_t *x_shape,
                                       const int64_t *context_shape);

/* ---- embedding table: y [..., D] = weight[ids[...]] (token / position embeddings) ------------ */

typedef struct sd_embedding {
    sd_param *w;                  /* [V, D] */
    int64_t vocab, dim;
    sd_tensor ids;                /* saved: ids reference (i32) */
} sd_embedding;

/* name: the parameter's own name ("weight" for nn.Embedding; "" to register `prefix` itself,
 * e.g. OpenCLIP's positional_embedding). */
int sd_embedding_init(sd_embedding *e, sd_params *r, const char *prefix, const char *name, int64_t vocab,
                      int64_t dim);
int sd_embedding_forward(sd_ctx *ctx, sd_embedding *e, sd_arena *save, sd_tensor *y, const sd_tensor *ids);
/* weight.grad += scatter of dy (nothing to do when frozen). */
int sd_embedding_backward(sd_ctx *ctx, sd_embedding *e, const sd_tensor *dy);
/* Saves nothing but the ids reference: { 0, 0 }. */
sd_nn_plan sd_embedding_plan(const sd_embedding *e, int ndim, const int64_t *ids_shape);

/* ---- down/upsample -------------------------------------------------------------------------
 * Downsample: conv 3×3 stride 2 padding 1 ("op"; ldm use_conv=True, the only SD variant).
 * Upsample: nearest 2× then conv 3×3 padding 1 ("conv"). */

typedef struct sd_downsample {
    sd_conv2d op;
} sd_downsample;

int sd_downsample_init(sd_downsample *d, sd_params *r, const char *prefix, int64_t cin, int64_t cout);
int sd_downsample_forward(sd_ctx *ctx, sd_downsample *d, sd_arena *save, sd_tensor *y, const sd_tensor *x);
int sd_downsample_backward(sd_ctx *ctx, sd_downsample *d, sd_tensor *dx, const sd_tensor *dy);
sd_nn_plan sd_downsample_plan(const sd_downsample *d, const int64_t *x_shape);

typedef struct sd_upsample {
    sd_conv2d conv;
    sd_tensor u;                  /* saved: upsampled input */
} sd_upsample;

int sd_upsample_init(sd_upsample *u, sd_params *r, const char *prefix, int64_t cin, int64_t cout);
int sd_upsample_forward(sd_ctx *ctx, sd_upsample *u, sd_arena *save, sd_tensor *y, const sd_tensor *x);
int sd_upsample_backward(sd_ctx *ctx, sd_upsample *u, sd_tensor *dx, const sd_tensor *dy);
sd_nn_plan sd_upsample_plan(const sd_upsample *u, const int64_t *x_shape);

#endif
