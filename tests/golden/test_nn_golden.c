/* lib/nn blocks against PyTorch (tests/golden/gen/make_nn_golden.py: the ldm ResBlock and
 * SpatialTransformer code, torch 1.13): weights loaded through sd_params_load_safetensors under
 * their checkpoint key names, then output, input gradients and every weight gradient compared
 * with max|Δ| <= 1e-4 · max|ref|; with and without gradient checkpointing. The depthwise conv op
 * (torch Conv2d with groups = channels) likewise. */
#include "base/error.h"
#include "nn/nn.h"
#include "test.h"

static sd_ctx g_ctx;
static sd_arena g_act;

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/nn/%s", name);
}

/* Golden tensor `name` into a fresh host tensor of the file's shape. */
static int golden(const sd_safetensors *st, const char *name, sd_tensor *t)
{
    const sd_st_tensor *g = sd_safetensors_find(st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden file has no '%s'", name);
    int rc = sd_tensor_alloc(t, SD_F32, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(st, g, SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

/* max|a - ref| <= 1e-4 · max|ref| */
static int close_to(const char *what, const float *a, const sd_tensor *ref)
{
    const float *r = ref->data;
    double m = 0, e = 0;
    for (int64_t i = 0; i < sd_tensor_numel(ref); i++) {
        m = fmax(m, fabs(r[i]));
        e = fmax(e, fabs((double)a[i] - r[i]));
    }
    if (!(e <= 1e-4 * m)) {
        printf("#   %s: max|diff| %.3g, max|ref| %.3g\n", what, e, m);
        return 0;
    }
    return 1;
}

static const sd_key_map g_map[] = { { "model.diffusion_model.", "model.diffusion_model." } };

/* kind 0: resblock, 1: SD1 spatial transformer, 2: SD2 */
static void check_block(int kind, int checkpoint)
{
    const char *file = kind == 0 ? "golden_resblock.safetensors" : kind == 1 ? "golden_st_sd1.safetensors" : "golden_st_sd2.safetensors";
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path(file), &st);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    sd_params r;
    sd_params_init(&r);
    sd_resblock rb;
    sd_spatial_transformer sp;
    memset(&sp, 0, sizeof sp);
    if (kind == 0) {
        rc = sd_resblock_init(&rb, &r, "model.diffusion_model.input_blocks.4.0", 32, 64, 16);
        rb.checkpoint = checkpoint;
    } else {
        rc = sd_spatial_transformer_init(&sp, &r, "model.diffusion_model.input_blocks.1.1", 32, 2,
                                         kind == 1 ? 16 : 8, kind == 1 ? 1 : 2, 24, kind == 2);
        sp.checkpoint = checkpoint;
    }
    if (!rc) rc = sd_params_alloc(&r, SD_DEV_CPU);
    sd_load_report rep;
    if (!rc) rc = sd_params_load_safetensors(&r, st, g_map, 1, 0, &rep);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(rep.loaded, sd_params_count(&r));
        sd_load_report_free(&rep);
    }
    const char *in2 = kind == 0 ? "golden.emb" : "golden.context", *din2 = kind == 0 ? "golden.demb" : "golden.dcontext";
    sd_tensor x, c, rr, y, dx, dc, gy, gdx, gdc;
    memset(&dx, 0, sizeof dx);
    memset(&dc, 0, sizeof dc);
    memset(&y, 0, sizeof y);
    if (!rc) rc = golden(st, "golden.x", &x);
    if (!rc) rc = golden(st, in2, &c);
    if (!rc) rc = golden(st, "golden.r", &rr);
    if (!rc) rc = golden(st, "golden.y", &gy);
    if (!rc) rc = golden(st, "golden.dx", &gdx);
    if (!rc) rc = golden(st, din2, &gdc);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, gy.ndim, gy.shape);
    if (!rc) rc = sd_tensor_alloc(&dx, SD_F32, x.ndim, x.shape);
    if (!rc) rc = sd_tensor_alloc(&dc, SD_F32, c.ndim, c.shape);
    if (!rc) {
        sd_params_zero_grad(&g_ctx, &r);
        sd_arena_reset(&g_act, 0);
        rc = kind == 0 ? sd_resblock_forward(&g_ctx, &rb, &g_act, &y, &x, &c)
                       : sd_spatial_transformer_forward(&g_ctx, &sp, &g_act, &y, &x, &c);
        if (!rc) rc = kind == 0 ? sd_resblock_backward(&g_ctx, &rb, &dx, &dc, &rr)
                                : sd_spatial_transformer_backward(&g_ctx, &sp, &dx, &dc, &rr);
    }
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_CHECK(close_to("y", y.data, &gy));
        T_CHECK(close_to("dx", dx.data, &gdx));
        T_CHECK(close_to(din2, dc.data, &gdc));
        int ngrad = 0;
        for (size_t i = 0; i < sd_params_count(&r); i++) {
            sd_param *p = sd_params_at(&r, i);
            char name[512];
            snprintf(name, sizeof name, "grad.%s", p->key);
            sd_tensor g;
            if (golden(st, name, &g)) { T_CHECKF(0, "%s", sd_errmsg()); continue; }
            T_CHECKF(sd_tensor_numel(&g) == sd_tensor_numel(&p->grad), "%s: size", p->key);
            if (sd_tensor_numel(&g) == sd_tensor_numel(&p->grad)) T_CHECK(close_to(p->key, p->grad.data, &g));
            sd_tensor_free(&g);
            ngrad++;
        }
        T_EQ_INT(ngrad, sd_params_count(&r));
    }
    sd_tensor_free(&x); sd_tensor_free(&c); sd_tensor_free(&rr); sd_tensor_free(&y);
    sd_tensor_free(&dx); sd_tensor_free(&dc); sd_tensor_free(&gy); sd_tensor_free(&gdx); sd_tensor_free(&gdc);
    if (kind) sd_spatial_transformer_free(&sp);
    sd_params_free(&r);
    sd_safetensors_close(st);
}

