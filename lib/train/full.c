/* Full-weight training: what trains, the optimizer groups, the text-encoder stop, saving whole
 * checkpoints (see full.h). */
#include "train/full.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "io/torch_save.h"
#include "models/diffusers_write.h"
#include "text/clip_tokenizer.h"

int sd_train_method_parse(const char *s, sd_train_method *m)
{
    if (!s || !strcmp(s, "lora")) *m = SD_METHOD_LORA;
    else if (!strcmp(s, "db") || !strcmp(s, "dreambooth")) *m = SD_METHOD_DB;
    else if (!strcmp(s, "ft") || !strcmp(s, "finetune") || !strcmp(s, "fine_tune")) *m = SD_METHOD_FT;
    else if (!strcmp(s, "ti") || !strcmp(s, "textual_inversion")) *m = SD_METHOD_TI;
    else if (!strcmp(s, "controlnet") || !strcmp(s, "control_net")) *m = SD_METHOD_CN;
    else return sd_err(SD_EUSAGE, "--method %s is not supported (choose lora, db/dreambooth, ft/finetune, "
                       "ti/textual_inversion or controlnet)", s);
    return SD_OK;
}

const char *sd_train_method_name(sd_train_method m)
{
    return m == SD_METHOD_DB ? "db" : m == SD_METHOD_FT ? "ft" : m == SD_METHOD_TI ? "ti"
           : m == SD_METHOD_CN ? "controlnet" : "lora";
}

void sd_full_init(sd_full *f, sd_train_method m, int stop_te_given, int64_t stop_te, int train_text_encoder)
{
    memset(f, 0, sizeof *f);
    f->method = m;
    f->te_stop = SD_TE_STOP_NONE;
    if (m == SD_METHOD_DB) {
        /* train_text_encoder = stop is None or stop >= 0; None → max_train_steps + 1 (never) */
        f->te_train = !stop_te_given || stop_te >= 0;
        if (stop_te_given && stop_te >= 0) f->te_stop = stop_te;
    } else if (m == SD_METHOD_FT) {
        f->te_train = train_text_encoder != 0;
    }
}

void sd_full_free(sd_full *f)
{
    free(f->skip);
    free(f->zero_lr);
    memset(f, 0, sizeof *f);
}

int sd_full_init_sdxl(sd_full *f, sd_train_method m, int train_text_encoder, double learning_rate, double lr_te1,
                      double lr_te2, const char *block_lr)
{
    memset(f, 0, sizeof *f);
    f->method = m;
    f->te_stop = SD_TE_STOP_NONE;
    f->sdxl = 1;
    f->unet_train = learning_rate != 0;   /* train_unet = args.learning_rate != 0 */
    /* lr_te = args.learning_rate_te1 if not None else args.learning_rate; 0 means not train */
    f->lr_te1 = isnan(lr_te1) ? learning_rate : lr_te1;
    f->lr_te2 = isnan(lr_te2) ? learning_rate : lr_te2;
    if (train_text_encoder) {
        f->te1_train = f->lr_te1 != 0;
        f->te2_train = f->lr_te2 != 0;
    }
    f->te_train = f->te1_train || f->te2_train;
    if (block_lr) {
        const char *s = block_lr;
        int n = 0;
        for (;;) {
            char *end;
            errno = 0;
            double v = strtod(s, &end);
            if (end == s || errno || !isfinite(v) || v < 0 || (*end && *end != ','))
                return sd_err(SD_EUSAGE, "--block_lr %s: expected %d comma-separated learning rates", block_lr,
                              SD_FULL_SDXL_BLOCKS);
            if (n < SD_FULL_SDXL_BLOCKS) f->block_lr[n] = v;
            n++;
            if (!*end) break;
            s = end + 1;
        }
        if (n != SD_FULL_SDXL_BLOCKS)
            return sd_err(SD_EUSAGE, "block_lr must have %d values (--block_lr has %d)", SD_FULL_SDXL_BLOCKS, n);
        f->has_block_lr = 1;
    }
    if (!f->unet_train && !f->te_train)
        return sd_err(SD_EUSAGE, "nothing to train: --learning_rate is 0 and no text encoder trains "
                      "(--train_text_encoder with a non-zero --learning_rate_te1/--learning_rate_te2)");
    return SD_OK;
}

