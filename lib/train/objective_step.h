/* The per-step objective of the trainer as two calls over host arrays (diffusion/objective.h and
 * schedule.h do the maths): inputs (noise, offsets, pyramid noise, timesteps, input perturbation,
 * noisy latents, target) and loss (element loss, per-sample weights, batch mean, gradient). The
 * options come as the trainer's strings and numbers (sd_tobj_opts) and are checked once, by
 * sd_tobj_init. */
#ifndef SD_TRAIN_OBJECTIVE_STEP_H
#define SD_TRAIN_OBJECTIVE_STEP_H

#include <stdint.h>

#include "diffusion/objective.h"
#include "diffusion/schedule.h"

typedef struct sd_tobj {
    sd_ddpm sched;
    int v_prediction;
    sd_loss_kind loss_type;
    sd_huber_schedule huber_schedule;
    double huber_c, huber_scale;
    int tlo, thi;
    double noise_offset, adaptive_noise_scale;
    int noise_offset_random_strength;
    int multires_iterations;
    double multires_discount;
    double ip_noise_gamma;
    int ip_noise_gamma_random_strength;
    double min_snr_gamma, v_pred_like_loss;
    int scale_v_pred_loss_like_noise_pred, debiased_estimation;
} sd_tobj;

typedef struct sd_tobj_opts {
    int v_prediction, zero_terminal_snr;
    const char *loss_type, *huber_schedule;
    double huber_c, huber_scale;
    int min_timestep, max_timestep;     /* -1: None */
    double noise_offset, adaptive_noise_scale;
    int noise_offset_random_strength;
    int multires_iterations;
    double multires_discount;
    double ip_noise_gamma;
    int ip_noise_gamma_random_strength;
    double min_snr_gamma, v_pred_like_loss;
    int scale_v_pred_loss_like_noise_pred, debiased_estimation;
} sd_tobj_opts;

/* SD_EUSAGE for a bad loss type / huber schedule / timestep range. */
int sd_tobj_init(sd_tobj *o, const sd_tobj_opts *opts);

/* x0 [B][per] (scaled latents, per = C·h·w) → noise ε (after offset / pyramid), the timesteps,
 * noisy x_t (from ε or the perturbed ε) and the target (ε or v). work: 2·B·per floats, ipn: B·per. */
int sd_tobj_inputs(const sd_tobj *o, uint64_t seed, uint32_t step, int64_t B, int64_t C, int h, int w,
                   const float *x0, float *noise, float *noisy, float *target, float *work, float *ipn, int *t);

/* The same with ε and t given (tests feed them from golden files): noisy and target only. */
int sd_tobj_inputs_given(const sd_tobj *o, int64_t B, int64_t per, const float *x0, const float *noise, const int *t,
                         float *noisy, float *target);

/* Per-sample losses (weights applied) into lossv[B], their mean as the return value, and the
 * gradient w.r.t. pred × grad_scale into grad (not computed when the loss is not finite).
 * lweight: per-sample loss weights (prior_loss_weight); hc, factor: B scratch. mask: NULL, or
 * [B][per] multiplying the element loss before the mean (masked loss; all ones gives the same
 * bytes as NULL). */
double sd_tobj_loss(const sd_tobj *o, const float *pred, const float *target, int64_t B, int64_t per, const int *t,
                    const float *lweight, const float *mask, float *hc, double *factor, float *lossv,
                    double grad_scale, float *grad);

#endif
