/* Optimizers over the trainable parameters of a registry (nn/params.h), gradient clipping and
 * gradient-accumulation helpers, as kohya-ss/sd-scripts uses them (spec §6.8, §6.9).
 *
 * Every optimizer reproduces the arithmetic of the Python package kohya's requirements.txt pins,
 * operation by operation: Python scalars are computed in double and rounded to float once (as the
 * CPU kernels use them); tensor arithmetic is f32, add(alpha)/addcmul as fused multiply-adds as
 * ATen's CPU kernels run them; reductions that become Python floats (.item()) are summed in double
 * and rounded to f32 like the tensor result (within an ulp of torch's order). Elementwise loops
 * are split over the OpenMP team (the same bytes for any thread count); reductions are serial.
 * Step t counts per parameter from 1; g is the gradient, p the parameter, lr the group's scheduled LR.
 *
 * AdamW: torch.optim.AdamW (single-tensor path, torch 1.13 .. 2.x, amsgrad/maximize off):
 *     p  *= 1 - lr·wd;  m = m·β1 + (1-β1)·g;  v = v·β2 + (1-β2)·g·g
 *     p  += -(lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)
 *   defaults β = (0.9, 0.999), eps 1e-8, weight_decay 0.01 (torch's; kohya passes none).
 * Lion: lion-pytorch 0.2.3 (lion_pytorch.lion_pytorch.Lion):
 *     p *= 1 - lr·wd;  p += -lr·sign(m·β1 + (1-β1)·g);  m = m·β2 + (1-β2)·g
 *   defaults β = (0.9, 0.99), weight_decay 0; decoupled_weight_decay=True divides wd by the
 *   constructor's lr (--learning_rate). --use_lion_optimizer selects it.
 * SGDNesterov: torch.optim.SGD(nesterov=True), momentum 0.9 unless given (kohya adds it):
 *     d = g + wd·p;  b = d (first step) or b·μ + (1-dampening)·d;  d += μ·b;  p += -lr·d
 * Adafactor: transformers.optimization.Adafactor (transformers 4.54, kohya's defaults: relative_step
 *   True, scale_parameter True, warmup_init False, eps (1e-30, 1e-3), clip_threshold 1, decay_rate
 *   -0.8, beta1 None, weight_decay 0). Per parameter: RMS = ‖p‖/sqrt(n) (before the update);
 *     ρ = relative_step ? min(warmup_init ? 1e-6·t : 1e-2, 1/sqrt(t)) : lr
 *     α = (scale_parameter ? max(eps2, RMS) : 1) · ρ        (an f32 product when RMS wins)
 *     β2t = 1 - t^decay_rate;  u = g² + eps1
 *     ≥2-D [.., R, C] (factored): row = row·β2t + (1-β2t)·mean_C(u), col = col·β2t + (1-β2t)·mean_R(u),
 *        u = rsqrt(row / mean_R(row)) · rsqrt(col) · g;   1-D: v = v·β2t + (1-β2t)·u, u = rsqrt(v)·g
 *     u /= max(1, RMS(u)/clip_threshold);  u *= α;  beta1: m = m·β1 + (1-β1)·u, u = m
 *     p += -wd·α·p (when wd ≠ 0);  p -= u
 *   With relative_step the LR comes from the optimizer: kohya sets lr=None, drops the group LRs,
 *   ignores --unet_lr/--text_encoder_lr, and uses the scheduler "adafactor:<learning_rate>" (which
 *   logs AdafactorSchedule's LRs: α of each group's first parameter); warmup_init forces
 *   relative_step. sd_optim_adafactor_schedule() says when this applies.
 * Prodigy: prodigyopt 1.1.2 (prodigyopt.prodigy.Prodigy; defaults β = (0.9, 0.999), beta3 None =
 *   sqrt(β2), eps 1e-8, weight_decay 0, decouple True, use_bias_correction False, safeguard_warmup
 *   False, d0 1e-6, d_coef 1, growth_rate inf, slice_p 1). Global d, d_max, d_numerator, k:
 *     lr = max group LR (every group must have it or 0); bc = use_bias_correction ?
 *     sqrt(1-β2^(k+1))/(1-β1^(k+1)) : 1;  dlr = d·lr·bc;  num = d_numerator·β3
 *     per parameter (group LR > 0), on p[::slice_p] for the statistics:
 *       num += (d/d0)·dlr·⟨g, p0 - p⟩;  m = m·β1 + d(1-β1)·g;  v = v·β2 + d²(1-β2)·g·g
 *       s = s·β3 + (d/d0)·(safeguard_warmup ? d : dlr)·g;   den += Σ|s|
 *     den = 0: stop (nothing moves, k stays); else d̂ = d_coef·num/den, d = max(d, d̂) while d = d0,
 *     d_max = max(d_max, d̂), d = min(d_max, d·growth_rate)   (p0: p when its state was created)
 *     p += -wd·dlr·p (decoupled);  p += -dlr · m / (sqrt(v) + d·eps)   (β1 = 0: -dlr·d · g / ...)
 *   Coupled weight decay (decouple False) adds wd·p to g first, in place, as the reference does.
 * DAdaptAdam: dadaptation 3.2 (dadaptation.dadapt_adam.DAdaptAdam; decouple False by default,
 *   use_bias_correction, d0 1e-6, growth_rate inf); "DAdaptation" and "DAdaptAdamPreprint" are
 *   dadaptation.experimental.DAdaptAdamPreprint (no bias correction), as kohya maps them. Their
 *   d-estimates follow the sources (numerator_weighted / gsq_weighted, sk_l1) the same way.
 *   D-Adaptation and Prodigy log lr/d*lr/<group> = d × the group LR.
 * DAdaptSGD: dadaptation 3.2 (dadaptation.dadapt_sgd.DAdaptSGD; momentum 0, weight_decay 0, d0
 *   1e-6, growth_rate inf): g0_norm = ‖g‖ of the first step (k = 0, LR > 0 groups, before the
 *   decay), dlr = d·lr/g0_norm; per parameter (z = x0 = p, s = 0 at its first gradient):
 *   g += wd·p; num += dlr·⟨g, s⟩; s += dlr·g; then d̂ = 2·num/‖s‖, d = max(d, min(d̂, d·growth_rate))
 *   (lr > 0; nothing moves when ‖s‖ = 0), z = x0 - s, p = p·(1-ck) + ck·z with ck = 1 - momentum.
 *
 * AdamW8bit (also --use_8bit_adam): bitsandbytes.optim.AdamW8bit as train/optim8bit.h implements
 *   it (bnb 0.49.2 kernels: f32 states below min_8bit_size elements, 8-bit blockwise above; its
 *   constructor's arguments and messages); the state keeps bnb's state1/state2/absmax1/absmax2.
 *   PagedAdamW8bit is the same arithmetic; PagedAdamW and PagedAdamW32bit (optim_bits 32) keep f32
 *   states on every tensor. Paging only moves GPU state to host memory under pressure.
 * Lion8bit, PagedLion8bit: bitsandbytes.optim.lion.Lion8bit / PagedLion8bit (bnb 0.49.2, the
 *   1-state kernels of train/optim8bit.h: betas (0.9, 0.99), weight_decay 0; the 8-bit path
 *   decays p by (1 - lr·wd) before the sign update, the 32-bit path (tensors below min_8bit_size)
 *   adds wd·p to the gradient, as bnb's kernels do); state1/absmax1 in the resume state.
 * SGDNesterov8bit: bitsandbytes.optim.sgd.SGD8bit(momentum=0.9 unless given, nesterov=True) as
 *   kohya builds it; bnb's kernels have no Nesterov step (nesterov is accepted and ignored), so
 *   this is heavy-ball momentum: s = g (first step) or s·μ + g (g += wd·p), p -= lr·s.
 *
 * AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree: schedulefree 1.4 (kohya's pin; commit
 *   49f34e0), the foreach path (torch >= 1.13): per group, k steps so far, lr the group LR
 *   (kohya's dummy scheduler keeps it constant) times AdamW/SGD's warm-up (k+1)/warmup_steps
 *   (RAdam: times the rectification, 0 in its silent SGD phase), lr_max = max(lr, lr_max),
 *   weight = (k+1)^r·lr_max^weight_lr_power, weight_sum += weight, c = weight/weight_sum (0 for 0/0);
 *   per parameter (z = p and v = 0 at its first gradient):
 *     AdamW/RAdam: v = v·β2 + (1-β2)·g·g;  g = g / (sqrt(v / (1-β2^(k+1))) + eps) (RAdam only while
 *                  rho_t > 4);  SGD: nothing
 *     g += wd·y (wd ≠ 0);  y = lerp(y, z, c);  y += lr·(β1·(1-c) - 1)·g;  z -= lr·g
 *   (SGD: momentum for β1). The parameters hold y in train mode and x = lerp(y, z, 1-1/β1) in eval
 *   mode (sd_optim_sf_eval/train); the state keeps z and exp_avg_sq, k and the mode.
 *
 * DAdaptAdaGrad: dadaptation 3.2 dadapt_adagrad.py (momentum 0, weight_decay 0, eps 1e-6, d0 1e-6,
 *   growth_rate inf; lr = group 0's, the others ignored): per parameter (alphak = 1e-6, sk = 0,
 *   x0 = p at its first gradient): g += wd·p; alphak += g·g; g_sq += Σ g²/(sqrt(alphak)+eps);
 *   sk += dlr·g; sksq_weighted and skl1 follow Σ sk²/(sqrt(alphak)+eps) and Σ|sk| by differences;
 *   skl1 = 0: stop; gsq_weighted += dlr²·g_sq; d̂ = (sksq_weighted - gsq_weighted)/skl1,
 *   d = max(d, min(d̂, d·growth_rate)) (lr > 0); z = x0 - sk/(sqrt(alphak)+eps), p = z (momentum 0)
 *   or p·(1-ck) + ck·z.
 * DAdaptAdan: dadaptation 3.2 dadapt_adan.py (betas (0.98, 0.92, 0.99), eps 1e-8, weight_decay 0.02,
 *   no_prox False, d0 1e-6, growth_rate inf; lr = group 0's): per parameter (pre_grad = g at step 0):
 *   δ = g - pre_grad, u = g + β2·δ; m = m·β1 + dlr(1-β1)·g; n = n·β2 + dlr(1-β2)·δ;
 *   v = v·β3 + (1-β3)·u²; den = sqrt(v) + eps; g_sq += Σ g²/den; s = s·β3 + dlr(1-β3)·g;
 *   sksq += Σ s²/den; sk_l1 += Σ|s|; gsq_weighted = β3·gsq_weighted + dlr²(1-β3)·g_sq; sk_l1 = 0: stop;
 *   d̂ = (sksq/(1-β3) - gsq_weighted)/sk_l1, d = max(d, min(d̂, d·growth_rate)) (lr > 0);
 *   p -= (m + β2·n)/den then p /= 1 + dlr·wd (no_prox: p *= 1 - dlr·wd first); pre_grad = g.
 * DAdaptAdanIP: dadaptation 3.2 experimental/dadapt_adan_ip.py, DAdaptAdan's state and update with
 *   num += dlr·⟨g, s/den⟩ before the moments move (den from the old v), numerator_weighted =
 *   β3·nw + (1-β3)·num, d̂ = 2(β3/(1-β3))·nw/sk_l1. The reference swaps two state names (its v lives
 *   under 'exp_avg_diff', its n under 'exp_avg_sq'), kept here; its num, nw and d̂ are f32 tensors
 *   (torch.dot without .item()), and so is d once d̂ wins, which this follows.
 * DAdaptLion: dadaptation 3.2 dadapt_lion.py (betas (0.9, 0.99), weight_decay 0, d0 1e-6; lr = max
 *   group LR, others must equal it or be 0): per parameter p *= 1 - dlr·wd;
 *   u = sign(m·β1 + (1-β1)·g); p -= dlr·u; m = m·β2 + (1-β2)·dlr·g; num += dlr·⟨u, s⟩;
 *   s = s·sqrt(β2) + (1-sqrt(β2))·dlr·u; sk_l1 += Σ|s|; sk_l1 = 0: stop (p has moved);
 *   nw = sqrt(β2)·nw + (1-sqrt(β2))·num; d̂ = nw/((1-sqrt(β2))·sk_l1), d = max(d, d̂) (lr > 0).
 *   Every group moves with that dlr, LR-0 groups included (the reference does).
 *
 * Other --optimizer_type names of the reference (torch.optim.X,
 * pkg.mod.Class) are recognised and refused with SD_EUNSUPPORTED "optimizer X is not implemented
 * yet (...)". Parameters must be f32 host memory (the step runs on the host).
 *
 * State: per parameter the kind's tensors under the reference's state names (exp_avg, exp_avg_sq,
 * momentum_buffer, exp_avg_sq_row/col, s, p0), its step and whether its state exists yet; per
 * optimizer the D-Adaptation/Prodigy scalars. sd_optim_param_bufs()/sd_optim_scalars() list them
 * for the resume state (train/state.h), which restores a run byte for byte.
 *
 * --optimizer_args: a list of "key=value"; the value is parsed like Python's ast.literal_eval for
 * the literals an optimizer takes (int/float, True/False/None, quoted strings, and tuples/lists of
 * numbers with or without brackets: "0.9,0.999" is the tuple (0.9, 0.999)). Each kind accepts its
 * constructor's keyword arguments (sd_optim_arg_names()); implementation switches that do not
 * change the numbers (foreach, fused, capturable, differentiable, use_triton, log_every) are
 * accepted; lr (and SGD's nesterov) are the reference's "got multiple values" error; a switch
 * that changes the arithmetic in a way not implemented (amsgrad, maximize, fsdp_in_use = True)
 * is SD_EUNSUPPORTED; any other key is the TypeError the constructor would raise, as a message.
 * The parsed values keep their Python str() so ss_optimizer is written as the reference writes it:
 * "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))", "prodigyopt.prodigy.Prodigy(...)". */
