/* LyCORIS weight-delta network, files (see lyco_network.h). */
#include "train/lyco_network.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "train/lora_file.h"

int sd_lyco_network_build(sd_lyco_network *net, sd_params *reg, sd_unet *u, sd_clip *te,
                          const sd_lora_network_opts *o, const sd_lycoris_args *la, float module_dropout,
                          const sd_lora_rt *rt)
{
    const int lokr = !strcmp(la->algo, "lokr");
    memset(net, 0, sizeof *net);
    net->reg = reg;
    sd_lora_candidate *c = NULL;
    size_t n = 0, nte = 0;
    int rc = sd_lora_network_candidates(u, te, o, &c, &n, &nte);
    if (rc) return rc;
    if (!n) {
        free(c);
        return sd_err(SD_EINVAL, "the LyCORIS network has no modules (nothing to train: check --network_args, "
                      "--network_train_unet_only / --network_train_text_encoder_only)");
    }
    net->mods = calloc(n, sizeof *net->mods);
    net->names = calloc(n, sizeof *net->names);
    net->is_te = calloc(n, sizeof *net->is_te);
    net->host_lin = calloc(n, sizeof *net->host_lin);
    net->host_conv = calloc(n, sizeof *net->host_conv);
    rc = net->mods && net->names && net->is_te && net->host_lin && net->host_conv ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        sd_lora_candidate *x = &c[i];
        double alpha = x->alpha;
        if (o->rs_lora) alpha = (alpha == 0 ? x->dim : alpha) * sqrt((double)x->dim);
        if (!(net->names[i] = strdup(x->name))) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        net->n = i + 1;   /* owned from here (freed on failure) */
        rc = lokr ? sd_lyco_init_lokr(&net->mods[i], reg, x->name, x->out, x->in, x->kh, x->kw, x->conv_host || x->conv1x1,
                                      x->dim, (float)alpha, la->factor, la->decompose_both, la->full_matrix, la->unbalanced)
                  : la->use_tucker && x->conv_host && (x->kh > 1 || x->kw > 1)
                      ? sd_lyco_init_loha_tucker(&net->mods[i], reg, x->name, x->out, x->in, x->kh, x->kw, x->dim, (float)alpha)
                      : sd_lyco_init_loha(&net->mods[i], reg, x->name, x->out, x->in * x->kh * x->kw, x->dim, (float)alpha);
        if (rc) break;
        net->mods[i].id = (uint32_t)i;
        net->mods[i].rt = rt;
        net->mods[i].module_dropout = module_dropout;
        net->mods[i].rank_dropout = (float)la->rank_dropout;
        net->is_te[i] = x->is_te;
        net->host_lin[i] = x->conv_host ? NULL : x->lin;
        net->host_conv[i] = x->conv_host ? x->conv : NULL;
    }
    net->n_te = nte < net->n ? nte : net->n;
    free(c);
    if (rc) sd_lyco_network_free(net);
    return rc;
}

int sd_lyco_network_attach(sd_lyco_network *net, uint64_t seed)
{
    int rc = SD_OK;
    for (size_t i = 0; i < net->n && !rc; i++) rc = sd_lyco_init_weights(&net->mods[i], seed);
    for (size_t i = 0; i < net->n && !rc; i++)
        rc = net->host_lin[i] ? sd_linear_set_lyco(net->host_lin[i], &net->mods[i])
                              : sd_conv2d_set_lyco(net->host_conv[i], &net->mods[i]);
    return rc;
}

void sd_lyco_network_free(sd_lyco_network *net)
{
    if (!net) return;
    for (size_t i = 0; i < net->n; i++) {
        if (net->host_lin && net->host_lin[i] && net->host_lin[i]->lyco == &net->mods[i]) net->host_lin[i]->lyco = NULL;
        if (net->host_conv && net->host_conv[i] && net->host_conv[i]->lyco == &net->mods[i]) net->host_conv[i]->lyco = NULL;
        if (net->names) free(net->names[i]);
        if (net->mods) sd_lyco_free(&net->mods[i]);
    }
    free(net->mods);
    free(net->names);
    free(net->is_te);
    free(net->host_lin);
    free(net->host_conv);
    memset(net, 0, sizeof *net);
}

