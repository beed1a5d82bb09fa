/* WD tagger: timm SwinTransformerV2 build and forward (see tagger_swinv2.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "models/tagger.h"
#include "models/tagger_swinv2.h"

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

static const float LN_EPS = 1e-5f;     /* torch nn.LayerNorm default: timm's SwinV2 norm_layer */
static const float NORM_EPS = 1e-12f;  /* F.normalize */

static int has(const sd_safetensors *st, const char *k) { return sd_safetensors_find(st, k) != NULL; }

static int shape_of(const sd_safetensors *st, const char *name, int ndim, const sd_st_tensor **t)
{
    return sd_safetensors_get_dims(st, name, ndim, "timm SwinV2 tagger", t);
}

/* The tensor `name` must exist with exactly `shape`; read it as f32 into dst. */
static int read_exact(const sd_safetensors *st, const char *name, int ndim, const int64_t *shape, float *dst)
{
    const sd_st_tensor *t;
    int rc = shape_of(st, name, ndim, &t);
    if (rc) return rc;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) {
            char a[96], b[96];
            sd_st_shape_str(t->ndim, t->shape, a, sizeof a);
            sd_st_shape_str(ndim, shape, b, sizeof b);
            return sd_err(SD_EFORMAT, "%s: tensor '%s': expected shape %s, got %s", sd_safetensors_path(st), name, b, a);
        }
    if (!sd_st_dtype_is_float(t->dtype))
        return sd_err(SD_EFORMAT, "%s: tensor '%s' is %s, not a floating type", sd_safetensors_path(st), name,
                      sd_st_dtype_name(t->dtype));
    return sd_safetensors_read_f32(st, name, dst, (size_t)n);
}

void sd_tagger_swinv2_free(sd_tagger_swinv2 *c)
{
    for (int s = 0; s < SD_SWINV2_MAX_STAGES; s++) free(c->stages[s].blocks);
    free(c->host);
    sd_tensor_free(&c->derived);
    memset(c, 0, sizeof *c);
}

/* ---- the derived constants ------------------------------------------------------------------ */

/* bias [heads, T, T] = 16·sigmoid(cpb_mlp(table))[relative position index] (timm WindowAttention
 * with pretrained_window_size 0). The table follows torch's float32 steps; the MLP sums in double. */
