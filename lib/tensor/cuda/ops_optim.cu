// CUDA backend: the optimizer ops of ops.h. The AdamW kernel runs the element functions of
// tensor/optim_elem.h that the CPU runs (IEEE-rounded operations only: the same bits on both).
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
