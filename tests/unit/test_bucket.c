/* lib/data/bucket: the bucket list, selection in modes A/B/C, trim, crop_ltrb and the AR-error
 * mean against tests/data/bucket/golden.txt (tests/golden/gen/make_bucket_golden.py, a
 * transcription of the reference's code run with numpy), the worked examples of
 * reference-behaviour.md §2.8, configuration errors and the resize/crop stage. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "data/bucket.h"
#include "data/bucket_record.h"
#include "io/resample.h"
#include "test.h"

static const char *data_path(const char *rel)
{
    return t_root_pathf("%s", rel);
}

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0 || (a == 0 && b == 0); }

static void test_golden(void)
{
    FILE *f = fopen(data_path("tests/data/bucket/golden.txt"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    char line[65536];
    sd_bucket_set set;
    int have_set = 0, cfg_ok = 0, lineno = 0;
    long nsizes = 0, nerr = 0, ncfg = 0, ncfgerr = 0, nmean = 0, nfail = 0;
    int modes[3] = {0, 0, 0};
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#') continue;
        if (!strncmp(line, "cfg ", 4)) {
            if (have_set) sd_bucket_set_free(&set);
            have_set = 0;
            sd_bucket_cfg c;
            T_CHECK(sscanf(line + 4, "%d %d %d %d %d %d %d", &c.res_w, &c.res_h, &c.min_reso, &c.max_reso,
                           &c.steps, &c.no_upscale, &c.enable_bucket) == 7);
            int rc = sd_bucket_set_init(&set, &c);
            cfg_ok = rc == SD_OK;
            have_set = cfg_ok;
            ncfg++;
            if (cfg_ok) modes[set.mode]++;
            continue;
        }
        if (!strncmp(line, "cfgerr", 6)) {
            T_CHECKF(!cfg_ok, "line %d: configuration should be rejected", lineno);
            ncfgerr++;
            continue;
        }
        if (!strncmp(line, "list ", 5)) {
            T_CHECKF(cfg_ok, "line %d: configuration rejected: %s", lineno, sd_errmsg());
            if (!cfg_ok) continue;
            char *p = line + 5, *e;
            long n = strtol(p, &e, 10);
            p = e;
            int expect_n = set.mode == SD_BUCKET_MODE_B ? 0 : set.n;
            T_EQ_INT(n, expect_n);
            for (long i = 0; i < n && i < expect_n; i++) {
                long w = strtol(p, &e, 10);
                p = e;
                long h = strtol(p, &e, 10);
                p = e;
                if (w != set.resos[i][0] || h != set.resos[i][1]) {
                    T_CHECKF(0, "line %d: bucket %ld is %dx%d, want %ldx%ld", lineno, i, set.resos[i][0],
                             set.resos[i][1], w, h);
                    break;
                }
            }
            continue;
        }
        if (!strncmp(line, "s ", 2) || !strncmp(line, "e ", 2)) {
            if (!cfg_ok) continue;
            int w, h;
            sscanf(line + 2, "%d %d", &w, &h);
            sd_bucket_plan p;
            int rc = sd_bucket_select(&set, w, h, &p);
            nsizes++;
            if (line[0] == 'e') {
                nerr++;
                if (rc == SD_OK) {
                    nfail++;
                    T_CHECKF(0, "line %d: %dx%d should fail, got bucket %dx%d", lineno, w, h, p.bucket_w,
                             p.bucket_h);
                }
                continue;
            }
            int bw, bh;
            long long rw, rh, tx, ty;
            double are, l, t, r, b;
            int n = sscanf(line + 2, "%*d %*d %d %d %lld %lld %lld %lld %lf %lf %lf %lf %lf", &bw, &bh, &rw,
                           &rh, &tx, &ty, &are, &l, &t, &r, &b);
            T_EQ_INT(n, 11);
            int ok = rc == SD_OK && p.bucket_w == bw && p.bucket_h == bh && p.resized_w == rw &&
                     p.resized_h == rh && p.trim_x == tx && p.trim_y == ty && same_double(p.ar_error, are) &&
                     same_double(p.crop_ltrb[0], l) && same_double(p.crop_ltrb[1], t) &&
                     same_double(p.crop_ltrb[2], r) && same_double(p.crop_ltrb[3], b);
            if (!ok) {
                nfail++;
                if (nfail < 20)
                    T_CHECKF(0,
                             "line %d: %dx%d -> rc %d (%s) bucket %dx%d resized %lldx%lld trim %lld,%lld "
                             "ar_error %.17g ltrb %.17g %.17g %.17g %.17g",
                             lineno, w, h, rc, sd_errmsg(), p.bucket_w, p.bucket_h, (long long)p.resized_w,
                             (long long)p.resized_h, (long long)p.trim_x, (long long)p.trim_y, p.ar_error,
                             p.crop_ltrb[0], p.crop_ltrb[1], p.crop_ltrb[2], p.crop_ltrb[3]);
            }
            continue;
        }
        if (!strncmp(line, "mean ", 5)) {
            long n, seed;
            double want;
            T_CHECK(sscanf(line + 5, "%ld %ld %lf", &n, &seed, &want) == 3);
            double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
            for (long i = 0; i < n; i++)
                v[i] = (double)(((int64_t)i * 2654435761LL + seed) % 1000003) / 1000003.0 / 2;
            double got = sd_bucket_mean(v, (size_t)n);
            T_CHECKF(same_double(got, want), "mean of %ld: %.17g, numpy %.17g", n, got, want);
            free(v);
            nmean++;
        }
    }
    if (have_set) sd_bucket_set_free(&set);
    fclose(f);
    printf("# golden: %ld configurations (%ld rejected; modes A %d, B %d, C %d), %ld sizes (%ld errors), "
           "%ld means, %ld mismatches\n",
           ncfg, ncfgerr, modes[0], modes[1], modes[2], nsizes, nerr, nmean, nfail);
    T_CHECK(nfail == 0);
    T_CHECK(nsizes > 2000 && modes[0] >= 5 && modes[1] >= 4 && modes[2] >= 3);
}

/* reference-behaviour.md §2.8 */
static void test_worked_examples(void)
{
    sd_bucket_cfg ca = {512, 512, 1, 256, 1024, 64, 0};
    sd_bucket_cfg cb = ca;
    cb.no_upscale = 1;
    sd_bucket_set a, b;
    T_EQ_INT(sd_bucket_set_init(&a, &ca), SD_OK);
    T_EQ_INT(sd_bucket_set_init(&b, &cb), SD_OK);
    T_EQ_INT(a.n, 17);
    static const struct {
        int w, h, abw, abh, arw, arh;
        double l, t, r, b;
        int bbw, bbh, brw, brh;
    } ex[] = {
        {1200, 800, 640, 384, 640, 427, 32, 0, 608, 384, 576, 384, 576, 384},
        {1000, 700, 576, 448, 640, 448, 0, 22, 576, 425.2, 576, 384, 576, 403},
        {768, 1024, 448, 576, 448, 597, 8, 0, 440, 576, 384, 512, 384, 512},
        {300, 400, 448, 576, 448, 597, 8, 0, 440, 576, 256, 384, 300, 400},
        {2000, 500, 1024, 256, 1024, 256, 0, 0, 1024, 256, 1024, 256, 1024, 256},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        sd_bucket_plan p, q;
        T_EQ_INT(sd_bucket_select(&a, ex[i].w, ex[i].h, &p), SD_OK);
        T_EQ_INT(p.bucket_w, ex[i].abw);
        T_EQ_INT(p.bucket_h, ex[i].abh);
        T_EQ_INT(p.resized_w, ex[i].arw);
        T_EQ_INT(p.resized_h, ex[i].arh);
        T_NEAR(p.crop_ltrb[0], ex[i].l, 1e-9);
        T_NEAR(p.crop_ltrb[1], ex[i].t, 1e-9);
        T_NEAR(p.crop_ltrb[2], ex[i].r, 1e-9);
        T_NEAR(p.crop_ltrb[3], ex[i].b, 1e-9);
        T_EQ_INT(sd_bucket_select(&b, ex[i].w, ex[i].h, &q), SD_OK);
        T_EQ_INT(q.bucket_w, ex[i].bbw);
        T_EQ_INT(q.bucket_h, ex[i].bbh);
        T_EQ_INT(q.resized_w, ex[i].brw);
        T_EQ_INT(q.resized_h, ex[i].brh);
    }
    /* 1200x800: 43 rows trimmed, top 21; 300x400 mode B: 44 columns and 16 rows trimmed */
    sd_bucket_plan p;
    sd_bucket_select(&a, 1200, 800, &p);
    T_EQ_INT(p.trim_y, 21);
    T_EQ_INT(p.trim_x, 0);
    sd_bucket_select(&b, 300, 400, &p);
    T_EQ_INT(p.resized_w - p.bucket_w, 44);
    T_EQ_INT(p.resized_h - p.bucket_h, 16);
    T_EQ_INT(p.trim_x, 22);
    T_EQ_INT(p.trim_y, 8);
    sd_bucket_set_free(&a);
    sd_bucket_set_free(&b);

    /* §2.1 lists */
    int(*r)[2], n;
    T_EQ_INT(sd_bucket_resolutions(768, 768, 256, 1024, 64, &r, &n), SD_OK);
    T_EQ_INT(n, 19);
    T_EQ_INT(r[0][0], 256);
    T_EQ_INT(r[0][1], 1024);
    T_EQ_INT(r[9][0], 768);
    T_EQ_INT(r[9][1], 768);
    free(r);
    T_EQ_INT(sd_bucket_resolutions(1024, 1024, 256, 2048, 64, &r, &n), SD_OK);
    T_EQ_INT(n, 41);
    T_EQ_INT(r[20][0], 1024);
    T_EQ_INT(r[20][1], 1024);
    free(r);
}