int sd_full_sdxl_block(const char *key)
{
    static const char pre[] = "model.diffusion_model.";
    if (strncmp(key, pre, sizeof pre - 1)) return -1;
    const char *n = key + sizeof pre - 1;
    static const struct { const char *name; int base; } tab[] = {
        { "input_blocks.", 1 }, { "middle_block.", 10 }, { "output_blocks.", 13 } };
    if (!strncmp(n, "time_embed.", 11) || !strncmp(n, "label_emb.", 10)) return 0;
    if (!strncmp(n, "out.", 4)) return 22;
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(tab[i].name);
        if (strncmp(n, tab[i].name, l)) continue;
        char *end;
        long b = strtol(n + l, &end, 10);
        if (end == n + l || *end != '.' || b < 0) return -1;
        int k = tab[i].base + (int)b;
        int lim = i == 0 ? 10 : i == 1 ? 13 : 22;
        return k < lim ? k : -1;
    }
    return -1;
}

int sd_full_mark(sd_full *f, sd_model *m)
{
    f->unet = &m->unet_params;
    f->te = &m->te_params;
    if (f->sdxl) {
        /* unet.requires_grad_(train_unet); text_encoder1/2.requires_grad_(train_text_encoder1/2) */
        int rc = sd_params_set_trainable(f->unet, "", f->unet_train);
        if (rc >= 0) rc = sd_params_set_trainable(f->te, "", 0);
        if (rc >= 0) rc = sd_params_set_trainable(f->te, "conditioner.embedders.0.", f->te1_train);
        if (rc >= 0) rc = sd_params_set_trainable(f->te, "conditioner.embedders.1.", f->te2_train);
        if (rc < 0) return rc;
        /* TE1's output is hidden_states[11] (12 layers; else the penultimate layer's), so its last
           layer and final_layer_norm get no gradient: torch's AdamW skips them (grad None), so they
           do not train here either, kept float32 as the reference's trained text_encoder1 is */
        char last[160];
        snprintf(last, sizeof last, "conditioner.embedders.0.transformer.text_model.encoder.layers.%d.",
                 m->cfg.clip.layers - 1);
        for (size_t i = 0; f->te1_train && i < sd_params_count(f->te); i++) {
            sd_param *p = sd_params_at(f->te, i);
            if (!strncmp(p->key, last, strlen(last)) ||
                !strncmp(p->key, "conditioner.embedders.0.transformer.text_model.final_layer_norm.", 64))
                p->flags &= ~(unsigned)(SD_PARAM_TRAINABLE | SD_PARAM_HALF_OK);
        }
        for (size_t i = 0; f->has_block_lr && i < sd_params_count(f->unet); i++)
            if (sd_full_sdxl_block(sd_params_at(f->unet, i)->key) < 0)
                return sd_err(SD_EFORMAT, "--block_lr: unexpected parameter name: %s", sd_params_at(f->unet, i)->key);
        return SD_OK;
    }
    int rc = sd_params_set_trainable(f->unet, "", 1);
    if (rc >= 0) rc = sd_params_set_trainable(f->te, "", f->te_train);
    return rc < 0 ? rc : SD_OK;
}

static size_t collect(const sd_params *r, sd_param **out)
{
    size_t k = 0;
    for (size_t i = 0; r && i < sd_params_count(r); i++) {
        sd_param *p = sd_params_at(r, i);
        if (!(p->flags & SD_PARAM_TRAINABLE)) continue;
        if (out) out[k] = p;
        k++;
    }
    return k;
}