static int cpb_bias(float *bias, int ws, int64_t heads, int64_t hid, const float *w0, const float *b0,
                     const float *w2)
{
    const int L = 2 * ws - 1;
    double *tab = malloc((size_t)L * L * heads * sizeof *tab);
    double *hv = malloc((size_t)hid * sizeof *hv);
    if (!tab || !hv) {
        free(tab);
        free(hv);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (int a = 0; a < L; a++)
        for (int b = 0; b < L; b++) {
            float u[2] = { (float)(a - (ws - 1)), (float)(b - (ws - 1)) };
            for (int k = 0; k < 2; k++) {
                float v = u[k] / (float)(ws - 1) * 8.0f;
                float sg = v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f;
                u[k] = sg * log2f(fabsf(v) + 1.0f) / (float)3.0;   /* math.log2(8) */
            }
            for (int64_t j = 0; j < hid; j++) {
                double z = (double)w0[j * 2] * u[0] + (double)w0[j * 2 + 1] * u[1] + b0[j];
                hv[j] = z > 0 ? z : 0;
            }
            for (int64_t h = 0; h < heads; h++) {
                double z = 0;
                for (int64_t j = 0; j < hid; j++) z += (double)w2[h * hid + j] * hv[j];
                tab[((size_t)a * L + b) * heads + h] = 16.0 / (1.0 + exp(-(double)(float)z));
            }
        }
    const int64_t T = (int64_t)ws * ws;
    for (int64_t p = 0; p < T; p++)
        for (int64_t q = 0; q < T; q++) {
            int64_t di = p / ws - q / ws + ws - 1, dj = p % ws - q % ws + ws - 1;
            for (int64_t h = 0; h < heads; h++) bias[(h * T + p) * T + q] = (float)tab[((size_t)di * L + dj) * heads + h];
        }
    free(tab);
    free(hv);
    return SD_OK;
}

/* mask [nW, T, T] of a shifted stage (timm get_attn_mask): regions of the rolled map, −100 between
 * tokens of different regions. */
static void shift_mask(float *mask, int64_t res, int ws, int shift)
{
    const int64_t nw = res / ws, T = (int64_t)ws * ws;
    for (int64_t wi = 0; wi < nw; wi++)
        for (int64_t wj = 0; wj < nw; wj++) {
            float *m = mask + (wi * nw + wj) * T * T;
            for (int64_t p = 0; p < T; p++)
                for (int64_t q = 0; q < T; q++) {
                    int64_t hp = wi * ws + p / ws, wp = wj * ws + p % ws, hq = wi * ws + q / ws, wq = wj * ws + q % ws;
#define REG(x) ((x) < res - ws ? 0 : (x) < res - shift ? 1 : 2)
                    int rp = REG(hp) * 3 + REG(wp), rq = REG(hq) * 3 + REG(wq);
#undef REG
                    m[p * T + q] = rp == rq ? 0.0f : -100.0f;
                }
        }
}

/* ---- build ------------------------------------------------------------------------------------ */

/* Buffers timm keeps out of the state dict; a file that has them anyway is accepted (shape-checked,
 * ignored). Returns 1 for such a key with the right shape, 0 for another key, or an error. */
static int buffer_key(const sd_tagger_swinv2 *c, const sd_safetensors *st, const sd_st_tensor *t)
{
    int s, b, n = 0;
    char tail[64];
    if (sscanf(t->name, "layers.%d.blocks.%d.%63s%n", &s, &b, tail, &n) != 3 || t->name[n]) return 0;
    if (s < 0 || s >= c->nstages || b < 0 || b >= c->stages[s].depth) return 0;
    const sd_swinv2_stage *g = &c->stages[s];
    const int64_t T = (int64_t)g->ws * g->ws, L = 2 * g->ws - 1, nW = (g->h / g->ws) * (g->h / g->ws);
    int64_t want[4];
    int nd;
    if (!strcmp(tail, "attn.relative_coords_table")) { nd = 4; want[0] = 1; want[1] = L; want[2] = L; want[3] = 2; }
    else if (!strcmp(tail, "attn.relative_position_index")) { nd = 2; want[0] = T; want[1] = T; }
    else if (!strcmp(tail, "attn.k_bias")) { nd = 1; want[0] = g->dim; }
    else if (!strcmp(tail, "attn_mask") && g->blocks[b].shift) { nd = 3; want[0] = nW; want[1] = T; want[2] = T; }
    else return 0;
    int ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char a[96], e[96];
        sd_st_shape_str(t->ndim, t->shape, a, sizeof a);
        sd_st_shape_str(nd, want, e, sizeof e);
        return sd_err(SD_EFORMAT, "%s: tensor '%s': expected shape %s, got %s", sd_safetensors_path(st), t->name, e, a);
    }
    return 1;
}

