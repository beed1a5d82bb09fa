/* ONNX runtime: reductions, Softmax, LayerNormalization, BatchNormalization, MatMul, Gemm, Einsum,
 * Conv and pooling (models/onnx_ops.h, models/onnx_run.h). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tensor/ops.h"
#include "models/onnx_ops.h" /* last: it defines short internal names */

/* ---- reductions and normalisations --------------------------------------------------------- */

enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L2, R_SUMSQ };

static int reduce(ectx *e, int kind)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t ax[MAXD];
    int nax = 0, given = 0;
    int axes_input = e->opset >= 18 || (kind == R_SUM && e->opset >= 13);
    val *v = opt_in(e, 1);
    if (axes_input) {
        if (v) {
            if ((rc = ints_of(v, ax, MAXD, &nax, "axes"))) return rc;
            given = nax > 0;
        }
    } else {
        int n = aints(e, "axes", ax, MAXD);
        if (n == -2) return sd_err(SD_EFORMAT, "too many axes");
        if (n >= 0) {
            nax = n;
            given = 1;
        }
    }
    int red[MAXD] = { 0 };
    if (!given) {
        if (axes_input && ai(e, "noop_with_empty_axes", 0)) return val_copy_shape(e->out[0], a, a->nd, a->d);
        for (int i = 0; i < a->nd; i++) red[i] = 1;
    }
    for (int i = 0; i < nax; i++) {
        int64_t x;
        if ((rc = norm_axis(ax[i], a->nd, &x))) return rc;
        red[x] = 1;
    }
    int keep = (int)ai(e, "keepdims", 1);
    /* reduce one axis at a time, from the last */
    val cur = { 0 };
    if ((rc = val_copy_shape(&cur, a, a->nd, a->d))) return rc;
    int64_t count = 1;
    int first = 1;
    for (int x = a->nd - 1; x >= 0; x--) {
        if (!red[x]) continue;
        int64_t outer = prod(cur.d, 0, x), R = cur.d[x], inner = prod(cur.d, x + 1, cur.nd);
        count *= R;
        int64_t d[MAXD];
        for (int i = 0; i < cur.nd; i++) d[i] = cur.d[i];
        d[x] = 1;
        val nx = { 0 };
        if ((rc = val_alloc(&nx, SD_OV_F32, cur.nd, d))) break;
        int op = kind;
        int sq = first && (kind == R_L2 || kind == R_SUMSQ);
        if (kind == R_MEAN || kind == R_L2 || kind == R_SUMSQ) op = R_SUM;
        if ((op == R_MAX || op == R_MIN) && R == 0) {
            free(nx.p);
            free(cur.p);
            return sd_err(SD_EFORMAT, "ReduceMax/Min over an empty axis");
        }
#pragma omp parallel for collapse(2) schedule(static) if (outer * inner > 4096)
        for (int64_t o = 0; o < outer; o++)
            for (int64_t i = 0; i < inner; i++) {
                const float *s = F(&cur) + o * R * inner + i;
                double acc = op == R_PROD ? 1.0 : op == R_MAX ? -INFINITY : op == R_MIN ? INFINITY : 0.0;
                for (int64_t k = 0; k < R; k++) {
                    double t = s[k * inner];
                    if (sq) t *= t;
                    if (op == R_SUM)
                        acc += t;
                    else if (op == R_PROD)
                        acc *= t;
                    else if (op == R_MAX)
                        acc = t > acc || isnan(t) ? t : acc;
                    else
                        acc = t < acc || isnan(t) ? t : acc;
                }
                F(&nx)[o * inner + i] = (float)acc;
            }
        free(cur.p);
        cur = nx;
        first = 0;
    }
    if (rc) {
        free(cur.p);
        return rc;
    }
    if (first && (kind == R_L2 || kind == R_SUMSQ))
        for (int64_t i = 0; i < cur.n; i++) F(&cur)[i] *= F(&cur)[i];
    for (int64_t i = 0; i < cur.n; i++) {
        if (kind == R_MEAN) F(&cur)[i] = count ? F(&cur)[i] / (float)count : NAN;
        if (kind == R_L2) F(&cur)[i] = sqrtf(F(&cur)[i]);
    }
    if (!keep) {
        int nd = 0;
        for (int i = 0; i < cur.nd; i++)
            if (!red[i]) cur.d[nd++] = cur.d[i];
        cur.nd = nd;
    }
    free(e->out[0]->p);
    *e->out[0] = cur;
    return SD_OK;
}

static int op_rmean(ectx *e) { return reduce(e, R_MEAN); }
static int op_rsum(ectx *e) { return reduce(e, R_SUM); }
static int op_rmax(ectx *e) { return reduce(e, R_MAX); }
static int op_rmin(ectx *e) { return reduce(e, R_MIN); }
static int op_rprod(ectx *e) { return reduce(e, R_PROD); }
static int op_rl2(ectx *e) { return reduce(e, R_L2); }
static int op_rsumsq(ectx *e) { return reduce(e, R_SUMSQ); }

