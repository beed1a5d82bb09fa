/* Gradient checks of every lib/nn layer in double precision: the layers run unchanged on the
 * op API, whose CPU backend is replaced in this program by the double instantiation of the
 * kernels (test_nn_f64.h). Each layer's backward (inputs and every trainable parameter, LoRA
 * weights included, with gradient accumulation) is compared against central finite differences
 * of L = Σ r·y, with a tight tolerance; the checker itself is shown to catch a wrong gradient. */
#include "test_nn_f64.h"

#include "base/rng.h"
#include "models/model_config_core.h"
#include "models/unet.h"
#include "nn/nn.h"
#include "test.h"

static sd_ctx g_ctx;
static sd_arena g_act, g_data;
static uint64_t g_rng = 0x243F6A8885A308D3ull;
static double g_maxerr;

static double urand(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1;
}

static double *D(const sd_tensor *t) { return shadow_of(t->data); }

static sd_tensor tt(int ndim, const int64_t *shape)
{
    sd_tensor t;
    if (sd_arena_tensor(&g_data, &t, SD_F32, ndim, shape)) { printf("# %s\n", sd_errmsg()); abort(); }
    return t;
}

static void fill(const sd_tensor *t, double scale, double offset)
{
    double *p = D(t);
    for (int64_t i = 0; i < sd_tensor_numel(t); i++) p[i] = offset + scale * urand();
}

/* Values: matrices ~ U(±sqrt(3/fan_in)), norm weights 1 ± 0.3, biases ± 0.3. */
static void init_params(sd_params *r)
{
    for (size_t i = 0; i < sd_params_count(r); i++) {
        sd_param *p = sd_params_at(r, i);
        if (p->value.ndim >= 2) {
            int64_t fan = sd_tensor_numel(&p->value) / p->value.shape[0];
            fill(&p->value, sqrt(3.0 / (double)fan), 0);
        } else if (strstr(p->key, "norm") && strstr(p->key, "weight")) {
            fill(&p->value, 0.3, 1.0);
        } else {
            fill(&p->value, 0.3, 0);
        }
    }
}

static void alloc_params(sd_params *r)
{
    if (sd_params_alloc(r, SD_DEV_CPU)) { printf("# %s\n", sd_errmsg()); abort(); }
    shadow_add(r->value_mem, r->value_bytes);
    shadow_add(r->grad_mem, r->grad_bytes);
    init_params(r);
}

/* ---- the unit under test -------------------------------------------------------------------- */

enum { K_LINEAR, K_CONV, K_GN, K_LN, K_ATTN, K_FF, K_RES, K_TBLOCK, K_ST, K_DOWN, K_UP, K_EMB, K_UNET };

/* K_UNET: in[0] = the vector input (label_emb), in[1] = the context; latent and timesteps fixed */
static sd_tensor g_unet_x, g_unet_t;

typedef struct unit {
    int kind;
    void *layer;
    sd_params *regs[2];
    int nregs;
    sd_tensor in[2], din[2];
    int nin, need_din[2];
    sd_tensor out;
    sd_nn_plan plan;
} unit;

static int u_forward(unit *u, sd_arena *save)
{
    const sd_tensor *x = &u->in[0], *c = u->nin > 1 ? &u->in[1] : NULL;
    switch (u->kind) {
    case K_LINEAR: return sd_linear_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_CONV: return sd_conv2d_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_GN: return sd_groupnorm_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_LN: return sd_layernorm_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_ATTN: return sd_attention_forward(&g_ctx, u->layer, save, &u->out, x, c);
    case K_FF: return sd_ff_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_RES: return sd_resblock_forward(&g_ctx, u->layer, save, &u->out, x, c);
    case K_TBLOCK: return sd_transformer_block_forward(&g_ctx, u->layer, save, &u->out, x, c);
    case K_ST: return sd_spatial_transformer_forward(&g_ctx, u->layer, save, &u->out, x, c);
    case K_DOWN: return sd_downsample_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_UP: return sd_upsample_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_EMB: return sd_embedding_forward(&g_ctx, u->layer, save, &u->out, x);
    case K_UNET: return sd_unet_forward(&g_ctx, u->layer, save, &u->out, &g_unet_x, &g_unet_t, c, x);
    }
    return SD_EINVAL;
}

static int u_backward(unit *u, const sd_tensor *dy)
{
    sd_tensor *dx = u->need_din[0] ? &u->din[0] : NULL, *dc = u->nin > 1 && u->need_din[1] ? &u->din[1] : NULL;
    switch (u->kind) {
    case K_LINEAR: return sd_linear_backward(&g_ctx, u->layer, dx, dy);
    case K_CONV: return sd_conv2d_backward(&g_ctx, u->layer, dx, dy);
    case K_GN: return sd_groupnorm_backward(&g_ctx, u->layer, dx, dy);
    case K_LN: return sd_layernorm_backward(&g_ctx, u->layer, dx, dy);
    case K_ATTN: return sd_attention_backward(&g_ctx, u->layer, dx, dc, dy);
    case K_FF: return sd_ff_backward(&g_ctx, u->layer, dx, dy);
    case K_RES: return sd_resblock_backward(&g_ctx, u->layer, dx, dc, dy);
    case K_TBLOCK: return sd_transformer_block_backward(&g_ctx, u->layer, dx, dc, dy);
    case K_ST: return sd_spatial_transformer_backward(&g_ctx, u->layer, dx, dc, dy);
    case K_DOWN: return sd_downsample_backward(&g_ctx, u->layer, dx, dy);
    case K_UP: return sd_upsample_backward(&g_ctx, u->layer, dx, dy);
    case K_EMB: return sd_embedding_backward(&g_ctx, u->layer, dy);
    case K_UNET: return sd_unet_backward(&g_ctx, u->layer, NULL, dc, dx, dy);
    }
    return SD_EINVAL;
}

static double loss(unit *u, const double *r)
{
    if (u_forward(u, NULL)) { printf("#   forward: %s\n", sd_errmsg()); t_cur_fail++; return 0; }
    const double *y = D(&u->out);
    double l = 0;
    for (int64_t i = 0; i < sd_tensor_numel(&u->out); i++) l += r[i] * y[i];
    return l;
}

