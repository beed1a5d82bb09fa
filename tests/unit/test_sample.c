/* diffusion/sample_images: sample triggers and file names (the reference's rules), the A1111
 * infotext, prompt encoding (weights, chunks), txt2img on a tiny SD1 model built from the golden
 * files (deterministic, seeds, batch positions, guidance, tiling, errors), and the samples-during-
 * training round.
 *
 * With arguments it is also the helper of tests/cli/sample.sh:
 *   make-model OUT.safetensors OUT_CFG.toml   tiny SD1 checkpoint (golden UNet, VAE, CLIP with the
 *                                             vocabulary widened to 49408 rows) + its --model_config
 *   make-sd2 DIR OUT_CFG.toml                 tiny SD2 v-prediction Diffusers folder (golden UNet in Diffusers
 *                                             names, random OpenCLIP-width text encoder; give --vae
 *                                             tests/data/golden/vae/golden_vae_a.safetensors)
 *   make-lora MODEL CFG OUT.safetensors SEED  a kohya LoRA for it (UNet + text encoder, non-zero up)
 *   make-ti MODEL OUT.safetensors KEY TEXT    an embedding whose vectors are the model's token rows of TEXT's
 *                                             ids, stored under KEY ("emb_params"; "clip_l" = SDXL-style)
 *   gen-hooked MODEL CFG LORA MUL SEED OUT.png "a cat" at 32x32, 3 DDIM steps, with the LoRA attached as
 *                                             forward hooks (not merged), for comparison with sd-sample
 *   initial-noise S1,S2,.. C H W OUT.bin     x_T of the seeds (raw f32), for tests/golden/gen/make_sample_e2e_golden.py
 *   lora-layers MODEL CFG                     print "name out in kh kw" of every layer a LoRA/LyCORIS
 *                                             module can name (conv_dim on: 3x3 convs too)
 *   gen-delta MODEL CFG DELTA MUL SEED OUT.png  as gen-hooked, with W += MUL * the golden ΔW tensors of DELTA
 *                                             (make_lycoris_golden.py) added to the layers they name
 *   text FILE.png KEY                         print the text chunk KEY (exit 1 if absent)
 *   size FILE.png                             print "W H C"
 *   maxdiff A.png B.png                       print the largest pixel difference (-1: sizes differ)
 *   make-sdxl-lora MODEL CFG OUT SEED [bad]   a kohya-named SDXL LoRA (lora_unet_ ldm names, lora_te1_, lora_te2_)
 *                                             for the tiny SDXL model; "bad": one module names no layer
 *   sdxl-lora-diffusers MODEL CFG IN OUT [mixed]  IN with its UNet modules renamed to their Diffusers names
 *                                             (prints "sgm diffusers" per module); "mixed": one module also
 *                                             kept under its SGM name
 *   sdxl-train-round MODEL CFG PROMPTS OUTDIR MTL  one samples-during-training round (train/loop_sample.c) at
 *                                             step 2 (--sample_every_n_steps 2, --max_token_length MTL);
 *                                             prints the number of images
 *   sdxl-golden MODEL CFG GOLDEN LORA         the SDXL conditioning (ids, weights, context, vector) and one
 *                                             guided UNet call on the tiny SDXL checkpoint, also with the
 *                                             LoRA file merged, against tests/golden/gen/
 *                                             make_sample_sdxl_golden.py; prints ok/not ok */
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/rng.h"
#include "diffusion/sample_images.h"
#include "io/png_text.h"
#include "io/safetensors.h"
#include "models/sd_model.h"
#include "models/sdxl.h"
#include "tensor/device.h"
#include "train/lora_file.h"
#include "train/loop_sample.h"
#include "train/lora_network.h"
#include "test.h"

static const char *root_path(const char *rel)
{
    return t_root_pathf("%s", rel);
}

#define G_UNET1 "tests/data/golden/unet/sd1_tiny.safetensors"
#define G_CLIP1 "tests/data/golden/clip/golden_clip_sd1.safetensors"
#define G_VAE "tests/data/golden/vae/golden_vae_a.safetensors"
#define TOK_KEY "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"

static const char SD1_CFG[] =
    "family = \"sd1\"\n"
    "[unet]\nmodel_channels = 32\nchannel_mult = [1, 2]\nnum_res_blocks = 1\nattention_resolutions = [1]\n"
    "num_heads = 2\ntransformer_depth = 2\ncontext_dim = 32\n"
    "[clip]\nwidth = 32\nlayers = 3\nheads = 2\nvocab_size = 49408\n"
    "[vae]\nch = 32\nch_mult = [1, 2]\nnum_res_blocks = 1\nattn_resolutions = []\nresolution = 32\n";

/* ---- helpers ----------------------------------------------------------------------------------- */

static int make_model(const char *out, const char *cfg_out)
{
    const char *in[3] = { root_path(G_UNET1), root_path(G_CLIP1), root_path(G_VAE) };
    sd_safetensors *st[3] = { 0 };
    sd_safetensors_writer *w = NULL;
    float *wide = NULL;
    int rc = sd_safetensors_writer_new(&w);
    for (int i = 0; i < 3 && !rc; i++) {
        rc = sd_safetensors_open(in[i], &st[i]);
        for (size_t k = 0; !rc && k < sd_safetensors_count(st[i]); k++) {
            const sd_st_tensor *t = sd_safetensors_at(st[i], k);
            if (!strncmp(t->name, "golden.", 7) || !strncmp(t->name, "grad.", 5)) continue;
            if (!strcmp(t->name, TOK_KEY)) {
                /* 1000 rows → 49408: row r = row (r mod 1000) scaled by 1 + (r / 1000) / 64 */
                int64_t V = t->shape[0], D = t->shape[1];
                const float *src = t->data;
                wide = malloc((size_t)(49408 * D) * sizeof *wide);
                if (!wide) return sd_err(SD_ENOMEM, "oom");
                for (int64_t r = 0; r < 49408; r++)
                    for (int64_t d = 0; d < D; d++)
                        wide[r * D + d] = src[(r % V) * D + d] * (1.0f + (float)(r / V) / 64.0f);
                rc = sd_safetensors_writer_add(w, t->name, SD_ST_F32, 2, (int64_t[]){ 49408, D }, wide);
                continue;
            }
            rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL);
        }
    }
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    sd_safetensors_writer_free(w);
    for (int i = 0; i < 3; i++) sd_safetensors_close(st[i]);
    free(wide);
    if (!rc) rc = sd_write_file_atomic(cfg_out, SD1_CFG, strlen(SD1_CFG));
    return rc;
}

static const char SD2_CFG[] =
    "family = \"sd2\"\nparameterization = \"v\"\n"
    "[unet]\nmodel_channels = 32\nchannel_mult = [1, 1]\nnum_res_blocks = 1\nattention_resolutions = [2]\n"
    "num_head_channels = 16\ncontext_dim = 48\nuse_linear_in_transformer = true\n"
    "[clip]\nwidth = 48\nlayers = 3\nheads = 4\nvocab_size = 49408\n"
    "[vae]\nch = 32\nch_mult = [1, 2]\nnum_res_blocks = 1\nattn_resolutions = []\nresolution = 32\n";

static int make_sd2(const char *dir, const char *cfg_out)
{
    char p[1024];
    int rc = SD_OK;
    const char *sub[2] = { "unet", "text_encoder" };
    for (int i = 0; i < 2 && !rc; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, sub[i]);
        rc = sd_mkdirs(p);
    }
    char *d = NULL;
    size_t n = 0;
    if (!rc) rc = sd_read_file(root_path("tests/data/golden/unet/sd2_tiny_diffusers.safetensors"), 0, &d, &n);
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    if (!rc) rc = sd_write_file_atomic(p, d, n);
    free(d);
    static const char *const cj[2] = {
        "{\"_class_name\": \"UNet2DConditionModel\", \"block_out_channels\": [32, 32], \"layers_per_block\": 1,\n"
        " \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\"], \"cross_attention_dim\": 48,\n"
        " \"attention_head_dim\": [2, 2], \"use_linear_projection\": true, \"in_channels\": 4, \"out_channels\": 4}\n",
        "{\"architectures\": [\"CLIPTextModel\"], \"hidden_size\": 48, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,\n"
        " \"max_position_embeddings\": 77, \"vocab_size\": 49408, \"hidden_act\": \"gelu\"}\n",
    };
    for (int i = 0; i < 2 && !rc; i++) {
        snprintf(p, sizeof p, "%s/%s/config.json", dir, sub[i]);
        rc = sd_write_file_atomic(p, cj[i], strlen(cj[i]));
    }
    /* a random SD2 text encoder of width 48 under the Hugging Face names */
    sd_clip_config cc = { 48, 3, 4, 77, 49408, 0 };
    sd_params r;
    sd_clip m;
    sd_params_init(&r);
    memset(&m, 0, sizeof m);
    if (!rc) rc = sd_clip_init(&m, &r, "", &cc, SD_FAMILY_SD2);
    if (!rc) rc = sd_params_alloc(&r, SD_DEV_CPU);
    sd_safetensors_writer *w = NULL;
    if (!rc) rc = sd_safetensors_writer_new(&w);
    for (size_t i = 0; !rc && i < sd_params_count(&r); i++) {
        sd_param *q = sd_params_at(&r, i);
        float *v = q->value.data;
        int norm_w = strstr(q->key, "norm") && strstr(q->key, ".weight");
        sd_rng g = sd_rng_key(77, 0, (uint32_t)i, SD_RNG_INIT);
        rc = sd_rng_fill_uniform(&g, 0, v, (size_t)sd_tensor_numel(&q->value));
        for (int64_t k = 0; k < sd_tensor_numel(&q->value); k++) v[k] = norm_w ? 1.0f + 0.2f * (v[k] - 0.5f) : 0.2f * (v[k] - 0.5f);
        if (!rc) rc = sd_safetensors_writer_add(w, q->key, SD_ST_F32, q->value.ndim, q->value.shape, v);
    }
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", dir);
    if (!rc) rc = sd_safetensors_writer_write(w, p);
    sd_safetensors_writer_free(w);
    sd_clip_free(&m);
    sd_params_free(&r);
    if (!rc) rc = sd_write_file_atomic(cfg_out, SD2_CFG, strlen(SD2_CFG));
    return rc;
}

