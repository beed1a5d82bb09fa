/* Lion, SGDNesterov, Adafactor, Prodigy, DAdaptAdam and DAdaptAdamPreprint steps (see optim.h for
 * the formulas and the reference versions). Each follows its reference's operation order: Python
 * scalars in double rounded once to float, add(alpha) as fmaf, addcdiv as p + (value·t1)/t2,
 * rsqrt as 1/sqrtf. Reductions the reference turns into Python floats (.item()) or f32 tensors
 * (norms, means) are summed serially in double and rounded to f32 (within an ulp of torch's order,
 * and deterministic). Elementwise loops over large tensors are split over the OpenMP team. */
#include "train/optim_kinds.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "base/error.h"

#define PAR(n) ((n) >= ((size_t)1 << 16) && !omp_in_parallel())

static inline float *pval(const sd_optim_param *q) { return (float *)q->p->value.data; }
static inline float *pgrad(const sd_optim_param *q) { return (float *)q->p->grad.data; }
static inline size_t pnumel(const sd_optim_param *q) { return (size_t)sd_tensor_numel(&q->p->value); }

/* torch: tensor.norm(2) / (numel ** 0.5), an f32 0-dim tensor. */
static float rms_f32(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return (float)sqrt(s) / (float)sqrt((double)n);
}

/* Python's max(a, b) / min(a, b) of floats: the first argument unless the second is larger/smaller. */
static inline double py_max(double a, double b) { return b > a ? b : a; }
static inline double py_min(double a, double b) { return b < a ? b : a; }

/* ---- Lion ----------------------------------------------------------------------------------------- */

int sd_optim_step_lion(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        double l = sd_optim_glr(o, lr, q->group), wd = o->groups[q->group].weight_decay;
        if (c->decoupled_weight_decay) wd /= c->lr;
        q->step++;
        q->initialized = 1;
        const float decay = (float)(1.0 - l * wd), b1 = (float)c->beta1, o1 = (float)(1.0 - c->beta1);
        const float b2 = (float)c->beta2, o2 = (float)(1.0 - c->beta2), nl = (float)(-l);
        float *restrict p = pval(q), *restrict m = q->m;
        const float *restrict g = pgrad(q);
        size_t n = pnumel(q);
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            float u = fmaf(o1, g[j], m[j] * b1);
            float sg = (float)((u > 0) - (u < 0));
            p[j] = fmaf(nl, sg, p[j] * decay);
            m[j] = fmaf(o2, g[j], m[j] * b2);
        }
    }
    return SD_OK;
}

/* ---- SGD with Nesterov momentum -------------------------------------------------------------------- */

int sd_optim_step_sgd(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const double wd = o->groups[q->group].weight_decay;
        const float wdf = (float)wd, mu = (float)c->momentum, damp1 = (float)(1.0 - c->dampening);
        const float nl = (float)(-sd_optim_glr(o, lr, q->group));
        const int first = !q->initialized;
        float *restrict p = pval(q), *restrict b = q->buf[0];
        const float *restrict g = pgrad(q);
        size_t n = pnumel(q);
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            float d = wd != 0 ? fmaf(wdf, p[j], g[j]) : g[j];
            float bj = first ? d : fmaf(damp1, d, b[j] * mu);
            b[j] = bj;
            d = fmaf(mu, bj, d);
            p[j] = fmaf(nl, d, p[j]);
        }
        q->step++;
        q->initialized = 1;
    }
    return SD_OK;
}

/* ---- Adafactor ---------------------------------------------------------------------------------------- */

