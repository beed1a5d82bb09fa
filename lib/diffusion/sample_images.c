/* Text-to-image, sample triggers and names (see sample_images.h). */
#include "diffusion/sample_images.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "base/strbuf.h"
#include "base/fileio.h"
#include "base/half.h"
#include "base/rng.h"
#include "io/png_text.h"
#include "io/resample.h"
#include "io/embedding.h"
#include "io/safetensors.h"
#include "models/sdxl.h"
#include "text/caption.h"
#include "train/lora_file.h"
#include "train/lora_network.h"

#define CHUNK 75
#define ROW 77
#define MAX_MULT 3
#define MAX_TOKENS (CHUNK * MAX_MULT)

/* ---- prompt → tokens with weights ---------------------------------------------------------- */

typedef struct wtoks {
    int32_t ids[MAX_TOKENS];
    float w[MAX_TOKENS];
    int n;
    int truncated;
} wtoks;

static int push_ids(wtoks *t, const int32_t *ids, size_t n, float w)
{
    for (size_t k = 0; k < n; k++) {
        if (t->n == MAX_TOKENS) {
            t->truncated = 1;
            return 1;
        }
        t->ids[t->n] = ids[k];
        t->w[t->n] = w;
        t->n++;
    }
    return 0;
}

static int encode_text(const sd_gen_models *m, const char *s, size_t len, float w, wtoks *t)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (!len) return SD_OK;
    int rc = sd_clip_tokenizer_encode(m->tok, s, len, MAX_TOKENS + 1, &ids, &n);
    if (!rc) push_ids(t, ids, n, w);
    free(ids);
    return rc;
}

/* One weighted piece: text between textual-inversion tokens tokenized as usual, each token
 * replaced by its ids (leftmost match, the longest token at that position). */
static int encode_piece(const sd_gen_models *m, const char *s, float w, wtoks *t)
{
    while (*s && !t->truncated) {
        const char *best = NULL;
        const sd_gen_token *bt = NULL;
        for (int i = 0; i < m->ntokens; i++) {
            const char *p = strstr(s, m->tokens[i].token);
            if (p && (!best || p < best || (p == best && strlen(m->tokens[i].token) > strlen(bt->token)))) {
                best = p;
                bt = &m->tokens[i];
            }
        }
        if (!best) return encode_text(m, s, strlen(s), w, t);
        int rc = encode_text(m, s, (size_t)(best - s), w, t);
        if (rc) return rc;
        for (int k = 0; k < bt->count && !t->truncated; k++) {
            int32_t id = bt->first_id + k;
            push_ids(t, &id, 1, w);
        }
        s = best + strlen(bt->token);
    }
    return SD_OK;
}

/* get_prompts_with_weights: every weighted piece tokenized alone (no BOS/EOS), concatenated,
 * truncated to 225. */
static int prompt_tokens(const sd_gen_models *m, const char *text, wtoks *t)
{
    sd_weighted_piece *pc = NULL;
    int np = 0;
    t->n = 0;
    t->truncated = 0;
    int rc = sd_weighted_parse(text ? text : "", &pc, &np);
    if (rc) return rc;
    for (int i = 0; i < np && !rc && !t->truncated; i++) {
        if (m->ntokens) rc = encode_piece(m, pc[i].text, pc[i].weight, t);
        else rc = encode_text(m, pc[i].text, strlen(pc[i].text), pc[i].weight, t);
    }
    sd_weighted_free(pc, np);
    return rc;
}

static int chunks_for(int maxlen)
{
    /* max(1, min(3, (maxlen - 1) // 75 + 1)) with Python's floor division */
    int k = maxlen <= 0 ? 0 : (maxlen - 1) / CHUNK + 1;
    if (k > MAX_MULT) k = MAX_MULT;
    return k < 1 ? 1 : k;
}

int sd_gen_prompt_chunks(const sd_gen_models *m, const char *text, int *chunks)
{
    wtoks *t = malloc(sizeof *t);
    if (!t) return sd_err(SD_ENOMEM, "out of memory");
    int rc = prompt_tokens(m, text, t);
    if (!rc) *chunks = chunks_for(t->n);
    free(t);
    return rc;
}

/* A tensor over host memory on the CPU backend; on another backend a tensor from ctx->scratch
 * holding a copy of `host` (NULL: uninitialised output). Release with sd_arena_reset. */
static int stage(sd_ctx *ctx, sd_tensor *t, const void *host, sd_dtype dt, int nd, const int64_t *shape)
{
    if (ctx->backend == SD_DEV_CPU) {
        *t = sd_tensor_wrap((void *)host, dt, nd, shape);
        return SD_OK;
    }
    int rc = sd_arena_tensor(&ctx->scratch, t, dt, nd, shape);
    if (!rc && host) rc = sd_tensor_upload(t, host, sd_tensor_nbytes(t));
    return rc;
}

/* out (host) ← t, when t was staged on a device */
static int unstage(sd_ctx *ctx, const sd_tensor *t, void *host)
{
    return ctx->backend == SD_DEV_CPU ? SD_OK : sd_tensor_download(t, host, sd_tensor_nbytes(t));
}

static int32_t pad_id(const sd_gen_models *m)
{
    return m->family == SD_FAMILY_SD2 ? SD_CLIP_PAD_SD2 : SD_CLIP_PAD_SD1;
}

int sd_gen_prompt_rows(const sd_gen_models *m, const char *text, int chunks, int32_t *ids, float *weights,
                       int *truncated)
{
    wtoks *t = malloc(sizeof *t);
    if (!t) return sd_err(SD_ENOMEM, "out of memory");
    int rc = prompt_tokens(m, text, t);
    if (rc) {
        free(t);
        return rc;
    }
    int k = chunks > 0 ? chunks : chunks_for(t->n);
    if (k > MAX_MULT) k = MAX_MULT;
    const int L = CHUNK * k + 2;
    int32_t row[CHUNK * MAX_MULT + 2];
    const int32_t pad = pad_id(m);
    /* pad_tokens_and_weights (no_boseos_middle = False): BOS + ids + EOS… */
    row[0] = SD_CLIP_BOS;
    for (int i = 0; i < L - 1; i++) row[1 + i] = i < t->n ? t->ids[i] : SD_CLIP_EOS;
    int nw = 0;
    if (t->n == 0) {
        for (int i = 0; i < ROW * k; i++) weights[nw++] = 1.0f;
    } else {
        for (int j = 0; j < k; j++) {
            weights[nw++] = 1.0f;
            for (int i = j * CHUNK; i < t->n && i < (j + 1) * CHUNK; i++) weights[nw++] = t->w[i];
            weights[nw++] = 1.0f;
        }
        while (nw < ROW * k) weights[nw++] = 1.0f;
    }
    /* get_unweighted_text_embeddings: chunks of 77 with BOS/EOS fixed up (only when k > 1) */
    for (int j = 0; j < k; j++) {
        int32_t *c = ids + j * ROW;
        memcpy(c, row + j * CHUNK, ROW * sizeof *c);
        if (k > 1) {
            c[0] = row[0];
            if (pad == SD_CLIP_EOS) {
                c[ROW - 1] = row[L - 1];
            } else {
                if (c[ROW - 1] != SD_CLIP_EOS && c[ROW - 1] != pad) c[ROW - 1] = SD_CLIP_EOS;
                if (c[1] == pad) c[1] = SD_CLIP_EOS;
            }
        }
    }
    if (truncated) *truncated = t->truncated;
    free(t);
    return SD_OK;
}

