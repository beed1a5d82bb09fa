// CUDA backend: scaled-dot-product attention, forward and backward, chunked over queries.
//
// For each batch element and each block of nq query rows, the scores of all heads against all keys
// (H × nq × Tk floats) are formed in scratch with one strided-batched cuBLAS product (batch = heads;
// q/k/v stay in their [B, T, H·d] layout: a head is a column offset h·d with row stride H·d), then
// a row kernel turns them into probabilities (exact max / sum over the complete row; causal mask;
// log-sum-exp saved) and a second product gives O = P·V. nq is chosen so that the score block
// fits in the free scratch (capped at 64 Mi floats per buffer), so the whole B×H×Tq×Tk matrix
// never exists. Backward per block: recompute P = exp(S − lse), dV += Pᵀ·dO, dP = dO·Vᵀ,
// dS = P∘(dP − Δ) with Δ = rowsum(dO∘O), dQ += s·dS·K, dK += s·dSᵀ·Q. Blocks run in order on
// one stream, so dK/dV accumulate deterministically. Products through sd_cu_gemm_x (its GEMM math:
// under bf16 / fp16 with 16-bit operands, the softmax writing P directly in 16 bits; the chunk
// leaves scratch room for the operands' 16-bit copies).
//
// With the bf16 or fp16 GEMM math and SD_CUDA_ATTN=flash in the environment (opt-in: these kernels
// have been verified only in the CPU emulation of tests/emu so far), the fused kernels of
// flash_attn.cuh run instead (no score matrix in memory at all); geometry they do not cover
// (dk ≠ dv, head dim > 160, too much shared memory for the device, grid limits) keeps this path.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/flash_attn.cuh"

#define FP(t) ((t) ? (float *)(t)->data : (float *)NULL)
#define CFP(t) ((t) ? (const float *)(t)->data : (const float *)NULL)

#define ATTN_MAX_BUF ((int64_t)64 << 20)  // floats per score buffer at most

struct attn_geom {
    int64_t b, h, tq, tk, dk, dv;
    float scale;
    int causal;
};

static attn_geom attn_plan(const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, sd_attn_args a)
{
    attn_geom g;
    g.b = q->shape[0];
    g.h = a.heads;
    g.tq = q->shape[1];
    g.tk = k->shape[1];
    g.dk = q->shape[2] / a.heads;
    g.dv = v->shape[2] / a.heads;
    g.scale = a.scale != 0 ? a.scale : 1.0f / sqrtf((float)g.dk);
    g.causal = a.causal;
    return g;
}

