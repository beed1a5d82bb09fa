/* SD model configuration: the JSON/TOML overlay and file loader (see model_config.h). */
#include "models/model_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "base/fileio.h"
#include "io/jsonl.h"
#include "io/toml.h"

/* ---- overlay -------------------------------------------------------------------------------- */

static int get_int(jv val, const char *name, const char *key, long lo, long hi, int *out)
{
    if (jv_get_kind(val) != JV_KIND_NUMBER)
        return sd_err(SD_EFORMAT, "%s: %s: expected an integer, got %s", name, key, sd_jv_kind_name(val));
    double d = jv_number_value(val);
    if (d != floor(d) || d < (double)lo || d > (double)hi)
        return sd_err(SD_EFORMAT, "%s: %s: %g is not an integer in [%ld, %ld]", name, key, d, lo, hi);
    *out = (int)d;
    return SD_OK;
}

static int get_bool(jv val, const char *name, const char *key, int *out)
{
    jv_kind k = jv_get_kind(val);
    if (k == JV_KIND_TRUE || k == JV_KIND_FALSE) {
        *out = k == JV_KIND_TRUE;
        return SD_OK;
    }
    return sd_err(SD_EFORMAT, "%s: %s: expected true or false, got %s", name, key, sd_jv_kind_name(val));
}

/* An integer list (or, when allow_scalar, one integer meaning "the same for every level"; then
 * *n is set to -1 and out[0] holds it). */
static int get_list(jv val, const char *name, const char *key, long lo, long hi, int allow_empty,
                    int allow_scalar, int *out, int *n)
{
    if (allow_scalar && jv_get_kind(val) == JV_KIND_NUMBER) {
        *n = -1;
        return get_int(val, name, key, lo, hi, &out[0]);
    }
    if (jv_get_kind(val) != JV_KIND_ARRAY)
        return sd_err(SD_EFORMAT, "%s: %s: expected a list of integers, got %s", name, key, sd_jv_kind_name(val));
    int len = jv_array_length(jv_copy(val));
    if (len > SD_CFG_MAX_LEVELS)
        return sd_err(SD_EFORMAT, "%s: %s: %d entries (at most %d)", name, key, len, SD_CFG_MAX_LEVELS);
    if (len == 0 && !allow_empty) return sd_err(SD_EFORMAT, "%s: %s: empty list", name, key);
    for (int i = 0; i < len; i++) {
        char k2[96];
        snprintf(k2, sizeof k2, "%s[%d]", key, i);
        jv e = jv_array_get(jv_copy(val), i);
        int rc = get_int(e, name, k2, lo, hi, &out[i]);
        jv_free(e);
        if (rc) return rc;
    }
    *n = len;
    return SD_OK;
}

/* Per-level lists given in the file, resolved once channel_mult is known. */
typedef struct level_lists {
    int nrb_n, nrb[SD_CFG_MAX_LEVELS];      /* num_res_blocks: 0 = not given, -1 = one number */
    int td_n, td[SD_CFG_MAX_LEVELS];        /* transformer_depth: the same */
    int td_middle_set;
} level_lists;

static int apply_unet(sd_unet_config *u, jv obj, const char *name, level_lists *L)
{
    int rc = SD_OK;
    jv_object_foreach(obj, k, val) {
        const char *key = jv_string_value(k);
        char full[128];
        snprintf(full, sizeof full, "unet.%s", key);
        if (!rc) {
            if (!strcmp(key, "model_channels")) rc = get_int(val, name, full, 1, 1 << 16, &u->model_channels);
            else if (!strcmp(key, "in_channels")) rc = get_int(val, name, full, 1, 1 << 12, &u->in_channels);
            else if (!strcmp(key, "out_channels")) rc = get_int(val, name, full, 1, 1 << 12, &u->out_channels);
            else if (!strcmp(key, "channel_mult"))
                rc = get_list(val, name, full, 1, 64, 0, 0, u->channel_mult, &u->n_levels);
            else if (!strcmp(key, "num_res_blocks")) rc = get_list(val, name, full, 1, 64, 0, 1, L->nrb, &L->nrb_n);
            else if (!strcmp(key, "attention_resolutions"))
                rc = get_list(val, name, full, 1, 1 << 20, 1, 0, u->attention_resolutions, &u->n_attn);
            else if (!strcmp(key, "num_heads")) rc = get_int(val, name, full, -1, 1 << 12, &u->num_heads);
            else if (!strcmp(key, "num_head_channels")) rc = get_int(val, name, full, -1, 1 << 16, &u->num_head_channels);
            else if (!strcmp(key, "context_dim")) rc = get_int(val, name, full, 1, 1 << 16, &u->context_dim);
            else if (!strcmp(key, "transformer_depth")) rc = get_list(val, name, full, 0, 64, 0, 1, L->td, &L->td_n);
            else if (!strcmp(key, "transformer_depth_middle")) {
                rc = get_int(val, name, full, 1, 64, &u->transformer_depth_middle);
                L->td_middle_set = 1;
            } else if (!strcmp(key, "adm_in_channels")) rc = get_int(val, name, full, 0, 1 << 16, &u->adm_in_channels);
            else if (!strcmp(key, "use_linear_in_transformer")) rc = get_bool(val, name, full, &u->use_linear_in_transformer);
            else rc = sd_err(SD_EFORMAT, "%s: unknown key '%s'", name, full);
        }
        jv_free(k);
        jv_free(val);
    }
    return rc;
}

