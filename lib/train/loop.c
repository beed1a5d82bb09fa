/* The training loop (see loop.h): sd_train_run. Its setup, text path, latents, saving and records
 * are in loop_setup.c, loop_text.c, loop_latents.c, loop_save.c and loop_data.c; the state they
 * share in loop_internal.h. */
#include "train/loop.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"
#include "base/log.h"
#include "base/progress.h"
#include "io/jsonl.h"
#include "models/clip.h"
#include "models/detect.h"
#include "models/sd_model.h"
#include "models/sdxl.h"
#include "models/unet.h"
#include "tensor/device.h"
#include "text/clip_tokenizer.h"
#include "train/batch.h"
#include "train/full.h"
#include "train/lora_net.h"
#include "train/lora_network.h"
#include "train/loop_internal.h"
#include "train/loop_sample.h"
#include "train/loss_scale.h"
#include "train/lr_sched.h"
#include "train/objective_step.h"
#include "train/pyfmt.h"
#include "data/augment.h"
#include "train/meta.h"
#include "train/optim.h"
#include "train/state.h"
#include "train/state_kohya.h"
#include "train/tboard.h"
#include "train/validation.h"

/* ---- the run -------------------------------------------------------------------------------------- */

/* The seed of a state directory (state.json "seed"), if it can be read. */
static void peek_state_seed(const char *dir, uint64_t *seed)
{
    char *path = malloc(strlen(dir) + 16), *text = NULL;
    size_t n = 0;
    if (!path) return;
    sprintf(path, "%s/state.json", dir);
    if (sd_read_file(path, 64u << 20, &text, &n) == SD_OK) {
        jv doc;
        if (sd_json_parse(text, n, &doc) == SD_OK) {
            jv v = jv_get_kind(doc) == JV_KIND_OBJECT ? jv_object_get(jv_copy(doc), jv_string("seed")) : jv_invalid();
            if (jv_is_valid(v) && jv_get_kind(v) == JV_KIND_STRING) *seed = strtoull(jv_string_value(v), NULL, 10);
            jv_free(v);
            jv_free(doc);
        }
        free(text);
    }
    free(path);
}

/* --resume from a kohya-ss/sd-scripts train_network.py state folder (train/state_kohya.h): the LoRA
 * weights and the optimizer's state from accelerate's files, the step from train_state.json's
 * current_step (sd-train continues the step count and the data cursor there, as with its own
 * states), the LR scheduler's position from scheduler.bin's last_epoch. */
static int resume_kohya(run *R, int64_t *global_step, int64_t *start_epoch, int64_t *start_i)
{
    sd_train_config *c = R->c;
    if (R->have_ti || R->is_full)
        return sd_err(SD_EUSAGE, "--resume %s: a kohya-ss state folder is read for --method lora only", c->resume);
    if (R->lora_fa || R->have_dy || R->have_oft || R->lyco)
        return sd_err(SD_EUSAGE, "--resume %s: a kohya-ss state folder is read for --network_module networks.lora only",
                      c->resume);
    sd_kohya_state ks;
    int rc = sd_train_state_load_kohya(c->resume, R->net.refs, R->net.n, &R->opt, &ks);
    if (rc) return rc;
    if (!ks.has_train_state)
        sd_warn("%s has no train_state.json: the step count starts at 0 (as kohya-ss does)", c->resume);
    *global_step = ks.current_step;
    R->sched_step = ks.last_epoch >= 0 ? ks.last_epoch : ks.current_step;
    if (ks.last_epoch < 0 && ks.sched_note[0])
        sd_warn("%s (not an LR scheduler state this reader takes): the LR schedule continues from step %lld",
                ks.sched_note, (long long)ks.current_step);
    else if (ks.last_epoch < 0)
        sd_warn("%s has no scheduler.bin: the LR schedule continues from step %lld", c->resume,
                (long long)ks.current_step);
    else if (ks.last_epoch != ks.current_step)
        sd_info("%s: the LR scheduler is at %lld, the step count at %lld (a multi-GPU run steps it once per process, "
                "fp16 steps skipped by the loss scaler do not step it): the schedule continues from %lld", c->resume,
                (long long)ks.last_epoch, (long long)ks.current_step, (long long)ks.last_epoch);
    int A = c->gradient_accumulation_steps > 0 ? c->gradient_accumulation_steps : 1;
    *start_epoch = ks.current_step / R->steps_per_epoch;
    *start_i = (ks.current_step % R->steps_per_epoch) * A;
    if (ks.current_epoch >= 0 && ks.current_epoch != *start_epoch + (*start_i > 0))
        sd_info("%s: kohya's run was in epoch %lld, this run's %lld steps per epoch put step %lld in epoch %lld",
                c->resume, (long long)ks.current_epoch, (long long)R->steps_per_epoch, (long long)ks.current_step,
                (long long)*start_epoch + 1);
    sd_warn("%s: kohya-ss's random states (python, numpy, torch%s) cannot carry over: from step %lld on the noise, "
            "timesteps, dropout and data order are sd-train's draws for --seed %llu, so the run is not the one kohya-ss "
            "would continue bit for bit%s", c->resume, ks.has_rng ? ", random_states_0.pkl" : "",
            (long long)ks.current_step, (unsigned long long)R->seed,
            ks.has_scaler ? "; scaler.pt is not read (the fp16 loss scale starts afresh)" : "");
    sd_info("resumed from kohya-ss state %s: step %lld, epoch %lld, batch %lld (%zu of %zu optimizer parameters "
            "reordered from kohya-ss's index order)", c->resume, (long long)*global_step,
            (long long)*start_epoch + 1, (long long)*start_i, ks.reordered, R->opt.nparams);
    return SD_OK;
}

int loop_ensure_scratch(run *R, size_t want)
{
    if (want <= R->scratch_cap) return SD_OK;
    sd_ctx_free(&R->ctx);
    int rc = sd_ctx_init(&R->ctx, R->dev, R->c->threads, want);
    if (rc) {
        R->scratch_cap = 0;
        return rc;
    }
    R->scratch_cap = want;
    return SD_OK;
}

/* The LoRA registry to the host (optimizer, saving) or back to the run's device. */
int loop_net_to(run *R, sd_devkind dev)
{
    if (R->dev == SD_DEV_CPU || R->have_ti) return SD_OK;   /* TI: its two parameters stay on the host */
    if (!R->is_full) return sd_params_move(&R->net.reg, dev);
    const sd_params *regs[2];
    int n = sd_full_registries(&R->full, regs), rc = SD_OK;
    for (int i = 0; i < n && !rc; i++) rc = sd_params_move((sd_params *)regs[i], dev);
    return rc;
}

/* kohya's optimizer_eval_fn / optimizer_train_fn around sampling, saving and validation
 * (train_network.py only: train_db, fine_tune and train_textual_inversion call neither — nor the
 * initial train(), so schedulefree 1.4 refuses their first step; here their optimizer is in train mode
 * from the start and stays there). The swap runs on the host copy of the network. */
static int sf_mode(run *R, int train)
{
    if (R->is_full || R->have_ti || !sd_optim_is_schedulefree(R->ocfg.kind)) return SD_OK;
    int rc = R->dev_optim ? SD_OK : loop_net_to(R, SD_DEV_CPU);
    if (!rc && R->have_dy) rc = sd_dylora_to_rows(&R->dy, &R->net, 0);   /* the swap runs on the rows */
    if (!rc) rc = train ? sd_optim_sf_train(&R->opt) : sd_optim_sf_eval(&R->opt);
    if (!rc && R->have_dy) rc = sd_dylora_from_rows(&R->dy, &R->net);
    if (!rc && !R->dev_optim) rc = loop_net_to(R, R->dev);
    return rc;
}

