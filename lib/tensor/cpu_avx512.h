/* Internal: AVX-512 micro-kernels for thin products (attention); see cpu_avx512.c.
 * Call only when sd_avx512_available() is true; SD_NO_AVX512=1 in the environment makes it
 * false (to time or test the generic OpenBLAS path). */
#ifndef SD_TENSOR_CPU_AVX512_H
#define SD_TENSOR_CPU_AVX512_H

#include <stdint.h>

int sd_avx512_available(void);
/* Tests: 0 turns the fast path off, 1 re-detects. */
void sd_avx512_override(int on);
/* C[m×n] = alpha·A[m×k]·B[k×n] + beta·C (row-major, leading dimensions lda/ldb/ldc). */
void sd_avx512_mm_bcast(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                        const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
/* C = exp(alpha·A·B − sub[i]) (rows i): attention probabilities from the saved log-sum-exp. */
void sd_avx512_mm_bcast_exp(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                            const float *b, int64_t ldb, float *c, int64_t ldc, const float *sub);
/* C = alpha·A·B and rowmax[i] = max_j C[i,j] (forward scores; n ≥ 1). */
void sd_avx512_mm_bcast_max(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                            const float *b, int64_t ldb, float *c, int64_t ldc, float *rowmax);
/* x[j] = exp(x[j] − sub) for j < n; returns Σ_j x[j] (16 partial sums, then a fixed-order reduction). */
float sd_avx512_exp_row(float *x, int64_t n, float sub);
/* C = P∘(A·B − delta[i]), P [m×n] at p (row stride ldp): attention dS from dO·Vᵀ. C may not alias P. */
void sd_avx512_mm_bcast_ds(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
                           int64_t ldb, float *c, int64_t ldc, const float *delta, const float *p, int64_t ldp);
/* C[m×n] = alpha·Σ_j a[i·sai + j·saj]·B[j, :] + beta·C, j < kk. */
void sd_avx512_mm_rows(int64_t m, int64_t n, int64_t kk, float alpha, const float *a, int64_t sai,
                       int64_t saj, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

#endif
