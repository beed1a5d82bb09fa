/* Optimizers, gradient clipping, accumulation helpers (see optim.h). */
#include "train/optim.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/device.h"
#include "tensor/ops.h"
#include "train/optim_kinds.h"
#include "train/pyfmt.h"

/* ---- kinds and names ------------------------------------------------------------------------ */

static const struct {
    const char *name, *cls, *args;
} kinds[SD_OPTIM_NKINDS] = {
    [SD_OPTIM_ADAMW] = { "AdamW", "torch.optim.adamw.AdamW",
                         "betas, eps, weight_decay, amsgrad, maximize, foreach, fused, capturable, differentiable" },
    [SD_OPTIM_LION] = { "Lion", "lion_pytorch.lion_pytorch.Lion",
                        "betas, weight_decay, use_triton, decoupled_weight_decay" },
    [SD_OPTIM_SGD_NESTEROV] = { "SGDNesterov", "torch.optim.sgd.SGD",
                                "momentum, dampening, weight_decay, maximize, foreach, differentiable, fused" },
    [SD_OPTIM_ADAFACTOR] = { "Adafactor", "transformers.optimization.Adafactor",
                             "eps, clip_threshold, decay_rate, beta1, weight_decay, scale_parameter, "
                             "relative_step, warmup_init" },
    [SD_OPTIM_PRODIGY] = { "Prodigy", "prodigyopt.prodigy.Prodigy",
                           "betas, beta3, eps, weight_decay, decouple, use_bias_correction, safeguard_warmup, d0, "
                           "d_coef, growth_rate, fsdp_in_use, slice_p" },
    [SD_OPTIM_DADAPT_ADAM] = { "DAdaptAdam", "dadaptation.dadapt_adam.DAdaptAdam",
                               "betas, eps, weight_decay, log_every, decouple, use_bias_correction, d0, "
                               "growth_rate, fsdp_in_use" },
    [SD_OPTIM_DADAPT_ADAM_PREPRINT] = { "DAdaptAdamPreprint",
                                        "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint",
                                        "betas, eps, weight_decay, log_every, decouple, d0, growth_rate, fsdp_in_use" },
    [SD_OPTIM_ADAMW8BIT] = { "AdamW8bit", "bitsandbytes.optim.adamw.AdamW8bit",
                             "betas, eps, weight_decay, amsgrad, optim_bits, args, min_8bit_size, "
                             "percentile_clipping, block_wise, is_paged" },
    [SD_OPTIM_PAGED_ADAMW8BIT] = { "PagedAdamW8bit", "bitsandbytes.optim.adamw.PagedAdamW8bit",
                                   "betas, eps, weight_decay, amsgrad, optim_bits, args, min_8bit_size, "
                                   "percentile_clipping, block_wise" },
    [SD_OPTIM_PAGED_ADAMW] = { "PagedAdamW", "bitsandbytes.optim.adamw.PagedAdamW",
                               "betas, eps, weight_decay, amsgrad, optim_bits, args, min_8bit_size, "
                               "percentile_clipping, block_wise" },
    [SD_OPTIM_PAGED_ADAMW32BIT] = { "PagedAdamW32bit", "bitsandbytes.optim.adamw.PagedAdamW32bit",
                                    "betas, eps, weight_decay, amsgrad, optim_bits, args, min_8bit_size, "
                                    "percentile_clipping, block_wise" },
    [SD_OPTIM_LION8BIT] = { "Lion8bit", "bitsandbytes.optim.lion.Lion8bit",
                            "betas, weight_decay, args, min_8bit_size, percentile_clipping, block_wise, is_paged" },
    [SD_OPTIM_PAGED_LION8BIT] = { "PagedLion8bit", "bitsandbytes.optim.lion.PagedLion8bit",
                                  "betas, weight_decay, args, min_8bit_size, percentile_clipping, block_wise" },
    [SD_OPTIM_SGD_NESTEROV8BIT] = { "SGDNesterov8bit", "bitsandbytes.optim.sgd.SGD8bit",
                                    "momentum, dampening, weight_decay, nesterov, args, min_8bit_size, "
                                    "percentile_clipping, block_wise" },
    [SD_OPTIM_DADAPT_SGD] = { "DAdaptSGD", "dadaptation.dadapt_sgd.DAdaptSGD",
                              "momentum, weight_decay, log_every, d0, growth_rate, fsdp_in_use" },
    [SD_OPTIM_DADAPT_ADAGRAD] = { "DAdaptAdaGrad", "dadaptation.dadapt_adagrad.DAdaptAdaGrad",
                                  "momentum, log_every, weight_decay, eps, d0, growth_rate" },
    [SD_OPTIM_DADAPT_ADAN] = { "DAdaptAdan", "dadaptation.dadapt_adan.DAdaptAdan",
                               "betas, eps, weight_decay, no_prox, log_every, d0, growth_rate" },
    [SD_OPTIM_DADAPT_ADAN_IP] = { "DAdaptAdanIP", "dadaptation.experimental.dadapt_adan_ip.DAdaptAdanIP",
                                  "betas, eps, weight_decay, no_prox, log_every, d0, growth_rate" },
    [SD_OPTIM_DADAPT_LION] = { "DAdaptLion", "dadaptation.dadapt_lion.DAdaptLion",
                               "betas, weight_decay, log_every, d0, fsdp_in_use" },
    [SD_OPTIM_ADAMW_SF] = { "AdamWScheduleFree", "schedulefree.adamw_schedulefree.AdamWScheduleFree",
                            "betas, eps, weight_decay, warmup_steps, r, weight_lr_power, foreach" },
    [SD_OPTIM_RADAM_SF] = { "RAdamScheduleFree", "schedulefree.radam_schedulefree.RAdamScheduleFree",
                            "betas, eps, weight_decay, r, weight_lr_power, foreach, silent_sgd_phase" },
    [SD_OPTIM_SGD_SF] = { "SGDScheduleFree", "schedulefree.sgd_schedulefree.SGDScheduleFree",
                          "momentum, weight_decay, warmup_steps, r, weight_lr_power, foreach" },
};

/* The class name bitsandbytes' messages use ("Lion8bit", "SGD8bit"). */
static const char *bnb_cls(sd_optim_kind k)
{
    const char *q = strrchr(sd_optim_class_name(k), '.');
    return q ? q + 1 : sd_optim_kind_name(k);
}

const char *sd_optim_kind_name(sd_optim_kind k)
{
    return (unsigned)k < SD_OPTIM_NKINDS ? kinds[k].name : "?";
}

const char *sd_optim_class_name(sd_optim_kind k)
{
    return (unsigned)k < SD_OPTIM_NKINDS ? kinds[k].cls : "?";
}

const char *sd_optim_arg_names(sd_optim_kind k)
{
    return (unsigned)k < SD_OPTIM_NKINDS ? kinds[k].args : "";
}

void sd_optim_config_default(sd_optim_config *c, sd_optim_kind kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->beta3 = NAN;
    c->d0 = 1e-6;
    c->d_coef = 1.0;
    c->growth_rate = INFINITY;
    c->slice_p = 1;
    switch (kind) {
    case SD_OPTIM_ADAMW:
        c->lr = 1e-3;
        c->weight_decay = 0.01;
        break;
    case SD_OPTIM_LION:
        c->lr = 1e-4;
        c->beta2 = 0.99;
        break;
    case SD_OPTIM_SGD_NESTEROV:
        c->lr = 1e-3;
        c->momentum = 0.9;      /* kohya: "SGD with Nesterov must be with momentum, set momentum to 0.9" */
        break;
    case SD_OPTIM_ADAFACTOR:
        c->lr = NAN;
        c->eps = 1e-30;
        c->eps2 = 1e-3;
        c->clip_threshold = 1.0;
        c->decay_rate = -0.8;
        c->scale_parameter = 1;
        c->relative_step = 1;   /* kohya's default */
        break;
    case SD_OPTIM_PRODIGY:
        c->lr = 1.0;
        c->decouple = 1;
        break;
    case SD_OPTIM_ADAMW8BIT:
    case SD_OPTIM_PAGED_ADAMW8BIT:
    case SD_OPTIM_PAGED_ADAMW:
    case SD_OPTIM_PAGED_ADAMW32BIT:
        sd_adamw8bit_config_default(&c->b8);
        c->lr = c->b8.lr;
        c->weight_decay = c->b8.weight_decay;
        break;
    case SD_OPTIM_LION8BIT:
    case SD_OPTIM_PAGED_LION8BIT:
    case SD_OPTIM_SGD_NESTEROV8BIT:
        sd_bnb1_config_default(&c->b8, kind == SD_OPTIM_SGD_NESTEROV8BIT);
        c->lr = c->b8.lr;
        c->beta1 = c->b8.beta1, c->beta2 = c->b8.beta2, c->eps = 0.0, c->weight_decay = 0.0;
        if (kind == SD_OPTIM_SGD_NESTEROV8BIT) c->momentum = c->b8.beta1;
        break;
    case SD_OPTIM_ADAMW_SF:
    case SD_OPTIM_RADAM_SF:
    case SD_OPTIM_SGD_SF:         /* schedulefree 1.4's constructors */
        c->lr = kind == SD_OPTIM_SGD_SF ? 1.0 : 0.0025;
        c->momentum = 0.9;
        c->weight_decay = 0.0;
        c->warmup_steps = 0;
        c->sf_r = 0.0;
        c->weight_lr_power = 2.0;
        c->silent_sgd_phase = 1;
        break;
    case SD_OPTIM_DADAPT_ADAGRAD:   /* dadaptation 3.2's constructors */
        c->lr = 1.0;
        c->eps = 1e-6;
        break;
    case SD_OPTIM_DADAPT_ADAN:
    case SD_OPTIM_DADAPT_ADAN_IP:
        c->lr = 1.0;
        c->beta1 = 0.98, c->beta2 = 0.92, c->beta3 = 0.99;
        c->weight_decay = 0.02;
        break;
    case SD_OPTIM_DADAPT_LION:
        c->lr = 1.0;
        c->beta2 = 0.99;
        break;
    default:                    /* D-Adaptation */
        c->lr = 1.0;
        break;
    }
}

