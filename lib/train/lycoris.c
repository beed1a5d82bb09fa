/* LyCORIS modules → ΔW, merged into a model (see lycoris.h). */
#include "train/lycoris.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "base/half.h"
#include "train/lora_file.h"
#include "train/lora_net.h"
#include "train/lora_network.h"

static const char *const known_suffix[] = {
    "lora_down.weight", "lora_up.weight", "lora_mid.weight", "alpha", "scalar", "dora_scale",
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
    "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
};

int sd_lycoris_file_is(const sd_safetensors *st)
{
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const char *dot = strchr(sd_safetensors_at(st, i)->name, '.');
        if (!dot) continue;
        dot++;
        if (!strncmp(dot, "hada_", 5) || !strncmp(dot, "lokr_", 5) || !strcmp(dot, "lora_mid.weight") ||
            !strcmp(dot, "dora_scale") || !strcmp(dot, "scalar"))
            return 1;
    }
    return 0;
}

void sd_lycoris_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int sd_lycoris_modules(const sd_safetensors *st, char ***names_out, size_t *n_out)
{
    const char *path = sd_safetensors_path(st);
    const size_t nt = sd_safetensors_count(st);
    char **names = calloc(nt + 1, sizeof *names);
    size_t n = 0;
    int rc = names ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < nt && !rc; i++) {
        const char *tn = sd_safetensors_at(st, i)->name;
        const char *dot = strchr(tn, '.');
        int ok = 0;
        for (size_t k = 0; dot && k < sizeof known_suffix / sizeof *known_suffix && !ok; k++)
            ok = !strcmp(dot + 1, known_suffix[k]);
        if (!ok || strncmp(tn, "lora_", 5)) {
            rc = sd_err(SD_EFORMAT, "%s: tensor '%s' is not a LoRA/LyCORIS key (lora_<module>.lora_down.weight, "
                        ".lora_up.weight, .lora_mid.weight, .hada_*, .lokr_*, .alpha)", path, tn);
            break;
        }
        if (!strcmp(dot + 1, "dora_scale")) {
            rc = sd_err(SD_EUNSUPPORTED, "%s: tensor '%s': DoRA (weight_decompose) modules are not supported", path, tn);
            break;
        }
        if (!(names[n] = strndup(tn, (size_t)(dot - tn)))) rc = sd_err(SD_ENOMEM, "out of memory");
        else n++;
    }
    if (!rc) {
        qsort(names, n, sizeof *names, cmp_str);
        size_t u = 0;
        for (size_t i = 0; i < n; i++) {
            if (u && !strcmp(names[u - 1], names[i])) free(names[i]);
            else names[u++] = names[i];
        }
        n = u;
    }
    if (rc) {
        sd_lycoris_names_free(names, n);
        return rc;
    }
    *names_out = names;
    *n_out = n;
    return SD_OK;
}

/* ---- reading one module's tensors ------------------------------------------------------------ */

typedef struct mat {
    const sd_st_tensor *t;
    float *v;
    int64_t rows, cols;   /* shape[0] × the rest */
} mat;

static int get(const sd_safetensors *st, const char *name, const char *suf, mat *m)
{
    char key[600];
    snprintf(key, sizeof key, "%s.%s", name, suf);
    memset(m, 0, sizeof *m);
    m->t = sd_safetensors_find(st, key);
    if (!m->t) return SD_OK;
    if (m->t->ndim < 1 || m->t->numel <= 0)
        return sd_err(SD_EFORMAT, "%s: tensor '%s' is empty or a scalar", sd_safetensors_path(st), key);
    if (m->t->dtype != SD_ST_F32 && m->t->dtype != SD_ST_F16 && m->t->dtype != SD_ST_BF16 && m->t->dtype != SD_ST_F64)
        return sd_err(SD_EFORMAT, "%s: tensor '%s' is not floating point", sd_safetensors_path(st), key);
    m->rows = m->t->shape[0];
    m->cols = m->t->numel / m->rows;
    if (!(m->v = malloc((size_t)m->t->numel * sizeof *m->v))) return sd_err(SD_ENOMEM, "out of memory");
    return sd_safetensors_read_f32(st, key, m->v, (size_t)m->t->numel);
}

static void mat_free(mat *m)
{
    free(m->v);
    m->v = NULL;
}

