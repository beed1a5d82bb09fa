/* OFT network, files and merge (see oft_network.h). */
#include "train/oft_network.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "train/lora_file.h"
#include "train/lora_merge.h"

/* Does layer L get a module in a network with these targets? */
static int targeted(const sd_unet_layer *L, int all_linear, int conv)
{
    if (L->role == SD_UNET_ROLE_TRANSFORMER) {
        if (all_linear) return 1;
        /* CrossAttention: attn1/attn2 of a BasicTransformerBlock */
        return strstr(L->key, ".attn1.") || strstr(L->key, ".attn2.");
    }
    if (L->role == SD_UNET_ROLE_RESBLOCK || L->role == SD_UNET_ROLE_SAMPLER) return conv;
    return 0;
}

static int module_name(const sd_unet_layer *L, int sdxl, char *out, size_t n)
{
    return sd_lora_kohya_name("oft_unet", sdxl ? L->key : L->diffusers, out, n);
}

int sd_oft_network_build(sd_oft_network *net, sd_params *reg, sd_unet *u, const sd_oft_network_opts *o)
{
    memset(net, 0, sizeof *net);
    net->reg = reg;
    net->dim = o->dim;
    net->alpha = o->alpha;
    net->all_linear = o->all_linear;
    net->conv = o->conv;
    size_t nl = sd_unet_layer_count(u), n = 0;
    for (size_t i = 0; i < nl; i++) n += targeted(sd_unet_layer_at(u, i), o->all_linear, o->conv) != 0;
    if (!n) return sd_err(SD_EINVAL, "the OFT network has no modules");
    net->mods = calloc(n, sizeof *net->mods);
    net->names = calloc(n, sizeof *net->names);
    net->host_lin = calloc(n, sizeof *net->host_lin);
    net->host_conv = calloc(n, sizeof *net->host_conv);
    int rc = net->mods && net->names && net->host_lin && net->host_conv ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < nl && !rc; i++) {
        const sd_unet_layer *L = sd_unet_layer_at(u, i);
        if (!targeted(L, o->all_linear, o->conv)) continue;
        char name[256];
        rc = module_name(L, o->sdxl, name, sizeof name);
        if (rc) break;
        net->names[net->n] = strdup(name);
        if (!net->names[net->n]) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        sd_oft *m = &net->mods[net->n];
        rc = sd_oft_init(m, reg, name, L->out, L->in * L->kh * L->kw, o->dim, o->alpha);
        if (rc) {
            free(net->names[net->n]);
            net->names[net->n] = NULL;
            break;
        }
        m->multiplier = o->multiplier;
        net->host_lin[net->n] = L->linear;
        net->host_conv[net->n] = L->conv;
        net->n++;
    }
    if (rc) sd_oft_network_free(net);
    return rc;
}

int sd_oft_network_attach(sd_oft_network *net, sd_ctx *ctx)
{
    int rc = SD_OK;
    for (size_t i = 0; i < net->n && !rc; i++) rc = sd_op_fill(ctx, &net->mods[i].blocks->value, 0.0f);
    for (size_t i = 0; i < net->n && !rc; i++)
        rc = net->host_lin[i] ? sd_linear_set_oft(net->host_lin[i], &net->mods[i])
                              : sd_conv2d_set_oft(net->host_conv[i], &net->mods[i]);
    return rc;
}

void sd_oft_network_free(sd_oft_network *net)
{
    if (!net) return;
    for (size_t i = 0; i < net->n; i++) {
        if (net->host_lin && net->host_lin[i] && net->host_lin[i]->oft == &net->mods[i]) net->host_lin[i]->oft = NULL;
        if (net->host_conv && net->host_conv[i] && net->host_conv[i]->oft == &net->mods[i]) net->host_conv[i]->oft = NULL;
        sd_oft_free(&net->mods[i]);
        free(net->names[i]);
    }
    free(net->mods);
    free(net->names);
    free(net->host_lin);
    free(net->host_conv);
    memset(net, 0, sizeof *net);
}

/* ---- files ------------------------------------------------------------------------------------ */

static const char *suffix_of(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? dot + 1 : NULL;
}

