// Internal to lib/tensor/cuda/: fused ("flash") scaled-dot-product attention, forward and backward,
// with bf16 or fp16 tensor-core products (nvcuda::wmma m16n16k16, fp32 accumulation). Device code
// only; ops_attn.cu launches it (SD_CUDA_ATTN=flash with the bf16/fp16 GEMM math), and
// tests/emu/ compiles this same header with g++ against a CPU emulation of CUDA (tests/emu/cuda_emu.h).
//
// Semantics are those of sd_op_attention / sd_op_attention_bwd (lib/tensor/kern_attn.h): q, k [B, T, H·d],
// v, o [B, T, H·d] (here dk = dv = d ≤ DP, the head dim padded with zeros to a multiple of 16 in
// shared memory), lse [B, H, Tq] = log Σ_j exp(s_ij), s = scale·q·kᵀ, causal: query i sees keys
// j ≤ i (absolute indices, also when Tq ≠ Tk). Backward accumulates (+=) into dq, dk, dv.
//
// Products: q, k, v, dO are rounded to the 16-bit type T when a tile is loaded into shared memory
// (as cuBLAS's *_FAST_16BF / _16F compute types round the operands of the existing path), P and dS
// are rounded to T for their products; everything else (scores, softmax statistics, accumulators,
// outputs) is fp32.
//   fa_fwd:       one block per (query block of F_BQ rows, head, batch), 16 rows per warp; loops over
//                 key tiles of F_BK: S = Q·Kᵀ (wmma), online softmax (running max m and sum l per row
//                 in registers of the two lanes that own the row), O·α + P·V (wmma, O in shared memory),
//                 finally O/l and lse = m + log l.
//   fa_bwd_delta: Δ_i = Σ_c dO_ic·O_ic (fp32), one thread per row.
//   fa_bwd_dkdv:  one block per (key block of B_BK rows, head, batch), 16 keys per warp; loops over
//                 query tiles of B_BQ: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, P = exp(Sᵀ − lse), dS = P∘(dP − Δ),
//                 dV += Pᵀ·dO, dK += dSᵀ·Q; writes dk += scale·dK, dv += dV.
//   fa_bwd_dq:    one block per (query block of Q_BQ rows, head, batch); loops over key tiles of Q_BK:
//                 S, dP = dO·Vᵀ, P, dS, dQ += dS·K; writes dq += scale·dQ.
// Every output element is written by exactly one block (no atomics): the results are deterministic.
//
// Only the documented wmma API is used (fragments go through shared memory with load_matrix_sync /
// store_matrix_sync; no assumption on which lane holds which element), plus __syncthreads,
// __syncwarp and __shfl_xor_sync. Shared memory is dynamic (the launch passes fa_cfg<DP>::*_BYTES;
// above 48 KiB the kernel needs cudaFuncAttributeMaxDynamicSharedMemorySize).
#ifndef SD_TENSOR_CUDA_FLASH_ATTN_CUH
#define SD_TENSOR_CUDA_FLASH_ATTN_CUH

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifndef SD_FA_DYNAMIC_SMEM  // (the emulator defines its own)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#define SD_FA_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

