/* The training loop of sd-train (reference-behaviour.md §6.5–§6.12, §7): LoRA on SD1.x/SD2.x and
 * SDXL (sdxl_train_network.py: two text encoders, context cat(TE1 layer 11, TE2 penultimate), the
 * UNet's vector cat(TE2 pooled, size embedding), --cache_text_encoder_outputs[_to_disk] §4.8).
 *
 *   sd_train_config c;  sd_train_config_default(&c);   ... options ...
 *   sd_train_data d;    sd_train_data_add_record(&d, rec, ...) per JSON record (or from a dataset config)
 *   rc = sd_train_run(&c, &d);     // SD_OK, SD_EINTR (stopped by *c.stop: state written), errors
 *
 * One step (per micro batch of one bucket): latents (cached files, or encoded with the VAE) ×
 * scale_factor; captions processed (text/caption.h), tokenised (75/150/225) and encoded by the
 * CLIP text encoder (frozen unless text-encoder LoRA modules train); noise, timesteps, offsets,
 * input perturbation (diffusion/objective.h); UNet forward with the LoRA modules attached, loss,
 * per-sample weights, gradient, backward through the UNet (and the text encoder); on sync steps
 * gradient clipping, the optimizer step (train/optim.h), the LR scheduler (with --mixed_precision
 * fp16 the loss gradient is scaled and the gradients unscaled first; a step with inf/NaN gradients
 * is skipped: no optimizer step, no scheduler step, the scale backs off; train/loss_scale.h); sample
 * images before training, after optimizer steps and
 * at epoch ends as requested (train/loop_sample.h); the validation loss after optimizer steps and at
 * epoch ends (train/validation.h). Every random number comes from Philox streams keyed
 * by (seed, micro step, sample, purpose), the micro step being epoch × batches_per_epoch + batch
 * index, so runs are reproducible, independent of the thread count, and resumable exactly. */
#ifndef SD_TRAIN_LOOP_H
#define SD_TRAIN_LOOP_H

#include <signal.h>
#include <stdint.h>

#include <jv.h>

#include "base/opts.h"
#include "data/bucket.h"
#include "text/caption.h"
#include "train/ti.h"

/* Every option of the loop, named as the reference names them (the tool's option table points
 * into this struct). Strings are borrowed. */
