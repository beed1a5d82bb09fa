// CUDA backend: linear, matmul, conv2d (im2col + cuBLAS), group norm (+ fused SiLU), layer norm.
// Arguments were validated by ops.c. Matrix products (sd_cu_gemm_x, gemm.cu) run in fp32 through
// cuBLAS with CUBLAS_COMPUTE_32F (no TF32) unless sd_device_set_gemm_math() chose TF32 or bf16/fp16
// tensor-core products. Under math fp32 / TF32 f16/bf16 weights are converted to f32 in scratch per
// call. Under bf16 / fp16 the products take 16-bit operands: activations and gradients converted
// per product (dy once per op), weights stored in the math's type used directly (others converted
// once per op), the im2col matrix written in 16 bits; with too little scratch, the fp32 operands
// with the FAST_16BF/16F compute type (same rounding).
// Reductions (biases, norms' statistics and parameter gradients) use fixed partitions and fixed
// orders: no atomics, the same bytes on every run.
#include <math.h>
#include <stdint.h>

#include "tensor/cuda/common.cuh"

#define FP(t) ((t) ? (float *)(t)->data : (float *)NULL)
#define CFP(t) ((t) ? (const float *)(t)->data : (const float *)NULL)

// ---- column sums: y[j] += Σ_r x[r·cols + j] -----------------------------------------------------

#define COLSUM_ROWS 256  // rows per partial

// Stage 1: part[chunk, j] = Σ over the chunk's rows, one thread per (chunk, column), rows in order.
__global__ void k_colsum_part(int64_t rows, int64_t cols, int64_t nchunk, float *part, const float *x)
{
    SD_CU_LOOP(i, nchunk * cols) {
        int64_t j = (int64_t)i % cols, ch = (int64_t)i / cols;
        int64_t r0 = ch * COLSUM_ROWS, r1 = r0 + COLSUM_ROWS < rows ? r0 + COLSUM_ROWS : rows;
        float s = 0;
        for (int64_t r = r0; r < r1; r++) s += x[r * cols + j];
        part[i] = s;
    }
}

__global__ void k_colsum_final(int64_t cols, int64_t nchunk, float *y, const float *part)
{
    SD_CU_LOOP(j, cols) {
        float s = 0;
        for (int64_t ch = 0; ch < nchunk; ch++) s += part[ch * cols + (int64_t)j];
        y[j] += s;
    }
}

static int colsum(sd_ctx *ctx, float *y, const float *x, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0) return SD_OK;
    int64_t nchunk = (rows + COLSUM_ROWS - 1) / COLSUM_ROWS;
    size_t mark = sd_arena_mark(&ctx->scratch);
    float *part = sd_cu_scratch<float>(ctx, (size_t)(nchunk * cols), "bias gradient");
    if (!part) return SD_ENOMEM;
    int rc = SD_OK;
    do {
        SD_CU_GRID(k_colsum_part, nchunk * cols, rows, cols, nchunk, part, x);
        SD_CU_GRID(k_colsum_final, cols, cols, nchunk, y, part);
    } while (0);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

// y[r, j] = b[j] (bias rows before a gemm with beta = 1)
__global__ void k_bias_rows(size_t n, int64_t cols, float *y, const float *b)
{
    SD_CU_LOOP(i, n) y[i] = b[(int64_t)i % cols];
}

// y[n, c, p] = b[c]
__global__ void k_bias_chan(size_t n, int64_t c, int64_t p, float *y, const float *b)
{
    SD_CU_LOOP(i, n) y[i] = b[((int64_t)i / p) % c];
}

// ---- linear, matmul -------------------------------------------------------------------------------

