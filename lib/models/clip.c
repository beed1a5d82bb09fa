/* SD text encoders (see clip.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "models/clip.h"

#define CLIP_TRY(x) do { rc = (x); if (rc) goto out; } while (0)

static size_t f32_bytes(int64_t n) { return ((size_t)n * sizeof(float) + 63) & ~(size_t)63; }
static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

static int f32_tensor(sd_arena *a, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(a, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "text encoder activations") : SD_OK;
}

static int f32_zeros(sd_ctx *ctx, sd_arena *a, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = f32_tensor(a, t, ndim, shape);
    return rc ? rc : sd_op_fill(ctx, t, 0.0f);
}

/* prefix + "." + rest (just rest when the prefix is empty) */
static void key_join(char *buf, size_t n, const char *prefix, const char *rest)
{
    snprintf(buf, n, "%s%s%s", prefix, *prefix ? "." : "", rest);
}

/* ---- init ----------------------------------------------------------------------------------- */

int sd_clip_init(sd_clip *m, sd_params *r, const char *prefix, const sd_clip_config *cfg, sd_family family)
{
    memset(m, 0, sizeof *m);
    if (family != SD_FAMILY_SD1 && family != SD_FAMILY_SD2 && family != SD_FAMILY_SDXL)
        return sd_err(SD_EUNSUPPORTED, "text encoder: family %s is not supported", sd_family_name(family));
    int n_run = family == SD_FAMILY_SD2 ? cfg->layers - 1 : cfg->layers;
    int sdxl_proj = family == SD_FAMILY_SDXL ? cfg->projection_dim : 0;
    if (cfg->width < 1 || cfg->heads < 1 || cfg->width % cfg->heads || n_run < 1 || cfg->max_len < 1 ||
        cfg->vocab_size < 1 || (family == SD_FAMILY_SDXL && (n_run < 2 || sdxl_proj < 0)))
        return sd_err(SD_EINVAL, "text encoder: width %d, %d heads, %d layers, max_len %d, vocab %d do not fit",
                      cfg->width, cfg->heads, cfg->layers, cfg->max_len, cfg->vocab_size);
    m->cfg = *cfg;
    m->family = family;
    m->n_run = n_run;
    m->eos_id = cfg->vocab_size - 1;
    m->prefix = strdup(prefix ? prefix : "");
    m->layers = calloc((size_t)n_run, sizeof *m->layers);
    if (!m->prefix || !m->layers) {
        sd_clip_free(m);
        return sd_err(SD_ENOMEM, "text encoder: out of memory");
    }
    const int64_t W = cfg->width;
    char key[512], rest[256];
    int rc;
    key_join(key, sizeof key, m->prefix, "text_model.embeddings.token_embedding");
    CLIP_TRY(sd_embedding_init(&m->tok, r, key, "weight", cfg->vocab_size, W));
    key_join(key, sizeof key, m->prefix, "text_model.embeddings.position_embedding");
    CLIP_TRY(sd_embedding_init(&m->pos, r, key, "weight", cfg->max_len, W));
    sd_ff_kind ff = family == SD_FAMILY_SD1 || (family == SD_FAMILY_SDXL && !sdxl_proj) ? SD_FF_CLIP_QUICK_GELU
                                                                                     : SD_FF_CLIP_GELU;
    for (int i = 0; i < n_run; i++) {
        sd_clip_layer *L = &m->layers[i];
        snprintf(rest, sizeof rest, "text_model.encoder.layers.%d.layer_norm1", i);
        key_join(key, sizeof key, m->prefix, rest);
        CLIP_TRY(sd_layernorm_init(&L->ln1, r, key, W, 1e-5f));
        snprintf(rest, sizeof rest, "text_model.encoder.layers.%d.self_attn", i);
        key_join(key, sizeof key, m->prefix, rest);
        CLIP_TRY(sd_attention_init(&L->attn, r, key, W, 0, cfg->heads, W / cfg->heads, SD_ATTN_CLIP));
        L->attn.causal = 1;
        snprintf(rest, sizeof rest, "text_model.encoder.layers.%d.layer_norm2", i);
        key_join(key, sizeof key, m->prefix, rest);
        CLIP_TRY(sd_layernorm_init(&L->ln2, r, key, W, 1e-5f));
        snprintf(rest, sizeof rest, "text_model.encoder.layers.%d.mlp", i);
        key_join(key, sizeof key, m->prefix, rest);
        CLIP_TRY(sd_ff_init(&L->mlp, r, key, W, 4 * W, ff));
    }
    key_join(key, sizeof key, m->prefix, "text_model.final_layer_norm");
    CLIP_TRY(sd_layernorm_init(&m->final_ln, r, key, W, 1e-5f));
    if (sdxl_proj > 0) {
        key_join(key, sizeof key, m->prefix, "text_projection");
        CLIP_TRY(sd_linear_init(&m->proj, r, key, W, sdxl_proj, 0));
    }
out:
    if (rc) {
        sd_clip_free(m);
        return sd_err_prefix(rc, "text encoder");
    }
    return SD_OK;
}

void sd_clip_free(sd_clip *m)
{
    free(m->layers);
    free(m->prefix);
    memset(m, 0, sizeof *m);
}

int sd_clip_layers_for_skip(const sd_clip *m, int clip_skip, int *n)
{
    if (clip_skip < 0 || clip_skip > m->n_run)
        return sd_err(SD_EINVAL, "clip_skip %d out of range for a text encoder of %d layers (1..%d)", clip_skip,
                      m->n_run, m->n_run);
    *n = m->n_run - (clip_skip > 1 ? clip_skip - 1 : 0);
    return SD_OK;
}

/* ---- forward / backward ----------------------------------------------------------------------- */

