/* lib/train/optim: AdamWScheduleFree, RAdamScheduleFree and SGDScheduleFree against schedulefree
 * 1.4's own step()/eval()/train() run by torch on the CPU (tests/golden/gen/make_optim_sf_golden.py
 * -> tests/data/optim_sf/sf.safetensors): three tensors in two groups with their own LRs, a
 * parameter without a gradient at step 2, weight decay, warm-up, r / weight_lr_power, RAdam's SGD
 * phase; after every step the eval-mode weights x (kohya's eval() ... train() around sampling and
 * saving), at the end y, z and exp_avg_sq. Also: the state saved in eval mode and resumed gives the
 * same bytes, the mode check of step(), thread-count independence, names, ss_optimizer and the
 * constructors' errors. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/optim.h"
#include "train/state.h"

#define GOLDEN "tests/data/optim_sf/sf.safetensors"

typedef struct sfcase {
    const char *tag;
    sd_optim_kind kind;
    const char *args[4];
    int nargs;
    double lrs[2];
    int steps;
} sfcase;

static const sfcase CASES[] = {
    { "adamw", SD_OPTIM_ADAMW_SF, { "weight_decay=0.01", "warmup_steps=3" }, 2, { 1e-2, 5e-3 }, 6 },
    { "adamw_r", SD_OPTIM_ADAMW_SF, { "r=0.5", "weight_lr_power=1.0", "betas=(0.8, 0.99)", "eps=1e-6" }, 4,
      { 2e-2, 2e-2 }, 4 },
    { "radam", SD_OPTIM_RADAM_SF, { "weight_decay=0.01" }, 1, { 1e-2, 5e-3 }, 8 },
    { "radam_loud", SD_OPTIM_RADAM_SF, { "silent_sgd_phase=False", "betas=(0.9, 0.99)" }, 2, { 1e-2, 1e-2 }, 6 },
    { "sgd", SD_OPTIM_SGD_SF, { "weight_decay=0.01", "warmup_steps=2" }, 2, { 0.1, 0.05 }, 5 },
    { "sgd_m", SD_OPTIM_SGD_SF, { "momentum=0.5", "r=1.0" }, 2, { 0.2, 0.1 }, 4 },
};
#define NCASES (int)(sizeof CASES / sizeof *CASES)

static const char *const NAMES[3] = { "A", "B", "C" };

typedef struct rig {
    sd_params reg;
    sd_param *p[3];
    sd_optim opt;
} rig;

static int rig_make(rig *r, const sfcase *c, const sd_safetensors *st)
{
    sd_params_init(&r->reg);
    int rc = sd_params_add(&r->reg, NULL, "A", SD_DIMS(6, 5), SD_PARAM_TRAINABLE, &r->p[0]);
    if (!rc) rc = sd_params_add(&r->reg, NULL, "B", SD_DIMS(7), SD_PARAM_TRAINABLE, &r->p[1]);
    if (!rc) rc = sd_params_add(&r->reg, NULL, "C", SD_DIMS(3, 4), SD_PARAM_TRAINABLE, &r->p[2]);
    if (!rc) rc = sd_params_alloc(&r->reg, SD_DEV_CPU);
    if (rc) return rc;
    char key[64];
    for (int i = 0; i < 3 && !rc; i++) {
        snprintf(key, sizeof key, "%s.p0.%s", c->tag, NAMES[i]);
        rc = sd_safetensors_read_f32(st, key, r->p[i]->value.data, (size_t)sd_tensor_numel(&r->p[i]->value));
    }
    if (rc) return rc;
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, c->kind);
    rc = sd_optim_config_parse_args(&cfg, c->args, c->nargs);
    if (rc) return rc;
    cfg.lr = c->lrs[0];
    rc = sd_optim_config_check(&cfg);
    if (rc) return rc;
    sd_param *g0[1] = { r->p[0] }, *g1[2] = { r->p[1], r->p[2] };
    sd_optim_group_desc gd[2] = { { "unet", c->lrs[0], g0, 1 }, { "textencoder", c->lrs[1], g1, 2 } };
    return sd_optim_init(&r->opt, &cfg, gd, 2);
}

static void rig_free(rig *r)
{
    sd_optim_free(&r->opt);
    sd_params_free(&r->reg);
}

/* steps [from, to] with kohya's eval() ... train() after each; returns the worst relative error of x */
static double rig_steps(rig *r, const sfcase *c, const sd_safetensors *st, int from, int to)
{
    char key[64];
    double worst = 0;
    float buf[64];
    for (int s = from; s <= to; s++) {
        uint8_t skip[3] = { 0, 0, (uint8_t)(s == 2) };
        for (int i = 0; i < 3; i++) {
            if (skip[i]) continue;
            snprintf(key, sizeof key, "%s.g%d.%s", c->tag, s, NAMES[i]);
            T_EQ_INT(sd_safetensors_read_f32(st, key, r->p[i]->grad.data, (size_t)sd_tensor_numel(&r->p[i]->value)), 0);
        }
        T_EQ_INT(sd_optim_step(&r->opt, NULL, skip), 0);
        T_EQ_INT(sd_optim_sf_eval(&r->opt), 0);
        for (int i = 0; i < 3; i++) {
            size_t n = (size_t)sd_tensor_numel(&r->p[i]->value);
            snprintf(key, sizeof key, "%s.x%d.%s", c->tag, s, NAMES[i]);
            T_EQ_INT(sd_safetensors_read_f32(st, key, buf, n), 0);
            const float *x = r->p[i]->value.data;
            for (size_t j = 0; j < n; j++) {
                double d = fabs((double)x[j] - buf[j]) / fmax(fabs((double)buf[j]), 1e-3);
                if (!(d <= worst)) worst = d;
            }
        }
        T_EQ_INT(sd_optim_sf_train(&r->opt), 0);
    }
    return worst;
}

