/* DyLoRA (lib/train/dylora, the DyLoRA path of lib/nn/lora_hook) against kohya's own
 * networks/dylora.py DyLoRAModule under torch's AdamW (tests/data/train/dylora.txt, made by
 * tests/golden/gen/make_dylora_golden.py): five steps of a linear and a 3×3-conv module (rank 4,
 * unit 2) with fixed trainable ranks — the sqrt(rank / (tr + unit)) scaling, gradients only to the
 * unit rows, per-row AdamW step counts (rows without a gradient are skipped: no update, no
 * weight decay, no step). Our ranks come from Philox (seed, step, module, SD_RNG_DYLORA): the test
 * picks, per golden step, a step number whose draws give the golden's ranks. Also the
 * --network_args rules of networks.dylora. */
#include <math.h>

#include "base/error.h"
#include "test.h"
#include "train/dylora.h"
#include "train_golden.h"

static tg_file g;

static double *get(const char *name, size_t want)
{
    size_t n = 0;
    double *v = tg_get(&g, name, &n);
    if (!v || n != want) {
        printf("# golden %s: %zu values, want %zu\n", name, n, want);
        free(v);
        return NULL;
    }
    return v;
}

static void upload(sd_tensor *t, const double *v)
{
    int64_t n = sd_tensor_numel(t);
    float *f = t->data;
    for (int64_t i = 0; i < n; i++) f[i] = (float)v[i];
}

static double worst_rel(const sd_tensor *t, const double *v)
{
    double w = 0;
    const float *f = t->data;
    for (int64_t i = 0; i < sd_tensor_numel(t); i++) {
        double e = fabs((double)f[i] - v[i]) / fmax(1e-3, fabs(v[i]));
        if (e > w) w = e;
    }
    return w;
}