static int alloc_buffers(run *R)
{
    sd_train_config *c = R->c;
    int64_t C = R->cfg.unet.in_channels;
    R->maxB = 0;
    R->maxper = 0;
    for (int i = 0; i < R->plan.nbuckets; i++) {
        const sd_batch_bucket *b = &R->plan.b[i];
        int64_t B = b->batch_size < b->n ? b->batch_size : b->n;
        int64_t per = C * (b->h / 8) * (b->w / 8);
        if (B > R->maxB) R->maxB = B;
        if (per > R->maxper) R->maxper = per;
        if ((b->h / 8) % (1 << (R->cfg.unet.n_levels - 1)) || (b->w / 8) % (1 << (R->cfg.unet.n_levels - 1)))
            return sd_err(SD_EINVAL, "bucket %dx%d: the latent size is not a multiple of %d", b->w, b->h,
                          1 << (R->cfg.unet.n_levels - 1));
    }
    /* the validation batches share the buffers (forward only: no arena, temporaries from scratch) */
    size_t vneed = 0;
    for (int i = 0; R->vr.have_plan && i < R->vr.plan.nbuckets; i++) {
        const sd_batch_bucket *b = &R->vr.plan.b[i];
        int64_t B = b->batch_size < b->n ? b->batch_size : b->n;
        int64_t per = C * (b->h / 8) * (b->w / 8);
        if (B > R->maxB) R->maxB = B;
        if (per > R->maxper) R->maxper = per;
        if ((b->h / 8) % (1 << (R->cfg.unet.n_levels - 1)) || (b->w / 8) % (1 << (R->cfg.unet.n_levels - 1)))
            return sd_err(SD_EINVAL, "validation bucket %dx%d: the latent size is not a multiple of %d", b->w, b->h,
                          1 << (R->cfg.unet.n_levels - 1));
    }
    size_t tot = (size_t)(R->maxB * R->maxper);
    R->x0 = calloc(tot, sizeof(float));
    R->noise = calloc(tot, sizeof(float));
    R->noisy = calloc(tot, sizeof(float));
    R->target = calloc(tot, sizeof(float));
    R->work = calloc(2 * tot, sizeof(float));
    R->ipn = calloc(tot, sizeof(float));
    R->grad = calloc(tot, sizeof(float));
    R->lossv = calloc((size_t)R->maxB, sizeof(float));
    R->hc = calloc((size_t)R->maxB, sizeof(float));
    R->lweight = calloc((size_t)R->maxB, sizeof(float));
    R->factor = calloc((size_t)R->maxB, sizeof(double));
    R->tsteps = calloc((size_t)R->maxB, sizeof(int));
    R->nchunks = c->max_token_length > 75 ? c->max_token_length / 75 : 1;
    R->seqlen = R->nchunks == 1 ? 77 : R->nchunks * 75 + 2;
    R->ids = calloc((size_t)(R->maxB * R->nchunks * 77), sizeof(int32_t));
    R->tokw = calloc((size_t)(R->maxB * R->seqlen), sizeof(float));
    if (!R->x0 || !R->noise || !R->noisy || !R->target || !R->work || !R->ipn || !R->grad || !R->lossv || !R->hc ||
        !R->lweight || !R->factor || !R->tsteps || !R->ids || !R->tokw)
        return sd_err(SD_ENOMEM, "out of memory");
    int64_t W = R->cfg.unet.context_dim;
    if (R->use_masks && !(R->mask = calloc(tot, sizeof(float)))) return sd_err(SD_ENOMEM, "out of memory");
    R->pred = calloc(tot, sizeof(float));
    R->tf = calloc((size_t)R->maxB, sizeof(float));
    R->stage = calloc((size_t)(R->maxB * R->seqlen * W), sizeof(float));
    if (!R->pred || !R->tf || !R->stage) return sd_err(SD_ENOMEM, "out of memory");
    if (R->sdxl) {
        R->ids2 = calloc((size_t)(R->maxB * R->nchunks * 77), sizeof(int32_t));
        R->sizes = calloc((size_t)(R->maxB * 6), sizeof(int));
        R->semb = calloc((size_t)(R->maxB * SD_SDXL_SIZE_EMB_DIM), sizeof(float));
        if (!R->ids2 || !R->sizes || !R->semb) return sd_err(SD_ENOMEM, "out of memory");
    }
    /* the networks' inputs and outputs live on the device; the host arrays above are copied in and
       out (on the CPU the copies are memmoves: the same code path either way) */
    int rc = sd_tensor_alloc_on(&R->t_ctx, R->dev, SD_F32, 3, (int64_t[]){ R->maxB, R->seqlen, W });
    if (!rc) rc = sd_tensor_alloc_on(&R->t_dctx, R->dev, SD_F32, 3, (int64_t[]){ R->maxB, R->seqlen, W });
    if (!rc && R->nchunks > 1 && !R->sdxl)
        rc = sd_tensor_alloc_on(&R->t_hidden, R->dev, SD_F32, 3, (int64_t[]){ R->maxB * R->nchunks, 77, W });
    if (!rc && R->sdxl) {   /* the two encoders' outputs, the vector input and their gradients */
        int64_t mb = R->maxB, T = R->seqlen;
        rc = sd_tensor_alloc_on(&R->t_ids2, R->dev, SD_I32, 1, (int64_t[]){ mb * R->nchunks * 77 });
        if (!rc) rc = sd_tensor_alloc_on(&R->t_hs1, R->dev, SD_F32, 3, (int64_t[]){ mb, T, R->W1 });
        if (!rc) rc = sd_tensor_alloc_on(&R->t_hs2, R->dev, SD_F32, 3, (int64_t[]){ mb, T, R->W2 });
        if (!rc) rc = sd_tensor_alloc_on(&R->t_pool, R->dev, SD_F32, 2, (int64_t[]){ mb, R->P });
        if (!rc) rc = sd_tensor_alloc_on(&R->t_semb, R->dev, SD_F32, 2, (int64_t[]){ mb, SD_SDXL_SIZE_EMB_DIM });
        if (!rc) rc = sd_tensor_alloc_on(&R->t_vec, R->dev, SD_F32, 2, (int64_t[]){ mb, R->ADM });
        if (!rc && R->te_train) {
            rc = sd_tensor_alloc_on(&R->t_dvec, R->dev, SD_F32, 2, (int64_t[]){ mb, R->ADM });
            if (!rc) rc = sd_tensor_alloc_on(&R->t_dpool, R->dev, SD_F32, 2, (int64_t[]){ mb, R->P });
            if (!rc) rc = sd_tensor_alloc_on(&R->t_dhs1, R->dev, SD_F32, 3, (int64_t[]){ mb, T, R->W1 });
            if (!rc) rc = sd_tensor_alloc_on(&R->t_dhs2, R->dev, SD_F32, 3, (int64_t[]){ mb, T, R->W2 });
        }
        if (!rc && R->nchunks > 1) {
            rc = sd_tensor_alloc_on(&R->t_work1, R->dev, SD_F32, 3, (int64_t[]){ mb * R->nchunks, 77, R->W1 });
            if (!rc) rc = sd_tensor_alloc_on(&R->t_work2, R->dev, SD_F32, 3, (int64_t[]){ mb * R->nchunks, 77, R->W2 });
        }
    }
    if (!rc) rc = sd_tensor_alloc_on(&R->t_y, R->dev, SD_F32, 1, (int64_t[]){ R->maxB * R->maxper });
    if (!rc) rc = sd_tensor_alloc_on(&R->t_x, R->dev, SD_F32, 1, (int64_t[]){ R->maxB * R->maxper });
    if (!rc) rc = sd_tensor_alloc_on(&R->t_dy, R->dev, SD_F32, 1, (int64_t[]){ R->maxB * R->maxper });
    if (!rc) rc = sd_tensor_alloc_on(&R->t_t, R->dev, SD_F32, 1, (int64_t[]){ R->maxB });
    if (!rc) rc = sd_tensor_alloc_on(&R->t_ids, R->dev, SD_I32, 1, (int64_t[]){ R->maxB * R->nchunks * 77 });
    if (!rc && R->cnet) rc = loop_cn_buffers(R);
    if (rc) return rc;
    /* activation arena: the largest bucket (LoRA dropout masks count only while training) */
    R->net.rt.training = 1;
    size_t saved = 0, scratch = 0;
    for (int i = 0; i < R->plan.nbuckets; i++) {
        const sd_batch_bucket *b = &R->plan.b[i];
        int64_t B = b->batch_size < b->n ? b->batch_size : b->n;
        sd_nn_plan p = sd_unet_plan(R->unet, B, b->h / 8, b->w / 8, R->seqlen);
        if (R->cnet) loop_cn_plan(R, B, b->h / 8, b->w / 8, &p.saved, &p.scratch);
        if (p.saved > saved) saved = p.saved;
        if (p.scratch > scratch) scratch = p.scratch;
    }
    if (R->te_train) {
        sd_nn_plan p = loop_text_plan(R, R->maxB);
        saved += p.saved;
        if (p.scratch > scratch) scratch = p.scratch;
    }
    if (R->vr.have_plan) {
        R->net.rt.training = 0;
        for (int i = 0; i < R->vr.plan.nbuckets; i++) {
            const sd_batch_bucket *b = &R->vr.plan.b[i];
            int64_t B = b->batch_size < b->n ? b->batch_size : b->n;
            sd_nn_plan p = sd_unet_plan(R->unet, B, b->h / 8, b->w / 8, R->seqlen);
            if (p.scratch + p.saved > vneed) vneed = p.scratch + p.saved;
        }
        sd_nn_plan p = loop_text_plan(R, R->maxB);
        if (p.scratch + p.saved > vneed) vneed = p.scratch + p.saved;
        R->net.rt.training = 1;
    }
    if (R->te_cached) {   /* the caching pass: the encoders in inference, one sample at a time */
        sd_nn_plan p = loop_text_plan(R, 1);
        if (p.scratch + p.saved > vneed) vneed = p.scratch + p.saved;
    }
    size_t want = scratch * 2 + ((size_t)1 << 30);
    if (vneed && 2 * vneed + ((size_t)1 << 30) > want) want = 2 * vneed + ((size_t)1 << 30);
    /* images encoded at every step: the encoder's pass (loop_latents.c) fits without regrowing mid-run */
    for (size_t i = 0; i < R->d->n; i++) {
        const sd_train_sample *s = &R->d->s[i];
        if (!s->live) continue;
        size_t v = 4 * sd_vae_scratch_bytes(&R->model.vae, 1, s->bucket_h, s->bucket_w, 0) + ((size_t)1 << 30);
        if (v > want) want = v;
    }
    if (R->dev == SD_DEV_CUDA) {
        /* fail fast: weights, the activation arena and the op scratch must fit in free GPU memory */
        sd_params *regs[4] = { &R->model.unet_params, &R->model.te_params, &R->model.vae_params, &R->net.reg };
        size_t weights = 0;
        for (int i = 0; i < 4; i++) weights += regs[i]->value_bytes + regs[i]->grad_bytes;
        if (R->dev_optim) weights += sd_optim_device_bytes(&R->opt);   /* the optimizer's state (+ Adafactor's scratch) */
        if (R->have_fused) weights += sd_fused_grad_bound(&R->fused);       /* the gradients held at once */
        if (R->have_ti) weights += sd_tensor_nbytes(&R->ti.table);          /* the widened token table */
        if (R->have_ti2) weights += sd_tensor_nbytes(&R->ti2.table);
        /* the step's device buffers: inputs, outputs, contexts, SDXL's second encoder's and vector's */
        const sd_tensor *bufs[] = { &R->t_ctx, &R->t_dctx, &R->t_hidden, &R->t_y, &R->t_x, &R->t_dy, &R->t_t, &R->t_ids,
                                    &R->t_ids2, &R->t_hs1, &R->t_hs2, &R->t_work1, &R->t_work2, &R->t_pool, &R->t_semb,
                                    &R->t_vec, &R->t_dvec, &R->t_dpool, &R->t_dhs1, &R->t_dhs2 };
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            if (bufs[i]->data) weights += sd_tensor_nbytes(bufs[i]);
        const double gib = 1024.0 * 1024 * 1024;
        char what[64], parts[192];
        snprintf(what, sizeof what, "--device cuda:%d: training", c->device_index);
        snprintf(parts, sizeof parts, "weights %.2f GiB, activations %.2f GiB for batch %lld, working memory %.2f GiB",
                 (double)weights / gib, (double)saved / gib, (long long)R->maxB, (double)want / gib);
        rc = sd_device_fit(c->device_index, weights + saved + want, what, parts,
                           "lower --train_batch_size or the resolution, use --gradient_checkpointing or "
                           "--mixed_precision bf16, or run with --device cpu", NULL);
        if (rc) return rc;
    }
    rc = sd_nn_arena_init(&R->act, R->dev, saved + 4096);
    if (rc) return rc;
    return loop_ensure_scratch(R, want);
}

/* The UNet's inputs on the device: the noisy latents (R->noisy) and the timesteps (R->tsteps);
 * y: the output buffer. */
