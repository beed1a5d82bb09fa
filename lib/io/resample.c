/* PIL-exact (Pillow 9.4 Resample.c) and OpenCV-exact (4.6 INTER_AREA, INTER_LINEAR, INTER_CUBIC,
 * INTER_NEAREST_EXACT) resampling of 8-bit images. Written from the formulas documented in
 * resample.h; the order of floating-point
 * operations below is the order those libraries use, which is what makes the bytes identical.
 *
 * Speed: every path has a portable scalar version (the plain transcription of the libraries'
 * loops, kept as the reference) and x86 SIMD versions chosen at run time (SSE2, always present on
 * x86-64, and AVX2 via __builtin_cpu_supports). The SIMD versions do the same IEEE operations in
 * the same order per output value (float paths) or exact integer sums (PIL paths, where the order
 * does not matter), so all levels give identical bytes; tests/unit/test_resample.c checks that
 * against the scalar transcription on many sizes. No FMA is ever enabled (a fused multiply-add
 * rounds once where OpenCV rounds twice). The OpenCV LINEAR, CUBIC and NEAREST_EXACT paths are
 * portable C only (integer passes; CUBIC's float vertical step is written one IEEE operation at a
 * time) and run the same at every level. */
#include "io/resample.h"

#include "base/error.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef _OPENMP
#include <omp.h>
#endif
/* -DSD_RESAMPLE_NO_SIMD builds the portable code only (what non-x86 machines get). */
#if (defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__))) && !defined(SD_RESAMPLE_NO_SIMD)
#define RS_X86 1
#include <immintrin.h>
#define RS_AVX2 __attribute__((target("avx2")))
#else
#define RS_X86 0
#endif

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ================================================================ SIMD level */

static int rs_forced = -1; /* sd_resample_set_simd */

static int rs_best(void)
{
#if RS_X86
    static int best = -1;
    int b = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (b < 0) {
        __builtin_cpu_init();
        b = __builtin_cpu_supports("avx2") ? SD_RESAMPLE_SIMD_AVX2 : SD_RESAMPLE_SIMD_SSE2;
        __atomic_store_n(&best, b, __ATOMIC_RELAXED);
    }
    return b;
#else
    return SD_RESAMPLE_SIMD_SCALAR;
#endif
}

static int rs_level(void)
{
    int f = __atomic_load_n(&rs_forced, __ATOMIC_RELAXED);
    return f >= 0 ? f : rs_best();
}

int sd_resample_set_simd(int level)
{
    int prev = __atomic_load_n(&rs_forced, __ATOMIC_RELAXED);
    if (level < 0) {
        level = -1;
    } else {
        int best = rs_best();
        if (level > best) level = best;
    }
    __atomic_store_n(&rs_forced, level, __ATOMIC_RELAXED);
    return prev < 0 ? -1 : prev;
}

int sd_resample_simd(void) { return rs_level(); }

/* Rows [*y0, *y1) of `n` for this thread of the enclosing parallel region: contiguous bands, so
 * every output row is computed by exactly one thread. */
static void rs_band(int n, int *y0, int *y1)
{
#ifdef _OPENMP
    long nth = omp_get_num_threads(), tid = omp_get_thread_num();
#else
    long nth = 1, tid = 0;
#endif
    *y0 = (int)(n * tid / nth);
    *y1 = (int)(n * (tid + 1) / nth);
}

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
 * fixed-point weights k[i*ksize ...] (zero past the taps; one spare zero column at the end so
 * taps can be read in pairs). */
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
    out->k = malloc(((size_t)out_size * (size_t)ksize + 1) * sizeof(int32_t));
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
    out->k[(size_t)out_size * (size_t)ksize] = 0;
    free(w);
    return SD_OK;
}

