/* OFT module maths (see oft.h). */
#include "nn/oft.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "nn/nn_internal.h"

/* LAPACK (OpenBLAS exports it): LU factorisation with partial pivoting and the inverse from it. */
extern void dgetrf_(const int *m, const int *n, double *a, const int *lda, int *ipiv, int *info);
extern void dgetri_(const int *n, double *a, const int *lda, const int *ipiv, double *work, const int *lwork,
                    int *info);

/* Workspace of the host maths for one n: 4 n×n doubles, the pivots and dgetri's work. */
typedef struct oft_ws {
    double *q0, *ainv, *t1, *t2, *work;
    int *ipiv;
    int lwork;
} oft_ws;

static void ws_free(oft_ws *w)
{
    free(w->q0);
    free(w->ipiv);
    memset(w, 0, sizeof *w);
}

static int ws_init(oft_ws *w, int n)
{
    memset(w, 0, sizeof *w);
    size_t nn = (size_t)n * (size_t)n;
    w->lwork = 64 * n;
    w->q0 = malloc((4 * nn + (size_t)w->lwork) * sizeof(double));
    w->ipiv = malloc((size_t)n * sizeof(int));
    if (!w->q0 || !w->ipiv) {
        ws_free(w);
        return sd_err(SD_ENOMEM, "OFT: out of memory for a %dx%d block", n, n);
    }
    w->ainv = w->q0 + nn;
    w->t1 = w->ainv + nn;
    w->t2 = w->t1 + nn;
    w->work = w->t2 + nn;
    return SD_OK;
}

/* ‖B − Bᵀ‖ over all blocks, and the clamp factor s = (min(norm, c) + 1e-8) / (norm + 1e-8). */
static double q_norm(const double *b, int k, int n, double c, double *s)
{
    double acc = 0;
    for (int64_t kk = 0; kk < k; kk++) {
        const double *bk = b + kk * n * n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double q = bk[i * n + j] - bk[j * n + i];
                acc += q * q;
            }
    }
    double norm = sqrt(acc);
    *s = ((norm < c ? norm : c) + 1e-8) / (norm + 1e-8);
    return norm;
}

/* For block bk: q0 = B − Bᵀ, ainv = (I − s·q0)⁻¹. */
static int block_prep(oft_ws *w, const double *bk, int n, double s)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double q = bk[i * n + j] - bk[j * n + i];
            w->q0[i * n + j] = q;
            w->ainv[i * n + j] = (i == j) - s * q;
        }
    /* a row-major matrix is its transpose column-major: inverting that gives the transpose of the
       inverse column-major, i.e. the inverse row-major */
    int info = 0;
    dgetrf_(&n, &n, w->ainv, &n, w->ipiv, &info);
    if (info > 0) return sd_err(SD_ERANGE, "OFT: I - Q is singular");
    if (info < 0) return sd_err(SD_EINVAL, "OFT: dgetrf argument %d", -info);
    dgetri_(&n, w->ainv, &n, w->ipiv, w->work, &w->lwork, &info);
    if (info) return sd_err(SD_ERANGE, "OFT: I - Q is singular (dgetri %d)", info);
    return SD_OK;
}

static int rotation(oft_ws *w, const double *blocks, int k, int n, double c, double m, double *rw)
{
    double s;
    q_norm(blocks, k, n, c, &s);
    for (int kk = 0; kk < k; kk++) {
        const double *bk = blocks + (int64_t)kk * n * n;
        int rc = block_prep(w, bk, n, s);
        if (rc) return rc;
        /* t1 = I + Q; R = t1 · ainv */
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) w->t1[i * n + j] = (i == j) + s * w->q0[i * n + j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, w->t1, n, w->ainv, n, 0.0, w->t2, n);
        double *rk = rw + (int64_t)kk * n * n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) rk[i * n + j] = m * (w->t2[i * n + j] - (i == j)) + (i == j);
    }
    return SD_OK;
}