extern "C" int sd_cuda_linear(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    sd_cu_op wo = sd_cu_weight_op(ctx, w, &rc);
    if (!wo.p) { sd_arena_reset(&ctx->scratch, mark); return rc; }
    int64_t in = w->shape[1], out = w->shape[0], r = in ? sd_tensor_numel(x) / in : sd_tensor_numel(y) / (out ? out : 1);
    if (b) {
        int64_t n = r * out;
        if (n) {
            SD_CU_KERNEL(sd_cuda_blocks((size_t)n, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), k_bias_rows)(
                (size_t)n, out, FP(y), CFP(b));
            cudaError_t e = cudaGetLastError();
            if (e != cudaSuccess) { sd_arena_reset(&ctx->scratch, mark); return sd_cuda_fail(e, "launching bias"); }
        }
    }
    rc = sd_cu_gemm_x(ctx, 0, 1, r, out, in, 1.0f, sd_cu_f32op(CFP(x)), in, 0, wo, in, 0, b ? 1.0f : 0.0f, FP(y),
                      out, 0, 1);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

extern "C" int sd_cuda_linear_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                                  const sd_tensor *x, const sd_tensor *w)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    sd_cu_op wo = sd_cu_f32op(NULL);
    if (dx) {
        wo = sd_cu_weight_op(ctx, w, &rc);
        if (!wo.p) { sd_arena_reset(&ctx->scratch, mark); return rc; }
    }
    int64_t in = w->shape[1], out = w->shape[0], r = out ? sd_tensor_numel(dy) / out : 0;
    // dy in the math's operand type once for both products
    sd_cu_op dyo = dx || dw ? sd_cu_to_math(ctx, CFP(dy), (size_t)(r * out)) : sd_cu_f32op(CFP(dy));
    if (dx) rc = sd_cu_gemm_x(ctx, 0, 0, r, in, out, 1.0f, dyo, out, 0, wo, in, 0, 1.0f, FP(dx), in, 0, 1);
    if (!rc && dw)
        rc = sd_cu_gemm_x(ctx, 1, 0, out, in, r, 1.0f, dyo, out, 0, sd_cu_f32op(CFP(x)), in, 0, 1.0f, FP(dw), in, 0, 1);
    if (!rc && db) rc = colsum(ctx, FP(db), CFP(dy), r, out);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

extern "C" int sd_cuda_matmul(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a, const sd_tensor *b,
                              int trans_b, float alpha, float beta)
{
    int64_t m = c->shape[c->ndim - 2], n = c->shape[c->ndim - 1];
    int64_t k = trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t batch = (m > 0 && n > 0) ? sd_tensor_numel(c) / (m * n) : 0;
    int64_t sa = a->ndim > 2 ? m * k : 0, sb = b->ndim > 2 ? k * n : 0;
    int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
    return sd_cu_gemm_x(ctx, trans_a, trans_b, m, n, k, alpha, sd_cu_f32op(CFP(a)), lda, sa, sd_cu_f32op(CFP(b)), ldb,
                        sb, beta, FP(c), n, m * n, batch);
}

// ---- conv2d: im2col + gemm ---------------------------------------------------------------------

struct conv_geom {
    int64_t n, cin, h, w, cout, kh, kw, ho, wo;
    int stride, pt, pl;
};

// col [nb, cin·kh·kw, ho·wo] of images n0 .. n0+nb-1 (zero padding). I: the index type (int
// when every index fits, which makes the divisions much cheaper; int64_t otherwise). T: the
// column matrix's element type (float, or the 16-bit operand type of the bf16 / fp16 GEMM math:
// rounded to nearest even here, so the product reads it with no conversion pass).
__device__ __forceinline__ void col_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void col_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void col_store(__half *p, float v) { *p = __float2half(v); }

template <typename I, typename T>
__global__ void k_im2col(size_t total, conv_geom g, int64_t n0, T *col, const float *x)
{
    const I p = (I)(g.ho * g.wo), K = (I)(g.cin * g.kh * g.kw), kh = (I)g.kh, kw = (I)g.kw, wo = (I)g.wo;
    const I h = (I)g.h, w = (I)g.w, cin = (I)g.cin, st = (I)g.stride, pt = (I)g.pt, pl = (I)g.pl;
    const float *xb = x + n0 * g.cin * g.h * g.w;
    SD_CU_LOOP(i, total) {
        I ii = (I)i;
        I pp = ii % p, kk = (ii / p) % K, img = ii / (p * K);
        I c = kk / (kh * kw), ki = (kk / kw) % kh, kj = kk % kw;
        I oh = pp / wo, ow = pp % wo;
        I ih = oh * st - pt + ki, iw = ow * st - pl + kj;
        float v = 0;
        if (ih >= 0 && ih < h && iw >= 0 && iw < w) v = xb[((img * cin + c) * h + ih) * w + iw];
        col_store(col + i, v);
    }
}