static void test_golden_steps(void)
{
    sd_ctx ctx;
    T_EQ_INT(sd_ctx_init(&ctx, SD_DEV_CPU, 1, 1 << 20), 0);
    sd_arena save;
    T_EQ_INT(sd_arena_init(&save, SD_DEV_CPU, 1 << 20), 0);
    sd_lora_network net;
    memset(&net, 0, sizeof net);
    sd_params_init(&net.reg);
    sd_lora mods[2];
    char *names[2] = { "lin", "conv" };
    int is_te[2] = { 0, 0 };
    net.n = 2;
    net.n_unet = 2;
    net.mods = mods;
    net.names = names;
    net.is_te = is_te;
    net.rt.seed = 77;
    net.rt.training = 1;
    T_EQ_INT(sd_lora_init(&mods[0], &net.reg, "lin", 6, 5, 4, 2.0f, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0), 0);
    T_EQ_INT(sd_lora_init(&mods[1], &net.reg, "conv", 3, 4, 4, 3.0f, 1, 3, 3, sd_conv2d_geom_make(1, 1), 0), 0);
    T_EQ_INT(sd_params_alloc(&net.reg, SD_DEV_CPU), 0);
    for (int m = 0; m < 2; m++) {
        mods[m].id = (uint32_t)m;
        mods[m].rt = &net.rt;
    }
    double *d0 = get("lin.down0", 24), *u0 = get("lin.up0", 20), *cd0 = get("conv.down0", 108), *cu0 = get("conv.up0", 16);
    double *xl = get("lin.x", 36), *xc = get("conv.x", 120), *gl = get("lin.g", 30), *gc = get("conv.g", 160);
    double *trl = get("lin.tr", 5), *trc = get("conv.tr", 5), *loss = get("loss", 5);
    double *stl = get("lin.steps", 8), *stc = get("conv.steps", 8);
    T_CHECK(d0 && u0 && cd0 && cu0 && xl && xc && gl && gc && trl && trc && loss && stl && stc);
    if (!(d0 && u0 && cd0 && cu0 && xl && xc && gl && gc && trl && trc && loss && stl && stc)) goto out;
    upload(&mods[0].down->value, d0);
    upload(&mods[0].up->value, u0);
    upload(&mods[1].down->value, cd0);
    upload(&mods[1].up->value, cu0);
    /* down [4, 6] and the reference's lora_A rows are the same bytes; up [5, 4] ← lora_B columns */
    sd_dylora dy;
    T_EQ_INT(sd_dylora_init(&dy, &net, 2), 0);
    T_EQ_INT((int)sd_params_count(&dy.rows), 16);
    T_CHECK(!strcmp(sd_params_at(&dy.rows, 5)->key, "lin.lora_B.1"));
    T_EQ_INT(sd_params_at(&dy.rows, 8)->value.ndim, 4);   /* conv.lora_A.0 [1, 3, 3, 3] */
    T_EQ_INT((int)sd_params_at(&dy.rows, 12)->value.shape[0], 4);   /* conv.lora_B.0 [4, 1, 1, 1] */
    T_EQ_INT(((float *)sd_params_at(&dy.rows, 5)->value.data)[2] == ((float *)mods[0].up->value.data)[2 * 4 + 1], 1);
    sd_lora_net_args a;
    memset(&a, 0, sizeof a);
    sd_lora_groups grp;
    /* LoRA+: the lora_B rows of every module in the " plus" group at lr × ratio; without it each
       module's A rows then its B rows (named_parameters order) */
    a.loraplus_lr_ratio = 4;
    T_EQ_INT(sd_dylora_param_groups(&dy, &a, &net, NAN, NAN, 1e-2, &grp), 0);
    T_EQ_INT(grp.n, 2);
    if (grp.n == 2) {
        T_CHECK(!strcmp(grp.desc[1].name, "unet plus") && fabs(grp.desc[1].lr - 4e-2) < 1e-12);
        T_EQ_INT((int)grp.desc[0].count, 8);
        T_CHECK(!strcmp(grp.desc[0].params[4]->key, "conv.lora_A.0"));
        T_CHECK(!strcmp(grp.desc[1].params[3]->key, "lin.lora_B.3") && !strcmp(grp.desc[1].params[4]->key, "conv.lora_B.0"));
    }
    sd_lora_groups_free(&grp);
    a.loraplus_lr_ratio = 0;
    T_EQ_INT(sd_dylora_param_groups(&dy, &a, &net, NAN, NAN, 1e-2, &grp), 0);
    T_EQ_INT(grp.n, 1);
    T_CHECK(!strcmp(grp.desc[0].params[4]->key, "lin.lora_B.0") && !strcmp(grp.desc[0].params[8]->key, "conv.lora_A.0"));
    sd_optim_config cfg;
    sd_optim_config_default(&cfg, SD_OPTIM_ADAMW);
    cfg.lr = 1e-2;
    cfg.weight_decay = 0.05;
    sd_optim o;
    T_EQ_INT(sd_optim_init(&o, &cfg, grp.desc, grp.n), 0);
    sd_tensor x[2], y[2], gy[2];
    T_EQ_INT(sd_tensor_alloc(&x[0], SD_F32, 3, (int64_t[]){ 2, 3, 6 }), 0);
    T_EQ_INT(sd_tensor_alloc(&x[1], SD_F32, 4, (int64_t[]){ 2, 3, 5, 4 }), 0);
    T_EQ_INT(sd_tensor_alloc(&y[0], SD_F32, 3, (int64_t[]){ 2, 3, 5 }), 0);
    T_EQ_INT(sd_tensor_alloc(&y[1], SD_F32, 4, (int64_t[]){ 2, 4, 5, 4 }), 0);
    T_EQ_INT(sd_tensor_alloc(&gy[0], SD_F32, 3, (int64_t[]){ 2, 3, 5 }), 0);
    T_EQ_INT(sd_tensor_alloc(&gy[1], SD_F32, 4, (int64_t[]){ 2, 4, 5, 4 }), 0);
    upload(&x[0], xl), upload(&x[1], xc), upload(&gy[0], gl), upload(&gy[1], gc);
    double wl = 0, ww = 0;
    uint32_t s = 0;
    for (int k = 0; k < 5; k++) {
        /* a step number whose Philox draws are the golden's ranks */
        for (;; s++) {
            net.rt.step = s;
            if (sd_lora_dy_draw(&mods[0]) == (int)trl[k] && sd_lora_dy_draw(&mods[1]) == (int)trc[k]) break;
        }
        T_EQ_INT(sd_params_zero_grad(&ctx, &net.reg), 0);
        sd_arena_reset(&save, 0);
        double l = 0;
        for (int m = 0; m < 2; m++) {
            T_EQ_INT(sd_op_fill(&ctx, &y[m], 0.0f), 0);
            T_EQ_INT(sd_lora_forward(&ctx, &mods[m], &save, &y[m], &x[m]), 0);
            T_EQ_INT(mods[m].dy_tr, m ? (int)trc[k] : (int)trl[k]);
            for (int64_t i = 0; i < sd_tensor_numel(&y[m]); i++) l += (double)((float *)y[m].data)[i] * ((float *)gy[m].data)[i];
            T_EQ_INT(sd_lora_backward(&ctx, &mods[m], NULL, &gy[m], &x[m]), 0);
        }
        double e = fabs(l - loss[k]) / fmax(1e-3, fabs(loss[k]));
        if (e > wl) wl = e;
        /* rows outside tr .. tr+unit-1 have no gradient */
        for (int m = 0; m < 2; m++) {
            int tr = m ? (int)trc[k] : (int)trl[k];
            const float *gd = mods[m].down->grad.data, *gu = mods[m].up->grad.data;
            int64_t K = sd_tensor_numel(&mods[m].down->value) / 4, out = mods[m].out;
            int zero_ok = 1, some = 0;
            for (int j = 0; j < 4; j++) {
                int in = j >= tr && j < tr + 2;
                for (int64_t i = 0; i < K; i++) zero_ok &= in || gd[j * K + i] == 0, some |= in && gd[j * K + i] != 0;
                for (int64_t i = 0; i < out; i++) zero_ok &= in || gu[i * 4 + j] == 0;
            }
            T_CHECKF(zero_ok && some, "step %d module %d: gradients outside the trained rows", k, m);
        }
        T_EQ_INT(sd_dylora_to_rows(&dy, &net, 1), 0);
        const uint8_t *skip = sd_dylora_skip_mask(&dy, &o);
        T_CHECK(skip != NULL);
        T_EQ_INT(sd_optim_step(&o, NULL, skip), 0);
        T_EQ_INT(sd_dylora_from_rows(&dy, &net), 0);
        sd_dylora_clear_touched(&dy);
        s++;
        char key[32];
        for (int m = 0; m < 2; m++) {
            snprintf(key, sizeof key, "%s.down%d", names[m], k + 1);
            double *v = get(key, (size_t)sd_tensor_numel(&mods[m].down->value));
            if (v) ww = fmax(ww, worst_rel(&mods[m].down->value, v));
            free(v);
            snprintf(key, sizeof key, "%s.up%d", names[m], k + 1);
            v = get(key, (size_t)sd_tensor_numel(&mods[m].up->value));
            if (v) ww = fmax(ww, worst_rel(&mods[m].up->value, v));
            free(v);
        }
    }
    /* per-row state['step'] */
    for (size_t i = 0; i < o.nparams; i++) {
        const sd_param *p = o.params[i].p;
        double want = i < 8 ? stl[i] : stc[i - 8];
        T_CHECKF((double)o.params[i].step == want, "%s: step %lld, torch %g", p->key, (long long)o.params[i].step, want);
    }
    T_CHECKF(wl <= 1e-5, "loss worst relative %.3g", wl);
    T_CHECKF(ww <= 2e-5, "weights worst relative %.3g", ww);
    printf("# DyLoRA vs dylora.py + torch AdamW, 5 steps: loss worst relative %.3g, weights %.3g\n", wl, ww);
    /* outside training: the whole rank, factor alpha / rank */
    net.rt.training = 0;
    T_EQ_INT(sd_op_fill(&ctx, &y[0], 0.0f), 0);
    T_EQ_INT(sd_lora_forward(&ctx, &mods[0], NULL, &y[0], &x[0]), 0);
    T_EQ_INT(mods[0].dy_tr, 2);
    T_CHECK(fabsf(mods[0].factor - 0.5f) < 1e-7f);
    for (int m = 0; m < 2; m++) sd_tensor_free(&x[m]), sd_tensor_free(&y[m]), sd_tensor_free(&gy[m]);
    sd_optim_free(&o);
    sd_lora_groups_free(&grp);
    sd_dylora_free(&dy);
out:
    free(d0), free(u0), free(cd0), free(cu0), free(xl), free(xc), free(gl), free(gc);
    free(trl), free(trc), free(loss), free(stl), free(stc);
    for (int m = 0; m < 2; m++) sd_lora_free(&mods[m]);
    sd_params_free(&net.reg);
    sd_arena_free(&save);
    sd_ctx_free(&ctx);
}

