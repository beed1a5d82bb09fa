/* Gradient checks of every op: the CPU kernels compiled in double precision (kern_*.h with
 * SD_KERN_F64), backward against central finite differences, forward against naive reference
 * implementations; then a float smoke check of the library's f32 ops against the double kernels.
 * Tiling constants are made tiny so that the multi-chunk / multi-block paths run on tiny shapes. */
#define SD_KERN_F64
#define SD_K_CONV_COLS 16
#define SD_K_WINO_TILES 3
#define SD_K_WINO_TILES_DW 5
#define SD_K_ATTN_BQ 4
#define SD_K_ATTN_BQB 3
#define SD_K_LN_ROWBLK 2
#define SD_K_CHUNK 16
#define SD_KERN_MIN_BLOCK 2
#include "tensor/kern_attn.h"
#include "tensor/kern_conv.h"
#include "tensor/kern_dwconv.h"
#include "tensor/kern_elem.h"
#include "tensor/kern_linear.h"
#include "tensor/kern_norm.h"

#include "tensor/cpu_avx512.h"
#include "tensor/ops.h"
#include "test.h"

static sd_ctx g_ctx;
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double urand(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1;
}

static double *rnd(int64_t n, double scale)
{
    double *p = malloc((size_t)(n ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) p[i] = urand() * scale;
    return p;
}

static double *zeros(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }

/* ---- generic finite-difference checker ------------------------------------------------------ */

typedef struct { double *x, *g; int64_t n; const char *name; } tparam;
typedef void (*fwd_fn)(void *st, double *y);
typedef void (*bwd_fn)(void *st, const double *dy);

static double g_maxerr;

/* L = Σ r·y. Checks d L / d p for every param p (all elements when small, else 48 samples). Grads
 * are pre-filled with 0.25 to check accumulation (+=). */
static void gradcheck(const char *name, void *st, fwd_fn fwd, bwd_fn bwd, int64_t ny, tparam *ps, int np, double tol)
{
    double *y = zeros(ny), *r = rnd(ny, 1.0);
    for (int i = 0; i < np; i++)
        for (int64_t j = 0; j < ps[i].n; j++) ps[i].g[j] = 0.25;
    fwd(st, y);
    bwd(st, r);
    const double h = 1e-5;
    for (int i = 0; i < np; i++) {
        int64_t n = ps[i].n, cnt = n <= 96 ? n : 48;
        for (int64_t s = 0; s < cnt; s++) {
            int64_t j = n <= 96 ? s : (int64_t)((urand() + 1) * 0.5 * (double)n) % n;
            double save = ps[i].x[j], lp = 0, lm = 0;
            ps[i].x[j] = save + h;
            fwd(st, y);
            for (int64_t k = 0; k < ny; k++) lp += r[k] * y[k];
            ps[i].x[j] = save - h;
            fwd(st, y);
            for (int64_t k = 0; k < ny; k++) lm += r[k] * y[k];
            ps[i].x[j] = save;
            double num = (lp - lm) / (2 * h), ana = ps[i].g[j] - 0.25;
            double err = fabs(num - ana) / fmax(1.0, fabs(num));
            if (err > g_maxerr) g_maxerr = err;
            if (!(err <= tol)) {
                printf("#   %s: d/d%s[%lld]: analytic %.12g numeric %.12g\n", name, ps[i].name, (long long)j, ana, num);
                t_cur_fail++;
                break;
            }
        }
    }
    free(y);
    free(r);
}

#define TOL 1e-7

/* ---- linear / matmul ------------------------------------------------------------------------ */

typedef struct { double *x, *w, *b, *gx, *gw, *gb; int64_t r, in, out; } st_lin;
static void lin_f(void *p, double *y) { st_lin *s = p; sd_k_linear_f64(&g_ctx, y, s->x, s->w, s->b, s->r, s->in, s->out); }
static void lin_b(void *p, const double *dy) { st_lin *s = p; sd_k_linear_bwd_f64(&g_ctx, s->gx, s->gw, s->gb, dy, s->x, s->w, s->r, s->in, s->out); }

static void test_linear(void)
{
    st_lin s = { .r = 6, .in = 5, .out = 4 };
    s.x = rnd(30, 1); s.w = rnd(20, 1); s.b = rnd(4, 1); s.gx = zeros(30); s.gw = zeros(20); s.gb = zeros(4);
    tparam ps[] = { { s.x, s.gx, 30, "x" }, { s.w, s.gw, 20, "w" }, { s.b, s.gb, 4, "b" } };
    gradcheck("linear", &s, lin_f, lin_b, 24, ps, 3, TOL);
    /* forward vs naive */
    double y[24];
    lin_f(&s, y);
    double e = 0;
    for (int i = 0; i < 6; i++)
        for (int o = 0; o < 4; o++) {
            double a = s.b[o];
            for (int k = 0; k < 5; k++) a += s.x[i * 5 + k] * s.w[o * 5 + k];
            e = fmax(e, fabs(a - y[i * 4 + o]));
        }
    T_CHECKF(e < 1e-12, "linear forward error %g", e);
    free(s.x); free(s.w); free(s.b); free(s.gx); free(s.gw); free(s.gb);
}

typedef struct { double *a, *b, *ga, *gb; int ta, tb; int64_t bt, m, n, k; } st_mm;
static void mm_f(void *p, double *y)
{
    st_mm *s = p;
    sd_k_matmul_f64(&g_ctx, y, s->a, s->ta, s->b, s->tb, 1, 0, s->bt, s->m, s->n, s->k, s->m * s->k, s->k * s->n);
}
static void mm_b(void *p, const double *dy)
{
    st_mm *s = p;  /* dA = dC·op(B)ᵀ (or its transpose), dB likewise */
    if (!s->ta) sd_k_matmul_f64(&g_ctx, s->ga, dy, 0, s->b, !s->tb, 1, 1, s->bt, s->m, s->k, s->n, s->m * s->n, s->k * s->n);
    else sd_k_matmul_f64(&g_ctx, s->ga, s->b, s->tb, dy, 1, 1, 1, s->bt, s->k, s->m, s->n, s->k * s->n, s->m * s->n);
    if (!s->tb) sd_k_matmul_f64(&g_ctx, s->gb, s->a, !s->ta, dy, 0, 1, 1, s->bt, s->k, s->n, s->m, s->m * s->k, s->m * s->n);
    else sd_k_matmul_f64(&g_ctx, s->gb, dy, 1, s->a, s->ta, 1, 1, s->bt, s->n, s->k, s->m, s->m * s->n, s->m * s->k);
}

static void test_matmul(void)
{
    for (int t = 0; t < 4; t++) {
        st_mm s = { .ta = t & 1, .tb = t >> 1, .bt = 5, .m = 3, .n = 4, .k = 6 };
        int64_t na = 5 * 18, nb = 5 * 24;
        s.a = rnd(na, 1); s.b = rnd(nb, 1); s.ga = zeros(na); s.gb = zeros(nb);
        tparam ps[] = { { s.a, s.ga, na, "a" }, { s.b, s.gb, nb, "b" } };
        gradcheck("matmul", &s, mm_f, mm_b, 5 * 12, ps, 2, TOL);
        free(s.a); free(s.b); free(s.ga); free(s.gb);
    }
}

/* ---- conv2d --------------------------------------------------------------------------------- */

typedef struct { sd_k_conv p; double *x, *w, *b, *gx, *gw, *gb; } st_conv;
static void conv_f(void *q, double *y) { st_conv *s = q; sd_k_conv2d_f64(&g_ctx, &s->p, y, s->x, s->w, s->b); }
static void conv_b(void *q, const double *dy) { st_conv *s = q; sd_k_conv2d_bwd_f64(&g_ctx, &s->p, s->gx, s->gw, s->gb, dy, s->x, s->w); }

static void naive_conv(const sd_k_conv *p, double *y, const double *x, const double *w, const double *b)
{
    for (int64_t n = 0; n < p->n; n++)
        for (int64_t co = 0; co < p->cout; co++)
            for (int64_t oy = 0; oy < p->ho; oy++)
                for (int64_t ox = 0; ox < p->wo; ox++) {
                    double a = b ? b[co] : 0;
                    for (int64_t ci = 0; ci < p->cin; ci++)
                        for (int64_t ky = 0; ky < p->kh; ky++)
                            for (int64_t kx = 0; kx < p->kw; kx++) {
                                int64_t iy = oy * p->stride - p->pt + ky, ix = ox * p->stride - p->pl + kx;
                                if (iy < 0 || iy >= p->h || ix < 0 || ix >= p->w) continue;
                                a += x[((n * p->cin + ci) * p->h + iy) * p->w + ix] * w[((co * p->cin + ci) * p->kh + ky) * p->kw + kx];
                            }
                    y[((n * p->cout + co) * p->ho + oy) * p->wo + ox] = a;
                }
}

static void conv_case(const char *name, int64_t n, int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t k,
                      int stride, int pt, int pl, int pb, int pr, int bias)
{
    st_conv s;
    int64_t ho = (h + pt + pb - k) / stride + 1, wo = (w + pl + pr - k) / stride + 1;
    sd_k_conv_plan(&s.p, n, cin, h, w, cout, k, k, ho, wo, stride, pt, pl);
    int64_t nx = n * cin * h * w, nw = cout * cin * k * k, ny = n * cout * ho * wo;
    s.x = rnd(nx, 1); s.w = rnd(nw, 1); s.b = bias ? rnd(cout, 1) : NULL;
    s.gx = zeros(nx); s.gw = zeros(nw); s.gb = bias ? zeros(cout) : NULL;
    tparam ps[] = { { s.x, s.gx, nx, "x" }, { s.w, s.gw, nw, "w" }, { s.b, s.gb, cout, "b" } };
    gradcheck(name, &s, conv_f, conv_b, ny, ps, bias ? 3 : 2, TOL);
    double *y = zeros(ny), *yr = zeros(ny), e = 0;
    conv_f(&s, y);
    naive_conv(&s.p, yr, s.x, s.w, s.b);
    for (int64_t i = 0; i < ny; i++) e = fmax(e, fabs(y[i] - yr[i]));
    T_CHECKF(e < 1e-12, "%s forward vs naive: %g", name, e);
    free(y); free(yr); free(s.x); free(s.w); free(s.b); free(s.gx); free(s.gw); free(s.gb);
}

static void test_conv2d(void)
{
    conv_case("conv3x3_s1_p1_1chunk", 1, 2, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1);
    conv_case("conv3x3_s1_p1_chunks", 1, 2, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1);    /* 3 chunks, sequential */
    conv_case("conv3x3_s1_p1_batch", 2, 2, 9, 5, 2, 3, 1, 1, 1, 1, 1, 1);     /* 6 chunks, parallel */
    conv_case("conv3x3_s2_p1", 2, 2, 9, 8, 3, 3, 2, 1, 1, 1, 1, 1);
    conv_case("conv3x3_s2_vae_pad", 2, 2, 8, 8, 2, 3, 2, 0, 0, 1, 1, 1);      /* F.pad (0,1,0,1) */
    conv_case("conv1x1_direct", 2, 3, 6, 5, 4, 1, 1, 0, 0, 0, 0, 1);
    conv_case("conv1x1_nobias", 1, 3, 2, 3, 2, 1, 1, 0, 0, 0, 0, 0);
    conv_case("conv3x3_valid", 1, 2, 5, 6, 2, 3, 1, 0, 0, 0, 0, 1);
    /* Winograd F(4×4,3×3) forward, dX and dW (kern_wino.h), chunks of 3 (dW: 5) tiles: partial edge tiles,
     * in-order chunks (fewer than 4) and parallel chunks, every padding from 0 to 2 */
    g_ctx.conv_algo = SD_CONV_WINOGRAD;
    conv_case("wino_p1_seq_chunks", 1, 2, 9, 7, 3, 3, 1, 1, 1, 1, 1, 1);
    conv_case("wino_p1_par_chunks", 2, 3, 10, 13, 2, 3, 1, 1, 1, 1, 1, 1);
    conv_case("wino_valid", 1, 2, 6, 11, 2, 3, 1, 0, 0, 0, 0, 0);
    conv_case("wino_pad_2_0", 2, 2, 5, 6, 3, 3, 1, 2, 0, 0, 2, 1);
    conv_case("wino_tiny", 1, 1, 1, 2, 1, 3, 1, 1, 1, 1, 1, 1);
    g_ctx.conv_algo = SD_CONV_AUTO;
}

/* ---- depthwise conv2d ----------------------------------------------------------------------- */

typedef struct { sd_k_dwconv p; double *x, *w, *b, *gx, *gw, *gb; } st_dw;
static void dw_f(void *q, double *y) { st_dw *s = q; sd_k_conv2d_dw_f64(&g_ctx, &s->p, y, s->x, s->w, s->b); }
static void dw_b(void *q, const double *dy) { st_dw *s = q; sd_k_conv2d_dw_bwd_f64(&g_ctx, &s->p, s->gx, s->gw, s->gb, dy, s->x, s->w); }

/* The depthwise conv as the general kernel's reference with a block-diagonal weight. */
static void naive_dw(const sd_k_dwconv *p, double *y, const double *x, const double *w, const double *b)
{
    int64_t kk = p->kh * p->kw;
    double *full = zeros(p->c * p->c * kk);
    for (int64_t c = 0; c < p->c; c++)
        for (int64_t t = 0; t < kk; t++) full[(c * p->c + c) * kk + t] = w[c * kk + t];
    sd_k_conv q;
    sd_k_conv_plan(&q, p->n, p->c, p->h, p->w, p->c, p->kh, p->kw, p->ho, p->wo, p->stride, p->pt, p->pl);
    naive_conv(&q, y, x, full, b);
    free(full);
}

static void dw_case(const char *name, int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw,
                    int stride, int pt, int pl, int pb, int pr, int bias)
{
    st_dw s;
    s.p = (sd_k_dwconv){ n, c, h, w, kh, kw, (h + pt + pb - kh) / stride + 1, (w + pl + pr - kw) / stride + 1,
                         stride, pt, pl };
    int64_t nx = n * c * h * w, nw = c * kh * kw, ny = n * c * s.p.ho * s.p.wo;
    s.x = rnd(nx, 1); s.w = rnd(nw, 1); s.b = bias ? rnd(c, 1) : NULL;
    s.gx = zeros(nx); s.gw = zeros(nw); s.gb = bias ? zeros(c) : NULL;
    tparam ps[] = { { s.x, s.gx, nx, "x" }, { s.w, s.gw, nw, "w" }, { s.b, s.gb, c, "b" } };
    gradcheck(name, &s, dw_f, dw_b, ny, ps, bias ? 3 : 2, TOL);
    double *y = zeros(ny), *yr = zeros(ny), e = 0;
    dw_f(&s, y);
    naive_dw(&s.p, yr, s.x, s.w, s.b);
    for (int64_t i = 0; i < ny; i++) e = fmax(e, fabs(y[i] - yr[i]));
    T_CHECKF(e < 1e-12, "%s forward vs naive: %g", name, e);
    free(y); free(yr); free(s.x); free(s.w); free(s.b); free(s.gx); free(s.gw); free(s.gb);
}

static void test_conv2d_dw(void)
{
    dw_case("dw7x7_p3", 2, 3, 9, 8, 7, 7, 1, 3, 3, 3, 3, 1);           /* ConvNeXt conv_dw */
    dw_case("dw7x7_p3_small", 1, 2, 3, 2, 7, 7, 1, 3, 3, 3, 3, 1);     /* image smaller than the filter */
    dw_case("dw3x3_s2_p1", 2, 3, 7, 6, 3, 3, 2, 1, 1, 1, 1, 1);
    dw_case("dw3x3_s2_asym", 1, 2, 8, 8, 3, 3, 2, 0, 0, 1, 1, 0);
    dw_case("dw2x3_valid_s3", 1, 2, 8, 10, 2, 3, 3, 0, 0, 0, 0, 1);
    dw_case("dw1x1", 2, 4, 3, 5, 1, 1, 1, 0, 0, 0, 0, 1);
    dw_case("dw5x5_par", 2, 8, 24, 20, 5, 5, 1, 2, 2, 2, 2, 1);        /* over the parallel thresholds */
}

/* ---- normalisation -------------------------------------------------------------------------- */

typedef struct { double *x, *ga, *be, *gx, *gga, *gbe, mean[64], rstd[64]; int64_t n, c, s, g; sd_act act; double eps; } st_gn;
static void gn_f(void *p, double *y) { st_gn *s = p; sd_k_group_norm_f64(&g_ctx, y, s->mean, s->rstd, s->x, s->ga, s->be, s->n, s->c, s->s, s->g, s->eps, s->act); }
static void gn_b(void *p, const double *dy)
{
    st_gn *s = p;
    double part[2 * 64];
    sd_k_group_norm_bwd_f64(&g_ctx, s->gx, s->gga, s->gbe, dy, s->x, s->mean, s->rstd, s->ga, s->be, s->n, s->c, s->s, s->g, s->act, part);
}

static void test_group_norm(void)
{
    for (int a = 0; a < 2; a++) {
        st_gn s = { .n = 2, .c = 6, .s = 12, .g = 3, .act = a ? SD_ACT_SILU : SD_ACT_NONE, .eps = a ? 1e-6 : 1e-5 };
        int64_t nx = 2 * 6 * 12;
        s.x = rnd(nx, 2); s.ga = rnd(6, 1); s.be = rnd(6, 1); s.gx = zeros(nx); s.gga = zeros(6); s.gbe = zeros(6);
        for (int64_t i = 0; i < nx; i++) s.x[i] += 0.5;   /* non-zero mean */
        tparam ps[] = { { s.x, s.gx, nx, "x" }, { s.ga, s.gga, 6, "gamma" }, { s.be, s.gbe, 6, "beta" } };
        gradcheck(a ? "group_norm_silu" : "group_norm", &s, gn_f, gn_b, nx, ps, 3, TOL);
        /* forward vs naive */
        double *y = zeros(nx), e = 0;
        gn_f(&s, y);
        for (int64_t n = 0; n < 2; n++)
            for (int64_t g = 0; g < 3; g++) {
                double m = 0, v = 0;
                const double *xg = s.x + (n * 3 + g) * 24;
                for (int i = 0; i < 24; i++) m += xg[i];
                m /= 24;
                for (int i = 0; i < 24; i++) v += (xg[i] - m) * (xg[i] - m);
                v /= 24;
                for (int i = 0; i < 24; i++) {
                    int64_t c = g * 2 + i / 12;
                    double z = (xg[i] - m) / sqrt(v + s.eps) * s.ga[c] + s.be[c];
                    if (a) z = z / (1 + exp(-z));
                    e = fmax(e, fabs(z - y[(n * 3 + g) * 24 + i]));
                }
            }
        T_CHECKF(e < 1e-12, "group_norm forward vs naive: %g", e);
        free(y); free(s.x); free(s.ga); free(s.be); free(s.gx); free(s.gga); free(s.gbe);
    }
}

typedef struct { double *x, *ga, *be, *gx, *gga, *gbe, mean[64], rstd[64]; int64_t r, c; } st_ln;
static void ln_f(void *p, double *y) { st_ln *s = p; sd_k_layer_norm_f64(&g_ctx, y, s->mean, s->rstd, s->x, s->ga, s->be, s->r, s->c, 1e-5); }
static void ln_b(void *p, const double *dy)
{
    st_ln *s = p;
    double part[2 * 64 * 8];
    sd_k_layer_norm_bwd_f64(&g_ctx, s->gx, s->gga, s->gbe, dy, s->x, s->mean, s->rstd, s->ga, s->r, s->c, part);
}

static void test_layer_norm(void)
{
    st_ln s = { .r = 5, .c = 7 };
    s.x = rnd(35, 2); s.ga = rnd(7, 1); s.be = rnd(7, 1); s.gx = zeros(35); s.gga = zeros(7); s.gbe = zeros(7);
    tparam ps[] = { { s.x, s.gx, 35, "x" }, { s.ga, s.gga, 7, "gamma" }, { s.be, s.gbe, 7, "beta" } };
    gradcheck("layer_norm", &s, ln_f, ln_b, 35, ps, 3, TOL);
    free(s.x); free(s.ga); free(s.be); free(s.gx); free(s.gga); free(s.gbe);
}

/* ---- activations, GEGLU, softmax ------------------------------------------------------------ */

typedef struct { double *x, *gx; int64_t n, d; sd_act act; } st_act;
static void act_f(void *p, double *y) { st_act *s = p; sd_k_act_f64(&g_ctx, s->act, y, s->x, s->n); }
static void act_b(void *p, const double *dy) { st_act *s = p; sd_k_act_bwd_f64(&g_ctx, s->act, s->gx, dy, s->x, s->n); }
static void geglu_f(void *p, double *y) { st_act *s = p; sd_k_geglu_f64(&g_ctx, y, s->x, s->n, s->d); }
static void geglu_b(void *p, const double *dy) { st_act *s = p; sd_k_geglu_bwd_f64(&g_ctx, s->gx, dy, s->x, s->n, s->d); }
static void sm_f(void *p, double *y) { st_act *s = p; sd_k_softmax_f64(&g_ctx, y, s->x, s->n, s->d); }
static void sm_b(void *p, const double *dy)
{
    st_act *s = p;
    double *y = zeros(s->n * s->d);
    sd_k_softmax_f64(&g_ctx, y, s->x, s->n, s->d);
    sd_k_softmax_bwd_f64(&g_ctx, s->gx, dy, y, s->n, s->d);
    free(y);
}

static void test_activations(void)
{
    const char *names[] = { "silu", "gelu", "gelu_tanh", "quick_gelu" };
    for (int a = 0; a < 4; a++) {
        st_act s = { .n = 40, .act = (sd_act)(SD_ACT_SILU + a) };
        s.x = rnd(40, 4); s.gx = zeros(40);
        tparam ps[] = { { s.x, s.gx, 40, "x" } };
        gradcheck(names[a], &s, act_f, act_b, 40, ps, 1, TOL);
        double y[40], e = 0;
        act_f(&s, y);
        for (int i = 0; i < 40; i++) {
            double x = s.x[i], r;
            if (a == 0) r = x / (1 + exp(-x));
            else if (a == 1) r = 0.5 * x * (1 + erf(x / sqrt(2.0)));
            else if (a == 2) r = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
            else r = x / (1 + exp(-1.702 * x));
            e = fmax(e, fabs(r - y[i]));
        }
        T_CHECKF(e < 1e-14, "%s forward %g", names[a], e);
        free(s.x); free(s.gx);
    }
    st_act g = { .n = 3, .d = 5 };
    g.x = rnd(30, 3); g.gx = zeros(30);
    tparam pg[] = { { g.x, g.gx, 30, "x" } };
    gradcheck("geglu", &g, geglu_f, geglu_b, 15, pg, 1, TOL);
    free(g.x); free(g.gx);
    st_act m = { .n = 4, .d = 6 };
    m.x = rnd(24, 3); m.gx = zeros(24);
    tparam pm[] = { { m.x, m.gx, 24, "x" } };
    gradcheck("softmax", &m, sm_f, sm_b, 24, pm, 1, TOL);
    free(m.x); free(m.gx);
}

/* ---- rotary position embedding ---------------------------------------------------------------- */

typedef struct { double *x, *gx, *tab; int64_t b, t, c, d, skip; } st_rope;
static void rope_f(void *p, double *y) { st_rope *s = p; sd_k_rope_f64(&g_ctx, y, s->x, s->tab, s->b, s->t, s->c, s->d, s->skip); }
static void rope_b(void *p, const double *dy)
{
    st_rope *s = p;
    sd_k_rope_bwd_f64(&g_ctx, s->gx, dy, s->tab, s->b, s->t, s->c, s->d, s->skip);
}

/* timm's formula x·cos + rot(x)·sin with rot(x)[2i] = −x[2i+1], rot(x)[2i+1] = x[2i]; an arbitrary
 * table (sin/cos not paired) so every index of the kernel is exercised. */
static void test_rope(void)
{
    for (int skip = 0; skip <= 2; skip += 2) {
        st_rope s = { .b = 2, .t = 5, .c = 12, .d = 4, .skip = skip };
        int64_t n = s.b * s.t * s.c, tp = s.t - skip;
        s.x = rnd(n, 2); s.gx = zeros(n); s.tab = rnd(tp * 2 * s.d, 1);
        tparam ps[] = { { s.x, s.gx, n, "x" } };
        gradcheck(skip ? "rope_skip2" : "rope", &s, rope_f, rope_b, n, ps, 1, TOL);
        double *y = zeros(n), e = 0;
        rope_f(&s, y);
        for (int64_t r = 0; r < s.b * s.t; r++) {
            int64_t j = r % s.t;
            for (int64_t k = 0; k < s.c; k++) {
                const double *x = s.x + r * s.c;
                double ref = x[k];
                if (j >= skip) {
                    int64_t i = k % s.d;
                    const double *sn = s.tab + (j - skip) * 2 * s.d, *cs = sn + s.d;
                    double rot = i % 2 ? x[k - 1] : -x[k + 1];
                    ref = x[k] * cs[i] + rot * sn[i];
                }
                e = fmax(e, fabs(ref - y[r * s.c + k]));
            }
        }
        T_CHECKF(e < 1e-14, "rope forward %g", e);
        /* f32 op = the double kernel; in place too */
        sd_ctx fc;
        T_EQ_INT(sd_ctx_init(&fc, SD_DEV_CPU, 2, 1 << 20), SD_OK);
        sd_tensor tx, ty, tt, tdx;
        float *p;
        T_EQ_INT(sd_tensor_alloc(&tx, SD_F32, SD_DIMS(2, 5, 12)), SD_OK);
        T_EQ_INT(sd_tensor_alloc(&ty, SD_F32, SD_DIMS(2, 5, 12)), SD_OK);
        T_EQ_INT(sd_tensor_alloc(&tdx, SD_F32, SD_DIMS(2, 5, 12)), SD_OK);
        T_EQ_INT(sd_tensor_alloc(&tt, SD_F32, SD_DIMS(tp, 8)), SD_OK);
        p = tx.data; for (int64_t i = 0; i < n; i++) p[i] = (float)s.x[i];
        p = tt.data; for (int64_t i = 0; i < tp * 8; i++) p[i] = (float)s.tab[i];
        T_EQ_INT(sd_op_rope(&fc, &ty, &tx, &tt), SD_OK);
        p = ty.data; e = 0;
        for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(p[i] - y[i]));
        T_CHECKF(e < 1e-5, "rope f32 %g", e);
        T_EQ_INT(sd_op_rope(&fc, &tx, &tx, &tt), SD_OK);
        T_CHECK(memcmp(tx.data, ty.data, (size_t)n * 4) == 0);
        double *gd = zeros(n);
        sd_k_rope_bwd_f64(&g_ctx, gd, s.x, s.tab, s.b, s.t, s.c, s.d, skip);   /* dy = x */
        p = tx.data; for (int64_t i = 0; i < n; i++) p[i] = (float)s.x[i];
        T_EQ_INT(sd_op_fill(&fc, &tdx, 0.0f), SD_OK);
        T_EQ_INT(sd_op_rope_bwd(&fc, &tdx, &tx, &tt), SD_OK);
        p = tdx.data; e = 0;
        for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(p[i] - gd[i]));
        T_CHECKF(e < 1e-5, "rope_bwd f32 %g", e);
        /* argument errors: odd head width, table longer than the sequence */
        sd_tensor bad;
        T_EQ_INT(sd_tensor_alloc(&bad, SD_F32, SD_DIMS(tp, 6)), SD_OK);
        T_EQ_INT(sd_op_rope(&fc, &ty, &tx, &bad), SD_EINVAL);
        sd_tensor_free(&bad);
        T_EQ_INT(sd_tensor_alloc(&bad, SD_F32, SD_DIMS(6, 8)), SD_OK);
        T_EQ_INT(sd_op_rope(&fc, &ty, &tx, &bad), SD_EINVAL);
        sd_tensor_free(&bad);
        sd_tensor *all[] = { &tx, &ty, &tt, &tdx };
        for (int i = 0; i < 4; i++) sd_tensor_free(all[i]);
        sd_ctx_free(&fc);
        free(s.x); free(s.gx); free(s.tab); free(y); free(gd);
    }
}

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct { sd_k_attn a; double *q, *k, *v, *gq, *gk, *gv, *o, *lse; } st_at;
static void at_f(void *p, double *y) { st_at *s = p; sd_k_attention_f64(&g_ctx, &s->a, y, s->lse, s->q, s->k, s->v); }
static void at_b(void *p, const double *dy)
{
    st_at *s = p;
    sd_k_attention_f64(&g_ctx, &s->a, s->o, s->lse, s->q, s->k, s->v);
    sd_k_attention_bwd_f64(&g_ctx, &s->a, s->gq, s->gk, s->gv, dy, s->q, s->k, s->v, s->o, s->lse);
}

