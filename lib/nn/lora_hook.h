/* LoRA branch attached to a linear or conv layer (kohya-ss networks/lora.py LoRAModule).
 *
 *   y = base(x) + multiplier · scale · up(drop(down(x)))      scale = alpha / rank
 *
 * Linear host: down [r, in], up [out, r]. Conv host (kh×kw, stride/padding of the base conv):
 * down [r, in, kh, kw] with the base geometry, up [out, r, 1, 1]. A 1×1 conv host implemented as a
 * linear over [B, T, C] (SpatialTransformer proj_in/proj_out in SD1) uses the 4-d shapes with the
 * linear math. The weights live in a registry of their own (the network's), always f32.
 *
 * Training-time randomness (only when rt->training): module dropout (the whole branch skipped
 * for this call with probability p), neuron dropout on down(x) (scaled by 1/(1-p)), rank dropout
 * (a Bernoulli(1-p) mask over the rank per sample, scale multiplied by 1/(1-p)). All draws come
 * from the Philox stream (rt->seed, rt->step, id, SD_RNG_DROPOUT), so a recomputation (gradient
 * checkpointing) or a resumed run draws the same masks.
 *
 * LyCORIS's LoConModule (lycoris.kohya algo=lora/locon) drops differently (lyco_drop):
 *  - SD_LORA_DROP_LYCO (bypass_mode off, its make_weight): rank_dropout keeps each row o of ΔW = up·down
 *    when its uniform draw (1 + o) is > p (one mask for the whole batch, not rescaled: create_network never
 *    sets rank_dropout_scale), i.e. the branch output channel o is multiplied by the keep flag; dropout is
 *    not applied (LyCORIS never applies it in that form).
 *  - SD_LORA_DROP_LYCO_BYPASS (bypass_forward_diff): rank_dropout keeps rank j of down(x) when draw (1 + j) is
 *    > p (one mask for the batch, not rescaled); dropout is nn.Dropout(p) on the branch output
 *    (each element kept when its draw (1 + rank + e) is >= p, kept ones scaled by 1 / (1 - p)).
 * The output masks cost one y-sized scratch tensor in the forward and the backward (dy masked).
 *
 * DyLoRA (kohya networks/dylora.py; dy_unit > 0): the module holds `rank` rows; every training
 * forward draws trainable_rank tr = randint(0, rank-1) rounded down to a multiple of dy_unit from
 * the stream (rt->seed, rt->step, id, SD_RNG_DYLORA) (value 0, sd_rng_below_at), computes the
 * FULL branch with f = multiplier · scale · sqrt(rank / (tr + unit)), and its backward adds weight
 * gradients only to the rows tr .. tr+unit-1 (rows of down, columns of up; the other rows get
 * none, dx gets the full product's) and sets dy_touched[row] = 1 for them. A recomputation
 * (gradient checkpointing) draws the same rows. Outside training the branch is the whole-rank
 * LoRA (tr + unit = rank: f = multiplier · scale), as the saved file is used.
 *
 * The host layer calls sd_lora_forward() after computing base(x) into y, and sd_lora_backward()
 * next to its own backward. Implementation: z = down(x); zf = z · f · mask (f = multiplier ·
 * scale, mask includes the dropout factors) is saved; y += up(zf). Backward: dup += dyᵀ·zf,
 * dzf = dy·up, dz = dzf · f · mask, ddown += dzᵀ·x, dx += dz·down. */
#ifndef SD_NN_LORA_HOOK_H
#define SD_NN_LORA_HOOK_H

#include <stdint.h>

#include "nn/params.h"
#include "tensor/ops.h"

/* Shared by all modules of one network; the trainer updates it (step, training). */
typedef struct sd_lora_rt {
    uint64_t seed;
    uint32_t step;
    int training;
} sd_lora_rt;

enum { SD_LORA_DROP_KOHYA = 0, SD_LORA_DROP_LYCO = 1, SD_LORA_DROP_LYCO_BYPASS = 2 };

typedef struct sd_lora {
    sd_param *down, *up;
    sd_param *mid;            /* Tucker LoCon (LyCORIS use_tucker on a k×k conv host): lora_mid [r, r, kh, kw] with
                                 the base geometry, down then a 1×1 conv [r, in, 1, 1]; NULL otherwise */
    int64_t in, out;
    int rank;
    int kh, kw;               /* 1×1 for linear hosts */
    int conv;                 /* host runs a conv (k×k geometry); 0: linear math */
    sd_conv2d_geom geom;      /* base conv geometry (conv hosts) */
    float alpha, multiplier;
    float dropout, rank_dropout, module_dropout;
    uint32_t id;              /* stream id for the dropout draws; unique per module */
    const sd_lora_rt *rt;     /* NULL: never training (no dropout) */
    int lyco_drop;            /* dropout semantics: SD_LORA_DROP_KOHYA (0), _LYCO (LyCORIS LoConModule, bypass_mode
                                 off) or _LYCO_BYPASS (bypass_mode on); see below */
    const uint8_t *drop_keep; /* test hook (NULL in use): the LyCORIS keep flags instead of the draws — rank mask
                                 (_LYCO_BYPASS, rank flags) then output mask (out flags or one per element of y) */
    /* state of the last training forward */
    int skipped;
    sd_tensor zf;             /* saved: f·mask·down(x) */
    sd_tensor mask;           /* saved: f·mask when a dropout is active (data NULL otherwise) */
    sd_tensor omask;          /* saved: LyCORIS's output mask on up(zf) (data NULL when none) */
    float factor;
    float *host_mask;         /* host staging for mask draws (grown once, reused) */
    size_t host_mask_cap;
    /* DyLoRA (0: a plain LoRA module) */
    int dy_unit;
    int dy_tr;                /* trainable_rank of the last training forward */
    uint8_t *dy_touched;      /* rank flags (owned by the caller, may be NULL): rows given a gradient */
    sd_tensor dy_rows;        /* saved: 1 for the rows tr..tr+unit-1, 0 else ([rank] floats) */
} sd_lora;

