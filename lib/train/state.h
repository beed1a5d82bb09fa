/* Resumable training state, checkpoint naming and retention (spec §6.11).
 *
 * A state is a directory (the reference's <name>-<epoch:06d>-state, <name>-step<step:08d>-state,
 * <name>-state) holding:
 *   state.json           format/version, progress (global step, epoch, step in epoch, scheduler
 *                        step, seed), the trainable parameters' keys and shapes, the optimizer
 *                        configuration, the options snapshot, the SHA-256 of the two files below,
 *                        the reference's train_state.json fields (current_epoch, current_step),
 *                        and "grad_scaler" (--mixed_precision fp16: the loss scaler's scale,
 *                        growth tracker and factors, as GradScaler.state_dict(); null otherwise)
 *   weights.safetensors  every trainable parameter of the network registry (f32, under its key)
 *   optimizer.safetensors per parameter the optimizer's state tensors under the reference's names
 *                        (AdamW: <key>.exp_avg, <key>.exp_avg_sq; Lion: exp_avg; SGDNesterov:
 *                        momentum_buffer; Adafactor: exp_avg_sq_row/col or exp_avg_sq, exp_avg with
 *                        beta1; Prodigy: exp_avg, exp_avg_sq, s, p0; D-Adaptation: exp_avg,
 *                        exp_avg_sq, s; f32, see sd_optim_param_bufs; AdamW8bit: bitsandbytes'
 *                        state1, state2 and, 8-bit, absmax1, absmax2), <key>.step (I64 scalar) and,
 *                        but for AdamW, <key>.initialized (I64 0/1); the optimizer-wide scalars as
 *                        optimizer.<name> (F64: Prodigy's d, d_max, d_numerator, k, ...); and
 *                        loss_window / loss_total (F64: the loss recorder's list and running total,
 *                        so a resumed run logs the same averages)
 * It is written into a temporary directory next to it (every file fsync'ed, then the directory),
 * which is then swapped in with renameat2(RENAME_EXCHANGE) (or renamed when there was none) and
 * the old copy removed, so a crash leaves either the old or the new state, never half of one.
 *
 * What "RNG stream positions" and the "data-order cursor" are here: every random number of a run
 * comes from a Philox stream keyed by (seed, step, sample, purpose) (base/rng.h), and the shuffled
 * order of epoch e is a pure function of (seed, e) (data/). So (seed, global_step, epoch,
 * step_in_epoch) is the complete position: a resumed run regenerates the epoch's order, skips
 * step_in_epoch micro batches and draws exactly the numbers an uninterrupted run would have.
 *
 * Loading validates everything before touching the network: the format and version, the file
 * hashes (a corrupted or truncated file is SD_EFORMAT naming it), that the state's parameters are
 * exactly the network's trainable ones with the same shapes (a different network_dim gives
 * "cannot resume from DIR: it holds lora_x.lora_down.weight as [8,320], this run has [16,320]"),
 * the optimizer kind ("cannot resume from DIR: its optimizer state is Prodigy's, this run uses
 * AdamW") and group count, and (sd_train_state_check_options) the options that must
 * not change across a resume. */
#ifndef SD_TRAIN_STATE_H
#define SD_TRAIN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"
#include "train/loss_scale.h"
#include "train/optim.h"

#define SD_TRAIN_STATE_VERSION 1

typedef struct sd_train_progress {
    int64_t global_step;     /* optimizer steps done */
    int64_t epoch;           /* 0-based epoch the cursor is in */
    int64_t step_in_epoch;   /* micro batches of that epoch already consumed */
    int64_t sched_step;      /* LR scheduler position: optimizer steps taken (steps skipped by the
                                fp16 loss scaler do not count), × num_processes */
    uint64_t seed;
} sd_train_progress;

typedef struct sd_train_state_in {
    sd_train_progress prog;
    const sd_params *net;            /* its trainable parameters are saved */
    const sd_optim *opt;             /* may be NULL (no optimizer state) */
    const char *options_json;        /* a JSON object (may be NULL: {}) */
    const double *loss_window;       /* the loss recorder's list (may be NULL) */
    size_t loss_window_n;
    double loss_total;               /* and its running total */
    const sd_loss_scaler *scaler;    /* NULL or disabled: none ("grad_scaler":null) */
    const sd_params *net2;           /* and the trainable parameters of a second registry (a full model's
                                        text encoder), or NULL */
} sd_train_state_in;

