/* Full-weight training for sd-train: DreamBooth (kohya-ss/sd-scripts train_db.py) and native
 * fine-tuning (fine_tune.py) of SD1.x / SD2.x (spec §6.1, §6.3, §6.11).
 *
 * What trains (the reference's rules):
 *   db: every UNet weight; the text encoder too unless --stop_text_encoder_training is -1. With
 *       --stop_text_encoder_training N (N ≥ 0) the text encoder stops at global step N: from the
 *       first micro batch after optimizer step N it runs without gradients, gets none, and AdamW
 *       leaves its weights and moments alone (torch skips parameters whose grad is None).
 *   ft: every UNet weight; the text encoder only with --train_text_encoder.
 *   SDXL, db and ft alike (sdxl_train.py, which takes DreamBooth and fine-tuning datasets;
 *       sd_full_init_sdxl): the UNet when --learning_rate != 0; with --train_text_encoder TE1 / TE2
 *       when --learning_rate_te1 / te2 (default --learning_rate) != 0, TE1's last layer and
 *       final_layer_norm excepted (no gradient reaches them); groups "unet" or "block<i>"
 *       (--block_lr, blocks at 0 left out), "text_encoder1", "text_encoder2" (sd_full_groups_sdxl).
 * Optimizer groups, as the reference builds them: one group "unet" holding every trained weight
 * when --learning_rate_te is None (or the text encoder is not trained), else "unet" (LR
 * --learning_rate) and "text_encoder1" (LR --learning_rate_te). TensorBoard logs them as lr/unet
 * and lr/text_encoder1 (train_util.append_lr_to_logs(including_unet=True)).
 * Trained weights are f32 master copies (sd_params trainable parameters are always f32); only the
 * frozen ones (the VAE, a frozen text encoder) use --mixed_precision storage.
 *
 * Saving (model_util.save_stable_diffusion_checkpoint with the source checkpoint):
 *   every tensor of the source checkpoint is written: UNet and text encoder from the trained
 *   weights (single-file ldm names, models/sd_model.h sd_model_add_to_writer), the VAE from the
 *   loaded VAE or the source, and every other key (EMA copies, alphas_cumprod, ...) copied as it
 *   is. Dtypes: --save_precision for UNet/TE/VAE, else as in memory (UNet f32, text encoder f32
 *   when trained else the --mixed_precision dtype, VAE the --mixed_precision dtype); other keys
 *   keep the source dtype.
 *   .safetensors: the ModelSpec metadata of sai_model_spec.build_metadata(is_stable_diffusion_ckpt
 *   =True) and nothing else.
 *   .ckpt: torch.save({"state_dict": ..., "epoch": e, "global_step": s}) (zip format, pickle
 *   protocol 2; io/torch_save.h: the pickle torch 1.13 writes for that dict), e and s added to the
 *   source checkpoint's own "epoch"/"global_step". Written via a temporary .safetensors next to
 *   it (the tensors are written from its mapping), then renamed; files over 4 GiB (fp32 SD1.x is
 *   4.3 GB) get Zip64 records (io/zip.h), which torch.load and our reader read. */
#ifndef SD_TRAIN_FULL_H
#define SD_TRAIN_FULL_H

#include <stddef.h>
#include <stdint.h>

#include "models/sd_model.h"
#include "nn/params.h"
#include "tensor/tensor.h"
#include "train/lora_net.h"
#include "train/loss_scale.h"
#include "train/meta.h"
#include "train/optim.h"

typedef enum sd_train_method {
    SD_METHOD_LORA = 0,
    SD_METHOD_DB,      /* train_db.py */
    SD_METHOD_FT,      /* fine_tune.py */
    SD_METHOD_TI,      /* train_textual_inversion.py (train/ti.h) */
    SD_METHOD_CN,      /* train_control_net.py (train/loop_cn.c) */
} sd_train_method;

/* "lora"; "db", "dreambooth"; "ft", "finetune", "fine_tune"; "ti", "textual_inversion"; "controlnet"
 * (case-sensitive, as the tool's other choices). SD_EUSAGE naming the choices otherwise. */