static int open_tiny(sd_model *m, const char *model, const char *cfg)
{
    sd_model_opts o = { .config = cfg, .v_param = -1 };
    int rc = sd_model_open(m, model, &o);
    if (!rc) rc = sd_model_load(m, SD_DEV_CPU);
    if (!rc) sd_model_release_source(m);
    return rc;
}

static int make_lora(const char *model, const char *cfg, const char *out, uint64_t seed)
{
    sd_model m;
    sd_ctx ctx;
    sd_lora_network net;
    memset(&net, 0, sizeof net);
    int rc = open_tiny(&m, model, cfg);
    if (rc) return rc;
    rc = sd_ctx_init(&ctx, SD_DEV_CPU, 1, 0);
    if (rc) {
        sd_model_close(&m);
        return rc;
    }
    sd_lora_net_args na;
    rc = sd_lora_net_args_parse(&na, 0, 4, 2.0, NULL, 0);
    sd_lora_network_opts no = { .args = &na, .with_unet = 1, .with_te = 1, .seed = seed };
    if (!rc) rc = sd_lora_network_build(&net, &ctx, &m.unet, &m.clip, &no);
    for (size_t i = 0; i < net.n && !rc; i++) {
        sd_tensor *up = &net.mods[i].up->value;
        sd_rng r = sd_rng_key(seed, 1, (uint32_t)i, SD_RNG_INIT);
        rc = sd_rng_fill_normal(&r, 0, up->data, (size_t)sd_tensor_numel(up));
        float *u = up->data;
        for (int64_t k = 0; k < sd_tensor_numel(up); k++) u[k] *= 0.05f;
    }
    if (!rc) {
        sd_lora_save_opts so = { .dtype = SD_ST_F32 };
        char mh[65], lh[9];
        rc = sd_lora_file_save(out, net.refs, net.n, &so, mh, lh);
    }
    sd_lora_network_free(&net);
    sd_ctx_free(&ctx);
    sd_model_close(&m);
    return rc;
}

static int make_ti(const char *model, const char *out, const char *key, const char *text)
{
    sd_safetensors *st = NULL;
    sd_clip_tokenizer *tok = NULL;
    sd_safetensors_writer *w = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    float *v = NULL;
    char vp[4096];
    int rc = sd_safetensors_open(model, &st);
    if (!rc) rc = sd_clip_vocab_path(vp, sizeof vp);
    if (!rc) rc = sd_clip_tokenizer_load(vp, &tok);
    if (!rc) rc = sd_clip_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n);
    const sd_st_tensor *t = rc ? NULL : sd_safetensors_find(st, TOK_KEY);
    if (!rc && (!t || !n)) rc = sd_err(SD_EINVAL, "no token table or empty text");
    if (!rc) {
        int64_t D = t->shape[1];
        v = malloc(n * (size_t)D * sizeof *v);
        for (size_t i = 0; i < n; i++) memcpy(v + i * (size_t)D, (const float *)t->data + (size_t)ids[i] * (size_t)D, (size_t)D * sizeof *v);
        rc = sd_safetensors_writer_new(&w);
        if (!rc) rc = sd_safetensors_writer_add(w, key, SD_ST_F32, 2, (int64_t[]){ (int64_t)n, D }, v);
        if (!rc) rc = sd_safetensors_writer_write(w, out);
    }
    sd_safetensors_writer_free(w);
    free(v);
    free(ids);
    sd_clip_tokenizer_free(tok);
    sd_safetensors_close(st);
    return rc;
}

/* the shipped CLIP tokenizer into g, txt2img with p, the image written as PNG to out */
static int tiny_sample_png(sd_ctx *ctx, sd_gen_models *g, const sd_gen_params *p, const char *out)
{
    sd_clip_tokenizer *tok = NULL;
    sd_image im = { 0 };
    char vp[4096];
    int rc = sd_clip_vocab_path(vp, sizeof vp);
    if (!rc) rc = sd_clip_tokenizer_load(vp, &tok);
    g->tok = tok;
    if (!rc) rc = sd_txt2img(ctx, g, p, &im);
    if (!rc) rc = sd_sample_write_png(out, &im, NULL);
    g->tok = NULL;
    sd_image_free(&im);
    sd_clip_tokenizer_free(tok);
    return rc;
}

static int gen_hooked(const char *model, const char *cfg, const char *lora, float mul, uint64_t seed, const char *out)
{
    sd_model m;
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    sd_lora_network net;
    memset(&net, 0, sizeof net);
    sd_safetensors *st = NULL;
    sd_lora_file_info info = { 0 };
    int rc = open_tiny(&m, model, cfg);
    if (rc) return rc;
    sd_gen_models g = { .unet = &m.unet, .clip = &m.clip, .vae = &m.vae, .family = SD_FAMILY_SD1, .clip_skip = 1,
                        .vae_tiling = -1 };
    sd_gen_params p = { .prompt = "a cat", .width = 32, .height = 32, .steps = 3, .scale = 7.5,
                        .sampler = SD_SAMPLER_DDIM, .batch = 1, .seeds = &seed };
    rc = sd_ctx_init(&ctx, SD_DEV_CPU, 1, sd_txt2img_scratch_bytes(&g, &p));
    if (!rc) rc = sd_safetensors_open(lora, &st);
    if (!rc) rc = sd_lora_file_scan(st, &info);
    sd_lora_net_args na;
    if (!rc) rc = sd_lora_net_args_parse(&na, 0, 0, NAN, NULL, 0);
    sd_lora_network_opts no = { .args = &na, .with_unet = 1, .with_te = 1, .from_file = &info };
    if (!rc) rc = sd_lora_network_build(&net, &ctx, &m.unet, &m.clip, &no);
    if (!rc) rc = sd_lora_file_load(st, net.refs, net.n, 0, NULL);
    for (size_t i = 0; i < net.n; i++) net.mods[i].multiplier = mul;
    if (!rc) rc = tiny_sample_png(&ctx, &g, &p, out);
    sd_lora_network_free(&net);
    sd_lora_file_info_free(&info);
    sd_safetensors_close(st);
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_model_close(&m);
    return rc;
}

/* ---- LyCORIS (train/lycoris.h): the tiny model's layers, and an image with golden ΔW added ---------- */

static int tiny_candidates(sd_model *m, const sd_lora_file_info *from, sd_lora_candidate **v, size_t *n)
{
    static const char *const items[] = { "conv_dim=4", "conv_alpha=1" };
    sd_lora_net_args na;
    size_t nte = 0;
    int rc = sd_lora_net_args_parse(&na, 0, 4, 1.0, items, 2);
    sd_lora_network_opts no = { .args = &na, .with_unet = 1, .with_te = 1, .from_file = from };
    if (!rc) rc = sd_lora_network_candidates(&m->unet, &m->clip, &no, v, n, &nte);
    return rc;
}

static int lora_layers(const char *model, const char *cfg)
{
    sd_model m;
    sd_lora_candidate *v = NULL;
    size_t n = 0;
    int rc = open_tiny(&m, model, cfg);
    if (rc) return rc;
    rc = tiny_candidates(&m, NULL, &v, &n);
    for (size_t i = 0; i < n && !rc; i++)
        printf("%s %lld %lld %d %d\n", v[i].name, (long long)v[i].out, (long long)v[i].in, v[i].kh, v[i].kw);
    free(v);
    sd_model_close(&m);
    return rc;
}

static int cmp_mod(const void *a, const void *b)
{
    return strcmp(((const sd_lora_file_module *)a)->name, ((const sd_lora_file_module *)b)->name);
}

/* "a cat" 32x32, 3 DDIM steps, after W += mul · ΔW for every tensor "<module>" of DELTA (written by
 * tests/golden/gen/make_lycoris_golden.py, not by our LyCORIS code) */
