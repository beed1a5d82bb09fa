#include "diffusion/objective.h"

#include <math.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"

#define STRENGTH_INDEX (UINT64_C(1) << 32) /* index of the random-strength uniform in its stream */

/* ---- timesteps ------------------------------------------------------------------------------ */

int sd_timestep_range(const sd_ddpm *s, int min_timestep, int max_timestep, int *lo, int *hi)
{
    if (min_timestep > s->n || max_timestep > s->n)
        return sd_err(SD_EINVAL, "timestep range %d..%d: values must be 0..%d", min_timestep, max_timestep, s->n);
    *lo = min_timestep < 0 ? 0 : min_timestep;
    *hi = max_timestep < 0 ? s->n : max_timestep;
    return SD_OK;
}

void sd_timesteps_sample(uint64_t seed, uint32_t step, int64_t batch, int lo, int hi, int *t)
{
    for (int64_t b = 0; b < batch; b++) {
        if (lo >= hi) {
            t[b] = hi;
            continue;
        }
        sd_rng r = sd_rng_key(seed, step, (uint32_t)b, SD_RNG_TIMESTEP);
        t[b] = lo + (int)sd_rng_below_at(&r, 0, (uint64_t)(hi - lo));
    }
}

/* ---- noise ---------------------------------------------------------------------------------- */

int sd_noise_fill(uint64_t seed, uint32_t step, int64_t batch, int64_t per, float *out)
{
    for (int64_t b = 0; b < batch; b++) {
        sd_rng r = sd_rng_key(seed, step, (uint32_t)b, SD_RNG_NOISE);
        int rc = sd_rng_fill_normal(&r, 0, out + b * per, (size_t)per);
        if (rc) return rc;
    }
    return SD_OK;
}

void sd_noise_offset_apply(const float *latents, float *noise, int64_t B, int64_t C, int64_t HW,
                           double strength, int adaptive, double adaptive_scale, const float *offn)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            float o = (float)strength;
            if (adaptive) {
                const float *l = latents + (b * C + c) * HW;
                double sum = 0;
                for (int64_t i = 0; i < HW; i++) sum += l[i];
                float mean = fabsf((float)(sum / (double)HW));
                o = (float)strength + (float)adaptive_scale * mean;
                if (o < 0.0f) o = 0.0f;
            }
            float add = o * offn[b * C + c];
            float *e = noise + (b * C + c) * HW;
            for (int64_t i = 0; i < HW; i++) e[i] = e[i] + add;
        }
}

int sd_noise_offset(uint64_t seed, uint32_t step, const float *latents, float *noise, int64_t B,
                    int64_t C, int64_t HW, double noise_offset, int random_strength, int adaptive,
                    double adaptive_scale)
{
    if (C > 4096) return sd_err(SD_EINVAL, "noise offset: %lld channels (at most 4096)", (long long)C);
    if (adaptive && !latents) return sd_err(SD_EINVAL, "noise offset: adaptive scale needs the latents");
    double strength = noise_offset;
    if (random_strength) {
        sd_rng r = sd_rng_key(seed, step, 0, SD_RNG_NOISE_OFFSET);
        strength = (double)(sd_rng_uniform_at(&r, STRENGTH_INDEX) * (float)noise_offset);
    }
    float offn[4096];
    for (int64_t b = 0; b < B; b++) {
        sd_rng r = sd_rng_key(seed, step, (uint32_t)b, SD_RNG_NOISE_OFFSET);
        int rc = sd_rng_fill_normal(&r, 0, offn, (size_t)C);
        if (rc) return rc;
        sd_noise_offset_apply(latents ? latents + b * C * HW : NULL, noise + b * C * HW, 1, C, HW,
                              strength, adaptive, adaptive_scale, offn);
    }
    return SD_OK;
}

