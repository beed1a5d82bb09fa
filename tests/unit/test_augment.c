/* lib/data/augment: color_aug's hue shift and gamma against OpenCV / numpy run as the reference runs
 * them (tests/data/augment/golden.txt from tests/golden/gen/make_augment_golden.py), alpha left
 * alone, the color_aug draw (probability 0.33, half hue half gamma, the value ranges),
 * random_crop's offsets (in [0, trim], every value reached, uniform enough, keyed by the stream),
 * face_crop_aug_range's geometry against a transcription of the reference's crop_target replayed
 * with its recorded random draws (tests/data/augment/face_golden.txt from
 * tests/golden/gen/make_face_crop_golden.py), the face fields of file names, and the Philox draws. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "data/augment.h"
#include "test.h"

static int unhex(const char *h, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static void test_golden(void)
{
    FILE *f = fopen(t_root_pathf("tests/data/augment/golden.txt"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    size_t cap = 1 << 16;
    char *line = malloc(cap), *word = malloc(64);
    uint8_t *img = NULL, *want = NULL, *got = NULL, *rgba = NULL;
    int W = 0, H = 0, nhue = 0, ngamma = 0, maxdiff = 0;
    long exact = 0, total = 0;
    while (fgets(line, (int)cap, f)) {
        double v;
        int off = 0;
        if (!strncmp(line, "image ", 6)) {
            T_CHECK(sscanf(line + 6, "%d %d %n", &W, &H, &off) == 2);
            size_t n = (size_t)W * H * 3;
            img = malloc(n), want = malloc(n), got = malloc(n), rgba = malloc((size_t)W * H * 4);
            T_CHECK(unhex(line + 6 + off, img, n) == 0);
            continue;
        }
        T_CHECK(img != NULL && sscanf(line, "%63s %lf %n", word, &v, &off) == 2);
        size_t n = (size_t)W * H * 3;
        T_CHECK(unhex(line + off, want, n) == 0);
        memcpy(got, img, n);
        int hue = !strcmp(word, "hue");
        if (hue) sd_aug_hue(got, (int64_t)W * H, 3, v), nhue++;
        else sd_aug_gamma(got, (int64_t)W * H, 3, v), ngamma++;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)got[i] - (int)want[i]);
            if (d > maxdiff) maxdiff = d;
            exact += d == 0;
            total++;
            T_CHECKF(d <= 1, "%s %g byte %zu: got %d, OpenCV/numpy %d", word, v, i, got[i], want[i]);
            if (d > 1) break;
        }
        /* the hue path is OpenCV's integer/float arithmetic: exact; numpy's vectorised pow is not
           correctly rounded (102 ** 1.0 gives 101.99999...), so gamma may differ by one level */
        if (hue) T_CHECKF(memcmp(got, want, n) == 0, "hue %g not exact", v);
        /* the same on RGBA: alpha untouched */
        for (int p = 0; p < W * H; p++) {
            memcpy(rgba + 4 * p, img + 3 * p, 3);
            rgba[4 * p + 3] = (uint8_t)(p * 7);
        }
        if (hue) sd_aug_hue(rgba, (int64_t)W * H, 4, v);
        else sd_aug_gamma(rgba, (int64_t)W * H, 4, v);
        for (int p = 0; p < W * H; p++) {
            T_CHECK(rgba[4 * p + 3] == (uint8_t)(p * 7));
            T_CHECK(memcmp(rgba + 4 * p, got + 3 * p, 3) == 0);
            if (rgba[4 * p + 3] != (uint8_t)(p * 7)) break;
        }
    }
    fclose(f);
    T_EQ_INT(nhue, 9);
    T_EQ_INT(ngamma, 5);
    printf("# color_aug against OpenCV/numpy: %ld of %ld bytes exact, max difference %d level\n", exact, total, maxdiff);
    /* 255 at gamma 0.95: 255^0.95 = 193.3 → 193; at 1.05: 335 → clipped to 255 */
    uint8_t px[3] = { 255, 255, 0 };
    sd_aug_gamma(px, 1, 3, 0.95);
    T_EQ_INT(px[0], 193);
    px[1] = 255;
    sd_aug_gamma(px + 1, 1, 1, 1.05);
    T_EQ_INT(px[1], 255);
    T_EQ_INT(px[2], 0);
    free(line), free(word), free(img), free(want), free(got), free(rgba);
}

