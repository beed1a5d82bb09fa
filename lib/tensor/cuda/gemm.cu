// Matrix products through cuBLAS: the typed-operand GEMM of the op kernels (sd_cu_gemm_x; 16-bit
// operands under the bf16 / fp16 GEMM math) and the C entry point sd_cuda_sgemm.
#include <stdlib.h>
#include <string.h>

#include "tensor/cuda/common.cuh"

extern "C" {
unsigned long long sd_cuda_gemm_count16 = 0, sd_cuda_gemm_count32 = 0;
}

// ---- element conversions ------------------------------------------------------------------------

__device__ __forceinline__ float elt_to_f(float v) { return v; }
__device__ __forceinline__ float elt_to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float elt_to_f(__half v) { return __half2float(v); }

template <class D> __device__ __forceinline__ D elt_from_f(float v);
template <> __device__ __forceinline__ float elt_from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 elt_from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half elt_from_f<__half>(float v) { return __float2half(v); }

template <class D, class S> __global__ void k_cvt_flat(size_t n, D *dst, const S *src)
{
    SD_CU_LOOP(i, n) dst[i] = elt_from_f<D>(elt_to_f(src[i]));
}

// dst[b][r][c] (row stride ldd, batch stride rows·ldd) = src[b·s + r·ld + c], c < cols.
template <class D, class S>
__global__ void k_cvt_pack(size_t n, int64_t rows, int64_t cols, int64_t ld, int64_t s, int64_t ldd, D *dst,
                           const S *src)
{
    SD_CU_LOOP(i, n) {
        int64_t c = (int64_t)i % cols, rr = (int64_t)i / cols, r = rr % rows, b = rr / rows;
        dst[(b * rows + r) * ldd + c] = elt_from_f<D>(elt_to_f(src[b * s + r * ld + c]));
    }
}

template <class D, class S>
static int cvt_launch(void *dst, const void *src, size_t n, int64_t rows, int64_t cols, int64_t ld, int64_t s,
                      int64_t ldd, int flat)
{
    if (!n) return SD_OK;
    unsigned blocks = sd_cuda_blocks(n, SD_CU_THREADS);
    if (flat)
        SD_CU_KERNEL_NOSYNC(blocks, SD_CU_THREADS, 0, sd_cuda_stream(), k_cvt_flat<D, S>)(n, (D *)dst, (const S *)src);
    else
        SD_CU_KERNEL_NOSYNC(blocks, SD_CU_THREADS, 0, sd_cuda_stream(), k_cvt_pack<D, S>)(
            n, rows, cols, ld, s, ldd, (D *)dst, (const S *)src);
    SD_CU_LAUNCH("GEMM operand conversion");
    return SD_OK;
}

template <class D>
static int cvt_src(void *dst, const void *src, sd_cu_elt st, size_t n, int64_t rows, int64_t cols, int64_t ld,
                   int64_t s, int64_t ldd, int flat)
{
    switch (st) {
    case SD_CU_BF16: return cvt_launch<D, __nv_bfloat16>(dst, src, n, rows, cols, ld, s, ldd, flat);
    case SD_CU_F16: return cvt_launch<D, __half>(dst, src, n, rows, cols, ld, s, ldd, flat);
    default: return cvt_launch<D, float>(dst, src, n, rows, cols, ld, s, ldd, flat);
    }
}

// Convert `cnt` matrices of rows × cols (row stride ld, matrix stride s, type st) into dst (type
// dt, row stride ldd, matrix stride rows·ldd).
static int cvt(void *dst, sd_cu_elt dt, const void *src, sd_cu_elt st, int64_t cnt, int64_t rows, int64_t cols,
               int64_t ld, int64_t s, int64_t ldd)
{
    size_t n = (size_t)cnt * (size_t)rows * (size_t)cols;
    int flat = ld == cols && ldd == cols && (cnt == 1 || s == rows * cols);
    switch (dt) {
    case SD_CU_BF16: return cvt_src<__nv_bfloat16>(dst, src, st, n, rows, cols, ld, s, ldd, flat);
    case SD_CU_F16: return cvt_src<__half>(dst, src, st, n, rows, cols, ld, s, ldd, flat);
    default: return cvt_src<float>(dst, src, st, n, rows, cols, ld, s, ldd, flat);
    }
}

