/* Op dispatch: argument validation (shapes, dtypes, devices) and the choice of backend.
 * The only file that knows which backends exist. */
#include "tensor/ops.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "tensor/backend.h"
#include "tensor/device.h"

/* ---- validation helpers --------------------------------------------------------------------- */

static const char *desc(const sd_tensor *t, char *buf)
{
    return sd_tensor_describe(t, buf, 160);
}

/* Every non-NULL tensor valid and on ctx's backend. */
static int devs(sd_ctx *ctx, const char *op, const sd_tensor *const *ts, int n)
{
    if (!ctx) return sd_err(SD_EINVAL, "%s: no context", op);
    for (int i = 0; i < n; i++) {
        const sd_tensor *t = ts[i];
        if (!t) continue;
        if (!sd_tensor_valid(t)) return sd_err(SD_EINVAL, "%s: argument %d is not a valid tensor", op, i + 1);
        if (!t->data && sd_tensor_numel(t) > 0) return sd_err(SD_EINVAL, "%s: argument %d has no data", op, i + 1);
#ifndef SD_CUDA
        if (t->device == SD_DEV_CUDA && !sd_device_built_with_cuda())   /* SD_FAKE_CUDA: the CPU kernels */
            return sd_err(SD_EUNSUPPORTED, "%s: argument %d is a CUDA tensor, but this build has no CUDA support "
                          "(make CUDA=1)", op, i + 1);
#endif
        if (t->device != ctx->backend)
            return sd_err(SD_EINVAL, "%s: argument %d is on %s, the context on %s", op, i + 1,
                          t->device == SD_DEV_CUDA ? "CUDA" : "CPU", ctx->backend == SD_DEV_CUDA ? "CUDA" : "CPU");
    }
#ifndef SD_CUDA
    if (ctx->backend == SD_DEV_CUDA && !sd_device_built_with_cuda())
        return sd_err(SD_EUNSUPPORTED, "%s: CUDA tensors need a build with CUDA support (make CUDA=1)", op);
#endif
    return SD_OK;
}

/* The backend call: sd_cpu_NAME(...) or, for a CUDA context, sd_cuda_NAME(...). */
#ifdef SD_CUDA
#define BACKEND(name, ...) (ctx->backend == SD_DEV_CUDA ? sd_cuda_##name(__VA_ARGS__) : sd_cpu_##name(__VA_ARGS__))
#else
#define BACKEND(name, ...) sd_cpu_##name(__VA_ARGS__)
#endif

#define DEVS(op, ...) do { const sd_tensor *ts_[] = { __VA_ARGS__ }; \
    int rc_ = devs(ctx, op, ts_, (int)(sizeof ts_ / sizeof ts_[0])); if (rc_) return rc_; } while (0)

static int f32(const char *op, const char *name, const sd_tensor *t)
{
    if (t && t->dtype != SD_F32) return sd_err(SD_EINVAL, "%s: %s must be f32, got %s", op, name, sd_dtype_name((sd_dtype)t->dtype));
    return SD_OK;
}

static int floaty(const char *op, const char *name, const sd_tensor *t)
{
    if (t && t->dtype != SD_F32 && t->dtype != SD_F16 && t->dtype != SD_BF16)
        return sd_err(SD_EINVAL, "%s: %s must be f32/f16/bf16, got %s", op, name, sd_dtype_name((sd_dtype)t->dtype));
    return SD_OK;
}

/* a linear/conv weight: f32/f16/bf16, or f8_e4m3fn (frozen --fp8_base storage: the CPU kernels upcast
   it to float32 in scratch per call, the CUDA ones to the GEMM math's type, exactly either way) */
static int weighty(const char *op, const sd_tensor *w)
{
    if (w && w->dtype == SD_F8E4M3) return SD_OK;
    return floaty(op, "w", w);
}

#define F32(op, name, t) do { int rc_ = f32(op, name, t); if (rc_) return rc_; } while (0)

static int same(const char *op, const char *na, const sd_tensor *a, const char *nb, const sd_tensor *b)
{
    if (!a || !b || sd_tensor_same_shape(a, b)) return SD_OK;
    char x[160], y[160];
    return sd_err(SD_EINVAL, "%s: %s %s and %s %s differ in shape", op, na, desc(a, x), nb, desc(b, y));
}

#define SAME(op, na, a, nb, b) do { int rc_ = same(op, na, a, nb, b); if (rc_) return rc_; } while (0)

static int shape_is(const char *op, const char *name, const sd_tensor *t, int nd, const int64_t *sh)
{
    if (!t) return SD_OK;
    int ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == sh[i];
    if (ok) return SD_OK;
    char x[160], e[160];
    sd_tensor want = sd_tensor_wrap(NULL, (sd_dtype)t->dtype, nd, sh);
    return sd_err(SD_EINVAL, "%s: %s is %s, expected %s", op, name, desc(t, x), desc(&want, e));
}

#define SHAPE(op, name, t, ...) do { int rc_ = shape_is(op, name, t, SD_DIMS(__VA_ARGS__)); if (rc_) return rc_; } while (0)

static int ndim_is(const char *op, const char *name, const sd_tensor *t, int lo, int hi)
{
    if (t && (t->ndim < lo || t->ndim > hi)) {
        char x[160];
        return sd_err(SD_EINVAL, "%s: %s is %s, expected %d to %d axes", op, name, desc(t, x), lo, hi);
    }
    return SD_OK;
}

#define NDIM(op, name, t, lo, hi) do { int rc_ = ndim_is(op, name, t, lo, hi); if (rc_) return rc_; } while (0)

/* b broadcasts to a (aligned at the last axis). */
static int bcast_ok(const char *op, const sd_tensor *a, const sd_tensor *b)
{
    int ok = b->ndim <= a->ndim;
    for (int i = 0; ok && i < b->ndim; i++) {
        int64_t bd = b->shape[b->ndim - 1 - i], ad = a->shape[a->ndim - 1 - i];
        ok = bd == ad || bd == 1;
    }
    if (ok) return SD_OK;
    char x[160], y[160];
    return sd_err(SD_EINVAL, "%s: %s does not broadcast to %s", op, desc(b, x), desc(a, y));
}

/* ---- copies, fills, conversions ------------------------------------------------------------- */

int sd_op_fill(sd_ctx *ctx, sd_tensor *y, float value)
{
    DEVS("fill", y);
    int rc = floaty("fill", "y", y);
    if (rc) return rc;
    return BACKEND(fill, ctx, y, value);
}

