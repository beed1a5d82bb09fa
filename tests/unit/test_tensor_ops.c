/* Tensor descriptors, arenas, op argument validation, f16/bf16 weights, and bit-identical results
 * of every f32 op for 1, 2 and 3 threads. */
#include <cblas.h>
#include <stdint.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/device.h"
#include "tensor/ops.h"
#include "test.h"

static uint64_t g_rng = 12345;
static float frand(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static sd_tensor rt(int nd, const int64_t *sh, float scale)
{
    sd_tensor t;
    sd_tensor_alloc(&t, SD_F32, nd, sh);
    float *p = t.data;
    for (int64_t i = 0; i < sd_tensor_numel(&t); i++) p[i] = frand() * scale;
    return t;
}

static sd_tensor zt(int nd, const int64_t *sh)
{
    sd_tensor t;
    sd_tensor_alloc(&t, SD_F32, nd, sh);
    return t;
}

static void test_descriptors(void)
{
    float buf[24];
    sd_tensor t = sd_tensor_wrap(buf, SD_F32, SD_DIMS(2, 3, 4)), r;
    T_EQ_INT(sd_tensor_numel(&t), 24);
    T_EQ_INT(sd_tensor_nbytes(&t), 96);
    T_EQ_INT(sd_tensor_dim(&t, -1), 4);
    T_EQ_INT(sd_tensor_reshape(&t, SD_DIMS(6, -1), &r), SD_OK);
    T_EQ_INT(r.shape[1], 4);
    T_CHECK(r.data == buf);
    T_EQ_INT(sd_tensor_reshape(&t, SD_DIMS(5, -1), &r), SD_EINVAL);
    T_EQ_INT(sd_tensor_reshape(&t, SD_DIMS(5, 5), &r), SD_EINVAL);
    T_EQ_INT(sd_tensor_narrow0(&t, 1, 1, &r), SD_OK);
    T_CHECK(r.data == buf + 12 && r.shape[0] == 1);
    T_EQ_INT(sd_tensor_narrow0(&t, 1, 2, &r), SD_ERANGE);
    T_EQ_INT(sd_tensor_index0(&t, 1, &r), SD_OK);
    T_CHECK(r.ndim == 2 && r.shape[0] == 3 && r.shape[1] == 4 && r.data == buf + 12);
    char d[64];
    T_EQ_STR(sd_tensor_describe(&t, d, sizeof d), "[2, 3, 4] f32");
    sd_tensor bad = sd_tensor_wrap(buf, SD_F32, 9, (int64_t[9]){ 1 });
    T_CHECK(!sd_tensor_valid(&bad));

    sd_arena a;
    T_EQ_INT(sd_arena_init(&a, SD_DEV_CPU, 1 << 20), SD_OK);
    void *p1 = sd_arena_alloc(&a, 10);
    size_t m = sd_arena_mark(&a);
    void *p2 = sd_arena_alloc(&a, 100);
    T_CHECK(p1 && p2 && ((uintptr_t)p2 & 63) == 0 && (char *)p2 >= (char *)p1 + 10);
    sd_arena_reset(&a, m);
    T_CHECK(sd_arena_alloc(&a, 100) == p2);
    T_CHECK(sd_arena_alloc(&a, 2 << 20) == NULL);
    sd_tensor at;
    T_EQ_INT(sd_arena_tensor(&a, &at, SD_F32, SD_DIMS(1024, 1024)), SD_ENOMEM);
    T_CHECK(strstr(sd_errmsg(), "arena exhausted") != NULL);
    sd_arena_free(&a);
}

static void test_validation(void)
{
    sd_ctx ctx;
    int rc;
    T_EQ_INT(sd_ctx_init(&ctx, SD_DEV_CPU, 1, 0), SD_OK);
    sd_tensor x = rt(SD_DIMS(2, 5), 1), w = rt(SD_DIMS(3, 4), 1), y = zt(SD_DIMS(2, 3));
    T_EQ_INT(sd_op_linear(&ctx, &y, &x, &w, NULL), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "linear") && strstr(sd_errmsg(), "[2, 5]"));
    /* a CUDA tensor on a CPU context / a CUDA context without CUDA */
    sd_tensor xc = x;
    xc.device = SD_DEV_CUDA;
    rc = sd_op_act(&ctx, SD_ACT_SILU, &xc, &xc);
    if (sd_device_built_with_cuda()) T_EQ_INT(rc, SD_EINVAL);   /* CUDA tensor, CPU context */
    else {
        T_EQ_INT(rc, SD_EUNSUPPORTED);
        T_CHECK(strstr(sd_errmsg(), "CUDA") != NULL);
    }
    sd_ctx cc;
    rc = sd_ctx_init(&cc, SD_DEV_CUDA, 1, 1 << 20);
    T_CHECK(rc == SD_EUNSUPPORTED || rc == SD_ESTATE || rc == SD_OK);
    if (rc == SD_OK) sd_ctx_free(&cc);
    /* conv output shape */
    sd_tensor cx = rt(SD_DIMS(1, 2, 5, 5), 1), cw = rt(SD_DIMS(3, 2, 3, 3), 1), cy = zt(SD_DIMS(1, 3, 5, 5));
    T_EQ_INT(sd_op_conv2d(&ctx, &cy, &cx, &cw, NULL, sd_conv2d_geom_make(2, 1)), SD_EINVAL);
    T_EQ_INT(sd_op_conv2d(&ctx, &cy, &cx, &cw, NULL, sd_conv2d_geom_make(1, 1)), SD_OK);
    /* group count, embedding ids */
    sd_tensor m = zt(SD_DIMS(1, 4)), r = zt(SD_DIMS(1, 4)), gy = zt(SD_DIMS(1, 2, 5, 5));
    T_EQ_INT(sd_op_group_norm(&ctx, &gy, &m, &r, &cx, NULL, NULL, 4, 1e-5f, SD_ACT_NONE), SD_EINVAL);
    int32_t ids[3] = { 0, 7, 2 };
    sd_tensor ti = sd_tensor_wrap(ids, SD_I32, SD_DIMS(3)), tab = rt(SD_DIMS(5, 2), 1), ey = zt(SD_DIMS(3, 2));
    T_EQ_INT(sd_op_embedding(&ctx, &ey, &tab, &ti), SD_ERANGE);
    ids[1] = 4;
    T_EQ_INT(sd_op_embedding(&ctx, &ey, &tab, &ti), SD_OK);
    T_CHECK(((float *)ey.data)[2] == ((float *)tab.data)[8]);
    /* broadcasting that does not fit */
    sd_tensor a = rt(SD_DIMS(2, 3, 4), 1), b = rt(SD_DIMS(3, 2), 1), ay = zt(SD_DIMS(2, 3, 4));
    T_EQ_INT(sd_op_add(&ctx, &ay, &a, &b), SD_EINVAL);
    sd_tensor *all[] = { &x, &w, &y, &cx, &cw, &cy, &m, &r, &gy, &tab, &ey, &a, &b, &ay };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sd_tensor_free(all[i]);
    sd_ctx_free(&ctx);
}

