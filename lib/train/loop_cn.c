/* --method controlnet (kohya-ss/sd-scripts train_control_net.py, SD1.x/SD2.x): the ControlNet of
 * the frozen UNet trains on image / conditioning-image pairs; the UNet's skips and middle output get
 * its residuals (models/controlnet.h, sd_unet_set_control). The ControlNet's parameters live in
 * R->net.reg (no LoRA modules: have_net stays 0), so the step's zeroing, the optimizer, the device
 * moves and the resumable state are the LoRA path's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "train/loop_internal.h"
#include "train/state_kohya.h"

int loop_cn_check(run *R)
{
    sd_train_config *c = R->c;
    if (c->masked_loss || c->alpha_mask)
        return sd_err(SD_EUSAGE, "--method controlnet: train_control_net.py has no masked loss (--masked_loss/"
                      "--alpha_mask): the conditioning images are the ControlNet's input");
    /* options the other scripts use and train_control_net.py does not read (its timesteps are always
       0..999, its noise only noise_offset/adaptive or multires, its DDPM schedule plain): refused
       rather than ignored */
    const struct { int on; const char *name; } unused[] = {
        { c->min_timestep >= 0, "min_timestep" }, { c->max_timestep >= 0, "max_timestep" },
        { c->ip_noise_gamma != 0, "ip_noise_gamma" }, { c->ip_noise_gamma_random_strength, "ip_noise_gamma_random_strength" },
        { c->noise_offset_random_strength, "noise_offset_random_strength" }, { c->zero_terminal_snr, "zero_terminal_snr" },
        { c->v_pred_like_loss != 0, "v_pred_like_loss" },
        { c->scale_v_pred_loss_like_noise_pred, "scale_v_pred_loss_like_noise_pred" },
        { c->debiased_estimation_loss, "debiased_estimation_loss" }, { c->weighted_captions, "weighted_captions" },
    };
    for (size_t i = 0; i < sizeof unused / sizeof *unused; i++)
        if (unused[i].on)
            return sd_err(SD_EUSAGE, "--method controlnet: --%s is not used by train_control_net.py (refused rather "
                          "than ignored)", unused[i].name);
    if (c->save_model_as && strcmp(c->save_model_as, "safetensors"))
        return sd_err(SD_EUNSUPPORTED, "--method controlnet: --save_model_as %s is not supported (safetensors is)",
                      c->save_model_as);
    if (!isnan(c->validation_split) && c->validation_split > 0)
        return sd_err(SD_EUSAGE, "--method controlnet: train_control_net.py has no validation (--validation_split)");
    if (c->resume && sd_train_state_is_kohya(c->resume))
        return sd_err(SD_EUNSUPPORTED, "--method controlnet: resuming from a kohya (accelerate) state is not supported; "
                      "resume from a state sd-train wrote");
    size_t miss = 0;
    const char *first = NULL;
    for (size_t i = 0; i < R->d->n; i++)
        if (!R->d->s[i].cond) {
            if (!miss++) first = R->d->s[i].image ? R->d->s[i].image : R->d->s[i].latents;
        }
    if (miss)
        return sd_err(SD_EUSAGE, "--method controlnet: %zu of %zu training record%s ha%s no conditioning_image (first: "
                      "%s); give a dataset subset conditioning_data_dir or records from sd-merge-meta "
                      "--conditioning_data_dir", miss, R->d->n, R->d->n == 1 ? "" : "s", miss == 1 ? "s" : "ve",
                      first ? first : "?");
    return SD_OK;
}

int loop_cn_setup(run *R)
{
    sd_train_config *c = R->c;
    if (R->sdxl)
        return sd_err(SD_EUNSUPPORTED, "--method controlnet: SDXL ControlNet training (sdxl_train_control_net.py) is "
                      "not supported yet; SD1.x/SD2.x models are");
    sd_params_init(&R->net.reg);
    int rc = sd_controlnet_init(&R->cn, &R->net.reg, &R->cfg.unet);
    if (rc) return rc;
    R->have_cn = 1;
    if ((rc = sd_params_alloc(&R->net.reg, SD_DEV_CPU))) return rc;
    if ((rc = sd_controlnet_init_from_unet(&R->hctx, &R->cn, R->unet, R->seed))) return rc;
    if (c->controlnet_model) {
        sd_safetensors *st = NULL;
        rc = sd_safetensors_open(c->controlnet_model, &st);
        if (!rc) rc = sd_controlnet_load(&R->cn, st);
        if (st) sd_safetensors_close(st);
        if (rc) return sd_err_prefix(rc, "--controlnet_model_name_or_path %s", c->controlnet_model);
        sd_info("controlnet: weights from %s", c->controlnet_model);
    }
    if (c->gradient_checkpointing) sd_unet_set_checkpoint(&R->cn.enc, NULL, 1);
    sd_params_totals tot;
    sd_params_get_totals(&R->net.reg, &tot);
    sd_info("controlnet: %lld parameters in %zu tensors train; the UNet and the text encoder are frozen",
            (long long)tot.numel, tot.count);
    /* one optimizer group: every ControlNet parameter at --learning_rate (list(controlnet.parameters())) */
    sd_lora_groups *g = &R->groups;
    size_t n = sd_params_count(&R->net.reg);
    g->desc = calloc(1, sizeof *g->desc);
    g->names = calloc(1, sizeof *g->names);
    g->params = calloc(n, sizeof *g->params);
    if (!g->desc || !g->names || !g->params) return sd_err(SD_ENOMEM, "out of memory");
    g->n = 1;
    snprintf(g->names[0], sizeof g->names[0], "controlnet");
    for (size_t i = 0; i < n; i++) g->params[i] = sd_params_at(&R->net.reg, i);
    g->desc[0].name = g->names[0];
    g->desc[0].lr = c->learning_rate;
    g->desc[0].params = g->params;
    g->desc[0].count = n;
    /* the UNet adds the ControlNet's outputs; its backward stops at them */
    memset(&R->uctl, 0, sizeof R->uctl);
    R->uctl.down = R->cn.res;
    R->uctl.mid = &R->cn.res[R->cn.enc.n_in];
    R->uctl.stop_at_residuals = 1;
    sd_unet_set_control(R->unet, &R->uctl);
    R->t_dres = calloc((size_t)R->cn.n_res, sizeof *R->t_dres);
    return R->t_dres ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
}

