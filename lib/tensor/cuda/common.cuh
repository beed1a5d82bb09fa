// Internal to lib/tensor/cuda/: error checking, the shared stream / cuBLAS handle, launch helpers,
// scratch, and the matrix products with typed operands (gemm.cu: 16-bit operands under the bf16 /
// fp16 GEMM math).
#ifndef SD_TENSOR_CUDA_COMMON_CUH
#define SD_TENSOR_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "base/error.h"
#include "tensor/backend.h"
}
#include "tensor/cuda/cuda.h"

// Set the detail message "CUDA: <what>: <error string>" and return SD_EDEVICE.
int sd_cuda_fail(cudaError_t e, const char *what);
int sd_cublas_fail(cublasStatus_t s, const char *what);

// Return SD_EDEVICE from the calling function when a CUDA / cuBLAS call fails.
#define SD_CU(call) do { cudaError_t sd_e_ = (call); \
    if (sd_e_ != cudaSuccess) return sd_cuda_fail(sd_e_, #call); } while (0)
#define SD_CUBLAS(call) do { cublasStatus_t sd_s_ = (call); \
    if (sd_s_ != CUBLAS_STATUS_SUCCESS) return sd_cublas_fail(sd_s_, #call); } while (0)
// After a kernel launch: report a bad launch configuration or an earlier sticky error.
#define SD_CU_LAUNCH(name) do { cudaError_t sd_e_ = cudaGetLastError(); \
    if (sd_e_ != cudaSuccess) return sd_cuda_fail(sd_e_, "launching " name); } while (0)

// The stream and cuBLAS handle created by sd_cuda_init(); valid while initialised.
// Entry points call sd_cuda_ready() first: SD_ESTATE when sd_device_init() was not called.
int sd_cuda_ready(void);
cudaStream_t sd_cuda_stream(void);
cublasHandle_t sd_cuda_blas(void);

// Launch geometry for a grid-stride loop over n elements.
static inline unsigned sd_cuda_blocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return b > 65535u * 16u ? 65535u * 16u : (unsigned)b;
}

// ---- helpers of the op kernels (ops_*.cu) ----------------------------------------------------

static const unsigned SD_CU_THREADS = 256;

// Grid-stride loop over [0, n).
#define SD_CU_LOOP(i, n) for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
                              i += (size_t)gridDim.x * blockDim.x)

// Kernel launch: SD_CU_KERNEL(grid, block, smem, stream, kernel)(args...) is
// kernel<<<grid, block, smem, stream>>>(args...); the emulated build (tests/emu/include, g++, no
// chevrons) runs it on the CPU. SD_CU_KERNEL_NOSYNC: the same for a kernel that never synchronises
// its block (no __syncthreads/__syncwarp/shuffles), which the emulator may run as plain calls.
#ifdef SD_CUDA_EMU
#define SD_CU_KERNEL(grid, block, smem, stream, ...) emu_launcher((grid), (block), (smem), (stream), false, &__VA_ARGS__)
#define SD_CU_KERNEL_NOSYNC(grid, block, smem, stream, ...) emu_launcher((grid), (block), (smem), (stream), true, &__VA_ARGS__)
#else
#define SD_CU_KERNEL(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define SD_CU_KERNEL_NOSYNC(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

