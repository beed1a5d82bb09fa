/* sd-model: inspect, convert and run SD1.x / SD2.x / SDXL checkpoints (sd-model(1)).
 *
 *   sd-model info MODEL [--json]
 *   sd-model convert MODEL -o OUT.safetensors [--save_precision float|fp16|bf16]
 *   sd-model run clip|vae-encode|vae-decode|unet --model MODEL ... -o OUT.npy
 *   sd-model merge --sd_model MODEL --models A.safetensors... --ratios R... --save_to OUT.safetensors
 *   sd-model merge --models A.safetensors... --ratios R... --save_to OUT.safetensors [--concat] [--shuffle]
 *   sd-model svd-merge --models A.safetensors... --ratios R... --save_to OUT.safetensors --new_rank N
 *   sd-model merge-models --models A.safetensors B.safetensors... [--ratios R...] --output OUT.safetensors
 *   sd-model resize --model LORA.safetensors --save_to OUT.safetensors --new_rank N [--dynamic_method M ...]
 *   sd-model extract --model_org A --model_tuned B --save_to OUT.safetensors [--dim N --conv_dim N ...]
 *   sd-model extract-dylora --model DYLORA.safetensors --save_to OUT.safetensors --unit N
 *
 * The loading logic lives in lib/models/sd_model.c (shared with the other tools); this file only
 * parses options, moves .npy arrays in and out and prints. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/threads.h"
#include "io/cmdline.h"
#include "io/jsonl.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "models/ckpt_merge.h"
#include "models/diffusers_write.h"
#include "models/sd_model.h"
#include "tensor/tensor.h"
#include "text/clip_tokenizer.h"
#include "train/dylora.h"
#include "train/lora_combine.h"
#include "train/lora_extract.h"
#include "train/lora_file.h"
#include "train/lora_merge.h"
#include "train/meta.h"

#define PROG "sd-model"

/* ---- options --------------------------------------------------------------------------------- */

static struct {
    const char *model, *vae, *model_config;
    int v2, v_param;
    const char *output, *input;
    const char *tokens, *tokens2, *pooled_output;
    sd_opt_list prompt;
    int max_token_length;
    int clip_skip;
    const char *timesteps, *context, *vector;
    int save_precision, to;
    const char *sd_model, *save_to;
    sd_opt_list models, ratios, lbws;
    int precision, no_metadata, concat, shuffle;
    int64_t seed;
    int unet_only, show_skipped, saving_precision;
    int tile, tile_overlap;
    int json, no_hashes;
    int new_rank, new_conv_rank, dynamic_method, verbose, svd_lowrank_niter;
    double dynamic_param;
    const char *device;
    const char *model_org, *model_tuned, *load_original_model_to, *load_tuned_model_to;
    int dim, conv_dim, sdxl, load_precision;
    double clamp_quantile, min_diff;
    int threads;
    int unit;
} a;

static const sd_opt table[] = {
    SD_MODEL_OPT_ENTRIES(&a.model, &a.vae, &a.model_config, &a.v2, &a.v_param),
    {.name = "output", .short_name = 'o', .type = SD_OPT_STRING, .dest = &a.output, .metavar = "FILE",
     .group = "Files", .help = "output file (.safetensors for convert and merge-models, .npy for run)"},
    {.name = "input", .short_name = 'i', .type = SD_OPT_STRING, .dest = &a.input, .metavar = "FILE.npy",
     .group = "Files", .help = "run vae-encode/vae-decode/unet: the input array"},
    {.name = "tokens", .type = SD_OPT_STRING, .dest = &a.tokens, .metavar = "FILE.npy", .group = "Text encoder",
     .help = "run clip: token ids [B,77] (or [B,n,77] long-prompt chunks), integer dtype (SDXL: TE1's ids)"},
    {.name = "tokens2", .type = SD_OPT_STRING, .dest = &a.tokens2, .metavar = "FILE.npy", .group = "Text encoder",
     .help = "run clip, SDXL with --tokens: TE2's token ids, the shape of --tokens (required there)"},
    {.name = "pooled_output", .type = SD_OPT_STRING, .dest = &a.pooled_output, .metavar = "FILE.npy",
     .group = "Text encoder", .help = "run clip, SDXL: also write TE2's pooled output [B,projection_dim]"},
    {.name = "prompt", .type = SD_OPT_STRINGS, .dest = &a.prompt, .metavar = "TEXT", .flags = SD_OPTF_APPEND,
     .group = "Text encoder", .help = "run clip: tokenize TEXT with the CLIP tokenizer (repeat for a batch)"},
    {.name = "max_token_length", .type = SD_OPT_INT, .dest = &a.max_token_length, .def = "75",
     SD_OPT_RANGE(75, 225), .group = "Text encoder", .help = "--prompt: 75, 150 or 225 tokens (2 or 3 chunks)"},
    {.name = "clip_skip", .type = SD_OPT_INT, .dest = &a.clip_skip, SD_OPT_RANGE(0, 64), .metavar = "K",
     .group = "Text encoder", .help = "use the output of the k-th last layer (default 1 = last; SDXL: ignored)"},
    {.name = "timesteps", .type = SD_OPT_STRING, .dest = &a.timesteps, .metavar = "FILE.npy", .group = "UNet",
     .help = "run unet: timesteps [B] (or one value for the whole batch)"},
    {.name = "context", .type = SD_OPT_STRING, .dest = &a.context, .metavar = "FILE.npy", .group = "UNet",
     .help = "run unet: text conditioning [B,S,C]"},
    {.name = "vector", .type = SD_OPT_STRING, .dest = &a.vector, .metavar = "FILE.npy", .group = "UNet",
     .help = "run unet, SDXL (required there): the vector input [B,adm_in_channels] (pooled text + size "
             "embedding)"},
    {.name = "tile", .type = SD_OPT_INT, .dest = &a.tile, .def = "0", SD_OPT_RANGE(0, 1 << 20), .metavar = "N",
     .group = "VAE", .help = "run vae-encode/vae-decode in N x N tiles (image pixels for encode, latent pixels for "
                             "decode; 0 = whole images) to bound memory"},
    {.name = "tile_overlap", .type = SD_OPT_INT, .dest = &a.tile_overlap, .metavar = "N", SD_OPT_RANGE(0, 1 << 20),
     .group = "VAE", .help = "overlap of neighbouring tiles, blended with linear ramps (default: tile/4)"},
    {.name = "save_precision", .type = SD_OPT_ENUM, .dest = &a.save_precision, .choices = "float|fp16|bf16",
     .group = "Convert", .help = "convert, merge, svd-merge, merge-models, extract: store floating tensors as f32, f16 or "
                                 "bf16 (default convert: as in the source; merge, svd-merge: --precision; merge-models, "
                                 "extract: f32)"},
    {.name = "to", .type = SD_OPT_ENUM, .dest = &a.to, .choices = "safetensors|diffusers", .def = "safetensors",
     .group = "Convert", .help = "convert: one .safetensors file with ldm names, or a Diffusers folder (OUT is the "
                                 "folder; its weights are .safetensors)"},
    {.name = "sd_model", .type = SD_OPT_STRING, .dest = &a.sd_model, .metavar = "MODEL", .group = "Merge",
     .help = "merge: the checkpoint the LoRA files are merged into (merge_lora.py's name; same as --model); "
             "without it the LoRA files are merged into one LoRA file"},
    {.name = "models", .type = SD_OPT_STRINGS, .dest = &a.models, .metavar = "LORA", .flags = SD_OPTF_NARGS,
     .group = "Merge", .help = "merge, svd-merge: LoRA files (.safetensors) to merge, in order (merge --sd_model: LyCORIS LoCon/LoHa/LoKr files too)"},
    {.name = "ratios", .type = SD_OPT_DOUBLES, .dest = &a.ratios, .metavar = "R", .flags = SD_OPTF_NARGS,
     .group = "Merge", .help = "merge, svd-merge: one multiplier per --models file (into a model: W += R * alpha/rank "
                               "* up.down; LoRA into LoRA: see sd-model(1))"},
    {.name = "lbws", .type = SD_OPT_STRINGS, .dest = &a.lbws, .metavar = "LIST", .flags = SD_OPTF_NARGS,
     .group = "Merge", .help = "svd-merge, merge of SDXL LoRA files: layer block weights, one JSON list per --models file "
                               "(\"[1,0,...]\": 12 or 20 values SDXL, 17 or 26 SD1/SD2; see sd-model(1))"},
    {.name = "save_to", .type = SD_OPT_STRING, .dest = &a.save_to, .metavar = "OUT.safetensors", .group = "Merge",
     .help = "merge, svd-merge, resize, extract: the output file (same as --output)"},
    {.name = "precision", .type = SD_OPT_ENUM, .dest = &a.precision, .choices = "float|fp16|bf16", .def = "float",
     .group = "Merge", .help = "merge: the UNet and text-encoder weights are rounded to this dtype before and "
                               "after each file's merge (the merge itself is computed in f32); LoRA into LoRA, "
                               "svd-merge: the files' weights and each step of the merge are rounded to it"},
    {.name = "no_metadata", .type = SD_OPT_FLAG, .dest = &a.no_metadata, .def = "false", .group = "Merge",
     .help = "merge: do not add the sd_merge_* metadata keys (the source's metadata is kept); LoRA into LoRA, "
             "svd-merge, extract: no modelspec.* keys (the minimum ss_* keys stay)"},
    {.name = "concat", .type = SD_OPT_FLAG, .dest = &a.concat, .def = "false", .group = "Merge",
     .help = "merge without --sd_model: concatenate the files' ranks instead of adding the factors (the output "
             "rank is the sum of the input ranks)"},
    {.name = "shuffle", .type = SD_OPT_FLAG, .dest = &a.shuffle, .def = "false", .group = "Merge",
     .help = "merge without --sd_model: permute each module's rank axis at random (the product is unchanged)"},
    {.name = "seed", .type = SD_OPT_INT64, .dest = &a.seed, SD_OPT_RANGE(0, 9007199254740992.0), .metavar = "N",
     .group = "Merge", .help = "merge --shuffle: the permutations' seed (default: a random one, printed)"},
    {.name = "unet_only", .type = SD_OPT_FLAG, .dest = &a.unet_only, .def = "false", .group = "Merge models",
     .help = "merge-models: average the UNet only; the VAE and text encoder(s) are the first model's"},
    {.name = "saving_precision", .type = SD_OPT_ENUM, .dest = &a.saving_precision, .choices = "float|fp16|bf16",
     .group = "Merge models", .help = "merge-models: the dtype of every output tensor (merge_models.py's name; "
                                      "default float; --save_precision is the same)"},
    {.name = "show_skipped", .type = SD_OPT_FLAG, .dest = &a.show_skipped, .def = "false", .group = "Merge models",
     .help = "merge-models: one line per key of a later model that the first model lacks (skipped)"},
    {.name = "new_rank", .type = SD_OPT_INT, .dest = &a.new_rank, .def = "4", SD_OPT_RANGE(1, 1 << 20), .metavar = "N",
     .group = "Resize", .help = "resize, svd-merge: rank of the output LoRA (resize --dynamic_method: the largest "
                                "rank)"},
    {.name = "new_conv_rank", .type = SD_OPT_INT, .dest = &a.new_conv_rank, SD_OPT_RANGE(1, 1 << 20), .metavar = "N",
     .group = "Resize", .help = "resize: rank of the Conv2d (4-d) modules; svd-merge: of the 3x3 conv modules "
                                "(default: --new_rank)"},
    {.name = "dynamic_method", .type = SD_OPT_ENUM, .dest = &a.dynamic_method, .choices = "sv_ratio|sv_fro|sv_cumulative",
     .group = "Resize", .help = "resize: pick each module's rank from its singular values (capped by --new_rank)"},
    {.name = "dynamic_param", .type = SD_OPT_DOUBLE, .dest = &a.dynamic_param, .metavar = "X", .group = "Resize",
     .help = "resize: the --dynamic_method target (sv_ratio: max/min singular value ratio; sv_fro, sv_cumulative: "
             "the fraction retained)"},
    {.name = "verbose", .type = SD_OPT_FLAG, .dest = &a.verbose, .def = "false", .group = "Resize",
     .help = "resize: one line per module on stdout (sum(S) and Frobenius retained, max(S) ratio)"},
    {.name = "device", .type = SD_OPT_STRING, .dest = &a.device, .metavar = "DEV", .group = "Resize",
     .flags = SD_OPTF_HIDDEN, .help = "resize_lora.py / svd_merge_lora.py / extract_lora_from_models.py option: "
                                 "runs on the CPU here (no effect)"},
    {.name = "svd_lowrank_niter", .type = SD_OPT_INT, .dest = &a.svd_lowrank_niter, .def = "2", SD_OPT_RANGE(0, 1000),
     .group = "Resize", .flags = SD_OPTF_HIDDEN,
     .help = "resize_lora.py option: the SVD here is always exact (ignored)"},
    {.name = "unit", .type = SD_OPT_INT, .dest = &a.unit, SD_OPT_RANGE(1, 1 << 20), .metavar = "N",
     .group = "Extract DyLoRA", .help = "extract-dylora: the rank step (required): one file per rank N, 2N, ... below "
                                        "the file's largest rank"},
    {.name = "model_org", .type = SD_OPT_STRING, .dest = &a.model_org, .metavar = "MODEL", .group = "Extract",
     .help = "extract: the original checkpoint (.safetensors, .ckpt or Diffusers folder)"},
    {.name = "model_tuned", .type = SD_OPT_STRING, .dest = &a.model_tuned, .metavar = "MODEL", .group = "Extract",
     .help = "extract: the tuned checkpoint; the LoRA is the difference original -> tuned"},
    {.name = "dim", .type = SD_OPT_INT, .dest = &a.dim, .def = "4", SD_OPT_RANGE(1, 1 << 20), .metavar = "N",
     .group = "Extract", .help = "extract: rank of the LoRA (capped per module by its in/out width); alpha = rank"},
    {.name = "conv_dim", .type = SD_OPT_INT, .dest = &a.conv_dim, SD_OPT_RANGE(1, 1 << 20), .metavar = "N",
     .group = "Extract", .help = "extract: rank of the Conv2d 3x3 modules (default: none extracted)"},
    {.name = "sdxl", .type = SD_OPT_FLAG, .dest = &a.sdxl, .def = "false", .group = "Extract",
     .help = "extract: the models are SDXL (checked against the weights; the family is detected anyway)"},
    {.name = "load_precision", .type = SD_OPT_ENUM, .dest = &a.load_precision, .choices = "float|fp16|bf16",
     .group = "Extract", .help = "extract: round both models' weights and their difference to this dtype before "
                                 "the (float32) SVD, as the reference's cast models do (default: as stored)"},
    {.name = "clamp_quantile", .type = SD_OPT_DOUBLE, .dest = &a.clamp_quantile, .def = "0.99", SD_OPT_UNIT,
     .metavar = "Q", .group = "Extract", .help = "extract: clamp up and down to +-(the Q quantile of their values)"},
    {.name = "min_diff", .type = SD_OPT_DOUBLE, .dest = &a.min_diff, .def = "0.01", .metavar = "X", .group = "Extract",
     .help = "extract: the text encoder is extracted only if some weight differs by more than X"},
    {.name = "load_original_model_to", .type = SD_OPT_STRING, .dest = &a.load_original_model_to, .metavar = "DEV",
     .group = "Extract", .flags = SD_OPTF_HIDDEN, .help = "extract_lora_from_models.py option: no effect here"},
    {.name = "load_tuned_model_to", .type = SD_OPT_STRING, .dest = &a.load_tuned_model_to, .metavar = "DEV",
     .group = "Extract", .flags = SD_OPTF_HIDDEN, .help = "extract_lora_from_models.py option: no effect here"},
    {.name = "json", .type = SD_OPT_FLAG, .dest = &a.json, .def = "false", .group = "Output",
     .help = "info: one JSON object on stdout"},
    {.name = "no_hashes", .type = SD_OPT_FLAG, .dest = &a.no_hashes, .def = "false", .group = "Output",
     .help = "info: skip the hashes (they read the whole file)"},
    SD_OPT_THREADS(&a.threads),
    SD_OPT_END};

