/* Compute device: selection, query, device memory and a few device kernels, callable from C.
 *
 * This API exists in every build. Built without CUDA (plain `make`), sd_device_count() is 0 and
 * every call that needs a GPU returns SD_EUNSUPPORTED with the message
 * "built without CUDA support (make CUDA=1)". Built with `make CUDA=1` (-DSD_CUDA), the calls go
 * to lib/tensor/cuda/; a machine without a usable GPU gives SD_EDEVICE "CUDA: no device (...)".
 * Every CUDA / cuBLAS failure is returned as SD_EDEVICE with the CUDA error string in the
 * detail message (sd_errmsg()).
 *
 * Model: one process uses one device, selected once with sd_device_init(), which creates one
 * stream and one cuBLAS handle. All kernels, gemms and copies are ordered on that stream.
 * Kernel entry points return as soon as the work is queued (errors of the launch itself are
 * reported; errors during execution are reported by the next synchronising call).
 * sd_device_copy_to_host() and sd_device_sync() wait for all queued work. Not thread-safe: call
 * from one thread.
 *
 * Pointers named d_* are device pointers (from sd_device_alloc), h_* are host pointers. */
#ifndef SD_TENSOR_DEVICE_H
#define SD_TENSOR_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SD_DEVICE_CPU (-1)   /* index that sd_device_parse() gives for "cpu" */

typedef struct sd_device_info {
    char name[256];          /* "NVIDIA H100 80GB HBM3" */
    int index;               /* CUDA device ordinal */
    int cc_major, cc_minor;  /* compute capability, e.g. 9.0 */
    int sm_count;            /* streaming multiprocessors */
    size_t total_bytes;      /* global memory */
    size_t free_bytes;       /* free global memory at the time of the query */
    int runtime_version;     /* CUDA runtime the library was built with, e.g. 13000 */
    int driver_version;      /* CUDA version the driver supports, e.g. 13000 */
} sd_device_info;

/* 1 when the library was built with CUDA=1, 0 otherwise. */
int sd_device_built_with_cuda(void);

/* Number of usable CUDA devices: 0 without a CUDA build, without a driver or without a GPU (the
 * reason is then left in sd_errmsg()). Never fails otherwise. */
int sd_device_count(void);

/* Properties of device `index` (0 .. count-1). Querying the free memory creates that device's
 * context. SD_EUNSUPPORTED without CUDA, SD_EDEVICE without a device, SD_EINVAL for a bad index. */
int sd_device_query(int index, sd_device_info *out);

/* Parse a --device value: "cpu" → SD_DEVICE_CPU, "cuda" → 0, "cuda:N" → N (N ≥ 0, decimal).
 * Only the syntax is checked (no CUDA needed); sd_device_init() checks that the device exists.
 * SD_EINVAL with a message naming the value otherwise. */
int sd_device_parse(const char *spec, int *index);

/* Fail fast before GPU work. SD_OK when `need` bytes plus a 256 MiB margin (CUDA context,
 * cuBLAS workspace, fragmentation) fit in `free_bytes`; otherwise SD_ENOMEM with the one-line
 * message "<what> needs about N GiB of GPU memory (<parts>), F GiB free on <dev_name>; <advice>".
 * `parts` says what the need is made of, `advice` what lowers it (both may be NULL). */
int sd_device_fit_check(size_t need, size_t free_bytes, const char *dev_name, const char *what,
                        const char *parts, const char *advice);
/* The same against device `index`'s free memory now (sd_device_query's errors pass through);
 * *info (may be NULL) gets the device's properties. */
int sd_device_fit(int index, size_t need, const char *what, const char *parts, const char *advice,
                  sd_device_info *info);
#define SD_DEVICE_FIT_MARGIN ((size_t)256 << 20)

/* Select device `index`, create the stream and the cuBLAS handle. Calling it again with the same
 * index is a no-op; a different index while initialised is SD_ESTATE (shut down first).
 * SD_EUNSUPPORTED "built without CUDA support (make CUDA=1)" without CUDA;
 * SD_EDEVICE "CUDA: no device ..." without a GPU; SD_EINVAL for an index ≥ count. */
int sd_device_init(int index);

/* Index of the initialised device, or SD_DEVICE_CPU when none is. */
int sd_device_current(void);

