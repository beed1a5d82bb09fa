/* sd_tensor descriptors, host/device allocation, arenas and the execution context. */
#include "tensor/tensor.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "base/error.h"
#include "tensor/device.h"

size_t sd_dtype_size(sd_dtype dt)
{
    switch (dt) {
    case SD_F32: return 4;
    case SD_F16: return 2;
    case SD_BF16: return 2;
    case SD_I32: return 4;
    case SD_F8E4M3: return 1;
    }
    return 0;
}

const char *sd_dtype_name(sd_dtype dt)
{
    switch (dt) {
    case SD_F32: return "f32";
    case SD_F16: return "f16";
    case SD_BF16: return "bf16";
    case SD_I32: return "i32";
    case SD_F8E4M3: return "f8_e4m3fn";
    }
    return "?";
}

sd_tensor sd_tensor_wrap(void *data, sd_dtype dt, int ndim, const int64_t *shape)
{
    sd_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = (uint8_t)dt;
    t.device = SD_DEV_CPU;
    if (ndim < 0 || ndim > SD_MAX_DIMS) { t.ndim = -1; return t; }
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) { t.ndim = -1; return t; }
        t.shape[i] = shape[i];
    }
    return t;
}

int sd_tensor_valid(const sd_tensor *t)
{
    return t && t->ndim >= 0 && t->ndim <= SD_MAX_DIMS && sd_dtype_size((sd_dtype)t->dtype) != 0;
}

