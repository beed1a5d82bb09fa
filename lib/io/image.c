/* Image decoding (libjpeg-turbo, stb_image, libwebp), header probing and encoding
 * (libjpeg-turbo, stb_image_write). See image.h for the conversions and the reasons behind
 * them. stb_image / stb_image_write come from libstb (Debian's compiled libstb.so): no
 * *_IMPLEMENTATION here. */
#include "io/image.h"

#include "base/error.h"
#include "base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>
#include <stb_image.h>
#include <stb_image_write.h>
#include <webp/decode.h>

#define SD_IMAGE_MAX_FILE ((size_t)1 << 31) /* stb_image takes an int length */

static uint64_t g_max_pixels = (uint64_t)1 << 28;

void sd_image_set_max_pixels(uint64_t max) { g_max_pixels = max ? max : ((uint64_t)1 << 28); }
uint64_t sd_image_max_pixels(void) { return g_max_pixels; }

int sd_image_alloc(sd_image *im, int w, int h, int c)
{
    memset(im, 0, sizeof *im);
    if (w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4))
        return sd_err(SD_EINVAL, "image: bad size %dx%dx%d", w, h, c);
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    if (n / (size_t)c / (size_t)h != (size_t)w) return sd_err(SD_ERANGE, "image: size overflow");
    im->px = malloc(n);
    if (!im->px) return sd_err(SD_ENOMEM, "image: out of memory (%dx%dx%d)", w, h, c);
    im->w = w;
    im->h = h;
    im->c = c;
    return SD_OK;
}

void sd_image_free(sd_image *im)
{
    if (!im) return;
    free(im->px);
    memset(im, 0, sizeof *im);
}

/* ---------------------------------------------------------------- format detection */

int sd_image_format_detect(const void *data, size_t n)
{
    const uint8_t *p = data;
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return SD_IMAGE_PNG;
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return SD_IMAGE_JPEG;
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return SD_IMAGE_BMP;
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return SD_IMAGE_WEBP;
    return SD_IMAGE_UNKNOWN;
}

const char *sd_image_format_name(int format)
{
    switch (format) {
    case SD_IMAGE_PNG: return "png";
    case SD_IMAGE_JPEG: return "jpeg";
    case SD_IMAGE_BMP: return "bmp";
    case SD_IMAGE_WEBP: return "webp";
    default: return "unknown";
    }
}

/* ---------------------------------------------------------------- probing */

/* A byte source for the probe: a file read with pread, or a memory buffer. */
typedef struct {
    int fd;
    const uint8_t *mem;
    uint64_t size;
} src_t;

/* Read up to n bytes at off; returns the count read (short at the end), -1 on I/O error. */
static long src_read(const src_t *s, uint64_t off, void *buf, size_t n)
{
    if (off >= s->size) return 0;
    if (n > s->size - off) n = (size_t)(s->size - off);
    if (s->mem) {
        memcpy(buf, s->mem + off, n);
        return (long)n;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(s->fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long)got;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[1] << 8 | p[0]); }

static int check_dims(const char *name, int64_t w, int64_t h)
{
    if (w <= 0 || h <= 0)
        return sd_err(SD_EFORMAT, "%s: invalid image size %lldx%lld", name, (long long)w, (long long)h);
    if (w > INT_MAX || h > INT_MAX || (uint64_t)w * (uint64_t)h > g_max_pixels)
        return sd_err(SD_ERANGE, "%s: image too large (%lldx%lld, limit %llu pixels)", name,
                      (long long)w, (long long)h, (unsigned long long)g_max_pixels);
    return SD_OK;
}

/* ---------------------------------------------------------------- libjpeg-turbo plumbing */

/* A progressive JPEG may hold any number of scans, each a pass over the whole coefficient
 * buffer; encoders write about 10. A hostile file with thousands of tiny scans would take
 * minutes, so more than this many is refused (djpeg -maxscans does the same). */
#define SD_JPEG_MAX_SCANS 1000

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int nomem;                  /* our own allocation failed (encoder output buffer) */
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_fail(j_common_ptr ci)
{
    jpeg_err *e = (jpeg_err *)ci->err;
    e->pub.format_message(ci, e->msg);
    for (char *c = e->msg; *c; c++)
        if ((unsigned char)*c < 32) *c = ' '; /* keep the message on one line */
    longjmp(e->jb, 1);
}