/* Wait for queued work, destroy the cuBLAS handle and the stream. Device memory still allocated
 * stays valid until sd_device_free(). Safe to call when not initialised. */
void sd_device_shutdown(void);

/* Arithmetic of the CUDA backend's matrix products (every linear, conv, attention product):
 *   SD_GEMM_FP32  fp32 operands and accumulation (CUBLAS_COMPUTE_32F; the default, no TF32)
 *   SD_GEMM_TF32  operands rounded to TF32 on the tensor cores, fp32 accumulation
 *   SD_GEMM_BF16  operands rounded to bf16 on the tensor cores, fp32 accumulation and output
 *   SD_GEMM_FP16  the same with fp16 operands
 * (Tensors stay fp32 in memory; only the products' inputs are rounded. TF32: cuBLAS's
 * COMPUTE_32F_FAST_TF32 on the fp32 operands. BF16 / FP16: 16-bit operands with COMPUTE_32F, the
 * fp32 ones rounded to nearest even into scratch per product, weights stored in the 16-bit type
 * used directly; COMPUTE_32F_FAST_16BF / _16F on the fp32 operands where the scratch is short.)
 * Process-wide; may be set before or after sd_device_init().
 * SD_EUNSUPPORTED without CUDA for anything but SD_GEMM_FP32. */
typedef enum { SD_GEMM_FP32 = 0, SD_GEMM_TF32, SD_GEMM_BF16, SD_GEMM_FP16 } sd_gemm_math;
int sd_device_set_gemm_math(sd_gemm_math m);
sd_gemm_math sd_device_gemm_math(void);
/* "fp32", "tf32", "bf16", "fp16" → *m; SD_EINVAL naming the value otherwise. sd_device_init() applies
 * the environment variable SD_CUDA_MATH this way when it is set. */
int sd_gemm_math_parse(const char *s, sd_gemm_math *m);

/* Wait until every queued kernel and copy has finished; reports asynchronous kernel errors. */
int sd_device_sync(void);

/* Device memory. sd_device_alloc() of 0 bytes gives *d_ptr = NULL and SD_OK. On failure *d_ptr
 * is NULL; running out of memory says how much was asked and how much is free. */
int sd_device_alloc(void **d_ptr, size_t bytes);
void sd_device_free(void *d_ptr);  /* NULL is fine */

/* Copies. to_device: the host buffer may be reused as soon as the call returns. to_host: waits for
 * all queued work and the copy. device_to_device and memset are queued on the stream. */
int sd_device_copy_to_device(void *d_dst, const void *h_src, size_t bytes);
int sd_device_copy_to_host(void *h_dst, const void *d_src, size_t bytes);
int sd_device_copy_device(void *d_dst, const void *d_src, size_t bytes);
int sd_device_memset(void *d_dst, int byte, size_t bytes);

/* d_y[i] = fmaf(a, d_x[i], d_y[i]) for i < n (one rounding: bit-exact with C's fmaf). */
int sd_device_axpy_f32(size_t n, float a, const float *d_x, float *d_y);

/* d_dst[i] = float(d_src[i]) for bf16 bit patterns (exact, NaN payloads kept, like sd_bf16_to_f32). */
int sd_device_bf16_to_f32(size_t n, const uint16_t *d_src, float *d_dst);
/* d_dst[i] = bf16(d_src[i]), round to nearest even, NaN → quiet NaN (bit-exact with sd_f32_to_bf16). */
int sd_device_f32_to_bf16(size_t n, const float *d_src, uint16_t *d_dst);

/* Row-major single-precision matrix product through cuBLAS, with fp32 compute (no TF32):
 *   C[m×n] = alpha · op(A) · op(B) + beta · C
 * op(A) is m×k (A stored k×m when trans_a), op(B) is k×n (B stored n×k when trans_b); lda, ldb,
 * ldc are the row strides (in elements) of A, B, C as stored, as in cblas_sgemm(CblasRowMajor).
 * Sizes must fit in an int; m, n, k = 0 are fine (C is then scaled by beta only when k = 0). */
int sd_device_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float *d_a, int64_t lda, const float *d_b, int64_t ldb, float beta,
                    float *d_c, int64_t ldc);

#ifdef __cplusplus
}
#endif

#endif