int64_t sd_tensor_numel(const sd_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t sd_tensor_nbytes(const sd_tensor *t)
{
    return (size_t)sd_tensor_numel(t) * sd_dtype_size((sd_dtype)t->dtype);
}

int64_t sd_tensor_dim(const sd_tensor *t, int axis)
{
    if (axis < 0) axis += t->ndim;
    if (axis < 0 || axis >= t->ndim) return -1;
    return t->shape[axis];
}

int sd_tensor_same_shape(const sd_tensor *a, const sd_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

const char *sd_tensor_describe(const sd_tensor *t, char *buf, size_t bufsize)
{
    size_t n = 0;
    if (!bufsize) return buf;
    buf[0] = 0;
    n += (size_t)snprintf(buf + n, bufsize - n, "[");
    for (int i = 0; i < t->ndim && n < bufsize; i++)
        n += (size_t)snprintf(buf + n, bufsize - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (n < bufsize)
        snprintf(buf + n, bufsize - n, "] %s%s", sd_dtype_name((sd_dtype)t->dtype),
                 t->device == SD_DEV_CUDA ? " cuda" : "");
    return buf;
}

int sd_tensor_reshape(const sd_tensor *t, int ndim, const int64_t *shape, sd_tensor *out)
{
    if (ndim < 0 || ndim > SD_MAX_DIMS) return sd_err(SD_EINVAL, "reshape: %d axes (max %d)", ndim, SD_MAX_DIMS);
    int64_t n = sd_tensor_numel(t), known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == -1) {
            if (infer >= 0) return sd_err(SD_EINVAL, "reshape: more than one -1");
            infer = i;
        } else if (shape[i] < 0) {
            return sd_err(SD_EINVAL, "reshape: negative size");
        } else {
            known *= shape[i];
        }
    }
    sd_tensor r = *t;
    r.ndim = ndim;
    for (int i = 0; i < ndim; i++) r.shape[i] = shape[i];
    if (infer >= 0) {
        if (known == 0 || n % known) {
            char b[128];
            return sd_err(SD_EINVAL, "reshape: cannot infer size for %s", sd_tensor_describe(t, b, sizeof b));
        }
        r.shape[infer] = n / known;
    } else if (known != n) {
        char b[128];
        return sd_err(SD_EINVAL, "reshape: %s has %lld elements, new shape %lld",
                      sd_tensor_describe(t, b, sizeof b), (long long)n, (long long)known);
    }
    for (int i = ndim; i < SD_MAX_DIMS; i++) r.shape[i] = 0;
    *out = r;
    return SD_OK;
}

int sd_tensor_narrow0(const sd_tensor *t, int64_t start, int64_t count, sd_tensor *out)
{
    if (t->ndim < 1) return sd_err(SD_EINVAL, "narrow: scalar tensor");
    if (start < 0 || count < 0 || start + count > t->shape[0])
        return sd_err(SD_ERANGE, "narrow: rows [%lld, %lld) outside [0, %lld)", (long long)start,
                      (long long)(start + count), (long long)t->shape[0]);
    sd_tensor r = *t;
    size_t row = sd_tensor_nbytes(t) / (t->shape[0] ? (size_t)t->shape[0] : 1);
    if (t->shape[0] == 0) row = 0;
    r.data = (uint8_t *)t->data + (size_t)start * row;
    r.shape[0] = count;
    *out = r;
    return SD_OK;
}

int sd_tensor_index0(const sd_tensor *t, int64_t i, sd_tensor *out)
{
    sd_tensor r;
    int rc = sd_tensor_narrow0(t, i, 1, &r);
    if (rc) return rc;
    for (int a = 0; a + 1 < t->ndim; a++) r.shape[a] = r.shape[a + 1];
    r.shape[t->ndim - 1] = 0;
    r.ndim = t->ndim - 1;
    *out = r;
    return SD_OK;
}

int sd_tensor_alloc(sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape)
{
    *t = sd_tensor_wrap(NULL, dt, ndim, shape);
    if (!sd_tensor_valid(t)) return sd_err(SD_EINVAL, "tensor_alloc: bad shape");
    size_t n = sd_tensor_nbytes(t);
    size_t sz = (n + 63) & ~(size_t)63;
    if (sz == 0) sz = 64;
    void *p = aligned_alloc(64, sz);
    if (!p) return sd_err(SD_ENOMEM, "tensor_alloc: out of memory (%zu bytes)", n);
    memset(p, 0, sz);
    t->data = p;
    return SD_OK;
}

int sd_tensor_alloc_on(sd_tensor *t, sd_devkind dev, sd_dtype dt, int ndim, const int64_t *shape)
{
    if (dev != SD_DEV_CUDA) return sd_tensor_alloc(t, dt, ndim, shape);
    *t = sd_tensor_wrap(NULL, dt, ndim, shape);
    if (!sd_tensor_valid(t)) return sd_err(SD_EINVAL, "tensor_alloc: bad shape");
    size_t n = sd_tensor_nbytes(t);
    void *p = NULL;
    int rc = sd_device_alloc(&p, n);
    if (!rc) rc = sd_device_memset(p, 0, n);
    if (rc) {
        sd_device_free(p);
        return rc;
    }
    t->data = p;
    t->device = SD_DEV_CUDA;
    t->device_index = (int16_t)sd_device_current();
    return SD_OK;
}

void sd_tensor_free(sd_tensor *t)
{
    if (!t) return;
    if (t->device == SD_DEV_CUDA) sd_device_free(t->data);
    else free(t->data);
    t->data = NULL;
}

int sd_tensor_upload(sd_tensor *t, const void *host, size_t bytes)
{
    if (bytes != sd_tensor_nbytes(t))
        return sd_err(SD_EINVAL, "tensor_upload: %zu bytes for a tensor of %zu", bytes, sd_tensor_nbytes(t));
    if (t->device == SD_DEV_CUDA) return sd_device_copy_to_device(t->data, host, bytes);
    if (bytes) memmove(t->data, host, bytes);
    return SD_OK;
}

int sd_tensor_download(const sd_tensor *t, void *host, size_t bytes)
{
    if (bytes != sd_tensor_nbytes(t))
        return sd_err(SD_EINVAL, "tensor_download: %zu bytes for a tensor of %zu", bytes, sd_tensor_nbytes(t));
    if (t->device == SD_DEV_CUDA) return sd_device_copy_to_host(host, t->data, bytes);
    if (bytes) memmove(host, t->data, bytes);
    return SD_OK;
}

/* ---- arena ---------------------------------------------------------------------------------- */

int sd_arena_init(sd_arena *a, sd_devkind device, size_t cap)
{
    memset(a, 0, sizeof *a);
    cap = (cap + 4095) & ~(size_t)4095;
    a->device = (uint8_t)device;
    if (cap == 0) return SD_OK;
    if (device == SD_DEV_CUDA) {
        void *p = NULL;
        int rc = sd_device_alloc(&p, cap);
        if (rc) return sd_err_prefix(rc, "arena of %zu bytes", cap);
        a->base = p;
    } else {
        void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return sd_err(SD_ENOMEM, "arena: cannot reserve %zu bytes", cap);
        a->base = p;
        a->mapped = 1;
    }
    a->cap = cap;
    return SD_OK;
}

void sd_arena_free(sd_arena *a)
{
    if (!a || !a->base) return;
    if (a->device == SD_DEV_CUDA) sd_device_free(a->base);
    else if (a->mapped) munmap(a->base, a->cap);
    memset(a, 0, sizeof *a);
}

void *sd_arena_alloc(sd_arena *a, size_t bytes)
{
    size_t off = (a->used + 63) & ~(size_t)63;
    if (off > a->cap || bytes > a->cap - off) return NULL;
    a->used = off + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + off;
}

int sd_arena_tensor(sd_arena *a, sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape)
{
    *t = sd_tensor_wrap(NULL, dt, ndim, shape);
    if (!sd_tensor_valid(t)) return sd_err(SD_EINVAL, "arena_tensor: bad shape");
    t->device = a->device;
    size_t n = sd_tensor_nbytes(t);
    t->data = sd_arena_alloc(a, n);
    if (!t->data)
        return sd_err(SD_ENOMEM, "arena exhausted (need %zu bytes, %zu of %zu in use)", n, a->used, a->cap);
    return SD_OK;
}

/* ---- OpenBLAS kernel selection ---------------------------------------------------------------
 * OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels from the CPU model number; a VM that reports
 * a generic "Intel Xeon Processor" model gets the Prescott (SSE3) kernels, about 10x slower than
 * SkylakeX. When that happens on a CPU with AVX-512 (or AVX2+FMA), and OPENBLAS_CORETYPE is not
 * set, re-run OpenBLAS's kernel selection with the right core type. Done once, from sd_ctx_init()
 * (main thread, before any op). */
extern const char *openblas_get_corename(void) __attribute__((weak));
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

static void blas_fix_coretype(void)
{
    static int done;
    if (done) return;
    done = 1;
    if (!openblas_get_corename || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
    const char *env = getenv("OPENBLAS_CORETYPE");
    if (env && *env) return;
    const char *core = openblas_get_corename();
    if (!core || (strcasecmp(core, "prescott") && strcasecmp(core, "core2") && strcasecmp(core, "nehalem") &&
                  strcasecmp(core, "katmai") && strcasecmp(core, "unknown")))
        return;
    __builtin_cpu_init();
    const char *want = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 0);
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
}

/* ---- context -------------------------------------------------------------------------------- */

int sd_ctx_init(sd_ctx *ctx, sd_devkind backend, int threads, size_t scratch_bytes)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->backend = backend;
    if (backend == SD_DEV_CUDA) {
        if (!sd_device_built_with_cuda())
            return sd_err(SD_EUNSUPPORTED, "CUDA context: built without CUDA support (make CUDA=1)");
        int dev = sd_device_current();
        if (dev == SD_DEVICE_CPU) return sd_err(SD_ESTATE, "CUDA context: call sd_device_init() first");
        ctx->device_index = dev;
    }
    sd_ctx_set_threads(ctx, threads);
    const char *algo = getenv("SD_CONV_ALGO");
    if (algo && !strcmp(algo, "im2col")) ctx->conv_algo = SD_CONV_IM2COL;
    else if (algo && !strcmp(algo, "winograd")) ctx->conv_algo = SD_CONV_WINOGRAD;
    if (backend == SD_DEV_CPU) blas_fix_coretype();
    return sd_arena_init(&ctx->scratch, backend, scratch_bytes ? scratch_bytes : SD_CTX_DEFAULT_SCRATCH);
}

void sd_ctx_free(sd_ctx *ctx)
{
    if (!ctx) return;
    sd_arena_free(&ctx->scratch);
}

void sd_ctx_set_threads(sd_ctx *ctx, int threads)
{
    if (threads <= 0) threads = omp_get_max_threads();
    if (threads < 1) threads = 1;
    ctx->threads = threads;
}
