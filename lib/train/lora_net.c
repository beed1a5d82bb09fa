/* kohya LoRA network rules (see lora_net.h). */
#include "train/lora_net.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "train/pyfmt.h"

/* ---- --network_args --------------------------------------------------------------------------- */

/* Python float(s) / int(s) on a stripped token. */
static int py_float(const char *s, size_t n, double *out)
{
    char buf[64];
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (!n || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    double v = strtod(buf, &end);
    if (*end) return -1;
    *out = v;
    return 0;
}

static int py_int(const char *s, size_t n, int *out)
{
    char buf[32];
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (!n || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    const char *p = buf;
    if (*p == '+' || *p == '-') p++;
    if (!*p) return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    *out = (int)strtol(buf, NULL, 10);
    return 0;
}

/* Comma list: ints (is_int) or floats; empty entries → empty_val if allow_empty else error.
 * Returns the count or -1. */
static int parse_list(const char *s, int is_int, int allow_empty, double empty_val, double *vals, int max)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t L = c ? (size_t)(c - p) : strlen(p);
        if (n >= max) return -1;
        int blank = 1;
        for (size_t i = 0; i < L; i++) blank &= isspace((unsigned char)p[i]) != 0;
        if (L == 0 && allow_empty) vals[n] = empty_val;
        else if (blank && !allow_empty) return -1;
        else if (is_int) {
            int v;
            if (py_int(p, L, &v)) return -1;
            vals[n] = v;
        } else if (py_float(p, L, &vals[n])) return -1;
        n++;
        if (!c) break;
        p = c + 1;
    }
    return n;
}

/* down/up lr weight: a preset (no comma) or a list. */
static int lr_weight_list(const char *key, const char *s, int len, double *out, int *count)
{
    if (!strchr(s, ',')) {
        char name[32];
        const char *plus = strchr(s, '+');
        size_t L = plus ? (size_t)(plus - s) : strlen(s);
        double off = 0;
        if (plus && py_float(plus + 1, strlen(plus + 1), &off))
            return sd_err(SD_EUSAGE, "--network_args %s=%s: bad offset after '+'", key, s);
        if (L >= sizeof name) L = sizeof name - 1;
        memcpy(name, s, L);
        name[L] = 0;
        for (int i = 0; i < len; i++) {
            double x = (double)i / (double)(len - 1);
            int ri = len - 1 - i;
            double xr = (double)ri / (double)(len - 1);
            if (!strcmp(name, "cosine")) out[i] = sin(M_PI * xr / 2) + off;
            else if (!strcmp(name, "sine")) out[i] = sin(M_PI * x / 2) + off;
            else if (!strcmp(name, "linear")) out[i] = x + off;
            else if (!strcmp(name, "reverse_linear")) out[i] = xr + off;
            else if (!strcmp(name, "zeros")) out[i] = 0.0 + off;
            else
                return sd_err(SD_EUSAGE, "--network_args %s=%s: unknown lr_weight preset (cosine, sine, linear, "
                              "reverse_linear, zeros, optionally +offset, or a comma list)", key, s);
        }
        *count = len;
        return SD_OK;
    }
    double tmp[64];
    int n = parse_list(s, 0, 1, 0.0, tmp, 64);
    if (n < 0) return sd_err(SD_EUSAGE, "--network_args %s=%s: expected comma-separated numbers", key, s);
    for (int i = 0; i < len; i++) out[i] = i < n ? tmp[i] : 1.0;   /* truncated / padded with 1.0 */
    *count = len;
    return SD_OK;
}