#ifndef SD_TRAIN_OPTIM_H
#define SD_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"
#include "tensor/optim_elem.h"
#include "train/optim8bit.h"

typedef enum sd_optim_kind {
    SD_OPTIM_ADAMW = 0,
    SD_OPTIM_LION,
    SD_OPTIM_SGD_NESTEROV,
    SD_OPTIM_ADAFACTOR,
    SD_OPTIM_PRODIGY,
    SD_OPTIM_DADAPT_ADAM,
    SD_OPTIM_DADAPT_ADAM_PREPRINT,   /* --optimizer_type DAdaptation / DAdaptAdamPreprint */
    SD_OPTIM_ADAMW8BIT,              /* bitsandbytes.optim.AdamW8bit (train/optim8bit.h) */
    SD_OPTIM_PAGED_ADAMW8BIT,        /* bitsandbytes PagedAdamW8bit: AdamW8bit's arithmetic */
    SD_OPTIM_PAGED_ADAMW,            /* bitsandbytes PagedAdamW (optim_bits 32): the 32-bit path on every tensor */
    SD_OPTIM_PAGED_ADAMW32BIT,       /* bitsandbytes PagedAdamW32bit: the same */
    SD_OPTIM_LION8BIT,               /* bitsandbytes Lion8bit (train/optim8bit.h, one state) */
    SD_OPTIM_PAGED_LION8BIT,         /* bitsandbytes PagedLion8bit: Lion8bit's arithmetic */
    SD_OPTIM_SGD_NESTEROV8BIT,       /* bitsandbytes SGD8bit (momentum; bnb ignores nesterov) */
    SD_OPTIM_ADAMW_SF,               /* schedulefree.AdamWScheduleFree */
    SD_OPTIM_RADAM_SF,               /* schedulefree.RAdamScheduleFree */
    SD_OPTIM_SGD_SF,                 /* schedulefree.SGDScheduleFree */
    SD_OPTIM_DADAPT_SGD,             /* dadaptation.DAdaptSGD */
    SD_OPTIM_DADAPT_ADAGRAD,         /* dadaptation.DAdaptAdaGrad */
    SD_OPTIM_DADAPT_ADAN,            /* dadaptation.DAdaptAdan */
    SD_OPTIM_DADAPT_ADAN_IP,         /* dadaptation.experimental.DAdaptAdanIP */
    SD_OPTIM_DADAPT_LION,            /* dadaptation.DAdaptLion */
    SD_OPTIM_NKINDS
} sd_optim_kind;

