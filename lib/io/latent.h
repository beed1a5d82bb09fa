/* Latent files (sd-latent(5)): a zip of .npy members in numpy's .npz layout with the member
 * names kohya-ss/sd-scripts uses, plus our own metadata member:
 *
 *   latents.npy          <f4 (or <f2) [C, H/8, W/8]   always
 *   original_size.npy    <i8 [2] = [W, H] of the source image
 *   crop_ltrb.npy        <i8 [4] = [left, top, right, bottom]
 *   latents_flipped.npy  same dtype/shape as latents  optional (flip_aug)
 *   alpha_mask.npy       <f4 [H, W] (bucket pixels)    optional
 *   sd_meta.json         a JSON object                 ours (numpy.load returns it as bytes)
 *
 * Written with our own zip writer (lib/io/zip.h): zstd members (method 93) by default, or
 * STORED members (SD_LATENT_STORE), which is the plain .npz that any numpy and the reference
 * toolkit load. Read with libarchive, which reads stored, deflate and zstd members; so files
 * written by numpy (np.savez / np.savez_compressed) and by kohya read too. */
#ifndef SD_IO_LATENT_H
#define SD_IO_LATENT_H

#include <stddef.h>
#include <stdint.h>

#define SD_LATENT_MAX_MEMBER ((size_t)1 << 30)  /* default bound on one member's size */
#define SD_LATENT_MAX_META ((size_t)1 << 20)    /* bound on sd_meta.json */

typedef struct sd_latent_file {
    float *latents;            /* [c, h, w], C order */
    int c, h, w;
    int64_t original_size[2];  /* W, H of the source image */
    int64_t crop_ltrb[4];      /* left, top, right, bottom */
    float *latents_flipped;    /* [c, h, w] or NULL */
    float *alpha_mask;         /* [mask_h, mask_w] = [h*8, w*8] or NULL */
    int mask_h, mask_w;
    char *meta_json;           /* NUL-terminated JSON object text, or NULL (reading kohya files) */
    int half;                  /* on read: latents were stored as <f2 (informational) */
} sd_latent_file;

enum { SD_LATENT_ZSTD = 0, SD_LATENT_STORE = 1 };

typedef struct sd_latent_write_opts {
    int compress;     /* SD_LATENT_ZSTD (default) or SD_LATENT_STORE */
    int zstd_level;   /* 0 = default (3) */
    int half;         /* store latents and latents_flipped as <f2 (alpha_mask stays <f4) */
} sd_latent_write_opts;

typedef struct sd_latent_read_opts {
    size_t max_member;  /* bound on one member's uncompressed size; 0 = SD_LATENT_MAX_MEMBER */
} sd_latent_read_opts;

/* Read and validate a latent file (or any .npz with these members). opts may be NULL.
 * Errors: SD_ENOTFOUND (no such file), SD_EIO (open/read), SD_EFORMAT (not a zip, bad CRC, truncated, missing member, wrong
 * dtype or shape, invalid sd_meta.json), SD_EUNSUPPORTED (e.g. an old-format npz holding only
 * arr_0), SD_ERANGE (member larger than the bound). The message names the file and member. */
int sd_latent_read(const char *path, const sd_latent_read_opts *opts, sd_latent_file *lf);
/* The same from memory; `name` is used in error messages (NULL = "<memory>"). */
int sd_latent_read_memory(const void *buf, size_t n, const char *name, const sd_latent_read_opts *opts,
                          sd_latent_file *lf);
void sd_latent_free(sd_latent_file *lf);

/* Write atomically (temp file + rename). lf->meta_json, when set, must be a JSON object and is
 * stored verbatim as sd_meta.json; when NULL, {"format":1} is stored. opts may be NULL. */
int sd_latent_write(const char *path, const sd_latent_file *lf, const sd_latent_write_opts *opts);
/* Write into a malloc'd buffer. */
int sd_latent_write_memory(const sd_latent_file *lf, const sd_latent_write_opts *opts, void **out, size_t *n);

/* kohya's cache file name for an image: "<image path without extension>_<WWWW>x<HHHH>_sd.npz"
 * (or "_sdxl.npz"), W×H the original image size zero-padded to 4 digits. Returns the length or
 * SD_ERANGE if cap is too small. */
int sd_latent_kohya_name(char *out, size_t cap, const char *image_path, int64_t orig_w, int64_t orig_h, int sdxl);

/* Check that text (n bytes) is one JSON object (RFC 8259 syntax, valid UTF-8, nesting ≤ 64). */
int sd_latent_meta_validate(const char *text, size_t n);

#endif
