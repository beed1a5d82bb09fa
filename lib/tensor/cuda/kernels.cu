// Element-wise kernels: axpy and bf16 <-> f32 conversion.
#include <stdint.h>

#include "tensor/cuda/common.cuh"

static const unsigned THREADS = 256;

__global__ void axpy_f32_kernel(size_t n, float a, const float *__restrict__ x, float *__restrict__ y)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fmaf_rn(a, x[i], y[i]);  // one rounding, like C's fmaf
}

__global__ void bf16_to_f32_kernel(size_t n, const uint16_t *__restrict__ src, float *__restrict__ dst)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

// Same rule as sd_f32_to_bf16 (lib/base/half.h): NaN → quiet NaN with the high payload bits kept,
// otherwise round to nearest even (overflow rounds to inf).
__global__ void f32_to_bf16_kernel(size_t n, const float *__restrict__ src, uint16_t *__restrict__ dst)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t u = __float_as_uint(src[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            dst[i] = (uint16_t)((u >> 16) | 0x40);
        } else {
            u += 0x7fffu + ((u >> 16) & 1u);
            dst[i] = (uint16_t)(u >> 16);
        }
    }
}

extern "C" int sd_cuda_axpy_f32(size_t n, float a, const float *d_x, float *d_y)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    SD_CU_KERNEL(sd_cuda_blocks(n, THREADS), THREADS, 0, sd_cuda_stream(), axpy_f32_kernel)(n, a, d_x, d_y);
    SD_CU_LAUNCH("axpy_f32");
    return SD_OK;
}

extern "C" int sd_cuda_bf16_to_f32(size_t n, const uint16_t *d_src, float *d_dst)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    SD_CU_KERNEL(sd_cuda_blocks(n, THREADS), THREADS, 0, sd_cuda_stream(), bf16_to_f32_kernel)(n, d_src, d_dst);
    SD_CU_LAUNCH("bf16_to_f32");
    return SD_OK;
}

extern "C" int sd_cuda_f32_to_bf16(size_t n, const float *d_src, uint16_t *d_dst)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    SD_CU_KERNEL(sd_cuda_blocks(n, THREADS), THREADS, 0, sd_cuda_stream(), f32_to_bf16_kernel)(n, d_src, d_dst);
    SD_CU_LAUNCH("f32_to_bf16");
    return SD_OK;
}