/* the file key of a factor: its registry key "<module>.<factor>" */
int sd_lyco_file_load(const sd_safetensors *st, sd_lyco_network *net, size_t *loaded)
{
    const char *path = sd_safetensors_path(st);
    char key[1024];
    size_t nl = 0;
    /* check the shapes first, then read */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < net->n; i++) {
            sd_lyco *m = &net->mods[i];
            int found = 0;
            for (int k = 0; k < SD_LYCO_NP; k++) {
                if (!m->p[k]) continue;
                const sd_st_tensor *t = sd_safetensors_find(st, m->p[k]->key);
                if (!t) continue;
                found = 1;
                const sd_tensor *v = &m->p[k]->value;
                int same = t->ndim == v->ndim;
                for (int d = 0; same && d < v->ndim; d++) same = t->shape[d] == v->shape[d];
                if (!same) {
                    char a[96], b[96];
                    sd_st_shape_str(t->ndim, t->shape, a, sizeof a);
                    sd_st_shape_str(v->ndim, v->shape, b, sizeof b);
                    return sd_err(SD_EFORMAT, "%s: '%s' has shape %s, the network's is %s (--network_dim / conv_dim / "
                                  "algo options)", path, m->p[k]->key, a, b);
                }
                if (v->dtype != SD_F32 || v->device != SD_DEV_CPU)
                    return sd_err(SD_EINVAL, "LyCORIS load: %s is not an f32 host parameter", m->p[k]->key);
                if (pass) {
                    int rc = sd_safetensors_read(st, t, SD_ST_F32, v->data, (size_t)t->numel);
                    if (rc) return rc;
                }
            }
            snprintf(key, sizeof key, "%s.alpha", net->names[i]);
            const sd_st_tensor *a = sd_safetensors_find(st, key);
            if (a && (a->numel != 1 || a->dtype == SD_ST_BOOL))
                return sd_err(SD_EFORMAT, "%s: '%s' must be a scalar number", path, key);
            if (pass && a) {
                float f;
                int rc = sd_safetensors_read(st, a, SD_ST_F32, &f, 1);
                if (rc) return rc;
                if (!isfinite(f)) return sd_err(SD_EFORMAT, "%s: '%s' is not finite", path, key);
                m->alpha = f;   /* the buffer is loaded as well (load_state_dict) */
            }
            if (pass && (found || a)) nl++;
        }
    if (loaded) *loaded = nl;
    return SD_OK;
}

int sd_lyco_file_save(const char *path, const sd_lyco_network *net, sd_st_dtype dtype, const sd_kv *meta)
{
    sd_safetensors_writer *w;
    int rc = sd_safetensors_writer_new(&w);
    if (rc) return sd_err_prefix(rc, "%s", path);
    const size_t per = SD_LYCO_NP + 1;
    size_t nn = per * net->n;
    char **names = calloc(nn + 1, sizeof *names);
    float *alphas = calloc(net->n + 1, sizeof *alphas);
    if (!names || !alphas) rc = sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < net->n && !rc; i++) {
        const sd_lyco *m = &net->mods[i];
        for (int k = 0; k < SD_LYCO_NP + 1 && !rc; k++) {
            size_t L = strlen(net->names[i]) + 16;
            char *s = names[per * i + (size_t)k] = malloc(L);
            if (!s) {
                rc = sd_err(SD_ENOMEM, "out of memory");
                break;
            }
            if (k < SD_LYCO_NP && !m->p[k]) continue;
            snprintf(s, L, "%s", k < SD_LYCO_NP ? m->p[k]->key : net->names[i]);
            if (k == SD_LYCO_NP) snprintf(s, L, "%s.alpha", net->names[i]);
            if (k < SD_LYCO_NP) {
                const sd_tensor *v = &m->p[k]->value;
                if (v->device != SD_DEV_CPU || v->dtype != SD_F32)
                    rc = sd_err(SD_EINVAL, "LyCORIS save: %s is not an f32 host parameter", m->p[k]->key);
                else rc = sd_safetensors_writer_add_f32(w, s, dtype, v->ndim, v->shape, v->data);
            } else {
                alphas[i] = m->alpha;
                rc = sd_safetensors_writer_add_f32(w, s, dtype, 0, NULL, &alphas[i]);
            }
        }
    }
    if (meta)
        for (size_t i = 0; i < meta->n && !rc; i++) rc = sd_safetensors_writer_set_meta(w, meta->keys[i], meta->vals[i]);
    if (!rc) rc = sd_lora_writer_add_hashes(w, path);
    if (!rc) rc = sd_safetensors_writer_write(w, path);
    sd_safetensors_writer_free(w);
    for (size_t i = 0; names && i < nn; i++) free(names[i]);
    free(names);
    free(alphas);
    return rc ? (strstr(sd_errmsg(), path) ? rc : sd_err_prefix(rc, "%s", path)) : SD_OK;
}
