/* Internal: group norm (+ fused SiLU) and layer norm kernels (template; see kern.h). */
#ifndef SD_TENSOR_KERN_NORM_H
#define SD_TENSOR_KERN_NORM_H
#include "tensor/kern.h"
#include "tensor/kern_elem.h"

SD_KVEC void KN(sd_k_affine_act_row)(real *y, const real *x, int64_t n, real a, real b, sd_act act)
{
    if (act == SD_ACT_SILU) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = KN(sd_k_act1)(SD_ACT_SILU, x[i] * a + b);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * a + b;
    }
}

/* Σ gz·xhat and Σ gz over one channel, gz = dy·act'(xhat·ga + be). */
SD_KVEC void KN(sd_k_gn_bwd_sums)(const real *x, const real *dy, int64_t n, real mu, real rs, real ga, real be,
                                  sd_act act, double *sg, double *sb)
{
    double a = 0, b = 0;
    if (act == SD_ACT_SILU) {
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = 0; i < n; i++) {
            real xh = (x[i] - mu) * rs;
            real gz = dy[i] * KN(sd_k_dact1)(SD_ACT_SILU, xh * ga + be);
            a += (double)(gz * xh);
            b += (double)gz;
        }
    } else {
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = 0; i < n; i++) {
            real xh = (x[i] - mu) * rs;
            a += (double)(dy[i] * xh);
            b += (double)dy[i];
        }
    }
    *sg = a;
    *sb = b;
}

SD_KVEC void KN(sd_k_gn_bwd_dx)(real *dx, const real *x, const real *dy, int64_t n, real mu, real rs, real ga,
                                real be, real ma, real mb, sd_act act)
{
    if (act == SD_ACT_SILU) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            real xh = (x[i] - mu) * rs;
            real gz = dy[i] * KN(sd_k_dact1)(SD_ACT_SILU, xh * ga + be);
            dx[i] += rs * (gz * ga - ma - xh * mb);
        }
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            real xh = (x[i] - mu) * rs;
            dx[i] += rs * (dy[i] * ga - ma - xh * mb);
        }
    }
}

/* mean and biased variance of a run, in double (two passes, vectorised, fixed order). */
SD_KVEC void KN(sd_k_moments)(const real *x, int64_t n, double *mean, double *var)
{
    double s = 0, v = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)x[i];
    double mu = s / (double)n;
#pragma omp simd reduction(+ : v)
    for (int64_t i = 0; i < n; i++) { double d = (double)x[i] - mu; v += d * d; }
    *mean = mu;
    *var = v / (double)n;
}

/* x [n, c, s] with g groups. Statistics in double, two passes, fixed order. */
SD_KFN void KN(sd_k_group_norm)(sd_ctx *ctx, real *y, real *mean, real *rstd, const real *x,
                                const real *gamma, const real *beta, int64_t n, int64_t c,
                                int64_t s, int64_t g, real eps, sd_act act)
{
    int64_t cg = c / g, m = cg * s;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n * c * s > SD_K_CHUNK)
    for (int64_t ng = 0; ng < n * g; ng++) {
        const real *xg = x + ng * m;
        double mu, v;
        KN(sd_k_moments)(xg, m, &mu, &v);
        real rs = (real)(1.0 / sqrt(v + (double)eps)), mr = (real)mu;
        mean[ng] = mr;
        rstd[ng] = rs;
        int64_t g0 = (ng % g) * cg;
        for (int64_t ci = 0; ci < cg; ci++) {
            real ga = gamma ? gamma[g0 + ci] : 1, be = beta ? beta[g0 + ci] : 0;
            real a = rs * ga, b = be - mr * rs * ga;
            const real *xc = xg + ci * s;
            real *yc = y + ng * m + ci * s;
            KN(sd_k_affine_act_row)(yc, xc, s, a, b, act);
        }
    }
}

/* part: scratch [2, n, c] (per-sample channel sums for dgamma/dbeta). */
SD_KFN void KN(sd_k_group_norm_bwd)(sd_ctx *ctx, real *dx, real *dgamma, real *dbeta, const real *dy,
                                    const real *x, const real *mean, const real *rstd,
                                    const real *gamma, const real *beta, int64_t n, int64_t c,
                                    int64_t s, int64_t g, sd_act act, real *part)
{
    int64_t cg = c / g, m = cg * s;
    real *pg = part, *pb = part + n * c;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n * c * s > SD_K_CHUNK)
    for (int64_t ng = 0; ng < n * g; ng++) {
        const real *xg = x + ng * m, *dyg = dy + ng * m;
        real mu = mean[ng], rs = rstd[ng];
        int64_t nn = ng / g, g0 = (ng % g) * cg;
        double sa = 0, sb = 0;
        for (int64_t ci = 0; ci < cg; ci++) {
            real ga = gamma ? gamma[g0 + ci] : 1, be = beta ? beta[g0 + ci] : 0;
            const real *xc = xg + ci * s, *dyc = dyg + ci * s;
            double cgam, cbet;
            KN(sd_k_gn_bwd_sums)(xc, dyc, s, mu, rs, ga, be, act, &cgam, &cbet);
            pg[nn * c + g0 + ci] = (real)cgam;
            pb[nn * c + g0 + ci] = (real)cbet;
            sa += cbet * ga;      /* Σ dxhat */
            sb += cgam * ga;      /* Σ dxhat·xhat */
        }
        if (!dx) continue;
        real ma = (real)(sa / (double)m), mb = (real)(sb / (double)m);
        for (int64_t ci = 0; ci < cg; ci++) {
            real ga = gamma ? gamma[g0 + ci] : 1, be = beta ? beta[g0 + ci] : 0;
            const real *xc = xg + ci * s, *dyc = dyg + ci * s;
            KN(sd_k_gn_bwd_dx)(dx + ng * m + ci * s, xc, dyc, s, mu, rs, ga, be, ma, mb, act);
        }
    }
    if (dgamma || dbeta) {
        for (int64_t ch = 0; ch < c; ch++) {
            real a = 0, b = 0;
            for (int64_t nn = 0; nn < n; nn++) { a += pg[nn * c + ch]; b += pb[nn * c + ch]; }
            if (dgamma) dgamma[ch] += a;
            if (dbeta) dbeta[ch] += b;
        }
    }
}

