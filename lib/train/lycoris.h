/* LyCORIS network files (--network_module lycoris.kohya, algo=locon|loha|lokr) merged into a
 * model's weights, module by module (spec §7.10). One place computes "file module → ΔW of its
 * layer"; sd-sample --network_weights, sd-model merge and sd-train --base_weights reach it through
 * train/lora_merge.h when a file holds any LyCORIS key.
 *
 * Maths (KohakuBlueleaf/LyCORIS @ f49d30d6, lycoris/modules/{loha,lokr,locon}.py forward and
 * lycoris/functional/{loha,lokr,general}.py; the same as ComfyUI comfy/weight_adapter and A1111's
 * extensions-builtin/Lora/network_{hada,lokr}.py), every ΔW flattened to [out, in·kh·kw]:
 *   LoRA / LoCon   lora_up [out,r] · lora_down [r, in·kh·kw] · scale, r = lora_down rows;
 *                  with lora_mid [r,r,kh,kw] (Tucker LoCon, down/up 1×1):
 *                  ΔW[o,i,k] = Σ up[o,p] mid[p,q,k] down[q,i]
 *   LoHa           (hada_w1_a [out,r] · hada_w1_b [r, in·kk]) ⊙ (hada_w2_a · hada_w2_b) · scale,
 *                  r = hada_w1_b rows; Tucker (hada_t1/hada_t2 [r,r,kh,kw], w?_a [r,out], w?_b [r,in]):
 *                  each factor is T[o,i,k] = Σ t[p,q,k] w_a[p,o] w_b[q,i]
 *   LoKr           kron(w1 [a,c], w2 [b, d·kk]) · scale, out = a·b, in = c·d; w1 = lokr_w1 or
 *                  lokr_w1_a·lokr_w1_b; w2 = lokr_w2, lokr_w2_a·lokr_w2_b, or Tucker from lokr_t2
 *                  [r,r,kh,kw], lokr_w2_a [r,b], lokr_w2_b [r,d] as above; the rank of the scale is
 *                  lokr_w2_b's rows when w2 is factored, else lokr_w1_b's rows, and with both w1
 *                  and w2 full matrices the scale is 1 (LyCORIS "use_w1 and use_w2")
 *   scale = alpha / rank; no .alpha or alpha 0: 1 (LyCORIS/kohya: alpha = rank).
 * .scalar is ignored (LyCORIS folds it into the saved weights and resets it to 1 on load);
 * .dora_scale (DoRA, weight_decompose) is refused (SD_EUNSUPPORTED); any other key is SD_EFORMAT
 * naming the file and the key. */
#ifndef SD_TRAIN_LYCORIS_H
#define SD_TRAIN_LYCORIS_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "models/sd_model.h"
#include "train/lora_net.h"

/* 1 when the file holds a LyCORIS key (hada_*, lokr_*, lora_mid, dora_scale, scalar). */
int sd_lycoris_file_is(const sd_safetensors *st);

/* The distinct module names of a LoRA/LyCORIS file (sorted; *names malloc'd, each malloc'd),
 * every key checked against the suffixes above. */
int sd_lycoris_modules(const sd_safetensors *st, char ***names, size_t *n);
void sd_lycoris_names_free(char **names, size_t n);

/* ΔW of module `name` for a layer of [out, in, kh, kw] (kh = kw = 1 for a linear), alpha/rank
 * scale included: dw receives out·in·kh·kw floats. Shape errors name the file and module. */
int sd_lycoris_delta(const sd_safetensors *st, const char *name, int64_t out, int64_t in, int kh, int kw,
                     float *dw);

/* Merge every module of the open file `st` into the model: W += mul · weight(user, name) · ΔW
 * (weight NULL: 1; name is the SGM one for SDXL). SD1/SD2 module names: lora_unet_<Diffusers>,
 * lora_te_<HF>; SDXL: lora_unet_<SGM or Diffusers>, lora_te1_/lora_te2_ (the layers kohya's LoRA
 * walks: transformer, resnet and sampler layers, text-encoder attention/MLP linears). A module
 * naming no such layer is SD_EFORMAT. Weights on the host, f32/f16/bf16 (merged in f32). */
int sd_lycoris_merge(sd_ctx *ctx, sd_model *m, sd_safetensors *st, double mul,
                     double (*weight)(void *user, const char *name), void *user, size_t *n_te, size_t *n_unet);

/* ---- training (--network_module lycoris.kohya, lycoris/kohya.py create_network) ---------------------
 *
 * algo=lora / locon (LoConModule, Tucker with use_tucker): modules on the layers of LyCORIS's preset "full" (the
 * other presets: train/lora_network.h SD_LYCO_T_*) —
 * text encoder(s): CLIPAttention / CLIPMLP linears; UNet: every linear and conv of Transformer2DModel,
 * ResnetBlock2D, Downsample2D and Upsample2D, and on SD1/SD2 also conv_in, conv_out and
 * time_embedding.linear_1/_2 — linears and 1×1 convs at network_dim / network_alpha, k×k convs at
 * conv_dim / conv_alpha (defaults network_dim / network_alpha; conv_dim 0: none). */
typedef struct sd_lycoris_args {
    char algo[16];            /* lower-cased; "lora" when absent or empty; lora, locon, loha or lokr */
    int use_tucker, bypass_mode, rs_lora;
    int factor, decompose_both, full_matrix, unbalanced;   /* algo=lokr (factor -1: balanced) */
    double network_alpha, conv_alpha;   /* as given (0: alpha = rank) */
    double dropout, rank_dropout;       /* as given (0: off) */
    int dropout_given;                  /* dropout was in network_args (else --network_dropout is passed as it) */
    unsigned targets;                   /* the preset's train/lora_network.h SD_LYCO_T_* bits */
} sd_lycoris_args;

/* After sd_lycoris_args_parse: train_network.py's net_kwargs["dropout"] = --network_dropout unless
 * network_args has one; then the combinations LyCORIS applies and this implements (dropout: only
 * bypass_mode with algo lora/locon; rank_dropout: not LoKr in bypass_mode, where LyCORIS ignores it)
 * or SD_EUSAGE naming the key. */
int sd_lycoris_args_dropout(sd_lycoris_args *la, double network_dropout);

/* Parse --network_args as create_network reads its kwargs (raw strings): algo, conv_dim, conv_alpha,
 * module_dropout, preset (full, full-lin, attn-mlp, attn-only, unet-only, unet-transformer-only,
 * unet-convblock-only), bypass_mode, rs_lora, loraplus_lr_ratio,
 * loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio; dropout and rank_dropout in [0, 1]
 * (see sd_lycoris_args_dropout);
 * use_tucker (and its deprecated names) only off or without conv modules; use_scalar, train_norm,
 * dora_wd, rescaled, full_matrix, unbalanced_factorization, decompose_both, train_t5xxl only off.
 * Anything else is SD_EUSAGE naming the key. `a` is filled for sd_lora_net_plan (conv_dim set). */
int sd_lycoris_args_parse(sd_lycoris_args *la, sd_lora_net_args *a, int is_sdxl, int network_dim, double network_alpha,
                          const char *const *items, int n);

#endif
