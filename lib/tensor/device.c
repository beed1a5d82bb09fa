/* Device API (device.h): argument checks here, the work in lib/tensor/cuda/ when built with
 * CUDA=1, "built without CUDA support" errors otherwise (or host memory with SD_FAKE_CUDA=1). */
#include "tensor/device.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#ifdef SD_CUDA
#include "tensor/cuda/cuda.h"
#else
#include <cblas.h>
#include <stdio.h>
#include <unistd.h>

#include "base/half.h"
#endif

int sd_device_parse(const char *spec, int *index)
{
    if (!spec || !index) return sd_err(SD_EINVAL, "--device: missing value (cpu, cuda or cuda:N)");
    if (!strcmp(spec, "cpu")) {
        *index = SD_DEVICE_CPU;
        return SD_OK;
    }
    if (!strcmp(spec, "cuda")) {
        *index = 0;
        return SD_OK;
    }
    if (!strncmp(spec, "cuda:", 5) && spec[5]) {
        const char *p = spec + 5;
        for (const char *q = p; *q; q++)
            if (!isdigit((unsigned char)*q)) goto bad;
        errno = 0;
        long v = strtol(p, NULL, 10);
        if (errno || v > INT_MAX) goto bad;
        *index = (int)v;
        return SD_OK;
    }
bad:
    return sd_err(SD_EINVAL, "--device: invalid value '%s' (expected cpu, cuda or cuda:N)", spec);
}

int sd_gemm_math_parse(const char *s, sd_gemm_math *m)
{
    static const char *const names[] = { "fp32", "tf32", "bf16", "fp16" };
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, names[i])) {
            *m = (sd_gemm_math)i;
            return SD_OK;
        }
    return sd_err(SD_EINVAL, "invalid GEMM math '%s' (expected fp32, tf32, bf16 or fp16)", s ? s : "");
}

int sd_device_fit_check(size_t need, size_t free_bytes, const char *dev_name, const char *what,
                        const char *parts, const char *advice)
{
    if (need <= free_bytes && free_bytes - need >= SD_DEVICE_FIT_MARGIN) return SD_OK;
    const double gib = 1024.0 * 1024 * 1024;
    return sd_err(SD_ENOMEM, "%s needs about %.2f GiB of GPU memory%s%s%s, %.2f GiB free on %s%s%s",
                  what ? what : "this job", (double)need / gib, parts && *parts ? " (" : "",
                  parts && *parts ? parts : "", parts && *parts ? ")" : "", (double)free_bytes / gib,
                  dev_name && *dev_name ? dev_name : "the GPU", advice && *advice ? "; " : "",
                  advice && *advice ? advice : "");
}

int sd_device_fit(int index, size_t need, const char *what, const char *parts, const char *advice,
                  sd_device_info *info)
{
    sd_device_info di;
    int rc = sd_device_query(index, &di);
    if (rc) return rc;
    if (info) *info = di;
    return sd_device_fit_check(need, di.free_bytes, di.name, what, parts, advice);
}

#ifndef SD_CUDA

#define NOCUDA() sd_err(SD_EUNSUPPORTED, "built without CUDA support (make CUDA=1)")

/* SD_FAKE_CUDA=1 (a build without CUDA; for tests): one "CUDA" device whose memory is host memory
 * and whose ops run the CPU kernels (ops.c dispatches to them in such a build), so every device code
 * path of the tools (moves between host and device, uploads, downloads, device contexts and
 * arenas, the memory check) runs on a machine without a GPU. The numbers are the CPU's:
 * sd_device_set_gemm_math's tensor-core math is accepted and not emulated. */
static int fake(void)
{
    const char *e = getenv("SD_FAKE_CUDA");
    return e && *e && strcmp(e, "0") != 0;
}
static int fake_current = SD_DEVICE_CPU;
static sd_gemm_math fake_math = SD_GEMM_FP32;