static void naive_attn(const sd_k_attn *a, double *o, const double *q, const double *k, const double *v)
{
    int64_t ldq = a->h * a->dk, ldv = a->h * a->dv;
    double *s = zeros(a->tk);
    for (int64_t b = 0; b < a->b; b++)
        for (int64_t h = 0; h < a->h; h++)
            for (int64_t i = 0; i < a->tq; i++) {
                double m = -1e300, sum = 0;
                int64_t lim = a->causal ? i + 1 : a->tk;
                for (int64_t j = 0; j < lim; j++) {
                    double d = 0;
                    for (int64_t c = 0; c < a->dk; c++) d += q[(b * a->tq + i) * ldq + h * a->dk + c] * k[(b * a->tk + j) * ldq + h * a->dk + c];
                    s[j] = d * a->scale;
                    m = fmax(m, s[j]);
                }
                for (int64_t j = 0; j < lim; j++) { s[j] = exp(s[j] - m); sum += s[j]; }
                for (int64_t c = 0; c < a->dv; c++) {
                    double acc = 0;
                    for (int64_t j = 0; j < lim; j++) acc += s[j] / sum * v[(b * a->tk + j) * ldv + h * a->dv + c];
                    o[(b * a->tq + i) * ldv + h * a->dv + c] = acc;
                }
            }
    free(s);
}

