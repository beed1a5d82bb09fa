/* Internal: elementwise, shape, embedding and loss kernels (template; see kern.h). */
#ifndef SD_TENSOR_KERN_ELEM_H
#define SD_TENSOR_KERN_ELEM_H
#include "tensor/kern.h"
#include "tensor/ops.h"

#define SD_SQRT1_2 0.70710678118654752440
#define SD_INV_SQRT_2PI 0.39894228040143267794
#define SD_SQRT_2_PI 0.79788456080286535588

/* ---- activations ---------------------------------------------------------------------------- */

static inline real KN(sd_k_act1)(sd_act act, real x)
{
    switch (act) {
    case SD_ACT_SILU: return x / (1 + R_EXP(-x));
    case SD_ACT_GELU: return (real)0.5 * x * (1 + R_ERF(x * (real)SD_SQRT1_2));
    case SD_ACT_GELU_TANH: {
        real u = (real)SD_SQRT_2_PI * (x + (real)0.044715 * x * x * x);
        return (real)0.5 * x * (1 + R_TANH(u));
    }
    case SD_ACT_QUICK_GELU: return x / (1 + R_EXP((real)-1.702 * x));
    default: return x;
    }
}

static inline real KN(sd_k_dact1)(sd_act act, real x)
{
    switch (act) {
    case SD_ACT_SILU: {
        real s = 1 / (1 + R_EXP(-x));
        return s * (1 + x * (1 - s));
    }
    case SD_ACT_GELU:
        return (real)0.5 * (1 + R_ERF(x * (real)SD_SQRT1_2)) + x * (real)SD_INV_SQRT_2PI * R_EXP((real)-0.5 * x * x);
    case SD_ACT_GELU_TANH: {
        real u = (real)SD_SQRT_2_PI * (x + (real)0.044715 * x * x * x);
        real t = R_TANH(u);
        return (real)0.5 * (1 + t) + (real)0.5 * x * (1 - t * t) * (real)SD_SQRT_2_PI * (1 + (real)(3 * 0.044715) * x * x);
    }
    case SD_ACT_QUICK_GELU: {
        real s = 1 / (1 + R_EXP((real)-1.702 * x));
        return s + (real)1.702 * x * s * (1 - s);
    }
    default: return 1;
    }
}

#ifndef SD_K_CHUNK
#define SD_K_CHUNK 16384   /* elements per parallel chunk of elementwise loops */
#endif

#define SD_K_ACT_LOOP(ACT, BODY) case ACT: { _Pragma("omp simd") for (int64_t i = 0; i < n; i++) { BODY; } break; }

/* y[i] = act(x[i]) over one contiguous run (vectorised per activation). */
SD_KVEC void KN(sd_k_act_row)(sd_act act, real *y, const real *x, int64_t n)
{
    switch (act) {
    SD_K_ACT_LOOP(SD_ACT_SILU, y[i] = KN(sd_k_act1)(SD_ACT_SILU, x[i]))
    SD_K_ACT_LOOP(SD_ACT_GELU, y[i] = KN(sd_k_act1)(SD_ACT_GELU, x[i]))
    SD_K_ACT_LOOP(SD_ACT_GELU_TANH, y[i] = KN(sd_k_act1)(SD_ACT_GELU_TANH, x[i]))
    SD_K_ACT_LOOP(SD_ACT_QUICK_GELU, y[i] = KN(sd_k_act1)(SD_ACT_QUICK_GELU, x[i]))
    default: if (y != x) memmove(y, x, (size_t)n * sizeof(real));
    }
}

/* dx[i] += dy[i]·act'(x[i]) over one run. */
SD_KVEC void KN(sd_k_act_bwd_row)(sd_act act, real *dx, const real *dy, const real *x, int64_t n)
{
    switch (act) {
    SD_K_ACT_LOOP(SD_ACT_SILU, dx[i] += dy[i] * KN(sd_k_dact1)(SD_ACT_SILU, x[i]))
    SD_K_ACT_LOOP(SD_ACT_GELU, dx[i] += dy[i] * KN(sd_k_dact1)(SD_ACT_GELU, x[i]))
    SD_K_ACT_LOOP(SD_ACT_GELU_TANH, dx[i] += dy[i] * KN(sd_k_dact1)(SD_ACT_GELU_TANH, x[i]))
    SD_K_ACT_LOOP(SD_ACT_QUICK_GELU, dx[i] += dy[i] * KN(sd_k_dact1)(SD_ACT_QUICK_GELU, x[i]))
    default: for (int64_t i = 0; i < n; i++) dx[i] += dy[i];
    }
}

