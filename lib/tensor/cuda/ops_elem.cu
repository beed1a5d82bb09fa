// CUDA backend: fills, conversions, permute, broadcasting arithmetic, sum_to, activations, GEGLU,
// softmax, upsample, concat, embeddings, timestep embedding, losses. Arguments were validated by
// ops.c (shapes, dtypes, devices). Everything is queued on the one stream; no atomics anywhere:
// every output element is written by exactly one thread, and reductions run in a fixed order
// (so the results are the same on every run).
#include <math.h>
#include <stdint.h>

#include <cuda_fp16.h>

#include "tensor/cuda/common.cuh"

extern "C" {
#include "base/half.h"
}

#define FP(t) ((t) ? (float *)(t)->data : (float *)NULL)
#define CFP(t) ((t) ? (const float *)(t)->data : (const float *)NULL)

// ---- fill, convert ------------------------------------------------------------------------------

__global__ void k_fill_f32(size_t n, float v, float *y) { SD_CU_LOOP(i, n) y[i] = v; }
__global__ void k_fill_u16(size_t n, uint16_t v, uint16_t *y) { SD_CU_LOOP(i, n) y[i] = v; }

extern "C" int sd_cuda_fill(sd_ctx *ctx, sd_tensor *y, float value)
{
    int64_t n = sd_tensor_numel(y);
    if (y->dtype == SD_F32) SD_CU_GRID(k_fill_f32, n, n, value, (float *)y->data);
    else {
        uint16_t h = y->dtype == SD_F16 ? sd_f32_to_f16(value) : sd_f32_to_bf16(value);
        SD_CU_GRID(k_fill_u16, n, n, h, (uint16_t *)y->data);
    }
    return SD_OK;
}

// f8_e4m3fn (frozen --fp8_base weights) is widened exactly by half.h's decoder, the CPU's own
__device__ __forceinline__ float ld_any(const void *p, int dt, size_t i)
{
    if (dt == SD_F32) return ((const float *)p)[i];
    if (dt == SD_F8E4M3) return sd_f8e4m3_to_f32(((const uint8_t *)p)[i]);
    uint16_t u = ((const uint16_t *)p)[i];
    if (dt == SD_BF16) return __uint_as_float((uint32_t)u << 16);
    return __half2float(__ushort_as_half(u));
}

// f32 → bf16 as sd_f32_to_bf16: NaN → quiet NaN, else round to nearest even.
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ void st_any(void *p, int dt, size_t i, float v)
{
    if (dt == SD_F32) ((float *)p)[i] = v;
    else if (dt == SD_BF16) ((uint16_t *)p)[i] = f32_to_bf16_bits(v);
    else ((uint16_t *)p)[i] = __half_as_ushort(__float2half_rn(v));
}

__global__ void k_convert(size_t n, void *y, int ydt, const void *x, int xdt)
{
    SD_CU_LOOP(i, n) st_any(y, ydt, i, ld_any(x, xdt, i));
}

static int convert_n(void *y, sd_dtype ydt, const void *x, sd_dtype xdt, size_t n)
{
    SD_CU_GRID(k_convert, n, n, y, (int)ydt, x, (int)xdt);
    return SD_OK;
}

extern "C" int sd_cuda_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = sd_tensor_numel(x);
    if (x->dtype == y->dtype) {
        if (y->data != x->data && n) SD_CU(cudaMemcpyAsync(y->data, x->data, sd_tensor_nbytes(x),
                                                           cudaMemcpyDeviceToDevice, sd_cuda_stream()));
        return SD_OK;
    }
    SD_CU_GRID(k_convert, n, n, y->data, (int)y->dtype, x->data, (int)x->dtype);
    return SD_OK;
}

const float *sd_cu_weight_f32(sd_ctx *ctx, const sd_tensor *w, int *rc)
{
    *rc = SD_OK;
    if (w->dtype == SD_F32) return (const float *)w->data;
    int64_t n = sd_tensor_numel(w);
    float *p = sd_cu_scratch<float>(ctx, (size_t)n, "weight conversion");
    if (!p) {
        *rc = SD_ENOMEM;
        return NULL;
    }
    if (n) {
        SD_CU_KERNEL(sd_cuda_blocks((size_t)n, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), k_convert)(
            (size_t)n, p, (int)SD_F32, w->data, (int)w->dtype);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) {
            *rc = sd_cuda_fail(e, "launching weight conversion");
            return NULL;
        }
    }
    return p;
}

