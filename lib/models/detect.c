/* Model-family detection from tensor names and shapes (see detect.h). */
#include "models/detect.h"

#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "models/unet.h"
#include "nn/params.h"

static const sd_st_tensor *find(const sd_safetensors *st, const char *name)
{
    return sd_safetensors_find(st, name);
}

/* 1 when some tensor name starts with `prefix` (names are sorted: binary search would do, but the
 * handle keeps file order; a linear scan over a few thousand names is cheap). */
static int has_prefix(const sd_safetensors *st, const char *prefix)
{
    size_t n = sd_safetensors_count(st), pl = strlen(prefix);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(sd_safetensors_at(st, i)->name, prefix, pl)) return 1;
    return 0;
}

/* 1 when some tensor name contains `part`. */
static int has_part(const sd_safetensors *st, const char *part)
{
    size_t n = sd_safetensors_count(st);
    for (size_t i = 0; i < n; i++)
        if (strstr(sd_safetensors_at(st, i)->name, part)) return 1;
    return 0;
}

static sd_family other_family(const sd_safetensors *st)
{
    if (has_part(st, "double_blocks.0.img_attn") || has_part(st, "single_blocks.0.linear1")) return SD_FAMILY_FLUX;
    if (has_part(st, "joint_blocks.0.")) return SD_FAMILY_SD3;
    if (has_part(st, "double_layers.0.") || has_part(st, "cond_seq_linear")) return SD_FAMILY_AURAFLOW;
    if (has_part(st, "y_embedder.y_embedding") || has_part(st, "t_block.1.weight")) return SD_FAMILY_PIXART;
    if (has_part(st, "mlp_t5.") || has_part(st, "text_embedding_padding")) return SD_FAMILY_HUNYUAN;
    if (has_part(st, "clip_txt_mapper.") || has_part(st, "effnet_mapper.")) return SD_FAMILY_CASCADE;
    if (has_part(st, ".time_stack.") || has_part(st, ".time_mixer.")) return SD_FAMILY_SVD;
    if (has_prefix(st, "low_scale_model.")) return SD_FAMILY_SD1_UPSCALER;
    /* the SDXL refiner: OpenCLIP bigG alone as embedder 0, adm conditioning with context 1280 */
    if (has_prefix(st, "conditioner.embedders.0.model.")) return SD_FAMILY_SDXL_REFINER;
    static const char *const k4[] = { "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                                      "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                                      "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight" };
    if (find(st, "model.diffusion_model.label_emb.0.0.weight") || find(st, "label_emb.0.0.weight") ||
        find(st, "add_embedding.linear_1.weight")) {
        for (int i = 0; i < 3; i++) {
            const sd_st_tensor *k = find(st, k4[i]);
            if (k && k->ndim == 2 && k->shape[1] == 1280) return SD_FAMILY_SDXL_REFINER;
        }
    }
    return SD_FAMILY_UNKNOWN;
}

static sd_family family_of_width(int64_t c)
{
    return c == 768 ? SD_FAMILY_SD1 : c == 1024 ? SD_FAMILY_SD2 : c == 2048 ? SD_FAMILY_SDXL : SD_FAMILY_UNKNOWN;
}

/* Compare every tensor of the preset UNet (registration only, no memory) with the file. */
static int matches_preset(const sd_safetensors *st, const sd_detect_info *in)
{
    sd_params reg;
    sd_unet u;
    sd_params_init(&reg);
    if (sd_unet_init(&u, &reg, NULL, &in->cfg.unet)) {
        sd_params_free(&reg);
        sd_err_clear();
        return 0;
    }
    int ok = 1;
    size_t count = 0;
    for (size_t i = 0; i < sd_params_count(&reg) && ok; i++) {
        const sd_param *p = sd_params_at(&reg, i);
        char name[512];
        if (in->unet == SD_LAYOUT_DIFFUSERS) {
            if (sd_unet_name_to_diffusers(&u, p->key, name, sizeof name)) { ok = 0; break; }
        } else {
            snprintf(name, sizeof name, "%s%s", in->unet_prefix, p->key);
        }
        const sd_st_tensor *t = find(st, name);
        if (!t) { ok = 0; break; }
        /* 1×1 conv and linear spellings of proj_in/proj_out are equivalent */
        int nd = t->ndim, pnd = p->value.ndim;
        while (nd > 2 && t->shape[nd - 1] == 1) nd--;
        while (pnd > 2 && p->value.shape[pnd - 1] == 1) pnd--;
        if (nd != pnd) ok = 0;
        for (int d = 0; d < nd && ok; d++)
            if (t->shape[d] != p->value.shape[d]) ok = 0;
        count++;
    }
    /* no extra UNet tensors (a bigger model with the same first layers) */
    if (ok && in->unet != SD_LAYOUT_DIFFUSERS && *in->unet_prefix) {
        size_t n = 0, pl = strlen(in->unet_prefix);
        for (size_t i = 0; i < sd_safetensors_count(st); i++)
            if (!strncmp(sd_safetensors_at(st, i)->name, in->unet_prefix, pl)) n++;
        ok = n == count;
    }
    sd_unet_free(&u);
    sd_params_free(&reg);
    return ok;
}