/* FD check of one tensor (value x, analytic gradient g pre-filled with 0.25). */
static int check_tensor(unit *u, const char *what, double *x, const double *g, int64_t n, const double *r,
                        double tol, double corrupt)
{
    const double h = 1e-5;
    int64_t cnt = n <= 48 ? n : 24;
    for (int64_t s = 0; s < cnt; s++) {
        int64_t j = n <= 48 ? s : (int64_t)((urand() + 1) * 0.5 * (double)n) % n;
        double keep = x[j];
        x[j] = keep + h;
        double lp = loss(u, r);
        x[j] = keep - h;
        double lm = loss(u, r);
        x[j] = keep;
        double num = (lp - lm) / (2 * h), ana = g[j] - 0.25 + (s == 0 ? corrupt : 0);
        double err = fabs(num - ana) / fmax(1.0, fabs(num));
        if (corrupt == 0 && err > g_maxerr) g_maxerr = err;
        if (!(err <= tol)) {
            if (corrupt == 0)
                printf("#   d/d %s[%lld]: analytic %.12g numeric %.12g\n", what, (long long)j, ana, num);
            return 1;
        }
    }
    return 0;
}

/* Returns the number of tensors whose check failed. */
static int gradcheck(unit *u, double tol, double corrupt)
{
    int bad = 0;
    size_t dmark = sd_arena_mark(&g_data);
    sd_tensor rt = tt(u->out.ndim, u->out.shape);
    fill(&rt, 1.0, 0);
    const double *r = D(&rt);
    for (int k = 0; k < u->nregs; k++)
        for (size_t i = 0; i < sd_params_count(u->regs[k]); i++) {
            sd_param *p = sd_params_at(u->regs[k], i);
            if (!p->grad.data) continue;
            double *g = D(&p->grad);
            for (int64_t j = 0; j < sd_tensor_numel(&p->grad); j++) g[j] = 0.25;
        }
    for (int i = 0; i < u->nin; i++) {
        if (!u->need_din[i]) continue;
        double *g = D(&u->din[i]);
        for (int64_t j = 0; j < sd_tensor_numel(&u->din[i]); j++) g[j] = 0.25;
    }
    sd_arena_reset(&g_act, 0);
    int rc = u_forward(u, &g_act);
    if (!rc) {
        size_t used = (g_act.used + 63) & ~(size_t)63;
        if (corrupt == 0 && used != u->plan.saved) {
            printf("#   plan says %zu saved bytes, forward used %zu\n", u->plan.saved, used);
            bad++;
        }
        rc = u_backward(u, &rt);
    }
    if (rc) {
        printf("#   %s\n", sd_errmsg());
        sd_arena_reset(&g_data, dmark);
        return bad + 1;
    }
    for (int i = 0; i < u->nin; i++)
        if (u->need_din[i])
            bad += check_tensor(u, i ? "input1" : "input0", D(&u->in[i]), D(&u->din[i]), sd_tensor_numel(&u->in[i]), r, tol, corrupt);
    for (int k = 0; k < u->nregs; k++)
        for (size_t i = 0; i < sd_params_count(u->regs[k]); i++) {
            sd_param *p = sd_params_at(u->regs[k], i);
            if (!p->grad.data) continue;
            bad += check_tensor(u, p->key, D(&p->value), D(&p->grad), sd_tensor_numel(&p->value), r, tol, corrupt);
        }
    sd_arena_reset(&g_data, dmark);
    return bad;
}

#define TOL 1e-6

static void unit_io(unit *u, int ndim, const int64_t *xs, const int64_t *cs, int cnd, int ndim_out, const int64_t *ys)
{
    u->in[0] = tt(ndim, xs);
    u->din[0] = tt(ndim, xs);
    fill(&u->in[0], 1.0, 0);
    u->need_din[0] = 1;
    u->nin = 1;
    if (cs) {
        u->in[1] = tt(cnd, cs);
        u->din[1] = tt(cnd, cs);
        fill(&u->in[1], 1.0, 0);
        u->need_din[1] = 1;
        u->nin = 2;
    }
    u->out = tt(ndim_out, ys);
}

/* u's input [2, cin, 5, 4] into conv c, its output, and c's plan for that input */
static void conv_io(unit *u, sd_conv2d *c, int64_t cin)
{
    int64_t xs[4] = { 2, cin, 5, 4 }, ys[4];
    sd_conv2d_out_shape(c, xs, ys);
    unit_io(u, 4, xs, NULL, 0, 4, ys);
    u->plan = sd_conv2d_plan(c, xs);
}

static void run_unit(unit *u)
{
    int bad = gradcheck(u, TOL, 0);
    T_CHECKF(bad == 0, "%d tensors failed", bad);
}

static void free_params(sd_params *r)
{
    shadow_remove(r->value_mem);
    shadow_remove(r->grad_mem);
    sd_params_free(r);
}

