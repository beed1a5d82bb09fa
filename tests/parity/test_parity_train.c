/* CPU vs CUDA parity of a tiny LoRA training run: 3 steps through lib/nn layers.
 *
 * Network: an ldm ResBlock (32 → 32 channels, time embedding 48) followed by a SpatialTransformer
 * (32 channels, 2 heads of 16, depth 1, context 7 × 24), frozen f32 weights from a fixed generator;
 * LoRA branches (rank 4, alpha 2) on the ResBlock's first 3×3 conv, proj_in (1×1 conv run as a
 * linear), attn1.to_q, attn2.to_k (context side) and ff.net.0.proj. Loss: MSE against a fixed
 * target (sd_op_loss). Each step: zero the LoRA gradients, forward into the planned activation
 * arena, loss, backward, then AdamW (lr 1e-3, weight decay 0.01) on the LoRA weights.
 *
 * The optimizer runs on the host for both sides (lib/train/optim.h has the flat-array update
 * sd_adamw_update_f32 and no CUDA kernel yet): gradients and weights are downloaded, updated with
 * the same code and uploaded again, so both backends see the same optimizer arithmetic.
 *
 * Reported per step: the loss on both backends and, per LoRA weight, max|Δ| / max|cpu| of the
 * gradients; after the last step the same for the weights. Checked: loss and gradients within
 * 1e-4 (a chain of ~40 fp32 ops whose products reduce in different orders); the weights are
 * reported (see the note at the check). Without a CUDA device: "ok NAME # SKIP no CUDA device".
 * SD_PARITY_SELFTEST=1 runs both sides on the CPU (a check of this program without a GPU). The
 * emulated build (tests/emu) runs it a second time with SD_CUDA_CONV=cudnn (its emulated cuDNN)
 * unless SD_CUDA_CONV is set. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "nn/nn.h"
#include "tensor/device.h"
#include "test.h"
#ifdef SD_CUDA_EMU
#include "tensor/cuda/cuda.h"
#endif
#include "train/optim.h"
#include "train/optim8bit.h"

#define NLORA 5
#define STEPS 3
#define TOL 1e-4

/* SD_PARITY_SELFTEST=1: both sides on the CPU (checks this harness without a GPU: differences 0). */
static int g_selftest;

typedef struct side {
    sd_ctx ctx;
    sd_devkind dev;
    sd_params base, net;
    sd_resblock rb;
    sd_spatial_transformer st;
    sd_lora lo[NLORA];
    sd_arena act;
    sd_tensor x, emb, cond, target, h, y, dy, dh, loss;
    float **m, **v;   /* AdamW moments per LoRA weight (host) */
} side;

static float gen(uint64_t i, uint64_t salt)
{
    uint64_t z = i * 0x9e3779b97f4a7c15ull + salt * 0xbf58476d1ce4e5b9ull + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * 0x1p-53 * 2.0 - 1.0);
}

/* Fill a tensor on any device from the generator (host buffer + upload). */
static int put(sd_tensor *t, float scale, float off, uint64_t salt)
{
    int64_t n = sd_tensor_numel(t);
    float *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    if (!h) return sd_err(SD_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) h[i] = off + scale * gen((uint64_t)i, salt);
    int rc = sd_tensor_upload(t, h, (size_t)n * sizeof *h);
    free(h);
    return rc;
}

static int mk(side *s, sd_tensor *t, int nd, const int64_t *sh)
{
    return sd_tensor_alloc_on(t, s->dev, SD_F32, nd, sh);
}

#define TRY(call) do { int rc_ = (call); if (rc_) { printf("# %s: %s: %s\n", s->dev == SD_DEV_CUDA ? "CUDA" : "CPU", #call, sd_errmsg()); return rc_; } } while (0)