int sd_train_method_parse(const char *s, sd_train_method *m);
const char *sd_train_method_name(sd_train_method m);   /* "lora", "db", "ft", "ti", "controlnet" */

#define SD_TE_STOP_NONE INT64_MAX
#define SD_FULL_SDXL_BLOCKS 23   /* sdxl_train_util.UNET_NUM_BLOCKS_FOR_BLOCK_LR */

typedef struct sd_full {
    sd_train_method method;
    int te_train;            /* the text encoder trains at the start */
    int64_t te_stop;         /* global step at which it stops (SD_TE_STOP_NONE: never) */
    sd_params *unet, *te;    /* the model's registries (borrowed) */
    uint8_t *skip;           /* per optimizer parameter: 1 for text-encoder weights */
    size_t nskip;
    /* SDXL (sdxl_train.py; sd_full_init_sdxl): what trains of UNet, TE1, TE2, the --block_lr LRs */
    int sdxl, unet_train, te1_train, te2_train;
    int has_block_lr;
    double block_lr[SD_FULL_SDXL_BLOCKS];
    double lr_te1, lr_te2;   /* the groups' LRs (--learning_rate_te1/te2, else --learning_rate) */
    sd_param **zero_lr;      /* UNet weights of --block_lr blocks at 0 (trained, not optimized), in
                                registry order */
    size_t nzero_lr;
    int zeroed_once;         /* sd_full_zero_grad ran (the first call zeroes every gradient) */
} sd_full;

/* Decide what trains. stop_te_given / stop_te: --stop_text_encoder_training (db);
 * train_text_encoder: --train_text_encoder (ft). */
void sd_full_init(sd_full *f, sd_train_method m, int stop_te_given, int64_t stop_te, int train_text_encoder);
void sd_full_free(sd_full *f);

/* SDXL, both methods (sdxl_train.py takes DreamBooth and fine-tuning datasets): the UNet trains when
 * learning_rate != 0; with train_text_encoder TE1 trains when its LR (lr_te1, NAN = learning_rate)
 * is not 0, TE2 likewise; block_lr: NULL or the --block_lr string (23 comma-separated LRs, SD_EUSAGE
 * otherwise). SD_EUSAGE when nothing would train. */
int sd_full_init_sdxl(sd_full *f, sd_train_method m, int train_text_encoder, double learning_rate, double lr_te1,
                      double lr_te2, const char *block_lr);
/* --block_lr group of a UNet key (model.diffusion_model.<name>): 0 time_embed/label_emb, 1 + i
 * input_blocks.i, 10 + i middle_block.i, 13 + i output_blocks.i, 22 out; -1 for anything else. */
int sd_full_sdxl_block(const char *key);

/* Before sd_model_load: mark the UNet (and the trained text encoder) trainable. */
int sd_full_mark(sd_full *f, sd_model *m);

/* After loading: the optimizer groups (learning_rate_te NAN = None), in the form the LoRA path
 * uses (freed with sd_lora_groups_free). */
int sd_full_groups(const sd_full *f, double learning_rate, double learning_rate_te, sd_lora_groups *g);
/* SDXL (sdxl_train.py): the UNet's group "unet" at learning_rate, or with --block_lr one group
 * "block<i>" per block whose LR is not 0 (the others are not optimized and keep their weights),
 * then "text_encoder1" (lr_te1), "text_encoder2" (lr_te2) for the trained encoders. */
int sd_full_groups_sdxl(const sd_full *f, double learning_rate, sd_lora_groups *g);
/* SDXL, after sd_optim_init: the UNet weights of --block_lr blocks at 0 into o's norm_extra (their
 * gradients count in the clipping norm, as the reference clips over every UNet parameter). */
int sd_full_norm_extra(sd_full *f, sd_optim *o);
/* After sd_optim_init: which optimizer parameters belong to the text encoder. */
int sd_full_bind(sd_full *f, const sd_optim *o);

/* The text encoder gets gradients in the step after global_step. */
static inline int sd_full_te_active(const sd_full *f, int64_t global_step)
{
    return f->te_train && global_step < f->te_stop;
}

/* Zero the gradients of every trained weight; after the first call not those of SDXL --block_lr
 * blocks at 0, which torch leaves to accumulate (they are in no optimizer group): they start at 0
 * in every process, as the reference's (a resumed run included). */
