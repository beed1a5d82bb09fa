/* The data-derived ss_* metadata of sd-train (see loop.h: sd_train_data_dirs_json). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/strbuf.h"
#include "data/bucket.h"
#include "data/dataset_config.h"
#include "train/batch.h"
#include "train/loop.h"
#include "train/pyfmt.h"
#include "train/meta.h"

/* ---- ss_dataset_dirs / ss_reg_dataset_dirs / ss_tag_frequency (legacy metadata block) ---------- */

static void jb_str(sd_strbuf *b, const char *s)
{
    size_t need = strlen(s) * 12 + 3, len = 0;
    char *t = malloc(need);
    if (!t || sd_py_json_string(s, t, need, &len)) {
        free(t);
        b->oom = 1;
        return;
    }
    sd_strbuf_add(b, t, len);
    free(t);
}

static int py_space(unsigned char c) { return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f); }

/* str.lower() for ASCII and the Latin-1 capitals (U+00C0..U+00DE but U+00D7), malloc'd */
static char *py_lower(const char *a, size_t m)
{
    char *t = malloc(m + 1);
    if (!t) return NULL;
    for (size_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        else if (c == 0xc3 && i + 1 < m) {
            unsigned char d = (unsigned char)a[i + 1];
            t[i++] = (char)c;
            c = (d >= 0x80 && d <= 0x9e && d != 0x97) ? (unsigned char)(d + 0x20) : d;
        }
        t[i] = (char)c;
    }
    t[m] = 0;
    return t;
}

/* The directory name of an image ("" without one), as the reference's os.path.basename(image_dir). */
static void dir_of(const sd_train_sample *s, char *out, size_t n)
{
    out[0] = 0;
    const char *path = s->image ? s->image : s->latents;
    if (!path) return;
    const char *sl = strrchr(path, '/');
    if (!sl) return;
    const char *st = sl;
    while (st > path && st[-1] != '/') st--;
    size_t L = (size_t)(sl - st);
    if (L >= n) L = n - 1;
    memcpy(out, st, L);
    out[L] = 0;
}

/* {"dir": {"n_repeats": r, "img_count": n}, ...} for reg = 0/1, and {"dir": {"tag": count, ...}, ...}
 * over the stored captions split at commas (the reference's tag frequency), dirs in first-seen order;
 * reg < 0: every image (the tag frequency covers regularisation folders too). */
