/* Text-to-image with a loaded SD1.x/SD2.x/SDXL model (SDXL: see "SDXL conditioning" below), the way
 * the reference's sample images are made
 * (kohya-ss sd-scripts train_util.sample_images_common / sample_image_inference driving
 * library/lpw_stable_diffusion.py), plus the reference's sample triggers and file names
 * (reference-behaviour.md §6.13), for sd-sample and for sd-train's samples during training.
 *
 * Pipeline of sd_txt2img() (lpw_stable_diffusion.py with max_embeddings_multiples 3,
 * no_boseos_middle False):
 *   1. prompt and negative prompt (NULL → "") parsed for attention weights ("(a:1.2)", "(a)",
 *      "[a]", "\(") by text/caption.h's sd_weighted_parse (the same parse_prompt_attention), each
 *      piece tokenized alone, ids concatenated and truncated to 225;
 *   2. k = min(3, ceil(longest/75)) chunks of 77 (at least 1) for both prompts; the row is BOS +
 *      ids + EOS padding to 75k+2; chunk i is ids[75i .. 75i+77) with BOS at 0 and, for SD1, EOS
 *      at 76 (SD2: EOS at 76 unless it is EOS or pad "!", and EOS at 1 when that is "!", the
 *      reference's v2 rule); every chunk runs through the text encoder (clip_skip: the k-th last
 *      layer + final LayerNorm) and the chunks are concatenated whole: context [77k, width];
 *   3. when a weight is not 1: embeddings × weights (BOS/EOS 1.0) then × (mean before / mean
 *      after) over the whole [77k, width] (the reference's "normalize in the sense of mean");
 *   4. x_T ~ N(0, I) per image from its seed (diffusion/samplers.h sd_sampler_initial_noise),
 *      then sd_sampler_run(): classifier-free guidance when scale > 1 with the negative prompt's
 *      context first in the doubled batch;
 *   5. VAE decode of latents / scale_factor (tiled for large images, below), then
 *      round(clamp(x/2 + 0.5, 0, 1) · 255) (numpy round: half to even) → RGB 8-bit.
 * Noise differs from the reference's torch.randn (Philox streams keyed by the seed, so a seed
 * gives the same image on any thread count and batch position); everything else follows it.
 *
 * Threads: results do not depend on ctx->threads (the tensor library's fixed partitions). */
#ifndef SD_DIFFUSION_SAMPLE_IMAGES_H
#define SD_DIFFUSION_SAMPLE_IMAGES_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "diffusion/prompt_file.h"
#include "diffusion/samplers.h"
#include "io/image.h"
#include "models/clip.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "models/vae.h"
#include "text/clip_tokenizer.h"

/* VAE tiling: decode through sd_vae_decode_tiled() when a latent side exceeds this (512 pixels
 * for SD; twice that, 1024 pixels, for SDXL), in tiles of SD_GEN_VAE_TILE latent pixels overlapping
 * by SD_GEN_VAE_OVERLAP. */
#define SD_GEN_VAE_TILE_AUTO 64
#define SD_GEN_VAE_TILE 64
#define SD_GEN_VAE_OVERLAP 16

/* Textual-inversion tokens: every occurrence of `token` (exact, case-sensitive substring, as
 * Hugging Face tokenizers match added tokens) in a prompt becomes the ids first_id ..
 * first_id + count − 1 of the (widened) token-embedding table; the text around it is tokenized
 * as usual. The reference's gen_img.py registers "tok", "tok1", ... "tok{n-1}" and expands "tok"
 * in prompts to all of them: the same ids in the same order. */
typedef struct sd_gen_token {
    char *token;
    int32_t first_id;
    int count;
} sd_gen_token;

/* Embedding files attached to a text encoder: the token-embedding table is replaced by a copy
 * with the files' vectors appended (ids from the model's vocabulary size up), and restored by
 * sd_gen_ti_detach(). */
typedef struct sd_gen_ti {
    sd_gen_token *tokens;
    int n;
    sd_clip *clip;
    sd_tensor table, saved;        /* widened table in use / the model's own */
    int64_t saved_vocab;
    int saved_cfg_vocab;
} sd_gen_ti;

