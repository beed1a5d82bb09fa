/* sd-merge-meta: image folders, caption/tag sidecars, kohya-ss metadata JSON and dataset configs
 * -> JSON-line records (or the reference's metadata JSON). See man/man1/sd-merge-meta.1. */
#include "base/error.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/opts.h"
#include "data/dataset_config.h"
#include "data/dataset_records.h"
#include "data/images.h"
#include "data/metadata.h"
#include "io/cmdline.h"
#include "io/image.h"
#include "io/jq.h"
#include "io/jsonl.h"
#include "text/clean.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- options ---- */

static struct {
    int recursive, full_path, clean, format, prefer, probe_size, masked_loss, controlnet, no_sidecars;
    const char *dataset_config, *train_data_dir, *reg_data_dir, *in_json;
    const char *caption_extension, *tag_extension, *filter, *output;
    /* dataset defaults (fallback chain step 4) */
    sd_opt_list resolution, face_crop;
    int train_batch_size, enable_bucket, min_bucket_reso, max_bucket_reso, bucket_reso_steps;
    int bucket_no_upscale, validation_seed, dataset_repeats, shuffle_caption, keep_tokens;
    int enable_wildcard, color_aug, flip_aug, random_crop, token_warmup_min;
    int caption_dropout_every_n_epochs, alpha_mask, cache_info, resize_interpolation;
    double validation_split, network_multiplier, token_warmup_step, caption_dropout_rate;
    double caption_tag_dropout_rate;
    const char *caption_separator, *keep_tokens_separator, *secondary_separator;
    const char *caption_prefix, *caption_suffix, *class_tokens;
} a;

enum { FMT_JSONL = 0, FMT_KOHYA = 1 };
enum { PREFER_SIDECAR = 0, PREFER_EXISTING = 1 };

#define G_IN "Inputs"
#define G_MERGE "Merging and output"
#define G_DS "Dataset defaults (used where the dataset config does not set a value)"

