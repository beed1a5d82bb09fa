/* LyCORIS weight-delta modules (see lyco.h). */
#include "nn/lyco.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

int sd_lyco_init_loha_tucker(sd_lyco *m, sd_params *reg, const char *name, int64_t out, int64_t in, int kh, int kw,
                             int rank, float alpha)
{
    memset(m, 0, sizeof *m);
    if (rank < 1 || out < 1 || in < 1 || kh < 1 || kw < 1 || (kh == 1 && kw == 1))
        return sd_err(SD_EINVAL, "LoHa %s: Tucker needs a rank and a k×k conv", name);
    m->algo = SD_LYCO_LOHA;
    m->tucker = 1;
    m->out = out;
    m->in = in;
    m->kk = (int64_t)kh * kw;
    m->row = in * m->kk;
    m->rank = rank;
    m->alpha = alpha > 0 ? alpha : (float)rank;
    m->multiplier = 1.0f;
    static const char *const nm[6] = { "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2" };
    int rc = SD_OK;
    for (int i = 0; i < 6 && !rc; i++) {
        if (i < 4) rc = sd_params_add(reg, name, nm[i], 2, (int64_t[]){ rank, i % 2 ? in : out }, SD_PARAM_TRAINABLE, &m->p[i]);
        else rc = sd_params_add(reg, name, nm[i], 4, (int64_t[]){ rank, rank, kh, kw }, SD_PARAM_TRAINABLE, &m->p[i]);
    }
    return rc;
}

/* Tucker factor T [o, in·kk] = Σ wa[p, o] t[p, q, k] wb[q, i]: tp = t as [p, k, q]; M = tp · wb [p·k, in];
   Mp = M as [p, in, k]; T = waᵀ · Mp. tp and Mp (scratch) are returned for the backward. */
static int tucker_build(sd_ctx *ctx, const sd_lyco *m, int which, sd_tensor *T, sd_tensor *tp, sd_tensor *mp)
{
    const int64_t r = m->rank, K = m->kk, in = m->in;
    const sd_tensor *t = &m->p[4 + which]->value, *wa = &m->p[2 * which]->value, *wb = &m->p[2 * which + 1]->value;
    sd_tensor tv, tpv, M, Mv, mpv, t2;
    int rc = nn_tensor(&ctx->scratch, tp, 2, (int64_t[]){ r * K, r });
    if (!rc) rc = sd_tensor_reshape(t, 3, (int64_t[]){ r, r, K }, &tv);
    if (!rc) rc = sd_tensor_reshape(tp, 3, (int64_t[]){ r, K, r }, &tpv);
    if (!rc) rc = sd_op_permute(ctx, &tpv, &tv, (const int[]){ 0, 2, 1 });
    if (!rc) rc = nn_tensor(&ctx->scratch, &M, 2, (int64_t[]){ r * K, in });
    if (!rc) rc = sd_op_matmul(ctx, &M, tp, 0, wb, 0, 1.0f, 0.0f);
    if (!rc) rc = nn_tensor(&ctx->scratch, mp, 2, (int64_t[]){ r, in * K });
    if (!rc) rc = sd_tensor_reshape(&M, 3, (int64_t[]){ r, K, in }, &Mv);
    if (!rc) rc = sd_tensor_reshape(mp, 3, (int64_t[]){ r, in, K }, &mpv);
    if (!rc) rc = sd_op_permute(ctx, &mpv, &Mv, (const int[]){ 0, 2, 1 });
    if (!rc) rc = sd_tensor_reshape(T, 2, (int64_t[]){ m->out, m->row }, &t2);
    if (!rc) rc = sd_op_matmul(ctx, &t2, wa, 1, mp, 0, 1.0f, 0.0f);
    return rc;
}

