/* Internal: conv2d forward/backward (template; see kern.h).
 *
 * im2col in chunks of whole output rows (about SD_K_CONV_COLS columns), so the column buffer is a
 * few MB instead of K×Ho×Wo; each chunk is one sgemm [Cout × cols × Cin·kh·kw].
 * Partitions (all fixed by the shape, never by the thread count):
 *   forward   with ≥ 4 chunks in the batch: chunks in parallel, one single-threaded GEMM each;
 *             otherwise chunks in order with the GEMM cut into fixed blocks (gemm_par).
 *   dW        chunks split into P ≤ 4 consecutive groups, each summed into its own partial
 *             (group 0 straight into a zeroed partial), partials added to dW in group order;
 *             P = 1: chunks in order, gemm_par straight into dW.
 *   dX        col-gradient GEMM per chunk then col2im; chunks touching overlapping input rows are
 *             separated into phases (chunk index mod 2, chunks have ≥ kh rows), phase 0 first.
 * 3×3 stride-1 forward, dX and dW go to Winograd F(4×4,3×3) (kern_wino.h) when sd_k_conv_wino
 * says so; if the scratch arena cannot hold its buffers they fall back to im2col. */
#ifndef SD_TENSOR_KERN_CONV_H
#define SD_TENSOR_KERN_CONV_H
#include <omp.h>

#include "tensor/kern.h"
#include "tensor/kern_wino.h"

#ifndef SD_K_CONV_COLS
#define SD_K_CONV_COLS 512
#endif

typedef struct sd_k_conv {
    int64_t n, cin, h, w, cout, kh, kw, ho, wo;
    int stride, pt, pl;
    int64_t rows;    /* output rows per chunk */
    int64_t nch;     /* chunks per image */
    int64_t kdim;    /* cin·kh·kw */
    int direct;      /* 1×1, stride 1, no padding: the input is its own column matrix */
} sd_k_conv;

#ifndef SD_K_CONV_PLAN
#define SD_K_CONV_PLAN
static inline void sd_k_conv_plan(sd_k_conv *p, int64_t n, int64_t cin, int64_t h, int64_t w,
                                  int64_t cout, int64_t kh, int64_t kw, int64_t ho, int64_t wo,
                                  int stride, int pt, int pl)
{
    p->n = n; p->cin = cin; p->h = h; p->w = w; p->cout = cout; p->kh = kh; p->kw = kw;
    p->ho = ho; p->wo = wo; p->stride = stride; p->pt = pt; p->pl = pl;
    p->kdim = cin * kh * kw;
    int64_t r = (SD_K_CONV_COLS + wo - 1) / (wo ? wo : 1);
    if (r < kh) r = kh;        /* dX phases need chunks at least kh rows tall */
    if (r > ho) r = ho;
    if (r < 1) r = 1;
    p->rows = r;
    p->nch = ho ? (ho + r - 1) / r : 0;
    p->direct = kh == 1 && kw == 1 && stride == 1 && pt == 0 && pl == 0 && ho == h && wo == w;
}
#endif

/* Whether a 3×3 stride-1 product (forward, or dX with the channel roles swapped) goes to Winograd:
 * on request, or (auto) when each image has ≥ 1024 output pixels (64 tiles: the weight transform,
 * 36·cin·cout values, is then paid back) and both channel counts are ≥ 32 (GEMM K and M). Never
 * by batch size: an image's result must not depend on the batch it came in. */
static inline int KN(sd_k_conv_wino)(const sd_ctx *ctx, const sd_k_conv *p, int64_t opix)
{
    if (p->kh != 3 || p->kw != 3 || p->stride != 1 || ctx->conv_algo == SD_CONV_IM2COL) return 0;
    if (ctx->conv_algo == SD_CONV_WINOGRAD) return 1;
    return opix >= 1024 && p->cin >= 32 && p->cout >= 32 &&
           36.0 * (double)p->cin * (double)p->cout * sizeof(real) <= 512.0 * 1024 * 1024;
}

