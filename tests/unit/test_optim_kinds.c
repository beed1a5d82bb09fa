/* lib/train/optim: Lion, SGDNesterov, Adafactor, Prodigy and the D-Adaptation kinds (DAdaptAdam,
 * DAdaptAdamPreprint, DAdaptSGD, DAdaptAdaGrad, DAdaptAdan, DAdaptAdanIP, DAdaptLion) against
 * transcriptions of their reference step() in PyTorch (tests/data/train/optim.txt from
 * tests/golden/gen/make_optim_golden.py): five steps over four tensors (1-D, 2-D, 4-D and an
 * all-zero one) in two groups, per-step LR factors, a zero gradient and a skipped parameter, each
 * parameter within 1e-6 relative after every step, the final state tensors, d and Adafactor's
 * logged LRs; plus names, ss_optimizer strings, --optimizer_args errors, state layouts, the
 * reference's warnings and identical bytes for any thread count. */
#include <math.h>
#include <omp.h>

#include "base/error.h"
#include "train/optim.h"
#include "train/state.h"
#include "test.h"
#include "train_golden.h"

static double worst_rel(const float *a, const double *b, size_t n)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs(b[i]), 1e-6);
        if (!(d <= w)) w = d;
    }
    return w;
}

static double rel1(double a, double b)
{
    return fabs(a - b) / fmax(fabs(b), 1e-30);
}

typedef struct kcase {
    const char *tag;
    sd_optim_kind kind;
    const char *args[8];
    double ctor_lr;                /* the constructor's lr (NAN = None) */
    double lrs[2], f[5];
    int log_d, log_lr;
} kcase;

#define F5 { 1, 1, 1, 1, 1 }
#define FS { 1.0, 0.5, 1.0, 0.75, 0.25 }
#define FW { 0.0, 0.5, 1.0, 1.0, 1.0 }

static const kcase cases[] = {
    { "lion", SD_OPTIM_LION, { NULL }, 1e-3, { 1e-3, 5e-4 }, FS, 0, 0 },
    { "lion_args", SD_OPTIM_LION, { "betas=(0.95, 0.98)", "weight_decay=0.1", "decoupled_weight_decay=True" }, 1e-3,
      { 1e-3, 2e-3 }, { 0.0, 1.0, 0.9, 0.8, 0.7 }, 0, 0 },
    { "sgd", SD_OPTIM_SGD_NESTEROV, { NULL }, 1e-2, { 1e-2, 5e-3 }, FS, 0, 0 },
    { "sgd_args", SD_OPTIM_SGD_NESTEROV, { "momentum=0.8", "weight_decay=0.01" }, 1e-2, { 1e-2, 3e-2 }, F5, 0, 0 },
    { "adafactor", SD_OPTIM_ADAFACTOR, { NULL }, NAN, { 1e-3, 1e-3 }, F5, 0, 1 },
    { "adafactor_warmup", SD_OPTIM_ADAFACTOR, { "warmup_init=True", "weight_decay=0.01", "beta1=0.9" }, NAN,
      { 1e-3, 1e-3 }, F5, 0, 1 },
    { "adafactor_manual", SD_OPTIM_ADAFACTOR, { "relative_step=False", "scale_parameter=False", "clip_threshold=0.5",
      "decay_rate=-0.5", "beta1=0.8", "weight_decay=0.1", "eps=(1e-20, 1e-2)" }, 1e-3, { 1e-3, 5e-3 },
      { 0.0, 0.5, 1.0, 0.75, 0.25 }, 0, 0 },
    { "adafactor_scaled", SD_OPTIM_ADAFACTOR, { "relative_step=False" }, 1e-2, { 1e-2, 2e-2 }, FS, 0, 1 },
    { "prodigy", SD_OPTIM_PRODIGY, { NULL }, 1.0, { 1.0, 1.0 }, FW, 1, 0 },
    { "prodigy_args", SD_OPTIM_PRODIGY, { "d_coef=2.0", "use_bias_correction=True", "safeguard_warmup=True",
      "weight_decay=0.01", "decouple=False", "betas=(0.9, 0.99)" }, 1.0, { 1.0, 1.0 }, F5, 1, 0 },
    { "prodigy_slice", SD_OPTIM_PRODIGY, { "betas=(0.0, 0.99)", "beta3=0.9", "slice_p=3", "growth_rate=1.02",
      "weight_decay=0.1", "d0=1e-4", "eps=1e-6" }, 0.5, { 0.5, 0.5 }, { 1.0, 0.8, 0.6, 0.4, 0.2 }, 1, 0 },
    { "prodigy_zero_group", SD_OPTIM_PRODIGY, { "weight_decay=0.1" }, 1.0, { 1.0, 0.0 }, F5, 1, 0 },
    { "dadapt_adam", SD_OPTIM_DADAPT_ADAM, { NULL }, 1.0, { 1.0, 1.0 }, FW, 1, 0 },
    { "dadapt_adam_args", SD_OPTIM_DADAPT_ADAM, { "decouple=True", "weight_decay=0.01", "use_bias_correction=True",
      "growth_rate=1.5", "d0=1e-5" }, 1.0, { 1.0, 1.0 }, F5, 1, 0 },
    { "dadapt_pre", SD_OPTIM_DADAPT_ADAM_PREPRINT, { NULL }, 1.0, { 1.0, 1.0 }, FW, 1, 0 },
    { "dadapt_pre_args", SD_OPTIM_DADAPT_ADAM_PREPRINT, { "weight_decay=0.01", "betas=(0.8, 0.99)", "eps=1e-6",
      "growth_rate=2.0" }, 1.0, { 1.0, 0.0 }, F5, 1, 0 },
    { "dadapt_sgd", SD_OPTIM_DADAPT_SGD, { NULL }, 1.0, { 1.0, 1.0 }, { 1.0, 0.5, 1.0, 0.0, 1.0 }, 1, 0 },
    { "dadapt_sgd_args", SD_OPTIM_DADAPT_SGD, { "momentum=0.9", "weight_decay=0.01", "growth_rate=1.5", "d0=1e-5" },
      1.0, { 1.0, 0.0 }, F5, 1, 0 },
    { "dadapt_adagrad", SD_OPTIM_DADAPT_ADAGRAD, { NULL }, 1.0, { 1.0, 1.0 }, FW, 1, 0 },
    { "dadapt_adagrad_args", SD_OPTIM_DADAPT_ADAGRAD, { "momentum=0.5", "weight_decay=0.01", "eps=1e-5",
      "growth_rate=1.5", "d0=1e-5" }, 1.0, { 1.0, 0.5 }, F5, 1, 0 },
    { "dadapt_adan", SD_OPTIM_DADAPT_ADAN, { NULL }, 1.0, { 1.0, 1.0 }, FW, 1, 0 },
    { "dadapt_adan_args", SD_OPTIM_DADAPT_ADAN, { "no_prox=True", "weight_decay=0.1", "betas=(0.9, 0.9, 0.999)",
      "eps=1e-6", "growth_rate=2.0", "d0=1e-5" }, 1.0, { 1.0, 0.0 }, F5, 1, 0 },
    { "dadapt_adan_ip", SD_OPTIM_DADAPT_ADAN_IP, { NULL }, 1.0, { 1.0, 1.0 }, FW, 1, 0 },
    { "dadapt_adan_ip_args", SD_OPTIM_DADAPT_ADAN_IP, { "no_prox=True", "weight_decay=0.0", "betas=(0.95, 0.9, 0.98)",
      "growth_rate=1.2", "d0=1e-5" }, 1.0, { 1.0, 0.5 }, F5, 1, 0 },
    { "dadapt_lion", SD_OPTIM_DADAPT_LION, { NULL }, 1.0, { 1.0, 1.0 }, FW, 1, 0 },
    { "dadapt_lion_args", SD_OPTIM_DADAPT_LION, { "weight_decay=0.1", "betas=(0.8, 0.95)", "d0=1e-5" }, 1.0,
      { 1.0, 0.0 }, F5, 1, 0 },
};

static double g_worst[SD_OPTIM_NKINDS];

