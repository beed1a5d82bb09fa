/* The setup of a training run before its first step (see loop_internal.h): the options checked
 * (the optimizer's configuration, the loss scaler, sampling), the model opened and checked
 * against the options of its family (SD1/SD2, SDXL), and the trained parameters of each method
 * with their optimizer groups: textual inversion's new token rows (ti), the model's own weights
 * (db/ft; SDXL's sdxl_train.py) and the LoRA network (lora). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/half.h"
#include "base/log.h"
#include "io/safetensors.h"
#include "models/sdxl.h"
#include "train/lora_file.h"
#include "train/lora_merge.h"
#include "train/lycoris.h"
#include "train/loop_internal.h"
#include "train/pyfmt.h"

int loop_check_options(run *R)
{
    sd_train_config *c = R->c;
    if (!c->model) return sd_err(SD_EUSAGE, "--pretrained_model_name_or_path (--model) is required");
    static const char *const modules[] = { "networks.lora", "networks.lora_fa", "networks.dylora", "networks.oft",
                                           "lycoris.kohya" };
    int known = !c->network_module;
    for (size_t i = 0; i < sizeof modules / sizeof *modules && !known; i++) known = !strcmp(c->network_module, modules[i]);
    if (!known)
        return sd_err(SD_EUNSUPPORTED, "--network_module %s is not supported (networks.lora, networks.lora_fa, "
                      "networks.dylora, lycoris.kohya, networks.oft are)", c->network_module);
    if (c->ti.on) {
        int trc = sd_ti_check_config(c);
        if (trc) return trc;
    } else if (!R->is_full && c->save_model_as && !strncmp(c->save_model_as, "diffusers", 9)) {
        /* train_network.py's --save_model_as choices are ckpt, pt, safetensors */
        return sd_err(SD_EUSAGE, "--save_model_as %s: a LoRA network is saved as safetensors (Diffusers folders are "
                      "for --method db/ft)", c->save_model_as);
    } else if (!R->is_full && c->save_model_as && strcmp(c->save_model_as, "safetensors")) {
        return sd_err(SD_EUNSUPPORTED, "--save_model_as %s is not supported (safetensors is)", c->save_model_as);
    }
    if (c->mixed_precision && strcmp(c->mixed_precision, "no") && strcmp(c->mixed_precision, "fp16") &&
        strcmp(c->mixed_precision, "bf16"))
        return sd_err(SD_EUSAGE, "--mixed_precision %s: choose no, fp16 or bf16", c->mixed_precision);
    /* the reference's assertions (train_network.py, train_db.py, fine_tune.py) */
    if (c->full_fp16 && c->full_bf16) return sd_err(SD_EUSAGE, "--full_fp16 and --full_bf16 exclude each other");
    if (c->full_fp16 && !(c->mixed_precision && !strcmp(c->mixed_precision, "fp16")))
        return sd_err(SD_EUSAGE, "full_fp16 requires mixed precision='fp16' (--mixed_precision fp16)");
    if (c->full_bf16 && !(c->mixed_precision && !strcmp(c->mixed_precision, "bf16")))
        return sd_err(SD_EUSAGE, "full_bf16 requires mixed precision='bf16' (--mixed_precision bf16)");
    /* train_network.py's assertion; the other scripts parse --fp8_base and never read it */
    if (c->fp8_base || c->fp8_base_unet) {
        const char *o = c->fp8_base ? "--fp8_base" : "--fp8_base_unet";
        if (!c->mixed_precision || !strcmp(c->mixed_precision, "no"))
            return sd_err(SD_EUSAGE, "fp8_base requires mixed precision='fp16' or 'bf16' (%s with --mixed_precision "
                          "fp16 or bf16)", o);
        if (c->method != SD_METHOD_LORA || c->ti.on)
            return sd_err(SD_EUSAGE, "%s: an option of train_network.py (--method lora) only: train_db.py, "
                          "fine_tune.py, sdxl_train.py and train_textual_inversion.py do not use it", o);
        if (loop_is_oft(c))
            return sd_err(SD_EUSAGE, "%s: not supported with --network_module networks.oft here", o);
    }
    if (c->max_token_length && c->max_token_length != 75 && c->max_token_length != 150 && c->max_token_length != 225)
        return sd_err(SD_EUSAGE, "--max_token_length must be 75, 150 or 225");
    if (c->train_unet_only && c->train_text_encoder_only)
        return sd_err(SD_EUSAGE, "--network_train_unet_only and --network_train_text_encoder_only exclude each other");
    if (c->scale_v_pred_loss_like_noise_pred && !c->v_parameterization)
        return sd_err(SD_EUSAGE, "--scale_v_pred_loss_like_noise_pred requires --v_parameterization");
    if (c->v_pred_like_loss > 0 && c->v_parameterization)
        return sd_err(SD_EUSAGE, "--v_pred_like_loss cannot be used with --v_parameterization");
    if (c->adaptive_noise_scale != 0 && c->noise_offset == 0)
        return sd_err(SD_EUSAGE, "--adaptive_noise_scale requires --noise_offset");
    sd_optim_kind k;
    int rc = sd_optim_resolve(c->optimizer_type, c->use_8bit_adam, c->use_lion_optimizer, &k);
    if (rc) return rc;
    sd_optim_config_default(&R->ocfg, k);
    if (c->optimizer_args && c->optimizer_args->n) {
        rc = sd_optim_config_parse_args(&R->ocfg, c->optimizer_args->s, c->optimizer_args->n);
        if (rc) return rc;
    }
    /* the constructor's lr is --learning_rate; Adafactor's relative_step gets None and the scheduler
     * "adafactor:<learning_rate>" whatever --lr_scheduler says (kohya's get_optimizer) */
    int adaf = sd_optim_adafactor_schedule(&R->ocfg);
    R->ocfg.lr = adaf ? NAN : c->learning_rate;
    rc = sd_optim_config_check(&R->ocfg);
    if (rc) return rc;
    R->sched_name = c->lr_scheduler;
    if (adaf) {
        char b[40];
        snprintf(R->sched_buf, sizeof R->sched_buf, "adafactor:%s", sd_py_float(c->learning_rate, b, sizeof b));
        R->sched_name = R->sched_buf;
    } else if (!strncmp(c->lr_scheduler, "adafactor", 9) && !sd_optim_is_schedulefree(R->ocfg.kind)) {
        return sd_err(SD_EUSAGE, "--lr_scheduler %s: adafactor scheduler must be used with Adafactor optimizer "
                      "(--optimizer_type Adafactor with relative_step=True)", c->lr_scheduler);
    }
    if (c->resume) {
        struct stat sb;
        if (stat(c->resume, &sb) || !S_ISDIR(sb.st_mode))
            return sd_err(SD_ENOTFOUND, "--resume %s: not a state directory", c->resume);
    }
    /* fp16: accelerate's GradScaler (defaults, or GradScalerKwargs from SD_GRAD_SCALER) */
    int fp16 = c->mixed_precision && !strcmp(c->mixed_precision, "fp16");
    sd_loss_scaler_init(&R->scaler, fp16);
    const char *gs = getenv("SD_GRAD_SCALER");
    if (gs && *gs) {
        if (!fp16) sd_warn("SD_GRAD_SCALER is ignored: there is a loss scaler only with --mixed_precision fp16");
        else if ((rc = sd_loss_scaler_configure(&R->scaler, gs))) return sd_err_prefix(rc, "SD_GRAD_SCALER");
    }
    return sd_train_sampling_init(&R->smp, c);
}