static void reset_all(sd_params *r1, sd_params *r2)
{
    free_params(r1);
    if (r2) free_params(r2);
    sd_arena_reset(&g_data, 0);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_checker_catches_errors(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_linear l;
    T_CHECK(sd_linear_init(&l, &r, "lin", 5, 4, SD_NN_BIAS) == SD_OK);
    alloc_params(&r);
    unit u = { .kind = K_LINEAR, .layer = &l, .regs = { &r }, .nregs = 1 };
    unit_io(&u, 3, (int64_t[]){ 2, 3, 5 }, NULL, 0, 3, (int64_t[]){ 2, 3, 4 });
    u.plan = sd_linear_plan(&l, 3, u.in[0].shape);
    T_EQ_INT(gradcheck(&u, TOL, 0), 0);
    /* a gradient off by 1e-4 in one element of each tensor must be caught in every tensor */
    T_EQ_INT(gradcheck(&u, TOL, 1e-4), 3);
    reset_all(&r, NULL);
}

static void test_linear(void)
{
    for (int variant = 0; variant < 3; variant++) {
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_linear l;
        sd_lora lo;
        T_CHECK(sd_linear_init(&l, &r, "lin", 6, 5, variant == 1 ? SD_NN_CONV1X1 : SD_NN_BIAS) == SD_OK);
        if (variant >= 1) {
            T_CHECK(sd_lora_init(&lo, &lr, "lora_lin", 6, 5, 3, 1.5f, 0, 1, 1, sd_conv2d_geom_make(1, 0), variant == 1) == SD_OK);
            lo.multiplier = 0.7f;
            T_CHECK(sd_linear_set_lora(&l, &lo) == SD_OK);
            if (variant == 2) sd_params_set_trainable(&r, "", 0);   /* frozen base: LoRA grads only */
        }
        alloc_params(&r);
        alloc_params(&lr);
        if (variant == 2) T_CHECK(l.w->grad.data == NULL && l.b->grad.data == NULL);
        unit u = { .kind = K_LINEAR, .layer = &l, .regs = { &r, &lr }, .nregs = 2 };
        unit_io(&u, 3, (int64_t[]){ 2, 3, 6 }, NULL, 0, 3, (int64_t[]){ 2, 3, 5 });
        u.plan = sd_linear_plan(&l, 3, u.in[0].shape);
        run_unit(&u);
        if (variant) sd_lora_free(&lo);
        reset_all(&r, &lr);
    }
}

static void test_conv(void)
{
    struct { int cin, cout, k; sd_conv2d_geom g; int lora; } cases[] = {
        { 3, 4, 3, sd_conv2d_geom_make(1, 1), 0 },
        { 3, 4, 3, sd_conv2d_geom_make(2, 1), 1 },
        { 2, 3, 3, { 2, 0, 0, 1, 1 }, 1 },   /* VAE-style asymmetric padding */
        { 4, 2, 1, sd_conv2d_geom_make(1, 0), 1 },
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_conv2d c;
        sd_lora lo;
        T_CHECK(sd_conv2d_init(&c, &r, "conv", cases[ci].cin, cases[ci].cout, cases[ci].k, cases[ci].k, cases[ci].g, SD_NN_BIAS) == SD_OK);
        if (cases[ci].lora) {
            T_CHECK(sd_lora_init(&lo, &lr, "lora_conv", cases[ci].cin, cases[ci].cout, 2, 0, 1, cases[ci].k,
                                 cases[ci].k, cases[ci].g, 1) == SD_OK);
            T_CHECK(sd_conv2d_set_lora(&c, &lo) == SD_OK);
            if (ci == 3) sd_params_set_trainable(&r, "", 0);
        }
        alloc_params(&r);
        alloc_params(&lr);
        unit u = { .kind = K_CONV, .layer = &c, .regs = { &r, &lr }, .nregs = 2 };
        conv_io(&u, &c, cases[ci].cin);
        run_unit(&u);
        if (cases[ci].lora) sd_lora_free(&lo);
        reset_all(&r, &lr);
    }
}

/* LyCORIS LoHa (nn/lyco.h) on a frozen linear, a frozen 3×3 conv and a trained-bias 1×1 conv: the
 * input gradient and the four hada factors' gradients, through RW = W + m·scale·(w1a·w1b)⊙(w2a·w2b). */
static void test_lyco_loha(void)
{
    for (int variant = 0; variant < 3; variant++) {
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_linear l;
        sd_conv2d c;
        sd_lyco m;
        int conv = variant > 0, k = variant == 1 ? 3 : 1;
        int64_t cin = 3, cout = 4;
        if (!conv) {
            T_CHECK(sd_linear_init(&l, &r, "lin", 6, 5, SD_NN_BIAS) == SD_OK);
            T_CHECK(sd_lyco_init_loha(&m, &lr, "loha_lin", 5, 6, 2, 1.5f) == SD_OK);
        } else {
            T_CHECK(sd_conv2d_init(&c, &r, "conv", cin, cout, k, k, sd_conv2d_geom_make(1, k / 2), SD_NN_BIAS) == SD_OK);
            T_CHECK(sd_lyco_init_loha(&m, &lr, "loha_conv", cout, cin * k * k, 3, 0) == SD_OK);
        }
        m.multiplier = 0.7f;
        sd_params_set_trainable(&r, variant == 2 ? "conv.weight" : "", 0);   /* the weight is frozen under a module */
        T_CHECK((conv ? sd_conv2d_set_lyco(&c, &m) : sd_linear_set_lyco(&l, &m)) == SD_OK);
        alloc_params(&r);
        alloc_params(&lr);
        unit u = { .kind = conv ? K_CONV : K_LINEAR, .layer = conv ? (void *)&c : (void *)&l, .regs = { &r, &lr }, .nregs = 2 };
        if (!conv) {
            unit_io(&u, 3, (int64_t[]){ 2, 3, 6 }, NULL, 0, 3, (int64_t[]){ 2, 3, 5 });
            u.plan = sd_linear_plan(&l, 3, u.in[0].shape);
        } else {
            conv_io(&u, &c, cin);
        }
        run_unit(&u);
        reset_all(&r, &lr);
    }
}

/* LyCORIS LoKr (nn/lyco.h): the Kronecker product through the ops, each layout of the factors: a linear
 * with lokr_w1 and lokr_w2_a/_b, a 3×3 conv with w2 factored over d·kh·kw, a 3×3 conv with both full
 * (full_matrix: a 4-d lokr_w2), a linear with decompose_both (lokr_w1_a/_b) and factor 4. */
static void test_lyco_lokr(void)
{
    struct { int conv, cin, cout, rank, factor, both, full, unbal; } cases[] = {
        { 0, 6, 8, 1, -1, 1, 0, 0 }, { 1, 4, 6, 1, -1, 0, 0, 0 }, { 1, 4, 8, 2, -1, 0, 1, 1 }, { 0, 16, 16, 1, 4, 1, 0, 0 },
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_linear l;
        sd_conv2d c;
        sd_lyco m;
        int conv = cases[ci].conv, k = conv ? 3 : 1;
        int64_t cin = cases[ci].cin, cout = cases[ci].cout;
        if (!conv) T_CHECK(sd_linear_init(&l, &r, "lin", cin, cout, SD_NN_BIAS) == SD_OK);
        else T_CHECK(sd_conv2d_init(&c, &r, "conv", cin, cout, k, k, sd_conv2d_geom_make(1, 1), SD_NN_BIAS) == SD_OK);
        T_CHECK(sd_lyco_init_lokr(&m, &lr, "lokr", cout, cin, k, k, conv, cases[ci].rank, 2.0f, cases[ci].factor,
                                  cases[ci].both, cases[ci].full, cases[ci].unbal) == SD_OK);
        printf("# lokr case %zu: a %lld b %lld c %lld d %lld, w1 %s, w2 %s\n", ci, (long long)m.k.a, (long long)m.k.b,
               (long long)m.k.c, (long long)m.k.d, m.k.w1_factored ? "factored" : "full", m.k.w2_factored ? "factored" : "full");
        m.multiplier = 0.7f;
        sd_params_set_trainable(&r, "", 0);
        T_CHECK((conv ? sd_conv2d_set_lyco(&c, &m) : sd_linear_set_lyco(&l, &m)) == SD_OK);
        alloc_params(&r);
        alloc_params(&lr);
        unit u = { .kind = conv ? K_CONV : K_LINEAR, .layer = conv ? (void *)&c : (void *)&l, .regs = { &r, &lr }, .nregs = 2 };
        if (!conv) {
            unit_io(&u, 3, (int64_t[]){ 2, 3, cin }, NULL, 0, 3, (int64_t[]){ 2, 3, cout });
            u.plan = sd_linear_plan(&l, 3, u.in[0].shape);
        } else {
            conv_io(&u, &c, cin);
        }
        run_unit(&u);
        reset_all(&r, &lr);
    }
    /* LyCORIS's factorization (lycoris/functional/general.py; values from running it: its docstring's
       360 -> 8, 45 is stale, the loop never updates `length`) */
    static const int64_t tab[][4] = { { 127, -1, 1, 127 }, { 128, -1, 8, 16 }, { 250, -1, 10, 25 }, { 360, -1, 18, 20 },
                                      { 512, -1, 16, 32 }, { 1024, -1, 32, 32 }, { 128, 2, 2, 64 }, { 250, 4, 2, 125 },
                                      { 250, 8, 5, 50 }, { 360, 16, 15, 24 }, { 1024, 16, 16, 64 }, { 360, 4, 4, 90 }, { 320, -1, 16, 20 },
                                      { 1280, -1, 32, 40 }, { 768, -1, 24, 32 }, { 640, 8, 8, 80 } };
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++) {
        int64_t a, b;
        sd_lyco_factorization(tab[i][0], (int)tab[i][1], &a, &b);
        T_CHECKF(a == tab[i][2] && b == tab[i][3], "factorization(%lld, %lld) = (%lld, %lld)", (long long)tab[i][0],
                 (long long)tab[i][1], (long long)a, (long long)b);
    }
}