static int gen_delta(const char *model, const char *cfg, const char *delta, float mul, uint64_t seed, const char *out)
{
    sd_model m;
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    sd_safetensors *st = NULL;
    sd_lora_candidate *v = NULL;
    sd_lora_file_module *fm = NULL;
    size_t n = 0, nd = 0;
    int rc = open_tiny(&m, model, cfg);
    if (rc) return rc;
    sd_gen_models g = { .unet = &m.unet, .clip = &m.clip, .vae = &m.vae, .family = SD_FAMILY_SD1, .clip_skip = 1,
                        .vae_tiling = -1 };
    sd_gen_params p = { .prompt = "a cat", .width = 32, .height = 32, .steps = 3, .scale = 7.5,
                        .sampler = SD_SAMPLER_DDIM, .batch = 1, .seeds = &seed };
    rc = sd_ctx_init(&ctx, SD_DEV_CPU, 1, sd_txt2img_scratch_bytes(&g, &p));
    if (!rc) rc = sd_safetensors_open(delta, &st);
    if (!rc) {
        nd = sd_safetensors_count(st);
        fm = calloc(nd + 1, sizeof *fm);
        if (!fm) rc = SD_ENOMEM;
        for (size_t i = 0; i < nd && !rc; i++) fm[i] = (sd_lora_file_module){ .name = (char *)sd_safetensors_at(st, i)->name, .rank = 1 };
        if (!rc) qsort(fm, nd, sizeof *fm, cmp_mod);
    }
    sd_lora_file_info info = { fm, nd };
    if (!rc) rc = tiny_candidates(&m, &info, &v, &n);
    if (!rc && n != nd) rc = sd_err(SD_EFORMAT, "%s: %zu of %zu modules name a layer", delta, n, nd);
    for (size_t i = 0; i < n && !rc; i++) {
        sd_tensor *w = v[i].conv_host ? &v[i].conv->w->value : &v[i].lin->w->value;
        const sd_st_tensor *t = sd_safetensors_find(st, v[i].name);
        if (t->numel != sd_tensor_numel(w) || t->dtype != SD_ST_F32 || w->dtype != SD_F32) {
            rc = sd_err(SD_EFORMAT, "%s: %s does not fit", delta, v[i].name);
            break;
        }
        const float *d = t->data;
        float *W = w->data;
        for (int64_t k = 0; k < t->numel; k++) W[k] += mul * d[k];
    }
    if (!rc) rc = tiny_sample_png(&ctx, &g, &p, out);
    free(v);
    free(fm);
    sd_safetensors_close(st);
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_model_close(&m);
    return rc;
}

/* ---- SDXL: conditioning and one guided UNet call against make_sample_sdxl_golden.py ---------------- */

static const float *gget(const sd_safetensors *st, const char *name, int64_t *n)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    if (!t || t->dtype != SD_ST_F32) return NULL;
    *n = (int64_t)(t->nbytes / sizeof(float));
    return t->data;
}

static double maxrel(const float *a, const float *b, int64_t n)
{
    double mx = 0, ma = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > mx) mx = d;
        if (fabs((double)b[i]) > ma) ma = fabs((double)b[i]);
    }
    return mx / (ma > 0 ? ma : 1);
}

static void sdxl_report(int okv, const char *name, const char *what)
{
    printf("%s %s%s%s\n", okv ? "ok" : "not ok", name, what ? " # " : "", what ? what : "");
}

/* prints ok/not ok lines; returns the number of failures */
static int sdxl_golden(const char *model, const char *cfg, const char *golden, const char *lora)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    sd_safetensors *st = NULL;
    sd_clip_tokenizer *tok = NULL;
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    int fails = 0;
    char vp[4096], msg[256];
    int rc = open_tiny(&m, model, cfg);
    if (!rc) rc = sd_safetensors_open(golden, &st);
    if (!rc) rc = sd_clip_vocab_path(vp, sizeof vp);
    if (!rc) rc = sd_clip_tokenizer_load(vp, &tok);
    if (!rc) rc = sd_ctx_init(&ctx, SD_DEV_CPU, 1, (size_t)1 << 30);
    if (rc) {
        printf("not ok sdxl_golden_setup # %s\n", sd_errmsg());
        goto out;
    }
    /* the golden was computed on examples/tiny_model's weights at the time */
    {
        int64_t n;
        const float *c1 = gget(st, "check.unet_out", &n);
        sd_param *pp = sd_params_find(&m.unet_params, "model.diffusion_model.out.2.bias");
        int same = c1 && pp && n == pp->value.shape[0] && !memcmp(c1, pp->value.data, (size_t)n * sizeof(float));
        sdxl_report(same, "sdxl_golden_same_tiny_model",
                    same ? NULL : "examples/tiny_model writes other weights now: regenerate with "
                                  "tests/golden/gen/make_sample_sdxl_golden.py");
        if (!same) {
            fails++;
            goto out;
        }
    }
    /* a: 75 tokens; b: 225 (3 chunks); l: a with the LoRA file merged (multiplier 0.7) */
    const char *cases[3] = { "a", "b", "l" };
    const int mtl[3] = { 0, 225, 0 };
    for (int ci = 0; ci < 3; ci++) {
        const char *c = cases[ci];
        if (ci == 2) {
            size_t nte = 0, nun = 0;
            rc = sd_gen_lora_merge_sdxl(&m.unet, &m.unet_params, &m.te_params, lora, 0.7, &nte, &nun);
            int okv = !rc && nte == 2 && nun == 4;
            snprintf(msg, sizeof msg, "%zu text encoder, %zu UNet modules%s%s", nte, nun, rc ? ": " : "",
                     rc ? sd_errmsg() : "");
            sdxl_report(okv, "sdxl_golden_lora_merged", msg);
            if (!okv) {
                fails++;
                break;
            }
        }
        sd_gen_models g = { .unet = &m.unet, .clip = &m.clip, .clip2 = &m.clip2, .vae = &m.vae,
                            .family = SD_FAMILY_SDXL, .tok = tok, .max_token_length = mtl[ci], .vae_tiling = -1 };
        const char *prompt = ci != 1 ? "a (red:1.3) cat on a [mat]" : NULL;
        char longp[2048] = "";
        if (ci == 1) {
            for (int i = 1; i <= 40; i++) snprintf(longp + strlen(longp), sizeof longp - strlen(longp), "word%d, ", i);
            strcat(longp, "(end:0.8)");
            prompt = longp;
        }
        const char *neg = ci != 1 ? "blurry, (ugly:1.2)" : "lowres";
        int k = 0;
        sd_gen_sdxl_chunks(&g, &k);
        const int64_t S = 75 * k + 2, C = m.clip.cfg.width + m.clip2.cfg.width, P = m.clip2.cfg.projection_dim;
        const int64_t V = P + SD_SDXL_SIZE_EMB_DIM;
        /* ids and weights */
        for (int neg_i = 0; neg_i < 2 && ci < 2; neg_i++) {
            int32_t i1[3 * 77], i2[3 * 77];
            float w[227];
            char nm[64];
            rc = sd_gen_sdxl_prompt_rows(&g, neg_i ? neg : prompt, i1, i2, w, NULL);
            int64_t n1, n2, nw;
            snprintf(nm, sizeof nm, "%s.%sids1", c, neg_i ? "n" : "");
            const float *g1 = gget(st, nm, &n1);
            snprintf(nm, sizeof nm, "%s.%sids2", c, neg_i ? "n" : "");
            const float *g2 = gget(st, nm, &n2);
            snprintf(nm, sizeof nm, "%s.%sw", c, neg_i ? "n" : "");
            const float *gw = gget(st, nm, &nw);
            int okv = !rc && g1 && g2 && gw && n1 == k * 77 && n2 == k * 77 && nw == S;
            for (int64_t i = 0; okv && i < k * 77; i++) okv = i1[i] == (int32_t)g1[i] && i2[i] == (int32_t)g2[i];
            for (int64_t i = 0; okv && i < S; i++) okv = w[i] == gw[i];
            snprintf(nm, sizeof nm, "sdxl_golden_%s_%srows", c, neg_i ? "negative_" : "");
            sdxl_report(okv, nm, NULL);
            fails += !okv;
        }
        /* context and vector */
        float *cc = NULL, *cu = NULL, *pools = malloc(2 * (size_t)P * sizeof *pools);
        float *ctx2 = malloc((size_t)(2 * S * C) * sizeof *ctx2), *vec2 = malloc((size_t)(2 * V) * sizeof *vec2);
        int64_t Sc = 0, Su = 0;
        rc = pools && ctx2 && vec2 ? SD_OK : SD_ENOMEM;
        if (!rc) rc = sd_gen_sdxl_encode_prompt(&ctx, &g, prompt, &cc, &Sc, pools);
        if (!rc) rc = sd_gen_sdxl_encode_prompt(&ctx, &g, neg, &cu, &Su, pools + P);
        int64_t nctx = 0, nvec = 0, nx = 0, neps = 0;
        char nm[64];
        snprintf(nm, sizeof nm, "%s.context", c);
        const float *gctx = gget(st, nm, &nctx);
        snprintf(nm, sizeof nm, "%s.vec", c);
        const float *gvec = gget(st, nm, &nvec);
        snprintf(nm, sizeof nm, "%s.x", ci == 2 ? "a" : c);
        const float *gx = gget(st, nm, &nx);
        snprintf(nm, sizeof nm, "%s.eps", c);
        const float *geps = gget(st, nm, &neps);
        if (!rc && (Sc != S || Su != S || !gctx || nctx != 2 * S * C || !gvec || nvec != 2 * V || !gx || !geps))
            rc = sd_err(SD_EFORMAT, "golden shapes");
        double rctx = 1, rvec = 1, reps = 1;
        if (!rc) {
            memcpy(ctx2, cu, (size_t)(S * C) * sizeof *ctx2);
            memcpy(ctx2 + S * C, cc, (size_t)(S * C) * sizeof *ctx2);
            sd_gen_sdxl_vector(vec2, pools + P, P, 128, 128, 0, 0, 128, 128);
            sd_gen_sdxl_vector(vec2 + V, pools, P, 128, 128, 0, 0, 128, 128);
            rctx = maxrel(ctx2, gctx, 2 * S * C);
            rvec = maxrel(vec2, gvec, 2 * V);
            /* one guided UNet call as the sampler makes it */
            int64_t per = nx;
            float *x2 = malloc((size_t)(2 * per) * sizeof *x2), *y2 = malloc((size_t)(2 * per) * sizeof *y2);
            float tt[2] = { 501.0f, 501.0f };
            if (!x2 || !y2) rc = SD_ENOMEM;
            if (!rc) {
                memcpy(x2, gx, (size_t)per * sizeof *x2);
                memcpy(x2 + per, gx, (size_t)per * sizeof *x2);
                sd_tensor xt = sd_tensor_wrap(x2, SD_F32, SD_DIMS(2, 4, 16, 16));
                sd_tensor yt = sd_tensor_wrap(y2, SD_F32, SD_DIMS(2, 4, 16, 16));
                sd_tensor tv = sd_tensor_wrap(tt, SD_F32, SD_DIMS(2));
                sd_tensor ct = sd_tensor_wrap(ctx2, SD_F32, SD_DIMS(2, S, C));
                sd_tensor vt = sd_tensor_wrap(vec2, SD_F32, SD_DIMS(2, V));
                rc = sd_unet_forward(&ctx, &m.unet, NULL, &yt, &xt, &tv, &ct, &vt);
            }
            if (!rc) {
                for (int64_t i = 0; i < per; i++) y2[i] = y2[i] + 7.5f * (y2[per + i] - y2[i]);
                reps = maxrel(y2, geps, per);
            }
            free(x2);
            free(y2);
        }
        if (rc) printf("# %s: %s\n", c, sd_errmsg());
        snprintf(msg, sizeof msg, "max relative difference %.3g", rctx);
        snprintf(nm, sizeof nm, "sdxl_golden_%s_context", c);
        sdxl_report(!rc && rctx < 1e-5, nm, msg);
        snprintf(msg, sizeof msg, "max relative difference %.3g", rvec);
        snprintf(nm, sizeof nm, "sdxl_golden_%s_vector", c);
        sdxl_report(!rc && rvec < 1e-5, nm, msg);
        snprintf(msg, sizeof msg, "max relative difference %.3g", reps);
        snprintf(nm, sizeof nm, "sdxl_golden_%s_guided_unet", c);
        sdxl_report(!rc && reps < 1e-4, nm, msg);
        fails += !(!rc && rctx < 1e-5) + !(!rc && rvec < 1e-5) + !(!rc && reps < 1e-4);
        free(cc);
        free(cu);
        free(pools);
        free(ctx2);
        free(vec2);
        rc = SD_OK;
    }
