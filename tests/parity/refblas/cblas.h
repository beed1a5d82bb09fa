/* Stand-in for <cblas.h> (OpenBLAS) used only by tests/parity/device_check.sh's minimal build on a
 * GPU machine that has no BLAS development package: the declarations the CPU kernels use, served
 * by refblas.c (plain loops, correct and slow). Never part of the normal build. */
#ifndef SD_REFBLAS_CBLAS_H
#define SD_REFBLAS_CBLAS_H

typedef enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 } CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 } CBLAS_TRANSPOSE;

void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void cblas_dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
                 const double *a, int lda, const double *b, int ldb, double beta, double *c, int ldc);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int n);

#endif
