/* Image augmentations of the reference's uncached training path (reference-behaviour.md §2.4,
 * §2.6; kohya-ss/sd-scripts library/train_util.py AugHelper.color_aug, trim_and_resize_if_required),
 * on interleaved 8-bit pixels (channels 1..4; only the first three are colour, alpha untouched).
 *
 * Every draw comes from one Philox stream (base/rng.h) the caller keys by (seed, step, sample,
 * SD_RNG_AUGMENT); the values of that stream are laid out as
 *   0            flip (uniform < 0.5: flipped)               (the training loop's)
 *   1, 2         random_crop: the x and y trim offsets        (sd_below_at pairs 1 and 2: values 2..5)
 *   8            color_aug: applied when uniform <= 0.33
 *   9            color_aug: hue shift when uniform > 0.5, else gamma
 *   10           color_aug: the hue shift / gamma value
 * so one draw never depends on whether another augmentation is on. */
#ifndef SD_DATA_AUGMENT_H
#define SD_DATA_AUGMENT_H

#include <stdint.h>

#include "base/rng.h"

/* Stream indices (above). */
enum { SD_AUG_FLIP = 0, SD_AUG_CROP_X = 1, SD_AUG_CROP_Y = 2, SD_AUG_COLOR_GATE = 8, SD_AUG_COLOR_KIND = 9,
       SD_AUG_COLOR_VALUE = 10 };

/* The hue transform of color_aug: OpenCV's cvtColor(img, COLOR_BGR2HSV) on the data as stored
 * (RGB read as BGR, as the reference does), hue h → int((h + s') mod 180) with s' = shift, or
 * 180 + shift for a negative shift, then cvtColor(COLOR_HSV2BGR). Uses OpenCV's 8-bit integer
 * RGB→HSV (hsv_shift 12 tables) and its float HSV→RGB with rounding. */
void sd_aug_hue(uint8_t *px, int64_t npx, int channels, double shift);

/* The gamma transform of color_aug: v → uint8(clip(v^gamma, 0, 255)) (no normalisation; the
 * float is truncated as numpy's astype(np.uint8) does). */
void sd_aug_gamma(uint8_t *px, int64_t npx, int channels, double gamma);

/* color_aug of one sample from its stream: with probability 0.33 a hue shift uniform in [-8, 8]
 * (50%) or a gamma uniform in [0.95, 1.05] (50%). Returns 0 none, 1 hue, 2 gamma; *value the
 * shift or gamma used. */
int sd_aug_color(uint8_t *px, int64_t npx, int channels, const sd_rng *r, double *value);

/* random_crop's trim offset: an integer uniform in [0, trim] (Python's random.randint(0, trim)),
 * drawn from stream value pair `which` (SD_AUG_CROP_X / SD_AUG_CROP_Y). trim <= 0 gives 0. */
int64_t sd_aug_crop_offset(const sd_rng *r, int which, int64_t trim);

#endif
