/* Tiny test material for sd-train's tests and the demo (not installed; built by
 * examples/build_tiny.sh against libsd):
 *
 *   tiny_model model OUT.safetensors CONFIG [SEED [VAE_OUT]]
 *                                                   a single-file checkpoint (UNet, text
 *                                                   encoder(s), VAE) with the shapes of the
 *                                                   --model_config CONFIG and random weights
 *                                                   (Philox, deterministic), stored as F16; SD1/SD2
 *                                                   configs get the SD1 layout, SDXL ones the sgm
 *                                                   layout (conditioner.embedders.0.transformer. +
 *                                                   .1.model. in OpenCLIP names); with VAE_OUT also
 *                                                   the VAE alone (bare ldm names)
 *   tiny_model images DIR N [W H]                    N small PNG images (coloured shapes) with
 *                                                   .caption sidecars, for the demo pipeline
 *   tiny_model latents DIR N C H W [NAN_I]           N latent files DIR/lat<i>.npz ([C,H,W] normal
 *                                                   noise, with latents_flipped) and their records
 *                                                   on stdout (latents, caption); file NAN_I
 *                                                   gets huge values (a non-finite loss)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "io/image.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "models/clip.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "models/vae.h"

#define TE2 "conditioner.embedders.1.model"

static int die(const char *what)
{
    fprintf(stderr, "tiny_model: %s: %s\n", what, sd_errmsg());
    return 1;
}

static int make_model(const char *out, const char *cfgpath, uint64_t seed, const char *vae_out)
{
    sd_model_config cfg;
    if (sd_model_config_load(cfgpath, &cfg)) return die(cfgpath);
    sd_params r;
    sd_params_init(&r);
    sd_unet u;
    sd_clip te, te2;
    sd_vae v;
    int xl = cfg.family == SD_FAMILY_SDXL;
    if (sd_unet_init(&u, &r, "model.diffusion_model", &cfg.unet)) return die("unet");
    if (sd_clip_init(&te, &r, xl ? "conditioner.embedders.0.transformer" : "cond_stage_model.transformer", &cfg.clip,
                     cfg.family))
        return die("clip");
    if (xl && sd_clip_init(&te2, &r, TE2, &cfg.clip2, cfg.family)) return die("clip2");
    if (sd_vae_init(&v, &r, "first_stage_model", &cfg.vae)) return die("vae");
    sd_params_set_trainable(&r, "", 0);
    if (sd_params_alloc(&r, SD_DEV_CPU)) return die("alloc");
    sd_safetensors_writer *w, *wv;
    if (sd_safetensors_writer_new(&w) || sd_safetensors_writer_new(&wv)) return die("writer");
    for (size_t i = 0; i < sd_params_count(&r); i++) {
        sd_param *p = sd_params_at(&r, i);
        float *d = p->value.data;
        int64_t n = sd_tensor_numel(&p->value);
        const char *k = p->key;
        size_t L = strlen(k);
        int is_bias = L > 5 && !strcmp(k + L - 5, ".bias");
        int is_norm = strstr(k, "norm") || strstr(k, "ln_") || strstr(k, "layer_norm");
        if (is_norm && !is_bias) {
            for (int64_t j = 0; j < n; j++) d[j] = 1.0f;
        } else if (is_bias || p->value.ndim < 2) {
            sd_rng g = sd_rng_key(seed, 1, (uint32_t)i, SD_RNG_INIT);
            sd_rng_fill_normal(&g, 0, d, (size_t)n);
            for (int64_t j = 0; j < n; j++) d[j] *= 0.02f;
        } else {
            int64_t fan = n / p->value.shape[0];
            float s = 1.0f / sqrtf((float)fan);
            if (strstr(k, "embedding")) s = 0.3f;
            sd_rng g = sd_rng_key(seed, 0, (uint32_t)i, SD_RNG_INIT);
            sd_rng_fill_normal(&g, 0, d, (size_t)n);
            for (int64_t j = 0; j < n; j++) d[j] *= s;
        }
    }
    float **keep = calloc(sd_params_count(&r) + 1, sizeof *keep);   /* joined/transposed copies until written */
    size_t nkeep = 0;
    if (!keep) return die("out of memory");
    /* second pass: write (SDXL's TE2 under its OpenCLIP names, q/k/v joined, text_projection
       transposed, as sd_model's writer does) */
    for (size_t i = 0; i < sd_params_count(&r); i++) {
        sd_param *p = sd_params_at(&r, i);
        const float *d = p->value.data;
        const char *k = p->key;
        if (xl && !strncmp(k, TE2 ".", sizeof TE2)) {
            char name[512];
            int how;
            if (sd_clip_openclip_name(k + sizeof TE2, TE2 ".", name, sizeof name, &how)) return die(k);
            int64_t sh[2] = { p->value.shape[0], p->value.ndim > 1 ? p->value.shape[1] : 1 };
            int64_t n = sd_tensor_numel(&p->value);
            if (how == SD_CLIP_OC_QKV) {
                if (!strstr(k, "q_proj")) continue;   /* written with q */
                float *cat = malloc((size_t)n * 3 * sizeof(float));
                if (!cat) return die("out of memory");
                for (int j = 0; j < 3; j++) {
                    char kk[512];
                    snprintf(kk, sizeof kk, "%s", k);
                    memcpy(strstr(kk, "q_proj"), j == 0 ? "q_proj" : j == 1 ? "k_proj" : "v_proj", 6);
                    const sd_param *o = sd_params_find(&r, kk);
                    if (!o) return die(kk);
                    memcpy(cat + j * n, o->value.data, (size_t)n * sizeof(float));
                }
                sh[0] *= 3;
                keep[nkeep++] = cat;
                if (sd_safetensors_writer_add_f32(w, name, SD_ST_F16, p->value.ndim, sh, cat)) return die(name);
                continue;
            }
            if (how == SD_CLIP_OC_TRANSPOSE) {
                float *t = malloc((size_t)n * sizeof(float));
                if (!t) return die("out of memory");
                for (int64_t a = 0; a < sh[0]; a++)
                    for (int64_t b = 0; b < sh[1]; b++) t[b * sh[0] + a] = d[a * sh[1] + b];
                keep[nkeep++] = t;
                if (sd_safetensors_writer_add_f32(w, name, SD_ST_F16, 2, (const int64_t[]){ sh[1], sh[0] }, t))
                    return die(name);
                continue;
            }
            if (sd_safetensors_writer_add_f32(w, name, SD_ST_F16, p->value.ndim, p->value.shape, d)) return die(name);
            continue;
        }
        if (sd_safetensors_writer_add_f32(w, k, SD_ST_F16, p->value.ndim, p->value.shape, d)) return die(k);
        if (!strncmp(k, "first_stage_model.", 18) &&
            sd_safetensors_writer_add_f32(wv, k + 18, SD_ST_F16, p->value.ndim, p->value.shape, d))
            return die(k);
    }
    if (sd_safetensors_writer_write(w, out)) return die(out);
    if (vae_out && sd_safetensors_writer_write(wv, vae_out)) return die(vae_out);
    for (size_t i = 0; i < nkeep; i++) free(keep[i]);
    free(keep);
    sd_safetensors_writer_free(w);
    sd_safetensors_writer_free(wv);
    sd_unet_free(&u);
    sd_clip_free(&te);
    if (xl) sd_clip_free(&te2);
    sd_vae_free(&v);
    sd_params_free(&r);
    return 0;
}