static int softmax(ectx *e, int logsm)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t ax;
    if ((rc = norm_axis(ai(e, "axis", e->opset >= 13 ? -1 : 1), a->nd, &ax))) return rc;
    int64_t outer, R, inner;
    if (e->opset >= 13) {
        outer = prod(a->d, 0, (int)ax);
        R = a->d[ax];
        inner = prod(a->d, (int)ax + 1, a->nd);
    } else {
        outer = prod(a->d, 0, (int)ax);
        R = prod(a->d, (int)ax, a->nd);
        inner = 1;
    }
    if ((rc = val_alloc(e->out[0], SD_OV_F32, a->nd, a->d))) return rc;
#pragma omp parallel for collapse(2) schedule(static) if (outer * inner * R > 65536)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *x = F(a) + o * R * inner + i;
            float *y = F(e->out[0]) + o * R * inner + i;
            float m = -INFINITY;
            for (int64_t k = 0; k < R; k++) m = fmaxf(m, x[k * inner]);
            double s = 0;
            for (int64_t k = 0; k < R; k++) {
                float t = expf(x[k * inner] - m);
                if (!logsm) y[k * inner] = t;
                s += t;
            }
            float ls = (float)log(s), inv = (float)(1.0 / s);
            for (int64_t k = 0; k < R; k++) y[k * inner] = logsm ? x[k * inner] - m - ls : y[k * inner] * inv;
        }
    return SD_OK;
}
static int op_softmax(ectx *e) { return softmax(e, 0); }
static int op_logsoftmax(ectx *e) { return softmax(e, 1); }

static int op_layernorm(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    const val *a = e->in[0], *g = e->in[1], *b = opt_in(e, 2);
    if (b && b->dt != SD_OV_F32) return sd_err(SD_EFORMAT, "LayerNormalization bias is not float");
    int64_t ax;
    if ((rc = norm_axis(ai(e, "axis", -1), a->nd, &ax))) return rc;
    float eps = af(e, "epsilon", 1e-5f);
    int64_t outer = prod(a->d, 0, (int)ax), D = prod(a->d, (int)ax, a->nd);
    if ((g->n != D && g->n != 1) || (b && b->n != D && b->n != 1))
        return sd_err(SD_EUNSUPPORTED, "LayerNormalization scale/bias of %lld elements for a normalised size %lld",
                      (long long)g->n, (long long)D);
    if ((rc = val_alloc(e->out[0], SD_OV_F32, a->nd, a->d))) return rc;
    if (e->ctx && g->n == D && (!b || b->n == D) && D && (e->nout < 2 || !e->out[1]) && (e->nout < 3 || !e->out[2])) {
        /* the library's layer norm (as the safetensors path runs it); mean and rstd in scratch */
        val st = { 0 };
        int64_t two = 2 * outer;
        if ((rc = val_alloc(&st, SD_OV_F32, 1, &two))) return rc;
        sd_tensor tx = sd_tensor_wrap(a->p, SD_F32, 2, (int64_t[]){ outer, D }),
                  ty = sd_tensor_wrap(e->out[0]->p, SD_F32, 2, (int64_t[]){ outer, D }),
                  tm = sd_tensor_wrap(F(&st), SD_F32, 1, &outer), ts = sd_tensor_wrap(F(&st) + outer, SD_F32, 1, &outer),
                  tg = sd_tensor_wrap(g->p, SD_F32, 1, &D), tb = b ? sd_tensor_wrap(b->p, SD_F32, 1, &D) : tg;
        rc = sd_op_layer_norm(e->ctx, &ty, &tm, &ts, &tx, &tg, b ? &tb : NULL, eps);
        val_free(&st);
        return rc;
    }
    int64_t sd[MAXD];
    for (int i = 0; i < a->nd; i++) sd[i] = i < ax ? a->d[i] : 1;
    float *mo = NULL, *io = NULL;
    if (e->nout > 1 && e->out[1]) {
        if ((rc = val_alloc(e->out[1], SD_OV_F32, a->nd, sd))) return rc;
        mo = F(e->out[1]);
    }
    if (e->nout > 2 && e->out[2]) {
        if ((rc = val_alloc(e->out[2], SD_OV_F32, a->nd, sd))) return rc;
        io = F(e->out[2]);
    }
#pragma omp parallel for schedule(static) if (outer * D > 65536)
    for (int64_t o = 0; o < outer; o++) {
        const float *x = F(a) + o * D;
        float *y = F(e->out[0]) + o * D;
        double s = 0, ss = 0;
        for (int64_t k = 0; k < D; k++) s += x[k];
        double mean = s / (double)D;
        for (int64_t k = 0; k < D; k++) ss += (x[k] - mean) * (x[k] - mean);
        float inv = (float)(1.0 / sqrt(ss / (double)D + eps)), m = (float)mean;
        for (int64_t k = 0; k < D; k++)
            y[k] = (x[k] - m) * inv * F(g)[g->n == 1 ? 0 : k] + (b ? F(b)[b->n == 1 ? 0 : k] : 0.0f);
        if (mo) mo[o] = m;
        if (io) io[o] = inv;
    }
    return SD_OK;
}

