/* Samplers: transcriptions of the diffusers 0.32.1 schedulers' set_timesteps / scale_model_input /
 * step for the configuration the reference uses (see samplers.h). Scalar bookkeeping follows the
 * precision diffusers uses for it (numpy float64 for timestep grids and np.interp, float32 torch
 * tensors for sigmas and coefficients); per-element updates are float32 in torch's operation
 * order. */
#include "diffusion/samplers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"

#define NTRAIN 1000

static const char *const names[SD_SAMPLER_COUNT] = {
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a",
    "dpmsolver", "dpmsolver++", "dpmsingle",
};

const char *sd_sampler_name(sd_sampler_kind k)
{
    return (unsigned)k < SD_SAMPLER_COUNT ? names[k] : "?";
}

int sd_sampler_parse(const char *name, sd_sampler_kind *out)
{
    if (name) {
        for (int i = 0; i < SD_SAMPLER_COUNT; i++)
            if (!strcmp(name, names[i])) {
                *out = (sd_sampler_kind)i;
                return SD_OK;
            }
        static const struct { const char *alias; sd_sampler_kind k; } al[] = {
            {"k_lms", SD_SAMPLER_LMS}, {"k_euler", SD_SAMPLER_EULER}, {"k_euler_a", SD_SAMPLER_EULER_A},
            {"k_dpm_2", SD_SAMPLER_DPM_2}, {"k_dpm_2_a", SD_SAMPLER_DPM_2_A},
        };
        for (size_t i = 0; i < sizeof al / sizeof al[0]; i++)
            if (!strcmp(name, al[i].alias)) {
                *out = al[i].k;
                return SD_OK;
            }
    }
    return sd_err(SD_EINVAL, "unknown sampler '%s' (ddim, pndm, lms, euler, euler_a, heun, dpm_2, dpm_2_a, "
                  "dpmsolver, dpmsolver++, dpmsingle, k_lms, k_euler, k_euler_a, k_dpm_2, k_dpm_2_a)",
                  name ? name : "");
}

int sd_sampler_parse_reference(const char *name, sd_sampler_kind *out)
{
    if (sd_sampler_parse(name, out) == SD_OK) return 0;
    *out = SD_SAMPLER_DDIM;
    return 1;
}

void sd_sampler_config_default(sd_sampler_config *c)
{
    memset(c, 0, sizeof *c);
    c->clip_sample = -1;
    c->final_sigma_zero = -1;
}

/* ---- schedule helpers ----------------------------------------------------------------------- */

/* ((1 − ᾱ)/ᾱ)^0.5 in float32 */
static void full_sigmas(const float *ac, float *sig)
{
    for (int t = 0; t < NTRAIN; t++) sig[t] = sqrtf((1.0f - ac[t]) / ac[t]);
}

/* np.interp(x, arange(NTRAIN), fp) in double */
static double interp(double x, const float *fp)
{
    if (x <= 0) return fp[0];
    if (x >= NTRAIN - 1) return fp[NTRAIN - 1];
    int j = (int)floor(x);
    if (x == (double)j) return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return slope * (x - (double)j) + (double)fp[j];
}

/* np.linspace(0, stop, num) element i, in double */
static double linspace_at(double stop, int num, int i)
{
    if (num == 1) return 0.0;
    if (i == num - 1) return stop;
    double step = stop / (double)(num - 1);
    return (double)i * step;
}

/* diffusers _sigma_to_t in float32 (log_sigmas = log of the full float32 sigma table) */
static float sigma_to_t(float sigma, const float *log_sigmas)
{
    float ls = logf(sigma > 1e-10f ? sigma : 1e-10f);
    int low = 0;
    for (int j = 0; j < NTRAIN; j++)
        if (log_sigmas[j] <= ls) low = j;
    if (low > NTRAIN - 2) low = NTRAIN - 2;
    float lo = log_sigmas[low], hi = log_sigmas[low + 1];
    float w = (lo - ls) / (lo - hi);
    if (w < 0.0f) w = 0.0f;
    if (w > 1.0f) w = 1.0f;
    float a = (1.0f - w) * (float)low, b = w * (float)(low + 1);
    return a + b;
}

/* torch.lerp(a, b, 0.5) then exp, in float: b − (b − a)·0.5 */
static float exp_lerp_half(float la, float lb)
{
    float d = lb - la;
    return expf(lb - d * 0.5f);
}

/* ---- init ----------------------------------------------------------------------------------- */

void sd_sampler_free(sd_sampler *s)
{
    if (!s) return;
    free(s->timesteps);
    free(s->sigmas);
    free(s->sigmas_interpol);
    free(s->sigmas_up);
    free(s->sigmas_down);
    free(s->aux);
    for (int i = 0; i < SD_SAMPLER_BUFS; i++) free(s->buf[i]);
    memset(s, 0, sizeof *s);
}

