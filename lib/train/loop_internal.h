/* Internal to the sources of the training loop (lib/train/loop*.c), not part of libsd's API: the
 * state of one sd_train_run (`run`) and the functions one of these sources calls in another.
 *
 *   loop.c          sd_train_run: the order of the setup, buffers, the micro step and the
 *                   optimizer step, the epoch loop, validation, resume
 *   loop_setup.c    options, the model, the trained parameters and optimizer groups per method
 *   loop_text.c     the text path: captions → token ids → text encoder(s) → the UNet's context
 *                   (SDXL: and its vector), its backward when a text encoder trains, SDXL's
 *                   cached text-encoder outputs
 *   loop_latents.c  --cache_latents[_to_disk], images encoded at every step (no cache: crop, flip,
 *                   color_aug), the records' buckets, a batch's latents (SDXL: and its size
 *                   conditioning)
 *   loop_save.c     the run's metadata, saved weights, state directories and their retention
 *   loop_data.c     the options' defaults and the training records (public: loop.h)
 *   loop_meta.c     the data-derived ss_* metadata (public: loop.h)
 *   loop_sample.c   sample images during training (public: loop_sample.h) */
#ifndef SD_TRAIN_LOOP_INTERNAL_H
#define SD_TRAIN_LOOP_INTERNAL_H

#include <stdint.h>

#include "train/dylora.h"
#include <stdio.h>

#include "models/clip.h"
#include "models/controlnet.h"
#include "models/sd_model.h"
#include "models/unet.h"
#include "nn/nn.h"
#include "tensor/tensor.h"
#include "text/clip_tokenizer.h"
#include "train/batch.h"
#include "train/full.h"
#include "train/fused.h"
#include "train/loop.h"
#include "train/loop_sample.h"
#include "train/lora_net.h"
#include "train/lora_network.h"
#include "train/lyco_network.h"
#include "train/lycoris.h"
#include "train/oft_network.h"
#include "train/loss_scale.h"
#include "train/lr_sched.h"
#include "train/meta.h"
#include "train/objective_step.h"
#include "train/optim.h"
#include "train/state.h"
#include "train/tboard.h"
#include "train/ti.h"
#include "train/validation.h"

