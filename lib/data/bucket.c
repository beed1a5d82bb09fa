/* Aspect-ratio buckets (see bucket.h). The comments name the reference's expressions that each
 * step transcribes; kohya-ss/sd-scripts library/model_util.py and library/train_util.py. */
#include "data/bucket.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/resample.h"

/* Python's float floor division a // b (CPython float_floor_div), including its treatment of
 * the sign of zero and of results within rounding of an integer. */
static double py_floordiv(double vx, double wx)
{
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    if (mod != 0.0) {
        if ((wx < 0) != (mod < 0)) div -= 1.0;
    }
    double fl;
    if (div != 0.0) {
        fl = floor(div);
        if (div - fl > 0.5) fl += 1.0;
    } else {
        fl = copysign(0.0, vx / wx);
    }
    return fl;
}

/* Python's int(x + 0.5) for a finite non-negative double that fits int64. */
static int py_round_half(double x, int64_t *out)
{
    double v = x + 0.5;
    if (!(v >= 0.0) || v >= 9.2e18) return SD_ERANGE;
    *out = (int64_t)v; /* truncation toward zero, as int() does */
    return SD_OK;
}

static int cmp_reso(const void *a, const void *b)
{
    const int *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    if (x[1] != y[1]) return x[1] < y[1] ? -1 : 1;
    return 0;
}

int sd_bucket_resolutions(int max_w, int max_h, int min_size, int max_size, int divisible,
                          int (**out)[2], int *n)
{
    *out = NULL;
    *n = 0;
    if (max_w < 1 || max_h < 1) return sd_err(SD_EINVAL, "resolution %dx%d: sides must be >= 1", max_w, max_h);
    if (divisible < 1) return sd_err(SD_EINVAL, "bucket_reso_steps %d: must be >= 1", divisible);
    if (min_size < 1) return sd_err(SD_EINVAL, "min_bucket_reso %d: must be >= 1", min_size);
    int64_t area = (int64_t)max_w * max_h;
    /* at most 1 + 2 per width step */
    int64_t steps = max_size >= min_size ? ((int64_t)max_size - min_size) / divisible + 1 : 0;
    int64_t cap = 1 + 2 * steps;
    int(*r)[2] = malloc((size_t)cap * sizeof *r);
    if (!r) return sd_err(SD_ENOMEM, "out of memory");
    int k = 0;
    /* width = int(math.sqrt(max_area) // divisible) * divisible */
    double sq = py_floordiv(sqrt((double)area), (double)divisible);
    int64_t s = (int64_t)sq * divisible;
    r[k][0] = (int)s;
    r[k][1] = (int)s;
    k++;
    for (int64_t w = min_size; w <= max_size; w += divisible) {
        /* height = min(max_size, int((max_area // width) // divisible) * divisible) */
        int64_t h = (area / w) / divisible * divisible;
        if (h > max_size) h = max_size;
        if (h >= min_size) {
            r[k][0] = (int)w; r[k][1] = (int)h; k++;
            r[k][0] = (int)h; r[k][1] = (int)w; k++;
        }
    }
    qsort(r, (size_t)k, sizeof *r, cmp_reso);
    /* the reference collects a set: drop duplicates */
    int m = 0;
    for (int i = 0; i < k; i++)
        if (m == 0 || cmp_reso(r[m - 1], r[i]) != 0) {
            r[m][0] = r[i][0];
            r[m][1] = r[i][1];
            m++;
        }
    *out = r;
    *n = m;
    return SD_OK;
}