void sd_sampler_reset(sd_sampler *s)
{
    s->step_index = 0;
    s->counter = 0;
    s->ets_n = 0;
    s->lower_order_nums = 0;
    s->have_first = 0;
    s->mo_n = 0;
    s->dt = 0;
    /* buffer roles: ets[0..3]/deriv[0..3] share buf[0..3]; mo[0..1] = buf[0..1] */
    for (int i = 0; i < 4; i++) s->ets[i] = s->deriv[i] = s->buf[i];
    s->mo[0] = s->buf[0];
    s->mo[1] = s->buf[1];
    s->cur_mo = s->buf[4];
    s->cur_sample = s->buf[5];
    s->saved = s->buf[6];
}

static int alloc_arrays(sd_sampler *s, int nt, int ns)
{
    s->nt = nt;
    s->ns = ns;
    s->timesteps = calloc((size_t)nt, sizeof(double));
    s->aux = calloc((size_t)nt + 16, sizeof(int));
    if (ns > 0) {
        s->sigmas = calloc((size_t)ns, sizeof(float));
        s->sigmas_interpol = calloc((size_t)ns, sizeof(float));
        s->sigmas_up = calloc((size_t)ns, sizeof(float));
        s->sigmas_down = calloc((size_t)ns, sizeof(float));
        if (!s->sigmas || !s->sigmas_interpol || !s->sigmas_up || !s->sigmas_down) return SD_ENOMEM;
    }
    return s->timesteps && s->aux ? SD_OK : SD_ENOMEM;
}

/* linspace-spaced float32 timesteps, descending, and their interpolated sigmas (n + 1 with the
 * final 0) — LMS, Euler, Euler a, and the base grid of Heun / KDPM2 (a) */
static void linspace_grid(int n, const float *fsig, float *ts, float *sig)
{
    for (int i = 0; i < n; i++) {
        float t = (float)linspace_at(NTRAIN - 1, n, n - 1 - i);
        ts[i] = t;
        sig[i] = (float)interp((double)t, fsig);
    }
    sig[n] = 0.0f;
}

