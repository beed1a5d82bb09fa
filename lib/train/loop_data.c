/* The inputs of sd_train_run (see loop.h): the options' defaults (sd_train_config_default) and the
 * training records, one JSON record each (sd_train_data_add_record: latents or image, caption and
 * tags, repeats, bucket and the subset's caption options). */
#include "train/loop.h"
#include "train/full.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "data/bucket_record.h"
#include "io/jsonl.h"
#include "tensor/device.h"

void sd_train_config_default(sd_train_config *c)
{
    memset(c, 0, sizeof *c);
    c->device_index = SD_DEVICE_CPU;
    c->network_alpha = NAN;
    c->network_alpha_is_int = 1;
    c->unet_lr = NAN;
    c->text_encoder_lr = NAN;
    c->learning_rate = 2e-6;
    c->learning_rate_te = NAN;
    c->learning_rate_te1 = NAN;
    c->learning_rate_te2 = NAN;
    c->max_grad_norm = 1.0;
    c->lr_scheduler = "constant";
    c->lr_warmup_steps = "0";
    c->lr_scheduler_num_cycles = 1;
    c->lr_scheduler_power = 1.0;
    c->lr_scheduler_min_lr_ratio = NAN;
    c->gradient_accumulation_steps = 1;
    c->max_train_steps = 1600;
    c->seed = -1;
    c->mixed_precision = "no";
    c->train_batch_size = 1;
    c->prior_loss_weight = 1.0;
    sd_caption_opts_default(&c->caption);
    c->multires_noise_discount = 0.3;
    c->min_timestep = -1;
    c->max_timestep = -1;
    c->loss_type = "l2";
    c->huber_schedule = "snr";
    c->huber_c = 0.1;
    c->huber_scale = 1.0;
    c->save_model_as = "safetensors";
    c->min_bucket_reso = 256;
    c->max_bucket_reso = 1024;
    c->bucket_reso_steps = 64;
    c->validation_split = NAN;
    c->max_validation_steps = -1;
    c->ti.num_vectors_per_token = 1;
}

/* ---- data ---------------------------------------------------------------------------------------- */

void sd_train_data_init(sd_train_data *d) { memset(d, 0, sizeof *d); }

void sd_train_data_free(sd_train_data *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->s[i].latents);
        free(d->s[i].image);
        free(d->s[i].caption);
        free(d->s[i].tags);
        free(d->s[i].mem);
        free(d->s[i].mem_flip);
        free(d->s[i].mask_mem);
        free(d->s[i].cond);
        free(d->s[i].te_hs1);
        free(d->s[i].te_hs2);
        free(d->s[i].te_pool);
    }
    free(d->s);
    for (size_t i = 0; i < d->nstrs; i++) free(d->strs[i]);
    free(d->strs);
    if (d->has_config) jv_free(d->config);
    memset(d, 0, sizeof *d);
}

static const char *keep_str(sd_train_data *d, const char *s)
{
    if (!s) return NULL;
    if (d->nstrs == d->capstrs) {
        size_t cap = d->capstrs ? d->capstrs * 2 : 64;
        char **q = realloc(d->strs, cap * sizeof *q);
        if (!q) return NULL;
        d->strs = q;
        d->capstrs = cap;
    }
    char *c = strdup(s);
    if (!c) return NULL;
    d->strs[d->nstrs++] = c;
    return c;
}

#define GET(fn, key, dst)                                    \
    do {                                                     \
        int r_ = fn(rec, key, dst);                          \
        if (r_ < 0) return r_;                               \
    } while (0)