typedef struct run {
    sd_train_config *c;
    sd_train_data *d;
    sd_ctx ctx;
    sd_model model;
    int have_model;
    size_t scratch_cap;
    sd_model_config cfg;
    sd_unet *unet;
    sd_clip *clip;
    sd_clip_tokenizer *tok;
    int32_t pad;
    sd_tobj obj;
    sd_lora_net_args nargs;
    sd_lora_network net;
    int have_net;
    int lora_fa;                   /* networks.lora_fa: lora_down frozen (not in the resumable state) */
    sd_dylora dy;             /* --network_module networks.dylora: the rows the optimizer sees */
    int have_dy;
    sd_oft_network oft;       /* --network_module networks.oft: its blocks live in net.reg (net has no modules) */
    int have_oft;
    int lyco;                 /* --network_module lycoris.kohya (any algo) */
    sd_lyco_network lyn;      /* lycoris.kohya algo=loha: its factors live in net.reg (net has no modules) */
    int have_lyn;
    sd_lora_groups groups;
    sd_ti ti;                 /* --method ti (train/ti.h): the new token rows instead of a network */
    int have_ti;
    sd_ti ti2;                /* SDXL --method ti: TE2's new rows (ti: TE1's) */
    int have_ti2;
    float *dtok2;             /* SDXL TI: host copy of TE2's token-lookup gradient */
    sd_tensor t_dtok2;
    int dev_optim;            /* AdamW on the training device (sd_optim_place): db/ft on CUDA, SD_DEVICE_OPTIM */
    float *dtok;              /* TI: host copy of the token-lookup gradient */
    sd_tensor t_dtok;
    sd_full full;             /* --method db/ft: the trained weights are the model's (train/full.h) */
    int is_full;
    sd_fused fused;           /* SDXL db/ft --fused_backward_pass / --fused_optimizer_groups (train/fused.h) */
    int have_fused;
    double *fused_lrs;        /* this step's LR per optimizer group, for the steps inside the backward */
    sd_full_format ffmt;
    /* --method controlnet (loop_cn.c): the ControlNet's parameters live in net.reg (no LoRA modules) */
    int cnet;
    sd_controlnet cn;
    int have_cn;
    sd_unet_control uctl;     /* the UNet's residual hooks (the ControlNet's outputs and their gradients) */
    sd_tensor *t_dres;        /* n_res views of the residual gradients (scratch, per step) */
    float *cond;              /* the batch's conditioning images [maxB][3][8h][8w] (host) */
    sd_tensor t_cond;         /* the same on the device */
    int *flipped;             /* [maxB]: the batch's samples whose flipped latents were loaded */
    sd_optim opt;
    int have_opt;
    sd_optim_config ocfg;
    const char *sched_name;   /* --lr_scheduler, or "adafactor:<lr>" with Adafactor's relative_step */
    char sched_buf[64];
    sd_lr_sched lrs;
    int64_t sched_step;       /* the LR scheduler's position: optimizer steps taken (not skipped) */
    sd_loss_scaler scaler;    /* --mixed_precision fp16: dynamic loss scaling (train/loss_scale.h) */
    int64_t scale_skips;      /* optimizer steps the scaler skipped in this process */
    sd_batch_plan plan;
    uint64_t seed;
    int64_t max_steps, num_epochs, steps_per_epoch;
    int te_train, unet_train;
    int nchunks, seqlen;
    double scale_factor;
    /* buffers (sized for the largest batch) */
    int64_t maxB, maxper;
    float *x0, *noise, *noisy, *target, *work, *ipn, *grad, *lossv;
    float *hc, *lweight;
    double *factor;
    int *tsteps;
    int32_t *ids;
    float *tokw;              /* --weighted_captions: per context position weight [maxB][seqlen] */
    /* masked loss (§1.11): masks applied (--masked_loss, or any sample with an alpha mask; never
       for SD1/SD2 --method ft: fine_tune.py has none); the batch's mask [maxB][maxper] (each
       sample's area-resized plane repeated over the channels) and whether it holds one */
    int use_masks, mask_on;
    float *mask;
    /* the VAE encoder's host buffers (loop_latents.c; grown as needed): the [-1, 1] image, the
       moments, the posterior noise, one sample's latents, one sample's mask plane (live samples) */
    float *enc_x, *enc_mom, *enc_noise, *enc_z, *enc_mask;
    size_t enc_x_n, enc_lat_n, enc_mask_n;
    float *cond_mask;         /* one sample's conditioning-image mask plane at bucket pixels (grown as needed) */
    size_t cond_mask_n;
    int live_info;            /* the info line of images encoded at every step was written */
    /* SDXL (family SD_FAMILY_SDXL): the second text encoder, its ids (pad 0), the UNet's vector input */
    int sdxl;
    sd_clip *clip2;
    int32_t *ids2;
    int *sizes;               /* [maxB][6]: orig_h, orig_w, crop_top, crop_left, target_h, target_w */
    float *semb;              /* [maxB][1536]: their size embedding (host) */
    int te_cached;            /* --cache_text_encoder_outputs: the samples hold TE1/TE2 outputs */
    int64_t W1, W2, P, ADM;   /* TE1 / TE2 widths, pooled width, UNet vector width */
    sd_tensor vec_view;       /* the batch's view of t_vec */
    sd_tensor t_ids2, t_hs1, t_hs2, t_work1, t_work2, t_pool, t_semb, t_vec, t_dvec, t_dpool, t_dhs1, t_dhs2;
    int warned_trunc;
    sd_tensor t_x, t_t, t_ctx, t_y, t_dy, t_ids, t_hidden, t_dctx;   /* on `dev` */
    sd_devkind dev;           /* where the networks run (--device) */
    sd_ctx hctx;              /* CPU context for host-side work while ctx is a GPU's */
    float *pred, *tf, *stage; /* host copies: UNet output, timesteps, a context for caption weights */
    sd_arena act;
    sd_train_sampling smp;    /* sample images during training */
    /* validation (train/validation.h) */
    sd_train_data val;        /* the validation samples (moved out of d) */
    sd_val_runner vr;
    sd_tobj vobj;             /* the objective with the timestep range of one validation timestep */
    uint64_t vseed;           /* key of the validation passes' streams */
    char vpost[64];           /* progress-bar postfix of the last pass */
    /* logging */
    sd_tb_writer tb;
    int have_tb;
    FILE *jl;
    double *window;
    size_t window_n;
    double epoch_loss_sum;
    int64_t epoch_loss_n;
    sd_ss_facts facts;
    sd_kv meta;
    double started_at;
    char *outdir;
    const char *outname;
    const char *ext;
} run;