static int build(side *s, sd_devkind dev)
{
    memset(s, 0, sizeof *s);
    s->dev = dev;
    TRY(sd_ctx_init(&s->ctx, dev, 0, (size_t)256 << 20));
    sd_params_init(&s->base);
    sd_params_init(&s->net);
    TRY(sd_resblock_init(&s->rb, &s->base, "rb", 32, 32, 48));
    TRY(sd_spatial_transformer_init(&s->st, &s->base, "st", 32, 2, 16, 1, 24, 0));
    sd_conv2d *c1 = &s->rb.conv1;
    sd_linear *ls[4] = { &s->st.proj_in, &s->st.blocks[0].attn1.q, &s->st.blocks[0].attn2.k, &s->st.blocks[0].ff.proj };
    const char *names[NLORA] = { "lora_rb_conv1", "lora_st_proj_in", "lora_attn1_q", "lora_attn2_k", "lora_ff_proj" };
    TRY(sd_lora_init(&s->lo[0], &s->net, names[0], c1->cin, c1->cout, 4, 2, 1, c1->kh, c1->kw, c1->g, 1));
    for (int i = 0; i < 4; i++)
        TRY(sd_lora_init(&s->lo[i + 1], &s->net, names[i + 1], ls[i]->in, ls[i]->out, 4, 2, 0, 1, 1,
                         sd_conv2d_geom_make(1, 0), ls[i]->w->value.ndim == 4));
    for (int i = 0; i < NLORA; i++) s->lo[i].id = (uint32_t)(i + 1);
    TRY(sd_conv2d_set_lora(c1, &s->lo[0]));
    for (int i = 0; i < 4; i++) TRY(sd_linear_set_lora(ls[i], &s->lo[i + 1]));
    TRY(sd_params_alloc(&s->base, dev));
    TRY(sd_params_alloc(&s->net, dev));
    /* frozen weights: fan-in scaled; norms' weights around 1 */
    for (size_t i = 0; i < sd_params_count(&s->base); i++) {
        sd_param *p = sd_params_at(&s->base, i);
        int64_t fan = p->value.ndim >= 2 ? sd_tensor_numel(&p->value) / p->value.shape[0] : 1;
        if (p->value.ndim >= 2) TRY(put(&p->value, 1.5f / sqrtf((float)fan), 0, 100 + i));
        else if (strstr(p->key, "norm")) TRY(put(&p->value, 0.2f, 1.0f, 100 + i));
        else TRY(put(&p->value, 0.1f, 0, 100 + i));
    }
    /* LoRA: kohya's init for down, then a small random up (so every gradient is nonzero at once) */
    for (int i = 0; i < NLORA; i++) {
        TRY(sd_lora_init_weights(&s->ctx, &s->lo[i], 42));
        TRY(put(&s->lo[i].up->value, 0.05f, 0, 500 + (uint64_t)i));
    }
    TRY(mk(s, &s->x, SD_DIMS(2, 32, 8, 8)));
    TRY(mk(s, &s->h, SD_DIMS(2, 32, 8, 8)));
    TRY(mk(s, &s->y, SD_DIMS(2, 32, 8, 8)));
    TRY(mk(s, &s->dy, SD_DIMS(2, 32, 8, 8)));
    TRY(mk(s, &s->dh, SD_DIMS(2, 32, 8, 8)));
    TRY(mk(s, &s->target, SD_DIMS(2, 32, 8, 8)));
    TRY(mk(s, &s->emb, SD_DIMS(2, 48)));
    TRY(mk(s, &s->cond, SD_DIMS(2, 7, 24)));
    TRY(mk(s, &s->loss, SD_DIMS(1)));
    TRY(put(&s->x, 1.0f, 0, 1));
    TRY(put(&s->target, 1.0f, 0, 2));
    TRY(put(&s->emb, 1.0f, 0, 3));
    TRY(put(&s->cond, 1.0f, 0, 4));
    sd_nn_plan plan = sd_resblock_plan(&s->rb, s->x.shape);
    sd_nn_plan_add(&plan, sd_spatial_transformer_plan(&s->st, s->h.shape, s->cond.shape));
    TRY(sd_nn_arena_init(&s->act, dev, plan.saved));
    size_t n = sd_params_count(&s->net);
    s->m = calloc(n, sizeof *s->m);
    s->v = calloc(n, sizeof *s->v);
    for (size_t i = 0; i < n; i++) {
        int64_t ne = sd_tensor_numel(&sd_params_at(&s->net, i)->value);
        s->m[i] = calloc((size_t)ne, sizeof(float));
        s->v[i] = calloc((size_t)ne, sizeof(float));
    }
    return SD_OK;
}

