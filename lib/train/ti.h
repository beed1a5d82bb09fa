/* Textual Inversion for sd-train --method ti (reference-behaviour.md §8; kohya-ss/sd-scripts
 * train_textual_inversion.py, SD1.x/SD2.x).
 *
 * Tokens: --token_string T and --num_vectors_per_token N give the strings T, T1 .. T(N-1), which
 * get the ids V .. V+N-1 after the text encoder's vocabulary (V rows). A string that already is a
 * vocabulary entry is refused ("tokenizer has same word", as Hugging Face's add_tokens adding
 * fewer than N tokens). The token-embedding table is replaced by a copy with N more rows:
 *   --init_word W: row k = the row of W's k-th token (mod the count), as the reference;
 *   else the mean of the existing rows (transformers >= 4.46 resize_token_embeddings draws them
 *        from N(mean, 1e-9·covariance), i.e. within ~3e-5 of the mean);
 *   --weights FILE: our/kohya's safetensors (emb_params, or a single tensor) or an A1111 / kohya
 *        torch.save .pt/.ckpt ({"emb_params": t}, or "string_to_param" whose first tensor is used);
 *        a 1-D tensor is one vector; the count must equal N.
 * Captions: with N > 1 every T becomes "T T1 .. T(N-1)" (Python str.replace); with
 * --use_object_template / --use_style_template the caption is replaced by one of the reference's
 * templates with "{}" = "T T1 .. T(N-1)" (the index drawn from the caption's Philox stream after
 * the usual processing; the reference draws random.choice). Tokenisation splits the text at the
 * token strings (leftmost, longest, as Hugging Face splits at added tokens) and BPE-encodes the
 * pieces between them.
 *
 * Training: only the new rows are parameters ("emb_params" [N, D]); the reference trains the whole
 * table and restores the old rows after each step, which gives the same new rows: AdamW is
 * element-wise, and weight decay on restored rows has no effect. Its gradient clipping runs over
 * the WHOLE table's gradient, so the gradient of the old rows the batch touched (per token id, summed
 * over positions and accumulated micro batches) enters the norm through a one-element parameter
 * "rest_grad_norm" holding ‖old-row gradient‖₂: sqrt(‖g_new‖² + rest²) is the reference's norm,
 * and the loss scaler (fp16) unscales and inf-checks it like every gradient.
 *
 * Optimizers whose statistics span the parameter (Adafactor's factored moments and RMS, Prodigy's
 * and D-Adaptation's d estimates) need the reference's parameter itself: sd_ti_set_full makes the
 * one parameter the whole widened table [V+N, D] (same name), its gradient every row the batch's
 * captions used (zero elsewhere), and sd_ti_sync_table restores its old rows from the table after
 * each step (the reference's orig_embeds_params[index_no_updates]). */
#ifndef SD_TRAIN_TI_H
#define SD_TRAIN_TI_H

#include <stdint.h>

#include "base/rng.h"
#include "diffusion/sample_images.h"
#include "io/safetensors.h"
#include "models/clip.h"
#include "nn/params.h"
#include "text/clip_tokenizer.h"

typedef struct sd_ti_opts {
    int on;                            /* --method ti / textual_inversion */
    const char *token_string;
    int num_vectors_per_token;         /* default 1 */
    const char *init_word;
    const char *weights;
    int use_object_template, use_style_template;
} sd_ti_opts;

typedef struct sd_ti {
    int n;                             /* vectors */
    int part;                          /* -1: SD1/SD2; SDXL: 0 TE1 (clip_l), 1 TE2 (clip_g) */
    char **strs;                       /* "T", "T1", ... */
    char *replace_to;                  /* "T T1 ... T(N-1)" */
    int64_t V, D;                      /* old vocabulary size, width */
    int32_t first_id;
    const char *const *templates;      /* NULL: captions */
    int ntemplates;
    sd_clip *clip;
    sd_tensor table, saved;            /* the widened table (host; in the encoder on the CPU) / the model's own */
    sd_tensor dtable;                  /* --device cuda: the widened table's GPU copy (in the encoder), or none */
    int64_t saved_vocab;
    int saved_cfg_vocab;
    sd_params reg;                     /* emb_params [N, D], rest_grad_norm [1]; full: emb_params [V+N, D] */
    sd_param *emb, *rest;              /* full: rest NULL */
    int full;                          /* sd_ti_set_full: the parameter is the whole table */
    sd_gen_token gtok;                 /* T -> its N ids, for sample prompts */
    /* gradient of the old rows of the current optimizer step, per token id */
    int32_t *slot_of;                  /* [V]: slot or -1 */
    int32_t *touched;
    float *rows;                       /* [cap, D] */
    size_t nslots, capslots;
} sd_ti;

/* Options of --method ti that the reference's train_textual_inversion.py does not have or that
 * this implementation does not support (LoRA options, weighted captions, caption dropout,
 * validation), --save_model_as other than pt/ckpt/safetensors: SD_EUSAGE / SD_EUNSUPPORTED with a
 * message. */
