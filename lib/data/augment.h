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
 *   11           face_crop_aug_range: the scale
 *   from 12      face_crop_aug_range: its integer draws in order (sd_rng_below_at pairs 6, 7, ...)
 * so one draw never depends on whether another augmentation is on. */
#ifndef SD_DATA_AUGMENT_H
#define SD_DATA_AUGMENT_H

#include <stdint.h>

#include "base/rng.h"

/* Stream indices (above). */
enum { SD_AUG_FLIP = 0, SD_AUG_CROP_X = 1, SD_AUG_CROP_Y = 2, SD_AUG_COLOR_GATE = 8, SD_AUG_COLOR_KIND = 9,
       SD_AUG_COLOR_VALUE = 10, SD_AUG_FACE_SCALE = 11, SD_AUG_FACE_INTS = 6 };

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

/* face_crop_aug_range (the reference's crop_target, bucketing disabled): the face centre and size
 * from a file named <anything>_<cx>_<cy>_<w>_<h>.<ext> (the last four '_' fields of the name
 * without extension). 1 with the values, 0 when the name has fewer than five fields, SD_EFORMAT
 * when one of the four is not an integer (the reference's int() fails). */
int sd_aug_face_info(const char *path, int *cx, int *cy, int *fw, int *fh);

/* The random draws of sd_aug_face_crop: uniform(lo, hi) as random.uniform, randint(lo, hi) as
 * random.randint (both ends included). */
typedef struct sd_aug_draws {
    double (*uniform)(void *ctx, double lo, double hi);
    int64_t (*randint)(void *ctx, int64_t lo, int64_t hi);
    void *ctx;
} sd_aug_draws;

/* The Philox draws (scale at SD_AUG_FACE_SCALE, integers from pair SD_AUG_FACE_INTS on); `st`
 * holds the stream and the cursor. */
typedef struct sd_aug_stream {
    sd_rng r;
    uint64_t next;
} sd_aug_stream;
sd_aug_draws sd_aug_stream_draws(sd_aug_stream *st, const sd_rng *r);

/* crop_target for an img_w×img_h image, target W×H, face (cx, cy, fw×fh), range [lo, hi]:
 * unchanged when the image is W×H; else size = min(H, W), face = max(fw, fh),
 * min_scale = min(1, max(max(H/img_h, W/img_w), size/(face·hi))),
 * max_scale = min(1, max(min_scale, size/(face·lo))), scale uniform between (min if not less),
 * resized to (int(img_w·scale + 0.5), int(img_h·scale + 0.5)) with the face centre scaled alike;
 * per axis (y, then x) the window starts at face_p − target // 2, jittered by
 * randint(0, r) + randint(0, r) − r (r = max(len − face_p, face_p)) with random_crop, else, when
 * lo != hi, face > size // 10 and face >= 40, by randint(−face // 20, face // 20) (floor
 * divisions), then clamped to [0, len − target]. Out: the resized size and the window's offsets.
 * SD_EINVAL when the resized image would be smaller than the target (the reference's assertion). */
int sd_aug_face_crop(int img_w, int img_h, int W, int H, int cx, int cy, int fw, int fh, double lo, double hi,
                     int random_crop, const sd_aug_draws *dr, int64_t *resized_w, int64_t *resized_h, int64_t *x,
                     int64_t *y);

#endif