out:
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_clip_tokenizer_free(tok);
    sd_safetensors_close(st);
    sd_model_close(&m);
    return fails;
}

/* A kohya-named SDXL LoRA for the tiny SDXL model: rank 2, alpha 1, random down/up (seeded), on a UNet
 * attention linear, a UNet 3×3 conv, a TE1 and a TE2 linear. With "bad" a module naming no layer. */
static int make_sdxl_lora(const char *model, const char *cfg, const char *out, uint64_t seed, int bad)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    int rc = open_tiny(&m, model, cfg);
    if (rc) return rc;
    static const struct { const char *prefix, *suffix, *lora; int te; } pick[] = {
        { "model.diffusion_model.", ".attn2.to_k.weight", "lora_unet_", 0 },
        { "model.diffusion_model.", ".in_layers.2.weight", "lora_unet_", 0 },
        { "conditioner.embedders.0.transformer.", ".self_attn.q_proj.weight", "lora_te1_", 1 },
        { "conditioner.embedders.1.model.", ".mlp.fc1.weight", "lora_te2_", 1 },
    };
    sd_safetensors_writer *w = NULL;
    rc = sd_safetensors_writer_new(&w);
    float *bufs[8] = { 0 };
    int nb = 0;
    static float alpha = 1.0f;
    for (size_t k = 0; k < 4 && !rc; k++) {
        sd_params *r = pick[k].te ? &m.te_params : &m.unet_params;
        sd_param *p = NULL;
        for (size_t i = 0; i < sd_params_count(r) && !p; i++) {
            sd_param *q = sd_params_at(r, i);
            size_t kl = strlen(q->key), sl = strlen(pick[k].suffix);
            if (!strncmp(q->key, pick[k].prefix, strlen(pick[k].prefix)) && kl > sl &&
                !strcmp(q->key + kl - sl, pick[k].suffix))
                p = q;
        }
        if (!p) {
            rc = sd_err(SD_ENOTFOUND, "no parameter *%s", pick[k].suffix);
            break;
        }
        char name[512], key[600];
        const char *base = p->key + strlen(pick[k].prefix);
        size_t l = strlen(base) - 7;
        snprintf(name, sizeof name, "%s", pick[k].lora);
        size_t o = strlen(name);
        for (size_t i = 0; i < l && o + 1 < sizeof name; i++) name[o++] = base[i] == '.' ? '_' : base[i];
        name[o] = 0;
        if (bad && k == 3) snprintf(name, sizeof name, "lora_te2_text_model_encoder_layers_99_mlp_fc1");
        const sd_tensor *t = &p->value;
        int64_t out_c = t->shape[0], in_c = t->shape[1], kh = t->ndim == 4 ? t->shape[2] : 1,
                kw = t->ndim == 4 ? t->shape[3] : 1;
        float *d = malloc((size_t)(2 * in_c * kh * kw) * sizeof *d), *u = malloc((size_t)(out_c * 2) * sizeof *u);
        bufs[nb++] = d;
        bufs[nb++] = u;
        if (!d || !u) {
            rc = SD_ENOMEM;
            break;
        }
        sd_rng g = sd_rng_key(seed, 2, (uint32_t)k, SD_RNG_INIT);
        rc = sd_rng_fill_normal(&g, 0, d, (size_t)(2 * in_c * kh * kw));
        if (!rc) rc = sd_rng_fill_normal(&g, (uint64_t)1 << 32, u, (size_t)(out_c * 2));
        for (int64_t i = 0; i < out_c * 2; i++) u[i] *= 0.2f;
        snprintf(key, sizeof key, "%s.lora_down.weight", name);
        if (!rc) {
            if (t->ndim == 4) rc = sd_safetensors_writer_add(w, key, SD_ST_F32, 4, (int64_t[]){ 2, in_c, kh, kw }, d);
            else rc = sd_safetensors_writer_add(w, key, SD_ST_F32, 2, (int64_t[]){ 2, in_c }, d);
        }
        snprintf(key, sizeof key, "%s.lora_up.weight", name);
        if (!rc) {
            if (t->ndim == 4) rc = sd_safetensors_writer_add(w, key, SD_ST_F32, 4, (int64_t[]){ out_c, 2, 1, 1 }, u);
            else rc = sd_safetensors_writer_add(w, key, SD_ST_F32, 2, (int64_t[]){ out_c, 2 }, u);
        }
        snprintf(key, sizeof key, "%s.alpha", name);
        if (!rc) rc = sd_safetensors_writer_add(w, key, SD_ST_F32, 0, NULL, &alpha);
    }
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    sd_safetensors_writer_free(w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    sd_model_close(&m);
    return rc;
}

/* IN with its SGM-named UNet modules (lora_unet_input_blocks_…) renamed to their Diffusers names
 * (lora_unet_down_blocks_…) by sd_lora_sdxl_unet_name, other tensors and the metadata as they are;
 * "mixed": the first renamed module is also kept under its SGM name. Prints the renamed modules. */
static int sdxl_lora_diffusers(const char *model, const char *cfg, const char *in, const char *out, int mixed)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    int rc = open_tiny(&m, model, cfg);
    if (rc) return rc;
    sd_safetensors *st = NULL;
    sd_safetensors_writer *w = NULL;
    rc = sd_safetensors_open(in, &st);
    if (!rc) rc = sd_safetensors_writer_new(&w);
    size_t n = st ? sd_safetensors_count(st) : 0, nmod = 0;
    char (*names)[512] = calloc(n ? n : 1, sizeof *names);
    char first[512] = "";
    if (!rc && !names) rc = SD_ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        snprintf(names[i], sizeof names[i], "%s", t->name);
        const char *dot = strchr(t->name, '.');
        if (!strncmp(t->name, "lora_unet_", 10) && dot) {
            char mod[512], dn[512];
            snprintf(mod, sizeof mod, "%.*s", (int)(dot - t->name), t->name);
            int k = sd_lora_sdxl_unet_name(&m.unet, mod, 0, dn, sizeof dn);
            if (k < 0) rc = k;
            if (k == 1) {
                snprintf(names[i], sizeof names[i], "%s%s", dn, dot);
                if (!first[0]) snprintf(first, sizeof first, "%s", mod);
                if (!strcmp(dot, ".lora_down.weight")) {
                    printf("%s %s\n", mod, dn);
                    nmod++;
                }
                if (mixed && !strcmp(mod, first))
                    rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
            }
        }
        if (!rc) rc = sd_safetensors_writer_add(w, names[i], t->dtype, t->ndim, t->shape, t->data);
    }
    for (size_t i = 0; i < (st ? sd_safetensors_meta_count(st) : 0) && !rc; i++) {
        const char *k, *v;
        sd_safetensors_meta_at(st, i, &k, &v);
        rc = sd_safetensors_writer_set_meta(w, k, v);
    }
    if (!rc && !nmod) rc = sd_err(SD_ENOTFOUND, "%s: no SGM-named UNet module", in);
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    sd_safetensors_writer_free(w);
    free(names);
    sd_safetensors_close(st);
    sd_model_close(&m);
    return rc;
}