/* a step whose draws 1 .. n of the module's dropout stream keep some and drop some at p */
static uint32_t mixed_step(uint64_t seed, uint32_t id, int n, double p)
{
    for (uint32_t step = 0;; step++) {
        sd_rng g = sd_rng_key(seed, step, id, SD_RNG_DROPOUT);
        int keep = 0;
        for (int i = 0; i < n; i++) keep += sd_rng_uniform_at(&g, 1 + (uint64_t)i) > p;
        if (keep > 0 && keep < n) return step;
    }
}

/* LyCORIS's dropouts in training (lora_hook.h SD_LORA_DROP_LYCO*, lyco.h rank_dropout): LoCon on a
 * linear and a 3×3 conv with rank_dropout (rows of ΔW: output channels), in bypass_mode with
 * rank_dropout (rank channels) and dropout (elementwise on the branch output), LoHa and LoKr with
 * rank_dropout; gradients against finite differences of the same draws (one step), the saved bytes
 * against the plan, and the masks neither all kept nor all dropped. */
static void test_lyco_dropout(void)
{
    for (int variant = 0; variant < 8; variant++) {
        const int conv = variant & 1, kind = variant >> 1;   /* kind 0 LoCon, 1 LoCon bypass, 2 LoHa, 3 LoKr */
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_linear l;
        sd_conv2d c;
        sd_lora lo;
        sd_lyco m;
        sd_lora_rt rt = { .seed = 11, .step = 0, .training = 1 };
        int64_t cin = conv ? 3 : 6, cout = conv ? 4 : 8;
        const int k = conv ? 3 : 1;
        if (!conv) T_CHECK(sd_linear_init(&l, &r, "lin", cin, cout, SD_NN_BIAS) == SD_OK);
        else T_CHECK(sd_conv2d_init(&c, &r, "conv", cin, cout, k, k, sd_conv2d_geom_make(1, 1), SD_NN_BIAS) == SD_OK);
        sd_params_set_trainable(&r, "", 0);
        if (kind < 2) {
            T_CHECK(sd_lora_init(&lo, &lr, "lora", cin, cout, 3, 1.5f, conv, k, k, sd_conv2d_geom_make(1, 1), conv) == SD_OK);
            lo.multiplier = 0.7f;
            lo.rt = &rt;
            lo.id = 2;
            lo.lyco_drop = kind ? SD_LORA_DROP_LYCO_BYPASS : SD_LORA_DROP_LYCO;
            lo.rank_dropout = 0.5f;
            lo.dropout = kind ? 0.3f : 0.0f;
            rt.step = mixed_step(rt.seed, lo.id, kind ? 3 : (int)cout, 0.5);
            T_CHECK((conv ? sd_conv2d_set_lora(&c, &lo) : sd_linear_set_lora(&l, &lo)) == SD_OK);
        } else {
            if (kind == 2) T_CHECK(sd_lyco_init_loha(&m, &lr, "loha", cout, cin * k * k, 2, 1.5f) == SD_OK);
            else T_CHECK(sd_lyco_init_lokr(&m, &lr, "lokr", cout, cin, k, k, conv, 1, 2.0f, -1, 0, 0, 0) == SD_OK);
            m.multiplier = 0.7f;
            m.rt = &rt;
            m.id = 4;
            m.rank_dropout = 0.5f;
            rt.step = mixed_step(rt.seed, m.id, (int)cout, 0.5);
            T_CHECK((conv ? sd_conv2d_set_lyco(&c, &m) : sd_linear_set_lyco(&l, &m)) == SD_OK);
        }
        alloc_params(&r);
        alloc_params(&lr);
        unit u = { .kind = conv ? K_CONV : K_LINEAR, .layer = conv ? (void *)&c : (void *)&l, .regs = { &r, &lr }, .nregs = 2 };
        if (!conv) {
            unit_io(&u, 3, (int64_t[]){ 2, 3, cin }, NULL, 0, 3, (int64_t[]){ 2, 3, cout });
            u.plan = sd_linear_plan(&l, 3, u.in[0].shape);
        } else {
            conv_io(&u, &c, cin);
        }
        printf("# lyco dropout: %s, %s\n", (const char *[]){ "LoCon", "LoCon bypass", "LoHa", "LoKr" }[kind], conv ? "3x3 conv" : "linear");
        run_unit(&u);
        /* the last masks drawn (host staging): some kept, some dropped */
        const uint16_t *hm = (const uint16_t *)(kind < 2 ? lo.host_mask : m.host_mask);   /* f16 keep flags */
        int64_t hn = kind == 1 ? sd_tensor_numel(&u.out) : cout;
        int zeros = 0, ones = 0;
        for (int64_t i = 0; hm && i < hn; i++) zeros += hm[i] == 0, ones += hm[i] != 0;
        T_CHECKF(hm && zeros > 0 && ones > 0, "variant %d: mask of %lld: %d dropped, %d kept", variant, (long long)hn, zeros, ones);
        if (kind < 2) sd_lora_free(&lo);
        else sd_lyco_free(&m);
        reset_all(&r, &lr);
    }
}