SD_KFN void KN(sd_k_act)(sd_ctx *ctx, sd_act act, real *y, const real *x, int64_t n)
{
    int64_t nc = (n + SD_K_CHUNK - 1) / SD_K_CHUNK;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (nc > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t e = (c + 1) * SD_K_CHUNK < n ? (c + 1) * SD_K_CHUNK : n;
        KN(sd_k_act_row)(act, y + c * SD_K_CHUNK, x + c * SD_K_CHUNK, e - c * SD_K_CHUNK);
    }
}

SD_KFN void KN(sd_k_act_bwd)(sd_ctx *ctx, sd_act act, real *dx, const real *dy, const real *x, int64_t n)
{
    int64_t nc = (n + SD_K_CHUNK - 1) / SD_K_CHUNK;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (nc > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t s = c * SD_K_CHUNK, e = (c + 1) * SD_K_CHUNK < n ? (c + 1) * SD_K_CHUNK : n;
        KN(sd_k_act_bwd_row)(act, dx + s, dy + s, x + s, e - s);
    }
}

SD_KVEC void KN(sd_k_geglu_row)(real *y, const real *h, const real *g, int64_t d)
{
#pragma omp simd
    for (int64_t i = 0; i < d; i++) y[i] = h[i] * KN(sd_k_act1)(SD_ACT_GELU, g[i]);
}

SD_KVEC void KN(sd_k_geglu_bwd_row)(real *dh, real *dg, const real *dy, const real *h, const real *g, int64_t d)
{
#pragma omp simd
    for (int64_t i = 0; i < d; i++) {
        dh[i] += dy[i] * KN(sd_k_act1)(SD_ACT_GELU, g[i]);
        dg[i] += dy[i] * h[i] * KN(sd_k_dact1)(SD_ACT_GELU, g[i]);
    }
}

/* x [rows, 2D] → y [rows, D] = h·gelu(g) */
SD_KFN void KN(sd_k_geglu)(sd_ctx *ctx, real *y, const real *x, int64_t rows, int64_t d)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * d > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) KN(sd_k_geglu_row)(y + r * d, x + r * 2 * d, x + r * 2 * d + d, d);
}

SD_KFN void KN(sd_k_geglu_bwd)(sd_ctx *ctx, real *dx, const real *dy, const real *x, int64_t rows, int64_t d)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * d > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++)
        KN(sd_k_geglu_bwd_row)(dx + r * 2 * d, dx + r * 2 * d + d, dy + r * d, x + r * 2 * d, x + r * 2 * d + d, d);
}

/* ---- rotary position embedding (timm apply_rot_embed_cat: interleaved pairs) ---------------- */

/* x, y [b, t, c] (c = heads·d), tab [t - skip, 2d] = [sin | cos] per token: tokens < skip are
 * copied; token j ≥ skip, every head, pair (2i, 2i+1), with s = tab row j - skip:
 *   y[2i] = x[2i]·cos[2i] − x[2i+1]·sin[2i],  y[2i+1] = x[2i+1]·cos[2i+1] + x[2i]·sin[2i+1]. */
SD_KVEC void KN(sd_k_rope_row)(real *y, const real *x, const real *tab, int64_t c, int64_t d)
{
    const real *sn = tab, *cs = tab + d;
    for (int64_t h0 = 0; h0 < c; h0 += d)
        for (int64_t i = 0; i < d; i += 2) {
            real a = x[h0 + i], b = x[h0 + i + 1];
            y[h0 + i] = a * cs[i] - b * sn[i];
            y[h0 + i + 1] = b * cs[i + 1] + a * sn[i + 1];
        }
}