static int op_batchnorm(ectx *e)
{
    int rc = 0;
    for (int k = 0; k < 5 && !rc; k++) rc = need_in(e, k, SD_OV_F32);
    if (rc) return rc;
    if (ai(e, "training_mode", 0)) return sd_err(SD_EUNSUPPORTED, "BatchNormalization training_mode");
    const val *a = e->in[0];
    if (a->nd < 2) return sd_err(SD_EFORMAT, "BatchNormalization of a %d-D input", a->nd);
    int64_t C = a->d[1], N = a->d[0], inner = prod(a->d, 2, a->nd);
    for (int k = 1; k < 5; k++)
        if (e->in[k]->n != C)
            return sd_err(SD_EFORMAT, "BatchNormalization parameter %d has %lld elements, expected %lld", k,
                          (long long)e->in[k]->n, (long long)C);
    float eps = af(e, "epsilon", 1e-5f);
    if ((rc = val_alloc(e->out[0], SD_OV_F32, a->nd, a->d))) return rc;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            float sc = F(e->in[1])[c] / sqrtf(F(e->in[4])[c] + eps), sh = F(e->in[2])[c] - F(e->in[3])[c] * sc;
            const float *x = F(a) + (n * C + c) * inner;
            float *y = F(e->out[0]) + (n * C + c) * inner;
            for (int64_t i = 0; i < inner; i++) y[i] = x[i] * sc + sh;
        }
    return SD_OK;
}

/* ---- matrix products ----------------------------------------------------------------------- */

static int op_matmul(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    val A = *e->in[0], B = *e->in[1]; /* shape views */
    if (A.nd == 0 || B.nd == 0) return sd_err(SD_EFORMAT, "MatMul of a scalar");
    int a1 = A.nd == 1, b1 = B.nd == 1;
    if (a1) {
        A.nd = 2;
        A.d[1] = A.d[0];
        A.d[0] = 1;
    }
    if (b1) {
        B.nd = 2;
        B.d[1] = 1;
    }
    int64_t M = A.d[A.nd - 2], K = A.d[A.nd - 1], K2 = B.d[B.nd - 2], N = B.d[B.nd - 1];
    if (K != K2)
        return sd_err(SD_EFORMAT, "MatMul of [..,%lld,%lld] by [..,%lld,%lld]", (long long)M, (long long)K,
                      (long long)K2, (long long)N);
    /* batch shapes */
    val ba = { 0 }, bb = { 0 };
    ba.nd = A.nd - 2;
    bb.nd = B.nd - 2;
    for (int i = 0; i < ba.nd; i++) ba.d[i] = A.d[i];
    for (int i = 0; i < bb.nd; i++) bb.d[i] = B.d[i];
    const val *ops[2] = { &ba, &bb };
    int nb;
    int64_t bd[MAXD];
    if ((rc = bshape(ops, 2, &nb, bd))) return rc;
    int64_t od[MAXD];
    int ond = 0;
    for (int i = 0; i < nb; i++) od[ond++] = bd[i];
    if (!a1) od[ond++] = M;
    if (!b1) od[ond++] = N;
    if (ond > MAXD) return sd_err(SD_EUNSUPPORTED, "MatMul result over %d dimensions", MAXD);
    val o = { 0 };
    if ((rc = val_alloc(&o, SD_OV_F32, ond, od))) return rc;
    int64_t nbatch = prod(bd, 0, nb), bbn = prod(bb.d, 0, bb.nd);
    if (nbatch * M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
        free(o.p);
        return sd_err(SD_EUNSUPPORTED, "MatMul sizes beyond 2^31");
    }
    if (bbn == 1 && nb == ba.nd && prod(ba.d, 0, ba.nd) == nbatch) {
        /* B shared: one sgemm over all rows of A */
        if (nbatch * M > 0 && N > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(nbatch * M), (int)N, (int)K, 1.0f, F(&A),
                        (int)K, F(&B), (int)N, 0.0f, F(&o), (int)N);
    } else {
        bplan p;
        bplan_make(&p, ops, 2, nb, bd);
        for (int64_t bi = 0; bi < nbatch; bi++) {
            /* batch offsets: decompose bi over the full (uncoalesced) broadcast shape */
            int64_t r = bi, oa = 0, ob = 0, sa = 1, sb = 1;
            for (int i = nb - 1; i >= 0; i--) {
                int64_t c = r % bd[i];
                r /= bd[i];
                int ja = i - (nb - ba.nd), jb = i - (nb - bb.nd);
                int64_t da = ja >= 0 ? ba.d[ja] : 1, db = jb >= 0 ? bb.d[jb] : 1;
                if (da != 1) oa += c * sa;
                if (db != 1) ob += c * sb;
                sa *= da;
                sb *= db;
            }
            if (M && N)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, F(&A) + oa * M * K,
                            (int)K, F(&B) + ob * K * N, (int)N, 0.0f, F(&o) + bi * M * N, (int)N);
        }
        (void)p;
    }
    free(e->out[0]->p);
    *e->out[0] = o;
    return SD_OK;
}

