/* OFT modules (nn/oft.h on sd_linear / sd_conv2d) against the reference's OFTModule in PyTorch
 * (tests/golden/gen/make_oft_golden.py): output, input gradient and the blocks' gradient of a linear
 * (clamp inactive), a 3×3 conv (clamp active) and a linear with multiplier 0.6, each with
 * max|Δ| <= 1e-5 · max|ref|; then 3 AdamW steps from the zero init (blocks and gradients per step).
 * Also: a second backward accumulates (+=) into the blocks' gradient. */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "nn/nn.h"
#include "train/optim.h"
#include "test.h"
#include "golden/golden_st.h"

static sd_ctx g_ctx;
static sd_arena g_act;

typedef struct host {
    sd_params hr, nr;          /* host layer (frozen), network (blocks) */
    sd_linear lin;
    sd_conv2d conv;
    sd_oft oft;
    int is_conv;
} host;

static int host_init(host *h, const char *tag, int is_conv, float mult)
{
    memset(h, 0, sizeof *h);
    sd_params_init(&h->hr);
    sd_params_init(&h->nr);
    h->is_conv = is_conv;
    char key[64];
    snprintf(key, sizeof key, "%s", tag);
    int rc = is_conv ? sd_conv2d_init(&h->conv, &h->hr, key, 3, 6, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS)
                     : sd_linear_init(&h->lin, &h->hr, key, 5, 12, SD_NN_BIAS);
    if (!rc) rc = sd_params_set_trainable(&h->hr, "", 0) < 0 ? -1 : SD_OK;
    if (!rc) rc = sd_oft_init(&h->oft, &h->nr, key, is_conv ? 6 : 12, is_conv ? 27 : 5, is_conv ? 2 : 3,
                              is_conv ? 1e-3 : 1.0);
    h->oft.multiplier = mult;
    if (!rc) rc = sd_params_alloc(&h->hr, SD_DEV_CPU);
    if (!rc) rc = sd_params_alloc(&h->nr, SD_DEV_CPU);
    char name[96];
    sd_param *w = is_conv ? h->conv.w : h->lin.w, *b = is_conv ? h->conv.b : h->lin.b;
    snprintf(name, sizeof name, "%s.weight", tag);
    if (!rc) rc = load_into(name, &w->value);
    snprintf(name, sizeof name, "%s.bias", tag);
    if (!rc) rc = load_into(name, &b->value);
    if (!rc) rc = is_conv ? sd_conv2d_set_oft(&h->conv, &h->oft) : sd_linear_set_oft(&h->lin, &h->oft);
    return rc;
}

static void host_free(host *h)
{
    sd_oft_free(&h->oft);
    sd_params_free(&h->hr);
    sd_params_free(&h->nr);
}

/* y = layer(x); dx, blocks->grad += from dy = r. */
static int step(host *h, const sd_tensor *x, const sd_tensor *r, sd_tensor *y, sd_tensor *dx)
{
    int rc = h->is_conv ? sd_conv2d_forward(&g_ctx, &h->conv, &g_act, y, x) : sd_linear_forward(&g_ctx, &h->lin, &g_act, y, x);
    if (!rc) rc = h->is_conv ? sd_conv2d_backward(&g_ctx, &h->conv, dx, r) : sd_linear_backward(&g_ctx, &h->lin, dx, r);
    sd_arena_reset(&g_act, 0);
    return rc;
}

