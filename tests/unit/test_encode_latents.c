/* Latent cache rules (lib/data/latent_cache.h), record plans (lib/data/bucket_record.h), and the
 * helper modes tests/cli/encode_latents.sh and bench/encode_latents.sh use:
 *   test_encode_latents --make-vae OUT.safetensors CONFIG.json SEED [sd15]
 *        a VAE with random weights under first_stage_model.* (tiny f=8 config, or the SD1.5 shape)
 *        and the matching model config;
 *   test_encode_latents --make-image OUT.png W H SEED [rgba]
 *   test_encode_latents --check-mean VAE CONFIG LATENT.npz IMAGE BW BH RW RH [flip]
 *        encode the image through the library (decode, sd_bucket_apply with the reference's
 *        filter choice, [-1,1], sd_vae_encode, mean) and compare with the file bit for bit;
 *   test_encode_latents --check-file LATENT.npz  (exit 0 when it reads back and validates);
 *   test_encode_latents --write-pixels IMAGE BW BH RW RH OUT.npy
 *        the planned, normalised pixels [1,3,BH,BW] as .npy (input of `sd-model run vae-encode`);
 *   test_encode_latents --compare-moments LATENT.npz MOMENTS.npy
 *        the file's latents equal the first C channels (the mean) of sd-model's moments. */
#include <jv.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/hash.h"
#include "base/rng.h"
#include "data/bucket.h"
#include "data/bucket_record.h"
#include "data/latent_cache.h"
#include "io/image.h"
#include "io/jsonl.h"
#include "io/resample.h"
#include "io/latent.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "models/model_config.h"
#include "models/vae.h"
#include "test.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static sd_latent_key base_key(void)
{
    sd_latent_key k;
    memset(&k, 0, sizeof k);
    memset(k.source_sha256, 'a', 64);
    memset(k.vae_sha256, 'b', 64);
    k.bucket_w = 64;
    k.bucket_h = 48;
    k.resized_w = 64;
    k.resized_h = 51;
    k.crop_ltrb[0] = 0;
    k.crop_ltrb[1] = 1.5;
    k.crop_ltrb[2] = 64;
    k.crop_ltrb[3] = 46.5;
    k.filter = -1;
    k.seed = 7;
    return k;
}

static sd_latent_file make_file(const sd_latent_key *k, float *buf, float *mask)
{
    sd_latent_file lf;
    memset(&lf, 0, sizeof lf);
    lf.latents = buf;
    lf.c = 4;
    lf.h = k->bucket_h / 8;
    lf.w = k->bucket_w / 8;
    lf.latents_flipped = k->flip ? buf : NULL;
    lf.alpha_mask = k->alpha_mask ? mask : NULL;
    lf.mask_h = k->bucket_h;
    lf.mask_w = k->bucket_w;
    lf.half = k->half;
    return lf;
}

/* ---- unit tests ------------------------------------------------------------------------------ */

static void test_meta_roundtrip(void)
{
    sd_latent_key k = base_key();
    char *meta = NULL;
    T_CHECK(sd_latent_key_meta(&k, "sd-encode-latents", "0.1.0", &meta) == SD_OK);
    T_CHECK(meta && sd_latent_meta_validate(meta, strlen(meta)) == SD_OK);
    T_CHECK(meta && strstr(meta, "\"crop_ltrb\":[0,1.5,64,46.5]"));
    T_CHECK(meta && strstr(meta, "\"seed\":7"));
    jv v;
    T_CHECK(meta && sd_json_parse(meta, strlen(meta), &v) == SD_OK);
    if (meta && jv_is_valid(v)) {
        jv f = jv_object_get(jv_copy(v), jv_string("format"));
        T_EQ_INT(jv_number_value(f), SD_LATENT_CACHE_FORMAT);
        jv_free(f);
        jv_free(v);
    }
    float buf[4 * 6 * 8] = {0}, mask[64 * 48] = {0};
    sd_latent_file lf = make_file(&k, buf, mask);
    lf.meta_json = meta;
    char why[256] = "";
    T_CHECKF(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 1, "%s", why);
    /* mean mode does not write or compare the seed */
    sd_latent_key km = k;
    km.mean = 1;
    char *mm = NULL;
    T_CHECK(sd_latent_key_meta(&km, "t", "v", &mm) == SD_OK && !strstr(mm, "seed"));
    lf.meta_json = mm;
    km.seed = 99;
    T_CHECK(sd_latent_cache_valid(&lf, &km, 4, 8, why, sizeof why) == 1);
    free(mm);
    /* whitespace and key order do not matter */
    const char *pretty = "{ \"scaled\": false, \"seed\" : 7, \"latent_mode\": \"sample\", \"dtype\": \"float32\",\n"
                         "  \"alpha_mask\": false, \"flip\": false, \"interpolation\": \"auto\",\n"
                         "  \"crop_ltrb\": [0, 1.5, 64, 46.5], \"resized\": [64, 51], \"bucket\": [ 64 , 48 ],\n"
                         "  \"source_sha256\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\n"
                         "  \"vae_sha256\": \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\",\n"
                         "  \"extra\": {\"a\": [1, \"]}\"]}, \"format\": 1 }";
    lf.meta_json = (char *)pretty;
    T_CHECKF(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 1, "%s", why);
    lf.meta_json = NULL;
    T_CHECK(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 0 && strstr(why, "sd_meta.json"));
    free(meta);
}