static int op_gemm(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    const val *A = e->in[0], *B = e->in[1], *C = opt_in(e, 2);
    if (A->nd != 2 || B->nd != 2) return sd_err(SD_EFORMAT, "Gemm needs 2-D inputs");
    int ta = (int)ai(e, "transA", 0), tb = (int)ai(e, "transB", 0);
    float alpha = af(e, "alpha", 1.0f), beta = af(e, "beta", 1.0f);
    int64_t M = ta ? A->d[1] : A->d[0], K = ta ? A->d[0] : A->d[1], K2 = tb ? B->d[1] : B->d[0],
            N = tb ? B->d[0] : B->d[1];
    if (K != K2) return sd_err(SD_EFORMAT, "Gemm inner sizes %lld and %lld", (long long)K, (long long)K2);
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return sd_err(SD_EUNSUPPORTED, "Gemm sizes beyond 2^31");
    int64_t od[2] = { M, N };
    val o = { 0 };
    if (C && C->n && beta != 0) {
        if (C->dt != SD_OV_F32) return sd_err(SD_EFORMAT, "Gemm C is not float");
        if ((rc = expand_to(&o, C, 2, od))) return rc;
        if (o.nd != 2 || o.d[0] != M || o.d[1] != N) {
            free(o.p);
            return sd_err(SD_EFORMAT, "Gemm C does not broadcast to [%lld,%lld]", (long long)M, (long long)N);
        }
    } else {
        if ((rc = val_alloc(&o, SD_OV_F32, 2, od))) return rc;
        memset(o.p, 0, (size_t)o.n * 4);
        beta = 0;
    }
    if (M && N)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                    (int)K, alpha, F(A), (int)A->d[1], F(B), (int)B->d[1], beta, F(&o), (int)N);
    free(e->out[0]->p);
    *e->out[0] = o;
    return SD_OK;
}

/* Einsum with one or two operands, explicit ("ab,bc->ac") or implicit output, letters only (no
 * ellipsis, no label repeated within an operand): labels only one operand has and the output lacks
 * are summed first; then out = batched sgemm over [batch, kept-A, contracted] x [batch, contracted,
 * kept-B], permuted to the output's order. */
static int sum_label(val *v, char *lab, int ax)
{
    int nd = v->nd;
    int64_t outer = prod(v->d, 0, ax), R = v->d[ax], inner = prod(v->d, ax + 1, nd), d[MAXD];
    for (int i = 0, k = 0; i < nd; i++)
        if (i != ax) d[k++] = v->d[i];
    val t = { 0 };
    int rc = val_alloc(&t, SD_OV_F32, nd - 1, d);
    if (rc) return rc;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double acc = 0;
            for (int64_t k = 0; k < R; k++) acc += F(v)[(o * R + k) * inner + i];
            F(&t)[o * inner + i] = (float)acc;
        }
    free(v->p);
    *v = t;
    memmove(lab + ax, lab + ax + 1, strlen(lab + ax + 1) + 1);
    return SD_OK;
}

/* copy of v permuted so that its labels read `want` (a permutation of lab) */
static int permute_to(val *v, const char *lab, const char *want)
{
    int perm[MAXD], nd = v->nd;
    int64_t d[MAXD];
    for (int i = 0; i < nd; i++) {
        perm[i] = (int)(strchr(lab, want[i]) - lab);
        d[i] = v->d[perm[i]];
    }
    val t = { 0 };
    int rc = val_alloc(&t, SD_OV_F32, nd, d);
    if (rc) return rc;
    permute(t.p, v->p, 4, nd, v->d, perm);
    free(v->p);
    *v = t;
    return SD_OK;
}

