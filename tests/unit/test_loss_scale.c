/* lib/train/loss_scale: torch.amp.GradScaler's rules (defaults, unscale and inf/NaN detection,
 * _amp_update_scale_ backoff/growth, growth capped at FLT_MAX, the underflow stop), the
 * GradScalerKwargs parser, a skipped step leaving parameters, moments and AdamW step counts alone,
 * and a power-of-two scale giving the same bytes as unscaled arithmetic. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "base/error.h"
#include "test.h"
#include "train/loss_scale.h"

static void test_defaults(void)
{
    sd_loss_scaler s;
    sd_loss_scaler_init(&s, 1);
    T_CHECK(s.enabled);
    T_CHECK(s.scale == 65536.0f);
    T_CHECK(s.growth_factor == 2.0 && s.backoff_factor == 0.5);
    T_EQ_INT(s.growth_interval, 2000);
    T_EQ_INT(s.growth_tracker, 0);
    T_CHECK(sd_loss_scaler_factor(&s) == 65536.0);
    T_EQ_INT(sd_loss_scaler_validate(&s, "x"), SD_OK);
    /* disabled: factor 1, nothing touched */
    sd_loss_scaler d;
    sd_loss_scaler_init(&d, 0);
    T_CHECK(sd_loss_scaler_factor(&d) == 1.0);
    float g[2] = { INFINITY, 3 };
    T_EQ_INT(sd_loss_scaler_unscale(&d, g, 2), 0);
    T_CHECK(g[1] == 3);
    sd_loss_scale_event ev = SD_LOSS_SCALE_GROWN;
    T_EQ_INT(sd_loss_scaler_update(&d, 1, &ev), SD_OK);
    T_EQ_INT(ev, SD_LOSS_SCALE_KEPT);
    T_CHECK(d.scale == 65536.0f);
}

static void test_unscale(void)
{
    sd_loss_scaler s;
    sd_loss_scaler_init(&s, 1);
    float g[5] = { 65536.0f * 1.5f, -65536.0f * 3.25e-9f, 0, 1e-30f, 65536.0f * 1e30f };
    T_EQ_INT(sd_loss_scaler_unscale(&s, g, 5), 0);
    T_CHECK(g[0] == 1.5f && g[1] == -3.25e-9f && g[2] == 0);
    T_CHECK(g[3] == 1e-30f / 65536.0f);
    T_CHECK(g[4] == 1e30f);
    /* inf, -inf, NaN anywhere: found; every element is still multiplied (torch) */
    const float bad[3] = { INFINITY, -INFINITY, NAN };
    for (int k = 0; k < 3; k++) {
        float h[4] = { 2, 4, 8, 16 };
        h[k + 1] = bad[k];
        T_EQ_INT(sd_loss_scaler_unscale(&s, h, 4), 1);
        T_CHECK(h[0] == 2.0f / 65536);
    }
    /* a large array takes the OpenMP path: one NaN at the end, one inf in the middle */
    size_t n = (size_t)1 << 17;
    float *big = malloc(n * sizeof *big);
    for (size_t i = 0; i < n; i++) big[i] = (float)i * 4;
    T_EQ_INT(sd_loss_scaler_unscale(&s, big, n), 0);
    T_CHECK(big[n - 1] == (float)(n - 1) * 4 / 65536);
    big[n - 1] = NAN;
    T_EQ_INT(sd_loss_scaler_unscale(&s, big, n), 1);
    big[n - 1] = 0;
    big[n / 2] = -INFINITY;
    T_EQ_INT(sd_loss_scaler_unscale(&s, big, n), 1);
    free(big);
    /* scale 1: values untouched, detection still works */
    s.scale = 1;
    float u[2] = { 0.1f, 7 };
    T_EQ_INT(sd_loss_scaler_unscale(&s, u, 2), 0);
    T_CHECK(u[0] == 0.1f && u[1] == 7);
    u[1] = NAN;
    T_EQ_INT(sd_loss_scaler_unscale(&s, u, 2), 1);
    /* a scale that is not a power of two: inv = (float)(1 / (double)scale), one multiply */
    s.scale = 3.0f;
    float w = 1.0f;
    sd_loss_scaler_unscale(&s, &w, 1);
    T_CHECK(w == (float)(1.0 / 3.0));
}

