/* Lion, SGDNesterov, Adafactor, Prodigy, ScheduleFree and D-Adaptation (DAdaptAdam,
 * DAdaptAdamPreprint, DAdaptSGD, DAdaptAdaGrad, DAdaptAdan, DAdaptAdanIP, DAdaptLion) steps (see
 * optim.h for the formulas and the reference versions). Each follows its reference's operation
 * order: Python scalars in double rounded once to float, add(alpha) as fmaf, addcdiv as p + (value·t1)/t2,
 * rsqrt as 1/sqrtf. Reductions the reference turns into Python floats (.item()) or f32 tensors
 * (norms, means) are summed serially in double and rounded to f32 (within an ulp of torch's order,
 * and deterministic). Elementwise loops over large tensors are split over the OpenMP team. */
#include "train/optim_kinds.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/ops.h"

#define PAR(n) ((n) >= ((size_t)1 << 16) && !omp_in_parallel())

static inline float *pval(const sd_optim_param *q) { return (float *)q->p->value.data; }
static inline float *pgrad(const sd_optim_param *q) { return (float *)q->p->grad.data; }
static inline size_t pnumel(const sd_optim_param *q) { return (size_t)sd_tensor_numel(&q->p->value); }

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
        const sd_lion_scalars s = { .decay = (float)(1.0 - l * wd), .beta1 = (float)c->beta1,
                                    .omb1 = (float)(1.0 - c->beta1), .beta2 = (float)c->beta2,
                                    .omb2 = (float)(1.0 - c->beta2), .neg_lr = (float)(-l) };
        if (o->ctx) {   /* sd_optim_place: the op on the parameters' device */
            sd_tensor m = sd_optim_state_view(o, q->p, q->m);
            int rc = sd_op_lion(o->ctx, &q->p->value, &q->p->grad, &m, &s);
            if (rc) return rc;
            continue;
        }
        float *restrict p = pval(q), *restrict m = q->m;
        const float *restrict g = pgrad(q);
        size_t n = pnumel(q);
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) sd_lion_elem(&p[j], g[j], &m[j], &s);
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
        const sd_sgd_scalars s = { .wd = (float)wd, .momentum = (float)c->momentum, .damp1 = (float)(1.0 - c->dampening),
                                   .neg_lr = (float)(-sd_optim_glr(o, lr, q->group)), .decay = wd != 0,
                                   .first = !q->initialized };
        q->step++;
        q->initialized = 1;
        if (o->ctx) {
            sd_tensor b = sd_optim_state_view(o, q->p, q->buf[0]);
            int rc = sd_op_sgd(o->ctx, &q->p->value, &q->p->grad, &b, &s);
            if (rc) return rc;
            continue;
        }
        float *restrict p = pval(q), *restrict b = q->buf[0];
        const float *restrict g = pgrad(q);
        size_t n = pnumel(q);
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) sd_sgd_elem(&p[j], g[j], &b[j], &s);
    }
    return SD_OK;
}

/* ---- Adafactor ---------------------------------------------------------------------------------------- */

/* A 1-D f32 view of n values of p's state or the optimizer's scratch, on its device. */
static sd_tensor flat_view(const sd_optim *o, const sd_param *p, float *data, size_t n)
{
    sd_tensor t = sd_optim_state_view(o, p, data);
    t.ndim = 1;
    t.shape[0] = (int64_t)n;
    return t;
}

/* Σ x² of a parameter-shaped tensor: the host sum in element order, or the placed optimizer's op. */
static int sumsq_of(const sd_optim *o, const sd_tensor *t, double *out)
{
    if (o->ctx) return sd_op_sumsq(o->ctx, t, out);
    const float *x = t->data;
    size_t n = (size_t)sd_tensor_numel(t);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    *out = s;
    return SD_OK;
}

