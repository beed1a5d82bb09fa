/* The latents of the training loop (see loop_internal.h): --cache_latents (records with an image
 * and no latent file encoded once with the VAE; --cache_latents_to_disk: kohya-named files beside
 * the images, reused when they match); without it such images are encoded at every step, the
 * reference's default (load, resize, centre or random_crop trim, color_aug, flip, VAE, a fresh
 * posterior sample); the buckets of records without one, and a batch's scaled latents (flip_aug)
 * with SDXL's size conditioning. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/rng.h"
#include "data/augment.h"
#include "data/latent_cache.h"
#include "io/image.h"
#include "io/latent.h"
#include "io/resample.h"
#include "train/loop_internal.h"

/* --cache_latents_to_disk: load `path` (already checked against `k`) into the sample's memory. */
static int load_disk_cache(sd_train_sample *s, const char *path, int64_t n)
{
    sd_latent_file lf;
    int rc = sd_latent_read(path, NULL, &lf);
    if (rc) return rc;
    if ((int64_t)lf.c * lf.h * lf.w != n || (s->flip_aug && !lf.latents_flipped)) {
        sd_latent_free(&lf);
        return sd_err(SD_EFORMAT, "%s: unexpected latent shape", path);
    }
    s->mem = malloc((size_t)n * sizeof(float));
    if (s->flip_aug) s->mem_flip = malloc((size_t)n * sizeof(float));
    if (!s->mem || (s->flip_aug && !s->mem_flip)) {
        sd_latent_free(&lf);
        return sd_err(SD_ENOMEM, "out of memory caching latents");
    }
    memcpy(s->mem, lf.latents, (size_t)n * sizeof(float));
    if (s->flip_aug) memcpy(s->mem_flip, lf.latents_flipped, (size_t)n * sizeof(float));
    if (s->alpha && lf.alpha_mask) {   /* present and at bucket size (the cache check) */
        s->mask_mem = lf.alpha_mask;
        s->mask_w = lf.mask_w;
        s->mask_h = lf.mask_h;
        lf.alpha_mask = NULL;
    }
    sd_latent_free(&lf);
    return SD_OK;
}

/* --cache_latents_to_disk: write the sample's latents to `path` (atomically, npz STORE form) with
 * the sd_meta.json of `k`, the file sd-encode-latents --kohya_names would write. */
static int write_disk_cache(const sd_train_sample *s, const char *path, const sd_latent_key *k, int64_t E)
{
    sd_latent_file lf;
    memset(&lf, 0, sizeof lf);
    lf.latents = s->mem;
    lf.latents_flipped = s->flip_aug ? s->mem_flip : NULL;
    lf.alpha_mask = s->alpha ? s->mask_mem : NULL;
    lf.mask_w = s->mask_w;
    lf.mask_h = s->mask_h;
    lf.c = (int)E;
    lf.h = s->plan.bucket_h / 8;
    lf.w = s->plan.bucket_w / 8;
    lf.original_size[0] = s->plan.image_w;
    lf.original_size[1] = s->plan.image_h;
    for (int i = 0; i < 4; i++) lf.crop_ltrb[i] = (int64_t)s->plan.crop_ltrb[i]; /* Python int(): truncation */
    sd_latent_write_opts wo = { .compress = SD_LATENT_STORE };
    int rc = sd_latent_key_meta(k, "sd-train", SD_VERSION, &lf.meta_json);
    if (rc >= 0) rc = sd_latent_write(path, &lf, &wo);
    free(lf.meta_json);
    return rc < 0 ? rc : SD_OK;
}

/* Grow the encoder's host buffers for an H×W image with E-channel latents. */
static int enc_bufs(run *R, int64_t H, int64_t W, int64_t E)
{
    size_t nx = (size_t)(3 * H * W), nl = (size_t)(E * (H / 8) * (W / 8)), nm = (size_t)(H * W);
    if (nx > R->enc_x_n) {
        float *p = realloc(R->enc_x, nx * sizeof *p);
        if (!p) return sd_err(SD_ENOMEM, "out of memory encoding latents");
        R->enc_x = p, R->enc_x_n = nx;
    }
    if (nl > R->enc_lat_n) {
        float *m = realloc(R->enc_mom, 2 * nl * sizeof *m);
        if (m) R->enc_mom = m;
        float *n = m ? realloc(R->enc_noise, nl * sizeof *n) : NULL;
        if (n) R->enc_noise = n;
        float *z = n ? realloc(R->enc_z, nl * sizeof *z) : NULL;
        if (z) R->enc_z = z;
        if (!z) return sd_err(SD_ENOMEM, "out of memory encoding latents");
        R->enc_lat_n = nl;
    }
    if (nm > R->enc_mask_n) {
        float *p = realloc(R->enc_mask, nm * sizeof *p);
        if (!p) return sd_err(SD_ENOMEM, "out of memory encoding latents");
        R->enc_mask = p, R->enc_mask_n = nm;
    }
    return SD_OK;
}

