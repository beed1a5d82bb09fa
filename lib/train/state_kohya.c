/* Resuming from a kohya-ss/sd-scripts (accelerate) state folder (see state_kohya.h). */
#include "train/state_kohya.h"

#include <errno.h>
#include <jv.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/fileio.h"
#include "io/ckpt.h"
#include "io/jsonl.h"
#include "io/safetensors.h"
#include "train/optim8bit.h"

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static int exists_in(const char *dir, const char *name)
{
    char *p = join(dir, name);
    struct stat st;
    int ok = p && stat(p, &st) == 0;
    free(p);
    return ok;
}

int sd_train_state_is_kohya(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || exists_in(dir, "state.json")) return 0;
    return exists_in(dir, "train_state.json") || exists_in(dir, "optimizer.bin") ||
           exists_in(dir, "model.safetensors") || exists_in(dir, "pytorch_model.bin");
}

/* ---- train_state.json ---------------------------------------------------------------------------- */

static int read_train_state(const char *dir, sd_kohya_state *out)
{
    char *p = join(dir, "train_state.json"), *text = NULL;
    size_t n = 0;
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    int rc = sd_read_file(p, 1u << 20, &text, &n);
    if (rc == SD_ENOTFOUND) {   /* kohya then starts at step 0 (load_model_hook) */
        free(p);
        return SD_OK;
    }
    jv doc = jv_invalid();
    if (!rc && (sd_json_parse(text, n, &doc) || jv_get_kind(doc) != JV_KIND_OBJECT))
        rc = sd_err(SD_EFORMAT, "%s: not a JSON object", p);
    for (int k = 0; k < 2 && !rc; k++) {
        const char *key = k ? "current_epoch" : "current_step";
        jv v = jv_object_get(jv_copy(doc), jv_string(key));
        double x = jv_get_kind(v) == JV_KIND_NUMBER ? jv_number_value(v) : NAN;
        jv_free(v);
        if (!(x >= 0 && x < 9e15) || x != floor(x))
            rc = sd_err(SD_EFORMAT, "%s: %s is missing or not a non-negative integer", p, key);
        else if (k) out->current_epoch = (int64_t)x;
        else out->current_step = (int64_t)x;
    }
    if (!rc) out->has_train_state = 1;
    jv_free(doc);
    free(text);
    free(p);
    return rc;
}

/* ---- scheduler.bin ------------------------------------------------------------------------------- */

static int parse_int(const char *s, int64_t *v)
{
    if (!s || !*s) return -1;
    char *e;
    errno = 0;
    long long x = strtoll(s, &e, 10);
    if (*e || errno) return -1;
    *v = x;
    return 0;
}

static int parse_num(const char *s, double *v)
{
    if (!s || !*s) return -1;
    char *e;
    *v = strtod(s, &e);
    return *e ? -1 : 0;
}

static int read_scheduler(const char *dir, sd_kohya_state *out)
{
    char *p = join(dir, "scheduler.bin");
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    sd_ckpt *ck = NULL;
    int rc = sd_ckpt_open(p, &ck);
    if (rc == SD_ENOTFOUND) {
        free(p);
        return SD_OK;
    }
    if (!rc && parse_int(sd_ckpt_meta_get(ck, "last_epoch"), &out->last_epoch))
        rc = sd_err(SD_EFORMAT, "%s: no integer last_epoch (not an LR scheduler's state_dict)", p);
    if (!rc && out->last_epoch < 0) rc = sd_err(SD_EFORMAT, "%s: last_epoch %lld is negative", p, (long long)out->last_epoch);
    sd_ckpt_close(ck);
    free(p);
    if (rc && rc != SD_ENOMEM) {   /* an unreadable scheduler state: the schedule falls back to current_step */
        snprintf(out->sched_note, sizeof out->sched_note, "%s", sd_errmsg());
        out->last_epoch = -1;
        rc = SD_OK;
    }
    return rc;
}

/* ---- model.safetensors / pytorch_model.bin ------------------------------------------------------- */

typedef struct model_file {
    sd_safetensors *st;
    void *mem;            /* the converted pytorch_model.bin */
} model_file;

