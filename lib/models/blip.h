/* BLIP captioning model (BLIP_Decoder of kohya-ss/sd-scripts' finetune/blip, the same weights as
 * transformers' BlipForConditionalGeneration): a ViT image encoder and a BERT decoder with
 * cross-attention to the image tokens (models-and-formats.md §C).
 *
 * Checkpoints (safetensors; weights F32, F16 or BF16, held as f32). Two key layouts, told apart by
 * the class token's name:
 *   transformers (Salesforce/blip-image-captioning-large|base model.safetensors):
 *     vision_model.embeddings.{class_embedding [1,1,Dv], patch_embedding.{weight,bias},
 *     position_embedding [1,Tv,Dv]}, vision_model.encoder.layers.N.{layer_norm1, self_attn.qkv,
 *     self_attn.projection, layer_norm2, mlp.fc1, mlp.fc2}.*, vision_model.post_layernorm.*
 *   BLIP's own (model_large_caption.pth converted to safetensors with its key names):
 *     visual_encoder.{cls_token, pos_embed, patch_embed.proj.*, blocks.N.{norm1, attn.qkv,
 *     attn.proj, norm2, mlp.fc1, mlp.fc2}.*, norm.*}
 *   and in both: text_decoder.bert.embeddings.{word_embeddings, position_embeddings, LayerNorm},
 *     text_decoder.bert.encoder.layer.N.{attention.self.{query,key,value}, attention.output.{dense,
 *     LayerNorm}, crossattention.self.{query,key,value}, crossattention.output.{dense,LayerNorm},
 *     intermediate.dense, output.dense, output.LayerNorm}, text_decoder.cls.predictions.{bias,
 *     transform.dense, transform.LayerNorm, decoder.weight}.
 * Every size comes from the shapes: Dv, P from the patch conv [Dv,3,P,P]; Tv (= 1 + grid²) from the
 * position embedding, so the input size is grid·P (577 -> 24·16 = 384); the depths from the
 * layer keys; the MLP/FFN widths from fc1 / intermediate.dense; Dt and the vocabulary from
 * word_embeddings [V,Dt]; the positions from position_embeddings [P,Dt]. Head counts are not
 * stored: __metadata__ "vision_heads" / "text_heads" when present, otherwise width/64 (ViT-L
 * 1024 -> 16, ViT-B 768 -> 12, BERT-base 768 -> 12). A missing decoder.weight is tied to
 * word_embeddings; a bias stored only as cls.predictions.decoder.bias is accepted;
 * *.position_ids buffers are ignored. Any other missing tensor, a wrong shape, or an unexpected
 * tensor under these prefixes is SD_EFORMAT naming the file and the key.
 *
 * Numerics: vision pre-LN, LayerNorm eps 1e-6 (BLIP's; transformers' config says 1e-5), exact
 * GELU, scale 1/sqrt(head width); text post-LN eps 1e-12, exact GELU; attention masks are all
 * ones (one image, no padding), the self-attention causal. Only the op API is used, so the model
 * runs on the registry's device. */
#ifndef SD_MODELS_BLIP_H
#define SD_MODELS_BLIP_H

#include <stdint.h>

#include "base/rng.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/vit.h"
#include "nn/nn.h"

enum { SD_BLIP_LAYOUT_HF = 1, SD_BLIP_LAYOUT_BLIP = 2 };

typedef struct sd_blip_text_layer {
    sd_linear q, k, v, ao, cq, ck, cv, co, inter, out;
    sd_layernorm aln, cln, oln;
} sd_blip_text_layer;

typedef struct sd_blip {
    int layout;
    int64_t vwidth, vheads, vdepth, vmlp, patch, grid, size, vtokens;
    int64_t twidth, theads, tdepth, tinter, vocab, positions;
    sd_params r;
    sd_param *cls, *pos;
    sd_conv2d patch_embed;
    sd_vit_block *vblocks;
    sd_layernorm vnorm;
    sd_param *word, *tpos;
    sd_layernorm emb_ln;
    sd_blip_text_layer *tl;
    sd_linear head_dense;
    sd_layernorm head_ln;
    sd_param *head_w, *head_b;
} sd_blip;

