/* What the training loop writes (see loop_internal.h): the ss_* metadata of a run, the ModelSpec
 * of every saved file, the trained weights (LoRA, textual-inversion embedding, full checkpoint)
 * at epoch ends, every N steps and at the end, state directories for --resume, and the
 * retention of --save_last_n_epochs / --save_last_n_steps. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/log.h"
#include "base/rng.h"
#include "io/safetensors.h"
#include "train/lora_file.h"
#include "train/loop_internal.h"
#include "train/pyfmt.h"
#include "train/state.h"

double loop_wall_now(void)
{
    const char *e = getenv("SOURCE_DATE_EPOCH");
    if (e && *e) return strtod(e, NULL);
    return sd_wall_time();
}

static int lr_steps_value(const char *s, sd_pyv *out)
{
    sd_lr_steps w;
    int rc = sd_lr_steps_parse(s, "lr_warmup_steps", &w);
    if (rc) return rc;
    *out = w.is_fraction ? sd_pyv_float(w.fraction) : sd_pyv_int(w.steps);
    return SD_OK;
}

int loop_build_metadata(run *R)
{
    sd_train_config *c = R->c;
    sd_ss_facts *f = &R->facts;
    sd_ss_facts_init(f);
    sd_pyv *v = f->v;
    sd_rng sr = sd_rng_key(R->seed, 0, 0, SD_RNG_USER);
    v[SD_SS_SESSION_ID] = sd_pyv_int((int64_t)sd_rng_u32_at(&sr, 0));
    v[SD_SS_TRAINING_STARTED_AT] = sd_pyv_float(R->started_at);
    v[SD_SS_OUTPUT_NAME] = sd_pyv_str(c->output_name);
    /* Adafactor's relative_step: kohya sets args.learning_rate, unet_lr and text_encoder_lr to None */
    int lr_none = sd_optim_adafactor_schedule(&R->ocfg);
    v[SD_SS_LEARNING_RATE] = lr_none ? sd_pyv_none() : sd_pyv_float(c->learning_rate);
    v[SD_SS_TEXT_ENCODER_LR] = lr_none || isnan(c->text_encoder_lr) ? sd_pyv_none() : sd_pyv_float(c->text_encoder_lr);
    v[SD_SS_UNET_LR] = lr_none || isnan(c->unet_lr) ? sd_pyv_none() : sd_pyv_float(c->unet_lr);
    v[SD_SS_NUM_TRAIN_IMAGES] = sd_pyv_int(R->plan.num_train_images);
    v[SD_SS_NUM_VALIDATION_IMAGES] = sd_pyv_int(R->vr.have_plan ? R->vr.plan.num_train_images : 0);
    v[SD_SS_NUM_REG_IMAGES] = sd_pyv_int(R->plan.num_reg_unbalanced);
    v[SD_SS_NUM_BATCHES_PER_EPOCH] = sd_pyv_int(R->plan.nbatches);
    v[SD_SS_NUM_EPOCHS] = sd_pyv_int(R->num_epochs);
    v[SD_SS_GRADIENT_CHECKPOINTING] = sd_pyv_bool(c->gradient_checkpointing);
    v[SD_SS_GRADIENT_ACCUMULATION_STEPS] = sd_pyv_int(c->gradient_accumulation_steps);
    v[SD_SS_MAX_TRAIN_STEPS] = sd_pyv_int(R->max_steps);
    /* absent: argparse's default, the int 0 (a given "0" is int_or_float's 0.0) */
    int rc = SD_OK;
    if (c->lr_warmup_steps_given && c->lr_warmup_steps) rc = lr_steps_value(c->lr_warmup_steps, &v[SD_SS_LR_WARMUP_STEPS]);
    else v[SD_SS_LR_WARMUP_STEPS] = sd_pyv_int(0);
    if (rc) return rc;
    v[SD_SS_LR_SCHEDULER] = sd_pyv_str(R->sched_name);
    v[SD_SS_NETWORK_MODULE] = sd_pyv_str(c->network_module ? c->network_module : "networks.lora");
    v[SD_SS_NETWORK_DIM] = sd_pyv_int(R->nargs.network_dim);
    v[SD_SS_NETWORK_ALPHA] = c->network_alpha_is_int ? sd_pyv_int((int64_t)R->nargs.network_alpha)
                                                     : sd_pyv_float(R->nargs.network_alpha);
    v[SD_SS_NETWORK_DROPOUT] = c->network_dropout > 0 ? sd_pyv_float(c->network_dropout) : sd_pyv_none();
    v[SD_SS_MIXED_PRECISION] = sd_pyv_str(c->mixed_precision ? c->mixed_precision : "no");
    v[SD_SS_FULL_FP16] = sd_pyv_bool(c->full_fp16);
    int v2 = R->cfg.family == SD_FAMILY_SD2;
    int vp = R->cfg.parameterization == SD_PRED_V;
    v[SD_SS_V2] = sd_pyv_bool(v2);
    v[SD_SS_BASE_MODEL_VERSION] = sd_pyv_str(R->sdxl ? "sdxl_base_v1-0"   /* sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0 */
                                             : v2 ? (vp ? "sd_v2_v" : "sd_v2") : (vp ? "sd_v1_v" : "sd_v1"));
    v[SD_SS_CLIP_SKIP] = c->clip_skip > 0 ? sd_pyv_int(c->clip_skip) : sd_pyv_none();
    v[SD_SS_MAX_TOKEN_LENGTH] = c->max_token_length > 0 ? sd_pyv_int(c->max_token_length) : sd_pyv_none();
    /* the reference's bool(args.cache_latents): latent files count as cached; images encoded at every step not */
    int any_live = 0;
    for (size_t i = 0; i < R->d->n; i++) any_live |= R->d->s[i].live;
    v[SD_SS_CACHE_LATENTS] = sd_pyv_bool(!any_live);
    v[SD_SS_SEED] = sd_pyv_int((int64_t)R->seed);
    v[SD_SS_LOWRAM] = sd_pyv_bool(0);
    v[SD_SS_NOISE_OFFSET] = c->noise_offset != 0 ? sd_pyv_float(c->noise_offset) : sd_pyv_none();
    v[SD_SS_MULTIRES_NOISE_ITERATIONS] = c->multires_noise_iterations > 0 ? sd_pyv_int(c->multires_noise_iterations) : sd_pyv_none();
    v[SD_SS_MULTIRES_NOISE_DISCOUNT] = sd_pyv_float(c->multires_noise_discount);
    v[SD_SS_ADAPTIVE_NOISE_SCALE] = c->adaptive_noise_scale != 0 ? sd_pyv_float(c->adaptive_noise_scale) : sd_pyv_none();
    v[SD_SS_ZERO_TERMINAL_SNR] = sd_pyv_bool(c->zero_terminal_snr);
    v[SD_SS_TRAINING_COMMENT] = sd_pyv_str(c->training_comment);
    v[SD_SS_SD_SCRIPTS_COMMIT_HASH] = sd_pyv_str("(unknown)");
    static char optdesc[1024];
    sd_optim_describe(&R->ocfg, optdesc, sizeof optdesc);
    v[SD_SS_OPTIMIZER] = sd_pyv_str(optdesc);
    v[SD_SS_MAX_GRAD_NORM] = sd_pyv_float(c->max_grad_norm);
    v[SD_SS_CAPTION_DROPOUT_RATE] = sd_pyv_float(c->caption.dropout_rate);
    v[SD_SS_CAPTION_DROPOUT_EVERY_N_EPOCHS] = sd_pyv_int(c->caption.dropout_every_n_epochs);
    v[SD_SS_CAPTION_TAG_DROPOUT_RATE] = sd_pyv_float(c->caption.tag_dropout_rate);
    static char face[80];   /* str() of the reference's parsed tuple */
    if (c->has_face_crop) {
        char f0[32], f1[32];
        snprintf(face, sizeof face, "(%s, %s)", sd_py_float(c->face_crop[0], f0, sizeof f0),
                 sd_py_float(c->face_crop[1], f1, sizeof f1));
    }
    v[SD_SS_FACE_CROP_AUG_RANGE] = c->has_face_crop ? sd_pyv_str(face) : sd_pyv_none();
    v[SD_SS_PRIOR_LOSS_WEIGHT] = sd_pyv_float(c->prior_loss_weight);
    v[SD_SS_MIN_SNR_GAMMA] = c->min_snr_gamma > 0 ? sd_pyv_float(c->min_snr_gamma) : sd_pyv_none();
    v[SD_SS_SCALE_WEIGHT_NORMS] = c->scale_weight_norms > 0 ? sd_pyv_float(c->scale_weight_norms) : sd_pyv_none();
    v[SD_SS_IP_NOISE_GAMMA] = c->ip_noise_gamma > 0 ? sd_pyv_float(c->ip_noise_gamma) : sd_pyv_none();
    v[SD_SS_DEBIASED_ESTIMATION] = sd_pyv_bool(c->debiased_estimation_loss);
    v[SD_SS_NOISE_OFFSET_RANDOM_STRENGTH] = sd_pyv_bool(c->noise_offset_random_strength);
    v[SD_SS_IP_NOISE_GAMMA_RANDOM_STRENGTH] = sd_pyv_bool(c->ip_noise_gamma_random_strength);
    v[SD_SS_LOSS_TYPE] = sd_pyv_str(c->loss_type);
    v[SD_SS_HUBER_SCHEDULE] = sd_pyv_str(c->huber_schedule);
    v[SD_SS_HUBER_SCALE] = sd_pyv_float(c->huber_scale);
    v[SD_SS_HUBER_C] = sd_pyv_float(c->huber_c);
    v[SD_SS_FP8_BASE] = sd_pyv_bool(c->fp8_base);
    v[SD_SS_FP8_BASE_UNET] = sd_pyv_bool(c->fp8_base_unet);
    /* the command line's values, as the reference's args */
    v[SD_SS_VALIDATION_SEED] = c->has_validation_seed ? sd_pyv_int(c->validation_seed) : sd_pyv_none();
    v[SD_SS_VALIDATION_SPLIT] = sd_pyv_float(isnan(c->validation_split) ? 0.0 : c->validation_split);
    v[SD_SS_MAX_VALIDATION_STEPS] = c->max_validation_steps >= 0 ? sd_pyv_int(c->max_validation_steps) : sd_pyv_none();
    v[SD_SS_VALIDATE_EVERY_N_EPOCHS] = c->validate_every_n_epochs > 0 ? sd_pyv_int(c->validate_every_n_epochs) : sd_pyv_none();
    v[SD_SS_VALIDATE_EVERY_N_STEPS] = c->validate_every_n_steps > 0 ? sd_pyv_int(c->validate_every_n_steps) : sd_pyv_none();
    /* the legacy (no --dataset_config) block */
    int bs = R->d->n ? R->d->s[0].batch_size : c->train_batch_size;
    v[SD_SS_BATCH_SIZE_PER_DEVICE] = sd_pyv_int(bs);
    v[SD_SS_TOTAL_BATCH_SIZE] = sd_pyv_int((int64_t)bs * c->gradient_accumulation_steps);
    static char reso[64];
    int rw = c->reso_w, rh = c->reso_h;
    if (rw <= 0 && R->plan.nbuckets) rw = R->plan.b[0].w, rh = R->plan.b[0].h;
    snprintf(reso, sizeof reso, "(%d, %d)", rw, rh);
    v[SD_SS_RESOLUTION] = sd_pyv_str(reso);
    v[SD_SS_COLOR_AUG] = sd_pyv_bool(c->color_aug);
    v[SD_SS_FLIP_AUG] = sd_pyv_bool(c->flip_aug);
    v[SD_SS_RANDOM_CROP] = sd_pyv_bool(c->random_crop);
    v[SD_SS_SHUFFLE_CAPTION] = sd_pyv_bool(c->caption.shuffle);
    v[SD_SS_ENABLE_BUCKET] = sd_pyv_bool(R->plan.nbuckets > 1);
    v[SD_SS_BUCKET_NO_UPSCALE] = sd_pyv_bool(0);
    v[SD_SS_MIN_BUCKET_RESO] = sd_pyv_int(256);
    v[SD_SS_MAX_BUCKET_RESO] = sd_pyv_int(1024);
    v[SD_SS_KEEP_TOKENS] = sd_pyv_int(c->caption.keep_tokens);
    static char *dd, *rd, *tf;
    free(dd), free(rd), free(tf);
    dd = rd = tf = NULL;
    char *all = NULL;
    rc = sd_train_data_dirs_json(R->d, 0, &dd, NULL);
    if (!rc) rc = sd_train_data_dirs_json(R->d, 1, &rd, NULL);
    if (!rc) rc = sd_train_data_dirs_json(R->d, -1, &all, &tf);
    free(all);
    if (rc) return rc;
    v[SD_SS_DATASET_DIRS] = sd_pyv_str(dd);
    v[SD_SS_REG_DATASET_DIRS] = sd_pyv_str(rd);
    v[SD_SS_TAG_FREQUENCY] = sd_pyv_str(tf);
    static char binfo[8192];
    {
        size_t L = 0;
        L += (size_t)snprintf(binfo + L, sizeof binfo - L, "{\"buckets\": {");
        for (int i = 0; i < R->plan.nbuckets && L < sizeof binfo - 128; i++)
            L += (size_t)snprintf(binfo + L, sizeof binfo - L, "%s\"%d\": {\"resolution\": [%d, %d], \"count\": %lld}",
                                  i ? ", " : "", i, R->plan.b[i].w, R->plan.b[i].h, (long long)R->plan.b[i].n);
        snprintf(binfo + L, sizeof binfo - L, "}, \"mean_img_ar_error\": 0.0}");
    }
    v[SD_SS_BUCKET_INFO] = sd_pyv_str(binfo);
    static char *nargs_json;
    free(nargs_json);
    nargs_json = NULL;
    if (c->network_args && c->network_args->n) {
        int n = c->network_args->n;
        char **ks = calloc((size_t)n, sizeof *ks);
        const char **vs = calloc((size_t)n, sizeof *vs);
        if (!ks || !vs) {
            free(ks), free(vs);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        /* train_network.py's net_kwargs: a dict (a repeated key keeps its first place and takes the last
           value), then, without --dim_from_weights, "dropout": --network_dropout unless given (its
           "workaround for LyCORIS"), written by json.dumps */
        int m = 0, has_dropout = 0;
        for (int i = 0; i < n && !rc; i++) {
            const char *it = c->network_args->s[i], *eq = strchr(it, '=');
            size_t L = eq ? (size_t)(eq - it) : strlen(it);
            int j = 0;
            while (j < m && (strlen(ks[j]) != L || strncmp(ks[j], it, L))) j++;
            if (j == m && !(ks[m++] = strndup(it, L))) rc = sd_err(SD_ENOMEM, "out of memory");
            vs[j] = eq ? eq + 1 : "";
            has_dropout |= L == 7 && !strncmp(it, "dropout", 7);
        }
        if (!rc) rc = sd_py_json_str_dict((const char *const *)ks, vs, (size_t)m, &nargs_json);
        for (int i = 0; i < m; i++) free(ks[i]);
        free(ks);
        free(vs);
        if (!rc && !has_dropout && !c->dim_from_weights) {
            char num[40], *grown;
            if (c->network_dropout > 0) sd_py_float(c->network_dropout, num, sizeof num);
            else snprintf(num, sizeof num, "null");
            size_t L = strlen(nargs_json);   /* "{...}" -> "{..., "dropout": X}" */
            if (!(grown = realloc(nargs_json, L + sizeof num + 16))) rc = sd_err(SD_ENOMEM, "out of memory");
            else nargs_json = grown, snprintf(nargs_json + L - 1, sizeof num + 17, "%s\"dropout\": %s}", L > 2 ? ", " : "", num);
        }
        if (rc) return rc;
        v[SD_SS_NETWORK_ARGS] = sd_pyv_str(nargs_json);
    }
    /* --dataset_config: ss_datasets, ss_tag_frequency, ss_dataset_dirs instead of the legacy block */
    static char *cfg_ds, *cfg_tf, *cfg_dirs;
    free(cfg_ds), free(cfg_tf), free(cfg_dirs);
    cfg_ds = cfg_tf = cfg_dirs = NULL;
    if (R->d->use_dataset_config && R->d->has_config) {
        rc = sd_train_datasets_meta(R->d, &R->plan, &cfg_ds, &cfg_tf, &cfg_dirs);
        if (rc) return rc;
        f->use_dataset_config = 1;
        v[SD_SS_DATASETS] = sd_pyv_str(cfg_ds);
        v[SD_SS_TAG_FREQUENCY_CFG] = sd_pyv_str(cfg_tf);
        v[SD_SS_DATASET_DIRS_CFG] = sd_pyv_str(cfg_dirs);
    }
    const char *base = strrchr(c->model, '/');
    v[SD_SS_SD_MODEL_NAME] = sd_pyv_str(base ? base + 1 : c->model);
    sd_kv_init(&R->meta);
    rc = sd_ss_metadata(f, c->no_metadata, &R->meta);
    if (rc) return rc;
    return SD_OK;
}

