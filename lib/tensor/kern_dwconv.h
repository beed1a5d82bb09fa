/* Internal: depthwise conv2d forward/backward (template; see kern.h): x [N,C,H,W], one kh×kw
 * filter per channel w [C,1,kh,kw], y [N,C,Ho,Wo]. Direct loops (a 7×7 depthwise filter has too
 * little work per output for im2col + GEMM to pay).
 * Partitions (fixed by the shape, never by the thread count):
 *   forward, dX   one (image, channel) plane per iteration; within a plane the taps run in
 *                 (ky, kx) order, the bias first.
 *   dW, db        one channel per iteration; images, then pixels, in order. */
#ifndef SD_TENSOR_KERN_DWCONV_H
#define SD_TENSOR_KERN_DWCONV_H
#include <omp.h>

#include "tensor/kern.h"

typedef struct sd_k_dwconv {
    int64_t n, c, h, w, kh, kw, ho, wo;
    int stride, pt, pl;
} sd_k_dwconv;

/* Output columns ox with 0 ≤ ox·s − pl + kx < w: [*o0, *o1). */
static inline void sd_k_dw_cols(const sd_k_dwconv *p, int64_t kx, int64_t *o0, int64_t *o1)
{
    int64_t s = p->stride, lo = p->pl - kx, hi = p->w - 1 + p->pl - kx;
    *o0 = lo > 0 ? (lo + s - 1) / s : 0;
    *o1 = hi < 0 ? 0 : hi / s + 1;
    if (*o1 > p->wo) *o1 = p->wo;
    if (*o0 > *o1) *o0 = *o1;
}

SD_KFN void KN(sd_k_conv2d_dw)(sd_ctx *ctx, const sd_k_dwconv *p, real *y, const real *x, const real *w,
                               const real *b)
{
    const int64_t planes = p->n * p->c, hw = p->ho * p->wo, inhw = p->h * p->w, kk = p->kh * p->kw;
    const int64_t s = p->stride;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (planes * hw * kk > 32768)
    for (int64_t pi = 0; pi < planes; pi++) {
        const int64_t c = pi % p->c;
        const real *xp = x + pi * inhw, *wp = w + c * kk;
        real *yp = y + pi * hw;
        const real bv = b ? b[c] : 0;
        for (int64_t i = 0; i < hw; i++) yp[i] = bv;
        for (int64_t oy = 0; oy < p->ho; oy++) {
            real *yr = yp + oy * p->wo;
            for (int64_t ky = 0; ky < p->kh; ky++) {
                const int64_t iy = oy * s - p->pt + ky;
                if (iy < 0 || iy >= p->h) continue;
                const real *xr = xp + iy * p->w;
                for (int64_t kx = 0; kx < p->kw; kx++) {
                    const real wv = wp[ky * p->kw + kx];
                    int64_t o0, o1;
                    sd_k_dw_cols(p, kx, &o0, &o1);
                    const int64_t off = kx - p->pl;
                    if (s == 1) {
#pragma omp simd
                        for (int64_t ox = o0; ox < o1; ox++) yr[ox] += wv * xr[ox + off];
                    } else {
                        for (int64_t ox = o0; ox < o1; ox++) yr[ox] += wv * xr[ox * s + off];
                    }
                }
            }
        }
    }
}

/* dx, dw, db += ... (any may be NULL). */
SD_KFN void KN(sd_k_conv2d_dw_bwd)(sd_ctx *ctx, const sd_k_dwconv *p, real *dx, real *dw, real *db,
                                   const real *dy, const real *x, const real *w)
{
    const int64_t planes = p->n * p->c, hw = p->ho * p->wo, inhw = p->h * p->w, kk = p->kh * p->kw;
    const int64_t s = p->stride;
    const int nt = ctx->threads;
    if (db) {
#pragma omp parallel for num_threads(nt) schedule(static) if (planes * hw > 16384)
        for (int64_t c = 0; c < p->c; c++) {
            real acc = 0;
            for (int64_t i = 0; i < p->n; i++) {
                const real *d = dy + (i * p->c + c) * hw;
                real t = 0;
                for (int64_t j = 0; j < hw; j++) t += d[j];
                acc += t;
            }
            db[c] += acc;
        }
    }
    if (dw) {
#pragma omp parallel for num_threads(nt) schedule(static) if (planes * hw * kk > 32768)
        for (int64_t c = 0; c < p->c; c++) {
            for (int64_t ky = 0; ky < p->kh; ky++)
                for (int64_t kx = 0; kx < p->kw; kx++) {
                    int64_t o0, o1;
                    sd_k_dw_cols(p, kx, &o0, &o1);
                    real acc = 0;
                    for (int64_t i = 0; i < p->n; i++) {
                        const real *d = dy + (i * p->c + c) * hw, *xp = x + (i * p->c + c) * inhw;
                        for (int64_t oy = 0; oy < p->ho; oy++) {
                            const int64_t iy = oy * s - p->pt + ky;
                            if (iy < 0 || iy >= p->h) continue;
                            const real *dr = d + oy * p->wo, *xr = xp + iy * p->w;
                            const int64_t off = kx - p->pl;
                            real t = 0;
                            for (int64_t ox = o0; ox < o1; ox++) t += dr[ox] * xr[ox * s + off];
                            acc += t;
                        }
                    }
                    dw[c * kk + ky * p->kw + kx] += acc;
                }
        }
    }
    if (dx) {
#pragma omp parallel for num_threads(nt) schedule(static) if (planes * hw * kk > 32768)
        for (int64_t pi = 0; pi < planes; pi++) {
            const int64_t c = pi % p->c;
            const real *d = dy + pi * hw, *wp = w + c * kk;
            real *dxp = dx + pi * inhw;
            for (int64_t oy = 0; oy < p->ho; oy++) {
                const real *dr = d + oy * p->wo;
                for (int64_t ky = 0; ky < p->kh; ky++) {
                    const int64_t iy = oy * s - p->pt + ky;
                    if (iy < 0 || iy >= p->h) continue;
                    real *xr = dxp + iy * p->w;
                    for (int64_t kx = 0; kx < p->kw; kx++) {
                        const real wv = wp[ky * p->kw + kx];
                        int64_t o0, o1;
                        sd_k_dw_cols(p, kx, &o0, &o1);
                        const int64_t off = kx - p->pl;
                        for (int64_t ox = o0; ox < o1; ox++) xr[ox * s + off] += wv * dr[ox];
                    }
                }
            }
        }
    }
}

#endif