int sd_optim_step_adafactor(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        sd_optim_group *G = &o->groups[q->group];
        const sd_tensor *T = &q->p->value;
        const size_t n = pnumel(q);
        int bi = 0;
        float *m = c->has_beta1 ? q->buf[bi++] : NULL;
        const int factored = T->ndim >= 2;
        float *row = factored ? q->buf[bi] : NULL, *col = factored ? q->buf[bi + 1] : NULL;
        float *v = factored ? NULL : q->buf[bi];
        q->step++;
        q->initialized = 1;
        const double t = (double)q->step;
        /* _get_lr: α = max(eps2, RMS(p)) · ρ; an f32 tensor product when the RMS wins.
           RMS = ‖x‖ / sqrt(numel): the double sum of squares rounded to f32 */
        double ss;
        int rc = sumsq_of(o, T, &ss);
        if (rc) return rc;
        const float rms = (float)sqrt(ss) / (float)sqrt((double)n);
        const double rho = c->relative_step ? py_min(c->warmup_init ? 1e-6 * t : 1e-2, 1.0 / sqrt(t))
                                            : sd_optim_glr(o, lr, q->group);
        const int tensor_lr = c->scale_parameter && rms > (float)c->eps2;
        const double lr_d = c->scale_parameter ? c->eps2 * rho : 1.0 * rho;
        const float alpha = tensor_lr ? rms * (float)rho : (float)lr_d;
        if (i == G->first) G->used_lr = tensor_lr ? (double)alpha : lr_d;
        const double beta2t = 1.0 - pow(t, c->decay_rate);
        const double wd = G->weight_decay;
        sd_adafactor_scalars s = { .beta2t = (float)beta2t, .omb2t = (float)(1.0 - beta2t), .eps1 = (float)c->eps,
                                   .alpha = alpha, .beta1 = (float)c->beta1, .omb1 = (float)(1.0 - c->beta1),
                                   .wda = tensor_lr ? alpha * (float)(-wd) : (float)(-wd * lr_d), .decay = wd != 0 };
        sd_tensor ut = sd_optim_state_view(o, q->p, o->scratch);
        if (o->ctx) {
            size_t C = factored ? (size_t)T->shape[T->ndim - 1] : 0, R = factored ? (size_t)T->shape[T->ndim - 2] : 0;
            size_t B = factored && R && C ? n / (R * C) : 0;
            sd_tensor rt = flat_view(o, q->p, row, B * R), ct = flat_view(o, q->p, col, B * C), mt = flat_view(o, q->p, o->scratch + n, B);
            sd_tensor vt = sd_optim_state_view(o, q->p, v);
            rc = factored ? sd_op_adafactor_sq(o->ctx, &q->p->grad, &rt, &ct, &mt, NULL, &ut, &s)
                          : sd_op_adafactor_sq(o->ctx, &q->p->grad, NULL, NULL, NULL, &vt, &ut, &s);
        } else {
            /* the host loops of tensor/cpu_optim.c's sd_cpu_adafactor_sq, in the same order */
            const float *restrict g = pgrad(q);
            float *restrict u = o->scratch;
            if (factored) {
                const size_t C = (size_t)T->shape[T->ndim - 1], R = (size_t)T->shape[T->ndim - 2], B = n / (R * C);
                const float fr = (float)R, fc = (float)C;
                float *restrict rm = o->scratch + n;
                #pragma omp parallel for schedule(static) if (PAR(n))
                for (size_t br = 0; br < B * R; br++) {   /* exp_avg_sq_row: mean over the last dim */
                    double a = 0;
                    for (size_t k = 0; k < C; k++) a += (double)sd_adafactor_sq(g[br * C + k], s.eps1);
                    row[br] = sd_adafactor_ema(row[br], a, fc, &s);
                }
                #pragma omp parallel for schedule(static) if (PAR(n))
                for (size_t bk = 0; bk < B * C; bk++) {   /* exp_avg_sq_col: mean over the one before */
                    const float *x = g + (bk / C) * R * C + bk % C;
                    double a = 0;
                    for (size_t r = 0; r < R; r++) a += (double)sd_adafactor_sq(x[r * C], s.eps1);
                    col[bk] = sd_adafactor_ema(col[bk], a, fr, &s);
                }
                for (size_t b = 0; b < B; b++) {   /* _approx_sq_grad: rsqrt(row / mean(row)) ⊗ rsqrt(col) · g */
                    double a = 0;
                    for (size_t r = 0; r < R; r++) a += row[b * R + r];
                    rm[b] = (float)a / fr;
                }
                #pragma omp parallel for schedule(static) if (PAR(n))
                for (size_t j = 0; j < n; j++) {
                    const size_t b = j / (R * C), r = j / C % R, k = j % C;
                    u[j] = sd_adafactor_u_factored(g[j], row[b * R + r], rm[b], col[b * C + k]);
                }
            } else {
                #pragma omp parallel for schedule(static) if (PAR(n))
                for (size_t j = 0; j < n; j++) u[j] = sd_adafactor_u_unfactored(g[j], &v[j], &s);
            }
        }
        if (rc) return rc;
        /* clip by RMS, scale by α, first moment, weight decay, step */
        if ((rc = sumsq_of(o, &ut, &ss))) return rc;
        float den = ((float)sqrt(ss) / (float)sqrt((double)n)) / (float)c->clip_threshold;
        s.den = den < 1.0f ? 1.0f : den;
        if (o->ctx) {
            sd_tensor mt = sd_optim_state_view(o, q->p, m);
            if ((rc = sd_op_adafactor_apply(o->ctx, &q->p->value, &ut, m ? &mt : NULL, &s))) return rc;
            continue;
        }
        float *restrict p = pval(q);
        const float *restrict u = o->scratch;
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) sd_adafactor_apply_elem(&p[j], u[j], m ? &m[j] : NULL, &s);
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