int sd_gen_encode_prompt(sd_ctx *ctx, const sd_gen_models *m, const char *text, int chunks, float **ctx_out)
{
    *ctx_out = NULL;
    int k = chunks;
    int rc = SD_OK;
    if (k <= 0) rc = sd_gen_prompt_chunks(m, text, &k);
    if (rc) return rc;
    if (k > MAX_MULT) k = MAX_MULT;
    const int64_t C = m->clip->cfg.width, vocab = m->clip->cfg.vocab_size;
    int32_t ids[MAX_MULT * ROW];
    float wrow[MAX_MULT * ROW];
    rc = sd_gen_prompt_rows(m, text, k, ids, wrow, NULL);
    if (rc) return rc;
    for (int i = 0; i < k * ROW; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return sd_err(SD_EINVAL, "token id %d does not fit the text encoder's vocabulary of %lld", ids[i],
                          (long long)vocab);
    int weighted = 0;
    for (int i = 0; i < k * ROW; i++)
        if (wrow[i] != 1.0f) weighted = 1;
    float *y = malloc((size_t)(k * ROW * C) * sizeof *y);
    if (!y) return sd_err(SD_ENOMEM, "out of memory");
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor ti, ty;
    rc = stage(ctx, &ti, ids, SD_I32, SD_DIMS(k, ROW));
    if (!rc) rc = stage(ctx, &ty, y, SD_F32, SD_DIMS(k, ROW, C));
    if (!rc) rc = sd_clip_forward(ctx, m->clip, NULL, &ty, &ti, m->clip_skip);
    if (!rc) rc = unstage(ctx, &ty, y);
    sd_arena_reset(&ctx->scratch, mark);
    if (rc) {
        free(y);
        return rc;
    }
    if (weighted) {
        const size_t n = (size_t)(k * ROW) * (size_t)C;
        double s = 0;
        for (size_t i = 0; i < n; i++) s += y[i];
        float prev = (float)(s / (double)n);
        for (int r = 0; r < k * ROW; r++)
            for (int64_t c = 0; c < C; c++) y[r * C + c] *= wrow[r];
        s = 0;
        for (size_t i = 0; i < n; i++) s += y[i];
        float cur = (float)(s / (double)n);
        float f = prev / cur;
        for (size_t i = 0; i < n; i++) y[i] *= f;
    }
    *ctx_out = y;
    return SD_OK;
}

/* ---- SDXL conditioning ------------------------------------------------------------------------- */

int sd_gen_sdxl_chunks(const sd_gen_models *m, int *chunks)
{
    switch (m->max_token_length) {
    case 0: case 75: *chunks = 1; return SD_OK;
    case 150: *chunks = 2; return SD_OK;
    case 225: *chunks = 3; return SD_OK;
    default: return sd_err(SD_EINVAL, "max_token_length %d: 75, 150 or 225", m->max_token_length);
    }
}

int sd_gen_sdxl_prompt_rows(const sd_gen_models *m, const char *text, int32_t *ids1, int32_t *ids2, float *weights,
                            int *truncated)
{
    int k = 1;
    int rc = sd_gen_sdxl_chunks(m, &k);
    if (rc) return rc;
    wtoks *t = malloc(sizeof *t);
    if (!t) return sd_err(SD_ENOMEM, "out of memory");
    rc = prompt_tokens(m, text, t);
    int n1 = 0, n2 = 0, tr = 0;
    const int mtl = CHUNK * k;
    /* TE1: CLIP ViT-L's tokenizer pads with EOS (the v1 chunk rule); TE2: the bigG tokenizer with
       its pad id forced to 0 (the v2 rule) */
    if (!rc) rc = sd_clip_frame_ids(t->ids, (size_t)t->n, mtl, SD_CLIP_PAD_SD1, ids1, &n1, &tr);
    if (!rc) rc = sd_clip_frame_ids(t->ids, (size_t)t->n, mtl, SD_CLIP_PAD_SD2, ids2, &n2, NULL);
    if (!rc && (n1 != k || n2 != k)) rc = sd_err(SD_ESTATE, "SDXL prompt: %d/%d chunks framed for %d", n1, n2, k);
    if (!rc) {
        const int S = mtl + 2, nt = t->n < mtl ? t->n : mtl;
        for (int p = 0; p < S; p++) weights[p] = p >= 1 && p - 1 < nt ? t->w[p - 1] : 1.0f;
        if (truncated) *truncated = t->truncated || tr;
    }
    free(t);
    return rc;
}

/* one encoder's hidden states [S, C] (reassembled chunks) and, for TE2, the pooled output [P] */
static int sdxl_encode_one(sd_ctx *ctx, sd_clip *clip, const int32_t *ids, int k, float *hidden, float *pooled)
{
    const int64_t C = clip->cfg.width, S = (int64_t)CHUNK * k + 2, vocab = clip->cfg.vocab_size;
    for (int i = 0; i < k * ROW; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return sd_err(SD_EINVAL, "token id %d does not fit the text encoder's vocabulary of %lld", ids[i],
                          (long long)vocab);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor ti, th, tp, tw;
    int rc = SD_OK;
    if (k == 1) {
        rc = stage(ctx, &ti, ids, SD_I32, SD_DIMS(1, ROW));
        if (!rc) rc = stage(ctx, &th, hidden, SD_F32, SD_DIMS(1, ROW, C));
    } else {
        rc = stage(ctx, &ti, ids, SD_I32, SD_DIMS(1, k, ROW));
        if (!rc) rc = stage(ctx, &th, hidden, SD_F32, SD_DIMS(1, S, C));
        if (!rc) rc = sd_arena_tensor(&ctx->scratch, &tw, SD_F32, SD_DIMS((int64_t)k, ROW, C));
    }
    if (!rc && pooled) rc = stage(ctx, &tp, pooled, SD_F32, SD_DIMS(1, clip->cfg.projection_dim));
    if (!rc) {
        if (k == 1) rc = sd_clip_forward_sdxl(ctx, clip, NULL, &th, pooled ? &tp : NULL, &ti);
        else rc = sd_clip_forward_sdxl_chunks(ctx, clip, NULL, &th, pooled ? &tp : NULL, &tw, &ti);
    }
    if (!rc) rc = unstage(ctx, &th, hidden);
    if (!rc && pooled) rc = unstage(ctx, &tp, pooled);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_gen_sdxl_encode_prompt(sd_ctx *ctx, const sd_gen_models *m, const char *text, float **ctx_out,
                              int64_t *S_out, float *pooled)
{
    *ctx_out = NULL;
    if (!m->clip2 || m->clip2->cfg.projection_dim <= 0)
        return sd_err(SD_EINVAL, "SDXL prompt: the second text encoder (with a projection) is missing");
    int k = 1;
    int rc = sd_gen_sdxl_chunks(m, &k);
    if (rc) return rc;
    const int64_t S = (int64_t)CHUNK * k + 2, C1 = m->clip->cfg.width, C2 = m->clip2->cfg.width;
    int32_t ids1[MAX_MULT * ROW], ids2[MAX_MULT * ROW];
    float wrow[MAX_TOKENS + 2];
    int truncated = 0;
    rc = sd_gen_sdxl_prompt_rows(m, text, ids1, ids2, wrow, &truncated);
    if (rc) return rc;
    if (truncated)
        sd_warn("prompt truncated to %d tokens (--max_token_length %d): \"%.40s%s\"", CHUNK * k, CHUNK * k, text,
                strlen(text) > 40 ? "..." : "");
    float *h1 = malloc((size_t)(S * C1) * sizeof *h1), *h2 = malloc((size_t)(S * C2) * sizeof *h2);
    float *y = malloc((size_t)(S * (C1 + C2)) * sizeof *y);
    if (!h1 || !h2 || !y) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc) rc = sdxl_encode_one(ctx, m->clip, ids1, k, h1, NULL);
    if (!rc) rc = sdxl_encode_one(ctx, m->clip2, ids2, k, h2, pooled);
    if (!rc) {
        /* weights on both hidden states (1 at BOS/EOS), no renormalisation; then cat on channels */
        for (int64_t p = 0; p < S; p++) {
            float *o = y + p * (C1 + C2);
            const float w = wrow[p];
            for (int64_t c = 0; c < C1; c++) o[c] = h1[p * C1 + c] * w;
            for (int64_t c = 0; c < C2; c++) o[C1 + c] = h2[p * C2 + c] * w;
        }
        *ctx_out = y;
        *S_out = S;
        y = NULL;
    }
    free(h1);
    free(h2);
    free(y);
    return rc;
}

void sd_gen_sdxl_vector(float *vec, const float *pooled, int64_t P, int orig_h, int orig_w, int crop_top,
                        int crop_left, int target_h, int target_w)
{
    memcpy(vec, pooled, (size_t)P * sizeof *vec);
    sd_sdxl_size_embedding(vec + P, orig_h, orig_w, crop_top, crop_left, target_h, target_w);
}

/* ---- SDXL LoRA files merged by name (see sample_images.h) --------------------------------------------
 * kohya's SDXL LoRA names: "lora_unet_" + the ldm/SGM UNet name, "lora_te1_" + the CLIP ViT-L HF
 * name, "lora_te2_" + the bigG HF name, '.' → '_' (networks/lora.py; reference-behaviour.md §7.2).
 * Each module is merged straight into the f32 weight it names: W += mul · alpha/rank · up·down
 * (linear, 1×1 and k×k convs: up [out, r(,1,1)], down [r, in(,kh,kw)]), which is what the forward
 * hooks compute (W x + mul · alpha/rank · up(down(x))). */

/* registry key "PREFIX<name>.weight" → "<name>" with '.' → '_' (buf) when it has the prefix */
static int underscored(const char *key, const char *prefix, char *buf, size_t n)
{
    size_t pl = strlen(prefix), kl = strlen(key);
    if (strncmp(key, prefix, pl) || kl < pl + 7 || strcmp(key + kl - 7, ".weight")) return 0;
    size_t l = kl - pl - 7;
    if (l + 1 > n) return 0;
    for (size_t i = 0; i < l; i++) buf[i] = key[pl + i] == '.' ? '_' : key[pl + i];
    buf[l] = 0;
    return 1;
}

static sd_param *sdxl_lora_target(sd_params *unet, sd_params *te, const char *name)
{
    static const struct { const char *lora, *key; int te; } map[] = {
        { "lora_unet_", "model.diffusion_model.", 0 },
        { "lora_te1_", "conditioner.embedders.0.transformer.", 1 },
        { "lora_te2_", "conditioner.embedders.1.model.", 1 },
    };
    char buf[512];
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
        size_t ll = strlen(map[k].lora);
        if (strncmp(name, map[k].lora, ll)) continue;
        sd_params *r = map[k].te ? te : unet;
        for (size_t i = 0; i < sd_params_count(r); i++) {
            sd_param *p = sd_params_at(r, i);
            if (underscored(p->key, map[k].key, buf, sizeof buf) && !strcmp(buf, name + ll)) return p;
        }
        return NULL;
    }
    return NULL;
}

int sd_gen_lora_merge_sdxl(const sd_unet *um, sd_params *unet, sd_params *te, const char *path, double mul,
                           size_t *n_te_out, size_t *n_unet_out)
{
    return sd_gen_lora_merge_sdxl_weighted(um, unet, te, path, mul, NULL, NULL, n_te_out, n_unet_out);
}

int sd_gen_lora_merge_sdxl_weighted(const sd_unet *um, sd_params *unet, sd_params *te, const char *path, double mul,
                                    double (*weight)(void *user, const char *name), void *user, size_t *n_te_out,
                                    size_t *n_unet_out)
{
    sd_safetensors *st = NULL;
    sd_lora_file_info info = { 0 };
    float *down = NULL, *up = NULL;
    size_t n_te = 0, n_unet = 0;
    int rc = sd_safetensors_open(path, &st);
    size_t n_diff = 0;
    if (!rc && um) rc = sd_lora_file_sdxl_to_sgm(st, um, &n_diff);
    if (!rc && n_diff) sd_info("%s: %zu UNet modules with Diffusers names, read as their SGM names", path, n_diff);
    if (!rc) rc = sd_lora_file_scan(st, &info);
    if (!rc && info.n == 0) rc = sd_err(SD_EFORMAT, "%s: no LoRA modules (lora_down/lora_up) in this file", path);
    for (size_t i = 0; i < info.n && !rc; i++) {
        const sd_lora_file_module *fm = &info.mods[i];
        sd_param *w = sdxl_lora_target(unet, te, fm->name);
        if (!w) {
            rc = sd_err(SD_EFORMAT,
                        "%s: module '%s' names no layer of this SDXL model (expected lora_unet_<SGM or Diffusers "
                        "name>, lora_te1_/lora_te2_<text encoder name>)", path, fm->name);
            break;
        }
        if ((w->value.dtype != SD_F32 && w->value.dtype != SD_F16 && w->value.dtype != SD_BF16) ||
            w->value.device != SD_DEV_CPU) {
            rc = sd_err(SD_EUNSUPPORTED, "%s: cannot merge into %s weights of this dtype or device", path, w->key);
            break;
        }
        const sd_tensor *t = &w->value;
        int64_t out = t->shape[0], in = t->ndim > 1 ? t->shape[1] : 0;
        int64_t kk = t->ndim == 4 ? t->shape[2] * t->shape[3] : 1;
        if ((t->ndim != 2 && t->ndim != 4) || fm->out != out || fm->in != in ||
            (t->ndim == 4 ? (fm->kh * fm->kw != kk) : fm->kh * fm->kw != 1)) {
            rc = sd_err(SD_EFORMAT, "%s: module '%s' does not fit %s (shape mismatch)", path, fm->name, w->key);
            break;
        }
        const int64_t r = fm->rank, dn = r * in * kk;
        down = malloc((size_t)dn * sizeof *down);
        up = malloc((size_t)(out * r) * sizeof *up);
        if (!down || !up) {
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        char key[600];
        snprintf(key, sizeof key, "%s.lora_down.weight", fm->name);
        rc = sd_safetensors_read_f32(st, key, down, (size_t)dn);
        snprintf(key, sizeof key, "%s.lora_up.weight", fm->name);
        if (!rc) rc = sd_safetensors_read_f32(st, key, up, (size_t)(out * r));
        if (rc) break;
        float sc = (float)mul * (fm->has_alpha ? fm->alpha : (float)r) / (float)r;
        if (weight) sc *= (float)weight(user, fm->name);
        const size_t nw = (size_t)(out * in * kk);
        float *W = t->data;
        if (t->dtype != SD_F32) {   /* f16/bf16 storage: merged in f32, stored back rounded */
            W = malloc(nw * sizeof *W);
            if (!W) {
                rc = sd_err(SD_ENOMEM, "out of memory");
                break;
            }
            if (t->dtype == SD_F16) sd_f16_to_f32_n(t->data, W, nw);
            else sd_bf16_to_f32_n(t->data, W, nw);
        }
        const int64_t row = in * kk;
        for (int64_t o = 0; o < out; o++) {
            float *wo = W + o * row;
            for (int64_t q = 0; q < r; q++) {
                const float u = up[o * r + q] * sc;
                const float *d = down + q * row;
                for (int64_t j = 0; j < row; j++) wo[j] += u * d[j];
            }
        }
        if (W != t->data) {
            if (t->dtype == SD_F16) sd_f32_to_f16_n(W, t->data, nw);
            else sd_f32_to_bf16_n(W, t->data, nw);
            free(W);
        }
        if (!strncmp(fm->name, "lora_unet_", 10)) n_unet++;
        else n_te++;
        free(down);
        free(up);
        down = up = NULL;
    }
    if (n_te_out) *n_te_out = n_te;
    if (n_unet_out) *n_unet_out = n_unet;
    if (rc && !strstr(sd_errmsg(), path)) sd_err_prefix(rc, "%s", path);
    free(down);
    free(up);
    sd_lora_file_info_free(&info);
    sd_safetensors_close(st);
    return rc;
}

/* ---- textual inversion ------------------------------------------------------------------------- */

static void stem_of(const char *path, char *buf, size_t n)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *e = strrchr(b, '.');
    size_t l = e && e > b ? (size_t)(e - b) : strlen(b);
    if (l >= n) l = n - 1;
    memcpy(buf, b, l);
    buf[l] = 0;
}

/* The widened table of `clip` with the vectors vecs[i] (counts from tokens[i]) at the tokens' ids,
 * put where the model's table is; the encoder switched to it (restored by sd_gen_ti_detach). */
static int ti_build(sd_gen_ti *ti, sd_clip *clip, const sd_gen_token *tokens, float *const *vecs, int n, int64_t total)
{
    sd_tensor *tab = &clip->tok.w->value;
    const int64_t V = tab->shape[0], D = tab->shape[1];
    /* the widened table is built on the host and lives where the model's table is (a GPU copy with
       --device cuda: attach after the encoder's parameters moved) */
    sd_tensor host = { 0 };
    int rc = sd_tensor_alloc(&host, SD_F32, SD_DIMS(V + total, D));
    if (!rc) rc = sd_tensor_download(tab, host.data, sd_tensor_nbytes(tab));   /* the model's V rows */
    if (!rc) {
        float *dst = host.data;
        for (int i = 0; i < n; i++) {
            memcpy(dst + (size_t)tokens[i].first_id * (size_t)D, vecs[i], (size_t)tokens[i].count * (size_t)D * sizeof(float));
        }
        if (tab->device == SD_DEV_CPU) {
            ti->table = host;
            host.data = NULL;
        } else {
            rc = sd_tensor_alloc_on(&ti->table, (sd_devkind)tab->device, SD_F32, 2, host.shape);
            if (!rc) rc = sd_tensor_upload(&ti->table, host.data, sd_tensor_nbytes(&host));
        }
    }
    sd_tensor_free(&host);
    if (!rc) {
        ti->clip = clip;
        ti->saved = *tab;
        ti->saved_vocab = clip->tok.vocab;
        ti->saved_cfg_vocab = clip->cfg.vocab_size;
        *tab = ti->table;
        clip->tok.vocab = V + total;
        clip->cfg.vocab_size = (int)(V + total);
    }
    return rc;
}

/* Both forms: clip2 NULL reads SD1/SD2 files (emb_params) for clip; else SDXL files (clip_l for
 * clip, clip_g for clip2 into ti2). */
static int ti_attach(sd_gen_ti *ti, sd_gen_ti *ti2, sd_clip *clip, sd_clip *clip2, const char *const *paths, int n)
{
    memset(ti, 0, sizeof *ti);
    if (ti2) memset(ti2, 0, sizeof *ti2);
    if (n <= 0) return SD_OK;
    sd_tensor *tab = &clip->tok.w->value, *tab2 = clip2 ? &clip2->tok.w->value : NULL;
    const int64_t V = tab->shape[0], D = tab->shape[1], D2 = tab2 ? tab2->shape[1] : 0;
    if (tab->dtype != SD_F32 || tab->ndim != 2 || (tab2 && (tab2->dtype != SD_F32 || tab2->ndim != 2)))
        return sd_err(SD_EUNSUPPORTED, "textual inversion: the token table must be f32");
    if (tab2 && tab2->shape[0] != V)
        return sd_err(SD_EUNSUPPORTED, "textual inversion: the SDXL text encoders have %lld and %lld token rows",
                      (long long)V, (long long)tab2->shape[0]);
    float **vecs = calloc((size_t)n, sizeof *vecs), **vecs2 = calloc((size_t)n, sizeof *vecs2);
    ti->tokens = calloc((size_t)n, sizeof *ti->tokens);
    int rc = vecs && vecs2 && ti->tokens ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    int64_t total = 0;
    for (int i = 0; i < n && !rc; i++) {
        int64_t cnt = 0;
        rc = clip2 ? sd_embedding_read_sdxl(paths[i], D, D2, &vecs[i], &vecs2[i], &cnt)
                   : sd_embedding_read(paths[i], D, &vecs[i], &cnt);
        if (rc) break;
        char stem[256];
        stem_of(paths[i], stem, sizeof stem);
        if (!rc && !stem[0]) rc = sd_err(SD_EINVAL, "%s: empty token name", paths[i]);
        for (int j = 0; j < i && !rc; j++)
            if (!strcmp(ti->tokens[j].token, stem))
                rc = sd_err(SD_EINVAL, "%s: token '%s' is already taken by %s", paths[i], stem, paths[j]);
        if (!rc) {
            ti->tokens[i].token = strdup(stem);
            ti->tokens[i].first_id = (int32_t)(V + total);
            ti->tokens[i].count = (int)cnt;
            if (!ti->tokens[i].token) rc = sd_err(SD_ENOMEM, "out of memory");
            ti->n = i + 1;
            total += cnt;
        }
    }
    if (!rc) rc = ti_build(ti, clip, ti->tokens, vecs, n, total);
    if (!rc && clip2) rc = ti_build(ti2, clip2, ti->tokens, vecs2, n, total);
    for (int i = 0; vecs && i < n; i++) free(vecs[i]);
    for (int i = 0; vecs2 && i < n; i++) free(vecs2[i]);
    free(vecs);
    free(vecs2);
    if (rc) {
        if (ti2) sd_gen_ti_detach(ti2);
        sd_gen_ti_detach(ti);
    }
    return rc;
}

int sd_gen_ti_attach(sd_gen_ti *ti, sd_clip *clip, const char *const *paths, int n)
{
    return ti_attach(ti, NULL, clip, NULL, paths, n);
}

int sd_gen_ti_attach_sdxl(sd_gen_ti *ti, sd_gen_ti *ti2, sd_clip *clip, sd_clip *clip2, const char *const *paths, int n)
{
    return ti_attach(ti, ti2, clip, clip2, paths, n);
}

void sd_gen_ti_detach(sd_gen_ti *ti)
{
    if (ti->clip) {
        ti->clip->tok.w->value = ti->saved;
        ti->clip->tok.vocab = ti->saved_vocab;
        ti->clip->cfg.vocab_size = ti->saved_cfg_vocab;
    }
    sd_tensor_free(&ti->table);
    for (int i = 0; ti->tokens && i < ti->n; i++) free(ti->tokens[i].token);
    free(ti->tokens);
    memset(ti, 0, sizeof *ti);
}

/* ---- txt2img --------------------------------------------------------------------------------- */

/* latent side above which the decode is tiled by default: SD_GEN_VAE_TILE_AUTO (512 pixels), twice
   that for SDXL (its default 1024x1024 decodes whole, as the reference does) */
static int64_t tile_auto(const sd_gen_models *m)
{
    return m->family == SD_FAMILY_SDXL ? 2 * SD_GEN_VAE_TILE_AUTO : SD_GEN_VAE_TILE_AUTO;
}

static int64_t total_factor(const sd_gen_models *m)
{
    return m->vae->factor << (m->unet->cfg.n_levels - 1);
}

static int check_params(const sd_gen_models *m, const sd_gen_params *p)
{
    if (!m->unet || !m->clip || !m->vae || !m->tok) return sd_err(SD_EINVAL, "txt2img: a model part is missing");
    if (m->family == SD_FAMILY_SDXL) {
        if (!m->clip2) return sd_err(SD_EINVAL, "txt2img: SDXL model without its second text encoder");
        int k = 1;
        int rc = sd_gen_sdxl_chunks(m, &k);
        if (rc) return rc;
        if (p->orig_w < 0 || p->orig_h < 0 || p->orig_w_neg < 0 || p->orig_h_neg < 0 || p->crop_top < 0 ||
            p->crop_left < 0)
            return sd_err(SD_EINVAL, "txt2img: negative SDXL size conditioning");
    } else if (m->clip2) {
        return sd_err(SD_EINVAL, "txt2img: a second text encoder is only used by SDXL models");
    }
    if (!p->prompt) return sd_err(SD_EINVAL, "txt2img: no prompt");
    if (p->batch < 1 || p->batch > 4096) return sd_err(SD_EINVAL, "txt2img: batch %d out of range", p->batch);
    if (p->steps < 1 || p->steps > SD_DDPM_MAX_STEPS)
        return sd_err(SD_EINVAL, "txt2img: %d steps (1..%d)", p->steps, SD_DDPM_MAX_STEPS);
    if (!isfinite(p->scale)) return sd_err(SD_EINVAL, "txt2img: CFG scale is not finite");
    int64_t f = total_factor(m);
    if (p->width < 8 || p->height < 8 || p->width % 8 || p->height % 8)
        return sd_err(SD_EINVAL, "image size %dx%d: width and height must be positive multiples of 8", p->width,
                      p->height);
    if (p->width % f || p->height % f)
        return sd_err(SD_EINVAL, "image size %dx%d: width and height must be multiples of %lld for this model",
                      p->width, p->height, (long long)f);
    if (p->width > 16384 || p->height > 16384)
        return sd_err(SD_EINVAL, "image size %dx%d: at most 16384 pixels a side", p->width, p->height);
    return SD_OK;
}

size_t sd_txt2img_scratch_bytes(const sd_gen_models *m, const sd_gen_params *p)
{
    int64_t f = m->vae->factor, h = p->height / f, w = p->width / f;
    int64_t S = ROW * MAX_MULT;
    sd_nn_plan pu = sd_unet_plan(m->unet, 2 * (int64_t)p->batch, h, w, S);
    sd_nn_plan pc = sd_clip_plan(m->clip, MAX_MULT, ROW, m->clip_skip);
    if (m->clip2) {
        /* SDXL: each encoder alone, plus the chunk rows they run as */
        pc = sd_clip_plan_sdxl(m->clip, 1, MAX_MULT, ROW, 0);
        sd_nn_plan p2 = sd_clip_plan_sdxl(m->clip2, 1, MAX_MULT, ROW, 1);
        if (p2.scratch + p2.saved > pc.scratch + pc.saved) pc = p2;
        int64_t cw = m->clip->cfg.width > m->clip2->cfg.width ? m->clip->cfg.width : m->clip2->cfg.width;
        pc.scratch += (size_t)(2 * MAX_MULT * ROW * cw) * sizeof(float) + 4096;
    }
    int tile = m->vae_tile > 0 ? m->vae_tile : SD_GEN_VAE_TILE;
    const int64_t lim = tile_auto(m);
    int tiled = m->vae_tiling == 1 || (m->vae_tiling < 0 && (h > lim || w > lim));
    int64_t vh = tiled && tile < h ? tile : h, vw = tiled && tile < w ? tile : w;
    size_t pv = sd_vae_scratch_bytes(m->vae, 1, vh, vw, 1);
    size_t mx = pu.scratch + pu.saved;
    if (pc.scratch + pc.saved > mx) mx = pc.scratch + pc.saved;
    if (pv > mx) mx = pv;
    if (m->controlnet) {   /* its forward runs before the UNet's, its activations in an arena of their own */
        sd_nn_plan pn = sd_controlnet_plan(m->controlnet, 2 * (int64_t)p->batch, h, w, S);
        if (pn.scratch > mx) mx = pn.scratch;
    }
    return 2 * mx + ((size_t)1 << 30);
}

typedef struct denoise_user {
    sd_ctx *ctx;
    sd_unet *u;
    const float *context;   /* [2B or B, S, C]: uncond first when guided */
    const float *vec;       /* SDXL: [2B or B, V] in the same order; NULL otherwise */
    int64_t B, S, C, V, cin, h, w;
    int guided;
    float *tbuf;            /* [2B] */
    int (*on_call)(void *user);
    void *call_user;
    sd_controlnet *cn;      /* ControlNet (NULL: none), its activations in cn_act */
    sd_arena *cn_act;
    const float *cond;      /* [2B or B, 3, 8h, 8w] control image */
} denoise_user;

static int denoise(void *user, const float *x, int64_t batch, double t, float *out)
{
    denoise_user *d = user;
    const float *c = d->context;
    if (d->guided ? batch != 2 * d->B : batch != d->B)
        return sd_err(SD_ESTATE, "txt2img: model called with batch %lld", (long long)batch);
    for (int64_t i = 0; i < batch; i++) d->tbuf[i] = (float)t;
    size_t mark = sd_arena_mark(&d->ctx->scratch);
    sd_tensor xt, tt, ct, yt, vt;
    int rc = stage(d->ctx, &xt, x, SD_F32, SD_DIMS(batch, d->cin, d->h, d->w));
    if (!rc) rc = stage(d->ctx, &tt, d->tbuf, SD_F32, SD_DIMS(batch));
    if (!rc) rc = stage(d->ctx, &ct, c, SD_F32, SD_DIMS(batch, d->S, d->C));
    if (!rc && d->vec) rc = stage(d->ctx, &vt, d->vec, SD_F32, SD_DIMS(batch, d->V));
    if (!rc) rc = stage(d->ctx, &yt, d->ctx->backend == SD_DEV_CPU ? out : NULL, SD_F32,
                        SD_DIMS(batch, d->u->cfg.out_channels, d->h, d->w));
    if (!rc && d->cn) {   /* its outputs (in cn_act) are the UNet's residuals (sd_unet_set_control) */
        sd_tensor gt;
        sd_arena_reset(d->cn_act, 0);
        rc = stage(d->ctx, &gt, d->cond, SD_F32, SD_DIMS(batch, 3, 8 * d->h, 8 * d->w));
        if (!rc) rc = sd_controlnet_forward(d->ctx, d->cn, d->cn_act, &xt, &tt, &ct, &gt);
    }
    if (!rc) rc = sd_unet_forward(d->ctx, d->u, NULL, &yt, &xt, &tt, &ct, d->vec ? &vt : NULL);
    if (!rc) rc = unstage(d->ctx, &yt, out);
    sd_arena_reset(&d->ctx->scratch, mark);
    if (!rc && d->on_call && d->on_call(d->call_user)) rc = sd_err(SD_EINTR, "interrupted");
    return rc;
}

/* z [1, ch, h, w] (already divided by the scale factor) → RGB image */
static int decode_one(sd_ctx *ctx, const sd_gen_models *m, float *z, int64_t h, int64_t w, sd_image *im)
{
    int64_t f = m->vae->factor, H = h * f, W = w * f, zc = m->vae->cfg.embed_dim;
    int oc = m->vae->cfg.out_ch;
    if (oc != 3) return sd_err(SD_EUNSUPPORTED, "txt2img: the VAE decodes %d channels (3 needed)", oc);
    float *y = malloc((size_t)(3 * H * W) * sizeof *y);
    if (!y) return sd_err(SD_ENOMEM, "out of memory");
    int tile = m->vae_tile > 0 ? m->vae_tile : SD_GEN_VAE_TILE;
    const int64_t lim = tile_auto(m);
    int tiled = m->vae_tiling == 1 || (m->vae_tiling < 0 && (h > lim || w > lim));
    int ov = SD_GEN_VAE_OVERLAP < tile / 2 ? SD_GEN_VAE_OVERLAP : tile / 4;
    /* the tiled decode stages through host memory itself and bounds device memory by a tile (a
       tile covering the latents is the untiled decode) */
    if (tile >= h && tile >= w) tiled = 0;
    sd_ctx *sctx = tiled ? NULL : ctx;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor zt, yt;
    int rc;
    if (sctx) {
        rc = stage(ctx, &zt, z, SD_F32, SD_DIMS(1, zc, h, w));
        if (!rc) rc = stage(ctx, &yt, ctx->backend == SD_DEV_CPU ? y : NULL, SD_F32, SD_DIMS(1, 3, H, W));
        if (!rc) rc = sd_vae_decode(ctx, m->vae, &yt, &zt);
        if (!rc) rc = unstage(ctx, &yt, y);
    } else {
        zt = sd_tensor_wrap(z, SD_F32, SD_DIMS(1, zc, h, w));
        yt = sd_tensor_wrap(y, SD_F32, SD_DIMS(1, 3, H, W));
        rc = sd_vae_decode_tiled(ctx, m->vae, &yt, &zt, tile, ov);
    }
    sd_arena_reset(&ctx->scratch, mark);
    if (!rc) rc = sd_image_alloc(im, (int)W, (int)H, 3);
    if (!rc) {
        const size_t plane = (size_t)(H * W);
        for (size_t i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++) {
                float v = y[c * plane + i] / 2.0f + 0.5f;
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                im->px[i * 3 + (size_t)c] = (uint8_t)nearbyintf(v * 255.0f);
            }
    }
    free(y);
    return rc;
}

int sd_txt2img(sd_ctx *ctx, const sd_gen_models *m, const sd_gen_params *p, sd_image *out)
{
    int rc = check_params(m, p);
    if (rc) return rc;
    for (int b = 0; b < p->batch; b++) memset(&out[b], 0, sizeof out[b]);
    const int B = p->batch, guided = p->scale > 1.0;
    const int64_t f = m->vae->factor, h = p->height / f, w = p->width / f;
    const int sdxl = m->family == SD_FAMILY_SDXL;
    const int64_t cin = m->unet->cfg.in_channels, per = cin * h * w;
    const int64_t C = m->clip->cfg.width + (sdxl ? m->clip2->cfg.width : 0);
    const int64_t P = sdxl ? m->clip2->cfg.projection_dim : 0, V = sdxl ? P + SD_SDXL_SIZE_EMB_DIM : 0;
    if (m->unet->cfg.context_dim != C)
        return sd_err(SD_EINVAL, "txt2img: the text encoder%s width %lld differs from the UNet's context_dim %d",
                      sdxl ? "s' summed" : "'s", (long long)C, m->unet->cfg.context_dim);
    if (sdxl && m->unet->cfg.adm_in_channels != V)
        return sd_err(SD_EINVAL, "txt2img: the SDXL vector is %lld wide (pooled %lld + %d size embedding), the UNet's "
                      "adm_in_channels is %d", (long long)V, (long long)P, SD_SDXL_SIZE_EMB_DIM,
                      m->unet->cfg.adm_in_channels);
    if (!sdxl && m->unet->cfg.adm_in_channels > 0)
        return sd_err(SD_EINVAL, "txt2img: the UNet takes a vector input (adm_in_channels %d) but the model is "
                      "not SDXL", m->unet->cfg.adm_in_channels);
    if (m->vae->cfg.embed_dim != cin)
        return sd_err(SD_EINVAL, "txt2img: the VAE's %d latent channels differ from the UNet's %lld",
                      m->vae->cfg.embed_dim, (long long)cin);
    /* text conditioning */
    float *cond = NULL, *uncond = NULL, *context = NULL, *lat = NULL, *tbuf = NULL;
    float *pools = NULL, *vecs = NULL;   /* SDXL: pooled [2, P] (cond, uncond), vectors [2B or B, V] */
    float *ctl = NULL;                   /* ControlNet: the control image [2B or B, 3, H, W] */
    sd_arena cn_act;
    memset(&cn_act, 0, sizeof cn_act);
    sd_unet_control uctl;
    memset(&uctl, 0, sizeof uctl);
    const sd_unet_control *prev_ctl = m->unet->ctl;   /* a trainer's hooks, put back at the end */
    sd_sampler s;
    memset(&s, 0, sizeof s);
    const char *neg = p->negative_prompt ? p->negative_prompt : "";
    int64_t S = 0;
    if (sdxl) {
        /* every prompt has the chunks of max_token_length */
        int64_t Sn = 0;
        pools = malloc(2 * (size_t)P * sizeof *pools);
        if (!pools) return sd_err(SD_ENOMEM, "out of memory");
        rc = sd_gen_sdxl_encode_prompt(ctx, m, p->prompt, &cond, &S, pools);
        if (!rc && guided) rc = sd_gen_sdxl_encode_prompt(ctx, m, neg, &uncond, &Sn, pools + P);
        if (rc) goto out;
    } else {
        int kp = 1, kn = 1;
        rc = sd_gen_prompt_chunks(m, p->prompt, &kp);
        if (!rc && guided) rc = sd_gen_prompt_chunks(m, neg, &kn);
        if (rc) return rc;
        int k = kp > kn ? kp : kn;
        S = (int64_t)ROW * k;
        rc = sd_gen_encode_prompt(ctx, m, p->prompt, k, &cond);
        if (!rc && guided) rc = sd_gen_encode_prompt(ctx, m, neg, k, &uncond);
        if (rc) goto out;
    }
    const size_t cs = (size_t)(S * C);
    const size_t nb = (size_t)(guided ? 2 : 1) * (size_t)B;
    context = malloc(nb * cs * sizeof *context);
    lat = malloc((size_t)B * (size_t)per * sizeof *lat);
    tbuf = malloc(2 * (size_t)B * sizeof *tbuf);
    if (sdxl) vecs = malloc(nb * (size_t)V * sizeof *vecs);
    if (!context || !lat || !tbuf || (sdxl && !vecs)) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int b = 0; b < B; b++) {
        if (guided) {
            memcpy(context + (size_t)b * cs, uncond, cs * sizeof *context);
            memcpy(context + ((size_t)B + (size_t)b) * cs, cond, cs * sizeof *context);
        } else {
            memcpy(context + (size_t)b * cs, cond, cs * sizeof *context);
        }
    }
    if (sdxl) {
        /* original = target = the image size and crop (0, 0) unless given (the sample pipeline has
           no options for them; sd-sample takes gen_img.py's) */
        const int oh = p->orig_h ? p->orig_h : p->height, ow = p->orig_w ? p->orig_w : p->width;
        const int ohn = p->orig_h_neg ? p->orig_h_neg : oh, own = p->orig_w_neg ? p->orig_w_neg : ow;
        for (int b = 0; b < B; b++) {
            if (guided) {
                sd_gen_sdxl_vector(vecs + (size_t)b * (size_t)V, pools + P, P, ohn, own, p->crop_top, p->crop_left,
                                   p->height, p->width);
                sd_gen_sdxl_vector(vecs + ((size_t)B + (size_t)b) * (size_t)V, pools, P, oh, ow, p->crop_top,
                                   p->crop_left, p->height, p->width);
            } else {
                sd_gen_sdxl_vector(vecs + (size_t)b * (size_t)V, pools, P, oh, ow, p->crop_top, p->crop_left,
                                   p->height, p->width);
            }
        }
    }
    /* sampling */
    sd_sampler_config sc;
    sd_sampler_config_default(&sc);
    sc.v_prediction = m->v_prediction;
    rc = sd_sampler_init(&s, p->sampler, p->steps, &sc, (size_t)B * (size_t)per);
    if (rc) goto out;
    rc = sd_sampler_initial_noise(B, per, p->seeds, lat);
    if (rc) goto out;
    denoise_user du = { .ctx = ctx, .u = m->unet, .context = context, .vec = vecs, .B = B, .S = S, .C = C, .V = V,
                        .cin = cin,
                        .h = h, .w = w, .guided = guided, .tbuf = tbuf, .on_call = m->on_call,
                        .call_user = m->call_user };
    if (m->controlnet) {
        if (f != 8)
            rc = sd_err(SD_EUNSUPPORTED, "txt2img: a ControlNet needs a VAE with factor 8 (its image is 8x the latent)");
        else if (!p->control_image || p->control_image->w < 1 || p->control_image->h < 1)
            rc = sd_err(SD_EINVAL, "txt2img: a ControlNet needs a control image");
        sd_image rs = { 0 };
        if (!rc) rc = sd_resample(p->control_image, p->width, p->height, SD_RESAMPLE_LANCZOS, &rs);
        const size_t np = (size_t)p->width * (size_t)p->height;
        if (!rc && !(ctl = malloc(nb * 3 * np * sizeof *ctl))) rc = sd_err(SD_ENOMEM, "out of memory");
        for (size_t q = 0; !rc && q < np; q++)
            for (int ch = 0; ch < 3; ch++)
                ctl[(size_t)ch * np + q] = (float)rs.px[q * (size_t)rs.c + (size_t)(rs.c >= 3 ? ch : 0)] / 255.0f;
        for (size_t b = 1; !rc && b < nb; b++) memcpy(ctl + b * 3 * np, ctl, 3 * np * sizeof *ctl);
        sd_image_free(&rs);
        if (rc) goto out;
        sd_controlnet *cn = m->controlnet;
        sd_nn_plan pc = sd_controlnet_plan(cn, (int64_t)nb, h, w, S);
        if ((rc = sd_nn_arena_init(&cn_act, ctx->backend, pc.saved))) goto out;
        uctl.down = cn->res;
        uctl.mid = &cn->res[cn->enc.n_in];
        sd_unet_set_control(m->unet, &uctl);
        du.cn = cn;
        du.cn_act = &cn_act;
        du.cond = ctl;
    }
    rc = sd_sampler_run(&s, B, per, p->seeds, p->scale, denoise, &du, lat);
    if (m->controlnet) sd_unet_set_control(m->unet, prev_ctl);
    if (rc) goto out;
    /* decode */
    const float inv = (float)(1.0 / (double)m->vae->cfg.scale_factor);
    for (int b = 0; b < B && !rc; b++) {
        float *z = lat + (size_t)b * (size_t)per;
        for (int64_t i = 0; i < per; i++) z[i] *= inv;
        rc = decode_one(ctx, m, z, h, w, &out[b]);
    }
    if (rc)
        for (int b = 0; b < B; b++) sd_image_free(&out[b]);
out:
    sd_sampler_free(&s);
    free(cond);
    free(uncond);
    free(context);
    free(lat);
    free(tbuf);
    free(pools);
    free(vecs);
    free(ctl);
    sd_arena_free(&cn_act);
    return rc;
}

