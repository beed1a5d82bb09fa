/* Dataset configs (data/dataset_config.h), image discovery and sidecars (data/images.h),
 * metadata JSON (data/metadata.h) and regularisation balancing (data/reg_balance.h). */
#include "base/error.h"
#include "data/dataset_config.h"
#include "data/dataset_records.h"
#include "data/images.h"
#include "data/metadata.h"
#include "data/reg_balance.h"
#include "io/jsonl.h"
#include "io/toml.h"
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

static int parse(const char *toml, jv cli, unsigned flags, sd_dataset_config *c)
{
    jv cfg;
    int rc = sd_toml_parse(toml, strlen(toml), "t.toml", &cfg);
    if (rc < 0) { printf("# toml: %s\n", sd_errmsg()); return rc; }
    rc = sd_dataset_config_from_jv(cfg, "t.toml", toml, 1, cli, flags, c);
    jv_free(cfg);
    return rc;
}

static double num(jv p, const char *k)
{
    jv v = jv_object_get(jv_copy(p), jv_string(k));
    double x = jv_get_kind(v) == JV_KIND_NUMBER ? jv_number_value(v) : -12345;
    jv_free(v);
    return x;
}
static int isnull(jv p, const char *k)
{
    jv v = jv_object_get(jv_copy(p), jv_string(k));
    int r = jv_get_kind(v) == JV_KIND_NULL;
    jv_free(v);
    return r;
}
static int boolv(jv p, const char *k)
{
    jv v = jv_object_get(jv_copy(p), jv_string(k));
    int r = jv_get_kind(v) == JV_KIND_TRUE ? 1 : jv_get_kind(v) == JV_KIND_FALSE ? 0 : -1;
    jv_free(v);
    return r;
}
static char sbuf[8][256];
static int sbi;
static const char *str(jv p, const char *k)
{
    jv v = jv_object_get(jv_copy(p), jv_string(k));
    char *b = sbuf[sbi++ & 7];
    snprintf(b, 256, "%s", jv_get_kind(v) == JV_KIND_STRING ? jv_string_value(v) : "(none)");
    jv_free(v);
    return b;
}
static const char *dump(jv p, const char *k)
{
    jv v = jv_object_get(jv_copy(p), jv_string(k));
    jv s = jv_dump_string(v, 0);
    char *b = sbuf[sbi++ & 7];
    snprintf(b, 256, "%s", jv_string_value(s));
    jv_free(s);
    return b;
}

/* ---- the seed guide's three methods ---- */

static void test_seed_dreambooth_class_identifier(void)
{
    const char *t = "[general]\n"
                    "enable_bucket = true                        # comment\n"
                    "\n"
                    "[[datasets]]\n"
                    "resolution = 512\n"
                    "batch_size = 4\n"
                    "\n"
                    "  [[datasets.subsets]]\n"
                    "  image_dir = 'C:\\hoge'\n"
                    "  class_tokens = 'hoge girl'\n"
                    "  num_repeats = 10\n"
                    "\n"
                    "  [[datasets.subsets]]\n"
                    "  is_reg = true\n"
                    "  image_dir = 'C:\\reg'\n"
                    "  class_tokens = 'girl'\n"
                    "  num_repeats = 1\n";
    sd_dataset_config c;
    T_EQ_INT(parse(t, jv_null(), 0, &c), SD_OK);
    T_EQ_INT(c.ndatasets, 1);
    sd_dc_dataset *d = &c.datasets[0];
    T_EQ_INT(d->method, SD_DC_DREAMBOOTH);
    T_EQ_STR(dump(d->params, "resolution"), "[512,512]");
    T_EQ_INT(num(d->params, "batch_size"), 4);
    T_EQ_INT(boolv(d->params, "enable_bucket"), 1);   /* from [general] */
    T_EQ_INT(num(d->params, "min_bucket_reso"), 256);
    T_EQ_INT(d->nsubsets, 2);
    jv s0 = d->subsets[0].params, s1 = d->subsets[1].params;
    T_EQ_STR(str(s0, "image_dir"), "C:\\hoge");
    T_EQ_STR(str(s0, "class_tokens"), "hoge girl");
    T_EQ_INT(num(s0, "num_repeats"), 10);
    T_EQ_INT(boolv(s0, "is_reg"), 0);
    T_EQ_STR(str(s0, "caption_extension"), ".caption");
    T_EQ_INT(boolv(s1, "is_reg"), 1);
    T_EQ_STR(str(s1, "class_tokens"), "girl");
    T_EQ_INT(num(s1, "num_repeats"), 1);
    T_EQ_INT(d->subsets[0].line, 8);
    T_EQ_INT(d->subsets[1].line, 13);
    T_CHECK(isnull(s0, "metadata_file") || !jv_object_has(jv_copy(s0), jv_string("metadata_file")));
    sd_dataset_config_free(&c);
}

