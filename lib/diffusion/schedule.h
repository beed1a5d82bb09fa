/* The DDPM noise schedule the reference trains with (diffusers' DDPMScheduler as kohya-ss
 * sd-scripts configures it: 1000 steps, "scaled_linear" betas 0.00085 → 0.012, clip_sample off;
 * spec §6.5), its add_noise / get_velocity, kohya's SNR table and the zero-terminal-SNR rescale.
 *
 * Precision: the reference builds its tables in float32 (torch.linspace of sqrt(β) then squared,
 * 1 − β, sequential cumprod) and so do we, in the same order, reproducing torch 1.13's vectorised
 * linspace rounding (AVX2 kernels, see schedule.c): the tables are bit-identical to torch's on
 * x86-64 (golden test). The tables are very sensitive: a one-ulp change of ᾱ_999 moves the
 * zero-terminal-SNR betas by 1e-4 relative (cancellation in 1 − ᾱ_t/ᾱ_{t−1}), so a torch build
 * dispatching AVX-512 kernels differs from us (and from the AVX2 build) by that much there.
 * Everything else (sqrt terms, SNR, add_noise) is float32 arithmetic in torch's operation order.
 *
 * Timesteps are integers 0 .. n-1; functions taking a timestep array check the range and return
 * SD_ERANGE (with the offending value in the message) for anything outside it. */
#ifndef SD_DIFFUSION_SCHEDULE_H
#define SD_DIFFUSION_SCHEDULE_H

#include <stdint.h>

#define SD_DDPM_MAX_STEPS 1000
#define SD_DDPM_BETA_START 0.00085
#define SD_DDPM_BETA_END 0.012

typedef enum sd_beta_schedule {
    SD_BETA_SCALED_LINEAR = 0, /* β_t = linspace(sqrt(start), sqrt(end), n)_t², the SD schedule */
    SD_BETA_LINEAR,            /* β_t = linspace(start, end, n)_t */
} sd_beta_schedule;

typedef struct sd_ddpm {
    int n;                                   /* number of train timesteps (1000) */
    float betas[SD_DDPM_MAX_STEPS];
    float alphas[SD_DDPM_MAX_STEPS];         /* 1 − β */
    float alphas_cumprod[SD_DDPM_MAX_STEPS]; /* ᾱ_t (after the zero-terminal rescale if applied) */
    /* kohya's all_snr = (sqrt(ᾱ)/sqrt(1−ᾱ))² of the table as created, i.e. BEFORE the
     * zero-terminal-SNR rescale: min-SNR, debiased-estimation and v-pred-like weights use it. */
    float all_snr[SD_DDPM_MAX_STEPS];
    int zero_terminal_snr;                   /* sd_ddpm_rescale_zero_terminal_snr() applied */
} sd_ddpm;

/* The reference's training schedule: 1000 steps, scaled-linear 0.00085 → 0.012. */
void sd_ddpm_init(sd_ddpm *s);
/* General form (n in 2..SD_DDPM_MAX_STEPS, 0 < start < end < 1); SD_EINVAL otherwise. */
int sd_ddpm_init_ex(sd_ddpm *s, int n, double beta_start, double beta_end, sd_beta_schedule kind);

/* --zero_terminal_snr (kohya fix_noise_scheduler_betas_for_zero_terminal_snr, Lin et al. 2023
 * Algorithm 1): a = sqrt(ᾱ); a ← (a − a_T)·a_0/(a_0 − a_T); ᾱ = a²; α_t = ᾱ_t/ᾱ_{t−1} (α_0 = ᾱ_0);
 * β = 1 − α; ᾱ = cumprod(α) again. ᾱ_{n−1} becomes exactly 0. all_snr is left as it was.
 * Applying it twice is a no-op (the flag is checked). */
void sd_ddpm_rescale_zero_terminal_snr(sd_ddpm *s);

/* SNR_t from all_snr (t must be in range). */
float sd_ddpm_snr(const sd_ddpm *s, int t);

/* x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·noise for a batch: x0, noise, out are [batch][per] (out may
 * alias x0 or noise); t[b] is the timestep of sample b. SD_ERANGE for a bad timestep. */
int sd_ddpm_add_noise(const sd_ddpm *s, const float *x0, const float *noise, const int *t,
                      int64_t batch, int64_t per, float *out);
/* v = sqrt(ᾱ_t)·noise − sqrt(1−ᾱ_t)·x0 (the v-prediction target; get_velocity). */
int sd_ddpm_velocity(const sd_ddpm *s, const float *x0, const float *noise, const int *t,
                     int64_t batch, int64_t per, float *out);

#endif
