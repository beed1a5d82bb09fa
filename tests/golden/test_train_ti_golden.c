/* Textual inversion in sd-train's loop (lib/train/loop.c + lib/train/ti.c, through sd_train_run:
 * records, the token replacement "xqzj" -> "xqzj xqzj1", the new ids in the captions, --init_word
 * rows, CLIP backward into the token lookup, clipping over the whole table's gradient, AdamW on
 * the new rows) against tests/golden/gen/make_ti_train_golden.py (kohya's
 * train_textual_inversion.py transcribed in PyTorch float64, the whole table trained and the old
 * rows restored after every step), with noise and timesteps fed from the golden file: losses,
 * gradient norms (before clipping) and the final embedding within 1e-4 relative; Adafactor,
 * Prodigy and DAdaptAdam on the whole table likewise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jsonl.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "test.h"
#include "train_golden_run.h"
#include "train/loop.h"
#include "train/ti.h"

#define DIR "tests/data/train_lora/"
#define GOLD "tests/data/train_ti/golden.safetensors"
#define OGOLD "tests/data/train_ti/optim_golden.safetensors"
#define STEPS 6
#define B 2
#define PER (4 * 8 * 8)
#define WD 16

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

/* The golden runs' configuration: the tiny model, the token "xqzj" (2 vectors from "red square"),
 * batch B, seed 1, one thread. */
static void ti_golden_config(sd_train_config *c, double lr, int64_t steps)
{
    sd_train_config_default(c);
    c->model = DIR "model.safetensors";
    c->model_config = DIR "tiny.toml";
    c->ti.on = 1;
    c->ti.token_string = "xqzj";
    c->ti.num_vectors_per_token = 2;
    c->ti.init_word = "red square";
    c->save_model_as = "safetensors";
    c->learning_rate = lr;
    c->max_grad_norm = 0.05;
    c->max_train_steps = steps;
    c->train_batch_size = B;
    c->seed = 1;
    c->threads = 1;
}

static void test_ti_train_golden(void)
{
    sd_safetensors *gm = NULL;
    if (sd_safetensors_open(GOLD, &gm)) {
        T_CHECKF(0, "%s", sd_errmsg());
        return;
    }
    float lat[B * PER], loss[STEPS], gn[STEPS], e0[2 * WD], e1[2 * WD];
    T_EQ_INT(sd_safetensors_read_f32(gm, "latents", lat, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "noise", g_noise, STEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "t", g_t, STEPS * B), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "loss", loss, STEPS), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "grad_norm", gn, STEPS), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "emb_init", e0, 2 * WD), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "emb_final", e1, 2 * WD), 0);
    sd_safetensors_close(gm);
    static const char *const caps[B] = { "a photo of xqzj", "xqzj, red square" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    ti_golden_config(&c, 1e-2, STEPS);
    char outdir[512], logp[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("ti_golden_out"));
    snprintf(logp, sizeof logp, "%s", t_path("ti_golden_log.jsonl"));
    c.output_dir = outdir;
    c.save_every_n_steps = 1;   /* emb after step 1 = the initial rows moved once */
    c.log_jsonl = logp;
    c.inject = tgr_inject;
    c.inject_user = &g_feed;
    tgr_add_records(&d, &c, lat, caps, B, "ti_golden");
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    double worst_l, worst_g;
    tgr_check_log(logp, loss, gn, STEPS, 1e-4, &worst_l, &worst_g);
    char out[600];
    snprintf(out, sizeof out, "%s/xqzj.safetensors", outdir);   /* output_name defaults to the token */
    sd_safetensors *a = NULL;
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    if (!a) return;
    const sd_st_tensor *t = sd_safetensors_find(a, "emb_params");
    T_CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == WD && sd_safetensors_count(a) == 1);
    float got[2 * WD];
    T_EQ_INT(sd_safetensors_read_f32(a, "emb_params", got, 2 * WD), 0);
    const char *arch = sd_safetensors_meta_get(a, "modelspec.architecture");
    T_CHECKF(arch && !strcmp(arch, "stable-diffusion-v1/textual-inversion"), "architecture %s", arch ? arch : "(none)");
    sd_safetensors_close(a);
    double e = max_rel(got, e1, 2 * WD), moved = max_rel(e1, e0, 2 * WD);
    T_CHECKF(e <= 1e-4, "final embedding: relative error %.3g", e);
    T_CHECKF(moved > 1e-2, "the embedding moved only %.3g", moved);
    printf("# worst relative error: loss %.3g, grad norm %.3g, embedding %.3g (moved %.3g)\n", worst_l, worst_g, e,
           moved);
    /* the step-1 save is "xqzj-step00000001.safetensors" (§6.11) */
    snprintf(out, sizeof out, "%s/xqzj-step00000001.safetensors", outdir);
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    sd_safetensors_close(a);
}

