/* WD tagger (models/tagger.h) against tests/golden/gen/make_tagger_golden.py: a PyTorch
 * transcription of timm's VisionTransformer (wd-vit-tagger-v3 configuration) on a tiny model
 * under the real key names (logits within max|Δ| <= 1e-4 · max|ref|, from F16, F32 and BF16
 * copies of the file), and the preprocessing of test images byte for byte against PIL/OpenCV
 * (kohya and wd presets; full arrays at 64, SHA-256 at 448). The ConvNeXt tagger likewise against
 * tests/golden/gen/make_convnext_golden.py (timm ConvNeXt transcription, tiny model, F16/F32/BF16
 * copies, act_layer gelu), and the EVA02 tagger against tests/golden/gen/make_eva02_golden.py (timm
 * Eva transcription: RoPE table, F16/F32/BF16 copies, ref_feat_shape from the metadata or the
 * grid). Also: architecture refusal, broken files, thread-count independence. */
#include <stdint.h>

#include "base/error.h"
#include "base/hash.h"
#include "io/image.h"
#include "models/tagger.h"
#include "models/tagger_convnext.h"
#include "models/tagger_eva02.h"
#include "tagger_golden.h"
#include "test.h"

static sd_ctx g_ctx;

/* ViT logits of golden.x against tagger_golden.safetensors: max|Δ|/max|ref|, -1 on error */
static double run_model(const char *path, int threads, float *out)
{
    return tag_run(&g_ctx, path, tag_data_path("tagger_golden.safetensors"), "golden.logits", threads, out, 48, NULL);
}

static void tagger_vit_logits_f16(void)
{
    sd_safetensors *st = NULL;
    T_CHECK(sd_safetensors_open(tag_data_path("tagger_tiny.safetensors"), &st) == 0);
    if (st) {
        T_EQ_INT(sd_tagger_detect(st), SD_TAGGER_ARCH_VIT);
        sd_tagger m;
        T_CHECK(sd_tagger_open(&m, st, SD_DEV_CPU) == 0);
        T_EQ_INT(m.width, 64);
        T_EQ_INT(m.heads, 4);
        T_EQ_INT(m.depth, 2);
        T_EQ_INT(m.mlp, 256);
        T_EQ_INT(m.patch, 16);
        T_EQ_INT(m.size, 64);
        T_EQ_INT(m.tokens, 16);
        T_EQ_INT(m.classes, 24);
        sd_tagger_free(&m);
        sd_safetensors_close(st);
    }
    double w = run_model(tag_data_path("tagger_tiny.safetensors"), 2, NULL);
    printf("#   f16 file: max|diff|/max|ref| = %.3g\n", w);
    T_CHECK(w >= 0 && w <= 1e-4);
}

/* the same weights rewritten as F32 and BF16 */
static int rewrite(const char *dst, sd_st_dtype dt)
{
    return tag_copy(tag_data_path("tagger_tiny.safetensors"), dst, dt, &(tag_copy_spec){.meta = {{"num_heads", "4"}}});
}

static void tagger_vit_logits_f32_bf16_threads(void)
{
    char p32[1024], pbf[1024];
    snprintf(p32, sizeof p32, "%s", t_path("tagger_f32.safetensors"));
    snprintf(pbf, sizeof pbf, "%s", t_path("tagger_bf16.safetensors"));
    T_CHECK(rewrite(p32, SD_ST_F32) == 0);
    T_CHECK(rewrite(pbf, SD_ST_BF16) == 0);
    float a[48], b[48], c[48];
    double w32 = run_model(p32, 1, a);
    double w16 = run_model(tag_data_path("tagger_tiny.safetensors"), 2, b);
    T_CHECK(w32 >= 0 && w32 <= 1e-4);
    T_CHECK(w16 >= 0 && memcmp(a, b, sizeof a) == 0);   /* same values, 1 vs 2 threads: same bytes */
    double wbf = run_model(pbf, 2, c);
    printf("#   bf16 copy (weights rounded again): max|diff|/max|ref| = %.3g\n", wbf);
    T_CHECK(wbf >= 0 && wbf < 0.1);
}