int sd_train_data_add_record(sd_train_data *d, const sd_train_config *c, jv rec)
{
    sd_train_sample s;
    memset(&s, 0, sizeof s);
    const char *lat = NULL, *img = NULL, *cap = NULL, *tags = NULL, *method = NULL;
    GET(sd_jsonl_get_str, "latents", &lat);
    GET(sd_jsonl_get_str, "image", &img);
    GET(sd_jsonl_get_str, "caption", &cap);
    GET(sd_jsonl_get_str, "tags", &tags);
    GET(sd_jsonl_get_str, "method", &method);
    long long v;
    double dv;
    int b;
    s.dataset = 0;
    if (sd_jsonl_get_int(rec, "dataset", &v) == 1) {
        if (v < 0 || v > 100000) return sd_err(SD_EFORMAT, "key 'dataset': %lld is out of range", v);
        s.dataset = (int)v;
    }
    s.subset = -1;
    if (sd_jsonl_get_int(rec, "subset", &v) == 1 && v >= 0 && v <= 100000) s.subset = (int)v;
    s.num_repeats = 1;
    int r = sd_jsonl_get_int(rec, "num_repeats", &v);
    if (r < 0) return r;
    if (r == 1) {
        if (v < 1 || v > 1000000) return sd_err(SD_EFORMAT, "key 'num_repeats': %lld is out of range", v);
        s.num_repeats = (int)v;
    }
    s.batch_size = c->train_batch_size;
    r = sd_jsonl_get_int(rec, "batch_size", &v);
    if (r < 0) return r;
    if (r == 1) {
        if (v < 1 || v > 4096) return sd_err(SD_EFORMAT, "key 'batch_size': %lld is out of range", v);
        s.batch_size = (int)v;
    }
    r = sd_jsonl_get_bool(rec, "is_reg", &b);
    if (r < 0) return r;
    s.is_reg = r == 1 && b;
    s.method_ft = method && !strcmp(method, "fine_tuning");
    s.validation_split = NAN;
    r = sd_jsonl_get_num(rec, "validation_split", &dv);
    if (r < 0) return r;
    if (r == 1) s.validation_split = dv;
    r = sd_jsonl_get_int(rec, "validation_seed", &v);
    if (r < 0) return r;
    if (r == 1) {
        s.has_validation_seed = 1;
        s.validation_seed = (int64_t)v;
    }
    s.flip_aug = c->flip_aug;
    r = sd_jsonl_get_bool(rec, "flip_aug", &b);
    if (r < 0) return r;
    if (r == 1) s.flip_aug = b;
    s.alpha = c->alpha_mask;
    r = sd_jsonl_get_bool(rec, "alpha_mask", &b);
    if (r < 0) return r;
    if (r == 1) s.alpha = b;
    const char *cond = NULL;
    GET(sd_jsonl_get_str, "conditioning_image", &cond);
    int bk[2];
    r = sd_jsonl_get_size2(rec, "bucket", bk);
    if (r < 0) return r;
    if (r == 1) {
        s.bucket_w = bk[0];
        s.bucket_h = bk[1];
    }
    s.color_aug = c->color_aug;
    if ((r = sd_jsonl_get_bool(rec, "color_aug", &b)) < 0) return r;
    if (r == 1) s.color_aug = b;
    s.random_crop = c->random_crop;
    if ((r = sd_jsonl_get_bool(rec, "random_crop", &b)) < 0) return r;
    if (r == 1) s.random_crop = b;
    s.has_face_range = c->has_face_crop;
    s.face_lo = c->face_crop[0], s.face_hi = c->face_crop[1];
    {
        jv fv = jv_object_get(jv_copy(rec), jv_string("face_crop_aug_range"));
        int k = jv_get_kind(fv);
        if (k == JV_KIND_ARRAY) {
            jv a0 = jv_array_get(jv_copy(fv), 0), a1 = jv_array_get(jv_copy(fv), 1);
            int ok = jv_array_length(jv_copy(fv)) == 2 && jv_get_kind(a0) == JV_KIND_NUMBER &&
                     jv_get_kind(a1) == JV_KIND_NUMBER;
            if (ok) s.face_lo = jv_number_value(a0), s.face_hi = jv_number_value(a1);
            jv_free(a0), jv_free(a1);
            if (!ok || !(s.face_lo > 0) || !(s.face_hi >= s.face_lo) || !isfinite(s.face_hi)) {
                jv_free(fv);
                return sd_err(SD_EFORMAT, "key 'face_crop_aug_range': expected [low, high] with 0 < low <= high");
            }
            s.has_face_range = 1;
        } else if (k == JV_KIND_NULL) {
            s.has_face_range = 0;
        } else if (k != JV_KIND_INVALID) {
            jv_free(fv);
            return sd_err(SD_EFORMAT, "key 'face_crop_aug_range': expected [low, high]");
        }
        jv_free(fv);
    }
    if (!lat && !img) return sd_err(SD_EFORMAT, "record has neither 'latents' nor 'image'");
    if (s.has_face_range && lat)
        return sd_err(SD_EUSAGE, "%s: the record has a 'latents' file, which is fixed: face_crop_aug_range needs the "
                      "image encoded at every step (a record without 'latents', no --cache_latents)", lat);
    if (s.has_face_range && (c->cache_latents || c->cache_latents_to_disk))
        return sd_err(SD_EUSAGE, "face_crop_aug_range crops images encoded at every step; with --cache_latents the "
                      "reference ignores it (refused here rather than ignored)");
    /* a ControlNet subset's conditioning image (§1.11): the loss mask; the reference's dataset config
       accepts conditioning_data_dir only with --masked_loss, and its ControlNetDataset asserts
       random_crop off */
    if (cond && !c->masked_loss && c->method != SD_METHOD_CN)
        return sd_err(SD_EUSAGE, "conditioning_image %s: conditioning images are loss masks and need --masked_loss (the "
                      "reference accepts conditioning_data_dir only with it)", cond);
    if (cond && s.random_crop)
        return sd_err(SD_EUSAGE, "conditioning_image %s: random_crop is not supported with conditioning images (the "
                      "reference's ControlNetDataset)", cond);
    if (cond) {
        /* the reference's ControlNetDataset builds its DreamBooth subsets with alpha_mask False */
        if (s.alpha) s.alpha = 0, d->cond_alpha_off++;
        s.cond_bucket = c->enable_bucket;
        if ((r = sd_jsonl_get_bool(rec, "enable_bucket", &b)) < 0) return r;
        if (r == 1) s.cond_bucket = b;
        /* the ControlNetDataset's own resize_interpolation (the dataset's, not the subset's) */
        const char *rn = NULL;
        if ((r = sd_jsonl_get_str(rec, "conditioning_resize_interpolation", &rn)) < 0) return r;
        int filter = -1;
        if (r == 1 && (r = sd_bucket_interp_from_name(rn, &filter)) < 0)
            return sd_err_prefix(r, "key 'conditioning_resize_interpolation'");
        s.cond_filter = filter + 1;
    }
    if ((s.color_aug || s.random_crop) && lat)
        return sd_err(SD_EUSAGE, "%s: the record has a 'latents' file, which is fixed: %s needs the image encoded at "
                      "every step (a record without 'latents', no --cache_latents)", lat,
                      s.color_aug ? "color_aug" : "random_crop");
    if ((s.color_aug || s.random_crop) && (c->cache_latents || c->cache_latents_to_disk))
        return sd_err(SD_EUSAGE, "when caching latents, either color_aug or random_crop cannot be used");
    s.live = !lat && !c->cache_latents && !c->cache_latents_to_disk;
    if (!lat) {
        int filter = -1;
        if ((r = sd_bucket_record_filter(rec, &filter)) < 0) return r;
        s.resize_filter = filter + 1;
        r = sd_bucket_record_plan(rec, &s.plan);
        if (r < 0) return r;
        s.has_plan = r == 1;
        if (s.has_plan) {
            s.bucket_w = s.plan.bucket_w;
            s.bucket_h = s.plan.bucket_h;
        } else {
            sd_bucket_cfg def = { .res_w = c->reso_w, .res_h = c->reso_h, .enable_bucket = c->enable_bucket,
                                  .min_reso = c->min_bucket_reso, .max_reso = c->max_bucket_reso,
                                  .steps = c->bucket_reso_steps, .no_upscale = c->bucket_no_upscale };
            r = sd_bucket_record_cfg(rec, &def, c->reso_w > 0, &s.bcfg);
            if (r < 0) return r;
            if (r == 0) return sd_err(SD_EFORMAT, "no resolution for '%s': give --resolution", img);
            s.has_bcfg = 1;
        }
    }
    /* caption options of the record's subset override the command line */
    s.cap = c->caption;
    s.token_warmup_step_f = c->token_warmup_step_f;
    const char *sv;
    if ((r = sd_jsonl_get_bool(rec, "shuffle_caption", &b)) < 0) return r;
    if (r == 1) s.cap.shuffle = b;
    if ((r = sd_jsonl_get_bool(rec, "enable_wildcard", &b)) < 0) return r;
    if (r == 1) s.cap.enable_wildcard = b;
    if ((r = sd_jsonl_get_int(rec, "keep_tokens", &v)) < 0) return r;
    if (r == 1) s.cap.keep_tokens = (int)v;
    if ((r = sd_jsonl_get_int(rec, "caption_dropout_every_n_epochs", &v)) < 0) return r;
    if (r == 1) s.cap.dropout_every_n_epochs = (int)v;
    if ((r = sd_jsonl_get_int(rec, "token_warmup_min", &v)) < 0) return r;
    if (r == 1) s.cap.token_warmup_min = (int)v;
    if ((r = sd_jsonl_get_num(rec, "caption_dropout_rate", &dv)) < 0) return r;
    if (r == 1) s.cap.dropout_rate = dv;
    if ((r = sd_jsonl_get_num(rec, "caption_tag_dropout_rate", &dv)) < 0) return r;
    if (r == 1) s.cap.tag_dropout_rate = dv;
    if ((r = sd_jsonl_get_num(rec, "token_warmup_step", &dv)) < 0) return r;
    if (r == 1) s.token_warmup_step_f = dv;
    static const char *const skeys[] = { "caption_prefix", "caption_suffix", "keep_tokens_separator",
                                         "caption_separator", "secondary_separator" };
    for (int k = 0; k < 5; k++) {
        if ((r = sd_jsonl_get_str(rec, skeys[k], &sv)) < 0) return r;
        if (r != 1) continue;
        const char *kept = keep_str(d, sv);
        if (!kept) return sd_err(SD_ENOMEM, "out of memory");
        if (k == 0) s.cap.prefix = kept;
        else if (k == 1) s.cap.suffix = kept;
        else if (k == 2) s.cap.keep_tokens_separator = kept;
        else if (k == 3) s.cap.separator = kept;
        else s.cap.secondary_separator = kept;
    }
    /* the stored caption (§4.6: fine-tuning joins caption and tags with the separator) */
    const char *sep = s.cap.separator && *s.cap.separator ? s.cap.separator : ",";
    size_t n1 = cap ? strlen(cap) : 0, n2 = tags ? strlen(tags) : 0;
    s.caption = malloc(n1 + n2 + strlen(sep) + 1);
    if (!s.caption) return sd_err(SD_ENOMEM, "out of memory");
    s.caption[0] = 0;
    if (cap) strcat(s.caption, cap);
    if (tags && *tags && (!method || strcmp(method, "dreambooth"))) {
        if (n1) strcat(s.caption, sep);
        strcat(s.caption, tags);
    }
    (void)method;
    s.latents = lat ? strdup(lat) : NULL;
    s.image = img ? strdup(img) : NULL;
    s.tags = tags ? strdup(tags) : NULL;
    s.cond = cond ? strdup(cond) : NULL;
    if ((lat && !s.latents) || (img && !s.image) || (tags && !s.tags) || (cond && !s.cond)) goto oom;
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 64;
        sd_train_sample *q = realloc(d->s, ncap * sizeof *q);
        if (!q) goto oom;
        d->s = q;
        d->cap = ncap;
    }
    d->s[d->n++] = s;
    if (s.dataset + 1 > d->ndatasets) d->ndatasets = s.dataset + 1;
    return SD_OK;
oom:
    free(s.cond);
    free(s.caption);
    free(s.latents);
    free(s.image);
    free(s.tags);
    return sd_err(SD_ENOMEM, "out of memory");
}
