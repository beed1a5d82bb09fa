/* lib/train/lr_sched: the six schedulers against a transcription of the transformers lambdas as
 * kohya calls them (tests/data/train/lr_sched.txt); inverse_sqrt, cosine_with_min_lr,
 * warmup_stable_decay, piecewise_constant and the --lr_scheduler_args of cosine / polynomial bit for
 * bit against make_lr_golden.py (lr_sched_ext.txt); option syntax, errors, warnings. */
#include <math.h>
#include <stdint.h>

#include "base/error.h"
#include "test.h"
#include "train/lr_sched.h"
#include "train_golden.h"

static void test_golden(void)
{
    tg_file g = { 0 };
    T_CHECK(tg_open(&g, "lr_sched.txt") == 0);
    if (!g.text) return;
    const char *p = g.text;
    int ncase = 0;
    double worst = 0;
    while ((p = strstr(p, "\ncase ")) != NULL) {
        p++;
        char name[64], wu[32], powx[64], lrx[64];
        long long mts;
        int P, cyc, W;
        T_EQ_INT(sscanf(p, "case %63s %31s %lld %d %d %63s %63s W=%d", name, wu, &mts, &P, &cyc, powx, lrx, &W), 8);
        double power = strtod(powx, NULL), lr0 = strtod(lrx, NULL);
        sd_lr_kind k;
        sd_lr_steps w;
        T_EQ_INT(sd_lr_kind_parse(name, &k), 0);
        T_EQ_INT(sd_lr_steps_parse(wu, "lr_warmup_steps", &w), 0);
        sd_lr_sched s;
        T_EQ_INT(sd_lr_sched_init(&s, k, &w, mts, P, cyc, power, lr0), 0);
        T_EQ_INT(s.warmup, W);
        size_t n;
        const char *from = p;
        double *f = tg_get_from(&g, "f", &n, &from);
        T_CHECK(f && (long long)n == mts * P + 3);
        for (size_t i = 0; f && i < n; i++) {
            double v = sd_lr_sched_factor(&s, (int64_t)i);
            double d = fabs(v - f[i]);
            if (d > worst) worst = d;
            T_CHECKF(d <= 1e-15, "%s %s step %zu: %.17g vs %.17g", name, wu, i, v, f[i]);
        }
        free(f);
        ncase++;
    }
    T_EQ_INT(ncase, 14);
    printf("# %d scheduler cases, worst absolute difference %.3g\n", ncase, worst);
    tg_close(&g);
}

static int bits_equal(double a, double b)
{
    uint64_t x, y;
    memcpy(&x, &a, 8);
    memcpy(&y, &b, 8);
    return x == y;
}

