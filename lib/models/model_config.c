/* SD model configuration: presets and validation (see model_config_core.h); the JSON/TOML overlay
 * is in model_config_parse.c. No libjq here. */
#include "models/model_config_core.h"

#include <string.h>

#include "base/error.h"

static const char *const family_names[SD_FAMILY_COUNT] = {
    [SD_FAMILY_UNKNOWN] = "unknown",
    [SD_FAMILY_SD1] = "SD1.x",
    [SD_FAMILY_SD2] = "SD2.x",
    [SD_FAMILY_SDXL] = "SDXL",
    [SD_FAMILY_SDXL_REFINER] = "SDXL refiner",
    [SD_FAMILY_SD3] = "SD3",
    [SD_FAMILY_FLUX] = "FLUX",
    [SD_FAMILY_SVD] = "Stable Video Diffusion",
    [SD_FAMILY_CASCADE] = "Stable Cascade",
    [SD_FAMILY_PIXART] = "PixArt",
    [SD_FAMILY_AURAFLOW] = "AuraFlow",
    [SD_FAMILY_HUNYUAN] = "Hunyuan-DiT",
    [SD_FAMILY_SD1_UPSCALER] = "SD x4 upscaler",
};

const char *sd_family_name(sd_family f)
{
    return (unsigned)f < SD_FAMILY_COUNT && family_names[f] ? family_names[f] : "unknown";
}

int sd_model_config_preset(sd_family f, sd_model_config *cfg)
{
    if (f != SD_FAMILY_SD1 && f != SD_FAMILY_SD2 && f != SD_FAMILY_SDXL)
        return sd_err(SD_EUNSUPPORTED, "model family %s has no built-in configuration", sd_family_name(f));
    memset(cfg, 0, sizeof *cfg);
    cfg->family = f;
    cfg->parameterization = SD_PRED_EPS;
    sd_unet_config *u = &cfg->unet;
    u->in_channels = u->out_channels = 4;
    u->model_channels = 320;
    u->n_levels = 4;
    static const int mult[4] = { 1, 2, 4, 4 };
    for (int i = 0; i < 4; i++) {
        u->channel_mult[i] = mult[i];
        u->num_res_blocks[i] = 2;
    }
    u->n_attn = 3;
    u->attention_resolutions[0] = 4;
    u->attention_resolutions[1] = 2;
    u->attention_resolutions[2] = 1;
    for (int i = 0; i < SD_CFG_MAX_LEVELS; i++) u->transformer_depth[i] = 1;
    u->transformer_depth_middle = 1;
    if (f == SD_FAMILY_SD1) {
        u->num_heads = 8;
        u->num_head_channels = -1;
        u->context_dim = 768;
        u->use_linear_in_transformer = 0;
    } else {
        u->num_heads = -1;
        u->num_head_channels = 64;
        u->context_dim = 1024;
        u->use_linear_in_transformer = 1;
    }
    if (f == SD_FAMILY_SDXL) {   /* sgm sd_xl_base.yaml */
        u->n_levels = 3;
        u->channel_mult[3] = u->num_res_blocks[3] = 0;
        u->n_attn = 2;
        u->attention_resolutions[2] = 0;
        static const int depth[3] = { 0, 2, 10 };
        for (int i = 0; i < SD_CFG_MAX_LEVELS; i++) u->transformer_depth[i] = i < 3 ? depth[i] : 0;
        u->transformer_depth_middle = 10;
        u->context_dim = 2048;
        u->adm_in_channels = 2816;
    }
    sd_vae_config *v = &cfg->vae;
    v->in_channels = v->out_ch = 3;
    v->ch = 128;
    v->n_mult = 4;
    for (int i = 0; i < 4; i++) v->ch_mult[i] = mult[i];
    v->num_res_blocks = 2;
    v->n_attn = 0;
    v->z_channels = 4;
    v->embed_dim = 4;
    v->double_z = 1;
    v->resolution = 256;
    v->scale_factor = f == SD_FAMILY_SDXL ? 0.13025f : 0.18215f;
    sd_clip_config *c = &cfg->clip;
    c->max_len = 77;
    c->vocab_size = 49408;
    if (f == SD_FAMILY_SD1) {
        c->width = 768;
        c->layers = 12;
        c->heads = 12;
    } else if (f == SD_FAMILY_SD2) {
        c->width = 1024;
        c->layers = 24;   /* as stored; SD2 uses the penultimate layer's output */
        c->heads = 16;
    } else {              /* SDXL TE1: CLIP ViT-L/14; TE2: OpenCLIP ViT-bigG/14 */
        c->width = 768;
        c->layers = 12;
        c->heads = 12;
        sd_clip_config *c2 = &cfg->clip2;
        c2->max_len = 77;
        c2->vocab_size = 49408;
        c2->width = 1280;
        c2->layers = 32;
        c2->heads = 20;
        c2->projection_dim = 1280;
    }
    return SD_OK;
}