int sd_bucket_set_init(sd_bucket_set *s, const sd_bucket_cfg *cfg)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    if (cfg->res_w < 1 || cfg->res_h < 1)
        return sd_err(SD_EINVAL, "resolution %d,%d: both sides must be >= 1", cfg->res_w, cfg->res_h);
    if (!cfg->enable_bucket) {
        /* BucketManager(False, (W, H), None, None, None).set_predefined_resos([(W, H)]) */
        s->mode = SD_BUCKET_MODE_C;
        s->resos = malloc(sizeof *s->resos);
        s->ars = malloc(sizeof *s->ars);
        if (!s->resos || !s->ars) {
            sd_bucket_set_free(s);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        s->n = 1;
        s->resos[0][0] = cfg->res_w;
        s->resos[0][1] = cfg->res_h;
        s->ars[0] = (double)cfg->res_w / cfg->res_h;
        return SD_OK;
    }
    int d = cfg->steps;
    if (d < 1) return sd_err(SD_EINVAL, "bucket_reso_steps %d: must be >= 1", d);
    if (cfg->min_reso < 0 || cfg->max_reso < 0)
        return sd_err(SD_EINVAL, "min_bucket_reso %d / max_bucket_reso %d: must not be negative",
                      cfg->min_reso, cfg->max_reso);
    /* adjust_min_max_bucket_reso_by_steps */
    int64_t mn = cfg->min_reso, mx = cfg->max_reso;
    if (mn % d) {
        mn -= mn % d;
        s->min_adjusted = 1;
    }
    if (mx % d) {
        mx += d - mx % d;
        s->max_adjusted = 1;
    }
    if (mx > 1 << 30) return sd_err(SD_EINVAL, "max_bucket_reso %d: too large", cfg->max_reso);
    s->min_reso = (int)mn;
    s->max_reso = (int)mx;
    int rmin = cfg->res_w < cfg->res_h ? cfg->res_w : cfg->res_h;
    int rmax = cfg->res_w > cfg->res_h ? cfg->res_w : cfg->res_h;
    if (rmin < mn)
        return sd_err(SD_EINVAL, "min_bucket_reso %lld is larger than the resolution's smaller side %d",
                      (long long)mn, rmin);
    if (rmax > mx)
        return sd_err(SD_EINVAL, "max_bucket_reso %lld is smaller than the resolution's larger side %d",
                      (long long)mx, rmax);
    if (mn < 1)
        return sd_err(SD_EINVAL,
                      "min_bucket_reso %d rounds down to 0 with bucket_reso_steps %d (the reference "
                      "divides by zero here); use at least %d",
                      cfg->min_reso, d, d);
    if (cfg->no_upscale) {
        s->mode = SD_BUCKET_MODE_B;
        return SD_OK;
    }
    s->mode = SD_BUCKET_MODE_A;
    int rc = sd_bucket_resolutions(cfg->res_w, cfg->res_h, (int)mn, (int)mx, d, &s->resos, &s->n);
    if (rc < 0) return rc;
    s->ars = malloc((size_t)s->n * sizeof *s->ars);
    if (!s->ars) {
        sd_bucket_set_free(s);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < s->n; i++) s->ars[i] = (double)s->resos[i][0] / s->resos[i][1];
    return SD_OK;
}

void sd_bucket_set_free(sd_bucket_set *s)
{
    free(s->resos);
    free(s->ars);
    s->resos = NULL;
    s->ars = NULL;
    s->n = 0;
}

void sd_bucket_crop_ltrb(int bw, int bh, int w, int h, double ltrb[4])
{
    double bucket_ar = (double)bw / bh;
    double image_ar = (double)w / h;
    if (bucket_ar > image_ar) {
        /* resized_width = bucket_reso[1] * image_ar (float), resized_height = bucket_reso[1] (int) */
        double rw = (double)bh * image_ar;
        double left = py_floordiv((double)bw - rw, 2.0);
        double top = 0.0; /* (bh - bh) // 2 in ints */
        ltrb[0] = left;
        ltrb[1] = top;
        ltrb[2] = left + rw;
        ltrb[3] = top + bh;
    } else {
        double rh = (double)bw / image_ar;
        double left = 0.0;
        double top = py_floordiv((double)bh - rh, 2.0);
        ltrb[0] = left;
        ltrb[1] = top;
        ltrb[2] = left + bw;
        ltrb[3] = top + rh;
    }
}

/* round_to_steps: x = int(x + 0.5); x - x % steps */
static int round_to_steps(double x, int d, int64_t *out)
{
    int64_t v;
    if (py_round_half(x, &v) < 0) return SD_ERANGE;
    *out = v - v % d;
    return SD_OK;
}

