/* Internal: 3×3 stride-1 convolution by Winograd's minimal filtering F(4×4, 3×3) (template; see
 * kern.h and kern_conv.h, which dispatches here).
 *
 * Lavin & Gray's algorithm: each 4×4 output tile is Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for the 6×6 input
 * tile d, with interpolation points 0, ±1, ±2, ∞. Summed over input channels the element-wise
 * products become 36 independent GEMMs M_ξ[mo × T] = U_ξ[mo × mi] · V_ξ[mi × T] over T tiles, with
 * 2.25 instead of 9 multiply-adds per output pixel and channel pair: 4× fewer FLOPs than im2col.
 * The same kernel computes the input gradient of a 3×3 stride-1 convolution, which is itself a
 * correlation of dY with the weights rotated by 180° and input/output channels swapped (padding
 * 2 − pad). Weight gradients stay on the im2col path.
 *
 * Layout: U [36][mo][mi] (transformed weights, once per call), per chunk of whole tile rows of
 * one image V [36][mi][tc] and M [36][mo][tc]. Chunks are fixed by the shape. With ≥ 4 in the
 * batch they run in parallel, one single-threaded GEMM per ξ each (measured: with 2 chunks on 2
 * threads this is 20 % slower than the other way); otherwise in order, with the transforms split
 * by channel and the 36 GEMMs spread over threads.
 * Both ways every value is computed by the same code from the same operands (no sum crosses a
 * partition), so results do not depend on the thread count.
 *
 * Numerics: in float the transform constants (1/4, 1/6, 1/12, 1/24, ×8) add a few ulp of rounding;
 * measured |Δ| against im2col stays near 1e-6 relative to max|y| (tests/unit/test_tensor_ops.c). */
#ifndef SD_TENSOR_KERN_WINO_H
#define SD_TENSOR_KERN_WINO_H
#include <omp.h>

#include "tensor/kern.h"

#ifndef SD_K_WINO_TILES
#define SD_K_WINO_TILES 192    /* target tiles per chunk (the GEMMs' N) */
#endif

typedef struct sd_k_wino {
    int64_t n, mi, h, w;       /* input: batch, channels, height, width */
    int64_t mo, ho, wo;        /* output channels and size */
    int64_t pt, pl;            /* input offset of output (0,0)'s window: rows/cols −pt, −pl */
    int64_t th, tw;            /* tile rows and columns per image */
    int64_t rows, nch, tc;     /* tile rows per chunk, chunks per image, max tiles per chunk */
} sd_k_wino;

#ifndef SD_K_WINO_PLAN
#define SD_K_WINO_PLAN
static inline void sd_k_wino_plan(sd_k_wino *p, int64_t n, int64_t mi, int64_t h, int64_t w, int64_t mo,
                                  int64_t ho, int64_t wo, int64_t pt, int64_t pl)
{
    p->n = n; p->mi = mi; p->h = h; p->w = w; p->mo = mo; p->ho = ho; p->wo = wo; p->pt = pt; p->pl = pl;
    p->th = (ho + 3) / 4;
    p->tw = (wo + 3) / 4;
    int64_t r = p->tw ? (SD_K_WINO_TILES + p->tw - 1) / p->tw : 1;
    if (r > p->th) r = p->th;
    if (r < 1) r = 1;
    p->rows = r;
    p->nch = p->th ? (p->th + r - 1) / r : 0;
    p->tc = r * p->tw;
}
#endif

/* One output channel's row of U: d[ξ·plane + i] = (G g_i Gᵀ)[ξ] for the filters g_i given
 * transposed, gt[k·mi + i] (k = 3·row + col). Contiguous loads and stores: vectorises. */
SD_KVEC void KN(sd_k_wino_wt_row)(const real *gt, int64_t mi, real *d, int64_t plane)
{
    const real k4 = (real)0.25, k6 = (real)(1.0 / 6), k12 = (real)(1.0 / 12), k24 = (real)(1.0 / 24);
/* G applied to (x0, x1, x2): declares P##0 … P##5 */
#define SD_WINO_GV(x0, x1, x2, P) \
    real P##a = (x0) * k24 + (x2) * k6, P##b = (x1) * k12, P##c = -((x0) + (x2)) * k6, P##e = -(x1) * k6; \
    real P##0 = (x0) * k4, P##1 = P##c + P##e, P##2 = P##c - P##e, P##3 = P##a + P##b, P##4 = P##a - P##b, \
         P##5 = (x2)
#define SD_WINO_ROW(r, x0, x1, x2) do { \
    SD_WINO_GV(x0, x1, x2, o_); \
    real *dr_ = d + (int64_t)((r) * 6) * plane + i; \
    dr_[0] = o_0; dr_[plane] = o_1; dr_[2 * plane] = o_2; dr_[3 * plane] = o_3; dr_[4 * plane] = o_4; \
    dr_[5 * plane] = o_5; } while (0)
