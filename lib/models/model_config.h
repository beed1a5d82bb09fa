/* Model configuration of the SD family: the UNet, VAE and CLIP text-encoder hyper-parameters under
 * the parameter names of the original ldm yaml configs, plus the prediction type.
 *
 * Real SD1.x / SD2.x checkpoints are recognised from their tensors (models/detect.h) and use the
 * built-in presets; any other shape (tiny test models, custom widths) is described by a
 * `--model_config FILE` in JSON or TOML:
 *
 *   family = "sd1"                  # optional: preset the rest starts from ("sd1" default, "sd2", "sdxl")
 *   parameterization = "eps"        # or "v"
 *   [unet]
 *   model_channels = 32             # ldm UNetModel arguments
 *   channel_mult = [1, 2]
 *   num_res_blocks = 1              # or one per level: [1, 2]
 *   attention_resolutions = [1, 2]  # downsample factors (ds = 1, 2, 4, ...) that get attention
 *   num_heads = 2                   # -1 when num_head_channels is used
 *   num_head_channels = -1          # ≠ -1: heads = channels / num_head_channels (wins, as in ldm)
 *   context_dim = 32
 *   transformer_depth = 1           # or one per level: [0, 2, 10] (SDXL)
 *   transformer_depth_middle = 1    # default: the last level's transformer_depth
 *   use_linear_in_transformer = false
 *   adm_in_channels = 0             # SDXL: clip2.projection_dim + 1536 (label_emb on y)
 *   in_channels = 4                 # also out_channels
 *   [vae]
 *   ch = 128, ch_mult = [1,2,4,4], num_res_blocks = 2, attn_resolutions = [], z_channels = 4,
 *   double_z = true, scale_factor = 0.18215, embed_dim = 4, resolution = 256 (unused by the math)
 *   [clip]
 *   width = 768, layers = 12, heads = 12, max_len = 77, vocab_size = 49408, projection_dim = 0
 *   [clip2]                         # SDXL only: TE2 (OpenCLIP ViT-bigG), same keys
 *   width = 1280, layers = 32, heads = 20, projection_dim = 1280
 *
 * Every key is optional and overrides the family preset; an unknown key, a wrong type or an out of
 * range value is an error naming the key. JSON may also nest the same way ({"unet": {...}}). */
#ifndef SD_MODELS_MODEL_CONFIG_H
#define SD_MODELS_MODEL_CONFIG_H

#include <jv.h>

#include "models/model_config_core.h"

/* Overlay the keys of `v` (borrowed; an object as described above) on *cfg. If `v` has "family",
 * *cfg is first reset to that preset. `name` prefixes messages ("cfg.toml: unet.channel_mult: ..."). */
int sd_model_config_apply(sd_model_config *cfg, jv v, const char *name);

/* Read a JSON (.json, or any file starting with '{') or TOML file: the SD1 preset (or the file's
 * "family") overlaid with the file's keys, then validated. */
int sd_model_config_load(const char *path, sd_model_config *cfg);
/* The same with `family`'s preset when the file names no family (--v2 → SD2). */
int sd_model_config_load_family(const char *path, sd_family family, sd_model_config *cfg);

#endif
