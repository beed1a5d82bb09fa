/* lycoris.kohya algo=lora/locon modules (sd-train's LoRA hooks, nn/lora_hook.h, on sd_linear /
 * sd_conv2d) against LyCORIS's own LoConModule in PyTorch (tests/golden/gen/make_lycoris_train_golden.py):
 * output, input gradient and the lora_down / lora_up gradients of a linear, a 3×3 conv, a linear at
 * multiplier 0.6 and a linear with rs_lora (its alpha buffer alpha·sqrt(rank)), each with
 * max|Δ| <= 1e-5 · max|ref| (LyCORIS runs the weight-delta form, these hooks the factored form: equal
 * up to rounding); then 3 AdamW steps from LyCORIS's init (lora_down taken from the golden: torch's
 * kaiming draws are not reproduced) for the linear and the conv. The same for LoHa (nn/lyco.h, the
 * weight-delta form LyCORIS runs) against LohaModule: output, input gradient, the four hada factors'
 * gradients, and 3 AdamW steps from LyCORIS's init (taken from the golden); and for LoKr against
 * LokrModule (w2 factored; a full 4-d w2 with scale 1; decompose_both with factor 4 at multiplier 0.6). */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "nn/nn.h"
#include "train/optim.h"
#include "test.h"
#include "golden/golden_st.h"

static sd_ctx g_ctx;
static sd_arena g_act;

typedef struct host {
    sd_params hr, nr;          /* host layer (frozen), network (lora_down / lora_up) */
    sd_linear lin;
    sd_conv2d conv;
    sd_lora lora;              /* the LoCon cases' module */
    sd_lyco m;                 /* the LoHa / LoKr cases' module */
    int is_conv;
} host;

/* the module of golden case `tag` (its alpha from the golden's alpha buffer) on a fresh host */
static int host_init(host *h, const char *tag, int is_conv, float mult)
{
    memset(h, 0, sizeof *h);
    sd_params_init(&h->hr);
    sd_params_init(&h->nr);
    h->is_conv = is_conv;
    char name[96];
    sd_tensor al;
    snprintf(name, sizeof name, "%s.alpha", tag);
    int rc = golden(name, &al);
    if (rc) return rc;
    float alpha = ((float *)al.data)[0];
    sd_tensor_free(&al);
    sd_conv2d_geom g = sd_conv2d_geom_make(1, 1);
    rc = is_conv ? sd_conv2d_init(&h->conv, &h->hr, tag, 3, 6, 3, 3, g, SD_NN_BIAS)
                 : sd_linear_init(&h->lin, &h->hr, tag, 5, 12, SD_NN_BIAS);
    if (!rc) rc = sd_params_set_trainable(&h->hr, "", 0) < 0 ? -1 : SD_OK;
    if (!rc) rc = sd_lora_init(&h->lora, &h->nr, tag, is_conv ? 3 : 5, is_conv ? 6 : 12, is_conv ? 2 : 3, alpha, is_conv,
                               is_conv ? 3 : 1, is_conv ? 3 : 1, g, 0);
    h->lora.multiplier = mult;
    if (!rc) rc = sd_params_alloc(&h->hr, SD_DEV_CPU);
    if (!rc) rc = sd_params_alloc(&h->nr, SD_DEV_CPU);
    sd_param *w = is_conv ? h->conv.w : h->lin.w, *b = is_conv ? h->conv.b : h->lin.b;
    snprintf(name, sizeof name, "%s.weight", tag);
    if (!rc) rc = load_into(name, &w->value);
    snprintf(name, sizeof name, "%s.bias", tag);
    if (!rc) rc = load_into(name, &b->value);
    if (!rc) rc = is_conv ? sd_conv2d_set_lora(&h->conv, &h->lora) : sd_linear_set_lora(&h->lin, &h->lora);
    return rc;
}

static void host_free(host *h)
{
    sd_lora_free(&h->lora);
    sd_params_free(&h->hr);
    sd_params_free(&h->nr);
}

