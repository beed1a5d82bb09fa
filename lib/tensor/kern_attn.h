/* Internal: scaled-dot-product attention, forward and backward (template; see kern.h).
 *
 * Queries are processed in blocks of SD_K_ATTN_BQ rows. For a block the scores against all keys
 * (BQ × Tk, e.g. 128 × 4096 floats = 2 MiB) are formed with one product, soft-maxed exactly (max,
 * exp, sum: no online rescaling is needed because the block row is complete), multiplied by V
 * and the rows of the result divided by the row sums. The full Tq × Tk matrix never exists;
 * memory is BQ × Tk per thread. The log-sum-exp of every row is saved. Backward, per query block
 * (SD_K_ATTN_BQB rows): recompute S and P = exp(S − lse), dP = dO·Vᵀ, dS = P∘(dP − rowsum(dO∘O)),
 * dQ += s·dS·K, dK += s·dSᵀ·Q, dV += Pᵀ·dO.
 * K (and V for the backward) are first transposed per head into scratch ([B·H, d, Tk]) so that
 * every product reads rows: "bcast" products C = A·B with B = Kᵀ or Vᵀ and "rows" products
 * C[i,:] = Σ_j A(i,j)·B[j,:] with B = V, K, Q or dO and A = P, dS or their transposes (strides).
 * Float on AVX-512 uses the micro-kernels of cpu_avx512.c for both; otherwise sgemm/dgemm.
 * Work units: forward (batch, head, query block), all independent. Backward: (batch, head, group)
 * with G fixed query-block groups per head (G > 1 only when batch·heads < 8), each group
 * accumulating dK/dV of its blocks in order into its own partial, partials added in group order. */
#ifndef SD_TENSOR_KERN_ATTN_H
#define SD_TENSOR_KERN_ATTN_H
#include <omp.h>

#include "tensor/kern.h"
#ifndef SD_KERN_F64
#include "tensor/cpu_avx512.h"
#endif

#ifndef SD_K_ATTN_BQ
#define SD_K_ATTN_BQ 128   /* query rows per forward block */
#endif
#ifndef SD_K_ATTN_BQB
#define SD_K_ATTN_BQB 128  /* query rows per backward block */
#endif

typedef struct sd_k_attn {
    int64_t b, h, tq, tk, dk, dv;
    real scale;
    int causal;
} sd_k_attn;

