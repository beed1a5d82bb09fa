/* The per-step training objective of the reference (spec §6.5–6.6; kohya-ss sd-scripts
 * train_util.get_noise_noisy_latents_and_timesteps, conditional_loss, get_huber_threshold_if_needed
 * and custom_train_functions.py), as pure functions on host float32 arrays laid out [B,C,H,W]
 * (PyTorch order, contiguous). The trainer calls them in this order per batch:
 *
 *   1. noise ε ~ N(0,1)                      sd_noise_fill            (purpose SD_RNG_NOISE)
 *   2. noise offset (+random strength,
 *      adaptive scale)                       sd_noise_offset_apply    (SD_RNG_NOISE_OFFSET)
 *   3. multires / pyramid noise              sd_pyramid_noise         (SD_RNG_MULTIRES)
 *   4. timesteps in [min_t, max_t)           sd_timesteps_sample      (SD_RNG_TIMESTEP)
 *   5. input perturbation ε' = ε + γ·N       sd_ip_noise_apply        (SD_RNG_IP_NOISE)
 *      noisy latents x_t                     sd_ddpm_add_noise(ε')    (schedule.h)
 *   6. target ε, or v                        sd_ddpm_velocity(x0, ε)  (schedule.h)
 *   7. per-sample loss = mean over C,H,W of
 *      the element loss (l2/l1/huber/smooth_l1 with sd_huber_c)      sd_loss_per_sample
 *   8. × loss_weights (prior_loss_weight), then the SNR-based weights sd_loss_apply_weights
 *   9. batch mean; gradient w.r.t. the prediction                    sd_loss_grad
 *
 * Randomness: the reference draws from torch's and Python's generators (torch.randn, torch.rand,
 * torch.randint, random.random). We cannot reproduce their bytes, so every draw here comes from a
 * Philox stream sd_rng_key(seed, step, sample, purpose) (base/rng.h) — reproducible, independent
 * of thread count and batch composition, resumable — and the functions that take the random
 * values as arguments (…_apply, sd_pyramid_noise_apply) are what the golden tests check against
 * the reference's formulas with values fed from the golden file. Stream layout (never change: it
 * is part of the reproducibility contract of saved runs):
 *   ε of sample b                 key(seed, step, b, SD_RNG_NOISE), normals 0..C·H·W−1
 *   timestep of sample b          key(seed, step, b, SD_RNG_TIMESTEP), sd_rng_below_at(0, range)
 *   noise-offset normals [b][c]   key(seed, step, b, SD_RNG_NOISE_OFFSET), normals 0..C−1
 *   noise-offset strength u       key(seed, step, 0, SD_RNG_NOISE_OFFSET), uniform at index 2^32
 *   pyramid ratio r_i             key(seed, step, 0, SD_RNG_MULTIRES), uniform i (r = 2 + 2u)
 *   pyramid noise of level i      key(seed, step, 1 + i, SD_RNG_MULTIRES), normals, [B,C,h_i,w_i]
 *   ip-noise of sample b          key(seed, step, b, SD_RNG_IP_NOISE), normals 0..C·H·W−1
 *   ip-noise strength u           key(seed, step, 0, SD_RNG_IP_NOISE), uniform at index 2^32
 * (`step` is the global optimizer step × gradient-accumulation + micro-step as the trainer
 * defines it; `b` the sample's index in the batch, or better its dataset index if the trainer
 * wants draws independent of batch composition.) */
#ifndef SD_DIFFUSION_OBJECTIVE_H
#define SD_DIFFUSION_OBJECTIVE_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/schedule.h"
#include "tensor/ops.h"

/* ---- timesteps ------------------------------------------------------------------------------ */

/* The reference's range: lo = min_timestep (or 0 when min_timestep < 0, i.e. unset), hi =
 * max_timestep (or n when max_timestep < 0). SD_EINVAL for values outside 0..n. */
int sd_timestep_range(const sd_ddpm *s, int min_timestep, int max_timestep, int *lo, int *hi);
/* Per sample: uniform integer in [lo, hi); if lo >= hi every sample gets hi (the reference's
 * torch.full(max_timestep) branch — note hi may then equal n, which add_noise rejects, exactly
 * as the reference would index out of range). */
void sd_timesteps_sample(uint64_t seed, uint32_t step, int64_t batch, int lo, int hi, int *t);