/* ---- ScheduleFree (schedulefree 1.4: AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree) -------- */

/* torch's lerp_ with a scalar weight (ATen's CPU kernel: |w| < 0.5 ? self + w·(end - self) :
 * end + (w - 1)·(end - self), each a fused multiply-add). */
static inline float sf_lerp(float self, float end, float w)
{
    float d = end - self;
    return fabsf(w) < 0.5f ? fmaf(w, d, self) : fmaf(w - 1.0f, d, end);
}

static double sf_beta1(const sd_optim_config *c)
{
    return c->kind == SD_OPTIM_SGD_SF ? c->momentum : c->beta1;
}

typedef struct sf_scalars {
    double lr, ckp1, bc2;
    int normalize;   /* AdamW: always; RAdam: rho_t > 4; SGD: never */
} sf_scalars;

/* One group's scalar bookkeeping of step() for step k + 1 (updates lr_max and weight_sum). */
static void sf_group_scalars(const sd_optim_config *c, sd_optim_group *G, double glr, double k, sf_scalars *s)
{
    const double step = k + 1;
    double l;
    s->bc2 = 1.0;
    s->normalize = 0;
    if (c->kind == SD_OPTIM_RADAM_SF) {
        double b2t = pow(c->beta2, step);
        s->bc2 = 1 - b2t;
        double rho_inf = 2 / (1 - c->beta2) - 1;
        double rho_t = rho_inf - 2 * step * b2t / s->bc2;
        double rect = rho_t > 4.0 ? pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5)
                                  : (double)!c->silent_sgd_phase;
        s->normalize = rho_t > 4.0;
        l = glr * rect;
    } else {
        double sched = k < c->warmup_steps ? step / c->warmup_steps : 1.0;
        if (c->kind == SD_OPTIM_ADAMW_SF) s->bc2 = 1 - pow(c->beta2, step), s->normalize = 1;
        l = glr * sched;
    }
    G->sf_lr_max = py_max(l, G->sf_lr_max);
    double weight = pow(step, c->sf_r) * pow(G->sf_lr_max, c->weight_lr_power);
    G->sf_weight_sum = G->sf_weight_sum + weight;
    s->ckp1 = G->sf_weight_sum != 0 ? weight / G->sf_weight_sum : 0;   /* ZeroDivisionError -> 0 */
    s->lr = l;
}