static void test_resblock_golden(void) { check_block(0, 0); check_block(0, 1); }
static void test_spatial_transformer_sd1_golden(void) { check_block(1, 0); check_block(1, 1); }
static void test_spatial_transformer_sd2_golden(void) { check_block(2, 0); check_block(2, 1); }

/* The depthwise conv op (sd_op_conv2d_dw) against torch Conv2d(C, C, k, groups=C): output, dx, dW, db,
 * with the weight in f32, and the forward again with it in bf16 (the file's values rounded). */
static void check_dw(const char *file, const char *prefix, int stride, int pad)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path(file), &st);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    char kw[128], kb[128], gw[160], gb[160];
    snprintf(kw, sizeof kw, "%sweight", prefix);
    snprintf(kb, sizeof kb, "%sbias", prefix);
    snprintf(gw, sizeof gw, "grad.%sweight", prefix);
    snprintf(gb, sizeof gb, "grad.%sbias", prefix);
    sd_tensor x = {0}, w = {0}, b = {0}, rr = {0}, gy = {0}, gdx = {0}, gdw = {0}, gdb = {0};
    sd_tensor y = {0}, dx = {0}, dw = {0}, db = {0};
    if (!rc) rc = golden(st, "golden.x", &x);
    if (!rc) rc = golden(st, kw, &w);
    if (!rc) rc = golden(st, kb, &b);
    if (!rc) rc = golden(st, "golden.r", &rr);
    if (!rc) rc = golden(st, "golden.y", &gy);
    if (!rc) rc = golden(st, "golden.dx", &gdx);
    if (!rc) rc = golden(st, gw, &gdw);
    if (!rc) rc = golden(st, gb, &gdb);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, gy.ndim, gy.shape);
    if (!rc) rc = sd_tensor_alloc(&dx, SD_F32, x.ndim, x.shape);
    if (!rc) rc = sd_tensor_alloc(&dw, SD_F32, w.ndim, w.shape);
    if (!rc) rc = sd_tensor_alloc(&db, SD_F32, b.ndim, b.shape);
    sd_conv2d_geom g = sd_conv2d_geom_make(stride, pad);
    if (!rc) rc = sd_op_conv2d_dw(&g_ctx, &y, &x, &w, &b, g);
    if (!rc) rc = sd_op_conv2d_dw_bwd(&g_ctx, &dx, &dw, &db, &rr, &x, &w, g);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_CHECK(close_to("conv_dw y", y.data, &gy));
        T_CHECK(close_to("conv_dw dx", dx.data, &gdx));
        T_CHECK(close_to("conv_dw dw", dw.data, &gdw));
        T_CHECK(close_to("conv_dw db", db.data, &gdb));
        /* bf16 weight: close to the f32 result within bf16's rounding */
        sd_tensor wh = {0}, yh = {0};
        rc = sd_tensor_alloc(&wh, SD_BF16, w.ndim, w.shape);
        if (!rc) rc = sd_tensor_alloc(&yh, SD_F32, gy.ndim, gy.shape);
        if (!rc) rc = sd_op_convert(&g_ctx, &wh, &w);
        if (!rc) rc = sd_op_conv2d_dw(&g_ctx, &yh, &x, &wh, &b, g);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        double e = 0, m = 0;
        for (int64_t i = 0; !rc && i < sd_tensor_numel(&gy); i++) {
            e = fmax(e, fabs((double)((float *)yh.data)[i] - ((float *)gy.data)[i]));
            m = fmax(m, fabs(((float *)gy.data)[i]));
        }
        T_CHECKF(e <= 2e-2 * m, "conv_dw bf16 weight: max|diff| %g of %g", e, m);
        sd_tensor_free(&wh);
        sd_tensor_free(&yh);
    }
    sd_tensor *all[] = { &x, &w, &b, &rr, &gy, &gdx, &gdw, &gdb, &y, &dx, &dw, &db };
    for (int i = 0; i < 12; i++) sd_tensor_free(all[i]);
    sd_safetensors_close(st);
}

static void test_conv_dw_golden(void)
{
    check_dw("golden_conv_dw7.safetensors", "stages.0.blocks.0.conv_dw.", 1, 3);
    check_dw("golden_conv_dw3_s2.safetensors", "dw.", 2, 1);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, (size_t)64 << 20) || sd_arena_init(&g_act, SD_DEV_CPU, (size_t)16 << 20)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_resblock_golden);
    T_RUN(test_spatial_transformer_sd1_golden);
    T_RUN(test_spatial_transformer_sd2_golden);
    T_RUN(test_conv_dw_golden);
    sd_arena_free(&g_act);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
