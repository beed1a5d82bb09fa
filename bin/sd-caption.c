/* sd-caption: BLIP captioner (kohya-ss/sd-scripts finetune/make_captions.py) and GIT captioner
 * (finetune/make_captions_by_git.py) -> captions (sd-caption(1)). The family comes from the
 * weights' key names.
 *
 * Records (JSON lines with "image") or image folders in; each record gets "caption" and, unless
 * --no-sidecar, the image gets a <stem><caption_extension> sidecar holding the caption and a
 * newline. Images of a batch are decoded and preprocessed in parallel, the image encoder runs on
 * the batch, then each image's caption is generated (nucleus sampling by default, --beam_search
 * for beam search / greedy) and the records are written in order. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/rng.h"
#include "base/threads.h"
#include "data/image_jobs.h"
#include "data/images.h"
#include "io/cmdline.h"
#include "io/image.h"
#include "io/jsonl.h"
#include "models/blip.h"
#include "models/git.h"
#include "tensor/device.h"
#include "text/bert_tokenizer.h"

#define TOOL "sd-caption"
#define PROMPT "a picture of "
#define RNG_PURPOSE_CAPTION (SD_RNG_USER + 7)   /* sd-caption's sampling stream */

static struct {
    const char *model, *model_id, *vocab, *device, *caption_extension;
    int beam_search, num_beams, max_length, min_length, batch_size, workers, threads;
    int sidecar, recursive, debug, remove_words;
    double top_p;
    int64_t seed;
} a = {.workers = -1};

#define G_M "Model"
#define G_G "Generation"
#define G_O "Output"

static const sd_opt table[] = {
    {.name = "model", .alias = "caption_weights", .type = SD_OPT_STRING, .dest = &a.model, .metavar = "DIR|FILE",
     .group = G_M,
     .help = "a folder with model.safetensors and vocab.txt (a Hugging Face Salesforce/blip-image-captioning-large "
             "or -base download, or a microsoft/git-large-textcaps or other GIT download), or a BLIP or GIT model "
             ".safetensors file; the family (BLIP or GIT) comes from the key names"},
    {.name = "model_id", .type = SD_OPT_STRING, .dest = &a.model_id, .metavar = "DIR|FILE", .group = G_M,
     .help = "make_captions_by_git.py's name of --model: a local folder or file (nothing is downloaded)"},
    {.name = "vocab", .type = SD_OPT_STRING, .dest = &a.vocab, .metavar = "FILE", .group = G_M,
     .help = "bert-base-uncased vocab.txt (default: the one beside the model file)"},
    {.name = "batch_size", .type = SD_OPT_INT, .dest = &a.batch_size, .def = "1", SD_OPT_RANGE(1, 256), .group = G_M,
     .help = "images per image-encoder run"},
    {.name = "device", .type = SD_OPT_STRING, .dest = &a.device, .def = "cpu", .metavar = "cpu|cuda[:N]",
     .group = G_M, .help = "where the model runs: the CPU, or CUDA GPU N (a build with CUDA=1)"},
    {.name = "max_data_loader_n_workers", .type = SD_OPT_INT, .dest = &a.workers, SD_OPT_RANGE(0, 1024),
     .group = G_M, .help = "accepted for scripts written for the reference; images are decoded by --threads threads"},
    {.name = "beam_search", .type = SD_OPT_FLAG, .dest = &a.beam_search, .def = "false", .group = G_G,
     .help = "BLIP: beam search with --num_beams beams (1 = greedy); otherwise nucleus sampling (GIT: always "
             "greedy)"},
    {.name = "num_beams", .type = SD_OPT_INT, .dest = &a.num_beams, .def = "1", SD_OPT_RANGE(1, 64), .group = G_G,
     .help = "beams of --beam_search"},
    {.name = "top_p", .type = SD_OPT_DOUBLE, .dest = &a.top_p, .def = "0.9", .min = 0, .max = 1,
     .bounds = SD_OPT_HAS_MIN | SD_OPT_MIN_EXCL | SD_OPT_HAS_MAX, .group = G_G,
     .help = "nucleus sampling: keep the most likely tokens up to this probability (with top-k 50, repetition "
             "penalty 1.1)"},
    {.name = "max_length", .type = SD_OPT_INT, .dest = &a.max_length, SD_OPT_RANGE(1, 4096), .group = G_G,
     .help = "at most this many tokens: BLIP 75 by default, the 4 of the prompt '[DEC] a picture of' included; GIT "
             "50 by default, the [CLS] that starts the caption included"},
    {.name = "min_length", .type = SD_OPT_INT, .dest = &a.min_length, .def = "5", SD_OPT_RANGE(0, 4096),
     .group = G_G, .help = "BLIP: no end of caption before this many tokens (prompt included)"},
    {.name = "remove_words", .type = SD_OPT_FLAG, .dest = &a.remove_words, .def = "false", .group = G_G,
     .help = "GIT: remove phrases like 'with the words xxx' or 'that says xxx' (make_captions_by_git.py's "
             "regular expressions)"},
    {.name = "seed", .type = SD_OPT_INT64, .dest = &a.seed, .def = "42", SD_OPT_ATLEAST(0), .group = G_G,
     .help = "BLIP: seed of the sampling; each image draws from its own stream (seed, position in the input)"},
    {.name = "caption_extension", .alias = "caption_extention", .type = SD_OPT_STRING, .dest = &a.caption_extension,
     .def = ".caption", .metavar = "EXT", .group = G_O, .help = "extension of the sidecar files"},
    {.name = "sidecar", .type = SD_OPT_FLAG, .dest = &a.sidecar, .def = "true", .group = G_O,
     .help = "write <stem><caption_extension> beside each image (--no-sidecar: records only)"},
    {.name = "recursive", .type = SD_OPT_FLAG, .dest = &a.recursive, .def = "false", .group = G_O,
     .help = "folder arguments: include subfolders"},
    {.name = "debug", .type = SD_OPT_FLAG, .dest = &a.debug, .def = "false", .group = G_O,
     .help = "print each image's caption to stderr"},
    SD_OPT_THREADS(&a.threads),
    SD_OPT_END};