int sd_optim_step_schedulefree(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    if (!o->ds.sf_train)
        return sd_err(SD_ESTATE, "%s: Optimizer was not in train mode when step is called. Please insert .train() "
                      "and .eval() calls on the optimizer.", sd_optim_kind_name(c->kind));
    const double beta1 = sf_beta1(c), k = o->ds.k;
    const int sgd = c->kind == SD_OPTIM_SGD_SF;
    const float b2 = (float)c->beta2, o2 = (float)(1 - c->beta2), eps = (float)c->eps;
    for (int gi = 0; gi < o->ngroups; gi++) {
        sd_optim_group *G = &o->groups[gi];
        sf_scalars s;
        sf_group_scalars(c, G, sd_optim_glr(o, lr, gi), k, &s);
        const double wd = G->weight_decay;
        const float bc2 = (float)s.bc2, ck = (float)s.ckp1, wdf = (float)wd;
        const float ylr = (float)(s.lr * (beta1 * (1 - s.ckp1) - 1)), nlr = (float)(-s.lr);
        const int norm = s.normalize, decay = wd != 0;
        for (size_t i = G->first; i < G->first + G->count; i++) {
            if (skip && skip[i]) continue;
            sd_optim_param *q = &o->params[i];
            float *restrict y = pval(q), *restrict g = pgrad(q), *restrict z = q->buf[0];
            float *restrict v = sgd ? NULL : q->buf[1];
            size_t n = pnumel(q);
            if (!q->initialized) {   /* state['z'] = clone(p), state['exp_avg_sq'] = zeros */
                memcpy(z, y, n * sizeof(float));
                if (v) memset(v, 0, n * sizeof(float));
                q->initialized = 1;
            }
            q->step++;
            #pragma omp parallel for schedule(static) if (PAR(n))
            for (size_t j = 0; j < n; j++) {
                float gj = g[j];
                if (!sgd) {
                    float vj = fmaf(o2, gj * gj, v[j] * b2);   /* mul_(beta2); addcmul_(g, g, 1-beta2) */
                    v[j] = vj;
                    if (norm) {
                        float den = sqrtf(vj / bc2) + eps;
                        gj = gj / den;
                    }
                }
                if (decay) gj = fmaf(wdf, y[j], gj);
                float yj = sf_lerp(y[j], z[j], ck);
                y[j] = fmaf(ylr, gj, yj);
                z[j] = fmaf(nlr, gj, z[j]);
                g[j] = gj;   /* the reference divides and decays p.grad in place */
            }
        }
    }
    o->ds.k = k + 1;
    return SD_OK;
}

static int sf_swap(sd_optim *o, int to_train)
{
    if (!sd_optim_is_schedulefree(o->cfg.kind) || (o->ds.sf_train != 0) == (to_train != 0)) return SD_OK;
    const double b1 = sf_beta1(&o->cfg);
    const float w = (float)(to_train ? 1 - b1 : 1 - 1 / b1);
    const int half = o->half != SD_F32, bf = o->half == SD_BF16;
    for (size_t i = 0; i < o->nparams; i++) {
        sd_optim_param *q = &o->params[i];
        if (!q->initialized) continue;   /* no 'z' in its state */
        float *restrict p = pval(q);
        const float *restrict z = q->buf[0];
        size_t n = pnumel(q);
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            float x = sf_lerp(p[j], z[j], w);
            p[j] = half ? (bf ? sd_round_bf16(x) : sd_round_f16(x)) : x;
        }
    }
    o->ds.sf_train = to_train ? 1 : 0;
    return SD_OK;
}

int sd_optim_sf_eval(sd_optim *o) { return sf_swap(o, 0); }
int sd_optim_sf_train(sd_optim *o) { return sf_swap(o, 1); }

void sd_optim_after_load(sd_optim *o)
{
    if (!sd_optim_is_schedulefree(o->cfg.kind)) return;
    for (int gi = 0; gi < o->ngroups; gi++) {
        sd_optim_group *G = &o->groups[gi];
        G->sf_weight_sum = 0.0;
        G->sf_lr_max = -1.0;
        sf_scalars s;
        for (double k = 0; k < o->ds.k; k++) sf_group_scalars(&o->cfg, G, G->lr, k, &s);
    }
}

/* ---- DAdaptSGD (dadaptation 3.2, dadaptation/dadapt_sgd.py) ---------------------------------------- */