/* Load textual-inversion embeddings (safetensors, .pt/.ckpt) for an SD1/SD2 text encoder (f32 token table, on
 * the host or a GPU: the widened table is put where the model's is; attach after moving the
 * encoder's parameters, whose registry moves them by their offsets in its own block): kohya's format (tensor "emb_params" [n, width], as train_textual_inversion.py saves it)
 * or a file with a single tensor [width] or [n, width] (Diffusers learned_embeds). The token is
 * the file name without directory and extension (the reference's rule). SDXL files
 * ("clip_l"/"clip_g": sd_gen_ti_attach_sdxl), a width other than the encoder's, duplicate tokens and empty files are
 * errors naming the file. */
int sd_gen_ti_attach(sd_gen_ti *ti, sd_clip *clip, const char *const *paths, int n);
/* SDXL: kohya's sdxl_train_textual_inversion.py files ({"clip_l": [n, 768], "clip_g": [n, 1280]},
 * .safetensors or torch.save .pt/.ckpt): clip_l widens TE1's table (ti: the tokens), clip_g TE2's
 * (ti2, the same ids); an SD1/SD2 file (emb_params) is an SD_EUNSUPPORTED error naming it. Both
 * are restored by sd_gen_ti_detach(ti2), sd_gen_ti_detach(ti). */
int sd_gen_ti_attach_sdxl(sd_gen_ti *ti, sd_gen_ti *ti2, sd_clip *clip, sd_clip *clip2, const char *const *paths, int n);
void sd_gen_ti_detach(sd_gen_ti *ti);

/* The networks (borrowed; loaded on the ctx's device) and how to run them. */
typedef struct sd_gen_models {
    sd_unet *unet;
    sd_clip *clip;             /* SD1/SD2 text encoder; SDXL: TE1 (CLIP ViT-L) */
    sd_clip *clip2;            /* SDXL: TE2 (OpenCLIP bigG with text_projection); NULL otherwise */
    sd_vae *vae;
    sd_family family;          /* SD_FAMILY_SD1, SD_FAMILY_SD2 (pad token, v2 chunk rule) or
                                  SD_FAMILY_SDXL (needs clip2 and a UNet with adm_in_channels) */
    sd_clip_tokenizer *tok;
    int clip_skip;             /* 0/1: last layer; k: k-th last (+ final LayerNorm); SDXL: ignored */
    int max_token_length;      /* SDXL only: 0 (= 75), 150 or 225 (the chunks of every prompt) */
    int v_prediction;          /* the model predicts v (--v_parameterization) */
    int vae_tiling;            /* -1: auto (above SD_GEN_VAE_TILE_AUTO, SDXL twice that), 0: never,
                                  1: always */
    int vae_tile;              /* 0: SD_GEN_VAE_TILE; else the tile side in latent pixels */
    const sd_gen_token *tokens;/* textual-inversion tokens (NULL: none) */
    int ntokens;
    sd_controlnet *controlnet;     /* NULL: none; else its residuals go into every UNet call (the
                                      reference's pipeline with controlnet=, conditioning scale 1.0);
                                      every call then needs sd_gen_params.control_image */
    int (*on_call)(void *user);    /* called after every UNet call (progress, interruption), may be
                                      NULL; a non-zero return stops the generation with SD_EINTR */
    void *call_user;
} sd_gen_models;

/* One generation call: `batch` images of one prompt with the same settings. */
typedef struct sd_gen_params {
    const char *prompt;
    const char *negative_prompt;   /* NULL = "" */
    int width, height;             /* pixels: multiples of 8 and of the model's total
                                      downsampling (VAE factor × 2^(UNet levels − 1)) */
    int steps;                     /* 1..1000 */
    double scale;                  /* CFG scale; ≤ 1: no guidance (the reference's rule) */
    sd_sampler_kind sampler;
    int batch;                     /* ≥ 1 */
    const uint64_t *seeds;         /* [batch] */
    /* SDXL size conditioning (ignored otherwise; 0 = the default): original size (default: the
       image's height/width), the negative prompt's original size (default: the original size),
       crop top-left (default 0, 0). The target size is always the image's. */
    int orig_w, orig_h, orig_w_neg, orig_h_neg, crop_top, crop_left;
    /* with sd_gen_models.controlnet: the control image (RGB; resized to width × height with PIL's
       LANCZOS, values byte / 255 as prepare_controlnet_image gives them) */
    const sd_image *control_image;
} sd_gen_params;