/* --method db/ft once the family is known: SD1/SD2 keep train_db.py / fine_tune.py (set up in
 * sd_train_run); SDXL runs sdxl_train.py for both methods (it takes DreamBooth and fine-tuning
 * datasets): the UNet, and with --train_text_encoder TE1/TE2 at --learning_rate_te1/te2, the
 * --block_lr groups. The options of one family only are refused with the other. */
static int full_family(run *R)
{
    sd_train_config *c = R->c;
    if (!R->sdxl) {
        if (!isnan(c->learning_rate_te1) || !isnan(c->learning_rate_te2) || c->block_lr)
            return sd_err(SD_EUSAGE, "--%s: only for SDXL models (sdxl_train.py)", c->block_lr ? "block_lr"
                          : !isnan(c->learning_rate_te1) ? "learning_rate_te1" : "learning_rate_te2");
        if (c->method == SD_METHOD_DB && c->train_text_encoder)
            return sd_err(SD_EUSAGE, "--train_text_encoder is an option of --method ft: not used by --method db "
                          "(SD1/SD2 train_db.py trains the text encoder unless --stop_text_encoder_training -1)");
        return SD_OK;
    }
    if (c->has_stop_text_encoder_training)
        return sd_err(SD_EUSAGE, "--stop_text_encoder_training: not an option of sdxl_train.py (SDXL --method %s "
                      "trains the text encoders with --train_text_encoder)", sd_train_method_name(c->method));
    if (!isnan(c->learning_rate_te))
        return sd_err(SD_EUSAGE, "--learning_rate_te: not an option of sdxl_train.py (SDXL: --learning_rate_te1 "
                      "and --learning_rate_te2)");
    if (c->cache_text_encoder_outputs && c->train_text_encoder)
        return sd_err(SD_EUSAGE, "cache_text_encoder_outputs is not supported when training text encoder "
                      "(--cache_text_encoder_outputs with --train_text_encoder)");
    return sd_full_init_sdxl(&R->full, (sd_train_method)c->method, c->train_text_encoder, c->learning_rate,
                             c->learning_rate_te1, c->learning_rate_te2, c->block_lr);
}

/* the storage dtype of the frozen weights: the training dtype of --mixed_precision */
static sd_dtype frozen_dtype(const sd_train_config *c)
{
    if (c->mixed_precision && !strcmp(c->mixed_precision, "fp16")) return SD_F16;
    if (c->mixed_precision && !strcmp(c->mixed_precision, "bf16")) return SD_BF16;
    return SD_F32;
}

/* --fp8_base / --fp8_base_unet: the UNet's frozen weights in float8_e4m3fn, the text encoders' too
   with --fp8_base alone (train_network.py: te_weight_dtype = weight_dtype if fp8_base_unet) */
static sd_dtype unet_frozen_dtype(const sd_train_config *c)
{
    return c->fp8_base || c->fp8_base_unet ? SD_F8E4M3 : frozen_dtype(c);
}

static sd_dtype te_frozen_dtype(const sd_train_config *c)
{
    return c->fp8_base && !c->fp8_base_unet ? SD_F8E4M3 : frozen_dtype(c);
}