sd_cu_op sd_cu_weight_op(sd_ctx *ctx, const sd_tensor *w, int *rc)
{
    *rc = SD_OK;
    sd_cu_elt e = sd_cu_math_elt();
    int f8 = w->dtype == SD_F8E4M3;
    sd_cu_elt wt = w->dtype == SD_BF16 ? SD_CU_BF16 : w->dtype == SD_F16 ? SD_CU_F16 : SD_CU_F32;
    const float *wf32 = wt == SD_CU_F32 && !f8 ? (const float *)w->data : NULL;
    if (e != SD_CU_F32) {
        sd_cu_op o = { w->data, e, wf32 };
        if (wt == e && !f8) return o;  // stored in the math's type: used as it is
        size_t n = (size_t)sd_tensor_numel(w);
        if (sd_cu_scratch_free(ctx) >= n * 2) {
            void *p = sd_cu_scratch<uint16_t>(ctx, n, "weight conversion");
            if (p) {
                if (f8)  // float8 -> bf16/f16: exact (every f8_e4m3fn value is one of both)
                    *rc = convert_n(p, e == SD_CU_BF16 ? SD_BF16 : SD_F16, w->data, SD_F8E4M3, n);
                else
                    *rc = sd_cu_convert_elts(p, e, w->data, wt, n);
                if (*rc) o.p = NULL;
                else o.p = p;
                return o;
            }
        }
        // no room for the 16-bit copy: the fp32 view (the GEMM then falls back to fp32 operands)
    }
    const float *f = sd_cu_weight_f32(ctx, w, rc);
    sd_cu_op o = { f, SD_CU_F32, f };
    return o;
}

// ---- permute --------------------------------------------------------------------------------------

struct perm_geom {
    int nd;
    int64_t ysh[SD_MAX_DIMS];   // output shape
    int64_t sstr[SD_MAX_DIMS];  // x stride of each output axis
};

__global__ void k_permute(size_t n, float *y, const float *x, perm_geom g, int acc)
{
    SD_CU_LOOP(i, n) {
        int64_t rem = (int64_t)i, off = 0;
        for (int d = g.nd - 1; d >= 0; d--) {
            off += (rem % g.ysh[d]) * g.sstr[d];
            rem /= g.ysh[d];
        }
        if (acc) y[i] += x[off];
        else y[i] = x[off];
    }
}

// y = x.permute(perm) with x of shape xsh (acc: y += ...).
static int permute_run(float *y, const float *x, int nd, const int64_t *xsh, const int *perm, int acc)
{
    perm_geom g;
    int64_t xstr[SD_MAX_DIMS], s = 1, n = 1;
    for (int i = nd - 1; i >= 0; i--) { xstr[i] = s; s *= xsh[i]; }
    g.nd = nd;
    for (int i = 0; i < nd; i++) { g.ysh[i] = xsh[perm[i]]; g.sstr[i] = xstr[perm[i]]; n *= g.ysh[i]; }
    SD_CU_GRID(k_permute, n, (size_t)n, y, x, g, acc);
    return SD_OK;
}

extern "C" int sd_cuda_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm)
{
    return permute_run(FP(y), CFP(x), x->ndim, x->shape, perm, 0);
}

extern "C" int sd_cuda_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm)
{
    int inv[SD_MAX_DIMS];
    for (int i = 0; i < dy->ndim; i++) inv[perm[i]] = i;
    return permute_run(FP(dx), CFP(dy), dy->ndim, dy->shape, inv, 1);
}

// ---- broadcasting binary ops ------------------------------------------------------------------

struct bcast_geom {
    int nd;
    int64_t ash[SD_MAX_DIMS];  // a's shape
    int64_t bst[SD_MAX_DIMS];  // b's stride along each axis of a (0 where b is broadcast)
};

static bcast_geom bcast_plan(int nd, const int64_t *ash, int bnd, const int64_t *bsh)
{
    bcast_geom g;
    g.nd = nd;
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int bi = i - (nd - bnd);
        int64_t bd = bi >= 0 ? bsh[bi] : 1;
        g.ash[i] = ash[i];
        g.bst[i] = (bd == 1) ? 0 : s;
        s *= bd;
    }
    return g;
}

__device__ __forceinline__ int64_t bcast_off(const bcast_geom &g, int64_t i)
{
    int64_t off = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
        off += (i % g.ash[d]) * g.bst[d];
        i /= g.ash[d];
    }
    return off;
}

// op 0: y = a + b; 1: y = a * b; 2: y += a * b
__global__ void k_binary(size_t n, int op, float *y, const float *a, const float *b, bcast_geom g)
{
    SD_CU_LOOP(i, n) {
        float bv = b[bcast_off(g, (int64_t)i)];
        if (op == 0) y[i] = a[i] + bv;
        else if (op == 1) y[i] = a[i] * bv;
        else y[i] += a[i] * bv;
    }
}