SD_KFN void KN(sd_k_rope)(sd_ctx *ctx, real *y, const real *x, const real *tab, int64_t b, int64_t t, int64_t c,
                          int64_t d, int64_t skip)
{
    int64_t rows = b * t;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * c > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) {
        int64_t j = r % t;
        if (j < skip) {
            if (y != x) memmove(y + r * c, x + r * c, (size_t)c * sizeof(real));
        } else {
            KN(sd_k_rope_row)(y + r * c, x + r * c, tab + (j - skip) * 2 * d, c, d);
        }
    }
}

/* dx += the transposed rotation of dy (tokens < skip: dx += dy). */
SD_KFN void KN(sd_k_rope_bwd)(sd_ctx *ctx, real *dx, const real *dy, const real *tab, int64_t b, int64_t t,
                              int64_t c, int64_t d, int64_t skip)
{
    int64_t rows = b * t;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * c > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) {
        int64_t j = r % t;
        real *g = dx + r * c;
        const real *e = dy + r * c;
        if (j < skip) {
            for (int64_t i = 0; i < c; i++) g[i] += e[i];
            continue;
        }
        const real *sn = tab + (j - skip) * 2 * d, *cs = sn + d;
        for (int64_t h0 = 0; h0 < c; h0 += d)
            for (int64_t i = 0; i < d; i += 2) {
                real u = e[h0 + i], v = e[h0 + i + 1];
                g[h0 + i] += u * cs[i] + v * sn[i + 1];
                g[h0 + i + 1] += v * cs[i + 1] - u * sn[i];
            }
    }
}

/* ---- softmax over rows ---------------------------------------------------------------------- */

SD_KVEC void KN(sd_k_softmax_row)(real *yr, const real *xr, int64_t n)
{
    real m = xr[0];
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = xr[i] > m ? xr[i] : m;
    real s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) { yr[i] = R_EXP(xr[i] - m); s += yr[i]; }
    real inv = 1 / s;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) yr[i] *= inv;
}

SD_KFN void KN(sd_k_softmax)(sd_ctx *ctx, real *y, const real *x, int64_t rows, int64_t n)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * n > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) KN(sd_k_softmax_row)(y + r * n, x + r * n, n);
}

SD_KFN void KN(sd_k_softmax_bwd)(sd_ctx *ctx, real *dx, const real *dy, const real *y, int64_t rows, int64_t n)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * n > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) {
        const real *yr = y + r * n, *dyr = dy + r * n;
        real *dxr = dx + r * n;
        real dot = 0;
        for (int64_t i = 0; i < n; i++) dot += yr[i] * dyr[i];
        for (int64_t i = 0; i < n; i++) dxr[i] += yr[i] * (dyr[i] - dot);
    }
}

/* ---- L2 normalisation of rows (F.normalize): y = x / max(‖x‖, eps) ------------------------------ */

SD_KFN void KN(sd_k_l2norm)(sd_ctx *ctx, real *y, const real *x, int64_t rows, int64_t n, real eps)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * n > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) {
        const real *xr = x + r * n;
        real *yr = y + r * n;
        real s = 0;
        for (int64_t i = 0; i < n; i++) s += xr[i] * xr[i];
        real nrm = R_SQRT(s);
        real inv = 1 / (nrm > eps ? nrm : eps);
        for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * inv;
    }
}

SD_KFN void KN(sd_k_l2norm_bwd)(sd_ctx *ctx, real *dx, const real *dy, const real *x, int64_t rows, int64_t n, real eps)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * n > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) {
        const real *xr = x + r * n, *dyr = dy + r * n;
        real *dxr = dx + r * n;
        real s = 0;
        for (int64_t i = 0; i < n; i++) s += xr[i] * xr[i];
        real nrm = R_SQRT(s);
        if (nrm > eps) {
            real inv = 1 / nrm, dot = 0;
            for (int64_t i = 0; i < n; i++) dot += xr[i] * dyr[i];
            dot *= inv * inv;   /* (y·dy)/‖x‖ with y = x/‖x‖ */
            for (int64_t i = 0; i < n; i++) dxr[i] += (dyr[i] - xr[i] * dot) * inv;
        } else {
            for (int64_t i = 0; i < n; i++) dxr[i] += dyr[i] / eps;
        }
    }
}