// The same with one block row per (image, column row kk): blockIdx.z = image, blockIdx.y = kk,
// threads over the output pixels. The channel and kernel offsets are uniform per block, so a thread
// does one division instead of six (the element-wise kernel above is bound by its integer divisions
// on a GPU: 1.2 ms per SD 320-channel 3×3 conv at batch 16, 64×64, on an H200).
template <typename T>
__global__ void k_im2col_rows(conv_geom g, int64_t n0, T *col, const float *x)
{
    const int p = (int)(g.ho * g.wo), wo = (int)g.wo, kh = (int)g.kh, kw = (int)g.kw;
    const int pp = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (pp >= p) return;
    const int kk = (int)blockIdx.y, img = (int)blockIdx.z;
    const int c = kk / (kh * kw), ki = (kk / kw) % kh, kj = kk % kw;
    const int oh = pp / wo, ow = pp - oh * wo;
    const int ih = oh * (int)g.stride - (int)g.pt + ki, iw = ow * (int)g.stride - (int)g.pl + kj;
    float v = 0;
    if (ih >= 0 && ih < (int)g.h && iw >= 0 && iw < (int)g.w)
        v = x[(((size_t)(n0 + img) * (size_t)g.cin + (size_t)c) * (size_t)g.h + (size_t)ih) * (size_t)g.w + (size_t)iw];
    col_store(col + ((size_t)img * (size_t)gridDim.y + (size_t)kk) * (size_t)p + (size_t)pp, v);
}

// dx[n0 + img] += col2im(dcol[img]): every input pixel gathers the columns it fed (no atomics).
template <typename I>
__global__ void k_col2im(size_t total, conv_geom g, int64_t n0, float *dx, const float *dcol)
{
    const I p = (I)(g.ho * g.wo), K = (I)(g.cin * g.kh * g.kw), kh = (I)g.kh, kw = (I)g.kw, wo = (I)g.wo;
    const I ho = (I)g.ho, h = (I)g.h, w = (I)g.w, cin = (I)g.cin, st = (I)g.stride, pt = (I)g.pt, pl = (I)g.pl;
    float *dxb = dx + n0 * g.cin * g.h * g.w;
    SD_CU_LOOP(i, total) {
        I ii = (I)i;
        I iw = ii % w, ih = (ii / w) % h, c = (ii / (w * h)) % cin, img = ii / (w * h * cin);
        const float *dc = dcol + (size_t)img * (size_t)K * (size_t)p;
        float s = 0;
        for (I ki = 0; ki < kh; ki++) {
            I th = ih + pt - ki;
            if (th < 0 || th % st) continue;
            I oh = th / st;
            if (oh >= ho) continue;
            for (I kj = 0; kj < kw; kj++) {
                I tw = iw + pl - kj;
                if (tw < 0 || tw % st) continue;
                I ow = tw / st;
                if (ow >= wo) continue;
                s += dc[((c * kh + ki) * kw + kj) * p + oh * wo + ow];
            }
        }
        dxb[ii] += s;
    }
}

// Launch im2col / col2im over `total` elements with int indices when they fit.
template <typename T>
static int launch_im2col_t(size_t total, const conv_geom &g, int64_t n0, T *col, const float *x)
{
    if (!total) return SD_OK;
    int64_t p = g.ho * g.wo, K = g.cin * g.kh * g.kw, nb = (int64_t)(total / (size_t)(p * K));
    if (p < INT32_MAX && K <= 65535 && nb <= 65535 && (int64_t)total == nb * p * K) {
        dim3 grid((unsigned)((p + SD_CU_THREADS - 1) / SD_CU_THREADS), (unsigned)K, (unsigned)nb);
        SD_CU_KERNEL(grid, SD_CU_THREADS, 0, sd_cuda_stream(), k_im2col_rows<T>)(g, n0, col, x);
        SD_CU_LAUNCH("im2col");
        return SD_OK;
    }
    unsigned blocks = sd_cuda_blocks(total, SD_CU_THREADS);
    // the input index reaches cnt·cin·h·w (more than total for a strided 1×1 conv)
    size_t xmax = total / (size_t)(g.kh * g.kw * g.ho * g.wo) * (size_t)(g.h * g.w);
    if (total < (size_t)INT32_MAX && xmax < (size_t)INT32_MAX)
        SD_CU_KERNEL(blocks, SD_CU_THREADS, 0, sd_cuda_stream(), k_im2col<int, T>)(total, g, n0, col, x);
    else
        SD_CU_KERNEL(blocks, SD_CU_THREADS, 0, sd_cuda_stream(), k_im2col<int64_t, T>)(total, g, n0, col, x);
    SD_CU_LAUNCH("im2col");
    return SD_OK;
}

// The column matrix in element type ct.
static int launch_im2col(size_t total, const conv_geom &g, int64_t n0, void *col, sd_cu_elt ct, const float *x)
{
    switch (ct) {
    case SD_CU_BF16: return launch_im2col_t(total, g, n0, (__nv_bfloat16 *)col, x);
    case SD_CU_F16: return launch_im2col_t(total, g, n0, (__half *)col, x);
    default: return launch_im2col_t(total, g, n0, (float *)col, x);
    }
}