int sd_op_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    DEVS("convert", y, x);
    int rc = floaty("convert", "y", y);
    if (!rc) rc = floaty("convert", "x", x);
    if (rc) return rc;
    if (sd_tensor_numel(x) != sd_tensor_numel(y))
        return sd_err(SD_EINVAL, "convert: %lld elements into %lld", (long long)sd_tensor_numel(x), (long long)sd_tensor_numel(y));
    return BACKEND(convert, ctx, y, x);
}

static int perm_check(const char *op, const sd_tensor *y, const sd_tensor *x, const int *perm)
{
    if (!perm) return sd_err(SD_EINVAL, "%s: no permutation", op);
    if (x->ndim != y->ndim) return sd_err(SD_EINVAL, "%s: axis counts differ", op);
    int seen[SD_MAX_DIMS] = { 0 };
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || seen[perm[i]]++)
            return sd_err(SD_EINVAL, "%s: invalid permutation", op);
        if (y->shape[i] != x->shape[perm[i]]) {
            char a[160], b[160];
            return sd_err(SD_EINVAL, "%s: %s is not a permutation of %s", op, desc(y, a), desc(x, b));
        }
    }
    return SD_OK;
}

int sd_op_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm)
{
    DEVS("permute", y, x);
    F32("permute", "y", y); F32("permute", "x", x);
    int rc = perm_check("permute", y, x, perm);
    if (rc) return rc;
    if (y->data == x->data && sd_tensor_numel(x) > 1) return sd_err(SD_EINVAL, "permute: y must not alias x");
    return BACKEND(permute, ctx, y, x, perm);
}

int sd_op_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm)
{
    DEVS("permute_bwd", dx, dy);
    F32("permute_bwd", "dx", dx); F32("permute_bwd", "dy", dy);
    int rc = perm_check("permute_bwd", dy, dx, perm);
    if (rc) return rc;
    return BACKEND(permute_bwd, ctx, dx, dy, perm);
}

/* ---- elementwise arithmetic ----------------------------------------------------------------- */

static int binary_check(sd_ctx *ctx, const char *op, const sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    if (!a || !b) return sd_err(SD_EINVAL, "%s: missing operand", op);
    int rc = f32(op, "a", a);
    if (!rc) rc = f32(op, "b", b);
    if (!rc) rc = f32(op, "y", y);
    if (!rc) rc = same(op, "y", y, "a", a);
    if (!rc) rc = bcast_ok(op, a, b);
    return rc;
}

int sd_op_add(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    DEVS("add", y, a, b);
    int rc = binary_check(ctx, "add", y, a, b);
    return rc ? rc : BACKEND(add, ctx, y, a, b);
}

int sd_op_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    DEVS("mul", y, a, b);
    int rc = binary_check(ctx, "mul", y, a, b);
    return rc ? rc : BACKEND(mul, ctx, y, a, b);
}

int sd_op_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy, const sd_tensor *a,
                  const sd_tensor *b)
{
    DEVS("mul_bwd", da, db, dy, a, b);
    int rc = binary_check(ctx, "mul_bwd", dy, a, b);
    if (!rc) rc = same("mul_bwd", "da", da, "a", a);
    if (!rc) rc = same("mul_bwd", "db", db, "b", b);
    if (!rc) rc = f32("mul_bwd", "da", da);
    if (!rc) rc = f32("mul_bwd", "db", db);
    return rc ? rc : BACKEND(mul_bwd, ctx, da, db, dy, a, b);
}

int sd_op_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta)
{
    DEVS("axpby", y, x);
    F32("axpby", "y", y); F32("axpby", "x", x);
    SAME("axpby", "y", y, "x", x);
    return BACKEND(axpby, ctx, y, alpha, x, beta);
}

int sd_op_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x)
{
    DEVS("sum_to", y, x);
    F32("sum_to", "y", y); F32("sum_to", "x", x);
    int rc = bcast_ok("sum_to", x, y);
    return rc ? rc : BACKEND(sum_to, ctx, y, alpha, x);
}

/* ---- matrix products ------------------------------------------------------------------------ */

static int linear_check(const char *op, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, const char *yname)
{
    int rc = weighty(op, w);
    if (rc) return rc;
    NDIM(op, "w", w, 2, 2);
    NDIM(op, "x", x, 1, SD_MAX_DIMS);
    F32(op, "x", x);
    if (x->shape[x->ndim - 1] != w->shape[1]) {
        char a[160], b[160];
        return sd_err(SD_EINVAL, "%s: x %s does not match w %s", op, desc(x, a), desc(w, b));
    }
    if (y) {
        F32(op, yname, y);
        int ok = y->ndim == x->ndim && y->shape[y->ndim - 1] == w->shape[0];
        for (int i = 0; ok && i + 1 < x->ndim; i++) ok = y->shape[i] == x->shape[i];
        if (!ok) {
            char a[160], b[160];
            return sd_err(SD_EINVAL, "%s: %s %s does not match x %s and w [%lld, %lld]", op, yname, desc(y, a),
                          desc(x, b), (long long)w->shape[0], (long long)w->shape[1]);
        }
    }
    return SD_OK;
}

int sd_op_linear(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
{
    DEVS("linear", y, x, w, b);
    if (!y || !x || !w) return sd_err(SD_EINVAL, "linear: missing argument");
    int rc = linear_check("linear", x, w, y, "y");
    if (rc) return rc;
    F32("linear", "b", b);
    if (b) SHAPE("linear", "b", b, w->shape[0]);
    return BACKEND(linear, ctx, y, x, w, b);
}

int sd_op_linear_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                     const sd_tensor *x, const sd_tensor *w)
{
    DEVS("linear_bwd", dx, dw, db, dy, x, w);
    if (!dy || !x || !w) return sd_err(SD_EINVAL, "linear_bwd: missing argument");
    int rc = linear_check("linear_bwd", x, w, dy, "dy");
    if (rc) return rc;
    SAME("linear_bwd", "dx", dx, "x", x);
    F32("linear_bwd", "dx", dx); F32("linear_bwd", "dw", dw); F32("linear_bwd", "db", db);
    SAME("linear_bwd", "dw", dw, "w", w);
    if (db) SHAPE("linear_bwd", "db", db, w->shape[0]);
    return BACKEND(linear_bwd, ctx, dx, dw, db, dy, x, w);
}