static int binary(int op, float *y, const float *a, const sd_tensor *at, const float *b, const sd_tensor *bt)
{
    bcast_geom g = bcast_plan(at->ndim, at->shape, bt->ndim, bt->shape);
    int64_t n = sd_tensor_numel(at);
    SD_CU_GRID(k_binary, n, (size_t)n, op, y, a, b, g);
    return SD_OK;
}

extern "C" int sd_cuda_add(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    return binary(0, FP(y), CFP(a), a, CFP(b), b);
}

extern "C" int sd_cuda_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b)
{
    return binary(1, FP(y), CFP(a), a, CFP(b), b);
}

// ---- sum_to: reduction over broadcast axes ------------------------------------------------------

// x's axes split into kept ones (y has them; their digits come from the y index e, row-major) and
// reduced ones (y has size 1 there; their digits come from the reduction index r).
struct red_geom {
    int nk, nr;
    int64_t ksz[SD_MAX_DIMS], kst[SD_MAX_DIMS];  // kept axes: size, x stride
    int64_t rsz[SD_MAX_DIMS], rst[SD_MAX_DIMS];  // reduced axes: size, x stride
};

__device__ __forceinline__ int64_t red_off(const red_geom &g, int64_t e, int64_t r)
{
    int64_t off = 0;
    for (int d = g.nk - 1; d >= 0; d--) { off += (e % g.ksz[d]) * g.kst[d]; e /= g.ksz[d]; }
    for (int d = g.nr - 1; d >= 0; d--) { off += (r % g.rsz[d]) * g.rst[d]; r /= g.rsz[d]; }
    return off;
}

// One block per output element (grid-stride over elements): each thread sums a strided subset of
// the R reduced positions in double, then a fixed tree adds the 256 partial sums.
__global__ void k_sum_to_block(int64_t ne, int64_t nred, float *y, float alpha, const float *x,
                               const float *w, red_geom g)
{
    __shared__ double sh[256];
    for (int64_t e = blockIdx.x; e < ne; e += gridDim.x) {
        double acc = 0;
        for (int64_t r = threadIdx.x; r < nred; r += blockDim.x) {
            int64_t o = red_off(g, e, r);
            acc += w ? (double)x[o] * (double)w[o] : (double)x[o];
        }
        sh[threadIdx.x] = acc;
        __syncthreads();
        for (int s = 128; s > 0; s >>= 1) {
            if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) y[e] += (float)(alpha * sh[0]);
        __syncthreads();
    }
}

// Few reduced positions: one thread per output element, sequential sum.
__global__ void k_sum_to_thread(int64_t ne, int64_t nred, float *y, float alpha, const float *x,
                                const float *w, red_geom g)
{
    SD_CU_LOOP(e, ne) {
        double acc = 0;
        for (int64_t r = 0; r < nred; r++) {
            int64_t o = red_off(g, (int64_t)e, r);
            acc += w ? (double)x[o] * (double)w[o] : (double)x[o];
        }
        y[e] += (float)(alpha * acc);
    }
}

int sd_cu_sum_to(sd_ctx *ctx, float *y, int ynd, const int64_t *ysh, float alpha, const float *x, const float *w,
                 int xnd, const int64_t *xsh)
{
    red_geom g;
    g.nk = g.nr = 0;
    int64_t s = 1, ne = 1, nred = 1;
    int64_t xst[SD_MAX_DIMS];
    for (int i = xnd - 1; i >= 0; i--) { xst[i] = s; s *= xsh[i]; }
    for (int i = 0; i < xnd; i++) {
        int yi = i - (xnd - ynd);
        int64_t yd = yi >= 0 ? ysh[yi] : 1;
        if (xsh[i] == 1) continue;
        if (yd == 1) { g.rsz[g.nr] = xsh[i]; g.rst[g.nr] = xst[i]; g.nr++; nred *= xsh[i]; }
        else { g.ksz[g.nk] = xsh[i]; g.kst[g.nk] = xst[i]; g.nk++; ne *= xsh[i]; }
    }
    if (s == 0) return SD_OK;  // x empty: nothing to add
    if (nred >= 64) {
        unsigned blocks = ne > 65535 * 16 ? 65535u * 16u : (unsigned)ne;
        SD_CU_KERNEL(blocks, 256, 0, sd_cuda_stream(), k_sum_to_block)(ne, nred, y, alpha, x, w, g);
        SD_CU_LAUNCH("sum_to");
    } else {
        SD_CU_GRID(k_sum_to_thread, ne, ne, nred, y, alpha, x, w, g);
    }
    return SD_OK;
}