/* bitsandbytes' Adam kernels (8-bit blockwise and/or 32-bit states; "paged" only changes where a
 * GPU keeps the states, never the numbers). */
static inline int sd_optim_is_bnb(sd_optim_kind k)
{
    return k == SD_OPTIM_ADAMW8BIT || k == SD_OPTIM_PAGED_ADAMW8BIT || k == SD_OPTIM_PAGED_ADAMW ||
           k == SD_OPTIM_PAGED_ADAMW32BIT || k == SD_OPTIM_LION8BIT || k == SD_OPTIM_PAGED_LION8BIT ||
           k == SD_OPTIM_SGD_NESTEROV8BIT;
}
/* bitsandbytes' 1-state kinds (Optimizer1State: state1/absmax1 only). */
static inline int sd_optim_is_bnb1(sd_optim_kind k)
{
    return k == SD_OPTIM_LION8BIT || k == SD_OPTIM_PAGED_LION8BIT || k == SD_OPTIM_SGD_NESTEROV8BIT;
}

/* The ScheduleFree kinds: train()/eval() swap the parameters between y and x (sd_optim_sf_*). */
static inline int sd_optim_is_schedulefree(sd_optim_kind k)
{
    return k == SD_OPTIM_ADAMW_SF || k == SD_OPTIM_RADAM_SF || k == SD_OPTIM_SGD_SF;
}