static void test_config_errors(void)
{
    sd_bucket_set s;
    sd_bucket_cfg c = {512, 512, 1, 256, 1024, 64, 0};
    c.min_reso = 600;
    T_EQ_INT(sd_bucket_set_init(&s, &c), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "min_bucket_reso 576 is larger") != NULL);
    c.min_reso = 256;
    c.max_reso = 448;
    T_EQ_INT(sd_bucket_set_init(&s, &c), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "max_bucket_reso 448 is smaller") != NULL);
    c.max_reso = 1000; /* rounded up to 1024 */
    T_EQ_INT(sd_bucket_set_init(&s, &c), SD_OK);
    T_EQ_INT(s.max_reso, 1024);
    T_EQ_INT(s.max_adjusted, 1);
    sd_bucket_set_free(&s);
    c.min_reso = 32;
    T_EQ_INT(sd_bucket_set_init(&s, &c), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "rounds down to 0") != NULL);
    c.min_reso = 256;
    c.steps = 0;
    T_EQ_INT(sd_bucket_set_init(&s, &c), SD_EINVAL);
    c.steps = 64;
    c.res_w = 0;
    T_EQ_INT(sd_bucket_set_init(&s, &c), SD_EINVAL);
    /* mode C ignores min/max/steps */
    sd_bucket_cfg cc = {768, 512, 0, 9999, 1, 0, 0};
    T_EQ_INT(sd_bucket_set_init(&s, &cc), SD_OK);
    T_EQ_INT(s.mode, SD_BUCKET_MODE_C);
    sd_bucket_plan p;
    T_EQ_INT(sd_bucket_select(&s, 1000, 1000, &p), SD_OK);
    T_EQ_INT(p.bucket_w, 768);
    T_EQ_INT(p.bucket_h, 512);
    T_EQ_INT(p.resized_w, 768);
    T_EQ_INT(p.resized_h, 768);
    T_EQ_INT(p.trim_y, 128);
    T_EQ_INT(sd_bucket_select(&s, 0, 10, &p), SD_EINVAL);
    sd_bucket_set_free(&s);
    /* mode B: a side smaller than the step is an error, never a 0-sized bucket */
    sd_bucket_cfg cb = {512, 512, 1, 256, 1024, 64, 1};
    T_EQ_INT(sd_bucket_set_init(&s, &cb), SD_OK);
    T_EQ_INT(sd_bucket_select(&s, 63, 500, &p), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "width (63 after the resize) is smaller than bucket_reso_steps 64") != NULL);
    T_EQ_INT(sd_bucket_select(&s, 500, 40, &p), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "height") != NULL);
    T_EQ_INT(sd_bucket_select(&s, 64, 64, &p), SD_OK);
    T_EQ_INT(p.bucket_w, 64);
    T_EQ_INT(sd_bucket_select(&s, 100, 100, &p), SD_OK);
    T_EQ_INT(p.bucket_w, 64);
    T_EQ_INT(p.trim_x, 18);
    T_EQ_INT(sd_bucket_select(&s, 100000, 10, &p), SD_EINVAL); /* would divide by zero */
    sd_bucket_set_free(&s);

    int f;
    T_EQ_INT(sd_bucket_interp_from_name("lanczos", &f), SD_OK);
    T_EQ_INT(f, SD_RESAMPLE_LANCZOS);
    T_EQ_INT(sd_bucket_interp_from_name("area", &f), SD_OK);
    T_EQ_INT(f, SD_RESAMPLE_AREA);
    T_EQ_INT(sd_bucket_interp_from_name("box", &f), SD_OK);
    T_EQ_INT(sd_bucket_interp_from_name("bilinear", &f), SD_OK);
    T_EQ_INT(f, SD_RESAMPLE_CV_LINEAR);
    T_EQ_INT(sd_bucket_interp_from_name("cubic", &f), SD_OK);
    T_EQ_INT(f, SD_RESAMPLE_CV_CUBIC);
    T_EQ_INT(sd_bucket_interp_from_name("nearest", &f), SD_OK);
    T_EQ_INT(f, SD_RESAMPLE_CV_NEAREST);
    T_EQ_INT(sd_bucket_interp_from_name("hamming", &f), SD_EINVAL);
}

