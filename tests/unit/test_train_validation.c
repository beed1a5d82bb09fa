/* Validation split and passes (train/validation.h; reference-behaviour §1.8, §6.14). Golden values
 * from CPython 3.11 (random.seed / getrandbits / shuffle, math.ceil / round) and numpy 1.24
 * (linspace(dtype=int)), computed once with /usr/bin/python3. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jv.h>

#include "base/error.h"
#include "data/dataset_config.h"
#include "test.h"
#include "train/loop.h"
#include "train/validation.h"

static void test_py_random(void)
{
    uint32_t u[3];
    sd_py_random_u32(3, 3, u);   /* random.seed(3); [random.getrandbits(32) for _ in range(3)] */
    T_EQ_INT(u[0], 1022050301u);
    T_EQ_INT(u[1], 2545373330u);
    T_EQ_INT(u[2], 2337446730u);
    /* random.seed(s); l = list(range(10)); random.shuffle(l) */
    static const struct { int64_t seed; size_t p[10]; } g[] = {
        { 0, { 7, 8, 1, 5, 3, 4, 2, 0, 9, 6 } },
        { 1, { 6, 8, 9, 7, 5, 3, 0, 4, 1, 2 } },
        { 42, { 7, 3, 2, 8, 5, 6, 9, 4, 0, 1 } },
        { 12345, { 8, 7, 3, 5, 1, 2, 9, 4, 0, 6 } },
        { 4294967303LL, { 2, 1, 4, 7, 9, 0, 6, 8, 5, 3 } },          /* two key words */
        { -5, { 2, 3, 1, 0, 8, 7, 6, 5, 4, 9 } },                   /* |seed| */
        { INT64_MAX, { 4, 1, 9, 8, 6, 0, 3, 7, 2, 5 } },
    };
    for (size_t k = 0; k < sizeof g / sizeof *g; k++) {
        size_t p[10];
        sd_py_shuffle_perm(g[k].seed, 10, p);
        T_CHECKF(!memcmp(p, g[k].p, sizeof p), "seed %lld", (long long)g[k].seed);
    }
    /* a long list: many rejections and all bit lengths up to 10 */
    size_t *p = malloc(1000 * sizeof *p);
    sd_py_shuffle_perm(42, 1000, p);
    static const size_t first[8] = { 776, 507, 895, 922, 33, 483, 85, 750 };
    T_CHECK(!memcmp(p, first, sizeof first));
    long long ws = 0;
    for (size_t i = 0; i < 1000; i++) ws += (long long)(i * p[i]);
    T_EQ_INT(ws, 250181598);
    free(p);
    size_t one = 99;
    sd_py_shuffle_perm(1, 1, &one);
    T_EQ_INT(one, 0);
}

static void test_split_sizes(void)
{
    /* (n, split) → ceil(n·(1−split)), round(n·split) as Python computes them */
    static const struct { int64_t n; double s; int64_t t, v; } g[] = {
        { 10, 0.3, 7, 3 },   { 10, 0.25, 8, 2 },  { 4, 0.125, 4, 0 }, { 2, 0.25, 2, 0 },
        { 6, 0.25, 5, 2 },   /* round(1.5) = 2, ceil(4.5) = 5: one image in both sets */
        { 10, 0.05, 10, 0 }, { 3, 0.5, 2, 2 },    { 5, 0.5, 3, 2 },   /* round(2.5) = 2 (half to even) */
        { 7, 0.5, 4, 4 },    { 1, 0.5, 1, 0 },    { 10, 0.15, 9, 2 }, { 20, 0.35, 13, 7 },
        { 8, 0.25, 6, 2 },   { 100, 0.07, 93, 7 },
        { 10, 0.7, 4, 7 },   /* 10·(1−0.7) = 3.0000000000000004: ceil 4, overlap by float rounding */
        { 20, 0.95, 2, 19 }, { 25, 0.44, 15, 11 }, { 10, 1.0, 0, 10 }, { 10, 0.0, 10, 0 },
    };
    for (size_t k = 0; k < sizeof g / sizeof *g; k++) {
        int64_t t, v;
        sd_val_split_sizes(g[k].n, g[k].s, &t, &v);
        T_CHECKF(t == g[k].t && v == g[k].v, "n %lld split %g: %lld %lld", (long long)g[k].n, g[k].s, (long long)t,
                 (long long)v);
    }
}