int sd_full_groups(const sd_full *f, double learning_rate, double learning_rate_te, sd_lora_groups *g)
{
    memset(g, 0, sizeof *g);
    const sd_params *te = f->te_train ? f->te : NULL;
    size_t nu = collect(f->unet, NULL), nt = collect(te, NULL);
    g->params = calloc(nu + nt + 1, sizeof *g->params);
    g->desc = calloc(2, sizeof *g->desc);
    g->names = calloc(2, sizeof *g->names);
    if (!g->params || !g->desc || !g->names) {
        sd_lora_groups_free(g);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    collect(f->unet, g->params);
    collect(te, g->params + nu);
    snprintf(g->names[0], sizeof g->names[0], "unet");
    snprintf(g->names[1], sizeof g->names[1], "text_encoder1");
    if (!nt || isnan(learning_rate_te)) {
        /* itertools.chain(unet.parameters(), text_encoder.parameters()): one group */
        g->desc[0] = (sd_optim_group_desc){ .name = g->names[0], .lr = learning_rate, .params = g->params,
                                            .count = nu + nt };
        g->n = 1;
    } else {
        g->desc[0] = (sd_optim_group_desc){ .name = g->names[0], .lr = learning_rate, .params = g->params, .count = nu };
        g->desc[1] = (sd_optim_group_desc){ .name = g->names[1], .lr = learning_rate_te, .params = g->params + nu,
                                            .count = nt };
        g->n = 2;
    }
    return SD_OK;
}

int sd_full_groups_sdxl(const sd_full *f, double learning_rate, sd_lora_groups *g)
{
    memset(g, 0, sizeof *g);
    size_t nu = f->unet_train ? collect(f->unet, NULL) : 0, nt = collect(f->te, NULL);
    int maxg = SD_FULL_SDXL_BLOCKS + 2;
    g->params = calloc(nu + nt + 1, sizeof *g->params);
    g->desc = calloc((size_t)maxg, sizeof *g->desc);
    g->names = calloc((size_t)maxg, sizeof *g->names);
    if (!g->params || !g->desc || !g->names) {
        sd_lora_groups_free(g);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    size_t k = 0;
    if (f->unet_train) {
        for (int b = 0; b < (f->has_block_lr ? SD_FULL_SDXL_BLOCKS : 1); b++) {
            if (f->has_block_lr && f->block_lr[b] == 0) continue;   /* 0: not optimized */
            size_t k0 = k;
            for (size_t i = 0; i < sd_params_count(f->unet); i++) {
                sd_param *p = sd_params_at(f->unet, i);
                if (!(p->flags & SD_PARAM_TRAINABLE)) continue;
                if (f->has_block_lr && sd_full_sdxl_block(p->key) != b) continue;
                g->params[k++] = p;
            }
            if (f->has_block_lr) snprintf(g->names[g->n], sizeof g->names[0], "block%d", b);
            else snprintf(g->names[g->n], sizeof g->names[0], "unet");
            g->desc[g->n] = (sd_optim_group_desc){ .name = g->names[g->n], .lr = f->has_block_lr ? f->block_lr[b]
                                                   : learning_rate, .params = g->params + k0, .count = k - k0 };
            g->n++;
        }
    }
    for (int e = 0; e < 2; e++) {
        if (!(e ? f->te2_train : f->te1_train)) continue;
        const char *pre = e ? "conditioner.embedders.1." : "conditioner.embedders.0.";
        size_t k0 = k;
        for (size_t i = 0; i < sd_params_count(f->te); i++) {
            sd_param *p = sd_params_at(f->te, i);
            if ((p->flags & SD_PARAM_TRAINABLE) && !strncmp(p->key, pre, strlen(pre))) g->params[k++] = p;
        }
        snprintf(g->names[g->n], sizeof g->names[0], "text_encoder%d", e + 1);
        g->desc[g->n] = (sd_optim_group_desc){ .name = g->names[g->n], .lr = e ? f->lr_te2 : f->lr_te1,
                                               .params = g->params + k0, .count = k - k0 };
        g->n++;
    }
    return SD_OK;
}

int sd_full_norm_extra(sd_full *f, sd_optim *o)
{
    free(f->zero_lr);
    f->zero_lr = NULL;
    f->nzero_lr = 0;
    if (!f->sdxl || !f->has_block_lr || !f->unet_train) return SD_OK;
    f->zero_lr = calloc(sd_params_count(f->unet) + 1, sizeof *f->zero_lr);
    if (!f->zero_lr) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < sd_params_count(f->unet); i++) {
        sd_param *p = sd_params_at(f->unet, i);
        int b = sd_full_sdxl_block(p->key);
        if ((p->flags & SD_PARAM_TRAINABLE) && b >= 0 && f->block_lr[b] == 0) f->zero_lr[f->nzero_lr++] = p;
    }
    o->norm_extra = f->zero_lr;
    o->nnorm_extra = f->nzero_lr;
    return SD_OK;
}

int sd_full_bind(sd_full *f, const sd_optim *o)
{
    free(f->skip);
    f->nskip = o->nparams;
    f->skip = calloc(o->nparams + 1, 1);
    if (!f->skip) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->nparams; i++) f->skip[i] = f->te && sd_params_find(f->te, o->params[i].p->key) == o->params[i].p;
    return SD_OK;
}