void loop_cn_plan(run *R, int64_t B, int64_t h, int64_t w, size_t *saved, size_t *scratch)
{
    sd_nn_plan p = sd_controlnet_plan(&R->cn, B, h, w, R->seqlen);
    *saved += p.saved;
    /* the residual gradients stay in scratch through both backwards */
    size_t extra = sd_controlnet_res_bytes(&R->cn, B, h, w);
    if (p.scratch + extra > *scratch) *scratch = p.scratch + extra;
}

int loop_cn_buffers(run *R)
{
    int64_t C = R->cfg.unet.in_channels;
    int64_t n = R->maxB * 3 * 64 * (R->maxper / C);
    R->cond = malloc((size_t)n * sizeof(float));
    R->flipped = calloc((size_t)R->maxB, sizeof *R->flipped);
    if (!R->cond || !R->flipped) return sd_err(SD_ENOMEM, "out of memory");
    return sd_tensor_alloc_on(&R->t_cond, R->dev, SD_F32, 1, (int64_t[]){ n });
}

int loop_cn_forward(run *R, const int64_t *idx, int B, int h, int w, const sd_tensor *x, const sd_tensor *tt,
                    const sd_tensor *ctxt)
{
    size_t np = (size_t)64 * (size_t)h * (size_t)w;
    for (int b = 0; b < B; b++) {
        int rc = loop_cond_rgb(&R->d->s[idx[b]], 8 * w, 8 * h, R->flipped[b], R->cond + (size_t)b * 3 * np);
        if (rc) return rc;
    }
    sd_tensor cond = dview(&R->t_cond, 4, (int64_t[]){ B, 3, 8 * h, 8 * w });
    int rc = sd_tensor_upload(&cond, R->cond, (size_t)B * 3 * np * sizeof(float));
    if (!rc) rc = sd_controlnet_forward(&R->ctx, &R->cn, &R->act, x, tt, ctxt, &cond);
    return rc;
}

int loop_cn_backward(run *R, const sd_tensor *dy)
{
    size_t mark = sd_arena_mark(&R->ctx.scratch);
    int rc = SD_OK;
    for (int i = 0; i < R->cn.n_res && !rc; i++) {
        rc = sd_arena_tensor(&R->ctx.scratch, &R->t_dres[i], SD_F32, 4, R->cn.res[i].shape);
        if (!rc) rc = sd_op_fill(&R->ctx, &R->t_dres[i], 0.0f);
    }
    R->uctl.ddown = R->t_dres;
    R->uctl.dmid = &R->t_dres[R->cn.enc.n_in];
    if (!rc) rc = sd_unet_backward(&R->ctx, R->unet, NULL, NULL, NULL, dy);
    if (!rc) rc = sd_controlnet_backward(&R->ctx, &R->cn, R->t_dres);
    R->uctl.ddown = NULL;
    R->uctl.dmid = NULL;
    sd_arena_reset(&R->ctx.scratch, mark);
    return rc;
}

int loop_cn_save(run *R, const char *path)
{
    const char *sp = R->c->save_precision;
    sd_st_dtype dt = sp && !strcmp(sp, "fp16") ? SD_ST_F16 : sp && !strcmp(sp, "bf16") ? SD_ST_BF16 : SD_ST_F32;
    int rc = loop_net_to(R, SD_DEV_CPU);
    if (!rc) rc = sd_controlnet_save(&R->cn, path, dt);
    int rc2 = loop_net_to(R, R->dev);
    return rc ? rc : rc2;
}

void loop_cn_free(run *R)
{
    if (R->unet) sd_unet_set_control(R->unet, NULL);
    if (R->have_cn) {
        sd_controlnet_free(&R->cn);
        sd_params_free(&R->net.reg);
    }
    free(R->t_dres);
    free(R->cond);
    free(R->flipped);
    sd_tensor_free(&R->t_cond);
}