static void release(side *s)
{
    size_t n = sd_params_count(&s->net);
    for (size_t i = 0; s->m && i < n; i++) { free(s->m[i]); free(s->v[i]); }
    free(s->m);
    free(s->v);
    sd_tensor *ts[] = { &s->x, &s->emb, &s->cond, &s->target, &s->h, &s->y, &s->dy, &s->dh, &s->loss };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) sd_tensor_free(ts[i]);
    sd_arena_free(&s->act);
    sd_spatial_transformer_free(&s->st);
    for (int i = 0; i < NLORA; i++) sd_lora_free(&s->lo[i]);
    sd_params_free(&s->net);
    sd_params_free(&s->base);
    sd_ctx_free(&s->ctx);
}

/* Forward, loss, backward: gradients of the LoRA weights in s->net, loss in *loss. */
static int step_grads(side *s, float *loss)
{
    sd_ctx *ctx = &s->ctx;
    sd_arena_reset(&s->act, 0);
    TRY(sd_params_zero_grad(ctx, &s->net));
    TRY(sd_resblock_forward(ctx, &s->rb, &s->act, &s->h, &s->x, &s->emb));
    TRY(sd_spatial_transformer_forward(ctx, &s->st, &s->act, &s->y, &s->h, &s->cond));
    TRY(sd_op_loss(ctx, &s->loss, NULL, &s->y, &s->target, NULL, NULL, SD_LOSS_L2));
    TRY(sd_op_fill(ctx, &s->dy, 0));
    TRY(sd_op_loss_bwd(ctx, &s->dy, &s->y, &s->target, NULL, NULL, SD_LOSS_L2, 1.0f));
    TRY(sd_op_fill(ctx, &s->dh, 0));
    TRY(sd_spatial_transformer_backward(ctx, &s->st, &s->dh, NULL, &s->dy));
    TRY(sd_resblock_backward(ctx, &s->rb, NULL, NULL, &s->dh));
    TRY(sd_tensor_download(&s->loss, loss, sizeof *loss));
    return SD_OK;
}

/* AdamW on the host: download value and gradient, update, upload the value. */
static int step_adamw(side *s, int64_t step)
{
    sd_adamw_scalars sc;
    sd_adamw_scalars_make(&sc, 1e-3, 0.01, 0.9, 0.999, 1e-8, step);
    for (size_t i = 0; i < sd_params_count(&s->net); i++) {
        sd_param *p = sd_params_at(&s->net, i);
        int64_t n = sd_tensor_numel(&p->value);
        float *w = malloc((size_t)n * sizeof *w), *g = malloc((size_t)n * sizeof *g);
        int rc = sd_tensor_download(&p->value, w, (size_t)n * sizeof *w);
        if (!rc) rc = sd_tensor_download(&p->grad, g, (size_t)n * sizeof *g);
        if (!rc) sd_adamw_update_f32(w, g, s->m[i], s->v[i], (size_t)n, &sc);
        if (!rc) rc = sd_tensor_upload(&p->value, w, (size_t)n * sizeof *w);
        free(w);
        free(g);
        if (rc) return rc;
    }
    return SD_OK;
}

/* max|gpu − cpu| / max|cpu| of one tensor pair (downloaded). */
static double rel_diff(const sd_tensor *c, const sd_tensor *g, double *max_ref)
{
    int64_t n = sd_tensor_numel(c);
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
    double md = 0, mr = 0;
    if (sd_tensor_download(c, a, (size_t)n * 4) || sd_tensor_download(g, b, (size_t)n * 4)) md = INFINITY;
    for (int64_t i = 0; i < n && isfinite(md); i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = isnan(d) ? INFINITY : d;
        if (fabs(a[i]) > mr) mr = fabs(a[i]);
    }
    free(a);
    free(b);
    *max_ref = mr;
    return mr > 0 ? md / mr : md;
}

