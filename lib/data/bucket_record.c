/* Bucket settings and plans from records (see bucket_record.h). */
#include "data/bucket_record.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jsonl.h"

/* A record's resolution: a number (square) or [w, h]; 1 when present, 0 when absent/null. */
static int get_resolution(jv rec, int *w, int *h)
{
    jv v = jv_object_get(jv_copy(rec), jv_string("resolution"));
    jv_kind k = jv_get_kind(v);
    int rc;
    if (k == JV_KIND_NULL || k == JV_KIND_INVALID) {
        rc = 0;
    } else if (k == JV_KIND_NUMBER) {
        double d = jv_number_value(v);
        if (d != floor(d) || d < 1 || d > 65536)
            rc = sd_err(SD_EFORMAT, "key 'resolution': expected an integer 1..65536 or [w,h], got %g", d);
        else {
            *w = *h = (int)d;
            rc = 1;
        }
    } else if (k == JV_KIND_ARRAY) {
        int wh[2];
        rc = sd_jsonl_get_ints(rec, "resolution", wh, 2);
        if (rc == 1 && (wh[0] < 1 || wh[1] < 1 || wh[0] > 65536 || wh[1] > 65536))
            rc = sd_err(SD_EFORMAT, "key 'resolution': sides must be 1..65536, got [%d,%d]", wh[0], wh[1]);
        if (rc == 1) {
            *w = wh[0];
            *h = wh[1];
        }
    } else {
        rc = sd_err(SD_EFORMAT, "key 'resolution': expected an integer or [w,h], got %s", sd_jv_kind_name(v));
    }
    jv_free(v);
    return rc;
}

int sd_bucket_record_image(jv rec, char **out)
{
    const char *img;
    int rc = sd_jsonl_get_str(rec, "image", &img);
    if (rc < 0) return rc;
    if (rc == 0) return sd_err(SD_EFORMAT, "key 'image': missing");
    if (!*img) return sd_err(SD_EFORMAT, "key 'image': empty path");
    if (!(*out = strdup(img))) return sd_err(SD_ENOMEM, "out of memory");
    return SD_OK;
}

int sd_bucket_record_filter(jv rec, int *filter)
{
    const char *name;
    int rc = sd_jsonl_get_str(rec, "resize_interpolation", &name);
    if (rc <= 0) return rc;
    if ((rc = sd_bucket_interp_from_name(name, filter)) < 0) return sd_err_prefix(rc, "key 'resize_interpolation'");
    return 1;
}

int sd_bucket_record_cfg(jv rec, const sd_bucket_cfg *def, int have_def_res, sd_bucket_cfg *out)
{
    sd_bucket_cfg c = *def;
    int have = have_def_res, rc, b;
    if ((rc = get_resolution(rec, &c.res_w, &c.res_h)) < 0) return rc;
    if (rc == 1) have = 1;
    if ((rc = sd_jsonl_get_bool(rec, "enable_bucket", &b)) < 0) return rc;
    if (rc == 1) c.enable_bucket = b;
    if ((rc = sd_jsonl_get_bool(rec, "bucket_no_upscale", &b)) < 0) return rc;
    if (rc == 1) c.no_upscale = b;
    if ((rc = sd_jsonl_get_int_range(rec, "min_bucket_reso", 0, 1 << 16, &c.min_reso)) < 0) return rc;
    if ((rc = sd_jsonl_get_int_range(rec, "max_bucket_reso", 1, 1 << 16, &c.max_reso)) < 0) return rc;
    if ((rc = sd_jsonl_get_int_range(rec, "bucket_reso_steps", 1, 4096, &c.steps)) < 0) return rc;
    *out = c;
    return have ? 1 : 0;
}

int sd_bucket_record_cfg_opts(jv rec, const sd_bucket_opts *o, sd_bucket_cfg *out)
{
    sd_bucket_cfg def = {.enable_bucket = o->enable_bucket && !o->no_bucket, .min_reso = o->min_reso,
                         .max_reso = o->max_reso, .steps = o->steps, .no_upscale = o->no_upscale};
    if (o->resolution.n) {
        def.res_w = (int)o->resolution.i[0];
        def.res_h = (int)o->resolution.i[o->resolution.n > 1 ? 1 : 0];
    }
    return sd_bucket_record_cfg(rec, &def, o->resolution.n > 0, out);
}

