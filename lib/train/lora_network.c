/* LoRA network attached to the models (see lora_network.h). */
#include "train/lora_network.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

typedef sd_lora_candidate cand;

typedef struct cands {
    cand *v;
    size_t n, cap;
    const sd_lora_network_opts *o;
    const char *te_prefix;    /* "lora_te", SDXL "lora_te1" / "lora_te2" */
    int err;
} cands;

static int push(cands *c, const cand *x)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        cand *q = realloc(c->v, cap * sizeof *q);
        if (!q) return sd_err(SD_ENOMEM, "out of memory");
        c->v = q;
        c->cap = cap;
    }
    c->v[c->n++] = *x;
    return SD_OK;
}

static unsigned lyco_targets(const sd_lora_network_opts *o) { return o->lyco_targets ? o->lyco_targets : SD_LYCO_T_FULL; }

/* lycoris.kohya's create_single_module: linears and 1×1 convs at network_dim / network_alpha, k×k convs at
   conv_dim / conv_alpha when the preset enables convs (else conv_lora_dim = 0: none) */
static int lyco_plan(const sd_lora_network_opts *o, const char *name, sd_lora_target tg, int k3, int *dim, double *alpha)
{
    if (o->from_file) return sd_lora_net_plan(o->args, name, tg, k3, o->from_file, dim, alpha);
    *dim = 0;
    *alpha = 0;
    if (!k3) {
        *dim = o->args->network_dim;
        *alpha = o->args->network_alpha;
    } else if ((lyco_targets(o) & SD_LYCO_T_CONV) && o->args->conv_dim > 0) {
        *dim = o->args->conv_dim;
        *alpha = o->args->conv_alpha;
    }
    return *dim > 0;
}

static int te_cb(void *user, const char *name, sd_linear *l)
{
    cands *c = user;
    cand x;
    memset(&x, 0, sizeof x);
    int rc = sd_lora_kohya_name(c->te_prefix, name, x.name, sizeof x.name);
    if (rc) return rc;
    if (c->o->lycoris) {
        unsigned t = lyco_targets(c->o);
        int attn = strstr(name, ".self_attn.") != NULL, mlp = strstr(name, ".mlp.") != NULL;
        if (!((attn && (t & SD_LYCO_T_TE_ATTN)) || (mlp && (t & SD_LYCO_T_TE_MLP)))) return 0;
        if (!lyco_plan(c->o, x.name, SD_LORA_TARGET_TE, 0, &x.dim, &x.alpha)) return 0;
    } else if (!sd_lora_net_plan(c->o->args, x.name, SD_LORA_TARGET_TE, 0, c->o->from_file, &x.dim, &x.alpha)) return 0;
    x.is_te = 1;
    x.lin = l;
    x.in = l->in;
    x.out = l->out;
    x.kh = x.kw = 1;
    return push(c, &x);
}

/* LyCORIS's UNET_TARGET_REPLACE_NAME (conv_in / conv_out, time_embedding.linear_1/_2 in the presets that name
   them), matched against the Diffusers module names of kohya's SD1/SD2 UNet; kohya's SDXL UNet keeps the ldm
   names (input_blocks.0.0, time_embed.0, out.2), which none of them matches. */
static int lycoris_named_target(const char *diffusers, unsigned t)
{
    if (!diffusers) return 0;
    if ((t & SD_LYCO_T_CONV_IO) && (!strcmp(diffusers, "conv_in") || !strcmp(diffusers, "conv_out"))) return 1;
    return (t & SD_LYCO_T_TIME_EMB) &&
           (!strcmp(diffusers, "time_embedding.linear_1") || !strcmp(diffusers, "time_embedding.linear_2"));
}

/* the preset's UNet module classes for a layer of role `role` */
static int lycoris_class_target(const sd_unet_layer *L, unsigned t)
{
    if (L->role == SD_UNET_ROLE_TRANSFORMER) {
        if (t & SD_LYCO_T_TRANSFORMER) return 1;
        const char *k = L->diffusers ? L->diffusers : L->key;
        return (t & SD_LYCO_T_UNET_ATTN) && k && (strstr(k, ".attn1.") || strstr(k, ".attn2."));
    }
    if (L->role == SD_UNET_ROLE_RESBLOCK) return (t & SD_LYCO_T_RESNET) != 0;
    if (L->role == SD_UNET_ROLE_SAMPLER) return (t & SD_LYCO_T_SAMPLER) != 0;
    return 0;
}

