/* Image resampling that reproduces the reference's libraries byte for byte.
 *
 * PIL filters (Pillow 9.4 src/libImaging/Resample.c, `Image.resize(size, filter)`):
 *   BOX, BILINEAR, HAMMING, BICUBIC (a = -0.5), LANCZOS (a = 3). Separable: a horizontal pass
 *   (only over the source rows the vertical pass will read) into a uint8 intermediate, then a
 *   vertical pass; a pass is skipped when its axis keeps its size (and the box covers it).
 *   Per output pixel: centre = in0 + (i + 0.5) * scale, support = radius * max(scale, 1),
 *   taps [(int)(centre - support + 0.5), (int)(centre + support + 0.5)) clipped to the image,
 *   weights filter((j - centre + 0.5) / max(scale, 1)) in double, divided by their sum, then
 *   rounded to 22-bit fixed point ((int)(w * 2^22 ± 0.5)); accumulation in int starting from
 *   2^21, result clip8(acc >> 22). RGBA is resized premultiplied, as PIL does (RGBA -> RGBa:
 *   c*a/255 rounded with PIL's MULDIV255; back: 255*c/a truncated, alpha 0 or 255 unchanged).
 *   Identical bytes to PIL.
 *
 * OpenCV AREA (OpenCV 4.6 imgproc/src/resize.cpp, `cv2.resize(img, (w, h), interpolation=
 *   cv2.INTER_AREA)`). Shrinking (both target dimensions <= the source): scale = 1 / (dst/src)
 *   in double. When both scales are
 *   integers: box average in int, for 2x2 (sum + 2) >> 2, otherwise round-half-even of
 *   sum * (1.f/area) in float. Otherwise the area-coverage tables (weights in float) with
 *   float accumulation per row and across rows, round-half-even to uint8. Channels are
 *   independent (no premultiplication), as in OpenCV. Identical bytes to OpenCV (built
 *   without IPP, as Debian's python3-opencv is). Enlarging either side: OpenCV's bilinear with
 *   area-mode weights (sx = floor(dx * scale), fx = (dx + 1) - (sx + 1) / scale, 0 when <= 0,
 *   else its fractional part), through the LINEAR machinery below.
 *
 * OpenCV LINEAR, CUBIC (cv::hal::resize + resizeGeneric_ on 8 bits): per axis
 *   f = (float)((d + 0.5) * scale - 0.5), s = floor(f), f -= s; LINEAR weights (1 - f, f), the x
 *   axis clamping s < 0 and s >= src - 1 to the edge pixel with f = 0; CUBIC weights
 *   interpolateCubic(f) (A = -0.75, float); each weight saturate_cast<short>(w * 2048) (round half
 *   to even). Horizontal pass in int (taps clamped to the row: border replicate), vertical pass:
 *   LINEAR ((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2 >> 2 (OpenCV's 8-bit
 *   specialisation, all elements); CUBIC over the first width - width % 8 elements of a row
 *   (OpenCV's SSE2 loop) float S0*b0' + (S1*b1' + (S2*b2' + S3*b3')) with b' = b * 2^-22, round
 *   half to even, the rest (sum + 2^21) >> 22; rows clipped to the image. LINEAR with an exact
 *   2x shrink of both axes is AREA's integer path, as in OpenCV.
 *
 * OpenCV NEAREST_EXACT (resizeNN_bitexact, OpenCV 4.6): per axis ifx = ((src << 16) + dst / 2) /
 *   dst, source index min((ifx * d + ifx / 2 - 1) >> 16, src - 1). Sizes for which OpenCV's int
 *   arithmetic would overflow return SD_EUNSUPPORTED.
 *
 * The OpenCV paths are checked byte for byte against cv2.resize of Debian 12's python3-opencv
 * (tests/unit/test_cv2_resize.c, test_resample.c); the reference (sd-scripts resize_image) hands
 * its RGB or RGBA array to cv2.resize unchanged, so channels are independent.
 *
 * Images are sd_image (interleaved uint8, c = 1, 3 or 4). Rows are processed in parallel with
 * OpenMP (each output row by exactly one thread); every output byte depends only on its inputs,
 * so the result is identical for any thread count.
 *
 * Speed: x86 SIMD (SSE2, AVX2 when the CPU has it, chosen at run time) with portable scalar
 * versions; every level gives the same bytes (same float operations in the same order per
 * output value; exact integer sums on the PIL paths). */
#ifndef SD_IO_RESAMPLE_H
#define SD_IO_RESAMPLE_H

#include "io/image.h"

enum sd_resample_filter {
    SD_RESAMPLE_BOX = 0,
    SD_RESAMPLE_BILINEAR,
    SD_RESAMPLE_HAMMING,
    SD_RESAMPLE_BICUBIC,
    SD_RESAMPLE_LANCZOS,
    SD_RESAMPLE_AREA,       /* OpenCV INTER_AREA */
    SD_RESAMPLE_CV_NEAREST, /* OpenCV INTER_NEAREST_EXACT */
    SD_RESAMPLE_CV_LINEAR,  /* OpenCV INTER_LINEAR */
    SD_RESAMPLE_CV_CUBIC,   /* OpenCV INTER_CUBIC */
};

/* Resize src to w×h into a newly allocated *out (same channel count). Same-size requests copy. */
int sd_resample(const sd_image *src, int w, int h, int filter, sd_image *out);

/* PIL's resize with a source box (x0, y0, x1, y1) in source pixels (floats, as PIL takes them):
 * `im.resize((w, h), filter, box=(x0, y0, x1, y1))`. PIL filters only (SD_EINVAL for OpenCV's). */
int sd_resample_box(const sd_image *src, const float box[4], int w, int h, int filter,
                    sd_image *out);

/* The reference's default choice (kohya trim_and_resize_if_required without
 * resize_interpolation): AREA when w <= src->w and h <= src->h, else LANCZOS. */
int sd_resample_auto(const sd_image *src, int w, int h, sd_image *out);

/* Filter from its name: "box", "bilinear", "hamming", "bicubic", "lanczos" (the PIL filters),
 * "area", "cv_nearest_exact", "cv_linear", "cv_cubic" (OpenCV); -1 when unknown. And the name
 * of a filter. (The reference's resize_interpolation names map through
 * sd_bucket_interp_from_name, data/bucket.h: there "bilinear"/"bicubic" are OpenCV's.) */
int sd_resample_filter_from_name(const char *name);
const char *sd_resample_filter_name(int filter);

/* SIMD level (tests and benchmarks). REFERENCE: the plain transcriptions of the libraries'
 * loops; SCALAR: the fast table layout in portable C; SSE2, AVX2: x86 vector code. */
enum {
    SD_RESAMPLE_SIMD_REFERENCE = 0,
    SD_RESAMPLE_SIMD_SCALAR,
    SD_RESAMPLE_SIMD_SSE2,
    SD_RESAMPLE_SIMD_AVX2,
};
/* Force a level (clamped to what this CPU has; -1 = automatic, the best). Returns the previous
 * forced level or -1. Process-wide; call outside parallel regions. */
int sd_resample_set_simd(int level);
/* The level in use. */
int sd_resample_simd(void);

#endif
