// CUDA backend: the optimizer ops of ops.h. The AdamW, Lion, SGDNesterov and Adafactor kernels run
// the element functions of tensor/optim_elem.h that the CPU runs (IEEE-rounded operations only: the
// same bits on both). Adafactor's row and column means are one thread per row or column summing in
// double in index order, as the CPU does (the same bits; the column threads read coalesced).
// The sum of squares reduces in double over a grid fixed by n (256 threads × at most 1024
// blocks, grid-stride partial sums, then one block adds the partials in a fixed tree), so a
// given tensor always gives the same sum; no atomics. scale_round's non-finite flag is a plain
// store of 1 by any thread that sees one (every writer writes the same value).
#include <math.h>
#include <stdint.h>

#include "tensor/cuda/common.cuh"
#include "tensor/optim_elem.h"

#define FP(t) ((float *)(t)->data)
#define CFP(t) ((const float *)(t)->data)

__global__ void k_adamw(size_t n, float *p, const float *g, float *m, float *v, sd_adamw_scalars s, int half, int bf16)
{
    SD_CU_LOOP(i, n) {
        if (half) sd_adamw_elem_half(&p[i], g[i], &m[i], &v[i], &s, bf16);
        else sd_adamw_elem_f32(&p[i], g[i], &m[i], &v[i], &s);
    }
}

extern "C" int sd_cuda_adamw(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, sd_tensor *v,
                             const sd_adamw_scalars *s, sd_dtype half)
{
    int64_t n = sd_tensor_numel(p);
    SD_CU_GRID(k_adamw, n, (size_t)n, FP(p), CFP(g), FP(m), FP(v), *s, half != SD_F32, half == SD_BF16);
    return SD_OK;
}

__global__ void k_lion(size_t n, float *p, const float *g, float *m, sd_lion_scalars s)
{
    SD_CU_LOOP(i, n) sd_lion_elem(&p[i], g[i], &m[i], &s);
}

extern "C" int sd_cuda_lion(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, const sd_lion_scalars *s)
{
    int64_t n = sd_tensor_numel(p);
    SD_CU_GRID(k_lion, n, (size_t)n, FP(p), CFP(g), FP(m), *s);
    return SD_OK;
}

__global__ void k_sgd(size_t n, float *p, const float *g, float *b, sd_sgd_scalars s)
{
    SD_CU_LOOP(i, n) sd_sgd_elem(&p[i], g[i], &b[i], &s);
}

extern "C" int sd_cuda_sgd(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *buf, const sd_sgd_scalars *s)
{
    int64_t n = sd_tensor_numel(p);
    SD_CU_GRID(k_sgd, n, (size_t)n, FP(p), CFP(g), FP(buf), *s);
    return SD_OK;
}

__global__ void k_af_unfactored(size_t n, const float *g, float *v, float *u, sd_adafactor_scalars s)
{
    SD_CU_LOOP(i, n) u[i] = sd_adafactor_u_unfactored(g[i], &v[i], &s);
}

// one thread per row b·R+r: the mean over its C elements
__global__ void k_af_row(size_t nrows, size_t C, const float *g, float *row, sd_adafactor_scalars s)
{
    SD_CU_LOOP(br, nrows) {
        const float *x = g + br * C;
        double a = 0;
        for (size_t k = 0; k < C; k++) a += (double)sd_adafactor_sq(x[k], s.eps1);
        row[br] = sd_adafactor_ema(row[br], a, (float)C, &s);
    }
}

// one thread per column b·C+k: the mean over its R elements
__global__ void k_af_col(size_t ncols, size_t R, size_t C, const float *g, float *col, sd_adafactor_scalars s)
{
    SD_CU_LOOP(bk, ncols) {
        const float *x = g + (bk / C) * R * C + bk % C;
        double a = 0;
        for (size_t r = 0; r < R; r++) a += (double)sd_adafactor_sq(x[r * C], s.eps1);
        col[bk] = sd_adafactor_ema(col[bk], a, (float)R, &s);
    }
}

// one thread per matrix b: the mean of its R new rows
__global__ void k_af_rmean(size_t B, size_t R, const float *row, float *rm)
{
    SD_CU_LOOP(b, B) {
        double a = 0;
        for (size_t r = 0; r < R; r++) a += row[b * R + r];
        rm[b] = sd_el_div((float)a, (float)R);
    }
}

