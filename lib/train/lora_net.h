/* The kohya LoRA network's rules that do not need the models (networks/lora.py, spec §7.1,
 * §7.4–§7.8): --network_args, which layers get a module and with which rank/alpha (including
 * block dims and the blocks zeroed by block LR weights), block indices, optimizer parameter groups
 * (unet_lr / text_encoder_lr, block LR weights, LoRA+), and max-norm regularisation.
 *
 * The trainer walks the model's layers (UNet: sd_unet_layer with its Diffusers path and role;
 * text encoder: the q/k/v/out_proj and fc1/fc2 linears of every layer), names each candidate with
 * sd_lora_kohya_name() and asks sd_lora_net_plan() whether to create a module there. */
#ifndef SD_TRAIN_LORA_NET_H
#define SD_TRAIN_LORA_NET_H

#include <stddef.h>

#include "tensor/ops.h"
#include "train/lora_file.h"
#include "train/optim.h"

#define SD_LORA_MAX_BLOCKS 25     /* SD1/SD2: 12 down + 1 mid + 12 up; SDXL 23 */
#define SD_LORA_MAX_UNKNOWN 16

typedef struct sd_lora_net_args {
    int is_sdxl;
    int nblocks;                        /* 25 or 23 */
    int network_dim;                    /* --network_dim (default 4) */
    double network_alpha;               /* --network_alpha (default 1) */
    int conv_dim;                       /* 0: no 3×3 modules */
    double conv_alpha;                  /* 1.0 when conv_dim is given without it */
    int use_blocks;                     /* block_dims or a block LR weight was given */
    int block_dims[SD_LORA_MAX_BLOCKS];
    double block_alphas[SD_LORA_MAX_BLOCKS];
    int has_conv_blocks;                /* conv_block_dims given, or conv_dim with use_blocks */
    int conv_block_dims[SD_LORA_MAX_BLOCKS];
    double conv_block_alphas[SD_LORA_MAX_BLOCKS];
    int has_lr_weight;
    double lr_weight[SD_LORA_MAX_BLOCKS];
    double rank_dropout, module_dropout;     /* 0: off */
    double loraplus_lr_ratio, loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio;   /* 0: unset */
    /* keys the reference's networks.lora ignores (it takes **kwargs): the tool may warn */
    int nunknown;
    char unknown[SD_LORA_MAX_UNKNOWN][64];
} sd_lora_net_args;

/* Parse --network_args ("key=value"; values are the raw strings as in the reference) on top of
 * network_dim / network_alpha (≤ 0 / NAN: the reference's defaults 4 / 1.0). Errors are SD_EUSAGE
 * naming the key: a list of the wrong length ("block_dims must have 25 elements but 24 elements are
 * given"), a non-number, an unknown lr-weight preset (the reference logs an error and silently uses
 * 1.0 everywhere; we refuse it). Lists for down/up_lr_weight: 12 (SDXL 9) numbers, empty entries
 * 0, short lists padded with 1.0, long ones truncated; presets cosine, sine, linear,
 * reverse_linear, zeros with an optional "+offset". mid_lr_weight: 1 (SDXL 3) numbers. Values
 * ≤ block_lr_zero_threshold become 0, and blocks whose multiplier is 0 get no modules. */
int sd_lora_net_args_parse(sd_lora_net_args *a, int is_sdxl, int network_dim, double network_alpha,
                           const char *const *items, int n);

/* The reference's block index of a UNet module name (§7.5), -1 if none: SD1/SD2
 * (down|up)_blocks_<i>_(resnets|attentions|…samplers)_<j>_ → 1 + 3i + j (samplers 3i + 2), up
 * + 13, mid_block_ → 12; SDXL input_blocks_<n> → 1 + n, middle_block_<n> → 10 + n,
 * output_blocks_<n> → 13 + n, time_embed_/label_emb_ → 0, out_ → 22. */
int sd_lora_block_index(const char *lora_name, int is_sdxl);

typedef enum sd_lora_target {
    SD_LORA_TARGET_TE = 0,         /* text-encoder attention / MLP linears */
    SD_LORA_TARGET_TRANSFORMER,    /* UNet Transformer2DModel children (always targeted) */
    SD_LORA_TARGET_RESBLOCK,       /* UNet ResnetBlock2D / Downsample2D / Upsample2D children */
} sd_lora_target;