/* The VAE encoding of a bucket-sized image `out` (mirrored when flip; RGB of its first three
 * channels): [-1, 1] → encoder (on the training device, through device buffers there) → posterior sample with the noise of
 * (seed, step, sample, SD_RNG_LATENT) into z [E, H/8, W/8] (unscaled). */
static int encode_px(run *R, const sd_image *out, int flip, uint32_t step, uint32_t sample, float *z)
{
    int64_t E = R->cfg.vae.embed_dim, H = out->h, W = out->w, h = H / 8, w = W / 8, n = E * h * w;
    int rc = enc_bufs(R, H, W, E);
    if (!rc) rc = loop_ensure_scratch(R, 4 * sd_vae_scratch_bytes(&R->model.vae, 1, H, W, 0) + ((size_t)1 << 30));
    if (rc) return rc;
    float *x = R->enc_x;
    for (int64_t yy = 0; yy < H; yy++)
        for (int64_t xx = 0; xx < W; xx++) {
            int64_t sx = flip ? W - 1 - xx : xx;
            const uint8_t *px = out->px + ((size_t)yy * (size_t)out->w + (size_t)sx) * (size_t)out->c;
            for (int ch = 0; ch < 3; ch++)
                x[((size_t)ch * (size_t)H + (size_t)yy) * (size_t)W + (size_t)xx] =
                    ((float)px[out->c >= 3 ? ch : 0] / 255.0f - 0.5f) / 0.5f;
        }
    sd_tensor xt = sd_tensor_wrap(x, SD_F32, 4, (int64_t[]){ 1, 3, H, W });
    sd_tensor mt = sd_tensor_wrap(R->enc_mom, SD_F32, 4, (int64_t[]){ 1, 2 * E, h, w });
    sd_tensor zt = sd_tensor_wrap(z, SD_F32, 4, (int64_t[]){ 1, E, h, w });
    sd_tensor nt = sd_tensor_wrap(R->enc_noise, SD_F32, 4, (int64_t[]){ 1, E, h, w });
    if (R->dev == SD_DEV_CUDA) {   /* the image and the moments through GPU buffers from the scratch arena */
        /* --cache_latents runs before the weights move: the VAE goes first (the reference caches on the device) */
        rc = sd_params_move(&R->model.vae_params, SD_DEV_CUDA);
        size_t mark = sd_arena_mark(&R->ctx.scratch);
        sd_tensor xd, md;
        if (!rc) rc = sd_arena_tensor(&R->ctx.scratch, &xd, SD_F32, 4, (int64_t[]){ 1, 3, H, W });
        if (!rc) rc = sd_arena_tensor(&R->ctx.scratch, &md, SD_F32, 4, (int64_t[]){ 1, 2 * E, h, w });
        if (!rc) rc = sd_tensor_upload(&xd, x, sd_tensor_nbytes(&xd));
        if (!rc) rc = sd_vae_encode(&R->ctx, &R->model.vae, &md, &xd);
        if (!rc) rc = sd_tensor_download(&md, R->enc_mom, sd_tensor_nbytes(&md));
        sd_arena_reset(&R->ctx.scratch, mark);
    } else {
        rc = sd_vae_encode(&R->ctx, &R->model.vae, &mt, &xt);
    }
    if (!rc) rc = sd_vae_noise(R->enc_noise, (size_t)n, R->seed, step, sample);
    if (!rc) rc = sd_vae_latent(&R->ctx, &zt, &mt, &nt);
    return rc;
}

/* The VAE's checks: factor 8, latents with the UNet's channels. */
static int vae_check(run *R)
{
    sd_vae *v = &R->model.vae;
    if (v->factor != 8) return sd_err(SD_EUNSUPPORTED, "%s: the VAE downsamples by %lld; sd-train needs 8", R->c->model,
                                      (long long)v->factor);
    if (R->cfg.vae.embed_dim != R->cfg.unet.in_channels)
        return sd_err(SD_EFORMAT, "%s: VAE latents have %lld channels, the UNet takes %d", R->c->model,
                      (long long)R->cfg.vae.embed_dim, R->cfg.unet.in_channels);
    return SD_OK;
}

/* The bucket plan of a sample whose image is w×h: the record's, else selected from its bucket
 * settings; and its SDXL size conditioning. */
static int sample_plan(sd_train_sample *s, int w, int h)
{
    int rc = SD_OK;
    if (!s->has_plan) {
        sd_bucket_set set;
        rc = sd_bucket_set_init(&set, &s->bcfg);
        if (!rc) rc = sd_bucket_select(&set, w, h, &s->plan);
        sd_bucket_set_free(&set);
        if (rc) {
            sd_err_prefix(rc, "%s", s->image);
            return rc;
        }
        s->has_plan = 1;
        s->bucket_w = s->plan.bucket_w;
        s->bucket_h = s->plan.bucket_h;
    }
    s->has_size = 1;
    s->orig_w = s->plan.image_w;
    s->orig_h = s->plan.image_h;
    memcpy(s->crop_ltrb, s->plan.crop_ltrb, sizeof s->crop_ltrb);
    if (w != s->plan.image_w || h != s->plan.image_h)
        return sd_err(SD_EFORMAT, "%s: the image is %dx%d, its record says %dx%d", s->image, w, h, s->plan.image_w,
                      s->plan.image_h);
    return SD_OK;
}