static int layer_forward(sd_ctx *ctx, sd_clip_layer *L, sd_arena *save, sd_tensor *out, const sd_tensor *x)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor n1, h, n2;
    int rc;
    CLIP_TRY(f32_tensor(A, &n1, 3, x->shape));
    CLIP_TRY(sd_layernorm_forward(ctx, &L->ln1, save, &n1, x));
    CLIP_TRY(f32_tensor(A, &h, 3, x->shape));
    CLIP_TRY(sd_attention_forward(ctx, &L->attn, save, &h, &n1, NULL));
    CLIP_TRY(sd_op_add(ctx, &h, &h, x));
    CLIP_TRY(f32_tensor(A, &n2, 3, x->shape));
    CLIP_TRY(sd_layernorm_forward(ctx, &L->ln2, save, &n2, &h));
    CLIP_TRY(sd_ff_forward(ctx, &L->mlp, save, out, &n2));
    CLIP_TRY(sd_op_add(ctx, out, out, &h));
    if (save) {
        L->x = *x;
        L->h = h;
        L->out = *out;
    }
out:
    if (!save) sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

/* dx += d(layer)/dx · dout */
static int layer_backward(sd_ctx *ctx, sd_clip_layer *L, sd_tensor *dx, const sd_tensor *dout)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor dh, dn;
    int rc;
    CLIP_TRY(f32_tensor(&ctx->scratch, &dh, 3, dout->shape));
    CLIP_TRY(sd_op_axpby(ctx, &dh, 1.0f, dout, 0.0f));
    CLIP_TRY(f32_zeros(ctx, &ctx->scratch, &dn, 3, dout->shape));
    CLIP_TRY(sd_ff_backward(ctx, &L->mlp, &dn, dout));
    CLIP_TRY(sd_layernorm_backward(ctx, &L->ln2, &dh, &dn));
    CLIP_TRY(sd_op_fill(ctx, &dn, 0.0f));
    CLIP_TRY(sd_attention_backward(ctx, &L->attn, &dn, NULL, &dh));
    CLIP_TRY(sd_op_add(ctx, dx, dx, &dh));
    CLIP_TRY(sd_layernorm_backward(ctx, &L->ln1, dx, &dn));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_clip_forward(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *y, const sd_tensor *ids, int clip_skip)
{
    int nl, rc = sd_clip_layers_for_skip(m, clip_skip, &nl);
    if (rc) return rc;
    if (ids->ndim != 2 || ids->dtype != SD_I32 || ids->shape[1] < 1 || ids->shape[1] > m->cfg.max_len)
        return sd_err(SD_EINVAL, "text encoder: token ids must be i32 [B, T] with 1 <= T <= %d", m->cfg.max_len);
    const int64_t B = ids->shape[0], T = ids->shape[1], W = m->cfg.width;
    const int64_t shape[3] = { B, T, W };
    if (y->ndim != 3 || y->shape[0] != B || y->shape[1] != T || y->shape[2] != W || y->dtype != SD_F32)
        return sd_err(SD_EINVAL, "text encoder: output must be f32 [%lld, %lld, %lld]", (long long)B, (long long)T,
                      (long long)W);
    m->ran = 0;
    m->chunks = 0;
    m->sdxl = 0;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor emb, pos, cur, other;
    CLIP_TRY(f32_tensor(A, &emb, 3, shape));
    CLIP_TRY(sd_embedding_forward(ctx, &m->tok, save, &emb, ids));
    CLIP_TRY(sd_tensor_narrow0(&m->pos.w->value, 0, T, &pos));
    CLIP_TRY(sd_op_add(ctx, &emb, &emb, &pos));
    if (!save && nl > 0) CLIP_TRY(f32_tensor(A, &other, 3, shape));
    cur = emb;
    for (int i = 0; i < nl; i++) {
        sd_tensor o;
        if (save) CLIP_TRY(f32_tensor(A, &o, 3, shape));
        else o = other;   /* inference: ping-pong between two buffers */
        CLIP_TRY(layer_forward(ctx, &m->layers[i], save, &o, &cur));
        other = cur;
        cur = o;
    }
    CLIP_TRY(sd_layernorm_forward(ctx, &m->final_ln, save, y, &cur));
    if (save) {
        m->ran = nl;
        m->ids = *ids;
        m->emb = emb;
    }
out:
    if (!save) sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "text encoder") : SD_OK;
}

/* The embeddings' part of a backward: g = dL/d(token + position embedding) [R, T, W] into the
 * token table's gradient, the position table's (when it trains) and d_tokens (may be NULL). */
static int embed_backward(sd_ctx *ctx, sd_clip *m, const sd_tensor *g, int64_t T, sd_tensor *d_tokens)
{
    int rc;
    CLIP_TRY(sd_embedding_backward(ctx, &m->tok, g));
    sd_tensor *gpos = sd_param_grad(m->pos.w);
    if (gpos) {
        sd_tensor pg;
        CLIP_TRY(sd_tensor_narrow0(gpos, 0, T, &pg));
        CLIP_TRY(sd_op_sum_to(ctx, &pg, 1.0f, g));
    }
    if (d_tokens) CLIP_TRY(sd_op_add(ctx, d_tokens, d_tokens, g));
out:
    return rc;
}

int sd_clip_backward(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dy)
{
    if (!m->ran) return sd_err(SD_ESTATE, "text encoder: backward without a training forward");
    if (m->sdxl) return sd_err(SD_ESTATE, "text encoder: the last training forward was an SDXL one");
    const sd_tensor *e = &m->emb;
    if (!sd_tensor_same_shape(dy, e)) return sd_err(SD_EINVAL, "text encoder: gradient shape differs from the output");
    if (d_tokens && !sd_tensor_same_shape(d_tokens, e))
        return sd_err(SD_EINVAL, "text encoder: d_tokens shape differs from the output");
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor g[2];
    int rc;
    CLIP_TRY(f32_zeros(ctx, &ctx->scratch, &g[0], 3, e->shape));
    CLIP_TRY(f32_tensor(&ctx->scratch, &g[1], 3, e->shape));
    CLIP_TRY(sd_layernorm_backward(ctx, &m->final_ln, &g[0], dy));
    int cur = 0;
    for (int i = m->ran - 1; i >= 0; i--) {
        CLIP_TRY(sd_op_fill(ctx, &g[cur ^ 1], 0.0f));
        CLIP_TRY(layer_backward(ctx, &m->layers[i], &g[cur ^ 1], &g[cur]));
        cur ^= 1;
    }
    CLIP_TRY(embed_backward(ctx, m, &g[cur], e->shape[1], d_tokens));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "text encoder") : SD_OK;
}