static int step(host *h, const sd_tensor *x, const sd_tensor *r, sd_tensor *y, sd_tensor *dx)
{
    int rc = h->is_conv ? sd_conv2d_forward(&g_ctx, &h->conv, &g_act, y, x) : sd_linear_forward(&g_ctx, &h->lin, &g_act, y, x);
    if (!rc) rc = h->is_conv ? sd_conv2d_backward(&g_ctx, &h->conv, dx, r) : sd_linear_backward(&g_ctx, &h->lin, dx, r);
    sd_arena_reset(&g_act, 0);
    return rc;
}

static int io_alloc(const char *kind, sd_tensor *x, sd_tensor *r, sd_tensor *y, sd_tensor *dx)
{
    char name[64];
    snprintf(name, sizeof name, "%s.x", kind);
    int rc = golden(name, x);
    snprintf(name, sizeof name, "%s.r", kind);
    if (!rc) rc = golden(name, r);
    if (!rc) rc = sd_tensor_alloc(y, SD_F32, r->ndim, r->shape);
    if (!rc) rc = sd_tensor_alloc(dx, SD_F32, x->ndim, x->shape);
    return rc;
}

static void io_free(sd_tensor *x, sd_tensor *r, sd_tensor *y, sd_tensor *dx)
{
    sd_tensor_free(x);
    sd_tensor_free(r);
    sd_tensor_free(y);
    sd_tensor_free(dx);
}

static void check_case(const char *tag, int is_conv, float mult)
{
    host h;
    int rc = host_init(&h, tag, is_conv, mult);
    char name[96];
    snprintf(name, sizeof name, "%s.down", tag);
    if (!rc) rc = load_into(name, &h.lora.down->value);
    snprintf(name, sizeof name, "%s.up", tag);
    if (!rc) rc = load_into(name, &h.lora.up->value);
    sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
    if (!rc) rc = io_alloc(tag, &x, &r, &y, &dx);
    if (!rc) rc = sd_params_zero_grad(&g_ctx, &h.nr);
    if (!rc) memset(dx.data, 0, sd_tensor_nbytes(&dx));
    if (!rc) rc = step(&h, &x, &r, &y, &dx);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        snprintf(name, sizeof name, "%s.y", tag);
        T_CHECK(close_to(name, y.data, name, 1e-5));
        snprintf(name, sizeof name, "%s.dx", tag);
        T_CHECK(close_to(name, dx.data, name, 1e-5));
        snprintf(name, sizeof name, "%s.ddown", tag);
        T_CHECK(close_to(name, h.lora.down->grad.data, name, 1e-5));
        snprintf(name, sizeof name, "%s.dup", tag);
        T_CHECK(close_to(name, h.lora.up->grad.data, name, 1e-5));
    }
    io_free(&x, &r, &y, &dx);
    host_free(&h);
}

static void test_linear(void) { check_case("lin", 0, 1.0f); }
static void test_conv(void) { check_case("conv", 1, 1.0f); }
static void test_multiplier(void) { check_case("half", 0, 0.6f); }
static void test_rs_lora(void) { check_case("rs", 0, 1.0f); }

static void adamw_steps(const char *kind, int is_conv)
{
    host h;
    char tag[16], name[64];
    snprintf(tag, sizeof tag, "t%s", kind);
    int rc = host_init(&h, is_conv ? "conv" : "lin", is_conv, 1.0f);
    snprintf(name, sizeof name, "%s.down.s0", tag);
    if (!rc) rc = load_into(name, &h.lora.down->value);
    if (!rc) rc = sd_op_fill(&g_ctx, &h.lora.up->value, 0.0f);   /* LyCORIS: lora_up zeros */
    sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
    if (!rc) rc = io_alloc(kind, &x, &r, &y, &dx);
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_param *ps[2] = { h.lora.down, h.lora.up };
    sd_optim_group_desc gd = { "unet", 1e-2, ps, 2 };
    sd_optim o;
    if (!rc) rc = sd_optim_init(&o, &cfg, &gd, 1);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    double lr = 1e-2;
    for (int s = 1; s <= 3 && !rc; s++) {
        rc = sd_params_zero_grad(&g_ctx, &h.nr);
        if (!rc) rc = step(&h, &x, &r, &y, &dx);
        if (!rc) rc = sd_optim_step(&o, &lr, NULL);
        snprintf(name, sizeof name, "%s.down.s%d", tag, s);
        if (!rc) T_CHECK(close_to(name, h.lora.down->value.data, name, 1e-5));
        snprintf(name, sizeof name, "%s.up.s%d", tag, s);
        if (!rc) T_CHECK(close_to(name, h.lora.up->value.data, name, 1e-5));
    }
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    sd_optim_free(&o);
    io_free(&x, &r, &y, &dx);
    host_free(&h);
}

