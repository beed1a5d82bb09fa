/* LoRA files combined into one LoRA file (see lora_combine.h). */
#include "train/lora_combine.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "base/half.h"
#include "base/rng.h"
#include "io/safetensors.h"
#include "train/lora_extract.h"
#include "train/lora_file.h"
#include "train/meta.h"

#define CLAMP_QUANTILE 0.99   /* svd_merge_lora.py CLAMP_QUANTILE */

typedef struct src {
    const char *path;
    double ratio;
    sd_safetensors *st;
    sd_lora_file_info info;
    int sdxl, sd;             /* family markers seen */
} src;

typedef struct outmod {
    const char *name;         /* borrowed from a src's info */
    int ndim;
    int64_t ushape[4], dshape[4];
    float *up, *down;
    float alpha;
    int64_t alpha_i;
    int alpha_int;            /* store alpha as I64 */
    int rank;
} outmod;

/* Round n values to f16 (p 1) or bf16 (p 2) in place; p 0: nothing. */
static void round_n(float *x, size_t n, int p)
{
    if (p == 1 || p == 2) sd_round_half_n(x, n, p == 2);
}

static float round1(float v, int p)
{
    round_n(&v, 1, p);
    return v;
}

static const sd_lora_file_module *find_mod(const src *s, const char *name)
{
    size_t lo = 0, hi = s->info.n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->info.mods[mid].name, name);
        if (!c) return &s->info.mods[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int starts(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

/* Read a module's factors of file s as f32 [out, rank] and [rank, in·kh·kw], rounded to p. */
static int read_factors(const src *s, const sd_lora_file_module *m, int p, float *up, float *down)
{
    char key[1100];
    int64_t k = m->in * m->kh * m->kw;
    snprintf(key, sizeof key, "%s.lora_up.weight", m->name);
    int rc = sd_safetensors_read_f32(s->st, key, up, (size_t)(m->out * m->rank));
    snprintf(key, sizeof key, "%s.lora_down.weight", m->name);
    if (!rc) rc = sd_safetensors_read_f32(s->st, key, down, (size_t)(m->rank * k));
    if (rc) return rc;
    size_t nu = (size_t)(m->out * m->rank), nd = (size_t)(m->rank * k);
    for (size_t i = 0; i < nu; i++)
        if (!isfinite(up[i])) return sd_err(SD_EFORMAT, "%s: %s.lora_up.weight has a non-finite value", s->path, m->name);
    for (size_t i = 0; i < nd; i++)
        if (!isfinite(down[i]))
            return sd_err(SD_EFORMAT, "%s: %s.lora_down.weight has a non-finite value", s->path, m->name);
    round_n(up, nu, p);
    round_n(down, nd, p);
    return SD_OK;
}

static void shape_str(const sd_lora_file_module *m, char *b, size_t n)
{
    if (m->conv4d) snprintf(b, n, "down [%d,%lld,%d,%d] up [%lld,%d,1,1]", m->rank, (long long)m->in, m->kh, m->kw,
                            (long long)m->out, m->rank);
    else snprintf(b, n, "down [%d,%lld] up [%lld,%d]", m->rank, (long long)m->in, (long long)m->out, m->rank);
}

/* SUM / CONCAT of one module over the files holding it (idx[0..nh) into srcs). */
static int combine_factors(src *srcs, const int *idx, int nh, const char *name, const sd_lora_combine_opts *o,
                           int sdxl, outmod *om)
{
    const src *s0 = &srcs[idx[0]];
    const sd_lora_file_module *m0 = find_mod(s0, name);
    int p = o->precision;
    int64_t k = m0->in * m0->kh * m0->kw, out = m0->out;
    int rtot = 0;
    for (int j = 0; j < nh; j++) {
        const sd_lora_file_module *m = find_mod(&srcs[idx[j]], name);
        if (o->mode == SD_LORA_COMBINE_SUM && m->rank != m0->rank)
            return sd_err(SD_EFORMAT, "%s: %s: rank %d, but %s has it at rank %d: files of different ranks merge "
                          "only with --concat (or svd-merge)", srcs[idx[j]].path, name, m->rank, s0->path, m0->rank);
        rtot += m->rank;
    }
    int rank = o->mode == SD_LORA_COMBINE_CONCAT ? rtot : m0->rank;
    /* base alpha: the first file's (in the merge dtype), or its rank */
    double base = m0->has_alpha ? (double)round1(m0->alpha, p) : (double)m0->rank;
    om->up = malloc(sizeof(float) * (size_t)(out * rank));
    om->down = malloc(sizeof(float) * (size_t)(rank * k));
    float *u = malloc(sizeof(float) * (size_t)(out * rtot));
    float *d = malloc(sizeof(float) * (size_t)(rtot * k));
    int rc = SD_OK, col = 0;
    if (!om->up || !om->down || !u || !d) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int j = 0; j < nh && !rc; j++) {
        const src *s = &srcs[idx[j]];
        const sd_lora_file_module *m = find_mod(s, name);
        double alpha = m->has_alpha ? (double)round1(m->alpha, p) : (double)m->rank;
        double q = alpha / base;
        if (!(base != 0) || !(q >= 0) || !isfinite(q)) {
            rc = sd_err(SD_EFORMAT, "%s: %s: alpha %g with the first file's alpha %g (%s): sqrt(alpha/base alpha) "
                        "is undefined", s->path, name, alpha, base, s0->path);
            break;
        }
        double scale = sqrt(q) * s->ratio;
        /* sdxl_merge_lora.py: scale *= lbw after abs() for lora_up */
        double lw = sd_lora_lbw_weight(o->lbws, idx[j], name, 1);
        float sd_ = (float)(scale * lw), su = (float)(fabs(scale) * lw);
        int r = m->rank;
        if ((rc = read_factors(s, m, p, u, d))) break;
        size_t nd = (size_t)(r * k);
        for (size_t i = 0; i < nd; i++) d[i] = round1(d[i] * sd_, p);
        for (size_t i = 0; i < (size_t)(out * r); i++) u[i] = round1(u[i] * su, p);
        if (o->mode == SD_LORA_COMBINE_CONCAT) {
            memcpy(om->down + (size_t)col * (size_t)k, d, nd * sizeof(float));
            for (int64_t y = 0; y < out; y++)
                memcpy(om->up + (size_t)(y * rank + col), u + (size_t)(y * r), (size_t)r * sizeof(float));
            col += r;
        } else if (j == 0) {
            memcpy(om->down, d, nd * sizeof(float));
            memcpy(om->up, u, (size_t)(out * r) * sizeof(float));
        } else {
            for (size_t i = 0; i < nd; i++) om->down[i] = round1(om->down[i] + d[i], p);
            for (size_t i = 0; i < (size_t)(out * r); i++) om->up[i] = round1(om->up[i] + u[i], p);
        }
    }
    if (rc) goto out;
    om->rank = rank;
    om->alpha = (float)base;
    om->alpha_int = !m0->has_alpha && sdxl;   /* torch.tensor(int): sdxl_merge_lora.py casts floats only */
    om->alpha_i = m0->rank;
    om->ndim = m0->conv4d ? 4 : 2;
    om->dshape[0] = rank, om->dshape[1] = m0->in, om->dshape[2] = m0->kh, om->dshape[3] = m0->kw;
    om->ushape[0] = out, om->ushape[1] = rank, om->ushape[2] = 1, om->ushape[3] = 1;
out:
    free(u);
    free(d);
    return rc;
}

/* torch.randperm's role: perm[j] = the source index of position j. Fisher–Yates on a Philox stream. */
static int shuffle_mod(outmod *om, uint64_t seed, uint32_t index)
{
    int r = om->rank;
    int64_t out = om->ushape[0], k = om->dshape[1] * (om->ndim == 4 ? om->dshape[2] * om->dshape[3] : 1);
    int *perm = malloc(sizeof(int) * (size_t)r);
    float *nd = malloc(sizeof(float) * (size_t)(r * k)), *nu = malloc(sizeof(float) * (size_t)(out * r));
    if (!perm || !nd || !nu) {
        free(perm), free(nd), free(nu);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    sd_rng g = sd_rng_key(seed, 0, index, SD_RNG_USER);
    for (int j = 0; j < r; j++) perm[j] = j;
    for (int j = r - 1; j > 0; j--) {
        int t = (int)sd_rng_below_at(&g, (uint64_t)j, (uint64_t)(j + 1)), x = perm[j];
        perm[j] = perm[t], perm[t] = x;
    }
    for (int j = 0; j < r; j++) memcpy(nd + (size_t)j * (size_t)k, om->down + (size_t)perm[j] * (size_t)k, sizeof(float) * (size_t)k);
    for (int64_t y = 0; y < out; y++)
        for (int j = 0; j < r; j++) nu[y * r + j] = om->up[y * r + perm[j]];
    free(om->down), free(om->up), free(perm);
    om->down = nd, om->up = nu;
    return SD_OK;
}

/* SVD merge of one module. */
static int combine_svd(src *srcs, const int *idx, int nh, const char *name, const sd_lora_combine_opts *o,
                       outmod *om)
{
    const src *s0 = &srcs[idx[0]];
    const sd_lora_file_module *m0 = find_mod(s0, name);
    int p = o->precision, rmax = 0;
    int64_t k = m0->in * m0->kh * m0->kw, out = m0->out;
    for (int j = 0; j < nh; j++) {
        const sd_lora_file_module *m = find_mod(&srcs[idx[j]], name);
        if (m->rank > rmax) rmax = m->rank;
    }
    float *w = calloc((size_t)(out * k), sizeof(float)), *t = malloc(sizeof(float) * (size_t)(out * k));
    float *u = malloc(sizeof(float) * (size_t)(out * rmax)), *d = malloc(sizeof(float) * (size_t)(rmax * k));
    int rc = SD_OK;
    if (!w || !t || !u || !d) rc = sd_err(SD_ENOMEM, "out of memory");
    for (int j = 0; j < nh && !rc; j++) {
        const src *s = &srcs[idx[j]];
        const sd_lora_file_module *m = find_mod(s, name);
        if ((rc = read_factors(s, m, p, u, d))) break;
        /* weight + ratio * (up @ down) * scale, each step in the merge dtype */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)k, m->rank, 1.0f, u, m->rank, d, (int)k,
                    0.0f, t, (int)k);
        float ratio = (float)s->ratio;
        float scale = m->has_alpha ? round1(round1(m->alpha, p) / (float)m->rank, p) : 1.0f;
        if (o->lbws && o->lbws->n) {
            /* scale *= lbw_weights[index]: a merge-dtype tensor times a Python number (alpha given), or
               the Python float 1.0 times it */
            double lw = sd_lora_lbw_weight(o->lbws, idx[j], name, o->lbws->sdxl_names);
            scale = m->has_alpha ? round1(scale * (float)lw, p) : (float)lw;   /* torch: the scalar as float */
        }
        size_t n = (size_t)(out * k);
        round_n(t, n, p);
        for (size_t i = 0; i < n; i++) w[i] = round1(w[i] + round1(round1(t[i] * ratio, p) * scale, p), p);
    }
    int conv3 = m0->conv4d && !(m0->kh == 1 && m0->kw == 1);
    int64_t rank = conv3 ? o->new_conv_rank : o->new_rank;
    if (rank > m0->in) rank = m0->in;
    if (rank > out) rank = out;
    if (!rc) {
        for (size_t i = 0; i < (size_t)(out * k); i++)
            if (!isfinite(w[i])) {
                rc = sd_err(SD_EFORMAT, "%s: the merged weight is not finite (overflow in the merge precision?)", name);
                break;
            }
    }
    if (!rc) {
        om->up = malloc(sizeof(float) * (size_t)(out * rank));
        om->down = malloc(sizeof(float) * (size_t)(rank * k));
        if (!om->up || !om->down) rc = sd_err(SD_ENOMEM, "out of memory");
    }
    if (!rc) rc = sd_lora_svd_factor(w, out, k, (int)rank, CLAMP_QUANTILE, om->up, om->down);
    if (rc && !strstr(sd_errmsg(), name)) sd_err_prefix(rc, "%s", name);
    free(w), free(t), free(u), free(d);
    if (rc) return rc;
    om->rank = (int)rank;
    om->alpha_int = 1;
    om->alpha_i = rank;
    om->alpha = (float)rank;
    om->ndim = m0->conv4d ? 4 : 2;
    om->dshape[0] = rank, om->dshape[1] = m0->in, om->dshape[2] = m0->kh, om->dshape[3] = m0->kw;
    om->ushape[0] = out, om->ushape[1] = rank, om->ushape[2] = 1, om->ushape[3] = 1;
    return SD_OK;
}