/* Write the state directory `dir` atomically (its parent must exist). */
int sd_train_state_save(const char *dir, const sd_train_state_in *s);

typedef struct sd_train_state_out {
    sd_train_progress prog;
    char *options_json;              /* malloc'd (caller frees) */
    double *loss_window;             /* malloc'd, may be NULL */
    size_t loss_window_n;
    double loss_total;
    int has_scaler;                  /* the state holds a loss scaler (validated) */
    sd_loss_scaler scaler;           /* enabled when has_scaler */
} sd_train_state_out;

/* Validate `dir` against `net` (trainable parameters) and `opt` (may be NULL: optimizer state is
 * then only validated, not loaded), then load weights, moments and steps. */
int sd_train_state_load(const char *dir, sd_params *net, sd_optim *opt, sd_train_state_out *out);
/* The same with the trainable parameters of two registries (net2 may be NULL). */
int sd_train_state_load2(const char *dir, sd_params *net, sd_params *net2, sd_optim *opt, sd_train_state_out *out);
void sd_train_state_out_free(sd_train_state_out *o);

/* Compare the options that must match between the saved snapshot and this run's (both JSON
 * objects); a key absent from both is fine. SD_EINVAL: "cannot resume from DIR: it was saved with
 * network_dim=8, this run has network_dim=16". */
int sd_train_state_check_options(const char *dir, const char *saved_json, const char *current_json,
                                 const char *const *keys, size_t nkeys);

/* ---- names and retention (the reference's rules) ----------------------------------------------- */

typedef enum sd_save_kind { SD_SAVE_EPOCH = 0, SD_SAVE_STEP, SD_SAVE_LAST } sd_save_kind;

/* Checkpoint file name (ext = ".safetensors" etc.) or, with ext == NULL, the state directory
 * name: "<name>-<no:06d><ext>", "<name>-step<no:08d><ext>", "<name><ext>" / "<name>-<no:06d>-state",
 * "<name>-step<no:08d>-state", "<name>-state". name = output_name, or the reference's defaults
 * "epoch", "at", "last" when NULL. */
int sd_save_name(char *out, size_t n, sd_save_kind kind, const char *output_name, int64_t no, const char *ext);

/* Epoch saves: 1-based epoch % every == 0 and not the last epoch. Step saves: step % every == 0. */
int sd_should_save_epoch(int64_t epoch1, int every, int64_t num_epochs);
int sd_should_save_step(int64_t global_step, int every);

/* Which older save to delete after saving epoch `epoch1` / step `step` (-1: none):
 *   epoch: e − every × last_n, if ≥ 0
 *   step:  r = s − last_n − 1, r −= r mod every (Python floor mod); checkpoint if r ≥ 0, state if r > 0
 * last_n ≤ 0 means no retention. For states pass save_last_n_*_state, or save_last_n_* when that
 * is 0/unset, as the reference does. */
int64_t sd_remove_epoch_no(int64_t epoch1, int every, int last_n, int state);
int64_t sd_remove_step_no(int64_t step, int every, int last_n, int state);

/* Remove a state directory (or checkpoint file) if it exists: rm -rf limited to it. */
int sd_remove_tree(const char *path);

/* After saving epoch/step `no` into output_dir, delete what the reference deletes: the checkpoint
 * file (ext given, e.g. ".safetensors"; retention save_last_n_epochs / save_last_n_steps) or the
 * state directory (ext NULL; retention last_n_state when > 0, else last_n, as the reference falls
 * back). `every` is save_every_n_epochs / save_every_n_steps. *removed (may be NULL) gets the
 * number deleted (-1: none due). A missing file is not an error. */
int sd_prune_after_save(const char *output_dir, const char *output_name, sd_save_kind kind, int64_t no,
                        int every, int last_n, int last_n_state, const char *ext, int64_t *removed);

#endif