/* The kind's name as --optimizer_type spells it ("AdamW", "Lion", "SGDNesterov", "Adafactor",
 * "Prodigy", "DAdaptAdam", "DAdaptAdamPreprint", "AdamW8bit"); the resume state records it. */
const char *sd_optim_kind_name(sd_optim_kind k);
/* The reference's module.Class ("torch.optim.adamw.AdamW", "prodigyopt.prodigy.Prodigy", ...). */
const char *sd_optim_class_name(sd_optim_kind k);
/* The keyword arguments the kind's constructor takes, comma-separated (for messages). */
const char *sd_optim_arg_names(sd_optim_kind k);

#define SD_OPTIM_MAX_ARGS 16

typedef struct sd_optim_config {
    sd_optim_kind kind;
    double lr;                       /* the constructor's lr: --learning_rate (NAN = None) */
    double beta1, beta2, eps, weight_decay;
    int has_beta1;                   /* Adafactor: beta1 is not None */
    double eps2;                     /* Adafactor: eps = (eps, eps2) */
    double clip_threshold, decay_rate;
    int scale_parameter, relative_step, warmup_init;
    double momentum, dampening;      /* SGD */
    int decoupled_weight_decay;      /* Lion */
    double beta3;                    /* Prodigy: NAN = None (sqrt(beta2)) */
    double d0, d_coef, growth_rate;  /* Prodigy, D-Adaptation */
    int decouple, use_bias_correction, safeguard_warmup;
    int no_prox;                     /* DAdaptAdan / DAdaptAdanIP (beta3 is their third beta) */
    int64_t slice_p;
    double warmup_steps, sf_r, weight_lr_power;   /* ScheduleFree */
    int silent_sgd_phase;                         /* RAdamScheduleFree */
    sd_adamw8bit_config b8;          /* AdamW8bit: bitsandbytes' constructor arguments */
    /* --optimizer_args as given: key and Python str() of the value, in order */
    int nargs;
    char arg_key[SD_OPTIM_MAX_ARGS][64];
    char arg_str[SD_OPTIM_MAX_ARGS][512];
} sd_optim_config;