int sd_op_matmul(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a, const sd_tensor *b, int trans_b,
                 float alpha, float beta)
{
    DEVS("matmul", c, a, b);
    if (!c || !a || !b) return sd_err(SD_EINVAL, "matmul: missing argument");
    F32("matmul", "a", a); F32("matmul", "b", b); F32("matmul", "c", c);
    NDIM("matmul", "a", a, 2, SD_MAX_DIMS); NDIM("matmul", "b", b, 2, SD_MAX_DIMS); NDIM("matmul", "c", c, 2, SD_MAX_DIMS);
    int64_t m = trans_a ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    int64_t ka = trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t kb = trans_b ? b->shape[b->ndim - 1] : b->shape[b->ndim - 2];
    int64_t n = trans_b ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
    int ok = ka == kb && c->shape[c->ndim - 2] == m && c->shape[c->ndim - 1] == n;
    for (int s = 0; s < 2 && ok; s++) {
        const sd_tensor *t = s ? b : a;
        if (t->ndim == 2) continue;
        ok = t->ndim == c->ndim;
        for (int i = 0; ok && i + 2 < c->ndim; i++) ok = t->shape[i] == c->shape[i];
    }
    if (!ok) {
        char x[160], y[160], z[160];
        return sd_err(SD_EINVAL, "matmul: shapes %s%s · %s%s → %s do not fit", desc(a, x), trans_a ? "ᵀ" : "",
                      desc(b, y), trans_b ? "ᵀ" : "", desc(c, z));
    }
    if (m > INT32_MAX || n > INT32_MAX || ka > INT32_MAX) return sd_err(SD_ERANGE, "matmul: dimension over 2^31");
    return BACKEND(matmul, ctx, c, a, trans_a, b, trans_b, alpha, beta);
}

/* ---- convolution ---------------------------------------------------------------------------- */

static int conv_check(const char *op, const sd_tensor *y, const char *yname, const sd_tensor *x,
                      const sd_tensor *w, sd_conv2d_geom g)
{
    if (!y || !x || !w) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "x", x); F32(op, yname, y);
    int rc = weighty(op, w);
    if (rc) return rc;
    NDIM(op, "x", x, 4, 4); NDIM(op, "w", w, 4, 4); NDIM(op, yname, y, 4, 4);
    if (g.stride < 1 || g.pad_t < 0 || g.pad_l < 0 || g.pad_b < 0 || g.pad_r < 0)
        return sd_err(SD_EINVAL, "%s: bad stride/padding", op);
    int64_t hp = x->shape[2] + g.pad_t + g.pad_b, wp = x->shape[3] + g.pad_l + g.pad_r;
    if (w->shape[1] != x->shape[1] || hp < w->shape[2] || wp < w->shape[3] || w->shape[2] < 1 || w->shape[3] < 1) {
        char a[160], b[160];
        return sd_err(SD_EINVAL, "%s: weight %s does not fit input %s", op, desc(w, a), desc(x, b));
    }
    int64_t ho = (hp - w->shape[2]) / g.stride + 1, wo = (wp - w->shape[3]) / g.stride + 1;
    return shape_is(op, yname, y, SD_DIMS(x->shape[0], w->shape[0], ho, wo));
}

int sd_op_conv2d(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                 sd_conv2d_geom g)
{
    DEVS("conv2d", y, x, w, b);
    int rc = conv_check("conv2d", y, "y", x, w, g);
    if (rc) return rc;
    F32("conv2d", "b", b);
    if (b) SHAPE("conv2d", "b", b, w->shape[0]);
    return BACKEND(conv2d, ctx, y, x, w, b, g);
}

int sd_op_conv2d_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                     const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g)
{
    DEVS("conv2d_bwd", dx, dw, db, dy, x, w);
    int rc = conv_check("conv2d_bwd", dy, "dy", x, w, g);
    if (rc) return rc;
    F32("conv2d_bwd", "dx", dx); F32("conv2d_bwd", "dw", dw); F32("conv2d_bwd", "db", db);
    SAME("conv2d_bwd", "dx", dx, "x", x);
    SAME("conv2d_bwd", "dw", dw, "w", w);
    if (db) SHAPE("conv2d_bwd", "db", db, w->shape[0]);
    return BACKEND(conv2d_bwd, ctx, dx, dw, db, dy, x, w, g);
}

/* The depthwise conv's arguments: w [C,1,kh,kw] with C = x's channels, y [N,C,Ho,Wo]. */
static int conv_dw_check(const char *op, const sd_tensor *y, const char *yname, const sd_tensor *x,
                         const sd_tensor *w, sd_conv2d_geom g)
{
    if (!y || !x || !w) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "x", x); F32(op, yname, y);
    int rc = weighty(op, w);
    if (rc) return rc;
    NDIM(op, "x", x, 4, 4); NDIM(op, "w", w, 4, 4); NDIM(op, yname, y, 4, 4);
    if (g.stride < 1 || g.pad_t < 0 || g.pad_l < 0 || g.pad_b < 0 || g.pad_r < 0)
        return sd_err(SD_EINVAL, "%s: bad stride/padding", op);
    int64_t hp = x->shape[2] + g.pad_t + g.pad_b, wp = x->shape[3] + g.pad_l + g.pad_r;
    if (w->shape[0] != x->shape[1] || w->shape[1] != 1 || hp < w->shape[2] || wp < w->shape[3] ||
        w->shape[2] < 1 || w->shape[3] < 1) {
        char a[160], b[160];
        return sd_err(SD_EINVAL, "%s: weight %s is not a [C,1,kh,kw] depthwise filter fitting input %s", op,
                      desc(w, a), desc(x, b));
    }
    int64_t ho = (hp - w->shape[2]) / g.stride + 1, wo = (wp - w->shape[3]) / g.stride + 1;
    return shape_is(op, yname, y, SD_DIMS(x->shape[0], x->shape[1], ho, wo));
}

int sd_op_conv2d_dw(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                    sd_conv2d_geom g)
{
    DEVS("conv2d_dw", y, x, w, b);
    int rc = conv_dw_check("conv2d_dw", y, "y", x, w, g);
    if (rc) return rc;
    F32("conv2d_dw", "b", b);
    if (b) SHAPE("conv2d_dw", "b", b, w->shape[0]);
    if (y->data == x->data && sd_tensor_numel(x) > 0) return sd_err(SD_EINVAL, "conv2d_dw: y must not alias x");
    return BACKEND(conv2d_dw, ctx, y, x, w, b, g);
}

int sd_op_conv2d_dw_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                        const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g)
{
    DEVS("conv2d_dw_bwd", dx, dw, db, dy, x, w);
    int rc = conv_dw_check("conv2d_dw_bwd", dy, "dy", x, w, g);
    if (rc) return rc;
    F32("conv2d_dw_bwd", "dx", dx); F32("conv2d_dw_bwd", "dw", dw); F32("conv2d_dw_bwd", "db", db);
    SAME("conv2d_dw_bwd", "dx", dx, "x", x);
    SAME("conv2d_dw_bwd", "dw", dw, "w", w);
    if (db) SHAPE("conv2d_dw_bwd", "db", db, w->shape[0]);
    return BACKEND(conv2d_dw_bwd, ctx, dx, dw, db, dy, x, w, g);
}