#define usage_error(...) sd_cmdline_usage_error(PROG, __VA_ARGS__)

static int fatal(int rc)
{
    (void)rc;
    return sd_fatal(SD_EXIT_FATAL);
}

static sd_model_opts model_opts(unsigned parts)
{
    sd_model_opts o = { 0 };
    o.parts = parts;
    o.vae = a.vae;
    o.config = a.model_config;
    o.v2 = a.v2;
    o.v_param = a.v_param ? 1 : -1;
    return o;
}

/* ---- .npy in and out -------------------------------------------------------------------------- */

static int npy_read(const char *path, sd_npy_array *arr)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = sd_read_file(path, 0, &buf, &n);
    if (rc) return rc;
    rc = sd_npy_load(buf, n, arr);
    free(buf);
    if (rc && !strstr(sd_errmsg(), path)) sd_err_prefix(rc, "%s", path);
    return rc;
}

/* Any numeric array as f32 host data (allocated into t). */
static int npy_to_f32(const char *path, const sd_npy_array *arr, sd_tensor *t)
{
    if (arr->ndim > SD_MAX_DIMS) return sd_err(SD_EFORMAT, "%s: %d dimensions (at most %d)", path, arr->ndim, SD_MAX_DIMS);
    int rc = sd_tensor_alloc(t, SD_F32, arr->ndim, arr->shape);
    if (rc) return rc;
    float *d = t->data;
    size_t n = arr->count;
    const void *s = arr->data;
    switch (arr->dtype) {
    case SD_NPY_F4: memcpy(d, s, n * 4); break;
    case SD_NPY_F2: sd_f16_to_f32_n(s, d, n); break;
    case SD_NPY_F8: for (size_t i = 0; i < n; i++) d[i] = (float)((const double *)s)[i]; break;
    case SD_NPY_I8: for (size_t i = 0; i < n; i++) d[i] = (float)((const int64_t *)s)[i]; break;
    case SD_NPY_I4: for (size_t i = 0; i < n; i++) d[i] = (float)((const int32_t *)s)[i]; break;
    case SD_NPY_I2: for (size_t i = 0; i < n; i++) d[i] = (float)((const int16_t *)s)[i]; break;
    case SD_NPY_I1: for (size_t i = 0; i < n; i++) d[i] = (float)((const int8_t *)s)[i]; break;
    case SD_NPY_U1: case SD_NPY_B1: for (size_t i = 0; i < n; i++) d[i] = (float)((const uint8_t *)s)[i]; break;
    case SD_NPY_U2: for (size_t i = 0; i < n; i++) d[i] = (float)((const uint16_t *)s)[i]; break;
    default: sd_tensor_free(t); return sd_err(SD_EFORMAT, "%s: unsupported dtype", path);
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(d[i])) {
            sd_tensor_free(t);
            return sd_err(SD_EFORMAT, "%s: element %zu is not finite", path, i);
        }
    return SD_OK;
}

static int read_f32(const char *path, sd_tensor *t)
{
    sd_npy_array arr;
    int rc = npy_read(path, &arr);
    if (rc) return rc;
    rc = npy_to_f32(path, &arr, t);
    sd_npy_array_free(&arr);
    return rc;
}

static int write_npy(const char *path, const sd_tensor *t)
{
    void *buf = NULL;
    size_t n = 0;
    int rc = sd_npy_encode(SD_NPY_F4, t->ndim, t->shape, t->data, &buf, &n);
    if (!rc) rc = sd_write_file_atomic(path, buf, n);
    free(buf);
    return rc;
}

static int shape_error(const char *path, const sd_tensor *t, const char *want)
{
    char d[128];
    return sd_err(SD_EFORMAT, "%s: shape %s, expected %s", path, sd_tensor_describe(t, d, sizeof d), want);
}

/* ---- model + context -------------------------------------------------------------------------- */

static int open_model(sd_model *m, unsigned parts)
{
    sd_model_opts o = model_opts(parts);
    int rc = sd_model_open(m, a.model, &o);
    if (!rc && m->warning[0]) sd_warn("%s", m->warning);
    if (!rc) rc = sd_model_set_inference(m);
    if (!rc) rc = sd_model_load(m, SD_DEV_CPU);
    if (!rc) sd_model_release_source(m);
    return rc;
}

static int ctx_open(sd_ctx *ctx, size_t need)
{
    size_t s = need * 2 + ((size_t)4 << 30);
    return sd_ctx_init(ctx, SD_DEV_CPU, sd_threads_get(), s);
}

/* ---- run clip --------------------------------------------------------------------------------- */

/* Token ids from an integer .npy: [T] (one row), [B,T] or [B,n,77] → i32 ids (allocated). */
static int read_ids(const char *path, int64_t vocab, sd_tensor *ids)
{
    sd_npy_array arr;
    int rc = npy_read(path, &arr);
    if (rc) return rc;
    if (arr.dtype == SD_NPY_F4 || arr.dtype == SD_NPY_F2 || arr.dtype == SD_NPY_F8) {
        sd_npy_array_free(&arr);
        return sd_err(SD_EFORMAT, "%s: token ids must be integers, not %s", path, sd_npy_dtype_name(arr.dtype));
    }
    int64_t sh[3] = { 1, 1, 1 };
    int nd = arr.ndim;
    if (nd == 1) sh[0] = 1, sh[1] = arr.shape[0], nd = 2;
    else if (nd == 2 || nd == 3) memcpy(sh, arr.shape, (size_t)nd * sizeof *sh);
    else {
        sd_npy_array_free(&arr);
        return sd_err(SD_EFORMAT, "%s: %d dimensions, expected [B,T] or [B,n,77]", path, arr.ndim);
    }
    sd_tensor f;
    rc = npy_to_f32(path, &arr, &f);
    sd_npy_array_free(&arr);
    if (rc) return rc;
    if ((rc = sd_tensor_alloc(ids, SD_I32, nd, sh))) {
        sd_tensor_free(&f);
        return rc;
    }
    int32_t *ip = ids->data;
    const float *fp = f.data;
    for (int64_t i = 0; i < sd_tensor_numel(ids); i++) {
        if (!(fp[i] >= 0 && fp[i] < (float)vocab)) {
            rc = sd_err(SD_EFORMAT, "%s: token id %.0f at index %" PRId64 " is outside the vocabulary [0, %" PRId64 ")",
                        path, fp[i], i, vocab);
            break;
        }
        ip[i] = (int32_t)fp[i];
    }
    sd_tensor_free(&f);
    if (rc) sd_tensor_free(ids);
    return rc;
}

/* The prompts framed by the tokenizer with pad id `pad` (§3.2): ids [B,77] or [B,n,77] (allocated). */
static int prompt_ids(sd_clip_tokenizer *tok, int32_t pad, int64_t vocab, sd_tensor *ids)
{
    int B = a.prompt.n, nch = 1, rc = SD_OK;
    int32_t *buf = malloc((size_t)B * SD_CLIP_MAX_CHUNKS * 77 * sizeof *buf);
    if (!buf) return sd_err(SD_ENOMEM, "out of memory");
    for (int b = 0; b < B && !rc; b++) {
        int32_t tmp[SD_CLIP_MAX_CHUNKS * 77];
        rc = sd_clip_tokenizer_frame(tok, a.prompt.s[b], strlen(a.prompt.s[b]), a.max_token_length, pad, tmp, &nch);
        if (!rc) memcpy(buf + (size_t)b * nch * 77, tmp, (size_t)nch * 77 * sizeof *tmp);
    }
    for (int64_t i = 0; !rc && i < (int64_t)B * nch * 77; i++)
        if (buf[i] >= vocab)
            rc = sd_err(SD_EFORMAT, "%s: the CLIP tokenizer's id %d does not fit the model's vocabulary of %" PRId64
                        " (a test model?): give --tokens instead", a.model, buf[i], vocab);
    if (!rc) rc = nch == 1 ? sd_tensor_alloc(ids, SD_I32, 2, (int64_t[]){ B, 77 })
                           : sd_tensor_alloc(ids, SD_I32, 3, (int64_t[]){ B, nch, 77 });
    if (!rc) memcpy(ids->data, buf, (size_t)B * nch * 77 * sizeof *buf);
    free(buf);
    return rc;
}

/* ids [B,T] with T ≤ the model's positions, or [B,n,77] */
static int check_ids(const char *src, const sd_tensor *ids, int64_t maxlen)
{
    int64_t T = ids->shape[ids->ndim - 1];
    if (T < 1 || T > maxlen)
        return sd_err(SD_EFORMAT, "%s: %" PRId64 " tokens per row, the model takes at most %" PRId64, src, T, maxlen);
    if (ids->ndim == 3 && T != 77)
        return sd_err(SD_EFORMAT, "%s: long-prompt chunks must be rows of 77 ids, not %" PRId64, src, T);
    return SD_OK;
}

/* SDXL: context [B,T,W1+W2] = cat(TE1 hidden_states[-2], TE2 hidden_states[-2]) on the last axis,
 * pooled [B,P] from TE2 (kohya SdxlTextEncodingStrategy; clip_skip is not used). */
static int run_clip_sdxl(sd_model *m, sd_ctx *ctx, const sd_tensor *ids1, const sd_tensor *ids2)
{
    int64_t B = ids1->shape[0], n = ids1->ndim == 3 ? ids1->shape[1] : 1, T = ids1->shape[ids1->ndim - 1];
    int64_t W1 = m->cfg.clip.width, W2 = m->cfg.clip2.width, P = m->cfg.clip2.projection_dim;
    int64_t S = ids1->ndim == 3 ? n * 75 + 2 : T;
    int want_pooled = a.pooled_output != NULL;
    sd_tensor h1 = { 0 }, h2 = { 0 }, w1 = { 0 }, w2 = { 0 }, pooled = { 0 }, y = { 0 };
    sd_nn_plan p1 = sd_clip_plan_sdxl(&m->clip, B, n, T, 0), p2 = sd_clip_plan_sdxl(&m->clip2, B, n, T, want_pooled);
    size_t need = p1.scratch + p1.saved > p2.scratch + p2.saved ? p1.scratch + p1.saved : p2.scratch + p2.saved;
    int rc = ctx_open(ctx, need);
    if (!rc) rc = sd_tensor_alloc(&h1, SD_F32, SD_DIMS(B, S, W1));
    if (!rc) rc = sd_tensor_alloc(&h2, SD_F32, SD_DIMS(B, S, W2));
    if (!rc && want_pooled) rc = sd_tensor_alloc(&pooled, SD_F32, SD_DIMS(B, P));
    if (!rc && ids1->ndim == 3) {
        if (!(rc = sd_tensor_alloc(&w1, SD_F32, SD_DIMS(B * n, 77, W1))) &&
            !(rc = sd_tensor_alloc(&w2, SD_F32, SD_DIMS(B * n, 77, W2))) &&
            !(rc = sd_clip_forward_sdxl_chunks(ctx, &m->clip, NULL, &h1, NULL, &w1, ids1)))
            rc = sd_clip_forward_sdxl_chunks(ctx, &m->clip2, NULL, &h2, want_pooled ? &pooled : NULL, &w2, ids2);
    } else if (!rc) {
        if (!(rc = sd_clip_forward_sdxl(ctx, &m->clip, NULL, &h1, NULL, ids1)))
            rc = sd_clip_forward_sdxl(ctx, &m->clip2, NULL, &h2, want_pooled ? &pooled : NULL, ids2);
    }
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, SD_DIMS(B, S, W1 + W2));
    if (!rc) {
        float *yd = y.data;
        const float *a1 = h1.data, *a2 = h2.data;
        for (int64_t r = 0; r < B * S; r++) {
            memcpy(yd + r * (W1 + W2), a1 + r * W1, (size_t)W1 * sizeof *yd);
            memcpy(yd + r * (W1 + W2) + W1, a2 + r * W2, (size_t)W2 * sizeof *yd);
        }
        rc = write_npy(a.output, &y);
    }
    if (!rc && want_pooled) rc = write_npy(a.pooled_output, &pooled);
    sd_tensor_free(&h1);
    sd_tensor_free(&h2);
    sd_tensor_free(&w1);
    sd_tensor_free(&w2);
    sd_tensor_free(&pooled);
    sd_tensor_free(&y);
    return rc;
}

