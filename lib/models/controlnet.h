/* ControlNet for SD1.x / SD2.x (diffusers' ControlNetModel.from_unet as kohya-ss/sd-scripts'
 * train_control_net.py builds it; lllyasviel's cldm.ControlNet), with explicit forward and backward.
 *
 * Structure and checkpoint names (the reference's saved file: model_util.convert_controlnet_state_
 * dict_to_sd, bare ldm names; Diffusers names in brackets):
 *   time_embed.*, input_blocks.*, middle_block.*   a copy of the UNet's conv_in, time embedding,
 *                                    input blocks and middle block (same config, same names;
 *                                    [time_embedding.*, conv_in.*, down_blocks.*, mid_block.*])
 *   input_hint_block.{0,2,...,14}    the conditioning embedding: conv 3x3 3 → 16, then pairs of 3x3
 *                                    convs (c → c, c → c' stride 2) for (16, 32, 96, 256), SiLU after
 *                                    every conv but the last, conv 3x3 256 → model_channels (zero
 *                                    initialised) [controlnet_cond_embedding.conv_in, .blocks.0..5,
 *                                    .conv_out]. The control image is RGB in [0, 1] at 8x the latent
 *                                    size; its embedding is added to conv_in's output.
 *   zero_convs.i.0                   1x1 conv per input block output i (zero initialised)
 *                                    [controlnet_down_blocks.i]
 *   middle_block_out.0               1x1 conv on the middle block's output (zero initialised)
 *                                    [controlnet_mid_block]
 * Outputs (conditioning_scale 1.0, no guess mode): res[0..n_in-1] = zero_convs(input block outputs),
 * res[n_in] = middle_block_out(middle output); the UNet adds them to its skip connections and its
 * middle block output (sd_unet_set_control). */
#ifndef SD_MODELS_CONTROLNET_H
#define SD_MODELS_CONTROLNET_H

#include "models/unet.h"

#define SD_CONTROLNET_HINT_CONVS 8

typedef struct sd_controlnet {
    sd_unet enc;                          /* sd_unet_init_encoder, prefix "" */
    sd_params *params;
    sd_conv2d hint[SD_CONTROLNET_HINT_CONVS];
    sd_conv2d *zero;                      /* n_in */
    sd_conv2d mid_out;
    int n_res;                            /* n_in + 1 outputs */
    sd_unet_control ctl;
    char **map_ldm, **map_diff;           /* ldm ↔ Diffusers prefixes (the encoder's and the ControlNet's own) */
    size_t nmap;
    /* last training forward */
    sd_tensor hy[SD_CONTROLNET_HINT_CONVS], ha[SD_CONTROLNET_HINT_CONVS - 1];
    sd_tensor *res;                       /* n_res outputs (in the activation arena) */
    sd_tensor *dout;                      /* backward: gradients of the encoder's block outputs */
    int trained;
} sd_controlnet;

/* Register the ControlNet of UNet config `cfg` (SD1/SD2 shape: no label_emb) in `r` under bare
 * ldm names. */
int sd_controlnet_init(sd_controlnet *cn, sd_params *r, const sd_unet_config *cfg);
void sd_controlnet_free(sd_controlnet *cn);

/* ControlNetModel.from_unet's weights (registry allocated on the CPU): the encoder half copied
 * from `unet` (any storage dtype), the conditioning embedding's convs but the last PyTorch's
 * default (weights and biases U(±1/sqrt(fan_in)), drawn from the Philox stream (seed, 0, k,
 * SD_RNG_INIT) for hint conv k: the same distribution, not PyTorch's numbers), conv_out, the zero
 * convs and middle_block_out zero. */
int sd_controlnet_init_from_unet(sd_ctx *ctx, sd_controlnet *cn, const sd_unet *unet, uint64_t seed);

/* Load every parameter from a ControlNet file: ldm names (the reference's saved files; also with
 * A1111's "control_model." prefix) or Diffusers names (controlnet_cond_embedding.*, down_blocks.*,
 * ...), detected from the names. Strict: missing, unexpected or misshapen tensors are SD_EFORMAT. */
int sd_controlnet_load(sd_controlnet *cn, const sd_safetensors *st);

/* Write every parameter under its ldm name (the reference's convert_controlnet_state_dict_to_sd;
 * its save_file writes no metadata) as `dtype` (F32, F16 or BF16), atomically. Values of any
 * storage dtype on any device. */
int sd_controlnet_save(const sd_controlnet *cn, const char *path, sd_st_dtype dtype);

/* ldm name ("zero_convs.3.0.weight") → Diffusers name ("controlnet_down_blocks.3.weight"). */
int sd_controlnet_name_to_diffusers(const sd_controlnet *cn, const char *ldm, char *out, size_t n);

/* Training plan for x [N,4,H,W] (latent), context [N,S,C], cond [N,3,8H,8W]. */
sd_nn_plan sd_controlnet_plan(const sd_controlnet *cn, int64_t n, int64_t h, int64_t w, int64_t s);

/* Bytes of the n_res outputs (each 64-byte aligned) for latents [N,4,H,W]. */
size_t sd_controlnet_res_bytes(const sd_controlnet *cn, int64_t n, int64_t h, int64_t w);

/* Training forward: cn->res[0..n_res) = ControlNet(x, t, context, cond) (in `save`, which must not
 * be NULL; inputs alive until the backward). */
int sd_controlnet_forward(sd_ctx *ctx, sd_controlnet *cn, sd_arena *save, const sd_tensor *x, const sd_tensor *t,
                          const sd_tensor *context, const sd_tensor *cond);
/* Parameter gradients += the gradient of dres[0..n_res) (the outputs' gradients). */
int sd_controlnet_backward(sd_ctx *ctx, sd_controlnet *cn, const sd_tensor *dres);

#endif