/* Key layout of a file: SD_BLIP_LAYOUT_* or 0 when it is not a BLIP captioner. */
int sd_blip_detect(const sd_safetensors *st);

/* Build from an open file (sizes from the shapes), load on the CPU, then move to `dev`. */
int sd_blip_open(sd_blip *m, const sd_safetensors *st, sd_devkind dev);
void sd_blip_free(sd_blip *m);

/* emb [N, vtokens, vwidth] = image encoder(x [N, 3, size, size]), all f32 on the model's device. */
int sd_blip_encode_image(sd_ctx *ctx, sd_blip *m, sd_tensor *emb, const sd_tensor *x);

/* ---- decoder with a key/value cache --------------------------------------------------------- */

/* `beams` sequences that share one image: per layer the self-attention keys/values of every
 * sequence [beams, max_len, Dt] (and a second set for reordering), and the cross-attention
 * keys/values of the image [1, vtokens, Dt], computed once. */
typedef struct sd_blip_state {
    int beams;
    int64_t max_len, len;
    sd_devkind dev;
    sd_tensor *k, *v, *k2, *v2, *ck, *cv;
    sd_tensor ids;       /* [beams * max_len] i32 staging for the embedding */
} sd_blip_state;

int sd_blip_state_init(sd_blip_state *s, const sd_blip *m, int beams, int64_t max_len, sd_devkind dev);
void sd_blip_state_free(sd_blip_state *s);
/* The image of the next generation: emb1 [1, vtokens, vwidth] (e.g. one row of
 * sd_blip_encode_image's output); resets the sequences to length 0. */
int sd_blip_state_set_image(sd_ctx *ctx, sd_blip *m, sd_blip_state *s, const sd_tensor *emb1);
/* Append n tokens to every sequence (ids [beams][n] on the host; n > 1 only while the sequences
 * are empty) and write the next-token logits of each sequence to logits [beams][vocab] (host).
 * SD_ERANGE past max_len or the model's positions. */
int sd_blip_decode(sd_ctx *ctx, sd_blip *m, sd_blip_state *s, const int32_t *ids, int n, float *logits);
/* Sequence b continues sequence src[b] (beam search). */
int sd_blip_state_reorder(sd_ctx *ctx, sd_blip_state *s, const int *src);

/* ---- generation (HF generate() as kohya's make_captions.py calls it, §C.4) -------------------- */

typedef struct sd_blip_gen {
    int beam_search;          /* 0: nucleus sampling; 1: beam search (num_beams 1 = greedy) */
    int num_beams;
    int top_k;                /* sampling: 50 (HF default) */
    double top_p;             /* sampling: 0.9 */
    float temperature;        /* sampling: 1.0 */
    float repetition_penalty; /* sampling: 1.1, beam search: 1.0 */
    int min_length, max_length;   /* in tokens, the prompt included */
    int32_t eos;              /* [SEP] */
} sd_blip_gen;

/* Generate from `prompt` (np ids, [DEC] first) for the image of `s` (sd_blip_state_set_image
 * done; s->beams == num_beams for beam search, 1 otherwise). Sampling draws value i (token i
 * after the prompt) of `rng`. *out (malloc'd) gets the whole sequence, prompt included, without
 * the final EOS. */
int sd_blip_generate(sd_ctx *ctx, sd_blip *m, sd_blip_state *s, const int32_t *prompt, int np, const sd_blip_gen *g,
                     const sd_rng *rng, int32_t **out, int *nout);

/* The per-step score processing of sd_blip_generate on one row of logits, in place (removed
 * tokens -inf): repetition penalty over seen[V] != 0 (may be NULL), EOS -inf while len <
 * min_length, then for sampling (beam_search 0) temperature, top-k and top-p. */
int sd_blip_process_logits(float *sc, int64_t V, const sd_blip_gen *g, const unsigned char *seen, int len);

/* ---- preprocessing ---------------------------------------------------------------------------- */

/* kohya / BlipImageProcessor: RGB (alpha dropped: sd_image_load(..., SD_ALPHA_DROP)) squashed to
 * size×size with PIL BICUBIC, /255, normalised with the CLIP mean/std, planes R,G,B into
 * chw [3, size, size]. */
int sd_blip_prepare_image(const sd_image *rgb, int size, float *chw);

#endif
