/* bitsandbytes' AdamW8bit (bitsandbytes.optim.AdamW8bit, what kohya-ss/sd-scripts builds for
 * --optimizer_type AdamW8bit / --use_8bit_adam) as a flat per-tensor step over f32 arrays.
 *
 * Followed: bitsandbytes 0.49.2 (tag 0.49.2, commit f0e6ca31b32c4744a9cee4e31610b25796cbf778);
 * the arithmetic below is identical in every release from 0.44.0 (when the 8-bit block size went
 * from 2048 to 256, commit aa57bd89) to main as of 2026-08 (0.50.2.dev0, 95f9af30). Sources:
 * bitsandbytes/optim/adamw.py (AdamW8bit), optim/optimizer.py (Optimizer2State.init_state,
 * update_step), functional.py (create_dynamic_map, optimizer_update_32bit,
 * optimizer_update_8bit_blockwise), csrc/ops.cu (BLOCKSIZE_2STATE 256, NUM_2STATE 1) and
 * csrc/kernels.cu (kOptimizer32bit2State<float, ADAM>, kOptimizerStatic8bit2StateBlockwise
 * <float, ADAM, 256, 1>, quantize_2D). What users run is the CUDA kernels; bnb's pure-PyTorch CPU
 * backend (backends/cpu/ops.py, backends/default/ops.py) differs from them (weight decay before
 * the update, nearest-code quantisation by bucketize without the sign fix, no NaN/inf masking)
 * and is NOT what is implemented here.
 *
 * Per tensor (Optimizer2State.init_state): a tensor with numel < min_8bit_size (4096) keeps f32
 * states ("32-bit path"); otherwise state1 (m) and state2 (v) are uint8 codes, one byte per
 * element, with one f32 absmax per block of 256 elements (ceil(numel/256) blocks, the last one
 * partial), all zero at the start. The step counter is the caller's (bnb's state["step"], counted
 * from 1 per tensor; it is passed as int32 to the kernels).
 *
 * All Python scalars are rounded to float once (ctypes c_float / the kernels' float parameters);
 * the arithmetic is f32, in the kernels' order (no contraction into FMAs):
 *     c1 = 1 - powf(β1, step)        c2 = sqrtf(1 - powf(β2, step))        step_size = (-lr·c2) / c1
 * 32-bit path (kOptimizer32bit2State, ADAM), per element:
 *     m = m·β1 + (1-β1)·g
 *     v = v·β2 + (1-β2)·(g·g)
 *     p = p + step_size·(m / (sqrtf(v) + eps·c2))
 *     if wd > 0: p = p·(1 - lr·wd)             ← decoupled decay AFTER the Adam update
 * 8-bit path (kOptimizerStatic8bit2StateBlockwise, ADAM), per block b of 256 elements:
 *     for each element (finite g):  v = qmap2[c2]·absmax2[b];  v = v·β2 + ((1-β2)·g)·g
 *                                   m = qmap1[c1]·absmax1[b];  m = m·β1 + (1-β1)·g
 *     for a NaN/±inf g: m = v = 0 and p is left unchanged;
 *     the elements past the end of a partial last block take part as g = 0, c1 = 128, c2 = 0
 *     (cub's out-of-range defaults), so they contribute |qmap1[128]·absmax1[b]·β1| to the max;
 *     absmax1[b] = max |m|, absmax2[b] = max |v| over the block (starting from -FLT_MAX);
 *     p = p + step_size·(m / (sqrtf(v) + c2·eps));  if wd > 0: p = p·(1 - lr·wd)   (finite g only)
 *     c1 = quantize(qmap1, m / absmax1[b]) (signed), c2 = quantize(qmap2, v / absmax2[b]);
 *     if signbit(qmap1[c1]) != signbit(m): c1 += 1 if m > 0 else c1 -= 1 (uint8 wrap-around).
 *   quantize() is quantize_2D: a 7-step binary search from index 127 (steps 64..1) with start
 *   bounds lower = -1 (signed) / 0 (unsigned), upper = 1 at indices 0 / 255, then the nearer of
 *   the last probe and its bracketing neighbour by the float midpoint (a + b)·0.5 (a tie goes to
 *   the probe, which is always an even index). x = 0/0 (an all-zero block) is NaN and lands on code 0 (then the sign fix gives
 *   255 for m = +0): the stored value is qmap·0 = ±0 either way.
 * Quantisation maps (create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), computed by
 * torch on the CPU in float32): for i = 0..6 the means of consecutive points of
 * torch.linspace(0.1, 1, k) (k = 2^i + 1 signed, 2^(i+1) + 1 unsigned) times (float)10^(i-6),
 * signed maps also their negatives, plus 0 and 1.0, sorted: 256 entries. Signed: qmap1[0] =
 * -0.99296875, qmap1[127] = 0, qmap1[128] = 5.5e-7, qmap1[255] = 1. Unsigned: qmap2[0] = 0,
 * qmap2[1] = 3.25e-7, qmap2[255] = 1. torch.linspace is evaluated here as torch >= 2.1's scalar
 * CPU code reads, in IEEE float (start + step·i below k/2, end - step·(k-1-i) from there, step =
 * 0.9f/(k-1)). Real torch builds differ from that by an ulp or two in some entries (torch <= 2.0
 * vectorises linspace; builds that contract to FMA round differently): torch 1.13 on x86-64 gives
 * 90 of the 512 entries 1-2 ulp apart (tests/unit/test_optim8bit.c measures it). Those ulps move a
 * code only for a value within an ulp of a midpoint.
 *
 * What the GPU does beyond this: bnb builds its kernels with nvcc --use_fast_math (CMakeLists.txt,
 * 0.44.0 .. main), i.e. approximate division, sqrtf and powf (__fdividef, __powf: ~2 ulp), FMA
 * contraction of a·b + c, and denormals flushed to zero. None of that is reproducible bit for bit
 * on a CPU, so this is the kernels' order of operations in IEEE float (glibc powf, correctly
 * rounded sqrtf and '/', no FMA, gradual underflow): a GPU's parameters differ from it in the last
 * ulp or so, and a code by one where m/absmax lies within an ulp or two of a midpoint.
 * NaN/±inf gradients: masked in the 8-bit path as above; the 32-bit kernel has no mask (they
 * propagate into m, v and p, as there).
 *
 * Our own CUDA kernels (sd_adamw8bit_step_op / sd_bnb1_step_op through tensor/ops.h) run this same
 * element code (tensor/optim8_elem.h, every operation IEEE-rounded, no contraction, no fast math):
 * the same bits as these host loops, not bnb's.
 *
 * Threads: blocks (8-bit) and elements (32-bit) are independent; large tensors are split over the
 * OpenMP team, and the bytes do not depend on the thread count. No allocation in the step. */