/* The ModelSpec arguments every saved file shares (sai_model_spec.build_metadata's inputs):
 * family, prediction, time, title (--metadata_title, else `title`), resolution, the metadata_*
 * options, the timestep range and clip_skip. The caller sets the kind (lora / textual_inversion). */
static void modelspec_args(const run *R, sd_modelspec_args *a, double timestamp, const char *title)
{
    const sd_train_config *c = R->c;
    memset(a, 0, sizeof *a);
    a->v2 = R->cfg.family == SD_FAMILY_SD2;
    a->sdxl = R->sdxl;
    a->v_parameterization = R->cfg.parameterization == SD_PRED_V;
    a->timestamp = timestamp;
    a->title = c->metadata_title ? c->metadata_title : title;
    a->reso_w = c->reso_w;
    a->reso_h = c->reso_h;
    a->author = c->metadata_author;
    a->description = c->metadata_description;
    a->license = c->metadata_license;
    a->tags = c->metadata_tags;
    a->usage_hint = c->metadata_usage_hint;
    a->thumbnail = c->metadata_thumbnail;
    a->merged_from = c->metadata_merged_from;
    a->trigger_phrase = c->metadata_trigger_phrase;
    a->preprocessor = c->metadata_preprocessor;
    a->is_negative_embedding = c->metadata_is_negative_embedding;
    a->has_timesteps = c->min_timestep >= 0 || c->max_timestep >= 0;
    a->min_timestep = c->min_timestep >= 0 ? c->min_timestep : 0;
    a->max_timestep = c->max_timestep >= 0 ? c->max_timestep : 1000;
    a->clip_skip = c->clip_skip > 0 ? c->clip_skip : -1;
    a->implementation_version = "sd-train/" SD_VERSION;
}

