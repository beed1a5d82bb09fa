/* Batch planning of the reference (reference-behaviour.md §1.7, §2.7): every image goes into its
 * bucket num_repeats times (regularisation images with their balanced repeats), each bucket is cut
 * into ceil(n / batch_size) batches (the last may be short; a batch never mixes buckets or
 * datasets), and every epoch the bucket entry lists are shuffled in place (cumulatively, as the
 * reference's shuffle_buckets does each epoch) and the batches are taken in a random order
 * (the DataLoader's shuffle=True across all datasets).
 *
 * Randomness: Philox streams (base/rng.h) keyed by (seed, epoch, bucket, SD_RNG_SHUFFLE) for the
 * entry shuffle of a bucket and (seed, epoch, 0xffffffff, SD_RNG_SHUFFLE) for the batch order, so
 * the order of epoch e is a pure function of (seed, e): a resumed run regenerates it and skips the
 * batches already done (the resumable cursor is (epoch, batch index)). */
#ifndef SD_TRAIN_BATCH_H
#define SD_TRAIN_BATCH_H

#include <stddef.h>
#include <stdint.h>

/* One image as the planner sees it. */
typedef struct sd_batch_item {
    int dataset;          /* dataset index (batches never mix datasets) */
    int bucket_w, bucket_h;
    int is_reg;
    int num_repeats;      /* ≥ 1 (reg images: before balancing) */
    int batch_size;       /* the dataset's batch size (≥ 1) */
} sd_batch_item;

typedef struct sd_batch_bucket {
    int dataset, w, h, batch_size;
    int64_t *entries;     /* item indices, with repeats; shuffled per epoch */
    int64_t n;
    int64_t nbatches;
} sd_batch_bucket;

typedef struct sd_batch_plan {
    int nbuckets;
    sd_batch_bucket *b;
    int64_t nbatches;            /* batches per epoch */
    int64_t num_train_images;    /* Σ repeats of non-reg images */
    int64_t num_reg_images;      /* Σ balanced repeats of reg images (per epoch) */
    int64_t num_reg_unbalanced;  /* Σ repeats of reg images before balancing */
    int64_t *balanced;           /* per item: repeats actually used (reg balancing applied) */
    size_t nitems;
    uint64_t seed;
    /* the current epoch's order */
    int64_t epoch;               /* -1: none yet */
    int64_t *order;              /* nbatches × (bucket << 32 | batch index in bucket) */
    int64_t **initial;           /* per bucket: the entry list before any shuffle */
} sd_batch_plan;

/* Build the buckets from n items. SD_EINVAL for an empty plan ("no images to train on") or bad
 * items (batch_size < 1, bucket sides < 1). */
int sd_batch_plan_init(sd_batch_plan *p, const sd_batch_item *items, size_t n, uint64_t seed);
void sd_batch_plan_free(sd_batch_plan *p);

/* Make epoch `epoch` (0-based) current: the entry shuffles of epochs 0..epoch applied in turn to
 * the initial lists, then that epoch's batch order. */
int sd_batch_plan_epoch(sd_batch_plan *p, int64_t epoch);

/* Batch i (0 ≤ i < nbatches) of the current epoch: its bucket and item indices (pointer into the
 * plan, valid until the next sd_batch_plan_epoch). */
int sd_batch_get(const sd_batch_plan *p, int64_t i, const sd_batch_bucket **bucket, const int64_t **idx,
                 int *count);

#endif