int sd_sampler_init(sd_sampler *s, sd_sampler_kind kind, int n, const sd_sampler_config *cfg, size_t count)
{
    memset(s, 0, sizeof *s);
    if ((unsigned)kind >= SD_SAMPLER_COUNT) return sd_err(SD_EINVAL, "sampler: unknown kind %d", (int)kind);
    if (n < 1 || n > NTRAIN)
        return sd_err(SD_EINVAL, "sampler %s: %d steps (must be 1..%d)", names[kind], n, NTRAIN);
    if (count == 0) return sd_err(SD_EINVAL, "sampler %s: empty sample", names[kind]);
    if (kind == SD_SAMPLER_PNDM && n < 4)
        return sd_err(SD_EUNSUPPORTED, "sampler pndm: %d steps: needs at least 4 (its Runge-Kutta warm-up; "
                      "the reference fails too)", n);
    sd_sampler_config c;
    if (cfg) c = *cfg;
    else sd_sampler_config_default(&c);
    if (c.clip_sample < 0) c.clip_sample = kind == SD_SAMPLER_DDIM || kind == SD_SAMPLER_HEUN;
    if (c.final_sigma_zero < 0) c.final_sigma_zero = kind != SD_SAMPLER_DPMSOLVER;
    if (kind == SD_SAMPLER_DPMSOLVER && c.final_sigma_zero)
        return sd_err(SD_EUNSUPPORTED, "sampler dpmsolver: a final sigma of zero is not supported (use sigma_min)");
    if (!(c.eta >= 0)) return sd_err(SD_EINVAL, "sampler %s: eta %g must be >= 0", names[kind], c.eta);
    s->kind = kind;
    s->cfg = c;
    s->num_inference_steps = n;
    s->n = count;
    sd_ddpm d;
    sd_ddpm_init(&d);
    memcpy(s->ac, d.alphas_cumprod, sizeof s->ac);
    float fsig[NTRAIN], lsig[NTRAIN];
    full_sigmas(s->ac, fsig);
    for (int t = 0; t < NTRAIN; t++) lsig[t] = logf(fsig[t]);

    int rc = SD_OK;
    s->init_noise_sigma = 1.0f;
    switch (kind) {
    case SD_SAMPLER_DDIM: {
        rc = alloc_arrays(s, n, 0);
        if (rc) break;
        int ratio = NTRAIN / n;
        for (int i = 0; i < n; i++) s->timesteps[i] = s->aux[i] = (n - 1 - i) * ratio;
        break;
    }
    case SD_SAMPLER_PNDM: {
        int ratio = NTRAIN / n, h = ratio / 2;
        rc = alloc_arrays(s, 12 + n - 3, 0);
        if (rc) break;
        int *ts = s->aux, k = 0;
        int a0 = (n - 4) * ratio, a1 = (n - 3) * ratio, a2 = (n - 2) * ratio, a3 = (n - 1) * ratio;
        int prk[12] = {a3, a2 + h, a2 + h, a2, a2, a1 + h, a1 + h, a1, a1, a0 + h, a0 + h, a0};
        for (int i = 0; i < 12; i++) ts[k++] = prk[i];
        for (int j = n - 4; j >= 0; j--) ts[k++] = j * ratio;
        for (int i = 0; i < s->nt; i++) s->timesteps[i] = ts[i];
        break;
    }
    case SD_SAMPLER_LMS:
    case SD_SAMPLER_EULER:
    case SD_SAMPLER_EULER_A: {
        rc = alloc_arrays(s, n, n + 1);
        if (rc) break;
        float ts[NTRAIN];
        linspace_grid(n, fsig, ts, s->sigmas);
        for (int i = 0; i < n; i++) s->timesteps[i] = ts[i];
        s->init_noise_sigma = s->sigmas[0];
        break;
    }
    case SD_SAMPLER_HEUN: {
        rc = alloc_arrays(s, 2 * n - 1, 2 * n);
        if (rc) break;
        float ts[NTRAIN], sg[NTRAIN + 1];
        linspace_grid(n, fsig, ts, sg);
        /* sigmas = [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]; timesteps = [t0, t1, t1, ...] */
        int k = 0;
        s->sigmas[k++] = sg[0];
        for (int i = 1; i < n; i++) s->sigmas[k++] = sg[i], s->sigmas[k++] = sg[i];
        s->sigmas[k++] = sg[n];
        k = 0;
        s->timesteps[k++] = ts[0];
        for (int i = 1; i < n; i++) s->timesteps[k++] = ts[i], s->timesteps[k++] = ts[i];
        s->init_noise_sigma = sg[0];
        break;
    }
    case SD_SAMPLER_DPM_2:
    case SD_SAMPLER_DPM_2_A: {
        rc = alloc_arrays(s, 2 * n - 1, 2 * n + 2);
        if (rc) break;
        float ts[NTRAIN], sg[NTRAIN + 1], ip[NTRAIN + 1], up[NTRAIN + 1], dn[NTRAIN + 1];
        linspace_grid(n, fsig, ts, sg);
        float lg[NTRAIN + 1];
        for (int i = 0; i <= n; i++) lg[i] = logf(sg[i]); /* log(0) = −inf as in torch */
        if (kind == SD_SAMPLER_DPM_2) {
            /* interpol_i = exp(lerp(log s_i, log s_{i−1}, 0.5)) with s_{−1} = s_n = 0 (roll);
             * entry 0 is NaN in diffusers and never used */
            for (int i = 0; i <= n; i++) ip[i] = i == 0 ? NAN : exp_lerp_half(lg[i], lg[i - 1]);
            ip[n] = 0.0f; /* lerp(−inf, finite) = −inf */
            for (int i = 0; i <= n; i++) up[i] = dn[i] = 0.0f;
        } else {
            for (int i = 0; i <= n; i++) {
                float nx = i < n ? sg[i + 1] : 0.0f;
                float si = sg[i];
                if (si == 0.0f) {
                    up[i] = NAN;
                    dn[i] = NAN;
                } else {
                    float a = nx * nx, b = si * si;
                    up[i] = sqrtf(a * (b - a) / b);
                    dn[i] = sqrtf(a - up[i] * up[i]);
                }
            }
            dn[n] = 0.0f;
            for (int i = 0; i <= n; i++)
                ip[i] = (dn[i] > 0.0f && sg[i] > 0.0f) ? exp_lerp_half(logf(sg[i]), logf(dn[i])) : NAN;
            ip[n] = 0.0f;
            if (n >= 1) ip[n - 1] = 0.0f;
        }
        /* interleave: [x0, x1, x1, ..., xn, xn, xn] */
        float *dst[4] = {s->sigmas, s->sigmas_interpol, s->sigmas_up, s->sigmas_down};
        float *src[4] = {sg, ip, up, dn};
        for (int a = 0; a < 4; a++) {
            int k = 0;
            dst[a][k++] = src[a][0];
            for (int i = 1; i <= n; i++) dst[a][k++] = src[a][i], dst[a][k++] = src[a][i];
            dst[a][k++] = src[a][n];
        }
        /* timesteps: t0, then (t_interp, t_i) pairs; t_interp from _sigma_to_t(interpol) */
        int k = 0;
        s->timesteps[k++] = ts[0];
        for (int i = 1; i < n; i++) {
            float ti = kind == SD_SAMPLER_DPM_2 ? sigma_to_t(ip[i], lsig) : sigma_to_t(ip[i - 1], lsig);
            s->timesteps[k++] = ti;
            s->timesteps[k++] = ts[i];
        }
        s->init_noise_sigma = sg[0];
        break;
    }
    case SD_SAMPLER_DPMSOLVER:
    case SD_SAMPLER_DPMSOLVER_PP:
    case SD_SAMPLER_DPMSINGLE: {
        rc = alloc_arrays(s, n, n + 1);
        if (rc) break;
        for (int i = 0; i < n; i++) {
            int t = (int)nearbyint(linspace_at(NTRAIN - 1, n + 1, n - i));
            s->aux[i] = t;
            s->timesteps[i] = t;
            s->sigmas[i] = (float)interp((double)t, fsig);
        }
        s->sigmas[n] = c.final_sigma_zero ? 0.0f : fsig[0];
        if (kind == SD_SAMPLER_DPMSINGLE) {
            /* get_order_list for solver_order 2 with lower_order_final (forced on by set_timesteps
             * for an odd count or a zero final sigma; otherwise the default False) */
            int lof = (n % 2 != 0) || c.final_sigma_zero;
            int *o = s->aux;
            if (lof) {
                int k = 0;
                if (n % 2 == 0) {
                    for (int i = 0; i < n / 2 - 1; i++) o[k++] = 1, o[k++] = 2;
                    o[k++] = 1, o[k++] = 1;
                } else {
                    for (int i = 0; i < n / 2; i++) o[k++] = 1, o[k++] = 2;
                    o[k++] = 1;
                }
            } else {
                for (int i = 0; i < n; i++) o[i] = i % 2 ? 2 : 1;
            }
            if (c.final_sigma_zero) o[n - 1] = 1;
        }
        break;
    }
    default:
        rc = SD_EINVAL;
    }
    if (rc) {
        sd_sampler_free(s);
        return rc == SD_ENOMEM ? sd_err(SD_ENOMEM, "sampler: out of memory") : rc;
    }
    for (int i = 0; i < SD_SAMPLER_BUFS; i++) {
        s->buf[i] = calloc(count, sizeof(float));
        if (!s->buf[i]) {
            sd_sampler_free(s);
            return sd_err(SD_ENOMEM, "sampler: out of memory for %zu-element state", count);
        }
    }
    sd_sampler_reset(s);
    return SD_OK;
}