sd_nn_plan sd_clip_plan(const sd_clip *m, int64_t B, int64_t T, int clip_skip)
{
    sd_nn_plan p = { 0, 0 };
    int nl = 0;
    if (sd_clip_layers_for_skip(m, clip_skip, &nl)) return p;
    const int64_t W = m->cfg.width, xs[3] = { B, T, W };
    const size_t act = f32_bytes(B * T * W);
    size_t child = 0, layer_saved = 0;
    if (nl > 0) {
        const sd_clip_layer *L = &m->layers[0];
        sd_nn_plan l1 = sd_layernorm_plan(&L->ln1, 3, xs), at = sd_attention_plan(&L->attn, xs, NULL),
                   l2 = sd_layernorm_plan(&L->ln2, 3, xs), ff = sd_ff_plan(&L->mlp, 3, xs);
        /* LoRA may differ per layer: sum each layer's own plan */
        for (int i = 0; i < nl; i++) {
            const sd_clip_layer *Li = &m->layers[i];
            sd_nn_plan a = sd_attention_plan(&Li->attn, xs, NULL), f = sd_ff_plan(&Li->mlp, 3, xs);
            layer_saved += 4 * act + l1.saved + l2.saved + a.saved + f.saved;
            child = zmax(child, zmax(a.scratch, f.scratch));
        }
        child = zmax(child, zmax(zmax(l1.scratch, l2.scratch), zmax(at.scratch, ff.scratch)));
    }
    sd_nn_plan fl = sd_layernorm_plan(&m->final_ln, 3, xs);
    p.saved = act + layer_saved + fl.saved;
    /* inference: emb + ping-pong + a layer's n1, h, n2 and norm statistics (= its saved set);
     * backward: two gradients + dh + dn + the children's */
    size_t per_layer = nl ? layer_saved / (size_t)nl : 0;
    p.scratch = zmax(2 * act + per_layer + child, 4 * act + child) + fl.scratch;
    return p;
}

int sd_clip_each_linear(sd_clip *m, sd_clip_linear_fn fn, void *user)
{
    static const char *names[6] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                                    "mlp.fc1", "mlp.fc2" };
    for (int i = 0; i < m->n_run; i++) {
        sd_clip_layer *L = &m->layers[i];
        sd_linear *lin[6] = { &L->attn.q, &L->attn.k, &L->attn.v, &L->attn.out, &L->mlp.proj, &L->mlp.out };
        for (int j = 0; j < 6; j++) {
            char name[160];
            snprintf(name, sizeof name, "text_model.encoder.layers.%d.%s", i, names[j]);
            int rc = fn(user, name, lin[j]);
            if (rc) return rc;
        }
    }
    return SD_OK;
}

/* ---- long prompts ---------------------------------------------------------------------------- */

/* Copy rows between hidden [B·n, 77, W] and y [B, n·75+2, W]; to_y = 1: forward (overwrite),
 * 0: backward (hidden += rows of y). */
static int chunk_rows(sd_ctx *ctx, sd_tensor *y, sd_tensor *hidden, int64_t B, int64_t n, int to_y)
{
    int rc = SD_OK;
    const int64_t ctxlen = hidden->shape[1];
    const int64_t body = ctxlen - 2;
    for (int64_t b = 0; b < B && !rc; b++) {
        sd_tensor yb;
        rc = sd_tensor_index0(y, b, &yb);
        for (int64_t k = 0; k < n + 2 && !rc; k++) {
            /* k < n: body rows of chunk k; k == n: BOS of chunk 0; k == n+1: EOS of chunk n-1 */
            int64_t chunk = k < n ? k : k == n ? 0 : n - 1;
            int64_t src_row = k < n ? 1 : k == n ? 0 : ctxlen - 1;
            int64_t dst_row = k < n ? 1 + body * k : k == n ? 0 : body * n + 1;
            int64_t rows = k < n ? body : 1;
            sd_tensor hc, hv, yv;
            rc = sd_tensor_index0(hidden, b * n + chunk, &hc);
            if (!rc) rc = sd_tensor_narrow0(&hc, src_row, rows, &hv);
            if (!rc) rc = sd_tensor_narrow0(&yb, dst_row, rows, &yv);
            if (!rc) rc = to_y ? sd_op_axpby(ctx, &yv, 1.0f, &hv, 0.0f) : sd_op_axpby(ctx, &hv, 1.0f, &yv, 1.0f);
        }
    }
    return rc;
}

/* The shapes of a chunked forward: ids i32 [B, n, T], out [B, n·(T−2)+2, W], rows [B·n, T, W]. */
static int check_chunks(const sd_clip *m, const sd_tensor *ids, const sd_tensor *out, const sd_tensor *rows,
                        const char *rows_name)
{
    if (ids->ndim != 3 || ids->dtype != SD_I32 || ids->shape[1] < 1 || ids->shape[2] < 3)
        return sd_err(SD_EINVAL, "text encoder: chunked token ids must be i32 [B, n, %d]", m->cfg.max_len);
    const int64_t B = ids->shape[0], n = ids->shape[1], T = ids->shape[2], W = m->cfg.width;
    if (rows->ndim != 3 || rows->shape[0] != B * n || rows->shape[1] != T || rows->shape[2] != W ||
        out->ndim != 3 || out->shape[0] != B || out->shape[1] != n * (T - 2) + 2 || out->shape[2] != W)
        return sd_err(SD_EINVAL, "text encoder: chunked output must be [%lld, %lld, %lld] (%s [%lld, %lld, %lld])",
                      (long long)B, (long long)(n * (T - 2) + 2), (long long)W, rows_name, (long long)(B * n),
                      (long long)T, (long long)W);
    return SD_OK;
}

int sd_clip_forward_chunks(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *y, sd_tensor *hidden,
                           const sd_tensor *ids, int clip_skip)
{
    int rc = check_chunks(m, ids, y, hidden, "hidden");
    if (rc) return rc;
    const int64_t B = ids->shape[0], n = ids->shape[1], T = ids->shape[2];
    sd_tensor flat;
    rc = sd_tensor_reshape(ids, 2, (const int64_t[]){ B * n, T }, &flat);
    if (!rc) rc = sd_clip_forward(ctx, m, save, hidden, &flat, clip_skip);
    if (!rc) rc = chunk_rows(ctx, y, hidden, B, n, 1);
    if (!rc && save) m->chunks = n;
    return rc;
}