SD_KVEC void KN(sd_k_ln_row)(real *y, const real *x, const real *gamma, const real *beta, int64_t c, real mr, real rs)
{
    if (gamma && beta) {
#pragma omp simd
        for (int64_t i = 0; i < c; i++) y[i] = (x[i] - mr) * rs * gamma[i] + beta[i];
    } else {
        for (int64_t i = 0; i < c; i++) y[i] = (x[i] - mr) * rs * (gamma ? gamma[i] : 1) + (beta ? beta[i] : 0);
    }
}

SD_KFN void KN(sd_k_layer_norm)(sd_ctx *ctx, real *y, real *mean, real *rstd, const real *x,
                                const real *gamma, const real *beta, int64_t rows, int64_t c, real eps)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * c > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) {
        double mu, v;
        KN(sd_k_moments)(x + r * c, c, &mu, &v);
        real rs = (real)(1.0 / sqrt(v + (double)eps)), mr = (real)mu;
        mean[r] = mr;
        rstd[r] = rs;
        KN(sd_k_ln_row)(y + r * c, x + r * c, gamma, beta, c, mr, rs);
    }
}

#ifndef SD_K_LN_ROWBLK
#define SD_K_LN_ROWBLK 64
#endif

/* One row of the layer-norm backward: bg += dy·xhat, bb += dy, dx += rstd·(dy·γ − mean(dy·γ) −
 * xhat·mean(dy·γ·xhat)). */
SD_KVEC void KN(sd_k_ln_bwd_row)(real *dx, real *bg, real *bb, const real *dy, const real *x, const real *gamma,
                                 int64_t c, real mu, real rs)
{
    double sa = 0, sb = 0;
#pragma omp simd reduction(+ : sa, sb)
    for (int64_t i = 0; i < c; i++) {
        real xh = (x[i] - mu) * rs, g = dy[i] * (gamma ? gamma[i] : 1);
        bg[i] += dy[i] * xh;
        bb[i] += dy[i];
        sa += (double)g;
        sb += (double)(g * xh);
    }
    if (!dx) return;
    real ma = (real)(sa / (double)c), mb = (real)(sb / (double)c);
#pragma omp simd
    for (int64_t i = 0; i < c; i++) {
        real xh = (x[i] - mu) * rs, g = dy[i] * (gamma ? gamma[i] : 1);
        dx[i] += rs * (g - ma - xh * mb);
    }
}

/* part: scratch [2, nblk, c] with nblk = ceil(rows / SD_K_LN_ROWBLK). */
SD_KFN void KN(sd_k_layer_norm_bwd)(sd_ctx *ctx, real *dx, real *dgamma, real *dbeta, const real *dy,
                                    const real *x, const real *mean, const real *rstd,
                                    const real *gamma, int64_t rows, int64_t c, real *part)
{
    int64_t nblk = (rows + SD_K_LN_ROWBLK - 1) / SD_K_LN_ROWBLK;
    real *pg = part, *pb = part + nblk * c;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * c > SD_K_CHUNK)
    for (int64_t blk = 0; blk < nblk; blk++) {
        real *bg = pg + blk * c, *bb = pb + blk * c;
        for (int64_t i = 0; i < c; i++) bg[i] = bb[i] = 0;
        int64_t r1 = (blk + 1) * SD_K_LN_ROWBLK < rows ? (blk + 1) * SD_K_LN_ROWBLK : rows;
        for (int64_t r = blk * SD_K_LN_ROWBLK; r < r1; r++)
            KN(sd_k_ln_bwd_row)(dx ? dx + r * c : NULL, bg, bb, dy + r * c, x + r * c, gamma, c, mean[r], rstd[r]);
    }
    if (dgamma || dbeta) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (nblk * c > SD_K_CHUNK)
        for (int64_t i = 0; i < c; i++) {
            real ga = 0, gb = 0;
            for (int64_t blk = 0; blk < nblk; blk++) { ga += pg[blk * c + i]; gb += pb[blk * c + i]; }
            if (dgamma) dgamma[i] += ga;
            if (dbeta) dbeta[i] += gb;
        }
    }
}

#endif
