/* LoRA branch math (see lora_hook.h). */
#include "nn/lora_hook.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "nn/nn_internal.h"

int sd_lora_init(sd_lora *l, sd_params *reg, const char *name, int64_t in, int64_t out, int rank,
                 float alpha, int conv, int kh, int kw, sd_conv2d_geom g, int conv_shapes)
{
    memset(l, 0, sizeof *l);
    if (rank < 1 || in < 1 || out < 1 || kh < 1 || kw < 1)
        return sd_err(SD_EINVAL, "LoRA '%s': bad rank or shape", name);
    if (!conv && (kh != 1 || kw != 1))
        return sd_err(SD_EINVAL, "LoRA '%s': a linear host has no %dx%d kernel", name, kh, kw);
    l->in = in;
    l->out = out;
    l->rank = rank;
    l->kh = kh;
    l->kw = kw;
    l->conv = conv;
    l->geom = conv ? g : sd_conv2d_geom_make(1, 0);
    l->alpha = alpha > 0 ? alpha : (float)rank;
    l->multiplier = 1.0f;
    char key[512];
    int four = conv || conv_shapes;
    snprintf(key, sizeof key, "%s.lora_down", name);
    int rc = four ? sd_params_add(reg, key, "weight", 4, (int64_t[]){ rank, in, kh, kw }, SD_PARAM_TRAINABLE, &l->down)
                  : sd_params_add(reg, key, "weight", 2, (int64_t[]){ rank, in }, SD_PARAM_TRAINABLE, &l->down);
    if (rc) return rc;
    snprintf(key, sizeof key, "%s.lora_up", name);
    rc = four ? sd_params_add(reg, key, "weight", 4, (int64_t[]){ out, rank, 1, 1 }, SD_PARAM_TRAINABLE, &l->up)
              : sd_params_add(reg, key, "weight", 2, (int64_t[]){ out, rank }, SD_PARAM_TRAINABLE, &l->up);
    return rc;
}

int sd_lora_init_tucker(sd_lora *l, sd_params *reg, const char *name, int64_t in, int64_t out, int rank, float alpha,
                        int kh, int kw, sd_conv2d_geom g)
{
    memset(l, 0, sizeof *l);
    if (rank < 1 || in < 1 || out < 1 || kh < 1 || kw < 1 || (kh == 1 && kw == 1))
        return sd_err(SD_EINVAL, "LoRA '%s': Tucker needs a rank and a k×k conv host", name);
    l->in = in;
    l->out = out;
    l->rank = rank;
    l->kh = kh;
    l->kw = kw;
    l->conv = 1;
    l->geom = g;
    l->alpha = alpha > 0 ? alpha : (float)rank;
    l->multiplier = 1.0f;
    char key[512];
    snprintf(key, sizeof key, "%s.lora_down", name);
    int rc = sd_params_add(reg, key, "weight", 4, (int64_t[]){ rank, in, 1, 1 }, SD_PARAM_TRAINABLE, &l->down);
    snprintf(key, sizeof key, "%s.lora_up", name);
    if (!rc) rc = sd_params_add(reg, key, "weight", 4, (int64_t[]){ out, rank, 1, 1 }, SD_PARAM_TRAINABLE, &l->up);
    snprintf(key, sizeof key, "%s.lora_mid", name);
    if (!rc) rc = sd_params_add(reg, key, "weight", 4, (int64_t[]){ rank, rank, kh, kw }, SD_PARAM_TRAINABLE, &l->mid);
    return rc;
}

void sd_lora_free(sd_lora *l)
{
    if (!l) return;
    free(l->host_mask);
    l->host_mask = NULL;
    l->host_mask_cap = 0;
}