static double cmp_final(rig *r, const sfcase *c, const sd_safetensors *st)
{
    char key[64];
    float buf[64];
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        size_t n = (size_t)sd_tensor_numel(&r->p[i]->value);
        for (int w = 0; w < 3; w++) {
            if (w == 2 && c->kind == SD_OPTIM_SGD_SF) continue;
            snprintf(key, sizeof key, "%s.%c.%s", c->tag, "yzv"[w], NAMES[i]);
            T_EQ_INT(sd_safetensors_read_f32(st, key, buf, n), 0);
            const float *a = w == 0 ? r->p[i]->value.data : r->opt.params[i].buf[w - 1];
            for (size_t j = 0; j < n; j++) {
                double d = fabs((double)a[j] - buf[j]) / fmax(fabs((double)buf[j]), w == 2 ? 1e-12 : 1e-3);
                if (!(d <= worst)) worst = d;
            }
        }
    }
    return worst;
}

static void test_golden(void)
{
    sd_safetensors *st = NULL;
    if (sd_safetensors_open(GOLDEN, &st) < 0) {
        printf("#   %s\n", sd_errmsg());
        T_CHECK(0);
        return;
    }
    for (int ci = 0; ci < NCASES; ci++) {
        const sfcase *c = &CASES[ci];
        rig r;
        T_EQ_INT(rig_make(&r, c, st), 0);
        T_CHECK(r.opt.ds.sf_train == 1);
        double wx = rig_steps(&r, c, st, 1, c->steps);
        double wf = cmp_final(&r, c, st);
        T_CHECKF(wx <= 2e-6 && wf <= 2e-6, "%s: x %g, final %g", c->tag, wx, wf);
        T_CHECK(r.opt.ds.k == c->steps && r.opt.params[2].step == c->steps - 1);
        printf("# %s: %d steps, worst relative error x %.3g, y/z/v %.3g\n", c->tag, c->steps, wx, wf);
        rig_free(&r);
    }
    sd_safetensors_close(st);
}

/* The state saved in eval mode (as kohya saves it), loaded into a new optimizer: train() there and
 * the remaining steps give the bytes of the uninterrupted run; group scalars are recomputed. */
