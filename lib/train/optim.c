/* Optimizers, gradient clipping, accumulation helpers (see optim.h). */
#include "train/optim.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "train/pyfmt.h"

void sd_optim_config_default(sd_optim_config *c, sd_optim_kind kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->weight_decay = 0.01;
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
    if (empty || !strcasecmp(type, "AdamW") || !strcasecmp(type, "torch.optim.AdamW")) {
        *kind = SD_OPTIM_ADAMW;
        return SD_OK;
    }
    static const char *const known[] = {
        "AdamW8bit", "PagedAdamW8bit", "PagedAdamW", "PagedAdamW32bit", "Lion", "Lion8bit",
        "PagedLion8bit", "SGDNesterov", "SGDNesterov8bit", "DAdaptation", "DAdaptAdamPreprint",
        "DAdaptAdaGrad", "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD",
        "Prodigy", "Adafactor", "RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree",
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcasecmp(type, known[i]))
            return sd_err(SD_EUNSUPPORTED, "optimizer %s is not implemented yet (AdamW is)", known[i]);
    return sd_err(SD_EUNSUPPORTED, "optimizer %s is not implemented yet (AdamW is)", type);
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
        int isnum = v.kind == SD_PY_INT || v.kind == SD_PY_FLOAT || v.kind == SD_PY_BOOL;
        if (!strcmp(key, "betas")) {
            if ((v.kind != SD_PY_TUPLE && v.kind != SD_PY_LIST) || v.nitems != 2 ||
                v.item_kind[0] == SD_PY_NONE || v.item_kind[1] == SD_PY_NONE)
                return sd_err(SD_EUSAGE, "--optimizer_args %s: betas must be two numbers", items[i]);
            c->beta1 = v.items[0];
            c->beta2 = v.items[1];
            if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
                return sd_err(SD_EUSAGE, "--optimizer_args %s: invalid beta parameter (0 <= beta < 1)",
                              items[i]);
        } else if (!strcmp(key, "eps") || !strcmp(key, "weight_decay")) {
            if (!isnum)
                return sd_err(SD_EUSAGE, "--optimizer_args %s: expected a number", items[i]);
            if (v.f < 0 || !isfinite(v.f))
                return sd_err(SD_EUSAGE, "--optimizer_args %s: invalid %s value", items[i], key);
            if (key[0] == 'e') c->eps = v.f; else c->weight_decay = v.f;
        } else if (!strcmp(key, "amsgrad") || !strcmp(key, "maximize")) {
            if (v.kind != SD_PY_BOOL && v.kind != SD_PY_INT && v.kind != SD_PY_NONE)
                return sd_err(SD_EUSAGE, "--optimizer_args %s: expected True or False", items[i]);
            if (v.i)
                return sd_err(SD_EUNSUPPORTED, "--optimizer_args %s: AdamW with %s=True is not "
                              "implemented yet", items[i], key);
        } else if (!strcmp(key, "foreach") || !strcmp(key, "fused") || !strcmp(key, "capturable") ||
                   !strcmp(key, "differentiable")) {
            /* implementation switches of torch; same numbers */
        } else {
            return sd_err(SD_EUSAGE, "--optimizer_args %s: AdamW has no argument '%s' (it takes betas, "
                          "eps, weight_decay, amsgrad, maximize, foreach, fused, capturable, "
                          "differentiable)", items[i], key);
        }
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
    return SD_OK;
}

