/* Textual Inversion pieces of sd-train (see ti.h). */
#include "train/ti.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"
#include "base/log.h"
#include "io/embedding.h"
#include "io/ckpt.h"
#include "io/torch_save.h"
#include "tensor/device.h"
#include "train/loop.h"

/* train_textual_inversion.py imagenet_templates_small / imagenet_style_templates_small */
const char *const sd_ti_object_templates[27] = {
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
};
const char *const sd_ti_style_templates[19] = {
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a cropped painting in the style of {}", "a good painting in the style of {}",
    "a close-up painting in the style of {}", "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
};

int sd_ti_check_config(const struct sd_train_config *c)
{
    const sd_ti_opts *o = &c->ti;
    if (!o->token_string || !*o->token_string)
        return sd_err(SD_EUSAGE, "--method ti needs --token_string (the new word, e.g. --token_string mychar)");
    if (o->num_vectors_per_token < 1 || o->num_vectors_per_token > 75)
        return sd_err(SD_EUSAGE, "--num_vectors_per_token must be 1..75");
    const char *as = c->save_model_as;
    if (as && strcmp(as, "pt") && strcmp(as, "ckpt") && strcmp(as, "safetensors"))
        return sd_err(SD_EUSAGE, "--save_model_as %s: textual inversion saves pt (default), ckpt or safetensors", as);
    const char *lora = c->network_weights                       ? "--network_weights"
                       : c->network_dim > 0                     ? "--network_dim"
                       : c->network_args && c->network_args->n  ? "--network_args"
                       : c->dim_from_weights                    ? "--dim_from_weights"
                       : c->train_unet_only                     ? "--network_train_unet_only"
                       : c->train_text_encoder_only             ? "--network_train_text_encoder_only"
                       : c->scale_weight_norms > 0              ? "--scale_weight_norms"
                       : c->network_dropout > 0                 ? "--network_dropout"
                       : !isnan(c->unet_lr)                     ? "--unet_lr"
                       : !isnan(c->text_encoder_lr)             ? "--text_encoder_lr"
                                                                : NULL;
    if (lora) return sd_err(SD_EUSAGE, "%s is a LoRA option; --method ti trains only the new token embedding", lora);
    if (c->weighted_captions)
        return sd_err(SD_EUSAGE, "--weighted_captions is not available for textual inversion (as in the reference)");
    if (c->caption.dropout_rate > 0 || c->caption.dropout_every_n_epochs > 0)
        return sd_err(SD_EUSAGE, "--caption_dropout_rate / --caption_dropout_every_n_epochs are not available for "
                      "textual inversion (as in the reference)");
    if (!isnan(c->validation_split) && c->validation_split > 0)
        return sd_err(SD_EUSAGE, "--validation_split: train_textual_inversion.py has no validation; not available for "
                      "--method ti");
    return SD_OK;
}

