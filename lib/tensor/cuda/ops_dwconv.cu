// CUDA backend: depthwise conv2d (w [C,1,kh,kw], the ConvNeXt conv_dw), direct kernels.
// Arguments were validated by ops.c; f16/bf16 weights are converted to f32 in scratch per call.
//   forward  one thread per output element: bias, then the taps in (ky, kx) order.
//   dX       one thread per input element, gathering the outputs it fed, taps in (ky, kx) order.
//   dW       one 256-thread block per filter tap (c, ky, kx): a fixed tree over images and pixels
//            (in double); db likewise per channel. No atomics: the same bytes on every run.
#include <stdint.h>

#include "tensor/cuda/common.cuh"

#define FP(t) ((t) ? (float *)(t)->data : (float *)NULL)
#define CFP(t) ((t) ? (const float *)(t)->data : (const float *)NULL)

struct dw_geom {
    int64_t n, c, h, w, kh, kw, ho, wo;
    int stride, pt, pl;
};

static dw_geom dw_plan(const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, sd_conv2d_geom g)
{
    dw_geom d;
    d.n = x->shape[0]; d.c = x->shape[1]; d.h = x->shape[2]; d.w = x->shape[3];
    d.kh = w->shape[2]; d.kw = w->shape[3]; d.ho = y->shape[2]; d.wo = y->shape[3];
    d.stride = g.stride; d.pt = g.pad_t; d.pl = g.pad_l;
    return d;
}

__global__ void k_dw_fwd(dw_geom g, float *y, const float *x, const float *w, const float *b)
{
    SD_CU_LOOP(i, g.n * g.c * g.ho * g.wo) {
        int64_t ox = (int64_t)i % g.wo, t = (int64_t)i / g.wo;
        int64_t oy = t % g.ho, pl = t / g.ho, c = pl % g.c;
        const float *xp = x + pl * g.h * g.w, *wp = w + c * g.kh * g.kw;
        float acc = b ? b[c] : 0.0f;
        for (int64_t ky = 0; ky < g.kh; ky++) {
            int64_t iy = oy * g.stride - g.pt + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
                int64_t ix = ox * g.stride - g.pl + kx;
                if (ix < 0 || ix >= g.w) continue;
                acc += wp[ky * g.kw + kx] * xp[iy * g.w + ix];
            }
        }
        y[i] = acc;
    }
}

__global__ void k_dw_dx(dw_geom g, float *dx, const float *dy, const float *w)
{
    SD_CU_LOOP(i, g.n * g.c * g.h * g.w) {
        int64_t ix = (int64_t)i % g.w, t = (int64_t)i / g.w;
        int64_t iy = t % g.h, pl = t / g.h, c = pl % g.c;
        const float *dp = dy + pl * g.ho * g.wo, *wp = w + c * g.kh * g.kw;
        float acc = 0.0f;
        for (int64_t ky = 0; ky < g.kh; ky++) {
            int64_t ny = iy + g.pt - ky;   // = oy·stride
            if (ny < 0 || ny % g.stride) continue;
            int64_t oy = ny / g.stride;
            if (oy >= g.ho) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
                int64_t nx = ix + g.pl - kx;
                if (nx < 0 || nx % g.stride) continue;
                int64_t ox = nx / g.stride;
                if (ox >= g.wo) continue;
                acc += wp[ky * g.kw + kx] * dp[oy * g.wo + ox];
            }
        }
        dx[i] += acc;
    }
}

// One block per tap (c, ky, kx) = blockIdx.x: Σ over images and output pixels of dy·x.
__global__ void k_dw_dw(dw_geom g, float *dw, const float *dy, const float *x)
{
    __shared__ double sh[256];
    int64_t tap = blockIdx.x, kk = g.kh * g.kw;
    int64_t c = tap / kk, ky = (tap % kk) / g.kw, kx = tap % g.kw;
    int64_t hw = g.ho * g.wo, tot = g.n * hw;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < tot; j += blockDim.x) {
        int64_t n = j / hw, p = j % hw, oy = p / g.wo, ox = p % g.wo;
        int64_t iy = oy * g.stride - g.pt + ky, ix = ox * g.stride - g.pl + kx;
        if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
        acc += (double)dy[(n * g.c + c) * hw + p] * (double)x[((n * g.c + c) * g.h + iy) * g.w + ix];
    }
    double s = block_sum_d(acc, sh);
    if (threadIdx.x == 0) dw[tap] += (float)s;
}

__global__ void k_dw_db(dw_geom g, float *db, const float *dy)
{
    __shared__ double sh[256];
    int64_t c = blockIdx.x, hw = g.ho * g.wo, tot = g.n * hw;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < tot; j += blockDim.x) acc += dy[((j / hw) * g.c + c) * hw + j % hw];
    double s = block_sum_d(acc, sh);
    if (threadIdx.x == 0) db[c] += (float)s;
}

extern "C" int sd_cuda_conv2d_dw(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w,
                                 const sd_tensor *b, sd_conv2d_geom gg)
{
    if (sd_tensor_numel(y) == 0) return SD_OK;
    dw_geom g = dw_plan(x, w, y, gg);
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    const float *wf = sd_cu_weight_f32(ctx, w, &rc);
    if (!wf) return rc;
    SD_CU_GRID(k_dw_fwd, sd_tensor_numel(y), g, FP(y), CFP(x), wf, CFP(b));
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

extern "C" int sd_cuda_conv2d_dw_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                                     const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom gg)
{
    if (sd_tensor_numel(dy) == 0) return SD_OK;
    dw_geom g = dw_plan(x, w, dy, gg);
    const int64_t taps = g.c * g.kh * g.kw;
    if (dw && taps > INT32_MAX) return sd_err(SD_ERANGE, "CUDA conv2d_dw_bwd: %lld filter taps", (long long)taps);
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    const float *wf = dx ? sd_cu_weight_f32(ctx, w, &rc) : NULL;
    if (rc) return rc;
    if (db && g.c > 0) {
        SD_CU_KERNEL((unsigned)g.c, 256, 0, sd_cuda_stream(), k_dw_db)(g, FP(db), CFP(dy));
        SD_CU_LAUNCH("k_dw_db");
    }
    if (dw && taps > 0) {
        SD_CU_KERNEL((unsigned)taps, 256, 0, sd_cuda_stream(), k_dw_dw)(g, FP(dw), CFP(dy), CFP(x));
        SD_CU_LAUNCH("k_dw_dw");
    }
    if (dx) SD_CU_GRID(k_dw_dx, sd_tensor_numel(dx), g, FP(dx), CFP(dy), wf);
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}
