/* SwinV2 WD tagger (models/tagger_swinv2.h, through models/tagger.h) against
 * tests/golden/gen/make_swinv2_golden.py: a plain-PyTorch transcription of timm's
 * SwinTransformerV2 (wd-swinv2-tagger-v3 configuration) on a tiny model under the real key names
 * (shifted windows with the mask, a stage as large as the window, a stage smaller than the window,
 * a clamped logit_scale): logits within max|Δ| <= 1e-4 · max|ref| from the F16 file and an F32
 * copy, a BF16 copy close, the exact-GELU variant, 1 vs 2 threads byte-identical, the geometry
 * read from the shapes, timm's buffers accepted when present with the right shape, damaged files
 * refused naming file and key.
 * One-off full-size check (not part of make check): SD_SWINV2_FULL=DIR runs DIR/swinv2_full.safetensors
 * against DIR/swinv2_full_golden.safetensors (FULL=1 make_swinv2_golden.py writes both to /tmp). */
#include <stdint.h>
#include <time.h>

#include "base/error.h"
#include "models/tagger.h"
#include "models/tagger_swinv2.h"
#include "tagger_golden.h"
#include "test.h"

static sd_ctx g_ctx;

typedef struct copy_spec {
    const char *drop, *extra;          /* extra: added with shape extra_shape (ndim extra_nd) */
    int extra_nd;
    int64_t extra_shape[4];
    const char *reshape;               /* its last axis grows by one */
    const char *img, *window, *act;    /* metadata; NULL: "64", "8", none */
} copy_spec;

/* A copy of swinv2_tiny.safetensors as `dt`, changed as `c` says. */
static int sw_copy(const char *dst, sd_st_dtype dt, const copy_spec *c)
{
    tag_copy_spec t = {.drop = c->drop, .extra = c->extra, .extra_nd = c->extra_nd, .reshape = c->reshape,
                      .meta = {{"img_size", c->img ? c->img : "64"}, {"window_size", c->window ? c->window : "8"},
                               {"act_layer", c->act}}};
    memcpy(t.extra_shape, c->extra_shape, sizeof t.extra_shape);
    return tag_copy(tag_data_path("swinv2_tiny.safetensors"), dst, dt, &t);
}

/* Logits of golden.x (of `golden`) against its `key`: max|Δ|/max|ref|, -1 on error. */
static double sw_run(const char *path, const char *golden, const char *key, int threads, float *out, size_t nout)
{
    return tag_run(&g_ctx, path, golden, key, threads, out, nout, NULL);
}

static void swinv2_geometry(void)
{
    sd_safetensors *st = NULL;
    T_CHECK(sd_safetensors_open(tag_data_path("swinv2_tiny.safetensors"), &st) == 0);
    if (!st) return;
    T_EQ_INT(sd_tagger_detect(st), SD_TAGGER_ARCH_SWINV2);
    sd_tagger m;
    T_CHECKF(sd_tagger_open(&m, st, SD_DEV_CPU) == 0, "%s", sd_errmsg());
    if (m.swin) {
        static const int64_t dims[3] = {8, 16, 32}, heads[3] = {2, 2, 4}, hs[3] = {16, 8, 4};
        static const int ws[3] = {8, 8, 4}, shift[3] = {4, 0, 0};
        T_EQ_INT(m.arch, SD_TAGGER_ARCH_SWINV2);
        T_EQ_INT(m.size, 64);
        T_EQ_INT(m.classes, 20);
        T_EQ_INT(m.swin->nstages, 3);
        T_EQ_INT(m.swin->patch, 4);
        T_EQ_INT(m.swin->window, 8);
        T_EQ_INT(m.swin->act, SD_ACT_GELU_TANH);
        for (int s = 0; s < 3; s++) {
            const sd_swinv2_stage *g = &m.swin->stages[s];
            T_EQ_INT(g->dim, dims[s]);
            T_EQ_INT(g->heads, heads[s]);
            T_EQ_INT(g->depth, 2);
            T_EQ_INT(g->h, hs[s]);
            T_EQ_INT(g->ws, ws[s]);
            T_EQ_INT(g->mlp, 4 * dims[s]);
            T_EQ_INT(g->cpb_hidden, 512);
            T_EQ_INT(g->has_down, s > 0);
            T_EQ_INT(g->blocks[0].shift, 0);
            T_EQ_INT(g->blocks[1].shift, shift[s]);
        }
        T_EQ_INT(sd_params_count(&m.r), 116);
        sd_tagger_free(&m);
    }
    sd_safetensors_close(st);
}