static void fill(sd_image *im)
{
    for (size_t i = 0; i < (size_t)im->w * im->h * im->c; i++) im->px[i] = (uint8_t)((i * 7919u) >> 3);
}

static void test_apply(void)
{
    sd_bucket_cfg c = {512, 512, 1, 256, 1024, 64, 0};
    sd_bucket_set s;
    T_EQ_INT(sd_bucket_set_init(&s, &c), SD_OK);
    sd_image src, out, ref, crop;
    /* shrink: AREA, then the centre trim; equals resample + crop done by hand */
    T_EQ_INT(sd_image_alloc(&src, 1024, 768, 3), SD_OK);
    fill(&src);
    sd_bucket_plan p;
    T_EQ_INT(sd_bucket_select(&s, 1024, 768, &p), SD_OK);
    T_EQ_INT(p.bucket_w, 576);
    T_EQ_INT(p.resized_w, 597);
    T_EQ_INT(sd_bucket_apply(&src, &p, -1, 0, &out), SD_OK);
    T_EQ_INT(out.w, 576);
    T_EQ_INT(out.h, 448);
    T_EQ_INT(sd_resample(&src, 597, 448, SD_RESAMPLE_AREA, &ref), SD_OK);
    T_EQ_INT(sd_image_crop(&ref, 10, 0, 576, 448, &crop), SD_OK);
    T_CHECK(memcmp(out.px, crop.px, (size_t)576 * 448 * 3) == 0);
    sd_image_free(&out);
    sd_image_free(&ref);
    sd_image_free(&crop);
    /* forced LANCZOS */
    T_EQ_INT(sd_bucket_apply(&src, &p, SD_RESAMPLE_LANCZOS, 0, &out), SD_OK);
    T_EQ_INT(sd_resample(&src, 597, 448, SD_RESAMPLE_LANCZOS, &ref), SD_OK);
    T_EQ_INT(sd_image_crop(&ref, 10, 0, 576, 448, &crop), SD_OK);
    T_CHECK(memcmp(out.px, crop.px, (size_t)576 * 448 * 3) == 0);
    sd_image_free(&out);
    sd_image_free(&ref);
    sd_image_free(&crop);
    /* wrong source size */
    sd_bucket_plan q = p;
    q.image_w = 1000;
    T_EQ_INT(sd_bucket_apply(&src, &q, -1, 0, &out), SD_EINVAL);
    /* pixel limit */
    T_EQ_INT(sd_bucket_apply(&src, &p, -1, 1000, &out), SD_ERANGE);
    sd_image_free(&src);
    /* enlarge: LANCZOS by default */
    T_EQ_INT(sd_image_alloc(&src, 300, 400, 4), SD_OK);
    fill(&src);
    T_EQ_INT(sd_bucket_select(&s, 300, 400, &p), SD_OK);
    T_EQ_INT(sd_bucket_apply(&src, &p, -1, 0, &out), SD_OK);
    T_EQ_INT(out.w, 448);
    T_EQ_INT(out.h, 576);
    T_EQ_INT(out.c, 4);
    T_EQ_INT(sd_resample(&src, 448, 597, SD_RESAMPLE_LANCZOS, &ref), SD_OK);
    T_EQ_INT(sd_image_crop(&ref, 0, 10, 448, 576, &crop), SD_OK);
    T_CHECK(memcmp(out.px, crop.px, (size_t)448 * 576 * 4) == 0);
    sd_image_free(&out);
    sd_image_free(&ref);
    sd_image_free(&crop);
    /* forced AREA and CUBIC enlarge too (OpenCV), RGBA channels independent */
    const int forced[2] = {SD_RESAMPLE_AREA, SD_RESAMPLE_CV_CUBIC};
    for (int i = 0; i < 2; i++) {
        T_EQ_INT(sd_bucket_apply(&src, &p, forced[i], 0, &out), SD_OK);
        T_EQ_INT(sd_resample(&src, 448, 597, forced[i], &ref), SD_OK);
        T_EQ_INT(sd_image_crop(&ref, 0, 10, 448, 576, &crop), SD_OK);
        T_CHECK(memcmp(out.px, crop.px, (size_t)448 * 576 * 4) == 0);
        sd_image_free(&out);
        sd_image_free(&ref);
        sd_image_free(&crop);
    }
    sd_image_free(&src);
    /* exact bucket size: a copy */
    T_EQ_INT(sd_image_alloc(&src, 512, 512, 3), SD_OK);
    fill(&src);
    T_EQ_INT(sd_bucket_select(&s, 512, 512, &p), SD_OK);
    T_EQ_INT(sd_bucket_apply(&src, &p, -1, 0, &out), SD_OK);
    T_CHECK(out.w == 512 && out.h == 512 && memcmp(out.px, src.px, (size_t)512 * 512 * 3) == 0);
    sd_image_free(&out);
    sd_image_free(&src);
    sd_bucket_set_free(&s);
}