/* Forward (dx = 0) or input gradient (dx = 1, accumulated) by Winograd; SD_ENOMEM with nothing
 * written and the arena as it was when the buffers do not fit. */
SD_KFN int KN(sd_k_conv_wino_run)(sd_ctx *ctx, const sd_k_conv *p, int dx, real *y, const real *x,
                                  const real *w, const real *b)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    real *u = KN(sd_k_wino_weights)(ctx, w, p->cout, p->cin, dx);
    sd_k_wino q;
    if (!dx) sd_k_wino_plan(&q, p->n, p->cin, p->h, p->w, p->cout, p->ho, p->wo, p->pt, p->pl, SD_K_WINO_TILES);
    else sd_k_wino_plan(&q, p->n, p->cout, p->ho, p->wo, p->cin, p->h, p->w, 2 - p->pt, 2 - p->pl, SD_K_WINO_TILES);
    int rc = u ? KN(sd_k_wino_run)(ctx, &q, y, x, u, b, dx) : SD_ENOMEM;
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

/* col[k0..k1) rows for output rows [oy0, oy0+nr) of image x (one image [cin,h,w]). */
SD_KFN void KN(sd_k_im2col)(const sd_k_conv *p, const real *x, int64_t oy0, int64_t nr, real *col,
                            int64_t k0, int64_t k1)
{
    int64_t ncol = nr * p->wo;
    for (int64_t k = k0; k < k1; k++) {
        int64_t ci = k / (p->kh * p->kw), ky = (k / p->kw) % p->kh, kx = k % p->kw;
        const real *xc = x + ci * p->h * p->w;
        real *cr = col + (k - k0) * ncol;
        for (int64_t r = 0; r < nr; r++) {
            int64_t iy = (oy0 + r) * p->stride - p->pt + ky;
            real *dst = cr + r * p->wo;
            if (iy < 0 || iy >= p->h) { memset(dst, 0, (size_t)p->wo * sizeof(real)); continue; }
            const real *src = xc + iy * p->w;
            if (p->stride == 1) {
                int64_t off = kx - p->pl;   /* ix = ox + off */
                int64_t a = off < 0 ? -off : 0, b = p->w - off < p->wo ? p->w - off : p->wo;
                if (b < a) b = a;
                for (int64_t ox = 0; ox < a; ox++) dst[ox] = 0;
                if (b > a) memcpy(dst + a, src + a + off, (size_t)(b - a) * sizeof(real));
                for (int64_t ox = b; ox < p->wo; ox++) dst[ox] = 0;
            } else {
                /* valid ox: 0 ≤ ox·s + off < w */
                int64_t s = p->stride, off = kx - p->pl;
                int64_t a = off < 0 ? (-off + s - 1) / s : 0, b = p->w - off > 0 ? (p->w - off + s - 1) / s : 0;
                if (b > p->wo) b = p->wo;
                if (b < a) b = a;
                for (int64_t ox = 0; ox < a; ox++) dst[ox] = 0;
                for (int64_t ox = a; ox < b; ox++) dst[ox] = src[ox * s + off];
                for (int64_t ox = b; ox < p->wo; ox++) dst[ox] = 0;
            }
        }
    }
}

/* dx_img += col2im(colg) for output rows [oy0, oy0+nr). */
SD_KFN void KN(sd_k_col2im)(const sd_k_conv *p, real *dx, int64_t oy0, int64_t nr, const real *colg,
                            int64_t k0, int64_t k1)
{
    int64_t ncol = nr * p->wo;
    for (int64_t k = k0; k < k1; k++) {
        int64_t ci = k / (p->kh * p->kw), ky = (k / p->kw) % p->kh, kx = k % p->kw;
        real *xc = dx + ci * p->h * p->w;
        const real *cr = colg + k * ncol;
        for (int64_t r = 0; r < nr; r++) {
            int64_t iy = (oy0 + r) * p->stride - p->pt + ky;
            if (iy < 0 || iy >= p->h) continue;
            const real *src = cr + r * p->wo;
            real *dst = xc + iy * p->w;
            for (int64_t ox = 0; ox < p->wo; ox++) {
                int64_t ix = ox * p->stride - p->pl + kx;
                if (ix >= 0 && ix < p->w) dst[ix] += src[ox];
            }
        }
    }
}

