/* Image augmentations of the uncached training path (data/augment.h). */
#include "data/augment.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* OpenCV's RGB2HSV_b tables (hsv_shift 12, hue range 180): saturate_cast<int> rounds to nearest. */
enum { HSV_SHIFT = 12 };

static int sdiv(int i)
{
    return i ? (int)lrint((double)(255 << HSV_SHIFT) / (1.0 * i)) : 0;
}

static int hdiv(int i)
{
    return i ? (int)lrint((double)(180 << HSV_SHIFT) / (6.0 * i)) : 0;
}

static uint8_t sat_u8f(float v)
{
    int i = (int)lrintf(v);
    return (uint8_t)(i < 0 ? 0 : i > 255 ? 255 : i);
}

void sd_aug_hue(uint8_t *px, int64_t npx, int channels, double shift)
{
    static const int sector_data[6][3] = { { 1, 3, 0 }, { 1, 0, 2 }, { 3, 0, 1 }, { 0, 2, 1 }, { 0, 1, 3 }, { 2, 1, 0 } };
    if (channels < 3) return;
    double sh = shift < 0 ? 180.0 + shift : shift;
    for (int64_t i = 0; i < npx; i++) {
        uint8_t *p = px + (size_t)i * (size_t)channels;
        /* BGR2HSV on the stored order: channel 0 is read as blue */
        int b = p[0], g = p[1], r = p[2];
        int v = b, vmin = b;
        if (g > v) v = g;
        if (r > v) v = r;
        if (g < vmin) vmin = g;
        if (r < vmin) vmin = r;
        int diff = v - vmin;
        int vr = v == r ? -1 : 0, vg = v == g ? -1 : 0;
        int s = (diff * sdiv(v) + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
        int h = (vr & (g - b)) + (~vr & ((vg & (b - r + 2 * diff)) + ((~vg) & (r - g + 4 * diff))));
        h = (h * hdiv(diff) + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
        h += h < 0 ? 180 : 0;
        if (h > 255) h = 255;
        /* numpy: (uint8 + float) % 180 assigned back into the uint8 array (truncation) */
        int hn = (int)fmod((double)h + sh, 180.0);
        /* HSV2BGR (HSV2RGB_b: float) */
        float hf = (float)hn, sf = (float)s * (1.0f / 255.0f), vf = (float)v * (1.0f / 255.0f);
        float ob, og, orr;
        if (sf == 0) {
            ob = og = orr = vf;
        } else {
            hf *= 6.0f / 180.0f;
            hf = fmodf(hf, 6.0f);
            int sector = (int)floorf(hf);
            hf -= (float)sector;
            if ((unsigned)sector >= 6u) {
                sector = 0;
                hf = 0.0f;
            }
            float tab[4] = { vf, vf * (1.0f - sf), vf * (1.0f - sf * hf), vf * (1.0f - sf * (1.0f - hf)) };
            ob = tab[sector_data[sector][0]];
            og = tab[sector_data[sector][1]];
            orr = tab[sector_data[sector][2]];
        }
        p[0] = sat_u8f(ob * 255.0f);
        p[1] = sat_u8f(og * 255.0f);
        p[2] = sat_u8f(orr * 255.0f);
    }
}

void sd_aug_gamma(uint8_t *px, int64_t npx, int channels, double gamma)
{
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) {
        double y = pow((double)v, gamma);
        lut[v] = (uint8_t)(y > 255.0 ? 255.0 : y < 0.0 ? 0.0 : y);
    }
    int nc = channels < 3 ? channels : 3;
    for (int64_t i = 0; i < npx; i++)
        for (int k = 0; k < nc; k++) px[(size_t)i * (size_t)channels + (size_t)k] = lut[px[(size_t)i * (size_t)channels + (size_t)k]];
}

int sd_aug_color(uint8_t *px, int64_t npx, int channels, const sd_rng *r, double *value)
{
    *value = 0;
    if ((double)sd_rng_uniform_at(r, SD_AUG_COLOR_GATE) > 0.33) return 0;
    double u = (double)sd_rng_uniform_at(r, SD_AUG_COLOR_VALUE);
    if ((double)sd_rng_uniform_at(r, SD_AUG_COLOR_KIND) > 0.5) {
        *value = -8.0 + 16.0 * u;   /* random.uniform(-8, 8) */
        sd_aug_hue(px, npx, channels, *value);
        return 1;
    }
    *value = 0.95 + 0.1 * u;        /* random.uniform(0.95, 1.05) */
    sd_aug_gamma(px, npx, channels, *value);
    return 2;
}

int64_t sd_aug_crop_offset(const sd_rng *r, int which, int64_t trim)
{
    if (trim <= 0) return 0;
    return (int64_t)sd_rng_below_at(r, (uint64_t)which, (uint64_t)trim + 1);
}

/* Python's a // b for ints (b > 0) */
static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

int sd_aug_face_info(const char *path, int *cx, int *cy, int *fw, int *fh)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    /* os.path.splitext: the last '.' that is not part of the name's leading dots */
    size_t n = strlen(base), lead = 0;
    while (lead < n && base[lead] == '.') lead++;
    const char *dot = strrchr(base + lead, '.');
    if (dot) n = (size_t)(dot - base);
    int nf = 1;
    for (size_t i = 0; i < n; i++) nf += base[i] == '_';
    if (nf < 5) return 0;
    long v[4];
    size_t end = n;
    for (int k = 3; k >= 0; k--) {
        size_t start = end;
        while (start > 0 && base[start - 1] != '_') start--;
        char buf[32];
        size_t len = end - start;
        const char *p = base + start;
        while (len && (*p == ' ' || *p == '\t')) p++, len--;   /* int() strips whitespace */
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if (!len || len >= sizeof buf)
            return sd_err(SD_EFORMAT, "%s: face_crop_aug_range: '%.*s' in the name is not an integer", path,
                          (int)(end - start), base + start);
        memcpy(buf, p, len);
        buf[len] = 0;
        char *e;
        errno = 0;
        v[k] = strtol(buf, &e, 10);
        if (*e || errno || buf[0] == ' ' || v[k] > 1000000000L || v[k] < -1000000000L)
            return sd_err(SD_EFORMAT, "%s: face_crop_aug_range: '%s' in the name is not an integer", path, buf);
        end = start - 1;
    }
    *cx = (int)v[0], *cy = (int)v[1], *fw = (int)v[2], *fh = (int)v[3];
    return 1;
}

