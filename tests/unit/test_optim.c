/* lib/train/optim: AdamW against torch.optim.AdamW (goldens from make_train_golden.py),
 * clip_grad_norm_, option parsing, unsupported optimizers; lib/train/pyfmt; --full_bf16 /
 * --full_fp16 (half-precision parameters) against torch on bf16 tensors (make_optim_half_golden.py). */
#include <math.h>
#include <omp.h>

#include "base/error.h"
#include "base/half.h"
#include "train/loss_scale.h"
#include "tensor/ops.h"
#include "train/optim.h"
#include "train/pyfmt.h"
#include "test.h"
#include "train_golden.h"

static double worst_rel(const float *a, const double *b, size_t n)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs(b[i]), 1e-6);
        if (d > w) w = d;
    }
    return w;
}

static double g_worst;

static void run_case(const char *tag, const int *group_of, const double *lrs, const double *factors,
                     double clip, const char *const *args, int nargs)
{
    tg_file g = { 0 };
    T_CHECK(tg_open(&g, "adamw.txt") == 0);
    if (!g.text) return;
    sd_params r;
    sd_params_init(&r);
    static const int64_t shapes[3][2] = { { 7, 0 }, { 3, 5 }, { 4, 0 } };
    static const int nd[3] = { 1, 2, 1 };
    sd_param *ps[3];
    for (int i = 0; i < 3; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "p%d", i);
        T_EQ_INT(sd_params_add(&r, tag, nm, nd[i], shapes[i], SD_PARAM_TRAINABLE, &ps[i]), 0);
    }
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    char key[64];
    size_t n;
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "%s.p%d.init", tag, i);
        double *v = tg_get(&g, key, &n);
        T_CHECK(v && (int64_t)n == sd_tensor_numel(&ps[i]->value));
        if (!v) continue;
        for (size_t j = 0; j < n; j++) ((float *)ps[i]->value.data)[j] = (float)v[j];
        free(v);
    }
    sd_param *grp[2][3];
    size_t cnt[2] = { 0, 0 };
    for (int i = 0; i < 3; i++) grp[group_of[i]][cnt[group_of[i]]++] = ps[i];
    sd_optim_group_desc gd[2] = { { "unet", lrs[0], grp[0], cnt[0] }, { "textencoder", lrs[1], grp[1], cnt[1] } };
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    T_EQ_INT(sd_optim_config_parse_args(&cfg, args, nargs), 0);
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &cfg, gd, 2), 0);
    for (int s = 0; s < 5; s++) {
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof key, "%s.s%d.g%d", tag, s, i);
            double *v = tg_get(&g, key, &n);
            T_CHECK(v != NULL);
            if (!v) continue;
            for (size_t j = 0; j < n; j++) ((float *)ps[i]->grad.data)[j] = (float)v[j];
            free(v);
        }
        if (clip > 0) {
            double norm;
            T_EQ_INT(sd_optim_clip_grad_norm(&o, clip, &norm), 0);
            snprintf(key, sizeof key, "%s.s%d.norm", tag, s);
            double *v = tg_get(&g, key, &n);
            T_CHECK(v != NULL);
            if (v) { T_CHECKF(fabs(norm - v[0]) <= 1e-6 * v[0], "%s step %d norm %.9g vs %.9g", tag, s, norm, v[0]); free(v); }
        }
        double lr[2] = { lrs[0] * factors[s], lrs[1] * factors[s] };
        T_EQ_INT(sd_optim_step(&o, lr, NULL), 0);
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof key, "%s.s%d.p%d", tag, s, i);
            double *v = tg_get(&g, key, &n);
            T_CHECK(v != NULL);
            if (!v) continue;
            double w = worst_rel((const float *)ps[i]->value.data, v, n);
            if (w > g_worst) g_worst = w;
            T_CHECKF(w <= 1e-6, "%s step %d param %d worst rel %.3g", tag, s, i, w);
            free(v);
        }
    }
    for (size_t i = 0; i < o.nparams; i++) {
        int pi = (int)(o.params[i].p - ps[0]);
        for (int k = 0; k < 3; k++) if (o.params[i].p == ps[k]) pi = k;
        snprintf(key, sizeof key, "%s.final.m%d", tag, pi);
        double *m = tg_get(&g, key, &n);
        if (m) { double w = worst_rel(o.params[i].m, m, n); T_CHECKF(w <= 1e-6, "%s m%d %.3g (%zu) %.9g vs %.9g", tag, pi, w, n, o.params[i].m[0], m[0]); free(m); }
        snprintf(key, sizeof key, "%s.final.v%d", tag, pi);
        double *v = tg_get(&g, key, &n);
        if (v) { T_CHECK(worst_rel(o.params[i].v, v, n) <= 1e-6); free(v); }
        T_EQ_INT(o.params[i].step, 5);
    }
    sd_optim_free(&o);
    sd_params_free(&r);
    tg_close(&g);
}

static void test_adamw_golden_plain(void)
{
    static const int go[3] = { 0, 0, 1 };
    static const double lrs[2] = { 1e-3, 5e-4 }, f[5] = { 1, 1, 1, 1, 1 };
    run_case("plain", go, lrs, f, 0, NULL, 0);
}

static void test_adamw_golden_clip(void)
{
    static const int go[3] = { 0, 0, 1 };
    static const double lrs[2] = { 1e-2, 2e-3 }, f[5] = { 0.0, 0.5, 1.0, 0.75, 0.25 };
    run_case("clip", go, lrs, f, 1.0, NULL, 0);
}

