/* The op API: every numeric operation of the models, forward and backward, for CPU and CUDA.
 *
 * Design
 * - An op is a function `sd_op_<name>[_bwd](sd_ctx *ctx, outputs..., inputs..., args)` returning
 *   SD_OK or a negative SD_E* code with a detail message (sd_errmsg()). Outputs come first.
 *   Shapes are checked on every call (cheap; never reads data); the caller allocates outputs,
 *   so an op never allocates memory except scratch from ctx->scratch, released before it returns.
 * - Layouts are PyTorch's: images [N,C,H,W], sequences [B,T,C], linear weights [out,in], conv
 *   weights [Cout,Cin,kh,kw]. Attention takes q/k/v as [B,T,heads*dh] (the to_q/to_k/to_v output
 *   as is; no head transposes needed).
 * - Forward ops overwrite their outputs. Backward ops ACCUMULATE (+=) into every gradient they
 *   are given; the caller zeroes gradients once per step. A NULL gradient pointer means "not
 *   needed" and that part of the work is skipped (e.g. dw = NULL for a frozen weight).
 * - Anything a backward needs beyond the forward's inputs is an explicit saved tensor that the
 *   caller keeps (group/layer-norm mean and rstd, attention log-sum-exp). Backward recomputes
 *   everything else (attention scores are never stored whole).
 * - Data types: activations and gradients are f32. Weights read by linear/conv (w) may also be
 *   f16/bf16 (frozen weights kept in half precision, converted per use into scratch). Ids are i32.
 * - Devices: all tensors of one call must be on ctx->backend. The dispatch (ops.c) is the only
 *   place that knows about CUDA; on a build without CUDA a CUDA tensor gives SD_EUNSUPPORTED.
 * - Determinism: CPU results are bit-identical for any ctx->threads (fixed partitions, fixed
 *   reduction order). Layer code never reads tensor data on the host.
 * - Broadcasting (add/mul) follows NumPy/PyTorch rules aligned at the last axis: b may have size 1
 *   (or be missing) on any axis of a, e.g. a [N,C,H,W] + b [N,C,1,1] (time embedding) or
 *   a [B,T,C] + b [C] (bias). */
#ifndef SD_TENSOR_OPS_H
#define SD_TENSOR_OPS_H

#include "tensor/optim8_elem.h"
#include "tensor/optim_elem.h"
#include "tensor/tensor.h"

/* ---- copies, fills, conversions ------------------------------------------------------------- */

int sd_op_fill(sd_ctx *ctx, sd_tensor *y, float value);              /* f32/f16/bf16 */
/* y = x with dtype conversion (any of f32/f16/bf16 to any), same numel. */
int sd_op_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
/* y = x[perm] (torch.permute + contiguous): y.shape[i] = x.shape[perm[i]]. Backward is the
 * inverse permutation, applied with sd_op_permute_bwd (accumulates). f32 only. */
int sd_op_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm);
int sd_op_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm);

/* ---- elementwise arithmetic ----------------------------------------------------------------- */

/* y = a + b (b broadcast to a's shape; y may alias a). */
int sd_op_add(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b);
/* y = a * b (b broadcast; y may alias a). */
int sd_op_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b);
/* da += dy * b; db += sum over broadcast axes of dy * a (either may be NULL). */
int sd_op_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy,
                  const sd_tensor *a, const sd_tensor *b);
/* y = alpha * x + beta * y (beta = 0: y is overwritten, its old contents ignored). */
int sd_op_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta);
/* y += alpha * (x summed over the axes where y is broadcast): the backward of add for b.
 * y's shape must broadcast to x's shape. */
int sd_op_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x);

/* ---- matrix products ------------------------------------------------------------------------ */

/* y[..., out] = x[..., in] · w[out, in]ᵀ + b[out]   (b may be NULL) */
int sd_op_linear(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w,
                 const sd_tensor *b);
/* dx += dy·w, dw += dyᵀ·x (summed over all leading axes), db += Σ dy. */
int sd_op_linear_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db,
                     const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w);
/* Batched c = alpha · op(a) · op(b) + beta · c over equal leading axes (or a/b without leading
 * axes, shared by every batch): a [..., M, K] (or [..., K, M] with trans_a), b [..., K, N]
 * (or [..., N, K] with trans_b), c [..., M, N]. Backward is two more calls with beta = 1. */
int sd_op_matmul(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a,
                 const sd_tensor *b, int trans_b, float alpha, float beta);

/* ---- convolution ---------------------------------------------------------------------------- */

typedef struct sd_conv2d_geom {
    int stride;                       /* same for H and W */
    int pad_t, pad_l, pad_b, pad_r;   /* zero padding; asymmetric allowed (VAE downsample 0,1,0,1) */
} sd_conv2d_geom;

