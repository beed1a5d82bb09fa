/* Optimizer steps inside the backward pass, for full fine-tuning of SDXL (kohya-ss/sd-scripts
 * sdxl_train.py --fused_backward_pass / --fused_optimizer_groups N): the optimizer steps each
 * parameter (or each group of parameters) as soon as its gradient is complete, and the gradient is
 * freed, so the gradients of the whole model are never held at once (nn/params.h lazy gradients).
 *
 *   --fused_backward_pass      (Adafactor only, gradient_accumulation_steps 1: the reference's
 *                              assertions) each parameter: clip its gradient alone when
 *                              --max_grad_norm != 0 (accelerator.clip_grad_norm_(tensor, max_grad_norm)
 *                              in the hook, per tensor, not over the model), the Adafactor step of
 *                              that parameter (adafactor_fused.adafactor_step_param: the same
 *                              arithmetic as the optimizer's step), release the gradient.
 *   --fused_optimizer_groups N the optimizer's parameters, in order, are cut into groups of
 *                              ceil(count / N) tensors, a new group starting where the learning rate
 *                              changes (the reference's one optimizer per group); each gradient is
 *                              clipped alone when complete; a group steps once all of its gradients
 *                              are complete, then they are freed. With gradient accumulation the
 *                              gradients of the micro batches before the last accumulate and are held
 *                              (accelerate skips those steps), as the reference.
 * The kinds whose step depends only on each parameter's own gradient and state (AdamW, Adafactor,
 * Lion, SGDNesterov and the bitsandbytes ones) give the numbers of separate optimizers per group;
 * the others (Prodigy, D-Adaptation, schedule-free: one global estimate per optimizer) are refused.
 * The LR of each parameter is its optimizer group's scheduled LR of this step (every group's
 * scheduler steps alike). */
#ifndef SD_TRAIN_FUSED_H
#define SD_TRAIN_FUSED_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"
#include "train/optim.h"

enum { SD_FUSED_OFF = 0, SD_FUSED_BACKWARD_PASS, SD_FUSED_GROUPS };

typedef struct sd_fused_map {
    const sd_param *p;
    size_t i;               /* index in the optimizer */
} sd_fused_map;

typedef struct sd_fused {
    int mode;
    sd_optim *opt;
    double max_grad_norm;
    const double *lrs;      /* this step's LR per optimizer group (the caller's array) */
    int clip;               /* clip this pass (accelerate's sync_gradients) */
    sd_grad_pool pool;
    sd_fused_map *map;      /* sorted by p */
    size_t nmap;
    uint8_t *skip;          /* per optimizer parameter: 1 but for those stepping now */
    int ngroups;            /* SD_FUSED_GROUPS: groups [gfirst[g], gfirst[g+1]) of the optimizer */
    size_t *gfirst, *gcount;
    int64_t released;       /* gradients freed without a step (weights outside the optimizer) */
    void **dev_value, **dev_grad;   /* the device pointers while a host step runs */
    sd_ctx *ctx;            /* the training context (device gradients: clipping by its ops); NULL: host */
} sd_fused;

/* Where the weights live on a GPU, gradients are allocated there and clipped by ctx's ops; AdamW placed
 * on the device (sd_optim_place) steps there; any other kind steps each tensor (or group) on the host:
 * its value and gradient copied there and the value copied back (host memory: that group's only). */

/* Check what the reference asserts and what is not implemented (SD_EUSAGE with one line):
 * kind: the optimizer; accum: gradient_accumulation_steps; groups: N (0 = not given). */
int sd_fused_check(int backward_pass, int groups, sd_optim_kind kind, int accum);

/* Before the registries are allocated: their trainable parameters get lazy gradients. */
void sd_fused_init(sd_fused *f, int mode, double max_grad_norm);
/* After sd_optim_init: the parameter map and (SD_FUSED_GROUPS) the n groups; *ngroups_out gets their
 * count (the reference's "using N optimizers"). */
int sd_fused_bind(sd_fused *f, sd_optim *o, int n, int *ngroups_out);
void sd_fused_free(sd_fused *f);
/* After sd_fused_bind: a bound on the gradient bytes held at once (the largest group, or tensor, plus
 * the largest tensor of the module being written). */
size_t sd_fused_grad_bound(const sd_fused *f);

/* Around one micro batch's backward: sync (the optimizer steps after this micro batch) and the LRs
 * of this step. sd_fused_begin resets the per-step counters at the first micro batch of a step
 * (first). sd_fused_end completes the pass; after a sync pass every gradient must have been used and
 * freed (SD_ESTATE naming one otherwise). */
void sd_fused_begin(sd_fused *f, int first, int sync, const double *lrs);
int sd_fused_end(sd_fused *f, int sync);

#endif