int sd_optim_step_dadapt_sgd(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    sd_optim_dstate *ds = &o->ds;
    double lmax;
    if (!o->nparams) return SD_OK;
    const double decay = o->ngroups ? o->groups[0].weight_decay : 0.0;   /* param_groups[0]['weight_decay'] */
    const double ck = 1 - c->momentum, k = ds->k, d = ds->d;
    if (k == 0) {   /* g0_norm from the raw gradients (grad.add(p, alpha=decay) is not in place) */
        double gsq = 0;
        for (size_t i = 0; i < o->nparams; i++) {
            if (skip && skip[i]) continue;
            sd_optim_param *q = &o->params[i];
            if (!(sd_optim_glr(o, lr, q->group) > 0.0)) continue;
            const float *g = pgrad(q);
            size_t n = pnumel(q);
            double s = 0;
            for (size_t j = 0; j < n; j++) s += (double)g[j] * (double)g[j];
            gsq += (double)(float)s;
        }
        ds->g0_norm = sqrt(gsq);
    }
    int rc = common_lr(o, lr, &lmax);
    if (rc) return rc;
    if (ds->g0_norm == 0)
        return sd_err(SD_ERANGE, "DAdaptSGD: float division by zero (the first step's gradients are all zero: g0_norm = 0)");
    const double dlr = d * lmax / ds->g0_norm;
    double delta = 0, sksq = 0;
    const float dlrf = (float)dlr;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        float *restrict z = q->buf[0], *restrict s = q->buf[1], *restrict x0 = q->buf[2];
        float *restrict g = pgrad(q);
        const float *restrict p = pval(q);
        const size_t n = pnumel(q);
        if (!q->initialized) {
            memcpy(z, p, n * sizeof(float));
            memset(s, 0, n * sizeof(float));
            memcpy(x0, p, n * sizeof(float));
            q->initialized = 1;
        }
        if (decay != 0) coupled_decay(q, decay);
        if (sd_optim_glr(o, lr, q->group) > 0.0) {
            double dot = 0;
            for (size_t j = 0; j < n; j++) dot += (double)g[j] * (double)s[j];
            delta += dlr * (double)(float)dot;
            #pragma omp parallel for schedule(static) if (PAR(n))
            for (size_t j = 0; j < n; j++) s[j] = fmaf(dlrf, g[j], s[j]);
            double ss = 0;
            for (size_t j = 0; j < n; j++) ss += (double)s[j] * (double)s[j];
            sksq += (double)(float)ss;
        }
    }
    const double gnw = ds->numerator_weighted + delta;
    double dn = d;
    if (lmax > 0.0) {
        if (sksq == 0) return sd_err(SD_ERANGE, "DAdaptSGD: float division by zero (all gradients are zero: ‖s‖ = 0)");
        ds->d_hat = 2 * gnw / sqrt(sksq);
        dn = py_max(d, py_min(ds->d_hat, d * c->growth_rate));
    }
    if (sksq == 0) return SD_OK;   /* the reference returns before storing d, numerator_weighted, k */
    ds->numerator_weighted = gnw;
    ds->d = dn;
    const float omck = (float)(1 - ck), ckf = (float)ck;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        float *restrict z = q->buf[0];
        const float *restrict s = q->buf[1], *restrict x0 = q->buf[2];
        float *restrict p = pval(q);
        const size_t n = pnumel(q);
        q->step++;
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            z[j] = x0[j] - s[j];
            p[j] = fmaf(ckf, z[j], p[j] * omck);   /* p.mul_(1-ck).add_(z, alpha=ck) */
        }
    }
    ds->k = k + 1;
    return SD_OK;
}

/* ---- DAdaptAdaGrad (dadaptation 3.2, dadaptation/dadapt_adagrad.py) ------------------------------- */

/* (sk·sk).div(sqrt(alphak) + eps).sum().item() and sk.abs().sum().item() */
static void adagrad_sums(const float *sk, const float *a, size_t n, float eps, double *sq, double *l1)
{
    double s = 0, t = 0;
    for (size_t j = 0; j < n; j++) {
        s += (double)((sk[j] * sk[j]) / (sqrtf(a[j]) + eps));
        t += fabs((double)sk[j]);
    }
    *sq = (double)(float)s;
    *l1 = (double)(float)t;
}