static void test_golden_ext(void)
{
    tg_file g = { 0 };
    T_CHECK(tg_open(&g, "lr_sched_ext.txt") == 0);
    if (!g.text) return;
    const char *p = g.text;
    int ncase = 0, seen[SD_LR_PIECEWISE_CONSTANT + 1] = { 0 };
    while ((p = strstr(p, "\ncase ")) != NULL) {
        p++;
        char name[64], wu[32], dec[32], tsx[32], mrx[64], lrx[64];
        long long mts, W, D;
        int P, cyc, off = 0;
        T_EQ_INT(sscanf(p, "case %63s %lld %d %31s %31s %d %31s %63s %63s W=%lld D=%lld args=%n", name, &mts, &P, wu,
                        dec, &cyc, tsx, mrx, lrx, &W, &D, &off), 11);
        if (!off) break;
        /* the --lr_scheduler_args items: the rest of the line, ";"-separated */
        const char *eol = strchr(p + off, '\n');
        char argbuf[512];
        snprintf(argbuf, sizeof argbuf, "%.*s", (int)(eol - (p + off)), p + off);
        const char *items[8];
        int nitems = 0;
        for (char *q = argbuf, *semi; *q && nitems < 8; q = semi + 1) {
            items[nitems++] = q;
            if (!(semi = strchr(q, ';'))) break;
            *semi = 0;
        }
        sd_lr_kind k;
        sd_lr_steps w, d;
        T_EQ_INT(sd_lr_kind_parse(name, &k), 0);
        T_EQ_INT(sd_lr_steps_parse(wu, "lr_warmup_steps", &w), 0);
        sd_lr_params prm;
        sd_lr_params_default(&prm);
        prm.warmup = &w;
        if (strcmp(dec, "-")) {
            T_EQ_INT(sd_lr_steps_parse(dec, "lr_decay_steps", &d), 0);
            prm.decay = &d;
        }
        prm.max_train_steps = mts;
        prm.num_processes = P;
        prm.num_cycles = cyc;
        prm.lr_init = strtod(lrx, NULL);
        if (strcmp(tsx, "-")) prm.has_timescale = 1, prm.timescale = strtoll(tsx, NULL, 10);
        if (strcmp(mrx, "-")) prm.has_min_lr_ratio = 1, prm.min_lr_ratio = strtod(mrx, NULL);
        prm.args = items;
        prm.nargs = nitems;
        sd_lr_sched s;
        char warn[1024];
        int rc = sd_lr_sched_init_params(&s, k, &prm, warn, sizeof warn);
        T_CHECKF(rc == 0, "%s %s: %s", name, argbuf, sd_errmsg());
        if (k != SD_LR_PIECEWISE_CONSTANT) T_EQ_INT(s.warmup, W);
        T_EQ_INT(s.decay, D);
        size_t n;
        const char *from = p;
        double *f = tg_get_from(&g, "f", &n, &from);
        T_CHECK(f && (long long)n == mts * P + 3);
        int bad = 0;
        for (size_t i = 0; f && !rc && i < n && bad < 3; i++) {
            double v = sd_lr_sched_factor(&s, (int64_t)i);
            if (!bits_equal(v, f[i])) {
                bad++;
                T_CHECKF(0, "%s %s %s step %zu: %a vs %a", name, wu, argbuf, i, v, f[i]);
            }
        }
        free(f);
        seen[k]++;
        ncase++;
    }
    T_EQ_INT(ncase, 26);
    T_CHECK(seen[SD_LR_INVERSE_SQRT] >= 4 && seen[SD_LR_COSINE_WITH_MIN_LR] >= 4 &&
            seen[SD_LR_WARMUP_STABLE_DECAY] >= 6 && seen[SD_LR_PIECEWISE_CONSTANT] >= 4);
    printf("# %d further scheduler cases, bit for bit\n", ncase);
    tg_close(&g);
}

static void test_steps_syntax(void)
{
    sd_lr_steps w;
    T_EQ_INT(sd_lr_steps_parse("10%", "lr_warmup_steps", &w), 0);
    T_EQ_INT(w.is_fraction, 1);
    T_NEAR(w.fraction, 0.1, 0);
    T_EQ_INT(sd_lr_steps_resolve(&w, 30), 3);
    T_EQ_INT(sd_lr_steps_parse("0.05", "lr_warmup_steps", &w), 0);
    T_EQ_INT(sd_lr_steps_resolve(&w, 1600), 80);
    T_EQ_INT(sd_lr_steps_parse("250", "lr_warmup_steps", &w), 0);
    T_EQ_INT(w.is_fraction, 0);
    T_EQ_INT(sd_lr_steps_resolve(&w, 100), 250);
    T_EQ_INT(sd_lr_steps_parse("0", "lr_warmup_steps", &w), 0);
    T_EQ_INT(sd_lr_steps_resolve(&w, 100), 0);
    T_EQ_INT(sd_lr_steps_parse("1.5", "lr_warmup_steps", &w), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "whole number") != NULL);
    T_EQ_INT(sd_lr_steps_parse("abc", "lr_warmup_steps", &w), SD_EUSAGE);
    T_EQ_INT(sd_lr_steps_parse("", "lr_warmup_steps", &w), SD_EUSAGE);
    T_EQ_INT(sd_lr_steps_parse("nan", "lr_warmup_steps", &w), SD_EUSAGE);
    T_EQ_INT(sd_lr_steps_parse("-0.5", "lr_warmup_steps", &w), SD_EUSAGE);
    T_EQ_INT(sd_lr_steps_parse("%", "lr_warmup_steps", &w), SD_EUSAGE);
}