int sd_oft_file_is_oft(const sd_safetensors *st)
{
    size_t nt = sd_safetensors_count(st);
    for (size_t i = 0; i < nt; i++) {
        const char *s = suffix_of(sd_safetensors_at(st, i)->name);
        if (s && !strcmp(s, "oft_blocks")) return 1;
    }
    return 0;
}

static int read_scalar(const sd_safetensors *st, const sd_st_tensor *a, double *v)
{
    const char *path = sd_safetensors_path(st);
    if (a->numel != 1 || a->ndim > 1 || a->dtype == SD_ST_BOOL)
        return sd_err(SD_EFORMAT, "%s: '%s' must be a scalar number", path, a->name);
    float f;
    int rc = sd_safetensors_read(st, a, SD_ST_F32, &f, 1);
    if (rc) return rc;
    if (!isfinite(f)) return sd_err(SD_EFORMAT, "%s: '%s' is not finite", path, a->name);
    *v = f;
    return SD_OK;
}

int sd_oft_file_scan(const sd_safetensors *st, sd_oft_file_info *info)
{
    memset(info, 0, sizeof *info);
    const char *path = sd_safetensors_path(st);
    size_t nt = sd_safetensors_count(st);
    int have_alpha = 0;
    char key[1024];
    for (size_t i = 0; i < nt; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        const char *s = suffix_of(t->name);
        if (!s || (strcmp(s, "oft_blocks") && strcmp(s, "alpha")) || strncmp(t->name, "oft_unet_", 9))
            return sd_err(SD_EFORMAT, "%s: '%s' is not an OFT tensor (oft_unet_*.oft_blocks, oft_unet_*.alpha)", path,
                          t->name);
        if (!strcmp(s, "alpha")) {
            double a = 0;
            int rc = read_scalar(st, t, &a);
            if (rc) return rc;
            if (have_alpha && a != info->alpha)
                return sd_err(SD_EFORMAT, "%s: '%s' is %g, other modules have %g (one alpha per network)", path, t->name,
                              a, info->alpha);
            info->alpha = a;
            info->alpha_int = !sd_st_dtype_is_float(t->dtype);
            have_alpha = 1;
            snprintf(key, sizeof key, "%.*s.oft_blocks", (int)(s - 1 - t->name), t->name);
            if (!sd_safetensors_find(st, key))
                return sd_err(SD_EFORMAT, "%s: '%s' has no '%s'", path, t->name, key);
            continue;
        }
        if (t->ndim != 3 || t->shape[1] != t->shape[2] || t->shape[0] < 1 || t->shape[1] < 1 ||
            !sd_st_dtype_is_float(t->dtype)) {
            char b[96];
            sd_st_shape_str(t->ndim, t->shape, b, sizeof b);
            return sd_err(SD_EFORMAT, "%s: '%s' has shape %s (a float [dim, n, n] is needed)", path, t->name, b);
        }
        if (info->n && t->shape[0] != info->dim)
            return sd_err(SD_EFORMAT, "%s: '%s' has %lld blocks, other modules %d (one dim per network)", path, t->name,
                          (long long)t->shape[0], info->dim);
        info->dim = (int)t->shape[0];
        info->n++;
        if (strstr(t->name, "_ff_")) info->all_linear = 1;
        /* ResnetBlock2D / Downsample2D / Upsample2D layers: Diffusers (resnets, downsamplers,
           upsamplers) and ldm (in_layers, emb_layers, out_layers, skip_connection, op, conv of
           an Upsample) names */
        static const char *conv_marks[] = { "_resnets_", "_downsamplers_", "_upsamplers_", "_in_layers_",
                                            "_emb_layers_", "_out_layers_", "_skip_connection." };
        for (size_t k = 0; k < sizeof conv_marks / sizeof *conv_marks; k++)
            if (strstr(t->name, conv_marks[k])) info->conv = 1;
    }
    if (!info->n) return sd_err(SD_EFORMAT, "%s: no OFT modules (oft_blocks) in this file", path);
    if (!have_alpha) return sd_err(SD_EFORMAT, "%s: no .alpha tensor (the OFT constraint)", path);
    return SD_OK;
}

