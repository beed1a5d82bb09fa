/* Learning-rate schedulers of the reference (spec §6.10): kohya's get_scheduler_fix over the
 * transformers.optimization lambdas (the SchedulerType values it can run) and diffusers'
 * piecewise_constant, evaluated exactly as Python does (double arithmetic, same expressions):
 *
 *   W = warm-up steps, T = num_training_steps = max_train_steps × num_processes, s = step
 *   warm-up (s < W; not constant, adafactor, piecewise_constant; WSD has its own): s / max(1, W)
 *   constant               1 (a non-zero warm-up is an error, as in the reference)
 *   constant_with_warmup   1
 *   linear                 max(0, (T − s) / max(1, T − W))
 *   cosine                 p = (s − W) / max(1, T − W);  max(0, 0.5·(1 + cos(π · c · 2 · p))), c = 0.5
 *                          (or num_cycles=… in --lr_scheduler_args)
 *   cosine_with_restarts   p as above; 0 if p ≥ 1; else max(0, 0.5·(1 + cos(π·((N·p) mod 1))))
 *   polynomial             s > T: lr_end / lr_init; else ((lr_init − lr_end)(1 − (s−W)/(T−W))^power
 *                          + lr_end) / lr_init, lr_end = 1e-7 (or lr_end=… in --lr_scheduler_args),
 *                          lr_init = --learning_rate (the optimizer's default LR, also for groups
 *                          with their own LR)
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
 * The four further schedulers get_scheduler_fix runs, for kohya's pins transformers 4.54.1 and
 * diffusers 0.32.1. Transcribed from huggingface/transformers src/transformers/optimization.py as
 * stored at commit 005edacb6b5d (a snapshot of unknown version; it already has
 * get_cosine_with_min_lr_schedule_with_warmup_lr_rate). The 4.54.1 tag itself could not be read
 * here: these lambdas (the WSD one with warmup_type / decay_type and min_lr_ratio also in the
 * warm-up, whose keyword arguments kohya's call matches) are assumed unchanged between 4.54.1 and
 * that snapshot. And from
 * huggingface/diffusers src/diffusers/optimization.py (get_piecewise_constant_schedule, unchanged
 * since long before 0.32.1):
 *
 *   D = decay steps (--lr_decay_steps, int_or_float like the warm-up, default 0), S = T − W − D,
 *   N = --lr_scheduler_num_cycles, m = the minimum ratio
 *   inverse_sqrt           timescale τ = --lr_scheduler_timescale, or (None) W if W ≠ 0 else 10000;
 *                          s < W: s / max(1, W); else 1 / sqrt((s + (τ − W)) / τ)   (τ ≥ 1 here)
 *   cosine_with_min_lr     c = N / 2; m = --lr_scheduler_min_lr_ratio, or min_lr / --learning_rate
 *                          with min_lr=… in --lr_scheduler_args (one of them, not both: an error);
 *                          s < W: s / max(1, W); p = (s − W) / max(1, T − W);
 *                          f = 0.5·(1 + cos(π·c·2·p)); max(0, f·(1 − m) + m)
 *   warmup_stable_decay    c = N / 2; m = --lr_scheduler_min_lr_ratio or 0; warmup_type / decay_type
 *                          (linear, cosine, 1-sqrt; default linear / cosine) from --lr_scheduler_args;
 *                          s < W: q = s / max(1, W), f = q | 0.5·(1 − cos(π·q)) | 1 − sqrt(1 − q),
 *                                 max(0, f·(1 − m) + m)   (the warm-up starts at m, not 0)
 *                          s < W + S: 1
 *                          s < W + S + D: q = (s − W − S) / max(1, D),
 *                                 f = 1 − q | 0.5·(1 + cos(π·c·2·q)) | 1 − sqrt(q), max(0, f·(1 − m) + m)
 *                          else m.  D = 0 (no --lr_decay_steps) is accepted as in the reference (its
 *                          default is 0, so its "requires `num_decay_steps`" error cannot happen):
 *                          1 after the warm-up up to T − 1, then m; a warning says so.
 *   piecewise_constant     step_rules="v1:n1,v2:n2,…,v_last" from --lr_scheduler_args (diffusers):
 *                          the value of the smallest n_i > s (n_i are absolute step thresholds; a
 *                          repeated n keeps its last value), v_last when none; no warm-up (kohya
 *                          calls it with the kwargs only: --lr_warmup_steps has no effect, a warning).
 *                          Limit: the string has at most 255 characters (sd_py_value), ≈ 50 rules
 *
 * --lr_scheduler_args key=value (ast.literal_eval values) are the schedule function's keyword
 * arguments, as in kohya: per scheduler only the function's parameters that kohya does not pass
 * itself (cosine: num_cycles; polynomial: lr_end; cosine_with_min_lr: min_lr;
 * warmup_stable_decay: warmup_type, decay_type, num_training_steps (unused: num_stable_steps
 * wins, a warning); piecewise_constant: step_rules; every one: last_epoch, which must stay -1).
 * Another key is Python's TypeError in the reference, SD_EUSAGE here. With adafactor they have
 * no effect (a warning). Options a scheduler does not use (--lr_decay_steps,
 * --lr_scheduler_timescale, --lr_scheduler_min_lr_ratio, --lr_scheduler_num_cycles,
 * --lr_scheduler_power when given, a warm-up with piecewise_constant) give a warning line.
 *
 * Not implemented: --lr_scheduler_type. Refused: reduce_lr_on_plateau (SD_EUNSUPPORTED: the
 * reference cannot run it: get_scheduler_fix passes num_warmup_steps/num_training_steps/
 * num_decay_steps to torch's ReduceLROnPlateau, a TypeError, and its loop's lr_scheduler.step()
 * has no metric to give). */
