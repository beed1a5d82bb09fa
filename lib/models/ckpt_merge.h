/* Weighted average of checkpoints, key by key (kohya-ss tools/merge_models.py).
 *
 * Every input is a .safetensors file of any model (read through the safetensors reader only: no
 * family detection). Text-encoder keys of the old form are renamed first, as the reference does:
 * cond_stage_model.transformer.{embeddings,encoder,final_layer_norm}. gain "text_model." after
 * "transformer.". The output holds the first model's keys (renamed); for each key:
 *   out = r_0·v_0 + Σ_{i≥1, key in model i} r_i·v_i + s·v_0,
 * each product and sum rounded to the merge precision (f32, f16 or bf16; every tensor, integer ones
 * included, is read as that dtype, as value.to(dtype) does), where s = the sum of the ratios of the
 * models lacking the key ("use first model's value"). With unet_only, keys containing
 * "first_stage_model", "cond_stage_model" or "conditioner." (VAE, text encoders) are the first
 * model's value (s = 1, no other term). Keys of later models absent from the first are skipped.
 * Ratios default to 1/n each. The output is written in save_dtype, every tensor, without metadata
 * (the reference writes none), one tensor computed at a time while writing (atomic).
 *
 * Where this differs from the reference: it compares a later model's renamed keys with the merged
 * keys but its original keys when it looks for missing ones, so a model with old-form text-encoder
 * names gets those keys counted twice (merged and "missing"); here a key is missing only when its
 * renamed form is absent. Shapes that differ between models are an error (torch fails there). */
#ifndef SD_MODELS_CKPT_MERGE_H
#define SD_MODELS_CKPT_MERGE_H

#include <stddef.h>

typedef struct sd_ckpt_merge_opts {
    int precision;            /* 0 float, 1 fp16, 2 bf16 */
    int save_precision;       /* same codes (the reference's default: float) */
    int unet_only;
    /* called for each skipped key of a later model that the first lacks (--show_skipped) and for
     * each UNet key missing from a later model (the reference's warnings); may be NULL */
    void (*note)(void *ctx, int kind, const char *key, const char *model, double ratio);
    void *note_ctx;
} sd_ckpt_merge_opts;

enum { SD_CKPT_NOTE_SKIPPED = 0, SD_CKPT_NOTE_MISSING = 1 };

typedef struct sd_ckpt_merge_result {
    size_t n_keys;            /* tensors written */
    size_t n_averaged;        /* keys with a term from every model */
    size_t n_first_only;      /* keys that took some ratio from the first model's value */
} sd_ckpt_merge_result;

/* ratios: n values, or NULL for 1/n each. Errors name the file: open/format (SD_ENOTFOUND, SD_EIO,
 * SD_EFORMAT), a shape mismatch or two keys renamed to one (SD_EFORMAT), SD_ENOMEM. */
int sd_ckpt_merge(const char *const *paths, const double *ratios, int n, const char *out,
                  const sd_ckpt_merge_opts *o, sd_ckpt_merge_result *res);

#endif