#pragma omp simd
    for (int64_t i = 0; i < mi; i++) {
        SD_WINO_GV(gt[i], gt[3 * mi + i], gt[6 * mi + i], A);           /* G g, column 0 */
        SD_WINO_GV(gt[mi + i], gt[4 * mi + i], gt[7 * mi + i], B);      /* column 1 */
        SD_WINO_GV(gt[2 * mi + i], gt[5 * mi + i], gt[8 * mi + i], C);  /* column 2 */
        SD_WINO_ROW(0, A0, B0, C0);                                     /* (G g) Gᵀ, row by row */
        SD_WINO_ROW(1, A1, B1, C1);
        SD_WINO_ROW(2, A2, B2, C2);
        SD_WINO_ROW(3, A3, B3, C3);
        SD_WINO_ROW(4, A4, B4, C4);
        SD_WINO_ROW(5, A5, B5, C5);
    }
#undef SD_WINO_ROW
#undef SD_WINO_GV
}

/* U[ξ][o][i] = G g Gᵀ for the 3×3 filter g of output channel o, input channel i. From conv
 * weights w [cout][cin][3][3]: forward (dx = 0) o = co, i = ci; input gradient (dx = 1) o = ci,
 * i = co with g rotated by 180°. Rows o in [o0, o1); gt holds 9·mi reals. */
SD_KFN void KN(sd_k_wino_wt)(const real *w, int64_t cout, int64_t cin, int dx, real *u, int64_t o0, int64_t o1,
                             real *gt)
{
    int64_t mo = dx ? cin : cout, mi = dx ? cout : cin, plane = mo * mi;
    int64_t si = dx ? cin * 9 : 9;   /* stride between consecutive i */
    for (int64_t o = o0; o < o1; o++) {
        const real *s0 = dx ? w + o * 9 : w + o * cin * 9;
        for (int64_t i = 0; i < mi; i++)
            for (int k = 0; k < 9; k++) gt[k * mi + i] = s0[i * si + (dx ? 8 - k : k)];
        KN(sd_k_wino_wt_row)(gt, mi, u + o * mi, plane);
    }
}

/* Bᵀ applied to 6 values (stride s apart in `a`), results to `o` (stride os). */
#define SD_WINO_BT(a, s, o, os) do { \
    real d0_ = (a)[0], d1_ = (a)[(s)], d2_ = (a)[2 * (s)], d3_ = (a)[3 * (s)], d4_ = (a)[4 * (s)], \
         d5_ = (a)[5 * (s)]; \
    (o)[0] = 4 * d0_ - 5 * d2_ + d4_; \
    (o)[(os)] = -4 * (d1_ + d2_) + d3_ + d4_; \
    (o)[2 * (os)] = 4 * (d1_ - d2_) - d3_ + d4_; \
    (o)[3 * (os)] = 2 * (d3_ - d1_) - d2_ + d4_; \
    (o)[4 * (os)] = 2 * (d1_ - d3_) - d2_ + d4_; \
    (o)[5 * (os)] = 4 * d1_ - 5 * d3_ + d5_; } while (0)

/* V[ξ][i][j] for channels [i0, i1) of one chunk: image img, tile rows [tr0, tr0+nr).
 * `strip` holds 12·(4·tw + 2) reals. */
