/* LR schedulers (see lr_sched.h). */
#include "train/lr_sched.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "train/pyfmt.h"

static const char *const names[] = {
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "adafactor",
};

const char *sd_lr_kind_name(sd_lr_kind k)
{
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

int sd_lr_kind_parse(const char *name, sd_lr_kind *k)
{
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i])) { *k = (sd_lr_kind)i; return SD_OK; }
    if (!strncmp(name, "adafactor", 9) && (name[9] == 0 || name[9] == ':')) {
        *k = SD_LR_ADAFACTOR;
        return SD_OK;
    }
    static const char *const later[] = { "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
                                         "piecewise_constant", "reduce_lr_on_plateau" };
    for (size_t i = 0; i < sizeof later / sizeof *later; i++)
        if (!strcmp(name, later[i]))
            return sd_err(SD_EUNSUPPORTED, "--lr_scheduler %s is not implemented yet (constant, "
                          "constant_with_warmup, linear, cosine, cosine_with_restarts and polynomial are)", name);
    return sd_err(SD_EUSAGE, "--lr_scheduler %s: unknown scheduler (choose constant, constant_with_warmup, "
                  "linear, cosine, cosine_with_restarts or polynomial)", name);
}

int sd_lr_steps_parse(const char *s, const char *opt, sd_lr_steps *out)
{
    memset(out, 0, sizeof *out);
    size_t L = strlen(s);
    char *end;
    if (L && s[L - 1] == '%') {
        char buf[64];
        if (L - 1 >= sizeof buf || L == 1) goto bad;
        memcpy(buf, s, L - 1);
        buf[L - 1] = 0;
        double v = strtod(buf, &end);
        if (*end || !isfinite(v)) goto bad;
        out->is_fraction = 1;
        out->fraction = v / 100.0;
        return SD_OK;
    }
    double v = strtod(s, &end);
    if (!L || *end || isnan(v)) goto bad;
    if (v >= 1) {
        /* int(value): an integer literal only */
        const char *p = s;
        while (*p == ' ') p++;
        if (*p == '+') p++;
        if (!*p) goto bad;
        for (const char *q = p; *q; q++)
            if ((*q < '0' || *q > '9') && *q != '_') goto bad_int;
        out->steps = strtoll(p, NULL, 10);
        return SD_OK;
    }
    if (v < 0) goto bad;
    out->is_fraction = 1;
    out->fraction = v;
    return SD_OK;
bad_int:
    return sd_err(SD_EUSAGE, "--%s %s: a value of 1 or more must be a whole number of steps "
                  "(fractions are below 1, or write N%%)", opt, s);
bad:
    return sd_err(SD_EUSAGE, "--%s %s: not an int or float", opt, s);
}

int64_t sd_lr_steps_resolve(const sd_lr_steps *w, int64_t total)
{
    if (!w) return 0;
    return w->is_fraction ? (int64_t)(w->fraction * (double)total) : w->steps;
}

int sd_lr_sched_init(sd_lr_sched *s, sd_lr_kind kind, const sd_lr_steps *warmup,
                     int64_t max_train_steps, int num_processes, int num_cycles, double power,
                     double lr_init)
{
    memset(s, 0, sizeof *s);
    if ((unsigned)kind > SD_LR_ADAFACTOR) return sd_err(SD_EINVAL, "lr scheduler: bad kind %d", (int)kind);
    if (max_train_steps < 1 || num_processes < 1)
        return sd_err(SD_EINVAL, "lr scheduler: max_train_steps %lld and num_processes %d must be >= 1",
                      (long long)max_train_steps, num_processes);
    s->kind = kind;
    s->total = max_train_steps * num_processes;
    s->warmup = sd_lr_steps_resolve(warmup, s->total);
    s->num_cycles = num_cycles;
    s->power = power;
    s->lr_init = lr_init;
    s->lr_end = 1e-7;
    if (s->warmup < 0) return sd_err(SD_EUSAGE, "--lr_warmup_steps must not be negative");
    if (kind == SD_LR_CONSTANT && s->warmup != 0)
        return sd_err(SD_EUSAGE, "constant does not require `num_warmup_steps`. Set None or 0. "
                      "(use --lr_scheduler constant_with_warmup for a warm-up)");
    if (kind == SD_LR_ADAFACTOR && s->warmup != 0) {
        char b[40];
        return sd_err(SD_EUSAGE, "adafactor:%s does not require `num_warmup_steps`. Set None or 0.",
                      sd_py_float(lr_init, b, sizeof b));
    }
    if (kind == SD_LR_POLYNOMIAL && !(lr_init > s->lr_end))
        return sd_err(SD_EUSAGE, "lr_end (1e-07) must be smaller than initial lr (%g)", lr_init);
    if (kind == SD_LR_POLYNOMIAL && s->warmup >= s->total)
        return sd_err(SD_EUSAGE, "polynomial: the warm-up (%lld steps) must be shorter than the training "
                      "(%lld steps)", (long long)s->warmup, (long long)s->total);
    if (kind == SD_LR_COSINE_WITH_RESTARTS && num_cycles < 1)
        return sd_err(SD_EUSAGE, "--lr_scheduler_num_cycles %d: must be at least 1", num_cycles);
    return SD_OK;
}

static double imax1(int64_t v) { return (double)(v > 1 ? v : 1); }

double sd_lr_sched_factor(const sd_lr_sched *s, int64_t step)
{
    const int64_t W = s->warmup, T = s->total;
    const double st = (double)step;
    if (s->kind == SD_LR_CONSTANT || s->kind == SD_LR_ADAFACTOR) return 1.0;
    if (step < W) return st / imax1(W);
    switch (s->kind) {
    case SD_LR_CONSTANT_WITH_WARMUP:
        return 1.0;
    case SD_LR_LINEAR:
        return fmax(0.0, (double)(T - step) / imax1(T - W));
    case SD_LR_COSINE: {
        double p = (double)(step - W) / imax1(T - W);
        return fmax(0.0, 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * p)));
    }
    case SD_LR_COSINE_WITH_RESTARTS: {
        double p = (double)(step - W) / imax1(T - W);
        if (p >= 1.0) return 0.0;
        double x = fmod((double)s->num_cycles * p, 1.0);   /* Python % on non-negatives */
        return fmax(0.0, 0.5 * (1.0 + cos(M_PI * x)));
    }
    case SD_LR_POLYNOMIAL: {
        if (step > T) return s->lr_end / s->lr_init;
        double lr_range = s->lr_init - s->lr_end;
        double decay_steps = (double)(T - W);
        double pct = 1 - (double)(step - W) / decay_steps;
        double decay = lr_range * pow(pct, s->power) + s->lr_end;
        return decay / s->lr_init;
    }
    default:
        return 1.0;
    }
}