int sd_lora_init_weights(sd_ctx *ctx, sd_lora *l, uint64_t seed)
{
    if (!l->down->value.data) return sd_err(SD_ESTATE, "LoRA init: registry not allocated");
    if (l->down->value.dtype != SD_F32 || l->up->value.dtype != SD_F32)
        return sd_err(SD_EINVAL, "LoRA init: weights must be f32");
    int64_t n = sd_tensor_numel(&l->down->value);
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) return sd_err(SD_ENOMEM, "LoRA init: out of memory");
    sd_rng r = sd_rng_key(seed, 0, l->id, SD_RNG_INIT);
    int rc = sd_rng_fill_uniform(&r, 0, h, (size_t)n);
    double bound = 1.0 / sqrt((double)(l->mid ? l->in : l->in * l->kh * l->kw));
    for (int64_t i = 0; i < n && !rc; i++) h[i] = (float)((2.0 * h[i] - 1.0) * bound);
    if (!rc) rc = sd_tensor_upload(&l->down->value, h, (size_t)n * sizeof *h);
    free(h);
    if (!rc && l->mid) {
        /* lora_mid: kaiming_uniform(a = sqrt(5)) over fan_in r·kh·kw, draws after down's */
        int64_t nm = sd_tensor_numel(&l->mid->value);
        float *hm = malloc((size_t)nm * sizeof *hm);
        if (!hm) return sd_err(SD_ENOMEM, "LoRA init: out of memory");
        rc = sd_rng_fill_uniform(&r, (uint64_t)n, hm, (size_t)nm);
        double bm = 1.0 / sqrt((double)(l->rank * l->kh * l->kw));
        for (int64_t i = 0; i < nm && !rc; i++) hm[i] = (float)((2.0 * hm[i] - 1.0) * bm);
        if (!rc) rc = sd_tensor_upload(&l->mid->value, hm, (size_t)nm * sizeof *hm);
        free(hm);
    }
    if (!rc) rc = sd_op_fill(ctx, &l->up->value, 0.0f);
    return rc;
}

int sd_lora_init_down_fa(sd_lora *l, uint64_t seed)
{
    if (!l->down->value.data) return sd_err(SD_ESTATE, "LoRA init: registry not allocated");
    if (l->down->value.dtype != SD_F32) return sd_err(SD_EINVAL, "LoRA init: weights must be f32");
    int64_t n = sd_tensor_numel(&l->down->value);
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) return sd_err(SD_ENOMEM, "LoRA init: out of memory");
    sd_rng r = sd_rng_key(seed, 0, l->id, SD_RNG_INIT);
    int rc = sd_rng_fill_normal(&r, 0, h, (size_t)n);
    double sd = sqrt(2.0 / (double)(l->in + l->rank));
    for (int64_t i = 0; i < n && !rc; i++) h[i] = (float)(h[i] * sd);
    if (!rc) rc = sd_tensor_upload(&l->down->value, h, (size_t)n * sizeof *h);
    free(h);
    return rc;
}

int sd_lora_init_weights_fa(sd_ctx *ctx, sd_lora *l, uint64_t seed)
{
    if (l->up->value.dtype != SD_F32) return sd_err(SD_EINVAL, "LoRA init: weights must be f32");
    int rc = sd_lora_init_down_fa(l, seed);
    return rc ? rc : sd_op_fill(ctx, &l->up->value, 0.0f);
}

int sd_lora_merge(sd_ctx *ctx, const sd_lora *l, sd_tensor *w, float multiplier)
{
    if (l->mid) return sd_err(SD_EUNSUPPORTED, "LoRA merge %s: a Tucker module (lora_mid) is merged from its file", l->down->key);
    int64_t k = l->in * l->kh * l->kw;
    if (w->dtype != SD_F32 || sd_tensor_numel(w) != l->out * k || w->shape[0] != l->out)
        return sd_err(SD_EINVAL, "LoRA merge %s: base weight must be f32 [%lld, %lld...]", l->down->key,
                      (long long)l->out, (long long)l->in);
    sd_tensor w2, u2, d2;
    int rc = sd_tensor_reshape(w, 2, (int64_t[]){ l->out, k }, &w2);
    if (!rc) rc = sd_tensor_reshape(&l->up->value, 2, (int64_t[]){ l->out, l->rank }, &u2);
    if (!rc) rc = sd_tensor_reshape(&l->down->value, 2, (int64_t[]){ l->rank, k }, &d2);
    if (!rc) rc = sd_op_matmul(ctx, &w2, &u2, 0, &d2, 0, multiplier * l->alpha / (float)l->rank, 1.0f);
    return rc;
}