int sd_full_zero_grad(sd_ctx *ctx, sd_full *f)
{
    if (f->nzero_lr && f->zeroed_once) {
        /* optimizer.zero_grad(set_to_none=True) resets only the optimizer's parameters: the
           gradients of --block_lr blocks at 0 keep accumulating (scaled by every clipping) */
        int rc = SD_OK;
        for (size_t i = 0, k = 0; i < sd_params_count(f->unet) && !rc; i++) {
            sd_param *p = sd_params_at(f->unet, i);
            if (k < f->nzero_lr && f->zero_lr[k] == p) {
                k++;
                continue;
            }
            if (p->flags & SD_PARAM_TRAINABLE) rc = sd_op_fill(ctx, &p->grad, 0.0f);
        }
        if (!rc && f->te_train) rc = sd_params_zero_grad(ctx, f->te);
        return rc;
    }
    f->zeroed_once = 1;
    int rc = sd_params_zero_grad(ctx, f->unet);
    if (!rc && f->te_train) rc = sd_params_zero_grad(ctx, f->te);
    return rc;
}

int sd_full_registries(const sd_full *f, const sd_params **out)
{
    out[0] = f->unet;
    if (f->te_train) {
        out[1] = f->te;
        return 2;
    }
    return 1;
}

const uint8_t *sd_full_skip_mask(const sd_full *f, int te_active)
{
    return te_active || !f->skip ? NULL : f->skip;
}

void sd_full_memory_of(const sd_full *f, sd_full_memory *mem)
{
    memset(mem, 0, sizeof *mem);
    const sd_params *regs[2];
    int n = sd_full_registries(f, regs);
    for (int r = 0; r < n; r++)
        for (size_t i = 0; i < sd_params_count(regs[r]); i++) {
            const sd_param *p = sd_params_at(regs[r], i);
            if (p->flags & SD_PARAM_TRAINABLE) mem->numel += sd_tensor_numel(&p->value);
        }
    mem->weights = mem->grads = (size_t)mem->numel * 4;
    mem->moments = 2 * mem->weights;
}

/* ---- format --------------------------------------------------------------------------------- */

int sd_full_format_choose(const char *save_model_as, int use_safetensors, sd_model_format source, sd_full_format *out)
{
    if (!save_model_as) {
        *out = source == SD_MODEL_FMT_DIFFUSERS                ? SD_FULL_DIFFUSERS
               : source == SD_MODEL_FMT_CKPT && !use_safetensors ? SD_FULL_CKPT
                                                                 : SD_FULL_SAFETENSORS;
        return SD_OK;
    }
    if (!strcmp(save_model_as, "safetensors")) *out = SD_FULL_SAFETENSORS;
    else if (!strcmp(save_model_as, "ckpt")) *out = use_safetensors ? SD_FULL_SAFETENSORS : SD_FULL_CKPT;
    else if (!strcmp(save_model_as, "diffusers") || !strcmp(save_model_as, "diffusers_safetensors"))
        *out = SD_FULL_DIFFUSERS;
    else
        return sd_err(SD_EUSAGE, "--save_model_as %s: choose ckpt, safetensors, diffusers or diffusers_safetensors",
                      save_model_as);
    return SD_OK;
}

