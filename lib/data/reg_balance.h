/* Regularisation balancing of DreamBooth datasets (reference-behaviour.md §1.7).
 *
 * Where it happens: in sd-train's batch planner, per dataset, over the records that reach it
 * (after sd-bucket and any filtering), because the count of training images with repeats is
 * only final there. sd-merge-meta writes what it needs into every record: `dataset`, `subset`,
 * `is_reg`, `num_repeats` (the subset's), in the reference's order (subsets in config/folder
 * order, images sorted by path within a subset).
 *
 * The reference's arithmetic: T = sum over non-reg images of num_repeats. Walking the reg
 * images in order, each is registered with its own num_repeats, adding it to a running total,
 * stopping as soon as the total reaches T (later reg images are never used). If the first pass
 * ends below T, further passes add 1 to each registered reg image in order (and 1 to the total)
 * until T is reached. With T == 0 no reg image is used. */
#ifndef SD_DATA_REG_BALANCE_H
#define SD_DATA_REG_BALANCE_H

#include <stddef.h>
#include <stdint.h>

/* `repeats[i]`: on input the num_repeats of reg image i (in order), on output the balanced
 * repeat count (0 = not used). Returns the reg total per epoch (>= num_train unless there are no
 * reg images or num_train is 0). Repeats below 0 count as 0. */
int64_t sd_reg_balance(int64_t num_train, int64_t *repeats, size_t nreg);

#endif