static inline void KN(sd_k_conv_chunk)(const sd_k_conv *p, int64_t c, int64_t *img, int64_t *oy0, int64_t *nr)
{
    *img = c / p->nch;
    *oy0 = (c % p->nch) * p->rows;
    *nr = p->ho - *oy0 < p->rows ? p->ho - *oy0 : p->rows;
}

/* One output chunk; inner = 1: called from sequential code, parallelise inside (im2col by
 * K rows, GEMM by gemm_par); inner = 0: called from a parallel loop, single-threaded. */
SD_KFN void KN(sd_k_conv_fwd_chunk)(sd_ctx *ctx, const sd_k_conv *p, int64_t c, real *y, const real *x,
                                    const real *w, const real *b, real *cb, int inner)
{
    int64_t hw = p->ho * p->wo, inhw = p->h * p->w, nt = ctx->threads;
    int64_t img, oy0, nr;
    KN(sd_k_conv_chunk)(p, c, &img, &oy0, &nr);
    int64_t ncol = nr * p->wo;
    const real *xi = x + img * p->cin * inhw;
    real *yc = y + img * p->cout * hw + oy0 * p->wo;
    const real *col;
    int64_t ldcol;
    if (p->direct) { col = xi + oy0 * p->wo; ldcol = hw; }
    else {
        if (!inner) KN(sd_k_im2col)(p, xi, oy0, nr, cb, 0, p->kdim);
        else {
            int64_t kb = (p->kdim + 15) / 16;
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t t = 0; t < 16; t++) {
                int64_t k0 = t * kb, k1 = k0 + kb < p->kdim ? k0 + kb : p->kdim;
                if (k0 < k1) KN(sd_k_im2col)(p, xi, oy0, nr, cb + k0 * ncol, k0, k1);
            }
        }
        col = cb;
        ldcol = ncol;
    }
    if (b)
        for (int64_t co = 0; co < p->cout; co++)
            for (int64_t j = 0; j < ncol; j++) yc[co * hw + j] = b[co];
    if (!inner) KN(gemm)(0, 0, p->cout, ncol, p->kdim, 1, w, p->kdim, col, ldcol, b ? 1 : 0, yc, hw);
    else KN(gemm_par)((int)nt, 0, 0, p->cout, ncol, p->kdim, 1, w, p->kdim, col, ldcol, b ? 1 : 0, yc, hw);
}

SD_KFN int KN(sd_k_conv2d)(sd_ctx *ctx, const sd_k_conv *p, real *y, const real *x, const real *w,
                           const real *b)
{
    if (KN(sd_k_conv_wino)(ctx, p, p->ho * p->wo) && KN(sd_k_conv_wino_run)(ctx, p, 0, y, x, w, b) == SD_OK)
        return SD_OK;
    int64_t total = p->n * p->nch, colsz = p->kdim * p->rows * p->wo;
    int par = total >= 4, nt = ctx->threads;
    size_t mark = sd_arena_mark(&ctx->scratch);
    real *colbuf = NULL;
    if (!p->direct) {
        colbuf = KN(sd_k_scratch)(ctx, colsz * (par ? nt : 1));
        if (!colbuf) return SD_ENOMEM;
    }
    if (par) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t c = 0; c < total; c++)
            KN(sd_k_conv_fwd_chunk)(ctx, p, c, y, x, w, b, colbuf ? colbuf + (int64_t)omp_get_thread_num() * colsz : NULL, 0);
    } else {
        for (int64_t c = 0; c < total; c++) KN(sd_k_conv_fwd_chunk)(ctx, p, c, y, x, w, b, colbuf, 1);
    }
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

