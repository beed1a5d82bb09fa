/* WD tagger, EVA02 architecture (SmilingWolf wd-eva02-large-tagger-v3: timm `eva02_large_patch14_448`
 * with img_size 448 and ref_feat_shape [32,32], model.safetensors). Used through models/tagger.h
 * (sd_tagger_open detects it from blocks.0.attn.q_proj.weight and dispatches here).
 *
 * Model (timm v0.9.16 Eva with qkv_fused False, swiglu_mlp + scale_mlp, use_rot_pos_emb, class
 * token, global_pool "avg", no layer scale unless the file has gamma_1/gamma_2; every LayerNorm
 * eps 1e-6):
 *   x [N,3,S,S] -> patch_embed.proj (conv P×P stride P, bias) -> [N,T,D] (T = G², row-major)
 *   -> cat(cls_token, ·) [N,1+T,D] + pos_embed [1,1+T,D]
 *   -> blocks.i: x += [gamma_1 ⊙] attn.proj(attention(q, k, v)) with
 *        q = rope(attn.q_proj(norm1(x))), k = rope(attn.k_proj(norm1(x))) (k_proj without bias),
 *        v = attn.v_proj(norm1(x)); rope rotates the T patch tokens only (not the class token)
 *      x += [gamma_2 ⊙] mlp.fc2(mlp.norm(silu(mlp.fc1_g(n)) ⊙ mlp.fc1_x(n))), n = norm2(x)
 *   -> mean over the T patch tokens (class token excluded) -> fc_norm -> head (Linear D -> classes).
 * RoPE (timm RotaryEmbeddingCat, in_pixels False): head width d, d/4 bands
 * f_j = 1/10000^(j/(d/4)); token (r, c) of the G×G grid at position (r·R/G, c·R'/G) for
 * ref_feat_shape (R, R'); angles [r f_0, r f_0, …, r f_{d/4-1} (twice each), c f_0, c f_0, …];
 * pairs (2i, 2i+1) of every head rotated by their angle (sd_op_rope). The table is computed
 * (timm does not store it), in float32 as timm does.
 * Sizes from the tensor shapes: D and P from patch_embed.proj.weight [D,3,P,P], G from pos_embed
 * [1,1+G²,D] (S = G·P), the depth from the blocks.N keys, the MLP width from mlp.fc1_g, the classes
 * from head.weight. Not in the shapes: the head count (__metadata__ "num_heads", else D/64 as in
 * every EVA02) and ref_feat_shape (__metadata__ "ref_feat_shape" as "R" or "R,R'", else the grid
 * G×G: wd-eva02-large-tagger-v3's [32,32] at 448).
 * Loading is strict (a missing, extra or ill-shaped tensor is an SD_EFORMAT naming file and key);
 * F32/F16/BF16 weights are held as f32. The forward uses only the op API (CPU or CUDA). */
#ifndef SD_MODELS_TAGGER_EVA02_H
#define SD_MODELS_TAGGER_EVA02_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "nn/nn.h"

typedef struct sd_eva02_block {
    sd_layernorm norm1, norm2, mlp_norm;
    sd_linear q, k, v, proj, fc1_g, fc1_x, fc2;
    sd_param *gamma1, *gamma2;          /* layer scale [D], or NULL (eva02_large has none) */
} sd_eva02_block;

typedef struct sd_tagger_eva02 {
    int64_t width, heads, depth, patch, grid, tokens, mlp, classes, size;   /* tokens = 1 + grid² */
    int64_t ref_h, ref_w;                /* ref_feat_shape */
    sd_conv2d patch_embed;
    sd_param *cls, *pos;
    sd_eva02_block *blocks;
    sd_layernorm fc_norm;
    sd_linear head;
    sd_tensor rope;                      /* [grid², 2·head width] = [sin | cos], on the model's device */
} sd_tagger_eva02;

/* Register the parameters in `r` (sizes from the file; see above); the caller allocates and
 * loads `r`. Errors name the file. */
int sd_tagger_eva02_build(sd_tagger_eva02 *e, sd_params *r, const sd_safetensors *st);
void sd_tagger_eva02_free(sd_tagger_eva02 *e);

/* The RoPE table (timm's RotaryEmbeddingCat.pos_embed) into `tab` [grid², 2d], float32 math. */
void sd_tagger_eva02_rope_table(int64_t grid, int64_t head_dim, int64_t ref_h, int64_t ref_w, float *tab);

/* logits [N, classes] (f32) = model(x [N, 3, size, size] f32), all on the parameters' device. */
int sd_tagger_eva02_forward(sd_ctx *ctx, sd_tagger_eva02 *e, sd_tensor *logits, const sd_tensor *x);

/* sd_tagger_open() for an EVA02 file: m->eva built, m->r allocated, loaded and moved to `dev`
 * with the RoPE table, m->size and m->classes set. */
struct sd_tagger;
int sd_tagger_eva02_open(struct sd_tagger *m, const sd_safetensors *st, sd_devkind dev);

/* Move the parameters (registry `r`) and the RoPE table to `dev`. */
int sd_tagger_eva02_move(sd_tagger_eva02 *e, sd_params *r, sd_devkind dev);

/* Bytes of ctx scratch one image of a forward needs (activations; the caller adds slack). */
size_t sd_tagger_eva02_scratch_per_image(const sd_tagger_eva02 *e);

#endif
