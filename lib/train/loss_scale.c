/* Dynamic loss scaling (see loss_scale.h). */
#include "train/loss_scale.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/ops.h"

void sd_loss_scaler_init(sd_loss_scaler *s, int enabled)
{
    memset(s, 0, sizeof *s);
    s->enabled = enabled != 0;
    s->scale = 65536.0f;
    s->growth_factor = 2.0;
    s->backoff_factor = 0.5;
    s->growth_interval = 2000;
    s->growth_tracker = 0;
}

static int parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno == ERANGE || !isfinite(d)) return -1;
    *out = d;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "1") || !strcasecmp(v, "true")) *out = 1;
    else if (!strcmp(v, "0") || !strcasecmp(v, "false")) *out = 0;
    else return -1;
    return 0;
}

int sd_loss_scaler_configure(sd_loss_scaler *s, const char *spec)
{
    if (!spec) return SD_OK;
    sd_loss_scaler t = *s;
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char item[128];
        if (n >= sizeof item) return sd_err(SD_EUSAGE, "'%.*s': item too long", (int)n, p);
        memcpy(item, p, n);
        item[n] = 0;
        p += n + (e ? 1 : 0);
        /* trim */
        char *a = item, *z = item + n;
        while (*a == ' ' || *a == '\t') a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t')) *--z = 0;
        if (!*a) continue;
        char *eq = strchr(a, '=');
        if (!eq) return sd_err(SD_EUSAGE, "'%s': expected key=value", a);
        *eq = 0;
        char *k = a, *v = eq + 1;
        for (char *q = eq; q > k && (q[-1] == ' ' || q[-1] == '\t'); q--) q[-1] = 0;
        while (*v == ' ' || *v == '\t') v++;
        double d;
        if (!strcmp(k, "init_scale")) {
            if (parse_double(v, &d) || !(d > 0) || !isfinite((float)d) || (float)d < FLT_MIN)
                return sd_err(SD_EUSAGE, "init_scale=%s: expected a positive number (a normal float)", v);
            t.scale = (float)d;
        } else if (!strcmp(k, "growth_factor")) {
            if (parse_double(v, &d) || !(d > 1))
                return sd_err(SD_EUSAGE, "growth_factor=%s: the growth factor must be > 1.0", v);
            t.growth_factor = d;
        } else if (!strcmp(k, "backoff_factor")) {
            if (parse_double(v, &d) || !(d > 0 && d < 1))
                return sd_err(SD_EUSAGE, "backoff_factor=%s: the backoff factor must be > 0 and < 1.0", v);
            t.backoff_factor = d;
        } else if (!strcmp(k, "growth_interval")) {
            char *end;
            errno = 0;
            long long i = strtoll(v, &end, 10);
            if (end == v || *end || errno || i < 1 || i > INT32_MAX)
                return sd_err(SD_EUSAGE, "growth_interval=%s: expected an integer >= 1", v);
            t.growth_interval = i;
        } else if (!strcmp(k, "enabled")) {
            int b;
            if (parse_bool(v, &b)) return sd_err(SD_EUSAGE, "enabled=%s: expected true or false", v);
            t.enabled = b;
        } else {
            return sd_err(SD_EUSAGE, "unknown key '%s' (init_scale, growth_factor, backoff_factor, growth_interval, "
                          "enabled)", k);
        }
    }
    *s = t;
    return SD_OK;
}

double sd_loss_scaler_factor(const sd_loss_scaler *s)
{
    return s->enabled ? (double)s->scale : 1.0;
}

int sd_loss_scaler_unscale(const sd_loss_scaler *s, float *restrict g, size_t n)
{
    if (!s->enabled) return 0;
    /* torch: inv_scale = scale.double().reciprocal().float() */
    const float inv = (float)(1.0 / (double)s->scale);
    int bad = 0;
    int par = n >= ((size_t)1 << 16);
    if (inv == 1.0f) {
        #pragma omp parallel for schedule(static) reduction(| : bad) if (par)
        for (size_t i = 0; i < n; i++) bad |= !isfinite(g[i]);
    } else {
        #pragma omp parallel for schedule(static) reduction(| : bad) if (par)
        for (size_t i = 0; i < n; i++) {
            float v = g[i];
            bad |= !isfinite(v);
            g[i] = v * inv;
        }
    }
    return bad != 0;
}

