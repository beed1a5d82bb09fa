/* Writing a loaded SD1.x / SD2.x / SDXL model as a Diffusers pipeline folder, the layout kohya's
 * model_util.save_diffusers_checkpoint (StableDiffusionPipeline) and
 * sdxl_model_util.save_diffusers_checkpoint (StableDiffusionXLPipeline) get from save_pretrained:
 *
 *   OUT/model_index.json                      pipeline class and its components
 *   OUT/unet/config.json                      UNet2DConditionModel
 *   OUT/unet/diffusion_pytorch_model.safetensors
 *   OUT/vae/config.json, diffusion_pytorch_model.safetensors       AutoencoderKL
 *   OUT/text_encoder/config.json, model.safetensors                CLIPTextModel
 *   OUT/text_encoder_2/config.json, model.safetensors              SDXL: CLIPTextModelWithProjection
 *   OUT/tokenizer/, OUT/tokenizer_2/ (SDXL)   written by the caller's `tokenizer` hook
 *   OUT/scheduler/scheduler_config.json       SD1/SD2: DDIMScheduler, SDXL: EulerDiscreteScheduler
 *
 * Weights are always safetensors (the reference writes torch .bin for --save_model_as diffusers
 * without --use_safetensors; Diffusers loads either). Tensor names: UNet through
 * sd_unet_name_to_diffusers, VAE through sd_vae_name_to_diffusers (attention matrices [C,C]),
 * text encoders in the Hugging Face names (SD2: the layers that run, num_hidden_layers = layers - 1
 * as kohya's converted text encoder has; SDXL TE2 with text_projection.weight). The config.json
 * values come from the model's configuration (m->cfg); shapes Diffusers cannot express (per-level
 * residual block counts, a middle transformer depth other than the last level's, VAE attention
 * inside the levels, a label embedding outside SDXL) are refused with SD_EUNSUPPORTED.
 *
 * Atomic: everything is written into a temporary folder beside `out` ("<dir>/.<name>.tmp.<pid>"),
 * which is then renamed to `out`; an existing folder `out` is replaced only after the new one is
 * complete (renamed aside, the new one renamed in, the old one removed). `out` being an existing
 * non-folder is an error (SD_EEXIST-like SD_EIO message "OUT: exists and is not a folder"). On any
 * failure the temporary folder is removed and `out` is untouched. */
#ifndef SD_MODELS_DIFFUSERS_WRITE_H
#define SD_MODELS_DIFFUSERS_WRITE_H

#include "models/sd_model.h"

typedef struct sd_diffusers_write_opts {
    sd_st_dtype dtype[3];          /* storage dtype of UNet, text encoder(s), VAE (F32/F16/BF16) */
    /* writes the CLIPTokenizer files into the existing folder `dir` (pad: 49407 = "<|endoftext|>"
     * as SD1's and SDXL's tokenizer, 0 = "!" as SD2's and SDXL's tokenizer_2); text/
     * clip_tokenizer.h's sd_clip_tokenizer_write_hf fits (vocab NULL = the shipped vocabulary) */
    int (*tokenizer)(const char *vocab, const char *dir, int32_t pad);
    const char *vocab;             /* passed to tokenizer */
} sd_diffusers_write_opts;

/* Write the model (sd_model_load()ed with SD_MODEL_ALL; values on any device) as the Diffusers
 * folder `out`. The prediction type of the scheduler config is the model's parameterization
 * (m->cfg.parameterization: --v_parameterization → "v_prediction"). */
int sd_model_write_diffusers(sd_model *m, const char *out, const sd_diffusers_write_opts *o);

/* rm -r `path` (a Diffusers folder a trainer's retention deletes); absent is fine. */
int sd_diffusers_remove(const char *path);

#endif