static void test_half_weights(void)
{
    sd_ctx ctx;
    T_EQ_INT(sd_ctx_init(&ctx, SD_DEV_CPU, 2, 0), SD_OK);
    sd_tensor x = rt(SD_DIMS(7, 33), 1), w = rt(SD_DIMS(19, 33), 1), y = zt(SD_DIMS(7, 19)), y2 = zt(SD_DIMS(7, 19));
    for (int dt = SD_F16; dt <= SD_BF16; dt++) {
        sd_tensor wh, wr;
        sd_tensor_alloc(&wh, (sd_dtype)dt, SD_DIMS(19, 33));
        sd_tensor_alloc(&wr, SD_F32, SD_DIMS(19, 33));
        T_EQ_INT(sd_op_convert(&ctx, &wh, &w), SD_OK);
        T_EQ_INT(sd_op_convert(&ctx, &wr, &wh), SD_OK);   /* rounded f32 copy */
        T_EQ_INT(sd_op_linear(&ctx, &y, &x, &wh, NULL), SD_OK);
        T_EQ_INT(sd_op_linear(&ctx, &y2, &x, &wr, NULL), SD_OK);
        T_CHECK(memcmp(y.data, y2.data, sd_tensor_nbytes(&y)) == 0);
        float d = 0;
        for (int i = 0; i < 19 * 33; i++) d = fmaxf(d, fabsf(((float *)wr.data)[i] - ((float *)w.data)[i]));
        T_CHECK(d > 0 && d < (dt == SD_F16 ? 1e-3f : 1e-2f));
        sd_tensor_free(&wh);
        sd_tensor_free(&wr);
    }
    sd_tensor *all[] = { &x, &w, &y, &y2 };
    for (int i = 0; i < 4; i++) sd_tensor_free(all[i]);
    sd_ctx_free(&ctx);
}