/* One samples-during-training round (train/loop_sample.c) on an SDXL model, at step 2 with
 * --sample_every_n_steps 2 and --max_token_length MTL: as sd-train would call it. */
static int sdxl_train_round(const char *model, const char *cfg, const char *prompts, const char *outdir, int mtl)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    sd_train_config c;
    sd_train_config_default(&c);
    c.model = model;
    c.sample_prompts = prompts;
    c.sample_every_n_steps = 2;
    c.output_name = "s";
    c.max_token_length = mtl;
    sd_train_sampling smp;
    memset(&smp, 0, sizeof smp);
    sd_clip_tokenizer *tok = NULL;
    sd_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    char vp[4096];
    int rc = sd_train_sampling_init(&smp, &c);
    if (!rc) rc = open_tiny(&m, model, cfg);
    if (!rc) rc = sd_clip_vocab_path(vp, sizeof vp);
    if (!rc) rc = sd_clip_tokenizer_load(vp, &tok);
    if (!rc) rc = sd_ctx_init(&ctx, SD_DEV_CPU, 1, (size_t)1 << 20);
    if (!rc)
        rc = sd_train_sampling_attach(&smp, &c, &m.unet, &m.clip, m.have_clip2 ? &m.clip2 : NULL, &m.vae, m.cfg.family,
                                      tok, 0, NULL, 3, outdir, NULL);
    if (!rc) rc = sd_train_sampling_maybe(&smp, &ctx, SD_SAMPLE_NO_EPOCH, 1);   /* not due */
    if (!rc) rc = sd_train_sampling_maybe(&smp, &ctx, SD_SAMPLE_NO_EPOCH, 2);
    if (!rc) printf("%lld\n", (long long)smp.images);
    sd_train_sampling_free(&smp);
    if (ctx.threads) sd_ctx_free(&ctx);
    sd_clip_tokenizer_free(tok);
    sd_model_close(&m);
    return rc;
}

static int read_png_text(const char *path, const char *key, char **val)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = sd_read_file(path, 0, &buf, &n);
    if (rc) return rc;
    sd_png_text_list l;
    rc = sd_png_read_text((const uint8_t *)buf, n, &l);
    free(buf);
    if (rc) return rc;
    const char *v = sd_png_text_get(&l, key);
    *val = v ? strdup(v) : NULL;
    sd_png_text_list_free(&l);
    return v ? SD_OK : SD_ENOTFOUND;
}

/* ---- unit tests -------------------------------------------------------------------------------- */

static void test_due(void)
{
    sd_sample_triggers t = { 0 };
    /* nothing configured */
    T_EQ_INT(sd_sample_due(&t, 0, 0), 0);
    T_EQ_INT(sd_sample_due(&t, SD_SAMPLE_NO_EPOCH, 10), 0);
    t.sample_at_first = 1;
    T_EQ_INT(sd_sample_due(&t, 0, 0), 1);
    T_EQ_INT(sd_sample_due(&t, SD_SAMPLE_NO_EPOCH, 5), 0);
    /* every n steps: only the per-step call */
    t = (sd_sample_triggers){ .every_n_steps = 5 };
    T_EQ_INT(sd_sample_due(&t, 0, 0), 0);
    T_EQ_INT(sd_sample_due(&t, SD_SAMPLE_NO_EPOCH, 4), 0);
    T_EQ_INT(sd_sample_due(&t, SD_SAMPLE_NO_EPOCH, 5), 1);
    T_EQ_INT(sd_sample_due(&t, SD_SAMPLE_NO_EPOCH, 10), 1);
    T_EQ_INT(sd_sample_due(&t, 1, 10), 0);     /* epoch end: not with steps only */
    /* every n epochs: steps ignored */
    t = (sd_sample_triggers){ .every_n_steps = 5, .every_n_epochs = 2 };
    T_EQ_INT(sd_sample_due(&t, SD_SAMPLE_NO_EPOCH, 10), 0);
    T_EQ_INT(sd_sample_due(&t, 1, 10), 0);
    T_EQ_INT(sd_sample_due(&t, 2, 11), 1);
    T_EQ_INT(sd_sample_due(&t, 4, 13), 1);
    /* a resumed run's "at first" call (epoch 0, steps > 0) samples with every_n_epochs */
    T_EQ_INT(sd_sample_due(&t, 0, 100), 1);
    t.every_n_epochs = 0;
    T_EQ_INT(sd_sample_due(&t, 0, 100), 0);
}

static void test_file_name(void)
{
    char b[256];
    time_t when = 1700000000;   /* the name uses local time: compare with strftime's */
    struct tm tmv;
    char ts[32], want[256];
    localtime_r(&when, &tmv);
    strftime(ts, sizeof ts, "%Y%m%d%H%M%S", &tmv);
    T_EQ_INT(sd_sample_file_name(b, sizeof b, NULL, SD_SAMPLE_NO_EPOCH, 250, 3, when, 0, 0), SD_OK);
    snprintf(want, sizeof want, "000250_03_%s.png", ts);
    T_EQ_STR(b, want);
    T_EQ_INT(sd_sample_file_name(b, sizeof b, "mylora", 2, 250, 12, when, 1, 42), SD_OK);
    snprintf(want, sizeof want, "mylora_e000002_12_%s_42.png", ts);
    T_EQ_STR(b, want);
    T_EQ_INT(sd_sample_file_name(b, sizeof b, "x", 0, 0, 0, when, 0, 0), SD_OK);
    snprintf(want, sizeof want, "x_e000000_00_%s.png", ts);
    T_EQ_STR(b, want);
    T_EQ_INT(sd_sample_file_name(b, sizeof b, NULL, SD_SAMPLE_NO_EPOCH, 12345678, 100, when, 0, 0), SD_OK);
    snprintf(want, sizeof want, "12345678_100_%s.png", ts);
    T_EQ_STR(b, want);
    T_EQ_INT(sd_sample_file_name(b, 10, "long", 1, 1, 1, when, 0, 0), SD_ERANGE);
}

static void test_infotext(void)
{
    sd_infotext t = { .prompt = "a cat", .negative_prompt = "blurry", .steps = 20, .sampler = "Euler a",
                      .scale = 7.0, .seed = 123, .width = 512, .height = 768 };
    char *s = sd_infotext_format(&t);
    T_EQ_STR(s, "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768");
    free(s);
    t.negative_prompt = "";
    t.scale = 7.5;
    t.model_hash = "0123456789";
    t.model = "my,model";
    t.clip_skip = 2;
    t.lora_hashes = "a: 0123456789ab, b: ba9876543210";
    t.version = "sd-sample 0.1.0";
    s = sd_infotext_format(&t);
    T_EQ_STR(s, "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 123, Size: 512x768, Model hash: 0123456789, "
                "Model: \"my,model\", Clip skip: 2, Lora hashes: \"a: 0123456789ab, b: ba9876543210\", "
                "Version: sd-sample 0.1.0");
    free(s);
    /* empty prompt: A1111 strips the text */
    sd_infotext e = { .prompt = "  ", .steps = 1, .sampler = "DDIM", .scale = 1.25, .seed = 0, .width = 8, .height = 8 };
    s = sd_infotext_format(&e);
    T_EQ_STR(s, "Steps: 1, Sampler: DDIM, CFG scale: 1.25, Seed: 0, Size: 8x8");
    free(s);
    /* quoting escapes as json.dumps(ensure_ascii=False) */
    e.model = "a\"b:\\c\tö";
    s = sd_infotext_format(&e);
    T_CHECKF(strstr(s, "Model: \"a\\\"b:\\\\c\\tö\"") != NULL, "%s", s);
    free(s);
    T_EQ_STR(sd_sampler_a1111_name(SD_SAMPLER_EULER_A), "Euler a");
    T_EQ_STR(sd_sampler_a1111_name(SD_SAMPLER_DPMSOLVER_PP), "DPM++ 2M");
    T_EQ_STR(sd_sampler_a1111_name(SD_SAMPLER_DPMSINGLE), "dpmsingle");
}

/* ---- the tiny model -------------------------------------------------------------------------- */

static sd_model M;
static sd_clip_tokenizer *TOK;
static int have_model;

static int setup_model(void)
{
    const char *mp = t_path("sample_tiny.safetensors"), *cp = t_path("sample_tiny.toml");
    int rc = make_model(mp, cp);
    if (!rc) rc = open_tiny(&M, mp, cp);
    char vp[4096];
    if (!rc) rc = sd_clip_vocab_path(vp, sizeof vp);
    if (!rc) rc = sd_clip_tokenizer_load(vp, &TOK);
    have_model = rc == SD_OK;
    if (rc) printf("# setup: %s\n", sd_errmsg());
    return rc;
}

static sd_gen_models gm(void)
{
    sd_gen_models g = { .unet = &M.unet, .clip = &M.clip, .vae = &M.vae, .family = SD_FAMILY_SD1, .tok = TOK,
                        .clip_skip = 1, .vae_tiling = -1 };
    return g;
}