/* ---- A1111 infotext ----------------------------------------------------------------------------- */

const char *sd_sampler_a1111_name(sd_sampler_kind k)
{
    switch (k) {
    case SD_SAMPLER_DDIM: return "DDIM";
    case SD_SAMPLER_PNDM: return "PNDM";
    case SD_SAMPLER_LMS: return "LMS";
    case SD_SAMPLER_EULER: return "Euler";
    case SD_SAMPLER_EULER_A: return "Euler a";
    case SD_SAMPLER_HEUN: return "Heun";
    case SD_SAMPLER_DPM_2: return "DPM2";
    case SD_SAMPLER_DPM_2_A: return "DPM2 a";
    case SD_SAMPLER_DPMSOLVER_PP: return "DPM++ 2M";
    default: return sd_sampler_name(k);
    }
}

static void sb_puts(sd_strbuf *b, const char *s) { sd_strbuf_add(b, s, strlen(s)); }

static void sb_printf(sd_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sd_strbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sd_strbuf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A1111 infotext_utils.quote: json.dumps(ensure_ascii=False) when the value has ',', '\n' or ':' */
static void sb_quoted(sd_strbuf *b, const char *v)
{
    if (!strpbrk(v, ",\n:")) {
        sb_puts(b, v);
        return;
    }
    sb_puts(b, "\"");
    for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
        switch (*s) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (*s < 0x20) sb_printf(b, "\\u%04x", *s);
            else sd_strbuf_add(b, (const char *)s, 1);
        }
    }
    sb_puts(b, "\"");
}

