/* A loaded model as a Diffusers pipeline folder (see diffusers_write.h). */
#include "models/diffusers_write.h"

#include <errno.h>
#include <ftw.h>
#include <jv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/strbuf.h"

#define DIFFUSERS_VERSION "0.32.1"
#define TRANSFORMERS_VERSION "4.44.0"

/* ---- JSON as Python's json.dumps(obj, indent=2, sort_keys=True) + "\n" ------------------------- */

/* A number literal written as is (Python float reprs such as 1.0 or 1e-05). */
static jv raw(const char *s)
{
    char b[64];
    snprintf(b, sizeof b, "\x01%s", s);
    return jv_string(b);
}

/* The shortest decimal that reads back as the float f (Python repr of float32 values stored in the
 * config, e.g. 0.18215). */
static jv jfloat(float f)
{
    char b[48];
    for (int p = 1; p <= 9; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)f);
        if ((float)strtod(b, NULL) == f) break;
    }
    if (!strpbrk(b, ".en")) strcat(b, ".0");
    return raw(b);
}

static void json_indent(sd_strbuf *b, int level)
{
    for (int i = 0; i < level; i++) sd_strbuf_add(b, "  ", 2);
}

static void json_string(sd_strbuf *b, const char *s)
{
    sd_strbuf_add(b, "\"", 1);
    for (; *s; s++) {
        char e[8];
        if (*s == '"' || *s == '\\') {
            e[0] = '\\';
            e[1] = *s;
            sd_strbuf_add(b, e, 2);
        } else if ((unsigned char)*s < 0x20) {
            snprintf(e, sizeof e, "\\u%04x", (unsigned char)*s);
            sd_strbuf_puts(b, e);
        } else {
            sd_strbuf_add(b, s, 1);
        }
    }
    sd_strbuf_add(b, "\"", 1);
}

static void json_emit(sd_strbuf *b, jv v, int level)
{
    switch (jv_get_kind(v)) {
    case JV_KIND_NULL: sd_strbuf_puts(b, "null"); break;
    case JV_KIND_TRUE: sd_strbuf_puts(b, "true"); break;
    case JV_KIND_FALSE: sd_strbuf_puts(b, "false"); break;
    case JV_KIND_NUMBER: {
        char n[48];
        snprintf(n, sizeof n, "%lld", (long long)jv_number_value(v));
        sd_strbuf_puts(b, n);
        break;
    }
    case JV_KIND_STRING: {
        const char *s = jv_string_value(v);
        if (s[0] == '\x01') sd_strbuf_puts(b, s + 1);
        else json_string(b, s);
        break;
    }
    case JV_KIND_ARRAY: {
        int n = jv_array_length(jv_copy(v));
        if (!n) {
            sd_strbuf_puts(b, "[]");
            break;
        }
        sd_strbuf_puts(b, "[\n");
        for (int i = 0; i < n; i++) {
            json_indent(b, level + 1);
            jv e = jv_array_get(jv_copy(v), i);
            json_emit(b, e, level + 1);
            jv_free(e);
            sd_strbuf_puts(b, i + 1 < n ? ",\n" : "\n");
        }
        json_indent(b, level);
        sd_strbuf_puts(b, "]");
        break;
    }
    case JV_KIND_OBJECT: {
        jv keys = jv_keys(jv_copy(v));   /* sorted */
        int n = jv_array_length(jv_copy(keys));
        if (!n) {
            sd_strbuf_puts(b, "{}");
            jv_free(keys);
            break;
        }
        sd_strbuf_puts(b, "{\n");
        for (int i = 0; i < n; i++) {
            jv k = jv_array_get(jv_copy(keys), i);
            json_indent(b, level + 1);
            json_string(b, jv_string_value(k));
            sd_strbuf_puts(b, ": ");
            jv e = jv_object_get(jv_copy(v), k);
            json_emit(b, e, level + 1);
            jv_free(e);
            sd_strbuf_puts(b, i + 1 < n ? ",\n" : "\n");
        }
        jv_free(keys);
        json_indent(b, level);
        sd_strbuf_puts(b, "}");
        break;
    }
    default: sd_strbuf_puts(b, "null"); break;
    }
}