/* ---- Swin window partition / merge with a cyclic shift (see sd_op_window_partition) ------------ */

SD_KFN void KN(sd_k_window)(sd_ctx *ctx, real *win, real *x, int64_t B, int64_t H, int64_t W, int64_t C, int ws,
                            int shift, int to_win, int acc)
{
    const int64_t nh = H / ws, nw = W / ws, rows = B * H * W;   /* one row = C channels of a token */
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (rows * C > SD_K_CHUNK)
    for (int64_t t = 0; t < rows; t++) {
        /* t indexes the windows' tokens: [b, wi, wj, i, j] */
        int64_t j = t % ws, i = (t / ws) % ws, wj = (t / ((int64_t)ws * ws)) % nw;
        int64_t wi = (t / ((int64_t)ws * ws * nw)) % nh, b = t / ((int64_t)ws * ws * nw * nh);
        int64_t h = (wi * ws + i + shift) % H, w = (wj * ws + j + shift) % W;
        real *wr = win + t * C, *xr = x + ((b * H + h) * W + w) * C;
        real *dst = to_win ? wr : xr;
        const real *src = to_win ? xr : wr;
        if (acc)
            for (int64_t c = 0; c < C; c++) dst[c] += src[c];
        else
            for (int64_t c = 0; c < C; c++) dst[c] = src[c];
    }
}

/* ---- nearest upsample by integer factor f: x [nc, h, w] → y [nc, f·h, f·w] ----------------- */

SD_KFN void KN(sd_k_upsample)(sd_ctx *ctx, real *y, const real *x, int64_t nc, int64_t h, int64_t w, int f)
{
    int64_t W = w * f;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (nc * h * w > SD_K_CHUNK)
    for (int64_t p = 0; p < nc * h; p++) {
        const real *xr = x + p * w;
        real *yr = y + p * f * W;
        for (int64_t j = 0; j < w; j++)
            for (int k = 0; k < f; k++) yr[j * f + k] = xr[j];
        for (int k = 1; k < f; k++) memcpy(yr + k * W, yr, (size_t)W * sizeof(real));
    }
}

SD_KFN void KN(sd_k_upsample_bwd)(sd_ctx *ctx, real *dx, const real *dy, int64_t nc, int64_t h, int64_t w, int f)
{
    int64_t W = w * f;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (nc * h * w > SD_K_CHUNK)
    for (int64_t p = 0; p < nc * h; p++) {
        real *dxr = dx + p * w;
        const real *dyr = dy + p * f * W;
        for (int64_t j = 0; j < w; j++) {
            real s = 0;
            for (int a = 0; a < f; a++)
                for (int b = 0; b < f; b++) s += dyr[a * W + j * f + b];
            dxr[j] += s;
        }
    }
}

/* ---- concat along an axis: outer × (Σ len_i) × inner ---------------------------------------- */

SD_KFN void KN(sd_k_concat)(sd_ctx *ctx, real *y, const real *const *xs, const int64_t *len, int n,
                            int64_t outer, int64_t inner, int bwd_acc)
{
    int64_t tot = 0;
    for (int i = 0; i < n; i++) tot += len[i];
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (outer * tot * inner > SD_K_CHUNK)
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = 0;
        for (int i = 0; i < n; i++) {
            int64_t cnt = len[i] * inner;
            real *yo = y + o * tot * inner + off;
            if (xs[i]) {
                if (!bwd_acc) {
                    memcpy(yo, xs[i] + o * cnt, (size_t)cnt * sizeof(real));
                } else { /* backward: xs are gradients to accumulate into, y is dy */
                    real *d = (real *)xs[i] + o * cnt;
                    for (int64_t e = 0; e < cnt; e++) d[e] += yo[e];
                }
            }
            off += cnt;
        }
    }
}

/* ---- permute: y = x.permute(perm) (acc: y += ...) ------------------------------------------- */

