/* A 4-step DreamBooth run of sd-train's loop (--method db through sd_train_run: every UNet and
 * text-encoder weight trained, --learning_rate_te as a second optimizer group,
 * --stop_text_encoder_training 2, clipping, AdamW) against the PyTorch transcription of
 * tests/golden/gen/make_full_train_golden.py, with noise and timesteps fed from the golden file:
 * losses and gradient norms within 1e-4 relative, and every final weight of the saved checkpoint
 * (its first 512 elements; the used rows of the token embedding) within max(2e-4, 3 × the
 * reference's own float32 spread) of max|w| of the reference's tensor (as the LoRA golden: AdamW's
 * first steps move each element by about lr whatever its gradient's size, so rounding in near-zero
 * gradients shows; torch float32 vs float64 differ by up to ~3e-3 on a few bias vectors here). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jsonl.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "test.h"
#include "train_golden_run.h"
#include "train/full.h"
#include "train/loop.h"

#define LDIR "tests/data/train_lora/"
#define FDIR "tests/data/train_full/"
#define STEPS 4
#define GSTEPS 10
#define B 2
#define PER (4 * 8 * 8)

static float g_noise[GSTEPS * B * PER];
static float g_t[GSTEPS * B];

static tgr_feed g_feed = { g_noise, g_t, STEPS, B, PER };

static void test_full_train_golden(void)
{
    sd_safetensors *gm = NULL, *gf = NULL;
    if (sd_safetensors_open(LDIR "model.safetensors", &gm) || sd_safetensors_open(FDIR "full.safetensors", &gf)) {
        T_CHECKF(0, "%s", sd_errmsg());
        sd_safetensors_close(gm);
        return;
    }
    float lat[B * PER], loss[STEPS], gn[STEPS];
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.latents", lat, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.noise", g_noise, GSTEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.t", g_t, GSTEPS * B), 0);
    T_EQ_INT(sd_safetensors_read_f32(gf, "golden.loss", loss, STEPS), 0);
    T_EQ_INT(sd_safetensors_read_f32(gf, "golden.grad_norm", gn, STEPS), 0);
    sd_safetensors_close(gm);
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    sd_train_config_default(&c);
    c.model = LDIR "model.safetensors";
    c.model_config = LDIR "tiny.toml";
    c.method = SD_METHOD_DB;
    c.save_model_as = NULL;
    c.learning_rate = 1e-3;
    c.learning_rate_te = 5e-4;
    c.has_stop_text_encoder_training = 1;
    c.stop_text_encoder_training = 2;
    c.max_train_steps = STEPS;
    c.train_batch_size = B;
    c.seed = 1;
    c.threads = 1;
    char outdir[512], logp[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("full_golden_out"));
    snprintf(logp, sizeof logp, "%s", t_path("full_golden_log.jsonl"));
    c.output_dir = outdir;
    c.output_name = "g";
    c.log_jsonl = logp;
    c.inject = tgr_inject;
    c.inject_user = &g_feed;
    tgr_add_records(&d, &c, lat, caps, B, "full_golden");
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) {
        sd_safetensors_close(gf);
        return;
    }
    /* losses and gradient norms per step */
    double worst_l, worst_g;
    tgr_check_log(logp, loss, gn, STEPS, 1e-4, &worst_l, &worst_g);
    /* the final weights of the saved checkpoint */
    char out[600];
    snprintf(out, sizeof out, "%s/g.safetensors", outdir);
    sd_safetensors *a = NULL;
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    if (!a) {
        sd_safetensors_close(gf);
        return;
    }
    int ncmp = 0, within = 0;
    double worst = 0;
    static float x[1 << 20], y[512];
    for (size_t i = 0; i < sd_safetensors_count(gf); i++) {
        const sd_st_tensor *t = sd_safetensors_at(gf, i);
        if (!strncmp(t->name, "golden.", 7) || !strncmp(t->name, "max.", 4) || !strncmp(t->name, "spread.", 7) || !strncmp(t->name, "final.", 6)) continue;
        const sd_st_tensor *o = sd_safetensors_find(a, t->name);
        T_CHECKF(o != NULL && o->dtype == SD_ST_F32 && o->numel <= (int64_t)(sizeof x / sizeof *x), "%s", t->name);
        if (!o || o->numel > (int64_t)(sizeof x / sizeof *x)) continue;
        char mk[600];
        snprintf(mk, sizeof mk, "max.%s", t->name);
        float mx = 0, spread = 1;
        T_EQ_INT(sd_safetensors_read_f32(gf, mk, &mx, 1), 0);
        snprintf(mk, sizeof mk, "spread.%s", t->name);
        T_EQ_INT(sd_safetensors_read_f32(gf, mk, &spread, 1), 0);
        double tol = fmax(2e-4, 3.0 * spread);   /* 1e-4 in the -O2 build; the sanitizer build rounds differently */
        T_EQ_INT(sd_safetensors_read(a, o, SD_ST_F32, x, (size_t)o->numel), 0);
        T_EQ_INT(sd_safetensors_read_f32(gf, t->name, y, (size_t)t->numel), 0);
        double md = 0;
        for (int64_t k = 0; k < t->numel; k++) md = fmax(md, fabs((double)x[k] - y[k]));
        double e = mx > 0 ? md / mx : md;
        worst = fmax(worst, e);
        within += e <= 1e-4;
        T_CHECKF(e <= tol, "%s: relative error %.3g (allowed %.3g)", t->name, e, tol);
        ncmp++;
    }
    /* the token embedding: the rows the captions use */
    float rows[64], ref[64 * 16];
    const sd_st_tensor *tr = sd_safetensors_find(gf, "final.token_rows");
    const sd_st_tensor *tok = sd_safetensors_find(a, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight");
    T_CHECK(tr && tok && tr->numel <= 64 && tok->ndim == 2 && tok->shape[1] == 16);
    if (tr && tok && tr->numel <= 64 && tok->ndim == 2 && tok->shape[1] == 16) {
        T_EQ_INT(sd_safetensors_read_f32(gf, "final.token_rows", rows, (size_t)tr->numel), 0);
        T_EQ_INT(sd_safetensors_read_f32(gf, "final.token_embedding", ref, (size_t)tr->numel * 16), 0);
        T_EQ_INT(sd_safetensors_read(a, tok, SD_ST_F32, x, (size_t)tok->numel), 0);
        double md = 0, mm = 0;
        for (int64_t r = 0; r < tr->numel; r++)
            for (int k = 0; k < 16; k++) {
                md = fmax(md, fabs((double)x[(int64_t)rows[r] * 16 + k] - ref[r * 16 + k]));
                mm = fmax(mm, fabs((double)ref[r * 16 + k]));
            }
        float sp = 1;
        T_EQ_INT(sd_safetensors_read_f32(gf, "spread.final.token_embedding", &sp, 1), 0);
        T_CHECKF(md <= fmax(2e-4, 3.0 * sp) * mm, "token embedding rows: error %.3g of %.3g", md, mm);
        within += md <= 1e-4 * mm;
        worst = fmax(worst, md / mm);
        ncmp++;
    }
    printf("# %d final weight tensors compared, %d within 1e-4 relative, worst %.3g\n", ncmp, within, worst);
    sd_safetensors_close(a);
    sd_safetensors_close(gf);
}

int main(void)
{
    T_RUN(test_full_train_golden);
    T_DONE();
}