/* C [n,p] = A [n,k] · B [k,p] */
static void matmul(const float *A, const float *B, float *C, int64_t n, int64_t k, int64_t p)
{
    for (int64_t i = 0; i < n; i++) {
        float *c = C + i * p;
        for (int64_t j = 0; j < p; j++) c[j] = 0;
        for (int64_t q = 0; q < k; q++) {
            const float a = A[i * k + q];
            const float *b = B + q * p;
            for (int64_t j = 0; j < p; j++) c[j] += a * b[j];
        }
    }
}

/* Tucker rebuild: out[o, i, k] = Σ_pq t[p,q,k] wa[p,o] wb[q,i]; t [r,r,kk], wa [r,O], wb [r,I] */
static int tucker(const mat *t, const mat *wa, const mat *wb, int64_t r, int64_t O, int64_t I, int64_t kk, float *out)
{
    float *tmp = malloc((size_t)(r * I * kk) * sizeof *tmp);   /* tmp[p, i, k] = Σ_q t[p,q,k] wb[q,i] */
    if (!tmp) return sd_err(SD_ENOMEM, "out of memory");
    memset(tmp, 0, (size_t)(r * I * kk) * sizeof *tmp);
    for (int64_t p = 0; p < r; p++)
        for (int64_t q = 0; q < r; q++)
            for (int64_t i = 0; i < I; i++) {
                const float b = wb->v[q * I + i];
                for (int64_t k = 0; k < kk; k++) tmp[(p * I + i) * kk + k] += t->v[(p * r + q) * kk + k] * b;
            }
    memset(out, 0, (size_t)(O * I * kk) * sizeof *out);
    for (int64_t p = 0; p < r; p++)
        for (int64_t o = 0; o < O; o++) {
            const float a = wa->v[p * O + o];
            for (int64_t j = 0; j < I * kk; j++) out[o * I * kk + j] += a * tmp[p * I * kk + j];
        }
    free(tmp);
    return SD_OK;
}

static int tucker_shape_ok(const mat *t, const mat *wa, const mat *wb, int64_t r, int64_t O, int64_t I, int64_t kk)
{
    return t->t->ndim >= 2 && t->t->shape[0] == r && t->t->shape[1] == r && t->t->numel == r * r * kk &&
           wa->rows == r && wa->cols == O && wb->rows == r && wb->cols == I;
}

static float scale_of(const sd_safetensors *st, const char *name, int64_t rank, int *err)
{
    char key[600];
    snprintf(key, sizeof key, "%s.alpha", name);
    const sd_st_tensor *t = sd_safetensors_find(st, key);
    *err = 0;
    if (!t) return 1.0f;
    float a = 0;
    if (t->numel != 1 || sd_safetensors_read_f32(st, key, &a, 1)) {
        *err = sd_err(SD_EFORMAT, "%s: tensor '%s' is not a numeric scalar", sd_safetensors_path(st), key);
        return 0;
    }
    return a == 0 ? 1.0f : a / (float)rank;
}

#define BAD(...) (rc = sd_err(SD_EFORMAT, __VA_ARGS__))

