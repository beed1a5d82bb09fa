/* Sample images during training (see loop_sample.h). */
#include "train/loop_sample.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "io/image.h"

int sd_train_sampling_init(sd_train_sampling *s, const sd_train_config *c)
{
    memset(s, 0, sizeof *s);
    s->trig.sample_at_first = c->sample_at_first;
    s->trig.every_n_steps = c->sample_every_n_steps > 0 ? c->sample_every_n_steps : 0;
    s->trig.every_n_epochs = c->sample_every_n_epochs > 0 ? c->sample_every_n_epochs : 0;
    int any = s->trig.sample_at_first || s->trig.every_n_steps || s->trig.every_n_epochs;
    const char *sn = c->sample_sampler && *c->sample_sampler ? c->sample_sampler : "ddim";
    if (sd_sampler_parse(sn, &s->sampler))
        return sd_err(SD_EUSAGE, "option '--sample_sampler': %s", sd_errmsg());
    if (!c->sample_prompts) {
        if (any)
            return sd_err(SD_EUSAGE, "%s needs --sample_prompts FILE",
                          s->trig.sample_at_first  ? "--sample_at_first"
                          : s->trig.every_n_steps ? "--sample_every_n_steps"
                                                  : "--sample_every_n_epochs");
        return SD_OK;
    }
    int rc = sd_prompt_file_load(c->sample_prompts, &s->prompts);
    if (rc) return rc;
    if (!any) {
        sd_warn("--sample_prompts %s: no --sample_every_n_steps, --sample_every_n_epochs or --sample_at_first: no "
                "sample images will be made", c->sample_prompts);
        return SD_OK;
    }
    if (!s->prompts.n) {
        sd_warn("--sample_prompts %s has no prompts: no sample images will be made", c->sample_prompts);
        return SD_OK;
    }
    if (s->trig.every_n_epochs && s->trig.every_n_steps)
        sd_warn("--sample_every_n_epochs is given: --sample_every_n_steps is ignored (as in the reference)");
    s->on = 1;
    return SD_OK;
}

static void entry_where(const char *file, const sd_sample_prompt *p, size_t i, char *buf, size_t n)
{
    if (p->line > 0) snprintf(buf, n, "%s:%d", file, p->line);
    else snprintf(buf, n, "%s: entry %zu", file, i + 1);
}

static int on_call(void *user)
{
    const sd_train_sampling *s = user;
    return s->stop && *s->stop;
}

static int on_image(void *user, const sd_sample_prompt *p, int index, const sd_image *im, const char *path)
{
    sd_train_sampling *s = user;
    (void)p;
    s->images++;
    sd_debug("sample image %s", path);
    if (!s->tb) return SD_OK;
    uint8_t *png = NULL;
    size_t n = 0;
    int rc = sd_image_encode_png(im, &png, &n);
    if (rc) return rc;   /* out of memory */
    char tag[32];
    snprintf(tag, sizeof tag, "sample_%d", index);
    rc = sd_tb_image(s->tb, tag, s->tb_step, sd_wall_time(), im->h, im->w, im->c, png, n);
    free(png);
    /* like the scalars, a failed log write does not stop training (the PNG file is written) */
    if (rc && !s->tb_warned) {
        sd_warn("TensorBoard image %s: %s", tag, sd_errmsg());
        s->tb_warned = 1;
    }
    return SD_OK;
}