/* Shortest round-tripping decimal of x (Python repr), integral values without ".0". */
static void sb_number(sd_strbuf *b, double x)
{
    char tmp[40];
    if (x == floor(x) && fabs(x) < 1e15) {
        snprintf(tmp, sizeof tmp, "%.0f", x);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(tmp, sizeof tmp, "%.*g", prec, x);
            if (strtod(tmp, NULL) == x) break;
        }
    }
    sb_puts(b, tmp);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

char *sd_infotext_format(const sd_infotext *t)
{
    sd_strbuf b = { 0 };
    sb_puts(&b, t->prompt ? t->prompt : "");
    if (t->negative_prompt && *t->negative_prompt) {
        sb_puts(&b, "\nNegative prompt: ");
        sb_puts(&b, t->negative_prompt);
    }
    sb_printf(&b, "\nSteps: %d, Sampler: ", t->steps);
    sb_quoted(&b, t->sampler ? t->sampler : "");
    sb_puts(&b, ", CFG scale: ");
    sb_number(&b, t->scale);
    sb_printf(&b, ", Seed: %llu, Size: %dx%d", (unsigned long long)t->seed, t->width, t->height);
    if (t->model_hash) {
        sb_puts(&b, ", Model hash: ");
        sb_quoted(&b, t->model_hash);
    }
    if (t->model) {
        sb_puts(&b, ", Model: ");
        sb_quoted(&b, t->model);
    }
    if (t->clip_skip > 1) sb_printf(&b, ", Clip skip: %d", t->clip_skip);
    if (t->lora_hashes) {
        sb_puts(&b, ", Lora hashes: ");
        sb_quoted(&b, t->lora_hashes);
    }
    if (t->ti_hashes) {
        sb_puts(&b, ", TI hashes: ");
        sb_quoted(&b, t->ti_hashes);
    }
    if (t->version) {
        sb_puts(&b, ", Version: ");
        sb_quoted(&b, t->version);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    /* A1111 strips the whole text */
    size_t s = 0, e = b.n;
    while (s < e && is_space(b.p[s])) s++;
    while (e > s && is_space(b.p[e - 1])) e--;
    memmove(b.p, b.p + s, e - s);
    b.p[e - s] = 0;
    return b.p;
}

/* ---- samples during training ------------------------------------------------------------------ */

int sd_sample_due(const sd_sample_triggers *t, int epoch, int64_t steps)
{
    int has_epoch = epoch != SD_SAMPLE_NO_EPOCH;
    if (steps == 0) return t->sample_at_first ? 1 : 0;
    if (t->every_n_steps <= 0 && t->every_n_epochs <= 0) return 0;
    if (t->every_n_epochs > 0) {
        if (!has_epoch || epoch % t->every_n_epochs != 0) return 0;
    } else {
        if (steps % t->every_n_steps != 0 || has_epoch) return 0;
    }
    return 1;
}

int sd_sample_file_name(char *buf, size_t n, const char *output_name, int epoch, int64_t steps, int index,
                        time_t when, int has_seed, uint64_t seed)
{
    struct tm tmv;
    char ts[32], num[32], sd[32] = "";
    if (!localtime_r(&when, &tmv) || !strftime(ts, sizeof ts, "%Y%m%d%H%M%S", &tmv))
        return sd_err(SD_ERANGE, "sample file name: bad time");
    if (epoch != SD_SAMPLE_NO_EPOCH) snprintf(num, sizeof num, "e%06d", epoch);
    else snprintf(num, sizeof num, "%06lld", (long long)steps);
    if (has_seed) snprintf(sd, sizeof sd, "_%llu", (unsigned long long)seed);
    int k = snprintf(buf, n, "%s%s%s_%02d_%s%s.png", output_name ? output_name : "", output_name ? "_" : "", num,
                     index, ts, sd);
    if (k < 0 || (size_t)k >= n) return sd_err(SD_ERANGE, "sample file name too long");
    return SD_OK;
}

int sd_sample_write_png(const char *path, const sd_image *im, const char *infotext)
{
    uint8_t *png = NULL, *png2 = NULL;
    size_t n = 0, n2 = 0;
    int rc = sd_image_encode_png(im, &png, &n);
    if (rc) return rc;
    if (infotext) {
        sd_png_text t = { "parameters", infotext };
        rc = sd_png_add_text(png, n, &t, 1, &png2, &n2);
        free(png);
        if (rc) return rc;
        png = png2;
        n = n2;
    }
    rc = sd_write_file_atomic(path, png, n);
    free(png);
    return rc;
}

int sd_sample_images(sd_ctx *ctx, const sd_gen_models *m, const sd_prompt_list *prompts,
                     const sd_sample_run_opts *o, int epoch, int64_t steps)
{
    if (!o->output_dir) return sd_err(SD_EINVAL, "sample images: no output directory");
    size_t dl = strlen(o->output_dir) + 8;
    char *dir = malloc(dl);
    if (!dir) return sd_err(SD_ENOMEM, "out of memory");
    snprintf(dir, dl, "%s/sample", o->output_dir);
    int rc = sd_mkdirs(dir);
    time_t now = time(NULL);
    for (size_t i = 0; i < prompts->n && !rc; i++) {
        const sd_sample_prompt *sp = &prompts->items[i];
        sd_sampler_kind kind = o->sampler;
        if (sp->sampler) sd_sampler_parse_reference(sp->sampler, &kind);
        uint64_t seed;
        if (sp->has_seed) {
            seed = sp->seed;
        } else {
            sd_rng r = sd_rng_key(o->seed_base, (uint32_t)steps, (uint32_t)i, SD_RNG_SAMPLER);
            seed = sd_rng_u32_at(&r, 0);
        }
        int W = sp->width - sp->width % 8, H = sp->height - sp->height % 8;
        if (W < 64) W = 64;
        if (H < 64) H = 64;
        int steps_n = sp->steps < 1 ? 1 : sp->steps > 1000 ? 1000 : sp->steps;
        sd_gen_params gp = { .prompt = sp->prompt, .negative_prompt = sp->negative_prompt, .width = W, .height = H,
                             .steps = steps_n, .scale = sp->scale, .sampler = kind, .batch = 1, .seeds = &seed };
        sd_image im = { 0 }, cim = { 0 };
        if (m->controlnet) {   /* Image.open(controlnet_image).convert("RGB") */
            if (!sp->controlnet_image) rc = sd_err(SD_EINVAL, "sample prompt %zu: no control image (--cn)", i);
            else rc = sd_image_load(sp->controlnet_image, SD_ALPHA_DROP, &cim, NULL);
            if (rc) break;
            gp.control_image = &cim;
        }
        int idx = sp->index >= 0 ? sp->index : (int)i;
        /* a trainer's context may have less scratch than generation needs: use a context of our own */
        size_t need = sd_txt2img_scratch_bytes(m, &gp);
        sd_ctx own, *use = ctx;
        if (ctx->scratch.cap - ctx->scratch.used < need) {
            rc = sd_ctx_init(&own, (sd_devkind)ctx->backend, ctx->threads, need);
            if (rc) {
                sd_image_free(&cim);
                break;
            }
            use = &own;
        }
        rc = sd_txt2img(use, m, &gp, &im);
        sd_image_free(&cim);
        if (use != ctx) sd_ctx_free(&own);
        if (rc) {
            sd_err_prefix(rc, "sample prompt %d", idx);
            break;
        }
        char name[512], *path = NULL, *info = NULL;
        rc = sd_sample_file_name(name, sizeof name, o->output_name, epoch, steps, idx, now, sp->has_seed, sp->seed);
        if (!rc) {
            size_t pl = strlen(dir) + strlen(name) + 2;
            path = malloc(pl);
            if (!path) rc = sd_err(SD_ENOMEM, "out of memory");
            else snprintf(path, pl, "%s/%s", dir, name);
        }
        if (!rc && o->write_parameters) {
            sd_infotext it = { .prompt = sp->prompt, .negative_prompt = sp->negative_prompt, .steps = steps_n,
                               .sampler = sd_sampler_a1111_name(kind), .scale = sp->scale, .seed = seed,
                               .width = W, .height = H, .model = o->model_name, .clip_skip = m->clip_skip };
            info = sd_infotext_format(&it);
            if (!info) rc = sd_err(SD_ENOMEM, "out of memory");
        }
        if (!rc) rc = sd_sample_write_png(path, &im, info);
        if (!rc && o->on_image) rc = o->on_image(o->user, sp, idx, &im, path);
        free(info);
        free(path);
        sd_image_free(&im);
    }
    free(dir);
    return rc;
}