/* The draw: about a third of the streams change the image, half of those by hue; values in range. */
static void test_color_draw(void)
{
    int counts[4] = { 0, 0, 0, 0 };
    double hmin = 1e9, hmax = -1e9, gmin = 1e9, gmax = -1e9;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        sd_rng r = sd_rng_key(11, (uint32_t)i, 3, SD_RNG_AUGMENT);
        uint8_t px[6] = { 10, 200, 30, 250, 3, 251 }, orig[6];
        memcpy(orig, px, 6);
        double v;
        int k = sd_aug_color(px, 2, 3, &r, &v);
        T_CHECK(k >= 0 && k <= 2);
        counts[k & 3]++;
        if (k == 0) T_CHECK(memcmp(px, orig, 6) == 0 && v == 0);
        if (k == 1) hmin = fmin(hmin, v), hmax = fmax(hmax, v);
        if (k == 2) gmin = fmin(gmin, v), gmax = fmax(gmax, v);
        /* the same stream gives the same result */
        uint8_t again[6];
        memcpy(again, orig, 6);
        double v2;
        T_EQ_INT(sd_aug_color(again, 2, 3, &r, &v2), k);
        T_CHECK(memcmp(again, px, 6) == 0 && v2 == v);
    }
    double pon = (double)(counts[1] + counts[2]) / N, phue = (double)counts[1] / (counts[1] + counts[2]);
    T_NEAR(pon, 0.33, 0.02);
    T_NEAR(phue, 0.5, 0.03);
    T_CHECK(hmin >= -8 && hmax <= 8 && hmin < -7.9 && hmax > 7.9);
    T_CHECK(gmin >= 0.95 && gmax <= 1.05 && gmin < 0.951 && gmax > 1.049);
}

/* random_crop: offsets in [0, trim], all reached, roughly uniform; x and y independent draws. */
static void test_crop_offsets(void)
{
    for (int64_t trim = 0; trim <= 9; trim++) {
        int seen[10] = { 0 };
        const int N = 4000;
        int same_xy = 0;
        for (int i = 0; i < N; i++) {
            sd_rng r = sd_rng_key(5, (uint32_t)i, (uint32_t)(i % 3), SD_RNG_AUGMENT);
            int64_t x = sd_aug_crop_offset(&r, SD_AUG_CROP_X, trim), y = sd_aug_crop_offset(&r, SD_AUG_CROP_Y, trim);
            T_CHECKF(x >= 0 && x <= trim && y >= 0 && y <= trim, "trim %lld: offsets %lld %lld", (long long)trim,
                     (long long)x, (long long)y);
            if (x < 0 || x > trim) break;
            seen[x]++;
            same_xy += x == y;
        }
        for (int64_t v = 0; v <= trim; v++) {
            T_CHECKF(seen[v] > 0, "trim %lld: offset %lld never drawn", (long long)trim, (long long)v);
            if (trim) T_NEAR((double)seen[v] / N, 1.0 / (double)(trim + 1), 0.04);
        }
        if (trim >= 3) T_CHECKF(same_xy < N / 2, "trim %lld: x == y in %d of %d draws", (long long)trim, same_xy, N);
    }
    /* negative trim (no trim): 0; a large one stays in range */
    sd_rng r = sd_rng_key(1, 2, 3, SD_RNG_AUGMENT);
    T_EQ_INT(sd_aug_crop_offset(&r, SD_AUG_CROP_X, -4), 0);
    int64_t big = sd_aug_crop_offset(&r, SD_AUG_CROP_Y, 100000);
    T_CHECK(big >= 0 && big <= 100000);
}

/* Replays the recorded draws of one golden case, checking each call's range. */
typedef struct replay {
    char kind[64];
    double lo[64], hi[64], val[64];
    int n, at, bad;
} replay;

static double rp_uniform(void *ctx, double lo, double hi)
{
    replay *r = ctx;
    if (r->at >= r->n || r->kind[r->at] != 'u' || r->lo[r->at] != lo || r->hi[r->at] != hi) {
        r->bad = 1;
        return lo;
    }
    return r->val[r->at++];
}

static int64_t rp_randint(void *ctx, int64_t lo, int64_t hi)
{
    replay *r = ctx;
    if (r->at >= r->n || r->kind[r->at] != 'i' || r->lo[r->at] != (double)lo || r->hi[r->at] != (double)hi) {
        r->bad = 1;
        return lo;
    }
    return (int64_t)r->val[r->at++];
}