/* Without --cache_latents: the plan of every sample whose image is encoded at every step (its
 * size read from the file's header). Bucketing disabled (enable_bucket false: one W×H bucket): as
 * the reference's uncached path, the image is not resized: it must be W×H, or larger with
 * random_crop (a random W×H window; original size = the bucket, crop 0); with face_crop_aug_range
 * and a face in the file name (data/augment.h) it is scaled and cropped around the face instead.
 * With bucketing the reference ignores face_crop_aug_range: one warning says so. */
int loop_plan_live(run *R, sd_train_data *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++) n += d->s[i].live;
    if (!n) return SD_OK;
    int rc = vae_check(R);
    if (rc) return rc;
    size_t nface = 0, nface_ignored = 0;
    for (size_t i = 0; i < d->n; i++) {
        sd_train_sample *s = &d->s[i];
        if (!s->live) continue;
        int w = 0, h = 0, fmt = 0;
        if ((rc = sd_image_probe(s->image, &w, &h, &fmt)) < 0) return rc;
        if ((rc = sample_plan(s, w, h))) return rc;
        int nobucket = s->has_bcfg && !s->bcfg.enable_bucket;
        s->face = 0;
        if (s->has_face_range) {
            int cx, cy, fw, fh, fr = sd_aug_face_info(s->image, &cx, &cy, &fw, &fh);
            if (fr < 0) return fr;
            if (fr == 1 && cx > 0 && !nobucket) nface_ignored++;
            if (fr == 1 && cx > 0 && nobucket) {
                if (fw <= 0 && fh <= 0)
                    return sd_err(SD_EFORMAT, "%s: face_crop_aug_range: the face size in the name is %dx%d", s->image,
                                  fw, fh);
                s->face = 1, s->face_cx = cx, s->face_cy = cy, s->face_w = fw, s->face_h = fh;
                /* the smallest scale decides whether the image can cover the resolution */
                sd_rng r = sd_rng_key(R->seed, 0xffffffffu, (uint32_t)i, SD_RNG_AUGMENT);
                sd_aug_stream st;
                sd_aug_draws dr = sd_aug_stream_draws(&st, &r);
                int64_t a, b, c2, d2;
                rc = sd_aug_face_crop(w, h, s->plan.bucket_w, s->plan.bucket_h, cx, cy, fw, fh, s->face_lo, s->face_hi,
                                      s->random_crop, &dr, &a, &b, &c2, &d2);
                if (rc) {
                    sd_err_prefix(rc, "%s", s->image);
                    return rc;
                }
                nface++;
            }
        }
        if (nobucket && s->face) {
            s->orig_w = s->plan.bucket_w, s->orig_h = s->plan.bucket_h;
            for (int k = 0; k < 4; k++) s->crop_ltrb[k] = 0;
        } else if (nobucket) {
            int bw = s->plan.bucket_w, bh = s->plan.bucket_h;
            if (w < bw || h < bh)
                return sd_err(SD_EFORMAT, "%s: image size is small (%dx%d, the resolution is %dx%d; bucketing is "
                              "disabled and images encoded at every step are not resized, as the reference's)",
                              s->image, w, h, bw, bh);
            if ((w > bw || h > bh) && !s->random_crop)
                return sd_err(SD_EFORMAT, "%s: image too large (%dx%d), but cropping and bucketing are disabled: "
                              "use random_crop or enable_bucket", s->image, w, h);
            s->plan.resized_w = w, s->plan.resized_h = h;
            s->plan.trim_x = (w - bw) / 2, s->plan.trim_y = (h - bh) / 2;
            s->orig_w = bw, s->orig_h = bh;
            for (int k = 0; k < 4; k++) s->crop_ltrb[k] = 0;
        }
        if (s->plan.bucket_w % 8 || s->plan.bucket_h % 8)
            return sd_err(SD_EINVAL, "%s: bucket %dx%d is not a multiple of the VAE's factor 8", s->image,
                          s->plan.bucket_w, s->plan.bucket_h);
    }
    if (!R->c->debug_dataset)
        sd_info("%zu image%s encoded at every step (no --cache_latents, the reference's default): each step loads, "
                "crops and encodes them with the VAE; --cache_latents is faster when no random augmentation "
                "(color_aug, random_crop) is used", n, n == 1 ? " is" : "s are");
    if (nface) sd_info("face_crop_aug_range: %zu image%s cropped around the face in the name", nface, nface == 1 ? "" : "s");
    if (nface_ignored)
        sd_warn("face_crop_aug_range has no effect on %zu image%s with bucketing enabled (the reference applies it "
                "only with enable_bucket false)", nface_ignored, nface_ignored == 1 ? "" : "s");
    return SD_OK;
}