static void test_adamw_golden_args(void)
{
    static const int go[3] = { 0, 1, 1 };
    static const double lrs[2] = { 3e-3, 1e-4 }, f[5] = { 1, 0.9, 0.8, 0.7, 0.6 };
    static const char *const args[] = { "betas=0.8,0.99", "weight_decay=0.1", "eps=1e-6" };
    run_case("args", go, lrs, f, 0.5, args, 3);
    printf("# AdamW vs torch %s: worst relative difference %.3g\n", "1.13", g_worst);
}

static void test_optim_args(void)
{
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_ADAMW);
    char d[256];
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, "torch.optim.adamw.AdamW");
    static const char *const a1[] = { "weight_decay=1e-2", "betas=(0.9, 0.99)", "eps=1e-08", "foreach=False" };
    T_EQ_INT(sd_optim_config_parse_args(&c, a1, 4), 0);
    T_NEAR(c.weight_decay, 0.01, 0);
    T_NEAR(c.beta2, 0.99, 0);
    T_NEAR(c.eps, 1e-8, 0);
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, "torch.optim.adamw.AdamW(weight_decay=0.01,betas=(0.9, 0.99),eps=1e-08,foreach=False)");
    static const char *const bad[] = { "momentum=0.9" };
    T_EQ_INT(sd_optim_config_parse_args(&c, bad, 1), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "momentum") != NULL);
    static const char *const bad2[] = { "weight_decay" };
    T_EQ_INT(sd_optim_config_parse_args(&c, bad2, 1), SD_EUSAGE);
    static const char *const bad3[] = { "betas=cosine" };
    T_EQ_INT(sd_optim_config_parse_args(&c, bad3, 1), SD_EUSAGE);
    static const char *const bad4[] = { "amsgrad=True" };
    T_EQ_INT(sd_optim_config_parse_args(&c, bad4, 1), SD_EUNSUPPORTED);
    static const char *const bad5[] = { "betas=0.9" };
    T_EQ_INT(sd_optim_config_parse_args(&c, bad5, 1), SD_EUSAGE);
}

static void test_optim_names(void)
{
    sd_optim_kind k = (sd_optim_kind)-1;
    T_EQ_INT(sd_optim_resolve(NULL, 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_ADAMW);
    T_EQ_INT(sd_optim_resolve("adamw", 0, 0, &k), 0);
    T_EQ_INT(sd_optim_resolve("", 0, 0, &k), 0);
    T_EQ_INT(sd_optim_resolve("torch.optim.RMSprop", 0, 0, &k), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "optimizer torch.optim.RMSprop is not implemented yet (AdamW, ") == sd_errmsg());
    T_EQ_INT(sd_optim_resolve("paged_adamw", 0, 0, &k), SD_EUNSUPPORTED);
    T_EQ_INT(sd_optim_resolve("prodigy", 0, 0, &k), 0);   /* the others: test_optim_kinds.c */
    T_EQ_INT(k, SD_OPTIM_PRODIGY);
    T_EQ_INT(sd_optim_resolve("bitsandbytes.optim.AdEMAMix8bit", 0, 0, &k), SD_EUNSUPPORTED);
    T_EQ_INT(sd_optim_resolve("AdamW", 1, 0, &k), SD_EUSAGE);
    T_EQ_INT(sd_optim_resolve(NULL, 1, 1, &k), SD_EUSAGE);
}

static void test_skip_and_accum(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *a, *b;
    T_EQ_INT(sd_params_add(&r, NULL, "a", SD_DIMS(3), SD_PARAM_TRAINABLE, &a), 0);
    T_EQ_INT(sd_params_add(&r, NULL, "b", SD_DIMS(2), SD_PARAM_TRAINABLE, &b), 0);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    sd_param *ps[2] = { a, b };
    sd_optim_group_desc gd = { "unet", 1e-3, ps, 2 };
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &cfg, &gd, 1), 0);
    T_EQ_INT(sd_optim_numel(&o), 5);
    for (int i = 0; i < 3; i++) ((float *)a->grad.data)[i] = 1, ((float *)a->value.data)[i] = 1;
    uint8_t skip[2] = { 0, 1 };
    ((float *)b->value.data)[0] = 2;
    T_EQ_INT(sd_optim_step(&o, NULL, skip), 0);
    T_EQ_INT(o.params[0].step, 1);
    T_EQ_INT(o.params[1].step, 0);
    T_CHECK(((float *)b->value.data)[0] == 2.0f);
    /* step 1 of Adam moves by lr (sign of the gradient), plus decay */
    T_NEAR(((float *)a->value.data)[0], 1 * (1 - 1e-5) - 1e-3, 1e-6);
    /* norms and clipping */
    ((float *)a->grad.data)[0] = 3, ((float *)a->grad.data)[1] = 0, ((float *)a->grad.data)[2] = 0;
    ((float *)b->grad.data)[0] = 4, ((float *)b->grad.data)[1] = 0;
    T_NEAR(sd_optim_grad_norm(&o), 5.0, 1e-6);
    double nrm;
    T_EQ_INT(sd_optim_clip_grad_norm(&o, 1.0, &nrm), 0);
    T_NEAR(nrm, 5.0, 1e-6);
    T_NEAR(((float *)a->grad.data)[0], 3.0 / (5.0 + 1e-6), 1e-7);
    T_NEAR(sd_optim_grad_norm(&o), 1.0, 1e-6);
    T_EQ_INT(sd_optim_clip_grad_norm(&o, 10.0, &nrm), 0);  /* coef clamps to 1 */
    T_NEAR(sd_optim_grad_norm(&o), 1.0, 1e-6);
    /* a parameter twice */
    sd_param *twice[2] = { a, a };
    sd_optim o2;
    sd_optim_group_desc gd2 = { "x", 1e-3, twice, 2 };
    T_EQ_INT(sd_optim_init(&o2, &cfg, &gd2, 1), SD_EINVAL);
    sd_optim_free(&o);
    sd_params_free(&r);
    /* accumulation */
    T_NEAR(sd_accum_loss_scale(4), 0.25, 0);
    T_EQ_INT(sd_accum_is_sync(0, 10, 1), 1);
    T_EQ_INT(sd_accum_is_sync(2, 10, 4), 0);
    T_EQ_INT(sd_accum_is_sync(3, 10, 4), 1);
    T_EQ_INT(sd_accum_is_sync(8, 10, 4), 0);
    T_EQ_INT(sd_accum_is_sync(9, 10, 4), 1);
    T_EQ_INT(sd_accum_steps_per_epoch(10, 4), 3);
    T_EQ_INT(sd_accum_steps_per_epoch(10, 1), 10);
}