static int unet_inputs(run *R, int B, int64_t C, int h, int w, sd_tensor *x, sd_tensor *tt, sd_tensor *y)
{
    int64_t n = (int64_t)B * C * h * w;
    *x = dview(&R->t_x, 4, (int64_t[]){ B, C, h, w });
    *tt = dview(&R->t_t, 1, (int64_t[]){ B });
    *y = dview(&R->t_y, 4, (int64_t[]){ B, C, h, w });
    for (int b = 0; b < B; b++) R->tf[b] = (float)R->tsteps[b];
    int rc = sd_tensor_upload(x, R->noisy, (size_t)n * sizeof(float));
    if (!rc) rc = sd_tensor_upload(tt, R->tf, (size_t)B * sizeof(float));
    return rc;
}

/* One micro batch: forward, loss, backward (gradients accumulate). *loss_out = batch loss. */
static int micro_step(run *R, const sd_batch_bucket *bk, const int64_t *idx, int B, int64_t micro, int64_t epoch1,
                      int64_t gstep, double *loss_out)
{
    sd_train_config *c = R->c;
    int h = bk->h / 8, w = bk->w / 8;
    int64_t C = R->cfg.unet.in_channels;
    int64_t per = C * h * w;
    uint32_t step = (uint32_t)micro;
    int rc = loop_load_latents(R, R->d, idx, B, micro, h, w, 0);
    if (rc) return rc;
    if (!R->te_cached) rc = loop_encode_captions(R, R->d, idx, B, R->seed, (uint32_t)micro, epoch1, gstep, 0);
    if (rc) return rc;
    R->net.rt.step = step;
    R->net.rt.training = 1;
    sd_arena_reset(&R->act, 0);
    /* text encoder(s) */
    sd_tensor ctxt;
    const sd_tensor *vec = NULL;
    int64_t W = R->cfg.unet.context_dim;
    rc = loop_text_forward(R, R->d, idx, B, R->te_train ? &R->act : NULL, &ctxt, &vec);
    if (rc) return rc;
    /* noise, timesteps, noisy latents, target */
    if (c->inject) {
        rc = c->inject(c->inject_user, micro, idx, B, per, R->noise, R->tsteps);
        if (!rc) rc = sd_tobj_inputs_given(&R->obj, B, per, R->x0, R->noise, R->tsteps, R->noisy, R->target);
    } else {
        rc = sd_tobj_inputs(&R->obj, R->seed, step, B, C, h, w, R->x0, R->noise, R->noisy, R->target, R->work, R->ipn,
                            R->tsteps);
    }
    if (rc) return rc;
    /* UNet (inputs copied to the device, the prediction back for the loss) */
    sd_tensor x, tt, y;
    rc = unet_inputs(R, B, C, h, w, &x, &tt, &y);
    if (!rc && R->cnet) rc = loop_cn_forward(R, idx, B, h, w, &x, &tt, &ctxt);   /* its residuals go into the UNet */
    if (!rc) rc = sd_unet_forward(&R->ctx, R->unet, &R->act, &y, &x, &tt, &ctxt, vec);
    if (!rc) rc = sd_tensor_download(&y, R->pred, (size_t)(B * per) * sizeof(float));
    if (rc) return rc;
    for (int b = 0; b < B; b++) R->lweight[b] = R->d->s[idx[b]].is_reg ? (float)c->prior_loss_weight : 1.0f;
    /* the gradient seed: 1/A of gradient accumulation, then the fp16 loss scale (accelerate's
       backward: scaler.scale(loss / A)); the loss itself stays unscaled */
    const float *mask = R->mask_on ? R->mask : NULL;
    double L = sd_tobj_loss(&R->obj, R->pred, R->target, B, per, R->tsteps, R->lweight, mask, R->hc, R->factor, R->lossv,
                            sd_accum_loss_scale(c->gradient_accumulation_steps) * sd_loss_scaler_factor(&R->scaler),
                            R->grad);
    *loss_out = L;
    if (!isfinite(L)) return SD_OK;
    sd_tensor dy = dview(&R->t_dy, 4, (int64_t[]){ B, C, h, w });
    rc = sd_tensor_upload(&dy, R->grad, (size_t)(B * per) * sizeof(float));
    if (rc) return rc;
    sd_tensor dctx = dview(&R->t_dctx, 3, (int64_t[]){ B, R->seqlen, W });
    sd_tensor dvec = R->sdxl ? dview(&R->t_dvec, 2, (int64_t[]){ B, R->ADM }) : dctx;
    if (R->te_train) {
        rc = sd_op_fill(&R->ctx, &dctx, 0.0f);
        if (!rc && R->sdxl) rc = sd_op_fill(&R->ctx, &dvec, 0.0f);
        if (rc) return rc;
    }
    if (R->cnet) return loop_cn_backward(R, &dy);
    rc = sd_unet_backward(&R->ctx, R->unet, NULL, R->te_train ? &dctx : NULL, R->te_train && R->sdxl ? &dvec : NULL, &dy);
    if (rc) return rc;
    return loop_text_backward(R, B, dctx, dvec);
}

/* One validation batch (train/validation.h sd_val_batch_fn): forward only, at each fixed timestep.
 * Latents unflipped, captions without shuffle/dropout/warm-up, LoRA dropout off (the caller sets
 * rt.training = 0); noise from the streams (vseed, 2^31 + vb·nt + k, sample, purpose), which no
 * training step uses; temporaries from ctx->scratch, released at the end. Training buffers that
 * are rewritten at the start of every micro step (x0, ids, noise, ...) are reused. */
static int val_batch(void *user, const sd_batch_bucket *bk, const int64_t *idx, int B, uint32_t vb, const int *t,
                     int nt, double *losses)
{
    run *R = user;
    int h = bk->h / 8, w = bk->w / 8;
    int64_t C = R->cfg.unet.in_channels;
    int64_t per = C * h * w;
    uint32_t base = 0x80000000u + vb * (uint32_t)nt;
    int rc = loop_load_latents(R, &R->val, idx, B, 0, h, w, 1);
    if (!rc && !R->te_cached) rc = loop_encode_captions(R, &R->val, idx, B, R->vseed, base, 1, 0, 1);
    if (rc) return rc;
    size_t mark = sd_arena_mark(&R->ctx.scratch);
    sd_tensor ctxt;
    const sd_tensor *vec = NULL;
    rc = loop_text_forward(R, &R->val, idx, B, NULL, &ctxt, &vec);
    for (int b = 0; b < B; b++) R->lweight[b] = R->val.s[idx[b]].is_reg ? (float)R->c->prior_loss_weight : 1.0f;
    for (int k = 0; k < nt && !rc; k++) {
        R->vobj.tlo = R->vobj.thi = t[k];
        rc = sd_tobj_inputs(&R->vobj, R->vseed, base + (uint32_t)k, B, C, h, w, R->x0, R->noise, R->noisy, R->target,
                            R->work, R->ipn, R->tsteps);
        if (rc) break;
        sd_tensor x, tt, y;
        rc = unet_inputs(R, B, C, h, w, &x, &tt, &y);
        if (rc) break;
        size_t m2 = sd_arena_mark(&R->ctx.scratch);
        rc = sd_unet_forward(&R->ctx, R->unet, NULL, &y, &x, &tt, &ctxt, vec);
        sd_arena_reset(&R->ctx.scratch, m2);
        if (!rc) rc = sd_tensor_download(&y, R->pred, (size_t)(B * per) * sizeof(float));
        if (rc) break;
        /* the loss as the training step computes it (its gradient output goes to scratch) */
        losses[k] = sd_tobj_loss(&R->vobj, R->pred, R->target, B, per, R->tsteps, R->lweight,
                                 R->mask_on ? R->mask : NULL, R->hc, R->factor, R->lossv, 1.0, R->grad);
    }
    sd_arena_reset(&R->ctx.scratch, mark);
    return rc;
}

/* A validation pass (is_epoch: at an epoch end) with the network in eval mode; logs its average
 * and the divergence from the training loss average. A stop request abandons it quietly. */
static int run_validation(run *R, int is_epoch, int64_t epoch, int64_t global_step, double train_avg)
{
    int was = R->net.rt.training;
    R->net.rt.training = 0;
    double avg = NAN;
    double t0 = sd_now();
    int rc = sd_val_pass(&R->vr, is_epoch, epoch, val_batch, R, R->c->stop, &avg);
    R->net.rt.training = was;
    if (rc == SD_EINTR) return SD_OK;
    if (rc) return rc;
    double div = avg - train_avg;
    snprintf(R->vpost, sizeof R->vpost, ", %s=%.3g", is_epoch ? "val_epoch_avg_loss" : "val_avg_loss", avg);
    if (is_epoch)
        sd_info("validation at the end of epoch %lld: val_epoch_avg_loss %.6g (divergence %+.6g; %lld batches x %d "
                "timesteps, %.1f s)", (long long)epoch + 1, avg, div, (long long)R->vr.steps, SD_VAL_NUM_TIMESTEPS,
                sd_now() - t0);
    else
        sd_info("validation at step %lld: val_avg_loss %.6g (divergence %+.6g; %lld batches x %d timesteps, %.1f s)",
                (long long)global_step, avg, div, (long long)R->vr.steps, SD_VAL_NUM_TIMESTEPS, sd_now() - t0);
    if (R->have_tb) {
        double wt = sd_wall_time();
        if (is_epoch) {
            sd_tb_scalar(&R->tb, "loss/validation/epoch_average", (float)avg, epoch + 1, wt);
            sd_tb_scalar(&R->tb, "loss/validation/epoch_divergence", (float)div, epoch + 1, wt);
        } else {
            sd_tb_scalar(&R->tb, "loss/validation/step_average", (float)avg, global_step, wt);
            sd_tb_scalar(&R->tb, "loss/validation/step_divergence", (float)div, global_step, wt);
        }
    }
    return SD_OK;
}

static double window_mean(const run *R)
{
    if (!R->window_n) return 0;
    double s = 0;
    for (size_t i = 0; i < R->window_n; i++) s += R->window[i];
    return s / (double)R->window_n;
}

