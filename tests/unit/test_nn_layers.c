/* lib/nn layers on the float library: checkpointing on/off and --threads 1/2 give identical bytes,
 * inference equals the training forward, activation plans are exact, checkpoint key names are
 * ldm's, LoRA dropouts/multiplier/frozen half-precision bases behave, misuse is refused. */
#include "base/error.h"
#include "nn/nn.h"
#include "test.h"

static sd_ctx g_ctx;
static sd_arena g_act, g_data;
static uint64_t g_rng = 0x13198A2E03707344ull;

static double urand(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1;
}

static float *F(const sd_tensor *t) { return t->data; }

static sd_tensor tt(int ndim, const int64_t *shape)
{
    sd_tensor t;
    if (sd_arena_tensor(&g_data, &t, SD_F32, ndim, shape)) { printf("# %s\n", sd_errmsg()); abort(); }
    return t;
}

static void fill(const sd_tensor *t, double scale, double offset)
{
    float *p = F(t);
    for (int64_t i = 0; i < sd_tensor_numel(t); i++) p[i] = (float)(offset + scale * urand());
}

static void init_params(sd_params *r)
{
    for (size_t i = 0; i < sd_params_count(r); i++) {
        sd_param *p = sd_params_at(r, i);
        if (p->value.dtype != SD_F32) continue;
        if (p->value.ndim >= 2) fill(&p->value, sqrt(3.0 / (double)(sd_tensor_numel(&p->value) / p->value.shape[0])), 0);
        else if (strstr(p->key, "norm") && strstr(p->key, "weight")) fill(&p->value, 0.3, 1.0);
        else fill(&p->value, 0.3, 0);
    }
}

static float *grads_copy(sd_params *r)
{
    float *c = malloc(r->grad_bytes ? r->grad_bytes : 4);
    if (r->grad_bytes) memcpy(c, r->grad_mem, r->grad_bytes);
    return c;
}

/* ---- a generic block runner ------------------------------------------------------------------ */

enum { K_RES, K_TBLOCK, K_ST, K_ATTN, K_FF, K_UP, K_DOWN, K_GN, K_LN, K_LINEAR, K_CONV };

typedef struct unit {
    int kind;
    void *layer;
    sd_tensor x, c, dx, dc, y, dy;
    int has_c;
} unit;

static int u_fwd(unit *u, sd_arena *save)
{
    const sd_tensor *c = u->has_c ? &u->c : NULL;
    switch (u->kind) {
    case K_RES: return sd_resblock_forward(&g_ctx, u->layer, save, &u->y, &u->x, c);
    case K_TBLOCK: return sd_transformer_block_forward(&g_ctx, u->layer, save, &u->y, &u->x, c);
    case K_ST: return sd_spatial_transformer_forward(&g_ctx, u->layer, save, &u->y, &u->x, c);
    case K_ATTN: return sd_attention_forward(&g_ctx, u->layer, save, &u->y, &u->x, c);
    case K_FF: return sd_ff_forward(&g_ctx, u->layer, save, &u->y, &u->x);
    case K_UP: return sd_upsample_forward(&g_ctx, u->layer, save, &u->y, &u->x);
    case K_DOWN: return sd_downsample_forward(&g_ctx, u->layer, save, &u->y, &u->x);
    case K_GN: return sd_groupnorm_forward(&g_ctx, u->layer, save, &u->y, &u->x);
    case K_LN: return sd_layernorm_forward(&g_ctx, u->layer, save, &u->y, &u->x);
    case K_LINEAR: return sd_linear_forward(&g_ctx, u->layer, save, &u->y, &u->x);
    case K_CONV: return sd_conv2d_forward(&g_ctx, u->layer, save, &u->y, &u->x);
    }
    return SD_EINVAL;
}

static int u_bwd(unit *u)
{
    sd_tensor *dc = u->has_c ? &u->dc : NULL;
    switch (u->kind) {
    case K_RES: return sd_resblock_backward(&g_ctx, u->layer, &u->dx, dc, &u->dy);
    case K_TBLOCK: return sd_transformer_block_backward(&g_ctx, u->layer, &u->dx, dc, &u->dy);
    case K_ST: return sd_spatial_transformer_backward(&g_ctx, u->layer, &u->dx, dc, &u->dy);
    case K_ATTN: return sd_attention_backward(&g_ctx, u->layer, &u->dx, dc, &u->dy);
    case K_FF: return sd_ff_backward(&g_ctx, u->layer, &u->dx, &u->dy);
    case K_UP: return sd_upsample_backward(&g_ctx, u->layer, &u->dx, &u->dy);
    case K_DOWN: return sd_downsample_backward(&g_ctx, u->layer, &u->dx, &u->dy);
    case K_GN: return sd_groupnorm_backward(&g_ctx, u->layer, &u->dx, &u->dy);
    case K_LN: return sd_layernorm_backward(&g_ctx, u->layer, &u->dx, &u->dy);
    case K_LINEAR: return sd_linear_backward(&g_ctx, u->layer, &u->dx, &u->dy);
    case K_CONV: return sd_conv2d_backward(&g_ctx, u->layer, &u->dx, &u->dy);
    }
    return SD_EINVAL;
}

static void u_io(unit *u, int nd, const int64_t *xs, int cnd, const int64_t *cs, int ynd, const int64_t *ys)
{
    u->x = tt(nd, xs);
    u->dx = tt(nd, xs);
    fill(&u->x, 1.0, 0);
    if (cs) {
        u->c = tt(cnd, cs);
        u->dc = tt(cnd, cs);
        fill(&u->c, 1.0, 0);
        u->has_c = 1;
    }
    u->y = tt(ynd, ys);
    u->dy = tt(ynd, ys);
    fill(&u->dy, 1.0, 0);
}

