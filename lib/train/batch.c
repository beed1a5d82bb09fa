/* Batch planning (see batch.h). */
#include "train/batch.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "data/reg_balance.h"

void sd_batch_plan_free(sd_batch_plan *p)
{
    if (!p) return;
    for (int i = 0; i < p->nbuckets; i++) {
        free(p->b[i].entries);
        if (p->initial) free(p->initial[i]);
    }
    free(p->b);
    free(p->initial);
    free(p->order);
    free(p->balanced);
    memset(p, 0, sizeof *p);
}

static int find_bucket(sd_batch_plan *p, int dataset, int w, int h, int bs)
{
    for (int i = 0; i < p->nbuckets; i++)
        if (p->b[i].dataset == dataset && p->b[i].w == w && p->b[i].h == h) return i;
    sd_batch_bucket *nb = realloc(p->b, (size_t)(p->nbuckets + 1) * sizeof *nb);
    if (!nb) return -1;
    p->b = nb;
    memset(&p->b[p->nbuckets], 0, sizeof *nb);
    p->b[p->nbuckets].dataset = dataset;
    p->b[p->nbuckets].w = w;
    p->b[p->nbuckets].h = h;
    p->b[p->nbuckets].batch_size = bs;
    return p->nbuckets++;
}

static int cmp_bucket(const void *a, const void *b)
{
    const sd_batch_bucket *x = a, *y = b;
    if (x->dataset != y->dataset) return x->dataset < y->dataset ? -1 : 1;
    if (x->w != y->w) return x->w < y->w ? -1 : 1;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return 0;
}

int sd_batch_plan_init(sd_batch_plan *p, const sd_batch_item *items, size_t n, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->epoch = -1;
    p->seed = seed;
    p->nitems = n;
    if (n == 0) return sd_err(SD_EINVAL, "no images to train on");
    p->balanced = calloc(n, sizeof *p->balanced);
    if (!p->balanced) return sd_err(SD_ENOMEM, "out of memory");
    int maxds = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].batch_size < 1) return sd_err(SD_EINVAL, "image %zu: batch size %d < 1", i, items[i].batch_size);
        if (items[i].bucket_w < 1 || items[i].bucket_h < 1) return sd_err(SD_EINVAL, "image %zu: no bucket", i);
        if (items[i].dataset < 0) return sd_err(SD_EINVAL, "image %zu: bad dataset index", i);
        if (items[i].dataset > maxds) maxds = items[i].dataset;
        p->balanced[i] = items[i].num_repeats > 0 ? items[i].num_repeats : 0;
    }
    /* regularisation balancing per dataset (§1.7) */
    int64_t *tmp = malloc(n * sizeof *tmp);
    size_t *pos = malloc(n * sizeof *pos);
    if (!tmp || !pos) {
        free(tmp), free(pos);
        sd_batch_plan_free(p);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (int ds = 0; ds <= maxds; ds++) {
        int64_t ntrain = 0;
        size_t nreg = 0;
        for (size_t i = 0; i < n; i++) {
            if (items[i].dataset != ds) continue;
            if (items[i].is_reg) {
                p->num_reg_unbalanced += p->balanced[i];
                tmp[nreg] = p->balanced[i];
                pos[nreg++] = i;
            } else {
                ntrain += p->balanced[i];
            }
        }
        p->num_train_images += ntrain;
        if (nreg) {
            p->num_reg_images += sd_reg_balance(ntrain, tmp, nreg);
            for (size_t k = 0; k < nreg; k++) p->balanced[pos[k]] = tmp[k];
        }
    }
    free(tmp);
    free(pos);
    /* buckets with repeats, in record order */
    for (size_t i = 0; i < n; i++) {
        if (!p->balanced[i]) continue;
        int b = find_bucket(p, items[i].dataset, items[i].bucket_w, items[i].bucket_h, items[i].batch_size);
        if (b < 0) goto oom;
        sd_batch_bucket *bk = &p->b[b];
        int64_t *e = realloc(bk->entries, (size_t)(bk->n + p->balanced[i]) * sizeof *e);
        if (!e) goto oom;
        bk->entries = e;
        for (int64_t r = 0; r < p->balanced[i]; r++) bk->entries[bk->n++] = (int64_t)i;
    }
    if (!p->nbuckets) {
        sd_batch_plan_free(p);
        return sd_err(SD_EINVAL, "no images to train on");
    }
    qsort(p->b, (size_t)p->nbuckets, sizeof *p->b, cmp_bucket);
    p->initial = calloc((size_t)p->nbuckets, sizeof *p->initial);
    if (!p->initial) goto oom;
    for (int i = 0; i < p->nbuckets; i++) {
        sd_batch_bucket *bk = &p->b[i];
        bk->nbatches = (bk->n + bk->batch_size - 1) / bk->batch_size;
        p->nbatches += bk->nbatches;
        p->initial[i] = malloc((size_t)bk->n * sizeof **p->initial);
        if (!p->initial[i]) goto oom;
        memcpy(p->initial[i], bk->entries, (size_t)bk->n * sizeof **p->initial);
    }
    p->order = malloc((size_t)p->nbatches * sizeof *p->order);
    if (!p->order) goto oom;
    return SD_OK;
oom:
    sd_batch_plan_free(p);
    return sd_err(SD_ENOMEM, "out of memory planning batches");
}

int sd_batch_plan_epoch(sd_batch_plan *p, int64_t epoch)
{
    if (epoch < 0) return sd_err(SD_EINVAL, "negative epoch");
    if (epoch == p->epoch) return SD_OK;
    int64_t from = 0;
    if (p->epoch >= 0 && epoch > p->epoch) {
        from = p->epoch + 1;
    } else {
        for (int i = 0; i < p->nbuckets; i++)
            memcpy(p->b[i].entries, p->initial[i], (size_t)p->b[i].n * sizeof *p->b[i].entries);
    }
    for (int64_t e = from; e <= epoch; e++)
        for (int i = 0; i < p->nbuckets; i++) {
            sd_rng r = sd_rng_key(p->seed, (uint32_t)e, (uint32_t)i, SD_RNG_SHUFFLE);
            sd_rng_shuffle_i64(&r, p->b[i].entries, (size_t)p->b[i].n);
        }
    int64_t k = 0;
    for (int i = 0; i < p->nbuckets; i++)
        for (int64_t j = 0; j < p->b[i].nbatches; j++) p->order[k++] = ((int64_t)i << 32) | j;
    sd_rng r = sd_rng_key(p->seed, (uint32_t)epoch, 0xffffffffu, SD_RNG_SHUFFLE);
    sd_rng_shuffle_i64(&r, p->order, (size_t)p->nbatches);
    p->epoch = epoch;
    return SD_OK;
}

int sd_batch_get(const sd_batch_plan *p, int64_t i, const sd_batch_bucket **bucket, const int64_t **idx,
                 int *count)
{
    if (p->epoch < 0 || i < 0 || i >= p->nbatches) return sd_err(SD_ERANGE, "batch %lld out of range", (long long)i);
    int b = (int)(p->order[i] >> 32);
    int64_t j = p->order[i] & 0xffffffff;
    const sd_batch_bucket *bk = &p->b[b];
    int64_t start = j * bk->batch_size;
    int64_t c = bk->n - start < bk->batch_size ? bk->n - start : bk->batch_size;
    *bucket = bk;
    *idx = bk->entries + start;
    *count = (int)c;
    return SD_OK;
}
