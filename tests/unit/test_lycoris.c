/* lib/train/lycoris: ΔW of LoHa / LoKr / LoCon modules (linear, 3×3 conv, Tucker, factored and full
 * LoKr factors, with and without alpha) against tests/golden/gen/make_lycoris_golden.py (a
 * transcription of LyCORIS' weight functions), ≤ 1e-6 relative; module listing and the refusals
 * (unknown key, DoRA, missing factor, shape mismatch, mixed types). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/lycoris.h"

static void test_golden_deltas(void)
{
    sd_safetensors *net = NULL, *del = NULL;
    T_EQ_INT(sd_safetensors_open(t_root_pathf("tests/data/lycoris/lycoris_tiny.safetensors"), &net), 0);
    T_EQ_INT(sd_safetensors_open(t_root_pathf("tests/data/lycoris/lycoris_tiny_delta.safetensors"), &del), 0);
    if (!net || !del) {
        sd_safetensors_close(net);
        sd_safetensors_close(del);
        return;
    }
    T_EQ_INT(sd_lycoris_file_is(net), 1);
    char **names = NULL;
    size_t n = 0;
    T_EQ_INT(sd_lycoris_modules(net, &names, &n), 0);
    T_EQ_INT(n, sd_safetensors_count(del));
    double worst = 0;
    for (size_t i = 0; i < sd_safetensors_count(del); i++) {
        const sd_st_tensor *t = sd_safetensors_at(del, i);
        T_CHECKF(i < n && !strcmp(names[i], t->name), "module %zu: %s", i, t->name);
        const int kh = t->ndim == 4 ? (int)t->shape[2] : 1, kw = t->ndim == 4 ? (int)t->shape[3] : 1;
        float *dw = malloc((size_t)t->numel * sizeof *dw);
        T_CHECK(dw != NULL);
        int rc = sd_lycoris_delta(net, t->name, t->shape[0], t->shape[1], kh, kw, dw);
        T_CHECKF(rc == 0, "%s: %s", t->name, sd_errmsg());
        const float *ref = t->data;
        double mx = 0, ma = 0;
        for (int64_t k = 0; k < t->numel; k++) {
            mx = fmax(mx, fabs((double)dw[k] - ref[k]));
            ma = fmax(ma, fabs((double)ref[k]));
        }
        const double rel = mx / ma;
        T_CHECKF(rel <= 1e-6 && ma > 0, "%s: relative error %.3g", t->name, rel);
        if (rel > worst) worst = rel;
        free(dw);
    }
    printf("# %zu modules, worst relative error %.3g\n", sd_safetensors_count(del), worst);
    sd_lycoris_names_free(names, n);
    sd_safetensors_close(net);
    sd_safetensors_close(del);
}

/* an in-memory file of the given (name, shape) tensors, filled with 0.1 */
typedef struct spec {
    const char *name;
    int nd;
    int64_t shape[4];
} spec;

static sd_safetensors *mem_file(const spec *s, int n, void **buf)
{
    static float fill[4096];
    for (int i = 0; i < 4096; i++) fill[i] = 0.1f;
    sd_safetensors_writer *w = NULL;
    sd_safetensors *st = NULL;
    size_t len = 0;
    if (sd_safetensors_writer_new(&w)) return NULL;
    for (int i = 0; i < n; i++) sd_safetensors_writer_add_f32(w, s[i].name, SD_ST_F32, s[i].nd, s[i].shape, fill);
    if (!sd_safetensors_writer_write_mem(w, buf, &len)) sd_safetensors_open_mem(*buf, len, "bad.safetensors", &st);
    sd_safetensors_writer_free(w);
    return st;
}

static int delta_rc(const spec *s, int n, const char *mod, int64_t out, int64_t in, int k, const char *want)
{
    void *buf = NULL;
    sd_safetensors *st = mem_file(s, n, &buf);
    if (!st) return -100;
    float dw[4096];
    char **names = NULL;
    size_t nn = 0;
    int rc = sd_lycoris_modules(st, &names, &nn);
    if (!rc) {
        sd_lycoris_names_free(names, nn);
        rc = sd_lycoris_delta(st, mod, out, in, k, k, dw);
    }
    if (rc && want && !strstr(sd_errmsg(), want)) {
        printf("# message '%s' lacks '%s'\n", sd_errmsg(), want);
        rc = -101;
    }
    if (rc && !strstr(sd_errmsg(), "bad.safetensors")) rc = -102;
    sd_safetensors_close(st);
    free(buf);
    return rc;
}

