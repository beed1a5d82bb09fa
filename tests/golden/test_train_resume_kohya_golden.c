/* --resume from a kohya-ss/sd-scripts train_network.py --save_state folder (train/state_kohya.h),
 * against the PyTorch run of tests/golden/gen/make_lora_resume_kohya_golden.py: the tiny LoRA run
 * of test_train_lora_golden.c trained 4 steps in torch (AdamW), saved as accelerate + kohya do
 * (model.safetensors, optimizer.bin, scheduler.bin, random_states_0.pkl, train_state.json), and
 * continued 6 steps in torch from that float32 state with the golden noise and timesteps. sd-train
 * resumes from the folder (weights; exp_avg / exp_avg_sq / step of every parameter through kohya's
 * optimizer index order, which differs from sd-train's for 132 of the 192 parameters here: CLIP's
 * k, v, q projections and original_unet's down, up, mid blocks; the step count 4; the LR scheduler's
 * last_epoch 4) and runs steps 5..10 with the same noise and timesteps: the losses and gradient
 * norms within 1e-5 relative (measured ~5e-8 / ~3e-7), the final LoRA weights within 1e-5 relative
 * per tensor (measured ~4e-7), the file with exactly the reference's keys. A wrong mapping of the
 * moments (same shapes: q/k/v) shows as errors of 1e-2 and more.
 * The other tests: mapping checks without steps (the state saved right after the resume) for an
 * AdamW8bit folder in bitsandbytes' layout, an AdamW folder of the tiny SDXL LoRA and a torch SGD
 * (SGDNesterov) state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/fileio.h"
#include "io/ckpt.h"
#include "io/safetensors.h"
#include "test.h"
#include "sdxl_tiny_model.h"
#include "train_golden_run.h"
#include "train/loop.h"

#define SRC "tests/data/train_lora/"
#define DIR "tests/data/train_lora_kohya/"
#define STEPS 10
#define BEFORE 4
#define B 2
#define PER (4 * 8 * 8)

static float g_noise[STEPS * B * PER];
static float g_t[STEPS * B];

static tgr_feed g_feed = { g_noise, g_t, STEPS, B, PER };

/* The tiny SD1 LoRA run of test_train_lora_golden.c (its latents into lat), resuming `resume`. */
static void kohya_config(sd_train_config *c, float *lat, int64_t steps, const char *resume)
{
    sd_safetensors *gm = NULL;
    T_EQ_INT(sd_safetensors_open(SRC "model.safetensors", &gm), 0);
    if (gm) T_EQ_INT(sd_safetensors_read_f32(gm, "golden.latents", lat, B * PER), 0);
    sd_safetensors_close(gm);
    sd_train_config_default(c);
    c->model = SRC "model.safetensors";
    c->model_config = SRC "tiny.toml";
    c->network_dim = 4;
    c->network_alpha = 2.0;
    c->network_alpha_is_int = 0;
    c->learning_rate = 1e-3;
    c->max_train_steps = steps;
    c->train_batch_size = B;
    c->seed = 1;
    c->threads = 1;
    c->resume = resume;
}