static int run_clip(void)
{
    if (!a.tokens == !a.prompt.n) return usage_error("run clip: give exactly one of --tokens FILE.npy and --prompt TEXT");
    if (a.tokens2 && !a.tokens) return usage_error("run clip: --tokens2 goes with --tokens (not with --prompt)");
    if (a.prompt.n && a.max_token_length != 75 && a.max_token_length != 150 && a.max_token_length != 225)
        return usage_error("option '--max_token_length': %d is not 75, 150 or 225", a.max_token_length);
    sd_model m;
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    sd_tensor ids = { 0 }, ids2 = { 0 }, y = { 0 }, hidden = { 0 };
    sd_clip_tokenizer *tok = NULL;
    int rc = open_model(&m, SD_MODEL_TE);
    if (rc) goto out;
    int sdxl = m.cfg.family == SD_FAMILY_SDXL;
    if (!sdxl && (a.tokens2 || a.pooled_output)) {
        const char *fam = sd_family_name(m.cfg.family);
        sd_model_close(&m);
        return usage_error("run clip: %s: only SDXL models have a second text encoder (%s is %s)",
                           a.tokens2 ? "--tokens2" : "--pooled_output", a.model, fam);
    }
    if (sdxl && a.tokens && !a.tokens2) {
        rc = sd_err(SD_EINVAL, "%s: SDXL has two text encoders: --tokens FILE.npy is TE1's ids, give TE2's with "
                    "--tokens2 FILE.npy", a.model);
        goto out;
    }
    if (sdxl && a.clip_skip >= 0) sd_warn("--clip_skip is ignored for SDXL (hidden_states[-2] of both text encoders)");
    int64_t vocab = m.cfg.clip.vocab_size, maxlen = m.cfg.clip.max_len;
    const char *src = a.tokens, *src2 = a.tokens2;
    if (a.tokens) {
        if ((rc = read_ids(a.tokens, vocab, &ids))) goto out;
        if (sdxl && (rc = read_ids(a.tokens2, m.cfg.clip2.vocab_size, &ids2))) goto out;
    } else {
        char vp[4096];
        if ((rc = sd_clip_vocab_path(vp, sizeof vp)) || (rc = sd_clip_tokenizer_load(vp, &tok))) goto out;
        int32_t pad = m.cfg.family == SD_FAMILY_SD2 ? SD_CLIP_PAD_SD2 : SD_CLIP_PAD_SD1;
        if ((rc = prompt_ids(tok, pad, vocab, &ids))) goto out;
        /* SDXL TE2: the bigG tokenizer, the same vocabulary with pad id 0 (§3.2) */
        if (sdxl && (rc = prompt_ids(tok, SD_CLIP_PAD_SD2, m.cfg.clip2.vocab_size, &ids2))) goto out;
        src = src2 = "--prompt";
    }
    if ((rc = check_ids(src, &ids, maxlen))) goto out;
    if (sdxl) {
        if ((rc = check_ids(src2, &ids2, m.cfg.clip2.max_len))) goto out;
        if (ids.ndim != ids2.ndim || memcmp(ids.shape, ids2.shape, (size_t)ids.ndim * sizeof *ids.shape)) {
            char d1[128], d2[128];
            rc = sd_err(SD_EFORMAT, "%s: shape %s, expected the shape of --tokens %s", src2,
                        sd_tensor_describe(&ids2, d2, sizeof d2), sd_tensor_describe(&ids, d1, sizeof d1));
            goto out;
        }
        rc = run_clip_sdxl(&m, &ctx, &ids, &ids2);
        goto out;
    }
    int clip_skip = a.clip_skip < 0 ? 1 : a.clip_skip;
    int64_t T = ids.shape[ids.ndim - 1], B = ids.shape[0], W = m.cfg.clip.width;
    int nl;
    if ((rc = sd_clip_layers_for_skip(&m.clip, clip_skip, &nl))) goto out;
    sd_nn_plan p = sd_clip_plan(&m.clip, ids.ndim == 3 ? B * ids.shape[1] : B, T, clip_skip);
    if ((rc = ctx_open(&ctx, p.scratch + p.saved))) goto out;
    if (ids.ndim == 2) {
        if ((rc = sd_tensor_alloc(&y, SD_F32, SD_DIMS(B, T, W)))) goto out;
        rc = sd_clip_forward(&ctx, &m.clip, NULL, &y, &ids, clip_skip);
    } else {
        int64_t n = ids.shape[1];
        if ((rc = sd_tensor_alloc(&y, SD_F32, SD_DIMS(B, n * 75 + 2, W))) ||
            (rc = sd_tensor_alloc(&hidden, SD_F32, SD_DIMS(B * n, 77, W))))
            goto out;
        rc = sd_clip_forward_chunks(&ctx, &m.clip, NULL, &y, &hidden, &ids, clip_skip);
    }
    if (!rc) rc = write_npy(a.output, &y);
out:
    sd_tensor_free(&ids);
    sd_tensor_free(&ids2);
    sd_clip_tokenizer_free(tok);
    sd_tensor_free(&y);
    sd_tensor_free(&hidden);
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_model_close(&m);
    return rc ? fatal(rc) : 0;
}

/* ---- run vae-encode / vae-decode -------------------------------------------------------------- */

static int run_vae(int decode)
{
    if (!a.input) return usage_error("run %s: --input FILE.npy is required", decode ? "vae-decode" : "vae-encode");
    sd_model m;
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    sd_tensor x = { 0 }, y = { 0 };
    int rc = open_model(&m, SD_MODEL_VAE);
    if (rc) goto out;
    if ((rc = read_f32(a.input, &x))) goto out;
    const sd_vae_config *c = &m.cfg.vae;
    int64_t f = m.vae.factor;
    char want[128];
    if (decode) {
        snprintf(want, sizeof want, "[B,%d,h,w]", c->embed_dim);
        if (x.ndim != 4 || x.shape[1] != c->embed_dim || x.shape[2] < 1 || x.shape[3] < 1) {
            rc = shape_error(a.input, &x, want);
            goto out;
        }
    } else {
        snprintf(want, sizeof want, "[B,%d,H,W] with H and W multiples of %" PRId64, c->in_channels, f);
        if (x.ndim != 4 || x.shape[1] != c->in_channels || x.shape[2] < f || x.shape[3] < f || x.shape[2] % f ||
            x.shape[3] % f) {
            rc = shape_error(a.input, &x, want);
            goto out;
        }
    }
    int64_t B = x.shape[0], H = x.shape[2], W = x.shape[3];
    int tile = a.tile, overlap = a.tile_overlap;
    if (tile) {
        if (overlap < 0) overlap = decode ? tile / 4 : (int)(tile / 4 / f * f);
        if (!decode && tile % f) {
            rc = usage_error("option '--tile': %d is not a multiple of the VAE's factor %" PRId64 " (vae-encode tiles are "
                             "in image pixels)", tile, f);
            goto done;
        }
        if (!decode && overlap % f) {
            rc = usage_error("option '--tile_overlap': %d is not a multiple of %" PRId64, overlap, f);
            goto done;
        }
        if (overlap >= tile) {
            rc = usage_error("option '--tile_overlap': %d must be smaller than --tile %d", overlap, tile);
            goto done;
        }
    }
    int64_t os[4] = { B, decode ? c->out_ch : 2 * c->embed_dim, decode ? H * f : H / f, decode ? W * f : W / f };
    if ((rc = sd_tensor_alloc(&y, SD_F32, 4, os))) goto out;
    int64_t sh = tile && tile < H ? tile : H, sw = tile && tile < W ? tile : W;
    if ((rc = ctx_open(&ctx, sd_vae_scratch_bytes(&m.vae, 1, decode ? sh * f : sh, decode ? sw * f : sw, decode))))
        goto out;
    /* one image at a time: memory stays that of one */
    for (int64_t b = 0; b < B && !rc; b++) {
        sd_tensor xi, yi;
        sd_tensor_narrow0(&x, b, 1, &xi);
        sd_tensor_narrow0(&y, b, 1, &yi);
        if (tile)
            rc = decode ? sd_vae_decode_tiled(&ctx, &m.vae, &yi, &xi, tile, overlap)
                        : sd_vae_encode_tiled(&ctx, &m.vae, &yi, &xi, tile, overlap);
        else
            rc = decode ? sd_vae_decode(&ctx, &m.vae, &yi, &xi) : sd_vae_encode(&ctx, &m.vae, &yi, &xi);
    }
    if (!rc) rc = write_npy(a.output, &y);
out:
    if (rc) rc = fatal(rc);
done:
    sd_tensor_free(&x);
    sd_tensor_free(&y);
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_model_close(&m);
    return rc;
}

/* ---- run unet --------------------------------------------------------------------------------- */

static int run_unet(void)
{
    if (!a.input || !a.timesteps || !a.context)
        return usage_error("run unet: --input, --timesteps and --context are required");
    sd_model m;
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    sd_tensor x = { 0 }, t = { 0 }, tb = { 0 }, c = { 0 }, y = { 0 }, v = { 0 };
    int rc = open_model(&m, SD_MODEL_UNET);
    if (rc) goto out;
    const sd_unet_config *u = &m.cfg.unet;
    if (a.vector && !u->adm_in_channels) {
        const char *fam = sd_family_name(m.cfg.family);
        sd_model_close(&m);
        return usage_error("run unet: --vector: only SDXL UNets take a vector input (%s is %s)", a.model, fam);
    }
    if (!a.vector && u->adm_in_channels) {
        rc = sd_err(SD_EINVAL, "%s: the SDXL UNet needs --vector FILE.npy [B,%d] (pooled text + size embedding)", a.model,
                    u->adm_in_channels);
        goto out;
    }
    if ((rc = read_f32(a.input, &x)) || (rc = read_f32(a.timesteps, &t)) || (rc = read_f32(a.context, &c))) goto out;
    if (a.vector && (rc = read_f32(a.vector, &v))) goto out;
    int64_t mult = (int64_t)1 << (u->n_levels - 1);
    char want[160];
    snprintf(want, sizeof want, "[B,%d,H,W] with H and W multiples of %" PRId64, u->in_channels, mult);
    if (x.ndim != 4 || x.shape[1] != u->in_channels || x.shape[2] < 1 || x.shape[3] < 1 || x.shape[2] % mult ||
        x.shape[3] % mult) {
        rc = shape_error(a.input, &x, want);
        goto out;
    }
    int64_t B = x.shape[0];
    snprintf(want, sizeof want, "[%" PRId64 ",S,%d]", B, u->context_dim);
    if (c.ndim != 3 || c.shape[0] != B || c.shape[2] != u->context_dim || c.shape[1] < 1) {
        rc = shape_error(a.context, &c, want);
        goto out;
    }
    if (a.vector && (v.ndim != 2 || v.shape[0] != B || v.shape[1] != u->adm_in_channels)) {
        snprintf(want, sizeof want, "[%" PRId64 ",%d]", B, u->adm_in_channels);
        rc = shape_error(a.vector, &v, want);
        goto out;
    }
    int64_t nt = sd_tensor_numel(&t);
    if (nt != 1 && !(t.ndim == 1 && nt == B)) {
        snprintf(want, sizeof want, "[%" PRId64 "] or one value", B);
        rc = shape_error(a.timesteps, &t, want);
        goto out;
    }
    if ((rc = sd_tensor_alloc(&tb, SD_F32, 1, &B))) goto out;
    for (int64_t i = 0; i < B; i++) ((float *)tb.data)[i] = ((float *)t.data)[nt == 1 ? 0 : i];
    if ((rc = sd_tensor_alloc(&y, SD_F32, SD_DIMS(B, u->out_channels, x.shape[2], x.shape[3])))) goto out;
    sd_nn_plan p = sd_unet_plan(&m.unet, B, x.shape[2], x.shape[3], c.shape[1]);
    if ((rc = ctx_open(&ctx, p.scratch + p.saved))) goto out;
    rc = sd_unet_forward(&ctx, &m.unet, NULL, &y, &x, &tb, &c, a.vector ? &v : NULL);
    if (!rc) rc = write_npy(a.output, &y);
out:
    sd_tensor_free(&x);
    sd_tensor_free(&t);
    sd_tensor_free(&tb);
    sd_tensor_free(&c);
    sd_tensor_free(&v);
    sd_tensor_free(&y);
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_model_close(&m);
    return rc ? fatal(rc) : 0;
}

/* ---- info ------------------------------------------------------------------------------------- */

typedef struct comp_stats {
    size_t tensors;
    int64_t params;
    size_t dtype_count[SD_ST_NDTYPES];
} comp_stats;

static void stats_add(comp_stats *s, const sd_st_tensor *t)
{
    s->tensors++;
    s->params += t->numel;
    s->dtype_count[t->dtype]++;
}

static jv dtypes_jv(const comp_stats *s)
{
    jv o = jv_object();
    for (int d = SD_ST_NDTYPES - 1; d >= 0; d--)
        if (s->dtype_count[d]) o = jv_object_set(o, jv_string(sd_st_dtype_name((sd_st_dtype)d)), jv_number((double)s->dtype_count[d]));
    return o;
}

static void dtypes_text(const comp_stats *s, char *buf, size_t n)
{
    buf[0] = 0;
    size_t used = 0;
    int kinds = 0;
    for (int d = 0; d < SD_ST_NDTYPES; d++) kinds += s->dtype_count[d] != 0;
    for (int d = SD_ST_NDTYPES - 1; d >= 0 && used < n; d--) {
        if (!s->dtype_count[d]) continue;
        if (kinds == 1) used += (size_t)snprintf(buf + used, n - used, "%s", sd_st_dtype_name((sd_st_dtype)d));
        else
            used += (size_t)snprintf(buf + used, n - used, "%s%s %zu", used ? ", " : "", sd_st_dtype_name((sd_st_dtype)d),
                                     s->dtype_count[d]);
    }
}

static const char *layout_name(sd_layout l)
{
    switch (l) {
    case SD_LAYOUT_LDM: return "ldm";
    case SD_LAYOUT_LDM_BARE: return "ldm (no prefix)";
    case SD_LAYOUT_DIFFUSERS: return "diffusers";
    default: return "none";
    }
}

static jv int_list(const int *v, int n)
{
    jv arr = jv_array();
    for (int i = 0; i < n; i++) arr = jv_array_append(arr, jv_number(v[i]));
    return arr;
}

/* A float as the shortest decimal that reads back to it (0.18215, not 0.1821500062942505). */
static jv float_jv(float f)
{
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return jv_number(strtod(buf, NULL));
}