int sd_tagger_swinv2_build(sd_tagger_swinv2 *c, sd_params *r, const sd_safetensors *st)
{
    memset(c, 0, sizeof *c);
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *t;
    char key[160], p[128];
    int rc;
    long v;
    int64_t d0;
    TRY(shape_of(st, "patch_embed.proj.weight", 4, &t));
    TRY(sd_tagger_patch_dims(st, t, &d0, &c->patch));
    TRY(sd_tagger_meta_int(st, "img_size", 1, 8192, 448, &v));
    c->size = v;
    TRY(sd_tagger_meta_int(st, "window_size", 1, 256, 14, &v));
    c->window = v;
    TRY(sd_tagger_meta_act(st, &c->act));
    if (c->size % c->patch)
        TRY(sd_err(SD_EFORMAT, "%s: input size %lld is not a multiple of the patch %lld", path, (long long)c->size,
                   (long long)c->patch));
    c->grid = c->size / c->patch;
    TRY(sd_tagger_count_stages(st, "layers", "blocks.0.norm1.weight", "no SwinV2 stages", SD_SWINV2_MAX_STAGES,
                               &c->nstages));
    TRY(sd_conv2d_init(&c->patch_embed, r, "patch_embed.proj", 3, d0, (int)c->patch, (int)c->patch,
                       sd_conv2d_geom_make((int)c->patch, 0), SD_NN_BIAS));
    TRY(sd_layernorm_init(&c->patch_norm, r, "patch_embed.norm", d0, LN_EPS));
    /* pass 1: geometry and registration */
    int64_t prev = d0, h = c->grid, nder = 0;
    for (int s = 0; s < c->nstages; s++) {
        sd_swinv2_stage *g = &c->stages[s];
        snprintf(key, sizeof key, "layers.%d.blocks.0.norm1.weight", s);
        TRY(shape_of(st, key, 1, &t));
        g->dim = t->shape[0];
        snprintf(key, sizeof key, "layers.%d.blocks.0.attn.logit_scale", s);
        TRY(shape_of(st, key, 3, &t));
        g->heads = t->shape[0];
        if (t->shape[1] != 1 || t->shape[2] != 1 || g->dim % g->heads)
            TRY(sd_err(SD_EFORMAT, "%s: %s must be [heads,1,1] with heads dividing the width %lld", path, key,
                       (long long)g->dim));
        snprintf(key, sizeof key, "layers.%d.blocks.0.mlp.fc1.weight", s);
        TRY(shape_of(st, key, 2, &t));
        g->mlp = t->shape[0];
        snprintf(key, sizeof key, "layers.%d.blocks.0.attn.cpb_mlp.0.weight", s);
        TRY(shape_of(st, key, 2, &t));
        g->cpb_hidden = t->shape[0];
        for (g->depth = 0; g->depth < 1000; g->depth++) {
            snprintf(key, sizeof key, "layers.%d.blocks.%d.norm1.weight", s, (int)g->depth);
            if (!has(st, key)) break;
        }
        snprintf(key, sizeof key, "layers.%d.downsample.reduction.weight", s);
        g->has_down = has(st, key);
        if (g->has_down) {
            TRY(shape_of(st, key, 2, &t));
            if (t->shape[0] != g->dim || t->shape[1] != 4 * prev)
                TRY(sd_err(SD_EFORMAT, "%s: %s must be [%lld,%lld]", path, key, (long long)g->dim, (long long)(4 * prev)));
            if (h % 2 || h < 2)
                TRY(sd_err(SD_EUNSUPPORTED, "%s: stage %d: patch merging of an odd %lldx%lld map (input size %lld) is "
                                            "not supported", path, s, (long long)h, (long long)h, (long long)c->size));
            snprintf(p, sizeof p, "layers.%d.downsample.reduction", s);
            TRY(sd_linear_init(&g->down_red, r, p, 4 * prev, g->dim, 0));
            snprintf(p, sizeof p, "layers.%d.downsample.norm", s);
            TRY(sd_layernorm_init(&g->down_norm, r, p, g->dim, LN_EPS));
            h /= 2;
        } else if (prev != g->dim) {
            TRY(sd_err(SD_EFORMAT, "%s: stage %d changes the width from %lld to %lld without a downsample", path, s,
                       (long long)prev, (long long)g->dim));
        }
        g->h = h;
        /* timm _calc_window_shift: the window shrinks to a smaller map, which then is not shifted */
        g->ws = (int)(h <= c->window ? h : c->window);
        const int shift = h <= c->window ? 0 : (int)(c->window / 2);
        if (h % g->ws)
            TRY(sd_err(SD_EUNSUPPORTED, "%s: stage %d: the %lldx%lld map is not a whole number of %dx%d windows "
                                        "(input size %lld, window %lld)", path, s, (long long)h, (long long)h, g->ws,
                       g->ws, (long long)c->size, (long long)c->window));
        if (g->ws < 2)
            TRY(sd_err(SD_EUNSUPPORTED, "%s: stage %d: a 1x1 window is not supported (input size %lld)", path, s,
                       (long long)c->size));
        const int64_t T = (int64_t)g->ws * g->ws, nW = (h / g->ws) * (h / g->ws);
        if (shift && g->depth > 1) nder += nW * T * T;
        g->blocks = calloc((size_t)(g->depth ? g->depth : 1), sizeof *g->blocks);
        if (!g->blocks) TRY(sd_err(SD_ENOMEM, "out of memory"));
        for (int b = 0; b < g->depth; b++) {
            sd_swinv2_block *bl = &g->blocks[b];
            bl->shift = b % 2 ? shift : 0;
            nder += 3 * g->dim + g->heads + g->heads * T * T;
#define K(x) (snprintf(p, sizeof p, "layers.%d.blocks.%d." x, s, b), p)
            TRY(sd_params_add(r, K("attn"), "logit_scale", 3, (int64_t[]){ g->heads, 1, 1 }, 0, &bl->logit_scale));
            TRY(sd_params_add(r, K("attn"), "q_bias", 1, (int64_t[]){ g->dim }, 0, &bl->q_bias));
            TRY(sd_params_add(r, K("attn"), "v_bias", 1, (int64_t[]){ g->dim }, 0, &bl->v_bias));
            TRY(sd_linear_init(&bl->qkv, r, K("attn.qkv"), g->dim, 3 * g->dim, 0));
            TRY(sd_linear_init(&bl->proj, r, K("attn.proj"), g->dim, g->dim, SD_NN_BIAS));
            TRY(sd_params_add(r, K("attn.cpb_mlp.0"), "weight", 2, (int64_t[]){ g->cpb_hidden, 2 }, 0, &bl->cpb0_w));
            TRY(sd_params_add(r, K("attn.cpb_mlp.0"), "bias", 1, (int64_t[]){ g->cpb_hidden }, 0, &bl->cpb0_b));
            TRY(sd_params_add(r, K("attn.cpb_mlp.2"), "weight", 2, (int64_t[]){ g->heads, g->cpb_hidden }, 0,
                              &bl->cpb2_w));
            TRY(sd_layernorm_init(&bl->norm1, r, K("norm1"), g->dim, LN_EPS));
            TRY(sd_linear_init(&bl->fc1, r, K("mlp.fc1"), g->dim, g->mlp, SD_NN_BIAS));
            TRY(sd_linear_init(&bl->fc2, r, K("mlp.fc2"), g->mlp, g->dim, SD_NN_BIAS));
            TRY(sd_layernorm_init(&bl->norm2, r, K("norm2"), g->dim, LN_EPS));
#undef K
        }
        prev = g->dim;
    }
    TRY(sd_layernorm_init(&c->norm, r, "norm", prev, LN_EPS));
    TRY(shape_of(st, "head.fc.weight", 2, &t));
    c->classes = t->shape[0];
    if (t->shape[1] != prev)
        TRY(sd_err(SD_EFORMAT, "%s: head.fc.weight is [%lld,%lld], expected [classes,%lld]", path,
                   (long long)t->shape[0], (long long)t->shape[1], (long long)prev));
    TRY(sd_linear_init(&c->head, r, "head.fc", prev, c->classes, SD_NN_BIAS));
    /* pass 2: the derived constants, from the file's weights (checked for shape here; the loader
     * checks every tensor again) */
    c->nderived = nder;
    c->host = calloc((size_t)(nder ? nder : 1), sizeof *c->host);
    if (!c->host) TRY(sd_err(SD_ENOMEM, "out of memory"));
    int64_t off = 0;
    for (int s = 0; s < c->nstages; s++) {
        sd_swinv2_stage *g = &c->stages[s];
        const int64_t T = (int64_t)g->ws * g->ws, nW = (g->h / g->ws) * (g->h / g->ws), hid = g->cpb_hidden;
        const int shift = g->depth > 1 ? g->blocks[1].shift : 0;
        if (shift) {
            shift_mask(c->host + off, g->h, g->ws, shift);
            off += nW * T * T;
        }
        float *w0 = malloc((size_t)(hid * 3 + g->heads * hid + g->heads) * sizeof *w0);
        if (!w0) TRY(sd_err(SD_ENOMEM, "out of memory"));
        float *b0 = w0 + 2 * hid, *w2 = b0 + hid, *ls = w2 + g->heads * hid;
        for (int b = 0; b < g->depth && !rc; b++) {
            float *qkvb = c->host + off, *scale = qkvb + 3 * g->dim, *bias = scale + g->heads;
            off += 3 * g->dim + g->heads + g->heads * T * T;
#define K(x) (snprintf(key, sizeof key, "layers.%d.blocks.%d.attn." x, s, b), key)
            rc = read_exact(st, K("q_bias"), 1, (int64_t[]){ g->dim }, qkvb);
            memset(qkvb + g->dim, 0, (size_t)g->dim * sizeof *qkvb);
            if (!rc) rc = read_exact(st, K("v_bias"), 1, (int64_t[]){ g->dim }, qkvb + 2 * g->dim);
            if (!rc) rc = read_exact(st, K("logit_scale"), 3, (int64_t[]){ g->heads, 1, 1 }, ls);
            if (!rc) rc = read_exact(st, K("cpb_mlp.0.weight"), 2, (int64_t[]){ hid, 2 }, w0);
            if (!rc) rc = read_exact(st, K("cpb_mlp.0.bias"), 1, (int64_t[]){ hid }, b0);
            if (!rc) rc = read_exact(st, K("cpb_mlp.2.weight"), 2, (int64_t[]){ g->heads, hid }, w2);
#undef K
            if (rc) break;
            for (int64_t k = 0; k < g->heads; k++) {
                const float mx = (float)log(1.0 / 0.01);   /* torch.clamp(max=math.log(1/0.01)) in f32 */
                scale[k] = expf(ls[k] < mx ? ls[k] : mx);
            }
            rc = cpb_bias(bias, g->ws, g->heads, hid, w0, b0, w2);
        }
        free(w0);
        if (rc) goto out;
    }
    /* every file tensor is a parameter or one of timm's buffers of the right shape */
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *x = sd_safetensors_at(st, i);
        if (sd_params_find(r, x->name)) continue;
        int k = buffer_key(c, st, x);
        if (k < 0) TRY(k);
        if (!k) TRY(sd_err(SD_EFORMAT, "%s: unexpected tensor '%s' (not part of a timm SwinV2 tagger)", path, x->name));
    }