extern "C" int sd_cuda_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy, const sd_tensor *a,
                               const sd_tensor *b)
{
    int rc = SD_OK;
    if (da) rc = binary(2, FP(da), CFP(dy), a, CFP(b), b);
    if (!rc && db) rc = sd_cu_sum_to(ctx, FP(db), b->ndim, b->shape, 1.0f, CFP(dy), CFP(a), a->ndim, a->shape);
    return rc;
}

__global__ void k_axpby(size_t n, float *y, float alpha, const float *x, float beta)
{
    SD_CU_LOOP(i, n) y[i] = beta == 0 ? alpha * x[i] : alpha * x[i] + beta * y[i];
}

extern "C" int sd_cuda_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta)
{
    int64_t n = sd_tensor_numel(x);
    SD_CU_GRID(k_axpby, n, (size_t)n, FP(y), alpha, CFP(x), beta);
    return SD_OK;
}

extern "C" int sd_cuda_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x)
{
    return sd_cu_sum_to(ctx, FP(y), y->ndim, y->shape, alpha, CFP(x), NULL, x->ndim, x->shape);
}

// ---- activations --------------------------------------------------------------------------------

#define SQRT1_2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f
#define SQRT_2_PI 0.79788456080286535588f

__device__ __forceinline__ float act1(int act, float x)
{
    switch (act) {
    case SD_ACT_SILU: return x / (1.0f + expf(-x));
    case SD_ACT_GELU: return 0.5f * x * (1.0f + erff(x * SQRT1_2));
    case SD_ACT_GELU_TANH: {
        float u = SQRT_2_PI * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    case SD_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    default: return x;
    }
}

__device__ __forceinline__ float dact1(int act, float x)
{
    switch (act) {
    case SD_ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    case SD_ACT_GELU:
        return 0.5f * (1.0f + erff(x * SQRT1_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    case SD_ACT_GELU_TANH: {
        float u = SQRT_2_PI * (x + 0.044715f * x * x * x);
        float t = tanhf(u);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * SQRT_2_PI * (1.0f + (float)(3 * 0.044715) * x * x);
    }
    case SD_ACT_QUICK_GELU: {
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        return s + 1.702f * x * s * (1.0f - s);
    }
    default: return 1.0f;
    }
}

__global__ void k_act(size_t n, int act, float *y, const float *x) { SD_CU_LOOP(i, n) y[i] = act1(act, x[i]); }
__global__ void k_act_bwd(size_t n, int act, float *dx, const float *dy, const float *x)
{
    SD_CU_LOOP(i, n) dx[i] += dy[i] * dact1(act, x[i]);
}

extern "C" int sd_cuda_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = sd_tensor_numel(x);
    SD_CU_GRID(k_act, n, (size_t)n, (int)act, FP(y), CFP(x));
    return SD_OK;
}

extern "C" int sd_cuda_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    int64_t n = sd_tensor_numel(x);
    SD_CU_GRID(k_act_bwd, n, (size_t)n, (int)act, FP(dx), CFP(dy), CFP(x));
    return SD_OK;
}

// x [rows, 2d] = [h, g] → y [rows, d] = h·gelu(g)
__global__ void k_geglu(size_t n, int64_t d, float *y, const float *x)
{
    SD_CU_LOOP(i, n) {
        int64_t r = (int64_t)i / d, j = (int64_t)i % d;
        const float *xr = x + r * 2 * d;
        y[i] = xr[j] * act1(SD_ACT_GELU, xr[d + j]);
    }
}

__global__ void k_geglu_bwd(size_t n, int64_t d, float *dx, const float *dy, const float *x)
{
    SD_CU_LOOP(i, n) {
        int64_t r = (int64_t)i / d, j = (int64_t)i % d;
        const float *xr = x + r * 2 * d;
        float *dxr = dx + r * 2 * d;
        float h = xr[j], g = xr[d + j];
        dxr[j] += dy[i] * act1(SD_ACT_GELU, g);
        dxr[d + j] += dy[i] * h * dact1(SD_ACT_GELU, g);
    }
}

extern "C" int sd_cuda_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t d = y->shape[y->ndim - 1], n = sd_tensor_numel(y);
    if (d == 0) return SD_OK;
    SD_CU_GRID(k_geglu, n, (size_t)n, d, FP(y), CFP(x));
    return SD_OK;
}

extern "C" int sd_cuda_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    int64_t d = dy->shape[dy->ndim - 1], n = sd_tensor_numel(dy);
    if (d == 0) return SD_OK;
    SD_CU_GRID(k_geglu_bwd, n, (size_t)n, d, FP(dx), CFP(dy), CFP(x));
    return SD_OK;
}