int sd_clip_backward_chunks(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dy)
{
    if (!m->ran || m->chunks < 1) return sd_err(SD_ESTATE, "text encoder: chunked backward without a chunked forward");
    const int64_t n = m->chunks, BN = m->emb.shape[0], B = BN / n, T = m->emb.shape[1], W = m->emb.shape[2];
    if (dy->ndim != 3 || dy->shape[0] != B || dy->shape[1] != n * (T - 2) + 2 || dy->shape[2] != W)
        return sd_err(SD_EINVAL, "text encoder: chunked gradient shape differs from the output");
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor dh;
    int rc;
    CLIP_TRY(f32_zeros(ctx, &ctx->scratch, &dh, 3, m->emb.shape));
    CLIP_TRY(chunk_rows(ctx, (sd_tensor *)dy, &dh, B, n, 0));
    CLIP_TRY(sd_clip_backward(ctx, m, d_tokens, &dh));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

/* ---- SDXL ---------------------------------------------------------------------------------------- */

enum { SDXL_MAX_T = 1024, SDXL_IDX_CHUNK = 256 };

/* idx[j] = (j·stride)·T + first EOS position of row j·stride of ids [R, T] (0 when none), for
 * j < idx->shape[0]. The ids are downloaded a row at a time. */
static int eos_rows(const sd_clip *m, sd_tensor *idx, const sd_tensor *ids, int64_t stride)
{
    const int64_t T = ids->shape[1], n = idx->shape[0];
    int32_t row[SDXL_MAX_T], out[SDXL_IDX_CHUNK];
    int rc = SD_OK;
    for (int64_t j0 = 0; j0 < n && !rc; j0 += SDXL_IDX_CHUNK) {
        int64_t cnt = n - j0 < SDXL_IDX_CHUNK ? n - j0 : SDXL_IDX_CHUNK;
        for (int64_t j = 0; j < cnt && !rc; j++) {
            sd_tensor rv;
            int64_t r = (j0 + j) * stride;
            rc = sd_tensor_index0(ids, r, &rv);
            if (!rc) rc = sd_tensor_download(&rv, row, (size_t)T * sizeof(int32_t));
            int64_t pos = 0;
            for (int64_t t = 0; t < T && !rc; t++)
                if (row[t] == m->eos_id) {
                    pos = t;
                    break;
                }
            out[j] = (int32_t)(r * T + pos);
        }
        sd_tensor part;
        if (!rc) rc = sd_tensor_narrow0(idx, j0, cnt, &part);
        if (!rc) rc = sd_tensor_upload(&part, out, (size_t)cnt * sizeof(int32_t));
    }
    return rc;
}

/* Rows R = ids->shape[0]; hidden [R,T,W]; pooled [R/stride, P] from rows 0, stride, 2·stride... */
static int sdxl_forward(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *hidden, sd_tensor *pooled,
                        const sd_tensor *ids, int64_t stride)
{
    if (m->family != SD_FAMILY_SDXL) return sd_err(SD_EINVAL, "text encoder: not an SDXL text encoder");
    if (ids->ndim != 2 || ids->dtype != SD_I32 || ids->shape[1] < 1 || ids->shape[1] > m->cfg.max_len ||
        ids->shape[1] > SDXL_MAX_T)
        return sd_err(SD_EINVAL, "text encoder: token ids must be i32 [B, T] with 1 <= T <= %d", m->cfg.max_len);
    const int64_t R = ids->shape[0], T = ids->shape[1], W = m->cfg.width, P = m->cfg.projection_dim;
    const int64_t shape[3] = { R, T, W };
    if (hidden->ndim != 3 || hidden->shape[0] != R || hidden->shape[1] != T || hidden->shape[2] != W ||
        hidden->dtype != SD_F32)
        return sd_err(SD_EINVAL, "text encoder: hidden output must be f32 [%lld, %lld, %lld]", (long long)R,
                      (long long)T, (long long)W);
    if (pooled && !m->proj.w) return sd_err(SD_EINVAL, "text encoder: no text_projection (TE1) for a pooled output");
    const int64_t Bp = R / stride;
    if (pooled && (pooled->ndim != 2 || pooled->shape[0] != Bp || pooled->shape[1] != P || pooled->dtype != SD_F32))
        return sd_err(SD_EINVAL, "text encoder: pooled output must be f32 [%lld, %lld]", (long long)Bp, (long long)P);
    const int hid = m->n_run - 1, nl = pooled ? m->n_run : hid;
    m->ran = 0;
    m->chunks = 0;
    m->sdxl = 0;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    sd_tensor emb, pos, cur, other, idx, sel;
    int rc;
    CLIP_TRY(f32_tensor(A, &emb, 3, shape));
    CLIP_TRY(sd_embedding_forward(ctx, &m->tok, save, &emb, ids));
    CLIP_TRY(sd_tensor_narrow0(&m->pos.w->value, 0, T, &pos));
    CLIP_TRY(sd_op_add(ctx, &emb, &emb, &pos));
    if (!save) CLIP_TRY(f32_tensor(A, &other, 3, shape));
    cur = emb;
    for (int i = 0; i < nl; i++) {
        sd_tensor o;
        if (save) CLIP_TRY(f32_tensor(A, &o, 3, shape));
        else o = other;
        CLIP_TRY(layer_forward(ctx, &m->layers[i], save, &o, &cur));
        other = cur;
        cur = o;
        if (i == hid - 1) CLIP_TRY(sd_op_axpby(ctx, hidden, 1.0f, &cur, 0.0f));
    }
    if (pooled) {
        /* final LN of the last layer (scratch: only the gathered rows are kept), EOS rows, projection */
        size_t m2 = sd_arena_mark(&ctx->scratch);
        sd_tensor last, flat;
        CLIP_TRY(sd_arena_tensor(A, &idx, SD_I32, 1, (const int64_t[]){ Bp }));
        CLIP_TRY(f32_tensor(A, &sel, 2, (const int64_t[]){ Bp, W }));
        CLIP_TRY(eos_rows(m, &idx, ids, stride));
        CLIP_TRY(f32_tensor(&ctx->scratch, &last, 3, shape));
        CLIP_TRY(sd_layernorm_forward(ctx, &m->final_ln, save, &last, &cur));
        CLIP_TRY(sd_tensor_reshape(&last, 2, (const int64_t[]){ R * T, W }, &flat));
        CLIP_TRY(sd_op_embedding(ctx, &sel, &flat, &idx));
        if (save) sd_arena_reset(&ctx->scratch, m2);
        CLIP_TRY(sd_linear_forward(ctx, &m->proj, save, pooled, &sel));
    }
    if (save) {
        m->ran = nl;
        m->hid_layers = hid;
        m->pooled_ran = pooled != NULL;
        m->pool_idx = pooled ? idx : (sd_tensor){ 0 };
        m->ids = *ids;
        m->emb = emb;
        m->sdxl = 1;
    }
out:
    if (!save) sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "text encoder") : SD_OK;
}