static int rotation_backward(oft_ws *w, const double *blocks, int k, int n, double c, double m, const double *drw,
                             double *dblocks, double *dq_all)
{
    double s;
    double norm = q_norm(blocks, k, n, c, &s);
    int64_t nn = (int64_t)n * n;
    /* dQ per block (into dq_all, k·n·n), and g_s = Σ dQ ⊙ Q0 */
    double gs = 0;
    for (int kk = 0; kk < k; kk++) {
        int rc = block_prep(w, blocks + kk * nn, n, s);
        if (rc) return rc;
        double *dq = dq_all + kk * nn;
        const double *g = drw + kk * nn;
        /* G = m · dRw (t1); dP = G·Ainvᵀ; dAinv = Pᵀ·G with P = I + Q; dA = −Ainvᵀ·dAinv·Ainvᵀ;
           dQ = dP − dA = G·Ainvᵀ + Ainvᵀ·Pᵀ·G·Ainvᵀ */
        for (int64_t i = 0; i < nn; i++) w->t1[i] = m * g[i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0, w->t1, n, w->ainv, n, 0.0, dq, n);
        /* t2 = Pᵀ·(G·Ainvᵀ): Pᵀ = I − Q */
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) w->t1[i * n + j] = (i == j) - s * w->q0[i * n + j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, w->t1, n, dq, n, 0.0, w->t2, n);
        /* dq += Ainvᵀ · t2 */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, n, 1.0, w->ainv, n, w->t2, n, 1.0, dq, n);
        for (int64_t i = 0; i < nn; i++) gs += dq[i] * w->q0[i];
    }
    /* s = a / b, a = clamp(norm, max c) + 1e-8, b = norm + 1e-8 (the terms torch's autograd gives) */
    double a = (norm <= c ? norm : c) + 1e-8, b = norm + 1e-8;
    double gnorm = -gs * a / (b * b) + (norm <= c ? gs / b : 0.0);
    double f = norm > 0 ? gnorm / norm : 0.0;
    for (int kk = 0; kk < k; kk++) {
        const double *bk = blocks + kk * nn;
        double *dq = dq_all + kk * nn;
        double *db = dblocks + kk * nn;
        /* dQ0 = s·dQ + f·Q0; dB = dQ0 − dQ0ᵀ */
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double q0ij = bk[i * n + j] - bk[j * n + i];
                double d1 = s * dq[i * n + j] + f * q0ij;
                double d2 = s * dq[j * n + i] - f * q0ij;
                db[i * n + j] += d1 - d2;
            }
    }
    return SD_OK;
}

int sd_oft_rotation(const double *blocks, int k, int n, double constraint, double multiplier, double *rw)
{
    oft_ws w;
    int rc = ws_init(&w, n);
    if (!rc) rc = rotation(&w, blocks, k, n, constraint, multiplier, rw);
    ws_free(&w);
    return rc;
}

int sd_oft_rotation_backward(const double *blocks, int k, int n, double constraint, double multiplier,
                             const double *drw, double *dblocks)
{
    oft_ws w;
    int rc = ws_init(&w, n);
    double *dq = rc ? NULL : malloc((size_t)k * (size_t)n * (size_t)n * sizeof *dq);
    if (!rc && !dq) rc = sd_err(SD_ENOMEM, "OFT: out of memory");
    if (!rc) rc = rotation_backward(&w, blocks, k, n, constraint, multiplier, drw, dblocks, dq);
    free(dq);
    ws_free(&w);
    return rc;
}

/* ---- the module ---------------------------------------------------------------------------- */

int sd_oft_init(sd_oft *o, sd_params *reg, const char *name, int64_t out, int64_t row, int dim, double alpha)
{
    memset(o, 0, sizeof *o);
    if (dim < 1 || out < 1 || row < 1) return sd_err(SD_EINVAL, "OFT '%s': bad dim or shape", name);
    if (out % dim)
        return sd_err(SD_EINVAL, "OFT '%s': %lld output rows are not divisible by network_dim %d (the blocks must "
                      "tile the rows)", name, (long long)out, dim);
    o->k = dim;
    o->n = (int)(out / dim);
    o->out = out;
    o->row = row;
    o->alpha = alpha;
    o->multiplier = 1.0f;
    char key[512];
    snprintf(key, sizeof key, "%s", name);
    return sd_params_add(reg, key, "oft_blocks", 3, (int64_t[]){ o->k, o->n, o->n }, SD_PARAM_TRAINABLE, &o->blocks);
}

void sd_oft_free(sd_oft *o)
{
    if (!o) return;
    sd_tensor_free(&o->r);
    free(o->hb);
    free(o->hb_last);
    free(o->hf);
    free(o->dd);
    if (o->ws) ws_free(o->ws);
    free(o->ws);
    o->hb = o->hb_last = o->hf = NULL;
    o->dd = NULL;
    o->ws = NULL;
    o->have_r = 0;
}

static size_t block_numel(const sd_oft *o) { return (size_t)o->k * (size_t)o->n * (size_t)o->n; }

/* Make o->r current for the blocks' values. */
static int refresh(sd_oft *o)
{
    size_t bn = block_numel(o);
    const sd_tensor *b = &o->blocks->value;
    if (b->dtype != SD_F32) return sd_err(SD_EINVAL, "OFT %s: blocks must be f32", o->blocks->key);
    if (!o->hb) {
        o->hb = malloc(bn * sizeof(float));
        o->hb_last = malloc(bn * sizeof(float));
        o->hf = malloc(bn * sizeof(float));
        o->dd = malloc(4 * bn * sizeof(double));
        o->ws = calloc(1, sizeof(oft_ws));
        if (!o->hb || !o->hb_last || !o->hf || !o->dd || !o->ws) return sd_err(SD_ENOMEM, "OFT: out of memory");
        int rc = ws_init(o->ws, o->n);
        if (rc) return rc;
    }
    if (o->r.data && (o->r.device != b->device || o->r.device_index != b->device_index)) {
        sd_tensor_free(&o->r);
        o->have_r = 0;
    }
    if (!o->r.data) {
        int rc = sd_tensor_alloc_on(&o->r, (sd_devkind)b->device, SD_F32, 3, (int64_t[]){ o->k, o->n, o->n });
        if (rc) return rc;
        o->have_r = 0;
    }
    int rc = sd_tensor_download(b, o->hb, bn * sizeof(float));
    if (rc) return rc;
    if (o->have_r && !memcmp(o->hb, o->hb_last, bn * sizeof(float))) return SD_OK;
    double *bd = o->dd, *rw = o->dd + bn;
    for (size_t i = 0; i < bn; i++) bd[i] = o->hb[i];
    rc = rotation(o->ws, bd, o->k, o->n, o->alpha * (double)o->out, o->multiplier, rw);
    for (size_t i = 0; i < bn && !rc; i++) o->hf[i] = (float)rw[i];
    if (!rc) rc = sd_tensor_upload(&o->r, o->hf, bn * sizeof(float));
    memcpy(o->hb_last, o->hb, bn * sizeof(float));
    o->have_r = !rc;
    return rc;
}

