#include "io/latent.h"

#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"
#include "io/npy.h"
#include "io/npz.h"
#include "io/zip.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sd_meta.json syntax check ------------------------------------------------------------ */

typedef struct {
    const unsigned char *p, *end;
} jscan;

static void j_ws(jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static int j_lit(jscan *s, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n)) return 0;
    s->p += n;
    return 1;
}

static int j_string(jscan *s)
{
    if (s->p >= s->end || *s->p != '"') return 0;
    s->p++;
    while (s->p < s->end) {
        unsigned c = *s->p;
        if (c == '"') {
            s->p++;
            return 1;
        }
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (++s->p >= s->end) return 0;
            c = *s->p++;
            if (c == 'u') {
                for (int i = 0; i < 4; i++, s->p++) {
                    if (s->p >= s->end) return 0;
                    unsigned h = *s->p;
                    if (!((h >= '0' && h <= '9') || ((h | 0x20) >= 'a' && (h | 0x20) <= 'f'))) return 0;
                }
            } else if (!strchr("\"\\/bfnrt", (int)c) || !c) {
                return 0;
            }
            continue;
        }
        if (c < 0x80) {
            s->p++;
            continue;
        }
        /* UTF-8: reject overlong forms, surrogates and code points above U+10FFFF. */
        int len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else return 0;
        if (s->end - s->p < len) return 0;
        if (s->p[1] < lo || s->p[1] > hi) return 0;
        for (int i = 2; i < len; i++)
            if (s->p[i] < 0x80 || s->p[i] > 0xBF) return 0;
        s->p += len;
    }
    return 0;
}

static int j_digits(jscan *s)
{
    const unsigned char *b = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    return s->p > b;
}

static int j_number(jscan *s)
{
    if (s->p < s->end && *s->p == '-') s->p++;
    if (s->p < s->end && *s->p == '0') s->p++;
    else if (!j_digits(s)) return 0;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!j_digits(s)) return 0;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (!j_digits(s)) return 0;
    }
    return 1;
}

static int j_value(jscan *s, int depth)
{
    if (depth > 64) return 0;
    j_ws(s);
    if (s->p >= s->end) return 0;
    unsigned c = *s->p;
    if (c == '{' || c == '[') {
        unsigned close = c == '{' ? '}' : ']';
        s->p++;
        j_ws(s);
        if (s->p < s->end && *s->p == close) {
            s->p++;
            return 1;
        }
        for (;;) {
            if (c == '{') {
                j_ws(s);
                if (!j_string(s)) return 0;
                j_ws(s);
                if (s->p >= s->end || *s->p != ':') return 0;
                s->p++;
            }
            if (!j_value(s, depth + 1)) return 0;
            j_ws(s);
            if (s->p >= s->end) return 0;
            if (*s->p == ',') {
                s->p++;
                continue;
            }
            if (*s->p == close) {
                s->p++;
                return 1;
            }
            return 0;
        }
    }
    if (c == '"') return j_string(s);
    if (c == '-' || (c >= '0' && c <= '9')) return j_number(s);
    return j_lit(s, "true") || j_lit(s, "false") || j_lit(s, "null");
}

int sd_latent_meta_validate(const char *text, size_t n)
{
    jscan s = {(const unsigned char *)text, (const unsigned char *)text + n};
    j_ws(&s);
    if (s.p >= s.end || *s.p != '{') return sd_err(SD_EFORMAT, "sd_meta.json is not a JSON object");
    if (!j_value(&s, 0)) return sd_err(SD_EFORMAT, "sd_meta.json: invalid JSON near byte %zu",
                                       (size_t)(s.p - (const unsigned char *)text));
    j_ws(&s);
    if (s.p != s.end) return sd_err(SD_EFORMAT, "sd_meta.json: trailing data after the object");
    return SD_OK;
}

/* ---- reading ------------------------------------------------------------------------------ */

enum { M_LATENTS, M_ORIG, M_CROP, M_FLIP, M_MASK, M_META, M_N };
static const char *const member_names[M_N] = {
    "latents.npy", "original_size.npy", "crop_ltrb.npy", "latents_flipped.npy", "alpha_mask.npy", "sd_meta.json",
};

void sd_latent_free(sd_latent_file *lf)
{
    if (!lf) return;
    free(lf->latents);
    free(lf->latents_flipped);
    free(lf->alpha_mask);
    free(lf->meta_json);
    memset(lf, 0, sizeof *lf);
}