/* ---- determinism ---------------------------------------------------------------------------- */

#define NOUT 8
typedef struct { sd_tensor *out[NOUT]; int nout; } outs;

/* Run `fn` with 1, 2 and 3 threads, outputs zeroed first; all bytes must match. */
static void det(const char *name, void (*fn)(sd_ctx *, void *), void *st, outs *o)
{
    void *ref[NOUT] = { 0 };
    for (int th = 1; th <= 3; th++) {
        sd_ctx ctx;
        sd_ctx_init(&ctx, SD_DEV_CPU, th, 0);
        for (int i = 0; i < o->nout; i++) memset(o->out[i]->data, 0, sd_tensor_nbytes(o->out[i]));
        fn(&ctx, st);
        for (int i = 0; i < o->nout; i++) {
            size_t n = sd_tensor_nbytes(o->out[i]);
            if (th == 1) { ref[i] = malloc(n); memcpy(ref[i], o->out[i]->data, n); }
            else if (memcmp(ref[i], o->out[i]->data, n)) {
                printf("#   %s: output %d differs between 1 and %d threads\n", name, i, th);
                t_cur_fail++;
            }
        }
        sd_ctx_free(&ctx);
    }
    for (int i = 0; i < o->nout; i++) free(ref[i]);
}

typedef struct { sd_tensor x, w, b, y, dy, dx, dw, db; sd_conv2d_geom g; } st_lc;
static void run_linear(sd_ctx *c, void *p)
{
    st_lc *s = p;
    T_EQ_INT(sd_op_linear(c, &s->y, &s->x, &s->w, &s->b), SD_OK);
    T_EQ_INT(sd_op_linear_bwd(c, &s->dx, &s->dw, &s->db, &s->dy, &s->x, &s->w), SD_OK);
}
static void run_conv(sd_ctx *c, void *p)
{
    st_lc *s = p;
    T_EQ_INT(sd_op_conv2d(c, &s->y, &s->x, &s->w, &s->b, s->g), SD_OK);
    T_EQ_INT(sd_op_conv2d_bwd(c, &s->dx, &s->dw, &s->db, &s->dy, &s->x, &s->w, s->g), SD_OK);
}

static void free_lc(st_lc *s)
{
    sd_tensor *all[] = { &s->x, &s->w, &s->b, &s->y, &s->dy, &s->dx, &s->dw, &s->db };
    for (int i = 0; i < 8; i++) sd_tensor_free(all[i]);
}

static void conv_det(const char *name, int64_t n, int64_t cin, int64_t h, int64_t cout, int64_t k, int stride, int pad)
{
    st_lc s;
    s.g = sd_conv2d_geom_make(stride, pad);
    int64_t ho = (h + 2 * pad - k) / stride + 1;
    s.x = rt(SD_DIMS(n, cin, h, h), 1); s.w = rt(SD_DIMS(cout, cin, k, k), 0.2f); s.b = rt(SD_DIMS(cout), 1);
    s.y = zt(SD_DIMS(n, cout, ho, ho)); s.dy = rt(SD_DIMS(n, cout, ho, ho), 1);
    s.dx = zt(SD_DIMS(n, cin, h, h)); s.dw = zt(SD_DIMS(cout, cin, k, k)); s.db = zt(SD_DIMS(cout));
    outs o = { { &s.y, &s.dx, &s.dw, &s.db }, 4 };
    det(name, run_conv, &s, &o);
    free_lc(&s);
}