static int open_model(const char *dir, model_file *m)
{
    memset(m, 0, sizeof *m);
    if (exists_in(dir, "model_1.safetensors") || exists_in(dir, "pytorch_model_1.bin"))
        return sd_err(SD_EFORMAT, "cannot resume from %s: it holds more than one model (model_1.*): not a "
                      "train_network.py state (its hook keeps the network only)", dir);
    char *p = join(dir, "model.safetensors");
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    int rc;
    if (exists_in(dir, "model.safetensors")) {
        rc = sd_safetensors_open(p, &m->st);
    } else if (exists_in(dir, "pytorch_model.bin")) {
        free(p);
        p = join(dir, "pytorch_model.bin");
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        sd_ckpt *ck = NULL;
        sd_safetensors_writer *w = NULL;
        size_t n = 0;
        rc = sd_ckpt_open(p, &ck);
        if (!rc) rc = sd_safetensors_writer_new(&w);
        for (size_t i = 0; !rc && i < sd_ckpt_count(ck); i++) {
            const sd_ckpt_tensor *t = sd_ckpt_at(ck, i);
            if (!t->contiguous) rc = sd_err(SD_EUNSUPPORTED, "%s: tensor %s is a strided view", p, t->name);
            else rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        }
        if (!rc) rc = sd_safetensors_writer_write_mem(w, &m->mem, &n);
        if (!rc) rc = sd_safetensors_open_mem(m->mem, n, p, &m->st);
        sd_safetensors_writer_free(w);
        sd_ckpt_close(ck);
    } else {
        rc = sd_err(SD_ENOTFOUND, "cannot resume from %s: no model.safetensors or pytorch_model.bin (the network's "
                    "weights)", dir);
    }
    /* DistributedDataParallel: accelerate saves the wrapped model's keys ("module.<key>") */
    size_t nt = m->st ? sd_safetensors_count(m->st) : 0, nmod = 0;
    for (size_t i = 0; !rc && i < nt; i++) nmod += !strncmp(sd_safetensors_at(m->st, i)->name, "module.", 7);
    if (!rc && nt && nmod == nt) {
        const char **names = calloc(nt, sizeof *names);
        if (!names) rc = sd_err(SD_ENOMEM, "out of memory");
        for (size_t i = 0; !rc && i < nt; i++) names[i] = sd_safetensors_at(m->st, i)->name + 7;
        if (!rc) rc = sd_safetensors_rename(m->st, names);
        free(names);
    }
    free(p);
    if (rc) {
        sd_safetensors_close(m->st);
        free(m->mem);
        memset(m, 0, sizeof *m);
    }
    return rc;
}

static void close_model(model_file *m)
{
    sd_safetensors_close(m->st);
    free(m->mem);
}

/* ---- optimizer.bin ------------------------------------------------------------------------------- */

static int kind_read(sd_optim_kind k)
{
    return k == SD_OPTIM_ADAMW || k == SD_OPTIM_LION || k == SD_OPTIM_SGD_NESTEROV || k == SD_OPTIM_ADAFACTOR ||
           k == SD_OPTIM_ADAMW8BIT;
}

/* A group hyper-parameter of the file against this run's: exact (both come from the same decimal
 * text, or from the same defaults). */
static int check_group_num(const sd_ckpt *ck, const char *path, int g, const char *key, double want,
                           const char *option)
{
    char k[128];
    snprintf(k, sizeof k, "param_groups.%d.%s", g, key);
    const char *s = sd_ckpt_meta_get(ck, k);
    double v;
    if (!s) return sd_err(SD_EFORMAT, "%s: optimizer group %d has no %s", path, g, key);
    if (parse_num(s, &v) || !(v == want || (isnan(v) && isnan(want))))
        return sd_err(SD_EINVAL, "%s: optimizer group %d has %s %s, this run %.17g (%s)", path, g, key, s, want,
                      option);
    return SD_OK;
}

static int check_group_str(const sd_ckpt *ck, const char *path, int g, const char *key, const char *want,
                           const char *option)
{
    char k[128];
    snprintf(k, sizeof k, "param_groups.%d.%s", g, key);
    const char *s = sd_ckpt_meta_get(ck, k);
    if (!s) return sd_err(SD_EFORMAT, "%s: optimizer group %d has no %s", path, g, key);
    if (strcmp(s, want))
        return sd_err(SD_EINVAL, "%s: optimizer group %d has %s %s, this run %s (%s)", path, g, key, s, want, option);
    return SD_OK;
}

