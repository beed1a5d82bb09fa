/* SD VAE against a PyTorch transcription of ldm's AutoencoderKL (tests/golden/gen/
 * make_vae_golden.py, torch 1.13): moments, sample (given noise, logvar clamp), mean, decode,
 * with max|Δ| <= 1e-4 · max|ref|; single-file, VAE-only and Diffusers layouts (key names from a
 * transcription of kohya's conversion), tiled vs untiled, loader errors. */
#include "base/error.h"
#include "models/vae.h"
#include "test.h"

static sd_ctx g_ctx;
static double g_worst;

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/golden/vae/%s", name);
}

static int golden(const sd_safetensors *st, const char *name, sd_tensor *t)
{
    const sd_st_tensor *g = sd_safetensors_find(st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden file has no '%s'", name);
    int rc = sd_tensor_alloc(t, SD_F32, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(st, g, SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

static double rel_diff(const float *a, const float *r, int64_t n)
{
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs(r[i]));
        e = fmax(e, fabs((double)a[i] - r[i]));
    }
    return m > 0 ? e / m : e;
}

/* mean|a - r| / mean|r| */
static double mean_rel(const float *a, const float *r, int64_t n)
{
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        e += fabs((double)a[i] - r[i]);
        m += fabs(r[i]);
    }
    return m > 0 ? e / m : e;
}

static int close_to(const char *what, const float *a, const sd_tensor *ref)
{
    double d = rel_diff(a, ref->data, sd_tensor_numel(ref));
    if (d > g_worst) g_worst = d;
    if (!(d <= 1e-4)) {
        printf("#   %s: max|diff|/max|ref| %.3g\n", what, d);
        return 0;
    }
    return 1;
}

static sd_vae_config cfg_a(void)
{
    sd_vae_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = c.out_ch = 3;
    c.ch = 32;
    c.n_mult = 2;
    c.ch_mult[0] = 1;
    c.ch_mult[1] = 2;
    c.num_res_blocks = 1;
    c.z_channels = c.embed_dim = 4;
    c.double_z = 1;
    c.resolution = 32;
    c.scale_factor = 0.18215f;
    return c;
}

static sd_vae_config cfg_b(void)
{
    sd_vae_config c = cfg_a();
    c.ch_mult[1] = 1;
    c.num_res_blocks = 2;
    c.n_attn = 1;
    c.attn_resolutions[0] = 16;
    return c;
}

typedef struct model {
    sd_params r;
    sd_vae v;
} model;

static int model_open(model *M, sd_vae_config c, const char *prefix, const sd_safetensors *st, sd_layout layout)
{
    sd_params_init(&M->r);
    int rc = sd_vae_init(&M->v, &M->r, prefix, &c);
    if (!rc) rc = sd_params_alloc(&M->r, SD_DEV_CPU);
    if (!rc && st) rc = sd_vae_load(&M->v, &M->r, st, layout);
    return rc;
}

static void model_close(model *M)
{
    sd_vae_free(&M->v);
    sd_params_free(&M->r);
}

/* encode/sample/mean/decode of model M against golden file st */
static void check_model(model *M, const sd_safetensors *st)
{
    sd_tensor x, gm, noise, gs, z, gd, m, s, d, mean;
    int rc = golden(st, "golden.x", &x);
    if (!rc) rc = golden(st, "golden.moments", &gm);
    if (!rc) rc = golden(st, "golden.noise", &noise);
    if (!rc) rc = golden(st, "golden.sample", &gs);
    if (!rc) rc = golden(st, "golden.z", &z);
    if (!rc) rc = golden(st, "golden.dec", &gd);
    if (!rc) rc = sd_tensor_alloc(&m, SD_F32, 4, gm.shape);
    if (!rc) rc = sd_tensor_alloc(&s, SD_F32, 4, gs.shape);
    if (!rc) rc = sd_tensor_alloc(&mean, SD_F32, 4, gs.shape);
    if (!rc) rc = sd_tensor_alloc(&d, SD_F32, 4, gd.shape);
    if (!rc) rc = sd_vae_encode(&g_ctx, &M->v, &m, &x);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    /* the generator overwrote two logvar pixels of sample 1 to exercise the clamp */
    float *mp = m.data, *gp = gm.data;
    int64_t hw = gm.shape[2] * gm.shape[3];
    for (int c = 4; c < 8; c++) {
        T_CHECK(gp[(8 + c) * hw + 0] == 25.0f && gp[(8 + c) * hw + 1] == -40.0f);
        mp[(8 + c) * hw + 0] = 25.0f;
        mp[(8 + c) * hw + 1] = -40.0f;
    }
    T_CHECK(close_to("moments", m.data, &gm));
    rc = sd_vae_latent(&g_ctx, &s, &gm, &noise);
    if (!rc) rc = sd_vae_latent(&g_ctx, &mean, &gm, NULL);
    if (!rc) rc = sd_vae_decode(&g_ctx, &M->v, &d, &z);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_CHECK(close_to("sample", s.data, &gs));
        for (int64_t b = 0; b < 2; b++)
            T_CHECK(!memcmp((float *)mean.data + b * 4 * hw, gp + b * 8 * hw, (size_t)(4 * hw) * sizeof(float)));
        T_CHECK(close_to("decode", d.data, &gd));
    }
    sd_tensor_free(&x); sd_tensor_free(&gm); sd_tensor_free(&noise); sd_tensor_free(&gs); sd_tensor_free(&z);
    sd_tensor_free(&gd); sd_tensor_free(&m); sd_tensor_free(&s); sd_tensor_free(&d); sd_tensor_free(&mean);
}

