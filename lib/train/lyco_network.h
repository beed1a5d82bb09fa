/* A LyCORIS weight-delta network (--network_module lycoris.kohya with algo=loha or lokr; nn/lyco.h modules;
 * LoHa's Tucker form on k×k convs with use_tucker) on the layers LyCORIS's preset (la->targets) targets (the same walk as algo=lora/locon: train/lora_network.h
 * sd_lora_network_candidates with .lycoris, ranks conv_dim / network_dim as there). The factors live
 * in the caller's registry (sd-train's R->net.reg, as OFT's), so the optimizer, the state folders and
 * the device moves of the LoRA path work unchanged.
 *
 * Files: LoHa "<name>.hada_w1_a" [out, r], ".hada_w1_b" [r, in·kh·kw], ".hada_w2_a", ".hada_w2_b"; LoKr
 * "<name>.lokr_w1" (or _w1_a, _w1_b) and ".lokr_w2" (or _w2_a, _w2_b) in nn/lyco.h's shapes; and
 * "<name>.alpha" (0-d, float: LyCORIS's buffer alpha·(r / r_factor)), in the save dtype; metadata as
 * given plus sshs_model_hash / sshs_legacy_hash. train/lycoris.h reads them back (sd-sample,
 * sd-model merge, --base_weights). */
#ifndef SD_TRAIN_LYCO_NETWORK_H
#define SD_TRAIN_LYCO_NETWORK_H

#include <stddef.h>

#include "io/safetensors.h"
#include "nn/lyco.h"
#include "train/lora_network.h"
#include "train/lycoris.h"
#include "train/meta.h"

typedef struct sd_lyco_network {
    sd_params *reg;           /* the caller's registry holding the factors (not owned) */
    size_t n, n_te;           /* modules; the first n_te are text-encoder modules */
    sd_lyco *mods;
    char **names;
    int *is_te;
    sd_linear **host_lin;     /* the hooked layer (one of the two) */
    sd_conv2d **host_conv;
} sd_lyco_network;

/* Register the modules' factors in `reg` (unallocated), one LoHa or LoKr (la->algo, with la's LoKr
 * options) per candidate of `o` (o->rs_lora:
 * alpha · sqrt(rank) stored), with module_dropout, the runtime `rt` and ids 0.. in order. */
int sd_lyco_network_build(sd_lyco_network *net, sd_params *reg, sd_unet *u, sd_clip *te,
                          const sd_lora_network_opts *o, const sd_lycoris_args *la, float module_dropout,
                          const sd_lora_rt *rt);
/* After the registry is allocated (host, f32): LyCORIS's initialisation from `seed`, and hook the
 * modules into their layers. */
int sd_lyco_network_attach(sd_lyco_network *net, uint64_t seed);
/* Detach from the layers and free (not the registry). */
void sd_lyco_network_free(sd_lyco_network *net);

/* --network_weights (LyCORIS's load_state_dict(strict=False)): every module of the network found in
 * the file takes its factors and its alpha; modules of the file the network lacks and network modules
 * the file lacks are left alone; a factor of another shape is SD_EFORMAT naming the file and key.
 * *loaded (may be NULL) counts the modules read. The registry on the host. */
int sd_lyco_file_load(const sd_safetensors *st, sd_lyco_network *net, size_t *loaded);

/* Write the network (registry on the host) atomically: factors and alphas in `dtype`. */
int sd_lyco_file_save(const char *path, const sd_lyco_network *net, sd_st_dtype dtype, const sd_kv *meta);

#endif