static inline uint8_t clip8(int v)
{
    v >>= PRECISION_BITS; /* arithmetic shift, as in Pillow */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One output pixel of the horizontal pass, Pillow's loop. */
static inline void pil_hpixel(const uint8_t *p, int c, const int32_t *k, int xmax, uint8_t *o)
{
    int s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0, s3 = s0;
    switch (c) {
    case 1:
        for (int x = 0; x < xmax; x++) s0 += p[x] * k[x];
        o[0] = clip8(s0);
        break;
    case 3:
        for (int x = 0; x < xmax; x++) {
            s0 += p[x * 3] * k[x];
            s1 += p[x * 3 + 1] * k[x];
            s2 += p[x * 3 + 2] * k[x];
        }
        o[0] = clip8(s0);
        o[1] = clip8(s1);
        o[2] = clip8(s2);
        break;
    default:
        for (int x = 0; x < xmax; x++) {
            s0 += p[x * 4] * k[x];
            s1 += p[x * 4 + 1] * k[x];
            s2 += p[x * 4 + 2] * k[x];
            s3 += p[x * 4 + 3] * k[x];
        }
        o[0] = clip8(s0);
        o[1] = clip8(s1);
        o[2] = clip8(s2);
        o[3] = clip8(s3);
        break;
    }
}

static void pil_hrow_scalar(const uint8_t *row, int c, uint8_t *o, int out_w, const coeffs *cf,
                            size_t avail)
{
    (void)avail;
    for (int xx = 0; xx < out_w; xx++) {
        const int xmin = cf->bounds[xx * 2], xmax = cf->bounds[xx * 2 + 1];
        pil_hpixel(row + (size_t)xmin * (size_t)c, c, cf->k + (size_t)xx * (size_t)cf->ksize,
                   xmax, o + (size_t)xx * (size_t)c);
    }
}

#if RS_X86
/* Saturating (v >> 22) of 4 int32 to 4 bytes in the low dword. */
RS_AVX2 static inline int pil_pack4(__m128i v)
{
    v = _mm_srai_epi32(v, PRECISION_BITS);
    v = _mm_packs_epi32(v, v);
    return _mm_cvtsi128_si32(_mm_packus_epi16(v, v));
}

/* Horizontal pass for c = 3 or 4: a pixel's channels in 4 int32 lanes, two taps per 256-bit
 * step. Integer sums, so the order of the taps does not matter (Pillow's sums never overflow).
 * `avail` is the number of readable bytes from `row`; pixels whose loads would pass it (only at
 * the end of the image) use the scalar loop. */
RS_AVX2 static void pil_hrow_avx2(const uint8_t *row, int c, uint8_t *o, int out_w,
                                  const coeffs *cf, size_t avail)
{
    const int ksize = cf->ksize;
    const __m128i shuf3 = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
    const __m256i dup = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m128i half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int xx = 0; xx < out_w; xx++) {
        const int xmin = cf->bounds[xx * 2], xmax = cf->bounds[xx * 2 + 1];
        const int32_t *k = cf->k + (size_t)xx * (size_t)ksize;
        const uint8_t *p = row + (size_t)xmin * (size_t)c;
        uint8_t *op = o + (size_t)xx * (size_t)c;
        /* reads: pairs of pixels as 8 bytes; a last single pixel as 4 bytes */
        if ((size_t)(xmin + xmax) * (size_t)c + 2 > avail) {
            pil_hpixel(p, c, k, xmax, op);
            continue;
        }
        __m256i acc = _mm256_setzero_si256();
        int x = 0;
        if (c == 4) {
            for (; x + 2 <= xmax; x += 2) {
                __m256i px = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + x * 4)));
                __m256i kk = _mm256_permutevar8x32_epi32(
                    _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(k + x))), dup);
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, kk));
            }
        } else {
            for (; x + 2 <= xmax; x += 2) {
                __m128i b = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(p + x * 3)), shuf3);
                __m256i px = _mm256_cvtepu8_epi32(b);
                __m256i kk = _mm256_permutevar8x32_epi32(
                    _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(k + x))), dup);
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, kk));
            }
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, half);
        if (x < xmax) {
            int32_t v;
            memcpy(&v, p + x * c, 4);
            __m128i px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v));
            if (c == 3) px = _mm_and_si128(px, _mm_setr_epi32(-1, -1, -1, 0));
            s = _mm_add_epi32(s, _mm_mullo_epi32(px, _mm_set1_epi32(k[x])));
        }
        int r = pil_pack4(s);
        if (c == 4) memcpy(op, &r, 4);
        else memcpy(op, &r, 3);
    }
}
#endif

/* Horizontal pass: rows [y0, y0 + out_h) of in (width in_w, in_h rows) -> out (width out_w). */
static void pil_horizontal(const uint8_t *in, int in_w, int in_h, int y0, int c, uint8_t *out,
                           int out_w, int out_h, const coeffs *cf)
{
    void (*hrow)(const uint8_t *, int, uint8_t *, int, const coeffs *, size_t) = pil_hrow_scalar;
#if RS_X86
    if (rs_level() >= SD_RESAMPLE_SIMD_AVX2 && c != 1) hrow = pil_hrow_avx2;
#endif
    const size_t stride = (size_t)in_w * (size_t)c, total = stride * (size_t)in_h;
#pragma omp parallel for schedule(static) if ((long)out_w * out_h > 16384)
    for (int yy = 0; yy < out_h; yy++) {
        size_t off = (size_t)(yy + y0) * stride;
        hrow(in + off, c, out + (size_t)yy * (size_t)out_w * (size_t)c, out_w, cf, total - off);
    }
}

/* One output row of the vertical pass: rowlen bytes, taps rows in[0..ymax) (stride `stride`). */
static void pil_vrow_scalar(const uint8_t *in, size_t stride, size_t rowlen, const int32_t *k,
                            int ymax, int32_t *acc, uint8_t *o)
{
    for (size_t i = 0; i < rowlen; i++) acc[i] = 1 << (PRECISION_BITS - 1);
    for (int y = 0; y < ymax; y++) {
        const uint8_t *r = in + (size_t)y * stride;
        const int32_t ky = k[y];
        for (size_t i = 0; i < rowlen; i++) acc[i] += r[i] * ky;
    }
    for (size_t i = 0; i < rowlen; i++) o[i] = clip8(acc[i]);
}

#if RS_X86
/* 32 bytes per step, all taps summed in registers (exact integer sums). */
RS_AVX2 static void pil_vrow_avx2(const uint8_t *in, size_t stride, size_t rowlen,
                                  const int32_t *k, int ymax, int32_t *acc, uint8_t *o)
{
    const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= rowlen; i += 32) {
        __m256i a0 = half, a1 = half, a2 = half, a3 = half;
        for (int y = 0; y < ymax; y++) {
            const uint8_t *r = in + (size_t)y * stride + i;
            const __m256i ky = _mm256_set1_epi32(k[y]);
            __m128i b0 = _mm_loadu_si128((const __m128i *)r);
            __m128i b1 = _mm_loadu_si128((const __m128i *)(r + 16));
            a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(b0), ky));
            a1 = _mm256_add_epi32(
                a1, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(b0, 8)), ky));
            a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(b1), ky));
            a3 = _mm256_add_epi32(
                a3, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(b1, 8)), ky));
        }
        a0 = _mm256_srai_epi32(a0, PRECISION_BITS);
        a1 = _mm256_srai_epi32(a1, PRECISION_BITS);
        a2 = _mm256_srai_epi32(a2, PRECISION_BITS);
        a3 = _mm256_srai_epi32(a3, PRECISION_BITS);
        __m256i v = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
        _mm256_storeu_si256((__m256i *)(o + i), _mm256_permutevar8x32_epi32(v, perm));
    }
    if (i < rowlen)
        pil_vrow_scalar(in + i, stride, rowlen - i, k, ymax, acc, o + i);
}
#endif