static void attn_case(const char *name, int64_t b, int64_t h, int64_t tq, int64_t tk, int64_t dk, int64_t dv, int causal)
{
    st_at s = { .a = { b, h, tq, tk, dk, dv, 1 / sqrt((double)dk), causal } };
    int64_t nq = b * tq * h * dk, nk = b * tk * h * dk, nv = b * tk * h * dv, no = b * tq * h * dv;
    s.q = rnd(nq, 1.5); s.k = rnd(nk, 1.5); s.v = rnd(nv, 1);
    s.gq = zeros(nq); s.gk = zeros(nk); s.gv = zeros(nv); s.o = zeros(no); s.lse = zeros(b * h * tq);
    tparam ps[] = { { s.q, s.gq, nq, "q" }, { s.k, s.gk, nk, "k" }, { s.v, s.gv, nv, "v" } };
    gradcheck(name, &s, at_f, at_b, no, ps, 3, TOL);
    double *y = zeros(no), *yr = zeros(no), e = 0;
    at_f(&s, y);
    naive_attn(&s.a, yr, s.q, s.k, s.v);
    for (int64_t i = 0; i < no; i++) e = fmax(e, fabs(y[i] - yr[i]));
    T_CHECKF(e < 1e-12, "%s forward vs naive softmax(QKᵀ)V: %g", name, e);
    free(y); free(yr); free(s.q); free(s.k); free(s.v); free(s.gq); free(s.gk); free(s.gv); free(s.o); free(s.lse);
}

