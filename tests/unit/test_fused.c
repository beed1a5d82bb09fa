/* lib/train/fused + nn/params lazy gradients: sdxl_train.py's --fused_backward_pass (Adafactor, each
 * tensor clipped alone and stepped as soon as its gradient is complete) and --fused_optimizer_groups
 * (AdamW, one optimizer per group of consecutive tensors, stepping when the group is complete)
 * against PyTorch (tests/data/train/fused.txt from tests/golden/gen/make_fused_golden.py): three steps
 * over four tensors of two LR groups, a "backward" that asks for the gradients last tensor first as
 * the layers do; each parameter within 1e-6 relative after every step. Plus: the gradient memory held
 * at most (one tensor for fused_backward_pass, one group for the groups), the partition, the errors
 * (a module written again after the backward left it; a group that never completes), gradient
 * accumulation's held passes, and the reference's refusals. */
#include <math.h>

#include "base/error.h"
#include "train/fused.h"
#include "test.h"
#include "train_golden.h"

static const int64_t shapes[4][4] = { { 5 }, { 3, 4 }, { 2, 2, 2, 2 }, { 3, 2 } };
static const int nd[4] = { 1, 2, 4, 2 };
static const double factors[3] = { 1.0, 0.5, 0.25 };

typedef struct fx {
    sd_params r;
    sd_param *ps[4];
    sd_optim o;
    sd_fused f;
    double lrs[2];
} fx;

static int fx_init(fx *x, int mode, double max_norm, sd_optim_kind kind, const char *const *args, int na, int ngroups)
{
    sd_params_init(&x->r);
    sd_fused_init(&x->f, mode, max_norm);
    int rc = sd_params_set_grad_pool(&x->r, &x->f.pool);
    for (int i = 0; i < 4 && !rc; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "m%d", i);
        rc = sd_params_add(&x->r, nm, "weight", nd[i], shapes[i], SD_PARAM_TRAINABLE, &x->ps[i]);
    }
    if (!rc) rc = sd_params_alloc(&x->r, SD_DEV_CPU);
    if (rc) return rc;
    sd_optim_group_desc gd[2] = { { "a", 1e-2, x->ps, 2 }, { "b", 5e-3, x->ps + 2, 2 } };
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, kind);
    rc = sd_optim_config_parse_args(&cfg, args, na);
    cfg.lr = 1e-2;
    if (!rc) rc = sd_optim_config_check(&cfg);
    if (!rc) rc = sd_optim_init(&x->o, &cfg, gd, 2);
    if (!rc) rc = sd_fused_bind(&x->f, &x->o, ngroups, NULL);
    return rc;
}

static void fx_free(fx *x)
{
    sd_optim_free(&x->o);
    sd_fused_free(&x->f);
    sd_params_free(&x->r);
}

/* One pass of a "backward": gradients asked for last tensor first, g[i] added (scaled by mul). */
static int backward(fx *x, double *const g[4], float mul)
{
    for (int i = 3; i >= 0; i--) {
        sd_tensor *t = sd_param_grad(x->ps[i]);
        if (!t) return x->f.pool.rc ? x->f.pool.rc : SD_ESTATE;
        float *d = t->data;
        for (int64_t j = 0; j < sd_tensor_numel(t); j++) d[j] += (float)g[i][j] * mul;
    }
    return SD_OK;
}