/* The configuration in use, in --model_config form (feeding it back describes the same model). */
static jv config_jv(const sd_model_config *c)
{
    jv r = jv_object();
    r = jv_object_set(r, jv_string("family"), jv_string(c->family == SD_FAMILY_SDXL ? "sdxl"
                                                         : c->family == SD_FAMILY_SD2 ? "sd2" : "sd1"));
    r = jv_object_set(r, jv_string("parameterization"), jv_string(c->parameterization == SD_PRED_V ? "v" : "eps"));
    const sd_unet_config *u = &c->unet;
    jv uj = jv_object();
    uj = jv_object_set(uj, jv_string("in_channels"), jv_number(u->in_channels));
    uj = jv_object_set(uj, jv_string("out_channels"), jv_number(u->out_channels));
    uj = jv_object_set(uj, jv_string("model_channels"), jv_number(u->model_channels));
    uj = jv_object_set(uj, jv_string("channel_mult"), int_list(u->channel_mult, u->n_levels));
    uj = jv_object_set(uj, jv_string("num_res_blocks"), int_list(u->num_res_blocks, u->n_levels));
    uj = jv_object_set(uj, jv_string("attention_resolutions"), int_list(u->attention_resolutions, u->n_attn));
    uj = jv_object_set(uj, jv_string("num_heads"), jv_number(u->num_heads));
    uj = jv_object_set(uj, jv_string("num_head_channels"), jv_number(u->num_head_channels));
    uj = jv_object_set(uj, jv_string("context_dim"), jv_number(u->context_dim));
    uj = jv_object_set(uj, jv_string("transformer_depth"), int_list(u->transformer_depth, u->n_levels));
    uj = jv_object_set(uj, jv_string("transformer_depth_middle"), jv_number(u->transformer_depth_middle));
    if (u->adm_in_channels) uj = jv_object_set(uj, jv_string("adm_in_channels"), jv_number(u->adm_in_channels));
    uj = jv_object_set(uj, jv_string("use_linear_in_transformer"), jv_bool(u->use_linear_in_transformer));
    r = jv_object_set(r, jv_string("unet"), uj);
    const sd_vae_config *v = &c->vae;
    jv vj = jv_object();
    vj = jv_object_set(vj, jv_string("ch"), jv_number(v->ch));
    vj = jv_object_set(vj, jv_string("ch_mult"), int_list(v->ch_mult, v->n_mult));
    vj = jv_object_set(vj, jv_string("num_res_blocks"), jv_number(v->num_res_blocks));
    vj = jv_object_set(vj, jv_string("attn_resolutions"), int_list(v->attn_resolutions, v->n_attn));
    vj = jv_object_set(vj, jv_string("z_channels"), jv_number(v->z_channels));
    vj = jv_object_set(vj, jv_string("embed_dim"), jv_number(v->embed_dim));
    vj = jv_object_set(vj, jv_string("double_z"), jv_bool(v->double_z));
    vj = jv_object_set(vj, jv_string("resolution"), jv_number(v->resolution));
    vj = jv_object_set(vj, jv_string("scale_factor"), float_jv(v->scale_factor));
    r = jv_object_set(r, jv_string("vae"), vj);
    for (int t = 0; t < 2; t++) {
        const sd_clip_config *k = t ? &c->clip2 : &c->clip;
        if (!k->width) continue;
        jv kj = jv_object();
        kj = jv_object_set(kj, jv_string("width"), jv_number(k->width));
        kj = jv_object_set(kj, jv_string("layers"), jv_number(k->layers));
        kj = jv_object_set(kj, jv_string("heads"), jv_number(k->heads));
        kj = jv_object_set(kj, jv_string("max_len"), jv_number(k->max_len));
        kj = jv_object_set(kj, jv_string("vocab_size"), jv_number(k->vocab_size));
        if (k->projection_dim) kj = jv_object_set(kj, jv_string("projection_dim"), jv_number(k->projection_dim));
        r = jv_object_set(r, jv_string(t ? "clip2" : "clip"), kj);
    }
    return r;
}

static void thousands(int64_t v, char *buf, size_t n)
{
    char raw[32];
    snprintf(raw, sizeof raw, "%" PRId64, v);
    size_t len = strlen(raw), o = 0;
    for (size_t i = 0; i < len && o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = 0;
}

static int info_one(const char *path)
{
    sd_model m;
    sd_model_opts o = model_opts(SD_MODEL_ALL);
    o.inspect = 1;
    int rc = sd_model_open(&m, path, &o);
    if (rc) {
        sd_model_close(&m);
        return fatal(rc);
    }
    if (m.warning[0]) sd_warn("%s", m.warning);
    /* statistics per component over the model's own files (and the --vae file) */
    comp_stats st[4];          /* unet, te, vae, other */
    memset(st, 0, sizeof st);
    comp_stats vae_repl;
    memset(&vae_repl, 0, sizeof vae_repl);
    const sd_model_file *repl = NULL;
    for (int i = 0; i < m.nfiles; i++) {
        const sd_model_file *f = &m.files[i];
        int is_repl = a.vae && f == m.vae_src && i == m.nfiles - 1;
        if (is_repl) repl = f;
        for (size_t k = 0; k < sd_safetensors_count(f->st); k++) {
            const sd_st_tensor *t = sd_safetensors_at(f->st, k);
            unsigned c = sd_model_tensor_component(&f->info, t->name);
            if (is_repl) {
                if (c == SD_MODEL_VAE) stats_add(&vae_repl, t);
                continue;
            }
            stats_add(&st[c == SD_MODEL_UNET ? 0 : c == SD_MODEL_TE ? 1 : c == SD_MODEL_VAE ? 2 : 3], t);
        }
    }
    const sd_model_file *single = m.format != SD_MODEL_FMT_DIFFUSERS ? &m.files[0] : NULL;
    sd_model_hashes h;
    memset(&h, 0, sizeof h);
    int single_hashes = single != NULL;
    if (a.no_hashes) single_hashes = 0;
    if (single_hashes) {
        rc = sd_model_file_hashes(path, single->format == SD_MODEL_FMT_SAFETENSORS ? single->st : NULL, &h);
        if (rc) {
            sd_model_close(&m);
            return fatal(rc);
        }
    }
    static const char *const cname[4] = { "unet", "text_encoder", "vae", "other" };
    sd_layout lay[3] = { m.unet_layout, m.te_layout, m.vae_layout };
    const char *pred = m.cfg.parameterization == SD_PRED_V ? "v" : "eps";
    const char *family = sd_family_name(m.cfg.family);
    if (a.json) {
        jv r = jv_object();
        r = jv_object_set(r, jv_string("path"), jv_string(path));
        r = jv_object_set(r, jv_string("format"), jv_string(sd_model_format_name(m.format)));
        r = jv_object_set(r, jv_string("family"), jv_string(family));
        r = jv_object_set(r, jv_string("family_from"), jv_string(m.family_from));
        r = jv_object_set(r, jv_string("description"), jv_string(m.info.description));
        r = jv_object_set(r, jv_string("parameterization"), jv_string(pred));
        jv comps = jv_object();
        int64_t total = 0;
        for (int c = 0; c < 4; c++) {
            total += st[c].params;
            if (!st[c].tensors) continue;
            jv cj = jv_object();
            if (c < 3) cj = jv_object_set(cj, jv_string("layout"), jv_string(layout_name(lay[c])));
            cj = jv_object_set(cj, jv_string("tensors"), jv_number((double)st[c].tensors));
            cj = jv_object_set(cj, jv_string("parameters"), jv_number((double)st[c].params));
            cj = jv_object_set(cj, jv_string("dtypes"), dtypes_jv(&st[c]));
            comps = jv_object_set(comps, jv_string(cname[c]), cj);
        }
        r = jv_object_set(r, jv_string("components"), comps);
        r = jv_object_set(r, jv_string("parameters"), jv_number((double)total));
        if (repl) {
            jv v = jv_object();
            v = jv_object_set(v, jv_string("path"), jv_string(repl->path));
            v = jv_object_set(v, jv_string("layout"), jv_string(layout_name(m.vae_layout)));
            v = jv_object_set(v, jv_string("tensors"), jv_number((double)vae_repl.tensors));
            v = jv_object_set(v, jv_string("parameters"), jv_number((double)vae_repl.params));
            v = jv_object_set(v, jv_string("dtypes"), dtypes_jv(&vae_repl));
            r = jv_object_set(r, jv_string("vae_replacement"), v);
        }
        jv meta = jv_object();
        for (int i = 0; i < m.nfiles; i++) {
            if (&m.files[i] == repl) continue;
            const sd_safetensors *s = m.files[i].st;
            for (size_t k = 0; k < sd_safetensors_meta_count(s); k++) {
                const char *key, *val;
                sd_safetensors_meta_at(s, k, &key, &val);
                meta = jv_object_set(meta, jv_string(key), jv_string(val));
            }
        }
        r = jv_object_set(r, jv_string("metadata"), meta);
        r = jv_object_set(r, jv_string("config"), config_jv(&m.cfg));
        if (single_hashes) {
            jv hj = jv_object();
            hj = jv_object_set(hj, jv_string("sha256"), jv_string(h.sha256));
            hj = jv_object_set(hj, jv_string("shorthash"), jv_string(h.shorthash));
            hj = jv_object_set(hj, jv_string("model_hash"), jv_string(h.a1111_legacy));
            if (h.have_sshs) {
                hj = jv_object_set(hj, jv_string("sshs_model_hash"), jv_string(h.sshs_model_hash));
                hj = jv_object_set(hj, jv_string("sshs_legacy_hash"), jv_string(h.sshs_legacy_hash));
            }
            r = jv_object_set(r, jv_string("hashes"), hj);
        }
        char *text = NULL;
        size_t n = 0;
        rc = sd_json_dump(r, &text, &n);
        if (!rc) {
            fwrite(text, 1, n, stdout);
            fputc('\n', stdout);
        }
        free(text);
    } else {
        printf("file              %s\n", path);
        printf("format            %s\n", sd_model_format_name(m.format));
        printf("model             %s\n", m.info.description);
        printf("family            %s (%s)\n", family,
               !strcmp(m.family_from, "weights") ? "from the weights"
               : !strcmp(m.family_from, "model_config") ? "from --model_config"
               : !strcmp(m.family_from, "diffusers_config") ? "from the Diffusers config.json files"
               : !strcmp(m.family_from, "--v2") ? "from --v2" : "a VAE alone does not tell; --v2 for SD2.x");
        printf("parameterization  %s%s\n", pred,
               a.v_param || a.model_config ? "" : " (not stored in the weights: --v_parameterization)");
        int64_t total = 0;
        for (int c = 0; c < 4; c++) {
            total += st[c].params;
            if (!st[c].tensors) continue;
            char num[48], dt[128];
            thousands(st[c].params, num, sizeof num);
            dtypes_text(&st[c], dt, sizeof dt);
            printf("%-17s %s parameters in %zu tensors (%s)%s%s\n", cname[c], num, st[c].tensors, dt,
                   c < 3 ? ", names " : "", c < 3 ? layout_name(lay[c]) : "");
        }
        char num[48];
        thousands(total, num, sizeof num);
        printf("total             %s parameters\n", num);
        if (repl) {
            char dt[128];
            thousands(vae_repl.params, num, sizeof num);
            dtypes_text(&vae_repl, dt, sizeof dt);
            printf("vae (--vae)       %s parameters in %zu tensors (%s), names %s, from %s\n", num, vae_repl.tensors, dt,
                   layout_name(m.vae_layout), repl->path);
        }
        if (single && single->ckpt_skipped)
            printf("not listed        %zu tensors outside the state_dict (optimizer state, ...)\n", single->ckpt_skipped);
        size_t nmeta = 0;
        for (int i = 0; i < m.nfiles; i++)
            if (&m.files[i] != repl) nmeta += sd_safetensors_meta_count(m.files[i].st);
        printf("metadata          %zu key%s\n", nmeta, nmeta == 1 ? "" : "s");
        for (int i = 0; i < m.nfiles; i++) {
            if (&m.files[i] == repl) continue;
            const sd_safetensors *s = m.files[i].st;
            for (size_t k = 0; k < sd_safetensors_meta_count(s); k++) {
                const char *key, *val;
                sd_safetensors_meta_at(s, k, &key, &val);
                size_t vl = strlen(val);
                /* one line per key; long values (ss_tag_frequency, ...) shortened */
                printf("  %s = ", key);
                for (size_t j = 0; j < vl && j < 200; j++) putchar(val[j] == '\n' ? ' ' : val[j]);
                printf("%s\n", vl > 200 ? " ..." : "");
            }
        }
        if (single_hashes) {
            printf("sha256            %s\n", h.sha256);
            printf("shorthash         %s (A1111)\n", h.shorthash);
            printf("model_hash        %s (A1111 legacy)\n", h.a1111_legacy);
            if (h.have_sshs) {
                printf("sshs_model_hash   %s\n", h.sshs_model_hash);
                printf("sshs_legacy_hash  %s\n", h.sshs_legacy_hash);
            }
        }
    }
    fflush(stdout);
    sd_model_close(&m);
    if (ferror(stdout)) return sd_err(SD_EIO, "stdout: write error"), fatal(SD_EIO);
    return rc ? fatal(rc) : 0;
}

/* ---- convert ---------------------------------------------------------------------------------- */

typedef struct conv_src {
    const sd_st_tensor *t;
    sd_st_dtype to;
} conv_src;

static int write_converted(void *ctx, const char *name, sd_st_sink *sink)
{
    (void)name;
    const conv_src *c = ctx;
    enum { CHUNK = 16384 };
    static unsigned char buf[CHUNK * 8];
    size_t isz = sd_st_dtype_size(c->t->dtype), osz = sd_st_dtype_size(c->to);
    const unsigned char *src = c->t->data;
    size_t n = (size_t)c->t->numel;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        int rc = sd_st_convert(c->t->dtype, src + i * isz, c->to, buf, k);
        if (!rc) rc = sd_st_sink_write(sink, buf, k * osz);
        if (rc) return rc;
    }
    return SD_OK;
}

static const char *base_name(const char *p)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    const char *s = p + n;
    while (s > p && s[-1] != '/') s--;
    return s;
}

/* Copy the tensors of one file (all but the components in `skip`) and its metadata. */
static int copy_file_tensors(sd_safetensors_writer *w, const sd_model_file *f, unsigned skip, conv_src **csp)
{
    static const sd_st_dtype prec[3] = { SD_ST_F32, SD_ST_F16, SD_ST_BF16 };
    const sd_safetensors *st = f->st;
    size_t n = sd_safetensors_count(st);
    conv_src *cs = calloc(n + 1, sizeof *cs);
    *csp = cs;
    if (!cs) return sd_err(SD_ENOMEM, "out of memory");
    int rc = SD_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (skip && (sd_model_tensor_component(&f->info, t->name) & skip)) continue;   /* replaced */
        if (a.save_precision >= 0 && sd_st_dtype_is_float(t->dtype) && t->dtype != prec[a.save_precision]) {
            cs[i].t = t;
            cs[i].to = prec[a.save_precision];
            rc = sd_safetensors_writer_add_fn(w, t->name, cs[i].to, t->ndim, t->shape, write_converted, &cs[i]);
        } else {
            rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL);
        }
    }
    /* metadata of the source (safetensors __metadata__, ckpt scalars such as global_step) */
    for (size_t i = 0; i < sd_safetensors_meta_count(st) && !rc; i++) {
        const char *k, *v;
        sd_safetensors_meta_at(st, i, &k, &v);
        rc = sd_safetensors_writer_set_meta(w, k, v);
    }
    return rc;
}