int sd_lycoris_delta(const sd_safetensors *st, const char *name, int64_t out, int64_t in, int kh, int kw, float *dw)
{
    const char *path = sd_safetensors_path(st);
    const int64_t kk = (int64_t)kh * kw, ikk = in * kk, nw = out * ikk;
    enum { DOWN, UP, MID, W1A, W1B, W2A, W2B, T1, T2, K1, K1A, K1B, K2, K2A, K2B, KT2, NM };
    static const char *const suf[NM] = {
        "lora_down.weight", "lora_up.weight", "lora_mid.weight", "hada_w1_a", "hada_w1_b", "hada_w2_a",
        "hada_w2_b", "hada_t1", "hada_t2", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a",
        "lokr_w2_b", "lokr_t2",
    };
    mat m[NM];
    memset(m, 0, sizeof m);
    float *tmp = NULL, *w1 = NULL, *w2 = NULL;
    int rc = SD_OK;
    for (int i = 0; i < NM && !rc; i++) rc = get(st, name, suf[i], &m[i]);
    int lora = m[DOWN].t || m[UP].t || m[MID].t;
    int loha = m[W1A].t || m[W1B].t || m[W2A].t || m[W2B].t || m[T1].t || m[T2].t;
    int lokr = m[K1].t || m[K1A].t || m[K1B].t || m[K2].t || m[K2A].t || m[K2B].t || m[KT2].t;
    int64_t rank = 0;
    if (rc) goto done;
    if (lora + loha + lokr != 1) {
        BAD("%s: module '%s' has %s", path, name, lora + loha + lokr ? "keys of more than one network type"
                                                                     : "no weights (only .alpha/.scalar)");
        goto done;
    }
    if (lora) {
        const mat *d = &m[DOWN], *u = &m[UP], *md = &m[MID];
        if (!d->t || !u->t) { BAD("%s: module '%s' lacks lora_down or lora_up", path, name); goto done; }
        rank = d->rows;
        if (!md->t) {
            if (d->cols != ikk || u->rows != out || u->cols != rank) {
                BAD("%s: module '%s' does not fit its layer [%lld,%lld,%d,%d] (shape mismatch)", path, name,
                    (long long)out, (long long)in, kh, kw);
                goto done;
            }
            matmul(u->v, d->v, dw, out, rank, ikk);
        } else {
            /* up [out,r], mid [r,r,kh,kw], down [r,in]: ΔW[o,i,k] = Σ_pq up[o,p] mid[p,q,k] down[q,i],
               the Tucker rebuild with wa = upᵀ: done as up · (mid ×₂ down) */
            if (d->cols != in || u->rows != out || u->cols != rank || md->t->ndim < 2 || md->t->shape[0] != rank ||
                md->t->shape[1] != rank || md->t->numel != rank * rank * kk) {
                BAD("%s: module '%s' does not fit its layer [%lld,%lld,%d,%d] (shape mismatch)", path, name,
                    (long long)out, (long long)in, kh, kw);
                goto done;
            }
            if (!(tmp = calloc((size_t)(rank * ikk), sizeof *tmp))) { rc = sd_err(SD_ENOMEM, "out of memory"); goto done; }
            for (int64_t p = 0; p < rank; p++)
                for (int64_t q = 0; q < rank; q++)
                    for (int64_t i = 0; i < in; i++)
                        for (int64_t k = 0; k < kk; k++)
                            tmp[(p * in + i) * kk + k] += md->v[(p * rank + q) * kk + k] * d->v[q * in + i];
            matmul(u->v, tmp, dw, out, rank, ikk);
        }
    } else if (loha) {
        mat *a1 = &m[W1A], *b1 = &m[W1B], *a2 = &m[W2A], *b2 = &m[W2B];
        if (!a1->t || !b1->t || !a2->t || !b2->t || !m[T1].t != !m[T2].t) {
            BAD("%s: module '%s' lacks one of hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b (or has only one of "
                "hada_t1/hada_t2)", path, name);
            goto done;
        }
        rank = b1->rows;
        if (!(tmp = malloc((size_t)nw * sizeof *tmp))) { rc = sd_err(SD_ENOMEM, "out of memory"); goto done; }
        if (!m[T1].t) {
            if (a1->rows != out || a1->cols != b1->rows || b1->cols != ikk || a2->rows != out || a2->cols != b2->rows ||
                b2->cols != ikk) {
                BAD("%s: module '%s' does not fit its layer [%lld,%lld,%d,%d] (shape mismatch)", path, name,
                    (long long)out, (long long)in, kh, kw);
                goto done;
            }
            matmul(a1->v, b1->v, dw, out, a1->cols, ikk);
            matmul(a2->v, b2->v, tmp, out, a2->cols, ikk);
        } else {
            if (!tucker_shape_ok(&m[T1], a1, b1, rank, out, in, kk) ||
                !tucker_shape_ok(&m[T2], a2, b2, b2->rows, out, in, kk)) {
                BAD("%s: module '%s' does not fit its layer [%lld,%lld,%d,%d] (Tucker shape mismatch)", path, name,
                    (long long)out, (long long)in, kh, kw);
                goto done;
            }
            rc = tucker(&m[T1], a1, b1, rank, out, in, kk, dw);
            if (!rc) rc = tucker(&m[T2], a2, b2, b2->rows, out, in, kk, tmp);
            if (rc) goto done;
        }
        for (int64_t j = 0; j < nw; j++) dw[j] *= tmp[j];
    } else {
        const mat *k1 = &m[K1], *k1a = &m[K1A], *k1b = &m[K1B], *k2 = &m[K2], *k2a = &m[K2A], *k2b = &m[K2B],
                  *t2 = &m[KT2];
        if ((!k1->t == !(k1a->t && k1b->t)) || (k1->t && (k1a->t || k1b->t)) || (!k2->t == !(k2a->t && k2b->t)) ||
            (k2->t && (k2a->t || k2b->t || t2->t))) {
            BAD("%s: module '%s' needs lokr_w1 or lokr_w1_a+lokr_w1_b, and lokr_w2 or lokr_w2_a+lokr_w2_b "
                "(+ lokr_t2)", path, name);
            goto done;
        }
        int64_t a, c, b, D2;
        if (k1->t) {
            if (k1->t->ndim != 2) { BAD("%s: module '%s': lokr_w1 is not 2-D", path, name); goto done; }
            a = k1->rows, c = k1->cols;
        } else {
            if (k1a->cols != k1b->rows) { BAD("%s: module '%s': lokr_w1_a/lokr_w1_b ranks differ", path, name); goto done; }
            a = k1a->rows, c = k1b->cols, rank = k1b->rows;
        }
        if (k2->t) b = k2->rows, D2 = k2->cols;
        else if (!t2->t) {
            if (k2a->cols != k2b->rows) { BAD("%s: module '%s': lokr_w2_a/lokr_w2_b ranks differ", path, name); goto done; }
            b = k2a->rows, D2 = k2b->cols, rank = k2b->rows;
        } else {
            b = k2a->cols, D2 = k2b->cols * kk, rank = k2b->rows;
            if (!tucker_shape_ok(t2, k2a, k2b, rank, b, k2b->cols, kk)) {
                BAD("%s: module '%s': lokr_t2/lokr_w2_a/lokr_w2_b shapes do not fit", path, name);
                goto done;
            }
        }
        if (a * b != out || c * D2 != ikk || D2 % kk) {
            BAD("%s: module '%s' does not fit its layer [%lld,%lld,%d,%d] (kron of [%lld,%lld] and [%lld,%lld])",
                path, name, (long long)out, (long long)in, kh, kw, (long long)a, (long long)c, (long long)b,
                (long long)D2);
            goto done;
        }
        w1 = k1->t ? k1->v : malloc((size_t)(a * c) * sizeof *w1);
        w2 = k2->t ? k2->v : malloc((size_t)(b * D2) * sizeof *w2);
        if (!w1 || !w2) { rc = sd_err(SD_ENOMEM, "out of memory"); goto done; }
        if (!k1->t) matmul(k1a->v, k1b->v, w1, a, k1a->cols, c);
        if (!k2->t && !t2->t) matmul(k2a->v, k2b->v, w2, b, k2a->cols, D2);
        else if (t2->t && (rc = tucker(t2, k2a, k2b, rank, b, k2b->cols, kk, w2))) goto done;
        for (int64_t i = 0; i < a; i++)
            for (int64_t k = 0; k < b; k++)
                for (int64_t j = 0; j < c; j++) {
                    const float x = w1[i * c + j];
                    float *o = dw + (i * b + k) * ikk + j * D2;
                    const float *y = w2 + k * D2;
                    for (int64_t l = 0; l < D2; l++) o[l] = x * y[l];
                }
    }
    {
        float sc = 1.0f;
        if (rank > 0) sc = scale_of(st, name, rank, &rc);   /* LoKr with w1 and w2 full: scale 1 */
        if (!rc && sc != 1.0f)
            for (int64_t j = 0; j < nw; j++) dw[j] *= sc;
    }
done:
    if (w1 && w1 != m[K1].v) free(w1);
    if (w2 && w2 != m[K2].v) free(w2);
    free(tmp);
    for (int i = 0; i < NM; i++) mat_free(&m[i]);
    return rc;
}