static int op_einsum(ectx *e)
{
    const char *eq = as(e, "equation", NULL);
    if (!eq) return sd_err(SD_EFORMAT, "Einsum without an equation");
    char in[2][MAXD + 1], out[MAXD + 1];
    int nops = 0, n = 0, explicit_out = 0, no = 0;
    in[0][0] = in[1][0] = out[0] = 0;
    for (const char *c = eq;; c++) {
        if (*c == ' ') continue;
        if (*c == ',' || *c == '-' || !*c) {
            if (!explicit_out) {
                if (nops >= 2) return sd_err(SD_EUNSUPPORTED, "Einsum with more than two operands");
                in[nops][n] = 0;
                nops++;
                n = 0;
            }
            if (*c == '-') {
                if (c[1] != '>') return sd_err(SD_EFORMAT, "bad Einsum equation '%s'", eq);
                c++;
                explicit_out = 1;
            }
            if (!*c) break;
            continue;
        }
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')))
            return sd_err(SD_EUNSUPPORTED, "Einsum equation '%s' (letters only, no ellipsis)", eq);
        if (explicit_out) {
            if (no >= MAXD || strchr(out, *c)) return sd_err(SD_EUNSUPPORTED, "Einsum output labels in '%s'", eq);
            out[no++] = *c;
            out[no] = 0;
        } else {
            if (n >= MAXD) return sd_err(SD_EUNSUPPORTED, "Einsum operand of over %d labels", MAXD);
            in[nops][n] = 0;
            if (strchr(in[nops], *c)) return sd_err(SD_EUNSUPPORTED, "Einsum with a repeated label in '%s'", eq);
            in[nops][n++] = *c;
            in[nops][n] = 0;
        }
    }
    out[no] = 0;
    if (nops != e->nin) return sd_err(SD_EFORMAT, "Einsum '%s' for %d inputs", eq, e->nin);
    if (!explicit_out) { /* implicit: the labels seen once, in alphabetical order */
        for (int ch = 'A'; ch <= 'z'; ch++) {
            int cnt = 0;
            for (int k = 0; k < nops; k++) cnt += strchr(in[k], ch) != NULL && ch;
            if (cnt == 1 && no < MAXD) out[no++] = (char)ch;
        }
        out[no] = 0;
    }
    val v[2] = { { 0 }, { 0 } };
    int rc = SD_OK;
    for (int k = 0; k < nops && !rc; k++) {
        rc = need_in(e, k, SD_OV_F32);
        if (!rc && (int)strlen(in[k]) != e->in[k]->nd)
            rc = sd_err(SD_EFORMAT, "Einsum operand %d has %d axes, '%s' names %zu", k, e->in[k]->nd, in[k],
                        strlen(in[k]));
        if (!rc) rc = val_copy_shape(&v[k], e->in[k], e->in[k]->nd, e->in[k]->d);
    }
    for (int i = 0; !rc && out[i]; i++)
        if (!strchr(in[0], out[i]) && (nops < 2 || !strchr(in[1], out[i])))
            rc = sd_err(SD_EFORMAT, "Einsum output label '%c' is in no input", out[i]);
    /* sum the labels only one operand has and the output lacks */
    for (int k = 0; k < nops && !rc; k++)
        for (int i = (int)strlen(in[k]) - 1; i >= 0 && !rc; i--) {
            char l = in[k][i];
            if (!strchr(out, l) && (nops < 2 || !strchr(in[1 - k], l))) rc = sum_label(&v[k], in[k], i);
        }
    val res = { 0 };
    if (!rc && nops == 1) {
        rc = permute_to(&v[0], in[0], out);
        if (!rc) {
            res = v[0];
            v[0].p = NULL;
        }
    } else if (!rc) {
        char bl[MAXD + 1] = "", al[MAXD + 1] = "", cl[MAXD + 1] = "", bo[MAXD + 1] = "";
        int nb = 0, na = 0, nc = 0, nbo = 0;
        for (const char *c = in[0]; *c; c++) {
            int inb = strchr(in[1], *c) != NULL, ino = strchr(out, *c) != NULL;
            if (inb && ino)
                bl[nb++] = *c;
            else if (inb)
                cl[nc++] = *c;
            else
                al[na++] = *c;
        }
        for (const char *c = in[1]; *c; c++)
            if (!strchr(in[0], *c)) bo[nbo++] = *c;
        bl[nb] = al[na] = cl[nc] = bo[nbo] = 0;
        for (const char *c = in[0]; *c && !rc; c++) {
            const char *q = strchr(in[1], *c);
            if (q && v[0].d[c - in[0]] != v[1].d[q - in[1]])
                rc = sd_err(SD_EFORMAT, "Einsum label '%c' has sizes %lld and %lld", *c, (long long)v[0].d[c - in[0]],
                            (long long)v[1].d[q - in[1]]);
        }
        char wa[2 * MAXD + 2], wb[2 * MAXD + 2], wr[3 * MAXD + 3];
        snprintf(wa, sizeof wa, "%s%s%s", bl, al, cl);
        snprintf(wb, sizeof wb, "%s%s%s", bl, cl, bo);
        snprintf(wr, sizeof wr, "%s%s%s", bl, al, bo);
        int64_t Bt = 1, M = 1, K = 1, N = 1, rd[MAXD];
        for (int i = 0; i < nb; i++) Bt *= v[0].d[strchr(in[0], bl[i]) - in[0]];
        for (int i = 0; i < na; i++) M *= v[0].d[strchr(in[0], al[i]) - in[0]];
        for (int i = 0; i < nc; i++) K *= v[0].d[strchr(in[0], cl[i]) - in[0]];
        for (int i = 0; i < nbo; i++) N *= v[1].d[strchr(in[1], bo[i]) - in[1]];
        if (nb + na + nbo > MAXD) rc = sd_err(SD_EUNSUPPORTED, "Einsum result over %d axes", MAXD);
        if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) rc = sd_err(SD_EUNSUPPORTED, "Einsum sizes beyond 2^31");
        if (!rc) rc = permute_to(&v[0], in[0], wa);
        if (!rc) rc = permute_to(&v[1], in[1], wb);
        int k = 0;
        for (int i = 0; i < nb + na; i++) rd[k++] = v[0].d[i];
        for (int i = 0; i < nbo; i++) rd[k++] = v[1].d[nb + nc + i];
        if (!rc) rc = val_alloc(&res, SD_OV_F32, k, rd);
        for (int64_t b = 0; !rc && b < Bt; b++)
            if (M > 0 && N > 0 && K > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f,
                            F(&v[0]) + b * M * K, (int)K, F(&v[1]) + b * K * N, (int)N, 0.0f, F(&res) + b * M * N,
                            (int)N);
            else
                memset(F(&res) + b * M * N, 0, sizeof(float) * (size_t)(M * N));
        if (!rc) rc = permute_to(&res, wr, out);
    }
    free(v[0].p);
    free(v[1].p);
    if (rc) {
        free(res.p);
        return rc;
    }
    free(e->out[0]->p);
    *e->out[0] = res;
    return SD_OK;
}

