/* A kohya LoRA file merged into a model's weights (sd-sample's --network_weights, sd-train's
 * --base_weights; networks/lora.py create_network_from_weights + merge_to, spec §7.8):
 * W += multiplier · alpha/rank · up·down for every module of the file (linear, 1×1 and k×k convs).
 *
 * SD1/SD2: the network is built from the file's modules (Diffusers UNet names, lora_te_*), loaded
 * strictly (a module naming no layer of the model is an error), merged and detached, so no hook
 * stays on the layers. SDXL: modules merged by name (diffusion/sample_images.h
 * sd_gen_lora_merge_sdxl: SGM or Diffusers UNet names, lora_te1_/lora_te2_).
 *
 * The weights must be on the host. f32 weights are merged in place; f16/bf16 frozen weights are
 * read as f32, merged and stored back (round to nearest even) — what the reference does with
 * weights already cast to the training dtype. */
#ifndef SD_TRAIN_LORA_MERGE_H
#define SD_TRAIN_LORA_MERGE_H

#include <stddef.h>

#include "models/sd_model.h"
#include "train/lora_lbw.h"
#include "tensor/ops.h"

/* Errors name the file: cannot open/parse (SD_ENOTFOUND/SD_EIO/SD_EFORMAT), "no LoRA modules"
 * (SD_EFORMAT), a module naming no layer or not fitting it (SD_EFORMAT). *n_te / *n_unet (may
 * be NULL) count the merged modules. */
int sd_lora_merge_file(sd_ctx *ctx, sd_model *m, const char *path, double mul, size_t *n_te, size_t *n_unet);
/* sdxl_merge_lora.py --lbws: the same for an SDXL model with list `index` of `lbws` (train/lora_lbw.h,
 * SDXL block names) multiplying each module's scale; SD_EUSAGE for an SD1/SD2 model (merge_lora.py
 * has no --lbws). */
int sd_lora_merge_file_lbw(sd_ctx *ctx, sd_model *m, const char *path, double mul, const sd_lora_lbws *lbws,
                           int index, size_t *n_te, size_t *n_unet);

/* sd_lora_merge (nn/lora_hook.h) into a weight of any storage dtype on the host (see above). */
int sd_lora_merge_stored(sd_ctx *ctx, const sd_lora *l, sd_tensor *w, float mul);

#endif