int sd_optim_resolve(const char *type, int use_8bit_adam, int use_lion, sd_optim_kind *kind)
{
    int empty = !type || !*type;
    if (use_8bit_adam && use_lion)
        return sd_err(SD_EUSAGE, "both --use_8bit_adam and --use_lion_optimizer are given");
    if ((use_8bit_adam || use_lion) && !empty)
        return sd_err(SD_EUSAGE, "both --%s and --optimizer_type are given",
                      use_8bit_adam ? "use_8bit_adam" : "use_lion_optimizer");
    if (use_8bit_adam) type = "AdamW8bit", empty = 0;
    if (use_lion) type = "Lion", empty = 0;
    if (empty || !strcasecmp(type, "AdamW") || !strcmp(type, "torch.optim.AdamW")) {
        *kind = SD_OPTIM_ADAMW;
        return SD_OK;
    }
    static const struct { const char *name; sd_optim_kind k; } impl[] = {
        { "Lion", SD_OPTIM_LION }, { "SGDNesterov", SD_OPTIM_SGD_NESTEROV }, { "Adafactor", SD_OPTIM_ADAFACTOR },
        { "Prodigy", SD_OPTIM_PRODIGY }, { "DAdaptAdam", SD_OPTIM_DADAPT_ADAM },
        { "DAdaptation", SD_OPTIM_DADAPT_ADAM_PREPRINT }, { "DAdaptAdamPreprint", SD_OPTIM_DADAPT_ADAM_PREPRINT },
        { "AdamW8bit", SD_OPTIM_ADAMW8BIT }, { "PagedAdamW8bit", SD_OPTIM_PAGED_ADAMW8BIT },
        { "PagedAdamW", SD_OPTIM_PAGED_ADAMW }, { "PagedAdamW32bit", SD_OPTIM_PAGED_ADAMW32BIT },
        { "Lion8bit", SD_OPTIM_LION8BIT }, { "PagedLion8bit", SD_OPTIM_PAGED_LION8BIT },
        { "SGDNesterov8bit", SD_OPTIM_SGD_NESTEROV8BIT }, { "AdamWScheduleFree", SD_OPTIM_ADAMW_SF },
        { "RAdamScheduleFree", SD_OPTIM_RADAM_SF }, { "SGDScheduleFree", SD_OPTIM_SGD_SF },
        { "DAdaptSGD", SD_OPTIM_DADAPT_SGD }, { "DAdaptAdaGrad", SD_OPTIM_DADAPT_ADAGRAD },
        { "DAdaptAdan", SD_OPTIM_DADAPT_ADAN }, { "DAdaptAdanIP", SD_OPTIM_DADAPT_ADAN_IP },
        { "DAdaptLion", SD_OPTIM_DADAPT_LION },
    };
    for (size_t i = 0; i < sizeof impl / sizeof *impl; i++)
        if (!strcasecmp(type, impl[i].name)) {
            *kind = impl[i].k;
            return SD_OK;
        }
    return sd_err(SD_EUNSUPPORTED, "optimizer %s is not implemented yet (AdamW, AdamW8bit, PagedAdamW8bit, PagedAdamW, "
                  "PagedAdamW32bit, Lion, Lion8bit, PagedLion8bit, SGDNesterov, SGDNesterov8bit, AdamWScheduleFree, "
                  "RAdamScheduleFree, SGDScheduleFree, Adafactor, Prodigy, DAdaptation, DAdaptAdamPreprint, "
                  "DAdaptAdam, DAdaptAdaGrad, DAdaptAdan, DAdaptAdanIP, DAdaptLion and DAdaptSGD are)", type);
}

/* ---- --optimizer_args ---------------------------------------------------------------------------- */

static int has_word(const char *list, const char *w)
{
    size_t L = strlen(w);
    for (const char *p = list; (p = strstr(p, w)) != NULL; p += L)
        if ((p == list || p[-1] == ' ') && (p[L] == ',' || p[L] == 0)) return 1;
    return 0;
}

static int is_num(const sd_py_value *v)
{
    return v->kind == SD_PY_INT || v->kind == SD_PY_FLOAT || v->kind == SD_PY_BOOL;
}

/* Python truthiness of a scalar; -1 for a value that is not one. */
static int truth(const sd_py_value *v)
{
    if (v->kind == SD_PY_NONE) return 0;
    if (is_num(v)) return v->f != 0;
    if (v->kind == SD_PY_STR) return v->s[0] != 0;
    if (v->kind == SD_PY_TUPLE || v->kind == SD_PY_LIST) return v->nitems != 0;
    return -1;
}

static int want_num(const char *item, const sd_py_value *v, double *out)
{
    if (!is_num(v) || !isfinite(v->f)) return sd_err(SD_EUSAGE, "--optimizer_args %s: expected a number", item);
    *out = v->f;
    return SD_OK;
}

static int want_pair(const char *item, const sd_py_value *v, const char *what, double *a, double *b)
{
    if ((v->kind != SD_PY_TUPLE && v->kind != SD_PY_LIST) || v->nitems != 2 || v->item_kind[0] == SD_PY_NONE ||
        v->item_kind[1] == SD_PY_NONE)
        return sd_err(SD_EUSAGE, "--optimizer_args %s: %s must be two numbers", item, what);
    *a = v->items[0];
    *b = v->items[1];
    return SD_OK;
}

