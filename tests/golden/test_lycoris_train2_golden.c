/* lycoris.kohya dropouts in training and Tucker LoCon against LyCORIS's own modules in PyTorch
 * (tests/golden/gen/make_lycoris_train2_golden.py), with the masks fed from the golden file (the
 * modules' drop_keep hook; in use they come from Philox draws, which cannot equal torch's):
 * rank_dropout of LoConModule in its default form (rows of ΔW = the branch's output channels) on a
 * linear at multiplier 0.6 and a 3×3 conv; LoConModule in bypass_mode with rank_dropout (the rank
 * channels of lora_down's output) and dropout (nn.Dropout on the branch output, kept values scaled by
 * 1 / (1 - p)); LohaModule's and LokrModule's rank_dropout (rows of ΔW). Output, input gradient and
 * every factor's gradient within 1e-5 · max|ref|. A run without the masks must differ (the masks
 * matter). Tucker LoCon (use_tucker: lora_down 1×1, lora_mid k×k, lora_up) on a 3×3 conv at multiplier
 * 0.6, with rank_dropout, in bypass_mode with both dropouts, and on a stride-2 conv: the same checks,
 * lora_mid's gradient included; LoHa with Tucker factors (hada_t1/hada_t2) against LohaModule(use_tucker=True),
 * plain at multiplier 0.6 and with rank_dropout: output, input gradient, the b and t factors' gradients as
 * LyCORIS's, the a factors' as autograd through LyCORIS's forward (its HadaWeightTucker.backward takes them
 * from the other factor's t·w_b product: the golden's lyc_d* values, which must differ). */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "nn/nn.h"
#include "test.h"
#include "golden/golden_st.h"

static sd_ctx g_ctx;
static sd_arena g_act;

/* keep flags (golden floats 0/1) appended to k from position at */
static int flags(const char *name, uint8_t *k, int64_t at, int64_t cap, int64_t *n)
{
    sd_tensor t;
    int rc = golden(name, &t);
    if (rc) return rc;
    int64_t c = sd_tensor_numel(&t);
    if (at + c > cap) rc = sd_err(SD_EINVAL, "%s: too many flags", name);
    for (int64_t i = 0; i < c && !rc; i++) k[at + i] = ((float *)t.data)[i] != 0.0f;
    sd_tensor_free(&t);
    if (n) *n = c;
    return rc;
}

static const char *suffix(const sd_param *p)
{
    const char *s = strrchr(p->key, '.');
    return s ? s + 1 : p->key;
}

enum { LOCON, LOCON_BYPASS, LOHA, LOKR };