/* ---- convolution and pooling ------------------------------------------------------------- */

typedef struct geo2 {
    int64_t k[2], s[2], dl[2], p0[2], p1[2], in[2], out[2];
} geo2;

/* kernel/strides/dilations/pads/auto_pad for 1-D (as 2-D with H = 1) and 2-D */
static int geometry(ectx *e, int sp, const int64_t *in, const int64_t *kdef, int ceil_mode, geo2 *g)
{
    int64_t k[2], s[2] = { 1, 1 }, dl[2] = { 1, 1 }, pads[4] = { 0, 0, 0, 0 };
    int nk = aints(e, "kernel_shape", k, 2);
    if (nk < 0) {
        if (!kdef) return sd_err(SD_EFORMAT, "no kernel_shape");
        for (int i = 0; i < sp; i++) k[i] = kdef[i];
    } else if (nk != sp)
        return sd_err(SD_EFORMAT, "kernel_shape of %d axes for %d spatial axes", nk, sp);
    int ns = aints(e, "strides", s, 2), nd = aints(e, "dilations", dl, 2), np = aints(e, "pads", pads, 4);
    if ((ns >= 0 && ns != sp) || (nd >= 0 && nd != sp) || (np >= 0 && np != 2 * sp) || ns == -2 || nd == -2 || np == -2)
        return sd_err(SD_EFORMAT, "strides/dilations/pads of the wrong length");
    const char *ap = as(e, "auto_pad", "NOTSET");
    memset(g, 0, sizeof *g);
    for (int i = 0; i < sp; i++) {
        int j = sp == 1 ? 1 : i; /* 1-D: the W axis */
        if (k[i] < 1 || s[i] < 1 || dl[i] < 1) return sd_err(SD_EFORMAT, "bad kernel, stride or dilation");
        g->k[j] = k[i];
        g->s[j] = s[i];
        g->dl[j] = dl[i];
        g->in[j] = in[i];
        int64_t ek = (k[i] - 1) * dl[i] + 1;
        if (!strcmp(ap, "NOTSET")) {
            g->p0[j] = pads[i];
            g->p1[j] = pads[i + sp];
        } else if (!strcmp(ap, "VALID")) {
        } else if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
            int64_t o = (in[i] + s[i] - 1) / s[i], tot = (o - 1) * s[i] + ek - in[i];
            if (tot < 0) tot = 0;
            g->p0[j] = !strcmp(ap, "SAME_UPPER") ? tot / 2 : tot - tot / 2;
            g->p1[j] = tot - g->p0[j];
        } else {
            return sd_err(SD_EFORMAT, "unknown auto_pad '%s'", ap);
        }
        if (g->p0[j] < 0 || g->p1[j] < 0) return sd_err(SD_EUNSUPPORTED, "negative pads");
        int64_t span = in[i] + g->p0[j] + g->p1[j] - ek;
        if (span < 0) return sd_err(SD_EFORMAT, "kernel larger than the padded input");
        g->out[j] = (ceil_mode ? (span + s[i] - 1) / s[i] : span / s[i]) + 1;
        if (ceil_mode && (g->out[j] - 1) * s[i] >= in[i] + g->p0[j]) g->out[j]--;
    }
    if (sp == 1) { g->k[0] = g->s[0] = g->dl[0] = g->in[0] = g->out[0] = 1; }
    return SD_OK;
}