static inline sd_conv2d_geom sd_conv2d_geom_make(int stride, int pad)
{
    sd_conv2d_geom g = { stride, pad, pad, pad, pad };
    return g;
}

/* y [N,Cout,Ho,Wo] = conv(x [N,Cin,H,W], w [Cout,Cin,kh,kw]) + b[Cout]  (b may be NULL);
 * Ho = (H + pad_t + pad_b - kh) / stride + 1. Any kh, kw ≥ 1. */
int sd_op_conv2d(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w,
                 const sd_tensor *b, sd_conv2d_geom g);
int sd_op_conv2d_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db,
                     const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g);
/* Depthwise convolution (torch Conv2d(C, C, k, groups=C): one kh×kw filter per channel, the ConvNeXt
 * conv_dw): y [N,C,Ho,Wo] = conv(x [N,C,H,W], w [C,1,kh,kw]) + b[C] (b may be NULL), each output
 * channel c from input channel c only; geometry as conv2d. Direct loops, no BLAS. */
int sd_op_conv2d_dw(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w,
                    const sd_tensor *b, sd_conv2d_geom g);
int sd_op_conv2d_dw_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db,
                        const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g);

/* ---- normalisation -------------------------------------------------------------------------- */

typedef enum sd_act {
    SD_ACT_NONE = 0,
    SD_ACT_SILU,        /* x·sigmoid(x) */
    SD_ACT_GELU,        /* exact: x·Φ(x) (erf), torch default */
    SD_ACT_GELU_TANH,   /* tanh approximation (torch approximate="tanh") */
    SD_ACT_QUICK_GELU,  /* x·sigmoid(1.702x) (OpenAI CLIP) */
} sd_act;

/* GroupNorm over x [N,C,...] (any trailing spatial axes) with `groups` groups, affine gamma/beta
 * [C] (either may be NULL = 1 / 0), then the activation `act` (NONE or SILU: fused
 * GroupNorm+SiLU as in every resblock). Saves mean and rstd [N,groups] (f32) for the backward. */
int sd_op_group_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd,
                     const sd_tensor *x, const sd_tensor *gamma, const sd_tensor *beta,
                     int groups, float eps, sd_act act);
/* dx, dgamma, dbeta += ...; dy is the gradient of the output after the activation. */
int sd_op_group_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta,
                         const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean,
                         const sd_tensor *rstd, const sd_tensor *gamma, const sd_tensor *beta,
                         int groups, sd_act act);

/* LayerNorm over the last axis of x [..., C]; mean/rstd have shape x.shape[:-1] (f32). */
int sd_op_layer_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd,
                     const sd_tensor *x, const sd_tensor *gamma, const sd_tensor *beta, float eps);
int sd_op_layer_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta,
                         const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean,
                         const sd_tensor *rstd, const sd_tensor *gamma);

/* ---- activations ---------------------------------------------------------------------------- */

int sd_op_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x);          /* y may alias x */
int sd_op_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x);
/* GEGLU (diffusers): x [..., 2D] = [h, g] along the last axis; y [..., D] = h · gelu(g) (exact). */
int sd_op_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_op_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x);
/* Rotary position embedding (timm apply_rot_embed_cat, interleaved pairs; EVA02): x, y [B,T,H·d]
 * (the q or k linear output as is), table [T−P, 2d] = [sin | cos] of each of the last T−P tokens
 * (timm's RotaryEmbeddingCat.pos_embed); the first P tokens (class/prefix tokens) are copied.
 * Every head's pair (2i, 2i+1) of token P+j: y[2i] = x[2i]·cos[2i] − x[2i+1]·sin[2i],
 * y[2i+1] = x[2i+1]·cos[2i+1] + x[2i]·sin[2i+1] (= x·cos + rot(x)·sin). d even; y may alias x.
 * The backward accumulates the transposed rotation of dy into dx (no table gradient). */
int sd_op_rope(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *table);
int sd_op_rope_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *table);
/* Softmax over the last axis; the backward uses the forward's output y. */
int sd_op_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_op_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y);
/* L2 normalisation over the last axis (torch F.normalize(x, dim=-1, eps)): y = x / max(‖x‖₂, eps)
 * per row (the SwinV2 cosine attention's q and k; y may alias x). The backward recomputes the
 * norm from x: dx += (dy − y·(y·dy)) / ‖x‖ where ‖x‖ > eps, else dy / eps. */