int sd_train_data_dirs_json(const sd_train_data *d, int reg, char **dirs_out, char **tags_out)
{
    sd_strbuf bd = { 0 }, bt = { 0 };
    sd_strbuf_add(&bd, "{", 1);
    sd_strbuf_add(&bt, "{", 1);
    size_t n = d->n;
    char (*names)[256] = calloc(n ? n : 1, sizeof *names);
    uint8_t *done = calloc(n ? n : 1, 1);
    if (!names || !done) {
        free(names), free(done);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) dir_of(&d->s[i], names[i], sizeof names[i]);
    int ndirs = 0, ntagdirs = 0;
    for (size_t i = 0; i < n; i++) {
        if (done[i] || (reg >= 0 && !d->s[i].is_reg != !reg)) continue;
        int64_t cnt = 0, rep = d->s[i].num_repeats;
        /* tags of this dir, counted in first-seen order */
        char **tags = NULL;
        int64_t *tc = NULL;
        size_t nt = 0, ct = 0;
        for (size_t j = i; j < n; j++) {
            if (done[j] || (reg >= 0 && !d->s[j].is_reg != !reg) || strcmp(names[j], names[i])) continue;
            done[j] = 1;
            cnt++;
            const char *cp = d->s[j].caption ? d->s[j].caption : "";
            while (*cp) {
                const char *e = strchr(cp, ',');
                size_t L = e ? (size_t)(e - cp) : strlen(cp);
                const char *a = cp;
                size_t m = L;
                while (m && py_space((unsigned char)*a)) a++, m--;
                while (m && py_space((unsigned char)a[m - 1])) m--;
                char *low = m ? py_lower(a, m) : NULL;
                if (m && !low) bt.oom = 1;
                if (low) {
                    a = low;
                    size_t k;
                    for (k = 0; k < nt; k++)
                        if (strlen(tags[k]) == m && !memcmp(tags[k], a, m)) break;
                    if (k == nt) {
                        if (nt == ct) {
                            ct = ct ? ct * 2 : 16;
                            char **q = realloc(tags, ct * sizeof *q);
                            int64_t *qc = realloc(tc, ct * sizeof *qc);
                            if (q) tags = q;
                            if (qc) tc = qc;
                            if (!q || !qc) {
                                bt.oom = 1;
                                free(low);
                                break;
                            }
                        }
                        tags[nt] = strndup(a, m);
                        tc[nt++] = 0;
                    }
                    tc[k]++;
                }
                free(low);
                cp += L + (e ? 1 : 0);
                if (!e) break;
            }
        }
        char num[64];
        if (ndirs++) sd_strbuf_add(&bd, ", ", 2);
        jb_str(&bd, names[i]);
        snprintf(num, sizeof num, ": {\"n_repeats\": %lld, \"img_count\": %lld}", (long long)rep, (long long)cnt);
        sd_strbuf_add(&bd, num, strlen(num));
        if (ntagdirs++) sd_strbuf_add(&bt, ", ", 2);
        jb_str(&bt, names[i]);
        sd_strbuf_add(&bt, ": {", 3);
        for (size_t k = 0; k < nt; k++) {
            if (k) sd_strbuf_add(&bt, ", ", 2);
            jb_str(&bt, tags[k] ? tags[k] : "");
            snprintf(num, sizeof num, ": %lld", (long long)tc[k]);
            sd_strbuf_add(&bt, num, strlen(num));
            free(tags[k]);
        }
        sd_strbuf_add(&bt, "}", 1);
        free(tags);
        free(tc);
    }
    sd_strbuf_add(&bd, "}", 1);
    sd_strbuf_add(&bt, "}", 1);
    free(names);
    free(done);
    if (bd.oom || bt.oom) {
        free(bd.p), free(bt.p);
        return sd_err(SD_ENOMEM, "out of memory building the metadata");
    }
    *dirs_out = bd.p;
    if (tags_out) *tags_out = bt.p;
    else free(bt.p);
    return SD_OK;
}


/* ---- ss_datasets / ss_tag_frequency / ss_dataset_dirs (dataset config runs) ------------------- */

typedef struct tf_dir {
    char *name;
    char **tags;
    int64_t *cnt;
    size_t nt, ct;
} tf_dir;

static void tf_free(tf_dir *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < d[i].nt; k++) free(d[i].tags[k]);
        free(d[i].tags), free(d[i].cnt), free(d[i].name);
    }
    free(d);
}

/* set_tag_frequency(dir, [caption]) of library/train_util.py */
static int tf_add(tf_dir **dirs, size_t *nd, const char *dir, const char *caption)
{
    size_t i;
    for (i = 0; i < *nd; i++)
        if (!strcmp((*dirs)[i].name, dir)) break;
    if (i == *nd) {
        tf_dir *q = realloc(*dirs, (*nd + 1) * sizeof *q);
        if (!q) return SD_ENOMEM;
        *dirs = q;
        memset(&q[i], 0, sizeof q[i]);
        if (!(q[i].name = strdup(dir))) return SD_ENOMEM;
        (*nd)++;
    }
    tf_dir *d = &(*dirs)[i];
    const char *cp = caption ? caption : "";
    for (;;) {
        const char *e = strchr(cp, ',');
        size_t L = e ? (size_t)(e - cp) : strlen(cp);
        const char *a = cp;
        size_t m = L;
        while (m && py_space((unsigned char)*a)) a++, m--;
        while (m && py_space((unsigned char)a[m - 1])) m--;
        if (m) {
            char *t = py_lower(a, m);
            if (!t) return SD_ENOMEM;
            size_t k;
            for (k = 0; k < d->nt; k++)
                if (!strcmp(d->tags[k], t)) break;
            if (k == d->nt) {
                if (d->nt == d->ct) {
                    size_t ct = d->ct ? d->ct * 2 : 16;
                    char **q = realloc(d->tags, ct * sizeof *q);
                    if (q) d->tags = q;
                    int64_t *qc = realloc(d->cnt, ct * sizeof *qc);
                    if (qc) d->cnt = qc;
                    if (!q || !qc) {
                        free(t);
                        return SD_ENOMEM;
                    }
                    d->ct = ct;
                }
                d->tags[k] = t;
                d->cnt[k] = 0;
                d->nt++;
            } else {
                free(t);
            }
            d->cnt[k]++;
        }
        if (!e) break;
        cp = e + 1;
    }
    return SD_OK;
}