static void test_attention(void)
{
    attn_case("attn_self_groups", 1, 2, 9, 9, 3, 3, 0);      /* bh = 2 → 3 query-block groups (partials) */
    attn_case("attn_cross", 2, 2, 7, 5, 3, 4, 0);
    attn_case("attn_direct", 2, 4, 6, 6, 2, 2, 0);           /* bh = 8 → no partials */
    attn_case("attn_causal", 1, 2, 7, 7, 4, 4, 1);
}

/* ---- shape ops ------------------------------------------------------------------------------ */

typedef struct { double *x, *gx; int64_t nc, h, w; int f; } st_up;
static void up_f(void *p, double *y) { st_up *s = p; sd_k_upsample_f64(&g_ctx, y, s->x, s->nc, s->h, s->w, s->f); }
static void up_b(void *p, const double *dy) { st_up *s = p; sd_k_upsample_bwd_f64(&g_ctx, s->gx, dy, s->nc, s->h, s->w, s->f); }

typedef struct { double *x[3], *gx[3]; int64_t len[3], outer, inner; } st_cat;
static void cat_f(void *p, double *y) { st_cat *s = p; sd_k_concat_f64(&g_ctx, y, (const double *const *)s->x, s->len, 3, s->outer, s->inner, 0); }
static void cat_b(void *p, const double *dy) { st_cat *s = p; sd_k_concat_f64(&g_ctx, (double *)dy, (const double *const *)s->gx, s->len, 3, s->outer, s->inner, 1); }