int sd_lora_net_args_parse(sd_lora_net_args *a, int is_sdxl, int network_dim, double network_alpha,
                           const char *const *items, int n)
{
    memset(a, 0, sizeof *a);
    a->is_sdxl = is_sdxl;
    a->nblocks = is_sdxl ? 23 : 25;
    a->network_dim = network_dim > 0 ? network_dim : 4;
    a->network_alpha = isnan(network_alpha) ? 1.0 : network_alpha;
    const char *block_dims = NULL, *block_alphas = NULL, *conv_block_dims = NULL, *conv_block_alphas = NULL;
    const char *down_w = NULL, *mid_w = NULL, *up_w = NULL, *conv_dim = NULL, *conv_alpha = NULL;
    double zero_thr = 0;
    sd_py_kwargs kw;
    int rc0 = sd_py_kwargs_parse(&kw, items, n, "--network_args");
    if (rc0) return rc0;
    for (int i = 0; i < kw.n; i++) {
        const char *k = kw.key[i], *v = kw.val[i];
        double d;
        if (!strcmp(k, "conv_dim")) conv_dim = v;
        else if (!strcmp(k, "conv_alpha")) conv_alpha = v;
        else if (!strcmp(k, "block_dims")) block_dims = v;
        else if (!strcmp(k, "block_alphas")) block_alphas = v;
        else if (!strcmp(k, "conv_block_dims")) conv_block_dims = v;
        else if (!strcmp(k, "conv_block_alphas")) conv_block_alphas = v;
        else if (!strcmp(k, "down_lr_weight")) down_w = v;
        else if (!strcmp(k, "mid_lr_weight")) mid_w = v;
        else if (!strcmp(k, "up_lr_weight")) up_w = v;
        else if (!strcmp(k, "dropout")) { /* LyCORIS compatibility; ignored by networks.lora */ }
        else if (!strcmp(k, "block_lr_zero_threshold") || !strcmp(k, "rank_dropout") || !strcmp(k, "module_dropout") ||
                 !strcmp(k, "loraplus_lr_ratio") || !strcmp(k, "loraplus_unet_lr_ratio") ||
                 !strcmp(k, "loraplus_text_encoder_lr_ratio")) {
            if (py_float(v, strlen(v), &d)) return sd_err(SD_EUSAGE, "--network_args %s=%s: not a number", k, v);
            if (!strcmp(k, "block_lr_zero_threshold")) zero_thr = d;
            else if (!strcmp(k, "rank_dropout")) a->rank_dropout = d;
            else if (!strcmp(k, "module_dropout")) a->module_dropout = d;
            else if (!strcmp(k, "loraplus_lr_ratio")) a->loraplus_lr_ratio = d;
            else if (!strcmp(k, "loraplus_unet_lr_ratio")) a->loraplus_unet_lr_ratio = d;
            else a->loraplus_text_encoder_lr_ratio = d;
            if ((!strcmp(k, "rank_dropout") || !strcmp(k, "module_dropout")) && !(d >= 0 && d < 1))
                return sd_err(SD_EUSAGE, "--network_args %s=%s: must be in [0, 1)", k, v);
        } else if (a->nunknown < SD_LORA_MAX_UNKNOWN) {
            snprintf(a->unknown[a->nunknown++], 64, "%s", k);
        }
    }
    if (conv_dim) {
        if (py_int(conv_dim, strlen(conv_dim), &a->conv_dim) || a->conv_dim < 0)
            return sd_err(SD_EUSAGE, "--network_args conv_dim=%s: expected a whole number", conv_dim);
        a->conv_alpha = 1.0;
        if (conv_alpha && py_float(conv_alpha, strlen(conv_alpha), &a->conv_alpha))
            return sd_err(SD_EUSAGE, "--network_args conv_alpha=%s: not a number", conv_alpha);
    }
    /* block LR weights */
    const int nb = a->nblocks, half = is_sdxl ? 9 : 12, nmid = is_sdxl ? 3 : 1;
    if (down_w || mid_w || up_w) {
        double down[32], mid[4], up[32];
        int cnt;
        for (int i = 0; i < half; i++) down[i] = up[i] = 1.0;
        for (int i = 0; i < nmid; i++) mid[i] = 1.0;
        int rc;
        if (down_w && (rc = lr_weight_list("down_lr_weight", down_w, half, down, &cnt))) return rc;
        if (up_w && (rc = lr_weight_list("up_lr_weight", up_w, half, up, &cnt))) return rc;
        if (mid_w) {
            double tmp[16];
            int m = parse_list(mid_w, 0, 1, 0.0, tmp, 16);
            if (m < 0) return sd_err(SD_EUSAGE, "--network_args mid_lr_weight=%s: expected comma-separated numbers", mid_w);
            for (int i = 0; i < nmid; i++) mid[i] = i < m ? tmp[i] : 1.0;
        }
        int k = 0;
        if (is_sdxl) a->lr_weight[k++] = 1.0;
        for (int i = 0; i < half; i++) a->lr_weight[k++] = down_w && !(down[i] > zero_thr) ? 0 : down[i];
        for (int i = 0; i < nmid; i++) a->lr_weight[k++] = mid_w && !(mid[i] > zero_thr) ? 0 : mid[i];
        for (int i = 0; i < half; i++) a->lr_weight[k++] = up_w && !(up[i] > zero_thr) ? 0 : up[i];
        if (is_sdxl) a->lr_weight[k++] = 1.0;
        a->has_lr_weight = 1;
    }
    /* block dims */
    if (block_dims || a->has_lr_weight) {
        a->use_blocks = 1;
        double tmp[64];
        if (block_dims) {
            int m = parse_list(block_dims, 1, 0, 0, tmp, 64);
            if (m < 0) return sd_err(SD_EUSAGE, "--network_args block_dims=%s: expected whole numbers", block_dims);
            if (m != nb)
                return sd_err(SD_EUSAGE, "--network_args block_dims must have %d elements but %d elements are given", nb, m);
            for (int i = 0; i < nb; i++) a->block_dims[i] = (int)tmp[i];
        } else {
            for (int i = 0; i < nb; i++) a->block_dims[i] = a->network_dim;
        }
        if (block_alphas) {
            int m = parse_list(block_alphas, 0, 0, 0, tmp, 64);
            if (m != nb) return sd_err(SD_EUSAGE, "--network_args block_alphas must have %d elements", nb);
            for (int i = 0; i < nb; i++) a->block_alphas[i] = tmp[i];
        } else {
            for (int i = 0; i < nb; i++) a->block_alphas[i] = a->network_alpha;
        }
        if (conv_block_dims) {
            int m = parse_list(conv_block_dims, 1, 0, 0, tmp, 64);
            if (m != nb) return sd_err(SD_EUSAGE, "--network_args conv_block_dims must have %d elements", nb);
            for (int i = 0; i < nb; i++) a->conv_block_dims[i] = (int)tmp[i];
            if (conv_block_alphas) {
                m = parse_list(conv_block_alphas, 0, 0, 0, tmp, 64);
                if (m != nb) return sd_err(SD_EUSAGE, "--network_args conv_block_alphas must have %d elements", nb);
                for (int i = 0; i < nb; i++) a->conv_block_alphas[i] = tmp[i];
            } else {
                double ca = conv_dim ? a->conv_alpha : 1.0;
                for (int i = 0; i < nb; i++) a->conv_block_alphas[i] = ca;
            }
            a->has_conv_blocks = 1;
        } else if (a->conv_dim > 0 || conv_dim) {
            for (int i = 0; i < nb; i++) a->conv_block_dims[i] = a->conv_dim, a->conv_block_alphas[i] = a->conv_alpha;
            a->has_conv_blocks = 1;
        }
        if (a->has_lr_weight)
            for (int i = 0; i < nb; i++)
                if (a->lr_weight[i] == 0) {
                    a->block_dims[i] = 0;
                    if (a->has_conv_blocks) a->conv_block_dims[i] = 0;
                }
    }
    return SD_OK;
}

