/* Aspect-ratio buckets exactly as the reference computes them (reference-behaviour.md §2):
 * the predefined bucket list (model_util.make_bucket_resolutions), bucket selection in the three
 * modes (BucketManager.select_bucket), the centre trim of trim_and_resize_if_required, the
 * recorded crop (BucketManager.get_crop_ltrb) and numpy's mean of the absolute AR errors.
 *
 *   Mode A  enable_bucket, upscaling allowed: nearest-AR predefined bucket, scale to cover it.
 *   Mode B  enable_bucket + bucket_no_upscale: per-image bucket, never enlarged (min/max ignored
 *           for the bucket, but still validated as the reference does).
 *   Mode C  bucketing off: a single bucket = resolution, selected as in mode A.
 *
 * All arithmetic is the reference's: Python ints become int64, Python floats doubles with the
 * same operations in the same order, so every result (including ar_error and the fractional
 * crop_ltrb values) is bit-identical. Where the reference would divide by zero or produce a
 * 0-sized bucket (a side smaller than bucket_reso_steps with bucket_no_upscale, min_bucket_reso
 * rounding down to 0), these functions fail with a message instead.
 *
 * Pure functions, no global state, thread-safe. */
#ifndef SD_DATA_BUCKET_H
#define SD_DATA_BUCKET_H

#include <stddef.h>
#include <stdint.h>

#include "io/image.h"

/* Settings of one subset/dataset (the reference's key names). */
typedef struct sd_bucket_cfg {
    int res_w, res_h;       /* resolution W,H (>= 1) */
    int enable_bucket;      /* 0: mode C */
    int min_reso, max_reso; /* min_bucket_reso, max_bucket_reso */
    int steps;              /* bucket_reso_steps (>= 1) */
    int no_upscale;         /* bucket_no_upscale: mode B */
} sd_bucket_cfg;

enum { SD_BUCKET_MODE_A = 0, SD_BUCKET_MODE_B = 1, SD_BUCKET_MODE_C = 2 };

/* A validated configuration with its predefined bucket list. */
typedef struct sd_bucket_set {
    sd_bucket_cfg cfg;      /* as given */
    int mode;               /* SD_BUCKET_MODE_* */
    int min_reso, max_reso; /* after rounding to the step (min down, max up), modes A and B */
    int min_adjusted, max_adjusted; /* 1 when rounding changed them (the reference warns) */
    int n;                  /* predefined buckets (modes A and C; 0 in mode B) */
    int (*resos)[2];        /* sorted ascending by (w, h) */
    double *ars;            /* w / h of each */
} sd_bucket_set;

/* The plan for one image. */
typedef struct sd_bucket_plan {
    int image_w, image_h;      /* original size */
    int bucket_w, bucket_h;    /* bucket (the trained size) */
    int64_t resized_w, resized_h; /* size after the resize, before the trim (>= bucket) */
    int64_t trim_x, trim_y;    /* centre-trim offsets into the resized image: (resized - bucket) // 2 */
    double ar_error;           /* bucket_w / bucket_h - image_w / image_h */
    double crop_ltrb[4];       /* get_crop_ltrb(bucket, image size): floats as the reference has them */
} sd_bucket_plan;

/* make_bucket_resolutions(max_reso=(max_w, max_h), min_size, max_size, divisible): malloc'd
 * array of *n (w, h) pairs sorted ascending. divisible >= 1, min_size >= 1. */
int sd_bucket_resolutions(int max_w, int max_h, int min_size, int max_size, int divisible,
                          int (**out)[2], int *n);

/* Validate `cfg` and build the list. Checks (the reference's, as errors with one-line messages
 * naming the option): resolution >= 1; steps >= 1; min_bucket_reso rounded down / max rounded up
 * to the step; min(resolution) >= min_bucket_reso; max(resolution) <= max_bucket_reso;
 * min_bucket_reso > 0 after rounding. Mode C ignores min/max/steps. SD_EINVAL on failure. */
int sd_bucket_set_init(sd_bucket_set *s, const sd_bucket_cfg *cfg);
void sd_bucket_set_free(sd_bucket_set *s);

/* select_bucket(w, h) + centre trim + get_crop_ltrb. SD_EINVAL for w or h < 1, and (mode B)
 * when the bucket would have a 0 side ("image 40x300 is narrower than bucket_reso_steps 64
 * after the resize: no bucket"). */
int sd_bucket_select(const sd_bucket_set *s, int w, int h, sd_bucket_plan *p);

/* get_crop_ltrb(bucket, image size) alone. */
void sd_bucket_crop_ltrb(int bucket_w, int bucket_h, int image_w, int image_h, double ltrb[4]);

/* numpy.mean(v[0..n)) bit for bit (pairwise summation as numpy's add.reduce does); 0 for n = 0. */
double sd_bucket_mean(const double *v, size_t n);

/* Interpolation names of the reference's resize_interpolation (library/utils.py): "lanczos" and
 * "box" (PIL LANCZOS, BOX), "nearest" (OpenCV INTER_NEAREST_EXACT), "bilinear"/"linear"
 * (INTER_LINEAR), "bicubic"/"cubic" (INTER_CUBIC), "area" (INTER_AREA); other names SD_EINVAL.
 * On success *filter is an sd_resample_filter (io/resample.h). */
int sd_bucket_interp_from_name(const char *name, int *filter);

/* Resize `src` (its size must be the plan's image size) to the plan's resized size and trim the
 * centre to the bucket, as trim_and_resize_if_required does without random_crop. filter < 0: the
 * reference's default (OpenCV INTER_AREA when neither side grows, else PIL LANCZOS); otherwise
 * that filter for both directions (as the reference: INTER_AREA enlarging is OpenCV's). The result
 * is bucket_w × bucket_h with src's channel count. `max_pixels` bounds the intermediate resized
 * image (0 = sd_image_max_pixels()). */
int sd_bucket_apply(const sd_image *src, const sd_bucket_plan *p, int filter, uint64_t max_pixels,
                    sd_image *out);

#endif
