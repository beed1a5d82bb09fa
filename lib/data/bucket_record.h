/* Bucket settings and plans carried by records (sd-jsonl(5)): the keys sd-merge-meta writes for
 * a dataset config (resolution, enable_bucket, bucket_no_upscale, min_bucket_reso,
 * max_bucket_reso, bucket_reso_steps) override a tool's options, and the plan sd-bucket writes
 * (image_size, bucket, resized, crop_ltrb) is read back for the tools after it. libjq values:
 * main thread only. */
#ifndef SD_DATA_BUCKET_RECORD_H
#define SD_DATA_BUCKET_RECORD_H

#include <jv.h>

#include "base/opts.h"
#include "data/bucket.h"

/* The record's "image" (the source path) as a copy the caller frees. SD_OK, or SD_EFORMAT
 * "key 'image': missing" / "key 'image': empty path" / a type error, SD_ENOMEM. */
int sd_bucket_record_image(jv rec, char **out);

/* The record's "resize_interpolation" (sd_bucket_interp_from_name): 1 with *filter set, 0 when
 * absent (*filter untouched), else an error "key 'resize_interpolation': ..." (SD_EFORMAT for a
 * non-string, SD_EINVAL/SD_EUNSUPPORTED for a name). */
int sd_bucket_record_filter(jv rec, int *filter);

/* *out = *def overridden by the record's keys. `have_def_res`: def->res_w/res_h are set (from
 * --resolution). Returns 1 with a complete configuration, 0 when neither the options nor the
 * record give a resolution, SD_EFORMAT for a key of the wrong type or range ("key
 * 'min_bucket_reso': 70000 is out of range [0, 65536]"). */
int sd_bucket_record_cfg(jv rec, const sd_bucket_cfg *def, int have_def_res, sd_bucket_cfg *out);

/* A tool's bucket options as its option table fills them: --resolution W[,H] (n = 0: not given;
 * one number means square), --enable_bucket, --no_bucket, --min_bucket_reso, --max_bucket_reso,
 * --bucket_reso_steps, --bucket_no_upscale. */
typedef struct sd_bucket_opts {
    sd_opt_list resolution;
    int enable_bucket, no_bucket;
    int min_reso, max_reso, steps, no_upscale;
} sd_bucket_opts;

/* sd_bucket_record_cfg with the defaults taken from a tool's options (bucketing is on when
 * enable_bucket is set and no_bucket is not); same returns. */
int sd_bucket_record_cfg_opts(jv rec, const sd_bucket_opts *o, sd_bucket_cfg *out);

/* The plan of a record written by sd-bucket: 1 when it has a "bucket" key (then image_size,
 * resized and crop_ltrb must be there too and consistent: resized >= bucket on both sides; the
 * centre-trim offsets are recomputed), 0 when it has none, SD_EFORMAT otherwise. ar_error is
 * read when present (else 0). */
int sd_bucket_record_plan(jv rec, sd_bucket_plan *p);

/* Bucket sets for records that carry their own settings: one sd_bucket_set per distinct
 * configuration (configurations giving the same buckets share one: with bucketing off only the
 * resolution counts), built on first use. Entries never move. Zero-initialise; main thread. */
typedef struct sd_bucket_set_entry {
    sd_bucket_cfg cfg; /* as first asked for */
    sd_bucket_set set;
    int ok;            /* sd_bucket_set_init succeeded (else `err` is its message) */
    char *err;
    int index;         /* 0, 1, ... in order of creation */
} sd_bucket_set_entry;

typedef struct sd_bucket_sets {
    sd_bucket_set_entry **e;
    int n, cap;
} sd_bucket_sets;

/* Whether two configurations give the same buckets. */
int sd_bucket_cfg_same(const sd_bucket_cfg *x, const sd_bucket_cfg *y);
/* The entry for `cfg`, found or made (*created, when not NULL, says which). NULL with SD_ENOMEM
 * set when out of memory. */
sd_bucket_set_entry *sd_bucket_sets_get(sd_bucket_sets *s, const sd_bucket_cfg *cfg, int *created);
void sd_bucket_sets_free(sd_bucket_sets *s);

#endif