// (Internal linkage: the emulated build of tests/emu links libsd, which in a CUDA build holds this
// header's compiled kernels under the same names.)
namespace sd_fa {
namespace {

namespace wmma = nvcuda::wmma;

template <class T> __device__ __forceinline__ T to16(float x);
template <> __device__ __forceinline__ __nv_bfloat16 to16<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half to16<__half>(float x) { return __float2half(x); }

__host__ __device__ constexpr size_t al128(size_t x) { return (x + 127) / 128 * 128; }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// Tile sizes and shared-memory layout (byte offsets) for the padded head dim DP (a multiple of 16).
// Rows of 16-bit tiles have LD16 = DP + 8 elements, float tiles LDF = DP + 4 (fewer bank conflicts;
// every fragment pointer stays 32-byte aligned).
template <int DP> struct fa_cfg {
    static_assert(DP % 16 == 0 && DP >= 16, "DP: a multiple of 16");
    static constexpr int LD16 = DP + 8, LDF = DP + 4;
    // forward: F_BQ query rows per block (4 warps), key tiles of F_BK
    static constexpr int F_BQ = 64, F_BK = DP > 64 ? 32 : 64, F_NT = F_BQ * 2;
    static constexpr int F_LDS = F_BK + 4, F_LDP = F_BK + 8;
    static constexpr size_t F_Q = 0, F_K = F_Q + al128((size_t)F_BQ * LD16 * 2),
                            F_V = F_K + al128((size_t)F_BK * LD16 * 2), F_S = F_V + al128((size_t)F_BK * LD16 * 2),
                            F_P = F_S + al128((size_t)F_BQ * F_LDS * 4), F_O = F_P + al128((size_t)F_BQ * F_LDP * 2),
                            F_BYTES = F_O + al128((size_t)F_BQ * LDF * 4);
    // backward dK/dV: B_BK keys per block, query tiles of B_BQ
    static constexpr int B_BK = DP > 96 ? 32 : 64, B_BQ = 32, B_NT = B_BK * 2;
    static constexpr int B_LDS = B_BQ + 4, B_LDP = B_BQ + 8;
    static constexpr size_t B_K = 0, B_V = B_K + al128((size_t)B_BK * LD16 * 2),
                            B_Q = B_V + al128((size_t)B_BK * LD16 * 2), B_DO = B_Q + al128((size_t)B_BQ * LD16 * 2),
                            B_DK = B_DO + al128((size_t)B_BQ * LD16 * 2), B_DV = B_DK + al128((size_t)B_BK * LDF * 4),
                            B_S = B_DV + al128((size_t)B_BK * LDF * 4), B_DP = B_S + al128((size_t)B_BK * B_LDS * 4),
                            B_P = B_DP + al128((size_t)B_BK * B_LDS * 4), B_DS = B_P + al128((size_t)B_BK * B_LDP * 2),
                            B_L = B_DS + al128((size_t)B_BK * B_LDP * 2), B_D = B_L + al128((size_t)B_BQ * 4),
                            B_BYTES = B_D + al128((size_t)B_BQ * 4);
    // backward dQ: Q_BQ query rows per block, key tiles of Q_BK
    static constexpr int Q_BQ = DP > 96 ? 32 : 64, Q_BK = 32, Q_NT = Q_BQ * 2;
    static constexpr int Q_LDS = Q_BK + 4, Q_LDP = Q_BK + 8;
    static constexpr size_t Q_Q = 0, Q_DO = Q_Q + al128((size_t)Q_BQ * LD16 * 2),
                            Q_K = Q_DO + al128((size_t)Q_BQ * LD16 * 2), Q_V = Q_K + al128((size_t)Q_BK * LD16 * 2),
                            Q_DQ = Q_V + al128((size_t)Q_BK * LD16 * 2), Q_S = Q_DQ + al128((size_t)Q_BQ * LDF * 4),
                            Q_DP = Q_S + al128((size_t)Q_BQ * Q_LDS * 4), Q_DS = Q_DP + al128((size_t)Q_BQ * Q_LDS * 4),
                            Q_BYTES = Q_DS + al128((size_t)Q_BQ * Q_LDP * 2);
};

// dst[r·ld + c] = T(src[r·lds + c]) for r < rows, c < d; 0 for the rest of [R × DP] (block-wide).
template <class T, int R, int DP>
__device__ __forceinline__ void load_tile(T *dst, int ld, const float *src, int64_t lds, int rows, int d)
{
    for (int e = threadIdx.x; e < R * DP; e += blockDim.x) {
        int r = e / DP, c = e % DP;
        float x = r < rows && c < d ? src[(int64_t)r * lds + c] : 0.0f;
        dst[r * ld + c] = to16<T>(x);
    }
}

// Warp-collective: C[16 × 16·nt] (float, ldc) = A[16 × 16·kt] · Bᵀ with B stored as [16·nt × 16·kt]
// rows (ldb), i.e. C_ij = Σ_k A_ik·B_jk.
template <class T>
__device__ __forceinline__ void warp_mm_nt(float *c, int ldc, const T *a, int lda, const T *b, int ldb, int nt, int kt)
{
    for (int n = 0; n < nt; n++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < kt; k++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
            wmma::load_matrix_sync(fa, a + k * 16, lda);
            wmma::load_matrix_sync(fb, b + n * 16 * ldb + k * 16, ldb);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(c + n * 16, acc, ldc, wmma::mem_row_major);
    }
}

// Warp-collective: C[16 × 16·nt] (float, ldc) += A[16 × 16·kt] · B with B stored [16·kt × 16·nt] (ldb).
template <class T>
__device__ __forceinline__ void warp_mm_nn_acc(float *c, int ldc, const T *a, int lda, const T *b, int ldb, int nt,
                                               int kt)
{
    for (int n = 0; n < nt; n++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::load_matrix_sync(acc, c + n * 16, ldc, wmma::mem_row_major);
        for (int k = 0; k < kt; k++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
            wmma::load_matrix_sync(fa, a + k * 16, lda);
            wmma::load_matrix_sync(fb, b + k * 16 * ldb + n * 16, ldb);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(c + n * 16, acc, ldc, wmma::mem_row_major);
    }
}

// Forward. Grid (⌈Tq/F_BQ⌉, H, B), F_NT threads, F_BYTES of dynamic shared memory. Row stride of
// q, k, v, o: H·d.
template <class T, int DP>
__global__ void __launch_bounds__(fa_cfg<DP>::F_NT)
    fa_fwd(const float *q, const float *k, const float *v, float *o, float *lse, int H, int tq, int tk, int d,
           float scale, int causal)
{
    typedef fa_cfg<DP> C;
    constexpr int BQ = C::F_BQ, BK = C::F_BK, LD = C::LD16, LDF = C::LDF, LDS = C::F_LDS, LDP = C::F_LDP;
    SD_FA_DYNAMIC_SMEM(smem);
    T *Qs = (T *)(smem + C::F_Q), *Ks = (T *)(smem + C::F_K), *Vs = (T *)(smem + C::F_V);
    float *Ss = (float *)(smem + C::F_S), *Os = (float *)(smem + C::F_O);
    T *Ps = (T *)(smem + C::F_P);
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * BQ, nq = imin(BQ, tq - i0);
    const int64_t ld = (int64_t)H * d;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, r = lane >> 1, half = lane & 1;
    const int i = i0 + warp * 16 + r;  // the query row of this lane pair
    load_tile<T, BQ, DP>(Qs, LD, q + ((int64_t)b * tq + i0) * ld + (int64_t)h * d, ld, nq, d);
    for (int e = tid; e < BQ * LDF; e += blockDim.x) Os[e] = 0.0f;
    const float *kb = k + (int64_t)b * tk * ld + (int64_t)h * d, *vb = v + (int64_t)b * tk * ld + (int64_t)h * d;
    float *Sw = Ss + warp * 16 * LDS, *Ow = Os + warp * 16 * LDF;
    T *Pw = Ps + warp * 16 * LDP;
    float m = -INFINITY, l = 0.0f;  // running max and sum of row i (the same in both lanes of the pair)
    const int jend = causal ? imin(tk, i0 + nq) : tk;
    for (int j0 = 0; j0 < jend; j0 += BK) {
        const int nk = imin(BK, tk - j0);
        __syncthreads();  // every warp is done with the previous K/V tile (and Q, O are in place)
        load_tile<T, BK, DP>(Ks, LD, kb + (int64_t)j0 * ld, ld, nk, d);
        load_tile<T, BK, DP>(Vs, LD, vb + (int64_t)j0 * ld, ld, nk, d);
        __syncthreads();
        warp_mm_nt<T>(Sw, LDS, Qs + warp * 16 * LD, LD, Ks, LD, BK / 16, DP / 16);
        __syncwarp();
        const int lim = causal ? imin(nk, i - j0 + 1) : nk;  // visible keys of this tile: c < lim
        float mx = -INFINITY;
        for (int c = half; c < lim; c += 2) mx = fmaxf(mx, Sw[r * LDS + c] * scale);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float mn = fmaxf(m, mx);
        const float alpha = mn == -INFINITY ? 1.0f : expf(m - mn);  // m = −∞ (first tile) → 0
        float sum = 0.0f;
        for (int c = half; c < BK; c += 2) {
            float p = c < lim ? expf(Sw[r * LDS + c] * scale - mn) : 0.0f;
            sum += p;
            Pw[r * LDP + c] = to16<T>(p);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        for (int c = half; c < DP; c += 2) Ow[r * LDF + c] *= alpha;
        m = mn;
        l = l * alpha + sum;
        __syncwarp();
        warp_mm_nn_acc<T>(Ow, LDF, Pw, LDP, Vs, LD, DP / 16, BK / 16);
    }
    __syncwarp();
    if (i < tq) {
        float inv = 1.0f / l, *orow = o + ((int64_t)b * tq + i) * ld + (int64_t)h * d;
        for (int c = half; c < d; c += 2) orow[c] = Ow[r * LDF + c] * inv;
        if (half == 0) lse[((int64_t)b * H + h) * tq + i] = m + logf(l);
    }
}

// delta[(b·H + h)·Tq + i] = Σ_c dO·O over the head's d columns. Grid-stride over B·H·Tq rows.
__global__ void fa_bwd_delta(const float *dout, const float *o, float *delta, int64_t B, int H, int tq, int d)
{
    const int64_t ld = (int64_t)H * d, n = B * H * (int64_t)tq;
    for (int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; row < n; row += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = row % tq, h = row / tq % H, b = row / ((int64_t)tq * H);
        const float *x = dout + (b * tq + i) * ld + h * d, *y = o + (b * tq + i) * ld + h * d;
        float s = 0.0f;
        for (int c = 0; c < d; c++) s += x[c] * y[c];
        delta[row] = s;
    }
}

// dK, dV. Grid (⌈Tk/B_BK⌉, H, B), B_NT threads, B_BYTES of dynamic shared memory. dk or dv may be NULL.
template <class T, int DP>
__global__ void __launch_bounds__(fa_cfg<DP>::B_NT)
    fa_bwd_dkdv(const float *q, const float *k, const float *v, const float *dout, const float *lse,
                const float *delta, float *dk, float *dv, int H, int tq, int tk, int d, float scale, int causal)
{
    typedef fa_cfg<DP> C;
    constexpr int BK = C::B_BK, BQ = C::B_BQ, LD = C::LD16, LDF = C::LDF, LDS = C::B_LDS, LDP = C::B_LDP;
    SD_FA_DYNAMIC_SMEM(smem);
    T *Ks = (T *)(smem + C::B_K), *Vs = (T *)(smem + C::B_V), *Qs = (T *)(smem + C::B_Q), *Ds = (T *)(smem + C::B_DO);
    float *dKs = (float *)(smem + C::B_DK), *dVs = (float *)(smem + C::B_DV);
    float *Ss = (float *)(smem + C::B_S), *dPs = (float *)(smem + C::B_DP);
    T *Ps = (T *)(smem + C::B_P), *dSs = (T *)(smem + C::B_DS);
    float *Lq = (float *)(smem + C::B_L), *Dq = (float *)(smem + C::B_D);
    const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * BK, nk = imin(BK, tk - j0);
    const int64_t ld = (int64_t)H * d, hd = (int64_t)h * d, lrow = ((int64_t)b * H + h) * tq;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, r = lane >> 1, half = lane & 1;
    const int j = j0 + warp * 16 + r;  // the key row of this lane pair
    load_tile<T, BK, DP>(Ks, LD, k + ((int64_t)b * tk + j0) * ld + hd, ld, nk, d);
    load_tile<T, BK, DP>(Vs, LD, v + ((int64_t)b * tk + j0) * ld + hd, ld, nk, d);
    for (int e = tid; e < BK * LDF; e += blockDim.x) dKs[e] = dVs[e] = 0.0f;
    float *Sw = Ss + warp * 16 * LDS, *dPw = dPs + warp * 16 * LDS;
    float *dKw = dKs + warp * 16 * LDF, *dVw = dVs + warp * 16 * LDF;
    T *Pw = Ps + warp * 16 * LDP, *dSw = dSs + warp * 16 * LDP;
    const float *qb = q + (int64_t)b * tq * ld + hd, *dob = dout + (int64_t)b * tq * ld + hd;
    // causal: query tiles wholly before key j0 see none of this block's keys
    for (int i0 = causal ? j0 / BQ * BQ : 0; i0 < tq; i0 += BQ) {
        const int nq = imin(BQ, tq - i0);
        __syncthreads();  // every warp is done with the previous Q/dO tile (and K, V, dK, dV are in place)
        load_tile<T, BQ, DP>(Qs, LD, qb + (int64_t)i0 * ld, ld, nq, d);
        load_tile<T, BQ, DP>(Ds, LD, dob + (int64_t)i0 * ld, ld, nq, d);
        for (int e = tid; e < BQ; e += blockDim.x) {
            Lq[e] = e < nq ? lse[lrow + i0 + e] : 0.0f;
            Dq[e] = e < nq ? delta[lrow + i0 + e] : 0.0f;
        }
        __syncthreads();
        warp_mm_nt<T>(Sw, LDS, Ks + warp * 16 * LD, LD, Qs, LD, BQ / 16, DP / 16);   // Sᵀ [16 keys × BQ]
        warp_mm_nt<T>(dPw, LDS, Vs + warp * 16 * LD, LD, Ds, LD, BQ / 16, DP / 16);  // dPᵀ
        __syncwarp();
        for (int c = half; c < BQ; c += 2) {
            const int i = i0 + c;
            const bool ok = c < nq && j < tk && (!causal || j <= i);
            const float p = ok ? expf(Sw[r * LDS + c] * scale - Lq[c]) : 0.0f;
            Pw[r * LDP + c] = to16<T>(p);
            dSw[r * LDP + c] = to16<T>(p * (dPw[r * LDS + c] - Dq[c]));
        }
        __syncwarp();
        warp_mm_nn_acc<T>(dVw, LDF, Pw, LDP, Ds, LD, DP / 16, BQ / 16);   // dV += Pᵀ·dO
        warp_mm_nn_acc<T>(dKw, LDF, dSw, LDP, Qs, LD, DP / 16, BQ / 16);  // dK += dSᵀ·Q
    }
    __syncthreads();  // (also orders the zeroing above when no query tile was visited)
    if (j < tk) {
        if (dk) {
            float *row = dk + ((int64_t)b * tk + j) * ld + hd;
            for (int c = half; c < d; c += 2) row[c] += scale * dKw[r * LDF + c];
        }
        if (dv) {
            float *row = dv + ((int64_t)b * tk + j) * ld + hd;
            for (int c = half; c < d; c += 2) row[c] += dVw[r * LDF + c];
        }
    }
}

// dQ. Grid (⌈Tq/Q_BQ⌉, H, B), Q_NT threads, Q_BYTES of dynamic shared memory.
template <class T, int DP>
__global__ void __launch_bounds__(fa_cfg<DP>::Q_NT)
    fa_bwd_dq(const float *q, const float *k, const float *v, const float *dout, const float *lse, const float *delta,
              float *dq, int H, int tq, int tk, int d, float scale, int causal)
{
    typedef fa_cfg<DP> C;
    constexpr int BQ = C::Q_BQ, BK = C::Q_BK, LD = C::LD16, LDF = C::LDF, LDS = C::Q_LDS, LDP = C::Q_LDP;
    SD_FA_DYNAMIC_SMEM(smem);
    T *Qs = (T *)(smem + C::Q_Q), *Ds = (T *)(smem + C::Q_DO), *Ks = (T *)(smem + C::Q_K), *Vs = (T *)(smem + C::Q_V);
    float *dQs = (float *)(smem + C::Q_DQ), *Ss = (float *)(smem + C::Q_S), *dPs = (float *)(smem + C::Q_DP);
    T *dSs = (T *)(smem + C::Q_DS);
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * BQ, nq = imin(BQ, tq - i0);
    const int64_t ld = (int64_t)H * d, hd = (int64_t)h * d, lrow = ((int64_t)b * H + h) * tq;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, r = lane >> 1, half = lane & 1;
    const int i = i0 + warp * 16 + r;  // the query row of this lane pair
    load_tile<T, BQ, DP>(Qs, LD, q + ((int64_t)b * tq + i0) * ld + hd, ld, nq, d);
    load_tile<T, BQ, DP>(Ds, LD, dout + ((int64_t)b * tq + i0) * ld + hd, ld, nq, d);
    for (int e = tid; e < BQ * LDF; e += blockDim.x) dQs[e] = 0.0f;
    const float li = i < tq ? lse[lrow + i] : 0.0f, di = i < tq ? delta[lrow + i] : 0.0f;
    float *Sw = Ss + warp * 16 * LDS, *dPw = dPs + warp * 16 * LDS, *dQw = dQs + warp * 16 * LDF;
    T *dSw = dSs + warp * 16 * LDP;
    const float *kb = k + (int64_t)b * tk * ld + hd, *vb = v + (int64_t)b * tk * ld + hd;
    const int jend = causal ? imin(tk, i0 + nq) : tk;
    for (int j0 = 0; j0 < jend; j0 += BK) {
        const int nk = imin(BK, tk - j0);
        __syncthreads();  // every warp is done with the previous K/V tile (and Q, dO, dQ are in place)
        load_tile<T, BK, DP>(Ks, LD, kb + (int64_t)j0 * ld, ld, nk, d);
        load_tile<T, BK, DP>(Vs, LD, vb + (int64_t)j0 * ld, ld, nk, d);
        __syncthreads();
        warp_mm_nt<T>(Sw, LDS, Qs + warp * 16 * LD, LD, Ks, LD, BK / 16, DP / 16);   // S [16 queries × BK]
        warp_mm_nt<T>(dPw, LDS, Ds + warp * 16 * LD, LD, Vs, LD, BK / 16, DP / 16);  // dP = dO·Vᵀ
        __syncwarp();
        const int lim = i >= tq ? 0 : causal ? imin(nk, i - j0 + 1) : nk;
        for (int c = half; c < BK; c += 2) {
            const float p = c < lim ? expf(Sw[r * LDS + c] * scale - li) : 0.0f;
            dSw[r * LDP + c] = to16<T>(p * (dPw[r * LDS + c] - di));
        }
        __syncwarp();
        warp_mm_nn_acc<T>(dQw, LDF, dSw, LDP, Ks, LD, DP / 16, BK / 16);  // dQ += dS·K
    }
    __syncthreads();
    if (i < tq) {
        float *row = dq + ((int64_t)b * tq + i) * ld + hd;
        for (int c = half; c < d; c += 2) row[c] += scale * dQw[r * LDF + c];
    }
}

}  // namespace
}  // namespace sd_fa

#endif