static const sd_opt table[] = {
    {.name = "dataset_config", .type = SD_OPT_STRING, .dest = &a.dataset_config, .metavar = "FILE", .group = G_IN,
     .help = "dataset config, TOML or JSON ([general], [[datasets]], [[datasets.subsets]])"},
    {.name = "train_data_dir", .type = SD_OPT_STRING, .dest = &a.train_data_dir, .metavar = "DIR", .group = G_IN,
     .help = "parent of <repeats>_<identifier> <class> folders; with --in_json, the image folder"},
    {.name = "reg_data_dir", .type = SD_OPT_STRING, .dest = &a.reg_data_dir, .metavar = "DIR", .group = G_IN,
     .help = "parent of <repeats>_<class> folders of regularisation images"},
    {.name = "in_json", .type = SD_OPT_STRING, .dest = &a.in_json, .metavar = "FILE", .group = G_IN,
     .help = "metadata JSON (keys by stem or path) or its .jsonl form"},
    {.name = "recursive", .type = SD_OPT_FLAG, .dest = &a.recursive, .group = G_IN,
     .help = "also list images in subdirectories of DIR arguments"},
    {.name = "masked_loss", .type = SD_OPT_FLAG, .dest = &a.masked_loss, .group = G_IN,
     .help = "accept conditioning_data_dir subsets (mask images)"},
    {.name = "controlnet", .type = SD_OPT_FLAG, .dest = &a.controlnet, .group = G_IN,
     .help = "accept conditioning_data_dir subsets (ControlNet inputs, for sd-train --method controlnet)"},
    {.name = "caption_extension", .alias = "caption_extention", .type = SD_OPT_STRING, .dest = &a.caption_extension,
     .def = ".caption", .metavar = "EXT", .group = G_MERGE, .help = "caption sidecar extension"},
    {.name = "tag_extension", .type = SD_OPT_STRING, .dest = &a.tag_extension, .def = ".txt", .metavar = "EXT",
     .group = G_MERGE, .help = "tag sidecar extension (images of DIR/IMAGE arguments and stdin paths)"},
    {.name = "no_sidecars", .type = SD_OPT_FLAG, .dest = &a.no_sidecars, .group = G_MERGE,
     .help = "read no caption/tag sidecars"},
    {.name = "prefer", .type = SD_OPT_ENUM, .dest = &a.prefer, .def = "sidecar", .choices = "sidecar|existing",
     .group = G_MERGE, .help = "which caption/tags win when a sidecar and the metadata or record both have one"},
    {.name = "full_path", .type = SD_OPT_FLAG, .dest = &a.full_path, .group = G_MERGE,
     .help = "metadata keys are image paths, not stems"},
    {.name = "clean", .type = SD_OPT_FLAG, .dest = &a.clean, .group = G_MERGE,
     .help = "clean captions and tags as clean_captions_and_tags.py"},
    {.name = "probe_size", .type = SD_OPT_FLAG, .dest = &a.probe_size, .group = G_MERGE,
     .help = "read image headers to add image_size where it is not known"},
    {.name = "filter", .type = SD_OPT_STRING, .dest = &a.filter, .metavar = "JQ", .group = G_MERGE,
     .help = "jq program applied to every record before output"},
    {.name = "format", .type = SD_OPT_ENUM, .dest = &a.format, .def = "jsonl", .choices = "jsonl|kohya-json",
     .group = G_MERGE, .help = "JSON lines, or the reference's metadata JSON"},
    {.name = "output", .short_name = 'o', .type = SD_OPT_STRING, .dest = &a.output, .metavar = "FILE",
     .group = G_MERGE, .help = "write here (atomically) instead of stdout"},
    {.name = "resolution", .type = SD_OPT_INTS, .dest = &a.resolution, .nmin = 1, .nmax = 2, SD_OPT_ATLEAST(1),
     .metavar = "W[,H]", .group = G_DS, .help = "training resolution"},
    {.name = "train_batch_size", .type = SD_OPT_INT, .dest = &a.train_batch_size, .def = "1", SD_OPT_ATLEAST(1),
     .group = G_DS, .help = "batch_size"},
    {.name = "enable_bucket", .type = SD_OPT_FLAG, .dest = &a.enable_bucket, .group = G_DS, .help = "aspect-ratio buckets"},
    {.name = "min_bucket_reso", .type = SD_OPT_INT, .dest = &a.min_bucket_reso, .def = "256", SD_OPT_ATLEAST(1), .group = G_DS},
    {.name = "max_bucket_reso", .type = SD_OPT_INT, .dest = &a.max_bucket_reso, .def = "1024", SD_OPT_ATLEAST(1), .group = G_DS},
    {.name = "bucket_reso_steps", .type = SD_OPT_INT, .dest = &a.bucket_reso_steps, .def = "64", SD_OPT_ATLEAST(1), .group = G_DS},
    {.name = "bucket_no_upscale", .type = SD_OPT_FLAG, .dest = &a.bucket_no_upscale, .group = G_DS},
    {.name = "validation_split", .type = SD_OPT_DOUBLE, .dest = &a.validation_split, .def = "0", .group = G_DS},
    {.name = "validation_seed", .type = SD_OPT_INT, .dest = &a.validation_seed, .group = G_DS},
    {.name = "network_multiplier", .type = SD_OPT_DOUBLE, .dest = &a.network_multiplier, .def = "1", .group = G_DS},
    {.name = "resize_interpolation", .type = SD_OPT_ENUM, .dest = &a.resize_interpolation,
     .choices = "lanczos|nearest|bilinear|linear|bicubic|cubic|area|box", .group = G_DS},
    {.name = "dataset_repeats", .type = SD_OPT_INT, .dest = &a.dataset_repeats, .def = "1", .group = G_DS,
     .help = "num_repeats"},
    {.name = "shuffle_caption", .type = SD_OPT_FLAG, .dest = &a.shuffle_caption, .group = G_DS},
    {.name = "caption_separator", .type = SD_OPT_STRING, .dest = &a.caption_separator, .def = ",", .group = G_DS},
    {.name = "keep_tokens", .type = SD_OPT_INT, .dest = &a.keep_tokens, .def = "0", SD_OPT_ATLEAST(0), .group = G_DS},
    {.name = "keep_tokens_separator", .type = SD_OPT_STRING, .dest = &a.keep_tokens_separator, .def = "", .group = G_DS},
    {.name = "secondary_separator", .type = SD_OPT_STRING, .dest = &a.secondary_separator, .group = G_DS},
    {.name = "enable_wildcard", .type = SD_OPT_FLAG, .dest = &a.enable_wildcard, .group = G_DS},
    {.name = "caption_prefix", .type = SD_OPT_STRING, .dest = &a.caption_prefix, .group = G_DS},
    {.name = "caption_suffix", .type = SD_OPT_STRING, .dest = &a.caption_suffix, .group = G_DS},
    {.name = "color_aug", .type = SD_OPT_FLAG, .dest = &a.color_aug, .group = G_DS},
    {.name = "flip_aug", .type = SD_OPT_FLAG, .dest = &a.flip_aug, .group = G_DS},
    {.name = "random_crop", .type = SD_OPT_FLAG, .dest = &a.random_crop, .group = G_DS},
    {.name = "face_crop_aug_range", .type = SD_OPT_DOUBLES, .dest = &a.face_crop, .nmin = 2, .nmax = 2,
     .metavar = "LO,HI", .group = G_DS},
    {.name = "token_warmup_min", .type = SD_OPT_INT, .dest = &a.token_warmup_min, .def = "1", .group = G_DS},
    {.name = "token_warmup_step", .type = SD_OPT_DOUBLE, .dest = &a.token_warmup_step, .def = "0", .group = G_DS},
    {.name = "caption_dropout_rate", .type = SD_OPT_DOUBLE, .dest = &a.caption_dropout_rate, .def = "0",
     SD_OPT_UNIT, .group = G_DS},
    {.name = "caption_dropout_every_n_epochs", .type = SD_OPT_INT, .dest = &a.caption_dropout_every_n_epochs,
     .def = "0", SD_OPT_ATLEAST(0), .group = G_DS},
    {.name = "caption_tag_dropout_rate", .type = SD_OPT_DOUBLE, .dest = &a.caption_tag_dropout_rate, .def = "0",
     SD_OPT_UNIT, .group = G_DS},
    {.name = "alpha_mask", .type = SD_OPT_FLAG, .dest = &a.alpha_mask, .group = G_DS},
    {.name = "cache_info", .type = SD_OPT_FLAG, .dest = &a.cache_info, .group = G_DS,
     .help = "read/write metadata_cache.json in DreamBooth image folders"},
    {.name = "class_tokens", .type = SD_OPT_STRING, .dest = &a.class_tokens, .group = G_DS, .flags = SD_OPTF_HIDDEN},
    SD_OPT_END};

