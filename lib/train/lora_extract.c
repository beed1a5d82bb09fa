/* LoRA extraction from two checkpoints (see lora_extract.h). */
#include "train/lora_extract.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "train/lora_net.h"
#include "train/lora_network.h"

/* LAPACK (OpenBLAS exports it; no lapacke header needed): the divide-and-conquer SVD. */
extern void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s, float *u,
                    const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork, int *iwork, int *info,
                    size_t jobz_len);

static int cmp_f32(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

float sd_quantile_f32(float *v, size_t n, float q)
{
    if (!n) return NAN;
    qsort(v, n, sizeof *v, cmp_f32);
    /* aten quantile: ranks = q * (n - 1) in the input dtype, below = (long)ranks, weight = ranks -
     * below, lerp(values[below], values[below + 1], weight) */
    float rank = q * (float)(n - 1);
    size_t lo = (size_t)rank;
    if (lo >= n - 1) return v[n - 1];
    float w = rank - (float)lo, a = v[lo], b = v[lo + 1];
    return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

int sd_lora_svd_factor(float *mat, int64_t m, int64_t n, int rank, double clamp_quantile, float *up, float *down)
{
    int64_t k = m < n ? m : n;
    if (rank < 1 || rank > k) return sd_err(SD_EINVAL, "SVD: rank %d outside [1, %lld]", rank, (long long)k);
    if (m > 0x7fffffff || n > 0x7fffffff || m * n > 0x7fffffff)
        return sd_err(SD_EUNSUPPORTED, "SVD: a %lld x %lld matrix is too large for 32-bit LAPACK", (long long)m,
                      (long long)n);
    /* torch.linalg.svd hands LAPACK the matrix itself in column-major order (not the row-major
     * buffer read as A^T, whose singular vectors can come out with other signs: the clamp below
     * depends on them), so transpose into a column-major copy; U [m, k] (ldu m), Vh [k, n] (ldvt k) */
    int M = (int)m, N = (int)n, K = (int)k, lwork = -1, info = 0;
    float *s = malloc(sizeof(float) * (size_t)k), *vh = malloc(sizeof(float) * (size_t)(k * n));
    float *u = malloc(sizeof(float) * (size_t)(m * k)), wq = 0, *cm = malloc(sizeof(float) * (size_t)(m * n));
    int *iwork = malloc(sizeof(int) * (size_t)(8 * k));
    float *work = NULL, *dist = NULL;
    int rc = SD_OK;
    if (!s || !vh || !u || !iwork || !cm) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) cm[j * m + i] = mat[i * n + j];
    sgesdd_("S", &M, &N, cm, &M, s, u, &M, vh, &K, &wq, &lwork, iwork, &info, 1);
    if (info) {
        rc = sd_err(SD_EFORMAT, "SVD: LAPACK sgesdd workspace query failed (info %d)", info);
        goto out;
    }
    lwork = (int)wq + 1;
    if (!(work = malloc(sizeof(float) * (size_t)lwork))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    sgesdd_("S", &M, &N, cm, &M, s, u, &M, vh, &K, work, &lwork, iwork, &info, 1);
    if (info) {
        rc = sd_err(SD_EFORMAT, "SVD: LAPACK sgesdd %s (info %d)", info > 0 ? "did not converge" : "failed", info);
        goto out;
    }
    for (int64_t i = 0; i < m; i++)
        for (int j = 0; j < rank; j++) up[i * rank + j] = u[(int64_t)j * m + i] * s[j];
    for (int j = 0; j < rank; j++)
        for (int64_t x = 0; x < n; x++) down[(int64_t)j * n + x] = vh[x * k + j];
    /* hi = quantile(cat(U.flatten(), Vh.flatten()), q); clamp both to [-hi, hi] */
    size_t nu = (size_t)(m * rank), nd = (size_t)(rank * n);
    if (!(dist = malloc(sizeof(float) * (nu + nd)))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(dist, up, nu * sizeof *dist);
    memcpy(dist + nu, down, nd * sizeof *dist);
    float hi = sd_quantile_f32(dist, nu + nd, (float)clamp_quantile), lo = -hi;
    /* torch.clamp(x, min, max) = min(max(x, min), max): with hi < 0 everything becomes hi */
    for (size_t i = 0; i < nu; i++) up[i] = fminf(fmaxf(up[i], lo), hi);
    for (size_t i = 0; i < nd; i++) down[i] = fminf(fmaxf(down[i], lo), hi);
out:
    free(cm);
    free(s);
    free(vh);
    free(u);
    free(iwork);
    free(work);
    free(dist);
    return rc;
}

/* ---- the two models ----------------------------------------------------------------------------- */

static const sd_tensor *cand_weight(const sd_lora_candidate *c)
{
    const sd_param *p = c->lin ? c->lin->w : c->conv->w;
    return &p->value;
}

/* The layer's weight as f32 [out, in·kh·kw]. */
static int read_weight(const sd_lora_candidate *c, const char *model, float *dst, size_t n)
{
    const sd_tensor *t = cand_weight(c);
    if ((size_t)sd_tensor_numel(t) != n || !t->data || t->device != SD_DEV_CPU)
        return sd_err(SD_EFORMAT, "%s: %s: unexpected weight", model, c->name);
    switch (t->dtype) {
    case SD_F32: memcpy(dst, t->data, n * sizeof *dst); break;
    case SD_F16: sd_f16_to_f32_n(t->data, dst, n); break;
    case SD_BF16: sd_bf16_to_f32_n(t->data, dst, n); break;
    default: return sd_err(SD_EFORMAT, "%s: %s: weights of an unsupported dtype", model, c->name);
    }
    return SD_OK;
}

/* Round n values to fp16 (prec 1) or bf16 (prec 2) in place. */
static void round_prec(float *v, size_t n, int prec)
{
    if (prec == 1 || prec == 2) sd_round_half_n(v, n, prec == 2);
}

/* diff = tuned - org for candidate pair (a, b); *maxabs = max |diff|. */
static int module_diff(const sd_lora_candidate *a, const sd_lora_candidate *b, const sd_model *org,
                       const sd_model *tuned, int load_prec, float *diff, float *tmp, size_t n, float *maxabs)
{
    int rc = read_weight(a, org->path, tmp, n);
    if (!rc) rc = read_weight(b, tuned->path, diff, n);
    if (rc) return rc;
    if (load_prec) {
        round_prec(tmp, n, load_prec);
        round_prec(diff, n, load_prec);
    }
    for (size_t i = 0; i < n; i++) diff[i] -= tmp[i];
    if (load_prec) round_prec(diff, n, load_prec);
    float mx = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(diff[i]);
        if (!isfinite(d))
            return sd_err(SD_EFORMAT, "%s: %s: the difference to %s is not finite", tuned->path, b->name, org->path);
        if (d > mx) mx = d;
    }
    *maxabs = mx;
    return SD_OK;
}

static int walk(sd_model *m, const sd_lora_net_args *args, sd_lora_candidate **v, size_t *n, size_t *nte)
{
    sd_lora_network_opts no;
    memset(&no, 0, sizeof no);
    no.args = args;
    no.with_unet = no.with_te = 1;
    no.sdxl = m->cfg.family == SD_FAMILY_SDXL;
    no.te2 = m->have_clip2 ? &m->clip2 : NULL;
    return sd_lora_network_candidates(&m->unet, &m->clip, &no, v, n, nte);
}

void sd_lora_extraction_free(sd_lora_extraction *x)
{
    if (!x) return;
    for (size_t i = 0; i < x->n; i++) {
        free(x->mods[i].up);
        free(x->mods[i].down);
    }
    free(x->mods);
    memset(x, 0, sizeof *x);
}

int sd_lora_extract(sd_model *org, sd_model *tuned, const sd_lora_extract_opts *o, sd_lora_extraction *out)
{
    memset(out, 0, sizeof *out);
    int sdxl = org->cfg.family == SD_FAMILY_SDXL;
    sd_lora_net_args args;
    char cd[48], ca[48];
    snprintf(cd, sizeof cd, "conv_dim=%d", o->conv_dim);
    snprintf(ca, sizeof ca, "conv_alpha=%d", o->conv_dim);
    const char *items[2] = { cd, ca };
    /* lora.create_network(1.0, dim, dim, ..., conv_dim=conv_dim, conv_alpha=conv_dim) */
    int rc = sd_lora_net_args_parse(&args, sdxl, o->dim, (double)o->dim, items, o->conv_dim > 0 ? 2 : 0);
    if (rc) return rc;
    sd_lora_candidate *va = NULL, *vb = NULL;
    size_t na = 0, nb = 0, ta = 0, tb = 0, maxn = 0;
    float *diff = NULL, *tmp = NULL;
    if ((rc = walk(org, &args, &va, &na, &ta)) || (rc = walk(tuned, &args, &vb, &nb, &tb))) goto out;
    if (na != nb || ta != tb) {
        rc = sd_err(SD_EFORMAT, "%s: %zu LoRA target layers (%zu text encoder), %s has %zu (%zu): not the same model "
                    "architecture", tuned->path, nb, tb, org->path, na, ta);
        goto out;
    }
    for (size_t i = 0; i < na; i++) {
        const sd_lora_candidate *a = &va[i], *b = &vb[i];
        if (strcmp(a->name, b->name) || a->in != b->in || a->out != b->out || a->kh != b->kh || a->kw != b->kw) {
            rc = sd_err(SD_EFORMAT, "%s: layer %s [%lld,%lld,%d,%d] does not match %s's %s [%lld,%lld,%d,%d]",
                        tuned->path, b->name, (long long)b->out, (long long)b->in, b->kh, b->kw, org->path, a->name,
                        (long long)a->out, (long long)a->in, a->kh, a->kw);
            goto out;
        }
        size_t n = (size_t)(a->out * a->in * a->kh * a->kw);
        if (n > maxn) maxn = n;
    }
    if (!(diff = malloc(sizeof(float) * (maxn ? maxn : 1))) || !(tmp = malloc(sizeof(float) * (maxn ? maxn : 1))) ||
        !(out->mods = calloc(na ? na : 1, sizeof *out->mods))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    /* the text encoder: extracted only when some module differs by more than min_diff */
    out->te_candidates = ta;
    for (size_t i = 0; i < ta; i++) {
        size_t n = (size_t)(va[i].out * va[i].in * va[i].kh * va[i].kw);
        float mx;
        if ((rc = module_diff(&va[i], &vb[i], org, tuned, o->load_prec, diff, tmp, n, &mx))) goto out;
        if (mx > out->te_max_diff) out->te_max_diff = mx;
        if ((double)mx > o->min_diff) out->te_different = 1;
    }
    for (size_t i = out->te_different ? 0 : ta; i < na; i++) {
        const sd_lora_candidate *a = &va[i];
        int64_t rows = a->out, cols = a->in * a->kh * a->kw;
        size_t n = (size_t)(rows * cols);
        float mx;
        if ((rc = module_diff(a, &vb[i], org, tuned, o->load_prec, diff, tmp, n, &mx))) goto out;
        int k3 = a->kh > 1 || a->kw > 1;
        int64_t rank = k3 && o->conv_dim > 0 ? o->conv_dim : o->dim;
        if (rank > a->in) rank = a->in;     /* rank = min(rank, in_dim, out_dim) */
        if (rank > a->out) rank = a->out;
        sd_lora_extracted *e = &out->mods[out->n];
        snprintf(e->name, sizeof e->name, "%s", a->name);
        e->is_te = a->is_te;
        e->rank = (int)rank;
        e->max_diff = mx;
        e->up = malloc(sizeof(float) * (size_t)(rows * rank));
        e->down = malloc(sizeof(float) * (size_t)(rank * cols));
        out->n++;
        if (!e->up || !e->down) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            goto out;
        }
        /* kohya's module is a Conv2d (4-d weights) for convs and SD1's 1×1-conv proj_in/out */
        e->ndim = a->conv_host || a->conv1x1 ? 4 : 2;
        if (e->ndim == 4) {
            int64_t us[4] = { rows, rank, 1, 1 }, ds[4] = { rank, a->in, a->kh, a->kw };
            memcpy(e->up_shape, us, sizeof us);
            memcpy(e->down_shape, ds, sizeof ds);
        } else {
            e->up_shape[0] = rows, e->up_shape[1] = rank;
            e->down_shape[0] = rank, e->down_shape[1] = cols;
        }
        if ((rc = sd_lora_svd_factor(diff, rows, cols, (int)rank, o->clamp_quantile, e->up, e->down))) {
            sd_err_prefix(rc, "%s", a->name);
            goto out;
        }
        if (a->is_te) out->n_te++;
    }
out:
    free(va);
    free(vb);
    free(diff);
    free(tmp);
    if (rc) sd_lora_extraction_free(out);
    return rc;
}