/* Defaults for `kind`: its constructor's, with kohya's changes (SGDNesterov momentum 0.9,
 * Adafactor relative_step True); lr = the constructor's default (callers set --learning_rate). */
void sd_optim_config_default(sd_optim_config *c, sd_optim_kind kind);

/* Resolve the reference's optimizer choice: --optimizer_type (NULL/"" = AdamW; case-insensitive)
 * with the legacy switches --use_8bit_adam / --use_lion_optimizer (which conflict with each
 * other and with a non-empty type, as in the reference). SD_EUNSUPPORTED for the names not
 * implemented (known names and anything else alike), SD_EUSAGE for conflicting switches. */
int sd_optim_resolve(const char *optimizer_type, int use_8bit_adam, int use_lion, sd_optim_kind *kind);

/* Apply --optimizer_args items ("key=value") to c (whose kind is set). SD_EUSAGE with a message
 * naming the item for a malformed item, an unknown key or an invalid value, SD_EUNSUPPORTED for a
 * switch not implemented (amsgrad=True, maximize=True, fsdp_in_use=True). Adafactor: warmup_init
 * forces relative_step=True, as kohya does. */
int sd_optim_config_parse_args(sd_optim_config *c, const char *const *items, int n);

/* The constructor's checks that involve lr (c->lr): "Invalid learning rate" etc. SD_EUSAGE. */
int sd_optim_config_check(const sd_optim_config *c);

/* Adafactor with relative_step: the LR comes from the optimizer and the reference's scheduler is
 * "adafactor:<learning_rate>" (then --learning_rate, --unet_lr and --text_encoder_lr are None in
 * the metadata, and the optimizer's lr is None). */
static inline int sd_optim_adafactor_schedule(const sd_optim_config *c)
{
    return c->kind == SD_OPTIM_ADAFACTOR && c->relative_step;
}
/* Prodigy and the D-Adaptation family: a global d, logged as lr/d*lr/<group>. */
static inline int sd_optim_kind_has_d(sd_optim_kind k)
{
    return k == SD_OPTIM_PRODIGY || k == SD_OPTIM_DADAPT_ADAM || k == SD_OPTIM_DADAPT_ADAM_PREPRINT ||
           k == SD_OPTIM_DADAPT_SGD || k == SD_OPTIM_DADAPT_ADAGRAD || k == SD_OPTIM_DADAPT_ADAN ||
           k == SD_OPTIM_DADAPT_ADAN_IP || k == SD_OPTIM_DADAPT_LION;
}

/* The D-Adaptation kinds whose step() takes param_groups[0]['lr'] for every group and never checks
 * the others (DAdaptAdaGrad, DAdaptAdan, DAdaptAdanIP): different group LRs are not an error there
 * (kohya warns that only the first takes effect), and every group moves with the first one's d·lr. */
static inline int sd_optim_kind_first_lr(sd_optim_kind k)
{
    return k == SD_OPTIM_DADAPT_ADAGRAD || k == SD_OPTIM_DADAPT_ADAN || k == SD_OPTIM_DADAPT_ADAN_IP;
}

/* The reference's ss_optimizer value: module.Class + "(k=v,k=v)" when args were given (kohya's
 * own additions included: SGDNesterov "momentum=0.9", Adafactor "relative_step=True"). */
int sd_optim_describe(const sd_optim_config *c, char *out, size_t n);

/* kohya get_optimizer's warnings for this setup (e.g. "learning rate is too low. If using
 * D-Adaptation or Prodigy, set learning rate around 1.0: lr=0.0001"), '\n'-separated into buf
 * ("" when none): learning_rate is --learning_rate, groups the parameter groups (their initial
 * LRs), lr_scheduler and max_grad_norm the run's options. */
struct sd_optim_group_desc;
void sd_optim_reference_warnings(const sd_optim_config *c, double learning_rate,
                                 const struct sd_optim_group_desc *groups, int ngroups, const char *lr_scheduler,
                                 double max_grad_norm, char *buf, size_t n);

/* ---- the optimizer ------------------------------------------------------------------------- */

