/* sd-sample: text-to-image from an SD1.x/SD2.x/SDXL checkpoint with LoRA networks (sd-sample(1)).
 *
 *   sd-sample --model M [--vae V] [--network_weights L.safetensors ... --network_mul X ...]
 *             (--prompt TEXT | --from_file FILE) [--negative_prompt T] [--W N --H N --steps N
 *             --scale X --seed N --sampler NAME --batch_size N --images_per_prompt N --clip_skip N]
 *             [--max_token_length N --original_width N ... (SDXL)] --outdir DIR
 *
 * The generation itself is lib/diffusion/sample_images.c (shared with sd-train's samples); this
 * file parses options, loads the model and the networks, plans seeds and names, and writes. */
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/progress.h"
#include "base/threads.h"
#include "diffusion/prompt_file.h"
#include "diffusion/sample_images.h"
#include "diffusion/samplers.h"
#include "io/cmdline.h"
#include "io/safetensors.h"
#include "models/sd_model.h"
#include "tensor/device.h"
#include "text/clip_tokenizer.h"
#include "train/lora_file.h"
#include "train/lora_merge.h"
#include "train/lora_network.h"
#include "train/oft_network.h"
#include "train/lycoris.h"

#define PROG "sd-sample"

static struct {
    const char *model, *vae, *model_config, *controlnet;
    int v2, v_param;
    sd_opt_list network_weights, network_mul, network_module, ti;
    const char *prompt, *from_file, *negative_prompt;
    int W, H, steps;
    double scale;
    int64_t seed;
    const char *sampler;
    int batch_size, images_per_prompt, clip_skip, max_token_length;
    int orig_w, orig_h, orig_w_neg, orig_h_neg, crop_top, crop_left;
    const char *outdir;
    int sequential_file_name, no_metadata;
    int vae_tiling, vae_tile_size;
    int threads;
    const char *device;
    int dev_index;   /* from --device: SD_DEVICE_CPU or a CUDA ordinal */
} a;

