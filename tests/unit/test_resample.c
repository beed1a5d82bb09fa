/* Resampler parity with PIL 9.4 and OpenCV 4.6 (golden bytes made by
 * tests/golden/gen/make_resample_golden.py), thread-count independence, crop/flip, errors.
 *
 * Parity: every case must match with max abs diff <= 1; all cases are in fact byte-exact (the
 * test prints max diff and the differing-byte count per case, and fails if any PIL case or any
 * AREA case is not exact unless SD_RESAMPLE_TOLERANT=1 is set). The golden table runs at the
 * automatic SIMD level; test_simd_levels checks every level against the reference level. */
#include "test.h"

#include "base/error.h"
#include "io/resample.h"

#include <omp.h>
#include <time.h>

/* Mirror of src_pixel() in make_resample_golden.py. */
static int src_pixel(int x, int y, int ch, int c)
{
    if (c == 4 && ch == 3) {
        int a = (x * 23 + y * 5) % 300 - 20;
        return a < 0 ? 0 : a > 255 ? 255 : a;
    }
    int base = x * 5 + y * 3 + ch * 40;
    int noise = (x * x * 7 + y * y * 11 + x * y * 3 + ch * 29) % 61;
    return (base + noise * 3) % 256;
}

static void make_src(sd_image *im, int w, int h, int c)
{
    T_CHECK(sd_image_alloc(im, w, h, c) == SD_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++)
                im->px[((size_t)y * w + x) * c + ch] = (uint8_t)src_pixel(x, y, ch, c);
}

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/resample/%s", name);
}

static void test_golden(void)
{
    FILE *fc = fopen(data_path("cases.txt"), "r");
    T_CHECK(fc != NULL);
    if (!fc) return;
    FILE *fg = fopen(data_path("golden.bin"), "rb");
    T_CHECK(fg != NULL);
    if (!fg) { fclose(fc); return; }
    char line[512];
    int ncase = 0, nexact = 0, worst = 0;
    int worst_by_filter[SD_RESAMPLE_AREA + 1] = {0}, cases_by_filter[SD_RESAMPLE_AREA + 1] = {0};
    while (fgets(line, sizeof line, fc)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        int sw, sh, c, dw, dh;
        char fname[32], boxw[8] = "";
        float box[4];
        int n = sscanf(line, "%d %d %d %31s %d %d %7s %f %f %f %f", &sw, &sh, &c, fname, &dw, &dh,
                       boxw, &box[0], &box[1], &box[2], &box[3]);
        T_CHECKF(n == 6 || n == 11, "bad case line: %s", line);
        int filter = sd_resample_filter_from_name(fname);
        T_CHECK(filter >= 0);
        if (filter < 0) break;
        size_t nb = (size_t)dw * dh * c;
        uint8_t *want = malloc(nb);
        T_CHECK(fread(want, 1, nb, fg) == nb);
        sd_image src, out;
        make_src(&src, sw, sh, c);
        int rc = n == 11 ? sd_resample_box(&src, box, dw, dh, filter, &out)
                         : sd_resample(&src, dw, dh, filter, &out);
        T_CHECKF(rc == SD_OK, "%s: %s", line, sd_errmsg());
        if (rc == SD_OK) {
            T_EQ_INT(out.w, dw);
            T_EQ_INT(out.h, dh);
            T_EQ_INT(out.c, c);
            int maxd = 0;
            long ndiff = 0;
            for (size_t i = 0; i < nb; i++) {
                int d = abs((int)out.px[i] - (int)want[i]);
                if (d) ndiff++;
                if (d > maxd) maxd = d;
            }
            line[strcspn(line, "\n")] = 0;
            printf("# %-48s max diff %d, %ld of %zu bytes differ\n", line, maxd, ndiff, nb);
            T_CHECKF(maxd <= 1, "%s: max diff %d", line, maxd);
            if (!getenv("SD_RESAMPLE_TOLERANT")) T_CHECKF(maxd == 0, "%s: not exact", line);
            if (!maxd) nexact++;
            if (maxd > worst) worst = maxd;
            if (maxd > worst_by_filter[filter]) worst_by_filter[filter] = maxd;
            cases_by_filter[filter]++;
            sd_image_free(&out);
        }
        sd_image_free(&src);
        free(want);
        ncase++;
    }
    char extra;
    T_CHECK(fread(&extra, 1, 1, fg) == 0); /* golden.bin fully consumed */
    fclose(fc);
    fclose(fg);
    T_CHECK(ncase >= 40);
    for (int f = 0; f <= SD_RESAMPLE_AREA; f++)
        printf("# parity %-8s: %2d cases, max diff %d\n", sd_resample_filter_name(f),
               cases_by_filter[f], worst_by_filter[f]);
    printf("# %d cases, %d byte-exact, worst max diff %d\n", ncase, nexact, worst);
}

