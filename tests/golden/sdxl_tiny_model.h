/* The SDXL training golden tests' tiny model (test_train_{lora,full,ti}_sdxl_golden.c): weights from
 * make_unet_sdxl_golden.py's formula (sdxl_weight(name, shape): an integer hash of the key name),
 * written as an SDXL single file under the sgm names (TE2 in OpenCLIP names) with the shapes of
 * tests/data/train_lora_sdxl/tiny.toml. The generators compute the same numbers, so no weights are
 * committed. */
#ifndef SD_TESTS_GOLDEN_SDXL_TINY_MODEL_H
#define SD_TESTS_GOLDEN_SDXL_TINY_MODEL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "models/clip.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "nn/params.h"
#include "test.h"

#define SDXL_TINY_DIR "tests/data/train_lora_sdxl/"

/* make_unet_sdxl_golden.py sdxl_weight(name, shape) */
static inline void formula(const char *name, sd_tensor *t)
{
    uint32_t seed = 0x811c9dc5u;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) seed = (seed ^ *c) * 0x01000193u;
    size_t nl = strlen(name);
    int norm = nl > 7 && !strcmp(name + nl - 7, ".weight") &&
               (strstr(name, "norm") || strstr(name, ".in_layers.0.") || strstr(name, ".out_layers.0.") ||
                !strcmp(name, "out.0.weight"));
    int64_t n = sd_tensor_numel(t);
    double scale = t->ndim >= 2 ? sqrt(3.0 / (double)(n / t->shape[0])) : 0;
    float *v = t->data;
    for (int64_t i = 0; i < n; i++) {
        uint32_t x = t_mix32(seed + (uint32_t)i * 0x9e3779b9u);
        double r = 2.0 * ((double)(x >> 8) / 16777216.0) - 1.0;
        v[i] = (float)(t->ndim >= 2 ? r * scale : norm ? 1.0 + 0.2 * r : 0.1 * r);
    }
}

static const char PU[] = "model.diffusion_model.", P1[] = "conditioner.embedders.0.transformer.",
                  P2[] = "conditioner.embedders.1.model.";

/* The formula's key of a registry parameter: the ldm UNet name, "te1." / "te2." + the HF name. */
static inline void formula_key(const char *key, char *out, size_t n)
{
    if (!strncmp(key, PU, sizeof PU - 1)) snprintf(out, n, "%s", key + sizeof PU - 1);
    else if (!strncmp(key, P1, sizeof P1 - 1)) snprintf(out, n, "te1.%s", key + sizeof P1 - 1);
    else snprintf(out, n, "te2.%s", key + sizeof P2 - 1);
}

static inline int write_model(const char *path)
{
    sd_model_config cfg;
    int rc = sd_model_config_load(SDXL_TINY_DIR "tiny.toml", &cfg);
    if (rc) return rc;
    sd_params r;
    sd_params_init(&r);
    sd_unet u;
    sd_clip c1, c2;
    memset(&u, 0, sizeof u);
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    rc = sd_unet_init(&u, &r, "model.diffusion_model", &cfg.unet);
    if (!rc) rc = sd_clip_init(&c1, &r, "conditioner.embedders.0.transformer", &cfg.clip, SD_FAMILY_SDXL);
    if (!rc) rc = sd_clip_init(&c2, &r, "conditioner.embedders.1.model", &cfg.clip2, SD_FAMILY_SDXL);
    if (!rc) sd_params_set_trainable(&r, "", 0);
    if (!rc) rc = sd_params_alloc(&r, SD_DEV_CPU);
    sd_safetensors_writer *w = NULL;
    size_t np = sd_params_count(&r);
    float **tmp = calloc(np, sizeof *tmp);
    if (!rc && !tmp) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc) rc = sd_safetensors_writer_new(&w);
    for (size_t k = 0; k < np && !rc; k++) {
        sd_param *p = sd_params_at(&r, k);
        char fk[300];
        formula_key(p->key, fk, sizeof fk);
        formula(fk, &p->value);
    }
    for (size_t k = 0; k < np && !rc; k++) {
        sd_param *p = sd_params_at(&r, k);
        if (strncmp(p->key, P2, sizeof P2 - 1)) {
            rc = sd_safetensors_writer_add(w, p->key, SD_ST_F32, p->value.ndim, p->value.shape, p->value.data);
            continue;
        }
        const char *hf = p->key + sizeof P2 - 1;
        char name[300];
        int how = 0;
        rc = sd_clip_openclip_name(hf, P2, name, sizeof name, &how);
        if (rc) break;
        if (how == SD_CLIP_OC_COPY) {
            rc = sd_safetensors_writer_add(w, name, SD_ST_F32, p->value.ndim, p->value.shape, p->value.data);
        } else if (how == SD_CLIP_OC_TRANSPOSE) {
            int64_t R = p->value.shape[0], C = p->value.shape[1];
            tmp[k] = malloc((size_t)(R * C) * sizeof(float));
            if (!tmp[k]) break;
            const float *s = p->value.data;
            for (int64_t i = 0; i < R; i++)
                for (int64_t j = 0; j < C; j++) tmp[k][j * R + i] = s[i * C + j];
            rc = sd_safetensors_writer_add(w, name, SD_ST_F32, 2, (int64_t[]){ C, R }, tmp[k]);
        } else if (strstr(hf, ".q_proj.")) {   /* in_proj: q; k; v rows */
            char kk[300], kv[300];
            const char *q = strstr(p->key, ".q_proj.");
            snprintf(kk, sizeof kk, "%.*s.k_proj.%s", (int)(q - p->key), p->key, q + 8);
            snprintf(kv, sizeof kv, "%.*s.v_proj.%s", (int)(q - p->key), p->key, q + 8);
            sd_param *pk = sd_params_find(&r, kk), *pv = sd_params_find(&r, kv);
            if (!pk || !pv) {
                rc = sd_err(SD_ENOTFOUND, "%s: no k/v", p->key);
                break;
            }
            int64_t n = sd_tensor_numel(&p->value);
            tmp[k] = malloc((size_t)(3 * n) * sizeof(float));
            if (!tmp[k]) break;
            memcpy(tmp[k], p->value.data, (size_t)n * sizeof(float));
            memcpy(tmp[k] + n, pk->value.data, (size_t)n * sizeof(float));
            memcpy(tmp[k] + 2 * n, pv->value.data, (size_t)n * sizeof(float));
            int64_t shape[2] = { 3 * p->value.shape[0], p->value.ndim > 1 ? p->value.shape[1] : 0 };
            rc = sd_safetensors_writer_add(w, name, SD_ST_F32, p->value.ndim, shape, tmp[k]);
        }
    }
    if (!rc) rc = sd_safetensors_writer_write(w, path);
    if (w) sd_safetensors_writer_free(w);
    for (size_t k = 0; tmp && k < np; k++) free(tmp[k]);
    free(tmp);
    sd_clip_free(&c2);
    sd_clip_free(&c1);
    sd_unet_free(&u);
    sd_params_free(&r);
    return rc;
}

#endif