int sd_full_saves_diffusers(const char *save_model_as, const char *model)
{
    if (save_model_as) return !strcmp(save_model_as, "diffusers") || !strcmp(save_model_as, "diffusers_safetensors");
    struct stat sb;
    return model && !stat(model, &sb) && S_ISDIR(sb.st_mode);
}

const char *sd_full_format_ext(sd_full_format f)
{
    return f == SD_FULL_CKPT ? ".ckpt" : f == SD_FULL_DIFFUSERS ? "" : ".safetensors";
}

/* ---- saving ------------------------------------------------------------------------------------- */

typedef struct conv_src {
    const sd_st_tensor *t;
    sd_st_dtype to;
} conv_src;

static int write_converted(void *ctx, const char *name, sd_st_sink *sink)
{
    (void)name;
    const conv_src *c = ctx;
    enum { CHUNK = 16384 };
    unsigned char *buf = malloc(CHUNK * 8);
    if (!buf) return sd_err(SD_ENOMEM, "out of memory");
    size_t isz = sd_st_dtype_size(c->t->dtype), osz = sd_st_dtype_size(c->to);
    const unsigned char *src = c->t->data;
    size_t n = (size_t)c->t->numel;
    int rc = SD_OK;
    for (size_t i = 0; i < n && !rc; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        rc = sd_st_convert(c->t->dtype, src + i * isz, c->to, buf, k);
        if (!rc) rc = sd_st_sink_write(sink, buf, k * osz);
    }
    free(buf);
    return rc;
}

static const sd_model_file *source_file(const sd_model *m)
{
    if (m->format == SD_MODEL_FMT_DIFFUSERS || m->nfiles < 1 || !m->files[0].st) return NULL;
    return &m->files[0];
}

static void part_dtypes(const sd_full_save_opts *o, sd_st_dtype dt[3])
{
    if (o->save_dtype >= 0) {
        dt[0] = dt[1] = dt[2] = (sd_st_dtype)o->save_dtype;
        return;
    }
    dt[0] = o->full_half ? o->weight_dtype : SD_ST_F32;
    dt[1] = o->te_trained && !o->full_half ? SD_ST_F32 : o->weight_dtype;
    dt[2] = o->vae_f32 ? SD_ST_F32 : o->weight_dtype;
}

static int64_t meta_int(const sd_model_file *f, const char *key)
{
    if (!f || f->format != SD_MODEL_FMT_CKPT) return 0;
    const char *v = sd_safetensors_meta_get(f->st, key);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    return *end || errno ? 0 : (int64_t)x;   /* "sometimes not int": the reference ignores those */
}

static int build_writer(sd_model *m, const sd_full_save_opts *o, sd_safetensors_writer *w, conv_src **csp)
{
    sd_st_dtype dt[3];
    part_dtypes(o, dt);
    const sd_model_file *src = source_file(m);
    if (!src && !(m->parts & SD_MODEL_VAE))
        return sd_err(SD_ESTATE, "saving a checkpoint: no VAE (the model has no single-file source and the VAE is not "
                      "loaded)");
    int rc = SD_OK;
    for (int c = 0; c < 3 && !rc; c++)
        if (m->parts & (1u << c)) rc = sd_model_add_to_writer(m, 1u << c, w, dt[c]);
    if (rc || !src) return rc;
    /* the rest of the source checkpoint: its VAE when not loaded (stored as the VAE dtype), every
       other key (EMA weights, alphas_cumprod, ...) as it is */
    size_t n = sd_safetensors_count(src->st);
    conv_src *cs = calloc(n + 1, sizeof *cs);
    *csp = cs;
    if (!cs) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(src->st, i);
        unsigned comp = sd_model_tensor_component(&src->info, t->name);
        if (comp & (m->parts | SD_MODEL_UNET | SD_MODEL_TE)) continue;
        if (comp == SD_MODEL_VAE && sd_st_dtype_is_float(t->dtype) && t->dtype != dt[2]) {
            cs[i].t = t;
            cs[i].to = dt[2];
            rc = sd_safetensors_writer_add_fn(w, t->name, dt[2], t->ndim, t->shape, write_converted, &cs[i]);
        } else {
            rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL);
        }
    }
    return rc;
}