int sd_device_built_with_cuda(void) { return fake(); }
int sd_device_count(void)
{
    if (fake()) return 1;
    NOCUDA();
    return 0;
}
int sd_device_query(int index, sd_device_info *out)
{
    if (!fake()) return NOCUDA();
    if (!out) return sd_err(SD_EINVAL, "sd_device_query: out is NULL");
    if (index != 0) return sd_err(SD_EINVAL, "CUDA: no device cuda:%d (1 device: cuda:0)", index);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "fake CUDA device (host memory, SD_FAKE_CUDA)");
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    out->total_bytes = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : 0;
    out->free_bytes = avail > 0 && psz > 0 ? (size_t)avail * (size_t)psz : 0;
    const char *mib = getenv("SD_FAKE_CUDA_MIB");   /* a small device, for the tools' fail-fast checks */
    if (mib && *mib) out->total_bytes = out->free_bytes = (size_t)strtoull(mib, NULL, 10) << 20;
    out->sm_count = 1;
    return SD_OK;
}
int sd_device_init(int index)
{
    if (!fake()) return NOCUDA();
    if (index != 0) return sd_err(SD_EINVAL, "CUDA: no device cuda:%d (1 device: cuda:0)", index);
    fake_current = 0;
    return SD_OK;
}
int sd_device_current(void) { return fake() ? fake_current : SD_DEVICE_CPU; }
void sd_device_shutdown(void) { fake_current = SD_DEVICE_CPU; }
int sd_device_sync(void) { return fake() ? SD_OK : NOCUDA(); }
int sd_device_set_gemm_math(sd_gemm_math m)
{
    if (m != SD_GEMM_FP32 && !fake()) return NOCUDA();
    fake_math = m;
    return SD_OK;
}
sd_gemm_math sd_device_gemm_math(void) { return fake_math; }
int sd_device_alloc(void **d_ptr, size_t bytes)
{
    if (d_ptr) *d_ptr = NULL;
    if (!fake()) return NOCUDA();
    if (!d_ptr) return sd_err(SD_EINVAL, "sd_device_alloc: d_ptr is NULL");
    if (posix_memalign(d_ptr, 256, bytes ? bytes : 1)) {
        *d_ptr = NULL;
        return sd_err(SD_ENOMEM, "fake CUDA: out of memory for %zu bytes", bytes);
    }
    return SD_OK;
}
void sd_device_free(void *d_ptr)
{
    if (fake()) free(d_ptr);
}
int sd_device_copy_to_device(void *d_dst, const void *h_src, size_t bytes)
{
    if (!fake()) return NOCUDA();
    if (bytes) memmove(d_dst, h_src, bytes);
    return SD_OK;
}
int sd_device_copy_to_host(void *h_dst, const void *d_src, size_t bytes)
{
    return sd_device_copy_to_device(h_dst, d_src, bytes);
}
int sd_device_copy_device(void *d_dst, const void *d_src, size_t bytes)
{
    return sd_device_copy_to_device(d_dst, d_src, bytes);
}
int sd_device_memset(void *d_dst, int byte, size_t bytes)
{
    if (!fake()) return NOCUDA();
    if (bytes) memset(d_dst, byte, bytes);
    return SD_OK;
}
int sd_device_axpy_f32(size_t n, float a, const float *d_x, float *d_y)
{
    if (!fake()) return NOCUDA();
    if (n && (!d_x || !d_y)) return sd_err(SD_EINVAL, "sd_device_axpy_f32: NULL vector");
    for (size_t i = 0; i < n; i++) d_y[i] += a * d_x[i];
    return SD_OK;
}
int sd_device_bf16_to_f32(size_t n, const uint16_t *d_src, float *d_dst)
{
    if (!fake()) return NOCUDA();
    sd_bf16_to_f32_n(d_src, d_dst, n);
    return SD_OK;
}
int sd_device_f32_to_bf16(size_t n, const float *d_src, uint16_t *d_dst)
{
    if (!fake()) return NOCUDA();
    sd_f32_to_bf16_n(d_src, d_dst, n);
    return SD_OK;
}
int sd_device_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float *d_a, int64_t lda, const float *d_b, int64_t ldb, float beta,
                    float *d_c, int64_t ldc)
{
    if (!fake()) return NOCUDA();
    if (m <= 0 || n <= 0) return SD_OK;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m,
                (int)n, (int)k, alpha, d_a, (int)lda, d_b, (int)ldb, beta, d_c, (int)ldc);
    return SD_OK;
}

#else /* SD_CUDA */

#define NEED(p, what) do { if (!(p)) return sd_err(SD_EINVAL, "%s: %s is NULL", __func__, what); } while (0)

int sd_device_built_with_cuda(void) { return 1; }
int sd_device_count(void) { return sd_cuda_count(); }

int sd_device_query(int index, sd_device_info *out)
{
    NEED(out, "out");
    return sd_cuda_query(index, out);
}

int sd_device_init(int index)
{
    if (index < 0) return sd_err(SD_EINVAL, "CUDA: invalid device index %d", index);
    int rc = sd_cuda_init(index);
    sd_gemm_math m;
    const char *e = getenv("SD_CUDA_MATH");
    if (!rc && e && *e) {
        if ((rc = sd_gemm_math_parse(e, &m))) return sd_err_prefix(rc, "SD_CUDA_MATH");
        sd_cuda_gemm_math = (int)m;
    }
    return rc;
}