static void test_pyfmt(void)
{
    char b[64];
    T_EQ_STR(sd_py_float(0.1, b, sizeof b), "0.1");
    T_EQ_STR(sd_py_float(1e-4, b, sizeof b), "0.0001");
    T_EQ_STR(sd_py_float(1e-5, b, sizeof b), "1e-05");
    T_EQ_STR(sd_py_float(1.5e-5, b, sizeof b), "1.5e-05");
    T_EQ_STR(sd_py_float(1.0, b, sizeof b), "1.0");
    T_EQ_STR(sd_py_float(-0.0, b, sizeof b), "-0.0");
    T_EQ_STR(sd_py_float(123456.0, b, sizeof b), "123456.0");
    T_EQ_STR(sd_py_float(1e16, b, sizeof b), "1e+16");
    T_EQ_STR(sd_py_float(1e15, b, sizeof b), "1000000000000000.0");
    T_EQ_STR(sd_py_float(2e-6, b, sizeof b), "2e-06");
    T_EQ_STR(sd_py_float(1732650000.123456, b, sizeof b), "1732650000.123456");
    T_EQ_STR(sd_py_float(1.0 / 3, b, sizeof b), "0.3333333333333333");
    T_EQ_STR(sd_py_float(NAN, b, sizeof b), "nan");
    T_EQ_STR(sd_py_float(-INFINITY, b, sizeof b), "-inf");
    T_EQ_STR(sd_py_float(1e300, b, sizeof b), "1e+300");
    sd_py_value v;
    T_EQ_INT(sd_py_literal("0.9,0.999", &v), 0);
    T_EQ_INT(v.kind, SD_PY_TUPLE);
    T_EQ_STR(v.repr, "(0.9, 0.999)");
    T_EQ_INT(sd_py_literal("[1, 2.5, True]", &v), 0);
    T_EQ_STR(v.repr, "[1, 2.5, True]");
    T_EQ_INT(sd_py_literal("(3,)", &v), 0);
    T_EQ_STR(v.repr, "(3,)");
    T_EQ_INT(sd_py_literal("4,", &v), 0);
    T_EQ_STR(v.repr, "(4,)");
    T_EQ_INT(sd_py_literal(" -1e-2 ", &v), 0);
    T_EQ_INT(v.kind, SD_PY_FLOAT);
    T_EQ_STR(v.repr, "-0.01");
    T_EQ_INT(sd_py_literal("16", &v), 0);
    T_EQ_INT(v.kind, SD_PY_INT);
    T_EQ_INT(sd_py_literal("'sine+.5'", &v), 0);
    T_EQ_STR(v.s, "sine+.5");
    T_EQ_INT(sd_py_literal("None", &v), 0);
    T_EQ_INT(v.kind, SD_PY_NONE);
    T_EQ_INT(sd_py_literal("sine", &v), SD_EUSAGE);
    T_EQ_INT(sd_py_literal("010", &v), SD_EUSAGE);
    T_EQ_INT(sd_py_literal("", &v), SD_EUSAGE);
    T_EQ_INT(sd_py_literal("1.2.3", &v), SD_EUSAGE);
    T_EQ_INT(sd_py_literal("'abc", &v), SD_EUSAGE);
    char k[32];
    const char *val;
    T_EQ_INT(sd_py_split_kv("conv_dim=4", k, sizeof k, &val), 0);
    T_EQ_STR(k, "conv_dim");
    T_EQ_STR(val, "4");
    T_EQ_INT(sd_py_split_kv("a=b=c", k, sizeof k, &val), SD_EUSAGE);
    T_EQ_INT(sd_py_split_kv("abc", k, sizeof k, &val), SD_EUSAGE);
}

static void test_steps_plan(void)
{
    sd_steps_plan p;
    T_EQ_INT(sd_steps_plan_make(10, 1, 4, 0, 3, &p), 0);
    T_EQ_INT(p.max_train_steps, 9);      /* 3 × ceil(10/1/4) */
    T_EQ_INT(p.steps_per_epoch, 3);
    T_EQ_INT(p.num_epochs, 3);
    T_EQ_INT(sd_steps_plan_make(10, 1, 1, 0, 0, &p), 0);
    T_EQ_INT(p.max_train_steps, 1600);   /* the silent default */
    T_EQ_INT(p.num_epochs, 160);
    T_EQ_INT(sd_steps_plan_make(9, 2, 2, 10, 0, &p), 0);
    T_EQ_INT(p.batches_per_process, 5);
    T_EQ_INT(p.steps_per_epoch, 3);
    T_EQ_INT(p.num_epochs, 4);
    T_EQ_INT(p.sched_total, 20);
    T_EQ_INT(sd_steps_plan_make(9, 2, 2, 10, 2, &p), 0);
    T_EQ_INT(p.max_train_steps, 6);      /* 2 × ceil(2.25) */
    T_EQ_INT(sd_steps_plan_make(0, 1, 1, 10, 0, &p), SD_EINVAL);
}

