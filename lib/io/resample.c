/* PIL-exact (Pillow 9.4 Resample.c) and OpenCV-exact (4.6 INTER_AREA, shrinking) resampling of
 * 8-bit images. Written from the formulas documented in resample.h; the order of floating-point
 * operations below is the order those libraries use, which is what makes the bytes identical. */
#include "io/resample.h"

#include "base/error.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ================================================================ PIL */

#define PRECISION_BITS (32 - 8 - 2)

static double box_filter(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }

static double bilinear_filter(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double hamming_filter(double x)
{
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    return sin(x) / x * (0.54f + 0.46f * cos(x)); /* float constants, as in Pillow */
}

static double bicubic_filter(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc_filter(double x)
{
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos_filter(double x)
{
    if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
    return 0.0;
}

typedef struct {
    double (*fn)(double);
    double support;
} pil_filter;

static const pil_filter PIL_FILTERS[] = {
    [SD_RESAMPLE_BOX] = {box_filter, 0.5},
    [SD_RESAMPLE_BILINEAR] = {bilinear_filter, 1.0},
    [SD_RESAMPLE_HAMMING] = {hamming_filter, 1.0},
    [SD_RESAMPLE_BICUBIC] = {bicubic_filter, 2.0},
    [SD_RESAMPLE_LANCZOS] = {lanczos_filter, 3.0},
};

/* Per-axis tables: for output i, taps bounds[2i] .. bounds[2i] + bounds[2i+1] - 1 with
 * fixed-point weights k[i*ksize ...]. */
typedef struct {
    int ksize;
    int *bounds;
    int32_t *k;
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->bounds);
    free(c->k);
    c->bounds = NULL;
    c->k = NULL;
}

static int precompute_coeffs(int in_size, float in0, float in1, int out_size, const pil_filter *f,
                             coeffs *out)
{
    double scale, filterscale;
    filterscale = scale = (double)(in1 - in0) / out_size;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = f->support * filterscale;
    if (support > 1e8) return sd_err(SD_ERANGE, "resample: scale factor too large");
    int ksize = (int)ceil(support) * 2 + 1;
    out->ksize = ksize;
    out->bounds = malloc((size_t)out_size * 2 * sizeof(int));
    out->k = malloc((size_t)out_size * (size_t)ksize * sizeof(int32_t));
    double *w = malloc((size_t)ksize * sizeof(double));
    if (!out->bounds || !out->k || !w) {
        free(w);
        coeffs_free(out);
        return sd_err(SD_ENOMEM, "resample: out of memory");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax < 0) xmax = 0;
        if (xmax > ksize) xmax = ksize; /* cannot happen; keeps the table bounds obvious */
        int32_t *k = out->k + (size_t)xx * (size_t)ksize;
        int x;
        for (x = 0; x < xmax; x++) {
            double v = f->fn((x + xmin - center + 0.5) * ss);
            w[x] = v;
            ww += v;
        }
        for (x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        for (; x < ksize; x++) k[x] = 0;
        out->bounds[xx * 2] = xmin;
        out->bounds[xx * 2 + 1] = xmax;
    }
    free(w);
    return SD_OK;
}

static inline uint8_t clip8(int v)
{
    v >>= PRECISION_BITS; /* arithmetic shift, as in Pillow */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal pass: rows [y0, y0 + out_h) of in (width in_w) -> out (width out_w). */
static void pil_horizontal(const uint8_t *in, int in_w, int y0, int c, uint8_t *out, int out_w,
                           int out_h, const coeffs *cf)
{
    const int ksize = cf->ksize;
    const int *bounds = cf->bounds;
    const int32_t *kk = cf->k;
#pragma omp parallel for schedule(static) if ((long)out_w * out_h > 16384)
    for (int yy = 0; yy < out_h; yy++) {
        const uint8_t *row = in + (size_t)(yy + y0) * (size_t)in_w * (size_t)c;
        uint8_t *o = out + (size_t)yy * (size_t)out_w * (size_t)c;
        for (int xx = 0; xx < out_w; xx++) {
            const int xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
            const int32_t *k = kk + (size_t)xx * (size_t)ksize;
            const uint8_t *p = row + (size_t)xmin * (size_t)c;
            int s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0, s3 = s0;
            switch (c) {
            case 1:
                for (int x = 0; x < xmax; x++) s0 += p[x] * k[x];
                o[xx] = clip8(s0);
                break;
            case 3:
                for (int x = 0; x < xmax; x++) {
                    s0 += p[x * 3] * k[x];
                    s1 += p[x * 3 + 1] * k[x];
                    s2 += p[x * 3 + 2] * k[x];
                }
                o[xx * 3] = clip8(s0);
                o[xx * 3 + 1] = clip8(s1);
                o[xx * 3 + 2] = clip8(s2);
                break;
            default:
                for (int x = 0; x < xmax; x++) {
                    s0 += p[x * 4] * k[x];
                    s1 += p[x * 4 + 1] * k[x];
                    s2 += p[x * 4 + 2] * k[x];
                    s3 += p[x * 4 + 3] * k[x];
                }
                o[xx * 4] = clip8(s0);
                o[xx * 4 + 1] = clip8(s1);
                o[xx * 4 + 2] = clip8(s2);
                o[xx * 4 + 3] = clip8(s3);
                break;
            }
        }
    }
}

/* Vertical pass: in (w×?, rows addressed by bounds) -> out (w×out_h). Integer sums, so the
 * loop order (row-major accumulation here) does not change the result. */
static int pil_vertical(const uint8_t *in, int w, int c, uint8_t *out, int out_h,
                        const coeffs *cf)
{
    const size_t rowlen = (size_t)w * (size_t)c;
    const int ksize = cf->ksize;
    int rc = SD_OK;
#pragma omp parallel if ((long)rowlen * out_h > 16384)
    {
        int32_t *acc = malloc(rowlen * sizeof(int32_t));
        if (!acc) {
#pragma omp atomic write
            rc = SD_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int yy = 0; yy < out_h; yy++) {
            if (!acc) continue;
            const int ymin = cf->bounds[yy * 2], ymax = cf->bounds[yy * 2 + 1];
            const int32_t *k = cf->k + (size_t)yy * (size_t)ksize;
            for (size_t i = 0; i < rowlen; i++) acc[i] = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) {
                const uint8_t *r = in + (size_t)(y + ymin) * rowlen;
                const int32_t ky = k[y];
                for (size_t i = 0; i < rowlen; i++) acc[i] += r[i] * ky;
            }
            uint8_t *o = out + (size_t)yy * rowlen;
            for (size_t i = 0; i < rowlen; i++) o[i] = clip8(acc[i]);
        }
        free(acc);
    }
    return rc == SD_OK ? SD_OK : sd_err(SD_ENOMEM, "resample: out of memory");
}

/* PIL's RGBA -> RGBa (premultiply, MULDIV255) and RGBa -> RGBA. */
static void premultiply(const uint8_t *in, uint8_t *out, size_t npx)
{
    for (size_t i = 0; i < npx; i++, in += 4, out += 4) {
        unsigned a = in[3], t;
        for (int ch = 0; ch < 3; ch++) {
            t = in[ch] * a + 128;
            out[ch] = (uint8_t)(((t >> 8) + t) >> 8);
        }
        out[3] = (uint8_t)a;
    }
}

static void unpremultiply(uint8_t *p, size_t npx)
{
    for (size_t i = 0; i < npx; i++, p += 4) {
        unsigned a = p[3];
        if (a == 255 || a == 0) continue;
        for (int ch = 0; ch < 3; ch++) {
            unsigned v = 255u * p[ch] / a;
            p[ch] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

static int check_src(const sd_image *src, int w, int h, const char *what)
{
    if (!src || !src->px || src->w <= 0 || src->h <= 0 ||
        (src->c != 1 && src->c != 3 && src->c != 4))
        return sd_err(SD_EINVAL, "%s: bad source image", what);
    if (w <= 0 || h <= 0) return sd_err(SD_EINVAL, "%s: bad target size %dx%d", what, w, h);
    if ((uint64_t)w * (uint64_t)h > ((uint64_t)1 << 31))
        return sd_err(SD_ERANGE, "%s: target size %dx%d too large", what, w, h);
    return SD_OK;
}

static int copy_image(const sd_image *src, sd_image *out)
{
    int rc = sd_image_alloc(out, src->w, src->h, src->c);
    if (rc) return rc;
    memcpy(out->px, src->px, (size_t)src->w * (size_t)src->h * (size_t)src->c);
    return SD_OK;
}

/* ImagingResampleInner on an 8-bit image (already premultiplied for RGBA). */
static int pil_resample_inner(const sd_image *in, const float box[4], int xsize, int ysize,
                              const pil_filter *f, sd_image *out)
{
    memset(out, 0, sizeof *out);
    const int c = in->c;
    int need_h = xsize != in->w || box[0] != 0 || box[2] != xsize;
    int need_v = ysize != in->h || box[1] != 0 || box[3] != ysize;
    coeffs ch = {0}, cv = {0};
    int rc = precompute_coeffs(in->w, box[0], box[2], xsize, f, &ch);
    if (rc) return rc;
    rc = precompute_coeffs(in->h, box[1], box[3], ysize, f, &cv);
    if (rc) {
        coeffs_free(&ch);
        return rc;
    }
    int ybox_first = cv.bounds[0];
    int ybox_last = cv.bounds[ysize * 2 - 2] + cv.bounds[ysize * 2 - 1];
    sd_image tmp = {0};
    const sd_image *cur = in;
    if (need_h) {
        for (int i = 0; i < ysize; i++) cv.bounds[i * 2] -= ybox_first;
        int th = ybox_last - ybox_first;
        if (th <= 0) th = 1; /* degenerate (empty vertical box); never read */
        rc = sd_image_alloc(&tmp, xsize, th, c);
        if (!rc) pil_horizontal(in->px, in->w, ybox_first, c, tmp.px, xsize,
                                ybox_last - ybox_first, &ch);
        if (rc) goto done;
        cur = &tmp;
    }
    if (need_v) {
        rc = sd_image_alloc(out, cur->w, ysize, c);
        if (!rc) rc = pil_vertical(cur->px, cur->w, c, out->px, ysize, &cv);
        if (rc) sd_image_free(out);
    } else if (cur == &tmp) {
        *out = tmp;
        tmp.px = NULL;
    } else {
        rc = copy_image(in, out);
    }
done:
    sd_image_free(&tmp);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return rc;
}

static int pil_resample(const sd_image *src, const float box[4], int w, int h, int filter,
                        sd_image *out)
{
    /* ImagingResample via _resize: box validation, the integer-crop shortcut, then resample.
     * RGBA goes through RGBa (premultiplied) like Image.resize. */
    if (box[0] < 0 || box[1] < 0) return sd_err(SD_EINVAL, "resample: box offset can't be negative");
    if (box[2] > src->w || box[3] > src->h)
        return sd_err(SD_EINVAL, "resample: box can't exceed original image size");
    if (box[2] - box[0] < 0 || box[3] - box[1] < 0)
        return sd_err(SD_EINVAL, "resample: box can't be empty");
    sd_image pm = {0};
    const sd_image *in = src;
    int rc;
    if (src->c == 4) {
        rc = sd_image_alloc(&pm, src->w, src->h, 4);
        if (rc) return rc;
        premultiply(src->px, pm.px, (size_t)src->w * (size_t)src->h);
        in = &pm;
    }
    if (box[0] - (int)box[0] == 0 && box[2] - box[0] == w && box[1] - (int)box[1] == 0 &&
        box[3] - box[1] == h)
        rc = sd_image_crop(in, (int)box[0], (int)box[1], w, h, out);
    else
        rc = pil_resample_inner(in, box, w, h, &PIL_FILTERS[filter], out);
    sd_image_free(&pm);
    if (!rc && out->c == 4) unpremultiply(out->px, (size_t)out->w * (size_t)out->h);
    return rc;
}

/* ================================================================ OpenCV INTER_AREA */

typedef struct {
    int si, di;
    float alpha;
} decimate_alpha;

/* computeResizeAreaTab */
static int area_tab(int ssize, int dsize, int cn, double scale, decimate_alpha *tab)
{
    int k = 0;
    for (int dx = 0; dx < dsize; dx++) {
        double fsx1 = dx * scale;
        double fsx2 = fsx1 + scale;
        double cell = scale < ssize - fsx1 ? scale : ssize - fsx1;
        int sx1 = (int)ceil(fsx1), sx2 = (int)floor(fsx2);
        if (sx2 > ssize - 1) sx2 = ssize - 1;
        if (sx1 > sx2) sx1 = sx2;
        if (sx1 - fsx1 > 1e-3) {
            tab[k].di = dx * cn;
            tab[k].si = (sx1 - 1) * cn;
            tab[k++].alpha = (float)((sx1 - fsx1) / cell);
        }
        for (int sx = sx1; sx < sx2; sx++) {
            tab[k].di = dx * cn;
            tab[k].si = sx * cn;
            tab[k++].alpha = (float)(1.0 / cell);
        }
        if (fsx2 - sx2 > 1e-3) {
            double m = fsx2 - sx2 < 1. ? fsx2 - sx2 : 1.;
            if (m > cell) m = cell;
            tab[k].di = dx * cn;
            tab[k].si = sx2 * cn;
            tab[k++].alpha = (float)(m / cell);
        }
    }
    return k;
}

static inline uint8_t sat_u8f(float v)
{
    /* cvRound: round half to even (the current rounding mode), as OpenCV's own SSE2 path */
#ifdef __SSE2__
    int r = _mm_cvtss_si32(_mm_set_ss(v));
#else
    long r = lrintf(v);
#endif
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

static int area_fast(const sd_image *src, int dw, int dh, int isx, int isy, sd_image *out)
{
    const int c = src->c, area = isx * isy;
    const float scale = 1.f / (float)area;
    const size_t sstride = (size_t)src->w * (size_t)c, dstride = (size_t)dw * (size_t)c;
    const int two = isx == 2 && isy == 2;
#pragma omp parallel for schedule(static) if ((long)dw * dh > 16384)
    for (int dy = 0; dy < dh; dy++) {
        uint8_t *d = out->px + (size_t)dy * dstride;
        const uint8_t *s0 = src->px + (size_t)dy * (size_t)isy * sstride;
        for (int dx = 0; dx < dw; dx++) {
            for (int ch = 0; ch < c; ch++) {
                const uint8_t *s = s0 + (size_t)dx * (size_t)isx * (size_t)c + (size_t)ch;
                int sum = 0;
                for (int y = 0; y < isy; y++)
                    for (int x = 0; x < isx; x++) sum += s[(size_t)y * sstride + (size_t)x * (size_t)c];
                d[(size_t)dx * (size_t)c + (size_t)ch] =
                    two ? (uint8_t)((sum + 2) >> 2) : sat_u8f((float)sum * scale);
            }
        }
    }
    return SD_OK;
}

static int area_generic(const sd_image *src, int dw, int dh, double sx, double sy, sd_image *out)
{
    const int c = src->c, sw = src->w, sh = src->h;
    decimate_alpha *xtab = malloc(((size_t)sw + 2 * (size_t)dw + 2) * sizeof *xtab);
    decimate_alpha *ytab = malloc(((size_t)sh + 2 * (size_t)dh + 2) * sizeof *ytab);
    int *tabofs = malloc(((size_t)dh + 1) * sizeof(int));
    if (!xtab || !ytab || !tabofs) {
        free(xtab);
        free(ytab);
        free(tabofs);
        return sd_err(SD_ENOMEM, "resample: out of memory");
    }
    int xn = area_tab(sw, dw, c, sx, xtab);
    int yn = area_tab(sh, dh, 1, sy, ytab);
    int dy = 0;
    for (int k = 0; k < yn; k++)
        if (k == 0 || ytab[k].di != ytab[k - 1].di) tabofs[dy++] = k;
    for (; dy <= dh; dy++) tabofs[dy] = yn;
    const size_t width = (size_t)dw * (size_t)c, sstride = (size_t)sw * (size_t)c;
    int rc = SD_OK;
#pragma omp parallel if ((long)dw * dh > 16384)
    {
        float *buf = malloc(width * 2 * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            rc = SD_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int y = 0; y < dh; y++) {
            if (!buf) continue;
            float *sum = buf + width;
            for (size_t i = 0; i < width; i++) sum[i] = 0.f;
            for (int j = tabofs[y]; j < tabofs[y + 1]; j++) {
                const float beta = ytab[j].alpha;
                const uint8_t *S = src->px + (size_t)ytab[j].si * sstride;
                for (size_t i = 0; i < width; i++) buf[i] = 0.f;
                /* same per-element operations as OpenCV, specialised by channel count */
                if (c == 3) {
                    for (int k = 0; k < xn; k++) {
                        const int si = xtab[k].si, di = xtab[k].di;
                        const float a = xtab[k].alpha;
                        buf[di] = buf[di] + (float)S[si] * a;
                        buf[di + 1] = buf[di + 1] + (float)S[si + 1] * a;
                        buf[di + 2] = buf[di + 2] + (float)S[si + 2] * a;
                    }
                } else if (c == 4) {
                    for (int k = 0; k < xn; k++) {
                        const int si = xtab[k].si, di = xtab[k].di;
                        const float a = xtab[k].alpha;
                        buf[di] = buf[di] + (float)S[si] * a;
                        buf[di + 1] = buf[di + 1] + (float)S[si + 1] * a;
                        buf[di + 2] = buf[di + 2] + (float)S[si + 2] * a;
                        buf[di + 3] = buf[di + 3] + (float)S[si + 3] * a;
                    }
                } else {
                    for (int k = 0; k < xn; k++)
                        buf[xtab[k].di] = buf[xtab[k].di] + (float)S[xtab[k].si] * xtab[k].alpha;
                }
                for (size_t i = 0; i < width; i++) sum[i] = sum[i] + beta * buf[i];
            }
            uint8_t *d = out->px + (size_t)y * width;
            for (size_t i = 0; i < width; i++) d[i] = sat_u8f(sum[i]);
        }
        free(buf);
    }
    free(xtab);
    free(ytab);
    free(tabofs);
    return rc == SD_OK ? SD_OK : sd_err(SD_ENOMEM, "resample: out of memory");
}

static int area_resample(const sd_image *src, int dw, int dh, sd_image *out)
{
    if (dw > src->w || dh > src->h)
        return sd_err(SD_EUNSUPPORTED,
                      "resample: INTER_AREA enlarging (%dx%d -> %dx%d) is not supported; use "
                      "lanczos", src->w, src->h, dw, dh);
    double inv_x = (double)dw / src->w, inv_y = (double)dh / src->h;
    double sx = 1. / inv_x, sy = 1. / inv_y;
    int isx = (int)lrint(sx), isy = (int)lrint(sy);
    int fast = fabs(sx - isx) < DBL_EPSILON && fabs(sy - isy) < DBL_EPSILON;
    int rc = sd_image_alloc(out, dw, dh, src->c);
    if (rc) return rc;
    rc = fast ? area_fast(src, dw, dh, isx, isy, out) : area_generic(src, dw, dh, sx, sy, out);
    if (rc) sd_image_free(out);
    return rc;
}

/* ================================================================ API */

int sd_resample(const sd_image *src, int w, int h, int filter, sd_image *out)
{
    memset(out, 0, sizeof *out);
    int rc = check_src(src, w, h, "resample");
    if (rc) return rc;
    if (filter < SD_RESAMPLE_BOX || filter > SD_RESAMPLE_AREA)
        return sd_err(SD_EINVAL, "resample: unknown filter %d", filter);
    if (w == src->w && h == src->h) return copy_image(src, out);
    if (filter == SD_RESAMPLE_AREA) return area_resample(src, w, h, out);
    const float box[4] = {0, 0, (float)src->w, (float)src->h};
    return pil_resample(src, box, w, h, filter, out);
}

int sd_resample_box(const sd_image *src, const float box[4], int w, int h, int filter,
                    sd_image *out)
{
    memset(out, 0, sizeof *out);
    int rc = check_src(src, w, h, "resample");
    if (rc) return rc;
    if (filter < SD_RESAMPLE_BOX || filter > SD_RESAMPLE_LANCZOS)
        return sd_err(SD_EINVAL, "resample: filter %d does not take a box", filter);
    if (!(box[0] == box[0] && box[1] == box[1] && box[2] == box[2] && box[3] == box[3]))
        return sd_err(SD_EINVAL, "resample: box is not a number");
    if (w == src->w && h == src->h && box[0] == 0 && box[1] == 0 && box[2] == src->w &&
        box[3] == src->h)
        return copy_image(src, out);
    return pil_resample(src, box, w, h, filter, out);
}

int sd_resample_auto(const sd_image *src, int w, int h, sd_image *out)
{
    int area = src && w <= src->w && h <= src->h;
    return sd_resample(src, w, h, area ? SD_RESAMPLE_AREA : SD_RESAMPLE_LANCZOS, out);
}

static const char *const NAMES[] = {"box", "bilinear", "hamming", "bicubic", "lanczos", "area"};

int sd_resample_filter_from_name(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i <= SD_RESAMPLE_AREA; i++)
        if (!strcasecmp(name, NAMES[i])) return i;
    return -1;
}

const char *sd_resample_filter_name(int filter)
{
    return filter >= 0 && filter <= SD_RESAMPLE_AREA ? NAMES[filter] : "unknown";
}
