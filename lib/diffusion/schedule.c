#include "diffusion/schedule.h"

#include <math.h>
#include <string.h>

#include "base/error.h"

/* α = 1 − β; ᾱ = torch.cumprod(α): the CPU kernel accumulates in double (acc_type<float> on the
 * CPU) and stores each partial product rounded to float. */
static void finish(sd_ddpm *s)
{
    double c = 1.0;
    for (int t = 0; t < s->n; t++) {
        s->alphas[t] = 1.0f - s->betas[t];
        c = c * (double)s->alphas[t];
        s->alphas_cumprod[t] = (float)c;
    }
}

/* torch.linspace(a, b, n, dtype=float32) as PyTorch 1.13's CPU kernel computes it with its AVX2
 * kernels (the default dispatch on x86-64): step = (b − a)/(n − 1) in float; values come in
 * vectors of 8, two vectors per loop turn, each vector starting at base = a + step·idx in the
 * first half and b − step·(n−1−idx) in the second, computed with one rounding (the compiler
 * contracts `start + step * idx` into an FMA; the product is exact in double, so double then
 * float gives the same value here), elements base + k·step; the tail that does not fill two
 * vectors uses the scalar float a + step·i / b − step·(n−1−i). Bit-identical to torch's table
 * (golden test). */
static void torch_linspace(float a, float b, int n, float *out)
{
    float step = (b - a) / (float)(n - 1);
    int half = n / 2, idx = 0;
    for (; idx + 16 <= n;) {
        for (int v = 0; v < 2; v++, idx += 8) {
            float base = idx < half ? (float)((double)step * idx + (double)a) : (float)((double)-step * (n - idx - 1) + (double)b);
            for (int k = 0; k < 8; k++) {
                float ks = (float)k * step;
                out[idx + k] = base + ks;
            }
        }
    }
    for (; idx < n; idx++) {
        if (idx < half) {
            float p = step * (float)idx;
            out[idx] = a + p;
        } else {
            float p = step * (float)(n - idx - 1);
            out[idx] = b - p;
        }
    }
}

int sd_ddpm_init_ex(sd_ddpm *s, int n, double beta_start, double beta_end, sd_beta_schedule kind)
{
    if (n < 2 || n > SD_DDPM_MAX_STEPS)
        return sd_err(SD_EINVAL, "ddpm schedule: %d train timesteps (must be 2..%d)", n, SD_DDPM_MAX_STEPS);
    if (!(beta_start > 0 && beta_start < beta_end && beta_end < 1))
        return sd_err(SD_EINVAL, "ddpm schedule: betas %g .. %g (need 0 < start < end < 1)", beta_start, beta_end);
    if (kind != SD_BETA_SCALED_LINEAR && kind != SD_BETA_LINEAR)
        return sd_err(SD_EINVAL, "ddpm schedule: unknown beta schedule %d", (int)kind);
    memset(s, 0, sizeof *s);
    s->n = n;
    float a = (float)(kind == SD_BETA_SCALED_LINEAR ? sqrt(beta_start) : beta_start);
    float b = (float)(kind == SD_BETA_SCALED_LINEAR ? sqrt(beta_end) : beta_end);
    torch_linspace(a, b, n, s->betas);
    if (kind == SD_BETA_SCALED_LINEAR)
        for (int t = 0; t < n; t++) s->betas[t] = s->betas[t] * s->betas[t];
    finish(s);
    /* prepare_scheduler_for_custom_training: all_snr = (sqrt(ᾱ) / sqrt(1 − ᾱ))² in float32 */
    for (int t = 0; t < n; t++) {
        float al = sqrtf(s->alphas_cumprod[t]);
        float si = sqrtf(1.0f - s->alphas_cumprod[t]);
        float q = al / si;
        s->all_snr[t] = q * q;
    }
    return SD_OK;
}

void sd_ddpm_init(sd_ddpm *s)
{
    (void)sd_ddpm_init_ex(s, SD_DDPM_MAX_STEPS, SD_DDPM_BETA_START, SD_DDPM_BETA_END, SD_BETA_SCALED_LINEAR);
}

void sd_ddpm_rescale_zero_terminal_snr(sd_ddpm *s)
{
    if (s->zero_terminal_snr || s->n < 2 || s->n > SD_DDPM_MAX_STEPS) return;
    int n = s->n;
    float sq[SD_DDPM_MAX_STEPS] = {0}, ab[SD_DDPM_MAX_STEPS] = {0};
    for (int t = 0; t < n; t++) sq[t] = sqrtf(s->alphas_cumprod[t]);
    float s0 = sq[0], sT = sq[n - 1];
    float k = s0 / (s0 - sT);
    for (int t = 0; t < n; t++) {
        sq[t] = sq[t] - sT;
        sq[t] = sq[t] * k;
    }
    for (int t = 0; t < n; t++) ab[t] = sq[t] * sq[t];
    s->betas[0] = 1.0f - ab[0];
    for (int t = 1; t < n; t++) s->betas[t] = 1.0f - ab[t] / ab[t - 1];
    finish(s);
    s->zero_terminal_snr = 1;
}

float sd_ddpm_snr(const sd_ddpm *s, int t)
{
    return s->all_snr[t];
}

static int check_t(const sd_ddpm *s, const int *t, int64_t batch)
{
    for (int64_t b = 0; b < batch; b++)
        if (t[b] < 0 || t[b] >= s->n)
            return sd_err(SD_ERANGE, "ddpm: timestep %d of sample %lld outside 0..%d", t[b], (long long)b, s->n - 1);
    return SD_OK;
}

int sd_ddpm_add_noise(const sd_ddpm *s, const float *x0, const float *noise, const int *t,
                      int64_t batch, int64_t per, float *out)
{
    int rc = check_t(s, t, batch);
    if (rc) return rc;
    for (int64_t b = 0; b < batch; b++) {
        float ac = s->alphas_cumprod[t[b]];
        float ca = sqrtf(ac), cn = sqrtf(1.0f - ac);
        const float *x = x0 + b * per, *e = noise + b * per;
        float *o = out + b * per;
        for (int64_t i = 0; i < per; i++) {
            float p = ca * x[i], q = cn * e[i];
            o[i] = p + q;
        }
    }
    return SD_OK;
}

int sd_ddpm_velocity(const sd_ddpm *s, const float *x0, const float *noise, const int *t,
                     int64_t batch, int64_t per, float *out)
{
    int rc = check_t(s, t, batch);
    if (rc) return rc;
    for (int64_t b = 0; b < batch; b++) {
        float ac = s->alphas_cumprod[t[b]];
        float ca = sqrtf(ac), cn = sqrtf(1.0f - ac);
        const float *x = x0 + b * per, *e = noise + b * per;
        float *o = out + b * per;
        for (int64_t i = 0; i < per; i++) {
            float p = ca * e[i], q = cn * x[i];
            o[i] = p - q;
        }
    }
    return SD_OK;
}