typedef struct { double *x, *gx; int64_t sh[4]; int perm[4]; } st_perm;
static void perm_f(void *p, double *y) { st_perm *s = p; sd_k_permute_f64(&g_ctx, y, s->x, 4, s->sh, s->perm, 0); }
static void perm_b(void *p, const double *dy)
{
    st_perm *s = p;
    int inv[4];
    int64_t ysh[4];
    for (int i = 0; i < 4; i++) { inv[s->perm[i]] = i; ysh[i] = s->sh[s->perm[i]]; }
    sd_k_permute_f64(&g_ctx, s->gx, dy, 4, ysh, inv, 1);
}

static void test_shape_ops(void)
{
    st_up u = { .nc = 3, .h = 3, .w = 4, .f = 2 };
    u.x = rnd(36, 1); u.gx = zeros(36);
    tparam pu[] = { { u.x, u.gx, 36, "x" } };
    gradcheck("upsample_nearest", &u, up_f, up_b, 144, pu, 1, TOL);
    double y[144];
    up_f(&u, y);
    T_CHECK(y[0] == u.x[0] && y[1] == u.x[0] && y[8] == u.x[0] && y[9] == u.x[0] && y[2] == u.x[1] && y[16] == u.x[4]);
    free(u.x); free(u.gx);

    st_cat c = { .len = { 2, 3, 1 }, .outer = 2, .inner = 4 };
    for (int i = 0; i < 3; i++) { c.x[i] = rnd(2 * c.len[i] * 4, 1); c.gx[i] = zeros(2 * c.len[i] * 4); }
    tparam pc[] = { { c.x[0], c.gx[0], 16, "a" }, { c.x[1], c.gx[1], 24, "b" }, { c.x[2], c.gx[2], 8, "c" } };
    gradcheck("concat", &c, cat_f, cat_b, 48, pc, 3, TOL);
    double yc[48];
    cat_f(&c, yc);
    T_CHECK(yc[0] == c.x[0][0] && yc[8] == c.x[1][0] && yc[20] == c.x[2][0] && yc[24] == c.x[0][8]);
    for (int i = 0; i < 3; i++) { free(c.x[i]); free(c.gx[i]); }

    st_perm p = { .sh = { 2, 3, 4, 5 }, .perm = { 0, 2, 3, 1 } };
    p.x = rnd(120, 1); p.gx = zeros(120);
    tparam pp[] = { { p.x, p.gx, 120, "x" } };
    gradcheck("permute", &p, perm_f, perm_b, 120, pp, 1, TOL);
    double yp[120];
    perm_f(&p, yp);   /* y[n, h, w, c] = x[n, c, h, w] */
    T_CHECK(yp[((1 * 4 + 2) * 5 + 3) * 3 + 1] == p.x[((1 * 3 + 1) * 4 + 2) * 5 + 3]);
    free(p.x); free(p.gx);
}

/* ---- broadcasting arithmetic ---------------------------------------------------------------- */

typedef struct { double *a, *b, *ga, *gb; sd_k_bcast p; int64_t na, nb; int op; } st_bin;
static void bin_f(void *q, double *y) { st_bin *s = q; sd_k_binary_f64(&g_ctx, s->op, y, s->a, s->b, &s->p); }
static void bin_b(void *q, const double *dy)
{
    st_bin *s = q;
    if (s->op == 0) {   /* add: da += dy, db += sum_to(dy) */
        for (int64_t i = 0; i < s->na; i++) s->ga[i] += dy[i];
        sd_k_sum_to_f64(&g_ctx, s->gb, 1, dy, NULL, &s->p, s->nb);
    } else {
        sd_k_binary_f64(&g_ctx, 2, s->ga, dy, s->b, &s->p);
        sd_k_sum_to_f64(&g_ctx, s->gb, 1, dy, s->a, &s->p, s->nb);
    }
}

static void bin_case(const char *name, int op, int nd, const int64_t *ash, int bnd, const int64_t *bsh)
{
    st_bin s = { .op = op, .na = 1, .nb = 1 };
    for (int i = 0; i < nd; i++) s.na *= ash[i];
    for (int i = 0; i < bnd; i++) s.nb *= bsh[i];
    sd_k_bcast_plan(&s.p, nd, ash, bnd, bsh);
    s.a = rnd(s.na, 1); s.b = rnd(s.nb, 1); s.ga = zeros(s.na); s.gb = zeros(s.nb);
    tparam ps[] = { { s.a, s.ga, s.na, "a" }, { s.b, s.gb, s.nb, "b" } };
    gradcheck(name, &s, bin_f, bin_b, s.na, ps, 2, TOL);
    /* forward vs naive broadcast indexing */
    double *y = zeros(s.na), e = 0;
    bin_f(&s, y);
    for (int64_t i = 0; i < s.na; i++) {
        int64_t rem = i, bo = 0, bs = 1;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t idx = rem % ash[d];
            rem /= ash[d];
            int bd = d - (nd - bnd);
            if (bd >= 0) { if (bsh[bd] != 1) bo += idx * bs; bs *= bsh[bd]; }
        }
        double r = op == 0 ? s.a[i] + s.b[bo] : s.a[i] * s.b[bo];
        e = fmax(e, fabs(r - y[i]));
    }
    T_CHECKF(e == 0, "%s forward vs naive: %g", name, e);
    free(y); free(s.a); free(s.b); free(s.ga); free(s.gb);
}

static void test_broadcast(void)
{
    bin_case("add_time_emb", 0, SD_DIMS(2, 3, 4, 5), SD_DIMS(2, 3, 1, 1));
    bin_case("add_bias_last", 0, SD_DIMS(2, 3, 4), SD_DIMS(4));
    bin_case("add_same", 0, SD_DIMS(3, 4), SD_DIMS(3, 4));
    bin_case("add_mid", 0, SD_DIMS(2, 3, 4), SD_DIMS(3, 1));
    bin_case("mul_time_emb", 1, SD_DIMS(2, 3, 4, 5), SD_DIMS(2, 3, 1, 1));
    bin_case("mul_chan", 1, SD_DIMS(2, 3, 4, 5), SD_DIMS(1, 3, 1, 1));
    bin_case("mul_last", 1, SD_DIMS(2, 3, 4), SD_DIMS(1, 4));
    bin_case("mul_rows", 1, SD_DIMS(2, 3, 4), SD_DIMS(2, 1, 4));
}

/* ---- embeddings and losses ------------------------------------------------------------------ */

