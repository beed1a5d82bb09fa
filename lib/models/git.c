/* GIT captioner: loading, vision tower, decoder with a key/value cache, greedy generation,
 * preprocessing (see git.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/resample.h"
#include "models/git.h"
#include "models/vit.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

#define VM "git.image_encoder.vision_model."
#define TXT "git.encoder.layer."

static int has(const sd_safetensors *st, const char *k) { return sd_safetensors_find(st, k) != NULL; }

int sd_git_detect(const sd_safetensors *st) { return has(st, VM "embeddings.class_embedding"); }

void sd_git_free(sd_git *m)
{
    free(m->vb);
    free(m->tl);
    sd_params_free(&m->r);
    memset(m, 0, sizeof *m);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int finish_load(sd_git *m, const sd_safetensors *st, const sd_load_report *rep)
{
    const char *path = sd_safetensors_path(st);
    char list[512] = "";
    size_t bad = 0;
    for (size_t i = 0; i < rep->missing; i++) {
        const char *k = rep->missing_keys[i];
        if (!strcmp(k, "output.weight")) {   /* tied (_tied_weights_keys) */
            memcpy(m->out.w->value.data, m->word->value.data, sd_tensor_nbytes(&m->word->value));
            continue;
        }
        if (bad++ < 4) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", bad > 1 ? ", " : "", k);
    }
    if (bad) return sd_err(SD_EFORMAT, "%s: %zu missing tensor%s: %s%s", path, bad, bad > 1 ? "s" : "", list,
                           bad > 4 ? ", ..." : "");
    for (size_t i = 0; i < rep->unexpected; i++) {
        const char *k = rep->unexpected_keys[i];
        if (ends_with(k, "position_ids")) continue;
        if (strncmp(k, "git.", 4) && strncmp(k, "output.", 7)) continue;
        if (bad++ < 4) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", bad > 1 ? ", " : "", k);
    }
    if (bad) return sd_err(SD_EFORMAT, "%s: %zu unexpected tensor%s: %s%s", path, bad, bad > 1 ? "s" : "", list,
                           bad > 4 ? ", ..." : "");
    return SD_OK;
}

