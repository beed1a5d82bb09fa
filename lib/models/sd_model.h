/* A whole SD1.x / SD2.x / SDXL model (UNet, text encoder(s), VAE) from the files users have, for
 * every tool that loads one (sd-model, sd-encode-latents, sd-train, sd-sample).
 *
 * Sources (spec §9.1, §9.4):
 *   - a single-file checkpoint: .safetensors (memory-mapped), or a legacy torch `.ckpt`/`.pt`/`.bin`
 *     (a zip holding a pickle; io/ckpt.h's safe reader: nothing in it is executed). The format is
 *     decided from the first bytes, not the extension. A ckpt is converted once into a temporary
 *     safetensors image (an unlinked file under $TMPDIR, mapped), so every loader sees one API;
 *     its top-level scalars (global_step, epoch) become metadata entries.
 *   - a Diffusers folder: unet/, text_encoder/, (SDXL) text_encoder_2/, vae/ with
 *     diffusion_pytorch_model[.fp16].safetensors
 *     / model[.fp16].safetensors (or the .bin variants, read with the ckpt reader); a missing
 *     component folder means the component is absent.
 *   - `vae` (--vae): a VAE replacement: a full checkpoint (its first_stage_model.* is used), an ldm
 *     VAE-only file, a Diffusers VAE file (.safetensors or .bin) or a Diffusers VAE folder.
 *
 * Model family and configuration: models/detect.h recognises real SD1.x / SD2.x / SDXL files (no
 * --v2 needed) and refuses the SDXL refiner, SD3, FLUX, ... naming the family. `config` (--model_config) describes
 * any other shape (tiny test models, custom widths); with `v2` set and no "family" key in the file
 * the config starts from the SD2.x preset. When the weights show the family and `v2` contradicts
 * them, the weights win (sd_model.warning says so).
 *
 * Life cycle (two steps so that trainers can choose what trains and the frozen storage dtype
 * between them):
 *   sd_model m;
 *   sd_model_open(&m, path, &opts);      files opened, family/config decided, parameters
 *                                         registered (no tensor memory yet)
 *   sd_params_set_trainable(&m.unet_params, "", 0); ...       optional
 *   sd_model_load(&m, SD_DEV_CPU);        values allocated and filled (strict: missing/unexpected
 *                                         keys and wrong shapes are errors naming the tensor)
 *   ... sd_unet_forward(ctx, &m.unet, ...) ...
 *   sd_model_close(&m);
 * The source files stay open (mapped) until sd_model_close() or sd_model_release_source().
 *
 * Registry keys (what sd_param.key holds): UNet "model.diffusion_model." + ldm names, VAE
 * "first_stage_model." + ldm names, text encoder "cond_stage_model.transformer." + the Hugging Face
 * CLIPTextModel names (the SD1 single-file names; for SD2 sd_model_te_file_name() gives the
 * OpenCLIP single-file name); SDXL: TE1 "conditioner.embedders.0.transformer." + HF names (the
 * single-file names), TE2 "conditioner.embedders.1.model." + HF CLIPTextModelWithProjection names
 * (sd_model_te_file_name() gives the OpenCLIP single-file name).
 *
 * Errors are one line naming the file: "m.safetensors: tensor 'x': expected shape [..], got [..]",
 * "m.safetensors: SDXL model: not supported (supported: SD1.x, SD2.x)", "m.ckpt: refusing to load:
 * pickle references builtins.exec (only tensor data is allowed)". */
#ifndef SD_MODELS_SD_MODEL_H
#define SD_MODELS_SD_MODEL_H

#include <stdint.h>

#include "base/opts.h"
#include "io/safetensors.h"
#include "models/clip.h"
#include "models/detect.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "models/vae.h"
#include "nn/params.h"

/* Components */
enum {
    SD_MODEL_UNET = 1u << 0,
    SD_MODEL_TE = 1u << 1,
    SD_MODEL_VAE = 1u << 2,
    SD_MODEL_ALL = 7u,
};

typedef enum sd_model_format {
    SD_MODEL_FMT_SAFETENSORS = 0,
    SD_MODEL_FMT_CKPT = 1,         /* torch zip pickle (.ckpt/.pt/.pth/.bin) */
    SD_MODEL_FMT_DIFFUSERS = 2,    /* folder */
} sd_model_format;

const char *sd_model_format_name(sd_model_format f);   /* "safetensors", "ckpt", "diffusers" */

/* One opened weight file: a safetensors handle over the file's mapping, or over the temporary
 * conversion of a ckpt (whose messages still name the ckpt). */