/* ---- block index ------------------------------------------------------------------------------- */

static int read_uint(const char **p, int *v)
{
    if (!isdigit((unsigned char)**p)) return 0;
    long x = 0;
    while (isdigit((unsigned char)**p)) { x = x * 10 + (**p - '0'); (*p)++; if (x > 1000000) return 0; }
    *v = (int)x;
    return 1;
}

int sd_lora_block_index(const char *name, int is_sdxl)
{
    if (!is_sdxl) {
        /* re.search(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_") */
        for (const char *s = name; *s; s++) {
            int up = !strncmp(s, "up_blocks_", 10), down = !strncmp(s, "down_blocks_", 12);
            if (!up && !down) continue;
            const char *p = s + (up ? 10 : 12);
            int i, j;
            if (!read_uint(&p, &i) || *p != '_') continue;
            p++;
            static const char *const kinds[4] = { "resnets_", "upsamplers_", "downsamplers_", "attentions_" };
            int kind = -1;
            for (int k = 0; k < 4; k++)
                if (!strncmp(p, kinds[k], strlen(kinds[k]))) { kind = k; p += strlen(kinds[k]); break; }
            if (kind < 0 || !read_uint(&p, &j) || *p != '_') continue;
            int idx = (kind == 1 || kind == 2) ? 3 * i + 2 : 3 * i + j;
            return down ? 1 + idx : 13 + idx;
        }
        return strstr(name, "mid_block_") ? 12 : -1;
    }
    if (strncmp(name, "lora_unet_", 10)) return -1;
    const char *s = name + 10;
    if (!strncmp(s, "time_embed_", 11) || !strncmp(s, "label_emb_", 10)) return 0;
    /* int(name.split("_")[2]) */
    static const struct { const char *pfx; int base; } b[3] = {
        { "input_blocks_", 1 }, { "middle_block_", 10 }, { "output_blocks_", 13 } };
    for (int k = 0; k < 3; k++)
        if (!strncmp(s, b[k].pfx, strlen(b[k].pfx))) {
            const char *p = s + strlen(b[k].pfx);
            int v;
            if (!read_uint(&p, &v) || (*p && *p != '_')) return -1;
            return b[k].base + v;
        }
    if (!strncmp(s, "out_", 4)) return 22;
    return -1;
}

