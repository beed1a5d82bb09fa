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
#ifndef SD_K_WINO_TILES_DW
#define SD_K_WINO_TILES_DW 768 /* weight gradient: tiles per chunk (the GEMMs' K) */
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
                                  int64_t ho, int64_t wo, int64_t pt, int64_t pl, int64_t tiles)
{
    p->n = n; p->mi = mi; p->h = h; p->w = w; p->mo = mo; p->ho = ho; p->wo = wo; p->pt = pt; p->pl = pl;
    p->th = (ho + 3) / 4;
    p->tw = (wo + 3) / 4;
    int64_t r = p->tw ? (tiles + p->tw - 1) / p->tw : 1;
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

/* ---- weight gradient ------------------------------------------------------------------------
 * y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is linear in g, so per tile dg = Gᵀ[(A dy Aᵀ) ⊙ (Bᵀ d B)]G. Summed
 * over tiles: dU_ξ[co][ci] = Σ_t M'_ξ[co][t] V_ξ[ci][t] (36 GEMMs with the tiles as K, accumulated
 * chunk after chunk in order), then dW[co][ci] += Gᵀ dU[co][ci] G. Chunks run in order; inside one
 * the transforms are split by channel and the 36 GEMMs spread over threads (each ξ owns its dU_ξ),
 * so the sums run in the same order for any thread count. */

/* A (6×4) applied to 4 values (stride s apart in `v`), results to `o` (stride os). */
#define SD_WINO_A(v, s, o, os) do { \
    real v0_ = (v)[0], v1_ = (v)[(s)], v2_ = (v)[2 * (s)], v3_ = (v)[3 * (s)]; \
    real s02_ = v0_ + v2_, s13_ = v1_ + v3_, q02_ = v0_ + 4 * v2_, q13_ = 2 * v1_ + 8 * v3_; \
    (o)[0] = v0_; (o)[(os)] = s02_ + s13_; (o)[2 * (os)] = s02_ - s13_; \
    (o)[3 * (os)] = q02_ + q13_; (o)[4 * (os)] = q02_ - q13_; (o)[5 * (os)] = v3_; } while (0)

/* M'[ξ][o][j] = (A dy Aᵀ)[ξ] for the 4×4 output-gradient tiles of channels [o0, o1) of one chunk
 * (zero beyond the output's edge); `strip` holds 6·4·tw reals. */
SD_KFN void KN(sd_k_wino_gout)(const sd_k_wino *p, const real *dy, int64_t img, int64_t tr0, int64_t nr,
                               real *m, int64_t tcs, int64_t o0, int64_t o1, real *strip)
{
    int64_t sw = 4 * p->tw, plane = p->mo * tcs;
    for (int64_t o = o0; o < o1; o++) {
        const real *dc = dy + (img * p->mo + o) * p->ho * p->wo;
        for (int64_t r = 0; r < nr; r++) {
            /* A down the columns: strip[ξa][X] from the 4 rows of the tile row (zero past the edge) */
            int64_t oy0 = (tr0 + r) * 4;
            const real *rw[4];
            int64_t nx = p->wo < sw ? p->wo : sw;
            for (int c = 0; c < 4; c++) rw[c] = oy0 + c < p->ho ? dc + (oy0 + c) * p->wo : NULL;
            for (int64_t X = 0; X < sw; X++) {
                real v[4];
                for (int c = 0; c < 4; c++) v[c] = rw[c] && X < nx ? rw[c][X] : 0;
                SD_WINO_A(v, 1, strip + X, sw);
            }
            /* Aᵀ along each row, tile by tile */
            real *mo_ = m + o * tcs + r * p->tw;
            for (int a = 0; a < 6; a++) {
                const real *sa = strip + a * sw;
                real *mr = mo_ + (int64_t)(a * 6) * plane;
                for (int64_t j = 0; j < p->tw; j++) SD_WINO_A(sa + 4 * j, 1, mr + j, plane);
            }
        }
    }
}