static void test_seed_dreambooth_caption(void)
{
    const char *t = "[general]\nenable_bucket = true\n[[datasets]]\nresolution = 512\nbatch_size = 4\n"
                    "  [[datasets.subsets]]\n  image_dir = 'C:\\hoge'\n  caption_extension = '.caption'\n"
                    "  num_repeats = 10\n"
                    "  [[datasets.subsets]]\n  is_reg = true\n  image_dir = 'C:\\reg'\n  class_tokens = 'girl'\n"
                    "  num_repeats = 1\n";
    sd_dataset_config c;
    T_EQ_INT(parse(t, jv_null(), 0, &c), SD_OK);
    jv s0 = c.datasets[0].subsets[0].params;
    T_EQ_STR(str(s0, "caption_extension"), ".caption");
    T_CHECK(isnull(s0, "class_tokens"));
    sd_dataset_config_free(&c);
}

static void test_seed_fine_tuning(void)
{
    const char *t = "[general]\nshuffle_caption = true\nkeep_tokens = 1\n\n[[datasets]]\nresolution = 512\n"
                    "batch_size = 4\n\n  [[datasets.subsets]]\n  image_dir = 'C:\\piyo'\n"
                    "  metadata_file = 'C:\\piyo\\piyo_md.json'\n";
    sd_dataset_config c;
    T_EQ_INT(parse(t, jv_null(), 0, &c), SD_OK);
    sd_dc_dataset *d = &c.datasets[0];
    T_EQ_INT(d->method, SD_DC_FINETUNE);
    jv s = d->subsets[0].params;
    T_EQ_INT(boolv(s, "shuffle_caption"), 1);
    T_EQ_INT(num(s, "keep_tokens"), 1);
    T_EQ_STR(str(s, "metadata_file"), "C:\\piyo\\piyo_md.json");
    /* fine-tuning subsets have no DreamBooth parameters */
    T_CHECK(!jv_object_has(jv_copy(s), jv_string("class_tokens")));
    T_CHECK(!jv_object_has(jv_copy(s), jv_string("is_reg")));
    sd_dataset_config_free(&c);
}

/* §1.3.7's example: a DreamBooth and a fine-tuning dataset in one file */
static void test_spec_example(void)
{
    const char *t = "[general]\ncaption_extension = \".txt\"\nshuffle_caption = true\nkeep_tokens = 1\n"
                    "enable_bucket = true\n\n[[datasets]]\nresolution = 512\nbatch_size = 4\n"
                    "  [[datasets.subsets]]\n  image_dir = \"/data/chara\"\n  class_tokens = \"chara girl\"\n"
                    "  num_repeats = 10\n  [[datasets.subsets]]\n  image_dir = \"/data/reg_girl\"\n  is_reg = true\n"
                    "  class_tokens = \"girl\"\n\n[[datasets]]\nresolution = [768, 768]\nbatch_size = 2\n"
                    "caption_dropout_rate = 0.05\n  [[datasets.subsets]]\n  image_dir = \"/data/ft\"\n"
                    "  metadata_file = \"/data/ft/meta.json\"\n";
    sd_dataset_config c;
    T_EQ_INT(parse(t, jv_null(), 0, &c), SD_OK);
    T_EQ_INT(c.ndatasets, 2);
    T_EQ_INT(c.datasets[0].method, SD_DC_DREAMBOOTH);
    T_EQ_INT(c.datasets[1].method, SD_DC_FINETUNE);
    T_EQ_STR(str(c.datasets[0].subsets[0].params, "caption_extension"), ".txt");
    T_EQ_INT(num(c.datasets[0].subsets[1].params, "num_repeats"), 1);
    T_NEAR(num(c.datasets[1].subsets[0].params, "caption_dropout_rate"), 0.05, 0);
    T_NEAR(num(c.datasets[0].subsets[0].params, "caption_dropout_rate"), 0, 0);
    T_EQ_STR(dump(c.datasets[1].params, "resolution"), "[768,768]");
    sd_dataset_config_free(&c);
}

/* ---- fallback chain ---- */

static void test_fallback_chain(void)
{
    const char *t = "[general]\nkeep_tokens = 3\nflip_aug = true\ncaption_prefix = \"g\"\n"
                    "[[datasets]]\nkeep_tokens = 2\nflip_aug = false\n"
                    "  [[datasets.subsets]]\n  image_dir = \"a\"\n  keep_tokens = 1\n"
                    "  [[datasets.subsets]]\n  image_dir = \"b\"\n"
                    "[[datasets]]\n  [[datasets.subsets]]\n  image_dir = \"c\"\n  caption_extension = \"txt\"\n";
    jv cli = JV_OBJECT(jv_string("keep_tokens"), jv_number(9), jv_string("num_repeats"), jv_number(7),
                       jv_string("resolution"), jv_number(640), jv_string("caption_suffix"), jv_string("cli"),
                       jv_string("caption_prefix"), jv_string("cli"));
    sd_dataset_config c;
    T_EQ_INT(parse(t, cli, 0, &c), SD_OK);
    jv a = c.datasets[0].subsets[0].params, b = c.datasets[0].subsets[1].params;
    jv d2 = c.datasets[1].subsets[0].params;
    T_EQ_INT(num(a, "keep_tokens"), 1);    /* subset */
    T_EQ_INT(num(b, "keep_tokens"), 2);    /* dataset */
    T_EQ_INT(num(d2, "keep_tokens"), 3);   /* general */
    T_EQ_INT(boolv(b, "flip_aug"), 0);     /* false stops the chain */
    T_EQ_INT(boolv(d2, "flip_aug"), 1);
    T_EQ_INT(num(a, "num_repeats"), 7);    /* command line */
    T_EQ_STR(str(a, "caption_prefix"), "g");   /* config beats the command line */
    T_EQ_STR(str(a, "caption_suffix"), "cli");
    T_EQ_STR(dump(c.datasets[1].params, "resolution"), "[640,640]");
    T_EQ_STR(str(d2, "caption_extension"), ".txt");   /* leading dot added */
    T_EQ_STR(str(a, "caption_separator"), ",");       /* argparse defaults */
    T_EQ_STR(str(a, "keep_tokens_separator"), "");
    T_EQ_INT(num(a, "token_warmup_min"), 1);
    T_EQ_STR(dump(a, "custom_attributes"), "{}");
    T_CHECK(isnull(a, "secondary_separator"));
    sd_dataset_config_free(&c);
    jv_free(cli);
}