static void test_resume(void)
{
    sd_safetensors *st = NULL;
    T_EQ_INT(sd_safetensors_open(GOLDEN, &st), 0);
    if (!st) return;
    const char *dir = t_path("optim_sf_state");
    for (int ci = 0; ci < NCASES; ci++) {
        const sfcase *c = &CASES[ci];
        rig a, b;
        T_EQ_INT(rig_make(&a, c, st), 0);
        T_EQ_INT(rig_make(&b, c, st), 0);
        rig_steps(&a, c, st, 1, 3);
        T_EQ_INT(sd_optim_sf_eval(&a.opt), 0);
        sd_train_state_in in = { { 3, 0, 3, 3, 7 }, &a.reg, &a.opt, "{}", NULL, 0, 0.0, NULL, NULL };
        T_EQ_INT(sd_train_state_save(dir, &in), 0);
        T_EQ_INT(sd_optim_sf_train(&a.opt), 0);
        rig_steps(&a, c, st, 4, c->steps);
        sd_train_state_out out;
        T_EQ_INT(sd_train_state_load(dir, &b.reg, &b.opt, &out), 0);
        sd_train_state_out_free(&out);
        T_CHECK(b.opt.ds.sf_train == 0 && b.opt.ds.k == 3);
        T_EQ_INT(sd_optim_step(&b.opt, NULL, NULL), SD_ESTATE);   /* "not in train mode" */
        T_CHECK(strstr(sd_errmsg(), "Optimizer was not in train mode when step is called") != NULL);
        T_CHECK(b.opt.ds.k == 3);
        T_EQ_INT(sd_optim_sf_train(&b.opt), 0);
        rig_steps(&b, c, st, 4, c->steps);
        for (int i = 0; i < 3; i++)
            T_CHECKF(!memcmp(a.p[i]->value.data, b.p[i]->value.data, (size_t)sd_tensor_numel(&a.p[i]->value) * 4),
                     "%s param %d", c->tag, i);
        T_CHECKF(!memcmp(a.opt.state, b.opt.state, a.opt.state_floats * 4), "%s state", c->tag);
        for (int g = 0; g < 2; g++)
            T_CHECK(a.opt.groups[g].sf_weight_sum == b.opt.groups[g].sf_weight_sum &&
                    a.opt.groups[g].sf_lr_max == b.opt.groups[g].sf_lr_max);
        rig_free(&a);
        rig_free(&b);
    }
    sd_safetensors_close(st);
}

static void test_threads(void)
{
    const int64_t shape[2] = { 601, 503 };
    for (int kind = SD_OPTIM_ADAMW_SF; kind <= SD_OPTIM_SGD_SF; kind++) {
        sd_params r[2];
        sd_param *a[2];
        for (int t = 0; t < 2; t++) {
            sd_params_init(&r[t]);
            T_EQ_INT(sd_params_add(&r[t], NULL, "a", 2, shape, SD_PARAM_TRAINABLE, &a[t]), 0);
            T_EQ_INT(sd_params_alloc(&r[t], SD_DEV_CPU), 0);
            float *p = a[t]->value.data;
            for (size_t i = 0; i < 302303; i++) p[i] = sinf((float)i);
            sd_optim_config c;
            sd_optim_config_default(&c, (sd_optim_kind)kind);
            sd_optim o;
            sd_param *ps[1] = { a[t] };
            sd_optim_group_desc gd = { "unet", 1e-2, ps, 1 };
            T_EQ_INT(sd_optim_init(&o, &c, &gd, 1), 0);
            omp_set_num_threads(t ? 3 : 1);
            for (int s = 1; s <= 3; s++) {
                float *g = a[t]->grad.data;
                for (size_t i = 0; i < 302303; i++) g[i] = cosf((float)i * 0.7f + (float)s);
                T_EQ_INT(sd_optim_step(&o, NULL, NULL), 0);
                T_EQ_INT(sd_optim_sf_eval(&o), 0);
                T_EQ_INT(sd_optim_sf_train(&o), 0);
            }
            T_EQ_INT(sd_optim_sf_eval(&o), 0);
            sd_optim_free(&o);
        }
        omp_set_num_threads(1);
        T_CHECKF(!memcmp(a[0]->value.data, a[1]->value.data, 302303 * 4), "%s", sd_optim_kind_name(kind));
        sd_params_free(&r[0]);
        sd_params_free(&r[1]);
    }
}

static int args_rc(sd_optim_kind k, const char *item, double lr)
{
    sd_optim_config c;
    sd_optim_config_default(&c, k);
    const char *a[1] = { item };
    int rc = sd_optim_config_parse_args(&c, a, item ? 1 : 0);
    if (rc) return rc;
    c.lr = lr;
    return sd_optim_config_check(&c);
}