/* ---- module plan ------------------------------------------------------------------------------- */

static int cmp_name(const void *k, const void *m)
{
    return strcmp((const char *)k, ((const sd_lora_file_module *)m)->name);
}

int sd_lora_net_plan(const sd_lora_net_args *a, const char *lora_name, sd_lora_target target, int kernel3,
                     const sd_lora_file_info *from_file, int *dim, double *alpha)
{
    *dim = 0;
    *alpha = 0;
    if (from_file) {
        const sd_lora_file_module *m = bsearch(lora_name, from_file->mods, from_file->n, sizeof *from_file->mods, cmp_name);
        if (!m) return 0;
        *dim = m->rank;
        *alpha = m->alpha;
        return 1;
    }
    int conv_targets = a->conv_dim > 0 || a->has_conv_blocks;
    if (target == SD_LORA_TARGET_RESBLOCK && !conv_targets) return 0;
    if (target != SD_LORA_TARGET_TE && a->use_blocks) {
        int b = sd_lora_block_index(lora_name, a->is_sdxl);
        if (b < 0 || b >= a->nblocks) return 0;
        if (!kernel3) { *dim = a->block_dims[b]; *alpha = a->block_alphas[b]; }
        else if (a->has_conv_blocks) { *dim = a->conv_block_dims[b]; *alpha = a->conv_block_alphas[b]; }
    } else {
        if (!kernel3) { *dim = a->network_dim; *alpha = a->network_alpha; }
        else if (a->conv_dim > 0) { *dim = a->conv_dim; *alpha = a->conv_alpha; }
    }
    return *dim > 0;
}

/* ---- parameter groups ------------------------------------------------------------------------- */

void sd_lora_groups_free(sd_lora_groups *g)
{
    free(g->desc);
    free(g->names);
    free(g->params);
    memset(g, 0, sizeof *g);
}

typedef struct gbuild {
    sd_lora_groups *g;
    size_t used;
} gbuild;

/* assemble_params(loras, lr, ratio) over the modules selected by sel[] */
static void assemble(gbuild *b, const sd_lora_ref *mods, const uint8_t *sel, size_t n, double lr, double ratio,
                     const char *desc)
{
    for (int plus = 0; plus < 2; plus++) {
        if (plus && !(ratio > 0)) break;
        double glr = plus ? lr * ratio : lr;
        size_t first = b->used;
        for (size_t i = 0; i < n; i++) {
            if (!sel[i]) continue;
            /* module parameter order down, mid (Tucker LoCon), up; LoRA+ puts lora_up alone in the plus group */
            if (!plus) b->g->params[b->used++] = mods[i].lora->down;
            if (!plus && mods[i].lora->mid) b->g->params[b->used++] = mods[i].lora->mid;
            if (plus || !(ratio > 0)) b->g->params[b->used++] = mods[i].lora->up;
        }
        size_t cnt = b->used - first;
        if (cnt == 0) continue;
        if (glr == 0 || isnan(glr)) { b->used = first; continue; }   /* "NO LR skipping!" */
        int k = b->g->n++;
        snprintf(b->g->names[k], 64, "%s%s", desc, plus ? " plus" : "");
        b->g->desc[k].name = b->g->names[k];
        b->g->desc[k].lr = glr;
        b->g->desc[k].params = b->g->params + first;
        b->g->desc[k].count = cnt;
    }
}

