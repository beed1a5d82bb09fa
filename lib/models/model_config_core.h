/* Model configuration of the SD family without the file parser: the hyper-parameter structs,
 * the SD1/SD2 presets, validation and the UNet head/attention rules (see model_config.h for the
 * meaning of the keys). Needs no libjq: code that only builds models (lib/models/unet.c, the
 * CUDA benchmark of tests/parity/device_check.sh's minimal build) includes this header;
 * model_config.h adds the JSON/TOML overlay (lib/models/model_config_parse.c). */
#ifndef SD_MODELS_MODEL_CONFIG_CORE_H
#define SD_MODELS_MODEL_CONFIG_CORE_H

#define SD_CFG_MAX_LEVELS 8

typedef enum sd_family {
    SD_FAMILY_UNKNOWN = 0,
    SD_FAMILY_SD1,      /* SD 1.x: CLIP ViT-L/14, 8 heads, conv proj, context 768 */
    SD_FAMILY_SD2,      /* SD 2.x: OpenCLIP ViT-H/14, head dim 64, linear proj, context 1024 */
    SD_FAMILY_SDXL,     /* SDXL base: CLIP ViT-L/14 + OpenCLIP ViT-bigG/14 (context 2048, pooled
                           vector), transformer depth per level, label_emb (adm 2816) */
    /* recognised, not supported */
    SD_FAMILY_SDXL_REFINER,
    SD_FAMILY_SD3,
    SD_FAMILY_FLUX,
    SD_FAMILY_SVD,
    SD_FAMILY_CASCADE,
    SD_FAMILY_PIXART,
    SD_FAMILY_AURAFLOW,
    SD_FAMILY_HUNYUAN,
    SD_FAMILY_SD1_UPSCALER,
    SD_FAMILY_COUNT
} sd_family;

/* "SD1.x", "SD2.x", "SDXL", ... */
const char *sd_family_name(sd_family f);

typedef enum sd_prediction {
    SD_PRED_EPS = 0,
    SD_PRED_V = 1,
} sd_prediction;

typedef struct sd_unet_config {
    int in_channels, out_channels;
    int model_channels;
    int n_levels;                              /* len(channel_mult) */
    int channel_mult[SD_CFG_MAX_LEVELS];
    int num_res_blocks[SD_CFG_MAX_LEVELS];     /* per level */
    int n_attn;
    int attention_resolutions[SD_CFG_MAX_LEVELS];
    int num_heads;                             /* -1: use num_head_channels */
    int num_head_channels;                     /* -1: use num_heads */
    int context_dim;
    int transformer_depth[SD_CFG_MAX_LEVELS];  /* per level (SGM's list; a number in a config file
                                                  sets every level); levels without attention
                                                  ignore theirs (SDXL: [0, 2, 10]) */
    int transformer_depth_middle;              /* middle block (SGM default: the last level's) */
    int use_linear_in_transformer;
    int adm_in_channels;                       /* > 0: label_emb (ldm num_classes "sequential"):
                                                  linear adm → 4·mc, SiLU, linear 4·mc → 4·mc added
                                                  to the time embedding; the UNet takes a vector
                                                  y [N, adm_in_channels] (SDXL: 2816 = pooled 1280
                                                  + 6 × 256 size embeddings). 0: none */
} sd_unet_config;

typedef struct sd_vae_config {
    int in_channels, out_ch;                   /* 3, 3 */
    int ch;
    int n_mult;
    int ch_mult[SD_CFG_MAX_LEVELS];
    int num_res_blocks;
    int n_attn;
    int attn_resolutions[SD_CFG_MAX_LEVELS];
    int z_channels;
    int embed_dim;                             /* quant_conv: 2·z_channels → 2·embed_dim */
    int double_z;
    int resolution;
    float scale_factor;
} sd_vae_config;

typedef struct sd_clip_config {
    int width, layers, heads, max_len, vocab_size;
    int projection_dim;                        /* text_projection width (SDXL TE2: 1280); 0 = none */
} sd_clip_config;

typedef struct sd_model_config {
    sd_family family;
    sd_prediction parameterization;
    sd_unet_config unet;
    sd_vae_config vae;
    sd_clip_config clip;                       /* SD1/SD2: the text encoder; SDXL: TE1 (CLIP ViT-L) */
    sd_clip_config clip2;                      /* SDXL: TE2 (OpenCLIP ViT-bigG, with projection);
                                                  width 0 for SD1/SD2 */
} sd_model_config;

/* The built-in preset of SD_FAMILY_SD1, SD_FAMILY_SD2 or SD_FAMILY_SDXL (parameterization eps: the
 * v models are told apart by the user's flag or config, as the reference does). SD_EUNSUPPORTED
 * otherwise. */
int sd_model_config_preset(sd_family f, sd_model_config *cfg);

/* The UNet's own checks (levels, channels divisible by 32, heads, depths, attention levels). */
int sd_unet_config_validate(const sd_unet_config *u);

/* Consistency checks (channel counts divisible by 32 for the GroupNorms, heads dividing the
 * widths, ranges). Messages name the key. */
int sd_model_config_validate(const sd_model_config *cfg);

/* Heads and head width of a transformer at a level with `ch` channels (ldm's rule:
 * num_head_channels = -1 → heads = num_heads, dim_head = ch / heads; else dim_head =
 * num_head_channels, heads = ch / dim_head). */
void sd_unet_config_heads(const sd_unet_config *u, int ch, int *heads, int *dim_head);

/* 1 when level `level` (downsample factor 2^level) has attention. */
int sd_unet_config_level_has_attn(const sd_unet_config *u, int level);

/* SDXL's size conditioning: 6 numbers (orig h, w, crop top, left, target h, w) × 256. */
#define SD_SDXL_SIZE_EMB_DIM 1536

#endif