/* The dtype of saved trained weights: --save_precision, else (the reference's save_dtype None) their
 * own: f16 / bf16 with --full_fp16 / --full_bf16, float32 otherwise. */
static sd_st_dtype save_st_dtype(const sd_train_config *c)
{
    if (c->save_precision)
        return !strcmp(c->save_precision, "fp16") ? SD_ST_F16 : !strcmp(c->save_precision, "bf16") ? SD_ST_BF16 : SD_ST_F32;
    return c->full_fp16 ? SD_ST_F16 : c->full_bf16 ? SD_ST_BF16 : SD_ST_F32;
}

static int save_lora(run *R, const char *path, int64_t steps, int64_t epoch1)
{
    sd_train_config *c = R->c;
    sd_kv m;
    sd_kv_init(&m);
    int rc = sd_kv_copy(&m, &R->meta);
    double now = loop_wall_now();
    if (!rc) rc = sd_ss_metadata_at_save(&m, now, steps, epoch1, c->no_metadata);
    sd_modelspec_args ma;
    modelspec_args(R, &ma, now, c->output_name);
    ma.lora = 1;
    if (!rc) rc = sd_modelspec_metadata(&ma, &m);
    sd_lora_save_opts so;
    memset(&so, 0, sizeof so);
    so.dtype = save_st_dtype(c);
    so.precision_given = c->save_precision != NULL;
    /* LyCORIS's alpha buffer is torch.tensor(alpha * (rank / r_factor)): a float, never an integer */
    so.alpha_int = !c->save_precision && c->network_alpha_is_int &&
                   !(c->network_module && !strcmp(c->network_module, "lycoris.kohya"));
    so.meta = &m;
    char mh[65], lh[9];
    if (!rc) rc = loop_net_to(R, SD_DEV_CPU);
    if (!rc && R->have_oft) {
        /* the alpha buffer: I64 when it came from an integer (option, or the file's with --dim_from_weights) */
        sd_oft_save_opts oo = { .dtype = so.dtype, .alpha_int = !c->save_precision && R->oft.alpha_int, .meta = &m };
        rc = sd_oft_file_save(path, &R->oft, &oo);
    } else if (!rc && R->have_lyn) {
        rc = sd_lyco_file_save(path, &R->lyn, so.dtype, &m);
    } else if (!rc) {
        rc = sd_lora_file_save(path, R->net.refs, R->net.n, &so, mh, lh);
    }
    int rc2 = loop_net_to(R, R->dev);
    sd_kv_free(&m);
    return rc ? rc : rc2;
}