static void test_lora_training_3_steps(void)
{
    static side cpu, gpu;
    int ok = build(&cpu, SD_DEV_CPU) == SD_OK;
    ok = ok && build(&gpu, g_selftest ? SD_DEV_CPU : SD_DEV_CUDA) == SD_OK;
    T_CHECK(ok);
    double worst = 0;
    for (int64_t step = 1; ok && step <= STEPS; step++) {
        float lc = NAN, lg = NAN;
        int rc = step_grads(&cpu, &lc);
        T_CHECKF(rc == SD_OK, "CPU step %lld", (long long)step);
        rc = step_grads(&gpu, &lg);
        T_CHECKF(rc == SD_OK, "CUDA step %lld", (long long)step);
        double lrel = fabs((double)lg - (double)lc) / fabs((double)lc);
        printf("# step %lld: loss cpu %.9g cuda %.9g (rel %.3e)\n", (long long)step, lc, lg, lrel);
        T_CHECKF(lrel <= TOL, "step %lld loss rel %.3e", (long long)step, lrel);
        for (size_t i = 0; i < sd_params_count(&cpu.net); i++) {
            sd_param *pc = sd_params_at(&cpu.net, i), *pg = sd_params_at(&gpu.net, i);
            double mr, r = rel_diff(&pc->grad, &pg->grad, &mr);
            printf("#   grad %-34s max_ref %.3e rel %.3e%s\n", pc->key, mr, r, r <= TOL ? "" : "  <-- FAIL");
            T_CHECKF(r <= TOL && mr > 0, "step %lld grad %s rel %.3e (max_ref %.3e)", (long long)step, pc->key, r, mr);
            if (r > worst) worst = r;
        }
        T_EQ_INT(step_adamw(&cpu, step), SD_OK);
        T_EQ_INT(step_adamw(&gpu, step), SD_OK);
    }
    for (size_t i = 0; ok && i < sd_params_count(&cpu.net); i++) {
        sd_param *pc = sd_params_at(&cpu.net, i), *pg = sd_params_at(&gpu.net, i);
        double mr, r = rel_diff(&pc->value, &pg->value, &mr);
        /* AdamW's first steps move each weight by about ±lr whatever the gradient's size, so an
         * element whose gradient is ~0 (below the backends' rounding differences) may step either
         * way: the weights are reported, and checked only against that bound (|Δ| ≤ 2·lr·steps). */
        double md = r * mr;
        printf("# after %d steps: weight %-30s max_ref %.3e max_abs %.3e rel %.3e\n", STEPS, pc->key, mr, md, r);
        T_CHECKF(md <= 2e-3 * STEPS, "weight %s max_abs %.3e", pc->key, md);
    }
    printf("# largest gradient difference: %.3e (tolerance %g)\n", worst, TOL);
    release(&gpu);
    release(&cpu);
}

/* The optimizers that run where the weights live (train/optim.h sd_optim_place; Lion, SGDNesterov,
 * Adafactor and the bitsandbytes kinds here, AdamW in the LoRA run above): two copies of 4
 * parameters (a matrix, a 4-D conv weight of 3x3 matrices, a stack of 3 matrices, a vector), one
 * stepped by the host loops, the other moved to the device with its optimizer placed there (state
 * and Adafactor's scratch in device memory), the same gradients uploaded; 4 steps with a skipped
 * parameter, f32 and --full_bf16 / --full_fp16, with and without clipping. Lion and SGDNesterov
 * without clipping: bit-exact (the element code of optim_elem.h); with clipping, and Adafactor (its
 * RMS sums), the device's sums of squares run in another order: within 1e-6 of the largest weight
 * (reported when bit-exact). The state is compared the same way after moving back. */