static int check_hyper(const sd_ckpt *ck, const char *path, const sd_optim *o, int g, int our_g)
{
    const sd_optim_config *c = &o->cfg;
    int rc = check_group_num(ck, path, g, "weight_decay", o->groups[our_g].weight_decay, "--optimizer_args weight_decay");
    switch (c->kind) {
    case SD_OPTIM_ADAMW: {
        char k[96];
        snprintf(k, sizeof k, "param_groups.%d.amsgrad", g);
        const char *a = sd_ckpt_meta_get(ck, k);
        if (!rc && a && strcmp(a, "False")) rc = sd_err(SD_EUNSUPPORTED, "%s: AdamW with amsgrad=%s is not supported", path, a);
        snprintf(k, sizeof k, "param_groups.%d.maximize", g);
        a = sd_ckpt_meta_get(ck, k);
        if (!rc && a && strcmp(a, "False")) rc = sd_err(SD_EUNSUPPORTED, "%s: AdamW with maximize=%s is not supported", path, a);
        if (!rc) rc = check_group_num(ck, path, g, "betas.0", c->beta1, "--optimizer_args betas");
        if (!rc) rc = check_group_num(ck, path, g, "betas.1", c->beta2, "--optimizer_args betas");
        if (!rc) rc = check_group_num(ck, path, g, "eps", c->eps, "--optimizer_args eps");
        break;
    }
    case SD_OPTIM_ADAMW8BIT:
        if (!rc) rc = check_group_num(ck, path, g, "betas.0", c->b8.beta1, "--optimizer_args betas");
        if (!rc) rc = check_group_num(ck, path, g, "betas.1", c->b8.beta2, "--optimizer_args betas");
        if (!rc) rc = check_group_num(ck, path, g, "eps", c->b8.eps, "--optimizer_args eps");
        break;
    case SD_OPTIM_LION:
        if (!rc) rc = check_group_num(ck, path, g, "betas.0", c->beta1, "--optimizer_args betas");
        if (!rc) rc = check_group_num(ck, path, g, "betas.1", c->beta2, "--optimizer_args betas");
        break;
    case SD_OPTIM_SGD_NESTEROV:
        if (!rc) rc = check_group_num(ck, path, g, "momentum", c->momentum, "--optimizer_args momentum");
        if (!rc) rc = check_group_num(ck, path, g, "dampening", c->dampening, "--optimizer_args dampening");
        if (!rc) rc = check_group_str(ck, path, g, "nesterov", "True", "SGDNesterov");
        break;
    case SD_OPTIM_ADAFACTOR:
        if (!rc) rc = check_group_num(ck, path, g, "eps.0", c->eps, "--optimizer_args eps");
        if (!rc) rc = check_group_num(ck, path, g, "eps.1", c->eps2, "--optimizer_args eps");
        if (!rc) rc = check_group_num(ck, path, g, "clip_threshold", c->clip_threshold, "--optimizer_args clip_threshold");
        if (!rc) rc = check_group_num(ck, path, g, "decay_rate", c->decay_rate, "--optimizer_args decay_rate");
        if (!rc && c->has_beta1) rc = check_group_num(ck, path, g, "beta1", c->beta1, "--optimizer_args beta1");
        if (!rc && !c->has_beta1) rc = check_group_str(ck, path, g, "beta1", "None", "--optimizer_args beta1");
        if (!rc) rc = check_group_str(ck, path, g, "scale_parameter", c->scale_parameter ? "True" : "False",
                                      "--optimizer_args scale_parameter");
        if (!rc) rc = check_group_str(ck, path, g, "relative_step", c->relative_step ? "True" : "False",
                                      "--optimizer_args relative_step");
        if (!rc) rc = check_group_str(ck, path, g, "warmup_init", c->warmup_init ? "True" : "False",
                                      "--optimizer_args warmup_init");
        break;
    default:
        break;
    }
    return rc;
}

/* "state.<i>.<key>": i and key (key points into name); -1 when name is not of that form. */
static int64_t state_index(const char *name, const char **key)
{
    if (strncmp(name, "state.", 6)) return -1;
    char *e;
    errno = 0;
    long long i = strtoll(name + 6, &e, 10);
    if (e == name + 6 || *e != '.' || errno || i < 0) return -1;
    *key = e + 1;
    return i;
}

/* ---- kohya's parameter order ---------------------------------------------------------------------
 *
 * LoRANetwork.create_modules walks root_module.named_modules(), so its modules (and the optimizer's
 * parameter indices) follow the models' registration order, which is not sd-train's layer order:
 *   text encoders (transformers CLIPAttention registers k_proj, v_proj, q_proj, out_proj; then
 *   CLIPMLP fc1, fc2), per layer; lora_te / lora_te1 before lora_te2;
 *   SD1/SD2 UNet (library/original_unet.py): down_blocks, up_blocks, then mid_block (assigned after
 *   up_blocks was registered); per block attentions, resnets, down/upsamplers; Transformer2DModel
 *   proj_in, transformer_blocks, proj_out; BasicTransformerBlock attn1 (to_q, to_k, to_v, to_out_0),
 *   ff (net_0_proj, net_2), attn2; ResnetBlock2D conv1, time_emb_proj, conv2, conv_shortcut.
 *   SDXL UNet (library/sdxl_original_unet.py, ldm names): time_embed, label_emb, input_blocks,
 *   middle_block, output_blocks, out; per block its layers by index (see ref_key).
 * Each parameter's sort key is computed from its kohya name; names outside these forms are refused
 * rather than guessed. */

#define KEY_LEN 10

static int rank_of(const char *s, const char *const *table, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, table[i])) return i;
    return -1;
}

/* "<prefix>_<int>_<rest>": the int and rest; -1 if not of that form. */
static int take_int(const char *s, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) || s[n] != '_') return -1;
    char *e;
    long v = strtol(s + n + 1, &e, 10);
    if (e == s + n + 1 || v < 0 || v > 100000) return -1;
    if (*e == '_') e++;
    else if (*e) return -1;
    *rest = e;
    return (int)v;
}

