/* A 10-step LoRA run of sd-train's loop (lib/train/loop.c, through sd_train_run: records,
 * captions → tokens → CLIP, LoRA on text encoder and UNet, MSE, backward, clipping, AdamW) against
 * the PyTorch transcription of tests/golden/gen/make_lora_train_golden.py, with noise and
 * timesteps fed from the golden file: losses, gradient norms and the final LoRA weights within
 * 1e-4 relative; the final LoRA weights within max(1e-4, 3 × the reference's own float32 spread)
 * per tensor (spread.safetensors: AdamW's division by sqrt(v) turns rounding in near-zero gradient
 * elements into visible update differences, up to ~6e-4 for torch float32 vs float64 here). The
 * final file has exactly the reference's keys. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jsonl.h"
#include "io/latent.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/loop.h"

#define DIR "tests/data/train_lora/"
#define STEPS 10
#define B 2
#define PER (4 * 8 * 8)

static float g_noise[STEPS * B * PER];
static float g_t[STEPS * B];

static int inject(void *user, int64_t micro, const int64_t *idx, int nb, int64_t per, float *noise, int *t)
{
    (void)user;
    if (micro >= STEPS || per != PER) return -1;
    for (int b = 0; b < nb; b++) {
        memcpy(noise + (size_t)b * PER, g_noise + ((size_t)micro * B + (size_t)idx[b]) * PER, PER * sizeof(float));
        t[b] = (int)g_t[micro * B + idx[b]];
    }
    return 0;
}

static double tensor_rel_err(const sd_safetensors *a, const sd_safetensors *b, const char *name)
{
    const sd_st_tensor *ta = sd_safetensors_find(a, name), *tb = sd_safetensors_find(b, name);
    if (!ta || !tb || ta->numel != tb->numel) return INFINITY;
    float *x = malloc((size_t)ta->numel * sizeof *x), *y = malloc((size_t)tb->numel * sizeof *y);
    double md = 0, mm = 0;
    if (x && y && !sd_safetensors_read(a, ta, SD_ST_F32, x, (size_t)ta->numel) &&
        !sd_safetensors_read(b, tb, SD_ST_F32, y, (size_t)tb->numel)) {
        for (int64_t i = 0; i < ta->numel; i++) {
            double d = fabs((double)x[i] - y[i]);
            if (d > md) md = d;
            if (fabs(y[i]) > mm) mm = fabs(y[i]);
        }
    } else {
        md = INFINITY;
    }
    free(x);
    free(y);
    return mm > 0 ? md / mm : md;
}

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
    c.inject = inject;
    for (int b = 0; b < B; b++) {
        sd_latent_file lf;
        memset(&lf, 0, sizeof lf);
        lf.latents = lat + b * PER;
        lf.c = 4;
        lf.h = 8;
        lf.w = 8;
        lf.original_size[0] = lf.original_size[1] = 64;
        lf.crop_ltrb[2] = lf.crop_ltrb[3] = 64;
        char name[64], path[512], line[1024];
        snprintf(name, sizeof name, "lora_golden_%d.npz", b);
        snprintf(path, sizeof path, "%s", t_path(name));
        T_EQ_INT(sd_latent_write(path, &lf, NULL), 0);
        snprintf(line, sizeof line, "{\"latents\":\"%s\",\"caption\":\"%s\"}", path, caps[b]);
        jv rec;
        T_EQ_INT(sd_jsonl_parse_line(line, strlen(line), &rec), 0);
        T_EQ_INT(sd_train_data_add_record(&d, &c, rec), 0);
        jv_free(rec);
    }
    int rc = sd_train_run(&c, &d);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    sd_train_data_free(&d);
    if (rc) return;
    /* losses and gradient norms per step */
    FILE *f = fopen(logp, "r");
    T_CHECK(f != NULL);
    char buf[4096];
    int n = 0;
    double worst_l = 0, worst_g = 0;
    while (f && fgets(buf, sizeof buf, f) && n < STEPS) {
        const char *pl = strstr(buf, "\"loss\":"), *pg = strstr(buf, "\"grad_norm\":");
        T_CHECK(pl && pg);
        if (!pl || !pg) break;
        double l = strtod(pl + 7, NULL), g = strtod(pg + 12, NULL);
        double el = fabs(l - loss[n]) / fabs(loss[n]), eg = fabs(g - gn[n]) / fabs(gn[n]);
        if (el > worst_l) worst_l = el;
        if (eg > worst_g) worst_g = eg;
        T_CHECKF(el <= 1e-4, "step %d: loss %.9g, reference %.9g", n + 1, l, loss[n]);
        T_CHECKF(eg <= 1e-4, "step %d: grad norm %.9g, reference %.9g", n + 1, g, gn[n]);
        n++;
    }
    if (f) fclose(f);
    T_EQ_INT(n, STEPS);
    printf("# worst relative error: loss %.3g, grad norm %.3g\n", worst_l, worst_g);
    /* the final weights, and the same key set as the reference's file */
    char out[600];
    snprintf(out, sizeof out, "%s/g.safetensors", outdir);
    sd_safetensors *a = NULL, *b = NULL, *sp = NULL;
    T_EQ_INT(sd_safetensors_open(out, &a), 0);
    T_EQ_INT(sd_safetensors_open(DIR "lora_final.safetensors", &b), 0);
    T_EQ_INT(sd_safetensors_open(DIR "spread.safetensors", &sp), 0);
    if (!a || !b || !sp) {
        sd_safetensors_close(a);
        sd_safetensors_close(b);
        sd_safetensors_close(sp);
        return;
    }
    int within_1e4 = 0, nten = 0;
    T_EQ_INT(sd_safetensors_count(a), sd_safetensors_count(b));
    double worst = 0;
    for (size_t i = 0; i < sd_safetensors_count(b); i++) {
        const sd_st_tensor *t = sd_safetensors_at(b, i);
        T_CHECKF(sd_safetensors_find(a, t->name) != NULL, "missing %s", t->name);
        double e = tensor_rel_err(a, b, t->name);
        if (e > worst) worst = e;
        size_t L = strlen(t->name);
        if (L > 6 && !strcmp(t->name + L - 6, ".alpha")) {
            T_CHECKF(e == 0, "%s differs", t->name);
            continue;
        }
        char sk[512];
        float spread = 1;
        snprintf(sk, sizeof sk, "spread.%s", t->name);
        T_EQ_INT(sd_safetensors_read_f32(sp, sk, &spread, 1), 0);
        double tol = 3 * spread > 1e-4 ? 3 * spread : 1e-4;
        nten++;
        within_1e4 += e <= 1e-4;
        T_CHECKF(e <= tol, "%s: relative error %.3g (allowed %.3g)", t->name, e, tol);
    }
    printf("# final LoRA weights: %d of %d tensors within 1e-4 relative, worst %.3g\n", within_1e4, nten, worst);
    sd_safetensors_close(a);
    sd_safetensors_close(b);
    sd_safetensors_close(sp);
}

int main(void)
{
    T_RUN(test_lora_train_golden);
    T_DONE();
}