/* One key of c->kind. */
static int apply_arg(sd_optim_config *c, const char *item, const char *key, const sd_py_value *v)
{
    const sd_optim_kind k = c->kind;
    const char *kn = sd_optim_kind_name(k);
    double x = 0;
    int rc, t = truth(v);
    if (sd_optim_is_bnb1(k)) {   /* Lion8bit / PagedLion8bit / SGD8bit: bnb's constructors */
        int sgd = k == SD_OPTIM_SGD_NESTEROV8BIT;
        rc = sd_bnb1_config_set(&c->b8, bnb_cls(k), sd_optim_class_name(k), sgd, k == SD_OPTIM_LION8BIT, key, v);
        if (rc) return sd_err_prefix(rc, "--optimizer_args %s", item);
        c->beta1 = c->b8.beta1, c->beta2 = c->b8.beta2, c->weight_decay = c->b8.weight_decay;
        if (sgd) c->momentum = c->b8.beta1, c->dampening = c->b8.beta2;
        return SD_OK;
    }
    if (sd_optim_is_bnb(k)) {   /* bitsandbytes' constructor, with its messages */
        if (k != SD_OPTIM_ADAMW8BIT && !strcmp(key, "is_paged"))   /* the Paged classes fix it */
            return sd_err(SD_EUSAGE, "--optimizer_args %s: %s.__init__() got an unexpected keyword argument '%s'",
                          item, kn, key);
        rc = sd_adamw8bit_config_set(&c->b8, key, v);
        if (rc) return sd_err_prefix(rc, "--optimizer_args %s", item);
        c->beta1 = c->b8.beta1, c->beta2 = c->b8.beta2, c->eps = c->b8.eps, c->weight_decay = c->b8.weight_decay;
        return SD_OK;
    }
    if (!strcmp(key, "lr") || (k == SD_OPTIM_SGD_NESTEROV && !strcmp(key, "nesterov")))
        return sd_err(SD_EUSAGE, "--optimizer_args %s: %s() got multiple values for keyword argument '%s' (sd-train "
                      "passes %s itself)", item, kn, key, key[0] == 'l' ? "--learning_rate" : "nesterov=True");
    if (!has_word(kinds[k].args, key))
        return sd_err(SD_EUSAGE, "--optimizer_args %s: %s has no argument '%s' (it takes %s)", item, kn, key,
                      kinds[k].args);
    if (!strcmp(key, "betas") && (k == SD_OPTIM_DADAPT_ADAN || k == SD_OPTIM_DADAPT_ADAN_IP)) {
        /* betas[0..2]; the reference indexes the value, so a longer sequence passes too */
        if ((v->kind != SD_PY_TUPLE && v->kind != SD_PY_LIST) || v->nitems < 3 || v->item_kind[0] == SD_PY_NONE ||
            v->item_kind[1] == SD_PY_NONE || v->item_kind[2] == SD_PY_NONE)
            return sd_err(SD_EUSAGE, "--optimizer_args %s: betas must be three numbers", item);
        for (int b = 0; b < 3; b++)
            if (!(v->items[b] >= 0 && v->items[b] < 1))
                return sd_err(SD_EUSAGE, "--optimizer_args %s: Invalid beta parameter at index %d: %g", item, b,
                              v->items[b]);
        c->beta1 = v->items[0], c->beta2 = v->items[1], c->beta3 = v->items[2];
    } else if (!strcmp(key, "betas")) {
        if ((rc = want_pair(item, v, "betas", &c->beta1, &c->beta2))) return rc;
        int ok = k == SD_OPTIM_LION ? c->beta1 >= 0 && c->beta1 <= 1 && c->beta2 >= 0 && c->beta2 <= 1
                                    : c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1;
        if (!ok)
            return sd_err(SD_EUSAGE, "--optimizer_args %s: invalid beta parameter (0 <= beta %s 1)", item,
                          k == SD_OPTIM_LION ? "<=" : "<");
    } else if (!strcmp(key, "eps") && k == SD_OPTIM_ADAFACTOR) {
        if ((rc = want_pair(item, v, "eps", &c->eps, &c->eps2))) return rc;
    } else if (!strcmp(key, "eps")) {
        if ((rc = want_num(item, v, &x))) return rc;
        if (k == SD_OPTIM_ADAMW || sd_optim_is_schedulefree(k) ? x < 0 : x <= 0)
            return sd_err(SD_EUSAGE, "--optimizer_args %s: Invalid epsilon value: %g", item, x);
        c->eps = x;
    } else if (!strcmp(key, "weight_decay")) {
        if ((rc = want_num(item, v, &x))) return rc;
        if (x < 0 && (k == SD_OPTIM_ADAMW || k == SD_OPTIM_SGD_NESTEROV))
            return sd_err(SD_EUSAGE, "--optimizer_args %s: Invalid weight_decay value: %g", item, x);
        c->weight_decay = x;
    } else if (!strcmp(key, "beta1") || !strcmp(key, "beta3")) {   /* None or a number */
        if (v->kind == SD_PY_NONE) x = NAN;
        else if ((rc = want_num(item, v, &x))) return rc;
        if (key[4] == '3') c->beta3 = x;
        else c->has_beta1 = !isnan(x), c->beta1 = isnan(x) ? 0.9 : x;
    } else if (!strcmp(key, "momentum") || !strcmp(key, "dampening") || !strcmp(key, "clip_threshold") ||
               !strcmp(key, "decay_rate") || !strcmp(key, "d0") || !strcmp(key, "d_coef") ||
               !strcmp(key, "growth_rate")) {
        if ((rc = want_num(item, v, &x))) return rc;
        if (!strcmp(key, "momentum")) {
            if (x < 0 && k == SD_OPTIM_DADAPT_ADAGRAD)
                return sd_err(SD_EUSAGE, "--optimizer_args %s: Momentum %g must be non-negative", item, x);
            if (x < 0) return sd_err(SD_EUSAGE, "--optimizer_args %s: Invalid momentum value: %g", item, x);
            c->momentum = x;
        } else if (!strcmp(key, "dampening")) c->dampening = x;
        else if (!strcmp(key, "clip_threshold")) c->clip_threshold = x;
        else if (!strcmp(key, "decay_rate")) c->decay_rate = x;
        else if (!strcmp(key, "d_coef")) c->d_coef = x;
        else if (!strcmp(key, "growth_rate")) c->growth_rate = x;
        else {
            /* DAdaptLion's constructor has no check of d0 */
            if (!(x > 0) && k != SD_OPTIM_DADAPT_LION)
                return sd_err(SD_EUSAGE, "--optimizer_args %s: Invalid d0 value: %g", item, x);
            c->d0 = x;
        }
    } else if (!strcmp(key, "warmup_steps") || !strcmp(key, "r") || !strcmp(key, "weight_lr_power")) {
        if ((rc = want_num(item, v, &x))) return rc;   /* schedulefree: no checks of its own */
        if (key[0] == 'w' && key[1] == 'a') c->warmup_steps = x;
        else if (key[0] == 'r') c->sf_r = x;
        else c->weight_lr_power = x;
    } else if (!strcmp(key, "slice_p") || !strcmp(key, "log_every")) {
        if (v->kind != SD_PY_INT) return sd_err(SD_EUSAGE, "--optimizer_args %s: expected an integer", item);
        if (key[0] == 's') {
            if (v->i < 1) return sd_err(SD_EUSAGE, "--optimizer_args %s: slice_p must be at least 1", item);
            c->slice_p = v->i;
        }
    } else {   /* switches */
        if (t < 0) return sd_err(SD_EUSAGE, "--optimizer_args %s: expected True or False", item);
        if ((!strcmp(key, "amsgrad") || !strcmp(key, "maximize") || !strcmp(key, "fsdp_in_use")) && t)
            return sd_err(SD_EUNSUPPORTED, "--optimizer_args %s: %s with %s=True is not implemented yet", item, kn, key);
        if (!strcmp(key, "decoupled_weight_decay")) c->decoupled_weight_decay = t;
        else if (!strcmp(key, "scale_parameter")) c->scale_parameter = t;
        else if (!strcmp(key, "relative_step")) c->relative_step = t;
        else if (!strcmp(key, "warmup_init")) c->warmup_init = t;
        else if (!strcmp(key, "decouple")) c->decouple = t;
        else if (!strcmp(key, "use_bias_correction")) c->use_bias_correction = t;
        else if (!strcmp(key, "safeguard_warmup")) c->safeguard_warmup = t;
        else if (!strcmp(key, "silent_sgd_phase")) c->silent_sgd_phase = t;
        else if (!strcmp(key, "no_prox")) c->no_prox = t;
        /* foreach, fused, capturable, differentiable, use_triton: how it is computed, not what */
    }
    return SD_OK;
}

int sd_optim_config_parse_args(sd_optim_config *c, const char *const *items, int n)
{
    for (int i = 0; i < n; i++) {
        char key[64];
        const char *val;
        int rc = sd_py_split_kv(items[i], key, sizeof key, &val);
        if (rc) return sd_err_prefix(rc, "--optimizer_args");
        sd_py_value v;
        rc = sd_py_literal(val, &v);
        if (rc) return sd_err_prefix(rc, "--optimizer_args %s", key);
        rc = apply_arg(c, items[i], key, &v);
        if (rc) return rc;
        if (c->nargs == SD_OPTIM_MAX_ARGS)
            return sd_err(SD_EUSAGE, "--optimizer_args: more than %d items", SD_OPTIM_MAX_ARGS);
        /* the reference keeps a dict: a repeated key keeps its first position, last value */
        int slot = c->nargs;
        for (int j = 0; j < c->nargs; j++)
            if (!strcmp(c->arg_key[j], key)) slot = j;
        snprintf(c->arg_key[slot], sizeof c->arg_key[slot], "%s", key);
        snprintf(c->arg_str[slot], sizeof c->arg_str[slot], "%s", v.repr);
        if (slot == c->nargs) c->nargs++;
    }
    if (c->kind == SD_OPTIM_ADAFACTOR && c->warmup_init && !c->relative_step) {
        /* kohya: "set relative_step to True because warmup_init is True" (the dict entry too) */
        c->relative_step = 1;
        for (int j = 0; j < c->nargs; j++)
            if (!strcmp(c->arg_key[j], "relative_step")) snprintf(c->arg_str[j], sizeof c->arg_str[j], "True");
    }
    return SD_OK;
}