static void check_t(const char *tag, int algo, const char *kind, float mult, float rank_dropout, float dropout, int tucker)
{
    const int is_conv = strcmp(kind, "lin") != 0;
    sd_params hr, nr;
    sd_params_init(&hr);
    sd_params_init(&nr);
    sd_linear lin;
    sd_conv2d conv;
    sd_lora lo;
    sd_lyco m;
    memset(&lo, 0, sizeof lo);
    memset(&m, 0, sizeof m);
    sd_lora_rt rt = { .seed = 1, .step = 0, .training = 1 };
    static uint8_t keep[4096];
    char name[96];
    sd_tensor al = { 0 }, x = { 0 }, r = { 0 }, y = { 0 }, dx = { 0 };
    snprintf(name, sizeof name, "%s.alpha", tag);
    int rc = golden(name, &al);
    float alpha = rc ? 1.0f : ((float *)al.data)[0];
    sd_conv2d_geom g = sd_conv2d_geom_make(strcmp(kind, "sconv") ? 1 : 2, 1);
    const int64_t in = is_conv ? 3 : 5, out = is_conv ? 6 : 12, k = is_conv ? 3 : 1;
    if (!rc) rc = is_conv ? sd_conv2d_init(&conv, &hr, kind, in, out, 3, 3, g, SD_NN_BIAS)
                          : sd_linear_init(&lin, &hr, kind, in, out, SD_NN_BIAS);
    if (!rc) rc = sd_params_set_trainable(&hr, "", 0) < 0 ? -1 : SD_OK;
    if (!rc && tucker && algo <= LOCON_BYPASS)
        rc = sd_lora_init_tucker(&lo, &nr, tag, in, out, 2, alpha, 3, 3, g);
    else if (!rc && algo <= LOCON_BYPASS)
        rc = sd_lora_init(&lo, &nr, tag, in, out, is_conv ? 2 : 3, alpha, is_conv, (int)k, (int)k, g, 0);
    else if (!rc && algo == LOHA && tucker)
        rc = sd_lyco_init_loha_tucker(&m, &nr, tag, out, in, 3, 3, 2, alpha);
    else if (!rc && algo == LOHA)
        rc = sd_lyco_init_loha(&m, &nr, tag, out, in * k * k, is_conv ? 2 : 3, alpha);
    else if (!rc)
        rc = sd_lyco_init_lokr(&m, &nr, tag, out, in, (int)k, (int)k, is_conv, is_conv ? 2 : 1, alpha, -1, 0, 0, 0);
    if (!rc) rc = sd_params_alloc(&hr, SD_DEV_CPU);
    if (!rc) rc = sd_params_alloc(&nr, SD_DEV_CPU);
    sd_param *w = is_conv ? conv.w : lin.w, *b = is_conv ? conv.b : lin.b;
    snprintf(name, sizeof name, "%s.weight", kind);
    if (!rc) rc = load_into(name, &w->value);
    snprintf(name, sizeof name, "%s.bias", kind);
    if (!rc) rc = load_into(name, &b->value);
    /* the factors, the masks */
    sd_param *ps[SD_LYCO_NP] = { 0 };
    const char *pn[SD_LYCO_NP] = { 0 };
    int np = 0;
    if (algo <= LOCON_BYPASS) {
        pn[np] = "lora_down", ps[np++] = lo.down;
        pn[np] = "lora_up", ps[np++] = lo.up;
        if (lo.mid) pn[np] = "lora_mid", ps[np++] = lo.mid;
    } else {
        for (int i = 0; i < SD_LYCO_NP; i++)
            if (m.p[i]) pn[np] = suffix(m.p[i]), ps[np++] = m.p[i];
    }
    for (int i = 0; i < np && !rc; i++) {
        snprintf(name, sizeof name, "%s.%s", tag, pn[i]);
        rc = load_into(name, &ps[i]->value);
    }
    int64_t nk = 0;
    if (algo == LOCON_BYPASS) {
        snprintf(name, sizeof name, "%s.keep_rank", tag);
        if (!rc) rc = flags(name, keep, 0, (int64_t)sizeof keep, &nk);
    }
    snprintf(name, sizeof name, "%s.keep", tag);
    if (!rc && rank_dropout > 0) rc = flags(name, keep, nk, (int64_t)sizeof keep, NULL);
    if (algo <= LOCON_BYPASS) {
        lo.multiplier = mult;
        lo.rt = &rt;
        lo.lyco_drop = algo == LOCON_BYPASS ? SD_LORA_DROP_LYCO_BYPASS : SD_LORA_DROP_LYCO;
        lo.rank_dropout = rank_dropout;
        lo.dropout = dropout;
        lo.drop_keep = keep;
        if (!rc) rc = is_conv ? sd_conv2d_set_lora(&conv, &lo) : sd_linear_set_lora(&lin, &lo);
    } else {
        m.multiplier = mult;
        m.rt = &rt;
        m.rank_dropout = rank_dropout;
        m.drop_keep = keep;
        if (!rc) rc = is_conv ? sd_conv2d_set_lyco(&conv, &m) : sd_linear_set_lyco(&lin, &m);
    }
    snprintf(name, sizeof name, "%s.x", kind);
    if (!rc) rc = golden(name, &x);
    snprintf(name, sizeof name, "%s.r", kind);
    if (!rc) rc = golden(name, &r);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, r.ndim, r.shape);
    if (!rc) rc = sd_tensor_alloc(&dx, SD_F32, x.ndim, x.shape);
    if (!rc) rc = sd_params_zero_grad(&g_ctx, &nr);
    if (!rc) memset(dx.data, 0, sd_tensor_nbytes(&dx));
    if (!rc) rc = is_conv ? sd_conv2d_forward(&g_ctx, &conv, &g_act, &y, &x) : sd_linear_forward(&g_ctx, &lin, &g_act, &y, &x);
    if (!rc) rc = is_conv ? sd_conv2d_backward(&g_ctx, &conv, &dx, &r) : sd_linear_backward(&g_ctx, &lin, &dx, &r);
    sd_arena_reset(&g_act, 0);
    T_CHECKF(rc == SD_OK, "%s: %s", tag, sd_errmsg());
    if (!rc) {
        snprintf(name, sizeof name, "%s.y", tag);
        T_CHECK(close_to_d(name, y.data, name, 1e-5, NULL));
        snprintf(name, sizeof name, "%s.dx", tag);
        T_CHECK(close_to_d(name, dx.data, name, 1e-5, NULL));
        for (int i = 0; i < np; i++) {
            snprintf(name, sizeof name, "%s.d%s", tag, pn[i]);
            T_CHECK(close_to_d(name, ps[i]->grad.data, name, 1e-5, NULL));
            snprintf(name, sizeof name, "%s.lyc_d%s", tag, pn[i]);
            if (tucker && algo == LOHA && sd_safetensors_find(g_st, name)) {
                /* LyCORIS's custom backward: the b and t factors agree, the a factors do not */
                double d = 0;
                int same = close_to_d(name, ps[i]->grad.data, name, 1e-5, &d);
                printf("#   %s (LyCORIS's HadaWeightTucker.backward): relative diff %.3g\n", name, d);
                T_CHECK(strstr(pn[i], "_a") ? !same : same);
            }
        }
        /* without the masks (not training) the output is another one */
        rt.training = 0;
        if (rank_dropout > 0) {
        double d = 0;
        rc = is_conv ? sd_conv2d_forward(&g_ctx, &conv, NULL, &y, &x) : sd_linear_forward(&g_ctx, &lin, NULL, &y, &x);
        snprintf(name, sizeof name, "%s.y", tag);
        T_CHECKF(!rc && !close_to_d(name, y.data, name, 1e-3, &d), "%s: the masks changed nothing (%.3g)", tag, d);
        }
    }
    sd_tensor_free(&al);
    sd_tensor_free(&x);
    sd_tensor_free(&r);
    sd_tensor_free(&y);
    sd_tensor_free(&dx);
    sd_lora_free(&lo);
    sd_lyco_free(&m);
    sd_params_free(&hr);
    sd_params_free(&nr);
}