#ifndef SD_TRAIN_OPTIM8BIT_H
#define SD_TRAIN_OPTIM8BIT_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "tensor/ops.h"

/* ---- bnb's defaults (AdamW8bit.__init__ / Optimizer2State, bnb 0.49.2) ---------------------- */
#define SD_BNB_BLOCKSIZE       256      /* 8-bit 2-state blockwise block (>= 0.44.0; 2048 before) */
#define SD_BNB_MIN_8BIT_SIZE   4096     /* tensors with fewer elements keep f32 states */
#define SD_BNB_QMAP_SIZE       256
#define SD_BNB_DEFAULT_LR      1e-3
#define SD_BNB_DEFAULT_BETA1   0.9
#define SD_BNB_DEFAULT_BETA2   0.999
#define SD_BNB_DEFAULT_EPS     1e-8
#define SD_BNB_DEFAULT_WD      1e-2     /* AdamW8bit's weight_decay default */

/* ---- the quantisation maps ----------------------------------------------------------------- */

/* bitsandbytes.functional.create_dynamic_map(signed, 7, 8), as torch (float32, CPU) computes it. */
void sd_bnb_dynamic_map(int is_signed, float out[SD_BNB_QMAP_SIZE]);
/* The two maps AdamW8bit uses (state1: signed "dynamic", state2: unsigned "udynamic"); built once,
 * thread-safe, never freed. */
const float *sd_bnb_qmap_signed(void);
const float *sd_bnb_qmap_unsigned(void);
/* The kernels' quantize_2D<is_signed>(code, x): the code index for a value x (already divided by
 * the block's absmax). No sign fix (the optimizer applies it to state1). */
uint8_t sd_bnb_quantize(const float *code, int is_signed, float x);
/* Both maps in one struct (tensor/optim8_elem.h), for the ops. */
const sd_bnb_qmaps *sd_bnb_qmaps_get(void);

/* ---- the AdamW8bit constructor's arguments ------------------------------------------------- */