// ---- rotary position embedding (one thread per pair; see sd_op_rope) --------------------------

__global__ void k_rope(size_t n, int64_t t, int64_t c, int64_t d, int64_t skip, float *y, const float *x,
                       const float *tab)
{
    SD_CU_LOOP(p, n) {
        int64_t e = 2 * (int64_t)p, r = e / c, j = r % t, i = (e % c) % d;
        float a = x[e], b = x[e + 1];
        if (j < skip) {
            y[e] = a;
            y[e + 1] = b;
        } else {
            const float *sn = tab + (j - skip) * 2 * d, *cs = sn + d;
            y[e] = a * cs[i] - b * sn[i];
            y[e + 1] = b * cs[i + 1] + a * sn[i + 1];
        }
    }
}

__global__ void k_rope_bwd(size_t n, int64_t t, int64_t c, int64_t d, int64_t skip, float *dx, const float *dy,
                           const float *tab)
{
    SD_CU_LOOP(p, n) {
        int64_t e = 2 * (int64_t)p, r = e / c, j = r % t, i = (e % c) % d;
        float u = dy[e], v = dy[e + 1];
        if (j < skip) {
            dx[e] += u;
            dx[e + 1] += v;
        } else {
            const float *sn = tab + (j - skip) * 2 * d, *cs = sn + d;
            dx[e] += u * cs[i] + v * sn[i + 1];
            dx[e + 1] += v * cs[i + 1] - u * sn[i];
        }
    }
}

extern "C" int sd_cuda_rope(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *table)
{
    int64_t n = sd_tensor_numel(x) / 2, d = table->shape[1] / 2;
    SD_CU_GRID(k_rope, n, (size_t)n, x->shape[1], x->shape[2], d, x->shape[1] - table->shape[0], FP(y), CFP(x),
               CFP(table));
    return SD_OK;
}

extern "C" int sd_cuda_rope_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *table)
{
    int64_t n = sd_tensor_numel(dy) / 2, d = table->shape[1] / 2;
    SD_CU_GRID(k_rope_bwd, n, (size_t)n, dy->shape[1], dy->shape[2], d, dy->shape[1] - table->shape[0], FP(dx),
               CFP(dy), CFP(table));
    return SD_OK;
}

// ---- softmax over rows (one block of 256 threads per row) ---------------------------------------

__device__ __forceinline__ float block_max(float v, float *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__global__ void k_softmax(int64_t rows, int64_t n, float *y, const float *x)
{
    __shared__ float shf[256];
    __shared__ double shd[256];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, xr[j]);
        m = block_max(m, shf);
        double s = 0;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += (double)expf(xr[j] - m);
        s = block_sum_d(s, shd);
        float inv = (float)(1.0 / s);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
    }
}

__global__ void k_softmax_bwd(int64_t rows, int64_t n, float *dx, const float *dy, const float *y)
{
    __shared__ double shd[256];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *yr = y + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        double d = 0;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) d += (double)yr[j] * (double)dyr[j];
        float dot = (float)block_sum_d(d, shd);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) dxr[j] += yr[j] * (dyr[j] - dot);
    }
}

static unsigned row_blocks(int64_t rows) { return rows > 65535 * 16 ? 65535u * 16u : (unsigned)rows; }

extern "C" int sd_cuda_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = x->shape[x->ndim - 1], rows = n ? sd_tensor_numel(x) / n : 0;
    if (!rows) return SD_OK;
    SD_CU_KERNEL(row_blocks(rows), 256, 0, sd_cuda_stream(), k_softmax)(rows, n, FP(y), CFP(x));
    SD_CU_LAUNCH("softmax");
    return SD_OK;
}

extern "C" int sd_cuda_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y)
{
    int64_t n = y->shape[y->ndim - 1], rows = n ? sd_tensor_numel(y) / n : 0;
    if (!rows) return SD_OK;
    SD_CU_KERNEL(row_blocks(rows), 256, 0, sd_cuda_stream(), k_softmax_bwd)(rows, n, FP(dx), CFP(dy), CFP(y));
    SD_CU_LAUNCH("softmax_bwd");
    return SD_OK;
}

// ---- L2 normalisation of rows (one thread per row: the rows are short, the head width) -----------

__global__ void k_l2norm(int64_t rows, int64_t n, float eps, float *y, const float *x)
{
    SD_CU_LOOP(r, rows) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float s = 0;
        for (int64_t i = 0; i < n; i++) s += xr[i] * xr[i];
        float nrm = sqrtf(s), inv = 1.0f / (nrm > eps ? nrm : eps);
        for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * inv;
    }
}

