/* Samplers for image generation (spec §6.13; issue 9): the maths of the diffusers 0.32.1
 * schedulers that the reference (kohya-ss sd-scripts train_util.get_my_scheduler, driven by its
 * library/lpw_stable_diffusion.py pipeline) uses under each name, configured as the reference
 * configures them: 1000 train steps, scaled-linear betas 0.00085 → 0.012, the scheduler's own
 * defaults otherwise (timestep spacing "leading" for DDIM/PNDM, "linspace" for the others,
 * steps_offset 0, DDIM set_alpha_to_one, PNDM with its Runge–Kutta warm-up, DPM-Solver
 * solver_order 2 / midpoint / lower_order_final, no Karras sigmas), prediction_type
 * v_prediction with --v_parameterization, and clip_sample forced on where the scheduler has the
 * option (DDIM, and Heun where it changes the result: predicted x0 clamped to [−1, 1]).
 *
 *   name (aliases)         diffusers class                     model calls for N steps
 *   ddim                   DDIMScheduler (eta 0)               N
 *   pndm                   PNDMScheduler                       N + 9   (N ≥ 4)
 *   lms, k_lms             LMSDiscreteScheduler (order 4)      N
 *   euler, k_euler         EulerDiscreteScheduler              N
 *   euler_a, k_euler_a     EulerAncestralDiscreteScheduler     N       (noise every step)
 *   heun                   HeunDiscreteScheduler               2N − 1
 *   dpm_2, k_dpm_2         KDPM2DiscreteScheduler              2N − 1
 *   dpm_2_a, k_dpm_2_a     KDPM2AncestralDiscreteScheduler     2N − 1  (noise every 2nd call)
 *   dpmsolver              DPMSolverMultistepScheduler, algorithm "dpmsolver"    N
 *   dpmsolver++            DPMSolverMultistepScheduler, algorithm "dpmsolver++"  N
 *   dpmsingle              DPMSolverSinglestepScheduler (dpmsolver++)            N
 *
 * Known differences of the reference, and what we do:
 *   - dpmsolver: diffusers 0.32.1 refuses algorithm_type "dpmsolver" with its default
 *     final_sigmas_type "zero" (ValueError at construction), so the reference cannot sample with
 *     it. We use final_sigmas_type "sigma_min", the setting that error message asks for and what
 *     diffusers 0.25 (the legacy v0.8 line's pin) did implicitly.
 *   - pndm with fewer than 4 steps fails in the reference (numpy broadcast error in
 *     set_timesteps); sd_sampler_init returns SD_EUNSUPPORTED with a message.
 *   - Unknown names fall back to DDIM in the reference; sd_sampler_parse() reports them, and
 *     sd_sampler_parse_reference() reproduces the fallback.
 *   - The legacy v0.8 line pins diffusers 0.25, whose maths is the same for every sampler here
 *     (checked run by run) except that dpmsolver++ and dpmsingle end at sigma_min instead of 0:
 *     config final_sigma_zero = 0 reproduces it (golden-tested); its dpm_2_a also draws (and
 *     discards) noise on the first-order half steps, which only changes torch's RNG use.
 *
 * Arithmetic: the reference runs the schedulers in float32 (tables, sigmas and per-element
 * updates), with timestep/sigma bookkeeping in numpy float64; we follow the same precision per
 * quantity and the same operation order for the per-element updates, so a trajectory matches the
 * reference within ~1e-6 relative (golden test; LMS's integrated coefficients come from an exact
 * Gauss–Legendre rule instead of scipy's quad on float32 values).
 *
 * Arrays are host float32 [B, C, H, W] (any layout: the maths is elementwise; only the count n
 * matters). Ancestral noise is an argument of sd_sampler_step (NULL when the step needs none);
 * sd_sampler_run draws it from Philox streams. */
#ifndef SD_DIFFUSION_SAMPLERS_H
#define SD_DIFFUSION_SAMPLERS_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/schedule.h"

typedef enum sd_sampler_kind {
    SD_SAMPLER_DDIM = 0,
    SD_SAMPLER_PNDM,
    SD_SAMPLER_LMS,
    SD_SAMPLER_EULER,
    SD_SAMPLER_EULER_A,
    SD_SAMPLER_HEUN,
    SD_SAMPLER_DPM_2,
    SD_SAMPLER_DPM_2_A,
    SD_SAMPLER_DPMSOLVER,
    SD_SAMPLER_DPMSOLVER_PP,
    SD_SAMPLER_DPMSINGLE,
    SD_SAMPLER_COUNT
} sd_sampler_kind;

/* Canonical name ("ddim", "k_euler_a" → "euler_a", ...). */
const char *sd_sampler_name(sd_sampler_kind k);
/* Name or alias → kind; SD_EINVAL with the list of names for anything else. */
int sd_sampler_parse(const char *name, sd_sampler_kind *out);
/* The reference's get_my_scheduler: unknown names (and "ddpm", which it has but does not offer)
 * give DDIM. Returns 1 when it fell back, 0 otherwise. */
int sd_sampler_parse_reference(const char *name, sd_sampler_kind *out);