static const sd_opt table[] = {
    {.name = "model", .short_name = 'm', .alias = "ckpt", .type = SD_OPT_STRING, .dest = &a.model, .metavar = "MODEL",
     .group = "Model", .help = "checkpoint: .safetensors, legacy .ckpt, or a Diffusers folder (required)"},
    {.name = "vae", .type = SD_OPT_STRING, .dest = &a.vae, .metavar = "FILE", .group = "Model",
     .help = "replacement VAE: full checkpoint, ldm VAE-only file, Diffusers VAE file or folder"},
    {.name = "model_config", .type = SD_OPT_STRING, .dest = &a.model_config, .metavar = "FILE", .group = "Model",
     .help = "JSON/TOML model description for shapes other than SD1.x/SD2.x (see sd-model(1))"},
    {.name = "v2", .type = SD_OPT_FLAG, .dest = &a.v2, .def = "false", .group = "Model",
     .help = "SD2.x model (only needed where the weights cannot tell)"},
    {.name = "v_parameterization", .type = SD_OPT_FLAG, .dest = &a.v_param, .def = "false", .group = "Model",
     .help = "v-prediction model (SD2.x 768-v)"},
    {.name = "controlnet", .type = SD_OPT_STRING, .dest = &a.controlnet, .metavar = "FILE",
     .help = "a ControlNet (sd-train --method controlnet's file: ldm names, or Diffusers names; SD1.x/SD2.x); every "
             "prompt then needs --cn IMAGE, the control image"},
    {.name = "network_weights", .type = SD_OPT_STRINGS, .dest = &a.network_weights, .metavar = "FILE",
     .flags = SD_OPTF_NARGS | SD_OPTF_APPEND, .group = "Networks",
     .help = "kohya LoRA or OFT (networks.oft, told by its keys) .safetensors files, merged into the model in "
             "order (any number)"},
    {.name = "network_mul", .type = SD_OPT_DOUBLES, .dest = &a.network_mul, .metavar = "X",
     .flags = SD_OPTF_NARGS | SD_OPTF_APPEND, .min = -100, .max = 100,
     .bounds = SD_OPT_HAS_MIN | SD_OPT_HAS_MAX, .group = "Networks",
     .help = "multiplier per --network_weights file, in order (missing ones: 1.0)"},
    {.name = "network_module", .type = SD_OPT_STRINGS, .dest = &a.network_module, .metavar = "MODULE",
     .flags = SD_OPTF_NARGS | SD_OPTF_APPEND, .group = "Networks",
     .help = "per --network_weights file, in order: networks.lora (networks.lora_fa and networks.dylora write "
             "the same files), networks.oft or lycoris.kohya (LyCORIS LoCon/LoHa/LoKr files; checked against the "
             "file's keys; missing ones: told by the keys)"},
    {.name = "textual_inversion_embeddings", .type = SD_OPT_STRINGS, .dest = &a.ti, .metavar = "FILE",
     .flags = SD_OPTF_NARGS | SD_OPTF_APPEND, .group = "Networks",
     .help = "textual-inversion embeddings (.safetensors/.pt: kohya emb_params or Diffusers; SDXL models: "
             "clip_l/clip_g); the token is the file name without extension"},
    {.name = "prompt", .type = SD_OPT_STRING, .dest = &a.prompt, .metavar = "TEXT", .group = "Prompts",
     .help = "one prompt; may carry the prompt file's options (\"a cat --n blurry --w 768 --d 5\")"},
    {.name = "from_file", .type = SD_OPT_STRING, .dest = &a.from_file, .metavar = "FILE", .group = "Prompts",
     .help = "prompt file (.txt, .toml or .json) as the reference's --sample_prompts reads it"},
    {.name = "negative_prompt", .type = SD_OPT_STRING, .dest = &a.negative_prompt, .metavar = "TEXT",
     .group = "Prompts", .help = "negative prompt for entries without --n"},
    {.name = "width", .type = SD_OPT_INT, .dest = &a.W, SD_OPT_RANGE(8, 16384), .group = "Generation",
     .help = "image width for entries without --w (multiple of 8; also --W as the reference spells it; default "
             "512, SDXL 1024)"},
    {.name = "height", .type = SD_OPT_INT, .dest = &a.H, SD_OPT_RANGE(8, 16384), .group = "Generation",
     .help = "image height for entries without --h (multiple of 8; also --H; default 512, SDXL 1024)"},
    {.name = "steps", .type = SD_OPT_INT, .dest = &a.steps, .def = "30", SD_OPT_RANGE(1, 1000), .group = "Generation",
     .help = "sampling steps for entries without --s"},
    {.name = "scale", .type = SD_OPT_DOUBLE, .dest = &a.scale, .def = "7.5", SD_OPT_RANGE(0, 100),
     .group = "Generation", .help = "classifier-free guidance scale for entries without --l (<= 1: no guidance)"},
    {.name = "seed", .type = SD_OPT_INT64, .dest = &a.seed, SD_OPT_RANGE(0, 4294967295.0), .group = "Generation",
     .help = "seed of the first image without --d; the next ones count up (default: random)"},
    {.name = "sampler", .type = SD_OPT_STRING, .dest = &a.sampler, .def = "ddim", .metavar = "NAME",
     .group = "Generation",
     .help = "ddim, pndm, lms, euler, euler_a, heun, dpm_2, dpm_2_a, dpmsolver, dpmsolver++, dpmsingle "
             "(k_* aliases)"},
    {.name = "batch_size", .type = SD_OPT_INT, .dest = &a.batch_size, .def = "1", SD_OPT_RANGE(1, 256),
     .group = "Generation", .help = "images of one prompt denoised together"},
    {.name = "images_per_prompt", .type = SD_OPT_INT, .dest = &a.images_per_prompt, .def = "1", SD_OPT_RANGE(1, 10000),
     .group = "Generation", .help = "images per prompt"},
    {.name = "clip_skip", .type = SD_OPT_INT, .dest = &a.clip_skip, .def = "1", SD_OPT_RANGE(1, 64),
     .group = "Generation", .help = "use the output of the k-th last text-encoder layer (1 = last)"},
    {.name = "max_token_length", .type = SD_OPT_INT, .dest = &a.max_token_length, .metavar = "N",
     .group = "Generation",
     .help = "SDXL: tokens per prompt, 75 (default), 150 or 225 (2 or 3 chunks for every prompt, as sd-train's "
             "--max_token_length; SD1/SD2 prompts always take up to 3 chunks as needed)"},
    {.name = "original_width", .type = SD_OPT_INT, .dest = &a.orig_w, SD_OPT_RANGE(1, 1000000), .group = "SDXL",
     .help = "original width in the SDXL size conditioning (default: the image width)"},
    {.name = "original_height", .type = SD_OPT_INT, .dest = &a.orig_h, SD_OPT_RANGE(1, 1000000), .group = "SDXL",
     .help = "original height in the SDXL size conditioning (default: the image height)"},
    {.name = "original_width_negative", .type = SD_OPT_INT, .dest = &a.orig_w_neg, SD_OPT_RANGE(1, 1000000),
     .group = "SDXL", .help = "original width for the negative prompt (default: --original_width)"},
    {.name = "original_height_negative", .type = SD_OPT_INT, .dest = &a.orig_h_neg, SD_OPT_RANGE(1, 1000000),
     .group = "SDXL", .help = "original height for the negative prompt (default: --original_height)"},
    {.name = "crop_top", .type = SD_OPT_INT, .dest = &a.crop_top, .def = "0", SD_OPT_RANGE(0, 1000000),
     .group = "SDXL", .help = "crop top in the SDXL size conditioning"},
    {.name = "crop_left", .type = SD_OPT_INT, .dest = &a.crop_left, .def = "0", SD_OPT_RANGE(0, 1000000),
     .group = "SDXL", .help = "crop left in the SDXL size conditioning"},
    {.name = "vae_tiling", .type = SD_OPT_FLAG, .dest = &a.vae_tiling, .group = "Generation",
     .help = "decode in tiles (default: only above 512 pixels a side for SD, 1024 for SDXL; --no-vae_tiling never)"},
    {.name = "vae_tile_size", .type = SD_OPT_INT, .dest = &a.vae_tile_size, .def = "64", SD_OPT_RANGE(8, 4096),
     .group = "Generation", .help = "VAE tile side in latent pixels (x8 in image pixels for SD)"},
    {.name = "outdir", .short_name = 'o', .type = SD_OPT_STRING, .dest = &a.outdir, .metavar = "DIR",
     .group = "Output", .help = "output directory (created; required)"},
    {.name = "sequential_file_name", .type = SD_OPT_FLAG, .dest = &a.sequential_file_name, .def = "false",
     .group = "Output", .help = "name images im_000001.png, im_000002.png, ... instead of im_TIME_NNN_SEED.png"},
    {.name = "no_metadata", .type = SD_OPT_FLAG, .dest = &a.no_metadata, .def = "false", .group = "Output",
     .flags = SD_OPTF_NO_NEGATE, .help = "no PNG text chunks (and no model hashing)"},
    {.name = "device", .type = SD_OPT_STRING, .dest = &a.device, .def = "cpu", .metavar = "cpu|cuda[:N]",
     .group = "Generation",
     .help = "where the networks run: the CPU, or CUDA GPU N (a build with CUDA=1); LoRA files are merged "
             "on the host first"},
    SD_OPT_THREADS(&a.threads),
    SD_OPT_END};

