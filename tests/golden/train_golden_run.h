/* Shared by the training golden tests (test_train_{lora,ti,full}_golden.c): the records of the
 * golden batch as latent files, the per-step losses and gradient norms of the run's JSON-lines
 * log checked against the reference's, tensors compared between two files, and a trained LoRA file
 * checked against the reference's. Uses test.h's T_* macros. */
#ifndef SD_TESTS_TRAIN_GOLDEN_RUN_H
#define SD_TESTS_TRAIN_GOLDEN_RUN_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jsonl.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/loop.h"

/* The reference's noise and timesteps, fed to sd-train through sd_train_config.inject (inject_user
 * = a tgr_feed): sample idx[b] of micro step `micro` gets noise[(micro·batch + idx[b])·per ...]. */
typedef struct tgr_feed {
    const float *noise, *t;
    int64_t steps, batch, per;
} tgr_feed;

static inline int tgr_inject(void *user, int64_t micro, const int64_t *idx, int nb, int64_t per, float *noise, int *t)
{
    const tgr_feed *f = user;
    if (micro >= f->steps || per != f->per) return -1;
    for (int b = 0; b < nb; b++) {
        size_t k = (size_t)(micro * f->batch + idx[b]);
        memcpy(noise + (size_t)b * (size_t)per, f->noise + k * (size_t)per, (size_t)per * sizeof(float));
        t[b] = (int)f->t[k];
    }
    return 0;
}

/* One record per caption: a [4, 8, 8] latent file (64 px image) t_path("<prefix>_<b>.npz") holding
 * lat + b·256, with its caption. */
static inline void tgr_add_records(sd_train_data *d, sd_train_config *c, float *lat, const char *const *caps, int n,
                                   const char *prefix)
{
    for (int b = 0; b < n; b++) {
        sd_latent_file lf;
        memset(&lf, 0, sizeof lf);
        lf.latents = lat + b * 4 * 8 * 8;
        lf.c = 4;
        lf.h = 8;
        lf.w = 8;
        lf.original_size[0] = lf.original_size[1] = 64;
        lf.crop_ltrb[2] = lf.crop_ltrb[3] = 64;
        char name[96], path[512], line[1024];
        snprintf(name, sizeof name, "%s_%d.npz", prefix, b);
        snprintf(path, sizeof path, "%s", t_path(name));
        T_EQ_INT(sd_latent_write(path, &lf, NULL), 0);
        snprintf(line, sizeof line, "{\"latents\":\"%s\",\"caption\":\"%s\"}", path, caps[b]);
        jv rec;
        T_EQ_INT(sd_jsonl_parse_line(line, strlen(line), &rec), 0);
        T_EQ_INT(sd_train_data_add_record(d, c, rec), 0);
        jv_free(rec);
    }
}

/* The first `steps` lines of the JSON-lines log: "loss" and "grad_norm" within `tol` (relative) of
 * the reference's; the worst errors go to *worst_l / *worst_g. */
static inline void tgr_check_log(const char *logp, const float *loss, const float *gn, int steps, double tol,
                                 double *worst_l, double *worst_g)
{
    FILE *f = fopen(logp, "r");
    T_CHECK(f != NULL);
    char buf[4096];
    int n = 0;
    *worst_l = *worst_g = 0;
    while (f && fgets(buf, sizeof buf, f) && n < steps) {
        const char *pl = strstr(buf, "\"loss\":"), *pg = strstr(buf, "\"grad_norm\":");
        T_CHECK(pl && pg);
        if (!pl || !pg) break;
        double l = strtod(pl + 7, NULL), g = strtod(pg + 12, NULL);
        double el = fabs(l - loss[n]) / fabs(loss[n]), eg = fabs(g - gn[n]) / fabs(gn[n]);
        if (el > *worst_l) *worst_l = el;
        if (eg > *worst_g) *worst_g = eg;
        T_CHECKF(el <= tol, "step %d: loss %.9g, reference %.9g", n + 1, l, (double)loss[n]);
        T_CHECKF(eg <= tol, "step %d: grad norm %.9g, reference %.9g", n + 1, g, (double)gn[n]);
        n++;
    }
    if (f) fclose(f);
    T_EQ_INT(n, steps);
}

/* max |a − b| / max |b| of tensor `name` in two files (INFINITY when missing or of other sizes). */
static inline double tgr_tensor_rel_err(const sd_safetensors *a, const sd_safetensors *b, const char *name)
{
    const sd_st_tensor *ta = sd_safetensors_find(a, name), *tb = sd_safetensors_find(b, name);
    if (!ta || !tb || ta->numel != tb->numel) return INFINITY;
    float *x = malloc((size_t)ta->numel * sizeof *x), *y = malloc((size_t)tb->numel * sizeof *y);
    double md = 0, mm = 0;
    if (x && y && !sd_safetensors_read(a, ta, SD_ST_F32, x, (size_t)ta->numel) &&
        !sd_safetensors_read(b, tb, SD_ST_F32, y, (size_t)tb->numel)) {
        for (int64_t i = 0; i < ta->numel; i++) {
            double d = fabs((double)x[i] - y[i]);
            if (d > md) md = d;
            if (fabs(y[i]) > mm) mm = fabs(y[i]);
        }
    } else {
        md = INFINITY;
    }
    free(x);
    free(y);
    return mm > 0 ? md / mm : md;
}

/* The trained LoRA file `out` against the reference's `ref`: the same key set, every .alpha equal,
 * every other tensor within max(3·spread, 1e-4) relative, its spread read from "spread.<name>" of
 * `spread`. Prints how many tensors lie within 1e-4 and the worst error. */
static inline void tgr_check_lora_final(const char *out, const char *ref, const char *spread_path)
{
    sd_safetensors *a = NULL, *b = NULL, *sp = NULL;
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    T_EQ_INT(sd_safetensors_open(ref, &b), 0);
    T_EQ_INT(sd_safetensors_open(spread_path, &sp), 0);
    if (!a || !b || !sp) {
        sd_safetensors_close(a);
        sd_safetensors_close(b);
        sd_safetensors_close(sp);
        return;
    }
    T_EQ_INT(sd_safetensors_count(a), sd_safetensors_count(b));
    int within = 0, nten = 0;
    double worst = 0;
    for (size_t i = 0; i < sd_safetensors_count(b); i++) {
        const sd_st_tensor *t = sd_safetensors_at(b, i);
        T_CHECKF(sd_safetensors_find(a, t->name) != NULL, "missing %s", t->name);
        double e = tgr_tensor_rel_err(a, b, t->name);
        if (e > worst) worst = e;
        size_t L = strlen(t->name);
        if (L > 6 && !strcmp(t->name + L - 6, ".alpha")) {
            T_CHECKF(e == 0, "%s differs", t->name);
            continue;
        }
        char sk[512];
        float spread = 1;
        snprintf(sk, sizeof sk, "spread.%s", t->name);
        T_EQ_INT(sd_safetensors_read_f32(sp, sk, &spread, 1), 0);
        double tol = 3 * spread > 1e-4 ? 3 * spread : 1e-4;
        nten++;
        within += e <= 1e-4;
        T_CHECKF(e <= tol, "%s: relative error %.3g (allowed %.3g)", t->name, e, tol);
    }
    printf("# final LoRA weights: %d of %d tensors within 1e-4 relative, worst %.3g\n", within, nten, worst);
    sd_safetensors_close(a);
    sd_safetensors_close(b);
    sd_safetensors_close(sp);
}

#endif