/* dh [R,T,W] = dL/dhidden rows (may be NULL: zero). */
static int sdxl_backward(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dh, const sd_tensor *dpooled)
{
    if (!m->ran || !m->sdxl) return sd_err(SD_ESTATE, "text encoder: SDXL backward without an SDXL training forward");
    const sd_tensor *e = &m->emb;
    if (dh && !sd_tensor_same_shape(dh, e))
        return sd_err(SD_EINVAL, "text encoder: hidden gradient shape differs from the output");
    if (d_tokens && !sd_tensor_same_shape(d_tokens, e))
        return sd_err(SD_EINVAL, "text encoder: d_tokens shape differs from the output");
    const int64_t R = e->shape[0], T = e->shape[1], W = e->shape[2];
    const int use_pool = dpooled && m->pooled_ran;
    if (dpooled && !m->pooled_ran) return sd_err(SD_EINVAL, "text encoder: pooled gradient without a pooled output");
    if (use_pool && (dpooled->ndim != 2 || dpooled->shape[0] != m->pool_idx.shape[0] ||
                     dpooled->shape[1] != m->cfg.projection_dim))
        return sd_err(SD_EINVAL, "text encoder: pooled gradient shape differs from the output");
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor g[2];
    int rc;
    CLIP_TRY(f32_zeros(ctx, &ctx->scratch, &g[0], 3, e->shape));
    CLIP_TRY(f32_tensor(&ctx->scratch, &g[1], 3, e->shape));
    int start = m->hid_layers - 1;
    if (use_pool) {
        size_t m2 = sd_arena_mark(&ctx->scratch);
        sd_tensor dsel, dlast, flat;
        CLIP_TRY(f32_zeros(ctx, &ctx->scratch, &dsel, 2, (const int64_t[]){ dpooled->shape[0], W }));
        CLIP_TRY(sd_linear_backward(ctx, &m->proj, &dsel, dpooled));
        CLIP_TRY(f32_zeros(ctx, &ctx->scratch, &dlast, 3, e->shape));
        CLIP_TRY(sd_tensor_reshape(&dlast, 2, (const int64_t[]){ R * T, W }, &flat));
        CLIP_TRY(sd_op_embedding_bwd(ctx, &flat, &dsel, &m->pool_idx));
        CLIP_TRY(sd_layernorm_backward(ctx, &m->final_ln, &g[0], &dlast));
        sd_arena_reset(&ctx->scratch, m2);
        start = m->ran - 1;
    }
    int cur = 0;
    for (int i = start; i >= 0; i--) {
        if (i == m->hid_layers - 1 && dh) CLIP_TRY(sd_op_add(ctx, &g[cur], &g[cur], dh));
        CLIP_TRY(sd_op_fill(ctx, &g[cur ^ 1], 0.0f));
        CLIP_TRY(layer_backward(ctx, &m->layers[i], &g[cur ^ 1], &g[cur]));
        cur ^= 1;
    }
    CLIP_TRY(embed_backward(ctx, m, &g[cur], T, d_tokens));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "text encoder") : SD_OK;
}

int sd_clip_forward_sdxl(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *hidden, sd_tensor *pooled,
                         const sd_tensor *ids)
{
    return sdxl_forward(ctx, m, save, hidden, pooled, ids, 1);
}

int sd_clip_backward_sdxl(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dhidden,
                          const sd_tensor *dpooled)
{
    if (m->sdxl && m->chunks) return sd_err(SD_ESTATE, "text encoder: the last forward was chunked");
    return sdxl_backward(ctx, m, d_tokens, dhidden, dpooled);
}

int sd_clip_forward_sdxl_chunks(sd_ctx *ctx, sd_clip *m, sd_arena *save, sd_tensor *hidden, sd_tensor *pooled,
                                sd_tensor *work, const sd_tensor *ids)
{
    int rc = check_chunks(m, ids, hidden, work, "work");
    if (rc) return rc;
    const int64_t B = ids->shape[0], n = ids->shape[1], T = ids->shape[2];
    sd_tensor flat;
    rc = sd_tensor_reshape(ids, 2, (const int64_t[]){ B * n, T }, &flat);
    if (!rc) rc = sdxl_forward(ctx, m, save, work, pooled, &flat, n);
    if (!rc) rc = chunk_rows(ctx, hidden, work, B, n, 1);
    if (!rc && save) m->chunks = n;
    return rc;
}