SD_KFN void KN(sd_k_permute)(sd_ctx *ctx, real *y, const real *x, int nd, const int64_t *xshape,
                             const int *perm, int acc)
{
    int64_t xstr[SD_MAX_DIMS], ysh[SD_MAX_DIMS], sstr[SD_MAX_DIMS];
    int64_t s = 1, n = 1;
    for (int i = nd - 1; i >= 0; i--) { xstr[i] = s; s *= xshape[i]; }
    for (int i = 0; i < nd; i++) { ysh[i] = xshape[perm[i]]; sstr[i] = xstr[perm[i]]; n *= ysh[i]; }
    if (nd == 0) { if (acc) y[0] += x[0]; else y[0] = x[0]; return; }
    int64_t last = ysh[nd - 1], rows = n / (last ? last : 1);
    if (last == 0) return;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n > SD_K_CHUNK)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, off = 0;
        for (int i = nd - 2; i >= 0; i--) { off += (rem % ysh[i]) * sstr[i]; rem /= ysh[i]; }
        real *yr = y + r * last;
        int64_t st = sstr[nd - 1];
        if (acc) for (int64_t j = 0; j < last; j++) yr[j] += x[off + j * st];
        else for (int64_t j = 0; j < last; j++) yr[j] = x[off + j * st];
    }
}

/* ---- broadcasting binary ops ------------------------------------------------------------------
 * a has shape ash[nd]; b is described by strides bst[nd] over a's shape (0 on broadcast axes).
 * Rows: the trailing axes where b's strides are all contiguous or all zero form a run of length
 * `run`; bmode 1 = b contiguous in the run, 0 = constant. */

typedef struct sd_k_bcast {
    int nd;
    int64_t ash[SD_MAX_DIMS], bst[SD_MAX_DIMS];
    int64_t run, rows;
    int bmode;
} sd_k_bcast;

#ifndef SD_K_BCAST_PLAN
#define SD_K_BCAST_PLAN
static inline void sd_k_bcast_plan(sd_k_bcast *p, int nd, const int64_t *ash, int bnd, const int64_t *bsh)
{
    p->nd = nd;
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int bi = i - (nd - bnd);
        int64_t bd = bi >= 0 ? bsh[bi] : 1;
        p->ash[i] = ash[i];
        p->bst[i] = (bd == 1 && ash[i] != 1) ? 0 : s;
        s *= bd;
    }
    /* run: the trailing axes (size-1 axes skipped) where b is all-broadcast or all-contiguous */
    int64_t run = 1;
    int i, mode = -1;
    for (i = nd - 1; i >= 0; i--) {
        if (ash[i] == 1) continue;
        int m = p->bst[i] != 0;
        if (mode < 0) mode = m;
        else if (m != mode) break;
        run *= ash[i];
    }
    p->bmode = mode < 0 ? 1 : mode;
    p->nd = i + 1;   /* axes [0, nd) are iterated per row */
    p->run = run;
    int64_t total = 1;
    for (int k = 0; k < nd; k++) total *= ash[k];
    p->rows = run ? total / run : 0;
}

static inline int64_t sd_k_bcast_boff(const sd_k_bcast *p, int64_t r)
{
    int64_t off = 0;
    for (int i = p->nd - 1; i >= 0; i--) {
        if (p->ash[i] == 1) continue;
        off += (r % p->ash[i]) * p->bst[i];
        r /= p->ash[i];
    }
    return off;
}
#endif

/* op 0: y = a + b; 1: y = a * b; 2: y(=da) += dy * b  (a is dy then) */
SD_KFN void KN(sd_k_binary)(sd_ctx *ctx, int op, real *y, const real *a, const real *b, const sd_k_bcast *p)
{
    int64_t run = p->run;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (p->rows * run > SD_K_CHUNK)
    for (int64_t r = 0; r < p->rows; r++) {
        const real *ar = a + r * run, *br = b + sd_k_bcast_boff(p, r);
        real *yr = y + r * run;
        if (p->bmode) {
            if (op == 0) for (int64_t i = 0; i < run; i++) yr[i] = ar[i] + br[i];
            else if (op == 1) for (int64_t i = 0; i < run; i++) yr[i] = ar[i] * br[i];
            else for (int64_t i = 0; i < run; i++) yr[i] += ar[i] * br[i];
        } else {
            real bv = br[0];
            if (op == 0) for (int64_t i = 0; i < run; i++) yr[i] = ar[i] + bv;
            else if (op == 1) for (int64_t i = 0; i < run; i++) yr[i] = ar[i] * bv;
            else for (int64_t i = 0; i < run; i++) yr[i] += ar[i] * bv;
        }
    }
}