static int shape_str(const sd_npy_array *x, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < x->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)x->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, x->ndim == 1 ? ",)" : ")");
    return 0;
}

static int to_i64(const sd_npy_array *x, const char *mname, size_t want, int64_t *out)
{
    char sh[64];
    if (x->dtype != SD_NPY_I8 && x->dtype != SD_NPY_I4)
        return sd_err(SD_EFORMAT, "member %s has dtype %s, expected int64", mname, sd_npy_dtype_name(x->dtype));
    if (x->ndim != 1 || (size_t)x->shape[0] != want) {
        shape_str(x, sh, sizeof sh);
        return sd_err(SD_EFORMAT, "member %s has shape %s, expected (%zu,)", mname, sh, want);
    }
    for (size_t i = 0; i < want; i++) {
        if (x->dtype == SD_NPY_I8) memcpy(&out[i], (const char *)x->data + 8 * i, 8);
        else {
            int32_t v;
            memcpy(&v, (const char *)x->data + 4 * i, 4);
            out[i] = v;
        }
    }
    return SD_OK;
}

/* latents, original_size, crop_ltrb → lf. */
static int take_required(sd_npy_array *m, sd_latent_file *lf)
{
    char sh[256];
    int rc;
    sd_npy_array *L = &m[M_LATENTS];
    if (L->ndim != 3) {
        shape_str(L, sh, sizeof sh);
        return sd_err(SD_EFORMAT, "member latents.npy has shape %s, expected 3-D (C, H/8, W/8)", sh);
    }
    for (int i = 0; i < 3; i++)
        if (L->shape[i] <= 0 || L->shape[i] > INT_MAX / 8) {
            shape_str(L, sh, sizeof sh);
            return sd_err(SD_EFORMAT, "member latents.npy has shape %s with an empty or oversized axis", sh);
        }
    lf->c = (int)L->shape[0];
    lf->h = (int)L->shape[1];
    lf->w = (int)L->shape[2];
    lf->half = L->dtype == SD_NPY_F2;
    if ((rc = sd_npy_take_f32(L, "latents.npy", &lf->latents))) return rc;
    if ((rc = to_i64(&m[M_ORIG], "original_size.npy", 2, lf->original_size))) return rc;
    return to_i64(&m[M_CROP], "crop_ltrb.npy", 4, lf->crop_ltrb);
}

static int read_archive(struct archive *a, const char *name, size_t max, sd_latent_file *lf)
{
    sd_npy_array m[M_N];
    int have[M_N] = {0}, rc = SD_OK, have_arr0 = 0;
    unsigned char *meta = NULL;
    memset(m, 0, sizeof m);
    memset(lf, 0, sizeof *lf);
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_OK) {  /* also ARCHIVE_WARN: be strict */
            char mb[512];
            rc = sd_err(SD_EFORMAT, "%s", sd_npz_archive_msg(a, mb, sizeof mb));
            goto out;
        }
        const char *pn = archive_entry_pathname(e);
        if (!pn) pn = "";
        int k = -1;
        for (int i = 0; i < M_N; i++)
            if (!strcmp(pn, member_names[i])) k = i;
        if (k < 0) {
            if (!strcmp(pn, "arr_0.npy")) have_arr0 = 1;
            continue;  /* unknown member (e.g. another tool's key): skipped */
        }
        if (have[k]) {
            rc = sd_err(SD_EFORMAT, "duplicate member %s", pn);
            goto out;
        }
        have[k] = 1;
        unsigned char *buf = NULL;
        size_t n = 0;
        rc = sd_npz_read_member(a, e, member_names[k], k == M_META ? SD_LATENT_MAX_META : max, &buf, &n);
        if (rc) goto out;
        if (k == M_META) {
            meta = buf;
            if (memchr(buf, 0, n)) {
                rc = sd_err(SD_EFORMAT, "sd_meta.json contains a NUL byte");
                goto out;
            }
            if ((rc = sd_latent_meta_validate((char *)buf, n))) goto out;
            continue;
        }
        rc = sd_npy_load(buf, n, &m[k]);
        free(buf);
        if (rc) {
            sd_err_prefix(rc, "member %s", member_names[k]);
            goto out;
        }
    }
    for (int i = 0; i < M_FLIP; i++)
        if (!have[i]) {
            if (i == M_LATENTS && have_arr0)
                rc = sd_err(SD_EUNSUPPORTED, "old-format npz (arr_0 only, before sd-scripts 0.7) is not supported; "
                            "re-encode the latents");
            else
                rc = sd_err(SD_EFORMAT, "missing member %s", member_names[i]);
            goto out;
        }
    rc = take_required(m, lf);
    if (rc) goto out;
    if (have[M_FLIP]) {
        sd_npy_array *F = &m[M_FLIP];
        if (F->ndim != 3 || F->shape[0] != lf->c || F->shape[1] != lf->h || F->shape[2] != lf->w) {
            char sh[256];
            shape_str(F, sh, sizeof sh);
            rc = sd_err(SD_EFORMAT, "member latents_flipped.npy has shape %s, expected (%d, %d, %d) like latents",
                        sh, lf->c, lf->h, lf->w);
            goto out;
        }
        if ((rc = sd_npy_take_f32(F, "latents_flipped.npy", &lf->latents_flipped))) goto out;
    }
    if (have[M_MASK]) {
        sd_npy_array *A = &m[M_MASK];
        if (A->ndim != 2 || A->shape[0] != (int64_t)lf->h * 8 || A->shape[1] != (int64_t)lf->w * 8) {
            char sh[256];
            shape_str(A, sh, sizeof sh);
            rc = sd_err(SD_EFORMAT, "member alpha_mask.npy has shape %s, expected (%d, %d) = latent size x 8",
                        sh, lf->h * 8, lf->w * 8);
            goto out;
        }
        lf->mask_h = lf->h * 8;
        lf->mask_w = lf->w * 8;
        if ((rc = sd_npy_take_f32(A, "alpha_mask.npy", &lf->alpha_mask))) goto out;
    }
    if (meta) {
        lf->meta_json = (char *)meta;
        meta = NULL;
    }