/* --method ti: the embedding as the reference's save_weights writes it (ModelSpec metadata only,
 * in .safetensors files). */
static int save_ti(run *R, const char *path)
{
    sd_train_config *c = R->c;
    sd_kv m;
    sd_kv_init(&m);
    sd_modelspec_args ma;
    modelspec_args(R, &ma, loop_wall_now(), R->outname);
    ma.textual_inversion = 1;
    int rc = sd_modelspec_metadata(&ma, &m);
    if (!rc && R->have_ti2)   /* SDXL: {"clip_l", "clip_g"} (sdxl_train_textual_inversion.py) */
        rc = sd_ti_save_sdxl(&R->ti, &R->ti2, path, save_st_dtype(c), (const char *const *)m.keys,
                             (const char *const *)m.vals, m.n);
    else if (!rc)
        rc = sd_ti_save(&R->ti, path, save_st_dtype(c), (const char *const *)m.keys, (const char *const *)m.vals, m.n);
    sd_kv_free(&m);
    return rc;
}

/* A full checkpoint (train/full.h): the reference's save_stable_diffusion_checkpoint with the
 * ModelSpec of get_sai_model_spec(is_stable_diffusion_ckpt=True). epoch_no: the reference's
 * epoch argument (epoch saves: the 1-based epoch; step saves and the final save: the 0-based one). */