static void test_update(void)
{
    sd_loss_scaler s;
    sd_loss_scaler_init(&s, 1);
    s.growth_interval = 3;
    sd_loss_scale_event ev;
    /* two finite steps count; the third grows the scale and resets the tracker */
    T_EQ_INT(sd_loss_scaler_update(&s, 0, &ev), SD_OK);
    T_EQ_INT(ev, SD_LOSS_SCALE_KEPT);
    T_EQ_INT(s.growth_tracker, 1);
    T_EQ_INT(sd_loss_scaler_update(&s, 0, &ev), SD_OK);
    T_EQ_INT(s.growth_tracker, 2);
    T_CHECK(s.scale == 65536.0f);
    T_EQ_INT(sd_loss_scaler_update(&s, 0, &ev), SD_OK);
    T_EQ_INT(ev, SD_LOSS_SCALE_GROWN);
    T_CHECK(s.scale == 131072.0f);
    T_EQ_INT(s.growth_tracker, 0);
    /* inf: back off and reset the tracker */
    T_EQ_INT(sd_loss_scaler_update(&s, 0, &ev), SD_OK);
    T_EQ_INT(s.growth_tracker, 1);
    T_EQ_INT(sd_loss_scaler_update(&s, 1, &ev), SD_OK);
    T_EQ_INT(ev, SD_LOSS_SCALE_BACKOFF);
    T_CHECK(s.scale == 65536.0f);
    T_EQ_INT(s.growth_tracker, 0);
    T_EQ_INT(sd_loss_scaler_update(&s, 1, &ev), SD_OK);
    T_CHECK(s.scale == 32768.0f);
    /* the defaults: growth only after 2000 finite steps in a row */
    sd_loss_scaler d;
    sd_loss_scaler_init(&d, 1);
    for (int i = 0; i < 1999; i++) sd_loss_scaler_update(&d, 0, NULL);
    T_CHECK(d.scale == 65536.0f);
    T_EQ_INT(d.growth_tracker, 1999);
    sd_loss_scaler_update(&d, 1, NULL);   /* one skip restarts the count */
    T_CHECK(d.scale == 32768.0f);
    for (int i = 0; i < 2000; i++) sd_loss_scaler_update(&d, 0, NULL);
    T_CHECK(d.scale == 65536.0f);
    T_EQ_INT(d.growth_tracker, 0);
    /* growth never goes past FLT_MAX: the scale stays, the tracker resets */
    s.scale = 0x1p127f;
    s.growth_tracker = 2;
    T_EQ_INT(sd_loss_scaler_update(&s, 0, &ev), SD_OK);
    T_EQ_INT(ev, SD_LOSS_SCALE_KEPT);
    T_CHECK(s.scale == 0x1p127f);
    T_EQ_INT(s.growth_tracker, 0);
    /* non-power-of-two factors: the product in double, rounded to float once */
    s.scale = 1000.0f;
    s.growth_factor = 1.1;
    s.backoff_factor = 0.3;
    s.growth_tracker = 2;
    sd_loss_scaler_update(&s, 0, NULL);
    T_CHECK(s.scale == (float)(1000.0 * 1.1));
    sd_loss_scaler_update(&s, 1, NULL);
    T_CHECK(s.scale == (float)((double)(float)(1000.0 * 1.1) * 0.3));
    /* falling below FLT_MIN stops with SD_ERANGE and leaves the scaler as it was */
    s.scale = 0x1p-126f;
    s.backoff_factor = 0.5;
    s.growth_tracker = 0;
    T_EQ_INT(sd_loss_scaler_update(&s, 1, &ev), SD_ERANGE);
    T_CHECK(strstr(sd_errmsg(), "below 2^-126") != NULL);
    T_CHECK(s.scale == 0x1p-126f);
    s.scale = 0x1p-125f;
    T_EQ_INT(sd_loss_scaler_update(&s, 1, &ev), SD_OK);
    T_CHECK(s.scale == 0x1p-126f);
    /* from the default, 142 skipped steps in a row are allowed, the next one stops */
    sd_loss_scaler_init(&d, 1);
    int k = 0;
    while (sd_loss_scaler_update(&d, 1, NULL) == SD_OK) k++;
    T_EQ_INT(k, 142);
    T_CHECK(d.scale == FLT_MIN);
}

