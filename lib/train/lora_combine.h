/* LoRA files combined into one LoRA file (kohya-ss networks/merge_lora.py and sdxl_merge_lora.py
 * without --sd_model, networks/svd_merge_lora.py).
 *
 * Inputs: kohya LoRA/LoCon files (train/lora_file.h sd_lora_file_scan checks each: <m>.lora_down,
 * <m>.lora_up, optional <m>.alpha; keys of other network types are refused). Modules are matched
 * by name; a module present in only some files is merged from those. Every file's weights are
 * first rounded to the merge precision, as the reference's load_state_dict(model, merge_dtype)
 * does; each arithmetic step is rounded to it again (torch's f16/bf16 ops compute in f32 and round).
 *
 * SUM (merge_lora.py merge_lora_models): per module, base_alpha = the alpha of the first file
 * holding it (its rank when it has none); file i contributes scale_i = sqrt(alpha_i/base_alpha)·r_i
 * to lora_down and |scale_i| to lora_up:  down = Σ scale_i·down_i, up = Σ |scale_i|·up_i. Every
 * file must have the module at the same rank and shapes (the reference asserts it). The merged
 * ΔW = base_alpha/rank · up·down is therefore NOT Σ r_i·ΔW_i unless one file holds the module.
 * CONCAT (--concat): the scaled factors are concatenated along the rank axis (down rows, up
 * columns), so rank = Σ rank_i, alpha = base_alpha and ΔW = Σ r_i·|r_i|·alpha_i/Σrank · up_i·down_i.
 * SHUFFLE: after either, the rank axis of each module is permuted (down rows, up columns alike: ΔW
 * unchanged); the permutation comes from a Philox stream (seed, module index in name order,
 * SD_RNG_USER), not from torch.randperm.
 * SVD (svd_merge_lora.py): ΔW = Σ_i r_i · up_i·down_i · alpha_i/rank_i (alpha_i/rank_i rounded to
 * the merge precision; 1 without alpha) as a matrix [out, in·kh·kw], then the float32 SVD and
 * quantile-0.99 clamp of train/lora_extract.h sd_lora_svd_factor at rank min(new_rank (k×k convs:
 * new_conv_rank), in, out); alpha = that rank, stored as an int64 scalar as the reference does. The
 * reference's torch SVD refuses f16/bf16 matrices; here ΔW is accumulated in the merge precision
 * and factored in float32.
 *
 * Output (atomic): weights in save_dtype; SUM/CONCAT alpha in save_dtype (int64 for an SDXL
 * module whose first file had no alpha, as sdxl_merge_lora.py leaves the int tensor). Metadata in
 * the reference's order: ss_network_module = networks.lora, ss_network_dim / ss_network_alpha (SUM,
 * CONCAT: the first files' ranks / alphas when all modules agree, else "Dynamic" — with CONCAT
 * still the first file's rank, as the reference writes; SVD: new_rank and new_rank), ss_v2 and
 * ss_base_model_version from the first file having each, ss_network_args (SVD: {"conv_dim": N,
 * "conv_alpha": N}); sshs_model_hash / sshs_legacy_hash of the file's tensors in their saved dtype
 * (merge_lora.py hashes the merge-dtype tensors, sdxl/svd_merge_lora.py the saved ones); then, unless
 * no_metadata, the modelspec.* keys (title = the output's file name without extension,
 * merged_from = each input's modelspec.title or file name without extension, joined by ", ").
 *
 * Families: a file with lora_te1_/lora_te2_ or SGM UNet names (lora_unet_input_blocks_,
 * _middle_block_, _output_blocks_) is SDXL; one with lora_te_ is SD1/SD2; mixing the two is an
 * error. Modules whose shapes differ between files are an error naming both files. */
#ifndef SD_TRAIN_LORA_COMBINE_H
#define SD_TRAIN_LORA_COMBINE_H

#include <stddef.h>
#include <stdint.h>

#include "train/lora_lbw.h"

enum { SD_LORA_COMBINE_SUM = 0, SD_LORA_COMBINE_CONCAT, SD_LORA_COMBINE_SVD };

typedef struct sd_lora_combine_opts {
    int mode;                 /* SD_LORA_COMBINE_* */
    int precision;            /* merge dtype: 0 float, 1 fp16, 2 bf16 */
    int save_precision;       /* same codes; < 0: precision */
    int shuffle;              /* SUM/CONCAT: permute the rank axis */
    uint64_t seed;            /* the permutation's seed */
    int new_rank, new_conv_rank;   /* SVD (≥ 1) */
    int no_metadata;          /* no modelspec.* keys */
    double timestamp;         /* modelspec.date */
    const char *implementation_version;
    const sd_lora_lbws *lbws;  /* --lbws (NULL or n = 0: none; else one list per file): file i's module m
                                  gets weight w = sd_lora_lbw_weight(lbws, i, m, is_sdxl). SVD: ratio·(up·down)
                                  ·(alpha/rank·w), the names read as SDXL ones for 12/20-value lists
                                  (svd_merge_lora.py); SUM/CONCAT (sdxl_merge_lora.py, SDXL files only):
                                  down scaled by scale_i·w, up by |scale_i|·w, SDXL names */
} sd_lora_combine_opts;

typedef struct sd_lora_combine_result {
    size_t n_modules, n_te;   /* modules written, text-encoder ones among them */
    int sdxl;                 /* the files are SDXL LoRAs */
    int v2_warning;           /* modelspec written as v-prediction (ss_v2 "True"), as the reference warns */
    int max_rank;             /* the largest rank written */
} sd_lora_combine_result;

/* Combine n files (ratios[i] for paths[i]) into `out`. Errors name the file: SD_ENOTFOUND/SD_EIO
 * (open), SD_EFORMAT (not a LoRA file, no modules, rank or shape mismatch, mixed families, alpha
 * making sqrt(alpha/base_alpha) undefined, LAPACK failure), SD_EUNSUPPORTED (other network types),
 * SD_ENOMEM; SD_EUSAGE: --lbws with SUM/CONCAT of SD1/SD2 files (merge_lora.py has no --lbws), or a
 * list count other than n. */
int sd_lora_combine(const char *const *paths, const double *ratios, int n, const char *out,
                    const sd_lora_combine_opts *o, sd_lora_combine_result *res);

#endif