static int full_save_opts(run *R, int64_t epoch_no, int64_t steps, sd_kv *m, sd_full_save_opts *so)
{
    sd_train_config *c = R->c;
    memset(so, 0, sizeof *so);
    so->format = R->ffmt;
    so->save_dtype = c->save_precision ? (int)save_st_dtype(c) : -1;
    so->weight_dtype = SD_ST_F32;
    if (c->mixed_precision && !strcmp(c->mixed_precision, "fp16")) so->weight_dtype = SD_ST_F16;
    else if (c->mixed_precision && !strcmp(c->mixed_precision, "bf16")) so->weight_dtype = SD_ST_BF16;
    so->te_trained = R->full.te_train;
    so->full_half = c->full_fp16 || c->full_bf16;
    so->vae_f32 = c->no_half_vae;
    so->epoch = epoch_no < 0 ? 0 : epoch_no;
    so->global_step = steps;
    so->meta = m;
    if (!m) return SD_OK;
    sd_modelspec_args ma;
    modelspec_args(R, &ma, loop_wall_now(), c->output_name);
    return sd_modelspec_metadata(&ma, m);
}

static int save_full(run *R, const char *path, int64_t steps, int64_t epoch_no)
{
    sd_kv m;
    sd_kv_init(&m);
    sd_full_save_opts so;
    int rc = full_save_opts(R, epoch_no, steps, &m, &so);
    /* the writer reads host memory */
    sd_params *regs[3] = { &R->model.unet_params, &R->model.te_params, &R->model.vae_params };
    for (int i = 0; i < 3 && !rc && R->dev != SD_DEV_CPU; i++)
        if (regs[i]->allocated) rc = sd_params_move(regs[i], SD_DEV_CPU);
    if (!rc) rc = sd_full_save(path, &R->model, &so);
    int rc2 = SD_OK;
    for (int i = 0; i < 3 && !rc2 && R->dev != SD_DEV_CPU; i++)
        if (regs[i]->allocated) rc2 = sd_params_move(regs[i], R->dev);
    sd_kv_free(&m);
    return rc ? rc : rc2;
}