static void test_adamw_linear(void) { adamw_steps("lin", 0); }
static void test_adamw_conv(void) { adamw_steps("conv", 1); }

/* ---- LoHa (nn/lyco.h weight-delta modules) against LohaModule ---------------------------------------- */

static const char *const k_hada[4] = { "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b" };


static int loha_host_init(host *h, const char *tag, int is_conv, float mult)
{
    memset(h, 0, sizeof *h);
    sd_params_init(&h->hr);
    sd_params_init(&h->nr);
    h->is_conv = is_conv;
    char name[96];
    sd_tensor al;
    snprintf(name, sizeof name, "%s.alpha", tag);
    int rc = golden(name, &al);
    if (rc) return rc;
    float alpha = ((float *)al.data)[0];
    sd_tensor_free(&al);
    const char *hname = is_conv ? "conv" : "lin";
    rc = is_conv ? sd_conv2d_init(&h->conv, &h->hr, hname, 3, 6, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS)
                 : sd_linear_init(&h->lin, &h->hr, hname, 5, 12, SD_NN_BIAS);
    if (!rc) rc = sd_params_set_trainable(&h->hr, "", 0) < 0 ? -1 : SD_OK;
    if (!rc) rc = sd_lyco_init_loha(&h->m, &h->nr, tag, is_conv ? 6 : 12, is_conv ? 27 : 5, is_conv ? 2 : 3, alpha);
    h->m.multiplier = mult;
    if (!rc) rc = sd_params_alloc(&h->hr, SD_DEV_CPU);
    if (!rc) rc = sd_params_alloc(&h->nr, SD_DEV_CPU);
    sd_param *w = is_conv ? h->conv.w : h->lin.w, *b = is_conv ? h->conv.b : h->lin.b;
    snprintf(name, sizeof name, "%s.weight", hname);
    if (!rc) rc = load_into(name, &w->value);
    snprintf(name, sizeof name, "%s.bias", hname);
    if (!rc) rc = load_into(name, &b->value);
    if (!rc) rc = is_conv ? sd_conv2d_set_lyco(&h->conv, &h->m) : sd_linear_set_lyco(&h->lin, &h->m);
    return rc;
}

static void check_loha(const char *tag, int is_conv, float mult)
{
    host h;
    char name[96];
    int rc = loha_host_init(&h, tag, is_conv, mult);
    for (int k = 0; k < 4 && !rc; k++) {
        snprintf(name, sizeof name, "%s.%s", tag, k_hada[k]);
        rc = load_into(name, &h.m.p[k]->value);
    }
    sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
    if (!rc) rc = io_alloc(is_conv ? "conv" : "lin", &x, &r, &y, &dx);
    if (!rc) rc = sd_params_zero_grad(&g_ctx, &h.nr);
    if (!rc) memset(dx.data, 0, sd_tensor_nbytes(&dx));
    if (!rc) rc = step(&h, &x, &r, &y, &dx);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        snprintf(name, sizeof name, "%s.y", tag);
        T_CHECK(close_to(name, y.data, name, 1e-5));
        snprintf(name, sizeof name, "%s.dx", tag);
        T_CHECK(close_to(name, dx.data, name, 1e-5));
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "%s.d%s", tag, k_hada[k]);
            T_CHECK(close_to(name, h.m.p[k]->grad.data, name, 1e-5));
        }
    }
    io_free(&x, &r, &y, &dx);
    host_free(&h);
}

static void test_loha_linear(void) { check_loha("hlin", 0, 1.0f); }
static void test_loha_conv(void) { check_loha("hconv", 1, 1.0f); }
static void test_loha_multiplier(void) { check_loha("hhalf", 0, 0.6f); }