static void test_ldm(void)
{
    for (int which = 0; which < 2; which++) {
        sd_safetensors *st = NULL;
        int rc = sd_safetensors_open(data_path(which ? "golden_vae_b.safetensors" : "golden_vae_a.safetensors"), &st);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        if (rc) return;
        model M;
        rc = model_open(&M, which ? cfg_b() : cfg_a(), "first_stage_model", st, SD_LAYOUT_NONE);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        if (!rc) {
            T_EQ_INT(M.v.factor, 2);
            if (which) T_EQ_INT(M.v.dec[1].nattn, 3);
            check_model(&M, st);
        }
        model_close(&M);
        sd_safetensors_close(st);
    }
}

/* Write file `out` in memory: the golden-a weights renamed by `rename` (NULL: strip the prefix),
 * attention 1×1 weights squeezed to 2-D when `squeeze`; `drop` is left out, `extra` added. */
typedef struct mem_file {
    void *buf;
    size_t n;
    sd_safetensors *st;
} mem_file;

static int make_file(const sd_safetensors *src, int column, int squeeze, const char *drop, const char *extra, mem_file *mf)
{
    memset(mf, 0, sizeof *mf);
    FILE *kf = fopen(data_path("vae_diffusers_keys_a.txt"), "r");
    if (!kf) return sd_err(SD_EIO, "cannot open vae_diffusers_keys_a.txt");
    sd_safetensors_writer *w = NULL;
    int rc = sd_safetensors_writer_new(&w);
    char names[3][256];
    static float one = 1.0f;
    while (!rc && fscanf(kf, "%255s %255s %255s", names[0], names[1], names[2]) == 3) {
        char full[300];
        snprintf(full, sizeof full, "first_stage_model.%s", names[0]);
        const sd_st_tensor *t = sd_safetensors_find(src, full);
        if (!t) { rc = sd_err(SD_ENOTFOUND, "golden has no %s", full); break; }
        const char *name = names[column];
        if (drop && !strcmp(name, drop)) continue;
        int ndim = t->ndim;
        if (squeeze && ndim == 4 && strstr(name, "attentions")) ndim = 2;
        const uint8_t *base = (const uint8_t *)t->data;
        rc = sd_safetensors_writer_add(w, name, t->dtype, ndim, t->shape, base);
    }
    fclose(kf);
    if (!rc && extra) rc = sd_safetensors_writer_add(w, extra, SD_ST_F32, 1, (const int64_t[]){ 1 }, &one);
    if (!rc) rc = sd_safetensors_writer_write_mem(w, &mf->buf, &mf->n);
    sd_safetensors_writer_free(w);
    if (!rc) rc = sd_safetensors_open_mem(mf->buf, mf->n, "vae/diffusion_pytorch_model.safetensors", &mf->st);
    return rc;
}

static void mem_close(mem_file *mf)
{
    sd_safetensors_close(mf->st);
    free(mf->buf);
}