/* Bytes of ctx->scratch a call needs at most (UNet at 2·batch, text encoder, VAE decode). */
size_t sd_txt2img_scratch_bytes(const sd_gen_models *m, const sd_gen_params *p);

/* Generate p->batch images into out[0..batch) (allocated RGB, width × height; free with
 * sd_image_free). SD_EINVAL for bad parameters (size not a multiple of the model's factor,
 * ...), SD_EUNSUPPORTED for sampler/steps combinations the reference cannot run, and whatever
 * the networks return. On error out[] is empty. */
int sd_txt2img(sd_ctx *ctx, const sd_gen_models *m, const sd_gen_params *p, sd_image *out);

/* Text conditioning of one prompt as the pipeline computes it (steps 1-3): *ctx_out is a
 * malloc'd [chunks·77, width] f32 array for `chunks` chunks (pass the count to force: 0 = the
 * prompt's own, which callers pair by taking the max over prompt and negative prompt; see
 * sd_gen_prompt_chunks). */
int sd_gen_prompt_chunks(const sd_gen_models *m, const char *text, int *chunks);
/* Steps 1-2 alone: the ids the text encoder gets (chunks·77, chunk fix-ups applied) and the
 * per-position weights (chunks·77) of one prompt for `chunks` chunks (0 = its own count).
 * *truncated (may be NULL) is set when the prompt had more than 225 tokens. */
int sd_gen_prompt_rows(const sd_gen_models *m, const char *text, int chunks, int32_t *ids, float *weights,
                       int *truncated);
int sd_gen_encode_prompt(sd_ctx *ctx, const sd_gen_models *m, const char *text, int chunks, float **ctx_out);

/* ---- SDXL conditioning ---------------------------------------------------------------------------
 * As the reference's SDXL sample pipeline computes it (sdxl_lpw_stable_diffusion.py at HEAD:
 * SdxlTokenizeStrategy.tokenize_with_weights + SdxlTextEncodingStrategy.encode_tokens_with_weights):
 *   1. the prompt is parsed for attention weights like SD1/SD2 (step 1 above), each piece
 *      tokenized alone and the ids concatenated, truncated to max_token_length (75 when 0);
 *   2. n = max_token_length / 75 chunks (1, 2 or 3) for EVERY prompt, whatever its length (the
 *      trainer's --max_token_length; not the SD1 pipeline's "as many as the longest prompt"):
 *      BOS + ids + EOS + pad to 75n+2, cut as text/clip_tokenizer.h sd_clip_frame_ids() does,
 *      TE1 with pad = EOS (49407), TE2 with pad = 0 (the v2 chunk rule);
 *   3. TE1 and TE2 hidden states (the penultimate layer, no final LayerNorm), chunks reassembled to
 *      75n+2 positions; TE2's pooled output (final LayerNorm at the first EOS, text projection) of
 *      the FIRST chunk;
 *   4. positions 75j+1 .. 75j+75 of both hidden states multiplied by chunk j's token weights, with
 *      NO mean renormalisation (unlike the SD1/SD2 pipeline), the pooled vector unweighted;
 *   5. context = cat(hs1, hs2) on the channel axis [75n+2, C1+C2]; the UNet vector = cat(pooled,
 *      size embedding of (orig_h, orig_w, crop_top, crop_left, target_h, target_w)).
 * The negative prompt ("" when none) is encoded the same way, its pooled vector conditions the
 * unconditional branch. clip_skip is ignored for SDXL (the reference warns). */

/* Chunks of every SDXL prompt for m->max_token_length (1, 2 or 3; SD_EINVAL otherwise). */
int sd_gen_sdxl_chunks(const sd_gen_models *m, int *chunks);
/* Steps 1-2: ids1/ids2 [n·77] for TE1/TE2 and the per-position weights [75n+2] of the reassembled
 * hidden states (1 at BOS and at the last position). *truncated (may be NULL) as above. */
int sd_gen_sdxl_prompt_rows(const sd_gen_models *m, const char *text, int32_t *ids1, int32_t *ids2, float *weights,
                            int *truncated);
/* Steps 1-5 for one prompt: *ctx_out malloc'd [75n+2, C1+C2] f32 (*S_out = 75n+2), pooled [P]
 * (P = clip2's projection_dim). */
int sd_gen_sdxl_encode_prompt(sd_ctx *ctx, const sd_gen_models *m, const char *text, float **ctx_out,
                              int64_t *S_out, float *pooled);
