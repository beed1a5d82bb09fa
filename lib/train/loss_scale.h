/* Dynamic loss scaling for --mixed_precision fp16: torch.amp.GradScaler as accelerate creates it for
 * kohya-ss/sd-scripts (accelerate's Accelerator makes one when mixed_precision == "fp16", with the
 * GradScalerKwargs defaults; bf16 and no get none).
 *
 * Per optimizer step (accelerate's backward / clip_grad_norm_ / AcceleratedOptimizer.step):
 *   - every micro batch's loss gradient seed is multiplied by the scale (after the 1/A of gradient
 *     accumulation): sd_loss_scaler_factor();
 *   - once per optimizer step, after the last micro batch and before gradient clipping, every
 *     gradient of the optimizer is unscaled in place, g *= (float)(1 / (double)scale), and checked:
 *     found_inf is set when any scaled gradient element is inf or NaN (torch's
 *     _amp_foreach_non_finite_check_and_unscale_ checks the value before multiplying);
 *   - found_inf: the optimizer step is skipped (parameters, moments and AdamW's step count stay
 *     as they are) and accelerate's AcceleratedScheduler does not step the LR scheduler;
 *     kohya's global_step, progress bar, saves and samples still count the step;
 *   - sd_loss_scaler_update() is torch's _amp_update_scale_ (aten/src/ATen/native/cpu/
 *     AmpGradScalerKernels.cpp, the CUDA kernel is the same):
 *         found_inf: scale = (float)(scale · backoff_factor), growth_tracker = 0
 *         else:      growth_tracker + 1 == growth_interval ? (scale = (float)(scale · growth_factor)
 *                    unless that is not finite; growth_tracker = 0) : growth_tracker += 1
 * Defaults (torch / accelerate): init_scale 2^16, growth_factor 2, backoff_factor 0.5,
 * growth_interval 2000. The scale is a float32 as torch keeps it; the growth tracker an int.
 *
 * One departure: torch lets the scale fall without bound (at 0 the unscale multiplies by inf and
 * the parameters become NaN); here an update that would take it below FLT_MIN (2^-126, after about
 * 142 skipped steps in a row from the default) fails with SD_ERANGE instead, so the caller can stop
 * with a clear message.
 *
 * A scaler's state (scale, growth tracker and the three factors, as GradScaler.state_dict() holds
 * them) is saved in the training state (train/state.h) and restored by --resume. */
#ifndef SD_TRAIN_LOSS_SCALE_H
#define SD_TRAIN_LOSS_SCALE_H

#include <stddef.h>
#include <stdint.h>

#include "train/optim.h"

typedef struct sd_loss_scaler {
    int enabled;
    float scale;
    double growth_factor;
    double backoff_factor;
    int64_t growth_interval;
    int64_t growth_tracker;   /* consecutive finite steps since the last change of the scale */
} sd_loss_scaler;

/* What sd_loss_scaler_update did to the scale. */
typedef enum sd_loss_scale_event {
    SD_LOSS_SCALE_KEPT = 0,
    SD_LOSS_SCALE_BACKOFF,    /* non-finite gradients: multiplied by backoff_factor */
    SD_LOSS_SCALE_GROWN,      /* growth_interval finite steps: multiplied by growth_factor */
} sd_loss_scale_event;

/* torch's defaults; `enabled` 0 makes every call below a no-op (factor 1). */
void sd_loss_scaler_init(sd_loss_scaler *s, int enabled);

/* Apply a comma-separated list of accelerate's GradScalerKwargs fields ("init_scale=1024,
 * growth_interval=100"): init_scale (> 0, a normal float), growth_factor (> 1), backoff_factor
 * (0 < f < 1), growth_interval (integer ≥ 1), enabled (true/false, 1/0, True/False). Spaces around
 * items are ignored. SD_EUSAGE naming the item for anything else. */
int sd_loss_scaler_configure(sd_loss_scaler *s, const char *spec);

/* The factor of the loss gradient seed: the scale, or 1 when disabled. */
double sd_loss_scaler_factor(const sd_loss_scaler *s);

/* Unscale n gradients in place (g *= (float)(1/(double)scale); skipped when that is 1) and
 * return 1 if any element was inf or NaN before unscaling, else 0. Elementwise, the same bytes for
 * any thread count. A disabled scaler returns 0 and leaves g alone. */
int sd_loss_scaler_unscale(const sd_loss_scaler *s, float *g, size_t n);

/* The same over the gradient of every parameter of the optimizer; *found_inf gets the result.
 * With half-precision parameters (sd_optim_set_half) the unscaled gradients are rounded to it. */
int sd_loss_scaler_unscale_optim(const sd_loss_scaler *s, sd_optim *o, int *found_inf);

/* Update the scale after an optimizer step (found_inf: the step was skipped). *event (may be NULL)
 * says what happened. SD_ERANGE (the scaler unchanged) when a backoff would take the scale below
 * FLT_MIN. A disabled scaler is left alone. */
int sd_loss_scaler_update(sd_loss_scaler *s, int found_inf, sd_loss_scale_event *event);

/* One optimizer step in accelerate's order: half-precision gradients rounded
 * (sd_optim_round_grads), unscale the optimizer's gradients (enabled scaler),
 * clip them (sd_optim_clip_grad_norm with max_norm; ≤ 0 only measures; *grad_norm, may be NULL,
 * gets the norm of the unscaled gradients: inf/NaN on a skipped step), the optimizer step with
 * the learning rates lr[g] (and sd_optim_step's per-parameter `skip`, may be NULL) unless a
 * gradient was inf/NaN (*skipped = 1), then the scale update
 * (*event, may be NULL). A disabled scaler: clip and step, *skipped = 0. The caller advances its LR
 * scheduler only when the step was not skipped. SD_ERANGE from the update (the step skipped, the
 * scaler unchanged) is returned as is. */
int sd_loss_scaler_optim_step(sd_loss_scaler *s, sd_optim *o, double max_norm, const double *lr,
                              const uint8_t *skip, double *grad_norm, int *skipped, sd_loss_scale_event *event);

/* Check a restored state: scale a normal positive float, growth_factor > 1, 0 < backoff < 1,
 * growth_interval ≥ 1, 0 ≤ growth_tracker < growth_interval. SD_EFORMAT naming `what`. */
int sd_loss_scaler_validate(const sd_loss_scaler *s, const char *what);

#endif