int sd_optim_step_adafactor(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        sd_optim_group *G = &o->groups[q->group];
        const sd_tensor *T = &q->p->value;
        const size_t n = pnumel(q);
        float *restrict p = pval(q);
        const float *restrict g = pgrad(q);
        int bi = 0;
        float *m = c->has_beta1 ? q->buf[bi++] : NULL;
        const int factored = T->ndim >= 2;
        float *row = factored ? q->buf[bi] : NULL, *col = factored ? q->buf[bi + 1] : NULL;
        float *v = factored ? NULL : q->buf[bi];
        q->step++;
        q->initialized = 1;
        const double t = (double)q->step;
        /* _get_lr: α = max(eps2, RMS(p)) · ρ; an f32 tensor product when the RMS wins */
        const float rms = rms_f32(p, n);
        const double rho = c->relative_step ? py_min(c->warmup_init ? 1e-6 * t : 1e-2, 1.0 / sqrt(t))
                                            : sd_optim_glr(o, lr, q->group);
        const int tensor_lr = c->scale_parameter && rms > (float)c->eps2;
        const double lr_d = c->scale_parameter ? c->eps2 * rho : 1.0 * rho;
        const float alpha = tensor_lr ? rms * (float)rho : (float)lr_d;
        if (i == G->first) G->used_lr = tensor_lr ? (double)alpha : lr_d;
        const double beta2t = 1.0 - pow(t, c->decay_rate);
        const float b2 = (float)beta2t, o2 = (float)(1.0 - beta2t), e1 = (float)c->eps;
        float *restrict u = o->scratch;
        if (factored) {
            const size_t C = (size_t)T->shape[T->ndim - 1], R = (size_t)T->shape[T->ndim - 2], B = n / (R * C);
            float *restrict cf = o->scratch + n;
            for (size_t b = 0; b < B; b++) {
                const float *gb = g + b * R * C;
                for (size_t r = 0; r < R; r++) {           /* exp_avg_sq_row: mean over the last dim */
                    double s = 0;
                    for (size_t k = 0; k < C; k++) s += (double)(gb[r * C + k] * gb[r * C + k] + e1);
                    float mean = (float)s / (float)C;
                    row[b * R + r] = fmaf(o2, mean, row[b * R + r] * b2);
                }
                for (size_t k = 0; k < C; k++) {           /* exp_avg_sq_col: mean over the one before */
                    double s = 0;
                    for (size_t r = 0; r < R; r++) s += (double)(gb[r * C + k] * gb[r * C + k] + e1);
                    float mean = (float)s / (float)R;
                    col[b * C + k] = fmaf(o2, mean, col[b * C + k] * b2);
                }
                /* _approx_sq_grad: rsqrt(row / mean(row)) ⊗ rsqrt(col), times the gradient */
                double s = 0;
                for (size_t r = 0; r < R; r++) s += row[b * R + r];
                const float rmean = (float)s / (float)R;
                for (size_t k = 0; k < C; k++) cf[k] = 1.0f / sqrtf(col[b * C + k]);
                for (size_t r = 0; r < R; r++) {
                    const float rf = 1.0f / sqrtf(row[b * R + r] / rmean);
                    for (size_t k = 0; k < C; k++) u[b * R * C + r * C + k] = (rf * cf[k]) * gb[r * C + k];
                }
            }
        } else {
            #pragma omp parallel for schedule(static) if (PAR(n))
            for (size_t j = 0; j < n; j++) {
                float vj = fmaf(o2, g[j] * g[j] + e1, v[j] * b2);
                v[j] = vj;
                u[j] = (1.0f / sqrtf(vj)) * g[j];
            }
        }
        /* clip by RMS, scale by α, first moment, weight decay, step */
        float den = rms_f32(u, n) / (float)c->clip_threshold;
        if (den < 1.0f) den = 1.0f;
        const float b1 = (float)c->beta1, o1 = (float)(1.0 - c->beta1);
        const double wd = G->weight_decay;
        const float wda = tensor_lr ? alpha * (float)(-wd) : (float)(-wd * lr_d);
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            float uj = (u[j] / den) * alpha;
            if (m) uj = m[j] = fmaf(o1, uj, m[j] * b1);
            float pj = p[j];
            if (wd != 0) pj = fmaf(wda, pj, pj);
            p[j] = pj - uj;
        }
    }
    return SD_OK;
}