/* gradients of factor `which` (t, wa, wb) += from dT [o, in·kk] */
static int tucker_backward(sd_ctx *ctx, sd_lyco *m, int which, const sd_tensor *dT)
{
    const int64_t r = m->rank, K = m->kk, in = m->in;
    sd_param *pt = m->p[4 + which], *pa = m->p[2 * which], *pb = m->p[2 * which + 1];
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor T, tp, mp, dmp, dM, dmpv, dMv, dtp, dtpv, dtv;
    int rc = nn_tensor(&ctx->scratch, &T, 2, (int64_t[]){ m->out, m->row });
    if (!rc) rc = tucker_build(ctx, m, which, &T, &tp, &mp);
    /* dwa += Mp · dTᵀ; dMp = wa · dT */
    if (!rc && nn_has_grad(pa)) rc = sd_op_matmul(ctx, &pa->grad, &mp, 0, dT, 1, 1.0f, 1.0f);
    if (!rc) rc = nn_tensor(&ctx->scratch, &dmp, 2, (int64_t[]){ r, in * K });
    if (!rc) rc = sd_op_matmul(ctx, &dmp, &pa->value, 0, dT, 0, 1.0f, 0.0f);
    /* dM [p·k, in] = permute back */
    if (!rc) rc = nn_zeros(ctx, &ctx->scratch, &dM, 2, (int64_t[]){ r * K, in });
    if (!rc) rc = sd_tensor_reshape(&dmp, 3, (int64_t[]){ r, in, K }, &dmpv);
    if (!rc) rc = sd_tensor_reshape(&dM, 3, (int64_t[]){ r, K, in }, &dMv);
    if (!rc) rc = sd_op_permute_bwd(ctx, &dMv, &dmpv, (const int[]){ 0, 2, 1 });
    /* dwb += tpᵀ · dM; dtp = dM · wbᵀ, dt = permute back */
    if (!rc && nn_has_grad(pb)) rc = sd_op_matmul(ctx, &pb->grad, &tp, 1, &dM, 0, 1.0f, 1.0f);
    if (!rc && nn_has_grad(pt)) {
        rc = nn_tensor(&ctx->scratch, &dtp, 2, (int64_t[]){ r * K, r });
        if (!rc) rc = sd_op_matmul(ctx, &dtp, &dM, 0, &pb->value, 1, 1.0f, 0.0f);
        if (!rc) rc = sd_tensor_reshape(&dtp, 3, (int64_t[]){ r, K, r }, &dtpv);
        if (!rc) rc = sd_tensor_reshape(&pt->grad, 3, (int64_t[]){ r, r, K }, &dtv);
        if (!rc) rc = sd_op_permute_bwd(ctx, &dtv, &dtpv, (const int[]){ 0, 2, 1 });
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static float scale_of(const sd_lyco *m) { return m->alpha / (float)m->rank; }

void sd_lyco_factorization(int64_t dim, int factor, int64_t *mo, int64_t *no)
{
    int64_t m, n;
    if (factor > 0 && dim % factor == 0) {
        m = factor;
        n = dim / factor;
        if (m > n) { int64_t t = m; m = n; n = t; }
        *mo = m;
        *no = n;
        return;
    }
    int64_t f = factor < 0 ? dim : factor;
    m = 1;
    n = dim;
    int64_t length = m + n;
    while (m < n) {
        int64_t nm = m + 1;
        while (dim % nm != 0) nm++;
        int64_t nn = dim / nm;
        if (nm + nn > length || nm > f) break;
        m = nm;
        n = nn;
    }
    if (m > n) { int64_t t = m; m = n; n = t; }
    *mo = m;
    *no = n;
}

int sd_lyco_init_lokr(sd_lyco *m, sd_params *reg, const char *name, int64_t out, int64_t in, int kh, int kw, int conv4d,
                      int rank, float alpha, int factor, int decompose_both, int full_matrix, int unbalanced)
{
    memset(m, 0, sizeof *m);
    if (rank < 1 || out < 1 || in < 1) return sd_err(SD_EINVAL, "LoKr %s: bad size", name);
    m->algo = SD_LYCO_LOKR;
    m->out = out;
    m->row = in * kh * kw;
    m->rank = rank;
    m->multiplier = 1.0f;
    sd_lyco_lokr_shape *k = &m->k;
    int64_t l_out, k_out, m_in, n_in;
    sd_lyco_factorization(in, factor, &m_in, &n_in);
    sd_lyco_factorization(out, factor, &l_out, &k_out);
    if (unbalanced) { int64_t t = l_out; l_out = k_out; k_out = t; }
    k->a = l_out;
    k->b = k_out;
    k->c = m_in;
    k->d = n_in;
    /* the conditions compare the int rank with a float half */
    k->w1_factored = decompose_both && (double)rank < (double)(k->a > k->c ? k->a : k->c) / 2 && !full_matrix;
    k->w2_factored = (double)rank < (double)(k->b > k->d ? k->b : k->d) / 2 && !full_matrix;
    /* alpha 0: rank; both full: scale 1 */
    m->alpha = alpha > 0 ? alpha : (float)rank;
    if (!k->w1_factored && !k->w2_factored) m->alpha = (float)rank;
    int64_t dkk = k->d * kh * kw;
    int rc;
    if (k->w1_factored) {
        rc = sd_params_add(reg, name, "lokr_w1_a", 2, (int64_t[]){ k->a, rank }, SD_PARAM_TRAINABLE, &m->p[0]);
        if (!rc) rc = sd_params_add(reg, name, "lokr_w1_b", 2, (int64_t[]){ rank, k->c }, SD_PARAM_TRAINABLE, &m->p[1]);
    } else {
        rc = sd_params_add(reg, name, "lokr_w1", 2, (int64_t[]){ k->a, k->c }, SD_PARAM_TRAINABLE, &m->p[0]);
    }
    if (rc) return rc;
    if (k->w2_factored) {
        rc = sd_params_add(reg, name, "lokr_w2_a", 2, (int64_t[]){ k->b, rank }, SD_PARAM_TRAINABLE, &m->p[2]);
        if (!rc) rc = sd_params_add(reg, name, "lokr_w2_b", 2, (int64_t[]){ rank, dkk }, SD_PARAM_TRAINABLE, &m->p[3]);
    } else if (conv4d) {
        rc = sd_params_add(reg, name, "lokr_w2", 4, (int64_t[]){ k->b, k->d, kh, kw }, SD_PARAM_TRAINABLE, &m->p[2]);
    } else {
        rc = sd_params_add(reg, name, "lokr_w2", 2, (int64_t[]){ k->b, k->d }, SD_PARAM_TRAINABLE, &m->p[2]);
    }
    return rc;
}

static int init_lokr(sd_lyco *m, uint64_t seed)
{
    sd_rng g = sd_rng_key(seed, 0, m->id, SD_RNG_INIT);
    uint64_t off = 0;
    /* w1 (or w1_a, w1_b) and w2_a kaiming-uniform; w2 / w2_b zeros */
    for (int i = 0; i < 4; i++) {
        if (!m->p[i]) continue;
        sd_tensor *t = &m->p[i]->value;
        if (t->device != SD_DEV_CPU || t->dtype != SD_F32)
            return sd_err(SD_EUNSUPPORTED, "%s: initialised on the host in f32 only", m->p[i]->key);
        float *v = t->data;
        int64_t n = sd_tensor_numel(t);
        int zero = (i == 2 && !m->k.w2_factored) || i == 3;
        int64_t fan_in = n / t->shape[0];
        double bound = 1.0 / sqrt((double)fan_in);
        for (int64_t e = 0; e < n; e++)
            v[e] = zero ? 0.0f : (float)((2.0 * sd_rng_uniform_at(&g, off + (uint64_t)e) - 1.0) * bound);
        off += (uint64_t)n;
    }
    return SD_OK;
}

int sd_lyco_init_weights(sd_lyco *m, uint64_t seed)
{
    if (m->algo == SD_LYCO_LOKR) return init_lokr(m, seed);
    sd_rng g = sd_rng_key(seed, 0, m->id, SD_RNG_INIT);
    uint64_t off = 0;
    static const float std[6] = { 0.1f, 1.0f, 0.0f, 1.0f, 0.1f, 0.1f };   /* w1a, w1b, w2a, w2b (t1, t2) */
    for (int i = 0; i < (m->tucker ? 6 : 4); i++) {
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

/* a = w1a·w1b, b = w2a·w2b */
static int factors(sd_ctx *ctx, const sd_lyco *m, sd_tensor *a, sd_tensor *b)
{
    int64_t s[2] = { m->out, m->row };
    int rc = nn_tensor(&ctx->scratch, a, 2, s);
    if (!rc) rc = nn_tensor(&ctx->scratch, b, 2, s);
    if (m->tucker) {
        /* the temporaries of each build are released (a and b stay below them) */
        size_t mark = sd_arena_mark(&ctx->scratch);
        sd_tensor tp, mp;
        if (!rc) rc = tucker_build(ctx, m, 0, a, &tp, &mp);
        sd_arena_reset(&ctx->scratch, mark);
        if (!rc) rc = tucker_build(ctx, m, 1, b, &tp, &mp);
        sd_arena_reset(&ctx->scratch, mark);
        return rc;
    }
    if (!rc) rc = sd_op_matmul(ctx, a, &m->p[0]->value, 0, &m->p[1]->value, 0, 1.0f, 0.0f);
    if (!rc) rc = sd_op_matmul(ctx, b, &m->p[2]->value, 0, &m->p[3]->value, 0, 1.0f, 0.0f);
    return rc;
}

/* LoKr: w1 [a·c, 1] and w2 [b·dkk, 1] (the products when factored; views of the parameters else) */
static int kron_factors(sd_ctx *ctx, const sd_lyco *m, sd_tensor *w1, sd_tensor *w2)
{
    const sd_lyco_lokr_shape *k = &m->k;
    int64_t dkk = m->row / k->c, s1[2] = { k->a * k->c, 1 }, s2[2] = { k->b * dkk, 1 };
    int rc = SD_OK;
    if (k->w1_factored) {
        sd_tensor t;
        rc = nn_tensor(&ctx->scratch, &t, 2, (int64_t[]){ k->a, k->c });
        if (!rc) rc = sd_op_matmul(ctx, &t, &m->p[0]->value, 0, &m->p[1]->value, 0, 1.0f, 0.0f);
        if (!rc) rc = sd_tensor_reshape(&t, 2, s1, w1);
    } else {
        rc = sd_tensor_reshape(&m->p[0]->value, 2, s1, w1);
    }
    if (rc) return rc;
    if (k->w2_factored) {
        sd_tensor t;
        rc = nn_tensor(&ctx->scratch, &t, 2, (int64_t[]){ k->b, dkk });
        if (!rc) rc = sd_op_matmul(ctx, &t, &m->p[2]->value, 0, &m->p[3]->value, 0, 1.0f, 0.0f);
        if (!rc) rc = sd_tensor_reshape(&t, 2, s2, w2);
    } else {
        rc = sd_tensor_reshape(&m->p[2]->value, 2, s2, w2);
    }
    return rc;
}

/* dw [out, row] = alpha_s · kron(W1, W2): outer [a, c, b, dkk] → permute to [a, b, c, dkk] */
static int lokr_delta(sd_ctx *ctx, const sd_lyco *m, sd_tensor *dw, float alpha_s)
{
    const sd_lyco_lokr_shape *k = &m->k;
    int64_t dkk = m->row / k->c;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor w1, w2, o, ov, dv;
    int rc = kron_factors(ctx, m, &w1, &w2);
    if (!rc) rc = nn_tensor(&ctx->scratch, &o, 2, (int64_t[]){ k->a * k->c, k->b * dkk });
    if (!rc) rc = sd_op_matmul(ctx, &o, &w1, 0, &w2, 1, alpha_s, 0.0f);
    if (!rc) rc = sd_tensor_reshape(&o, 4, (int64_t[]){ k->a, k->c, k->b, dkk }, &ov);
    if (!rc) rc = sd_tensor_reshape(dw, 4, (int64_t[]){ k->a, k->b, k->c, dkk }, &dv);
    if (!rc) rc = sd_op_permute(ctx, &dv, &ov, (const int[]){ 0, 2, 1, 3 });
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

static int lokr_backward(sd_ctx *ctx, sd_lyco *m, const sd_tensor *drw)
{
    const sd_lyco_lokr_shape *k = &m->k;
    int64_t dkk = m->row / k->c;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor w1, w2, gv, h, hv, g1, g2;
    const float f = m->multiplier * scale_of(m);
    int rc = kron_factors(ctx, m, &w1, &w2);
    /* H [a, c, b, dkk] = f · permute(G [a, b, c, dkk]) */
    if (!rc) rc = sd_tensor_reshape(drw, 4, (int64_t[]){ k->a, k->b, k->c, dkk }, &gv);
    if (!rc) rc = nn_zeros(ctx, &ctx->scratch, &h, 4, (int64_t[]){ k->a, k->c, k->b, dkk });
    if (!rc) rc = sd_op_permute_bwd(ctx, &h, &gv, (const int[]){ 0, 2, 1, 3 });
    if (!rc) rc = sd_tensor_reshape(&h, 2, (int64_t[]){ k->a * k->c, k->b * dkk }, &hv);
    /* dW1 = f·H·w2, dW2 = f·Hᵀ·w1 */
    if (!rc) rc = nn_tensor(&ctx->scratch, &g1, 2, (int64_t[]){ k->a * k->c, 1 });
    if (!rc) rc = nn_tensor(&ctx->scratch, &g2, 2, (int64_t[]){ k->b * dkk, 1 });
    if (!rc) rc = sd_op_matmul(ctx, &g1, &hv, 0, &w2, 0, f, 0.0f);
    if (!rc) rc = sd_op_matmul(ctx, &g2, &hv, 1, &w1, 0, f, 0.0f);
    sd_tensor g1m, g2m;
    if (!rc) rc = sd_tensor_reshape(&g1, 2, (int64_t[]){ k->a, k->c }, &g1m);
    if (!rc) rc = sd_tensor_reshape(&g2, 2, (int64_t[]){ k->b, dkk }, &g2m);
    if (!rc && k->w1_factored) {
        if (nn_has_grad(m->p[0])) rc = sd_op_matmul(ctx, &m->p[0]->grad, &g1m, 0, &m->p[1]->value, 1, 1.0f, 1.0f);
        if (!rc && nn_has_grad(m->p[1])) rc = sd_op_matmul(ctx, &m->p[1]->grad, &m->p[0]->value, 1, &g1m, 0, 1.0f, 1.0f);
    } else if (!rc && nn_has_grad(m->p[0])) {
        rc = sd_op_axpby(ctx, &m->p[0]->grad, 1.0f, &g1m, 1.0f);
    }
    if (!rc && k->w2_factored) {
        if (nn_has_grad(m->p[2])) rc = sd_op_matmul(ctx, &m->p[2]->grad, &g2m, 0, &m->p[3]->value, 1, 1.0f, 1.0f);
        if (!rc && nn_has_grad(m->p[3])) rc = sd_op_matmul(ctx, &m->p[3]->grad, &m->p[2]->value, 1, &g2m, 0, 1.0f, 1.0f);
    } else if (!rc && nn_has_grad(m->p[2])) {
        sd_tensor gw;
        rc = sd_tensor_reshape(&m->p[2]->grad, 2, (int64_t[]){ k->b, dkk }, &gw);
        if (!rc) rc = sd_op_axpby(ctx, &gw, 1.0f, &g2m, 1.0f);
    }
    sd_arena_reset(&ctx->scratch, mark);
    return rc;
}

int sd_lyco_delta(sd_ctx *ctx, const sd_lyco *m, sd_tensor *dw)
{
    if (m->algo == SD_LYCO_LOKR) return lokr_delta(ctx, m, dw, scale_of(m));
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

void sd_lyco_free(sd_lyco *m)
{
    if (!m) return;
    free(m->host_mask);
    m->host_mask = NULL;
    m->host_mask_cap = 0;
}

static int rank_drop_on(const sd_lyco *m) { return training(m) && m->rank_dropout > 0; }

/* [out, 1] keep flags of rank_dropout for this step (scratch): torch.rand(out) > p */
static int row_mask(sd_ctx *ctx, sd_lyco *m, sd_tensor *mask)
{
    if ((size_t)m->out > m->host_mask_cap) {
        free(m->host_mask);
        m->host_mask = malloc((size_t)m->out * sizeof(float));
        m->host_mask_cap = m->host_mask ? (size_t)m->out : 0;
        if (!m->host_mask) return sd_err(SD_ENOMEM, "LyCORIS rank dropout: out of memory");
    }
    sd_rng g = sd_rng_key(m->rt->seed, m->rt->step, m->id, SD_RNG_DROPOUT);
    uint16_t *h = (uint16_t *)m->host_mask;   /* f16 keep flags */
    for (int64_t o = 0; o < m->out; o++)
        h[o] = (m->drop_keep ? m->drop_keep[o] != 0 : sd_rng_uniform_at(&g, 1 + (uint64_t)o) > m->rank_dropout) ? 0x3C00 : 0;
    int rc = nn_tensor(&ctx->scratch, mask, 2, (int64_t[]){ m->out, 1 });
    if (!rc) rc = nn_mask_from_flags(ctx, mask, h, 1.0f);
    return rc;
}

/* dL/dΔW with rank_dropout's rows zeroed (a scratch copy), else drw itself */
static int masked_grad(sd_ctx *ctx, sd_lyco *m, const sd_tensor *drw, sd_tensor *gm, const sd_tensor **g)
{
    *g = drw;
    if (!rank_drop_on(m)) return SD_OK;
    sd_tensor mask, gv;
    int64_t s[2] = { m->out, m->row };
    int rc = row_mask(ctx, m, &mask);
    if (!rc) rc = sd_tensor_reshape(drw, 2, s, &gv);
    if (!rc) rc = nn_tensor(&ctx->scratch, gm, 2, s);
    if (!rc) rc = sd_op_mul(ctx, gm, &gv, &mask);
    if (!rc) *g = gm;
    return rc;
}

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
    if (!rc && rank_drop_on(m)) {
        sd_tensor mask;
        rc = row_mask(ctx, m, &mask);
        if (!rc) rc = sd_op_mul(ctx, &d, &d, &mask);
    }
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
    for (int i = 4; i < SD_LYCO_NP; i++) any |= m->p[i] && nn_has_grad(m->p[i]);
    if (!any) return SD_OK;
    size_t mark = sd_arena_mark(&ctx->scratch);
    sd_tensor gm;
    const sd_tensor *g0;
    int rc = masked_grad(ctx, m, drw, &gm, &g0);
    if (m->algo == SD_LYCO_LOKR) {
        if (!rc) rc = lokr_backward(ctx, m, g0);
        sd_arena_reset(&ctx->scratch, mark);
        return rc;
    }
    int64_t s[2] = { m->out, m->row };
    sd_tensor a, b, gv, t;
    if (!rc) rc = factors(ctx, m, &a, &b);
    if (!rc) rc = sd_tensor_reshape(g0, 2, s, &gv);
    if (!rc) rc = nn_tensor(&ctx->scratch, &t, 2, s);
    const float f = m->multiplier * scale_of(m);
    if (m->tucker) {
        /* t = f · G ⊙ B → factor 1 (t1, w1a, w1b); t = f · G ⊙ A → factor 2 */
        if (!rc) rc = sd_op_mul(ctx, &t, &gv, &b);
        if (!rc) rc = sd_op_axpby(ctx, &t, f, &t, 0.0f);
        if (!rc) rc = tucker_backward(ctx, m, 0, &t);
        if (!rc) rc = sd_op_mul(ctx, &t, &gv, &a);
        if (!rc) rc = sd_op_axpby(ctx, &t, f, &t, 0.0f);
        if (!rc) rc = tucker_backward(ctx, m, 1, &t);
        sd_arena_reset(&ctx->scratch, mark);
        return rc;
    }
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
    if (m->algo == SD_LYCO_LOKR) {
        /* weight: d, wf, the factor products, the outer product; backward: H, g1, g2, products */
        const sd_lyco_lokr_shape *k = &m->k;
        int64_t dkk = m->row / k->c;
        size_t prods = nn_bytes(k->a * k->c) + nn_bytes(k->b * dkk);
        return 3 * nn_bytes(m->out * m->row) + 2 * prods + 64 + (m->rank_dropout > 0 ? 2 * nn_bytes(m->out) : 0);
    }
    /* weight: d, a, b (a reused for a⊙b), wf; backward: a, b, t (rank_dropout: + the masked dL/dΔW, the mask);
       Tucker: + T, tp, M, Mp, dMp, dM, dtp of one factor at a time */
    size_t tk = m->tucker ? nn_bytes(m->out * m->row) + 2 * nn_bytes(m->rank * m->kk * m->rank) +
                                4 * nn_bytes(m->rank * m->kk * m->in)
                          : 0;
    return (m->rank_dropout > 0 ? 5 : 4) * nn_bytes(m->out * m->row) + (m->rank_dropout > 0 ? 2 * nn_bytes(m->out) : 0) + tk;
}