static int base_weights_unet_f32(const run *R)
{
    const sd_train_config *c = R->c;
    return c->method == SD_METHOD_LORA && !c->ti.on && c->base_weights && c->base_weights->n &&
           !(R->sdxl && (c->full_fp16 || c->full_bf16));
}

/* SDXL db/ft --fused_backward_pass / --fused_optimizer_groups (train/fused.h): the reference's
 * assertions and what is not implemented, then lazy gradients for the trained registries (before
 * they are allocated). */
static int fused_setup(run *R)
{
    sd_train_config *c = R->c;
    if (!c->fused_backward_pass && !c->fused_optimizer_groups) return SD_OK;
    const char *o = c->fused_backward_pass ? "--fused_backward_pass" : "--fused_optimizer_groups";
    if (!R->sdxl)
        return sd_err(SD_EUSAGE, "%s: only for SDXL models (sdxl_train.py; train_db.py and fine_tune.py have no such "
                      "option)", o);
    int rc = sd_fused_check(c->fused_backward_pass, c->fused_optimizer_groups, R->ocfg.kind,
                            c->gradient_accumulation_steps);
    if (rc) return rc;
    if (c->mixed_precision && !strcmp(c->mixed_precision, "fp16"))
        return sd_err(SD_EUSAGE, "%s with --mixed_precision fp16: not supported (the reference's per-tensor clipping "
                      "unscales the optimizer's gradients once per tensor and fails; its steps bypass the loss scaler)", o);
    if (c->full_fp16 || c->full_bf16)
        return sd_err(SD_EUSAGE, "%s with --full_%s: not implemented (train in float32 weights)", o,
                      c->full_fp16 ? "fp16" : "bf16");
    sd_fused_init(&R->fused, c->fused_backward_pass ? SD_FUSED_BACKWARD_PASS : SD_FUSED_GROUPS, c->max_grad_norm);
    R->fused.ctx = &R->ctx;   /* the device's context once the buffers are allocated */
    R->have_fused = 1;
    rc = sd_params_set_grad_pool(&R->model.unet_params, &R->fused.pool);
    if (!rc) rc = sd_params_set_grad_pool(&R->model.te_params, &R->fused.pool);
    return rc;
}

int loop_load_models(run *R)
{
    sd_train_config *c = R->c;
    sd_model_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.parts = SD_MODEL_UNET | SD_MODEL_TE;
    for (size_t i = 0; i < R->d->n; i++)
        if (!R->d->s[i].latents) mo.parts |= SD_MODEL_VAE;
    for (size_t i = 0; i < R->val.n; i++)
        if (!R->val.s[i].latents) mo.parts |= SD_MODEL_VAE;
    if (R->smp.on) mo.parts |= SD_MODEL_VAE;
    if (R->is_full && c->vae) mo.parts |= SD_MODEL_VAE;   /* the replacement VAE goes into the saved model */
    if (R->is_full && sd_full_saves_diffusers(c->save_model_as, c->model)) mo.parts |= SD_MODEL_VAE;   /* vae/ */
    mo.vae = c->vae;
    mo.config = c->model_config;
    mo.v2 = c->v2;
    mo.v_param = c->v_parameterization ? 1 : -1;
    int rc = sd_model_open(&R->model, c->model, &mo);
    if (rc) return rc;
    R->have_model = 1;
    if (R->model.warning[0]) sd_warn("%s", R->model.warning);
    R->cfg = R->model.cfg;
    if (c->v_parameterization) R->cfg.parameterization = SD_PRED_V;
    R->sdxl = R->cfg.family == SD_FAMILY_SDXL;
    if (R->is_full && !R->sdxl && c->save_precision && sd_full_saves_diffusers(c->save_model_as, c->model))
        sd_warn("--save_precision %s has no effect on SD1/SD2 Diffusers folders: they keep the training dtypes, as the "
                "reference's save_diffusers_checkpoint (save as safetensors to convert)", c->save_precision);
    if (R->sdxl) {
        /* context = cat(TE1 layer 11, TE2 penultimate); vector = cat(TE2 pooled, size embedding) */
        R->W1 = R->cfg.clip.width;
        R->W2 = R->cfg.clip2.width;
        R->P = R->cfg.clip2.projection_dim;
        R->ADM = R->cfg.unet.adm_in_channels;
        if (!R->model.have_clip2)
            return sd_err(SD_EFORMAT, "%s: the SDXL model has no second text encoder", c->model);
        if (R->W1 + R->W2 != R->cfg.unet.context_dim)
            return sd_err(SD_EFORMAT, "%s: text encoder widths %lld + %lld differ from the UNet's context_dim %d", c->model,
                          (long long)R->W1, (long long)R->W2, R->cfg.unet.context_dim);
        if (R->P <= 0 || R->P + SD_SDXL_SIZE_EMB_DIM != R->ADM)
            return sd_err(SD_EFORMAT, "%s: pooled width %lld + %d size embedding differs from the UNet's "
                          "adm_in_channels %lld", c->model, (long long)R->P, SD_SDXL_SIZE_EMB_DIM, (long long)R->ADM);
    } else if (R->cfg.clip.width != R->cfg.unet.context_dim)
        return sd_err(SD_EFORMAT, "%s: text encoder width %d differs from the UNet's context_dim %d", c->model,
                      R->cfg.clip.width, R->cfg.unet.context_dim);
    if (c->debug_dataset)   /* the model's configuration only: no weight is read (loop.c: debug_dataset) */
        return R->is_full ? full_family(R) : sd_clip_tokenizer_load(NULL, &R->tok);
    sd_params_set_trainable(&R->model.unet_params, "", 0);
    sd_params_set_trainable(&R->model.te_params, "", 0);
    /* --base_weights: the UNet stays f32 until merged (merge_base_weights), as the reference's is
       (SDXL with --full_fp16/--full_bf16 loads it in the training dtype: merged there, as the TE) */
    sd_params_set_frozen_dtype(&R->model.unet_params, base_weights_unet_f32(R) ? SD_F32 : unet_frozen_dtype(c));
    /* float8 text encoders too are merged in f32 and rounded once, as the reference casts after merging */
    sd_params_set_frozen_dtype(&R->model.te_params, base_weights_unet_f32(R) && te_frozen_dtype(c) == SD_F8E4M3
                                                    ? SD_F32 : te_frozen_dtype(c));
    if (mo.parts & SD_MODEL_VAE) sd_params_set_trainable(&R->model.vae_params, "", 0);
    if (R->is_full && (rc = full_family(R))) return rc;
    if (R->is_full && (rc = sd_full_mark(&R->full, &R->model))) return rc;
    if (R->is_full && (rc = fused_setup(R))) return rc;
    rc = sd_model_load(&R->model, SD_DEV_CPU);
    if (rc) return rc;
    if (!R->is_full) sd_model_release_source(&R->model);   /* a full save copies the rest of the source */
    R->unet = &R->model.unet;
    R->clip = &R->model.clip;
    R->clip2 = R->sdxl ? &R->model.clip2 : NULL;
    if (c->gradient_checkpointing) sd_unet_set_checkpoint(R->unet, NULL, 1);
    R->scale_factor = R->cfg.vae.scale_factor > 0 ? R->cfg.vae.scale_factor : 0.18215;
    R->pad = R->cfg.family == SD_FAMILY_SD2 ? SD_CLIP_PAD_SD2 : SD_CLIP_PAD_SD1;
    rc = sd_clip_tokenizer_load(NULL, &R->tok);
    if (rc) return rc;
    return SD_OK;
}