static void run_case(const kcase *kc)
{
    tg_file gf = { 0 };
    T_CHECK(tg_open(&gf, "optim.txt") == 0);
    if (!gf.text) return;
    sd_params r;
    sd_params_init(&r);
    static const int64_t shapes[4][4] = { { 5 }, { 3, 4 }, { 2, 2, 2, 2 }, { 3, 2 } };
    static const int nd[4] = { 1, 2, 4, 2 }, group_of[4] = { 0, 0, 1, 1 };
    sd_param *ps[4];
    for (int i = 0; i < 4; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "p%d", i);
        T_EQ_INT(sd_params_add(&r, kc->tag, nm, nd[i], shapes[i], SD_PARAM_TRAINABLE, &ps[i]), 0);
    }
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    char key[96];
    size_t n;
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s.p%d.init", kc->tag, i);
        double *v = tg_get(&gf, key, &n);
        T_CHECKF(v && (int64_t)n == sd_tensor_numel(&ps[i]->value), "%s", key);
        if (!v) continue;
        for (size_t j = 0; j < n; j++) ((float *)ps[i]->value.data)[j] = (float)v[j];
        free(v);
    }
    sd_param *grp[2][4];
    size_t cnt[2] = { 0, 0 };
    for (int i = 0; i < 4; i++) grp[group_of[i]][cnt[group_of[i]]++] = ps[i];
    sd_optim_group_desc gd[2] = { { "unet", kc->lrs[0], grp[0], cnt[0] }, { "textencoder", kc->lrs[1], grp[1], cnt[1] } };
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, kc->kind);
    int na = 0;
    while (na < 8 && kc->args[na]) na++;
    T_EQ_INT(sd_optim_config_parse_args(&cfg, kc->args, na), 0);
    cfg.lr = kc->ctor_lr;
    T_EQ_INT(sd_optim_config_check(&cfg), 0);
    sd_optim o;
    int rc = sd_optim_init(&o, &cfg, gd, 2);
    T_EQ_INT(rc, 0);
    if (rc) { sd_params_free(&r); tg_close(&gf); return; }
    double worst = 0;
    for (int s = 0; s < 5; s++) {
        uint8_t skip[4] = { 0, 0, 0, 0 };
        if (s == 3) skip[1] = 1;
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.s%d.g%d", kc->tag, s, i);
            double *v = tg_get(&gf, key, &n);
            T_CHECK(v != NULL);
            if (!v) continue;
            for (size_t j = 0; j < n; j++) ((float *)ps[i]->grad.data)[j] = (float)v[j];
            free(v);
        }
        double lr[2] = { kc->lrs[0] * kc->f[s], kc->lrs[1] * kc->f[s] };
        T_EQ_INT(sd_optim_step(&o, lr, skip), 0);
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.s%d.p%d", kc->tag, s, i);
            double *v = tg_get(&gf, key, &n);
            T_CHECK(v != NULL);
            if (!v) continue;
            double w = worst_rel((const float *)ps[i]->value.data, v, n);
            if (w > worst) worst = w;
            T_CHECKF(w <= 1e-6, "%s step %d param %d worst rel %.3g", kc->tag, s, i, w);
            free(v);
        }
        if (kc->log_d) {
            snprintf(key, sizeof key, "%s.s%d.d", kc->tag, s);
            double *v = tg_get(&gf, key, &n);
            T_CHECK(v != NULL);
            if (v) {
                T_CHECKF(rel1(o.ds.d, v[0]) <= 1e-6, "%s step %d d %.9g vs %.9g", kc->tag, s, o.ds.d, v[0]);
                free(v);
            }
        }
        if (kc->log_lr) {
            snprintf(key, sizeof key, "%s.s%d.lr", kc->tag, s);
            double *v = tg_get(&gf, key, &n);
            T_CHECK(v != NULL && n == 2);
            for (int g = 0; v && g < 2; g++) {
                double got = o.groups[g].used_lr;
                T_CHECKF(rel1(got, v[g]) <= 1e-6, "%s step %d group %d lr %.9g vs %.9g", kc->tag, s, g, got, v[g]);
                if (sd_optim_adafactor_schedule(&cfg)) T_CHECK(sd_optim_logged_lr(&o, g, 123.0) == got);
                else T_CHECK(sd_optim_logged_lr(&o, g, 123.0) == 123.0);
            }
            free(v);
        }
    }
    /* the final state tensors, under the reference's names */
    for (size_t i = 0; i < o.nparams; i++) {
        int pi = 0;
        for (int k = 0; k < 4; k++) if (o.params[i].p == ps[k]) pi = k;
        sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
        int nb = sd_optim_param_bufs(&o, i, bi);
        T_CHECK(nb >= 1);
        for (int b = 0; b < nb; b++) {
            snprintf(key, sizeof key, "%s.final.%d.%s", kc->tag, pi, bi[b].name);
            double *v = tg_get(&gf, key, &n);
            T_CHECKF(v != NULL, "%s missing", key);
            if (!v) continue;
            if (n == 1 && bi[b].n > 1 && v[0] == 0) {          /* Prodigy's p0 of an all-zero tensor */
                for (size_t j = 0; j < bi[b].n; j++) T_CHECK(bi[b].data[j] == 0);
            } else {
                T_CHECKF(n == bi[b].n, "%s: %zu values, ours %zu", key, n, bi[b].n);
                if (n == bi[b].n) {
                            double w = worst_rel(bi[b].data, v, n);
                    if (w > worst) worst = w;
                    /* DAdaptSGD's s (values ~1e-6 with d0 1e-5, summed over steps with cancellation): 2e-6 */
                    T_CHECKF(w <= (kc->kind == SD_OPTIM_DADAPT_SGD ? 2e-6 : 1e-6), "%s worst rel %.3g", key, w);
                }
            }
            free(v);
        }
        snprintf(key, sizeof key, "%s.final.%d.step", kc->tag, pi);
        double *v = tg_get(&gf, key, &n);
        if (v) {
            T_CHECKF(o.params[i].step == (int64_t)v[0], "%s: step %lld vs %g", key, (long long)o.params[i].step, v[0]);
            free(v);
        }
    }
    if (worst > g_worst[kc->kind]) g_worst[kc->kind] = worst;
    if (getenv("SD_TEST_VERBOSE")) printf("# %s: worst %.3g\n", kc->tag, worst);
    sd_optim_free(&o);
    sd_params_free(&r);
    tg_close(&gf);
}

static void test_golden_lion(void) { run_case(&cases[0]); run_case(&cases[1]); }
static void test_golden_sgd_nesterov(void) { run_case(&cases[2]); run_case(&cases[3]); }
static void test_golden_adafactor(void) { for (int i = 4; i < 8; i++) run_case(&cases[i]); }
static void test_golden_prodigy(void) { for (int i = 8; i < 12; i++) run_case(&cases[i]); }
static void test_golden_dadapt_adam(void) { run_case(&cases[12]); run_case(&cases[13]); }
static void test_golden_dadapt_preprint(void)
{
    run_case(&cases[14]);
    run_case(&cases[15]);
    for (int k = 1; k < SD_OPTIM_ADAMW8BIT; k++)   /* AdamW8bit's goldens: test_optim8bit.c */
        printf("# %s vs its reference transcription: worst relative difference %.3g\n", sd_optim_kind_name(k),
               g_worst[k]);
}

/* ---- names, args, descriptions -------------------------------------------------------------------------- */

static void test_golden_dadapt_sgd(void)
{
    run_case(&cases[16]);
    run_case(&cases[17]);
    /* the reference divides by the first step's gradient norm: an LR of 0 there (a warm-up from 0)
       or all-zero gradients is its ZeroDivisionError */
    sd_params r;
    sd_param *a;
    sd_params_init(&r);
    T_EQ_INT(sd_params_add(&r, NULL, "a", SD_DIMS(4), SD_PARAM_TRAINABLE, &a), 0);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_DADAPT_SGD);
    sd_param *ps[1] = { a };
    sd_optim_group_desc gd = { "unet", 1.0, ps, 1 };
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &c, &gd, 1), 0);
    ((float *)a->grad.data)[0] = 1.0f;
    double z = 0.0;
    T_EQ_INT(sd_optim_step(&o, &z, NULL), SD_ERANGE);
    T_CHECK(strstr(sd_errmsg(), "float division by zero") != NULL);
    char d[128];
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, "dadaptation.dadapt_sgd.DAdaptSGD");
    sd_optim_free(&o);
    sd_params_free(&r);
}

/* DAdaptAdaGrad, DAdaptAdan, DAdaptAdanIP, DAdaptLion (dadaptation 3.2): goldens, constructor checks,
   the first-group LR of AdaGrad/Adan (different group LRs are no error there; Lion's RuntimeError) */