/* {"tag": n, ...} */
static void tf_dir_json(sd_strbuf *b, const tf_dir *d)
{
    char num[32];
    sd_strbuf_add(b, "{", 1);
    for (size_t k = 0; k < d->nt; k++) {
        if (k) sd_strbuf_add(b, ", ", 2);
        jb_str(b, d->tags[k]);
        snprintf(num, sizeof num, ": %lld", (long long)d->cnt[k]);
        sd_strbuf_add(b, num, strlen(num));
    }
    sd_strbuf_add(b, "}", 1);
}

static void jb_key(sd_strbuf *b, int first, const char *key)
{
    if (!first) sd_strbuf_add(b, ", ", 2);
    jb_str(b, key);
    sd_strbuf_add(b, ": ", 2);
}

static void jb_kint(sd_strbuf *b, int first, const char *key, int64_t v)
{
    char num[32];
    jb_key(b, first, key);
    snprintf(num, sizeof num, "%lld", (long long)v);
    sd_strbuf_add(b, num, strlen(num));
}

static void jb_kbool(sd_strbuf *b, const char *key, int v)
{
    jb_key(b, 0, key);
    sd_strbuf_add(b, v ? "true" : "false", v ? 4 : 5);
}

static void jb_kstr(sd_strbuf *b, const char *key, const char *v)
{
    jb_key(b, 0, key);
    if (v) jb_str(b, v);
    else sd_strbuf_add(b, "null", 4);
}