typedef struct sd_sampler_config {
    int v_prediction;      /* prediction_type v_prediction (--v_parameterization) */
    int clip_sample;       /* −1: as the reference (on for DDIM and Heun); 0/1 force */
    int final_sigma_zero;  /* DPM-Solver family: −1 as above (zero for dpmsolver++/dpmsingle,
                            * sigma_min for dpmsolver); 0 = sigma_min, 1 = zero (dpmsolver refuses 1) */
    double eta;            /* DDIM only: η (the pipeline passes 0) */
} sd_sampler_config;
void sd_sampler_config_default(sd_sampler_config *c);

#define SD_SAMPLER_BUFS 7

typedef struct sd_sampler {
    sd_sampler_kind kind;
    sd_sampler_config cfg; /* resolved (no −1 left) */
    int num_inference_steps;
    size_t n;              /* elements per sample tensor */
    float init_noise_sigma;
    int nt;                /* number of model calls (timesteps) */
    double *timesteps;     /* [nt] what the model gets as t (float32 values as in diffusers) */
    int ns;                /* length of the sigma arrays (0 for DDIM/PNDM/…) */
    float *sigmas, *sigmas_interpol, *sigmas_up, *sigmas_down;
    int *aux;              /* PNDM: integer timesteps; DPM single: order list */
    float ac[SD_DDPM_MAX_STEPS];
    /* state */
    int step_index;
    int counter, ets_n, lower_order_nums, have_first, mo_n;
    float dt;
    float *buf[SD_SAMPLER_BUFS];
    float *ets[4], *deriv[4], *mo[2];
    float *cur_sample, *cur_mo, *saved;
} sd_sampler;

/* set_timesteps: builds the timestep/sigma arrays for num_inference_steps (1..1000) and
 * allocates the state for tensors of n elements (the whole batch). SD_EINVAL for bad arguments,
 * SD_EUNSUPPORTED for combinations the reference cannot run (see above), SD_ENOMEM. */
int sd_sampler_init(sd_sampler *s, sd_sampler_kind kind, int num_inference_steps,
                    const sd_sampler_config *cfg, size_t n);
void sd_sampler_free(sd_sampler *s);
/* Back to the first timestep (same arrays, state cleared) for another image. */
void sd_sampler_reset(sd_sampler *s);

/* The timestep of the current model call (s->timesteps[s->step_index]); −1 when done. */
double sd_sampler_timestep(const sd_sampler *s);
int sd_sampler_done(const sd_sampler *s);

/* scale_model_input for the current call: out = x / sqrt(σ² + 1) for the sigma schedulers,
 * a copy otherwise (out may alias x). `count` elements (may be a multiple of n, e.g. the
 * doubled batch of classifier-free guidance). */
void sd_sampler_scale_model_input(const sd_sampler *s, const float *x, float *out, size_t count);
/* Whether the current step consumes ancestral noise (n standard normals). */
int sd_sampler_step_needs_noise(const sd_sampler *s);
/* One scheduler step for the current call: sample (n elements, in/out) ← prev_sample given the
 * model output (ε or v as configured). noise: n normals when sd_sampler_step_needs_noise(),
 * else ignored (may be NULL). SD_ESTATE when called after the last timestep or without needed
 * noise. */
int sd_sampler_step(sd_sampler *s, const float *model_output, float *sample, const float *noise);

/* Classifier-free guidance: out = uncond + scale·(cond − uncond) (out may alias either). */
void sd_cfg_combine(const float *uncond, const float *cond, double scale, size_t n, float *out);

/* The denoising model: given x [batch, ...] (already scaled by scale_model_input) and the
 * timestep t, write the prediction (ε or v) into out [batch, ...]; return SD_OK or an error code
 * that stops the loop. With classifier-free guidance the loop calls it with 2·B samples: the
 * first B are to be conditioned on the negative/unconditional prompt, the last B on the prompt
 * (the reference's torch.cat([latents] * 2) / chunk(2) order). */
typedef int (*sd_denoise_fn)(void *user, const float *x, int64_t batch, double t, float *out);

/* The reference pipeline's loop for a batch of B images of `per` elements each (s must have been
 * initialised with n = B·per): latents (in: x_T as N(0,1) draws, out: the final x_0 latents) are
 * multiplied by init_noise_sigma; then per timestep: scale_model_input, model, guidance when
 * guidance_scale > 1 (the reference's do_classifier_free_guidance), step. Ancestral noise of image
 * b at model call i comes from sd_rng_key(seeds[b], i + 1, 0, SD_RNG_SAMPLER) (call
 * sd_sampler_initial_noise for x_T from the same seeds). Allocates its work buffers (3·2·B·per
 * floats) once per call. The sampler is reset first, so a sampler can be reused. */
int sd_sampler_run(sd_sampler *s, int64_t B, int64_t per, const uint64_t *seeds,
                   double guidance_scale, sd_denoise_fn model, void *user, float *latents);
/* x_T of image b: per normals of sd_rng_key(seeds[b], 0, 0, SD_RNG_SAMPLER). */
int sd_sampler_initial_noise(int64_t B, int64_t per, const uint64_t *seeds, float *out);

#endif