typedef struct { double *t, *gt; int32_t ids[10]; int64_t n, d; } st_emb;
static void emb_f(void *p, double *y) { st_emb *s = p; sd_k_embedding_f64(&g_ctx, y, s->t, s->ids, s->n, s->d); }
static void emb_b(void *p, const double *dy) { st_emb *s = p; sd_k_embedding_bwd_f64(&g_ctx, s->gt, dy, s->ids, s->n, s->d); }

static void test_embedding(void)
{
    st_emb s = { .ids = { 3, 0, 3, 5, 1, 3, 2, 0, 5, 4 }, .n = 10, .d = 7 };
    s.t = rnd(6 * 7, 1); s.gt = zeros(42);
    tparam ps[] = { { s.t, s.gt, 42, "table" } };
    gradcheck("embedding", &s, emb_f, emb_b, 70, ps, 1, TOL);
    free(s.t); free(s.gt);

    /* timestep embedding vs the diffusers formula (dim 7: odd, padded) and flip */
    double t[2] = { 0, 981 }, y[14], y2[14];
    sd_k_timestep_embedding_f64(y, t, 2, 7, 1, 0, 10000);
    sd_k_timestep_embedding_f64(y2, t, 2, 7, 0, 1, 10000);
    double e = 0;
    for (int j = 0; j < 3; j++) {
        double f = exp(-log(10000.0) * j / 3.0), f2 = exp(-log(10000.0) * j / 2.0);
        e = fmax(e, fabs(y[7 + j] - cos(981 * f)) + fabs(y[7 + 3 + j] - sin(981 * f)));
        e = fmax(e, fabs(y2[7 + j] - sin(981 * f2)) + fabs(y2[7 + 3 + j] - cos(981 * f2)));
        e = fmax(e, fabs(y[j] - 1) + fabs(y[3 + j]));
    }
    T_CHECKF(e < 1e-12 && y[6] == 0 && y[13] == 0, "timestep embedding %g", e);
}

typedef struct { double *p, *t, *w, *c, *gp; int64_t n, m; sd_loss_kind k; } st_loss;
static void loss_f(void *q, double *y)
{
    st_loss *s = q;
    double per[8];
    y[0] = sd_k_loss_f64(&g_ctx, per, s->p, s->t, s->w, s->c, s->k, s->n, s->m);
}
static void loss_b(void *q, const double *dy) { st_loss *s = q; sd_k_loss_bwd_f64(&g_ctx, s->gp, s->p, s->t, s->w, s->c, s->k, dy[0], s->n, s->m); }

static void test_losses(void)
{
    const char *names[] = { "loss_l2", "loss_l1", "loss_huber", "loss_smooth_l1" };
    for (int k = 0; k < 4; k++) {
        st_loss s = { .n = 3, .m = 20, .k = (sd_loss_kind)k };
        s.p = rnd(60, 1); s.t = rnd(60, 1); s.w = rnd(3, 1); s.c = rnd(3, 0.2); s.gp = zeros(60);
        for (int i = 0; i < 3; i++) { s.w[i] += 1.5; s.c[i] = fabs(s.c[i]) + 0.05; }
        tparam ps[] = { { s.p, s.gp, 60, "pred" }, { s.t, zeros(60), 0, "target" } };
        gradcheck(names[k], &s, loss_f, loss_b, 1, ps, 1, TOL);
        free(ps[1].g);
        /* value vs direct formula */
        double y, ref = 0;
        loss_f(&s, &y);
        for (int n = 0; n < 3; n++) {
            double a = 0;
            for (int i = 0; i < 20; i++) {
                double d = s.p[n * 20 + i] - s.t[n * 20 + i], c = s.c[n];
                a += k == 0 ? d * d : k == 1 ? fabs(d) : k == 2 ? 2 * c * (sqrt(d * d + c * c) - c) : 2 * (sqrt(d * d + c * c) - c);
            }
            ref += s.w[n] * a / 20;
        }
        ref /= 3;
        T_CHECKF(fabs(y - ref) < 1e-13, "%s value %g vs %g", names[k], y, ref);
        free(s.p); free(s.t); free(s.w); free(s.c); free(s.gp);
    }
}

/* ---- float smoke check: library f32 ops vs the double kernels ------------------------------- */

static sd_tensor ft(const double *src, int nd, const int64_t *sh)
{
    sd_tensor t;
    sd_tensor_alloc(&t, SD_F32, nd, sh);
    float *p = t.data;
    for (int64_t i = 0; i < sd_tensor_numel(&t); i++) p[i] = src ? (float)src[i] : 0.f;
    return t;
}

static double relerr(const sd_tensor *t, const double *ref)
{
    const float *p = t->data;
    double e = 0, m = 1e-30;
    for (int64_t i = 0; i < sd_tensor_numel(t); i++) { e = fmax(e, fabs(p[i] - ref[i])); m = fmax(m, fabs(ref[i])); }
    return e / m;
}