/* option name -> dataset-config key (fallback step 4) */
static const char *const cli_keys[][2] = {
    {"resolution", "resolution"}, {"train_batch_size", "batch_size"}, {"enable_bucket", "enable_bucket"},
    {"min_bucket_reso", "min_bucket_reso"}, {"max_bucket_reso", "max_bucket_reso"},
    {"bucket_reso_steps", "bucket_reso_steps"}, {"bucket_no_upscale", "bucket_no_upscale"},
    {"validation_split", "validation_split"}, {"validation_seed", "validation_seed"},
    {"network_multiplier", "network_multiplier"}, {"resize_interpolation", "resize_interpolation"},
    {"dataset_repeats", "num_repeats"}, {"shuffle_caption", "shuffle_caption"},
    {"caption_separator", "caption_separator"}, {"keep_tokens", "keep_tokens"},
    {"keep_tokens_separator", "keep_tokens_separator"}, {"secondary_separator", "secondary_separator"},
    {"enable_wildcard", "enable_wildcard"}, {"caption_prefix", "caption_prefix"},
    {"caption_suffix", "caption_suffix"}, {"color_aug", "color_aug"}, {"flip_aug", "flip_aug"},
    {"random_crop", "random_crop"}, {"face_crop_aug_range", "face_crop_aug_range"},
    {"token_warmup_min", "token_warmup_min"}, {"token_warmup_step", "token_warmup_step"},
    {"caption_dropout_rate", "caption_dropout_rate"},
    {"caption_dropout_every_n_epochs", "caption_dropout_every_n_epochs"},
    {"caption_tag_dropout_rate", "caption_tag_dropout_rate"}, {"alpha_mask", "alpha_mask"},
    {"cache_info", "cache_info"}, {"caption_extension", "caption_extension"}, {"class_tokens", "class_tokens"},
};

/* ---- state ---- */

typedef struct item {
    jv rec;
    char *src;        /* for messages */
    long line;
    int claimed;      /* base (--in_json) entry merged with an input image */
} item;

static struct {
    sd_opts opts;
    FILE *out;
    sd_atomic_file af;
    int use_af;
    sd_jq *jq;
    long nerr;        /* per-record errors */
    long nout;
    int buffering;
    item *items;
    size_t nitems, capitems;
    sd_strmap base_keys;   /* key -> item index (plain --in_json entries) */
    jv kohya;              /* kohya-json output object */
    sd_strmap kohya_keys;  /* key -> 1 */
    char **kohya_imgs;     /* first image of each key, for messages */
    size_t nkohya;
    long sidecar_overrides;
    sd_progress prog;
} S;

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   /* no SA_RESTART: a blocked read of stdin returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void rec_error(const char *src, long line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rec_error(const char *src, long line, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sd_record_error(src, line, "%s", buf);
    S.nerr++;
}

static const char *get_str(jv rec, const char *k)
{
    jv v = jv_object_get(jv_copy(rec), jv_string(k));
    const char *s = jv_get_kind(v) == JV_KIND_STRING ? jv_string_value(v) : NULL;
    jv_free(v);
    return s;
}

static int has(jv rec, const char *k)
{
    jv v = jv_object_get(jv_copy(rec), jv_string(k));
    int r = jv_is_valid(v) && jv_get_kind(v) != JV_KIND_NULL;
    jv_free(v);
    return r;
}

static int is_image_ext(const char *dot)
{
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".avif", ".jxl"};
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

/* Metadata key of an image: the path (--full_path) or the file name without its image
 * extension (a name without one, e.g. an unresolved stem key, is kept whole). malloc'd. */
