/* Validation split and validation loss of sd-train (reference-behaviour.md §1.8, §6.14;
 * kohya-ss/sd-scripts train_util.split_train_val, config_util.generate_dataset_group_by_blueprint
 * and the validation blocks of train_network.py).
 *
 * The split (sd_train_split_validation), per dataset whose validation_split is in (0, 1]:
 *   - DreamBooth (and records without a method): each non-regularisation subset's images, in
 *     their record order (the reference's sorted image list), are shuffled as Python's
 *     random.seed(validation_seed); random.shuffle(list) does (a private Mersenne Twister, so the
 *     permutation is the reference's, bit for bit); the training set keeps the first
 *     ceil(n·(1 − split)) images, the validation set the last round(n·split) (Python's float
 *     arithmetic and round-half-even: the two may share one image, e.g. n = 6, split 0.25 → 5 + 2).
 *     Validation images have num_repeats 1. Regularisation subsets stay in training and are left
 *     out of validation.
 *   - fine_tuning: the reference does not split; it validates on an identical copy of the dataset
 *     (its images with their repeats). So do we.
 *   - validation_split outside [0, 1]: a warning, no validation set, the training set unsplit.
 * Without a validation_seed the reference shuffles with its global generator (two different
 * shuffles for the training and the validation instance); we use --seed in its place, so the two
 * sets always complement each other.
 *
 * The pass (sd_val_pass): up to max_validation_steps batches of a fixed batch plan, each evaluated
 * at the interior points of numpy.linspace(min_t, max_t, 6, dtype=int) (200, 400, 600, 800 by
 * default) by a caller-supplied forward (no gradients, no network dropout); losses go to a
 * LossRecorder (the reference's "moving average": appended in epoch 0, replaced by index later)
 * per kind (step / epoch) that lives for the whole run. */
#ifndef SD_TRAIN_VALIDATION_H
#define SD_TRAIN_VALIDATION_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "train/batch.h"
#include "train/loop.h"
#include "train/tboard.h"

/* ---- Python's random module, as far as the split needs it ------------------------------------- */

/* perm[0..n) = the list [0, 1, …, n−1] after random.seed(seed); random.shuffle(list) in CPython 3
 * (MT19937 seeded by init_by_array over the 32-bit words of |seed|; shuffle draws
 * _randbelow(i + 1) = getrandbits(bit_length(i + 1)) with rejection, i from n−1 down to 1).
 * n ≤ 2^32. */
void sd_py_shuffle_perm(int64_t seed, size_t n, size_t *perm);
/* The first n getrandbits(32) values after random.seed(seed) (tests). */
void sd_py_random_u32(int64_t seed, size_t n, uint32_t *out);

/* split_train_val's sizes: *ntrain = ceil(n·(1 − split)) (first items), *nval = round(n·split)
 * (last items), in IEEE double arithmetic with round-half-even, clamped to [0, n]. */
void sd_val_split_sizes(int64_t n, double split, int64_t *ntrain, int64_t *nval);

/* ---- the split -------------------------------------------------------------------------------- */

typedef struct sd_val_split_opts {
    double split;             /* --validation_split; NAN = not given */
    int has_seed;             /* --validation_seed given */
    int64_t seed;
    uint64_t fallback_seed;   /* --seed: used when no validation_seed applies */
    /* 1: the records carry their dataset's resolved validation_split / validation_seed (dataset
     * config or folder convention, where the command line was already a fallback): they win.
     * 0: records of --data: the command line wins, a record's keys are the fallback. */
    int records_resolved;
} sd_val_split_opts;

/* Split the samples of d: d keeps the training samples (their order kept), *val (initialised
 * here) receives the validation samples (moved, or copied where a sample is in both sets).
 * Warnings and one info line per split subset are logged. SD_EINVAL when the split leaves no
 * training image. With no split anywhere, d is untouched and val is empty. */
int sd_train_split_validation(sd_train_data *d, sd_train_data *val, const sd_val_split_opts *o);

/* ---- the pass --------------------------------------------------------------------------------- */

#define SD_VAL_NUM_TIMESTEPS 4

/* The reference's fixed timesteps: floor(lo + k·(hi − lo)/5) for k = 1..4 (numpy.linspace). */
void sd_val_timesteps(int lo, int hi, int t[SD_VAL_NUM_TIMESTEPS]);

/* Losses of one validation batch (vb: its index in the pass) at each timestep t[0..nt), written to
 * losses[0..nt). Must not touch any training state. */
typedef int (*sd_val_batch_fn)(void *user, const sd_batch_bucket *bk, const int64_t *idx, int B, uint32_t vb,
                               const int *t, int nt, double *losses);

typedef struct sd_val_runner {
    sd_batch_plan plan;       /* over the validation samples, fixed order (epoch 0) */
    int have_plan;
    int64_t nbatches;         /* batches of the validation set */
    int64_t steps;            /* batches per pass: min(max_validation_steps, nbatches) */
    int t[SD_VAL_NUM_TIMESTEPS];
    int every_n_steps;        /* 0 = None */
    int every_n_epochs;       /* 0 = None (every epoch) */
    sd_loss_recorder step_rec, epoch_rec;
    double last;              /* the last pass's average (NAN before the first) */
} sd_val_runner;

/* Plan the validation batches of `val` (may be empty: then no pass ever runs). max_steps < 0 =
 * None. seed keys the plan's fixed batch order. */
int sd_val_runner_init(sd_val_runner *v, const sd_train_data *val, uint64_t seed, int64_t max_steps,
                       int every_n_steps, int every_n_epochs, int min_t, int max_t);
void sd_val_runner_free(sd_val_runner *v);

/* Whether a pass is due after optimizer step global_step / at the end of 0-based epoch. */
int sd_val_due_step(const sd_val_runner *v, int64_t global_step);
int sd_val_due_epoch(const sd_val_runner *v, int64_t epoch);

/* Run one pass (is_epoch: the epoch recorder, else the step recorder) in training epoch `epoch`
 * (0-based: the recorder's append/replace rule). *avg = the recorder's moving average after it.
 * A stop request (*stop) between batches abandons the pass: SD_EINTR, nothing recorded. */
int sd_val_pass(sd_val_runner *v, int is_epoch, int64_t epoch, sd_val_batch_fn fn, void *user,
                volatile sig_atomic_t *stop, double *avg);

#endif