/* Random configurations and image sizes (including extreme aspect ratios and sizes up to 2^28
 * pixels): never a crash, never a 0-sized bucket; every plan is consistent. */
static void test_random_invariants(void)
{
    uint64_t x = 88172645463325252ULL;
#define RND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
    long nplans = 0, nrej = 0, bad = 0;
    for (int k = 0; k < 300; k++) {
        sd_bucket_cfg c;
        c.res_w = 1 + (int)(RND() % 4096);
        c.res_h = RND() % 3 ? c.res_w : 1 + (int)(RND() % 4096);
        c.steps = 1 + (int)(RND() % 128);
        c.min_reso = (int)(RND() % 1024);
        c.max_reso = c.min_reso + (int)(RND() % 8192);
        c.no_upscale = (int)(RND() % 2);
        c.enable_bucket = RND() % 5 != 0;
        sd_bucket_set s;
        if (sd_bucket_set_init(&s, &c) != SD_OK) {
            nrej++;
            continue;
        }
        for (int i = 0; i < 200; i++) {
            int w, h;
            switch (RND() % 4) {
            case 0: w = 1 + (int)(RND() % 64); h = 1 + (int)(RND() % 100000); break;
            case 1: w = 1 + (int)(RND() % 100000); h = 1 + (int)(RND() % 64); break;
            case 2: w = 1 + (int)(RND() % 16384); h = 1 + (int)(RND() % 16384); break;
            default: w = 1 + (int)(RND() % 2048); h = 1 + (int)(RND() % 2048); break;
            }
            sd_bucket_plan p;
            int rc = sd_bucket_select(&s, w, h, &p);
            if (rc != SD_OK) {
                if (rc != SD_EINVAL || s.mode != SD_BUCKET_MODE_B) bad++;
                continue;
            }
            nplans++;
            int okp = p.bucket_w >= 1 && p.bucket_h >= 1 && p.resized_w >= p.bucket_w &&
                      p.resized_h >= p.bucket_h && p.trim_x >= 0 && p.trim_y >= 0 &&
                      p.trim_x + p.bucket_w <= p.resized_w && p.trim_y + p.bucket_h <= p.resized_h &&
                      (p.resized_w == p.bucket_w || p.resized_h == p.bucket_h || s.mode == SD_BUCKET_MODE_B) &&
                      isfinite(p.ar_error) && isfinite(p.crop_ltrb[0]) && isfinite(p.crop_ltrb[3]);
            if (s.mode == SD_BUCKET_MODE_B)
                okp = okp && p.bucket_w % c.steps == 0 && p.bucket_h % c.steps == 0 && p.resized_w <= w &&
                      p.resized_h <= h;
            if (!okp) {
                if (bad < 10)
                    printf("#   cfg %dx%d %d..%d/%d nu %d en %d image %dx%d -> bucket %dx%d resized %lldx%lld\n",
                           c.res_w, c.res_h, c.min_reso, c.max_reso, c.steps, c.no_upscale, c.enable_bucket, w,
                           h, p.bucket_w, p.bucket_h, (long long)p.resized_w, (long long)p.resized_h);
                bad++;
            }
        }
        sd_bucket_set_free(&s);
    }
#undef RND
    printf("# random: %ld plans, %ld configurations rejected, %ld bad\n", nplans, nrej, bad);
    T_EQ_INT(bad, 0);
    T_CHECK(nplans > 20000);
}