static void test_threads_identical(void)
{
    size_t n = 300001;
    float *p[2], *g = malloc(n * 4), *m[2], *v[2];
    for (int k = 0; k < 2; k++) {
        p[k] = malloc(n * 4), m[k] = calloc(n, 4), v[k] = calloc(n, 4);
        for (size_t i = 0; i < n; i++) p[k][i] = sinf((float)i);
    }
    for (size_t i = 0; i < n; i++) g[i] = cosf((float)i * 0.7f);
    int saved = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k ? 3 : 1);
        for (int s = 1; s <= 3; s++) {
            sd_adamw_scalars sc;
            sd_adamw_scalars_make(&sc, 1e-3, 0.01, 0.9, 0.999, 1e-8, s);
            sd_adamw_update_f32(p[k], g, m[k], v[k], n, &sc);
        }
    }
    omp_set_num_threads(saved);
    T_CHECK(!memcmp(p[0], p[1], n * 4) && !memcmp(m[0], m[1], n * 4) && !memcmp(v[0], v[1], n * 4));
    for (int k = 0; k < 2; k++) free(p[k]), free(m[k]), free(v[k]);
    free(g);
}

/* Bits of the values that differ from the golden (which are exact f16/bf16 values). */
static size_t count_diff(const float *a, const double *b, size_t n, double *worst)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if ((float)b[i] != a[i]) {
            k++;
            double d = fabs((double)a[i] - b[i]) / fmax(fabs(b[i]), 1e-30);
            if (d > *worst) *worst = d;
        }
    return k;
}

/* make_optim_half_golden.py: 5 AdamW steps on f16/bf16 parameters through the scaler's step
 * (gradient rounding, unscale, clip, step), compared bit for bit. */
static void run_half_case(const char *tag, sd_dtype dt, const char *const *args, int nargs, double clip,
                          float scale, sd_ctx *ctx)
{
    tg_file g = { 0 };
    T_CHECK(tg_open(&g, "optim_half.txt") == 0);
    if (!g.text) return;
    static const int64_t shapes[4][4] = { { 5 }, { 3, 4 }, { 2, 2, 2, 2 }, { 3, 2 } };
    static const int nd[4] = { 1, 2, 4, 2 };
    static const double lrs[2] = { 1e-2, 5e-3 }, factors[5] = { 1.0, 0.9, 0.75, 0.5, 0.25 };
    sd_params r;
    sd_params_init(&r);
    sd_param *ps[4];
    char key[64];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "p%d", i);
        T_EQ_INT(sd_params_add(&r, tag, key, nd[i], shapes[i], SD_PARAM_TRAINABLE, &ps[i]), 0);
    }
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    size_t n;
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s.p%d.init", tag, i);
        double *v = tg_get(&g, key, &n);
        T_CHECK(v && (int64_t)n == sd_tensor_numel(&ps[i]->value));
        for (size_t j = 0; v && j < n; j++) ((float *)ps[i]->value.data)[j] = (float)v[j];
        free(v);
    }
    sd_param *grp[2][2] = { { ps[0], ps[1] }, { ps[2], ps[3] } };
    sd_optim_group_desc gd[2] = { { "unet", lrs[0], grp[0], 2 }, { "textencoder", lrs[1], grp[1], 2 } };
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    T_EQ_INT(sd_optim_config_parse_args(&cfg, args, nargs), 0);
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &cfg, gd, 2), 0);
    if (ctx) T_EQ_INT(sd_optim_place(&o, ctx), 0);   /* the ops of tensor/ops.h (CPU backend) */
    T_EQ_INT(sd_optim_set_half(&o, dt), 0);   /* network.to(dtype) */
    sd_loss_scaler ls;
    sd_loss_scaler_init(&ls, scale != 1.0f);
    ls.scale = scale;
    size_t diffs = 0, total = 0;
    double worst = 0;
    for (int s = 0; s < 5; s++) {
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.s%d.g%d", tag, s, i);
            double *v = tg_get(&g, key, &n);
            T_CHECK(v != NULL);
            for (size_t j = 0; v && j < n; j++) ((float *)ps[i]->grad.data)[j] = (float)v[j];
            free(v);
        }
        double lr[2] = { lrs[0] * factors[s], lrs[1] * factors[s] }, norm = 0;
        int skipped = 1;
        T_EQ_INT(sd_loss_scaler_optim_step(&ls, &o, clip, lr, NULL, &norm, &skipped, NULL), 0);
        T_EQ_INT(skipped, 0);
        snprintf(key, sizeof key, "%s.s%d.norm", tag, s);
        double *v = tg_get(&g, key, &n);
        if (v) { T_CHECKF(norm == v[0], "%s step %d norm %.9g vs %.9g", tag, s, norm, v[0]); free(v); }
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.s%d.p%d", tag, s, i);
            v = tg_get(&g, key, &n);
            T_CHECK(v != NULL);
            if (!v) continue;
            diffs += count_diff((const float *)ps[i]->value.data, v, n, &worst);
            total += n;
            free(v);
        }
    }
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s.final.m%d", tag, i);
        double *m = tg_get(&g, key, &n);
        if (m) { diffs += count_diff(o.params[i].m, m, n, &worst); total += n; free(m); }
        snprintf(key, sizeof key, "%s.final.v%d", tag, i);
        double *v = tg_get(&g, key, &n);
        if (v) { diffs += count_diff(o.params[i].v, v, n, &worst); total += n; free(v); }
    }
    T_CHECKF(diffs == 0, "%s: %zu of %zu values differ from torch's (worst relative %.3g)", tag, diffs, total, worst);
    sd_optim_free(&o);
    sd_params_free(&r);
    tg_close(&g);
}