static void test_errors(void)
{
    sd_lr_kind k;
    T_EQ_INT(sd_lr_kind_parse("adafactor:1e-3", &k), 0);   /* Adafactor's own LRs (relative_step) */
    T_EQ_INT(k, SD_LR_ADAFACTOR);
    T_EQ_INT(sd_lr_kind_parse("adafactor", &k), 0);
    T_EQ_INT(sd_lr_kind_parse("adafactorx", &k), SD_EUSAGE);
    T_EQ_INT(sd_lr_kind_parse("inverse_sqrt", &k), 0);
    T_EQ_INT(k, SD_LR_INVERSE_SQRT);
    T_EQ_INT(sd_lr_kind_parse("warmup_stable_decay", &k), 0);
    T_EQ_INT(k, SD_LR_WARMUP_STABLE_DECAY);
    T_EQ_INT(sd_lr_kind_parse("cosine_with_min_lr", &k), 0);
    T_EQ_INT(k, SD_LR_COSINE_WITH_MIN_LR);
    T_EQ_INT(sd_lr_kind_parse("piecewise_constant", &k), 0);
    T_EQ_INT(k, SD_LR_PIECEWISE_CONSTANT);
    T_EQ_STR(sd_lr_kind_name(SD_LR_PIECEWISE_CONSTANT), "piecewise_constant");
    /* the reference cannot run it: the real reason */
    T_EQ_INT(sd_lr_kind_parse("reduce_lr_on_plateau", &k), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "ReduceLROnPlateau") && strstr(sd_errmsg(), "without the metric"));
    T_EQ_INT(sd_lr_kind_parse("cosin", &k), SD_EUSAGE);
    T_EQ_STR(sd_lr_kind_name(SD_LR_COSINE_WITH_RESTARTS), "cosine_with_restarts");
    sd_lr_steps w;
    sd_lr_sched s;
    T_EQ_INT(sd_lr_steps_parse("10", "lr_warmup_steps", &w), 0);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_CONSTANT, &w, 100, 1, 1, 1, 1e-4), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "constant does not require") != NULL);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_CONSTANT, NULL, 100, 1, 1, 1, 1e-4), 0);
    T_NEAR(sd_lr_sched_factor(&s, 0), 1.0, 0);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_ADAFACTOR, &w, 100, 1, 1, 1, 1e-4), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "adafactor:0.0001 does not require `num_warmup_steps`. Set None or 0.");
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_ADAFACTOR, NULL, 100, 1, 1, 1, 1e-4), 0);
    T_NEAR(sd_lr_sched_factor(&s, 0), 1.0, 0);
    T_NEAR(sd_lr_sched_factor(&s, 50), 1.0, 0);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_POLYNOMIAL, NULL, 100, 1, 1, 1, 1e-8), SD_EUSAGE);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_POLYNOMIAL, &w, 10, 1, 1, 1, 1e-4), SD_EUSAGE);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_COSINE_WITH_RESTARTS, NULL, 10, 1, 0, 1, 1e-4), SD_EUSAGE);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_LINEAR, NULL, 0, 1, 1, 1, 1e-4), SD_EINVAL);
    /* warm-up longer than the run: linear stays in warm-up (as the reference) */
    T_EQ_INT(sd_lr_steps_parse("200", "lr_warmup_steps", &w), 0);
    T_EQ_INT(sd_lr_sched_init(&s, SD_LR_LINEAR, &w, 100, 1, 1, 1, 1e-4), 0);
    T_NEAR(sd_lr_sched_factor(&s, 100), 0.5, 0);
}

/* sd_lr_sched_init_params with the reference's defaults and a few overrides */
static int init_ext(sd_lr_sched *s, sd_lr_kind k, const char *warmup, const char *decay, const char *const *args,
                    int nargs, double min_ratio, char *warn, size_t nwarn)
{
    static sd_lr_steps w, d;
    sd_lr_params p;
    sd_lr_params_default(&p);
    p.max_train_steps = 20;
    p.lr_init = 1e-4;
    if (warmup) { T_EQ_INT(sd_lr_steps_parse(warmup, "lr_warmup_steps", &w), 0); p.warmup = &w; }
    if (decay) { T_EQ_INT(sd_lr_steps_parse(decay, "lr_decay_steps", &d), 0); p.decay = &d; }
    if (!isnan(min_ratio)) p.has_min_lr_ratio = 1, p.min_lr_ratio = min_ratio;
    p.args = args;
    p.nargs = nargs;
    return sd_lr_sched_init_params(s, k, &p, warn, nwarn);
}