/* ---- errors: file, line, key ---- */

static void expect_err(const char *toml, unsigned flags, const char *want)
{
    sd_dataset_config c;
    int rc = parse(toml, jv_null(), flags, &c);
    T_CHECKF(rc == SD_EFORMAT, "rc %d for %s", rc, want);
    T_CHECKF(strstr(sd_errmsg(), want) != NULL, "message \"%s\" lacks \"%s\"", sd_errmsg(), want);
    sd_dataset_config_free(&c);
}

static void test_errors(void)
{
    expect_err("[[datasets]]\n[[datasets.subsets]]\nimage_dirs = \"x\"\n", 0,
               "t.toml:3: datasets[0].subsets[0].image_dirs: unknown key (did you mean 'image_dir'?)");
    expect_err("[[datasets]]\nresolution = 512\nimage_dir = \"x\"\n[[datasets.subsets]]\nimage_dir = \"y\"\n", 0,
               "t.toml:3: datasets[0].image_dir: key allowed only in a subset");
    expect_err("[general]\nmetadata_file = \"m.json\"\n", 0, "t.toml:2: general.metadata_file: key allowed only in a subset");
    expect_err("[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"x\"\nresolution = 512\n", 0,
               "t.toml:4: datasets[0].subsets[0].resolution: key allowed only in [general] and [[datasets]]");
    expect_err("[[datasets]]\nresolution = \"512\"\n", 0,
               "t.toml:2: datasets[0].resolution: expected an integer or [width, height] integers, got string");
    expect_err("[[datasets]]\nresolution = [512, 512, 3]\n", 0, "datasets[0].resolution: expected");
    expect_err("[general]\nshuffle_caption = 1\n", 0, "t.toml:2: general.shuffle_caption: expected a boolean");
    expect_err("[general]\nnum_repeats = 1.5\n", 0, "general.num_repeats: expected an integer, got number");
    expect_err("[general]\nresize_interpolation = \"fancy\"\n", 0,
               "general.resize_interpolation: invalid value 'fancy'");
    expect_err("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = \"a\"\n  [[datasets.subsets]]\n"
               "  metadata_file = \"m.json\"\n", 0, "t.toml:1: datasets[0]: DreamBooth subsets");
    expect_err("[[datasets]]\n[[datasets.subsets]]\nnum_repeats = 2\n", 0,
               "t.toml:2: datasets[0].subsets[0]: required key 'image_dir' is missing");
    expect_err("[[datasets]]\n[[datasets.subsets]]\nmetadata_file = \"m\"\nclass_tokens = \"x\"\n", 0,
               "t.toml:4: datasets[0].subsets[0].class_tokens: key not allowed in a fine_tuning subset");
    expect_err("[[datasets]]\nis_reg = true\n[[datasets.subsets]]\nimage_dir = \"a\"\n", 0,
               "t.toml:2: datasets[0].is_reg: key allowed only in a subset");
    expect_err("[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"a\"\nconditioning_data_dir = \"c\"\n", 0,
               "datasets[0].subsets[0].conditioning_data_dir: key not allowed (conditioning images need --masked_loss)");
    expect_err("resolution = 512\n", 0, "t.toml:1: unknown top-level key 'resolution'");
    expect_err("[[datasets]]\nenable_bucket = true\nresolution = 2048\n", 0,
               "t.toml:3: datasets[0].resolution: resolution 2048x2048 must lie within");
    expect_err("[[datasets]]\nbucket_reso_steps = 0\n", 0, "datasets[0].bucket_reso_steps: must be positive");
    expect_err("[general]\nface_crop_aug_range = 2.0\n", 0, "general.face_crop_aug_range: expected [low, high]");
    expect_err("[general]\ncustom_attributes = 3\n", 0, "general.custom_attributes: expected a table");
    expect_err("datasets = 3\n", 0, "datasets: expected an array of tables");
    expect_err("[[datasets]]\nsubsets = 3\n", 0, "datasets[0].subsets: expected an array of tables");
    /* a quoted key holding a newline (found by the fuzzer): the error stays one line */
    expect_err("[\"g\\neral\"]\nx = 1\n", 0, "t.toml: unknown top-level key 'g?eral'");
    expect_err("[general]\n\"shuffle\\u0001caption\" = true\n", 0, "general.shuffle?caption: unknown key");
}

