/* Records of a resolved dataset config: image discovery, DreamBooth captions, cache_info,
 * conditioning images, fine-tuning metadata. See dataset_records.h. */
#include "data/dataset_records.h"

#include "base/error.h"
#include "base/fileio.h"
#include "data/images.h"
#include "data/metadata.h"
#include "io/image.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void fail(const sd_dataset_sink *K, const char *src, long line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(const sd_dataset_sink *K, const char *src, long line, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (K->error) K->error(K->ctx, src, line, buf);
}

static void warnf(const sd_dataset_sink *K, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(const sd_dataset_sink *K, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (K->warning) K->warning(K->ctx, buf);
}

static jv add_params(jv rec, const sd_dc_dataset *d, const sd_dc_subset *s)
{
    rec = jv_object_set(rec, jv_string("dataset"), jv_number(d->index));
    rec = jv_object_set(rec, jv_string("subset"), jv_number(s->index));
    rec = jv_object_set(rec, jv_string("method"), jv_string(sd_dc_method_name(d->method)));
    for (const char *const *k = sd_dc_record_keys(); *k; k++) {
        jv v = jv_object_get(jv_copy(s->params), jv_string(*k));
        if (!jv_is_valid(v) || jv_get_kind(v) == JV_KIND_NULL) {
            jv_free(v);
            v = jv_object_get(jv_copy(d->params), jv_string(*k));
        }
        if (jv_is_valid(v) && jv_get_kind(v) != JV_KIND_NULL) rec = jv_object_set(rec, jv_string(*k), v);
        else jv_free(v);
    }
    return rec;
}

static const char *pstr(jv params, const char *k)
{
    jv v = jv_object_get(jv_copy(params), jv_string(k));
    const char *r = jv_get_kind(v) == JV_KIND_STRING ? jv_string_value(v) : NULL;
    jv_free(v);   /* the string lives on inside params */
    return r;
}
static int pbool(jv params, const char *k)
{
    jv v = jv_object_get(jv_copy(params), jv_string(k));
    int b = jv_get_kind(v) == JV_KIND_TRUE;
    jv_free(v);
    return b;
}

/* The key the reference pairs conditioning images by: the absolute path without extension
 * (os.path.abspath; here realpath of the directory, which also resolves symbolic links) + stem. */
static char *cond_key(const char *dir, const char *stem)
{
    char *real = realpath(dir, NULL), *k = NULL;
    if (asprintf(&k, "%s/%s", real ? real : dir, stem) < 0) k = NULL;
    free(real);
    return k;
}

/* conditioning images of a ControlNet subset, by stem */
static int cond_map_(const char *dir, sd_path_list *l, sd_strmap *m)
{
    int rc = sd_img_list(dir, 0, l);
    for (size_t i = 0; rc == SD_OK && i < l->n; i++) {
        char *st = sd_img_stem(l->paths[i]);
        if (!st) return sd_err(SD_ENOMEM, "out of memory");
        if (!sd_strmap_get(m, st, NULL)) rc = sd_strmap_put(m, st, i);
        free(st);
    }
    return rc;
}

static int db_subset(const sd_dataset_sink *K, const sd_dataset_config *cfg, const sd_dc_dataset *d, const sd_dc_subset *s,
                     sd_strmap *paired)
{
    const char *dir = pstr(s->params, "image_dir");
    const char *ext = pstr(s->params, "caption_extension");
    const char *ct = pstr(s->params, "class_tokens");
    int wildcard = pbool(s->params, "enable_wildcard");
    int cache = pbool(s->params, "cache_info");
    char where[64];
    snprintf(where, sizeof where, "datasets[%d].subsets[%d]", d->index, s->index);
    char src[1200];
    snprintf(src, sizeof src, "%s:%d", cfg->name, s->line);
    const char *srcname = s->line ? src : cfg->name;

    sd_path_list l = {0};
    jv cache_meta = jv_invalid();
    char *cache_path = NULL;
    if (cache) {
        if (asprintf(&cache_path, "%s/metadata_cache.json", dir) < 0) return sd_err(SD_ENOMEM, "out of memory");
        struct stat st;
        if (stat(cache_path, &st) == 0) {
            sd_meta m;
            if (sd_meta_load(cache_path, &m) < 0) {
                fail(K, srcname, 0, "%s: %s", where, sd_errmsg());
                free(cache_path);
                return SD_OK;
            }
            cache_meta = jv_object();
            for (size_t i = 0; i < m.n; i++) {
                if (m.e[i].err) continue;
                sd_path_list_add(&l, m.e[i].key);
                cache_meta = jv_object_set(cache_meta, jv_string(m.e[i].key), jv_copy(m.e[i].value));
            }
            sd_meta_free(&m);
        }
    }
    if (!jv_is_valid(cache_meta)) {
        int rc = sd_img_list(dir, 0, &l);
        if (rc < 0) {
            fail(K, srcname, 0, "%s.image_dir: %s", where, sd_errmsg());
            sd_path_list_free(&l);
            free(cache_path);
            return SD_OK;
        }
    }
    if (!l.n) {
        warnf(K, "%s: %s: no images in %s; subset ignored", cfg->name, where, dir);
        free(cache_path);
        jv_free(cache_meta);
        return SD_OK;
    }
    sd_path_list cl = {0};
    sd_strmap cm = {0};
    const char *cdir = d->method == SD_DC_CONTROLNET ? pstr(s->params, "conditioning_data_dir") : NULL;
    if (cdir) {
        if (cond_map_(cdir, &cl, &cm) < 0) {
            fail(K, srcname, 0, "%s.conditioning_data_dir: %s", where, sd_errmsg());
            sd_path_list_free(&l);
            free(cache_path);
            return SD_OK;
        }
    }
    jv new_cache = cache && !jv_is_valid(cache_meta) ? jv_object() : jv_invalid();
    int cache_ok = 1, rc = SD_OK;
    long nocap = 0;
    char nocap_list[512] = "";
    for (size_t i = 0; i < l.n && rc == SD_OK; i++) {
        const char *img = l.paths[i];
        jv rec = JV_OBJECT(jv_string("image"), jv_string(img));
        if (jv_is_valid(cache_meta)) {
            jv e = jv_object_get(jv_copy(cache_meta), jv_string(img));
            jv c = jv_object_get(jv_copy(e), jv_string("caption"));
            jv r = jv_object_get(jv_copy(e), jv_string("resolution"));
            rec = jv_object_set(rec, jv_string("caption"), jv_get_kind(c) == JV_KIND_STRING ? c : (jv_free(c), jv_string("")));
            if (jv_get_kind(r) == JV_KIND_ARRAY) rec = jv_object_set(rec, jv_string("image_size"), r);
            else jv_free(r);
            jv_free(e);
        } else {
            char *cap = NULL, *used = NULL;
            int f = sd_db_caption(img, ext ? ext : ".caption", wildcard, &cap, &used);
            if (f < 0) {
                fail(K, img, 0, "%s", sd_errmsg());
                jv_free(rec);
                cache_ok = 0;
                continue;
            }
            if (f == 0) {
                if (ct) rec = jv_object_set(rec, jv_string("caption"), jv_string(ct));
                else {
                    rec = jv_object_set(rec, jv_string("caption"), jv_string(""));
                    if (nocap++ < 5) {
                        size_t ul = strlen(nocap_list);
                        snprintf(nocap_list + ul, sizeof nocap_list - ul, "%s%s", ul ? ", " : "", img);
                    }
                }
            } else rec = jv_object_set(rec, jv_string("caption"), jv_string(cap));
            free(cap);
            free(used);
            if (jv_is_valid(new_cache)) {
                int w, h;
                if (sd_image_probe(img, &w, &h, NULL) == SD_OK) {
                    jv sz = JV_ARRAY(jv_number(w), jv_number(h));
                    rec = jv_object_set(rec, jv_string("image_size"), jv_copy(sz));
                    new_cache = jv_object_set(new_cache, jv_string(img),
                                              JV_OBJECT(jv_string("caption"), jv_object_get(jv_copy(rec), jv_string("caption")),
                                                        jv_string("resolution"), sz));
                } else {
                    fail(K, img, 0, "%s", sd_errmsg());
                    jv_free(rec);
                    cache_ok = 0;
                    continue;
                }
            }
        }
        if (cdir) {
            char *st = sd_img_stem(img);
            size_t ci;
            if (st && sd_strmap_get(&cm, st, &ci)) {
                char *pk = cond_key(cdir, st);
                if (!pk || sd_strmap_put(paired, pk, 1) < 0) {
                    free(pk);
                    free(st);
                    jv_free(rec);
                    rc = sd_err(SD_ENOMEM, "out of memory");
                    break;
                }
                free(pk);
                rec = jv_object_set(rec, jv_string("conditioning_image"), jv_string(cl.paths[ci]));
                /* the reference resizes conditioning images with the dataset's resize_interpolation */
                const char *ri = pstr(d->params, "resize_interpolation");
                if (ri) rec = jv_object_set(rec, jv_string("conditioning_resize_interpolation"), jv_string(ri));
                free(st);
            } else {
                fail(K, img, 0, "no conditioning image named %s.* in %s", st ? st : "?", cdir);
                free(st);
                jv_free(rec);
                continue;
            }
        }
        rec = add_params(rec, d, s);
        rc = K->record(K->ctx, rec, img, 0);
    }
    if (nocap)
        warnf(K, "%s: %ld image(s) have neither a caption file (%s) nor class_tokens; their caption is empty: %s%s",
                dir, nocap, ext ? ext : ".caption", nocap_list, nocap > 5 ? ", ..." : "");
    if (jv_is_valid(new_cache) && cache_ok && rc == SD_OK) {
        char *text = NULL;
        size_t n = 0;
        if (sd_json_dump_py(new_cache, 0, &text, &n) == SD_OK) {
            if (sd_write_file_atomic(cache_path, text, n) < 0) warnf(K, "%s", sd_errmsg());
        }
        free(text);
    }
    jv_free(new_cache);
    jv_free(cache_meta);
    free(cache_path);
    sd_path_list_free(&cl);
    sd_strmap_free(&cm);
    sd_path_list_free(&l);
    return rc;
}

static int ft_subset(const sd_dataset_sink *K, const sd_dc_dataset *d, const sd_dc_subset *s)
{
    const char *mf = pstr(s->params, "metadata_file");
    const char *dir = pstr(s->params, "image_dir");
    sd_meta m;
    int rc = sd_meta_load(mf, &m);
    if (rc < 0) return rc;   /* fatal: the dataset cannot be read */
    for (size_t i = 0; i < m.n && rc == SD_OK; i++) {
        sd_meta_entry *e = &m.e[i];
        if (e->err) { K->error(K->ctx, mf, e->line, e->err); continue; }
        char *img = NULL;
        int f = sd_meta_find_image(e->key, dir, &img);
        if (f < 0) { rc = f; break; }
        if (f == 0) {
            fail(K, mf, e->line, "entry '%s': image not found%s%s", e->key, dir ? " in " : "", dir ? dir : "");
            continue;
        }
        jv rec = JV_OBJECT(jv_string("image"), jv_string(img));
        free(img);
        int it = jv_object_iter(e->value);
        while (jv_object_iter_valid(e->value, it)) {
            jv k = jv_object_iter_key(e->value, it);
            if (strcmp(jv_string_value(k), "image")) rec = jv_object_set(rec, k, jv_object_iter_value(e->value, it));
            else jv_free(k);
            it = jv_object_iter_next(e->value, it);
        }
        rec = add_params(rec, d, s);
        rc = K->record(K->ctx, rec, mf, e->line);
    }
    sd_meta_free(&m);
    return rc;
}

/* A ControlNet dataset's conditioning images without a training image, once all its subsets are
 * listed: as the reference, over the whole dataset (a conditioning image is paired when any image
 * of the dataset took its absolute path without extension: a.png beside the used a.jpg is paired,
 * and subsets sharing a conditioning_data_dir pair each other's images); each reported once. */
static int cn_extra(const sd_dataset_sink *K, const sd_dc_dataset *d, const sd_strmap *paired)
{
    sd_strmap seen = {0};
    int rc = SD_OK;
    for (int j = 0; j < d->nsubsets && rc == SD_OK; j++) {
        const char *cdir = pstr(d->subsets[j].params, "conditioning_data_dir");
        const char *idir = pstr(d->subsets[j].params, "image_dir");
        if (!cdir) continue;
        sd_path_list cl = {0};
        if (sd_img_list(cdir, 0, &cl) < 0) {   /* reported with the subset */
            sd_path_list_free(&cl);
            continue;
        }
        for (size_t i = 0; i < cl.n && rc == SD_OK; i++) {
            char *st = sd_img_stem(cl.paths[i]);
            char *k = st ? cond_key(cdir, st) : NULL;
            char *full = k ? realpath(cl.paths[i], NULL) : NULL;
            if (k && !full) full = strdup(cl.paths[i]);
            if (!full) rc = sd_err(SD_ENOMEM, "out of memory");
            else if (!sd_strmap_get(paired, k, NULL) && !sd_strmap_get(&seen, full, NULL)) {
                if (sd_strmap_put(&seen, full, 1) < 0) rc = sd_err(SD_ENOMEM, "out of memory");
                else fail(K, cl.paths[i], 0, "conditioning image without a training image in %s", idir ? idir : "?");
            }
            free(st), free(k), free(full);
        }
        sd_path_list_free(&cl);
    }
    sd_strmap_free(&seen);
    return rc;
}

int sd_dataset_records(const sd_dataset_config *cfg, const sd_dataset_sink *sink)
{
    int rc = SD_OK;
    for (int i = 0; i < cfg->ndatasets && rc == SD_OK; i++) {
        const sd_dc_dataset *d = &cfg->datasets[i];
        sd_strmap paired = {0};
        for (int j = 0; j < d->nsubsets && rc == SD_OK; j++)
            rc = d->method == SD_DC_FINETUNE ? ft_subset(sink, d, &d->subsets[j])
                                             : db_subset(sink, cfg, d, &d->subsets[j], &paired);
        if (rc == SD_OK && d->method == SD_DC_CONTROLNET) rc = cn_extra(sink, d, &paired);
        sd_strmap_free(&paired);
    }
    return rc;
}

