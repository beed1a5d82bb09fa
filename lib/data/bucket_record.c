/* Bucket settings and plans from records (see bucket_record.h). */
#include "data/bucket_record.h"

#include <math.h>

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

static int get_int_range(jv rec, const char *key, int lo, int hi, int *out)
{
    long long v;
    int rc = sd_jsonl_get_int(rec, key, &v);
    if (rc == 1 && (v < lo || v > hi)) return sd_err(SD_EFORMAT, "key '%s': %lld is out of range [%d, %d]", key, v, lo, hi);
    if (rc == 1) *out = (int)v;
    return rc;
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
    if ((rc = get_int_range(rec, "min_bucket_reso", 0, 1 << 16, &c.min_reso)) < 0) return rc;
    if ((rc = get_int_range(rec, "max_bucket_reso", 1, 1 << 16, &c.max_reso)) < 0) return rc;
    if ((rc = get_int_range(rec, "bucket_reso_steps", 1, 4096, &c.steps)) < 0) return rc;
    *out = c;
    return have ? 1 : 0;
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