static void free_run(run *R)
{
    if (R->have_opt) sd_optim_free(&R->opt);
    sd_lora_groups_free(&R->groups);
    sd_full_free(&R->full);
    if (R->have_fused) sd_fused_free(&R->fused);
    free(R->fused_lrs);
    if (R->have_dy) sd_dylora_free(&R->dy);
    if (R->have_oft) sd_oft_network_free(&R->oft);
    if (R->have_lyn) sd_lyco_network_free(&R->lyn);
    loop_cn_free(R);
    if (R->have_net) sd_lora_network_free(&R->net);
    if (R->have_ti2) sd_ti_free(&R->ti2);
    if (R->have_ti) sd_ti_free(&R->ti);
    free(R->dtok);
    sd_tensor_free(&R->t_dtok);
    free(R->dtok2);
    sd_tensor_free(&R->t_dtok2);
    if (R->have_model) sd_model_close(&R->model);
    sd_clip_tokenizer_free(R->tok);
    sd_batch_plan_free(&R->plan);
    free(R->x0), free(R->noise), free(R->noisy), free(R->target), free(R->work), free(R->ipn), free(R->grad);
    free(R->mask);
    free(R->enc_x), free(R->enc_mom), free(R->enc_noise), free(R->enc_z), free(R->enc_mask), free(R->cond_mask);
    free(R->lossv), free(R->hc), free(R->lweight), free(R->factor), free(R->tsteps), free(R->ids), free(R->tokw);
    sd_tensor_free(&R->t_ctx);
    sd_tensor_free(&R->t_dctx);
    sd_tensor_free(&R->t_hidden);
    sd_tensor_free(&R->t_y);
    sd_tensor_free(&R->t_t);
    sd_tensor_free(&R->t_x);
    sd_tensor_free(&R->t_dy);
    sd_tensor_free(&R->t_ids);
    sd_tensor *sx[] = { &R->t_ids2, &R->t_hs1, &R->t_hs2, &R->t_work1, &R->t_work2, &R->t_pool, &R->t_semb, &R->t_vec,
                        &R->t_dvec, &R->t_dpool, &R->t_dhs1, &R->t_dhs2 };
    for (size_t i = 0; i < sizeof sx / sizeof *sx; i++) sd_tensor_free(sx[i]);
    free(R->ids2), free(R->sizes), free(R->semb);
    free(R->pred), free(R->tf), free(R->stage);
    sd_arena_free(&R->act);
    sd_train_sampling_free(&R->smp);
    sd_val_runner_free(&R->vr);
    sd_train_data_free(&R->val);
    if (R->have_tb) sd_tb_close(&R->tb);
    if (R->jl) fclose(R->jl);
    free(R->window);
    sd_kv_free(&R->meta);
    free(R->outdir);
    sd_ctx_free(&R->ctx);
    sd_ctx_free(&R->hctx);
    if (R->dev == SD_DEV_CUDA) sd_device_shutdown();
}

/* Options a resumed run must share with its state (the step budget may grow: --max_train_steps and
 * --max_train_epochs may change, as in the reference). */
static const char *const resume_keys[] = {
    "network_module", "network_dim", "network_alpha", "network_args", "network_train_unet_only", "network_train_text_encoder_only",
    "train_batch_size", "gradient_accumulation_steps", "lr_scheduler",
    "lr_warmup_steps", "lr_decay_steps", "lr_scheduler_num_cycles", "lr_scheduler_power",   /* the schedule */
    "lr_scheduler_timescale", "lr_scheduler_min_lr_ratio", "lr_scheduler_args",
    "learning_rate", "unet_lr", "text_encoder_lr", "optimizer_type", "optimizer_args",
    "max_token_length", "clip_skip", "v_parameterization", "conv_dim",
    "validation_split", "validation_seed",   /* they choose the training images */
    "method", "token_string", "num_vectors_per_token", "use_object_template", "use_style_template",   /* TI */
    "learning_rate_te", "stop_text_encoder_training", "train_text_encoder",   /* full models */
    "learning_rate_te1", "learning_rate_te2", "block_lr",   /* SDXL full models */
    "base_weights", "base_weights_multiplier",   /* the model every step trains on */
};

/* --debug_dataset: the reference's train_util.debug_dataset as text on stdout, for the batches in the
 * order training takes them (the epoch's shuffled plan, the same caption and flip draws as micro_step);
 * no window is opened. It stops as the reference on Linux, where no key is read: after the ninth batch
 * when the batch holds latents (files), else (where the reference never stops) at the run's last step.
 * It runs before any weight is loaded and before latents are cached (as the reference, which calls it
 * before load_target_model and cache_latents): the records that --cache_latents would encode are
 * image batches here. is_val: the validation set (train_network.py prints it after the training
 * set), keyed by its own seed and sample numbers; where the reference never stops, one pass. */
static int debug_dataset(run *R, const sd_train_data *d, sd_batch_plan *plan, uint64_t seed, uint32_t sbase, int is_val)
{
    sd_train_config *c = R->c;
    int64_t nb = plan->nbatches;
    int A = !is_val && c->gradient_accumulation_steps > 0 ? c->gradient_accumulation_steps : 1;
    int64_t nepochs = is_val ? 1 : R->num_epochs, spe = is_val ? nb : R->steps_per_epoch;
    if (!is_val) sd_info("debug_dataset: printing the batches' samples; no window is opened and no key is read");
    printf("%sTotal dataset length (steps): %lld\n", is_val ? "\n" : "", (long long)nb);
    int rc = SD_OK, stop = 0;
    for (int64_t epoch = 0; epoch < nepochs && !stop && !rc; epoch++) {
        rc = sd_batch_plan_epoch(plan, epoch);
        if (rc) break;
        printf("\nepoch: %lld\n", (long long)epoch + 1);
        for (int64_t i = 0; i < nb && !rc; i++) {
            int64_t gstep = epoch * spe + i / A;
            if (!is_val && gstep >= R->max_steps) {
                stop = 1;
                break;
            }
            const sd_batch_bucket *bk;
            const int64_t *idx;
            int B;
            rc = sd_batch_get(plan, i, &bk, &idx, &B);
            if (rc) break;
            int64_t micro = epoch * nb + i;
            printf("steps: %lld (%lld/%lld)\n", (long long)(micro + 1), (long long)i + 1, (long long)nb);
            int latents = 1;
            for (int b = 0; b < B; b++) latents &= !d->s[idx[b]].live;
            if (latents)
                printf("sample has latents from npz file: torch.Size([%d, %lld, %d, %d])\n", B,
                       (long long)R->cfg.unet.in_channels, bk->h / 8, bk->w / 8);
            for (int b = 0; b < B && !rc; b++) {
                const sd_train_sample *s = &d->s[idx[b]];
                sd_rng rng = sd_rng_key(seed, sbase + (uint32_t)micro, (uint32_t)b, SD_RNG_CAPTION);
                sd_caption_opts o = s->cap;
                double tw = s->token_warmup_step_f;
                o.token_warmup_step = tw <= 0 ? 0 : tw < 1 ? (int64_t)(tw * (double)R->max_steps) : (int64_t)tw;
                char *text = NULL;
                rc = sd_caption_process(&o, s->caption, epoch + 1, gstep, &rng, &text);
                if (!rc && R->have_ti) {
                    char *t2 = NULL;
                    rc = sd_ti_caption(&R->ti, text, &rng, &t2);
                    free(text);
                    text = t2;
                }
                if (rc) break;
                int flip = 0;
                if (s->flip_aug) {
                    sd_rng r = sd_rng_key(seed, sbase + (uint32_t)micro, (uint32_t)b, SD_RNG_AUGMENT);
                    flip = sd_rng_uniform_at(&r, SD_AUG_FLIP) < 0.5f;
                }
                int ow = s->has_size ? s->orig_w : bk->w, oh = s->has_size ? s->orig_h : bk->h;
                int ct = s->has_size ? (int)s->crop_ltrb[1] : 0, cl = s->has_size ? (int)s->crop_ltrb[0] : 0;
                char lw[40];
                sd_py_float(s->is_reg ? c->prior_loss_weight : 1.0, lw, sizeof lw);
                printf("%s, size: (%d, %d), loss weight: %s, caption: \"%s\", original size: (%d, %d), crop top left: "
                       "(%d, %d), target size: (%d, %d), flipped: %s\n", s->image ? s->image : s->latents, ow, oh, lw,
                       text ? text : "", oh, ow, ct, cl, bk->h, bk->w, sd_py_bool(flip));
                if (s->live) printf("image size: torch.Size([3, %d, %d])\n", bk->h, bk->w);
                if (s->live && s->cond) printf("conditioning image size: torch.Size([3, %d, %d])\n", bk->h, bk->w);
                free(text);
            }
            if (latents && i >= 8) stop = 1;
            if (stop) break;
        }
    }
    fflush(stdout);
    if (!rc && ferror(stdout)) rc = sd_err(SD_EIO, "stdout: write error");
    return rc;
}