/* GPT-2 bytes_to_unicode: the code point of byte b in vocabulary entries. */
static unsigned byte_cp(unsigned b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256 + n;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

int sd_ti_in_vocab(const sd_clip_tokenizer *tok, const char *s)
{
    size_t sl = strlen(s);
    char key[512];
    for (int32_t id = 0; id < SD_CLIP_VOCAB_SIZE; id++) {
        size_t len = 0;
        int eow = 0;
        const char *raw = sd_clip_tokenizer_token(tok, id, &len, &eow);
        if (!raw) continue;
        if (id >= SD_CLIP_VOCAB_SIZE - 2) {   /* <|startoftext|>, <|endoftext|> */
            if (len == sl && !memcmp(raw, s, sl)) return 1;
            continue;
        }
        if (2 * len + 5 > sizeof key) continue;
        size_t k = 0;
        for (size_t i = 0; i < len; i++) k += put_utf8(key + k, byte_cp((unsigned char)raw[i]));
        if (eow) memcpy(key + k, "</w>", 4), k += 4;
        if (k == sl && !memcmp(key, s, sl)) return 1;
    }
    return 0;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* ---- reading embeddings ------------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* ---- setup ------------------------------------------------------------------------------------- */

int sd_ti_init(sd_ti *ti, const sd_ti_opts *o, sd_clip *clip, sd_clip_tokenizer *tok)
{
    return sd_ti_init_part(ti, o, clip, tok, -1);
}

int sd_ti_init_tokens(sd_ti *ti, const sd_ti_opts *o, const sd_clip_tokenizer *tok)
{
    memset(ti, 0, sizeof *ti);
    sd_params_init(&ti->reg);
    ti->part = -1;
    if (!o->token_string || !*o->token_string)
        return sd_err(SD_EUSAGE, "--method ti needs --token_string (the new word, e.g. --token_string mychar)");
    int N = o->num_vectors_per_token;
    if (N < 1 || N > 75) return sd_err(SD_EUSAGE, "--num_vectors_per_token must be 1..75");
    if (o->use_object_template && o->use_style_template)
        sd_warn("--use_object_template and --use_style_template: the object templates are used (as the reference)");
    ti->n = N;
    ti->strs = calloc((size_t)N, sizeof *ti->strs);
    size_t tl = strlen(o->token_string);
    ti->replace_to = malloc((size_t)N * (tl + 4) + 1);
    if (!ti->strs || !ti->replace_to) return sd_err(SD_ENOMEM, "out of memory");
    ti->replace_to[0] = 0;
    for (int k = 0; k < N; k++) {
        char *s = malloc(tl + 4);
        if (!s) return sd_err(SD_ENOMEM, "out of memory");
        if (k) snprintf(s, tl + 4, "%s%d", o->token_string, k);
        else memcpy(s, o->token_string, tl + 1);
        ti->strs[k] = s;
        if (k) strcat(ti->replace_to, " ");
        strcat(ti->replace_to, s);
    }
    for (int k = 0; k < N; k++)
        if (sd_ti_in_vocab(tok, ti->strs[k]))
            return sd_err(SD_EINVAL, "tokenizer has same word to token string '%s'. please use another one (the "
                          "vocabulary already has it)", ti->strs[k]);
    if (o->use_object_template || o->use_style_template) {
        ti->templates = o->use_object_template ? sd_ti_object_templates : sd_ti_style_templates;
        ti->ntemplates = o->use_object_template ? 27 : 19;
    }
    return SD_OK;
}

int sd_ti_init_part(sd_ti *ti, const sd_ti_opts *o, sd_clip *clip, sd_clip_tokenizer *tok, int part)
{
    int rc = sd_ti_init_tokens(ti, o, tok);
    if (rc) return rc;
    int N = ti->n;
    sd_tensor *tab = &clip->tok.w->value;
    if (tab->dtype != SD_F32 || tab->device != SD_DEV_CPU || tab->ndim != 2)
        return sd_err(SD_EUNSUPPORTED, "textual inversion: the token table must be host f32");
    const int64_t V = tab->shape[0], D = tab->shape[1];
    ti->V = V;
    ti->D = D;
    ti->part = part;
    ti->first_id = (int32_t)V;
    if (V != SD_CLIP_VOCAB_SIZE)
        return sd_err(SD_EUNSUPPORTED, "textual inversion: the text encoder has %lld token rows, not the tokenizer's %d",
                      (long long)V, SD_CLIP_VOCAB_SIZE);
    /* the widened table */
    rc = sd_tensor_alloc(&ti->table, SD_F32, SD_DIMS(V + N, D));
    if (rc) return rc;
    float *dst = ti->table.data;
    memcpy(dst, tab->data, (size_t)(V * D) * sizeof(float));
    float *nw = dst + (size_t)V * (size_t)D;
    if (o->init_word) {
        int32_t *ids = NULL;
        size_t m = 0;
        rc = sd_clip_tokenizer_encode(tok, o->init_word, strlen(o->init_word), 0, &ids, &m);
        if (rc) return rc;
        if (!m) {
            free(ids);
            return sd_err(SD_EINVAL, "--init_word '%s' has no tokens", o->init_word);
        }
        if (m > 1 && m != (size_t)N)
            sd_warn("token length for init words is not same to num_vectors_per_token, init words is repeated or "
                    "truncated: tokenizer %d, length %zu", part > 0 ? 2 : 1, m);
        for (int k = 0; k < N; k++)
            memcpy(nw + (size_t)k * D, dst + (size_t)ids[(size_t)k % m] * (size_t)D, (size_t)D * sizeof(float));
        free(ids);
    } else {
        for (int64_t j = 0; j < D; j++) {
            double s = 0;
            for (int64_t i = 0; i < V; i++) s += dst[(size_t)i * D + j];
            for (int k = 0; k < N; k++) nw[(size_t)k * D + j] = (float)(s / (double)V);
        }
    }
    if (o->weights) {
        float *vecs = NULL;
        int64_t cnt = 0;
        rc = part < 0 ? sd_embedding_read(o->weights, D, &vecs, &cnt)
                      : sd_embedding_read_key(o->weights, part ? "clip_g" : "clip_l", D, &vecs, &cnt);
        if (rc) return rc;
        if (cnt != N) {
            free(vecs);
            return sd_err(SD_EINVAL, "num_vectors_per_token is mismatch for weights: %s has %lld vectors, "
                          "--num_vectors_per_token is %d", o->weights, (long long)cnt, N);
        }
        memcpy(nw, vecs, (size_t)(N * D) * sizeof(float));
        free(vecs);
        sd_info("weights loaded: %s", o->weights);
    }
    /* parameters */
    static const char *const pname[3][2] = { { "emb_params", "rest_grad_norm" }, { "clip_l", "rest_grad_norm_l" },
                                             { "clip_g", "rest_grad_norm_g" } };
    rc = sd_params_add(&ti->reg, NULL, pname[part + 1][0], 2, (int64_t[]){ N, D }, SD_PARAM_TRAINABLE, &ti->emb);
    if (!rc) rc = sd_params_add(&ti->reg, NULL, pname[part + 1][1], 1, (int64_t[]){ 1 }, SD_PARAM_TRAINABLE, &ti->rest);
    if (!rc) rc = sd_params_alloc(&ti->reg, SD_DEV_CPU);
    if (rc) return rc;
    memcpy(ti->emb->value.data, nw, (size_t)(N * D) * sizeof(float));
    /* install */
    ti->clip = clip;
    ti->saved = *tab;
    ti->saved_vocab = clip->tok.vocab;
    ti->saved_cfg_vocab = clip->cfg.vocab_size;
    *tab = ti->table;
    clip->tok.vocab = V + N;
    clip->cfg.vocab_size = (int)(V + N);
    ti->gtok.token = ti->strs[0];
    ti->gtok.first_id = ti->first_id;
    ti->gtok.count = N;
    /* accumulator of the old rows' gradient */
    ti->slot_of = malloc((size_t)V * sizeof *ti->slot_of);
    if (!ti->slot_of) return sd_err(SD_ENOMEM, "out of memory");
    for (int64_t i = 0; i < V; i++) ti->slot_of[i] = -1;
    sd_info("tokens are added%s: %s = ids %d..%d (%d vectors of %lld)%s%s",
            part < 0 ? "" : part ? " to text encoder 2" : " to text encoder 1", ti->replace_to, (int)ti->first_id,
            (int)(ti->first_id + N - 1), N, (long long)D, o->init_word ? ", init word " : "",
            o->init_word ? o->init_word : "");
    return SD_OK;
}

int sd_ti_set_full(sd_ti *ti)
{
    const char *name = ti->emb->key;
    char keep[128];
    snprintf(keep, sizeof keep, "%s", name);
    sd_params_free(&ti->reg);
    sd_params_init(&ti->reg);
    ti->rest = NULL;
    int rc = sd_params_add(&ti->reg, NULL, keep, 2, (int64_t[]){ ti->V + ti->n, ti->D }, SD_PARAM_TRAINABLE, &ti->emb);
    if (!rc) rc = sd_params_alloc(&ti->reg, SD_DEV_CPU);
    if (rc) return sd_err_prefix(rc, "textual inversion: the whole token table as the parameter");
    memcpy(ti->emb->value.data, ti->table.data, sd_tensor_nbytes(&ti->table));
    ti->full = 1;
    return SD_OK;
}

const float *sd_ti_vectors(const sd_ti *ti)
{
    return (const float *)ti->emb->value.data + (ti->full ? (size_t)ti->V * (size_t)ti->D : 0);
}

void sd_ti_free(sd_ti *ti)
{
    if (ti->clip) {
        ti->clip->tok.w->value = ti->saved;
        ti->clip->tok.vocab = ti->saved_vocab;
        ti->clip->cfg.vocab_size = ti->saved_cfg_vocab;
    }
    sd_tensor_free(&ti->table);
    sd_tensor_free(&ti->dtable);
    for (int k = 0; ti->strs && k < ti->n; k++) free(ti->strs[k]);
    free(ti->strs);
    free(ti->replace_to);
    sd_params_free(&ti->reg);
    free(ti->slot_of);
    free(ti->touched);
    free(ti->rows);
    memset(ti, 0, sizeof *ti);
}

/* ---- captions ---------------------------------------------------------------------------------- */

/* Python str.replace(a, b) (a non-empty). */
static char *str_replace(const char *s, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), cnt = 0;
    for (const char *p = strstr(s, a); p; p = strstr(p + la, a)) cnt++;
    char *out = malloc(strlen(s) + cnt * lb + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = s;;) {
        const char *q = strstr(p, a);
        if (!q) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, b, lb);
        o += lb;
        p = q + la;
    }
    return out;
}