static char *key_of(const char *image)
{
    if (a.full_path) return strdup(image);
    const char *b = strrchr(image, '/');
    b = b ? b + 1 : image;
    const char *dot = strrchr(b, '.');
    if (dot && dot != b && is_image_ext(dot)) return strndup(b, (size_t)(dot - b));
    return strdup(b);
}

/* ---- output ---- */

static int write_kohya(jv rec, const char *src, long line)
{
    const char *img = get_str(rec, "image");
    if (!img) { rec_error(src, line, "record has no string 'image'"); jv_free(rec); return SD_OK; }
    char *key = key_of(img);
    if (!key) { jv_free(rec); return sd_err(SD_ENOMEM, "out of memory"); }
    size_t prev;
    if (sd_strmap_get(&S.kohya_keys, key, &prev)) {
        rec_error(src, line, "%s: duplicate %s '%s' (also %s)%s", img, a.full_path ? "path" : "stem", key,
                  S.kohya_imgs[prev], a.full_path ? "" : "; use --full_path");
        free(key);
        jv_free(rec);
        return SD_OK;
    }
    jv entry = jv_object();
    int it = jv_object_iter(rec);
    while (jv_object_iter_valid(rec, it)) {
        jv k = jv_object_iter_key(rec, it);
        const char *ks = jv_string_value(k);
        if (strcmp(ks, "image") && strcmp(ks, "dataset") && strcmp(ks, "subset") && strcmp(ks, "method") &&
            strcmp(ks, "conditioning_image") && strcmp(ks, "conditioning_resize_interpolation") &&
            !sd_dc_is_param(ks))
            entry = jv_object_set(entry, jv_copy(k), jv_object_iter_value(rec, it));
        jv_free(k);
        it = jv_object_iter_next(rec, it);
    }
    char **ni = realloc(S.kohya_imgs, (S.nkohya + 1) * sizeof *ni);
    if (!ni) { free(key); jv_free(entry); jv_free(rec); return sd_err(SD_ENOMEM, "out of memory"); }
    S.kohya_imgs = ni;
    S.kohya_imgs[S.nkohya] = strdup(img);
    int rc = sd_strmap_put(&S.kohya_keys, key, S.nkohya);
    S.nkohya++;
    S.kohya = jv_object_set(S.kohya, jv_string(key), entry);
    free(key);
    jv_free(rec);
    S.nout++;
    return rc;
}

static int write_one(jv rec, const char *src, long line)
{
    if (g_signal) { jv_free(rec); return sd_err(SD_EINTR, "interrupted"); }
    sd_progress_update(&S.prog, 1);
    if (a.format == FMT_KOHYA) return write_kohya(rec, src, line);
    int rc = sd_jsonl_write(S.out, rec);
    if (rc < 0) return rc;   /* fatal: output broken */
    S.nout++;
    return SD_OK;
}

/* Clean, probe, filter and write one finished record (consumed). Returns < 0 only on fatal. */
static int emit(jv rec, const char *src, long line)
{
    if (a.clean) {
        static const char *const fields[] = {"tags", "caption"};
        for (int f = 0; f < 2; f++) {
            jv v = jv_object_get(jv_copy(rec), jv_string(fields[f]));
            if (jv_get_kind(v) == JV_KIND_STRING) {
                char *c = NULL;
                int emptied = 0;
                int rc = f == 0 ? sd_clean_tags(jv_string_value(v), &c, NULL, &emptied)
                                : sd_clean_caption(jv_string_value(v), &c);
                if (rc < 0) { jv_free(v); jv_free(rec); return rc; }
                if (emptied) sd_warn("%s: cleaning removed every tag", get_str(rec, "image") ? get_str(rec, "image") : src);
                rec = jv_object_set(rec, jv_string(fields[f]), jv_string(c));
                free(c);
            } else if (jv_get_kind(v) != JV_KIND_NULL && jv_is_valid(v)) {
                rec_error(src, line, "key '%s': expected string, got %s", fields[f], sd_jv_kind_name(v));
                jv_free(v);
                jv_free(rec);
                return SD_OK;
            }
            jv_free(v);
        }
    }
    if (a.probe_size && !has(rec, "image_size")) {
        const char *img = get_str(rec, "image");
        int w, h;
        if (img && sd_image_probe(img, &w, &h, NULL) == SD_OK)
            rec = jv_object_set(rec, jv_string("image_size"), JV_ARRAY(jv_number(w), jv_number(h)));
        else {
            rec_error(src, line, "%s", img ? sd_errmsg() : "record has no string 'image'");
            jv_free(rec);
            return SD_OK;
        }
    }
    if (!S.jq) return write_one(rec, src, line);
    jv outs;
    if (sd_jq_run(S.jq, rec, &outs) < 0) {
        rec_error(src, line, "%s", sd_errmsg());
        return SD_OK;
    }
    int n = jv_array_length(jv_copy(outs)), rc = SD_OK;
    for (int i = 0; i < n && rc == SD_OK; i++) {
        jv o = jv_array_get(jv_copy(outs), i);
        if (jv_get_kind(o) != JV_KIND_OBJECT) {
            rec_error(src, line, "jq filter: output is %s, not an object", sd_jv_kind_name(o));
            jv_free(o);
            continue;
        }
        rc = write_one(o, src, line);
    }
    jv_free(outs);
    return rc;
}