static void test_prompt_encoding(void)
{
    if (!have_model) { T_SKIP("prompt_encoding", "no model"); return; }
    sd_ctx ctx;
    if (sd_ctx_init(&ctx, SD_DEV_CPU, 1, 0)) { T_CHECK(0); return; }
    sd_gen_models g = gm();
    const int64_t C = M.clip.cfg.width;
    float *a = NULL, *b = NULL, *c = NULL;
    int k = 0;
    /* chunk counts: 75 tokens fit one chunk, 76 need two, more than 225 are cut to three */
    char text[4096] = "";
    for (int i = 0; i < 75; i++) strcat(text, "a ");
    T_EQ_INT(sd_gen_prompt_chunks(&g, text, &k), SD_OK);
    T_EQ_INT(k, 1);
    strcat(text, "b");
    T_EQ_INT(sd_gen_prompt_chunks(&g, text, &k), SD_OK);
    T_EQ_INT(k, 2);
    for (int i = 0; i < 200; i++) strcat(text, " c");
    T_EQ_INT(sd_gen_prompt_chunks(&g, text, &k), SD_OK);
    T_EQ_INT(k, 3);
    T_EQ_INT(sd_gen_prompt_chunks(&g, "", &k), SD_OK);
    T_EQ_INT(k, 1);
    /* weight 1 spelled out = plain; "(cat)" differs; the mean is preserved */
    T_EQ_INT(sd_gen_encode_prompt(&ctx, &g, "a photo of a cat", 1, &a), SD_OK);
    T_EQ_INT(sd_gen_encode_prompt(&ctx, &g, "a photo of a (cat:1.0)", 1, &b), SD_OK);
    T_EQ_INT(sd_gen_encode_prompt(&ctx, &g, "a photo of a (cat:1.5)", 1, &c), SD_OK);
    if (a && b && c) {
        T_CHECK(!memcmp(a, b, (size_t)(77 * C) * sizeof *a));
        T_CHECK(memcmp(a, c, (size_t)(77 * C) * sizeof *a) != 0);
        double sa = 0, sc = 0;
        for (int64_t i = 0; i < 77 * C; i++) sa += a[i], sc += c[i];
        T_NEAR(sa / (77.0 * C), sc / (77.0 * C), 1e-5 * (fabs(sa) / (77.0 * C) + 1e-3));
        /* BOS row (position 0) scaled by the mean ratio only; cat's row ("a photo of a cat": BOS a photo
           of a cat → position 5) by 1.5 × ratio */
        double r0 = c[0] / a[0], r5 = c[5 * C] / a[5 * C];
        T_NEAR(r5 / r0, 1.5, 1e-4);
    }
    free(a), free(b), free(c);
    a = b = NULL;
    /* forced chunks: two chunks of a short prompt = its 77 rows + a chunk of BOS/EOS padding */
    T_EQ_INT(sd_gen_encode_prompt(&ctx, &g, "a photo of a cat", 2, &b), SD_OK);
    T_EQ_INT(sd_gen_encode_prompt(&ctx, &g, "a photo of a cat", 1, &a), SD_OK);
    if (a && b) T_CHECK(!memcmp(a, b, (size_t)(77 * C) * sizeof *a));
    free(a), free(b);
    sd_ctx_free(&ctx);
}

/* Token rows and weights against the reference's own functions (tests/golden/gen/
 * make_sample_lpw_golden.py: parse_prompt_attention, get_prompts_with_weights,
 * pad_tokens_and_weights and the chunk fix-ups, verbatim). Needs only the tokenizer. */
static void test_lpw_golden(void)
{
    char *buf = NULL;
    size_t n = 0;
    if (sd_read_file(root_path("tests/data/sample/lpw_rows.tsv"), 0, &buf, &n)) {
        T_CHECKF(0, "%s", sd_errmsg());
        return;
    }
    sd_clip_tokenizer *tok = TOK;
    char vp[4096];
    if (!tok && (sd_clip_vocab_path(vp, sizeof vp) || sd_clip_tokenizer_load(vp, &tok))) {
        T_CHECKF(0, "%s", sd_errmsg());
        free(buf);
        return;
    }
    int lines = 0, bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[5];
        int nf = 0;
        for (char *q = line; nf < 5; nf++) {
            f[nf] = q;
            char *tab = strchr(q, '\t');
            if (!tab) { nf++; break; }
            *tab = 0;
            q = tab + 1;
        }
        if (nf != 5) { bad++; continue; }
        size_t hl = strlen(f[0]);
        char text[4096];
        for (size_t i = 0; i + 1 < hl && i / 2 < sizeof text - 1; i += 2) {
            unsigned v;
            sscanf(f[0] + i, "%2x", &v);
            text[i / 2] = (char)v;
        }
        text[hl / 2 < sizeof text ? hl / 2 : sizeof text - 1] = 0;
        int pad = atoi(f[1]), k = atoi(f[2]);
        sd_gen_models g = { .tok = tok, .family = pad == 0 ? SD_FAMILY_SD2 : SD_FAMILY_SD1 };
        int32_t ids[3 * 77];
        float w[3 * 77];
        int rc = sd_gen_prompt_rows(&g, text, k, ids, w, NULL);
        int ok = rc == SD_OK;
        char *q = f[3], *r = f[4];
        for (int i = 0; ok && i < 77 * k; i++) {
            long id = strtol(q, &q, 10);
            double wv = strtod(r, &r);
            if (id != ids[i]) {
                printf("# '%.40s' pad %d: id %d is %d, reference %ld\n", text, pad, i, ids[i], id);
                ok = 0;
            }
            if (fabs(wv - w[i]) > 1e-6 * fabs(wv)) {
                printf("# '%.40s' pad %d: weight %d is %.9g, reference %.9g\n", text, pad, i, w[i], wv);
                ok = 0;
            }
        }
        if (!ok) bad++;
        lines++;
    }
    T_CHECKF(lines >= 50 && bad == 0, "%d rows, %d differ", lines, bad);
    if (tok != TOK) sd_clip_tokenizer_free(tok);
    free(buf);
}

/* The whole pipeline against tests/golden/gen/make_sample_e2e_golden.py (the reference's LPW text
 * conditioning, DDIM with guidance, VAE decode and pixel mapping in PyTorch, from our x_T). */
static void test_e2e_golden(void)
{
    if (!have_model) { T_SKIP("e2e_golden", "no model"); return; }
    sd_safetensors *st = NULL;
    if (sd_safetensors_open(root_path("tests/data/sample/e2e_golden.safetensors"), &st)) {
        T_CHECKF(0, "%s", sd_errmsg());
        return;
    }
    const sd_st_tensor *xT = sd_safetensors_find(st, "xT"), *pix = sd_safetensors_find(st, "pixels"),
                       *pix1 = sd_safetensors_find(st, "pixels_nocfg");
    T_CHECK(xT && pix && pix1);
    if (!xT || !pix || !pix1) { sd_safetensors_close(st); return; }
    uint64_t seeds[2] = { 11, 12 };
    float x[2 * 4 * 16 * 16];
    T_EQ_INT(sd_sampler_initial_noise(2, 4 * 16 * 16, seeds, x), SD_OK);
    T_CHECK(xT->nbytes == sizeof x && !memcmp(xT->data, x, sizeof x));
    sd_ctx ctx;
    sd_gen_models g = gm();
    sd_gen_params p = { .prompt = "a (photo:1.2) of a [cat], sitting", .negative_prompt = "blurry, (ugly:1.3)",
                        .width = 32, .height = 32, .steps = 3, .scale = 7.5, .sampler = SD_SAMPLER_DDIM, .batch = 2,
                        .seeds = seeds };
    if (sd_ctx_init(&ctx, SD_DEV_CPU, 2, sd_txt2img_scratch_bytes(&g, &p))) { T_CHECK(0); sd_safetensors_close(st); return; }
    sd_image im[2] = { 0 };
    T_EQ_INT(sd_txt2img(&ctx, &g, &p, im), SD_OK);
    const float *ref = pix->data;
    int maxd = 0, nd = 0;
    for (int b = 0; b < 2 && im[b].px; b++)
        for (int i = 0; i < 32 * 32 * 3; i++) {
            int d = abs((int)im[b].px[i] - (int)ref[b * 32 * 32 * 3 + i]);
            if (d > maxd) maxd = d;
            nd += d > 0;
        }
    printf("# guided: max pixel difference %d, %d of %d pixels differ\n", maxd, nd, 2 * 32 * 32 * 3);
    T_CHECKF(maxd <= 1 && nd < 2 * 32 * 32 * 3 / 50, "max %d, %d differ", maxd, nd);
    sd_image_free(&im[0]);
    sd_image_free(&im[1]);
    p.scale = 1.0;
    p.batch = 1;
    T_EQ_INT(sd_txt2img(&ctx, &g, &p, im), SD_OK);
    ref = pix1->data;
    maxd = 0, nd = 0;
    for (int i = 0; im[0].px && i < 32 * 32 * 3; i++) {
        int d = abs((int)im[0].px[i] - (int)ref[i]);
        if (d > maxd) maxd = d;
        nd += d > 0;
    }
    printf("# unguided: max pixel difference %d, %d differ\n", maxd, nd);
    T_CHECKF(maxd <= 1 && nd < 32 * 32 * 3 / 50, "max %d, %d differ", maxd, nd);
    sd_image_free(&im[0]);
    sd_ctx_free(&ctx);
    sd_safetensors_close(st);
}