/* dX of one chunk (see sd_k_conv_fwd_chunk for `inner`). */
SD_KFN void KN(sd_k_conv_dx_chunk)(sd_ctx *ctx, const sd_k_conv *p, int64_t c, real *dx, const real *dy,
                                   const real *w, real *cb, int inner)
{
    int64_t hw = p->ho * p->wo, inhw = p->h * p->w;
    int nt = ctx->threads;
    int64_t img, oy0, nr;
    KN(sd_k_conv_chunk)(p, c, &img, &oy0, &nr);
    int64_t ncol = nr * p->wo;
    const real *dyc = dy + img * p->cout * hw + oy0 * p->wo;
    real *dxi = dx + img * p->cin * inhw;
    if (p->direct) {
        if (!inner) KN(gemm)(1, 0, p->cin, ncol, p->cout, 1, w, p->kdim, dyc, hw, 1, dxi + oy0 * p->wo, hw);
        else KN(gemm_par)(nt, 1, 0, p->cin, ncol, p->cout, 1, w, p->kdim, dyc, hw, 1, dxi + oy0 * p->wo, hw);
        return;
    }
    if (!inner) {
        KN(gemm)(1, 0, p->kdim, ncol, p->cout, 1, w, p->kdim, dyc, hw, 0, cb, ncol);
        KN(sd_k_col2im)(p, dxi, oy0, nr, cb, 0, p->kdim);
    } else {
        KN(gemm_par)(nt, 1, 0, p->kdim, ncol, p->cout, 1, w, p->kdim, dyc, hw, 0, cb, ncol);
        int64_t kk = p->kh * p->kw;   /* col2im split by input channel (disjoint dx planes) */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t ci = 0; ci < p->cin; ci++) KN(sd_k_col2im)(p, dxi, oy0, nr, cb, ci * kk, (ci + 1) * kk);
    }
}

