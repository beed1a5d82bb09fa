/* Optimizer steps inside the backward pass (see fused.h). */
#include "train/fused.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tensor/device.h"

int sd_fused_check(int backward_pass, int groups, sd_optim_kind kind, int accum)
{
    if (backward_pass && groups)
        return sd_err(SD_EUSAGE, "--fused_backward_pass and --fused_optimizer_groups: choose one");
    if (groups < 0) return sd_err(SD_EUSAGE, "--fused_optimizer_groups %d: must be at least 1", groups);
    if (backward_pass && kind != SD_OPTIM_ADAFACTOR)
        return sd_err(SD_EUSAGE, "fused_backward_pass currently only works with optimizer_type Adafactor");
    if (backward_pass && accum != 1)
        return sd_err(SD_EUSAGE, "fused_backward_pass does not work with gradient_accumulation_steps > 1");
    if (groups && (sd_optim_kind_has_d(kind) || sd_optim_is_schedulefree(kind)))
        return sd_err(SD_EUSAGE, "--fused_optimizer_groups with --optimizer_type %s: not implemented (its step "
                      "shares one estimate over all parameters of an optimizer; AdamW, Adafactor, Lion, "
                      "SGDNesterov and the 8-bit kinds are)", sd_optim_kind_name(kind));
    return SD_OK;
}

static int map_cmp(const void *a, const void *b)
{
    const sd_param *x = ((const sd_fused_map *)a)->p, *y = ((const sd_fused_map *)b)->p;
    return x < y ? -1 : x > y;
}

static long map_find(const sd_fused *f, const sd_param *p)
{
    size_t lo = 0, hi = f->nmap;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->map[mid].p == p) return (long)f->map[mid].i;
        if (f->map[mid].p < p) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* Step the optimizer's parameters [a, b) with this step's LRs. */
static int step_range(sd_fused *f, size_t a, size_t b)
{
    sd_optim *o = f->opt;
    int host = !sd_optim_on_device(o) && o->params[a].p->value.device != SD_DEV_CPU;
    int rc = SD_OK;
    size_t k = a;
    if (host) {
        /* the host step over host copies of the device tensors */
        for (; k < b && !rc; k++) {
            sd_param *p = o->params[k].p;
            size_t nb = sd_tensor_nbytes(&p->value);
            void *hv = malloc(nb ? nb : 1), *hg = malloc(nb ? nb : 1);
            if (!hv || !hg) rc = sd_err(SD_ENOMEM, "%s: out of memory for a host copy", p->key);
            if (!rc) rc = sd_device_copy_to_host(hv, p->value.data, nb);
            if (!rc) rc = sd_device_copy_to_host(hg, p->grad.data, nb);
            if (rc) {
                free(hv);
                free(hg);
                break;
            }
            f->dev_value[k] = p->value.data;
            f->dev_grad[k] = p->grad.data;
            p->value.data = hv;
            p->grad.data = hg;
            p->value.device = p->grad.device = SD_DEV_CPU;
        }
    }
    for (size_t j = a; j < b; j++) f->skip[j] = 0;
    if (!rc) rc = sd_optim_step(o, f->lrs, f->skip);
    for (size_t j = a; j < b; j++) f->skip[j] = 1;
    if (host) {
        for (size_t j = a; j < k; j++) {
            sd_param *p = o->params[j].p;
            int rc2 = rc ? SD_OK : sd_device_copy_to_device(f->dev_value[j], p->value.data, sd_tensor_nbytes(&p->value));
            if (rc2 && !rc) rc = rc2;
            free(p->value.data);
            free(p->grad.data);
            p->value.data = f->dev_value[j];
            p->grad.data = f->dev_grad[j];
            p->value.device = p->grad.device = SD_DEV_CUDA;
        }
    }
    return rc;
}

/* The hook: p's gradient is complete. */
static int fused_done(void *user, sd_param *p)
{
    sd_fused *f = user;
    long i = map_find(f, p);
    if (i < 0) {
        /* trained but in no optimizer group (SDXL --block_lr 0): nothing uses its gradient */
        sd_grad_pool_release(&f->pool, p);
        f->released++;
        return SD_OK;
    }
    int rc = SD_OK;
    if (f->clip && f->max_grad_norm > 0) rc = sd_optim_clip_param(f->opt, f->ctx, (size_t)i, f->max_grad_norm, NULL);
    if (rc) return rc;
    if (f->mode == SD_FUSED_BACKWARD_PASS) {
        rc = step_range(f, (size_t)i, (size_t)i + 1);
        sd_grad_pool_release(&f->pool, p);
        return rc;
    }
    /* the group of i: the last gfirst <= i */
    int lo = 0, hi = f->ngroups - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (f->gfirst[mid] <= (size_t)i) lo = mid;
        else hi = mid - 1;
    }
    size_t a = f->gfirst[lo], b = f->gfirst[lo + 1];
    if (++f->gcount[lo] < b - a) return SD_OK;
    rc = step_range(f, a, b);
    for (size_t j = a; j < b; j++) sd_grad_pool_release(&f->pool, f->opt->params[j].p);
    return rc;
}

