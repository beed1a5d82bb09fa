/* Learning-rate schedulers of the reference (spec §6.10): kohya's get_scheduler_fix over the
 * transformers.optimization lambdas (the six SchedulerType values it uses), evaluated exactly as
 * Python does (double arithmetic, same expressions):
 *
 *   W = warm-up steps, T = num_training_steps = max_train_steps × num_processes, s = step
 *   warm-up (s < W, every schedule but constant): s / max(1, W)
 *   constant               1 (a non-zero warm-up is an error, as in the reference)
 *   constant_with_warmup   1
 *   linear                 max(0, (T − s) / max(1, T − W))
 *   cosine                 p = (s − W) / max(1, T − W);  max(0, 0.5·(1 + cos(π · 0.5 · 2 · p)))
 *   cosine_with_restarts   p as above; 0 if p ≥ 1; else max(0, 0.5·(1 + cos(π·((N·p) mod 1))))
 *   polynomial             s > T: lr_end / lr_init; else ((lr_init − lr_end)(1 − (s−W)/(T−W))^power
 *                          + lr_end) / lr_init, lr_end = 1e-7, lr_init = --learning_rate (the
 *                          optimizer's default LR, also for groups with their own LR)
 *
 * A group's LR at scheduler step s is its initial LR × factor(s). The scheduler starts at step 0
 * (the LR of the first optimizer step is factor(0): 0 with a warm-up) and accelerate advances it
 * num_processes times per optimizer step, so after g optimizer steps it is at s = g × P.
 *
 * --lr_warmup_steps / --lr_decay_steps syntax (kohya's int_or_float): "N%" → N/100 (a fraction);
 * a number ≥ 1 must be an integer ("1.5" is an error); a number < 1 is a fraction. A fraction f
 * gives int(f × T) steps.
 *
 *   adafactor              1: "adafactor" or "adafactor:<initial lr>", the scheduler kohya uses with
 *                          Adafactor's relative_step, whose LRs come from the optimizer
 *                          (transformers' AdafactorSchedule); a non-zero warm-up is an error
 *
 * Not implemented (SD_EUNSUPPORTED with a clear message): inverse_sqrt, cosine_with_min_lr,
 * warmup_stable_decay, piecewise_constant, --lr_scheduler_type. */
#ifndef SD_TRAIN_LR_SCHED_H
#define SD_TRAIN_LR_SCHED_H

#include <stdint.h>

typedef enum sd_lr_kind {
    SD_LR_CONSTANT = 0,
    SD_LR_CONSTANT_WITH_WARMUP,
    SD_LR_LINEAR,
    SD_LR_COSINE,
    SD_LR_COSINE_WITH_RESTARTS,
    SD_LR_POLYNOMIAL,
    SD_LR_ADAFACTOR,
} sd_lr_kind;

/* "constant", ... (the reference's spelling). */
const char *sd_lr_kind_name(sd_lr_kind k);
/* Parse --lr_scheduler. SD_EUNSUPPORTED for the reference's other schedulers, SD_EUSAGE for an
 * unknown name (listing the valid ones). */
int sd_lr_kind_parse(const char *name, sd_lr_kind *k);

/* A --lr_warmup_steps / --lr_decay_steps value. */
typedef struct sd_lr_steps {
    int is_fraction;
    int64_t steps;       /* when !is_fraction */
    double fraction;     /* when is_fraction */
} sd_lr_steps;

/* Parse the int_or_float syntax; `opt` names the option in messages. */
int sd_lr_steps_parse(const char *s, const char *opt, sd_lr_steps *out);
/* Resolve against T total steps: int(f × T) for a fraction. */
int64_t sd_lr_steps_resolve(const sd_lr_steps *w, int64_t total);

typedef struct sd_lr_sched {
    sd_lr_kind kind;
    int64_t warmup;        /* W */
    int64_t total;         /* T */
    int num_cycles;        /* cosine_with_restarts */
    double power;          /* polynomial */
    double lr_init;        /* polynomial: the optimizer's default LR */
    double lr_end;         /* polynomial: 1e-7 */
} sd_lr_sched;

/* Build the scheduler as get_scheduler_fix does: total = max_train_steps × num_processes,
 * warm-up resolved against it. Errors: a warm-up with `constant` (SD_EUSAGE "constant does not
 * require `num_warmup_steps`. Set None or 0.") or `adafactor` ("adafactor:<lr_init> does not ..."), polynomial with lr_init ≤ lr_end, total < 1,
 * num_cycles < 1 for cosine_with_restarts. */
int sd_lr_sched_init(sd_lr_sched *s, sd_lr_kind kind, const sd_lr_steps *warmup,
                     int64_t max_train_steps, int num_processes, int num_cycles, double power,
                     double lr_init);
/* The factor at scheduler step `step` (≥ 0). */
double sd_lr_sched_factor(const sd_lr_sched *s, int64_t step);

#endif