int sd_device_current(void) { return sd_cuda_current(); }
void sd_device_shutdown(void) { sd_cuda_shutdown(); }
int sd_device_sync(void) { return sd_cuda_sync(); }
int sd_device_set_gemm_math(sd_gemm_math m)
{
    if ((int)m < SD_GEMM_FP32 || (int)m > SD_GEMM_FP16) return sd_err(SD_EINVAL, "unknown GEMM math %d", (int)m);
    sd_cuda_gemm_math = (int)m;
    return SD_OK;
}
sd_gemm_math sd_device_gemm_math(void) { return (sd_gemm_math)sd_cuda_gemm_math; }

int sd_device_alloc(void **d_ptr, size_t bytes)
{
    NEED(d_ptr, "d_ptr");
    *d_ptr = NULL;
    if (!bytes) return SD_OK;
    return sd_cuda_alloc(d_ptr, bytes);
}

void sd_device_free(void *d_ptr) { sd_cuda_free(d_ptr); }

int sd_device_copy_to_device(void *d_dst, const void *h_src, size_t bytes)
{
    if (!bytes) return SD_OK;
    NEED(d_dst, "d_dst");
    NEED(h_src, "h_src");
    return sd_cuda_copy_to_device(d_dst, h_src, bytes);
}

int sd_device_copy_to_host(void *h_dst, const void *d_src, size_t bytes)
{
    if (!bytes) return SD_OK;
    NEED(h_dst, "h_dst");
    NEED(d_src, "d_src");
    return sd_cuda_copy_to_host(h_dst, d_src, bytes);
}

int sd_device_copy_device(void *d_dst, const void *d_src, size_t bytes)
{
    if (!bytes) return SD_OK;
    NEED(d_dst, "d_dst");
    NEED(d_src, "d_src");
    return sd_cuda_copy_device(d_dst, d_src, bytes);
}

int sd_device_memset(void *d_dst, int byte, size_t bytes)
{
    if (!bytes) return SD_OK;
    NEED(d_dst, "d_dst");
    return sd_cuda_memset(d_dst, byte, bytes);
}

int sd_device_axpy_f32(size_t n, float a, const float *d_x, float *d_y)
{
    if (!n) return SD_OK;
    NEED(d_x, "d_x");
    NEED(d_y, "d_y");
    return sd_cuda_axpy_f32(n, a, d_x, d_y);
}

int sd_device_bf16_to_f32(size_t n, const uint16_t *d_src, float *d_dst)
{
    if (!n) return SD_OK;
    NEED(d_src, "d_src");
    NEED(d_dst, "d_dst");
    return sd_cuda_bf16_to_f32(n, d_src, d_dst);
}

int sd_device_f32_to_bf16(size_t n, const float *d_src, uint16_t *d_dst)
{
    if (!n) return SD_OK;
    NEED(d_src, "d_src");
    NEED(d_dst, "d_dst");
    return sd_cuda_f32_to_bf16(n, d_src, d_dst);
}

int sd_device_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float *d_a, int64_t lda, const float *d_b, int64_t ldb, float beta,
                    float *d_c, int64_t ldc)
{
    if (m < 0 || n < 0 || k < 0 || m > INT_MAX || n > INT_MAX || k > INT_MAX)
        return sd_err(SD_ERANGE, "sgemm: sizes m=%lld n=%lld k=%lld out of range", (long long)m,
                      (long long)n, (long long)k);
    /* Row strides of the stored matrices: A is m×k (k×m when transposed), B k×n (n×k), C m×n. */
    int64_t acols = trans_a ? m : k, bcols = trans_b ? k : n;
    if (lda < (acols > 1 ? acols : 1) || ldb < (bcols > 1 ? bcols : 1) || ldc < (n > 1 ? n : 1) ||
        lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX)
        return sd_err(SD_EINVAL, "sgemm: bad row strides lda=%lld ldb=%lld ldc=%lld for %s%s "
                      "m=%lld n=%lld k=%lld", (long long)lda, (long long)ldb, (long long)ldc,
                      trans_a ? "A^T" : "A", trans_b ? "·B^T" : "·B", (long long)m, (long long)n,
                      (long long)k);
    if (!m || !n) return SD_OK;
    NEED(d_c, "d_c");
    if (k) {  /* k = 0: C = beta·C, A and B are not read */
        NEED(d_a, "d_a");
        NEED(d_b, "d_b");
    }
    return sd_cuda_sgemm(!!trans_a, !!trans_b, (int)m, (int)n, (int)k, alpha, d_a, (int)lda, d_b,
                         (int)ldb, beta, d_c, (int)ldc);
}

#endif