/* Each component is stored in the commonest floating dtype of its source file unless
 * --save_precision says otherwise. */
static void component_dtypes(const sd_model *m, sd_st_dtype dt[3])
{
    static const sd_st_dtype prec[3] = { SD_ST_F32, SD_ST_F16, SD_ST_BF16 };
    const sd_model_file *srcf[3] = { m->unet_src, m->te_src, m->vae_src };
    for (int c = 0; c < 3; c++) {
        dt[c] = SD_ST_F32;
        if (a.save_precision >= 0) {
            dt[c] = prec[a.save_precision];
            continue;
        }
        if (!srcf[c]) continue;
        size_t cnt[SD_ST_NDTYPES] = { 0 };
        for (size_t k = 0; k < sd_safetensors_count(srcf[c]->st); k++) {
            const sd_st_tensor *t = sd_safetensors_at(srcf[c]->st, k);
            if (sd_model_tensor_component(&srcf[c]->info, t->name) != (1u << c)) continue;
            if (t->dtype == SD_ST_F32 || t->dtype == SD_ST_F16 || t->dtype == SD_ST_BF16) cnt[t->dtype]++;
        }
        dt[c] = cnt[SD_ST_F16] > cnt[dt[c]] ? SD_ST_F16 : dt[c];
        dt[c] = cnt[SD_ST_BF16] > cnt[dt[c]] ? SD_ST_BF16 : dt[c];
    }
}

/* The whole model (through the loaders: --vae and --model_config apply) as a Diffusers folder. */
static int convert_diffusers(const char *src, const char *out)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    sd_model_opts o = model_opts(SD_MODEL_ALL);
    o.inspect = 1;
    sd_diffusers_write_opts wo;
    memset(&wo, 0, sizeof wo);
    wo.tokenizer = sd_clip_tokenizer_write_hf;
    int rc = sd_model_open(&m, src, &o);
    if (rc) goto out;
    if (m.warning[0]) sd_warn("%s", m.warning);
    component_dtypes(&m, wo.dtype);
    sd_model_close(&m);
    o = model_opts(SD_MODEL_ALL);
    if ((rc = sd_model_open(&m, src, &o)) || (rc = sd_model_set_inference(&m)) || (rc = sd_model_load(&m, SD_DEV_CPU)))
        goto out;
    rc = sd_model_write_diffusers(&m, out, &wo);
out:
    sd_model_close(&m);
    return rc ? fatal(rc) : 0;
}

static int convert(const char *src, const char *out)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    sd_model_file f;
    memset(&f, 0, sizeof f);
    sd_safetensors_writer *w = NULL;
    conv_src *cs = NULL;
    struct stat sb;
    int folder = !stat(src, &sb) && S_ISDIR(sb.st_mode);
    const char *format;
    int rc = sd_safetensors_writer_new(&w);
    if (rc) goto out;
    if (!folder && !a.vae) {
        /* one file, nothing replaced: a plain tensor-by-tensor conversion, any state dict (an SD
         * checkpoint with its EMA weights, an embedding, a LoRA .pt) */
        if ((rc = sd_model_file_open(src, &f))) goto out;
        format = sd_model_format_name(f.format);
        rc = copy_file_tensors(w, &f, 0, &cs);
    } else {
        /* Components that go through the loaders are written from the registry with ldm names:
         * all of a Diffusers folder, or the --vae replacement (the rest of a single file is copied
         * as it is, so EMA weights and other keys survive, as kohya's saves keep them). */
        sd_model_opts o = model_opts(SD_MODEL_ALL);
        o.inspect = 1;
        if ((rc = sd_model_open(&m, src, &o))) goto out;
        if (m.warning[0]) sd_warn("%s", m.warning);
        format = sd_model_format_name(m.format);
        unsigned via = folder ? m.present : SD_MODEL_VAE;
        sd_st_dtype dt[3];
        component_dtypes(&m, dt);
        sd_model_close(&m);
        sd_model_opts lo = model_opts(via);
        if ((rc = sd_model_open(&m, src, &lo)) || (rc = sd_model_set_inference(&m)) || (rc = sd_model_load(&m, SD_DEV_CPU)))
            goto out;
        for (int c = 0; c < 3 && !rc; c++)
            if (via & (1u << c)) rc = sd_model_add_to_writer(&m, 1u << c, w, dt[c]);
        if (rc) goto out;
        if (!folder) rc = copy_file_tensors(w, &m.files[0], via, &cs);
    }
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "sd_model_source", base_name(src));
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "sd_model_source_format", format);
    if (!rc && a.vae) rc = sd_safetensors_writer_set_meta(w, "sd_model_source_vae", base_name(a.vae));
    if (!rc) rc = sd_safetensors_writer_write(w, out);
out:
    sd_safetensors_writer_free(w);
    free(cs);
    sd_model_file_close(&f);
    sd_model_close(&m);
    return rc ? fatal(rc) : 0;
}

/* ---- merge (networks/merge_lora.py, sdxl_merge_lora.py with --sd_model) ------------------------- */

/* Round the f32 weights of a registry to f16/bf16 values (--precision: the reference merges into
 * weights cast to that dtype). */
static void round_params(sd_params *r, int prec)
{
    for (size_t i = 0; i < r->n; i++) {
        sd_tensor *t = &r->items[i]->value;
        if (t->dtype == SD_F32 && t->data) sd_round_half_n(t->data, (size_t)sd_tensor_numel(t), prec == 2);
    }
}

static int merge(const char *src, const char *out)
{
    static const sd_st_dtype prec[3] = { SD_ST_F32, SD_ST_F16, SD_ST_BF16 };
    sd_model m;
    memset(&m, 0, sizeof m);
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    int have_ctx = 0;
    sd_safetensors_writer *w = NULL;
    conv_src *cs = NULL;
    char *names = NULL, *ratios = NULL;
    struct stat sb;
    int folder = !stat(src, &sb) && S_ISDIR(sb.st_mode);
    /* the components that go through the loaders: UNet and text encoder(s) (merged), the VAE
     * where it is replaced or the source is a Diffusers folder; the rest of a single file is
     * copied as it is */
    unsigned via = folder ? SD_MODEL_ALL : SD_MODEL_UNET | SD_MODEL_TE | (a.vae ? SD_MODEL_VAE : 0);
    if (a.save_precision < 0) a.save_precision = a.precision;   /* the reference: save dtype = merge dtype */
    sd_model_opts o = model_opts(via);
    sd_lora_lbws lbws;
    int rc = sd_lora_lbws_parse(&lbws, (const char *const *)a.lbws.s, a.lbws.n);
    if (rc) return usage_error("%s", sd_errmsg());
    rc = sd_safetensors_writer_new(&w);
    /* every file readable before the (large) model is loaded */
    for (int i = 0; i < a.models.n && !rc; i++) {
        sd_safetensors *st = NULL;
        rc = sd_safetensors_open(a.models.s[i], &st);
        if (rc && !strstr(sd_errmsg(), a.models.s[i])) sd_err_prefix(rc, "%s", a.models.s[i]);
        sd_safetensors_close(st);
    }
    if (!rc) rc = sd_model_open(&m, src, &o);
    if (!rc && m.warning[0]) sd_warn("%s", m.warning);
    if (!rc) rc = sd_model_load(&m, SD_DEV_CPU);
    if (!rc && !(rc = sd_ctx_init(&ctx, SD_DEV_CPU, sd_threads_get(), 0))) have_ctx = 1;
    if (!rc && a.precision > 0) {
        round_params(&m.unet_params, a.precision);
        round_params(&m.te_params, a.precision);
    }
    size_t nl = 1, nr = 1;
    for (int i = 0; i < a.models.n; i++) nl += strlen(base_name(a.models.s[i])) + 2, nr += 32;
    if (!rc && (!(names = calloc(nl, 1)) || !(ratios = calloc(nr, 1)))) rc = sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < a.models.n && !rc; i++) {
        size_t nte = 0, nun = 0;
        double r = a.ratios.d[i];
        rc = sd_lora_merge_file_lbw(&ctx, &m, a.models.s[i], r, &lbws, i, &nte, &nun);
        if (rc) break;
        if (a.precision > 0) {
            round_params(&m.unet_params, a.precision);
            round_params(&m.te_params, a.precision);
        }
        sd_info("%s: merged %zu modules (%zu text encoder, %zu UNet) with ratio %g", a.models.s[i], nte + nun, nte,
                nun, r);
        snprintf(names + strlen(names), nl - strlen(names), "%s%s", i ? ", " : "", base_name(a.models.s[i]));
        snprintf(ratios + strlen(ratios), nr - strlen(ratios), "%s%.9g", i ? ", " : "", r);
    }
    if (rc) goto out;
    if ((rc = sd_model_add_to_writer(&m, via, w, prec[a.save_precision]))) goto out;
    if (!folder && (rc = copy_file_tensors(w, &m.files[0], via, &cs))) goto out;
    if (!a.no_metadata) {
        rc = sd_safetensors_writer_set_meta(w, "sd_merge_base", base_name(src));
        if (!rc) rc = sd_safetensors_writer_set_meta(w, "sd_merge_models", names);
        if (!rc) rc = sd_safetensors_writer_set_meta(w, "sd_merge_ratios", ratios);
    }
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    if (!rc) sd_info("saved %s", out);
out:
    sd_safetensors_writer_free(w);
    free(cs);
    free(names);
    free(ratios);
    sd_lora_lbws_free(&lbws);
    if (have_ctx) sd_ctx_free(&ctx);
    sd_model_close(&m);
    if (rc == SD_EUSAGE) return usage_error("%s", sd_errmsg());
    return rc ? fatal(rc) : 0;
}

/* ---- resize (networks/resize_lora.py) --------------------------------------------------------- */

/* The SVD of W = up.down (up [o,r], down [r,i]) from the factors: down^T = Q R (Householder,
 * k = min(i,r) columns), B = up.R^T [o,k], one-sided Jacobi on B's columns (B.V = U.S), so
 * W = (U.S).(Q.V)^T exactly; S sorted descending. On return b holds U.S [o,k] (column j = the
 * j-th singular value's column), v holds (Q.V)^T [k,i], s the k singular values. Double
 * throughout. */
static int lowrank_svd(const float *up, const float *down, int64_t o, int64_t r, int64_t i, double **bp,
                       double **vp, double *s, int64_t *kp)
{
    int64_t k = i < r ? i : r;
    double *qa = malloc(sizeof(double) * (size_t)(i * r)), *b = calloc((size_t)(o * k), sizeof(double));
    double *v = calloc((size_t)(k * k), sizeof(double)), *q = calloc((size_t)(i * k), sizeof(double));
    double *hv = malloc(sizeof(double) * (size_t)(i * k)), *tmp = malloc(sizeof(double) * (size_t)(k > 0 ? k : 1));
    int64_t *ord = malloc(sizeof(int64_t) * (size_t)(k > 0 ? k : 1));
    double *bs = NULL, *vs = NULL;
    if (!qa || !b || !v || !q || !hv || !tmp || !ord) goto oom;
    /* A = down^T [i,r] */
    for (int64_t x = 0; x < i; x++)
        for (int64_t c = 0; c < r; c++) qa[x * r + c] = down[c * i + x];
    /* Householder: for column j, reflector on rows j..i-1 stored in hv[.., j] */
    for (int64_t j = 0; j < k; j++) {
        double nrm = 0;
        for (int64_t x = j; x < i; x++) nrm += qa[x * r + j] * qa[x * r + j];
        nrm = sqrt(nrm);
        for (int64_t x = 0; x < i; x++) hv[x * k + j] = 0;
        if (nrm == 0) continue;
        double alpha = qa[j * r + j] > 0 ? -nrm : nrm;
        for (int64_t x = j; x < i; x++) hv[x * k + j] = qa[x * r + j];
        hv[j * k + j] -= alpha;
        double vn = 0;
        for (int64_t x = j; x < i; x++) vn += hv[x * k + j] * hv[x * k + j];
        if (vn == 0) continue;
        for (int64_t c = j; c < r; c++) {
            double d = 0;
            for (int64_t x = j; x < i; x++) d += hv[x * k + j] * qa[x * r + c];
            d = 2 * d / vn;
            for (int64_t x = j; x < i; x++) qa[x * r + c] -= d * hv[x * k + j];
        }
        for (int64_t x = j; x < i; x++) hv[x * k + j] /= sqrt(vn / 2);   /* now H = I - v v^T */
    }
    /* Q = H0 .. H(k-1) applied to the first k columns of the identity */
    for (int64_t j = 0; j < k; j++) q[j * k + j] = 1;
    for (int64_t j = k - 1; j >= 0; j--)
        for (int64_t c = 0; c < k; c++) {
            double d = 0;
            for (int64_t x = j; x < i; x++) d += hv[x * k + j] * q[x * k + c];
            for (int64_t x = j; x < i; x++) q[x * k + c] -= d * hv[x * k + j];
        }
    /* B = up . R^T, R = upper k x r of a */
    for (int64_t y = 0; y < o; y++)
        for (int64_t j = 0; j < k; j++) {
            double d = 0;
            for (int64_t c = j; c < r; c++) d += (double)up[y * r + c] * qa[j * r + c];
            b[y * k + j] = d;
        }
    for (int64_t j = 0; j < k; j++) v[j * k + j] = 1;
    /* one-sided Jacobi (Hestenes) */
    for (int sweep = 0; sweep < 60; sweep++) {
        int rotated = 0;
        for (int64_t p = 0; p < k - 1; p++)
            for (int64_t c = p + 1; c < k; c++) {
                double al = 0, be = 0, ga = 0;
                for (int64_t y = 0; y < o; y++) {
                    double u1 = b[y * k + p], u2 = b[y * k + c];
                    al += u1 * u1, be += u2 * u2, ga += u1 * u2;
                }
                if (ga == 0 || fabs(ga) <= 1e-15 * sqrt(al * be)) continue;
                rotated = 1;
                double zeta = (be - al) / (2 * ga);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                double cs = 1 / sqrt(1 + t * t), sn = cs * t;
                for (int64_t y = 0; y < o; y++) {
                    double u1 = b[y * k + p], u2 = b[y * k + c];
                    b[y * k + p] = cs * u1 - sn * u2, b[y * k + c] = sn * u1 + cs * u2;
                }
                for (int64_t y = 0; y < k; y++) {
                    double u1 = v[y * k + p], u2 = v[y * k + c];
                    v[y * k + p] = cs * u1 - sn * u2, v[y * k + c] = sn * u1 + cs * u2;
                }
            }
        if (!rotated) break;
    }
    for (int64_t j = 0; j < k; j++) {
        double d = 0;
        for (int64_t y = 0; y < o; y++) d += b[y * k + j] * b[y * k + j];
        tmp[j] = sqrt(d);
        ord[j] = j;
    }
    for (int64_t j = 1; j < k; j++)   /* insertion sort, descending */
        for (int64_t x = j; x > 0 && tmp[ord[x]] > tmp[ord[x - 1]]; x--) {
            int64_t t = ord[x];
            ord[x] = ord[x - 1], ord[x - 1] = t;
        }
    bs = malloc(sizeof(double) * (size_t)(o * k));
    vs = calloc((size_t)(k * i), sizeof(double));
    if (!bs || !vs) goto oom;
    for (int64_t j = 0; j < k; j++) {
        int64_t c = ord[j];
        s[j] = tmp[c];
        for (int64_t y = 0; y < o; y++) bs[y * k + j] = b[y * k + c];
        for (int64_t x = 0; x < i; x++) {   /* row j of (Q V)^T */
            double d = 0;
            for (int64_t z = 0; z < k; z++) d += q[x * k + z] * v[z * k + c];
            vs[j * i + x] = d;
        }
    }
    free(qa), free(b), free(v), free(q), free(hv), free(tmp), free(ord);
    *bp = bs, *vp = vs, *kp = k;
    return 0;
oom:
    free(qa), free(b), free(v), free(q), free(hv), free(tmp), free(ord), free(bs), free(vs);
    return sd_err(SD_ENOMEM, "out of memory");
}