int sd_optim_config_check(const sd_optim_config *c)
{
    char b[40];
    switch (c->kind) {
    case SD_OPTIM_LION:
        if (!(c->lr > 0)) return sd_err(SD_EUSAGE, "Lion needs a learning rate above 0 (got %s)", sd_py_float(c->lr, b, sizeof b));
        break;
    case SD_OPTIM_SGD_NESTEROV:
        if (c->lr < 0) return sd_err(SD_EUSAGE, "SGD: Invalid learning rate: %s", sd_py_float(c->lr, b, sizeof b));
        if (c->momentum <= 0 || c->dampening != 0)
            return sd_err(SD_EUSAGE, "SGDNesterov: Nesterov momentum requires a momentum and zero dampening");
        break;
    case SD_OPTIM_ADAFACTOR:
        if (!isnan(c->lr) && c->relative_step)
            return sd_err(SD_EUSAGE, "Adafactor: Cannot combine manual `lr` and `relative_step=True` options");
        if (c->warmup_init && !c->relative_step)
            return sd_err(SD_EUSAGE, "Adafactor: `warmup_init=True` requires `relative_step=True`");
        break;
    case SD_OPTIM_PRODIGY:
    case SD_OPTIM_DADAPT_ADAM:
    case SD_OPTIM_DADAPT_ADAM_PREPRINT:
    case SD_OPTIM_DADAPT_SGD:
    case SD_OPTIM_DADAPT_ADAN:
    case SD_OPTIM_DADAPT_ADAN_IP:
        if (!(c->lr > 0))
            return sd_err(SD_EUSAGE, "%s: Invalid learning rate: %s", sd_optim_kind_name(c->kind),
                          sd_py_float(c->lr, b, sizeof b));
        break;
    case SD_OPTIM_DADAPT_ADAGRAD:
        if (!(c->lr > 0))
            return sd_err(SD_EUSAGE, "DAdaptAdaGrad: Learning rate %s must be positive", sd_py_float(c->lr, b, sizeof b));
        break;
    case SD_OPTIM_DADAPT_LION:   /* 0.0 <= lr */
        if (!(c->lr >= 0))
            return sd_err(SD_EUSAGE, "DAdaptLion: Invalid learning rate: %s", sd_py_float(c->lr, b, sizeof b));
        break;
    case SD_OPTIM_ADAMW8BIT:
    case SD_OPTIM_PAGED_ADAMW8BIT:
    case SD_OPTIM_PAGED_ADAMW:
    case SD_OPTIM_PAGED_ADAMW32BIT: {
        sd_adamw8bit_config b8 = c->b8;
        b8.lr = c->lr;
        int rc = sd_adamw8bit_config_check(&b8);
        return rc ? sd_err_prefix(rc, "--optimizer_type %s", sd_optim_kind_name(c->kind)) : SD_OK;
    }
    case SD_OPTIM_SGD_SF:   /* SGDScheduleFree.__init__'s checks */
        if (c->lr < 0) return sd_err(SD_EUSAGE, "SGDScheduleFree: Invalid learning rate: %s", sd_py_float(c->lr, b, sizeof b));
        if (c->weight_decay < 0)
            return sd_err(SD_EUSAGE, "SGDScheduleFree: Invalid weight_decay value: %s",
                          sd_py_float(c->weight_decay, b, sizeof b));
        if (c->momentum <= 0 || c->momentum >= 1)
            return sd_err(SD_EUSAGE, "SGDScheduleFree: Momentum must be between 0 and 1 exclusive: %s",
                          sd_py_float(c->momentum, b, sizeof b));
        break;
    case SD_OPTIM_ADAMW_SF:
    case SD_OPTIM_RADAM_SF:   /* no checks in the constructor; eval() divides by beta1 */
        if (c->beta1 == 0)
            return sd_err(SD_EUSAGE, "%s: betas[0] = 0: optimizer.eval() divides by it (ZeroDivisionError: float "
                          "division by zero)", sd_optim_kind_name(c->kind));
        break;
    case SD_OPTIM_LION8BIT:
    case SD_OPTIM_PAGED_LION8BIT:
    case SD_OPTIM_SGD_NESTEROV8BIT: {
        sd_adamw8bit_config b8 = c->b8;
        b8.lr = c->lr;
        int rc = sd_bnb1_config_check(&b8, bnb_cls(c->kind), c->kind == SD_OPTIM_SGD_NESTEROV8BIT);
        return rc ? sd_err_prefix(rc, "--optimizer_type %s", sd_optim_kind_name(c->kind)) : SD_OK;
    }
    default:
        if (c->lr < 0) return sd_err(SD_EUSAGE, "AdamW: Invalid learning rate: %s", sd_py_float(c->lr, b, sizeof b));
        break;
    }
    return SD_OK;
}

static int find_arg(const sd_optim_config *c, const char *key)
{
    for (int i = 0; i < c->nargs; i++)
        if (!strcmp(c->arg_key[i], key)) return i;
    return -1;
}

