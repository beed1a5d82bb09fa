/* AVX-512 micro-kernels for the attention products (float), used when the CPU has AVX-512F.
 *
 * The attention GEMMs are thin (one side is a head dimension of 40..160) and OpenBLAS spends a
 * third of their time packing operands that are re-packed for every query block. These kernels
 * read the operands in place:
 *   bcast: C[m×n] = α·A[m×k]·B[k×n] + β·C   (k small, n long: scores Q·Kᵀ with Kᵀ pre-transposed)
 *          4 rows × 64 columns of C in 16 registers; per k: 4 loads of B, 4 broadcasts of A.
 *   rows:  C[m×n] = α·Σ_j A(i,j)·B[j,:] + β·C with A(i,j) = a[i·sai + j·saj] (any strides, so
 *          Pᵀ and dSᵀ need no transpose), n ≤ 128 per pass held in registers (n = head dim).
 * Each C element is accumulated over k (or j) in increasing order with FMA: the result depends
 * only on the shape, never on the thread count. Single-threaded; callers partition the work. */
#include "tensor/cpu_avx512.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) && !defined(__clang__)
#include <immintrin.h>

static int cached = -1;

void sd_avx512_override(int on)
{
    cached = -1;
    if (!on) cached = 0;
    else (void)sd_avx512_available();
}

int sd_avx512_available(void)
{
    if (cached < 0) {
        __builtin_cpu_init();
        const char *off = getenv("SD_NO_AVX512");
        cached = __builtin_cpu_supports("avx512f") && !(off && *off && *off != '0') ? 1 : 0;
    }
    return cached;
}

#pragma GCC push_options
#pragma GCC target("avx512f")

static inline __mmask16 tail_mask(int64_t n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* exp(x) for 16 floats: the polynomial of sd_fast_expf (kern.h), with FMA. */
static inline __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* ---- bcast ----------------------------------------------------------------------------------
 * Epilogues: EPI_PLAIN  C = α·acc + β·C
 *            EPI_EXP    C = exp(α·acc − row[i])                (P from the saved log-sum-exp)
 *            EPI_DS     C = P∘(acc − row[i]), P read at p      (dS from dP and Δ)
 *            EPI_MAX    C = α·acc, and the running maximum of each row kept as 16 lanes at
 *                       pp + 16·i (forward scores: the row maximum without another pass) */
enum { EPI_PLAIN, EPI_EXP, EPI_DS, EPI_MAX };

#define BC_TILE(NAME, R, V)                                                                         \
static inline __attribute__((always_inline)) void NAME(int epi, int64_t k, float alpha,            \
    const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,   \
    __mmask16 last, const float *row, const float *pp, int64_t ldp)                                \
{                                                                                                  \
    __m512 acc[R][V];                                                                              \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                            \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();       \
    for (int64_t p = 0; p < k; p++) {                                                              \
        __m512 bv[V];                                                                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                                        \
            bv[v] = v == V - 1 ? _mm512_maskz_loadu_ps(last, b + p * ldb + 16 * v)                 \
                               : _mm512_loadu_ps(b + p * ldb + 16 * v);                            \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                      \
            __m512 av = _mm512_set1_ps(a[r * lda + p]);                                            \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                                    \
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                                 \
        }                                                                                          \
    }                                                                                              \
    __m512 al = _mm512_set1_ps(alpha);                                                             \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                          \
        __m512 rw = epi == EPI_EXP || epi == EPI_DS ? _mm512_set1_ps(row[r]) : _mm512_setzero_ps(); \
        __m512 mx = epi == EPI_MAX ? _mm512_loadu_ps(pp + 16 * r) : _mm512_setzero_ps();           \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) {                                      \
            __mmask16 m = v == V - 1 ? last : (__mmask16)0xffff;                                   \
            float *cp = c + r * ldc + 16 * v;                                                      \
            __m512 x;                                                                              \
            if (epi == EPI_EXP) x = exp512(_mm512_fmsub_ps(al, acc[r][v], rw));                    \
            else if (epi == EPI_DS)                                                                \
                x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, pp + r * ldp + 16 * v), _mm512_sub_ps(acc[r][v], rw)); \
            else if (epi == EPI_MAX) {                                                             \
                x = _mm512_mul_ps(al, acc[r][v]);                                                  \
                mx = _mm512_mask_max_ps(mx, m, mx, x);                                             \
            } else {                                                                               \
                x = _mm512_mul_ps(al, acc[r][v]);                                                  \
                if (beta != 0)                                                                     \
                    x = _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, cp))); \
            }                                                                                      \
            _mm512_mask_storeu_ps(cp, m, x);                                                       \
        }                                                                                          \
        if (epi == EPI_MAX) _mm512_storeu_ps((float *)pp + 16 * r, mx);                           \
    }                                                                                              \
}

BC_TILE(bc_4x4, 4, 4)
BC_TILE(bc_1x4, 1, 4)
BC_TILE(bc_4x1, 4, 1)
BC_TILE(bc_1x1, 1, 1)

