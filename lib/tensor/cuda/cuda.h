/* Internal: the CUDA backend's C entry points (defined in the .cu files of lib/tensor/cuda/, C linkage).
 * Only lib/tensor/device.c (and later the op dispatch) includes this, and only under SD_CUDA.
 * Arguments arrive already validated (non-NULL pointers, n > 0, sizes in range); these functions
 * check every CUDA / cuBLAS call and map failures to SD_EDEVICE with the CUDA error string. */
#ifndef SD_TENSOR_CUDA_CUDA_H
#define SD_TENSOR_CUDA_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/device.h"

#ifdef __cplusplus
extern "C" {
#endif

int sd_cuda_count(void);
int sd_cuda_query(int index, sd_device_info *out);
int sd_cuda_init(int index);
int sd_cuda_current(void);
void sd_cuda_shutdown(void);
int sd_cuda_sync(void);
/* sd_gemm_math of the matrix products (device.h); read by every cuBLAS call */
extern int sd_cuda_gemm_math;
/* cuBLAS products run so far with 16-bit operands (the bf16 / fp16 math) and with fp32 operands
 * (every other product, the fallback of the 16-bit math included); for tests and diagnosis */
extern unsigned long long sd_cuda_gemm_count16, sd_cuda_gemm_count32;

int sd_cuda_alloc(void **d_ptr, size_t bytes);
void sd_cuda_free(void *d_ptr);
int sd_cuda_copy_to_device(void *d_dst, const void *h_src, size_t bytes);
int sd_cuda_copy_to_host(void *h_dst, const void *d_src, size_t bytes);
int sd_cuda_copy_device(void *d_dst, const void *d_src, size_t bytes);
int sd_cuda_memset(void *d_dst, int byte, size_t bytes);

int sd_cuda_axpy_f32(size_t n, float a, const float *d_x, float *d_y);
int sd_cuda_bf16_to_f32(size_t n, const uint16_t *d_src, float *d_dst);
int sd_cuda_f32_to_bf16(size_t n, const float *d_src, uint16_t *d_dst);

/* Row-major sgemm, dimensions already checked to fit in int. */
int sd_cuda_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *d_a,
                  int lda, const float *d_b, int ldb, float beta, float *d_c, int ldc);

/* SD_CUDA_CONV=cudnn (conv_cudnn.cu), for tests: cuDNN calls made (forward, backward data,
 * backward filter), conv2d calls (or their dx/dw parts) that fell back to im2col, and whether cuDNN
 * was loaded (1), could not be (-1) or was not tried (0), since the last reset. */
typedef struct sd_cuda_conv_stats {
    long fwd, bwd_data, bwd_filter, fallback;
    int loaded;
} sd_cuda_conv_stats;
void sd_cuda_conv_stats_get(sd_cuda_conv_stats *s);
/* Forget the cached SD_CUDA_CONV, the library, the handle, cached plans, the counters and which
 * warnings were given (the next convolution reads the environment again). */
void sd_cuda_conv_reset(void);

#ifdef __cplusplus
}
#endif

#endif