/* dW[co][ci] (+)= Gᵀ dU G for rows co in [o0, o1); dU [36][cout][cin]. */
SD_KFN void KN(sd_k_wino_dw_out)(const real *du, int64_t cout, int64_t cin, real *dw, int64_t o0, int64_t o1)
{
    const real k4 = (real)0.25, k6 = (real)(1.0 / 6), k12 = (real)(1.0 / 12), k24 = (real)(1.0 / 24);
    int64_t plane = cout * cin;
    for (int64_t o = o0; o < o1; o++)
        for (int64_t i = 0; i < cin; i++) {
            real u[6][6], t[3][6];
            for (int x = 0; x < 36; x++) u[x / 6][x % 6] = du[x * plane + o * cin + i];
            for (int c = 0; c < 6; c++) {   /* Gᵀ u, column c */
                real u0 = u[0][c], u1 = u[1][c], u2 = u[2][c], u3 = u[3][c], u4 = u[4][c], u5 = u[5][c];
                t[0][c] = u0 * k4 - (u1 + u2) * k6 + (u3 + u4) * k24;
                t[1][c] = (u2 - u1) * k6 + (u3 - u4) * k12;
                t[2][c] = (u3 + u4 - u1 - u2) * k6 + u5;
            }
            real *d = dw + (o * cin + i) * 9;
            for (int r = 0; r < 3; r++) {   /* (Gᵀ u) G, row r */
                real u0 = t[r][0], u1 = t[r][1], u2 = t[r][2], u3 = t[r][3], u4 = t[r][4], u5 = t[r][5];
                d[r * 3] += u0 * k4 - (u1 + u2) * k6 + (u3 + u4) * k24;
                d[r * 3 + 1] += (u2 - u1) * k6 + (u3 - u4) * k12;
                d[r * 3 + 2] += (u3 + u4 - u1 - u2) * k6 + u5;
            }
        }
}

/* dW += the weight gradient of the correlation y = x ⋆ w (plan p: mi = cin, mo = cout) by
 * Winograd; SD_ENOMEM with nothing written when the scratch arena cannot hold the buffers. */
SD_KFN int KN(sd_k_wino_dw)(sd_ctx *ctx, const sd_k_wino *p, real *dw, const real *dy, const real *x)
{
    int nt = ctx->threads;
    int64_t sw = 4 * p->tw + 2, usz = 36 * p->mo * p->mi;
    size_t mark = sd_arena_mark(&ctx->scratch);
    real *du = (real *)sd_arena_alloc(&ctx->scratch, (size_t)usz * sizeof(real));
    real *v = (real *)sd_arena_alloc(&ctx->scratch, (size_t)(36 * (p->mi + p->mo) * p->tc) * sizeof(real));
    real *strip = (real *)sd_arena_alloc(&ctx->scratch, (size_t)(12 * sw * nt) * sizeof(real));
    if (!du || !v || !strip) {
        sd_arena_reset(&ctx->scratch, mark);
        return SD_ENOMEM;
    }
    real *m = v + 36 * p->mi * p->tc;
    int64_t total = p->n * p->nch;
    for (int64_t c = 0; c < total; c++) {
        int64_t img = c / p->nch, tr0 = (c % p->nch) * p->rows;
        int64_t nr = p->th - tr0 < p->rows ? p->th - tr0 : p->rows, tcs = nr * p->tw;
#pragma omp parallel num_threads(nt)
        {
            real *st = strip + (int64_t)omp_get_thread_num() * 12 * sw;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < 16; b++)
                KN(sd_k_wino_in)(p, x, img, tr0, nr, v, tcs, p->mi * b / 16, p->mi * (b + 1) / 16, st);
#pragma omp for schedule(static)
            for (int64_t b = 0; b < 16; b++)
                KN(sd_k_wino_gout)(p, dy, img, tr0, nr, m, tcs, p->mo * b / 16, p->mo * (b + 1) / 16, st);
#pragma omp for schedule(static)
            for (int xi = 0; xi < 36; xi++)
                KN(gemm)(0, 1, p->mo, p->mi, tcs, 1, m + xi * p->mo * tcs, tcs, v + xi * p->mi * tcs, tcs, c ? 1 : 0,
                         du + xi * p->mo * p->mi, p->mi);
        }
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < 16; b++) KN(sd_k_wino_dw_out)(du, p->mo, p->mi, dw, p->mo * b / 16, p->mo * (b + 1) / 16);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

#endif