/* Helper for tests/cli/bucket*.sh: `test_bucket --mkimg OUT W H [C]` writes a patterned PNG (or
 * JPEG when OUT ends in .jpg) of W×H with C channels (default 3). */
static int mkimg(int argc, char **argv)
{
    if (argc < 5) return 2;
    int w = atoi(argv[3]), h = atoi(argv[4]), c = argc > 5 ? atoi(argv[5]) : 3;
    sd_image im;
    if (sd_image_alloc(&im, w, h, c) < 0) return 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                im.px[((size_t)y * w + x) * c + k] =
                    (uint8_t)(k == 3 ? 128 + (x * 7 + y) % 128 : (x * (k + 1) * 3 + y * (3 - k) * 5 + ((x ^ y) & 31)));
    size_t n = strlen(argv[2]);
    int rc = n > 4 && !strcmp(argv[2] + n - 4, ".jpg") ? sd_image_write_jpeg(argv[2], &im, 90)
                                                       : sd_image_write_png(argv[2], &im);
    sd_image_free(&im);
    if (rc < 0) fprintf(stderr, "%s\n", sd_errmsg());
    return rc < 0;
}

/* the per-configuration cache of the tools: equal configurations share one set, entries stay put */
static void test_set_cache(void)
{
    sd_bucket_sets c = {0};
    sd_bucket_cfg x = {.res_w = 512, .res_h = 512, .enable_bucket = 1, .min_reso = 256, .max_reso = 1024, .steps = 64};
    sd_bucket_cfg y = x, off = x, off2 = x, bad = x;
    y.steps = 32;
    off.enable_bucket = 0;
    off2.enable_bucket = 0;
    off2.steps = 8; /* bucketing off: only the resolution counts */
    bad.min_reso = 2048;
    T_CHECK(sd_bucket_cfg_same(&off, &off2));
    T_CHECK(!sd_bucket_cfg_same(&x, &y));
    int created = -1;
    const sd_bucket_set_entry *e0 = sd_bucket_sets_get(&c, &x, &created);
    T_CHECK(e0 && created == 1 && e0->ok && e0->index == 0);
    for (int i = 0; i < 40; i++) { /* grow past the first allocation */
        sd_bucket_cfg z = x;
        z.res_h = 512 + 8 * (i + 1);
        T_CHECK(sd_bucket_sets_get(&c, &z, NULL) != NULL);
    }
    T_CHECK(sd_bucket_sets_get(&c, &x, &created) == e0 && created == 0);
    const sd_bucket_set_entry *e1 = sd_bucket_sets_get(&c, &off, NULL);
    T_CHECK(e1 && sd_bucket_sets_get(&c, &off2, &created) == e1 && created == 0);
    T_CHECK(e1 && e1->ok && e1->set.mode == SD_BUCKET_MODE_C);
    const sd_bucket_set_entry *e2 = sd_bucket_sets_get(&c, &bad, &created);
    T_CHECK(e2 && created == 1 && !e2->ok && e2->err && *e2->err);
    T_EQ_INT(c.n, 43);
    sd_bucket_sets_free(&c);
    T_EQ_INT(c.n, 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--mkimg")) return mkimg(argc, argv);
    T_RUN(test_golden);
    T_RUN(test_worked_examples);
    T_RUN(test_config_errors);
    T_RUN(test_apply);
    T_RUN(test_random_invariants);
    T_RUN(test_set_cache);
    T_DONE();
}
