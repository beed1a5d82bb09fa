/* LyCORIS weight-delta modules (see lyco.h). */
#include "nn/lyco.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "nn/nn_internal.h"

int sd_lyco_init_loha(sd_lyco *m, sd_params *reg, const char *name, int64_t out, int64_t row, int rank, float alpha)
{
    memset(m, 0, sizeof *m);
    if (rank < 1 || out < 1 || row < 1) return sd_err(SD_EINVAL, "LoHa %s: bad size", name);
    m->algo = SD_LYCO_LOHA;
    m->out = out;
    m->row = row;
    m->rank = rank;
    m->alpha = alpha > 0 ? alpha : (float)rank;
    m->multiplier = 1.0f;
    static const char *const nm[4] = { "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b" };
    int rc = SD_OK;
    for (int i = 0; i < 4 && !rc; i++) {
        int64_t s[2] = { i % 2 ? rank : out, i % 2 ? row : rank };
        rc = sd_params_add(reg, name, nm[i], 2, s, SD_PARAM_TRAINABLE, &m->p[i]);
    }
    return rc;
}

int sd_lyco_init_weights(sd_lyco *m, uint64_t seed)
{
    sd_rng g = sd_rng_key(seed, 0, m->id, SD_RNG_INIT);
    uint64_t off = 0;
    static const float std[4] = { 0.1f, 1.0f, 0.0f, 1.0f };   /* w1a, w1b, w2a, w2b */
    for (int i = 0; i < 4; i++) {
        sd_tensor *t = &m->p[i]->value;
        if (t->device != SD_DEV_CPU || t->dtype != SD_F32)
            return sd_err(SD_EUNSUPPORTED, "%s: initialised on the host in f32 only", m->p[i]->key);
        float *v = t->data;
        int64_t n = sd_tensor_numel(t);
        for (int64_t k = 0; k < n; k++) v[k] = std[i] == 0 ? 0.0f : std[i] * sd_rng_normal_at(&g, off + (uint64_t)k);
        off += (uint64_t)n;
    }
    return SD_OK;
}

static float scale_of(const sd_lyco *m) { return m->alpha / (float)m->rank; }

/* a = w1a·w1b, b = w2a·w2b */
static int factors(sd_ctx *ctx, const sd_lyco *m, sd_tensor *a, sd_tensor *b)
{
    int64_t s[2] = { m->out, m->row };
    int rc = nn_tensor(&ctx->scratch, a, 2, s);
    if (!rc) rc = nn_tensor(&ctx->scratch, b, 2, s);
    if (!rc) rc = sd_op_matmul(ctx, a, &m->p[0]->value, 0, &m->p[1]->value, 0, 1.0f, 0.0f);
    if (!rc) rc = sd_op_matmul(ctx, b, &m->p[2]->value, 0, &m->p[3]->value, 0, 1.0f, 0.0f);
    return rc;
}

int sd_lyco_delta(sd_ctx *ctx, const sd_lyco *m, sd_tensor *dw)
{
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor a, b;
    int rc = factors(ctx, m, &a, &b);
    /* ((w1a·w1b) ⊙ (w2a·w2b)) · scale */
    if (!rc) rc = sd_op_mul(ctx, &a, &a, &b);
    if (!rc) rc = sd_op_axpby(ctx, dw, scale_of(m), &a, 0.0f);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static int training(const sd_lyco *m) { return m->rt && m->rt->training; }

int sd_lyco_weight(sd_ctx *ctx, sd_lyco *m, const sd_tensor *w, sd_tensor *rw)
{
    m->skipped = 0;
    if (training(m) && m->module_dropout > 0) {
        sd_rng g = sd_rng_key(m->rt->seed, m->rt->step, m->id, SD_RNG_DROPOUT);
        m->skipped = sd_rng_uniform_at(&g, 0) < m->module_dropout;
    }
    if (sd_tensor_numel(w) != m->out * m->row)
        return sd_err(SD_EINVAL, "%s: does not fit a weight of %lld elements", m->p[0]->key, (long long)sd_tensor_numel(w));
    if (m->skipped) return sd_op_convert(ctx, rw, w);
    size_t mark = sd_arena_mark(&ctx->scratch);
    int64_t s[2] = { m->out, m->row };
    sd_tensor d, wf, rv;
    int rc = nn_tensor(&ctx->scratch, &d, 2, s);
    if (!rc) rc = sd_lyco_delta(ctx, m, &d);
    /* new = W + ΔW · multiplier, in f32, then W's dtype */
    if (!rc && rw->dtype == SD_F32) {
        rc = sd_tensor_reshape(rw, 2, s, &rv);
        if (!rc) rc = sd_op_convert(ctx, &rv, w);
        if (!rc) rc = sd_op_axpby(ctx, &rv, m->multiplier, &d, 1.0f);
    } else if (!rc) {
        rc = nn_tensor(&ctx->scratch, &wf, 2, s);
        sd_tensor wv;
        if (!rc) rc = sd_tensor_reshape(w, 2, s, &wv);
        if (!rc) rc = sd_op_convert(ctx, &wf, &wv);
        if (!rc) rc = sd_op_axpby(ctx, &wf, m->multiplier, &d, 1.0f);
        if (!rc) rc = sd_tensor_reshape(rw, 2, s, &rv);
        if (!rc) rc = sd_op_convert(ctx, &rv, &wf);
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_lyco_weight_backward(sd_ctx *ctx, sd_lyco *m, const sd_tensor *drw)
{
    if (m->skipped) return SD_OK;
    int g[4], any = 0;
    for (int i = 0; i < 4; i++) any |= g[i] = nn_has_grad(m->p[i]);
    if (!any) return SD_OK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    int64_t s[2] = { m->out, m->row };
    sd_tensor a, b, gv, t;
    int rc = factors(ctx, m, &a, &b);
    if (!rc) rc = sd_tensor_reshape(drw, 2, s, &gv);
    if (!rc) rc = nn_tensor(&ctx->scratch, &t, 2, s);
    const float f = m->multiplier * scale_of(m);
    /* t = f · G ⊙ B → w1a, w1b */
    if (!rc) rc = sd_op_mul(ctx, &t, &gv, &b);
    if (!rc) rc = sd_op_axpby(ctx, &t, f, &t, 0.0f);
    if (!rc && g[0]) rc = sd_op_matmul(ctx, &m->p[0]->grad, &t, 0, &m->p[1]->value, 1, 1.0f, 1.0f);
    if (!rc && g[1]) rc = sd_op_matmul(ctx, &m->p[1]->grad, &m->p[0]->value, 1, &t, 0, 1.0f, 1.0f);
    /* t = f · G ⊙ A → w2a, w2b */
    if (!rc) rc = sd_op_mul(ctx, &t, &gv, &a);
    if (!rc) rc = sd_op_axpby(ctx, &t, f, &t, 0.0f);
    if (!rc && g[2]) rc = sd_op_matmul(ctx, &m->p[2]->grad, &t, 0, &m->p[3]->value, 1, 1.0f, 1.0f);
    if (!rc && g[3]) rc = sd_op_matmul(ctx, &m->p[3]->grad, &m->p[2]->value, 1, &t, 0, 1.0f, 1.0f);
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

size_t sd_lyco_scratch_bytes(const sd_lyco *m)
{
    /* weight: d, a, b (a reused for a⊙b), wf; backward: a, b, t */
    return 4 * nn_bytes(m->out * m->row);
}
