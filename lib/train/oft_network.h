/* A kohya OFT network (networks/oft.py OFTNetwork) on the UNet: modules (nn/oft.h) on
 *   - attention only (default): every linear of a CrossAttention (attn1/attn2 to_q, to_k, to_v,
 *     to_out.0);
 *   - enable_all_linear: every linear and 1×1 conv of a Transformer2DModel (proj_in, the attention
 *     linears, ff.net.0.proj, ff.net.2, proj_out);
 *   - enable_conv (added to either): every conv and linear of ResnetBlock2D (conv1, time_emb_proj,
 *     conv2, conv_shortcut), Downsample2D and Upsample2D.
 * No text-encoder modules (the reference asserts apply_unet and creates none for the text encoder).
 * Names "oft_unet_" + module path with '.' → '_' (SD1/SD2: Diffusers paths, SDXL: the ldm paths of
 * kohya's sdxl_original_unet), as LoRA names are (train/lora_file.h).
 *
 * Files: "<name>.oft_blocks" [dim, out/dim, out/dim] and "<name>.alpha" (0-d; the reference's
 * alpha buffer: F32, I64 for an integer alpha without --save_precision, else the save dtype),
 * metadata as the caller gives it plus sshs_model_hash / sshs_legacy_hash (as LoRA files). */
#ifndef SD_TRAIN_OFT_NETWORK_H
#define SD_TRAIN_OFT_NETWORK_H

#include <stddef.h>

#include "io/safetensors.h"
#include "models/sd_model.h"
#include "models/unet.h"
#include "nn/oft.h"
#include "train/meta.h"

typedef struct sd_oft_network {
    sd_params *reg;           /* the caller's registry holding the oft_blocks (not owned) */
    size_t n;
    sd_oft *mods;
    char **names;
    sd_linear **host_lin;     /* the hooked layer (one of the two) */
    sd_conv2d **host_conv;
    int dim;
    double alpha;
    int alpha_int;            /* the alpha came from an integer (the caller sets it; see sd_oft_save_opts) */
    int all_linear, conv;
} sd_oft_network;

typedef struct sd_oft_network_opts {
    int dim;                  /* num_blocks */
    double alpha;             /* constraint = alpha · out_dim */
    int all_linear, conv;     /* network_args enable_all_linear / enable_conv */
    int sdxl;                 /* SDXL: ldm module paths */
    float multiplier;
} sd_oft_network_opts;

/* Register the modules' blocks in `reg` (unallocated; the caller allocates it with
 * sd_params_alloc), without attaching. Errors name the first module whose rows are not divisible by
 * dim. */
int sd_oft_network_build(sd_oft_network *net, sd_params *reg, sd_unet *u, const sd_oft_network_opts *o);
/* After the registry is allocated: zero the blocks (the reference's init) and hook the modules
 * into their layers. */
int sd_oft_network_attach(sd_oft_network *net, sd_ctx *ctx);
/* Detach from the layers and free (not the registry). */
void sd_oft_network_free(sd_oft_network *net);

/* An OFT file's network, as create_network_from_weights reads it: dim = oft_blocks.shape[0] (all
 * modules must agree), alpha = the .alpha value (all must agree), enable_conv when a module sits on
 * a ResBlock/Down/Upsample layer, enable_all_linear when a module name has "_ff_". */
typedef struct sd_oft_file_info {
    int dim;
    double alpha;
    int alpha_int;            /* the .alpha tensors have an integer dtype (the reference's .item() is an int) */
    int conv, all_linear;
    size_t n;                 /* modules */
} sd_oft_file_info;
/* 1 when the file has an ".oft_blocks" tensor. */
int sd_oft_file_is_oft(const sd_safetensors *st);
/* SD_EFORMAT naming the file and the key for anything but <name>.oft_blocks (3-d [k,n,n], float)
 * and <name>.alpha (scalar number), a module without blocks, or dims/alphas that differ. */
int sd_oft_file_scan(const sd_safetensors *st, sd_oft_file_info *info);
/* Load the blocks of the network's modules from the file. A module of the network missing from
 * the file keeps its zeros when allow_missing (else SD_EFORMAT listing it); a module of the file
 * not in the network is SD_EFORMAT; a block shape or alpha that differs from the network's is
 * SD_EFORMAT. *loaded (may be NULL) counts the loaded modules. The registry must be on the host. */
int sd_oft_file_load(const sd_safetensors *st, sd_oft_network *net, int allow_missing, size_t *loaded);

typedef struct sd_oft_save_opts {
    sd_st_dtype dtype;        /* the blocks (F32/F16/BF16), and a float alpha */
    int alpha_int;            /* alpha stored as I64 (integer alpha, no --save_precision) */
    const sd_kv *meta;
} sd_oft_save_opts;
/* Write the network (registry on the host) atomically. */
int sd_oft_file_save(const char *path, const sd_oft_network *net, const sd_oft_save_opts *o);

/* An OFT file merged into the UNet weights of `m` on the host (OFTInfModule.merge_to): for every
 * module W ← RW with Rw at multiplier `mul`, computed in f32 and stored in the weight's dtype. */
int sd_oft_merge_file(sd_ctx *ctx, sd_model *m, const char *path, double mul, size_t *n_modules);

#endif