/* resize_lora.py rank_resize: the new rank from the L = min(o,i) singular values of W (those past
 * the factors' k are 0). Returns the rank (index + 1), before the cap. */
static int64_t dynamic_rank(const double *s, int64_t k, int64_t L, int method, double param)
{
    int64_t idx = 0;
    if (method == 0) {   /* sv_ratio: count(S > S0/param) - 1 */
        double min_sv = s[0] / param;
        int64_t n = 0;
        for (int64_t j = 0; j < k; j++) n += s[j] > min_sv;
        if (0 > min_sv) n += L - k;
        idx = n - 1;
    } else {   /* sv_fro (1): cumsum(S^2)/sum vs param^2; sv_cumulative (2): cumsum(S)/sum vs param */
        double tot = 0, cum = 0, target = method == 1 ? param * param : param;
        for (int64_t j = 0; j < k; j++) tot += method == 1 ? s[j] * s[j] : s[j];
        idx = L;   /* searchsorted (left): the number of cumulative values < target */
        for (int64_t j = 0; j < L; j++) {
            if (j < k) cum += method == 1 ? s[j] * s[j] : s[j];
            if (cum / tot >= target) { idx = j; break; }
        }
    }
    if (idx > L - 1) idx = L - 1;
    if (idx < 0) idx = 0;
    return idx + 1;
}

/* Python's str(float) for the values written to metadata: the shortest round-trip form, ".0" for
 * integral values. */
static void py_float_str(double d, char *buf, size_t n)
{
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (!strpbrk(buf, ".eni")) snprintf(buf + strlen(buf), n - strlen(buf), ".0");
}

typedef struct rs_buf {
    float *f;
    struct rs_buf *next;
} rs_buf;

static float *rs_keep(rs_buf **list, size_t n)
{
    rs_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    if (!(b->f = malloc(sizeof(float) * (n ? n : 1)))) {
        free(b);
        return NULL;
    }
    b->next = *list;
    *list = b;
    return b->f;
}

static int resize_lora(const char *src, const char *out, int new_rank, int new_conv_rank)
{
    static const sd_st_dtype prec[3] = { SD_ST_F32, SD_ST_F16, SD_ST_BF16 };
    static const char *const methods[3] = { "sv_ratio", "sv_fro", "sv_cumulative" };
    sd_st_dtype sdt = prec[a.save_precision < 0 ? 0 : a.save_precision];
    sd_safetensors *st = NULL;
    sd_safetensors_writer *w = NULL;
    rs_buf *bufs = NULL;
    char *comment = NULL;
    int64_t max_old = 0, nmods = 0;
    double last_alpha = 0, fro_sum = 0, fro_sq = 0;
    int64_t nfro = 0;
    int rc = sd_safetensors_open(src, &st);
    if (rc) {
        if (!strstr(sd_errmsg(), src)) sd_err_prefix(rc, "%s", src);
        goto out;
    }
    if ((rc = sd_safetensors_writer_new(&w))) goto out;
    if (a.dynamic_method >= 0)
        sd_info("dynamically determining new alphas and dims based off %s: %g, max rank is %d",
                methods[a.dynamic_method], a.dynamic_param, new_rank);
    size_t nt = sd_safetensors_count(st);
    for (size_t ti = 0; ti < nt && !rc; ti++) {
        const sd_st_tensor *t = sd_safetensors_at(st, ti);
        const char *nm = t->name;
        size_t nl = strlen(nm);
        static const char SUF_D[] = ".lora_down.weight", SUF_U[] = ".lora_up.weight";
        char base[1024], upn[1100], aln[1100];
        int is_mod = 0;
        if (nl > sizeof SUF_D - 1 && !strcmp(nm + nl - (sizeof SUF_D - 1), SUF_D) && nl - (sizeof SUF_D - 1) < sizeof base) {
            memcpy(base, nm, nl - (sizeof SUF_D - 1));
            base[nl - (sizeof SUF_D - 1)] = 0;
            snprintf(upn, sizeof upn, "%s%s", base, SUF_U);
            snprintf(aln, sizeof aln, "%s.alpha", base);
            is_mod = sd_safetensors_find(st, upn) != NULL;
        }
        if (is_mod) {
            const sd_st_tensor *tu = sd_safetensors_find(st, upn), *ta = sd_safetensors_find(st, aln);
            int conv = t->ndim == 4;
            int64_t r = t->ndim >= 1 ? t->shape[0] : 0, o = tu->ndim >= 1 ? tu->shape[0] : 0;
            int64_t i = r ? t->numel / r : 0;
            if (!(t->ndim == 2 || t->ndim == 4) || tu->ndim != t->ndim || r < 1 || o < 1 || i < 1 ||
                tu->shape[1] != r || (conv && (tu->shape[2] != 1 || tu->shape[3] != 1)) || (ta && ta->numel != 1)) {
                char s1[64], s2[64];
                sd_st_shape_str(t->ndim, t->shape, s1, sizeof s1);
                sd_st_shape_str(tu->ndim, tu->shape, s2, sizeof s2);
                rc = sd_err(SD_EFORMAT, "%s: %s: lora_down %s and lora_up %s are not a LoRA pair (down [r,in] or "
                            "[r,in,k,k], up [out,r] or [out,r,1,1]; alpha one value)", src, base, s1, s2);
                break;
            }
            if (r > max_old) max_old = r;
            float *down = malloc(sizeof(float) * (size_t)(r * i)), *up = malloc(sizeof(float) * (size_t)(o * r));
            float alpha = 0;
            if (!down || !up) rc = sd_err(SD_ENOMEM, "out of memory");
            if (!rc) rc = sd_safetensors_read(st, t, SD_ST_F32, down, (size_t)(r * i));
            if (!rc) rc = sd_safetensors_read(st, tu, SD_ST_F32, up, (size_t)(o * r));
            if (!rc && ta) rc = sd_safetensors_read(st, ta, SD_ST_F32, &alpha, 1);
            double *bm = NULL, *vm = NULL, *s = NULL;
            int64_t k = 0, L = o < i ? o : i;
            if (!rc && !(s = calloc((size_t)(r + 1), sizeof(double)))) rc = sd_err(SD_ENOMEM, "out of memory");
            if (!rc) rc = lowrank_svd(up, down, o, r, i, &bm, &vm, s, &k);
            free(down), free(up);
            if (rc) {
                free(s);
                break;
            }
            int64_t cap = conv ? new_conv_rank : new_rank, nr = cap;
            if (a.dynamic_method >= 0) nr = dynamic_rank(s, k, L, a.dynamic_method, a.dynamic_param);
            if (s[0] <= 1e-6) nr = 1;   /* MIN_SV: a zero matrix gets rank 1 */
            else if (nr > cap) nr = cap;
            /* the reference's scale = alpha/old_rank (a float32 tensor, or 1.0 without alpha);
             * new_alpha = float(scale * new_rank) */
            double new_alpha = ta ? (double)((alpha / (float)r) * (float)nr) : (double)nr;
            float *nu = rs_keep(&bufs, (size_t)(o * nr)), *nd = rs_keep(&bufs, (size_t)(nr * i)),
                  *na = rs_keep(&bufs, 1);
            if (!nu || !nd || !na) rc = sd_err(SD_ENOMEM, "out of memory");
            double ssum = 0, srank = 0, sfro = 0, sredfro = 0;
            for (int64_t j = 0; j < k; j++) {
                ssum += s[j], sfro += s[j] * s[j];
                if (j < nr) srank += s[j], sredfro += s[j] * s[j];
            }
            if (!rc) {
                for (int64_t y = 0; y < o; y++)
                    for (int64_t j = 0; j < nr; j++) nu[y * nr + j] = j < k ? (float)bm[y * k + j] : 0.0f;
                for (int64_t j = 0; j < nr; j++)
                    for (int64_t x = 0; x < i; x++) nd[j * i + x] = j < k ? (float)vm[j * i + x] : 0.0f;
                *na = (float)new_alpha;
                int64_t sd_[4] = { nr, t->ndim == 4 ? t->shape[1] : i, t->ndim == 4 ? t->shape[2] : 0,
                                   t->ndim == 4 ? t->shape[3] : 0 };
                int64_t su[4] = { o, nr, 1, 1 };
                rc = sd_safetensors_writer_add_f32(w, nm, sdt, t->ndim, sd_, nd);
                if (!rc) rc = sd_safetensors_writer_add_f32(w, upn, sdt, tu->ndim, su, nu);
                if (!rc) rc = sd_safetensors_writer_add_f32(w, aln, sdt, 0, su, na);
            }
            if (!rc && a.verbose) {
                double fro = sfro > 0 ? sqrt(sredfro / sfro) : NAN;
                double srat = nr - 1 < k ? s[0] / s[nr - 1] : INFINITY;
                if (!isnan(fro)) fro_sum += fro, fro_sq += fro * fro, nfro++;
                char dyn[96] = "", al[40];
                py_float_str(new_alpha, al, sizeof al);
                if (a.dynamic_method >= 0) snprintf(dyn, sizeof dyn, ", dynamic | dim: %" PRId64 ", alpha: %s", nr, al);
                printf("%-75s | sum(S) retained: %.1f%%, fro retained: %.1f%%, max(S) ratio: %.1f%s\n", base,
                       100 * srank / ssum, 100 * fro, srat, dyn);
            }
            free(bm), free(vm), free(s);
            last_alpha = new_alpha;
            nmods++;
            continue;
        }
        /* lora_up / alpha of a module: written with their lora_down */
        if (nl > sizeof SUF_U - 1 && !strcmp(nm + nl - (sizeof SUF_U - 1), SUF_U) && nl - (sizeof SUF_U - 1) < sizeof base) {
            char dn[1100];
            snprintf(dn, sizeof dn, "%.*s%s", (int)(nl - (sizeof SUF_U - 1)), nm, SUF_D);
            if (sd_safetensors_find(st, dn)) continue;
        }
        if (nl > 6 && !strcmp(nm + nl - 6, ".alpha") && nl - 6 < sizeof base) {
            char dn[1100];
            snprintf(dn, sizeof dn, "%.*s%s", (int)(nl - 6), nm, SUF_D);
            snprintf(upn, sizeof upn, "%.*s%s", (int)(nl - 6), nm, SUF_U);
            if (sd_safetensors_find(st, dn) && sd_safetensors_find(st, upn)) continue;
        }
        /* everything else in the save dtype: the reference loads every tensor as float32 (integer
         * ones included) and stores every floating tensor in save_dtype */
        float *f = rs_keep(&bufs, (size_t)t->numel);
        if (!f) rc = sd_err(SD_ENOMEM, "out of memory");
        if (!rc) rc = sd_safetensors_read(st, t, SD_ST_F32, f, (size_t)t->numel);
        if (!rc) rc = sd_safetensors_writer_add_f32(w, nm, sdt, t->ndim, t->shape, f);
    }
    if (rc) goto out;
    if (!nmods) {
        rc = sd_err(SD_EFORMAT, "%s: no LoRA modules (<name>.lora_down.weight with <name>.lora_up.weight)", src);
        goto out;
    }
    if (a.verbose && nfro) {
        double m = fro_sum / (double)nfro, var = fro_sq / (double)nfro - m * m;
        printf("Average Frobenius norm retention: %.2f%% | std: %0.3f\n", 100 * m, sqrt(var > 0 ? var : 0));
    }
    /* metadata: the source's, in order, with the reference's updates */
    const char *oc = sd_safetensors_meta_get(st, "ss_training_comment");
    size_t cl = (oc ? strlen(oc) : 0) + 256;
    if (!(comment = malloc(cl))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    char dimbuf[32], albuf[40];
    if (a.dynamic_method < 0) {
        char conv[48] = "";
        if (new_rank != new_conv_rank) snprintf(conv, sizeof conv, " (conv: %d)", new_conv_rank);
        snprintf(comment, cl, "dimension is resized from %" PRId64 " to %d%s; %s", max_old, new_rank, conv, oc ? oc : "");
        snprintf(dimbuf, sizeof dimbuf, "%d", new_rank);
        py_float_str(last_alpha, albuf, sizeof albuf);
    } else {
        char pb[40];
        py_float_str(a.dynamic_param, pb, sizeof pb);
        snprintf(comment, cl, "Dynamic resize with %s: %s from %" PRId64 "; %s", methods[a.dynamic_method], pb,
                 max_old, oc ? oc : "");
        snprintf(dimbuf, sizeof dimbuf, "Dynamic");
        snprintf(albuf, sizeof albuf, "Dynamic");
    }
    size_t nm_ = sd_safetensors_meta_count(st);
    for (size_t j = 0; j < nm_ && !rc; j++) {
        const char *key, *val;
        sd_safetensors_meta_at(st, j, &key, &val);
        if (!strcmp(key, "ss_training_comment")) val = comment;
        else if (!strcmp(key, "ss_network_dim")) val = dimbuf;
        else if (!strcmp(key, "ss_network_alpha")) val = albuf;
        rc = sd_safetensors_writer_set_meta(w, key, val);
    }
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "ss_training_comment", comment);
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "ss_network_dim", dimbuf);
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "ss_network_alpha", albuf);
    if (!rc) rc = sd_lora_writer_add_hashes(w, out);
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    if (!rc) sd_info("resized %" PRId64 " modules from rank %" PRId64 "; saved %s", nmods, max_old, out);
out:
    free(comment);
    sd_safetensors_writer_free(w);
    sd_safetensors_close(st);
    while (bufs) {
        rs_buf *n = bufs->next;
        free(bufs->f);
        free(bufs);
        bufs = n;
    }
    return rc ? fatal(rc) : 0;
}