static void test_timesteps(void)
{
    static const struct { int lo, hi, t[4]; } g[] = {
        { 0, 1000, { 200, 400, 600, 800 } }, { 0, 999, { 199, 399, 599, 799 } }, { 100, 900, { 260, 420, 580, 740 } },
        { 500, 500, { 500, 500, 500, 500 } }, { 0, 1, { 0, 0, 0, 0 } },        { 3, 17, { 5, 8, 11, 14 } },
        { 1, 1000, { 200, 400, 600, 800 } }, { 0, 7, { 1, 2, 4, 5 } },
    };
    for (size_t k = 0; k < sizeof g / sizeof *g; k++) {
        int t[4];
        sd_val_timesteps(g[k].lo, g[k].hi, t);
        T_CHECKF(!memcmp(t, g[k].t, sizeof t), "%d..%d: %d %d %d %d", g[k].lo, g[k].hi, t[0], t[1], t[2], t[3]);
    }
}

/* ---- the split on records ---------------------------------------------------------------------- */

static sd_train_config cfg;

static int add(sd_train_data *d, const char *json)
{
    jv rec = jv_parse(json);
    if (!jv_is_valid(rec)) return -1;
    int rc = sd_train_data_add_record(d, &cfg, rec);
    jv_free(rec);
    return rc;
}

/* n DreamBooth records "<tag><i>" of (dataset, subset) with repeats, reg flag and extra keys */
static void add_subset(sd_train_data *d, const char *tag, int n, int dataset, int subset, int repeats, int reg,
                       const char *extra)
{
    for (int i = 0; i < n; i++) {
        char b[512];
        snprintf(b, sizeof b,
                 "{\"latents\":\"%s%d.npz\",\"caption\":\"c\",\"dataset\":%d,\"subset\":%d,\"num_repeats\":%d,"
                 "\"is_reg\":%s,\"bucket\":[64,64]%s%s}",
                 tag, i, dataset, subset, repeats, reg ? "true" : "false", extra && *extra ? "," : "", extra ? extra : "");
        T_EQ_INT(add(d, b), 0);
    }
}

/* the sorted record numbers of samples whose latents start with tag, as "a,b,c" */
static const char *ids(const sd_train_data *d, const char *tag)
{
    static char out[1024];
    int have[1000] = { 0 };
    size_t L = strlen(tag);
    for (size_t i = 0; i < d->n; i++)
        if (!strncmp(d->s[i].latents, tag, L) && d->s[i].latents[L] >= '0' && d->s[i].latents[L] <= '9')
            have[atoi(d->s[i].latents + L)]++;
    out[0] = 0;
    for (int k = 0; k < 1000; k++)
        for (int r = 0; r < have[k]; r++) snprintf(out + strlen(out), sizeof out - strlen(out), "%s%d", *out ? "," : "", k);
    return out;
}

static sd_val_split_opts opts(double split, int has_seed, int64_t seed, int resolved)
{
    sd_val_split_opts o = { .split = split, .has_seed = has_seed, .seed = seed, .fallback_seed = 3,
                            .records_resolved = resolved };
    return o;
}