typedef struct sd_train_config {
    /* model */
    const char *model;                 /* --pretrained_model_name_or_path / --model */
    const char *model_config;
    const char *vae;                   /* --vae: replacement VAE for --cache_latents */
    int v2, v_parameterization;
    int clip_skip;                     /* 0 = None */
    int max_token_length;              /* 0 = None (75), 150, 225 */
    /* textual inversion (--method ti; train/ti.h): off for LoRA */
    sd_ti_opts ti;
    /* network */
    const char *network_module;        /* "networks.lora" */
    int network_dim;                   /* 0 = None → 4 */
    double network_alpha;              /* NAN = default 1 (an int) */
    int network_alpha_is_int;          /* the alpha came from an integer (default / TOML int) */
    double network_dropout;            /* 0 = None */
    const sd_opt_list *network_args;
    const char *network_weights;
    int dim_from_weights;
    const sd_opt_list *base_weights;   /* LoRA files merged into the model before the network is built */
    const sd_opt_list *base_weights_multiplier;   /* one per file at most; missing ones 1.0 */
    int train_unet_only, train_text_encoder_only;
    double unet_lr, text_encoder_lr;   /* NAN = None */
    double scale_weight_norms;         /* 0 = None */
    /* full-weight training (train/full.h): method 0 LoRA, 1 DreamBooth (train_db), 2 fine-tune */
    int method;                        /* sd_train_method */
    double learning_rate_te;           /* NAN = None (the UNet's) */
    int has_stop_text_encoder_training;
    int64_t stop_text_encoder_training;   /* db: -1 = TE not trained, N = stop at step N */
    int train_text_encoder;            /* ft (SDXL: db and ft): --train_text_encoder */
    double learning_rate_te1, learning_rate_te2;   /* SDXL db/ft: NAN = None (--learning_rate) */
    const char *block_lr;              /* SDXL db/ft: --block_lr, 23 comma-separated LRs; NULL = None */
    int fused_backward_pass;           /* SDXL db/ft: optimizer steps inside the backward (train/fused.h) */
    int fused_optimizer_groups;        /* SDXL db/ft: N optimizers stepping inside the backward; 0 = off */
    int no_half_vae;                   /* --no_half_vae: a saved full checkpoint keeps the VAE float32 */
    int full_fp16, full_bf16;          /* trained weights, gradients and optimizer states in f16 / bf16
                                          (train/optim.h sd_optim_set_half) */
    int fp8_base, fp8_base_unet;       /* --fp8_base (UNet + TE) / --fp8_base_unet (UNet): frozen linear/conv
                                          weights stored as float8_e4m3fn (LoRA on the host only) */
    int use_safetensors;               /* --use_safetensors */
    /* optimizer / schedule */
    const char *optimizer_type;
    int use_8bit_adam, use_lion_optimizer;
    const sd_opt_list *optimizer_args;
    double learning_rate;
    double max_grad_norm;
    const char *lr_scheduler;
    const char *lr_warmup_steps;       /* int_or_float text */
    int lr_scheduler_num_cycles;
    double lr_scheduler_power;
    int lr_scheduler_num_cycles_given, lr_scheduler_power_given;   /* set by the user: warn where unused */
    int lr_warmup_steps_given;         /* ss_lr_warmup_steps: argparse's int 0 when not given */
    const char *lr_decay_steps;        /* int_or_float text; NULL = not given (0) */
    int has_lr_scheduler_timescale;    /* --lr_scheduler_timescale given (0: None) */
    int64_t lr_scheduler_timescale;
    double lr_scheduler_min_lr_ratio;  /* NaN = None */
    const sd_opt_list *lr_scheduler_args;   /* "key=value" items */
    int gradient_accumulation_steps;
    int gradient_checkpointing;
    int64_t max_train_steps;
    int max_train_epochs;              /* 0 = None */
    int64_t seed;                      /* < 0 = None (random) */
    const char *mixed_precision;       /* "no", "bf16", "fp16" (with dynamic loss scaling, train/loss_scale.h) */
    /* data */
    int train_batch_size;
    int cache_latents, cache_latents_to_disk;
    /* SDXL (§4.8): TE1/TE2 outputs computed once per sample (in memory, or reused/written as
       <image stem>_te_outputs.npz); needs --network_train_unet_only and deterministic captions */
    int cache_text_encoder_outputs, cache_text_encoder_outputs_to_disk;
    /* bucketing of records without a plan (encoded on the fly with --cache_latents) */
    int enable_bucket, min_bucket_reso, max_bucket_reso, bucket_reso_steps, bucket_no_upscale;
    double prior_loss_weight;
    int weighted_captions;
    sd_caption_opts caption;           /* command-line caption options (records may override) */
    double token_warmup_step_f;        /* < 1: fraction of max_train_steps */
    int flip_aug;
    int color_aug, random_crop;        /* --color_aug / --random_crop: records' defaults (uncached images only) */
    int has_face_crop;                 /* --face_crop_aug_range given: face_crop[0..1] = low, high */
    double face_crop[2];
    int masked_loss;                   /* --masked_loss: weight the loss by the samples' masks (§1.11) */
    int alpha_mask;                    /* --alpha_mask: every record's default alpha_mask (a record's key wins) */
    /* objective */
    double noise_offset;               /* 0 = None */
    int noise_offset_random_strength;
    double adaptive_noise_scale;       /* 0 = None */
    int multires_noise_iterations;     /* 0 = None */
    double multires_noise_discount;
    double ip_noise_gamma;             /* 0 = None */
    int ip_noise_gamma_random_strength;
    int zero_terminal_snr;
    int min_timestep, max_timestep;    /* -1 = None */
    const char *loss_type, *huber_schedule;
    double huber_c, huber_scale;
    double min_snr_gamma;              /* 0 = None */
    int scale_v_pred_loss_like_noise_pred;
    double v_pred_like_loss;           /* 0 = None */
    int debiased_estimation_loss;
    /* output */
    const char *output_dir, *output_name;
    const char *save_precision;        /* NULL, "float", "fp16", "bf16" */
    const char *save_model_as;         /* LoRA: "safetensors"; db/ft: NULL = the source's format, ckpt, safetensors */
    int save_every_n_epochs, save_every_n_steps;
    int save_n_epoch_ratio;            /* > 0: save_every_n_epochs = max(1, floor(epochs / N)) (the reference's) */
    int save_last_n_epochs, save_last_n_steps, save_last_n_epochs_state, save_last_n_steps_state;
    int save_state, save_state_on_train_end;
    const char *resume;
    /* train_network.py's --initial_step / --initial_epoch / --skip_until_initial_step (LoRA only):
       initial_mode 0 none, 1 initial_step = the optimizer step, 2 initial_step = the epoch (1 = first) */
    int initial_mode;
    int64_t initial_step;
    int skip_until_initial_step;
    int debug_dataset;                 /* print the batches' samples (train_util.debug_dataset), do not train */
    int no_metadata;
    const char *training_comment;
    const char *metadata_title, *metadata_author, *metadata_description, *metadata_license, *metadata_tags;
    const char *metadata_usage_hint, *metadata_thumbnail, *metadata_merged_from, *metadata_trigger_phrase,
        *metadata_preprocessor, *metadata_is_negative_embedding;   /* modelspec.* extras; NULL = not given */
    int reso_w, reso_h;                /* --resolution (metadata only when records carry buckets) */
    /* sample images during training (§6.13; train/loop_sample.h) */
    const char *sample_prompts;        /* prompt file (.txt/.toml/.json) */
    const char *controlnet_model;      /* --method controlnet: --controlnet_model_name_or_path (ldm or Diffusers names) */
    int sample_every_n_steps;          /* 0 = None */
    int sample_every_n_epochs;         /* 0 = None; when set, sample_every_n_steps is ignored */
    int sample_at_first;
    const char *sample_sampler;        /* NULL = "ddim" */
    /* validation (§1.8, §6.14; train/validation.h) */
    double validation_split;           /* --validation_split; NAN = not given (0.0) */
    int has_validation_seed;
    int64_t validation_seed;           /* --validation_seed (split seed; pass seed, else --seed) */
    int validate_every_n_steps;        /* 0 = None */
    int validate_every_n_epochs;       /* 0 = None (every epoch) */
    int64_t max_validation_steps;      /* < 0 = None (the whole validation set) */
    /* logging */
    const char *logging_dir, *log_prefix, *log_tracker_name, *log_jsonl;
    const char *options_json;          /* snapshot of the options for the state (JSON object) */
    /* tests: noise ε [B][per] and timesteps for a micro batch (idx: the samples' indices in the
     * data, in batch order) instead of the Philox draws; NULL = off */
    int (*inject)(void *user, int64_t micro, const int64_t *idx, int B, int64_t per, float *noise, int *t);
    void *inject_user;
    /* runtime */
    int threads;
    int device_index;                  /* -1 (SD_DEVICE_CPU): the CPU; N: CUDA device N (a CUDA build) */
    volatile sig_atomic_t *stop;       /* set by a signal handler: finish the step, save, return SD_EINTR */
    int stop_signal;                   /* out: the signal number seen (for the exit status) */
    char *state_written;               /* out: the state directory written at a stop (malloc'd) */
} sd_train_config;