static int op_conv(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    const val *x = e->in[0], *w = e->in[1], *b = opt_in(e, 2);
    int sp = x->nd - 2;
    if (sp != 1 && sp != 2) return sd_err(SD_EUNSUPPORTED, "Conv with %d spatial axes (1 or 2 supported)", sp);
    if (w->nd != x->nd) return sd_err(SD_EFORMAT, "Conv weight of rank %d for an input of rank %d", w->nd, x->nd);
    int64_t G = ai(e, "group", 1), N = x->d[0], C = x->d[1], M = w->d[0];
    if (G < 1 || C % G || M % G || w->d[1] != C / G)
        return sd_err(SD_EFORMAT, "Conv weight [%lld,%lld,..] does not fit %lld input channels in %lld groups",
                      (long long)M, (long long)w->d[1], (long long)C, (long long)G);
    if (b && (b->dt != SD_OV_F32 || b->n != M))
        return sd_err(SD_EFORMAT, "Conv bias of %lld elements for %lld outputs", (long long)(b ? b->n : 0),
                      (long long)M);
    geo2 g;
    if ((rc = geometry(e, sp, x->d + 2, w->d + 2, 0, &g))) return rc;
    int64_t od[4] = { N, M, g.out[0], g.out[1] };
    int64_t od1[3] = { N, M, g.out[1] };
    if ((rc = val_alloc(e->out[0], SD_OV_F32, x->nd, sp == 2 ? od : od1))) return rc;
    float *y = F(e->out[0]);
    int fast = g.dl[0] == 1 && g.dl[1] == 1 && g.s[0] == g.s[1] && sp == 2 && g.p0[0] < (1 << 20) &&
               g.p1[0] < (1 << 20) && g.p0[1] < (1 << 20) && g.p1[1] < (1 << 20);
    if (fast && (G == 1 || (G == C && M == C))) {
        sd_tensor tx = sd_tensor_wrap(x->p, SD_F32, 4, x->d), tw = sd_tensor_wrap(w->p, SD_F32, 4, w->d),
                  ty = sd_tensor_wrap(y, SD_F32, 4, od), tb;
        if (b) tb = sd_tensor_wrap(b->p, SD_F32, 1, &M);
        sd_conv2d_geom cg = { (int)g.s[0], (int)g.p0[0], (int)g.p0[1], (int)g.p1[0], (int)g.p1[1] };
        rc = G == 1 ? sd_op_conv2d(e->ctx, &ty, &tx, &tw, b ? &tb : NULL, cg)
                    : sd_op_conv2d_dw(e->ctx, &ty, &tx, &tw, b ? &tb : NULL, cg);
        return rc;
    }
    /* generic: im2col per image and group + sgemm */
    int64_t H = g.in[0], W = g.in[1], Ho = g.out[0], Wo = g.out[1], Cg = C / G, Mg = M / G, kh = g.k[0], kw = g.k[1];
    int64_t rows = Cg * kh * kw, cols = Ho * Wo;
    if (rows > INT32_MAX || cols > INT32_MAX || rows * cols > ((int64_t)1 << 32))
        return sd_err(SD_EUNSUPPORTED, "Conv im2col buffer beyond 2^32 elements");
    float *col = malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * sizeof(float));
    if (!col) return sd_err(SD_ENOMEM, "out of memory");
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < G; gi++) {
            const float *xs = F(x) + (n * C + gi * Cg) * H * W;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
            for (int64_t r = 0; r < rows; r++) {
                int64_t c = r / (kh * kw), ki = (r / kw) % kh, kj = r % kw;
                float *dst = col + r * cols;
                for (int64_t oi = 0; oi < Ho; oi++) {
                    int64_t ii = oi * g.s[0] - g.p0[0] + ki * g.dl[0];
                    for (int64_t oj = 0; oj < Wo; oj++) {
                        int64_t jj = oj * g.s[1] - g.p0[1] + kj * g.dl[1];
                        dst[oi * Wo + oj] = ii >= 0 && ii < H && jj >= 0 && jj < W ? xs[(c * H + ii) * W + jj] : 0.0f;
                    }
                }
            }
            float *ys = y + (n * M + gi * Mg) * cols;
            if (Mg && cols)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Mg, (int)cols, (int)rows, 1.0f,
                            F(w) + gi * Mg * rows, (int)rows, col, (int)cols, 0.0f, ys, (int)cols);
            if (b)
                for (int64_t m = 0; m < Mg; m++)
                    for (int64_t q = 0; q < cols; q++) ys[m * cols + q] += F(b)[gi * Mg + m];
        }
    free(col);
    return SD_OK;
}