int sd_bucket_select(const sd_bucket_set *s, int w, int h, sd_bucket_plan *p)
{
    memset(p, 0, sizeof *p);
    if (w < 1 || h < 1) return sd_err(SD_EINVAL, "image size %dx%d: sides must be >= 1", w, h);
    p->image_w = w;
    p->image_h = h;
    double ar = (double)w / h;
    int64_t bw, bh, rw, rh;
    if (s->mode != SD_BUCKET_MODE_B) {
        int id = -1;
        for (int i = 0; i < s->n; i++)
            if (s->resos[i][0] == w && s->resos[i][1] == h) {
                id = i;
                break;
            }
        if (id < 0) {
            /* np.abs(predefined_aspect_ratios - aspect_ratio).argmin(): first minimum */
            double best = 0;
            for (int i = 0; i < s->n; i++) {
                double e = fabs(s->ars[i] - ar);
                if (id < 0 || e < best) {
                    best = e;
                    id = i;
                }
            }
        }
        if (id < 0) return sd_err(SD_ESTATE, "bucket set has no buckets");
        bw = s->resos[id][0];
        bh = s->resos[id][1];
        double ar_reso = (double)bw / bh;
        double scale = ar > ar_reso ? (double)bh / h : (double)bw / w;
        if (py_round_half((double)w * scale, &rw) < 0 || py_round_half((double)h * scale, &rh) < 0)
            return sd_err(SD_ERANGE, "image size %dx%d: resized size overflows", w, h);
    } else {
        int d = s->cfg.steps;
        int64_t max_area = (int64_t)s->cfg.res_w * s->cfg.res_h;
        if ((int64_t)w * h > max_area) {
            double rwf = sqrt((double)max_area * ar);
            double rhf = (double)max_area / rwf;
            if (!(fabs(rwf / rhf - ar) < 1e-2))
                return sd_err(SD_EINVAL, "image size %dx%d: aspect ratio cannot be kept (the reference "
                              "asserts 'aspect is illegal')", w, h);
            int64_t bw1, bh1, bh2, bw2;
            if (round_to_steps(rwf, d, &bw1) < 0 || round_to_steps((double)bw1 / ar, d, &bh1) < 0 ||
                round_to_steps(rhf, d, &bh2) < 0 || round_to_steps((double)bh2 * ar, d, &bw2) < 0)
                return sd_err(SD_ERANGE, "image size %dx%d: resized size overflows", w, h);
            if (bh1 == 0 || bh2 == 0)
                return sd_err(SD_EINVAL,
                              "image size %dx%d: aspect ratio too extreme for resolution %dx%d with "
                              "bucket_reso_steps %d and bucket_no_upscale (a bucket side would be 0)",
                              w, h, s->cfg.res_w, s->cfg.res_h, d);
            double ar1 = (double)bw1 / (double)bh1;
            double ar2 = (double)bw2 / (double)bh2;
            if (fabs(ar1 - ar) < fabs(ar2 - ar)) {
                rw = bw1;
                if (py_round_half((double)bw1 / ar, &rh) < 0)
                    return sd_err(SD_ERANGE, "image size %dx%d: resized size overflows", w, h);
            } else {
                if (py_round_half((double)bh2 * ar, &rw) < 0)
                    return sd_err(SD_ERANGE, "image size %dx%d: resized size overflows", w, h);
                rh = bh2;
            }
        } else {
            rw = w;
            rh = h;
        }
        bw = rw - rw % d;
        bh = rh - rh % d;
        if (bw == 0 || bh == 0)
            return sd_err(SD_EINVAL,
                          "image size %dx%d: the %s (%lld after the resize) is smaller than "
                          "bucket_reso_steps %d; with bucket_no_upscale there is no bucket for it",
                          w, h, bw == 0 ? "width" : "height", (long long)(bw == 0 ? rw : rh), d);
    }
    if (rw < bw || rh < bh || bw > (1 << 30) || bh > (1 << 30))
        return sd_err(SD_ESTATE, "image size %dx%d: resized %lldx%lld is smaller than bucket %lldx%lld",
                      w, h, (long long)rw, (long long)rh, (long long)bw, (long long)bh);
    p->bucket_w = (int)bw;
    p->bucket_h = (int)bh;
    p->resized_w = rw;
    p->resized_h = rh;
    p->trim_x = (rw - bw) / 2;
    p->trim_y = (rh - bh) / 2;
    p->ar_error = (double)bw / (double)bh - ar;
    sd_bucket_crop_ltrb(p->bucket_w, p->bucket_h, w, h, p->crop_ltrb);
    return SD_OK;
}