int sd_cu_convert_elts(void *dst, sd_cu_elt dt, const void *src, sd_cu_elt st, size_t n)
{
    return cvt(dst, dt, src, st, 1, 1, (int64_t)n, (int64_t)n, 0, (int64_t)n);
}

// SD_CUDA_GEMM16=0 (a diagnostic for measuring what the 16-bit operands gain; read at each product,
// a few hundred per training step): the bf16 / fp16 math keeps fp32 operands with the
// FAST_16BF/16F compute type, as before 2026-11-27.
static int gemm16_off(void)
{
    const char *e = getenv("SD_CUDA_GEMM16");
    return e && !strcmp(e, "0");
}

sd_cu_elt sd_cu_math_elt(void)
{
    if (gemm16_off()) return SD_CU_F32;
    return sd_cuda_gemm_math == SD_GEMM_BF16 ? SD_CU_BF16 : sd_cuda_gemm_math == SD_GEMM_FP16 ? SD_CU_F16 : SD_CU_F32;
}

static cudaDataType_t blas_type(sd_cu_elt t)
{
    return t == SD_CU_BF16 ? CUDA_R_16BF : t == SD_CU_F16 ? CUDA_R_16F : CUDA_R_32F;
}

// Scratch without an error message when it does not fit (the caller falls back).
static void *scratch_try(sd_ctx *ctx, size_t bytes)
{
    if (!ctx || sd_cu_scratch_free(ctx) < bytes) return NULL;
    return sd_arena_alloc(&ctx->scratch, bytes ? bytes : 1);
}

sd_cu_op sd_cu_to_math(sd_ctx *ctx, const float *x, size_t n)
{
    sd_cu_op o = sd_cu_f32op(x);
    sd_cu_elt e = sd_cu_math_elt();
    if (e == SD_CU_F32) return o;
    size_t mark = ctx ? sd_arena_mark(&ctx->scratch) : 0;
    void *p = scratch_try(ctx, n * 2);
    if (!p) return o;
    if (sd_cu_convert_elts(p, e, x, SD_CU_F32, n)) {
        // a launch failure: leave it to the next call (sticky errors) and use the fp32 data
        sd_arena_reset(&ctx->scratch, mark);
        return o;
    }
    o.p = p;
    o.t = e;
    return o;
}

// One operand converted to type dt: stored rows × cols (row stride ld), `batch` entries with
// stride s (0: shared, one copy). Returns 0 with *out the packed copy (its ld and stride), or 1
// when the scratch is short (nothing allocated; an SD_ENOMEM error only with want_error) or a
// launch failed (*rc set).
struct conv_res {
    sd_cu_op o;
    int64_t ld, s;
};

static int operand_to(sd_ctx *ctx, sd_cu_elt dt, const sd_cu_op &x, int64_t rows, int64_t cols, int64_t ld,
                      int64_t s, int64_t batch, int want_error, conv_res *out, int *rc)
{
    *rc = SD_OK;
    int64_t cnt = (batch == 1 || s == 0) ? 1 : batch;
    // 16-bit rows padded to a multiple of 8 elements (16 bytes: cuBLAS's tensor-core alignment)
    // when that costs little; fp32 rows packed
    int64_t ldd = cols;
    if (dt != SD_CU_F32 && cols >= 64 && cols % 8) ldd = (cols + 7) / 8 * 8;
    size_t bytes = (size_t)cnt * (size_t)rows * (size_t)ldd * sd_cu_elt_size(dt);
    void *p = want_error ? (void *)sd_cu_scratch<char>(ctx, bytes, "GEMM operand conversion") : scratch_try(ctx, bytes);
    if (!p) {
        if (want_error) *rc = SD_ENOMEM;
        return 1;
    }
    *rc = cvt(p, dt, x.p, x.t, cnt, rows, cols, ld, s, ldd);
    if (*rc) return 1;
    out->o.p = p;
    out->o.t = dt;
    out->o.f32 = x.f32;
    out->ld = ldd;
    out->s = cnt == 1 ? 0 : rows * ldd;
    return 0;
}