/* Vertical pass: in (w×?, rows addressed by bounds) -> out (w×out_h). Integer sums, so the
 * loop order does not change the result. */
static int pil_vertical(const uint8_t *in, int w, int c, uint8_t *out, int out_h,
                        const coeffs *cf)
{
    const size_t rowlen = (size_t)w * (size_t)c;
    const int ksize = cf->ksize;
    void (*vrow)(const uint8_t *, size_t, size_t, const int32_t *, int, int32_t *, uint8_t *) =
        pil_vrow_scalar;
#if RS_X86
    if (rs_level() >= SD_RESAMPLE_SIMD_AVX2) vrow = pil_vrow_avx2;
#endif
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
            vrow(in + (size_t)ymin * rowlen, rowlen, rowlen, cf->k + (size_t)yy * (size_t)ksize,
                 ymax, acc, out + (size_t)yy * rowlen);
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

/* 255 * c / a truncated (Pillow's rgba2rgbA), without a division per value: n * m >> 32 with
 * m = ceil(2^32 / a) equals n / a for n < 2^32 / (m * a - 2^32) (> 2^24 here; n <= 65025). */
static void unpremultiply(uint8_t *p, size_t npx)
{
    static uint64_t magic[256];
    if (!__atomic_load_n(&magic[255], __ATOMIC_ACQUIRE)) {
        for (int a = 1; a < 256; a++)
            __atomic_store_n(&magic[a], ((1ull << 32) + (uint64_t)a - 1) / (uint64_t)a,
                             __ATOMIC_RELEASE);
    }
    for (size_t i = 0; i < npx; i++, p += 4) {
        unsigned a = p[3];
        if (a == 255 || a == 0) continue;
        const uint64_t m = __atomic_load_n(&magic[a], __ATOMIC_RELAXED);
        for (int ch = 0; ch < 3; ch++) {
            unsigned v = (unsigned)((255u * p[ch] * m) >> 32);
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
        if (!rc) pil_horizontal(in->px, in->w, in->h, ybox_first, c, tmp.px, xsize,
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
#if RS_X86
    int r = _mm_cvtss_si32(_mm_set_ss(v));
#else
    long r = lrintf(v);
#endif
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

/* Integer scale factors (resizeAreaFast): box sums in int. Per output row the isy source rows
 * are summed into column sums, then isx columns per output value (integer sums: any order). */
static int area_fast(const sd_image *src, int dw, int dh, int isx, int isy, sd_image *out)
{
    const int c = src->c, area = isx * isy;
    const float scale = 1.f / (float)area;
    const size_t sstride = (size_t)src->w * (size_t)c, dstride = (size_t)dw * (size_t)c;
    const size_t used = (size_t)dw * (size_t)isx * (size_t)c; /* source bytes read per row */
    int rc = SD_OK;
#pragma omp parallel if ((long)dw * dh > 16384)
    {
        int32_t *col = malloc(used * sizeof(int32_t));
        if (!col) {
#pragma omp atomic write
            rc = SD_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int dy = 0; dy < dh; dy++) {
            if (!col) continue;
            const uint8_t *s0 = src->px + (size_t)dy * (size_t)isy * sstride;
#pragma omp simd
            for (size_t i = 0; i < used; i++) col[i] = s0[i];
            for (int y = 1; y < isy; y++) {
                const uint8_t *s = s0 + (size_t)y * sstride;
#pragma omp simd
                for (size_t i = 0; i < used; i++) col[i] += s[i];
            }
            uint8_t *d = out->px + (size_t)dy * dstride;
            if (isx == 2 && isy == 2) {
                for (int dx = 0; dx < dw; dx++) {
                    const int32_t *p = col + (size_t)dx * 2 * (size_t)c;
                    for (int ch = 0; ch < c; ch++)
                        d[(size_t)dx * (size_t)c + (size_t)ch] = (uint8_t)((p[ch] + p[ch + c] + 2) >> 2);
                }
            } else {
                for (int dx = 0; dx < dw; dx++)
                    for (int ch = 0; ch < c; ch++) {
                        const int32_t *p = col + (size_t)dx * (size_t)isx * (size_t)c + (size_t)ch;
                        int sum = 0;
                        for (int x = 0; x < isx; x++) sum += p[(size_t)x * (size_t)c];
                        d[(size_t)dx * (size_t)c + (size_t)ch] = sat_u8f((float)sum * scale);
                    }
            }
        }
        free(col);
    }
    return rc == SD_OK ? SD_OK : sd_err(SD_ENOMEM, "resample: out of memory");
}

/* The generic path, OpenCV's ResizeArea_Invoker transcribed: per source row a horizontal pass
 * buf[di] += S[si] * alpha over the x table in order, then sum += beta * buf over the source
 * rows of an output row in order, round-half-even to uint8. The scalar reference (and the
 * fallback when the fast tables below do not apply). */
static int area_generic_scalar(const sd_image *src, int dw, int dh, double sx, double sy,
                               sd_image *out)
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

/* ---------------------------------------------------------------- generic path, fast
 *
 * The same arithmetic, reorganised:
 *   - Per axis, each output's table entries are consecutive source indices, so an output is
 *     (start, taps, weights[taps]). Horizontally the weights are padded with zeros to a common
 *     tap count n: buf = ((0 + p0*a0) + p1*a1) + ... and the padded steps add p*0 = +0, which
 *     leaves a non-negative float unchanged. So buf is computed in a register per output pixel
 *     (0 + x == x for the first tap) with the same products and additions, in the same order.
 *   - Vertically: sum = beta0*buf0, then sum = sum + beta_t*buf_t in order (OpenCV's first step
 *     is 0 + beta*buf or beta*buf: the same value).
 *   - A source row's horizontal pass does not depend on the output row, so it is computed once
 *     per thread and kept in a small ring (OpenCV recomputes rows shared by two output rows; the
 *     values are the same).
 * Vectorised over the channels of a pixel (c = 3, 4: one pixel in 4 float lanes, two pixels per
 * AVX2 vector) and over the values of an output row (vertical). */

typedef struct {
    int n;      /* taps per output after padding (>= 1) */
    int *start; /* first source index of each output */
    int *cnt;   /* its real taps */
    float *w;   /* out_size * n weights, zero-padded */
    float *wx;  /* AVX2: per pair of outputs and tap, w of the first x4 then the second x4 */
} area_axis;

static void area_axis_free(area_axis *ax)
{
    free(ax->start);
    free(ax->cnt);
    free(ax->w);
    free(ax->wx);
    memset(ax, 0, sizeof *ax);
}

/* SD_OK, 1 when the table does not have the consecutive form (then use the scalar path), or an
 * error. */
static int area_axis_build(int ssize, int dsize, double scale, area_axis *ax)
{
    memset(ax, 0, sizeof *ax);
    decimate_alpha *tab = malloc(((size_t)ssize + 2 * (size_t)dsize + 2) * sizeof *tab);
    ax->start = calloc((size_t)dsize, sizeof(int));
    ax->cnt = calloc((size_t)dsize, sizeof(int));
    if (!tab || !ax->start || !ax->cnt) {
        free(tab);
        area_axis_free(ax);
        return sd_err(SD_ENOMEM, "resample: out of memory");
    }
    int k = area_tab(ssize, dsize, 1, scale, tab), n = 1, rc = SD_OK;
    for (int j = 0; j < k && rc == SD_OK; j++) {
        const int d = tab[j].di;
        if (ax->cnt[d] == 0) ax->start[d] = tab[j].si;
        else if (tab[j].si != ax->start[d] + ax->cnt[d]) rc = 1;
        if (tab[j].si < 0 || tab[j].si >= ssize || (j && d < tab[j - 1].di)) rc = 1;
        if (++ax->cnt[d] > n) n = ax->cnt[d];
    }
    if (rc == SD_OK) {
        ax->n = n;
        ax->w = calloc((size_t)dsize * (size_t)n, sizeof(float));
        if (!ax->w) rc = sd_err(SD_ENOMEM, "resample: out of memory");
    }
    if (rc == SD_OK) {
        int prev = -1, t = 0;
        for (int j = 0; j < k; j++) {
            t = tab[j].di == prev ? t + 1 : 0;
            prev = tab[j].di;
            ax->w[(size_t)prev * (size_t)n + (size_t)t] = tab[j].alpha;
        }
    }
    free(tab);
    if (rc != SD_OK) area_axis_free(ax);
    return rc;
}

/* u8 row -> float row */
static void area_cvt_scalar(const uint8_t *s, size_t n, float *f)
{
    for (size_t i = 0; i < n; i++) f[i] = (float)s[i];
}

/* Horizontal pass of one source row (floats, padded with zeros: see area_row_pad). */
static void area_hrow_scalar(const float *f, int c, const area_axis *ax, int dw, float *o)
{
    const int n = ax->n;
    for (int dx = 0; dx < dw; dx++) {
        const float *p = f + (size_t)ax->start[dx] * (size_t)c;
        const float *w = ax->w + (size_t)dx * (size_t)n;
        for (int ch = 0; ch < c; ch++) {
            float b = p[ch] * w[0];
            for (int t = 1; t < n; t++) b = b + p[(size_t)t * (size_t)c + (size_t)ch] * w[t];
            o[(size_t)dx * (size_t)c + (size_t)ch] = b;
        }
    }
}

/* Vertical combination of one output row: rows[t] with weights w[t], t < cnt. */
static void area_vrow_scalar(const float *const *rows, const float *w, int cnt, size_t width,
                             uint8_t *d)
{
    for (size_t i = 0; i < width; i++) {
        float s = w[0] * rows[0][i];
        for (int t = 1; t < cnt; t++) s = s + w[t] * rows[t][i];
        d[i] = sat_u8f(s);
    }
}

#if RS_X86
static void area_cvt_sse2(const uint8_t *s, size_t n, float *f)
{
    const __m128i z = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i lo = _mm_unpacklo_epi8(b, z), hi = _mm_unpackhi_epi8(b, z);
        _mm_storeu_ps(f + i, _mm_cvtepi32_ps(_mm_unpacklo_epi16(lo, z)));
        _mm_storeu_ps(f + i + 4, _mm_cvtepi32_ps(_mm_unpackhi_epi16(lo, z)));
        _mm_storeu_ps(f + i + 8, _mm_cvtepi32_ps(_mm_unpacklo_epi16(hi, z)));
        _mm_storeu_ps(f + i + 12, _mm_cvtepi32_ps(_mm_unpackhi_epi16(hi, z)));
    }
    for (; i < n; i++) f[i] = (float)s[i];
}

/* c = 3 or 4: one pixel in 4 lanes (for c = 3 the 4th lane is the next pixel's first value,
 * computed and then overwritten by the next store; the row buffers have a spare float). */
static void area_hrow_sse2(const float *f, int c, const area_axis *ax, int dw, float *o)
{
    const int n = ax->n;
    for (int dx = 0; dx < dw; dx++) {
        const float *p = f + (size_t)ax->start[dx] * (size_t)c;
        const float *w = ax->w + (size_t)dx * (size_t)n;
        __m128 b = _mm_mul_ps(_mm_loadu_ps(p), _mm_set1_ps(w[0]));
        for (int t = 1; t < n; t++)
            b = _mm_add_ps(b, _mm_mul_ps(_mm_loadu_ps(p + (size_t)t * (size_t)c),
                                         _mm_set1_ps(w[t])));
        _mm_storeu_ps(o + (size_t)dx * (size_t)c, b);
    }
}

static void area_vrow_sse2(const float *const *rows, const float *w, int cnt, size_t width,
                           uint8_t *d)
{
    size_t i = 0;
    for (; i + 8 <= width; i += 8) {
        __m128 w0 = _mm_set1_ps(w[0]);
        __m128 s0 = _mm_mul_ps(w0, _mm_loadu_ps(rows[0] + i));
        __m128 s1 = _mm_mul_ps(w0, _mm_loadu_ps(rows[0] + i + 4));
        for (int t = 1; t < cnt; t++) {
            __m128 wt = _mm_set1_ps(w[t]);
            s0 = _mm_add_ps(s0, _mm_mul_ps(wt, _mm_loadu_ps(rows[t] + i)));
            s1 = _mm_add_ps(s1, _mm_mul_ps(wt, _mm_loadu_ps(rows[t] + i + 4)));
        }
        __m128i v = _mm_packs_epi32(_mm_cvtps_epi32(s0), _mm_cvtps_epi32(s1));
        _mm_storel_epi64((__m128i *)(d + i), _mm_packus_epi16(v, v));
    }
    for (; i < width; i++) {
        float s = w[0] * rows[0][i];
        for (int t = 1; t < cnt; t++) s = s + w[t] * rows[t][i];
        d[i] = sat_u8f(s);
    }
}

RS_AVX2 static void area_cvt_avx2(const uint8_t *s, size_t n, float *f)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i));
        _mm256_storeu_ps(f + i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
        _mm256_storeu_ps(f + i + 8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8))));
    }
    for (; i < n; i++) f[i] = (float)s[i];
}