static void test_float_smoke(void)
{
    sd_ctx fc;
    T_EQ_INT(sd_ctx_init(&fc, SD_DEV_CPU, 2, 64 << 20), SD_OK);
    /* conv 3×3 with backward */
    {
        sd_k_conv p;
        sd_k_conv_plan(&p, 2, 4, 10, 9, 5, 3, 3, 10, 9, 1, 1, 1);
        double *x = rnd(720, 1), *w = rnd(180, 0.3), *b = rnd(5, 1), *dy = rnd(900, 1);
        double *y = zeros(900), *gx = zeros(720), *gw = zeros(180), *gb = zeros(5);
        sd_k_conv2d_f64(&g_ctx, &p, y, x, w, b);
        sd_k_conv2d_bwd_f64(&g_ctx, &p, gx, gw, gb, dy, x, w);
        sd_tensor tx = ft(x, SD_DIMS(2, 4, 10, 9)), tw = ft(w, SD_DIMS(5, 4, 3, 3)), tb = ft(b, SD_DIMS(5));
        sd_tensor ty = ft(NULL, SD_DIMS(2, 5, 10, 9)), tdy = ft(dy, SD_DIMS(2, 5, 10, 9));
        sd_tensor tgx = ft(NULL, SD_DIMS(2, 4, 10, 9)), tgw = ft(NULL, SD_DIMS(5, 4, 3, 3)), tgb = ft(NULL, SD_DIMS(5));
        sd_conv2d_geom g = sd_conv2d_geom_make(1, 1);
        T_EQ_INT(sd_op_conv2d(&fc, &ty, &tx, &tw, &tb, g), SD_OK);
        T_EQ_INT(sd_op_conv2d_bwd(&fc, &tgx, &tgw, &tgb, &tdy, &tx, &tw, g), SD_OK);
        T_CHECKF(relerr(&ty, y) < 1e-5, "conv f32 y %g", relerr(&ty, y));
        T_CHECKF(relerr(&tgx, gx) < 1e-5, "conv f32 dx %g", relerr(&tgx, gx));
        T_CHECKF(relerr(&tgw, gw) < 1e-5, "conv f32 dw %g", relerr(&tgw, gw));
        T_CHECKF(relerr(&tgb, gb) < 1e-5, "conv f32 db %g", relerr(&tgb, gb));
        sd_tensor *all[] = { &tx, &tw, &tb, &ty, &tdy, &tgx, &tgw, &tgb };
        for (int i = 0; i < 8; i++) sd_tensor_free(all[i]);
        free(x); free(w); free(b); free(dy); free(y); free(gx); free(gw); free(gb);
    }
    /* depthwise conv 7×7 with backward, f32 and f16 weights */
    for (int half = 0; half < 2; half++) {
        sd_k_dwconv p = { 2, 6, 12, 11, 7, 7, 12, 11, 1, 3, 3 };
        double *x = rnd(1584, 1), *w = rnd(294, 0.3), *b = rnd(6, 1), *dy = rnd(1584, 1);
        double *y = zeros(1584), *gx = zeros(1584), *gw = zeros(294), *gb = zeros(6);
        sd_tensor tx = ft(x, SD_DIMS(2, 6, 12, 11)), tw = ft(w, SD_DIMS(6, 1, 7, 7)), tb = ft(b, SD_DIMS(6));
        if (half) {   /* the f16 weight's own values are the reference */
            sd_tensor th = {0};
            T_EQ_INT(sd_tensor_alloc(&th, SD_F16, 4, tw.shape), SD_OK);
            T_EQ_INT(sd_op_convert(&fc, &th, &tw), SD_OK);
            T_EQ_INT(sd_op_convert(&fc, &tw, &th), SD_OK);
            for (int i = 0; i < 294; i++) w[i] = ((float *)tw.data)[i];
            sd_tensor_free(&tw);
            tw = th;
        }
        sd_k_conv2d_dw_f64(&g_ctx, &p, y, x, w, b);
        sd_k_conv2d_dw_bwd_f64(&g_ctx, &p, gx, gw, gb, dy, x, w);
        sd_tensor ty = ft(NULL, SD_DIMS(2, 6, 12, 11)), tdy = ft(dy, SD_DIMS(2, 6, 12, 11));
        sd_tensor tgx = ft(NULL, SD_DIMS(2, 6, 12, 11)), tgw = ft(NULL, SD_DIMS(6, 1, 7, 7)), tgb = ft(NULL, SD_DIMS(6));
        sd_conv2d_geom g = sd_conv2d_geom_make(1, 3);
        T_EQ_INT(sd_op_conv2d_dw(&fc, &ty, &tx, &tw, &tb, g), SD_OK);
        T_EQ_INT(sd_op_conv2d_dw_bwd(&fc, &tgx, half ? NULL : &tgw, &tgb, &tdy, &tx, &tw, g), SD_OK);
        T_CHECKF(relerr(&ty, y) < 1e-5, "conv_dw f32 y %g (half %d)", relerr(&ty, y), half);
        T_CHECKF(relerr(&tgx, gx) < 1e-5, "conv_dw f32 dx %g", relerr(&tgx, gx));
        if (!half) T_CHECKF(relerr(&tgw, gw) < 1e-5, "conv_dw f32 dw %g", relerr(&tgw, gw));
        T_CHECKF(relerr(&tgb, gb) < 1e-5, "conv_dw f32 db %g", relerr(&tgb, gb));
        /* argument errors: a [C,C,k,k] weight, a wrong output shape, aliasing */
        sd_tensor bad = ft(NULL, SD_DIMS(6, 6, 7, 7)), ybad = ft(NULL, SD_DIMS(2, 6, 6, 6));
        T_EQ_INT(sd_op_conv2d_dw(&fc, &ty, &tx, &bad, &tb, g), SD_EINVAL);
        T_EQ_INT(sd_op_conv2d_dw(&fc, &ybad, &tx, &tw, &tb, g), SD_EINVAL);
        T_EQ_INT(sd_op_conv2d_dw(&fc, &tx, &tx, &tw, &tb, g), SD_EINVAL);
        sd_tensor *all[] = { &tx, &tw, &tb, &ty, &tdy, &tgx, &tgw, &tgb, &bad, &ybad };
        for (int i = 0; i < 10; i++) sd_tensor_free(all[i]);
        free(x); free(w); free(b); free(dy); free(y); free(gx); free(gw); free(gb);
    }
    /* attention with backward, on the AVX-512 micro-kernels (when present) and on sgemm */
    for (int path = 0; path < 2; path++) {
        sd_avx512_override(path == 0);
        sd_k_attn a = { 1, 2, 150, 150, 40, 40, 1 / sqrt(40.0), 0 };
        int64_t n = 150 * 80;
        double *q = rnd(n, 1.5), *k = rnd(n, 1.5), *v = rnd(n, 1), *dy = rnd(n, 1);
        double *o = zeros(n), *lse = zeros(300), *gq = zeros(n), *gk = zeros(n), *gv = zeros(n);
        sd_k_attention_f64(&g_ctx, &a, o, lse, q, k, v);
        sd_k_attention_bwd_f64(&g_ctx, &a, gq, gk, gv, dy, q, k, v, o, lse);
        sd_tensor tq = ft(q, SD_DIMS(1, 150, 80)), tk = ft(k, SD_DIMS(1, 150, 80)), tv = ft(v, SD_DIMS(1, 150, 80));
        sd_tensor to = ft(NULL, SD_DIMS(1, 150, 80)), tl = ft(NULL, SD_DIMS(1, 2, 150)), tdy = ft(dy, SD_DIMS(1, 150, 80));
        sd_tensor tgq = ft(NULL, SD_DIMS(1, 150, 80)), tgk = ft(NULL, SD_DIMS(1, 150, 80)), tgv = ft(NULL, SD_DIMS(1, 150, 80));
        sd_attn_args aa = { 2, 0, 0 };
        T_EQ_INT(sd_op_attention(&fc, &to, &tl, &tq, &tk, &tv, aa), SD_OK);
        T_EQ_INT(sd_op_attention_bwd(&fc, &tgq, &tgk, &tgv, &tdy, &tq, &tk, &tv, &to, &tl, aa), SD_OK);
        T_CHECKF(relerr(&to, o) < 1e-5, "attention f32 o %g (path %d)", relerr(&to, o), path);
        T_CHECKF(relerr(&tgq, gq) < 1e-4, "attention f32 dq %g", relerr(&tgq, gq));
        T_CHECKF(relerr(&tgk, gk) < 1e-4, "attention f32 dk %g", relerr(&tgk, gk));
        T_CHECKF(relerr(&tgv, gv) < 1e-5, "attention f32 dv %g", relerr(&tgv, gv));
        sd_tensor *all[] = { &tq, &tk, &tv, &to, &tl, &tdy, &tgq, &tgk, &tgv };
        for (int i = 0; i < 9; i++) sd_tensor_free(all[i]);
        free(q); free(k); free(v); free(dy); free(o); free(lse); free(gq); free(gk); free(gv);
    }
    sd_avx512_override(1);
    /* group norm + SiLU, GEGLU, GELU with the fast float exp/erf */
    {
        double *x = rnd(2 * 64 * 20, 3), *ga = rnd(64, 1), *be = rnd(64, 1), *y = zeros(2560), mean[64], rstd[64];
        sd_k_group_norm_f64(&g_ctx, y, mean, rstd, x, ga, be, 2, 64, 20, 32, 1e-5, SD_ACT_SILU);
        sd_tensor tx = ft(x, SD_DIMS(2, 64, 4, 5)), tga = ft(ga, SD_DIMS(64)), tbe = ft(be, SD_DIMS(64));
        sd_tensor ty = ft(NULL, SD_DIMS(2, 64, 4, 5)), tm = ft(NULL, SD_DIMS(2, 32)), tr = ft(NULL, SD_DIMS(2, 32));
        T_EQ_INT(sd_op_group_norm(&fc, &ty, &tm, &tr, &tx, &tga, &tbe, 32, 1e-5f, SD_ACT_SILU), SD_OK);
        T_CHECKF(relerr(&ty, y) < 1e-5, "group_norm f32 %g", relerr(&ty, y));
        double *gy = zeros(1280);
        sd_k_geglu_f64(&g_ctx, gy, x, 128, 10);
        sd_tensor tgx = ft(x, SD_DIMS(128, 20)), tgy = ft(NULL, SD_DIMS(128, 10));
        T_EQ_INT(sd_op_geglu(&fc, &tgy, &tgx), SD_OK);
        T_CHECKF(relerr(&tgy, gy) < 1e-5, "geglu f32 %g", relerr(&tgy, gy));
        sd_tensor *all[] = { &tx, &tga, &tbe, &ty, &tm, &tr, &tgx, &tgy };
        for (int i = 0; i < 8; i++) sd_tensor_free(all[i]);
        free(x); free(ga); free(be); free(y); free(gy);
    }
    sd_ctx_free(&fc);
}

/* ---- SwinV2 ops: L2 normalisation of rows, window partition / merge with a cyclic shift -------- */

typedef struct { double *x, *gx; int64_t n, d; double eps; } st_l2;
static void l2_f(void *p, double *y) { st_l2 *s = p; sd_k_l2norm_f64(&g_ctx, y, s->x, s->n, s->d, s->eps); }
static void l2_b(void *p, const double *dy) { st_l2 *s = p; sd_k_l2norm_bwd_f64(&g_ctx, s->gx, dy, s->x, s->n, s->d, s->eps); }

