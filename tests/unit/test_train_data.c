/* Caption processing (text/caption.h, reference-behaviour §3.1, §3.4) and batch planning
 * (train/batch.h, §1.7, §2.7). */
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "test.h"
#include "text/caption.h"
#include "train/batch.h"

static char *proc(const sd_caption_opts *o, const char *cap, int64_t epoch, int64_t step, uint32_t stream)
{
    sd_rng r = sd_rng_key(5, stream, 0, SD_RNG_CAPTION);
    char *out = NULL;
    if (sd_caption_process(o, cap, epoch, step, &r, &out)) return NULL;
    return out;
}

static void test_caption_plain(void)
{
    sd_caption_opts o;
    sd_caption_opts_default(&o);
    char *s = proc(&o, "a, b ,c\nsecond line", 1, 0, 0);
    T_EQ_STR(s, "a, b ,c");   /* first line only; nothing split without shuffle/dropout/warm-up */
    free(s);
    o.prefix = "sks,";
    o.suffix = "end";
    s = proc(&o, "x", 1, 0, 0);
    T_EQ_STR(s, "sks, x end");
    free(s);
    /* keep_tokens_separator stays literal when nothing splits (HEAD quirk) */
    sd_caption_opts_default(&o);
    o.keep_tokens_separator = "|||";
    s = proc(&o, "a ||| b", 1, 0, 0);
    T_EQ_STR(s, "a ||| b");
    free(s);
}

static void test_caption_shuffle_keep(void)
{
    sd_caption_opts o;
    sd_caption_opts_default(&o);
    o.shuffle = 1;
    o.keep_tokens = 2;
    /* the spec's worked example without tag dropout */
    o.prefix = "sks,";
    o.secondary_separator = ";;;";
    int seen_other_order = 0;
    for (uint32_t k = 0; k < 20; k++) {
        char *s = proc(&o, "1girl, red hair, sky;;;cloud, smile", 1, 0, k);
        T_CHECK(s && !strncmp(s, "sks, 1girl, ", 12));
        /* all tags present, the secondary separator replaced after shuffling */
        T_CHECK(s && strstr(s, "red hair") && strstr(s, "sky,cloud") && strstr(s, "smile"));
        if (s && strcmp(s, "sks, 1girl, red hair, sky,cloud, smile")) seen_other_order = 1;
        free(s);
    }
    T_CHECK(seen_other_order);
    /* same stream, same result */
    char *a = proc(&o, "a, b, c, d, e", 1, 0, 3), *b = proc(&o, "a, b, c, d, e", 1, 0, 3);
    T_EQ_STR(a, b);
    free(a), free(b);
    /* keep_tokens_separator: fixed | flex | fixed suffix */
    sd_caption_opts_default(&o);
    o.shuffle = 1;
    o.keep_tokens_separator = "|||";
    for (uint32_t k = 0; k < 10; k++) {
        char *s = proc(&o, "a, b ||| c, d, e ||| f", 1, 0, k);
        T_CHECK(s && !strncmp(s, "a, b, ", 6) && strlen(s) == strlen("a, b, c, d, e, f") &&
                !strcmp(s + strlen(s) - 3, ", f"));
        free(s);
    }
}

static void test_caption_dropout(void)
{
    sd_caption_opts o;
    sd_caption_opts_default(&o);
    o.dropout_every_n_epochs = 2;
    char *s = proc(&o, "abc", 2, 0, 0);
    T_EQ_STR(s, "");
    free(s);
    s = proc(&o, "abc", 3, 0, 0);
    T_EQ_STR(s, "abc");
    free(s);
    sd_caption_opts_default(&o);
    o.dropout_rate = 0.5;
    int empty = 0;
    for (uint32_t k = 0; k < 200; k++) {
        s = proc(&o, "abc", 1, 0, k);
        empty += s && !*s;
        free(s);
    }
    T_CHECKF(empty > 70 && empty < 130, "%d of 200 dropped", empty);
    sd_caption_opts_default(&o);
    o.tag_dropout_rate = 1.0;
    o.keep_tokens = 1;
    s = proc(&o, "keep, x, y", 1, 0, 0);
    T_EQ_STR(s, "keep");
    free(s);
}

static void test_caption_wildcard_warmup(void)
{
    sd_caption_opts o;
    sd_caption_opts_default(&o);
    o.enable_wildcard = 1;
    int seen[2] = { 0, 0 };
    for (uint32_t k = 0; k < 40; k++) {
        char *s = proc(&o, "a {red|blue} {{x}}", 1, 0, k);
        T_CHECK(s && (!strcmp(s, "a red {x}") || !strcmp(s, "a blue {x}")));
        if (s) seen[!strcmp(s, "a blue {x}")] = 1;
        free(s);
    }
    T_CHECK(seen[0] && seen[1]);
    char *s = proc(&o, "line one\nline two", 1, 0, 0);
    T_CHECK(s && (!strcmp(s, "line one") || !strcmp(s, "line two")));
    free(s);
    /* token warm-up: floor(step·(n−min)/W) + min flex tokens */
    sd_caption_opts_default(&o);
    o.token_warmup_step = 10;
    o.token_warmup_min = 1;
    s = proc(&o, "a, b, c, d, e", 1, 0, 0);
    T_EQ_STR(s, "a");
    free(s);
    s = proc(&o, "a, b, c, d, e", 1, 5, 0);
    T_EQ_STR(s, "a, b, c");
    free(s);
    s = proc(&o, "a, b, c, d, e", 1, 10, 0);
    T_EQ_STR(s, "a, b, c, d, e");
    free(s);
}