/* every field of the key invalidates */
static void test_meta_stale(void)
{
    sd_latent_key k = base_key();
    char *meta = NULL;
    T_CHECK(sd_latent_key_meta(&k, "sd-encode-latents", "0.1.0", &meta) == SD_OK);
    float buf[4 * 6 * 8] = {0}, mask[64 * 48] = {0};
    char why[256];
    for (int f = 0; f < 12; f++) {
        sd_latent_key m = k;
        const char *expect = NULL;
        switch (f) {
        case 0: m.source_sha256[3] = 'c'; expect = "source image"; break;
        case 1: m.vae_sha256[60] = 'c'; expect = "VAE"; break;
        case 2: m.bucket_w = 128; expect = "bucket"; break;
        case 3: m.resized_h = 52; expect = "resize"; break;
        case 4: m.crop_ltrb[3] = 46.25; expect = "crop"; break;
        case 5: m.filter = SD_RESAMPLE_LANCZOS; expect = "interpolation"; break;
        case 6: m.flip = 1; expect = "flip"; break;
        case 7: m.alpha_mask = 1; expect = "alpha"; break;
        case 8: m.half = 1; expect = "dtype"; break;
        case 9: m.mean = 1; expect = "latent mode"; break;
        case 10: m.seed = 8; expect = "seed"; break;
        case 11: break;
        }
        sd_latent_file lf = make_file(&m, buf, mask);
        lf.meta_json = meta;
        int v = sd_latent_cache_valid(&lf, &m, 4, 8, why, sizeof why);
        if (expect) {
            T_CHECKF(v == 0 && strstr(why, expect), "field %d: %d '%s'", f, v, why);
        } else {
            T_CHECK(v == 1);
        }
    }
    /* the file's own structure: shape, members, dtype */
    sd_latent_file lf = make_file(&k, buf, mask);
    lf.meta_json = meta;
    lf.h = 5;
    T_CHECK(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 0 && strstr(why, "latents are"));
    lf = make_file(&k, buf, mask);
    lf.meta_json = meta;
    T_CHECK(sd_latent_cache_valid(&lf, &k, 8, 8, why, sizeof why) == 0);
    lf.latents_flipped = buf;
    T_CHECK(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 0 && strstr(why, "latents_flipped"));
    lf = make_file(&k, buf, mask);
    lf.meta_json = meta;
    lf.alpha_mask = mask;
    T_CHECK(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 0 && strstr(why, "alpha_mask"));
    lf = make_file(&k, buf, mask);
    lf.meta_json = "{\"format\":2}";
    T_CHECK(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 0 && strstr(why, "format"));
    lf.meta_json = "{\"format\":1,\"vae_sha256\":";
    T_CHECK(sd_latent_cache_valid(&lf, &k, 4, 8, why, sizeof why) == 0);
    free(meta);
}