int sd_lora_network_candidates(sd_unet *u, sd_clip *te, const sd_lora_network_opts *o, sd_lora_candidate **v,
                               size_t *n, size_t *n_te)
{
    *v = NULL;
    *n = *n_te = 0;
    cands c = { .o = o };
    int rc = SD_OK;
    /* text encoder(s) first (the reference's module order: text encoder(s), then UNet) */
    if (te && o->with_te) {
        c.te_prefix = o->sdxl ? "lora_te1" : "lora_te";
        rc = sd_clip_each_linear(te, te_cb, &c);
        if (rc < 0) goto fail_walk;
        rc = SD_OK;
    }
    if (o->sdxl && o->te2 && o->with_te) {
        c.te_prefix = "lora_te2";
        rc = sd_clip_each_linear(o->te2, te_cb, &c);
        if (rc < 0) goto fail_walk;
        rc = SD_OK;
    }
    size_t nte = c.n;
    if (u && o->with_unet) {
        for (size_t i = 0; i < sd_unet_layer_count(u); i++) {
            const sd_unet_layer *L = sd_unet_layer_at(u, i);
            sd_lora_target tg;
            if (o->lycoris && !lycoris_class_target(L, lyco_targets(o)) &&
                !(!o->sdxl && lycoris_named_target(L->diffusers, lyco_targets(o))))
                continue;
            if (L->role == SD_UNET_ROLE_TRANSFORMER) tg = SD_LORA_TARGET_TRANSFORMER;
            else if (L->role == SD_UNET_ROLE_RESBLOCK || L->role == SD_UNET_ROLE_SAMPLER) tg = SD_LORA_TARGET_RESBLOCK;
            else if (o->lycoris) tg = SD_LORA_TARGET_RESBLOCK;
            else continue;
            cand x;
            memset(&x, 0, sizeof x);
            /* SD1/SD2: Diffusers names; SDXL: kohya's sdxl_original_unet keeps the ldm names */
            rc = sd_lora_kohya_name("lora_unet", o->sdxl ? L->key : L->diffusers, x.name, sizeof x.name);
            if (rc) goto fail_walk;
            int k3 = L->kh > 1 || L->kw > 1;
            if (o->lycoris ? !lyco_plan(o, x.name, tg, k3, &x.dim, &x.alpha)
                           : !sd_lora_net_plan(o->args, x.name, tg, k3, o->from_file, &x.dim, &x.alpha))
                continue;
            x.lin = L->linear;
            x.conv = L->conv;
            x.in = L->in;
            x.out = L->out;
            x.kh = L->kh;
            x.kw = L->kw;
            x.conv1x1 = L->conv1x1;
            x.conv_host = L->conv != NULL;
            rc = push(&c, &x);
            if (rc) goto fail_walk;
        }
    }
    *v = c.v;
    *n = c.n;
    *n_te = nte;
    return SD_OK;
fail_walk:
    free(c.v);
    return rc;
}