int sd_lora_param_groups(const sd_lora_net_args *a, const sd_lora_ref *mods, const int *is_te, size_t n,
                         double text_encoder_lr, double unet_lr, double default_lr, sd_lora_groups *g)
{
    memset(g, 0, sizeof *g);
    size_t maxg = 2 * (SD_LORA_MAX_BLOCKS + 2) + 4;
    g->desc = calloc(maxg, sizeof *g->desc);
    g->names = calloc(maxg, sizeof *g->names);
    g->params = calloc(3 * n + 1, sizeof *g->params);
    uint8_t *sel = calloc(n + 1, 1);
    if (!g->desc || !g->names || !g->params || !sel) {
        free(sel);
        sd_lora_groups_free(g);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    gbuild b = { g, 0 };
    double te_ratio = a->loraplus_text_encoder_lr_ratio > 0 ? a->loraplus_text_encoder_lr_ratio : a->loraplus_lr_ratio;
    double un_ratio = a->loraplus_unet_lr_ratio > 0 ? a->loraplus_unet_lr_ratio : a->loraplus_lr_ratio;
    size_t nte = 0, nun = 0;
    for (size_t i = 0; i < n; i++) {
        sel[i] = is_te[i] != 0;
        nte += sel[i];
        nun += !sel[i];
    }
    if (nte) assemble(&b, mods, sel, n, isnan(text_encoder_lr) ? default_lr : text_encoder_lr, te_ratio, "textencoder");
    double ulr = isnan(unet_lr) ? default_lr : unet_lr;
    if (nun && a->has_lr_weight) {
        /* one group per block, in order of first appearance */
        int seen[SD_LORA_MAX_BLOCKS + 2] = { 0 };
        for (size_t i = 0; i < n; i++) {
            if (is_te[i]) continue;
            int bi = sd_lora_block_index(mods[i].name, a->is_sdxl);
            int slot = bi < 0 || bi >= a->nblocks ? SD_LORA_MAX_BLOCKS + 1 : bi;
            if (seen[slot]) continue;
            seen[slot] = 1;
            for (size_t j = 0; j < n; j++) {
                int bj = is_te[j] ? -2 : sd_lora_block_index(mods[j].name, a->is_sdxl);
                sel[j] = !is_te[j] && (bj == bi);
            }
            double w = bi >= 0 && bi < a->nblocks ? a->lr_weight[bi] : 1.0;
            char desc[32];
            snprintf(desc, sizeof desc, "unet_block%d", bi);
            assemble(&b, mods, sel, n, ulr * w, un_ratio, desc);
        }
    } else if (nun) {
        for (size_t i = 0; i < n; i++) sel[i] = !is_te[i];
        assemble(&b, mods, sel, n, ulr, un_ratio, "unet");
    }
    free(sel);
    return SD_OK;
}

int sd_lora_param_groups_fa(const sd_lora_net_args *a, const sd_lora_ref *mods, const int *is_te, size_t n,
                            double text_encoder_lr, double unet_lr, double default_lr, int unet_only,
                            sd_lora_groups *g)
{
    memset(g, 0, sizeof *g);
    size_t maxg = SD_LORA_MAX_BLOCKS + 4;
    g->desc = calloc(maxg, sizeof *g->desc);
    g->names = calloc(maxg, sizeof *g->names);
    g->params = calloc(n + 1, sizeof *g->params);
    if (!g->desc || !g->names || !g->params) {
        sd_lora_groups_free(g);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    size_t used = 0;
    /* pass 0: text encoder(s); pass 1: UNet (one group per block in order of first appearance with
       block LR weights, else one) */
    for (int pass = 0; pass < 2; pass++) {
        int blocks = pass == 1 && a->has_lr_weight;
        int seen[SD_LORA_MAX_BLOCKS + 2] = { 0 };
        for (size_t i = 0; i < n; i++) {
            if ((is_te[i] != 0) != (pass == 0)) continue;
            int bi = blocks ? sd_lora_block_index(mods[i].name, a->is_sdxl) : 0;
            int slot = bi < 0 || bi >= a->nblocks ? SD_LORA_MAX_BLOCKS + 1 : bi;
            if (blocks && seen[slot]) continue;
            seen[slot] = 1;
            double lr = pass == 0 ? (isnan(text_encoder_lr) ? default_lr : text_encoder_lr)
                                  : (isnan(unet_lr) ? default_lr : unet_lr);
            /* get_lr_weight: 1.0 outside the blocks */
            if (blocks && bi >= 0 && bi < a->nblocks) lr *= a->lr_weight[bi];
            size_t first = used;
            for (size_t j = i; j < n; j++) {
                if ((is_te[j] != 0) != (pass == 0)) continue;
                if (blocks && sd_lora_block_index(mods[j].name, a->is_sdxl) != bi) continue;
                g->params[used++] = mods[j].lora->up;
                if (!blocks) i = j;   /* one group: all modules taken */
            }
            if (blocks && lr == 0) { used = first; continue; }   /* block groups at LR 0 are dropped */
            int k = g->n++;
            if (pass == 0) g->te_named_apart = 1;
            g->desc[k].lr = lr;
            g->desc[k].params = g->params + first;
            g->desc[k].count = used - first;
        }
    }
    for (int k = 0; k < g->n; k++) {
        /* train_network.py's names for a network without lr_descriptions */
        int idx = k + (unet_only ? 0 : 1);
        if (g->n > 2) snprintf(g->names[k], 64, "group%d", idx);
        else snprintf(g->names[k], 64, "unet");
        g->desc[k].name = g->names[k];
    }
    return SD_OK;
}

int sd_lora_fa_check_args(int is_sdxl, const char *const *items, int n)
{
    static const char *const plus[] = { "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio" };
    static const char *const blk[] = { "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas",
                                       "down_lr_weight", "mid_lr_weight", "up_lr_weight" };
    for (int i = 0; i < n; i++) {
        char key[64];
        const char *val;
        int rc = sd_py_split_kv(items[i], key, sizeof key, &val);
        if (rc) return sd_err_prefix(rc, "--network_args");
        for (size_t j = 0; j < sizeof plus / sizeof *plus; j++)
            if (!strcmp(key, plus[j]))
                return sd_err(SD_EUSAGE, "--network_args %s: networks.lora_fa has no LoRA+ (networks.lora has)", key);
        for (size_t j = 0; is_sdxl && j < sizeof blk / sizeof *blk; j++)
            if (!strcmp(key, blk[j]))
                return sd_err(SD_EUSAGE, "--network_args %s: networks.lora_fa has no SDXL block indices "
                              "(its get_block_index knows SD1/SD2 names only)", key);
        if (!strcmp(key, "mid_lr_weight") && strchr(val, ','))
            return sd_err(SD_EUSAGE, "--network_args mid_lr_weight=%s: networks.lora_fa takes one number", val);
    }
    return SD_OK;
}

/* ---- max norm -------------------------------------------------------------------------------- */

int sd_lora_max_norm(sd_ctx *ctx, const sd_lora_ref *mods, size_t n, double max_norm, int *keys_scaled,
                     double *mean_norm, double *max_key_norm)
{
    int scaled = 0;
    double sum = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        const sd_lora *l = mods[i].lora;
        int64_t r = l->rank, out = l->up->value.shape[0];
        int64_t k = sd_tensor_numel(&l->down->value) / r;
        sd_tensor u2, d2, w;
        int rc = sd_tensor_reshape(&l->up->value, 2, (int64_t[]){ out, r }, &u2);
        if (!rc) rc = sd_tensor_reshape(&l->down->value, 2, (int64_t[]){ r, k }, &d2);
        if (!rc) rc = sd_tensor_alloc(&w, SD_F32, 2, (int64_t[]){ out, k });
        if (rc) return rc;
        float scale = l->alpha / (float)l->rank;
        rc = sd_op_matmul(ctx, &w, &u2, 0, &d2, 0, 1.0f, 0.0f);
        if (rc) { sd_tensor_free(&w); return rc; }
        const float *wd = w.data;
        double s2 = 0;
        for (int64_t j = 0; j < out * k; j++) {
            float x = wd[j] * scale;
            s2 += (double)x * x;
        }
        sd_tensor_free(&w);
        float norm = (float)sqrt(s2);
        float nn = fmaxf(norm, (float)max_norm / 2);
        float desired = fminf(nn, (float)max_norm);
        float ratio = desired / nn;
        if (ratio != 1.0f) {
            scaled++;
            float sr = sqrtf(ratio);
            float *pu = l->up->value.data, *pd = l->down->value.data;
            for (int64_t j = 0; j < sd_tensor_numel(&l->up->value); j++) pu[j] *= sr;
            for (int64_t j = 0; j < sd_tensor_numel(&l->down->value); j++) pd[j] *= sr;
        }
        double sn = (double)(norm * ratio);
        sum += sn;
        if (sn > mx) mx = sn;
    }
    if (keys_scaled) *keys_scaled = scaled;
    if (mean_norm) *mean_norm = n ? sum / (double)n : 0;
    if (max_key_norm) *max_key_norm = mx;
    return SD_OK;
}