static void test_resume_kohya_golden(void)
{
    sd_safetensors *gm = NULL, *gg = NULL;
    if (sd_safetensors_open(SRC "model.safetensors", &gm) || sd_safetensors_open(DIR "golden.safetensors", &gg)) {
        T_CHECKF(0, "%s", sd_errmsg());
        sd_safetensors_close(gm);
        return;
    }
    float lat[B * PER], loss[STEPS - BEFORE], gn[STEPS - BEFORE];
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.noise", g_noise, STEPS * B * PER), 0);
    T_EQ_INT(sd_safetensors_read_f32(gm, "golden.t", g_t, STEPS * B), 0);
    T_EQ_INT(sd_safetensors_read_f32(gg, "golden.loss", loss, STEPS - BEFORE), 0);
    T_EQ_INT(sd_safetensors_read_f32(gg, "golden.grad_norm", gn, STEPS - BEFORE), 0);
    sd_safetensors_close(gm);
    sd_safetensors_close(gg);
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    kohya_config(&c, lat, STEPS, DIR "state");
    char outdir[512], logp[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("resume_kohya_out"));
    snprintf(logp, sizeof logp, "%s", t_path("resume_kohya_log.jsonl"));
    remove(logp);
    c.output_dir = outdir;
    c.output_name = "g";
    c.log_jsonl = logp;
    c.inject = tgr_inject;
    c.inject_user = &g_feed;
    tgr_add_records(&d, &c, lat, caps, B, "resume_kohya");
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    /* steps 5..10: the log's first line is step 5 */
    FILE *f = fopen(logp, "r");
    char buf[4096];
    T_CHECK(f && fgets(buf, sizeof buf, f) && strstr(buf, "\"step\":5,"));
    if (f) fclose(f);
    double worst_l, worst_g;
    tgr_check_log(logp, loss, gn, STEPS - BEFORE, 1e-5, &worst_l, &worst_g);
    printf("# resumed steps 5..10, worst relative error: loss %.3g, grad norm %.3g\n", worst_l, worst_g);
    /* the final weights: the reference's keys, every tensor within 1e-4 */
    char out[600];
    snprintf(out, sizeof out, "%s/g.safetensors", outdir);
    sd_safetensors *a = NULL, *b = NULL;
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    T_EQ_INT(sd_safetensors_open(DIR "lora_final.safetensors", &b), 0);
    if (!a || !b) {
        sd_safetensors_close(a);
        sd_safetensors_close(b);
        return;
    }
    T_EQ_INT(sd_safetensors_count(a), sd_safetensors_count(b));
    double worst = 0;
    int within5 = 0, n = 0;
    for (size_t i = 0; i < sd_safetensors_count(b); i++) {
        const char *name = sd_safetensors_at(b, i)->name;
        double e = tgr_tensor_rel_err(a, b, name);
        size_t L = strlen(name);
        if (L > 6 && !strcmp(name + L - 6, ".alpha")) {
            T_CHECKF(e == 0, "%s differs", name);
            continue;
        }
        n++;
        within5 += e <= 1e-6;
        if (e > worst) worst = e;
        T_CHECKF(e <= 1e-5, "%s: relative error %.3g", name, e);
    }
    printf("# final LoRA weights: %d of %d tensors within 1e-6 relative, worst %.3g\n", within5, n, worst);
    sd_safetensors_close(a);
    sd_safetensors_close(b);
}

/* The state sd-train saved right after resuming from the kohya folder `kdir` (outdir/e-state): for
 * every kohya optimizer index i, each array of arrays[] present in kdir/optimizer.bin as
 * state.i.<array> is byte-identical to the saved <names[i]>.<array>, the step is `step`, and the
 * weights are kdir/model.safetensors'. *n counts the parameters, *n3 those with arrays[2]. */