// The column matrix of type ct at element offset off as a GEMM operand.
static sd_cu_op col_op(void *col, sd_cu_elt ct, int64_t off)
{
    sd_cu_op o = { col, ct, ct == SD_CU_F32 ? (const float *)col : NULL };
    return sd_cu_op_at(o, off);
}

static int launch_col2im(size_t total, const conv_geom &g, int64_t n0, float *dx, const float *dcol)
{
    if (!total) return SD_OK;
    unsigned blocks = sd_cuda_blocks(total, SD_CU_THREADS);
    // the column index reaches cnt·K·P: int only when that fits too
    size_t colmax = total / (size_t)(g.h * g.w) * (size_t)(g.kh * g.kw) * (size_t)(g.ho * g.wo);
    if (total < (size_t)INT32_MAX && colmax < (size_t)INT32_MAX)
        SD_CU_KERNEL(blocks, SD_CU_THREADS, 0, sd_cuda_stream(), k_col2im<int>)(total, g, n0, dx, dcol);
    else
        SD_CU_KERNEL(blocks, SD_CU_THREADS, 0, sd_cuda_stream(), k_col2im<int64_t>)(total, g, n0, dx, dcol);
    SD_CU_LAUNCH("col2im");
    return SD_OK;
}

static conv_geom conv_plan(const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, sd_conv2d_geom gg)
{
    conv_geom g;
    g.n = x->shape[0]; g.cin = x->shape[1]; g.h = x->shape[2]; g.w = x->shape[3];
    g.cout = w->shape[0]; g.kh = w->shape[2]; g.kw = w->shape[3];
    g.ho = y->shape[2]; g.wo = y->shape[3];
    g.stride = gg.stride; g.pt = gg.pad_t; g.pl = gg.pad_l;
    return g;
}

// 1×1, stride 1, no padding: the input is its own im2col matrix.
static int conv_is_pointwise(const conv_geom &g)
{
    return g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pt == 0 && g.pl == 0 && g.ho == g.h && g.wo == g.w;
}

// Images per chunk so that `bufs` buffers taking per_img bytes per image together fit in the free
// scratch.
static int64_t conv_chunk(sd_ctx *ctx, const conv_geom &g, size_t per_img, int bufs)
{
    size_t per = per_img + 64 * (size_t)bufs;
    size_t fr = sd_cu_scratch_free(ctx);
    int64_t nb = per ? (int64_t)(fr / per) : g.n;
    if (nb > g.n) nb = g.n;
    return nb;
}