int sd_ti_caption(const sd_ti *ti, const char *caption, sd_rng *rng, char **out)
{
    if (ti->templates) {
        const char *t = ti->templates[sd_rng_next_below(rng, (uint64_t)ti->ntemplates)];
        *out = str_replace(t, "{}", ti->replace_to);
    } else if (ti->n > 1) {
        *out = str_replace(caption, ti->strs[0], ti->replace_to);
    } else {
        *out = xstrdup(caption);
    }
    return *out ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
}

int sd_ti_frame(const sd_ti *ti, sd_clip_tokenizer *tok, const char *text, int max_token_length, int32_t pad,
                int32_t *out, int *nchunks, int *truncated)
{
    size_t L = (size_t)(max_token_length > 75 ? max_token_length : 75), n = 0, cap = L + 1;
    int32_t *all = malloc(cap * sizeof *all);
    if (!all) return sd_err(SD_ENOMEM, "out of memory");
    int rc = SD_OK;
    const char *s = text;
    while (*s && !rc && n <= L) {
        const char *best = NULL;
        int bk = -1;
        for (int k = 0; k < ti->n; k++) {
            const char *p = strstr(s, ti->strs[k]);
            if (p && (!best || p < best || (p == best && strlen(ti->strs[k]) > strlen(ti->strs[bk])))) {
                best = p;
                bk = k;
            }
        }
        size_t plen = best ? (size_t)(best - s) : strlen(s);
        if (plen) {
            int32_t *ids = NULL;
            size_t m = 0;
            rc = sd_clip_tokenizer_encode(tok, s, plen, L + 1, &ids, &m);
            for (size_t i = 0; i < m && !rc && n <= L; i++) all[n++] = ids[i];
            free(ids);
        }
        if (!best) break;
        if (n <= L) all[n++] = ti->first_id + bk;
        s = best + strlen(ti->strs[bk]);
    }
    if (!rc) rc = sd_clip_frame_ids(all, n, max_token_length, pad, out, nchunks, truncated);
    free(all);
    return rc;
}