/* Warnings (level -1): running out of data (libjpeg then pads with a fake EOI and warns
 * "Premature end of JPEG file") is an error, as PIL raises "image file is truncated". The
 * other corrupt-data warnings (extraneous bytes before a marker, bad Huffman code, ...) are
 * ignored as PIL ignores them: the image decodes with what libjpeg recovers. Trace messages
 * (level > 0) are dropped. */
static void jpeg_message(j_common_ptr ci, int level)
{
    if (level < 0 && ci->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_err *e = (jpeg_err *)ci->err;
        snprintf(e->msg, sizeof e->msg, "truncated JPEG (premature end of data)");
        longjmp(e->jb, 1);
    }
}

static void jpeg_output(j_common_ptr ci) { (void)ci; }

static struct jpeg_error_mgr *jpeg_err_init(jpeg_err *e)
{
    memset(e, 0, sizeof *e);
    jpeg_std_error(&e->pub);
    e->pub.error_exit = jpeg_fail;
    e->pub.emit_message = jpeg_message;
    e->pub.output_message = jpeg_output;
    return &e->pub;
}

static void jpeg_progress(j_common_ptr ci)
{
    if (!ci->is_decompressor) return;
    if (((j_decompress_ptr)ci)->input_scan_number > SD_JPEG_MAX_SCANS) {
        jpeg_err *e = (jpeg_err *)ci->err;
        snprintf(e->msg, sizeof e->msg, "more than %d scans in a progressive JPEG",
                 SD_JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

/* Everything a setjmp-guarded libjpeg call touches lives here, behind a pointer that does not
 * change after setjmp, so nothing is left indeterminate by the longjmp. */
typedef struct {
    struct jpeg_decompress_struct ci;
    struct jpeg_progress_mgr prog;
    jpeg_err e;
    uint8_t *buf;
} jpeg_dec;

/* Frame size as libjpeg reads it (the probe's fallback when the strict marker walk fails).
 * Returns 1 and sets *w, *h, or 0. */
static int jpeg_header_run(jpeg_dec *d, const uint8_t *data, size_t n, int64_t *w, int64_t *h)
{
    d->ci.err = jpeg_err_init(&d->e);
    if (setjmp(d->e.jb)) {
        jpeg_destroy_decompress(&d->ci);
        return 0;
    }
    jpeg_create_decompress(&d->ci);
    jpeg_mem_src(&d->ci, data, (unsigned long)n);
    jpeg_read_header(&d->ci, TRUE);
    *w = d->ci.image_width;
    *h = d->ci.image_height;
    jpeg_destroy_decompress(&d->ci);
    return 1;
}

static int jpeg_header_dims(const uint8_t *data, size_t n, int64_t *w, int64_t *h)
{
    jpeg_dec d;
    memset(&d, 0, sizeof d);
    return jpeg_header_run(&d, data, n, w, h);
}

/* JPEG: walk the marker segments from offset 2 to the first SOFn. Returns 1 found, 0 not
 * found (caller falls back to stb), negative on I/O error. */
static int jpeg_scan(const src_t *s, int64_t *w, int64_t *h)
{
    uint64_t pos = 2;
    for (int guard = 0; guard < 4096; guard++) {
        uint8_t b[9];
        long r = src_read(s, pos, b, 2);
        if (r < 0) return -1;
        if (r < 2 || b[0] != 0xFF) return 0;
        uint8_t m = b[1];
        if (m == 0xFF) { pos++; continue; } /* fill byte */
        if (m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) { pos += 2; continue; }
        if (m == 0xD9 || m == 0xDA) return 0; /* EOI / SOS before any SOF */
        r = src_read(s, pos + 2, b, 7);
        if (r < 0) return -1;
        if (r < 2) return 0;
        unsigned len = (unsigned)b[0] << 8 | b[1];
        if (len < 2) return 0;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (r < 7 || len < 8) return 0;
            *h = (int64_t)b[3] << 8 | b[4];
            *w = (int64_t)b[5] << 8 | b[6];
            return 1;
        }
        pos += 2 + (uint64_t)len;
    }
    return 0;
}

static int probe_src(const src_t *s, const char *name, int *wp, int *hp, int *fmtp)
{
    uint8_t hdr[64];
    long n = src_read(s, 0, hdr, sizeof hdr);
    if (n < 0) return sd_err(SD_EIO, "%s: %s", name, strerror(errno));
    if (n == 0) return sd_err(SD_EFORMAT, "%s: empty file", name);
    int fmt = sd_image_format_detect(hdr, (size_t)n);
    if (fmtp) *fmtp = fmt;
    int64_t w = 0, h = 0;
    switch (fmt) {
    case SD_IMAGE_PNG:
        if (n < 24 || memcmp(hdr + 12, "IHDR", 4) || be32(hdr + 8) != 13)
            return sd_err(SD_EFORMAT, "%s: cannot decode: PNG without IHDR header", name);
        w = be32(hdr + 16);
        h = be32(hdr + 20);
        break;
    case SD_IMAGE_JPEG: {
        int r = jpeg_scan(s, &w, &h);
        if (r < 0) return sd_err(SD_EIO, "%s: %s", name, strerror(errno));
        if (r == 0) {
            /* fallback: libjpeg's own header reader (it skips stray bytes between segments),
             * on the whole file, so that probe and decode always agree */
            if (s->size > SD_IMAGE_MAX_FILE) return sd_err(SD_ERANGE, "%s: file too large", name);
            int ok;
            if (s->mem) {
                ok = jpeg_header_dims(s->mem, (size_t)s->size, &w, &h);
            } else {
                uint8_t *all = malloc(s->size ? (size_t)s->size : 1);
                if (!all) return sd_err(SD_ENOMEM, "%s: out of memory", name);
                long got = src_read(s, 0, all, (size_t)s->size);
                ok = got > 0 && jpeg_header_dims(all, (size_t)got, &w, &h);
                free(all);
            }
            if (!ok) return sd_err(SD_EFORMAT, "%s: cannot decode: no JPEG frame header", name);
        }
        break;
    }
    case SD_IMAGE_BMP:
        if (n < 26) return sd_err(SD_EFORMAT, "%s: cannot decode: truncated BMP header", name);
        if (le32(hdr + 14) == 12) {
            w = le16(hdr + 18);
            h = le16(hdr + 20);
        } else {
            w = (int32_t)le32(hdr + 18);
            h = (int32_t)le32(hdr + 22);
            if (h < 0) h = -h; /* top-down bitmap */
        }
        break;
    case SD_IMAGE_WEBP: {
        uint8_t buf[4096];
        long m = src_read(s, 0, buf, sizeof buf);
        if (m < 0) return sd_err(SD_EIO, "%s: %s", name, strerror(errno));
        WebPBitstreamFeatures f;
        VP8StatusCode st = WebPGetFeatures(buf, (size_t)m, &f);
        if (st != VP8_STATUS_OK)
            return sd_err(SD_EFORMAT, "%s: cannot decode: %s", name,
                          st == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated WebP header"
                                                           : "bad WebP header");
        w = f.width;
        h = f.height;
        break;
    }
    default:
        return sd_err(SD_EUNSUPPORTED, "%s: unknown image format", name);
    }
    int rc = check_dims(name, w, h);
    if (rc) return rc;
    *wp = (int)w;
    *hp = (int)h;
    return SD_OK;
}

static int open_src(const char *path, src_t *s)
{
    memset(s, 0, sizeof *s);
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        int e = errno;
        close(s->fd);
        return sd_err(SD_EIO, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(s->fd);
        return sd_err(SD_EIO, "%s: %s", path, strerror(EISDIR));
    }
    s->size = (uint64_t)st.st_size;
    return SD_OK;
}

int sd_image_probe(const char *path, int *w, int *h, int *format)
{
    src_t s;
    if (format) *format = SD_IMAGE_UNKNOWN;
    int rc = open_src(path, &s);
    if (rc) return rc;
    rc = probe_src(&s, path, w, h, format);
    close(s.fd);
    return rc;
}

int sd_image_probe_mem(const void *data, size_t n, const char *name, int *w, int *h, int *format)
{
    src_t s = {-1, data, n};
    if (!data) s.size = 0;
    return probe_src(&s, name ? name : "(memory)", w, h, format);
}

/* ---------------------------------------------------------------- decoding */

/* Round(t / 255) the way PIL's AlphaComposite.c computes it for a white opaque destination
 * (see image.h): coef1 = a*128, coef2 = (255-a)*128. */
static inline uint8_t over_white(unsigned c, unsigned a)
{
    if (a == 0) return 255;
    unsigned x = c * (a << 7) + 255u * ((255u - a) << 7) + (0x80u << 7);
    return (uint8_t)((((x >> 8) + x) >> 8) >> 7);
}

/* Convert a native buffer with `nc` channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) into `out`
 * (c = 3 or 4 by alpha mode) and the optional mask. `buf` is consumed (reused or freed). */
static int finish(uint8_t *buf, int w, int h, int nc, int alpha, const char *name, sd_image *out,
                  uint8_t **mask)
{
    size_t np = (size_t)w * (size_t)h;
    int oc = alpha == SD_ALPHA_KEEP ? 4 : 3;
    if (mask) {
        *mask = malloc(np ? np : 1);
        if (!*mask) {
            free(buf);
            return sd_err(SD_ENOMEM, "%s: out of memory", name);
        }
        if (nc == 2 || nc == 4)
            for (size_t i = 0; i < np; i++) (*mask)[i] = buf[i * (size_t)nc + (size_t)nc - 1];
        else
            memset(*mask, 255, np);
    }
    uint8_t *dst;
    if (nc == oc && !(nc == 4 && alpha != SD_ALPHA_KEEP)) {
        dst = buf; /* already in the requested layout */
    } else {
        dst = (nc == 4 && oc == 3) ? buf : malloc(np * (size_t)oc); /* 4 -> 3 in place */
        if (!dst) {
            free(buf);
            if (mask) { free(*mask); *mask = NULL; }
            return sd_err(SD_ENOMEM, "%s: out of memory", name);
        }
        const int white = alpha == SD_ALPHA_WHITE;
        for (size_t i = 0; i < np; i++) {
            const uint8_t *s = buf + i * (size_t)nc;
            unsigned r, g, b, a = 255;
            switch (nc) {
            case 1: r = g = b = s[0]; break;
            case 2: r = g = b = s[0]; a = s[1]; break;
            case 3: r = s[0]; g = s[1]; b = s[2]; break;
            default: r = s[0]; g = s[1]; b = s[2]; a = s[3]; break;
            }
            uint8_t *d = dst + i * (size_t)oc;
            if (white && a != 255) {
                r = over_white(r, a);
                g = over_white(g, a);
                b = over_white(b, a);
            }
            d[0] = (uint8_t)r;
            d[1] = (uint8_t)g;
            d[2] = (uint8_t)b;
            if (oc == 4) d[3] = (uint8_t)a;
        }
        if (dst != buf) {
            free(buf);
        } else {
            uint8_t *shrunk = realloc(dst, np * 3);
            if (shrunk) dst = shrunk;
        }
    }
    out->w = w;
    out->h = h;
    out->c = oc;
    out->px = dst;
    return SD_OK;
}

static int decode_webp(const uint8_t *data, size_t n, const char *name, int alpha, sd_image *out,
                       uint8_t **mask)
{
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, n, &f);
    if (st != VP8_STATUS_OK)
        return sd_err(SD_EFORMAT, "%s: cannot decode: bad WebP header", name);
    if (f.has_animation)
        return sd_err(SD_EUNSUPPORTED, "%s: animated WebP is not supported", name);
    int nc = f.has_alpha ? 4 : 3;
    size_t stride = (size_t)f.width * (size_t)nc, sz = stride * (size_t)f.height;
    uint8_t *buf = malloc(sz ? sz : 1);
    if (!buf) return sd_err(SD_ENOMEM, "%s: out of memory", name);
    uint8_t *r = nc == 4 ? WebPDecodeRGBAInto(data, n, buf, sz, (int)stride)
                         : WebPDecodeRGBInto(data, n, buf, sz, (int)stride);
    if (!r) {
        free(buf);
        return sd_err(SD_EFORMAT, "%s: cannot decode: corrupt or truncated WebP data", name);
    }
    return finish(buf, f.width, f.height, nc, alpha, name, out, mask);
}

/* PIL opens every 4-component JPEG as "CMYK;I" (inverted, the Adobe convention) and
 * convert("RGB") then computes, per channel with c = 255 - stored, k = 255 - stored K:
 *     nk = 255 - k;  out = nk - MULDIV255(c, nk)   (MULDIV255: t = a*b + 128, ((t>>8)+t)>>8)
 * Converted in place, 4 bytes per pixel in, 3 out. */
static void cmyk_to_rgb(uint8_t *p, size_t np)
{
    for (size_t i = 0; i < np; i++) {
        const uint8_t *s = p + i * 4;
        unsigned nk = s[3], r[3];
        for (int ch = 0; ch < 3; ch++) {
            unsigned t = (255u - s[ch]) * nk + 128u;
            r[ch] = nk - (((t >> 8) + t) >> 8);
        }
        uint8_t *d = p + i * 3;
        d[0] = (uint8_t)r[0];
        d[1] = (uint8_t)r[1];
        d[2] = (uint8_t)r[2];
    }
}

/* Decode with libjpeg-turbo the way PIL 9.4 does (Image.open + load): output colour space
 * from the component count (1 grey, 3 RGB, 4 CMYK), ISLOW integer IDCT, fancy upsampling. On
 * success d->buf holds w*h*nc bytes; returns the channel count (1, 3 or 4) or an SD_E* code. */
static int jpeg_decode_run(jpeg_dec *d, const uint8_t *data, size_t n, const char *name, int w,
                           int h)
{
    d->ci.err = jpeg_err_init(&d->e);
    if (setjmp(d->e.jb)) {
        jpeg_destroy_decompress(&d->ci);
        free(d->buf);
        d->buf = NULL;
        return sd_err(SD_EFORMAT, "%s: cannot decode: %s", name, d->e.msg);
    }
    jpeg_create_decompress(&d->ci);
    d->prog.progress_monitor = jpeg_progress;
    d->ci.progress = &d->prog;
    jpeg_mem_src(&d->ci, data, (unsigned long)n);
    jpeg_read_header(&d->ci, TRUE);
    int nc, rc = SD_OK;
    switch (d->ci.num_components) {
    case 1: d->ci.out_color_space = JCS_GRAYSCALE; nc = 1; break;
    case 3: d->ci.out_color_space = JCS_RGB; nc = 3; break;
    case 4: d->ci.out_color_space = JCS_CMYK; nc = 4; break;
    default:
        nc = 0;
        rc = sd_err(SD_EUNSUPPORTED, "%s: %d-component JPEG is not supported", name,
                    d->ci.num_components);
    }
    if (!rc && ((int64_t)d->ci.image_width != w || (int64_t)d->ci.image_height != h))
        rc = sd_err(SD_EFORMAT, "%s: cannot decode: header says %dx%d, frame is %ux%u", name, w,
                    h, d->ci.image_width, d->ci.image_height);
    if (rc) {
        jpeg_destroy_decompress(&d->ci);
        return rc;
    }
    d->ci.dct_method = JDCT_ISLOW;
    d->ci.do_fancy_upsampling = TRUE;
    d->ci.do_block_smoothing = TRUE; /* libjpeg's default, as PIL leaves it */
    jpeg_start_decompress(&d->ci);
    if ((int64_t)d->ci.output_width != w || (int64_t)d->ci.output_height != h ||
        d->ci.output_components != nc) {
        jpeg_destroy_decompress(&d->ci);
        return sd_err(SD_EFORMAT, "%s: cannot decode: unexpected JPEG output layout", name);
    }
    size_t stride = (size_t)w * (size_t)nc;
    d->buf = malloc(stride * (size_t)h);
    if (!d->buf) {
        jpeg_destroy_decompress(&d->ci);
        return sd_err(SD_ENOMEM, "%s: out of memory", name);
    }
    while (d->ci.output_scanline < d->ci.output_height) {
        JSAMPROW rows[16];
        JDIMENSION y = d->ci.output_scanline, k = 0;
        for (; k < 16 && y + k < d->ci.output_height; k++) rows[k] = d->buf + (size_t)(y + k) * stride;
        if (jpeg_read_scanlines(&d->ci, rows, k) == 0) { /* cannot happen with a memory source */
            jpeg_destroy_decompress(&d->ci);
            free(d->buf);
            d->buf = NULL;
            return sd_err(SD_EFORMAT, "%s: cannot decode: JPEG decoder stalled", name);
        }
    }
    jpeg_finish_decompress(&d->ci); /* reads on to EOI: a missing end is "truncated" */
    jpeg_destroy_decompress(&d->ci);
    return nc;
}

static int decode_jpeg(const uint8_t *data, size_t n, const char *name, int w, int h, int alpha,
                       sd_image *out, uint8_t **mask)
{
    jpeg_dec d;
    memset(&d, 0, sizeof d);
    int nc = jpeg_decode_run(&d, data, n, name, w, h);
    if (nc < 0) return nc;
    uint8_t *buf = d.buf;
    if (nc == 4) {
        size_t np = (size_t)w * (size_t)h;
        cmyk_to_rgb(buf, np);
        uint8_t *shrunk = realloc(buf, np * 3);
        if (shrunk) buf = shrunk;
        nc = 3;
    }
    return finish(buf, w, h, nc, alpha, name, out, mask);
}

/* stb_image's failure strings are terse ("outofdata", "invalid") and sometimes empty (its
 * "XXXX PNG chunk not known" message starts with the chunk type, NUL for a truncated file). */
static const char *stb_reason(int fmt)
{
    const char *why = stbi_failure_reason();
    if (!why || !*why || (unsigned char)*why < 32) return "corrupt or truncated data";
    if (!strcmp(why, "outofdata")) return "truncated data";
    if (!strcmp(why, "unknown image type"))
        return fmt == SD_IMAGE_BMP ? "unsupported or corrupt BMP header" : "corrupt header";
    if (!strcmp(why, "invalid")) return "invalid header values";
    if (!strcmp(why, "bad ctype")) return "bad PNG colour type";
    return why;
}

/* stb_image decodes a truncated BMP without complaint (it pads with zeros); PIL raises "image
 * file is truncated". Detect truncation up front so a half-written file is an error. (JPEG
 * truncation is reported by libjpeg itself: see jpeg_message.) */
static int check_complete(const uint8_t *p, size_t n, int fmt, const char *name)
{
    if (fmt == SD_IMAGE_BMP && n >= 34) {
        uint32_t off = le32(p + 10), hsz = le32(p + 14);
        if (hsz == 12 || hsz < 40) return SD_OK;
        int64_t w = (int32_t)le32(p + 18), h = (int32_t)le32(p + 22);
        unsigned bpp = le16(p + 28), comp = le32(p + 30);
        if (h < 0) h = -h;
        if (w <= 0 || (comp != 0 && comp != 3 && comp != 6) || bpp == 0 || bpp > 32) return SD_OK;
        uint64_t stride = (((uint64_t)w * bpp + 31) / 32) * 4;
        if ((uint64_t)off + stride * (uint64_t)h > n)
            return sd_err(SD_EFORMAT, "%s: cannot decode: truncated BMP (%zu of %llu bytes)", name,
                          n, (unsigned long long)((uint64_t)off + stride * (uint64_t)h));
    }
    return SD_OK;
}

int sd_image_decode(const void *data, size_t n, const char *name, int alpha, sd_image *out,
                    uint8_t **mask)
{
    if (!name) name = "(memory)";
    memset(out, 0, sizeof *out);
    if (mask) *mask = NULL;
    if (alpha < SD_ALPHA_DROP || alpha > SD_ALPHA_KEEP)
        return sd_err(SD_EINVAL, "%s: bad alpha mode %d", name, alpha);
    int w, h, fmt;
    int rc = sd_image_probe_mem(data, n, name, &w, &h, &fmt);
    if (rc) return rc;
    if (fmt == SD_IMAGE_WEBP) return decode_webp(data, n, name, alpha, out, mask);
    if (fmt == SD_IMAGE_JPEG) return decode_jpeg(data, n, name, w, h, alpha, out, mask);
    if (n > (size_t)INT_MAX) return sd_err(SD_ERANGE, "%s: file too large", name);
    rc = check_complete(data, n, fmt, name);
    if (rc) return rc;
    int iw = 0, ih = 0, nc = 0;
    uint8_t *buf = stbi_load_from_memory(data, (int)n, &iw, &ih, &nc, 0);
    if (!buf) return sd_err(SD_EFORMAT, "%s: cannot decode: %s", name, stb_reason(fmt));
    if (iw != w || ih != h || nc < 1 || nc > 4) {
        stbi_image_free(buf);
        return sd_err(SD_EFORMAT, "%s: cannot decode: header says %dx%d, data is %dx%d", name, w,
                      h, iw, ih);
    }
    return finish(buf, w, h, nc, alpha, name, out, mask);
}

int sd_image_load(const char *path, int alpha, sd_image *out, uint8_t **mask)
{
    memset(out, 0, sizeof *out);
    if (mask) *mask = NULL;
    /* Probe first: rejects unknown formats and oversized images before reading everything. */
    int w, h, fmt;
    int rc = sd_image_probe(path, &w, &h, &fmt);
    if (rc) return rc;
    char *data;
    size_t n;
    rc = sd_read_file(path, SD_IMAGE_MAX_FILE, &data, &n);
    if (rc) return rc;
    rc = sd_image_decode(data, n, path, alpha, out, mask);
    free(data);
    return rc;
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int failed;
} membuf;

static void mem_write(void *ctx, void *data, int size)
{
    membuf *m = ctx;
    if (m->failed || size <= 0) return;
    if (m->n + (size_t)size > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 65536;
        while (cap < m->n + (size_t)size) cap *= 2;
        uint8_t *p = realloc(m->p, cap);
        if (!p) { m->failed = 1; return; }
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

/* libjpeg destination writing into a membuf that grows by doubling. */
typedef struct {
    struct jpeg_destination_mgr pub;
    membuf *m;
} jpeg_dest;

static int membuf_grow(membuf *m, size_t need)
{
    if (need <= m->cap) return 0;
    size_t cap = m->cap ? m->cap * 2 : 65536;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(m->p, cap);
    if (!p) return -1;
    m->p = p;
    m->cap = cap;
    return 0;
}

static void jdest_init(j_compress_ptr ci)
{
    jpeg_dest *d = (jpeg_dest *)ci->dest;
    d->pub.next_output_byte = d->m->p + d->m->n;
    d->pub.free_in_buffer = d->m->cap - d->m->n;
}

static boolean jdest_empty(j_compress_ptr ci)
{
    jpeg_dest *d = (jpeg_dest *)ci->dest;
    d->m->n = d->m->cap; /* libjpeg calls this with the whole buffer full */
    if (membuf_grow(d->m, d->m->cap + 1)) {
        ((jpeg_err *)ci->err)->nomem = 1;
        ERREXIT1(ci, JERR_OUT_OF_MEMORY, 0);
    }
    jdest_init(ci);
    return TRUE;
}

static void jdest_term(j_compress_ptr ci)
{
    jpeg_dest *d = (jpeg_dest *)ci->dest;
    d->m->n = d->m->cap - d->pub.free_in_buffer;
}

typedef struct {
    struct jpeg_compress_struct ci;
    jpeg_err e;
    jpeg_dest dest;
    membuf m;
} jpeg_enc;

/* Encode the way PIL 9.4 saves with save(f, "JPEG", quality=q) and no other options:
 * libjpeg defaults (JFIF 1.01 header, density 1:1, YCbCr 4:2:0 for colour, standard Huffman
 * tables, baseline, no optimisation, ISLOW forward DCT) and jpeg_set_quality(q, force
 * baseline). The bytes are the same as PIL's (tests/unit/test_image.c checks this). */
static int jpeg_encode_run(jpeg_enc *st, const sd_image *im, int quality, const char *what)
{
    st->ci.err = jpeg_err_init(&st->e);
    if (setjmp(st->e.jb)) {
        jpeg_destroy_compress(&st->ci);
        free(st->m.p);
        st->m.p = NULL;
        return st->e.nomem ? sd_err(SD_ENOMEM, "%s: out of memory", what)
                           : sd_err(SD_EIO, "%s: JPEG encoder failed: %s", what, st->e.msg);
    }
    jpeg_create_compress(&st->ci);
    /* first guess at the size: a quarter of the raw pixels, at least 64 KiB */
    size_t raw = (size_t)im->w * (size_t)im->h * (size_t)im->c;
    if (membuf_grow(&st->m, raw / 4 > 65536 ? raw / 4 : 65536)) {
        jpeg_destroy_compress(&st->ci);
        return sd_err(SD_ENOMEM, "%s: out of memory", what);
    }
    st->dest.m = &st->m;
    st->dest.pub.init_destination = jdest_init;
    st->dest.pub.empty_output_buffer = jdest_empty;
    st->dest.pub.term_destination = jdest_term;
    st->ci.dest = &st->dest.pub;
    st->ci.image_width = (JDIMENSION)im->w;
    st->ci.image_height = (JDIMENSION)im->h;
    st->ci.input_components = im->c;
    st->ci.in_color_space = im->c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&st->ci);
    jpeg_set_quality(&st->ci, quality, TRUE);
    st->ci.optimize_coding = FALSE;
    st->ci.dct_method = JDCT_ISLOW;
    jpeg_start_compress(&st->ci, TRUE);
    size_t stride = (size_t)im->w * (size_t)im->c;
    while (st->ci.next_scanline < st->ci.image_height) {
        JSAMPROW rows[16];
        JDIMENSION y = st->ci.next_scanline, k = 0;
        for (; k < 16 && y + k < st->ci.image_height; k++) rows[k] = im->px + (size_t)(y + k) * stride;
        jpeg_write_scanlines(&st->ci, rows, k);
    }
    jpeg_finish_compress(&st->ci);
    jpeg_destroy_compress(&st->ci);
    return SD_OK;
}

static int check_enc(const sd_image *im, int jpeg, const char *what)
{
    if (!im || !im->px || im->w <= 0 || im->h <= 0)
        return sd_err(SD_EINVAL, "%s: empty image", what);
    if (jpeg ? (im->c != 1 && im->c != 3) : (im->c != 1 && im->c != 3 && im->c != 4))
        return sd_err(SD_EINVAL, "%s: cannot write %d-channel image as %s", what, im->c,
                      jpeg ? "JPEG" : "PNG");
    if ((int64_t)im->w * im->c > INT_MAX / 2) return sd_err(SD_ERANGE, "%s: image too wide", what);
    return SD_OK;
}

static int encode(const sd_image *im, int jpeg, int quality, const char *what, uint8_t **data,
                  size_t *n)
{
    *data = NULL;
    *n = 0;
    int rc = check_enc(im, jpeg, what);
    if (rc) return rc;
    if (jpeg && (quality < 1 || quality > 100))
        return sd_err(SD_EINVAL, "%s: JPEG quality %d outside 1..100", what, quality);
    if (jpeg) {
        jpeg_enc st;
        memset(&st, 0, sizeof st);
        rc = jpeg_encode_run(&st, im, quality, what);
        if (rc) return rc;
        *data = st.m.p;
        *n = st.m.n;
        return SD_OK;
    }
    membuf m = {0};
    int ok = stbi_write_png_to_func(mem_write, &m, im->w, im->h, im->c, im->px, im->w * im->c);
    if (!ok || m.failed) {
        free(m.p);
        return m.failed ? sd_err(SD_ENOMEM, "%s: out of memory", what)
                        : sd_err(SD_EIO, "%s: PNG encoder failed", what);
    }
    *data = m.p;
    *n = m.n;
    return SD_OK;
}

int sd_image_encode_png(const sd_image *im, uint8_t **data, size_t *n)
{
    return encode(im, 0, 0, "png", data, n);
}

int sd_image_encode_jpeg(const sd_image *im, int quality, uint8_t **data, size_t *n)
{
    return encode(im, 1, quality, "jpeg", data, n);
}

static int write_file(const char *path, const sd_image *im, int jpeg, int quality)
{
    uint8_t *data;
    size_t n;
    int rc = encode(im, jpeg, quality, path, &data, &n);
    if (rc) return rc;
    rc = sd_write_file_atomic(path, data, n);
    free(data);
    return rc;
}

int sd_image_write_png(const char *path, const sd_image *im) { return write_file(path, im, 0, 0); }

int sd_image_write_jpeg(const char *path, const sd_image *im, int quality)
{
    return write_file(path, im, 1, quality);
}

/* ---------------------------------------------------------------- crop / flip */

int sd_image_crop(const sd_image *src, int x, int y, int w, int h, sd_image *out)
{
    memset(out, 0, sizeof *out);
    if (!src || !src->px || x < 0 || y < 0 || w <= 0 || h <= 0 || x > src->w - w ||
        y > src->h - h)
        return sd_err(SD_EINVAL, "crop: rectangle %d,%d %dx%d outside %dx%d image", x, y, w, h,
                      src ? src->w : 0, src ? src->h : 0);
    int rc = sd_image_alloc(out, w, h, src->c);
    if (rc) return rc;
    size_t row = (size_t)w * (size_t)src->c;
    for (int j = 0; j < h; j++)
        memcpy(out->px + (size_t)j * row,
               src->px + (((size_t)(y + j) * (size_t)src->w) + (size_t)x) * (size_t)src->c, row);
    return SD_OK;
}

void sd_image_flip_h(sd_image *im)
{
    if (!im || !im->px) return;
    int c = im->c;
    for (int y = 0; y < im->h; y++) {
        uint8_t *row = im->px + (size_t)y * (size_t)im->w * (size_t)c;
        for (int a = 0, b = im->w - 1; a < b; a++, b--)
            for (int k = 0; k < c; k++) {
                uint8_t t = row[a * c + k];
                row[a * c + k] = row[b * c + k];
                row[b * c + k] = t;
            }
    }
}