typedef struct { sd_tensor q, k, v, o, lse, dout, dq, dk, dv; sd_attn_args a; } st_at;
static void run_attn(sd_ctx *c, void *p)
{
    st_at *s = p;
    T_EQ_INT(sd_op_attention(c, &s->o, &s->lse, &s->q, &s->k, &s->v, s->a), SD_OK);
    T_EQ_INT(sd_op_attention_bwd(c, &s->dq, &s->dk, &s->dv, &s->dout, &s->q, &s->k, &s->v, &s->o, &s->lse, s->a), SD_OK);
}

static void attn_det(const char *name, int64_t b, int heads, int64_t tq, int64_t tk, int64_t d)
{
    st_at s = { .a = { heads, 0, 0 } };
    int64_t c = heads * d;
    s.q = rt(SD_DIMS(b, tq, c), 1); s.k = rt(SD_DIMS(b, tk, c), 1); s.v = rt(SD_DIMS(b, tk, c), 1);
    s.o = zt(SD_DIMS(b, tq, c)); s.lse = zt(SD_DIMS(b, heads, tq)); s.dout = rt(SD_DIMS(b, tq, c), 1);
    s.dq = zt(SD_DIMS(b, tq, c)); s.dk = zt(SD_DIMS(b, tk, c)); s.dv = zt(SD_DIMS(b, tk, c));
    outs o = { { &s.o, &s.lse, &s.dq, &s.dk, &s.dv }, 5 };
    det(name, run_attn, &s, &o);
    sd_tensor *all[] = { &s.q, &s.k, &s.v, &s.o, &s.lse, &s.dout, &s.dq, &s.dk, &s.dv };
    for (int i = 0; i < 9; i++) sd_tensor_free(all[i]);
}

typedef struct { sd_tensor x, g, b, y, m, r, dy, dx, dg, db, t2, y2, big, bigy, bigdx, bias, per, loss, dp, w; } st_misc;
static void run_misc(sd_ctx *c, void *p)
{
    st_misc *s = p;
    T_EQ_INT(sd_op_group_norm(c, &s->y, &s->m, &s->r, &s->x, &s->g, &s->b, 32, 1e-6f, SD_ACT_SILU), SD_OK);
    T_EQ_INT(sd_op_group_norm_bwd(c, &s->dx, &s->dg, &s->db, &s->dy, &s->x, &s->m, &s->r, &s->g, &s->b, 32, SD_ACT_SILU), SD_OK);
    T_EQ_INT(sd_op_act(c, SD_ACT_GELU, &s->bigy, &s->big), SD_OK);
    T_EQ_INT(sd_op_act_bwd(c, SD_ACT_GELU, &s->bigdx, &s->big, &s->big), SD_OK);
    T_EQ_INT(sd_op_sum_to(c, &s->bias, 0.5f, &s->big), SD_OK);
    T_EQ_INT(sd_op_loss(c, &s->loss, &s->per, &s->big, &s->bigy, &s->w, NULL, SD_LOSS_HUBER), SD_OK);
    T_EQ_INT(sd_op_loss_bwd(c, &s->dp, &s->big, &s->bigy, &s->w, NULL, SD_LOSS_HUBER, 1.0f), SD_OK);
}