int sd_lora_network_build(sd_lora_network *net, sd_ctx *ctx, sd_unet *u, sd_clip *te,
                          const sd_lora_network_opts *o)
{
    memset(net, 0, sizeof *net);
    sd_params_init(&net->reg);
    net->rt.seed = o->seed;
    cands c = { .o = o };
    size_t nte = 0;
    int rc = sd_lora_network_candidates(u, te, o, &c.v, &c.n, &nte);
    if (rc) {
        sd_lora_network_free(net);
        return rc;
    }
    if (!c.n) {
        rc = sd_err(SD_EINVAL, "the LoRA network has no modules (nothing to train: check --network_args, "
                               "--network_train_unet_only / --network_train_text_encoder_only)");
        goto fail;
    }
    net->n = c.n;
    net->n_te = nte;
    net->n_unet = c.n - nte;
    net->mods = calloc(c.n, sizeof *net->mods);
    net->names = calloc(c.n, sizeof *net->names);
    net->is_te = calloc(c.n, sizeof *net->is_te);
    net->refs = calloc(c.n, sizeof *net->refs);
    net->host_lin = calloc(c.n, sizeof *net->host_lin);
    net->host_conv = calloc(c.n, sizeof *net->host_conv);
    if (!net->mods || !net->names || !net->is_te || !net->refs || !net->host_lin || !net->host_conv) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < c.n; i++) {
        cand *x = &c.v[i];
        net->names[i] = strdup(x->name);
        if (!net->names[i]) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            goto fail;
        }
        sd_conv2d_geom g;
        memset(&g, 0, sizeof g);
        if (x->conv_host) g = x->conv->g;
        if (o->rs_lora) x->alpha = (x->alpha == 0 ? x->dim : x->alpha) * sqrt((double)x->dim);
        rc = o->tucker && x->conv_host && (x->kh > 1 || x->kw > 1)
                 ? sd_lora_init_tucker(&net->mods[i], &net->reg, x->name, x->in, x->out, x->dim, (float)x->alpha, x->kh,
                                       x->kw, g)
                 : sd_lora_init(&net->mods[i], &net->reg, x->name, x->in, x->out, x->dim, (float)x->alpha,
                                x->conv_host, x->kh, x->kw, g, x->conv1x1);
        if (rc) goto fail;
        sd_lora *l = &net->mods[i];
        l->id = (uint32_t)i;
        l->rt = &net->rt;
        l->dropout = (float)o->network_dropout;
        l->rank_dropout = (float)o->args->rank_dropout;
        l->module_dropout = (float)o->args->module_dropout;
        l->lyco_drop = o->lyco_drop;
        net->is_te[i] = x->is_te;
        net->refs[i].name = net->names[i];
        net->refs[i].lora = l;
        if (o->fa) l->down->flags &= ~(unsigned)SD_PARAM_TRAINABLE;   /* LoRA-FA: only lora_up trains */
    }
    rc = sd_params_alloc(&net->reg, SD_DEV_CPU);
    if (rc) goto fail;
    for (size_t i = 0; i < c.n; i++) {
        rc = o->fa ? sd_lora_init_weights_fa(ctx, &net->mods[i], o->seed)
                   : sd_lora_init_weights(ctx, &net->mods[i], o->seed);
        if (rc) goto fail;
    }
    for (size_t i = 0; i < c.n; i++) {
        cand *x = &c.v[i];
        if (x->conv_host) {
            rc = sd_conv2d_set_lora(x->conv, &net->mods[i]);
            net->host_conv[i] = x->conv;
        } else {
            rc = sd_linear_set_lora(x->lin, &net->mods[i]);
            net->host_lin[i] = x->lin;
        }
        if (rc) goto fail;
    }
    free(c.v);
    return SD_OK;
fail:
    free(c.v);
    sd_lora_network_free(net);
    return rc ? rc : sd_err(SD_ENOMEM, "out of memory");
}

int sd_lora_network_reinit_fa_down(sd_lora_network *net, sd_ctx *ctx, uint64_t seed)
{
    net->rt.seed = seed;
    for (size_t i = 0; i < net->n; i++) {
        int rc = sd_lora_init_down_fa(&net->mods[i], seed);
        if (rc) return rc;
    }
    return SD_OK;
}

void sd_lora_network_free(sd_lora_network *net)
{
    if (!net) return;
    for (size_t i = 0; i < net->n; i++) {
        if (net->host_lin && net->host_lin[i]) net->host_lin[i]->lora = NULL;
        if (net->host_conv && net->host_conv[i]) net->host_conv[i]->lora = NULL;
        if (net->mods) sd_lora_free(&net->mods[i]);
        if (net->names) free(net->names[i]);
    }
    free(net->mods);
    free(net->names);
    free(net->is_te);
    free(net->refs);
    free(net->host_lin);
    free(net->host_conv);
    sd_params_free(&net->reg);
    memset(net, 0, sizeof *net);
}

