/* lib/train/lr_sched: the six schedulers against a transcription of the transformers lambdas as
 * kohya calls them (tests/data/train/lr_sched.txt), option syntax, errors. */
#include <math.h>

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
    T_EQ_INT(sd_lr_kind_parse("inverse_sqrt", &k), SD_EUNSUPPORTED);
    T_EQ_INT(sd_lr_kind_parse("warmup_stable_decay", &k), SD_EUNSUPPORTED);
    T_EQ_INT(sd_lr_kind_parse("cosine_with_min_lr", &k), SD_EUNSUPPORTED);
    T_EQ_INT(sd_lr_kind_parse("piecewise_constant", &k), SD_EUNSUPPORTED);
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

int main(void)
{
    T_RUN(test_golden);
    T_RUN(test_steps_syntax);
    T_RUN(test_errors);
    T_DONE();
}