static void describe_is(sd_optim_kind k, const char *const *args, int n, const char *want);

static void test_golden_dadapt_more(void)
{
    for (int i = 18; i < 26; i++) run_case(&cases[i]);
    for (int k = SD_OPTIM_DADAPT_ADAGRAD; k <= SD_OPTIM_DADAPT_LION; k++)
        printf("# %s vs its reference transcription: worst relative difference %.3g\n", sd_optim_kind_name(k),
               g_worst[k]);
    static const struct { sd_optim_kind k; const char *arg; double lr; int rc; const char *msg; } bad[] = {
        { SD_OPTIM_DADAPT_ADAGRAD, NULL, 0.0, SD_EUSAGE, "DAdaptAdaGrad: Learning rate 0.0 must be positive" },
        { SD_OPTIM_DADAPT_ADAGRAD, "momentum=-0.1", 1.0, SD_EUSAGE, "Momentum -0.1 must be non-negative" },
        { SD_OPTIM_DADAPT_ADAGRAD, "eps=0", 1.0, SD_EUSAGE, "Invalid epsilon value" },
        { SD_OPTIM_DADAPT_ADAGRAD, "betas=(0.9, 0.99)", 1.0, SD_EUSAGE, "has no argument 'betas'" },
        { SD_OPTIM_DADAPT_ADAN, "betas=(0.9, 0.99)", 1.0, SD_EUSAGE, "betas must be three numbers" },
        { SD_OPTIM_DADAPT_ADAN, "betas=(0.9, 1.0, 0.9)", 1.0, SD_EUSAGE, "Invalid beta parameter at index 1: 1" },
        { SD_OPTIM_DADAPT_ADAN_IP, "d0=0", 1.0, SD_EUSAGE, "Invalid d0 value" },
        { SD_OPTIM_DADAPT_ADAN_IP, NULL, -1.0, SD_EUSAGE, "DAdaptAdanIP: Invalid learning rate: -1.0" },
        { SD_OPTIM_DADAPT_ADAN, "momentum=0.9", 1.0, SD_EUSAGE, "has no argument 'momentum'" },
        { SD_OPTIM_DADAPT_LION, "fsdp_in_use=True", 1.0, SD_EUNSUPPORTED, "not implemented" },
        { SD_OPTIM_DADAPT_LION, "betas=(0.9, 1.0)", 1.0, SD_EUSAGE, "invalid beta parameter" },
        { SD_OPTIM_DADAPT_LION, "growth_rate=2", 1.0, SD_EUSAGE, "has no argument 'growth_rate'" },
        { SD_OPTIM_DADAPT_LION, NULL, -0.5, SD_EUSAGE, "DAdaptLion: Invalid learning rate" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sd_optim_config c;
        sd_optim_config_default(&c, bad[i].k);
        const char *a[1] = { bad[i].arg };
        int rc = sd_optim_config_parse_args(&c, a, bad[i].arg ? 1 : 0);
        c.lr = bad[i].lr;
        if (!rc) rc = sd_optim_config_check(&c);
        T_EQ_INT(rc, bad[i].rc);
        T_CHECKF(strstr(sd_errmsg(), bad[i].msg) != NULL, "%s: %s", bad[i].msg, sd_errmsg());
    }
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_DADAPT_LION);   /* no d0 check, lr 0 allowed */
    const char *z[2] = { "d0=0", "log_every=5" };
    T_EQ_INT(sd_optim_config_parse_args(&c, z, 2), 0);
    c.lr = 0.0;
    T_EQ_INT(sd_optim_config_check(&c), 0);
    sd_optim_config_default(&c, SD_OPTIM_DADAPT_ADAN);
    T_CHECK(c.weight_decay == 0.02 && c.beta1 == 0.98 && c.beta2 == 0.92 && c.beta3 == 0.99 && c.eps == 1e-8 && !c.no_prox);
    sd_optim_config_default(&c, SD_OPTIM_DADAPT_ADAGRAD);
    T_CHECK(c.weight_decay == 0 && c.eps == 1e-6 && c.momentum == 0 && c.d0 == 1e-6 && isinf(c.growth_rate));
    sd_optim_config_default(&c, SD_OPTIM_DADAPT_LION);
    T_CHECK(c.weight_decay == 0 && c.beta1 == 0.9 && c.beta2 == 0.99);
    const char *ad[1] = { "no_prox=True" };
    describe_is(SD_OPTIM_DADAPT_ADAN_IP, ad, 1, "dadaptation.experimental.dadapt_adan_ip.DAdaptAdanIP(no_prox=True)");
    describe_is(SD_OPTIM_DADAPT_ADAGRAD, NULL, 0, "dadaptation.dadapt_adagrad.DAdaptAdaGrad");
    describe_is(SD_OPTIM_DADAPT_ADAN, NULL, 0, "dadaptation.dadapt_adan.DAdaptAdan");
    describe_is(SD_OPTIM_DADAPT_LION, NULL, 0, "dadaptation.dadapt_lion.DAdaptLion");
    /* group LRs: AdaGrad/Adan take the first group's and never fail; Lion's RuntimeError */
    sd_params r;
    sd_param *p1, *p2;
    sd_params_init(&r);
    T_EQ_INT(sd_params_add(&r, NULL, "a", SD_DIMS(4), SD_PARAM_TRAINABLE, &p1), 0);
    T_EQ_INT(sd_params_add(&r, NULL, "b", SD_DIMS(3), SD_PARAM_TRAINABLE, &p2), 0);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    sd_param *g1[1] = { p1 }, *g2[1] = { p2 };
    sd_optim_group_desc gd[2] = { { "unet", 1.0, g1, 1 }, { "textencoder", 0.5, g2, 1 } };
    for (int k = SD_OPTIM_DADAPT_ADAGRAD; k <= SD_OPTIM_DADAPT_LION; k++) {
        sd_optim_config_default(&c, (sd_optim_kind)k);
        sd_optim o;
        int rc = sd_optim_init(&o, &c, gd, 2);
        if (k == SD_OPTIM_DADAPT_LION) {
            T_EQ_INT(rc, SD_EUSAGE);
            T_CHECK(strstr(sd_errmsg(), "Setting different lr values") != NULL);
            continue;
        }
        T_EQ_INT(rc, 0);
        for (int j = 0; j < 4; j++) ((float *)p1->grad.data)[j] = 0.5f;
        for (int j = 0; j < 3; j++) ((float *)p2->grad.data)[j] = -0.25f;
        T_EQ_INT(sd_optim_step(&o, NULL, NULL), 0);
        T_CHECK(o.params[1].step == 1);   /* the second group moves with the first one's d·lr */
        sd_optim_free(&o);
    }
    sd_params_free(&r);
}

