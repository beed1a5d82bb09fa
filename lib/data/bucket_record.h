/* Bucket settings and plans carried by records (sd-jsonl(5)): the keys sd-merge-meta writes for
 * a dataset config (resolution, enable_bucket, bucket_no_upscale, min_bucket_reso,
 * max_bucket_reso, bucket_reso_steps) override a tool's options, and the plan sd-bucket writes
 * (image_size, bucket, resized, crop_ltrb) is read back for the tools after it. libjq values:
 * main thread only. */
#ifndef SD_DATA_BUCKET_RECORD_H
#define SD_DATA_BUCKET_RECORD_H

#include <jv.h>

#include "data/bucket.h"

/* *out = *def overridden by the record's keys. `have_def_res`: def->res_w/res_h are set (from
 * --resolution). Returns 1 with a complete configuration, 0 when neither the options nor the
 * record give a resolution, SD_EFORMAT for a key of the wrong type or range ("key
 * 'min_bucket_reso': 70000 is out of range [0, 65536]"). */
int sd_bucket_record_cfg(jv rec, const sd_bucket_cfg *def, int have_def_res, sd_bucket_cfg *out);

/* The plan of a record written by sd-bucket: 1 when it has a "bucket" key (then image_size,
 * resized and crop_ltrb must be there too and consistent: resized >= bucket on both sides; the
 * centre-trim offsets are recomputed), 0 when it has none, SD_EFORMAT otherwise. ar_error is
 * read when present (else 0). */
int sd_bucket_record_plan(jv rec, sd_bucket_plan *p);

#endif