static void check_case(const char *tag, int is_conv, float mult)
{
    host h;
    int rc = host_init(&h, tag, is_conv, mult);
    char name[96];
    snprintf(name, sizeof name, "%s.blocks", tag);
    if (!rc) rc = load_into(name, &h.oft.blocks->value);
    sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
    snprintf(name, sizeof name, "%s.x", tag);
    if (!rc) rc = golden(name, &x);
    snprintf(name, sizeof name, "%s.r", tag);
    if (!rc) rc = golden(name, &r);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, r.ndim, r.shape);
    if (!rc) rc = sd_tensor_alloc(&dx, SD_F32, x.ndim, x.shape);
    if (!rc) rc = sd_params_zero_grad(&g_ctx, &h.nr);
    if (!rc) rc = step(&h, &x, &r, &y, &dx);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        snprintf(name, sizeof name, "%s.y", tag);
        T_CHECK(close_to(name, y.data, name, 1e-5));
        snprintf(name, sizeof name, "%s.dx", tag);
        T_CHECK(close_to(name, dx.data, name, 1e-5));
        snprintf(name, sizeof name, "%s.dblocks", tag);
        T_CHECK(close_to(name, h.oft.blocks->grad.data, name, 1e-5));
        /* accumulation: a second backward doubles the gradient */
        sd_tensor g1;
        T_CHECK(sd_tensor_alloc(&g1, SD_F32, 3, h.oft.blocks->grad.shape) == SD_OK);
        memcpy(g1.data, h.oft.blocks->grad.data, sd_tensor_nbytes(&g1));
        T_CHECK(step(&h, &x, &r, &y, &dx) == SD_OK);
        double e = 0;
        for (int64_t i = 0; i < sd_tensor_numel(&g1); i++)
            e = fmax(e, fabs(((float *)h.oft.blocks->grad.data)[i] - 2 * ((float *)g1.data)[i]));
        T_CHECKF(e < 1e-6, "accumulated gradient off by %g", e);
        sd_tensor_free(&g1);
    }
    sd_tensor_free(&x);
    sd_tensor_free(&r);
    sd_tensor_free(&y);
    sd_tensor_free(&dx);
    host_free(&h);
}

static void test_linear(void) { check_case("lin", 0, 1.0f); }
static void test_conv_clamped(void) { check_case("conv", 1, 1.0f); }
static void test_multiplier(void) { check_case("half", 0, 0.6f); }

static void test_adamw_steps(void)
{
    host h;
    int rc = host_init(&h, "lin", 0, 1.0f);
    /* the reference's init: zero blocks (sd_params_alloc zeroes) */
    sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
    if (!rc) rc = golden("lin.x", &x);
    if (!rc) rc = golden("lin.r", &r);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, r.ndim, r.shape);
    if (!rc) rc = sd_tensor_alloc(&dx, SD_F32, x.ndim, x.shape);
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_param *ps[1] = { h.oft.blocks };
    sd_optim_group_desc gd = { "unet", 1e-2, ps, 1 };
    sd_optim o;
    if (!rc) rc = sd_optim_init(&o, &cfg, &gd, 1);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    double lr = 1e-2;
    for (int s = 1; s <= 3 && !rc; s++) {
        rc = sd_params_zero_grad(&g_ctx, &h.nr);
        if (!rc) rc = step(&h, &x, &r, &y, &dx);
        char name[64];
        snprintf(name, sizeof name, "train.dblocks.s%d", s);
        if (!rc) T_CHECK(close_to(name, h.oft.blocks->grad.data, name, 1e-5));
        if (!rc) rc = sd_optim_step(&o, &lr, NULL);
        snprintf(name, sizeof name, "train.blocks.s%d", s);
        if (!rc) T_CHECK(close_to(name, h.oft.blocks->value.data, name, 1e-5));
    }
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    sd_optim_free(&o);
    sd_tensor_free(&x);
    sd_tensor_free(&r);
    sd_tensor_free(&y);
    sd_tensor_free(&dx);
    host_free(&h);
}

static void test_refusals(void)
{
    sd_params reg;
    sd_params_init(&reg);
    sd_oft o;
    T_CHECK(sd_oft_init(&o, &reg, "m", 10, 4, 4, 1.0) == SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "not divisible") != NULL);
    sd_params_free(&reg);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, (size_t)16 << 20) || sd_arena_init(&g_act, SD_DEV_CPU, (size_t)4 << 20) ||
        sd_safetensors_open(t_root_pathf("tests/data/oft/golden_oft.safetensors"), &g_st)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_linear);
    T_RUN(test_conv_clamped);
    T_RUN(test_multiplier);
    T_RUN(test_adamw_steps);
    T_RUN(test_refusals);
    sd_safetensors_close(g_st);
    sd_arena_free(&g_act);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