/* torch's area_pixel_compute_source_index + compute_source_index_and_lambda (float opmath) */
static void lin_index(int in, int out, int d, int *i0, int *i1, float *l0, float *l1)
{
    if (in == out) {
        *i0 = *i1 = d;
        *l0 = 1.0f;
        *l1 = 0.0f;
        return;
    }
    float scale = (float)in / (float)out;
    float src = scale * ((float)d + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    int k = (int)src;
    *i0 = k;
    *i1 = k + (k < in - 1 ? 1 : 0);
    float lam = src - (float)k;
    if (lam < 0.0f) lam = 0.0f;
    if (lam > 1.0f) lam = 1.0f;
    *l1 = lam;
    *l0 = 1.0f - lam;
}

void sd_bilinear_resize(const float *in, int64_t nc, int hi, int wi, float *out, int ho, int wo)
{
    for (int y = 0; y < ho; y++) {
        int y0, y1;
        float wy0, wy1;
        lin_index(hi, ho, y, &y0, &y1, &wy0, &wy1);
        for (int x = 0; x < wo; x++) {
            int x0, x1;
            float wx0, wx1;
            lin_index(wi, wo, x, &x0, &x1, &wx0, &wx1);
            for (int64_t p = 0; p < nc; p++) {
                const float *src = in + p * (int64_t)hi * wi;
                float t0 = src[y0 * wi + x0] * wx0 + src[y0 * wi + x1] * wx1;
                float t1 = src[y1 * wi + x0] * wx0 + src[y1 * wi + x1] * wx1;
                out[p * (int64_t)ho * wo + y * wo + x] = t0 * wy0 + t1 * wy1;
            }
        }
    }
}

int sd_pyramid_levels(int H, int W, int iterations, const double *r, int *h, int *w)
{
    int k = 0;
    for (int i = 0; i < iterations; i++) {
        double p = pow(r[i], (double)i);
        double hh = (double)H / p, ww = (double)W / p;
        h[i] = hh < 1.0 ? 1 : (int)hh;
        w[i] = ww < 1.0 ? 1 : (int)ww;
        k = i + 1;
        if (h[i] == 1 || w[i] == 1) break;
    }
    return k;
}

void sd_pyramid_noise_apply(float *noise, int64_t B, int64_t C, int H, int W, int levels,
                            double discount, const int *h, const int *w,
                            const float *const *small, float *work)
{
    int64_t n = B * C * (int64_t)H * W;
    for (int i = 0; i < levels; i++) {
        sd_bilinear_resize(small[i], B * C, h[i], w[i], work, H, W);
        float d = (float)pow(discount, (double)i);
        for (int64_t j = 0; j < n; j++) noise[j] = noise[j] + work[j] * d;
    }
    double mean = 0, var = 0;
    for (int64_t j = 0; j < n; j++) mean += noise[j];
    mean /= (double)n;
    for (int64_t j = 0; j < n; j++) var += (noise[j] - mean) * (noise[j] - mean);
    float sd = (float)sqrt(var / (double)(n > 1 ? n - 1 : 1));
    for (int64_t j = 0; j < n; j++) noise[j] = noise[j] / sd;
}

int sd_pyramid_noise(uint64_t seed, uint32_t step, float *noise, int64_t B, int64_t C, int H, int W,
                     int iterations, double discount, float *work)
{
    enum { MAXIT = 64 };
    if (iterations < 0 || iterations > MAXIT)
        return sd_err(SD_EINVAL, "multires noise: %d iterations (at most %d)", iterations, MAXIT);
    if (iterations == 0) return SD_OK;
    double r[MAXIT];
    int h[MAXIT], w[MAXIT];
    sd_rng rr = sd_rng_key(seed, step, 0, SD_RNG_MULTIRES);
    for (int i = 0; i < iterations; i++) r[i] = (double)sd_rng_uniform_at(&rr, (uint64_t)i) * 2.0 + 2.0;
    int levels = sd_pyramid_levels(H, W, iterations, r, h, w);
    int64_t n = B * C * (int64_t)H * W;
    float *small = work + n, *up = work;
    for (int i = 0; i < levels; i++) {
        sd_rng rs = sd_rng_key(seed, step, 1u + (uint32_t)i, SD_RNG_MULTIRES);
        int rc = sd_rng_fill_normal(&rs, 0, small, (size_t)(B * C * h[i] * w[i]));
        if (rc) return rc;
        /* one level at a time so that a single small buffer suffices */
        sd_bilinear_resize(small, B * C, h[i], w[i], up, H, W);
        float d = (float)pow(discount, (double)i);
        for (int64_t j = 0; j < n; j++) noise[j] = noise[j] + up[j] * d;
    }
    sd_pyramid_noise_apply(noise, B, C, H, W, 0, discount, h, w, NULL, work); /* normalise */
    return SD_OK;
}

void sd_ip_noise_apply(const float *noise, const float *ipn, double strength, int64_t n, float *out)
{
    float s = (float)strength;
    for (int64_t i = 0; i < n; i++) {
        float p = s * ipn[i];
        out[i] = noise[i] + p;
    }
}

int sd_ip_noise(uint64_t seed, uint32_t step, const float *noise, int64_t batch, int64_t per,
                double gamma, int random_strength, float *ipn_work, float *out)
{
    double strength = gamma;
    if (random_strength) {
        sd_rng r = sd_rng_key(seed, step, 0, SD_RNG_IP_NOISE);
        strength = (double)(sd_rng_uniform_at(&r, STRENGTH_INDEX) * (float)gamma);
    }
    for (int64_t b = 0; b < batch; b++) {
        sd_rng r = sd_rng_key(seed, step, (uint32_t)b, SD_RNG_IP_NOISE);
        int rc = sd_rng_fill_normal(&r, 0, ipn_work + b * per, (size_t)per);
        if (rc) return rc;
    }
    sd_ip_noise_apply(noise, ipn_work, strength, batch * per, out);
    return SD_OK;
}

/* ---- losses --------------------------------------------------------------------------------- */

int sd_loss_type_parse(const char *name, sd_loss_kind *out)
{
    static const char *names[] = {"l2", "l1", "huber", "smooth_l1"};
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, names[i])) {
            *out = (sd_loss_kind)i;
            return SD_OK;
        }
    return sd_err(SD_EINVAL, "unknown loss type '%s' (l2, l1, huber, smooth_l1)", name ? name : "");
}