static void test_json_config_and_files(void)
{
    const char *js = "{\"general\": {\"shuffle_caption\": true},\n"
                     " \"datasets\": [{\"resolution\": [512, 768],\n"
                     "   \"subsets\": [{\"image_dir\": \"a\"},\n"
                     "               {\"image_dir\": \"b\",\n"
                     "                \"bogus\": 1}]}]}\n";
    const char *p = t_path("cfg.json");
    T_EQ_INT(t_write_file(p, js, strlen(js)), 0);
    sd_dataset_config c;
    T_EQ_INT(sd_dataset_config_load(p, jv_null(), 0, &c), SD_EFORMAT);
    char want[600];
    snprintf(want, sizeof want, "%s:5: datasets[0].subsets[1].bogus: unknown key", p);
    T_CHECKF(strstr(sd_errmsg(), want) != NULL, "%s", sd_errmsg());
    sd_dataset_config_free(&c);
    /* a good JSON file */
    const char *ok = "{\"datasets\": [{\"resolution\": [512, 768], \"subsets\": [{\"image_dir\": \"a\"}]}]}";
    T_EQ_INT(t_write_file(p, ok, strlen(ok)), 0);
    T_EQ_INT(sd_dataset_config_load(p, jv_null(), 0, &c), SD_OK);
    T_EQ_STR(dump(c.datasets[0].params, "resolution"), "[512,768]");
    sd_dataset_config_free(&c);
    /* malformed JSON: line and column */
    const char *bad = "{\"general\": {},\n \"datasets\": [}";
    T_EQ_INT(t_write_file(p, bad, strlen(bad)), 0);
    T_EQ_INT(sd_dataset_config_load(p, jv_null(), 0, &c), SD_EFORMAT);
    snprintf(want, sizeof want, "%s:2:15: invalid JSON", p);
    T_CHECKF(strstr(sd_errmsg(), want) != NULL, "%s", sd_errmsg());
    /* malformed TOML */
    const char *pt = t_path("cfg.TOML");
    T_EQ_INT(t_write_file(pt, "[general]\nfoo = \n", 17), 0);
    T_EQ_INT(sd_dataset_config_load(pt, jv_null(), 0, &c), SD_EFORMAT);
    snprintf(want, sizeof want, "%s:2:7:", pt);
    T_CHECKF(strstr(sd_errmsg(), want) != NULL, "%s", sd_errmsg());
    /* wrong suffix, missing file */
    T_EQ_INT(sd_dataset_config_load(t_path("cfg.yaml"), jv_null(), 0, &c), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "not a supported config file format") != NULL);
    T_EQ_INT(sd_dataset_config_load(t_path("nope.toml"), jv_null(), 0, &c), SD_ENOTFOUND);
}

static void test_validation_after_parse(void)
{
    const char *t = "[[datasets]]\nenable_bucket = true\nresolution = 512\nmin_bucket_reso = 300\n"
                    "max_bucket_reso = 1000\n"
                    "  [[datasets.subsets]]\n  image_dir = \"a\"\n"
                    "  [[datasets.subsets]]\n  image_dir = \"a\"\n  num_repeats = 5\n"
                    "  [[datasets.subsets]]\n  image_dir = \"b\"\n  num_repeats = 0\n"
                    "  [[datasets.subsets]]\n  image_dir = \"c\"\n"
                    "[[datasets]]\nvalidation_split = 1.5\n  [[datasets.subsets]]\n  image_dir = \"a\"\n";
    sd_dataset_config c;
    T_EQ_INT(parse(t, jv_null(), 0, &c), SD_OK);
    T_EQ_INT(num(c.datasets[0].params, "min_bucket_reso"), 256);    /* rounded down */
    T_EQ_INT(num(c.datasets[0].params, "max_bucket_reso"), 1024);   /* rounded up */
    T_EQ_INT(c.datasets[0].nsubsets, 2);   /* duplicate "a" and num_repeats 0 dropped */
    T_EQ_STR(str(c.datasets[0].subsets[1].params, "image_dir"), "c");
    T_EQ_INT(c.datasets[0].subsets[1].index, 3);
    T_EQ_INT(c.datasets[1].nsubsets, 1);   /* the same dir in another dataset is fine */
    T_EQ_INT(c.nwarnings, 5);
    int seen = 0;
    for (int i = 0; i < c.nwarnings; i++) {
        seen |= strstr(c.warnings[i], "rounded down to 256") ? 1 : 0;
        seen |= strstr(c.warnings[i], "rounded up to 1024") ? 2 : 0;
        seen |= strstr(c.warnings[i], "duplicate") ? 4 : 0;
        seen |= strstr(c.warnings[i], "num_repeats 0 < 1") ? 8 : 0;
        seen |= strstr(c.warnings[i], "validation_split") ? 16 : 0;
    }
    T_EQ_INT(seen, 31);
    sd_dataset_config_free(&c);
}

static void test_controlnet(void)
{
    const char *t = "[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"a\"\nconditioning_data_dir = \"c\"\n"
                    "caption_extension = \".txt\"\n";
    sd_dataset_config c;
    T_EQ_INT(parse(t, jv_null(), SD_DC_CONTROLNET_OK, &c), SD_OK);
    T_EQ_INT(c.datasets[0].method, SD_DC_CONTROLNET);
    T_EQ_STR(str(c.datasets[0].subsets[0].params, "conditioning_data_dir"), "c");
    sd_dataset_config_free(&c);
}