__device__ __forceinline__ float bmax(float v, float *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float bsumf(float v, float *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

// s [h, nq, tk] (scaled scores) → normalised probabilities, in place (T float) or into p (T the
// 16-bit operand type of the bf16 / fp16 GEMM math, rounded to nearest even: the operand of
// O = P·V); lse[(bb·H + h)·Tq + i0 + r]. Masked entries (causal: key j > query i0 + r) become 0.
// One block (256 threads) per row.
__device__ __forceinline__ void p_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void p_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void p_store(__half *p, float v) { *p = __float2half(v); }

template <typename T>
__global__ void k_attn_softmax(int64_t nrows, int64_t nq, int64_t tk, float *s, T *p, float *lse, int64_t lse_base,
                               int64_t tq, int64_t i0, int causal)
{
    __shared__ float sh[256];
    for (int64_t row = blockIdx.x; row < nrows; row += gridDim.x) {
        int64_t hh = row / nq, r = row % nq;
        float *sr = s + row * tk;
        int64_t lim = causal ? (i0 + r + 1 < tk ? i0 + r + 1 : tk) : tk;
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < lim; j += blockDim.x) m = fmaxf(m, sr[j]);
        m = bmax(m, sh);
        float sum = 0;
        for (int64_t j = threadIdx.x; j < lim; j += blockDim.x) sum += expf(sr[j] - m);
        sum = bsumf(sum, sh);
        float inv = 1.0f / sum;
        T *pr = p + row * tk;
        for (int64_t j = threadIdx.x; j < tk; j += blockDim.x) p_store(pr + j, j < lim ? expf(sr[j] - m) * inv : 0.0f);
        if (threadIdx.x == 0) lse[lse_base + hh * tq + i0 + r] = m + logf(sum);
    }
}

// Backward: s [h, nq, tk] scores → P = exp(s − lse) (0 where masked).
__global__ void k_attn_probs(size_t n, int64_t nq, int64_t tk, float *s, const float *lse, int64_t lse_base,
                             int64_t tq, int64_t i0, int causal)
{
    SD_CU_LOOP(i, n) {
        int64_t j = (int64_t)i % tk, row = (int64_t)i / tk, hh = row / nq, r = row % nq;
        int64_t lim = causal ? (i0 + r + 1 < tk ? i0 + r + 1 : tk) : tk;
        s[i] = j < lim ? expf(s[i] - lse[lse_base + hh * tq + i0 + r]) : 0.0f;
    }
}

// delta[h·nq + r] = Σ_c dO[r, h·dv + c]·O[r, h·dv + c] (rows of the block, row stride ldv)
__global__ void k_attn_delta(size_t n, int64_t nq, int64_t dv, int64_t ldv, float *delta, const float *dout,
                             const float *o)
{
    SD_CU_LOOP(i, n) {
        int64_t hh = (int64_t)i / nq, r = (int64_t)i % nq;
        const float *a = dout + r * ldv + hh * dv, *b = o + r * ldv + hh * dv;
        float d = 0;
        for (int64_t c = 0; c < dv; c++) d += a[c] * b[c];
        delta[i] = d;
    }
}

// dp[h, r, j] = p·(dp − delta[h, r]) in place
__global__ void k_attn_ds(size_t n, int64_t tk, float *dp, const float *p, const float *delta)
{
    SD_CU_LOOP(i, n) dp[i] = p[i] * (dp[i] - delta[(int64_t)i / tk]);
}

// Query rows per block: `bufs` score buffers of H·nq·Tk floats in the free scratch, plus
// row_bytes per query row and fixed bytes (the 16-bit operand copies of the bf16 / fp16 math).
static int64_t attn_chunk(sd_ctx *ctx, const attn_geom &g, int bufs, int extra_per_row, size_t row_bytes = 0,
                          size_t fixed = 0)
{
    size_t fr = sd_cu_scratch_free(ctx);
    size_t row = (size_t)g.h * (size_t)g.tk * sizeof(float) * (size_t)bufs + (size_t)g.h * sizeof(float) * extra_per_row +
                 row_bytes;
    size_t avail = fr > 256 + fixed ? fr - 256 - fixed : 0;  // alignment slack
    int64_t nq = row ? (int64_t)(avail / row) : g.tq;
    int64_t cap = ATTN_MAX_BUF / (g.h * g.tk > 0 ? g.h * g.tk : 1);
    if (cap < 1) cap = 1;
    if (nq > cap) nq = cap;
    if (nq > g.tq) nq = g.tq;
    return nq;
}

// ---- the fused kernels (flash_attn.cuh) ------------------------------------------------------

// The 16-bit type of the fused kernels for the current GEMM math: 1 bf16, 2 fp16, 0 not used.
static int flash_kind(void)
{
    if (sd_cuda_gemm_math != SD_GEMM_BF16 && sd_cuda_gemm_math != SD_GEMM_FP16) return 0;
    const char *e = getenv("SD_CUDA_ATTN");
    if (!e || strcmp(e, "flash") != 0) return 0;
    return sd_cuda_gemm_math == SD_GEMM_BF16 ? 1 : 2;
}

// Head dim padded for the kernels' instantiations; 0 when none covers it.
static int flash_dp(int64_t d)
{
    static const int dps[] = { 32, 48, 64, 80, 128, 160 };
    for (int i = 0; i < (int)(sizeof dps / sizeof dps[0]); i++)
        if (d <= dps[i]) return dps[i];
    return 0;
}

// Shared memory a block may have on the current device (opt-in maximum).
static size_t flash_smem_max(void)
{
    static int cached_dev = -1;
    static size_t cached = 0;
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    if (dev != cached_dev) {
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        cached = (size_t)v;
        cached_dev = dev;
    }
    return cached;
}

static int flash_geom_ok(const attn_geom &g)
{
    return g.dk == g.dv && g.dk >= 1 && flash_dp(g.dk) && g.tk >= 1 && g.h <= 65535 && g.b <= 65535 &&
           g.tq <= INT32_MAX / 2 && g.tk <= INT32_MAX / 2 && g.h * g.dk <= INT32_MAX;
}

// Dynamic shared memory above 48 KiB must be allowed per kernel.
template <class K> static int flash_allow(K kernel, size_t bytes)
{
    SD_CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return SD_OK;
}

template <class T, int DP>
static int flash_fwd_t(const attn_geom &g, float *o, float *lse, const float *q, const float *k, const float *v)
{
    typedef sd_fa::fa_cfg<DP> C;
    int rc = flash_allow(sd_fa::fa_fwd<T, DP>, C::F_BYTES);
    if (rc) return rc;
    dim3 grid((unsigned)((g.tq + C::F_BQ - 1) / C::F_BQ), (unsigned)g.h, (unsigned)g.b);
    SD_CU_KERNEL(grid, C::F_NT, C::F_BYTES, sd_cuda_stream(), sd_fa::fa_fwd<T, DP>)(q, k, v, o, lse, (int)g.h, (int)g.tq,
                                                                          (int)g.tk, (int)g.dk, g.scale, g.causal);
    SD_CU_LAUNCH("flash attention forward");
    return SD_OK;
}

template <class T, int DP>
static int flash_bwd_t(const attn_geom &g, float *dq, float *dk, float *dv, const float *dout, const float *q,
                       const float *k, const float *v, const float *lse, const float *delta)
{
    typedef sd_fa::fa_cfg<DP> C;
    int rc;
    if (dk || dv) {
        if ((rc = flash_allow(sd_fa::fa_bwd_dkdv<T, DP>, C::B_BYTES))) return rc;
        dim3 grid((unsigned)((g.tk + C::B_BK - 1) / C::B_BK), (unsigned)g.h, (unsigned)g.b);
        SD_CU_KERNEL(grid, C::B_NT, C::B_BYTES, sd_cuda_stream(), sd_fa::fa_bwd_dkdv<T, DP>)(
            q, k, v, dout, lse, delta, dk, dv, (int)g.h, (int)g.tq, (int)g.tk, (int)g.dk, g.scale, g.causal);
        SD_CU_LAUNCH("flash attention backward dK/dV");
    }
    if (dq) {
        if ((rc = flash_allow(sd_fa::fa_bwd_dq<T, DP>, C::Q_BYTES))) return rc;
        dim3 grid((unsigned)((g.tq + C::Q_BQ - 1) / C::Q_BQ), (unsigned)g.h, (unsigned)g.b);
        SD_CU_KERNEL(grid, C::Q_NT, C::Q_BYTES, sd_cuda_stream(), sd_fa::fa_bwd_dq<T, DP>)(
            q, k, v, dout, lse, delta, dq, (int)g.h, (int)g.tq, (int)g.tk, (int)g.dk, g.scale, g.causal);
        SD_CU_LAUNCH("flash attention backward dQ");
    }
    return SD_OK;
}

// Shared memory the three kernels need for (T, DP), the largest.
template <int DP> static size_t flash_smem_need(int fwd)
{
    typedef sd_fa::fa_cfg<DP> C;
    if (fwd) return C::F_BYTES;
    return C::B_BYTES > C::Q_BYTES ? C::B_BYTES : C::Q_BYTES;
}

#define FLASH_DISPATCH(DPV, CALL)                                        \
    switch (DPV) {                                                       \
    case 32: { const int DP = 32; CALL; } break;                         \
    case 48: { const int DP = 48; CALL; } break;                         \
    case 64: { const int DP = 64; CALL; } break;                         \
    case 80: { const int DP = 80; CALL; } break;                         \
    case 128: { const int DP = 128; CALL; } break;                       \
    default: { const int DP = 160; CALL; } break;                        \
    }

// 1 when the fused kernels take this call (kind: flash_kind()).
static int flash_usable(const attn_geom &g, int kind, int fwd)
{
    if (!kind || !flash_geom_ok(g)) return 0;
    size_t need = 0;
    FLASH_DISPATCH(flash_dp(g.dk), need = flash_smem_need<DP>(fwd));
    return need <= flash_smem_max();
}

static int flash_forward(const attn_geom &g, int kind, float *o, float *lse, const float *q, const float *k,
                         const float *v)
{
    int rc = SD_OK;
    if (kind == 1) FLASH_DISPATCH(flash_dp(g.dk), rc = (flash_fwd_t<__nv_bfloat16, DP>(g, o, lse, q, k, v)))
    else FLASH_DISPATCH(flash_dp(g.dk), rc = (flash_fwd_t<__half, DP>(g, o, lse, q, k, v)))
    return rc;
}

static int flash_backward(sd_ctx *ctx, const attn_geom &g, int kind, float *dq, float *dk, float *dv,
                          const float *dout, const float *q, const float *k, const float *v, const float *o,
                          const float *lse)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    size_t nrows = (size_t)(g.b * g.h * g.tq);
    float *delta = sd_cu_scratch<float>(ctx, nrows, "flash attention_bwd");
    if (!delta) return SD_ENOMEM;
    SD_CU_KERNEL(sd_cuda_blocks(nrows, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), sd_fa::fa_bwd_delta)(
        dout, o, delta, g.b, (int)g.h, (int)g.tq, (int)g.dk);
    cudaError_t e = cudaGetLastError();
    int rc = e != cudaSuccess ? sd_cuda_fail(e, "launching flash attention delta") : SD_OK;
    if (!rc) {
        if (kind == 1) FLASH_DISPATCH(flash_dp(g.dk), rc = (flash_bwd_t<__nv_bfloat16, DP>(g, dq, dk, dv, dout, q, k, v, lse, delta)))
        else FLASH_DISPATCH(flash_dp(g.dk), rc = (flash_bwd_t<__half, DP>(g, dq, dk, dv, dout, q, k, v, lse, delta)))
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

extern "C" int sd_cuda_attention(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q, const sd_tensor *k,
                                 const sd_tensor *v, sd_attn_args a)
{
    attn_geom g = attn_plan(q, k, v, a);
    if (!g.b || !g.tq) return SD_OK;
    int kind = flash_kind();
    if (flash_usable(g, kind, 1)) return flash_forward(g, kind, FP(o), FP(lse), CFP(q), CFP(k), CFP(v));
    int64_t ldq = g.h * g.dk, ldv = g.h * g.dv;
    // Under the bf16 / fp16 math the softmax writes P in 16 bits (a second buffer), and the scratch
    // keeps room for the 16-bit copies of a Q block and of K or V (the products convert them).
    sd_cu_elt e = sd_cu_math_elt();
    int64_t nqb = 0;
    if (e != SD_CU_F32) {
        size_t dmax = (size_t)(g.dk > g.dv ? g.dk : g.dv) + 8;  // + the rows' alignment padding
        nqb = attn_chunk(ctx, g, 1, 0, (size_t)g.h * ((size_t)g.tk + dmax) * 2 + 128,
                         (size_t)g.tk * (size_t)g.h * dmax * 2 + 256);
        if (nqb < 1) e = SD_CU_F32;  // not even one row so: the fp32 layout (its products fall back)
    }
    if (e == SD_CU_F32) nqb = attn_chunk(ctx, g, 1, 0);
    if (nqb < 1)
        return sd_err(SD_ENOMEM, "CUDA attention: op scratch arena too small for one row of scores (%zu bytes, %zu free)",
                      (size_t)(g.h * g.tk) * sizeof(float), sd_cu_scratch_free(ctx));
    size_t mark = sd_arena_mark(&ctx->scratch);
    float *s = sd_cu_scratch<float>(ctx, (size_t)(g.h * nqb * g.tk), "attention");
    void *p16 = s && e != SD_CU_F32 ? sd_cu_scratch<uint16_t>(ctx, (size_t)(g.h * nqb * g.tk), "attention") : NULL;
    if (!s || (e != SD_CU_F32 && !p16)) { sd_arena_reset(&ctx->scratch, mark); return SD_ENOMEM; }
    sd_cu_op pop = { e == SD_CU_F32 ? (const void *)s : p16, e, e == SD_CU_F32 ? s : NULL };
    int rc = SD_OK;
    for (int64_t bb = 0; !rc && bb < g.b; bb++) {
        const float *qb = CFP(q) + bb * g.tq * ldq, *kb = CFP(k) + bb * g.tk * ldq, *vb = CFP(v) + bb * g.tk * ldv;
        float *ob = FP(o) + bb * g.tq * ldv;
        for (int64_t i0 = 0; !rc && i0 < g.tq; i0 += nqb) {
            int64_t nq = g.tq - i0 < nqb ? g.tq - i0 : nqb;
            // S_h [nq, tk] = scale · Q_h · K_hᵀ
            rc = sd_cu_gemm_x(ctx, 0, 1, nq, g.tk, g.dk, g.scale, qb + i0 * ldq, ldq, g.dk, kb, ldq, g.dk, 0.0f, s, g.tk,
                            nq * g.tk, g.h);
            if (rc) break;
            int64_t nrows = g.h * nq;
            unsigned nbl = (unsigned)(nrows > 65535 * 16 ? 65535 * 16 : nrows);
            if (e == SD_CU_BF16)
                SD_CU_KERNEL(nbl, 256, 0, sd_cuda_stream(), k_attn_softmax<__nv_bfloat16>)(
                    nrows, nq, g.tk, s, (__nv_bfloat16 *)p16, FP(lse), bb * g.h * g.tq, g.tq, i0, g.causal);
            else if (e == SD_CU_F16)
                SD_CU_KERNEL(nbl, 256, 0, sd_cuda_stream(), k_attn_softmax<__half>)(
                    nrows, nq, g.tk, s, (__half *)p16, FP(lse), bb * g.h * g.tq, g.tq, i0, g.causal);
            else
                SD_CU_KERNEL(nbl, 256, 0, sd_cuda_stream(), k_attn_softmax<float>)(
                    nrows, nq, g.tk, s, s, FP(lse), bb * g.h * g.tq, g.tq, i0, g.causal);
            cudaError_t err = cudaGetLastError();
            if (err != cudaSuccess) { rc = sd_cuda_fail(err, "launching attention softmax"); break; }
            // O_h [nq, dv] = P_h · V_h
            rc = sd_cu_gemm_x(ctx, 0, 0, nq, g.dv, g.tk, 1.0f, pop, g.tk, nq * g.tk, sd_cu_f32op(vb), ldv, g.dv, 0.0f,
                              ob + i0 * ldv, ldv, g.dv, g.h);
        }
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

extern "C" int sd_cuda_attention_bwd(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv, const sd_tensor *dout,
                                     const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, const sd_tensor *o,
                                     const sd_tensor *lse, sd_attn_args a)
{
    attn_geom g = attn_plan(q, k, v, a);
    if (!g.b || !g.tq || (!dq && !dk && !dv)) return SD_OK;
    int kind = flash_kind();
    if (flash_usable(g, kind, 0) && sd_cu_scratch_free(ctx) >= (size_t)(g.b * g.h * g.tq) * sizeof(float) + 256)
        return flash_backward(ctx, g, kind, FP(dq), FP(dk), FP(dv), CFP(dout), CFP(q), CFP(k), CFP(v), CFP(o),
                              CFP(lse));
    int64_t ldq = g.h * g.dk, ldv = g.h * g.dv;
    // Under the bf16 / fp16 math the scratch keeps room for the products' 16-bit copies: P or dS,
    // a block of Q or dO, and K or V.
    int64_t nqb = 0;
    if (sd_cu_math_elt() != SD_CU_F32) {
        size_t dmax = (size_t)(g.dk > g.dv ? g.dk : g.dv) + 8;
        nqb = attn_chunk(ctx, g, 2, 1, (size_t)g.h * ((size_t)g.tk + dmax) * 2 + 128,
                         (size_t)g.tk * (size_t)g.h * dmax * 2 + 256);
    }
    if (nqb < 1) nqb = attn_chunk(ctx, g, 2, 1);  // (the products fall back to fp32 operands)
    if (nqb < 1)
        return sd_err(SD_ENOMEM, "CUDA attention_bwd: op scratch arena too small for one row of scores (%zu bytes, %zu free)",
                      (size_t)(2 * g.h * g.tk) * sizeof(float), sd_cu_scratch_free(ctx));
    size_t mark = sd_arena_mark(&ctx->scratch);
    float *p = sd_cu_scratch<float>(ctx, (size_t)(g.h * nqb * g.tk), "attention_bwd");
    float *dp = p ? sd_cu_scratch<float>(ctx, (size_t)(g.h * nqb * g.tk), "attention_bwd") : NULL;
    float *delta = dp ? sd_cu_scratch<float>(ctx, (size_t)(g.h * nqb), "attention_bwd") : NULL;
    if (!delta) { sd_arena_reset(&ctx->scratch, mark); return SD_ENOMEM; }
    int rc = SD_OK;
    for (int64_t bb = 0; !rc && bb < g.b; bb++) {
        const float *qb = CFP(q) + bb * g.tq * ldq, *kb = CFP(k) + bb * g.tk * ldq, *vb = CFP(v) + bb * g.tk * ldv;
        const float *dob = CFP(dout) + bb * g.tq * ldv, *obb = CFP(o) + bb * g.tq * ldv;
        float *dqb = dq ? FP(dq) + bb * g.tq * ldq : NULL;
        float *dkb = dk ? FP(dk) + bb * g.tk * ldq : NULL;
        float *dvb = dv ? FP(dv) + bb * g.tk * ldv : NULL;
        for (int64_t i0 = 0; !rc && i0 < g.tq; i0 += nqb) {
            int64_t nq = g.tq - i0 < nqb ? g.tq - i0 : nqb;
            size_t ns = (size_t)(g.h * nq * g.tk);
            rc = sd_cu_gemm_x(ctx, 0, 1, nq, g.tk, g.dk, g.scale, qb + i0 * ldq, ldq, g.dk, kb, ldq, g.dk, 0.0f, p, g.tk,
                            nq * g.tk, g.h);
            if (rc) break;
            SD_CU_KERNEL(sd_cuda_blocks(ns, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), k_attn_probs)(
                ns, nq, g.tk, p, CFP(lse), bb * g.h * g.tq, g.tq, i0, g.causal);
            cudaError_t e = cudaGetLastError();
            if (e != cudaSuccess) { rc = sd_cuda_fail(e, "launching attention probs"); break; }
            // dV_h [tk, dv] += P_hᵀ · dO_h
            if (dvb) {
                rc = sd_cu_gemm_x(ctx, 1, 0, g.tk, g.dv, nq, 1.0f, p, g.tk, nq * g.tk, dob + i0 * ldv, ldv, g.dv, 1.0f, dvb, ldv,
                                g.dv, g.h);
                if (rc) break;
            }
            if (!dqb && !dkb) continue;
            // dP_h [nq, tk] = dO_h · V_hᵀ
            rc = sd_cu_gemm_x(ctx, 0, 1, nq, g.tk, g.dv, 1.0f, dob + i0 * ldv, ldv, g.dv, vb, ldv, g.dv, 0.0f, dp, g.tk,
                            nq * g.tk, g.h);
            if (rc) break;
            size_t nd = (size_t)(g.h * nq);
            SD_CU_KERNEL(sd_cuda_blocks(nd, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), k_attn_delta)(
                nd, nq, g.dv, ldv, delta, dob + i0 * ldv, obb + i0 * ldv);
            e = cudaGetLastError();
            if (e != cudaSuccess) { rc = sd_cuda_fail(e, "launching attention delta"); break; }
            SD_CU_KERNEL(sd_cuda_blocks(ns, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), k_attn_ds)(ns, g.tk, dp, p, delta);
            e = cudaGetLastError();
            if (e != cudaSuccess) { rc = sd_cuda_fail(e, "launching attention dS"); break; }
            // dQ_h [nq, dk] += scale · dS_h · K_h
            if (dqb) {
                rc = sd_cu_gemm_x(ctx, 0, 0, nq, g.dk, g.tk, g.scale, dp, g.tk, nq * g.tk, kb, ldq, g.dk, 1.0f, dqb + i0 * ldq,
                                ldq, g.dk, g.h);
                if (rc) break;
            }
            // dK_h [tk, dk] += scale · dS_hᵀ · Q_h
            if (dkb)
                rc = sd_cu_gemm_x(ctx, 1, 0, g.tk, g.dk, nq, g.scale, dp, g.tk, nq * g.tk, qb + i0 * ldq, ldq, g.dk, 1.0f, dkb,
                                ldq, g.dk, g.h);
        }
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}