int sd_clip_backward_sdxl_chunks(sd_ctx *ctx, sd_clip *m, sd_tensor *d_tokens, const sd_tensor *dhidden,
                                 const sd_tensor *dpooled)
{
    if (!m->ran || !m->sdxl || m->chunks < 1)
        return sd_err(SD_ESTATE, "text encoder: chunked SDXL backward without a chunked SDXL forward");
    const int64_t n = m->chunks, BN = m->emb.shape[0], B = BN / n, T = m->emb.shape[1], W = m->emb.shape[2];
    if (dhidden && (dhidden->ndim != 3 || dhidden->shape[0] != B || dhidden->shape[1] != n * (T - 2) + 2 ||
                    dhidden->shape[2] != W))
        return sd_err(SD_EINVAL, "text encoder: chunked gradient shape differs from the output");
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor dh;
    int rc;
    CLIP_TRY(f32_zeros(ctx, &ctx->scratch, &dh, 3, m->emb.shape));
    if (dhidden) CLIP_TRY(chunk_rows(ctx, (sd_tensor *)dhidden, &dh, B, n, 0));
    CLIP_TRY(sdxl_backward(ctx, m, d_tokens, &dh, dpooled));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

sd_nn_plan sd_clip_plan_sdxl(const sd_clip *m, int64_t B, int64_t n, int64_t T, int pooled)
{
    sd_nn_plan p = { 0, 0 };
    if (m->family != SD_FAMILY_SDXL || n < 1) return p;
    pooled = pooled && m->proj.w;
    const int nl = pooled ? m->n_run : m->n_run - 1;
    const int64_t R = B * n, W = m->cfg.width, xs[3] = { R, T, W }, ss[2] = { B, W };
    const size_t act = f32_bytes(R * T * W);
    size_t child = 0, layer_saved = 0;
    const sd_clip_layer *L = &m->layers[0];
    sd_nn_plan l1 = sd_layernorm_plan(&L->ln1, 3, xs), l2 = sd_layernorm_plan(&L->ln2, 3, xs);
    for (int i = 0; i < nl; i++) {
        const sd_clip_layer *Li = &m->layers[i];
        sd_nn_plan a = sd_attention_plan(&Li->attn, xs, NULL), f = sd_ff_plan(&Li->mlp, 3, xs);
        layer_saved += 4 * act + l1.saved + l2.saved + a.saved + f.saved;
        child = zmax(child, zmax(a.scratch, f.scratch));
    }
    child = zmax(child, zmax(l1.scratch, l2.scratch));
    size_t pool_saved = 0, pool_scratch = 0;
    if (pooled) {
        sd_nn_plan fl = sd_layernorm_plan(&m->final_ln, 3, xs), pr = sd_linear_plan(&m->proj, 2, ss);
        const size_t sel = f32_bytes(B * W), idx = ((size_t)B * sizeof(int32_t) + 63) & ~(size_t)63;
        pool_saved = idx + sel + fl.saved + pr.saved;
        /* forward: the LN output (+ its statistics at inference); backward: dsel + dlast */
        pool_scratch = act + fl.saved + fl.scratch + sel + idx + pr.scratch;
    }
    p.saved = act + layer_saved + pool_saved;
    size_t per_layer = nl ? layer_saved / (size_t)nl : 0;
    /* inference: emb + ping-pong + a layer's saved set (+ the pooled branch); backward: two
     * gradients + dh + dn + the children's, or the two gradients + dsel + dlast (+ the LN's) */
    p.scratch = zmax(2 * act + per_layer + child, 4 * act + child) + pool_scratch;
    return p;
}

/* ---- loading ----------------------------------------------------------------------------------- */

static int has_prefix(const sd_safetensors *st, const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < sd_safetensors_count(st); i++)
        if (!strncmp(sd_safetensors_at(st, i)->name, prefix, n)) return 1;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Unexpected tensors left by a prefix-mapped load: only position_ids buffers may remain. */
static int check_unexpected(const sd_safetensors *st, const sd_load_report *rep)
{
    for (size_t i = 0; i < rep->unexpected; i++)
        if (!ends_with(rep->unexpected_keys[i], "embeddings.position_ids"))
            return sd_err(SD_EFORMAT, "%s: unexpected text encoder tensor '%s' (%zu unexpected)", sd_safetensors_path(st),
                          rep->unexpected_keys[i], rep->unexpected);
    return SD_OK;
}

/* f32 values into parameter p (converted to its storage dtype). */
static int upload_f32(sd_param *p, const float *from)
{
    int64_t n = sd_tensor_numel(&p->value);
    size_t nb = sd_tensor_nbytes(&p->value);
    if (p->value.dtype == SD_F32) return sd_tensor_upload(&p->value, from, nb);
    void *tmp = malloc(nb);
    if (!tmp) return sd_err(SD_ENOMEM, "out of memory");
    sd_st_dtype dt = p->value.dtype == SD_F16 ? SD_ST_F16 : p->value.dtype == SD_BF16 ? SD_ST_BF16 : SD_ST_F8_E4M3;
    int rc = sd_st_convert(SD_ST_F32, from, dt, tmp, (size_t)n);
    if (!rc) rc = sd_tensor_upload(&p->value, tmp, nb);
    free(tmp);
    return rc;
}

/* Rows [part·W, (part+1)·W) of the packed OpenCLIP in_proj tensor into parameter p. */
static int load_split(sd_param *p, const float *src, int64_t part)
{
    return upload_f32(p, src + part * sd_tensor_numel(&p->value));
}

static const char *const openclip_layer_names[] = {
    "ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "attn.in_proj_weight", "attn.in_proj_bias",
    "attn.out_proj.weight", "attn.out_proj.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
    "mlp.c_proj.bias",
};

/* Every `pre`* tensor must be one OpenCLIP knows, in a resblock the config has. */
static int check_openclip_names(const sd_clip *m, const sd_safetensors *st, const char *pre)
{
    static const char *top[] = { "token_embedding.weight", "positional_embedding", "ln_final.weight",
                                 "ln_final.bias", "text_projection", "logit_scale" };
    const char *rb = "transformer.resblocks.";
    size_t np = strlen(pre), nrb = strlen(rb);
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const char *name = sd_safetensors_at(st, i)->name;
        if (strncmp(name, pre, np)) continue;
        const char *s = name + np;
        int ok = 0;
        for (size_t k = 0; k < sizeof top / sizeof *top && !ok; k++) ok = !strcmp(s, top[k]);
        if (!ok && !strncmp(s, rb, nrb)) {
            char *end;
            long idx = strtol(s + nrb, &end, 10);
            if (end != s + nrb && *end == '.' && idx >= 0 && idx < m->cfg.layers)
                for (size_t k = 0; k < sizeof openclip_layer_names / sizeof *openclip_layer_names && !ok; k++)
                    ok = !strcmp(end + 1, openclip_layer_names[k]);
        }
        if (!ok)
            return sd_err(SD_EFORMAT, "%s: unexpected text encoder tensor '%s' (config: %d layers)",
                          sd_safetensors_path(st), name, m->cfg.layers);
    }
    return SD_OK;
}