out:
    if (rc) sd_tagger_swinv2_free(c);
    return rc;
}

/* dst = a [shape] view of c->derived at *off; *off advances past it. */
static int derived_view(sd_tagger_swinv2 *c, int64_t *off, int nd, const int64_t *shape, sd_tensor *dst)
{
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    sd_tensor t;
    int rc = sd_tensor_narrow0(&c->derived, *off, n, &t);
    if (!rc) rc = sd_tensor_reshape(&t, nd, shape, dst);
    *off += n;
    return rc;
}

int sd_tagger_swinv2_upload(sd_tagger_swinv2 *c, sd_devkind dev)
{
    int rc = sd_tensor_alloc_on(&c->derived, dev, SD_F32, 1, (int64_t[]){ c->nderived ? c->nderived : 1 });
    if (!rc) rc = sd_tensor_upload(&c->derived, c->host, sd_tensor_nbytes(&c->derived));
    if (rc) return sd_err_prefix(rc, "SwinV2 tagger constants");
    int64_t off = 0;
    for (int s = 0; s < c->nstages && !rc; s++) {
        sd_swinv2_stage *g = &c->stages[s];
        const int64_t T = (int64_t)g->ws * g->ws, nW = (g->h / g->ws) * (g->h / g->ws);
        if (g->depth > 1 && g->blocks[1].shift) rc = derived_view(c, &off, 4, (int64_t[]){ nW, 1, T, T }, &g->mask);
        for (int b = 0; b < g->depth && !rc; b++) {
            sd_swinv2_block *bl = &g->blocks[b];
            rc = derived_view(c, &off, 1, (int64_t[]){ 3 * g->dim }, &bl->qkv_b);
            if (!rc) rc = derived_view(c, &off, 3, (int64_t[]){ g->heads, 1, 1 }, &bl->scale);
            if (!rc) rc = derived_view(c, &off, 3, (int64_t[]){ g->heads, T, T }, &bl->bias);
        }
    }
    if (rc) return rc;
    free(c->host);
    c->host = NULL;
    return SD_OK;
}