int sd_optim_describe(const sd_optim_config *c, char *out, size_t n)
{
    /* kohya adds its own kwargs after the user's: SGDNesterov momentum, Adafactor relative_step */
    const char *extra = NULL;
    if ((c->kind == SD_OPTIM_SGD_NESTEROV || c->kind == SD_OPTIM_SGD_NESTEROV8BIT) && find_arg(c, "momentum") < 0)
        extra = "momentum=0.9";
    if (c->kind == SD_OPTIM_ADAFACTOR && find_arg(c, "relative_step") < 0) extra = "relative_step=True";
    size_t k = (size_t)snprintf(out, n, "%s", sd_optim_class_name(c->kind));
    for (int i = 0; i < c->nargs && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s=%s", i ? "," : "(", c->arg_key[i], c->arg_str[i]);
    if (extra && k < n) k += (size_t)snprintf(out + k, n - k, "%s%s", c->nargs ? "," : "(", extra);
    if ((c->nargs || extra) && k < n) k += (size_t)snprintf(out + k, n - k, ")");
    return k < n ? SD_OK : sd_err(SD_ERANGE, "optimizer description too long");
}

void sd_optim_reference_warnings(const sd_optim_config *c, double learning_rate, const sd_optim_group_desc *groups,
                                 int ngroups, const char *lr_scheduler, double max_grad_norm, char *buf, size_t n)
{
    size_t k = 0;
    char b[40];
#define ADD(...) do { if (k < n) k += (size_t)snprintf(buf + k, n - k, __VA_ARGS__); } while (0)
    if (n) buf[0] = 0;
    if (sd_optim_kind_has_d(c->kind)) {
        double actual = ngroups > 0 ? groups[0].lr : learning_rate;
        int distinct = ngroups > 0;
        for (int g = 1; g < ngroups; g++) {
            int seen = 0;
            for (int h = 0; h < g; h++) seen |= groups[h].lr == groups[g].lr;
            distinct += !seen;
        }
        if (actual <= 0.1)
            ADD("learning rate is too low. If using D-Adaptation or Prodigy, set learning rate around 1.0: lr=%s\n"
                "recommend option: lr=1.0\n", sd_py_float(actual, b, sizeof b));
        if (distinct > 1)
            ADD("when multiple learning rates are specified with dadaptation (e.g. for Text Encoder and U-Net), "
                "only the first one will take effect: lr=%s\n", sd_py_float(actual, b, sizeof b));
    } else if (c->kind == SD_OPTIM_ADAFACTOR && c->relative_step) {
        if (learning_rate != 0.0) ADD("learning rate is used as initial_lr\n");
        if (ngroups > 0) ADD("unet_lr and text_encoder_lr are ignored\n");
    } else if (c->kind == SD_OPTIM_SGD_NESTEROV8BIT && find_arg(c, "momentum") < 0) {
        ADD("8-bit SGD with Nesterov must be with momentum, set momentum to 0.9\n");
    } else if (c->kind == SD_OPTIM_ADAFACTOR) {
        if (max_grad_norm != 0.0)
            ADD("because max_grad_norm is set, clip_grad_norm is enabled. consider set to 0\n");
        if (!lr_scheduler || strcmp(lr_scheduler, "constant_with_warmup")) ADD("constant_with_warmup will be good\n");
        if (c->clip_threshold != 1.0) ADD("clip_threshold=1.0 will be good\n");
    }
#undef ADD
    if (k >= n && n) buf[n - 1] = 0;
    if (k && k < n && buf[k - 1] == '\n') buf[k - 1] = 0;
}

/* ---- the optimizer ------------------------------------------------------------------------- */

/* Shape of the Adafactor factored statistics: shape[:-1] (rows) and shape[:-2] + shape[-1:]. */
static int bufs_of(const sd_optim_config *c, const sd_tensor *t, sd_optim_buf_info out[SD_OPTIM_MAX_BUFS])
{
    int nb = 0;
    size_t n = (size_t)sd_tensor_numel(t);
#define FULL(nm) do { out[nb].name = nm; out[nb].ndim = t->ndim; memcpy(out[nb].shape, t->shape, sizeof t->shape); \
                      out[nb].n = n; nb++; } while (0)
    switch (c->kind) {
    case SD_OPTIM_ADAMW:
        FULL("exp_avg");
        FULL("exp_avg_sq");
        break;
    case SD_OPTIM_LION:
        FULL("exp_avg");
        break;
    case SD_OPTIM_SGD_NESTEROV:
        FULL("momentum_buffer");
        break;
    case SD_OPTIM_ADAFACTOR:
        if (c->has_beta1) FULL("exp_avg");
        if (t->ndim >= 2) {
            out[nb].name = "exp_avg_sq_row";
            out[nb].ndim = t->ndim - 1;
            memcpy(out[nb].shape, t->shape, sizeof t->shape);
            out[nb].n = n / (size_t)t->shape[t->ndim - 1];
            nb++;
            out[nb].name = "exp_avg_sq_col";
            out[nb].ndim = t->ndim - 1;
            memcpy(out[nb].shape, t->shape, sizeof t->shape);
            out[nb].shape[t->ndim - 2] = t->shape[t->ndim - 1];
            out[nb].n = n / (size_t)t->shape[t->ndim - 2];
            nb++;
        } else {
            FULL("exp_avg_sq");
        }
        break;
    case SD_OPTIM_ADAMW8BIT:   /* its own arrays: sd_optim_param_save_extra */
    case SD_OPTIM_PAGED_ADAMW8BIT:
    case SD_OPTIM_PAGED_ADAMW:
    case SD_OPTIM_PAGED_ADAMW32BIT:
    case SD_OPTIM_LION8BIT:
    case SD_OPTIM_PAGED_LION8BIT:
    case SD_OPTIM_SGD_NESTEROV8BIT:
        break;
    case SD_OPTIM_ADAMW_SF:
    case SD_OPTIM_RADAM_SF:
        FULL("z");
        FULL("exp_avg_sq");
        break;
    case SD_OPTIM_SGD_SF:
        FULL("z");
        break;
    case SD_OPTIM_DADAPT_SGD:
        FULL("z");
        FULL("s");
        FULL("x0");
        break;
    case SD_OPTIM_DADAPT_ADAGRAD:
        FULL("alphak");
        FULL("sk");
        FULL("x0");
        break;
    case SD_OPTIM_DADAPT_ADAN:
    case SD_OPTIM_DADAPT_ADAN_IP:   /* AdanIP: 'exp_avg_diff' holds v and 'exp_avg_sq' the δ average */
        FULL("s");
        FULL("exp_avg");
        FULL("exp_avg_diff");
        FULL("exp_avg_sq");
        FULL("pre_grad");
        break;
    case SD_OPTIM_DADAPT_LION:
        FULL("exp_avg");
        FULL("s");
        break;
    case SD_OPTIM_PRODIGY: {
        if (c->beta1 > 0) FULL("exp_avg");
        FULL("exp_avg_sq");
        size_t ns = (n + (size_t)c->slice_p - 1) / (size_t)c->slice_p;
        static const char *const sn[2] = { "s", "p0" };
        for (int j = 0; j < 2; j++) {
            out[nb].name = sn[j];
            out[nb].ndim = 1;
            out[nb].shape[0] = (int64_t)ns;
            out[nb].n = ns;
            nb++;
        }
        break;
    }
    default:
        FULL("exp_avg");
        FULL("exp_avg_sq");
        FULL("s");
        break;
    }
#undef FULL
    return nb;
}

int sd_optim_param_bufs(const sd_optim *o, size_t i, sd_optim_buf_info out[SD_OPTIM_MAX_BUFS])
{
    const sd_optim_param *q = &o->params[i];
    int nb = bufs_of(&o->cfg, &q->p->value, out);
    for (int j = 0; j < nb; j++) out[j].data = q->buf[j];
    return nb;
}

int sd_optim_scalars(sd_optim *o, const char *names[6], double *vals[6])
{
    int k = 0;
#define S(f) (names[k] = #f, vals[k] = &o->ds.f, k++)
    switch (o->cfg.kind) {
    case SD_OPTIM_PRODIGY:
        S(d), S(d_max), S(d_numerator), S(k);
        break;
    case SD_OPTIM_DADAPT_ADAM:
        S(d), S(numerator_weighted), S(k);
        break;
    case SD_OPTIM_DADAPT_ADAM_PREPRINT:
        S(d), S(gsq_weighted), S(k);
        break;
    case SD_OPTIM_ADAMW_SF:
    case SD_OPTIM_RADAM_SF:
    case SD_OPTIM_SGD_SF:
        S(k), S(sf_train);
        break;
    case SD_OPTIM_DADAPT_SGD:
        S(d), S(numerator_weighted), S(k), S(g0_norm);
        break;
    case SD_OPTIM_DADAPT_ADAGRAD:
        S(d), S(gsq_weighted), S(sksq_weighted), S(skl1), S(k);
        break;
    case SD_OPTIM_DADAPT_ADAN:
        S(d), S(gsq_weighted), S(k);
        break;
    case SD_OPTIM_DADAPT_ADAN_IP:
        S(d), S(numerator_weighted), S(k), S(d_tensor);
        break;
    case SD_OPTIM_DADAPT_LION:
        S(d), S(numerator_weighted), S(k);
        break;
    default:
        break;
    }
#undef S
    return k;
}

int sd_optim_init(sd_optim *o, const sd_optim_config *cfg, const sd_optim_group_desc *groups,
                  int ngroups)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    if ((unsigned)cfg->kind >= SD_OPTIM_NKINDS) return sd_err(SD_EINVAL, "optimizer: bad kind %d", (int)cfg->kind);
    if (sd_optim_kind_has_d(cfg->kind) && !sd_optim_kind_first_lr(cfg->kind)) {
        double mx = 0;
        for (int g = 0; g < ngroups; g++) mx = fmax(mx, groups[g].lr);
        for (int g = 0; g < ngroups; g++)
            if (groups[g].lr != mx && groups[g].lr != 0) {
                char a[40], b[40];
                return sd_err(SD_EUSAGE, "%s: Setting different lr values in different parameter groups is only "
                              "supported for values of 0 (the groups have %s and %s; give --unet_lr and "
                              "--text_encoder_lr the same value)", sd_optim_kind_name(cfg->kind),
                              sd_py_float(groups[g].lr, a, sizeof a), sd_py_float(mx, b, sizeof b));
            }
    }
    size_t np = 0;
    for (int g = 0; g < ngroups; g++) np += groups[g].count;
    o->groups = calloc((size_t)(ngroups > 0 ? ngroups : 1), sizeof *o->groups);
    o->params = calloc(np ? np : 1, sizeof *o->params);
    if (!o->groups || !o->params) { sd_optim_free(o); return sd_err(SD_ENOMEM, "optimizer: out of memory"); }
    o->ngroups = ngroups;
    size_t floats = 0, scratch = 0;
    for (int g = 0; g < ngroups; g++) {
        sd_optim_group *G = &o->groups[g];
        snprintf(G->name, sizeof G->name, "%s", groups[g].name ? groups[g].name : "");
        G->lr = groups[g].lr;
        G->weight_decay = cfg->weight_decay;
        G->first = o->nparams;
        G->count = groups[g].count;
        G->used_lr = NAN;
        for (size_t i = 0; i < groups[g].count; i++) {
            sd_param *p = groups[g].params[i];
            if (!p || !(p->flags & SD_PARAM_TRAINABLE) || !p->value.data || !(p->grad.data || p->pool) ||
                p->value.dtype != SD_F32) {
                sd_optim_free(o);
                return sd_err(SD_EINVAL, "optimizer: parameter '%s' is not a trainable allocated f32 "
                              "parameter", p ? p->key : "(null)");
            }
            if (p->value.device != SD_DEV_CPU) {
                sd_optim_free(o);
                return sd_err(SD_EUNSUPPORTED, "optimizer: parameter '%s' is in device memory; the "
                              "CUDA optimizer step is not implemented yet", p->key);
            }
            for (size_t j = 0; j < o->nparams; j++)
                if (o->params[j].p == p) {
                    sd_optim_free(o);
                    return sd_err(SD_EINVAL, "optimizer: parameter '%s' is in two groups", p->key);
                }
            sd_optim_param *op = &o->params[o->nparams++];
            op->p = p;
            op->group = g;
            sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
            int nb = bufs_of(cfg, &p->value, bi);
            for (int j = 0; j < nb; j++) floats += bi[j].n;
            size_t n = (size_t)sd_tensor_numel(&p->value);
            o->numel += (int64_t)n;
            if (cfg->kind == SD_OPTIM_ADAFACTOR) {
                size_t cols = p->value.ndim >= 2 ? n / (size_t)p->value.shape[p->value.ndim - 2] : 0;
                if (n + cols > scratch) scratch = n + cols;
            }
        }
    }
    if (sd_optim_is_bnb(cfg->kind)) {
        /* PagedAdamW / PagedAdamW32bit: optim_bits 32, every tensor on the 32-bit path */
        int64_t min8 = cfg->kind == SD_OPTIM_PAGED_ADAMW || cfg->kind == SD_OPTIM_PAGED_ADAMW32BIT
                           ? INT64_MAX : cfg->b8.min_8bit_size;
        o->st8 = calloc(o->nparams ? o->nparams : 1, sizeof *o->st8);
        if (!o->st8) { sd_optim_free(o); return sd_err(SD_ENOMEM, "optimizer: out of memory"); }
        for (size_t i = 0; i < o->nparams; i++) {
            int64_t n = sd_tensor_numel(&o->params[i].p->value);
            int rc = sd_optim_is_bnb1(cfg->kind) ? sd_bnb1_state_init(&o->st8[i], n, min8)
                                                 : sd_adamw8bit_state_init(&o->st8[i], n, min8);
            if (rc) { sd_optim_free(o); return rc; }
        }
    }
    o->state = calloc(floats ? floats : 1, sizeof(float));
    if (!o->state) { sd_optim_free(o); return sd_err(SD_ENOMEM, "optimizer: out of memory for %zu state values", floats); }
    o->state_floats = floats;
    if (scratch) {
        o->scratch = malloc(scratch * sizeof(float));
        if (!o->scratch) { sd_optim_free(o); return sd_err(SD_ENOMEM, "optimizer: out of memory"); }
        o->scratch_floats = scratch;
    }
    size_t off = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        sd_optim_param *q = &o->params[i];
        sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
        int nb = bufs_of(cfg, &q->p->value, bi);
        for (int j = 0; j < nb; j++) {
            q->buf[j] = o->state + off;
            off += bi[j].n;
            if (!strcmp(bi[j].name, "exp_avg")) q->m = q->buf[j];
            if (!strcmp(bi[j].name, "exp_avg_sq")) q->v = q->buf[j];
        }
    }
    o->ds.d = o->ds.d_max = o->ds.d_hat = cfg->d0;
    /* kohya's get_optimizer calls optimizer.train() on the new optimizer (no state: nothing moves) */
    o->ds.sf_train = sd_optim_is_schedulefree(cfg->kind) ? 1 : 0;
    for (int g = 0; g < o->ngroups; g++) o->groups[g].sf_weight_sum = 0.0, o->groups[g].sf_lr_max = -1.0;
    return SD_OK;
}