/* numpy's pairwise_sum (numpy/core/src/umath/loops_utils.h.src) */
static double pairwise_sum(const double *a, size_t n)
{
    if (n < 8) {
        double res = 0.;
        for (size_t i = 0; i < n; i++) res += a[i];
        return res;
    } else if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        size_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    } else {
        size_t n2 = n / 2;
        n2 -= n2 % 8;
        return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
    }
}

double sd_bucket_mean(const double *v, size_t n)
{
    if (n == 0) return 0.0;
    /* add.reduce walks the array in buffers of 8192 elements (NPY_BUFSIZE) and adds each
     * buffer's pairwise sum to the running total */
    double acc = 0.0;
    for (size_t i = 0; i < n; i += 8192) acc += pairwise_sum(v + i, n - i < 8192 ? n - i : 8192);
    return acc / (double)n;
}

int sd_bucket_interp_from_name(const char *name, int *filter)
{
    /* library/utils.py: lanczos and box go to PIL, the rest to cv2.resize
     * (get_cv2_interpolation: nearest -> INTER_NEAREST_EXACT) */
    static const struct {
        const char *name;
        int filter;
    } tab[] = {{"lanczos", SD_RESAMPLE_LANCZOS},   {"box", SD_RESAMPLE_BOX},
               {"area", SD_RESAMPLE_AREA},         {"nearest", SD_RESAMPLE_CV_NEAREST},
               {"bilinear", SD_RESAMPLE_CV_LINEAR}, {"linear", SD_RESAMPLE_CV_LINEAR},
               {"bicubic", SD_RESAMPLE_CV_CUBIC},   {"cubic", SD_RESAMPLE_CV_CUBIC}};
    if (!name) return sd_err(SD_EINVAL, "interpolation: no name");
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (!strcmp(name, tab[i].name)) {
            *filter = tab[i].filter;
            return SD_OK;
        }
    return sd_err(SD_EINVAL,
                  "unknown interpolation '%s' (choose from lanczos, nearest, bilinear, linear, "
                  "bicubic, cubic, area, box)",
                  name);
}

int sd_bucket_apply(const sd_image *src, const sd_bucket_plan *p, int filter, uint64_t max_pixels,
                    sd_image *out)
{
    memset(out, 0, sizeof *out);
    if (src->w != p->image_w || src->h != p->image_h)
        return sd_err(SD_EINVAL, "image is %dx%d, the plan is for %dx%d", src->w, src->h, p->image_w,
                      p->image_h);
    if (!max_pixels) max_pixels = sd_image_max_pixels();
    if (p->resized_w > (1 << 30) || p->resized_h > (1 << 30) ||
        (uint64_t)p->resized_w * (uint64_t)p->resized_h > max_pixels)
        return sd_err(SD_ERANGE, "resized size %lldx%lld exceeds the pixel limit %llu",
                      (long long)p->resized_w, (long long)p->resized_h, (unsigned long long)max_pixels);
    int rw = (int)p->resized_w, rh = (int)p->resized_h;
    sd_image tmp = {0};
    const sd_image *r = src;
    if (rw != src->w || rh != src->h) {
        int rc;
        if (filter < 0) {
            rc = sd_resample_auto(src, rw, rh, &tmp);
        } else {
            rc = sd_resample(src, rw, rh, filter, &tmp);
        }
        if (rc < 0) return rc;
        r = &tmp;
    }
    int rc = sd_image_crop(r, (int)p->trim_x, (int)p->trim_y, p->bucket_w, p->bucket_h, out);
    sd_image_free(&tmp);
    return rc;
}