static void test_key_hash_path(void)
{
    sd_latent_key k = base_key(), m = k;
    char h1[65], h2[65], p[512];
    sd_latent_key_hash(&k, h1);
    sd_latent_key_hash(&m, h2);
    T_EQ_STR(h1, h2);
    m.seed = 8;
    sd_latent_key_hash(&m, h2);
    T_CHECK(strcmp(h1, h2) != 0);
    /* seed ignored in mean mode */
    k.mean = m.mean = 1;
    sd_latent_key_hash(&k, h1);
    sd_latent_key_hash(&m, h2);
    T_EQ_STR(h1, h2);
    T_CHECK(sd_latent_key_path(p, sizeof p, "out//", &k) > 0);
    char want[512];
    snprintf(want, sizeof want, "out/%.2s/%s.npz", h1, h1);
    T_EQ_STR(p, want);
    T_CHECK(sd_latent_key_path(p, 20, "out", &k) == SD_ERANGE);
    uint32_t s0, a0, s1, a1;
    sd_latent_noise_ids(&k, 0, &s0, &a0);
    sd_latent_noise_ids(&k, 1, &s1, &a1);
    T_EQ_INT(s0, 0xaaaaaaaau);
    T_EQ_INT(a0, 0xaaaaaaaau);
    T_EQ_INT(a1, 0xaaaaaaabu);
    T_EQ_INT(s1, s0);
}

static void tiny_cfg(sd_vae_config *c)
{
    memset(c, 0, sizeof *c);
    c->in_channels = c->out_ch = 3;
    c->ch = 32;
    c->n_mult = 4;
    for (int i = 0; i < 4; i++) c->ch_mult[i] = 1;
    c->num_res_blocks = 1;
    c->z_channels = c->embed_dim = 4;
    c->double_z = 1;
    c->resolution = 64;
    c->scale_factor = 0.18215f;
}

static void sd15_cfg(sd_vae_config *c)
{
    tiny_cfg(c);
    c->ch = 128;
    c->ch_mult[0] = 1;
    c->ch_mult[1] = 2;
    c->ch_mult[2] = c->ch_mult[3] = 4;
    c->num_res_blocks = 2;
    c->resolution = 256;
}

/* Random weights: normal · 1/sqrt(fan in) for matrices, norms 1/0, biases small. */
static void init_weights(sd_params *r, uint64_t seed)
{
    for (size_t i = 0; i < sd_params_count(r); i++) {
        sd_param *p = sd_params_at(r, i);
        float *d = p->value.data;
        int64_t n = sd_tensor_numel(&p->value);
        const char *k = p->key;
        size_t kl = strlen(k);
        int is_norm = strstr(k, "norm") != NULL;
        int is_bias = kl > 5 && !strcmp(k + kl - 5, ".bias");
        if (is_norm) {
            for (int64_t j = 0; j < n; j++) d[j] = is_bias ? 0.0f : 1.0f;
            continue;
        }
        sd_rng g = sd_rng_key(seed, (uint32_t)i, 0, SD_RNG_INIT);
        sd_rng_fill_normal(&g, 0, d, (size_t)n);
        double fan = 1;
        for (int a = 1; a < p->value.ndim; a++) fan *= (double)p->value.shape[a];
        float s = is_bias ? 0.02f : (float)(1.0 / sqrt(fan));
        for (int64_t j = 0; j < n; j++) d[j] *= s;
    }
}

static int make_vae(const char *out, const char *cfg_path, uint64_t seed, int sd15)
{
    sd_vae_config c;
    if (sd15)
        sd15_cfg(&c);
    else
        tiny_cfg(&c);
    sd_params r;
    sd_vae v;
    sd_params_init(&r);
    int rc = sd_vae_init(&v, &r, "first_stage_model", &c);
    if (!rc) rc = sd_params_alloc(&r, SD_DEV_CPU);
    if (rc) return rc;
    init_weights(&r, seed);
    sd_safetensors_writer *w = NULL;
    rc = sd_safetensors_writer_new(&w);
    for (size_t i = 0; !rc && i < sd_params_count(&r); i++) {
        sd_param *p = sd_params_at(&r, i);
        rc = sd_safetensors_writer_add(w, p->key, SD_ST_F32, p->value.ndim, p->value.shape, p->value.data);
    }
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    sd_safetensors_writer_free(w);
    sd_vae_free(&v);
    sd_params_free(&r);
    if (rc) return rc;
    char text[512];
    snprintf(text, sizeof text,
             "{\"vae\":{\"ch\":%d,\"ch_mult\":[%d,%d,%d,%d],\"num_res_blocks\":%d,\"z_channels\":4,\"embed_dim\":4}}\n",
             c.ch, c.ch_mult[0], c.ch_mult[1], c.ch_mult[2], c.ch_mult[3], c.num_res_blocks);
    FILE *f = fopen(cfg_path, "w");
    if (!f) return sd_err(SD_EIO, "%s: cannot write", cfg_path);
    fputs(text, f);
    fclose(f);
    return 0;
}