__global__ void k_af_u(size_t n, size_t R, size_t C, const float *g, const float *row, const float *rm,
                       const float *col, float *u)
{
    SD_CU_LOOP(i, n) {
        const size_t b = i / (R * C), r = i / C % R, k = i % C;
        u[i] = sd_adafactor_u_factored(g[i], row[b * R + r], rm[b], col[b * C + k]);
    }
}

extern "C" int sd_cuda_adafactor_sq(sd_ctx *ctx, const sd_tensor *g, sd_tensor *row, sd_tensor *col, sd_tensor *rmean,
                                    sd_tensor *v, sd_tensor *u, const sd_adafactor_scalars *s)
{
    size_t n = (size_t)sd_tensor_numel(g);
    if (v) {
        SD_CU_GRID(k_af_unfactored, n, n, CFP(g), FP(v), FP(u), *s);
        return SD_OK;
    }
    size_t C = (size_t)g->shape[g->ndim - 1], R = (size_t)g->shape[g->ndim - 2], B = R && C ? n / (R * C) : 0;
    SD_CU_GRID(k_af_row, B * R, B * R, C, CFP(g), FP(row), *s);
    SD_CU_GRID(k_af_col, B * C, B * C, R, C, CFP(g), FP(col), *s);
    SD_CU_GRID(k_af_rmean, B, B, R, CFP(row), FP(rmean));
    SD_CU_GRID(k_af_u, n, n, R, C, CFP(g), CFP(row), CFP(rmean), CFP(col), FP(u));
    return SD_OK;
}

__global__ void k_af_apply(size_t n, float *p, const float *u, float *m, sd_adafactor_scalars s)
{
    SD_CU_LOOP(i, n) sd_adafactor_apply_elem(&p[i], u[i], m ? &m[i] : NULL, &s);
}

extern "C" int sd_cuda_adafactor_apply(sd_ctx *ctx, sd_tensor *p, const sd_tensor *u, sd_tensor *m,
                                       const sd_adafactor_scalars *s)
{
    size_t n = (size_t)sd_tensor_numel(p);
    SD_CU_GRID(k_af_apply, n, n, FP(p), CFP(u), m ? FP(m) : (float *)NULL, *s);
    return SD_OK;
}

// bitsandbytes' steps: one thread per element (f32 states) or per 256-element block (8-bit codes: the
// block's values in the thread's local arrays, its absmax a max, the codes a binary search), the maps
// passed by value.
__global__ void k_bnb2_32(size_t n, float *p, const float *g, float *m, float *v, sd_bnb2_scalars s)
{
    SD_CU_LOOP(i, n) sd_bnb2_elem32(&s, &p[i], g[i], &m[i], &v[i]);
}

__global__ void k_bnb2_8(size_t n, size_t nb, float *p, const float *g, uint8_t *c1, uint8_t *c2, float *a1, float *a2,
                         sd_bnb2_scalars s, sd_bnb_qmaps q)
{
    SD_CU_LOOP(b, nb) {
        size_t i = b * SD_BNB_BLOCK;
        int valid = (int)(n - i >= SD_BNB_BLOCK ? SD_BNB_BLOCK : n - i);
        sd_bnb2_block8(&s, &q, p + i, g + i, c1 + i, c2 + i, a1, a2, (int64_t)b, valid);
    }
}

extern "C" int sd_cuda_bnb2_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st,
                                 const sd_bnb2_scalars *s, const sd_bnb_qmaps *q)
{
    size_t n = (size_t)st->numel;
    if (!st->mode8) {
        SD_CU_GRID(k_bnb2_32, n, n, FP(p), CFP(g), st->m32, st->v32, *s);
        return SD_OK;
    }
    size_t nb = (n + SD_BNB_BLOCK - 1) / SD_BNB_BLOCK;
    SD_CU_GRID(k_bnb2_8, nb, n, nb, FP(p), CFP(g), st->m8, st->v8, st->absmax1, st->absmax2, *s, *q);
    return SD_OK;
}

__global__ void k_bnb1_32(size_t n, float *p, const float *g, float *m, sd_bnb1_scalars s)
{
    SD_CU_LOOP(i, n) sd_bnb1_elem32(&s, &p[i], g[i], &m[i]);
}

__global__ void k_bnb1_8(size_t n, size_t nb, float *p, const float *g, uint8_t *c1, float *a1, sd_bnb1_scalars s,
                         sd_bnb_qmaps q)
{
    SD_CU_LOOP(b, nb) {
        size_t i = b * SD_BNB_BLOCK;
        int valid = (int)(n - i >= SD_BNB_BLOCK ? SD_BNB_BLOCK : n - i);
        sd_bnb1_block8(&s, &q, p + i, g + i, c1 + i, a1, (int64_t)b, valid);
    }
}

