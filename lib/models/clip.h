/* The SD text encoders: CLIP ViT-L/14 (SD1), OpenCLIP ViT-H/14 (SD2) and SDXL's pair (CLIP ViT-L/14
 * + OpenCLIP ViT-bigG/14 with its text projection) text transformers, forward and backward.
 *
 * One implementation, the Hugging Face CLIPTextModel structure (pre-LN transformer, causal
 * self-attention, MLP, final LayerNorm), as the reference runs them all: kohya converts the SD2
 * OpenCLIP tower to a CLIPTextModel with the last of its layers dropped (model_util.py
 * convert_ldm_clip_checkpoint_v2), which is exactly ldm's FrozenOpenCLIPEmbedder(layer=
 * "penultimate"): all resblocks but the last, then ln_final; SDXL's bigG tower becomes a
 * CLIPTextModelWithProjection with all its layers (sdxl_model_util.convert_sdxl_text_encoder_2_
 * checkpoint).
 *
 *   SD1 (SD_FAMILY_SD1): quick_gelu, `layers` layers.
 *   SD2 (SD_FAMILY_SD2): exact GELU, `layers` - 1 layers run (cfg.layers counts the stored ones).
 *   SDXL (SD_FAMILY_SDXL), cfg.projection_dim == 0: TE1 (CLIP ViT-L): quick_gelu, all `layers`
 *     layers registered (the files carry them and final_layer_norm, though the SDXL encoding
 *     uses neither: the last layer never runs in sd_clip_forward_sdxl()).
 *   SDXL, cfg.projection_dim > 0: TE2 (OpenCLIP bigG): exact GELU, all `layers` layers,
 *     final_layer_norm, and "text_projection.weight" [projection_dim, width] (no bias, applied as
 *     x·Wᵀ), named as HF CLIPTextModelWithProjection names it (top level, not under text_model).
 *
 * Parameters are registered under `prefix` + the HF names ("text_model.embeddings.
 * token_embedding.weight", "text_model.encoder.layers.N.self_attn.q_proj.weight", ...,
 * "text_model.final_layer_norm.weight"); with prefix "cond_stage_model.transformer" the SD1 keys
 * are the single-file checkpoint's. sd_clip_load() maps the file layouts onto these names:
 *   - SD1 single file: cond_stage_model.transformer.text_model.* (also without "text_model.",
 *     as kohya normalises); text_model.embeddings.position_ids is ignored.
 *   - SD2 single file: cond_stage_model.model.{token_embedding.weight, positional_embedding,
 *     transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias (rows q;k;v split into
 *     q_proj/k_proj/v_proj), attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final};
 *     resblocks.{layers-1}, text_projection and logit_scale are not used.
 *   - SDXL single file: TE1 conditioner.embedders.0.transformer.text_model.* (HF names,
 *     position_ids ignored); TE2 conditioner.embedders.1.model.* in the OpenCLIP names above, ALL
 *     resblocks used, text_projection [width, projection_dim] (used as x·P, so our weight is Pᵀ),
 *     logit_scale ignored.
 *   - Diffusers text_encoder/model.safetensors: text_model.* (SD2: layers - 1 stored layers);
 *     SDXL text_encoder_2/: text_model.* + text_projection.weight.
 * sd_clip_openclip_name() gives the reverse (registry name → OpenCLIP file name) for writing.
 *
 * clip_skip (kohya SdTextEncodingStrategy): 0 or 1 = last hidden state (after final LN); k ≥ 2 =
 * hidden_states[-k] of the (converted) model, then the final LayerNorm, i.e. the first
 * n_run - (k-1) layers run. (The reference only warns for SD2 + clip_skip; it does the same.)
 * SDXL ignores clip_skip (the reference warns): see sd_clip_forward_sdxl().
 *
 * Inputs are token ids [B, T] (i32, T ≤ max_len, positions 0..T-1); output [B, T, width]. */
#ifndef SD_MODELS_CLIP_H
#define SD_MODELS_CLIP_H

#include <stdint.h>

#include "io/safetensors.h"
#include "models/detect.h"
#include "models/model_config.h"
#include "nn/nn.h"

typedef struct sd_clip_layer {
    sd_layernorm ln1, ln2;
    sd_attention attn;
    sd_ff mlp;
    sd_tensor x, h, out;          /* saved: input, residual after attention, output */
} sd_clip_layer;