/* The caption options of a sample that make its text-encoder input vary between steps (the
 * reference's is_text_encoder_output_cacheable, and caption_dropout_every_n_epochs): NULL if none. */
static const char *caption_random(const sd_train_sample *s)
{
    if (s->cap.shuffle) return "shuffle_caption";
    if (s->cap.dropout_rate > 0) return "caption_dropout_rate";
    if (s->cap.dropout_every_n_epochs > 0) return "caption_dropout_every_n_epochs";
    if (s->cap.tag_dropout_rate > 0) return "caption_tag_dropout_rate";
    if (s->token_warmup_step_f > 0) return "token_warmup_step";
    if (s->cap.enable_wildcard) return "enable_wildcard";
    return NULL;
}

/* Options that depend on the model's family, checked once it is open: SDXL (sdxl_train_network.py's
 * verify_sdxl_training_args and its assertions), and the SDXL-only options refused for SD1/SD2. */
int loop_check_family(run *R)
{
    sd_train_config *c = R->c;
    if (!R->sdxl) {
        if (c->cache_text_encoder_outputs)
            return sd_err(SD_EUSAGE, "--cache_text_encoder_outputs%s: only for SDXL models (the reference's "
                          "train_network.py has no text-encoder output cache for SD1.x/SD2.x)",
                          c->cache_text_encoder_outputs_to_disk ? "_to_disk" : "");
        return SD_OK;
    }
    if (c->v2) return sd_err(SD_EUSAGE, "v2 cannot be enabled in SDXL training (--v2 with the SDXL model %s)", c->model);
    if (c->clip_skip > 0) sd_warn("clip_skip will be unexpected: SDXL training does not use --clip_skip");
    /* verify_bucket_reso_steps: SDXL scripts assert a multiple of 32 */
    if (c->bucket_reso_steps % 32)
        return sd_err(SD_EUSAGE, "--bucket_reso_steps %d: SDXL needs a multiple of 32", c->bucket_reso_steps);
    for (int k = 0; k < 2; k++) {
        const sd_train_data *d = k ? &R->val : R->d;
        for (size_t i = 0; i < d->n; i++)
            if (d->s[i].has_bcfg && d->s[i].bcfg.steps % 32)
                return sd_err(SD_EUSAGE, "bucket_reso_steps %d (%s): SDXL needs a multiple of 32", d->s[i].bcfg.steps,
                              d->s[i].image ? d->s[i].image : "a record");
    }
    if (c->cache_text_encoder_outputs) {
        if (!R->is_full && !c->train_unet_only)   /* db/ft: full_family */
            return sd_err(SD_EUSAGE, "network for Text Encoder cannot be trained with caching Text Encoder outputs "
                          "(--cache_text_encoder_outputs needs --network_train_unet_only)");
        for (int k = 0; k < 2; k++) {
            const sd_train_data *d = k ? &R->val : R->d;
            for (size_t i = 0; i < d->n; i++) {
                const char *why = caption_random(&d->s[i]);
                if (why)
                    return sd_err(SD_EUSAGE, "when caching Text Encoder output, either caption_dropout_rate, "
                                  "shuffle_caption, token_warmup_step or caption_tag_dropout_rate cannot be used (%s is "
                                  "set)", why);
            }
        }
    }
    return SD_OK;
}