/* ---- D-Adaptation / Prodigy shared pieces ---------------------------------------------------------- */

/* lr = max(group['lr']); every group must have it or 0 (the reference's RuntimeError). */
static int common_lr(const sd_optim *o, const double *lr, double *out)
{
    double mx = o->ngroups ? sd_optim_glr(o, lr, 0) : 0;
    for (int g = 1; g < o->ngroups; g++) mx = py_max(mx, sd_optim_glr(o, lr, g));
    for (int g = 0; g < o->ngroups; g++) {
        double x = sd_optim_glr(o, lr, g);
        if (x != mx && x != 0.0)
            return sd_err(SD_EINVAL, "%s: Setting different lr values in different parameter groups is only "
                          "supported for values of 0 (group %d has %g, the largest is %g)",
                          sd_optim_kind_name(o->cfg.kind), g, x, mx);
    }
    *out = mx;
    return SD_OK;
}

/* Coupled weight decay: grad += wd·p, in place (the reference modifies p.grad). */
static void coupled_decay(sd_optim_param *q, double wd)
{
    const float a = (float)wd;
    float *restrict g = pgrad(q);
    const float *restrict p = pval(q);
    size_t n = pnumel(q);
    #pragma omp parallel for schedule(static) if (PAR(n))
    for (size_t j = 0; j < n; j++) g[j] = fmaf(a, p[j], g[j]);
}

/* p += -wd·dlr·p (decoupled weight decay) and p += (-1·m) / (sqrt(v) + eps). */
static void dadapt_update(sd_optim_param *q, const float *m, const float *v, float eps, double wd_alpha, int decay)
{
    const float a = (float)wd_alpha;
    float *restrict p = pval(q);
    size_t n = pnumel(q);
    #pragma omp parallel for schedule(static) if (PAR(n))
    for (size_t j = 0; j < n; j++) {
        float pj = p[j];
        if (decay) pj = fmaf(a, pj, pj);
        p[j] = pj + (-m[j]) / (sqrtf(v[j]) + eps);
    }
}

static double sum_abs_f32(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)x[i]);
    return (double)(float)s;
}

/* ---- Prodigy ------------------------------------------------------------------------------------- */