static int make_image(const char *out, int w, int h, uint64_t seed, int rgba)
{
    sd_image im;
    int c = rgba ? 4 : 3;
    if (sd_image_alloc(&im, w, h, c)) return -1;
    sd_rng g = sd_rng_key(seed, 0, 0, SD_RNG_USER);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) {
                int base = ch == 3 ? 255 * x / (w > 1 ? w - 1 : 1) : (x * (ch + 1) * 7 + y * (3 - ch) * 5) & 255;
                int noise = (int)(sd_rng_u32_at(&g, (uint64_t)((y * w + x) * c + ch)) & 31) - 16;
                int v = ch == 3 ? base : base + noise;
                im.px[(y * w + x) * c + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    int rc = sd_image_write_png(out, &im);
    sd_image_free(&im);
    return rc;
}

static int check_mean(char **argv, int flip)
{
    const char *vae_path = argv[0], *cfg_path = argv[1], *npz = argv[2], *image = argv[3];
    int bw = atoi(argv[4]), bh = atoi(argv[5]), rw = atoi(argv[6]), rh = atoi(argv[7]);
    sd_model_config mc;
    sd_safetensors *st = NULL;
    int rc = sd_model_config_load(cfg_path, &mc);
    if (!rc) rc = sd_safetensors_open(vae_path, &st);
    if (rc) return fprintf(stderr, "%s\n", sd_errmsg()), 1;
    sd_params r;
    sd_vae v;
    sd_params_init(&r);
    rc = sd_vae_init(&v, &r, "first_stage_model", &mc.vae);
    if (!rc) rc = sd_params_alloc(&r, SD_DEV_CPU);
    if (!rc) rc = sd_vae_load(&v, &r, st, SD_LAYOUT_NONE);
    sd_image im = {0}, out = {0};
    if (!rc) rc = sd_image_load(image, SD_ALPHA_DROP, &im, NULL);
    sd_bucket_plan p;
    memset(&p, 0, sizeof p);
    p.image_w = im.w;
    p.image_h = im.h;
    p.bucket_w = bw;
    p.bucket_h = bh;
    p.resized_w = rw;
    p.resized_h = rh;
    p.trim_x = (rw - bw) / 2;
    p.trim_y = (rh - bh) / 2;
    if (!rc) rc = sd_bucket_apply(&im, &p, -1, 0, &out);
    if (rc) return fprintf(stderr, "%s\n", sd_errmsg()), 1;
    sd_tensor x, m;
    rc = sd_tensor_alloc(&x, SD_F32, SD_DIMS(1, 3, bh, bw));
    int64_t f = v.factor, E = mc.vae.embed_dim;
    if (!rc) rc = sd_tensor_alloc(&m, SD_F32, SD_DIMS(1, 2 * E, bh / f, bw / f));
    float *xd = x.data;
    for (int y = 0; y < bh; y++)
        for (int xx = 0; xx < bw; xx++)
            for (int c = 0; c < 3; c++) {
                int sx = flip ? bw - 1 - xx : xx;
                xd[((size_t)c * bh + y) * bw + xx] = ((float)out.px[((size_t)y * bw + sx) * 3 + c] / 255.0f - 0.5f) / 0.5f;
            }
    sd_ctx ctx;
    if (!rc) rc = sd_ctx_init(&ctx, SD_DEV_CPU, 1, 0);
    if (!rc) rc = sd_vae_encode(&ctx, &v, &m, &x);
    if (rc) return fprintf(stderr, "%s\n", sd_errmsg()), 1;
    sd_latent_file lf;
    rc = sd_latent_read(npz, NULL, &lf);
    if (rc) return fprintf(stderr, "%s\n", sd_errmsg()), 1;
    size_t n = (size_t)(E * (bh / f) * (bw / f));
    const float *got = flip ? lf.latents_flipped : lf.latents;
    int bad = !got || lf.c != E || lf.h != bh / f || lf.w != bw / f;
    double maxd = 0;
    for (size_t i = 0; !bad && i < n; i++) maxd = fmax(maxd, fabs((double)got[i] - ((float *)m.data)[i]));
    bad = bad || maxd != 0;
    printf("mean latents vs library: max |diff| %g over %zu values\n", maxd, n);
    sd_latent_free(&lf);
    sd_tensor_free(&x);
    sd_tensor_free(&m);
    sd_ctx_free(&ctx);
    sd_image_free(&im);
    sd_image_free(&out);
    sd_vae_free(&v);
    sd_params_free(&r);
    sd_safetensors_close(st);
    return bad;
}

static int write_pixels(char **argv)
{
    const char *image = argv[0], *out = argv[5];
    int bw = atoi(argv[1]), bh = atoi(argv[2]), rw = atoi(argv[3]), rh = atoi(argv[4]);
    sd_image im = {0}, o = {0};
    int rc = sd_image_load(image, SD_ALPHA_DROP, &im, NULL);
    sd_bucket_plan p;
    memset(&p, 0, sizeof p);
    p.image_w = im.w;
    p.image_h = im.h;
    p.bucket_w = bw;
    p.bucket_h = bh;
    p.resized_w = rw;
    p.resized_h = rh;
    p.trim_x = (rw - bw) / 2;
    p.trim_y = (rh - bh) / 2;
    if (!rc) rc = sd_bucket_apply(&im, &p, -1, 0, &o);
    if (rc) return fprintf(stderr, "%s\n", sd_errmsg()), 1;
    float *x = malloc((size_t)3 * bw * bh * sizeof(float));
    for (int y = 0; y < bh; y++)
        for (int xx = 0; xx < bw; xx++)
            for (int c = 0; c < 3; c++)
                x[((size_t)c * bh + y) * bw + xx] = ((float)o.px[((size_t)y * bw + xx) * 3 + c] / 255.0f - 0.5f) / 0.5f;
    FILE *f = fopen(out, "wb");
    rc = f ? sd_npy_write(f, SD_NPY_F4, 4, (const int64_t[]){1, 3, bh, bw}, x) : -1;
    if (f) fclose(f);
    free(x);
    sd_image_free(&im);
    sd_image_free(&o);
    return rc ? 1 : 0;
}

static int compare_moments(const char *npz, const char *npy)
{
    sd_latent_file lf;
    char *buf = NULL;
    size_t n = 0;
    sd_npy_array m;
    if (sd_latent_read(npz, NULL, &lf) || sd_read_file(npy, 0, &buf, &n) || sd_npy_load(buf, n, &m))
        return printf("%s\n", sd_errmsg()), 1;
    int bad = m.dtype != SD_NPY_F4 || m.ndim != 4 || m.shape[0] != 1 || m.shape[1] != 2 * lf.c || m.shape[2] != lf.h ||
              m.shape[3] != lf.w;
    size_t cnt = (size_t)lf.c * lf.h * lf.w;
    double maxd = 0;
    for (size_t i = 0; !bad && i < cnt; i++) maxd = fmax(maxd, fabs((double)lf.latents[i] - ((float *)m.data)[i]));
    printf("latents vs sd-model run vae-encode mean: max |diff| %g over %zu values\n", maxd, cnt);
    bad = bad || maxd != 0;
    free(m.data);
    free(buf);
    sd_latent_free(&lf);
    return bad;
}

/* Two latent files of the same image (e.g. CPU and GPU): same shape, max |diff| <= tol · max |a|. */
static int compare_latents(const char *fa, const char *fb, double tol)
{
    sd_latent_file a, b;
    if (sd_latent_read(fa, NULL, &a)) return printf("%s\n", sd_errmsg()), 1;
    if (sd_latent_read(fb, NULL, &b)) {
        sd_latent_free(&a);
        return printf("%s\n", sd_errmsg()), 1;
    }
    int bad = a.c != b.c || a.h != b.h || a.w != b.w;
    size_t cnt = (size_t)a.c * a.h * a.w;
    double maxd = 0, maxa = 0;
    for (size_t i = 0; !bad && i < cnt; i++) {
        maxd = fmax(maxd, fabs((double)a.latents[i] - b.latents[i]));
        maxa = fmax(maxa, fabs((double)a.latents[i]));
    }
    printf("max |diff| %g of max |latent| %g over %zu values\n", maxd, maxa, cnt);
    bad = bad || !(maxd <= tol * maxa);
    sd_latent_free(&a);
    sd_latent_free(&b);
    return bad;
}

static void test_vae_hash(void)
{
    sd_vae_config c;
    tiny_cfg(&c);
    sd_params r;
    sd_vae v;
    sd_params_init(&r);
    int rc = sd_vae_init(&v, &r, "first_stage_model", &c);
    if (!rc) rc = sd_params_alloc(&r, SD_DEV_CPU);
    T_CHECK(rc == 0);
    if (rc) return;
    init_weights(&r, 1);
    char h1[65], h2[65], h3[65];
    T_CHECK(sd_latent_vae_hash(&r, "first_stage_model", h1) == SD_OK);
    T_EQ_INT(strlen(h1), 64);
    /* decoder weights do not count; encoder and quant_conv weights do */
    sd_param *p = sd_params_find(&r, "first_stage_model.decoder.conv_in.weight");
    T_CHECK(p != NULL);
    if (p) ((float *)p->value.data)[0] += 1;
    T_CHECK(sd_latent_vae_hash(&r, "first_stage_model", h2) == SD_OK);
    T_EQ_STR(h1, h2);
    p = sd_params_find(&r, "first_stage_model.quant_conv.bias");
    T_CHECK(p != NULL);
    if (p) ((float *)p->value.data)[3] += 1e-6f;
    T_CHECK(sd_latent_vae_hash(&r, "first_stage_model", h3) == SD_OK);
    T_CHECK(strcmp(h1, h3) != 0);
    T_CHECK(sd_latent_vae_hash(&r, "nothing", h3) == SD_EINVAL);
    sd_vae_free(&v);
    sd_params_free(&r);
}

static void test_record_plan(void)
{
    jv rec;
    const char *line = "{\"image\":\"a.png\",\"image_size\":[1000,700],\"bucket\":[576,448],\"resized\":[640,448],"
                       "\"crop_ltrb\":[0,22,576,425.2],\"ar_error\":-0.1}";
    T_CHECK(sd_jsonl_parse_line(line, strlen(line), &rec) == SD_OK);
    sd_bucket_plan p;
    T_EQ_INT(sd_bucket_record_plan(rec, &p), 1);
    T_EQ_INT(p.trim_x, 32);
    T_EQ_INT(p.trim_y, 0);
    T_CHECK(p.crop_ltrb[3] == 425.2);
    /* the same as planning it */
    sd_bucket_cfg c = {.res_w = 512, .res_h = 512, .enable_bucket = 1, .min_reso = 256, .max_reso = 1024, .steps = 64};
    sd_bucket_set s;
    sd_bucket_plan q;
    T_CHECK(sd_bucket_set_init(&s, &c) == SD_OK);
    T_CHECK(sd_bucket_select(&s, 1000, 700, &q) == SD_OK);
    T_CHECK(q.bucket_w == p.bucket_w && q.bucket_h == p.bucket_h && q.resized_w == p.resized_w &&
            q.trim_x == p.trim_x && q.trim_y == p.trim_y);
    sd_bucket_set_free(&s);
    jv_free(rec);
    const char *l2 = "{\"image\":\"a.png\",\"bucket\":[576,448]}";
    T_CHECK(sd_jsonl_parse_line(l2, strlen(l2), &rec) == SD_OK);
    T_CHECK(sd_bucket_record_plan(rec, &p) == SD_EFORMAT);
    jv_free(rec);
    const char *l3 = "{\"image\":\"a.png\",\"resolution\":[640,512],\"bucket_no_upscale\":true,\"bucket_reso_steps\":32}";
    T_CHECK(sd_jsonl_parse_line(l3, strlen(l3), &rec) == SD_OK);
    T_EQ_INT(sd_bucket_record_plan(rec, &p), 0);
    sd_bucket_cfg def = {.enable_bucket = 1, .min_reso = 256, .max_reso = 1024, .steps = 64}, out;
    T_EQ_INT(sd_bucket_record_cfg(rec, &def, 0, &out), 1);
    T_CHECK(out.res_w == 640 && out.res_h == 512 && out.no_upscale == 1 && out.steps == 32);
    jv_free(rec);
    const char *l4 = "{\"image\":\"a.png\",\"min_bucket_reso\":\"x\"}";
    T_CHECK(sd_jsonl_parse_line(l4, strlen(l4), &rec) == SD_OK);
    T_CHECK(sd_bucket_record_cfg(rec, &def, 1, &out) == SD_EFORMAT);
    jv_free(rec);
    const char *l5 = "{\"image\":\"a.png\"}";
    T_CHECK(sd_jsonl_parse_line(l5, strlen(l5), &rec) == SD_OK);
    T_EQ_INT(sd_bucket_record_cfg(rec, &def, 0, &out), 0);
    char *img = NULL;
    T_EQ_INT(sd_bucket_record_image(rec, &img), SD_OK);
    T_EQ_STR(img, "a.png");
    free(img);
    int filter = -7;
    T_EQ_INT(sd_bucket_record_filter(rec, &filter), 0);
    T_EQ_INT(filter, -7);
    jv_free(rec);
    const char *l6 = "{\"image\":\"\",\"resize_interpolation\":\"area\"}";
    T_CHECK(sd_jsonl_parse_line(l6, strlen(l6), &rec) == SD_OK);
    img = NULL;
    T_EQ_INT(sd_bucket_record_image(rec, &img), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'image': empty path");
    T_CHECK(img == NULL);
    T_EQ_INT(sd_bucket_record_filter(rec, &filter), 1);
    T_EQ_INT(filter, SD_RESAMPLE_AREA);
    jv_free(rec);
    const char *l7 = "{\"resize_interpolation\":\"sinc\"}";
    T_CHECK(sd_jsonl_parse_line(l7, strlen(l7), &rec) == SD_OK);
    T_EQ_INT(sd_bucket_record_image(rec, &img), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'image': missing");
    T_CHECK(sd_bucket_record_filter(rec, &filter) < 0);
    T_CHECK(strncmp(sd_errmsg(), "key 'resize_interpolation': ", 28) == 0);
    jv_free(rec);
}

/* a file written with the key's meta reads back valid; a truncated one is stale, not an error */
static void test_check_file(void)
{
    sd_latent_key k = base_key();
    float buf[4 * 6 * 8];
    for (int i = 0; i < 4 * 6 * 8; i++) buf[i] = (float)i / 7;
    sd_latent_file lf = make_file(&k, buf, NULL);
    T_CHECK(sd_latent_key_meta(&k, "t", "v", &lf.meta_json) == SD_OK);
    const char *path = t_path("cache_check.npz");
    T_CHECK(sd_latent_write(path, &lf, NULL) == SD_OK);
    char why[256] = "";
    T_CHECKF(sd_latent_cache_check_file(path, &k, 4, 8, why, sizeof why) == 1, "%s", why);
    T_CHECK(sd_latent_cache_check_file(t_path("absent.npz"), &k, 4, 8, why, sizeof why) == 0 && !strcmp(why, "absent"));
    FILE *f = fopen(path, "r+b");
    if (f) {
        T_CHECK(ftruncate(fileno(f), 100) == 0);
        fclose(f);
    }
    T_CHECK(sd_latent_cache_check_file(path, &k, 4, 8, why, sizeof why) == 0 && strstr(why, "unreadable"));
    free(lf.meta_json);
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "--make-vae")) {
        if (make_vae(argv[2], argv[3], strtoull(argv[4], NULL, 10), argc > 5 && !strcmp(argv[5], "sd15"))) {
            fprintf(stderr, "%s\n", sd_errmsg());
            return 1;
        }
        return 0;
    }
    if (argc >= 6 && !strcmp(argv[1], "--make-image")) {
        if (make_image(argv[2], atoi(argv[3]), atoi(argv[4]), strtoull(argv[5], NULL, 10), argc > 6)) {
            fprintf(stderr, "%s\n", sd_errmsg());
            return 1;
        }
        return 0;
    }
    if (argc >= 10 && !strcmp(argv[1], "--check-mean")) return check_mean(argv + 2, argc > 10);
    if (argc == 8 && !strcmp(argv[1], "--write-pixels")) return write_pixels(argv + 2);
    if (argc == 4 && !strcmp(argv[1], "--compare-moments")) return compare_moments(argv[2], argv[3]);
    if (argc == 5 && !strcmp(argv[1], "--compare-latents")) return compare_latents(argv[2], argv[3], atof(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "--check-file")) {
        sd_latent_file lf;
        if (sd_latent_read(argv[2], NULL, &lf)) {
            printf("%s\n", sd_errmsg());
            return 1;
        }
        sd_latent_free(&lf);
        return 0;
    }
    T_RUN(test_meta_roundtrip);
    T_RUN(test_meta_stale);
    T_RUN(test_key_hash_path);
    T_RUN(test_vae_hash);
    T_RUN(test_record_plan);
    T_RUN(test_check_file);
    T_DONE();
}