/* yb += alpha · Σ_broadcast (x · w) where w (may be NULL = 1) has x's shape; yb is b-shaped.
 * Deterministic: each yb element is summed by one thread in a fixed order. */
SD_KFN void KN(sd_k_sum_to)(sd_ctx *ctx, real *yb, real alpha, const real *x, const real *w,
                            const sd_k_bcast *p, int64_t bn)
{
    int64_t run = p->run;
    if (p->bmode) {
        /* b contiguous over the run: element j of a run row adds to yb[boff + j]. Partition yb by
         * runs: group rows by boff (rows with equal boff are summed in increasing r). */
        int64_t nblk = (run + 255) / 256;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (p->rows * run > SD_K_CHUNK)
        for (int64_t blk = 0; blk < nblk; blk++) {
            int64_t j0 = blk * 256, j1 = j0 + 256 < run ? j0 + 256 : run;
            for (int64_t r = 0; r < p->rows; r++) {
                int64_t bo = sd_k_bcast_boff(p, r);
                const real *xr = x + r * run;
                real *yr = yb + bo;
                if (w) { const real *wr = w + r * run; for (int64_t j = j0; j < j1; j++) yr[j] += alpha * xr[j] * wr[j]; }
                else for (int64_t j = j0; j < j1; j++) yr[j] += alpha * xr[j];
            }
        }
    } else {
        /* each run collapses to one yb element; sum the run, then add rows with equal boff in
         * increasing r: parallel over yb elements */
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (p->rows * run > SD_K_CHUNK)
        for (int64_t e = 0; e < bn; e++) {
            double acc = 0;
            for (int64_t r = 0; r < p->rows; r++) {
                if (sd_k_bcast_boff(p, r) != e) continue;
                const real *xr = x + r * run;
                double s = 0;
                if (w) { const real *wr = w + r * run; for (int64_t j = 0; j < run; j++) s += (double)xr[j] * wr[j]; }
                else for (int64_t j = 0; j < run; j++) s += xr[j];
                acc += s;
            }
            yb[e] += (real)(alpha * acc);
        }
    }
}

SD_KFN void KN(sd_k_axpby)(sd_ctx *ctx, real *y, real alpha, const real *x, real beta, int64_t n)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n > SD_K_CHUNK)
    for (int64_t i = 0; i < n; i++) y[i] = beta == 0 ? alpha * x[i] : alpha * x[i] + beta * y[i];
}

/* ---- embeddings ----------------------------------------------------------------------------- */

SD_KFN void KN(sd_k_embedding)(sd_ctx *ctx, real *y, const real *table, const int32_t *ids, int64_t n, int64_t d)
{
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n * d > SD_K_CHUNK)
    for (int64_t i = 0; i < n; i++) memcpy(y + i * d, table + (int64_t)ids[i] * d, (size_t)d * sizeof(real));
}

SD_KFN void KN(sd_k_embedding_bwd)(sd_ctx *ctx, real *dt, const real *dy, const int32_t *ids, int64_t n, int64_t d)
{
    int64_t nb = (d + 63) / 64;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n * d > SD_K_CHUNK)
    for (int64_t b = 0; b < nb; b++) {
        int64_t j0 = b * 64, j1 = j0 + 64 < d ? j0 + 64 : d;
        for (int64_t i = 0; i < n; i++) {
            real *row = dt + (int64_t)ids[i] * d;
            const real *g = dy + i * d;
            for (int64_t j = j0; j < j1; j++) row[j] += g[j];
        }
    }
}