int sd_oft_file_load(const sd_safetensors *st, sd_oft_network *net, int allow_missing, size_t *loaded)
{
    const char *path = sd_safetensors_path(st);
    sd_oft_file_info info;
    int rc = sd_oft_file_scan(st, &info);
    if (rc) return rc;
    size_t nload = 0, nmiss = 0;
    char key[1024];
    const char *first_missing = NULL;
    /* check everything first */
    for (size_t i = 0; i < net->n; i++) {
        snprintf(key, sizeof key, "%s.oft_blocks", net->names[i]);
        const sd_st_tensor *t = sd_safetensors_find(st, key);
        if (!t) {
            if (!nmiss++) first_missing = net->names[i];
            continue;
        }
        const sd_tensor *v = &net->mods[i].blocks->value;
        if (t->shape[0] != v->shape[0] || t->shape[1] != v->shape[1]) {
            char a[96], b[96];
            sd_st_shape_str(t->ndim, t->shape, a, sizeof a);
            sd_st_shape_str(v->ndim, v->shape, b, sizeof b);
            return sd_err(SD_EFORMAT, "%s: '%s' has shape %s, the network's is %s (--network_dim)", path, key, a, b);
        }
        if (v->dtype != SD_F32 || v->device != SD_DEV_CPU)
            return sd_err(SD_EINVAL, "OFT load: %s is not an f32 host parameter", net->mods[i].blocks->key);
        nload++;
    }
    if (nmiss && !allow_missing)
        return sd_err(SD_EFORMAT, "%s: %zu module%s of the network missing from the file (first: %s)", path, nmiss,
                      nmiss == 1 ? " is" : "s are", first_missing);
    if (info.n > nload) {
        /* a module of the file that the network lacks */
        size_t nt = sd_safetensors_count(st);
        for (size_t i = 0; i < nt; i++) {
            const sd_st_tensor *t = sd_safetensors_at(st, i);
            if (strcmp(suffix_of(t->name), "oft_blocks")) continue;
            size_t L = strlen(t->name) - strlen(".oft_blocks");
            int found = 0;
            for (size_t j = 0; j < net->n && !found; j++)
                found = strlen(net->names[j]) == L && !strncmp(net->names[j], t->name, L);
            if (!found)
                return sd_err(SD_EFORMAT, "%s: module '%.*s' is not in the network (other targets: "
                              "enable_all_linear / enable_conv?)", path, (int)L, t->name);
        }
    }
    if (info.alpha != net->alpha && (float)info.alpha != (float)net->alpha)
        return sd_err(SD_EFORMAT, "%s: alpha %g in the file, %g in the network (--network_alpha); use "
                      "--dim_from_weights to take the file's", path, info.alpha, net->alpha);
    for (size_t i = 0; i < net->n && !rc; i++) {
        snprintf(key, sizeof key, "%s.oft_blocks", net->names[i]);
        const sd_st_tensor *t = sd_safetensors_find(st, key);
        if (!t) continue;
        sd_tensor *v = &net->mods[i].blocks->value;
        rc = sd_safetensors_read(st, t, SD_ST_F32, v->data, (size_t)sd_tensor_numel(v));
    }
    if (!rc && loaded) *loaded = nload;
    return rc;
}