extern "C" int sd_cuda_conv2d(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                              sd_conv2d_geom gg)
{
    if (sd_cu_conv_cudnn_wanted()) {  // SD_CUDA_CONV=cudnn (conv_cudnn.cu)
        int crc = sd_cu_conv2d_cudnn(ctx, y, x, w, b, gg);
        if (crc != SD_CU_FALLBACK) return crc;
    }
    conv_geom g = conv_plan(x, w, y, gg);
    int64_t K = g.cin * g.kh * g.kw, P = g.ho * g.wo;
    if (sd_tensor_numel(y) == 0) return SD_OK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc;
    sd_cu_op wo = sd_cu_weight_op(ctx, w, &rc);
    if (!wo.p) { sd_arena_reset(&ctx->scratch, mark); return rc; }
    if (b) SD_CU_GRID(k_bias_chan, sd_tensor_numel(y), (size_t)sd_tensor_numel(y), g.cout, P, FP(y), CFP(b));
    float beta = b ? 1.0f : 0.0f;
    if (conv_is_pointwise(g)) {
        rc = sd_cu_gemm_x(ctx, 0, 0, g.cout, P, K, 1.0f, wo, K, 0, sd_cu_f32op(CFP(x)), P, g.cin * P, beta, FP(y), P,
                          g.cout * P, g.n);
    } else {
        // the column matrix in the weight operand's type: 16 bits under the bf16 / fp16 math
        sd_cu_elt ct = wo.t;
        size_t es = sd_cu_elt_size(ct);
        int64_t nb = conv_chunk(ctx, g, (size_t)(K * P) * es, 1);
        if (nb < 1) {
            rc = sd_err(SD_ENOMEM, "CUDA conv2d: op scratch arena too small for one image's im2col (%zu bytes, %zu free)",
                        (size_t)(K * P) * es, sd_cu_scratch_free(ctx));
        } else {
            void *col = sd_cu_scratch<char>(ctx, (size_t)(nb * K * P) * es, "conv2d");
            rc = col ? SD_OK : SD_ENOMEM;
            for (int64_t n0 = 0; !rc && n0 < g.n; n0 += nb) {
                int64_t cnt = g.n - n0 < nb ? g.n - n0 : nb;
                size_t tot = (size_t)(cnt * K * P);
                rc = launch_im2col(tot, g, n0, col, ct, CFP(x));
                if (rc) break;
                rc = sd_cu_gemm_x(ctx, 0, 0, g.cout, P, K, 1.0f, wo, K, 0, col_op(col, ct, 0), P, K * P, beta,
                                  FP(y) + n0 * g.cout * P, P, g.cout * P, cnt);
            }
        }
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

extern "C" int sd_cuda_conv2d_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy,
                                  const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom gg)
{
    if (sd_cu_conv_cudnn_wanted()) {  // SD_CUDA_CONV=cudnn: clears dx / dw when cuDNN computed them
        int crc = sd_cu_conv2d_bwd_cudnn(ctx, &dx, &dw, dy, x, w, gg);
        if (crc) return crc;
    }
    conv_geom g = conv_plan(x, w, dy, gg);
    int64_t K = g.cin * g.kh * g.kw, P = g.ho * g.wo;
    if (sd_tensor_numel(dy) == 0) return SD_OK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    int rc = SD_OK;
    sd_cu_op wo = sd_cu_f32op(NULL);
    if (dx) {
        wo = sd_cu_weight_op(ctx, w, &rc);
        if (!wo.p) { sd_arena_reset(&ctx->scratch, mark); return rc; }
    }
    if (db) {
        // dy [n, cout, p] summed to [1, cout, 1]
        int64_t ysh[3] = { 1, g.cout, 1 }, xsh[3] = { g.n, g.cout, P };
        rc = sd_cu_sum_to(ctx, FP(db), 3, ysh, 1.0f, CFP(dy), NULL, 3, xsh);
    }
    if (!rc && (dx || dw)) {
        if (conv_is_pointwise(g)) {
            // dy in the math's operand type once for both products
            sd_cu_op dyo = sd_cu_to_math(ctx, CFP(dy), (size_t)(g.n * g.cout * P));
            // dW += dY_n · X_nᵀ per image, in image order; dX_n += Wᵀ · dY_n
            for (int64_t i = 0; !rc && dw && i < g.n; i++)
                rc = sd_cu_gemm_x(ctx, 0, 1, g.cout, K, P, 1.0f, sd_cu_op_at(dyo, i * g.cout * P), P, 0,
                                  sd_cu_f32op(CFP(x) + i * K * P), P, 0, 1.0f, FP(dw), K, 0, 1);
            if (!rc && dx)
                rc = sd_cu_gemm_x(ctx, 1, 0, K, P, g.cout, 1.0f, wo, K, 0, dyo, P, g.cout * P, 1.0f, FP(dx), P, K * P,
                                  g.n);
        } else {
            // Under the bf16 / fp16 math (and a weight operand in its type): the column matrix in
            // 16 bits, and each chunk of dy converted once for both products.
            sd_cu_elt e = sd_cu_math_elt();
            int m16 = e != SD_CU_F32 && (!dx || wo.t == e);
            int64_t nb = 0;
            for (;;) {
                size_t es = m16 ? 2 : 4;
                size_t per = (dw ? (size_t)(K * P) * es : 0) + (dx ? (size_t)(K * P) * 4 : 0) +
                             (m16 ? (size_t)(g.cout * P) * 2 : 0);
                nb = conv_chunk(ctx, g, per, (dw ? 1 : 0) + (dx ? 1 : 0) + m16);
                if (nb >= 1 || !m16) break;
                m16 = 0;  // not even one image in 16 bits: the fp32 layout (its products fall back)
            }
            sd_cu_elt ct = m16 ? e : SD_CU_F32;
            size_t es = sd_cu_elt_size(ct);
            int bufs = (dw ? 1 : 0) + (dx ? 1 : 0);
            if (nb < 1) {
                rc = sd_err(SD_ENOMEM, "CUDA conv2d_bwd: op scratch arena too small for one image's im2col "
                            "(%zu bytes, %zu free)", (size_t)(K * P) * sizeof(float) * bufs, sd_cu_scratch_free(ctx));
            } else {
                void *col = dw ? sd_cu_scratch<char>(ctx, (size_t)(nb * K * P) * es, "conv2d_bwd") : NULL;
                float *dcol = dx ? sd_cu_scratch<float>(ctx, (size_t)(nb * K * P), "conv2d_bwd") : NULL;
                void *dy16 = m16 ? sd_cu_scratch<uint16_t>(ctx, (size_t)(nb * g.cout * P), "conv2d_bwd") : NULL;
                if ((dw && !col) || (dx && !dcol) || (m16 && !dy16)) rc = SD_ENOMEM;
                for (int64_t n0 = 0; !rc && n0 < g.n; n0 += nb) {
                    int64_t cnt = g.n - n0 < nb ? g.n - n0 : nb;
                    size_t tot = (size_t)(cnt * K * P);
                    sd_cu_op dyc = sd_cu_f32op(CFP(dy) + n0 * g.cout * P);
                    if (m16) {
                        rc = sd_cu_convert_elts(dy16, e, dyc.p, SD_CU_F32, (size_t)(cnt * g.cout * P));
                        if (rc) break;
                        dyc.p = dy16;
                        dyc.t = e;
                    }
                    if (dw) {
                        rc = launch_im2col(tot, g, n0, col, ct, CFP(x));
                        if (rc) break;
                        for (int64_t i = 0; !rc && i < cnt; i++)
                            rc = sd_cu_gemm_x(ctx, 0, 1, g.cout, K, P, 1.0f, sd_cu_op_at(dyc, i * g.cout * P), P, 0,
                                              col_op(col, ct, i * K * P), P, 0, 1.0f, FP(dw), K, 0, 1);
                    }
                    if (!rc && dx) {
                        rc = sd_cu_gemm_x(ctx, 1, 0, K, P, g.cout, 1.0f, wo, K, 0, dyc, P, g.cout * P, 0.0f, dcol, P,
                                          K * P, cnt);
                        if (rc) break;
                        size_t nx = (size_t)(cnt * g.cin * g.h * g.w);
                        rc = launch_col2im(nx, g, n0, FP(dx), dcol);
                        if (rc) break;
                    }
                }
            }
        }
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

// ---- block reductions (blockDim.x = 256) --------------------------------------------------------

__device__ __forceinline__ double bsum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ void bsum2(double *a, double *b, double *sh)
{
    sh[threadIdx.x] = *a;
    sh[256 + threadIdx.x] = *b;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            sh[threadIdx.x] += sh[threadIdx.x + s];
            sh[256 + threadIdx.x] += sh[256 + threadIdx.x + s];
        }
        __syncthreads();
    }
    *a = sh[0];
    *b = sh[256];
    __syncthreads();
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float dsilu_f(float x)
{
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

// ---- group norm: one block per (sample, group) ------------------------------------------------------

__global__ void k_group_norm(int64_t ngrp, int64_t g, int64_t cg, int64_t s, float eps, int silu, float *y,
                             float *mean, float *rstd, const float *x, const float *gamma, const float *beta)
{
    __shared__ double sh[256];
    int64_t m = cg * s;
    for (int64_t ng = blockIdx.x; ng < ngrp; ng += gridDim.x) {
        const float *xg = x + ng * m;
        double a = 0;
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) a += (double)xg[i];
        double mu = bsum(a, sh) / (double)m;
        double v = 0;
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) { double d = (double)xg[i] - mu; v += d * d; }
        v = bsum(v, sh) / (double)m;
        float rs = (float)(1.0 / sqrt(v + (double)eps)), mr = (float)mu;
        if (threadIdx.x == 0) { mean[ng] = mr; rstd[ng] = rs; }
        int64_t g0 = (ng % g) * cg;
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
            int64_t ch = g0 + i / s;
            float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f;
            float aa = rs * ga, bb = be - mr * rs * ga;
            float val = xg[i] * aa + bb;
            y[ng * m + i] = silu ? silu_f(val) : val;
        }
    }
}