/* Float arithmetic as torch does it (float32 exponent, exp, product, sin/cos). */
SD_KFN void KN(sd_k_timestep_embedding)(real *y, const real *t, int64_t n, int64_t dim, int flip,
                                        float shift, float max_period)
{
    int64_t half = dim / 2;
    for (int64_t i = 0; i < n; i++) {
        real *yr = y + i * dim;
        for (int64_t j = 0; j < half; j++) {
#ifdef SD_KERN_F64
            double e = -log((double)max_period) * (double)j / ((double)half - shift);
            double a = (double)t[i] * exp(e);
            double sv = sin(a), cv = cos(a);
#else
            float e = (float)(-log((double)max_period)) * (float)j;
            e = e / ((float)half - shift);
            float a = (float)t[i] * expf(e);
            float sv = sinf(a), cv = cosf(a);
#endif
            yr[j] = (real)(flip ? cv : sv);
            yr[half + j] = (real)(flip ? sv : cv);
        }
        if (dim & 1) yr[dim - 1] = 0;
    }
}

/* ---- losses --------------------------------------------------------------------------------- */

static inline real KN(sd_k_eloss)(sd_loss_kind k, real d, real c)
{
    switch (k) {
    case SD_LOSS_L1: return R_FABS(d);
    case SD_LOSS_HUBER: return 2 * c * (R_SQRT(d * d + c * c) - c);
    case SD_LOSS_SMOOTH_L1: return 2 * (R_SQRT(d * d + c * c) - c);
    default: return d * d;
    }
}

static inline real KN(sd_k_deloss)(sd_loss_kind k, real d, real c)
{
    switch (k) {
    case SD_LOSS_L1: return d > 0 ? 1 : (d < 0 ? -1 : 0);
    case SD_LOSS_HUBER: return 2 * c * d / R_SQRT(d * d + c * c);
    case SD_LOSS_SMOOTH_L1: return 2 * d / R_SQRT(d * d + c * c);
    default: return 2 * d;
    }
}

/* per[n] = mean of element losses of sample n; returns Σ w·per / N. Fixed chunked reduction. */
SD_KFN double KN(sd_k_loss)(sd_ctx *ctx, real *per, const real *p, const real *t, const real *w,
                            const real *c, sd_loss_kind k, int64_t n, int64_t m)
{
    double tot = 0;
    for (int64_t s = 0; s < n; s++) {
        const real *ps = p + s * m, *ts = t + s * m;
        real cs = c ? c[s] : (real)0.1;
        int64_t nc = (m + SD_K_CHUNK - 1) / SD_K_CHUNK;
        double part[64];
        double acc = 0;
        /* chunks in groups of 64 partial sums, added in order */
        for (int64_t g0 = 0; g0 < nc; g0 += 64) {
            int64_t g1 = g0 + 64 < nc ? g0 + 64 : nc;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (m > SD_K_CHUNK)
            for (int64_t ch = g0; ch < g1; ch++) {
                int64_t e = (ch + 1) * SD_K_CHUNK < m ? (ch + 1) * SD_K_CHUNK : m;
                double a = 0;
                for (int64_t i = ch * SD_K_CHUNK; i < e; i++) a += KN(sd_k_eloss)(k, ps[i] - ts[i], cs);
                part[ch - g0] = a;
            }
            for (int64_t ch = g0; ch < g1; ch++) acc += part[ch - g0];
        }
        double mean = m ? acc / (double)m : 0;
        if (per) per[s] = (real)mean;
        tot += (w ? (double)w[s] : 1.0) * mean;
    }
    return n ? tot / (double)n : 0;
}

SD_KFN void KN(sd_k_loss_bwd)(sd_ctx *ctx, real *dp, const real *p, const real *t, const real *w,
                              const real *c, sd_loss_kind k, real dloss, int64_t n, int64_t m)
{
    for (int64_t s = 0; s < n; s++) {
        const real *ps = p + s * m, *ts = t + s * m;
        real *ds = dp + s * m;
        real cs = c ? c[s] : (real)0.1;
        real g = dloss * (w ? w[s] : 1) / (real)n / (real)m;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (m > SD_K_CHUNK)
        for (int64_t i = 0; i < m; i++) ds[i] += g * KN(sd_k_deloss)(k, ps[i] - ts[i], cs);
    }
}

#endif
