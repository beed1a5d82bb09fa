/* Validation split and validation passes (see validation.h). */
#include "train/validation.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"

/* ---- CPython's Mersenne Twister ------------------------------------------------------------- */

enum { MT_N = 624, MT_M = 397 };

typedef struct py_mt {
    uint32_t s[MT_N];
    int i;
} py_mt;

static void mt_init_genrand(py_mt *m, uint32_t seed)
{
    m->s[0] = seed;
    for (int i = 1; i < MT_N; i++) m->s[i] = 1812433253u * (m->s[i - 1] ^ (m->s[i - 1] >> 30)) + (uint32_t)i;
    m->i = MT_N;
}

static void mt_init_by_array(py_mt *m, const uint32_t *key, size_t len)
{
    mt_init_genrand(m, 19650218u);
    uint32_t *s = m->s;
    size_t i = 1, j = 0;
    for (size_t k = MT_N > len ? MT_N : len; k; k--) {
        s[i] = (s[i] ^ ((s[i - 1] ^ (s[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++, j++;
        if (i >= MT_N) s[0] = s[MT_N - 1], i = 1;
        if (j >= len) j = 0;
    }
    for (size_t k = MT_N - 1; k; k--) {
        s[i] = (s[i] ^ ((s[i - 1] ^ (s[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) s[0] = s[MT_N - 1], i = 1;
    }
    s[0] = 0x80000000u;
    m->i = MT_N;
}

static uint32_t mt_next(py_mt *m)
{
    static const uint32_t mag01[2] = { 0u, 0x9908b0dfu };
    uint32_t *s = m->s, y;
    if (m->i >= MT_N) {
        int k;
        for (k = 0; k < MT_N - MT_M; k++) {
            y = (s[k] & 0x80000000u) | (s[k + 1] & 0x7fffffffu);
            s[k] = s[k + MT_M] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; k < MT_N - 1; k++) {
            y = (s[k] & 0x80000000u) | (s[k + 1] & 0x7fffffffu);
            s[k] = s[k + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y = (s[MT_N - 1] & 0x80000000u) | (s[0] & 0x7fffffffu);
        s[MT_N - 1] = s[MT_M - 1] ^ (y >> 1) ^ mag01[y & 1u];
        m->i = 0;
    }
    y = s[m->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* random.seed(int): the key is |seed| as little-endian 32-bit words (at least one). */
static void py_seed(py_mt *m, int64_t seed)
{
    uint64_t a = seed < 0 ? (uint64_t)0 - (uint64_t)seed : (uint64_t)seed;
    uint32_t key[2] = { (uint32_t)a, (uint32_t)(a >> 32) };
    mt_init_by_array(m, key, key[1] ? 2 : 1);
}

void sd_py_random_u32(int64_t seed, size_t n, uint32_t *out)
{
    py_mt m;
    py_seed(&m, seed);
    for (size_t i = 0; i < n; i++) out[i] = mt_next(&m);
}

void sd_py_shuffle_perm(int64_t seed, size_t n, size_t *perm)
{
    for (size_t i = 0; i < n; i++) perm[i] = i;
    if (n < 2) return;
    py_mt m;
    py_seed(&m, seed);
    for (size_t i = n - 1; i >= 1; i--) {
        uint64_t lim = (uint64_t)i + 1;   /* _randbelow(i + 1) */
        int k = 0;
        while (k < 64 && (lim >> k)) k++;  /* bit_length */
        uint64_t r;
        do {   /* getrandbits(k): 32-bit words from the least significant, the last one shifted */
            if (k <= 32) {
                r = mt_next(&m) >> (32 - k);
            } else {
                uint64_t lo = mt_next(&m);
                r = (uint64_t)(mt_next(&m) >> (64 - k)) << 32 | lo;
            }
        } while (r >= lim);
        size_t j = (size_t)r, t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void sd_val_split_sizes(int64_t n, double split, int64_t *ntrain, int64_t *nval)
{
    /* separate statements: no contraction into a fused multiply-add (Python rounds each step) */
    volatile double keep = 1.0 - split;
    volatile double a = (double)n * keep;
    volatile double b = (double)n * split;
    double t = ceil(a), v = nearbyint(b);   /* round(): half to even in the default rounding mode */
    if (!(t >= 0)) t = 0;
    if (t > (double)n) t = (double)n;
    if (!(v >= 0)) v = 0;
    if (v > (double)n) v = (double)n;
    *ntrain = (int64_t)t;
    *nval = (int64_t)v;
}

/* ---- the split ------------------------------------------------------------------------------- */

static double eff_split(const sd_train_sample *s, const sd_val_split_opts *o)
{
    if (o->records_resolved) return !isnan(s->validation_split) ? s->validation_split : !isnan(o->split) ? o->split : 0.0;
    return !isnan(o->split) ? o->split : !isnan(s->validation_split) ? s->validation_split : 0.0;
}

static int64_t eff_seed(const sd_train_sample *s, const sd_val_split_opts *o)
{
    if (o->records_resolved) {
        if (s->has_validation_seed) return s->validation_seed;
        if (o->has_seed) return o->seed;
    } else {
        if (o->has_seed) return o->seed;
        if (s->has_validation_seed) return s->validation_seed;
    }
    return (int64_t)o->fallback_seed;
}

static void free_sample(sd_train_sample *s)
{
    free(s->latents);
    free(s->image);
    free(s->caption);
    free(s->tags);
    free(s->mem);
    free(s->mem_flip);
    free(s->mask_mem);
    free(s->cond);
    memset(s, 0, sizeof *s);
}

/* A deep copy for the validation set (encoded latents are not copied: the split runs before
 * encoding; caption option strings are borrowed from the training data's string store, which
 * outlives the run). */
static int copy_sample(const sd_train_sample *s, sd_train_sample *out)
{
    *out = *s;
    out->latents = s->latents ? strdup(s->latents) : NULL;
    out->image = s->image ? strdup(s->image) : NULL;
    out->caption = s->caption ? strdup(s->caption) : NULL;
    out->tags = s->tags ? strdup(s->tags) : NULL;
    out->cond = s->cond ? strdup(s->cond) : NULL;
    out->mem = out->mem_flip = out->mask_mem = NULL;
    if ((s->latents && !out->latents) || (s->image && !out->image) || (s->caption && !out->caption) ||
        (s->tags && !out->tags) || (s->cond && !out->cond)) {
        free_sample(out);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    return SD_OK;
}

static const char *sample_name(const sd_train_sample *s)
{
    const char *p = s->image ? s->image : s->latents ? s->latents : "?";
    return p;
}

int sd_train_split_validation(sd_train_data *d, sd_train_data *val, const sd_val_split_opts *o)
{
    sd_train_data_init(val);
    size_t n = d->n;
    int any = 0;
    for (size_t i = 0; i < n && !any; i++) any = eff_split(&d->s[i], o) != 0.0;
    if (!any) return SD_OK;
    uint8_t *in_train = calloc(n ? n : 1, 1), *in_val = calloc(n ? n : 1, 1), *done = calloc(n ? n : 1, 1);
    size_t *grp = malloc((n ? n : 1) * sizeof *grp), *perm = malloc((n ? n : 1) * sizeof *perm);
    int *warned = calloc((size_t)(d->ndatasets > 0 ? d->ndatasets : 1), sizeof *warned);
    int rc = SD_OK;
    if (!in_train || !in_val || !done || !grp || !perm || !warned) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (done[i]) continue;
        const sd_train_sample *s0 = &d->s[i];
        /* the subset of sample i: same dataset, subset and reg flag, in record order */
        size_t m = 0;
        for (size_t j = i; j < n; j++) {
            const sd_train_sample *s = &d->s[j];
            if (done[j] || s->dataset != s0->dataset || s->subset != s0->subset || !s->is_reg != !s0->is_reg) continue;
            done[j] = 1;
            grp[m++] = j;
        }
        double split = eff_split(s0, o);
        if (split == 0.0 || isnan(split) || split < 0 || split > 1) {
            if (split != 0.0 && !o->records_resolved && s0->dataset >= 0 && s0->dataset < (d->ndatasets > 0 ? d->ndatasets : 1) &&
                !warned[s0->dataset]) {
                warned[s0->dataset] = 1;
                sd_warn("dataset %d: validation_split %g is not a valid number between 0.0 and 1.0, skipping "
                        "validation split", s0->dataset, split);
            }
            for (size_t k = 0; k < m; k++) in_train[grp[k]] = 1;
            continue;
        }
        if (s0->is_reg) {   /* regularisation images: training only */
            for (size_t k = 0; k < m; k++) in_train[grp[k]] = 1;
            continue;
        }
        if (s0->method_ft) {   /* fine-tuning: not split; an identical validation copy */
            for (size_t k = 0; k < m; k++) in_train[grp[k]] = in_val[grp[k]] = 1;
            sd_info("dataset %d: fine-tuning images are not split; validating on a copy of its %zu images",
                    s0->dataset, m);
            continue;
        }
        int64_t seed = eff_seed(s0, o);
        sd_py_shuffle_perm(seed, m, perm);
        int64_t nt, nv;
        sd_val_split_sizes((int64_t)m, split, &nt, &nv);
        for (int64_t k = 0; k < nt; k++) in_train[grp[perm[k]]] = 1;
        for (int64_t k = (int64_t)m - nv; k < (int64_t)m; k++) in_val[grp[perm[k]]] = 1;
        char sub[32] = "";
        if (s0->subset >= 0) snprintf(sub, sizeof sub, " subset %d", s0->subset);
        sd_info("dataset %d%s: %zu images split %g with seed %lld: %lld training, %lld validation", s0->dataset, sub, m,
                split, (long long)seed, (long long)nt, (long long)nv);
    }
    /* rebuild: training samples stay in d (order kept), validation samples go to val */
    size_t ntr = 0, nva = 0;
    for (size_t i = 0; i < n; i++) ntr += in_train[i] && !d->s[i].is_reg, nva += in_val[i];
    if (!ntr) {
        rc = sd_err(SD_EINVAL, "the validation split leaves no training images");
        goto out;
    }
    if (nva) {
        val->s = calloc(nva, sizeof *val->s);
        if (!val->s) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            goto out;
        }
        val->cap = nva;
        for (size_t i = 0; i < n && !rc; i++) {
            if (!in_val[i]) continue;
            sd_train_sample *dst = &val->s[val->n];
            if (in_train[i]) {
                rc = copy_sample(&d->s[i], dst);
                if (rc) break;
            } else {
                *dst = d->s[i];
                memset(&d->s[i], 0, sizeof d->s[i]);
            }
            if (!dst->method_ft) dst->num_repeats = 1;
            if (dst->dataset + 1 > val->ndatasets) val->ndatasets = dst->dataset + 1;
            val->n++;
        }
        if (rc) goto out;   /* d and val both stay freeable */
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_train[i]) {
            if (k != i) d->s[k] = d->s[i];
            k++;
        } else if (!in_val[i]) {
            sd_debug("%s: in neither set", sample_name(&d->s[i]));
            free_sample(&d->s[i]);
        }
    }
    d->n = k;
out:
    free(in_train), free(in_val), free(done), free(grp), free(perm), free(warned);
    return rc;
}

/* ---- the pass -------------------------------------------------------------------------------- */

void sd_val_timesteps(int lo, int hi, int t[SD_VAL_NUM_TIMESTEPS])
{
    /* numpy.linspace(lo, hi, 6, dtype=int)[1:-1]: y = k·step + lo in float64, floored */
    double step = (double)(hi - lo) / (double)(SD_VAL_NUM_TIMESTEPS + 1);
    for (int k = 1; k <= SD_VAL_NUM_TIMESTEPS; k++) {
        volatile double y = (double)k * step;
        y += (double)lo;
        if (step == 0) y = lo;
        t[k - 1] = (int)floor(y);
    }
}

int sd_val_runner_init(sd_val_runner *v, const sd_train_data *val, uint64_t seed, int64_t max_steps,
                       int every_n_steps, int every_n_epochs, int min_t, int max_t)
{
    memset(v, 0, sizeof *v);
    v->last = NAN;
    v->every_n_steps = every_n_steps;
    v->every_n_epochs = every_n_epochs;
    sd_val_timesteps(min_t, max_t, v->t);
    sd_loss_recorder_init(&v->step_rec);
    sd_loss_recorder_init(&v->epoch_rec);
    if (!val || !val->n) return SD_OK;
    sd_batch_item *items = calloc(val->n, sizeof *items);
    if (!items) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < val->n; i++) {
        const sd_train_sample *s = &val->s[i];
        items[i].dataset = s->dataset;
        items[i].bucket_w = s->bucket_w;
        items[i].bucket_h = s->bucket_h;
        items[i].is_reg = 0;
        items[i].num_repeats = s->num_repeats;
        items[i].batch_size = s->batch_size;
    }
    int rc = sd_batch_plan_init(&v->plan, items, val->n, seed);
    free(items);
    if (rc) return sd_err_prefix(rc, "validation set");
    v->have_plan = 1;
    rc = sd_batch_plan_epoch(&v->plan, 0);
    if (rc) return rc;
    v->nbatches = v->plan.nbatches;
    v->steps = max_steps >= 0 && max_steps < v->nbatches ? max_steps : v->nbatches;
    return SD_OK;
}

void sd_val_runner_free(sd_val_runner *v)
{
    if (v->have_plan) sd_batch_plan_free(&v->plan);
    sd_loss_recorder_free(&v->step_rec);
    sd_loss_recorder_free(&v->epoch_rec);
    memset(v, 0, sizeof *v);
}

int sd_val_due_step(const sd_val_runner *v, int64_t global_step)
{
    return v->steps > 0 && v->every_n_steps > 0 && global_step % v->every_n_steps == 0;
}

int sd_val_due_epoch(const sd_val_runner *v, int64_t epoch)
{
    return v->steps > 0 && (v->every_n_epochs > 0 ? (epoch + 1) % v->every_n_epochs == 0 : 1);
}

int sd_val_pass(sd_val_runner *v, int is_epoch, int64_t epoch, sd_val_batch_fn fn, void *user,
                volatile sig_atomic_t *stop, double *avg)
{
    *avg = NAN;
    if (v->steps <= 0) return SD_OK;
    size_t total = (size_t)v->steps * SD_VAL_NUM_TIMESTEPS;
    double *losses = malloc(total * sizeof *losses);
    if (!losses) return sd_err(SD_ENOMEM, "out of memory");
    int rc = SD_OK;
    for (int64_t vb = 0; vb < v->steps && !rc; vb++) {
        if (stop && *stop) {
            rc = SD_EINTR;
            break;
        }
        const sd_batch_bucket *bk;
        const int64_t *idx;
        int B;
        rc = sd_batch_get(&v->plan, vb, &bk, &idx, &B);
        if (!rc) rc = fn(user, bk, idx, B, (uint32_t)vb, v->t, SD_VAL_NUM_TIMESTEPS, losses + vb * SD_VAL_NUM_TIMESTEPS);
    }
    sd_loss_recorder *r = is_epoch ? &v->epoch_rec : &v->step_rec;
    for (size_t k = 0; k < total && !rc; k++) rc = sd_loss_recorder_add(r, epoch, (int64_t)k, losses[k]);
    free(losses);
    if (rc) return rc;
    *avg = v->last = sd_loss_recorder_average(r);
    return SD_OK;
}
