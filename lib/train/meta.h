/* Safetensors metadata of trained networks as the reference writes it (spec §6.12):
 *   - an ordered string map (sd_kv) that becomes the file's __metadata__ in insertion order;
 *   - the ss_* training metadata of train_network.py, from a table of Python values in the
 *     reference's key order, each written as Python's str() of the value;
 *   - the ModelSpec (modelspec.*) keys of library/sai_model_spec.py;
 *   - Python json.dumps formatting for the JSON-valued keys (ss_network_args, ...).
 *
 * Where we differ on purpose: modelspec.implementation_version is the caller's string (e.g.
 * "sd-train/0.1.0"; the reference writes "sd-scripts/<git commit>"), ss_sd_scripts_commit_hash is
 * whatever the caller puts there (default "(unknown)", what the reference writes outside git). */
#ifndef SD_TRAIN_META_H
#define SD_TRAIN_META_H

#include <jv.h>
#include <stddef.h>
#include <stdint.h>

/* ---- ordered string map ---------------------------------------------------------------------- */

typedef struct sd_kv {
    char **keys, **vals;
    size_t n, cap;
} sd_kv;

void sd_kv_init(sd_kv *m);
void sd_kv_free(sd_kv *m);
/* Set (a new key goes last; an existing key keeps its position, like a Python dict). */
int sd_kv_set(sd_kv *m, const char *key, const char *val);
int sd_kv_setf(sd_kv *m, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *sd_kv_get(const sd_kv *m, const char *key);
int sd_kv_copy(sd_kv *dst, const sd_kv *src);

/* ---- Python values ------------------------------------------------------------------------- */

typedef enum sd_pyv_kind { SD_PYV_UNSET = 0, SD_PYV_NONE, SD_PYV_BOOL, SD_PYV_INT, SD_PYV_FLOAT, SD_PYV_STR } sd_pyv_kind;

typedef struct sd_pyv {
    sd_pyv_kind kind;
    int64_t i;
    double f;
    const char *s;       /* borrowed */
} sd_pyv;

static inline sd_pyv sd_pyv_none(void) { sd_pyv v = { SD_PYV_NONE, 0, 0, 0 }; return v; }
static inline sd_pyv sd_pyv_bool(int b) { sd_pyv v = { SD_PYV_BOOL, b != 0, 0, 0 }; return v; }
static inline sd_pyv sd_pyv_int(int64_t i) { sd_pyv v = { SD_PYV_INT, i, 0, 0 }; return v; }
static inline sd_pyv sd_pyv_float(double f) { sd_pyv v = { SD_PYV_FLOAT, 0, f, 0 }; return v; }
/* NULL → None */
static inline sd_pyv sd_pyv_str(const char *s) { sd_pyv v = { s ? SD_PYV_STR : SD_PYV_NONE, 0, 0, s }; return v; }
/* str(v) into out (UNSET prints as None). */
char *sd_pyv_str_of(const sd_pyv *v, char *out, size_t n);

/* ---- ss_* keys ------------------------------------------------------------------------------ */

/* Keys in the reference's order. The first block is always written ("None" when unset). */
typedef enum sd_ss_key {
    SD_SS_SESSION_ID = 0, SD_SS_TRAINING_STARTED_AT, SD_SS_OUTPUT_NAME, SD_SS_LEARNING_RATE,
    SD_SS_TEXT_ENCODER_LR, SD_SS_UNET_LR, SD_SS_NUM_TRAIN_IMAGES, SD_SS_NUM_VALIDATION_IMAGES,
    SD_SS_NUM_REG_IMAGES, SD_SS_NUM_BATCHES_PER_EPOCH, SD_SS_NUM_EPOCHS, SD_SS_GRADIENT_CHECKPOINTING,
    SD_SS_GRADIENT_ACCUMULATION_STEPS, SD_SS_MAX_TRAIN_STEPS, SD_SS_LR_WARMUP_STEPS, SD_SS_LR_SCHEDULER,
    SD_SS_NETWORK_MODULE, SD_SS_NETWORK_DIM, SD_SS_NETWORK_ALPHA, SD_SS_NETWORK_DROPOUT,
    SD_SS_MIXED_PRECISION, SD_SS_FULL_FP16, SD_SS_V2, SD_SS_BASE_MODEL_VERSION, SD_SS_CLIP_SKIP,
    SD_SS_MAX_TOKEN_LENGTH, SD_SS_CACHE_LATENTS, SD_SS_SEED, SD_SS_LOWRAM, SD_SS_NOISE_OFFSET,
    SD_SS_MULTIRES_NOISE_ITERATIONS, SD_SS_MULTIRES_NOISE_DISCOUNT, SD_SS_ADAPTIVE_NOISE_SCALE,
    SD_SS_ZERO_TERMINAL_SNR, SD_SS_TRAINING_COMMENT, SD_SS_SD_SCRIPTS_COMMIT_HASH, SD_SS_OPTIMIZER,
    SD_SS_MAX_GRAD_NORM, SD_SS_CAPTION_DROPOUT_RATE, SD_SS_CAPTION_DROPOUT_EVERY_N_EPOCHS,
    SD_SS_CAPTION_TAG_DROPOUT_RATE, SD_SS_FACE_CROP_AUG_RANGE, SD_SS_PRIOR_LOSS_WEIGHT,
    SD_SS_MIN_SNR_GAMMA, SD_SS_SCALE_WEIGHT_NORMS, SD_SS_IP_NOISE_GAMMA, SD_SS_DEBIASED_ESTIMATION,
    SD_SS_NOISE_OFFSET_RANDOM_STRENGTH, SD_SS_IP_NOISE_GAMMA_RANDOM_STRENGTH, SD_SS_LOSS_TYPE,
    SD_SS_HUBER_SCHEDULE, SD_SS_HUBER_SCALE, SD_SS_HUBER_C, SD_SS_FP8_BASE, SD_SS_FP8_BASE_UNET,
    SD_SS_VALIDATION_SEED, SD_SS_VALIDATION_SPLIT, SD_SS_MAX_VALIDATION_STEPS,
    SD_SS_VALIDATE_EVERY_N_EPOCHS, SD_SS_VALIDATE_EVERY_N_STEPS, SD_SS_RESIZE_INTERPOLATION,
    SD_SS_ALWAYS_END,
    /* with --dataset_config (JSON strings from the caller) */
    SD_SS_DATASETS = SD_SS_ALWAYS_END, SD_SS_TAG_FREQUENCY_CFG, SD_SS_DATASET_DIRS_CFG,
    /* without: the legacy keys */
    SD_SS_BATCH_SIZE_PER_DEVICE, SD_SS_TOTAL_BATCH_SIZE, SD_SS_RESOLUTION, SD_SS_COLOR_AUG,
    SD_SS_FLIP_AUG, SD_SS_RANDOM_CROP, SD_SS_SHUFFLE_CAPTION, SD_SS_ENABLE_BUCKET,
    SD_SS_BUCKET_NO_UPSCALE, SD_SS_MIN_BUCKET_RESO, SD_SS_MAX_BUCKET_RESO, SD_SS_KEEP_TOKENS,
    SD_SS_DATASET_DIRS, SD_SS_REG_DATASET_DIRS, SD_SS_TAG_FREQUENCY, SD_SS_BUCKET_INFO,
    /* conditional: written only when set */
    SD_SS_NETWORK_ARGS, SD_SS_SD_MODEL_HASH, SD_SS_NEW_SD_MODEL_HASH, SD_SS_SD_MODEL_NAME,
    SD_SS_VAE_HASH, SD_SS_NEW_VAE_HASH, SD_SS_VAE_NAME,
    SD_SS_COUNT
} sd_ss_key;

/* "ss_session_id", ... */
const char *sd_ss_key_name(sd_ss_key k);

typedef struct sd_ss_facts {
    sd_pyv v[SD_SS_COUNT];
    int use_dataset_config;    /* 1: the --dataset_config keys; 0: the legacy block */
} sd_ss_facts;

/* All values UNSET (→ "None" for always-keys, omitted for conditional ones). */
void sd_ss_facts_init(sd_ss_facts *f);
/* The metadata train_network.py builds before training, in its order. no_metadata: only the
 * minimum keys (ss_v2, ss_base_model_version, ss_network_module, ss_network_dim,
 * ss_network_alpha, ss_network_args). */
int sd_ss_metadata(const sd_ss_facts *f, int no_metadata, sd_kv *out);
/* What save_model adds at each save: ss_training_finished_at = str(time), ss_steps, ss_epoch
 * (skipped with no_metadata, as the reference updates only the full dict then). */
int sd_ss_metadata_at_save(sd_kv *m, double finished_at, int64_t steps, int64_t epoch, int no_metadata);

/* ---- ss_datasets / ss_tag_frequency / ss_dataset_dirs (with --dataset_config) -------------------- */

/* One subset as train_network.py describes it. Strings NULL → null. */
typedef struct sd_ss_subset_meta {
    int64_t img_count, num_repeats;
    int color_aug, flip_aug, random_crop, shuffle_caption, enable_wildcard;
    int64_t keep_tokens;
    const char *keep_tokens_separator, *secondary_separator, *caption_prefix, *caption_suffix;
    const char *resize_interpolation;
    const char *image_dir;       /* path (its os.path.basename is written); NULL/"" → key left out */
    const char *class_tokens;    /* DreamBooth */
    int is_reg;                  /* DreamBooth */
    const char *metadata_file;   /* fine-tuning: path (basename written) */
} sd_ss_subset_meta;

/* One caption of a dataset's tag frequency: set_tag_frequency(dir, [caption]) in order. */
typedef struct sd_ss_caption_src {
    const char *dir;             /* basename of image_dir (DreamBooth) or metadata_file (fine-tuning) */
    const char *caption;
} sd_ss_caption_src;

typedef struct sd_ss_dataset_meta {
    int is_dreambooth;
    int controlnet;                      /* a ControlNet (conditioning-image) dataset: the reference's
                                            ControlNetDataset keeps its subsets, buckets and tags in a
                                            delegate, so min/max_bucket_reso are null (and the caller
                                            gives enable_bucket 0, no captions, subsets, bucket_info) */
    int64_t batch_size, num_train_images, num_reg_images;
    int width, height, enable_bucket;
    int64_t min_bucket_reso, max_bucket_reso;
    const sd_ss_caption_src *captions;   /* tag frequency sources, in the reference's order */
    size_t ncaptions;
    const char *bucket_info_json;        /* json.dumps(dataset.bucket_info); NULL → null */
    const char *resize_interpolation;
    const sd_ss_subset_meta *subsets;
    int nsubsets;
} sd_ss_dataset_meta;

/* The three JSON strings train_network.py writes for a dataset config (malloc'd): ss_datasets
 * (the list of dataset dicts with their subsets), ss_tag_frequency ({dir: {tag: count}}, a dir
 * counted once over all datasets) and ss_dataset_dirs ({dir or metadata basename [" (2)"...]:
 * {"n_repeats", "img_count"}}, reg subsets left out). Tags are split at ',', stripped of
 * whitespace and lower-cased (ASCII and Latin-1 letters; Python's str.lower() knows more). */
int sd_ss_datasets_json(const sd_ss_dataset_meta *ds, int n, char **datasets, char **tag_frequency,
                        char **dataset_dirs);

/* ---- ModelSpec ------------------------------------------------------------------------------- */

typedef struct sd_modelspec_args {
    int v2, v_parameterization, sdxl;
    int lora, textual_inversion;
    double timestamp;                /* time.time() at the save */
    const char *title;               /* --metadata_title, else output_name; NULL → "LoRA@<ts>" */
    int reso_w, reso_h;              /* --resolution; 0 → 512/768/1024 default */
    const char *author, *description, *license, *tags;
    int has_timesteps;               /* --min_timestep/--max_timestep given */
    int min_timestep, max_timestep;  /* (defaults 0 / 1000 for the one not given) */
    int clip_skip;                   /* < 0: None */
    /* --metadata_* extras (NULL = not given) */
    const char *usage_hint, *thumbnail, *merged_from, *trigger_phrase, *preprocessor,
        *is_negative_embedding;
    const char *implementation_version;   /* NULL → "sd-scripts/unknown" */
} sd_modelspec_args;

/* Append the modelspec.* keys in the reference's order (date: local ISO-8601 seconds of
 * int(timestamp)). A thumbnail that is not a data: URL is read as a file and embedded as
 * data:<mime>;base64,… (a missing file is skipped, as the reference does with a warning). */
int sd_modelspec_metadata(const sd_modelspec_args *a, sd_kv *out);

/* ---- Python json.dumps -------------------------------------------------------------------- */

/* json.dumps of a str → str dict in the given order (", " / ": " separators, ensure_ascii:
 * non-ASCII as \uXXXX, surrogate pairs above U+FFFF). malloc'd result in *out. Invalid UTF-8 is
 * SD_EINVAL. */
int sd_py_json_str_dict(const char *const *keys, const char *const *vals, size_t n, char **out);
/* json.dumps(value) of a jv (borrowed) with Python's default formatting: ", " and ": "
 * separators, keys in the object's iteration order, ensure_ascii strings, true/false/null,
 * numbers: integral values within ±2^53 as integers, others as repr(float) (NaN / Infinity /
 * -Infinity like Python's allow_nan). jv cannot tell 1 from 1.0: a float field whose value is
 * integral (e.g. "mean_img_ar_error": 0.0) comes out as 0 unless listed in `float_keys` (object
 * keys whose numbers are always written as floats; NULL-terminated, may be NULL). Uses libjq:
 * call it from the jq thread. */
int sd_py_json_dump(jv v, const char *const *float_keys, char **out);
/* json.dumps(str) appended to buf (cap) at *len; SD_ERANGE when it does not fit. */
int sd_py_json_string(const char *s, char *buf, size_t cap, size_t *len);

#endif