/* ---- folder convention ---- */

static void mk(const char *rel)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", t_path(rel));
    T_EQ_INT(system(cmd), 0);
}
static void touch(const char *rel, const char *text)
{
    T_EQ_INT(t_write_file(t_path(rel), text, strlen(text)), 0);
}

static void test_folder_name(void)
{
    char *ct;
    T_EQ_INT(sd_dc_parse_folder_name("10_sks dog", &ct), 10);
    T_EQ_STR(ct, "sks dog");
    free(ct);
    T_EQ_INT(sd_dc_parse_folder_name("5_my_char girl", &ct), 5);
    T_EQ_STR(ct, "my_char girl");
    free(ct);
    T_EQ_INT(sd_dc_parse_folder_name("3", &ct), 3);
    T_EQ_STR(ct, "");
    free(ct);
    T_EQ_INT(sd_dc_parse_folder_name("abc_x", &ct), 0);
    T_CHECK(ct == NULL);
    T_EQ_INT(sd_dc_parse_folder_name("_x", &ct), 0);
    T_CHECK(ct == NULL);
    T_EQ_INT(sd_dc_parse_folder_name("0_x", &ct), 0);
    T_CHECK(ct != NULL);
    free(ct);
    T_EQ_INT(sd_dc_parse_folder_name("-2_x", &ct), -1);
    free(ct);
}

static void test_folders(void)
{
    mk("fc/train/10_sks dog");
    mk("fc/train/abc");
    mk("fc/train/0_zero");
    mk("fc/reg/1_dog");
    touch("fc/train/20_file.txt", "x");
    sd_dataset_config c;
    jv cli = JV_OBJECT(jv_string("resolution"), jv_number(512), jv_string("caption_extension"), jv_string(".txt"));
    T_EQ_INT(sd_dataset_config_folders(t_path("fc/train"), t_path("fc/reg"), NULL, cli, 0, &c), SD_OK);
    T_EQ_INT(c.ndatasets, 1);
    T_EQ_INT(c.datasets[0].method, SD_DC_DREAMBOOTH);
    T_EQ_INT(c.datasets[0].nsubsets, 2);
    jv s0 = c.datasets[0].subsets[0].params, s1 = c.datasets[0].subsets[1].params;
    T_EQ_STR(str(s0, "class_tokens"), "sks dog");
    T_EQ_INT(num(s0, "num_repeats"), 10);
    T_EQ_INT(boolv(s0, "is_reg"), 0);
    T_EQ_STR(str(s0, "caption_extension"), ".txt");
    T_EQ_STR(str(s1, "class_tokens"), "dog");
    T_EQ_INT(boolv(s1, "is_reg"), 1);
    T_EQ_STR(dump(c.datasets[0].params, "resolution"), "[512,512]");
    T_EQ_INT(c.nwarnings, 2);   /* "abc" without repeats, "0_zero" */
    sd_dataset_config_free(&c);
    /* fine-tuning form */
    T_EQ_INT(sd_dataset_config_folders(t_path("fc/train"), NULL, "m.json", cli, 0, &c), SD_OK);
    T_EQ_INT(c.datasets[0].method, SD_DC_FINETUNE);
    T_EQ_STR(str(c.datasets[0].subsets[0].params, "metadata_file"), "m.json");
    sd_dataset_config_free(&c);
    T_EQ_INT(sd_dataset_config_folders(t_path("fc/none"), NULL, NULL, cli, 0, &c), SD_ENOTFOUND);
    T_CHECK(strstr(sd_errmsg(), "No such file or directory") != NULL);
    jv_free(cli);
}

/* ---- images and sidecars ---- */

static void test_image_names_and_listing(void)
{
    T_CHECK(sd_img_is_image_name("a.png", 0));
    T_CHECK(sd_img_is_image_name("a.JPEG", 0));
    T_CHECK(!sd_img_is_image_name("a.Jpg", 0));   /* reference: lower or upper only */
    T_CHECK(sd_img_is_image_name("a.Jpg", SD_IMG_ANY_CASE));
    T_CHECK(!sd_img_is_image_name("a.gif", SD_IMG_ANY_CASE));
    T_CHECK(!sd_img_is_image_name("png", SD_IMG_ANY_CASE));
    mk("ls/sub");
    touch("ls/b.png", "x");
    touch("ls/a.JPG", "x");
    touch("ls/c.Webp", "x");
    touch("ls/.h.png", "x");
    touch("ls/a.caption", "x");
    touch("ls/sub/z.bmp", "x");
    sd_path_list l = {0};
    T_EQ_INT(sd_img_list(t_path("ls"), 0, &l), SD_OK);
    T_EQ_INT(l.n, 2);
    if (l.n == 2) {
        T_CHECK(strstr(l.paths[0], "ls/a.JPG") != NULL);
        T_CHECK(strstr(l.paths[1], "ls/b.png") != NULL);
    }
    sd_path_list_free(&l);
    T_EQ_INT(sd_img_list(t_path("ls"), SD_IMG_ANY_CASE | SD_IMG_RECURSIVE | SD_IMG_HIDDEN, &l), SD_OK);
    T_EQ_INT(l.n, 5);
    if (l.n == 5) {
        T_CHECK(strstr(l.paths[0], "ls/.h.png") != NULL);
        T_CHECK(strstr(l.paths[4], "ls/sub/z.bmp") != NULL);
    }
    sd_path_list_free(&l);
    T_EQ_INT(sd_img_list(t_path("nope"), 0, &l), SD_ENOTFOUND);
    /* component-wise order: "a/b.png" before "a-c.png" */
    sd_path_list_add(&l, "x/a-c.png");
    sd_path_list_add(&l, "x/a/b.png");
    sd_path_list_sort(&l);
    T_EQ_STR(l.paths[0], "x/a/b.png");
    sd_path_list_free(&l);
    char *p = sd_img_sidecar_path("d.x/a.b.png", ".txt");
    T_EQ_STR(p, "d.x/a.b.txt");
    free(p);
    p = sd_img_sidecar_path("d.x/noext", ".txt");
    T_EQ_STR(p, "d.x/noext.txt");
    free(p);
    p = sd_img_stem("d/a.b.png");
    T_EQ_STR(p, "a.b");
    free(p);
}