static int training(const sd_lora *l) { return l->rt && l->rt->training; }

/* z shape from the host output shape. */
static void z_shape(const sd_lora *l, const sd_tensor *y, int *nd, int64_t *s)
{
    *nd = y->ndim;
    memcpy(s, y->shape, sizeof(int64_t) * (size_t)y->ndim);
    if (l->conv) s[1] = l->rank;
    else s[y->ndim - 1] = l->rank;
}

/* Mask shape: full z (neuron dropout) or one value per (sample, rank) broadcast over the rest. */
static int mask_kind(const sd_lora *l)
{
    if (!training(l)) return 0;
    if (l->lyco_drop) return l->lyco_drop == SD_LORA_DROP_LYCO_BYPASS && l->rank_dropout > 0 ? 1 : 0;
    if (l->dropout > 0) return 2;
    if (l->rank_dropout > 0) return 1;
    return 0;
}

/* LyCORIS's output mask on up(zf): 1 one flag per output channel (rank_dropout, bypass_mode off),
   2 one value per element of y (dropout, bypass_mode on), 0 none. */
static int out_kind(const sd_lora *l)
{
    if (!training(l) || !l->lyco_drop) return 0;
    if (l->lyco_drop == SD_LORA_DROP_LYCO) return l->rank_dropout > 0 ? 1 : 0;
    return l->dropout > 0 ? 2 : 0;
}

size_t sd_lora_saved_bytes(const sd_lora *l, int64_t y_numel, int64_t rows)
{
    int64_t zn = y_numel / l->out * l->rank;
    int mk = mask_kind(l), ok = out_kind(l);
    return nn_bytes(zn) + (mk == 2 ? nn_bytes(zn) : mk == 1 ? nn_bytes(rows * l->rank) : 0) +
           (ok == 1 ? nn_bytes(l->out) : ok == 2 ? nn_bytes(y_numel) : 0) + (l->dy_unit > 0 ? nn_bytes(l->rank) : 0);
}

size_t sd_lora_scratch_bytes(const sd_lora *l, int64_t y_numel, int64_t rows)
{
    int64_t zn = y_numel / l->out * l->rank;
    /* forward: z (+ zf and mask when not saving); backward: dzf and dz (DyLoRA: and the whole-rank
       weight gradients before the trained rows are taken from them) */
    size_t dy = l->dy_unit > 0 ? nn_bytes(sd_tensor_numel(&l->up->value)) + nn_bytes(sd_tensor_numel(&l->down->value)) : 0;
    /* LyCORIS output masks: up(zf) before masking (forward), the masked dy (backward) */
    size_t om = out_kind(l) ? 2 * nn_bytes(y_numel) : 0;   /* (and the f16 staging of a mask, at most y-sized) */
    /* Tucker: down(x) at the input's size, H <= Ho·stride + kh, and its gradient */
    if (l->mid) om += 2 * nn_bytes(zn * (l->geom.stride + l->kh) * (l->geom.stride + l->kw));
    return 2 * nn_bytes(zn) + sd_lora_saved_bytes(l, y_numel, rows) + dy + om;
}

int sd_lora_dy_draw(const sd_lora *l)
{
    /* random.randint(0, lora_dim - 1), then down to a multiple of unit */
    sd_rng g = sd_rng_key(l->rt->seed, l->rt->step, l->id, SD_RNG_DYLORA);
    int tr = (int)sd_rng_below_at(&g, 0, (uint64_t)l->rank);
    return tr - tr % l->dy_unit;
}

/* DyLoRA: the trained rows of this call and the factor sqrt(rank / (tr + unit)); the row mask
 * saved in a (allocated whether training or not, so the arena use matches the plan). */