static int push_item(jv rec, const char *src, long line, size_t *idx)
{
    if (S.nitems == S.capitems) {
        size_t nc = S.capitems ? S.capitems * 2 : 256;
        item *ni = realloc(S.items, nc * sizeof *ni);
        if (!ni) { jv_free(rec); return sd_err(SD_ENOMEM, "out of memory"); }
        S.items = ni;
        S.capitems = nc;
    }
    item *it = &S.items[S.nitems];
    it->rec = rec;
    it->src = strdup(src);
    it->line = line;
    it->claimed = 0;
    if (idx) *idx = S.nitems;
    S.nitems++;
    return it->src ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
}

static int deliver(jv rec, const char *src, long line)
{
    if (S.buffering) return push_item(rec, src, line, NULL);
    return emit(rec, src, line);
}

/* ---- plain merge: DIR arguments, stdin, --in_json without a dataset ---- */

/* Sidecars of `image` into rec per --prefer. Returns 0 ok, 1 record failed (reported). */
static int merge_sidecars(jv *rec, const char *image, const char *src, long line)
{
    if (a.no_sidecars) return 0;
    const char *ext[2] = {a.caption_extension, a.tag_extension};
    const char *field[2] = {"caption", "tags"};
    for (int k = 0; k < 2; k++) {
        if (!ext[k] || !*ext[k]) continue;
        char dotted[256];
        snprintf(dotted, sizeof dotted, "%s%s", ext[k][0] == '.' ? "" : ".", ext[k]);
        char *p = sd_img_sidecar_path(image, dotted);
        if (!p) return sd_err(SD_ENOMEM, "out of memory"), 1;
        char *text = NULL;
        int rc = sd_sidecar_read(p, SD_SIDECAR_STRIP, &text);
        free(p);
        if (rc < 0) { rec_error(src, line, "%s", sd_errmsg()); return 1; }
        if (rc == 0) continue;
        if (has(*rec, field[k])) {
            if (a.prefer == PREFER_EXISTING) { free(text); continue; }
            S.sidecar_overrides++;
        }
        *rec = jv_object_set(*rec, jv_string(field[k]), jv_string(text));
        free(text);
    }
    return 0;
}

enum { IN_SIDECARS = 1, IN_CHECK = 2, IN_PATH = 3 };

/* One input image (rec has "image"): from a path (IN_SIDECARS: sidecars are read; IN_CHECK: the
 * file must exist) or a record (0: passed through as it is). */
static int plain_input(jv rec, const char *src, long line, int how)
{
    const char *img = get_str(rec, "image");
    if (!img) {
        rec_error(src, line, "record has no string 'image'");
        jv_free(rec);
        return SD_OK;
    }
    if (how & IN_CHECK) {
        struct stat st;
        if (stat(img, &st) < 0) {
            rec_error(src, line, "%s: %s", img, strerror(errno));
            jv_free(rec);
            return SD_OK;
        }
        if (S_ISDIR(st.st_mode)) {
            rec_error(src, line, "%s: is a directory (give directories as arguments)", img);
            jv_free(rec);
            return SD_OK;
        }
    }
    if (S.base_keys.n) {
        char *key = key_of(img);
        size_t idx;
        if (!key) { jv_free(rec); return sd_err(SD_ENOMEM, "out of memory"); }
        if (sd_strmap_get(&S.base_keys, key, &idx)) {
            item *it = &S.items[idx];
            if (it->claimed) {
                rec_error(src, line, "%s: duplicate key '%s' in --in_json (also %s)%s", img, key,
                          get_str(it->rec, "image"), a.full_path ? "" : "; use --full_path");
                free(key);
                jv_free(rec);
                return SD_OK;
            }
            /* the entry first, the input record's keys over it, the image path of the input */
            int i2 = jv_object_iter(rec);
            jv merged = jv_copy(it->rec);
            while (jv_object_iter_valid(rec, i2)) {
                jv k = jv_object_iter_key(rec, i2);
                jv v = jv_object_iter_value(rec, i2);
                if (!strcmp(jv_string_value(k), "image") || a.prefer == PREFER_SIDECAR || !has(merged, jv_string_value(k)))
                    merged = jv_object_set(merged, k, v);
                else { jv_free(k); jv_free(v); }
                i2 = jv_object_iter_next(rec, i2);
            }
            char *imgc = strdup(img);
            jv_free(rec);
            free(key);
            if (!imgc) { jv_free(merged); return sd_err(SD_ENOMEM, "out of memory"); }
            if ((how & IN_SIDECARS) && merge_sidecars(&merged, imgc, src, line)) {
                free(imgc);
                jv_free(merged);
                return SD_OK;
            }
            free(imgc);
            jv_free(it->rec);
            it->rec = merged;
            it->claimed = 1;
            return SD_OK;
        }
        free(key);
    }
    char *imgc = strdup(img);
    if (!imgc) { jv_free(rec); return sd_err(SD_ENOMEM, "out of memory"); }
    int failed = (how & IN_SIDECARS) && merge_sidecars(&rec, imgc, src, line);
    free(imgc);
    if (failed) { jv_free(rec); return SD_OK; }
    return deliver(rec, src, line);
}