static int apply_vae(sd_vae_config *v, jv obj, const char *name)
{
    int rc = SD_OK;
    jv_object_foreach(obj, k, val) {
        const char *key = jv_string_value(k);
        char full[128];
        snprintf(full, sizeof full, "vae.%s", key);
        if (!rc) {
            if (!strcmp(key, "ch")) rc = get_int(val, name, full, 1, 1 << 16, &v->ch);
            else if (!strcmp(key, "ch_mult")) rc = get_list(val, name, full, 1, 64, 0, 0, v->ch_mult, &v->n_mult);
            else if (!strcmp(key, "num_res_blocks")) rc = get_int(val, name, full, 1, 64, &v->num_res_blocks);
            else if (!strcmp(key, "attn_resolutions"))
                rc = get_list(val, name, full, 1, 1 << 20, 1, 0, v->attn_resolutions, &v->n_attn);
            else if (!strcmp(key, "z_channels")) rc = get_int(val, name, full, 1, 1 << 12, &v->z_channels);
            else if (!strcmp(key, "embed_dim")) rc = get_int(val, name, full, 1, 1 << 12, &v->embed_dim);
            else if (!strcmp(key, "double_z")) rc = get_bool(val, name, full, &v->double_z);
            else if (!strcmp(key, "in_channels")) rc = get_int(val, name, full, 1, 64, &v->in_channels);
            else if (!strcmp(key, "out_ch")) rc = get_int(val, name, full, 1, 64, &v->out_ch);
            else if (!strcmp(key, "resolution")) rc = get_int(val, name, full, 1, 1 << 20, &v->resolution);
            else if (!strcmp(key, "scale_factor")) {
                if (jv_get_kind(val) != JV_KIND_NUMBER || !(jv_number_value(val) > 0) ||
                    !isfinite(jv_number_value(val)))
                    rc = sd_err(SD_EFORMAT, "%s: %s: expected a positive number", name, full);
                else v->scale_factor = (float)jv_number_value(val);
            } else rc = sd_err(SD_EFORMAT, "%s: unknown key '%s'", name, full);
        }
        jv_free(k);
        jv_free(val);
    }
    return rc;
}

static int apply_clip(sd_clip_config *c, jv obj, const char *name, const char *section)
{
    int rc = SD_OK;
    jv_object_foreach(obj, k, val) {
        const char *key = jv_string_value(k);
        char full[128];
        snprintf(full, sizeof full, "%s.%s", section, key);
        if (!rc) {
            if (!strcmp(key, "width")) rc = get_int(val, name, full, 1, 1 << 16, &c->width);
            else if (!strcmp(key, "layers")) rc = get_int(val, name, full, 1, 256, &c->layers);
            else if (!strcmp(key, "heads")) rc = get_int(val, name, full, 1, 1 << 10, &c->heads);
            else if (!strcmp(key, "max_len")) rc = get_int(val, name, full, 2, 1 << 16, &c->max_len);
            else if (!strcmp(key, "vocab_size")) rc = get_int(val, name, full, 1, 1 << 24, &c->vocab_size);
            else if (!strcmp(key, "projection_dim")) rc = get_int(val, name, full, 0, 1 << 16, &c->projection_dim);
            else rc = sd_err(SD_EFORMAT, "%s: unknown key '%s'", name, full);
        }
        jv_free(k);
        jv_free(val);
    }
    return rc;
}

static int parse_family(jv val, const char *name, sd_family *f)
{
    if (jv_get_kind(val) != JV_KIND_STRING)
        return sd_err(SD_EFORMAT, "%s: family: expected a string, got %s", name, sd_jv_kind_name(val));
    const char *s = jv_string_value(val);
    if (!strcasecmp(s, "sd1") || !strcasecmp(s, "sd1.x") || !strcasecmp(s, "v1")) *f = SD_FAMILY_SD1;
    else if (!strcasecmp(s, "sd2") || !strcasecmp(s, "sd2.x") || !strcasecmp(s, "v2")) *f = SD_FAMILY_SD2;
    else if (!strcasecmp(s, "sdxl")) *f = SD_FAMILY_SDXL;
    else return sd_err(SD_EFORMAT, "%s: family: '%s' is not one of sd1, sd2, sdxl", name, s);
    return SD_OK;
}

/* A per-level list of the file (n entries, -1: one number for every level, 0: not given) onto
 * the preset's `dst`; levels added by a longer channel_mult inherit the last preset value. */