/* ---- gradients --------------------------------------------------------------------------------- */

void sd_ti_zero_grad(sd_ti *ti)
{
    if (ti->full) {
        memset(ti->emb->grad.data, 0, sd_tensor_nbytes(&ti->emb->grad));
        return;
    }
    memset(ti->emb->grad.data, 0, (size_t)(ti->n * ti->D) * sizeof(float));
    ((float *)ti->rest->grad.data)[0] = 0;
    for (size_t i = 0; i < ti->nslots; i++) ti->slot_of[ti->touched[i]] = -1;
    ti->nslots = 0;
}

int sd_ti_accumulate(sd_ti *ti, const int32_t *ids, int64_t npos, const float *d_tok)
{
    const int64_t D = ti->D;
    float *ge = ti->emb->grad.data;
    for (int64_t p = 0; p < npos; p++) {
        int32_t id = ids[p];
        const float *g = d_tok + (size_t)p * (size_t)D;
        float *dst;
        if (ti->full) {
            if (id < 0 || id >= ti->first_id + ti->n)
                return sd_err(SD_EINVAL, "textual inversion: token id %d out of range", (int)id);
            dst = ge + (size_t)id * (size_t)D;
        } else if (id >= ti->first_id && id < ti->first_id + ti->n) {
            dst = ge + (size_t)(id - ti->first_id) * (size_t)D;
        } else if (id >= 0 && id < ti->V) {
            if (ti->slot_of[id] < 0) {
                if (ti->nslots == ti->capslots) {
                    size_t nc = ti->capslots ? 2 * ti->capslots : 256;
                    int32_t *t = realloc(ti->touched, nc * sizeof *t);
                    if (!t) return sd_err(SD_ENOMEM, "out of memory");
                    ti->touched = t;
                    float *r = realloc(ti->rows, nc * (size_t)D * sizeof *r);
                    if (!r) return sd_err(SD_ENOMEM, "out of memory");
                    ti->rows = r;
                    ti->capslots = nc;
                }
                ti->slot_of[id] = (int32_t)ti->nslots;
                ti->touched[ti->nslots] = id;
                memset(ti->rows + ti->nslots * (size_t)D, 0, (size_t)D * sizeof(float));
                ti->nslots++;
            }
            dst = ti->rows + (size_t)ti->slot_of[id] * (size_t)D;
        } else {
            return sd_err(SD_EINVAL, "textual inversion: token id %d out of range", (int)id);
        }
        for (int64_t k = 0; k < D; k++) dst[k] += g[k];
    }
    return SD_OK;
}