void sd_fused_init(sd_fused *f, int mode, double max_grad_norm)
{
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->max_grad_norm = max_grad_norm;
    sd_grad_pool_init(&f->pool, fused_done, f);
}

void sd_fused_free(sd_fused *f)
{
    sd_grad_pool_free(&f->pool);
    free(f->map);
    free(f->skip);
    free(f->gfirst);
    free(f->gcount);
    free(f->dev_value);
    free(f->dev_grad);
    f->dev_value = f->dev_grad = NULL;
    f->map = NULL;
    f->skip = NULL;
    f->gfirst = f->gcount = NULL;
}

int sd_fused_bind(sd_fused *f, sd_optim *o, int n, int *ngroups_out)
{
    f->opt = o;
    size_t np = o->nparams;
    f->map = calloc(np + 1, sizeof *f->map);
    f->skip = malloc(np + 1);
    f->gfirst = calloc(np + 2, sizeof *f->gfirst);
    f->gcount = calloc(np + 1, sizeof *f->gcount);
    f->dev_value = calloc(np + 1, sizeof *f->dev_value);
    f->dev_grad = calloc(np + 1, sizeof *f->dev_grad);
    if (!f->map || !f->skip || !f->gfirst || !f->gcount || !f->dev_value || !f->dev_grad)
        return sd_err(SD_ENOMEM, "out of memory");
    memset(f->skip, 1, np + 1);
    for (size_t i = 0; i < np; i++) f->map[i] = (sd_fused_map){ o->params[i].p, i };
    f->nmap = np;
    qsort(f->map, np, sizeof *f->map, map_cmp);
    f->ngroups = 0;
    if (f->mode == SD_FUSED_GROUPS) {
        /* sdxl_train.py: params_per_group = ceil(total / N); a new group where the LR changes or
           when the group is full */
        size_t per = n > 0 ? (np + (size_t)n - 1) / (size_t)n : np;
        if (!per) per = 1;
        size_t in = 0;
        double glr = NAN;
        for (size_t i = 0; i < np; i++) {
            double lr = o->groups[o->params[i].group].lr;
            if (in && lr != glr) in = 0;
            if (!in) f->gfirst[f->ngroups++] = i;
            glr = lr;
            if (++in == per) in = 0;
        }
    }
    f->gfirst[f->ngroups] = np;
    if (ngroups_out) *ngroups_out = f->mode == SD_FUSED_GROUPS ? f->ngroups : 1;
    return SD_OK;
}

size_t sd_fused_grad_bound(const sd_fused *f)
{
    size_t big = 0, grp = 0;
    for (size_t i = 0; f->opt && i < f->opt->nparams; i++) {
        size_t nb = sd_tensor_nbytes(&f->opt->params[i].p->value);
        if (nb > big) big = nb;
    }
    for (int g = 0; g < f->ngroups; g++) {
        size_t s = 0;
        for (size_t i = f->gfirst[g]; i < f->gfirst[g + 1]; i++) s += sd_tensor_nbytes(&f->opt->params[i].p->value);
        if (s > grp) grp = s;
    }
    return (grp > big ? grp : big) + big;
}

void sd_fused_begin(sd_fused *f, int first, int sync, const double *lrs)
{
    if (first) {
        sd_grad_pool_begin_step(&f->pool);
        for (int g = 0; g < f->ngroups; g++) f->gcount[g] = 0;
    }
    f->lrs = lrs;
    f->clip = sync;
    sd_grad_pool_begin_pass(&f->pool, !sync);
}

int sd_fused_end(sd_fused *f, int sync)
{
    int rc = sd_grad_pool_end_pass(&f->pool);
    if (rc || !sync) return rc;
    for (size_t i = 0; i < f->opt->nparams; i++)
        if (f->opt->params[i].p->grad.data)
            return sd_err(SD_ESTATE, "%s: its gradient was not used by the end of the backward (its optimizer group "
                          "did not complete)", f->opt->params[i].p->key);
    return SD_OK;
}