/* LyCORIS's Tucker LoCon (sd_lora_init_tucker): up(mid(down(x))) on a 3×3 conv (stride 1, and stride 2 with
 * the VAE's asymmetric padding), the gradients of the input, lora_down, lora_mid and lora_up; the stride-1
 * case also with LyCORIS's rank_dropout (output channels) in training. */
static void test_lora_tucker(void)
{
    struct { sd_conv2d_geom g; int drop; } cases[] = {
        { { 1, 1, 1, 1, 1 }, 0 }, { { 2, 0, 0, 1, 1 }, 0 }, { { 1, 1, 1, 1, 1 }, 1 },
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_conv2d c;
        sd_lora lo;
        sd_lora_rt rt = { .seed = 11, .step = 0, .training = 1 };
        T_CHECK(sd_conv2d_init(&c, &r, "conv", 3, 4, 3, 3, cases[ci].g, SD_NN_BIAS) == SD_OK);
        sd_params_set_trainable(&r, "", 0);
        T_CHECK(sd_lora_init_tucker(&lo, &lr, "lora", 3, 4, 2, 1.5f, 3, 3, cases[ci].g) == SD_OK);
        T_CHECK(lo.mid && lo.down->value.shape[2] == 1 && lo.mid->value.shape[0] == 2 && lo.mid->value.shape[3] == 3);
        lo.multiplier = 0.7f;
        if (cases[ci].drop) {
            lo.rt = &rt;
            lo.id = 1;
            lo.lyco_drop = SD_LORA_DROP_LYCO;
            lo.rank_dropout = 0.5f;
            rt.step = mixed_step(rt.seed, lo.id, 4, 0.5);
        }
        T_CHECK(sd_conv2d_set_lora(&c, &lo) == SD_OK);
        alloc_params(&r);
        alloc_params(&lr);
        unit u = { .kind = K_CONV, .layer = &c, .regs = { &r, &lr }, .nregs = 2 };
        conv_io(&u, &c, 3);
        run_unit(&u);
        sd_lora_free(&lo);
        reset_all(&r, &lr);
    }
}

/* LyCORIS's LoHa with Tucker factors (sd_lyco_init_loha_tucker) on a 3×3 conv: the input and all six factors'
 * gradients (hada_t1/t2 through the permutes), plain and with rank_dropout in training. */
static void test_lyco_loha_tucker(void)
{
    for (int drop = 0; drop < 2; drop++) {
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_conv2d c;
        sd_lyco m;
        sd_lora_rt rt = { .seed = 11, .step = 0, .training = 1 };
        T_CHECK(sd_conv2d_init(&c, &r, "conv", 3, 4, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS) == SD_OK);
        sd_params_set_trainable(&r, "", 0);
        T_CHECK(sd_lyco_init_loha_tucker(&m, &lr, "loha", 4, 3, 3, 3, 2, 1.5f) == SD_OK);
        T_CHECK(m.tucker && m.p[4] && m.p[5] && m.p[0]->value.shape[0] == 2 && m.p[0]->value.shape[1] == 4);
        m.multiplier = 0.7f;
        if (drop) {
            m.rt = &rt;
            m.id = 3;
            m.rank_dropout = 0.5f;
            rt.step = mixed_step(rt.seed, m.id, 4, 0.5);
        }
        T_CHECK(sd_conv2d_set_lyco(&c, &m) == SD_OK);
        alloc_params(&r);
        alloc_params(&lr);
        unit u = { .kind = K_CONV, .layer = &c, .regs = { &r, &lr }, .nregs = 2 };
        conv_io(&u, &c, 3);
        run_unit(&u);
        sd_lyco_free(&m);
        reset_all(&r, &lr);
    }
}

/* DyLoRA (lora_hook.h): the branch of rank 4 with unit 2 trains rows tr, tr+1 only. The input
 * gradient and the trained rows' gradients against finite differences of the same draw (the
 * forward of every difference is a training forward at the same step, so the same rows and the
 * same sqrt(rank / (tr + unit)) factor); the other rows' gradients stay untouched (0.25). */