int sd_huber_schedule_parse(const char *name, sd_huber_schedule *out)
{
    static const char *names[] = {"snr", "exponential", "constant"};
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, names[i])) {
            *out = (sd_huber_schedule)i;
            return SD_OK;
        }
    return sd_err(SD_EINVAL, "unknown huber schedule '%s' (snr, exponential, constant)", name ? name : "");
}

float sd_huber_c(const sd_ddpm *s, sd_huber_schedule sch, double huber_c, double huber_scale, int t)
{
    switch (sch) {
    case SD_HUBER_EXPONENTIAL: {
        double alpha = -log(huber_c) / (double)s->n;
        float e = expf((float)(-alpha) * (float)t);
        return e * (float)huber_scale;
    }
    case SD_HUBER_SNR: {
        float a = s->alphas_cumprod[t];
        float sg = sqrtf((1.0f - a) / a);
        float d = 1.0f + sg;
        return (float)(1.0 - huber_c) / (d * d) + (float)huber_c;
    }
    case SD_HUBER_CONSTANT:
    default:
        return (float)(huber_c * huber_scale);
    }
}

static inline float elem_loss(float d, sd_loss_kind type, float c)
{
    switch (type) {
    case SD_LOSS_L1: return fabsf(d);
    case SD_LOSS_HUBER: return 2.0f * c * (sqrtf(d * d + c * c) - c);
    case SD_LOSS_SMOOTH_L1: return 2.0f * (sqrtf(d * d + c * c) - c);
    case SD_LOSS_L2:
    default: return d * d;
    }
}

void sd_loss_per_sample(const float *pred, const float *target, int64_t batch, int64_t per,
                        sd_loss_kind type, const float *c, const float *mask, float *loss)
{
    for (int64_t b = 0; b < batch; b++) {
        float cb = (type == SD_LOSS_HUBER || type == SD_LOSS_SMOOTH_L1) && c ? c[b] : 0.0f;
        const float *p = pred + b * per, *q = target + b * per;
        const float *m = mask ? mask + b * per : NULL;
        double sum = 0;
        for (int64_t i = 0; i < per; i++) {
            float l = elem_loss(p[i] - q[i], type, cb);
            if (m) l = l * m[i];
            sum += l;
        }
        loss[b] = (float)(sum / (double)per);
    }
}