static const char *const words[] = { "red", "green", "blue", "square", "circle", "stripe", "dot", "sky" };

static int make_images(const char *dir, int n, int W, int H)
{
    for (int i = 0; i < n; i++) {
        sd_image im = { W, H, 3, malloc((size_t)W * H * 3) };
        if (!im.px) return 1;
        sd_rng g = sd_rng_key(7, 0, (uint32_t)i, SD_RNG_USER);
        int r0 = (int)(sd_rng_u32_at(&g, 0) % 256), g0 = (int)(sd_rng_u32_at(&g, 1) % 256),
            b0 = (int)(sd_rng_u32_at(&g, 2) % 256);
        int cx = W / 4 + (int)(sd_rng_u32_at(&g, 3) % (unsigned)(W / 2)), cy = H / 4 + (int)(sd_rng_u32_at(&g, 4) % (unsigned)(H / 2));
        int rad = W / 6 + (int)(sd_rng_u32_at(&g, 5) % (unsigned)(W / 6));
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                uint8_t *p = im.px + ((size_t)y * W + x) * 3;
                int in = (x - cx) * (x - cx) + (y - cy) * (y - cy) < rad * rad;
                p[0] = (uint8_t)(in ? 255 - r0 : r0);
                p[1] = (uint8_t)(in ? 255 - g0 : (g0 + y) & 255);
                p[2] = (uint8_t)(in ? 255 - b0 : (b0 + x) & 255);
            }
        char path[4096];
        snprintf(path, sizeof path, "%s/img%03d.png", dir, i);
        if (sd_image_write_png(path, &im)) return die(path);
        free(im.px);
        snprintf(path, sizeof path, "%s/img%03d.caption", dir, i);
        FILE *f = fopen(path, "w");
        if (!f) return 1;
        fprintf(f, "sks, %s %s, %s\n", words[i % 3], words[3 + i % 3], words[5 + i % 3]);
        fclose(f);
    }
    return 0;
}

