/* A 10-step LoRA run of sd-train's loop (lib/train/loop.c, through sd_train_run: records,
 * captions → tokens → CLIP, LoRA on text encoder and UNet, MSE, backward, clipping, AdamW) against
 * the PyTorch transcription of tests/golden/gen/make_lora_train_golden.py, with noise and
 * timesteps fed from the golden file: losses, gradient norms and the final LoRA weights within
 * 1e-4 relative; the final LoRA weights within max(1e-4, 3 × the reference's own float32 spread)
 * per tensor (spread.safetensors: AdamW's division by sqrt(v) turns rounding in near-zero gradient
 * elements into visible update differences, up to ~6e-4 for torch float32 vs float64 here). The
 * final file has exactly the reference's keys.
 * Second test: the reference's final LoRA file loaded with our loader and MERGED into the model's
 * weights (W += alpha/rank · up·down) gives the text-encoder and UNet outputs the reference
 * computes with its LoRA modules, within 1e-4. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jsonl.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "test.h"
#include "train_golden_run.h"
#include "models/sd_model.h"
#include "train/lora_network.h"
#include "train/loop.h"

#define DIR "tests/data/train_lora/"
#define STEPS 10
#define B 2
#define PER (4 * 8 * 8)

static float g_noise[STEPS * B * PER];
static float g_t[STEPS * B];

static tgr_feed g_feed = { g_noise, g_t, STEPS, B, PER };

static void test_lora_train_golden(void)
{
    sd_safetensors *gm = NULL;
    if (sd_safetensors_open(DIR "model.safetensors", &gm)) {
        T_CHECKF(0, "%s", sd_errmsg());
        return;
    }
    float lat[B * PER], loss[STEPS], gn[STEPS];
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.latents", lat, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.noise", g_noise, STEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.t", g_t, STEPS * B), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.loss", loss, STEPS), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.grad_norm", gn, STEPS), 0);
    sd_safetensors_close(gm);
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    sd_train_config_default(&c);
    c.model = DIR "model.safetensors";
    c.model_config = DIR "tiny.toml";
    c.network_dim = 4;
    c.network_alpha = 2.0;
    c.network_alpha_is_int = 0;
    c.network_weights = DIR "lora_init.safetensors";
    c.learning_rate = 1e-3;
    c.max_train_steps = STEPS;
    c.train_batch_size = B;
    c.seed = 1;
    c.threads = 1;
    char outdir[512], logp[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("lora_golden_out"));
    snprintf(logp, sizeof logp, "%s", t_path("lora_golden_log.jsonl"));
    c.output_dir = outdir;
    c.output_name = "g";
    c.log_jsonl = logp;
    c.inject = tgr_inject;
    c.inject_user = &g_feed;
    tgr_add_records(&d, &c, lat, caps, B, "lora_golden");
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    /* losses and gradient norms per step */
    double worst_l, worst_g;
    tgr_check_log(logp, loss, gn, STEPS, 1e-4, &worst_l, &worst_g);
    printf("# worst relative error: loss %.3g, grad norm %.3g\n", worst_l, worst_g);
    /* the final weights, and the same key set as the reference's file */
    char out[600];
    snprintf(out, sizeof out, "%s/g.safetensors", outdir);
    tgr_check_lora_final(out, DIR "lora_final.safetensors", DIR "spread.safetensors");
}

static double max_rel(const float *a, const float *b, size_t n)
{
    double md = 0, mm = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md) md = d;
        if (fabs(b[i]) > mm) mm = fabs(b[i]);
    }
    return mm > 0 ? md / mm : md;
}

