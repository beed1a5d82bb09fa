/* Emulated CUDA build (tests/emu, make check): the subset of the CUDA runtime API that
 * lib/tensor/cuda/ uses, implemented on the host by tests/emu/lib/cuda_emu_runtime.cpp; device
 * semantics (threads, barriers, shared memory, 16-bit types, wmma) are tests/emu/cuda_emu.h.
 * "Device" memory is host memory from malloc, tracked (copies and cuBLAS operands must lie inside
 * an allocation), filled with 0xff bytes (NaN) when allocated, within a budget of
 * SD_EMU_CUDA_MIB MiB (default 81559, an H100's 80 GB). Streams run in order, synchronously.
 * SD_EMU_TRACE=1 prints every kernel launch (name, grid, block, dynamic shared memory) on stderr. */
#ifndef SD_TESTS_EMU_CUDA_RUNTIME_H
#define SD_TESTS_EMU_CUDA_RUNTIME_H

#include "../cuda_emu.h"

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidResourceHandle = 400,
};
typedef struct emu_stream *cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice,
                      cudaMemcpyDefault };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
static const unsigned cudaStreamNonBlocking = 1;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin;
    int major, minor, multiProcessorCount, maxThreadsPerBlock, warpSize;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMalloc(void **p, size_t bytes);
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) { return cudaMalloc((void **)p, bytes); }
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemsetAsync(void *dst, int byte, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);

/* ---- kernel launches (SD_CU_KERNEL in lib/tensor/cuda/common.cuh) ---- */

/* Records a launch error (cudaGetLastError) and the dynamic shared memory limit of a kernel. */
void emu_set_error(cudaError_t e);
size_t emu_func_smem_max(const void *fn);
void emu_func_set_smem_max(const void *fn, size_t v);
int emu_stream_ok(cudaStream_t s);
/* Is [p, p + n) inside one device allocation? (the emulated cuDNN's operand checks) */
int emu_on_device(const void *p, size_t n);

template <class... KArgs>
static inline cudaError_t cudaFuncSetAttribute(void (*fn)(KArgs...), cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > EMU_SMEM_OPTIN) {
        emu_set_error(cudaErrorInvalidValue);
        return cudaErrorInvalidValue;
    }
    emu_func_set_smem_max((const void *)fn, (size_t)value);
    return cudaSuccess;
}

template <class... KArgs> struct emu_launch_obj {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    bool nosync;
    void (*kernel)(KArgs...);
    const char *name;
    template <class... Args> void operator()(Args &&...args) const
    {
        if (!emu_stream_ok(stream)) {
            emu_set_error(cudaErrorInvalidResourceHandle);
            return;
        }
        int c = emu_check_config(grid, block, smem, emu_func_smem_max((const void *)kernel));
        if (c) {
            emu_set_error(c == 1 ? cudaErrorInvalidConfiguration : cudaErrorInvalidValue);
            return;
        }
        static const bool trace = getenv("SD_EMU_TRACE") && *getenv("SD_EMU_TRACE");
        if (trace)
            fprintf(stderr, "cuda_emu: launch %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", name, grid.x, grid.y,
                    grid.z, block.x, block.y, block.z, smem);
        void (*k)(KArgs...) = kernel;
        /* every thread gets its own copy of the arguments, converted to the parameter types */
        emu_run(grid, block, smem, nosync, name, [&]() { k(args...); });
    }
};
template <class... KArgs>
static inline emu_launch_obj<KArgs...> emu_launcher_(dim3 grid, dim3 block, size_t smem, cudaStream_t s, bool nosync,
                                                     void (*kernel)(KArgs...), const char *name)
{
    return emu_launch_obj<KArgs...>{ grid, block, smem, s, nosync, kernel, name };
}
#define emu_launcher(grid, block, smem, stream, nosync, ...) \
    emu_launcher_((grid), (block), (smem), (stream), (nosync), (__VA_ARGS__), #__VA_ARGS__)

#endif