int sd_oft_file_save(const char *path, const sd_oft_network *net, const sd_oft_save_opts *o)
{
    sd_safetensors_writer *w;
    int rc = sd_safetensors_writer_new(&w);
    if (rc) return sd_err_prefix(rc, "%s", path);
    char **names = calloc(2 * net->n + 1, sizeof *names);
    float alpha_f = (float)net->alpha;
    int64_t alpha_i = (int64_t)net->alpha;
    if (!names) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc && o->alpha_int && net->alpha != floor(net->alpha))
        rc = sd_err(SD_EINVAL, "OFT save: alpha %g is not an integer", net->alpha);
    for (size_t i = 0; i < net->n && !rc; i++) {
        size_t L = strlen(net->names[i]) + 16;
        names[2 * i] = malloc(L);
        names[2 * i + 1] = malloc(L);
        if (!names[2 * i] || !names[2 * i + 1]) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        snprintf(names[2 * i], L, "%s.oft_blocks", net->names[i]);
        snprintf(names[2 * i + 1], L, "%s.alpha", net->names[i]);
        const sd_tensor *v = &net->mods[i].blocks->value;
        if (v->device != SD_DEV_CPU || v->dtype != SD_F32) {
            rc = sd_err(SD_EINVAL, "OFT save: %s is not an f32 host parameter", net->mods[i].blocks->key);
            break;
        }
        rc = sd_safetensors_writer_add_f32(w, names[2 * i], o->dtype, 3, v->shape, v->data);
        if (!rc)
            rc = o->alpha_int ? sd_safetensors_writer_add(w, names[2 * i + 1], SD_ST_I64, 0, NULL, &alpha_i)
                              : sd_safetensors_writer_add_f32(w, names[2 * i + 1], o->dtype, 0, NULL, &alpha_f);
    }
    if (o->meta)
        for (size_t i = 0; i < o->meta->n && !rc; i++)
            rc = sd_safetensors_writer_set_meta(w, o->meta->keys[i], o->meta->vals[i]);
    if (!rc) rc = sd_lora_writer_add_hashes(w, path);
    if (!rc) rc = sd_safetensors_writer_write(w, path);
    sd_safetensors_writer_free(w);
    for (size_t i = 0; names && i < 2 * net->n; i++) free(names[i]);
    free(names);
    return rc ? (strstr(sd_errmsg(), path) ? rc : sd_err_prefix(rc, "%s", path)) : SD_OK;
}

/* ---- merge ------------------------------------------------------------------------------------ */

/* W ← RW in place for a host weight of any storage dtype (f32 maths, stored back rounded). */
static int merge_one(sd_ctx *ctx, sd_oft *m, sd_tensor *w)
{
    if (w->device != SD_DEV_CPU) return sd_err(SD_EUNSUPPORTED, "OFT merge %s: weights not on the host", m->blocks->key);
    if (w->dtype != SD_F32 && w->dtype != SD_F16 && w->dtype != SD_BF16)
        return sd_err(SD_EUNSUPPORTED, "OFT merge %s: weights of an unsupported dtype", m->blocks->key);
    sd_tensor rw = { 0 };
    int rc = sd_tensor_alloc(&rw, SD_F32, w->ndim, w->shape);
    if (rc) return rc;
    /* sd_oft_weight reads w in any dtype and writes rw in f32 */
    rc = sd_oft_weight(ctx, m, w, &rw);
    size_t n = (size_t)sd_tensor_numel(w);
    if (!rc) {
        if (w->dtype == SD_F32) memcpy(w->data, rw.data, n * sizeof(float));
        else if (w->dtype == SD_F16) sd_f32_to_f16_n(rw.data, w->data, n);
        else sd_f32_to_bf16_n(rw.data, w->data, n);
    }
    sd_tensor_free(&rw);
    return rc;
}

int sd_oft_merge_file(sd_ctx *ctx, sd_model *m, const char *path, double mul, size_t *n_modules)
{
    sd_safetensors *st = NULL;
    sd_oft_file_info info;
    sd_oft_network net;
    memset(&net, 0, sizeof net);
    sd_params reg;
    sd_params_init(&reg);
    int rc = sd_safetensors_open(path, &st);
    if (!rc) rc = sd_oft_file_scan(st, &info);
    if (!rc) {
        sd_oft_network_opts no = { .dim = info.dim, .alpha = info.alpha, .all_linear = info.all_linear,
                                   .conv = info.conv, .sdxl = m->cfg.family == SD_FAMILY_SDXL,
                                   .multiplier = (float)mul };
        rc = sd_oft_network_build(&net, &reg, &m->unet, &no);
    }
    if (!rc) rc = sd_params_alloc(&reg, SD_DEV_CPU);
    if (!rc) rc = sd_oft_file_load(st, &net, 0, NULL);
    for (size_t i = 0; i < net.n && !rc; i++) {
        sd_param *w = net.host_lin[i] ? net.host_lin[i]->w : net.host_conv[i]->w;
        rc = merge_one(ctx, &net.mods[i], &w->value);
    }
    if (!rc && n_modules) *n_modules = net.n;
    sd_oft_network_free(&net);
    sd_params_free(&reg);
    sd_safetensors_close(st);
    if (rc && !strstr(sd_errmsg(), path)) sd_err_prefix(rc, "%s", path);
    return rc;
}
