// CUDA backend runtime: device query and selection, stream, cuBLAS handle, memory, copies.
#include <stdio.h>
#include <string.h>

#include "tensor/cuda/common.cuh"

static int g_dev = SD_DEVICE_CPU;  // initialised device, or SD_DEVICE_CPU
static cudaStream_t g_stream;
static cublasHandle_t g_blas;

int sd_cuda_fail(cudaError_t e, const char *what)
{
    cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
    return sd_err(SD_EDEVICE, "CUDA: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int sd_cublas_fail(cublasStatus_t s, const char *what)
{
    return sd_err(SD_EDEVICE, "CUDA: %s: %s (%s)", what, cublasGetStatusString(s),
                  cublasGetStatusName(s));
}

int sd_cuda_ready(void)
{
    if (g_dev == SD_DEVICE_CPU)
        return sd_err(SD_ESTATE, "CUDA: device not initialised (sd_device_init was not called)");
    return SD_OK;
}

cudaStream_t sd_cuda_stream(void) { return g_stream; }
cublasHandle_t sd_cuda_blas(void) { return g_blas; }

extern "C" {
int sd_cuda_gemm_math = 0;
}

cublasComputeType_t sd_cu_compute_type(void)
{
    switch (sd_cuda_gemm_math) {
    case 1: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case 2: return CUBLAS_COMPUTE_32F_FAST_16BF;
    case 3: return CUBLAS_COMPUTE_32F_FAST_16F;
    default: return CUBLAS_COMPUTE_32F;
    }
}

extern "C" int sd_cuda_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        sd_err(SD_EDEVICE, "CUDA: no device (%s)", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0) sd_err(SD_EDEVICE, "CUDA: no device (no CUDA-capable device is detected)");
    return n;
}

static int no_device(int index, int n)
{
    if (n == 0) return SD_EDEVICE;  // sd_cuda_count() left "CUDA: no device (...)"
    return sd_err(SD_EINVAL, "CUDA: no device cuda:%d (%d device%s: cuda:0..cuda:%d)", index, n,
                  n == 1 ? "" : "s", n - 1);
}

extern "C" int sd_cuda_query(int index, sd_device_info *out)
{
    int n = sd_cuda_count();
    if (index < 0 || index >= n) return no_device(index, n);
    cudaDeviceProp p;
    SD_CU(cudaGetDeviceProperties(&p, index));
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", p.name);
    out->index = index;
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->sm_count = p.multiProcessorCount;
    out->total_bytes = p.totalGlobalMem;
    SD_CU(cudaRuntimeGetVersion(&out->runtime_version));
    SD_CU(cudaDriverGetVersion(&out->driver_version));
    // Free memory needs the device's context: switch to it and back.
    int prev = 0;
    SD_CU(cudaGetDevice(&prev));
    SD_CU(cudaSetDevice(index));
    size_t fr = 0, tot = 0;
    cudaError_t e = cudaMemGetInfo(&fr, &tot);
    cudaError_t e2 = cudaSetDevice(prev);
    if (e != cudaSuccess) return sd_cuda_fail(e, "cudaMemGetInfo");
    if (e2 != cudaSuccess) return sd_cuda_fail(e2, "cudaSetDevice");
    out->free_bytes = fr;
    return SD_OK;
}

extern "C" int sd_cuda_current(void) { return g_dev; }

extern "C" int sd_cuda_init(int index)
{
    if (g_dev == index) return SD_OK;
    if (g_dev != SD_DEVICE_CPU)
        return sd_err(SD_ESTATE, "CUDA: cuda:%d is already initialised (cannot switch to cuda:%d)",
                      g_dev, index);
    int n = sd_cuda_count();
    if (index < 0 || index >= n) return no_device(index, n);
    SD_CU(cudaSetDevice(index));
    SD_CU(cudaFree(0));  // create the context now, so its errors are reported here
    SD_CU(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    cublasStatus_t s = cublasCreate(&g_blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(g_blas, g_stream);
    // No global TF32: each gemm names its compute type (sd_cu_compute_type(), fp32 by default).
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        if (g_blas) cublasDestroy(g_blas);
        g_blas = NULL;
        cudaStreamDestroy(g_stream);
        g_stream = NULL;
        return sd_cublas_fail(s, "creating the cuBLAS handle");
    }
    g_dev = index;
    return SD_OK;
}

extern "C" void sd_cuda_shutdown(void)
{
    if (g_dev == SD_DEVICE_CPU) return;
    cudaStreamSynchronize(g_stream);
    sd_cu_conv_cudnn_release();
    cublasDestroy(g_blas);
    cudaStreamDestroy(g_stream);
    cudaGetLastError();
    g_blas = NULL;
    g_stream = NULL;
    g_dev = SD_DEVICE_CPU;
}

extern "C" int sd_cuda_sync(void)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    SD_CU(cudaStreamSynchronize(g_stream));
    SD_CU(cudaGetLastError());
    return SD_OK;
}

extern "C" int sd_cuda_alloc(void **d_ptr, size_t bytes)
{
    *d_ptr = NULL;
    int rc = sd_cuda_ready();
    if (rc) return rc;
    cudaError_t e = cudaMalloc(d_ptr, bytes);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        *d_ptr = NULL;
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        cudaGetLastError();
        return sd_err(SD_EDEVICE, "CUDA: out of memory allocating %zu MiB on cuda:%d "
                      "(%zu MiB free of %zu MiB)", bytes >> 20, g_dev, fr >> 20, tot >> 20);
    }
    if (e != cudaSuccess) {
        *d_ptr = NULL;
        return sd_cuda_fail(e, "cudaMalloc");
    }
    return SD_OK;
}

extern "C" void sd_cuda_free(void *d_ptr)
{
    if (d_ptr && cudaFree(d_ptr) != cudaSuccess) cudaGetLastError();
}

extern "C" int sd_cuda_copy_to_device(void *d_dst, const void *h_src, size_t bytes)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    // From pageable host memory the call returns once the source has been staged, so the
    // caller may reuse it; for pinned memory that is not so, hence the explicit wait.
    SD_CU(cudaMemcpyAsync(d_dst, h_src, bytes, cudaMemcpyHostToDevice, g_stream));
    SD_CU(cudaStreamSynchronize(g_stream));
    return SD_OK;
}

extern "C" int sd_cuda_copy_to_host(void *h_dst, const void *d_src, size_t bytes)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    SD_CU(cudaMemcpyAsync(h_dst, d_src, bytes, cudaMemcpyDeviceToHost, g_stream));
    SD_CU(cudaStreamSynchronize(g_stream));
    return SD_OK;
}

extern "C" int sd_cuda_copy_device(void *d_dst, const void *d_src, size_t bytes)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    SD_CU(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, g_stream));
    return SD_OK;
}

extern "C" int sd_cuda_memset(void *d_dst, int byte, size_t bytes)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    SD_CU(cudaMemsetAsync(d_dst, byte, bytes, g_stream));
    return SD_OK;
}