/* Two pixels per vector: pixel dx in the low 128 bits, dx + 1 in the high. ax->wx holds the
 * weights of each pair broadcast to 8 lanes (area_axis_expand). */
RS_AVX2 static void area_hrow_avx2(const float *f, int c, const area_axis *ax, int dw, float *o)
{
    const int n = ax->n;
    int dx = 0;
    for (; dx + 2 <= dw; dx += 2) {
        const float *p0 = f + (size_t)ax->start[dx] * (size_t)c;
        const float *p1 = f + (size_t)ax->start[dx + 1] * (size_t)c;
        const float *w = ax->wx + (size_t)(dx / 2) * (size_t)n * 8;
        __m256 b = _mm256_mul_ps(_mm256_loadu2_m128(p1, p0), _mm256_loadu_ps(w));
        for (int t = 1; t < n; t++) {
            const size_t o1 = (size_t)t * (size_t)c;
            b = _mm256_add_ps(b, _mm256_mul_ps(_mm256_loadu2_m128(p1 + o1, p0 + o1),
                                               _mm256_loadu_ps(w + (size_t)t * 8)));
        }
        float *od = o + (size_t)dx * (size_t)c;
        if (c == 4) {
            _mm256_storeu_ps(od, b);
        } else { /* low first: its 4th lane is then overwritten by the high pixel */
            _mm_storeu_ps(od, _mm256_castps256_ps128(b));
            _mm_storeu_ps(od + 3, _mm256_extractf128_ps(b, 1));
        }
    }
    if (dx < dw) {
        area_axis one = *ax;
        one.start += dx;
        one.w += (size_t)dx * (size_t)n;
        area_hrow_sse2(f, c, &one, dw - dx, o + (size_t)dx * (size_t)c);
    }
}