static int read_stdin(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long ln = 0;
    int rc = SD_OK;
    while (rc == SD_OK && (n = getline(&line, &cap, stdin)) >= 0) {
        ln++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        size_t k = 0;
        while (k < (size_t)n && (line[k] == ' ' || line[k] == '\t')) k++;
        if (k == (size_t)n) continue;
        if (line[k] == '{') {
            jv rec;
            if (sd_jsonl_parse_line(line, (size_t)n, &rec) < 0) { rec_error("stdin", ln, "%s", sd_errmsg()); continue; }
            const char *img = NULL;
            int g = sd_jsonl_get_str(rec, "image", &img);
            if (g <= 0) {
                rec_error("stdin", ln, "%s", g < 0 ? sd_errmsg() : "record has no 'image'");
                jv_free(rec);
                continue;
            }
            rc = plain_input(rec, "stdin", ln, 0);
        } else {
            /* a path: must be UTF-8 to travel in JSON */
            jv s = jv_string_sized(line, (int)n);
            size_t bl = (size_t)jv_string_length_bytes(jv_copy(s));
            if (bl != (size_t)n || memcmp(jv_string_value(s), line, bl)) {
                jv_free(s);
                rec_error("stdin", ln, "path is not valid UTF-8");
                continue;
            }
            rc = plain_input(JV_OBJECT(jv_string("image"), s), "stdin", ln, IN_PATH);
        }
    }
    if (rc == SD_OK && g_signal) rc = sd_err(SD_EINTR, "interrupted");
    if (rc == SD_OK && ferror(stdin)) rc = sd_err(SD_EIO, "stdin: read error: %s", strerror(errno));
    free(line);
    return rc;
}

static int load_base(const char *path)
{
    sd_meta m;
    int rc = sd_meta_load(path, &m);
    if (rc < 0) return rc;
    for (size_t i = 0; i < m.n && rc == SD_OK; i++) {
        sd_meta_entry *e = &m.e[i];
        if (e->err) { sd_record_error(path, e->line, "%s", e->err); S.nerr++; continue; }
        char *img = NULL;
        int f = sd_meta_find_image(e->key, NULL, &img);
        if (f < 0) { rc = f; break; }
        jv rec = JV_OBJECT(jv_string("image"), jv_string(img ? img : e->key));
        free(img);
        int it = jv_object_iter(e->value);
        while (jv_object_iter_valid(e->value, it)) {
            rec = jv_object_set(rec, jv_object_iter_key(e->value, it), jv_object_iter_value(e->value, it));
            it = jv_object_iter_next(e->value, it);
        }
        size_t idx;
        rc = push_item(rec, path, e->line, &idx);
        if (rc == SD_OK) {
            /* match inputs by the entry's key as given, and by the key our images would get */
            rc = sd_strmap_put(&S.base_keys, e->key, idx);
            char *k2 = key_of(e->key);
            if (rc == SD_OK && k2 && strcmp(k2, e->key) && !sd_strmap_get(&S.base_keys, k2, NULL))
                rc = sd_strmap_put(&S.base_keys, k2, idx);
            free(k2);
        }
    }
    sd_meta_free(&m);
    return rc;
}

static int plain_dir_or_file(const char *arg)
{
    struct stat st;
    if (stat(arg, &st) < 0) {
        rec_error(arg, 0, "%s: %s", arg, strerror(errno));
        return SD_OK;
    }
    if (!S_ISDIR(st.st_mode)) return plain_input(JV_OBJECT(jv_string("image"), jv_string(arg)), arg, 0, IN_PATH);
    sd_path_list l = {0};
    int rc = sd_img_list(arg, SD_IMG_ANY_CASE | SD_IMG_HIDDEN | (a.recursive ? SD_IMG_RECURSIVE : 0), &l);
    if (rc < 0) {
        rec_error(arg, 0, "%s", sd_errmsg());
        sd_path_list_free(&l);
        return SD_OK;
    }
    if (!l.n) sd_warn("%s: no images (.png .jpg .jpeg .webp .bmp)%s", arg, a.recursive ? "" : "; --recursive?");
    for (size_t i = 0; i < l.n && rc == SD_OK; i++) {
        jv s = jv_string(l.paths[i]);
        if ((size_t)jv_string_length_bytes(jv_copy(s)) != strlen(l.paths[i]) ||
            memcmp(jv_string_value(s), l.paths[i], strlen(l.paths[i]))) {
            jv_free(s);
            rec_error(l.paths[i], 0, "file name is not valid UTF-8");
            continue;
        }
        rc = plain_input(JV_OBJECT(jv_string("image"), s), l.paths[i], 0, IN_SIDECARS);
    }
    sd_path_list_free(&l);
    return rc;
}