static void tagger_refuses_other_archs(void)
{
    static const struct { const char *key; int arch; const char *msg; } cases[] = {
        {"stem.0.weight", SD_TAGGER_ARCH_CONVNEXT, "stem.0.weight"},   /* ConvNeXt: a 1-d stem is ill-shaped */
        {"layers.0.blocks.0.attn.logit_scale", SD_TAGGER_ARCH_SWINV2, "not a timm SwinV2"},   /* SwinV2: no patch_embed */
        {"blocks.0.attn.q_proj.weight", SD_TAGGER_ARCH_EVA02, "EVA02"},   /* EVA02: no patch_embed */
        {"cls_token", SD_TAGGER_ARCH_VIT_CLS, "class token"},
        {"something.else", SD_TAGGER_ARCH_UNKNOWN, "not a WD tagger"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sd_safetensors_writer *w = NULL;
        float one[4] = {1, 1, 1, 1};
        sd_safetensors_writer_new(&w);
        sd_safetensors_writer_add(w, cases[i].key, SD_ST_F32, 1, (int64_t[]){4}, one);
        if (cases[i].arch == SD_TAGGER_ARCH_VIT_CLS) {
            sd_safetensors_writer_add(w, "patch_embed.proj.weight", SD_ST_F32, 1, (int64_t[]){4}, one);
            sd_safetensors_writer_add(w, "blocks.0.attn.qkv.weight", SD_ST_F32, 1, (int64_t[]){4}, one);
        }
        void *buf = NULL;
        size_t n = 0;
        T_CHECK(sd_safetensors_writer_write_mem(w, &buf, &n) == 0);
        sd_safetensors *st = NULL;
        T_CHECK(sd_safetensors_open_mem(buf, n, "x.safetensors", &st) == 0);
        if (st) {
            T_EQ_INT(sd_tagger_detect(st), cases[i].arch);
            sd_tagger m;
            int rc = sd_tagger_open(&m, st, SD_DEV_CPU);
            T_CHECK(rc == (cases[i].arch == SD_TAGGER_ARCH_UNKNOWN || cases[i].arch == SD_TAGGER_ARCH_CONVNEXT ||
                           cases[i].arch == SD_TAGGER_ARCH_EVA02 || cases[i].arch == SD_TAGGER_ARCH_SWINV2
                               ? SD_EFORMAT : SD_EUNSUPPORTED));
            T_CHECKF(strstr(sd_errmsg(), cases[i].msg) && strstr(sd_errmsg(), "x.safetensors"), "%s", sd_errmsg());
        }
        sd_safetensors_close(st);
        free(buf);
        sd_safetensors_writer_free(w);
    }
}

/* a ViT whose tensors disagree: wrong head width, pos_embed not square, missing block tensor */
static void tagger_rejects_inconsistent_vit(void)
{
    sd_safetensors *src = NULL;
    T_CHECK(sd_safetensors_open(tag_data_path("tagger_tiny.safetensors"), &src) == 0);
    if (!src) return;
    static const char *drop[] = {"head.weight", "blocks.1.mlp.fc2.bias", "pos_embed"};
    for (int k = 0; k < 3; k++) {
        sd_safetensors_writer *w = NULL;
        sd_safetensors_writer_new(&w);
        for (size_t i = 0; i < sd_safetensors_count(src); i++) {
            const sd_st_tensor *t = sd_safetensors_at(src, i);
            if (!strcmp(t->name, drop[k])) continue;
            sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        }
        if (k == 2) { /* 15 tokens: not a square */
            static uint16_t z[15 * 64];
            sd_safetensors_writer_add(w, "pos_embed", SD_ST_F16, 3, (int64_t[]){1, 15, 64}, z);
        }
        void *buf = NULL;
        size_t n = 0;
        sd_safetensors_writer_write_mem(w, &buf, &n);
        sd_safetensors *st = NULL;
        T_CHECK(sd_safetensors_open_mem(buf, n, "bad.safetensors", &st) == 0);
        sd_tagger m;
        int rc = st ? sd_tagger_open(&m, st, SD_DEV_CPU) : SD_EFORMAT;
        T_CHECK(rc < 0);
        T_CHECKF(strstr(sd_errmsg(), "bad.safetensors") != NULL, "%s", sd_errmsg());
        printf("#   %s\n", sd_errmsg());
        sd_safetensors_close(st);
        free(buf);
        sd_safetensors_writer_free(w);
    }
    /* truncated file */
    FILE *f = fopen(tag_data_path("tagger_tiny.safetensors"), "rb");
    char *b = malloc(4000);
    size_t n = f ? fread(b, 1, 4000, f) : 0;
    if (f) fclose(f);
    sd_safetensors *st = NULL;
    T_CHECK(sd_safetensors_open_mem(b, n, "trunc.safetensors", &st) < 0);
    T_CHECK(strstr(sd_errmsg(), "trunc.safetensors") != NULL);
    free(b);
    sd_safetensors_close(src);
}

static const char *images[] = {"a_97x61", "b_203x150_rgba", "c_640x480", "d_50x33_la", "e_33x517"};

static int prep(const char *img, int preset, int size, sd_image *out)
{
    char p[256];
    snprintf(p, sizeof p, "%s.png", img);
    sd_image rgb;
    int rc = sd_image_load(tag_data_path(p), SD_ALPHA_WHITE, &rgb, NULL);
    if (rc) return rc;
    rc = sd_tagger_prepare_image(&rgb, size, preset, out);
    sd_image_free(&rgb);
    if (!rc) /* to BGR, as the references hold it */
        for (size_t i = 0; i < (size_t)out->w * (size_t)out->h; i++) {
            uint8_t t = out->px[3 * i];
            out->px[3 * i] = out->px[3 * i + 2];
            out->px[3 * i + 2] = t;
        }
    return rc;
}

static void tagger_preprocess_64_exact(void)
{
    sd_safetensors *st = NULL;
    T_CHECK(sd_safetensors_open(tag_data_path("tagger_prep64.safetensors"), &st) == 0);
    if (!st) return;
    for (size_t i = 0; i < sizeof images / sizeof images[0]; i++)
        for (int preset = 0; preset < 2; preset++) {
            char name[128];
            snprintf(name, sizeof name, "prep_%s_%s_64", images[i], preset ? "wd" : "kohya");
            const sd_st_tensor *t = sd_safetensors_find(st, name);
            sd_image im;
            T_CHECK(t != NULL);
            T_CHECK(prep(images[i], preset, 64, &im) == 0);
            if (!t || !im.px) continue;
            int diff = 0, maxd = 0;
            for (size_t k = 0; k < 64 * 64 * 3; k++) {
                int d = abs((int)im.px[k] - (int)((const uint8_t *)t->data)[k]);
                diff += d != 0;
                if (d > maxd) maxd = d;
            }
            T_CHECKF(diff == 0, "%s: %d bytes differ, max %d", name, diff, maxd);
            sd_image_free(&im);
        }
    sd_safetensors_close(st);
}

static void tagger_preprocess_448_exact(void)
{
    FILE *f = fopen(tag_data_path("prep448.txt"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    char img[64], preset[16], hex[65];
    int n = 0;
    while (fscanf(f, "%63s %15s %64s", img, preset, hex) == 3) {
        sd_image im;
        T_CHECK(prep(img, strcmp(preset, "wd") ? SD_TAGGER_PRE_KOHYA : SD_TAGGER_PRE_WD, 448, &im) == 0);
        if (!im.px) continue;
        uint8_t h[32];
        char got[65];
        sd_sha256(im.px, 448 * 448 * 3, h);
        for (int k = 0; k < 32; k++) snprintf(got + 2 * k, 3, "%02x", h[k]);
        T_CHECKF(!strcmp(got, hex), "%s %s: SHA-256 differs", img, preset);
        sd_image_free(&im);
        n++;
    }
    fclose(f);
    T_EQ_INT(n, 10);
}

static void tagger_input_tensor(void)
{
    sd_image im;
    T_CHECK(sd_image_alloc(&im, 2, 1, 3) == 0);
    const uint8_t px[6] = {0, 127, 255, 10, 20, 30};
    memcpy(im.px, px, 6);
    float chw[6];
    sd_tagger_image_to_input(&im, chw);
    /* B plane, G plane, R plane */
    T_CHECK(chw[0] == 255 / 127.5f - 1.0f && chw[1] == 30 / 127.5f - 1.0f);
    T_CHECK(chw[2] == 127 / 127.5f - 1.0f && chw[3] == 20 / 127.5f - 1.0f);
    T_CHECK(chw[4] == -1.0f && chw[5] == 10 / 127.5f - 1.0f);
    sd_image_free(&im);
}

/* ---- ConvNeXt (tests/golden/gen/make_convnext_golden.py) ------------------------------------ */

/* A copy of convnext_tiny.safetensors as `dt`, without tensor `drop`, with tensor `extra` added, with
 * metadata img_size / act_layer (NULL: img_size "64", no act_layer); `reshape` gets one more element. */
static int cnx_copy(const char *dst, sd_st_dtype dt, const char *drop, const char *extra, const char *reshape,
                    const char *img_size, const char *act)
{
    tag_copy_spec c = {.drop = drop, .extra = extra, .extra_nd = 1, .extra_shape = {8}, .reshape = reshape,
                      .meta = {{"img_size", img_size ? img_size : "64"}, {"act_layer", act}}};
    return tag_copy(tag_data_path("convnext_tiny.safetensors"), dst, dt, &c);
}

/* ConvNeXt logits of golden.x against `key` of convnext_golden.safetensors: max|Δ|/max|ref|, -1 on error
 * (message printed; *rc_out gets the open/forward status). */
static double cnx_run(const char *path, const char *key, int threads, float *out, int *rc_out)
{
    return tag_run(&g_ctx, path, tag_data_path("convnext_golden.safetensors"), key, threads, out, 48, rc_out);
}

static void tagger_convnext_logits(void)
{
    sd_safetensors *st = NULL;
    T_CHECK(sd_safetensors_open(tag_data_path("convnext_tiny.safetensors"), &st) == 0);
    if (st) {
        T_EQ_INT(sd_tagger_detect(st), SD_TAGGER_ARCH_CONVNEXT);
        sd_tagger m;
        T_CHECKF(sd_tagger_open(&m, st, SD_DEV_CPU) == 0, "%s", sd_errmsg());
        if (m.cnx) {
            static const int64_t dims[4] = {8, 16, 16, 32}, depths[4] = {1, 1, 2, 1}, hs[4] = {16, 8, 4, 2};
            T_EQ_INT(m.arch, SD_TAGGER_ARCH_CONVNEXT);
            T_EQ_INT(m.size, 64);
            T_EQ_INT(m.classes, 24);
            T_EQ_INT(m.cnx->nstages, 4);
            T_EQ_INT(m.cnx->patch, 4);
            T_EQ_INT(m.cnx->act, SD_ACT_GELU_TANH);
            for (int s = 0; s < 4; s++) {
                T_EQ_INT(m.cnx->stages[s].dim, dims[s]);
                T_EQ_INT(m.cnx->stages[s].depth, depths[s]);
                T_EQ_INT(m.cnx->stages[s].h, hs[s]);
                T_EQ_INT(m.cnx->stages[s].mlp, 4 * dims[s]);
                T_EQ_INT(m.cnx->stages[s].kernel, 7);
                T_EQ_INT(m.cnx->stages[s].has_down, s > 0);
            }
            T_EQ_INT(sd_params_count(&m.r), 65);
            sd_tagger_free(&m);
        }
        sd_safetensors_close(st);
    }
    float a[48], b[48], c[48];
    double w16 = cnx_run(tag_data_path("convnext_tiny.safetensors"), "golden.logits", 2, a, NULL);
    printf("#   f16 file: max|diff|/max|ref| = %.3g\n", w16);
    T_CHECK(w16 >= 0 && w16 <= 1e-4);
    double w1 = cnx_run(tag_data_path("convnext_tiny.safetensors"), "golden.logits", 1, b, NULL);
    T_CHECK(w1 >= 0 && memcmp(a, b, sizeof a) == 0);   /* 1 vs 2 threads: same bytes */
    char p32[1024], pbf[1024], pge[1024];
    snprintf(p32, sizeof p32, "%s", t_path("convnext_f32.safetensors"));
    snprintf(pbf, sizeof pbf, "%s", t_path("convnext_bf16.safetensors"));
    snprintf(pge, sizeof pge, "%s", t_path("convnext_gelu.safetensors"));
    T_CHECK(cnx_copy(p32, SD_ST_F32, NULL, NULL, NULL, NULL, NULL) == 0);
    T_CHECK(cnx_copy(pbf, SD_ST_BF16, NULL, NULL, NULL, NULL, NULL) == 0);
    T_CHECK(cnx_copy(pge, SD_ST_F16, NULL, NULL, NULL, NULL, "gelu") == 0);
    double w32 = cnx_run(p32, "golden.logits", 2, c, NULL);
    printf("#   f32 copy: %.3g\n", w32);
    T_CHECK(w32 >= 0 && memcmp(a, c, sizeof a) == 0);   /* the same values as the f16 file */
    double wbf = cnx_run(pbf, "golden.logits", 2, NULL, NULL);
    printf("#   bf16 copy (weights rounded again): %.3g\n", wbf);
    T_CHECK(wbf >= 0 && wbf < 0.1);
    double wge = cnx_run(pge, "golden.logits_gelu", 2, NULL, NULL);
    double wgt = cnx_run(pge, "golden.logits", 2, NULL, NULL);
    printf("#   act_layer gelu: %.3g (vs the gelu_tanh logits: %.3g)\n", wge, wgt);
    T_CHECK(wge >= 0 && wge <= 1e-4 && wgt > 1e-4);
}

/* damaged ConvNeXt files: each an error naming the file and the key (or the metadata) */
static void tagger_rejects_inconsistent_convnext(void)
{
    static const struct {
        const char *drop, *extra, *reshape, *img, *act;
        int rc;
        const char *msg;
    } cases[] = {
        {"stages.2.blocks.1.mlp.fc2.bias", NULL, NULL, NULL, NULL, SD_EFORMAT, "stages.2.blocks.1.mlp.fc2.bias"},
        {"head.fc.weight", NULL, NULL, NULL, NULL, SD_EFORMAT, "head.fc.weight"},
        {"stages.1.downsample.1.weight", NULL, NULL, NULL, NULL, SD_EFORMAT, "without a downsample"},
        {NULL, "stages.0.blocks.0.extra", NULL, NULL, NULL, SD_EFORMAT, "stages.0.blocks.0.extra"},
        {NULL, NULL, "stages.3.blocks.0.gamma", NULL, NULL, SD_EFORMAT, "stages.3.blocks.0.gamma"},
        {NULL, NULL, "stages.1.blocks.0.conv_dw.weight", NULL, NULL, SD_EFORMAT, "conv_dw.weight"},
        {NULL, NULL, NULL, "sixty-four", NULL, SD_EFORMAT, "img_size"},
        {NULL, NULL, NULL, "16", NULL, SD_EFORMAT, "too small"},
        {NULL, NULL, NULL, NULL, "relu", SD_EUNSUPPORTED, "act_layer"},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s", t_path("convnext_bad.safetensors"));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        T_CHECK(cnx_copy(path, SD_ST_F16, cases[i].drop, cases[i].extra, cases[i].reshape, cases[i].img,
                         cases[i].act) == 0);
        tag_check_refused(path, "convnext_bad.safetensors", i, cases[i].rc, cases[i].msg);
    }
}

/* ---- EVA02 (tests/golden/gen/make_eva02_golden.py) ---------------------------------------- */

/* A copy of eva02_tiny.safetensors as `dt`, without tensor `drop`, with tensor `extra` added,
 * `reshape` one element longer, metadata num_heads "2" and ref_feat_shape `ref` ("3,3" for NULL,
 * none for ""; `heads` likewise). */
static int eva_copy(const char *dst, sd_st_dtype dt, const char *drop, const char *extra, const char *reshape,
                    const char *ref, const char *heads)
{
    tag_copy_spec c = {.drop = drop, .extra = extra, .extra_nd = 1, .extra_shape = {32}, .reshape = reshape,
                      .meta = {{"num_heads", heads && !*heads ? NULL : heads ? heads : "2"},
                               {"ref_feat_shape", ref && !*ref ? NULL : ref ? ref : "3,3"}}};
    return tag_copy(tag_data_path("eva02_tiny.safetensors"), dst, dt, &c);
}

/* EVA02 logits of golden.x against `key` of eva02_golden.safetensors: max|Δ|/max|ref|, -1 on error. */
static double eva_run(const char *path, const char *key, int threads, float *out)
{
    return tag_run(&g_ctx, path, tag_data_path("eva02_golden.safetensors"), key, threads, out, 40, NULL);
}

static void tagger_eva02_logits(void)
{
    sd_safetensors *st = NULL, *gs = NULL;
    T_CHECK(sd_safetensors_open(tag_data_path("eva02_tiny.safetensors"), &st) == 0);
    if (st) {
        T_EQ_INT(sd_tagger_detect(st), SD_TAGGER_ARCH_EVA02);
        sd_tagger m;
        T_CHECKF(sd_tagger_open(&m, st, SD_DEV_CPU) == 0, "%s", sd_errmsg());
        if (m.eva) {
            const sd_tagger_eva02 *e = m.eva;
            T_EQ_INT(m.arch, SD_TAGGER_ARCH_EVA02);
            T_EQ_INT(m.size, 32);
            T_EQ_INT(m.classes, 20);
            T_EQ_INT(e->width, 32);
            T_EQ_INT(e->heads, 2);
            T_EQ_INT(e->depth, 2);
            T_EQ_INT(e->patch, 8);
            T_EQ_INT(e->grid, 4);
            T_EQ_INT(e->tokens, 17);
            T_EQ_INT(e->mlp, 85);
            T_EQ_INT(e->ref_h, 3);
            T_EQ_INT(e->ref_w, 3);
            T_CHECK(e->blocks[0].gamma1 == NULL && e->blocks[1].gamma2 == NULL);
            T_EQ_INT(sd_params_count(&m.r), 46);
            /* the RoPE table is timm's (float32 math; sinf/cosf vs torch: an ulp or two) */
            sd_tensor ref = {0};
            T_CHECK(sd_safetensors_open(tag_data_path("eva02_golden.safetensors"), &gs) == 0);
            T_CHECK(gs && tag_read_f32(gs, "golden.rope", &ref) == 0);
            if (ref.data) {
                T_EQ_INT(ref.shape[0], 16);
                T_EQ_INT(ref.shape[1], 32);
                const float *a = e->rope.data, *r = ref.data;
                double d = 0;
                for (int64_t i = 0; i < 16 * 32; i++) d = fmax(d, fabs((double)a[i] - r[i]));
                printf("#   RoPE table: max|diff| %.3g\n", d);
                T_CHECK(d < 1e-6);
            }
            sd_tensor_free(&ref);
            sd_safetensors_close(gs);
            sd_tagger_free(&m);
        }
        sd_safetensors_close(st);
    }
    float a[40], b[40], c[40];
    double w16 = eva_run(tag_data_path("eva02_tiny.safetensors"), "golden.logits", 2, a);
    printf("#   f16 file: max|diff|/max|ref| = %.3g\n", w16);
    T_CHECK(w16 >= 0 && w16 <= 1e-4);
    double w1 = eva_run(tag_data_path("eva02_tiny.safetensors"), "golden.logits", 1, b);
    T_CHECK(w1 >= 0 && memcmp(a, b, sizeof a) == 0);   /* 1 vs 2 threads: same bytes */
    char p32[1024], pbf[1024], pr4[1024];
    snprintf(p32, sizeof p32, "%s", t_path("eva02_f32.safetensors"));
    snprintf(pbf, sizeof pbf, "%s", t_path("eva02_bf16.safetensors"));
    snprintf(pr4, sizeof pr4, "%s", t_path("eva02_ref4.safetensors"));
    T_CHECK(eva_copy(p32, SD_ST_F32, NULL, NULL, NULL, NULL, NULL) == 0);
    T_CHECK(eva_copy(pbf, SD_ST_BF16, NULL, NULL, NULL, NULL, NULL) == 0);
    double w32 = eva_run(p32, "golden.logits", 2, c);
    printf("#   f32 copy: %.3g\n", w32);
    T_CHECK(w32 >= 0 && memcmp(a, c, sizeof a) == 0);   /* the same values as the f16 file */
    double wbf = eva_run(pbf, "golden.logits", 2, NULL);
    printf("#   bf16 copy (weights rounded again): %.3g\n", wbf);
    T_CHECK(wbf >= 0 && wbf < 0.1);
    /* without ref_feat_shape the grid itself (4x4) is the reference, as for the real tagger */
    T_CHECK(eva_copy(pr4, SD_ST_F16, NULL, NULL, NULL, "", NULL) == 0);
    double w4 = eva_run(pr4, "golden.logits_ref4", 2, NULL), w3 = eva_run(pr4, "golden.logits", 2, NULL);
    printf("#   no ref_feat_shape (= grid 4x4): %.3g (vs the 3x3 logits: %.3g)\n", w4, w3);
    T_CHECK(w4 >= 0 && w4 <= 1e-4 && w3 > 1e-3);
    T_CHECK(eva_copy(pr4, SD_ST_F16, NULL, NULL, NULL, "[4, 4]", NULL) == 0);
    w4 = eva_run(pr4, "golden.logits_ref4", 2, NULL);
    T_CHECK(w4 >= 0 && w4 <= 1e-4);
}

/* damaged EVA02 files: each an error naming the file and the key (or the metadata) */
static void tagger_rejects_inconsistent_eva02(void)
{
    static const struct {
        const char *drop, *extra, *reshape, *ref, *heads;
        int rc;
        const char *msg;
    } cases[] = {
        {"blocks.1.mlp.norm.bias", NULL, NULL, NULL, NULL, SD_EFORMAT, "blocks.1.mlp.norm.bias"},
        {"blocks.0.attn.v_proj.bias", NULL, NULL, NULL, NULL, SD_EFORMAT, "blocks.0.attn.v_proj.bias"},
        {"cls_token", NULL, NULL, NULL, NULL, SD_EFORMAT, "cls_token"},
        {"fc_norm.weight", NULL, NULL, NULL, NULL, SD_EFORMAT, "fc_norm.weight"},
        {NULL, "blocks.0.attn.k_proj.bias", NULL, NULL, NULL, SD_EFORMAT, "blocks.0.attn.k_proj.bias"},
        {NULL, "norm.weight", NULL, NULL, NULL, SD_EFORMAT, "norm.weight"},
        {NULL, "blocks.0.attn.qkv.weight", NULL, NULL, NULL, SD_EUNSUPPORTED, "fused attn.qkv"},
        {NULL, NULL, "pos_embed", NULL, NULL, SD_EFORMAT, "pos_embed"},
        {NULL, NULL, "blocks.1.mlp.fc1_x.weight", NULL, NULL, SD_EFORMAT, "blocks.1.mlp.fc1_x.weight"},
        {NULL, NULL, "head.bias", NULL, NULL, SD_EFORMAT, "head.bias"},
        {NULL, NULL, NULL, "three", NULL, SD_EFORMAT, "ref_feat_shape"},
        {NULL, NULL, NULL, "3,3,3", NULL, SD_EFORMAT, "ref_feat_shape"},
        {NULL, NULL, NULL, NULL, "3", SD_EFORMAT, "num_heads"},
        {NULL, NULL, NULL, NULL, "16", SD_EFORMAT, "multiple of 4"},
        {NULL, NULL, NULL, NULL, "", SD_EFORMAT, "num_heads"},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s", t_path("eva02_bad.safetensors"));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        T_CHECK(eva_copy(path, SD_ST_F16, cases[i].drop, cases[i].extra, cases[i].reshape, cases[i].ref,
                         cases[i].heads) == 0);
        tag_check_refused(path, "eva02_bad.safetensors", i, cases[i].rc, cases[i].msg);
    }
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0)) {
        printf("not ok ctx\n");
        return 1;
    }
    T_RUN(tagger_vit_logits_f16);
    T_RUN(tagger_vit_logits_f32_bf16_threads);
    T_RUN(tagger_refuses_other_archs);
    T_RUN(tagger_rejects_inconsistent_vit);
    T_RUN(tagger_convnext_logits);
    T_RUN(tagger_rejects_inconsistent_convnext);
    T_RUN(tagger_eva02_logits);
    T_RUN(tagger_rejects_inconsistent_eva02);
    T_RUN(tagger_preprocess_64_exact);
    T_RUN(tagger_preprocess_448_exact);
    T_RUN(tagger_input_tensor);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
