/* LyCORIS weight-delta modules (KohakuBlueleaf/LyCORIS @ f49d30d, lycoris/modules/loha.py LohaModule
 * and lokr.py LokrModule (below), without DoRA / scalar; LoHa's Tucker form with sd_lyco_init_loha_tucker) on a
 * linear or conv layer, in LyCORIS's default forward
 * (bypass_mode off): the host runs its op with
 *
 *   RW = W + multiplier · ΔW,   ΔW = scale · (w1a · w1b) ⊙ (w2a · w2b)      (LoHa, "HadaWeight")
 *
 * where w1a, w2a [out, r], w1b, w2b [r, in·kh·kw], scale = alpha / r (alpha: the stored buffer; with
 * rs_lora the caller passes alpha·sqrt(r)). LyCORIS computes base + op(x, (W + mΔW) − W); running
 * op(x, RW) is the same function and gradient up to float rounding. RW is rounded to W's dtype when
 * that is f16/bf16 (LyCORIS: diff_weight.to(base_weight.dtype)).
 *
 * Backward (the host layer's backward passes dL/dRW): G = multiplier · scale · dL/dRW,
 * A = w1a·w1b, B = w2a·w2b (recomputed), dw1a += (G⊙B)·w1bᵀ, dw1b += w1aᵀ·(G⊙B),
 * dw2a += (G⊙A)·w2bᵀ, dw2b += w2aᵀ·(G⊙A) — LyCORIS's HadaWeight.backward. Everything runs through the
 * ops, on the parameters' device.
 *
 * module_dropout: in training, the module is skipped for the step (RW = W, no gradient) when the
 * uniform draw 0 of the Philox stream (seed, step, id, SD_RNG_DROPOUT) is < p, as nn/lora_hook.h's.
 *
 * rank_dropout (LyCORIS's get_weight in training, both algorithms): row o of ΔW is kept when the
 * uniform draw (1 + o) of the same stream is > p, else zeroed (one mask per module and step, not
 * rescaled: lycoris.kohya never sets rank_dropout_scale); the backward masks dL/dΔW's rows alike. The
 * draws are Philox values, not torch.rand's (same distribution). */
#ifndef SD_NN_LYCO_H
#define SD_NN_LYCO_H

#include <stddef.h>
#include <stdint.h>

#include "nn/lora_hook.h"
#include "nn/params.h"
#include "tensor/ops.h"

#define SD_LYCO_NP 6

typedef enum sd_lyco_algo {
    SD_LYCO_LOHA = 1,
    SD_LYCO_LOKR = 2,
} sd_lyco_algo;

/* LoKr (lycoris/modules/lokr.py LokrModule without Tucker / DoRA / scalar):
 *
 *   ΔW = scale · kron(W1, W2),  W1 [a, c] = lokr_w1 or lokr_w1_a [a, r] · lokr_w1_b [r, c],
 *                               W2 [b, d·kh·kw] = lokr_w2 ([b, d] or [b, d, kh, kw]) or
 *                                                 lokr_w2_a [b, r] · lokr_w2_b [r, d·kh·kw]
 *
 * out = a·b, in = c·d from LyCORIS's factorization(dim, factor) ((a, b) swapped with
 * unbalanced_factorization); W1 is factored with decompose_both when r < max(a, c)/2, W2 when
 * r < max(b, d)/2 (never with full_matrix); with both full, scale = 1 (alpha = r). The Kronecker
 * product runs as an outer product and a permutation through the ops; the backward permutes dL/dΔW
 * back and contracts it with the other factor. */
typedef struct sd_lyco_lokr_shape {
    int64_t a, b, c, d;       /* out = a·b, in = c·d */
    int w1_factored, w2_factored;
} sd_lyco_lokr_shape;

/* LyCORIS's factorization(dimension, factor): (m, n) with m·n = dimension, m <= n. */
void sd_lyco_factorization(int64_t dim, int factor, int64_t *m, int64_t *n);

