/* A 3-step SDXL LoRA run of sd-train's loop (lib/train/loop.c through sd_train_run: records with
 * the latent files' original size and crop, captions → TE1 / TE2 ids → layer outputs and pooled
 * vector, context and vector (pooled ++ size embedding), LoRA on both text encoders and the UNet,
 * MSE, backward into the text encoders through the context and the pooled vector, clipping, AdamW)
 * against the PyTorch transcription of tests/golden/gen/make_lora_sdxl_train_golden.py, with noise
 * and timesteps fed from the golden file: losses and gradient norms within 1e-4 relative; the final
 * LoRA weights within max(1e-4, 3 × the reference's own float32 spread) per tensor; exactly the
 * reference's keys (lora_te1_*, lora_te2_*, lora_unet_<ldm name>).
 * The model file is written here: every weight from the generator's formula (make_unet_sdxl_golden
 * .sdxl_weight), UNet and TE1 under their single-file names, TE2 in OpenCLIP names
 * (sd_clip_openclip_name: q/k/v fused into in_proj, text_projection transposed). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jsonl.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "models/clip.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "test.h"
#include "sdxl_tiny_model.h"
#include "train_golden_run.h"
#include "train/loop.h"

#define DIR "tests/data/train_lora_sdxl/"
#define STEPS 3
#define B 2
#define PER (4 * 8 * 8)

static float g_noise[STEPS * B * PER];
static float g_t[STEPS * B];
static tgr_feed g_feed = { g_noise, g_t, STEPS, B, PER };

static void test_lora_sdxl_train_golden(void)
{
    sd_safetensors *gm = NULL;
    if (sd_safetensors_open(DIR "golden.safetensors", &gm)) {
        T_CHECKF(0, "%s", sd_errmsg());
        return;
    }
    float lat[B * PER], loss[STEPS], gn[STEPS], sizes[B * 6];
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.latents", lat, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.sizes", sizes, B * 6), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.noise", g_noise, STEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.t", g_t, STEPS * B), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.loss", loss, STEPS), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.grad_norm", gn, STEPS), 0);
    /* the C formula = the generator's */
    static const char *const wk[2] = { "te1.text_model.encoder.layers.0.mlp.fc1.weight", "te2.text_projection.weight" };
    for (int i = 0; i < 2; i++) {
        char gname[160];
        snprintf(gname, sizeof gname, "golden.w.%s", wk[i]);
        const sd_st_tensor *st = sd_safetensors_find(gm, gname);
        T_CHECKF(st != NULL, "%s missing", gname);
        if (!st) continue;
        float *ref = malloc((size_t)st->numel * sizeof *ref), *mine = malloc((size_t)st->numel * sizeof *mine);
        T_EQ_INT(sd_safetensors_read(gm, st, SD_ST_F32, ref, (size_t)st->numel), 0);
        sd_tensor t = sd_tensor_wrap(mine, SD_F32, st->ndim, st->shape);
        formula(wk[i], &t);
        T_CHECKF(!memcmp(ref, mine, (size_t)st->numel * sizeof(float)), "weight formula differs on %s", wk[i]);
        free(ref);
        free(mine);
    }
    sd_safetensors_close(gm);
    char model[512];
    snprintf(model, sizeof model, "%s", t_path("sdxl_golden_model.safetensors"));
    int rc = write_model(model);
    T_CHECKF(rc == 0, "writing the model: %s", sd_errmsg());
    if (rc) return;
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    sd_train_config_default(&c);
    c.model = model;
    c.model_config = DIR "tiny.toml";
    c.network_dim = 2;
    c.network_alpha = 1.0;
    c.network_alpha_is_int = 0;
    c.network_weights = DIR "lora_init.safetensors";
    c.learning_rate = 1e-3;
    c.max_train_steps = STEPS;
    c.train_batch_size = B;
    c.seed = 1;
    c.threads = 1;
    char outdir[512], logp[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("lora_sdxl_golden_out"));
    snprintf(logp, sizeof logp, "%s", t_path("lora_sdxl_golden_log.jsonl"));
    c.output_dir = outdir;
    c.output_name = "g";
    c.log_jsonl = logp;
    c.inject = tgr_inject;
    c.inject_user = &g_feed;
    /* the records: latent files with the reference's original sizes and crops (bucket 64x64) */
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
        snprintf(name, sizeof name, "sdxl_golden_%d.npz", b);
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
    if (rc) return;
    double worst_l, worst_g;
    tgr_check_log(logp, loss, gn, STEPS, 1e-4, &worst_l, &worst_g);
    printf("# worst relative error: loss %.3g, grad norm %.3g\n", worst_l, worst_g);
    char out[600];
    snprintf(out, sizeof out, "%s/g.safetensors", outdir);
    tgr_check_lora_final(out, DIR "lora_final.safetensors", DIR "spread.safetensors");
}

int main(void)
{
    T_RUN(test_lora_sdxl_train_golden);
    T_DONE();
}
