/* Resuming a LoRA run from a state folder written by kohya-ss/sd-scripts' train_network.py with
 * --save_state (accelerate's Accelerator.save_state plus kohya's hooks), spec §6.11.
 *
 * What such a folder holds (accelerate ≥ 0.24, checkpointing.save_accelerator_state; kohya's
 * save_model_hook drops every model but the network, so one model remains, index 0):
 *   model.safetensors     the network's state_dict (safe_serialization, the default): kohya names
 *                         "<lora_name>.lora_down.weight", ".lora_up.weight", ".alpha" (no prefix on
 *                         one process; "module." under DDP, stripped here). Older accelerate, or
 *                         safe_serialization=False: pytorch_model.bin (torch.save of the same dict).
 *   optimizer.bin         torch.save(optimizer.state_dict()): {"state": {i: {...}}, "param_groups":
 *                         [{"params": [i, ...], "lr", "initial_lr", "betas", "eps",
 *                         "weight_decay", ...}]}, i numbering the parameters group after group in
 *                         the order of network.prepare_optimizer_params
 *   scheduler.bin         torch.save(lr_scheduler.state_dict()) (LambdaLR: "last_epoch" = optimizer
 *                         steps taken × num_processes, fp16 steps skipped by the scaler not counted)
 *   random_states_0.pkl   python/numpy/torch RNG states (not usable here: sd-train's draws are
 *                         Philox streams, base/rng.h)
 *   scaler.pt             the fp16 GradScaler (--mixed_precision fp16)
 *   train_state.json      kohya: {"current_epoch": e (1-based), "current_step": optimizer steps}
 *
 * The parameter order: kohya numbers the optimizer's parameters as LoRANetwork.prepare_optimizer_
 * params lists them (text-encoder modules, then UNet; per module lora_down.weight then
 * lora_up.weight; LoRA+ / block LRs split them into groups), its modules in the models'
 * registration order (named_modules), which is not sd-train's layer order (CLIP's k, v, q
 * projections; original_unet's down, up, mid blocks; sdxl_original_unet's input, middle, output
 * blocks): kohya's index of every parameter is computed from its name (state_kohya.c kohya_order;
 * a name outside networks.lora's forms is refused, never guessed), within the groups
 * that sd-train builds by the same rules (train/lora_net.h sd_lora_param_groups). Checked per group
 * (count, the indices, initial_lr, weight_decay and the kind's hyper-parameters) and per parameter
 * (every state tensor's shape against the parameter's), so a different network or LR split is
 * refused, never loaded into the wrong tensors.
 *
 * Optimizers read: AdamW (exp_avg, exp_avg_sq, step: a 0-d tensor in torch ≥ 1.12, an int before),
 * AdamW8bit (bitsandbytes ≥ 0.44 Optimizer2State: state1, state2 (uint8 codes, or float32 below
 * min_8bit_size), absmax1, absmax2 (one per 256 elements; bnb < 0.44's 2048-element blocks are
 * refused by their count), qmap1/qmap2 (checked against train/optim8bit.h's maps within 4e-7
 * relative: torch builds differ by an ulp or two), step an int),
 * Lion (lion_pytorch: exp_avg), SGDNesterov (torch SGD: momentum_buffer), Adafactor
 * (transformers: exp_avg_sq_row/col or exp_avg_sq, exp_avg with beta1, step; its RMS is recomputed
 * every step). Any other kind is SD_EUNSUPPORTED naming optimizer.bin and the optimizer. */
#ifndef SD_TRAIN_STATE_KOHYA_H
#define SD_TRAIN_STATE_KOHYA_H

#include <stddef.h>
#include <stdint.h>

#include "train/lora_file.h"
#include "train/optim.h"

/* 1 when `dir` is a directory without sd-train's state.json that holds kohya's train_state.json
 * or accelerate's optimizer.bin / model.safetensors / pytorch_model.bin. */
int sd_train_state_is_kohya(const char *dir);

typedef struct sd_kohya_state {
    int64_t current_step;     /* train_state.json's current_step (0 when the file is absent) */
    int64_t current_epoch;    /* its current_epoch (1-based; -1 when absent) */
    int64_t last_epoch;       /* scheduler.bin's last_epoch (-1 when absent or unreadable) */
    char sched_note[512];     /* why scheduler.bin could not be read ("" when it was, or is absent) */
    int has_train_state;
    int has_rng;              /* random_states_*.pkl present (not carried over) */
    int has_scaler;           /* scaler.pt present (not read) */
    size_t reordered;         /* parameters whose kohya optimizer index differs from sd-train's */
} sd_kohya_state;

/* Validate `dir` against the network's modules (names, ranks, alphas, shapes: all of them, no
 * more) and `opt` (kind, groups, parameter order and state shapes), then load the LoRA weights and
 * the optimizer's state. Nothing is changed on an error (short of an I/O error while reading).
 * Errors name the file: SD_ENOTFOUND / SD_EFORMAT / SD_EINVAL (a different network or optimizer
 * configuration) / SD_EUNSUPPORTED (an optimizer kind not read). */
int sd_train_state_load_kohya(const char *dir, const sd_lora_ref *mods, size_t nmods, sd_optim *opt,
                              sd_kohya_state *out);

#endif