typedef struct result {
    float *y, *dx, *dc, *g;
    size_t ny, nx, nc, ng;
} result;

/* One training step: zero grads, forward into the arena, backward; copy out everything. */
static int u_step(unit *u, sd_params *r, result *res)
{
    sd_params_zero_grad(&g_ctx, r);
    sd_op_fill(&g_ctx, &u->dx, 0.0f);
    if (u->has_c) sd_op_fill(&g_ctx, &u->dc, 0.0f);
    sd_arena_reset(&g_act, 0);
    size_t scratch0 = g_ctx.scratch.used;
    int rc = u_fwd(u, &g_act);
    if (!rc) rc = u_bwd(u);
    if (rc) { printf("#   %s\n", sd_errmsg()); return rc; }
    if (g_ctx.scratch.used != scratch0) { printf("#   scratch not released\n"); return -1; }
    res->ny = sd_tensor_nbytes(&u->y);
    res->nx = sd_tensor_nbytes(&u->dx);
    res->nc = u->has_c ? sd_tensor_nbytes(&u->dc) : 0;
    res->ng = r->grad_bytes;
    res->y = malloc(res->ny);
    memcpy(res->y, u->y.data, res->ny);
    res->dx = malloc(res->nx);
    memcpy(res->dx, u->dx.data, res->nx);
    res->dc = malloc(res->nc ? res->nc : 4);
    if (res->nc) memcpy(res->dc, u->dc.data, res->nc);
    res->g = grads_copy(r);
    return SD_OK;
}

static int res_eq(const result *a, const result *b)
{
    return a->ny == b->ny && !memcmp(a->y, b->y, a->ny) && !memcmp(a->dx, b->dx, a->nx) &&
           a->nc == b->nc && !memcmp(a->dc, b->dc, a->nc) && a->ng == b->ng && !memcmp(a->g, b->g, a->ng);
}

static void res_free(result *a)
{
    free(a->y); free(a->dx); free(a->dc); free(a->g);
    memset(a, 0, sizeof *a);
}