double sd_sampler_timestep(const sd_sampler *s)
{
    return s->step_index < s->nt ? s->timesteps[s->step_index] : -1.0;
}

int sd_sampler_done(const sd_sampler *s)
{
    return s->step_index >= s->nt;
}

/* the sigma scale_model_input divides by (sqrt(σ²+1)), or 0 for "no scaling" */
static int input_sigma(const sd_sampler *s, float *sigma)
{
    int i = s->step_index;
    switch (s->kind) {
    case SD_SAMPLER_LMS:
    case SD_SAMPLER_EULER:
    case SD_SAMPLER_EULER_A:
    case SD_SAMPLER_HEUN:
        *sigma = s->sigmas[i];
        return 1;
    case SD_SAMPLER_DPM_2:
        *sigma = !s->have_first ? s->sigmas[i] : s->sigmas_interpol[i];
        return 1;
    case SD_SAMPLER_DPM_2_A:
        *sigma = !s->have_first ? s->sigmas[i] : s->sigmas_interpol[i - 1];
        return 1;
    default:
        return 0;
    }
}

void sd_sampler_scale_model_input(const sd_sampler *s, const float *x, float *out, size_t count)
{
    float sigma;
    if (s->step_index < s->nt && input_sigma(s, &sigma)) {
        float d = sqrtf(sigma * sigma + 1.0f);
        for (size_t i = 0; i < count; i++) out[i] = x[i] / d;
    } else if (out != x) {
        memmove(out, x, count * sizeof(float));
    }
}

int sd_sampler_step_needs_noise(const sd_sampler *s)
{
    if (s->step_index >= s->nt) return 0;
    switch (s->kind) {
    case SD_SAMPLER_EULER_A: return 1;
    case SD_SAMPLER_DPM_2_A: return s->have_first; /* second-order half */
    case SD_SAMPLER_DDIM: return s->cfg.eta > 0;
    default: return 0;
    }
}

void sd_cfg_combine(const float *uncond, const float *cond, double scale, size_t n, float *out)
{
    float g = (float)scale;
    for (size_t i = 0; i < n; i++) {
        float d = cond[i] - uncond[i];
        out[i] = uncond[i] + g * d;
    }
}

/* ---- steps ---------------------------------------------------------------------------------- */

