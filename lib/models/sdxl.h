/* SDXL conditioning helpers (kohya sdxl_train_util / SdxlTextEncodingStrategy):
 *
 * - the size embedding of the UNet vector: for each of the six numbers orig_h, orig_w, crop_top,
 *   crop_left, target_h, target_w (in that order) 256 values [cos(t·f_0..127), sin(t·f_0..127)]
 *   with f_i = exp(−ln(10000)·i/128) (sdxl_train_util.get_size_embeddings → get_timestep_embedding
 *   → sdxl_original_unet.timestep_embedding(t, 256)). Computed as PyTorch does it in float32:
 *   f_i = exp((float)(−ln 10000) · i / 128) with PyTorch's CPU expf (SLEEF's algorithm, bit-exact),
 *   t·f_i rounded to float, then cos/sin of that float (in double, rounded once; PyTorch's own
 *   are within an ulp).
 * - the UNet's y vector [B, P + 1536] = concat(pooled [B, P], size embedding [B, 1536]) on the
 *   channel axis (SDXL base: P = 1280, y = 2816), and its backward (dy → dpooled). */
#ifndef SD_MODELS_SDXL_H
#define SD_MODELS_SDXL_H

#include "models/model_config_core.h"
#include "tensor/ops.h"

void sd_sdxl_size_embedding(float out[SD_SDXL_SIZE_EMB_DIM], double orig_h, double orig_w, double crop_top,
                            double crop_left, double target_h, double target_w);

/* y [B, P + 1536] = cat(pooled [B, P], size_emb [B, 1536]) (f32, same device). */
int sd_sdxl_vector(sd_ctx *ctx, sd_tensor *y, const sd_tensor *pooled, const sd_tensor *size_emb);
/* dpooled [B, P] += dy[:, :P] (the size embedding has no gradient). */
int sd_sdxl_vector_backward(sd_ctx *ctx, sd_tensor *dpooled, const sd_tensor *dy);

#endif