typedef struct { double *x, *gx; int64_t B, H, W, C; int ws, shift; } st_win;
static void win_f(void *p, double *y) { st_win *s = p; sd_k_window_f64(&g_ctx, y, s->x, s->B, s->H, s->W, s->C, s->ws, s->shift, 1, 0); }
static void win_b(void *p, const double *dy)
{
    st_win *s = p;
    sd_k_window_f64(&g_ctx, (double *)dy, s->gx, s->B, s->H, s->W, s->C, s->ws, s->shift, 0, 1);
}
static void mrg_f(void *p, double *y) { st_win *s = p; sd_k_window_f64(&g_ctx, s->x, y, s->B, s->H, s->W, s->C, s->ws, s->shift, 0, 0); }
static void mrg_b(void *p, const double *dy)
{
    st_win *s = p;
    sd_k_window_f64(&g_ctx, s->gx, (double *)dy, s->B, s->H, s->W, s->C, s->ws, s->shift, 1, 1);
}

static void test_swin_ops(void)
{
    /* l2_normalize: rows of 6, eps tiny (the norm branch) and eps large (every row below it) */
    for (int big = 0; big < 2; big++) {
        st_l2 s = { .n = 5, .d = 6, .eps = big ? 50.0 : 1e-12 };
        s.x = rnd(30, 2); s.gx = zeros(30);
        tparam ps[] = { { s.x, s.gx, 30, "x" } };
        gradcheck(big ? "l2_normalize (eps branch)" : "l2_normalize", &s, l2_f, l2_b, 30, ps, 1, TOL);
        double y[30], e = 0;
        l2_f(&s, y);
        for (int r = 0; r < 5; r++) {
            double nrm = 0;
            for (int i = 0; i < 6; i++) nrm += s.x[r * 6 + i] * s.x[r * 6 + i];
            nrm = fmax(sqrt(nrm), s.eps);
            for (int i = 0; i < 6; i++) e = fmax(e, fabs(y[r * 6 + i] - s.x[r * 6 + i] / nrm));
        }
        T_CHECKF(e < 1e-15, "l2_normalize forward %g", e);
        free(s.x); free(s.gx);
    }
    /* window partition / merge: 2 images of 4x6x3, windows of 2, shift 1 (and 0) */
    for (int shift = 0; shift < 2; shift++) {
        st_win w = { .B = 2, .H = 4, .W = 6, .C = 3, .ws = 2, .shift = shift };
        const int64_t n = 2 * 4 * 6 * 3;
        w.x = rnd(n, 1); w.gx = zeros(n);
        tparam pw[] = { { w.x, w.gx, n, "x" } };
        gradcheck(shift ? "window_partition (shift 1)" : "window_partition", &w, win_f, win_b, n, pw, 1, TOL);
        gradcheck(shift ? "window_merge (shift 1)" : "window_merge", &w, mrg_f, mrg_b, n, pw, 1, TOL);
        /* the reference: roll by -shift, then windows [b, wi, wj, i, j, c] */
        double *y = zeros(n), *back = zeros(n);
        win_f(&w, y);
        int bad = 0;
        for (int64_t b = 0; b < 2; b++)
            for (int64_t wi = 0; wi < 2; wi++)
                for (int64_t wj = 0; wj < 3; wj++)
                    for (int64_t i = 0; i < 2; i++)
                        for (int64_t j = 0; j < 2; j++)
                            for (int64_t c = 0; c < 3; c++) {
                                int64_t h = (wi * 2 + i + shift) % 4, x = (wj * 2 + j + shift) % 6;
                                int64_t t = ((((b * 2 + wi) * 3 + wj) * 2 + i) * 2 + j) * 3 + c;
                                bad += y[t] != w.x[((b * 4 + h) * 6 + x) * 3 + c];
                            }
        T_CHECKF(!bad, "window_partition forward: %d elements differ", bad);
        sd_k_window_f64(&g_ctx, y, back, 2, 4, 6, 3, 2, shift, 0, 0);   /* merge(partition(x)) = x */
        T_CHECK(!memcmp(back, w.x, sizeof(double) * (size_t)n));
        free(y); free(back); free(w.x); free(w.gx);
    }
    /* the f32 ops: results as the double kernels, argument errors */
    sd_ctx fc;
    T_EQ_INT(sd_ctx_init(&fc, SD_DEV_CPU, 2, 1 << 20), SD_OK);
    double *x = rnd(2 * 4 * 6 * 3, 1), *y = zeros(144), *g = zeros(144);
    sd_k_window_f64(&g_ctx, y, x, 2, 4, 6, 3, 2, 1, 1, 0);
    sd_k_l2norm_f64(&g_ctx, g, x, 48, 3, 1e-12);
    sd_tensor tx = ft(x, SD_DIMS(2, 4, 6, 3)), tw = ft(NULL, SD_DIMS(12, 4, 3)), tb = ft(NULL, SD_DIMS(2, 4, 6, 3));
    sd_tensor tn = ft(NULL, SD_DIMS(2, 4, 6, 3));
    T_EQ_INT(sd_op_window_partition(&fc, &tw, &tx, 2, 1), SD_OK);
    T_CHECK(relerr(&tw, y) < 1e-7);   /* a permutation: the values rounded to float */
    T_EQ_INT(sd_op_window_merge(&fc, &tb, &tw, 2, 1), SD_OK);
    T_CHECK(relerr(&tb, x) < 1e-7);
    T_EQ_INT(sd_op_window_partition_bwd(&fc, &tb, &tw, 2, 1), SD_OK);   /* tb = x + x */
    T_CHECK(((float *)tb.data)[5] == 2 * (float)x[5]);
    T_EQ_INT(sd_op_window_merge_bwd(&fc, &tw, &tx, 2, 1), SD_OK);
    T_CHECK(((float *)tw.data)[7] == 2 * (float)y[7]);
    T_EQ_INT(sd_op_l2_normalize(&fc, &tn, &tx, 1e-12f), SD_OK);
    T_CHECKF(relerr(&tn, g) < 1e-6, "l2_normalize f32 %g", relerr(&tn, g));
    T_EQ_INT(sd_op_l2_normalize(&fc, &tx, &tx, 1e-12f), SD_OK);   /* in place */
    T_CHECK(relerr(&tx, g) < 1e-6);
    T_EQ_INT(sd_op_l2_normalize(&fc, &tn, &tx, 0.0f), SD_EINVAL);
    T_EQ_INT(sd_op_window_partition(&fc, &tw, &tx, 2, 2), SD_EINVAL);   /* shift >= ws */
    T_EQ_INT(sd_op_window_partition(&fc, &tw, &tx, 4, 0), SD_EINVAL);   /* 4 does not divide 6 */
    T_EQ_INT(sd_op_window_partition(&fc, &tb, &tx, 2, 0), SD_EINVAL);   /* windows of the wrong shape */
    T_EQ_INT(sd_op_window_merge(&fc, &tx, &tx, 2, 0), SD_EINVAL);
    sd_tensor *all[] = { &tx, &tw, &tb, &tn };
    for (int i = 0; i < 4; i++) sd_tensor_free(all[i]);
    free(x); free(y); free(g);
    sd_ctx_free(&fc);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 64 << 20)) { printf("not ok ctx_init: %s\n", sd_errmsg()); return 1; }
    T_RUN(test_linear);
    T_RUN(test_matmul);
    T_RUN(test_conv2d);
    T_RUN(test_conv2d_dw);
    T_RUN(test_group_norm);
    T_RUN(test_layer_norm);
    T_RUN(test_activations);
    T_RUN(test_rope);
    T_RUN(test_attention);
    T_RUN(test_shape_ops);
    T_RUN(test_swin_ops);
    T_RUN(test_broadcast);
    T_RUN(test_embedding);
    T_RUN(test_losses);
    T_RUN(test_float_smoke);
    printf("# largest relative gradient error: %.3g\n", g_maxerr);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