static float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void step_ddim(sd_sampler *s, const float *mo, float *x, const float *noise)
{
    int t = (int)s->timesteps[s->step_index];
    int prev = t - NTRAIN / s->num_inference_steps;
    float at = s->ac[t], ap = prev >= 0 ? s->ac[prev] : 1.0f;
    float bt = 1.0f - at, bp = 1.0f - ap;
    float sa = sqrtf(at), sb = sqrtf(bt);
    float var = (bp / bt) * (1.0f - at / ap);
    float sd = (float)s->cfg.eta * sqrtf(var);
    float cdir = sqrtf(1.0f - ap - sd * sd), cx0 = sqrtf(ap);
    int v = s->cfg.v_prediction, clip = s->cfg.clip_sample;
    for (size_t i = 0; i < s->n; i++) {
        float x0, pe;
        if (v) {
            x0 = sa * x[i] - sb * mo[i];
            pe = sa * mo[i] + sb * x[i];
        } else {
            x0 = (x[i] - sb * mo[i]) / sa;
            pe = mo[i];
        }
        if (clip) x0 = clampf(x0, -1.0f, 1.0f);
        float r = cx0 * x0 + cdir * pe;
        if (s->cfg.eta > 0) r = r + sd * noise[i];
        x[i] = r;
    }
}

/* PNDM _get_prev_sample: out = (a_prev/a_t)^0.5 · x − (a_prev − a_t)·mo/denom */
static void pndm_prev(const sd_sampler *s, const float *x, int t, int prev, const float *mo, float *out)
{
    float at = s->ac[t], ap = prev >= 0 ? s->ac[prev] : s->ac[0];
    float bt = 1.0f - at, bp = 1.0f - ap;
    float sc = sqrtf(ap / at);
    float den = at * sqrtf(bp) + sqrtf(at * bt * ap);
    float diff = ap - at;
    float sa = sqrtf(at), sb = sqrtf(bt);
    int v = s->cfg.v_prediction;
    for (size_t i = 0; i < s->n; i++) {
        float m = mo[i];
        if (v) m = sa * m + sb * x[i];
        float p = sc * x[i], q = diff * m / den;
        out[i] = p - q;
    }
}

static void push_ets(sd_sampler *s, const float *mo)
{
    if (s->ets_n == 4) {
        float *old = s->ets[0];
        memmove(s->ets, s->ets + 1, 3 * sizeof(float *));
        s->ets[3] = old;
        s->ets_n = 3;
    }
    memcpy(s->ets[s->ets_n++], mo, s->n * sizeof(float));
}

static void step_pndm(sd_sampler *s, const float *mo, float *x)
{
    int ratio = NTRAIN / s->num_inference_steps;
    int t = s->aux[s->step_index];
    size_t n = s->n;
    float *comb = s->saved;
    if (s->counter < 12) { /* step_prk */
        int diff = s->counter % 2 ? 0 : ratio / 2;
        int prev = t - diff;
        int tt = s->aux[s->counter / 4 * 4];
        int c4 = s->counter % 4;
        const float *use = mo;
        if (c4 == 0) {
            const float k = (float)(1.0 / 6.0);
            for (size_t i = 0; i < n; i++) s->cur_mo[i] = k * mo[i];
            push_ets(s, mo);
            memcpy(s->cur_sample, x, n * sizeof(float));
        } else if (c4 == 1 || c4 == 2) {
            const float k = (float)(1.0 / 3.0);
            for (size_t i = 0; i < n; i++) s->cur_mo[i] = s->cur_mo[i] + k * mo[i];
        } else {
            const float k = (float)(1.0 / 6.0);
            for (size_t i = 0; i < n; i++) comb[i] = s->cur_mo[i] + k * mo[i];
            use = comb;
        }
        pndm_prev(s, s->cur_sample, tt, prev, use, x);
        s->counter++;
        return;
    }
    /* step_plms (after the warm-up, so counter != 1 and ets has >= 3 entries) */
    int prev = t - ratio;
    push_ets(s, mo);
    float *const *e = s->ets;
    int k = s->ets_n;
    for (size_t i = 0; i < n; i++) {
        float r;
        if (k == 1) r = mo[i];
        else if (k == 2) r = (3.0f * e[1][i] - e[0][i]) / 2.0f;
        else if (k == 3) r = (23.0f * e[2][i] - 16.0f * e[1][i] + 5.0f * e[0][i]) / 12.0f;
        else r = (float)(1.0 / 24.0) * (55.0f * e[3][i] - 59.0f * e[2][i] + 37.0f * e[1][i] - 9.0f * e[0][i]);
        comb[i] = r;
    }
    pndm_prev(s, x, t, prev, comb, x);
    s->counter++;
}

/* x0 from the model output for the Karras-style schedulers (sigma = the "input" sigma) */
static inline float k_x0(float x, float m, float sigma, int v)
{
    if (!v) return x - sigma * m;
    float s2 = sigma * sigma + 1.0f;
    float c = -sigma / sqrtf(s2);
    return m * c + x / s2;
}

/* ∫_{σ_i}^{σ_{i+1}} Π_{k≠j} (τ − σ_{i−k})/(σ_{i−j} − σ_{i−k}) dτ: Gauss–Legendre with 4 nodes is
 * exact for the degree ≤ 3 polynomial */