out:
    for (int i = 0; i < M_N; i++) sd_npy_array_free(&m[i]);
    free(meta);
    if (rc) {
        sd_latent_free(lf);
        sd_err_prefix(rc, "%s", name);
    }
    return rc;
}

int sd_latent_read_memory(const void *buf, size_t n, const char *name, const sd_latent_read_opts *opts,
                          sd_latent_file *lf)
{
    if (!name) name = "<memory>";
    memset(lf, 0, sizeof *lf);
    size_t max = opts && opts->max_member ? opts->max_member : SD_LATENT_MAX_MEMBER;
    struct archive *a;
    int rc = sd_npz_open_memory(buf, n, name, &a);
    if (rc) return rc;
    rc = read_archive(a, name, max, lf);
    archive_read_free(a);
    return rc;
}

int sd_latent_read(const char *path, const sd_latent_read_opts *opts, sd_latent_file *lf)
{
    memset(lf, 0, sizeof *lf);
    size_t max = opts && opts->max_member ? opts->max_member : SD_LATENT_MAX_MEMBER;
    struct archive *a;
    int rc = sd_npz_open_file(path, &a);
    if (rc) return rc;
    rc = read_archive(a, path, max, lf);
    archive_read_free(a);
    return rc;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int check_for_write(const sd_latent_file *lf)
{
    if (!lf->latents) return sd_err(SD_EINVAL, "latent file: no latents");
    if (lf->c <= 0 || lf->h <= 0 || lf->w <= 0 || lf->h > INT_MAX / 8 || lf->w > INT_MAX / 8)
        return sd_err(SD_EINVAL, "latent file: bad latent shape (%d, %d, %d)", lf->c, lf->h, lf->w);
    if (lf->alpha_mask && (lf->mask_h != lf->h * 8 || lf->mask_w != lf->w * 8))
        return sd_err(SD_EINVAL, "latent file: alpha mask is %dx%d, expected %dx%d (latent size x 8)",
                      lf->mask_h, lf->mask_w, lf->h * 8, lf->w * 8);
    if (lf->meta_json) return sd_latent_meta_validate(lf->meta_json, strlen(lf->meta_json));
    return SD_OK;
}

/* Encode a float array as <f4 or <f2 .npy and add it. */
static int add_float(sd_zip_writer *zw, int method, const char *mname, const float *x, int ndim,
                     const int64_t *shape, int half)
{
    size_t count = 1;
    for (int i = 0; i < ndim; i++) count *= (size_t)shape[i];
    void *npy = NULL, *tmp = NULL;
    size_t n;
    int rc;
    if (half) {
        tmp = malloc(count * sizeof(uint16_t));
        if (!tmp) return sd_err(SD_ENOMEM, "out of memory");
        sd_f32_to_f16_n(x, tmp, count);
        rc = sd_npy_encode(SD_NPY_F2, ndim, shape, tmp, &npy, &n);
        free(tmp);
    } else {
        rc = sd_npy_encode(SD_NPY_F4, ndim, shape, x, &npy, &n);
    }
    if (rc) return rc;
    sd_zip_part p = {npy, n};
    rc = sd_zip_add(zw, mname, method, &p, 1);
    free(npy);
    return rc;
}

static int add_i64(sd_zip_writer *zw, int method, const char *mname, const int64_t *x, int64_t len)
{
    void *npy;
    size_t n;
    int rc = sd_npy_encode(SD_NPY_I8, 1, &len, x, &npy, &n);
    if (rc) return rc;
    sd_zip_part p = {npy, n};
    rc = sd_zip_add(zw, mname, method, &p, 1);
    free(npy);
    return rc;
}

static int write_members(sd_zip_writer *zw, const sd_latent_file *lf, const sd_latent_write_opts *o)
{
    int method = o && o->compress == SD_LATENT_STORE ? SD_ZIP_STORE : SD_ZIP_ZSTD;
    int half = o && o->half;
    int64_t lshape[3] = {lf->c, lf->h, lf->w}, mshape[2] = {lf->mask_h, lf->mask_w};
    int rc = add_float(zw, method, member_names[M_LATENTS], lf->latents, 3, lshape, half);
    if (!rc) rc = add_i64(zw, method, member_names[M_ORIG], lf->original_size, 2);
    if (!rc) rc = add_i64(zw, method, member_names[M_CROP], lf->crop_ltrb, 4);
    if (!rc && lf->latents_flipped)
        rc = add_float(zw, method, member_names[M_FLIP], lf->latents_flipped, 3, lshape, half);
    if (!rc && lf->alpha_mask) rc = add_float(zw, method, member_names[M_MASK], lf->alpha_mask, 2, mshape, 0);
    if (!rc) {
        const char *meta = lf->meta_json ? lf->meta_json : "{\"format\":1}";
        sd_zip_part p = {meta, strlen(meta)};
        rc = sd_zip_add(zw, member_names[M_META], method, &p, 1);
    }
    if (!rc) rc = sd_zip_writer_finish(zw, NULL, NULL);
    return rc;
}

int sd_latent_write_memory(const sd_latent_file *lf, const sd_latent_write_opts *opts, void **out, size_t *n)
{
    int rc = check_for_write(lf);
    if (rc) return rc;
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, opts ? opts->zstd_level : 0);
    rc = write_members(&zw, lf, opts);
    if (!rc) {
        *out = zw.buf;
        *n = zw.len;
        zw.buf = NULL;
    }
    sd_zip_writer_free(&zw);
    return rc;
}