static void test_dylora(void)
{
    for (int conv = 0; conv < 2; conv++) {
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_linear l;
        sd_conv2d c;
        sd_lora lo;
        sd_lora_rt rt = { .seed = 5, .step = 0, .training = 1 };
        if (conv) {
            T_CHECK(sd_conv2d_init(&c, &r, "conv", 3, 4, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS) == SD_OK);
            T_CHECK(sd_lora_init(&lo, &lr, "lora_conv", 3, 4, 4, 3.0f, 1, 3, 3, sd_conv2d_geom_make(1, 1), 1) == SD_OK);
            T_CHECK(sd_conv2d_set_lora(&c, &lo) == SD_OK);
        } else {
            T_CHECK(sd_linear_init(&l, &r, "lin", 6, 5, SD_NN_BIAS) == SD_OK);
            T_CHECK(sd_lora_init(&lo, &lr, "lora_lin", 6, 5, 4, 2.0f, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0) == SD_OK);
            T_CHECK(sd_linear_set_lora(&l, &lo) == SD_OK);
        }
        sd_params_set_trainable(&r, "", 0);
        lo.dy_unit = 2;
        lo.rt = &rt;
        lo.id = 3;
        alloc_params(&r);
        alloc_params(&lr);
        unit u = { .kind = conv ? K_CONV : K_LINEAR, .layer = conv ? (void *)&c : (void *)&l, .regs = { &lr }, .nregs = 1 };
        int64_t ys[4];
        if (conv) {
            int64_t xs[4] = { 2, 3, 5, 4 };
            sd_conv2d_out_shape(&c, xs, ys);
            unit_io(&u, 4, xs, NULL, 0, 4, ys);
            u.plan = sd_conv2d_plan(&c, xs);
        } else {
            unit_io(&u, 3, (int64_t[]){ 2, 3, 6 }, NULL, 0, 3, (int64_t[]){ 2, 3, 5 });
            u.plan = sd_linear_plan(&l, 3, u.in[0].shape);
        }
        for (int want = 0; want <= 2; want += 2) {
            while (sd_lora_dy_draw(&lo) != want) rt.step++;
            size_t dmark = sd_arena_mark(&g_data);
            sd_tensor rtn = tt(u.out.ndim, u.out.shape);
            fill(&rtn, 1.0, 0);
            const double *rr = D(&rtn);
            double *gd = D(&lo.down->grad), *gu = D(&lo.up->grad), *gx = D(&u.din[0]);
            for (int64_t j = 0; j < sd_tensor_numel(&lo.down->grad); j++) gd[j] = 0.25;
            for (int64_t j = 0; j < sd_tensor_numel(&lo.up->grad); j++) gu[j] = 0.25;
            for (int64_t j = 0; j < sd_tensor_numel(&u.din[0]); j++) gx[j] = 0.25;
            sd_arena_reset(&g_act, 0);
            T_CHECK(u_forward(&u, &g_act) == SD_OK);
            size_t used = (g_act.used + 63) & ~(size_t)63;
            T_CHECKF(used == u.plan.saved, "plan %zu saved bytes, forward used %zu", u.plan.saved, used);
            T_CHECK(u_backward(&u, &rtn) == SD_OK);
            T_EQ_INT(lo.dy_tr, want);
            int bad = check_tensor(&u, "input", D(&u.in[0]), gx, sd_tensor_numel(&u.in[0]), rr, TOL, 0);
            int64_t K = sd_tensor_numel(&lo.down->value) / 4, out = lo.out;
            bad += check_tensor(&u, "down rows", D(&lo.down->value) + want * K, gd + want * K, 2 * K, rr, TOL, 0);
            /* up columns want, want+1 and the untouched rows */
            double *uv = D(&lo.up->value);
            const double h = 1e-5;
            int untouched = 1;
            for (int64_t o = 0; o < out; o++)
                for (int j = 0; j < 4; j++) {
                    int64_t e = o * 4 + j;
                    if (j < want || j >= want + 2) { untouched &= gu[e] == 0.25; continue; }
                    double keep = uv[e];
                    uv[e] = keep + h;
                    double lp = loss(&u, rr);
                    uv[e] = keep - h;
                    double lm = loss(&u, rr);
                    uv[e] = keep;
                    double num = (lp - lm) / (2 * h), err = fabs(num - (gu[e] - 0.25)) / fmax(1.0, fabs(num));
                    if (err > g_maxerr) g_maxerr = err;
                    if (!(err <= TOL)) bad++, printf("#   d/d up[%lld]: analytic %.12g numeric %.12g\n", (long long)e, gu[e] - 0.25, num);
                }
            for (int j = 0; j < 4; j++)
                if (j < want || j >= want + 2)
                    for (int64_t i = 0; i < K; i++) untouched &= gd[j * K + i] == 0.25;
            T_CHECKF(bad == 0, "conv %d tr %d: %d checks failed", conv, want, bad);
            T_CHECKF(untouched, "conv %d tr %d: a row outside the trained ones got a gradient", conv, want);
            sd_arena_reset(&g_data, dmark);
        }
        sd_lora_free(&lo);
        reset_all(&r, &lr);
    }
}

static void test_norms(void)
{
    for (int act = 0; act < 2; act++) {
        sd_params r;
        sd_params_init(&r);
        sd_groupnorm g;
        T_CHECK(sd_groupnorm_init(&g, &r, "gn", 6, 3, 1e-5f, act ? SD_ACT_SILU : SD_ACT_NONE) == SD_OK);
        alloc_params(&r);
        int64_t xs[4] = { 2, 6, 3, 2 };
        unit u = { .kind = K_GN, .layer = &g, .regs = { &r }, .nregs = 1 };
        unit_io(&u, 4, xs, NULL, 0, 4, xs);
        u.plan = sd_groupnorm_plan(&g, 4, xs);
        run_unit(&u);
        reset_all(&r, NULL);
    }
    sd_params r;
    sd_params_init(&r);
    sd_layernorm n;
    T_CHECK(sd_layernorm_init(&n, &r, "ln", 7, 1e-5f) == SD_OK);
    alloc_params(&r);
    int64_t xs[3] = { 2, 3, 7 };
    unit u = { .kind = K_LN, .layer = &n, .regs = { &r }, .nregs = 1 };
    unit_io(&u, 3, xs, NULL, 0, 3, xs);
    u.plan = sd_layernorm_plan(&n, 3, xs);
    run_unit(&u);
    reset_all(&r, NULL);
}