void sd_ti_finish_grad(sd_ti *ti)
{
    if (ti->full) return;   /* the clipping norm runs over the whole table's gradient itself */
    double s = 0;
    size_t n = ti->nslots * (size_t)ti->D;
    for (size_t i = 0; i < n; i++) s += (double)ti->rows[i] * ti->rows[i];
    ((float *)ti->rest->grad.data)[0] = (float)sqrt(s);
}

int sd_ti_round_table(sd_ti *ti, sd_dtype dt)
{
    sd_round_half_n((float *)ti->table.data, (size_t)sd_tensor_numel(&ti->table), dt == SD_BF16);
    if (ti->full) memcpy(ti->emb->value.data, ti->table.data, sd_tensor_nbytes(&ti->table));
    return ti->dtable.data ? sd_tensor_upload(&ti->dtable, ti->table.data, sd_tensor_nbytes(&ti->table)) : SD_OK;
}

int sd_ti_sync_table(sd_ti *ti)
{
    size_t off = (size_t)ti->V * (size_t)ti->D * sizeof(float), nb = (size_t)(ti->n * ti->D) * sizeof(float);
    const float *vec = sd_ti_vectors(ti);
    if (ti->full) memcpy(ti->emb->value.data, ti->table.data, off);   /* the old rows restored */
    memcpy((char *)ti->table.data + off, vec, nb);
    return ti->dtable.data ? sd_device_copy_to_device((char *)ti->dtable.data + off, vec, nb) : SD_OK;
}

