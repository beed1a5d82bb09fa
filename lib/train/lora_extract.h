/* A LoRA extracted from the difference of two checkpoints (kohya-ss networks/extract_lora_from_models.py,
 * spec §7.10).
 *
 * Modules: the layers a networks.lora network with network_dim = dim (and conv_dim when given)
 * would put modules on (train/lora_network.h sd_lora_network_candidates: the text encoder(s)'
 * attention/MLP linears, the UNet's Transformer2DModel linears and 1×1 convs, and with conv_dim
 * the ResnetBlock2D / Downsample2D / Upsample2D children too: their k×k convs at conv_dim, their
 * linears and 1×1 convs at dim), walked on both models; the kohya names are those sd-train gives.
 *
 * Per module, as the reference does it:
 *   diff = W_tuned - W_org (f32; with a load precision the weights and the difference are first
 *   rounded to f16/bf16, what the reference's models cast with .to(load_dtype) compute), as a
 *   matrix [out, in·kh·kw]; rank = min(dim (k×k convs: conv_dim), in, out); the float32 SVD
 *   diff = U·diag(S)·Vh (LAPACK sgesdd: torch.linalg.svd's CPU driver, same precision);
 *   up = U[:, :rank]·diag(S[:rank]), down = Vh[:rank, :]; hi = the clamp_quantile quantile (linear
 *   interpolation, torch.quantile's float32 rank and lerp) of the concatenation of up and down as
 *   signed values (not their magnitudes); both clamped to [-hi, hi]. Shapes: up [out, rank],
 *   down [rank, in] for linears, [out, rank, 1, 1] / [rank, in, kh, kw] for layers whose kohya
 *   module is a Conv2d (k×k convs, the 1×1 convs, SD1's conv proj_in/proj_out).
 *
 * Text encoder skip: when no text-encoder module's max |diff| exceeds min_diff, no text-encoder
 * module is extracted at all (the reference: "Text encoder is same. Extract U-Net only."). */
#ifndef SD_TRAIN_LORA_EXTRACT_H
#define SD_TRAIN_LORA_EXTRACT_H

#include <stddef.h>
#include <stdint.h>

#include "models/sd_model.h"

typedef struct sd_lora_extract_opts {
    int dim;                  /* --dim (≥ 1) */
    int conv_dim;             /* --conv_dim; 0 = no k×k conv modules (and no ResnetBlock2D targets) */
    double clamp_quantile;    /* in [0, 1] */
    double min_diff;          /* text-encoder threshold */
    int load_prec;            /* 0 = f32 (as loaded), 1 = fp16, 2 = bf16 */
} sd_lora_extract_opts;

typedef struct sd_lora_extracted {
    char name[256];           /* kohya name */
    int is_te;
    int rank;
    int ndim;                 /* 2 or 4 */
    int64_t up_shape[4], down_shape[4];
    float *up, *down;
    float max_diff;           /* max |diff| of the module */
} sd_lora_extracted;

typedef struct sd_lora_extraction {
    sd_lora_extracted *mods;
    size_t n, n_te;           /* n_te: text-encoder modules among mods (first) */
    int te_different;         /* some text-encoder module differs by more than min_diff */
    double te_max_diff;       /* the largest text-encoder |diff| */
    size_t te_candidates;     /* text-encoder layers compared */
} sd_lora_extraction;

/* Both models loaded on the host with the same configuration (UNet and text encoder(s)).
 * Errors: SD_EFORMAT when the models' layers differ in name or shape, a difference is not finite,
 * or LAPACK fails (naming the module); SD_ENOMEM. */
int sd_lora_extract(sd_model *org, sd_model *tuned, const sd_lora_extract_opts *o, sd_lora_extraction *out);
void sd_lora_extraction_free(sd_lora_extraction *x);

/* torch.quantile(v, q) (linear interpolation) of n finite values; sorts v in place. */
float sd_quantile_f32(float *v, size_t n, float q);

/* The factorisation of one matrix mat [m, n] (row-major, left unchanged): up [m, rank] = U·S,
 * down [rank, n] = Vh, clamped as above (rank ≤ min(m, n)). LAPACK gets the matrix in the
 * column-major layout torch.linalg.svd hands it, so the singular vectors' signs (which the clamp
 * depends on) are those torch gets from the same LAPACK. SD_EFORMAT when sgesdd fails. */
int sd_lora_svd_factor(float *mat, int64_t m, int64_t n, int rank, double clamp_quantile, float *up, float *down);

#endif