struct sd_train_config;
int sd_ti_check_config(const struct sd_train_config *c);

extern const char *const sd_ti_object_templates[27];
extern const char *const sd_ti_style_templates[19];

/* Vocabulary lookup as Hugging Face's get_vocab(): 1 when `s` is an entry of the CLIP vocabulary
 * (byte-level symbols, "</w>" suffix for word ends, the two special tokens). */
int sd_ti_in_vocab(const sd_clip_tokenizer *tok, const char *s);

/* Build the tokens, widen the text encoder's table (host f32, rows converted from its storage
 * dtype), initialise the new rows, load --weights, and register the parameters (allocated on the
 * host). SD_EINVAL with the reference's messages for bad options. */
int sd_ti_init(sd_ti *ti, const sd_ti_opts *o, sd_clip *clip, sd_clip_tokenizer *tok);
/* SDXL (sdxl_train_textual_inversion.py): one sd_ti per text encoder, part 0 (TE1, "clip_l") and 1
 * (TE2, "clip_g"), with the same tokens and ids (both tokenizers share the vocabulary); --init_word
 * rows per encoder from its own table; --weights reads the file's clip_l / clip_g; the parameters
 * are named "clip_l"/"rest_grad_norm_l" and "clip_g"/"rest_grad_norm_g" (a state directory holds
 * both). part -1 is sd_ti_init. */
int sd_ti_init_part(sd_ti *ti, const sd_ti_opts *o, sd_clip *clip, sd_clip_tokenizer *tok, int part);
/* The token strings, their replacement and the caption templates only (the part sd_ti_caption
 * needs; the vocabulary check of sd_ti_init included): no table, no parameters (--debug_dataset).
 * sd_ti_init_part starts with it. Free with sd_ti_free. */
int sd_ti_init_tokens(sd_ti *ti, const sd_ti_opts *o, const sd_clip_tokenizer *tok);
void sd_ti_free(sd_ti *ti);
/* Make the parameter the whole table (see above); after sd_ti_init_part, before the optimizer. */
int sd_ti_set_full(sd_ti *ti);
/* The trained vectors [N, D] (the new rows of the parameter). */
const float *sd_ti_vectors(const sd_ti *ti);


/* The caption after the TI replacement: template (drawn from rng) or T -> "T T1 ..". malloc'd. */
int sd_ti_caption(const sd_ti *ti, const char *caption, sd_rng *rng, char **out);

/* Token rows of one caption as sd_clip_tokenizer_frame() frames them, the TI strings mapped to
 * their ids. *truncated (may be NULL) is set when the ids did not fit. */
int sd_ti_frame(const sd_ti *ti, sd_clip_tokenizer *tok, const char *text, int max_token_length, int32_t pad,
                int32_t *out, int *nchunks, int *truncated);

/* Start of an optimizer step: gradients zero, the old-row accumulator empty. */
void sd_ti_zero_grad(sd_ti *ti);
/* Add the gradient of the token lookup (d_tok [npos, D], host) at the ids [npos]: new rows into
 * emb_params' gradient, old rows into the accumulator. */
int sd_ti_accumulate(sd_ti *ti, const int32_t *ids, int64_t npos, const float *d_tok);
/* Before the optimizer: rest_grad_norm's gradient = ‖old-row gradient‖₂. */
void sd_ti_finish_grad(sd_ti *ti);
/* Round the whole table (old and new rows) to f16 / bf16 values (--full_fp16 / --full_bf16). */
int sd_ti_round_table(sd_ti *ti, sd_dtype dt);
/* Copy the trained vectors into the table (after a step, a resume, the initialisation), and into its
 * GPU copy when there is one. */
int sd_ti_sync_table(sd_ti *ti);
/* --device cuda. The text encoder's registry moves its parameters by their offsets in its own
 * block, so the widened table (another allocation) must be out of the encoder while it moves:
 * sd_ti_uninstall puts the model's own table back, sd_ti_install(ti, dev) afterwards puts the widened
 * one in again: the host table (CPU), or a GPU copy of it (CUDA), which sd_ti_sync_table keeps
 * up to date. */
void sd_ti_uninstall(sd_ti *ti);
int sd_ti_install(sd_ti *ti, sd_devkind dev);

/* Save the vectors as the reference's save_weights does: {"emb_params": [N, D]} as safetensors
 * (path ends in .safetensors; meta: its __metadata__, may be NULL) or as torch.save writes it
 * (any other extension: .pt/.ckpt, A1111-loadable). dtype: SD_ST_F32, F16 or BF16. */
int sd_ti_save(const sd_ti *ti, const char *path, sd_st_dtype dtype, const char *const *meta_keys,
               const char *const *meta_vals, size_t nmeta);
/* SDXL: {"clip_l": ti1's [N, 768], "clip_g": ti2's [N, 1280]} (the reference's SDXL save_weights). */
int sd_ti_save_sdxl(const sd_ti *ti1, const sd_ti *ti2, const char *path, sd_st_dtype dtype,
                    const char *const *meta_keys, const char *const *meta_vals, size_t nmeta);

#endif