typedef struct sd_optim_group {
    char name[64];          /* for logs: "unet", "textencoder", "unet plus", "unet_block3" */
    double lr;              /* initial LR of the group (the scheduler multiplies it) */
    double weight_decay;
    size_t first, count;    /* parameters [first, first+count) of sd_optim.params */
    double used_lr;         /* Adafactor: α of the group's first parameter in the last step (NAN before) */
    double sf_weight_sum, sf_lr_max;   /* ScheduleFree: group['weight_sum'], group['lr_max'] */
} sd_optim_group;

#define SD_OPTIM_MAX_BUFS 5

typedef struct sd_optim_param {
    sd_param *p;
    int group;
    int64_t step;           /* the per-parameter state['step'] */
    int initialized;        /* its state exists (the reference creates it at its first gradient) */
    float *m, *v;           /* exp_avg, exp_avg_sq when the kind keeps them (else NULL) */
    float *buf[SD_OPTIM_MAX_BUFS];   /* the kind's state tensors, in sd_optim_param_bufs order */
} sd_optim_param;

/* Prodigy / D-Adaptation globals (the reference keeps equal copies in every param group). */
typedef struct sd_optim_dstate {
    double d, d_max, d_numerator, d_hat, numerator_weighted, gsq_weighted;
    double k;               /* steps taken (an integer; ScheduleFree: group['k'], equal in every group) */
    double sf_train;        /* ScheduleFree: 1 in train mode (y), 0 in eval mode (x) */
    double g0_norm;         /* DAdaptSGD: the first step's gradient norm */
    double sksq_weighted, skl1;   /* DAdaptAdaGrad */
    double d_tensor;        /* DAdaptAdanIP: 1 once d is a 0-dim f32 tensor (d̂ won), so d·lr is f32 arithmetic */
} sd_optim_dstate;

typedef struct sd_optim {
    sd_optim_config cfg;
    sd_optim_group *groups;
    int ngroups;
    sd_optim_param *params;
    size_t nparams;
    float *state;           /* one block holding every state tensor */
    size_t state_floats;
    int64_t numel;          /* elements under optimisation */
    sd_optim_dstate ds;
    float *scratch;         /* Adafactor: one update and the row means (no allocation in a step); on the
                               state's device */
    size_t scratch_floats;
    sd_adamw8bit_state *st8;   /* AdamW8bit: one bitsandbytes state per parameter (its block on the
                                  state's device) */
    sd_dtype half;          /* SD_F32, or SD_F16 / SD_BF16 after sd_optim_set_half() */
    sd_ctx *ctx;            /* NULL: host loops; else sd_optim_place()'s context (the ops of tensor/ops.h) */
    /* weights outside the optimizer whose gradients count in the clipping norm as they are and are
       scaled by its coefficient (SDXL --block_lr blocks at 0: torch's clip_grad_norm_ over the
       trained models' parameters); borrowed, on the parameters' device; none by default */
    sd_param *const *norm_extra;
    size_t nnorm_extra;
} sd_optim;

/* One group description for sd_optim_init: `params` are trainable, allocated, f32, host. */
typedef struct sd_optim_group_desc {
    const char *name;
    double lr;
    sd_param *const *params;
    size_t count;
} sd_optim_group_desc;

/* Build the optimizer over the groups (each parameter in at most one group; the group's weight
 * decay is cfg->weight_decay). State starts at zero, steps at 0. Prodigy and D-Adaptation refuse
 * groups with different non-zero LRs (the reference's RuntimeError at the first step), but for
 * DAdaptAdaGrad/Adan/AdanIP, which only read the first group's (sd_optim_kind_first_lr). */
int sd_optim_init(sd_optim *o, const sd_optim_config *cfg, const sd_optim_group_desc *groups,
                  int ngroups);
void sd_optim_free(sd_optim *o);
/* Total number of elements under optimisation. */
int64_t sd_optim_numel(const sd_optim *o);

/* One optimizer step with the current learning rate of every group (lr[g], usually the group's
 * initial LR times the scheduler factor; NULL = the initial LRs; ignored by Adafactor with
 * relative_step). `skip` (may be NULL): nonzero for parameters that got no gradient this step
 * (torch: grad is None); they are not touched and their step does not advance. May modify the
 * gradients (coupled weight decay of Prodigy/D-Adaptation adds wd·p to them, as the reference). */
int sd_optim_step(sd_optim *o, const double *lr, const uint8_t *skip);