static void test_half_golden(void)
{
    sd_ctx cpu;
    T_EQ_INT(sd_ctx_init(&cpu, SD_DEV_CPU, 0, 0), 0);
    const char *a[] = { "weight_decay=0.1", "betas=0.8,0.95" };
    /* host loops, then the same through sd_optim_place's ops (what a GPU runs): the same bits */
    for (int k = 0; k < 2; k++) {
        sd_ctx *c = k ? &cpu : NULL;
        run_half_case("bf16", SD_BF16, NULL, 0, 1.0, 1.0f, c);
        run_half_case("bf16wd", SD_BF16, a, 2, 0.0, 1.0f, c);
        run_half_case("f16s", SD_F16, NULL, 0, 4.0, 1024.0f, c);
    }
    sd_ctx_free(&cpu);
}

/* sd_optim_place: the f32 AdamW step, norm, clip and fp16 unscale through the ops equal the host
 * loops bit for bit (3 steps with a loss scale); the state moves back to the host; other kinds refuse. */
static void test_place(void)
{
    sd_ctx cpu;
    T_EQ_INT(sd_ctx_init(&cpu, SD_DEV_CPU, 0, 0), 0);
    float res[2][3][64];
    double norms[2][3];
    for (int k = 0; k < 2; k++) {
        sd_params r;
        sd_params_init(&r);
        sd_param *p;
        T_EQ_INT(sd_params_add(&r, NULL, "w", 2, (int64_t[]){ 8, 8 }, SD_PARAM_TRAINABLE, &p), 0);
        T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
        float *w = p->value.data, *g = p->grad.data;
        for (int i = 0; i < 64; i++) w[i] = sinf((float)i) * 0.5f;
        sd_optim_group_desc gd = { "unet", 1e-2, &p, 1 };
        sd_optim_config cfg;
        sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
        sd_optim o;
        T_EQ_INT(sd_optim_init(&o, &cfg, &gd, 1), 0);
        if (k) T_EQ_INT(sd_optim_place(&o, &cpu), 0);
        sd_loss_scaler ls;
        sd_loss_scaler_init(&ls, 1);
        for (int s = 0; s < 3; s++) {
            for (int i = 0; i < 64; i++) g[i] = cosf((float)(i * (s + 1))) * 65536.0f * (s == 1 ? 30.0f : 0.5f);
            int skipped;
            T_EQ_INT(sd_loss_scaler_optim_step(&ls, &o, 1.0, NULL, NULL, &norms[k][s], &skipped, NULL), 0);
            memcpy(res[k][s], w, sizeof res[k][s]);
        }
        T_EQ_INT(sd_optim_place(&o, NULL), 0);
        T_CHECK(o.ctx == NULL);
        sd_optim_free(&o);
        sd_params_free(&r);
    }
    T_CHECK(!memcmp(res[0], res[1], sizeof res[0]) && !memcmp(norms[0], norms[1], sizeof norms[0]));
    T_CHECK(res[0][0][3] != res[0][2][3]);
    /* other kinds run on the host only */
    sd_params r;
    sd_params_init(&r);
    sd_param *p;
    T_EQ_INT(sd_params_add(&r, NULL, "w", 1, (int64_t[]){ 4 }, SD_PARAM_TRAINABLE, &p), 0);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    sd_optim_group_desc gd = { "unet", 1e-2, &p, 1 };
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_PRODIGY);
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &cfg, &gd, 1), 0);
    T_EQ_INT(sd_optim_place(&o, &cpu), SD_EUNSUPPORTED);
    sd_optim_free(&o);
    sd_params_free(&r);
    /* the ops' argument checks */
    float a4[4] = { 1, 2, 3, 4 }, b4[4] = { 0 }, c3[3] = { 0 }, d4[4] = { 0 };
    sd_tensor ta = sd_tensor_wrap(a4, SD_F32, 1, (int64_t[]){ 4 }), tb = sd_tensor_wrap(b4, SD_F32, 1, (int64_t[]){ 4 });
    sd_tensor tc = sd_tensor_wrap(c3, SD_F32, 1, (int64_t[]){ 3 }), td = sd_tensor_wrap(d4, SD_F32, 1, (int64_t[]){ 4 });
    sd_adamw_scalars sc;
    sd_adamw_scalars_make(&sc, 1e-3, 0.01, 0.9, 0.999, 1e-8, 1);
    T_EQ_INT(sd_op_adamw(&cpu, &ta, &tb, &tc, &td, &sc, SD_F32), SD_EINVAL);    /* m of another shape */
    T_EQ_INT(sd_op_adamw(&cpu, &ta, &tb, &td, &td, &sc, SD_I32), SD_EINVAL);    /* no such rounding */
    T_EQ_INT(sd_op_adamw(&cpu, &ta, NULL, &td, &td, &sc, SD_F32), SD_EINVAL);
    T_EQ_INT(sd_op_scale_round(&cpu, &ta, 2.0f, SD_I32, NULL), SD_EINVAL);
    T_EQ_INT(sd_op_sumsq(&cpu, &ta, NULL), SD_EINVAL);
    T_CHECK(a4[0] == 1 && a4[3] == 4);   /* untouched */
    double ss = 0;
    T_EQ_INT(sd_op_sumsq(&cpu, &ta, &ss), SD_OK);
    T_CHECK(ss == 30.0);
    sd_ctx_free(&cpu);
}

