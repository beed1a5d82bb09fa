/* The emulated CUDA runtime and cuBLAS of the emulated build (the headers of tests/emu/include; see
 * tests/emu/cuda_emu.h): one device "cuda:0" with H100-like properties whose memory is host
 * memory. Everything is synchronous and in order; errors follow the runtime's rules where the
 * backend depends on them: a failed launch sets the error that cudaGetLastError returns (and
 * clears), a copy or GEMM operand outside any allocation is cudaErrorInvalidValue /
 * CUBLAS_STATUS_INVALID_VALUE, an allocation beyond the budget is cudaErrorMemoryAllocation. */
#include <cblas.h>

#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "cublas_v2.h"

CUDA_EMU_DEFINE_GLOBALS

static std::mutex g_mu;
static std::map<uintptr_t, size_t> g_allocs;  /* device allocations: start → bytes */
static size_t g_used;
static std::set<const void *> g_streams;
static std::map<const void *, size_t> g_smem_max;
static thread_local cudaError_t g_last;

static size_t budget(void)
{
    const char *e = getenv("SD_EMU_CUDA_MIB");
    size_t mib = e && *e ? (size_t)strtoull(e, NULL, 10) : 81559;
    return mib << 20;
}

static cudaError_t fail(cudaError_t e)
{
    g_last = e;
    return e;
}

void emu_set_error(cudaError_t e) { g_last = e; }

size_t emu_func_smem_max(const void *fn)
{
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_smem_max.find(fn);
    return it == g_smem_max.end() || it->second < EMU_SMEM_DEFAULT ? EMU_SMEM_DEFAULT : it->second;
}

void emu_func_set_smem_max(const void *fn, size_t v)
{
    std::lock_guard<std::mutex> l(g_mu);
    g_smem_max[fn] = v;
}

int emu_stream_ok(cudaStream_t s)
{
    std::lock_guard<std::mutex> l(g_mu);
    return !s || g_streams.count(s);
}

/* Is [p, p + n) inside one device allocation? */
static bool on_device(const void *p, size_t n)
{
    std::lock_guard<std::mutex> l(g_mu);
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a >= it->first && a - it->first <= it->second && n <= it->second - (a - it->first);
}
int emu_on_device(const void *p, size_t n) { return on_device(p, n); }
static bool any_device(const void *p)
{
    std::lock_guard<std::mutex> l(g_mu);
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a - it->first < it->second;
}

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (dev != 0) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "emulated CUDA device (tests/emu, H100-like)");
    p->totalGlobalMem = budget();
    p->sharedMemPerBlock = EMU_SMEM_DEFAULT;
    p->sharedMemPerBlockOptin = EMU_SMEM_OPTIN;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 4;
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev)
{
    if (dev != 0) return fail(cudaErrorInvalidDevice);
    if (a != cudaDevAttrMaxSharedMemoryPerBlockOptin) return fail(cudaErrorInvalidValue);
    *v = (int)EMU_SMEM_OPTIN;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d)
{
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    std::lock_guard<std::mutex> l(g_mu);
    *total_b = budget();
    *free_b = *total_b > g_used ? *total_b - g_used : 0;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = NULL;
    size_t n = bytes ? (bytes + 255) / 256 * 256 : 256;
    {
        std::lock_guard<std::mutex> l(g_mu);
        if (g_used + n > budget()) return fail(cudaErrorMemoryAllocation);
    }
    void *q = aligned_alloc(256, n);
    if (!q) return fail(cudaErrorMemoryAllocation);
    memset(q, 0xff, n);  /* uninitialised device memory: NaN in every float type */
    std::lock_guard<std::mutex> l(g_mu);
    g_allocs[(uintptr_t)q] = bytes;
    g_used += n;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    {
        std::lock_guard<std::mutex> l(g_mu);
        auto it = g_allocs.find((uintptr_t)p);
        if (it == g_allocs.end()) return fail(cudaErrorInvalidValue);
        g_used -= it->second ? (it->second + 255) / 256 * 256 : 256;
        g_allocs.erase(it);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s)
{
    if (!emu_stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    if (!bytes) return cudaSuccess;
    bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault || kind == cudaMemcpyHostToHost) return fail(cudaErrorInvalidValue);
    if (dd ? !on_device(dst, bytes) : any_device(dst)) return fail(cudaErrorInvalidValue);
    if (sd ? !on_device(src, bytes) : any_device(src)) return fail(cudaErrorInvalidValue);
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    return cudaMemcpyAsync(dst, src, bytes, kind, NULL);
}

cudaError_t cudaMemsetAsync(void *dst, int byte, size_t bytes, cudaStream_t s)
{
    if (!emu_stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    if (!bytes) return cudaSuccess;
    if (!on_device(dst, bytes)) return fail(cudaErrorInvalidValue);
    memset(dst, byte, bytes);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    *s = (cudaStream_t) new char;
    std::lock_guard<std::mutex> l(g_mu);
    g_streams.insert(*s);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (!s) return cudaSuccess;
    std::lock_guard<std::mutex> l(g_mu);
    if (!g_streams.erase(s)) return fail(cudaErrorInvalidResourceHandle);
    delete (char *)s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    return emu_stream_ok(s) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last; }

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    }
    return "unrecognized error code";
}
const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    }
    return "cudaErrorUnknown";
}

/* ---- cuBLAS ---- */