/* One live sample into R->enc_z (unscaled) and, with an alpha mask, R->enc_mask (unflipped, at bucket
 * size): load, resize, trim (centre, or random_crop's offsets), color_aug, then flip and encode,
 * every draw from (seed, micro, b, SD_RNG_AUGMENT) (data/augment.h), the posterior noise from
 * (seed, micro, b, SD_RNG_LATENT). */
static int live_encode(run *R, const sd_train_sample *s, uint32_t micro, uint32_t b, int flip)
{
    sd_image im = { 0 }, out = { 0 };
    int rc = sd_image_load(s->image, s->alpha ? SD_ALPHA_KEEP : SD_ALPHA_DROP, &im, NULL);
    if (rc) return rc;
    if (im.w != s->plan.image_w || im.h != s->plan.image_h) {
        sd_image_free(&im);
        return sd_err(SD_EFORMAT, "%s: the image is %dx%d now, it was %dx%d", s->image, im.w, im.h, s->plan.image_w,
                      s->plan.image_h);
    }
    sd_rng r = sd_rng_key(R->seed, micro, b, SD_RNG_AUGMENT);
    sd_bucket_plan p = s->plan;
    if (s->face) {   /* crop_target: random scale, a window around the face (random_crop: wider jitter) */
        sd_aug_stream st;
        sd_aug_draws dr = sd_aug_stream_draws(&st, &r);
        rc = sd_aug_face_crop(im.w, im.h, p.bucket_w, p.bucket_h, s->face_cx, s->face_cy, s->face_w, s->face_h,
                              s->face_lo, s->face_hi, s->random_crop, &dr, &p.resized_w, &p.resized_h, &p.trim_x,
                              &p.trim_y);
        if (rc) {
            sd_image_free(&im);
            sd_err_prefix(rc, "%s", s->image);
            return rc;
        }
    } else if (s->random_crop) {
        p.trim_x = sd_aug_crop_offset(&r, SD_AUG_CROP_X, p.resized_w - p.bucket_w);
        p.trim_y = sd_aug_crop_offset(&r, SD_AUG_CROP_Y, p.resized_h - p.bucket_h);
    }
    rc = sd_bucket_apply(&im, &p, s->resize_filter - 1, 0, &out);
    sd_image_free(&im);
    if (rc) {
        sd_err_prefix(rc, "%s", s->image);
        return rc;
    }
    if (s->color_aug) {
        double val;
        sd_aug_color(out.px, (int64_t)out.w * out.h, out.c, &r, &val);
    }
    int64_t H = out.h, W = out.w;
    rc = enc_bufs(R, H, W, R->cfg.vae.embed_dim);
    if (!rc && s->alpha)
        for (int64_t q = 0; q < H * W; q++) R->enc_mask[q] = (float)out.px[(size_t)q * (size_t)out.c + 3] / 255.0f;
    if (!rc) rc = encode_px(R, &out, flip, micro, b, R->enc_z);
    sd_image_free(&out);
    return rc;
}

/* --cache_latents: encode every record without a latent file once, in memory (the reference's
 * cache_latents): image → bucket plan → resize (the record's resize_interpolation, else the reference's
 * automatic filter) and centre trim → [-1, 1] → VAE → posterior sample
 * (Philox stream (seed, 0, 2·i + flipped, SD_RNG_LATENT)).
 * --cache_latents_to_disk: the same per image, but first the kohya-named file beside the image
 * (<stem>_<WWWW>x<HHHH>_sd.npz) is reused when its sd_meta.json matches the inputs (the rules of
 * data/latent_cache.h, as sd-encode-latents --kohya_names --skip_existing); otherwise the image is
 * encoded with the noise stream of its cache key (sd_latent_noise_ids, as sd-encode-latents) and
 * the file written. The samples of `d` are numbered from sbase (the validation set has its own
 * posterior-sample streams). */