static void golden_case(const char *tag, int mode, double max_norm, sd_optim_kind kind, const char *const *args,
                        int na, int ngroups, size_t peak_expect)
{
    tg_file gf = { 0 };
    T_CHECK(tg_open(&gf, "fused.txt") == 0);
    if (!gf.text) return;
    fx x;
    int rc = fx_init(&x, mode, max_norm, kind, args, na, ngroups);
    T_EQ_INT(rc, 0);
    if (rc) { fx_free(&x); tg_close(&gf); return; }
    if (mode == SD_FUSED_GROUPS) {
        T_EQ_INT(x.f.ngroups, 2);   /* ceil(4 / 3) = 2 tensors per group */
        T_EQ_INT(x.f.gfirst[1], 2);
    }
    char key[64];
    size_t n;
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s.p%d.init", tag, i);
        double *v = tg_get(&gf, key, &n);
        T_CHECKF(v && (int64_t)n == sd_tensor_numel(&x.ps[i]->value), "%s", key);
        for (size_t j = 0; v && j < n; j++) ((float *)x.ps[i]->value.data)[j] = (float)v[j];
        free(v);
        T_CHECK(x.ps[i]->grad.data == NULL);   /* no gradient block */
    }
    double worst = 0;
    for (int s = 0; s < 3; s++) {
        double *g[4] = { 0 };
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.s%d.g%d", tag, s, i);
            g[i] = tg_get(&gf, key, &n);
            T_CHECKF(g[i] != NULL, "%s", key);
        }
        if (!g[0] || !g[1] || !g[2] || !g[3]) { for (int i = 0; i < 4; i++) free(g[i]); break; }
        for (int k = 0; k < 2; k++) x.lrs[k] = x.o.groups[k].lr * factors[s];
        sd_fused_begin(&x.f, 1, 1, x.lrs);
        T_EQ_INT(backward(&x, g, 1.0f), 0);
        T_EQ_INT(sd_fused_end(&x.f, 1), 0);
        for (int i = 0; i < 4; i++) {
            free(g[i]);
            T_CHECK(x.ps[i]->grad.data == NULL);   /* freed by its step */
            snprintf(key, sizeof key, "%s.s%d.p%d", tag, s, i);
            double *v = tg_get(&gf, key, &n);
            T_CHECKF(v != NULL, "%s", key);
            for (size_t j = 0; v && j < n; j++) {
                double a = ((float *)x.ps[i]->value.data)[j], d = fabs(a - v[j]) / fmax(fabs(v[j]), 1e-6);
                if (!(d <= worst)) worst = d;
            }
            free(v);
        }
    }
    printf("# %s: worst relative difference %.3g, gradient bytes held at most %zu\n", tag, worst, x.f.pool.peak);
    T_CHECK(worst <= 1e-6);
    T_EQ_INT(x.f.pool.peak, peak_expect);
    T_EQ_INT(x.f.pool.bytes, 0);
    fx_free(&x);
    tg_close(&gf);
}

static const char *const af_args[] = { "relative_step=False", "scale_parameter=False", "warmup_init=False" };
static const char *const aw_args[] = { "weight_decay=0.01" };

static void test_backward_pass_adafactor(void)
{
    /* one tensor's gradient at a time: the largest, [2,2,2,2] or [3,4] = 16 floats */
    golden_case("fbp", SD_FUSED_BACKWARD_PASS, 1.0, SD_OPTIM_ADAFACTOR, af_args, 3, 0, 16 * 4);
}

static void test_groups_adamw(void)
{
    /* a group's gradients until it steps: [2,2,2,2] + [3,2] = 22 floats, then [3,4] + [5] = 17 */
    golden_case("fog", SD_FUSED_GROUPS, 0.5, SD_OPTIM_ADAMW, aw_args, 1, 3, 22 * 4);
}

/* Gradient accumulation (groups): the passes before the last hold their gradients, which add up; the
 * result is one step over the sum, as without fusing. */
static void test_accumulation_held(void)
{
    fx a, b;
    T_EQ_INT(fx_init(&a, SD_FUSED_GROUPS, 0, SD_OPTIM_ADAMW, aw_args, 1, 2), 0);
    T_EQ_INT(fx_init(&b, SD_FUSED_GROUPS, 0, SD_OPTIM_ADAMW, aw_args, 1, 2), 0);
    double buf[4][16], *g[4], *g2[4], buf2[4][16];
    for (int i = 0; i < 4; i++) {
        g[i] = buf[i];
        g2[i] = buf2[i];
        for (int j = 0; j < 16; j++) buf[i][j] = sin(1.0 + i * 16 + j), buf2[i][j] = 2 * buf[i][j];
        memset(a.ps[i]->value.data, 0, sd_tensor_nbytes(&a.ps[i]->value));
        memset(b.ps[i]->value.data, 0, sd_tensor_nbytes(&b.ps[i]->value));
    }
    a.lrs[0] = b.lrs[0] = 1e-2;
    a.lrs[1] = b.lrs[1] = 5e-3;
    sd_fused_begin(&a.f, 1, 0, a.lrs);
    T_EQ_INT(backward(&a, g, 1.0f), 0);
    T_EQ_INT(sd_fused_end(&a.f, 0), 0);
    for (int i = 0; i < 4; i++) T_CHECK(a.ps[i]->grad.data != NULL);   /* held */
    sd_fused_begin(&a.f, 0, 1, a.lrs);
    T_EQ_INT(backward(&a, g, 1.0f), 0);
    T_EQ_INT(sd_fused_end(&a.f, 1), 0);
    sd_fused_begin(&b.f, 1, 1, b.lrs);
    T_EQ_INT(backward(&b, g2, 1.0f), 0);
    T_EQ_INT(sd_fused_end(&b.f, 1), 0);
    for (int i = 0; i < 4; i++) {
        T_CHECK(a.ps[i]->grad.data == NULL);
        T_CHECK(!memcmp(a.ps[i]->value.data, b.ps[i]->value.data, sd_tensor_nbytes(&a.ps[i]->value)));
    }
    fx_free(&a);
    fx_free(&b);
}

