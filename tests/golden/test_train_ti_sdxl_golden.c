/* SDXL textual inversion in sd-train's loop (lib/train/loop.c + lib/train/ti.c, through
 * sd_train_run: the token replacement "xqzj" -> "xqzj xqzj1" in both encoders' ids (TE1 padded with
 * EOS, TE2 with 0), --init_word rows per encoder, the backward into both token lookups (TE1 through
 * the context, TE2 through the context and the pooled vector), clipping over both tables' gradients,
 * AdamW on the new rows of both) against tests/golden/gen/make_ti_sdxl_train_golden.py (kohya's
 * sdxl_train_textual_inversion.py transcribed in PyTorch float64, the whole tables trained and the
 * old rows restored after every step), with noise and timesteps fed from the golden file: losses,
 * gradient norms (before clipping) and the final clip_l / clip_g within 1e-4 relative. The model
 * is written as test_train_lora_sdxl_golden.c writes it (the generator's weight formula). */
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
#define GOLD "tests/data/train_ti_sdxl/golden.safetensors"
#define STEPS 3
#define B 2
#define PER (4 * 8 * 8)
#define W1 8
#define W2 16

static float g_noise[STEPS * B * PER];
static float g_t[STEPS * B];
static tgr_feed g_feed = { g_noise, g_t, STEPS, B, PER };

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

static void test_ti_sdxl_train_golden(void)
{
    sd_safetensors *gm = NULL;
    if (sd_safetensors_open(GOLD, &gm)) {
        T_CHECKF(0, "%s", sd_errmsg());
        return;
    }
    float lat[B * PER], loss[STEPS], gn[STEPS], sizes[B * 6];
    float l0[2 * W1], l1[2 * W1], g0[2 * W2], g1[2 * W2];
    T_EQ_INT(sd_safetensors_read_f32(gm, "latents", lat, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "sizes", sizes, B * 6), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "noise", g_noise, STEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "t", g_t, STEPS * B), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "loss", loss, STEPS), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "grad_norm", gn, STEPS), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "clip_l_init", l0, 2 * W1), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "clip_l_final", l1, 2 * W1), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "clip_g_init", g0, 2 * W2), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "clip_g_final", g1, 2 * W2), 0);
    sd_safetensors_close(gm);
    char model[512];
    snprintf(model, sizeof model, "%s", t_path("ti_sdxl_golden_model.safetensors"));
    int rc = write_model(model);
    T_CHECKF(rc == 0, "writing the model: %s", sd_errmsg());
    if (rc) return;
    static const char *const caps[B] = { "a photo of xqzj", "xqzj, red square" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    sd_train_config_default(&c);
    c.model = model;
    c.model_config = DIR "tiny.toml";
    c.ti.on = 1;
    c.ti.token_string = "xqzj";
    c.ti.num_vectors_per_token = 2;
    c.ti.init_word = "red square";
    c.save_model_as = "safetensors";
    c.learning_rate = 1e-2;
    c.max_grad_norm = 0.05;
    c.max_train_steps = STEPS;
    c.train_batch_size = B;
    c.seed = 1;
    c.threads = 1;
    char outdir[512], logp[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("ti_sdxl_golden_out"));
    snprintf(logp, sizeof logp, "%s", t_path("ti_sdxl_golden_log.jsonl"));
    c.output_dir = outdir;
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
        snprintf(name, sizeof name, "ti_sdxl_golden_%d.npz", b);
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
    char out[600];
    snprintf(out, sizeof out, "%s/xqzj.safetensors", outdir);
    sd_safetensors *a = NULL;
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    if (!a) return;
    const sd_st_tensor *tl = sd_safetensors_find(a, "clip_l"), *tg = sd_safetensors_find(a, "clip_g");
    T_CHECK(tl && tl->ndim == 2 && tl->shape[0] == 2 && tl->shape[1] == W1);
    T_CHECK(tg && tg->ndim == 2 && tg->shape[0] == 2 && tg->shape[1] == W2);
    T_EQ_INT((int)sd_safetensors_count(a), 2);
    float gl[2 * W1], gg[2 * W2];
    T_EQ_INT(sd_safetensors_read_f32(a, "clip_l", gl, 2 * W1), 0);
    T_EQ_INT(sd_safetensors_read_f32(a, "clip_g", gg, 2 * W2), 0);
    const char *arch = sd_safetensors_meta_get(a, "modelspec.architecture");
    T_CHECKF(arch && !strcmp(arch, "stable-diffusion-xl-v1-base/textual-inversion"), "architecture %s",
             arch ? arch : "(none)");
    sd_safetensors_close(a);
    double el = max_rel(gl, l1, 2 * W1), eg = max_rel(gg, g1, 2 * W2);
    double ml = max_rel(l1, l0, 2 * W1), mg = max_rel(g1, g0, 2 * W2);
    T_CHECKF(el <= 1e-4, "clip_l: relative error %.3g", el);
    T_CHECKF(eg <= 1e-4, "clip_g: relative error %.3g", eg);
    T_CHECKF(ml > 1e-2 && mg > 1e-2, "the rows moved only %.3g (clip_l) / %.3g (clip_g)", ml, mg);
    printf("# worst relative error: loss %.3g, grad norm %.3g, clip_l %.3g, clip_g %.3g (moved %.3g / %.3g)\n",
           worst_l, worst_g, el, eg, ml, mg);
}

int main(void)
{
    T_RUN(test_ti_sdxl_train_golden);
    T_DONE();
}