int loop_encode_all(run *R, sd_train_data *d, uint32_t sbase)
{
    size_t todo = 0;
    for (size_t i = 0; i < d->n; i++) todo += !d->s[i].latents && !d->s[i].mem && !d->s[i].live;
    if (!todo) return SD_OK;
    int rc = vae_check(R);
    if (rc) return rc;
    int64_t E = R->cfg.vae.embed_dim;
    int disk = R->c->cache_latents_to_disk;
    char vae_sha[65] = { 0 };
    if (disk) {
        int hrc = sd_latent_vae_hash(&R->model.vae_params, "first_stage_model", vae_sha);
        if (hrc < 0) return hrc;
    }
    sd_progress pb;
    sd_progress_begin(&pb, "caching latents", (int64_t)todo);
    long reused = 0, written = 0;
    for (size_t i = 0; i < d->n && !rc; i++) {
        sd_train_sample *s = &d->s[i];
        if (s->latents || s->mem || s->live) continue;
        sd_image im = { 0 }, out = { 0 };
        sd_latent_key key;
        memset(&key, 0, sizeof key);
        char path[8192];
        if (disk) {
            char *buf = NULL;
            size_t nb = 0;
            rc = sd_read_file(s->image, (size_t)1 << 31, &buf, &nb);
            if (rc < 0) break;
            uint8_t dg[32];
            sd_sha256(buf, nb, dg);
            sd_hex(dg, 32, key.source_sha256);
            rc = sd_image_decode(buf, nb, s->image, s->alpha ? SD_ALPHA_KEEP : SD_ALPHA_DROP, &im, NULL);
            free(buf);
        } else {
            rc = sd_image_load(s->image, s->alpha ? SD_ALPHA_KEEP : SD_ALPHA_DROP, &im, NULL);
        }
        if (rc) break;
        rc = sample_plan(s, im.w, im.h);
        if (rc) {
            sd_image_free(&im);
            break;
        }
        if (disk) {
            if (s->plan.bucket_w % 8 || s->plan.bucket_h % 8) {
                rc = sd_err(SD_EINVAL, "%s: bucket %dx%d is not a multiple of the VAE's factor 8", s->image,
                            s->plan.bucket_w, s->plan.bucket_h);
                sd_image_free(&im);
                break;
            }
            memcpy(key.vae_sha256, vae_sha, sizeof key.vae_sha256);
            key.bucket_w = s->plan.bucket_w;
            key.bucket_h = s->plan.bucket_h;
            key.resized_w = s->plan.resized_w;
            key.resized_h = s->plan.resized_h;
            memcpy(key.crop_ltrb, s->plan.crop_ltrb, sizeof key.crop_ltrb);
            key.filter = s->resize_filter - 1;
            key.flip = s->flip_aug != 0;
            key.alpha_mask = s->alpha != 0;
            key.mean = 0;
            key.seed = R->seed;
            key.half = 0;
            rc = sd_latent_kohya_name(path, sizeof path, s->image, s->plan.image_w, s->plan.image_h, 0);
            if (rc < 0) {
                sd_image_free(&im);
                break;
            }
            rc = SD_OK;
            char why[512] = "";
            if (sd_latent_cache_check_file(path, &key, (int)E, 8, why, sizeof why)) {
                sd_image_free(&im);
                rc = load_disk_cache(s, path, E * (s->plan.bucket_h / 8) * (s->plan.bucket_w / 8));
                if (rc) break;
                reused++;
                sd_progress_update(&pb, 1);
                continue;
            }
            sd_debug("%s: encoding (%s)", path, why[0] ? why : "no cache file");
        }
        rc = sd_bucket_apply(&im, &s->plan, s->resize_filter - 1, 0, &out);
        sd_image_free(&im);
        if (rc) {
            sd_err_prefix(rc, "%s", s->image);
            break;
        }
        int64_t H = out.h, W = out.w, n = E * (H / 8) * (W / 8);
        s->mem = malloc((size_t)n * sizeof(float));
        if (s->flip_aug) s->mem_flip = malloc((size_t)n * sizeof(float));
        if (s->alpha) s->mask_mem = malloc((size_t)(H * W) * sizeof(float));
        if (!s->mem || (s->flip_aug && !s->mem_flip) || (s->alpha && !s->mask_mem)) {
            sd_image_free(&out);
            rc = sd_err(SD_ENOMEM, "out of memory caching latents");
            break;
        }
        if (s->alpha) {   /* alpha/255 of the resized and trimmed RGBA image (unflipped), as sd-encode-latents */
            s->mask_w = (int)W;
            s->mask_h = (int)H;
            for (int64_t p = 0; p < H * W; p++) s->mask_mem[p] = (float)out.px[(size_t)p * (size_t)out.c + 3] / 255.0f;
        }
        for (int k = 0; k < (s->flip_aug ? 2 : 1) && !rc; k++) {
            uint32_t step = 0, sample = sbase + (uint32_t)(2 * i + (size_t)k);
            if (disk) sd_latent_noise_ids(&key, k, &step, &sample);
            rc = encode_px(R, &out, k, step, sample, k ? s->mem_flip : s->mem);
        }
        sd_image_free(&out);
        if (!rc && disk) {
            rc = write_disk_cache(s, path, &key, E);
            if (rc) sd_err_prefix(rc, "%s", path);
            else written++;
        }
        sd_progress_update(&pb, 1);
    }
    sd_progress_end(&pb);
    if (disk && !rc) sd_info("latent caches beside the images: %ld reused, %ld written", reused, written);
    return rc;
}

/* Read the latents of every sample once to learn its bucket when the record had none; a sample
 * asking for an alpha mask must have one in its file (checked before training starts). */