struct emu_cublas {
    cudaStream_t stream;
    cublasMath_t math;
};

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new emu_cublas{ NULL, CUBLAS_DEFAULT_MATH };
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!emu_stream_ok(s)) return CUBLAS_STATUS_INVALID_VALUE;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->math = m;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    }
    return "unknown error";
}
const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

static float load(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16BF) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}

/* The operand rounding of the compute type. */
static float round_op(float v, cublasComputeType_t c)
{
    static const bool exact = getenv("SD_EMU_GEMM_EXACT") && *getenv("SD_EMU_GEMM_EXACT") == '1';
    if (exact) return v;  /* diagnosis: how much of a difference is the compute type's rounding */
    switch (c) {
    case CUBLAS_COMPUTE_32F_FAST_TF32: {
        uint32_t u = __float_as_uint(v);
        if ((u & 0x7f800000u) == 0x7f800000u) return v;  /* inf / NaN */
        return __uint_as_float((u + 0x1000u) & ~0x1fffu);  /* 10 mantissa bits, nearest, ties away */
    }
    case CUBLAS_COMPUTE_32F_FAST_16BF: return __bfloat162float(__float2bfloat16(v));
    case CUBLAS_COMPUTE_32F_FAST_16F: return __half2float(__float2half(v));
    default: return v;
    }
}

/* The stored matrix of op(X) (rows × cols of op(X), column-major with ld): its elements as floats,
 * rounded, packed column-major with leading dimension `r` (the stored matrix's own rows). */
static cublasStatus_t operand(const void *x, cudaDataType t, cublasOperation_t op, int rows, int cols, int ld,
                              cublasComputeType_t comp, std::vector<float> &out, int *ldo)
{
    int sr = op == CUBLAS_OP_N ? rows : cols, sc = op == CUBLAS_OP_N ? cols : rows;  /* stored shape */
    if (ld < (sr > 1 ? sr : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (sr == 0 || sc == 0) {
        out.assign(1, 0.f);
        *ldo = sr > 1 ? sr : 1;
        return CUBLAS_STATUS_SUCCESS;
    }
    size_t span = ((size_t)(sc - 1) * (size_t)ld + (size_t)sr) * type_size(t);
    if (!on_device(x, span)) return CUBLAS_STATUS_INVALID_VALUE;
    out.resize((size_t)sr * sc);
    for (int j = 0; j < sc; j++)
        for (int i = 0; i < sr; i++) out[(size_t)j * sr + i] = round_op(load(x, t, (size_t)j * ld + i), comp);
    *ldo = sr;
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const void *alpha, const void *a, cudaDataType at, int lda, const void *b,
                           cudaDataType bt, int ldb, const void *beta, void *c, cudaDataType ct, int ldc,
                           cublasComputeType_t comp)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || ta == CUBLAS_OP_C || tb == CUBLAS_OP_C) return CUBLAS_STATUS_INVALID_VALUE;
    if (ct != CUDA_R_32F || comp == CUBLAS_COMPUTE_16F) return CUBLAS_STATUS_NOT_SUPPORTED;
    /* cuBLAS's combinations with an fp32 C: A and B of one type; the FAST compute types take fp32
     * A/B only; 16-bit A/B (bf16 or fp16) with CUBLAS_COMPUTE_32F (no rounding here: the
     * operands already are 16-bit values, accumulated in float) */
    if (at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (at != CUDA_R_32F && comp != CUBLAS_COMPUTE_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (at != CUDA_R_32F && at != CUDA_R_16BF && at != CUDA_R_16F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (!on_device(c, ((size_t)(n - 1) * ldc + m) * 4)) return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    std::vector<float> A, B;
    int la, lb;
    cublasStatus_t s = operand(a, at, ta, m, k, lda, comp, A, &la);
    if (s == CUBLAS_STATUS_SUCCESS) s = operand(b, bt, tb, k, n, ldb, comp, B, &lb);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    float *C = (float *)c;
    if (k == 0) {  /* C = beta·C (beta = 0: C is not read) */
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] = be == 0.f ? 0.f : be * C[(size_t)j * ldc + i];
        return CUBLAS_STATUS_SUCCESS;
    }
    if (be == 0.f)  /* cuBLAS does not read C when beta = 0 (it may hold NaN) */
        for (int j = 0; j < n; j++) memset(C + (size_t)j * ldc, 0, (size_t)m * 4);
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, al, A.data(), la, B.data(), lb, be, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *a, cudaDataType at, int lda, const void *b,
                            cudaDataType bt, int ldb, const void *beta, void *c, cudaDataType ct, int ldc,
                            cublasComputeType_t comp, cublasGemmAlgo_t algo)
{
    return gemm(h, ta, tb, m, n, k, alpha, a, at, lda, b, bt, ldb, beta, c, ct, ldc, comp);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *a, cudaDataType at, int lda,
                                          long long sa, const void *b, cudaDataType bt, int ldb, long long sb,
                                          const void *beta, void *c, cudaDataType ct, int ldc, long long sc,
                                          int batch, cublasComputeType_t comp, cublasGemmAlgo_t algo)
{
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batch; i++) {
        cublasStatus_t s = gemm(h, ta, tb, m, n, k, alpha, (const char *)a + (size_t)(i * sa) * type_size(at), at,
                                lda, (const char *)b + (size_t)(i * sb) * type_size(bt),
                                bt, ldb, beta, (char *)c + (size_t)(i * sc) * 4, ct, ldc, comp);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}