static void loha_adamw(const char *kind, int is_conv)
{
    host h;
    char tag[16], name[96];
    snprintf(tag, sizeof tag, "th%s", kind);
    int rc = loha_host_init(&h, is_conv ? "hconv" : "hlin", is_conv, 1.0f);
    for (int k = 0; k < 4 && !rc; k++) {
        snprintf(name, sizeof name, "%s.%s.s0", tag, k_hada[k]);
        rc = load_into(name, &h.m.p[k]->value);
    }
    sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
    if (!rc) rc = io_alloc(kind, &x, &r, &y, &dx);
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    sd_param *ps[4] = { h.m.p[0], h.m.p[1], h.m.p[2], h.m.p[3] };
    sd_optim_group_desc gd = { "unet", 1e-2, ps, 4 };
    sd_optim o;
    if (!rc) rc = sd_optim_init(&o, &cfg, &gd, 1);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    double lr = 1e-2;
    for (int s = 1; s <= 3 && !rc; s++) {
        rc = sd_params_zero_grad(&g_ctx, &h.nr);
        if (!rc) rc = step(&h, &x, &r, &y, &dx);
        if (!rc) rc = sd_optim_step(&o, &lr, NULL);
        for (int k = 0; k < 4 && !rc; k++) {
            snprintf(name, sizeof name, "%s.%s.s%d", tag, k_hada[k], s);
            T_CHECK(close_to(name, h.m.p[k]->value.data, name, 1e-5));
        }
    }
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    sd_optim_free(&o);
    io_free(&x, &r, &y, &dx);
    host_free(&h);
}

static void test_loha_adamw_linear(void) { loha_adamw("lin", 0); }
static void test_loha_adamw_conv(void) { loha_adamw("conv", 1); }

/* ---- LoKr against LokrModule ------------------------------------------------------------------------- */

typedef struct kcase {
    const char *tag, *io;     /* golden case; its host's x / r */
    int conv, in, out, rank, factor, both;
    float mult;
} kcase;

static const kcase k_cases[] = {
    { "klin", "lin", 0, 5, 12, 1, -1, 0, 1.0f },
    { "kconv", "conv", 1, 3, 6, 2, -1, 0, 1.0f },
    { "kdb", "lin16", 0, 16, 16, 1, 4, 1, 0.6f },
};

/* the factor name of parameter k ("lokr_w1", …): its key after the module name */
static const char *suffix(const sd_param *p) { return strchr(p->key, '.') + 1; }

static int khost_init(host *h, const kcase *kc)
{
    memset(h, 0, sizeof *h);
    sd_params_init(&h->hr);
    sd_params_init(&h->nr);
    h->is_conv = kc->conv;
    char name[96];
    sd_tensor al;
    snprintf(name, sizeof name, "%s.alpha", kc->tag);
    int rc = golden(name, &al);
    if (rc) return rc;
    float alpha = ((float *)al.data)[0];
    sd_tensor_free(&al);
    rc = kc->conv ? sd_conv2d_init(&h->conv, &h->hr, kc->io, kc->in, kc->out, 3, 3, sd_conv2d_geom_make(1, 1), SD_NN_BIAS)
                  : sd_linear_init(&h->lin, &h->hr, kc->io, kc->in, kc->out, SD_NN_BIAS);
    if (!rc) rc = sd_params_set_trainable(&h->hr, "", 0) < 0 ? -1 : SD_OK;
    if (!rc) rc = sd_lyco_init_lokr(&h->m, &h->nr, kc->tag, kc->out, kc->in, kc->conv ? 3 : 1, kc->conv ? 3 : 1, kc->conv,
                                    kc->rank, alpha, kc->factor, kc->both, 0, 0);
    h->m.multiplier = kc->mult;
    if (!rc) rc = sd_params_alloc(&h->hr, SD_DEV_CPU);
    if (!rc) rc = sd_params_alloc(&h->nr, SD_DEV_CPU);
    sd_param *w = kc->conv ? h->conv.w : h->lin.w, *b = kc->conv ? h->conv.b : h->lin.b;
    snprintf(name, sizeof name, "%s.weight", kc->io);
    if (!rc) rc = load_into(name, &w->value);
    snprintf(name, sizeof name, "%s.bias", kc->io);
    if (!rc) rc = load_into(name, &b->value);
    if (!rc) rc = kc->conv ? sd_conv2d_set_lyco(&h->conv, &h->m) : sd_linear_set_lyco(&h->lin, &h->m);
    return rc;
}