int sd_op_l2_normalize(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, float eps);
int sd_op_l2_normalize_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x, float eps);

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct sd_attn_args {
    int heads;
    float scale;   /* 0 → 1/sqrt(head_dim) */
    int causal;    /* 1: query i sees keys j ≤ i (CLIP text encoder) */
} sd_attn_args;

/* o = softmax(q·kᵀ·scale)·v per head, never storing a whole score matrix.
 * q [B,Tq,H·dk], k [B,Tk,H·dk], v [B,Tk,H·dv], o [B,Tq,H·dv], lse [B,H,Tq] (saved, f32:
 * log-sum-exp of each scaled score row). Self- and cross-attention alike. */
int sd_op_attention(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q,
                    const sd_tensor *k, const sd_tensor *v, sd_attn_args a);
/* dq, dk, dv += ... (recomputes scores block by block from q, k and the saved lse). */
int sd_op_attention_bwd(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv,
                        const sd_tensor *dout, const sd_tensor *q, const sd_tensor *k,
                        const sd_tensor *v, const sd_tensor *o, const sd_tensor *lse,
                        sd_attn_args a);

/* ---- shape ops ------------------------------------------------------------------------------ */

/* Nearest-neighbour upsample of x [N,C,H,W] to y [N,C,f·H,f·W] (integer f from the shapes). */
int sd_op_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_op_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy);
/* y = cat(xs[0..n), axis) (torch.cat); backward splits dy and accumulates (NULL dxs[i] skipped). */
int sd_op_concat(sd_ctx *ctx, sd_tensor *y, const sd_tensor *const *xs, int n, int axis);
int sd_op_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis);
/* Swin window partition with a cyclic shift: x [B,H,W,C] (channels last) → win [B·(H/ws)·(W/ws),
 * ws·ws, C], windows in row-major order, tokens row-major inside a window:
 *   win[b, wi, wj, i, j, c] = x[b, (wi·ws + i + shift) mod H, (wj·ws + j + shift) mod W, c]
 * i.e. timm's window_partition(torch.roll(x, (−shift, −shift), (1, 2)), ws); shift = 0 is the
 * plain partition. ws must divide H and W; 0 ≤ shift < ws. window_merge is the inverse (timm's
 * window_reverse followed by the roll back by +shift). Both are permutations; each one's
 * backward is the other applied with accumulation (the _bwd calls: dx += merge(dwin),
 * dwin += partition(dx)). f32 only; out and in must not alias.
 * (A dedicated gather rather than pad/roll/permute ops: the roll alone would take two
 * narrow-and-concat copies per axis; this is one pass over the tensor in each direction.) */
int sd_op_window_partition(sd_ctx *ctx, sd_tensor *win, const sd_tensor *x, int ws, int shift);
int sd_op_window_partition_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dwin, int ws, int shift);
int sd_op_window_merge(sd_ctx *ctx, sd_tensor *x, const sd_tensor *win, int ws, int shift);
int sd_op_window_merge_bwd(sd_ctx *ctx, sd_tensor *dwin, const sd_tensor *dx, int ws, int shift);

/* ---- embeddings ----------------------------------------------------------------------------- */

/* y [..., D] = table[ids[...]] with table [V, D] and ids i32; an id outside [0,V) is SD_ERANGE
 * (checked before anything is written). */
int sd_op_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids);
/* dtable[ids[i]] += dy[i] (scatter-add, deterministic order). */
int sd_op_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids);
/* Sinusoidal timestep embedding y [N, dim] of t [N] (f32), as diffusers get_timestep_embedding:
 * half = dim/2, f_i = exp(-ln(max_period)·i/(half - freq_shift)), [sin(t·f), cos(t·f)], swapped to
 * [cos, sin] when flip_sin_to_cos, zero-padded when dim is odd. SD (ldm timestep_embedding):
 * flip_sin_to_cos = 1, freq_shift = 0, max_period = 10000. No backward (t is not trained). */
int sd_op_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos,
                             float freq_shift, float max_period);

/* ---- losses --------------------------------------------------------------------------------- */

typedef enum sd_loss_kind {
    SD_LOSS_L2 = 0,        /* d² (MSE) */
    SD_LOSS_L1,            /* |d| */
    SD_LOSS_HUBER,         /* 2c·(sqrt(d²+c²) − c)  (pseudo-Huber, kohya "huber") */
    SD_LOSS_SMOOTH_L1,     /* 2·(sqrt(d²+c²) − c)   (kohya "smooth_l1") */
} sd_loss_kind;

/* pred, target [N, ...]: per_sample[n] = mean over the sample's elements of the element loss
 * (d = pred − target, threshold c[n]); loss [1] = mean over n of weight[n]·per_sample[n].
 * weight, c: [N] f32 or NULL (1 and 0.1). per_sample may be NULL. */