int sd_optim_step_prodigy(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    sd_optim_dstate *ds = &o->ds;
    double lmax;
    int rc = common_lr(o, lr, &lmax);
    if (rc || !o->nparams) return rc;
    const double beta1 = c->beta1, beta2 = c->beta2, beta3 = isnan(c->beta3) ? sqrt(beta2) : c->beta3;
    const double k = ds->k, d = ds->d, d0 = c->d0;
    const double bc = c->use_bias_correction ? pow(1 - pow(beta2, k + 1), 0.5) / (1 - pow(beta1, k + 1)) : 1.0;
    const double dlr = d * lmax * bc;
    const double dnum = ds->d_numerator * beta3;
    const size_t sp = (size_t)c->slice_p;
    double delta = 0, dden = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const sd_optim_group *G = &o->groups[q->group];
        const double glr = sd_optim_glr(o, lr, q->group);
        if (G->weight_decay != 0 && !c->decouple) coupled_decay(q, G->weight_decay);
        float *restrict p = pval(q), *restrict g = pgrad(q);
        const size_t n = pnumel(q), ns = (n + sp - 1) / sp;
        float *m = beta1 > 0 ? q->buf[0] : NULL;
        float *restrict v = q->buf[m ? 1 : 0], *restrict s = q->buf[m ? 2 : 1], *restrict p0 = q->buf[m ? 3 : 2];
        if (!q->initialized) {
            int any = 0;
            for (size_t j = 0; j < n && !any; j++) any = p[j] != 0;
            for (size_t j = 0, k2 = 0; j < n; j += sp, k2++) p0[k2] = any ? p[j] : 0.0f, s[k2] = 0;
            memset(v, 0, n * sizeof *v);
            if (m) memset(m, 0, n * sizeof *m);
            q->initialized = 1;
        }
        if (glr > 0.0) {
            double dot = 0;
            for (size_t j = 0, k2 = 0; j < n; j += sp, k2++) dot += (double)g[j] * (double)(p0[k2] - p[j]);
            delta += (d / d0) * dlr * (double)(float)dot;
            const float ma = (float)(d * (1 - beta1)), mb = (float)beta1;
            const float va = (float)(d * d * (1 - beta2)), vb = (float)beta2;
            #pragma omp parallel for schedule(static) if (PAR(n))
            for (size_t j = 0; j < n; j++) {
                if (m) m[j] = fmaf(ma, g[j], m[j] * mb);
                v[j] = fmaf(va * g[j], g[j], v[j] * vb);
            }
            const float sa = (float)(c->safeguard_warmup ? (d / d0) * d : (d / d0) * dlr), sb = (float)beta3;
            for (size_t k2 = 0; k2 < ns; k2++) s[k2] = fmaf(sa, g[k2 * sp], s[k2] * sb);
            dden += sum_abs_f32(s, ns);
        }
    }
    if (dden == 0) return SD_OK;   /* no progress: nothing moves, k stays */
    if (!(lmax > 0.0))
        return sd_err(SD_EINVAL, "Prodigy: every group has learning rate 0 after the first step (the reference "
                      "fails here with UnboundLocalError)");
    const double gnum = dnum + delta;
    const double dhat = c->d_coef * gnum / dden;
    double dn = d;
    if (dn == d0) dn = py_max(dn, dhat);
    const double dmax = py_max(ds->d_max, dhat);
    dn = py_min(dmax, dn * c->growth_rate);
    ds->d_numerator = gnum;
    ds->d_hat = dhat;
    ds->d = dn;
    ds->d_max = dmax;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const double wd = o->groups[q->group].weight_decay;
        float *restrict p = pval(q);
        const float *restrict g = pgrad(q);
        const size_t n = pnumel(q);
        const float *m = beta1 > 0 ? q->buf[0] : NULL, *v = q->buf[m ? 1 : 0];
        q->step++;
        const float de = (float)(dn * c->eps), wa = (float)(-wd * dlr);
        const int decay = wd != 0 && c->decouple;
        const float val = (float)(m ? -dlr : -dlr * dn);
        const float *t1 = m ? m : g;
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            float pj = p[j];
            if (decay) pj = fmaf(wa, pj, pj);
            p[j] = pj + (val * t1[j]) / (sqrtf(v[j]) + de);
        }
    }
    ds->k = k + 1;
    return SD_OK;
}

/* ---- DAdaptAdam ---------------------------------------------------------------------------------- */