/* --method ti: tokens, the widened table, the one optimizer group (the new rows at
 * --learning_rate, and the one-element rest_grad_norm of ti.h). The model's sample records must
 * not ask for caption dropout (the reference's TI has none). */
int loop_ti_setup(run *R)
{
    for (size_t i = 0; i < R->d->n; i++)
        if (R->d->s[i].cap.dropout_rate > 0 || R->d->s[i].cap.dropout_every_n_epochs > 0)
            return sd_err(SD_EUSAGE, "--method ti: caption dropout (caption_dropout_rate / "
                          "caption_dropout_every_n_epochs) is not available for textual inversion");
    if (R->c->debug_dataset) {   /* the captions need the token strings only */
        int rc = sd_ti_init_tokens(&R->ti, &R->c->ti, R->tok);
        R->have_ti = 1;
        return rc;
    }
    /* SDXL (sdxl_train_textual_inversion.py): the tokens in both encoders, initialised per encoder */
    int rc = sd_ti_init_part(&R->ti, &R->c->ti, R->clip, R->tok, R->sdxl ? 0 : -1);
    if (rc) {
        sd_ti_free(&R->ti);
        return rc;
    }
    R->have_ti = 1;
    if (R->sdxl) {
        rc = sd_ti_init_part(&R->ti2, &R->c->ti, R->clip2, R->tok, 1);
        if (rc) {
            sd_ti_free(&R->ti2);
            return rc;
        }
        R->have_ti2 = 1;
    }
    R->te_train = 1;
    /* The reference's parameter is the whole token table (its old rows restored after every step).
       Element-wise optimizers give the new rows the same numbers when only they are parameters (the
       fast path: emb_params [N, D] and rest_grad_norm). Optimizers whose statistics span the table
       (Adafactor's factored moments and RMS, the d estimates of Prodigy / D-Adaptation) get the
       whole table as their parameter (ti.h: sd_ti_set_full). bitsandbytes picks 8-bit states by
       the table's size, and its 256-element blocks never mix old and new rows when V·D is a
       multiple of 256 (every SD text encoder: 49408·768, 49408·1024). */
    sd_optim_kind k = R->ocfg.kind;
    int full = k == SD_OPTIM_ADAFACTOR || k == SD_OPTIM_PRODIGY || k == SD_OPTIM_DADAPT_ADAM ||
               k == SD_OPTIM_DADAPT_ADAM_PREPRINT || k == SD_OPTIM_DADAPT_SGD || k == SD_OPTIM_DADAPT_ADAGRAD ||
               k == SD_OPTIM_DADAPT_ADAN || k == SD_OPTIM_DADAPT_ADAN_IP || k == SD_OPTIM_DADAPT_LION;
    if (!full && !(k == SD_OPTIM_ADAMW || k == SD_OPTIM_LION || k == SD_OPTIM_SGD_NESTEROV || sd_optim_is_bnb(k) ||
                   sd_optim_is_schedulefree(k)))
        return sd_err(SD_EUNSUPPORTED, "--method ti: --optimizer_type %s is not supported for textual inversion; use "
                      "AdamW, AdamW8bit, Lion, SGDNesterov, Adafactor, Prodigy, DAdapt* or *ScheduleFree",
                      sd_optim_kind_name(k));
    if (full) {
        rc = sd_ti_set_full(&R->ti);
        if (!rc && R->have_ti2) rc = sd_ti_set_full(&R->ti2);
        if (rc) return rc;
    }
    if (sd_optim_is_bnb(k)) {
        int64_t table = (R->ti.V + R->ti.n) * R->ti.D;
        if ((R->ti.V * R->ti.D) % 256)
            return sd_err(SD_EUNSUPPORTED, "--method ti: %s needs a token table whose old rows fill whole "
                          "256-element blocks (vocabulary × width a multiple of 256)", sd_optim_kind_name(k));
        int64_t min8 = R->ocfg.b8.min_8bit_size > 0 ? R->ocfg.b8.min_8bit_size : 4096;
        if (table >= min8) R->ocfg.b8.min_8bit_size = 1;   /* the table's mode for the new rows */
    }
    sd_lora_groups *g = &R->groups;
    g->desc = calloc(1, sizeof *g->desc);
    g->names = calloc(1, sizeof *g->names);
    g->params = calloc(4, sizeof *g->params);
    if (!g->desc || !g->names || !g->params) return sd_err(SD_ENOMEM, "out of memory");
    g->n = 1;
    snprintf(g->names[0], sizeof g->names[0], "textual_inversion");
    g->params[0] = R->ti.emb;
    g->desc[0].name = g->names[0];
    g->desc[0].lr = R->c->learning_rate;
    g->desc[0].params = g->params;
    int np = 0;   /* the reference's one group (SDXL: both encoders' tables) */
    g->params[np++] = R->ti.emb;
    if (R->ti.rest) g->params[np++] = R->ti.rest;
    if (R->have_ti2) {
        g->params[np++] = R->ti2.emb;
        if (R->ti2.rest) g->params[np++] = R->ti2.rest;
    }
    g->desc[0].count = np;
    return SD_OK;
}