static int make_latents(const char *dir, int n, int C, int H, int W, int nan_index)
{
    for (int i = 0; i < n; i++) {
        sd_latent_file lf;
        memset(&lf, 0, sizeof lf);
        lf.c = C;
        lf.h = H;
        lf.w = W;
        size_t per = (size_t)C * H * W;
        lf.latents = malloc(per * sizeof(float));
        lf.latents_flipped = malloc(per * sizeof(float));
        if (!lf.latents || !lf.latents_flipped) return 1;
        sd_rng g = sd_rng_key(11, 0, (uint32_t)i, SD_RNG_USER);
        sd_rng_fill_normal(&g, 0, lf.latents, per);
        if (i == nan_index)
            for (size_t k = 0; k < per; k++) lf.latents[k] = 3e38f;   /* finite, but the loss overflows */
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    lf.latents_flipped[((size_t)c * H + y) * W + x] = lf.latents[((size_t)c * H + y) * W + (W - 1 - x)];
        lf.original_size[0] = W * 8;
        lf.original_size[1] = H * 8;
        lf.crop_ltrb[2] = W * 8;
        lf.crop_ltrb[3] = H * 8;
        char path[4096];
        snprintf(path, sizeof path, "%s/lat%03d.npz", dir, i);
        if (sd_latent_write(path, &lf, NULL)) return die(path);
        free(lf.latents);
        free(lf.latents_flipped);
        printf("{\"latents\":\"%s\",\"caption\":\"sks, %s %s, %s\"}\n", path, words[i % 3], words[3 + i % 3],
               words[5 + i % 3]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "model"))
        return make_model(argv[2], argv[3], argc > 4 ? strtoull(argv[4], NULL, 10) : 1, argc > 5 ? argv[5] : NULL);
    if (argc >= 4 && !strcmp(argv[1], "images"))
        return make_images(argv[2], atoi(argv[3]), argc > 5 ? atoi(argv[4]) : 64, argc > 5 ? atoi(argv[5]) : 64);
    if (argc >= 7 && !strcmp(argv[1], "latents"))
        return make_latents(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), argc > 7 ? atoi(argv[7]) : -1);
    fprintf(stderr, "usage: tiny_model model OUT CONFIG [SEED [VAE_OUT]] | images DIR N [W H] | latents DIR N C H W\n");
    return 2;
}