int loop_resolve_buckets(sd_train_data *d)
{
    for (size_t i = 0; i < d->n; i++) {
        sd_train_sample *s = &d->s[i];
        if (s->alpha && s->latents && !s->mem) {
            sd_latent_file lf;
            int rc = sd_latent_read(s->latents, NULL, &lf);
            if (rc) return rc;
            int has = lf.alpha_mask != NULL;
            sd_latent_free(&lf);
            if (!has)
                return sd_err(SD_EFORMAT, "%s: alpha_mask is requested but the file has no alpha_mask member (encode "
                              "with sd-encode-latents --alpha_mask)", s->latents);
        }
        if ((s->bucket_w > 0 && s->bucket_h > 0) || s->mem) continue;
        if (!s->latents) return sd_err(SD_EFORMAT, "%s: no bucket and no latents", s->image ? s->image : "record");
        sd_latent_file lf;
        int rc = sd_latent_read(s->latents, NULL, &lf);
        if (rc) return rc;
        s->bucket_w = lf.w * 8;
        s->bucket_h = lf.h * 8;
        sd_latent_free(&lf);
    }
    return SD_OK;
}

/* ---- conditioning-image masks (§1.11; the reference's ControlNetDataset, --masked_loss) -------- */

/* Before training: the original image size each sample's conditioning image is checked against
 * (with bucketing: the plan's image size for images, a latent file's original_size) and that
 * check on the conditioning image's header, so a wrong size fails before the first step; one
 * info line, and a warning when records asked for alpha masks too. */
int loop_cond_setup(run *R, sd_train_data *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++) {
        sd_train_sample *s = &d->s[i];
        if (!s->cond) continue;
        n++;
        int ow = 0, oh = 0, cw = 0, ch = 0, rc;
        if (s->latents && !s->mem) {
            sd_latent_file lf;
            if ((rc = sd_latent_read(s->latents, NULL, &lf))) return rc;
            ow = (int)lf.original_size[0], oh = (int)lf.original_size[1];
            sd_latent_free(&lf);
            if ((ow <= 0 || oh <= 0) && s->image && (rc = sd_image_probe(s->image, &ow, &oh, NULL)) < 0) return rc;
            if (s->cond_bucket && (ow <= 0 || oh <= 0))
                return sd_err(SD_EFORMAT, "%s: the latent file has no original_size and the record no image: the size "
                              "of its conditioning image %s cannot be checked", s->latents, s->cond);
        } else {
            ow = s->plan.image_w, oh = s->plan.image_h;
        }
        s->cond_ow = ow, s->cond_oh = oh;
        if ((rc = sd_image_probe(s->cond, &cw, &ch, NULL)) < 0) return rc;
        if (s->cond_bucket && (cw != ow || ch != oh))
            return sd_err(SD_EFORMAT, "%s: the conditioning image is %dx%d, its training image %s is %dx%d (the sizes "
                          "must match)", s->cond, cw, ch, s->image ? s->image : s->latents, ow, oh);
    }
    if (n && d == R->d && R->cnet)
        sd_info("controlnet: %zu image%s with a conditioning image (loaded at every step)", n, n == 1 ? "" : "s");
    else if (n && d == R->d)
        sd_info("masked loss: %zu image%s with a conditioning image (its red channel is the mask; loaded at every step)",
                n, n == 1 ? "" : "s");
    if (d->cond_alpha_off)
        sd_warn("alpha_mask has no effect on %zu record%s with a conditioning_image: the conditioning image is the mask "
                "(the reference's ControlNet datasets load no alpha channel)", d->cond_alpha_off,
                d->cond_alpha_off == 1 ? "" : "s");
    return SD_OK;
}

/* Sample s's conditioning-image mask at the batch's tw×th bucket into R->cond_mask (unflipped), as
 * ControlNetDataset.__getitem__ computes it at every step: the image loaded as RGB; with bucketing
 * its size must be the original image's and resize_image(cond, W0, H0, tw, th) takes it straight
 * to the bucket (the whole image: the reference's centre crop to the target size that follows
 * removes nothing); without bucketing it is resized only when it is not tw×th (resize_image with
 * width and height swapped, which changes only the automatic filter choice). The filter: the
 * record's conditioning_resize_interpolation (the dataset's resize_interpolation: the reference's
 * ControlNetDataset resizes with its own, not the subset's), else OpenCV INTER_AREA when neither
 * side grows, else PIL LANCZOS.
 * Then the red byte → sd_mask_cond_value. */
static int cond_load(const sd_train_sample *s, int tw, int th, sd_image *im, sd_image *out, const sd_image **src)
{
    memset(out, 0, sizeof *out);
    int rc = sd_image_load(s->cond, SD_ALPHA_DROP, im, NULL);
    if (rc) return rc;
    int aw = im->w, ah = im->h;   /* the sizes resize_image's automatic choice compares with tw, th */
    if (s->cond_bucket && (im->w != s->cond_ow || im->h != s->cond_oh)) {
        rc = sd_err(SD_EFORMAT, "%s: the conditioning image is %dx%d, its training image %s is %dx%d (the sizes must "
                    "match)", s->cond, im->w, im->h, s->image ? s->image : s->latents, s->cond_ow, s->cond_oh);
        sd_image_free(im);
        return rc;
    }
    if (!s->cond_bucket) aw = im->h, ah = im->w;
    *src = im;
    if (s->cond_bucket || im->w != tw || im->h != th) {
        int f = s->cond_filter - 1;
        if (f < 0) f = aw >= tw && ah >= th ? SD_RESAMPLE_AREA : SD_RESAMPLE_LANCZOS;
        rc = sd_resample(im, tw, th, f, out);
        if (rc) {
            sd_image_free(im);
            sd_err_prefix(rc, "%s", s->cond);
            return rc;
        }
        *src = out;
    }
    return SD_OK;
}

