/* Weighted average of checkpoints (see ckpt_merge.h). */
#include "models/ckpt_merge.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "io/safetensors.h"

static const char *const REPL[3][2] = {
    { "cond_stage_model.transformer.embeddings.", "cond_stage_model.transformer.text_model.embeddings." },
    { "cond_stage_model.transformer.encoder.", "cond_stage_model.transformer.text_model.encoder." },
    { "cond_stage_model.transformer.final_layer_norm.", "cond_stage_model.transformer.text_model.final_layer_norm." },
};

/* replace_text_encoder_key: malloc'd new name */
static char *rename_key(const char *k)
{
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(REPL[i][0]);
        if (!strncmp(k, REPL[i][0], l)) {
            size_t n = strlen(REPL[i][1]) + strlen(k + l) + 1;
            char *s = malloc(n);
            if (s) snprintf(s, n, "%s%s", REPL[i][1], k + l);
            return s;
        }
    }
    return strdup(k);
}

static int is_unet_key(const char *k)
{
    return !(strstr(k, "first_stage_model") || strstr(k, "cond_stage_model") || strstr(k, "conditioner."));
}

typedef struct named {
    char *name;                   /* renamed */
    const sd_st_tensor *t;
} named;

typedef struct model {
    const char *path;
    sd_safetensors *st;
    named *keys;                  /* sorted by renamed name */
    size_t n;
} model;

typedef struct term {
    const sd_st_tensor *t;
    const model *m;
    double ratio;
} term;

typedef struct job {
    const char *name;
    term *terms;                  /* in the reference's order; the last may be the supplement */
    int nterms;
    int prec;
    sd_st_dtype sdt;
    int64_t numel;
} job;

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

static const named *find_named(const model *m, const char *name)
{
    named probe = { (char *)name, NULL };
    return bsearch(&probe, m->keys, m->n, sizeof *m->keys, cmp_named);
}

static void round_n(float *x, size_t n, int p)
{
    if (p == 1 || p == 2) sd_round_half_n(x, n, p == 2);
}

static int write_job(void *ctx, const char *name, sd_st_sink *sink)
{
    (void)name;
    job *j = ctx;
    size_t n = (size_t)j->numel;
    float *acc = malloc(sizeof(float) * (n ? n : 1)), *v = malloc(sizeof(float) * (n ? n : 1));
    void *outb = malloc(sd_st_dtype_size(j->sdt) * (n ? n : 1));
    int rc = acc && v && outb ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < j->nterms && !rc; i++) {
        const term *t = &j->terms[i];
        rc = sd_safetensors_read(t->m->st, t->t, SD_ST_F32, v, n);
        if (rc) break;
        round_n(v, n, j->prec);                          /* value.to(dtype) */
        float r = (float)t->ratio;
        for (size_t q = 0; q < n; q++) v[q] *= r;        /* ratio * value */
        round_n(v, n, j->prec);
        if (i == 0) memcpy(acc, v, n * sizeof(float));
        else {
            for (size_t q = 0; q < n; q++) acc[q] += v[q];
            round_n(acc, n, j->prec);
        }
    }
    if (!rc) rc = sd_st_convert(SD_ST_F32, acc, j->sdt, outb, n);
    if (!rc) rc = sd_st_sink_write(sink, outb, n * sd_st_dtype_size(j->sdt));
    free(acc);
    free(v);
    free(outb);
    return rc;
}