int sd_full_save(const char *path, sd_model *m, const sd_full_save_opts *o)
{
    if (o->format == SD_FULL_DIFFUSERS) {
        sd_full_save_opts dopt = *o;
        if (m->cfg.family != SD_FAMILY_SDXL) dopt.save_dtype = -1;
        sd_diffusers_write_opts wo;
        memset(&wo, 0, sizeof wo);
        part_dtypes(&dopt, wo.dtype);
        wo.tokenizer = sd_clip_tokenizer_write_hf;
        return sd_model_write_diffusers(m, path, &wo);
    }
    sd_safetensors_writer *w = NULL;
    conv_src *cs = NULL;
    int rc = sd_safetensors_writer_new(&w);
    if (!rc) rc = build_writer(m, o, w, &cs);
    if (rc) {
        sd_safetensors_writer_free(w);
        free(cs);
        return sd_err_prefix(rc, "%s", path);
    }
    if (o->format == SD_FULL_SAFETENSORS) {
        for (size_t i = 0; o->meta && i < o->meta->n && !rc; i++)
            rc = sd_safetensors_writer_set_meta(w, o->meta->keys[i], o->meta->vals[i]);
        if (!rc) rc = sd_safetensors_writer_write(w, path);
        sd_safetensors_writer_free(w);
        free(cs);
        return rc;
    }
    /* .ckpt: the tensors go through a temporary safetensors file next to the output */
    const sd_model_file *src = source_file(m);
    int64_t epoch = o->epoch + meta_int(src, "epoch"), step = o->global_step + meta_int(src, "global_step");
    size_t L = strlen(path) + 64;
    char *tmp = malloc(L);
    if (!tmp) rc = sd_err(SD_ENOMEM, "out of memory");
    else snprintf(tmp, L, "%s.tmp%ld.safetensors", path, (long)getpid());
    if (!rc) rc = sd_safetensors_writer_write(w, tmp);
    sd_safetensors_writer_free(w);
    free(cs);
    if (!rc) {
        sd_safetensors *st = NULL;
        rc = sd_safetensors_open(tmp, &st);
        if (!rc) rc = sd_torch_save_state_dict(path, st, epoch, step);
        sd_safetensors_close(st);
    }
    if (tmp) unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- torch.save of a state dict -------------------------------------------------------------- */

int sd_torch_save_state_dict(const char *path, const sd_safetensors *st, int64_t epoch, int64_t global_step)
{
    sd_torch_save *ts = NULL;
    int rc = sd_torch_save_new(&ts);
    if (!rc) rc = sd_torch_save_dict_begin(ts, "state_dict");
    for (size_t i = 0; i < sd_safetensors_count(st) && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        rc = sd_torch_save_tensor(ts, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL);
    }
    if (!rc) rc = sd_torch_save_dict_end(ts);
    if (!rc) rc = sd_torch_save_int(ts, "epoch", epoch);
    if (!rc) rc = sd_torch_save_int(ts, "global_step", global_step);
    if (rc) rc = sd_err_prefix(rc, "%s", path);
    else rc = sd_torch_save_write(ts, path);
    sd_torch_save_free(ts);
    return rc;
}