/* ---- normalisation -------------------------------------------------------------------------- */

static int gn_check(const char *op, const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd,
                    const sd_tensor *gamma, const sd_tensor *beta, int groups, sd_act act)
{
    if (!x || !mean || !rstd) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "x", x); F32(op, "mean", mean); F32(op, "rstd", rstd); F32(op, "gamma", gamma); F32(op, "beta", beta);
    NDIM(op, "x", x, 2, SD_MAX_DIMS);
    if (groups < 1 || x->shape[1] % groups)
        return sd_err(SD_EINVAL, "%s: %lld channels not divisible into %d groups", op, (long long)x->shape[1], groups);
    if (act != SD_ACT_NONE && act != SD_ACT_SILU) return sd_err(SD_EUNSUPPORTED, "%s: only SiLU can be fused", op);
    SHAPE(op, "mean", mean, x->shape[0], groups);
    SHAPE(op, "rstd", rstd, x->shape[0], groups);
    if (gamma) SHAPE(op, "gamma", gamma, x->shape[1]);
    if (beta) SHAPE(op, "beta", beta, x->shape[1]);
    return SD_OK;
}

int sd_op_group_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x,
                     const sd_tensor *gamma, const sd_tensor *beta, int groups, float eps, sd_act act)
{
    DEVS("group_norm", y, mean, rstd, x, gamma, beta);
    int rc = gn_check("group_norm", x, mean, rstd, gamma, beta, groups, act);
    if (rc) return rc;
    if (!y) return sd_err(SD_EINVAL, "group_norm: missing y");
    F32("group_norm", "y", y);
    SAME("group_norm", "y", y, "x", x);
    return BACKEND(group_norm, ctx, y, mean, rstd, x, gamma, beta, groups, eps, act);
}

int sd_op_group_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy,
                         const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd,
                         const sd_tensor *gamma, const sd_tensor *beta, int groups, sd_act act)
{
    DEVS("group_norm_bwd", dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta);
    int rc = gn_check("group_norm_bwd", x, mean, rstd, gamma, beta, groups, act);
    if (rc) return rc;
    if (!dy) return sd_err(SD_EINVAL, "group_norm_bwd: missing dy");
    F32("group_norm_bwd", "dy", dy); F32("group_norm_bwd", "dx", dx);
    F32("group_norm_bwd", "dgamma", dgamma); F32("group_norm_bwd", "dbeta", dbeta);
    SAME("group_norm_bwd", "dy", dy, "x", x);
    SAME("group_norm_bwd", "dx", dx, "x", x);
    if (dgamma) SHAPE("group_norm_bwd", "dgamma", dgamma, x->shape[1]);
    if (dbeta) SHAPE("group_norm_bwd", "dbeta", dbeta, x->shape[1]);
    return BACKEND(group_norm_bwd, ctx, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, groups, act);
}

static int ln_check(const char *op, const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd,
                    const sd_tensor *gamma, const sd_tensor *beta)
{
    if (!x || !mean || !rstd) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "x", x); F32(op, "mean", mean); F32(op, "rstd", rstd); F32(op, "gamma", gamma); F32(op, "beta", beta);
    NDIM(op, "x", x, 1, SD_MAX_DIMS);
    int64_t c = x->shape[x->ndim - 1];
    if (sd_tensor_numel(mean) * c != sd_tensor_numel(x) || sd_tensor_numel(rstd) != sd_tensor_numel(mean))
        return sd_err(SD_EINVAL, "%s: mean/rstd must have one value per row (%lld)", op,
                      (long long)(c ? sd_tensor_numel(x) / c : 0));
    if (gamma) SHAPE(op, "gamma", gamma, c);
    if (beta) SHAPE(op, "beta", beta, c);
    return SD_OK;
}

int sd_op_layer_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x,
                     const sd_tensor *gamma, const sd_tensor *beta, float eps)
{
    DEVS("layer_norm", y, mean, rstd, x, gamma, beta);
    int rc = ln_check("layer_norm", x, mean, rstd, gamma, beta);
    if (rc) return rc;
    if (!y) return sd_err(SD_EINVAL, "layer_norm: missing y");
    F32("layer_norm", "y", y);
    SAME("layer_norm", "y", y, "x", x);
    return BACKEND(layer_norm, ctx, y, mean, rstd, x, gamma, beta, eps);
}

int sd_op_layer_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy,
                         const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd, const sd_tensor *gamma)
{
    DEVS("layer_norm_bwd", dx, dgamma, dbeta, dy, x, mean, rstd, gamma);
    int rc = ln_check("layer_norm_bwd", x, mean, rstd, gamma, NULL);
    if (rc) return rc;
    if (!dy) return sd_err(SD_EINVAL, "layer_norm_bwd: missing dy");
    F32("layer_norm_bwd", "dy", dy); F32("layer_norm_bwd", "dx", dx);
    F32("layer_norm_bwd", "dgamma", dgamma); F32("layer_norm_bwd", "dbeta", dbeta);
    SAME("layer_norm_bwd", "dy", dy, "x", x);
    SAME("layer_norm_bwd", "dx", dx, "x", x);
    int64_t c = x->shape[x->ndim - 1];
    if (dgamma) SHAPE("layer_norm_bwd", "dgamma", dgamma, c);
    if (dbeta) SHAPE("layer_norm_bwd", "dbeta", dbeta, c);
    return BACKEND(layer_norm_bwd, ctx, dx, dgamma, dbeta, dy, x, mean, rstd, gamma);
}

/* ---- activations ---------------------------------------------------------------------------- */

int sd_op_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x)
{
    DEVS("act", y, x);
    if (!y || !x) return sd_err(SD_EINVAL, "act: missing argument");
    F32("act", "y", y); F32("act", "x", x);
    SAME("act", "y", y, "x", x);
    if (act < SD_ACT_NONE || act > SD_ACT_QUICK_GELU) return sd_err(SD_EINVAL, "act: unknown activation %d", (int)act);
    return BACKEND(act, ctx, act, y, x);
}

int sd_op_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    DEVS("act_bwd", dx, dy, x);
    if (!dx || !dy || !x) return sd_err(SD_EINVAL, "act_bwd: missing argument");
    F32("act_bwd", "dx", dx); F32("act_bwd", "dy", dy); F32("act_bwd", "x", x);
    SAME("act_bwd", "dx", dx, "x", x);
    SAME("act_bwd", "dy", dy, "x", x);
    if (act < SD_ACT_NONE || act > SD_ACT_QUICK_GELU) return sd_err(SD_EINVAL, "act_bwd: unknown activation %d", (int)act);
    return BACKEND(act_bwd, ctx, act, dx, dy, x);
}