/* The UNet vector [P + 1536] = cat(pooled [P], size embedding of the six numbers). */
void sd_gen_sdxl_vector(float *vec, const float *pooled, int64_t P, int orig_h, int orig_w, int crop_top,
                        int crop_left, int target_h, int target_w);

/* A kohya LoRA file in kohya's SDXL naming merged into the f32 host weights of an SDXL model's
 * registries (models/sd_model.h keys): "lora_unet_" + the ldm UNet name, "lora_te1_" + TE1's and
 * "lora_te2_" + TE2's Hugging Face names, '.' → '_' (networks/lora.py); each module adds
 * mul · alpha/rank · up·down to the weight it names (linear, 1×1 and k×k convs), what the forward
 * hooks compute. With the UNet `um` (may be NULL: SGM names only), UNet modules may also carry their
 * Diffusers names (lora_unet_down_blocks_1_attentions_0_…; sd_lora_file_sdxl_to_sgm), as files of
 * Diffusers-based trainers do; a file naming one layer both ways is an error naming both. Host weights stored f16/bf16 are merged in f32 and stored back
 * rounded. A module naming no layer or a shape mismatch is an error naming the file and module. *n_te / *n_unet (may be NULL) count the merged modules. */
int sd_gen_lora_merge_sdxl(const sd_unet *um, sd_params *unet, sd_params *te, const char *path, double mul,
                           size_t *n_te, size_t *n_unet);
/* The same with a per-module factor: module `name` (its SGM name) adds mul · weight(user, name) ·
 * alpha/rank · up·down (sdxl_merge_lora.py --lbws). weight NULL: 1. */
int sd_gen_lora_merge_sdxl_weighted(const sd_unet *um, sd_params *unet, sd_params *te, const char *path, double mul,
                                    double (*weight)(void *user, const char *name), void *user, size_t *n_te,
                                    size_t *n_unet);

/* ---- A1111 "parameters" text ---------------------------------------------------------------- */

typedef struct sd_infotext {
    const char *prompt;
    const char *negative_prompt;   /* NULL or "": no "Negative prompt:" line */
    int steps;
    const char *sampler;           /* A1111 name (sd_sampler_a1111_name) */
    double scale;
    uint64_t seed;
    int width, height;
    const char *model_hash;        /* NULL: omitted (A1111: first 10 hex of the file's SHA-256) */
    const char *model;             /* NULL: omitted (A1111: the checkpoint's file stem) */
    int clip_skip;                 /* written when > 1 */
    const char *lora_hashes;       /* NULL: omitted; "name: hash, name2: hash2" (quoted on output) */
    const char *ti_hashes;         /* NULL: omitted; "token: hash, ..." */
    const char *version;           /* NULL: omitted */
} sd_infotext;

/* A1111's sampler names where one exists ("Euler a", "DPM++ 2M", "DDIM", ...), else ours. */
const char *sd_sampler_a1111_name(sd_sampler_kind k);

/* A1111's infotext: "PROMPT\nNegative prompt: NEG\nSteps: N, Sampler: S, CFG scale: X, Seed: N,
 * Size: WxH, Model hash: H, Model: M, Clip skip: K, Lora hashes: \"...\", TI hashes: \"...\", Version: V" with
 * A1111's quoting of values containing ',', ':' or a newline (json.dumps). malloc'd. */
char *sd_infotext_format(const sd_infotext *t);

/* ---- samples during training (§6.13) --------------------------------------------------------
 * In a trainer (train_network.py's three call sites):
 *   sd_prompt_list prompts;      sd_prompt_file_load(sample_prompts, &prompts) once, before
 *                                training (a bad file is an error with its line number then)
 *   sd_sample_triggers trig = { sample_at_first, sample_every_n_steps, sample_every_n_epochs };
 *   sd_gen_models gm = { .unet = &m.unet, .clip = &m.clip, .vae = &m.vae, .family = m.cfg.family,
 *                        .tok = tok, .clip_skip = clip_skip, .v_prediction = v_parameterization,
 *                        .vae_tiling = -1 };
 *                        (SDXL: .clip2 = &m.clip2, .max_token_length = --max_token_length, clip_skip 0;
 *                        train/loop_sample.c does this)
 *   sd_sample_run_opts so = { .output_dir = output_dir, .output_name = output_name,
 *                             .sampler = (sd_sampler_parse_reference(sample_sampler, &k), k),
 *                             .seed_base = seed, .write_parameters = 1, .on_image = tensorboard_cb };
 *   before the first step:   if (sd_sample_due(&trig, 0, global_step))
 *                                sd_sample_images(ctx, &gm, &prompts, &so, 0, global_step);
 *   after an optimizer step: the same with (SD_SAMPLE_NO_EPOCH, global_step);
 *   at the end of epoch e:   the same with (e + 1, global_step)    (e 0-based)
 * with the LoRA network's sd_lora_rt.training = 0 around the call. */