int sd_optim_describe(const sd_optim_config *c, char *out, size_t n)
{
    size_t k = (size_t)snprintf(out, n, "torch.optim.adamw.AdamW");
    for (int i = 0; i < c->nargs && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s=%s", i ? "," : "(", c->arg_key[i], c->arg_str[i]);
    if (c->nargs && k < n) k += (size_t)snprintf(out + k, n - k, ")");
    return k < n ? SD_OK : sd_err(SD_ERANGE, "optimizer description too long");
}

/* ---- the optimizer ------------------------------------------------------------------------- */

int sd_optim_init(sd_optim *o, const sd_optim_config *cfg, const sd_optim_group_desc *groups,
                  int ngroups)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    size_t np = 0;
    for (int g = 0; g < ngroups; g++) np += groups[g].count;
    o->groups = calloc((size_t)(ngroups > 0 ? ngroups : 1), sizeof *o->groups);
    o->params = calloc(np ? np : 1, sizeof *o->params);
    if (!o->groups || !o->params) { sd_optim_free(o); return sd_err(SD_ENOMEM, "optimizer: out of memory"); }
    o->ngroups = ngroups;
    size_t floats = 0;
    for (int g = 0; g < ngroups; g++) {
        sd_optim_group *G = &o->groups[g];
        snprintf(G->name, sizeof G->name, "%s", groups[g].name ? groups[g].name : "");
        G->lr = groups[g].lr;
        G->weight_decay = cfg->weight_decay;
        G->first = o->nparams;
        G->count = groups[g].count;
        for (size_t i = 0; i < groups[g].count; i++) {
            sd_param *p = groups[g].params[i];
            if (!p || !(p->flags & SD_PARAM_TRAINABLE) || !p->value.data || !p->grad.data ||
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
            floats += 2 * (size_t)sd_tensor_numel(&p->value);
        }
    }
    o->state = calloc(floats ? floats : 1, sizeof(float));
    if (!o->state) { sd_optim_free(o); return sd_err(SD_ENOMEM, "optimizer: out of memory for %zu moments", floats); }
    o->state_floats = floats;
    size_t off = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        size_t n = (size_t)sd_tensor_numel(&o->params[i].p->value);
        o->params[i].m = o->state + off;
        o->params[i].v = o->state + off + n;
        off += 2 * n;
    }
    return SD_OK;
}

void sd_optim_free(sd_optim *o)
{
    free(o->groups);
    free(o->params);
    free(o->state);
    memset(o, 0, sizeof *o);
}

int64_t sd_optim_numel(const sd_optim *o)
{
    return (int64_t)(o->state_floats / 2);
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
    const float decay = s->decay, b1 = s->beta1, o1 = s->omb1, b2 = s->beta2, o2 = s->omb2;
    const float bc2s = s->bc2_sqrt, eps = s->eps, ns = s->neg_step;
    /* elementwise: the same bytes for any thread count */
    int par = n >= ((size_t)1 << 16) && !omp_in_parallel();
    #pragma omp parallel for schedule(static) if (par)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float pi = p[i] * decay;
        /* ATen's CPU kernels run add(alpha) and addcmul as fused multiply-adds */
        float mi = fmaf(o1, gi, m[i] * b1);
        float vi = fmaf(o2 * gi, gi, v[i] * b2);
        float denom = sqrtf(vi) / bc2s + eps;
        pi = pi + ns * mi / denom;
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

int sd_optim_step(sd_optim *o, const double *lr, const uint8_t *skip)
{
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *op = &o->params[i];
        const sd_optim_group *G = &o->groups[op->group];
        op->step++;
        sd_adamw_scalars s;
        sd_adamw_scalars_make(&s, lr ? lr[op->group] : G->lr, G->weight_decay, o->cfg.beta1,
                              o->cfg.beta2, o->cfg.eps, op->step);
        sd_adamw_update_f32((float *)op->p->value.data, (const float *)op->p->grad.data, op->m, op->v,
                            (size_t)sd_tensor_numel(&op->p->value), &s);
    }
    return SD_OK;
}

/* ---- clipping ------------------------------------------------------------------------------ */

double sd_optim_grad_norm(const sd_optim *o)
{
    /* torch: norm of the stacked per-tensor f32 norms; we accumulate in double (differences
     * are below f32 rounding of the result). */
    double total = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        const float *g = (const float *)o->params[i].p->grad.data;
        size_t n = (size_t)sd_tensor_numel(&o->params[i].p->grad);
        double s = 0;
        for (size_t j = 0; j < n; j++) s += (double)g[j] * g[j];
        float tn = (float)sqrt(s);
        total += (double)tn * tn;
    }
    return (double)(float)sqrt(total);
}

int sd_optim_clip_grad_norm(sd_optim *o, double max_norm, double *total_norm)
{
    double norm = sd_optim_grad_norm(o);
    if (total_norm) *total_norm = norm;
    if (max_norm <= 0) return SD_OK;
    float coef = (float)max_norm / ((float)norm + 1e-6f);
    if (coef > 1.0f) coef = 1.0f;
    for (size_t i = 0; i < o->nparams; i++) {
        float *g = (float *)o->params[i].p->grad.data;
        size_t n = (size_t)sd_tensor_numel(&o->params[i].p->grad);
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