int sd_train_run(sd_train_config *c, sd_train_data *d)
{
    run R0, *R = &R0;
    memset(R, 0, sizeof *R);
    R->c = c;
    R->d = d;
    R->dev = c->device_index == SD_DEVICE_CPU ? SD_DEV_CPU : SD_DEV_CUDA;
    /* models load, latents encode and the network is built on the host (ctx starts as a CPU context);
       alloc_buffers() makes ctx the device's, and the weights move there before the first step */
    int rc = sd_ctx_init(&R->ctx, SD_DEV_CPU, c->threads, 0);
    if (!rc) rc = sd_ctx_init(&R->hctx, SD_DEV_CPU, c->threads, 0);
    if (!rc && R->dev == SD_DEV_CUDA) rc = sd_device_init(c->device_index);
    /* --mixed_precision on a GPU: the matrix products take bf16/fp16 operands on the tensor cores */
    if (!rc && R->dev == SD_DEV_CUDA && c->mixed_precision && strcmp(c->mixed_precision, "no"))
        rc = sd_device_set_gemm_math(!strcmp(c->mixed_precision, "fp16") ? SD_GEMM_FP16 : SD_GEMM_BF16);
    if (rc) {
        sd_ctx_free(&R->ctx);
        sd_ctx_free(&R->hctx);
        return rc;
    }
    R->scratch_cap = SD_CTX_DEFAULT_SCRATCH;
    R->is_full = c->method == SD_METHOD_DB || c->method == SD_METHOD_FT;
    R->cnet = c->method == SD_METHOD_CN;
    if (R->is_full)
        sd_full_init(&R->full, (sd_train_method)c->method, c->has_stop_text_encoder_training,
                     c->stop_text_encoder_training, c->train_text_encoder);
    rc = loop_check_options(R);
    if (!rc && R->cnet) rc = loop_cn_check(R);
    if (rc) goto out;
    /* seed: --seed, the resumed state's, or a random one */
    sd_train_state_out rs;
    memset(&rs, 0, sizeof rs);
    if (c->seed >= 0) {
        R->seed = (uint64_t)c->seed;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        R->seed = ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid()) % 4294967296ull;
    }
    /* a resumed run keeps its state's seed (checked again when the state is loaded): what depends
       on the seed before that (the validation split, latents encoded here) must use it too */
    if (c->resume) peek_state_seed(c->resume, &R->seed);
    if (!d->n) {
        rc = sd_err(SD_EINVAL, "no training records");
        goto out;
    }
    /* validation split (§1.8): the validation samples move to R->val */
    sd_val_split_opts vo = { .split = c->validation_split, .has_seed = c->has_validation_seed,
                             .seed = c->validation_seed, .fallback_seed = R->seed, .records_resolved = d->has_config };
    if (!isnan(c->validation_split) && (c->validation_split < 0 || c->validation_split > 1) && !d->has_config)
        vo.split = 0.0, sd_warn("--validation_split %g is not a valid number between 0.0 and 1.0, skipping validation "
                                "split", c->validation_split);
    rc = sd_train_split_validation(d, &R->val, &vo);
    if (rc) goto out;
    R->vseed = c->has_validation_seed ? (uint64_t)c->validation_seed : R->seed;
    rc = loop_load_models(R);
    if (!rc) rc = loop_check_family(R);
    if (!rc && R->cnet && R->sdxl)
        rc = sd_err(SD_EUNSUPPORTED, "--method controlnet: SDXL ControlNet training (sdxl_train_control_net.py) is "
                    "not supported yet; SD1.x/SD2.x models are");
    if (rc) goto out;
    R->te_cached = R->sdxl && c->cache_text_encoder_outputs;
    /* masked loss (§1.11): train_network.py, train_db.py, the TI scripts and sdxl_train.py apply the
       masks a batch has (--masked_loss or not); fine_tune.py (SD1/SD2 ft) has neither option and
       never applies them. Without any mask a batch's loss is the unmasked one. */
    R->use_masks = !(c->method == SD_METHOD_FT && !R->sdxl) && !R->cnet;
    if (!R->use_masks && (c->masked_loss || c->alpha_mask)) {
        rc = sd_err(SD_EUSAGE, "--masked_loss/--alpha_mask: fine_tune.py (--method ft on SD1.x/SD2.x) has no masked "
                    "loss; use --method db, or an SDXL model");
        goto out;
    }
    if (R->is_full && (rc = sd_full_format_choose(c->save_model_as, c->use_safetensors, R->model.format, &R->ffmt)))
        goto out;
    /* without --cache_latents the training images are encoded at every step; the validation ones,
       unaugmented and the same at every pass, once */
    for (size_t i = 0; i < R->val.n; i++) R->val.s[i].live = 0;
    if (c->debug_dataset) {   /* nothing is cached yet where the reference prints: images as loaded at every step */
        for (int k = 0; k < 2; k++) {
            sd_train_data *dd = k ? &R->val : d;
            for (size_t i = 0; i < dd->n; i++) dd->s[i].live |= !dd->s[i].latents && !dd->s[i].mem;
        }
        rc = loop_plan_live(R, d);
        if (!rc) rc = loop_plan_live(R, &R->val);
    } else {
        rc = loop_plan_live(R, d);
        if (!rc) rc = loop_encode_all(R, d, 0);
        if (!rc && R->val.n) rc = loop_encode_all(R, &R->val, 0x80000000u);
        if (!rc && R->ctx.backend != SD_DEV_CPU) {
            /* --cache_latents encoded on the GPU (encode_px): the network is built on the host, with a host
               context, until the weights move (the step's scratch is sized again then) */
            sd_ctx_free(&R->ctx);
            R->scratch_cap = 0;
            rc = sd_ctx_init(&R->ctx, SD_DEV_CPU, c->threads, 0);
        }
    }
    if (rc) goto out;
    rc = loop_resolve_buckets(d);
    if (!rc) rc = loop_resolve_buckets(&R->val);
    if (!rc) rc = loop_cond_setup(R, d);
    if (!rc) rc = loop_cond_setup(R, &R->val);
    if (rc) goto out;
    /* schedule and objective */
    if (c->zero_terminal_snr && !c->v_parameterization)
        sd_warn("zero_terminal_snr is enabled, but v_parameterization is not enabled. training will be unexpected");
    sd_tobj_opts to = { .v_prediction = R->cfg.parameterization == SD_PRED_V, .zero_terminal_snr = c->zero_terminal_snr,
                        .loss_type = c->loss_type, .huber_schedule = c->huber_schedule, .huber_c = c->huber_c,
                        .huber_scale = c->huber_scale, .min_timestep = c->min_timestep, .max_timestep = c->max_timestep,
                        .noise_offset = c->noise_offset, .adaptive_noise_scale = c->adaptive_noise_scale,
                        .noise_offset_random_strength = c->noise_offset_random_strength,
                        .multires_iterations = c->multires_noise_iterations,
                        .multires_discount = c->multires_noise_discount, .ip_noise_gamma = c->ip_noise_gamma,
                        .ip_noise_gamma_random_strength = c->ip_noise_gamma_random_strength,
                        .min_snr_gamma = c->min_snr_gamma, .v_pred_like_loss = c->v_pred_like_loss,
                        .scale_v_pred_loss_like_noise_pred = c->scale_v_pred_loss_like_noise_pred,
                        .debiased_estimation = c->debiased_estimation_loss };
    rc = sd_tobj_init(&R->obj, &to);
    if (rc) goto out;
    R->vobj = R->obj;
    if (c->ti.on) {   /* textual inversion: the new token rows are the only parameters */
        rc = loop_ti_setup(R);
        if (rc) goto out;
        goto params_ready;
    }
    if (c->debug_dataset) goto trained_set;   /* no network, no optimizer */
    /* network (LoRA), or the model's own weights (--method db/ft) */
    if (R->is_full) {
        rc = loop_setup_full(R);
        if (rc) goto out;
        goto trained_set;
    }
    if (R->cnet) {
        rc = loop_cn_setup(R);
        if (rc) goto out;
        goto params_ready;
    }
    rc = loop_setup_lora(R);
    if (rc) goto out;
params_ready:
    loop_optimizer_warnings(R);
    rc = sd_optim_init(&R->opt, &R->ocfg, R->groups.desc, R->groups.n);
    if (rc) goto out;
    R->have_opt = 1;
    /* the text encoder trains when one of its modules is in a group */
    for (int g = 0; g < R->groups.n; g++)
        if (!strncmp(R->groups.names[g], "textencoder", 11)) R->te_train = 1;
    if (R->groups.te_named_apart) R->te_train = 1;