SD_KFN void KN(sd_k_wino_in)(const sd_k_wino *p, const real *x, int64_t img, int64_t tr0, int64_t nr,
                             real *v, int64_t tcs, int64_t i0, int64_t i1, real *strip)
{
    int64_t sw = 4 * p->tw + 2, plane = p->mi * tcs;
    real *rows = strip, *t1 = strip + 6 * sw;
    for (int64_t i = i0; i < i1; i++) {
        const real *xc = x + (img * p->mi + i) * p->h * p->w;
        for (int64_t r = 0; r < nr; r++) {
            int64_t iy0 = (tr0 + r) * 4 - p->pt;
            for (int a = 0; a < 6; a++) {
                real *dst = rows + a * sw;
                int64_t iy = iy0 + a;
                if (iy < 0 || iy >= p->h) { memset(dst, 0, (size_t)sw * sizeof(real)); continue; }
                /* dst[X] = x[iy][X − pl] */
                int64_t lo = p->pl < sw ? p->pl : sw, hi = p->w + p->pl < sw ? p->w + p->pl : sw;
                if (lo < 0) lo = 0;
                if (hi < lo) hi = lo;
                for (int64_t X = 0; X < lo; X++) dst[X] = 0;
                if (hi > lo) memcpy(dst + lo, xc + iy * p->w + (lo - p->pl), (size_t)(hi - lo) * sizeof(real));
                for (int64_t X = hi; X < sw; X++) dst[X] = 0;
            }
            /* Bᵀ down the columns: t1[ξa][X] */
#pragma omp simd
            for (int64_t X = 0; X < sw; X++) SD_WINO_BT(rows + X, sw, t1 + X, sw);
            /* · B along each row, tile by tile */
            real *vo = v + i * tcs + r * p->tw;
            for (int a = 0; a < 6; a++) {
                const real *tr = t1 + a * sw;
                real *vr = vo + (int64_t)(a * 6) * plane;
                for (int64_t j = 0; j < p->tw; j++) SD_WINO_BT(tr + 4 * j, 1, vr + j, plane);
            }
        }
    }
}

/* y (or y +=) from M for output channels [o0, o1) of one chunk; `strip` holds 6·4·tw reals. */
SD_KFN void KN(sd_k_wino_out)(const sd_k_wino *p, real *y, const real *m, int64_t tcs, const real *bias,
                              int acc, int64_t img, int64_t tr0, int64_t nr, int64_t o0, int64_t o1, real *strip)
{
    int64_t sw = 4 * p->tw, plane = p->mo * tcs;
    for (int64_t o = o0; o < o1; o++) {
        real *yc = y + (img * p->mo + o) * p->ho * p->wo;
        real bv = bias ? bias[o] : 0;
        for (int64_t r = 0; r < nr; r++) {
            const real *mr = m + o * tcs + r * p->tw;
            /* · A along each row: s[ξa][4j + c] */
            for (int a = 0; a < 6; a++) {
                const real *q = mr + (int64_t)(a * 6) * plane;
                real *s = strip + a * sw;
                for (int64_t j = 0; j < p->tw; j++) {
                    real m0 = q[j], m1 = q[plane + j], m2 = q[2 * plane + j], m3 = q[3 * plane + j],
                         m4 = q[4 * plane + j], m5 = q[5 * plane + j];
                    real s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
                    s[4 * j] = m0 + s12 + s34;
                    s[4 * j + 1] = d12 + 2 * d34;
                    s[4 * j + 2] = s12 + 4 * s34;
                    s[4 * j + 3] = d12 + 8 * d34 + m5;
                }
            }
            /* Aᵀ down the columns, into the output rows */
            int64_t oy0 = (tr0 + r) * 4, ny = p->ho - oy0 < 4 ? p->ho - oy0 : 4;
            const real *s0 = strip, *s1 = strip + sw, *s2 = strip + 2 * sw, *s3 = strip + 3 * sw,
                       *s4 = strip + 4 * sw, *s5 = strip + 5 * sw;
            for (int64_t c = 0; c < ny; c++) {
                real *yr = yc + (oy0 + c) * p->wo;
                int64_t nx = p->wo;
                if (c == 0) {
#pragma omp simd
                    for (int64_t X = 0; X < nx; X++) {
                        real v = s0[X] + s1[X] + s2[X] + s3[X] + s4[X] + bv;
                        yr[X] = acc ? yr[X] + v : v;
                    }
                } else if (c == 1) {
#pragma omp simd
                    for (int64_t X = 0; X < nx; X++) {
                        real v = s1[X] - s2[X] + 2 * (s3[X] - s4[X]) + bv;
                        yr[X] = acc ? yr[X] + v : v;
                    }
                } else if (c == 2) {
#pragma omp simd
                    for (int64_t X = 0; X < nx; X++) {
                        real v = s1[X] + s2[X] + 4 * (s3[X] + s4[X]) + bv;
                        yr[X] = acc ? yr[X] + v : v;
                    }
                } else {
#pragma omp simd
                    for (int64_t X = 0; X < nx; X++) {
                        real v = s1[X] - s2[X] + 8 * (s3[X] - s4[X]) + s5[X] + bv;
                        yr[X] = acc ? yr[X] + v : v;
                    }
                }
            }
        }
    }
}