static void swinv2_logits(void)
{
    const char *gold = tag_data_path("swinv2_golden.safetensors");
    char golden[1024];
    snprintf(golden, sizeof golden, "%s", gold);
    float a[40], b[40], c[40];
    double w16 = sw_run(tag_data_path("swinv2_tiny.safetensors"), golden, "golden.logits", 2, a, 40);
    printf("#   f16 file: max|diff|/max|ref| = %.3g\n", w16);
    T_CHECK(w16 >= 0 && w16 <= 1e-4);
    double w1 = sw_run(tag_data_path("swinv2_tiny.safetensors"), golden, "golden.logits", 1, b, 40);
    T_CHECK(w1 >= 0 && memcmp(a, b, sizeof a) == 0);   /* 1 vs 2 threads: same bytes */
    char p32[1024], pbf[1024], pge[1024];
    snprintf(p32, sizeof p32, "%s", t_path("swinv2_f32.safetensors"));
    snprintf(pbf, sizeof pbf, "%s", t_path("swinv2_bf16.safetensors"));
    snprintf(pge, sizeof pge, "%s", t_path("swinv2_gelu.safetensors"));
    T_CHECK(sw_copy(p32, SD_ST_F32, &(copy_spec){0}) == 0);
    T_CHECK(sw_copy(pbf, SD_ST_BF16, &(copy_spec){0}) == 0);
    T_CHECK(sw_copy(pge, SD_ST_F16, &(copy_spec){.act = "gelu"}) == 0);
    double w32 = sw_run(p32, golden, "golden.logits", 2, c, 40);
    printf("#   f32 copy: %.3g\n", w32);
    T_CHECK(w32 >= 0 && memcmp(a, c, sizeof a) == 0);   /* the same values as the f16 file */
    double wbf = sw_run(pbf, golden, "golden.logits", 2, NULL, 0);
    printf("#   bf16 copy (weights rounded again): %.3g\n", wbf);
    T_CHECK(wbf >= 0 && wbf < 0.25);   /* post-norm blocks with random weights amplify the rounding */
    double wge = sw_run(pge, golden, "golden.logits_gelu", 2, NULL, 0);
    double wgt = sw_run(pge, golden, "golden.logits", 2, NULL, 0);
    printf("#   act_layer gelu: %.3g (vs the gelu_tanh logits: %.3g)\n", wge, wgt);
    T_CHECK(wge >= 0 && wge <= 1e-4 && wgt > 1e-4);
    /* timm's non-persistent buffers, if a file has them: accepted with the right shape */
    char pbuf[1024];
    snprintf(pbuf, sizeof pbuf, "%s", t_path("swinv2_buffers.safetensors"));
    T_CHECK(sw_copy(pbuf, SD_ST_F16, &(copy_spec){.extra = "layers.0.blocks.1.attn.relative_position_index",
                                                  .extra_nd = 2, .extra_shape = {64, 64}}) == 0);
    double wb = sw_run(pbuf, golden, "golden.logits", 2, NULL, 0);
    T_CHECK(wb >= 0 && wb <= 1e-4);
    T_CHECK(sw_copy(pbuf, SD_ST_F16, &(copy_spec){.extra = "layers.0.blocks.1.attn_mask", .extra_nd = 3,
                                                  .extra_shape = {4, 64, 64}}) == 0);
    wb = sw_run(pbuf, golden, "golden.logits", 2, NULL, 0);
    T_CHECK(wb >= 0 && wb <= 1e-4);
}