static int blas_call(cublasOperation_t opa, cublasOperation_t opb, int64_t m, int64_t n, int64_t k, float alpha,
                     const void *a, sd_cu_elt at, int64_t lda, int64_t sa, const void *b, sd_cu_elt bt,
                     int64_t ldb, int64_t sb, float beta, float *c, int64_t ldc, int64_t sc, int64_t batch,
                     cublasComputeType_t comp)
{
    if (lda > INT32_MAX || ldb > INT32_MAX)
        return sd_err(SD_ERANGE, "CUDA gemm: leading dimension over 2^31 (%lld, %lld)", (long long)lda,
                      (long long)ldb);
    // leading dimensions must be ≥ 1 even for empty operands
    int ilda = lda < 1 ? 1 : (int)lda, ildb = ldb < 1 ? 1 : (int)ldb, ildc = ldc < 1 ? 1 : (int)ldc;
    if (batch == 1) {
        SD_CUBLAS(cublasGemmEx(sd_cuda_blas(), opb, opa, (int)n, (int)m, (int)k, &alpha, b, blas_type(bt), ildb, a,
                               blas_type(at), ilda, &beta, c, CUDA_R_32F, ildc, comp, CUBLAS_GEMM_DEFAULT));
    } else {
        SD_CUBLAS(cublasGemmStridedBatchedEx(sd_cuda_blas(), opb, opa, (int)n, (int)m, (int)k, &alpha, b,
                                             blas_type(bt), ildb, (long long)sb, a, blas_type(at), ilda, (long long)sa,
                                             &beta, c, CUDA_R_32F, ildc, (long long)sc, (int)batch, comp,
                                             CUBLAS_GEMM_DEFAULT));
    }
    if (at == SD_CU_F32) sd_cuda_gemm_count32++;
    else sd_cuda_gemm_count16++;
    return SD_OK;
}