static int geglu_check(const char *op, const sd_tensor *y, const char *yname, const sd_tensor *x)
{
    if (!y || !x) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, yname, y); F32(op, "x", x);
    NDIM(op, "x", x, 1, SD_MAX_DIMS);
    int ok = y->ndim == x->ndim && x->shape[x->ndim - 1] == 2 * y->shape[y->ndim - 1];
    for (int i = 0; ok && i + 1 < x->ndim; i++) ok = x->shape[i] == y->shape[i];
    if (!ok) {
        char a[160], b[160];
        return sd_err(SD_EINVAL, "%s: x %s must be %s with the last axis doubled", op, desc(x, a), desc(y, b));
    }
    return SD_OK;
}

int sd_op_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    DEVS("geglu", y, x);
    int rc = geglu_check("geglu", y, "y", x);
    return rc ? rc : BACKEND(geglu, ctx, y, x);
}

int sd_op_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    DEVS("geglu_bwd", dx, dy, x);
    int rc = geglu_check("geglu_bwd", dy, "dy", x);
    if (rc) return rc;
    if (!dx) return sd_err(SD_EINVAL, "geglu_bwd: missing dx");
    F32("geglu_bwd", "dx", dx);
    SAME("geglu_bwd", "dx", dx, "x", x);
    return BACKEND(geglu_bwd, ctx, dx, dy, x);
}

static int rope_check(const char *op, const sd_tensor *y, const char *yname, const sd_tensor *x,
                      const char *xname, const sd_tensor *table)
{
    if (!y || !x || !table) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, yname, y); F32(op, xname, x); F32(op, "table", table);
    NDIM(op, xname, x, 3, 3);
    NDIM(op, "table", table, 2, 2);
    SAME(op, yname, y, xname, x);
    int64_t t = x->shape[1], c = x->shape[2], tp = table->shape[0], d2 = table->shape[1];
    if (tp > t || d2 < 2 || d2 % 4 || c % (d2 / 2)) {
        char a[160], b[160];
        return sd_err(SD_EINVAL, "%s: table %s must be [T-P, 2d] for %s %s [B,T,H*d] with d even", op,
                      desc(table, a), xname, desc(x, b));
    }
    return SD_OK;
}

int sd_op_rope(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *table)
{
    DEVS("rope", y, x, table);
    int rc = rope_check("rope", y, "y", x, "x", table);
    return rc ? rc : BACKEND(rope, ctx, y, x, table);
}

int sd_op_rope_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *table)
{
    DEVS("rope_bwd", dx, dy, table);
    int rc = rope_check("rope_bwd", dx, "dx", dy, "dy", table);
    return rc ? rc : BACKEND(rope_bwd, ctx, dx, dy, table);
}

int sd_op_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    DEVS("softmax", y, x);
    if (!y || !x) return sd_err(SD_EINVAL, "softmax: missing argument");
    F32("softmax", "y", y); F32("softmax", "x", x);
    NDIM("softmax", "x", x, 1, SD_MAX_DIMS);
    SAME("softmax", "y", y, "x", x);
    return BACKEND(softmax, ctx, y, x);
}

int sd_op_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y)
{
    DEVS("softmax_bwd", dx, dy, y);
    if (!dx || !dy || !y) return sd_err(SD_EINVAL, "softmax_bwd: missing argument");
    F32("softmax_bwd", "dx", dx); F32("softmax_bwd", "dy", dy); F32("softmax_bwd", "y", y);
    NDIM("softmax_bwd", "y", y, 1, SD_MAX_DIMS);
    SAME("softmax_bwd", "dx", dx, "y", y);
    SAME("softmax_bwd", "dy", dy, "y", y);
    return BACKEND(softmax_bwd, ctx, dx, dy, y);
}

int sd_op_l2_normalize(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, float eps)
{
    DEVS("l2_normalize", y, x);
    if (!y || !x) return sd_err(SD_EINVAL, "l2_normalize: missing argument");
    F32("l2_normalize", "y", y); F32("l2_normalize", "x", x);
    NDIM("l2_normalize", "x", x, 1, SD_MAX_DIMS);
    SAME("l2_normalize", "y", y, "x", x);
    if (!(eps > 0.0f)) return sd_err(SD_EINVAL, "l2_normalize: eps must be > 0");
    return BACKEND(l2_normalize, ctx, y, x, eps);
}

int sd_op_l2_normalize_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x, float eps)
{
    DEVS("l2_normalize_bwd", dx, dy, x);
    if (!dx || !dy || !x) return sd_err(SD_EINVAL, "l2_normalize_bwd: missing argument");
    F32("l2_normalize_bwd", "dx", dx); F32("l2_normalize_bwd", "dy", dy); F32("l2_normalize_bwd", "x", x);
    NDIM("l2_normalize_bwd", "x", x, 1, SD_MAX_DIMS);
    SAME("l2_normalize_bwd", "dx", dx, "x", x);
    SAME("l2_normalize_bwd", "dy", dy, "x", x);
    if (!(eps > 0.0f)) return sd_err(SD_EINVAL, "l2_normalize_bwd: eps must be > 0");
    return BACKEND(l2_normalize_bwd, ctx, dx, dy, x, eps);
}

/* win [B·(H/ws)·(W/ws), ws·ws, C] against x [B,H,W,C]. */
static int window_check(sd_ctx *ctx, const char *op, const sd_tensor *win, const sd_tensor *x, int ws, int shift)
{
    DEVS(op, win, x);
    if (!win || !x) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "windows", win); F32(op, "x", x);
    if (x->ndim != 4) return sd_err(SD_EINVAL, "%s: x must be [B,H,W,C]", op);
    const int64_t B = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    if (ws < 1 || H % ws || W % ws)
        return sd_err(SD_EINVAL, "%s: window %d does not divide %lldx%lld", op, ws, (long long)H, (long long)W);
    if (shift < 0 || shift >= ws) return sd_err(SD_EINVAL, "%s: shift %d outside [0,%d)", op, shift, ws);
    const int64_t sh[3] = { B * (H / ws) * (W / ws), (int64_t)ws * ws, C };
    if (win->ndim != 3 || win->shape[0] != sh[0] || win->shape[1] != sh[1] || win->shape[2] != sh[2]) {
        char a[160];
        return sd_err(SD_EINVAL, "%s: windows %s, expected [%lld,%lld,%lld]", op, desc(win, a), (long long)sh[0],
                      (long long)sh[1], (long long)sh[2]);
    }
    if (win->data == x->data && sd_tensor_numel(x) > 0) return sd_err(SD_EINVAL, "%s: windows must not alias x", op);
    return SD_OK;
}