int sd_tagger_swinv2_move(sd_tagger_swinv2 *c, sd_devkind dev)
{
    if (!c->derived.data || c->derived.device == dev) return SD_OK;
    c->host = malloc(sd_tensor_nbytes(&c->derived));
    if (!c->host) return sd_err(SD_ENOMEM, "out of memory");
    int rc = sd_tensor_download(&c->derived, c->host, sd_tensor_nbytes(&c->derived));
    if (rc) return rc;
    sd_tensor_free(&c->derived);
    return sd_tagger_swinv2_upload(c, dev);
}

int sd_tagger_swinv2_open(sd_tagger *m, const sd_safetensors *st, sd_devkind dev)
{
    int rc;
    m->arch = SD_TAGGER_ARCH_SWINV2;
    m->swin = calloc(1, sizeof *m->swin);
    if (!m->swin) TRY(sd_err(SD_ENOMEM, "out of memory"));
    TRY(sd_tagger_swinv2_build(m->swin, &m->r, st));
    m->size = m->swin->size;
    m->classes = m->swin->classes;
    TRY(sd_params_set_trainable(&m->r, "", 0) < 0 ? SD_ESTATE : SD_OK);
    TRY(sd_params_alloc(&m->r, SD_DEV_CPU));
    TRY(sd_params_load_safetensors(&m->r, st, NULL, 0, SD_LOAD_ALLOW_UNEXPECTED, NULL));   /* extras: checked above */
    if (dev != SD_DEV_CPU) TRY(sd_params_move(&m->r, dev));
    TRY(sd_tagger_swinv2_upload(m->swin, dev));
out:
    if (rc) sd_tagger_free(m);
    return rc;
}