/* --full_fp16 / --full_bf16 (the reference's network.to(weight_dtype), unet.to(...)): parameters,
 * gradients and the state tensors PyTorch would create in the parameter's dtype hold f16 / bf16
 * values (kept in the f32 buffers, so the numbers are those of half storage; the memory is not
 * halved). sd_optim_set_half rounds every parameter now (SD_F32: off, nothing changes). Then:
 *   sd_optim_round_grads   the gradients rounded (f16: ±inf past 65504, which the fp16 loss
 *                          scaler then finds), once per optimizer step, before unscaling
 *   unscaling (train/loss_scale.h) and clipping round their products, and the clipping's per-tensor
 *   norms, total norm and coefficient, as torch computes them in the gradients' dtype
 *   sd_optim_step: AdamW rounds after each tensor operation of the reference's AdamW on a GPU,
 *     torch 2.x's foreach path (mul_(1-lr·wd) when wd ≠ 0, lerp_(m, g, 1-β1), mul_(β2),
 *     addcmul_(g, g, 1-β2), sqrt, div_, add_(eps), addcdiv_: each computed in float with float
 *     scalars, a·b+c fused, and rounded), which differs from the f32 path's op sequence (that of
 *     torch 1.13's single-tensor AdamW, the same numbers up to f32 rounding);
 *     Adafactor (transformers: f32 states, a float copy of p) and bitsandbytes (kernels in float,
 *     f32/8-bit states) round only the parameter, as their references do (Lion8bit / SGD8bit also
 *     the other values their kernels store in the parameter's dtype: sd_bnb1_step's `half`);
 *     SGDNesterov8bit with SD_BF16 and a tensor below min_8bit_size is bnb's ValueError (SD_EUSAGE);
 *     Lion, SGDNesterov, Prodigy and D-Adaptation keep their states in the parameter's dtype in the
 *     reference and round after every operation; here the step runs in f32 and the parameter and
 *     each state tensor are rounded once at its end (the same numbers up to a half-precision ulp). */
int sd_optim_set_half(sd_optim *o, sd_dtype dt);
int sd_optim_round_grads(sd_optim *o);

/* Run the optimizer where its parameters live (AdamW, Lion, SGDNesterov, Adafactor and the
 * bitsandbytes kinds: sd_optim_kind_on_device; SD_EUNSUPPORTED for Prodigy, D-Adaptation and
 * ScheduleFree): ctx's device (CUDA: the state block, the bitsandbytes blocks and Adafactor's
 * scratch move to device memory; a CPU context keeps them on the host; NULL: back to
 * the host loops, the state on the host). From then on the step, the gradient rounding, norm,
 * clipping and the loss scaler's unscaling run through the ops of tensor/ops.h (sd_op_adamw /
 * sd_op_lion / sd_op_sgd / sd_op_adafactor_sq / sd_op_adafactor_apply / sd_op_bnb2_step /
 * sd_op_bnb1_step / sd_op_sumsq / sd_op_scale_round) on that device, with the host loops' arithmetic: the same bits, but for the
 * order of CUDA's sum of squares (double sums that may differ in their last bits: the clipping norm,
 * and Adafactor's RMS of the parameter and of its update, each rounded to f32, so almost always the
 * same f32 value, else one f32 ulp apart); parameters and gradients must be there when they run. The
 * state save (train/state.h) reads host memory: place the optimizer back on the host (NULL) first. */
int sd_optim_place(sd_optim *o, sd_ctx *ctx);
/* Nonzero for the kinds sd_optim_place can put on a device. */
int sd_optim_kind_on_device(sd_optim_kind k);
/* Bytes the placed optimizer holds on its device: the state block, the bitsandbytes blocks and
 * Adafactor's scratch. */
size_t sd_optim_device_bytes(const sd_optim *o);
static inline int sd_optim_on_device(const sd_optim *o)
{
    return o->ctx && o->ctx->backend != SD_DEV_CPU;
}

/* The LR the reference logs as lr/<group> after a step: Adafactor with relative_step logs the
 * optimizer's own (AdafactorSchedule); every other kind the scheduled `sched_lr`. */
double sd_optim_logged_lr(const sd_optim *o, int group, double sched_lr);

/* ---- state for resume ---------------------------------------------------------------------- */

typedef struct sd_optim_buf_info {
    const char *name;       /* the reference's state key: "exp_avg", "s", "exp_avg_sq_row", ... */
    float *data;
    int ndim;
    int64_t shape[SD_MAX_DIMS];
    size_t n;
} sd_optim_buf_info;

/* The state tensors of parameter i (fixed by the kind and the configuration); returns their count. */
int sd_optim_param_bufs(const sd_optim *o, size_t i, sd_optim_buf_info out[SD_OPTIM_MAX_BUFS]);

/* State that is not a set of f32 tensors (AdamW8bit's 8-bit codes and absmax blocks): add it to a
 * writer as "<prefix>.<name>" (data referenced until the write), or load it back (SD_EFORMAT for a
 * missing or mismatching array); both do nothing for the other kinds. */
int sd_optim_param_save_extra(sd_optim *o, size_t i, sd_safetensors_writer *w, const char *prefix);
int sd_optim_param_load_extra(sd_optim *o, size_t i, const sd_safetensors *f, const char *prefix);

/* The optimizer-wide scalars to save (Prodigy: d, d_max, d_numerator, k; DAdaptAdam: d,
 * numerator_weighted, k; DAdaptAdamPreprint: d, gsq_weighted, k); returns their count (≤ 6). */