int sd_op_window_partition(sd_ctx *ctx, sd_tensor *win, const sd_tensor *x, int ws, int shift)
{
    int rc = window_check(ctx, "window_partition", win, x, ws, shift);
    return rc ? rc : BACKEND(window, ctx, win, (sd_tensor *)x, ws, shift, 1, 0);
}

int sd_op_window_partition_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dwin, int ws, int shift)
{
    int rc = window_check(ctx, "window_partition_bwd", dwin, dx, ws, shift);
    return rc ? rc : BACKEND(window, ctx, (sd_tensor *)dwin, dx, ws, shift, 0, 1);
}

int sd_op_window_merge(sd_ctx *ctx, sd_tensor *x, const sd_tensor *win, int ws, int shift)
{
    int rc = window_check(ctx, "window_merge", win, x, ws, shift);
    return rc ? rc : BACKEND(window, ctx, (sd_tensor *)win, x, ws, shift, 0, 0);
}

int sd_op_window_merge_bwd(sd_ctx *ctx, sd_tensor *dwin, const sd_tensor *dx, int ws, int shift)
{
    int rc = window_check(ctx, "window_merge_bwd", dwin, dx, ws, shift);
    return rc ? rc : BACKEND(window, ctx, dwin, (sd_tensor *)dx, ws, shift, 1, 1);
}

/* ---- attention ------------------------------------------------------------------------------ */

static int attn_check(const char *op, const sd_tensor *o, const char *oname, const sd_tensor *lse,
                      const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, sd_attn_args a)
{
    if (!o || !lse || !q || !k || !v) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, oname, o); F32(op, "lse", lse); F32(op, "q", q); F32(op, "k", k); F32(op, "v", v);
    NDIM(op, "q", q, 3, 3); NDIM(op, "k", k, 3, 3); NDIM(op, "v", v, 3, 3);
    if (a.heads < 1 || q->shape[2] % a.heads || v->shape[2] % a.heads)
        return sd_err(SD_EINVAL, "%s: channels of q (%lld) and v (%lld) not divisible by %d heads", op,
                      (long long)q->shape[2], (long long)v->shape[2], a.heads);
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] || k->shape[2] != q->shape[2] ||
        v->shape[1] != k->shape[1] || k->shape[1] < 1) {
        char x[160], y[160], z[160];
        return sd_err(SD_EINVAL, "%s: q %s, k %s, v %s do not fit", op, desc(q, x), desc(k, y), desc(v, z));
    }
    if (a.causal && k->shape[1] < q->shape[1]) return sd_err(SD_EINVAL, "%s: causal needs Tk ≥ Tq", op);
    SHAPE(op, oname, o, q->shape[0], q->shape[1], v->shape[2]);
    SHAPE(op, "lse", lse, q->shape[0], a.heads, q->shape[1]);
    return SD_OK;
}

int sd_op_attention(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q, const sd_tensor *k,
                    const sd_tensor *v, sd_attn_args a)
{
    DEVS("attention", o, lse, q, k, v);
    int rc = attn_check("attention", o, "o", lse, q, k, v, a);
    return rc ? rc : BACKEND(attention, ctx, o, lse, q, k, v, a);
}

int sd_op_attention_bwd(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv, const sd_tensor *dout,
                        const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, const sd_tensor *o,
                        const sd_tensor *lse, sd_attn_args a)
{
    DEVS("attention_bwd", dq, dk, dv, dout, q, k, v, o, lse);
    int rc = attn_check("attention_bwd", dout, "dout", lse, q, k, v, a);
    if (!rc) rc = same("attention_bwd", "o", o, "dout", dout);
    if (rc) return rc;
    if (!o) return sd_err(SD_EINVAL, "attention_bwd: missing o");
    F32("attention_bwd", "o", o); F32("attention_bwd", "dq", dq); F32("attention_bwd", "dk", dk); F32("attention_bwd", "dv", dv);
    SAME("attention_bwd", "dq", dq, "q", q);
    SAME("attention_bwd", "dk", dk, "k", k);
    SAME("attention_bwd", "dv", dv, "v", v);
    return BACKEND(attention_bwd, ctx, dq, dk, dv, dout, q, k, v, o, lse, a);
}

/* ---- shape ops ------------------------------------------------------------------------------ */

static int up_check(const char *op, const sd_tensor *big, const sd_tensor *small)
{
    if (!big || !small) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "y", big); F32(op, "x", small);
    NDIM(op, "x", small, 4, 4); NDIM(op, "y", big, 4, 4);
    int64_t f = small->shape[2] ? big->shape[2] / small->shape[2] : 0;
    if (f < 1 || big->shape[0] != small->shape[0] || big->shape[1] != small->shape[1] ||
        big->shape[2] != f * small->shape[2] || big->shape[3] != f * small->shape[3]) {
        char a[160], b[160];
        return sd_err(SD_EINVAL, "%s: %s is not an integer upscale of %s", op, desc(big, a), desc(small, b));
    }
    return SD_OK;
}

int sd_op_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    DEVS("upsample_nearest", y, x);
    int rc = up_check("upsample_nearest", y, x);
    return rc ? rc : BACKEND(upsample_nearest, ctx, y, x);
}

int sd_op_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy)
{
    DEVS("upsample_nearest_bwd", dx, dy);
    int rc = up_check("upsample_nearest_bwd", dy, dx);
    return rc ? rc : BACKEND(upsample_nearest_bwd, ctx, dx, dy);
}

static int concat_check(const char *op, const sd_tensor *y, const sd_tensor *const *xs, int n, int *axis, int allow_null)
{
    if (!y || !xs || n < 1 || n > 64) return sd_err(SD_EINVAL, "%s: need 1 to 64 parts", op);
    F32(op, "y", y);
    if (*axis < 0) *axis += y->ndim;
    if (*axis < 0 || *axis >= y->ndim) return sd_err(SD_EINVAL, "%s: axis out of range", op);
    int64_t tot = 0;
    int nnull = 0;
    for (int i = 0; i < n; i++) {
        const sd_tensor *t = xs[i];
        if (!t) {
            if (!allow_null) return sd_err(SD_EINVAL, "%s: part %d missing", op, i);
            nnull++;
            continue;
        }
        F32(op, "part", t);
        int ok = t->ndim == y->ndim;
        for (int d = 0; ok && d < y->ndim; d++) ok = d == *axis || t->shape[d] == y->shape[d];
        if (!ok) {
            char a[160], b[160];
            return sd_err(SD_EINVAL, "%s: part %d %s does not fit %s", op, i, desc(t, a), desc(y, b));
        }
        tot += t->shape[*axis];
    }
    if (nnull > 1) return sd_err(SD_EINVAL, "%s: at most one NULL gradient (its size is the rest)", op);
    if ((nnull == 0 && tot != y->shape[*axis]) || tot > y->shape[*axis])
        return sd_err(SD_EINVAL, "%s: parts add up to %lld along axis %d, y has %lld", op, (long long)tot, *axis,
                      (long long)y->shape[*axis]);
    return SD_OK;
}