#define usage_error(...) sd_cmdline_usage_error(PROG, __VA_ARGS__)

/* ---- hashes for the infotext --------------------------------------------------------------- */

static const char *file_stem(const char *path, char *buf, size_t n)
{
    size_t l = strlen(path);
    while (l > 1 && path[l - 1] == '/') l--;
    size_t s = l;
    while (s > 0 && path[s - 1] != '/') s--;
    size_t e = l;
    for (size_t i = l; i > s; i--)
        if (path[i - 1] == '.') {
            e = i - 1;
            break;
        }
    if (e == s) e = l;
    size_t k = e - s < n - 1 ? e - s : n - 1;
    memcpy(buf, path + s, k);
    buf[k] = 0;
    return buf;
}

/* A1111's LoRA hash: SHA-256 of a safetensors file's bytes after its header (the "addnet" hash),
 * first 12 hex digits. */
static int addnet_hash(const char *path, char out[13])
{
    FILE *f = fopen(path, "rb");
    if (!f) return sd_err(SD_EIO, "%s: cannot open", path);
    uint8_t h8[8];
    int rc = SD_OK;
    if (fread(h8, 1, 8, f) != 8) rc = sd_err(SD_EFORMAT, "%s: truncated", path);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | h8[i];
    if (!rc && fseeko(f, (off_t)(8 + hl), SEEK_SET)) rc = sd_err(SD_EIO, "%s: cannot seek", path);
    if (!rc) {
        sd_sha256_ctx s;
        sd_sha256_init(&s);
        static uint8_t buf[1 << 16];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) sd_sha256_update(&s, buf, n);
        uint8_t d[32];
        sd_sha256_final(&s, d);
        for (int i = 0; i < 6; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
    fclose(f);
    return rc;
}

/* ---- the job list ---------------------------------------------------------------------------- */

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

/* after every UNet call: progress, and a stop at SIGINT/SIGTERM (the current batch is dropped;
   every file already written is complete) */
static int progress_call(void *user)
{
    sd_progress_update(user, 1);
    return g_signal != 0;
}

/* UNet calls of one image (steps and sampler), for the progress bar */
static int64_t model_calls(sd_sampler_kind k, int steps)
{
    sd_sampler s;
    memset(&s, 0, sizeof s);
    sd_sampler_config c;
    sd_sampler_config_default(&c);
    int64_t n = sd_sampler_init(&s, k, steps, &c, 1) ? steps : s.nt;
    sd_sampler_free(&s);
    return n;
}

static int check_entry(const sd_sample_prompt *p, const char *where, int64_t factor)
{
    if (p->width % factor || p->height % factor || p->width < 8 || p->height < 8 || p->width % 8 || p->height % 8)
        return sd_err(SD_EINVAL, "%s: size %dx%d: width and height must be multiples of %" PRId64 " for this model",
                      where, p->width, p->height, factor < 8 ? (int64_t)8 : factor);
    if (p->width > 16384 || p->height > 16384)
        return sd_err(SD_EINVAL, "%s: size %dx%d: at most 16384 pixels a side", where, p->width, p->height);
    if (p->sampler) {
        sd_sampler_kind k;
        int rc = sd_sampler_parse(p->sampler, &k);
        if (rc) return sd_err_prefix(rc, "%s", where);
        if (k == SD_SAMPLER_PNDM && p->steps < 4)
            return sd_err(SD_EUNSUPPORTED, "%s: the pndm sampler needs at least 4 steps", where);
    }
    return SD_OK;
}

static void entry_where(const sd_sample_prompt *p, size_t i, char *buf, size_t n)
{
    if (!a.from_file) snprintf(buf, n, "--prompt");
    else if (p->line > 0) snprintf(buf, n, "%s:%d", a.from_file, p->line);
    else snprintf(buf, n, "%s: entry %zu", a.from_file, i + 1);
}

static int run(void)
{
    sd_prompt_list pl = { 0 };
    sd_model m;
    memset(&m, 0, sizeof m);
    sd_params cn_reg;
    sd_params_init(&cn_reg);
    sd_controlnet cn;
    memset(&cn, 0, sizeof cn);
    int have_cn = 0;
    sd_image cim = { 0 };
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    sd_clip_tokenizer *tok = NULL;
    char *lora_hashes = NULL, *ti_hashes = NULL;
    sd_gen_ti ti, ti2;
    memset(&ti, 0, sizeof ti);
    memset(&ti2, 0, sizeof ti2);
    int rc;
    sd_sampler_kind defk;
    if ((rc = sd_sampler_parse(a.sampler, &defk))) return usage_error("option '--sampler': %s", sd_errmsg());
    /* prompts first: a bad prompt file stops before the model is loaded */
    if (a.from_file) {
        rc = sd_prompt_file_load(a.from_file, &pl);
        if (rc) {
            if (!strstr(sd_errmsg(), a.from_file)) sd_err_prefix(rc, "%s", a.from_file);
            return sd_fatal(SD_EXIT_FATAL);
        }
        if (pl.n == 0) {
            sd_err(SD_EFORMAT, "%s: no prompts in this file", a.from_file);
            return sd_fatal(SD_EXIT_FATAL);
        }
    } else {
        pl.items = calloc(1, sizeof *pl.items);
        if (!pl.items) return sd_fatal(SD_EXIT_FATAL);
        pl.n = 1;
        char *line = strdup(a.prompt);
        if (!line) return sd_fatal(SD_EXIT_FATAL);
        /* stripped as a prompt-file line */
        char *s = line, *e = line + strlen(line);
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = 0;
        rc = sd_prompt_line_parse(s, "--prompt", &pl.items[0]);
        free(line);
        if (rc) {
            pl.n = 0;
            free(pl.items);
            return usage_error("%s", sd_errmsg());
        }
        pl.items[0].index = 0;
    }
    /* command-line values for the entries that keep the reference's defaults */
    for (size_t i = 0; i < pl.n; i++) {
        sd_sample_prompt *p = &pl.items[i];
        /* 0: the model's default, decided once it is open */
        if (!p->has_width) p->width = a.W;
        if (!p->has_height) p->height = a.H;
        if (p->steps == 30) p->steps = a.steps;
        if (p->scale == 7.5) p->scale = a.scale;
        if (!p->negative_prompt && a.negative_prompt) {
            p->negative_prompt = strdup(a.negative_prompt);
            if (!p->negative_prompt) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
        }
        if (!p->sampler) {
            p->sampler = strdup(sd_sampler_name(defk));
            if (!p->sampler) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
        }
        if (!p->controlnet_image != !a.controlnet) {
            char w[512];
            entry_where(p, i, w, sizeof w);
            rc = a.controlnet ? sd_err(SD_EUSAGE, "%s: --controlnet needs a control image in every prompt (--cn IMAGE)", w)
                              : sd_err(SD_EUSAGE, "%s: --cn (a ControlNet's control image) needs --controlnet FILE", w);
            goto out;
        }
    }
    /* model */
    sd_model_opts mo = { .parts = SD_MODEL_ALL, .vae = a.vae, .config = a.model_config, .v2 = a.v2,
                         .v_param = a.v_param ? 1 : -1 };
    if ((rc = sd_model_open(&m, a.model, &mo))) goto out;
    if (m.warning[0]) sd_warn("%s", m.warning);
    const int sdxl = m.cfg.family == SD_FAMILY_SDXL;
    /* gen_img.py's default size: 1024 for SDXL, 512 otherwise */
    for (size_t i = 0; i < pl.n; i++) {
        if (!pl.items[i].width) pl.items[i].width = sdxl ? 1024 : 512;
        if (!pl.items[i].height) pl.items[i].height = sdxl ? 1024 : 512;
    }
    if (sdxl) {
        if (!m.have_clip2) {
            rc = sd_err(SD_EFORMAT, "%s: SDXL model without its second text encoder", a.model);
            goto out;
        }
        if (a.clip_skip > 1) sd_warn("--clip_skip %d is ignored for SDXL models (as in the reference)", a.clip_skip);
    } else {
        if (a.max_token_length && a.max_token_length != 75)
            sd_warn("--max_token_length is for SDXL models: SD1/SD2 prompts take up to 225 tokens in as many chunks "
                    "as they need");
        if (a.orig_w || a.orig_h || a.orig_w_neg || a.orig_h_neg || a.crop_top || a.crop_left)
            sd_warn("--original_*/--crop_* are SDXL size conditioning: ignored for this model");
    }
    int64_t factor = m.vae.factor << (m.cfg.unet.n_levels - 1);
    for (size_t i = 0; i < pl.n; i++) {
        char w[512];
        entry_where(&pl.items[i], i, w, sizeof w);
        if ((rc = check_entry(&pl.items[i], w, factor))) goto out;
    }
    /* frozen weights (no gradient memory); half-precision storage where the source has it, except
       when LoRA files are merged into the weights or embeddings widen the token table (f32 needed) */
    if (a.network_weights.n || a.ti.n) {
        sd_params *regs[3] = { &m.unet_params, &m.te_params, &m.vae_params };
        for (int c = 0; c < 3 && !rc; c++) {
            int r = sd_params_set_trainable(regs[c], "", 0);
            if (r < 0) rc = r;
        }
    } else {
        rc = sd_model_set_inference(&m);
    }
    if (rc) goto out;
    const sd_devkind dev = a.dev_index == SD_DEVICE_CPU ? SD_DEV_CPU : SD_DEV_CUDA;
    if (dev == SD_DEV_CUDA && (rc = sd_device_init(a.dev_index))) goto out;
    if ((rc = sd_model_load(&m, SD_DEV_CPU))) goto out;
    sd_model_release_source(&m);
    char vp[4096];
    if ((rc = sd_clip_vocab_path(vp, sizeof vp)) || (rc = sd_clip_tokenizer_load(vp, &tok))) goto out;
    sd_gen_models gm = { .unet = &m.unet, .clip = &m.clip, .clip2 = sdxl ? &m.clip2 : NULL, .vae = &m.vae,
                         .family = m.cfg.family, .tok = tok, .clip_skip = sdxl ? 0 : a.clip_skip,
                         .max_token_length = sdxl ? a.max_token_length : 0,
                         .v_prediction = m.cfg.parameterization == SD_PRED_V,
                         .vae_tiling = a.vae_tiling, .vae_tile = a.vae_tile_size };
    /* ControlNet (frozen, f32) */
    if (a.controlnet) {
        sd_safetensors *st = NULL;
        rc = sd_controlnet_init(&cn, &cn_reg, &m.cfg.unet);
        have_cn = !rc;
        if (!rc) {
            int r = sd_params_set_trainable(&cn_reg, "", 0);
            if (r < 0) rc = r;
        }
        if (!rc) rc = sd_params_alloc(&cn_reg, SD_DEV_CPU);
        if (!rc) rc = sd_safetensors_open(a.controlnet, &st);
        if (!rc) rc = sd_controlnet_load(&cn, st);
        if (st) sd_safetensors_close(st);
        if (rc) {
            sd_err_prefix(rc, "--controlnet %s", a.controlnet);
            goto out;
        }
        gm.controlnet = &cn;
    }
    /* scratch for the largest job */
    size_t need = 0;
    int bs = a.batch_size < a.images_per_prompt ? a.batch_size : a.images_per_prompt;
    for (size_t i = 0; i < pl.n; i++) {
        sd_gen_params gp = { .width = pl.items[i].width, .height = pl.items[i].height, .batch = bs };
        size_t s = sd_txt2img_scratch_bytes(&gm, &gp);
        if (s > need) need = s;
    }
    /* networks, merged on the host */
    if ((rc = sd_ctx_init(&ctx, SD_DEV_CPU, sd_threads_get(), dev == SD_DEV_CPU ? need : 0))) goto out;
    for (int i = 0; i < a.network_weights.n && !rc; i++) {
        double mul = i < a.network_mul.n ? a.network_mul.d[i] : 1.0;
        size_t nte = 0, nun = 0;
        const char *path = a.network_weights.s[i], *mod = i < a.network_module.n ? a.network_module.s[i] : NULL;
        sd_safetensors *nst = NULL;
        if ((rc = sd_safetensors_open(path, &nst))) break;
        int is_oft = sd_oft_file_is_oft(nst), is_lyco = sd_lycoris_file_is(nst);
        sd_safetensors_close(nst);
        if (mod && is_oft != !strcmp(mod, "networks.oft")) {
            rc = sd_err(SD_EFORMAT, "%s: %s file, but --network_module %s", path, is_oft ? "an OFT" : "not an OFT", mod);
            break;
        }
        if (mod && is_lyco && strcmp(mod, "lycoris.kohya")) {   /* networks.lora cannot load hada_/lokr_ keys */
            rc = sd_err(SD_EFORMAT, "%s: a LyCORIS (LoHa/LoKr/Tucker) file, but --network_module %s; it needs "
                        "lycoris.kohya", path, mod);
            break;
        }
        rc = is_oft ? sd_oft_merge_file(&ctx, &m, path, mul, &nun) : sd_lora_merge_file(&ctx, &m, path, mul, &nte, &nun);
        if (!rc)
            sd_info("%s: merged %zu modules (%zu text encoder, %zu UNet) with multiplier %g", a.network_weights.s[i],
                    nte + nun, nte, nun, mul);
    }
    if (rc) goto out;
    if (dev == SD_DEV_CUDA) {
        /* fail fast: weights and the largest job's working memory must fit in what is free */
        sd_params *regs[4] = { &m.unet_params, &m.te_params, &m.vae_params, &cn_reg };
        size_t weights = 0;
        for (int c = 0; c < 4; c++) weights += regs[c]->value_bytes;
        if (a.ti.n) weights += sd_tensor_nbytes(&m.clip.tok.w->value);   /* the widened token table's copy */
        const double gib = 1024.0 * 1024 * 1024;
        char what[96], parts[160];
        snprintf(what, sizeof what, "--device %s", a.device);
        snprintf(parts, sizeof parts, "weights %.2f GiB, working memory %.2f GiB for --batch_size %d at the largest size",
                 (double)weights / gib, (double)need / gib, bs);
        sd_device_info di;
        if ((rc = sd_device_fit(a.dev_index, weights + need, what, parts,
                                "lower --batch_size or the image size, use --vae_tiling, or run with --device cpu",
                                &di)))
            goto out;
        for (int c = 0; c < 4 && !rc; c++)
            if (regs[c]->allocated) rc = sd_params_move(regs[c], SD_DEV_CUDA);   /* cn_reg: only with --controlnet */
        sd_ctx_free(&ctx);
        memset(&ctx, 0, sizeof ctx);
        if (!rc) rc = sd_ctx_init(&ctx, SD_DEV_CUDA, sd_threads_get(), need + ((size_t)64 << 20));
        if (rc) goto out;
        sd_info("running on %s (cuda:%d)", di.name, a.dev_index);
    }
    /* embeddings: the widened token table where the encoder now is */
    if (a.ti.n) {
        rc = sdxl ? sd_gen_ti_attach_sdxl(&ti, &ti2, &m.clip, &m.clip2, a.ti.s, a.ti.n)
                  : sd_gen_ti_attach(&ti, &m.clip, a.ti.s, a.ti.n);
        if (rc) goto out;
        for (int i = 0; i < ti.n; i++)
            sd_info("%s: token '%s' = %d vector%s", a.ti.s[i], ti.tokens[i].token, ti.tokens[i].count,
                    ti.tokens[i].count == 1 ? "" : "s");
        gm.tokens = ti.tokens;
        gm.ntokens = ti.n;
    }
    /* infotext pieces */
    char model_name[256], model_hash[16] = "";
    file_stem(a.model, model_name, sizeof model_name);
    if (!a.no_metadata) {
        struct stat sb;
        if (!stat(a.model, &sb) && S_ISREG(sb.st_mode)) {
            char hex[65];
            if ((rc = sd_sha256_file(a.model, hex))) goto out;
            memcpy(model_hash, hex, 10);
            model_hash[10] = 0;
        }
        size_t cap = 1;
        for (int i = 0; i < a.network_weights.n; i++) cap += strlen(a.network_weights.s[i]) + 20;
        if (a.network_weights.n) {
            lora_hashes = calloc(cap, 1);
            if (!lora_hashes) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
            for (int i = 0; i < a.network_weights.n; i++) {
                char stem[256], h[13];
                if ((rc = addnet_hash(a.network_weights.s[i], h))) goto out;
                size_t l = strlen(lora_hashes);
                snprintf(lora_hashes + l, cap - l, "%s%s: %s", i ? ", " : "",
                         file_stem(a.network_weights.s[i], stem, sizeof stem), h);
            }
        }
    }
    if (!a.no_metadata && ti.n) {
        size_t cap = 1;
        for (int i = 0; i < ti.n; i++) cap += strlen(ti.tokens[i].token) + 20;
        ti_hashes = calloc(cap, 1);
        if (!ti_hashes) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
        for (int i = 0; i < ti.n; i++) {
            char hex[65];
            if ((rc = sd_sha256_file(a.ti.s[i], hex))) goto out;
            size_t l = strlen(ti_hashes);
            snprintf(ti_hashes + l, cap - l, "%s%s: %.12s", i ? ", " : "", ti.tokens[i].token, hex);
        }
    }
    if ((rc = sd_mkdirs(a.outdir))) goto out;
    /* seeds: an entry's --d counts up per image; others take --seed (or a random base) counting up */
    uint64_t next_seed;
    if (a.seed >= 0) next_seed = (uint64_t)a.seed;
    else {
        uint32_t r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)time(NULL);
        next_seed = r;
    }
    int64_t counter = 0, written = 0, calls = 0;
    for (size_t i = 0; i < pl.n; i++) {
        sd_sampler_kind kind;
        sd_sampler_parse(pl.items[i].sampler, &kind);
        calls += model_calls(kind, pl.items[i].steps) * ((a.images_per_prompt + a.batch_size - 1) / a.batch_size);
    }
    sd_progress pg;
    sd_progress_begin(&pg, "sampling", calls);
    gm.on_call = progress_call;
    gm.call_user = &pg;
    for (size_t i = 0; i < pl.n && !rc && !g_signal; i++) {
        const sd_sample_prompt *p = &pl.items[i];
        sd_sampler_kind kind;
        sd_sampler_parse(p->sampler, &kind);
        sd_image_free(&cim);
        if (p->controlnet_image && (rc = sd_image_load(p->controlnet_image, SD_ALPHA_DROP, &cim, NULL))) break;
        for (int j0 = 0; j0 < a.images_per_prompt && !rc && !g_signal; j0 += a.batch_size) {
            int B = a.images_per_prompt - j0 < a.batch_size ? a.images_per_prompt - j0 : a.batch_size;
            uint64_t seeds[256];
            for (int b = 0; b < B; b++) seeds[b] = p->has_seed ? p->seed + (uint64_t)(j0 + b) : next_seed++;
            sd_image ims[256];
            memset(ims, 0, sizeof ims);
            sd_gen_params gp = { .prompt = p->prompt, .negative_prompt = p->negative_prompt, .width = p->width,
                                 .height = p->height, .steps = p->steps, .scale = p->scale, .sampler = kind,
                                 .batch = B, .seeds = seeds, .orig_w = a.orig_w, .orig_h = a.orig_h,
                                 .orig_w_neg = a.orig_w_neg, .orig_h_neg = a.orig_h_neg, .crop_top = a.crop_top,
                                 .crop_left = a.crop_left, .control_image = p->controlnet_image ? &cim : NULL };
            rc = sd_txt2img(&ctx, &gm, &gp, ims);
            if (rc) {
                char w[512];
                entry_where(p, i, w, sizeof w);
                sd_err_prefix(rc, "%s", w);
                break;
            }
            char ts[32];
            time_t now = time(NULL);
            struct tm tmv;
            localtime_r(&now, &tmv);
            strftime(ts, sizeof ts, "%Y%m%d%H%M%S", &tmv);
            for (int b = 0; b < B && !rc; b++) {
                char name[128], *path = NULL, *info = NULL;
                counter++;
                if (a.sequential_file_name) snprintf(name, sizeof name, "im_%06" PRId64 ".png", counter);
                else snprintf(name, sizeof name, "im_%s_%03d_%" PRIu64 ".png", ts, b, seeds[b]);
                size_t pl2 = strlen(a.outdir) + strlen(name) + 2;
                path = malloc(pl2);
                if (!path) { rc = sd_err(SD_ENOMEM, "out of memory"); break; }
                snprintf(path, pl2, "%s/%s", a.outdir, name);
                if (!a.no_metadata) {
                    sd_infotext it = { .prompt = p->prompt, .negative_prompt = p->negative_prompt, .steps = p->steps,
                                       .sampler = sd_sampler_a1111_name(kind), .scale = p->scale, .seed = seeds[b],
                                       .width = p->width, .height = p->height,
                                       .model_hash = model_hash[0] ? model_hash : NULL, .model = model_name,
                                       .clip_skip = gm.clip_skip, .lora_hashes = lora_hashes, .ti_hashes = ti_hashes,
                                       .version = "sd-sample " SD_VERSION };
                    info = sd_infotext_format(&it);
                    if (!info) rc = sd_err(SD_ENOMEM, "out of memory");
                }
                if (!rc) rc = sd_sample_write_png(path, &ims[b], info);
                if (!rc) {
                    printf("%s\n", path);
                    fflush(stdout);
                    written++;
                }
                free(info);
                free(path);
            }
            for (int b = 0; b < B; b++) sd_image_free(&ims[b]);
        }
    }
    sd_progress_end(&pg);
    if (g_signal) {
        sd_warn("interrupted: %" PRId64 " images written to %s", written, a.outdir);
        rc = SD_OK;
        sd_err_clear();
    }
    if (!rc && !g_signal) sd_info("%" PRId64 " images written to %s", written, a.outdir);
out:
    sd_image_free(&cim);
    if (have_cn) sd_controlnet_free(&cn);
    sd_params_free(&cn_reg);
    free(lora_hashes);
    free(ti_hashes);
    sd_gen_ti_detach(&ti2);
    sd_gen_ti_detach(&ti);
    sd_clip_tokenizer_free(tok);
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_model_close(&m);
    sd_prompt_list_free(&pl);
    sd_device_shutdown();
    if (g_signal) return g_signal == SIGTERM ? SD_EXIT_SIGTERM : SD_EXIT_SIGINT;
    return rc ? sd_fatal(SD_EXIT_FATAL) : SD_EXIT_OK;
}

