/* LoRA files merged into a model's weights (see lora_merge.h). */
#include "train/lora_merge.h"

#include <math.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "diffusion/sample_images.h"
#include "io/safetensors.h"
#include "train/lora_file.h"
#include "train/lora_network.h"
#include "train/lycoris.h"

int sd_lora_merge_stored(sd_ctx *ctx, const sd_lora *l, sd_tensor *w, float mul)
{
    if (w->device != SD_DEV_CPU) return sd_err(SD_EUNSUPPORTED, "LoRA merge %s: weights not on the host", l->down->key);
    if (w->dtype == SD_F32) return sd_lora_merge(ctx, l, w, mul);
    if (w->dtype != SD_F16 && w->dtype != SD_BF16)
        return sd_err(SD_EUNSUPPORTED, "LoRA merge %s: weights of an unsupported dtype", l->down->key);
    sd_tensor t = { 0 };
    int rc = sd_tensor_alloc(&t, SD_F32, w->ndim, w->shape);
    if (rc) return rc;
    size_t n = (size_t)sd_tensor_numel(w);
    if (w->dtype == SD_F16) sd_f16_to_f32_n(w->data, t.data, n);
    else sd_bf16_to_f32_n(w->data, t.data, n);
    rc = sd_lora_merge(ctx, l, &t, mul);
    if (!rc && w->dtype == SD_F16) sd_f32_to_f16_n(t.data, w->data, n);
    else if (!rc) sd_f32_to_bf16_n(t.data, w->data, n);
    sd_tensor_free(&t);
    return rc;
}

/* SD1/SD2: build the network from the file's modules, load, merge into the weights, detach */
static int merge_sd(sd_ctx *ctx, sd_model *m, const char *path, double mul, size_t *n_te, size_t *n_unet)
{
    sd_safetensors *st = NULL;
    sd_lora_file_info info = { 0 };
    sd_lora_network net;
    memset(&net, 0, sizeof net);
    int rc = sd_safetensors_open(path, &st);
    if (!rc) rc = sd_lora_file_scan(st, &info);
    if (!rc && info.n == 0) rc = sd_err(SD_EFORMAT, "%s: no LoRA modules (lora_down/lora_up) in this file", path);
    sd_lora_net_args na;
    if (!rc) rc = sd_lora_net_args_parse(&na, 0, 0, NAN, NULL, 0);
    if (!rc) {
        /* .lycoris: files trained with lycoris.kohya may hold conv_in / conv_out / time_embedding modules */
        sd_lora_network_opts no = { .args = &na, .with_unet = 1, .with_te = 1, .from_file = &info, .lycoris = 1 };
        rc = sd_lora_network_build(&net, ctx, &m->unet, &m->clip, &no);
    }
    if (!rc) {
        size_t loaded = 0;
        rc = sd_lora_file_load(st, net.refs, net.n, 0, &loaded);
    }
    for (size_t i = 0; i < net.n && !rc; i++) {
        sd_param *w = net.host_lin[i] ? net.host_lin[i]->w : net.host_conv[i]->w;
        rc = sd_lora_merge_stored(ctx, &net.mods[i], &w->value, (float)mul);
    }
    if (!rc && n_te) *n_te = net.n_te;
    if (!rc && n_unet) *n_unet = net.n_unet;
    sd_lora_network_free(&net);
    sd_lora_file_info_free(&info);
    sd_safetensors_close(st);
    return rc;
}

/* A file with LyCORIS keys (hada_*, lokr_*, lora_mid, …): merged module by module through
 * train/lycoris.h (its plain LoRA modules too). Returns 1 with *rc set when it was one. */
static int lycoris_path(sd_ctx *ctx, sd_model *m, const char *path, double mul,
                        double (*weight)(void *user, const char *name), void *user, size_t *te, size_t *un, int *rc)
{
    sd_safetensors *st = NULL;
    *rc = sd_safetensors_open(path, &st);
    if (*rc) return 1;
    int is = sd_lycoris_file_is(st);
    if (is) *rc = sd_lycoris_merge(ctx, m, st, mul, weight, user, te, un);
    sd_safetensors_close(st);
    return is;
}

int sd_lora_merge_file(sd_ctx *ctx, sd_model *m, const char *path, double mul, size_t *n_te, size_t *n_unet)
{
    size_t te = 0, un = 0;
    int rc;
    if (!lycoris_path(ctx, m, path, mul, NULL, NULL, &te, &un, &rc))
        rc = m->cfg.family == SD_FAMILY_SDXL
                 ? sd_gen_lora_merge_sdxl(&m->unet, &m->unet_params, &m->te_params, path, mul, &te, &un)
                 : merge_sd(ctx, m, path, mul, &te, &un);
    if (rc && !strstr(sd_errmsg(), path)) sd_err_prefix(rc, "%s", path);
    if (n_te) *n_te = rc ? 0 : te;
    if (n_unet) *n_unet = rc ? 0 : un;
    return rc;
}

typedef struct lbw_user {
    const sd_lora_lbws *l;
    int index;
} lbw_user;

static double lbw_cb(void *user, const char *name)
{
    const lbw_user *u = user;
    return sd_lora_lbw_weight(u->l, u->index, name, 1);   /* sdxl_merge_lora.py: get_lbw_block_index(key, True) */
}

int sd_lora_merge_file_lbw(sd_ctx *ctx, sd_model *m, const char *path, double mul, const sd_lora_lbws *lbws,
                           int index, size_t *n_te, size_t *n_unet)
{
    if (!lbws || !lbws->n) return sd_lora_merge_file(ctx, m, path, mul, n_te, n_unet);
    if (m->cfg.family != SD_FAMILY_SDXL)
        return sd_err(SD_EUSAGE, "--lbws: merging into an SD1/SD2 model (merge_lora.py) has no layer block weights; "
                      "SDXL models (sdxl_merge_lora.py) and svd-merge have");
    lbw_user u = { lbws, index };
    size_t te = 0, un = 0;
    int rc;
    if (!lycoris_path(ctx, m, path, mul, lbw_cb, &u, &te, &un, &rc))
        rc = sd_gen_lora_merge_sdxl_weighted(&m->unet, &m->unet_params, &m->te_params, path, mul, lbw_cb, &u, &te, &un);
    if (rc && !strstr(sd_errmsg(), path)) sd_err_prefix(rc, "%s", path);
    if (n_te) *n_te = rc ? 0 : te;
    if (n_unet) *n_unet = rc ? 0 : un;
    return rc;
}