static void check_saved_state(const char *kdir, const char *outdir, const char *const *arrays, int narr, int64_t step,
                              int *n, int *n3)
{
    char p1[600], p2[600], p3[600], p4[600], p5[600];
    snprintf(p1, sizeof p1, "%s/e-state/optimizer.safetensors", outdir);
    snprintf(p2, sizeof p2, "%s/e-state/weights.safetensors", outdir);
    snprintf(p3, sizeof p3, "%s/model.safetensors", kdir);
    snprintf(p4, sizeof p4, "%s/optimizer.bin", kdir);
    snprintf(p5, sizeof p5, "%s/names.txt", kdir);
    sd_safetensors *os = NULL, *ws = NULL, *km = NULL;
    sd_ckpt *ck = NULL;
    T_EQ_INT(sd_safetensors_open(p1, &os), 0);
    T_EQ_INT(sd_safetensors_open(p2, &ws), 0);
    T_EQ_INT(sd_safetensors_open(p3, &km), 0);
    T_EQ_INT(sd_ckpt_open(p4, &ck), 0);
    FILE *nf = fopen(p5, "r");
    T_CHECK(nf != NULL);
    char name[512], key[600];
    int arrays_ok = 0;
    *n = *n3 = 0;
    while (os && ws && km && ck && nf && fgets(name, sizeof name, nf)) {
        name[strcspn(name, "\n")] = 0;
        for (int a = 0; a < narr; a++) {
            snprintf(key, sizeof key, "state.%d.%s", *n, arrays[a]);
            const sd_ckpt_tensor *t = sd_ckpt_find(ck, key);
            if (!t) continue;
            snprintf(key, sizeof key, "%s.%s", name, arrays[a]);
            const sd_st_tensor *u = sd_safetensors_find(os, key);
            int same = u && u->dtype == t->dtype && u->nbytes == t->nbytes && t->contiguous &&
                       !memcmp(u->data, t->data, (size_t)t->nbytes);
            T_CHECKF(same, "kohya state %d.%s is not %s", *n, arrays[a], key);
            arrays_ok += same;
            *n3 += a == 2;
        }
        snprintf(key, sizeof key, "%s.step", name);
        int64_t st = -1;
        const sd_st_tensor *ts = sd_safetensors_find(os, key);
        T_CHECK(ts && sd_safetensors_read(os, ts, SD_ST_I64, &st, 1) == 0 && st == step);
        const sd_st_tensor *w = sd_safetensors_find(ws, name), *kw = sd_safetensors_find(km, name);
        T_CHECKF(w && kw && w->nbytes == kw->nbytes && !memcmp(w->data, kw->data, (size_t)w->nbytes), "weight %s", name);
        (*n)++;
    }
    if (nf) fclose(nf);
    printf("# %s: %d arrays byte-identical\n", kdir, arrays_ok);
    sd_ckpt_close(ck);
    sd_safetensors_close(os);
    sd_safetensors_close(ws);
    sd_safetensors_close(km);
}

/* AdamW8bit (bitsandbytes, min_8bit_size=256: 8-bit codes with absmax blocks for the larger
 * tensors, float32 states for the others): a folder whose optimizer.bin holds arbitrary states in
 * bnb's layout, resumed and saved at once (no step) as sd-train's own state: every array of kohya's
 * parameter i is byte-identical to the saved array of the parameter names.txt gives for index i
 * (kohya's order), the step 4, and the weights those of model.safetensors. */
static void test_resume_kohya_8bit(void)
{
    float lat[B * PER];
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    kohya_config(&c, lat, BEFORE, DIR "state8bit");
    c.optimizer_type = "AdamW8bit";
    static const char *args[1] = { "min_8bit_size=256" };
    sd_opt_list ol = { .n = 1, .s = args };
    c.optimizer_args = &ol;
    c.save_state_on_train_end = 1;
    char outdir[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("resume_kohya_8bit"));
    c.output_dir = outdir;
    c.output_name = "e";
    tgr_add_records(&d, &c, lat, caps, B, "resume_kohya8");
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    int n = 0, n8 = 0;
    static const char *const an[4] = { "state1", "state2", "absmax1", "absmax2" };
    check_saved_state(DIR "state8bit", outdir, an, 4, BEFORE, &n, &n8);
    T_EQ_INT(n, 192);
    T_CHECK(n8 > 0 && n8 < n);
    printf("# AdamW8bit: %d parameters (%d with 8-bit states)\n", n, n8);
}

static void copy_file(const char *from, const char *to)
{
    char *buf = NULL;
    size_t n = 0;
    T_EQ_INT(sd_read_file(from, 64u << 20, &buf, &n), 0);
    FILE *f = fopen(to, "wb");
    T_CHECK(f && fwrite(buf, 1, n, f) == n);
    if (f) fclose(f);
    free(buf);
}