/* Does `lora_name` get a module, and with which rank and alpha? Returns 1 (create), 0 (skip).
 * kernel3 = the layer is a k×k conv with k > 1 (else a linear or 1×1 conv). RESBLOCK-role layers
 * are targets only when conv_dim or conv_block_dims is given (or from_file). from_file (may be
 * NULL): the --dim_from_weights / network-from-weights mode: exactly the modules named in the
 * file, with its ranks and alphas. */
int sd_lora_net_plan(const sd_lora_net_args *a, const char *lora_name, sd_lora_target target, int kernel3,
                     const sd_lora_file_info *from_file, int *dim, double *alpha);

/* ---- optimizer parameter groups (§7.6) ------------------------------------------------------------ */

typedef struct sd_lora_groups {
    int n;
    sd_optim_group_desc *desc;       /* n entries; names point into `names` */
    char (*names)[64];               /* "textencoder", "textencoder plus", "unet", "unet_block3 plus" */
    sd_param **params;               /* storage the descs point into */
    int te_named_apart;              /* text-encoder modules are in a group not named "textencoder*"
                                        (LoRA-FA's names) */
} sd_lora_groups;

/* Build the groups as LoRANetwork.prepare_optimizer_params does: text-encoder modules first
 * (is_te[i] != 0) at text_encoder_lr (NAN: default_lr), then UNet modules at unet_lr (NAN:
 * default_lr) — one group per block (in order of first appearance) times its LR weight when block
 * LR weights are in use. With LoRA+ (loraplus_*_ratio) each splits into the lora_down group and a
 * " plus" group of the lora_up weights at lr × ratio. Groups with LR 0 are omitted (their modules
 * are not trained). */
int sd_lora_param_groups(const sd_lora_net_args *a, const sd_lora_ref *mods, const int *is_te, size_t n,
                         double text_encoder_lr, double unet_lr, double default_lr, sd_lora_groups *g);
void sd_lora_groups_free(sd_lora_groups *g);

/* The groups of LoRA-FA (networks/lora_fa.py prepare_optimizer_params): the lora_up weights only
 * (lora_down is frozen); the text-encoder group at text_encoder_lr (NAN: default_lr) and the UNet
 * group at unet_lr (NAN: default_lr) are kept even at LR 0, block groups (block LR weights, SD1/SD2
 * block indices) are dropped at LR 0; no LoRA+. It returns no LR descriptions, so train_network.py
 * names the logged rates itself: group i is "unet" when there are at most two groups, else
 * "group<i+1>" ("group<i>" with --network_train_unet_only). */
int sd_lora_param_groups_fa(const sd_lora_net_args *a, const sd_lora_ref *mods, const int *is_te, size_t n,
                            double text_encoder_lr, double unet_lr, double default_lr, int unet_only,
                            sd_lora_groups *g);

/* --network_args that networks/lora_fa.py lacks, refused (SD_EUSAGE naming the key) rather
 * than ignored as its **kwargs would: loraplus_lr_ratio / loraplus_unet_lr_ratio /
 * loraplus_text_encoder_lr_ratio (no LoRA+), on SDXL block_dims / block_alphas / conv_block_dims /
 * conv_block_alphas / down_lr_weight / mid_lr_weight / up_lr_weight (its block indices know the
 * SD1/SD2 names only), and a mid_lr_weight list (it takes one number). */
int sd_lora_fa_check_args(int is_sdxl, const char *const *items, int n);

/* ---- max-norm regularisation (§7.7, --scale_weight_norms) ---------------------------------------- */

/* For every module: ΔW = up·down·(alpha/rank) (k×k convs: ΔW[o,i,:,:] = Σ_r up[o,r]·down[r,i,:,:]),
 * n = max(‖ΔW‖_F, M/2), ratio = min(n, M)/n; when ratio ≠ 1 both up and down are multiplied by
 * sqrt(ratio) in place. Reports the number of scaled modules and the mean and max of the norms
 * after scaling (‖ΔW‖·ratio), as the reference logs them. Host f32 weights. */
int sd_lora_max_norm(sd_ctx *ctx, const sd_lora_ref *mods, size_t n, double max_norm, int *keys_scaled,
                     double *mean_norm, double *max_key_norm);

#endif