typedef struct sd_model_file {
    char *path;
    sd_model_format format;        /* SAFETENSORS or CKPT */
    sd_safetensors *st;
    void *map;                     /* the ckpt conversion's mapping (NULL for safetensors) */
    size_t map_len;
    size_t ckpt_skipped;           /* ckpt: tensors outside the state_dict wrapper (optimizer, ...) */
    /* set by sd_model_open() */
    sd_detect_info info;           /* detection over this file alone (layouts guessed when only a
                                      --model_config can place it) */
    unsigned role;                 /* the component(s) this file provides to the model (SD_MODEL_*) */
} sd_model_file;

/* Open one weight file, deciding the format from its first bytes. */
int sd_model_file_open(const char *path, sd_model_file *f);
void sd_model_file_close(sd_model_file *f);

/* The model options every tool that loads a model shares (base/opts.h table entries, group
 * "Model"): --model (alias --pretrained_model_name_or_path) STRING, --vae STRING,
 * --model_config STRING, --v2 FLAG, --v_parameterization FLAG. The destinations are a
 * const char * and int lvalues of the tool's option struct. */
#define SD_MODEL_OPT_ENTRIES(model_, vae_, config_, v2_, vparam_)                                         \
    {.name = "model", .short_name = 'm', .alias = "pretrained_model_name_or_path", .type = SD_OPT_STRING,   \
     .dest = (model_), .metavar = "MODEL", .group = "Model",                                               \
     .help = "checkpoint: .safetensors, legacy .ckpt, or a Diffusers folder"},                             \
    {.name = "vae", .type = SD_OPT_STRING, .dest = (vae_), .metavar = "FILE", .group = "Model",            \
     .help = "replacement VAE: full checkpoint, ldm VAE-only file, Diffusers VAE file or folder"},         \
    {.name = "model_config", .type = SD_OPT_STRING, .dest = (config_), .metavar = "FILE", .group = "Model", \
     .help = "JSON/TOML model description (ldm yaml parameter names) for shapes other than SD1.x/SD2.x"},  \
    {.name = "v2", .type = SD_OPT_FLAG, .dest = (v2_), .def = "false", .group = "Model",                   \
     .help = "SD2.x model (only needed where the weights cannot tell: a VAE alone, a --model_config "       \
             "without family)"},                                                                           \
    {.name = "v_parameterization", .type = SD_OPT_FLAG, .dest = (vparam_), .def = "false", .group = "Model", \
     .help = "v-prediction model (SD2.x 768-v); not stored in the weights"}

typedef struct sd_model_opts {
    unsigned parts;                /* SD_MODEL_* to build (0 = SD_MODEL_ALL) */
    const char *vae;               /* --vae FILE|DIR, or NULL */
    const char *config;            /* --model_config FILE, or NULL */
    int v2;                        /* --v2 */
    int v_param;                   /* --v_parameterization: 1 = v, 0 = eps, -1 = from the config */
    int inspect;                   /* only open, detect and configure: no component is required or
                                      built (sd-model info) */
} sd_model_opts;

typedef struct sd_model {
    char *path;                    /* the model as given */
    sd_model_format format;
    sd_model_config cfg;           /* the configuration in use */
    sd_detect_info info;           /* detection over the model's file(s) (merged for Diffusers) */
    int detected;                  /* 1: the family came from the weights */
    const char *family_from;       /* "weights", "model_config", "--v2" or "default" (a VAE alone) */
    unsigned present;              /* SD_MODEL_* found in the source (VAE: also from --vae) */
    unsigned parts;                /* SD_MODEL_* built */
    /* where each component comes from (borrowed from files[]) and its layout there */
    const sd_model_file *unet_src, *te_src, *vae_src;
    const sd_model_file *te2_src;  /* SDXL TE2 (the model file, or Diffusers text_encoder_2/) */
    sd_layout unet_layout, te_layout, vae_layout, te2_layout;
    sd_model_file files[5];        /* model file / Diffusers unet, text_encoder, text_encoder_2, vae;
                                      --vae file */
    int nfiles;
    char warning[256];             /* a note for the tool to print ("" = none) */
    /* the networks */
    sd_params unet_params, te_params, vae_params;
    sd_unet unet;
    sd_clip clip;                  /* SD1/SD2 text encoder; SDXL TE1 (CLIP ViT-L) */
    sd_clip clip2;                 /* SDXL TE2 (OpenCLIP ViT-bigG, with text_projection); both SDXL
                                      text encoders are part SD_MODEL_TE and register in te_params */
    int have_clip2;                /* clip2 is built (SDXL with SD_MODEL_TE) */
    sd_vae vae;
    int loaded;
    void *write_pools;             /* internal: what sd_model_add_to_writer() handed the writer */
} sd_model;