typedef struct sd_clip {
    sd_clip_config cfg;
    sd_family family;             /* SD_FAMILY_SD1, SD_FAMILY_SD2 or SD_FAMILY_SDXL */
    int n_run;                    /* layers instantiated and run without clip_skip (SDXL: all) */
    int eos_id;                   /* SDXL pooling: the EOS token id (49407 for the real vocabulary;
                                     vocab_size - 1 by default, which is that; may be changed) */
    char *prefix;                 /* registry prefix (owned, may be "") */
    sd_embedding tok, pos;
    sd_clip_layer *layers;
    sd_layernorm final_ln;
    sd_linear proj;               /* SDXL TE2: text_projection (w NULL when projection_dim is 0) */
    /* state of the last training forward */
    int ran;                      /* layers run */
    int64_t chunks;               /* chunks per prompt of the last chunked forward (0: none) */
    sd_tensor ids, emb, last;
    /* state of the last SDXL training forward */
    int sdxl;                     /* 1: the last training forward was sd_clip_forward_sdxl[_chunks] */
    int hid_layers;               /* hidden = output after this many layers */
    int pooled_ran;               /* the pooled branch ran (TE2 with a pooled output) */
    sd_tensor pool_idx;           /* i32 [Bp]: flat row (b·T + EOS position) of each pooled row */
} sd_clip;

/* Register the parameters of `family`'s text encoder with the sizes of `cfg` (SDXL: TE1 when
 * cfg->projection_dim is 0, TE2 otherwise; at least 2 layers). */
int sd_clip_init(sd_clip *m, sd_params *r, const char *prefix, const sd_clip_config *cfg, sd_family family);
void sd_clip_free(sd_clip *m);

/* Layers run for clip_skip (0/1: all n_run). SD_EINVAL when clip_skip ≥ n_run + 1 or < 0. */
int sd_clip_layers_for_skip(const sd_clip *m, int clip_skip, int *n);



/* Fill the registry values of the text encoder from `st` (registry allocated). layout
 * (models/detect.h): SD_LAYOUT_LDM = the single-file names of the model's family
 * (cond_stage_model.transformer.[text_model.]* for SD1, cond_stage_model.model.* for SD2),
 * SD_LAYOUT_DIFFUSERS = text_model.* (Diffusers text_encoder, kohya-converted), SD_LAYOUT_NONE =
 * decide from the names (SD_LAYOUT_LDM_BARE does not exist for text encoders). Strict: every
 * parameter must be present with its shape; tensors of the text encoder the model does not use
 * are errors except the ones listed above. Other tensors of the file (UNet, VAE) are ignored. */
int sd_clip_load(sd_clip *m, sd_params *r, const sd_safetensors *st, sd_layout layout);
/* The same with the file prefix given (sd_clip_load uses the family's defaults: SD1
 * "cond_stage_model.transformer.", SD2 "cond_stage_model.model.", SDXL TE1 "conditioner.
 * embedders.0.transformer.", SDXL TE2 "conditioner.embedders.1.model."; Diffusers ""). layout
 * must be SD_LAYOUT_LDM or SD_LAYOUT_DIFFUSERS. SD_LAYOUT_LDM reads the HF names (SD1, SDXL TE1:
 * `file_prefix`text_model.*, or `file_prefix`* without "text_model.") or the OpenCLIP names (SD2,
 * SDXL TE2: `file_prefix`token_embedding.weight, ...); SD_LAYOUT_DIFFUSERS reads
 * `file_prefix`text_model.* (+ `file_prefix`text_projection.weight for TE2). Other tensors of the
 * file outside `file_prefix` are ignored. */
int sd_clip_load_prefix(sd_clip *m, sd_params *r, const sd_safetensors *st, sd_layout layout,
                        const char *file_prefix);

/* Writing an OpenCLIP single file (SD2, SDXL TE2): the file name of the registry parameter whose
 * name after the model's prefix is `hf_key` ("text_model.encoder.layers.3.self_attn.q_proj.weight",
 * "text_projection.weight", ...), as `file_prefix` + the OpenCLIP name. *how says how the tensor
 * is made: SD_CLIP_OC_COPY (the value as is), SD_CLIP_OC_QKV (q_proj, k_proj, v_proj values of
 * that layer concatenated along axis 0, [3·W, W] or [3·W]: the name is given for q, k and v
 * alike), SD_CLIP_OC_TRANSPOSE (text_projection: the [P, W] value transposed to [W, P]).
 * SD_ENOTFOUND for a name without an OpenCLIP counterpart. */