static void test_optimizer_on_device(void)
{
    static const struct {
        sd_optim_kind kind;
        const char *args[4];
        int nargs;
        double lr, clip;
        sd_dtype half;
    } cases[] = {
        { SD_OPTIM_LION, { "weight_decay=0.1" }, 1, 1e-3, 0, SD_F32 },
        { SD_OPTIM_LION, { "weight_decay=0" }, 1, 1e-3, 1.0, SD_BF16 },
        { SD_OPTIM_SGD_NESTEROV, { "weight_decay=0.01" }, 1, 5e-2, 0, SD_F32 },
        { SD_OPTIM_SGD_NESTEROV, { "weight_decay=0" }, 1, 5e-2, 0.5, SD_F16 },
        { SD_OPTIM_ADAFACTOR, { "weight_decay=0.01" }, 1, 0, 0, SD_F32 },
        { SD_OPTIM_ADAFACTOR, { "relative_step=False", "scale_parameter=False", "warmup_init=False", "beta1=0.9" }, 4, 1e-2,
          1.0, SD_BF16 },
        { SD_OPTIM_ADAMW8BIT, { "min_8bit_size=1000" }, 1, 1e-2, 0, SD_F32 },   /* 8-bit and f32 states */
        { SD_OPTIM_ADAMW8BIT, { "weight_decay=0" }, 1, 1e-2, 0, SD_BF16 },
        { SD_OPTIM_LION8BIT, { "min_8bit_size=1000", "weight_decay=0.1" }, 2, 1e-3, 0, SD_F16 },
        { SD_OPTIM_SGD_NESTEROV8BIT, { "min_8bit_size=1", "weight_decay=0.01" }, 2, 5e-2, 0, SD_F32 },
    };
    static const int nd[4] = { 2, 4, 3, 1 };
    static const int64_t shapes[4][4] = { { 64, 300 }, { 16, 8, 3, 3 }, { 3, 17, 33 }, { 300 } };
    const sd_devkind dev = g_selftest ? SD_DEV_CPU : SD_DEV_CUDA;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        sd_params r[2];
        sd_param *ps[2][4];
        sd_optim o[2];
        sd_ctx gctx;
        int ok = sd_ctx_init(&gctx, dev, 1, (size_t)1 << 20) == SD_OK;
        for (int k = 0; k < 2 && ok; k++) {
            sd_params_init(&r[k]);
            for (int i = 0; i < 4 && ok; i++) {
                char key[16];
                snprintf(key, sizeof key, "w%d", i);
                ok = sd_params_add(&r[k], NULL, key, nd[i], shapes[i], SD_PARAM_TRAINABLE, &ps[k][i]) == SD_OK;
            }
            ok = ok && sd_params_alloc(&r[k], SD_DEV_CPU) == SD_OK;
            for (int i = 0; i < 4 && ok; i++) ok = put(&ps[k][i]->value, 0.3f, 0.0f, 100 + (uint64_t)i) == SD_OK;
            sd_optim_group_desc gd = { "unet", cases[c].lr, ps[k], 4 };
            sd_optim_config cfg;
            sd_optim_config_default(&cfg, cases[c].kind);
            ok = ok && sd_optim_config_parse_args(&cfg, cases[c].args, cases[c].nargs) == SD_OK;
            ok = ok && sd_optim_init(&o[k], &cfg, &gd, 1) == SD_OK;
        }
        /* the second copy: weights, gradients and the optimizer on the device */
        ok = ok && sd_params_move(&r[1], dev) == SD_OK && sd_optim_place(&o[1], &gctx) == SD_OK;
        ok = ok && sd_optim_set_half(&o[0], cases[c].half) == SD_OK && sd_optim_set_half(&o[1], cases[c].half) == SD_OK;
        T_CHECKF(ok, "case %zu setup: %s", c, sd_errmsg());
        if (!ok) return;
        for (int step = 1; step <= 4 && ok; step++) {
            for (int i = 0; i < 4 && ok; i++) {
                float sc = step == 3 ? 2.0f : 0.05f;
                ok = put(&ps[0][i]->grad, sc, 0.0f, (uint64_t)(step * 10 + i)) == SD_OK &&
                     put(&ps[1][i]->grad, sc, 0.0f, (uint64_t)(step * 10 + i)) == SD_OK;
            }
            uint8_t skip[4] = { 0, step == 2, 0, 0 };
            double lr = cases[c].lr * (1.0 - 0.1 * step), n0 = 0, n1 = 0;
            for (int k = 0; k < 2 && ok; k++) {
                ok = sd_optim_round_grads(&o[k]) == SD_OK &&
                     sd_optim_clip_grad_norm(&o[k], cases[c].clip, k ? &n1 : &n0) == SD_OK &&
                     sd_optim_step(&o[k], &lr, skip) == SD_OK;
            }
            T_CHECKF(ok, "case %zu step %d: %s", c, step, sd_errmsg());
            T_CHECKF(fabs(n0 - n1) <= 1e-12 * n0, "case %zu step %d norm %.17g vs %.17g", c, step, n0, n1);
        }
        ok = ok && sd_optim_place(&o[1], NULL) == SD_OK && sd_params_move(&r[1], SD_DEV_CPU) == SD_OK;
        T_CHECKF(ok, "case %zu back to the host: %s", c, sd_errmsg());
        const int exact = cases[c].kind != SD_OPTIM_ADAFACTOR && cases[c].clip == 0;
        int same = ok && o[0].state_floats == o[1].state_floats &&
                   !memcmp(o[0].state, o[1].state, o[0].state_floats * sizeof(float));
        for (size_t i = 0; ok && o[0].st8 && i < o[0].nparams; i++)   /* bitsandbytes' blocks: codes, absmax, f32 states */
            same &= !memcmp(o[0].st8[i].mem, o[1].st8[i].mem, sd_adamw8bit_state_bytes(&o[0].st8[i]));
        double worst = 0;
        for (int i = 0; i < 4 && ok; i++) {
            const float *a = ps[0][i]->value.data, *b = ps[1][i]->value.data;
            int64_t n = sd_tensor_numel(&ps[0][i]->value);
            double mr = 0, md = 0;
            for (int64_t j = 0; j < n; j++) {
                mr = fmax(mr, fabs((double)a[j]));
                md = fmax(md, fabs((double)a[j] - (double)b[j]));
                same &= a[j] == b[j] || (a[j] != a[j] && b[j] != b[j]);
            }
            if (mr > 0 && md / mr > worst) worst = md / mr;
        }
        for (size_t j = 0; ok && !same && j < o[0].state_floats; j++) {
            double d = fabs((double)o[0].state[j] - (double)o[1].state[j]), m = fabs((double)o[0].state[j]);
            if (d > 1e-6 * fmax(m, 1e-30) && d > worst) worst = d / fmax(m, 1e-30);
        }
        printf("# optimizer on the device: %-12s %-4s clip %g: %s (worst rel %.3e)\n", sd_optim_kind_name(cases[c].kind),
               sd_dtype_name(cases[c].half), cases[c].clip, same ? "bit-exact" : "differs", worst);
        if (exact) T_CHECKF(same, "%s case %zu: not bit-exact (worst rel %.3e)", sd_optim_kind_name(cases[c].kind), c, worst);
        else T_CHECKF(worst <= 1e-6, "%s case %zu: worst rel %.3e", sd_optim_kind_name(cases[c].kind), c, worst);
        for (int k = 0; k < 2; k++) {
            sd_optim_free(&o[k]);
            sd_params_free(&r[k]);
        }
        sd_ctx_free(&gctx);
    }
}