int sd_optim_step_dadapt_adam(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    sd_optim_dstate *ds = &o->ds;
    double lmax;
    int rc = common_lr(o, lr, &lmax);
    if (rc || !o->nparams) return rc;
    const double beta1 = c->beta1, beta2 = c->beta2, r = 1.0;   /* layer_scale */
    const double k = ds->k, d = ds->d;
    const double bc = c->use_bias_correction ? pow(1 - pow(beta2, k + 1), 0.5) / (1 - pow(beta1, k + 1)) : 1.0;
    const double dlr = d * lmax * bc, sb2 = pow(beta2, 0.5);
    const float eps = (float)c->eps;
    double num = 0, sk = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const sd_optim_group *G = &o->groups[q->group];
        if (G->weight_decay != 0 && !c->decouple) coupled_decay(q, G->weight_decay);
        q->initialized = 1;
        if (!(sd_optim_glr(o, lr, q->group) > 0.0)) continue;
        const float *restrict g = pgrad(q);
        float *restrict m = q->buf[0], *restrict v = q->buf[1], *restrict s = q->buf[2];
        const size_t n = pnumel(q);
        double dot = 0;
        for (size_t j = 0; j < n; j++) dot += (double)g[j] * (double)(s[j] / (sqrtf(v[j]) + eps));
        num += r * dlr * (double)(float)dot;
        const float ma = (float)(r * dlr * (1 - beta1)), mb = (float)beta1, va = (float)(1 - beta2), vb = (float)beta2;
        const float sa = (float)(dlr * (1 - sb2)), sb = (float)sb2;
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            m[j] = fmaf(ma, g[j], m[j] * mb);
            v[j] = fmaf(va * g[j], g[j], v[j] * vb);
            s[j] = fmaf(sa, g[j], s[j] * sb);
        }
        sk += r * sum_abs_f32(s, n);
    }
    if (sk == 0) return SD_OK;
    const double gnw = sb2 * ds->numerator_weighted + (1 - sb2) * num;
    double dn = d;
    if (lmax > 0.0) {
        ds->d_hat = gnw / ((1 - sb2) * sk);
        dn = py_max(d, py_min(ds->d_hat, d * c->growth_rate));
    }
    ds->numerator_weighted = gnw;
    ds->d = dn;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const double wd = o->groups[q->group].weight_decay;
        q->step++;
        dadapt_update(q, q->buf[0], q->buf[1], eps, -wd * dlr, wd != 0 && c->decouple);
    }
    ds->k = k + 1;
    return SD_OK;
}

/* ---- DAdaptAdamPreprint ("DAdaptation") -------------------------------------------------------------- */

int sd_optim_step_dadapt_preprint(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    sd_optim_dstate *ds = &o->ds;
    double lmax;
    int rc = common_lr(o, lr, &lmax);
    if (rc || !o->nparams) return rc;
    const double beta1 = c->beta1, beta2 = c->beta2;
    const double d = ds->d, dlr = d * lmax;
    const float eps = (float)c->eps;
    double gsq = 0, sksq = 0, sk = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const sd_optim_group *G = &o->groups[q->group];
        if (G->weight_decay != 0 && !c->decouple) coupled_decay(q, G->weight_decay);
        q->initialized = 1;
        if (!(sd_optim_glr(o, lr, q->group) > 0.0)) continue;
        const float *restrict g = pgrad(q);
        float *restrict m = q->buf[0], *restrict v = q->buf[1], *restrict s = q->buf[2];
        const size_t n = pnumel(q);
        const float ma = (float)(dlr * (1 - beta1)), mb = (float)beta1, va = (float)(1 - beta2), vb = (float)beta2;
        const float sa = (float)(dlr * (1 - beta2));
        double a1 = 0, a2 = 0, a3 = 0;
        for (size_t j = 0; j < n; j++) {
            float gg = g[j] * g[j];
            m[j] = fmaf(ma, g[j], m[j] * mb);
            v[j] = fmaf(va, gg, v[j] * vb);
            float den = sqrtf(v[j]) + eps;
            a1 += (double)(gg / den);
            s[j] = fmaf(sa, g[j], s[j] * vb);
            a2 += (double)((s[j] * s[j]) / den);
            a3 += fabs((double)s[j]);
        }
        gsq += (double)(float)a1;
        sksq += (double)(float)a2;
        sk += (double)(float)a3;
    }
    const double gsqw = beta2 * ds->gsq_weighted + gsq * (dlr * dlr) * (1 - beta2);
    if (sk == 0) return SD_OK;
    double dn = d;
    if (lmax > 0.0) {
        ds->d_hat = (sksq / (1 - beta2) - gsqw) / sk;
        dn = py_max(d, py_min(ds->d_hat, d * c->growth_rate));
    }
    ds->gsq_weighted = gsqw;
    ds->d = dn;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const double wd = o->groups[q->group].weight_decay;
        q->step++;
        dadapt_update(q, q->buf[0], q->buf[1], eps, -wd * dlr,
                      wd != 0 && c->decouple && sd_optim_glr(o, lr, q->group) > 0);
    }
    ds->k += 1;
    return SD_OK;
}