static void test_refusals(void)
{
    const char *m = "lora_unet_x";
    const spec ok[] = { { "lora_unet_x.hada_w1_a", 2, { 4, 2 } }, { "lora_unet_x.hada_w1_b", 2, { 2, 6 } },
                        { "lora_unet_x.hada_w2_a", 2, { 4, 2 } }, { "lora_unet_x.hada_w2_b", 2, { 2, 6 } },
                        { "lora_unet_x.alpha", 0, { 0 } } };
    T_EQ_INT(delta_rc(ok, 5, m, 4, 6, 1, NULL), 0);
    T_EQ_INT(delta_rc(ok, 5, m, 4, 5, 1, "lora_unet_x"), SD_EFORMAT);                 /* shape mismatch */
    T_EQ_INT(delta_rc(ok, 3, m, 4, 6, 1, "hada_w2_b"), SD_EFORMAT);                   /* missing factor */
    const spec unk[] = { { "lora_unet_x.hada_w1_a", 2, { 4, 2 } }, { "lora_unet_x.hada_w3", 2, { 2, 6 } } };
    T_EQ_INT(delta_rc(unk, 2, m, 4, 6, 1, "lora_unet_x.hada_w3"), SD_EFORMAT);        /* unknown suffix */
    const spec dora[] = { { "lora_unet_x.lora_down.weight", 2, { 2, 6 } }, { "lora_unet_x.lora_up.weight", 2, { 4, 2 } },
                          { "lora_unet_x.dora_scale", 2, { 1, 6 } } };
    T_EQ_INT(delta_rc(dora, 3, m, 4, 6, 1, "DoRA"), SD_EUNSUPPORTED);
    const spec mixed[] = { { "lora_unet_x.lora_down.weight", 2, { 2, 6 } }, { "lora_unet_x.lora_up.weight", 2, { 4, 2 } },
                           { "lora_unet_x.lokr_w1", 2, { 2, 2 } } };
    T_EQ_INT(delta_rc(mixed, 3, m, 4, 6, 1, "more than one"), SD_EFORMAT);
    const spec kr[] = { { "lora_unet_x.lokr_w1", 2, { 2, 3 } }, { "lora_unet_x.lokr_w2", 2, { 2, 2 } } };
    T_EQ_INT(delta_rc(kr, 2, m, 4, 6, 1, NULL), 0);
    T_EQ_INT(delta_rc(kr, 2, m, 4, 8, 1, "kron"), SD_EFORMAT);
    const spec kr1[] = { { "lora_unet_x.lokr_w1_a", 2, { 2, 1 } }, { "lora_unet_x.lokr_w2", 2, { 2, 2 } } };
    T_EQ_INT(delta_rc(kr1, 2, m, 4, 6, 1, "lokr_w1"), SD_EFORMAT);                    /* w1_a without w1_b */
    const spec notlora[] = { { "model.diffusion_model.x.weight", 2, { 2, 2 } } };
    T_EQ_INT(delta_rc(notlora, 1, m, 2, 2, 1, "model.diffusion_model.x.weight"), SD_EFORMAT);
    const spec tk[] = { { "lora_unet_x.hada_w1_a", 2, { 2, 4 } }, { "lora_unet_x.hada_w1_b", 2, { 2, 6 } },
                        { "lora_unet_x.hada_w2_a", 2, { 2, 4 } }, { "lora_unet_x.hada_w2_b", 2, { 2, 6 } },
                        { "lora_unet_x.hada_t1", 4, { 2, 2, 3, 3 } } };
    T_EQ_INT(delta_rc(tk, 5, m, 4, 6, 3, "hada_t1/hada_t2"), SD_EFORMAT);             /* one Tucker core */
}

static void test_values(void)
{
    /* LoHa: (w1a·w1b)⊙(w2a·w2b) = (2·0.01)² = 4e-4, alpha 0.1 / rank 2 → 2e-5; no alpha → 4e-4;
       LoKr w1, w2 full: 0.01 whatever the alpha */
    const spec lh[] = { { "lora_te_y.hada_w1_a", 2, { 4, 2 } }, { "lora_te_y.hada_w1_b", 2, { 2, 6 } },
                        { "lora_te_y.hada_w2_a", 2, { 4, 2 } }, { "lora_te_y.hada_w2_b", 2, { 2, 6 } },
                        { "lora_te_y.alpha", 0, { 0 } } };
    const spec kr[] = { { "lora_te_y.lokr_w1", 2, { 2, 3 } }, { "lora_te_y.lokr_w2", 2, { 2, 2 } },
                        { "lora_te_y.alpha", 0, { 0 } } };
    const struct { const spec *s; int n; double want; } c[] = { { lh, 5, 2e-5 }, { lh, 4, 4e-4 }, { kr, 3, 0.01 } };
    for (int i = 0; i < 3; i++) {
        void *buf = NULL;
        sd_safetensors *st = mem_file(c[i].s, c[i].n, &buf);
        T_CHECK(st != NULL);
        float dw[24];
        T_EQ_INT(sd_lycoris_delta(st, "lora_te_y", 4, 6, 1, 1, dw), 0);
        T_NEAR(dw[0], c[i].want, c[i].want * 1e-5);
        T_NEAR(dw[23], c[i].want, c[i].want * 1e-5);
        sd_safetensors_close(st);
        free(buf);
    }
}

int main(void)
{
    T_RUN(test_golden_deltas);
    T_RUN(test_refusals);
    T_RUN(test_values);
    T_DONE();
}