/* ---- dataset mode ---- */

/* ---- dataset mode: records come from lib/data/dataset_records ---- */

static int sink_record(void *ctx, jv rec, const char *src, long line) { (void)ctx; return deliver(rec, src, line); }
static void sink_error(void *ctx, const char *src, long line, const char *msg)
{
    (void)ctx;
    rec_error(src, line, "%s", msg);
}
static void sink_warning(void *ctx, const char *msg) { (void)ctx; sd_warn("%s", msg); }

static jv cli_object(void)
{
    jv cli = jv_object();
    for (size_t i = 0; i < sizeof cli_keys / sizeof *cli_keys; i++) {
        const sd_opt *o = sd_opts_find(&S.opts, cli_keys[i][0]);
        if (!o || !sd_opts_is_set(&S.opts, o->dest)) continue;
        int idx = -1;
        for (int k = 0; k < sd_opts_count(&S.opts); k++)
            if (sd_opts_at(&S.opts, k) == o) idx = k;
        if (idx < 0) continue;
        jv v = sd_opts_value_jv(&S.opts, idx);
        if (o->type == SD_OPT_INTS && jv_get_kind(v) == JV_KIND_ARRAY && jv_array_length(jv_copy(v)) == 1) {
            jv x = jv_array_get(v, 0);
            v = x;
        }
        cli = jv_object_set(cli, jv_string(cli_keys[i][1]), v);
    }
    return cli;
}

static int finish_output(void)
{
    if (a.format == FMT_KOHYA) {
        char *text = NULL;
        size_t n = 0;
        int rc = sd_json_dump_py(S.kohya, 1, &text, &n);
        if (rc < 0) return rc;
        errno = 0;
        int ok = fwrite(text, 1, n, S.out) == n && fflush(S.out) == 0;
        free(text);
        if (!ok) return sd_err(SD_EIO, "%s: write error: %s", a.output ? a.output : "stdout", strerror(errno ? errno : EIO));
    }
    if (S.use_af) {
        int rc = sd_atomic_commit(&S.af);
        S.use_af = 0;
        if (rc < 0) return rc;
    }
    return SD_OK;
}

static int run(void)
{
    int rc;
    sd_dataset_config cfg;
    memset(&cfg, 0, sizeof cfg);
    int dataset_mode = 0;
    jv cli = cli_object();
    unsigned flags = a.masked_loss || a.controlnet ? SD_DC_CONTROLNET_OK : 0;
    if (a.dataset_config) {
        if (a.train_data_dir || a.reg_data_dir || a.in_json)
            sd_warn("--dataset_config is given: ignoring%s%s%s", a.train_data_dir ? " --train_data_dir" : "",
                    a.reg_data_dir ? " --reg_data_dir" : "", a.in_json ? " --in_json" : "");
        rc = sd_dataset_config_load(a.dataset_config, cli, flags, &cfg);
        dataset_mode = 1;
    } else if (a.train_data_dir || a.reg_data_dir) {
        rc = sd_dataset_config_folders(a.train_data_dir, a.reg_data_dir, a.in_json, cli, flags, &cfg);
        dataset_mode = 1;
    } else rc = SD_OK;
    jv_free(cli);
    if (rc < 0) return rc;
    for (int i = 0; i < cfg.nwarnings; i++) sd_warn("%s", cfg.warnings[i]);
    if (dataset_mode && !a.in_json && a.train_data_dir && !a.dataset_config) {
        int any = 0;
        for (int i = 0; i < cfg.ndatasets; i++) any |= cfg.datasets[i].nsubsets > 0;
        if (!any) sd_warn("%s: no <repeats>_<name> folders: --train_data_dir must be the parent of the image folders", a.train_data_dir);
    }

    int plain_in_json = a.in_json && !dataset_mode;
    S.buffering = a.format == FMT_KOHYA || plain_in_json;
    S.kohya = jv_object();
    sd_dataset_sink sink = {NULL, sink_record, sink_error, sink_warning};
    rc = sd_dataset_records(&cfg, &sink);
    sd_dataset_config_free(&cfg);
    if (rc < 0) return rc;
    if (plain_in_json && (rc = load_base(a.in_json)) < 0) return rc;

    int read_in = 0;
    for (int i = 0; i < S.opts.npos && rc == SD_OK; i++) {
        if (!strcmp(S.opts.pos[i], "-")) {
            if (!read_in) rc = read_stdin();
            read_in = 1;
        } else rc = plain_dir_or_file(S.opts.pos[i]);
    }
    if (rc == SD_OK && !S.opts.npos && !dataset_mode && !a.in_json) rc = read_stdin();
    if (rc < 0) return rc;
    if (S.sidecar_overrides)
        sd_info("%ld caption/tag value(s) replaced by sidecar files (--prefer existing keeps them)", S.sidecar_overrides);
    for (size_t i = 0; i < S.nitems && rc == SD_OK; i++) {
        rc = emit(S.items[i].rec, S.items[i].src, S.items[i].line);
        S.items[i].rec = jv_invalid();
    }
    if (rc < 0) return rc;
    return finish_output();
}