/* ---- forward -------------------------------------------------------------------------------- */

/* Per image: the largest stage tensor (tokens × width, also the patch embedding's and the patch
 * merging's 4C form), the largest attention score block (windows × heads × T²) and MLP hidden. */
static void maxima(const sd_tagger_swinv2 *c, int64_t *act, int64_t *score, int64_t *hid)
{
    *act = c->patch_embed.cout * c->grid * c->grid;
    *score = *hid = 0;
    for (int s = 0; s < c->nstages; s++) {
        const sd_swinv2_stage *g = &c->stages[s];
        const int64_t hw = g->h * g->h, T = (int64_t)g->ws * g->ws;
        if (g->dim * hw > *act) *act = g->dim * hw;
        if ((hw / T) * g->heads * T * T > *score) *score = (hw / T) * g->heads * T * T;
        if (g->mlp * hw > *hid) *hid = g->mlp * hw;
    }
    if (6 * *act > *hid) *hid = 6 * *act;   /* the qkv buffer (qkv and its permuted copy) doubles as the hidden */
}

size_t sd_tagger_swinv2_scratch_per_image(const sd_tagger_swinv2 *c)
{
    int64_t act, score, hid;
    maxima(c, &act, &score, &hid);
    /* 4 stage tensors, the qkv/hidden buffer, the scores, LayerNorm statistics, the patch
     * embedding's im2col matrix, the pooled row */
    const int64_t col = 3 * c->patch * c->patch * c->grid * c->grid;
    return (size_t)(4 * act + hid + score + 2 * c->grid * c->grid + col + c->head.in) * sizeof(float) + 64 * 16;
}

static int tens(sd_ctx *ctx, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(&ctx->scratch, t, SD_F32, ndim, shape);
    return rc ? sd_err_prefix(rc, "SwinV2 tagger activations") : SD_OK;
}

/* A [shape] view of the start of the flat buffer `buf`. */
static int view(const sd_tensor *buf, int ndim, const int64_t *shape, sd_tensor *out)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    sd_tensor t;
    int rc = sd_tensor_narrow0(buf, 0, n, &t);
    return rc ? rc : sd_tensor_reshape(&t, ndim, shape, out);
}

