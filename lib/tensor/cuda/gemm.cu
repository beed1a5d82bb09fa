// Matrix products through cuBLAS.
#include "tensor/cuda/common.cuh"

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