static void test_sidecars(void)
{
    char *t;
    mk("sc");
    touch("sc/a.caption", "  first line \r\nsecond\r\n\r\n  third  \n");
    T_EQ_INT(sd_sidecar_read(t_path("sc/a.caption"), SD_SIDECAR_FIRST_LINE, &t), 1);
    T_EQ_STR(t, "first line");
    free(t);
    T_EQ_INT(sd_sidecar_read(t_path("sc/a.caption"), SD_SIDECAR_WILDCARD, &t), 1);
    T_EQ_STR(t, "first line\nsecond\nthird");
    free(t);
    T_EQ_INT(sd_sidecar_read(t_path("sc/a.caption"), SD_SIDECAR_STRIP, &t), 1);
    T_EQ_STR(t, "first line \r\nsecond\r\n\r\n  third");
    free(t);
    touch("sc/u.txt", "\xe3\x80\x80 tag\xc2\xa0 \n");   /* U+3000 and U+00A0 are Python whitespace */
    T_EQ_INT(sd_sidecar_read(t_path("sc/u.txt"), SD_SIDECAR_STRIP, &t), 1);
    T_EQ_STR(t, "tag");
    free(t);
    touch("sc/bom.txt", "\xef\xbb\xbftag\n");   /* kept, as Python's utf-8 codec keeps it */
    T_EQ_INT(sd_sidecar_read(t_path("sc/bom.txt"), SD_SIDECAR_STRIP, &t), 1);
    T_EQ_STR(t, "\xef\xbb\xbftag");
    free(t);
    touch("sc/bad.txt", "ok\xff\n");
    T_EQ_INT(sd_sidecar_read(t_path("sc/bad.txt"), SD_SIDECAR_STRIP, &t), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "bad.txt: not valid UTF-8 (byte 0xff at offset 2)") != NULL);
    touch("sc/empty.caption", "");
    T_EQ_INT(sd_sidecar_read(t_path("sc/empty.caption"), SD_SIDECAR_FIRST_LINE, &t), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "caption file is empty") != NULL);
    T_EQ_INT(sd_sidecar_read(t_path("sc/empty.caption"), SD_SIDECAR_STRIP, &t), 1);
    T_EQ_STR(t, "");
    free(t);
    touch("sc/nl.caption", "\n");
    T_EQ_INT(sd_sidecar_read(t_path("sc/nl.caption"), SD_SIDECAR_FIRST_LINE, &t), 1);
    T_EQ_STR(t, "");
    free(t);
    T_EQ_INT(sd_sidecar_read(t_path("sc/missing.txt"), SD_SIDECAR_STRIP, &t), 0);
    touch("sc/nul.txt", "a\0b");
    T_EQ_INT(t_write_file(t_path("sc/nul.txt"), "a\0b", 3), 0);
    T_EQ_INT(sd_sidecar_read(t_path("sc/nul.txt"), SD_SIDECAR_STRIP, &t), SD_EFORMAT);
    /* DreamBooth lookup with the face-crop fallback */
    mk("sc/10_x");
    touch("sc/10_x/img.caption", "face caption\n");
    char *cap, *used;
    T_EQ_INT(sd_db_caption(t_path("sc/10_x/img_1_2_3_4.png"), ".caption", 0, &cap, &used), 1);
    T_EQ_STR(cap, "face caption");
    T_CHECK(strstr(used, "sc/10_x/img.caption") != NULL);
    free(cap);
    free(used);
    T_EQ_INT(sd_db_caption(t_path("sc/10_x/img_1_2_3.png"), ".caption", 0, &cap, &used), 0);
    touch("sc/10_x/img_1_2_3.caption", "own\n");
    T_EQ_INT(sd_db_caption(t_path("sc/10_x/img_1_2_3.png"), ".caption", 0, &cap, &used), 1);
    T_EQ_STR(cap, "own");
    free(cap);
    free(used);
}

/* ---- metadata ---- */