char *loop_join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int loop_save_state_dir(run *R, const char *dir, int64_t global_step, int64_t epoch, int64_t step_in_epoch)
{
    sd_train_state_in s;
    memset(&s, 0, sizeof s);
    s.prog.global_step = global_step;
    s.prog.epoch = epoch;
    s.prog.step_in_epoch = step_in_epoch;
    s.prog.sched_step = R->sched_step;
    s.prog.seed = R->seed;
    s.scaler = R->scaler.enabled ? &R->scaler : NULL;
    s.net = R->have_ti ? &R->ti.reg : &R->net.reg;
    if (R->have_ti2) s.net2 = &R->ti2.reg;   /* SDXL TI: TE2's rows */
    if (R->is_full) {
        const sd_params *regs[2] = { NULL, NULL };
        sd_full_registries(&R->full, regs);
        s.net = regs[0];
        s.net2 = regs[1];
    }
    s.opt = R->have_opt ? &R->opt : NULL;
    s.options_json = R->c->options_json;
    s.loss_window = R->window;
    s.loss_window_n = R->window_n;
    for (size_t i = 0; i < R->window_n; i++) s.loss_total += R->window[i];
    int rc = loop_net_to(R, SD_DEV_CPU);
    if (!rc && R->dev_optim) rc = sd_optim_place(&R->opt, NULL);   /* the state is read on the host */
    if (!rc) rc = sd_train_state_save(dir, &s);
    int rc2 = loop_net_to(R, R->dev);
    if (!rc2 && R->dev_optim) rc2 = sd_optim_place(&R->opt, &R->ctx);
    return rc ? rc : rc2;
}