void sd_train_config_default(sd_train_config *c);

/* ---- training data ------------------------------------------------------------------------------- */

typedef struct sd_train_sample {
    char *latents;            /* latent file (sd-latent(5)) or NULL */
    char *image;              /* image path (for --cache_latents) or NULL */
    char *caption;            /* the stored caption (fine-tuning: caption + separator + tags) */
    char *tags;               /* the record's `tags` (fine-tuning; ss_tag_frequency) or NULL */
    int dataset, subset, is_reg, num_repeats, batch_size;   /* subset: the record's `subset` (-1: none) */
    int bucket_w, bucket_h;   /* pixels; from `bucket`, or the latent shape × 8 */
    int flip_aug;
    int color_aug, random_crop;   /* augment the image at every step (data/augment.h; live samples only) */
    int live;                 /* no latent file and no --cache_latents: the image is encoded at every step */
    int has_face_range;       /* face_crop_aug_range (record or --face_crop_aug_range): [face_lo, face_hi] */
    double face_lo, face_hi;
    int face;                 /* live, bucketing disabled, a face in the file name: crop around it each step */
    int face_cx, face_cy, face_w, face_h;
    int has_caption_opts;
    sd_caption_opts cap;      /* per-record caption options (strings owned by the data) */
    double token_warmup_step_f;
    /* SDXL size conditioning (§3.3): the source image's size and the recorded crop (from the latent
       file, or the bucket plan of --cache_latents); has_size 0: the bucket size, no crop */
    int has_size;
    int orig_w, orig_h;
    double crop_ltrb[4];
    /* --cache_text_encoder_outputs: [seqlen, 768] TE1 layer 11, [seqlen, 1280] TE2 penultimate, [1280]
       pooled (owned; NULL until cached) */
    float *te_hs1, *te_hs2, *te_pool;
    /* --cache_latents: the bucket settings or plan of the record, and the latents once encoded */
    int has_plan, has_bcfg;
    sd_bucket_plan plan;
    sd_bucket_cfg bcfg;
    int resize_filter;        /* the record's resize_interpolation, sd_resample_filter + 1 (0: automatic) */
    float *mem, *mem_flip;    /* [4, bucket_h/8, bucket_w/8] (owned) */
    /* alpha mask (§1.11): alpha 1 when the record asks for one (alpha_mask / --alpha_mask: the latent
       file must hold an alpha_mask member; --cache_latents keeps the image's alpha/255 here) */
    int alpha;
    float *mask_mem;          /* [mask_h, mask_w] at bucket pixels (owned; --cache_latents) */
    int mask_w, mask_h;
    /* conditioning-image mask (§1.11, a ControlNet subset's `conditioning_image`, --masked_loss):
       the image, loaded at every step (as the reference's __getitem__) and resized to the bucket;
       cond_bucket: the record's enable_bucket (its size must equal the original image's, which is
       cond_ow × cond_oh, set before training); cond_filter: the record's
       conditioning_resize_interpolation (its dataset's resize_interpolation), sd_resample_filter + 1
       (0: none, the reference's automatic choice) */
    char *cond;
    int cond_bucket, cond_filter;
    int cond_ow, cond_oh;
    /* validation split (train/validation.h): the record's method and dataset keys */
    int method_ft;            /* method "fine_tuning" (not split: validated on a copy) */
    double validation_split;  /* NAN: the record has none */
    int has_validation_seed;
    int64_t validation_seed;
} sd_train_sample;