static void test_names(void)
{
    sd_optim_kind k = SD_OPTIM_ADAMW;
    T_EQ_INT(sd_optim_resolve("prodigy", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_PRODIGY);
    T_EQ_INT(sd_optim_resolve(NULL, 0, 1, &k), 0);
    T_EQ_INT(k, SD_OPTIM_LION);
    T_EQ_INT(sd_optim_resolve("LION", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_LION);
    T_EQ_INT(sd_optim_resolve("sgdnesterov", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_SGD_NESTEROV);
    T_EQ_INT(sd_optim_resolve("Adafactor", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_ADAFACTOR);
    T_EQ_INT(sd_optim_resolve("DAdaptation", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_DADAPT_ADAM_PREPRINT);
    T_EQ_INT(sd_optim_resolve("DAdaptAdamPreprint", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_DADAPT_ADAM_PREPRINT);
    T_EQ_INT(sd_optim_resolve("dadaptadam", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_DADAPT_ADAM);
    T_EQ_INT(sd_optim_resolve("lion8bit", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_LION8BIT);
    T_EQ_INT(sd_optim_resolve("PAGEDLION8BIT", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_PAGED_LION8BIT);
    T_EQ_INT(sd_optim_resolve("sgdnesterov8bit", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_SGD_NESTEROV8BIT);
    T_EQ_INT(sd_optim_resolve("torch.optim.RMSprop", 0, 0, &k), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "optimizer torch.optim.RMSprop is not implemented yet") == sd_errmsg());
    static const struct { const char *n; sd_optim_kind k; } da[] = {
        { "DAdaptAdaGrad", SD_OPTIM_DADAPT_ADAGRAD }, { "dadaptadan", SD_OPTIM_DADAPT_ADAN },
        { "DAdaptAdanIP", SD_OPTIM_DADAPT_ADAN_IP }, { "DADAPTLION", SD_OPTIM_DADAPT_LION },
    };
    for (size_t i = 0; i < sizeof da / sizeof *da; i++) {
        T_EQ_INT(sd_optim_resolve(da[i].n, 0, 0, &k), 0);
        T_EQ_INT(k, da[i].k);
        T_CHECK(sd_optim_kind_has_d(k));
    }
    T_EQ_INT(sd_optim_resolve("torch.optim.SGD", 0, 0, &k), SD_EUNSUPPORTED);
    T_EQ_INT(sd_optim_resolve("Lion", 0, 1, &k), SD_EUSAGE);
    T_EQ_STR(sd_optim_kind_name(SD_OPTIM_DADAPT_ADAM_PREPRINT), "DAdaptAdamPreprint");
}

static void describe_is(sd_optim_kind k, const char *const *args, int n, const char *want)
{
    sd_optim_config c;
    sd_optim_config_default(&c, k);
    T_EQ_INT(sd_optim_config_parse_args(&c, args, n), 0);
    char d[1024];
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, want);
}

static void test_describe(void)
{
    describe_is(SD_OPTIM_PRODIGY, NULL, 0, "prodigyopt.prodigy.Prodigy");
    static const char *const pa[] = { "decouple=True", "weight_decay=0.01", "d_coef=2", "use_bias_correction=True",
                                      "safeguard_warmup=True", "betas=0.9,0.99" };
    describe_is(SD_OPTIM_PRODIGY, pa, 6, "prodigyopt.prodigy.Prodigy(decouple=True,weight_decay=0.01,d_coef=2,"
                "use_bias_correction=True,safeguard_warmup=True,betas=(0.9, 0.99))");
    describe_is(SD_OPTIM_LION, NULL, 0, "lion_pytorch.lion_pytorch.Lion");
    static const char *const la[] = { "weight_decay=1e-2" };
    describe_is(SD_OPTIM_LION, la, 1, "lion_pytorch.lion_pytorch.Lion(weight_decay=0.01)");
    describe_is(SD_OPTIM_SGD_NESTEROV, NULL, 0, "torch.optim.sgd.SGD(momentum=0.9)");
    describe_is(SD_OPTIM_SGD_NESTEROV, la, 1, "torch.optim.sgd.SGD(weight_decay=0.01,momentum=0.9)");
    static const char *const sa[] = { "momentum=0.5" };
    describe_is(SD_OPTIM_SGD_NESTEROV, sa, 1, "torch.optim.sgd.SGD(momentum=0.5)");
    describe_is(SD_OPTIM_ADAFACTOR, NULL, 0, "transformers.optimization.Adafactor(relative_step=True)");
    static const char *const aa[] = { "scale_parameter=False", "relative_step=False", "warmup_init=False" };
    describe_is(SD_OPTIM_ADAFACTOR, aa, 3, "transformers.optimization.Adafactor(scale_parameter=False,"
                "relative_step=False,warmup_init=False)");
    static const char *const aw[] = { "relative_step=False", "warmup_init=True" };
    describe_is(SD_OPTIM_ADAFACTOR, aw, 2, "transformers.optimization.Adafactor(relative_step=True,warmup_init=True)");
    describe_is(SD_OPTIM_DADAPT_ADAM_PREPRINT, NULL, 0,
                "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint");
    static const char *const da[] = { "decouple=True", "weight_decay=0.01" };
    describe_is(SD_OPTIM_DADAPT_ADAM, da, 2, "dadaptation.dadapt_adam.DAdaptAdam(decouple=True,weight_decay=0.01)");
    /* the kohya Adafactor adjustments */
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_ADAFACTOR);
    T_CHECK(sd_optim_adafactor_schedule(&c));
    T_EQ_INT(sd_optim_config_parse_args(&c, aw, 2), 0);
    T_CHECK(c.relative_step && c.warmup_init);
    T_EQ_INT(sd_optim_config_parse_args(&c, aa, 1), 0);
    T_CHECK(sd_optim_adafactor_schedule(&c));
    sd_optim_config_default(&c, SD_OPTIM_ADAFACTOR);
    T_EQ_INT(sd_optim_config_parse_args(&c, aa, 2), 0);
    T_CHECK(!sd_optim_adafactor_schedule(&c));
}

static void args_fail(sd_optim_kind k, const char *item, int code, const char *needle)
{
    sd_optim_config c;
    sd_optim_config_default(&c, k);
    const char *a[1] = { item };
    int rc = sd_optim_config_parse_args(&c, a, 1);
    T_CHECKF(rc == code, "%s %s: rc %d, want %d", sd_optim_kind_name(k), item, rc, code);
    T_CHECKF(!needle || strstr(sd_errmsg(), needle), "%s: '%s' lacks '%s'", item, sd_errmsg(), needle);
    T_CHECK(!strchr(sd_errmsg(), '\n'));
}

static void test_args_errors(void)
{
    args_fail(SD_OPTIM_PRODIGY, "momentum=0.9", SD_EUSAGE, "Prodigy has no argument 'momentum' (it takes betas, beta3");
    args_fail(SD_OPTIM_LION, "eps=1e-8", SD_EUSAGE, "Lion has no argument 'eps'");
    args_fail(SD_OPTIM_SGD_NESTEROV, "nesterov=True", SD_EUSAGE, "got multiple values for keyword argument 'nesterov'");
    args_fail(SD_OPTIM_ADAFACTOR, "lr=1e-3", SD_EUSAGE, "got multiple values for keyword argument 'lr'");
    args_fail(SD_OPTIM_ADAFACTOR, "eps=1e-30", SD_EUSAGE, "eps must be two numbers");
    args_fail(SD_OPTIM_ADAFACTOR, "betas=0.9,0.99", SD_EUSAGE, "Adafactor has no argument 'betas'");
    args_fail(SD_OPTIM_PRODIGY, "fsdp_in_use=True", SD_EUNSUPPORTED, "fsdp_in_use=True");
    args_fail(SD_OPTIM_PRODIGY, "slice_p=0", SD_EUSAGE, "slice_p");
    args_fail(SD_OPTIM_PRODIGY, "slice_p=1.5", SD_EUSAGE, "integer");
    args_fail(SD_OPTIM_PRODIGY, "d0=0", SD_EUSAGE, "Invalid d0 value");
    args_fail(SD_OPTIM_PRODIGY, "eps=0", SD_EUSAGE, "Invalid epsilon value");
    args_fail(SD_OPTIM_PRODIGY, "betas=(0.9, 1.0)", SD_EUSAGE, "invalid beta");
    args_fail(SD_OPTIM_DADAPT_ADAM_PREPRINT, "use_bias_correction=True", SD_EUSAGE, "DAdaptAdamPreprint has no argument");
    args_fail(SD_OPTIM_SGD_NESTEROV, "maximize=True", SD_EUNSUPPORTED, NULL);
    args_fail(SD_OPTIM_SGD_NESTEROV, "momentum=-1", SD_EUSAGE, "Invalid momentum value");
    args_fail(SD_OPTIM_DADAPT_ADAM, "decouple", SD_EUSAGE, NULL);
    args_fail(SD_OPTIM_DADAPT_ADAM, "growth_rate=fast", SD_EUSAGE, NULL);
    /* accepted switches */
    static const char *const ok1[] = { "use_triton=True" }, *const ok2[] = { "log_every=10", "fsdp_in_use=False" };
    static const char *const ok3[] = { "beta1=None", "clip_threshold=1" };
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_LION);
    T_EQ_INT(sd_optim_config_parse_args(&c, ok1, 1), 0);
    sd_optim_config_default(&c, SD_OPTIM_DADAPT_ADAM);
    T_EQ_INT(sd_optim_config_parse_args(&c, ok2, 2), 0);
    sd_optim_config_default(&c, SD_OPTIM_ADAFACTOR);
    T_EQ_INT(sd_optim_config_parse_args(&c, ok3, 2), 0);
    T_CHECK(!c.has_beta1);
    /* the constructors' checks on lr */
    sd_optim_config_default(&c, SD_OPTIM_PRODIGY);
    c.lr = 0;
    T_EQ_INT(sd_optim_config_check(&c), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Invalid learning rate: 0.0") != NULL);
    c.lr = 1;
    T_EQ_INT(sd_optim_config_check(&c), 0);
    sd_optim_config_default(&c, SD_OPTIM_SGD_NESTEROV);
    static const char *const damp[] = { "dampening=0.1" };
    T_EQ_INT(sd_optim_config_parse_args(&c, damp, 1), 0);
    T_EQ_INT(sd_optim_config_check(&c), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Nesterov momentum requires a momentum and zero dampening") != NULL);
    sd_optim_config_default(&c, SD_OPTIM_ADAFACTOR);
    c.lr = 1e-4;
    T_EQ_INT(sd_optim_config_check(&c), SD_EUSAGE);   /* lr with relative_step */
    c.lr = NAN;
    T_EQ_INT(sd_optim_config_check(&c), 0);
}

static void test_warnings(void)
{
    char b[1024];
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_PRODIGY);
    sd_optim_group_desc l1[2] = { { "textencoder", 1e-4, NULL, 0 }, { "unet", 1e-4, NULL, 0 } };
    sd_optim_reference_warnings(&c, 1e-4, l1, 2, "constant", 1.0, b, sizeof b);
    T_CHECK(strstr(b, "learning rate is too low. If using D-Adaptation or Prodigy, set learning rate around 1.0: "
                      "lr=0.0001\nrecommend option: lr=1.0") == b);
    T_CHECK(!strstr(b, "multiple"));
    sd_optim_group_desc l2[2] = { { "textencoder", 1.0, NULL, 0 }, { "unet", 0.5, NULL, 0 } };
    sd_optim_reference_warnings(&c, 1.0, l2, 2, "constant", 1.0, b, sizeof b);
    T_CHECK(strstr(b, "only the first one will take effect: lr=1.0") != NULL);
    sd_optim_config_default(&c, SD_OPTIM_ADAFACTOR);
    sd_optim_reference_warnings(&c, 1e-3, l1, 2, "constant", 1.0, b, sizeof b);
    T_EQ_STR(b, "learning rate is used as initial_lr\nunet_lr and text_encoder_lr are ignored");
    c.relative_step = 0;
    c.clip_threshold = 0.5;
    sd_optim_reference_warnings(&c, 1e-3, l1, 2, "constant_with_warmup", 0.0, b, sizeof b);
    T_EQ_STR(b, "clip_threshold=1.0 will be good");
    sd_optim_config_default(&c, SD_OPTIM_LION);
    sd_optim_reference_warnings(&c, 1e-3, l1, 2, "constant", 1.0, b, sizeof b);
    T_EQ_STR(b, "");
}

/* ---- state layouts, groups, skip, threads ---------------------------------------------------------- */

static void test_layouts(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *a, *b;
    T_EQ_INT(sd_params_add(&r, NULL, "a", SD_DIMS(4, 3, 2, 5), SD_PARAM_TRAINABLE, &a), 0);
    T_EQ_INT(sd_params_add(&r, NULL, "b", SD_DIMS(7), SD_PARAM_TRAINABLE, &b), 0);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    sd_param *ps[2] = { a, b };
    sd_optim_group_desc gd = { "unet", 1.0, ps, 2 };
    sd_optim_config c;
    sd_optim o;
    sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
    sd_optim_config_default(&c, SD_OPTIM_ADAFACTOR);
    T_EQ_INT(sd_optim_init(&o, &c, &gd, 1), 0);
    T_EQ_INT(sd_optim_numel(&o), 127);
    T_EQ_INT(sd_optim_param_bufs(&o, 0, bi), 2);
    T_EQ_STR(bi[0].name, "exp_avg_sq_row");
    T_EQ_INT(bi[0].ndim, 3);
    T_CHECK(bi[0].shape[0] == 4 && bi[0].shape[1] == 3 && bi[0].shape[2] == 2 && bi[0].n == 24);
    T_EQ_STR(bi[1].name, "exp_avg_sq_col");
    T_CHECK(bi[1].shape[0] == 4 && bi[1].shape[1] == 3 && bi[1].shape[2] == 5 && bi[1].n == 60);
    T_EQ_INT(sd_optim_param_bufs(&o, 1, bi), 1);
    T_EQ_STR(bi[0].name, "exp_avg_sq");
    T_EQ_INT(o.state_floats, 24 + 60 + 7);
    sd_optim_free(&o);
    static const char *const pa[] = { "slice_p=11", "betas=0,0.99" };
    sd_optim_config_default(&c, SD_OPTIM_PRODIGY);
    T_EQ_INT(sd_optim_config_parse_args(&c, pa, 2), 0);
    T_EQ_INT(sd_optim_init(&o, &c, &gd, 1), 0);
    T_EQ_INT(sd_optim_param_bufs(&o, 0, bi), 3);
    T_EQ_STR(bi[0].name, "exp_avg_sq");
    T_EQ_STR(bi[1].name, "s");
    T_CHECK(bi[1].ndim == 1 && bi[1].n == 11);   /* ceil(120 / 11) */
    T_EQ_STR(bi[2].name, "p0");
    T_CHECK(o.params[0].m == NULL && o.params[0].v == bi[0].data);
    const char *names[6];
    double *vals[6];
    T_EQ_INT(sd_optim_scalars(&o, names, vals), 4);
    T_EQ_STR(names[0], "d");
    T_CHECK(*vals[0] == 1e-6);
    T_EQ_STR(names[3], "k");
    sd_optim_free(&o);
    /* different group LRs: the reference's RuntimeError, here at init */
    sd_param *p1[1] = { a }, *p2[1] = { b };
    sd_optim_group_desc two[2] = { { "textencoder", 0.5, p1, 1 }, { "unet", 1.0, p2, 1 } };
    sd_optim_config_default(&c, SD_OPTIM_DADAPT_ADAM);
    T_EQ_INT(sd_optim_init(&o, &c, two, 2), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "only supported for values of 0") != NULL);
    /* and at a step with scheduled LRs that differ */
    two[0].lr = 1.0;
    T_EQ_INT(sd_optim_init(&o, &c, two, 2), 0);
    double lr[2] = { 0.5, 1.0 };
    T_EQ_INT(sd_optim_step(&o, lr, NULL), SD_EINVAL);
    /* zero gradients everywhere at the first step: no progress, nothing moves, k stays */
    float a0 = ((float *)a->value.data)[0] = 0.25f;
    T_EQ_INT(sd_optim_step(&o, NULL, NULL), 0);
    T_CHECK(((float *)a->value.data)[0] == a0 && o.ds.k == 0 && o.params[0].step == 0 && o.ds.d == 1e-6);
    sd_optim_free(&o);
    sd_params_free(&r);
}

/* ---- resume: save after some steps, load into a fresh optimizer, continue: the same bytes ---------- */

typedef struct srig {
    sd_params reg;
    sd_param *p[2];
    sd_optim opt;
} srig;

static int srig_make(srig *r, sd_optim_kind kind, const char *const *args, int nargs)
{
    sd_params_init(&r->reg);
    int rc = sd_params_add(&r->reg, "lora_unet_a", "lora_down.weight", SD_DIMS(4, 6), SD_PARAM_TRAINABLE, &r->p[0]);
    if (!rc) rc = sd_params_add(&r->reg, "lora_te_b", "alpha_like", SD_DIMS(5), SD_PARAM_TRAINABLE, &r->p[1]);
    if (!rc) rc = sd_params_alloc(&r->reg, SD_DEV_CPU);
    if (rc) return rc;
    for (int i = 0; i < 2; i++) {
        float *v = r->p[i]->value.data;
        for (int64_t j = 0; j < sd_tensor_numel(&r->p[i]->value); j++) v[j] = sinf((float)(j + 10 * i));
    }
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, kind);
    rc = sd_optim_config_parse_args(&cfg, args, nargs);
    if (rc) return rc;
    if (kind == SD_OPTIM_ADAFACTOR && !cfg.relative_step) cfg.lr = 1e-2;
    double lr = kind == SD_OPTIM_LION || kind == SD_OPTIM_LION8BIT || kind == SD_OPTIM_PAGED_LION8BIT ? 1e-3
              : kind == SD_OPTIM_SGD_NESTEROV || kind == SD_OPTIM_ADAMW || kind == SD_OPTIM_ADAMW8BIT ||
                kind == SD_OPTIM_SGD_NESTEROV8BIT ? 1e-2 : 1.0;
    sd_param *g0[1] = { r->p[1] }, *g1[1] = { r->p[0] };
    sd_optim_group_desc gd[2] = { { "textencoder", lr, g0, 1 }, { "unet", lr, g1, 1 } };
    return sd_optim_init(&r->opt, &cfg, gd, 2);
}

static void srig_train(srig *r, int from, int to)
{
    for (int s = from; s < to; s++) {
        for (int i = 0; i < 2; i++) {
            float *g = r->p[i]->grad.data;
            for (int64_t j = 0; j < sd_tensor_numel(&r->p[i]->value); j++) g[j] = cosf((float)(j * 3 + s + i));
        }
        /* a warm-up step first: Prodigy/D-Adaptation make no progress (DAdaptSGD: its ZeroDivisionError) */
        double f = s == 0 && r->opt.cfg.kind != SD_OPTIM_DADAPT_SGD ? 0.0 : 1.0;
        double lr[2] = { r->opt.groups[0].lr * f, r->opt.groups[1].lr * f };
        uint8_t skip[2] = { 0, (uint8_t)(s == 2) };
        T_EQ_INT(sd_optim_step(&r->opt, lr, skip), 0);
        if (s == 0) {   /* like --scale_weight_norms: the weights change outside the optimizer */
            float *v = r->p[0]->value.data;
            v[1] *= 0.5f;
        }
    }
}

static void test_state_resume(void)
{
    static const char *const pargs[] = { "slice_p=2", "weight_decay=0.01", "use_bias_correction=True" };
    static const char *const aargs[] = { "beta1=0.9", "weight_decay=0.01" };
    static const char *const fargs[] = { "relative_step=False" };
    static const char *const bargs[] = { "min_8bit_size=16", "betas=(0.9, 0.99)" };
    static const char *const largs[] = { "min_8bit_size=16", "weight_decay=0.1" };
    static const char *const gargs[] = { "min_8bit_size=16", "weight_decay=0.01", "momentum=0.8" };
    static const char *const agargs[] = { "momentum=0.9", "weight_decay=0.01" };
    static const char *const anargs[] = { "no_prox=True", "growth_rate=1.1" };
    static const char *const lnargs[] = { "weight_decay=0.1" };
    static const struct { sd_optim_kind k; const char *const *a; int n; } runs[] = {
        { SD_OPTIM_LION, NULL, 0 }, { SD_OPTIM_SGD_NESTEROV, NULL, 0 }, { SD_OPTIM_ADAFACTOR, aargs, 2 },
        { SD_OPTIM_ADAFACTOR, fargs, 1 }, { SD_OPTIM_PRODIGY, NULL, 0 }, { SD_OPTIM_PRODIGY, pargs, 3 },
        { SD_OPTIM_DADAPT_ADAM, NULL, 0 }, { SD_OPTIM_DADAPT_ADAM_PREPRINT, NULL, 0 },
        { SD_OPTIM_ADAMW8BIT, bargs, 2 }, { SD_OPTIM_ADAMW8BIT, NULL, 0 },
        { SD_OPTIM_LION8BIT, largs, 2 }, { SD_OPTIM_PAGED_LION8BIT, NULL, 0 }, { SD_OPTIM_SGD_NESTEROV8BIT, gargs, 3 },
        { SD_OPTIM_SGD_NESTEROV8BIT, NULL, 0 }, { SD_OPTIM_DADAPT_SGD, NULL, 0 },
        { SD_OPTIM_DADAPT_ADAGRAD, agargs, 2 }, { SD_OPTIM_DADAPT_ADAN, NULL, 0 }, { SD_OPTIM_DADAPT_ADAN_IP, NULL, 0 },
        { SD_OPTIM_DADAPT_ADAN_IP, anargs, 2 }, { SD_OPTIM_DADAPT_LION, lnargs, 1 },
    };
    const char *dir = t_path("optim_kinds_state");
    for (size_t c = 0; c < sizeof runs / sizeof *runs; c++) {
        srig a, b;
        T_EQ_INT(srig_make(&a, runs[c].k, runs[c].a, runs[c].n), 0);
        T_EQ_INT(srig_make(&b, runs[c].k, runs[c].a, runs[c].n), 0);
        srig_train(&a, 0, 1);   /* after the warm-up step: Prodigy's p0 is taken, its step still 0 */
        sd_train_state_in in = { { 1, 0, 1, 1, 7 }, &a.reg, &a.opt, "{}", NULL, 0, 0.0, NULL, NULL };
        T_EQ_INT(sd_train_state_save(dir, &in), 0);
        srig_train(&a, 1, 6);
        sd_train_state_out out;
        T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &out), 0);
        sd_train_state_out_free(&out);
        srig_train(&b, 1, 6);
        const char *kn = sd_optim_kind_name(runs[c].k);
        for (int i = 0; i < 2; i++)
            T_CHECKF(!memcmp(a.p[i]->value.data, b.p[i]->value.data, (size_t)sd_tensor_numel(&a.p[i]->value) * 4),
                     "%s param %d", kn, i);
        for (size_t i = 0; a.opt.st8 && i < a.opt.nparams; i++) {
            sd_bnb_state_array x[SD_BNB_MAX_ARRAYS], y[SD_BNB_MAX_ARRAYS];
            int nx = sd_adamw8bit_arrays(&a.opt.st8[i], x), ny = sd_adamw8bit_arrays(&b.opt.st8[i], y);
            int ns = a.opt.st8[i].nstates;
            T_CHECK(nx == ny && nx == (a.opt.st8[i].mode == SD_BNB_STATE_U8 ? 2 * ns : ns));
            if (runs[c].n && i == 1) T_EQ_INT(a.opt.st8[i].mode, SD_BNB_STATE_U8);   /* 24 >= min_8bit_size 16 */
            for (int j = 0; j < nx && nx == ny; j++)
                T_CHECKF(x[j].numel == y[j].numel && !memcmp(x[j].data, y[j].data, (size_t)x[j].numel *
                         (x[j].dtype == SD_ST_U8 ? 1 : 4)), "AdamW8bit %s", x[j].name);
        }
        T_CHECKF(a.opt.state_floats == b.opt.state_floats &&
                 !memcmp(a.opt.state, b.opt.state, a.opt.state_floats * sizeof(float)), "%s state", kn);
        T_CHECKF(!memcmp(&a.opt.ds, &b.opt.ds, sizeof a.opt.ds), "%s d %.9g vs %.9g", kn, a.opt.ds.d, b.opt.ds.d);
        T_CHECK(a.opt.params[1].step == b.opt.params[1].step && b.opt.params[1].initialized);
        /* another optimizer refuses the state with one clear line */
        srig x;
        sd_optim_kind other = runs[c].k == SD_OPTIM_LION ? SD_OPTIM_ADAMW : SD_OPTIM_LION;
        T_EQ_INT(srig_make(&x, other, NULL, 0), 0);
        T_EQ_INT(sd_train_state_load(dir, &x.reg, &x.opt, &out), SD_EINVAL);
        char want[160];
        snprintf(want, sizeof want, "its optimizer state is %s's, this run uses %s (--optimizer_type)", kn,
                 sd_optim_kind_name(other));
        T_CHECKF(strstr(sd_errmsg(), want) != NULL, "%s", sd_errmsg());
        T_CHECK(!strchr(sd_errmsg(), '\n'));
        sd_optim_free(&x.opt);
        sd_params_free(&x.reg);
        for (srig *r = &a; r; r = r == &a ? &b : NULL) {
            sd_optim_free(&r->opt);
            sd_params_free(&r->reg);
        }
    }
}

/* AdamW8bit through sd_optim: the same bytes as train/optim8bit's step called directly */
static void test_adamw8bit_dispatch(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *a, *b;
    T_EQ_INT(sd_params_add(&r, NULL, "a", SD_DIMS(80, 64), SD_PARAM_TRAINABLE, &a), 0);
    T_EQ_INT(sd_params_add(&r, NULL, "b", SD_DIMS(7), SD_PARAM_TRAINABLE, &b), 0);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
    sd_param *ps[2] = { a, b };
    float *ref[2];
    sd_adamw8bit_state st[2];
    for (int i = 0; i < 2; i++) {
        size_t n = (size_t)sd_tensor_numel(&ps[i]->value);
        float *v = ps[i]->value.data;
        for (size_t j = 0; j < n; j++) v[j] = sinf((float)j * 0.3f + (float)i);
        ref[i] = malloc(n * 4);
        memcpy(ref[i], v, n * 4);
        T_EQ_INT(sd_adamw8bit_state_init(&st[i], (int64_t)n, 0), 0);
    }
    T_EQ_INT(st[0].mode, SD_BNB_STATE_U8);
    T_EQ_INT(st[1].mode, SD_BNB_STATE_F32);
    sd_param *g0[1] = { b }, *g1[1] = { a };
    sd_optim_group_desc gd[2] = { { "textencoder", 5e-4, g0, 1 }, { "unet", 1e-3, g1, 1 } };
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_ADAMW8BIT);
    static const char *const args[] = { "weight_decay=0.1", "betas=0.9,0.99", "eps=1e-6" };
    T_EQ_INT(sd_optim_config_parse_args(&c, args, 3), 0);
    c.lr = 1e-3;
    T_EQ_INT(sd_optim_config_check(&c), 0);
    char d[256];
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1,betas=(0.9, 0.99),eps=1e-06)");
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &c, gd, 2), 0);
    int64_t steps[2] = { 0, 0 };
    for (int s = 0; s < 4; s++) {
        uint8_t skip[2] = { 0, (uint8_t)(s == 1) };   /* o.params: b (textencoder), then a */
        for (int i = 0; i < 2; i++) {
            float *g = ps[i]->grad.data;
            for (int64_t j = 0; j < sd_tensor_numel(&ps[i]->value); j++) g[j] = cosf((float)j * 0.7f + (float)(s + i));
        }
        double lr[2] = { 5e-4 * (s + 1) / 4, 1e-3 * (s + 1) / 4 };
        T_EQ_INT(sd_optim_step(&o, lr, skip), 0);
        for (int i = 0; i < 2; i++) {
            int oi = i == 0 ? 1 : 0;   /* a is the second optimizer parameter */
            if (skip[oi]) continue;
            steps[i]++;
            T_EQ_INT(sd_adamw8bit_step(&st[i], ref[i], ps[i]->grad.data, lr[i == 0 ? 1 : 0], 0.9, 0.99, 1e-6, 0.1,
                                       steps[i]), 0);
        }
    }
    for (int i = 0; i < 2; i++) {
        T_CHECKF(!memcmp(ref[i], ps[i]->value.data, (size_t)sd_tensor_numel(&ps[i]->value) * 4), "param %d", i);
        sd_adamw8bit_state_free(&st[i]);
        free(ref[i]);
    }
    T_EQ_INT(o.params[0].step, 4);
    T_EQ_INT(o.params[1].step, 3);
    sd_optim_free(&o);
    sd_params_free(&r);
    /* bitsandbytes' constructor messages */
    args_fail(SD_OPTIM_ADAMW8BIT, "momentum=0.9", SD_EUSAGE, "AdamW8bit.__init__() got an unexpected keyword argument 'momentum'");
    args_fail(SD_OPTIM_ADAMW8BIT, "lr=1", SD_EUSAGE, "got multiple values for keyword argument 'lr'");
    sd_optim_config_default(&c, SD_OPTIM_ADAMW8BIT);
    static const char *const pc[] = { "percentile_clipping=95" };
    T_EQ_INT(sd_optim_config_parse_args(&c, pc, 1), 0);
    c.lr = 1e-4;
    T_EQ_INT(sd_optim_config_check(&c), SD_EUNSUPPORTED);
    sd_optim_kind k;
    T_EQ_INT(sd_optim_resolve(NULL, 1, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_ADAMW8BIT);
    T_EQ_INT(sd_optim_resolve("adamw8bit", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_ADAMW8BIT);
}

/* bitsandbytes' Paged classes: PagedAdamW8bit is AdamW8bit's arithmetic; PagedAdamW and
 * PagedAdamW32bit keep 32-bit states on every tensor (optim_bits 32), even above min_8bit_size. */
static void test_paged_bnb(void)
{
    static const struct { sd_optim_kind k; const char *name, *cls; int64_t min8; } v[] = {
        { SD_OPTIM_PAGED_ADAMW8BIT, "pagedadamw8bit", "bitsandbytes.optim.adamw.PagedAdamW8bit", 0 },
        { SD_OPTIM_PAGED_ADAMW, "PagedAdamW", "bitsandbytes.optim.adamw.PagedAdamW", INT64_MAX },
        { SD_OPTIM_PAGED_ADAMW32BIT, "PagedAdamW32bit", "bitsandbytes.optim.adamw.PagedAdamW32bit", INT64_MAX },
    };
    for (size_t c = 0; c < sizeof v / sizeof *v; c++) {
        sd_optim_kind k;
        T_EQ_INT(sd_optim_resolve(v[c].name, 0, 0, &k), 0);
        T_EQ_INT(k, v[c].k);
        sd_optim_config cfg;
        sd_optim_config_default(&cfg, k);
        T_EQ_INT(sd_optim_config_check(&cfg), 0);
        char d[256];
        T_EQ_INT(sd_optim_describe(&cfg, d, sizeof d), 0);
        T_EQ_STR(d, v[c].cls);
        args_fail(k, "is_paged=True", SD_EUSAGE, "got an unexpected keyword argument 'is_paged'");
        sd_params r;
        sd_param *a;
        sd_params_init(&r);
        T_EQ_INT(sd_params_add(&r, NULL, "a", 2, (int64_t[]){ 80, 70 }, SD_PARAM_TRAINABLE, &a), 0);   /* 5600 ≥ 4096 */
        T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
        int64_t n = sd_tensor_numel(&a->value);
        float *p = a->value.data, *g = a->grad.data, *ref = malloc((size_t)n * 4);
        for (int64_t j = 0; j < n; j++) p[j] = ref[j] = sinf((float)j * 0.3f);
        sd_adamw8bit_state st;
        T_EQ_INT(sd_adamw8bit_state_init(&st, n, v[c].min8), 0);
        T_EQ_INT(st.mode, v[c].min8 == INT64_MAX ? SD_BNB_STATE_F32 : SD_BNB_STATE_U8);
        sd_param *g0[1] = { a };
        sd_optim_group_desc gd[1] = { { "unet", 1e-3, g0, 1 } };
        sd_optim o;
        T_EQ_INT(sd_optim_init(&o, &cfg, gd, 1), 0);
        for (int s = 1; s <= 3; s++) {
            for (int64_t j = 0; j < n; j++) g[j] = cosf((float)j * 0.7f + (float)s);
            double lr = 1e-3 * s;
            T_EQ_INT(sd_optim_step(&o, &lr, NULL), 0);
            T_EQ_INT(sd_adamw8bit_step(&st, ref, g, lr, 0.9, 0.999, 1e-8, 1e-2, s), 0);
        }
        T_CHECKF(!memcmp(ref, p, (size_t)n * 4), "%s", v[c].name);
        sd_adamw8bit_state_free(&st);
        free(ref);
        sd_optim_free(&o);
        sd_params_free(&r);
    }
}

/* Lion8bit, PagedLion8bit, SGDNesterov8bit through sd_optim: the same bytes as train/optim8bit's
 * 1-state step called directly (8-bit and 32-bit tensors, skip, per-group LRs); kohya's
 * ss_optimizer strings, warnings and bitsandbytes' constructor messages. */
static void test_bnb1_dispatch(void)
{
    static const struct { sd_optim_kind k; const char *args[3]; int nargs; const char *desc; } v[] = {
        { SD_OPTIM_LION8BIT, { "weight_decay=0.1", "betas=0.95,0.98" }, 2,
          "bitsandbytes.optim.lion.Lion8bit(weight_decay=0.1,betas=(0.95, 0.98))" },
        { SD_OPTIM_PAGED_LION8BIT, { "min_8bit_size=100" }, 1, "bitsandbytes.optim.lion.PagedLion8bit(min_8bit_size=100)" },
        { SD_OPTIM_SGD_NESTEROV8BIT, { "weight_decay=0.01" }, 1,
          "bitsandbytes.optim.sgd.SGD8bit(weight_decay=0.01,momentum=0.9)" },
        { SD_OPTIM_SGD_NESTEROV8BIT, { "momentum=0.5", "dampening=0.3" }, 2,
          "bitsandbytes.optim.sgd.SGD8bit(momentum=0.5,dampening=0.3)" },
    };
    for (size_t c = 0; c < sizeof v / sizeof *v; c++) {
        sd_optim_kind k = v[c].k;
        int sgd = k == SD_OPTIM_SGD_NESTEROV8BIT;
        sd_params r;
        sd_params_init(&r);
        sd_param *a, *b;
        T_EQ_INT(sd_params_add(&r, NULL, "a", SD_DIMS(80, 64), SD_PARAM_TRAINABLE, &a), 0);
        T_EQ_INT(sd_params_add(&r, NULL, "b", SD_DIMS(7, 30), SD_PARAM_TRAINABLE, &b), 0);
        T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), 0);
        sd_param *ps[2] = { a, b };
        sd_optim_config cfg;
        sd_optim_config_default(&cfg, k);
        T_EQ_INT(sd_optim_config_parse_args(&cfg, v[c].args, v[c].nargs), 0);
        cfg.lr = 1e-3;
        T_EQ_INT(sd_optim_config_check(&cfg), 0);
        char d[256];
        T_EQ_INT(sd_optim_describe(&cfg, d, sizeof d), 0);
        T_EQ_STR(d, v[c].desc);
        char warn[512];
        sd_optim_reference_warnings(&cfg, 1e-3, NULL, 0, "constant", 1.0, warn, sizeof warn);
        T_EQ_STR(warn, sgd && v[c].nargs == 1 ? "8-bit SGD with Nesterov must be with momentum, set momentum to 0.9" : "");
        float *ref[2];
        sd_adamw8bit_state st[2];
        for (int i = 0; i < 2; i++) {
            size_t n = (size_t)sd_tensor_numel(&ps[i]->value);
            float *pv = ps[i]->value.data;
            for (size_t j = 0; j < n; j++) pv[j] = sinf((float)j * 0.3f + (float)i);
            ref[i] = malloc(n * 4);
            memcpy(ref[i], pv, n * 4);
            T_EQ_INT(sd_bnb1_state_init(&st[i], (int64_t)n, cfg.b8.min_8bit_size), 0);
        }
        T_EQ_INT(st[0].mode, SD_BNB_STATE_U8);
        T_EQ_INT(st[1].mode, k == SD_OPTIM_PAGED_LION8BIT ? SD_BNB_STATE_U8 : SD_BNB_STATE_F32);
        sd_param *g0[1] = { b }, *g1[1] = { a };
        sd_optim_group_desc gd[2] = { { "textencoder", 5e-4, g0, 1 }, { "unet", 1e-3, g1, 1 } };
        sd_optim o;
        T_EQ_INT(sd_optim_init(&o, &cfg, gd, 2), 0);
        int64_t steps[2] = { 0, 0 };
        for (int s = 0; s < 4; s++) {
            uint8_t skip[2] = { 0, (uint8_t)(s == 1) };   /* o.params: b (textencoder), then a */
            for (int i = 0; i < 2; i++) {
                float *g = ps[i]->grad.data;
                for (int64_t j = 0; j < sd_tensor_numel(&ps[i]->value); j++) g[j] = cosf((float)j * 0.7f + (float)(s + i));
            }
            double lr[2] = { 5e-4 * (s + 1) / 4, 1e-3 * (s + 1) / 4 };
            T_EQ_INT(sd_optim_step(&o, lr, skip), 0);
            for (int i = 0; i < 2; i++) {
                int oi = i == 0 ? 1 : 0;
                if (skip[oi]) continue;
                steps[i]++;
                T_EQ_INT(sd_bnb1_step(&st[i], sgd ? SD_BNB1_MOMENTUM : SD_BNB1_LION, ref[i], ps[i]->grad.data,
                                      lr[oi], cfg.b8.beta1, cfg.b8.beta2, cfg.weight_decay, steps[i], 0), 0);
            }
        }
        for (int i = 0; i < 2; i++) {
            T_CHECKF(!memcmp(ref[i], ps[i]->value.data, (size_t)sd_tensor_numel(&ps[i]->value) * 4), "%s param %d",
                     sd_optim_kind_name(k), i);
            T_CHECK(!memcmp(st[i].mem, o.st8[o.params[0].p == ps[i] ? 0 : 1].mem, sd_adamw8bit_state_bytes(&st[i])));
            sd_adamw8bit_state_free(&st[i]);
            free(ref[i]);
        }
        T_EQ_INT(o.params[0].step, 4);
        T_EQ_INT(o.params[1].step, 3);
        sd_optim_free(&o);
        sd_params_free(&r);
    }
    args_fail(SD_OPTIM_LION8BIT, "eps=1e-8", SD_EUSAGE, "Lion8bit.__init__() got an unexpected keyword argument 'eps'");
    args_fail(SD_OPTIM_PAGED_LION8BIT, "is_paged=True", SD_EUSAGE,
              "PagedLion8bit.__init__() got an unexpected keyword argument 'is_paged'");
    args_fail(SD_OPTIM_SGD_NESTEROV8BIT, "nesterov=True", SD_EUSAGE, "got multiple values for keyword argument 'nesterov'");
    args_fail(SD_OPTIM_SGD_NESTEROV8BIT, "lr=1", SD_EUSAGE, "got multiple values for keyword argument 'lr'");
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_SGD_NESTEROV8BIT);
    static const char *const m0[] = { "momentum=0" };
    T_EQ_INT(sd_optim_config_parse_args(&cfg, m0, 1), 0);
    T_EQ_INT(sd_optim_config_check(&cfg), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "SGD without momentum is not supported!") != NULL);
}

