/* BLIP captioner: loading, image encoder, decoder with a key/value cache (see blip.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "models/blip.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

static int has(const sd_safetensors *st, const char *k) { return sd_safetensors_find(st, k) != NULL; }

int sd_blip_detect(const sd_safetensors *st)
{
    if (has(st, "vision_model.embeddings.class_embedding")) return SD_BLIP_LAYOUT_HF;
    if (has(st, "visual_encoder.cls_token")) return SD_BLIP_LAYOUT_BLIP;
    return 0;
}

static int shape_of(const sd_safetensors *st, const char *name, int ndim, const sd_st_tensor **t)
{
    return sd_safetensors_get_dims(st, name, ndim, NULL, t);
}

void sd_blip_free(sd_blip *m)
{
    free(m->vblocks);
    free(m->tl);
    sd_params_free(&m->r);
    memset(m, 0, sizeof *m);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

#define TD "text_decoder."
#define HEAD_W TD "cls.predictions.decoder.weight"
#define HEAD_B TD "cls.predictions.bias"
#define HEAD_B2 TD "cls.predictions.decoder.bias"

/* strict checks after a lenient load: the tied/renamed head, position_ids, nothing else */
static int finish_load(sd_blip *m, const sd_safetensors *st, const sd_load_report *rep)
{
    const char *path = sd_safetensors_path(st);
    char list[512] = "";
    size_t bad = 0;
    for (size_t i = 0; i < rep->missing; i++) {
        const char *k = rep->missing_keys[i];
        if (!strcmp(k, HEAD_W)) {
            memcpy(m->head_w->value.data, m->word->value.data, sd_tensor_nbytes(&m->word->value));
            continue;
        }
        if (!strcmp(k, HEAD_B)) {
            const sd_st_tensor *t = sd_safetensors_find(st, HEAD_B2);
            if (t && t->ndim == 1 && t->shape[0] == m->vocab) {
                int rc = sd_safetensors_read(st, t, SD_ST_F32, m->head_b->value.data, (size_t)m->vocab);
                if (rc) return sd_err_prefix(rc, "%s", path);
                continue;
            }
        }
        if (bad++ < 4) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", bad > 1 ? ", " : "", k);
    }
    if (bad) return sd_err(SD_EFORMAT, "%s: %zu missing tensor%s: %s%s", path, bad, bad > 1 ? "s" : "", list,
                           bad > 4 ? ", ..." : "");
    for (size_t i = 0; i < rep->unexpected; i++) {
        const char *k = rep->unexpected_keys[i];
        if (ends_with(k, "position_ids") || !strcmp(k, HEAD_B2)) continue;
        if (strncmp(k, "vision_model.", 13) && strncmp(k, "visual_encoder.", 15) && strncmp(k, TD, strlen(TD)))
            continue;
        if (bad++ < 4) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", bad > 1 ? ", " : "", k);
    }
    if (bad) return sd_err(SD_EFORMAT, "%s: %zu unexpected tensor%s: %s%s", path, bad, bad > 1 ? "s" : "", list,
                           bad > 4 ? ", ..." : "");
    return SD_OK;
}