static void test_weighted(void)
{
    sd_weighted_piece *p;
    int n;
    T_EQ_INT(sd_weighted_parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", &p, &n), 0);
    static const float want[] = { 1.0f, 1.573f, 1.1f, 1.0f, 1.1f, 0.55f, 1.1f, 1.4641f, 1.1f };
    T_EQ_INT(n, 9);
    for (int i = 0; i < n && i < 9; i++) T_NEAR(p[i].weight, want[i], 1e-5);
    if (n >= 2) T_EQ_STR(p[1].text, "house");
    sd_weighted_free(p, n);
    T_EQ_INT(sd_weighted_parse("", &p, &n), 0);
    T_EQ_INT(n, 1);
    T_EQ_STR(p[0].text, "");
    sd_weighted_free(p, n);
    T_EQ_INT(sd_weighted_parse("\\(x\\) [y", &p, &n), 0);
    T_EQ_INT(n, 2);
    T_EQ_STR(p[0].text, "(x) ");
    T_NEAR(p[1].weight, 1 / 1.1, 1e-6);
    sd_weighted_free(p, n);
}

static void test_batch_plan(void)
{
    /* dataset 0: 3 images (2 in a 64x64 bucket with repeats 2, 1 in 128x64 with repeats 3), batch 2;
     * dataset 1: 1 training image (repeats 4) + 3 reg images (repeats 3 each), batch 1 */
    sd_batch_item it[] = {
        { 0, 64, 64, 0, 2, 2 }, { 0, 64, 64, 0, 2, 2 }, { 0, 128, 64, 0, 3, 2 },
        { 1, 64, 64, 0, 4, 1 }, { 1, 64, 64, 1, 3, 1 }, { 1, 64, 64, 1, 3, 1 }, { 1, 64, 64, 1, 3, 1 },
    };
    sd_batch_plan p;
    T_EQ_INT(sd_batch_plan_init(&p, it, 7, 9), 0);
    T_EQ_INT(p.nbuckets, 3);
    T_EQ_INT(p.num_train_images, 4 + 3 + 4);
    /* reg balancing to the 4 training entries of dataset 1: 3 + 3 ≥ 4 → the third is never used */
    T_EQ_INT(p.balanced[4], 3);
    T_EQ_INT(p.balanced[5], 3);
    T_EQ_INT(p.balanced[6], 0);
    T_EQ_INT(p.num_reg_images, 6);
    /* batches: ds0 64x64: 4 entries / 2 = 2; ds0 128x64: 3 / 2 = 2; ds1: 10 entries / 1 = 10 */
    T_EQ_INT(p.nbatches, 14);
    int64_t count[7] = { 0 };
    int64_t order0[14];
    T_EQ_INT(sd_batch_plan_epoch(&p, 0), 0);
    for (int64_t i = 0; i < p.nbatches; i++) {
        const sd_batch_bucket *bk;
        const int64_t *idx;
        int n;
        T_EQ_INT(sd_batch_get(&p, i, &bk, &idx, &n), 0);
        order0[i] = p.order[i];
        for (int k = 0; k < n; k++) {
            count[idx[k]]++;
            T_EQ_INT(it[idx[k]].dataset, bk->dataset);
            T_EQ_INT(it[idx[k]].bucket_w, bk->w);
        }
    }
    static const int64_t want[7] = { 2, 2, 3, 4, 3, 3, 0 };
    for (int i = 0; i < 7; i++) T_EQ_INT(count[i], want[i]);
    /* the order of an epoch is a function of (seed, epoch): going back reproduces it */
    T_EQ_INT(sd_batch_plan_epoch(&p, 3), 0);
    int diff = 0;
    for (int64_t i = 0; i < p.nbatches; i++) diff |= p.order[i] != order0[i];
    T_CHECK(diff);
    T_EQ_INT(sd_batch_plan_epoch(&p, 0), 0);
    for (int64_t i = 0; i < p.nbatches; i++) T_EQ_INT(p.order[i], order0[i]);
    /* cumulative entry shuffles: epoch 2 reached directly equals epoch 2 reached step by step */
    sd_batch_plan q;
    T_EQ_INT(sd_batch_plan_init(&q, it, 7, 9), 0);
    T_EQ_INT(sd_batch_plan_epoch(&q, 2), 0);
    T_EQ_INT(sd_batch_plan_epoch(&p, 1), 0);
    T_EQ_INT(sd_batch_plan_epoch(&p, 2), 0);
    for (int b = 0; b < p.nbuckets; b++)
        for (int64_t k = 0; k < p.b[b].n; k++) T_EQ_INT(p.b[b].entries[k], q.b[b].entries[k]);
    sd_batch_plan_free(&q);
    sd_batch_plan_free(&p);
    T_CHECK(sd_batch_plan_init(&p, it, 0, 1) < 0);
    sd_batch_plan_free(&p);
}

int main(void)
{
    T_RUN(test_caption_plain);
    T_RUN(test_caption_shuffle_keep);
    T_RUN(test_caption_dropout);
    T_RUN(test_caption_wildcard_warmup);
    T_RUN(test_weighted);
    T_RUN(test_batch_plan);
    T_DONE();
}