/* ---- extract (networks/extract_lora_from_models.py) ------------------------------------------- */

/* The family a file's weights show: the detector's, or (shapes only a --model_config describes)
 * SDXL when it has a second text encoder, else the configuration's. */
static sd_family file_family(const sd_model *m)
{
    if (m->detected) return m->info.family;
    return m->info.text_encoder2 != SD_LAYOUT_NONE ? SD_FAMILY_SDXL : m->cfg.family;
}

static int extract_lora(const char *org_path, const char *tuned_path, const char *out)
{
    static const sd_st_dtype prec[3] = { SD_ST_F32, SD_ST_F16, SD_ST_BF16 };
    sd_model org, tuned;
    memset(&org, 0, sizeof org);
    memset(&tuned, 0, sizeof tuned);
    sd_lora_extraction x;
    memset(&x, 0, sizeof x);
    sd_safetensors_writer *w = NULL;
    float *alphas = NULL;
    sd_kv meta;
    sd_kv_init(&meta);
    sd_model_opts o = model_opts(SD_MODEL_UNET | SD_MODEL_TE);
    int rc = sd_model_open(&org, org_path, &o);
    if (!rc) rc = sd_model_open(&tuned, tuned_path, &o);
    if (rc) goto out;
    sd_family fo = file_family(&org), ft = file_family(&tuned);
    if (fo != ft || org.cfg.family != tuned.cfg.family) {
        rc = sd_err(SD_EFORMAT, "%s is %s, %s is %s: the models must be of the same family", org_path,
                    sd_family_name(fo), tuned_path, sd_family_name(ft));
        goto out;
    }
    sd_family fam = org.cfg.family;
    if ((a.sdxl && fam != SD_FAMILY_SDXL) || (a.v2 && fam != SD_FAMILY_SD2)) {
        rc = sd_err(SD_EFORMAT, "%s: the model is %s, not %s (%s)", org_path, sd_family_name(fam),
                    a.sdxl ? "SDXL" : "SD2.x", a.sdxl ? "--sdxl" : "--v2");
        goto out;
    }
    /* (after the checks: a "--v2 ignored" note would precede their error) */
    if (org.warning[0]) sd_warn("%s", org.warning);
    if (tuned.warning[0]) sd_warn("%s", tuned.warning);
    /* the weights in their stored dtype (the same numbers, as the reference's float32 models hold them) */
    if ((rc = sd_model_set_inference(&org)) || (rc = sd_model_load(&org, SD_DEV_CPU))) goto out;
    sd_model_release_source(&org);
    if ((rc = sd_model_set_inference(&tuned)) || (rc = sd_model_load(&tuned, SD_DEV_CPU))) goto out;
    sd_model_release_source(&tuned);
    sd_lora_extract_opts eo = { .dim = a.dim, .conv_dim = a.conv_dim > 0 ? a.conv_dim : 0,
                                .clamp_quantile = a.clamp_quantile, .min_diff = a.min_diff,
                                .load_prec = a.load_precision > 0 ? a.load_precision : 0 };
    if ((rc = sd_lora_extract(&org, &tuned, &eo, &x))) goto out;
    if (x.te_candidates && x.te_different)
        sd_info("text encoder is different: max |diff| %g > --min_diff %g", x.te_max_diff, a.min_diff);
    else if (x.te_candidates)
        sd_warn("text encoder is the same (max |diff| %g <= --min_diff %g): extracting the UNet only", x.te_max_diff,
                a.min_diff);
    /* the file: weights in --save_precision (default float32), alpha = rank in the same dtype */
    sd_st_dtype sdt = a.save_precision >= 0 ? prec[a.save_precision] : SD_ST_F32;
    if ((rc = sd_safetensors_writer_new(&w))) goto out;
    if (!(alphas = calloc(x.n + 1, sizeof *alphas))) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < x.n && !rc; i++) {
        const sd_lora_extracted *e = &x.mods[i];
        char nm[300];
        alphas[i] = (float)e->rank;
        snprintf(nm, sizeof nm, "%s.lora_down.weight", e->name);
        rc = sd_safetensors_writer_add_f32(w, nm, sdt, e->ndim, e->down_shape, e->down);
        snprintf(nm, sizeof nm, "%s.lora_up.weight", e->name);
        if (!rc) rc = sd_safetensors_writer_add_f32(w, nm, sdt, e->ndim, e->up_shape, e->up);
        snprintf(nm, sizeof nm, "%s.alpha", e->name);
        if (!rc) rc = sd_safetensors_writer_add_f32(w, nm, sdt, 0, NULL, &alphas[i]);
    }
    if (rc) goto out;
    /* metadata in the reference's order: the minimum ss_* keys, modelspec.*, then the sshs_* hashes */
    int v2 = fam == SD_FAMILY_SD2, sdxl = fam == SD_FAMILY_SDXL;
    int vparam = a.v_param ? 1 : v2;     /* --v_parameterization defaults to --v2 */
    char args_json[96] = "{}";
    if (a.conv_dim > 0)
        snprintf(args_json, sizeof args_json, "{\"conv_dim\": \"%d\", \"conv_alpha\": \"%d.0\"}", a.conv_dim, a.conv_dim);
    rc = sd_kv_set(&meta, "ss_v2", v2 ? "True" : "False");
    if (!rc) rc = sd_kv_setf(&meta, "ss_base_model_version", "%s", sdxl ? "sdxl_base_v1-0" : v2 ? (vparam ? "sd_v2_v" : "sd_v2")
                                                                                       : (vparam ? "sd_v1_v" : "sd_v1"));
    if (!rc) rc = sd_kv_set(&meta, "ss_network_module", "networks.lora");
    if (!rc) rc = sd_kv_setf(&meta, "ss_network_dim", "%d", a.dim);
    if (!rc) rc = sd_kv_setf(&meta, "ss_network_alpha", "%d.0", a.dim);
    if (!rc) rc = sd_kv_set(&meta, "ss_network_args", args_json);
    if (!rc && !a.no_metadata) {
        char title[512];
        const char *bn = base_name(out), *dot = strrchr(bn, '.');
        snprintf(title, sizeof title, "%.*s", (int)(dot && dot != bn ? dot - bn : (ptrdiff_t)strlen(bn)), bn);
        const char *e = getenv("SOURCE_DATE_EPOCH");
        sd_modelspec_args ms;
        memset(&ms, 0, sizeof ms);
        ms.v2 = v2;
        ms.v_parameterization = vparam;
        ms.sdxl = sdxl;
        ms.lora = 1;
        ms.timestamp = e && *e ? strtod(e, NULL) : (double)time(NULL);
        ms.title = title;
        ms.clip_skip = -1;
        ms.implementation_version = PROG "/" SD_VERSION;
        rc = sd_modelspec_metadata(&ms, &meta);
    }
    for (size_t i = 0; i < meta.n && !rc; i++) rc = sd_safetensors_writer_set_meta(w, meta.keys[i], meta.vals[i]);
    if (!rc) rc = sd_lora_writer_add_hashes(w, out);
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    if (!rc)
        sd_info("extracted %zu modules (%zu text encoder, %zu UNet) at rank %d%s; saved %s", x.n, x.n_te, x.n - x.n_te,
                a.dim, a.conv_dim > 0 ? " (3x3 convs: --conv_dim)" : "", out);
out:
    sd_kv_free(&meta);
    free(alphas);
    sd_safetensors_writer_free(w);
    sd_lora_extraction_free(&x);
    sd_model_close(&tuned);
    sd_model_close(&org);
    return rc ? fatal(rc) : 0;
}

/* ---- LoRA into LoRA (merge_lora.py / sdxl_merge_lora.py without --sd_model, svd_merge_lora.py) ---- */

static int combine_loras(int svd, const char *out, int seed_given)
{
    sd_lora_combine_opts co;
    memset(&co, 0, sizeof co);
    co.mode = svd ? SD_LORA_COMBINE_SVD : a.concat ? SD_LORA_COMBINE_CONCAT : SD_LORA_COMBINE_SUM;
    co.precision = a.precision;
    co.save_precision = a.save_precision;
    co.shuffle = a.shuffle;
    co.new_rank = a.new_rank;
    co.new_conv_rank = a.new_conv_rank > 0 ? a.new_conv_rank : a.new_rank;
    co.no_metadata = a.no_metadata;
    const char *e = getenv("SOURCE_DATE_EPOCH");
    co.timestamp = e && *e ? strtod(e, NULL) : (double)time(NULL);
    co.implementation_version = PROG "/" SD_VERSION;
    if (a.shuffle) {
        if (seed_given) co.seed = (uint64_t)a.seed;
        else {
            uint32_t r = 0;
            if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)time(NULL);
            co.seed = r;
            sd_info("--shuffle: seed %" PRIu64 " (give --seed to repeat)", co.seed);
        }
    }
    sd_lora_lbws lbws;
    int rc = sd_lora_lbws_parse(&lbws, (const char *const *)a.lbws.s, a.lbws.n);
    if (rc) return usage_error("%s", sd_errmsg());
    co.lbws = &lbws;
    sd_lora_combine_result res;
    rc = sd_lora_combine((const char *const *)a.models.s, a.ratios.d, a.models.n, out, &co, &res);
    sd_lora_lbws_free(&lbws);
    if (rc == SD_EUSAGE) return usage_error("%s", sd_errmsg());
    if (rc) return fatal(rc);
    if (res.v2_warning)
        sd_warn("cannot determine whether the LoRA is for v-prediction: its modelspec metadata says v-prediction "
                "(ss_v2 is True)");
    char nr[64] = "";
    if (svd) snprintf(nr, sizeof nr, " (--new_rank %d, --new_conv_rank %d)", co.new_rank, co.new_conv_rank);
    sd_info("%s %d file%s: %zu modules (%zu text encoder, %zu UNet), %s, rank up to %d%s; saved %s",
            svd ? "svd-merged" : a.concat ? "concatenated" : "merged", a.models.n, a.models.n == 1 ? "" : "s",
            res.n_modules, res.n_te, res.n_modules - res.n_te, res.sdxl ? "SDXL" : "SD1/SD2", res.max_rank, nr, out);
    return 0;
}

/* ---- merge-models (tools/merge_models.py) ------------------------------------------------------ */

static void merge_note(void *ctx, int kind, const char *key, const char *model, double ratio)
{
    (void)ctx;
    if (kind == SD_CKPT_NOTE_SKIPPED) {
        if (a.show_skipped) sd_info("%s: skip: %s (not in the first model)", model, key);
    } else {
        sd_warn("%s: key %s missing: the first model's value takes its ratio %g", model, key, ratio);
    }
}