int sd_detect_model(const sd_safetensors *st, sd_detect_info *info)
{
    memset(info, 0, sizeof *info);
    info->unet_prefix = info->vae_prefix = info->te_prefix = info->te2_prefix = "";
    const char *path = sd_safetensors_path(st);
    sd_family other = other_family(st);
    if (other != SD_FAMILY_UNKNOWN) {
        info->family = other;
        snprintf(info->description, sizeof info->description, "%s model", sd_family_name(other));
        return sd_err(SD_EUNSUPPORTED, "%s: %s model: not supported (supported: SD1.x, SD2.x, SDXL)", path,
                      sd_family_name(other));
    }
    /* UNet: the first cross-attention (level 0 for SD1/SD2, level 1 for SDXL, which has none on level 0) */
    static const char *const k_attn[2] = { "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                                           "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight" };
    static const char *const k_attn_d[2] = { "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                                             "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight" };
    char name[256];
    const sd_st_tensor *ka = NULL, *cin = NULL;
    for (int i = 0; i < 2 && !ka; i++) {
        snprintf(name, sizeof name, "model.diffusion_model.%s", k_attn[i]);
        if ((ka = find(st, name))) {
            info->unet = SD_LAYOUT_LDM;
            info->unet_prefix = "model.diffusion_model.";
            cin = find(st, "model.diffusion_model.input_blocks.0.0.weight");
        } else if ((ka = find(st, k_attn[i]))) {
            info->unet = SD_LAYOUT_LDM_BARE;
            cin = find(st, "input_blocks.0.0.weight");
        } else if ((ka = find(st, k_attn_d[i]))) {
            info->unet = SD_LAYOUT_DIFFUSERS;
            cin = find(st, "conv_in.weight");
        }
    }
    if (!ka && (has_prefix(st, "model.diffusion_model.") || find(st, "conv_in.weight") ||
                find(st, "input_blocks.0.0.weight"))) {
        info->family = SD_FAMILY_UNKNOWN;
        snprintf(info->description, sizeof info->description, "unrecognised UNet");
        return sd_err(SD_EUNSUPPORTED, "%s: a UNet without SD1/SD2/SDXL cross-attention layers: not a supported model",
                      path);
    }
    /* VAE */
    if (find(st, "first_stage_model.encoder.conv_in.weight")) {
        info->vae = SD_LAYOUT_LDM;
        info->vae_prefix = "first_stage_model.";
    } else if (find(st, "encoder.conv_in.weight")) {
        info->vae = has_prefix(st, "encoder.down_blocks.") ? SD_LAYOUT_DIFFUSERS : SD_LAYOUT_LDM_BARE;
    }
    /* text encoder */
    sd_family te_family = SD_FAMILY_UNKNOWN;
    if (has_prefix(st, "cond_stage_model.transformer.")) {
        info->text_encoder = SD_LAYOUT_LDM;
        info->te_prefix = "cond_stage_model.transformer.";
        te_family = SD_FAMILY_SD1;
    } else if (has_prefix(st, "cond_stage_model.model.")) {
        info->text_encoder = SD_LAYOUT_LDM;
        info->te_prefix = "cond_stage_model.model.";
        te_family = SD_FAMILY_SD2;
    } else if (has_prefix(st, "conditioner.embedders.")) {
        /* SDXL: both text encoders (a file may hold either) */
        if (has_prefix(st, "conditioner.embedders.0.transformer.")) {
            info->text_encoder = SD_LAYOUT_LDM;
            info->te_prefix = "conditioner.embedders.0.transformer.";
        }
        if (has_prefix(st, "conditioner.embedders.1.model.")) {
            info->text_encoder2 = SD_LAYOUT_LDM;
            info->te2_prefix = "conditioner.embedders.1.model.";
        }
        te_family = SD_FAMILY_SDXL;
    } else if (find(st, "text_model.embeddings.token_embedding.weight")) {
        const sd_st_tensor *e = find(st, "text_model.embeddings.token_embedding.weight");
        if (find(st, "text_projection.weight")) {
            /* CLIPTextModelWithProjection: SDXL's Diffusers text_encoder_2 */
            info->text_encoder2 = SD_LAYOUT_DIFFUSERS;
            te_family = SD_FAMILY_SDXL;
        } else {
            /* SD1 and SDXL's text_encoder are the same CLIP ViT-L: the UNet (or the folder) decides */
            info->text_encoder = SD_LAYOUT_DIFFUSERS;
            te_family = e->ndim == 2 ? family_of_width(e->shape[1]) : SD_FAMILY_UNKNOWN;
        }
    }
    if (ka) {
        if (ka->ndim != 2) return sd_err(SD_EFORMAT, "%s: tensor '%s' is not a matrix", path, ka->name);
        info->context_dim = (int)ka->shape[1];
        info->family = family_of_width(ka->shape[1]);
        if (info->family == SD_FAMILY_UNKNOWN) {
            snprintf(info->description, sizeof info->description, "UNet with cross-attention width %lld",
                     (long long)ka->shape[1]);
            return sd_err(SD_EUNSUPPORTED, "%s: UNet cross-attention width %lld is not that of SD1.x (768), SD2.x "
                          "(1024) or SDXL (2048): not a supported model", path, (long long)ka->shape[1]);
        }
        /* a Diffusers CLIP ViT-L next to an SDXL UNet is SDXL's TE1 */
        if (info->family == SD_FAMILY_SDXL && te_family == SD_FAMILY_SD1 && info->text_encoder == SD_LAYOUT_DIFFUSERS)
            te_family = SD_FAMILY_SDXL;
        if (te_family != SD_FAMILY_UNKNOWN && te_family != info->family)
            return sd_err(SD_EFORMAT, "%s: the UNet is %s but the text encoder is %s", path,
                          sd_family_name(info->family), sd_family_name(te_family));
    } else {
        info->family = te_family != SD_FAMILY_UNKNOWN ? te_family : info->vae ? SD_FAMILY_SD1 : SD_FAMILY_UNKNOWN;
    }
    if (!info->unet && !info->vae && !info->text_encoder && !info->text_encoder2) {
        snprintf(info->description, sizeof info->description, "no SD model tensors");
        return sd_err(SD_EFORMAT, "%s: no UNet, VAE or text encoder tensors of an SD model found", path);
    }
    sd_model_config_preset(info->family, &info->cfg);
    if (ka) {
        if (cin && cin->ndim == 4) {
            info->in_channels = (int)cin->shape[1];
            info->cfg.unet.in_channels = info->in_channels;
        }
        info->unet_matches_preset = matches_preset(st, info);
    }
    static const char *const lay[] = { "", "", " (bare)", " (Diffusers)" };
    snprintf(info->description, sizeof info->description, "%s %s%s%s%s%s%s%s%s%s", sd_family_name(info->family),
             info->unet && info->vae && info->text_encoder ? "single-file checkpoint:" : "component file:",
             info->unet ? " UNet" : "", info->unet ? lay[info->unet] : "", info->vae ? " VAE" : "",
             info->vae ? lay[info->vae] : "", info->text_encoder ? " text-encoder" : "",
             info->text_encoder ? lay[info->text_encoder] : "", info->text_encoder2 ? " text-encoder-2" : "",
             info->text_encoder2 ? lay[info->text_encoder2] : "");
    return SD_OK;
}

int sd_detect_config(const sd_detect_info *info, const sd_model_config *user, int v_param, sd_model_config *out)
{
    int rc;
    if (user) {
        *out = *user;
    } else {
        if (info->family != SD_FAMILY_SD1 && info->family != SD_FAMILY_SD2 && info->family != SD_FAMILY_SDXL)
            return sd_err(SD_EUNSUPPORTED, "%s: not a supported model", sd_family_name(info->family));
        if (info->unet && !info->unet_matches_preset)
            return sd_err(SD_EUNSUPPORTED, "UNet shapes are not those of %s: describe the model with --model_config",
                          sd_family_name(info->family));
        *out = info->cfg;
    }
    if (v_param >= 0) out->parameterization = v_param ? SD_PRED_V : SD_PRED_EPS;
    if ((rc = sd_model_config_validate(out))) return rc;
    return SD_OK;
}
