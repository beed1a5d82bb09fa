/* lib/train/loop_meta.c sd_ss_datasets_json: ss_datasets, ss_tag_frequency and ss_dataset_dirs
 * byte for byte as train_network.py writes them for a dataset config, against
 * tests/data/train_meta/datasets_golden.txt (tests/golden/gen/make_train_meta_golden.py, the
 * reference's code path transcribed, run with /usr/bin/python3). */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "test.h"
#include "train/meta.h"

static const char *data_path(const char *rel)
{
    return t_root_pathf("%s", rel);
}

/* the value of `key` in the golden file (malloc'd) */
static char *golden(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t L = e ? (size_t)(e - p) : strlen(p);
        if (L > kl && !strncmp(p, key, kl) && p[kl] == '\t') return strndup(p + kl + 1, L - kl - 1);
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

static sd_ss_subset_meta sub0(void)
{
    sd_ss_subset_meta s;
    memset(&s, 0, sizeof s);
    s.keep_tokens_separator = "";
    return s;
}

static void test_golden(void)
{
    char *text = NULL;
    size_t n = 0;
    int rc = sd_read_file(data_path("tests/data/train_meta/datasets_golden.txt"), 1 << 20, &text, &n);
    T_EQ_INT(rc, SD_OK);
    if (rc) return;
    /* dataset 0: DreamBooth, a subset and a reg subset */
    sd_ss_subset_meta s0[2] = { sub0(), sub0() };
    s0[0].img_count = 3, s0[0].num_repeats = 10, s0[0].flip_aug = 1, s0[0].shuffle_caption = 1;
    s0[0].keep_tokens = 1, s0[0].keep_tokens_separator = "|||", s0[0].caption_prefix = "photo of ";
    s0[0].image_dir = "/data/img/10_sks dog", s0[0].class_tokens = "sks dog";
    s0[1].img_count = 2, s0[1].num_repeats = 1, s0[1].color_aug = 1, s0[1].random_crop = 1;
    s0[1].secondary_separator = ";;;", s0[1].enable_wildcard = 1, s0[1].caption_suffix = ", best";
    s0[1].resize_interpolation = "lanczos", s0[1].image_dir = "/data/reg/1_dog", s0[1].class_tokens = "dog";
    s0[1].is_reg = 1;
    sd_ss_caption_src c0[] = { { "10_sks dog", "sks dog, Sitting, grass" }, { "10_sks dog", "sks dog,running" },
                               { "10_sks dog", "  sks dog , grass,, " }, { "1_dog", "dog" },
                               { "1_dog", "dog, Caf\xc3\x89 \"q\"" } };
    /* dataset 1: fine-tuning, the same metadata file name twice */
    sd_ss_subset_meta s1[2] = { sub0(), sub0() };
    s1[0].img_count = 2, s1[0].num_repeats = 2, s1[0].image_dir = "/data/ft", s1[0].metadata_file = "/data/meta.json";
    s1[1].img_count = 2, s1[1].num_repeats = 1, s1[1].metadata_file = "/other/meta.json";
    sd_ss_caption_src c1[] = { { "meta.json", "a, b" }, { "meta.json", "B" } };
    /* dataset 2: a dir already in the merged tag frequency */
    sd_ss_subset_meta s2[1] = { sub0() };
    s2[0].img_count = 1, s2[0].num_repeats = 1, s2[0].image_dir = "x/1_dog";
    sd_ss_caption_src c2[] = { { "1_dog", "other" } };
    sd_ss_dataset_meta ds[3];
    memset(ds, 0, sizeof ds);
    ds[0] = (sd_ss_dataset_meta){ .is_dreambooth = 1, .batch_size = 2, .num_train_images = 30, .num_reg_images = 2,
                                  .width = 512, .height = 448, .enable_bucket = 1, .min_bucket_reso = 256,
                                  .max_bucket_reso = 1024, .captions = c0, .ncaptions = 5,
                                  .bucket_info_json = "{\"buckets\": {\"0\": {\"resolution\": [448, 512], \"count\": 20}, "
                                                      "\"3\": {\"resolution\": [512, 448], \"count\": 12}}, "
                                                      "\"mean_img_ar_error\": 0.0123}",
                                  .subsets = s0, .nsubsets = 2 };
    ds[1] = (sd_ss_dataset_meta){ .batch_size = 1, .num_train_images = 4, .width = 512, .height = 512,
                                  .min_bucket_reso = 256, .max_bucket_reso = 1024, .captions = c1, .ncaptions = 2,
                                  .resize_interpolation = "area", .subsets = s1, .nsubsets = 2 };
    ds[2] = (sd_ss_dataset_meta){ .is_dreambooth = 1, .batch_size = 1, .num_train_images = 1, .width = 512,
                                  .height = 512, .min_bucket_reso = 256, .max_bucket_reso = 1024, .captions = c2,
                                  .ncaptions = 1, .subsets = s2, .nsubsets = 1 };
    char *d = NULL, *t = NULL, *i = NULL;
    rc = sd_ss_datasets_json(ds, 3, &d, &t, &i);
    T_EQ_INT(rc, SD_OK);
    if (!rc) {
        char *g;
        T_EQ_STR(d, (g = golden(text, "ss_datasets")));
        free(g);
        T_EQ_STR(t, (g = golden(text, "ss_tag_frequency")));
        free(g);
        T_EQ_STR(i, (g = golden(text, "ss_dataset_dirs")));
        free(g);
    }
    free(d), free(t), free(i);
    /* no datasets */
    rc = sd_ss_datasets_json(NULL, 0, &d, &t, &i);
    T_EQ_INT(rc, SD_OK);
    if (!rc) {
        T_EQ_STR(d, "[]");
        T_EQ_STR(t, "{}");
        T_EQ_STR(i, "{}");
    }
    free(d), free(t), free(i);
    free(text);
}

int main(void)
{
    T_RUN(test_golden);
    T_DONE();
}
