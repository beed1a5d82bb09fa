/* Reference GEMM for tests/parity/device_check.sh's minimal build (see cblas.h here): row-major
 * C = alpha·op(A)·op(B) + beta·C with op(B) packed into a contiguous k×n block, then rows of C
 * accumulated in (i, p, j) order (the inner loop vectorises). Column-major calls are mapped to
 * row-major by swapping the operands. Single-threaded, like OpenBLAS inside the CPU kernels. */
#include <stdlib.h>
#include <string.h>

#include "cblas.h"

#define GEMM_BODY(real)                                                                                \
    if (order == CblasColMajor) { /* Cᵀ = op(B)ᵀ·op(A)ᵀ in row-major terms */                            \
        const real *t = a; a = b; b = t;                                                              \
        int tl = lda; lda = ldb; ldb = tl;                                                            \
        CBLAS_TRANSPOSE tt = ta; ta = tb; tb = tt;                                                    \
        int tm = m; m = n; n = tm;                                                                    \
    }                                                                                                 \
    if (m <= 0 || n <= 0) return;                                                                     \
    for (int i = 0; i < m; i++) {                                                                     \
        real *ci = c + (size_t)i * ldc;                                                               \
        if (beta == 0) memset(ci, 0, (size_t)n * sizeof(real));                                       \
        else if (beta != 1) for (int j = 0; j < n; j++) ci[j] *= beta;                                \
    }                                                                                                 \
    if (k <= 0 || alpha == 0) return;                                                                 \
    real *bp = malloc((size_t)k * (size_t)n * sizeof(real));                                          \
    if (!bp) abort();                                                                                 \
    for (int p = 0; p < k; p++)                                                                       \
        for (int j = 0; j < n; j++)                                                                   \
            bp[(size_t)p * n + j] = tb != CblasNoTrans ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j]; \
    for (int i = 0; i < m; i++) {                                                                     \
        real *ci = c + (size_t)i * ldc;                                                               \
        for (int p = 0; p < k; p++) {                                                                 \
            real av = alpha * (ta != CblasNoTrans ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]); \
            const real *br = bp + (size_t)p * n;                                                      \
            for (int j = 0; j < n; j++) ci[j] += av * br[j];                                          \
        }                                                                                             \
    }                                                                                                 \
    free(bp);

void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    GEMM_BODY(float)
}

void cblas_dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
                 const double *a, int lda, const double *b, int ldb, double beta, double *c, int ldc)
{
    GEMM_BODY(double)
}

int openblas_get_num_threads(void) { return 1; }
void openblas_set_num_threads(int n) { (void)n; }