static int dy_prepare(sd_ctx *ctx, sd_lora *l, sd_arena *a, float *f)
{
    int tr = training(l) ? sd_lora_dy_draw(l) : l->rank - l->dy_unit;
    l->dy_tr = tr;
    *f = (float)((double)*f * sqrt((double)l->rank / (double)(tr + l->dy_unit)));
    sd_tensor win;
    int rc = nn_tensor(a, &l->dy_rows, 1, (int64_t[]){ l->rank });
    if (!rc) rc = sd_op_fill(ctx, &l->dy_rows, 0.0f);
    if (!rc) rc = sd_tensor_narrow0(&l->dy_rows, tr, l->dy_unit, &win);
    if (!rc) rc = sd_op_fill(ctx, &win, 1.0f);
    return rc;
}

#define F16_ONE ((uint16_t)0x3C00)

static float *host_buf(sd_lora *l, int64_t n)
{
    if ((size_t)n > l->host_mask_cap) {
        free(l->host_mask);
        l->host_mask = malloc((size_t)n * sizeof(float));
        l->host_mask_cap = l->host_mask ? (size_t)n : 0;
    }
    return l->host_mask;
}

/* LyCORIS's output mask (out_kind): [1, out, 1, 1] / [1, …, out] keep flags, or y's shape with
   nn.Dropout's values (0 or 1 / (1 - p)). */
static int make_omask(sd_ctx *ctx, sd_lora *l, sd_arena *a, const sd_tensor *y, int kind)
{
    int nd = y->ndim;
    int64_t ms[SD_MAX_DIMS];
    if (kind == 2) {
        memcpy(ms, y->shape, sizeof(int64_t) * (size_t)nd);
    } else {
        for (int d = 0; d < nd; d++) ms[d] = 1;
        ms[l->conv ? 1 : nd - 1] = l->out;
    }
    int rc = nn_tensor(a, &l->omask, nd, ms);
    if (rc) return rc;
    int64_t mn = sd_tensor_numel(&l->omask);
    float *m = host_buf(l, mn);
    if (!m) return sd_err(SD_ENOMEM, "LoRA mask: out of memory");
    uint16_t *h = (uint16_t *)m;
    sd_rng g = sd_rng_key(l->rt->seed, l->rt->step, l->id, SD_RNG_DROPOUT);
    if (kind == 1) {
        /* make_weight: torch.rand(out) > rank_dropout on the rows of ΔW */
        for (int64_t o = 0; o < mn; o++)
            h[o] = (l->drop_keep ? l->drop_keep[o] != 0 : sd_rng_uniform_at(&g, 1 + (uint64_t)o) > l->rank_dropout)
                       ? F16_ONE : 0;
        return nn_mask_from_flags(ctx, &l->omask, h, 1.0f);
    }
    /* nn.Dropout(p): kept with probability 1 - p, scaled by 1 / (1 - p) */
    const uint64_t off = 1 + (uint64_t)l->rank;
    for (int64_t e = 0; e < mn; e++)
        h[e] = (l->drop_keep ? l->drop_keep[l->rank + e] != 0 : sd_rng_uniform_at(&g, off + (uint64_t)e) >= l->dropout)
                   ? F16_ONE : 0;
    return nn_mask_from_flags(ctx, &l->omask, h, 1.0f / (1.0f - l->dropout));
}