static void test_layouts(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_vae_a.safetensors"), &st);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    /* column 1: diffusers >= 0.17 names, 2: older names, 0: bare ldm names (with a stray loss.* key) */
    for (int col = 0; col < 3; col++) {
        mem_file mf;
        rc = make_file(st, col, col > 0, NULL, col == 0 ? "loss.logvar" : NULL, &mf);
        model M;
        if (!rc) rc = model_open(&M, cfg_a(), col == 1 ? "" : "vae", mf.st, SD_LAYOUT_NONE);
        T_CHECKF(rc == SD_OK, "column %d: %s", col, sd_errmsg());
        if (!rc) check_model(&M, st);
        model_close(&M);
        mem_close(&mf);
    }
    /* Diffusers file with a missing tensor / an unknown tensor */
    mem_file mf;
    model M;
    rc = make_file(st, 1, 1, "decoder.up_blocks.0.upsamplers.0.conv.bias", NULL, &mf);
    if (!rc) {
        rc = model_open(&M, cfg_a(), "first_stage_model", mf.st, SD_LAYOUT_NONE);
        T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "missing") && strstr(sd_errmsg(), "decoder.up.1.upsample.conv.bias"));
        model_close(&M);
        mem_close(&mf);
    }
    rc = make_file(st, 1, 1, NULL, "decoder.up_blocks.5.resnets.0.conv1.bias", &mf);
    if (!rc) {
        rc = model_open(&M, cfg_a(), "first_stage_model", mf.st, SD_LAYOUT_NONE);
        T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "unexpected") && strstr(sd_errmsg(), "up_blocks.5"));
        model_close(&M);
        mem_close(&mf);
    }
    /* config does not fit the file */
    sd_vae_config c = cfg_a();
    c.ch_mult[1] = 1;
    rc = model_open(&M, c, "first_stage_model", st, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "shape"));
    model_close(&M);
    c = cfg_b();
    rc = model_open(&M, c, "first_stage_model", st, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_EFORMAT);
    model_close(&M);
    /* a full checkpoint: other models' tensors and first_stage_model.loss.* are ignored, any other
     * unknown first_stage_model.* tensor is an error */
    static const char *extra[2] = { "first_stage_model.loss.logvar", "first_stage_model.encoder.extra.bias" };
    for (int e = 0; e < 2; e++) {
        sd_safetensors_writer *w = NULL;
        void *buf = NULL;
        size_t n = 0;
        sd_safetensors *fs = NULL;
        static float one = 1.0f;
        rc = sd_safetensors_writer_new(&w);
        for (size_t i = 0; !rc && i < sd_safetensors_count(st); i++) {
            const sd_st_tensor *t = sd_safetensors_at(st, i);
            rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        }
        if (!rc) rc = sd_safetensors_writer_add(w, "model.diffusion_model.out.2.bias", SD_ST_F32, 1, (const int64_t[]){ 1 }, &one);
        if (!rc) rc = sd_safetensors_writer_add(w, extra[e], SD_ST_F32, 1, (const int64_t[]){ 1 }, &one);
        if (!rc) rc = sd_safetensors_writer_write_mem(w, &buf, &n);
        if (!rc) rc = sd_safetensors_open_mem(buf, n, "model.safetensors", &fs);
        if (!rc) {
            rc = model_open(&M, cfg_a(), "first_stage_model", fs, SD_LAYOUT_NONE);
            if (e == 0) T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
            else T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "encoder.extra.bias"));
            model_close(&M);
        }
        sd_safetensors_close(fs);
        free(buf);
        sd_safetensors_writer_free(w);
    }
    sd_safetensors_close(st);
}