trained_set:;
    /* batches, steps, epochs (§6.8) */
    sd_batch_item *items = calloc(d->n, sizeof *items);
    if (!items) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < d->n; i++) {
        items[i].dataset = d->s[i].dataset;
        items[i].bucket_w = d->s[i].bucket_w;
        items[i].bucket_h = d->s[i].bucket_h;
        items[i].is_reg = d->s[i].is_reg;
        items[i].num_repeats = d->s[i].num_repeats;
        items[i].batch_size = d->s[i].batch_size;
    }
    rc = sd_batch_plan_init(&R->plan, items, d->n, R->seed);
    free(items);
    if (rc) goto out;
    rc = sd_val_runner_init(&R->vr, &R->val, R->vseed, c->max_validation_steps, c->validate_every_n_steps,
                            c->validate_every_n_epochs, R->obj.tlo, R->obj.thi);
    if (rc) goto out;
    if (R->val.n)
        sd_info("validation: %zu images (%lld with repeats), %lld batches, %lld per pass, timesteps %d %d %d %d",
                R->val.n, (long long)R->vr.plan.num_train_images, (long long)R->vr.nbatches, (long long)R->vr.steps,
                R->vr.t[0], R->vr.t[1], R->vr.t[2], R->vr.t[3]);
    int A = c->gradient_accumulation_steps > 0 ? c->gradient_accumulation_steps : 1;
    R->steps_per_epoch = sd_accum_steps_per_epoch(R->plan.nbatches, A);
    R->max_steps = c->max_train_epochs > 0 ? (int64_t)c->max_train_epochs * R->steps_per_epoch : c->max_train_steps;
    R->num_epochs = (R->max_steps + R->steps_per_epoch - 1) / R->steps_per_epoch;
    if (c->save_n_epoch_ratio > 0) {   /* the reference: math.floor(num_train_epochs / ratio) or 1, overriding */
        c->save_every_n_epochs = (int)(R->num_epochs / c->save_n_epoch_ratio > 0 ? R->num_epochs / c->save_n_epoch_ratio : 1);
        sd_info("--save_n_epoch_ratio %d: saving every %d epochs", c->save_n_epoch_ratio, c->save_every_n_epochs);
    }
    if (R->plan.num_reg_unbalanced > R->plan.num_train_images)
        sd_warn("some of reg images are not used / 正則化画像の数が多いので、一部使用されない正則化画像があります");
    sd_info("images with repeats: %lld, reg images: %lld, batches per epoch: %lld, epochs: %lld, steps: %lld",
            (long long)R->plan.num_train_images, (long long)R->plan.num_reg_images, (long long)R->plan.nbatches,
            (long long)R->num_epochs, (long long)R->max_steps);
    if (c->debug_dataset) {   /* train_network.py prints the validation set's batches after the training ones */
        rc = debug_dataset(R, d, &R->plan, R->seed, 0, 0);
        if (!rc && R->val.n && c->method == SD_METHOD_LORA && !c->ti.on)
            rc = debug_dataset(R, &R->val, &R->vr.plan, R->vseed, 0x80000000u, 1);
        goto out;
    }
    sd_lr_kind lk;
    /* ScheduleFree: kohya's get_scheduler_fix returns its dummy scheduler before looking at any
       scheduler option (the group LRs stay constant; --lr_scheduler, its warm-up and arguments are
       not used and not checked) */
    const int sf = sd_optim_is_schedulefree(R->ocfg.kind);
    rc = sd_lr_kind_parse(sf ? "constant" : R->sched_name, &lk);
    if (rc) goto out;
    sd_lr_steps wu, dec;
    rc = sd_lr_steps_parse(c->lr_warmup_steps && !sf ? c->lr_warmup_steps : "0", "lr_warmup_steps", &wu);
    if (rc) goto out;
    if (c->lr_decay_steps && !sf) {
        rc = sd_lr_steps_parse(c->lr_decay_steps, "lr_decay_steps", &dec);
        if (rc) goto out;
    }
    sd_lr_params lp;
    sd_lr_params_default(&lp);
    lp.warmup = &wu;
    lp.decay = c->lr_decay_steps && !sf ? &dec : NULL;
    lp.max_train_steps = R->max_steps;
    lp.num_processes = 1;
    lp.num_cycles = c->lr_scheduler_num_cycles;
    lp.num_cycles_given = c->lr_scheduler_num_cycles_given;
    lp.power = c->lr_scheduler_power;
    lp.power_given = c->lr_scheduler_power_given;
    lp.lr_init = c->learning_rate;
    lp.has_timescale = c->has_lr_scheduler_timescale;
    lp.timescale = c->lr_scheduler_timescale;
    lp.has_min_lr_ratio = !isnan(c->lr_scheduler_min_lr_ratio);
    lp.min_lr_ratio = c->lr_scheduler_min_lr_ratio;
    if (c->lr_scheduler_args && !sf) {
        lp.args = c->lr_scheduler_args->s;
        lp.nargs = c->lr_scheduler_args->n;
    }
    char lwarn[2048];
    rc = sd_lr_sched_init_params(&R->lrs, lk, &lp, lwarn, sizeof lwarn);
    for (char *line = lwarn, *nl; !rc && *line; line = nl ? nl + 1 : line + strlen(line)) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        sd_warn("%s", line);
    }
    if (rc) goto out;
    /* AdamW, Lion, SGDNesterov and Adafactor on a GPU: the optimizer and its state live there too (no
       weight or gradient copies per step), for the whole model and for a LoRA network (without
       --scale_weight_norms, which runs on the host). SD_DEVICE_OPTIM=0 keeps them on the host (as the
       other kinds); =1 on the CPU sends the step through the device ops (the same bytes: a check of
       that path) */
    const char *dop = getenv("SD_DEVICE_OPTIM");
    int want_dev = dop && *dop ? strcmp(dop, "0") != 0 : R->dev == SD_DEV_CUDA;
    R->dev_optim = want_dev && sd_optim_kind_on_device(R->ocfg.kind) && !R->have_ti && !R->have_dy &&
                   (R->is_full || c->scale_weight_norms <= 0);
    rc = alloc_buffers(R);
    if (!rc && R->have_ti) {
        int64_t npos = R->maxB * R->nchunks * 77, W = R->cfg.clip.width;
        R->dtok = malloc((size_t)(npos * W) * sizeof(float));
        rc = R->dtok ? sd_tensor_alloc_on(&R->t_dtok, R->dev, SD_F32, 3, (int64_t[]){ R->maxB * R->nchunks, 77, W })
                     : sd_err(SD_ENOMEM, "out of memory");
        if (!rc && R->have_ti2) {
            R->dtok2 = malloc((size_t)(npos * R->W2) * sizeof(float));
            rc = R->dtok2 ? sd_tensor_alloc_on(&R->t_dtok2, R->dev, SD_F32, 3,
                                               (int64_t[]){ R->maxB * R->nchunks, 77, R->W2 })
                          : sd_err(SD_ENOMEM, "out of memory");
        }
    }
    if (rc) goto out;
    R->window = calloc((size_t)R->plan.nbatches, sizeof *R->window);
    if (!R->window) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    /* resume */
    int64_t global_step = 0, start_epoch = 0, start_i = 0;
    if (c->resume && sd_train_state_is_kohya(c->resume)) {
        rc = resume_kohya(R, &global_step, &start_epoch, &start_i);
        if (rc) goto out;
    } else if (c->resume) {
        if (R->lora_fa && c->scale_weight_norms > 0) {
            /* max-norm scaling edits the frozen lora_down, which the state does not hold */
            rc = sd_err(SD_EUSAGE, "--resume with networks.lora_fa and --scale_weight_norms is not supported");
            goto out;
        }
        if (R->is_full) {
            const sd_params *regs[2] = { NULL, NULL };
            sd_full_registries(&R->full, regs);
            rc = sd_train_state_load2(c->resume, (sd_params *)regs[0], (sd_params *)regs[1], &R->opt, &rs);
        } else {
            rc = R->have_ti2 ? sd_train_state_load2(c->resume, &R->ti.reg, &R->ti2.reg, &R->opt, &rs)
                 : sd_train_state_load(c->resume, R->have_ti ? &R->ti.reg : &R->net.reg, &R->opt, &rs);
        }
        if (rc) goto out;
        if ((R->have_ti && (rc = sd_ti_sync_table(&R->ti))) || (R->have_ti2 && (rc = sd_ti_sync_table(&R->ti2)))) {
            sd_train_state_out_free(&rs);
            goto out;
        }
        if (rs.options_json && c->options_json) {
            rc = sd_train_state_check_options(c->resume, rs.options_json, c->options_json, resume_keys,
                                              sizeof resume_keys / sizeof *resume_keys);
            if (rc) {
                sd_train_state_out_free(&rs);
                goto out;
            }
        }
        if (c->seed < 0 || (uint64_t)c->seed != rs.prog.seed) {
            if (c->seed >= 0) sd_warn("--seed %lld differs from the state's %llu: using the state's", (long long)c->seed,
                                      (unsigned long long)rs.prog.seed);
            R->seed = rs.prog.seed;
            R->plan.seed = R->seed;
            R->net.rt.seed = R->seed;
            /* LoRA-FA: the frozen lora_down is not in the state; it is the initialisation from the
               state's seed (or --network_weights, which then must meet the same seed) */
            if (R->lora_fa && R->have_net) {
                if (c->network_weights)
                    rc = sd_err(SD_EUSAGE, "cannot resume from %s with networks.lora_fa and --network_weights under "
                                "another seed: give --seed %llu", c->resume, (unsigned long long)rs.prog.seed);
                else rc = sd_lora_network_reinit_fa_down(&R->net, &R->ctx, R->seed);
                if (rc) {
                    sd_train_state_out_free(&rs);
                    goto out;
                }
            }
        }
        global_step = rs.prog.global_step;
        R->sched_step = rs.prog.sched_step;
        if (R->scaler.enabled) {
            if (rs.has_scaler) R->scaler = rs.scaler;   /* as GradScaler.load_state_dict: all five values */
            else sd_info("%s holds no fp16 loss scaler: it starts at %g", c->resume, (double)R->scaler.scale);
        }
        start_epoch = rs.prog.epoch;
        start_i = rs.prog.step_in_epoch;
        if (rs.loss_window && rs.loss_window_n <= (size_t)R->plan.nbatches) {
            memcpy(R->window, rs.loss_window, rs.loss_window_n * sizeof *R->window);
            R->window_n = rs.loss_window_n;
        }
        sd_train_state_out_free(&rs);
        sd_info("resumed from %s: step %lld, epoch %lld, batch %lld", c->resume, (long long)global_step,
                (long long)start_epoch + 1, (long long)start_i);
    }
    /* --initial_step / --initial_epoch (train_network.py): they replace the resumed state's step; the lr
       schedule is not moved (it is the state's with --resume, else it starts at 0). Without
       --skip_until_initial_step only the first epoch changes (the step counts from 0); with it the batches
       before the step are skipped and the step count starts there. */
    if (c->initial_mode) {
        int64_t K = c->initial_mode == 1 ? c->initial_step : (c->initial_step - 1) * R->steps_per_epoch;
        if (K < 0) K = 0;
        if (c->resume) sd_warn("steps from the state are ignored because --initial_%s is given",
                               c->initial_mode == 1 ? "step" : "epoch");
        global_step = 0, start_epoch = 0, start_i = 0;
        if (K > 0 && R->max_steps <= K) {
            rc = sd_err(SD_EUSAGE, "max_train_steps should be greater than initial step: %lld vs %lld",
                        (long long)R->max_steps, (long long)K);
            goto out;
        }
        if (K > 0) {
            /* the reference: epoch_to_start = initial_step // steps per epoch */
            start_epoch = K / R->steps_per_epoch;
            if (c->skip_until_initial_step) {
                if (!c->resume)
                    sd_info("initial_step is given without --resume: the lr scheduler starts from the beginning");
                sd_info("skipping %lld steps", (long long)K);
                /* the batch after K optimizer steps (the reference skips K * accumulation batches and sets
                   its step counter to what is left of them in the starting epoch; here the step is K) */
                start_i = (K % R->steps_per_epoch) * A;
                global_step = K;
            }
            R->window_n = 0;
            sd_info("starting at epoch %lld, batch %lld, step %lld", (long long)start_epoch + 1, (long long)start_i,
                    (long long)global_step);
        }
    }
    /* --full_fp16 / --full_bf16: the reference's network.to(weight_dtype) (db/ft: unet and
       text_encoder; ti: the text encoder with its token table) */
    if (c->full_fp16 || c->full_bf16) {
        sd_dtype hd = c->full_fp16 ? SD_F16 : SD_BF16;
        rc = sd_optim_set_half(&R->opt, hd);
        if (rc) goto out;
        if (R->have_ti && (rc = sd_ti_round_table(&R->ti, hd))) goto out;
        if (R->have_ti2 && (rc = sd_ti_round_table(&R->ti2, hd))) goto out;
        if (c->full_fp16 && R->ocfg.kind == SD_OPTIM_ADAMW && sd_round_f16((float)R->ocfg.eps) == 0.0f)
            sd_warn("--full_fp16: AdamW's eps %g is 0 in float16: an element whose exp_avg_sq underflows gets an inf "
                    "weight and training stops (as in the reference); AdamW8bit, or a larger eps (--optimizer_args "
                    "eps=1e-4), avoids it", R->ocfg.eps);
        sd_info("%s: the trained weights, their gradients and the optimizer's states hold %s values", c->full_fp16 ?
                "full_fp16" : "full_bf16", c->full_fp16 ? "float16" : "bfloat16");
    }
    /* output */
    R->outdir = strdup(c->output_dir ? c->output_dir : ".");
    if (!R->outdir) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    rc = sd_mkdirs(R->outdir);
    if (rc) goto out;
    R->outname = c->output_name;
    R->ext = R->is_full ? sd_full_format_ext(R->ffmt) : ".safetensors";
    if (R->have_ti) {   /* output_name defaults to the token string; --save_model_as pt by default */
        if (!R->outname) R->outname = c->ti.token_string;
        R->ext = c->save_model_as && !strcmp(c->save_model_as, "safetensors") ? ".safetensors"
                 : c->save_model_as && !strcmp(c->save_model_as, "ckpt")      ? ".ckpt"
                                                                               : ".pt";
    }
    R->started_at = loop_wall_now();
    rc = R->have_ti || R->is_full || R->cnet ? SD_OK : loop_build_metadata(R);   /* train_control_net.py: no metadata */
    if (rc) goto out;
    /* logs */
    if (c->logging_dir) {
        char dir[4096];
        rc = sd_tb_run_dir(dir, sizeof dir, c->logging_dir, c->log_prefix, (time_t)R->started_at);
        if (rc) goto out;
        size_t L = strlen(dir);
        const char *tracker = R->cnet ? "controlnet_train" : R->have_ti ? "textual_inversion"
                              : R->full.method == SD_METHOD_DB && !R->full.sdxl ? "dreambooth"   /* sdxl_train.py: finetuning */
                              : R->full.method == SD_METHOD_FT ? "finetuning" : "network_train";
        snprintf(dir + L, sizeof dir - L, "/%s", c->log_tracker_name ? c->log_tracker_name : tracker);
        rc = sd_tb_open(&R->tb, dir, R->started_at);
        if (rc) goto out;
        R->have_tb = 1;
        sd_info("TensorBoard log: %s", R->tb.path);
    }
    if (c->log_jsonl) {
        R->jl = fopen(c->log_jsonl, c->resume ? "a" : "w");
        if (!R->jl) {
            rc = sd_err(SD_EIO, "%s: %s", c->log_jsonl, strerror(errno));
            goto out;
        }
    }
    if (R->dev == SD_DEV_CUDA) {
        sd_params *regs[4] = { &R->model.unet_params, &R->model.te_params, &R->model.vae_params, &R->net.reg };
        if (R->have_ti) sd_ti_uninstall(&R->ti);   /* the encoder's own table moves with its registry */
        if (R->have_ti2) sd_ti_uninstall(&R->ti2);
        for (int i = 0; i < 4 && !rc; i++)
            if (regs[i]->allocated) rc = sd_params_move(regs[i], SD_DEV_CUDA);
        if (!rc && R->have_ti) rc = sd_ti_install(&R->ti, SD_DEV_CUDA);
        if (!rc && R->have_ti2) rc = sd_ti_install(&R->ti2, SD_DEV_CUDA);
        if (rc) goto out;
        sd_device_info di;
        if (!sd_device_query(c->device_index, &di)) sd_info("training on %s (cuda:%d)", di.name, c->device_index);
    }
    if (R->te_cached) {
        rc = loop_cache_te_outputs(R, d, "training images");
        if (!rc) rc = loop_cache_te_outputs(R, &R->val, "validation images");
        if (rc) goto out;
    }
    if (R->dev_optim) {
        if ((rc = sd_optim_place(&R->opt, &R->ctx))) goto out;
        sd_info("%s runs on the %s with its state (%.2f GiB there)", sd_optim_kind_name(R->ocfg.kind),
                R->dev == SD_DEV_CUDA ? "GPU" : "CPU through the device ops",
                (double)sd_optim_device_bytes(&R->opt) / (1024.0 * 1024 * 1024));
    }
    rc = sd_train_sampling_attach(&R->smp, c, R->unet, R->clip, R->model.have_clip2 ? &R->model.clip2 : NULL,
                                  &R->model.vae, R->cfg.family, R->tok,
                                  R->cfg.parameterization == SD_PRED_V, &R->net.rt, R->seed, R->outdir,
                                  R->have_tb ? &R->tb : NULL);
    if (rc) goto out;
    if (R->cnet && R->smp.on) {   /* the reference's sample_images(..., controlnet=controlnet): --cn IMAGE */
        for (size_t i = 0; i < R->smp.prompts.n && !rc; i++)
            if (!R->smp.prompts.items[i].controlnet_image)
                rc = sd_err(SD_EUSAGE, "%s: sample prompt %zu has no control image (--cn IMAGE): --method controlnet "
                            "samples with the ControlNet (the reference's pipeline needs controlnet_image)",
                            c->sample_prompts, i);
        if (rc) goto out;
        R->smp.gm.controlnet = &R->cn;
    }
    if (R->have_ti) {   /* sample prompts: T stands for all of its vectors */
        R->smp.gm.tokens = &R->ti.gtok;
        R->smp.gm.ntokens = 1;
    }
    /* the reference's "at first" call (samples with --sample_at_first, and on a resumed run with
       --sample_every_n_epochs); a stop during it ends the run after the next step */
    /* ScheduleFree: eval() around it, then train() (a resumed state written in eval mode becomes y
       again here, as in the reference; a state this program wrote in train mode, at a stop signal
       or a non-finite loss, is resumed as it is) */
    const int sf_swaps = R->opt.ds.sf_train == 0 || global_step == 0;
    if (sf_swaps && (rc = sf_mode(R, 0))) goto out;
    /* with --initial_step / --initial_epoch the reference samples "at first" at step 0 (only with
       --sample_at_first), before its step count moves */
    rc = sd_train_sampling_maybe(&R->smp, &R->ctx, 0, c->initial_mode ? 0 : global_step);
    if (rc == SD_EINTR) rc = SD_OK;
    if (rc) goto out;
    if (sf_swaps && (rc = sf_mode(R, 1))) goto out;
    /* ---- the loop ---- */
    double *lrs = calloc((size_t)R->groups.n, sizeof *lrs);
    const char **lrn = calloc((size_t)R->groups.n, sizeof *lrn);
    if (!lrs || !lrn) {
        free(lrs), free(lrn);
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int g = 0; g < R->groups.n; g++) lrn[g] = R->groups.names[g];
    sd_progress pb;
    sd_progress_begin(&pb, "steps", R->max_steps);
    if (global_step) sd_progress_update(&pb, global_step);
    int64_t nb = R->plan.nbatches;
    double step_loss = 0, t_last = sd_now();
    int done = global_step >= R->max_steps;
    for (int64_t epoch = start_epoch; epoch < R->num_epochs && !done; epoch++) {
        rc = sd_batch_plan_epoch(&R->plan, epoch);
        if (rc) break;
        int64_t i0 = epoch == start_epoch ? start_i : 0;
        if (epoch != start_epoch || i0 == 0) R->epoch_loss_sum = 0, R->epoch_loss_n = 0;
        int64_t win_epoch = epoch, win_i = i0;
        int nmicro = 0;
        for (int64_t i = i0; i < nb; i++) {
            if (R->is_full) {
                /* train_db: the text encoder stops at --stop_text_encoder_training */
                int act = sd_full_te_active(&R->full, global_step);
                if (R->full.te_train && !act && global_step == R->full.te_stop && R->te_train)
                    sd_info("stop text encoder training at step %lld", (long long)global_step);
                R->te_train = act;
            }
            if (i % A == 0 || i == i0) {
                if (R->have_ti) sd_ti_zero_grad(&R->ti);
                if (R->have_ti2) sd_ti_zero_grad(&R->ti2);
                if (R->have_fused) ;   /* lazy gradients are born zeroed and freed by their step */
                else if (R->is_full) sd_full_zero_grad(&R->ctx, &R->full);
                else sd_params_zero_grad(&R->ctx, &R->net.reg);
                win_epoch = epoch;
                win_i = i;
                step_loss = 0;
                nmicro = 0;
            }
            const sd_batch_bucket *bk;
            const int64_t *idx;
            int B;
            rc = sd_batch_get(&R->plan, i, &bk, &idx, &B);
            if (rc) break;
            double loss = 0;
            int fsync = sd_accum_is_sync(i, nb, A);
            if (R->have_fused) {
                /* the steps inside the backward use this step's LRs (the scheduler steps after it) */
                double ff = sd_lr_sched_factor(&R->lrs, R->sched_step);
                for (int g = 0; g < R->opt.ngroups; g++) R->fused_lrs[g] = R->opt.groups[g].lr * ff;
                sd_fused_begin(&R->fused, i % A == 0 || i == i0, fsync, R->fused_lrs);
            }
            rc = micro_step(R, bk, idx, B, epoch * nb + i, epoch + 1, global_step, &loss);
            if (!rc && R->have_fused && isfinite(loss)) rc = sd_fused_end(&R->fused, fsync);
            if (rc) break;
            if (!isfinite(loss)) {
                char tail[4200];
                loop_write_last_good_state(R, global_step, win_epoch, win_i, tail, sizeof tail);
                rc = sd_err(SD_ERANGE, "loss is %s at step %lld (epoch %lld, batch %lld): stopped; %s",
                            isnan(loss) ? "nan" : "inf", (long long)global_step + 1, (long long)epoch + 1,
                            (long long)i, tail);
                break;
            }
            step_loss += loss;
            nmicro++;
            /* the reference's moving average over one epoch of micro batches */
            if (epoch == 0 && R->window_n < (size_t)nb) R->window[R->window_n++] = loss;
            else if ((size_t)i < (size_t)nb) {   /* later epochs: pad with 0.0 up to i (a resumed run's list) */
                while (R->window_n <= (size_t)i) R->window[R->window_n++] = 0.0;
                R->window[i] = loss;
            }
            R->epoch_loss_sum += loss;
            R->epoch_loss_n++;
            double avr = window_mean(R);
            sd_progress_postfix(&pb, "avr_loss=%.3g%s", avr, R->vpost);
            if (!sd_accum_is_sync(i, nb, A)) {
                sd_progress_update(&pb, 0);
                continue;
            }
            double gnorm = NAN;
            /* the optimizer runs on the host, or on the GPU, or it ran inside the backward (fused) */
            rc = R->dev_optim || R->have_fused ? SD_OK : loop_net_to(R, SD_DEV_CPU);
            if (rc) break;
            /* unscale (fp16) once per optimizer step, clip, AdamW unless a gradient is inf/NaN, scale
               update; the LR scheduler advances only with the optimizer (accelerate's
               AcceleratedScheduler), global_step with every sync (kohya) */
            double f = sd_lr_sched_factor(&R->lrs, R->sched_step);
            for (int g = 0; g < R->groups.n; g++) lrs[g] = R->groups.desc[g].lr * f;
            if (R->have_ti) sd_ti_finish_grad(&R->ti);
            if (R->have_ti2) sd_ti_finish_grad(&R->ti2);
            float used_scale = R->scaler.scale;
            int found_inf = 0;
            sd_loss_scale_event ev = SD_LOSS_SCALE_KEPT;
            const uint8_t *skip = R->is_full ? sd_full_skip_mask(&R->full, R->te_train) : NULL;
            if (R->have_dy) {
                /* DyLoRA: the optimizer steps the rows; those without a gradient since the last
                   step are skipped (torch: grad None) */
                rc = sd_dylora_to_rows(&R->dy, &R->net, 1);
                if (rc) break;
                if (!(skip = sd_dylora_skip_mask(&R->dy, &R->opt))) {
                    rc = sd_err(SD_ENOMEM, "out of memory");
                    break;
                }
            }
            if (R->have_fused) rc = SD_OK;   /* every weight stepped inside the backward (train/fused.h) */
            else rc = sd_loss_scaler_optim_step(&R->scaler, &R->opt, c->max_grad_norm, lrs, skip, &gnorm, &found_inf, &ev);
            if (R->have_dy && !rc) {
                rc = sd_dylora_from_rows(&R->dy, &R->net);
                sd_dylora_clear_touched(&R->dy);
            }
            if (!found_inf && !rc) R->sched_step++;
            if (rc && (rc != SD_ERANGE || !R->scaler.enabled)) break;
            if (R->scaler.enabled) {
                if (rc) {
                    char msg[512], tail[4200];
                    snprintf(msg, sizeof msg, "%s", sd_errmsg());
                    loop_write_last_good_state(R, global_step, win_epoch, win_i, tail, sizeof tail);
                    rc = sd_err(SD_ERANGE, "--mixed_precision fp16: step %lld (epoch %lld): %s (the network overflows "
                                "fp16 at any scale; try --mixed_precision bf16 or no): stopped; %s",
                                (long long)global_step + 1, (long long)epoch + 1, msg, tail);
                    break;
                }
                if (found_inf) {
                    R->scale_skips++;
                    sd_warn("step %lld: inf/NaN gradients at loss scale %g: optimizer step skipped, loss scale now %g",
                            (long long)global_step + 1, (double)used_scale, (double)R->scaler.scale);
                } else if (ev == SD_LOSS_SCALE_GROWN) {
                    sd_info("step %lld: loss scale grew to %g after %lld steps with finite gradients",
                            (long long)global_step + 1, (double)R->scaler.scale, (long long)R->scaler.growth_interval);
                }
            }
            /* the rate each group used (Adafactor with relative_step: its own) */
            for (int g = 0; g < R->groups.n; g++) lrs[g] = sd_optim_logged_lr(&R->opt, g, lrs[g]);
            if (R->have_ti && (rc = sd_ti_sync_table(&R->ti))) break;   /* the old rows never change */
            if (R->have_ti2 && (rc = sd_ti_sync_table(&R->ti2))) break;
            int keys_scaled = 0;
            double mean_norm = 0, max_key_norm = 0;
            if (c->scale_weight_norms > 0) {
                /* also after a skipped step: the reference applies it after every batch */
                rc = sd_lora_max_norm(R->dev == SD_DEV_CPU ? &R->ctx : &R->hctx, R->net.refs, R->net.n,
                                      c->scale_weight_norms, &keys_scaled, &mean_norm, &max_key_norm);
                if (rc) break;
            }
            rc = R->dev_optim || R->have_fused ? SD_OK : loop_net_to(R, R->dev);
            if (rc) break;
            global_step++;
            double now = sd_now();
            double sps = now - t_last;
            t_last = now;
            sd_progress_update(&pb, 1);
            double cur = step_loss / nmicro;
            double wt = sd_wall_time();
            if (R->have_tb) {
                /* train_db / fine_tune / train_textual_inversion log "loss" (and "loss/epoch" at
                   epoch ends); train_textual_inversion its one rate as "lr" */
                int plain = R->is_full || R->have_ti;
                sd_tb_scalar(&R->tb, plain ? "loss" : "loss/current", (float)cur, global_step, wt);
                if (!plain) sd_tb_scalar(&R->tb, "loss/average", (float)avr, global_step, wt);
                if (c->scale_weight_norms > 0) {
                    sd_tb_scalar(&R->tb, "max_norm/keys_scaled", (float)keys_scaled, global_step, wt);
                    sd_tb_scalar(&R->tb, "max_norm/max_key_norm", (float)max_key_norm, global_step, wt);
                    sd_tb_scalar(&R->tb, "norm/avg_key_norm", (float)mean_norm, global_step, wt);
                }
                /* the reference logs lr_scheduler.get_last_lr() after the scheduler's step: the rate
                   of the next step (this step's when the fp16 scaler skipped it) */
                double fnext = sd_lr_sched_factor(&R->lrs, R->sched_step);
                for (int g = 0; g < R->groups.n; g++) {
                    char tag[96];
                    /* the reference logs a dict: of two groups with one name (LoRA-FA's "unet"), the last */
                    int later = 0;
                    for (int h = g + 1; h < R->groups.n && !R->have_ti; h++)
                        later |= !strcmp(R->groups.names[h], R->groups.names[g]);
                    if (later) continue;
                    if (R->have_ti || R->cnet) snprintf(tag, sizeof tag, "lr");   /* train_control_net.py: "lr" */
                    else snprintf(tag, sizeof tag, "lr/%s", R->groups.names[g]);
                    double lnext = sd_optim_logged_lr(&R->opt, g, R->groups.desc[g].lr * fnext);
                    sd_tb_scalar(&R->tb, tag, (float)lnext, global_step, wt);
                    if (sd_optim_kind_has_d(R->ocfg.kind)) {   /* D-Adaptation / Prodigy: d × lr */
                        if (R->cnet) snprintf(tag, sizeof tag, "lr/d*lr");   /* train_control_net.py */
                        else snprintf(tag, sizeof tag, "lr/d*lr/%s", R->groups.names[g]);   /* (TI refuses them) */
                        sd_tb_scalar(&R->tb, tag, (float)(R->opt.ds.d * lnext), global_step, wt);
                    }
                }
            }
            if (R->jl) {
                sd_trainlog_rec lr = { .step = global_step, .epoch = epoch + 1, .loss = cur, .avr_loss = avr,
                                       .ngroups = R->groups.n, .lr_names = lrn, .lrs = lrs, .grad_norm = gnorm,
                                       .sec_per_step = sps, .wall_time = wt,
                                       .loss_scale = R->scaler.enabled ? (double)used_scale : 0, .skipped = found_inf };
                rc = sd_trainlog_write(R->jl, &lr);
                if (rc) break;
            }
            int64_t next_epoch = i + 1 == nb ? epoch + 1 : epoch, next_i = i + 1 == nb ? 0 : i + 1;
            done = global_step >= R->max_steps;
            if ((rc = sf_mode(R, 0))) break;   /* ScheduleFree: x for sampling and saving */
            rc = sd_train_sampling_maybe(&R->smp, &R->ctx, SD_SAMPLE_NO_EPOCH, global_step);
            if (rc == SD_EINTR) rc = SD_OK;   /* the stop below writes the state */
            if (rc) break;
            if (c->save_every_n_steps > 0 && sd_should_save_step(global_step, c->save_every_n_steps) && !done) {
                rc = loop_save_checkpoint(R, SD_SAVE_STEP, global_step, global_step, epoch + 1, next_epoch, next_i, c->save_state);
                if (rc) break;
            }
            if ((rc = sf_mode(R, 1))) break;
            /* validation every N steps (§6.14); not when a stop is pending */
            if (sd_val_due_step(&R->vr, global_step) && !(c->stop && *c->stop)) {
                if ((rc = sf_mode(R, 0))) break;
                rc = run_validation(R, 0, epoch, global_step, avr);
                if (!rc) rc = sf_mode(R, 1);
                if (rc) break;
                sd_progress_postfix(&pb, "avr_loss=%.3g%s", avr, R->vpost);
                sd_progress_update(&pb, 0);
            }
            if (c->stop && *c->stop) {
                char name[512];
                sd_save_name(name, sizeof name, SD_SAVE_STEP, R->outname, global_step, NULL);
                char *sdir = loop_join_path(R->outdir, name);
                if (!sdir) {
                    rc = sd_err(SD_ENOMEM, "out of memory");
                    break;
                }
                rc = loop_save_state_dir(R, sdir, global_step, next_epoch, next_i);
                if (rc) {
                    free(sdir);
                    break;
                }
                c->stop_signal = (int)*c->stop;
                c->state_written = sdir;
                rc = SD_EINTR;
                break;
            }
            if (done) break;
        }
        if (rc) break;
        /* validation at the epoch end (every epoch, or every N-th), before its loss/epoch_average */
        if (sd_val_due_epoch(&R->vr, epoch) && !(c->stop && *c->stop)) {
            if ((rc = sf_mode(R, 0))) break;
            rc = run_validation(R, 1, epoch, global_step, window_mean(R));
            if (!rc) rc = sf_mode(R, 1);
            if (rc) break;
        }
        if (R->have_tb && (R->is_full || R->cnet) && R->window_n)   /* train_control_net.py: the moving average */
            sd_tb_scalar(&R->tb, "loss/epoch", (float)window_mean(R), epoch + 1, sd_wall_time());
        else if (R->have_tb && R->epoch_loss_n)   /* TI: loss_total / len(train_dataloader) */
            sd_tb_scalar(&R->tb, R->have_ti ? "loss/epoch" : "loss/epoch_average", (float)(R->epoch_loss_sum / (double)R->epoch_loss_n), epoch + 1,
                         sd_wall_time());
        if ((rc = sf_mode(R, 0))) break;   /* ScheduleFree: x for the epoch's save and samples */
        if (!done && c->save_every_n_epochs > 0 && sd_should_save_epoch(epoch + 1, c->save_every_n_epochs, R->num_epochs)) {
            rc = loop_save_checkpoint(R, SD_SAVE_EPOCH, epoch + 1, global_step, epoch + 1, epoch + 1, 0, c->save_state);
            if (rc) break;
        }
        rc = sd_train_sampling_maybe(&R->smp, &R->ctx, (int)epoch + 1, global_step);
        if (rc == SD_EINTR) rc = SD_OK;
        if (rc) break;
        if ((rc = sf_mode(R, 1))) break;
    }
    sd_progress_end(&pb);
    free(lrs);
    free(lrn);
    if (rc) goto out;
    if (R->have_fused) {
        sd_full_memory fm;
        sd_full_memory_of(&R->full, &fm);
        sd_info("fused optimizer steps: gradients held at most %.2f MiB at once (all trained weights': %.2f MiB)",
                (double)R->fused.pool.peak / 1048576.0, (double)fm.grads / 1048576.0);
    }
    {
        int64_t last_epoch = (global_step + R->steps_per_epoch - 1) / R->steps_per_epoch;
        rc = sf_mode(R, 0);   /* ScheduleFree: the last weights saved are x */
        if (rc) goto out;
        rc = loop_save_checkpoint(R, SD_SAVE_LAST, 0, global_step, last_epoch, last_epoch, 0,
                             c->save_state || c->save_state_on_train_end);
        if (rc) goto out;
        char name[512];
        sd_save_name(name, sizeof name, SD_SAVE_LAST, R->outname, 0, R->ext);
        sd_info("model saved: %s/%s", R->outdir, name);
        if (R->scaler.enabled)
            sd_info("fp16 loss scale %g at the end; %lld optimizer step%s skipped for inf/NaN gradients in this run",
                    (double)R->scaler.scale, (long long)R->scale_skips, R->scale_skips == 1 ? "" : "s");
    }
out:
    free_run(R);
    return rc;
}