#ifdef SD_CUDA_EMU
/* The emulated build: the same run with the cuDNN convolutions (SD_CUDA_CONV=cudnn against the
 * emulated cuDNN of tests/emu/lib/cudnn_emu.cpp); the counters show that cuDNN ran forward, dx and dw. */
static void test_lora_training_3_steps_cudnn(void)
{
    setenv("SD_CUDA_CONV", "cudnn", 1);
    sd_cuda_conv_reset();
    test_lora_training_3_steps();
    sd_cuda_conv_stats st;
    sd_cuda_conv_stats_get(&st);
    printf("# cuDNN: loaded %d, forward %ld, backward data %ld, backward filter %ld, fallbacks %ld\n", st.loaded, st.fwd,
           st.bwd_data, st.bwd_filter, st.fallback);
    T_CHECKF(st.loaded == 1 && st.fwd > 0 && st.bwd_data > 0 && st.bwd_filter > 0 && st.fallback == 0,
             "the convolutions did not run through cuDNN");
    unsetenv("SD_CUDA_CONV");
    sd_cuda_conv_reset();
}
#endif

int main(void)
{
    const char *why = NULL;
    const char *st = getenv("SD_PARITY_SELFTEST");
    g_selftest = st && *st == '1';
    if (g_selftest) {
        printf("# self-test: both sides on the CPU\n");
        T_RUN(test_lora_training_3_steps);
        T_RUN(test_optimizer_on_device);
        T_DONE();
    }
    if (!sd_device_built_with_cuda()) why = "no CUDA device (built without CUDA)";
    else if (sd_device_count() == 0) why = "no CUDA device";
    else if (sd_device_init(0)) {
        printf("# sd_device_init: %s\n", sd_errmsg());
        why = "no CUDA device (init failed)";
    }
    if (why) {
        T_SKIP("test_lora_training_3_steps", why);
        return 0;
    }
    T_RUN(test_lora_training_3_steps);
    T_RUN(test_optimizer_on_device);
#ifdef SD_CUDA_EMU
    if (!getenv("SD_CUDA_CONV")) T_RUN(test_lora_training_3_steps_cudnn);
#endif
    sd_device_shutdown();
    T_DONE();
}