/* ---- state ----------------------------------------------------------------------------------- */

typedef sd_image_job item;   /* ordinal: the record's sampling stream */

static sd_blip model;
static sd_git gmodel;
static sd_git_state gstate;
static int is_git;   /* the weights are GIT's */
static int32_t git_bos, git_eos;
static sd_blip_state state;
static sd_bert_vocab *vocab;
static sd_blip_gen gen;
static int32_t prompt[64];
static int nprompt;
static sd_ctx ctx;
static int dev_index = SD_DEVICE_CPU;
static long n_done, n_skipped;

/* worker thread: decode and preprocess */
static void load_one(item *it, void *user)
{
    (void)user;
    sd_image rgb;
    if (sd_image_load(it->image, SD_ALPHA_DROP, &rgb, NULL) < 0) {
        sd_image_job_fail(it, sd_errmsg());
        return;
    }
    size_t S = (size_t)(is_git ? gmodel.size : model.size);
    it->input = malloc(sizeof(float) * 3 * S * S);
    if (!it->input) {
        sd_image_job_fail(it, "out of memory");
    } else {
        int rc = is_git ? sd_git_prepare_image(&rgb, (int)S, it->input) : sd_blip_prepare_image(&rgb, (int)S, it->input);
        if (rc < 0) {
            sd_err_prefix(rc, "%s", it->image);
            sd_image_job_fail(it, sd_errmsg());
        }
    }
    sd_image_free(&rgb);
}