/* Identical output for 1, 2 and 3 threads on images big enough to go parallel, for the
 * reference loops and the SIMD level in use (each output row is computed by one thread; the
 * bands differ with the thread count). */
static void test_threads(void)
{
    sd_image src, src4;
    make_src(&src, 301, 203, 3);
    make_src(&src4, 301, 203, 4);
    int filters[] = {SD_RESAMPLE_LANCZOS, SD_RESAMPLE_BICUBIC, SD_RESAMPLE_AREA, SD_RESAMPLE_BOX};
    int sizes[][2] = {{150, 101}, {150, 203}, {250, 180}, {400, 300}};
    int saved = omp_get_max_threads();
    for (int k = 0; k < 2; k++) { /* the reference loops, then the best level here */
        sd_resample_set_simd(k ? -1 : SD_RESAMPLE_SIMD_REFERENCE);
        const int lvl = sd_resample_simd();
        for (size_t fi = 0; fi < sizeof filters / sizeof *filters; fi++)
            for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
                if (filters[fi] == SD_RESAMPLE_AREA && sizes[si][0] > 301) continue;
                const sd_image *in = si == 2 ? &src4 : &src;
                sd_image a, b, c3;
                omp_set_num_threads(1);
                T_CHECK(sd_resample(in, sizes[si][0], sizes[si][1], filters[fi], &a) == SD_OK);
                omp_set_num_threads(2);
                T_CHECK(sd_resample(in, sizes[si][0], sizes[si][1], filters[fi], &b) == SD_OK);
                omp_set_num_threads(3);
                T_CHECK(sd_resample(in, sizes[si][0], sizes[si][1], filters[fi], &c3) == SD_OK);
                size_t nb = (size_t)a.w * a.h * a.c;
                T_CHECKF(a.px && b.px && c3.px && !memcmp(a.px, b.px, nb) &&
                             !memcmp(a.px, c3.px, nb),
                         "level %d %s %dx%d", lvl, sd_resample_filter_name(filters[fi]),
                         sizes[si][0], sizes[si][1]);
                sd_image_free(&a);
                sd_image_free(&b);
                sd_image_free(&c3);
            }
    }
    sd_resample_set_simd(-1);
    omp_set_num_threads(saved);
    sd_image_free(&src);
    sd_image_free(&src4);
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* Every SIMD level (scalar tables, SSE2, AVX2, as far as this CPU goes) gives the bytes of the
 * reference level (the plain transcriptions of OpenCV's and Pillow's loops, which the golden
 * table pins to the libraries) on random sizes, ratios, channel counts and boxes, plus the
 * sizes the bucketing uses. Source pixels are random, alpha includes 0 and 255. */