enum { SD_CLIP_OC_COPY = 0, SD_CLIP_OC_QKV = 1, SD_CLIP_OC_TRANSPOSE = 2 };
int sd_clip_openclip_name(const char *hf_key, const char *file_prefix, char *out, size_t n, int *how);

/* y [B,T,width] = encoder(ids [B,T] i32). save: the activation arena of a training step (NULL:
 * inference; then nothing is kept and the temporaries come from ctx->scratch). */
int sd_clip_forward(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *y, const sd_tensor *ids,
                    int clip_skip);
/* Accumulates the gradients of the trainable parameters (token embedding rows included) for
 * dy = dL/dy of the last training forward. d_tokens (may be NULL) += dL/d(token embedding
 * lookup) [B,T,width], for textual inversion without a full-table gradient. */
int sd_clip_backward(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dy);
/* Bytes a training forward of [B,T] ids takes from `save`, and the layer-level scratch. */
sd_nn_plan sd_clip_plan(const sd_clip *m, int64_t B, int64_t T, int clip_skip);

/* The linears kohya's LoRA targets in a text encoder (CLIPAttention and CLIPMLP children:
 * q_proj, k_proj, v_proj, out_proj, fc1, fc2), in layer order, with their HF module names
 * ("text_model.encoder.layers.0.self_attn.q_proj"; kohya's LoRA name is "lora_te_" + the name with
 * '.' → '_'). Stops at and returns the first non-zero return of fn. */
typedef int (*sd_clip_linear_fn)(void *user, const char *name, sd_linear *l);
int sd_clip_each_linear(sd_clip *m, sd_clip_linear_fn fn, void *user);

/* ---- long prompts (kohya --max_token_length 150/225) -------------------------------------
 * ids [B, n, 77] (the chunks of §3.2, already framed with BOS/EOS by the tokenizer) run as B·n
 * rows; y [B, n·75 + 2, width] = position 0 of chunk 0, positions 1..75 of every chunk, position
 * 76 of the last chunk (kohya encode_tokens; its SD2 "empty chunk" branch compares a tensor with
 * a string and never fires, so SD1 and SD2 reassemble alike). `hidden` is caller-provided
 * storage [B·n, 77, width]; with `save` it must stay alive until sd_clip_backward_chunks(). */
int sd_clip_forward_chunks(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *y, sd_tensor *hidden,
                           const sd_tensor *ids, int clip_skip);
int sd_clip_backward_chunks(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dy);

/* ---- SDXL (kohya SdxlTextEncodingStrategy) ------------------------------------------------------
 * hidden [B,T,W] = hidden_states[-2] of the HF model: the output of layer `layers` - 1 (the
 * penultimate), WITHOUT the final LayerNorm, for both encoders (TE1 does not run its last layer).
 * pooled (TE2 only; NULL for TE1, and may be NULL for TE2, which then skips its last layer too)
 * [B, projection_dim] = final_layer_norm(output of the last layer) at the FIRST position of each
 * row whose id is m->eos_id (argmax of the EOS mask; position 0 when there is none), times
 * text_projection (x·Wᵀ). The ids are read on the host (a download per row: T ≤ 1024). */
int sd_clip_forward_sdxl(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *hidden, sd_tensor *pooled,
                         const sd_tensor *ids);
/* Accumulates the parameter gradients (LoRA/TE training through both outputs) for dhidden
 * [B,T,W] and dpooled [B,P] (either may be NULL: no gradient through that output; a pooled
 * gradient needs a forward that made the pooled output). d_tokens as in sd_clip_backward. */
int sd_clip_backward_sdxl(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dhidden,
                          const sd_tensor *dpooled);
/* Long prompts: ids [B,n,77] run as B·n rows into `work` [B·n, 77, W] (caller storage, alive
 * until the backward), reassembled into hidden [B, n·75+2, W] like sd_clip_forward_chunks;
 * pooled [B, P] is that of the FIRST chunk of each prompt (kohya pool from chunk 0). */
int sd_clip_forward_sdxl_chunks(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *hidden, sd_tensor *pooled,
                                sd_tensor *work, const sd_tensor *ids);
int sd_clip_backward_sdxl_chunks(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dhidden,
                                 const sd_tensor *dpooled);
/* Bytes an SDXL training forward of B prompts × n chunks (n = 1: unchunked) × T tokens takes from
 * `save` (exact up to 64-byte rounding), and the layer-level scratch; pooled: whether a pooled
 * output is asked for (TE2). */
sd_nn_plan sd_clip_plan_sdxl(const sd_clip *m, int64_t B, int64_t n, int64_t T, int pooled);

#endif