RS_AVX2 static void area_vrow_avx2(const float *const *rows, const float *w, int cnt,
                                   size_t width, uint8_t *d)
{
    size_t i = 0;
    for (; i + 16 <= width; i += 16) {
        __m256 w0 = _mm256_set1_ps(w[0]);
        __m256 s0 = _mm256_mul_ps(w0, _mm256_loadu_ps(rows[0] + i));
        __m256 s1 = _mm256_mul_ps(w0, _mm256_loadu_ps(rows[0] + i + 8));
        for (int t = 1; t < cnt; t++) {
            __m256 wt = _mm256_set1_ps(w[t]);
            s0 = _mm256_add_ps(s0, _mm256_mul_ps(wt, _mm256_loadu_ps(rows[t] + i)));
            s1 = _mm256_add_ps(s1, _mm256_mul_ps(wt, _mm256_loadu_ps(rows[t] + i + 8)));
        }
        __m256i v = _mm256_packs_epi32(_mm256_cvtps_epi32(s0), _mm256_cvtps_epi32(s1));
        v = _mm256_permute4x64_epi64(v, 0xD8); /* [s0 lo, s0 hi, s1 lo, s1 hi] as int16 */
        __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storeu_si128((__m128i *)(d + i), b);
    }
    for (; i < width; i++) {
        float s = w[0] * rows[0][i];
        for (int t = 1; t < cnt; t++) s = s + w[t] * rows[t][i];
        d[i] = sat_u8f(s);
    }
}
#endif

#if RS_X86
static int area_axis_expand(area_axis *ax, int dsize)
{
    const size_t n = (size_t)ax->n, pairs = (size_t)dsize / 2;
    ax->wx = malloc((pairs * n * 8 + 1) * sizeof(float));
    if (!ax->wx) return sd_err(SD_ENOMEM, "resample: out of memory");
    for (size_t p = 0; p < pairs; p++)
        for (size_t t = 0; t < n; t++)
            for (size_t l = 0; l < 8; l++)
                ax->wx[(p * n + t) * 8 + l] = ax->w[(2 * p + l / 4) * n + t];
    return SD_OK;
}
#endif