/* The first elements of a device buffer t viewed with another shape (t is contiguous and at least
 * that large). */
static inline sd_tensor dview(const sd_tensor *t, int nd, const int64_t *shape)
{
    sd_tensor v = sd_tensor_wrap(t->data, (sd_dtype)t->dtype, nd, shape);
    v.device = t->device;
    v.device_index = t->device_index;
    return v;
}


/* ---- loop_setup.c ------------------------------------------------------------------------------- */

int loop_check_options(run *R);
int loop_load_models(run *R);
int loop_check_family(run *R);
int loop_ti_setup(run *R);
int loop_setup_full(run *R);
int loop_setup_lora(run *R);
/* loop_oft.c: --network_module networks.oft (after --base_weights are merged) */
int loop_is_oft(const sd_train_config *c);
int loop_setup_oft(run *R);
/* loop_lyco.c: lycoris.kohya with a weight-delta algorithm (algo=loha) */
int loop_setup_lyco_delta(run *R, const sd_lycoris_args *la);
void loop_optimizer_warnings(run *R);

/* ---- loop_text.c -------------------------------------------------------------------------------- */

sd_nn_plan loop_text_plan(run *R, int64_t B);
int loop_encode_captions(run *R, const sd_train_data *d, const int64_t *idx, int B, uint64_t seed, uint32_t step,
                         int64_t epoch1, int64_t gstep, int plain);
int loop_text_forward(run *R, const sd_train_data *d, const int64_t *idx, int B, sd_arena *save, sd_tensor *ctxt,
                      const sd_tensor **vecp);
int loop_text_backward(run *R, int B, sd_tensor dctx, sd_tensor dvec);
int loop_cache_te_outputs(run *R, sd_train_data *d, const char *what);

/* ---- loop.c ------------------------------------------------------------------------------------- */

int loop_ensure_scratch(run *R, size_t want);
int loop_net_to(run *R, sd_devkind dev);

/* ---- loop_latents.c ----------------------------------------------------------------------------- */

int loop_encode_all(run *R, sd_train_data *d, uint32_t sbase);
int loop_plan_live(run *R, sd_train_data *d);
int loop_resolve_buckets(sd_train_data *d);
int loop_cond_setup(run *R, sd_train_data *d);
int loop_load_latents(run *R, const sd_train_data *d, const int64_t *idx, int B, int64_t micro, int h, int w,
                      int noflip);

/* Sample s's conditioning image at tw×th as ControlNetDataset gives it (resized as for the masks,
 * mirrored when flip, ToTensor + Normalize(0.5, 0.5): [-1, 1]) into dst [3][th][tw]. */
int loop_cond_rgb(const sd_train_sample *s, int tw, int th, int flip, float *dst);

/* ---- loop_cn.c: --method controlnet ------------------------------------------------------------- */

int loop_cn_check(run *R);                       /* options, before the models load */
int loop_cn_setup(run *R);                       /* after the models load: the ControlNet, its group */
void loop_cn_plan(run *R, int64_t B, int64_t h, int64_t w, size_t *saved, size_t *scratch);
int loop_cn_buffers(run *R);                     /* after alloc_buffers' sizes are known */
int loop_cn_forward(run *R, const int64_t *idx, int B, int h, int w, const sd_tensor *x, const sd_tensor *tt,
                    const sd_tensor *ctxt);
int loop_cn_backward(run *R, const sd_tensor *dy);   /* the UNet's backward to the residuals, then the ControlNet's */
int loop_cn_save(run *R, const char *path);
void loop_cn_free(run *R);

/* ---- loop_save.c -------------------------------------------------------------------------------- */

double loop_wall_now(void);
int loop_build_metadata(run *R);
char *loop_join_path(const char *dir, const char *name);
int loop_save_state_dir(run *R, const char *dir, int64_t global_step, int64_t epoch, int64_t step_in_epoch);
int loop_save_checkpoint(run *R, sd_save_kind kind, int64_t no, int64_t global_step, int64_t epoch1,
                         int64_t cur_epoch, int64_t cur_step_in_epoch, int with_state);
void loop_write_last_good_state(run *R, int64_t global_step, int64_t epoch, int64_t step_in_epoch, char *tail,
                                size_t n);

#endif