int main(int argc, char **argv)
{
    sd_log_init(PROG);
    a.seed = -1;
    a.vae_tiling = -1;
    sd_opts o;
    if (sd_opts_init(&o, PROG, table) < 0) return sd_fatal(1);
    o.flags = SD_OPTS_CONFIG | SD_OPTS_NO_POSITIONAL;
    o.usage = "--model MODEL (--prompt TEXT | --from_file FILE) --outdir DIR [OPTIONS]";
    o.description =
        "Text-to-image with an SD1.x/SD2.x/SDXL checkpoint and any number of kohya LoRA networks, as the "
        "reference's sample images are made (its prompt-file syntax, samplers and prompt weighting; SDXL: its SDXL "
        "pipeline). One PNG per image, with "
        "the prompt and settings in an A1111-style \"parameters\" text chunk. The paths written go to stdout.";
    o.epilog = "Exit status: 0 success, 1 fatal error (model, network or prompt file), 2 usage error.\n"
               "See sd-sample(1).";
    /* the reference's gen_img.py spells these --W and --H (option tables are lower-case) */
    char **av = calloc((size_t)argc + 1, sizeof *av);
    if (!av) return sd_fatal(1);
    for (int i = 0; i < argc; i++) {
        av[i] = argv[i];
        if (i == 0) continue;
        if (!strcmp(argv[i], "--")) {
            for (int j = i; j < argc; j++) av[j] = argv[j];
            break;
        }
        if (!strcmp(argv[i], "--W")) av[i] = "--width";
        else if (!strcmp(argv[i], "--H")) av[i] = "--height";
        else if (!strncmp(argv[i], "--W=", 4) || !strncmp(argv[i], "--H=", 4)) {
            size_t l = strlen(argv[i]) + 8;
            av[i] = malloc(l);
            if (!av[i]) return sd_fatal(1);
            snprintf(av[i], l, "--%s=%s", argv[i][2] == 'W' ? "width" : "height", argv[i] + 4);
        }
    }
    int ex = sd_cmdline_main(&o, argc, av);
    for (int i = 1; i < argc; i++)
        if (av[i] != argv[i] && strncmp(av[i], "--width", 8) && strncmp(av[i], "--height", 9)) free(av[i]);
    free(av);
    if (ex >= 0) {
        sd_opts_free(&o);
        return ex;
    }
    int rc;
    if (!a.model) rc = usage_error("--model is required");
    else if (!a.outdir) rc = usage_error("--outdir is required");
    else if (!a.prompt == !a.from_file) rc = usage_error("give exactly one of --prompt and --from_file");
    else if (a.network_module.n > a.network_weights.n) {
        rc = usage_error("%d --network_module values for %d --network_weights files", a.network_module.n,
                         a.network_weights.n);
    } else if (a.network_mul.n > a.network_weights.n) {
        rc = usage_error("%d --network_mul values for %d --network_weights files", a.network_mul.n,
                         a.network_weights.n);
    } else if (a.max_token_length && a.max_token_length != 75 && a.max_token_length != 150 &&
               a.max_token_length != 225) {
        rc = usage_error("--max_token_length %d: 75, 150 or 225", a.max_token_length);
    } else if (a.W % 8 || a.H % 8) {
        rc = usage_error("--W %d --H %d: width and height must be multiples of 8", a.W, a.H);
    } else if (sd_device_parse(a.device, &a.dev_index)) {
        rc = usage_error("%s", sd_errmsg());
    } else {
        rc = SD_OK;
        for (int i = 0; i < a.network_module.n; i++)
            if (strcmp(a.network_module.s[i], "networks.lora") && strcmp(a.network_module.s[i], "networks.lora_fa") &&
                strcmp(a.network_module.s[i], "networks.dylora") && strcmp(a.network_module.s[i], "networks.oft") &&
                strcmp(a.network_module.s[i], "lycoris.kohya")) {
                rc = usage_error("option '--network_module': %s is not supported (networks.lora, networks.lora_fa, "
                                 "networks.dylora, networks.oft, lycoris.kohya)",
                                 a.network_module.s[i]);
                break;
            }
        if (!rc) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_signal;
            sigaction(SIGINT, &sa, NULL);
            sigaction(SIGTERM, &sa, NULL);
            if (sd_threads_init(a.threads) < 0) rc = sd_fatal(SD_EXIT_FATAL);
            else rc = run();
        }
    }
    sd_opts_free(&o);
    return rc;
}
