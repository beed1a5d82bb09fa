/* A kohya LoRA network attached to the models (reference-behaviour.md §7.1–§7.3, §7.8): walks the
 * UNet's layers (SD1/SD2: Diffusers names, SDXL: ldm names → lora_unet_*) and the text encoder's
 * attention/MLP linears (→ lora_te_*; SDXL: lora_te1_* for CLIP-L, lora_te2_* for bigG), asks train/lora_net.h's rules which get a module with which rank/alpha, creates
 * the sd_lora modules in a registry of their own (keys "<lora_name>.lora_down.weight" /
 * ".lora_up.weight", f32, trainable), initialises them as kohya does (or loads --network_weights)
 * and hooks them into the layers. */
#ifndef SD_TRAIN_LORA_NETWORK_H
#define SD_TRAIN_LORA_NETWORK_H

#include <stddef.h>
#include <stdint.h>

#include "models/clip.h"
#include "models/unet.h"
#include "nn/lora_hook.h"
#include "train/lora_file.h"
#include "train/lora_net.h"

typedef struct sd_lora_network {
    sd_params reg;
    size_t n;
    sd_lora *mods;            /* n modules */
    char **names;             /* kohya names */
    int *is_te;
    sd_lora_ref *refs;        /* {names[i], &mods[i]} */
    sd_linear **host_lin;     /* the hooked layer (one of the two) */
    sd_conv2d **host_conv;
    sd_lora_rt rt;
    size_t n_te, n_unet;
} sd_lora_network;

/* LyCORIS preset targets (lycoris/config.py PRESET, as LycorisNetworkKohya.apply_preset reads them), in the
 * terms of kohya's models: text-encoder CLIPAttention (self_attn.*) and CLIPMLP (mlp.*) linears; the UNet's
 * Transformer2DModel children, or only its CrossAttention ones (attn1/attn2: to_q/k/v/out.0); ResnetBlock2D
 * children; Downsample2D/Upsample2D convs; the unet_target_name layers conv_in/conv_out and
 * time_embedding.linear_1/_2 (SD1/SD2 only: SDXL's ldm names match none); enable_conv (k×k convs at all). */
enum {
    SD_LYCO_T_TE_ATTN = 1u << 0, SD_LYCO_T_TE_MLP = 1u << 1, SD_LYCO_T_TRANSFORMER = 1u << 2, SD_LYCO_T_UNET_ATTN = 1u << 3,
    SD_LYCO_T_RESNET = 1u << 4, SD_LYCO_T_SAMPLER = 1u << 5, SD_LYCO_T_CONV_IO = 1u << 6, SD_LYCO_T_TIME_EMB = 1u << 7,
    SD_LYCO_T_CONV = 1u << 8,
};
#define SD_LYCO_T_FULL                                                                                                  \
    (SD_LYCO_T_TE_ATTN | SD_LYCO_T_TE_MLP | SD_LYCO_T_TRANSFORMER | SD_LYCO_T_RESNET | SD_LYCO_T_SAMPLER |               \
     SD_LYCO_T_CONV_IO | SD_LYCO_T_TIME_EMB | SD_LYCO_T_CONV)

typedef struct sd_lora_network_opts {
    const sd_lora_net_args *args;
    int with_unet, with_te;             /* create UNet / text-encoder modules */
    double network_dropout;             /* neuron dropout (0 = none) */
    const sd_lora_file_info *from_file; /* --dim_from_weights: exactly the file's modules */
    uint64_t seed;                      /* initialisation and dropout streams */
    int sdxl;                           /* SDXL: UNet names from the ldm keys, lora_te1_* / lora_te2_* */
    sd_clip *te2;                       /* SDXL: the second text encoder (NULL otherwise) */
    int lycoris;                        /* lycoris.kohya (preset full): SD1/SD2 also conv_in, conv_out and
                                           time_embedding.linear_1/_2 (LyCORIS's unet_target_name) */
    unsigned lyco_targets;              /* lycoris.kohya preset: SD_LYCO_T_* bits (0: preset "full") */
    int tucker;                         /* lycoris.kohya use_tucker: k×k conv modules get lora_mid (Tucker LoCon) */
    int lyco_drop;                      /* nn/lora_hook.h SD_LORA_DROP_*: whose dropout semantics */
    int rs_lora;                        /* lycoris.kohya rs_lora: alpha (0: rank) stored · sqrt(rank), so
                                           the scale is alpha / sqrt(rank) */
    int fa;                             /* LoRA-FA (networks.lora_fa): lora_down normal-initialised
                                           and frozen (no gradient, no optimizer state) */
} sd_lora_network_opts;

/* SDXL UNet module names: kohya names SDXL UNet modules by the SGM/ldm layer names
 * ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"), Diffusers-based trainers by the
 * Diffusers ones ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"). Map one
 * module name of u's layers from one naming to the other (to_sgm = 1: Diffusers → SGM, 0: SGM →
 * Diffusers). Returns 1 with the other name in out, 0 when `name` is none of u's layers in the
 * source naming, SD_ERANGE (< 0) when out is too small. */
int sd_lora_sdxl_unet_name(const sd_unet *u, const char *name, int to_sgm, char *out, size_t n);

/* In an open SDXL LoRA file's handle (not the file), rename every tensor of a Diffusers-named UNet
 * module to its SGM name, as the reference does when it builds an SDXL network from a file
 * (spec §7.2), so that the rest reads kohya's names only. A file naming one layer both ways is
 * SD_EFORMAT naming both modules. *n_modules (may be NULL) counts the renamed modules. */
int sd_lora_file_sdxl_to_sgm(sd_safetensors *st, const sd_unet *u, size_t *n_modules);

/* One layer the network puts a module on, with its kohya name and the rank/alpha the rules give. */
typedef struct sd_lora_candidate {
    char name[256];
    int is_te;
    sd_linear *lin;           /* the host layer: one of the two */
    sd_conv2d *conv;
    int64_t in, out;
    int kh, kw, conv1x1, conv_host;
    int dim;
    double alpha;
} sd_lora_candidate;

/* The layers sd_lora_network_build() would put modules on, in the reference's order (text
 * encoder(s), then UNet), without creating any (sd-model extract walks them on two models).
 * *v is malloc'd (NULL when *n = 0); *n_te counts the text-encoder ones, which come first. */
int sd_lora_network_candidates(sd_unet *u, sd_clip *te, const sd_lora_network_opts *o, sd_lora_candidate **v,
                               size_t *n, size_t *n_te);

/* Build, allocate, initialise and attach. te may be NULL. */
int sd_lora_network_build(sd_lora_network *net, sd_ctx *ctx, sd_unet *u, sd_clip *te,
                          const sd_lora_network_opts *o);
/* LoRA-FA: draw every module's lora_down again from `seed` (its initialisation; lora_up kept). */
int sd_lora_network_reinit_fa_down(sd_lora_network *net, sd_ctx *ctx, uint64_t seed);
/* Detach from the layers and free. */
void sd_lora_network_free(sd_lora_network *net);

#endif