/* ---- merging --------------------------------------------------------------------------------- */

static int add_into(sd_tensor *t, const float *dw, float s, const char *path, const char *name)
{
    const size_t nw = (size_t)sd_tensor_numel(t);
    if (t->device != SD_DEV_CPU || (t->dtype != SD_F32 && t->dtype != SD_F16 && t->dtype != SD_BF16))
        return sd_err(SD_EUNSUPPORTED, "%s: module '%s': cannot merge into weights of this dtype or device", path, name);
    float *W = t->data;
    if (t->dtype != SD_F32) {   /* f16/bf16 storage: merged in f32, stored back rounded */
        if (!(W = malloc(nw * sizeof *W))) return sd_err(SD_ENOMEM, "out of memory");
        if (t->dtype == SD_F16) sd_f16_to_f32_n(t->data, W, nw);
        else sd_bf16_to_f32_n(t->data, W, nw);
    }
    for (size_t j = 0; j < nw; j++) W[j] += s * dw[j];
    if (W != t->data) {
        if (t->dtype == SD_F16) sd_f32_to_f16_n(W, t->data, nw);
        else sd_f32_to_bf16_n(W, t->data, nw);
        free(W);
    }
    return SD_OK;
}

int sd_lycoris_merge(sd_ctx *ctx, sd_model *m, sd_safetensors *st, double mul,
                     double (*weight)(void *user, const char *name), void *user, size_t *n_te, size_t *n_unet)
{
    (void)ctx;
    const char *path = sd_safetensors_path(st);
    const int sdxl = m->cfg.family == SD_FAMILY_SDXL;
    char **names = NULL;
    size_t n = 0, nc = 0, ncte = 0, te = 0, un = 0;
    sd_lora_file_module *fm = NULL;
    sd_lora_candidate *cand = NULL;
    float *dw = NULL;
    int rc = SD_OK;
    if (sdxl) {
        size_t n_diff = 0;
        rc = sd_lora_file_sdxl_to_sgm(st, &m->unet, &n_diff);
        if (!rc && n_diff) sd_info("%s: %zu UNet modules with Diffusers names, read as their SGM names", path, n_diff);
    }
    if (!rc) rc = sd_lycoris_modules(st, &names, &n);
    if (!rc && !n) rc = sd_err(SD_EFORMAT, "%s: no LoRA/LyCORIS modules in this file", path);
    if (!rc && !(fm = calloc(n, sizeof *fm))) rc = sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {   /* names sorted: a from_file list for the layer walk */
        fm[i].name = names[i];
        fm[i].rank = 1;
        fm[i].alpha = 1;
    }
    sd_lora_net_args na;
    if (!rc) rc = sd_lora_net_args_parse(&na, sdxl, 0, NAN, NULL, 0);
    if (!rc) {
        sd_lora_file_info info = { fm, n };
        sd_lora_network_opts o = { .args = &na, .with_unet = 1, .with_te = 1, .from_file = &info, .sdxl = sdxl,
                                   .te2 = sdxl ? &m->clip2 : NULL, .lycoris = 1 };
        rc = sd_lora_network_candidates(&m->unet, &m->clip, &o, &cand, &nc, &ncte);
    }
    /* every module must name a layer */
    for (size_t i = 0; i < n && !rc; i++) {
        size_t j = 0;
        while (j < nc && strcmp(cand[j].name, names[i])) j++;
        if (j == nc)
            rc = sd_err(SD_EFORMAT, "%s: module '%s' names no layer of this %s model that a LoRA/LyCORIS module "
                        "can be merged into", path, names[i], sdxl ? "SDXL" : "SD1/SD2");
    }
    for (size_t j = 0; j < nc && !rc; j++) {
        const sd_lora_candidate *x = &cand[j];
        sd_tensor *t = x->conv_host ? &x->conv->w->value : &x->lin->w->value;
        if (sd_tensor_numel(t) != x->out * x->in * x->kh * x->kw) {
            rc = sd_err(SD_EUNSUPPORTED, "%s: module '%s': grouped layer weights are not supported", path, x->name);
            break;
        }
        free(dw);
        if (!(dw = malloc((size_t)sd_tensor_numel(t) * sizeof *dw))) { rc = sd_err(SD_ENOMEM, "out of memory"); break; }
        rc = sd_lycoris_delta(st, x->name, x->out, x->in, x->kh, x->kw, dw);
        double s = mul;
        if (!rc && weight) s *= weight(user, x->name);
        if (!rc) rc = add_into(t, dw, (float)s, path, x->name);
        if (!rc && x->is_te) te++;
        else if (!rc) un++;
    }
    if (n_te) *n_te = rc ? 0 : te;
    if (n_unet) *n_unet = rc ? 0 : un;
    free(dw);
    free(cand);
    free(fm);
    sd_lycoris_names_free(names, n);
    return rc;
}