int sd_op_concat(sd_ctx *ctx, sd_tensor *y, const sd_tensor *const *xs, int n, int axis)
{
    DEVS("concat", y);
    for (int i = 0; xs && i < n && i < 64; i++) DEVS("concat", xs[i]);
    int rc = concat_check("concat", y, xs, n, &axis, 0);
    return rc ? rc : BACKEND(concat, ctx, y, xs, n, axis);
}

int sd_op_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis)
{
    DEVS("concat_bwd", dy);
    for (int i = 0; dxs && i < n && i < 64; i++) DEVS("concat_bwd", dxs[i]);
    int rc = concat_check("concat_bwd", dy, (const sd_tensor *const *)dxs, n, &axis, 1);
    return rc ? rc : BACKEND(concat_bwd, ctx, dxs, n, dy, axis);
}

/* ---- embeddings ----------------------------------------------------------------------------- */

static int ids_check(const char *op, const sd_tensor *ids, int64_t vocab)
{
    if (ids->dtype != SD_I32) return sd_err(SD_EINVAL, "%s: ids must be i32", op);
    const int32_t *p = ids->data;
    int64_t n = sd_tensor_numel(ids);
    int32_t *copy = NULL;
    if (ids->device == SD_DEV_CUDA && n > 0) {
        /* device ids: checked on a host copy (a few hundred token ids; this waits for the stream) */
        copy = malloc((size_t)n * sizeof(int32_t));
        if (!copy) return sd_err(SD_ENOMEM, "%s: out of memory checking %lld ids", op, (long long)n);
        int rc = sd_tensor_download(ids, copy, (size_t)n * sizeof(int32_t));
        if (rc) {
            free(copy);
            return sd_err_prefix(rc, "%s: reading the ids", op);
        }
        p = copy;
    }
    int rc = SD_OK;
    for (int64_t i = 0; i < n; i++)
        if (p[i] < 0 || p[i] >= vocab) {
            rc = sd_err(SD_ERANGE, "%s: id %d at position %lld outside [0, %lld)", op, (int)p[i], (long long)i, (long long)vocab);
            break;
        }
    free(copy);
    return rc;
}

static int emb_check(const char *op, const sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    if (!y || !table || !ids) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "table", table); F32(op, "y", y);
    NDIM(op, "table", table, 2, 2);
    int ok = y->ndim == ids->ndim + 1 && y->shape[y->ndim - 1] == table->shape[1];
    for (int i = 0; ok && i < ids->ndim; i++) ok = y->shape[i] == ids->shape[i];
    if (!ok) {
        char a[160], b[160];
        return sd_err(SD_EINVAL, "%s: y %s does not fit ids %s", op, desc(y, a), desc(ids, b));
    }
    return ids_check(op, ids, table->shape[0]);
}

int sd_op_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    DEVS("embedding", y, table, ids);
    int rc = emb_check("embedding", y, table, ids);
    return rc ? rc : BACKEND(embedding, ctx, y, table, ids);
}

int sd_op_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids)
{
    DEVS("embedding_bwd", dtable, dy, ids);
    int rc = emb_check("embedding_bwd", dy, dtable, ids);
    return rc ? rc : BACKEND(embedding_bwd, ctx, dtable, dy, ids);
}

int sd_op_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos, float freq_shift,
                             float max_period)
{
    DEVS("timestep_embedding", y, t);
    if (!y || !t) return sd_err(SD_EINVAL, "timestep_embedding: missing argument");
    F32("timestep_embedding", "y", y); F32("timestep_embedding", "t", t);
    NDIM("timestep_embedding", "t", t, 1, 1);
    NDIM("timestep_embedding", "y", y, 2, 2);
    if (y->shape[0] != t->shape[0] || y->shape[1] < 2) return sd_err(SD_EINVAL, "timestep_embedding: y must be [N, dim ≥ 2]");
    if ((float)(y->shape[1] / 2) - freq_shift <= 0 || max_period <= 0)
        return sd_err(SD_EINVAL, "timestep_embedding: bad freq_shift/max_period");
    return BACKEND(timestep_embedding, ctx, y, t, flip_sin_to_cos, freq_shift, max_period);
}

/* ---- losses --------------------------------------------------------------------------------- */

static int loss_check(const char *op, const sd_tensor *pred, const sd_tensor *target, const sd_tensor *weight,
                      const sd_tensor *c, sd_loss_kind kind)
{
    if (!pred || !target) return sd_err(SD_EINVAL, "%s: missing argument", op);
    F32(op, "pred", pred); F32(op, "target", target); F32(op, "weight", weight); F32(op, "c", c);
    NDIM(op, "pred", pred, 1, SD_MAX_DIMS);
    SAME(op, "pred", pred, "target", target);
    if (weight) SHAPE(op, "weight", weight, pred->shape[0]);
    if (c) SHAPE(op, "c", c, pred->shape[0]);
    if (kind < SD_LOSS_L2 || kind > SD_LOSS_SMOOTH_L1) return sd_err(SD_EINVAL, "%s: unknown loss type %d", op, (int)kind);
    return SD_OK;
}

int sd_op_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred, const sd_tensor *target,
               const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind)
{
    DEVS("loss", loss, per_sample, pred, target, weight, c);
    int rc = loss_check("loss", pred, target, weight, c, kind);
    if (rc) return rc;
    if (!loss || sd_tensor_numel(loss) != 1 || loss->dtype != SD_F32) return sd_err(SD_EINVAL, "loss: loss must be one f32");
    F32("loss", "per_sample", per_sample);
    if (per_sample) SHAPE("loss", "per_sample", per_sample, pred->shape[0]);
    return BACKEND(loss, ctx, loss, per_sample, pred, target, weight, c, kind);
}

/* ---- optimizer --------------------------------------------------------------------------------- */

static int half_mode(const char *op, sd_dtype d)
{
    if (d != SD_F32 && d != SD_F16 && d != SD_BF16)
        return sd_err(SD_EINVAL, "%s: rounding dtype must be f32 (none), f16 or bf16, got %s", op, sd_dtype_name(d));
    return SD_OK;
}