int sd_full_zero_grad(sd_ctx *ctx, sd_full *f);

/* The registries holding trained weights (UNet, then the text encoder when trained); returns
 * their count (1 or 2). */
int sd_full_registries(const sd_full *f, const sd_params **out);

/* The optimizer's per-parameter skip mask for sd_loss_scaler_optim_step: NULL while the text
 * encoder trains (te_active), else the text encoder's weights are skipped (a stopped text
 * encoder's gradients are zero, so they add nothing to the clipping norm either, as torch's
 * clip_grad_norm_ leaves out parameters whose grad is None). */
const uint8_t *sd_full_skip_mask(const sd_full *f, int te_active);

/* Bytes a full fine-tune holds in f32 for its trained weights: values, gradients and the two
 * AdamW moments (4 × 4 bytes per element). */
typedef struct sd_full_memory {
    int64_t numel;
    size_t weights, grads, moments;
} sd_full_memory;
void sd_full_memory_of(const sd_full *f, sd_full_memory *mem);

/* ---- saving --------------------------------------------------------------------------------- */

typedef enum sd_full_format { SD_FULL_SAFETENSORS = 0, SD_FULL_CKPT, SD_FULL_DIFFUSERS } sd_full_format;

/* The output format (§6.3 train_db/fine_tune): --save_model_as NULL = the source's format
 * (safetensors / ckpt; a Diffusers folder saves a Diffusers folder), "ckpt", "safetensors",
 * "diffusers", "diffusers_safetensors" (both a Diffusers folder with .safetensors weights: the
 * reference writes torch .bin for "diffusers" without --use_safetensors); anything else:
 * SD_EUSAGE. --use_safetensors turns ckpt into safetensors, as the reference's use_safetensors does. */
int sd_full_format_choose(const char *save_model_as, int use_safetensors, sd_model_format source,
                          sd_full_format *out);
/* Whether the run saves Diffusers folders (decided before the model is opened: a Diffusers save
 * needs the VAE loaded): --save_model_as diffusers*, or none and `model` is a folder. */
int sd_full_saves_diffusers(const char *save_model_as, const char *model);
const char *sd_full_format_ext(sd_full_format f);   /* ".safetensors" / ".ckpt" / "" (a folder) */

typedef struct sd_full_save_opts {
    sd_full_format format;
    int save_dtype;           /* -1: as in memory; else SD_ST_F32 / SD_ST_F16 / SD_ST_BF16 */
    sd_st_dtype weight_dtype; /* --mixed_precision dtype of frozen parts (F32 / F16 / BF16) */
    int te_trained;           /* the text encoder was trained (saved f32 when save_dtype < 0) */
    int full_half;            /* --full_fp16/--full_bf16: UNet and text encoder saved in weight_dtype when save_dtype < 0 */
    int vae_f32;              /* --no_half_vae: the VAE saved f32 when save_dtype < 0 */
    int64_t epoch, global_step;   /* the reference's epoch_no / global_step arguments */
    const sd_kv *meta;        /* safetensors metadata (ModelSpec); may be NULL */
} sd_full_save_opts;

/* Write the checkpoint `path` atomically from the model (loaded, its source file still open unless
 * it is a Diffusers folder: then the VAE must be loaded). Values must be host memory.
 * SD_FULL_DIFFUSERS: the folder `path` (models/diffusers_write.h; the whole model must be loaded);
 * dtypes as the reference's save_diffusers_checkpoint: SD1/SD2 the in-memory dtypes (kohya passes
 * no save_dtype there, so --save_precision does not apply), SDXL save_dtype when given. */
int sd_full_save(const char *path, sd_model *m, const sd_full_save_opts *o);

/* ---- torch.save of a state dict ------------------------------------------------------------------ */

/* Write the tensors of an open safetensors file as torch.save({"state_dict": {name: tensor, ...},
 * "epoch": epoch, "global_step": global_step}) to `path` atomically (io/torch_save.h). */
int sd_torch_save_state_dict(const char *path, const sd_safetensors *st, int64_t epoch, int64_t global_step);

#endif