/* Lion, SGDNesterov, Adafactor and the bitsandbytes kinds placed on a CPU context (the ops of
 * tensor/ops.h, what a GPU runs) give the host loops' bits: 4 steps with a skipped parameter,
 * clipping, f32 / bf16 / f16, weight decay on and off, Adafactor factored (a matrix, a 4-D conv
 * weight of 3x3 matrices, a 3-D stack) and unfactored (a bias), with and without β1, relative and
 * fixed step; AdamW8bit / Lion8bit / SGDNesterov8bit with 8-bit blockwise and f32 states. */
static void test_place_kinds(void)
{
    static const struct { sd_optim_kind kind; const char *args[4]; int nargs; double lr; } cases[] = {
        { SD_OPTIM_LION, { "weight_decay=0.1", "betas=(0.8, 0.95)" }, 2, 1e-3 },
        { SD_OPTIM_LION, { "weight_decay=0" }, 1, 1e-3 },
        { SD_OPTIM_SGD_NESTEROV, { "weight_decay=0.01" }, 1, 5e-2 },
        { SD_OPTIM_SGD_NESTEROV, { "weight_decay=0", "momentum=0.8", "dampening=0.1" }, 3, 5e-2 },
        { SD_OPTIM_ADAFACTOR, { "weight_decay=0.1" }, 1, 0 },
        { SD_OPTIM_ADAFACTOR, { "relative_step=False", "scale_parameter=False", "warmup_init=False", "beta1=0.9" }, 4, 1e-2 },
        { SD_OPTIM_ADAFACTOR, { "relative_step=False", "weight_decay=0.01", "clip_threshold=0.5" }, 3, 1e-2 },
        { SD_OPTIM_ADAMW8BIT, { "min_8bit_size=100", "weight_decay=0.1" }, 2, 1e-2 },   /* 8-bit and f32 states */
        { SD_OPTIM_ADAMW8BIT, { "weight_decay=0" }, 1, 1e-2 },
        { SD_OPTIM_LION8BIT, { "min_8bit_size=100", "weight_decay=0.1" }, 2, 1e-3 },
        { SD_OPTIM_SGD_NESTEROV8BIT, { "min_8bit_size=1", "weight_decay=0.01" }, 2, 5e-2 },
        { SD_OPTIM_PAGED_ADAMW32BIT, { "weight_decay=0.01" }, 1, 1e-2 },
    };
    static const sd_dtype dts[3] = { SD_F32, SD_BF16, SD_F16 };
    static const int nd[4] = { 2, 4, 3, 1 };
    static const int64_t shapes[4][4] = { { 12, 20 }, { 4, 3, 3, 3 }, { 3, 5, 7 }, { 20 } };
    sd_ctx cpu;
    T_EQ_INT(sd_ctx_init(&cpu, SD_DEV_CPU, 0, 0), 0);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (int d = 0; d < 3; d++) {
            float *res[2][4] = { { 0 } }, *st[2] = { 0 };
            size_t nst = 0;
            for (int k = 0; k < 2; k++) {
                sd_params r;
                sd_params_init(&r);
                sd_param *ps[4];
                for (int i = 0; i < 4; i++) {
                    char key[16];
                    snprintf(key, sizeof key, "w%d", i);
                    T_EQ_INT(sd_params_add(&r, NULL, key, nd[i], shapes[i], SD_PARAM_TRAINABLE, &ps[i]), 0);
                }
                T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
                for (int i = 0; i < 4; i++) {
                    float *w = ps[i]->value.data;
                    for (int64_t j = 0; j < sd_tensor_numel(&ps[i]->value); j++) w[j] = sinf((float)(j * (i + 3)) * 0.37f) * 0.3f;
                }
                sd_optim_group_desc gd = { "unet", cases[c].lr, ps, 4 };
                sd_optim_config cfg;
                sd_optim_config_default(&cfg, cases[c].kind);
                T_EQ_INT(sd_optim_config_parse_args(&cfg, cases[c].args, cases[c].nargs), 0);
                sd_optim o;
                T_EQ_INT(sd_optim_init(&o, &cfg, &gd, 1), 0);
                if (k) T_EQ_INT(sd_optim_place(&o, &cpu), 0);
                T_EQ_INT(sd_optim_set_half(&o, dts[d]), 0);
                for (int s = 0; s < 4; s++) {
                    for (int i = 0; i < 4; i++) {
                        float *g = ps[i]->grad.data;
                        for (int64_t j = 0; j < sd_tensor_numel(&ps[i]->grad); j++)
                            g[j] = cosf((float)(j * (s + 2) + i) * 0.11f) * (s == 2 ? 3.0f : 0.05f);
                    }
                    uint8_t skip[4] = { 0, s == 1, 0, 0 };
                    T_EQ_INT(sd_optim_round_grads(&o), 0);
                    double norm;
                    T_EQ_INT(sd_optim_clip_grad_norm(&o, 1.0, &norm), 0);
                    double lr = cases[c].lr * (1.0 - 0.1 * s);
                    T_EQ_INT(sd_optim_step(&o, &lr, skip), 0);
                }
                if (k) T_EQ_INT(sd_optim_place(&o, NULL), 0);
                for (int i = 0; i < 4; i++) {
                    size_t n = (size_t)sd_tensor_numel(&ps[i]->value);
                    res[k][i] = malloc(n * sizeof(float));
                    if (res[k][i]) memcpy(res[k][i], ps[i]->value.data, n * sizeof(float));
                }
                size_t s8 = 0;
                for (size_t i = 0; o.st8 && i < o.nparams; i++) s8 += sd_adamw8bit_state_bytes(&o.st8[i]);
                nst = o.state_floats + (s8 + sizeof(float) - 1) / sizeof(float);
                st[k] = calloc(nst ? nst : 1, sizeof(float));
                if (st[k]) {
                    memcpy(st[k], o.state, o.state_floats * sizeof(float));
                    unsigned char *at = (unsigned char *)(st[k] + o.state_floats);
                    for (size_t i = 0; o.st8 && i < o.nparams; i++) {
                        size_t b = sd_adamw8bit_state_bytes(&o.st8[i]);
                        memcpy(at, o.st8[i].mem, b);
                        at += b;
                    }
                }
                sd_optim_free(&o);
                sd_params_free(&r);
            }
            int same = st[0] && st[1] && !memcmp(st[0], st[1], nst * sizeof(float)), moved = 0;
            for (int i = 0; i < 4; i++) {
                size_t n = (size_t)(nd[i] == 1 ? shapes[i][0] : 1);
                for (int j = 0; nd[i] > 1 && j < nd[i]; j++) n *= (size_t)shapes[i][j];
                same &= res[0][i] && res[1][i] && !memcmp(res[0][i], res[1][i], n * sizeof(float));
                moved |= res[0][i] && res[0][i][0] != sinf(0.0f) * 0.3f;
                moved |= res[0][i] && n > 1 && res[0][i][1] != sinf((float)(i + 3) * 0.37f) * 0.3f;
                free(res[0][i]);
                free(res[1][i]);
            }
            T_CHECKF(same && moved, "%s case %zu %s: placed = host %d, moved %d", sd_optim_kind_name(cases[c].kind), c,
                     sd_dtype_name(dts[d]), same, moved);
            free(st[0]);
            free(st[1]);
        }
    }
    /* the new ops' argument checks */
    float a4[4] = { 1, 2, 3, 4 }, b4[4] = { 0 }, c3[3] = { 0 }, r2[2] = { 0 }, k2[2] = { 0 }, m1[1] = { 0 };
    sd_tensor ta = sd_tensor_wrap(a4, SD_F32, 1, (int64_t[]){ 4 }), tb = sd_tensor_wrap(b4, SD_F32, 1, (int64_t[]){ 4 });
    sd_tensor tc = sd_tensor_wrap(c3, SD_F32, 1, (int64_t[]){ 3 });
    sd_tensor t22 = sd_tensor_wrap(a4, SD_F32, 2, (int64_t[]){ 2, 2 }), u22 = sd_tensor_wrap(b4, SD_F32, 2, (int64_t[]){ 2, 2 });
    sd_tensor tr = sd_tensor_wrap(r2, SD_F32, 1, (int64_t[]){ 2 }), tk = sd_tensor_wrap(k2, SD_F32, 1, (int64_t[]){ 2 });
    sd_tensor tm = sd_tensor_wrap(m1, SD_F32, 1, (int64_t[]){ 1 });
    sd_lion_scalars ls = { 1, 0.9f, 0.1f, 0.99f, 0.01f, -1e-3f };
    sd_sgd_scalars gs = { 0, 0.9f, 1, -1e-3f, 0, 1 };
    sd_adafactor_scalars as = { 0.5f, 0.5f, 1e-30f, 1, 1e-3f, 0, 1, 0, 0 };
    T_EQ_INT(sd_op_lion(&cpu, &ta, &tb, &tc, &ls), SD_EINVAL);
    T_EQ_INT(sd_op_sgd(&cpu, &ta, &tc, &tb, &gs), SD_EINVAL);
    T_EQ_INT(sd_op_sgd(&cpu, &ta, &tb, NULL, &gs), SD_EINVAL);
    T_EQ_INT(sd_op_adafactor_sq(&cpu, &ta, &tr, &tk, &tm, NULL, &tb, &as), SD_EINVAL);     /* 1-D: not factored */
    T_EQ_INT(sd_op_adafactor_sq(&cpu, &t22, &tr, &tc, &tm, NULL, &u22, &as), SD_EINVAL);  /* col of 3 for 2 columns */
    T_EQ_INT(sd_op_adafactor_sq(&cpu, &t22, &tr, &tk, NULL, NULL, &u22, &as), SD_EINVAL); /* no rmean */
    T_EQ_INT(sd_op_adafactor_apply(&cpu, &ta, &tc, NULL, &as), SD_EINVAL);
    T_CHECK(a4[0] == 1 && a4[3] == 4 && b4[0] == 0);   /* untouched */
    T_EQ_INT(sd_op_adafactor_sq(&cpu, &t22, &tr, &tk, &tm, NULL, &u22, &as), SD_OK);
    T_CHECK(m1[0] > 0 && b4[0] != 0);
    sd_ctx_free(&cpu);
}