static void test_attention(void)
{
    for (int variant = 0; variant < 5; variant++) {
        /* 0 self (ldm), 1 cross (ldm), 2 CLIP causal self with biases, 3 cross + LoRA on to_k/to_out,
         * 4 VAE (1×1 conv q/k/v/proj_out with biases, one head) */
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_attention a;
        sd_lora lk, lo;
        int cross = variant == 1 || variant == 3;
        sd_attn_style style = variant == 2 ? SD_ATTN_CLIP : variant == 4 ? SD_ATTN_VAE : SD_ATTN_LDM;
        T_CHECK(sd_attention_init(&a, &r, "attn", 8, cross ? 6 : 0, variant == 4 ? 1 : 2, variant == 4 ? 8 : 3, style) == SD_OK);
        a.causal = variant == 2;
        if (variant == 3) {
            T_CHECK(sd_lora_init(&lk, &lr, "lora_k", 6, 6, 2, 1, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0) == SD_OK);
            T_CHECK(sd_lora_init(&lo, &lr, "lora_o", 6, 8, 2, 4, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0) == SD_OK);
            T_CHECK(sd_linear_set_lora(&a.k, &lk) == SD_OK);
            T_CHECK(sd_linear_set_lora(&a.out, &lo) == SD_OK);
        }
        alloc_params(&r);
        alloc_params(&lr);
        int64_t xs[3] = { 2, 4, 8 }, cs[3] = { 2, 5, 6 };
        unit u = { .kind = K_ATTN, .layer = &a, .regs = { &r, &lr }, .nregs = 2 };
        unit_io(&u, 3, xs, cross ? cs : NULL, 3, 3, xs);
        u.plan = sd_attention_plan(&a, xs, cross ? cs : NULL);
        run_unit(&u);
        if (variant == 3) { sd_lora_free(&lk); sd_lora_free(&lo); }
        reset_all(&r, &lr);
    }
}

static void test_ff(void)
{
    for (int kind = SD_FF_GEGLU; kind <= SD_FF_CLIP_GELU; kind++) {
        sd_params r;
        sd_params_init(&r);
        sd_ff f;
        T_CHECK(sd_ff_init(&f, &r, "ff", 6, 10, (sd_ff_kind)kind) == SD_OK);
        alloc_params(&r);
        int64_t xs[3] = { 2, 3, 6 };
        unit u = { .kind = K_FF, .layer = &f, .regs = { &r }, .nregs = 1 };
        unit_io(&u, 3, xs, NULL, 0, 3, xs);
        u.plan = sd_ff_plan(&f, 3, xs);
        run_unit(&u);
        reset_all(&r, NULL);
    }
}

static void test_resblock(void)
{
    for (int variant = 0; variant < 4; variant++) {
        /* 0: 32 → 64 (skip conv), 1: 32 → 32 (identity skip), 2: 32 → 64 checkpointed + conv LoRA,
         * 3: frozen base with LoRA on conv1, no input gradient wanted (the skipped-work path) */
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_resblock b;
        sd_lora lo;
        int cout = variant == 1 ? 32 : 64;
        T_CHECK(sd_resblock_init(&b, &r, "rb", 32, cout, 12) == SD_OK);
        b.checkpoint = variant == 2;
        if (variant == 3) sd_params_set_trainable(&r, "", 0);
        if (variant >= 2) {
            T_CHECK(sd_lora_init(&lo, &lr, "lora_conv1", 32, cout, 2, 1, 1, 3, 3, sd_conv2d_geom_make(1, 1), 1) == SD_OK);
            T_CHECK(sd_conv2d_set_lora(&b.conv1, &lo) == SD_OK);
        }
        alloc_params(&r);
        alloc_params(&lr);
        int64_t xs[4] = { 2, 32, 3, 2 }, es[2] = { 2, 12 }, ys[4] = { 2, cout, 3, 2 };
        unit u = { .kind = K_RES, .layer = &b, .regs = { &r, &lr }, .nregs = 2 };
        unit_io(&u, 4, xs, es, 2, 4, ys);
        u.plan = sd_resblock_plan(&b, xs);
        u.need_din[0] = variant != 3;
        run_unit(&u);
        if (variant >= 2) sd_lora_free(&lo);
        reset_all(&r, &lr);
    }
}

static void test_transformer_block(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_transformer_block t;
    T_CHECK(sd_transformer_block_init(&t, &r, "tb", 8, 2, 4, 6) == SD_OK);
    alloc_params(&r);
    int64_t xs[3] = { 2, 3, 8 }, cs[3] = { 2, 4, 6 };
    unit u = { .kind = K_TBLOCK, .layer = &t, .regs = { &r }, .nregs = 1 };
    unit_io(&u, 3, xs, cs, 3, 3, xs);
    u.plan = sd_transformer_block_plan(&t, xs, cs);
    run_unit(&u);
    reset_all(&r, NULL);
}

static void test_spatial_transformer(void)
{
    for (int variant = 0; variant < 4; variant++) {
        /* 0: SD1 (conv proj), depth 1; 1: SD2 (linear proj), depth 2; 2: SD1 checkpointed + LoRA on
         * proj_in; 3: frozen base with LoRA on attn2.to_k, no input gradient wanted */
        sd_params r, lr;
        sd_params_init(&r);
        sd_params_init(&lr);
        sd_spatial_transformer s;
        sd_lora lo;
        T_CHECK(sd_spatial_transformer_init(&s, &r, "st", 32, 2, 4, variant == 1 ? 2 : 1, 6, variant == 1) == SD_OK);
        s.checkpoint = variant == 2;
        if (variant == 2) {
            T_CHECK(sd_lora_init(&lo, &lr, "lora_proj_in", 32, 8, 2, 1, 0, 1, 1, sd_conv2d_geom_make(1, 0), 1) == SD_OK);
            T_CHECK(sd_linear_set_lora(&s.proj_in, &lo) == SD_OK);
        }
        if (variant == 3) {
            sd_params_set_trainable(&r, "", 0);
            T_CHECK(sd_lora_init(&lo, &lr, "lora_to_k", 6, 8, 2, 1, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0) == SD_OK);
            T_CHECK(sd_linear_set_lora(&s.blocks[0].attn2.k, &lo) == SD_OK);
        }
        alloc_params(&r);
        alloc_params(&lr);
        int64_t xs[4] = { 2, 32, 2, 2 }, cs[3] = { 2, 3, 6 };
        unit u = { .kind = K_ST, .layer = &s, .regs = { &r, &lr }, .nregs = 2 };
        unit_io(&u, 4, xs, cs, 3, 4, xs);
        u.plan = sd_spatial_transformer_plan(&s, xs, cs);
        u.need_din[0] = variant != 3;
        run_unit(&u);
        if (variant >= 2) sd_lora_free(&lo);
        sd_spatial_transformer_free(&s);
        reset_all(&r, &lr);
    }
}