static int merge_models(const char *out)
{
    sd_ckpt_merge_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.precision = a.precision;
    mo.save_precision = a.saving_precision >= 0 ? a.saving_precision : a.save_precision >= 0 ? a.save_precision : 0;
    mo.unet_only = a.unet_only;
    mo.note = merge_note;
    sd_ckpt_merge_result res;
    int rc = sd_ckpt_merge((const char *const *)a.models.s, a.ratios.n ? a.ratios.d : NULL, a.models.n, out, &mo, &res);
    if (rc) return fatal(rc);
    sd_info("merged %d models: %zu tensors (%zu from every model, %zu taking the first model's value%s); saved %s",
            a.models.n, res.n_keys, res.n_averaged, res.n_first_only, a.unet_only ? ", --unet_only" : "", out);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    sd_log_init(PROG);
    a.save_precision = -1;
    a.tile_overlap = -1;
    a.clip_skip = -1;
    a.new_conv_rank = -1;
    a.dynamic_method = -1;
    a.dynamic_param = NAN;
    a.conv_dim = -1;
    a.load_precision = -1;
    a.seed = -1;
    a.saving_precision = -1;
    a.unit = -1;
    sd_opts o;
    if (sd_opts_init(&o, PROG, table) < 0) return sd_fatal(1);
    o.flags = SD_OPTS_CONFIG;
    o.usage = "info MODEL... | convert MODEL -o OUT.safetensors|OUTDIR [--to diffusers] | run clip|vae-encode|vae-decode|unet --model MODEL "
              "[OPTIONS] -o OUT.npy | merge [--sd_model MODEL] --models LORA... --ratios R... --save_to OUT.safetensors [--concat] | svd-merge --models LORA... --ratios R... --save_to OUT.safetensors --new_rank N [--lbws LIST...] | merge-models --models MODEL... [--ratios R...] -o OUT.safetensors | resize --model LORA --save_to OUT.safetensors --new_rank N | extract --model_org MODEL --model_tuned MODEL --save_to OUT.safetensors [--dim N] | extract-dylora --model DYLORA --save_to OUT.safetensors --unit N";
    o.description =
        "Inspects, converts and runs SD1.x/SD2.x/SDXL checkpoints (single-file .safetensors, legacy .ckpt, Diffusers "
        "folders).\n"
        "  info      family, layout, parameters per component, dtypes, metadata, A1111 and sshs_* hashes\n"
        "  convert   ckpt / Diffusers folder / safetensors -> one safetensors file with ldm names, or (--to diffusers) "
        "a Diffusers folder\n"
        "  run       one component on .npy arrays: clip (--tokens or --prompt), vae-encode, vae-decode, unet\n"
        "  merge     LoRA files merged into the UNet and text encoder(s) of a checkpoint (merge_lora.py, "
        "sdxl_merge_lora.py); without --sd_model: LoRA files merged into one LoRA (--concat: ranks concatenated)\n"
        "  svd-merge LoRA files merged into one LoRA of --new_rank by SVD of the summed products (svd_merge_lora.py)\n"
        "  merge-models  checkpoints averaged key by key with --ratios (tools/merge_models.py)\n"
        "  resize    a LoRA file reduced to a lower rank by SVD (resize_lora.py)\n"
        "  extract   a LoRA approximating tuned - original by SVD (extract_lora_from_models.py)\n"
        "  extract-dylora  a DyLoRA file cut into LoRA files of rank unit, 2*unit, ... (extract_lora_from_dylora.py)";
    o.epilog = "Exit status: 0 success, 1 fatal error, 2 usage error.\nSee sd-model(1).";
    int ex = sd_cmdline_main(&o, argc, argv);
    if (ex >= 0) {
        sd_opts_free(&o);
        return ex;
    }
    int rc = 0;
    if (o.npos < 1) {
        rc = usage_error("missing subcommand (info, convert, run, merge, svd-merge, merge-models, resize, extract or extract-dylora)");
        goto done;
    }
    const char *cmd = o.pos[0];
    if (sd_threads_init(a.threads) < 0) {
        rc = sd_fatal(1);
        goto done;
    }
    if (!strcmp(cmd, "info")) {
        if (o.npos < 2 && !a.model) {
            rc = usage_error("info: name a model (argument or --model)");
            goto done;
        }
        if (a.model) rc = info_one(a.model);
        for (int i = 1; i < o.npos && !rc; i++) rc = info_one(o.pos[i]);
    } else if (!strcmp(cmd, "convert")) {
        const char *src = a.model, *out = a.output;
        int k = 1;
        if (!src && k < o.npos) src = o.pos[k++];
        if (!out && k < o.npos) out = o.pos[k++];
        if (!src || !out || k < o.npos) {
            rc = usage_error(!src || !out ? "convert: name the source and the output (-o OUT.safetensors)"
                                          : "convert: too many arguments");
            goto done;
        }
        struct stat sb;
        if (a.to == 1) {
            rc = convert_diffusers(src, out);
            goto done;
        }
        if (!stat(out, &sb) && S_ISDIR(sb.st_mode)) {
            rc = usage_error("convert: %s is a directory (the output is one .safetensors file; --to diffusers "
                             "writes a folder)", out);
            goto done;
        }
        rc = convert(src, out);
    } else if (!strcmp(cmd, "run")) {
        if (o.npos != 2) {
            rc = usage_error(o.npos < 2 ? "run: name a component (clip, vae-encode, vae-decode or unet)"
                                        : "run: too many arguments");
            goto done;
        }
        const char *comp = o.pos[1];
        if (!a.model) {
            rc = usage_error("run %s: --model is required", comp);
            goto done;
        }
        if (!a.output) {
            rc = usage_error("run %s: --output FILE.npy is required", comp);
            goto done;
        }
        if (!strcmp(comp, "clip") || !strcmp(comp, "text-encoder")) rc = run_clip();
        else if (!strcmp(comp, "vae-encode")) rc = run_vae(0);
        else if (!strcmp(comp, "vae-decode")) rc = run_vae(1);
        else if (!strcmp(comp, "unet")) rc = run_unet();
        else rc = usage_error("run: unknown component '%s' (clip, vae-encode, vae-decode or unet)", comp);
    } else if (!strcmp(cmd, "merge")) {
        const char *src = a.sd_model ? a.sd_model : a.model, *out = a.save_to ? a.save_to : a.output;
        size_t ol = out ? strlen(out) : 0;
        struct stat sb;
        if (o.npos > 1) rc = usage_error("merge: unexpected argument '%s' (name the files with --sd_model, --models, "
                                         "--save_to)", o.pos[1]);
        else if (!a.models.n) rc = usage_error("merge: --models: name at least one LoRA file");
        else if (a.ratios.n != a.models.n)
            rc = usage_error("merge: --ratios: %d values for %d --models file%s", a.ratios.n, a.models.n,
                             a.models.n == 1 ? "" : "s");
        else if (!out) rc = usage_error("merge: --save_to OUT.safetensors is required");
        else if (ol < 12 || strcmp(out + ol - 12, ".safetensors"))
            rc = usage_error("merge: --save_to %s: only .safetensors output is written (not .ckpt)", out);
        else if (!stat(out, &sb) && S_ISDIR(sb.st_mode))
            rc = usage_error("merge: --save_to %s is a directory", out);
        else if (a.seed >= 0 && !a.shuffle)
            rc = usage_error("merge: --seed goes with --shuffle");
        else if (a.lbws.n && a.lbws.n != a.models.n)
            rc = usage_error("merge: --lbws: %d lists for %d --models file%s", a.lbws.n, a.models.n,
                             a.models.n == 1 ? "" : "s");
        if (rc) goto done;
        if (!src) {
            rc = combine_loras(0, out, a.seed >= 0);
            goto done;
        }
        if (a.concat || a.shuffle) sd_warn("merge: --concat/--shuffle only apply to merging LoRA files into one LoRA; ignored");
        rc = merge(src, out);
    } else if (!strcmp(cmd, "svd-merge") || !strcmp(cmd, "svd_merge")) {
        const char *out = a.save_to ? a.save_to : a.output;
        size_t ol = out ? strlen(out) : 0;
        struct stat sb;
        if (o.npos > 1) rc = usage_error("svd-merge: unexpected argument '%s' (name the files with --models and "
                                         "--save_to)", o.pos[1]);
        else if (a.sd_model || a.model)
            rc = usage_error("svd-merge: merges LoRA files into one LoRA (no --sd_model; use merge for that)");
        else if (!a.models.n) rc = usage_error("svd-merge: --models: name at least one LoRA file");
        else if (a.ratios.n != a.models.n)
            rc = usage_error("svd-merge: --ratios: %d values for %d --models file%s", a.ratios.n, a.models.n,
                             a.models.n == 1 ? "" : "s");
        else if (!out) rc = usage_error("svd-merge: --save_to OUT.safetensors is required");
        else if (ol < 12 || strcmp(out + ol - 12, ".safetensors"))
            rc = usage_error("svd-merge: --save_to %s: only .safetensors output is written (not .ckpt/.pt)", out);
        else if (!stat(out, &sb) && S_ISDIR(sb.st_mode)) rc = usage_error("svd-merge: --save_to %s is a directory", out);
        else if (a.concat || a.shuffle || a.seed >= 0)
            rc = usage_error("svd-merge: --concat, --shuffle and --seed are merge options");
        else if (a.lbws.n && a.lbws.n != a.models.n)
            rc = usage_error("svd-merge: --lbws: %d lists for %d --models file%s", a.lbws.n, a.models.n,
                             a.models.n == 1 ? "" : "s");
        if (rc) goto done;
        if (sd_opts_source(&o, "device") == SD_SRC_CMDLINE || sd_opts_source(&o, "device") == SD_SRC_CONFIG)
            sd_info("--device: no effect: the merge and the SVD run on the CPU");
        rc = combine_loras(1, out, 0);
    } else if (!strcmp(cmd, "merge-models") || !strcmp(cmd, "merge_models")) {
        const char *out0 = a.output ? a.output : a.save_to;
        char *out = NULL;
        struct stat sb;
        if (o.npos > 1) rc = usage_error("merge-models: unexpected argument '%s' (name the files with --models and "
                                         "--output)", o.pos[1]);
        else if (a.model || a.sd_model) rc = usage_error("merge-models: name the models with --models");
        else if (a.models.n < 1) rc = usage_error("merge-models: --models: name the models to merge");
        else if (a.ratios.n && a.ratios.n != a.models.n)
            rc = usage_error("merge-models: --ratios: %d values for %d --models file%s", a.ratios.n, a.models.n,
                             a.models.n == 1 ? "" : "s");
        else if (!out0) rc = usage_error("merge-models: --output OUT.safetensors is required");
        else if (a.saving_precision >= 0 && a.save_precision >= 0 && a.saving_precision != a.save_precision)
            rc = usage_error("merge-models: --saving_precision and --save_precision disagree");
        if (rc) goto done;
        for (int i = 0; i < a.models.n; i++) {
            size_t l = strlen(a.models.s[i]);
            if (l < 11 || strcmp(a.models.s[i] + l - 11, "safetensors")) {
                rc = fatal(sd_err(SD_EFORMAT, "%s: not a .safetensors file (merge-models reads safetensors only, as "
                                  "merge_models.py does)", a.models.s[i]));
                goto done;
            }
        }
        /* the reference appends .safetensors to an output without it */
        size_t ol = strlen(out0);
        if (!(out = malloc(ol + 13))) {
            rc = fatal(sd_err(SD_ENOMEM, "out of memory"));
            goto done;
        }
        snprintf(out, ol + 13, "%s%s", out0, ol >= 12 && !strcmp(out0 + ol - 12, ".safetensors") ? "" : ".safetensors");
        if (!stat(out, &sb) && S_ISDIR(sb.st_mode)) rc = usage_error("merge-models: --output %s is a directory", out);
        if (!rc && (sd_opts_source(&o, "device") == SD_SRC_CMDLINE || sd_opts_source(&o, "device") == SD_SRC_CONFIG))
            sd_info("--device: no effect: the models are merged on the CPU");
        if (!rc) rc = merge_models(out);
        free(out);
    } else if (!strcmp(cmd, "resize")) {
        const char *src = a.model, *out = a.save_to ? a.save_to : a.output;
        size_t ol = out ? strlen(out) : 0;
        struct stat sb;
        if (!src && o.npos > 1) src = o.pos[1];
        if (o.npos > (a.model ? 1 : 2))
            rc = usage_error("resize: unexpected argument '%s' (name the files with --model and --save_to)",
                             o.pos[a.model ? 1 : 2]);
        else if (!src) rc = usage_error("resize: --model LORA.safetensors is required");
        else if (!out) rc = usage_error("resize: --save_to OUT.safetensors is required");
        else if (ol < 12 || strcmp(out + ol - 12, ".safetensors"))
            rc = usage_error("resize: --save_to %s: only .safetensors output is written (not .ckpt/.pt)", out);
        else if (!stat(out, &sb) && S_ISDIR(sb.st_mode)) rc = usage_error("resize: --save_to %s is a directory", out);
        else if (a.dynamic_method >= 0 && (isnan(a.dynamic_param) || a.dynamic_param == 0))
            rc = usage_error("resize: --dynamic_method %s needs a non-zero --dynamic_param",
                             a.dynamic_method == 0 ? "sv_ratio" : a.dynamic_method == 1 ? "sv_fro" : "sv_cumulative");
        else if (a.dynamic_method < 0 && !isnan(a.dynamic_param))
            rc = usage_error("resize: --dynamic_param goes with --dynamic_method");
        if (rc) goto done;
        if (sd_opts_source(&o, "device") == SD_SRC_CMDLINE || sd_opts_source(&o, "device") == SD_SRC_CONFIG)
            sd_info("--device: no effect: the resize runs on the CPU");
        if (sd_opts_source(&o, "svd_lowrank_niter") == SD_SRC_CMDLINE)
            sd_info("--svd_lowrank_niter: no effect: the SVD here is always exact");
        rc = resize_lora(src, out, a.new_rank, a.new_conv_rank > 0 ? a.new_conv_rank : a.new_rank);
    } else if (!strcmp(cmd, "extract")) {
        const char *out = a.save_to ? a.save_to : a.output;
        size_t ol = out ? strlen(out) : 0;
        struct stat sb;
        if (o.npos > 1) rc = usage_error("extract: unexpected argument '%s' (name the files with --model_org, "
                                         "--model_tuned and --save_to)", o.pos[1]);
        else if (!a.model_org) rc = usage_error("extract: --model_org MODEL is required");
        else if (!a.model_tuned) rc = usage_error("extract: --model_tuned MODEL is required");
        else if (!out) rc = usage_error("extract: --save_to OUT.safetensors is required");
        else if (ol < 12 || strcmp(out + ol - 12, ".safetensors"))
            rc = usage_error("extract: --save_to %s: only .safetensors output is written (not .ckpt/.pt)", out);
        else if (!stat(out, &sb) && S_ISDIR(sb.st_mode)) rc = usage_error("extract: --save_to %s is a directory", out);
        else if (a.v2 && a.sdxl) rc = usage_error("extract: --v2 and --sdxl cannot be given together");
        else if (a.model) rc = usage_error("extract: name the models with --model_org and --model_tuned (not --model)");
        if (rc) goto done;
        static const char *const noop[] = { "device", "load_original_model_to", "load_tuned_model_to" };
        for (int i = 0; i < 3; i++)
            if (sd_opts_source(&o, noop[i]) == SD_SRC_CMDLINE || sd_opts_source(&o, noop[i]) == SD_SRC_CONFIG)
                sd_info("--%s: no effect: the models are loaded and the SVD runs on the CPU", noop[i]);
        rc = extract_lora(a.model_org, a.model_tuned, out);
    } else if (!strcmp(cmd, "extract-dylora") || !strcmp(cmd, "extract_dylora")) {
        const char *src = a.model, *out = a.save_to ? a.save_to : a.output;
        size_t ol = out ? strlen(out) : 0;
        if (!src && o.npos > 1) src = o.pos[1];
        if (o.npos > (a.model ? 1 : 2))
            rc = usage_error("extract-dylora: unexpected argument '%s' (name the files with --model and --save_to)",
                             o.pos[a.model ? 1 : 2]);
        else if (!src) rc = usage_error("extract-dylora: --model DYLORA.safetensors is required");
        else if (!out) rc = usage_error("extract-dylora: --save_to OUT.safetensors is required");
        else if (ol < 12 || strcmp(out + ol - 12, ".safetensors"))
            rc = usage_error("extract-dylora: --save_to %s: only .safetensors output is written (not .ckpt/.pt)", out);
        else if (a.unit < 1) rc = usage_error("extract-dylora: --unit N is required");
        if (rc) goto done;
        int nf = 0;
        rc = sd_dylora_split(src, out, a.unit, &nf);
        if (rc) rc = fatal(rc);   /* the message names the file */
        else if (!nf) {
            sd_warn("%s: its largest rank is not above --unit %d: no file written", src, a.unit);
        } else {
            sd_info("%s: %d files written (ranks %d to %d)", src, nf, a.unit, nf * a.unit);
        }
    } else {
        rc = usage_error("unknown subcommand '%s' (info, convert, run, merge, svd-merge, merge-models, resize, "
                         "extract or extract-dylora)", cmd);
    }
done:
    sd_opts_free(&o);
    return rc;
}