static int cond_plane(run *R, const sd_train_sample *s, int tw, int th)
{
    sd_image im = { 0 }, out = { 0 };
    const sd_image *src = NULL;
    int rc = cond_load(s, tw, th, &im, &out, &src);
    if (rc) return rc;
    size_t np = (size_t)tw * (size_t)th;
    if (np > R->cond_mask_n) {
        float *p = realloc(R->cond_mask, np * sizeof *p);
        if (!p) rc = sd_err(SD_ENOMEM, "out of memory loading conditioning images");
        else R->cond_mask = p, R->cond_mask_n = np;
    }
    for (size_t q = 0; !rc && q < np; q++) R->cond_mask[q] = sd_mask_cond_value(src->px[q * (size_t)src->c]);
    sd_image_free(&out);
    sd_image_free(&im);
    return rc;
}

int loop_cond_rgb(const sd_train_sample *s, int tw, int th, int flip, float *dst)
{
    sd_image im = { 0 }, out = { 0 };
    const sd_image *src = NULL;
    int rc = cond_load(s, tw, th, &im, &out, &src);
    if (rc) return rc;
    /* ToTensor (byte / 255) then Normalize([0.5], [0.5]): (x - 0.5) / 0.5 in float32 */
    size_t np = (size_t)tw * (size_t)th;
    int c = src->c;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++) {
                int sx = flip ? tw - 1 - x : x;
                uint8_t b = src->px[((size_t)y * (size_t)tw + (size_t)sx) * (size_t)c + (size_t)(c >= 3 ? ch : 0)];
                dst[(size_t)ch * np + (size_t)y * (size_t)tw + (size_t)x] = ((float)b / 255.0f - 0.5f) / 0.5f;
            }
    sd_image_free(&out);
    sd_image_free(&im);
    return SD_OK;
}

/* SDXL size conditioning of one sample (§3.3, kohya's dataset __getitem__): original size (H, W),
 * crop (top, left) with a flipped sample's left = target_w − right, target (H, W) = the bucket,
 * each truncated to an int as Python's int() does. Unknown sizes: the bucket, no crop. */
static void size_cond(int *o, int known, int orig_w, int orig_h, const double ltrb[4], int flipped, int tw, int th)
{
    if (!known) {
        o[0] = th, o[1] = tw, o[2] = 0, o[3] = 0, o[4] = th, o[5] = tw;
        return;
    }
    double left = flipped ? (double)tw - ltrb[2] : ltrb[0];
    o[0] = orig_h;
    o[1] = orig_w;
    o[2] = (int)ltrb[1];
    o[3] = (int)left;
    o[4] = th;
    o[5] = tw;
}

/* Sample b's slot of the batch mask (§1.11): its plane (or none: ones, as the reference's
 * collate fills masks of samples without one) mirrored when the latents are the flipped ones,
 * area-resized to h×w and repeated over the C channels; R->mask_on once any sample has one. */
static void batch_mask(run *R, int b, int64_t per, int h, int w, const float *plane, int ph, int pw, int flipped)
{
    float *m = R->mask + (size_t)b * (size_t)per;
    int64_t hw = (int64_t)h * w;
    if (!plane || ph <= 0 || pw <= 0) {
        for (int64_t i = 0; i < per; i++) m[i] = 1.0f;
        return;
    }
    sd_mask_area_resize(plane, ph, pw, flipped, m, h, w);
    for (int64_t i = hw; i < per; i++) m[i] = m[i % hw];
    R->mask_on = 1;
}

/* Sample b's slot of the batch mask: its conditioning image's (which replaces any alpha mask, as
 * apply_masked_loss prefers conditioning_images), else `plane` (its alpha mask or none). */
static int sample_mask(run *R, const sd_train_sample *s, int b, int64_t per, int h, int w, const float *plane, int ph,
                       int pw, int flipped)
{
    if (!R->use_masks) return SD_OK;
    if (s->cond) {
        int rc = cond_plane(R, s, w * 8, h * 8);
        if (rc) return rc;
        plane = R->cond_mask, ph = h * 8, pw = w * 8;
    }
    batch_mask(R, b, per, h, w, plane, ph, pw, flipped);
    return SD_OK;
}

/* Scaled latents of one batch of d into R->x0 (SDXL: the size conditioning into R->sizes); flips
 * drawn from (seed, micro, b, SD_RNG_AUGMENT) for flip_aug samples unless noflip (validation). */