static void test_simd_levels(void)
{
    uint32_t seed = 12345;
    const int best = (sd_resample_set_simd(-1), sd_resample_simd());
    printf("# best SIMD level here: %d\n", best);
    int ncase = 0, nbad = 0;
    for (int it = 0; it < 160; it++) {
        int sw, sh, c = (int[]){1, 3, 4, 3}[it % 4], dw, dh, filter, use_box = 0;
        float box[4];
        if (it < 6) { /* bucket-like sizes */
            static const int big[6][5] = {{1024, 768, 597, 448, SD_RESAMPLE_AREA},
                                          {1024, 768, 576, 432, SD_RESAMPLE_AREA},
                                          {767, 1023, 448, 597, SD_RESAMPLE_AREA},
                                          {400, 300, 597, 448, SD_RESAMPLE_LANCZOS},
                                          {333, 251, 576, 432, SD_RESAMPLE_BICUBIC},
                                          {1024, 768, 512, 384, SD_RESAMPLE_AREA}};
            sw = big[it][0], sh = big[it][1], dw = big[it][2], dh = big[it][3];
            filter = big[it][4];
            c = it == 2 ? 4 : 3;
        } else {
            sw = 1 + (int)(lcg(&seed) % 260), sh = 1 + (int)(lcg(&seed) % 200);
            filter = (int)(lcg(&seed) % (SD_RESAMPLE_AREA + 1));
            if (filter == SD_RESAMPLE_AREA) {
                dw = 1 + (int)(lcg(&seed) % (unsigned)sw), dh = 1 + (int)(lcg(&seed) % (unsigned)sh);
                if (it % 7 == 0 && sw >= 4 && sh >= 4) { /* integer ratios */
                    int k = 2 + (int)(lcg(&seed) % 3);
                    dw = sw / k > 0 ? sw / k : 1, dh = sh / k > 0 ? sh / k : 1;
                    sw = dw * k, sh = dh * k;
                }
            } else {
                dw = 1 + (int)(lcg(&seed) % 400), dh = 1 + (int)(lcg(&seed) % 300);
                if (it % 5 == 0) {
                    use_box = 1;
                    box[0] = (float)(lcg(&seed) % (unsigned)sw) * 0.5f;
                    box[1] = (float)(lcg(&seed) % (unsigned)sh) * 0.5f;
                    box[2] = box[0] + (float)(sw - box[0]) * (float)(1 + lcg(&seed) % 4) / 4.f;
                    box[3] = box[1] + (float)(sh - box[1]) * (float)(1 + lcg(&seed) % 4) / 4.f;
                }
            }
        }
        sd_image src;
        T_CHECK(sd_image_alloc(&src, sw, sh, c) == SD_OK);
        for (size_t i = 0; i < (size_t)sw * sh * c; i++) src.px[i] = (uint8_t)lcg(&seed);
        if (c == 4)
            for (size_t i = 3; i < (size_t)sw * sh * c; i += 4 * (1 + i % 3))
                src.px[i] = (i / 4) % 2 ? 255 : 0;
        sd_image ref;
        sd_resample_set_simd(SD_RESAMPLE_SIMD_REFERENCE);
        int rc = use_box ? sd_resample_box(&src, box, dw, dh, filter, &ref)
                         : sd_resample(&src, dw, dh, filter, &ref);
        T_CHECKF(rc == SD_OK, "%dx%dx%d -> %dx%d %s: %s", sw, sh, c, dw, dh,
                 sd_resample_filter_name(filter), sd_errmsg());
        for (int lvl = SD_RESAMPLE_SIMD_SCALAR; rc == SD_OK && lvl <= best; lvl++) {
            sd_image out;
            sd_resample_set_simd(lvl);
            T_CHECK(sd_resample_simd() == lvl);
            int rc2 = use_box ? sd_resample_box(&src, box, dw, dh, filter, &out)
                              : sd_resample(&src, dw, dh, filter, &out);
            T_CHECK(rc2 == SD_OK);
            if (rc2 != SD_OK) continue;
            size_t nb = (size_t)dw * dh * c;
            int same = !memcmp(out.px, ref.px, nb);
            T_CHECKF(same, "level %d: %dx%dx%d -> %dx%d %s%s differs from the reference", lvl,
                     sw, sh, c, dw, dh, sd_resample_filter_name(filter), use_box ? " (box)" : "");
            nbad += !same;
            sd_image_free(&out);
        }
        if (rc == SD_OK) sd_image_free(&ref);
        sd_image_free(&src);
        ncase++;
    }
    sd_resample_set_simd(-1);
    printf("# %d random/bucket cases x levels 1..%d vs reference: %d differ\n", ncase, best, nbad);
    /* forcing clamps to the CPU and -1 restores automatic choice */
    T_EQ_INT(sd_resample_set_simd(99), -1);
    T_CHECK(sd_resample_simd() == best);
    T_EQ_INT(sd_resample_set_simd(-1), best);
}

/* RGBA un-premultiplication (255 * c / a truncated) for every (value, alpha): an integer crop
 * through sd_resample_box is PIL's RGBA -> RGBa -> RGBA round trip. */
