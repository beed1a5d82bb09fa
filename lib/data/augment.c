/* Image augmentations of the uncached training path (data/augment.h). */
#include "data/augment.h"

#include <math.h>

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