/* OpenCLIP names under `pre` (SD2: cond_stage_model.model., SDXL TE2: conditioner.embedders.1.model.):
 * the n_run layers of the model (SD2: all but the stored last one), + text_projection for TE2. */
static int load_openclip(sd_clip *m, sd_params *r, const sd_safetensors *st, const char *pre)
{
    const char *path = sd_safetensors_path(st);
    int rc = check_openclip_names(m, st, pre);
    if (rc) return rc;
    char last[256];
    snprintf(last, sizeof last, "%stransformer.resblocks.%d.ln_1.weight", pre, m->cfg.layers - 1);
    if (!sd_safetensors_find(st, last))
        return sd_err(SD_EFORMAT, "%s: no '%s': the OpenCLIP text encoder has fewer than the %d layers of the config",
                      path, last, m->cfg.layers);
    size_t nmap = 3 + 5 * (size_t)m->n_run;
    sd_key_map *map = calloc(nmap, sizeof *map);
    char (*keys)[2][256] = calloc(nmap, sizeof *keys);
    float *buf = NULL;
    if (!map || !keys) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    static const char *const fixed[3][2] = {
        { "text_model.embeddings.token_embedding.", "token_embedding." },
        { "text_model.embeddings.position_embedding.weight", "positional_embedding" },
        { "text_model.final_layer_norm.", "ln_final." },
    };
    static const char *const sub[5][2] = {
        { "layer_norm1.", "ln_1." }, { "layer_norm2.", "ln_2." }, { "mlp.fc1.", "mlp.c_fc." },
        { "mlp.fc2.", "mlp.c_proj." }, { "self_attn.out_proj.", "attn.out_proj." },
    };
    size_t k = 0;
    for (int i = 0; i < 3; i++, k++) {
        key_join(keys[k][0], sizeof keys[k][0], m->prefix, fixed[i][0]);
        snprintf(keys[k][1], sizeof keys[k][1], "%s%s", pre, fixed[i][1]);
    }
    for (int l = 0; l < m->n_run; l++)
        for (int j = 0; j < 5; j++, k++) {
            char rest[128];
            snprintf(rest, sizeof rest, "text_model.encoder.layers.%d.%s", l, sub[j][0]);
            key_join(keys[k][0], sizeof keys[k][0], m->prefix, rest);
            snprintf(keys[k][1], sizeof keys[k][1], "%stransformer.resblocks.%d.%s", pre, l, sub[j][1]);
        }
    for (k = 0; k < nmap; k++) {
        map[k].ours = keys[k][0];
        map[k].file = keys[k][1];
    }
    sd_load_report rep;
    rc = sd_params_load_safetensors(r, st, map, nmap, SD_LOAD_MAPPED_ONLY | SD_LOAD_ALLOW_UNEXPECTED, &rep);
    sd_load_report_free(&rep);
    if (rc) goto out;
    /* packed q;k;v */
    const int64_t W = m->cfg.width, P = m->proj.w ? m->cfg.projection_dim : 0;
    size_t nbuf = (size_t)(3 * W * W) > (size_t)(W * P) ? (size_t)(3 * W * W) : (size_t)(W * P);
    buf = malloc(nbuf * sizeof(float));
    if (!buf) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto out;
    }
    for (int l = 0; l < m->n_run && !rc; l++) {
        sd_attention *a = &m->layers[l].attn;
        for (int wb = 0; wb < 2 && !rc; wb++) {
            char name[256];
            snprintf(name, sizeof name, "%stransformer.resblocks.%d.attn.in_proj_%s", pre, l, wb ? "bias" : "weight");
            const int64_t shape[2] = { 3 * W, W };
            rc = sd_safetensors_check_shape(st, name, wb ? 1 : 2, shape);
            if (rc) break;
            rc = sd_safetensors_read_f32(st, name, buf, (size_t)(wb ? 3 * W : 3 * W * W));
            sd_linear *lin[3] = { &a->q, &a->k, &a->v };
            for (int part = 0; part < 3 && !rc; part++) {
                sd_param *p = wb ? lin[part]->b : lin[part]->w;
                rc = load_split(p, buf, part);
                if (rc) rc = sd_err_prefix(rc, "%s: %s", path, name);
            }
        }
    }
    if (!rc && P > 0) {
        /* text_projection [W, P], used as x·P: our weight [P, W] is its transpose */
        char name[256];
        snprintf(name, sizeof name, "%stext_projection", pre);
        rc = sd_safetensors_check_shape(st, name, 2, (const int64_t[]){ W, P });
        float *t = rc ? NULL : malloc((size_t)(W * P) * sizeof(float));
        if (!rc && !t) rc = sd_err(SD_ENOMEM, "out of memory");
        if (!rc) rc = sd_safetensors_read_f32(st, name, buf, (size_t)(W * P));
        if (!rc) {
            for (int64_t i = 0; i < W; i++)
                for (int64_t j = 0; j < P; j++) t[j * W + i] = buf[i * P + j];
            rc = upload_f32(m->proj.w, t);
        }
        free(t);
        if (rc) rc = sd_err_prefix(rc, "%s: %s", path, name);
    }
out:
    free(buf);
    free(keys);
    free(map);
    return rc;
}

/* The family's tower is stored in OpenCLIP names in a single file. */
static int openclip_style(const sd_clip *m)
{
    return m->family == SD_FAMILY_SD2 || (m->family == SD_FAMILY_SDXL && m->proj.w);
}

static const char *default_ldm_prefix(const sd_clip *m)
{
    if (m->family == SD_FAMILY_SDXL) return m->proj.w ? "conditioner.embedders.1.model." : "conditioner.embedders.0.transformer.";
    return m->family == SD_FAMILY_SD2 ? "cond_stage_model.model." : "cond_stage_model.transformer.";
}