static void test_rgba_roundtrip(void)
{
    sd_image src, out;
    T_CHECK(sd_image_alloc(&src, 257, 256, 4) == SD_OK);
    for (int a = 0; a < 256; a++)
        for (int v = 0; v < 257; v++) {
            uint8_t *p = src.px + ((size_t)a * 257 + v) * 4;
            p[0] = (uint8_t)(v > 255 ? 255 : v), p[1] = (uint8_t)(255 - p[0]), p[2] = (uint8_t)(v * 7);
            p[3] = (uint8_t)a;
        }
    const float box[4] = {1, 0, 257, 256};
    T_CHECK(sd_resample_box(&src, box, 256, 256, SD_RESAMPLE_BICUBIC, &out) == SD_OK);
    int bad = 0;
    for (int a = 0; a < 256; a++)
        for (int x = 0; x < 256; x++)
            for (int ch = 0; ch < 4; ch++) {
                unsigned v = src.px[((size_t)a * 257 + x + 1) * 4 + ch], want = v;
                if (ch < 3 && a != 0 && a != 255) {
                    unsigned t = v * (unsigned)a + 128, pm = ((t >> 8) + t) >> 8;
                    want = 255u * pm / (unsigned)a;
                    if (want > 255) want = 255;
                } else if (ch < 3 && a == 0) {
                    want = 0;
                }
                bad += out.px[((size_t)a * 256 + x) * 4 + ch] != want;
            }
    T_EQ_INT(bad, 0);
    sd_image_free(&out);
    sd_image_free(&src);
}

static void test_identity_and_auto(void)
{
    sd_image src, out, ref;
    make_src(&src, 40, 30, 4);
    for (int f = 0; f <= SD_RESAMPLE_AREA; f++) {
        T_CHECK(sd_resample(&src, 40, 30, f, &out) == SD_OK);
        T_CHECK(out.px && !memcmp(out.px, src.px, 40 * 30 * 4)); /* same size: plain copy */
        sd_image_free(&out);
    }
    /* auto: shrink -> AREA, any enlargement -> LANCZOS */
    T_CHECK(sd_resample_auto(&src, 20, 15, &out) == SD_OK);
    T_CHECK(sd_resample(&src, 20, 15, SD_RESAMPLE_AREA, &ref) == SD_OK);
    T_CHECK(!memcmp(out.px, ref.px, 20 * 15 * 4));
    sd_image_free(&out);
    sd_image_free(&ref);
    T_CHECK(sd_resample_auto(&src, 41, 15, &out) == SD_OK);
    T_CHECK(sd_resample(&src, 41, 15, SD_RESAMPLE_LANCZOS, &ref) == SD_OK);
    T_CHECK(!memcmp(out.px, ref.px, 41 * 15 * 4));
    sd_image_free(&out);
    sd_image_free(&ref);
    /* constant opaque image stays constant under every filter (weights sum to one; with
     * alpha < 255 PIL's premultiply round trip would change it) */
    for (int i = 0; i < 40 * 30 * 4; i++) src.px[i] = (i & 3) == 3 ? 255 : 77;
    for (int f = 0; f <= SD_RESAMPLE_LANCZOS; f++) {
        T_CHECK(sd_resample(&src, 13, 47, f, &out) == SD_OK);
        int ok = 1;
        for (int i = 0; i < 13 * 47 * 4; i++) ok &= out.px[i] == ((i & 3) == 3 ? 255 : 77);
        T_CHECKF(ok, "filter %s", sd_resample_filter_name(f));
        sd_image_free(&out);
    }
    sd_image_free(&src);
}