static void test_ext_errors(void)
{
    sd_lr_sched s;
    char warn[1024];
    /* cosine_with_min_lr: one of the minimums, not none, not both */
    T_EQ_INT(init_ext(&s, SD_LR_COSINE_WITH_MIN_LR, NULL, NULL, NULL, 0, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`") ==
            sd_errmsg());
    const char *ml[] = { "min_lr=1e-5" };
    T_EQ_INT(init_ext(&s, SD_LR_COSINE_WITH_MIN_LR, NULL, NULL, ml, 1, 0.1, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Only one of min_lr or min_lr_rate should be set") == sd_errmsg());
    const char *mlnone[] = { "min_lr=None" };   /* None: not given */
    T_EQ_INT(init_ext(&s, SD_LR_COSINE_WITH_MIN_LR, NULL, NULL, mlnone, 1, 0.1, warn, sizeof warn), 0);
    T_EQ_INT(init_ext(&s, SD_LR_COSINE_WITH_MIN_LR, NULL, NULL, ml, 1, NAN, warn, sizeof warn), 0);
    T_CHECK(s.min_lr_rate == 1e-5 / 1e-4);
    const char *mlr[] = { "min_lr_rate=0.1" };   /* kohya passes min_lr_rate itself */
    T_EQ_INT(init_ext(&s, SD_LR_COSINE_WITH_MIN_LR, NULL, NULL, mlr, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "got multiple values for keyword argument 'min_lr_rate'") != NULL);
    /* warmup_stable_decay: D = 0 runs as in the reference (its default), with a warning */
    T_EQ_INT(init_ext(&s, SD_LR_WARMUP_STABLE_DECAY, "2", NULL, NULL, 0, NAN, warn, sizeof warn), 0);
    T_CHECK(strstr(warn, "no decay phase") != NULL);
    T_CHECK(sd_lr_sched_factor(&s, 19) == 1.0 && sd_lr_sched_factor(&s, 20) == 0.0);
    T_EQ_INT(init_ext(&s, SD_LR_WARMUP_STABLE_DECAY, "2", "5", NULL, 0, NAN, warn, sizeof warn), 0);
    T_EQ_STR(warn, "");
    T_EQ_INT(s.stable, 13);
    const char *wt[] = { "warmup_type='quadratic'" };
    T_EQ_INT(init_ext(&s, SD_LR_WARMUP_STABLE_DECAY, "2", "5", wt, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Unknown warmup type: quadratic, expected 'linear', 'cosine' or '1-sqrt'") == sd_errmsg());
    const char *dt[] = { "decay_type=1" };
    T_EQ_INT(init_ext(&s, SD_LR_WARMUP_STABLE_DECAY, "2", "5", dt, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Unknown decay type: 1,") == sd_errmsg());
    sd_lr_steps d;
    T_EQ_INT(sd_lr_steps_parse("1.5", "--lr_decay_steps", &d), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "--lr_decay_steps 1.5") != NULL);
    /* piecewise_constant: step_rules required, a string, well formed */
    T_EQ_INT(init_ext(&s, SD_LR_PIECEWISE_CONSTANT, NULL, NULL, NULL, 0, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "missing 1 required positional argument: 'step_rules'") != NULL);
    static const char *const bad_rules[][2] = {
        { "step_rules=5", "a string is needed" },
        { "step_rules=1:10", "malformed literal" },   /* unquoted: ast.literal_eval fails */
        { "step_rules='1:10,'", "could not convert string to float: ''" },
        { "step_rules='1,0.5'", "not enough values to unpack (expected 2, got 1): '1'" },
        { "step_rules='1:2:3,0.5'", "too many values to unpack (expected 2)" },
        { "step_rules='1:x,0.5'", "invalid literal for int() with base 10: 'x'" },
        { "step_rules='1:2.5,0.5'", "invalid literal for int() with base 10: '2.5'" },
        { "step_rules='a:2,0.5'", "could not convert string to float: 'a'" },
        { "step_rules='0x1p1:2,0.5'", "could not convert string to float" },
        { "step_rules='1:1__0,0.5'", "invalid literal for int()" },
        { "step_rules=''", "could not convert string to float: ''" },
    };
    for (size_t i = 0; i < sizeof bad_rules / sizeof *bad_rules; i++) {
        const char *it[] = { bad_rules[i][0] };
        T_EQ_INT(init_ext(&s, SD_LR_PIECEWISE_CONSTANT, NULL, NULL, it, 1, NAN, warn, sizeof warn), SD_EUSAGE);
        T_CHECKF(strstr(sd_errmsg(), bad_rules[i][1]) != NULL, "%s: %s", bad_rules[i][0], sd_errmsg());
    }
    char many[1024] = "step_rules='";
    for (int i = 0; i <= SD_LR_MAX_RULES; i++) sprintf(many + strlen(many), "1:%d,", i);
    strcat(many, "0.5'");
    const char *mi[] = { many };
    T_EQ_INT(init_ext(&s, SD_LR_PIECEWISE_CONSTANT, NULL, NULL, mi, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "a string of at most 255 characters is supported") != NULL);
    /* the longest string that fits: 50 rules */
    strcpy(many, "step_rules='");
    for (int i = 0; i < 50; i++) sprintf(many + strlen(many), "1:%d,", i - 9);
    strcat(many, "0.5'");
    T_CHECK(strlen(many) <= 255 + 13);
    T_EQ_INT(init_ext(&s, SD_LR_PIECEWISE_CONSTANT, NULL, NULL, mi, 1, NAN, warn, sizeof warn), 0);
    T_EQ_INT(s.nrules, 50);
    T_CHECK(s.rule_steps[0] == -9 && s.rule_steps[49] == 40);
    /* unknown, doubly given and malformed --lr_scheduler_args keys */
    const char *unk[] = { "T_max=100" };
    T_EQ_INT(init_ext(&s, SD_LR_COSINE, NULL, NULL, unk, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "get_cosine_schedule_with_warmup() got an unexpected keyword argument 'T_max'") &&
            strstr(sd_errmsg(), "(cosine takes num_cycles, last_epoch)"));
    T_EQ_INT(init_ext(&s, SD_LR_INVERSE_SQRT, NULL, NULL, unk, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "get_inverse_sqrt_schedule() got an unexpected keyword argument 'T_max'") != NULL);
    const char *cyc[] = { "num_cycles=2" };
    T_EQ_INT(init_ext(&s, SD_LR_WARMUP_STABLE_DECAY, NULL, "5", cyc, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "got multiple values for keyword argument 'num_cycles'") &&
            strstr(sd_errmsg(), "--lr_scheduler_num_cycles"));
    T_EQ_INT(init_ext(&s, SD_LR_COSINE_WITH_RESTARTS, NULL, NULL, cyc, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    const char *ts[] = { "timescale=5" };
    T_EQ_INT(init_ext(&s, SD_LR_INVERSE_SQRT, NULL, NULL, ts, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "'timescale'") != NULL);
    const char *opt[] = { "optimizer=1" };
    T_EQ_INT(init_ext(&s, SD_LR_LINEAR, NULL, NULL, opt, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    const char *le[] = { "last_epoch=3" };
    T_EQ_INT(init_ext(&s, SD_LR_LINEAR, NULL, NULL, le, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "initial_lr") != NULL);
    const char *le1[] = { "last_epoch=-1" };
    T_EQ_INT(init_ext(&s, SD_LR_CONSTANT, NULL, NULL, le1, 1, NAN, warn, sizeof warn), 0);
    const char *noeq[] = { "num_cycles" };
    T_EQ_INT(init_ext(&s, SD_LR_COSINE, NULL, NULL, noeq, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    const char *twoeq[] = { "step_rules='1:2,a=b'" };
    T_EQ_INT(init_ext(&s, SD_LR_PIECEWISE_CONSTANT, NULL, NULL, twoeq, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    const char *strc[] = { "num_cycles='2'" };
    T_EQ_INT(init_ext(&s, SD_LR_COSINE, NULL, NULL, strc, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    const char *lre[] = { "lr_end=1e-3" };   /* lr_end above the initial lr */
    T_EQ_INT(init_ext(&s, SD_LR_POLYNOMIAL, NULL, NULL, lre, 1, NAN, warn, sizeof warn), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "lr_end (0.001) must be smaller than initial lr (0.0001)");
    /* a repeated key: the last value (a dict) */
    const char *rep[] = { "num_cycles=3", "num_cycles=1.5" };
    T_EQ_INT(init_ext(&s, SD_LR_COSINE, NULL, NULL, rep, 2, NAN, warn, sizeof warn), 0);
    T_CHECK(s.cycles == 1.5);
    /* inverse_sqrt: timescale below 1 */
    sd_lr_params p;
    sd_lr_params_default(&p);
    p.max_train_steps = 10;
    p.lr_init = 1e-4;
    p.has_timescale = 1;
    p.timescale = 0;
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_INVERSE_SQRT, &p, NULL, 0), SD_EUSAGE);
    p.timescale = -3;
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_INVERSE_SQRT, &p, NULL, 0), SD_EUSAGE);
    p.has_timescale = 0;
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_INVERSE_SQRT, &p, NULL, 0), 0);
    T_EQ_INT(s.timescale, 10000);
}

static void test_ext_warnings(void)
{
    sd_lr_sched s;
    char warn[2048];
    /* options a scheduler does not use: one warning line each */
    sd_lr_steps d, w;
    T_EQ_INT(sd_lr_steps_parse("5", "lr_decay_steps", &d), 0);
    T_EQ_INT(sd_lr_steps_parse("3", "lr_warmup_steps", &w), 0);
    sd_lr_params p;
    sd_lr_params_default(&p);
    p.max_train_steps = 20;
    p.lr_init = 1e-4;
    p.decay = &d;
    p.has_timescale = 1, p.timescale = 4;
    p.has_min_lr_ratio = 1, p.min_lr_ratio = 0.1;
    p.num_cycles_given = 1;
    p.power_given = 1;
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_LINEAR, &p, warn, sizeof warn), 0);
    T_CHECK(strstr(warn, "--lr_decay_steps has no effect with --lr_scheduler linear") != NULL);
    T_CHECK(strstr(warn, "--lr_scheduler_timescale has no effect with --lr_scheduler linear") != NULL);
    T_CHECK(strstr(warn, "--lr_scheduler_min_lr_ratio has no effect with --lr_scheduler linear") != NULL);
    T_CHECK(strstr(warn, "--lr_scheduler_num_cycles has no effect") != NULL);
    T_CHECK(strstr(warn, "--lr_scheduler_power has no effect") != NULL);
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_WARMUP_STABLE_DECAY, &p, warn, sizeof warn), 0);
    T_CHECK(!strstr(warn, "--lr_decay_steps") && !strstr(warn, "min_lr_ratio") && !strstr(warn, "num_cycles"));
    T_CHECK(strstr(warn, "--lr_scheduler_timescale has no effect") != NULL);
    /* a warm-up with piecewise_constant: ignored as in the reference */
    sd_lr_params_default(&p);
    p.max_train_steps = 20;
    p.lr_init = 1e-4;
    p.warmup = &w;
    const char *r[] = { "step_rules='0.5'" };
    p.args = r;
    p.nargs = 1;
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_PIECEWISE_CONSTANT, &p, warn, sizeof warn), 0);
    T_CHECK(strstr(warn, "--lr_warmup_steps has no effect with --lr_scheduler piecewise_constant") != NULL);
    T_CHECK(sd_lr_sched_factor(&s, 0) == 0.5);
    /* adafactor: the args are not passed */
    p.warmup = NULL;
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_ADAFACTOR, &p, warn, sizeof warn), 0);
    T_CHECK(strstr(warn, "--lr_scheduler_args has no effect") != NULL);
    /* no warnings for what is used */
    sd_lr_params_default(&p);
    p.max_train_steps = 20;
    p.lr_init = 1e-4;
    p.has_timescale = 1, p.timescale = 4;
    T_EQ_INT(sd_lr_sched_init_params(&s, SD_LR_INVERSE_SQRT, &p, warn, sizeof warn), 0);
    T_EQ_STR(warn, "");
}

int main(void)
{
    T_RUN(test_golden);
    T_RUN(test_golden_ext);
    T_RUN(test_ext_errors);
    T_RUN(test_ext_warnings);
    T_RUN(test_steps_syntax);
    T_RUN(test_errors);
    T_DONE();
}