void sd_optim_free(sd_optim *o)
{
    for (size_t i = 0; o->st8 && i < o->nparams; i++) {
        if (sd_optim_on_device(o)) sd_device_free(o->st8[i].mem), o->st8[i].mem = NULL;
        sd_adamw8bit_state_free(&o->st8[i]);
    }
    free(o->st8);
    free(o->groups);
    free(o->params);
    if (sd_optim_on_device(o)) sd_device_free(o->state), sd_device_free(o->scratch);
    else free(o->state), free(o->scratch);
    memset(o, 0, sizeof *o);
}

int64_t sd_optim_numel(const sd_optim *o)
{
    return o->numel;
}

double sd_optim_logged_lr(const sd_optim *o, int group, double sched_lr)
{
    if (sd_optim_adafactor_schedule(&o->cfg) && group >= 0 && group < o->ngroups && !isnan(o->groups[group].used_lr))
        return o->groups[group].used_lr;
    return sched_lr;
}

void sd_adamw_scalars_make(sd_adamw_scalars *s, double lr, double wd, double beta1, double beta2,
                           double eps, int64_t step)
{
    double bc1 = 1.0 - pow(beta1, (double)step);
    double bc2 = 1.0 - pow(beta2, (double)step);
    s->decay = (float)(1.0 - lr * wd);
    s->beta1 = (float)beta1;
    s->omb1 = (float)(1.0 - beta1);
    s->beta2 = (float)beta2;
    s->omb2 = (float)(1.0 - beta2);
    s->bc2_sqrt = (float)sqrt(bc2);
    s->eps = (float)eps;
    s->neg_step = (float)(-(lr / bc1));
}

void sd_adamw_update_f32(float *restrict p, const float *restrict g, float *restrict m,
                         float *restrict v, size_t n, const sd_adamw_scalars *s)
{
    /* elementwise: the same bytes for any thread count (and as the CUDA kernel, optim_elem.h) */
    int par = n >= ((size_t)1 << 16) && !omp_in_parallel();
    #pragma omp parallel for schedule(static) if (par)
    for (size_t i = 0; i < n; i++) sd_adamw_elem_f32(&p[i], g[i], &m[i], &v[i], s);
}

sd_tensor sd_optim_state_view(const sd_optim *o, const sd_param *p, float *data)
{
    sd_tensor t = p->value;
    t.data = data;
    t.dtype = SD_F32;
    t.device = (uint8_t)(o->ctx ? o->ctx->backend : SD_DEV_CPU);
    return t;
}

int sd_optim_kind_on_device(sd_optim_kind k)
{
    return k == SD_OPTIM_ADAMW || k == SD_OPTIM_LION || k == SD_OPTIM_SGD_NESTEROV || k == SD_OPTIM_ADAFACTOR ||
           sd_optim_is_bnb(k);
}

/* One bitsandbytes state block (one per parameter) to the device or back. */
static int move_st8_one(sd_adamw8bit_state *st, int to)
{
    size_t bytes = sd_adamw8bit_state_bytes(st);
    if (!st->mem || !bytes) return SD_OK;
    unsigned char *old = st->mem, *nb = NULL;
    int rc;
    if (to) {
        rc = sd_device_alloc((void **)&nb, bytes);
        if (!rc) rc = sd_device_copy_to_device(nb, old, bytes);
        if (rc) { sd_device_free(nb); return rc; }
        free(old);
    } else {
        nb = malloc(bytes);
        rc = nb ? sd_device_copy_to_host(nb, old, bytes) : sd_err(SD_ENOMEM, "optimizer: out of memory for %zu state bytes", bytes);
        if (rc) { free(nb); return rc; }
        sd_device_free(old);
    }
#define REBASE(f) if (st->f) st->f = (void *)(nb + ((unsigned char *)st->f - old))
    REBASE(m32); REBASE(v32); REBASE(m8); REBASE(v8); REBASE(absmax1); REBASE(absmax2);
#undef REBASE
    st->mem = nb;
    return SD_OK;
}

/* Every bitsandbytes state to the device or back; on failure the ones moved so far go back. */
static int move_st8(sd_optim *o, int to)
{
    for (size_t i = 0; o->st8 && i < o->nparams; i++) {
        int rc = move_st8_one(&o->st8[i], to);
        if (rc) {
            for (size_t j = 0; j < i; j++) (void)move_st8_one(&o->st8[j], !to);
            return rc;
        }
    }
    return SD_OK;
}

/* n floats from host memory to device memory or back (*buf replaced; freed on success). */
static int move_floats(float **buf, size_t n, int to_device)
{
    size_t bytes = (n ? n : 1) * sizeof(float);
    float *nb = NULL;
    int rc;
    if (to_device) {
        rc = sd_device_alloc((void **)&nb, bytes);
        if (!rc) rc = sd_device_copy_to_device(nb, *buf, bytes);
        if (rc) { sd_device_free(nb); return rc; }
        free(*buf);
    } else {
        nb = malloc(bytes);
        if (!nb) return sd_err(SD_ENOMEM, "optimizer: out of memory for %zu state values", n);
        rc = sd_device_copy_to_host(nb, *buf, bytes);
        if (rc) { free(nb); return rc; }
        sd_device_free(*buf);
    }
    *buf = nb;
    return SD_OK;
}

int sd_optim_place(sd_optim *o, sd_ctx *ctx)
{
    if (ctx && !sd_optim_kind_on_device(o->cfg.kind))
        return sd_err(SD_EUNSUPPORTED, "optimizer %s runs on the host only", sd_optim_kind_name(o->cfg.kind));
    int from = sd_optim_on_device(o), to = ctx && ctx->backend != SD_DEV_CPU;
    if (from != to) {
        int rc8 = move_st8(o, to);
        if (rc8) return rc8;
        /* Adafactor's scratch holds nothing between steps: a new one on the other side */
        float *ns = NULL;
        size_t sbytes = o->scratch_floats * sizeof(float);
        int rc = o->scratch && to ? sd_device_alloc((void **)&ns, sbytes) : SD_OK;
        if (!rc && o->scratch && !to && !(ns = malloc(sbytes)))
            rc = sd_err(SD_ENOMEM, "optimizer: out of memory for %zu scratch values", o->scratch_floats);
        float *old = o->state, *nb = o->state;
        if (!rc) rc = move_floats(&nb, o->state_floats, to);
        if (rc) {
            if (to) sd_device_free(ns);
            else free(ns);
            (void)move_st8(o, from);
            return rc;
        }
        if (o->scratch) {
            if (from) sd_device_free(o->scratch);
            else free(o->scratch);
            o->scratch = ns;
        }
        for (size_t i = 0; i < o->nparams; i++) {
            sd_optim_param *q = &o->params[i];
            for (int j = 0; j < SD_OPTIM_MAX_BUFS; j++)
                if (q->buf[j]) q->buf[j] = nb + (q->buf[j] - old);
            if (q->m) q->m = nb + (q->m - old);
            if (q->v) q->v = nb + (q->v - old);
        }
        o->state = nb;
    }
    o->ctx = ctx;
    return SD_OK;
}