static void test_args(void)
{
    sd_lora_net_args a;
    int unit = 0;
    const char *ok[] = { "unit=2", "conv_dim=8", "loraplus_lr_ratio=4", "foo=1" };
    T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, ok, 4), 0);
    T_EQ_INT(unit, 2);
    T_EQ_INT(a.conv_dim, 8);
    T_CHECK(a.conv_alpha == 4.0);   /* 3×3 modules get network_alpha */
    T_CHECK(a.loraplus_lr_ratio == 4.0);
    T_EQ_INT(a.nunknown, 1);
    T_CHECK(!strcmp(a.unknown[0], "foo"));
    T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, NULL, 0), 0);
    T_EQ_INT(unit, 1);
    const char *bad_unit[] = { "unit=3" }, *bad_int[] = { "unit=2.0" }, *bad_conv[] = { "conv_dim=4" };
    T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, bad_unit, 1), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "multiple of unit") != NULL);
    T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, bad_int, 1), SD_EUSAGE);
    T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, bad_conv, 1), SD_EUSAGE);
    const char *ca[] = { "conv_dim=8", "conv_alpha=1" }, *ca_same[] = { "conv_dim=8", "conv_alpha=4" };
    T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, ca, 2), SD_EUSAGE);
    T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, ca_same, 2), 0);
    const char *unsup[][1] = { { "rank_dropout=0.1" }, { "module_dropout=0.1" }, { "block_dims=" }, { "down_lr_weight=1" },
                               { "dropout=0.1" } };
    for (size_t i = 0; i < sizeof unsup / sizeof *unsup; i++) {
        T_EQ_INT(sd_dylora_args_parse(&a, &unit, 8, 4.0, unsup[i], 1), SD_EUSAGE);
        T_CHECK(strstr(sd_errmsg(), "networks.dylora") != NULL);
    }
}

int main(void)
{
    if (tg_open(&g, "dylora.txt")) {
        printf("not ok open_golden\n");
        return 1;
    }
    T_RUN(test_args);
    T_RUN(test_golden_steps);
    tg_close(&g);
    T_DONE();
}