/* C[m×n] = alpha·A[m×k]·B[k×n] + beta·C */
static inline void KN(sd_k_att_bcast)(int64_t m, int64_t n, int64_t k, real alpha, const real *a, int64_t lda,
                                      const real *b, int64_t ldb, real beta, real *c, int64_t ldc)
{
#ifndef SD_KERN_F64
    if (sd_avx512_available()) { sd_avx512_mm_bcast(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); return; }
#endif
    KN(gemm)(0, 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* C[m×n] = alpha·Σ_j A(i,j)·B[j,:] + beta·C, A(i,j) = a[i·sai + j·saj] with sai = 1 or saj = 1. */
static inline void KN(sd_k_att_rows)(int64_t m, int64_t n, int64_t kk, real alpha, const real *a, int64_t sai,
                                     int64_t saj, const real *b, int64_t ldb, real beta, real *c, int64_t ldc)
{
#ifndef SD_KERN_F64
    if (sd_avx512_available()) { sd_avx512_mm_rows(m, n, kk, alpha, a, sai, saj, b, ldb, beta, c, ldc); return; }
#endif
    if (saj == 1) KN(gemm)(0, 0, m, n, kk, alpha, a, sai, b, ldb, beta, c, ldc);
    else KN(gemm)(1, 0, m, n, kk, alpha, a, saj, b, ldb, beta, c, ldc);
}

/* Row stride of the score buffers and of transposed K/V: Tk padded so that consecutive rows do
 * not fall into the same L1 cache set (a multiple of 4 KiB would). */
static inline int64_t sd_k_att_ldt(int64_t tk)
{
    return (tk + 15) / 16 * 16 + 16;
}

/* dst [b·h, d, ldt] = per-head transpose of src [b, t, h·d]. */
SD_KFN void KN(sd_k_att_transpose)(sd_ctx *ctx, real *dst, const real *src, int64_t b, int64_t h, int64_t t, int64_t d)
{
    int64_t nb = (t + 63) / 64, ld = h * d, ldt = sd_k_att_ldt(t);
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (b * h * t * d > 65536)
    for (int64_t task = 0; task < b * h * nb; task++) {
        int64_t jb = task % nb, bh = task / nb, bb = bh / h, hh = bh % h;
        int64_t j0 = jb * 64, j1 = j0 + 64 < t ? j0 + 64 : t;
        const real *s = src + bb * t * ld + hh * d;
        real *o = dst + bh * d * ldt;
        for (int64_t j = j0; j < j1; j++)
            for (int64_t c = 0; c < d; c++) o[c * ldt + j] = s[j * ld + c];
    }
}

/* Scores → probabilities for a block of rows [i0, i0+nq), in place. Forward (lse_in NULL):
 * s = exp(s − max) unnormalised, writes lse and 1/rowsum (the caller scales the P·V rows).
 * Backward: s = exp(s − lse), normalised. Masked (causal) entries become 0. */
SD_KVEC void KN(sd_k_attn_probs)(const sd_k_attn *a, real *s, int64_t ldt, int64_t i0, int64_t nq,
                                 real *lse_out, real *inv_out, const real *lse_in)
{
    int64_t tk = a->tk;
    for (int64_t r = 0; r < nq; r++) {
        real *sr = s + r * ldt;
        int64_t lim = a->causal ? (i0 + r + 1 < tk ? i0 + r + 1 : tk) : tk;
        if (lse_in) {
            real l = lse_in[r];
#pragma omp simd
            for (int64_t j = 0; j < lim; j++) sr[j] = R_EXP(sr[j] - l);
        } else {
            real m = sr[0];
#pragma omp simd reduction(max : m)
            for (int64_t j = 0; j < lim; j++) m = sr[j] > m ? sr[j] : m;
            real sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < lim; j++) { real e = R_EXP(sr[j] - m); sr[j] = e; sum += e; }
            inv_out[r] = 1 / sum;
            lse_out[r] = m + R_LOG(sum);
        }
        for (int64_t j = lim; j < tk; j++) sr[j] = 0;
    }
}

/* dS = P∘(dP − Δ) in place of dP, Δ_r = Σ_c dO·O (rows of the block). */
SD_KVEC void KN(sd_k_attn_ds)(const real *p, real *dp, int64_t ldt, const real *dout, const real *o, int64_t ldv,
                              int64_t dv, int64_t nq, int64_t tk)
{
    for (int64_t r = 0; r < nq; r++) {
        real d = 0;
        for (int64_t c = 0; c < dv; c++) d += dout[r * ldv + c] * o[r * ldv + c];
        const real *pr = p + r * ldt;
        real *dr = dp + r * ldt;
#pragma omp simd
        for (int64_t j = 0; j < tk; j++) dr[j] = pr[j] * (dr[j] - d);
    }
}

SD_KFN int KN(sd_k_attention)(sd_ctx *ctx, const sd_k_attn *a, real *o, real *lse, const real *q,
                              const real *k, const real *v)
{
    int64_t nqb = (a->tq + SD_K_ATTN_BQ - 1) / SD_K_ATTN_BQ, tasks = a->b * a->h * nqb;
    int64_t ldq = a->h * a->dk, ldv = a->h * a->dv, ldt = sd_k_att_ldt(a->tk), ssz = SD_K_ATTN_BQ * ldt;
    int nt = ctx->threads;
    size_t mark = sd_arena_mark(&ctx->scratch);
    real *kt = KN(sd_k_scratch)(ctx, a->b * ldt * ldq);
    real *sbuf = kt ? KN(sd_k_scratch)(ctx, (ssz + 2 * SD_K_ATTN_BQ) * nt) : NULL;
    if (!sbuf) { sd_arena_reset(&ctx->scratch, mark); return SD_ENOMEM; }
    KN(sd_k_att_transpose)(ctx, kt, k, a->b, a->h, a->tk, a->dk);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t qb = t % nqb, hh = (t / nqb) % a->h, bb = t / (nqb * a->h);
        int64_t i0 = qb * SD_K_ATTN_BQ, nq = a->tq - i0 < SD_K_ATTN_BQ ? a->tq - i0 : SD_K_ATTN_BQ;
        real *s = sbuf + (int64_t)omp_get_thread_num() * (ssz + 2 * SD_K_ATTN_BQ), *inv = s + ssz;
        const real *qp = q + (bb * a->tq + i0) * ldq + hh * a->dk;
        const real *ktp = kt + (bb * a->h + hh) * a->dk * ldt;
        const real *vp = v + bb * a->tk * ldv + hh * a->dv;
#ifndef SD_KERN_F64
        /* float with AVX-512, no mask: the row maxima in the epilogue of the score product, then
         * exp and row sums in one pass (the FMA exp of the backward's probabilities) */
        if (!a->causal && a->tk > 0 && sd_avx512_available()) {
            real *rmax = inv + SD_K_ATTN_BQ;
            sd_avx512_mm_bcast_max(nq, a->tk, a->dk, a->scale, qp, ldq, ktp, ldt, s, ldt, rmax);
            real *lrow = lse + (bb * a->h + hh) * a->tq + i0;
            for (int64_t r = 0; r < nq; r++) {
                real sum = sd_avx512_exp_row(s + r * ldt, a->tk, rmax[r]);
                inv[r] = 1 / sum;
                lrow[r] = rmax[r] + R_LOG(sum);
            }
        } else
#endif
        {
            KN(sd_k_att_bcast)(nq, a->tk, a->dk, a->scale, qp, ldq, ktp, ldt, 0, s, ldt);
            KN(sd_k_attn_probs)(a, s, ldt, i0, nq, lse + (bb * a->h + hh) * a->tq + i0, inv, NULL);
        }
        real *op = o + (bb * a->tq + i0) * ldv + hh * a->dv;
        KN(sd_k_att_rows)(nq, a->dv, a->tk, 1, s, ldt, 1, vp, ldv, 0, op, ldv);
        for (int64_t r = 0; r < nq; r++)
            for (int64_t c = 0; c < a->dv; c++) op[r * ldv + c] *= inv[r];
    }
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

SD_KFN int KN(sd_k_attention_bwd)(sd_ctx *ctx, const sd_k_attn *a, real *dq, real *dk, real *dv,
                                  const real *dout, const real *q, const real *k, const real *v,
                                  const real *o, const real *lse)
{
    int64_t nqb = (a->tq + SD_K_ATTN_BQB - 1) / SD_K_ATTN_BQB, bh = a->b * a->h;
    int64_t ng = bh >= 8 ? 1 : (8 + bh - 1) / bh;
    if (ng > nqb) ng = nqb;
    int64_t tasks = bh * ng;
    int64_t ldq = a->h * a->dk, ldv = a->h * a->dv, ldt = sd_k_att_ldt(a->tk), ssz = SD_K_ATTN_BQB * ldt;
    int64_t psz = a->tk * (a->dk + a->dv);
    int nt = ctx->threads;
    size_t mark = sd_arena_mark(&ctx->scratch);
    real *kt = KN(sd_k_scratch)(ctx, a->b * ldt * ldq);
    real *vt = kt ? KN(sd_k_scratch)(ctx, a->b * ldt * ldv) : NULL;
    real *sbuf = vt ? KN(sd_k_scratch)(ctx, (2 * ssz + SD_K_ATTN_BQB) * nt) : NULL;
    if (!sbuf) { sd_arena_reset(&ctx->scratch, mark); return SD_ENOMEM; }
    real *part = NULL;
    if (ng > 1 && (dk || dv)) {
        part = KN(sd_k_scratch)(ctx, psz * tasks);
        if (!part) { sd_arena_reset(&ctx->scratch, mark); return SD_ENOMEM; }
        memset(part, 0, (size_t)(psz * tasks) * sizeof(real));
    }
    KN(sd_k_att_transpose)(ctx, kt, k, a->b, a->h, a->tk, a->dk);
    KN(sd_k_att_transpose)(ctx, vt, v, a->b, a->h, a->tk, a->dv);
    /* float with AVX-512, no mask: exp and dS in the epilogues of the score products */
#ifndef SD_KERN_F64
    int fused = !a->causal && sd_avx512_available();
#else
    int fused = 0;
#endif
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t g = t % ng, hh = (t / ng) % a->h, bb = t / (ng * a->h);
        real *s = sbuf + (int64_t)omp_get_thread_num() * (2 * ssz + SD_K_ATTN_BQB);
        real *dp = s + ssz, *delta = dp + ssz;
        const real *kp = k + bb * a->tk * ldq + hh * a->dk;
        const real *ktp = kt + (bb * a->h + hh) * a->dk * ldt;
        const real *vtp = vt + (bb * a->h + hh) * a->dv * ldt;
        real *dkp, *dvp;
        int64_t lddk = ldq, lddv = ldv;
        if (part) {
            dkp = part + t * psz; dvp = dkp + a->tk * a->dk;
            lddk = a->dk; lddv = a->dv;
        } else {
            dkp = dk ? dk + bb * a->tk * ldq + hh * a->dk : NULL;
            dvp = dv ? dv + bb * a->tk * ldv + hh * a->dv : NULL;
        }
        int64_t qb0 = nqb * g / ng, qb1 = nqb * (g + 1) / ng;
        for (int64_t qb = qb0; qb < qb1; qb++) {
            int64_t i0 = qb * SD_K_ATTN_BQB, nq = a->tq - i0 < SD_K_ATTN_BQB ? a->tq - i0 : SD_K_ATTN_BQB;
            const real *qp = q + (bb * a->tq + i0) * ldq + hh * a->dk;
            const real *dop = dout + (bb * a->tq + i0) * ldv + hh * a->dv;
            const real *op = o + (bb * a->tq + i0) * ldv + hh * a->dv;
            const real *lrow = lse + (bb * a->h + hh) * a->tq + i0;
            if (fused) {
#ifndef SD_KERN_F64
                sd_avx512_mm_bcast_exp(nq, a->tk, a->dk, a->scale, qp, ldq, ktp, ldt, s, ldt, lrow);
#endif
            } else {
                KN(sd_k_att_bcast)(nq, a->tk, a->dk, a->scale, qp, ldq, ktp, ldt, 0, s, ldt);
                KN(sd_k_attn_probs)(a, s, ldt, i0, nq, NULL, NULL, lrow);
            }
            if (dvp) KN(sd_k_att_rows)(a->tk, a->dv, nq, 1, s, 1, ldt, dop, ldv, 1, dvp, lddv);
            if (!dq && !dkp) continue;
            if (fused) {
                for (int64_t r = 0; r < nq; r++) {
                    real d = 0;
                    for (int64_t c = 0; c < a->dv; c++) d += dop[r * ldv + c] * op[r * ldv + c];
                    delta[r] = d;
                }
#ifndef SD_KERN_F64
                sd_avx512_mm_bcast_ds(nq, a->tk, a->dv, dop, ldv, vtp, ldt, dp, ldt, delta, s, ldt);
#endif
            } else {
                KN(sd_k_att_bcast)(nq, a->tk, a->dv, 1, dop, ldv, vtp, ldt, 0, dp, ldt);
                KN(sd_k_attn_ds)(s, dp, ldt, dop, op, ldv, a->dv, nq, a->tk);
            }
            if (dq) KN(sd_k_att_rows)(nq, a->dk, a->tk, a->scale, dp, ldt, 1, kp, ldq, 1,
                                      dq + (bb * a->tq + i0) * ldq + hh * a->dk, ldq);
            if (dkp) KN(sd_k_att_rows)(a->tk, a->dk, nq, a->scale, dp, 1, ldt, qp, ldq, 1, dkp, lddk);
        }
    }
    if (part) {
        /* dk/dv += Σ_g partials, in group order; parallel over (batch, head, key rows) */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t r = 0; r < bh * a->tk; r++) {
            int64_t j = r % a->tk, hh = (r / a->tk) % a->h, bb = r / (a->tk * a->h);
            for (int64_t g = 0; g < ng; g++) {
                const real *pk = part + ((bb * a->h + hh) * ng + g) * psz;
                const real *pv = pk + a->tk * a->dk;
                if (dk) { real *d = dk + (bb * a->tk + j) * ldq + hh * a->dk; for (int64_t c = 0; c < a->dk; c++) d[c] += pk[j * a->dk + c]; }
                if (dv) { real *d = dv + (bb * a->tk + j) * ldv + hh * a->dv; for (int64_t c = 0; c < a->dv; c++) d[c] += pv[j * a->dv + c]; }
            }
        }
    }
    sd_arena_reset(&ctx->scratch, mark);
    return SD_OK;
}

#endif