static double res_absmax(const float *p, size_t bytes)
{
    double m = 0;
    for (size_t i = 0; i < bytes / 4; i++) m = fmax(m, fabs(p[i]));
    return m;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_resblock_keys(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_resblock b;
    T_CHECK(sd_resblock_init(&b, &r, "model.diffusion_model.input_blocks.4.0", 320, 640, 1280) == SD_OK);
    static const char *want[] = {
        "in_layers.0.weight", "in_layers.0.bias", "in_layers.2.weight", "in_layers.2.bias",
        "emb_layers.1.weight", "emb_layers.1.bias", "out_layers.0.weight", "out_layers.0.bias",
        "out_layers.3.weight", "out_layers.3.bias", "skip_connection.weight", "skip_connection.bias",
    };
    T_EQ_INT(sd_params_count(&r), 12);
    for (size_t i = 0; i < 12; i++) {
        char k[256];
        snprintf(k, sizeof k, "model.diffusion_model.input_blocks.4.0.%s", want[i]);
        T_CHECKF(sd_params_find(&r, k) != NULL, "missing %s", k);
    }
    sd_param *p = sd_params_find(&r, "model.diffusion_model.input_blocks.4.0.in_layers.2.weight");
    T_CHECK(p && p->value.ndim == 4 && p->value.shape[0] == 640 && p->value.shape[1] == 320 && p->value.shape[2] == 3);
    p = sd_params_find(&r, "model.diffusion_model.input_blocks.4.0.skip_connection.weight");
    T_CHECK(p && p->value.ndim == 4 && p->value.shape[2] == 1 && p->value.shape[3] == 1);
    p = sd_params_find(&r, "model.diffusion_model.input_blocks.4.0.emb_layers.1.weight");
    T_CHECK(p && p->value.ndim == 2 && p->value.shape[0] == 640 && p->value.shape[1] == 1280);
    sd_params_free(&r);
    /* same channels: no skip_connection */
    sd_params_init(&r);
    T_CHECK(sd_resblock_init(&b, &r, "", 64, 64, 128) == SD_OK);
    T_EQ_INT(sd_params_count(&r), 10);
    T_CHECK(sd_params_find(&r, "skip_connection.weight") == NULL);
    T_CHECK(sd_params_find(&r, "in_layers.0.weight") != NULL);
    sd_params_free(&r);
}

static void test_spatial_transformer_keys(void)
{
    for (int sd2 = 0; sd2 < 2; sd2++) {
        sd_params r;
        sd_params_init(&r);
        sd_spatial_transformer s;
        const char *pre = "model.diffusion_model.input_blocks.1.1";
        T_CHECK(sd_spatial_transformer_init(&s, &r, pre, 320, sd2 ? 5 : 8, sd2 ? 64 : 40, 1, sd2 ? 1024 : 768, sd2) == SD_OK);
        static const char *want[] = {
            "norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias",
            "transformer_blocks.0.attn1.to_q.weight", "transformer_blocks.0.attn1.to_k.weight",
            "transformer_blocks.0.attn1.to_v.weight", "transformer_blocks.0.attn1.to_out.0.weight",
            "transformer_blocks.0.attn1.to_out.0.bias", "transformer_blocks.0.ff.net.0.proj.weight",
            "transformer_blocks.0.ff.net.0.proj.bias", "transformer_blocks.0.ff.net.2.weight",
            "transformer_blocks.0.ff.net.2.bias", "transformer_blocks.0.attn2.to_q.weight",
            "transformer_blocks.0.attn2.to_k.weight", "transformer_blocks.0.attn2.to_v.weight",
            "transformer_blocks.0.attn2.to_out.0.weight", "transformer_blocks.0.attn2.to_out.0.bias",
            "transformer_blocks.0.norm1.weight", "transformer_blocks.0.norm1.bias",
            "transformer_blocks.0.norm2.weight", "transformer_blocks.0.norm2.bias",
            "transformer_blocks.0.norm3.weight", "transformer_blocks.0.norm3.bias",
            "proj_out.weight", "proj_out.bias",
        };
        size_t nw = sizeof want / sizeof *want;
        T_EQ_INT(sd_params_count(&r), nw);
        for (size_t i = 0; i < nw; i++) {
            char k[256];
            snprintf(k, sizeof k, "%s.%s", pre, want[i]);
            T_CHECKF(sd_params_find(&r, k) != NULL, "missing %s", k);
        }
        char k[256];
        snprintf(k, sizeof k, "%s.proj_in.weight", pre);
        sd_param *p = sd_params_find(&r, k);
        T_CHECK(p && p->value.ndim == (sd2 ? 2 : 4) && p->value.shape[0] == 320 && p->value.shape[1] == 320);
        snprintf(k, sizeof k, "%s.transformer_blocks.0.attn2.to_k.weight", pre);
        p = sd_params_find(&r, k);
        T_CHECK(p && p->value.shape[0] == 320 && p->value.shape[1] == (sd2 ? 1024 : 768));
        snprintf(k, sizeof k, "%s.transformer_blocks.0.ff.net.0.proj.weight", pre);
        p = sd_params_find(&r, k);
        T_CHECK(p && p->value.shape[0] == 2560 && p->value.shape[1] == 320);
        snprintf(k, sizeof k, "%s.transformer_blocks.0.attn1.to_q.bias", pre);
        T_CHECK(sd_params_find(&r, k) == NULL);   /* ldm: q/k/v without bias */
        /* frozen matrices may be half, norms and biases stay f32 */
        sd_params_set_trainable(&r, "", 0);
        T_CHECK(sd_params_set_frozen_dtype(&r, SD_F16) == SD_OK);
        T_CHECK(sd_params_alloc(&r, SD_DEV_CPU) == SD_OK);
        snprintf(k, sizeof k, "%s.transformer_blocks.0.attn2.to_k.weight", pre);
        T_EQ_INT(sd_params_find(&r, k)->value.dtype, SD_F16);
        snprintf(k, sizeof k, "%s.proj_in.bias", pre);
        T_EQ_INT(sd_params_find(&r, k)->value.dtype, SD_F32);
        snprintf(k, sizeof k, "%s.norm.weight", pre);
        T_EQ_INT(sd_params_find(&r, k)->value.dtype, SD_F32);
        T_CHECK(sd_params_find(&r, k)->grad.data == NULL);
        sd_spatial_transformer_free(&s);
        sd_params_free(&r);
    }
    /* other styles */
    sd_params r;
    sd_params_init(&r);
    sd_attention a;
    sd_ff f;
    sd_upsample u;
    sd_downsample d;
    T_CHECK(sd_attention_init(&a, &r, "self_attn", 16, 0, 2, 8, SD_ATTN_CLIP) == SD_OK);
    T_CHECK(sd_ff_init(&f, &r, "mlp", 16, 64, SD_FF_CLIP_QUICK_GELU) == SD_OK);
    T_CHECK(sd_upsample_init(&u, &r, "output_blocks.2.1", 32, 32) == SD_OK);
    T_CHECK(sd_downsample_init(&d, &r, "input_blocks.3.0", 32, 32) == SD_OK);
    sd_attention va;
    T_CHECK(sd_attention_init(&va, &r, "mid.attn_1", 32, 0, 1, 32, SD_ATTN_VAE) == SD_OK);
    sd_param *vq = sd_params_find(&r, "mid.attn_1.q.weight");
    T_CHECK(vq && vq->value.ndim == 4 && vq->value.shape[2] == 1 && sd_params_find(&r, "mid.attn_1.proj_out.bias"));
    const char *k2[] = { "self_attn.q_proj.bias", "self_attn.out_proj.weight", "mlp.fc1.weight", "mlp.fc2.bias",
                         "output_blocks.2.1.conv.weight", "input_blocks.3.0.op.weight", "input_blocks.3.0.op.bias" };
    for (size_t i = 0; i < sizeof k2 / sizeof *k2; i++) T_CHECKF(sd_params_find(&r, k2[i]) != NULL, "missing %s", k2[i]);
    sd_params_free(&r);
}

typedef struct built {
    sd_params r, lr;
    sd_resblock rb;
    sd_transformer_block tb;
    sd_spatial_transformer st;
    sd_attention at;
    sd_ff ff;
    sd_upsample up;
    sd_downsample dn;
    sd_groupnorm gn;
    sd_layernorm ln;
    sd_linear li;
    sd_conv2d cv;
    sd_lora lo;
    unit u;
    int has_lora;
} built;

static sd_lora_rt g_rt = { 1234, 7, 1 };

/* Layer `kind` at a size where the kernels' parallel paths are taken; optionally a LoRA branch
 * (with dropouts) on one of its linears/convs. */
static int build(built *b, int kind, int lora, float dropout)
{
    memset(b, 0, sizeof *b);
    sd_params_init(&b->r);
    sd_params_init(&b->lr);
    unit *u = &b->u;
    u->kind = kind;
    int rc = SD_OK;
    sd_conv2d *lc = NULL;
    sd_linear *ll = NULL;
    int64_t xs[4], cs[3], ys[4];
    int nd = 4, cnd = 0, ynd = 4;
    switch (kind) {
    case K_RES:
        rc = sd_resblock_init(&b->rb, &b->r, "rb", 32, 64, 48);
        u->layer = &b->rb;
        lc = &b->rb.conv1;
        memcpy(xs, (int64_t[]){ 2, 32, 16, 16 }, sizeof xs);
        memcpy(ys, (int64_t[]){ 2, 64, 16, 16 }, sizeof ys);
        cnd = 2;
        cs[0] = 2; cs[1] = 48;
        break;
    case K_TBLOCK:
        rc = sd_transformer_block_init(&b->tb, &b->r, "tb", 64, 4, 16, 24);
        u->layer = &b->tb;
        ll = &b->tb.attn2.k;
        nd = ynd = 3;
        memcpy(xs, (int64_t[]){ 2, 160, 64 }, 3 * sizeof *xs);
        memcpy(ys, xs, sizeof ys);
        cnd = 3;
        cs[0] = 2; cs[1] = 7; cs[2] = 24;
        break;
    case K_ST:
        rc = sd_spatial_transformer_init(&b->st, &b->r, "st", 64, 4, 16, 2, 24, 0);
        u->layer = &b->st;
        ll = &b->st.proj_in;
        memcpy(xs, (int64_t[]){ 2, 64, 12, 12 }, sizeof xs);
        memcpy(ys, xs, sizeof ys);
        cnd = 3;
        cs[0] = 2; cs[1] = 7; cs[2] = 24;
        break;
    case K_ATTN:
        rc = sd_attention_init(&b->at, &b->r, "at", 64, 0, 4, 16, SD_ATTN_LDM);
        u->layer = &b->at;
        ll = &b->at.q;
        nd = ynd = 3;
        memcpy(xs, (int64_t[]){ 2, 200, 64 }, 3 * sizeof *xs);
        memcpy(ys, xs, sizeof ys);
        break;
    case K_FF:
        rc = sd_ff_init(&b->ff, &b->r, "ff", 64, 256, SD_FF_GEGLU);
        u->layer = &b->ff;
        ll = &b->ff.out;
        nd = ynd = 3;
        memcpy(xs, (int64_t[]){ 2, 150, 64 }, 3 * sizeof *xs);
        memcpy(ys, xs, sizeof ys);
        break;
    case K_UP:
        rc = sd_upsample_init(&b->up, &b->r, "up", 32, 32);
        u->layer = &b->up;
        lc = &b->up.conv;
        memcpy(xs, (int64_t[]){ 2, 32, 12, 12 }, sizeof xs);
        memcpy(ys, (int64_t[]){ 2, 32, 24, 24 }, sizeof ys);
        break;
    case K_DOWN:
        rc = sd_downsample_init(&b->dn, &b->r, "dn", 32, 32);
        u->layer = &b->dn;
        lc = &b->dn.op;
        memcpy(xs, (int64_t[]){ 2, 32, 24, 24 }, sizeof xs);
        memcpy(ys, (int64_t[]){ 2, 32, 12, 12 }, sizeof ys);
        break;
    case K_GN:
        rc = sd_groupnorm_init(&b->gn, &b->r, "gn", 64, 32, 1e-5f, SD_ACT_SILU);
        u->layer = &b->gn;
        memcpy(xs, (int64_t[]){ 2, 64, 16, 16 }, sizeof xs);
        memcpy(ys, xs, sizeof ys);
        break;
    case K_LN:
        rc = sd_layernorm_init(&b->ln, &b->r, "ln", 64, 1e-5f);
        u->layer = &b->ln;
        nd = ynd = 3;
        memcpy(xs, (int64_t[]){ 2, 300, 64 }, 3 * sizeof *xs);
        memcpy(ys, xs, sizeof ys);
        break;
    case K_LINEAR:
        rc = sd_linear_init(&b->li, &b->r, "li", 64, 96, SD_NN_BIAS);
        u->layer = &b->li;
        ll = &b->li;
        nd = ynd = 3;
        memcpy(xs, (int64_t[]){ 2, 200, 64 }, 3 * sizeof *xs);
        memcpy(ys, (int64_t[]){ 2, 200, 96 }, 3 * sizeof *ys);
        break;
    case K_CONV: {
        sd_conv2d_geom g = { 2, 0, 0, 1, 1 };
        rc = sd_conv2d_init(&b->cv, &b->r, "cv", 16, 32, 3, 3, g, SD_NN_BIAS);
        u->layer = &b->cv;
        lc = &b->cv;
        memcpy(xs, (int64_t[]){ 2, 16, 20, 20 }, sizeof xs);
        memcpy(ys, (int64_t[]){ 2, 32, 10, 10 }, sizeof ys);
        break;
    }
    }
    if (rc) return rc;
    if (lora && (ll || lc)) {
        if (ll) rc = sd_lora_init(&b->lo, &b->lr, "lora", ll->in, ll->out, 4, 2, 0, 1, 1, sd_conv2d_geom_make(1, 0),
                                  ll->w->value.ndim == 4);
        else rc = sd_lora_init(&b->lo, &b->lr, "lora", lc->cin, lc->cout, 4, 2, 1, lc->kh, lc->kw, lc->g, 1);
        if (rc) return rc;
        b->lo.dropout = dropout;
        b->lo.rank_dropout = dropout;
        b->lo.rt = &g_rt;
        b->lo.id = 3;
        rc = ll ? sd_linear_set_lora(ll, &b->lo) : sd_conv2d_set_lora(lc, &b->lo);
        if (rc) return rc;
        b->has_lora = 1;
    }
    if ((rc = sd_params_alloc(&b->r, SD_DEV_CPU)) || (rc = sd_params_alloc(&b->lr, SD_DEV_CPU))) return rc;
    init_params(&b->r);
    init_params(&b->lr);
    u_io(u, nd, xs, cnd, cnd ? cs : NULL, ynd, ys);
    return SD_OK;
}

static void unbuild(built *b)
{
    if (b->u.kind == K_ST) sd_spatial_transformer_free(&b->st);
    sd_lora_free(&b->lo);
    sd_params_free(&b->r);
    sd_params_free(&b->lr);
    sd_arena_reset(&g_data, 0);
}

static sd_nn_plan plan_of(built *b)
{
    unit *u = &b->u;
    switch (u->kind) {
    case K_RES: return sd_resblock_plan(u->layer, u->x.shape);
    case K_TBLOCK: return sd_transformer_block_plan(u->layer, u->x.shape, u->c.shape);
    case K_ST: return sd_spatial_transformer_plan(u->layer, u->x.shape, u->c.shape);
    case K_ATTN: return sd_attention_plan(u->layer, u->x.shape, NULL);
    case K_FF: return sd_ff_plan(u->layer, u->x.ndim, u->x.shape);
    case K_UP: return sd_upsample_plan(u->layer, u->x.shape);
    case K_DOWN: return sd_downsample_plan(u->layer, u->x.shape);
    case K_GN: return sd_groupnorm_plan(u->layer, u->x.ndim, u->x.shape);
    case K_LN: return sd_layernorm_plan(u->layer, u->x.ndim, u->x.shape);
    case K_LINEAR: return sd_linear_plan(u->layer, u->x.ndim, u->x.shape);
    case K_CONV: return sd_conv2d_plan(u->layer, u->x.shape);
    }
    sd_nn_plan p = { 0, 0 };
    return p;
}

/* Both registries' gradients in one result: the LoRA grads are appended. */
static int step_all(built *b, result *res)
{
    sd_params_zero_grad(&g_ctx, &b->lr);
    int rc = u_step(&b->u, &b->r, res);
    if (rc) return rc;
    size_t n0 = res->ng;
    res->g = realloc(res->g, n0 + b->lr.grad_bytes + 4);
    if (b->lr.grad_bytes) memcpy((char *)res->g + n0, b->lr.grad_mem, b->lr.grad_bytes);
    res->ng = n0 + b->lr.grad_bytes;
    return SD_OK;
}

static const char *kind_name[] = { "resblock", "transformer_block", "spatial_transformer", "attention",
                                   "ff", "upsample", "downsample", "groupnorm", "layernorm", "linear", "conv2d" };

static void test_threads_identical(void)
{
    for (int kind = K_RES; kind <= K_CONV; kind++) {
        built b;
        T_CHECK(build(&b, kind, 1, 0.25f) == SD_OK);
        result r1, r2;
        sd_ctx_set_threads(&g_ctx, 1);
        T_CHECK(step_all(&b, &r1) == SD_OK);
        sd_ctx_set_threads(&g_ctx, 2);
        T_CHECK(step_all(&b, &r2) == SD_OK);
        T_CHECKF(res_eq(&r1, &r2), "%s: threads 1 and 2 differ", kind_name[kind]);
        T_CHECKF(res_absmax(r1.g, r1.ng) > 0 && res_absmax(r1.dx, r1.nx) > 0, "%s: no gradient", kind_name[kind]);
        res_free(&r1);
        res_free(&r2);
        unbuild(&b);
    }
    sd_ctx_set_threads(&g_ctx, 1);
}

static void test_checkpoint_identical(void)
{
    for (int v = 0; v < 4; v++) {
        int kind = v == 0 ? K_RES : v == 1 ? K_TBLOCK : K_ST;
        built b;
        T_CHECK(build(&b, kind, 1, v == 3 ? 0.3f : 0.0f) == SD_OK);
        result r0, r1;
        T_CHECK(step_all(&b, &r0) == SD_OK);
        sd_nn_plan p0 = plan_of(&b);
        if (kind == K_RES) b.rb.checkpoint = 1;
        if (kind == K_TBLOCK) b.tb.checkpoint = 1;
        if (kind == K_ST) {
            b.st.checkpoint = 1;
            if (v == 3) b.st.blocks[1].checkpoint = 1;   /* nested checkpointing */
        }
        sd_nn_plan p1 = plan_of(&b);
        T_EQ_INT(p1.saved, 0);
        T_CHECK(p0.saved > 0 && p1.scratch >= p0.saved);
        T_CHECK(step_all(&b, &r1) == SD_OK);
        T_EQ_INT(g_act.used, 0);
        T_CHECKF(res_eq(&r0, &r1), "%s (variant %d): checkpointing changed the result", kind_name[kind], v);
        res_free(&r0);
        res_free(&r1);
        /* a second checkpointed step reproduces the first (the recomputation leaves no state) */
        T_CHECK(step_all(&b, &r0) == SD_OK);
        T_CHECK(step_all(&b, &r1) == SD_OK);
        T_CHECK(res_eq(&r0, &r1));
        res_free(&r0);
        res_free(&r1);
        unbuild(&b);
    }
}

static void test_plan_and_inference(void)
{
    for (int kind = K_RES; kind <= K_CONV; kind++) {
        built b;
        T_CHECK(build(&b, kind, 1, 0.0f) == SD_OK);
        sd_nn_plan p = plan_of(&b);
        sd_arena_reset(&g_act, 0);
        size_t s0 = g_ctx.scratch.used;
        T_CHECK(u_fwd(&b.u, &g_act) == SD_OK);
        size_t used = (g_act.used + 63) & ~(size_t)63;
        T_CHECKF(used == p.saved, "%s: plan %zu, used %zu", kind_name[kind], p.saved, used);
        size_t nb = sd_tensor_nbytes(&b.u.y);
        float *yt = malloc(nb);
        memcpy(yt, b.u.y.data, nb);
        memset(b.u.y.data, 0, nb);
        g_ctx.scratch.peak = s0;
        T_CHECK(u_fwd(&b.u, NULL) == SD_OK);
        T_CHECKF(!memcmp(yt, b.u.y.data, nb), "%s: inference differs from the training forward", kind_name[kind]);
        T_CHECK(g_ctx.scratch.used == s0);
        /* backward after an inference forward is refused */
        T_EQ_INT(u_bwd(&b.u), SD_ESTATE);
        free(yt);
        unbuild(&b);
    }
}

/* f32 finite differences of the LoRA weights with every dropout on (fixed stream → deterministic). */
static void test_lora_dropout(void)
{
    for (int conv = 0; conv < 2; conv++) {
        built b;
        T_CHECK(build(&b, conv ? K_CONV : K_LINEAR, 1, 0.3f) == SD_OK);
        result r0;
        T_CHECK(step_all(&b, &r0) == SD_OK);
        double l0 = 0;
        for (size_t i = 0; i < r0.ny / 4; i++) l0 += (double)r0.y[i] * F(&b.u.dy)[i];
        int checked = 0, bad = 0;
        for (int which = 0; which < 2; which++) {
            sd_param *p = which ? b.lo.up : b.lo.down;
            float *g = p->grad.data, *x = p->value.data;
            for (int64_t j = 0; j < sd_tensor_numel(&p->value); j += 13) {
                float keep = x[j], h = 1e-2f;
                double lp = 0, lm = 0;
                x[j] = keep + h;
                u_fwd(&b.u, NULL);
                for (int64_t i = 0; i < sd_tensor_numel(&b.u.y); i++) lp += (double)F(&b.u.y)[i] * F(&b.u.dy)[i];
                x[j] = keep - h;
                u_fwd(&b.u, NULL);
                for (int64_t i = 0; i < sd_tensor_numel(&b.u.y); i++) lm += (double)F(&b.u.y)[i] * F(&b.u.dy)[i];
                x[j] = keep;
                double num = (lp - lm) / (2 * h);
                if (fabs(num - g[j]) > 2e-3 * fmax(1.0, fabs(num))) {
                    if (!bad) printf("#   %s[%lld]: analytic %g numeric %g\n", p->key, (long long)j, g[j], num);
                    bad++;
                }
                checked++;
            }
        }
        T_CHECK(checked > 10);
        T_EQ_INT(bad, 0);
        /* masks depend on the step; an unseen step gives another output */
        g_rt.step++;
        T_CHECK(u_fwd(&b.u, NULL) == SD_OK);
        T_CHECK(memcmp(r0.y, b.u.y.data, r0.ny) != 0);
        g_rt.step--;
        (void)l0;
        res_free(&r0);
        unbuild(&b);
    }
}

static void test_lora_identity_cases(void)
{
    built b;
    T_CHECK(build(&b, K_LINEAR, 1, 0.0f) == SD_OK);
    size_t nb = sd_tensor_nbytes(&b.u.y);
    float *base = malloc(nb), *with = malloc(nb);
    sd_lora *lo = b.li.lora;
    b.li.lora = NULL;
    T_CHECK(sd_linear_forward(&g_ctx, &b.li, NULL, &b.u.y, &b.u.x) == SD_OK);
    memcpy(base, b.u.y.data, nb);
    b.li.lora = lo;
    T_CHECK(sd_linear_forward(&g_ctx, &b.li, NULL, &b.u.y, &b.u.x) == SD_OK);
    T_CHECK(memcmp(base, b.u.y.data, nb) != 0);
    memcpy(with, b.u.y.data, nb);
    /* multiplier 0 */
    lo->multiplier = 0;
    T_CHECK(sd_linear_forward(&g_ctx, &b.li, NULL, &b.u.y, &b.u.x) == SD_OK);
    T_CHECK(!memcmp(base, b.u.y.data, nb));
    lo->multiplier = 1;
    /* module dropout 1: branch skipped in training, kept in inference */
    lo->module_dropout = 1.0f;
    T_CHECK(sd_linear_forward(&g_ctx, &b.li, NULL, &b.u.y, &b.u.x) == SD_OK);
    T_CHECK(!memcmp(base, b.u.y.data, nb));
    g_rt.training = 0;
    T_CHECK(sd_linear_forward(&g_ctx, &b.li, NULL, &b.u.y, &b.u.x) == SD_OK);
    T_CHECK(!memcmp(with, b.u.y.data, nb));
    g_rt.training = 1;
    lo->module_dropout = 0;
    /* kohya init: up = 0 → identity; down bounded by 1/sqrt(fan_in) */
    T_CHECK(sd_lora_init_weights(&g_ctx, lo, 42) == SD_OK);
    T_CHECK(sd_linear_forward(&g_ctx, &b.li, NULL, &b.u.y, &b.u.x) == SD_OK);
    T_CHECK(!memcmp(base, b.u.y.data, nb));
    double m = res_absmax(lo->down->value.data, sd_tensor_nbytes(&lo->down->value));
    T_CHECK(m > 0.5 / 8 && m <= 1.0 / 8);
    /* attaching a LoRA of the wrong shape is refused */
    sd_params r2;
    sd_params_init(&r2);
    sd_lora bad;
    T_CHECK(sd_lora_init(&bad, &r2, "bad", 63, 96, 2, 1, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0) == SD_OK);
    T_EQ_INT(sd_linear_set_lora(&b.li, &bad), SD_EINVAL);
    T_EQ_INT(sd_conv2d_set_lora(&b.cv, &bad), SD_EINVAL);
    T_EQ_INT(sd_lora_init(&bad, &r2, "bad2", 4, 4, 0, 1, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0), SD_EINVAL);
    sd_params_free(&r2);
    free(base);
    free(with);
    unbuild(&b);
}

/* A frozen half-precision base with an f32 LoRA: only LoRA gradients, close to the f32 base. */
static void test_frozen_half_base(void)
{
    result rr[3];
    for (int v = 0; v < 3; v++) {
        sd_dtype dt = v == 0 ? SD_F32 : v == 1 ? SD_F16 : SD_BF16;
        built b;
        memset(&b, 0, sizeof b);
        g_rng = 0x5555;
        sd_params_init(&b.r);
        sd_params_init(&b.lr);
        T_CHECK(sd_transformer_block_init(&b.tb, &b.r, "tb", 64, 4, 16, 24) == SD_OK);
        T_CHECK(sd_lora_init(&b.lo, &b.lr, "lora", 64, 64, 4, 2, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0) == SD_OK);
        T_CHECK(sd_linear_set_lora(&b.tb.attn1.q, &b.lo) == SD_OK);
        sd_params_set_trainable(&b.r, "", 0);
        sd_params_set_frozen_dtype(&b.r, dt);
        T_CHECK(sd_params_alloc(&b.r, SD_DEV_CPU) == SD_OK && sd_params_alloc(&b.lr, SD_DEV_CPU) == SD_OK);
        /* same values in every precision: fill an f32 copy, convert */
        for (size_t i = 0; i < sd_params_count(&b.r); i++) {
            sd_param *p = sd_params_at(&b.r, i);
            sd_tensor tmp;
            sd_tensor_alloc(&tmp, SD_F32, p->value.ndim, p->value.shape);
            if (p->value.ndim >= 2) fill(&tmp, sqrt(3.0 / (double)p->value.shape[1]), 0);
            else fill(&tmp, 0.3, strstr(p->key, "norm") && strstr(p->key, "weight") ? 1.0 : 0.0);
            T_CHECK(sd_op_convert(&g_ctx, &p->value, &tmp) == SD_OK);
            sd_tensor_free(&tmp);
        }
        init_params(&b.lr);
        T_CHECK(b.r.grad_mem == NULL && b.tb.attn1.q.w->value.dtype == dt);
        b.u.kind = K_TBLOCK;
        b.u.layer = &b.tb;
        u_io(&b.u, 3, (int64_t[]){ 2, 40, 64 }, 3, (int64_t[]){ 2, 7, 24 }, 3, (int64_t[]){ 2, 40, 64 });
        T_CHECK(step_all(&b, &rr[v]) == SD_OK);
        unbuild(&b);
    }
    for (int v = 1; v < 3; v++) {
        double tol = v == 1 ? 5e-3 : 4e-2, my = res_absmax(rr[0].y, rr[0].ny), mg = res_absmax(rr[0].g, rr[0].ng), ey = 0, eg = 0;
        for (size_t i = 0; i < rr[0].ny / 4; i++) ey = fmax(ey, fabs(rr[0].y[i] - rr[v].y[i]));
        for (size_t i = 0; i < rr[0].ng / 4; i++) eg = fmax(eg, fabs(rr[0].g[i] - rr[v].g[i]));
        T_CHECKF(ey <= tol * my && eg <= tol * mg, "%s: max|dy| %g (of %g), max|dg| %g (of %g)",
                 v == 1 ? "f16" : "bf16", ey, my, eg, mg);
        T_CHECK(ey > 0);   /* the half weights were really used */
    }
    for (int v = 0; v < 3; v++) res_free(&rr[v]);
}

/* The LoRA forward against the formula on the host: y = W·x + b + m·(alpha/r)·U·(D·x); rank
 * dropout zeroes whole (sample, rank) columns and rescales by 1/(1-p); neuron dropout zeroes about
 * p of the elements. */
static void test_lora_formula(void)
{
    built b;
    T_CHECK(build(&b, K_LINEAR, 1, 0.0f) == SD_OK);
    sd_lora *lo = &b.lo;
    lo->multiplier = 0.6f;
    lo->alpha = 3.0f;   /* rank 4: scale 0.75 */
    T_CHECK(u_fwd(&b.u, NULL) == SD_OK);
    const float *x = b.u.x.data, *W = b.li.w->value.data, *bias = b.li.b->value.data, *U = lo->up->value.data,
                *Dn = lo->down->value.data, *y = b.u.y.data;
    int64_t rows = 400, in = 64, out = 96, R = 4;
    double emax = 0, ymax = 0;
    for (int64_t i = 0; i < rows; i += 37)
        for (int64_t o = 0; o < out; o++) {
            double base = bias[o], br = 0;
            for (int64_t k = 0; k < in; k++) base += (double)W[o * in + k] * x[i * in + k];
            for (int64_t j = 0; j < R; j++) {
                double z = 0;
                for (int64_t k = 0; k < in; k++) z += (double)Dn[j * in + k] * x[i * in + k];
                br += (double)U[o * R + j] * z;
            }
            double want = base + 0.6 * 0.75 * br;
            emax = fmax(emax, fabs(want - y[i * out + o]));
            ymax = fmax(ymax, fabs(want));
        }
    T_CHECKF(emax <= 1e-5 * ymax, "max|diff| %g of %g", emax, ymax);
    /* rank dropout: saved zf = f·mask·z with one mask value per (sample, rank) */
    lo->rank_dropout = 0.5f;
    sd_nn_plan p = plan_of(&b);
    sd_arena_reset(&g_act, 0);
    T_CHECK(u_fwd(&b.u, &g_act) == SD_OK);
    T_EQ_INT((g_act.used + 63) & ~(size_t)63, p.saved);
    const float *zf = lo->zf.data, *mk = lo->mask.data;
    T_CHECK(mk != NULL && lo->mask.ndim == 3 && lo->mask.shape[1] == 1 && lo->mask.shape[2] == R);
    int zero = 0, kept = 0, consistent = 1;
    for (int64_t bb = 0; bb < 2; bb++)
        for (int64_t j = 0; j < R; j++) {
            float m = mk[bb * R + j];
            if (m == 0) zero++;
            else { kept++; consistent &= fabsf(m - 0.6f * 0.75f * 2.0f) < 1e-6f; }
            for (int64_t t = 0; t < 200; t++) consistent &= (zf[(bb * 200 + t) * R + j] == 0) == (m == 0);
        }
    T_CHECK(consistent);
    T_CHECK(zero > 0 && kept > 0);
    /* neuron dropout: about p of the elements dropped */
    lo->rank_dropout = 0;
    lo->dropout = 0.25f;
    sd_arena_reset(&g_act, 0);
    T_CHECK(u_fwd(&b.u, &g_act) == SD_OK);
    T_CHECK(sd_tensor_same_shape(&lo->mask, &lo->zf));
    int64_t nz = 0, n = sd_tensor_numel(&lo->mask);
    for (int64_t i = 0; i < n; i++) nz += ((const float *)lo->mask.data)[i] == 0;
    T_CHECKF(fabs((double)nz / (double)n - 0.25) < 0.05, "dropped %lld of %lld", (long long)nz, (long long)n);
    unbuild(&b);
}

/* base + LoRA branch == merged weight without the branch (linear and 3×3 conv) */
static void test_lora_merge(void)
{
    for (int conv = 0; conv < 2; conv++) {
        built b;
        T_CHECK(build(&b, conv ? K_CONV : K_LINEAR, 1, 0.0f) == SD_OK);
        b.lo.multiplier = 0.8f;
        size_t nb = sd_tensor_nbytes(&b.u.y);
        float *with = malloc(nb);
        T_CHECK(u_fwd(&b.u, NULL) == SD_OK);
        memcpy(with, b.u.y.data, nb);
        sd_tensor *w = conv ? &b.cv.w->value : &b.li.w->value;
        T_CHECK(sd_lora_merge(&g_ctx, &b.lo, w, 0.8f) == SD_OK);
        if (conv) b.cv.lora = NULL;
        else b.li.lora = NULL;
        T_CHECK(u_fwd(&b.u, NULL) == SD_OK);
        double m = res_absmax(with, nb), e = 0;
        for (size_t i = 0; i < nb / 4; i++) e = fmax(e, fabs(with[i] - F(&b.u.y)[i]));
        T_CHECKF(e <= 1e-5 * m, "max|diff| %g of %g", e, m);
        /* unmerge restores the base (up to rounding) */
        T_CHECK(sd_lora_merge(&g_ctx, &b.lo, w, -0.8f) == SD_OK);
        sd_tensor bad = *w;
        bad.shape[0]--;
        T_EQ_INT(sd_lora_merge(&g_ctx, &b.lo, &bad, 1.0f), SD_EINVAL);
        free(with);
        unbuild(&b);
    }
}

static void test_misuse(void)
{
    built b;
    T_CHECK(build(&b, K_ATTN, 0, 0) == SD_OK);
    T_EQ_INT(sd_attention_forward(&g_ctx, &b.at, NULL, &b.u.y, &b.u.x, &b.u.x), SD_EINVAL);
    T_EQ_INT(sd_attention_backward(&g_ctx, &b.at, &b.u.dx, NULL, &b.u.dy), SD_ESTATE);
    unbuild(&b);
    sd_params r;
    sd_params_init(&r);
    sd_groupnorm g;
    T_EQ_INT(sd_groupnorm_init(&g, &r, "gn", 48, 32, 1e-5f, SD_ACT_NONE), SD_EINVAL);
    sd_spatial_transformer s;
    T_EQ_INT(sd_spatial_transformer_init(&s, &r, "st", 64, 2, 32, 0, 8, 0), SD_EINVAL);
    sd_params_free(&r);
    /* a too small activation arena fails cleanly with a message */
    T_CHECK(build(&b, K_RES, 0, 0) == SD_OK);
    sd_arena small;
    T_CHECK(sd_arena_init(&small, SD_DEV_CPU, 4096) == SD_OK);
    size_t s0 = g_ctx.scratch.used;
    T_EQ_INT(u_fwd(&b.u, &small), SD_ENOMEM);
    T_CHECK(strstr(sd_errmsg(), "arena") != NULL);
    T_CHECK(g_ctx.scratch.used == s0);
    sd_arena_free(&small);
    unbuild(&b);
}

#include <time.h>
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#define RUN(fn) do { double t0_ = now(); T_RUN(fn); printf("#   %.2f s\n", now() - t0_); } while (0)

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, (size_t)256 << 20) || sd_arena_init(&g_act, SD_DEV_CPU, (size_t)64 << 20) ||
        sd_arena_init(&g_data, SD_DEV_CPU, (size_t)64 << 20)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    RUN(test_resblock_keys);
    RUN(test_spatial_transformer_keys);
    RUN(test_threads_identical);
    RUN(test_checkpoint_identical);
    RUN(test_plan_and_inference);
    RUN(test_lora_dropout);
    RUN(test_lora_identity_cases);
    RUN(test_frozen_half_base);
    RUN(test_lora_merge);
    RUN(test_lora_formula);
    RUN(test_misuse);
    sd_arena_free(&g_act);
    sd_arena_free(&g_data);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