#ifndef SD_TRAIN_LR_SCHED_H
#define SD_TRAIN_LR_SCHED_H

#include <stddef.h>
#include <stdint.h>

typedef enum sd_lr_kind {
    SD_LR_CONSTANT = 0,
    SD_LR_CONSTANT_WITH_WARMUP,
    SD_LR_LINEAR,
    SD_LR_COSINE,
    SD_LR_COSINE_WITH_RESTARTS,
    SD_LR_POLYNOMIAL,
    SD_LR_ADAFACTOR,
    SD_LR_INVERSE_SQRT,
    SD_LR_COSINE_WITH_MIN_LR,
    SD_LR_WARMUP_STABLE_DECAY,
    SD_LR_PIECEWISE_CONSTANT,
} sd_lr_kind;

/* "constant", ... (the reference's spelling). */
const char *sd_lr_kind_name(sd_lr_kind k);
/* Parse --lr_scheduler. SD_EUNSUPPORTED for reduce_lr_on_plateau (with the reason), SD_EUSAGE for
 * an unknown name (listing the valid ones). */
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

/* WSD's warmup_type / decay_type */
typedef enum sd_lr_shape { SD_LR_SHAPE_LINEAR = 0, SD_LR_SHAPE_COSINE, SD_LR_SHAPE_1_SQRT } sd_lr_shape;

#define SD_LR_MAX_RULES 64   /* piecewise_constant: "value:steps" rules (besides the last multiple) */

/* Everything get_scheduler_fix reads (sd_lr_params_default: the reference's defaults). */
typedef struct sd_lr_params {
    const sd_lr_steps *warmup;     /* --lr_warmup_steps; NULL = 0 */
    const sd_lr_steps *decay;      /* --lr_decay_steps; NULL = not given (0) */
    int64_t max_train_steps;
    int num_processes;
    int num_cycles;                /* --lr_scheduler_num_cycles (1) */
    int num_cycles_given;          /* set on the command line / in a config: warn where unused */
    double power;                  /* --lr_scheduler_power (1) */
    int power_given;
    double lr_init;                /* --learning_rate: optimizer.defaults["lr"] */
    int has_timescale;             /* --lr_scheduler_timescale (None) */
    int64_t timescale;
    int has_min_lr_ratio;          /* --lr_scheduler_min_lr_ratio (None) */
    double min_lr_ratio;
    const char *const *args;       /* --lr_scheduler_args "key=value" items */
    int nargs;
} sd_lr_params;

void sd_lr_params_default(sd_lr_params *p);

typedef struct sd_lr_sched {
    sd_lr_kind kind;
    int64_t warmup;        /* W */
    int64_t total;         /* T */
    int num_cycles;        /* cosine_with_restarts */
    double power;          /* polynomial */
    double lr_init;        /* polynomial: the optimizer's default LR */
    double lr_end;         /* polynomial: 1e-7 */
    double cycles;         /* cosine: 0.5 (or num_cycles=); cosine_with_min_lr, WSD: N / 2 */
    double min_lr_rate;    /* cosine_with_min_lr: min_lr_rate; WSD: min_lr_ratio */
    int64_t timescale;     /* inverse_sqrt, resolved */
    int64_t decay, stable; /* WSD: D, S = T − W − D */
    sd_lr_shape warmup_type, decay_type;   /* WSD */
    int nrules;            /* piecewise_constant: thresholds ascending, unique */
    int64_t rule_steps[SD_LR_MAX_RULES];
    double rule_value[SD_LR_MAX_RULES];
    double last_multiple;
} sd_lr_sched;

/* Build the scheduler as get_scheduler_fix does: total = max_train_steps × num_processes,
 * warm-up and decay resolved against it, --lr_scheduler_args checked against the schedule
 * function's signature. Errors (SD_EUSAGE unless said): a warm-up with `constant` ("constant does
 * not require `num_warmup_steps`. Set None or 0.") or `adafactor` ("adafactor:<lr_init> does not
 * ..."), polynomial with lr_init ≤ lr_end, total < 1 (SD_EINVAL), num_cycles < 1 for
 * cosine_with_restarts, inverse_sqrt with a timescale < 1, cosine_with_min_lr without (or with
 * both) min ratio / min_lr, a bad warmup_type / decay_type / step_rules, an unknown or doubly
 * given --lr_scheduler_args key, last_epoch ≠ -1. `warn` (may be NULL) gets the warning lines
 * ("\n"-separated, "" when none). */
int sd_lr_sched_init_params(sd_lr_sched *s, sd_lr_kind kind, const sd_lr_params *p, char *warn, size_t nwarn);
/* The same with only the classic options (no decay, timescale, min ratio or args). */
int sd_lr_sched_init(sd_lr_sched *s, sd_lr_kind kind, const sd_lr_steps *warmup,
                     int64_t max_train_steps, int num_processes, int num_cycles, double power,
                     double lr_init);
/* The factor at scheduler step `step` (≥ 0). */
double sd_lr_sched_factor(const sd_lr_sched *s, int64_t step);

#endif