typedef struct { sd_tensor x, y, m, r, g, b, dy, dx, dg, db; } st_ln;
static void run_ln(sd_ctx *c, void *p)
{
    st_ln *s = p;
    T_EQ_INT(sd_op_layer_norm(c, &s->y, &s->m, &s->r, &s->x, &s->g, &s->b, 1e-5f), SD_OK);
    T_EQ_INT(sd_op_layer_norm_bwd(c, &s->dx, &s->dg, &s->db, &s->dy, &s->x, &s->m, &s->r, &s->g), SD_OK);
}

static void test_determinism(void)
{
    st_lc l;
    l.x = rt(SD_DIMS(3, 100, 200), 1); l.w = rt(SD_DIMS(150, 200), 0.1f); l.b = rt(SD_DIMS(150), 1);
    l.y = zt(SD_DIMS(3, 100, 150)); l.dy = rt(SD_DIMS(3, 100, 150), 1);
    l.dx = zt(SD_DIMS(3, 100, 200)); l.dw = zt(SD_DIMS(150, 200)); l.db = zt(SD_DIMS(150));
    outs o = { { &l.y, &l.dx, &l.dw, &l.db }, 4 };
    det("linear", run_linear, &l, &o);
    free_lc(&l);

    conv_det("conv3x3_parallel_chunks", 2, 8, 32, 16, 3, 1, 1);
    conv_det("conv3x3_one_chunk", 1, 16, 16, 24, 3, 1, 1);
    conv_det("conv3x3_stride2", 2, 8, 32, 8, 3, 2, 1);
    conv_det("conv1x1", 2, 16, 24, 8, 1, 1, 0);
    setenv("SD_CONV_ALGO", "winograd", 1);
    conv_det("conv3x3_winograd_seq", 1, 16, 20, 24, 3, 1, 1);
    conv_det("conv3x3_winograd_par", 2, 8, 70, 16, 3, 1, 1);
    unsetenv("SD_CONV_ALGO");
    attn_det("attention_partials", 1, 2, 300, 300, 8);
    attn_det("attention_cross", 2, 4, 200, 77, 16);

    st_misc m;
    m.x = rt(SD_DIMS(2, 64, 12, 12), 2); m.g = rt(SD_DIMS(64), 1); m.b = rt(SD_DIMS(64), 1);
    m.y = zt(SD_DIMS(2, 64, 12, 12)); m.m = zt(SD_DIMS(2, 32)); m.r = zt(SD_DIMS(2, 32));
    m.dy = rt(SD_DIMS(2, 64, 12, 12), 1); m.dx = zt(SD_DIMS(2, 64, 12, 12)); m.dg = zt(SD_DIMS(64)); m.db = zt(SD_DIMS(64));
    m.big = rt(SD_DIMS(2, 4, 80, 80), 2); m.bigy = zt(SD_DIMS(2, 4, 80, 80)); m.bigdx = zt(SD_DIMS(2, 4, 80, 80));
    m.bias = zt(SD_DIMS(2, 4, 1, 1)); m.per = zt(SD_DIMS(2)); m.loss = zt(SD_DIMS(1)); m.dp = zt(SD_DIMS(2, 4, 80, 80));
    m.w = rt(SD_DIMS(2), 1);
    outs om = { { &m.y, &m.m, &m.r, &m.dx, &m.dg, &m.db, &m.bias, &m.loss }, 8 };
    det("groupnorm_act_sum_loss", run_misc, &m, &om);
    outs om2 = { { &m.bigy, &m.bigdx, &m.per, &m.dp }, 4 };
    det("act_loss_bwd", run_misc, &m, &om2);
    sd_tensor *all[] = { &m.x, &m.g, &m.b, &m.y, &m.m, &m.r, &m.dy, &m.dx, &m.dg, &m.db, &m.big, &m.bigy,
                         &m.bigdx, &m.bias, &m.per, &m.loss, &m.dp, &m.w };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sd_tensor_free(all[i]);

    st_ln n;
    n.x = rt(SD_DIMS(300, 96), 2); n.g = rt(SD_DIMS(96), 1); n.b = rt(SD_DIMS(96), 1); n.y = zt(SD_DIMS(300, 96));
    n.m = zt(SD_DIMS(300)); n.r = zt(SD_DIMS(300)); n.dy = rt(SD_DIMS(300, 96), 1); n.dx = zt(SD_DIMS(300, 96));
    n.dg = zt(SD_DIMS(96)); n.db = zt(SD_DIMS(96));
    outs on = { { &n.y, &n.m, &n.r, &n.dx, &n.dg, &n.db }, 6 };
    det("layer_norm", run_ln, &n, &on);
    sd_tensor *alln[] = { &n.x, &n.g, &n.b, &n.y, &n.m, &n.r, &n.dy, &n.dx, &n.dg, &n.db };
    for (int i = 0; i < 10; i++) sd_tensor_free(alln[i]);
}