/* damaged SwinV2 files: each an error naming the file and the key (or the metadata) */
static void swinv2_rejects_damaged(void)
{
    static const struct {
        copy_spec c;
        int rc;
        const char *msg;
    } cases[] = {
        {{.drop = "layers.1.blocks.1.mlp.fc2.bias"}, SD_EFORMAT, "layers.1.blocks.1.mlp.fc2.bias"},
        {{.drop = "head.fc.weight"}, SD_EFORMAT, "head.fc.weight"},
        {{.drop = "layers.2.blocks.0.attn.cpb_mlp.0.bias"}, SD_EFORMAT, "layers.2.blocks.0.attn.cpb_mlp.0.bias"},
        {{.drop = "layers.1.downsample.reduction.weight"}, SD_EFORMAT, "without a downsample"},
        {{.extra = "layers.0.blocks.0.extra", .extra_nd = 1, .extra_shape = {8}}, SD_EFORMAT,
         "layers.0.blocks.0.extra"},
        {{.extra = "layers.0.blocks.1.attn.relative_position_index", .extra_nd = 2, .extra_shape = {64, 63}},
         SD_EFORMAT, "layers.0.blocks.1.attn.relative_position_index"},
        {{.extra = "layers.0.blocks.0.attn_mask", .extra_nd = 3, .extra_shape = {4, 64, 64}}, SD_EFORMAT,
         "layers.0.blocks.0.attn_mask"},   /* block 0 does not shift: no mask */
        {{.reshape = "layers.0.blocks.1.attn.logit_scale"}, SD_EFORMAT, "layers.0.blocks.1.attn.logit_scale"},
        {{.reshape = "layers.0.blocks.0.attn.logit_scale"}, SD_EFORMAT, "layers.0.blocks.0.attn.logit_scale"},
        {{.reshape = "layers.2.blocks.1.attn.cpb_mlp.2.weight"}, SD_EFORMAT, "layers.2.blocks.1.attn.cpb_mlp.2.weight"},
        {{.reshape = "layers.1.blocks.0.attn.q_bias"}, SD_EFORMAT, "layers.1.blocks.0.attn.q_bias"},
        {{.reshape = "layers.2.downsample.reduction.weight"}, SD_EFORMAT, "layers.2.downsample.reduction.weight"},
        {{.reshape = "layers.1.blocks.1.attn.qkv.weight"}, SD_EFORMAT, "layers.1.blocks.1.attn.qkv.weight"},
        {{.img = "sixty-four"}, SD_EFORMAT, "img_size"},
        {{.img = "63"}, SD_EFORMAT, "not a multiple of the patch"},
        {{.img = "40", .window = "10"}, SD_EUNSUPPORTED, "odd"},   /* 10 -> 5 -> patch merging of 5x5 */
        {{.img = "48"}, SD_EUNSUPPORTED, "whole number"},
        {{.window = "0"}, SD_EFORMAT, "window_size"},
        {{.window = "1"}, SD_EUNSUPPORTED, "1x1 window"},
        {{.act = "relu"}, SD_EUNSUPPORTED, "act_layer"},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s", t_path("swinv2_bad.safetensors"));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        T_CHECK(sw_copy(path, SD_ST_F16, &cases[i].c) == 0);
        tag_check_refused(path, "swinv2_bad.safetensors", i, cases[i].rc, cases[i].msg);
    }
}

/* the real layout with random weights (FULL=1 make_swinv2_golden.py); only when asked for */
static const char *g_full;

static void swinv2_full_size(void)
{
    const char *dir = g_full;
    char model[1024], golden[1024];
    snprintf(model, sizeof model, "%s/swinv2_full.safetensors", dir);
    snprintf(golden, sizeof golden, "%s/swinv2_full_golden.safetensors", dir);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double w = sw_run(model, golden, "golden.logits", 2, NULL, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("#   full-size SwinV2 (448, window 14): max|diff|/max|ref| = %.3g, open+forward %.1f s (2 threads)\n", w,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    T_CHECK(w >= 0 && w <= 1e-3);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0)) {
        printf("not ok ctx\n");
        return 1;
    }
    T_RUN(swinv2_geometry);
    T_RUN(swinv2_logits);
    T_RUN(swinv2_rejects_damaged);
    g_full = getenv("SD_SWINV2_FULL");
    if (g_full && *g_full) T_RUN(swinv2_full_size);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