static void test_metadata_dump(void)
{
    /* expected bytes from Python: json.dumps(v, indent=2) */
    jv v;
    const char *in = "{\"img001\":{\"caption\":\"a \\\"cartoon\\\"\\n\\u00fc\\ud83d\\ude00/\\u007f\",\"tags\":\"x\","
                     "\"train_resolution\":[512,512],\"e\":{},\"a\":[],\"f\":0.1,\"g\":1e-05,\"h\":1.5e+16,"
                     "\"i\":-2.5,\"n\":null,\"t\":true}}";
    T_EQ_INT(sd_json_parse(in, strlen(in), &v), SD_OK);
    char *out = NULL;
    size_t n;
    T_EQ_INT(sd_json_dump_py(v, 1, &out, &n), SD_OK);
    const char *want = "{\n  \"img001\": {\n    \"caption\": \"a \\\"cartoon\\\"\\n\\u00fc\\ud83d\\ude00/\\u007f\",\n"
                       "    \"tags\": \"x\",\n    \"train_resolution\": [\n      512,\n      512\n    ],\n"
                       "    \"e\": {},\n    \"a\": [],\n    \"f\": 0.1,\n    \"g\": 1e-05,\n    \"h\": 1.5e+16,\n"
                       "    \"i\": -2.5,\n    \"n\": null,\n    \"t\": true\n  }\n}";
    T_EQ_STR(out, want);
    T_EQ_INT(n, strlen(want));
    free(out);
    T_EQ_INT(sd_json_dump_py(v, 0, &out, &n), SD_OK);   /* ensure_ascii=False keeps UTF-8 */
    T_CHECK(strstr(out, "\\n\xc3\xbc\xf0\x9f\x98\x80/\x7f\"") != NULL);
    free(out);
    jv_free(v);
    jv e = jv_object();
    T_EQ_INT(sd_json_dump_py(e, 1, &out, &n), SD_OK);
    T_EQ_STR(out, "{}");
    free(out);
    jv_free(e);
}

static void test_metadata_load(void)
{
    const char *js = "{\"a\": {\"caption\": \"c\"}, \"b\": 3, \"d/x.png\": {\"tags\": \"t\"}}";
    T_EQ_INT(t_write_file(t_path("m.json"), js, strlen(js)), 0);
    sd_meta m;
    T_EQ_INT(sd_meta_load(t_path("m.json"), &m), SD_OK);
    T_EQ_INT(m.n, 3);
    T_EQ_STR(m.e[0].key, "a");
    T_CHECK(m.e[0].err == NULL);
    T_CHECK(m.e[1].err && strstr(m.e[1].err, "entry 'b': expected an object, got number"));
    T_EQ_STR(m.e[2].key, "d/x.png");
    sd_meta_free(&m);
    const char *jl = "{\"image_path\": \"/x/a.png\", \"caption\": \"c\", \"image_size\": [3, 4]}\n\n"
                     "{\"caption\": \"no path\"}\nnot json\n";
    T_EQ_INT(t_write_file(t_path("m.JSONL"), jl, strlen(jl)), 0);
    T_EQ_INT(sd_meta_load(t_path("m.JSONL"), &m), SD_OK);
    T_EQ_INT(m.n, 3);
    T_EQ_STR(m.e[0].key, "/x/a.png");
    T_CHECK(!jv_object_has(jv_copy(m.e[0].value), jv_string("image_path")));
    T_CHECK(m.e[1].err && strstr(m.e[1].err, ":3: no 'image_path'"));
    T_CHECK(m.e[2].err && strstr(m.e[2].err, ":4: invalid JSON"));
    sd_meta_free(&m);
    T_EQ_INT(t_write_file(t_path("bad.json"), "{\"a\": {}", 8), 0);
    T_EQ_INT(sd_meta_load(t_path("bad.json"), &m), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "bad.json:1:") != NULL);
    T_EQ_INT(t_write_file(t_path("arr.json"), "[1]", 3), 0);
    T_EQ_INT(sd_meta_load(t_path("arr.json"), &m), SD_EFORMAT);
    T_EQ_INT(sd_meta_load(t_path("none.json"), &m), SD_ENOTFOUND);
    /* key -> image */
    mk("mi");
    touch("mi/s1.JPG", "x");
    touch("mi/s2.png", "x");
    char *p;
    T_EQ_INT(sd_meta_find_image("s1", t_path("mi"), &p), 1);
    T_CHECK(p && strstr(p, "mi/s1.JPG"));
    free(p);
    T_EQ_INT(sd_meta_find_image("s2.png", t_path("mi"), &p), 1);
    free(p);
    T_EQ_INT(sd_meta_find_image(t_path("mi/s2.png"), NULL, &p), 1);
    free(p);
    T_EQ_INT(sd_meta_find_image("s3", t_path("mi"), &p), 0);
    T_EQ_INT(sd_meta_find_image("s1", NULL, &p), 0);
}

/* ---- regularisation balancing (§1.7) ---- */