static void test_tiled(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_vae_a.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model M;
    rc = model_open(&M, cfg_a(), "first_stage_model", st, SD_LAYOUT_LDM);
    sd_tensor x, z, m0, m1, d0, d1;
    if (!rc) rc = golden(st, "golden.x", &x);
    if (!rc) rc = golden(st, "golden.z", &z);
    if (!rc) rc = sd_tensor_alloc(&m0, SD_F32, 4, (int64_t[]){ 2, 8, 16, 16 });
    if (!rc) rc = sd_tensor_alloc(&m1, SD_F32, 4, (int64_t[]){ 2, 8, 16, 16 });
    if (!rc) rc = sd_tensor_alloc(&d0, SD_F32, 4, (int64_t[]){ 2, 3, 32, 32 });
    if (!rc) rc = sd_tensor_alloc(&d1, SD_F32, 4, (int64_t[]){ 2, 3, 32, 32 });
    if (!rc) rc = sd_vae_encode(&g_ctx, &M.v, &m0, &x);
    if (!rc) rc = sd_vae_decode(&g_ctx, &M.v, &d0, &z);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    /* a tile covering everything is the untiled computation */
    rc = sd_vae_decode_tiled(&g_ctx, &M.v, &d1, &z, 16, 4);
    T_CHECK(rc == SD_OK && !memcmp(d0.data, d1.data, sd_tensor_nbytes(&d0)));
    rc = sd_vae_encode_tiled(&g_ctx, &M.v, &m1, &x, 32, 8);
    T_CHECK(rc == SD_OK && !memcmp(m0.data, m1.data, sd_tensor_nbytes(&m0)));
    /* real tiles: 2×2 decode tiles of 12 latents overlapping by 8; 2×2 encode tiles of 24 px by 16.
     * Per-tile GroupNorm statistics and attention make the result differ (random weights make it
     * worse than a trained VAE); bound the mean and the maximum relative difference. */
    rc = sd_vae_decode_tiled(&g_ctx, &M.v, &d1, &z, 12, 8);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    double dd = rel_diff(d1.data, d0.data, sd_tensor_numel(&d0)), dda = mean_rel(d1.data, d0.data, sd_tensor_numel(&d0));
    rc = sd_vae_encode_tiled(&g_ctx, &M.v, &m1, &x, 24, 16);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    double dm = rel_diff(m1.data, m0.data, sd_tensor_numel(&m0)), dma = mean_rel(m1.data, m0.data, sd_tensor_numel(&m0));
    printf("# tiled vs untiled: decode max %.3g mean %.3g, encode max %.3g mean %.3g (relative)\n", dd, dda, dm, dma);
    T_CHECKF(dd < 0.3 && dda < 0.25 && dm < 0.2 && dma < 0.2, "tiled differs too much");
    /* bad tiling arguments */
    T_CHECK(sd_vae_decode_tiled(&g_ctx, &M.v, &d1, &z, 8, 8) == SD_EINVAL);
    T_CHECK(sd_vae_encode_tiled(&g_ctx, &M.v, &m1, &x, 15, 4) == SD_EINVAL);
    sd_tensor_free(&x); sd_tensor_free(&z); sd_tensor_free(&m0); sd_tensor_free(&m1);
    sd_tensor_free(&d0); sd_tensor_free(&d1);
    model_close(&M);
    sd_safetensors_close(st);
}

static void test_misc(void)
{
    float a[64], b[64], c[64];
    T_CHECK(sd_vae_noise(a, 64, 7, 0, 0) == SD_OK);
    T_CHECK(sd_vae_noise(b, 64, 7, 0, 0) == SD_OK);
    T_CHECK(sd_vae_noise(c, 64, 7, 0, 1) == SD_OK);
    T_CHECK(!memcmp(a, b, sizeof a) && memcmp(a, c, sizeof a));
    model M;
    int rc = model_open(&M, cfg_a(), "first_stage_model", NULL, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_OK);
    sd_tensor x, m;
    sd_tensor_alloc(&x, SD_F32, 4, (int64_t[]){ 1, 3, 31, 32 });
    sd_tensor_alloc(&m, SD_F32, 4, (int64_t[]){ 1, 8, 15, 16 });
    T_CHECK(sd_vae_encode(&g_ctx, &M.v, &m, &x) == SD_EINVAL);
    sd_tensor_free(&x);
    sd_tensor_free(&m);
    size_t need = sd_vae_scratch_bytes(&M.v, 1, 512, 512, 0);
    T_CHECKF(need > (size_t)2 * 32 * 512 * 512 * 4, "scratch estimate %zu", need);
    model_close(&M);
    sd_vae_config bad = cfg_a();
    bad.ch = 48;
    sd_params r;
    sd_params_init(&r);
    sd_vae v;
    T_CHECK(sd_vae_init(&v, &r, "", &bad) == SD_EINVAL);
    sd_params_free(&r);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0)) {
        printf("not ok init: %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_ldm);
    T_RUN(test_layouts);
    T_RUN(test_tiled);
    T_RUN(test_misc);
    printf("# worst max|diff|/max|ref| %.3g\n", g_worst);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