int sd_op_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred,
               const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c,
               sd_loss_kind kind);
/* dpred += dloss · ∂loss/∂pred (dloss: the gradient of the scalar loss, usually 1 or a loss
 * scale). The L1 gradient at d = 0 is 0 (torch sign). */
int sd_op_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target,
                   const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss);

/* ---- optimizer step on the device where the weights live (train/optim.h) ------------------------ */

/* AdamW on one parameter, in place: p, g, m, v f32 of one shape. half = SD_F32: the float32
 * update (sd_adamw_elem_f32); SD_F16 / SD_BF16: every operation rounded to that dtype
 * (sd_adamw_elem_half, --full_fp16 / --full_bf16). CPU and CUDA give the same bits. */
int sd_op_adamw(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, sd_tensor *v,
                const sd_adamw_scalars *s, sd_dtype half);
/* Lion on one parameter, in place (sd_lion_elem): p, g, m f32 of one shape. The same bits on CPU
 * and CUDA. */
int sd_op_lion(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, const sd_lion_scalars *s);
/* SGD with Nesterov momentum on one parameter, in place (sd_sgd_elem): p, g, buf f32 of one shape.
 * The same bits on CPU and CUDA. */
int sd_op_sgd(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *buf, const sd_sgd_scalars *s);
/* Adafactor's second moment and unclipped update u (g, u f32 of one shape):
 *   factored (g of ndim ≥ 2, [B…, R, C]; v NULL): row [B…, R] and col [B…, C] become
 *     fma(1-β2t, mean(g²+eps1 over the last / the second-to-last dim), old·β2t), rmean [B] (f32
 *     scratch, B = numel / (R·C)) the mean of each matrix's new rows, and
 *     u = (rsqrt(row / rmean) · rsqrt(col)) · g;
 *   unfactored (row, col, rmean NULL): v (g's shape) = fma(1-β2t, g²+eps1, v·β2t), u = rsqrt(v)·g.
 * Each mean is a double sum in index order, one row or column per thread, rounded to f32 and divided
 * by the count in f32 (sd_adafactor_ema): the same bits on CPU and CUDA. */
int sd_op_adafactor_sq(sd_ctx *ctx, const sd_tensor *g, sd_tensor *row, sd_tensor *col, sd_tensor *rmean,
                       sd_tensor *v, sd_tensor *u, const sd_adafactor_scalars *s);
/* Adafactor's step from u (sd_adafactor_apply_elem): p, u, m (NULL without β1) f32 of one shape.
 * The same bits on CPU and CUDA. */
int sd_op_adafactor_apply(sd_ctx *ctx, sd_tensor *p, const sd_tensor *u, sd_tensor *m, const sd_adafactor_scalars *s);
/* bitsandbytes' state of one tensor (train/optim8bit.h), its arrays on the context's device. */
typedef struct sd_bnb_state_ptrs {
    int64_t numel;
    int mode8;               /* 1: 8-bit codes with one absmax per 256-element block; 0: f32 states */
    float *m32, *v32;        /* f32: state1, state2 (v32 NULL with one state) */
    uint8_t *m8, *v8;        /* 8-bit: the codes of state1, state2 (v8 NULL with one state) */
    float *absmax1, *absmax2;
} sd_bnb_state_ptrs;
/* One step of bnb's 2-state (AdamW8bit; sd_bnb2_elem32 / sd_bnb2_block8) or 1-state (Lion8bit,
 * SGD8bit; sd_bnb1_elem32 / sd_bnb1_block8) kernel on one parameter: p, g f32 of st->numel values;
 * q the maps (host memory). The same bits on CPU and CUDA. */
int sd_op_bnb2_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st,
                    const sd_bnb2_scalars *s, const sd_bnb_qmaps *q);
int sd_op_bnb1_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st,
                    const sd_bnb1_scalars *s, const sd_bnb_qmaps *q);
/* *out = Σ x² (x f32), accumulated in double: on the CPU in element order, on CUDA in a fixed tree
 * (the same for any run; it may differ from the CPU's sum in the last bits of the double).
 * Synchronises. */
int sd_op_sumsq(sd_ctx *ctx, const sd_tensor *x, double *out);
/* x (f32) = round(x·s): the product skipped when s == 1; round SD_F32 = none, SD_F16 / SD_BF16 = to
 * the nearest value of that dtype. *nonfinite (may be NULL) is set to 1 when an element of x was
 * inf or NaN before (and left alone otherwise); given, the call synchronises. */
int sd_op_scale_round(sd_ctx *ctx, sd_tensor *x, float s, sd_dtype round, int *nonfinite);

#endif