static void test_errors(void)
{
    fx x;
    T_EQ_INT(fx_init(&x, SD_FUSED_BACKWARD_PASS, 0, SD_OPTIM_ADAFACTOR, af_args, 3, 0), 0);
    x.lrs[0] = x.lrs[1] = 1e-3;
    sd_fused_begin(&x.f, 1, 1, x.lrs);
    T_CHECK(sd_param_grad(x.ps[3]) != NULL);
    T_CHECK(sd_param_grad(x.ps[2]) != NULL);   /* m3 is complete: stepped and freed */
    T_CHECK(x.ps[3]->grad.data == NULL);
    T_CHECK(sd_param_grad(x.ps[3]) == NULL);   /* back in a module the backward left */
    T_EQ_INT(x.f.pool.rc, SD_ESTATE);
    T_CHECK(strstr(sd_errmsg(), "m3.weight") != NULL);
    T_EQ_INT(sd_fused_end(&x.f, 1), SD_ESTATE);
    fx_free(&x);
    /* a group whose tensors did not all get a gradient */
    T_EQ_INT(fx_init(&x, SD_FUSED_GROUPS, 0, SD_OPTIM_ADAMW, aw_args, 1, 1), 0);
    sd_fused_begin(&x.f, 1, 1, x.lrs);
    T_CHECK(sd_param_grad(x.ps[3]) != NULL);
    T_CHECK(sd_param_grad(x.ps[2]) != NULL);
    T_CHECK(sd_param_grad(x.ps[1]) != NULL);
    T_EQ_INT(sd_fused_end(&x.f, 1), SD_ESTATE);
    T_CHECK(strstr(sd_errmsg(), "did not complete") != NULL);
    fx_free(&x);   /* the held gradients are freed with the registry */
}

static void test_checks(void)
{
    T_EQ_INT(sd_fused_check(1, 0, SD_OPTIM_ADAFACTOR, 1), 0);
    T_EQ_INT(sd_fused_check(1, 0, SD_OPTIM_ADAMW, 1), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "only works with optimizer_type Adafactor") != NULL);
    T_EQ_INT(sd_fused_check(1, 0, SD_OPTIM_ADAFACTOR, 2), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "gradient_accumulation_steps > 1") != NULL);
    T_EQ_INT(sd_fused_check(1, 4, SD_OPTIM_ADAFACTOR, 1), SD_EUSAGE);
    T_EQ_INT(sd_fused_check(0, 4, SD_OPTIM_ADAMW, 4), 0);
    T_EQ_INT(sd_fused_check(0, 4, SD_OPTIM_LION, 1), 0);
    T_EQ_INT(sd_fused_check(0, 4, SD_OPTIM_PRODIGY, 1), SD_EUSAGE);
    T_EQ_INT(sd_fused_check(0, 4, SD_OPTIM_ADAMW_SF, 1), SD_EUSAGE);
}

int main(void)
{
    T_RUN(test_backward_pass_adafactor);
    T_RUN(test_groups_adamw);
    T_RUN(test_accumulation_held);
    T_RUN(test_errors);
    T_RUN(test_checks);
    T_DONE();
}