/* Saves at a sync point: checkpoint and state names, retention. */
int loop_save_checkpoint(run *R, sd_save_kind kind, int64_t no, int64_t global_step, int64_t epoch1,
                           int64_t cur_epoch, int64_t cur_step_in_epoch, int with_state)
{
    sd_train_config *c = R->c;
    char name[512];
    int rc = sd_save_name(name, sizeof name, kind, R->outname, no, R->ext);
    if (rc) return rc;
    char *path = loop_join_path(R->outdir, name);
    if (!path) return sd_err(SD_ENOMEM, "out of memory");
    rc = R->have_ti ? save_ti(R, path)
         : R->is_full ? save_full(R, path, global_step, kind == SD_SAVE_EPOCH ? epoch1 : epoch1 - 1)
         : R->cnet    ? loop_cn_save(R, path)
                      : save_lora(R, path, global_step, epoch1);
    if (!rc && kind != SD_SAVE_LAST) sd_info("saved %s", path);
    free(path);
    if (rc) return rc;
    if (with_state) {
        rc = sd_save_name(name, sizeof name, kind, R->outname, no, NULL);
        if (rc) return rc;
        char *sdir = loop_join_path(R->outdir, name);
        if (!sdir) return sd_err(SD_ENOMEM, "out of memory");
        rc = loop_save_state_dir(R, sdir, global_step, cur_epoch, cur_step_in_epoch);
        if (!rc) sd_info("saved state %s", sdir);
        free(sdir);
        if (rc) return rc;
    }
    /* retention */
    int64_t rm = -1, rms = -1;
    if (kind == SD_SAVE_EPOCH) {
        rm = sd_remove_epoch_no(no, c->save_every_n_epochs, c->save_last_n_epochs, 0);
        rms = sd_remove_epoch_no(no, c->save_every_n_epochs,
                                 c->save_last_n_epochs_state > 0 ? c->save_last_n_epochs_state : c->save_last_n_epochs, 1);
    } else if (kind == SD_SAVE_STEP) {
        rm = sd_remove_step_no(no, c->save_every_n_steps, c->save_last_n_steps, 0);
        rms = sd_remove_step_no(no, c->save_every_n_steps,
                                c->save_last_n_steps_state > 0 ? c->save_last_n_steps_state : c->save_last_n_steps, 1);
    }
    if (rm >= 0 && !(kind == SD_SAVE_EPOCH && rm == 0)) {
        sd_save_name(name, sizeof name, kind, R->outname, rm, R->ext);
        char *p = loop_join_path(R->outdir, name);
        if (p) {
            struct stat sb;
            if (R->is_full && R->ffmt == SD_FULL_DIFFUSERS) {   /* a folder (the reference's shutil.rmtree) */
                if (!lstat(p, &sb) && S_ISDIR(sb.st_mode) && !sd_remove_tree(p)) sd_info("removed %s", p);
            } else if (unlink(p) == 0) {
                sd_info("removed %s", p);
            }
            free(p);
        }
    }
    if (with_state && rms >= 0 && !(kind == SD_SAVE_EPOCH && rms == 0)) {
        sd_save_name(name, sizeof name, kind, R->outname, rms, NULL);
        char *p = loop_join_path(R->outdir, name);
        if (p) {
            sd_remove_tree(p);
            free(p);
        }
    }
    return SD_OK;
}

/* After a failure in the step after global_step: write the last good state (the weights as they
 * are, the cursor at the first micro batch of the failed step) as a step state, and say where in
 * `tail` ("the last good state is in DIR" or that it could not be written). */
void loop_write_last_good_state(run *R, int64_t global_step, int64_t epoch, int64_t step_in_epoch, char *tail,
                                  size_t n)
{
    char name[512];
    sd_save_name(name, sizeof name, SD_SAVE_STEP, R->outname, global_step, NULL);
    char *sdir = loop_join_path(R->outdir, name);
    int src = sdir ? loop_save_state_dir(R, sdir, global_step, epoch, step_in_epoch) : SD_ENOMEM;
    if (src) snprintf(tail, n, "the last good state could not be written");
    else snprintf(tail, n, "the last good state is in %s", sdir);
    free(sdir);
}