int sd_loss_scaler_unscale_optim(const sd_loss_scaler *s, sd_optim *o, int *found_inf)
{
    int bad = 0;
    /* torch: inv_scale = scale.double().reciprocal().float() */
    const float inv = s->enabled ? (float)(1.0 / (double)s->scale) : 1.0f;
    for (size_t i = 0; i < o->nparams; i++) {
        sd_param *p = o->params[i].p;
        if (o->ctx) {   /* sd_optim_place: on the parameters' device */
            if (!s->enabled) continue;
            int rc = sd_op_scale_round(o->ctx, &p->grad, inv, o->half, &bad);
            if (rc) return rc;
            continue;
        }
        size_t n = (size_t)sd_tensor_numel(&p->grad);
        bad |= sd_loss_scaler_unscale(s, (float *)p->grad.data, n);
        /* f16/bf16 gradients (--full_fp16): the unscaled product is stored in their dtype */
        if (s->enabled && o->half != SD_F32) sd_round_half_n((float *)p->grad.data, n, o->half == SD_BF16);
    }
    *found_inf = bad;
    return SD_OK;
}

int sd_loss_scaler_update(sd_loss_scaler *s, int found_inf, sd_loss_scale_event *event)
{
    if (event) *event = SD_LOSS_SCALE_KEPT;
    if (!s->enabled) return SD_OK;
    if (found_inf) {
        float ns = (float)((double)s->scale * s->backoff_factor);
        if (!(ns >= FLT_MIN))
            return sd_err(SD_ERANGE, "the gradients stayed inf/NaN while the loss scale fell to %g: backing off once "
                          "more would take it below 2^-126", (double)s->scale);
        s->scale = ns;
        s->growth_tracker = 0;
        if (event) *event = SD_LOSS_SCALE_BACKOFF;
        return SD_OK;
    }
    int64_t successful = s->growth_tracker + 1;
    if (successful == s->growth_interval) {
        float ns = (float)((double)s->scale * s->growth_factor);
        if (isfinite(ns)) {
            s->scale = ns;
            if (event) *event = SD_LOSS_SCALE_GROWN;
        }
        s->growth_tracker = 0;
    } else {
        s->growth_tracker = successful;
    }
    return SD_OK;
}

int sd_loss_scaler_optim_step(sd_loss_scaler *s, sd_optim *o, double max_norm, const double *lr,
                              const uint8_t *skip, double *grad_norm, int *skipped, sd_loss_scale_event *event)
{
    int found_inf = 0;
    *skipped = 0;
    if (event) *event = SD_LOSS_SCALE_KEPT;
    int rc = sd_optim_round_grads(o);   /* --full_fp16 / --full_bf16: gradients of the parameters' dtype */
    if (!rc && s->enabled) rc = sd_loss_scaler_unscale_optim(s, o, &found_inf);
    if (!rc) rc = sd_optim_clip_grad_norm(o, max_norm, grad_norm);
    if (rc) return rc;
    if (!found_inf) {
        rc = sd_optim_step(o, lr, skip);
        if (rc) return rc;
    }
    *skipped = found_inf;
    return sd_loss_scaler_update(s, found_inf, event);
}

int sd_loss_scaler_validate(const sd_loss_scaler *s, const char *what)
{
    if (!(s->scale >= FLT_MIN) || !isfinite(s->scale))
        return sd_err(SD_EFORMAT, "%s: loss scale %g is not a positive normal float", what, (double)s->scale);
    if (!(s->growth_factor > 1) || !isfinite(s->growth_factor))
        return sd_err(SD_EFORMAT, "%s: loss-scale growth_factor %g is not > 1", what, s->growth_factor);
    if (!(s->backoff_factor > 0 && s->backoff_factor < 1))
        return sd_err(SD_EFORMAT, "%s: loss-scale backoff_factor %g is not between 0 and 1", what, s->backoff_factor);
    if (s->growth_interval < 1 || s->growth_interval > INT32_MAX)
        return sd_err(SD_EFORMAT, "%s: loss-scale growth_interval %lld is not >= 1", what, (long long)s->growth_interval);
    if (s->growth_tracker < 0 || s->growth_tracker >= s->growth_interval)
        return sd_err(SD_EFORMAT, "%s: loss-scale growth tracker %lld is outside [0, %lld)", what,
                      (long long)s->growth_tracker, (long long)s->growth_interval);
    return SD_OK;
}