/* ---- validation ----------------------------------------------------------------------------- */

void sd_unet_config_heads(const sd_unet_config *u, int ch, int *heads, int *dim_head)
{
    if (u->num_head_channels == -1) {
        *heads = u->num_heads;
        *dim_head = u->num_heads > 0 ? ch / u->num_heads : 0;
    } else {
        *dim_head = u->num_head_channels;
        *heads = u->num_head_channels > 0 ? ch / u->num_head_channels : 0;
    }
}

int sd_unet_config_level_has_attn(const sd_unet_config *u, int level)
{
    long ds = 1L << level;
    for (int i = 0; i < u->n_attn; i++)
        if (u->attention_resolutions[i] == ds) return 1;
    return 0;
}

static int check_ch(int ch, const char *what, int level)
{
    if (ch % 32)
        return sd_err(SD_EFORMAT, "model config: %s at level %d has %d channels, not a multiple of 32 (GroupNorm(32))",
                      what, level, ch);
    return SD_OK;
}

int sd_unet_config_validate(const sd_unet_config *u)
{
    int rc;
    if (u->n_levels < 1 || u->n_levels > SD_CFG_MAX_LEVELS)
        return sd_err(SD_EFORMAT, "model config: unet.channel_mult: %d levels", u->n_levels);
    if (u->num_heads == -1 && u->num_head_channels == -1)
        return sd_err(SD_EFORMAT, "model config: unet: either num_heads or num_head_channels must be set");
    if (u->num_heads == 0 || u->num_head_channels == 0)
        return sd_err(SD_EFORMAT, "model config: unet.num_heads/num_head_channels must not be 0");
    if (u->in_channels < 1 || u->out_channels < 1 || u->context_dim < 1 || u->transformer_depth_middle < 1 ||
        u->adm_in_channels < 0)
        return sd_err(SD_EFORMAT, "model config: unet: bad in/out channels, context_dim, adm_in_channels or "
                      "transformer_depth_middle");
    if ((rc = check_ch(u->model_channels, "unet.model_channels", 0))) return rc;
    for (int l = 0; l < u->n_levels; l++) {
        int ch = u->model_channels * u->channel_mult[l];
        if ((rc = check_ch(ch, "unet channels", l))) return rc;
        if (u->num_res_blocks[l] < 1)
            return sd_err(SD_EFORMAT, "model config: unet.num_res_blocks[%d] = %d", l, u->num_res_blocks[l]);
        if (sd_unet_config_level_has_attn(u, l) && u->transformer_depth[l] < 1)
            return sd_err(SD_EFORMAT, "model config: unet.transformer_depth[%d] = %d at a level with attention",
                          l, u->transformer_depth[l]);
        int has = sd_unet_config_level_has_attn(u, l) || l == u->n_levels - 1;   /* middle block */
        if (!has) continue;
        int heads, dh;
        sd_unet_config_heads(u, ch, &heads, &dh);
        if (heads < 1 || dh < 1 || heads * dh != ch)
            return sd_err(SD_EFORMAT, "model config: unet: %d channels at level %d do not split into %s %d",
                          ch, l, u->num_head_channels == -1 ? "num_heads" : "heads of num_head_channels",
                          u->num_head_channels == -1 ? u->num_heads : u->num_head_channels);
    }
    for (int i = 0; i < u->n_attn; i++) {
        long a = u->attention_resolutions[i];
        if (a < 1 || (a & (a - 1)) || a >= (1L << u->n_levels))
            return sd_err(SD_EFORMAT, "model config: unet.attention_resolutions: %ld is not a downsample factor "
                          "1, 2, ..., %ld of this UNet", a, 1L << (u->n_levels - 1));
    }
    return SD_OK;
}