int sd_clip_load_prefix(sd_clip *m, sd_params *r, const sd_safetensors *st, sd_layout layout, const char *file_prefix)
{
    const char *path = sd_safetensors_path(st);
    if (layout != SD_LAYOUT_LDM && layout != SD_LAYOUT_DIFFUSERS)
        return sd_err(SD_EINVAL, "%s: no such text encoder layout", path);
    if (!file_prefix) file_prefix = "";
    if (layout == SD_LAYOUT_LDM && openclip_style(m)) return load_openclip(m, r, st, file_prefix);
    char ours[256], file[256], ours_p[256], file_p[256];
    key_join(ours, sizeof ours, m->prefix, "text_model.");
    snprintf(file, sizeof file, "%stext_model.", file_prefix);
    if (layout == SD_LAYOUT_LDM) {
        char probe[300];
        snprintf(probe, sizeof probe, "%stext_model.final_layer_norm.weight", file_prefix);
        if (!sd_safetensors_find(st, probe)) snprintf(file, sizeof file, "%s", file_prefix);
    }
    sd_key_map map[2] = { { ours, file }, { ours_p, file_p } };
    size_t nmap = 1;
    if (m->proj.w) {   /* Diffusers TE2: text_projection.weight as is */
        key_join(ours_p, sizeof ours_p, m->prefix, "text_projection.");
        snprintf(file_p, sizeof file_p, "%stext_projection.", file_prefix);
        nmap = 2;
    }
    sd_load_report rep;
    int rc = sd_params_load_safetensors(r, st, map, nmap, SD_LOAD_MAPPED_ONLY | SD_LOAD_ALLOW_UNEXPECTED, &rep);
    if (!rc) rc = check_unexpected(st, &rep);
    if (!rc && rep.loaded == 0) rc = sd_err(SD_EFORMAT, "%s: no text encoder tensors under %s", path, file);
    sd_load_report_free(&rep);
    return rc;
}

int sd_clip_load(sd_clip *m, sd_params *r, const sd_safetensors *st, sd_layout layout)
{
    const char *path = sd_safetensors_path(st);
    if (layout == SD_LAYOUT_NONE) {
        if (m->family == SD_FAMILY_SDXL) {
            if (has_prefix(st, default_ldm_prefix(m))) layout = SD_LAYOUT_LDM;
            else if (has_prefix(st, "text_model.")) layout = SD_LAYOUT_DIFFUSERS;
            else return sd_err(SD_EFORMAT, "%s: no SDXL text encoder tensors (%s* or text_model.*)", path,
                               default_ldm_prefix(m));
        } else {
            int sd2_file = 0;
            if (has_prefix(st, "cond_stage_model.model.")) layout = SD_LAYOUT_LDM, sd2_file = 1;
            else if (has_prefix(st, "cond_stage_model.transformer.")) layout = SD_LAYOUT_LDM;
            else if (has_prefix(st, "text_model.")) layout = SD_LAYOUT_DIFFUSERS;
            else return sd_err(SD_EFORMAT, "%s: no text encoder tensors (cond_stage_model.* or text_model.*)", path);
            if (layout == SD_LAYOUT_LDM && sd2_file != (m->family == SD_FAMILY_SD2))
                return sd_err(SD_EFORMAT, "%s: holds %s text encoder, the model is %s", path,
                              sd2_file ? "an OpenCLIP (SD2)" : "a CLIP ViT-L (SD1)", sd_family_name(m->family));
        }
    } else if (layout != SD_LAYOUT_LDM && layout != SD_LAYOUT_DIFFUSERS) {
        return sd_err(SD_EINVAL, "%s: no such text encoder layout", path);
    }
    return sd_clip_load_prefix(m, r, st, layout, layout == SD_LAYOUT_LDM ? default_ldm_prefix(m) : "");
}

/* ---- OpenCLIP names for writing ------------------------------------------------------------------ */

int sd_clip_openclip_name(const char *hf_key, const char *file_prefix, char *out, size_t n, int *how)
{
    static const char TM[] = "text_model.";
    char buf[512];
    int layer = -1, used = 0;
    *how = SD_CLIP_OC_COPY;
    const char *k = hf_key + (strncmp(hf_key, TM, sizeof TM - 1) ? 0 : sizeof TM - 1);
    if (!strcmp(hf_key, "text_projection.weight")) {
        snprintf(buf, sizeof buf, "text_projection");
        *how = SD_CLIP_OC_TRANSPOSE;
    } else if (k == hf_key) {
        return sd_err(SD_ENOTFOUND, "%s: no OpenCLIP name", hf_key);
    } else if (!strcmp(k, "embeddings.token_embedding.weight")) {
        snprintf(buf, sizeof buf, "token_embedding.weight");
    } else if (!strcmp(k, "embeddings.position_embedding.weight")) {
        snprintf(buf, sizeof buf, "positional_embedding");
    } else if (!strncmp(k, "final_layer_norm.", 17)) {
        snprintf(buf, sizeof buf, "ln_final.%s", k + 17);
    } else if (sscanf(k, "encoder.layers.%d.%n", &layer, &used) == 1 && used > 0 && layer >= 0) {
        const char *r = k + used;
        static const struct { const char *hf, *oc; int how; } map[] = {
            { "layer_norm1.", "ln_1.", 0 }, { "layer_norm2.", "ln_2.", 0 },
            { "self_attn.out_proj.", "attn.out_proj.", 0 }, { "mlp.fc1.", "mlp.c_fc.", 0 },
            { "mlp.fc2.", "mlp.c_proj.", 0 }, { "self_attn.q_proj.", "attn.in_proj_", 1 },
            { "self_attn.k_proj.", "attn.in_proj_", 1 }, { "self_attn.v_proj.", "attn.in_proj_", 1 },
        };
        size_t i;
        for (i = 0; i < sizeof map / sizeof *map; i++)
            if (!strncmp(r, map[i].hf, strlen(map[i].hf))) break;
        if (i == sizeof map / sizeof *map) return sd_err(SD_ENOTFOUND, "%s: no OpenCLIP name", hf_key);
        snprintf(buf, sizeof buf, "transformer.resblocks.%d.%s%s", layer, map[i].oc, r + strlen(map[i].hf));
        *how = map[i].how ? SD_CLIP_OC_QKV : SD_CLIP_OC_COPY;
    } else {
        return sd_err(SD_ENOTFOUND, "%s: no OpenCLIP name", hf_key);
    }
    if ((size_t)snprintf(out, n, "%s%s", file_prefix ? file_prefix : "", buf) >= n)
        return sd_err(SD_ERANGE, "name too long");
    return SD_OK;
}
