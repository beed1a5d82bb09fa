/* DyLoRA rows, their optimizer groups and the per-step copies (see dylora.h). */
#include "train/dylora.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "train/lora_file.h"
#include "train/pyfmt.h"

/* the last value of `key` among the items (a dict: last wins), NULL when absent */
static const char *arg_value(const char *const *items, int n, const char *key)
{
    const char *v = NULL;
    for (int i = 0; i < n; i++) {
        char k[64];
        const char *val;
        if (sd_py_split_kv(items[i], k, sizeof k, &val)) continue;
        if (!strcmp(k, key)) v = val;
    }
    return v;
}

/* int(s) of Python: optional spaces and sign, digits only */
static int parse_int(const char *s, int *out)
{
    while (isspace((unsigned char)*s)) s++;
    char *end;
    if (!*s || !(isdigit((unsigned char)*s) || ((*s == '+' || *s == '-') && isdigit((unsigned char)s[1])))) return -1;
    long v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end)) end++;
    if (*end || v > 1 << 20 || v < -(1 << 20)) return -1;
    *out = (int)v;
    return 0;
}

int sd_dylora_args_parse(sd_lora_net_args *a, int *unit, int network_dim, double network_alpha,
                         const char *const *items, int n)
{
    static const char *const unsupported[] = { "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas",
                                               "down_lr_weight", "mid_lr_weight", "up_lr_weight",
                                               "block_lr_zero_threshold", "rank_dropout", "module_dropout", "dropout" };
    for (size_t k = 0; k < sizeof unsupported / sizeof *unsupported; k++)
        if (arg_value(items, n, unsupported[k]))
            return sd_err(SD_EUSAGE, "--network_args %s: not supported by networks.dylora (dylora.py has no %s)",
                          unsupported[k], unsupported[k]);
    /* conv_dim, conv_alpha and the LoRA+ ratios as networks.lora reads them */
    int rc = sd_lora_net_args_parse(a, 0, network_dim, network_alpha, items, n);
    if (rc) return rc;
    *unit = 1;
    const char *u = arg_value(items, n, "unit");
    if (u && (parse_int(u, unit) || *unit < 1))
        return sd_err(SD_EUSAGE, "--network_args unit=%s: expected a whole number >= 1", u);
    if (a->network_dim % *unit)
        return sd_err(SD_EUSAGE, "--network_args unit=%d: rank must be a multiple of unit (--network_dim %d)", *unit,
                      a->network_dim);
    if (a->conv_dim > 0 && a->conv_dim != a->network_dim)
        return sd_err(SD_EUSAGE, "--network_args conv_dim=%d: conv_dim must be same as network_dim (%d) for "
                      "networks.dylora", a->conv_dim, a->network_dim);
    const char *ca = arg_value(items, n, "conv_alpha");
    if (ca && a->conv_dim > 0 && a->conv_alpha != a->network_alpha)
        return sd_err(SD_EUSAGE, "--network_args conv_alpha=%s: networks.dylora gives the 3x3 conv modules "
                      "network_alpha (%g), not conv_alpha: leave conv_alpha out or set it to network_alpha", ca,
                      a->network_alpha);
    a->conv_alpha = a->network_alpha;
    /* "unit" is ours: not an unknown key */
    int k = 0;
    for (int i = 0; i < a->nunknown; i++)
        if (strcmp(a->unknown[i], "unit")) memmove(a->unknown[k++], a->unknown[i], sizeof a->unknown[i]);
    a->nunknown = k;
    return SD_OK;
}

void sd_dylora_free(sd_dylora *d)
{
    if (!d) return;
    sd_params_free(&d->rows);
    free(d->first);
    free(d->touched);
    free(d->toff);
    free(d->row_mod);
    free(d->row_j);
    free(d->skip);
    memset(d, 0, sizeof *d);
}

static int is_k3(const sd_lora *l) { return l->kh > 1 || l->kw > 1; }