int sd_git_open(sd_git *m, const sd_safetensors *st, sd_devkind dev)
{
    memset(m, 0, sizeof *m);
    sd_params_init(&m->r);
    const char *path = sd_safetensors_path(st);
    int rc = SD_OK;
    sd_load_report rep = { 0 };
    char p[256];
    const sd_st_tensor *tc, *tw, *tp, *tf, *twe, *tpe, *ti;
    if (!sd_git_detect(st))
        TRY(sd_err(SD_EFORMAT, "%s: not a GIT model (no " VM "embeddings.class_embedding)", path));
    if (has(st, "git.img_temperal_embedding.0"))
        TRY(sd_err(SD_EUNSUPPORTED, "%s: a video GIT checkpoint (img_temperal_embedding) is not supported", path));
    TRY(sd_safetensors_get_dims(st, VM "embeddings.class_embedding", 1, NULL, &tc));
    TRY(sd_safetensors_get_dims(st, VM "embeddings.patch_embedding.weight", 4, NULL, &tw));
    TRY(sd_safetensors_get_dims(st, VM "embeddings.position_embedding.weight", 2, NULL, &tp));
    m->vwidth = tw->shape[0];
    m->patch = tw->shape[2];
    if (tw->shape[1] != 3 || tw->shape[3] != m->patch || tc->shape[0] != m->vwidth || tp->shape[1] != m->vwidth)
        TRY(sd_err(SD_EFORMAT, "%s: the vision embeddings disagree (patch_embedding [D,3,P,P], class_embedding [D], "
                               "position_embedding [T,D])", path));
    m->vtokens = tp->shape[0];
    int64_t g = 1;
    while (g * g < m->vtokens - 1) g++;
    if (g * g != m->vtokens - 1)
        TRY(sd_err(SD_EFORMAT, "%s: position_embedding has %lld rows, not 1 + a square number", path,
                   (long long)m->vtokens));
    m->grid = g;
    m->size = g * m->patch;
    if (m->size > 8192) TRY(sd_err(SD_EFORMAT, "%s: input size %lld is too large", path, (long long)m->size));
    TRY(sd_safetensors_get_dims(st, VM "encoder.layers.0.mlp.fc1.weight", 2, NULL, &tf));
    m->vmlp = tf->shape[0];
    for (m->vdepth = 0; m->vdepth < 1000; m->vdepth++) {
        snprintf(p, sizeof p, VM "encoder.layers.%d.self_attn.q_proj.weight", (int)m->vdepth);
        if (!has(st, p)) break;
    }
    TRY(sd_vit_heads(st, "vision_heads", m->vwidth, &m->vheads));
    TRY(sd_safetensors_get_dims(st, "git.embeddings.word_embeddings.weight", 2, NULL, &twe));
    TRY(sd_safetensors_get_dims(st, "git.embeddings.position_embeddings.weight", 2, NULL, &tpe));
    TRY(sd_safetensors_get_dims(st, TXT "0.intermediate.dense.weight", 2, NULL, &ti));
    m->vocab = twe->shape[0];
    m->twidth = twe->shape[1];
    m->positions = tpe->shape[0];
    m->tinter = ti->shape[0];
    for (m->tdepth = 0; m->tdepth < 1000; m->tdepth++) {
        snprintf(p, sizeof p, TXT "%d.attention.self.query.weight", (int)m->tdepth);
        if (!has(st, p)) break;
    }
    TRY(sd_vit_heads(st, "text_heads", m->twidth, &m->theads));
    const int64_t Dv = m->vwidth, Dt = m->twidth;
    TRY(sd_params_add(&m->r, NULL, VM "embeddings.class_embedding", 1, tc->shape, 0, &m->cls));
    TRY(sd_params_add(&m->r, NULL, VM "embeddings.position_embedding.weight", 2, tp->shape, 0, &m->pos));
    TRY(sd_conv2d_init(&m->patch_embed, &m->r, VM "embeddings.patch_embedding", 3, Dv, (int)m->patch, (int)m->patch,
                       sd_conv2d_geom_make((int)m->patch, 0), 0));
    TRY(sd_layernorm_init(&m->pre_ln, &m->r, VM "pre_layrnorm", Dv, 1e-5f));
    m->vb = calloc((size_t)(m->vdepth ? m->vdepth : 1), sizeof *m->vb);
    m->tl = calloc((size_t)(m->tdepth ? m->tdepth : 1), sizeof *m->tl);
    if (!m->vb || !m->tl) TRY(sd_err(SD_ENOMEM, "out of memory"));
    for (int i = 0; i < m->vdepth; i++) {
        sd_git_vblock *b = &m->vb[i];
#define K(s) (snprintf(p, sizeof p, VM "encoder.layers.%d." s, i), p)
        TRY(sd_layernorm_init(&b->ln1, &m->r, K("layer_norm1"), Dv, 1e-5f));
        TRY(sd_linear_init(&b->q, &m->r, K("self_attn.q_proj"), Dv, Dv, SD_NN_BIAS));
        TRY(sd_linear_init(&b->k, &m->r, K("self_attn.k_proj"), Dv, Dv, SD_NN_BIAS));
        TRY(sd_linear_init(&b->v, &m->r, K("self_attn.v_proj"), Dv, Dv, SD_NN_BIAS));
        TRY(sd_linear_init(&b->o, &m->r, K("self_attn.out_proj"), Dv, Dv, SD_NN_BIAS));
        TRY(sd_layernorm_init(&b->ln2, &m->r, K("layer_norm2"), Dv, 1e-5f));
        TRY(sd_linear_init(&b->fc1, &m->r, K("mlp.fc1"), Dv, m->vmlp, SD_NN_BIAS));
        TRY(sd_linear_init(&b->fc2, &m->r, K("mlp.fc2"), m->vmlp, Dv, SD_NN_BIAS));
#undef K
    }
    TRY(sd_layernorm_init(&m->post_ln, &m->r, VM "post_layernorm", Dv, 1e-5f));
    TRY(sd_linear_init(&m->proj, &m->r, "git.visual_projection.visual_projection.0", Dv, Dt, SD_NN_BIAS));
    TRY(sd_layernorm_init(&m->proj_ln, &m->r, "git.visual_projection.visual_projection.1", Dt, 1e-5f));
    TRY(sd_params_add(&m->r, NULL, "git.embeddings.word_embeddings.weight", 2, twe->shape, 0, &m->word));
    TRY(sd_params_add(&m->r, NULL, "git.embeddings.position_embeddings.weight", 2, tpe->shape, 0, &m->tpos));
    TRY(sd_layernorm_init(&m->emb_ln, &m->r, "git.embeddings.LayerNorm", Dt, 1e-12f));
    for (int i = 0; i < m->tdepth; i++) {
        sd_git_tlayer *l = &m->tl[i];
#define K(s) (snprintf(p, sizeof p, TXT "%d." s, i), p)
        TRY(sd_linear_init(&l->q, &m->r, K("attention.self.query"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->k, &m->r, K("attention.self.key"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->v, &m->r, K("attention.self.value"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->ao, &m->r, K("attention.output.dense"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_layernorm_init(&l->aln, &m->r, K("attention.output.LayerNorm"), Dt, 1e-12f));
        TRY(sd_linear_init(&l->inter, &m->r, K("intermediate.dense"), Dt, m->tinter, SD_NN_BIAS));
        TRY(sd_linear_init(&l->out, &m->r, K("output.dense"), m->tinter, Dt, SD_NN_BIAS));
        TRY(sd_layernorm_init(&l->oln, &m->r, K("output.LayerNorm"), Dt, 1e-12f));
#undef K
    }
    TRY(sd_linear_init(&m->out, &m->r, "output", Dt, m->vocab, SD_NN_BIAS));
    TRY(sd_params_set_trainable(&m->r, "", 0) < 0 ? SD_ESTATE : SD_OK);
    TRY(sd_params_alloc(&m->r, SD_DEV_CPU));
    TRY(sd_params_load_safetensors(&m->r, st, NULL, 0, SD_LOAD_ALLOW_MISSING | SD_LOAD_ALLOW_UNEXPECTED, &rep));
    TRY(finish_load(m, st, &rep));
    if (dev != SD_DEV_CPU) TRY(sd_params_move(&m->r, dev));
out:
    sd_load_report_free(&rep);
    if (rc) sd_git_free(m);
    return rc;
}

/* ---- vision tower ------------------------------------------------------------------------------ */

static int tens(sd_ctx *ctx, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "GIT activations") : SD_OK;
}

int sd_git_encode_image(sd_ctx *ctx, sd_git *m, sd_tensor *feat, sd_tensor *vis, const sd_tensor *x)
{
    const int64_t S = m->size, D = m->vwidth, T = m->vtokens, g = m->grid;
    if (x->ndim != 4 || x->shape[1] != 3 || x->shape[2] != S || x->shape[3] != S || x->dtype != SD_F32)
        return sd_err(SD_EINVAL, "GIT: image input must be f32 [N,3,%lld,%lld]", (long long)S, (long long)S);
    const int64_t N = x->shape[0];
    if (feat->ndim != 3 || feat->shape[0] != N || feat->shape[1] != T || feat->shape[2] != m->twidth)
        return sd_err(SD_EINVAL, "GIT: image features must be [%lld,%lld,%lld]", (long long)N, (long long)T,
                      (long long)m->twidth);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor c, ph, patches, cls, h, n, q, k, v, o, lse, f, cv, pv;
    const int64_t sh[3] = { N, T, D };
    int rc;
    /* patch conv (no bias) -> [N, g*g, D] */
    TRY(tens(ctx, &c, 4, (int64_t[]){ N, D, g, g }));
    TRY(sd_conv2d_forward(ctx, &m->patch_embed, NULL, &c, x));
    TRY(tens(ctx, &patches, 3, (int64_t[]){ N, g * g, D }));
    TRY(sd_tensor_reshape(&patches, 4, (int64_t[]){ N, g, g, D }, &ph));
    TRY(sd_op_permute(ctx, &ph, &c, (const int[]){ 0, 2, 3, 1 }));
    TRY(tens(ctx, &cls, 3, (int64_t[]){ N, 1, D }));
    TRY(sd_op_fill(ctx, &cls, 0.0f));
    TRY(sd_tensor_reshape(&m->cls->value, 3, (int64_t[]){ 1, 1, D }, &cv));
    TRY(sd_op_add(ctx, &cls, &cls, &cv));
    TRY(tens(ctx, &h, 3, sh));
    const sd_tensor *parts[2] = { &cls, &patches };
    TRY(sd_op_concat(ctx, &h, parts, 2, 1));
    TRY(sd_tensor_reshape(&m->pos->value, 3, (int64_t[]){ 1, T, D }, &pv));
    TRY(sd_op_add(ctx, &h, &h, &pv));
    TRY(tens(ctx, &n, 3, sh));
    TRY(tens(ctx, &q, 3, sh));
    TRY(tens(ctx, &k, 3, sh));
    TRY(tens(ctx, &v, 3, sh));
    TRY(tens(ctx, &o, 3, sh));
    TRY(tens(ctx, &lse, 3, (int64_t[]){ N, m->vheads, T }));
    TRY(tens(ctx, &f, 3, (int64_t[]){ N, T, m->vmlp }));
    TRY(sd_layernorm_forward(ctx, &m->pre_ln, NULL, &n, &h));
    TRY(sd_op_axpby(ctx, &h, 1.0f, &n, 0.0f));
    sd_attn_args aa = { (int)m->vheads, 0.0f, 0 };
    for (int i = 0; i < m->vdepth; i++) {
        sd_git_vblock *b = &m->vb[i];
        TRY(sd_layernorm_forward(ctx, &b->ln1, NULL, &n, &h));
        TRY(sd_linear_forward(ctx, &b->q, NULL, &q, &n));
        TRY(sd_linear_forward(ctx, &b->k, NULL, &k, &n));
        TRY(sd_linear_forward(ctx, &b->v, NULL, &v, &n));
        TRY(sd_op_attention(ctx, &o, &lse, &q, &k, &v, aa));
        TRY(sd_linear_forward(ctx, &b->o, NULL, &q, &o));
        TRY(sd_op_add(ctx, &h, &h, &q));
        TRY(sd_layernorm_forward(ctx, &b->ln2, NULL, &n, &h));
        TRY(sd_linear_forward(ctx, &b->fc1, NULL, &f, &n));
        TRY(sd_op_act(ctx, SD_ACT_QUICK_GELU, &f, &f));
        TRY(sd_linear_forward(ctx, &b->fc2, NULL, &q, &f));
        TRY(sd_op_add(ctx, &h, &h, &q));
    }
    TRY(sd_layernorm_forward(ctx, &m->post_ln, NULL, &n, &h));
    if (vis) TRY(sd_op_axpby(ctx, vis, 1.0f, &n, 0.0f));
    TRY(tens(ctx, &q, 3, (int64_t[]){ N, T, m->twidth }));
    TRY(sd_linear_forward(ctx, &m->proj, NULL, &q, &n));
    TRY(sd_layernorm_forward(ctx, &m->proj_ln, NULL, feat, &q));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "GIT image encoder") : SD_OK;
}

/* ---- decoder ------------------------------------------------------------------------------------ */

void sd_git_state_free(sd_git_state *s)
{
    sd_tensor *sets[2] = { s->k, s->v };
    for (int j = 0; j < 2; j++) {
        if (!sets[j]) continue;
        for (int i = 0; sets[j][i].ndim > 0 || sets[j][i].data; i++) sd_tensor_free(&sets[j][i]);
        free(sets[j]);
    }
    sd_tensor_free(&s->ids);
    memset(s, 0, sizeof *s);
}

int sd_git_state_init(sd_git_state *s, const sd_git *m, int64_t max_len, sd_devkind dev)
{
    memset(s, 0, sizeof *s);
    if (max_len < 1) return sd_err(SD_EINVAL, "GIT decoder: the length must be positive");
    s->max_len = max_len;
    int rc = SD_OK;
    sd_tensor **sets[2] = { &s->k, &s->v };
    for (int j = 0; j < 2; j++) {
        *sets[j] = calloc((size_t)m->tdepth + 1, sizeof(sd_tensor));   /* a zeroed descriptor ends the list */
        if (!*sets[j]) TRY(sd_err(SD_ENOMEM, "out of memory"));
        for (int i = 0; i < m->tdepth; i++)
            TRY(sd_tensor_alloc_on(&(*sets[j])[i], dev, SD_F32, 3,
                                   (int64_t[]){ 1, m->vtokens + max_len, m->twidth }));
    }
    TRY(sd_tensor_alloc_on(&s->ids, dev, SD_I32, 2, (int64_t[]){ 1, 1 }));
out:
    if (rc) {
        sd_git_state_free(s);
        return sd_err_prefix(rc, "GIT decoder cache");
    }
    return SD_OK;
}

/* rows [start, start+n) of a cache [1, rows, D] as [1, n, D] */
static int rows(const sd_tensor *c, int64_t start, int64_t n, sd_tensor *out)
{
    sd_tensor one;
    int rc = sd_tensor_index0(c, 0, &one);
    if (!rc) rc = sd_tensor_narrow0(&one, start, n, &one);
    if (!rc) rc = sd_tensor_reshape(&one, 3, (int64_t[]){ 1, n, c->shape[2] }, out);
    return rc;
}

/* one post-LN layer on h [1, n, Dt] (in place) whose queries see cache rows [0, kv_end) after
 * the new keys/values were written at rows [at, at + n) */
static int layer(sd_ctx *ctx, sd_git *m, sd_git_state *s, int i, sd_tensor *h, int64_t at, int64_t kv_end)
{
    const int64_t n = h->shape[1], Dt = m->twidth;
    sd_git_tlayer *l = &m->tl[i];
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor q, t, o, lse, f, kc, vc, kall, vall;
    const int64_t sh[3] = { 1, n, Dt };
    int rc;
    TRY(tens(ctx, &q, 3, sh));
    TRY(tens(ctx, &t, 3, sh));
    TRY(tens(ctx, &o, 3, sh));
    TRY(tens(ctx, &lse, 3, (int64_t[]){ 1, m->theads, n }));
    TRY(tens(ctx, &f, 3, (int64_t[]){ 1, n, m->tinter }));
    TRY(rows(&s->k[i], at, n, &kc));
    TRY(rows(&s->v[i], at, n, &vc));
    TRY(sd_linear_forward(ctx, &l->k, NULL, &kc, h));
    TRY(sd_linear_forward(ctx, &l->v, NULL, &vc, h));
    TRY(sd_linear_forward(ctx, &l->q, NULL, &q, h));
    TRY(rows(&s->k[i], 0, kv_end, &kall));
    TRY(rows(&s->v[i], 0, kv_end, &vall));
    TRY(sd_op_attention(ctx, &o, &lse, &q, &kall, &vall, (sd_attn_args){ (int)m->theads, 0.0f, 0 }));
    TRY(sd_linear_forward(ctx, &l->ao, NULL, &t, &o));
    TRY(sd_op_add(ctx, &t, &t, h));
    TRY(sd_layernorm_forward(ctx, &l->aln, NULL, h, &t));
    TRY(sd_linear_forward(ctx, &l->inter, NULL, &f, h));
    TRY(sd_op_act(ctx, SD_ACT_GELU, &f, &f));
    TRY(sd_linear_forward(ctx, &l->out, NULL, &t, &f));
    TRY(sd_op_add(ctx, &t, &t, h));
    TRY(sd_layernorm_forward(ctx, &l->oln, NULL, h, &t));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_git_state_set_image(sd_ctx *ctx, sd_git *m, sd_git_state *s, const sd_tensor *feat1)
{
    const int64_t T = m->vtokens;
    if (feat1->ndim != 3 || feat1->shape[0] != 1 || feat1->shape[1] != T || feat1->shape[2] != m->twidth)
        return sd_err(SD_EINVAL, "GIT decoder: image features must be [1,%lld,%lld]", (long long)T,
                      (long long)m->twidth);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor h;
    int rc;
    TRY(tens(ctx, &h, 3, (int64_t[]){ 1, T, m->twidth }));
    TRY(sd_op_axpby(ctx, &h, 1.0f, feat1, 0.0f));
    /* image queries see the image keys only (top_right of the mask is -inf) */
    for (int i = 0; i < m->tdepth; i++) TRY(layer(ctx, m, s, i, &h, 0, T));
    s->len = 0;
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "GIT decoder (image tokens)") : SD_OK;
}

int sd_git_decode(sd_ctx *ctx, sd_git *m, sd_git_state *s, int32_t id, float *logits)
{
    const int64_t T = m->vtokens, L0 = s->len, Dt = m->twidth;
    if (L0 >= s->max_len || L0 >= m->positions)
        return sd_err(SD_ERANGE, "GIT decoder: sequence longer than %lld tokens",
                      (long long)(s->max_len < m->positions ? s->max_len : m->positions));
    if (id < 0 || id >= m->vocab) return sd_err(SD_ERANGE, "GIT decoder: token id %d out of range", id);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor t, h, pos, lg;
    int rc;
    TRY(sd_tensor_upload(&s->ids, &id, sizeof id));
    TRY(tens(ctx, &t, 3, (int64_t[]){ 1, 1, Dt }));
    TRY(tens(ctx, &h, 3, (int64_t[]){ 1, 1, Dt }));
    TRY(sd_op_embedding(ctx, &t, &m->word->value, &s->ids));
    TRY(sd_tensor_narrow0(&m->tpos->value, L0, 1, &pos));
    TRY(sd_op_add(ctx, &t, &t, &pos));
    TRY(sd_layernorm_forward(ctx, &m->emb_ln, NULL, &h, &t));
    for (int i = 0; i < m->tdepth; i++) TRY(layer(ctx, m, s, i, &h, T + L0, T + L0 + 1));
    TRY(tens(ctx, &lg, 3, (int64_t[]){ 1, 1, m->vocab }));
    TRY(sd_linear_forward(ctx, &m->out, NULL, &lg, &h));
    TRY(sd_tensor_download(&lg, logits, sizeof(float) * (size_t)m->vocab));
    s->len = L0 + 1;
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "GIT decoder") : SD_OK;
}

int sd_git_generate(sd_ctx *ctx, sd_git *m, sd_git_state *s, int32_t bos, int32_t eos, int max_length,
                    int32_t **out, int *nout)
{
    *out = NULL;
    *nout = 0;
    int cap = max_length > 1 ? max_length : 1, n = 0, rc = SD_OK;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    float *lg = malloc(sizeof *lg * (size_t)m->vocab);
    if (!ids || !lg) {
        free(ids);
        free(lg);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    int32_t cur = bos;
    for (int len = 1; len < max_length; len++) {
        TRY(sd_git_decode(ctx, m, s, cur, lg));
        int32_t best = 0;
        for (int64_t j = 1; j < m->vocab; j++)
            if (lg[j] > lg[best]) best = (int32_t)j;
        if (best == eos) break;
        ids[n++] = best;
        cur = best;
    }
out:
    free(lg);
    if (rc) {
        free(ids);
        return rc;
    }
    *out = ids;
    *nout = n;
    return SD_OK;
}

/* ---- preprocessing ------------------------------------------------------------------------------ */

int sd_git_prepare_image(const sd_image *rgb, int size, float *chw)
{
    if (rgb->c != 3 || rgb->w < 1 || rgb->h < 1 || size < 1)
        return sd_err(SD_EINVAL, "GIT preprocessing: expected an RGB image");
    /* transformers get_resize_output_image_size(default_to_square=False): int(size * long / short) */
    int64_t w = rgb->w, h = rgb->h, nw, nh;
    if (w <= h) {
        nw = size;
        nh = (int64_t)((double)size * (double)h / (double)w);
    } else {
        nh = size;
        nw = (int64_t)((double)size * (double)w / (double)h);
    }
    if (nw < size) nw = size;
    if (nh < size) nh = size;
    if (nw > 1000000 || nh > 1000000) return sd_err(SD_EINVAL, "GIT preprocessing: image too elongated");
    sd_image r = { 0 };
    const sd_image *src = rgb;
    if (nw != w || nh != h) {
        int rc = sd_resample(rgb, (int)nw, (int)nh, SD_RESAMPLE_BICUBIC, &r);
        if (rc) return rc;
        src = &r;
    }
    const int64_t top = (nh - size) / 2, left = (nw - size) / 2;
    static const float mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
    static const float stdv[3] = { 0.26862954f, 0.26130258f, 0.27577711f };
    const size_t hw = (size_t)size * (size_t)size;
    for (int c = 0; c < 3; c++) {
        float lut[256];
        for (int i = 0; i < 256; i++) lut[i] = ((float)i / 255.0f - mean[c]) / stdv[c];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                chw[(size_t)c * hw + (size_t)y * (size_t)size + (size_t)x] =
                    lut[src->px[((size_t)(top + y) * (size_t)nw + (size_t)(left + x)) * 3 + c]];
    }
    sd_image_free(&r);
    return SD_OK;
}