/* The other kinds keep every parameter and state value representable in the half dtype; f16
 * gradients past 65504 become inf, which the loss scaler finds (the step skipped). */
static void test_half_kinds(void)
{
    static const sd_optim_kind kinds[] = { SD_OPTIM_LION, SD_OPTIM_SGD_NESTEROV, SD_OPTIM_ADAFACTOR, SD_OPTIM_PRODIGY,
                                           SD_OPTIM_DADAPT_ADAM, SD_OPTIM_ADAMW8BIT };
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        for (int bf = 0; bf < 2; bf++) {
            sd_params r;
            sd_params_init(&r);
            sd_param *p;
            T_EQ_INT(sd_params_add(&r, NULL, "w", 2, (int64_t[]){ 16, 24 }, SD_PARAM_TRAINABLE, &p), 0);
            T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
            float *w = p->value.data, *gr = p->grad.data;
            for (int i = 0; i < 384; i++) w[i] = sinf((float)i * 0.37f) * 0.3f;
            /* steps large enough to move half-precision weights (a bf16 ulp at 0.2 is 1e-3) */
            int dk = sd_optim_kind_has_d(kinds[k]);
            sd_optim_group_desc gd = { "unet", dk ? 1.0 : 5e-2, &p, 1 };
            sd_optim_config cfg;
            sd_optim_config_default(&cfg, kinds[k]);
            cfg.lr = gd.lr;
            if (dk) cfg.d0 = 0.05;
            sd_optim o;
            T_EQ_INT(sd_optim_init(&o, &cfg, &gd, 1), 0);
            T_EQ_INT(sd_optim_set_half(&o, bf ? SD_BF16 : SD_F16), 0);
            int repr = 1, moved = 0;
            for (int s = 0; s < 3; s++) {
                for (int i = 0; i < 384; i++) gr[i] = cosf((float)(i * (s + 2)) * 0.11f) * 0.05f;
                float before[384];
                memcpy(before, w, sizeof before);
                sd_loss_scaler ls;
                sd_loss_scaler_init(&ls, 0);
                double norm;
                int skipped;
                T_EQ_INT(sd_loss_scaler_optim_step(&ls, &o, 1.0, NULL, NULL, &norm, &skipped, NULL), 0);
                moved |= memcmp(before, w, sizeof before) != 0;
                float (*rd)(float) = bf ? sd_round_bf16 : sd_round_f16;
                for (int i = 0; i < 384; i++) repr &= rd(w[i]) == w[i] && rd(gr[i]) == gr[i];
                int states = !(kinds[k] == SD_OPTIM_ADAFACTOR || sd_optim_is_bnb(kinds[k]));
                sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
                int nb = states ? sd_optim_param_bufs(&o, 0, bi) : 0;
                for (int j = 0; j < nb; j++)
                    for (size_t i = 0; i < bi[j].n; i++) repr &= rd(bi[j].data[i]) == bi[j].data[i];
            }
            T_CHECKF(repr && moved, "%s %s: representable %d, moved %d", sd_optim_kind_name(kinds[k]), bf ? "bf16" : "f16",
                     repr, moved);
            sd_optim_free(&o);
            sd_params_free(&r);
        }
    }
    /* f16 overflow: a scaled gradient past 65504 is inf in f16: step skipped, scale halved */
    sd_params r;
    sd_params_init(&r);
    sd_param *p;
    T_EQ_INT(sd_params_add(&r, NULL, "w", 1, (int64_t[]){ 4 }, SD_PARAM_TRAINABLE, &p), 0);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    float *w = p->value.data, *gr = p->grad.data;
    for (int i = 0; i < 4; i++) w[i] = 0.5f, gr[i] = 1.0f;
    gr[2] = 70000.0f;   /* finite in f32, inf in f16 */
    sd_optim_group_desc gd = { "unet", 1e-3, &p, 1 };
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &cfg, &gd, 1), 0);
    T_EQ_INT(sd_optim_set_half(&o, SD_F16), 0);
    T_EQ_INT(sd_optim_set_half(&o, SD_I32), SD_EINVAL);
    sd_loss_scaler ls;
    sd_loss_scaler_init(&ls, 1);
    double norm;
    int skipped = 0;
    T_EQ_INT(sd_loss_scaler_optim_step(&ls, &o, 1.0, NULL, NULL, &norm, &skipped, NULL), 0);
    T_EQ_INT(skipped, 1);
    T_CHECK(w[0] == 0.5f && w[2] == 0.5f && ls.scale == 32768.0f);
    /* the same gradient with f32 parameters is finite: not skipped */
    sd_optim_free(&o);
    T_EQ_INT(sd_optim_init(&o, &cfg, &gd, 1), 0);
    for (int i = 0; i < 4; i++) gr[i] = 1.0f;
    gr[2] = 70000.0f;
    T_EQ_INT(sd_loss_scaler_optim_step(&ls, &o, 1.0, NULL, NULL, &norm, &skipped, NULL), 0);
    T_EQ_INT(skipped, 0);
    sd_optim_free(&o);
    sd_params_free(&r);
}

int main(void)
{
    T_RUN(test_adamw_golden_plain);
    T_RUN(test_adamw_golden_clip);
    T_RUN(test_adamw_golden_args);
    T_RUN(test_optim_args);
    T_RUN(test_optim_names);
    T_RUN(test_skip_and_accum);
    T_RUN(test_pyfmt);
    T_RUN(test_steps_plan);
    T_RUN(test_threads_identical);
    T_RUN(test_half_golden);
    T_RUN(test_half_kinds);
    T_RUN(test_place);
    T_RUN(test_place_kinds);
    T_DONE();
}