void sd_mask_area_resize(const float *in, int H, int W, int flip, float *out, int h, int w)
{
    for (int i = 0; i < h; i++) {
        int y0 = (int)(((int64_t)i * H) / h), y1 = (int)(((int64_t)(i + 1) * H + h - 1) / h);
        for (int j = 0; j < w; j++) {
            int x0 = (int)(((int64_t)j * W) / w), x1 = (int)(((int64_t)(j + 1) * W + w - 1) / w);
            float sum = 0.0f;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++) sum += in[(size_t)y * W + (size_t)(flip ? W - 1 - x : x)];
            out[(size_t)i * w + j] = sum / (float)(y1 - y0) / (float)(x1 - x0);
        }
    }
}

float sd_mask_cond_value(uint8_t r)
{
    float x = (float)r / 255.0f;   /* one rounding per torch operation, one statement each (no contraction) */
    x = x - 0.5f;
    x = x / 0.5f;
    x = x / 2.0f;
    x = x + 0.5f;
    return x;
}

void sd_loss_apply_weights(const sd_ddpm *s, const sd_loss_weighting *w, const int *t,
                           const float *loss_weights, int64_t batch, float *loss)
{
    for (int64_t b = 0; b < batch; b++) {
        float l = loss[b];
        if (loss_weights) l = l * loss_weights[b];
        float snr = s->all_snr[t[b]];
        float sc = snr < 1000.0f ? snr : 1000.0f;
        if (w->min_snr_gamma > 0) {
            float g = (float)w->min_snr_gamma;
            float m = snr < g ? snr : g;
            float wt = w->v_prediction ? m / (snr + 1.0f) : m / snr;
            l = l * wt;
        }
        if (w->scale_v_pred_loss_like_noise_pred) l = l * (sc / (sc + 1.0f));
        if (w->v_pred_like_loss > 0) {
            float scale = sc / (sc + 1.0f);
            l = l + l / scale * (float)w->v_pred_like_loss;
        }
        if (w->debiased_estimation) {
            float wt = w->v_prediction ? 1.0f / (sc + 1.0f) : 1.0f / sqrtf(sc);
            l = wt * l;
        }
        loss[b] = l;
    }
}

double sd_loss_weight_factor(const sd_ddpm *s, const sd_loss_weighting *w, int t, double loss_weight)
{
    double f = loss_weight;
    double snr = s->all_snr[t];
    double sc = snr < 1000.0 ? snr : 1000.0;
    if (w->min_snr_gamma > 0) {
        double m = snr < w->min_snr_gamma ? snr : w->min_snr_gamma;
        f *= w->v_prediction ? m / (snr + 1.0) : m / snr;
    }
    if (w->scale_v_pred_loss_like_noise_pred) f *= sc / (sc + 1.0);
    if (w->v_pred_like_loss > 0) f *= 1.0 + w->v_pred_like_loss * (sc + 1.0) / sc;
    if (w->debiased_estimation) f *= w->v_prediction ? 1.0 / (sc + 1.0) : 1.0 / sqrt(sc);
    return f;
}

void sd_loss_grad(const float *pred, const float *target, int64_t batch, int64_t per,
                  sd_loss_kind type, const float *c, const float *mask, const double *factor,
                  float *grad)
{
    for (int64_t b = 0; b < batch; b++) {
        double k = (factor ? factor[b] : 1.0) / ((double)batch * (double)per);
        double cb = (type == SD_LOSS_HUBER || type == SD_LOSS_SMOOTH_L1) && c ? c[b] : 0.0;
        const float *p = pred + b * per, *q = target + b * per;
        const float *m = mask ? mask + b * per : NULL;
        float *g = grad + b * per;
        for (int64_t i = 0; i < per; i++) {
            double d = (double)p[i] - (double)q[i], dl;
            switch (type) {
            case SD_LOSS_L1: dl = d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0; break;
            case SD_LOSS_HUBER: dl = d == 0 ? 0.0 : 2.0 * cb * d / sqrt(d * d + cb * cb); break;
            case SD_LOSS_SMOOTH_L1: dl = d == 0 ? 0.0 : 2.0 * d / sqrt(d * d + cb * cb); break;
            case SD_LOSS_L2:
            default: dl = 2.0 * d; break;
            }
            if (m) dl *= m[i];
            g[i] = (float)(k * dl);
        }
    }
}