static void test_lora_merge_golden(void)
{
    sd_model m;
    sd_model_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.parts = SD_MODEL_UNET | SD_MODEL_TE;
    mo.config = DIR "tiny.toml";
    mo.v_param = -1;
    if (sd_model_open(&m, DIR "model.safetensors", &mo)) {
        T_CHECKF(0, "%s", sd_errmsg());
        return;
    }
    sd_params_set_trainable(&m.unet_params, "", 0);
    sd_params_set_trainable(&m.te_params, "", 0);
    T_EQ_INT(sd_model_load(&m, SD_DEV_CPU), 0);
    sd_ctx ctx;
    T_EQ_INT(sd_ctx_init(&ctx, SD_DEV_CPU, 1, 0), 0);
    sd_lora_net_args a;
    T_EQ_INT(sd_lora_net_args_parse(&a, 0, 4, 2.0, NULL, 0), 0);
    sd_lora_network net;
    sd_lora_network_opts no = { .args = &a, .with_unet = 1, .with_te = 1, .seed = 1 };
    T_EQ_INT(sd_lora_network_build(&net, &ctx, &m.unet, &m.clip, &no), 0);
    sd_safetensors *lf = NULL;
    T_EQ_INT(sd_safetensors_open(DIR "lora_final.safetensors", &lf), 0);
    size_t loaded = 0;
    T_EQ_INT(sd_lora_file_load(lf, net.refs, net.n, 0, &loaded), 0);
    T_EQ_INT(loaded, net.n);
    sd_safetensors_close(lf);
    /* merge every module into its layer's weight, then detach it */
    for (size_t i = 0; i < net.n; i++) {
        sd_param *w = net.host_lin[i] ? net.host_lin[i]->w : net.host_conv[i]->w;
        T_EQ_INT(sd_lora_merge(&ctx, &net.mods[i], &w->value, 1.0f), 0);
        if (net.host_lin[i]) net.host_lin[i]->lora = NULL;
        else net.host_conv[i]->lora = NULL;
        net.host_lin[i] = NULL;
        net.host_conv[i] = NULL;
    }
    sd_safetensors *gm = NULL;
    T_EQ_INT(sd_safetensors_open(DIR "model.safetensors", &gm), 0);
    enum { S = 77, WD = 16 };
    static float idsf[B * S], ctxg[B * S * WD], ctxc[B * S * WD], yg[B * PER], yc[B * PER], x[B * PER], t[B];
    static int32_t ids[B * S];
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.ids", idsf, B * S), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.merge_ctx", ctxg, B * S * WD), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.merge_y", yg, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.noise", g_noise, STEPS * B * PER), 0);
    memcpy(x, g_noise, sizeof x);   /* noise[0] */
    float tt[STEPS * B];
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.t", tt, STEPS * B), 0);
    sd_safetensors_close(gm);
    for (int i = 0; i < B * S; i++) ids[i] = (int32_t)idsf[i];
    for (int b = 0; b < B; b++) t[b] = tt[b];
    sd_tensor ti = sd_tensor_wrap(ids, SD_I32, 2, (int64_t[]){ B, S });
    sd_tensor tc = sd_tensor_wrap(ctxc, SD_F32, 3, (int64_t[]){ B, S, WD });
    T_EQ_INT(sd_clip_forward(&ctx, &m.clip, NULL, &tc, &ti, 0), 0);
    double ec = max_rel(ctxc, ctxg, B * S * WD);
    T_CHECKF(ec <= 1e-4, "text encoder with the merged LoRA: relative error %.3g", ec);
    sd_tensor tx = sd_tensor_wrap(x, SD_F32, 4, (int64_t[]){ B, 4, 8, 8 });
    sd_tensor tt2 = sd_tensor_wrap(t, SD_F32, 1, (int64_t[]){ B });
    sd_tensor tg = sd_tensor_wrap(ctxg, SD_F32, 3, (int64_t[]){ B, S, WD });
    sd_tensor ty = sd_tensor_wrap(yc, SD_F32, 4, (int64_t[]){ B, 4, 8, 8 });
    T_EQ_INT(sd_unet_forward(&ctx, &m.unet, NULL, &ty, &tx, &tt2, &tg, NULL), 0);
    double ey = max_rel(yc, yg, B * PER);
    T_CHECKF(ey <= 1e-4, "UNet with the merged LoRA: relative error %.3g", ey);
    printf("# merged LoRA: text encoder %.3g, UNet %.3g relative\n", ec, ey);
    sd_lora_network_free(&net);
    sd_ctx_free(&ctx);
    sd_model_close(&m);
}

int main(void)
{
    T_RUN(test_lora_train_golden);
    T_RUN(test_lora_merge_golden);
    T_DONE();
}
