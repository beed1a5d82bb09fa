/* Optimizers over the trainable parameters of a registry (nn/params.h), gradient clipping and
 * gradient-accumulation helpers, as kohya-ss/sd-scripts uses them (spec §6.8, §6.9).
 *
 * Implemented: AdamW exactly as torch.optim.AdamW (single-tensor path, torch 1.13 .. 2.x
 * arithmetic order, amsgrad off, maximize off). Each step, for every parameter p of a group with
 * learning rate lr and weight decay wd (step t counted per parameter from 1):
 *     p  *= 1 - lr·wd
 *     m   = m·β1 + (1-β1)·g                      (torch: exp_avg.mul_(β1).add_(g, alpha=1-β1))
 *     v   = v·β2 + (1-β2)·g·g                    (exp_avg_sq.mul_(β2).addcmul_(g, g, value=1-β2))
 *     p  += -(lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)
 * The Python scalars are computed in double and rounded to float once (as the CPU kernels use
 * them); the tensor arithmetic is f32. Defaults are torch's: β = (0.9, 0.999), eps 1e-8,
 * weight_decay 0.01 (kohya passes no weight decay of its own for AdamW).
 * The update is a function over flat f32 arrays (sd_adamw_update_f32) so a CUDA kernel can
 * replace it; today the parameters must be host memory (a CUDA registry is SD_EUNSUPPORTED).
 * Large arrays are split over the OpenMP team (elementwise: identical bytes for any thread count);
 * the gradient norm is a serial double sum (deterministic).
 *
 * Other --optimizer_type names of the reference (AdamW8bit, PagedAdamW*, Lion, Lion8bit,
 * SGDNesterov*, DAdapt*, Prodigy, Adafactor, *ScheduleFree, torch.optim.X, pkg.mod.Class) are
 * recognised and refused with SD_EUNSUPPORTED "optimizer X is not implemented yet (AdamW is)".
 *
 * --optimizer_args: a list of "key=value"; the value is parsed like Python's ast.literal_eval for
 * the literals an optimizer takes (int/float, True/False/None, quoted strings, and tuples/lists of
 * numbers with or without brackets: "0.9,0.999" is the tuple (0.9, 0.999)). AdamW accepts betas,
 * eps, weight_decay, amsgrad=False, maximize=False, foreach, fused, capturable, differentiable
 * (the last four change only how torch computes, not what); any other key is the error torch
 * would raise, as a message. The parsed values keep their Python str() so ss_optimizer can be
 * written as the reference writes it: "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))". */
#ifndef SD_TRAIN_OPTIM_H
#define SD_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"

typedef enum sd_optim_kind {
    SD_OPTIM_ADAMW = 0,
} sd_optim_kind;

#define SD_OPTIM_MAX_ARGS 16

typedef struct sd_optim_config {
    sd_optim_kind kind;
    double beta1, beta2, eps, weight_decay;
    /* --optimizer_args as given: key and Python str() of the value, in order */
    int nargs;
    char arg_key[SD_OPTIM_MAX_ARGS][64];
    char arg_str[SD_OPTIM_MAX_ARGS][512];
} sd_optim_config;

/* Defaults for `kind` (AdamW: torch's). */
void sd_optim_config_default(sd_optim_config *c, sd_optim_kind kind);

/* Resolve the reference's optimizer choice: --optimizer_type (NULL/"" = AdamW; case-insensitive)
 * with the legacy switches --use_8bit_adam / --use_lion_optimizer (which conflict with each
 * other and with a non-empty type, as in the reference). SD_EUNSUPPORTED for every name but
 * AdamW (known names and anything else alike), SD_EUSAGE for conflicting switches. */
int sd_optim_resolve(const char *optimizer_type, int use_8bit_adam, int use_lion, sd_optim_kind *kind);

/* Apply --optimizer_args items ("key=value") to c. SD_EUSAGE with a message naming the item for
 * a malformed item or an unknown key, SD_EUNSUPPORTED for amsgrad=True / maximize=True. */
int sd_optim_config_parse_args(sd_optim_config *c, const char *const *items, int n);

/* The reference's ss_optimizer value: "torch.optim.adamw.AdamW" + "(k=v,k=v)" when args given. */
int sd_optim_describe(const sd_optim_config *c, char *out, size_t n);

/* ---- the optimizer ------------------------------------------------------------------------- */

typedef struct sd_optim_group {
    char name[64];          /* for logs: "unet", "textencoder", "unet plus", "unet_block3" */
    double lr;              /* initial LR of the group (the scheduler multiplies it) */
    double weight_decay;
    size_t first, count;    /* parameters [first, first+count) of sd_optim.params */
} sd_optim_group;

typedef struct sd_optim_param {
    sd_param *p;
    int group;
    int64_t step;           /* torch's per-parameter state['step'] */
    float *m, *v;           /* exp_avg, exp_avg_sq (numel floats each) */
} sd_optim_param;