typedef struct sd_adamw8bit_config {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t min_8bit_size;      /* 4096 (a float x given acts as ceil(x): numel < x) */
    int amsgrad;                /* False; True is bnb's ValueError */
    int optim_bits;             /* 32 (ignored by bnb: 8-bit states anyway); other is ValueError */
    int percentile_clipping;    /* 100 = off; < 100 is refused here (SD_EUNSUPPORTED) */
    int block_wise;             /* True; False (one absmax per tensor) is refused here */
    int is_paged;               /* False; True only changes where bnb keeps the states: accepted */
} sd_adamw8bit_config;

/* AdamW8bit.__init__'s keyword names in signature order, NULL-terminated:
 * lr, betas, eps, weight_decay, amsgrad, optim_bits, args, min_8bit_size, percentile_clipping,
 * block_wise, is_paged. */
extern const char *const sd_adamw8bit_arg_names[];
/* 1 when `key` is one of them. */
int sd_adamw8bit_arg_known(const char *key);

/* Apply one --optimizer_args item (value parsed by sd_py_literal) as the constructor would take
 * it; kohya calls AdamW8bit(params, lr=…, **kwargs). Errors (SD_EUSAGE, Python's text):
 *   unknown key:  "AdamW8bit.__init__() got an unexpected keyword argument 'key'"
 *   lr:           "bitsandbytes.optim.adamw.AdamW8bit() got multiple values for keyword argument 'lr'"
 *   params:       "AdamW8bit.__init__() got multiple values for argument 'params'"
 *   a value of the wrong type: "AdamW8bit: betas must be …, got …".
 * betas: a tuple/list of 2 or 3 numbers (a third, AdEMAMix's beta3, is ignored by Adam) or bnb's
 * string form "(0.9, 0.999)"; numbers for eps, weight_decay, min_8bit_size, percentile_clipping,
 * optim_bits; Python truthiness for amsgrad, block_wise, is_paged; args must be None
 * (SD_EUNSUPPORTED otherwise). Range checks are sd_adamw8bit_config_check's. */
struct sd_py_value;
int sd_adamw8bit_config_set(sd_adamw8bit_config *c, const char *key, const struct sd_py_value *v);

void sd_adamw8bit_config_default(sd_adamw8bit_config *c);
/* The constructor's checks, in bnb's order, with its messages (SD_EUSAGE):
 * "AdamW8bit does not support amsgrad=True", "AdamW8bit only supports optim_bits=32 (default
 * value for compatibility)", "Invalid learning rate: -0.1", "Invalid epsilon value: …", "Invalid
 * beta parameter at index i: …", "Invalid weight_decay value: …" (numbers as Python's float
 * repr); then SD_EUNSUPPORTED for percentile_clipping < 100 or block_wise=False. */
int sd_adamw8bit_config_check(const sd_adamw8bit_config *c);

/* ---- per-tensor state ---------------------------------------------------------------------- */

typedef enum sd_bnb_state_mode {
    SD_BNB_STATE_F32 = 0,   /* numel < min_8bit_size: f32 state1/state2 */
    SD_BNB_STATE_U8 = 1,    /* 8-bit blockwise: u8 state1/state2 + f32 absmax1/absmax2 */
} sd_bnb_state_mode;

typedef struct sd_adamw8bit_state {
    int64_t numel;
    int nstates;             /* 2 (Adam: state1 + state2) or 1 (Lion8bit / SGD8bit: state1 only) */
    sd_bnb_state_mode mode;
    int64_t nblocks;         /* ceil(numel / 256) in U8 mode, 0 in F32 mode */
    float *m32, *v32;        /* F32: state1, state2 (numel each; v32 NULL with one state) */
    uint8_t *m8, *v8;        /* U8: state1, state2 codes (numel each; v8 NULL with one state) */
    float *absmax1, *absmax2;/* U8: nblocks each (absmax2 NULL with one state) */
    void *mem;               /* one allocation holding all of the above */
} sd_adamw8bit_state;

/* The mode bnb picks for a tensor of `numel` elements (min_8bit_size ≤ 0 means the default). */
sd_bnb_state_mode sd_adamw8bit_mode_for(int64_t numel, int64_t min_8bit_size);
/* Zeroed state for one tensor of `numel` (> 0) elements, as init_state allocates it (torch.zeros
 * for every array). */