extern "C" int sd_cuda_group_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x,
                                  const sd_tensor *gamma, const sd_tensor *beta, int groups, float eps, sd_act act)
{
    int64_t n = x->shape[0], c = x->shape[1], s = 1;
    for (int i = 2; i < x->ndim; i++) s *= x->shape[i];
    int64_t ngrp = n * groups;
    if (!ngrp || !c || !s) return SD_OK;
    SD_CU_KERNEL((unsigned)(ngrp > 65535 * 16 ? 65535 * 16 : ngrp), 256, 0, sd_cuda_stream(), k_group_norm)(
        ngrp, groups, c / groups, s, eps, act == SD_ACT_SILU, FP(y), FP(mean), FP(rstd), CFP(x), CFP(gamma),
        CFP(beta));
    SD_CU_LAUNCH("group_norm");
    return SD_OK;
}

// Per (sample, group): channel sums Σ gz·xhat, Σ gz into part [2, n, c], then dx.
__global__ void k_group_norm_bwd(int64_t ngrp, int64_t g, int64_t c, int64_t cg, int64_t s, int silu, float *dx,
                                 float *part, int64_t n, const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, const float *beta)
{
    __shared__ double sh[512];
    int64_t m = cg * s;
    for (int64_t ng = blockIdx.x; ng < ngrp; ng += gridDim.x) {
        const float *xg = x + ng * m, *dyg = dy + ng * m;
        float mu = mean[ng], rs = rstd[ng];
        int64_t nn = ng / g, g0 = (ng % g) * cg;
        double sa = 0, sb = 0;
        for (int64_t ci = 0; ci < cg; ci++) {
            float ga = gamma ? gamma[g0 + ci] : 1.0f, be = beta ? beta[g0 + ci] : 0.0f;
            const float *xc = xg + ci * s, *dyc = dyg + ci * s;
            double a = 0, b = 0;
            for (int64_t i = threadIdx.x; i < s; i += blockDim.x) {
                float xh = (xc[i] - mu) * rs;
                float gz = silu ? dyc[i] * dsilu_f(xh * ga + be) : dyc[i];
                a += (double)(gz * xh);
                b += (double)gz;
            }
            bsum2(&a, &b, sh);
            if (threadIdx.x == 0) {
                part[nn * c + g0 + ci] = (float)a;
                part[n * c + nn * c + g0 + ci] = (float)b;
            }
            sa += b * ga;
            sb += a * ga;
        }
        if (!dx) continue;
        float ma = (float)(sa / (double)m), mb = (float)(sb / (double)m);
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
            int64_t ch = g0 + i / s;
            float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f;
            float xh = (xg[i] - mu) * rs;
            float gz = silu ? dyg[i] * dsilu_f(xh * ga + be) : dyg[i];
            dx[ng * m + i] += rs * (gz * ga - ma - xh * mb);
        }
    }
}