static void test_threads_identical(void)
{
    sd_params r[2];
    sd_param *a[2];
    const int64_t big[2] = { 601, 503 };   /* 302303 > 2^16: the elementwise loops split */
    int saved = omp_get_max_threads();
    for (int kind = SD_OPTIM_LION; kind < SD_OPTIM_NKINDS; kind++) {
        for (int t = 0; t < 2; t++) {
            sd_params_init(&r[t]);
            T_EQ_INT(sd_params_add(&r[t], NULL, "a", 2, big,
                                   SD_PARAM_TRAINABLE, &a[t]), 0);
            T_EQ_INT(sd_params_alloc(&r[t], SD_DEV_CPU), 0);
            float *p = a[t]->value.data;
            for (size_t i = 0; i < 302303; i++) p[i] = sinf((float)i);
            sd_optim_config c;
            sd_optim_config_default(&c, (sd_optim_kind)kind);
            sd_optim o;
            sd_param *ps[1] = { a[t] };
            sd_optim_group_desc gd = { "unet", kind == SD_OPTIM_LION || kind == SD_OPTIM_SGD_NESTEROV ? 1e-3 : 1.0, ps, 1 };
            T_EQ_INT(sd_optim_init(&o, &c, &gd, 1), 0);
            omp_set_num_threads(t ? 3 : 1);
            for (int s = 1; s <= 3; s++) {
                float *g = a[t]->grad.data;
                for (size_t i = 0; i < 302303; i++) g[i] = cosf((float)i * 0.7f + (float)s);
                T_EQ_INT(sd_optim_step(&o, NULL, NULL), 0);
            }
            sd_optim_free(&o);
        }
        omp_set_num_threads(saved);
        T_CHECKF(!memcmp(a[0]->value.data, a[1]->value.data, 302303 * 4), "%s", sd_optim_kind_name(kind));
        sd_params_free(&r[0]);
        sd_params_free(&r[1]);
    }
}

int main(void)
{
    T_RUN(test_golden_lion);
    T_RUN(test_golden_sgd_nesterov);
    T_RUN(test_golden_adafactor);
    T_RUN(test_golden_prodigy);
    T_RUN(test_golden_dadapt_adam);
    T_RUN(test_golden_dadapt_preprint);
    T_RUN(test_golden_dadapt_sgd);
    T_RUN(test_golden_dadapt_more);
    T_RUN(test_names);
    T_RUN(test_describe);
    T_RUN(test_args_errors);
    T_RUN(test_warnings);
    T_RUN(test_layouts);
    T_RUN(test_bnb1_dispatch);
    T_RUN(test_state_resume);
    T_RUN(test_adamw8bit_dispatch);
    T_RUN(test_paged_bnb);
    T_RUN(test_threads_identical);
    T_DONE();
}