/* One block on the stream X [N,h,h,C]; B1..B3 stage-sized, Q the qkv/hidden buffer, S the scores. */
static int block_forward(sd_ctx *ctx, const sd_tagger_swinv2 *c, const sd_swinv2_stage *g, sd_swinv2_block *bl,
                         sd_tensor *X, const sd_tensor *B1, const sd_tensor *B2, const sd_tensor *B3,
                         const sd_tensor *Q, const sd_tensor *S)
{
    const int64_t N = X->shape[0], h = g->h, C = g->dim, nh = g->heads, dh = C / nh, ws = g->ws, T = ws * ws;
    const int64_t nW = (h / ws) * (h / ws), BW = N * nW, P = N * h * h, q3 = 3 * P * C;
    sd_tensor win, qkv, qp, qk, q, k, vv, sc, o, op, pr, mg, t1, hv, half;
    int rc;
    TRY(view(B1, 3, (int64_t[]){ BW, T, C }, &win));
    TRY(sd_op_window_partition(ctx, &win, X, (int)ws, bl->shift));
    TRY(view(Q, 3, (int64_t[]){ BW, T, 3 * C }, &qkv));
    TRY(sd_op_linear(ctx, &qkv, &win, &bl->qkv.w->value, &bl->qkv_b));
    TRY(sd_tensor_reshape(&qkv, 5, (int64_t[]){ BW, T, 3, nh, dh }, &qkv));
    TRY(sd_tensor_narrow0(Q, q3, q3, &half));
    TRY(view(&half, 5, (int64_t[]){ 3, BW, nh, T, dh }, &qp));
    TRY(sd_op_permute(ctx, &qp, &qkv, (const int[]){ 2, 0, 3, 1, 4 }));
    TRY(view(&half, 2, (int64_t[]){ 2 * BW * nh * T, dh }, &qk));
    TRY(sd_op_l2_normalize(ctx, &qk, &qk, NORM_EPS));   /* q and k: cosine attention */
    TRY(sd_tensor_index0(&qp, 0, &q));
    TRY(sd_tensor_index0(&qp, 1, &k));
    TRY(sd_tensor_index0(&qp, 2, &vv));
    TRY(view(S, 4, (int64_t[]){ BW, nh, T, T }, &sc));
    TRY(sd_op_matmul(ctx, &sc, &q, 0, &k, 1, 1.0f, 0.0f));
    TRY(sd_op_mul(ctx, &sc, &sc, &bl->scale));
    TRY(sd_op_add(ctx, &sc, &sc, &bl->bias));
    if (bl->shift) {
        sd_tensor s5;
        TRY(sd_tensor_reshape(&sc, 5, (int64_t[]){ N, nW, nh, T, T }, &s5));
        TRY(sd_op_add(ctx, &s5, &s5, &g->mask));
    }
    TRY(sd_op_softmax(ctx, &sc, &sc));
    TRY(view(B2, 4, (int64_t[]){ BW, nh, T, dh }, &o));
    TRY(sd_op_matmul(ctx, &o, &sc, 0, &vv, 0, 1.0f, 0.0f));
    TRY(view(B1, 4, (int64_t[]){ BW, T, nh, dh }, &op));
    TRY(sd_op_permute(ctx, &op, &o, (const int[]){ 0, 2, 1, 3 }));
    TRY(sd_tensor_reshape(&op, 3, (int64_t[]){ BW, T, C }, &op));
    TRY(view(B2, 3, (int64_t[]){ BW, T, C }, &pr));
    TRY(sd_linear_forward(ctx, &bl->proj, NULL, &pr, &op));
    TRY(view(B3, 4, (int64_t[]){ N, h, h, C }, &mg));
    TRY(sd_op_window_merge(ctx, &mg, &pr, (int)ws, bl->shift));
    /* residual post-norm: x += norm1(attn(x)); x += norm2(mlp(x)) */
    TRY(sd_tensor_reshape(&mg, 2, (int64_t[]){ P, C }, &mg));
    TRY(view(B1, 2, (int64_t[]){ P, C }, &t1));
    TRY(sd_layernorm_forward(ctx, &bl->norm1, NULL, &t1, &mg));
    sd_tensor x2;
    TRY(sd_tensor_reshape(X, 2, (int64_t[]){ P, C }, &x2));
    TRY(sd_op_add(ctx, &x2, &x2, &t1));
    TRY(view(Q, 2, (int64_t[]){ P, g->mlp }, &hv));
    TRY(sd_linear_forward(ctx, &bl->fc1, NULL, &hv, &x2));
    TRY(sd_op_act(ctx, c->act, &hv, &hv));
    TRY(view(B2, 2, (int64_t[]){ P, C }, &t1));
    TRY(sd_linear_forward(ctx, &bl->fc2, NULL, &t1, &hv));
    TRY(view(B3, 2, (int64_t[]){ P, C }, &mg));
    TRY(sd_layernorm_forward(ctx, &bl->norm2, NULL, &mg, &t1));
    TRY(sd_op_add(ctx, &x2, &x2, &mg));
out:
    return rc;
}