int loop_load_latents(run *R, const sd_train_data *d, const int64_t *idx, int B, int64_t micro, int h, int w,
                        int noflip)
{
    int64_t C = R->cfg.unet.in_channels;
    int64_t per = C * h * w;
    R->mask_on = 0;
    for (int b = 0; b < B; b++) {
        const sd_train_sample *s = &d->s[idx[b]];
        float sf = (float)R->scale_factor;
        if (s->live) {   /* encoded now; validation samples are cached once instead (loop.c) */
            int flip = 0;
            if (s->flip_aug && !noflip) {
                sd_rng r = sd_rng_key(R->seed, (uint32_t)micro, (uint32_t)b, SD_RNG_AUGMENT);
                flip = sd_rng_uniform_at(&r, SD_AUG_FLIP) < 0.5f;
            }
            if (s->bucket_w != w * 8 || s->bucket_h != h * 8)
                return sd_err(SD_EINVAL, "%s: bucket %dx%d, the batch's is %dx%d", s->image, s->bucket_w, s->bucket_h,
                              w * 8, h * 8);
            if (R->flipped) R->flipped[b] = flip;
            int rc = live_encode(R, s, (uint32_t)micro, (uint32_t)b, flip);
            if (rc) return rc;
            float *dst = R->x0 + (size_t)b * per;
            for (int64_t i = 0; i < per; i++) dst[i] = R->enc_z[i] * sf;
            if (R->sizes) size_cond(R->sizes + 6 * b, s->has_size, s->orig_w, s->orig_h, s->crop_ltrb, flip, w * 8, h * 8);
            if ((rc = sample_mask(R, s, b, per, h, w, s->alpha ? R->enc_mask : NULL, h * 8, w * 8, flip))) return rc;
            continue;
        }
        if (s->mem) {
            const float *src = s->mem;
            if (s->flip_aug && !noflip) {
                sd_rng r = sd_rng_key(R->seed, (uint32_t)micro, (uint32_t)b, SD_RNG_AUGMENT);
                if (sd_rng_uniform_at(&r, SD_AUG_FLIP) < 0.5f) src = s->mem_flip;
            }
            float *dst = R->x0 + (size_t)b * per;
            for (int64_t i = 0; i < per; i++) dst[i] = src[i] * sf;
            if (R->flipped) R->flipped[b] = src == s->mem_flip;
            if (R->sizes) size_cond(R->sizes + 6 * b, s->has_size, s->orig_w, s->orig_h, s->crop_ltrb, src == s->mem_flip,
                                    w * 8, h * 8);
            int rc = sample_mask(R, s, b, per, h, w, s->mask_mem, s->mask_h, s->mask_w, src == s->mem_flip);
            if (rc) return rc;
            continue;
        }
        sd_latent_file lf;
        int rc = sd_latent_read(s->latents, NULL, &lf);
        if (rc) return rc;
        if (lf.c != C || lf.h != h || lf.w != w) {
            sd_latent_free(&lf);
            return sd_err(SD_EFORMAT, "%s: latents are [%d,%d,%d], the bucket needs [%lld,%d,%d]", s->latents, lf.c,
                          lf.h, lf.w, (long long)C, h, w);
        }
        if (s->alpha && !lf.alpha_mask) {
            sd_latent_free(&lf);
            return sd_err(SD_EFORMAT, "%s: alpha_mask is requested but the file has no alpha_mask member (encode with "
                          "sd-encode-latents --alpha_mask)", s->latents);
        }
        const float *src = lf.latents;
        if (s->flip_aug && !noflip) {
            sd_rng r = sd_rng_key(R->seed, (uint32_t)micro, (uint32_t)b, SD_RNG_AUGMENT);
            if (sd_rng_uniform_at(&r, 0) < 0.5f) {
                if (!lf.latents_flipped) {
                    sd_latent_free(&lf);
                    return sd_err(SD_EFORMAT, "%s: flip_aug needs latents_flipped (encode with flip)", s->latents);
                }
                src = lf.latents_flipped;
            }
        }
        float *dst = R->x0 + (size_t)b * per;
        for (int64_t i = 0; i < per; i++) dst[i] = src[i] * sf;
        if (R->flipped) R->flipped[b] = src == lf.latents_flipped;
        if (R->sizes) {
            double ltrb[4] = { (double)lf.crop_ltrb[0], (double)lf.crop_ltrb[1], (double)lf.crop_ltrb[2],
                               (double)lf.crop_ltrb[3] };
            int known = lf.original_size[0] > 0 && lf.original_size[1] > 0;
            size_cond(R->sizes + 6 * b, known, (int)lf.original_size[0], (int)lf.original_size[1], ltrb,
                      src == lf.latents_flipped, w * 8, h * 8);
        }
        /* the file's alpha_mask is used whenever present (the reference's load_latents_from_disk) */
        rc = sample_mask(R, s, b, per, h, w, lf.alpha_mask, lf.mask_h, lf.mask_w, src == lf.latents_flipped);
        sd_latent_free(&lf);
        if (rc) return rc;
    }
    return SD_OK;
}