int sd_model_config_validate(const sd_model_config *cfg)
{
    const sd_unet_config *u = &cfg->unet;
    int rc = sd_unet_config_validate(u);
    if (rc) return rc;
    const sd_vae_config *v = &cfg->vae;
    if (v->n_mult < 1 || v->ch < 1 || v->num_res_blocks < 1 || v->z_channels < 1 || v->embed_dim < 1 ||
        v->in_channels < 1 || v->out_ch < 1 || !(v->scale_factor > 0))
        return sd_err(SD_EFORMAT, "model config: vae: bad ch, ch_mult, num_res_blocks, z_channels, embed_dim or scale_factor");
    for (int l = 0; l < v->n_mult; l++)
        if ((rc = check_ch(v->ch * v->ch_mult[l], "vae channels", l))) return rc;
    if ((rc = check_ch(v->ch, "vae.ch", 0))) return rc;
    for (int k = 0; k < 2; k++) {
        const sd_clip_config *c = k ? &cfg->clip2 : &cfg->clip;
        if (k && cfg->family != SD_FAMILY_SDXL) {
            if (c->width) return sd_err(SD_EFORMAT, "model config: clip2: only SDXL has a second text encoder");
            break;
        }
        if (c->width < 1 || c->layers < 1 || c->heads < 1 || c->width % c->heads || c->max_len < 2 ||
            c->vocab_size < 1 || c->projection_dim < 0)
            return sd_err(SD_EFORMAT, "model config: %s: width %d, %d heads, %d layers, max_len %d, vocab %d do not fit",
                          k ? "clip2" : "clip", c->width, c->heads, c->layers, c->max_len, c->vocab_size);
    }
    if (cfg->family == SD_FAMILY_SDXL) {
        /* TE1 and TE2 give hidden_states[-2]: both need a layer before the last */
        if (cfg->clip.layers < 2 || cfg->clip2.layers < 2)
            return sd_err(SD_EFORMAT, "model config: SDXL text encoders need at least 2 layers");
        if (cfg->clip2.projection_dim < 1)
            return sd_err(SD_EFORMAT, "model config: clip2.projection_dim must be set for SDXL (the pooled vector)");
        if (u->context_dim != cfg->clip.width + cfg->clip2.width)
            return sd_err(SD_EFORMAT, "model config: unet.context_dim %d is not clip.width + clip2.width = %d",
                          u->context_dim, cfg->clip.width + cfg->clip2.width);
        if (u->adm_in_channels != cfg->clip2.projection_dim + SD_SDXL_SIZE_EMB_DIM)
            return sd_err(SD_EFORMAT, "model config: unet.adm_in_channels %d is not clip2.projection_dim + %d = %d",
                          u->adm_in_channels, SD_SDXL_SIZE_EMB_DIM, cfg->clip2.projection_dim + SD_SDXL_SIZE_EMB_DIM);
    } else if (u->adm_in_channels) {
        return sd_err(SD_EFORMAT, "model config: unet.adm_in_channels: only SDXL has a label embedding");
    }
    if (cfg->parameterization != SD_PRED_EPS && cfg->parameterization != SD_PRED_V)
        return sd_err(SD_EFORMAT, "model config: bad parameterization");
    return SD_OK;
}
