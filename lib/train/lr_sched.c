/* LR schedulers (see lr_sched.h). */
#include "train/lr_sched.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "train/pyfmt.h"

static const char *const names[] = {
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "adafactor",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant",
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
    if (!strcmp(name, "reduce_lr_on_plateau"))
        return sd_err(SD_EUNSUPPORTED, "--lr_scheduler reduce_lr_on_plateau is not supported: the reference cannot "
                      "run it (get_scheduler_fix passes num_warmup_steps, num_training_steps and num_decay_steps to "
                      "torch's ReduceLROnPlateau, a TypeError, and its training loop calls lr_scheduler.step() "
                      "without the metric ReduceLROnPlateau needs)");
    return sd_err(SD_EUSAGE, "--lr_scheduler %s: unknown scheduler (choose constant, constant_with_warmup, "
                  "linear, cosine, cosine_with_restarts, polynomial, inverse_sqrt, cosine_with_min_lr, "
                  "warmup_stable_decay or piecewise_constant)", name);
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

void sd_lr_params_default(sd_lr_params *p)
{
    memset(p, 0, sizeof *p);
    p->num_processes = 1;
    p->num_cycles = 1;
    p->power = 1.0;
}

/* ---- --lr_scheduler_args: the schedule function's keyword arguments ---------------------------- */

/* Per scheduler: the function kohya calls, its parameters after `optimizer`, and those kohya passes
 * itself (a kwarg of the same name: "got multiple values"). */
static const struct {
    const char *func, *params, *passed;
} sig[] = {
    [SD_LR_CONSTANT] = { "get_constant_schedule", " last_epoch ", "" },
    [SD_LR_CONSTANT_WITH_WARMUP] = { "get_constant_schedule_with_warmup", " num_warmup_steps last_epoch ",
                                     " num_warmup_steps " },
    [SD_LR_LINEAR] = { "get_linear_schedule_with_warmup", " num_warmup_steps num_training_steps last_epoch ",
                       " num_warmup_steps num_training_steps " },
    [SD_LR_COSINE] = { "get_cosine_schedule_with_warmup",
                       " num_warmup_steps num_training_steps num_cycles last_epoch ",
                       " num_warmup_steps num_training_steps " },
    [SD_LR_COSINE_WITH_RESTARTS] = { "get_cosine_with_hard_restarts_schedule_with_warmup",
                                     " num_warmup_steps num_training_steps num_cycles last_epoch ",
                                     " num_warmup_steps num_training_steps num_cycles " },
    [SD_LR_POLYNOMIAL] = { "get_polynomial_decay_schedule_with_warmup",
                           " num_warmup_steps num_training_steps lr_end power last_epoch ",
                           " num_warmup_steps num_training_steps power " },
    [SD_LR_ADAFACTOR] = { "AdafactorSchedule", "", "" },
    [SD_LR_INVERSE_SQRT] = { "get_inverse_sqrt_schedule", " num_warmup_steps timescale last_epoch ",
                             " num_warmup_steps timescale " },
    [SD_LR_COSINE_WITH_MIN_LR] = { "get_cosine_with_min_lr_schedule_with_warmup",
                                   " num_warmup_steps num_training_steps num_cycles last_epoch min_lr min_lr_rate ",
                                   " num_warmup_steps num_training_steps num_cycles min_lr_rate " },
    [SD_LR_WARMUP_STABLE_DECAY] = { "get_wsd_schedule",
                                    " num_warmup_steps num_decay_steps num_training_steps num_stable_steps "
                                    "warmup_type decay_type min_lr_ratio num_cycles last_epoch ",
                                    " num_warmup_steps num_stable_steps num_decay_steps num_cycles min_lr_ratio " },
    [SD_LR_PIECEWISE_CONSTANT] = { "get_piecewise_constant_schedule", " step_rules last_epoch ", "" },
};

static int in_list(const char *list, const char *key)
{
    size_t L = strlen(key);
    for (const char *p = strstr(list, key); p; p = strstr(p + 1, key))
        if (p > list && p[-1] == ' ' && p[L] == ' ') return 1;
    return 0;
}

/* Which sd-train option gives a parameter kohya passes. */
static const char *passed_by(const char *key)
{
    if (!strcmp(key, "num_warmup_steps")) return "--lr_warmup_steps";
    if (!strcmp(key, "num_training_steps")) return "--max_train_steps";
    if (!strcmp(key, "num_cycles")) return "--lr_scheduler_num_cycles";
    if (!strcmp(key, "power")) return "--lr_scheduler_power";
    if (!strcmp(key, "timescale")) return "--lr_scheduler_timescale";
    if (!strcmp(key, "min_lr_rate") || !strcmp(key, "min_lr_ratio")) return "--lr_scheduler_min_lr_ratio";
    return "--lr_warmup_steps, --lr_decay_steps and --max_train_steps";   /* num_stable/decay_steps */
}

static int is_number(const sd_py_value *v)
{
    return v->kind == SD_PY_INT || v->kind == SD_PY_FLOAT || v->kind == SD_PY_BOOL;
}

/* Python's int(str) / float(str) on a rule's text: surrounding whitespace, a sign, digits with
 * single underscores between them; float also ".5", "5.", exponents, inf/infinity/nan. */
static int py_digits_clean(const char *s, size_t L, char *out, size_t nout, int allow_float)
{
    while (L && isspace((unsigned char)*s)) s++, L--;
    while (L && isspace((unsigned char)s[L - 1])) L--;
    if (!L || L >= nout) return -1;
    size_t n = 0;
    for (size_t i = 0; i < L; i++) {
        char ch = s[i];
        if (ch == '_') {
            if (!i || i + 1 >= L || !isdigit((unsigned char)s[i - 1]) || !isdigit((unsigned char)s[i + 1])) return -1;
            continue;
        }
        if (!(isdigit((unsigned char)ch) || ch == '+' || ch == '-' || (allow_float && (ch == '.' || isalpha((unsigned char)ch)))))
            return -1;
        out[n++] = ch;
    }
    out[n] = 0;
    return 0;
}

static int py_str_int(const char *s, size_t L, int64_t *v)
{
    char b[64], *end;
    if (py_digits_clean(s, L, b, sizeof b, 0)) return -1;
    const char *q = b + (b[0] == '+' || b[0] == '-');
    if (!isdigit((unsigned char)*q)) return -1;
    errno = 0;
    long long x = strtoll(b, &end, 10);
    if (*end || errno) return -1;
    *v = x;
    return 0;
}

static int py_str_float(const char *s, size_t L, double *v)
{
    char b[128], *end;
    if (py_digits_clean(s, L, b, sizeof b, 1)) return -1;
    const char *q = b + (b[0] == '+' || b[0] == '-');
    if (!strcasecmp(q, "inf") || !strcasecmp(q, "infinity") || !strcasecmp(q, "nan")) {
        double x = tolower((unsigned char)*q) == 'n' ? NAN : INFINITY;
        *v = b[0] == '-' ? -x : x;
        return 0;
    }
    for (const char *r = q; *r; r++)   /* digits, one point, an exponent: what strtod reads otherwise */
        if (isalpha((unsigned char)*r) && *r != 'e' && *r != 'E') return -1;
    double x = strtod(b, &end);
    if (*end || end == b) return -1;
    *v = x;   /* overflow: Python gives inf too */
    return 0;
}

static int rules_error(const char *rules, const char *what, const char *part, size_t L)
{
    return sd_err(SD_EUSAGE, "piecewise_constant: step_rules \"%s\": %s: '%.*s' (expected \"value:steps,...,"
                  "last multiple\", e.g. \"1:10,0.1:20,0.01\")", rules, what, (int)L, part);
}

/* diffusers' get_piecewise_constant_schedule: split(","), each but the last split(":") into
 * exactly (value, steps), int(steps) then float(value); float(last). */
static int parse_step_rules(sd_lr_sched *s, const char *rules)
{
    s->nrules = 0;
    const char *p = rules;
    for (;;) {
        const char *comma = strchr(p, ',');
        if (!comma) break;
        size_t L = (size_t)(comma - p);
        const char *colon = memchr(p, ':', L);
        if (!colon) return rules_error(rules, "not enough values to unpack (expected 2, got 1)", p, L);
        if (memchr(colon + 1, ':', (size_t)(comma - colon - 1)))
            return rules_error(rules, "too many values to unpack (expected 2)", p, L);
        int64_t steps;
        double value;
        if (py_str_int(colon + 1, (size_t)(comma - colon - 1), &steps))
            return rules_error(rules, "invalid literal for int() with base 10", colon + 1, (size_t)(comma - colon - 1));
        if (py_str_float(p, (size_t)(colon - p), &value))
            return rules_error(rules, "could not convert string to float", p, (size_t)(colon - p));
        int i = 0;
        while (i < s->nrules && s->rule_steps[i] < steps) i++;
        if (i < s->nrules && s->rule_steps[i] == steps) {
            s->rule_value[i] = value;   /* rules_dict[steps] = value: the last one wins */
        } else {
            if (s->nrules == SD_LR_MAX_RULES)
                return sd_err(SD_EUSAGE, "piecewise_constant: step_rules: more than %d rules", SD_LR_MAX_RULES);
            memmove(s->rule_steps + i + 1, s->rule_steps + i, (size_t)(s->nrules - i) * sizeof *s->rule_steps);
            memmove(s->rule_value + i + 1, s->rule_value + i, (size_t)(s->nrules - i) * sizeof *s->rule_value);
            s->rule_steps[i] = steps;
            s->rule_value[i] = value;
            s->nrules++;
        }
        p = comma + 1;
    }
    if (py_str_float(p, strlen(p), &s->last_multiple))
        return rules_error(rules, "could not convert string to float", p, strlen(p));
    return SD_OK;
}

typedef struct kwargs {
    int n;
    char key[16][64];
    sd_py_value val[16];
} kwargs;

static const sd_py_value *kw_get(const kwargs *kw, const char *key)
{
    for (int i = 0; i < kw->n; i++)
        if (!strcmp(kw->key[i], key)) return &kw->val[i];
    return NULL;
}

static void add_warn(char *warn, size_t nwarn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_warn(char *warn, size_t nwarn, const char *fmt, ...)
{
    if (!warn || !nwarn) return;
    size_t L = strlen(warn);
    if (L && L + 1 < nwarn) warn[L++] = '\n', warn[L] = 0;
    va_list ap;
    va_start(ap, fmt);
    if (L < nwarn) vsnprintf(warn + L, nwarn - L, fmt, ap);
    va_end(ap);
}

/* Parse and check the "key=value" items as the schedule function would take them. */
static int parse_kwargs(sd_lr_kind kind, const sd_lr_params *p, kwargs *kw)
{
    kw->n = 0;
    const char *sched = names[kind];
    for (int i = 0; i < p->nargs; i++) {
        char key[64];
        const char *val;
        int rc = sd_py_split_kv(p->args[i], key, sizeof key, &val);
        if (rc) return sd_err_prefix(rc, "--lr_scheduler_args");
        sd_py_value v;
        rc = sd_py_literal(val, &v);
        if (rc && strlen(val) >= sizeof v.s)
            return sd_err(SD_EUSAGE, "--lr_scheduler_args %s: a string of at most %zu characters is supported", key,
                          sizeof v.s - 1);
        if (rc) return sd_err_prefix(rc, "--lr_scheduler_args %s", key);
        int slot = kw->n;   /* a dict: a repeated key keeps the last value */
        for (int j = 0; j < kw->n; j++)
            if (!strcmp(kw->key[j], key)) slot = j;
        if (slot == kw->n) {
            if (kw->n == (int)(sizeof kw->key / sizeof *kw->key))
                return sd_err(SD_EUSAGE, "--lr_scheduler_args: more than %d keys", kw->n);
            kw->n++;
        }
        snprintf(kw->key[slot], sizeof kw->key[slot], "%s", key);
        kw->val[slot] = v;
    }
    if (kind == SD_LR_ADAFACTOR) return SD_OK;   /* kohya does not pass them: a warning */
    for (int i = 0; i < kw->n; i++) {
        const char *key = kw->key[i];
        if (!strcmp(key, "optimizer"))
            return sd_err(SD_EUSAGE, "--lr_scheduler_args optimizer=...: %s() got multiple values for argument "
                          "'optimizer'", sig[kind].func);
        if (in_list(sig[kind].passed, key))
            return sd_err(SD_EUSAGE, "--lr_scheduler_args %s=...: %s() got multiple values for keyword argument "
                          "'%s' (%s gets it from %s)", key, sig[kind].func, key, sched, passed_by(key));
        if (!in_list(sig[kind].params, key)) {
            char takes[160] = "";
            for (const char *q = sig[kind].params; *q;) {
                while (*q == ' ') q++;
                size_t L = strcspn(q, " ");
                if (!L) break;
                char nm[64];
                snprintf(nm, sizeof nm, "%.*s", (int)L, q);
                if (!in_list(sig[kind].passed, nm))
                    snprintf(takes + strlen(takes), sizeof takes - strlen(takes), "%s%s", *takes ? ", " : "", nm);
                q += L;
            }
            return sd_err(SD_EUSAGE, "--lr_scheduler_args %s=...: %s() got an unexpected keyword argument '%s' "
                          "(%s takes %s)", key, sig[kind].func, key, sched, takes);
        }
        const sd_py_value *v = &kw->val[i];
        if (!strcmp(key, "last_epoch") && !(is_number(v) && v->f == -1.0))
            return sd_err(SD_EUSAGE, "--lr_scheduler_args last_epoch=%s: only -1 (the default) can work: the "
                          "reference's LambdaLR then wants an 'initial_lr' in the param groups (KeyError); a "
                          "resumed run continues the schedule by itself", v->repr);
        if ((!strcmp(key, "num_cycles") || !strcmp(key, "lr_end")) && !is_number(v))
            return sd_err(SD_EUSAGE, "--lr_scheduler_args %s=%s: a number is needed", key, v->repr);
        if (!strcmp(key, "min_lr") && !is_number(v) && v->kind != SD_PY_NONE)
            return sd_err(SD_EUSAGE, "--lr_scheduler_args min_lr=%s: a number is needed", v->repr);
        if (!strcmp(key, "step_rules") && v->kind != SD_PY_STR)
            return sd_err(SD_EUSAGE, "--lr_scheduler_args step_rules=%s: a string is needed (quote it for Python's "
                          "ast.literal_eval: 'step_rules=\"1:10,0.1:20,0.01\"'); the reference: AttributeError, "
                          "no attribute 'split'", v->repr);
    }
    return SD_OK;
}

static int shape_parse(const sd_py_value *v, const char *what, sd_lr_shape *out)
{
    static const char *const shapes[] = { "linear", "cosine", "1-sqrt" };
    for (int i = 0; v && v->kind == SD_PY_STR && i < 3; i++)
        if (!strcmp(v->s, shapes[i])) { *out = (sd_lr_shape)i; return SD_OK; }
    if (!v) return SD_OK;
    return sd_err(SD_EUSAGE, "Unknown %s type: %s, expected 'linear', 'cosine' or '1-sqrt' (--lr_scheduler_args "
                  "%s_type=...)", what, v->repr, what);
}

int sd_lr_sched_init_params(sd_lr_sched *s, sd_lr_kind kind, const sd_lr_params *p, char *warn, size_t nwarn)
{
    memset(s, 0, sizeof *s);
    if (warn && nwarn) *warn = 0;
    if ((unsigned)kind > SD_LR_PIECEWISE_CONSTANT) return sd_err(SD_EINVAL, "lr scheduler: bad kind %d", (int)kind);
    if (p->max_train_steps < 1 || p->num_processes < 1)
        return sd_err(SD_EINVAL, "lr scheduler: max_train_steps %lld and num_processes %d must be >= 1",
                      (long long)p->max_train_steps, p->num_processes);
    kwargs kw;
    int rc = parse_kwargs(kind, p, &kw);
    if (rc) return rc;
    const char *name = names[kind];
    s->kind = kind;
    s->total = p->max_train_steps * p->num_processes;
    s->warmup = sd_lr_steps_resolve(p->warmup, s->total);
    s->decay = sd_lr_steps_resolve(p->decay, s->total);
    s->stable = s->total - s->warmup - s->decay;
    s->num_cycles = p->num_cycles;
    s->power = p->power;
    s->lr_init = p->lr_init;
    s->lr_end = 1e-7;
    s->cycles = 0.5;
    s->warmup_type = SD_LR_SHAPE_LINEAR;
    s->decay_type = SD_LR_SHAPE_COSINE;
    char b[40], b2[40];
    if (s->warmup < 0) return sd_err(SD_EUSAGE, "--lr_warmup_steps must not be negative");
    if (s->decay < 0) return sd_err(SD_EUSAGE, "--lr_decay_steps must not be negative");
    if (kind == SD_LR_CONSTANT && s->warmup != 0)
        return sd_err(SD_EUSAGE, "constant does not require `num_warmup_steps`. Set None or 0. "
                      "(use --lr_scheduler constant_with_warmup for a warm-up)");
    if (kind == SD_LR_ADAFACTOR && s->warmup != 0)
        return sd_err(SD_EUSAGE, "adafactor:%s does not require `num_warmup_steps`. Set None or 0.",
                      sd_py_float(p->lr_init, b, sizeof b));
    const sd_py_value *v;
    switch (kind) {
    case SD_LR_COSINE:
        if ((v = kw_get(&kw, "num_cycles"))) s->cycles = v->f;
        break;
    case SD_LR_COSINE_WITH_RESTARTS:
        if (p->num_cycles < 1)
            return sd_err(SD_EUSAGE, "--lr_scheduler_num_cycles %d: must be at least 1", p->num_cycles);
        break;
    case SD_LR_POLYNOMIAL:
        if ((v = kw_get(&kw, "lr_end"))) s->lr_end = v->f;
        if (!(p->lr_init > s->lr_end))
            return sd_err(SD_EUSAGE, "lr_end (%s) must be smaller than initial lr (%s)", sd_py_float(s->lr_end, b, sizeof b),
                          sd_py_float(p->lr_init, b2, sizeof b2));
        if (s->warmup >= s->total)
            return sd_err(SD_EUSAGE, "polynomial: the warm-up (%lld steps) must be shorter than the training "
                          "(%lld steps)", (long long)s->warmup, (long long)s->total);
        break;
    case SD_LR_INVERSE_SQRT:
        s->timescale = p->has_timescale ? p->timescale : s->warmup ? s->warmup : 10000;
        if (s->timescale < 1)
            return sd_err(SD_EUSAGE, "--lr_scheduler_timescale %lld: must be at least 1 (the reference divides by it "
                          "and takes the square root of (step + timescale - warm-up) / timescale)",
                          (long long)s->timescale);
        if (s->timescale > (INT64_C(1) << 52) || s->total > (INT64_C(1) << 52))
            return sd_err(SD_EUSAGE, "--lr_scheduler_timescale %lld: too large", (long long)s->timescale);
        break;
    case SD_LR_COSINE_WITH_MIN_LR: {
        s->cycles = (double)p->num_cycles / 2.0;
        v = kw_get(&kw, "min_lr");
        int has_min_lr = v && v->kind != SD_PY_NONE;
        if (has_min_lr && p->has_min_lr_ratio)
            return sd_err(SD_EUSAGE, "Only one of min_lr or min_lr_rate should be set (--lr_scheduler_args min_lr=%s "
                          "and --lr_scheduler_min_lr_ratio %s)", v->repr, sd_py_float(p->min_lr_ratio, b, sizeof b));
        if (has_min_lr) {
            if (p->lr_init == 0)
                return sd_err(SD_EUSAGE, "cosine_with_min_lr: min_lr / --learning_rate: division by zero");
            s->min_lr_rate = v->f / p->lr_init;
        } else if (p->has_min_lr_ratio) {
            s->min_lr_rate = p->min_lr_ratio;
        } else {
            return sd_err(SD_EUSAGE, "One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs` "
                          "(cosine_with_min_lr: give --lr_scheduler_min_lr_ratio R or --lr_scheduler_args min_lr=LR)");
        }
        break;
    }
    case SD_LR_WARMUP_STABLE_DECAY:
        s->cycles = (double)p->num_cycles / 2.0;
        s->min_lr_rate = p->has_min_lr_ratio ? p->min_lr_ratio : 0.0;
        if ((rc = shape_parse(kw_get(&kw, "warmup_type"), "warmup", &s->warmup_type))) return rc;
        if ((rc = shape_parse(kw_get(&kw, "decay_type"), "decay", &s->decay_type))) return rc;
        if ((v = kw_get(&kw, "num_training_steps")) && v->kind != SD_PY_NONE)
            add_warn(warn, nwarn, "Both num_training_steps and num_stable_steps are specified. num_stable_steps will "
                     "be used. (--lr_scheduler_args num_training_steps has no effect with warmup_stable_decay)");
        if (s->decay == 0)
            add_warn(warn, nwarn, "warmup_stable_decay with --lr_decay_steps 0 (the default): no decay phase; the "
                     "factor stays 1 after the warm-up and is the minimum ratio (%s) only after the last step",
                     sd_py_float(s->min_lr_rate, b, sizeof b));
        break;
    case SD_LR_PIECEWISE_CONSTANT:
        v = kw_get(&kw, "step_rules");
        if (!v)
            return sd_err(SD_EUSAGE, "piecewise_constant needs step_rules in --lr_scheduler_args, e.g. "
                          "'step_rules=\"1:10,0.1:20,0.01\"' (the reference: get_piecewise_constant_schedule() "
                          "missing 1 required positional argument: 'step_rules')");
        if ((rc = parse_step_rules(s, v->s))) return rc;
        if (s->warmup)
            add_warn(warn, nwarn, "--lr_warmup_steps has no effect with --lr_scheduler piecewise_constant (the "
                     "reference calls it without a warm-up)");
        s->warmup = 0;
        break;
    default:
        break;
    }
    /* options get_scheduler_fix reads but this scheduler does not use: the reference is silent */
    if (p->decay && kind != SD_LR_WARMUP_STABLE_DECAY)
        add_warn(warn, nwarn, "--lr_decay_steps has no effect with --lr_scheduler %s (only warmup_stable_decay "
                 "uses it)", name);
    if (p->has_timescale && kind != SD_LR_INVERSE_SQRT)
        add_warn(warn, nwarn, "--lr_scheduler_timescale has no effect with --lr_scheduler %s (only inverse_sqrt "
                 "uses it)", name);
    if (p->has_min_lr_ratio && kind != SD_LR_COSINE_WITH_MIN_LR && kind != SD_LR_WARMUP_STABLE_DECAY)
        add_warn(warn, nwarn, "--lr_scheduler_min_lr_ratio has no effect with --lr_scheduler %s (only "
                 "cosine_with_min_lr and warmup_stable_decay use it)", name);
    if (p->num_cycles_given &&
        !(kind == SD_LR_COSINE_WITH_RESTARTS || kind == SD_LR_COSINE_WITH_MIN_LR ||
          (kind == SD_LR_WARMUP_STABLE_DECAY && s->decay_type == SD_LR_SHAPE_COSINE)))
        add_warn(warn, nwarn, "--lr_scheduler_num_cycles has no effect with --lr_scheduler %s%s", name,
                 kind == SD_LR_WARMUP_STABLE_DECAY ? " and a decay_type other than cosine" : "");
    if (p->power_given && kind != SD_LR_POLYNOMIAL)
        add_warn(warn, nwarn, "--lr_scheduler_power has no effect with --lr_scheduler %s (only polynomial uses it)",
                 name);
    if (kind == SD_LR_ADAFACTOR && p->nargs)
        add_warn(warn, nwarn, "--lr_scheduler_args has no effect with the adafactor scheduler");
    return SD_OK;
}

int sd_lr_sched_init(sd_lr_sched *s, sd_lr_kind kind, const sd_lr_steps *warmup,
                     int64_t max_train_steps, int num_processes, int num_cycles, double power,
                     double lr_init)
{
    sd_lr_params p;
    sd_lr_params_default(&p);
    p.warmup = warmup;
    p.max_train_steps = max_train_steps;
    p.num_processes = num_processes;
    p.num_cycles = num_cycles;
    p.power = power;
    p.lr_init = lr_init;
    return sd_lr_sched_init_params(s, kind, &p, NULL, 0);
}

static double imax1(int64_t v) { return (double)(v > 1 ? v : 1); }
/* Python's max(0.0, f) / max(0, f): f when f > 0, else 0 (also for -0.0 and nan) */
static double pmax0(double f) { return f > 0.0 ? f : 0.0; }

static double wsd_factor(const sd_lr_sched *s, int64_t step)
{
    const int64_t W = s->warmup, S = s->stable, D = s->decay;
    const double m = s->min_lr_rate;
    double f = 0;
    if (step < W) {
        double q = (double)step / imax1(W);
        if (s->warmup_type == SD_LR_SHAPE_LINEAR) f = q;
        else if (s->warmup_type == SD_LR_SHAPE_COSINE) f = 0.5 * (1.0 - cos(M_PI * q));
        else f = 1.0 - sqrt(1.0 - q);
        f = f * (1.0 - m) + m;
        return pmax0(f);
    }
    if (step < W + S) return 1.0;
    if (step < W + S + D) {
        double q = (double)(step - W - S) / imax1(D);
        if (s->decay_type == SD_LR_SHAPE_LINEAR) f = 1.0 - q;
        else if (s->decay_type == SD_LR_SHAPE_COSINE) f = 0.5 * (1.0 + cos(M_PI * s->cycles * 2.0 * q));
        else f = 1.0 - sqrt(q);
        f = f * (1.0 - m) + m;
        return pmax0(f);
    }
    return m;
}

double sd_lr_sched_factor(const sd_lr_sched *s, int64_t step)
{
    const int64_t W = s->warmup, T = s->total;
    const double st = (double)step;
    if (s->kind == SD_LR_CONSTANT || s->kind == SD_LR_ADAFACTOR) return 1.0;
    if (s->kind == SD_LR_WARMUP_STABLE_DECAY) return wsd_factor(s, step);
    if (s->kind == SD_LR_PIECEWISE_CONSTANT) {
        for (int i = 0; i < s->nrules; i++)
            if (step < s->rule_steps[i]) return s->rule_value[i];
        return s->last_multiple;
    }
    if (step < W) return st / imax1(W);
    switch (s->kind) {
    case SD_LR_CONSTANT_WITH_WARMUP:
        return 1.0;
    case SD_LR_LINEAR:
        return pmax0((double)(T - step) / imax1(T - W));
    case SD_LR_COSINE: {
        double p = (double)(step - W) / imax1(T - W);
        return pmax0(0.5 * (1.0 + cos(M_PI * s->cycles * 2.0 * p)));
    }
    case SD_LR_COSINE_WITH_RESTARTS: {
        double p = (double)(step - W) / imax1(T - W);
        if (p >= 1.0) return 0.0;
        double x = fmod((double)s->num_cycles * p, 1.0);   /* Python % on non-negatives */
        return pmax0(0.5 * (1.0 + cos(M_PI * x)));
    }
    case SD_LR_POLYNOMIAL: {
        if (step > T) return s->lr_end / s->lr_init;
        double lr_range = s->lr_init - s->lr_end;
        double decay_steps = (double)(T - W);
        double pct = 1 - (double)(step - W) / decay_steps;
        double decay = lr_range * pow(pct, s->power) + s->lr_end;
        return decay / s->lr_init;
    }
    case SD_LR_INVERSE_SQRT: {
        int64_t shift = s->timescale - W;
        return 1.0 / sqrt((double)(step + shift) / (double)s->timescale);
    }
    case SD_LR_COSINE_WITH_MIN_LR: {
        double p = (double)(step - W) / imax1(T - W);
        double f = 0.5 * (1.0 + cos(M_PI * s->cycles * 2.0 * p));
        f = f * (1 - s->min_lr_rate) + s->min_lr_rate;
        return pmax0(f);
    }
    default:
        return 1.0;
    }
}