__global__ void k_l2norm_bwd(int64_t rows, int64_t n, float eps, float *dx, const float *dy, const float *x)
{
    SD_CU_LOOP(r, rows) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        float s = 0;
        for (int64_t i = 0; i < n; i++) s += xr[i] * xr[i];
        float nrm = sqrtf(s);
        if (nrm > eps) {
            float inv = 1.0f / nrm, dot = 0;
            for (int64_t i = 0; i < n; i++) dot += xr[i] * dyr[i];
            dot *= inv * inv;
            for (int64_t i = 0; i < n; i++) dxr[i] += (dyr[i] - xr[i] * dot) * inv;
        } else {
            for (int64_t i = 0; i < n; i++) dxr[i] += dyr[i] / eps;
        }
    }
}

extern "C" int sd_cuda_l2_normalize(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, float eps)
{
    int64_t n = x->shape[x->ndim - 1], rows = n ? sd_tensor_numel(x) / n : 0;
    SD_CU_GRID(k_l2norm, rows, rows, n, eps, FP(y), CFP(x));
    return SD_OK;
}

extern "C" int sd_cuda_l2_normalize_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x, float eps)
{
    int64_t n = x->shape[x->ndim - 1], rows = n ? sd_tensor_numel(x) / n : 0;
    SD_CU_GRID(k_l2norm_bwd, rows, rows, n, eps, FP(dx), CFP(dy), CFP(x));
    return SD_OK;
}

// ---- Swin window partition / merge with a cyclic shift (one thread per element; a permutation) ----

__global__ void k_window(size_t total, int64_t H, int64_t W, int64_t C, int ws, int shift, int to_win, int acc,
                         float *win, float *x)
{
    const int64_t nh = H / ws, nw = W / ws;
    SD_CU_LOOP(e, total) {
        int64_t c = (int64_t)(e % (size_t)C), t = (int64_t)(e / (size_t)C);
        int64_t j = t % ws, i = (t / ws) % ws, wj = (t / ((int64_t)ws * ws)) % nw;
        int64_t wi = (t / ((int64_t)ws * ws * nw)) % nh, b = t / ((int64_t)ws * ws * nw * nh);
        int64_t h = (wi * ws + i + shift) % H, w = (wj * ws + j + shift) % W;
        float *wp = win + t * C + c, *xp = x + ((b * H + h) * W + w) * C + c;
        float *dst = to_win ? wp : xp;
        float v = to_win ? *xp : *wp;
        *dst = acc ? *dst + v : v;
    }
}

extern "C" int sd_cuda_window(sd_ctx *ctx, sd_tensor *win, sd_tensor *x, int ws, int shift, int to_win, int acc)
{
    int64_t n = sd_tensor_numel(x);
    SD_CU_GRID(k_window, n, (size_t)n, x->shape[1], x->shape[2], x->shape[3], ws, shift, to_win, acc, FP(win), FP(x));
    return SD_OK;
}

// ---- nearest upsample by an integer factor f: x [nc, h, w] → y [nc, f·h, f·w] -------------------

__global__ void k_upsample(size_t n, float *y, const float *x, int64_t h, int64_t w, int f)
{
    SD_CU_LOOP(i, n) {
        int64_t W = w * f, H = h * f;
        int64_t X = (int64_t)i % W, Y = ((int64_t)i / W) % H, p = (int64_t)i / (W * H);
        y[i] = x[(p * h + Y / f) * w + X / f];
    }
}

__global__ void k_upsample_bwd(size_t n, float *dx, const float *dy, int64_t h, int64_t w, int f)
{
    SD_CU_LOOP(i, n) {
        int64_t W = w * f, H = h * f;
        int64_t j = (int64_t)i % w, yy = ((int64_t)i / w) % h, p = (int64_t)i / (w * h);
        const float *d = dy + (p * H + yy * f) * W + j * f;
        float s = 0;
        for (int a = 0; a < f; a++)
            for (int b = 0; b < f; b++) s += d[a * W + b];
        dx[i] += s;
    }
}

extern "C" int sd_cuda_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int f = (int)(y->shape[2] / x->shape[2]);
    int64_t n = sd_tensor_numel(y);
    SD_CU_GRID(k_upsample, n, (size_t)n, FP(y), CFP(x), x->shape[2], x->shape[3], f);
    return SD_OK;
}

extern "C" int sd_cuda_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy)
{
    int f = (int)(dy->shape[2] / dx->shape[2]);
    int64_t n = sd_tensor_numel(dx);
    SD_CU_GRID(k_upsample_bwd, n, (size_t)n, FP(dx), CFP(dy), dx->shape[2], dx->shape[3], f);
    return SD_OK;
}