typedef struct sd_optim {
    sd_optim_config cfg;
    sd_optim_group *groups;
    int ngroups;
    sd_optim_param *params;
    size_t nparams;
    float *state;           /* one block holding every m and v */
    size_t state_floats;
} sd_optim;

/* One group description for sd_optim_init: `params` are trainable, allocated, f32, host. */
typedef struct sd_optim_group_desc {
    const char *name;
    double lr;
    sd_param *const *params;
    size_t count;
} sd_optim_group_desc;

/* Build the optimizer over the groups (each parameter in at most one group; the group's weight
 * decay is cfg->weight_decay). Moments start at zero, steps at 0. */
int sd_optim_init(sd_optim *o, const sd_optim_config *cfg, const sd_optim_group_desc *groups,
                  int ngroups);
void sd_optim_free(sd_optim *o);
/* Total number of elements under optimisation. */
int64_t sd_optim_numel(const sd_optim *o);

/* One optimizer step with the current learning rate of every group (lr[g], usually the group's
 * initial LR times the scheduler factor). `skip` (may be NULL): nonzero for parameters that got
 * no gradient this step (torch: grad is None); they are not touched and their step does not
 * advance. */
int sd_optim_step(sd_optim *o, const double *lr, const uint8_t *skip);

/* The per-step scalars of AdamW, computed in double and rounded once, as torch uses them. */
typedef struct sd_adamw_scalars {
    float decay;            /* 1 - lr·wd */
    float beta1, omb1;      /* β1, 1-β1 */
    float beta2, omb2;      /* β2, 1-β2 */
    float bc2_sqrt;         /* sqrt(1 - β2^t) */
    float eps;
    float neg_step;         /* -lr / (1 - β1^t) */
} sd_adamw_scalars;

void sd_adamw_scalars_make(sd_adamw_scalars *s, double lr, double wd, double beta1, double beta2,
                           double eps, int64_t step);
/* The flat update over n elements (the kernel a CUDA version replaces). */
void sd_adamw_update_f32(float *p, const float *g, float *m, float *v, size_t n,
                         const sd_adamw_scalars *s);

/* ---- gradient norm, clipping and accumulation ---------------------------------------------- */

/* torch.nn.utils.clip_grad_norm_(params, max_norm): total = ‖(‖g_i‖₂)_i‖₂ over the trainable
 * parameters of the optimizer; coef = max_norm / (total + 1e-6), clamped to ≤ 1, and every
 * gradient is multiplied by coef (also when coef is 1, as torch does). max_norm ≤ 0 only measures.
 * *total_norm (may be NULL) gets the norm before clipping. A non-finite norm is not an error here
 * (torch's default); the caller checks it. */
int sd_optim_clip_grad_norm(sd_optim *o, double max_norm, double *total_norm);
/* The same norm without clipping. */
double sd_optim_grad_norm(const sd_optim *o);

/* Gradient accumulation as accelerate does it (gradient_accumulation_steps = A): every micro
 * batch's loss is multiplied by 1/A before its backward; gradients sync (clip, optimizer step,
 * scheduler step, zero grad) after micro batch i (0-based within the epoch) when (i+1) % A == 0
 * or i is the epoch's last batch (accelerate's sync_with_dataloader). */
static inline double sd_accum_loss_scale(int accum) { return accum > 1 ? 1.0 / accum : 1.0; }
static inline int sd_accum_is_sync(int64_t i, int64_t batches_in_epoch, int accum)
{
    return accum <= 1 || (i + 1) % accum == 0 || i + 1 == batches_in_epoch;
}
/* Optimizer steps per epoch: ceil(batches / A) (§6.8). */
static inline int64_t sd_accum_steps_per_epoch(int64_t batches, int accum)
{
    return accum <= 1 ? batches : (batches + accum - 1) / accum;
}

/* Steps and epochs as the reference counts them (§6.8). batches = N_b, the batches of one epoch
 * over all datasets before sharding; P processes; A = gradient_accumulation_steps.
 *   max_train_epochs E > 0: max_train_steps = E × ceil(N_b / P / A) (float division, as Python)
 *   otherwise max_train_steps as given (≤ 0: the reference's silent default 1600)
 *   steps_per_epoch = ceil(ceil(N_b / P) / A)     (per-process batches after sharding)
 *   num_epochs      = ceil(max_train_steps / steps_per_epoch)
 *   sched_total     = max_train_steps × P         (the LR scheduler's num_training_steps)
 * Training stops when global_step ≥ max_train_steps or the epochs run out. */
typedef struct sd_steps_plan {
    int64_t max_train_steps, steps_per_epoch, num_epochs, sched_total, batches_per_process;
} sd_steps_plan;

int sd_steps_plan_make(int64_t batches, int num_processes, int accum, int64_t max_train_steps,
                       int64_t max_train_epochs, sd_steps_plan *out);

#endif