int sd_optim_scalars(sd_optim *o, const char *names[6], double *vals[6]);

/* The per-step scalars of AdamW (sd_adamw_scalars, tensor/optim_elem.h), computed in double and
 * rounded once, as torch uses them. */
void sd_adamw_scalars_make(sd_adamw_scalars *s, double lr, double wd, double beta1, double beta2,
                           double eps, int64_t step);
/* The flat update over n elements (the kernel a CUDA version replaces). */
void sd_adamw_update_f32(float *p, const float *g, float *m, float *v, size_t n,
                         const sd_adamw_scalars *s);

/* ScheduleFree's optimizer.eval() / optimizer.train() (schedulefree 1.4): in every group, when the
 * mode changes, each parameter with state (z) becomes lerp(p, z, 1 - 1/β1) (eval: y -> x) or
 * lerp(p, z, 1 - β1) (train: x -> y) (SGDScheduleFree: momentum for β1); no-ops for other kinds
 * or when already in that mode. sd_optim_step refuses a ScheduleFree step in eval mode (the
 * reference's "Optimizer was not in train mode when step is called."). */
int sd_optim_sf_eval(sd_optim *o);
int sd_optim_sf_train(sd_optim *o);
/* After the state of a resumed run is loaded: ScheduleFree's per-group weight_sum and lr_max are
 * recomputed from k and the group LRs (the constant LRs of kohya's dummy scheduler), as the
 * reference's saved param_groups hold them. Nothing for the other kinds. */
void sd_optim_after_load(sd_optim *o);

/* ---- gradient norm, clipping and accumulation ---------------------------------------------- */

/* torch.nn.utils.clip_grad_norm_(params, max_norm): total = ‖(‖g_i‖₂)_i‖₂ over the trainable
 * parameters of the optimizer; coef = max_norm / (total + 1e-6), clamped to ≤ 1, and every
 * gradient is multiplied by coef (a coef of 1 changes nothing). max_norm ≤ 0 only measures.
 * *total_norm (may be NULL) gets the norm before clipping. A non-finite norm is not an error here
 * (torch's default); the caller checks it. */
int sd_optim_clip_grad_norm(sd_optim *o, double max_norm, double *total_norm);
/* The same clipping of one parameter's gradient alone (torch's clip_grad_norm_(tensor, max_norm), as
 * sdxl_train.py's fused hooks call it per tensor): f32 gradients (SD_EUNSUPPORTED with a half
 * optimizer); through ctx's ops (or the placed optimizer's) when given and not the host loops of a CPU
 * context, else host loops; *norm (may be NULL) gets its norm before clipping. */
int sd_optim_clip_param(sd_optim *o, sd_ctx *ctx, size_t i, double max_norm, double *norm);
/* The same norm without clipping (NAN, with a message, when a device op fails). */
double sd_optim_grad_norm(const sd_optim *o);

/* Gradient accumulation as accelerate does it (gradient_accumulation_steps = A): every micro
 * batch's loss is multiplied by 1/A before its backward; gradients sync (clip, optimizer step,
 * scheduler step, zero grad) after micro batch i (0-based within the epoch) when (i+1) % A == 0
 * or i is the epoch's last batch (accelerate's sync_with_dataloader). */
static inline double sd_accum_loss_scale(int accum) { return accum > 1 ? 1.0 / accum : 1.0; }
static inline int sd_accum_is_sync(int64_t i, int64_t batches_in_epoch, int accum)
{
    return accum <= 1 || (i + 1) % accum == 0 || i + 1 == batches_in_epoch;
}
/* Optimizer steps per epoch: ceil(batches / A) (§6.8). */
static inline int64_t sd_accum_steps_per_epoch(int64_t batches, int accum)
{
    return accum <= 1 ? batches : (batches + accum - 1) / accum;
}

/* Steps and epochs as the reference counts them (§6.8). batches = N_b, the batches of one epoch
 * over all datasets before sharding; P processes; A = gradient_accumulation_steps.
 *   max_train_epochs E > 0: max_train_steps = E × ceil(N_b / P / A) (float division, as Python)
 *   otherwise max_train_steps as given (≤ 0: the reference's silent default 1600)
 *   steps_per_epoch = ceil(ceil(N_b / P) / A)     (per-process batches after sharding)
 *   num_epochs      = ceil(max_train_steps / steps_per_epoch)
 *   sched_total     = max_train_steps × P         (the LR scheduler's num_training_steps)
 * Training stops when global_step ≥ max_train_steps or the epochs run out. */
typedef struct sd_steps_plan {
    int64_t max_train_steps, steps_per_epoch, num_epochs, sched_total, batches_per_process;
} sd_steps_plan;

int sd_steps_plan_make(int64_t batches, int num_processes, int accum, int64_t max_train_steps,
                       int64_t max_train_epochs, sd_steps_plan *out);

#endif