/* Information: is OpenBLAS's own multi-threaded sgemm bit-identical to its single-threaded one?
 * (The ops never rely on it: they keep OpenBLAS at one thread.) */
/* Winograd F(4×4,3×3) and im2col in f32 against a double-precision direct convolution (forward
 * and dX; the double kernels are checked against finite differences in tests/grad): max|Δ|
 * relative to max|ref|, Winograd within 3e-5 (im2col: ~4e-7; F(4×4,3×3)'s transforms cost about a
 * decimal digit, as in cuDNN), reported per shape. */
static void ref_conv(const float *x, const float *w, const float *b, double *y, int64_t n, int64_t cin,
                     int64_t h, int64_t wd, int64_t cout, int pad, int dx)
{
    /* dx = 1: correlation of x (= dy) with the rotated weights, channels swapped, padding 2 − pad */
    int64_t ho = dx ? h + 2 * (2 - pad) - 2 : h + 2 * pad - 2, wo = dx ? wd + 2 * (2 - pad) - 2 : wd + 2 * pad - 2;
    int p = dx ? 2 - pad : pad;
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < cout; o++)
            for (int64_t oy = 0; oy < ho; oy++)
                for (int64_t ox = 0; ox < wo; ox++) {
                    double a = b ? b[o] : 0;
                    for (int64_t c = 0; c < cin; c++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int64_t iy = oy - p + ky, ix = ox - p + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                                double wv = dx ? w[((c * cout + o) * 3 + 2 - ky) * 3 + 2 - kx] : w[((o * cin + c) * 3 + ky) * 3 + kx];
                                a += x[((i * cin + c) * h + iy) * wd + ix] * wv;
                            }
                    y[((i * cout + o) * ho + oy) * wo + ox] = a;
                }
}