/* The optimizers whose statistics span the reference's parameter, the whole token table [49410, 16]
 * (Adafactor: the table's RMS in its relative step / update scale; Prodigy, DAdaptAdam: their
 * sums: their d grows within the 6 steps), and the ScheduleFree ones on the new rows (train-mode
 * weights y), against tests/golden/gen/make_ti_optim_golden.py. */
#define OSTEPS 6
static void optim_case(const char *tag, const char *type, const char **args, int nargs, double lr)
{
    sd_safetensors *gm = NULL;
    float lat[B * PER], loss[OSTEPS], gn[OSTEPS], e1[2 * WD];
    char key[64];
    T_EQ_INT(sd_safetensors_open(GOLD, &gm), 0);
    if (!gm) return;
    T_EQ_INT(sd_safetensors_read_f32(gm, "latents", lat, B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "noise", g_noise, STEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "t", g_t, STEPS * B), 0);
    sd_safetensors_close(gm);
    gm = NULL;
    T_EQ_INT(sd_safetensors_open(OGOLD, &gm), 0);
    if (!gm) return;
    snprintf(key, sizeof key, "%s.loss", tag);
    T_EQ_INT(sd_safetensors_read_f32(gm, key, loss, OSTEPS), 0);
    snprintf(key, sizeof key, "%s.grad_norm", tag);
    T_EQ_INT(sd_safetensors_read_f32(gm, key, gn, OSTEPS), 0);
    snprintf(key, sizeof key, "%s.emb_final", tag);
    T_EQ_INT(sd_safetensors_read_f32(gm, key, e1, 2 * WD), 0);
    sd_safetensors_close(gm);
    static const char *const caps[B] = { "a photo of xqzj", "xqzj, red square" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    ti_golden_config(&c, lr, OSTEPS);
    c.optimizer_type = type;
    sd_opt_list ol = { nargs, args, NULL, NULL };
    c.optimizer_args = &ol;
    char outdir[512], logp[512];
    snprintf(key, sizeof key, "ti_golden_%s", tag);
    snprintf(outdir, sizeof outdir, "%s", t_path(key));
    snprintf(key, sizeof key, "ti_golden_%s.jsonl", tag);
    snprintf(logp, sizeof logp, "%s", t_path(key));
    c.output_dir = outdir;
    c.log_jsonl = logp;
    c.inject = tgr_inject;
    c.inject_user = &g_feed;
    tgr_add_records(&d, &c, lat, caps, B, key);
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s: %s", tag, sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    double worst_l, worst_g;
    tgr_check_log(logp, loss, gn, OSTEPS, 1e-4, &worst_l, &worst_g);
    char out[600];
    snprintf(out, sizeof out, "%s/xqzj.safetensors", outdir);
    sd_safetensors *a = NULL;
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    if (!a) return;
    float got[2 * WD];
    T_EQ_INT(sd_safetensors_read_f32(a, "emb_params", got, 2 * WD), 0);
    sd_safetensors_close(a);
    double e = max_rel(got, e1, 2 * WD);
    T_CHECKF(e <= 1e-4, "%s: final embedding: relative error %.3g", tag, e);
    printf("# %s: worst relative error: loss %.3g, grad norm %.3g, embedding %.3g\n", tag, worst_l, worst_g, e);
}

static void test_ti_optim_golden(void)
{
    optim_case("adafactor", "Adafactor", NULL, 0, 1e-2);
    const char *lr_args[] = { "relative_step=False" };
    optim_case("adafactor_lr", "Adafactor", lr_args, 1, 3e-2);
    const char *p_args[] = { "d0=1e-4", "d_coef=10" };
    optim_case("prodigy", "Prodigy", p_args, 2, 1.0);
    const char *d_args[] = { "d0=1e-3" };
    optim_case("dadapt", "DAdaptAdam", d_args, 1, 1.0);
    const char *sf_args[] = { "warmup_steps=2", "weight_decay=1e-2" };
    optim_case("adamw_sf", "AdamWScheduleFree", sf_args, 2, 2e-2);
    optim_case("radam_sf", "RAdamScheduleFree", sf_args + 1, 1, 2e-2);
}

/* torch.save layout of a .pt embedding read back by our pickle reader; "same word" detection. */
static void test_ti_pt_roundtrip(void)
{
    sd_clip_tokenizer *tok = NULL;
    T_EQ_INT(sd_clip_tokenizer_load(NULL, &tok), 0);
    if (!tok) return;
    T_CHECK(sd_ti_in_vocab(tok, "cat"));        /* a non-final BPE piece */
    T_CHECK(sd_ti_in_vocab(tok, "cat</w>"));
    T_CHECK(sd_ti_in_vocab(tok, "<|endoftext|>"));
    T_CHECK(!sd_ti_in_vocab(tok, "xqzj"));
    T_CHECK(!sd_ti_in_vocab(tok, "xqzj1"));
    sd_clip_tokenizer_free(tok);
}

int main(void)
{
    T_RUN(test_ti_train_golden);
    T_RUN(test_ti_optim_golden);
    T_RUN(test_ti_pt_roundtrip);
    T_DONE();
}
