/* The SD VAE (ldm AutoencoderKL, "first_stage_model."): encoder → quant_conv → moments, the
 * diagonal Gaussian (mean / sample), post_quant_conv → decoder. Inference only (no backward).
 *
 * Structure (ldm/modules/diffusionmodules/model.py, config-driven by sd_vae_config):
 *   encoder: conv_in (3 → ch); level l = 0..n-1: down.l.block.0..nrb-1 (ResnetBlock to ch·mult[l],
 *            down.l.attn.j after block j when the level's resolution is in attn_resolutions),
 *            down.l.downsample (l < n-1: zero pad right/bottom by 1, conv 3×3 stride 2);
 *            mid.block_1, mid.attn_1, mid.block_2; norm_out + SiLU; conv_out (→ 2·z_channels)
 *   quant_conv (1×1, 2·z → 2·embed_dim)          moments [B, 2·embed_dim, H/f, W/f], f = 2^(n-1)
 *   post_quant_conv (1×1, embed_dim → z)
 *   decoder: conv_in (z → ch·mult[n-1]); mid; levels l = n-1..0: up.l.block.0..nrb (nrb+1 blocks to
 *            ch·mult[l], + up.l.attn.j), up.l.upsample (l > 0: nearest 2×, conv 3×3);
 *            norm_out + SiLU; conv_out (→ out_ch)
 *   ResnetBlock: norm1 (GroupNorm 32, eps 1e-6) + SiLU, conv1 3×3, norm2 + SiLU, conv2 3×3,
 *            nin_shortcut (1×1) when the channel count changes.
 *   AttnBlock: norm, q/k/v/proj_out as 1×1 convs ([C,C,1,1]), one head over the H·W positions,
 *            scale C^-1/2, x + proj_out(attention).
 * Registry keys: prefix + these ldm names (prefix "first_stage_model" = the single-file keys).
 *
 * The scale factor (0.18215 for SD1/2) is applied by the callers: cfg.scale_factor.
 *
 * Memory: activations are taken from ctx->scratch (two ping-pong buffers of the largest activation
 * plus a block's temporaries; see sd_vae_scratch_bytes()). For large images the tiled variants
 * bound it by the tile size. */
#ifndef SD_MODELS_VAE_H
#define SD_MODELS_VAE_H

#include <stdint.h>

#include "io/safetensors.h"
#include "models/detect.h"
#include "models/model_config.h"
#include "nn/nn.h"

typedef struct sd_vae_resblock {
    sd_groupnorm norm1, norm2;
    sd_conv2d conv1, conv2, nin;
    int64_t cin, cout;
    int has_nin;
} sd_vae_resblock;

typedef struct sd_vae_attn {
    sd_groupnorm norm;
    sd_linear q, k, v, proj_out;   /* 1×1 conv weights, run as linears over [B, H·W, C] */
    int64_t c;
} sd_vae_attn;

typedef struct sd_vae_level {
    sd_vae_resblock *block;
    sd_vae_attn *attn;
    int nblock, nattn;             /* nattn is 0 or nblock */
    int has_resample;
    sd_conv2d down;                /* encoder: stride 2, pad (0,1,0,1) */
    sd_upsample up;                /* decoder */
} sd_vae_level;

typedef struct sd_vae_mid {
    sd_vae_resblock block_1, block_2;
    sd_vae_attn attn_1;
} sd_vae_mid;

typedef struct sd_vae {
    sd_vae_config cfg;
    char *prefix;
    int n;                         /* levels */
    int64_t factor;                /* 2^(n-1) */
    /* encoder */
    sd_conv2d enc_conv_in, enc_conv_out, quant_conv;
    sd_vae_level *enc;
    sd_vae_mid enc_mid;
    sd_groupnorm enc_norm_out;
    /* decoder */
    sd_conv2d post_quant_conv, dec_conv_in, dec_conv_out;
    sd_vae_level *dec;             /* dec[l] = ldm up.l */
    sd_vae_mid dec_mid;
    sd_groupnorm dec_norm_out;
} sd_vae;

/* Register encoder, decoder, quant_conv and post_quant_conv under `prefix`. cfg must have
 * double_z (as ldm's AutoencoderKL), channel counts multiple of 32. */
int sd_vae_init(sd_vae *v, sd_params *r, const char *prefix, const sd_vae_config *cfg);
void sd_vae_free(sd_vae *v);



