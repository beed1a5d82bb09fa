/* Dataset configuration of kohya-ss/sd-scripts (reference-behaviour.md §1): the
 * `--dataset_config` TOML/JSON file ([general], [[datasets]], [[datasets.subsets]]) and the
 * legacy folder convention (`--train_data_dir` of `<repeats>_<class tokens>` folders,
 * `--reg_data_dir`, `--in_json`), resolved into datasets of subsets whose every parameter has
 * its effective value.
 *
 * Validation, as the reference's schema does it:
 *   - top level: only `general` (table) and `datasets` (array of tables); each dataset's
 *     `subsets` an array of tables;
 *   - each key must be allowed at its level for the dataset's method (§1.3): dataset keys in
 *     [general] and [[datasets]] only, `image_dir`/`is_reg`/`alpha_mask`/`metadata_file`/
 *     `conditioning_data_dir` in subsets only, DreamBooth keys (`class_tokens`,
 *     `caption_extension`, `cache_info`) not in fine-tuning datasets or subsets, ...;
 *   - types: bool, int, number (float or int), string, resolution (int or [int, int]),
 *     face_crop_aug_range ([number, number]), custom_attributes (table), resize_interpolation
 *     (one of lanczos nearest bilinear linear bicubic cubic area box). TOML/JSON numbers reach us
 *     as doubles, so a key the reference types as float also accepts an integer literal.
 *   - method per dataset (§1.4): ControlNet (with SD_DC_CONTROLNET, every subset has
 *     conditioning_data_dir), fine-tuning (every subset has metadata_file), DreamBooth (none
 *     has); a mix is an error. Required keys: image_dir (DreamBooth, ControlNet),
 *     metadata_file (fine-tuning), conditioning_data_dir (ControlNet).
 * Errors are SD_EFORMAT with one line "FILE:LINE: PATH: problem", e.g.
 *   "data.toml:14: datasets[0].subsets[1].image_dirs: unknown key (did you mean 'image_dir'?)"
 * (LINE is left out where it cannot be found, e.g. in a config given as jv only).
 *
 * Resolution (§1.2): a subset parameter is the first non-null value of subset, dataset,
 * [general], the command line (`cli`: an object of config key names; the tool renames
 * train_batch_size -> batch_size and dataset_repeats -> num_repeats), then the built-in default
 * (the reference's argparse defaults: caption_extension ".caption", caption_separator ",",
 * keep_tokens_separator "", num_repeats 1, batch_size 1, 256/1024/64 buckets, ...). A leading
 * dot is added to caption_extension.
 *
 * After resolution (§1.4, §1.5): subsets with num_repeats < 1 and duplicate subsets of one
 * dataset (same image_dir / metadata_file / both dirs) are dropped with a warning; with
 * enable_bucket, min_bucket_reso is rounded down and max_bucket_reso up to multiples of
 * bucket_reso_steps (warning) and the resolution must lie within them (error);
 * bucket_reso_steps must be positive; validation_split outside [0, 1] is a warning.
 * The model-dependent check of bucket_reso_steps (multiple of 64 for SD1/2, 32 for SDXL) and
 * "resolution is required" are left to the stages that know the model (sd-bucket, sd-train).
 * Warnings are collected in `warnings` (the library never prints). */
#ifndef SD_DATA_DATASET_CONFIG_H
#define SD_DATA_DATASET_CONFIG_H

#include <jv.h>

enum sd_dc_method { SD_DC_DREAMBOOTH = 0, SD_DC_FINETUNE = 1, SD_DC_CONTROLNET = 2 };

enum sd_dc_flags {
    SD_DC_CONTROLNET_OK = 1,   /* accept conditioning_data_dir (the reference: --masked_loss) */
};

typedef struct sd_dc_subset {
    jv params;     /* every parameter of the method's subset, resolved; null = None */
    int index;     /* position in the config's subsets array */
    int line;      /* line of its table in the config (0 = unknown) */
} sd_dc_subset;

typedef struct sd_dc_dataset {
    int method;    /* sd_dc_method */
    jv params;     /* dataset parameters, resolved */
    int index;
    int nsubsets;
    sd_dc_subset *subsets;
} sd_dc_dataset;

typedef struct sd_dataset_config {
    char *name;    /* the file, or a description of the folders */
    int ndatasets;
    sd_dc_dataset *datasets;
    int nwarnings;
    char **warnings;
} sd_dataset_config;

/* Read FILE (".toml" or ".json", case-insensitive; anything else is an error), validate and
 * resolve it. `cli` (borrowed) may be jv_null(). On failure *out is empty and freeable. */
int sd_dataset_config_load(const char *path, jv cli, unsigned flags, sd_dataset_config *out);
/* The same for an already parsed config (borrowed). `text` (may be NULL) is the source, used
 * only to find line numbers for messages; `is_toml` says which syntax it is. */
int sd_dataset_config_from_jv(jv cfg, const char *name, const char *text, int is_toml, jv cli,
                              unsigned flags, sd_dataset_config *out);
/* The legacy folder convention (§1.6). With `in_json`: one fine-tuning dataset with one subset
 * {image_dir: train_data_dir (may be NULL), metadata_file: in_json}. Otherwise one DreamBooth
 * dataset: every immediate subdirectory of train_data_dir named `<repeats>_<class tokens>`
 * (then of reg_data_dir, with is_reg), in directory listing order as the reference (whose
 * Path.iterdir() is unsorted); folders whose name does not start with an integer and '_' are
 * skipped with a warning, repeats < 1 skipped. A missing directory is SD_ENOTFOUND
 * ("DIR: No such file or directory"). */
int sd_dataset_config_folders(const char *train_data_dir, const char *reg_data_dir,
                              const char *in_json, jv cli, unsigned flags, sd_dataset_config *out);
void sd_dataset_config_free(sd_dataset_config *c);

/* "dreambooth", "fine_tuning", "controlnet" */
const char *sd_dc_method_name(int method);
/* Split a folder name `<repeats>_<class tokens>` as the reference does: returns the repeats
 * (0 when the first '_'-field is not an integer) and *class_tokens (malloc'd, the other fields
 * joined with '_'; "" when there are none). */
int sd_dc_parse_folder_name(const char *name, char **class_tokens);

/* The parameter names a record carries for a dataset of this method, in record order: the
 * dataset parameters, then the subset ones, without those that only matter for finding images
 * and captions (image_dir, metadata_file, conditioning_data_dir, caption_extension,
 * cache_info). NULL-terminated. */
const char *const *sd_dc_record_keys(void);
/* 1 if `key` is any dataset-config parameter name (used to strip them when writing the
 * reference's metadata JSON). */
int sd_dc_is_param(const char *key);

#endif