/* os.path.basename */
static const char *py_basename(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int sd_ss_datasets_json(const sd_ss_dataset_meta *ds, int n, char **datasets, char **tag_frequency,
                        char **dataset_dirs)
{
    sd_strbuf bd = { 0 }, bt = { 0 }, bi = { 0 };
    tf_dir *all = NULL;            /* merged: the first dataset's entry of each dir */
    size_t nall = 0;
    char **used = NULL;            /* keys of ss_dataset_dirs */
    size_t nused = 0;
    int rc = SD_OK;
    sd_strbuf_add(&bd, "[", 1);
    sd_strbuf_add(&bi, "{", 1);
    for (int di = 0; di < n && !rc; di++) {
        const sd_ss_dataset_meta *D = &ds[di];
        tf_dir *tf = NULL;
        size_t ntf = 0;
        for (size_t i = 0; i < D->ncaptions && !rc; i++)
            rc = tf_add(&tf, &ntf, D->captions[i].dir ? D->captions[i].dir : "", D->captions[i].caption);
        if (rc) {
            tf_free(tf, ntf);
            break;
        }
        if (di) sd_strbuf_add(&bd, ", ", 2);
        sd_strbuf_add(&bd, "{", 1);
        jb_key(&bd, 1, "is_dreambooth");
        sd_strbuf_add(&bd, D->is_dreambooth ? "true" : "false", D->is_dreambooth ? 4 : 5);
        jb_kint(&bd, 0, "batch_size_per_device", D->batch_size);
        jb_kint(&bd, 0, "num_train_images", D->num_train_images);
        jb_kint(&bd, 0, "num_reg_images", D->num_reg_images);
        char num[64];
        jb_key(&bd, 0, "resolution");
        snprintf(num, sizeof num, "[%d, %d]", D->width, D->height);
        sd_strbuf_add(&bd, num, strlen(num));
        jb_kbool(&bd, "enable_bucket", D->enable_bucket);
        if (D->controlnet) {
            jb_key(&bd, 0, "min_bucket_reso");
            sd_strbuf_add(&bd, "null", 4);
            jb_key(&bd, 0, "max_bucket_reso");
            sd_strbuf_add(&bd, "null", 4);
        } else {
            jb_kint(&bd, 0, "min_bucket_reso", D->min_bucket_reso);
            jb_kint(&bd, 0, "max_bucket_reso", D->max_bucket_reso);
        }
        jb_key(&bd, 0, "tag_frequency");
        sd_strbuf_add(&bd, "{", 1);
        for (size_t i = 0; i < ntf; i++) {
            jb_key(&bd, i == 0, tf[i].name);
            tf_dir_json(&bd, &tf[i]);
        }
        sd_strbuf_add(&bd, "}", 1);
        jb_key(&bd, 0, "bucket_info");
        if (D->bucket_info_json) sd_strbuf_add(&bd, D->bucket_info_json, strlen(D->bucket_info_json));
        else sd_strbuf_add(&bd, "null", 4);
        jb_kstr(&bd, "resize_interpolation", D->resize_interpolation);
        jb_key(&bd, 0, "subsets");
        sd_strbuf_add(&bd, "[", 1);
        for (int si = 0; si < D->nsubsets && !rc; si++) {
            const sd_ss_subset_meta *S = &D->subsets[si];
            if (si) sd_strbuf_add(&bd, ", ", 2);
            sd_strbuf_add(&bd, "{", 1);
            jb_kint(&bd, 1, "img_count", S->img_count);
            jb_kint(&bd, 0, "num_repeats", S->num_repeats);
            jb_kbool(&bd, "color_aug", S->color_aug);
            jb_kbool(&bd, "flip_aug", S->flip_aug);
            jb_kbool(&bd, "random_crop", S->random_crop);
            jb_kbool(&bd, "shuffle_caption", S->shuffle_caption);
            jb_kint(&bd, 0, "keep_tokens", S->keep_tokens);
            jb_kstr(&bd, "keep_tokens_separator", S->keep_tokens_separator);
            jb_kstr(&bd, "secondary_separator", S->secondary_separator);
            jb_kbool(&bd, "enable_wildcard", S->enable_wildcard);
            jb_kstr(&bd, "caption_prefix", S->caption_prefix);
            jb_kstr(&bd, "caption_suffix", S->caption_suffix);
            jb_kstr(&bd, "resize_interpolation", S->resize_interpolation);
            const char *dirkey = NULL;
            if (S->image_dir && *S->image_dir) {
                dirkey = py_basename(S->image_dir);
                jb_kstr(&bd, "image_dir", dirkey);
            }
            if (D->is_dreambooth) {
                jb_kstr(&bd, "class_tokens", S->class_tokens);
                jb_kbool(&bd, "is_reg", S->is_reg);
                if (S->is_reg) dirkey = NULL;
            } else {
                dirkey = py_basename(S->metadata_file ? S->metadata_file : "");
                jb_kstr(&bd, "metadata_file", dirkey);
            }
            sd_strbuf_add(&bd, "}", 1);
            if (!dirkey) continue;
            /* datasets may have a dir several times: "dir (2)", "dir (3)", ... */
            size_t L = strlen(dirkey) + 32;
            char *key = malloc(L);
            char **q = realloc(used, (nused + 1) * sizeof *q);
            if (q) used = q;
            if (!key || !q) {
                free(key);
                rc = SD_ENOMEM;
                break;
            }
            snprintf(key, L, "%s", dirkey);
            for (int k = 2;; k++) {
                size_t u;
                for (u = 0; u < nused; u++)
                    if (!strcmp(used[u], key)) break;
                if (u == nused) break;
                snprintf(key, L, "%s (%d)", dirkey, k);
            }
            used[nused++] = key;
            jb_key(&bi, nused == 1, key);
            snprintf(num, sizeof num, "{\"n_repeats\": %lld, \"img_count\": %lld}", (long long)S->num_repeats,
                     (long long)S->img_count);
            sd_strbuf_add(&bi, num, strlen(num));
        }
        sd_strbuf_add(&bd, "]}", 2);
        /* merge the tag frequency: a dir used by several datasets is counted once */
        for (size_t i = 0; i < ntf && !rc; i++) {
            size_t u;
            for (u = 0; u < nall; u++)
                if (!strcmp(all[u].name, tf[i].name)) break;
            if (u < nall) continue;
            tf_dir *q = realloc(all, (nall + 1) * sizeof *q);
            if (!q) {
                rc = SD_ENOMEM;
                break;
            }
            all = q;
            all[nall++] = tf[i];
            memset(&tf[i], 0, sizeof tf[i]);
        }
        tf_free(tf, ntf);
    }
    sd_strbuf_add(&bd, "]", 1);
    sd_strbuf_add(&bi, "}", 1);
    sd_strbuf_add(&bt, "{", 1);
    for (size_t i = 0; i < nall; i++) {
        jb_key(&bt, i == 0, all[i].name);
        tf_dir_json(&bt, &all[i]);
    }
    sd_strbuf_add(&bt, "}", 1);
    tf_free(all, nall);
    for (size_t u = 0; u < nused; u++) free(used[u]);
    free(used);
    if (rc || bd.oom || bt.oom || bi.oom) {
        free(bd.p), free(bt.p), free(bi.p);
        return sd_err(SD_ENOMEM, "out of memory building ss_datasets");
    }
    *datasets = bd.p;
    *tag_frequency = bt.p;
    *dataset_dirs = bi.p;
    return SD_OK;
}

/* ---- from the training data ------------------------------------------------------------------ */

int sd_train_data_set_config(sd_train_data *d, const struct sd_dataset_config *cfg, int use_dataset_config)
{
    jv all = jv_array();
    for (int i = 0; i < cfg->ndatasets; i++) {
        const sd_dc_dataset *D = &cfg->datasets[i];
        jv subs = jv_array();
        for (int k = 0; k < D->nsubsets; k++)
            subs = jv_array_append(subs, jv_object_set(jv_copy(D->subsets[k].params), jv_string(" index"),
                                                       jv_number(D->subsets[k].index)));
        jv o = jv_object();
        o = jv_object_set(o, jv_string("index"), jv_number(D->index));
        o = jv_object_set(o, jv_string("method"), jv_number(D->method));
        o = jv_object_set(o, jv_string("params"), jv_copy(D->params));
        o = jv_object_set(o, jv_string("subsets"), subs);
        all = jv_array_append(all, o);
    }
    if (!jv_is_valid(all)) {
        jv_free(all);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    if (d->has_config) jv_free(d->config);
    d->config = all;
    d->has_config = 1;
    d->use_dataset_config = use_dataset_config;
    return SD_OK;
}

/* borrowed views of a parameter object (the object keeps the values alive) */
static jv pget(jv o, const char *k)
{
    if (jv_get_kind(o) != JV_KIND_OBJECT) return jv_null();
    jv v = jv_object_get(jv_copy(o), jv_string(k));
    return jv_is_valid(v) ? v : jv_null();
}

static const char *pstr(jv o, const char *k)
{
    jv v = pget(o, k);
    const char *s = jv_get_kind(v) == JV_KIND_STRING ? jv_string_value(v) : NULL;
    jv_free(v);
    return s;
}

static int64_t pint(jv o, const char *k, int64_t def)
{
    jv v = pget(o, k);
    int64_t r = jv_get_kind(v) == JV_KIND_NUMBER ? (int64_t)jv_number_value(v) : def;
    jv_free(v);
    return r;
}

static int pbool(jv o, const char *k)
{
    jv v = pget(o, k);
    int r = jv_get_kind(v) == JV_KIND_TRUE || (jv_get_kind(v) == JV_KIND_NUMBER && jv_number_value(v) != 0);
    jv_free(v);
    return r;
}

static int cmp_reso(const void *a, const void *b)
{
    const int *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

/* json.dumps(dataset.bucket_info) of an enable_bucket dataset: the used buckets sorted by (w, h),
 * counts with (balanced) repeats, and the mean |ar error| of its images (non-reg first, as the
 * reference registers them) */
static char *bucket_info_json(const sd_train_data *d, const sd_batch_plan *plan, int di)
{
    size_t n = d->n, nr = 0, ne = 0;
    int (*r)[2] = calloc(n ? n : 1, sizeof *r);
    int64_t *cnt = calloc(n ? n : 1, sizeof *cnt);
    double *err = calloc(n ? n : 1, sizeof *err);
    sd_strbuf b = { 0 };
    if (!r || !cnt || !err) goto done;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++) {
            const sd_train_sample *s = &d->s[i];
            if (s->dataset != di || s->is_reg != pass) continue;
            if (s->has_plan) {
                double e = s->plan.ar_error;
                err[ne++] = e < 0 ? -e : e;
            }
            size_t k;
            for (k = 0; k < nr; k++)
                if (r[k][0] == s->bucket_w && r[k][1] == s->bucket_h) break;
            if (k == nr) r[nr][0] = s->bucket_w, r[nr][1] = s->bucket_h, nr++;
        }
    qsort(r, nr, sizeof *r, cmp_reso);
    for (size_t i = 0; i < n; i++) {
        const sd_train_sample *s = &d->s[i];
        if (s->dataset != di) continue;
        int64_t rep = plan && plan->balanced && i < plan->nitems ? plan->balanced[i] : s->num_repeats;
        for (size_t k = 0; k < nr; k++)
            if (r[k][0] == s->bucket_w && r[k][1] == s->bucket_h) cnt[k] += rep;
    }
    char num[128];
    sd_strbuf_add(&b, "{\"buckets\": {", strlen("{\"buckets\": {"));
    for (size_t k = 0; k < nr; k++) {
        snprintf(num, sizeof num, "%s\"%zu\": {\"resolution\": [%d, %d], \"count\": %lld}", k ? ", " : "", k, r[k][0],
                 r[k][1], (long long)cnt[k]);
        sd_strbuf_add(&b, num, strlen(num));
    }
    sd_strbuf_add(&b, "}, \"mean_img_ar_error\": ", strlen("}, \"mean_img_ar_error\": "));
    if (ne) sd_py_float(sd_bucket_mean(err, ne), num, sizeof num);
    else snprintf(num, sizeof num, "0");
    sd_strbuf_add(&b, num, strlen(num));
    sd_strbuf_add(&b, "}", 1);
done:
    free(r), free(cnt), free(err);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

int sd_train_datasets_meta(const sd_train_data *d, const sd_batch_plan *plan, char **datasets, char **tag_frequency,
                           char **dataset_dirs)
{
    if (!d->has_config) return sd_err(SD_EINVAL, "no dataset config for the metadata");
    int nd = jv_array_length(jv_copy(d->config));
    sd_ss_dataset_meta *ds = calloc((size_t)(nd > 0 ? nd : 1), sizeof *ds);
    sd_ss_caption_src *caps = calloc(d->n * 2 + 1024, sizeof *caps);
    size_t ncap = 0, capcap = d->n * 2 + 1024;
    char **binfo = calloc((size_t)(nd > 0 ? nd : 1), sizeof *binfo);
    jv *keep = calloc((size_t)(nd > 0 ? nd : 1) * 2, sizeof *keep);
    int rc = SD_OK, nkeep = 0;
    if (!ds || !caps || !binfo || !keep) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int di = 0; di < nd && !rc; di++) {
        jv o = jv_array_get(jv_copy(d->config), di);
        keep[nkeep++] = o;   /* keeps the strings below alive */
        jv subs = pget(o, "subsets");
        keep[nkeep++] = subs;
        int method = (int)pint(o, "method", 0);
        int dix = (int)pint(o, "index", di);
        jv dp = pget(o, "params");
        jv_free(dp);   /* o holds it */
        sd_ss_dataset_meta *D = &ds[di];
        /* train_network.py writes a ControlNetDataset (not a DreamBoothDataset) from its own fields:
           enable_bucket False, min/max_bucket_reso and bucket_info None, tag_frequency {}, subsets []
           (its subsets, buckets and captions live in its DreamBooth delegate); the image counts and
           the resolution are real */
        D->controlnet = method == SD_DC_CONTROLNET;
        D->is_dreambooth = method != SD_DC_FINETUNE && !D->controlnet;
        D->batch_size = pint(dp, "batch_size", 1);
        D->enable_bucket = pbool(dp, "enable_bucket") && !D->controlnet;
        D->min_bucket_reso = pint(dp, "min_bucket_reso", 256);
        D->max_bucket_reso = pint(dp, "max_bucket_reso", 1024);
        D->resize_interpolation = pstr(dp, "resize_interpolation");
        jv res = pget(dp, "resolution");
        if (jv_get_kind(res) == JV_KIND_ARRAY && jv_array_length(jv_copy(res)) >= 2) {
            jv a = jv_array_get(jv_copy(res), 0), b = jv_array_get(jv_copy(res), 1);
            D->width = jv_get_kind(a) == JV_KIND_NUMBER ? (int)jv_number_value(a) : 0;
            D->height = jv_get_kind(b) == JV_KIND_NUMBER ? (int)jv_number_value(b) : 0;
            jv_free(a), jv_free(b);
        } else if (jv_get_kind(res) == JV_KIND_NUMBER) {
            D->width = D->height = (int)jv_number_value(res);
        }
        jv_free(res);
        int ns = jv_array_length(jv_copy(subs));
        sd_ss_subset_meta *S = calloc((size_t)(ns > 0 ? ns : 1), sizeof *S);
        if (!S) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        D->subsets = S;
        D->captions = caps + ncap;
        /* the reference keeps only subsets with images, in config order */
        for (int si = 0; si < ns; si++) {
            jv sp = jv_array_get(jv_copy(subs), si);
            jv_free(sp);   /* subs holds it */
            int six = (int)pint(sp, " index", si);
            int64_t cnt = 0;
            for (size_t i = 0; i < d->n; i++)
                if (d->s[i].dataset == dix && d->s[i].subset == six) cnt++;
            if (!cnt) continue;
            if (D->controlnet) {
                D->num_train_images += cnt * pint(sp, "num_repeats", 1);
                continue;
            }
            sd_ss_subset_meta *m = &S[D->nsubsets++];
            m->img_count = cnt;
            m->num_repeats = pint(sp, "num_repeats", 1);
            m->color_aug = pbool(sp, "color_aug");
            m->flip_aug = pbool(sp, "flip_aug");
            m->random_crop = pbool(sp, "random_crop");
            m->shuffle_caption = pbool(sp, "shuffle_caption");
            m->keep_tokens = pint(sp, "keep_tokens", 0);
            m->keep_tokens_separator = pstr(sp, "keep_tokens_separator");
            m->secondary_separator = pstr(sp, "secondary_separator");
            m->enable_wildcard = pbool(sp, "enable_wildcard");
            m->caption_prefix = pstr(sp, "caption_prefix");
            m->caption_suffix = pstr(sp, "caption_suffix");
            m->resize_interpolation = pstr(sp, "resize_interpolation");
            m->image_dir = pstr(sp, "image_dir");
            m->class_tokens = pstr(sp, "class_tokens");
            m->is_reg = pbool(sp, "is_reg");
            m->metadata_file = pstr(sp, "metadata_file");
            if (m->is_reg && D->is_dreambooth) D->num_reg_images += cnt * m->num_repeats;
            else D->num_train_images += cnt * m->num_repeats;
            /* set_tag_frequency(basename(image_dir or metadata_file), captions or tags) */
            const char *src = D->is_dreambooth ? m->image_dir : m->metadata_file;
            const char *dir = src ? py_basename(src) : "";
            if (ncap + 1 + (size_t)cnt > capcap) {
                rc = sd_err(SD_EINVAL, "too many captions for the metadata");
                break;
            }
            caps[ncap++] = (sd_ss_caption_src){ dir, "" };
            for (size_t i = 0; i < d->n; i++) {
                const sd_train_sample *s = &d->s[i];
                if (s->dataset != dix || s->subset != six) continue;
                const char *t = D->is_dreambooth ? s->caption : s->tags;
                if (t) caps[ncap++] = (sd_ss_caption_src){ dir, t };
            }
        }
        D->ncaptions = (size_t)(caps + ncap - D->captions);
        if (!rc && D->enable_bucket) {
            binfo[di] = bucket_info_json(d, plan, dix);
            if (!binfo[di]) rc = sd_err(SD_ENOMEM, "out of memory");
            D->bucket_info_json = binfo[di];
        }
    }
    if (!rc) rc = sd_ss_datasets_json(ds, nd, datasets, tag_frequency, dataset_dirs);
out:
    for (int i = 0; ds && i < nd; i++) free((void *)ds[i].subsets);
    for (int i = 0; binfo && i < nd; i++) free(binfo[i]);
    for (int i = 0; i < nkeep; i++) jv_free(keep[i]);
    free(ds), free(caps), free(binfo), free(keep);
    return rc;
}