static void test_split_dreambooth(void)
{
    sd_train_data d, v;
    sd_train_data_init(&d);
    add_subset(&d, "a", 10, 0, 0, 3, 0, NULL);
    add_subset(&d, "r", 4, 0, 1, 2, 1, NULL);
    sd_val_split_opts o = opts(0.3, 1, 42, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    /* random.seed(42) shuffle of 10: [7,3,2,8,5,6,9,4,0,1]: training the first 7, validation the last 3 */
    T_EQ_STR(ids(&d, "a"), "2,3,5,6,7,8,9");
    T_EQ_STR(ids(&v, "a"), "0,1,4");
    T_EQ_STR(ids(&d, "r"), "0,1,2,3");   /* regularisation images: all in training */
    T_EQ_STR(ids(&v, "r"), "");           /* and none in validation */
    T_EQ_INT(d.n, 11);
    T_EQ_INT(v.n, 3);
    int order_kept = 1;
    for (size_t i = 1; i < d.n; i++)
        if (d.s[i].subset == d.s[i - 1].subset && strcmp(d.s[i].latents, d.s[i - 1].latents) < 0) order_kept = 0;
    T_CHECK(order_kept);
    for (size_t i = 0; i < d.n; i++) T_EQ_INT(d.s[i].num_repeats, d.s[i].is_reg ? 2 : 3);
    for (size_t i = 0; i < v.n; i++) T_EQ_INT(v.s[i].num_repeats, 1);   /* repeats 1 in validation */
    T_EQ_INT(v.ndatasets, 1);
    sd_train_data_free(&d);
    sd_train_data_free(&v);

    /* deterministic by seed; another seed, another set */
    char a1[256], a2[256], a3[256];
    for (int k = 0; k < 3; k++) {
        sd_train_data_init(&d);
        add_subset(&d, "a", 20, 0, 0, 1, 0, NULL);
        o = opts(0.25, 1, k == 2 ? 7 : 1234, 0);
        T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
        T_EQ_INT(d.n, 15);
        T_EQ_INT(v.n, 5);
        snprintf(k == 0 ? a1 : k == 1 ? a2 : a3, 256, "%s", ids(&v, "a"));
        sd_train_data_free(&d);
        sd_train_data_free(&v);
    }
    T_EQ_STR(a1, a2);
    T_CHECK(strcmp(a1, a3) != 0);

    /* each subset is shuffled on its own with the same seed; without --validation_seed, --seed */
    sd_train_data_init(&d);
    add_subset(&d, "a", 10, 0, 0, 1, 0, NULL);
    add_subset(&d, "b", 10, 0, 2, 1, 0, NULL);
    o = opts(0.3, 0, 0, 0);
    o.fallback_seed = 42;
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_STR(ids(&v, "a"), "0,1,4");
    T_EQ_STR(ids(&v, "b"), "0,1,4");
    sd_train_data_free(&d);
    sd_train_data_free(&v);
}

static void test_split_overlap(void)
{
    /* n = 6, split 0.25: ceil(4.5) = 5 training, round(1.5) = 2 validation → one image in both */
    sd_train_data d, v;
    sd_train_data_init(&d);
    add_subset(&d, "a", 6, 0, 0, 2, 0, NULL);
    sd_val_split_opts o = opts(0.25, 1, 0, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_INT(d.n, 5);
    T_EQ_INT(v.n, 2);
    /* random.seed(0) shuffle of 6 */
    size_t p[6];
    sd_py_shuffle_perm(0, 6, p);
    int both = 0;
    for (size_t i = 0; i < v.n; i++)
        for (size_t j = 0; j < d.n; j++)
            if (!strcmp(v.s[i].latents, d.s[j].latents)) {
                both++;
                T_CHECK(v.s[i].latents != d.s[j].latents);   /* a copy, owned by each set */
                T_EQ_INT(v.s[i].num_repeats, 1);
                T_EQ_INT(d.s[j].num_repeats, 2);
            }
    T_EQ_INT(both, 1);
    char want[32];
    snprintf(want, sizeof want, "a%zu.npz", p[4]);   /* the shared image: index 4 of the permutation */
    int found = 0;
    for (size_t i = 0; i < v.n; i++) found |= !strcmp(v.s[i].latents, want);
    T_CHECK(found);
    sd_train_data_free(&d);
    sd_train_data_free(&v);

    /* too few images: round(2·0.25) = 0 → no validation image, training unchanged */
    sd_train_data_init(&d);
    add_subset(&d, "a", 2, 0, 0, 1, 0, NULL);
    o = opts(0.25, 1, 0, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_INT(d.n, 2);
    T_EQ_INT(v.n, 0);
    sd_train_data_free(&d);
    sd_train_data_free(&v);
}

static void test_split_sources(void)
{
    sd_train_data d, v;
    /* records of a dataset config carry the resolved values: they win over the command line */
    sd_train_data_init(&d);
    add_subset(&d, "a", 10, 0, 0, 1, 0, "\"validation_split\":0.3,\"validation_seed\":42");
    add_subset(&d, "b", 10, 1, 0, 1, 0, "\"validation_split\":0");
    sd_val_split_opts o = opts(0.5, 1, 1, 1);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_STR(ids(&v, "a"), "0,1,4");
    T_EQ_STR(ids(&v, "b"), "");   /* dataset 1: split 0 */
    T_EQ_INT(d.n, 17);
    sd_train_data_free(&d);
    sd_train_data_free(&v);
    /* records of --data: the command line wins, the records' keys are the fallback */
    sd_train_data_init(&d);
    add_subset(&d, "a", 10, 0, 0, 1, 0, "\"validation_split\":0.5,\"validation_seed\":1");
    o = opts(0.3, 1, 42, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_STR(ids(&v, "a"), "0,1,4");
    sd_train_data_free(&d);
    sd_train_data_free(&v);
    sd_train_data_init(&d);
    add_subset(&d, "a", 10, 0, 0, 1, 0, "\"validation_split\":0.3,\"validation_seed\":42");
    o = opts(NAN, 0, 0, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_STR(ids(&v, "a"), "0,1,4");
    sd_train_data_free(&d);
    sd_train_data_free(&v);
    /* nothing asked: untouched */
    sd_train_data_init(&d);
    add_subset(&d, "a", 10, 0, 0, 1, 0, NULL);
    o = opts(NAN, 0, 0, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_INT(d.n, 10);
    T_EQ_INT(v.n, 0);
    sd_train_data_free(&d);
    sd_train_data_free(&v);
    /* outside [0, 1]: no validation set, training unsplit (a warning) */
    sd_train_data_init(&d);
    add_subset(&d, "a", 10, 0, 0, 1, 0, "\"validation_split\":1.5");
    o = opts(NAN, 0, 0, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_INT(d.n, 10);
    T_EQ_INT(v.n, 0);
    sd_train_data_free(&d);
    sd_train_data_free(&v);
    /* split 1: no training image left (regularisation images alone do not count) */
    sd_train_data_init(&d);
    add_subset(&d, "a", 4, 0, 0, 1, 0, NULL);
    add_subset(&d, "r", 2, 0, 1, 1, 1, NULL);
    o = opts(1.0, 0, 0, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "no training images") != NULL);
    sd_train_data_free(&d);
    sd_train_data_free(&v);
    /* split 1 of one subset, another dataset unsplit: fine */
    sd_train_data_init(&d);
    add_subset(&d, "a", 4, 0, 0, 1, 0, "\"validation_split\":1.0");
    add_subset(&d, "b", 3, 1, 0, 1, 0, NULL);
    o = opts(NAN, 0, 0, 1);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_STR(ids(&d, "a"), "");
    T_EQ_STR(ids(&v, "a"), "0,1,2,3");
    T_EQ_STR(ids(&d, "b"), "0,1,2");
    sd_train_data_free(&d);
    sd_train_data_free(&v);
}

static void test_split_finetune(void)
{
    /* fine-tuning datasets are not split: the validation set is a copy with its repeats */
    sd_train_data d, v;
    sd_train_data_init(&d);
    add_subset(&d, "f", 5, 0, 0, 2, 0, "\"method\":\"fine_tuning\"");
    add_subset(&d, "a", 10, 1, 0, 3, 0, "\"method\":\"dreambooth\"");
    sd_val_split_opts o = opts(0.3, 1, 42, 0);
    T_EQ_INT(sd_train_split_validation(&d, &v, &o), 0);
    T_EQ_STR(ids(&d, "f"), "0,1,2,3,4");
    T_EQ_STR(ids(&v, "f"), "0,1,2,3,4");
    T_EQ_STR(ids(&v, "a"), "0,1,4");
    for (size_t i = 0; i < v.n; i++) T_EQ_INT(v.s[i].num_repeats, v.s[i].method_ft ? 2 : 1);
    T_EQ_INT(v.ndatasets, 2);
    sd_train_data_free(&d);
    sd_train_data_free(&v);
}

/* ---- passes ---------------------------------------------------------------------------------- */

typedef struct fake {
    int calls;
    double base;
    int seen_t[4];
} fake;

static int fake_batch(void *user, const sd_batch_bucket *bk, const int64_t *idx, int B, uint32_t vb, const int *t,
                      int nt, double *losses)
{
    fake *f = user;
    f->calls++;
    for (int k = 0; k < nt; k++) {
        losses[k] = f->base + vb + k * 0.25;
        f->seen_t[k] = t[k];
    }
    (void)bk, (void)idx, (void)B;
    return SD_OK;
}

static void test_pass(void)
{
    sd_train_data v;
    sd_train_data_init(&v);
    add_subset(&v, "a", 5, 0, 0, 1, 0, NULL);
    for (size_t i = 0; i < v.n; i++) v.s[i].batch_size = 2;   /* 3 batches: 2 + 2 + 1 */
    sd_val_runner r;
    T_EQ_INT(sd_val_runner_init(&r, &v, 9, -1, 2, 0, 0, 1000), 0);
    T_EQ_INT(r.nbatches, 3);
    T_EQ_INT(r.steps, 3);
    T_EQ_INT(r.plan.num_train_images, 5);
    T_CHECK(sd_val_due_step(&r, 4) && !sd_val_due_step(&r, 3));
    T_CHECK(sd_val_due_epoch(&r, 0) && sd_val_due_epoch(&r, 5));
    fake f = { 0, 1.0, { 0 } };
    double avg;
    T_EQ_INT(sd_val_pass(&r, 0, 0, fake_batch, &f, NULL, &avg), 0);
    T_EQ_INT(f.calls, 3);
    T_CHECK(f.seen_t[0] == 200 && f.seen_t[3] == 800);
    /* losses 1 + vb + k/4 over vb 0..2, k 0..3: mean 2.375 */
    T_NEAR(avg, 2.375, 1e-12);
    /* epoch 0: the step recorder appends, so a second pass averages over both */
    f.base = 3.0;
    T_EQ_INT(sd_val_pass(&r, 0, 0, fake_batch, &f, NULL, &avg), 0);
    T_NEAR(avg, (2.375 + 4.375) / 2, 1e-12);
    T_EQ_INT(r.step_rec.n, 24);
    /* later epochs replace by index: the first 12 entries become the new pass */
    f.base = 5.0;
    T_EQ_INT(sd_val_pass(&r, 0, 1, fake_batch, &f, NULL, &avg), 0);
    T_NEAR(avg, (6.375 + 4.375) / 2, 1e-12);
    /* the epoch recorder is separate */
    T_EQ_INT(sd_val_pass(&r, 1, 1, fake_batch, &f, NULL, &avg), 0);
    T_NEAR(avg, 6.375, 1e-12);
    /* a stop request abandons the pass without recording */
    volatile sig_atomic_t stop = 1;
    size_t before = r.epoch_rec.n;
    T_EQ_INT(sd_val_pass(&r, 1, 1, fake_batch, &f, &stop, &avg), SD_EINTR);
    T_EQ_INT(r.epoch_rec.n, before);
    sd_val_runner_free(&r);
    /* max_validation_steps, every_n_epochs, custom timestep range */
    T_EQ_INT(sd_val_runner_init(&r, &v, 9, 2, 0, 3, 100, 900), 0);
    T_EQ_INT(r.steps, 2);
    T_CHECK(!sd_val_due_step(&r, 4));
    T_CHECK(!sd_val_due_epoch(&r, 0) && sd_val_due_epoch(&r, 2) && !sd_val_due_epoch(&r, 3));
    f.calls = 0;
    T_EQ_INT(sd_val_pass(&r, 1, 0, fake_batch, &f, NULL, &avg), 0);
    T_EQ_INT(f.calls, 2);
    T_CHECK(f.seen_t[0] == 260 && f.seen_t[3] == 740);
    sd_val_runner_free(&r);
    /* max_validation_steps 0: never due */
    T_EQ_INT(sd_val_runner_init(&r, &v, 9, 0, 1, 0, 0, 1000), 0);
    T_CHECK(!sd_val_due_step(&r, 1) && !sd_val_due_epoch(&r, 0));
    sd_val_runner_free(&r);
    /* the batch order is a fixed function of the seed */
    sd_val_runner r2;
    T_EQ_INT(sd_val_runner_init(&r, &v, 9, -1, 0, 0, 0, 1000), 0);
    T_EQ_INT(sd_val_runner_init(&r2, &v, 9, -1, 0, 0, 0, 1000), 0);
    int same = 1;
    for (int64_t b = 0; b < r.nbatches; b++) {
        const sd_batch_bucket *b1, *b2;
        const int64_t *i1, *i2;
        int n1, n2;
        sd_batch_get(&r.plan, b, &b1, &i1, &n1);
        sd_batch_get(&r2.plan, b, &b2, &i2, &n2);
        same &= n1 == n2 && !memcmp(i1, i2, (size_t)n1 * sizeof *i1);
    }
    T_CHECK(same);
    sd_val_runner_free(&r);
    sd_val_runner_free(&r2);
    /* an empty validation set: no plan, never due */
    sd_train_data e;
    sd_train_data_init(&e);
    T_EQ_INT(sd_val_runner_init(&r, &e, 9, -1, 1, 1, 0, 1000), 0);
    T_CHECK(!r.have_plan && !sd_val_due_step(&r, 1) && !sd_val_due_epoch(&r, 0));
    sd_val_runner_free(&r);
    sd_train_data_free(&v);
}

/* ---- dataset config: validation_split is a dataset-level key ------------------------------------ */

static void test_dataset_config_keys(void)
{
    const char *p = t_path("val_cfg.toml");
    sd_dataset_config c;
    static const char ok_toml[] = "[general]\nvalidation_seed = 5\n[[datasets]]\nresolution = 64\n"
                                  "validation_split = 0.25\n[[datasets.subsets]]\nimage_dir = \"x\"\n";
    T_EQ_INT(t_write_file(p, ok_toml, strlen(ok_toml)), 0);
    T_EQ_INT(sd_dataset_config_load(p, jv_null(), 0, &c), 0);
    if (c.ndatasets == 1) {
        jv s = jv_object_get(jv_copy(c.datasets[0].params), jv_string("validation_split"));
        jv e = jv_object_get(jv_copy(c.datasets[0].params), jv_string("validation_seed"));
        T_CHECK(jv_get_kind(s) == JV_KIND_NUMBER && jv_number_value(s) == 0.25);
        T_CHECK(jv_get_kind(e) == JV_KIND_NUMBER && jv_number_value(e) == 5);
        jv_free(s), jv_free(e);
    }
    T_EQ_INT(c.nwarnings, 0);
    sd_dataset_config_free(&c);
    /* the command line is the fallback */
    static const char cli_toml[] = "[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = \"x\"\n";
    T_EQ_INT(t_write_file(p, cli_toml, strlen(cli_toml)), 0);
    jv cli = jv_object_set(jv_object_set(jv_object(), jv_string("validation_split"), jv_number(0.5)),
                           jv_string("validation_seed"), jv_number(7));
    T_EQ_INT(sd_dataset_config_load(p, cli, 0, &c), 0);
    jv_free(cli);
    if (c.ndatasets == 1) {
        jv s = jv_object_get(jv_copy(c.datasets[0].params), jv_string("validation_split"));
        T_CHECK(jv_get_kind(s) == JV_KIND_NUMBER && jv_number_value(s) == 0.5);
        jv_free(s);
    }
    sd_dataset_config_free(&c);
    /* a subset-level validation_split is rejected (the reference's schema) */
    static const char sub_toml[] = "[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = \"x\"\n"
                                   "validation_split = 0.2\n";
    T_EQ_INT(t_write_file(p, sub_toml, strlen(sub_toml)), 0);
    T_EQ_INT(sd_dataset_config_load(p, jv_null(), 0, &c), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "validation_split") != NULL);
    sd_dataset_config_free(&c);
    /* outside [0, 1]: a warning, no validation set */
    static const char bad_toml[] = "[[datasets]]\nresolution = 64\nvalidation_split = 1.5\n[[datasets.subsets]]\n"
                                   "image_dir = \"x\"\n";
    T_EQ_INT(t_write_file(p, bad_toml, strlen(bad_toml)), 0);
    T_EQ_INT(sd_dataset_config_load(p, jv_null(), 0, &c), 0);
    T_EQ_INT(c.nwarnings, 1);
    T_CHECK(c.nwarnings == 1 && strstr(c.warnings[0], "validation_split 1.5") != NULL);
    sd_dataset_config_free(&c);
}

int main(void)
{
    sd_train_config_default(&cfg);
    T_RUN(test_py_random);
    T_RUN(test_split_sizes);
    T_RUN(test_timesteps);
    T_RUN(test_split_dreambooth);
    T_RUN(test_split_overlap);
    T_RUN(test_split_sources);
    T_RUN(test_split_finetune);
    T_RUN(test_pass);
    T_RUN(test_dataset_config_keys);
    T_DONE();
}