static void test_errors(void)
{
    sd_image src, out;
    make_src(&src, 20, 10, 3);
    /* INTER_AREA enlarging is OpenCV's area-weighted bilinear (bytes: test_cv2_resize.c) */
    T_EQ_INT(sd_resample(&src, 21, 10, SD_RESAMPLE_AREA, &out), SD_OK);
    sd_image_free(&out);
    T_EQ_INT(sd_resample(&src, 0, 10, SD_RESAMPLE_LANCZOS, &out), SD_EINVAL);
    T_EQ_INT(sd_resample(&src, 10, -1, SD_RESAMPLE_LANCZOS, &out), SD_EINVAL);
    T_EQ_INT(sd_resample(&src, 10, 10, 99, &out), SD_EINVAL);
    T_EQ_INT(sd_resample(NULL, 10, 10, SD_RESAMPLE_BOX, &out), SD_EINVAL);
    float bad1[4] = {-1, 0, 10, 10}, bad2[4] = {0, 0, 21, 10}, bad3[4] = {5, 0, 4, 10};
    T_EQ_INT(sd_resample_box(&src, bad1, 5, 5, SD_RESAMPLE_BICUBIC, &out), SD_EINVAL);
    T_EQ_INT(sd_resample_box(&src, bad2, 5, 5, SD_RESAMPLE_BICUBIC, &out), SD_EINVAL);
    T_EQ_INT(sd_resample_box(&src, bad3, 5, 5, SD_RESAMPLE_BICUBIC, &out), SD_EINVAL);
    float ok[4] = {0, 0, 20, 10};
    T_EQ_INT(sd_resample_box(&src, ok, 5, 5, SD_RESAMPLE_AREA, &out), SD_EINVAL);
    sd_image bad = src;
    bad.c = 2;
    T_EQ_INT(sd_resample(&bad, 10, 5, SD_RESAMPLE_BOX, &out), SD_EINVAL);
    T_EQ_INT(sd_resample_filter_from_name("LANCZOS"), SD_RESAMPLE_LANCZOS);
    T_EQ_INT(sd_resample_filter_from_name("area"), SD_RESAMPLE_AREA);
    T_EQ_INT(sd_resample_filter_from_name("cubic"), -1);
    T_EQ_INT(sd_resample_filter_from_name(NULL), -1);
    T_EQ_STR(sd_resample_filter_name(SD_RESAMPLE_BOX), "box");
    /* extreme ratios work */
    T_CHECK(sd_resample(&src, 1, 1, SD_RESAMPLE_LANCZOS, &out) == SD_OK);
    sd_image_free(&out);
    T_CHECK(sd_resample(&src, 1, 1, SD_RESAMPLE_AREA, &out) == SD_OK);
    sd_image_free(&out);
    T_CHECK(sd_resample(&src, 500, 3, SD_RESAMPLE_BICUBIC, &out) == SD_OK);
    sd_image_free(&out);
    sd_image_free(&src);
}

static void test_crop_flip(void)
{
    sd_image src, c;
    make_src(&src, 9, 7, 3);
    T_CHECK(sd_image_crop(&src, 2, 3, 5, 4, &c) == SD_OK);
    int ok = 1;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 5; x++)
            for (int ch = 0; ch < 3; ch++)
                ok &= c.px[(y * 5 + x) * 3 + ch] == src_pixel(x + 2, y + 3, ch, 3);
    T_CHECK(ok);
    sd_image_flip_h(&c);
    ok = 1;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 5; x++)
            for (int ch = 0; ch < 3; ch++)
                ok &= c.px[(y * 5 + x) * 3 + ch] == src_pixel(2 + 4 - x, y + 3, ch, 3);
    T_CHECK(ok);
    sd_image_free(&c);
    T_EQ_INT(sd_image_crop(&src, 5, 0, 5, 4, &c), SD_EINVAL);
    T_EQ_INT(sd_image_crop(&src, -1, 0, 5, 4, &c), SD_EINVAL);
    T_EQ_INT(sd_image_crop(&src, 0, 4, 5, 4, &c), SD_EINVAL);
    T_EQ_INT(sd_image_crop(&src, 0, 0, 0, 4, &c), SD_EINVAL);
    T_CHECK(sd_image_crop(&src, 0, 0, 9, 7, &c) == SD_OK);
    T_CHECK(!memcmp(c.px, src.px, 9 * 7 * 3));
    sd_image_free(&c);
    sd_image_free(&src);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Timing only (reported, not asserted): RGB, one thread, best of 3, reference level vs the
 * level in use. */