static int resolve_levels(int *dst, int n, const int *vals, int n_levels, const char *name, const char *key)
{
    if (n < 0) {
        for (int i = 0; i < SD_CFG_MAX_LEVELS; i++) dst[i] = vals[0];
    } else if (n > 0) {
        if (n != n_levels)
            return sd_err(SD_EFORMAT, "%s: unet.%s: %d entries for %d levels of channel_mult", name, key, n, n_levels);
        for (int i = 0; i < n; i++) dst[i] = vals[i];
    } else {
        for (int i = 1; i < SD_CFG_MAX_LEVELS; i++)
            if (dst[i] <= 0) dst[i] = dst[i - 1];
    }
    return SD_OK;
}

int sd_model_config_apply(sd_model_config *cfg, jv v, const char *name)
{
    if (!name) name = "model config";
    if (jv_get_kind(v) != JV_KIND_OBJECT)
        return sd_err(SD_EFORMAT, "%s: expected an object, got %s", name, sd_jv_kind_name(v));
    int rc;
    jv fam = jv_object_get(jv_copy(v), jv_string("family"));
    if (jv_is_valid(fam)) {
        sd_family f = SD_FAMILY_SD1;
        rc = parse_family(fam, name, &f);
        jv_free(fam);
        if (rc) return rc;
        if ((rc = sd_model_config_preset(f, cfg))) return rc;
    } else {
        jv_free(fam);
    }
    level_lists L = { 0 };
    rc = SD_OK;
    jv_object_foreach(v, k, val) {
        const char *key = jv_string_value(k);
        if (!rc) {
            if (!strcmp(key, "family")) {
                /* handled above */
            } else if (!strcmp(key, "parameterization")) {
                const char *s = jv_get_kind(val) == JV_KIND_STRING ? jv_string_value(val) : NULL;
                if (s && !strcmp(s, "eps")) cfg->parameterization = SD_PRED_EPS;
                else if (s && !strcmp(s, "v")) cfg->parameterization = SD_PRED_V;
                else rc = sd_err(SD_EFORMAT, "%s: parameterization: expected \"eps\" or \"v\"", name);
            } else if (!strcmp(key, "unet") || !strcmp(key, "vae") || !strcmp(key, "clip") || !strcmp(key, "clip2")) {
                if (jv_get_kind(val) != JV_KIND_OBJECT)
                    rc = sd_err(SD_EFORMAT, "%s: %s: expected a table/object, got %s", name, key, sd_jv_kind_name(val));
                else if (key[0] == 'u') rc = apply_unet(&cfg->unet, val, name, &L);
                else if (key[0] == 'v') rc = apply_vae(&cfg->vae, val, name);
                else if (!strcmp(key, "clip")) rc = apply_clip(&cfg->clip, val, name, "clip");
                else rc = apply_clip(&cfg->clip2, val, name, "clip2");
            } else {
                rc = sd_err(SD_EFORMAT, "%s: unknown key '%s'", name, key);
            }
        }
        jv_free(k);
        jv_free(val);
    }
    if (rc) return rc;
    sd_unet_config *u = &cfg->unet;
    if ((rc = resolve_levels(u->num_res_blocks, L.nrb_n, L.nrb, u->n_levels, name, "num_res_blocks"))) return rc;
    if ((rc = resolve_levels(u->transformer_depth, L.td_n, L.td, u->n_levels, name, "transformer_depth"))) return rc;
    /* SGM: transformer_depth_middle defaults to the last level's depth */
    if (L.td_n && !L.td_middle_set) u->transformer_depth_middle = u->transformer_depth[u->n_levels - 1];
    return SD_OK;
}

int sd_model_config_load(const char *path, sd_model_config *cfg)
{
    return sd_model_config_load_family(path, SD_FAMILY_SD1, cfg);
}

int sd_model_config_load_family(const char *path, sd_family family, sd_model_config *cfg)
{
    char *text = NULL;
    size_t n = 0;
    int rc = sd_read_file(path, (size_t)1 << 24, &text, &n);
    if (rc) return rc;
    size_t i = 0;
    while (i < n && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) i++;
    size_t len = strlen(path);
    int json = (len >= 5 && !strcasecmp(path + len - 5, ".json")) || (i < n && text[i] == '{');
    jv v;
    if (json) {
        rc = sd_json_parse(text, n, &v);
        if (rc) rc = sd_err_prefix(rc, "%s", path);
    } else {
        rc = sd_toml_parse(text, n, path, &v);
    }
    free(text);
    if (rc) return rc;
    sd_model_config c;
    int has_family = jv_get_kind(v) == JV_KIND_OBJECT && jv_object_has(jv_copy(v), jv_string("family"));
    sd_model_config_preset(has_family ? SD_FAMILY_SD1 : family, &c);
    rc = sd_model_config_apply(&c, v, path);
    jv_free(v);
    if (!rc) rc = sd_model_config_validate(&c);
    if (rc) {
        if (!strstr(sd_errmsg(), path)) sd_err_prefix(rc, "%s", path);
        return rc;
    }
    *cfg = c;
    return SD_OK;
}