void sd_ti_uninstall(sd_ti *ti)
{
    if (ti->clip) ti->clip->tok.w->value = ti->saved;
}

int sd_ti_install(sd_ti *ti, sd_devkind dev)
{
    sd_tensor *tab = &ti->clip->tok.w->value;
    ti->saved = *tab;
    if (dev != SD_DEV_CUDA) {
        *tab = ti->table;
        return SD_OK;
    }
    if (!ti->dtable.data) {
        int rc = sd_tensor_alloc_on(&ti->dtable, SD_DEV_CUDA, SD_F32, 2, ti->table.shape);
        if (rc) return sd_err_prefix(rc, "textual inversion: the token table on the GPU");
    }
    int rc = sd_tensor_upload(&ti->dtable, ti->table.data, sd_tensor_nbytes(&ti->table));
    if (!rc) *tab = ti->dtable;
    return rc;
}

/* ---- saving ------------------------------------------------------------------------------------ */

/* {names[i]: tis[i]'s vectors} as safetensors or torch.save. */
static int save_parts(const sd_ti *const *tis, const char *const *names, int n, const char *path, sd_st_dtype dtype,
                      const char *const *meta_keys, const char *const *meta_vals, size_t nmeta)
{
    if (ends_with(path, ".safetensors")) {
        sd_safetensors_writer *w = NULL;
        int rc = sd_safetensors_writer_new(&w);
        if (rc) return rc;
        for (size_t i = 0; i < nmeta && !rc; i++) rc = sd_safetensors_writer_set_meta(w, meta_keys[i], meta_vals[i]);
        for (int i = 0; i < n && !rc; i++)
            rc = sd_safetensors_writer_add_f32(w, names[i], dtype, 2, (int64_t[]){ tis[i]->n, tis[i]->D },
                                               sd_ti_vectors(tis[i]));
        if (!rc) rc = sd_safetensors_writer_write(w, path);
        sd_safetensors_writer_free(w);
        return rc;
    }
    /* torch.save({name: tensor [N, D], ...}) (io/torch_save.h: byte for byte torch 1.13's) */
    size_t es = sd_st_dtype_size(dtype);
    unsigned char *data[2] = { NULL, NULL };
    sd_torch_save *ts = NULL;
    int rc = sd_torch_save_new(&ts);
    for (int i = 0; i < n && !rc; i++) {
        size_t cnt = (size_t)(tis[i]->n * tis[i]->D), nb = cnt * es;
        data[i] = malloc(nb ? nb : 1);
        if (!data[i]) rc = sd_err(SD_ENOMEM, "out of memory");
        if (!rc) rc = sd_st_convert(SD_ST_F32, sd_ti_vectors(tis[i]), dtype, data[i], cnt);
        if (!rc) rc = sd_torch_save_tensor(ts, names[i], dtype, 2, (int64_t[]){ tis[i]->n, tis[i]->D }, data[i]);
    }
    if (!rc) rc = sd_torch_save_write(ts, path);
    sd_torch_save_free(ts);
    for (int i = 0; i < n; i++) free(data[i]);
    return rc;
}

int sd_ti_save(const sd_ti *ti, const char *path, sd_st_dtype dtype, const char *const *meta_keys,
               const char *const *meta_vals, size_t nmeta)
{
    const sd_ti *tis[1] = { ti };
    return save_parts(tis, (const char *const[]){ "emb_params" }, 1, path, dtype, meta_keys, meta_vals, nmeta);
}

int sd_ti_save_sdxl(const sd_ti *ti1, const sd_ti *ti2, const char *path, sd_st_dtype dtype,
                    const char *const *meta_keys, const char *const *meta_vals, size_t nmeta)
{
    const sd_ti *tis[2] = { ti1, ti2 };
    return save_parts(tis, (const char *const[]){ "clip_l", "clip_g" }, 2, path, dtype, meta_keys, meta_vals, nmeta);
}
