/* LoRA network files in kohya-ss/sd-scripts format (spec §7.2, §7.8, §6.12).
 *
 * Names. A module's name is prefix + "." + module path, every '.' replaced by '_'
 * (networks/lora.py create_modules): prefix "lora_unet" for the UNet, "lora_te" for the SD1/SD2
 * text encoder ("lora_te1"/"lora_te2" for SDXL's two). For SD1/SD2 the UNet module path is the
 * DIFFUSERS one (kohya trains its own UNet2DConditionModel), so our ldm-named layers are named
 * through the ldm → Diffusers map of the UNet (models/unet.h: sd_unet_layer.diffusers, built from
 * kohya's model_util unet_conversion_map generalised to the config), e.g.
 *   input_blocks.1.1.transformer_blocks.0.attn1.to_q → down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q
 *   → lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q
 * Text-encoder paths are the Hugging Face CLIP names (text_model.encoder.layers.N.self_attn.q_proj).
 *
 * Tensors per module: <name>.lora_down.weight [r,in] or [r,in,kh,kw]; <name>.lora_up.weight
 * [out,r] or [out,r,1,1]; <name>.alpha, a 0-d scalar. Saved in --save_precision (float/fp16/bf16;
 * none = as trained, f32). alpha: in the save precision when one is given; otherwise F32, or I64
 * when the alpha came from an integer (the reference's argparse default 1, TOML integers, alpha =
 * rank) — the caller says which.
 *
 * Metadata (safetensors __metadata__, in the caller's order), then as networks/lora.py
 * save_weights does: sshs_model_hash = SHA-256 of the data section (the bytes after the 8-byte
 * length and the JSON header) and sshs_legacy_hash = first 8 hex digits of SHA-256 of bytes
 * [0x100000, 0x110000) — both of an in-memory serialisation of the same tensors carrying only the
 * ss_* keys of the metadata (train_util.precalculate_safetensors_hashes). (With no ss_* key at
 * all the reference serialises an empty "__metadata__":{} object that our writer omits; only the
 * legacy hash of such a file could differ.)
 *
 * Loading (--network_weights, §7.8): every module of the network must be in the file with the same
 * rank, shapes and alpha, and every LoRA module of the file must exist in the network; otherwise
 * SD_EFORMAT with a one-line message listing (the first few) missing/unexpected names, or a rank
 * or alpha mismatch ("f.safetensors: lora_unet_x: rank 8 in the file, 4 in the network; use
 * --dim_from_weights to take the file's ranks"). sd_lora_file_scan reads the modules of a file for
 * --dim_from_weights (rank from lora_down.weight.shape[0], alpha from .alpha, rank if absent).
 * Keys of other network types (LyCORIS hada_*, lokr_*, lora_mid, dora_scale, diffusers/PEFT
 * lora_A/lora_B) are refused by name. */
#ifndef SD_TRAIN_LORA_FILE_H
#define SD_TRAIN_LORA_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "nn/lora_hook.h"
#include "train/meta.h"

/* prefix + "." + path with '.' → '_'. SD_ERANGE if it does not fit. */
int sd_lora_kohya_name(const char *prefix, const char *path, char *out, size_t n);

/* One module of a network: its kohya name and its weights (down/up f32 host parameters). */
typedef struct sd_lora_ref {
    const char *name;
    const sd_lora *lora;
} sd_lora_ref;

typedef struct sd_lora_save_opts {
    sd_st_dtype dtype;        /* SD_ST_F32, SD_ST_F16 or SD_ST_BF16: the weights, and a float alpha */
    int precision_given;      /* --save_precision given: alpha is stored in dtype even when an integer */
    int alpha_int;            /* no --save_precision and the alpha came from an integer: I64 (the reference's
                                 int buffer, which Module.to(dtype) leaves alone) */
    const sd_kv *meta;        /* the metadata to write (ss_*, modelspec.*); NULL = none */
    int no_hashes;            /* 1: do not add sshs_* (a .ckpt/.pt-like use; default adds them) */
} sd_lora_save_opts;

/* Write `path` atomically. *hashes_out (may be NULL) receives the two sshs values
 * ("<64 hex>", "<8 hex>"). */
int sd_lora_file_save(const char *path, const sd_lora_ref *mods, size_t n, const sd_lora_save_opts *o,
                      char model_hash[65], char legacy_hash[9]);

/* The sshs_* hashes of a would-be file (tensors + only the ss_* keys of meta). */
int sd_lora_file_hashes(const sd_lora_ref *mods, size_t n, const sd_lora_save_opts *o,
                        char model_hash[65], char legacy_hash[9]);
/* The same over an existing file's tensors and metadata, as the reference would compute them when
 * saving that state dict and metadata again (used by tests and tools). */
int sd_lora_file_hashes_of(const sd_safetensors *st, char model_hash[65], char legacy_hash[9]);
/* Add sshs_model_hash / sshs_legacy_hash to a writer holding a finished LoRA file (tensors and
 * metadata): the hashes of the file it would write now (`name` for error messages). */
int sd_lora_writer_add_hashes(sd_safetensors_writer *w, const char *name);

/* A module found in a file. */
typedef struct sd_lora_file_module {
    char *name;
    int rank;
    int64_t in, out;
    int kh, kw;
    int conv4d;             /* 4-d weights */
    float alpha;
    int has_alpha;
    int tucker;             /* has <name>.lora_mid.weight (only read by sd_lora_file_load for Tucker networks) */
} sd_lora_file_module;

typedef struct sd_lora_file_info {
    sd_lora_file_module *mods;
    size_t n;
} sd_lora_file_info;

/* Scan an open file: modules sorted by name; consistency checks (down and up present, up's rank
 * axis equals down's, scalar alpha of any numeric dtype, floating weights). */
int sd_lora_file_scan(const sd_safetensors *st, sd_lora_file_info *info);
void sd_lora_file_info_free(sd_lora_file_info *info);

enum {
    SD_LORA_LOAD_ALLOW_MISSING = 1u << 0,     /* network modules absent from the file keep their init */
    SD_LORA_LOAD_ALLOW_UNEXPECTED = 1u << 1,  /* file modules the network lacks are ignored */
    SD_LORA_LOAD_IGNORE_ALPHA = 1u << 2,      /* keep the network's alpha on a mismatch */
};

/* Load the weights of `mods` from `st` (checks above). *loaded (may be NULL) counts modules. */
int sd_lora_file_load(const sd_safetensors *st, const sd_lora_ref *mods, size_t n, unsigned flags,
                      size_t *loaded);

#endif