/* DyLoRA's trainable_rank for the module's call at rt->step (training). */
int sd_lora_dy_draw(const sd_lora *l);

/* Register `name.lora_down.weight` and `name.lora_up.weight` (trainable) in `reg` for a host
 * with `in` inputs and `out` outputs. conv = 1: a k×k conv host with geometry g (down gets the
 * kernel and geometry, up is 1×1); conv = 0 and conv_shapes = 1: a 1×1-conv host run as a linear
 * (4-d weight shapes); otherwise a linear host. alpha <= 0 means alpha = rank. multiplier = 1,
 * no dropout; set the fields afterwards to change them. */
int sd_lora_init(sd_lora *l, sd_params *reg, const char *name, int64_t in, int64_t out, int rank,
                 float alpha, int conv, int kh, int kw, sd_conv2d_geom g, int conv_shapes);
void sd_lora_free(sd_lora *l);
/* LyCORIS's Tucker LoCon on a k×k conv host (kh or kw > 1): "name.lora_down" [r, in, 1, 1], "name.lora_mid"
 * [r, r, kh, kw] (the host's geometry), "name.lora_up" [out, r, 1, 1]; the branch is up(mid(down(x))), i.e.
 * ΔW[o, i, k] = Σ up[o, p] mid[p, q, k] down[q, i] (LyCORIS's rebuild_tucker). The backward recomputes
 * down(x). sd_lora_init_weights gives mid kaiming-uniform (a = sqrt(5): U(±1/sqrt(r·kh·kw))) from the
 * same stream after down's draws, as LyCORIS initialises lora_mid; sd_lora_merge refuses it. */
int sd_lora_init_tucker(sd_lora *l, sd_params *reg, const char *name, int64_t in, int64_t out, int rank, float alpha,
                        int kh, int kw, sd_conv2d_geom g);
/* kohya's initialisation on the host: down ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from the stream
 * (seed, 0, id, SD_RNG_INIT), up = 0. The registry must be allocated. */
int sd_lora_init_weights(sd_ctx *ctx, sd_lora *l, uint64_t seed);
/* LoRA-FA's initialisation (kohya networks/lora_fa.py, after the paper): down ~ N(0, std²) with
 * std = sqrt(2 / (in_dim + rank)) (in_dim: the host's input features or channels, not times the
 * kernel) from the normal draws of the same stream (seed, 0, id, SD_RNG_INIT), up = 0. The values
 * are Philox draws, not torch.nn.init.normal_'s. */
int sd_lora_init_weights_fa(sd_ctx *ctx, sd_lora *l, uint64_t seed);
/* The lora_down half of it alone (up untouched). */
int sd_lora_init_down_fa(sd_lora *l, uint64_t seed);

/* W += multiplier · scale · ΔW, with ΔW[o, i·kh·kw] = Σ_r up[o, r] · down[r, i·kh·kw] (linear,
 * 1×1 and k×k convs alike, as kohya's merge). `w` is the host's f32 weight ([out, in] or
 * [out, in, kh, kw]). Use a negative multiplier to unmerge. */
int sd_lora_merge(sd_ctx *ctx, const sd_lora *l, sd_tensor *w, float multiplier);

/* y += branch(x). x/y: [..., in]/[..., out] (linear math) or [N,in,H,W]/[N,out,Ho,Wo] (conv).
 * save: arena for the saved tensors (training), NULL for inference (temporaries from scratch). */
int sd_lora_forward(sd_ctx *ctx, sd_lora *l, sd_arena *save, sd_tensor *y, const sd_tensor *x);
/* dx += ..., grads of down/up += ... (dx may be NULL; frozen LoRA weights get no gradient). */
int sd_lora_backward(sd_ctx *ctx, sd_lora *l, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x);
/* Bytes a training forward takes from `save` for an output of `y_numel` elements over
 * `rows` samples (x.shape[0]); and the scratch it needs at most (forward or backward). */
size_t sd_lora_saved_bytes(const sd_lora *l, int64_t y_numel, int64_t rows);
size_t sd_lora_scratch_bytes(const sd_lora *l, int64_t y_numel, int64_t rows);

#endif