static void test_face_golden(void)
{
    FILE *f = fopen(t_root_pathf("tests/data/augment/face_golden.txt"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    char line[4096];
    int ncase = 0, nassert = 0, ndraws = 0;
    while (fgets(line, sizeof line, f)) {
        int iw, ih, W, H, cx, cy, fw, fh, rc;
        double lo, hi;
        T_CHECK(sscanf(line, "%d %d %d %d %d %d %d %d %lf %lf %d", &iw, &ih, &W, &H, &cx, &cy, &fw, &fh, &lo, &hi, &rc) == 11);
        char *d = strchr(line, ';'), *res = d ? strchr(d + 1, ';') : NULL;
        T_CHECK(d && res);
        if (!d || !res) break;
        *res++ = 0;
        replay rp;
        memset(&rp, 0, sizeof rp);
        for (char *tok = strtok(d + 1, ","); tok; tok = strtok(NULL, ",")) {
            char k;
            if (sscanf(tok, " %c %lf %lf %lf", &k, &rp.lo[rp.n], &rp.hi[rp.n], &rp.val[rp.n]) != 4) continue;
            rp.kind[rp.n++] = k;
        }
        ndraws += rp.n;
        sd_aug_draws dr = { rp_uniform, rp_randint, &rp };
        int64_t nw, nh, x, y;
        int r = sd_aug_face_crop(iw, ih, W, H, cx, cy, fw, fh, lo, hi, rc, &dr, &nw, &nh, &x, &y);
        long long e[4];
        if (strstr(res, "assert")) {
            nassert++;
            T_CHECKF(r == SD_EINVAL, "case %d: expected the assertion", ncase);
        } else {
            T_CHECK(sscanf(res, "%lld %lld %lld %lld", &e[0], &e[1], &e[2], &e[3]) == 4);
            T_CHECKF(r == SD_OK && nw == e[0] && nh == e[1] && x == e[2] && y == e[3],
                     "case %d: got %lld %lld %lld %lld, reference %lld %lld %lld %lld", ncase, (long long)nw,
                     (long long)nh, (long long)x, (long long)y, e[0], e[1], e[2], e[3]);
            T_CHECKF(x >= 0 && y >= 0 && x + W <= nw && y + H <= nh, "case %d: window outside", ncase);
        }
        T_CHECKF(!rp.bad && rp.at == rp.n, "case %d: draws differ (%d of %d used)", ncase, rp.at, rp.n);
        ncase++;
    }
    fclose(f);
    T_EQ_INT(ncase, 305);
    T_CHECK(nassert > 0 && ndraws > 100);
    printf("# face crop: %d cases (%d assertions, %d random draws) as the reference's crop_target\n", ncase, nassert,
           ndraws);
}

static void test_face_info(void)
{
    int cx, cy, fw, fh;
    T_EQ_INT(sd_aug_face_info("dir/a_b/photo_120_80_40_44.png", &cx, &cy, &fw, &fh), 1);
    T_CHECK(cx == 120 && cy == 80 && fw == 40 && fh == 44);
    T_EQ_INT(sd_aug_face_info("x_1_2_3_4", &cx, &cy, &fw, &fh), 1);
    T_CHECK(cx == 1 && fh == 4);
    T_EQ_INT(sd_aug_face_info("dir_1_2_3_4/img.png", &cx, &cy, &fw, &fh), 0);   /* the directory does not count */
    T_EQ_INT(sd_aug_face_info("a_1_2_3.png", &cx, &cy, &fw, &fh), 0);
    T_EQ_INT(sd_aug_face_info("a_1_b_3_4.png", &cx, &cy, &fw, &fh), SD_EFORMAT);
    T_EQ_INT(sd_aug_face_info("a__1_3_4.jpg", &cx, &cy, &fw, &fh), SD_EFORMAT);
    T_EQ_INT(sd_aug_face_info("a_1_2_3_4.tar.webp", &cx, &cy, &fw, &fh), SD_EFORMAT);   /* "4.tar" */
    T_EQ_INT(sd_aug_face_info("a_-5_1_3_4.webp", &cx, &cy, &fw, &fh), 1);
    T_EQ_INT(cx, -5);
}

/* The Philox draws: the scale in [min, max), integers in range and reproducible. */
static void test_face_stream(void)
{
    int64_t first[4] = { 0 };
    for (int k = 0; k < 200; k++) {
        sd_rng r = sd_rng_key(9, (uint32_t)k, 1, SD_RNG_AUGMENT);
        int64_t out[2][4];
        for (int rep = 0; rep < 2; rep++) {
            sd_aug_stream st;
            sd_aug_draws dr = sd_aug_stream_draws(&st, &r);
            T_EQ_INT(sd_aug_face_crop(1600, 1200, 512, 512, 800, 500, 200, 220, 1.5, 4.0, k & 1, &dr, &out[rep][0],
                                      &out[rep][1], &out[rep][2], &out[rep][3]), SD_OK);
        }
        T_CHECK(memcmp(out[0], out[1], sizeof out[0]) == 0);
        T_CHECK(out[0][0] >= 512 && out[0][1] >= 512 && out[0][0] <= 1600 && out[0][2] + 512 <= out[0][0] &&
                out[0][3] + 512 <= out[0][1] && out[0][2] >= 0 && out[0][3] >= 0);
        if (k == 0) memcpy(first, out[0], sizeof first);
    }
    sd_rng r = sd_rng_key(9, 1, 1, SD_RNG_AUGMENT);
    sd_aug_stream st;
    sd_aug_draws dr = sd_aug_stream_draws(&st, &r);
    int64_t o[4];
    T_EQ_INT(sd_aug_face_crop(1600, 1200, 512, 512, 800, 500, 200, 220, 1.5, 4.0, 0, &dr, &o[0], &o[1], &o[2], &o[3]), SD_OK);
    T_CHECK(memcmp(o, first, sizeof o) != 0);   /* another step, another scale */
}

int main(void)
{
    T_RUN(test_golden);
    T_RUN(test_color_draw);
    T_RUN(test_crop_offsets);
    T_RUN(test_face_golden);
    T_RUN(test_face_info);
    T_RUN(test_face_stream);
    T_DONE();
}