int sd_adamw8bit_state_init(sd_adamw8bit_state *st, int64_t numel, int64_t min_8bit_size);
void sd_adamw8bit_state_free(sd_adamw8bit_state *st);
/* Bytes of state held for this tensor. */
size_t sd_adamw8bit_state_bytes(const sd_adamw8bit_state *st);

/* One AdamW8bit step for this tensor (p, g: numel f32 each, host memory; `step` ≥ 1 is bnb's
 * state["step"] after its increment, ≤ INT32_MAX). lr, betas, eps and weight_decay are the
 * group's values as Python floats; they are rounded to float here. */
int sd_adamw8bit_step(sd_adamw8bit_state *st, float *p, const float *g, double lr, double beta1,
                      double beta2, double eps, double weight_decay, int64_t step);
/* The same step through sd_op_bnb2_step on ctx's device: the state's arrays, p and g there (the
 * same bits as the host loops, tensor/optim8_elem.h). */
int sd_adamw8bit_step_op(sd_ctx *ctx, sd_adamw8bit_state *st, sd_tensor *p, const sd_tensor *g, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int64_t step);
/* The state's arrays for the ops (tensor/ops.h). */
sd_bnb_state_ptrs sd_bnb_state_ptrs_of(const sd_adamw8bit_state *st);
/* The scalars of a 2-state step, rounded to float as bnb does. */
void sd_bnb2_scalars_make(sd_bnb2_scalars *s, double lr, double beta1, double beta2, double eps, double wd,
                          int64_t step);

/* The moments as f32 (dequantised in U8 mode: qmap[code]·absmax[block]); m and/or v may be NULL. */
void sd_adamw8bit_moments(const sd_adamw8bit_state *st, float *m, float *v);

/* ---- serialisation (resume) -------------------------------------------------------------- */

/* The state's arrays under bnb's state-dict keys, in this order: "state1", "state2" and, in U8
 * mode, "absmax1", "absmax2". Each is 1-D (state1/2: [numel], absmax: [nblocks]). A caller saves
 * them byte for byte (e.g. as "<param key>.state1") and loads them back into `data`. */
typedef struct sd_bnb_state_array {
    const char *name;
    sd_st_dtype dtype;       /* SD_ST_U8 or SD_ST_F32 */
    int64_t numel;
    void *data;              /* points into the state */
} sd_bnb_state_array;

#define SD_BNB_MAX_ARRAYS 4
/* Fill out[] and return how many arrays (2 in F32 mode, 4 in U8 mode; with one state 1 and 2:
 * "state1" and, in U8 mode, "absmax1"). */
int sd_adamw8bit_arrays(sd_adamw8bit_state *st, sd_bnb_state_array out[SD_BNB_MAX_ARRAYS]);

/* Add the arrays to a safetensors writer as "<prefix>.<name>" (the data is referenced, not
 * copied: keep the state alive and unchanged until the write). */
int sd_adamw8bit_save(sd_adamw8bit_state *st, sd_safetensors_writer *w, const char *prefix);
/* Load "<prefix>.<name>" from an open file into the state (built by sd_adamw8bit_state_init for
 * the tensor). The file's arrays must be exactly those of the state's mode: SD_EFORMAT naming the
 * file and tensor for a missing array, the other mode's arrays (e.g. 8-bit state for a tensor
 * that uses 32-bit states), a wrong dtype or an element count other than numel / nblocks (any
 * shape with that product is accepted). Values are taken as they are (a diverged run's inf/NaN
 * included), so save + load is byte-exact. On error the state is left zeroed. */
int sd_adamw8bit_load(sd_adamw8bit_state *st, const sd_safetensors *f, const char *prefix);


/* ---- the 1-state optimizers: Lion8bit, PagedLion8bit, SGD8bit ------------------------------ */