/* ---- SDXL UNet module names: SGM ↔ Diffusers -------------------------------------------------------- */

int sd_lora_sdxl_unet_name(const sd_unet *u, const char *name, int to_sgm, char *out, size_t n)
{
    char a[512];
    for (size_t i = 0; i < sd_unet_layer_count(u); i++) {
        const sd_unet_layer *L = sd_unet_layer_at(u, i);
        if (!L->diffusers || !L->key) continue;
        if (sd_lora_kohya_name("lora_unet", to_sgm ? L->diffusers : L->key, a, sizeof a)) continue;
        if (strcmp(a, name)) continue;
        int rc = sd_lora_kohya_name("lora_unet", to_sgm ? L->key : L->diffusers, out, n);
        return rc ? rc : 1;
    }
    return 0;
}

typedef struct name_pair {
    char diff[256], sgm[256];
} name_pair;

static int pair_cmp(const void *a, const void *b)
{
    return strcmp(((const name_pair *)a)->diff, ((const name_pair *)b)->diff);
}

int sd_lora_file_sdxl_to_sgm(sd_safetensors *st, const sd_unet *u, size_t *n_modules)
{
    if (n_modules) *n_modules = 0;
    const size_t nt = sd_safetensors_count(st), nl = sd_unet_layer_count(u);
    int any = 0;
    for (size_t i = 0; i < nt && !any; i++) any = !strncmp(sd_safetensors_at(st, i)->name, "lora_unet_", 10);
    if (!any) return SD_OK;
    name_pair *tab = calloc(nl ? nl : 1, sizeof *tab);
    const char **names = calloc(nt ? nt : 1, sizeof *names);
    char **owned = calloc(nt ? nt : 1, sizeof *owned);
    int rc = tab && names && owned ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    size_t m = 0, renamed = 0;
    for (size_t i = 0; i < nl && !rc; i++) {
        const sd_unet_layer *L = sd_unet_layer_at(u, i);
        if (!L->diffusers || !L->key) continue;
        if (sd_lora_kohya_name("lora_unet", L->diffusers, tab[m].diff, sizeof tab[m].diff) ||
            sd_lora_kohya_name("lora_unet", L->key, tab[m].sgm, sizeof tab[m].sgm))
            continue;
        m++;
    }
    if (!rc) qsort(tab, m, sizeof *tab, pair_cmp);
    for (size_t i = 0; i < nt && !rc; i++) {
        const char *tn = sd_safetensors_at(st, i)->name;
        if (strncmp(tn, "lora_unet_", 10)) continue;
        const char *dot = strchr(tn, '.');
        size_t ml = dot ? (size_t)(dot - tn) : strlen(tn);
        name_pair key;
        if (ml >= sizeof key.diff) continue;
        memcpy(key.diff, tn, ml);
        key.diff[ml] = 0;
        const name_pair *p = bsearch(&key, tab, m, sizeof *tab, pair_cmp);
        if (!p) continue;
        const char *suffix = tn + ml;
        size_t l = strlen(p->sgm) + strlen(suffix) + 1;
        if (!(owned[i] = malloc(l))) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        snprintf(owned[i], l, "%s%s", p->sgm, suffix);
        if (sd_safetensors_find(st, owned[i])) {
            rc = sd_err(SD_EFORMAT,
                        "%s: modules '%s' (Diffusers name) and '%s' (SGM name) are the same SDXL UNet layer",
                        sd_safetensors_path(st), p->diff, p->sgm);
            break;
        }
        names[i] = owned[i];
        if (!strcmp(suffix, ".lora_down.weight")) renamed++;
    }
    int had = 0;
    for (size_t i = 0; !rc && i < nt; i++) had |= names[i] != NULL;
    if (!rc && had) rc = sd_safetensors_rename(st, names);
    if (!rc && n_modules) *n_modules = renamed;
    for (size_t i = 0; owned && i < nt; i++) free(owned[i]);
    free(owned);
    free(names);
    free(tab);
    return rc;
}