static inline __attribute__((always_inline)) void bcast_epi(int epi, int64_t m, int64_t n, int64_t k, float alpha,
    const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
    const float *row, const float *p, int64_t ldp)
{
    /* column blocks outer: the k × 64 block of B stays in L1 while all rows pass over it
     * (EPI_MAX: p holds 16 lanes per row, ldp = 16, the same for every column block) */
    int64_t n64 = n / 64 * 64, m4 = m / 4 * 4, pj = epi == EPI_MAX ? 0 : 1;
    for (int64_t j = 0; j < n64; j += 64) {
        for (int64_t i = 0; i < m4; i += 4)
            bc_4x4(epi, k, alpha, a + i * lda, lda, b + j, ldb, beta, c + i * ldc + j, ldc, 0xffff, row + i, p + i * ldp + pj * j, ldp);
        for (int64_t i = m4; i < m; i++)
            bc_1x4(epi, k, alpha, a + i * lda, lda, b + j, ldb, beta, c + i * ldc + j, ldc, 0xffff, row + i, p + i * ldp + pj * j, ldp);
    }
    for (int64_t j = n64; j < n; j += 16) {
        __mmask16 t = tail_mask(n - j);
        for (int64_t i = 0; i < m4; i += 4)
            bc_4x1(epi, k, alpha, a + i * lda, lda, b + j, ldb, beta, c + i * ldc + j, ldc, t, row + i, p + i * ldp + pj * j, ldp);
        for (int64_t i = m4; i < m; i++)
            bc_1x1(epi, k, alpha, a + i * lda, lda, b + j, ldb, beta, c + i * ldc + j, ldc, t, row + i, p + i * ldp + pj * j, ldp);
    }
}

void sd_avx512_mm_bcast(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                        const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    static const float zero[4];
    bcast_epi(EPI_PLAIN, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, zero, zero, 0);
}

void sd_avx512_mm_bcast_exp(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                            const float *b, int64_t ldb, float *c, int64_t ldc, const float *sub)
{
    bcast_epi(EPI_EXP, m, n, k, alpha, a, lda, b, ldb, 0, c, ldc, sub, c, ldc);
}

void sd_avx512_mm_bcast_max(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                            const float *b, int64_t ldb, float *c, int64_t ldc, float *rowmax)
{
    static const float zero[4];
    float lanes[64 * 16];
    for (int64_t i0 = 0; i0 < m; i0 += 64) {
        int64_t mc = m - i0 < 64 ? m - i0 : 64;
        for (int64_t i = 0; i < mc; i++) _mm512_storeu_ps(lanes + 16 * i, _mm512_set1_ps(-INFINITY));
        bcast_epi(EPI_MAX, mc, n, k, alpha, a + i0 * lda, lda, b, ldb, 0, c + i0 * ldc, ldc, zero, lanes, 16);
        for (int64_t i = 0; i < mc; i++) rowmax[i0 + i] = _mm512_reduce_max_ps(_mm512_loadu_ps(lanes + 16 * i));
    }
}

void sd_avx512_mm_bcast_ds(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
                           int64_t ldb, float *c, int64_t ldc, const float *delta, const float *p, int64_t ldp)
{
    bcast_epi(EPI_DS, m, n, k, 1, a, lda, b, ldb, 0, c, ldc, delta, p, ldp);
}

float sd_avx512_exp_row(float *x, int64_t n, float sub)
{
    __m512 sv = _mm512_set1_ps(sub), acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask(n - j);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), sv));
        _mm512_mask_storeu_ps(x + j, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

/* ---- rows ----------------------------------------------------------------------------------- */

#define RW_TILE(NAME, R, V)                                                                         \
static inline __attribute__((always_inline)) void NAME(int64_t kk, float alpha, const float *a,    \
    int64_t sai, int64_t saj, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,      \
    __mmask16 last)                                                                                \
{                                                                                                  \
    __m512 acc[R][V];                                                                              \
    _Pragma("GCC unroll 24") for (int r = 0; r < R; r++)                                            \
        _Pragma("GCC unroll 24") for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();       \
    for (int64_t j = 0; j < kk; j++) {                                                             \
        __m512 bv[V];                                                                              \
        _Pragma("GCC unroll 24") for (int v = 0; v < V; v++)                                        \
            bv[v] = v == V - 1 ? _mm512_maskz_loadu_ps(last, b + j * ldb + 16 * v)                 \
                               : _mm512_loadu_ps(b + j * ldb + 16 * v);                            \
        _Pragma("GCC unroll 24") for (int r = 0; r < R; r++) {                                      \
            __m512 av = _mm512_set1_ps(a[r * sai + j * saj]);                                      \
            _Pragma("GCC unroll 24") for (int v = 0; v < V; v++)                                    \
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                                 \
        }                                                                                          \
    }                                                                                              \
    __m512 al = _mm512_set1_ps(alpha);                                                             \
    _Pragma("GCC unroll 24") for (int r = 0; r < R; r++)                                            \
        _Pragma("GCC unroll 24") for (int v = 0; v < V; v++) {                                      \
            __mmask16 m = v == V - 1 ? last : (__mmask16)0xffff;                                   \
            float *cp = c + r * ldc + 16 * v;                                                      \
            __m512 x = _mm512_mul_ps(al, acc[r][v]);                                               \
            if (beta != 0)                                                                         \
                x = _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, cp))); \
            _mm512_mask_storeu_ps(cp, m, x);                                                       \
        }                                                                                          \
}