static int make_mask(sd_ctx *ctx, sd_lora *l, sd_arena *a, const sd_tensor *z, int kind, float f)
{
    int64_t rows = z->shape[0], r = l->rank, zn = sd_tensor_numel(z);
    int nd = z->ndim;
    int64_t ms[SD_MAX_DIMS];
    if (kind == 2) {
        memcpy(ms, z->shape, sizeof(int64_t) * (size_t)nd);
    } else {
        for (int d = 0; d < nd; d++) ms[d] = 1;
        ms[0] = rows;
        ms[l->conv ? 1 : nd - 1] = r;
    }
    int rc = nn_tensor(a, &l->mask, nd, ms);
    if (rc) return rc;
    int64_t mn = sd_tensor_numel(&l->mask);
    float *m = host_buf(l, mn);
    if (!m) return sd_err(SD_ENOMEM, "LoRA mask: out of memory");
    sd_rng g = sd_rng_key(l->rt->seed, l->rt->step, l->id, SD_RNG_DROPOUT);
    if (l->lyco_drop) {
        /* LyCORIS bypass: torch.rand(lora_dim) > p, one mask for the batch, not rescaled */
        uint16_t *h = (uint16_t *)m;
        for (int64_t e = 0; e < mn; e++) {
            int64_t j = e % r;
            int keep = l->drop_keep ? l->drop_keep[j] != 0 : sd_rng_uniform_at(&g, 1 + (uint64_t)j) > l->rank_dropout;
            h[e] = keep ? F16_ONE : 0;
        }
        return nn_mask_from_flags(ctx, &l->mask, h, f);
    }
    float rs = 1.0f;
    if (l->rank_dropout > 0) rs = 1.0f / (1.0f - l->rank_dropout);
    float ns = l->dropout > 0 ? 1.0f / (1.0f - l->dropout) : 1.0f;
    /* value 0: module dropout; 1 .. rows·r: rank mask; then the neuron mask */
    uint64_t off_rank = 1, off_neuron = 1 + (uint64_t)(rows * r);
    /* index of (sample b, rank j) and element e of z */
    int64_t per_b = zn / rows;
    for (int64_t e = 0; e < mn; e++) {
        int64_t b, j;
        if (kind == 2) {
            b = e / per_b;
            j = l->conv ? (e % per_b) / (per_b / r) : e % r;
        } else {
            b = e / r;
            j = e % r;
        }
        float v = f;
        if (l->rank_dropout > 0)
            v *= sd_rng_uniform_at(&g, off_rank + (uint64_t)(b * r + j)) >= l->rank_dropout ? rs : 0.0f;
        if (kind == 2) v *= sd_rng_uniform_at(&g, off_neuron + (uint64_t)e) >= l->dropout ? ns : 0.0f;
        m[e] = v;
    }
    return sd_tensor_upload(&l->mask, m, (size_t)mn * sizeof(float));
}