static double st_uniform(void *ctx, double lo, double hi)
{
    sd_aug_stream *st = ctx;
    return lo + (hi - lo) * (double)sd_rng_uniform_at(&st->r, SD_AUG_FACE_SCALE);
}

static int64_t st_randint(void *ctx, int64_t lo, int64_t hi)
{
    sd_aug_stream *st = ctx;
    uint64_t k = st->next++;
    return hi < lo ? lo : lo + (int64_t)sd_rng_below_at(&st->r, k, (uint64_t)(hi - lo) + 1);
}

sd_aug_draws sd_aug_stream_draws(sd_aug_stream *st, const sd_rng *r)
{
    st->r = *r;
    st->next = SD_AUG_FACE_INTS;
    sd_aug_draws d = { st_uniform, st_randint, st };
    return d;
}

int sd_aug_face_crop(int img_w, int img_h, int W, int H, int cx, int cy, int fw, int fh, double lo, double hi,
                     int random_crop, const sd_aug_draws *dr, int64_t *resized_w, int64_t *resized_h, int64_t *x,
                     int64_t *y)
{
    *resized_w = img_w, *resized_h = img_h, *x = 0, *y = 0;
    if (img_h == H && img_w == W) return SD_OK;
    int64_t face = fw > fh ? fw : fh, size = H < W ? H : W;
    double min_scale = fmax((double)H / img_h, (double)W / img_w);
    min_scale = fmin(1.0, fmax(min_scale, (double)size / ((double)face * hi)));
    double max_scale = fmin(1.0, fmax(min_scale, (double)size / ((double)face * lo)));
    double scale = min_scale >= max_scale ? min_scale : dr->uniform(dr->ctx, min_scale, max_scale);
    int64_t nh = (int64_t)(img_h * scale + 0.5), nw = (int64_t)(img_w * scale + 0.5);
    if (nh < H || nw < W)
        return sd_err(SD_EINVAL, "face crop: the %dx%d image scaled by %g is %lldx%lld, smaller than %dx%d", img_w, img_h,
                      scale, (long long)nw, (long long)nh, W, H);
    int64_t fcx = (int64_t)(cx * scale + 0.5), fcy = (int64_t)(cy * scale + 0.5);
    *resized_w = nw, *resized_h = nh;
    for (int axis = 0; axis < 2; axis++) {
        int64_t target = axis ? W : H, len = axis ? nw : nh, fp = axis ? fcx : fcy;
        int64_t p1 = fp - floordiv(target, 2);
        if (random_crop) {
            int64_t range = len - fp > fp ? len - fp : fp;
            int64_t a = dr->randint(dr->ctx, 0, range);
            int64_t b = dr->randint(dr->ctx, 0, range);
            p1 = p1 + (a + b) - range;
        } else if (lo != hi && face > floordiv(size, 10) && face >= 40) {
            p1 = p1 + dr->randint(dr->ctx, floordiv(-face, 20), floordiv(face, 20));
        }
        if (p1 > len - target) p1 = len - target;
        if (p1 < 0) p1 = 0;
        if (axis) *x = p1;
        else *y = p1;
    }
    return SD_OK;
}