int sd_optim_step_dadapt_adagrad(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    sd_optim_dstate *ds = &o->ds;
    if (!o->nparams || !o->ngroups) return SD_OK;
    const double l = sd_optim_glr(o, lr, 0);   /* param_groups[0]['lr']: the others are not read */
    const double ck = 1 - c->momentum, d = ds->d, dlr = d * l;
    const float eps = (float)c->eps, dlrf = (float)dlr;
    double g_sq = 0, sksq_change = 0, skl1_change = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const double wd = o->groups[q->group].weight_decay;
        float *restrict a = q->buf[0], *restrict sk = q->buf[1], *restrict x0 = q->buf[2];
        float *restrict g = pgrad(q);
        const float *restrict p = pval(q);
        const size_t n = pnumel(q);
        if (!q->initialized) {   /* alphak = full(1e-6), sk = 0, x0 = clone(p) */
            for (size_t j = 0; j < n; j++) a[j] = 1e-6f;
            memset(sk, 0, n * sizeof(float));
            memcpy(x0, p, n * sizeof(float));
            q->initialized = 1;
        }
        if (wd != 0) coupled_decay(q, wd);
        double old_sq, old_l1, new_sq, new_l1;
        adagrad_sums(sk, a, n, eps, &old_sq, &old_l1);
        double gs = 0;
        for (size_t j = 0; j < n; j++) {
            float gg = g[j] * g[j];
            a[j] = a[j] + gg;
            gs += (double)(gg / (sqrtf(a[j]) + eps));
        }
        g_sq += (double)(float)gs;
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) sk[j] = fmaf(dlrf, g[j], sk[j]);
        adagrad_sums(sk, a, n, eps, &new_sq, &new_l1);
        sksq_change += new_sq - old_sq;
        skl1_change += new_l1 - old_l1;
    }
    const double sksq = ds->sksq_weighted + sksq_change, skl1 = ds->skl1 + skl1_change;
    if (skl1 == 0) return SD_OK;   /* no progress: the reference returns before storing anything */
    const double gsqw = ds->gsq_weighted + dlr * dlr * g_sq;
    double dn = d;
    if (l > 0.0) {
        ds->d_hat = (sksq - gsqw) / skl1;
        dn = py_max(d, py_min(ds->d_hat, d * c->growth_rate));
    }
    ds->gsq_weighted = gsqw;
    ds->skl1 = skl1;
    ds->sksq_weighted = sksq;
    ds->d = dn;
    const float omck = (float)(1 - ck), ckf = (float)ck;
    const int mom = c->momentum != 0;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const float *restrict a = q->buf[0], *restrict sk = q->buf[1], *restrict x0 = q->buf[2];
        float *restrict p = pval(q);
        const size_t n = pnumel(q);
        q->step++;
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            float z = x0[j] - sk[j] / (sqrtf(a[j]) + eps);
            p[j] = mom ? fmaf(ckf, z, p[j] * omck) : z;   /* p.mul_(1-ck).add_(z, alpha=ck) or copy_(z) */
        }
    }
    ds->k += 1;
    return SD_OK;
}

/* ---- DAdaptAdan / DAdaptAdanIP (dadaptation 3.2, dadapt_adan.py, experimental/dadapt_adan_ip.py) ---- */

/* AdanIP keeps numerator_weighted, d̂ and (once d̂ wins) d as 0-dim f32 tensors: a Python float op
 * with one is f32 arithmetic with the float rounded to f32 (tmul/tadd), comparisons in f32. */
static inline double tmul(double a, double b) { return (double)((float)a * (float)b); }
static inline double tadd(double a, double b) { return (double)((float)a + (float)b); }