typedef struct sd_train_data {
    sd_train_sample *s;
    size_t n, cap;
    char **strs;              /* owned strings of the caption options */
    size_t nstrs, capstrs;
    int ndatasets;
    size_t cond_alpha_off;    /* records with a conditioning_image whose alpha_mask was turned off (warned) */
    int use_dataset_config;   /* --dataset_config: ss_datasets etc. instead of the legacy keys */
    int has_config;
    jv config;                /* sd_train_data_set_config: [{"method", "params", "subsets": [params]}] */
} sd_train_data;

void sd_train_data_init(sd_train_data *d);
void sd_train_data_free(sd_train_data *d);
/* Add one record (borrowed): keys latents, image, caption, tags, method, dataset, is_reg,
 * num_repeats, batch_size, bucket, flip_aug and the subset caption keys (shuffle_caption,
 * keep_tokens, ...) which override the command line, color_aug and random_crop. A record without
 * `latents` needs `image` (encoded once with --cache_latents, else at every step); color_aug /
 * random_crop need such a record and no --cache_latents. `conditioning_image` (a ControlNet
 * subset's mask image) needs --masked_loss and no random_crop. SD_EFORMAT (message without
 * position) for a bad record, SD_EUSAGE for an augmentation the latents cannot have and those
 * conditioning-image refusals. */
int sd_train_data_add_record(sd_train_data *d, const sd_train_config *c, jv rec);

/* ss_dataset_dirs (reg = 0) / ss_reg_dataset_dirs (reg = 1) as Python json.dumps writes them:
 * {"<folder>": {"n_repeats": r, "img_count": n}, ...} per image folder in first-seen order; with
 * tags_out also ss_tag_frequency {"<folder>": {"<tag>": count, ...}} over the stored captions split
 * at commas (reg < 0: every image). Both malloc'd. */
int sd_train_data_dirs_json(const sd_train_data *d, int reg, char **dirs_out, char **tags_out);

/* Keep what the metadata needs of the resolved dataset config the records came from (each
 * dataset's method and parameters, each subset's parameters with image_dir / metadata_file);
 * use_dataset_config: 1 for --dataset_config (train_network.py's ss_datasets, ss_tag_frequency,
 * ss_dataset_dirs), 0 for --train_data_dir / --in_json (the legacy keys of
 * sd_train_data_dirs_json). */
struct sd_dataset_config;
int sd_train_data_set_config(sd_train_data *d, const struct sd_dataset_config *cfg, int use_dataset_config);

/* The three JSON strings of a dataset-config run (meta.h sd_ss_datasets_json) from the data and
 * its batch plan (balanced repeats per sample: bucket counts), malloc'd. */
struct sd_batch_plan;
int sd_train_datasets_meta(const sd_train_data *d, const struct sd_batch_plan *plan, char **datasets,
                           char **tag_frequency, char **dataset_dirs);

/* Train. SD_OK when done; SD_EINTR when stopped by *c->stop (state written, c->state_written).
 * With a validation split, the validation samples are moved out of d first (d then holds the
 * training samples only; it stays freeable with sd_train_data_free). */
int sd_train_run(sd_train_config *c, sd_train_data *d);

#endif