/* ---- noise ---------------------------------------------------------------------------------- */

/* ε for a batch: out[b][0..per) = normals of key(seed, step, b, SD_RNG_NOISE). */
int sd_noise_fill(uint64_t seed, uint32_t step, int64_t batch, int64_t per, float *out);

/* Noise offset (apply_noise_offset): noise[b,c,:,:] += o_bc · offn[b*C + c] with
 * o_bc = strength, or with adaptive scale a (adaptive != 0):
 * o_bc = max(0, strength + a·|mean_{h,w} latents[b,c]|). `strength` is noise_offset, or
 * u·noise_offset with --noise_offset_random_strength (u ~ U[0,1), one per batch). */
void sd_noise_offset_apply(const float *latents, float *noise, int64_t B, int64_t C, int64_t HW,
                           double strength, int adaptive, double adaptive_scale, const float *offn);
/* The same with the draws from the streams above (offn, and u when random_strength). */
int sd_noise_offset(uint64_t seed, uint32_t step, const float *latents, float *noise, int64_t B,
                    int64_t C, int64_t HW, double noise_offset, int random_strength, int adaptive,
                    double adaptive_scale);

/* Bilinear resize of nc planes [hi][wi] → [ho][wo] exactly as torch F.interpolate /
 * nn.Upsample(mode='bilinear', align_corners=False) computes it (float32 source indices
 * scale·(dst+0.5)−0.5 clamped at 0, weights, separable blend in torch's order). */
void sd_bilinear_resize(const float *in, int64_t nc, int hi, int wi, float *out, int ho, int wo);

/* Pyramid (multires) noise, pyramid_noise_like(noise, iterations, discount): for i = 0..K−1 with
 * ratio r_i ∈ [2,4): h_i = max(1, int(H / r_i^i)), w_i = max(1, int(W / r_i^i));
 * noise += discount^i · bilinear(small_i [B,C,h_i,w_i] → H×W); stop after the first level with a
 * side of 1; finally noise /= std(noise) (unbiased, over the whole batch tensor).
 * sd_pyramid_levels() computes the level sizes for given ratios (returns the number of levels
 * used, ≤ iterations); sd_pyramid_noise_apply() does the sums with the given small noises and
 * needs `work` of B·C·H·W floats. */
int sd_pyramid_levels(int H, int W, int iterations, const double *r, int *h, int *w);
void sd_pyramid_noise_apply(float *noise, int64_t B, int64_t C, int H, int W, int levels,
                            double discount, const int *h, const int *w,
                            const float *const *small, float *work);
/* The whole step with Philox draws; work: 2·B·C·H·W floats (no allocation). iterations ≤ 64. */
int sd_pyramid_noise(uint64_t seed, uint32_t step, float *noise, int64_t B, int64_t C, int H, int W,
                     int iterations, double discount, float *work);

/* Input perturbation (ip_noise_gamma): out = noise + strength·ipn, strength = γ or u·γ. The
 * target must stay the unperturbed noise. */
void sd_ip_noise_apply(const float *noise, const float *ipn, double strength, int64_t n, float *out);
/* With the draws (ipn per sample b, u when random_strength); ipn_work: B·per floats. */
int sd_ip_noise(uint64_t seed, uint32_t step, const float *noise, int64_t batch, int64_t per,
                double gamma, int random_strength, float *ipn_work, float *out);

/* ---- losses --------------------------------------------------------------------------------- */

/* The element loss is tensor/ops.h's sd_loss_kind (SD_LOSS_L2, SD_LOSS_L1, SD_LOSS_HUBER,
 * SD_LOSS_SMOOTH_L1), the one the loss op takes. */
typedef enum sd_huber_schedule { SD_HUBER_SNR = 0, SD_HUBER_EXPONENTIAL, SD_HUBER_CONSTANT } sd_huber_schedule;

/* Names as the reference spells them ("l2", "l1", "huber", "smooth_l1"; "snr", "exponential",
 * "constant"); SD_EINVAL with the list of valid names otherwise. */
int sd_loss_type_parse(const char *name, sd_loss_kind *out);
int sd_huber_schedule_parse(const char *name, sd_huber_schedule *out);

