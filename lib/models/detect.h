/* Model-family detection from the tensor names and shapes of a safetensors file (spec §9).
 *
 * Recognised layouts:
 *   single-file checkpoint (ldm names): model.diffusion_model. (UNet), first_stage_model. (VAE),
 *     cond_stage_model.transformer. (SD1 CLIP-L, HF names) / cond_stage_model.model. (SD2 OpenCLIP);
 *     SDXL (sgm names): conditioner.embedders.0.transformer. (TE1, CLIP-L, HF names) and
 *     conditioner.embedders.1.model. (TE2, OpenCLIP bigG)
 *   bare ldm component files: a UNet with input_blocks.* at the top, a VAE-only file (encoder.down.*)
 *   Diffusers component files: unet/diffusion_pytorch_model.safetensors (down_blocks.*),
 *     vae/… (encoder.down_blocks.*), text_encoder/model.safetensors (text_model.*),
 *     SDXL text_encoder_2/model.safetensors (text_model.* + text_projection.weight)
 *
 * SD1.x vs SD2.x vs SDXL is decided by the UNet's cross-attention width (768 / 1024 / 2048), or by
 * the text encoder when the file has no UNet. Unlike the reference (which needs --v2), no flag is needed for that; ε vs
 * v prediction is not visible in the weights and stays the user's choice (--v_parameterization or
 * the model config), as in the reference. The SDXL refiner, SD3, FLUX, Stable Video Diffusion,
 * Stable Cascade, PixArt, AuraFlow, Hunyuan-DiT and the x4 upscaler are recognised and refused with
 * SD_EUNSUPPORTED naming the family. */
#ifndef SD_MODELS_DETECT_H
#define SD_MODELS_DETECT_H

#include "io/safetensors.h"
#include "models/model_config.h"

typedef enum sd_layout {
    SD_LAYOUT_NONE = 0,        /* component absent */
    SD_LAYOUT_LDM,             /* ldm/original names under the single-file prefix */
    SD_LAYOUT_LDM_BARE,        /* ldm/original names without a prefix (VAE-only or UNet-only file) */
    SD_LAYOUT_DIFFUSERS,       /* Diffusers / Hugging Face names, no prefix */
} sd_layout;

typedef struct sd_detect_info {
    sd_family family;
    sd_layout unet, vae, text_encoder;
    sd_layout text_encoder2;   /* SDXL TE2 (OpenCLIP bigG) */
    const char *unet_prefix;   /* file prefix of the UNet tensors ("model.diffusion_model." or "") */
    const char *vae_prefix;    /* "first_stage_model." or "" */
    const char *te_prefix;     /* "cond_stage_model.transformer." / "cond_stage_model.model." /
                                  "conditioner.embedders.0.transformer." / "" */
    const char *te2_prefix;    /* "conditioner.embedders.1.model." / "" */
    int in_channels;           /* UNet conv_in input channels (4; 9 inpainting, 8 instruct-pix2pix) */
    int context_dim;           /* UNet cross-attention width (0 without a UNet) */
    int unet_matches_preset;   /* every UNet tensor has the family preset's name and shape */
    sd_model_config cfg;       /* the family preset with in_channels/out_channels from the file */
    char description[160];     /* "SD1.x single-file checkpoint (UNet, VAE, text encoder)" */
} sd_detect_info;

/* Inspect `st`. SD_OK for SD1.x / SD2.x / SDXL content (a full checkpoint or a component file);
 * SD_EUNSUPPORTED for another recognised family ("m.safetensors: FLUX model: not supported
 * (supported: SD1.x, SD2.x, SDXL)"), with info->family set; SD_EFORMAT when no SD model tensors are found.
 * info is filled in every case. */
int sd_detect_model(const sd_safetensors *st, sd_detect_info *info);

/* The model config to use: when `user` is non-NULL (from --model_config) it wins; otherwise the
 * detected preset, which requires the UNet to match it (else SD_EUNSUPPORTED "…: UNet shapes are
 * not those of SD2.x: describe the model with --model_config"). `v_param` ≥ 0 overrides the
 * parameterization (1 = v, from --v_parameterization). */
int sd_detect_config(const sd_detect_info *info, const sd_model_config *user, int v_param,
                     sd_model_config *out);

#endif