__global__ void k_gn_param_grads(int64_t n, int64_t c, const float *part, float *dgamma, float *dbeta)
{
    SD_CU_LOOP(ch, c) {
        float a = 0, b = 0;
        for (int64_t nn = 0; nn < n; nn++) { a += part[nn * c + (int64_t)ch]; b += part[n * c + nn * c + (int64_t)ch]; }
        if (dgamma) dgamma[ch] += a;
        if (dbeta) dbeta[ch] += b;
    }
}

extern "C" int sd_cuda_group_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta,
                                      const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean,
                                      const sd_tensor *rstd, const sd_tensor *gamma, const sd_tensor *beta, int groups,
                                      sd_act act)
{
    int64_t n = x->shape[0], c = x->shape[1], s = 1;
    for (int i = 2; i < x->ndim; i++) s *= x->shape[i];
    int64_t ngrp = n * groups;
    if (!ngrp || !c || !s) return SD_OK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    float *part = sd_cu_scratch<float>(ctx, (size_t)(2 * n * c), "group_norm_bwd");
    if (!part) return SD_ENOMEM;
    int rc = SD_OK;
    do {
        SD_CU_KERNEL((unsigned)(ngrp > 65535 * 16 ? 65535 * 16 : ngrp), 256, 0, sd_cuda_stream(), k_group_norm_bwd)(
            ngrp, groups, c, c / groups, s, act == SD_ACT_SILU, FP(dx), part, n, CFP(dy), CFP(x), CFP(mean),
            CFP(rstd), CFP(gamma), CFP(beta));
        SD_CU_LAUNCH("group_norm_bwd");
        if (dgamma || dbeta) SD_CU_GRID(k_gn_param_grads, c, n, c, part, FP(dgamma), FP(dbeta));
    } while (0);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

// ---- layer norm: one block per row --------------------------------------------------------------------

__global__ void k_layer_norm(int64_t rows, int64_t c, float eps, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta)
{
    __shared__ double sh[256];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * c;
        double a = 0;
        for (int64_t i = threadIdx.x; i < c; i += blockDim.x) a += (double)xr[i];
        double mu = bsum(a, sh) / (double)c;
        double v = 0;
        for (int64_t i = threadIdx.x; i < c; i += blockDim.x) { double d = (double)xr[i] - mu; v += d * d; }
        v = bsum(v, sh) / (double)c;
        float rs = (float)(1.0 / sqrt(v + (double)eps)), mr = (float)mu;
        if (threadIdx.x == 0) { mean[r] = mr; rstd[r] = rs; }
        for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
            y[r * c + i] = (xr[i] - mr) * rs * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
    }
}