static int area_generic(const sd_image *src, int dw, int dh, double sx, double sy, sd_image *out)
{
    const int c = src->c, sw = src->w;
    area_axis ax, ay;
    int rc = area_axis_build(sw, dw, sx, &ax);
    if (rc == SD_OK) {
        rc = area_axis_build(src->h, dh, sy, &ay);
        if (rc != SD_OK) area_axis_free(&ax);
    }
    if (rc == 1) return area_generic_scalar(src, dw, dh, sx, sy, out);
    if (rc < 0) return rc;

    void (*cvt)(const uint8_t *, size_t, float *) = area_cvt_scalar;
    void (*hrow)(const float *, int, const area_axis *, int, float *) = area_hrow_scalar;
    void (*vrow)(const float *const *, const float *, int, size_t, uint8_t *) = area_vrow_scalar;
#if RS_X86
    const int lvl = rs_level();
    if (lvl >= SD_RESAMPLE_SIMD_SSE2) {
        cvt = area_cvt_sse2;
        vrow = area_vrow_sse2;
        if (c != 1) hrow = area_hrow_sse2;
    }
    if (lvl >= SD_RESAMPLE_SIMD_AVX2 && (rc = area_axis_expand(&ax, dw)) == SD_OK) {
        cvt = area_cvt_avx2;
        vrow = area_vrow_avx2;
        if (c != 1) hrow = area_hrow_avx2;
    }
    if (rc < 0) {
        area_axis_free(&ax);
        area_axis_free(&ay);
        return rc;
    }
#endif
    const size_t width = (size_t)dw * (size_t)c, sstride = (size_t)sw * (size_t)c;
    /* float source row: the padded taps read up to n - 1 pixels past the end, the 4-lane loads
     * one more float; all zeros */
    const size_t flen = ((size_t)sw + (size_t)ax.n) * (size_t)c + 4;
    const size_t hlen = width + 4; /* + the 4th lane of the last pixel's store */
    const int ring = ay.n;
    rc = SD_OK;
#pragma omp parallel if ((long)dw * dh > 16384)
    {
        int y0, y1;
        rs_band(dh, &y0, &y1);
        float *f = calloc(flen + hlen * (size_t)ring, sizeof(float));
        int *tag = malloc((size_t)ring * sizeof(int));
        const float **rows = malloc((size_t)ring * sizeof *rows);
        if (!f || !tag || !rows) {
#pragma omp atomic write
            rc = SD_ENOMEM;
        } else {
            for (int i = 0; i < ring; i++) tag[i] = -1;
            for (int y = y0; y < y1; y++) {
                const int cnt = ay.cnt[y];
                for (int t = 0; t < cnt; t++) {
                    const int s = ay.start[y] + t, slot = s % ring;
                    float *h = f + flen + hlen * (size_t)slot;
                    if (tag[slot] != s) {
                        cvt(src->px + (size_t)s * sstride, sstride, f);
                        hrow(f, c, &ax, dw, h);
                        tag[slot] = s;
                    }
                    rows[t] = h;
                }
                uint8_t *d = out->px + (size_t)y * width;
                if (cnt) vrow(rows, ay.w + (size_t)y * (size_t)ay.n, cnt, width, d);
                else memset(d, 0, width);
            }
        }
        free(f);
        free(tag);
        free(rows);
    }
    area_axis_free(&ax);
    area_axis_free(&ay);
    return rc == SD_OK ? SD_OK : sd_err(SD_ENOMEM, "resample: out of memory");
}

static int cv_generic(const sd_image *src, int dw, int dh, int ksize, int area_mode, sd_image *out);

static int area_resample(const sd_image *src, int dw, int dh, sd_image *out)
{
    /* OpenCV's INTER_AREA enlarging (either axis) is its bilinear with area-mode weights */
    if (dw > src->w || dh > src->h) return cv_generic(src, dw, dh, 2, 1, out);
    double inv_x = (double)dw / src->w, inv_y = (double)dh / src->h;
    double sx = 1. / inv_x, sy = 1. / inv_y;
    int isx = (int)lrint(sx), isy = (int)lrint(sy);
    int fast = fabs(sx - isx) < DBL_EPSILON && fabs(sy - isy) < DBL_EPSILON;
    int rc = sd_image_alloc(out, dw, dh, src->c);
    if (rc) return rc;
    if (fast) rc = area_fast(src, dw, dh, isx, isy, out);
    else if (rs_level() == SD_RESAMPLE_SIMD_REFERENCE) rc = area_generic_scalar(src, dw, dh, sx, sy, out);
    else rc = area_generic(src, dw, dh, sx, sy, out);
    if (rc) sd_image_free(out);
    return rc;
}

/* ================================================================ OpenCV NEAREST_EXACT, LINEAR, CUBIC */

/* resizeNN_bitexact as in OpenCV 4.6: per axis ifx = ((src << 16) + dst / 2) / dst,
 * ifx0 = ifx / 2 - 1, source index min((ifx * x + ifx0) >> 16, src - 1), in int as OpenCV
 * computes it (sizes whose products would overflow OpenCV's int are refused). Later OpenCV
 * releases subtract src % 2 instead of 1; 4.6 is the reference's. */
static int cv_nearest_exact(const sd_image *src, int dw, int dh, sd_image *out)
{
    const int sw = src->w, sh = src->h, c = src->c;
    const int64_t ifx = (((int64_t)sw << 16) + dw / 2) / dw, ifx0 = ifx / 2 - 1;
    const int64_t ify = (((int64_t)sh << 16) + dh / 2) / dh, ify0 = ify / 2 - 1;
    if (((int64_t)sw << 16) + dw / 2 > INT32_MAX || ((int64_t)sh << 16) + dh / 2 > INT32_MAX ||
        ifx * (dw - 1) + ifx0 > INT32_MAX || ify * (dh - 1) + ify0 > INT32_MAX)
        return sd_err(SD_EUNSUPPORTED,
                      "resample: nearest %dx%d -> %dx%d overflows OpenCV's 32-bit index arithmetic",
                      sw, sh, dw, dh);
    int *xo = malloc((size_t)dw * sizeof *xo);
    if (!xo) return sd_err(SD_ENOMEM, "resample: out of memory");
    int rc = sd_image_alloc(out, dw, dh, c);
    if (rc) {
        free(xo);
        return rc;
    }
    for (int x = 0; x < dw; x++) {
        int sx = (int)((ifx * x + ifx0) >> 16);
        xo[x] = sx < sw - 1 ? sx : sw - 1;
    }
#pragma omp parallel for schedule(static) if ((long)dw * dh > 65536)
    for (int y = 0; y < dh; y++) {
        int sy = (int)((ify * y + ify0) >> 16);
        if (sy > sh - 1) sy = sh - 1;
        const uint8_t *s = src->px + (size_t)sy * (size_t)sw * (size_t)c;
        uint8_t *d = out->px + (size_t)y * (size_t)dw * (size_t)c;
        for (int x = 0; x < dw; x++) memcpy(d + (size_t)x * (size_t)c, s + (size_t)xo[x] * (size_t)c, (size_t)c);
    }
    free(xo);
    return SD_OK;
}