static int gen(sd_ctx *ctx, const sd_gen_models *g, const char *prompt, const char *neg, int w, int h, int steps,
               double scale, sd_sampler_kind k, int B, const uint64_t *seeds, sd_image *out)
{
    sd_gen_params p = { .prompt = prompt, .negative_prompt = neg, .width = w, .height = h, .steps = steps,
                        .scale = scale, .sampler = k, .batch = B, .seeds = seeds };
    return sd_txt2img(ctx, g, &p, out);
}

static int same(const sd_image *a, const sd_image *b)
{
    return a->w == b->w && a->h == b->h && a->c == b->c && !memcmp(a->px, b->px, (size_t)a->w * a->h * a->c);
}

static void test_txt2img(void)
{
    if (!have_model) { T_SKIP("txt2img", "no model"); return; }
    sd_ctx c1, c2;
    sd_gen_models g = gm();
    sd_gen_params p0 = { .width = 64, .height = 64, .batch = 2 };
    if (sd_ctx_init(&c1, SD_DEV_CPU, 1, sd_txt2img_scratch_bytes(&g, &p0))) { T_CHECK(0); return; }
    if (sd_ctx_init(&c2, SD_DEV_CPU, 2, sd_txt2img_scratch_bytes(&g, &p0))) { sd_ctx_free(&c1); T_CHECK(0); return; }
    sd_image a[2] = { 0 }, b[2] = { 0 }, c[2] = { 0 }, d[1] = { 0 };
    uint64_t s12[2] = { 1, 2 }, s2[1] = { 2 }, s21[2] = { 2, 1 };
    T_EQ_INT(gen(&c1, &g, "a cat", "blurry", 32, 24, 3, 7.5, SD_SAMPLER_EULER_A, 2, s12, a), SD_OK);
    T_EQ_INT(a[0].w, 32);
    T_EQ_INT(a[0].h, 24);
    T_EQ_INT(a[0].c, 3);
    /* same again, another thread count */
    T_EQ_INT(gen(&c2, &g, "a cat", "blurry", 32, 24, 3, 7.5, SD_SAMPLER_EULER_A, 2, s12, b), SD_OK);
    T_CHECK(same(&a[0], &b[0]) && same(&a[1], &b[1]));
    /* a seed's image does not depend on its batch position (within float noise of the batched UNet:
       compare loosely) */
    T_EQ_INT(gen(&c1, &g, "a cat", "blurry", 32, 24, 3, 7.5, SD_SAMPLER_EULER_A, 2, s21, c), SD_OK);
    T_EQ_INT(gen(&c1, &g, "a cat", "blurry", 32, 24, 3, 7.5, SD_SAMPLER_EULER_A, 1, s2, d), SD_OK);
    int maxd = 0;
    for (int i = 0; i < 32 * 24 * 3; i++) {
        int e1 = abs((int)a[1].px[i] - (int)c[0].px[i]), e2 = abs((int)a[1].px[i] - (int)d[0].px[i]);
        if (e1 > maxd) maxd = e1;
        if (e2 > maxd) maxd = e2;
    }
    T_CHECKF(maxd <= 1, "batch position changed a pixel by %d", maxd);
    T_CHECK(!same(&a[0], &a[1]));
    for (int i = 0; i < 2; i++) sd_image_free(&b[i]), sd_image_free(&c[i]);
    sd_image_free(&d[0]);
    /* no guidance (scale 1) and another prompt change the image; every sampler runs */
    T_EQ_INT(gen(&c1, &g, "a cat", "blurry", 32, 24, 3, 1.0, SD_SAMPLER_EULER_A, 1, s12, b), SD_OK);
    T_CHECK(!same(&a[0], &b[0]));
    sd_image_free(&b[0]);
    T_EQ_INT(gen(&c1, &g, "a dog", "blurry", 32, 24, 3, 7.5, SD_SAMPLER_EULER_A, 1, s12, b), SD_OK);
    T_CHECK(!same(&a[0], &b[0]));
    sd_image_free(&b[0]);
    for (int k = 0; k < SD_SAMPLER_COUNT; k++) {
        int rc = gen(&c1, &g, "x", NULL, 16, 16, 4, 3.0, (sd_sampler_kind)k, 1, s12, b);
        T_CHECKF(rc == SD_OK, "%s: %s", sd_sampler_name((sd_sampler_kind)k), sd_errmsg());
        sd_image_free(&b[0]);
    }
    /* pndm needs 4 steps (the reference fails below) */
    T_EQ_INT(gen(&c1, &g, "x", NULL, 16, 16, 3, 3.0, SD_SAMPLER_PNDM, 1, s12, b), SD_EUNSUPPORTED);
    /* bad sizes */
    T_EQ_INT(gen(&c1, &g, "x", NULL, 20, 16, 3, 3.0, SD_SAMPLER_DDIM, 1, s12, b), SD_EINVAL);
    T_CHECKF(strstr(sd_errmsg(), "multiples of 8") != NULL, "%s", sd_errmsg());
    /* tiling: a tile covering the image = untiled; smaller tiles stay close */
    g.vae_tiling = 1;
    g.vae_tile = 64;
    T_EQ_INT(gen(&c1, &g, "a cat", "blurry", 32, 24, 3, 7.5, SD_SAMPLER_EULER_A, 2, s12, b), SD_OK);
    T_CHECK(same(&a[0], &b[0]));
    sd_image_free(&b[0]), sd_image_free(&b[1]);
    g.vae_tile = 8;
    T_EQ_INT(gen(&c1, &g, "a cat", "blurry", 32, 24, 3, 7.5, SD_SAMPLER_EULER_A, 2, s12, b), SD_OK);
    if (b[0].px) {
        double md = 0;
        for (int i = 0; i < 32 * 24 * 3; i++) md += abs((int)a[0].px[i] - (int)b[0].px[i]);
        md /= 32 * 24 * 3;
        T_CHECKF(md < 24, "tiled decode: mean |diff| %.2f", md);
        printf("# tiled (8 latent px, overlap 2) vs untiled: mean |diff| %.2f levels\n", md);
    }
    sd_image_free(&b[0]), sd_image_free(&b[1]);
    for (int i = 0; i < 2; i++) sd_image_free(&a[i]);
    sd_ctx_free(&c1);
    sd_ctx_free(&c2);
}

/* CUDA: the same generation on the GPU (models loaded there, host buffers staged through the
 * device scratch) against the CPU; skipped without a CUDA build or device. */
static void test_cuda_parity(void)
{
    if (!have_model) { T_SKIP("cuda_parity", "no model"); return; }
    sd_ctx gctx, cctx;
    if (sd_device_init(0) || sd_ctx_init(&gctx, SD_DEV_CUDA, 0, (size_t)1 << 30)) {
        char why[300];
        snprintf(why, sizeof why, "no CUDA build or device (%s)", sd_errmsg());
        T_SKIP("cuda_parity", why);
        return;
    }
    sd_model G;
    sd_model_opts o = { .config = t_path("sample_tiny.toml"), .v_param = -1 };
    int rc = sd_model_open(&G, t_path("sample_tiny.safetensors"), &o);
    if (!rc) rc = sd_model_set_inference(&G);
    if (!rc) rc = sd_model_load(&G, SD_DEV_CUDA);
    T_CHECKF(rc == SD_OK, "load on CUDA: %s", sd_errmsg());
    if (rc) { sd_ctx_free(&gctx); return; }
    sd_model_release_source(&G);
    sd_gen_models gc = gm(), gg = gm();
    gg.unet = &G.unet, gg.clip = &G.clip, gg.vae = &G.vae;
    uint64_t seeds[2] = { 3, 4 };
    const char *names[3] = { "euler_a 2 images", "dpmsolver++ weighted long", "ddim tiled" };
    for (int k = 0; k < 3; k++) {
        char longp[2048] = "a (photo:1.3) of a [cat]";
        if (k == 1)
            for (int i = 0; i < 90; i++) strcat(longp, ", x");
        sd_gen_params p = { .prompt = longp, .negative_prompt = "blurry", .width = 32, .height = 24, .steps = 4,
                            .scale = 7.5, .sampler = k == 0 ? SD_SAMPLER_EULER_A : k == 1 ? SD_SAMPLER_DPMSOLVER_PP
                                                                                           : SD_SAMPLER_DDIM,
                            .batch = k == 0 ? 2 : 1, .seeds = seeds };
        if (k == 2) gc.vae_tiling = gg.vae_tiling = 1, gc.vae_tile = gg.vae_tile = 8;
        if (sd_ctx_init(&cctx, SD_DEV_CPU, 2, sd_txt2img_scratch_bytes(&gc, &p))) { T_CHECK(0); break; }
        sd_image a[2] = { 0 }, b[2] = { 0 };
        rc = sd_txt2img(&cctx, &gc, &p, a);
        T_CHECKF(rc == SD_OK, "%s cpu: %s", names[k], sd_errmsg());
        rc = sd_txt2img(&gctx, &gg, &p, b);
        T_CHECKF(rc == SD_OK, "%s cuda: %s", names[k], sd_errmsg());
        for (int i = 0; i < p.batch && a[i].px && b[i].px; i++) {
            int md = 0;
            double mean = 0;
            for (int j = 0; j < 32 * 24 * 3; j++) {
                int d = abs((int)a[i].px[j] - (int)b[i].px[j]);
                if (d > md) md = d;
                mean += d;
            }
            mean /= 32 * 24 * 3;
            printf("# %s, image %d: CPU vs CUDA max pixel difference %d, mean %.3f\n", names[k], i, md, mean);
            T_CHECKF(md <= 4 && mean < 0.5, "%s: max %d mean %.3f", names[k], md, mean);
        }
        for (int i = 0; i < 2; i++) sd_image_free(&a[i]), sd_image_free(&b[i]);
        sd_ctx_free(&cctx);
    }
    /* the training round on the GPU context */
    sd_prompt_list pl;
    const char *pf = "a cat --w 64 --h 64 --s 2 --d 7\n";
    if (!sd_prompt_file_parse(pf, strlen(pf), "p.txt", &pl)) {
        sd_sample_run_opts so = { .output_dir = t_path("cuda_round"), .sampler = SD_SAMPLER_EULER, .write_parameters = 1 };
        rc = sd_sample_images(&gctx, &gg, &pl, &so, 1, 5);
        T_CHECKF(rc == SD_OK, "round on CUDA: %s", sd_errmsg());
        sd_prompt_list_free(&pl);
    }
    sd_model_close(&G);
    sd_ctx_free(&gctx);
    sd_device_shutdown();
}