int sd_dylora_init(sd_dylora *d, sd_lora_network *net, int unit)
{
    memset(d, 0, sizeof *d);
    sd_params_init(&d->rows);
    d->nmods = net->n;
    d->first = calloc(net->n + 1, sizeof *d->first);
    d->toff = calloc(net->n + 1, sizeof *d->toff);
    size_t nrows = 0;
    for (size_t m = 0; m < net->n; m++) nrows += (size_t)net->mods[m].rank;
    d->touched = calloc(nrows + 1, 1);
    d->row_mod = calloc(2 * nrows + 1, sizeof *d->row_mod);
    d->row_j = calloc(2 * nrows + 1, sizeof *d->row_j);
    if (!d->first || !d->toff || !d->touched || !d->row_mod || !d->row_j) {
        sd_dylora_free(d);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    int rc = SD_OK;
    size_t off = 0;
    for (size_t m = 0; m < net->n && !rc; m++) {
        sd_lora *l = &net->mods[m];
        if (l->rank % unit) {
            rc = sd_err(SD_EUSAGE, "DyLoRA module %s: rank %d is not a multiple of unit %d", net->names[m], l->rank, unit);
            break;
        }
        l->dy_unit = unit;
        l->dy_touched = d->touched + off;
        d->toff[m] = off;
        d->first[m] = sd_params_count(&d->rows);
        for (int ab = 0; ab < 2 && !rc; ab++) {
            for (int j = 0; j < l->rank && !rc; j++) {
                char pre[300], nm[32];
                snprintf(pre, sizeof pre, "%s.lora_%c", net->names[m], ab ? 'B' : 'A');
                snprintf(nm, sizeof nm, "%d", j);
                int64_t sa[4] = { 1, l->in, l->kh, l->kw }, sb[4] = { l->out, 1, 1, 1 };
                size_t idx = sd_params_count(&d->rows);
                rc = sd_params_add(&d->rows, pre, nm, is_k3(l) ? 4 : 2, ab ? sb : sa, SD_PARAM_TRAINABLE, NULL);
                d->row_mod[idx] = (uint32_t)m;
                d->row_j[idx] = (uint32_t)j;
            }
        }
        off += (size_t)l->rank;
    }
    if (!rc) rc = sd_params_alloc(&d->rows, SD_DEV_CPU);
    if (!rc) rc = sd_dylora_to_rows(d, net, 0);
    if (rc) {
        for (size_t m = 0; m < net->n; m++) net->mods[m].dy_unit = 0, net->mods[m].dy_touched = NULL;
        sd_dylora_free(d);
    }
    return rc;
}

/* copy between module m's contiguous weights (down [r, K], up [out, r]) and its rows */
static int copy_rows(const sd_dylora *d, const sd_lora_network *net, size_t m, int grads, int to_rows)
{
    const sd_lora *l = &net->mods[m];
    const sd_tensor *dt = grads ? &l->down->grad : &l->down->value, *ut = grads ? &l->up->grad : &l->up->value;
    if (!dt->data || !ut->data) return SD_OK;   /* frozen: no gradients */
    if (dt->device != SD_DEV_CPU || ut->device != SD_DEV_CPU || dt->dtype != SD_F32 || ut->dtype != SD_F32)
        return sd_err(SD_ESTATE, "DyLoRA %s: weights not on the host as f32", net->names[m]);
    float *down = dt->data, *up = ut->data;
    const int64_t r = l->rank, K = sd_tensor_numel(dt) / r, out = l->out;
    for (int64_t j = 0; j < r; j++) {
        sd_param *pa = sd_params_at(&d->rows, d->first[m] + (size_t)j);
        sd_param *pb = sd_params_at(&d->rows, d->first[m] + (size_t)(r + j));
        float *a = grads ? pa->grad.data : pa->value.data, *b = grads ? pb->grad.data : pb->value.data;
        if (to_rows) {
            memcpy(a, down + j * K, (size_t)K * sizeof(float));
            for (int64_t o = 0; o < out; o++) b[o] = up[o * r + j];
        } else {
            memcpy(down + j * K, a, (size_t)K * sizeof(float));
            for (int64_t o = 0; o < out; o++) up[o * r + j] = b[o];
        }
    }
    return SD_OK;
}

int sd_dylora_to_rows(sd_dylora *d, const sd_lora_network *net, int grads)
{
    int rc = SD_OK;
    for (size_t m = 0; m < d->nmods && !rc; m++) {
        rc = copy_rows(d, net, m, 0, 1);
        if (!rc && grads) rc = copy_rows(d, net, m, 1, 1);
    }
    return rc;
}

int sd_dylora_from_rows(const sd_dylora *d, sd_lora_network *net)
{
    int rc = SD_OK;
    for (size_t m = 0; m < d->nmods && !rc; m++) rc = copy_rows(d, net, m, 0, 0);
    return rc;
}

const uint8_t *sd_dylora_skip_mask(sd_dylora *d, const sd_optim *o)
{
    if (o->nparams > d->nskip) {
        uint8_t *s = realloc(d->skip, o->nparams);
        if (!s) return NULL;
        d->skip = s;
        d->nskip = o->nparams;
    }
    for (size_t i = 0; i < o->nparams; i++) {
        const sd_param *p = o->params[i].p;
        size_t idx = p->index;
        int ours = idx < sd_params_count(&d->rows) && sd_params_at(&d->rows, idx) == p;
        d->skip[i] = ours ? !d->touched[d->toff[d->row_mod[idx]] + d->row_j[idx]] : 0;
    }
    return d->skip;
}

void sd_dylora_clear_touched(sd_dylora *d)
{
    if (!d->nmods) return;
    size_t last = d->nmods - 1;   /* the rows of all modules: the last one's offset + its rank */
    memset(d->touched, 0, d->toff[last] + (sd_params_count(&d->rows) - d->first[last]) / 2);
}

/* ---- optimizer groups ---------------------------------------------------------------------------- */

static void assemble(const sd_dylora *d, const sd_lora_network *net, int te, double lr, double ratio, const char *desc,
                     sd_lora_groups *g, size_t *used)
{
    for (int plus = 0; plus < 2; plus++) {
        if (plus && !(ratio > 0)) break;
        double glr = plus ? lr * ratio : lr;
        size_t first = *used;
        for (size_t m = 0; m < net->n; m++) {
            if (!!net->is_te[m] != te) continue;
            int r = net->mods[m].rank;
            for (int ab = 0; ab < 2; ab++) {
                if (ratio > 0 && ab != plus) continue;   /* LoRA+: lora_B rows in the plus group */
                for (int j = 0; j < r; j++) g->params[(*used)++] = sd_params_at(&d->rows, d->first[m] + (size_t)(ab * r + j));
            }
        }
        size_t cnt = *used - first;
        if (cnt == 0) continue;
        if (glr == 0 || isnan(glr)) { *used = first; continue; }
        int k = g->n++;
        snprintf(g->names[k], 64, "%s%s", desc, plus ? " plus" : "");
        g->desc[k].name = g->names[k];
        g->desc[k].lr = glr;
        g->desc[k].params = g->params + first;
        g->desc[k].count = cnt;
    }
}

int sd_dylora_param_groups(const sd_dylora *d, const sd_lora_net_args *a, const sd_lora_network *net,
                           double text_encoder_lr, double unet_lr, double default_lr, sd_lora_groups *g)
{
    memset(g, 0, sizeof *g);
    g->desc = calloc(4, sizeof *g->desc);
    g->names = calloc(4, sizeof *g->names);
    g->params = calloc(sd_params_count(&d->rows) + 1, sizeof *g->params);
    if (!g->desc || !g->names || !g->params) {
        sd_lora_groups_free(g);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    double te_ratio = a->loraplus_text_encoder_lr_ratio > 0 ? a->loraplus_text_encoder_lr_ratio : a->loraplus_lr_ratio;
    double un_ratio = a->loraplus_unet_lr_ratio > 0 ? a->loraplus_unet_lr_ratio : a->loraplus_lr_ratio;
    size_t used = 0;
    if (net->n_te) assemble(d, net, 1, isnan(text_encoder_lr) ? default_lr : text_encoder_lr, te_ratio, "textencoder", g, &used);
    if (net->n_unet) assemble(d, net, 0, isnan(unet_lr) ? default_lr : unet_lr, un_ratio, "unet", g, &used);
    return SD_OK;
}

/* ---- extract_lora_from_dylora.py ------------------------------------------------------------------ */

static int split_one(const sd_safetensors *st, const char *out, int rank, int64_t max_rank, uint8_t **bufs)
{
    sd_safetensors_writer *w = NULL;
    int rc = sd_safetensors_writer_new(&w);
    const size_t nt = sd_safetensors_count(st);
    for (size_t i = 0; i < nt && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        int64_t shape[SD_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        const size_t es = sd_st_dtype_size(t->dtype);
        const void *data = t->data;
        if (strstr(t->name, "lora_down") && t->ndim >= 1 && shape[0] > rank) {
            shape[0] = rank;   /* value[:rank]: a prefix */
        } else if (strstr(t->name, "lora_up") && t->ndim >= 2 && shape[1] > rank) {
            /* value[:, :rank].contiguous() */
            int64_t inner = 1;
            for (int d = 2; d < t->ndim; d++) inner *= shape[d];
            const size_t src_row = (size_t)(shape[1] * inner) * es, dst_row = (size_t)(rank * inner) * es;
            uint8_t *b = malloc(dst_row * (size_t)shape[0] + 1);
            if (!b) {
                rc = sd_err(SD_ENOMEM, "out of memory");
                break;
            }
            for (int64_t o = 0; o < shape[0]; o++) memcpy(b + (size_t)o * dst_row, (const uint8_t *)t->data + (size_t)o * src_row, dst_row);
            bufs[i] = b;
            data = b;
            shape[1] = rank;
        }
        rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, shape, data);
    }
    const char *oc = sd_safetensors_meta_get(st, "ss_training_comment");
    size_t cl = (oc ? strlen(oc) : 0) + 96;
    char *comment = rc ? NULL : malloc(cl);
    if (!rc && !comment) rc = sd_err(SD_ENOMEM, "out of memory");
    char dim[24];
    snprintf(dim, sizeof dim, "%d", rank);
    if (!rc) snprintf(comment, cl, "split from DyLoRA, rank %lld to %d; %s", (long long)max_rank, rank, oc ? oc : "");
    const size_t nm = sd_safetensors_meta_count(st);
    for (size_t j = 0; j < nm && !rc; j++) {
        const char *key, *val;
        sd_safetensors_meta_at(st, j, &key, &val);
        if (!strcmp(key, "ss_training_comment")) val = comment;
        else if (!strcmp(key, "ss_network_dim")) val = dim;
        rc = sd_safetensors_writer_set_meta(w, key, val);
    }
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "ss_training_comment", comment);
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "ss_network_dim", dim);
    if (!rc) rc = sd_lora_writer_add_hashes(w, out);
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    free(comment);
    sd_safetensors_writer_free(w);
    for (size_t i = 0; i < nt; i++) free(bufs[i]), bufs[i] = NULL;
    return rc;
}