typedef struct sd_sample_triggers {
    int sample_at_first;       /* --sample_at_first */
    int every_n_steps;         /* --sample_every_n_steps, 0 = None */
    int every_n_epochs;        /* --sample_every_n_epochs, 0 = None */
} sd_sample_triggers;

#define SD_SAMPLE_NO_EPOCH (-1)

/* The reference's decision at the top of sample_images_common(): call it with (epoch, steps) as
 * train_network.py does: before training (0, global_step) for --sample_at_first, after every
 * optimizer step (SD_SAMPLE_NO_EPOCH, global_step), at the end of each epoch (epoch + 1,
 * global_step). Returns 1 when samples are due:
 *   steps == 0: only with sample_at_first;
 *   every_n_epochs set: only when epoch is given and epoch % every_n_epochs == 0 (every_n_steps
 *   ignored; note that a resumed run's "at first" call, epoch 0 with steps > 0, samples);
 *   else every_n_steps set: only from the per-step call (no epoch) when steps % n == 0. */
int sd_sample_due(const sd_sample_triggers *t, int epoch, int64_t steps);

/* The reference's sample file name (no directory):
 *   [output_name + "_"] + ("e%06d" epoch | "%06d" steps) + "_%02d" index + "_" + YYYYmmddHHMMSS
 *   (local time) + ["_" seed when the prompt has one] + ".png"
 * epoch = SD_SAMPLE_NO_EPOCH uses the steps form. SD_ERANGE when it does not fit. */
int sd_sample_file_name(char *buf, size_t n, const char *output_name, int epoch, int64_t steps, int index,
                        time_t when, int has_seed, uint64_t seed);

/* What a training run's sampling needs besides the models. */
typedef struct sd_sample_run_opts {
    const char *output_dir;        /* images go to <output_dir>/sample/ (created) */
    const char *output_name;       /* NULL: no prefix */
    sd_sampler_kind sampler;       /* --sample_sampler (a prompt's --ss overrides) */
    uint64_t seed_base;            /* prompts without --d: seed = hash(seed_base, steps, index)
                                      (the reference draws a fresh random seed; we stay
                                      reproducible) */
    int write_parameters;          /* 1: A1111 "parameters" text chunk in each PNG */
    const char *model_name;        /* infotext "Model:" (NULL: omitted) */
    /* called once per image after it was written (may be NULL): the trainer logs it to
       TensorBoard. Returning non-zero stops sampling with that code. */
    int (*on_image)(void *user, const sd_sample_prompt *p, int index, const sd_image *im, const char *path);
    void *user;
} sd_sample_run_opts;

/* One round of sample images for `prompts` (diffusion/prompt_file.h; width/height are checked
 * multiples of 8 there; the reference floors them to max(64, v − v % 8), done here too for
 * entries built otherwise): one image per prompt, file names from sd_sample_file_name() with the
 * time of the call. The caller decides with sd_sample_due() whether to call; the caller's RNG
 * state is not touched (all noise comes from the per-image seed streams). A LoRA being trained
 * must have its sd_lora_rt.training = 0 during the call (no dropout). When ctx has less free
 * scratch than sd_txt2img_scratch_bytes() asks, a context of the same backend and thread count is
 * made for the call (scratch is reserved address space, faulted in as used). */
int sd_sample_images(sd_ctx *ctx, const sd_gen_models *m, const sd_prompt_list *prompts,
                     const sd_sample_run_opts *o, int epoch, int64_t steps);

/* Encode im as PNG with (when infotext != NULL) a "parameters" tEXt/iTXt chunk, written
 * atomically to path. */
int sd_sample_write_png(const char *path, const sd_image *im, const char *infotext);

#endif
