/* Latent cache keys and validity rules (sd-latent(5), reference-behaviour §4.7).
 *
 * The reference reuses a cache file when it merely exists (HEAD) or has the right members and
 * shape (v0.7-v0.9): editing an image or changing the bucket settings silently trains on stale
 * latents. Here a latent file is reused only when its sd_meta.json member says it was made from
 * exactly the same inputs:
 *
 *   format         SD_LATENT_CACHE_FORMAT (the layout of the file and of this key)
 *   vae_sha256     sd_latent_vae_hash(): the encoder weights as loaded
 *   source_sha256  SHA-256 of the source image file's bytes
 *   bucket         [w, h]; resized [w, h] (the size before the centre trim)
 *   crop_ltrb      the four numbers of the plan (get_crop_ltrb, may be fractional)
 *   interpolation  "auto" (the reference's rule) or the forced filter's name
 *   flip           latents_flipped present;  alpha_mask  alpha_mask present
 *   dtype          "float32" / "float16";  latent_mode  "sample" / "mean"
 *   seed           the sampling seed (compared in sample mode only)
 * plus structural checks on the file itself (latent shape = bucket / factor, members present or
 * absent as the key says, storage dtype). tool and version are recorded but not compared: a new
 * release reuses older files unless the format number changes.
 *
 * The comparison works on the JSON text (each key's value, whitespace outside strings removed,
 * against the value this module would write) without libjq, so it is thread-safe and can run on
 * worker threads; a file without sd_meta.json (e.g. written by kohya) is never reused.
 *
 * The content address (default file naming) is the SHA-256 of the canonical key text, so a file
 * name identifies its inputs and two runs with the same inputs share files.
 *
 * Pure functions except sd_latent_vae_hash (OpenMP over tensors) and the file helpers. */
#ifndef SD_DATA_LATENT_CACHE_H
#define SD_DATA_LATENT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "io/latent.h"
#include "nn/params.h"

#define SD_LATENT_CACHE_FORMAT 1

typedef struct sd_latent_key {
    char source_sha256[65];
    char vae_sha256[65];
    int bucket_w, bucket_h;
    int64_t resized_w, resized_h;
    double crop_ltrb[4];
    int filter;        /* -1: the reference's automatic choice; else an sd_resample_filter */
    int flip;          /* latents_flipped */
    int alpha_mask;    /* alpha_mask member */
    int mean;          /* 1: latent_mode mean, 0: sample */
    uint64_t seed;     /* sample mode */
    int half;          /* latents stored as float16 */
} sd_latent_key;

/* The sd_meta.json text of a file made from `k` (malloc'd, NUL-terminated): the key fields in a
 * fixed order plus tool, version and "scaled":false. */
int sd_latent_key_meta(const sd_latent_key *k, const char *tool, const char *version, char **out);

/* Content address: lower-case hex SHA-256 of the canonical key text. */
void sd_latent_key_hash(const sd_latent_key *k, char hex[65]);

/* "<dir>/<hh>/<hash>.npz" (hh = the first two hex digits). Returns the length or SD_ERANGE. */
int sd_latent_key_path(char *out, size_t cap, const char *dir, const sd_latent_key *k);

/* 1 when `lf` (a file read with sd_latent_read) was made from `k` and has latents of
 * [channels, bucket_h / factor, bucket_w / factor]; 0 when it is stale, with the first reason in
 * `why` ("source image changed", "bucket differs", "no sd_meta.json", ...). */
int sd_latent_cache_valid(const sd_latent_file *lf, const sd_latent_key *k, int channels, int factor,
                          char *why, size_t whycap);

/* Read `path` and check it: 1 valid, 0 absent or stale (reason in `why`; an unreadable or corrupt
 * file is stale, not an error). */
int sd_latent_cache_check_file(const char *path, const sd_latent_key *k, int channels, int factor,
                               char *why, size_t whycap);

/* The VAE hash: SHA-256 over the registry parameters whose key, with `prefix` + "." removed,
 * starts with "encoder." or "quant_conv." (what the latents depend on), in byte order of those
 * keys; each contributes "<key>\0<shape as [a,b,...]>\0" and the SHA-256 of its values as
 * loaded (f32 little-endian). Per-tensor digests run in parallel (OpenMP). Cost: the
 * SD VAE's encoder is 34 M weights (137 MB); hashing them took 1.2 s on one core of the (busy)
 * project host, once per run (split over the threads), next to 5-10 s of VAE work per 512x512 image:
 * no side file caches it (a cache keyed by path/size/mtime could itself go stale). Host (CPU)
 * registries only. */
int sd_latent_vae_hash(const sd_params *r, const char *prefix, char hex[65]);

/* Noise stream of an image for sd_vae_noise(seed, step, sample): step and sample come from the
 * source hash (its first 8 bytes), the low bit of sample says flipped, so the draw depends only
 * on the image, the seed and the flip, never on batch composition, order or threads. */
void sd_latent_noise_ids(const sd_latent_key *k, int flipped, uint32_t *step, uint32_t *sample);

#endif