extern "C" int sd_cuda_layer_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x,
                                  const sd_tensor *gamma, const sd_tensor *beta, float eps)
{
    int64_t c = x->shape[x->ndim - 1], rows = c ? sd_tensor_numel(x) / c : 0;
    if (!rows) return SD_OK;
    SD_CU_KERNEL((unsigned)(rows > 65535 * 16 ? 65535 * 16 : rows), 256, 0, sd_cuda_stream(), k_layer_norm)(
        rows, c, eps, FP(y), FP(mean), FP(rstd), CFP(x), CFP(gamma), CFP(beta));
    SD_CU_LAUNCH("layer_norm");
    return SD_OK;
}

__global__ void k_layer_norm_bwd_dx(int64_t rows, int64_t c, float *dx, const float *dy, const float *x,
                                    const float *mean, const float *rstd, const float *gamma)
{
    __shared__ double sh[512];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * c, *dyr = dy + r * c;
        float mu = mean[r], rs = rstd[r];
        double sa = 0, sb = 0;
        for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
            float xh = (xr[i] - mu) * rs, g = dyr[i] * (gamma ? gamma[i] : 1.0f);
            sa += (double)g;
            sb += (double)(g * xh);
        }
        bsum2(&sa, &sb, sh);
        float ma = (float)(sa / (double)c), mb = (float)(sb / (double)c);
        for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
            float xh = (xr[i] - mu) * rs, g = dyr[i] * (gamma ? gamma[i] : 1.0f);
            dx[r * c + i] += rs * (g - ma - xh * mb);
        }
    }
}

#define LN_ROWBLK 64

// part [2, nblk, c]: per block of 64 rows, Σ dy·xhat and Σ dy for each column (rows in order).
__global__ void k_ln_param_part(int64_t rows, int64_t c, int64_t nblk, float *part, const float *dy, const float *x,
                                const float *mean, const float *rstd)
{
    SD_CU_LOOP(i, nblk * c) {
        int64_t col = (int64_t)i % c, blk = (int64_t)i / c;
        int64_t r0 = blk * LN_ROWBLK, r1 = r0 + LN_ROWBLK < rows ? r0 + LN_ROWBLK : rows;
        float a = 0, b = 0;
        for (int64_t r = r0; r < r1; r++) {
            float d = dy[r * c + col];
            a += d * ((x[r * c + col] - mean[r]) * rstd[r]);
            b += d;
        }
        part[i] = a;
        part[nblk * c + i] = b;
    }
}

__global__ void k_ln_param_final(int64_t c, int64_t nblk, const float *part, float *dgamma, float *dbeta)
{
    SD_CU_LOOP(i, c) {
        float a = 0, b = 0;
        for (int64_t blk = 0; blk < nblk; blk++) { a += part[blk * c + (int64_t)i]; b += part[nblk * c + blk * c + (int64_t)i]; }
        if (dgamma) dgamma[i] += a;
        if (dbeta) dbeta[i] += b;
    }
}

extern "C" int sd_cuda_layer_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta,
                                      const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean,
                                      const sd_tensor *rstd, const sd_tensor *gamma)
{
    int64_t c = x->shape[x->ndim - 1], rows = c ? sd_tensor_numel(x) / c : 0;
    if (!rows) return SD_OK;
    if (dx) {
        SD_CU_KERNEL((unsigned)(rows > 65535 * 16 ? 65535 * 16 : rows), 256, 0, sd_cuda_stream(), k_layer_norm_bwd_dx)(
            rows, c, FP(dx), CFP(dy), CFP(x), CFP(mean), CFP(rstd), CFP(gamma));
        SD_CU_LAUNCH("layer_norm_bwd");
    }
    if (!dgamma && !dbeta) return SD_OK;
    int64_t nblk = (rows + LN_ROWBLK - 1) / LN_ROWBLK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    float *part = sd_cu_scratch<float>(ctx, (size_t)(2 * nblk * c), "layer_norm_bwd");
    if (!part) return SD_ENOMEM;
    int rc = SD_OK;
    do {
        SD_CU_GRID(k_ln_param_part, nblk * c, rows, c, nblk, part, CFP(dy), CFP(x), CFP(mean), CFP(rstd));
        SD_CU_GRID(k_ln_param_final, c, c, nblk, part, FP(dgamma), FP(dbeta));
    } while (0);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}