/* interpolateCubic (A = -0.75), in float as OpenCV. */
static void cv_cubic_coeffs(float x, float *k)
{
    const float A = -0.75f;
    k[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
    k[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    k[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
    k[3] = 1.f - k[0] - k[1] - k[2];
}

/* saturate_cast<short>(v * INTER_RESIZE_COEF_SCALE): cvRound (half to even), clamped. */
static int16_t cv_coef(float v)
{
    float f = v * 2048.f;
#if RS_X86
    int r = _mm_cvtss_si32(_mm_set_ss(f));
#else
    long r = lrintf(f);
#endif
    return (int16_t)(r < -32768 ? -32768 : r > 32767 ? 32767 : r);
}

/* The coefficient table of one axis (cv::hal::resize's loops over dx and dy): per output index
 * the source index and ksize fixed-point weights. `is_x`: the x loop also clamps a linear tap
 * that falls outside (weight 0 at the edge pixel); the y loop does not (its rows are clipped). */
static void cv_axis(int ssize, int dsize, int ksize, int area_mode, int is_x, int *ofs, int16_t *coef)
{
    const double inv = (double)dsize / ssize, scale = 1. / inv;
    for (int d = 0; d < dsize; d++) {
        float f;
        int s;
        if (!area_mode) {
            f = (float)((d + 0.5) * scale - 0.5);
            s = (int)floorf(f);
            f -= (float)s;
        } else {
            s = (int)floor(d * scale);
            f = (float)((d + 1) - (s + 1) * inv);
            f = f <= 0 ? 0.f : f - floorf(f);
        }
        if (is_x && ksize == 2) {
            if (s < 0) f = 0, s = 0;
            if (s >= ssize - 1) f = 0, s = ssize - 1;
        }
        float cb[4];
        if (ksize == 4) {
            cv_cubic_coeffs(f, cb);
        } else {
            cb[0] = 1.f - f;
            cb[1] = f;
        }
        for (int k = 0; k < ksize; k++) coef[(size_t)d * (size_t)ksize + (size_t)k] = cv_coef(cb[k]);
        ofs[d] = s;
    }
}

/* Horizontal pass of one source row (HResizeLinear / HResizeCubic, int sums): taps
 * s - ksize/2 + 1 + j clamped to the row (OpenCV's border replication at both ends). */
static void cv_hrow(const uint8_t *S, int sw, int c, const int *xo, const int16_t *xa, int ksize,
                    int dw, int32_t *D)
{
    const int k2 = ksize / 2 - 1;
    for (int dx = 0; dx < dw; dx++) {
        const int16_t *a = xa + (size_t)dx * (size_t)ksize;
        int idx[4];
        for (int j = 0; j < ksize; j++) {
            int t = xo[dx] - k2 + j;
            idx[j] = (t < 0 ? 0 : t > sw - 1 ? sw - 1 : t) * c;
        }
        for (int ch = 0; ch < c; ch++) {
            int32_t v = 0;
            for (int j = 0; j < ksize; j++) v += (int32_t)S[idx[j] + ch] * a[j];
            D[(size_t)dx * (size_t)c + (size_t)ch] = v;
        }
    }
}

static inline uint8_t clampu8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* VResizeLinear<uchar, int, short, ...> (OpenCV's specialisation for 8 bits, and its SIMD
 * VResizeLinearVec_32s8u, which computes the same): each value >> 4, times the weight, >> 16,
 * summed, (sum + 2) >> 2. The weights are >= 0 and sum to 2048, so nothing saturates. */
static void cv_vrow_linear(const int32_t *S0, const int32_t *S1, const int16_t *b, int width,
                           uint8_t *d)
{
    const int b0 = b[0], b1 = b[1];
    for (int x = 0; x < width; x++)
        d[x] = clampu8(((((S0[x] >> 4) * b0) >> 16) + (((S1[x] >> 4) * b1) >> 16) + 2) >> 2);
}

/* VResizeCubic with OpenCV's SIMD head (VResizeCubicVec_32s8u: float, weights * 2^-22,
 * S0*b0 + (S1*b1 + (S2*b2 + S3*b3)) with each product and sum rounded, round half to even) over
 * the first width - width % 8 elements; the rest the scalar (sum + 2^21) >> 22. */
static void cv_vrow_cubic(const int32_t *const *S, const int16_t *b, int width, uint8_t *d)
{
    const int n = width - width % 8;
    const float sc = 1.f / (2048 * 2048);
    const float f0 = b[0] * sc, f1 = b[1] * sc, f2 = b[2] * sc, f3 = b[3] * sc;
    for (int x = 0; x < n; x++) {
        float t = (float)S[3][x] * f3;
        t = (float)S[2][x] * f2 + t;
        t = (float)S[1][x] * f1 + t;
        t = (float)S[0][x] * f0 + t;
        volatile float tv = t; /* one rounding per operation, never contracted */
#if RS_X86
        int r = _mm_cvtss_si32(_mm_set_ss(tv));
#else
        long r = lrintf(tv);
#endif
        d[x] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    }
    for (int x = n; x < width; x++) {
        int64_t v = (int64_t)S[0][x] * b[0] + (int64_t)S[1][x] * b[1] + (int64_t)S[2][x] * b[2] +
                    (int64_t)S[3][x] * b[3];
        d[x] = clampu8((int)((v + (1 << 21)) >> 22));
    }
}

/* resizeGeneric_ for 8-bit images: INTER_LINEAR (ksize 2), INTER_CUBIC (ksize 4), and INTER_AREA
 * enlarging (ksize 2 with the area-mode weights). Per output row the needed source rows are run
 * through the horizontal pass (each kept in slot sy % ksize for the next rows), then the
 * vertical pass. */
static int cv_generic(const sd_image *src, int dw, int dh, int ksize, int area_mode, sd_image *out)
{
    const int sw = src->w, sh = src->h, c = src->c, width = dw * c;
    int *xo = malloc((size_t)dw * sizeof *xo), *yo = malloc((size_t)dh * sizeof *yo);
    int16_t *xa = malloc((size_t)dw * (size_t)ksize * sizeof *xa);
    int16_t *ya = malloc((size_t)dh * (size_t)ksize * sizeof *ya);
    int rc = SD_OK;
    if (!xo || !yo || !xa || !ya) rc = sd_err(SD_ENOMEM, "resample: out of memory");
    if (!rc) rc = sd_image_alloc(out, dw, dh, c);
    if (rc) {
        free(xo), free(yo), free(xa), free(ya);
        return rc;
    }
    cv_axis(sw, dw, ksize, area_mode, 1, xo, xa);
    cv_axis(sh, dh, ksize, area_mode, 0, yo, ya);
#pragma omp parallel if ((long)dw * dh > 16384)
    {
        int32_t *buf = malloc((size_t)ksize * (size_t)width * sizeof *buf);
        int tag[4] = {-1, -1, -1, -1};
        if (!buf) {
#pragma omp atomic write
            rc = SD_ENOMEM;
        }
        int y0, y1;
        rs_band(dh, &y0, &y1);
        for (int dy = y0; dy < y1 && buf; dy++) {
            const int32_t *rows[4];
            for (int k = 0; k < ksize; k++) {
                int sy = yo[dy] - ksize / 2 + 1 + k;
                sy = sy < 0 ? 0 : sy > sh - 1 ? sh - 1 : sy;
                int slot = sy % ksize;
                int32_t *r = buf + (size_t)slot * (size_t)width;
                if (tag[slot] != sy) {
                    cv_hrow(src->px + (size_t)sy * (size_t)sw * (size_t)c, sw, c, xo, xa, ksize, dw, r);
                    tag[slot] = sy;
                }
                rows[k] = r;
            }
            uint8_t *d = out->px + (size_t)dy * (size_t)width;
            const int16_t *b = ya + (size_t)dy * (size_t)ksize;
            if (ksize == 2) cv_vrow_linear(rows[0], rows[1], b, width, d);
            else cv_vrow_cubic(rows, b, width, d);
        }
        free(buf);
    }
    free(xo), free(yo), free(xa), free(ya);
    if (rc) {
        sd_image_free(out);
        return sd_err(SD_ENOMEM, "resample: out of memory");
    }
    return SD_OK;
}

/* cv::hal::resize's choice for INTER_LINEAR: an exact 2x shrink on both axes is INTER_AREA's
 * integer path ((sum + 2) >> 2); otherwise the generic bilinear. */
static int cv_linear(const sd_image *src, int dw, int dh, sd_image *out)
{
    double sx = 1. / ((double)dw / src->w), sy = 1. / ((double)dh / src->h);
    int isx = (int)lrint(sx), isy = (int)lrint(sy);
    if (fabs(sx - isx) < DBL_EPSILON && fabs(sy - isy) < DBL_EPSILON && isx == 2 && isy == 2) {
        int rc = sd_image_alloc(out, dw, dh, src->c);
        if (rc) return rc;
        rc = area_fast(src, dw, dh, 2, 2, out);
        if (rc) sd_image_free(out);
        return rc;
    }
    return cv_generic(src, dw, dh, 2, 0, out);
}

/* ================================================================ API */

int sd_resample(const sd_image *src, int w, int h, int filter, sd_image *out)
{
    memset(out, 0, sizeof *out);
    int rc = check_src(src, w, h, "resample");
    if (rc) return rc;
    if (filter < SD_RESAMPLE_BOX || filter > SD_RESAMPLE_CV_CUBIC)
        return sd_err(SD_EINVAL, "resample: unknown filter %d", filter);
    if (w == src->w && h == src->h) return copy_image(src, out);
    if (filter == SD_RESAMPLE_AREA) return area_resample(src, w, h, out);
    if (filter == SD_RESAMPLE_CV_NEAREST) return cv_nearest_exact(src, w, h, out);
    if (filter == SD_RESAMPLE_CV_LINEAR) return cv_linear(src, w, h, out);
    if (filter == SD_RESAMPLE_CV_CUBIC) return cv_generic(src, w, h, 4, 0, out);
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

static const char *const NAMES[] = {"box",     "bilinear",         "hamming",   "bicubic",
                                    "lanczos", "area",             "cv_nearest_exact",
                                    "cv_linear", "cv_cubic"};

int sd_resample_filter_from_name(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i <= SD_RESAMPLE_CV_CUBIC; i++)
        if (!strcasecmp(name, NAMES[i])) return i;
    return -1;
}

const char *sd_resample_filter_name(int filter)
{
    return filter >= 0 && filter <= SD_RESAMPLE_CV_CUBIC ? NAMES[filter] : "unknown";
}