SD_KFN int KN(sd_k_conv2d_bwd)(sd_ctx *ctx, const sd_k_conv *p, real *dx, real *dw, real *db,
                               const real *dy, const real *x, const real *w)
{
    int64_t total = p->n * p->nch, hw = p->ho * p->wo, inhw = p->h * p->w;
    int64_t colsz = p->kdim * p->rows * p->wo, wsz = p->cout * p->kdim;
    int nt = ctx->threads;
    size_t mark = sd_arena_mark(&ctx->scratch);

    if (db) {
#pragma omp parallel for num_threads(nt) schedule(static) if (p->cout * hw * p->n > 16384)
        for (int64_t co = 0; co < p->cout; co++) {
            real acc = 0;
            for (int64_t i = 0; i < p->n; i++) {
                const real *d = dy + (i * p->cout + co) * hw;
                real s = 0;
                for (int64_t j = 0; j < hw; j++) s += d[j];
                acc += s;
            }
            db[co] += acc;
        }
    }

    if (dw && KN(sd_k_conv_wino)(ctx, p, p->ho * p->wo)) {
        sd_k_wino q;
        sd_k_wino_plan(&q, p->n, p->cin, p->h, p->w, p->cout, p->ho, p->wo, p->pt, p->pl, SD_K_WINO_TILES_DW);
        if (KN(sd_k_wino_dw)(ctx, &q, dw, dy, x) == SD_OK) dw = NULL;
    }
    if (dw) {
        int64_t ng = total < 4 ? 1 : 4;
        real *part = NULL, *colbuf = NULL;
        if (ng > 1) {
            part = KN(sd_k_scratch)(ctx, ng * wsz);
            if (!part) goto nomem;
            memset(part, 0, (size_t)(ng * wsz) * sizeof(real));
        }
        if (!p->direct) {
            colbuf = KN(sd_k_scratch)(ctx, colsz * (ng > 1 ? nt : 1));
            if (!colbuf) goto nomem;
        }
        if (ng > 1) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t g = 0; g < ng; g++) {
                int64_t c0 = total * g / ng, c1 = total * (g + 1) / ng;
                real *cb = colbuf ? colbuf + (int64_t)omp_get_thread_num() * colsz : NULL;
                for (int64_t c = c0; c < c1; c++) {
                    int64_t img, oy0, nr;
                    KN(sd_k_conv_chunk)(p, c, &img, &oy0, &nr);
                    int64_t ncol = nr * p->wo;
                    const real *xi = x + img * p->cin * inhw, *col;
                    int64_t ldcol;
                    if (p->direct) { col = xi + oy0 * p->wo; ldcol = hw; }
                    else { KN(sd_k_im2col)(p, xi, oy0, nr, cb, 0, p->kdim); col = cb; ldcol = ncol; }
                    KN(gemm)(0, 1, p->cout, p->kdim, ncol, 1, dy + img * p->cout * hw + oy0 * p->wo, hw,
                             col, ldcol, 1, part + g * wsz, p->kdim);
                }
            }
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t i = 0; i < wsz; i++) {
                real s = part[i];
                for (int64_t g = 1; g < ng; g++) s += part[g * wsz + i];
                dw[i] += s;
            }
        } else {
            for (int64_t c = 0; c < total; c++) {
                int64_t img, oy0, nr;
                KN(sd_k_conv_chunk)(p, c, &img, &oy0, &nr);
                int64_t ncol = nr * p->wo;
                const real *xi = x + img * p->cin * inhw, *col;
                int64_t ldcol;
                if (p->direct) { col = xi + oy0 * p->wo; ldcol = hw; }
                else {
                    int64_t kb = (p->kdim + 15) / 16;
#pragma omp parallel for num_threads(nt) schedule(static)
                    for (int64_t t = 0; t < 16; t++) {
                        int64_t k0 = t * kb, k1 = k0 + kb < p->kdim ? k0 + kb : p->kdim;
                        if (k0 < k1) KN(sd_k_im2col)(p, xi, oy0, nr, colbuf + k0 * ncol, k0, k1);
                    }
                    col = colbuf; ldcol = ncol;
                }
                KN(gemm_par)(nt, 0, 1, p->cout, p->kdim, ncol, 1, dy + img * p->cout * hw + oy0 * p->wo, hw,
                             col, ldcol, 1, dw, p->kdim);
            }
        }
        sd_arena_reset(&ctx->scratch, mark);
    }

    if (dx && KN(sd_k_conv_wino)(ctx, p, p->h * p->w) &&
        KN(sd_k_conv_wino_run)(ctx, p, 1, dx, dy, w, NULL) == SD_OK)
        dx = NULL;
    if (dx) {
        int par = total >= 4;
        real *colbuf = NULL;
        if (!p->direct) {
            colbuf = KN(sd_k_scratch)(ctx, colsz * (par ? nt : 1));
            if (!colbuf) goto nomem;
        }
        if (par) {
            for (int phase = 0; phase < 2; phase++) {
#pragma omp parallel for num_threads(nt) schedule(static)
                for (int64_t c = 0; c < total; c++) {
                    if ((c % p->nch) % 2 != phase) continue;
                    KN(sd_k_conv_dx_chunk)(ctx, p, c, dx, dy, w,
                                           colbuf ? colbuf + (int64_t)omp_get_thread_num() * colsz : NULL, 0);
                }
            }
        } else {
            for (int64_t c = 0; c < total; c++) KN(sd_k_conv_dx_chunk)(ctx, p, c, dx, dy, w, colbuf, 1);
        }
        sd_arena_reset(&ctx->scratch, mark);
    }
    return SD_OK;
nomem:
    sd_arena_reset(&ctx->scratch, mark);
    return SD_ENOMEM;
}

#endif
