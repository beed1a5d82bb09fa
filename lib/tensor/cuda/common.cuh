// Internal to lib/tensor/cuda/: error checking and the shared stream / cuBLAS handle.
#ifndef SD_TENSOR_CUDA_COMMON_CUH
#define SD_TENSOR_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "base/error.h"
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

#endif