/* bitsandbytes.optim.Lion8bit / PagedLion8bit ("lion") and SGD8bit ("momentum"; kohya's
 * SGDNesterov8bit), Optimizer1State with optim_bits 8 (bnb 0.49.2, the same sources as above;
 * csrc/ops.cu BLOCKSIZE_1STATE 256, NUM_1STATE 1; kernels.cu kOptimizer32bit1State<float, OPT>
 * and kOptimizerStatic8bit1StateBlockwise<float, OPT, 256, 1>). One state, state1 (f32 below
 * min_8bit_size, else signed 8-bit codes with one absmax1 per 256-element block, the signed
 * dynamic map). Scalars rounded to float; lion passes betas = (β1, β2), momentum (μ, dampening)
 * where dampening is never used; eps is 0.0 and unused. Per element, f32, the kernels' order:
 *   32-bit path (the kernel adds the weight decay to the gradient for every 1-state optimizer,
 *   Lion included):  if wd > 0: g = g + p·wd
 *     lion:      p = p - lr·sgn(s·β1 + (1-β1)·g);  s = s·β2 + (1-β2)·g
 *     momentum:  s = step == 1 ? g : s·β1 + g;     p = p + (-lr·s)
 *   8-bit blockwise path (s = qmap[c]·absmax1[b] dequantised; no NaN/inf masking, skip_zeros off):
 *     lion:      if wd > 0: p = p·(1 - lr·wd)   (decoupled, before the update)
 *                u = lr·sgn(s·β1 + (1-β1)·g);  s = s·β2 + (1-β2)·g;  p = p - u
 *     momentum:  if wd > 0: g = g + p·wd;  s = step == 1 ? g : s·β1 + g;  p = p - lr·s
 *     absmax1[b] = max |s| over the 256 lanes (past the end: g = 0, p = 0, code 128), then
 *     the codes by quantize_2D with the sign fix, as for AdamW8bit's state1.
 *   sgn(x) = (0 < x) - (x < 0) (0 for ±0 and NaN). SGD8bit has no Nesterov step: bnb accepts
 *   nesterov and ignores it (kohya's SGDNesterov8bit is plain heavy-ball momentum). */
typedef enum sd_bnb1_optimizer {
    SD_BNB1_LION = 1,
    SD_BNB1_MOMENTUM = 2,
} sd_bnb1_optimizer;

/* Zeroed one-state storage (state1, absmax1) for a tensor of `numel` elements. */
int sd_bnb1_state_init(sd_adamw8bit_state *st, int64_t numel, int64_t min_8bit_size);
/* One step (step ≥ 1 after bnb's increment). half: the parameters' dtype, the kernels' T (0 f32,
 * 1 f16, 2 bf16; p and g then hold values of that dtype): the values the kernel stores in T
 * variables are rounded to it, as there: the parameter (after Lion's 8-bit decay and at the end),
 * Lion's lr·sgn(..) on the 8-bit path and the decayed gradient g + p·wd on the 32-bit path.
 * bf16 with momentum on a 32-bit-state tensor is bnb's ValueError (no such kernel): SD_EUSAGE. */
int sd_bnb1_step(sd_adamw8bit_state *st, sd_bnb1_optimizer opt, float *p, const float *g, double lr,
                 double beta1, double beta2, double weight_decay, int64_t step, int half);
/* The same through sd_op_bnb1_step on ctx's device (state, p and g there; the same bits). */
int sd_bnb1_step_op(sd_ctx *ctx, sd_adamw8bit_state *st, sd_bnb1_optimizer opt, sd_tensor *p, const sd_tensor *g,
                    double lr, double beta1, double beta2, double weight_decay, int64_t step, int half);

/* The constructors' keyword arguments (kohya calls Class(params, lr=..., **optimizer_args)):
 *   Lion8bit:       betas=(0.9, 0.99), weight_decay=0, args, min_8bit_size, percentile_clipping,
 *                   block_wise, is_paged          (PagedLion8bit: the same without is_paged)
 *   SGD8bit:        momentum=0 (kohya: 0.9), dampening=0, weight_decay=0, nesterov, args,
 *                   min_8bit_size, percentile_clipping, block_wise
 * For SGD8bit, beta1 holds momentum and beta2 dampening (bnb's betas). `cls` is the class name
 * for messages ("Lion8bit"), `qualname` bnb's module.Class. nesterov is kohya's own keyword:
 * giving it is "got multiple values for keyword argument 'nesterov'". */
void sd_bnb1_config_default(sd_adamw8bit_config *c, int sgd);
int sd_bnb1_config_set(sd_adamw8bit_config *c, const char *cls, const char *qualname, int sgd, int has_is_paged,
                       const char *key, const struct sd_py_value *v);
/* SGD8bit: "SGD without momentum is not supported!" (momentum == 0); then Optimizer1State's
 * checks: "Invalid learning rate: …", "Invalid beta parameter at index i: …", "Invalid
 * weight_decay value: …"; percentile_clipping < 100 / block_wise=False are SD_EUNSUPPORTED. */
int sd_bnb1_config_check(const sd_adamw8bit_config *c, const char *cls, int sgd);

#endif