int sd_ckpt_merge(const char *const *paths, const double *ratios, int n, const char *out,
                  const sd_ckpt_merge_opts *o, sd_ckpt_merge_result *res)
{
    static const sd_st_dtype dts[3] = { SD_ST_F32, SD_ST_F16, SD_ST_BF16 };
    memset(res, 0, sizeof *res);
    if (n < 1) return sd_err(SD_EINVAL, "no models to merge");
    model *ms = calloc((size_t)n, sizeof *ms);
    job *jobs = NULL;
    term *terms = NULL;
    sd_safetensors_writer *w = NULL;
    size_t nj = 0;
    int rc = ms ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        model *m = &ms[i];
        m->path = paths[i];
        if ((rc = sd_safetensors_open(paths[i], &m->st))) {
            if (!strstr(sd_errmsg(), paths[i])) sd_err_prefix(rc, "%s", paths[i]);
            break;
        }
        size_t nt = sd_safetensors_count(m->st);
        if (!(m->keys = calloc(nt + 1, sizeof *m->keys))) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        for (size_t k = 0; k < nt && !rc; k++) {
            const sd_st_tensor *t = sd_safetensors_at(m->st, k);
            m->keys[k].t = t;
            if (!(m->keys[k].name = rename_key(t->name))) rc = sd_err(SD_ENOMEM, "out of memory");
            m->n = k + 1;
        }
        if (rc) break;
        qsort(m->keys, m->n, sizeof *m->keys, cmp_named);
        for (size_t k = 1; k < m->n; k++)
            if (!strcmp(m->keys[k].name, m->keys[k - 1].name)) {
                rc = sd_err(SD_EFORMAT, "%s: tensors '%s' and '%s' are both '%s' once the text-encoder names are "
                            "renamed", paths[i], m->keys[k - 1].t->name, m->keys[k].t->name, m->keys[k].name);
                break;
            }
    }
    if (rc) goto out;
    const model *m0 = &ms[0];
    if (!(jobs = calloc(m0->n + 1, sizeof *jobs)) || !(terms = calloc((m0->n + 1) * (size_t)(n + 1), sizeof *terms))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    /* later models' keys the first lacks: skipped */
    for (int i = 1; i < n && o->note; i++)
        for (size_t k = 0; k < ms[i].n; k++)
            if (!find_named(m0, ms[i].keys[k].name)) o->note(o->note_ctx, SD_CKPT_NOTE_SKIPPED, ms[i].keys[k].name, paths[i], 0);
    sd_st_dtype sdt = dts[o->save_precision >= 0 && o->save_precision < 3 ? o->save_precision : 0];
    for (size_t k = 0; k < m0->n && !rc; k++) {
        const named *kk = &m0->keys[k];
        job *j = &jobs[nj++];
        j->name = kk->name;
        j->terms = terms + k * (size_t)(n + 1);
        j->prec = o->precision;
        j->sdt = sdt;
        j->numel = kk->t->numel;
        double r0 = ratios ? ratios[0] : 1.0 / n, supp = 0;
        int skip_first = o->unet_only && !is_unet_key(kk->name);
        if (skip_first) supp = 1.0;   /* the first model's value, whatever the others hold */
        else j->terms[j->nterms++] = (term){ kk->t, m0, r0 };
        int all = !skip_first;
        for (int i = 1; i < n && !skip_first; i++) {
            double r = ratios ? ratios[i] : 1.0 / n;
            const named *x = find_named(&ms[i], kk->name);
            if (!x) {
                supp += r;
                all = 0;
                if (o->note && is_unet_key(kk->name)) o->note(o->note_ctx, SD_CKPT_NOTE_MISSING, kk->name, paths[i], r);
                continue;
            }
            if (x->t->ndim != kk->t->ndim || memcmp(x->t->shape, kk->t->shape, sizeof(int64_t) * (size_t)kk->t->ndim)) {
                char a[96], b[96];
                sd_st_shape_str(x->t->ndim, x->t->shape, a, sizeof a);
                sd_st_shape_str(kk->t->ndim, kk->t->shape, b, sizeof b);
                rc = sd_err(SD_EFORMAT, "%s: tensor '%s' has shape %s, %s has %s (models of different architectures "
                            "cannot be merged)", paths[i], x->t->name, a, paths[0], b);
                break;
            }
            j->terms[j->nterms++] = (term){ x->t, &ms[i], r };
        }
        if (rc) break;
        if (supp != 0 || skip_first) {
            j->terms[j->nterms++] = (term){ kk->t, m0, supp };
            res->n_first_only++;
        }
        if (all) res->n_averaged++;
    }
    if (rc) goto out;
    if ((rc = sd_safetensors_writer_new(&w))) goto out;
    for (size_t k = 0; k < nj && !rc; k++)
        rc = sd_safetensors_writer_add_fn(w, jobs[k].name, sdt, m0->keys[k].t->ndim, m0->keys[k].t->shape, write_job,
                                          &jobs[k]);
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    if (!rc) res->n_keys = nj;
out:
    sd_safetensors_writer_free(w);
    free(jobs);
    free(terms);
    if (ms)
        for (int i = 0; i < n; i++) {
            for (size_t k = 0; k < ms[i].n; k++) free(ms[i].keys[k].name);
            free(ms[i].keys);
            sd_safetensors_close(ms[i].st);
        }
    free(ms);
    return rc;
}