/* Per-sample Huber threshold c (get_huber_threshold_if_needed), N = s->n:
 *   constant     c = huber_c · huber_scale
 *   exponential  c = huber_scale · exp(−(−ln(huber_c)/N)·t)
 *   snr          c = (1 − huber_c)/(1 + sqrt((1−ᾱ_t)/ᾱ_t))² + huber_c   (huber_scale unused) */
float sd_huber_c(const sd_ddpm *s, sd_huber_schedule sch, double huber_c, double huber_scale, int t);

/* loss[b] = mean over per elements of ℓ(pred − target) (float32 elements, mean accumulated in
 * double): l2 d², l1 |d|, huber 2c(sqrt(d²+c²) − c), smooth_l1 2(sqrt(d²+c²) − c). c[b] is only
 * read for huber/smooth_l1 (may be NULL otherwise). mask (optional, [batch][per]) multiplies the
 * element loss before the mean (masked loss). */
void sd_loss_per_sample(const float *pred, const float *target, int64_t batch, int64_t per,
                        sd_loss_kind type, const float *c, const float *mask, float *loss);

/* Masked loss (kohya custom_train_functions.apply_masked_loss): a mask plane [H][W] (alpha/255, or
 * the conditioning image's R/255) resized to the latent's h×w as F.interpolate(mode="area") does,
 * i.e. adaptive_avg_pool2d: out[i][j] = (Σ in[y][x] over y ∈ [⌊iH/h⌋, ⌈(i+1)H/h⌉),
 * x ∈ [⌊jW/w⌋, ⌈(j+1)W/w⌉), summed in float32 row by row) / kh / kw. flip: the plane is read
 * mirrored (x → W−1−x) first, as the reference flips the full-size mask before resizing. The
 * result multiplies the element loss of every channel (sd_loss_per_sample's mask) before the
 * mean: no renormalisation by the mask's area. */
void sd_mask_area_resize(const float *in, int H, int W, int flip, float *out, int h, int w);

/* The mask value of a conditioning image's red byte r (§1.11; a ControlNet dataset's
 * conditioning_images through apply_masked_loss): torchvision ToTensor (r/255), Normalize(0.5, 0.5)
 * ((x − 0.5)/0.5), then x/2 + 0.5, each step in float32 as torch computes it. Not r/255 for 63 of
 * the 256 values (0 and 255 give exactly 0 and 1). */
float sd_mask_cond_value(uint8_t r);

/* Per-sample re-weighting, applied in the reference's order to loss[b] (in place):
 *   × loss_weights[b] (if not NULL), then
 *   min_snr_gamma γ > 0:  × min(s,γ)/s  (ε)   or × min(s,γ)/(s+1)  (v)
 *   scale_v_pred_loss_like_noise_pred:  × s'/(s'+1)
 *   v_pred_like_loss λ > 0:  ℓ + ℓ/(s'/(s'+1))·λ
 *   debiased_estimation:  × 1/sqrt(s')  (ε)  or × 1/(s'+1)  (v)
 * with s = all_snr[t], s' = min(s, 1000), float32 arithmetic as in torch. */
typedef struct sd_loss_weighting {
    int v_prediction;
    double min_snr_gamma;               /* 0 = off */
    int scale_v_pred_loss_like_noise_pred;
    double v_pred_like_loss;            /* 0 = off */
    int debiased_estimation;
} sd_loss_weighting;
void sd_loss_apply_weights(const sd_ddpm *s, const sd_loss_weighting *w, const int *t,
                           const float *loss_weights, int64_t batch, float *loss);
/* The total factor loss_after/loss_before of sample b (all the above are multiplicative), in
 * double: what the backward pass scales the element-loss gradient by. */
double sd_loss_weight_factor(const sd_ddpm *s, const sd_loss_weighting *w, int t, double loss_weight);

/* Gradient of L = (1/batch)·Σ_b factor[b]·mean_i ℓ(pred−target) w.r.t. pred (overwrites grad):
 * grad = factor[b]/(batch·per) · ℓ'(d) · mask, with ℓ' = 2d, sign(d) (0 at 0), 2c·d/sqrt(d²+c²),
 * 2d/sqrt(d²+c²). factor may be NULL (all 1). */
void sd_loss_grad(const float *pred, const float *target, int64_t batch, int64_t per,
                  sd_loss_kind type, const float *c, const float *mask, const double *factor,
                  float *grad);

#endif