/* One chunk: transforms, 36 GEMMs, output. inner = 1: sequential caller, parallelise inside. */
SD_KFN void KN(sd_k_wino_chunk)(sd_ctx *ctx, const sd_k_wino *p, int64_t c, real *y, const real *x,
                                const real *u, const real *bias, int acc, real *buf, int inner)
{
    int64_t img = c / p->nch, tr0 = (c % p->nch) * p->rows;
    int64_t nr = p->th - tr0 < p->rows ? p->th - tr0 : p->rows, tcs = nr * p->tw;
    int64_t sw = 4 * p->tw + 2;
    real *v = buf, *m = v + 36 * p->mi * p->tc, *strip = m + 36 * p->mo * p->tc;
    int nt = ctx->threads;
    if (!inner) {
        KN(sd_k_wino_in)(p, x, img, tr0, nr, v, tcs, 0, p->mi, strip);
        for (int xi = 0; xi < 36; xi++)
            KN(gemm)(0, 0, p->mo, tcs, p->mi, 1, u + xi * p->mo * p->mi, p->mi, v + xi * p->mi * tcs, tcs, 0,
                     m + xi * p->mo * tcs, tcs);
        KN(sd_k_wino_out)(p, y, m, tcs, bias, acc, img, tr0, nr, 0, p->mo, strip);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        real *st = strip + (int64_t)t * 12 * sw;
        /* fixed partitions: 16 channel blocks, 36 products, 16 channel blocks */
#pragma omp for schedule(static)
        for (int64_t b = 0; b < 16; b++)
            KN(sd_k_wino_in)(p, x, img, tr0, nr, v, tcs, p->mi * b / 16, p->mi * (b + 1) / 16, st);
#pragma omp for schedule(static)
        for (int xi = 0; xi < 36; xi++)
            KN(gemm)(0, 0, p->mo, tcs, p->mi, 1, u + xi * p->mo * p->mi, p->mi, v + xi * p->mi * tcs, tcs, 0,
                     m + xi * p->mo * tcs, tcs);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < 16; b++)
            KN(sd_k_wino_out)(p, y, m, tcs, bias, acc, img, tr0, nr, p->mo * b / 16, p->mo * (b + 1) / 16, st);
        (void)n;
    }
}

/* Per-thread buffer of a chunk: V, M and the strips (12·sw per thread for the inner mode). */
static inline int64_t KN(sd_k_wino_bufsz)(const sd_k_wino *p, int nt)
{
    return 36 * (p->mi + p->mo) * p->tc + 12 * (4 * p->tw + 2) * nt;
}

/* y (acc = 0) or y += (acc = 1) the correlation of x with the transformed filters u, + bias.
 * Returns SD_ENOMEM, with nothing written, when the scratch arena cannot hold the buffers. */
SD_KFN int KN(sd_k_wino_run)(sd_ctx *ctx, const sd_k_wino *p, real *y, const real *x, const real *u,
                             const real *bias, int acc)
{
    int64_t total = p->n * p->nch;
    int nt = ctx->threads, par = total >= 4;
    int64_t bsz = KN(sd_k_wino_bufsz)(p, par ? 1 : nt);
    real *buf = (real *)sd_arena_alloc(&ctx->scratch, (size_t)(bsz * (par ? nt : 1)) * sizeof(real));
    if (!buf) return SD_ENOMEM;
    if (par) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t c = 0; c < total; c++)
            KN(sd_k_wino_chunk)(ctx, p, c, y, x, u, bias, acc, buf + (int64_t)omp_get_thread_num() * bsz, 0);
    } else {
        for (int64_t c = 0; c < total; c++) KN(sd_k_wino_chunk)(ctx, p, c, y, x, u, bias, acc, buf, 1);
    }
    return SD_OK;
}

/* Transformed weights into scratch (NULL when the arena cannot hold them). */
SD_KFN real *KN(sd_k_wino_weights)(sd_ctx *ctx, const real *w, int64_t cout, int64_t cin, int dx)
{
    int64_t mo = dx ? cin : cout;
    int nt = ctx->threads;
    real *u = (real *)sd_arena_alloc(&ctx->scratch, (size_t)(36 * cout * cin) * sizeof(real));
    real *gt = (real *)sd_arena_alloc(&ctx->scratch, (size_t)(9 * (cout + cin) * nt) * sizeof(real));
    if (!u || !gt) return NULL;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < 16; b++)
        KN(sd_k_wino_wt)(w, cout, cin, dx, u, mo * b / 16, mo * (b + 1) / 16,
                         gt + (int64_t)omp_get_thread_num() * 9 * (cout + cin));
    return u;
}

#endif