static int count_cb(void *user, const sd_sample_prompt *p, int index, const sd_image *im, const char *path)
{
    int *n = user;
    (void)p;
    (void)im;
    struct stat sb;
    if (stat(path, &sb) || index != *n) return SD_ESTATE;
    (*n)++;
    return 0;
}

static void test_sample_round(void)
{
    if (!have_model) { T_SKIP("sample_round", "no model"); return; }
    const char *pf = "a cat --w 64 --h 64 --s 2 --d 7\n# comment\na dog --n ugly --w 64 --h 64 --s 2 --ss euler\n";
    sd_prompt_list pl;
    T_EQ_INT(sd_prompt_file_parse(pf, strlen(pf), "p.txt", &pl), SD_OK);
    sd_ctx ctx;
    sd_gen_models g = gm();
    /* a small trainer context: the round makes one of its own */
    if (sd_ctx_init(&ctx, SD_DEV_CPU, 1, (size_t)1 << 20)) { T_CHECK(0); return; }
    const char *out = t_path("sample_round");
    int n = 0;
    sd_sample_run_opts o = { .output_dir = out, .output_name = "run", .sampler = SD_SAMPLER_DDIM, .seed_base = 5,
                             .write_parameters = 1, .model_name = "run", .on_image = count_cb, .user = &n };
    time_t t0 = time(NULL);
    T_EQ_INT(sd_sample_images(&ctx, &g, &pl, &o, SD_SAMPLE_NO_EPOCH, 10), SD_OK);
    T_EQ_INT(n, 2);
    /* names: run_000010_00_<ts>_7.png and run_000010_01_<ts>.png (ts within the call) */
    int found0 = 0, found1 = 0;
    for (time_t t = t0; t <= time(NULL); t++) {
        char nm[256], path[1024];
        struct stat sb;
        sd_sample_file_name(nm, sizeof nm, "run", SD_SAMPLE_NO_EPOCH, 10, 0, t, 1, 7);
        snprintf(path, sizeof path, "%s/sample/%s", out, nm);
        if (!stat(path, &sb)) {
            found0 = 1;
            char *v = NULL;
            T_EQ_INT(read_png_text(path, "parameters", &v), SD_OK);
            T_CHECKF(v && !strcmp(v, "a cat\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 64x64, Model: run"),
                     "%s", v ? v : "(none)");
            free(v);
        }
        sd_sample_file_name(nm, sizeof nm, "run", SD_SAMPLE_NO_EPOCH, 10, 1, t, 0, 0);
        snprintf(path, sizeof path, "%s/sample/%s", out, nm);
        if (!stat(path, &sb)) {
            found1 = 1;
            char *v = NULL;
            T_EQ_INT(read_png_text(path, "parameters", &v), SD_OK);
            T_CHECKF(v && strstr(v, "a dog\nNegative prompt: ugly\nSteps: 2, Sampler: Euler, ") == v, "%s", v ? v : "");
            free(v);
        }
    }
    T_CHECK(found0 && found1);
    /* the epoch form */
    n = 0;
    T_EQ_INT(sd_sample_images(&ctx, &g, &pl, &o, 3, 10), SD_OK);
    T_EQ_INT(n, 2);
    sd_prompt_list_free(&pl);
    sd_ctx_free(&ctx);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        int rc;
        if (!strcmp(argv[1], "make-model") && argc == 4) rc = make_model(argv[2], argv[3]);
        else if (!strcmp(argv[1], "make-sd2") && argc == 4) rc = make_sd2(argv[2], argv[3]);
        else if (!strcmp(argv[1], "make-lora") && argc == 6)
            rc = make_lora(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 10));
        else if (!strcmp(argv[1], "make-ti") && argc == 6) rc = make_ti(argv[2], argv[3], argv[4], argv[5]);
        else if (!strcmp(argv[1], "make-sdxl-lora") && (argc == 6 || argc == 7))
            rc = make_sdxl_lora(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 10), argc == 7);
        else if (!strcmp(argv[1], "sdxl-lora-diffusers") && (argc == 6 || argc == 7))
            rc = sdxl_lora_diffusers(argv[2], argv[3], argv[4], argv[5], argc == 7);
        else if (!strcmp(argv[1], "sdxl-train-round") && argc == 7)
            rc = sdxl_train_round(argv[2], argv[3], argv[4], argv[5], atoi(argv[6]));
        else if (!strcmp(argv[1], "sdxl-golden") && argc == 6)
            return sdxl_golden(argv[2], argv[3], argv[4], argv[5]) ? 1 : 0;
        else if (!strcmp(argv[1], "lora-layers") && argc == 4) rc = lora_layers(argv[2], argv[3]);
        else if (!strcmp(argv[1], "gen-delta") && argc == 8)
            rc = gen_delta(argv[2], argv[3], argv[4], (float)atof(argv[5]), strtoull(argv[6], NULL, 10), argv[7]);
        else if (!strcmp(argv[1], "gen-hooked") && argc == 8)
            rc = gen_hooked(argv[2], argv[3], argv[4], (float)atof(argv[5]), strtoull(argv[6], NULL, 10), argv[7]);
        else if (!strcmp(argv[1], "initial-noise") && argc == 7) {
            uint64_t seeds[16];
            int B = 0;
            for (char *q = argv[2]; *q && B < 16;) {
                seeds[B++] = strtoull(q, &q, 10);
                if (*q == ',') q++;
            }
            int64_t per = atoll(argv[3]) * atoll(argv[4]) * atoll(argv[5]);
            float *x = malloc((size_t)(B * per) * sizeof *x);
            rc = x ? sd_sampler_initial_noise(B, per, seeds, x) : SD_ENOMEM;
            if (!rc) rc = sd_write_file_atomic(argv[6], x, (size_t)(B * per) * sizeof *x);
            free(x);
        } else if (!strcmp(argv[1], "text") && argc == 4) {
            char *v = NULL;
            rc = read_png_text(argv[2], argv[3], &v);
            if (!rc) printf("%s\n", v);
            free(v);
        } else if (!strcmp(argv[1], "size") && argc == 3) {
            sd_image im;
            /* colour type from IHDR (byte 25): 2 = RGB */
            char *buf = NULL;
            size_t n = 0;
            rc = sd_read_file(argv[2], 0, &buf, &n);
            int ct = !rc && n > 25 ? (unsigned char)buf[25] : -1;
            free(buf);
            if (!rc) rc = sd_image_load(argv[2], SD_ALPHA_DROP, &im, NULL);
            if (!rc) printf("%d %d %s\n", im.w, im.h, ct == 2 ? "rgb" : ct == 6 ? "rgba" : "other");
            if (!rc) sd_image_free(&im);
        } else if (!strcmp(argv[1], "maxdiff") && argc == 4) {
            sd_image x = { 0 }, y = { 0 };
            rc = sd_image_load(argv[2], SD_ALPHA_DROP, &x, NULL);
            if (!rc) rc = sd_image_load(argv[3], SD_ALPHA_DROP, &y, NULL);
            if (!rc) {
                int md = -1;
                if (x.w == y.w && x.h == y.h && x.c == y.c) {
                    md = 0;
                    for (size_t i = 0; i < (size_t)x.w * x.h * x.c; i++) {
                        int d = abs((int)x.px[i] - (int)y.px[i]);
                        if (d > md) md = d;
                    }
                }
                printf("%d\n", md);
            }
            sd_image_free(&x);
            sd_image_free(&y);
        } else {
            fprintf(stderr, "usage: see the comment at the top of tests/unit/test_sample.c\n");
            return 2;
        }
        if (rc) fprintf(stderr, "test_sample: %s\n", sd_errmsg());
        return rc ? 1 : 0;
    }
    T_RUN(test_due);
    T_RUN(test_file_name);
    T_RUN(test_infotext);
    setup_model();
    T_RUN(test_lpw_golden);
    T_RUN(test_prompt_encoding);
    T_RUN(test_e2e_golden);
    T_RUN(test_txt2img);
    T_RUN(test_sample_round);
    T_RUN(test_cuda_parity);
    if (have_model) {
        sd_model_close(&M);
        sd_clip_tokenizer_free(TOK);
    }
    T_DONE();
}