static int ref_key(const char *pkey, int key[KEY_LEN])
{
    char name[512];
    size_t L = strlen(pkey);
    int du;
    memset(key, 0, KEY_LEN * sizeof *key);
    if (L > 17 && !strcmp(pkey + L - 17, ".lora_down.weight")) du = 0;
    else if (L > 15 && !strcmp(pkey + L - 15, ".lora_up.weight")) du = 1;
    else return -1;
    if (L >= sizeof name) return -1;
    memcpy(name, pkey, L);
    name[strcspn(name, ".")] = 0;
    const char *r;
    static const char *const te_sub[] = { "self_attn_k_proj", "self_attn_v_proj", "self_attn_q_proj",
                                          "self_attn_out_proj", "mlp_fc1", "mlp_fc2" };
    int te = !strncmp(name, "lora_te_", 8) ? 0 : !strncmp(name, "lora_te1_", 9) ? 0 : !strncmp(name, "lora_te2_", 9) ? 1 : -1;
    if (te >= 0) {
        const char *b = strchr(name + 5, '_') + 1;
        int layer = take_int(b, "text_model_encoder_layers", &r);
        int k = layer < 0 ? -1 : rank_of(r, te_sub, 6);
        if (k < 0) return -1;
        key[0] = 0, key[1] = te, key[2] = layer, key[3] = k, key[4] = du;
        return 0;
    }
    if (strncmp(name, "lora_unet_", 10)) return -1;
    const char *b = name + 10;
    static const char *const blk_sub[] = { "attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0",
                                           "ff_net_0_proj", "ff_net_2", "attn2_to_q", "attn2_to_k",
                                           "attn2_to_v", "attn2_to_out_0" };
    /* SDXL (library/sdxl_original_unet.py, ldm names): time_embed, label_emb, input_blocks,
       middle_block, output_blocks, out; per block its layers by index; ResnetBlock2D in_layers,
       emb_layers, out_layers, skip_connection; Downsample2D op; Upsample2D conv */
    {
        int top = -1, n = 0, m = -1;
        const char *r1 = NULL;
        if ((n = take_int(b, "input_blocks", &r1)) >= 0) top = 2;
        else if ((n = take_int(b, "output_blocks", &r1)) >= 0) top = 4;
        else if (!strncmp(b, "middle_block_", 13)) top = 3, n = 0, r1 = b + 13;
        if (top >= 0) {
            char *e;
            long mm = strtol(r1, &e, 10);
            if (e == r1 || *e != '_' || mm < 0 || mm > 1000) return -1;
            m = (int)mm;
            const char *r2 = e + 1, *r3;
            static const char *const res_sub[] = { "in_layers_2", "emb_layers_1", "out_layers_3", "skip_connection" };
            int t;
            key[0] = 1, key[1] = top, key[2] = n, key[3] = m;
            if (!strcmp(r2, "proj_in")) key[4] = 0;
            else if (!strcmp(r2, "proj_out")) key[4] = 2;
            else if ((t = take_int(r2, "transformer_blocks", &r3)) >= 0 && (key[6] = rank_of(r3, blk_sub, 10)) >= 0)
                key[4] = 1, key[5] = t;
            else if ((key[4] = rank_of(r2, res_sub, 4)) >= 0) key[4] += 3;
            else if (!strcmp(r2, "op") || !strcmp(r2, "conv")) key[4] = 7;
            else return -1;
            key[8] = du;
            return 0;
        }
        int k;
        if ((k = take_int(b, "time_embed", &r1)) >= 0 && !*r1) top = 0;
        else if (!strncmp(b, "label_emb_0_", 12) && (k = take_int(b + 10, "0", &r1)) >= 0 && !*r1) top = 1;
        else if ((k = take_int(b, "out", &r1)) >= 0 && !*r1) top = 5;
        if (top >= 0) {
            key[0] = 1, key[1] = top, key[2] = k, key[8] = du;
            return 0;
        }
    }
    int top, blk = 0;
    if ((blk = take_int(b, "down_blocks", &r)) >= 0) top = 0;
    else if ((blk = take_int(b, "up_blocks", &r)) >= 0) top = 1;
    else if (!strncmp(b, "mid_block_", 10)) top = 2, blk = 0, r = b + 10;
    else return -1;
    static const char *const parts[] = { "attentions", "resnets", "downsamplers", "upsamplers" };
    int part = -1, j = -1;
    const char *r2 = NULL;
    for (int i = 0; i < 4 && j < 0; i++)
        if ((j = take_int(r, parts[i], &r2)) >= 0) part = i < 2 ? i : 2;
    if (j < 0) return -1;
    key[0] = 1, key[1] = top, key[2] = blk, key[3] = part, key[4] = j;
    if (part == 0) {
        const char *r3;
        int t;
        if (!strcmp(r2, "proj_in")) key[5] = 0;
        else if (!strcmp(r2, "proj_out")) key[5] = 2;
        else if ((t = take_int(r2, "transformer_blocks", &r3)) >= 0 && (key[7] = rank_of(r3, blk_sub, 10)) >= 0)
            key[5] = 1, key[6] = t;
        else return -1;
    } else if (part == 1) {
        static const char *const res_sub[] = { "conv1", "time_emb_proj", "conv2", "conv_shortcut" };
        if ((key[5] = rank_of(r2, res_sub, 4)) < 0) return -1;
    } else if (strcmp(r2, "conv")) {
        return -1;
    }
    key[8] = du;
    return 0;
}