// ---- concat along an axis: y [outer, tot·inner] with part i at column offset off ---------------

// bwd 0: y[o, off + e] = x[o, e]; bwd 1: x[o, e] += y[o, off + e] (x is the part's gradient)
__global__ void k_concat_part(size_t n, int64_t cnt, int64_t ystride, int64_t off, float *y, float *x, int bwd)
{
    SD_CU_LOOP(i, n) {
        int64_t o = (int64_t)i / cnt, e = (int64_t)i % cnt;
        float *yp = y + o * ystride + off + e;
        if (bwd) x[i] += *yp;
        else *yp = x[i];
    }
}

static void concat_geom(const sd_tensor *y, int axis, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++) *outer *= y->shape[i];
    for (int i = axis + 1; i < y->ndim; i++) *inner *= y->shape[i];
}

static int concat_run(float *y, const int64_t *len, float *const *ptr, int n, int64_t outer, int64_t inner, int bwd)
{
    int64_t tot = 0, off = 0;
    for (int i = 0; i < n; i++) tot += len[i];
    for (int i = 0; i < n; i++) {
        int64_t cnt = len[i] * inner;
        if (ptr[i] && cnt)
            SD_CU_GRID(k_concat_part, outer * cnt, (size_t)(outer * cnt), cnt, tot * inner, off, y, ptr[i], bwd);
        off += cnt;
    }
    return SD_OK;
}

extern "C" int sd_cuda_concat(sd_ctx *ctx, sd_tensor *y, const sd_tensor *const *xs, int n, int axis)
{
    float *ptr[64];
    int64_t len[64], outer, inner;
    for (int i = 0; i < n; i++) { ptr[i] = (float *)xs[i]->data; len[i] = xs[i]->shape[axis]; }
    concat_geom(y, axis, &outer, &inner);
    return concat_run(FP(y), len, ptr, n, outer, inner, 0);
}

extern "C" int sd_cuda_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis)
{
    float *ptr[64];
    int64_t len[64], outer, inner, rest = dy->shape[axis];
    int nn = 0;
    for (int i = 0; i < n; i++) {
        ptr[i] = dxs[i] ? (float *)dxs[i]->data : NULL;
        if (dxs[i]) { len[i] = dxs[i]->shape[axis]; rest -= len[i]; }
        else { len[i] = -1; nn++; }
    }
    for (int i = 0; i < n; i++) if (len[i] < 0) len[i] = nn == 1 ? rest : 0;
    concat_geom(dy, axis, &outer, &inner);
    return concat_run((float *)dy->data, len, ptr, n, outer, inner, 1);
}

// ---- embeddings -----------------------------------------------------------------------------------

__global__ void k_embedding(size_t n, int64_t d, float *y, const float *table, const int32_t *ids)
{
    SD_CU_LOOP(i, n) y[i] = table[(int64_t)ids[(int64_t)i / d] * d + (int64_t)i % d];
}

// Deterministic scatter-add without atomics: thread j owns column j of the table and adds the
// rows of dy in increasing position order (repeated ids are summed in that order).
__global__ void k_embedding_bwd(int64_t d, int64_t n, float *dt, const float *dy, const int32_t *ids)
{
    SD_CU_LOOP(j, d) {
        for (int64_t i = 0; i < n; i++) dt[(int64_t)ids[i] * d + (int64_t)j] += dy[i * d + (int64_t)j];
    }
}

extern "C" int sd_cuda_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    int64_t d = table->shape[1], n = sd_tensor_numel(ids) * d;
    SD_CU_GRID(k_embedding, n, (size_t)n, d, FP(y), CFP(table), (const int32_t *)ids->data);
    return SD_OK;
}

extern "C" int sd_cuda_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids)
{
    int64_t d = dtable->shape[1], n = sd_tensor_numel(ids);
    if (!n) return SD_OK;
    SD_CU_GRID(k_embedding_bwd, d, d, n, FP(dtable), CFP(dy), (const int32_t *)ids->data);
    return SD_OK;
}

// Same float arithmetic as the CPU kernel (float exponent, exp, product, sinf/cosf).
__global__ void k_timestep(size_t n, int64_t half, int64_t dim, float *y, const float *t, int flip, float shift,
                           float neglogp)
{
    SD_CU_LOOP(i, n) {
        int64_t r = (int64_t)i / half, j = (int64_t)i % half;
        float e = neglogp * (float)j;
        e = e / ((float)half - shift);
        // exp in double, rounded once to float: the correctly rounded expf of the CPU's libm (the
        // product with t up to 1000 would magnify CUDA expf's 2-ulp error into the sine)
        float a = t[r] * (float)exp((double)e);
        float sv = sinf(a), cv = cosf(a);
        y[r * dim + j] = flip ? cv : sv;
        y[r * dim + half + j] = flip ? sv : cv;
        if ((dim & 1) && j == 0) y[r * dim + dim - 1] = 0;
    }
}

