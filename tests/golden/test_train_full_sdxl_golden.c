/* A 2-step SDXL full run of sd-train's loop (--method ft on SDXL through sd_train_run: sdxl_train.py
 * with --train_text_encoder, --learning_rate_te1 / --learning_rate_te2 as their own optimizer groups,
 * --block_lr (one group per UNet block; two blocks at 0: not optimized, in the clipping norm), the context and pooled-vector gradients into both text
 * encoders, clipping, AdamW) against the PyTorch transcription of
 * tests/golden/gen/make_full_sdxl_train_golden.py, on the tiny model and inputs of the SDXL LoRA
 * golden (tests/data/train_lora_sdxl: weights from the generator's formula, latents, sizes, noise
 * and timesteps): losses and gradient norms within 1e-4 relative, and every final weight of the
 * saved checkpoint (read back through sd_model: UNet, TE1, TE2 from its OpenCLIP names; the first
 * 512 elements) within max(2e-4, 3 × the reference's own float32 spread) of max|w|.
 * The same run with --fused_optimizer_groups 3 (sdxl_train.py's optimizer steps inside the backward:
 * each tensor's gradient clipped alone) against the generator's --fused transcription
 * (tests/data/train_full_sdxl/fused.safetensors): losses, no grad_norm logged, the weights. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jsonl.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "models/clip.h"
#include "models/model_config.h"
#include "models/sd_model.h"
#include "models/unet.h"
#include "test.h"
#include "sdxl_tiny_model.h"
#include "train_golden_run.h"
#include "train/full.h"
#include "train/loop.h"

#define DIR "tests/data/train_lora_sdxl/"
#define FDIR "tests/data/train_full_sdxl/"
#define STEPS 2
#define GSTEPS 3
#define B 2
#define PER (4 * 8 * 8)

static float g_noise[GSTEPS * B * PER];
static float g_t[GSTEPS * B];
static tgr_feed g_feed = { g_noise, g_t, STEPS, B, PER };

/* every trained tensor of the saved checkpoint against the reference's first 512 elements */
static void check_weights(const char *path, sd_safetensors *gf)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    sd_model_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.parts = SD_MODEL_UNET | SD_MODEL_TE;
    mo.config = DIR "tiny.toml";
    mo.v_param = -1;
    int rc = sd_model_open(&m, path, &mo);
    if (!rc) rc = sd_params_set_frozen_dtype(&m.unet_params, SD_F32);
    if (!rc) rc = sd_params_set_frozen_dtype(&m.te_params, SD_F32);
    if (!rc) rc = sd_model_load(&m, SD_DEV_CPU);
    T_CHECKF(rc == 0, "%s: %s", path, sd_errmsg());
    if (rc) {
        sd_model_close(&m);
        return;
    }
    int ncmp = 0, within = 0;
    double worst = 0;
    static float x[1 << 20], y[512];
    sd_params *regs[2] = { &m.unet_params, &m.te_params };
    for (int r = 0; r < 2; r++)
        for (size_t i = 0; i < sd_params_count(regs[r]); i++) {
            sd_param *p = sd_params_at(regs[r], i);
            char fk[300], mk[320];
            formula_key(p->key, fk, sizeof fk);
            const sd_st_tensor *t = sd_safetensors_find(gf, fk);
            T_CHECKF(t != NULL, "%s (%s) not in the golden file", fk, p->key);
            int64_t n = sd_tensor_numel(&p->value);
            T_CHECKF(p->value.dtype == SD_F32, "%s: not float32", p->key);
            if (!t || n > (int64_t)(sizeof x / sizeof *x) || p->value.dtype != SD_F32) continue;
            memcpy(x, p->value.data, (size_t)n * sizeof(float));
            float mx = 0, spread = 1;
            snprintf(mk, sizeof mk, "max.%s", fk);
            T_EQ_INT(sd_safetensors_read_f32(gf, mk, &mx, 1), 0);
            snprintf(mk, sizeof mk, "spread.%s", fk);
            T_EQ_INT(sd_safetensors_read_f32(gf, mk, &spread, 1), 0);
            T_EQ_INT(sd_safetensors_read_f32(gf, fk, y, (size_t)t->numel), 0);
            double md = 0;
            for (int64_t k = 0; k < t->numel && k < n; k++) md = fmax(md, fabs((double)x[k] - y[k]));
            double e = mx > 0 ? md / mx : md, tol = fmax(2e-4, 3.0 * spread);
            worst = fmax(worst, e);
            within += e <= 1e-4;
            T_CHECKF(e <= tol, "%s: relative error %.3g (allowed %.3g)", fk, e, tol);
            ncmp++;
        }
    printf("# %d final weight tensors compared, %d within 1e-4 relative, worst %.3g\n", ncmp, within, worst);
    T_CHECK(ncmp > 250);
    sd_model_close(&m);
}