static void test_configure(void)
{
    sd_loss_scaler s;
    sd_loss_scaler_init(&s, 1);
    T_EQ_INT(sd_loss_scaler_configure(&s, "init_scale=1024, growth_interval = 3,growth_factor=4,backoff_factor=0.25,"),
             SD_OK);
    T_CHECK(s.scale == 1024.0f && s.growth_interval == 3 && s.growth_factor == 4 && s.backoff_factor == 0.25);
    T_CHECK(s.enabled);
    T_EQ_INT(sd_loss_scaler_configure(&s, "enabled=False"), SD_OK);
    T_CHECK(!s.enabled);
    T_EQ_INT(sd_loss_scaler_configure(&s, "enabled=true,init_scale=1.7e38"), SD_OK);
    T_CHECK(s.enabled && s.scale == 1.7e38f);
    T_EQ_INT(sd_loss_scaler_configure(&s, ""), SD_OK);
    T_EQ_INT(sd_loss_scaler_configure(&s, NULL), SD_OK);
    static const char *const bad[] = {
        "init_scale=0", "init_scale=-1", "init_scale=1e39", "init_scale=nan", "init_scale=1e-40", "init_scale=",
        "growth_factor=1", "growth_factor=x", "backoff_factor=1", "backoff_factor=0", "growth_interval=0",
        "growth_interval=2.5", "growth_interval=99999999999", "enabled=maybe", "scale=2", "init_scale",
        "init_scale=4,foo=1",
    };
    sd_loss_scaler before = s;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        T_CHECKF(sd_loss_scaler_configure(&s, bad[i]) == SD_EUSAGE, "%s", bad[i]);
        T_CHECKF(!memcmp(&s, &before, sizeof s), "%s changed the scaler", bad[i]);
    }
    T_EQ_INT(sd_loss_scaler_configure(&s, "growth_factor=1"), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "growth factor must be > 1.0") != NULL);
    T_EQ_INT(sd_loss_scaler_configure(&s, "foo=1"), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "unknown key 'foo'") != NULL);
}

/* ---- a skipped step with AdamW ---------------------------------------------------------------- */

typedef struct rig {
    sd_params reg;
    sd_param *p[2];
    sd_optim opt;
} rig;

static void rig_make(rig *r)
{
    sd_params_init(&r->reg);
    T_EQ_INT(sd_params_add(&r->reg, "m", "a", SD_DIMS(3, 5), SD_PARAM_TRAINABLE, &r->p[0]), 0);
    T_EQ_INT(sd_params_add(&r->reg, "m", "b", SD_DIMS(7), SD_PARAM_TRAINABLE, &r->p[1]), 0);
    T_EQ_INT(sd_params_alloc(&r->reg, SD_DEV_CPU), 0);
    for (int i = 0; i < 2; i++) {
        float *v = r->p[i]->value.data;
        for (int64_t j = 0; j < sd_tensor_numel(&r->p[i]->value); j++) v[j] = sinf((float)(j + 7 * i));
    }
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_param *ps[2] = { r->p[0], r->p[1] };
    sd_optim_group_desc gd = { "unet", 1e-3, ps, 2 };
    T_EQ_INT(sd_optim_init(&r->opt, &cfg, &gd, 1), 0);
}

static void rig_free(rig *r)
{
    sd_optim_free(&r->opt);
    sd_params_free(&r->reg);
}

/* The gradients of step s times `mul` (exact for a power of two). */
static void rig_grads(rig *r, int s, float mul)
{
    for (int i = 0; i < 2; i++) {
        float *g = r->p[i]->grad.data;
        for (int64_t j = 0; j < sd_tensor_numel(&r->p[i]->grad); j++)
            g[j] = cosf((float)(j * 3 + s + i)) * (j % 3 ? 1e-3f : 2.5f) * mul;
    }
}