size_t sd_oft_scratch_bytes(const sd_oft *o)
{
    int64_t wn = o->out * o->row;
    /* forward: w in f32 and RW in f32 (half hosts); backward: w in f32, dRw */
    return 2 * nn_bytes(wn) + nn_bytes((int64_t)block_numel(o)) + 256;
}

/* w as an f32 [k, n, row] tensor (a view, or a converted copy in scratch). */
static int w_f32(sd_ctx *ctx, const sd_oft *o, const sd_tensor *w, sd_tensor *out)
{
    int64_t s3[3] = { o->k, o->n, o->row };
    if (sd_tensor_numel(w) != o->out * o->row || w->shape[0] != o->out)
        return sd_err(SD_EINVAL, "OFT %s: host weight does not have %lld rows of %lld", o->blocks->key,
                      (long long)o->out, (long long)o->row);
    if (w->dtype == SD_F32) return sd_tensor_reshape(w, 3, s3, out);
    int rc = nn_tensor(&ctx->scratch, out, 3, s3);
    sd_tensor wv;
    if (!rc) rc = sd_tensor_reshape(w, 3, s3, &wv);
    if (!rc) rc = sd_op_convert(ctx, out, &wv);
    return rc;
}

int sd_oft_weight(sd_ctx *ctx, sd_oft *o, const sd_tensor *w, sd_tensor *rw)
{
    int rc = refresh(o);
    if (rc) return rc;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor wf, c;
    int64_t s3[3] = { o->k, o->n, o->row };
    rc = w_f32(ctx, o, w, &wf);
    if (!rc) {
        if (rw->dtype == SD_F32) rc = sd_tensor_reshape(rw, 3, s3, &c);
        else rc = nn_tensor(&ctx->scratch, &c, 3, s3);
    }
    /* RW_k = Rw_kᵀ · W_k */
    if (!rc) rc = sd_op_matmul(ctx, &c, &o->r, 1, &wf, 0, 1.0f, 0.0f);
    if (!rc && rw->dtype != SD_F32) {
        sd_tensor rv;
        rc = sd_tensor_reshape(rw, 3, s3, &rv);
        if (!rc) rc = sd_op_convert(ctx, &rv, &c);
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_oft_weight_backward(sd_ctx *ctx, sd_oft *o, const sd_tensor *w, const sd_tensor *drw)
{
    if (!nn_has_grad(o->blocks)) return SD_OK;
    if (!o->have_r) return sd_err(SD_ESTATE, "OFT %s: backward without a forward", o->blocks->key);
    size_t bn = block_numel(o), mark = sd_arena_mark(&ctx->scratch);
    int64_t s3[3] = { o->k, o->n, o->row };
    sd_tensor wf, dv, dr;
    int rc = w_f32(ctx, o, w, &wf);
    if (!rc) rc = sd_tensor_reshape(drw, 3, s3, &dv);
    if (!rc) rc = nn_tensor(&ctx->scratch, &dr, 3, (int64_t[]){ o->k, o->n, o->n });
    /* dRw[n, m] = Σ_p W[n, p] · dRW[m, p] */
    if (!rc) rc = sd_op_matmul(ctx, &dr, &wf, 0, &dv, 1, 1.0f, 0.0f);
    /* dd: [blocks of the cached R | dL/dRw | dL/dB | dQ] */
    double *bd = o->dd, *g = o->dd + bn, *db = o->dd + 2 * bn, *dq = o->dd + 3 * bn;
    if (!rc) rc = sd_tensor_download(&dr, o->hf, bn * sizeof(float));
    if (!rc) {
        for (size_t i = 0; i < bn; i++) {
            bd[i] = o->hb_last[i];
            g[i] = o->hf[i];
            db[i] = 0;
        }
        rc = rotation_backward(o->ws, bd, o->k, o->n, o->alpha * (double)o->out, o->multiplier, g, db, dq);
    }
    for (size_t i = 0; i < bn && !rc; i++) o->hf[i] = (float)db[i];
    if (!rc) rc = sd_tensor_upload(&dr, o->hf, bn * sizeof(float));
    if (!rc) rc = sd_op_axpby(ctx, &o->blocks->grad, 1.0f, &dr, 1.0f);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}