int sd_lora_forward(sd_ctx *ctx, sd_lora *l, sd_arena *save, sd_tensor *y, const sd_tensor *x)
{
    l->skipped = 0;
    if (training(l) && l->module_dropout > 0) {
        sd_rng g = sd_rng_key(l->rt->seed, l->rt->step, l->id, SD_RNG_DROPOUT);
        l->skipped = sd_rng_uniform_at(&g, 0) < l->module_dropout;
    }
    float f = l->multiplier * l->alpha / (float)l->rank;
    int kind = mask_kind(l);
    int nd;
    int64_t zs[SD_MAX_DIMS];
    z_shape(l, y, &nd, zs);
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_arena *A = save ? save : &ctx->scratch;
    /* saved tensors first (fixed order, always allocated so the arena use matches the plan) */
    int rc = l->dy_unit > 0 ? dy_prepare(ctx, l, A, &f) : SD_OK;
    l->factor = f;
    if (!rc) rc = nn_tensor(A, &l->zf, nd, zs);
    if (!rc && kind) rc = make_mask(ctx, l, A, &l->zf, kind, f);
    else l->mask.data = NULL;
    const int okind = out_kind(l);
    if (!rc && okind) rc = make_omask(ctx, l, A, y, okind);
    else l->omask.data = NULL;
    if (rc || l->skipped) goto out;
    sd_tensor z;
    rc = nn_tensor(&ctx->scratch, &z, nd, zs);
    if (rc) goto out;
    if (l->mid) {
        /* Tucker: z = mid(down(x)), down a 1×1 conv */
        sd_tensor z0;
        rc = nn_tensor(&ctx->scratch, &z0, 4, (int64_t[]){ x->shape[0], l->rank, x->shape[2], x->shape[3] });
        if (!rc) rc = sd_op_conv2d(ctx, &z0, x, &l->down->value, NULL, sd_conv2d_geom_make(1, 0));
        if (!rc) rc = sd_op_conv2d(ctx, &z, &z0, &l->mid->value, NULL, l->geom);
    } else if (l->conv) {
        rc = sd_op_conv2d(ctx, &z, x, &l->down->value, NULL, l->geom);
    } else {
        sd_tensor w2;
        rc = nn_view2(&l->down->value, &w2);
        if (!rc) rc = sd_op_linear(ctx, &z, x, &w2, NULL);
    }
    if (!rc) rc = kind ? sd_op_mul(ctx, &l->zf, &z, &l->mask) : sd_op_axpby(ctx, &l->zf, f, &z, 0.0f);
    if (rc) goto out;
    /* y += up(zf) (LyCORIS output mask: t = up(zf), y += t ⊙ omask) */
    sd_tensor up2, t, *yt = y;
    rc = nn_view2(&l->up->value, &up2);
    if (!rc && okind) {
        rc = nn_tensor(&ctx->scratch, &t, y->ndim, y->shape);
        yt = &t;
    }
    if (rc) goto out;
    const float beta = okind ? 0.0f : 1.0f;
    if (l->conv) {
        int64_t n = y->shape[0], hw = y->shape[2] * y->shape[3];
        sd_tensor yv, zv;
        rc = sd_tensor_reshape(yt, 3, (int64_t[]){ n, l->out, hw }, &yv);
        if (!rc) rc = sd_tensor_reshape(&l->zf, 3, (int64_t[]){ n, l->rank, hw }, &zv);
        if (!rc) rc = sd_op_matmul(ctx, &yv, &up2, 0, &zv, 0, 1.0f, beta);
    } else {
        sd_tensor yv, zv;
        rc = sd_tensor_reshape(yt, 2, (int64_t[]){ -1, l->out }, &yv);
        if (!rc) rc = sd_tensor_reshape(&l->zf, 2, (int64_t[]){ -1, l->rank }, &zv);
        if (!rc) rc = sd_op_matmul(ctx, &yv, &zv, 0, &up2, 1, 1.0f, beta);
    }
    if (!rc && okind) rc = sd_op_mul_bwd(ctx, y, NULL, &t, &t, &l->omask);
out:
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_lora_backward(sd_ctx *ctx, sd_lora *l, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x)
{
    if (l->skipped) return SD_OK;
    if (!l->zf.data) return sd_err(SD_ESTATE, "LoRA backward without a training forward");
    sd_tensor *dup = l->up->grad.data ? &l->up->grad : NULL;
    sd_tensor *ddown = l->down->grad.data ? &l->down->grad : NULL;
    if (!dx && !ddown && !dup && !(l->mid && l->mid->grad.data)) return SD_OK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor dzf, dz, dym, up_w = l->up->value, dup_v, down_w = l->down->value, ddown_v;
    sd_tensor *gup = dup, *gdown = ddown, tup, tdown;   /* DyLoRA: whole-rank gradients first */
    int rc = SD_OK;
    if (l->dy_unit > 0 && dup) {
        rc = nn_tensor(&ctx->scratch, &tup, up_w.ndim, up_w.shape);
        if (!rc) rc = sd_op_fill(ctx, &tup, 0.0f);
        dup = &tup;
    }
    if (!rc && l->dy_unit > 0 && ddown) {
        rc = nn_tensor(&ctx->scratch, &tdown, down_w.ndim, down_w.shape);
        if (!rc) rc = sd_op_fill(ctx, &tdown, 0.0f);
        ddown = &tdown;
    }
    if (!rc && l->omask.data) {
        /* LyCORIS output mask: the branch sees dy ⊙ omask */
        rc = nn_tensor(&ctx->scratch, &dym, dy->ndim, dy->shape);
        if (!rc) rc = sd_op_mul(ctx, &dym, dy, &l->omask);
        dy = &dym;
    }
    if (!rc) rc = nn_tensor(&ctx->scratch, &dzf, l->zf.ndim, l->zf.shape);
    if (!rc) rc = nn_tensor(&ctx->scratch, &dz, l->zf.ndim, l->zf.shape);
    if (!rc) rc = sd_op_fill(ctx, &dzf, 0.0f);
    if (!rc) rc = sd_op_fill(ctx, &dz, 0.0f);
    if (rc) goto out;
    if (l->conv) {
        /* up is a 1×1 conv over zf */
        rc = sd_op_conv2d_bwd(ctx, &dzf, dup, NULL, dy, &l->zf, &up_w, sd_conv2d_geom_make(1, 0));
    } else {
        sd_tensor u2;
        rc = nn_view2(&up_w, &u2);
        if (!rc && dup) rc = nn_view2(dup, &dup_v);
        if (!rc) rc = sd_op_linear_bwd(ctx, &dzf, dup ? &dup_v : NULL, NULL, dy, &l->zf, &u2);
    }
    if (rc) goto out;
    sd_tensor *dmid = l->mid && l->mid->grad.data ? &l->mid->grad : NULL;
    if (!dx && !ddown && !dmid) goto out;
    rc = l->mask.data ? sd_op_mul_bwd(ctx, &dz, NULL, &dzf, &dzf, &l->mask)
                      : sd_op_axpby(ctx, &dz, l->factor, &dzf, 0.0f);
    if (rc) goto out;
    if (l->mid) {
        /* Tucker: z0 = down(x) recomputed; mid's backward, then down's (1×1) */
        sd_tensor z0, dz0;
        int64_t zs0[4] = { x->shape[0], l->rank, x->shape[2], x->shape[3] };
        rc = nn_tensor(&ctx->scratch, &z0, 4, zs0);
        if (!rc) rc = nn_zeros(ctx, &ctx->scratch, &dz0, 4, zs0);
        if (!rc) rc = sd_op_conv2d(ctx, &z0, x, &down_w, NULL, sd_conv2d_geom_make(1, 0));
        if (!rc) rc = sd_op_conv2d_bwd(ctx, &dz0, dmid, NULL, &dz, &z0, &l->mid->value, l->geom);
        if (!rc && (dx || ddown)) rc = sd_op_conv2d_bwd(ctx, dx, ddown, NULL, &dz0, x, &down_w, sd_conv2d_geom_make(1, 0));
    } else if (l->conv) {
        rc = sd_op_conv2d_bwd(ctx, dx, ddown, NULL, &dz, x, &down_w, l->geom);
    } else {
        sd_tensor d2;
        rc = nn_view2(&down_w, &d2);
        if (!rc && ddown) rc = nn_view2(ddown, &ddown_v);
        if (!rc) rc = sd_op_linear_bwd(ctx, dx, ddown ? &ddown_v : NULL, NULL, &dz, x, &d2);
    }
out:
    if (!rc && l->dy_unit > 0 && (gup || gdown)) {
        /* only the rows tr .. tr+unit-1 get a gradient (the reference's requires_grad) */
        int nu = gup ? gup->ndim : 2, ndn = gdown ? gdown->ndim : 2;
        int64_t su[4] = { 1, l->rank, 1, 1 }, sdn[4] = { l->rank, 1, 1, 1 };
        sd_tensor mu, md;
        rc = sd_tensor_reshape(&l->dy_rows, nu, su, &mu);
        if (!rc) rc = sd_tensor_reshape(&l->dy_rows, ndn, sdn, &md);
        if (!rc && gup) rc = sd_op_mul_bwd(ctx, gup, NULL, &tup, &tup, &mu);
        if (!rc && gdown) rc = sd_op_mul_bwd(ctx, gdown, NULL, &tdown, &tdown, &md);
        for (int j = l->dy_tr; !rc && l->dy_touched && j < l->dy_tr + l->dy_unit && j < l->rank; j++)
            l->dy_touched[j] = 1;
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}