static void wino_case(int64_t n, int64_t cin, int64_t h, int64_t w, int64_t cout, int pad)
{
    int64_t ho = h + 2 * pad - 2, wo = w + 2 * pad - 2;
    sd_tensor x = rt(SD_DIMS(n, cin, h, w), 1), wt = rt(SD_DIMS(cout, cin, 3, 3), 0.1f), b = rt(SD_DIMS(cout), 1);
    sd_tensor dy = rt(SD_DIMS(n, cout, ho, wo), 1);
    sd_tensor y[2], dx[2], dw[2];
    double *ry = malloc(sizeof(double) * (size_t)(n * cout * ho * wo)), *rdx = malloc(sizeof(double) * (size_t)(n * cin * h * w));
    ref_conv(x.data, wt.data, b.data, ry, n, cin, h, w, cout, pad, 0);
    ref_conv(dy.data, wt.data, NULL, rdx, n, cout, ho, wo, cin, pad, 1);
    double *rdw = calloc((size_t)(cout * cin * 9), sizeof(double));
    const float *xd = x.data, *dyd = dy.data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < cout; o++)
            for (int64_t c = 0; c < cin; c++)
                for (int k = 0; k < 9; k++) {
                    double a = 0;
                    for (int64_t oy = 0; oy < ho; oy++) {
                        int64_t iy = oy - pad + k / 3;
                        if (iy < 0 || iy >= h) continue;
                        for (int64_t ox = 0; ox < wo; ox++) {
                            int64_t ix = ox - pad + k % 3;
                            if (ix >= 0 && ix < w)
                                a += (double)dyd[((i * cout + o) * ho + oy) * wo + ox] * xd[((i * cin + c) * h + iy) * w + ix];
                        }
                    }
                    rdw[(o * cin + c) * 9 + k] += a;
                }
    for (int a = 0; a < 2; a++) {
        sd_ctx ctx;
        sd_ctx_init(&ctx, SD_DEV_CPU, 2, 0);
        ctx.conv_algo = a ? SD_CONV_WINOGRAD : SD_CONV_IM2COL;
        y[a] = zt(SD_DIMS(n, cout, ho, wo));
        dx[a] = zt(SD_DIMS(n, cin, h, w));
        dw[a] = zt(SD_DIMS(cout, cin, 3, 3));
        T_EQ_INT(sd_op_conv2d(&ctx, &y[a], &x, &wt, &b, sd_conv2d_geom_make(1, pad)), SD_OK);
        T_EQ_INT(sd_op_conv2d_bwd(&ctx, &dx[a], &dw[a], NULL, &dy, &x, &wt, sd_conv2d_geom_make(1, pad)), SD_OK);
        sd_ctx_free(&ctx);
    }
    static const char *const what[3] = { "y", "dx", "dw" };
    for (int k = 0; k < 3; k++) {
        const double *r = k == 2 ? rdw : k ? rdx : ry;
        int64_t cnt = sd_tensor_numel(k == 2 ? &dw[0] : k ? &dx[0] : &y[0]);
        double e[2] = { 0, 0 }, m = 0;
        for (int a = 0; a < 2; a++) {
            const float *q = k == 2 ? dw[a].data : k ? dx[a].data : y[a].data;
            for (int64_t i = 0; i < cnt; i++) e[a] = fmax(e[a], fabs((double)q[i] - r[i]));
        }
        for (int64_t i = 0; i < cnt; i++) m = fmax(m, fabs(r[i]));
        printf("# %lldx%lldx%lldx%lld -> %lld pad %d %s: max|d| / max|ref| im2col %.3g, winograd %.3g\n",
               (long long)n, (long long)cin, (long long)h, (long long)w, (long long)cout, pad, what[k], e[0] / m, e[1] / m);
        T_CHECKF(e[1] <= 3e-5 * m, "winograd %s relative error %g", what[k], e[1] / m);
    }
    sd_tensor *all[] = { &x, &wt, &b, &dy, &y[0], &y[1], &dx[0], &dx[1], &dw[0], &dw[1] };
    for (int i = 0; i < 10; i++) sd_tensor_free(all[i]);
    free(ry); free(rdx); free(rdw);
}

/* Winograd asked for but the scratch arena too small for its buffers: the op falls back to im2col
 * (the same bytes as im2col) instead of failing. */
static void wino_fallback(void)
{
    sd_tensor x = rt(SD_DIMS(1, 64, 32, 32), 1), w = rt(SD_DIMS(64, 64, 3, 3), 0.1f), b = rt(SD_DIMS(64), 1);
    sd_tensor y[2];
    for (int a = 0; a < 2; a++) {
        sd_ctx ctx;
        /* 1.5 MB: im2col's column chunk (576·512 floats, 1.2 MB) fits; Winograd's transformed
           weights (36·64·64 floats) and V, M (36·128·64) do not (1.8 MB) */
        sd_ctx_init(&ctx, SD_DEV_CPU, 2, (size_t)3 << 19);
        ctx.conv_algo = a ? SD_CONV_WINOGRAD : SD_CONV_IM2COL;
        y[a] = zt(SD_DIMS(1, 64, 32, 32));
        T_EQ_INT(sd_op_conv2d(&ctx, &y[a], &x, &w, &b, sd_conv2d_geom_make(1, 1)), SD_OK);
        T_EQ_INT(ctx.scratch.used, 0);
        sd_ctx_free(&ctx);
    }
    T_CHECK(!memcmp(y[0].data, y[1].data, sd_tensor_nbytes(&y[0])));
    sd_tensor *all[] = { &x, &w, &b, &y[0], &y[1] };
    for (int i = 0; i < 5; i++) sd_tensor_free(all[i]);
}