size_t sd_optim_device_bytes(const sd_optim *o)
{
    size_t b = (o->state_floats + (o->scratch ? o->scratch_floats : 0)) * sizeof(float);
    for (size_t i = 0; o->st8 && i < o->nparams; i++) b += sd_adamw8bit_state_bytes(&o->st8[i]);
    return b;
}

/* --full_fp16 / --full_bf16: the reference's AdamW on f16/bf16 tensors (optim_elem.h). */
static void adamw_update_half(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                              size_t n, const sd_adamw_scalars *s, int bf16)
{
    int par = n >= ((size_t)1 << 16) && !omp_in_parallel();
    #pragma omp parallel for schedule(static) if (par)
    for (size_t i = 0; i < n; i++) sd_adamw_elem_half(&p[i], g[i], &m[i], &v[i], s, bf16);
}

static int adamw_step(sd_optim *o, const double *lr, const uint8_t *skip)
{
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *op = &o->params[i];
        const sd_optim_group *G = &o->groups[op->group];
        op->step++;
        op->initialized = 1;
        sd_adamw_scalars s;
        sd_adamw_scalars_make(&s, sd_optim_glr(o, lr, op->group), G->weight_decay, o->cfg.beta1,
                              o->cfg.beta2, o->cfg.eps, op->step);
        if (o->ctx) {
            sd_tensor m = sd_optim_state_view(o, op->p, op->m), v = sd_optim_state_view(o, op->p, op->v);
            int rc = sd_op_adamw(o->ctx, &op->p->value, &op->p->grad, &m, &v, &s, o->half);
            if (rc) return rc;
            continue;
        }
        float *p = (float *)op->p->value.data;
        const float *g = (const float *)op->p->grad.data;
        size_t n = (size_t)sd_tensor_numel(&op->p->value);
        if (o->half == SD_F32) sd_adamw_update_f32(p, g, op->m, op->v, n, &s);
        else adamw_update_half(p, g, op->m, op->v, n, &s, o->half == SD_BF16);
    }
    return SD_OK;
}

static int adamw8bit_step(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_adamw8bit_config *b = &o->cfg.b8;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *op = &o->params[i];
        op->step++;
        op->initialized = 1;
        int rc = o->ctx ? sd_adamw8bit_step_op(o->ctx, &o->st8[i], &op->p->value, &op->p->grad,
                                               sd_optim_glr(o, lr, op->group), b->beta1, b->beta2, b->eps,
                                               o->groups[op->group].weight_decay, op->step)
                        : sd_adamw8bit_step(&o->st8[i], (float *)op->p->value.data, (const float *)op->p->grad.data,
                                            sd_optim_glr(o, lr, op->group), b->beta1, b->beta2, b->eps,
                                            o->groups[op->group].weight_decay, op->step);
        if (rc) return rc;
    }
    return SD_OK;
}

/* Lion8bit / PagedLion8bit / SGDNesterov8bit: bnb's Optimizer1State, per parameter. */
static int bnb1_step(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_adamw8bit_config *b = &o->cfg.b8;
    sd_bnb1_optimizer opt = o->cfg.kind == SD_OPTIM_SGD_NESTEROV8BIT ? SD_BNB1_MOMENTUM : SD_BNB1_LION;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *op = &o->params[i];
        op->step++;
        op->initialized = 1;
        const int half = o->half == SD_F16 ? 1 : o->half == SD_BF16 ? 2 : 0;
        int rc = o->ctx ? sd_bnb1_step_op(o->ctx, &o->st8[i], opt, &op->p->value, &op->p->grad,
                                          sd_optim_glr(o, lr, op->group), b->beta1, b->beta2,
                                          o->groups[op->group].weight_decay, op->step, half)
                        : sd_bnb1_step(&o->st8[i], opt, (float *)op->p->value.data, (const float *)op->p->grad.data,
                                       sd_optim_glr(o, lr, op->group), b->beta1, b->beta2,
                                       o->groups[op->group].weight_decay, op->step, half);
        if (rc) return rc;
    }
    return SD_OK;
}

int sd_optim_param_save_extra(sd_optim *o, size_t i, sd_safetensors_writer *w, const char *prefix)
{
    return o->st8 && i < o->nparams ? sd_adamw8bit_save(&o->st8[i], w, prefix) : SD_OK;
}

int sd_optim_param_load_extra(sd_optim *o, size_t i, const sd_safetensors *f, const char *prefix)
{
    return o->st8 && i < o->nparams ? sd_adamw8bit_load(&o->st8[i], f, prefix) : SD_OK;
}

/* Half precision after a step of a kind computed in f32 (optim.h): the parameters, and the state
 * tensors the reference keeps in the parameter's dtype. Rounding is idempotent, so untouched
 * (skipped) parameters are rounded too. */
static int round_after_step(sd_optim *o)
{
    int bf = o->half == SD_BF16;
    int states = !(o->cfg.kind == SD_OPTIM_ADAFACTOR || sd_optim_is_bnb(o->cfg.kind));
    for (size_t i = 0; i < o->nparams; i++) {
        sd_optim_param *q = &o->params[i];
        sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
        int nb = states ? sd_optim_param_bufs(o, i, bi) : 0;
        if (o->ctx) {   /* AdamW, Lion, SGDNesterov: the states have the parameter's shape (Adafactor: none rounded) */
            int rc = sd_op_scale_round(o->ctx, &q->p->value, 1.0f, o->half, NULL);
            for (int j = 0; j < nb && !rc; j++) {
                sd_tensor t = sd_optim_state_view(o, q->p, bi[j].data);
                rc = sd_op_scale_round(o->ctx, &t, 1.0f, o->half, NULL);
            }
            if (rc) return rc;
            continue;
        }
        sd_round_half_n((float *)q->p->value.data, (size_t)sd_tensor_numel(&q->p->value), bf);
        for (int j = 0; j < nb; j++) sd_round_half_n(bi[j].data, bi[j].n, bf);
    }
    return SD_OK;
}

int sd_optim_step(sd_optim *o, const double *lr, const uint8_t *skip)
{
    int rc;
    switch (o->cfg.kind) {
    case SD_OPTIM_ADAMW: return adamw_step(o, lr, skip);   /* rounds per operation itself */
    case SD_OPTIM_LION: rc = sd_optim_step_lion(o, lr, skip); break;
    case SD_OPTIM_SGD_NESTEROV: rc = sd_optim_step_sgd(o, lr, skip); break;
    case SD_OPTIM_ADAFACTOR: rc = sd_optim_step_adafactor(o, lr, skip); break;
    case SD_OPTIM_PRODIGY: rc = sd_optim_step_prodigy(o, lr, skip); break;
    case SD_OPTIM_DADAPT_ADAM: rc = sd_optim_step_dadapt_adam(o, lr, skip); break;
    case SD_OPTIM_DADAPT_ADAM_PREPRINT: rc = sd_optim_step_dadapt_preprint(o, lr, skip); break;
    case SD_OPTIM_ADAMW8BIT:
    case SD_OPTIM_PAGED_ADAMW8BIT:
    case SD_OPTIM_PAGED_ADAMW:
    case SD_OPTIM_PAGED_ADAMW32BIT: rc = adamw8bit_step(o, lr, skip); break;
    case SD_OPTIM_LION8BIT:
    case SD_OPTIM_PAGED_LION8BIT:
    case SD_OPTIM_SGD_NESTEROV8BIT: rc = bnb1_step(o, lr, skip); break;
    case SD_OPTIM_ADAMW_SF:
    case SD_OPTIM_RADAM_SF:
    case SD_OPTIM_SGD_SF: rc = sd_optim_step_schedulefree(o, lr, skip); break;
    case SD_OPTIM_DADAPT_SGD: rc = sd_optim_step_dadapt_sgd(o, lr, skip); break;
    case SD_OPTIM_DADAPT_ADAGRAD: rc = sd_optim_step_dadapt_adagrad(o, lr, skip); break;
    case SD_OPTIM_DADAPT_ADAN:
    case SD_OPTIM_DADAPT_ADAN_IP: rc = sd_optim_step_dadapt_adan(o, lr, skip); break;
    case SD_OPTIM_DADAPT_LION: rc = sd_optim_step_dadapt_lion(o, lr, skip); break;
    default: return sd_err(SD_EINVAL, "optimizer: bad kind %d", (int)o->cfg.kind);
    }
    if (!rc && o->half != SD_F32) rc = round_after_step(o);
    return rc;
}