static void run_case(const char *golden, int fused)
{
    sd_safetensors *gm = NULL, *gf = NULL;
    if (sd_safetensors_open(DIR "golden.safetensors", &gm) || sd_safetensors_open(golden, &gf)) {
        T_CHECKF(0, "%s", sd_errmsg());
        sd_safetensors_close(gm);
        return;
    }
    float lat[B * PER], loss[STEPS], gn[STEPS], sizes[B * 6];
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.latents", lat, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.sizes", sizes, B * 6), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.noise", g_noise, GSTEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.t", g_t, GSTEPS * B), 0);
    T_EQ_INT(sd_safetensors_read_f32(gf, "golden.loss", loss, STEPS), 0);
    if (!fused) T_EQ_INT(sd_safetensors_read_f32(gf, "golden.grad_norm", gn, STEPS), 0);
    sd_safetensors_close(gm);
    char model[512];
    snprintf(model, sizeof model, "%s", t_path("sdxl_full_golden_model.safetensors"));
    int rc = write_model(model);
    T_CHECKF(rc == 0, "writing the model: %s", sd_errmsg());
    if (rc) {
        sd_safetensors_close(gf);
        return;
    }
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    /* block i at 1e-3 · (1 + 0.05 i), blocks 0 and 11 at 0, as the generator's BLOCK_LR */
    static char block_lr[23 * 32];
    block_lr[0] = 0;
    for (int i = 0; i < 23; i++)
        snprintf(block_lr + strlen(block_lr), sizeof block_lr - strlen(block_lr), "%s%.17g", i ? "," : "",
                 i == 0 || i == 11 ? 0.0 : 1e-3 * (1 + 0.05 * i));
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    sd_train_config_default(&c);
    c.model = model;
    c.model_config = DIR "tiny.toml";
    c.method = SD_METHOD_FT;
    c.save_model_as = NULL;
    c.learning_rate = 1e-3;
    c.train_text_encoder = 1;
    c.learning_rate_te1 = 5e-4;
    c.learning_rate_te2 = 2e-4;
    c.block_lr = block_lr;
    c.max_train_steps = STEPS;
    c.train_batch_size = B;
    c.seed = 1;
    c.threads = 1;
    c.fused_optimizer_groups = fused ? 3 : 0;
    char outdir[512], logp[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("full_sdxl_golden_out"));
    snprintf(logp, sizeof logp, "%s", t_path("full_sdxl_golden_log.jsonl"));
    c.output_dir = outdir;
    c.output_name = "g";
    c.log_jsonl = logp;
    c.inject = tgr_inject;
    c.inject_user = &g_feed;
    for (int b = 0; b < B; b++) {
        sd_latent_file lf;
        memset(&lf, 0, sizeof lf);
        lf.latents = lat + b * PER;
        lf.c = 4;
        lf.h = 8;
        lf.w = 8;
        lf.original_size[0] = (int64_t)sizes[b * 6];
        lf.original_size[1] = (int64_t)sizes[b * 6 + 1];
        for (int k = 0; k < 4; k++) lf.crop_ltrb[k] = (int64_t)sizes[b * 6 + 2 + k];
        char name[96], path[512], line[1024];
        snprintf(name, sizeof name, "sdxl_full_golden_%d.npz", b);
        snprintf(path, sizeof path, "%s", t_path(name));
        T_EQ_INT(sd_latent_write(path, &lf, NULL), 0);
        snprintf(line, sizeof line, "{\"latents\":\"%s\",\"caption\":\"%s\"}", path, caps[b]);
        jv rec;
        T_EQ_INT(sd_jsonl_parse_line(line, strlen(line), &rec), 0);
        T_EQ_INT(sd_train_data_add_record(&d, &c, rec), 0);
        jv_free(rec);
    }
    rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (!rc) {
        double worst_l = 0, worst_g = 0;
        if (!fused) {
            tgr_check_log(logp, loss, gn, STEPS, 1e-4, &worst_l, &worst_g);
        } else {
            FILE *f = fopen(logp, "r");
            char buf[4096];
            int n = 0;
            while (f && fgets(buf, sizeof buf, f) && n < STEPS) {
                const char *pl = strstr(buf, "\"loss\":");
                T_CHECK(pl && !strstr(buf, "\"grad_norm\":"));
                double el = pl ? fabs(strtod(pl + 7, NULL) - loss[n]) / fabs(loss[n]) : 1;
                T_CHECKF(el <= 1e-4, "step %d: loss error %.3g", n + 1, el);
                if (el > worst_l) worst_l = el;
                n++;
            }
            if (f) fclose(f);
            T_EQ_INT(n, STEPS);
        }
        printf("# %s: worst relative error: loss %.3g, grad norm %.3g\n", fused ? "fused" : "plain", worst_l, worst_g);
        char out[600];
        snprintf(out, sizeof out, "%s/g.safetensors", outdir);
        check_weights(out, gf);
    }
    sd_safetensors_close(gf);
}

static void test_full_sdxl_train_golden(void) { run_case(FDIR "full.safetensors", 0); }
static void test_full_sdxl_train_fused_golden(void) { run_case(FDIR "fused.safetensors", 1); }

int main(void)
{
    T_RUN(test_full_sdxl_train_golden);
    T_RUN(test_full_sdxl_train_fused_golden);
    T_DONE();
}
