/* Image decoding, header probing and encoding.
 *
 * Decoders: JPEG (baseline, extended, progressive, arithmetic; grey, YCbCr/RGB, CMYK/YCCK)
 * through libjpeg-turbo, PNG and BMP through stb_image (libstb), WebP through libwebp. The format is detected from the magic bytes, never from the file name; anything else
 * (GIF, TIFF, AVIF, ...) fails with SD_EUNSUPPORTED "NAME: unknown image format".
 *
 * Pixel conversions follow what the reference (PIL 9.4, `Image.open(p).convert("RGB")`) does:
 *   - grey (L) is replicated to R=G=B; palette images are expanded through the palette;
 *   - 16-bit PNG samples become 8-bit by taking the high byte (v >> 8), which is what PIL's
 *     "RGB;16B" / "RGBA;16B" / "LA;16B" unpackers do. One deliberate deviation: PIL opens a
 *     16-bit greyscale PNG (no alpha) as mode "I" and convert("RGB") then *clips* every value
 *     above 255 to 255 (a near-white image); we take the high byte there too;
 *   - SD_ALPHA_DROP removes alpha like convert("RGB") (the colour under a transparent pixel
 *     stays as stored); SD_ALPHA_WHITE composites over an opaque white canvas exactly like the
 *     tagger preprocessing `Image.new("RGBA", size, (255,255,255)).alpha_composite(im)`:
 *     PIL's AlphaComposite.c with a white opaque destination reduces to
 *         t   = c*a + 255*(255-a)                  (exact integer)
 *         x   = 128*t + (0x80 << 7)                (its 7-bit precision form)
 *         out = (((x >> 8) + x) >> 8) >> 7         (its SHIFTFORDIV255, i.e. round(t/255))
 *     which we compute in the same integer form; SD_ALPHA_KEEP returns RGBA (c = 4).
 *   - EXIF orientation is ignored, as the reference does (it never calls
 *     ImageOps.exif_transpose). ICC profiles are ignored as well (PIL ignores them on convert).
 *   - JPEG: decoded with the same library and settings as PIL (libjpeg-turbo, ISLOW integer
 *     IDCT, fancy upsampling, block smoothing on), so the pixels are PIL's byte for byte. A
 *     4-component JPEG is read as Adobe-inverted CMYK whatever its markers say (PIL's
 *     "CMYK;I") and turned into RGB with PIL's cmyk2rgb formula (no colour management).
 *     Truncated data ("premature end of JPEG file", which includes a missing EOI marker) is an
 *     error, as PIL raises "image file is truncated"; libjpeg's other corrupt-data warnings
 *     (stray bytes before a marker, bad Huffman codes) are ignored as PIL ignores them. Bytes
 *     after EOI are ignored. Progressive files with more than 1000 scans are refused (a scan
 *     bomb; encoders write about 10). 2-component JPEGs are SD_EUNSUPPORTED (PIL refuses
 *     them too).
 *   - Animated WebP: SD_EUNSUPPORTED (libwebpdemux is not linked).
 *
 * Limits: width or height 0, or width*height > sd_image_max_pixels() (default 2^28), fail with a
 * clear error before any pixel buffer is allocated (the header is probed first).
 *
 * Error messages are one line and start with the file name given ("a.png: cannot decode: bad
 * zlib header"). Nothing here prints or exits. All functions are thread-safe except
 * sd_image_set_max_pixels(). */
#ifndef SD_IO_IMAGE_H
#define SD_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Interleaved 8-bit image, rows tightly packed: px[(y*w + x)*c + channel]. c is 1 (grey),
 * 3 (RGB) or 4 (RGBA). px is malloc'd; free with sd_image_free(). */
typedef struct sd_image {
    int w, h, c;
    uint8_t *px;
} sd_image;

enum sd_image_format {
    SD_IMAGE_UNKNOWN = 0,
    SD_IMAGE_PNG,
    SD_IMAGE_JPEG,
    SD_IMAGE_BMP,
    SD_IMAGE_WEBP,
};

enum sd_alpha_mode {
    SD_ALPHA_DROP = 0,  /* RGB, alpha discarded (PIL convert("RGB")) */
    SD_ALPHA_WHITE = 1, /* RGB, composited over white (tagger preprocessing) */
    SD_ALPHA_KEEP = 2,  /* RGBA (opaque images get alpha 255) */
};

/* Allocate an uninitialised w×h×c image (c in 1, 3, 4). */
int sd_image_alloc(sd_image *im, int w, int h, int c);
void sd_image_free(sd_image *im);

/* Format from the first bytes (needs 12 for WebP, fewer for the rest). */
int sd_image_format_detect(const void *data, size_t n);
/* "png", "jpeg", "bmp", "webp", "unknown". */
const char *sd_image_format_name(int format);

/* Pixel limit for decode and probe (default 1 << 28). Not thread-safe: set it once at start. */
void sd_image_set_max_pixels(uint64_t max);
uint64_t sd_image_max_pixels(void);

/* Size from the header only: reads the first few KiB (PNG IHDR, BMP header, WebP
 * VP8/VP8L/VP8X chunk) or, for JPEG, hops from marker to marker to the SOF segment, reading
 * only the segment headers; falls back to libjpeg's header reader on the whole file when that
 * finds nothing (stray bytes between segments). The decoders check the frame against it.
 * `format` may be NULL. Fails for unknown formats, dimension 0 and sizes over the limit. */
int sd_image_probe(const char *path, int *w, int *h, int *format);
/* The same on a memory buffer; `name` is used in messages. */
int sd_image_probe_mem(const void *data, size_t n, const char *name, int *w, int *h, int *format);

/* Decode a file / a memory buffer. `alpha` is an sd_alpha_mode. `mask`, when not NULL,
 * receives a malloc'd w*h plane with the image's alpha channel (all 255 when the image has no
 * alpha), the mask the reference's alpha-mask loss reads. On failure *out is zeroed. */
int sd_image_load(const char *path, int alpha, sd_image *out, uint8_t **mask);
int sd_image_decode(const void *data, size_t n, const char *name, int alpha, sd_image *out,
                    uint8_t **mask);

/* Encoders, written atomically (temp file + rename). PNG (stb_image_write) takes c = 1, 3 or
 * 4. JPEG (libjpeg-turbo) takes c = 1 or 3 (quality 1..100; RGBA is rejected: drop alpha
 * first) and writes the same bytes as PIL 9.4's save(f, "JPEG", quality=q): JFIF header,
 * 4:2:0 chroma subsampling for colour at every quality, baseline (quantisers clamped to 255),
 * standard Huffman tables (no optimize), not progressive, no EXIF/ICC. */
int sd_image_write_png(const char *path, const sd_image *im);
int sd_image_write_jpeg(const char *path, const sd_image *im, int quality);
/* Encode to a malloc'd buffer. */
int sd_image_encode_png(const sd_image *im, uint8_t **data, size_t *n);
int sd_image_encode_jpeg(const sd_image *im, int quality, uint8_t **data, size_t *n);

/* Copy the rectangle (x, y, w, h), which must lie inside src, into a new image. */
int sd_image_crop(const sd_image *src, int x, int y, int w, int h, sd_image *out);
/* Mirror left-right in place. */
void sd_image_flip_h(sd_image *im);

#endif