static void test_names_args(void)
{
    sd_optim_kind k;
    T_EQ_INT(sd_optim_resolve("adamwschedulefree", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_ADAMW_SF);
    T_EQ_INT(sd_optim_resolve("RAdamScheduleFree", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_RADAM_SF);
    T_EQ_INT(sd_optim_resolve("SGDSCHEDULEFREE", 0, 0, &k), 0);
    T_EQ_INT(k, SD_OPTIM_SGD_SF);
    sd_optim_config c;
    sd_optim_config_default(&c, SD_OPTIM_ADAMW_SF);
    T_CHECK(c.lr == 0.0025 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8 && c.weight_decay == 0 &&
            c.warmup_steps == 0 && c.sf_r == 0 && c.weight_lr_power == 2.0);
    static const char *const a[] = { "warmup_steps=10", "weight_decay=0.01", "foreach=False" };
    T_EQ_INT(sd_optim_config_parse_args(&c, a, 3), 0);
    char d[256];
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, "schedulefree.adamw_schedulefree.AdamWScheduleFree(warmup_steps=10,weight_decay=0.01,foreach=False)");
    sd_optim_config_default(&c, SD_OPTIM_SGD_SF);
    T_CHECK(c.lr == 1.0 && c.momentum == 0.9);
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, "schedulefree.sgd_schedulefree.SGDScheduleFree");
    sd_optim_config_default(&c, SD_OPTIM_RADAM_SF);
    T_EQ_INT(sd_optim_describe(&c, d, sizeof d), 0);
    T_EQ_STR(d, "schedulefree.radam_schedulefree.RAdamScheduleFree");
    T_EQ_INT(args_rc(SD_OPTIM_RADAM_SF, "warmup_steps=3", 1e-3), SD_EUSAGE);   /* RAdam has none */
    T_CHECK(strstr(sd_errmsg(), "no argument 'warmup_steps'") != NULL);
    T_EQ_INT(args_rc(SD_OPTIM_ADAMW_SF, "silent_sgd_phase=False", 1e-3), SD_EUSAGE);
    T_EQ_INT(args_rc(SD_OPTIM_ADAMW_SF, "momentum=0.9", 1e-3), SD_EUSAGE);
    T_EQ_INT(args_rc(SD_OPTIM_ADAMW_SF, "lr=0.1", 1e-3), SD_EUSAGE);
    T_EQ_INT(args_rc(SD_OPTIM_SGD_SF, "momentum=1.0", 1e-3), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Momentum must be between 0 and 1 exclusive: 1.0") != NULL);
    T_EQ_INT(args_rc(SD_OPTIM_SGD_SF, NULL, -1.0), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Invalid learning rate: -1.0") != NULL);
    T_EQ_INT(args_rc(SD_OPTIM_SGD_SF, "betas=0.9,0.99", 1.0), SD_EUSAGE);
    T_EQ_INT(args_rc(SD_OPTIM_ADAMW_SF, "betas=(0.0, 0.99)", 1e-3), SD_EUSAGE);
    T_EQ_INT(args_rc(SD_OPTIM_RADAM_SF, "silent_sgd_phase=False", 1e-3), 0);
    T_EQ_INT(args_rc(SD_OPTIM_SGD_SF, "warmup_steps=5", 1e-3), 0);
    /* the swaps are no-ops for the other kinds and before any state exists */
    sd_params reg;
    sd_param *p;
    sd_params_init(&reg);
    T_EQ_INT(sd_params_add(&reg, NULL, "a", SD_DIMS(4), SD_PARAM_TRAINABLE, &p), 0);
    T_EQ_INT(sd_params_alloc(&reg, SD_DEV_CPU), 0);
    ((float *)p->value.data)[0] = 1.5f;
    sd_optim o;
    sd_param *ps[1] = { p };
    sd_optim_group_desc gd = { "unet", 1e-2, ps, 1 };
    sd_optim_config_default(&c, SD_OPTIM_ADAMW_SF);
    T_EQ_INT(sd_optim_init(&o, &c, &gd, 1), 0);
    T_EQ_INT(sd_optim_sf_eval(&o), 0);
    T_CHECK(((float *)p->value.data)[0] == 1.5f && o.ds.sf_train == 0);
    T_EQ_INT(sd_optim_sf_train(&o), 0);
    sd_optim_free(&o);
    sd_optim_config_default(&c, SD_OPTIM_ADAMW);
    T_EQ_INT(sd_optim_init(&o, &c, &gd, 1), 0);
    T_EQ_INT(sd_optim_sf_eval(&o), 0);
    T_EQ_INT(sd_optim_step(&o, NULL, NULL), 0);
    sd_optim_free(&o);
    sd_params_free(&reg);
}

int main(void)
{
    omp_set_num_threads(1);
    T_RUN(test_golden);
    T_RUN(test_resume);
    T_RUN(test_threads);
    T_RUN(test_names_args);
    T_DONE();
}
