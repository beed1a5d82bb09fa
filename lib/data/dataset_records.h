/* The records a resolved dataset config trains on (reference-behaviour.md §1.9, §1.10, §4.6):
 * for each dataset and subset in order, one record per image, as sd-merge-meta writes them
 * (sd-merge-meta(1), sd-jsonl(5)):
 *
 *   DreamBooth / ControlNet subsets: the images directly in image_dir (the five extensions in
 *   lower or upper case, no dot files, sorted); caption from <image minus extension>
 *   <caption_extension> (first line, or with enable_wildcard all non-blank lines), else the
 *   face-crop name (path without extension with >= 5 '_'-fields minus the last four), else
 *   class_tokens, else "" (one warning per subset); with cache_info, image_dir/
 *   metadata_cache.json is read instead when it exists, and written (captions and header-probed
 *   sizes) when it does not; ControlNet: `conditioning_image`, the image of the same stem in
 *   conditioning_data_dir (the first in sorted order), and `conditioning_resize_interpolation`,
 *   the dataset's resize_interpolation when set (an image without a conditioning image fails its
 *   record; a conditioning image that no image of the dataset paired with, compared by absolute
 *   path without extension, is an error after the dataset's records).
 *   Fine-tuning subsets: each entry of metadata_file (JSON or JSONL), its image resolved with
 *   sd_meta_find_image(key, image_dir), the entry's keys copied after `image`.
 *
 * Every record then gets `dataset`, `subset`, `method` and every non-null record parameter
 * (sd_dc_record_keys()), the subset's value first, then the dataset's.
 *
 * A record that cannot be built (unreadable / non-UTF-8 / empty caption file, missing image,
 * missing image_dir) goes to `error` and is skipped; a metadata file that cannot be read at
 * all is fatal (returned). The library prints nothing. */
#ifndef SD_DATA_DATASET_RECORDS_H
#define SD_DATA_DATASET_RECORDS_H

#include "data/dataset_config.h"

typedef struct sd_dataset_sink {
    void *ctx;
    /* One record (consumed). `src` and `line` say where it came from (an image path, or the
     * metadata file and its JSONL line). A negative return stops everything (fatal). */
    int (*record)(void *ctx, jv rec, const char *src, long line);
    /* A failed record or subset: a one-line message naming the file and the problem. */
    void (*error)(void *ctx, const char *src, long line, const char *msg);
    /* A warning; may be NULL. */
    void (*warning)(void *ctx, const char *msg);
} sd_dataset_sink;

/* Returns SD_OK, a fatal error of the library (message set), or the sink's negative return. */
int sd_dataset_records(const sd_dataset_config *cfg, const sd_dataset_sink *sink);

#endif