static void test_speed(void)
{
    sd_image src, small, out;
    make_src(&src, 1024, 768, 3);
    make_src(&small, 400, 300, 3);
    struct { const sd_image *in; int w, h, f; } cs[] = {
        {&src, 597, 448, SD_RESAMPLE_AREA},     {&src, 512, 384, SD_RESAMPLE_AREA},
        {&small, 597, 448, SD_RESAMPLE_LANCZOS}, {&small, 597, 448, SD_RESAMPLE_BICUBIC},
        {&src, 597, 448, SD_RESAMPLE_LANCZOS},
    };
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        double best[2] = {1e9, 1e9};
        for (int k = 0; k < 2; k++) {
            sd_resample_set_simd(k ? -1 : SD_RESAMPLE_SIMD_REFERENCE);
            for (int r = 0; r < 3; r++) {
                double t0 = now();
                T_CHECK(sd_resample(cs[i].in, cs[i].w, cs[i].h, cs[i].f, &out) == SD_OK);
                double t = now() - t0;
                if (t < best[k]) best[k] = t;
                sd_image_free(&out);
            }
        }
        printf("# %dx%d -> %dx%d %-8s reference %.2f ms, level %d %.2f ms (1 thread)\n",
               cs[i].in->w, cs[i].in->h, cs[i].w, cs[i].h, sd_resample_filter_name(cs[i].f),
               best[0] * 1e3, sd_resample_simd(), best[1] * 1e3);
    }
    sd_resample_set_simd(-1);
    omp_set_num_threads(saved);
    sd_image_free(&src);
    sd_image_free(&small);
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* `test_resample --stages W H IMAGE...` (bench/bucket.sh): single-thread CPU time per image of
 * decode (sd_image_load, RGB), resize to W x H (sd_resample_auto), centre crop + JPEG q90
 * encode in memory; each image's best of 3, then the median over the images. Prints JSON. */
static int stages(int argc, char **argv)
{
    int w = atoi(argv[2]), h = atoi(argv[3]), n = argc - 4;
    if (w <= 0 || h <= 0 || n <= 0) {
        fprintf(stderr, "usage: test_resample --stages W H IMAGE...\n");
        return 2;
    }
    omp_set_num_threads(1);
    double *t = calloc((size_t)n * 3, sizeof(double));
    if (!t) return 1;
    for (int i = 0; i < n * 3; i++) t[i] = 1e9;
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < n; i++) {
            sd_image im, rs, cr;
            uint8_t *data;
            size_t len;
            double t0 = cpu_now();
            if (sd_image_load(argv[4 + i], SD_ALPHA_DROP, &im, NULL) < 0) {
                fprintf(stderr, "%s\n", sd_errmsg());
                return 1;
            }
            double t1 = cpu_now();
            if (sd_resample_auto(&im, w, h, &rs) < 0) {
                fprintf(stderr, "%s\n", sd_errmsg());
                return 1;
            }
            double t2 = cpu_now();
            int cw = w & ~63 ? w & ~63 : w, ch = h & ~63 ? h & ~63 : h;
            if (sd_image_crop(&rs, (w - cw) / 2, (h - ch) / 2, cw, ch, &cr) < 0 ||
                sd_image_encode_jpeg(&cr, 90, &data, &len) < 0) {
                fprintf(stderr, "%s\n", sd_errmsg());
                return 1;
            }
            double t3 = cpu_now();
            double d[3] = {t1 - t0, t2 - t1, t3 - t2};
            for (int k = 0; k < 3; k++)
                if (d[k] < t[k * n + i]) t[k * n + i] = d[k];
            free(data);
            sd_image_free(&im);
            sd_image_free(&rs);
            sd_image_free(&cr);
        }
    for (int k = 0; k < 3; k++) qsort(t + k * n, (size_t)n, sizeof(double), cmp_double);
    printf("{\"name\":\"bucket_stages_cpu_ms\",\"impl\":\"sd\",\"images\":%d,\"decode\":%.2f,"
           "\"resize\":%.2f,\"encode\":%.2f,\"simd\":%d}\n",
           n, t[n / 2] * 1e3, t[n + n / 2] * 1e3, t[2 * n + n / 2] * 1e3, sd_resample_simd());
    free(t);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--stages")) return stages(argc, argv);
    T_RUN(test_golden);
    T_RUN(test_threads);
    T_RUN(test_simd_levels);
    T_RUN(test_rgba_roundtrip);
    T_RUN(test_identity_and_auto);
    T_RUN(test_errors);
    T_RUN(test_crop_flip);
    T_RUN(test_speed);
    T_DONE();
}
