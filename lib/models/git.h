/* GIT captioning model (transformers' GitForCausalLM: microsoft/git-large-textcaps, git-base,
 * git-large-coco, ... as kohya-ss/sd-scripts' finetune/make_captions_by_git.py runs them): a CLIP
 * vision tower, a visual projection and a BERT-like decoder over [image tokens ; text tokens].
 *
 * Checkpoints (model.safetensors of a Hugging Face download; weights F32, F16 or BF16, held as f32):
 *   git.image_encoder.vision_model.embeddings.{class_embedding [Dv], patch_embedding.weight
 *     [Dv,3,P,P] (no bias), position_embedding.weight [Tv,Dv]}, .pre_layrnorm, .encoder.layers.N.
 *     {layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}, .post_layernorm
 *   git.visual_projection.visual_projection.{0 (Linear Dv->Dt), 1 (LayerNorm)}
 *   git.embeddings.{word_embeddings [V,Dt], position_embeddings [P,Dt], LayerNorm}
 *   git.encoder.layer.N.{attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
 *     intermediate.dense, output.{dense,LayerNorm}}
 *   output.{weight [V,Dt] (tied to word_embeddings when absent), bias}
 * Sizes come from the shapes (Tv = 1 + grid², input grid·P); head counts from __metadata__
 * "vision_heads" / "text_heads", else width/64. *.position_ids buffers are ignored; anything else
 * missing, misshapen or unexpected under git. / output. is SD_EFORMAT. Video GIT checkpoints
 * (img_temperal_embedding) are refused.
 *
 * Numerics (modeling_git.py): vision pre-LN CLIP blocks, LayerNorm eps 1e-5, quick_gelu,
 * post_layernorm on every token; projection LayerNorm eps 1e-5; text post-LN BERT layers, eps
 * 1e-12, exact GELU. Attention: image tokens see all image tokens and no text; text token i sees
 * every image token and text tokens 0..i (create_attention_mask / _generate_future_mask). The
 * decoder keeps a key/value cache whose first Tv rows (the image) are computed once per image. */
#ifndef SD_MODELS_GIT_H
#define SD_MODELS_GIT_H

#include <stdint.h>

#include "io/image.h"
#include "io/safetensors.h"
#include "nn/nn.h"

typedef struct sd_git_vblock {
    sd_layernorm ln1, ln2;
    sd_linear q, k, v, o, fc1, fc2;
} sd_git_vblock;

typedef struct sd_git_tlayer {
    sd_linear q, k, v, ao, inter, out;
    sd_layernorm aln, oln;
} sd_git_tlayer;

typedef struct sd_git {
    int64_t vwidth, vheads, vdepth, vmlp, patch, grid, size, vtokens;
    int64_t twidth, theads, tdepth, tinter, vocab, positions;
    sd_params r;
    sd_param *cls, *pos;
    sd_conv2d patch_embed;
    sd_layernorm pre_ln, post_ln;
    sd_git_vblock *vb;
    sd_linear proj;
    sd_layernorm proj_ln;
    sd_param *word, *tpos;
    sd_layernorm emb_ln;
    sd_git_tlayer *tl;
    sd_linear out;
} sd_git;

/* 1 when the file holds a GIT captioner (git.image_encoder.vision_model.embeddings.class_embedding). */
int sd_git_detect(const sd_safetensors *st);
int sd_git_open(sd_git *m, const sd_safetensors *st, sd_devkind dev);
void sd_git_free(sd_git *m);

/* feat [N, vtokens, twidth] = visual_projection(vision tower(x [N,3,size,size])); with vis != NULL
 * also the vision tower's output (after post_layernorm) [N, vtokens, vwidth]. */
int sd_git_encode_image(sd_ctx *ctx, sd_git *m, sd_tensor *feat, sd_tensor *vis, const sd_tensor *x);

/* one sequence: per layer keys/values [1, vtokens + max_len, Dt] (image rows first) */
typedef struct sd_git_state {
    int64_t max_len, len;
    sd_tensor *k, *v;
    sd_tensor ids;
} sd_git_state;

int sd_git_state_init(sd_git_state *s, const sd_git *m, int64_t max_len, sd_devkind dev);
void sd_git_state_free(sd_git_state *s);
/* The image of the next sequence: feat1 [1, vtokens, twidth] (a row of sd_git_encode_image's
 * feat); runs the decoder layers over the image tokens, fills the cache's image rows, length 0. */
int sd_git_state_set_image(sd_ctx *ctx, sd_git *m, sd_git_state *s, const sd_tensor *feat1);
/* Append token `id` at text position s->len; logits [vocab] (host) of the next token. */
int sd_git_decode(sd_ctx *ctx, sd_git *m, sd_git_state *s, int32_t id, float *logits);
/* HF greedy generate as make_captions_by_git.py calls it: [bos] then argmax (first maximum) until
 * `eos` or max_length tokens (bos included). *out (malloc'd) gets the ids after bos, without eos. */
int sd_git_generate(sd_ctx *ctx, sd_git *m, sd_git_state *s, int32_t bos, int32_t eos, int max_length,
                    int32_t **out, int *nout);

/* CLIPImageProcessor as GIT's processor config sets it: shortest edge to `size` (the other
 * int(size·long/short)) with PIL BICUBIC, centre crop size×size (offsets (d)//2), /255, CLIP
 * mean/std, planes R,G,B into chw [3,size,size]. */
int sd_git_prepare_image(const sd_image *rgb, int size, float *chw);

/* kohya's --remove_words: its PATTERN_REPLACE regexes, in order, each re.sub(pattern, "", s)
 * with Python re semantics (backtracking, leftmost-first alternation, greedy quantifiers; \w and
 * \d over code points: ASCII letters/digits/_ and non-ASCII letters - see sd-caption(1)).
 * Returns a malloc'd string (NULL: out of memory). */
char *sd_git_remove_words(const char *caption);

#endif