static int pool(ectx *e, int avg, int global)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (rc) return rc;
    const val *x = e->in[0];
    int sp = x->nd - 2;
    if (global) {
        if (sp < 1) return sd_err(SD_EFORMAT, "global pool of a %d-D input", x->nd);
        int64_t d[MAXD], inner = prod(x->d, 2, x->nd), rows = x->d[0] * x->d[1];
        for (int i = 0; i < x->nd; i++) d[i] = i < 2 ? x->d[i] : 1;
        if ((rc = val_alloc(e->out[0], SD_OV_F32, x->nd, d))) return rc;
        for (int64_t r = 0; r < rows; r++) {
            const float *s = F(x) + r * inner;
            double acc = avg ? 0.0 : -INFINITY;
            for (int64_t i = 0; i < inner; i++) acc = avg ? acc + s[i] : (s[i] > acc ? s[i] : acc);
            F(e->out[0])[r] = (float)(avg ? acc / (double)inner : acc);
        }
        return SD_OK;
    }
    if (sp != 1 && sp != 2) return sd_err(SD_EUNSUPPORTED, "pooling with %d spatial axes (1 or 2 supported)", sp);
    geo2 g;
    if ((rc = geometry(e, sp, x->d + 2, NULL, (int)ai(e, "ceil_mode", 0), &g))) return rc;
    if (avg && (g.dl[0] != 1 || g.dl[1] != 1)) return sd_err(SD_EUNSUPPORTED, "AveragePool with dilations");
    if (!avg && e->nout > 1 && e->out[1]) return sd_err(SD_EUNSUPPORTED, "MaxPool Indices output");
    int cip = (int)ai(e, "count_include_pad", 0);
    int64_t od[4] = { x->d[0], x->d[1], g.out[0], g.out[1] }, od1[3] = { x->d[0], x->d[1], g.out[1] };
    if ((rc = val_alloc(e->out[0], SD_OV_F32, x->nd, sp == 2 ? od : od1))) return rc;
    int64_t H = g.in[0], W = g.in[1], rows = x->d[0] * x->d[1];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t oi = 0; oi < g.out[0]; oi++)
            for (int64_t oj = 0; oj < g.out[1]; oj++) {
                double acc = avg ? 0.0 : -INFINITY;
                int64_t cnt = 0, cntp = 0;
                for (int64_t ki = 0; ki < g.k[0]; ki++)
                    for (int64_t kj = 0; kj < g.k[1]; kj++) {
                        int64_t ii = oi * g.s[0] - g.p0[0] + ki * g.dl[0], jj = oj * g.s[1] - g.p0[1] + kj * g.dl[1];
                        if (ii < H + g.p1[0] && jj < W + g.p1[1]) cntp++;
                        if (ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                        float v = F(x)[(r * H + ii) * W + jj];
                        if (avg)
                            acc += v;
                        else if (v > acc)
                            acc = v;
                        cnt++;
                    }
                if (avg) acc = (cip ? cntp : cnt) ? acc / (double)(cip ? cntp : cnt) : 0.0;
                F(e->out[0])[(r * g.out[0] + oi) * g.out[1] + oj] = (float)acc;
            }
    return SD_OK;
}
static int op_avgpool(ectx *e) { return pool(e, 1, 0); }
static int op_maxpool(ectx *e) { return pool(e, 0, 0); }
static int op_gavgpool(ectx *e) { return pool(e, 1, 1); }
static int op_gmaxpool(ectx *e) { return pool(e, 0, 1); }

const sd_onnx_opdef sd_onnx_ops_nn[] = {
    { "ReduceMean", op_rmean },
    { "ReduceSum", op_rsum },
    { "ReduceMax", op_rmax },
    { "ReduceMin", op_rmin },
    { "ReduceProd", op_rprod },
    { "ReduceL2", op_rl2 },
    { "ReduceSumSquare", op_rsumsq },
    { "Softmax", op_softmax },
    { "LogSoftmax", op_logsoftmax },
    { "LayerNormalization", op_layernorm },
    { "BatchNormalization", op_batchnorm },
    { "MatMul", op_matmul },
    { "Gemm", op_gemm },
    { "Einsum", op_einsum },
    { "Conv", op_conv },
    { "GlobalAveragePool", op_gavgpool },
    { "GlobalMaxPool", op_gmaxpool },
    { "AveragePool", op_avgpool },
    { "MaxPool", op_maxpool },
    { NULL, NULL },
};
