/* Internal: linear and batched matmul kernels (template; see kern.h). */
#ifndef SD_TENSOR_KERN_LINEAR_H
#define SD_TENSOR_KERN_LINEAR_H
#include "tensor/kern.h"

/* y [r, o] = x [r, i] · w [o, i]ᵀ + b */
SD_KFN void KN(sd_k_linear)(sd_ctx *ctx, real *y, const real *x, const real *w, const real *b,
                            int64_t r, int64_t in, int64_t out)
{
    if (b) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (r * out > 16384)
        for (int64_t i = 0; i < r; i++) memcpy(y + i * out, b, (size_t)out * sizeof(real));
    }
    KN(gemm_par)(ctx->threads, 0, 1, r, out, in, 1, x, in, w, in, b ? 1 : 0, y, out);
}

SD_KFN void KN(sd_k_linear_bwd)(sd_ctx *ctx, real *dx, real *dw, real *db, const real *dy,
                                const real *x, const real *w, int64_t r, int64_t in, int64_t out)
{
    if (dx) KN(gemm_par)(ctx->threads, 0, 0, r, in, out, 1, dy, out, w, in, 1, dx, in);
    if (dw) KN(gemm_par)(ctx->threads, 1, 0, out, in, r, 1, dy, out, x, in, 1, dw, in);
    if (db) {
        int64_t nb = (out + 63) / 64;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (r * out > 16384)
        for (int64_t blk = 0; blk < nb; blk++) {
            int64_t j0 = blk * 64, j1 = j0 + 64 < out ? j0 + 64 : out;
            real acc[64];
            for (int64_t j = j0; j < j1; j++) acc[j - j0] = 0;
            for (int64_t i = 0; i < r; i++)
                for (int64_t j = j0; j < j1; j++) acc[j - j0] += dy[i * out + j];
            for (int64_t j = j0; j < j1; j++) db[j] += acc[j - j0];
        }
    }
}

/* c[bt] = alpha·op(a[bt])·op(b[bt]) + beta·c[bt]; sa/sb = 0 when a/b is shared by all batches. */
SD_KFN void KN(sd_k_matmul)(sd_ctx *ctx, real *c, const real *a, int ta, const real *b, int tb,
                            real alpha, real beta, int64_t batch, int64_t m, int64_t n, int64_t k,
                            int64_t sa, int64_t sb)
{
    int64_t lda = ta ? m : k, ldb = tb ? k : n;
    if (batch >= 4) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static)
        for (int64_t i = 0; i < batch; i++)
            KN(gemm)(ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * m * n, n);
    } else {
        for (int64_t i = 0; i < batch; i++)
            KN(gemm_par)(ctx->threads, ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * m * n, n);
    }
}

#endif