static void test_winograd(void)
{
    wino_fallback();
    wino_case(1, 64, 32, 32, 64, 1);
    wino_case(2, 40, 19, 23, 48, 1);
    wino_case(1, 32, 17, 30, 96, 0);
    wino_case(1, 320, 16, 16, 320, 1);
}

static void test_openblas_threads_info(void)
{
    int m = 384, n = 384, k = 384;
    float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
    float *c1 = calloc((size_t)m * n, 4), *c2 = calloc((size_t)m * n, 4);
    for (int i = 0; i < m * k; i++) { a[i] = frand(); b[i] = frand(); }
    openblas_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1, a, k, b, n, 0, c1, n);
    openblas_set_num_threads(2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1, a, k, b, n, 0, c2, n);
    openblas_set_num_threads(1);
    printf("# OpenBLAS sgemm 1 vs 2 threads: %s\n", memcmp(c1, c2, sizeof(float) * m * n) ? "different bytes" : "identical bytes");
    free(a); free(b); free(c1); free(c2);
}

/* Issue 5: peak memory of the attention backward at 4096 tokens below 2× its inputs+outputs.
 * Inputs q,k,v,o,dout,lse + outputs dq,dk,dv are held by the caller; the op's own memory is the
 * ctx scratch (transposed K/V, score blocks): its peak must stay below inputs+outputs. */
static void test_attention_memory(void)
{
    st_at s = { .a = { 8, 0, 0 } };
    int64_t b = 1, t = 4096, c = 320;
    s.q = rt(SD_DIMS(b, t, c), 1); s.k = rt(SD_DIMS(b, t, c), 1); s.v = rt(SD_DIMS(b, t, c), 1);
    s.o = zt(SD_DIMS(b, t, c)); s.lse = zt(SD_DIMS(b, 8, t)); s.dout = rt(SD_DIMS(b, t, c), 1);
    s.dq = zt(SD_DIMS(b, t, c)); s.dk = zt(SD_DIMS(b, t, c)); s.dv = zt(SD_DIMS(b, t, c));
    sd_tensor *all[] = { &s.q, &s.k, &s.v, &s.o, &s.lse, &s.dout, &s.dq, &s.dk, &s.dv };
    size_t io = 0;
    for (int i = 0; i < 9; i++) io += sd_tensor_nbytes(all[i]);
    for (int th = 2; th <= 2; th++) {
        sd_ctx ctx;
        T_EQ_INT(sd_ctx_init(&ctx, SD_DEV_CPU, th, 0), SD_OK);
        T_EQ_INT(sd_op_attention(&ctx, &s.o, &s.lse, &s.q, &s.k, &s.v, s.a), SD_OK);
        size_t fwd_peak = ctx.scratch.peak;
        T_EQ_INT(sd_op_attention_bwd(&ctx, &s.dq, &s.dk, &s.dv, &s.dout, &s.q, &s.k, &s.v, &s.o, &s.lse, s.a), SD_OK);
        printf("# attention 4096 tokens, 8x40, %d thread(s): inputs+outputs %.1f MB, scratch peak fwd %.1f MB, bwd %.1f MB\n",
               th, io / 1e6, fwd_peak / 1e6, ctx.scratch.peak / 1e6);
        T_CHECK(ctx.scratch.peak < io);
        T_CHECK(ctx.scratch.used == 0);
        sd_ctx_free(&ctx);
    }
    for (int i = 0; i < 9; i++) sd_tensor_free(all[i]);
}

int main(void)
{
    T_RUN(test_descriptors);
    T_RUN(test_validation);
    T_RUN(test_half_weights);
    T_RUN(test_determinism);
    T_RUN(test_winograd);
    T_RUN(test_openblas_threads_info);
    T_RUN(test_attention_memory);
    T_DONE();
}