static void test_sampling(void)
{
    for (int up = 0; up < 2; up++) {
        sd_params r;
        sd_params_init(&r);
        sd_downsample d;
        sd_upsample us;
        if (up) T_CHECK(sd_upsample_init(&us, &r, "up", 3, 4) == SD_OK);
        else T_CHECK(sd_downsample_init(&d, &r, "down", 3, 4) == SD_OK);
        alloc_params(&r);
        int64_t xs[4] = { 2, 3, 3, 4 }, ys[4] = { 2, 4, up ? 6 : 2, up ? 8 : 2 };
        unit u = { .kind = up ? K_UP : K_DOWN, .layer = up ? (void *)&us : (void *)&d, .regs = { &r }, .nregs = 1 };
        unit_io(&u, 4, xs, NULL, 0, 4, ys);
        u.plan = up ? sd_upsample_plan(&us, xs) : sd_downsample_plan(&d, xs);
        run_unit(&u);
        reset_all(&r, NULL);
    }
}

static void test_embedding(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_embedding e;
    T_CHECK(sd_embedding_init(&e, &r, "token_embedding", "weight", 7, 5) == SD_OK);
    T_EQ_STR(e.w->key, "token_embedding.weight");
    alloc_params(&r);
    unit u = { .kind = K_EMB, .layer = &e, .regs = { &r }, .nregs = 1, .nin = 1 };
    T_CHECK(sd_arena_tensor(&g_data, &u.in[0], SD_I32, 2, (int64_t[]){ 2, 4 }) == SD_OK);
    int32_t ids[8] = { 0, 3, 3, 6, 1, 6, 2, 3 };   /* repeated ids accumulate */
    memcpy(u.in[0].data, ids, sizeof ids);
    u.out = tt(3, (int64_t[]){ 2, 4, 5 });
    u.plan.saved = 0;
    run_unit(&u);
    reset_all(&r, NULL);
}

/* A tiny SDXL-shaped UNet (no attention on level 0, label_emb): d vec (through label_emb and every
 * ResBlock's emb_layers), d context and the label_emb weights; the rest of the UNet frozen. */
static void test_unet_label_emb(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_model_config mc;
    sd_model_config_preset(SD_FAMILY_SDXL, &mc);
    sd_unet_config c = mc.unet;
    c.model_channels = 32;
    c.n_levels = 2;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.num_res_blocks[0] = c.num_res_blocks[1] = 1;
    c.n_attn = 1;
    c.attention_resolutions[0] = 2;
    c.transformer_depth[0] = 0;
    c.transformer_depth[1] = 1;
    c.transformer_depth_middle = 1;
    c.num_heads = -1;
    c.num_head_channels = 32;
    c.context_dim = 6;
    c.adm_in_channels = 5;
    sd_unet un;
    T_CHECK(sd_unet_init(&un, &r, NULL, &c) == SD_OK);
    sd_params_set_trainable(&r, "", 0);
    T_EQ_INT(sd_params_set_trainable(&r, "label_emb.", 1), 4);
    alloc_params(&r);
    int64_t xs[4] = { 2, 4, 2, 2 }, vs[2] = { 2, 5 }, cs[3] = { 2, 3, 6 };
    g_unet_x = tt(4, xs);
    fill(&g_unet_x, 1.0, 0);
    g_unet_t = tt(1, (int64_t[]){ 2 });
    D(&g_unet_t)[0] = 999;
    D(&g_unet_t)[1] = 17;
    unit u = { .kind = K_UNET, .layer = &un, .regs = { &r }, .nregs = 1 };
    unit_io(&u, 2, vs, cs, 3, 4, xs);
    u.plan = sd_unet_plan(&un, 2, 2, 2, 3);
    run_unit(&u);
    sd_unet_free(&un);
    reset_all(&r, NULL);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, (size_t)64 << 20) || sd_arena_init(&g_act, SD_DEV_CPU, (size_t)16 << 20) ||
        sd_arena_init(&g_data, SD_DEV_CPU, (size_t)16 << 20)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    shadow_add(g_ctx.scratch.base, g_ctx.scratch.cap);
    shadow_add(g_act.base, g_act.cap);
    shadow_add(g_data.base, g_data.cap);
    T_RUN(test_checker_catches_errors);
    T_RUN(test_linear);
    T_RUN(test_conv);
    T_RUN(test_dylora);
    T_RUN(test_norms);
    T_RUN(test_attention);
    T_RUN(test_ff);
    T_RUN(test_resblock);
    T_RUN(test_transformer_block);
    T_RUN(test_spatial_transformer);
    T_RUN(test_sampling);
    T_RUN(test_embedding);
    T_RUN(test_unet_label_emb);
    T_RUN(test_lyco_loha);   /* last: the draws of the tests above stay as they were */
    T_RUN(test_lyco_lokr);
    T_RUN(test_lyco_dropout);
    T_RUN(test_lora_tucker);
    T_RUN(test_lyco_loha_tucker);
    printf("# max relative error %.3g (tolerance %.0e)\n", g_maxerr, TOL);
    sd_arena_free(&g_act);
    sd_arena_free(&g_data);
    sd_ctx_free(&g_ctx);
    shadow_clear();
    T_DONE();
}