extern "C" int sd_cuda_bnb1_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st,
                                 const sd_bnb1_scalars *s, const sd_bnb_qmaps *q)
{
    size_t n = (size_t)st->numel;
    if (!st->mode8) {
        SD_CU_GRID(k_bnb1_32, n, n, FP(p), CFP(g), st->m32, *s);
        return SD_OK;
    }
    size_t nb = (n + SD_BNB_BLOCK - 1) / SD_BNB_BLOCK;
    SD_CU_GRID(k_bnb1_8, nb, n, nb, FP(p), CFP(g), st->m8, st->absmax1, *s, *q);
    return SD_OK;
}

static const unsigned SUMSQ_MAX_BLOCKS = 1024;

__global__ void k_sumsq_part(size_t n, const float *x, double *part)
{
    __shared__ double sh[256];
    double acc = 0;
    SD_CU_LOOP(i, n) acc += (double)x[i] * (double)x[i];
    double r = block_sum_d(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = r;
}

__global__ void k_sumsq_final(unsigned nb, const double *part, double *out)
{
    __shared__ double sh[256];
    double acc = 0;
    for (unsigned i = threadIdx.x; i < nb; i += blockDim.x) acc += part[i];
    double r = block_sum_d(acc, sh);
    if (threadIdx.x == 0) *out = r;
}

extern "C" int sd_cuda_sumsq(sd_ctx *ctx, const sd_tensor *x, double *out)
{
    size_t n = (size_t)sd_tensor_numel(x);
    *out = 0;
    if (!n) return SD_OK;
    unsigned nb = sd_cuda_blocks(n, SD_CU_THREADS);
    if (nb > SUMSQ_MAX_BLOCKS) nb = SUMSQ_MAX_BLOCKS;
    size_t mark = ctx->scratch.used;
    double *part = sd_cu_scratch<double>(ctx, (size_t)nb + 1, "sumsq");
    if (!part) return SD_ENOMEM;
    cudaStream_t st = sd_cuda_stream();
    SD_CU_KERNEL(nb, SD_CU_THREADS, 0, st, k_sumsq_part)(n, CFP(x), part);
    SD_CU_LAUNCH("k_sumsq_part");
    SD_CU_KERNEL(1, SD_CU_THREADS, 0, st, k_sumsq_final)(nb, part, part + nb);
    SD_CU_LAUNCH("k_sumsq_final");
    SD_CU(cudaMemcpyAsync(out, part + nb, sizeof(double), cudaMemcpyDeviceToHost, st));
    SD_CU(cudaStreamSynchronize(st));
    ctx->scratch.used = mark;
    return SD_OK;
}

__global__ void k_scale_round(size_t n, float *x, float s, int mul, int round, int bf16, int *flag)
{
    SD_CU_LOOP(i, n) {
        float v = x[i];
        if (flag && !isfinite(v)) *flag = 1;
        if (mul) v = __fmul_rn(v, s);
        if (round) v = sd_el_round(v, bf16);
        x[i] = v;
    }
}

extern "C" int sd_cuda_scale_round(sd_ctx *ctx, sd_tensor *x, float s, sd_dtype round, int *nonfinite)
{
    size_t n = (size_t)sd_tensor_numel(x);
    if (!n) return SD_OK;
    int mul = s != 1.0f, r = round != SD_F32;
    if (!nonfinite && !mul && !r) return SD_OK;
    cudaStream_t st = sd_cuda_stream();
    size_t mark = ctx->scratch.used;
    int *flag = NULL;
    if (nonfinite) {
        flag = sd_cu_scratch<int>(ctx, 1, "scale_round");
        if (!flag) return SD_ENOMEM;
        SD_CU(cudaMemsetAsync(flag, 0, sizeof(int), st));
    }
    SD_CU_GRID(k_scale_round, n, n, FP(x), s, mul, r, round == SD_BF16, flag);
    if (nonfinite) {
        int h = 0;
        SD_CU(cudaMemcpyAsync(&h, flag, sizeof(int), cudaMemcpyDeviceToHost, st));
        SD_CU(cudaStreamSynchronize(st));
        if (h) *nonfinite = 1;
    }
    ctx->scratch.used = mark;
    return SD_OK;
}
