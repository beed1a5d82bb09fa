/* DyLoRA (kohya-ss networks/dylora.py) on top of the LoRA network (train/lora_network.h).
 *
 * A DyLoRA module is a LoRA module whose `rank` rows are separate parameters in the reference
 * (ParameterLists lora_A.<i> [1, in] (3×3 conv hosts: [1, in, kh, kw]) and lora_B.<i> [out, 1]
 * ([out, 1, 1, 1])). Every forward trains only the rows tr .. tr+unit-1 (nn/lora_hook.h), so the
 * other rows have no gradient that step and torch's optimizers skip them: no update, no weight
 * decay, no state['step'] increment — each row has its own step count and state.
 *
 * Here the network keeps its contiguous lora_down / lora_up weights (what the hooks compute with,
 * what is saved, loaded, sampled and merged: the file is a plain LoRA file), and a second registry
 * holds one parameter per row under the reference's names ("<lora_name>.lora_A.3"), which the
 * optimizer, the gradient clipping and the resume state's optimizer part see. Around each
 * optimizer step the rows are filled from the contiguous weights and gradients
 * (sd_dylora_to_rows) and written back (sd_dylora_from_rows); sd_dylora_skip_mask gives the
 * optimizer the rows that got no gradient since the last step. All of it on the host. */
#ifndef SD_TRAIN_DYLORA_H
#define SD_TRAIN_DYLORA_H

#include <stddef.h>
#include <stdint.h>

#include "train/lora_net.h"
#include "train/lora_network.h"
#include "train/optim.h"

/* --network_args of networks.dylora on top of network_dim / network_alpha: unit (default 1; the
 * rank must be a multiple of it), conv_dim (must equal network_dim: 3×3 conv modules then get
 * network_dim and network_alpha), conv_alpha (the reference parses it but gives 3×3 modules
 * network_alpha: refused unless equal to it), loraplus_lr_ratio / loraplus_unet_lr_ratio /
 * loraplus_text_encoder_lr_ratio. networks.lora's block_dims, block_alphas, conv_block_dims,
 * conv_block_alphas, down/mid/up_lr_weight, block_lr_zero_threshold, rank_dropout,
 * module_dropout and dropout are SD_EUSAGE (dylora.py does not implement them). `a` is
 * filled for sd_lora_net_plan (conv_alpha = network_alpha); keys neither module knows are in
 * a->unknown. */
int sd_dylora_args_parse(sd_lora_net_args *a, int *unit, int network_dim, double network_alpha,
                         const char *const *items, int n);

typedef struct sd_dylora {
    sd_params rows;           /* per module: lora_A.0 .. lora_A.<r-1>, lora_B.0 .. lora_B.<r-1> (host) */
    size_t nmods;
    size_t *first;            /* rows index of module m's lora_A.0 */
    uint8_t *touched;         /* per module, per row (offset toff[m]): got a gradient since the last step */
    size_t *toff;
    uint32_t *row_mod, *row_j;   /* per rows parameter: its module and row */
    uint8_t *skip;            /* per optimizer parameter (sd_dylora_skip_mask) */
    size_t nskip;
} sd_dylora;

/* Make net's modules DyLoRA modules with `unit` and build the row registry (values from the
 * network's weights, which must be on the host). */
int sd_dylora_init(sd_dylora *d, sd_lora_network *net, int unit);
void sd_dylora_free(sd_dylora *d);

/* DyLoRANetwork.prepare_optimizer_params over the rows: text-encoder modules, then UNet modules,
 * each module's lora_A rows then its lora_B rows; with LoRA+ the lora_B rows form the " plus"
 * group at lr × ratio; groups with LR 0 are left out. */
int sd_dylora_param_groups(const sd_dylora *d, const sd_lora_net_args *a, const sd_lora_network *net,
                           double text_encoder_lr, double unet_lr, double default_lr, sd_lora_groups *g);

/* Rows ← the network's weights (and, grads = 1, its gradients). The network on the host. */
int sd_dylora_to_rows(sd_dylora *d, const sd_lora_network *net, int grads);
/* The network's weights ← rows. */
int sd_dylora_from_rows(const sd_dylora *d, sd_lora_network *net);
/* Per parameter of o (rows parameters only): 1 when its row got no gradient since
 * sd_dylora_clear_touched. Valid until the next call. */
const uint8_t *sd_dylora_skip_mask(sd_dylora *d, const sd_optim *o);
void sd_dylora_clear_touched(sd_dylora *d);

/* networks/extract_lora_from_dylora.py: from the DyLoRA (or any LoRA) file `src`, one file per
 * rank unit, 2·unit, … below the largest lora_down rank R: <save_to without its extension>-<rank
 * as %04d><extension>, where every tensor whose name contains "lora_down" keeps its first `rank`
 * rows, every "lora_up" its first `rank` columns (both whole when smaller), and every other tensor
 * (alpha …) is copied, all in their own dtype. Metadata: the source's with ss_training_comment
 * "split from DyLoRA, rank R to <rank>; <old comment>" and ss_network_dim "<rank>", and the
 * sshs_* hashes of that file. *nfiles (may be NULL) counts the files written; 0 when R <= unit. */
int sd_dylora_split(const char *src, const char *save_to, int unit, int *nfiles);

#endif