/* rows of C in tiles of R, the sum over j in chunks of RW_KB (the chunk of B rows stays in L1;
 * each chunk after the first accumulates into C). With sai = 1 (A read transposed: Pᵀ, dSᵀ) the R
 * broadcasts sit at constant offsets; with another sai each row needs its offset in a register,
 * so those tiles have at most RG rows (more would spill the offsets to the stack and double the
 * loads per FMA). The sum over j is in the same order either way. */
#define RW_KB 128
#define RW_PAIR(V, R, RG)                                                                           \
    RW_TILE(rw_##V##_main, R, V)                                                                   \
    RW_TILE(rw_##V##_gen, RG, V)                                                                   \
    RW_TILE(rw_##V##_one, 1, V)                                                                    \
    static void rw_##V(int64_t m, int64_t kk, float alpha, const float *a, int64_t sai, int64_t saj, \
                       const float *b, int64_t ldb, float beta, float *c, int64_t ldc, __mmask16 last) \
    {                                                                                              \
        for (int64_t j0 = 0; j0 < kk || j0 == 0; j0 += RW_KB) {                                    \
            int64_t kc = kk - j0 < RW_KB ? kk - j0 : RW_KB;                                        \
            float be = j0 ? 1.0f : beta;                                                           \
            const float *aj = a + j0 * saj, *bj = b + j0 * ldb;                                    \
            int64_t i = 0;                                                                         \
            if (sai == 1)                                                                          \
                for (; i + R <= m; i += R)                                                         \
                    rw_##V##_main(kc, alpha, aj + i, 1, saj, bj, ldb, be, c + i * ldc, ldc, last); \
            else                                                                                   \
                for (; i + RG <= m; i += RG)                                                       \
                    rw_##V##_gen(kc, alpha, aj + i * sai, sai, saj, bj, ldb, be, c + i * ldc, ldc, last); \
            for (; i < m; i++)                                                                     \
                rw_##V##_one(kc, alpha, aj + i * sai, sai, saj, bj, ldb, be, c + i * ldc, ldc, last); \
            if (kk <= 0) break;                                                                    \
        }                                                                                          \
    }

RW_PAIR(1, 24, 8)
RW_PAIR(2, 12, 8)
RW_PAIR(3, 8, 8)
RW_PAIR(4, 6, 6)
RW_PAIR(5, 4, 4)
RW_PAIR(6, 4, 4)
RW_PAIR(7, 3, 3)
RW_PAIR(8, 3, 3)

void sd_avx512_mm_rows(int64_t m, int64_t n, int64_t kk, float alpha, const float *a, int64_t sai,
                       int64_t saj, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    for (int64_t j0 = 0; j0 < n; j0 += 128) {
        int64_t w = n - j0 < 128 ? n - j0 : 128;
        int v = (int)((w + 15) / 16);
        __mmask16 last = tail_mask(w - 16 * (v - 1));
        const float *bj = b + j0;
        float *cj = c + j0;
        switch (v) {
        case 1: rw_1(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        case 2: rw_2(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        case 3: rw_3(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        case 4: rw_4(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        case 5: rw_5(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        case 6: rw_6(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        case 7: rw_7(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        default: rw_8(m, kk, alpha, a, sai, saj, bj, ldb, beta, cj, ldc, last); break;
        }
    }
}

#pragma GCC pop_options

#else

int sd_avx512_available(void) { return 0; }
void sd_avx512_override(int on) { (void)on; }

void sd_avx512_mm_bcast(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                        const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)b; (void)ldb; (void)beta; (void)c; (void)ldc;
}

void sd_avx512_mm_bcast_exp(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                            const float *b, int64_t ldb, float *c, int64_t ldc, const float *sub)
{
    (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)b; (void)ldb; (void)c; (void)ldc; (void)sub;
}

void sd_avx512_mm_bcast_max(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                            const float *b, int64_t ldb, float *c, int64_t ldc, float *rowmax)
{
    (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)b; (void)ldb; (void)c; (void)ldc; (void)rowmax;
}

void sd_avx512_mm_bcast_ds(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
                           int64_t ldb, float *c, int64_t ldc, const float *delta, const float *p, int64_t ldp)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb; (void)c; (void)ldc; (void)delta; (void)p; (void)ldp;
}

float sd_avx512_exp_row(float *x, int64_t n, float sub)
{
    (void)x; (void)n; (void)sub;
    return 0;
}

void sd_avx512_mm_rows(int64_t m, int64_t n, int64_t kk, float alpha, const float *a, int64_t sai,
                       int64_t saj, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    (void)m; (void)n; (void)kk; (void)alpha; (void)a; (void)sai; (void)saj; (void)b; (void)ldb; (void)beta; (void)c; (void)ldc;
}

#endif
