/* Internal helpers shared by the lib/nn sources. */
#ifndef SD_NN_INTERNAL_H
#define SD_NN_INTERNAL_H

#include <string.h>

#include "base/error.h"
#include "nn/params.h"
#include "tensor/ops.h"

/* Arena bytes of an f32 tensor of n elements (arenas hand out 64-byte aligned blocks). */
static inline size_t nn_bytes(int64_t n)
{
    return ((size_t)n * sizeof(float) + 63) & ~(size_t)63;
}

static inline size_t nn_max(size_t a, size_t b) { return a > b ? a : b; }

/* f32 tensor from an arena, with a message naming the arena when it is exhausted. */
static inline int nn_tensor(sd_arena *a, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = sd_arena_tensor(a, t, SD_F32, ndim, shape);
    if (rc) return sd_err_prefix(rc, "layer activations");
    return SD_OK;
}

/* mask = scale · flags, from host f16 keep flags (0x0000 / 0x3C00, exact in f16): uploaded as an f16
 * tensor in ctx->scratch (released again; at most nn_bytes(numel) there) and converted by the op, so
 * every backend (the f64 test one too) sees the values through its own convert. */
static inline int nn_mask_from_flags(sd_ctx *ctx, sd_tensor *mask, const uint16_t *flags, float scale)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor h;
    int rc = sd_arena_tensor(&ctx->scratch, &h, SD_F16, mask->ndim, mask->shape);
    if (rc) rc = sd_err_prefix(rc, "layer activations");
    if (!rc) rc = sd_tensor_upload(&h, flags, (size_t)sd_tensor_numel(mask) * sizeof(uint16_t));
    if (!rc) rc = sd_op_convert(ctx, mask, &h);
    if (!rc && scale != 1.0f) rc = sd_op_axpby(ctx, mask, scale, mask, 0.0f);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

/* Zeroed f32 tensor from an arena (gradient temporaries). */
static inline int nn_zeros(sd_ctx *ctx, sd_arena *a, sd_tensor *t, int ndim, const int64_t *shape)
{
    int rc = nn_tensor(a, t, ndim, shape);
    return rc ? rc : sd_op_fill(ctx, t, 0.0f);
}

/* [o, i] view of a weight stored as [o, i] or [o, i, 1, 1]. */
static inline int nn_view2(const sd_tensor *w, sd_tensor *out)
{
    if (w->ndim == 2) { *out = *w; return SD_OK; }
    return sd_tensor_reshape(w, 2, (const int64_t[]){ w->shape[0], w->shape[1] }, out);
}

/* A sub-arena carved from ctx->scratch (inference and checkpoint recomputation of a block:
 * the block runs its training forward into this throwaway region). */
static inline int nn_carve(sd_ctx *ctx, sd_arena *sub, size_t bytes)
{
    memset(sub, 0, sizeof *sub);
    sub->device = ctx->scratch.device;
    void *p = sd_arena_alloc(&ctx->scratch, bytes ? bytes : 64);
    if (!p)
        return sd_err(SD_ENOMEM, "scratch arena exhausted (need %zu bytes for block activations, %zu of %zu in use)",
                      bytes, ctx->scratch.used, ctx->scratch.cap);
    sub->base = p;
    sub->cap = bytes ? bytes : 64;
    return SD_OK;
}

/* 1 when the parameter receives a gradient (trainable and allocated). */
static inline int nn_has_grad(const struct sd_param *p) { return sd_param_has_grad(p); }

#define NN_TRY(x) do { rc = (x); if (rc) goto out; } while (0)

#endif