int sd_optim_set_half(sd_optim *o, sd_dtype dt)
{
    if (dt != SD_F32 && dt != SD_F16 && dt != SD_BF16)
        return sd_err(SD_EINVAL, "optimizer: parameters can be f32, f16 or bf16, not %s", sd_dtype_name(dt));
    if (dt == SD_BF16 && o->cfg.kind == SD_OPTIM_SGD_NESTEROV8BIT)
        for (size_t i = 0; i < o->nparams; i++)
            if (o->st8[i].mode == SD_BNB_STATE_F32)   /* the reference's error at its first step */
                return sd_err(SD_EUSAGE, "--optimizer_type SGDNesterov8bit with bfloat16 weights: bitsandbytes has no "
                              "bfloat16 32-bit momentum kernel for '%s' (%lld elements < min_8bit_size): \"Gradient+"
                              "optimizer bit data type combination not supported: grad torch.bfloat16, optimizer "
                              "torch.float32\"", o->params[i].p->key, (long long)o->st8[i].numel);
    o->half = dt;
    return dt != SD_F32 ? round_after_step(o) : SD_OK;
}

int sd_optim_round_grads(sd_optim *o)
{
    if (o->half == SD_F32) return SD_OK;
    for (size_t i = 0; i < o->nparams; i++) {
        sd_param *p = o->params[i].p;
        if (o->ctx) {
            int rc = sd_op_scale_round(o->ctx, &p->grad, 1.0f, o->half, NULL);
            if (rc) return rc;
        } else {
            sd_round_half_n((float *)p->grad.data, (size_t)sd_tensor_numel(&p->grad), o->half == SD_BF16);
        }
    }
    return SD_OK;
}

/* ---- clipping ------------------------------------------------------------------------------ */

/* A float rounded to the optimizer's parameter dtype (identity for f32). */
static float round_to(const sd_optim *o, float x)
{
    return o->half == SD_F32 ? x : sd_el_round(x, o->half == SD_BF16);
}

static int grad_norm(const sd_optim *o, double *out)
{
    /* torch: norm of the stacked per-tensor norms, each a tensor of the gradients' dtype; we
     * accumulate in double (differences are below f32 rounding of the result). */
    double total = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        const sd_tensor *gt = &o->params[i].p->grad;
        double s = 0;
        if (o->ctx) {
            int rc = sd_op_sumsq(o->ctx, gt, &s);
            if (rc) return rc;
        } else {
            const float *g = (const float *)gt->data;
            size_t n = (size_t)sd_tensor_numel(gt);
            for (size_t j = 0; j < n; j++) s += (double)g[j] * g[j];
        }
        float tn = round_to(o, (float)sqrt(s));
        total += (double)tn * tn;
    }
    for (size_t i = 0; i < o->nnorm_extra; i++) {
        const sd_tensor *gt = &o->norm_extra[i]->grad;
        double s = 0;
        if (o->ctx) {
            int rc = sd_op_sumsq(o->ctx, gt, &s);
            if (rc) return rc;
        } else {
            const float *g = (const float *)gt->data;
            size_t n = (size_t)sd_tensor_numel(gt);
            for (size_t j = 0; j < n; j++) s += (double)g[j] * g[j];
        }
        float tn = (float)sqrt(s);
        total += (double)tn * tn;
    }
    *out = (double)round_to(o, (float)sqrt(total));
    return SD_OK;
}

double sd_optim_grad_norm(const sd_optim *o)
{
    double norm;
    return grad_norm(o, &norm) ? NAN : norm;
}

int sd_optim_clip_param(sd_optim *o, sd_ctx *ctx, size_t i, double max_norm, double *norm_out)
{
    if (i >= o->nparams) return sd_err(SD_EINVAL, "optimizer: no parameter %zu", i);
    if (o->half != SD_F32) return sd_err(SD_EUNSUPPORTED, "optimizer: per-tensor clipping of f32 gradients only");
    sd_tensor *gt = &o->params[i].p->grad;
    if (!gt->data) return sd_err(SD_ESTATE, "optimizer: %s has no gradient", o->params[i].p->key);
    if (!ctx) ctx = o->ctx;
    int ops = ctx && (ctx->backend != SD_DEV_CPU || o->ctx);
    if (gt->device != SD_DEV_CPU && !ops) return sd_err(SD_EINVAL, "optimizer: %s: device gradient without a device context", o->params[i].p->key);
    float *g = (float *)gt->data;
    size_t n = (size_t)sd_tensor_numel(gt);
    double s = 0;
    if (ops) {
        int rc = sd_op_sumsq(ctx, gt, &s);
        if (rc) return rc;
    } else {
        for (size_t j = 0; j < n; j++) s += (double)g[j] * g[j];
    }
    /* torch: the norm of the stacked one-tensor norm, in float */
    float norm = (float)sqrt((double)(float)sqrt(s) * (float)sqrt(s));
    if (norm_out) *norm_out = norm;
    if (max_norm <= 0) return SD_OK;
    float coef = (float)max_norm / (norm + 1e-6f);
    if (coef > 1.0f) coef = 1.0f;
    if (ops) return sd_op_scale_round(ctx, gt, coef, SD_F32, NULL);
    for (size_t j = 0; j < n; j++) g[j] *= coef;
    return SD_OK;
}

int sd_optim_clip_grad_norm(sd_optim *o, double max_norm, double *total_norm)
{
    double norm;
    int rc = grad_norm(o, &norm);
    if (rc) return rc;
    if (total_norm) *total_norm = norm;
    if (max_norm <= 0) return SD_OK;
    /* max_norm / (total_norm + 1e-6), clamped to 1, in the norm's dtype */
    float coef = round_to(o, (float)max_norm / round_to(o, (float)norm + 1e-6f));
    if (coef > 1.0f) coef = 1.0f;
    for (size_t i = 0; i < o->nparams && o->ctx; i++)
        if ((rc = sd_op_scale_round(o->ctx, &o->params[i].p->grad, coef, o->half, NULL))) return rc;
    for (size_t i = 0; i < o->nparams && !o->ctx; i++) {
        float *g = (float *)o->params[i].p->grad.data;
        size_t n = (size_t)sd_tensor_numel(&o->params[i].p->grad);
        if (o->half == SD_F32)
            for (size_t j = 0; j < n; j++) g[j] *= coef;
        else
            for (size_t j = 0; j < n; j++) g[j] = round_to(o, g[j] * coef);
    }
    /* clip_grad_norm_ scales every gradient it measured */
    for (size_t i = 0; i < o->nnorm_extra && o->ctx; i++)
        if ((rc = sd_op_scale_round(o->ctx, &o->norm_extra[i]->grad, coef, SD_F32, NULL))) return rc;
    for (size_t i = 0; i < o->nnorm_extra && !o->ctx; i++) {
        float *g = (float *)o->norm_extra[i]->grad.data;
        size_t n = (size_t)sd_tensor_numel(&o->norm_extra[i]->grad);
        for (size_t j = 0; j < n; j++) g[j] *= coef;
    }
    return SD_OK;
}

/* ---- steps and epochs -------------------------------------------------------------------------- */

int sd_steps_plan_make(int64_t batches, int num_processes, int accum, int64_t max_train_steps,
                       int64_t max_train_epochs, sd_steps_plan *out)
{
    memset(out, 0, sizeof *out);
    if (batches < 1) return sd_err(SD_EINVAL, "no batches to train on (is the dataset empty, or smaller than one batch?)");
    if (num_processes < 1 || accum < 1) return sd_err(SD_EINVAL, "num_processes and gradient_accumulation_steps must be >= 1");
    if (max_train_epochs > 0)
        max_train_steps = max_train_epochs * (int64_t)ceil((double)batches / num_processes / accum);
    else if (max_train_steps <= 0)
        max_train_steps = 1600;
    out->max_train_steps = max_train_steps;
    out->batches_per_process = (batches + num_processes - 1) / num_processes;
    out->steps_per_epoch = (out->batches_per_process + accum - 1) / accum;
    out->num_epochs = (max_train_steps + out->steps_per_epoch - 1) / out->steps_per_epoch;
    out->sched_total = max_train_steps * num_processes;
    return SD_OK;
}