static void test_skipped_step(void)
{
    /* scaled run: steps 0 and 2 finite, step 1 has an inf gradient; reference run: steps 0 and 2
       without a scaler. Same parameters, moments, step counts: the skipped step left no trace. */
    rig a, b;
    rig_make(&a);
    rig_make(&b);
    sd_loss_scaler s, off;
    sd_loss_scaler_init(&s, 1);
    sd_loss_scaler_init(&off, 0);
    double lr[1] = { 1e-3 };
    double gn;
    int skipped;
    sd_loss_scale_event ev;
    for (int step = 0; step < 3; step++) {
        rig_grads(&a, step, (float)sd_loss_scaler_factor(&s));
        if (step == 1) ((float *)a.p[1]->grad.data)[4] = INFINITY;
        T_EQ_INT(sd_loss_scaler_optim_step(&s, &a.opt, 1.0, lr, NULL, &gn, &skipped, &ev), SD_OK);
        T_EQ_INT(skipped, step == 1);
        if (step == 1) {
            T_CHECK(!isfinite(gn));
            T_EQ_INT(ev, SD_LOSS_SCALE_BACKOFF);
            T_CHECK(s.scale == 32768.0f);
            T_EQ_INT(a.opt.params[0].step, 1);
            T_EQ_INT(a.opt.params[1].step, 1);
            continue;
        }
        double gref;
        rig_grads(&b, step, 1.0f);
        T_EQ_INT(sd_loss_scaler_optim_step(&off, &b.opt, 1.0, lr, NULL, &gref, &skipped, &ev), SD_OK);
        T_EQ_INT(skipped, 0);
        T_CHECK(gn == gref);   /* clipping sees the unscaled gradients */
        T_CHECK(gn > 1.0);     /* and the clip is active */
    }
    T_CHECK(!memcmp(a.reg.value_mem, b.reg.value_mem, a.reg.value_bytes));
    T_CHECK(!memcmp(a.opt.state, b.opt.state, a.opt.state_floats * sizeof(float)));
    for (int i = 0; i < 2; i++) T_EQ_INT(a.opt.params[i].step, 2);
    T_EQ_INT(s.growth_tracker, 1);   /* one finite step since the backoff */
    rig_free(&a);
    rig_free(&b);
}

/* A power-of-two scale is exact: a small two-layer linear network's weight gradient computed from a
 * scaled seed, then unscaled, has the same bytes as the unscaled computation. */
static void test_power_of_two_exact(void)
{
    enum { N = 16, H = 8, O = 4 };
    float x[N], w1[H][N], w2[O][H], h[H], y[O], t[O];
    for (int i = 0; i < N; i++) x[i] = sinf((float)i * 0.7f);
    for (int j = 0; j < H; j++)
        for (int i = 0; i < N; i++) w1[j][i] = cosf((float)(i * H + j)) * 0.3f;
    for (int k = 0; k < O; k++)
        for (int j = 0; j < H; j++) w2[k][j] = sinf((float)(k * H + j) * 1.3f) * 0.5f;
    for (int j = 0; j < H; j++) {
        float a = 0;
        for (int i = 0; i < N; i++) a += w1[j][i] * x[i];
        h[j] = a > 0 ? a : 0.01f * a;   /* leaky ReLU */
    }
    for (int k = 0; k < O; k++) {
        float a = 0;
        for (int j = 0; j < H; j++) a += w2[k][j] * h[j];
        y[k] = a;
        t[k] = (float)k * 0.1f;
    }
    float g1[2][H][N];
    sd_loss_scaler s;
    sd_loss_scaler_init(&s, 1);
    for (int pass = 0; pass < 2; pass++) {
        double seed = 2.0 / O * (pass ? sd_loss_scaler_factor(&s) : 1.0);   /* MSE gradient factor */
        float dy[O], dh[H];
        for (int k = 0; k < O; k++) dy[k] = (float)((y[k] - t[k]) * seed);
        for (int j = 0; j < H; j++) {
            float a = 0;
            for (int k = 0; k < O; k++) a += w2[k][j] * dy[k];
            dh[j] = h[j] > 0 ? a : 0.01f * a;
        }
        for (int j = 0; j < H; j++)
            for (int i = 0; i < N; i++) g1[pass][j][i] = dh[j] * x[i];
    }
    T_EQ_INT(sd_loss_scaler_unscale(&s, &g1[1][0][0], H * N), 0);
    T_CHECK(!memcmp(g1[0], g1[1], sizeof g1[0]));
}

int main(void)
{
    T_RUN(test_defaults);
    T_RUN(test_unscale);
    T_RUN(test_update);
    T_RUN(test_configure);
    T_RUN(test_skipped_step);
    T_RUN(test_power_of_two_exact);
    T_DONE();
}