extern "C" int sd_cuda_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos,
                                          float freq_shift, float max_period)
{
    int64_t dim = y->shape[1], half = dim / 2, n = t->shape[0] * half;
    SD_CU_GRID(k_timestep, n, (size_t)n, half, dim, FP(y), CFP(t), flip_sin_to_cos, freq_shift,
               (float)(-log((double)max_period)));
    return SD_OK;
}

// ---- losses -------------------------------------------------------------------------------------

__device__ __forceinline__ float eloss(int k, float d, float c)
{
    switch (k) {
    case SD_LOSS_L1: return fabsf(d);
    case SD_LOSS_HUBER: return 2 * c * (sqrtf(d * d + c * c) - c);
    case SD_LOSS_SMOOTH_L1: return 2 * (sqrtf(d * d + c * c) - c);
    default: return d * d;
    }
}

__device__ __forceinline__ float deloss(int k, float d, float c)
{
    switch (k) {
    case SD_LOSS_L1: return d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
    case SD_LOSS_HUBER: return 2 * c * d / sqrtf(d * d + c * c);
    case SD_LOSS_SMOOTH_L1: return 2 * d / sqrtf(d * d + c * c);
    default: return 2 * d;
    }
}

// One block per sample: mean element loss in double.
__global__ void k_loss_sample(int64_t n, int64_t m, double *mean, const float *p, const float *t, const float *c,
                              int kind)
{
    __shared__ double sh[256];
    for (int64_t s = blockIdx.x; s < n; s += gridDim.x) {
        const float *ps = p + s * m, *ts = t + s * m;
        float cs = c ? c[s] : 0.1f;
        double a = 0;
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) a += (double)eloss(kind, ps[i] - ts[i], cs);
        a = block_sum_d(a, sh);
        if (threadIdx.x == 0) mean[s] = m ? a / (double)m : 0;
    }
}

__global__ void k_loss_total(int64_t n, const double *mean, float *per, const float *w, float *loss)
{
    if (blockIdx.x || threadIdx.x) return;
    double tot = 0;
    for (int64_t s = 0; s < n; s++) {
        if (per) per[s] = (float)mean[s];
        tot += (w ? (double)w[s] : 1.0) * mean[s];
    }
    loss[0] = (float)(n ? tot / (double)n : 0);
}

extern "C" int sd_cuda_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred,
                            const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    size_t mark = sd_arena_mark(&ctx->scratch);
    double *mean = sd_cu_scratch<double>(ctx, (size_t)(n ? n : 1), "loss");
    if (!mean) return SD_ENOMEM;
    if (n) {
        SD_CU_KERNEL(row_blocks(n), 256, 0, sd_cuda_stream(), k_loss_sample)(n, m, mean, CFP(pred), CFP(target), CFP(c),
                                                                  (int)kind);
        SD_CU_LAUNCH("loss");
    }
    SD_CU_KERNEL(1, 1, 0, sd_cuda_stream(), k_loss_total)(n, mean, FP(per_sample), CFP(weight), FP(loss));
    cudaError_t e = cudaGetLastError();
    sd_arena_reset(&ctx->scratch, mark);
    if (e != cudaSuccess) return sd_cuda_fail(e, "launching loss_total");
    return SD_OK;
}

__global__ void k_loss_bwd(size_t nm, int64_t n, int64_t m, float *dp, const float *p, const float *t,
                           const float *w, const float *c, int kind, float dloss)
{
    SD_CU_LOOP(i, nm) {
        int64_t s = (int64_t)i / m;
        float cs = c ? c[s] : 0.1f;
        float g = dloss * (w ? w[s] : 1.0f) / (float)n / (float)m;
        dp[i] += g * deloss(kind, p[i] - t[i], cs);
    }
}

extern "C" int sd_cuda_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target,
                                const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss)
{
    int64_t n = pred->shape[0], m = n ? sd_tensor_numel(pred) / n : 0;
    if (!n || !m) return SD_OK;
    SD_CU_GRID(k_loss_bwd, n * m, (size_t)(n * m), n, m, FP(dpred), CFP(pred), CFP(target), CFP(weight), CFP(c),
               (int)kind, dloss);
    return SD_OK;
}