static double lms_coeff(const float *sig, int order, int i, int j)
{
    static const double gx[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
    static const double gw[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
    double a = sig[i], b = sig[i + 1], half = (b - a) / 2, mid = (a + b) / 2, sum = 0;
    for (int q = 0; q < 4; q++) {
        double tau = mid + half * gx[q], p = 1.0;
        for (int k = 0; k < order; k++) {
            if (k == j) continue;
            p *= (tau - (double)sig[i - k]) / ((double)sig[i - j] - (double)sig[i - k]);
        }
        sum += gw[q] * p;
    }
    return sum * half;
}

static void step_lms(sd_sampler *s, const float *mo, float *x)
{
    int i = s->step_index, v = s->cfg.v_prediction;
    float sigma = s->sigmas[i];
    size_t n = s->n;
    if (s->ets_n == 4) { /* derivatives list keeps the last 4 */
        float *old = s->deriv[0];
        memmove(s->deriv, s->deriv + 1, 3 * sizeof(float *));
        s->deriv[3] = old;
        s->ets_n = 3;
    }
    float *d = s->deriv[s->ets_n++];
    for (size_t k = 0; k < n; k++) {
        float x0 = k_x0(x[k], mo[k], sigma, v);
        d[k] = (x[k] - x0) / sigma;
    }
    int order = i + 1 < 4 ? i + 1 : 4;
    float c[4];
    for (int j = 0; j < order; j++) c[j] = (float)lms_coeff(s->sigmas, order, i, j);
    int nd = s->ets_n;
    for (size_t k = 0; k < n; k++) {
        float acc = c[0] * s->deriv[nd - 1][k];
        for (int j = 1; j < order && j < nd; j++) acc = acc + c[j] * s->deriv[nd - 1 - j][k];
        x[k] = x[k] + acc;
    }
}

static void step_euler(sd_sampler *s, const float *mo, float *x, const float *noise)
{
    int i = s->step_index, v = s->cfg.v_prediction;
    float sigma = s->sigmas[i], next = s->sigmas[i + 1];
    if (s->kind == SD_SAMPLER_EULER) {
        float dt = next - sigma;
        for (size_t k = 0; k < s->n; k++) {
            float x0 = k_x0(x[k], mo[k], sigma, v);
            float der = (x[k] - x0) / sigma;
            x[k] = x[k] + der * dt;
        }
        return;
    }
    float up = sqrtf(next * next * (sigma * sigma - next * next) / (sigma * sigma));
    float down = sqrtf(next * next - up * up);
    float dt = down - sigma;
    for (size_t k = 0; k < s->n; k++) {
        float x0 = k_x0(x[k], mo[k], sigma, v);
        float der = (x[k] - x0) / sigma;
        float p = x[k] + der * dt;
        x[k] = p + noise[k] * up;
    }
}

static void step_heun(sd_sampler *s, const float *mo, float *x)
{
    int i = s->step_index, v = s->cfg.v_prediction, clip = s->cfg.clip_sample;
    size_t n = s->n;
    if (!s->have_first) {
        float sigma = s->sigmas[i], next = s->sigmas[i + 1];
        float dt = next - sigma;
        float *der = s->cur_mo;
        for (size_t k = 0; k < n; k++) {
            float x0 = k_x0(x[k], mo[k], sigma, v);
            if (clip) x0 = clampf(x0, -1.0f, 1.0f);
            der[k] = (x[k] - x0) / sigma;
        }
        memcpy(s->saved, x, n * sizeof(float));
        for (size_t k = 0; k < n; k++) x[k] = x[k] + der[k] * dt;
        s->dt = dt;
        s->have_first = 1;
    } else {
        float next = s->sigmas[i];
        float dt = s->dt;
        for (size_t k = 0; k < n; k++) {
            float x0 = k_x0(x[k], mo[k], next, v);
            if (clip) x0 = clampf(x0, -1.0f, 1.0f);
            float d2 = (x[k] - x0) / next;
            float der = (s->cur_mo[k] + d2) / 2.0f;
            x[k] = s->saved[k] + der * dt;
        }
        s->have_first = 0;
    }
}

static void step_kdpm2(sd_sampler *s, const float *mo, float *x, const float *noise)
{
    int i = s->step_index, v = s->cfg.v_prediction, anc = s->kind == SD_SAMPLER_DPM_2_A;
    size_t n = s->n;
    if (!s->have_first) {
        float sigma = s->sigmas[i];
        float ip = anc ? s->sigmas_interpol[i] : s->sigmas_interpol[i + 1];
        float dt = ip - sigma;
        memcpy(s->saved, x, n * sizeof(float));
        for (size_t k = 0; k < n; k++) {
            float x0 = k_x0(x[k], mo[k], sigma, v);
            float der = (x[k] - x0) / sigma;
            x[k] = x[k] + der * dt;
        }
        s->have_first = 1;
    } else {
        float sigma = s->sigmas[i - 1];
        float ip = anc ? s->sigmas_interpol[i - 1] : s->sigmas_interpol[i];
        float dt = anc ? s->sigmas_down[i - 1] - sigma : s->sigmas[i] - sigma;
        float up = anc ? s->sigmas_up[i - 1] : 0.0f;
        for (size_t k = 0; k < n; k++) {
            float x0 = k_x0(x[k], mo[k], ip, v);
            float der = (x[k] - x0) / ip;
            float p = s->saved[k] + der * dt;
            x[k] = anc ? p + noise[k] * up : p;
        }
        s->have_first = 0;
    }
}

/* DPM-Solver: σ → (α_t, σ_t, λ) in float32 as _sigma_to_alpha_sigma_t and torch.log */
static void dpm_als(float sigma, float *alpha, float *sig, float *lambda)
{
    float a = 1.0f / sqrtf(sigma * sigma + 1.0f);
    float st = sigma * a;
    *alpha = a;
    *sig = st;
    *lambda = logf(a) - logf(st); /* +inf at σ = 0 */
}

/* convert_model_output: x0 (dpmsolver++) or ε (dpmsolver) */
static void dpm_convert(const sd_sampler *s, const float *mo, const float *x, float *out)
{
    float a, st, l;
    dpm_als(s->sigmas[s->step_index], &a, &st, &l);
    int pp = s->kind != SD_SAMPLER_DPMSOLVER, v = s->cfg.v_prediction;
    for (size_t k = 0; k < s->n; k++) {
        if (pp) out[k] = v ? a * x[k] - st * mo[k] : (x[k] - st * mo[k]) / a;
        else out[k] = v ? a * mo[k] + st * x[k] : mo[k];
    }
}

/* first-order update from sigma index si to ti */
static void dpm_first(const sd_sampler *s, const float *m, const float *x, int si, int ti, float *out)
{
    float at, st, lt, as, ss, ls;
    dpm_als(s->sigmas[ti], &at, &st, &lt);
    dpm_als(s->sigmas[si], &as, &ss, &ls);
    float h = lt - ls;
    float c1, c2;
    if (s->kind != SD_SAMPLER_DPMSOLVER) {
        c1 = st / ss;
        c2 = at * (expf(-h) - 1.0f);
    } else {
        c1 = at / as;
        c2 = st * (expf(h) - 1.0f);
    }
    for (size_t k = 0; k < s->n; k++) {
        float p = c1 * x[k], q = c2 * m[k];
        out[k] = p - q;
    }
}

/* second-order midpoint update; multistep: s0 = i, s1 = i−1, base sample at s0, D0 = m0;
 * singlestep: base sample at s1, D0 = m1, h measured from s1 */
static void dpm_second(const sd_sampler *s, const float *m0, const float *m1, const float *x, int single, float *out)
{
    int i = s->step_index;
    float at, st, lt, a0, s0, l0, a1, s1, l1;
    dpm_als(s->sigmas[i + 1], &at, &st, &lt);
    dpm_als(s->sigmas[i], &a0, &s0, &l0);
    dpm_als(s->sigmas[i - 1], &a1, &s1, &l1);
    float h, h0;
    if (single) h = lt - l1, h0 = l0 - l1;
    else h = lt - l0, h0 = l0 - l1;
    float r0 = h0 / h;
    float inv = 1.0f / r0;
    float c1, c2, c3;
    if (s->kind != SD_SAMPLER_DPMSOLVER) {
        c1 = st / (single ? s1 : s0);
        c2 = at * (expf(-h) - 1.0f);
        c3 = 0.5f * c2;
    } else {
        c1 = at / (single ? a1 : a0);
        c2 = st * (expf(h) - 1.0f);
        c3 = 0.5f * c2;
    }
    const float *d0 = single ? m1 : m0;
    for (size_t k = 0; k < s->n; k++) {
        float d1 = inv * (m0[k] - m1[k]);
        float p = c1 * x[k], q = c2 * d0[k], r = c3 * d1;
        out[k] = (p - q) - r;
    }
}

static void step_dpm_multi(sd_sampler *s, const float *mo, float *x)
{
    int i = s->step_index, nt = s->nt;
    int zero = s->cfg.final_sigma_zero;
    int lof = i == nt - 1 && (nt < 15 || zero);
    int los = i == nt - 2 && nt < 15;
    /* model_outputs: shift, newest last */
    float *t = s->mo[0];
    s->mo[0] = s->mo[1];
    s->mo[1] = t;
    dpm_convert(s, mo, x, s->mo[1]);
    if (s->mo_n < 2) s->mo_n++;
    if (s->lower_order_nums < 1 || lof) dpm_first(s, s->mo[1], x, i, i + 1, x);
    else dpm_second(s, s->mo[1], s->mo[0], x, 0, x);
    (void)los; /* solver_order 2: the second-order branch already is the lower-order one */
    if (s->lower_order_nums < 2) s->lower_order_nums++;
}

static void step_dpm_single(sd_sampler *s, const float *mo, float *x)
{
    int i = s->step_index;
    float *t = s->mo[0];
    s->mo[0] = s->mo[1];
    s->mo[1] = t;
    dpm_convert(s, mo, x, s->mo[1]);
    if (s->mo_n < 2) s->mo_n++;
    int order = s->aux[i];
    if (order > s->mo_n) order = s->mo_n;
    if (order == 1) memcpy(s->saved, x, s->n * sizeof(float));
    if (order == 1) dpm_first(s, s->mo[1], s->saved, i, i + 1, x);
    else dpm_second(s, s->mo[1], s->mo[0], s->saved, 1, x);
}

int sd_sampler_step(sd_sampler *s, const float *model_output, float *sample, const float *noise)
{
    if (s->step_index >= s->nt)
        return sd_err(SD_ESTATE, "sampler %s: step after the last of %d timesteps", names[s->kind], s->nt);
    if (sd_sampler_step_needs_noise(s) && !noise)
        return sd_err(SD_ESTATE, "sampler %s: step %d needs ancestral noise", names[s->kind], s->step_index);
    switch (s->kind) {
    case SD_SAMPLER_DDIM: step_ddim(s, model_output, sample, noise); break;
    case SD_SAMPLER_PNDM: step_pndm(s, model_output, sample); break;
    case SD_SAMPLER_LMS: step_lms(s, model_output, sample); break;
    case SD_SAMPLER_EULER:
    case SD_SAMPLER_EULER_A: step_euler(s, model_output, sample, noise); break;
    case SD_SAMPLER_HEUN: step_heun(s, model_output, sample); break;
    case SD_SAMPLER_DPM_2:
    case SD_SAMPLER_DPM_2_A: step_kdpm2(s, model_output, sample, noise); break;
    case SD_SAMPLER_DPMSOLVER:
    case SD_SAMPLER_DPMSOLVER_PP: step_dpm_multi(s, model_output, sample); break;
    case SD_SAMPLER_DPMSINGLE: step_dpm_single(s, model_output, sample); break;
    default: return sd_err(SD_ESTATE, "sampler: bad kind");
    }
    s->step_index++;
    return SD_OK;
}

/* ---- driver --------------------------------------------------------------------------------- */

int sd_sampler_initial_noise(int64_t B, int64_t per, const uint64_t *seeds, float *out)
{
    for (int64_t b = 0; b < B; b++) {
        sd_rng r = sd_rng_key(seeds[b], 0, 0, SD_RNG_SAMPLER);
        int rc = sd_rng_fill_normal(&r, 0, out + b * per, (size_t)per);
        if (rc) return rc;
    }
    return SD_OK;
}

int sd_sampler_run(sd_sampler *s, int64_t B, int64_t per, const uint64_t *seeds,
                   double guidance_scale, sd_denoise_fn model, void *user, float *latents)
{
    if (B < 1 || per < 1 || (size_t)(B * per) != s->n)
        return sd_err(SD_EINVAL, "sampler %s: batch %lld x %lld does not match the %zu elements it was set up for",
                      names[s->kind], (long long)B, (long long)per, s->n);
    int cfg = guidance_scale > 1.0;
    size_t n = s->n, nin = cfg ? 2 * n : n;
    float *in = malloc(nin * sizeof(float)), *out = malloc(nin * sizeof(float)), *noise = malloc(n * sizeof(float));
    int rc = SD_OK;
    if (!in || !out || !noise) {
        rc = sd_err(SD_ENOMEM, "sampler: out of memory");
        goto done;
    }
    sd_sampler_reset(s);
    for (size_t i = 0; i < n; i++) latents[i] = latents[i] * s->init_noise_sigma;
    while (!sd_sampler_done(s)) {
        int i = s->step_index;
        double t = sd_sampler_timestep(s);
        if (cfg) {
            memcpy(in, latents, n * sizeof(float));
            memcpy(in + n, latents, n * sizeof(float));
        } else {
            memcpy(in, latents, n * sizeof(float));
        }
        sd_sampler_scale_model_input(s, in, in, nin);
        rc = model(user, in, cfg ? 2 * B : B, t, out);
        if (rc) goto done;
        if (cfg) sd_cfg_combine(out, out + n, guidance_scale, n, out);
        const float *nz = NULL;
        if (sd_sampler_step_needs_noise(s)) {
            for (int64_t b = 0; b < B; b++) {
                sd_rng r = sd_rng_key(seeds[b], (uint32_t)i + 1, 0, SD_RNG_SAMPLER);
                rc = sd_rng_fill_normal(&r, 0, noise + b * per, (size_t)per);
                if (rc) goto done;
            }
            nz = noise;
        }
        rc = sd_sampler_step(s, out, latents, nz);
        if (rc) goto done;
    }
done:
    free(in);
    free(out);
    free(noise);
    return rc;
}