int sd_blip_open(sd_blip *m, const sd_safetensors *st, sd_devkind dev)
{
    memset(m, 0, sizeof *m);
    sd_params_init(&m->r);
    const char *path = sd_safetensors_path(st);
    int rc = SD_OK;
    sd_load_report rep = { 0 };
    m->layout = sd_blip_detect(st);
    if (!m->layout)
        TRY(sd_err(SD_EFORMAT, "%s: not a BLIP captioning model (no vision_model.embeddings.class_embedding or "
                               "visual_encoder.cls_token)", path));
    const int hf = m->layout == SD_BLIP_LAYOUT_HF;
    const char *k_cls = hf ? "vision_model.embeddings.class_embedding" : "visual_encoder.cls_token";
    const char *k_pos = hf ? "vision_model.embeddings.position_embedding" : "visual_encoder.pos_embed";
    const char *k_pe = hf ? "vision_model.embeddings.patch_embedding" : "visual_encoder.patch_embed.proj";
    const char *k_blk = hf ? "vision_model.encoder.layers.%d" : "visual_encoder.blocks.%d";
    const char *k_norm = hf ? "vision_model.post_layernorm" : "visual_encoder.norm";
    const sd_vit_names *names = hf ? &sd_vit_names_hf : &sd_vit_names_timm;
    char key[200], p[256];

    /* ---- sizes ---- */
    const sd_st_tensor *tc, *tp, *tw, *tf, *twe, *tpe, *ti;
    TRY(shape_of(st, k_cls, 3, &tc));
    snprintf(key, sizeof key, "%s.weight", k_pe);
    TRY(shape_of(st, key, 4, &tw));
    const sd_st_tensor *tpos = sd_safetensors_find(st, k_pos);
    TRY(shape_of(st, k_pos, tpos && tpos->ndim == 2 ? 2 : 3, &tp));
    m->vwidth = tw->shape[0];
    m->patch = tw->shape[2];
    if (tw->shape[1] != 3 || tw->shape[3] != m->patch)
        TRY(sd_err(SD_EFORMAT, "%s: %s must be [D,3,P,P]", path, key));
    if (tc->shape[0] != 1 || tc->shape[1] != 1 || tc->shape[2] != m->vwidth)
        TRY(sd_err(SD_EFORMAT, "%s: %s must be [1,1,%lld]", path, k_cls, (long long)m->vwidth));
    m->vtokens = tp->shape[tp->ndim - 2];
    int64_t g = 1;
    while (g * g < m->vtokens - 1) g++;
    if ((tp->ndim == 3 && tp->shape[0] != 1) || tp->shape[tp->ndim - 1] != m->vwidth || g * g != m->vtokens - 1)
        TRY(sd_err(SD_EFORMAT, "%s: %s must be [1,T,%lld] with T = 1 + a square number (class token + patches)", path,
                   k_pos, (long long)m->vwidth));
    m->grid = g;
    m->size = g * m->patch;
    if (m->size > 8192) TRY(sd_err(SD_EFORMAT, "%s: input size %lld is too large", path, (long long)m->size));
    snprintf(key, sizeof key, k_blk, 0);
    snprintf(p, sizeof p, "%s.%s.weight", key, names->fc1);
    TRY(shape_of(st, p, 2, &tf));
    m->vmlp = tf->shape[0];
    for (m->vdepth = 0; m->vdepth < 1000; m->vdepth++) {
        snprintf(key, sizeof key, k_blk, (int)m->vdepth);
        snprintf(p, sizeof p, "%s.%s.weight", key, names->qkv);
        if (!has(st, p)) break;
    }
    TRY(sd_vit_heads(st, "vision_heads", m->vwidth, &m->vheads));

    TRY(shape_of(st, TD "bert.embeddings.word_embeddings.weight", 2, &twe));
    TRY(shape_of(st, TD "bert.embeddings.position_embeddings.weight", 2, &tpe));
    TRY(shape_of(st, TD "bert.encoder.layer.0.intermediate.dense.weight", 2, &ti));
    m->vocab = twe->shape[0];
    m->twidth = twe->shape[1];
    m->positions = tpe->shape[0];
    m->tinter = ti->shape[0];
    for (m->tdepth = 0; m->tdepth < 1000; m->tdepth++) {
        snprintf(key, sizeof key, TD "bert.encoder.layer.%d.attention.self.query.weight", (int)m->tdepth);
        if (!has(st, key)) break;
    }
    TRY(sd_vit_heads(st, "text_heads", m->twidth, &m->theads));

    /* ---- parameters ---- */
    const int64_t Dv = m->vwidth, Dt = m->twidth;
    TRY(sd_params_add(&m->r, NULL, k_cls, 3, tc->shape, 0, &m->cls));
    TRY(sd_params_add(&m->r, NULL, k_pos, tp->ndim, tp->shape, 0, &m->pos));
    TRY(sd_conv2d_init(&m->patch_embed, &m->r, k_pe, 3, Dv, (int)m->patch, (int)m->patch,
                       sd_conv2d_geom_make((int)m->patch, 0), SD_NN_BIAS));
    m->vblocks = calloc((size_t)(m->vdepth ? m->vdepth : 1), sizeof *m->vblocks);
    m->tl = calloc((size_t)(m->tdepth ? m->tdepth : 1), sizeof *m->tl);
    if (!m->vblocks || !m->tl) TRY(sd_err(SD_ENOMEM, "out of memory"));
    for (int i = 0; i < m->vdepth; i++) {
        snprintf(key, sizeof key, k_blk, i);
        TRY(sd_vit_block_init(&m->vblocks[i], &m->r, key, names, Dv, m->vmlp, 1e-6f));
    }
    TRY(sd_layernorm_init(&m->vnorm, &m->r, k_norm, Dv, 1e-6f));
    TRY(sd_params_add(&m->r, NULL, TD "bert.embeddings.word_embeddings.weight", 2, twe->shape, 0, &m->word));
    TRY(sd_params_add(&m->r, NULL, TD "bert.embeddings.position_embeddings.weight", 2, tpe->shape, 0, &m->tpos));
    TRY(sd_layernorm_init(&m->emb_ln, &m->r, TD "bert.embeddings.LayerNorm", Dt, 1e-12f));
    for (int i = 0; i < m->tdepth; i++) {
        sd_blip_text_layer *l = &m->tl[i];
#define K(s) (snprintf(p, sizeof p, TD "bert.encoder.layer.%d." s, i), p)
        TRY(sd_linear_init(&l->q, &m->r, K("attention.self.query"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->k, &m->r, K("attention.self.key"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->v, &m->r, K("attention.self.value"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->ao, &m->r, K("attention.output.dense"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_layernorm_init(&l->aln, &m->r, K("attention.output.LayerNorm"), Dt, 1e-12f));
        TRY(sd_linear_init(&l->cq, &m->r, K("crossattention.self.query"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->ck, &m->r, K("crossattention.self.key"), Dv, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->cv, &m->r, K("crossattention.self.value"), Dv, Dt, SD_NN_BIAS));
        TRY(sd_linear_init(&l->co, &m->r, K("crossattention.output.dense"), Dt, Dt, SD_NN_BIAS));
        TRY(sd_layernorm_init(&l->cln, &m->r, K("crossattention.output.LayerNorm"), Dt, 1e-12f));
        TRY(sd_linear_init(&l->inter, &m->r, K("intermediate.dense"), Dt, m->tinter, SD_NN_BIAS));
        TRY(sd_linear_init(&l->out, &m->r, K("output.dense"), m->tinter, Dt, SD_NN_BIAS));
        TRY(sd_layernorm_init(&l->oln, &m->r, K("output.LayerNorm"), Dt, 1e-12f));
#undef K
    }
    TRY(sd_linear_init(&m->head_dense, &m->r, TD "cls.predictions.transform.dense", Dt, Dt, SD_NN_BIAS));
    TRY(sd_layernorm_init(&m->head_ln, &m->r, TD "cls.predictions.transform.LayerNorm", Dt, 1e-12f));
    TRY(sd_params_add(&m->r, NULL, HEAD_W, 2, (int64_t[]){ m->vocab, Dt }, SD_PARAM_HALF_OK, &m->head_w));
    TRY(sd_params_add(&m->r, NULL, HEAD_B, 1, (int64_t[]){ m->vocab }, 0, &m->head_b));
    TRY(sd_params_set_trainable(&m->r, "", 0) < 0 ? SD_ESTATE : SD_OK);
    TRY(sd_params_alloc(&m->r, SD_DEV_CPU));
    TRY(sd_params_load_safetensors(&m->r, st, NULL, 0, SD_LOAD_ALLOW_MISSING | SD_LOAD_ALLOW_UNEXPECTED, &rep));
    TRY(finish_load(m, st, &rep));
    if (dev != SD_DEV_CPU) TRY(sd_params_move(&m->r, dev));
out:
    sd_load_report_free(&rep);
    if (rc) sd_blip_free(m);
    return rc;
}

/* ---- image encoder ------------------------------------------------------------------------------ */

static int tens(sd_ctx *ctx, sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, dt, ndim, shape);
    return rc ? sd_err_prefix(rc, "BLIP activations") : SD_OK;
}

int sd_blip_encode_image(sd_ctx *ctx, sd_blip *m, sd_tensor *emb, const sd_tensor *x)
{
    const int64_t S = m->size, D = m->vwidth, T = m->vtokens;
    if (x->ndim != 4 || x->shape[1] != 3 || x->shape[2] != S || x->shape[3] != S || x->dtype != SD_F32)
        return sd_err(SD_EINVAL, "BLIP: image input must be f32 [N,3,%lld,%lld]", (long long)S, (long long)S);
    const int64_t N = x->shape[0];
    if (emb->ndim != 3 || emb->shape[0] != N || emb->shape[1] != T || emb->shape[2] != D || emb->dtype != SD_F32)
        return sd_err(SD_EINVAL, "BLIP: image embedding must be f32 [%lld,%lld,%lld]", (long long)N, (long long)T,
                      (long long)D);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor patches, cls, h;
    int rc;
    TRY(tens(ctx, &patches, SD_F32, 3, (int64_t[]){ N, T - 1, D }));
    TRY(sd_vit_patch_embed(ctx, &m->patch_embed, &patches, x));
    TRY(tens(ctx, &cls, SD_F32, 3, (int64_t[]){ N, 1, D }));
    TRY(sd_op_fill(ctx, &cls, 0.0f));
    TRY(sd_op_add(ctx, &cls, &cls, &m->cls->value));
    TRY(tens(ctx, &h, SD_F32, 3, (int64_t[]){ N, T, D }));
    const sd_tensor *parts[2] = { &cls, &patches };
    TRY(sd_op_concat(ctx, &h, parts, 2, 1));
    TRY(sd_op_add(ctx, &h, &h, &m->pos->value));
    TRY(sd_vit_blocks_forward(ctx, m->vblocks, (int)m->vdepth, (int)m->vheads, m->vmlp, SD_ACT_GELU, &h));
    TRY(sd_layernorm_forward(ctx, &m->vnorm, NULL, emb, &h));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "BLIP image encoder") : SD_OK;
}

/* ---- decoder state ---------------------------------------------------------------------------- */

void sd_blip_state_free(sd_blip_state *s)
{
    sd_tensor *sets[6] = { s->k, s->v, s->k2, s->v2, s->ck, s->cv };
    for (int j = 0; j < 6; j++) {
        if (!sets[j]) continue;
        for (int i = 0; sets[j][i].ndim > 0 || sets[j][i].data; i++) sd_tensor_free(&sets[j][i]);
        free(sets[j]);
    }
    sd_tensor_free(&s->ids);
    memset(s, 0, sizeof *s);
}

int sd_blip_state_init(sd_blip_state *s, const sd_blip *m, int beams, int64_t max_len, sd_devkind dev)
{
    memset(s, 0, sizeof *s);
    if (beams < 1 || max_len < 1) return sd_err(SD_EINVAL, "BLIP decoder: beams and length must be positive");
    s->beams = beams;
    s->max_len = max_len;
    s->dev = dev;
    int rc = SD_OK;
    sd_tensor **sets[6] = { &s->k, &s->v, &s->k2, &s->v2, &s->ck, &s->cv };
    for (int j = 0; j < 6; j++) {
        /* one extra zeroed descriptor ends each list (sd_blip_state_free) */
        *sets[j] = calloc((size_t)m->tdepth + 1, sizeof(sd_tensor));
        if (!*sets[j]) TRY(sd_err(SD_ENOMEM, "out of memory"));
        for (int i = 0; i < m->tdepth; i++) {
            const int64_t self_shape[3] = { beams, max_len, m->twidth }, cross_shape[3] = { 1, m->vtokens, m->twidth };
            TRY(sd_tensor_alloc_on(&(*sets[j])[i], dev, SD_F32, 3, j < 4 ? self_shape : cross_shape));
        }
    }
    TRY(sd_tensor_alloc_on(&s->ids, dev, SD_I32, 1, (int64_t[]){ (int64_t)beams * max_len }));
out:
    if (rc) {
        sd_blip_state_free(s);
        return sd_err_prefix(rc, "BLIP decoder cache");
    }
    return SD_OK;
}

int sd_blip_state_set_image(sd_ctx *ctx, sd_blip *m, sd_blip_state *s, const sd_tensor *emb1)
{
    if (emb1->ndim != 3 || emb1->shape[0] != 1 || emb1->shape[1] != m->vtokens || emb1->shape[2] != m->vwidth)
        return sd_err(SD_EINVAL, "BLIP decoder: image embedding must be [1,%lld,%lld]", (long long)m->vtokens,
                      (long long)m->vwidth);
    int rc = SD_OK;
    for (int i = 0; i < m->tdepth && !rc; i++) {
        rc = sd_linear_forward(ctx, &m->tl[i].ck, NULL, &s->ck[i], emb1);
        if (!rc) rc = sd_linear_forward(ctx, &m->tl[i].cv, NULL, &s->cv[i], emb1);
    }
    s->len = 0;
    return rc ? sd_err_prefix(rc, "BLIP cross-attention") : SD_OK;
}

/* rows [start, start+n) of sequence b of a cache [beams, max_len, D], as [1, n, D] */
static int cache_rows(const sd_tensor *c, int b, int64_t start, int64_t n, sd_tensor *out)
{
    sd_tensor one;
    int rc = sd_tensor_index0(c, b, &one);
    if (!rc) rc = sd_tensor_narrow0(&one, start, n, &one);
    if (!rc) rc = sd_tensor_reshape(&one, 3, (int64_t[]){ 1, n, c->shape[2] }, out);
    return rc;
}

/* sequence b of x [B, n, D] as [1, n, D] */
static int seq_of(const sd_tensor *x, int b, sd_tensor *out)
{
    sd_tensor one;
    int rc = sd_tensor_index0(x, b, &one);
    if (!rc) rc = sd_tensor_reshape(&one, 3, (int64_t[]){ 1, x->shape[1], x->shape[2] }, out);
    return rc;
}

int sd_blip_decode(sd_ctx *ctx, sd_blip *m, sd_blip_state *s, const int32_t *ids, int n, float *logits)
{
    const int B = s->beams;
    const int64_t Dt = m->twidth, V = m->vocab, L0 = s->len;
    if (n < 1 || (n > 1 && L0 > 0)) return sd_err(SD_EINVAL, "BLIP decoder: several tokens only at the start");
    if (L0 + n > s->max_len || L0 + n > m->positions)
        return sd_err(SD_ERANGE, "BLIP decoder: sequence longer than %lld tokens",
                      (long long)(s->max_len < m->positions ? s->max_len : m->positions));
    for (int i = 0; i < B * n; i++)
        if (ids[i] < 0 || ids[i] >= V) return sd_err(SD_ERANGE, "BLIP decoder: token id %d out of range", ids[i]);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor idt, h, t, q, k, v, o, lse, f, pos, hl, lg;
    const int64_t sh[3] = { B, n, Dt };
    int rc;
    TRY(sd_tensor_narrow0(&s->ids, 0, (int64_t)B * n, &idt));
    TRY(sd_tensor_upload(&idt, ids, sizeof(int32_t) * (size_t)B * (size_t)n));
    TRY(sd_tensor_reshape(&idt, 2, (int64_t[]){ B, n }, &idt));
    TRY(tens(ctx, &h, SD_F32, 3, sh));
    TRY(tens(ctx, &t, SD_F32, 3, sh));
    TRY(tens(ctx, &q, SD_F32, 3, sh));
    TRY(tens(ctx, &k, SD_F32, 3, sh));
    TRY(tens(ctx, &v, SD_F32, 3, sh));
    TRY(tens(ctx, &o, SD_F32, 3, sh));
    TRY(tens(ctx, &lse, SD_F32, 3, (int64_t[]){ 1, m->theads, n }));
    TRY(tens(ctx, &f, SD_F32, 3, (int64_t[]){ B, n, m->tinter }));
    /* embeddings: word + position, LayerNorm */
    TRY(sd_op_embedding(ctx, &t, &m->word->value, &idt));
    TRY(sd_tensor_narrow0(&m->tpos->value, L0, n, &pos));
    TRY(sd_op_add(ctx, &t, &t, &pos));
    TRY(sd_layernorm_forward(ctx, &m->emb_ln, NULL, &h, &t));
    sd_attn_args self_a = { (int)m->theads, 0.0f, n > 1 }, cross_a = { (int)m->theads, 0.0f, 0 };
    for (int i = 0; i < m->tdepth; i++) {
        sd_blip_text_layer *l = &m->tl[i];
        TRY(sd_linear_forward(ctx, &l->q, NULL, &q, &h));
        TRY(sd_linear_forward(ctx, &l->k, NULL, &k, &h));
        TRY(sd_linear_forward(ctx, &l->v, NULL, &v, &h));
        for (int b = 0; b < B; b++) {
            sd_tensor kc, vc, kn, vn, qb, ob;
            TRY(cache_rows(&s->k[i], b, L0, n, &kc));
            TRY(cache_rows(&s->v[i], b, L0, n, &vc));
            TRY(seq_of(&k, b, &kn));
            TRY(seq_of(&v, b, &vn));
            TRY(sd_op_axpby(ctx, &kc, 1.0f, &kn, 0.0f));
            TRY(sd_op_axpby(ctx, &vc, 1.0f, &vn, 0.0f));
            TRY(cache_rows(&s->k[i], b, 0, L0 + n, &kc));
            TRY(cache_rows(&s->v[i], b, 0, L0 + n, &vc));
            TRY(seq_of(&q, b, &qb));
            TRY(seq_of(&o, b, &ob));
            TRY(sd_op_attention(ctx, &ob, &lse, &qb, &kc, &vc, self_a));
        }
        TRY(sd_linear_forward(ctx, &l->ao, NULL, &t, &o));
        TRY(sd_op_add(ctx, &t, &t, &h));
        TRY(sd_layernorm_forward(ctx, &l->aln, NULL, &h, &t));
        TRY(sd_linear_forward(ctx, &l->cq, NULL, &q, &h));
        for (int b = 0; b < B; b++) {
            sd_tensor qb, ob;
            TRY(seq_of(&q, b, &qb));
            TRY(seq_of(&o, b, &ob));
            TRY(sd_op_attention(ctx, &ob, &lse, &qb, &s->ck[i], &s->cv[i], cross_a));
        }
        TRY(sd_linear_forward(ctx, &l->co, NULL, &t, &o));
        TRY(sd_op_add(ctx, &t, &t, &h));
        TRY(sd_layernorm_forward(ctx, &l->cln, NULL, &h, &t));
        TRY(sd_linear_forward(ctx, &l->inter, NULL, &f, &h));
        TRY(sd_op_act(ctx, SD_ACT_GELU, &f, &f));
        TRY(sd_linear_forward(ctx, &l->out, NULL, &t, &f));
        TRY(sd_op_add(ctx, &t, &t, &h));
        TRY(sd_layernorm_forward(ctx, &l->oln, NULL, &h, &t));
    }
    /* LM head on the last position of each sequence */
    TRY(tens(ctx, &hl, SD_F32, 3, (int64_t[]){ B, 1, Dt }));
    if (n == 1) {
        TRY(sd_op_axpby(ctx, &hl, 1.0f, &h, 0.0f));
    } else {
        for (int b = 0; b < B; b++) {
            sd_tensor hb, last, dst;
            TRY(sd_tensor_index0(&h, b, &hb));
            TRY(sd_tensor_narrow0(&hb, n - 1, 1, &last));
            TRY(sd_tensor_index0(&hl, b, &dst));
            TRY(sd_op_axpby(ctx, &dst, 1.0f, &last, 0.0f));
        }
    }
    TRY(sd_tensor_reshape(&t, 2, (int64_t[]){ B * n, Dt }, &t));
    TRY(sd_tensor_narrow0(&t, 0, B, &t));
    TRY(sd_tensor_reshape(&t, 3, (int64_t[]){ B, 1, Dt }, &t));
    TRY(sd_linear_forward(ctx, &m->head_dense, NULL, &t, &hl));
    TRY(sd_op_act(ctx, SD_ACT_GELU, &t, &t));
    TRY(sd_layernorm_forward(ctx, &m->head_ln, NULL, &hl, &t));
    TRY(tens(ctx, &lg, SD_F32, 3, (int64_t[]){ B, 1, V }));
    TRY(sd_op_linear(ctx, &lg, &hl, &m->head_w->value, &m->head_b->value));
    TRY(sd_tensor_download(&lg, logits, sizeof(float) * (size_t)B * (size_t)V));
    s->len = L0 + n;
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "BLIP decoder") : SD_OK;
}

int sd_blip_state_reorder(sd_ctx *ctx, sd_blip_state *s, const int *src)
{
    int rc = SD_OK, same = 1;
    for (int b = 0; b < s->beams; b++) {
        if (src[b] < 0 || src[b] >= s->beams) return sd_err(SD_EINVAL, "BLIP decoder: bad beam index %d", src[b]);
        same &= src[b] == b;
    }
    if (same || s->len == 0) return SD_OK;
    for (int i = 0; s->k[i].data && !rc; i++) {
        for (int b = 0; b < s->beams && !rc; b++) {
            sd_tensor from, to;
            rc = cache_rows(&s->k[i], src[b], 0, s->len, &from);
            if (!rc) rc = cache_rows(&s->k2[i], b, 0, s->len, &to);
            if (!rc) rc = sd_op_axpby(ctx, &to, 1.0f, &from, 0.0f);
            if (!rc) rc = cache_rows(&s->v[i], src[b], 0, s->len, &from);
            if (!rc) rc = cache_rows(&s->v2[i], b, 0, s->len, &to);
            if (!rc) rc = sd_op_axpby(ctx, &to, 1.0f, &from, 0.0f);
        }
        sd_tensor tk = s->k[i], tv = s->v[i];
        s->k[i] = s->k2[i];
        s->v[i] = s->v2[i];
        s->k2[i] = tk;
        s->v2[i] = tv;
    }
    return rc ? sd_err_prefix(rc, "BLIP beam reorder") : SD_OK;
}