// Launch a grid-stride kernel over n elements on the stream (nothing for n = 0). The kernel must
// not synchronise its block.
#define SD_CU_GRID(kernel, n, ...) do { size_t sd_n_ = (size_t)(n); if (sd_n_) { \
    SD_CU_KERNEL_NOSYNC(sd_cuda_blocks(sd_n_, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), kernel)(__VA_ARGS__); \
    SD_CU_LAUNCH(#kernel); } } while (0)

// Sum of v over the block (blockDim.x a power of two ≤ 256, sh 256 doubles of shared memory): a
// fixed tree, so the same inputs give the same bits; every thread gets the sum.
__device__ __forceinline__ double block_sum_d(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

// Scratch from the context's device arena (stack discipline: callers reset to their mark).
// NULL with an SD_ENOMEM message when the arena is exhausted.
template <class T> static inline T *sd_cu_scratch(sd_ctx *ctx, size_t n, const char *what)
{
    size_t bytes = n * sizeof(T);
    T *p = (T *)sd_arena_alloc(&ctx->scratch, bytes > 0 ? bytes : 1);
    if (!p)
        sd_err(SD_ENOMEM, "CUDA %s: op scratch arena exhausted (need %zu bytes, %zu of %zu in use)", what,
               n * sizeof(T), ctx->scratch.used, ctx->scratch.cap);
    return p;
}

// Bytes still free in the scratch arena (after alignment).
static inline size_t sd_cu_scratch_free(const sd_ctx *ctx)
{
    size_t off = (ctx->scratch.used + 63) & ~(size_t)63;
    return off >= ctx->scratch.cap ? 0 : ctx->scratch.cap - off;
}

// cuBLAS compute type of the current GEMM math (device.h sd_device_set_gemm_math; runtime.cu).
cublasComputeType_t sd_cu_compute_type(void);

// ---- matrix products (gemm.cu) ----------------------------------------------------------------
//
// Under the bf16 / fp16 GEMM math (sd_cuda_gemm_math 2 / 3) the products take real 16-bit operands:
// fp32 operands are rounded to the math's 16-bit type (nearest even) into scratch, operands already
// in that type (weights stored in it, im2col columns written in it) are used as they are, and
// cuBLAS runs with 16-bit A/B, fp32 C and CUBLAS_COMPUTE_32F. When the scratch cannot hold a
// converted copy the product falls back to fp32 operands with the FAST_16BF/16F compute type (the
// same rounding of the operands, only slower). Under math fp32 / TF32 the fp32 operands go to
// cuBLAS unchanged, as before.

// Element type of a GEMM operand.
enum sd_cu_elt { SD_CU_F32 = 0, SD_CU_BF16 = 1, SD_CU_F16 = 2 };

// A GEMM operand: data p of type t; f32: the same values in fp32 with the same layout (element
// offsets, leading dimension and stride) when known (the fp32 source of a converted copy, or p
// itself), else NULL (a weight stored in 16 bits, an im2col matrix written in 16 bits).
struct sd_cu_op {
    const void *p;
    sd_cu_elt t;
    const float *f32;
};

static inline sd_cu_op sd_cu_f32op(const float *p)
{
    sd_cu_op o = { p, SD_CU_F32, p };
    return o;
}
static inline size_t sd_cu_elt_size(sd_cu_elt t) { return t == SD_CU_F32 ? 4 : 2; }
// The operand off elements further on (both views).
static inline sd_cu_op sd_cu_op_at(sd_cu_op o, int64_t off)
{
    o.p = (const char *)o.p + off * (int64_t)sd_cu_elt_size(o.t);
    if (o.f32) o.f32 += off;
    return o;
}

// The operand type of the current GEMM math: SD_CU_BF16 (bf16), SD_CU_F16 (fp16), else SD_CU_F32.
sd_cu_elt sd_cu_math_elt(void);

// Row-major strided-batched product, C fp32:
//   C_i[m×n] = alpha·op(A_i)·op(B_i) + beta·C_i,  X_i = X + i·sX  (sX = 0: shared)
// op(A) is m×k (A stored k×m with ld lda when ta), op(B) is k×n (B stored n×k when tb); strides and
// leading dimensions count elements of the operand's own type. Operands not in sd_cu_math_elt()'s
// type are converted into ctx's scratch (only the elements read: each batch entry's rows packed;
// one copy for a shared operand); ctx NULL: no conversion (the fp32 fallback). The scratch is back
// at its mark on return. Implemented as the column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ.
int sd_cu_gemm_x(sd_ctx *ctx, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, sd_cu_op a,
                 int64_t lda, int64_t sa, sd_cu_op b, int64_t ldb, int64_t sb, float beta, float *c, int64_t ldc,
                 int64_t sc, int64_t batch);

// The same with fp32 operands.
static inline int sd_cu_gemm_x(sd_ctx *ctx, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                               const float *a, int64_t lda, int64_t sa, const float *b, int64_t ldb, int64_t sb,
                               float beta, float *c, int64_t ldc, int64_t sc, int64_t batch)
{
    return sd_cu_gemm_x(ctx, ta, tb, m, n, k, alpha, sd_cu_f32op(a), lda, sa, sd_cu_f32op(b), ldb, sb, beta, c, ldc, sc,
                        batch);
}

// n contiguous fp32 values as an operand of the current math: under bf16 / fp16 a rounded copy in
// scratch (f32 = x), else, or when the scratch is short (no error then), x itself.
sd_cu_op sd_cu_to_math(sd_ctx *ctx, const float *x, size_t n);

// Convert n contiguous values of type st to dt (nearest even) on the stream.
int sd_cu_convert_elts(void *dst, sd_cu_elt dt, const void *src, sd_cu_elt st, size_t n);

// f32 view of a linear/conv weight: the data itself, or a converted copy (f16/bf16) in scratch.
const float *sd_cu_weight_f32(sd_ctx *ctx, const sd_tensor *w, int *rc);

// A linear/conv weight as a GEMM operand of the current math: under bf16 / fp16 the weight itself
// when stored in the math's type, else a copy converted to it in scratch (once per op); under
// fp32 / TF32, or when the scratch cannot hold that copy, sd_cu_weight_f32(). p NULL on error (*rc).
sd_cu_op sd_cu_weight_op(sd_ctx *ctx, const sd_tensor *w, int *rc);

// y[e] += alpha·Σ x·w over the axes where y (shape ysh, ynd) is broadcast against x (xnd, xsh);
// w may be NULL (= 1) and has x's shape. Deterministic (fixed reduction order, no atomics).
int sd_cu_sum_to(sd_ctx *ctx, float *y, int ynd, const int64_t *ysh, float alpha, const float *x, const float *w,
                 int xnd, const int64_t *xsh);

// ---- SD_CUDA_CONV=cudnn (conv_cudnn.cu) ---------------------------------------------------------

// Returned by sd_cu_conv2d_cudnn when the im2col path must do the call (warned once per reason).
#define SD_CU_FALLBACK 1
// SD_CUDA_CONV=cudnn in the environment (read once).
extern "C" int sd_cu_conv_cudnn_wanted(void);
// sd_cuda_conv2d through cuDNN: SD_OK, an error, or SD_CU_FALLBACK (y may hold the bias then).
extern "C" int sd_cu_conv2d_cudnn(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w,
                                  const sd_tensor *b, sd_conv2d_geom gg);
// dx += / dw += through cuDNN; sets *dx / *dw to NULL for the parts it computed (the rest, and db,
// is the im2col path's). SD_OK or an error.
extern "C" int sd_cu_conv2d_bwd_cudnn(sd_ctx *ctx, sd_tensor **dx, sd_tensor **dw, const sd_tensor *dy,
                                      const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom gg);
// Destroy the cuDNN handle and cached descriptors (sd_cuda_shutdown).
void sd_cu_conv_cudnn_release(void);

#endif