/* Write obj (consumed) as dir/name. */
static int write_json(const char *dir, const char *name, jv obj)
{
    sd_strbuf b = { 0 };
    json_emit(&b, obj, 0);
    jv_free(obj);
    sd_strbuf_puts(&b, "\n");
    if (b.oom) {
        free(b.p);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int rc = sd_write_file_atomic(p, b.p, b.n);
    free(b.p);
    return rc;
}

static jv set(jv o, const char *k, jv v) { return jv_object_set(o, jv_string(k), v); }
static jv pair(const char *lib, const char *cls)
{
    return jv_array_append(jv_array_append(jv_array(), lib ? jv_string(lib) : jv_null()), cls ? jv_string(cls) : jv_null());
}

static const char *dtype_name(sd_st_dtype d)
{
    return d == SD_ST_F16 ? "float16" : d == SD_ST_BF16 ? "bfloat16" : "float32";
}

/* ---- configs --------------------------------------------------------------------------------- */

static int unet_sample_size(const sd_model_config *c)
{
    return c->family == SD_FAMILY_SDXL ? 128 : c->family == SD_FAMILY_SD2 && c->parameterization == SD_PRED_V ? 96 : 64;
}

static int unet_config(const sd_model_config *mc, jv *out)
{
    const sd_unet_config *u = &mc->unet;
    int sdxl = mc->family == SD_FAMILY_SDXL, L = u->n_levels;
    for (int i = 1; i < L; i++)
        if (u->num_res_blocks[i] != u->num_res_blocks[0])
            return sd_err(SD_EUNSUPPORTED, "a Diffusers UNet has one layers_per_block; this model's num_res_blocks "
                          "differ between levels");
    if (u->adm_in_channels > 0 && !sdxl)
        return sd_err(SD_EUNSUPPORTED, "a label embedding (adm_in_channels) outside SDXL has no Diffusers form here");
    int uniform_depth = 1, d0 = -1;
    for (int i = 0; i < L; i++)
        if (sd_unet_config_level_has_attn(u, i)) {
            if (d0 < 0) d0 = u->transformer_depth[i];
            else if (u->transformer_depth[i] != d0) uniform_depth = 0;
        }
    int mid_depth = u->transformer_depth_middle > 0 ? u->transformer_depth_middle : u->transformer_depth[L - 1];
    if (mid_depth != (u->transformer_depth[L - 1] > 0 ? u->transformer_depth[L - 1] : 1))
        return sd_err(SD_EUNSUPPORTED, "a Diffusers UNet's middle block has the last level's transformer depth; this "
                      "model's transformer_depth_middle is %d", mid_depth);
    jv o = jv_object();
    o = set(o, "_class_name", jv_string("UNet2DConditionModel"));
    o = set(o, "_diffusers_version", jv_string(DIFFUSERS_VERSION));
    o = set(o, "act_fn", jv_string("silu"));
    jv down = jv_array(), up = jv_array(), boc = jv_array(), heads = jv_array(), depth = jv_array();
    int per_level_heads = u->num_head_channels != -1;
    for (int i = 0; i < L; i++) {
        int ch = u->model_channels * u->channel_mult[i], a = sd_unet_config_level_has_attn(u, i);
        boc = jv_array_append(boc, jv_number(ch));
        down = jv_array_append(down, jv_string(a ? "CrossAttnDownBlock2D" : "DownBlock2D"));
        int h, dh;
        sd_unet_config_heads(u, ch, &h, &dh);
        heads = jv_array_append(heads, jv_number(h));
        depth = jv_array_append(depth, jv_number(a && u->transformer_depth[i] > 0 ? u->transformer_depth[i] : 1));
    }
    for (int i = L - 1; i >= 0; i--)
        up = jv_array_append(up, jv_string(sd_unet_config_level_has_attn(u, i) ? "CrossAttnUpBlock2D" : "UpBlock2D"));
    if (sdxl) {
        o = set(o, "addition_embed_type", jv_string("text_time"));
        o = set(o, "addition_embed_type_num_heads", jv_number(64));
        o = set(o, "addition_time_embed_dim", jv_number(256));
        o = set(o, "projection_class_embeddings_input_dim", jv_number(u->adm_in_channels));
    } else {
        o = set(o, "addition_embed_type", jv_null());
        o = set(o, "addition_embed_type_num_heads", jv_number(64));
        o = set(o, "addition_time_embed_dim", jv_null());
        o = set(o, "projection_class_embeddings_input_dim", jv_null());
    }
    /* Diffusers' attention_head_dim is the number of heads: one number (ldm num_heads), or one per
     * level (ldm num_head_channels: a fixed head width) */
    if (per_level_heads) o = set(o, "attention_head_dim", heads);
    else {
        jv_free(heads);
        o = set(o, "attention_head_dim", jv_number(u->num_heads));
    }
    o = set(o, "attention_type", jv_string("default"));
    o = set(o, "block_out_channels", boc);
    o = set(o, "center_input_sample", jv_false());
    o = set(o, "class_embed_type", jv_null());
    o = set(o, "class_embeddings_concat", jv_false());
    o = set(o, "conv_in_kernel", jv_number(3));
    o = set(o, "conv_out_kernel", jv_number(3));
    o = set(o, "cross_attention_dim", jv_number(u->context_dim));
    o = set(o, "cross_attention_norm", jv_null());
    o = set(o, "down_block_types", down);
    o = set(o, "downsample_padding", jv_number(1));
    o = set(o, "dropout", raw("0.0"));
    o = set(o, "dual_cross_attention", jv_false());
    o = set(o, "encoder_hid_dim", jv_null());
    o = set(o, "encoder_hid_dim_type", jv_null());
    o = set(o, "flip_sin_to_cos", jv_true());
    o = set(o, "freq_shift", jv_number(0));
    o = set(o, "in_channels", jv_number(u->in_channels));
    o = set(o, "layers_per_block", jv_number(u->num_res_blocks[0]));
    o = set(o, "mid_block_only_cross_attention", jv_null());
    o = set(o, "mid_block_scale_factor", jv_number(1));
    o = set(o, "mid_block_type", jv_string("UNetMidBlock2DCrossAttn"));
    o = set(o, "norm_eps", raw("1e-05"));
    o = set(o, "norm_num_groups", jv_number(32));
    o = set(o, "num_attention_heads", jv_null());
    o = set(o, "num_class_embeds", jv_null());
    o = set(o, "only_cross_attention", jv_false());
    o = set(o, "out_channels", jv_number(u->out_channels));
    o = set(o, "resnet_out_scale_factor", raw("1.0"));
    o = set(o, "resnet_skip_time_act", jv_false());
    o = set(o, "resnet_time_scale_shift", jv_string("default"));
    o = set(o, "reverse_transformer_layers_per_block", jv_null());
    o = set(o, "sample_size", jv_number(unet_sample_size(mc)));
    o = set(o, "time_cond_proj_dim", jv_null());
    o = set(o, "time_embedding_act_fn", jv_null());
    o = set(o, "time_embedding_dim", jv_null());
    o = set(o, "time_embedding_type", jv_string("positional"));
    o = set(o, "timestep_post_act", jv_null());
    if (sdxl || !uniform_depth) o = set(o, "transformer_layers_per_block", depth);
    else {
        jv_free(depth);
        o = set(o, "transformer_layers_per_block", jv_number(d0 > 0 ? d0 : 1));
    }
    o = set(o, "up_block_types", up);
    o = set(o, "upcast_attention", jv_bool(mc->family == SD_FAMILY_SD2 && mc->parameterization == SD_PRED_V));
    o = set(o, "use_linear_projection", jv_bool(u->use_linear_in_transformer));
    *out = o;
    return SD_OK;
}

static int vae_config(const sd_model_config *mc, jv *out)
{
    const sd_vae_config *v = &mc->vae;
    if (v->n_attn > 0)
        return sd_err(SD_EUNSUPPORTED, "a Diffusers AutoencoderKL has no attention inside its levels; this model's "
                      "VAE has attn_resolutions");
    if (!v->double_z || v->z_channels != v->embed_dim)
        return sd_err(SD_EUNSUPPORTED, "a Diffusers AutoencoderKL needs double_z and embed_dim = z_channels");
    jv o = jv_object(), boc = jv_array(), down = jv_array(), up = jv_array();
    for (int i = 0; i < v->n_mult; i++) {
        boc = jv_array_append(boc, jv_number(v->ch * v->ch_mult[i]));
        down = jv_array_append(down, jv_string("DownEncoderBlock2D"));
        up = jv_array_append(up, jv_string("UpDecoderBlock2D"));
    }
    o = set(o, "_class_name", jv_string("AutoencoderKL"));
    o = set(o, "_diffusers_version", jv_string(DIFFUSERS_VERSION));
    o = set(o, "act_fn", jv_string("silu"));
    o = set(o, "block_out_channels", boc);
    o = set(o, "down_block_types", down);
    o = set(o, "force_upcast", jv_true());
    o = set(o, "in_channels", jv_number(v->in_channels));
    o = set(o, "latent_channels", jv_number(v->z_channels));
    o = set(o, "latents_mean", jv_null());
    o = set(o, "latents_std", jv_null());
    o = set(o, "layers_per_block", jv_number(v->num_res_blocks));
    o = set(o, "mid_block_add_attention", jv_true());
    o = set(o, "norm_num_groups", jv_number(32));
    o = set(o, "out_channels", jv_number(v->out_ch));
    o = set(o, "sample_size", jv_number(unet_sample_size(mc) << (v->n_mult - 1)));
    o = set(o, "scaling_factor", jfloat(v->scale_factor));
    o = set(o, "shift_factor", jv_null());
    o = set(o, "up_block_types", up);
    o = set(o, "use_post_quant_conv", jv_true());
    o = set(o, "use_quant_conv", jv_true());
    *out = o;
    return SD_OK;
}

/* CLIPTextConfig; layers = the layers stored */
static jv te_config(const sd_clip_config *c, int layers, int gelu, int proj, sd_st_dtype dt)
{
    jv o = jv_object();
    o = set(o, "architectures", jv_array_append(jv_array(), jv_string(proj ? "CLIPTextModelWithProjection" : "CLIPTextModel")));
    o = set(o, "attention_dropout", raw("0.0"));
    o = set(o, "bos_token_id", jv_number(0));
    o = set(o, "dropout", raw("0.0"));
    o = set(o, "eos_token_id", jv_number(2));
    o = set(o, "hidden_act", jv_string(gelu ? "gelu" : "quick_gelu"));
    o = set(o, "hidden_size", jv_number(c->width));
    o = set(o, "initializer_factor", raw("1.0"));
    o = set(o, "initializer_range", raw("0.02"));
    o = set(o, "intermediate_size", jv_number(4 * c->width));
    o = set(o, "layer_norm_eps", raw("1e-05"));
    o = set(o, "max_position_embeddings", jv_number(c->max_len));
    o = set(o, "model_type", jv_string("clip_text_model"));
    o = set(o, "num_attention_heads", jv_number(c->heads));
    o = set(o, "num_hidden_layers", jv_number(layers));
    o = set(o, "pad_token_id", jv_number(1));
    o = set(o, "projection_dim", jv_number(proj ? c->projection_dim : c->width));
    o = set(o, "torch_dtype", jv_string(dtype_name(dt)));
    o = set(o, "transformers_version", jv_string(TRANSFORMERS_VERSION));
    o = set(o, "vocab_size", jv_number(c->vocab_size));
    return o;
}

static jv scheduler_config(const sd_model_config *mc)
{
    int sdxl = mc->family == SD_FAMILY_SDXL;
    jv o = jv_object();
    o = set(o, "_class_name", jv_string(sdxl ? "EulerDiscreteScheduler" : "DDIMScheduler"));
    o = set(o, "_diffusers_version", jv_string(DIFFUSERS_VERSION));
    o = set(o, "beta_end", raw("0.012"));
    o = set(o, "beta_schedule", jv_string("scaled_linear"));
    o = set(o, "beta_start", raw("0.00085"));
    o = set(o, "clip_sample", jv_false());
    o = set(o, "num_train_timesteps", jv_number(1000));
    o = set(o, "prediction_type", jv_string(mc->parameterization == SD_PRED_V ? "v_prediction" : "epsilon"));
    o = set(o, "rescale_betas_zero_snr", jv_false());
    o = set(o, "steps_offset", jv_number(1));
    o = set(o, "timestep_spacing", jv_string("leading"));
    o = set(o, "trained_betas", jv_null());
    if (sdxl) {
        o = set(o, "final_sigmas_type", jv_string("zero"));
        o = set(o, "interpolation_type", jv_string("linear"));
        o = set(o, "sigma_max", jv_null());
        o = set(o, "sigma_min", jv_null());
        o = set(o, "timestep_type", jv_string("discrete"));
        o = set(o, "use_beta_sigmas", jv_false());
        o = set(o, "use_exponential_sigmas", jv_false());
        o = set(o, "use_karras_sigmas", jv_false());
    } else {
        o = set(o, "clip_sample_range", raw("1.0"));
        o = set(o, "dynamic_thresholding_ratio", raw("0.995"));
        o = set(o, "sample_max_value", raw("1.0"));
        o = set(o, "set_alpha_to_one", jv_false());
        o = set(o, "thresholding", jv_false());
    }
    return o;
}

static jv model_index(const sd_model_config *mc)
{
    int sdxl = mc->family == SD_FAMILY_SDXL;
    jv o = jv_object();
    o = set(o, "_class_name", jv_string(sdxl ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline"));
    o = set(o, "_diffusers_version", jv_string(DIFFUSERS_VERSION));
    o = set(o, "feature_extractor", pair(NULL, NULL));
    o = set(o, "image_encoder", pair(NULL, NULL));
    o = set(o, "scheduler", pair("diffusers", sdxl ? "EulerDiscreteScheduler" : "DDIMScheduler"));
    o = set(o, "text_encoder", pair("transformers", "CLIPTextModel"));
    o = set(o, "tokenizer", pair("transformers", "CLIPTokenizer"));
    o = set(o, "unet", pair("diffusers", "UNet2DConditionModel"));
    o = set(o, "vae", pair("diffusers", "AutoencoderKL"));
    if (sdxl) {
        o = set(o, "force_zeros_for_empty_prompt", jv_true());
        o = set(o, "text_encoder_2", pair("transformers", "CLIPTextModelWithProjection"));
        o = set(o, "tokenizer_2", pair("transformers", "CLIPTokenizer"));
    } else {
        o = set(o, "requires_safety_checker", jv_null());
        o = set(o, "safety_checker", pair(NULL, NULL));
    }
    return o;
}

/* ---- weights --------------------------------------------------------------------------------- */

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static int write_weights(sd_model *m, sd_safetensors_writer *w, const char *dir, const char *file)
{
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    int rc = sd_safetensors_writer_set_meta(w, "format", "pt");
    if (!rc) rc = sd_safetensors_writer_write(w, p);
    (void)m;
    return rc;
}

static int unet_weights(sd_model *m, const char *dir, sd_st_dtype dt)
{
    sd_safetensors_writer *w = NULL;
    int rc = sd_safetensors_writer_new(&w);
    const char *pre = m->unet.prefix ? m->unet.prefix : "";
    for (size_t i = 0; !rc && i < sd_params_count(&m->unet_params); i++) {
        const sd_param *p = sd_params_at(&m->unet_params, i);
        char name[512];
        if (!starts(p->key, pre)) continue;
        rc = sd_unet_name_to_diffusers(&m->unet, p->key + strlen(pre), name, sizeof name);
        if (!rc) rc = sd_model_writer_add(m, w, name, &p->value, p->value.ndim, NULL, dt);
    }
    if (!rc) rc = write_weights(m, w, dir, "diffusion_pytorch_model.safetensors");
    sd_safetensors_writer_free(w);
    return rc;
}

static int vae_weights(sd_model *m, const char *dir, sd_st_dtype dt)
{
    sd_safetensors_writer *w = NULL;
    int rc = sd_safetensors_writer_new(&w);
    for (size_t i = 0; !rc && i < sd_params_count(&m->vae_params); i++) {
        const sd_param *p = sd_params_at(&m->vae_params, i);
        char name[512];
        rc = sd_vae_name_to_diffusers(&m->vae, p->key, name, sizeof name);
        if (!rc) rc = sd_model_writer_add(m, w, name, &p->value, p->value.ndim, NULL, dt);
    }
    if (!rc) rc = write_weights(m, w, dir, "diffusion_pytorch_model.safetensors");
    sd_safetensors_writer_free(w);
    return rc;
}

/* The text encoder whose registry keys start with `pre` ("<prefix>.") in Hugging Face names;
 * *layers = the number of encoder layers written. */
static int te_weights(sd_model *m, const char *pre, const char *dir, sd_st_dtype dt, int *layers)
{
    sd_safetensors_writer *w = NULL;
    int rc = sd_safetensors_writer_new(&w);
    *layers = 0;
    for (size_t i = 0; !rc && i < sd_params_count(&m->te_params); i++) {
        const sd_param *p = sd_params_at(&m->te_params, i);
        if (!starts(p->key, pre)) continue;
        const char *name = p->key + strlen(pre);
        int l;
        if (sscanf(name, "text_model.encoder.layers.%d.", &l) == 1 && l + 1 > *layers) *layers = l + 1;
        rc = sd_model_writer_add(m, w, name, &p->value, p->value.ndim, NULL, dt);
    }
    if (!rc) rc = write_weights(m, w, dir, "model.safetensors");
    sd_safetensors_writer_free(w);
    return rc;
}

/* ---- the folder ------------------------------------------------------------------------------ */

static int mkdir_in(const char *dir, const char *sub, char *out, size_t n)
{
    int k = snprintf(out, n, "%s/%s", dir, sub);
    if (k < 0 || (size_t)k >= n) return sd_err(SD_ERANGE, "%s: path too long", dir);
    if (mkdir(out, 0777) && errno != EEXIST) return sd_err(SD_EIO, "cannot create %s: %s", out, strerror(errno));
    return SD_OK;
}

static int write_all(sd_model *m, const char *tmp, const sd_diffusers_write_opts *o)
{
    const sd_model_config *mc = &m->cfg;
    int sdxl = mc->family == SD_FAMILY_SDXL;
    char d[4096];
    jv cfg;
    int rc, layers = 0;
    /* UNet */
    if ((rc = unet_config(mc, &cfg))) return rc;
    if ((rc = mkdir_in(tmp, "unet", d, sizeof d)) || (rc = write_json(d, "config.json", cfg)) ||
        (rc = unet_weights(m, d, o->dtype[0])))
        return rc;
    /* VAE */
    if ((rc = vae_config(mc, &cfg))) return rc;
    if ((rc = mkdir_in(tmp, "vae", d, sizeof d)) || (rc = write_json(d, "config.json", cfg)) ||
        (rc = vae_weights(m, d, o->dtype[2])))
        return rc;
    /* text encoder(s) */
    char pre[256];
    snprintf(pre, sizeof pre, "%s.", m->clip.prefix);
    if ((rc = mkdir_in(tmp, "text_encoder", d, sizeof d)) || (rc = te_weights(m, pre, d, o->dtype[1], &layers)))
        return rc;
    if ((rc = write_json(d, "config.json", te_config(&mc->clip, layers, mc->family == SD_FAMILY_SD2, 0, o->dtype[1]))))
        return rc;
    if (sdxl) {
        snprintf(pre, sizeof pre, "%s.", m->clip2.prefix);
        if ((rc = mkdir_in(tmp, "text_encoder_2", d, sizeof d)) || (rc = te_weights(m, pre, d, o->dtype[1], &layers)))
            return rc;
        if ((rc = write_json(d, "config.json", te_config(&mc->clip2, layers, 1, 1, o->dtype[1])))) return rc;
    }
    /* tokenizers: SD1 and SDXL's first pad with <|endoftext|>, SD2 and SDXL's second with "!" */
    if ((rc = mkdir_in(tmp, "tokenizer", d, sizeof d)) ||
        (rc = o->tokenizer(o->vocab, d, mc->family == SD_FAMILY_SD2 ? 0 : 49407)))
        return rc;
    if (sdxl && ((rc = mkdir_in(tmp, "tokenizer_2", d, sizeof d)) || (rc = o->tokenizer(o->vocab, d, 0)))) return rc;
    if ((rc = mkdir_in(tmp, "scheduler", d, sizeof d)) ||
        (rc = write_json(d, "scheduler_config.json", scheduler_config(mc))))
        return rc;
    return write_json(tmp, "model_index.json", model_index(mc));
}

/* fsync a folder (durability of the renames) */
static void sync_dir(const char *p)
{
    FILE *f = fopen(p, "r");
    if (f) {
        fsync(fileno(f));
        fclose(f);
    }
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int sd_diffusers_remove(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb)) return errno == ENOENT ? SD_OK : sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    if (nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS)) return sd_err(SD_EIO, "cannot remove %s: %s", path, strerror(errno));
    return SD_OK;
}

int sd_model_write_diffusers(sd_model *m, const char *out, const sd_diffusers_write_opts *o)
{
    if (!m->loaded || (m->parts & SD_MODEL_ALL) != SD_MODEL_ALL)
        return sd_err(SD_ESTATE, "%s: writing a Diffusers folder needs the whole model loaded", out);
    if (m->cfg.family != SD_FAMILY_SD1 && m->cfg.family != SD_FAMILY_SD2 && m->cfg.family != SD_FAMILY_SDXL)
        return sd_err(SD_EUNSUPPORTED, "%s: %s: no Diffusers writer", out, sd_family_name(m->cfg.family));
    if (!o->tokenizer) return sd_err(SD_EINVAL, "%s: no tokenizer writer", out);
    for (int i = 0; i < 3; i++)
        if (o->dtype[i] != SD_ST_F32 && o->dtype[i] != SD_ST_F16 && o->dtype[i] != SD_ST_BF16)
            return sd_err(SD_EINVAL, "%s: dtype must be F32, F16 or BF16", out);
    struct stat sb;
    int exists = !stat(out, &sb);
    if (exists && !S_ISDIR(sb.st_mode)) return sd_err(SD_EIO, "%s: exists and is not a folder", out);
    /* the temporary folder and the aside name of a replaced folder, beside out */
    size_t L = strlen(out);
    while (L > 1 && out[L - 1] == '/') L--;
    size_t b = L;
    while (b > 0 && out[b - 1] != '/') b--;
    char tmp[4096], old[4096], target[4096];
    if (L + 64 > sizeof tmp) return sd_err(SD_ERANGE, "%s: path too long", out);
    snprintf(target, sizeof target, "%.*s", (int)L, out);
    snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", (int)b, out, target + b, (long)getpid());
    snprintf(old, sizeof old, "%.*s.%s.old.%ld", (int)b, out, target + b, (long)getpid());
    if (mkdir(tmp, 0777)) return sd_err(SD_EIO, "%s: cannot create: %s", target, strerror(errno));
    int rc = write_all(m, tmp, o);
    if (!rc && exists && rename(target, old)) rc = sd_err(SD_EIO, "cannot replace %s: %s", target, strerror(errno));
    if (!rc && rename(tmp, target)) {
        rc = sd_err(SD_EIO, "cannot rename %s to %s: %s", tmp, target, strerror(errno));
        if (exists) rename(old, target);
    }
    if (rc) {
        sd_diffusers_remove(tmp);
        return sd_err_prefix(rc, "%s", target);
    }
    if (exists) sd_diffusers_remove(old);
    char parent[4096];
    snprintf(parent, sizeof parent, "%.*s", b ? (int)b : 1, b ? out : ".");
    sync_dir(parent);
    return SD_OK;
}