int sd_optim_step_dadapt_adan(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    sd_optim_dstate *ds = &o->ds;
    if (!o->nparams || !o->ngroups) return SD_OK;
    const int ip = c->kind == SD_OPTIM_DADAPT_ADAN_IP, dt = ip && ds->d_tensor != 0;
    const double l = sd_optim_glr(o, lr, 0);   /* param_groups[0]['lr'] */
    const double b1 = c->beta1, b2 = c->beta2, b3 = c->beta3, d = ds->d;
    const double dlr = dt ? tmul(d, l) : d * l;
    /* alpha=dlr*(1-β): f32 products once d is a tensor */
    const float a1 = (float)(dt ? tmul(dlr, 1 - b1) : dlr * (1 - b1));
    const float a2 = (float)(dt ? tmul(dlr, 1 - b2) : dlr * (1 - b2));
    const float a3 = (float)(dt ? tmul(dlr, 1 - b3) : dlr * (1 - b3));
    const float b1f = (float)b1, b2f = (float)b2, b3f = (float)b3, o3 = (float)(1 - b3), eps = (float)c->eps;
    const float dlrf = (float)dlr;
    double g_sq = 0, sksq = 0, sk_l1 = 0;
    float num = 0;   /* AdanIP: numerator_acum, an f32 tensor */
    int num_tensor = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        float *restrict s = q->buf[0], *restrict m = q->buf[1], *restrict pre = q->buf[4];
        /* Adan: n = 'exp_avg_diff', v = 'exp_avg_sq'; AdanIP unpacks them the other way round */
        float *restrict nd = q->buf[ip ? 3 : 2], *restrict v = q->buf[ip ? 2 : 3];
        const float *restrict g = pgrad(q);
        const size_t n = pnumel(q);
        q->initialized = 1;
        if (q->step == 0) memcpy(pre, g, n * sizeof(float));   /* state['pre_grad'] = grad.clone() */
        if (ip) {   /* dlr * torch.dot(grad, s.div(denom)) with the old v */
            double dot = 0;
            for (size_t j = 0; j < n; j++) dot += (double)g[j] * (double)(s[j] / (sqrtf(v[j]) + eps));
            num = num_tensor ? num + dlrf * (float)dot : 0.0f + dlrf * (float)dot;
            num_tensor = 1;
        }
        double gs = 0, ss = 0, sl = 0;
        for (size_t j = 0; j < n; j++) {
            const float gd = g[j] - pre[j], u = g[j] + b2f * gd;
            m[j] = fmaf(a1, g[j], m[j] * b1f);
            nd[j] = fmaf(a2, gd, nd[j] * b2f);
            v[j] = fmaf(o3, u * u, v[j] * b3f);
            s[j] = fmaf(a3, g[j], s[j] * b3f);
            if (!ip) {
                const float den = sqrtf(v[j]) + eps;
                gs += (double)((g[j] * g[j]) / den);
                ss += (double)((s[j] * s[j]) / den);
            }
            sl += fabs((double)s[j]);
        }
        g_sq += (double)(float)gs;
        sksq += (double)(float)ss;
        sk_l1 += (double)(float)sl;
    }
    double dhat = d, dn = d;
    int dn_tensor = dt;
    if (ip) {
        /* beta3*nw + (1-beta3)*acum: an f32 tensor (acum is one as soon as a parameter had a gradient) */
        const double acc = num_tensor ? tmul(1 - b3, num) : (1 - b3) * 0.0;
        const double nw = num_tensor ? tadd(tmul(b3, ds->numerator_weighted), acc) : b3 * ds->numerator_weighted + acc;
        if (sk_l1 == 0) return SD_OK;
        if (l > 0.0) {
            /* 2*(beta3/(1-beta3))*nw/sk_l1 (f32); d = max(d, min(d_hat, d*growth_rate)) */
            dhat = (double)((float)tmul(2 * (b3 / (1 - b3)), nw) / (float)sk_l1);
            const double cap = dt ? tmul(d, c->growth_rate) : d * c->growth_rate;
            double y = dhat;
            int y_tensor = 1;
            if ((float)cap < (float)dhat) y = cap, y_tensor = dt;
            const int f32cmp = y_tensor || dt;
            if (f32cmp ? (float)y > (float)d : y > d) dn = y, dn_tensor = y_tensor;
        }
        ds->numerator_weighted = nw;
    } else {
        const double gsqw = b3 * ds->gsq_weighted + g_sq * (dlr * dlr) * (1 - b3);
        if (sk_l1 == 0) return SD_OK;
        if (l > 0.0) {
            dhat = (sksq / (1 - b3) - gsqw) / sk_l1;
            dn = py_max(d, py_min(dhat, d * c->growth_rate));
        }
        ds->gsq_weighted = gsqw;
    }
    ds->d_hat = dhat;
    ds->d = dn;
    if (ip) ds->d_tensor = dn_tensor;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const double wd = o->groups[q->group].weight_decay;
        const float *restrict m = q->buf[1], *restrict nd = q->buf[ip ? 3 : 2], *restrict v = q->buf[ip ? 2 : 3];
        const float *restrict g = pgrad(q);
        float *restrict p = pval(q), *restrict pre = q->buf[4];
        const size_t n = pnumel(q);
        q->step++;
        const double dw = dt ? tmul(dlr, wd) : dlr * wd;
        const float mulf = (float)(dt ? (double)(1.0f - (float)dw) : 1 - dw);   /* no_prox: 1 - dlr*decay */
        const float divf = (float)(dt ? (double)(1.0f + (float)dw) : 1 + dw);   /* else: 1 + dlr*decay */
        const int np = c->no_prox;
        #pragma omp parallel for schedule(static) if (PAR(n))
        for (size_t j = 0; j < n; j++) {
            const float upd = (m[j] + b2f * nd[j]) / (sqrtf(v[j]) + eps);
            float pj = p[j];
            if (np) pj = pj * mulf - upd;
            else pj = (pj - upd) / divf;
            p[j] = pj;
            pre[j] = g[j];
        }
    }
    ds->k += 1;
    return SD_OK;
}