int sd_op_adamw(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, sd_tensor *v,
                const sd_adamw_scalars *s, sd_dtype half)
{
    if (!p || !g || !m || !v || !s) return sd_err(SD_EINVAL, "adamw: missing argument");
    DEVS("adamw", p, g, m, v);
    F32("adamw", "p", p); F32("adamw", "g", g); F32("adamw", "m", m); F32("adamw", "v", v);
    SAME("adamw", "p", p, "g", g); SAME("adamw", "p", p, "m", m); SAME("adamw", "p", p, "v", v);
    int rc = half_mode("adamw", half);
    return rc ? rc : BACKEND(adamw, ctx, p, g, m, v, s, half);
}

int sd_op_lion(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, const sd_lion_scalars *s)
{
    if (!p || !g || !m || !s) return sd_err(SD_EINVAL, "lion: missing argument");
    DEVS("lion", p, g, m);
    F32("lion", "p", p); F32("lion", "g", g); F32("lion", "m", m);
    SAME("lion", "p", p, "g", g); SAME("lion", "p", p, "m", m);
    return BACKEND(lion, ctx, p, g, m, s);
}

int sd_op_sgd(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *buf, const sd_sgd_scalars *s)
{
    if (!p || !g || !buf || !s) return sd_err(SD_EINVAL, "sgd: missing argument");
    DEVS("sgd", p, g, buf);
    F32("sgd", "p", p); F32("sgd", "g", g); F32("sgd", "buf", buf);
    SAME("sgd", "p", p, "g", g); SAME("sgd", "p", p, "buf", buf);
    return BACKEND(sgd, ctx, p, g, buf, s);
}

int sd_op_adafactor_sq(sd_ctx *ctx, const sd_tensor *g, sd_tensor *row, sd_tensor *col, sd_tensor *rmean,
                       sd_tensor *v, sd_tensor *u, const sd_adafactor_scalars *s)
{
    if (!g || !u || !s || (!v && (!row || !col || !rmean)))
        return sd_err(SD_EINVAL, "adafactor_sq: missing argument");
    DEVS("adafactor_sq", g, u, row, col, rmean, v);
    F32("adafactor_sq", "g", g); F32("adafactor_sq", "u", u); F32("adafactor_sq", "row", row);
    F32("adafactor_sq", "col", col); F32("adafactor_sq", "rmean", rmean); F32("adafactor_sq", "v", v);
    SAME("adafactor_sq", "g", g, "u", u);
    if (v) {
        SAME("adafactor_sq", "g", g, "v", v);
        return BACKEND(adafactor_sq, ctx, g, NULL, NULL, NULL, v, u, s);
    }
    if (g->ndim < 2) return sd_err(SD_EINVAL, "adafactor_sq: a factored second moment needs a gradient of 2 or more dims");
    int64_t C = g->shape[g->ndim - 1], R = g->shape[g->ndim - 2], n = sd_tensor_numel(g);
    int64_t B = R && C ? n / (R * C) : 0;
    if (sd_tensor_numel(row) != B * R || sd_tensor_numel(col) != B * C || sd_tensor_numel(rmean) != B)
        return sd_err(SD_EINVAL, "adafactor_sq: row, col and rmean must hold %lld, %lld and %lld values for a "
                      "gradient of %lld matrices of %lld x %lld", (long long)(B * R), (long long)(B * C),
                      (long long)B, (long long)B, (long long)R, (long long)C);
    return BACKEND(adafactor_sq, ctx, g, row, col, rmean, NULL, u, s);
}

int sd_op_adafactor_apply(sd_ctx *ctx, sd_tensor *p, const sd_tensor *u, sd_tensor *m, const sd_adafactor_scalars *s)
{
    if (!p || !u || !s) return sd_err(SD_EINVAL, "adafactor_apply: missing argument");
    DEVS("adafactor_apply", p, u, m);
    F32("adafactor_apply", "p", p); F32("adafactor_apply", "u", u); F32("adafactor_apply", "m", m);
    SAME("adafactor_apply", "p", p, "u", u); SAME("adafactor_apply", "p", p, "m", m);
    return BACKEND(adafactor_apply, ctx, p, u, m, s);
}

static int bnb_check(sd_ctx *ctx, const char *op, const sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st,
                     int nstates, const void *s, const sd_bnb_qmaps *q)
{
    if (!p || !g || !st || !s || !q) return sd_err(SD_EINVAL, "%s: missing argument", op);
    DEVS(op, p, g);
    F32(op, "p", p); F32(op, "g", g);
    SAME(op, "p", p, "g", g);
    if (sd_tensor_numel(p) != st->numel)
        return sd_err(SD_EINVAL, "%s: the state holds %lld values, p %lld", op, (long long)st->numel,
                      (long long)sd_tensor_numel(p));
    int ok = st->mode8 ? st->m8 && st->absmax1 && (nstates == 1 || (st->v8 && st->absmax2))
                       : st->m32 && (nstates == 1 || st->v32);
    return ok ? SD_OK : sd_err(SD_EINVAL, "%s: state arrays missing", op);
}

int sd_op_bnb2_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st,
                    const sd_bnb2_scalars *s, const sd_bnb_qmaps *q)
{
    int rc = bnb_check(ctx, "bnb2_step", p, g, st, 2, s, q);
    return rc ? rc : BACKEND(bnb2_step, ctx, p, g, st, s, q);
}

int sd_op_bnb1_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st,
                    const sd_bnb1_scalars *s, const sd_bnb_qmaps *q)
{
    int rc = bnb_check(ctx, "bnb1_step", p, g, st, 1, s, q);
    return rc ? rc : BACKEND(bnb1_step, ctx, p, g, st, s, q);
}

int sd_op_sumsq(sd_ctx *ctx, const sd_tensor *x, double *out)
{
    if (!x || !out) return sd_err(SD_EINVAL, "sumsq: missing argument");
    DEVS("sumsq", x);
    F32("sumsq", "x", x);
    return BACKEND(sumsq, ctx, x, out);
}

int sd_op_scale_round(sd_ctx *ctx, sd_tensor *x, float s, sd_dtype round, int *nonfinite)
{
    if (!x) return sd_err(SD_EINVAL, "scale_round: missing x");
    DEVS("scale_round", x);
    F32("scale_round", "x", x);
    int rc = half_mode("scale_round", round);
    return rc ? rc : BACKEND(scale_round, ctx, x, s, round, nonfinite);
}

int sd_op_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target,
                   const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss)
{
    DEVS("loss_bwd", dpred, pred, target, weight, c);
    int rc = loss_check("loss_bwd", pred, target, weight, c, kind);
    if (rc) return rc;
    if (!dpred) return sd_err(SD_EINVAL, "loss_bwd: missing dpred");
    F32("loss_bwd", "dpred", dpred);
    SAME("loss_bwd", "dpred", dpred, "pred", pred);
    return BACKEND(loss_bwd, ctx, dpred, pred, target, weight, c, kind, dloss);
}