int sd_cu_gemm_x(sd_ctx *ctx, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, sd_cu_op a,
                 int64_t lda, int64_t sa, sd_cu_op b, int64_t ldb, int64_t sb, float beta, float *c, int64_t ldc,
                 int64_t sc, int64_t batch)
{
    if (m <= 0 || n <= 0 || batch <= 0) return SD_OK;
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || batch > INT32_MAX || lda > INT32_MAX ||
        ldb > INT32_MAX || ldc > INT32_MAX)
        return sd_err(SD_ERANGE, "CUDA gemm: dimension over 2^31 (m %lld, n %lld, k %lld, batch %lld)", (long long)m,
                      (long long)n, (long long)k, (long long)batch);
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    // stored shapes (row-major)
    int64_t ar = ta ? k : m, acn = ta ? m : k, br = tb ? n : k, bcn = tb ? k : n;
    sd_cu_elt e = sd_cu_math_elt();
    if (k <= 0) e = SD_CU_F32;  // C = beta·C: the operands are not read
    if (e != SD_CU_F32 && (a.t != e || b.t != e)) {
        // 16-bit operands: convert what is not in the math's type yet
        size_t mark = ctx ? sd_arena_mark(&ctx->scratch) : 0;
        conv_res ca = { a, lda, sa }, cb = { b, ldb, sb };
        int rc = SD_OK, shortage = 0;
        if (a.t != e) shortage = operand_to(ctx, e, a, ar, acn, lda, sa, batch, 0, &ca, &rc);
        if (!rc && !shortage && b.t != e) shortage = operand_to(ctx, e, b, br, bcn, ldb, sb, batch, 0, &cb, &rc);
        if (!rc && !shortage)
            rc = blas_call(opa, opb, m, n, k, alpha, ca.o.p, e, ca.ld, ca.s, cb.o.p, e, cb.ld, cb.s, beta, c, ldc, sc,
                           batch, CUBLAS_COMPUTE_32F);
        if (ctx) sd_arena_reset(&ctx->scratch, mark);
        if (rc || !shortage) return rc;
        // the scratch is short: fp32 operands, the math's FAST compute type (same operand rounding)
    } else if (e != SD_CU_F32) {
        return blas_call(opa, opb, m, n, k, alpha, a.p, e, lda, sa, b.p, e, ldb, sb, beta, c, ldc, sc, batch,
                         CUBLAS_COMPUTE_32F);
    }
    if (a.t == SD_CU_F32 && b.t == SD_CU_F32)
        return blas_call(opa, opb, m, n, k, alpha, a.p, SD_CU_F32, lda, sa, b.p, SD_CU_F32, ldb, sb, beta, c, ldc, sc,
                         batch, sd_cu_compute_type());
    // fp32 views of 16-bit operands: their fp32 source when known, else a converted copy
    size_t mark = ctx ? sd_arena_mark(&ctx->scratch) : 0;
    conv_res ca = { a, lda, sa }, cb = { b, ldb, sb };
    int rc = SD_OK;
    if (a.t != SD_CU_F32) {
        if (a.f32) ca.o = sd_cu_f32op(a.f32);
        else if (!ctx) rc = sd_err(SD_ESTATE, "CUDA gemm: a 16-bit operand needs a context for its fp32 copy");
        else operand_to(ctx, SD_CU_F32, a, ar, acn, lda, sa, batch, 1, &ca, &rc);
    }
    if (!rc && b.t != SD_CU_F32) {
        if (b.f32) cb.o = sd_cu_f32op(b.f32);
        else if (!ctx) rc = sd_err(SD_ESTATE, "CUDA gemm: a 16-bit operand needs a context for its fp32 copy");
        else operand_to(ctx, SD_CU_F32, b, br, bcn, ldb, sb, batch, 1, &cb, &rc);
    }
    if (!rc)
        rc = blas_call(opa, opb, m, n, k, alpha, ca.o.p, SD_CU_F32, ca.ld, ca.s, cb.o.p, SD_CU_F32, cb.ld, cb.s, beta,
                       c, ldc, sc, batch, sd_cu_compute_type());
    if (ctx) sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

// ---- the C entry point ---------------------------------------------------------------------------

// Row-major C = alpha·op(A)·op(B) + beta·C. cuBLAS is column-major: a row-major matrix with row
// stride ld is the column-major transpose with leading dimension ld, so compute
// Cᵀ[n×m] = op(B)ᵀ·op(A)ᵀ, i.e. pass B first, A second, with the same transpose flags.
// Compute type: sd_cu_compute_type() (by default CUBLAS_COMPUTE_32F: fp32 arithmetic, no TF32).
extern "C" int sd_cuda_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                             const float *d_a, int lda, const float *d_b, int ldb, float beta,
                             float *d_c, int ldc)
{
    int rc = sd_cuda_ready();
    if (rc) return rc;
    cublasOperation_t opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    SD_CUBLAS(cublasGemmEx(sd_cuda_blas(), opb, opa, n, m, k, &alpha, d_b, CUDA_R_32F, ldb, d_a,
                           CUDA_R_32F, lda, &beta, d_c, CUDA_R_32F, ldc, sd_cu_compute_type(),
                           CUBLAS_GEMM_DEFAULT));
    return SD_OK;
}