int sd_bucket_record_plan(jv rec, sd_bucket_plan *p)
{
    int bk[2], sz[2], rs[2];
    int rc = sd_jsonl_get_size2(rec, "bucket", bk);
    if (rc <= 0) return rc;
    if ((rc = sd_jsonl_get_size2(rec, "image_size", sz)) <= 0)
        return rc < 0 ? rc : sd_err(SD_EFORMAT, "key 'image_size': missing (the record has a bucket)");
    if ((rc = sd_jsonl_get_size2(rec, "resized", rs)) <= 0)
        return rc < 0 ? rc : sd_err(SD_EFORMAT, "key 'resized': missing (the record has a bucket)");
    if (rs[0] < bk[0] || rs[1] < bk[1])
        return sd_err(SD_EFORMAT, "key 'resized': [%d,%d] is smaller than the bucket [%d,%d]", rs[0], rs[1], bk[0], bk[1]);
    jv v = jv_object_get(jv_copy(rec), jv_string("crop_ltrb"));
    int ok = jv_get_kind(v) == JV_KIND_ARRAY && jv_array_length(jv_copy(v)) == 4;
    double c[4] = {0, 0, 0, 0};
    for (int i = 0; ok && i < 4; i++) {
        jv e = jv_array_get(jv_copy(v), i);
        if (jv_get_kind(e) == JV_KIND_NUMBER)
            c[i] = jv_number_value(e);
        else
            ok = 0;
        jv_free(e);
    }
    jv_free(v);
    if (!ok) return sd_err(SD_EFORMAT, "key 'crop_ltrb': expected [left,top,right,bottom] numbers");
    double ar = 0;
    if ((rc = sd_jsonl_get_num(rec, "ar_error", &ar)) < 0) return rc;
    p->image_w = sz[0];
    p->image_h = sz[1];
    p->bucket_w = bk[0];
    p->bucket_h = bk[1];
    p->resized_w = rs[0];
    p->resized_h = rs[1];
    p->trim_x = (rs[0] - bk[0]) / 2;
    p->trim_y = (rs[1] - bk[1]) / 2;
    p->ar_error = ar;
    for (int i = 0; i < 4; i++) p->crop_ltrb[i] = c[i];
    return 1;
}

int sd_bucket_cfg_same(const sd_bucket_cfg *x, const sd_bucket_cfg *y)
{
    if (x->res_w != y->res_w || x->res_h != y->res_h || x->enable_bucket != y->enable_bucket) return 0;
    if (!x->enable_bucket) return 1;
    return x->min_reso == y->min_reso && x->max_reso == y->max_reso && x->steps == y->steps &&
           x->no_upscale == y->no_upscale;
}

sd_bucket_set_entry *sd_bucket_sets_get(sd_bucket_sets *s, const sd_bucket_cfg *cfg, int *created)
{
    if (created) *created = 0;
    for (int i = 0; i < s->n; i++)
        if (sd_bucket_cfg_same(&s->e[i]->cfg, cfg)) return s->e[i];
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 16;
        sd_bucket_set_entry **ne = realloc(s->e, (size_t)nc * sizeof *ne);
        if (!ne) {
            sd_err(SD_ENOMEM, "out of memory");
            return NULL;
        }
        s->e = ne;
        s->cap = nc;
    }
    sd_bucket_set_entry *e = calloc(1, sizeof *e);
    if (!e) {
        sd_err(SD_ENOMEM, "out of memory");
        return NULL;
    }
    e->cfg = *cfg;
    e->index = s->n;
    if (sd_bucket_set_init(&e->set, cfg) == SD_OK) {
        e->ok = 1;
    } else if (!(e->err = strdup(sd_errmsg()))) {
        free(e);
        sd_err(SD_ENOMEM, "out of memory");
        return NULL;
    }
    s->e[s->n++] = e;
    if (created) *created = 1;
    return e;
}

void sd_bucket_sets_free(sd_bucket_sets *s)
{
    for (int i = 0; i < s->n; i++) {
        sd_bucket_set_free(&s->e[i]->set);
        free(s->e[i]->err);
        free(s->e[i]);
    }
    free(s->e);
    *s = (sd_bucket_sets){0};
}
