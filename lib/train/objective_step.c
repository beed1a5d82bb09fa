/* Objective of one step (see objective_step.h). */
#include "train/objective_step.h"

#include <math.h>
#include <string.h>

#include "base/error.h"

int sd_tobj_init(sd_tobj *o, const sd_tobj_opts *p)
{
    memset(o, 0, sizeof *o);
    sd_ddpm_init(&o->sched);
    if (p->zero_terminal_snr) sd_ddpm_rescale_zero_terminal_snr(&o->sched);
    if (sd_loss_type_parse(p->loss_type ? p->loss_type : "l2", &o->loss_type))
        return sd_err_prefix(SD_EUSAGE, "--loss_type");
    if (sd_huber_schedule_parse(p->huber_schedule ? p->huber_schedule : "snr", &o->huber_schedule))
        return sd_err_prefix(SD_EUSAGE, "--huber_schedule");
    if (sd_timestep_range(&o->sched, p->min_timestep, p->max_timestep, &o->tlo, &o->thi))
        return sd_err_prefix(SD_EUSAGE, "--min_timestep/--max_timestep");
    o->v_prediction = p->v_prediction;
    o->huber_c = p->huber_c;
    o->huber_scale = p->huber_scale;
    o->noise_offset = p->noise_offset;
    o->adaptive_noise_scale = p->adaptive_noise_scale;
    o->noise_offset_random_strength = p->noise_offset_random_strength;
    o->multires_iterations = p->multires_iterations;
    o->multires_discount = p->multires_discount;
    o->ip_noise_gamma = p->ip_noise_gamma;
    o->ip_noise_gamma_random_strength = p->ip_noise_gamma_random_strength;
    o->min_snr_gamma = p->min_snr_gamma;
    o->v_pred_like_loss = p->v_pred_like_loss;
    o->scale_v_pred_loss_like_noise_pred = p->scale_v_pred_loss_like_noise_pred;
    o->debiased_estimation = p->debiased_estimation;
    return SD_OK;
}

int sd_tobj_inputs(const sd_tobj *o, uint64_t seed, uint32_t step, int64_t B, int64_t C, int h, int w,
                   const float *x0, float *noise, float *noisy, float *target, float *work, float *ipn, int *t)
{
    int64_t HW = (int64_t)h * w, per = C * HW;
    int rc = sd_noise_fill(seed, step, B, per, noise);
    if (rc) return rc;
    if (o->noise_offset != 0) {
        rc = sd_noise_offset(seed, step, x0, noise, B, C, HW, o->noise_offset, o->noise_offset_random_strength,
                             o->adaptive_noise_scale != 0, o->adaptive_noise_scale);
        if (rc) return rc;
    }
    if (o->multires_iterations > 0) {
        rc = sd_pyramid_noise(seed, step, noise, B, C, h, w, o->multires_iterations, o->multires_discount, work);
        if (rc) return rc;
    }
    sd_timesteps_sample(seed, step, B, o->tlo, o->thi, t);
    const float *eps = noise;
    if (o->ip_noise_gamma > 0) {
        rc = sd_ip_noise(seed, step, noise, B, per, o->ip_noise_gamma, o->ip_noise_gamma_random_strength, ipn, work);
        if (rc) return rc;
        eps = work;
    }
    rc = sd_ddpm_add_noise(&o->sched, x0, eps, t, B, per, noisy);
    if (rc) return rc;
    if (o->v_prediction) return sd_ddpm_velocity(&o->sched, x0, noise, t, B, per, target);
    memcpy(target, noise, (size_t)(B * per) * sizeof *target);
    return SD_OK;
}

int sd_tobj_inputs_given(const sd_tobj *o, int64_t B, int64_t per, const float *x0, const float *noise, const int *t,
                         float *noisy, float *target)
{
    int rc = sd_ddpm_add_noise(&o->sched, x0, noise, t, B, per, noisy);
    if (rc) return rc;
    if (o->v_prediction) return sd_ddpm_velocity(&o->sched, x0, noise, t, B, per, target);
    memcpy(target, noise, (size_t)(B * per) * sizeof *target);
    return SD_OK;
}

double sd_tobj_loss(const sd_tobj *o, const float *pred, const float *target, int64_t B, int64_t per, const int *t,
                    const float *lweight, const float *mask, float *hc, double *factor, float *lossv,
                    double grad_scale, float *grad)
{
    sd_loss_weighting w = { .v_prediction = o->v_prediction, .min_snr_gamma = o->min_snr_gamma,
                            .scale_v_pred_loss_like_noise_pred = o->scale_v_pred_loss_like_noise_pred,
                            .v_pred_like_loss = o->v_pred_like_loss, .debiased_estimation = o->debiased_estimation };
    for (int64_t b = 0; b < B; b++)
        hc[b] = sd_huber_c(&o->sched, o->huber_schedule, o->huber_c, o->huber_scale, t[b]);
    sd_loss_per_sample(pred, target, B, per, o->loss_type, hc, mask, lossv);
    sd_loss_apply_weights(&o->sched, &w, t, lweight, B, lossv);
    double L = 0;
    for (int64_t b = 0; b < B; b++) L += lossv[b];
    L /= (double)B;
    if (!isfinite(L)) return L;
    for (int64_t b = 0; b < B; b++) factor[b] = sd_loss_weight_factor(&o->sched, &w, t[b], lweight[b]) * grad_scale;
    sd_loss_grad(pred, target, B, per, o->loss_type, hc, mask, factor, grad);
    return L;
}