int sd_train_sampling_attach(sd_train_sampling *s, const sd_train_config *c, sd_unet *unet, sd_clip *clip,
                             sd_clip *clip2, sd_vae *vae, sd_family family, sd_clip_tokenizer *tok, int v_prediction,
                             sd_lora_rt *rt, uint64_t seed, const char *output_dir, sd_tb_writer *tb)
{
    if (!s->on) return SD_OK;
    if (!vae) return sd_err(SD_EINVAL, "sample images: the model has no VAE");
    int64_t f = vae->factor << (unet->cfg.n_levels - 1);
    for (size_t i = 0; i < s->prompts.n; i++) {
        const sd_sample_prompt *p = &s->prompts.items[i];
        char where[600];
        entry_where(c->sample_prompts, p, i, where, sizeof where);
        if (p->width % f || p->height % f)
            return sd_err(SD_EFORMAT, "%s: size %dx%d: width and height must be multiples of %lld for this model", where,
                          p->width, p->height, (long long)f);
        if (p->width > 16384 || p->height > 16384)
            return sd_err(SD_EFORMAT, "%s: size %dx%d: at most 16384 pixels a side", where, p->width, p->height);
        sd_sampler_kind k = s->sampler;
        if (p->sampler && sd_sampler_parse(p->sampler, &k)) return sd_err_prefix(SD_EFORMAT, "%s", where);
        if (k == SD_SAMPLER_PNDM && p->steps < 4)
            return sd_err(SD_EFORMAT, "%s: the pndm sampler needs at least 4 steps (--s %d)", where, p->steps);
    }
    const char *base = strrchr(c->model, '/');
    base = base ? base + 1 : c->model;
    const char *dot = strrchr(base, '.');
    s->model_name = strndup(base, dot && dot != base ? (size_t)(dot - base) : strlen(base));
    if (!s->model_name) return sd_err(SD_ENOMEM, "out of memory");
    const int sdxl = family == SD_FAMILY_SDXL;
    if (sdxl && !clip2) return sd_err(SD_EINVAL, "sample images: the SDXL model's second text encoder is missing");
    /* SDXL: the trainer's --max_token_length decides the chunks of every sample prompt, clip_skip is
       ignored (sdxl_lpw_stable_diffusion.py through the SDXL tokenize/encoding strategies) */
    s->gm = (sd_gen_models){ .unet = unet, .clip = clip, .clip2 = sdxl ? clip2 : NULL, .vae = vae, .family = family,
                             .tok = tok, .clip_skip = sdxl ? 0 : c->clip_skip,
                             .max_token_length = sdxl ? c->max_token_length : 0, .v_prediction = v_prediction,
                             .vae_tiling = -1, .on_call = on_call, .call_user = s };
    s->so = (sd_sample_run_opts){ .output_dir = output_dir, .output_name = c->output_name, .sampler = s->sampler,
                                  .seed_base = seed, .write_parameters = 1, .model_name = s->model_name,
                                  .on_image = on_image, .user = s };
    s->tb = tb;
    s->rt = rt;
    s->stop = c->stop;
    return SD_OK;
}

int sd_train_sampling_maybe(sd_train_sampling *s, sd_ctx *ctx, int epoch, int64_t global_step)
{
    if (!s->on || !sd_sample_due(&s->trig, epoch, global_step)) return SD_OK;
    if (epoch != SD_SAMPLE_NO_EPOCH)
        sd_info("generating sample images at epoch %d, step %lld: %zu prompt%s", epoch, (long long)global_step,
                s->prompts.n, s->prompts.n == 1 ? "" : "s");
    else
        sd_info("generating sample images at step %lld: %zu prompt%s", (long long)global_step, s->prompts.n,
                s->prompts.n == 1 ? "" : "s");
    int was = 0;
    if (s->rt) {
        was = s->rt->training;
        s->rt->training = 0;
    }
    s->tb_step = global_step;
    int rc = sd_sample_images(ctx, &s->gm, &s->prompts, &s->so, epoch, global_step);
    if (s->rt) s->rt->training = was;
    if (rc == SD_EINTR) sd_warn("sample images at step %lld: interrupted", (long long)global_step);
    else if (rc) sd_err_prefix(rc, "sample images at step %lld", (long long)global_step);
    return rc;
}

void sd_train_sampling_free(sd_train_sampling *s)
{
    sd_prompt_list_free(&s->prompts);
    free(s->model_name);
    memset(s, 0, sizeof *s);
}