/* kohya: decode(skip_special_tokens=True)[len(prompt):] - a cut in characters (code points) */
static char *caption_text(const int32_t *ids, int n)
{
    char *s = NULL;
    if (sd_bert_decode(vocab, ids, (size_t)n, &s) < 0) return NULL;
    size_t cut = is_git ? 0 : strlen(PROMPT), i = 0;   /* GIT: no prompt */
    for (size_t chars = 0; s[i] && chars < cut; chars++) {
        i++;
        while (((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    memmove(s, s + i, strlen(s + i) + 1);
    return s;
}

/* main thread: caption of one image from its embedding, the sidecar, the record; 1 = fatal */
static int finish(item *it, const sd_tensor *emb1, const char *src)
{
    int32_t *ids = NULL;
    int nids = 0;
    char *text = NULL, *side = NULL;
    sd_rng rng = sd_rng_key((uint64_t)a.seed, 0, (uint32_t)it->ordinal, RNG_PURPOSE_CAPTION);
    int rc;
    if (is_git) {
        rc = sd_git_state_set_image(&ctx, &gmodel, &gstate, emb1);
        if (!rc) rc = sd_git_generate(&ctx, &gmodel, &gstate, git_bos, git_eos, a.max_length, &ids, &nids);
    } else {
        rc = sd_blip_state_set_image(&ctx, &model, &state, emb1);
        if (!rc) rc = sd_blip_generate(&ctx, &model, &state, prompt, nprompt, &gen, &rng, &ids, &nids);
    }
    if (rc) { /* a model failure is fatal (not the record's fault) */
        sd_error("%s", sd_errmsg());
        return 1;
    }
    text = caption_text(ids, nids);
    free(ids);
    if (text && is_git && a.remove_words) {
        char *cleaned = sd_git_remove_words(text);
        if (cleaned && a.debug && strcmp(cleaned, text)) sd_info("%s: '%s' -> '%s'", it->image, text, cleaned);
        free(text);
        text = cleaned;
        if (!text) sd_err(SD_ENOMEM, "out of memory");
    }
    if (!text) {
        sd_error("%s", sd_errmsg());
        return 1;
    }
    if (a.debug) sd_info("%s %s", it->image, text);
    if (a.sidecar) {
        side = sd_img_sidecar_path(it->image, a.caption_extension);
        if (!side) {
            rc = sd_err(SD_ENOMEM, "out of memory");
        } else {
            size_t L = strlen(text);
            char *line = malloc(L + 2);
            if (!line) {
                rc = sd_err(SD_ENOMEM, "out of memory");
            } else {
                memcpy(line, text, L);
                line[L] = '\n';
                rc = sd_write_file_atomic(side, line, L + 1);
                free(line);
            }
        }
    }
    int fatal = 0;
    if (rc == SD_OK) {
        jv rec = jv_object_set(it->rec, jv_string("caption"), jv_string(text));
        it->rec = jv_invalid();
        n_done++;
        if (sd_jsonl_write(stdout, rec) < 0) {
            sd_error("stdout: %s", sd_errmsg());
            fatal = 1;
        }
    } else {
        sd_record_error(src, it->line, "%s", sd_errmsg());
        n_skipped++;
    }
    free(text);
    free(side);
    return fatal;
}

static sd_tensor emb;   /* the batch's image tokens [good, tokens, width] on --device */

/* main thread: the image encoder on a batch (on --device cuda the batch goes up) */
static int forward(const sd_tensor *x, void *user)
{
    (void)user;
    sd_tensor_free(&emb);
    int rc = is_git ? sd_tensor_alloc_on(&emb, ctx.backend, SD_F32, 3, (int64_t[]){ x->shape[0], gmodel.vtokens, gmodel.twidth })
                    : sd_tensor_alloc_on(&emb, ctx.backend, SD_F32, 3, (int64_t[]){ x->shape[0], model.vtokens, model.vwidth });
    if (!rc && ctx.backend != SD_DEV_CPU) {
        sd_tensor xd = {0};
        rc = sd_tensor_alloc_on(&xd, ctx.backend, SD_F32, 4, x->shape);
        if (!rc) rc = sd_tensor_upload(&xd, x->data, sd_tensor_nbytes(x));
        if (!rc) rc = is_git ? sd_git_encode_image(&ctx, &gmodel, &emb, NULL, &xd) : sd_blip_encode_image(&ctx, &model, &emb, &xd);
        sd_tensor_free(&xd);
    } else if (!rc) {
        rc = is_git ? sd_git_encode_image(&ctx, &gmodel, &emb, NULL, x) : sd_blip_encode_image(&ctx, &model, &emb, x);
    }
    if (rc) sd_error("%s", sd_errmsg());
    return rc;
}

/* main thread: the caption of the k-th good image of the batch */
static int finish_k(item *it, int k, const char *src, void *user)
{
    (void)user;
    sd_tensor e1;
    if (sd_tensor_narrow0(&emb, k, 1, &e1) < 0) {
        sd_error("%s", sd_errmsg());
        return 1;
    }
    return finish(it, &e1, src);
}

/* The op context on --device, scratch for one --batch_size run of the image encoder (about 10
 * token×width and 2 token×MLP arrays per image) plus the decoder's steps; on a GPU the weights
 * and the decoder cache move there after a fit check. */
static int open_context(void)
{
    const int64_t T = is_git ? gmodel.vtokens : model.vtokens, D = is_git ? gmodel.vwidth : model.vwidth;
    const int64_t vmlp = is_git ? gmodel.vmlp : model.vmlp, vheads = is_git ? gmodel.vheads : model.vheads;
    const int64_t Dt = is_git ? gmodel.twidth : model.twidth, tinter = is_git ? gmodel.tinter : model.tinter;
    const int64_t V = is_git ? gmodel.vocab : model.vocab, tdepth = is_git ? gmodel.tdepth : model.tdepth;
    size_t per = (size_t)(T * (12 * D + 2 * vmlp + 2 * vheads + 2 * Dt)) * sizeof(float) + ((size_t)4 << 20);
    size_t beams = (size_t)(gen.beam_search ? gen.num_beams : 1);
    /* the decoder: BLIP's steps; GIT's image tokens through the layers once per image, then steps */
    size_t dec = beams * (size_t)(gen.max_length * (8 * Dt + tinter) + 2 * V) * sizeof(float) + ((size_t)16 << 20);
    if (is_git) dec += (size_t)(T * (8 * Dt + tinter + 2)) * sizeof(float);
    size_t scratch = (size_t)a.batch_size * per * 3 / 2 + dec;
    if (scratch < SD_CTX_DEFAULT_SCRATCH) scratch = SD_CTX_DEFAULT_SCRATCH;
    size_t cache = is_git ? (size_t)tdepth * sizeof(float) * 2 * (size_t)((T + gen.max_length) * Dt)
                          : (size_t)tdepth * sizeof(float) *
                                (4 * beams * (size_t)gen.max_length * (size_t)Dt + 2 * (size_t)(T * Dt));
    int rc;
    if (dev_index == SD_DEVICE_CPU) {
        rc = sd_ctx_init(&ctx, SD_DEV_CPU, sd_threads_get(), scratch);
    } else {
        rc = sd_device_init(dev_index);
        sd_device_info di;
        if (!rc) {
            sd_params_totals tot;
            sd_params_get_totals(is_git ? &gmodel.r : &model.r, &tot);
            const double gib = 1024.0 * 1024 * 1024;
            char what[64], parts[200];
            snprintf(what, sizeof what, "--device %s", a.device);
            snprintf(parts, sizeof parts, "weights %.2f GiB, working memory %.2f GiB for --batch_size %d",
                     (double)tot.value_bytes / gib, (double)(scratch + cache) / gib, a.batch_size);
            rc = sd_device_fit(dev_index, tot.value_bytes + scratch + cache, what, parts,
                               "lower --batch_size, or run with --device cpu", &di);
        }
        if (!rc) rc = sd_params_move(is_git ? &gmodel.r : &model.r, SD_DEV_CUDA);
        if (!rc) rc = sd_ctx_init(&ctx, SD_DEV_CUDA, sd_threads_get(), scratch);
        if (!rc) sd_info("running on %s (cuda:%d)", di.name, dev_index);
    }
    if (!rc)
        rc = is_git ? sd_git_state_init(&gstate, &gmodel, gen.max_length, ctx.backend)
                    : sd_blip_state_init(&state, &model, (int)beams, gen.max_length, ctx.backend);
    return rc;
}

static sd_opts *g_opts;

/* options of the other family are usage errors; the family's defaults */
static int family_options(void)
{
    static const struct { const void *dest; const char *name; } blip_only[] = {
        { &a.beam_search, "--beam_search" }, { &a.num_beams, "--num_beams" }, { &a.top_p, "--top_p" },
        { &a.min_length, "--min_length" }, { &a.seed, "--seed" },
    };
    if (is_git) {
        for (size_t i = 0; i < sizeof blip_only / sizeof blip_only[0]; i++)
            if (sd_opts_is_set(g_opts, blip_only[i].dest))
                return sd_err(SD_EINVAL, "%s is a BLIP option; %s is a GIT model (greedy decoding, as "
                                         "make_captions_by_git.py)", blip_only[i].name, a.model);
        gen.beam_search = 0;
        gen.num_beams = 1;
        if (!sd_opts_is_set(g_opts, &a.max_length)) a.max_length = 50;
    } else {
        if (a.remove_words)
            return sd_err(SD_EINVAL, "--remove_words is a GIT option; %s is a BLIP model", a.model);
        if (!sd_opts_is_set(g_opts, &a.max_length)) a.max_length = 75;
    }
    gen.max_length = a.max_length;
    return SD_OK;
}

/* the GIT model's vocabulary, BOS/EOS, length check, context */
static int load_git(const char *mpath, const char *vpath, int32_t V)
{
    int rc = SD_OK;
    if (gmodel.vocab != (int64_t)V)
        rc = sd_err(SD_EFORMAT, "%s has %d tokens but %s has a vocabulary of %lld", vpath, V, mpath,
                    (long long)gmodel.vocab);
    if (!rc && ((git_bos = sd_bert_token_id(vocab, "[CLS]")) < 0 || (git_eos = sd_bert_token_id(vocab, "[SEP]")) < 0))
        rc = sd_err(SD_EFORMAT, "%s has no [CLS] or [SEP]", vpath);
    if (!rc && a.max_length > gmodel.positions)
        rc = sd_err(SD_EINVAL, "--max_length %d is more than the model's %lld positions", a.max_length,
                    (long long)gmodel.positions);
    if (!rc) rc = open_context();
    if (!rc)
        sd_info("%s: GIT, %lldx%lld input, vision %lld wide x %lld layers, text %lld wide x %lld layers, vocabulary "
                "%lld", mpath, (long long)gmodel.size, (long long)gmodel.size, (long long)gmodel.vwidth,
                (long long)gmodel.vdepth, (long long)gmodel.twidth, (long long)gmodel.tdepth, (long long)gmodel.vocab);
    return rc;
}

/* model, vocabulary, prompt and context from the options; SD_EINVAL = usage error */
static int load_model(void)
{
    struct stat s;
    char *mpath = NULL, *vpath = NULL;
    if (stat(a.model, &s) != 0) {
        int e = errno;
        const char *sl = strchr(a.model, '/');
        if (e == ENOENT && sl && sl != a.model && a.model[0] != '.' && !strchr(sl + 1, '/'))
            return sd_err(SD_EINVAL, "%s: no such local folder or file (a Hugging Face model id? sd-caption "
                                        "downloads nothing: download the model and give its folder)", a.model);
        return sd_err(SD_ENOTFOUND, "%s: %s", a.model, strerror(e));
    }
    if (S_ISDIR(s.st_mode)) {
        mpath = malloc(strlen(a.model) + 32);
        vpath = malloc(strlen(a.model) + 32);
        if (!mpath || !vpath) return sd_err(SD_ENOMEM, "out of memory");
        sprintf(mpath, "%s/model.safetensors", a.model);
        sprintf(vpath, "%s/vocab.txt", a.model);
        if (stat(mpath, &s) != 0) {
            sprintf(vpath, "%s/pytorch_model.bin", a.model);
            int bin = stat(vpath, &s) == 0;
            free(vpath);
            int rc = sd_err(SD_ENOTFOUND, "%s: no model.safetensors in this folder%s", a.model,
                            bin ? " (pytorch_model.bin is not read: download model.safetensors)" : "");
            free(mpath);
            return rc;
        }
    } else {
        size_t L = strlen(a.model);
        if (L > 4 && (!strcmp(a.model + L - 4, ".pth") || !strcmp(a.model + L - 4, ".bin")))
            return sd_err(SD_EUNSUPPORTED, "%s: PyTorch pickles are not read; convert the checkpoint to safetensors "
                                           "(see sd-caption(1))", a.model);
        mpath = strdup(a.model);
        const char *sl = strrchr(a.model, '/');
        size_t dl = sl ? (size_t)(sl - a.model) + 1 : 0;
        vpath = malloc(dl + 32);
        if (!mpath || !vpath) return sd_err(SD_ENOMEM, "out of memory");
        memcpy(vpath, a.model, dl);
        strcpy(vpath + dl, "vocab.txt");
    }
    if (a.vocab) {
        free(vpath);
        vpath = strdup(a.vocab);
    }
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(mpath, &st);
    if (!rc) is_git = sd_git_detect(st);
    if (!rc) rc = family_options();
    if (!rc) rc = is_git ? sd_git_open(&gmodel, st, SD_DEV_CPU) : sd_blip_open(&model, st, SD_DEV_CPU);
    sd_safetensors_close(st);
    if (!rc) rc = sd_bert_vocab_load(vpath, &vocab);
    int32_t V = vocab ? sd_bert_vocab_size(vocab) : 0;
    if (!rc && is_git) {
        rc = load_git(mpath, vpath, V);
        free(mpath);
        free(vpath);
        return rc;
    }
    if (!rc && model.vocab != (int64_t)V + 2)
        rc = sd_err(SD_EFORMAT, "%s has %d tokens but %s has a vocabulary of %lld (expected %d: the tokens, [DEC], "
                                "[ENC])", vpath, V, mpath, (long long)model.vocab, V + 2);
    if (!rc && (gen.eos = sd_bert_token_id(vocab, "[SEP]")) < 0) rc = sd_err(SD_EFORMAT, "%s has no [SEP]", vpath);
    if (!rc) {
        int32_t *ids = NULL;
        size_t n = 0;
        rc = sd_bert_encode(vocab, PROMPT, strlen(PROMPT), &ids, &n);
        if (!rc && n + 1 > sizeof prompt / sizeof prompt[0]) rc = sd_err(SD_EFORMAT, "prompt too long");
        if (!rc) {
            prompt[0] = V;   /* [DEC], BLIP's BOS: the first added token */
            memcpy(prompt + 1, ids, n * sizeof *ids);
            nprompt = (int)n + 1;
        }
        free(ids);
    }
    if (!rc && a.max_length > model.positions)
        rc = sd_err(SD_EINVAL, "--max_length %d is more than the model's %lld positions", a.max_length,
                    (long long)model.positions);
    if (!rc) rc = open_context();
    if (!rc)
        sd_info("%s: BLIP (%s keys), %lldx%lld input, vision %lld wide x %lld layers, text %lld wide x %lld layers, "
                "vocabulary %lld", mpath, model.layout == SD_BLIP_LAYOUT_HF ? "transformers" : "BLIP",
                (long long)model.size, (long long)model.size, (long long)model.vwidth, (long long)model.vdepth,
                (long long)model.twidth, (long long)model.tdepth, (long long)model.vocab);
    free(mpath);
    free(vpath);
    return rc;
}

static void cleanup(void)
{
    sd_tensor_free(&emb);
    sd_blip_state_free(&state);
    sd_blip_free(&model);
    sd_git_state_free(&gstate);
    sd_git_free(&gmodel);
    sd_bert_vocab_free(vocab);
    sd_ctx_free(&ctx);
    if (dev_index != SD_DEVICE_CPU) sd_device_shutdown();
}

int main(int argc, char **argv)
{
    sd_log_init(TOOL);
    sd_opts o;
    if (sd_opts_init(&o, TOOL, table) < 0) return sd_fatal(1);
    o.flags = SD_OPTS_CONFIG;
    o.usage = "--model DIR|FILE [OPTIONS] [RECORDS.jsonl | IMAGE_DIR | IMAGE ...]";
    o.description =
        "Captions images with BLIP (Salesforce blip-image-captioning-large/base) as kohya-ss/sd-scripts' "
        "make_captions.py does, or with GIT (microsoft/git-large-textcaps and other GIT models) as its "
        "make_captions_by_git.py does; the family comes from the weights (model.safetensors + vocab.txt). Reads records (JSON lines with 'image'; stdin when nothing is "
        "named), image folders or image files, writes each record with 'caption' added to stdout and a "
        "<stem>.caption sidecar beside each image.";
    o.epilog = "Exit status: 0 all records done, 1 fatal error, 2 usage error, 3 some records skipped.\n"
               "See sd-caption(1).";
    int ex = sd_cmdline_main(&o, argc, argv);
    if (ex >= 0) {
        sd_opts_free(&o);
        return ex;
    }
    const char *usage = NULL;
    static char ubuf[256];
    if (a.model && a.model_id) usage = "give --model or --model_id, not both";
    else if (!a.model && !(a.model = a.model_id)) usage = "give --model DIR (with model.safetensors and vocab.txt) or --model FILE";
    else if (!strncmp(a.model, "http://", 7) || !strncmp(a.model, "https://", 8))
        usage = "--model/--caption_weights/--model_id: sd-caption downloads nothing; give a local folder or "
                ".safetensors file";
    else if (sd_device_parse(a.device, &dev_index)) {
        snprintf(ubuf, sizeof ubuf, "%.200s", sd_errmsg());
        usage = ubuf;
    }
    if (usage) {
        sd_cmdline_usage_error(TOOL, "%s", usage);
        sd_opts_free(&o);
        return SD_EXIT_USAGE;
    }
    if (sd_opts_is_set(&o, &a.workers))
        sd_info("--max_data_loader_n_workers has no effect: images are decoded by the --threads threads");
    if (a.beam_search && sd_opts_is_set(&o, &a.top_p)) sd_info("--top_p has no effect with --beam_search");
    if (!a.beam_search && sd_opts_is_set(&o, &a.num_beams) && a.num_beams > 1)
        sd_info("--num_beams has no effect without --beam_search: sampling makes one caption per image, as in the "
                "reference");
    gen = (sd_blip_gen){
        .beam_search = a.beam_search,
        .num_beams = a.beam_search ? a.num_beams : 1,
        .top_k = 50,
        .top_p = a.top_p,
        .temperature = 1.0f,
        .repetition_penalty = a.beam_search ? 1.0f : 1.1f,
        .min_length = a.min_length,
        .max_length = a.max_length,
    };
    g_opts = &o;
    int early = -1;
    if (sd_threads_init(a.threads) < 0) {
        sd_opts_free(&o);
        return sd_fatal(1);
    }
    int lrc = load_model();
    if (lrc < 0) early = lrc == SD_EINVAL ? sd_cmdline_usage_error(TOOL, "%s", sd_errmsg()) : sd_fatal(1);
    if (early >= 0) {
        cleanup();
        sd_opts_free(&o);
        return early;
    }
    sd_image_jobs jobs = {
        .batch = a.batch_size, .recursive = a.recursive, .size = is_git ? gmodel.size : model.size, .verb = "captioning",
        .load = load_one, .forward = forward, .finish = finish_k,
    };
    int fatal = sd_image_jobs_run(&jobs, o.pos, o.npos);
    n_skipped += jobs.skipped;
    sd_info("%ld images captioned, %ld skipped", n_done, n_skipped);
    cleanup();
    sd_opts_free(&o);
    if (fatal) return 1;
    return n_skipped ? SD_EXIT_PARTIAL : 0;
}