static void check(const char *tag, int algo, int is_conv, float mult, float rank_dropout, float dropout)
{
    check_t(tag, algo, is_conv ? "conv" : "lin", mult, rank_dropout, dropout, 0);
}

static void test_tucker_conv(void) { check_t("tconv", LOCON, "conv", 0.6f, 0.0f, 0.0f, 1); }
static void test_tucker_rank_dropout(void) { check_t("tdconv", LOCON, "conv", 1.0f, 0.5f, 0.0f, 1); }
static void test_tucker_bypass(void) { check_t("tbconv", LOCON_BYPASS, "conv", 1.0f, 0.5f, 0.3f, 1); }
static void test_loha_tucker(void) { check_t("htconv", LOHA, "conv", 0.6f, 0.0f, 0.0f, 1); }
static void test_loha_tucker_rank_dropout(void) { check_t("htdconv", LOHA, "conv", 1.0f, 0.5f, 0.0f, 1); }
static void test_tucker_stride2(void) { check_t("tsconv", LOCON, "sconv", 1.0f, 0.0f, 0.0f, 1); }
static void test_locon_rank_dropout_linear(void) { check("dlin", LOCON, 0, 0.6f, 0.5f, 0.0f); }
static void test_locon_rank_dropout_conv(void) { check("dconv", LOCON, 1, 1.0f, 0.5f, 0.0f); }
static void test_locon_bypass_linear(void) { check("blin", LOCON_BYPASS, 0, 0.6f, 0.5f, 0.3f); }
static void test_locon_bypass_conv(void) { check("bconv", LOCON_BYPASS, 1, 1.0f, 0.5f, 0.3f); }
static void test_loha_rank_dropout_linear(void) { check("hlin", LOHA, 0, 0.6f, 0.5f, 0.0f); }
static void test_loha_rank_dropout_conv(void) { check("hconv", LOHA, 1, 1.0f, 0.5f, 0.0f); }
static void test_lokr_rank_dropout_linear(void) { check("klin", LOKR, 0, 0.6f, 0.5f, 0.0f); }
static void test_lokr_rank_dropout_conv(void) { check("kconv", LOKR, 1, 1.0f, 0.5f, 0.0f); }

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, (size_t)16 << 20) || sd_arena_init(&g_act, SD_DEV_CPU, (size_t)4 << 20) ||
        sd_safetensors_open(t_root_pathf("tests/data/lycoris/golden_lycoris_train2.safetensors"), &g_st)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_locon_rank_dropout_linear);
    T_RUN(test_locon_rank_dropout_conv);
    T_RUN(test_locon_bypass_linear);
    T_RUN(test_locon_bypass_conv);
    T_RUN(test_loha_rank_dropout_linear);
    T_RUN(test_loha_rank_dropout_conv);
    T_RUN(test_lokr_rank_dropout_linear);
    T_RUN(test_lokr_rank_dropout_conv);
    T_RUN(test_tucker_conv);
    T_RUN(test_tucker_rank_dropout);
    T_RUN(test_tucker_bypass);
    T_RUN(test_tucker_stride2);
    T_RUN(test_loha_tucker);
    T_RUN(test_loha_tucker_rank_dropout);
    sd_safetensors_close(g_st);
    sd_arena_free(&g_act);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