/* ---- DAdaptLion (dadaptation 3.2, dadaptation/dadapt_lion.py) ------------------------------------- */

int sd_optim_step_dadapt_lion(sd_optim *o, const double *lr, const uint8_t *skip)
{
    const sd_optim_config *c = &o->cfg;
    sd_optim_dstate *ds = &o->ds;
    double lmax;
    if (!o->nparams) return SD_OK;
    int rc = common_lr(o, lr, &lmax);
    if (rc) return rc;
    const double d = ds->d, dlr = d * lmax, b1 = c->beta1, b2 = c->beta2, sb2 = pow(b2, 0.5);
    const float b1f = (float)b1, o1 = (float)(1 - b1), b2f = (float)b2, ma = (float)((1 - b2) * dlr);
    const float sbf = (float)sb2, sa = (float)((1 - sb2) * dlr), ndlr = (float)(-dlr);
    double num = 0, sk_l1 = 0;
    for (size_t i = 0; i < o->nparams; i++) {
        if (skip && skip[i]) continue;
        sd_optim_param *q = &o->params[i];
        const double wd = o->groups[q->group].weight_decay;
        float *restrict p = pval(q), *restrict m = q->buf[0], *restrict s = q->buf[1];
        const float *restrict g = pgrad(q);
        const size_t n = pnumel(q);
        const float decay = (float)(1 - dlr * wd);
        q->initialized = 1;
        q->step++;
        double dot = 0, sl = 0;
        for (size_t j = 0; j < n; j++) {
            float pj = p[j] * decay;                               /* p.data.mul_(1-dlr*wd) */
            const float x = fmaf(o1, g[j], m[j] * b1f);
            const float u = (float)((x > 0) - (x < 0));          /* .sign_() */
            p[j] = fmaf(ndlr, u, pj);                              /* p.add_(update, alpha=-dlr) */
            m[j] = fmaf(ma, g[j], m[j] * b2f);
            dot += (double)u * (double)s[j];
            s[j] = fmaf(sa, u, s[j] * sbf);
            sl += fabs((double)s[j]);
        }
        num += dlr * (double)(float)dot;
        sk_l1 += (double)(float)sl;
    }
    if (sk_l1 == 0) return SD_OK;   /* the parameters have moved; d, numerator_weighted and k stay */
    const double gnw = sb2 * ds->numerator_weighted + (1 - sb2) * num;
    double dn = d;
    if (lmax > 0.0) {
        ds->d_hat = gnw / ((1 - sb2) * sk_l1);
        dn = py_max(d, ds->d_hat);
    }
    ds->numerator_weighted = gnw;
    ds->d = dn;
    ds->k += 1;
    return SD_OK;
}