int sd_dylora_split(const char *src, const char *save_to, int unit, int *nfiles)
{
    if (nfiles) *nfiles = 0;
    if (unit < 1) return sd_err(SD_EUSAGE, "unit %d: must be >= 1", unit);
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(src, &st);
    if (rc) return rc;
    int64_t max_rank = 0;
    const size_t nt = sd_safetensors_count(st);
    for (size_t i = 0; i < nt; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (strstr(t->name, "lora_down") && t->ndim >= 1 && t->shape[0] > max_rank) max_rank = t->shape[0];
    }
    if (!max_rank) {
        sd_safetensors_close(st);
        return sd_err(SD_EFORMAT, "%s: no lora_down tensors (not a LoRA file)", src);
    }
    /* splitext: the extension is the last dot of the last path component (not a leading one) */
    const char *slash = strrchr(save_to, '/'), *bn = slash ? slash + 1 : save_to;
    while (*bn == '.') bn++;
    const char *dot = strrchr(bn, '.');
    size_t stem = dot ? (size_t)(dot - save_to) : strlen(save_to);
    const char *ext = dot ? dot : "";
    uint8_t **bufs = calloc(nt + 1, sizeof *bufs);
    char *out = malloc(strlen(save_to) + 32);
    if (!bufs || !out) rc = sd_err(SD_ENOMEM, "out of memory");
    int n = 0;
    for (int64_t rank = unit; rank < max_rank && !rc; rank += unit) {
        snprintf(out, strlen(save_to) + 32, "%.*s-%04d%s", (int)stem, save_to, (int)rank, ext);
        rc = split_one(st, out, (int)rank, max_rank, bufs);
        if (!rc) n++;
    }
    if (nfiles) *nfiles = n;
    free(out);
    free(bufs);
    sd_safetensors_close(st);
    return rc;
}
