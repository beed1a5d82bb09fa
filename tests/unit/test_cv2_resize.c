/* OpenCV 4.6 cv2.resize byte parity for the filters the reference's resize_interpolation maps to
 * OpenCV besides shrinking INTER_AREA (test_resample.c): INTER_NEAREST_EXACT ("nearest"),
 * INTER_LINEAR ("bilinear"/"linear"), INTER_CUBIC ("bicubic"/"cubic") and enlarging INTER_AREA
 * ("area"). Golden bytes made by tests/golden/gen/make_cv2_resize_golden.py; every case must be
 * byte-identical. Plus thread-count independence, the name table of sd_bucket_interp_from_name
 * and the refusals. */
#include "test.h"

#include "base/error.h"
#include "data/bucket.h"
#include "io/resample.h"

#include <omp.h>

/* Mirror of src_pixel() in make_cv2_resize_golden.py. */
static int src_pixel(int x, int y, int ch, int c)
{
    if (c == 4 && ch == 3) {
        int a = (x * 23 + y * 5) % 300 - 20;
        return a < 0 ? 0 : a > 255 ? 255 : a;
    }
    int base = x * 5 + y * 3 + ch * 40;
    int noise = (int)(((int64_t)x * x * 7 + (int64_t)y * y * 11 + (int64_t)x * y * 3 + ch * 29) % 61);   /* Python ints */
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

static void test_golden(void)
{
    FILE *fc = fopen(t_root_pathf("tests/data/cv2_resize/cases.txt"), "r");
    FILE *fg = fopen(t_root_pathf("tests/data/cv2_resize/golden.bin"), "rb");
    T_CHECK(fc != NULL && fg != NULL);
    if (!fc || !fg) {
        if (fc) fclose(fc);
        if (fg) fclose(fg);
        return;
    }
    char line[256];
    int ncase = 0, by_filter[SD_RESAMPLE_CV_CUBIC + 1] = {0};
    while (fgets(line, sizeof line, fc)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        int sw, sh, c, dw, dh;
        char fname[32];
        T_CHECKF(sscanf(line, "%d %d %d %31s %d %d", &sw, &sh, &c, fname, &dw, &dh) == 6,
                 "bad case line: %s", line);
        int filter = sd_resample_filter_from_name(fname);
        T_CHECKF(filter >= 0, "unknown filter %s", fname);
        if (filter < 0) break;
        size_t nb = (size_t)dw * dh * c;
        uint8_t *want = malloc(nb);
        T_CHECK(want && fread(want, 1, nb, fg) == nb);
        sd_image src, out;
        make_src(&src, sw, sh, c);
        int rc = sd_resample(&src, dw, dh, filter, &out);
        line[strcspn(line, "\n")] = 0;
        T_CHECKF(rc == SD_OK, "%s: %s", line, sd_errmsg());
        if (rc == SD_OK) {
            T_EQ_INT(out.w, dw);
            T_EQ_INT(out.h, dh);
            T_EQ_INT(out.c, c);
            long ndiff = 0;
            int maxd = 0;
            for (size_t i = 0; i < nb; i++) {
                int d = abs((int)out.px[i] - (int)want[i]);
                ndiff += d != 0;
                if (d > maxd) maxd = d;
            }
            printf("# %-36s max diff %d, %ld of %zu bytes differ\n", line, maxd, ndiff, nb);
            T_CHECKF(ndiff == 0, "%s: %ld bytes differ (max %d)", line, ndiff, maxd);
            by_filter[filter]++;
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
    T_CHECK(ncase >= 50);
    T_CHECK(by_filter[SD_RESAMPLE_CV_NEAREST] >= 15 && by_filter[SD_RESAMPLE_CV_LINEAR] >= 15 &&
            by_filter[SD_RESAMPLE_CV_CUBIC] >= 15 && by_filter[SD_RESAMPLE_AREA] >= 5);
    printf("# %d cases byte-exact\n", ncase);
}

/* Same bytes for 1, 2 and 3 threads on images big enough to go parallel (each output row is
 * computed by one thread; the horizontal-pass rows each thread keeps differ with the bands). */
static void test_threads(void)
{
    sd_image src;
    make_src(&src, 301, 203, 4);
    const int filters[] = {SD_RESAMPLE_CV_NEAREST, SD_RESAMPLE_CV_LINEAR, SD_RESAMPLE_CV_CUBIC,
                           SD_RESAMPLE_AREA};
    const int sizes[][2] = {{150, 101}, {450, 307}, {250, 380}};
    int saved = omp_get_max_threads();
    for (size_t fi = 0; fi < sizeof filters / sizeof *filters; fi++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            if (filters[fi] == SD_RESAMPLE_AREA && si == 0) continue;
            sd_image o[3];
            for (int t = 0; t < 3; t++) {
                omp_set_num_threads(t + 1);
                T_CHECK(sd_resample(&src, sizes[si][0], sizes[si][1], filters[fi], &o[t]) == SD_OK);
            }
            size_t nb = (size_t)sizes[si][0] * sizes[si][1] * 4;
            T_CHECKF(o[0].px && o[1].px && o[2].px && !memcmp(o[0].px, o[1].px, nb) &&
                         !memcmp(o[0].px, o[2].px, nb),
                     "%s %dx%d", sd_resample_filter_name(filters[fi]), sizes[si][0], sizes[si][1]);
            for (int t = 0; t < 3; t++) sd_image_free(&o[t]);
        }
    omp_set_num_threads(saved);
    sd_image_free(&src);
}

/* The reference's resize_interpolation names (library/utils.py get_cv2_interpolation /
 * resize_image): lanczos and box are PIL, the rest OpenCV. */
static void test_names(void)
{
    static const struct {
        const char *name;
        int filter;
    } tab[] = {{"lanczos", SD_RESAMPLE_LANCZOS}, {"box", SD_RESAMPLE_BOX},
               {"area", SD_RESAMPLE_AREA},       {"nearest", SD_RESAMPLE_CV_NEAREST},
               {"bilinear", SD_RESAMPLE_CV_LINEAR}, {"linear", SD_RESAMPLE_CV_LINEAR},
               {"bicubic", SD_RESAMPLE_CV_CUBIC},   {"cubic", SD_RESAMPLE_CV_CUBIC}};
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++) {
        int f = -7;
        T_EQ_INT(sd_bucket_interp_from_name(tab[i].name, &f), SD_OK);
        T_CHECKF(f == tab[i].filter, "%s -> %d", tab[i].name, f);
    }
    int f = -7;
    T_EQ_INT(sd_bucket_interp_from_name("lanczos4", &f), SD_EINVAL);
    T_EQ_INT(sd_bucket_interp_from_name("Cubic", &f), SD_EINVAL);
    T_EQ_INT(f, -7);
    T_EQ_INT(sd_resample_filter_from_name("cv_linear"), SD_RESAMPLE_CV_LINEAR);
    T_EQ_STR(sd_resample_filter_name(SD_RESAMPLE_CV_NEAREST), "cv_nearest_exact");
    T_EQ_STR(sd_resample_filter_name(SD_RESAMPLE_CV_CUBIC), "cv_cubic");
}

static void test_errors(void)
{
    sd_image src, out;
    make_src(&src, 20, 10, 3);
    float box[4] = {0, 0, 20, 10};
    T_EQ_INT(sd_resample_box(&src, box, 5, 5, SD_RESAMPLE_CV_CUBIC, &out), SD_EINVAL);
    T_EQ_INT(sd_resample(&src, 5, 5, SD_RESAMPLE_CV_CUBIC + 1, &out), SD_EINVAL);
    /* nearest: OpenCV's int arithmetic ((dst - 1) * ifx) would overflow */
    T_EQ_INT(sd_resample(&src, 120000, 1, SD_RESAMPLE_CV_NEAREST, &out), SD_OK);
    sd_image_free(&out);
    sd_image wide;
    make_src(&wide, 40000, 1, 1);
    T_EQ_INT(sd_resample(&wide, 20000, 1, SD_RESAMPLE_CV_NEAREST, &out), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "overflows") != NULL);
    T_CHECK(out.px == NULL);
    T_EQ_INT(sd_resample(&wide, 20000, 1, SD_RESAMPLE_CV_LINEAR, &out), SD_OK);
    sd_image_free(&out);
    sd_image_free(&wide);
    /* same size: a copy */
    T_EQ_INT(sd_resample(&src, 20, 10, SD_RESAMPLE_CV_CUBIC, &out), SD_OK);
    T_CHECK(!memcmp(out.px, src.px, 600));
    sd_image_free(&out);
    sd_image_free(&src);
}

int main(void)
{
    T_RUN(test_golden);
    T_RUN(test_threads);
    T_RUN(test_names);
    T_RUN(test_errors);
    T_DONE();
}