/* kohya's warnings about the optimizer settings (one sd_warn per line). */
void loop_optimizer_warnings(run *R)
{
    const sd_train_config *c = R->c;
    char warn[1024];
    sd_optim_reference_warnings(&R->ocfg, c->learning_rate, R->groups.desc, R->groups.n, c->lr_scheduler,
                                c->max_grad_norm, warn, sizeof warn);
    for (char *line = warn, *nl; *line; line = nl ? nl + 1 : line + strlen(line)) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        sd_warn("%s", line);
    }
}

/* SDXL --method db/ft (sdxl_train.py): its groups and messages. */
static int setup_full_sdxl(run *R)
{
    sd_train_config *c = R->c;
    sd_full *f = &R->full;
    if (f->te_train) sd_info("enable text encoder training");
    int rc = sd_full_groups_sdxl(f, c->learning_rate, &R->groups);
    if (!rc) loop_optimizer_warnings(R);
    if (!rc) rc = sd_optim_init(&R->opt, &R->ocfg, R->groups.desc, R->groups.n);
    if (rc) return rc;
    R->have_opt = 1;
    rc = sd_full_bind(f, &R->opt);
    if (!rc) rc = sd_full_norm_extra(f, &R->opt);
    if (rc) return rc;
    if (R->have_fused) {
        int ng = 1;
        rc = sd_fused_bind(&R->fused, &R->opt, c->fused_optimizer_groups, &ng);
        if (!rc) R->fused_lrs = calloc((size_t)R->opt.ngroups + 1, sizeof *R->fused_lrs);
        if (!rc && !R->fused_lrs) rc = sd_err(SD_ENOMEM, "out of memory");
        if (rc) return rc;
        if (c->fused_backward_pass) sd_info("fused_backward_pass: each weight steps as soon as its gradient is complete");
        else sd_info("using %d optimizers for fused optimizer groups", ng);
    }
    R->te_train = f->te_train;
    sd_full_memory mem;
    sd_full_memory_of(f, &mem);
    size_t nopt = 0;
    for (int g = 0; g < R->groups.n; g++) nopt += R->groups.desc[g].count;
    sd_info("train unet: %s, text_encoder1: %s, text_encoder2: %s", f->unet_train ? "True" : "False",
            f->te1_train ? "True" : "False", f->te2_train ? "True" : "False");
    sd_info("number of optimizer groups: %d (%zu weight tensors)", R->groups.n, nopt);
    sd_info("number of trainable parameters: %lld", (long long)mem.numel);
    return SD_OK;
}

/* --method db/ft: the optimizer over the model's own weights (train/full.h), the messages the
 * reference prints, the memory a full fine-tune holds, and the .ckpt size limit checked before
 * training rather than at the first save. */
int loop_setup_full(run *R)
{
    sd_train_config *c = R->c;
    sd_full *f = &R->full;
    if (f->sdxl) return setup_full_sdxl(R);
    if (f->method == SD_METHOD_DB && c->gradient_accumulation_steps > 1)
        sd_warn("gradient_accumulation_steps is %d. accelerate does not support gradient_accumulation_steps when "
                "training multiple models (U-Net and Text Encoder), so something might be wrong",
                c->gradient_accumulation_steps);
    if (f->method == SD_METHOD_DB && !f->te_train) sd_info("Text Encoder is not trained.");
    if (f->method == SD_METHOD_FT && f->te_train) sd_info("enable text encoder training");
    int rc = sd_full_groups(f, c->learning_rate, c->learning_rate_te, &R->groups);
    if (!rc) loop_optimizer_warnings(R);
    if (!rc) rc = sd_optim_init(&R->opt, &R->ocfg, R->groups.desc, R->groups.n);
    if (rc) return rc;
    R->have_opt = 1;
    rc = sd_full_bind(f, &R->opt);
    if (rc) return rc;
    R->te_train = f->te_train;
    sd_full_memory mem;
    sd_full_memory_of(f, &mem);
    const double gib = 1024.0 * 1024 * 1024;
    size_t tot = mem.weights + mem.grads + mem.moments;
    double u = tot >= (size_t)1 << 30 ? gib : 1024.0 * 1024;
    const char *un = tot >= (size_t)1 << 30 ? "GiB" : "MiB";
    sd_info("%s: training %lld weights (UNet%s) in float32%s: weights %.2f %s + gradients %.2f %s + AdamW moments "
            "%.2f %s = %.2f %s", f->method == SD_METHOD_DB ? "DreamBooth" : "fine-tuning", (long long)mem.numel,
            f->te_train ? " and text encoder" : "",
            c->full_fp16 ? " buffers holding float16 values (--full_fp16)"
            : c->full_bf16 ? " buffers holding bfloat16 values (--full_bf16)" : "", (double)mem.weights / u, un, (double)mem.grads / u, un,
            (double)mem.moments / u, un, (double)tot / u, un);
    return SD_OK;
}

/* --base_weights (train_network.py): each file merged into the UNet and text-encoder weights with its
 * multiplier (1.0 where none is given) before the network is created; the text encoders in their
 * storage dtype (the reference's are already in the training dtype), the UNet in f32, then stored
 * in the training dtype. */