int main(int argc, char **argv)
{
    sd_log_init("sd-merge-meta");
    if (sd_opts_init(&S.opts, "sd-merge-meta", table) < 0) return sd_fatal(SD_EXIT_FATAL);
    S.opts.flags = SD_OPTS_CONFIG | SD_OPTS_LENIENT;
    S.opts.usage = "[OPTIONS] [DIR|IMAGE|-]...";
    S.opts.description =
        "Turn image folders, caption (.caption) and tag (.txt) sidecars, kohya-ss metadata JSON and dataset "
        "configs into JSON-line records (one per image) or the reference's metadata JSON. With no DIR, no "
        "--dataset_config, --train_data_dir or --in_json, image paths or records are read from stdin.";
    S.opts.epilog = "Exit status: 0 all records written, 1 fatal error, 2 usage error, 3 some records skipped.\n"
                    "See sd-merge-meta(1) for the merge rules and examples.";
    int ex = sd_cmdline_main(&S.opts, argc, argv);
    if (ex >= 0) { sd_opts_free(&S.opts); return ex; }
    install_signals();   /* before -o's temporary file exists */
    if (S.opts.nunknown) {
        char buf[1024] = "";
        for (int i = 0; i < S.opts.nunknown; i++) {
            size_t l = strlen(buf);
            snprintf(buf + l, sizeof buf - l, "%s%s", i ? ", " : "", S.opts.unknown[i]);
        }
        sd_warn("%s: ignoring keys sd-merge-meta does not use: %s", S.opts.config_file, buf);
    }
    int rc = SD_OK;
    if (a.face_crop.n == 2 && a.face_crop.d[0] > a.face_crop.d[1]) {
        fprintf(stderr, "sd-merge-meta: option '--face_crop_aug_range': low %g > high %g\n", a.face_crop.d[0], a.face_crop.d[1]);
        sd_opts_free(&S.opts);
        return SD_EXIT_USAGE;
    }
    if (a.filter) {
        rc = sd_jq_compile(a.filter, jv_null(), &S.jq);
        if (rc < 0) {
            fprintf(stderr, "sd-merge-meta: %s\n", sd_errmsg());
            sd_opts_free(&S.opts);
            return rc == SD_EUSAGE ? SD_EXIT_USAGE : SD_EXIT_FATAL;
        }
    }
    S.out = stdout;
    if (a.output) {
        if ((rc = sd_atomic_open(&S.af, a.output)) < 0) {
            sd_fatal(1);
            sd_jq_free(S.jq);
            sd_opts_free(&S.opts);
            return SD_EXIT_FATAL;
        }
        S.use_af = 1;
        S.out = S.af.fp;
    }
    sd_progress_begin(&S.prog, "records", 0);
    rc = run();
    sd_progress_end(&S.prog);
    int status;
    if (rc < 0 && (g_signal || rc == SD_EINTR)) {
        if (S.use_af) sd_atomic_abort(&S.af);
        sd_error("interrupted");
        status = g_signal == SIGTERM ? SD_EXIT_SIGTERM : SD_EXIT_SIGINT;
    } else if (rc < 0) {
        status = sd_fatal(SD_EXIT_FATAL);
        if (S.use_af) sd_atomic_abort(&S.af);
    } else status = S.nerr ? SD_EXIT_PARTIAL : SD_EXIT_OK;
    for (size_t i = 0; i < S.nitems; i++) { jv_free(S.items[i].rec); free(S.items[i].src); }
    free(S.items);
    for (size_t i = 0; i < S.nkohya; i++) free(S.kohya_imgs[i]);
    free(S.kohya_imgs);
    jv_free(S.kohya);
    sd_strmap_free(&S.base_keys);
    sd_strmap_free(&S.kohya_keys);
    sd_jq_free(S.jq);
    sd_opts_free(&S.opts);
    return status;
}