typedef struct sd_lyco {
    int algo;
    sd_param *p[SD_LYCO_NP];  /* LoHa: hada_w1_a [out, r], hada_w1_b [r, row], hada_w2_a, hada_w2_b (Tucker: hada_w1_a
                                 [r, out], hada_w1_b [r, in], …, then hada_t1, hada_t2 [r, r, kh, kw]);
                                 LoKr: lokr_w1 (or w1_a), NULL (or w1_b), lokr_w2 (or w2_a), NULL (or w2_b); NULL after */
    int tucker;               /* LoHa Tucker (LyCORIS use_tucker on a k×k conv) */
    int64_t in, kk;           /* Tucker: host inputs and kernel elements (row = in·kk) */
    sd_lyco_lokr_shape k;     /* LoKr */
    int64_t out, row;         /* host output rows; elements per row (in·kh·kw) */
    int rank;
    float alpha, multiplier;
    float module_dropout;
    float rank_dropout;       /* LyCORIS's get_weight: rows of ΔW dropped in training (0: off) */
    uint32_t id;              /* dropout stream id; unique per module */
    const sd_lora_rt *rt;     /* NULL: never training */
    int skipped;              /* the last sd_lyco_weight skipped the module (module dropout) */
    const uint8_t *drop_keep; /* test hook (NULL in use): [out] keep flags instead of the rank_dropout draws */
    float *host_mask;         /* host staging for the row mask (grown once, reused; sd_lyco_free) */
    size_t host_mask_cap;
} sd_lyco;

/* Free what a module allocated besides its registry entries (the row-mask staging). */
void sd_lyco_free(sd_lyco *m);

/* Register "<name>.hada_w1_a" … "<name>.hada_w2_b" (trainable, f32) in `reg`. alpha <= 0: rank. */
int sd_lyco_init_loha(sd_lyco *m, sd_params *reg, const char *name, int64_t out, int64_t row, int rank, float alpha);
/* LoHa with LyCORIS's Tucker decomposition on a k×k conv [out, in, kh, kw] (use_tucker): "<name>.hada_w1_a"
 * [r, out], ".hada_w1_b" [r, in], ".hada_t1" [r, r, kh, kw] and the same for 2; each Hadamard factor is
 * T[o, i, k] = Σ_p Σ_q w_a[p, o] · t[p, q, k] · w_b[q, i] (LyCORIS's rebuild_tucker), ΔW = scale · T1 ⊙ T2.
 * The backward runs T's through the ops (permutes and matrix products). Initialisation (sd_lyco_init_weights):
 * w1_a ~ N(0, 0.1²), w1_b, w2_b ~ N(0, 1), w2_a = 0, t1, t2 ~ N(0, 0.1²) (Philox draws). */
int sd_lyco_init_loha_tucker(sd_lyco *m, sd_params *reg, const char *name, int64_t out, int64_t in, int kh, int kw,
                             int rank, float alpha);
/* Register a LoKr module's factors for a host [out, in, kh, kw] (kh = kw = 1: a linear; conv4d: the
 * host is a conv, so a full lokr_w2 is stored [b, d, kh, kw]). factor: LyCORIS's (-1: balanced). */
int sd_lyco_init_lokr(sd_lyco *m, sd_params *reg, const char *name, int64_t out, int64_t in, int kh, int kw, int conv4d,
                      int rank, float alpha, int factor, int decompose_both, int full_matrix, int unbalanced);
/* LyCORIS's LoHa initialisation on the host: w1b, w2b ~ N(0, 1), w1a ~ N(0, 0.1²), w2a = 0; normals
 * from the Philox stream (seed, 0, id, SD_RNG_INIT) (torch's generator is not reproduced). */
int sd_lyco_init_weights(sd_lyco *m, uint64_t seed);
/* (LoKr: lokr_w1 / lokr_w1_a / lokr_w1_b / lokr_w2_a kaiming-uniform (a = sqrt(5): U(±1/sqrt(fan_in))),
 * lokr_w2 or lokr_w2_b zeros, uniforms from the same stream.) */

/* ΔW (scale included, multiplier not) into dw [out, row] f32 on the parameters' device. */
int sd_lyco_delta(sd_ctx *ctx, const sd_lyco *m, sd_tensor *dw);
/* rw = W + multiplier · ΔW (w any dtype, rw w's shape and dtype, caller's scratch). */
int sd_lyco_weight(sd_ctx *ctx, sd_lyco *m, const sd_tensor *w, sd_tensor *rw);
/* Factor gradients += from drw = dL/dRW (f32, w's shape), for the step of the last sd_lyco_weight. */
int sd_lyco_weight_backward(sd_ctx *ctx, sd_lyco *m, const sd_tensor *drw);
/* Scratch bytes the two take at most from ctx->scratch, besides the caller's rw / drw. */
size_t sd_lyco_scratch_bytes(const sd_lyco *m);

#endif