static int merge_base_weights(run *R)
{
    const sd_train_config *c = R->c;
    if (!c->base_weights || !c->base_weights->n) return SD_OK;
    int rc = SD_OK;
    for (int i = 0; i < c->base_weights->n && !rc; i++) {
        const char *f = c->base_weights->s[i];
        double mul = c->base_weights_multiplier && i < c->base_weights_multiplier->n ? c->base_weights_multiplier->d[i]
                                                                                    : 1.0;
        size_t nte = 0, nun = 0;
        if (loop_is_oft(c)) rc = sd_oft_merge_file(&R->ctx, &R->model, f, mul, &nun);   /* OFT files: UNet only */
        else rc = sd_lora_merge_file(&R->ctx, &R->model, f, mul, &nte, &nun);
        if (!rc) sd_info("merging module: %s with multiplier %g: %zu text-encoder and %zu UNet modules", f, mul, nte, nun);
    }
    if (!rc && base_weights_unet_f32(R)) rc = sd_params_convert_frozen(&R->model.unet_params, unet_frozen_dtype(c));
    if (!rc && base_weights_unet_f32(R) && te_frozen_dtype(c) == SD_F8E4M3)
        rc = sd_params_convert_frozen(&R->model.te_params, SD_F8E4M3);
    if (!rc) {
        char list[1024] = "";
        for (int i = 0; i < c->base_weights->n && strlen(list) < 900; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", c->base_weights->s[i]);
        sd_info("all weights merged: %s", list);
    }
    return rc;
}

/* networks.dylora: what dylora.py does not implement is refused, not ignored */
static int dylora_check(run *R)
{
    sd_train_config *c = R->c;
    if (R->sdxl)
        return sd_err(SD_EUSAGE, "--network_module networks.dylora: SDXL is not supported (dylora.py names the "
                      "modules of both SDXL text encoders lora_te_*, so they collide)");
    if (c->network_dropout > 0)
        return sd_err(SD_EUSAGE, "--network_dropout: not supported by networks.dylora (dylora.py has no dropout)");
    if (c->scale_weight_norms > 0)
        return sd_err(SD_EUSAGE, "--scale_weight_norms: not supported by networks.dylora (DyLoRANetwork has no "
                      "apply_max_norm_regularization)");
    if (c->dim_from_weights)
        return sd_err(SD_EUSAGE, "--dim_from_weights: not supported with networks.dylora (dylora.py's "
                      "create_network_from_weights drops the unit)");
    return SD_OK;
}

/* lycoris.kohya: what LycorisNetworkKohya does differently from what is implemented is refused */
static int lycoris_check(run *R)
{
    sd_train_config *c = R->c;
    if (c->scale_weight_norms > 0)
        return sd_err(SD_EUSAGE, "--scale_weight_norms: not supported with lycoris.kohya (LyCORIS rescales a "
                      "per-module scalar, which is not implemented)");
    return SD_OK;
}

/* --fp8_base: the reference's unet.to(float8_e4m3fn) / t_enc.to(float8_e4m3fn) casts every parameter,
   biases and norms too (the text encoder's embeddings go back to weight_dtype); they compute upcast
   under autocast. The linear/conv weights are stored in float8 (sd_params_set_frozen_dtype); the other
   frozen float32 parameters are rounded to float8 values in place (the text-model embeddings kept). */
static void fp8_round_rest(sd_params *r, int te)
{
    for (size_t i = 0; i < sd_params_count(r); i++) {
        sd_param *p = sd_params_at(r, i);
        if (p->grad.data || p->value.dtype != SD_F32 || p->value.device != SD_DEV_CPU) continue;
        if (te && strstr(p->key, "text_model.embeddings.")) continue;
        float *v = p->value.data;
        for (int64_t k = 0, n = sd_tensor_numel(&p->value); k < n; k++) v[k] = sd_round_f8e4m3(v[k]);
    }
}

/* --method lora: the network (networks.lora with --network_args; --network_weights, read with
 * SDXL's Diffusers names as SGM names, and --dim_from_weights) and its parameter groups. */
int loop_setup_lora(run *R)
{
    sd_train_config *c = R->c;
    int rc = merge_base_weights(R);
    if (rc) return rc;
    if (unet_frozen_dtype(c) == SD_F8E4M3) fp8_round_rest(&R->model.unet_params, 0);
    if (te_frozen_dtype(c) == SD_F8E4M3) fp8_round_rest(&R->model.te_params, 1);
    if (loop_is_oft(c)) return loop_setup_oft(R);
    int ndim = c->network_dim > 0 ? c->network_dim : 4;
    double nalpha = isnan(c->network_alpha) ? 1.0 : c->network_alpha;
    const int fa = c->network_module && !strcmp(c->network_module, "networks.lora_fa");
    const int dylora = c->network_module && !strcmp(c->network_module, "networks.dylora");
    const int lyco = c->network_module && !strcmp(c->network_module, "lycoris.kohya");
    sd_lycoris_args la;
    memset(&la, 0, sizeof la);
    int unit = 0;
    if (fa && (rc = sd_lora_fa_check_args(R->sdxl, c->network_args ? (const char *const *)c->network_args->s : NULL,
                                          c->network_args ? c->network_args->n : 0)))
        return rc;
    if (dylora) {
        rc = dylora_check(R);
        if (!rc) rc = sd_dylora_args_parse(&R->nargs, &unit, ndim, nalpha, c->network_args ? c->network_args->s : NULL,
                                           c->network_args ? c->network_args->n : 0);
    } else if (lyco) {
        rc = lycoris_check(R);
        if (!rc) rc = sd_lycoris_args_parse(&la, &R->nargs, R->sdxl, ndim, nalpha,
                                            c->network_args ? (const char *const *)c->network_args->s : NULL,
                                            c->network_args ? c->network_args->n : 0);
        if (!rc) rc = sd_lycoris_args_dropout(&la, c->network_dropout);
        R->nargs.rank_dropout = la.rank_dropout;
        R->lyco = 1;
        if (!rc && (!strcmp(la.algo, "loha") || !strcmp(la.algo, "lokr"))) return loop_setup_lyco_delta(R, &la);
    } else {
        rc = sd_lora_net_args_parse(&R->nargs, R->sdxl, ndim, nalpha, c->network_args ? c->network_args->s : NULL,
                                    c->network_args ? c->network_args->n : 0);
    }
    if (rc) return rc;
    const char *module = c->network_module ? c->network_module : "networks.lora";
    for (int i = 0; i < R->nargs.nunknown; i++)
        sd_warn("--network_args %s: not used by %s", R->nargs.unknown[i], module);
    sd_safetensors *wst = NULL;
    sd_lora_file_info finfo;
    memset(&finfo, 0, sizeof finfo);
    if (c->network_weights) {
        rc = sd_safetensors_open(c->network_weights, &wst);
        if (rc) return rc;
        if (R->sdxl && R->unet) {
            /* Diffusers-named SDXL UNet modules are read as their SGM names (spec §7.2) */
            size_t nd = 0;
            rc = sd_lora_file_sdxl_to_sgm(wst, R->unet, &nd);
            if (rc) {
                sd_safetensors_close(wst);
                return rc;
            }
            if (nd) sd_info("%s: %zu UNet modules with Diffusers names, read as their SGM names", c->network_weights, nd);
        }
        if (c->dim_from_weights) {
            rc = sd_lora_file_scan(wst, &finfo);
            if (rc) {
                sd_safetensors_close(wst);
                return rc;
            }
        }
    }
    sd_lora_network_opts no;
    memset(&no, 0, sizeof no);
    no.args = &R->nargs;
    no.with_unet = !c->train_text_encoder_only;
    no.with_te = !c->train_unet_only;
    no.network_dropout = lyco ? la.dropout : c->network_dropout;
    no.from_file = c->dim_from_weights ? &finfo : NULL;
    no.seed = R->seed;
    no.sdxl = R->sdxl;
    no.te2 = R->clip2;
    no.fa = fa;
    no.lycoris = lyco;
    no.tucker = lyco && la.use_tucker;
    no.lyco_targets = lyco ? la.targets : 0;
    no.lyco_drop = !lyco ? SD_LORA_DROP_KOHYA : la.bypass_mode ? SD_LORA_DROP_LYCO_BYPASS : SD_LORA_DROP_LYCO;
    no.rs_lora = la.rs_lora;
    R->lora_fa = fa;
    rc = sd_lora_network_build(&R->net, &R->ctx, R->unet, R->clip, &no);
    sd_lora_file_info_free(&finfo);
    if (rc) {
        sd_safetensors_close(wst);
        return rc;
    }
    R->have_net = 1;
    if (wst) {
        size_t loaded = 0;
        rc = sd_lora_file_load(wst, R->net.refs, R->net.n, SD_LORA_LOAD_ALLOW_MISSING | SD_LORA_LOAD_ALLOW_UNEXPECTED,
                               &loaded);
        sd_safetensors_close(wst);
        if (rc) return rc;
        sd_info("loaded %zu LoRA modules from %s", loaded, c->network_weights);
    }
    if (lyco)
        sd_info("LyCORIS (algo %s%s%s): %zu text-encoder modules, %zu UNet modules (dim %d, alpha %g, conv dim %d, conv "
                "alpha %g)", la.algo, la.bypass_mode ? ", bypass mode" : "", la.rs_lora ? ", rs_lora" : "", R->net.n_te,
                R->net.n_unet, ndim, nalpha, R->nargs.conv_dim, R->nargs.conv_alpha);
    else
        sd_info("%s: %zu text-encoder modules, %zu UNet modules (dim %d, alpha %g)", fa ? "LoRA-FA" : dylora ? "DyLoRA" : "LoRA",
                R->net.n_te, R->net.n_unet, ndim, nalpha);
    if (dylora) {
        rc = sd_dylora_init(&R->dy, &R->net, unit);
        if (rc) return rc;
        R->have_dy = 1;
        sd_info("DyLoRA: unit %d, %zu row parameters", unit, sd_params_count(&R->dy.rows));
        rc = sd_dylora_param_groups(&R->dy, &R->nargs, &R->net, c->text_encoder_lr, c->unet_lr, c->learning_rate,
                                    &R->groups);
    } else if (fa) {
        rc = sd_lora_param_groups_fa(&R->nargs, R->net.refs, R->net.is_te, R->net.n, c->text_encoder_lr, c->unet_lr,
                                     c->learning_rate, c->train_unet_only, &R->groups);
    } else {
        rc = sd_lora_param_groups(&R->nargs, R->net.refs, R->net.is_te, R->net.n, c->text_encoder_lr, c->unet_lr,
                                  c->learning_rate, &R->groups);
    }
    if (rc) return rc;
    if (!R->groups.n) {
        rc = sd_err(SD_EINVAL, "every parameter group has learning rate 0: nothing to train");
        return rc;
    }
    return SD_OK;
}