int sd_tagger_swinv2_forward(sd_ctx *ctx, sd_tagger_swinv2 *c, sd_tensor *logits, const sd_tensor *x)
{
    const int64_t S = c->size;
    if (x->ndim != 4 || x->shape[1] != 3 || x->shape[2] != S || x->shape[3] != S || x->dtype != SD_F32)
        return sd_err(SD_EINVAL, "SwinV2 tagger: input must be f32 [N,3,%lld,%lld]", (long long)S, (long long)S);
    const int64_t N = x->shape[0];
    if (logits->ndim != 2 || logits->shape[0] != N || logits->shape[1] != c->classes || logits->dtype != SD_F32)
        return sd_err(SD_EINVAL, "SwinV2 tagger: logits must be f32 [%lld,%lld]", (long long)N,
                      (long long)c->classes);
    int64_t act, score, hid;
    maxima(c, &act, &score, &hid);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor B[4], Q, Sc, X, tv, ones, pooled, y3;
    int rc;
    for (int i = 0; i < 4; i++) TRY(tens(ctx, &B[i], 1, (int64_t[]){ N * act }));
    TRY(tens(ctx, &Q, 1, (int64_t[]){ N * hid }));
    TRY(tens(ctx, &Sc, 1, (int64_t[]){ N * score }));
    /* patch embedding: conv (NCHW) -> channels last -> LayerNorm; the stream lives in B[0] */
    int64_t C = c->patch_embed.cout, h = c->grid;
    TRY(view(&B[1], 4, (int64_t[]){ N, C, h, h }, &tv));
    TRY(sd_conv2d_forward(ctx, &c->patch_embed, NULL, &tv, x));
    sd_tensor nhwc;
    TRY(view(&B[2], 4, (int64_t[]){ N, h, h, C }, &nhwc));
    TRY(sd_op_permute(ctx, &nhwc, &tv, (const int[]){ 0, 2, 3, 1 }));
    TRY(view(&B[0], 4, (int64_t[]){ N, h, h, C }, &X));
    TRY(sd_layernorm_forward(ctx, &c->patch_norm, NULL, &X, &nhwc));
    for (int s = 0; s < c->nstages; s++) {
        sd_swinv2_stage *g = &c->stages[s];
        if (g->has_down) {
            /* PatchMerging: [N,h/2,2,h/2,2,C] -> permute (0,1,3,4,2,5) -> [N·(h/2)², 4C] -> reduction, norm */
            const int64_t h2 = h / 2;
            sd_tensor x6, m6, red;
            TRY(sd_tensor_reshape(&X, 6, (int64_t[]){ N, h2, 2, h2, 2, C }, &x6));
            TRY(view(&B[1], 6, (int64_t[]){ N, h2, h2, 2, 2, C }, &m6));
            TRY(sd_op_permute(ctx, &m6, &x6, (const int[]){ 0, 1, 3, 4, 2, 5 }));
            TRY(sd_tensor_reshape(&m6, 2, (int64_t[]){ N * h2 * h2, 4 * C }, &m6));
            TRY(view(&B[2], 2, (int64_t[]){ N * h2 * h2, g->dim }, &red));
            TRY(sd_linear_forward(ctx, &g->down_red, NULL, &red, &m6));
            C = g->dim;
            h = h2;
            TRY(view(&B[0], 2, (int64_t[]){ N * h * h, C }, &X));
            TRY(sd_layernorm_forward(ctx, &g->down_norm, NULL, &X, &red));
            TRY(sd_tensor_reshape(&X, 4, (int64_t[]){ N, h, h, C }, &X));
        }
        for (int b = 0; b < g->depth; b++)
            TRY(block_forward(ctx, c, g, &g->blocks[b], &X, &B[1], &B[2], &B[3], &Q, &Sc));
    }
    /* head: norm, mean over the tokens (ones [1,HW] · x [N,HW,C] / HW), fc */
    TRY(sd_tensor_reshape(&X, 3, (int64_t[]){ N, h * h, C }, &X));
    TRY(view(&B[1], 3, (int64_t[]){ N, h * h, C }, &tv));
    TRY(sd_layernorm_forward(ctx, &c->norm, NULL, &tv, &X));
    TRY(tens(ctx, &ones, 2, (int64_t[]){ 1, h * h }));
    TRY(sd_op_fill(ctx, &ones, 1.0f));
    TRY(tens(ctx, &pooled, 3, (int64_t[]){ N, 1, C }));
    TRY(sd_op_matmul(ctx, &pooled, &ones, 0, &tv, 0, 1.0f / (float)(h * h), 0.0f));
    TRY(sd_tensor_reshape(logits, 3, (int64_t[]){ N, 1, c->classes }, &y3));
    TRY(sd_linear_forward(ctx, &c->head, NULL, &y3, &pooled));
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc ? sd_err_prefix(rc, "SwinV2 tagger") : SD_OK;
}
