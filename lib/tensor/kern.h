/* Internal: prelude of the CPU kernel templates (lib/tensor/kern_*.h).
 *
 * The kernel bodies are written once in terms of `real` and compiled twice: in float by the
 * library (lib/tensor/cpu_*.c, symbols *_f32) and in double by the gradient-check tests
 * (tests/grad/, symbols *_f64, `#define SD_KERN_F64` before including). The double build uses
 * cblas_dgemm and libm's exp/erf; the float build uses cblas_sgemm and vectorisable fast
 * exp/erf approximations. Everything else (tiling, partitions, indexing) is the same code.
 *
 * Kernels take raw pointers and sizes (validated by ops.c) plus the sd_ctx for the thread count
 * and scratch. Parallel loops use fixed partitions that depend only on the problem size, and
 * reductions run in a fixed order, so results do not depend on ctx->threads. BLAS is always
 * called single-threaded, from inside those partitions. */
#ifndef SD_TENSOR_KERN_H
#define SD_TENSOR_KERN_H

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/error.h"
#include "tensor/tensor.h"

#ifdef SD_KERN_F64
typedef double real;
#define KN(name) name##_f64
#define R_EXP(x) exp(x)
#define R_ERF(x) erf(x)
#define R_TANH(x) tanh(x)
#define R_SQRT(x) sqrt(x)
#define R_LOG(x) log(x)
#define R_FABS(x) fabs(x)
#define R_BLAS(name) cblas_d##name
#else
typedef float real;
#define KN(name) name##_f32
#define R_EXP(x) sd_fast_expf(x)
#define R_ERF(x) sd_fast_erff(x)
#define R_TANH(x) sd_fast_tanhf(x)
#define R_SQRT(x) sqrtf(x)
#define R_LOG(x) logf(x)
#define R_FABS(x) fabsf(x)
#define R_BLAS(name) cblas_s##name
#endif

/* exp(x) for float, ≤ 2 ulp on [-87, 88]; vectorises under `omp simd` (no calls, no branches:
 * round-to-nearest by the 1.5·2^23 trick). */
static inline float sd_fast_expf(float x)
{
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}

/* erf(x) for float: Abramowitz–Stegun 7.1.26 refined (|error| < 1.5e-7). */
static inline float sd_fast_erff(float x)
{
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = 1.0f - y * t * sd_fast_expf(-ax * ax);
    return x < 0 ? -y : y;
}

static inline float sd_fast_tanhf(float x)
{
    float ax = x < 0 ? -x : x;
    float e = sd_fast_expf(-2.0f * ax);
    float y = (1.0f - e) / (1.0f + e);
    return x < 0 ? -y : y;
}

#define SD_KFN static __attribute__((unused))
/* Row helpers with exp/erf that profit from wide vectors: compiled for AVX-512, AVX2+FMA and the
 * baseline, chosen at load time (the library is built for generic x86-64). Same results on one
 * machine every run, whatever the thread count. */
#if defined(__x86_64__) && !defined(SD_NO_CLONES) && !defined(__clang__)
#define SD_KVEC static __attribute__((unused, target_clones("avx512f", "avx2", "default")))
#else
#define SD_KVEC static __attribute__((unused))
#endif

/* Block size when a GEMM dimension of n is cut for parallel GEMMs: 1, 2 or 4 equal blocks
 * (n < 256: 1, n < 768: 2, else 4; rounded up to 16). Depends only on n, never on the thread
 * count; few blocks because every block re-packs the other operand. */
#ifndef SD_KERN_MIN_BLOCK
#define SD_KERN_MIN_BLOCK 256
#endif
static inline int64_t sd_kern_block(int64_t n)
{
    int64_t nb = n < SD_KERN_MIN_BLOCK ? 1 : n < 3 * SD_KERN_MIN_BLOCK ? 2 : 4;
    int64_t b = (n + nb - 1) / nb;
    b = (b + 15) & ~(int64_t)15;
    return b < 16 ? 16 : b;
}

#endif /* SD_TENSOR_KERN_H */

/* ---- per-precision helpers (once per precision in a translation unit) ---------------------- */
#ifdef SD_KERN_F64
#ifndef SD_KERN_HELPERS_F64
#define SD_KERN_HELPERS_F64
#define SD_KERN_EMIT_HELPERS
#endif
#else
#ifndef SD_KERN_HELPERS_F32
#define SD_KERN_HELPERS_F32
#define SD_KERN_EMIT_HELPERS
#endif
#endif

#ifdef SD_KERN_EMIT_HELPERS
#undef SD_KERN_EMIT_HELPERS
/* C[M×N] = alpha·op(A)·op(B) + beta·C, row-major, one thread. */
static inline void KN(gemm)(int ta, int tb, int64_t m, int64_t n, int64_t k, real alpha,
                            const real *a, int64_t lda, const real *b, int64_t ldb, real beta,
                            real *c, int64_t ldc)
{
    if (m <= 0 || n <= 0) return;
    R_BLAS(gemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                 (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* The same product cut into fixed blocks along the larger of M and N, the blocks spread over
 * nt threads. Must not be called from inside a parallel region. */
static inline void KN(gemm_par)(int nt, int ta, int tb, int64_t m, int64_t n, int64_t k, real alpha,
                                const real *a, int64_t lda, const real *b, int64_t ldb, real beta,
                                real *c, int64_t ldc)
{
    if (m <= 0 || n <= 0) return;
    int split_m = m >= n;
    int64_t dim = split_m ? m : n, bs = sd_kern_block(dim), nb = (dim + bs - 1) / bs;
    /* small products: the same blocks, in order, on the calling thread (a parallel region costs
     * more than it saves below a few MFLOP) */
    if (nb == 1 || nt <= 1 || (double)m * (double)n * (double)k < 4e6) {
        for (int64_t i = 0; i < nb; i++) {
            int64_t s = i * bs, l = dim - s < bs ? dim - s : bs;
            if (split_m)
                KN(gemm)(ta, tb, l, n, k, alpha, ta ? a + s : a + s * lda, lda, b, ldb, beta, c + s * ldc, ldc);
            else
                KN(gemm)(ta, tb, m, l, k, alpha, a, lda, tb ? b + s * ldb : b + s, ldb, beta, c + s, ldc);
        }
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < nb; i++) {
        int64_t s = i * bs, l = dim - s < bs ? dim - s : bs;
        if (split_m)
            KN(gemm)(ta, tb, l, n, k, alpha, ta ? a + s : a + s * lda, lda, b, ldb, beta, c + s * ldc, ldc);
        else
            KN(gemm)(ta, tb, m, l, k, alpha, a, lda, tb ? b + s * ldb : b + s, ldb, beta, c + s, ldc);
    }
}

/* Scratch from the ctx arena: bytes for `n` reals; NULL (with message) when exhausted. */
static inline real *KN(sd_k_scratch)(sd_ctx *ctx, int64_t n)
{
    real *p = (real *)sd_arena_alloc(&ctx->scratch, (size_t)n * sizeof(real));
    if (!p)
        sd_err(SD_ENOMEM, "op scratch arena exhausted (need %zu bytes, %zu of %zu in use)",
               (size_t)n * sizeof(real), ctx->scratch.used, ctx->scratch.cap);
    return p;
}
#endif