int sd_latent_write(const char *path, const sd_latent_file *lf, const sd_latent_write_opts *opts)
{
    int rc = check_for_write(lf);
    if (rc) return sd_err_prefix(rc, "%s", path);
    sd_atomic_file af;
    if ((rc = sd_atomic_open(&af, path))) return rc;
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, af.fp, opts ? opts->zstd_level : 0);
    rc = write_members(&zw, lf, opts);
    sd_zip_writer_free(&zw);
    if (rc) {
        sd_atomic_abort(&af);
        return sd_err_prefix(rc, "%s", path);
    }
    return sd_atomic_commit(&af);
}

int sd_latent_kohya_name(char *out, size_t cap, const char *image_path, int64_t orig_w, int64_t orig_h, int sdxl)
{
    /* os.path.splitext: the last '.' of the base name, unless the base name starts with it. */
    const char *base = strrchr(image_path, '/');
    base = base ? base + 1 : image_path;
    const char *dot = strrchr(base, '.');
    size_t stem = strlen(image_path);
    if (dot) {
        const char *b = base;
        while (*b == '.') b++;
        if (dot > b) stem = (size_t)(dot - image_path);
    }
    int n = snprintf(out, cap, "%.*s_%04lldx%04lld_%s.npz", (int)stem, image_path, (long long)orig_w,
                     (long long)orig_h, sdxl ? "sdxl" : "sd");
    if (n < 0 || (size_t)n >= cap) return sd_err(SD_ERANGE, "latent file name too long for %s", image_path);
    return n;
}