/* SGDNesterov (torch.optim.SGD, nesterov, momentum 0.9): optimizer_sgd.bin in a copy of state8bit/
 * (same network, names.txt) maps every momentum_buffer onto the parameter kohya's index names; the
 * group hyper-parameters (momentum, dampening, nesterov, weight_decay) are those of this run. */
static void test_resume_kohya_sgd(void)
{
    char kdir[512], from[600], to[700];
    snprintf(kdir, sizeof kdir, "%s", t_path("kohya_sgd_state"));
    mkdir(kdir, 0755);
    static const char *const files[4] = { "model.safetensors", "scheduler.bin", "train_state.json", "names.txt" };
    for (int i = 0; i < 4; i++) {
        snprintf(from, sizeof from, DIR "state8bit/%s", files[i]);
        snprintf(to, sizeof to, "%s/%s", kdir, files[i]);
        copy_file(from, to);
    }
    snprintf(to, sizeof to, "%s/optimizer.bin", kdir);
    copy_file(DIR "optimizer_sgd.bin", to);
    float lat[B * PER];
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    kohya_config(&c, lat, BEFORE, kdir);
    c.optimizer_type = "SGDNesterov";
    c.save_state_on_train_end = 1;
    char outdir[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("resume_kohya_sgd"));
    c.output_dir = outdir;
    c.output_name = "e";
    tgr_add_records(&d, &c, lat, caps, B, "resume_kohya_sgd");
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    int n = 0, n3 = 0;
    static const char *const an[1] = { "momentum_buffer" };
    /* SGD keeps no step: sd-train's saved step of a resumed parameter is 0 */
    check_saved_state(kdir, outdir, an, 1, 0, &n, &n3);
    T_EQ_INT(n, 192);
    printf("# SGDNesterov: %d parameters mapped\n", n);
}

/* SDXL (TE1, TE2 and the UNet of make_lora_sdxl_train_golden.py, kohya's sdxl_original_unet order):
 * an AdamW state with arbitrary moments lands on the parameters kohya's indices name. */
static void test_resume_kohya_sdxl(void)
{
    char model[512];
    snprintf(model, sizeof model, "%s", t_path("resume_kohya_sdxl_model.safetensors"));
    int rc = write_model(model);
    T_CHECKF(rc == 0, "writing the model: %s", sd_errmsg());
    if (rc) return;
    float lat[B * PER];
    for (int i = 0; i < B * PER; i++) lat[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    static const char *const caps[B] = { "a photo of a cat", "red square, sky" };
    sd_train_data d;
    sd_train_data_init(&d);
    sd_train_config c;
    sd_train_config_default(&c);
    c.model = model;
    c.model_config = "tests/data/train_lora_sdxl/tiny.toml";
    c.network_dim = 2;
    c.network_alpha = 1.0;
    c.network_alpha_is_int = 0;
    c.learning_rate = 1e-3;
    c.max_train_steps = 3;
    c.train_batch_size = B;
    c.seed = 1;
    c.threads = 1;
    c.save_state_on_train_end = 1;
    c.resume = DIR "state_sdxl";
    char outdir[512];
    snprintf(outdir, sizeof outdir, "%s", t_path("resume_kohya_sdxl"));
    c.output_dir = outdir;
    c.output_name = "e";
    tgr_add_records(&d, &c, lat, caps, B, "resume_kohya_xl");
    rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    int n = 0, n2 = 0;
    static const char *const an[2] = { "exp_avg", "exp_avg_sq" };
    check_saved_state(DIR "state_sdxl", outdir, an, 2, 3, &n, &n2);
    T_EQ_INT(n, 156);
    T_EQ_INT(n2, 0);
    printf("# SDXL AdamW: %d parameters mapped\n", n);
}

int main(void)
{
    T_RUN(test_resume_kohya_golden);
    T_RUN(test_resume_kohya_8bit);
    T_RUN(test_resume_kohya_sdxl);
    T_RUN(test_resume_kohya_sgd);
    T_DONE();
}