/* Open the source, decide family and config, register the parameters of opts->parts. A component
 * that is asked for but absent is an error ("m.safetensors: no VAE in this model (give one with
 * --vae)"). */
int sd_model_open(sd_model *m, const char *path, const sd_model_opts *opts);
/* The floating dtype the source stores component `part`'s matrices (tensors of ≥ 2 dimensions)
 * in when it is one dtype for all of them (SD_ST_F16 / SD_ST_BF16 / SD_ST_F32), else SD_ST_F32. */
sd_st_dtype sd_model_source_dtype(const sd_model *m, unsigned part);
/* Inference set-up, between sd_model_open() and sd_model_load(): every parameter frozen (no
 * gradient memory), and each component's linear/conv weights kept in half precision when the
 * source stores them so (the same numbers, half the memory; the ops convert per use). */
int sd_model_set_inference(sd_model *m);
/* Allocate (on `device`) and fill the values of the built components. */
int sd_model_load(sd_model *m, sd_devkind device);
/* Close the source files (after sd_model_load; the networks stay usable). */
void sd_model_release_source(sd_model *m);
void sd_model_close(sd_model *m);

/* ---- inspection (sd-model info) --------------------------------------------------------------- */

/* Which component a tensor of `f` belongs to (for a file detected as `fi`): SD_MODEL_UNET /
 * SD_MODEL_TE / SD_MODEL_VAE, or 0 for anything else (EMA copies, optimizer state, golden data). */
unsigned sd_model_tensor_component(const sd_detect_info *fi, const char *name);

/* The hashes A1111 and the Additional Networks extension show for a file:
 *   sha256       SHA-256 of the whole file (A1111's "new" hash; its shorthash is the first 10 hex)
 *   a1111_legacy first 8 hex of SHA-256 of the 0x10000 bytes at offset 0x100000 (fewer, or none,
 *                when the file is shorter: A1111's model_hash() reads what is there)
 * and for safetensors files the sshs_* pair as kohya's precalculate_safetensors_hashes computes it
 * on saving this file's tensors with only its ss_* metadata (the same as train/lora_file.h's
 * sd_lora_file_hashes_of(), streamed through the writer instead of building the copy in memory). */
typedef struct sd_model_hashes {
    char sha256[65];
    char shorthash[11];
    char a1111_legacy[9];
    int have_sshs;
    char sshs_model_hash[65];
    char sshs_legacy_hash[9];
} sd_model_hashes;
int sd_model_file_hashes(const char *path, const sd_safetensors *st, sd_model_hashes *h);

/* ---- writing (sd-model convert) ---------------------------------------------------------------- */

/* The single-file name of text-encoder registry key `key` (SD1: the key itself; SD2: the OpenCLIP
 * name, e.g. "cond_stage_model.model.transformer.resblocks.3.ln_1.weight"; q/k/v projections map to
 * in_proj_* and are merged by sd_model_add_to_writer). SD_ENOTFOUND for a key with no name. */
int sd_model_te_file_name(const sd_model *m, const char *key, char *out, size_t n);

/* Add the built (loaded) components to `w` under the single-file ldm names, as kohya saves an SD
 * checkpoint: UNet model.diffusion_model.*, VAE first_stage_model.*, SD1 text encoder
 * cond_stage_model.transformer.text_model.*, SD2 text encoder cond_stage_model.model.* with q/k/v
 * merged into in_proj and the dropped last layer, text_projection (ones) and logit_scale (1, I64)
 * synthesised as kohya's convert_text_encoder_state_dict_to_sd_v2(make_dummy_weights=True);
 * SDXL: TE1 conditioner.embedders.0.transformer.text_model.*, TE2 conditioner.embedders.1.model.*
 * (OpenCLIP names, q/k/v merged, text_projection transposed; logit_scale is not a parameter and
 * comes with the source's other keys where the caller copies them).
 * Floating tensors are stored as `dtype` (F32/F16/BF16). The model must stay open until the
 * writer has written. */
int sd_model_add_to_writer(sd_model *m, unsigned parts, sd_safetensors_writer *w, sd_st_dtype dtype);

/* Add one tensor `t` (any device; its dtype converted to `dtype` while writing) to `w` as `name`
 * with the shape `shape` (NULL: t's; the same number of elements). The model must stay open until
 * the writer has written. */
int sd_model_writer_add(sd_model *m, sd_safetensors_writer *w, const char *name, const sd_tensor *t, int ndim,
                        const int64_t *shape, sd_st_dtype dtype);

#endif