static void test_reg_balance(void)
{
    /* 20 train images x 10 repeats = 200; 300 reg images x 1: the first 200 are used once */
    int64_t r[300];
    for (int i = 0; i < 300; i++) r[i] = 1;
    T_EQ_INT(sd_reg_balance(200, r, 300), 200);
    T_EQ_INT(r[199], 1);
    T_EQ_INT(r[200], 0);
    T_EQ_INT(r[299], 0);
    /* fewer reg images: later passes add 1 each in order; 5 x 1 vs 12 -> 3,3,2,2,2 */
    int64_t q[5] = {1, 1, 1, 1, 1};
    T_EQ_INT(sd_reg_balance(12, q, 5), 12);
    T_EQ_INT(q[0], 3);
    T_EQ_INT(q[1], 3);
    T_EQ_INT(q[2], 2);
    T_EQ_INT(q[4], 2);
    /* own repeats in the first pass; may overshoot by up to one image's repeats - 1 */
    int64_t w[3] = {4, 4, 4};
    T_EQ_INT(sd_reg_balance(6, w, 3), 8);
    T_EQ_INT(w[0], 4);
    T_EQ_INT(w[1], 4);
    T_EQ_INT(w[2], 0);
    int64_t x[2] = {2, 3};
    T_EQ_INT(sd_reg_balance(9, x, 2), 9);   /* 2+3=5, then +1 +1 +1 +1 -> 4,5 */
    T_EQ_INT(x[0], 4);
    T_EQ_INT(x[1], 5);
    int64_t z[2] = {1, 1};
    T_EQ_INT(sd_reg_balance(0, z, 2), 0);   /* no training images: no reg image is used */
    T_EQ_INT(z[0], 0);
    T_EQ_INT(sd_reg_balance(10, NULL, 0), 0);
}

/* ---- records of a config (what sd-train can call directly) ---- */

typedef struct collect { jv recs; int nerr, nwarn; char lasterr[512]; } collect;
static int c_rec(void *ctx, jv rec, const char *src, long line)
{
    collect *c = ctx;
    c->recs = jv_array_append(c->recs, rec);
    return 0;
}
static void c_err(void *ctx, const char *src, long line, const char *msg)
{
    collect *c = ctx;
    c->nerr++;
    snprintf(c->lasterr, sizeof c->lasterr, "%s: %s", src, msg);
}
static void c_warn(void *ctx, const char *msg) { ((collect *)ctx)->nwarn++; }

static void test_dataset_records(void)
{
    mk("dr/train");
    mk("dr/reg");
    touch("dr/train/a.png", "x");
    touch("dr/train/b.jpg", "x");
    touch("dr/train/c.Png", "x");   /* not an image to the reference */
    touch("dr/train/a.txt", "caption of a\nsecond line\n");
    touch("dr/reg/r.png", "x");
    touch("dr/train/bad.png", "x");
    touch("dr/train/bad.txt", "\xff");
    char toml[1024];
    snprintf(toml, sizeof toml,
             "[general]\ncaption_extension = \".txt\"\n[[datasets]]\nresolution = 512\n"
             "[[datasets.subsets]]\nimage_dir = \"%s\"\nclass_tokens = \"sks dog\"\nnum_repeats = 3\n"
             "[[datasets.subsets]]\nimage_dir = \"%s\"\nis_reg = true\nclass_tokens = \"dog\"\n",
             t_path("dr/train"), t_path("dr/reg"));
    sd_dataset_config c;
    T_EQ_INT(parse(toml, jv_null(), 0, &c), SD_OK);
    collect col = {jv_array(), 0, 0, ""};
    sd_dataset_sink sink = {&col, c_rec, c_err, c_warn};
    T_EQ_INT(sd_dataset_records(&c, &sink), SD_OK);
    T_EQ_INT(jv_array_length(jv_copy(col.recs)), 3);
    T_EQ_INT(col.nerr, 1);
    T_CHECKF(strstr(col.lasterr, "bad.txt: not valid UTF-8") != NULL, "%s", col.lasterr);
    jv r0 = jv_array_get(jv_copy(col.recs), 0), r1 = jv_array_get(jv_copy(col.recs), 1);
    jv r2 = jv_array_get(jv_copy(col.recs), 2);
    T_EQ_STR(str(r0, "caption"), "caption of a");
    T_EQ_STR(str(r1, "caption"), "sks dog");
    T_EQ_INT(num(r1, "num_repeats"), 3);
    T_EQ_INT(boolv(r1, "is_reg"), 0);
    T_EQ_STR(str(r2, "caption"), "dog");
    T_EQ_INT(boolv(r2, "is_reg"), 1);
    T_EQ_INT(num(r2, "subset"), 1);
    T_EQ_STR(str(r2, "method"), "dreambooth");
    T_EQ_STR(dump(r2, "resolution"), "[512,512]");
    jv_free(r0);
    jv_free(r1);
    jv_free(r2);
    jv_free(col.recs);
    sd_dataset_config_free(&c);
}

int main(void)
{
    T_RUN(test_seed_dreambooth_class_identifier);
    T_RUN(test_seed_dreambooth_caption);
    T_RUN(test_seed_fine_tuning);
    T_RUN(test_spec_example);
    T_RUN(test_fallback_chain);
    T_RUN(test_errors);
    T_RUN(test_json_config_and_files);
    T_RUN(test_validation_after_parse);
    T_RUN(test_controlnet);
    T_RUN(test_folder_name);
    T_RUN(test_folders);
    T_RUN(test_image_names_and_listing);
    T_RUN(test_sidecars);
    T_RUN(test_metadata_dump);
    T_RUN(test_metadata_load);
    T_RUN(test_reg_balance);
    T_RUN(test_dataset_records);
    T_DONE();
}