static void test_lokr_cases(void)
{
    for (size_t ci = 0; ci < sizeof k_cases / sizeof *k_cases; ci++) {
        const kcase *kc = &k_cases[ci];
        host h;
        char name[96];
        int rc = khost_init(&h, kc);
        for (int k = 0; k < 4 && !rc; k++) {
            if (!h.m.p[k]) continue;
            snprintf(name, sizeof name, "%s.%s", kc->tag, suffix(h.m.p[k]));
            rc = load_into(name, &h.m.p[k]->value);
        }
        sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
        if (!rc) rc = io_alloc(kc->io, &x, &r, &y, &dx);
        if (!rc) rc = sd_params_zero_grad(&g_ctx, &h.nr);
        if (!rc) memset(dx.data, 0, sd_tensor_nbytes(&dx));
        if (!rc) rc = step(&h, &x, &r, &y, &dx);
        T_CHECKF(rc == SD_OK, "%s: %s", kc->tag, sd_errmsg());
        if (!rc) {
            snprintf(name, sizeof name, "%s.y", kc->tag);
            T_CHECK(close_to(name, y.data, name, 1e-5));
            snprintf(name, sizeof name, "%s.dx", kc->tag);
            T_CHECK(close_to(name, dx.data, name, 1e-5));
            for (int k = 0; k < 4; k++) {
                if (!h.m.p[k]) continue;
                snprintf(name, sizeof name, "%s.d%s", kc->tag, suffix(h.m.p[k]));
                T_CHECK(close_to(name, h.m.p[k]->grad.data, name, 1e-5));
            }
        }
        io_free(&x, &r, &y, &dx);
        host_free(&h);
    }
}

static void test_lokr_adamw(void)
{
    for (size_t ci = 0; ci < sizeof k_cases / sizeof *k_cases; ci++) {
        const kcase *kc = &k_cases[ci];
        host h;
        char name[96];
        int rc = khost_init(&h, kc);
        sd_param *ps[4];
        int np = 0;
        for (int k = 0; k < 4 && !rc; k++) {
            if (!h.m.p[k]) continue;
            ps[np++] = h.m.p[k];
            snprintf(name, sizeof name, "t%s.%s.s0", kc->tag, suffix(h.m.p[k]));
            rc = load_into(name, &h.m.p[k]->value);
        }
        sd_tensor x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
        if (!rc) rc = io_alloc(kc->io, &x, &r, &y, &dx);
        sd_optim_config cfg;
        sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
        sd_optim_group_desc gd = { "unet", 1e-2, ps, (size_t)np };
        sd_optim o;
        if (!rc) rc = sd_optim_init(&o, &cfg, &gd, 1);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        if (rc) return;
        double lr = 1e-2;
        for (int s = 1; s <= 3 && !rc; s++) {
            rc = sd_params_zero_grad(&g_ctx, &h.nr);
            if (!rc) rc = step(&h, &x, &r, &y, &dx);
            if (!rc) rc = sd_optim_step(&o, &lr, NULL);
            for (int k = 0; k < np && !rc; k++) {
                snprintf(name, sizeof name, "t%s.%s.s%d", kc->tag, suffix(ps[k]), s);
                T_CHECK(close_to(name, ps[k]->value.data, name, 1e-5));
            }
        }
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        sd_optim_free(&o);
        io_free(&x, &r, &y, &dx);
        host_free(&h);
    }
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, (size_t)16 << 20) || sd_arena_init(&g_act, SD_DEV_CPU, (size_t)4 << 20) ||
        sd_safetensors_open(t_root_pathf("tests/data/lycoris/golden_lycoris_train.safetensors"), &g_st)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_linear);
    T_RUN(test_conv);
    T_RUN(test_multiplier);
    T_RUN(test_rs_lora);
    T_RUN(test_adamw_linear);
    T_RUN(test_adamw_conv);
    T_RUN(test_loha_linear);
    T_RUN(test_loha_conv);
    T_RUN(test_loha_multiplier);
    T_RUN(test_loha_adamw_linear);
    T_RUN(test_loha_adamw_conv);
    T_RUN(test_lokr_cases);
    T_RUN(test_lokr_adamw);
    sd_safetensors_close(g_st);
    sd_arena_free(&g_act);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