/* Fill the VAE's registry values from `st` (registry allocated). layout (models/detect.h):
 * SD_LAYOUT_LDM = first_stage_model.* (full checkpoint), SD_LAYOUT_LDM_BARE = encoder.down.*
 * (VAE-only ldm file such as vae-ft-mse-840000), SD_LAYOUT_DIFFUSERS = encoder.down_blocks.*
 * (vae/diffusion_pytorch_model.safetensors), SD_LAYOUT_NONE = decide from the names. Diffusers files are mapped with
 * kohya's conversion table (model_util.py: down_blocks.i.resnets.j ↔ down.i.block.j,
 * up_blocks.i ↔ up.(n-1-i), mid_block.resnets.k ↔ mid.block_(k+1), mid_block.attentions.0 ↔
 * mid.attn_1 with group_norm/to_q/to_k/to_v/to_out.0 or query/key/value/proj_attn ↔ norm/q/k/v/
 * proj_out, conv_shortcut ↔ nin_shortcut, conv_norm_out ↔ norm_out; [C,C] attention weights are
 * accepted for [C,C,1,1]). Strict: missing or unexpected VAE tensors and wrong shapes are errors
 * naming the tensor. For --vae files use SD_LAYOUT_NONE. */
int sd_vae_load(sd_vae *v, sd_params *r, const sd_safetensors *st, sd_layout layout);

/* The Diffusers AutoencoderKL name of registry key `key` (the VAE's prefix + ldm name, e.g.
 * "first_stage_model.decoder.up.3.block.0.nin_shortcut.weight" →
 * "decoder.up_blocks.0.resnets.0.conv_shortcut.weight"; attention: group_norm/to_q/to_k/to_v/
 * to_out.0, the names diffusers ≥ 0.14 writes). SD_ENOTFOUND for a key outside the VAE. */
int sd_vae_name_to_diffusers(const sd_vae *v, const char *key, char *out, size_t n);

/* moments [B, 2·embed_dim, H/f, W/f] = quant_conv(encoder(x [B, in_channels, H, W])) (x in [-1,1]).
 * H and W must be multiples of f. */
int sd_vae_encode(sd_ctx *ctx, sd_vae *v, sd_tensor *moments, const sd_tensor *x);
/* y [B, out_ch, h·f, w·f] = decoder(post_quant_conv(z [B, embed_dim, h, w])) (unscaled latents). */
int sd_vae_decode(sd_ctx *ctx, sd_vae *v, sd_tensor *y, const sd_tensor *z);

/* z [B, embed_dim, h, w] from moments: noise NULL → the mean; else mean + exp(0.5·clamp(logvar,
 * -30, 20)) · noise (noise [B, embed_dim, h, w], standard normal). Runs on the host (small). */
int sd_vae_latent(sd_ctx *ctx, sd_tensor *z, const sd_tensor *moments, const sd_tensor *noise);
/* Standard normal noise for sample `sample` of a batch from the Philox stream (seed, step,
 * sample, SD_RNG_LATENT), n values into host memory. */
int sd_vae_noise(float *out, size_t n, uint64_t seed, uint32_t step, uint32_t sample);

/* Bytes of ctx->scratch an (untiled) encode / decode of this size needs at most, excluding the
 * ops' own scratch (conv lowering). */
size_t sd_vae_scratch_bytes(const sd_vae *v, int64_t B, int64_t H, int64_t W, int decode);

/* ---- tiling ----------------------------------------------------------------------------------
 * Memory-bounded variants: the input is cut into tiles of `tile` × `tile` (input units: latent
 * pixels for decode, image pixels for encode; encode needs multiples of f) overlapping by
 * `overlap`; every tile runs through the whole network on its own, and the outputs are blended
 * with linear ramps across each overlap (weights normalised per pixel). Tiles are laid out at
 * stride tile - overlap, the last one of a row/column moved back to end at the border (all tiles
 * full size). Seams: inside a tile GroupNorm uses the tile's statistics and the mid-block
 * attention sees only the tile, and convolutions see zero padding at tile borders, so a tiled
 * result differs from the untiled one (mostly a low-frequency tone shift per tile, hidden by the
 * ramps; the test bounds it). A tile covering the whole input gives the untiled result exactly.
 * Input and output are staged through host memory; device memory is bounded by one tile. */
int sd_vae_encode_tiled(sd_ctx *ctx, sd_vae *v, sd_tensor *moments, const sd_tensor *x, int tile, int overlap);
int sd_vae_decode_tiled(sd_ctx *ctx, sd_vae *v, sd_tensor *y, const sd_tensor *z, int tile, int overlap);

#endif