/* os.path.splitext(os.path.basename(p))[0] */
static void stem(const char *p, char *b, size_t n)
{
    const char *s = strrchr(p, '/');
    s = s ? s + 1 : p;
    const char *dot = strrchr(s, '.');
    size_t l = dot && dot != s ? (size_t)(dot - s) : strlen(s);
    snprintf(b, n, "%.*s", (int)l, s);
}

static int check_shapes(const src *a, const sd_lora_file_module *ma, const src *b, const sd_lora_file_module *mb)
{
    int same = ma->conv4d == mb->conv4d && ma->in == mb->in && ma->out == mb->out && ma->kh == mb->kh &&
               ma->kw == mb->kw;
    if (same) return SD_OK;
    char x[128], y[128];
    shape_str(ma, x, sizeof x);
    shape_str(mb, y, sizeof y);
    return sd_err(SD_EFORMAT, "%s: %s: %s, but %s has %s (LoRAs of different models or layers cannot be merged)",
                  b->path, ma->name, y, a->path, x);
}

int sd_lora_combine(const char *const *paths, const double *ratios, int n, const char *out,
                    const sd_lora_combine_opts *o, sd_lora_combine_result *res)
{
    static const sd_st_dtype dts[3] = { SD_ST_F32, SD_ST_F16, SD_ST_BF16 };
    memset(res, 0, sizeof *res);
    if (n < 1) return sd_err(SD_EINVAL, "no LoRA files to merge");
    sd_st_dtype sdt = dts[o->save_precision >= 0 && o->save_precision < 3 ? o->save_precision
                          : (o->precision >= 0 && o->precision < 3 ? o->precision : 0)];
    src *srcs = calloc((size_t)n, sizeof *srcs);
    const char **names = NULL;
    outmod *oms = NULL;
    int *idx = calloc((size_t)n, sizeof *idx);
    size_t nn = 0, nu = 0;
    sd_safetensors_writer *w = NULL;
    sd_kv meta;
    sd_kv_init(&meta);
    char *merged_from = NULL;
    int rc = srcs && idx ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    size_t total = 0;
    for (int i = 0; i < n && !rc; i++) {
        src *s = &srcs[i];
        s->path = paths[i];
        s->ratio = ratios[i];
        rc = sd_safetensors_open(paths[i], &s->st);
        if (!rc) rc = sd_lora_file_scan(s->st, &s->info);
        if (!rc && !s->info.n) rc = sd_err(SD_EFORMAT, "%s: no LoRA modules (lora_down/lora_up) in this file", s->path);
        if (rc) {
            if (!strstr(sd_errmsg(), paths[i])) sd_err_prefix(rc, "%s", paths[i]);
            break;
        }
        for (size_t j = 0; j < s->info.n; j++) {
            const char *nm = s->info.mods[j].name;
            if (starts(nm, "lora_te1_") || starts(nm, "lora_te2_") || starts(nm, "lora_unet_input_blocks_") ||
                starts(nm, "lora_unet_middle_block_") || starts(nm, "lora_unet_output_blocks_"))
                s->sdxl = 1;
            else if (starts(nm, "lora_te_")) s->sd = 1;
        }
        if (s->sdxl && s->sd) {
            rc = sd_err(SD_EFORMAT, "%s: has both SDXL (lora_te1_/lora_te2_/input_blocks) and SD1/SD2 (lora_te_) "
                        "module names", s->path);
            break;
        }
        total += s->info.n;
    }
    /* families */
    int fam_sdxl = -1, fam_at = -1;
    for (int i = 0; i < n && !rc; i++) {
        if (!srcs[i].sdxl && !srcs[i].sd) continue;
        if (fam_sdxl < 0) {
            fam_sdxl = srcs[i].sdxl, fam_at = i;
        } else if (fam_sdxl != srcs[i].sdxl) {
            rc = sd_err(SD_EFORMAT, "%s is an %s LoRA but %s is an %s LoRA: LoRAs of different model families cannot "
                        "be merged", srcs[i].path, srcs[i].sdxl ? "SDXL" : "SD1/SD2", srcs[fam_at].path,
                        fam_sdxl ? "SDXL" : "SD1/SD2");
        }
    }
    if (!rc && o->lbws && o->lbws->n && o->lbws->n != n)
        rc = sd_err(SD_EUSAGE, "--lbws: %d lists for %d LoRA files (one per file)", o->lbws->n, n);
    if (!rc && o->lbws && o->lbws->n && o->mode != SD_LORA_COMBINE_SVD && fam_sdxl <= 0)
        rc = sd_err(SD_EUSAGE, "--lbws: merging SD1/SD2 LoRA files (merge_lora.py) has no layer block weights; "
                    "svd-merge and SDXL files (sdxl_merge_lora.py) have");
    if (rc) goto out;
    int sdxl = fam_sdxl > 0;
    /* the union of module names, sorted */
    if (!(names = malloc(sizeof *names * (total + 1)))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < srcs[i].info.n; j++) names[nn++] = srcs[i].info.mods[j].name;
    qsort(names, nn, sizeof *names, cmp_str);
    for (size_t i = 0; i < nn; i++)
        if (!nu || strcmp(names[nu - 1], names[i])) names[nu++] = names[i];
    if (!(oms = calloc(nu + 1, sizeof *oms))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t mi = 0; mi < nu && !rc; mi++) {
        int nh = 0;
        const sd_lora_file_module *m0 = NULL;
        for (int i = 0; i < n && !rc; i++) {
            const sd_lora_file_module *m = find_mod(&srcs[i], names[mi]);
            if (!m) continue;
            if (!m0) m0 = m;
            else rc = check_shapes(&srcs[idx[0]], m0, &srcs[i], m);
            idx[nh++] = i;
        }
        if (rc) break;
        oms[mi].name = names[mi];
        if (o->mode == SD_LORA_COMBINE_SVD) rc = combine_svd(srcs, idx, nh, names[mi], o, &oms[mi]);
        else {
            rc = combine_factors(srcs, idx, nh, names[mi], o, sdxl, &oms[mi]);
            if (!rc && o->shuffle) rc = shuffle_mod(&oms[mi], o->seed, (uint32_t)mi);
        }
        if (!rc && oms[mi].rank > res->max_rank) res->max_rank = oms[mi].rank;
        if (!rc && starts(names[mi], "lora_te")) res->n_te++;
    }
    if (rc) goto out;
    /* the file */
    if ((rc = sd_safetensors_writer_new(&w))) goto out;
    for (size_t mi = 0; mi < nu && !rc; mi++) {
        outmod *om = &oms[mi];
        char key[1100];
        snprintf(key, sizeof key, "%s.lora_down.weight", om->name);
        rc = sd_safetensors_writer_add_f32(w, key, sdt, om->ndim, om->dshape, om->down);
        snprintf(key, sizeof key, "%s.lora_up.weight", om->name);
        if (!rc) rc = sd_safetensors_writer_add_f32(w, key, sdt, om->ndim, om->ushape, om->up);
        snprintf(key, sizeof key, "%s.alpha", om->name);
        if (!rc && om->alpha_int) rc = sd_safetensors_writer_add(w, key, SD_ST_I64, 0, NULL, &om->alpha_i);
        else if (!rc) rc = sd_safetensors_writer_add_f32(w, key, sdt, 0, NULL, &om->alpha);
    }
    if (rc) goto out;
    /* minimum metadata: build_minimum_network_metadata's order */
    char dims[40], alphas[64];
    if (o->mode == SD_LORA_COMBINE_SVD) {
        snprintf(dims, sizeof dims, "%d", o->new_rank);
        snprintf(alphas, sizeof alphas, "%d", o->new_rank);
    } else {
        /* set(base_dims.values()) / set(base_alphas.values()): one value → its str(), else "Dynamic";
         * the kept element is the first inserted: the first module (in key order) of the first file
         * that has an alpha (modules without one are added after them), else its first module */
        const sd_lora_file_module *f0 = &srcs[0].info.mods[0];
        for (size_t j = 0; j < srcs[0].info.n; j++)   /* modules with an alpha key are inserted first */
            if (srcs[0].info.mods[j].has_alpha) {
                f0 = &srcs[0].info.mods[j];
                break;
            }
        int same_d = 1, same_a = 1;
        for (size_t mi = 0; mi < nu; mi++) {
            const sd_lora_file_module *m0 = NULL;
            for (int i = 0; i < n && !m0; i++) m0 = find_mod(&srcs[i], oms[mi].name);
            if (m0->rank != f0->rank) same_d = 0;
            if (oms[mi].alpha != oms[0].alpha) same_a = 0;
        }
        float a0 = f0->has_alpha ? round1(f0->alpha, o->precision) : (float)f0->rank;
        for (size_t mi = 0; mi < nu; mi++)
            if (oms[mi].alpha != a0) same_a = 0;
        if (same_d) snprintf(dims, sizeof dims, "%d", f0->rank);
        else snprintf(dims, sizeof dims, "Dynamic");
        if (!same_a) snprintf(alphas, sizeof alphas, "Dynamic");
        else if (!f0->has_alpha) snprintf(alphas, sizeof alphas, "%d", f0->rank);
        else {
            sd_pyv v = sd_pyv_float((double)a0);
            sd_pyv_str_of(&v, alphas, sizeof alphas);
        }
    }
    const char *v2 = NULL, *base_model = NULL;
    for (int i = 0; i < n; i++) {
        if (!v2) v2 = sd_safetensors_meta_get(srcs[i].st, "ss_v2");
        if (!base_model) base_model = sd_safetensors_meta_get(srcs[i].st, "ss_base_model_version");
    }
    rc = sd_kv_set(&meta, "ss_network_module", "networks.lora");
    if (!rc) rc = sd_kv_set(&meta, "ss_network_dim", dims);
    if (!rc) rc = sd_kv_set(&meta, "ss_network_alpha", alphas);
    if (!rc && v2) rc = sd_kv_set(&meta, "ss_v2", v2);
    if (!rc && base_model) rc = sd_kv_set(&meta, "ss_base_model_version", base_model);
    if (!rc && o->mode == SD_LORA_COMBINE_SVD)
        rc = sd_kv_setf(&meta, "ss_network_args", "{\"conv_dim\": %d, \"conv_alpha\": %d}", o->new_conv_rank,
                        o->new_conv_rank);
    for (size_t i = 0; i < meta.n && !rc; i++) rc = sd_safetensors_writer_set_meta(w, meta.keys[i], meta.vals[i]);
    if (!rc) rc = sd_lora_writer_add_hashes(w, out);
    if (rc) goto out;
    if (!o->no_metadata) {
        size_t ml = 1;
        for (int i = 0; i < n; i++) {
            const char *t = sd_safetensors_meta_get(srcs[i].st, "modelspec.title");
            ml += (t ? strlen(t) : strlen(paths[i])) + 2;
        }
        if (!(merged_from = calloc(ml, 1))) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            goto out;
        }
        for (int i = 0; i < n; i++) {
            const char *t = sd_safetensors_meta_get(srcs[i].st, "modelspec.title");
            char sb[1024];
            if (!t) stem(paths[i], sb, sizeof sb), t = sb;
            size_t l = strlen(merged_from);
            snprintf(merged_from + l, ml - l, "%s%s", i ? ", " : "", t);
        }
        char title[1024];
        stem(out, title, sizeof title);
        /* merge_lora.py: v2 = (ss_v2 == "True") for both flags; sdxl_merge_lora.py: False, False, sdxl;
         * svd_merge_lora.py: v2, v2, base model "sdxl*" (here: or SDXL module names) */
        int is_v2 = v2 && !strcmp(v2, "True");
        int is_xl = sdxl || (base_model && !strncasecmp(base_model, "sdxl", 4));
        if (o->mode != SD_LORA_COMBINE_SVD && is_xl) is_v2 = 0;
        sd_kv ms_kv;
        sd_kv_init(&ms_kv);
        sd_modelspec_args ms;
        memset(&ms, 0, sizeof ms);
        ms.v2 = is_v2;
        ms.v_parameterization = is_v2;
        ms.sdxl = is_xl;
        ms.lora = 1;
        ms.timestamp = o->timestamp;
        ms.title = title;
        ms.clip_skip = -1;
        ms.merged_from = merged_from;
        ms.implementation_version = o->implementation_version;
        rc = sd_modelspec_metadata(&ms, &ms_kv);
        for (size_t i = 0; i < ms_kv.n && !rc; i++) rc = sd_safetensors_writer_set_meta(w, ms_kv.keys[i], ms_kv.vals[i]);
        sd_kv_free(&ms_kv);
        res->v2_warning = is_v2;
        if (rc) goto out;
    }
    rc = sd_safetensors_writer_write(w, out);
    if (!rc) {
        res->n_modules = nu;
        res->sdxl = sdxl;
    }
out:
    sd_kv_free(&meta);
    free(merged_from);
    sd_safetensors_writer_free(w);
    if (oms)
        for (size_t i = 0; i < nu; i++) free(oms[i].up), free(oms[i].down);
    free(oms);
    free(names);
    free(idx);
    if (srcs)
        for (int i = 0; i < n; i++) {
            sd_lora_file_info_free(&srcs[i].info);
            sd_safetensors_close(srcs[i].st);
        }
    free(srcs);
    return rc;
}