typedef struct ord_item {
    int key[KEY_LEN];
    size_t idx;
} ord_item;

static int ord_cmp(const void *a, const void *b)
{
    const ord_item *x = a, *y = b;
    for (int i = 0; i < KEY_LEN; i++)
        if (x->key[i] != y->key[i]) return x->key[i] < y->key[i] ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* kohya's order of the groups and of the parameters in them. kohya lists the groups text encoder
 * first, then per UNet block in order of first appearance in its module order, each as the LoRA group
 * then the LoRA+ "plus" group (lora_up weights): that is sd-train's groups sorted by their smallest
 * member key. gperm[fg] = sd-train's group of kohya's group fg; perm[f] = sd-train's parameter of
 * kohya's optimizer index f. *moved counts the parameters whose index differs. */
static int kohya_order(const sd_optim *o, const char *path, int *gperm, size_t *perm, size_t *moved)
{
    ord_item *it = calloc(o->nparams + 1, sizeof *it), *gk = calloc((size_t)o->ngroups + 1, sizeof *gk);
    if (!it || !gk) {
        free(it);
        free(gk);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    *moved = 0;
    int rc = SD_OK;
    for (int g = 0; g < o->ngroups && !rc; g++) {
        const sd_optim_group *G = &o->groups[g];
        gk[g].idx = (size_t)g;
        for (int k = 0; k < KEY_LEN; k++) gk[g].key[k] = INT32_MAX;
        for (size_t k = 0; k < G->count && !rc; k++) {
            size_t i = G->first + k;
            ord_item x = { .idx = i };
            if (ref_key(o->params[i].p->key, x.key))
                rc = sd_err(SD_EUNSUPPORTED, "%s: cannot place %s in kohya-ss's optimizer parameter order (kohya-ss "
                            "states are read for networks.lora's module names)", path, o->params[i].p->key);
            else if (ord_cmp(&x, &gk[g]) < 0 || k == 0)
                memcpy(gk[g].key, x.key, sizeof x.key);
        }
    }
    if (!rc) {
        qsort(gk, (size_t)o->ngroups, sizeof *gk, ord_cmp);
        size_t f = 0;
        for (int fg = 0; fg < o->ngroups; fg++) {
            const sd_optim_group *G = &o->groups[gk[fg].idx];
            gperm[fg] = (int)gk[fg].idx;
            for (size_t k = 0; k < G->count; k++) {
                it[k].idx = G->first + k;
                ref_key(o->params[G->first + k].p->key, it[k].key);
            }
            qsort(it, G->count, sizeof *it, ord_cmp);
            for (size_t k = 0; k < G->count; k++, f++) {
                perm[f] = it[k].idx;
                *moved += it[k].idx != f;
            }
        }
    }
    free(it);
    free(gk);
    return rc;
}

/* The state arrays of sd-train's parameter idx as the kind's state_dict keys: the f32 buffers of
 * sd_optim_param_bufs (any float dtype in the file, the parameter's shapes), or bitsandbytes'
 * AdamW8bit arrays (state1, state2 and, 8-bit, absmax1, absmax2: dtype exact, any shape of that
 * element count, as bnb keeps them). */
typedef struct exp_arr {
    const char *name;
    sd_st_dtype dtype;
    int exact;                  /* 1: bnb array (dtype exact, shape free) */
    int ndim;
    int64_t shape[SD_MAX_DIMS];
    int64_t numel;
    void *data;
} exp_arr;

#define MAX_EXP 6

static int expected(sd_optim *o, size_t idx, exp_arr out[MAX_EXP])
{
    int n = 0;
    if (o->cfg.kind == SD_OPTIM_ADAMW8BIT) {
        sd_bnb_state_array a[SD_BNB_MAX_ARRAYS];
        int na = sd_adamw8bit_arrays(&o->st8[idx], a);
        for (int j = 0; j < na; j++, n++) {
            memset(&out[n], 0, sizeof out[n]);
            out[n].name = a[j].name;
            out[n].dtype = a[j].dtype;
            out[n].exact = 1;
            out[n].numel = a[j].numel;
            out[n].data = a[j].data;
        }
        return n;
    }
    sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
    int nb = sd_optim_param_bufs(o, idx, bi);
    for (int j = 0; j < nb; j++, n++) {
        memset(&out[n], 0, sizeof out[n]);
        out[n].name = bi[j].name;
        out[n].dtype = SD_ST_F32;
        out[n].ndim = bi[j].ndim;
        memcpy(out[n].shape, bi[j].shape, sizeof bi[j].shape);
        out[n].numel = (int64_t)bi[j].n;
        out[n].data = bi[j].data;
    }
    return n;
}

/* bnb's dynamic quantisation maps stored with an 8-bit state: the codes mean qmap[code]·absmax, so
 * the file's map must be the one sd-train dequantises with (torch builds differ from it by an ulp
 * or two in some entries: optim8bit.h). */
static int check_qmap(const sd_ckpt *ck, const sd_ckpt_tensor *T, const char *path, int is_signed)
{
    const float *ours = is_signed ? sd_bnb_qmap_signed() : sd_bnb_qmap_unsigned();
    float f[SD_BNB_QMAP_SIZE];
    if (T->numel != SD_BNB_QMAP_SIZE || T->dtype != SD_ST_F32)
        return sd_err(SD_EFORMAT, "%s: %s is not a 256-entry float32 quantisation map", path, T->name);
    int rc = sd_ckpt_read(ck, T, SD_ST_F32, f, SD_BNB_QMAP_SIZE);
    for (int j = 0; j < SD_BNB_QMAP_SIZE && !rc; j++)
        if (!(fabsf(f[j] - ours[j]) <= 4e-7f * fabsf(ours[j])))
            rc = sd_err(SD_EINVAL, "%s: %s[%d] = %.9g is not bitsandbytes' dynamic map (%.9g)", path, T->name, j,
                        (double)f[j], (double)ours[j]);
    return rc;
}

typedef struct pstate {
    int present;
    int has_step;
    double step;
} pstate;

static int check_optimizer(const sd_ckpt *ck, const char *path, const sd_optim *o, const int *gperm,
                           const size_t *perm, pstate *ps)
{
    /* groups: count, the parameter indices (consecutive from group to group), initial LR, hyper-parameters */
    int ng = 0;
    char k[160];
    for (;; ng++) {
        snprintf(k, sizeof k, "param_groups.%d.lr", ng);
        if (!sd_ckpt_meta_get(ck, k)) break;
    }
    if (ng == 0) return sd_err(SD_EFORMAT, "%s: no param_groups (not an optimizer's state_dict)", path);
    if (ng != o->ngroups)
        return sd_err(SD_EINVAL, "%s: %d optimizer parameter groups, this run has %d (different learning-rate "
                      "options: --unet_lr, --text_encoder_lr, loraplus_*, block lr weights?)", path, ng, o->ngroups);
    size_t fstart = 0;
    for (int g = 0; g < ng; g++) {
        const sd_optim_group *G = &o->groups[gperm[g]];
        size_t cnt = 0;
        for (;; cnt++) {
            snprintf(k, sizeof k, "param_groups.%d.params.%zu", g, cnt);
            const char *s = sd_ckpt_meta_get(ck, k);
            if (!s) break;
            int64_t v;
            if (parse_int(s, &v) || v != (int64_t)(fstart + cnt))
                return sd_err(SD_EFORMAT, "%s: optimizer group %d lists parameter %s at position %zu, expected %zu", path,
                              g, s, cnt, fstart + cnt);
        }
        if (cnt != G->count)
            return sd_err(SD_EINVAL, "%s: optimizer group %d has %zu parameters, this run's group %s has %zu "
                          "(different network options?)", path, g, cnt, G->name, G->count);
        /* the group's LR before the schedule: initial_lr (set by the LR scheduler), else lr */
        snprintf(k, sizeof k, "param_groups.%d.initial_lr", g);
        const char *s = sd_ckpt_meta_get(ck, k);
        if (!s) {
            snprintf(k, sizeof k, "param_groups.%d.lr", g);
            s = sd_ckpt_meta_get(ck, k);
        }
        double lr;
        if (s && !strcmp(s, "None")) goto hyper;   /* Adafactor's relative step: no LR */
        if (parse_num(s, &lr)) return sd_err(SD_EFORMAT, "%s: optimizer group %d: bad lr %s", path, g, s);
        if (!(fabs(lr - G->lr) <= 1e-12 * fabs(G->lr)))
            return sd_err(SD_EINVAL, "%s: optimizer group %d (%s) has learning rate %s, this run %.17g (different "
                          "--learning_rate / --unet_lr / --text_encoder_lr?)", path, g, G->name, s, G->lr);
    hyper:
        fstart += G->count;
    }
    /* per-parameter state: exactly this kind's tensors, with the parameter's shapes */
    const char *kind = sd_optim_kind_name(o->cfg.kind);
    for (size_t t = 0; t < sd_ckpt_count(ck); t++) {
        const sd_ckpt_tensor *T = sd_ckpt_at(ck, t);
        const char *key;
        int64_t i = state_index(T->name, &key);
        if (i < 0) return sd_err(SD_EFORMAT, "%s: unexpected tensor %s", path, T->name);
        if ((uint64_t)i >= o->nparams)
            return sd_err(SD_EINVAL, "%s: state for parameter %lld, this run's optimizer has %zu parameters", path,
                          (long long)i, o->nparams);
        const sd_param *p = o->params[perm[i]].p;
        if (!strcmp(key, "step")) {
            if (T->numel != 1 || (!sd_st_dtype_is_float(T->dtype) && T->dtype != SD_ST_I64 && T->dtype != SD_ST_I32))
                return sd_err(SD_EFORMAT, "%s: %s is not a scalar", path, T->name);
            ps[i].has_step = 1;
            ps[i].present = 1;
            continue;
        }
        if (o->cfg.kind == SD_OPTIM_ADAFACTOR && !strcmp(key, "RMS")) continue;   /* recomputed each step */
        if (o->cfg.kind == SD_OPTIM_ADAMW8BIT && (!strcmp(key, "qmap1") || !strcmp(key, "qmap2")) &&
            o->st8[perm[i]].nblocks > 0) {   /* 8-bit mode */
            int rc = check_qmap(ck, T, path, key[4] == '1');
            if (rc) return rc;
            continue;
        }
        exp_arr ea[MAX_EXP];
        int nb = expected((sd_optim *)o, perm[i], ea), j;
        for (j = 0; j < nb && strcmp(ea[j].name, key); j++) {}
        if (j == nb)
            return sd_err(SD_EINVAL, "%s: parameter %lld (%s) has state '%s', which %s does not keep (the kohya run used "
                          "another --optimizer_type%s?)", path, (long long)i, p->key, key, kind,
                          o->cfg.kind == SD_OPTIM_ADAMW8BIT ? ", or another min_8bit_size" : "");
        if (ea[j].exact) {
            if (T->dtype != ea[j].dtype)
                return sd_err(SD_EINVAL, "%s: state %lld.%s is %s, this run keeps it as %s (%s state: another "
                              "min_8bit_size?)", path, (long long)i, key, sd_st_dtype_name(T->dtype),
                              sd_st_dtype_name(ea[j].dtype), ea[j].dtype == SD_ST_U8 ? "8-bit" : "32-bit");
            if (T->numel != ea[j].numel)
                return sd_err(SD_EINVAL, "%s: state %lld.%s has %lld elements, this run's parameter %lld (%s) needs %lld "
                              "(%s)", path, (long long)i, key, (long long)T->numel, (long long)i, p->key,
                              (long long)ea[j].numel, !strncmp(key, "absmax", 6) ? "bitsandbytes before 0.44 used "
                              "2048-element blocks, sd-train 256" : "a different network, or parameters in another order");
        } else {
            int same = T->ndim == ea[j].ndim;
            for (int d = 0; same && d < T->ndim; d++) same = T->shape[d] == ea[j].shape[d];
            if (!same) {
                char a[96], b[96];
                sd_st_shape_str(T->ndim, T->shape, a, sizeof a);
                sd_st_shape_str(ea[j].ndim, ea[j].shape, b, sizeof b);
                return sd_err(SD_EINVAL, "%s: state %lld.%s is %s, this run's parameter %lld (%s) needs %s (a different "
                              "network, or parameters in another order)", path, (long long)i, key, a, (long long)i, p->key, b);
            }
            if (!sd_st_dtype_is_float(T->dtype)) return sd_err(SD_EFORMAT, "%s: %s is not floating point", path, T->name);
        }
        ps[i].present = 1;
    }
    for (size_t m = 0; m < sd_ckpt_meta_count(ck); m++) {
        const char *mk, *mv, *key;
        sd_ckpt_meta_at(ck, m, &mk, &mv);
        int64_t i = state_index(mk, &key);
        if (i < 0) continue;
        if ((uint64_t)i >= o->nparams)
            return sd_err(SD_EINVAL, "%s: state for parameter %lld, this run's optimizer has %zu parameters", path,
                          (long long)i, o->nparams);
        if (strcmp(key, "step") || parse_num(mv, &ps[i].step) || ps[i].step < 0)
            return sd_err(SD_EINVAL, "%s: parameter %lld (%s) has state '%s' = %s, which %s does not keep (the kohya "
                          "run used another --optimizer_type?)", path, (long long)i, o->params[perm[i]].p->key, key, mv, kind);
        ps[i].has_step = 1;
        ps[i].present = 1;
    }
    /* the groups' hyper-parameters (after the state keys, which tell another optimizer kind first) */
    for (int g = 0; g < ng; g++) {
        int rc = check_hyper(ck, path, o, g, gperm[g]);
        if (rc) return rc;
    }
    /* a parameter with state has all of it */
    for (size_t i = 0; i < o->nparams; i++) {
        if (!ps[i].present) continue;
        exp_arr ea[MAX_EXP];
        int nb = expected((sd_optim *)o, perm[i], ea);
        for (int j = 0; j < nb; j++) {
            snprintf(k, sizeof k, "state.%zu.%s", i, ea[j].name);
            if (!sd_ckpt_find(ck, k))
                return sd_err(SD_EINVAL, "%s: parameter %zu (%s) has no '%s' state (%s keeps it; the kohya run used "
                              "another --optimizer_type%s?)", path, i, o->params[perm[i]].p->key, ea[j].name, kind,
                              o->cfg.kind == SD_OPTIM_ADAMW8BIT ? ", or another min_8bit_size" : "");
        }
        if ((o->cfg.kind == SD_OPTIM_ADAMW || o->cfg.kind == SD_OPTIM_ADAFACTOR || o->cfg.kind == SD_OPTIM_ADAMW8BIT) &&
            !ps[i].has_step)
            return sd_err(SD_EFORMAT, "%s: parameter %zu has no step", path, i);
    }
    return SD_OK;
}

static int load_optimizer(const sd_ckpt *ck, sd_optim *o, const size_t *perm, pstate *ps)
{
    char k[160];
    for (size_t i = 0; i < o->nparams; i++) {
        sd_optim_param *q = &o->params[perm[i]];
        exp_arr ea[MAX_EXP];
        int nb = expected(o, perm[i], ea);
        if (!ps[i].present) {   /* no state yet: as a fresh parameter */
            for (int j = 0; j < nb; j++) memset(ea[j].data, 0, (size_t)ea[j].numel * sd_st_dtype_size(ea[j].dtype));
            q->step = 0;
            q->initialized = 0;
            continue;
        }
        for (int j = 0; j < nb; j++) {
            snprintf(k, sizeof k, "state.%zu.%s", i, ea[j].name);
            int rc = sd_ckpt_read(ck, sd_ckpt_find(ck, k), ea[j].dtype, ea[j].data, (size_t)ea[j].numel);
            if (rc) return rc;
        }
        snprintf(k, sizeof k, "state.%zu.step", i);
        const sd_ckpt_tensor *T = sd_ckpt_find(ck, k);
        double step = ps[i].step;
        if (T) {
            float f;
            int64_t v;
            int rc = sd_st_dtype_is_float(T->dtype) ? sd_ckpt_read(ck, T, SD_ST_F32, &f, 1)
                                                    : sd_ckpt_read(ck, T, SD_ST_I64, &v, 1);
            if (rc) return rc;
            step = sd_st_dtype_is_float(T->dtype) ? (double)f : (double)v;
        }
        if (!(step >= 0 && step < 9e15) || step != floor(step))
            return sd_err(SD_EFORMAT, "%s: %s = %g is not a step count", sd_ckpt_name(ck), k, step);
        q->step = (int64_t)step;
        q->initialized = 1;
    }
    return SD_OK;
}

/* ---- the whole folder ---------------------------------------------------------------------------- */

int sd_train_state_load_kohya(const char *dir, const sd_lora_ref *mods, size_t nmods, sd_optim *opt,
                              sd_kohya_state *out)
{
    memset(out, 0, sizeof *out);
    out->current_epoch = -1;
    out->last_epoch = -1;
    struct stat st;
    if (stat(dir, &st) != 0) return sd_err(SD_ENOTFOUND, "cannot resume from %s: %s", dir, strerror(errno));
    if (!kind_read(opt->cfg.kind))
        return sd_err(SD_EUNSUPPORTED, "cannot resume from %s: optimizer.bin of a kohya-ss state is read for AdamW, "
                      "AdamW8bit, Lion, SGDNesterov and Adafactor; this run uses %s", dir, sd_optim_kind_name(opt->cfg.kind));
    int rc = read_train_state(dir, out);
    if (!rc) rc = read_scheduler(dir, out);
    out->has_rng = exists_in(dir, "random_states_0.pkl");
    out->has_scaler = exists_in(dir, "scaler.pt");
    char *op = join(dir, "optimizer.bin");
    sd_ckpt *ck = NULL;
    pstate *ps = calloc(opt->nparams + 1, sizeof *ps);
    size_t *perm = calloc(opt->nparams + 1, sizeof *perm);
    int *gperm = calloc((size_t)opt->ngroups + 1, sizeof *gperm);
    model_file mf = { 0 };
    if (!op || !ps || !perm || !gperm) rc = rc ? rc : sd_err(SD_ENOMEM, "out of memory");
    if (!rc && exists_in(dir, "optimizer_1.bin"))
        rc = sd_err(SD_EFORMAT, "cannot resume from %s: it holds more than one optimizer (optimizer_1.bin)", dir);
    if (!rc) {
        rc = sd_ckpt_open(op, &ck);
        if (rc == SD_ENOTFOUND)
            rc = sd_err(SD_ENOTFOUND, "cannot resume from %s: no optimizer.bin (the optimizer's state)", dir);
    }
    if (!rc) rc = kohya_order(opt, op, gperm, perm, &out->reordered);
    if (!rc) rc = check_optimizer(ck, op, opt, gperm, perm, ps);
    if (!rc) rc = open_model(dir, &mf);
    size_t loaded = 0;
    if (!rc) rc = sd_lora_file_load(mf.st, mods, nmods, 0, &loaded);   /* checks everything, then reads */
    if (!rc) rc = load_optimizer(ck, opt, perm, ps);
    close_model(&mf);
    sd_ckpt_close(ck);
    free(ps);
    free(perm);
    free(gperm);
    free(op);
    return rc;
}
