/* SD text encoders against PyTorch transcriptions of HF CLIPTextModel / OpenCLIP +
 * FrozenOpenCLIPEmbedder / kohya's conversion and encode_tokens (tests/golden/gen/
 * make_clip_golden.py, torch 1.13). Weights come through sd_clip_load() from the checkpoint
 * layouts; outputs, clip_skip 2, long-prompt chunks and every parameter gradient are compared with
 * max|Δ| <= 1e-4 · max|ref|. */
#include "base/error.h"
#include "models/clip.h"
#include "test.h"

static sd_ctx g_ctx;
static sd_arena g_act;

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/golden/clip/%s", name);
}

static int golden(const sd_safetensors *st, const char *name, sd_tensor *t, sd_dtype dt)
{
    const sd_st_tensor *g = sd_safetensors_find(st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden file has no '%s'", name);
    int rc = sd_tensor_alloc(t, dt, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(st, g, dt == SD_I32 ? SD_ST_I32 : SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

static double g_worst;   /* largest max|Δ|/max|ref| seen */

static int close_to(const char *what, const float *a, const sd_tensor *ref)
{
    const float *r = ref->data;
    double m = 0, e = 0;
    for (int64_t i = 0; i < sd_tensor_numel(ref); i++) {
        m = fmax(m, fabs(r[i]));
        e = fmax(e, fabs((double)a[i] - r[i]));
    }
    if (m > 0 && e / m > g_worst) g_worst = e / m;
    if (!(e <= 1e-4 * m)) {
        printf("#   %s: max|diff| %.3g, max|ref| %.3g\n", what, e, m);
        return 0;
    }
    return 1;
}

static sd_clip_config tiny(int layers, int heads)
{
    sd_clip_config c = { 32, layers, heads, 77, 1000, 0 };
    return c;
}

typedef struct model {
    sd_params r;
    sd_clip m;
} model;

static int model_open(model *M, sd_family fam, sd_clip_config cfg, const char *prefix, const sd_safetensors *st,
                      sd_layout layout)
{
    sd_params_init(&M->r);
    int rc = sd_clip_init(&M->m, &M->r, prefix, &cfg, fam);
    if (!rc) rc = sd_params_alloc(&M->r, SD_DEV_CPU);
    if (!rc && st) rc = sd_clip_load(&M->m, &M->r, st, layout);
    return rc;
}

static void model_close(model *M)
{
    sd_clip_free(&M->m);
    sd_params_free(&M->r);
}

static void check_output(model *M, const sd_safetensors *st, const char *name, int clip_skip)
{
    sd_tensor ids, ref, y;
    int rc = golden(st, "golden.ids", &ids, SD_I32);
    if (!rc) rc = golden(st, name, &ref, SD_F32);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, ref.ndim, ref.shape);
    if (!rc) rc = sd_clip_forward(&g_ctx, &M->m, NULL, &y, &ids, clip_skip);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    T_CHECK(close_to(name, y.data, &ref));
    /* the training forward computes the same numbers */
    sd_tensor y2;
    sd_tensor_alloc(&y2, SD_F32, ref.ndim, ref.shape);
    sd_arena_reset(&g_act, 0);
    rc = sd_clip_forward(&g_ctx, &M->m, &g_act, &y2, &ids, clip_skip);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    T_CHECK(!memcmp(y.data, y2.data, sd_tensor_nbytes(&y)));
    sd_nn_plan p = sd_clip_plan(&M->m, ids.shape[0], ids.shape[1], clip_skip);
    /* exact up to the 64-byte rounding of the last block */
    T_CHECKF(g_act.used <= p.saved && p.saved - g_act.used < 64, "arena %zu, plan %zu", g_act.used, p.saved);
    sd_tensor_free(&ids); sd_tensor_free(&ref); sd_tensor_free(&y); sd_tensor_free(&y2);
}

/* L = sum(r * y): every parameter gradient vs grad.<key without strip>. */
static void check_grads(model *M, const sd_safetensors *st, const char *strip)
{
    sd_tensor ids, r, y, dtok;
    int rc = golden(st, "golden.ids", &ids, SD_I32);
    if (!rc) rc = golden(st, "golden.r", &r, SD_F32);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, r.ndim, r.shape);
    if (!rc) rc = sd_tensor_alloc(&dtok, SD_F32, r.ndim, r.shape);
    if (!rc) rc = sd_params_zero_grad(&g_ctx, &M->r);
    sd_arena_reset(&g_act, 0);
    if (!rc) rc = sd_clip_forward(&g_ctx, &M->m, &g_act, &y, &ids, 0);
    if (!rc) rc = sd_clip_backward(&g_ctx, &M->m, &dtok, &r);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    int n = 0;
    for (size_t i = 0; i < sd_params_count(&M->r); i++) {
        sd_param *p = sd_params_at(&M->r, i);
        char name[512];
        snprintf(name, sizeof name, "grad.%s", p->key + strlen(strip));
        sd_tensor g;
        if (golden(st, name, &g, SD_F32)) { T_CHECKF(0, "%s", sd_errmsg()); continue; }
        T_CHECKF(sd_tensor_numel(&g) == sd_tensor_numel(&p->grad), "%s: size", p->key);
        size_t kl = strlen(name);
        if (kl > 11 && !strcmp(name + kl - 11, "k_proj.bias")) {
            /* exactly 0 in exact arithmetic (softmax ignores a per-row constant): both sides are
             * rounding noise, compared with the scale of the q_proj bias gradient */
            sd_tensor q;
            memcpy(name + kl - 11, "q", 1);
            if (!golden(st, name, &q, SD_F32)) {
                double m = 0, e = 0;
                for (int64_t j = 0; j < sd_tensor_numel(&q); j++) m = fmax(m, fabs(((float *)q.data)[j]));
                for (int64_t j = 0; j < sd_tensor_numel(&g); j++) e = fmax(e, fabs(((float *)p->grad.data)[j]));
                T_CHECKF(e <= 1e-4 * m, "%s: %g vs q_proj scale %g", p->key, e, m);
                sd_tensor_free(&q);
            }
        } else if (sd_tensor_numel(&g) == sd_tensor_numel(&p->grad)) {
            T_CHECK(close_to(p->key, p->grad.data, &g));
        }
        sd_tensor_free(&g);
        n++;
    }
    T_EQ_INT(n, sd_params_count(&M->r));
    /* d_tokens scattered by id is the token table's gradient */
    sd_param *tok = M->m.tok.w;
    float *tab = calloc((size_t)sd_tensor_numel(&tok->grad), sizeof(float));
    const int32_t *id = ids.data;
    const float *d = dtok.data;
    for (int64_t i = 0; i < sd_tensor_numel(&ids); i++)
        for (int64_t c = 0; c < 32; c++) tab[id[i] * 32 + c] += d[i * 32 + c];
    double e = 0;
    for (int64_t i = 0; i < sd_tensor_numel(&tok->grad); i++) e = fmax(e, fabs(tab[i] - ((float *)tok->grad.data)[i]));
    T_CHECKF(e < 1e-5, "d_tokens vs token table gradient: %g", e);
    free(tab);
    sd_tensor_free(&ids); sd_tensor_free(&r); sd_tensor_free(&y); sd_tensor_free(&dtok);
}

static void check_long(model *M, const sd_safetensors *st, int with_grad)
{
    sd_tensor ids, ref, y, hidden, r;
    int rc = golden(st, "golden.long_ids", &ids, SD_I32);
    if (!rc) rc = golden(st, "golden.long_y", &ref, SD_F32);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, ref.ndim, ref.shape);
    if (!rc) rc = sd_tensor_alloc(&hidden, SD_F32, 3, (int64_t[]){ ids.shape[0] * ids.shape[1], 77, 32 });
    sd_arena_reset(&g_act, 0);
    if (!rc) rc = sd_params_zero_grad(&g_ctx, &M->r);
    if (!rc) rc = sd_clip_forward_chunks(&g_ctx, &M->m, with_grad ? &g_act : NULL, &y, &hidden, &ids, 0);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    T_CHECK(close_to("long_y", y.data, &ref));
    if (with_grad) {
        sd_tensor g;
        rc = golden(st, "golden.long_r", &r, SD_F32);
        if (!rc) rc = golden(st, "golden.long_grad_tok", &g, SD_F32);
        if (!rc) rc = sd_clip_backward_chunks(&g_ctx, &M->m, NULL, &r);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        if (!rc) T_CHECK(close_to("long token grad", M->m.tok.w->grad.data, &g));
        if (!rc) { sd_tensor_free(&g); sd_tensor_free(&r); }
    }
    sd_tensor_free(&ids); sd_tensor_free(&ref); sd_tensor_free(&y); sd_tensor_free(&hidden);
}

static void test_sd1(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_clip_sd1.safetensors"), &st);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    model M;
    rc = model_open(&M, SD_FAMILY_SD1, tiny(3, 2), "cond_stage_model.transformer", st, SD_LAYOUT_NONE);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        check_output(&M, st, "golden.y", 0);
        check_output(&M, st, "golden.y", 1);
        check_output(&M, st, "golden.y_skip2", 2);
        check_grads(&M, st, "cond_stage_model.transformer.");
        check_long(&M, st, 1);
    }
    model_close(&M);
    sd_safetensors_close(st);
}

static void test_sd2(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_clip_sd2.safetensors"), &st);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    model M;
    rc = model_open(&M, SD_FAMILY_SD2, tiny(4, 4), "", st, SD_LAYOUT_NONE);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(M.m.n_run, 3);
        check_output(&M, st, "golden.y", 0);
        check_output(&M, st, "golden.y_skip2", 2);
        check_grads(&M, st, "");
        check_long(&M, st, 0);
    }
    model_close(&M);
    sd_safetensors_close(st);
}

/* frozen half storage of the linear weights still loads (incl. the split q/k/v) and runs close */
static void test_sd2_half(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_clip_sd2.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model M;
    sd_params_init(&M.r);
    sd_clip_config cfg = tiny(4, 4);
    rc = sd_clip_init(&M.m, &M.r, "", &cfg, SD_FAMILY_SD2);
    if (!rc) sd_params_set_trainable(&M.r, "", 0);
    if (!rc) rc = sd_params_set_frozen_dtype(&M.r, SD_BF16);
    if (!rc) rc = sd_params_alloc(&M.r, SD_DEV_CPU);
    if (!rc) rc = sd_clip_load(&M.m, &M.r, st, SD_LAYOUT_LDM);
    sd_tensor ids, ref, y;
    if (!rc) rc = golden(st, "golden.ids", &ids, SD_I32);
    if (!rc) rc = golden(st, "golden.y", &ref, SD_F32);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, ref.ndim, ref.shape);
    if (!rc) rc = sd_clip_forward(&g_ctx, &M.m, NULL, &y, &ids, 0);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(M.m.layers[1].attn.k.w->value.dtype, SD_BF16);
        double m = 0, e = 0;
        for (int64_t i = 0; i < sd_tensor_numel(&ref); i++) {
            m = fmax(m, fabs(((float *)ref.data)[i]));
            e = fmax(e, fabs(((float *)ref.data)[i] - ((float *)y.data)[i]));
        }
        T_CHECKF(e < 0.05 * m, "bf16 weights: max|diff| %g of %g", e, m);
        sd_tensor_free(&ids); sd_tensor_free(&ref); sd_tensor_free(&y);
    }
    model_close(&M);
    sd_safetensors_close(st);
}

/* Diffusers/HF layout (text_model.*): rewrite the SD1 golden weights under HF names, load, run */
static void test_hf_layout(void)
{
    sd_safetensors *st = NULL, *hf = NULL;
    int rc = sd_safetensors_open(data_path("golden_clip_sd1.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model A, B;
    rc = model_open(&A, SD_FAMILY_SD1, tiny(3, 2), "", st, SD_LAYOUT_LDM);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    sd_safetensors_writer *w = NULL;
    void *buf = NULL;
    size_t n = 0;
    if (!rc) rc = sd_safetensors_writer_new(&w);
    for (size_t i = 0; !rc && i < sd_params_count(&A.r); i++) {
        sd_param *p = sd_params_at(&A.r, i);
        rc = sd_safetensors_writer_add(w, p->key, SD_ST_F32, p->value.ndim, p->value.shape, p->value.data);
    }
    static const int64_t pid_shape[2] = { 1, 77 };
    static int32_t pid[77];
    if (!rc) rc = sd_safetensors_writer_add(w, "text_model.embeddings.position_ids", SD_ST_I32, 2, pid_shape, pid);
    if (!rc) rc = sd_safetensors_writer_write_mem(w, &buf, &n);
    if (!rc) rc = sd_safetensors_open_mem(buf, n, "text_encoder/model.safetensors", &hf);
    if (!rc) rc = model_open(&B, SD_FAMILY_SD1, tiny(3, 2), "te", hf, SD_LAYOUT_NONE);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        check_output(&B, st, "golden.y", 0);
        model_close(&B);
        /* a config with fewer layers than the file: the extra layer is unexpected */
        rc = model_open(&B, SD_FAMILY_SD1, tiny(2, 2), "", hf, SD_LAYOUT_DIFFUSERS);
        T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "layers.2"));
        model_close(&B);
        /* more layers than the file: missing keys */
        rc = model_open(&B, SD_FAMILY_SD1, tiny(4, 2), "", hf, SD_LAYOUT_DIFFUSERS);
        T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "missing"));
        model_close(&B);
    }
    sd_safetensors_close(hf);
    free(buf);
    sd_safetensors_writer_free(w);
    model_close(&A);
    sd_safetensors_close(st);
}

static void test_errors(void)
{
    sd_safetensors *s1 = NULL, *s2 = NULL;
    int rc = sd_safetensors_open(data_path("golden_clip_sd1.safetensors"), &s1);
    if (!rc) rc = sd_safetensors_open(data_path("golden_clip_sd2.safetensors"), &s2);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model M;
    rc = model_open(&M, SD_FAMILY_SD1, tiny(3, 2), "", s2, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "OpenCLIP"));
    model_close(&M);
    rc = model_open(&M, SD_FAMILY_SD2, tiny(3, 4), "", s2, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "resblocks.3"));
    model_close(&M);
    rc = model_open(&M, SD_FAMILY_SD2, tiny(5, 4), "", s2, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "fewer"));
    model_close(&M);
    rc = model_open(&M, SD_FAMILY_SD2, tiny(4, 4), "", s1, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_EFORMAT);
    model_close(&M);
    /* wrong width: shape mismatch */
    sd_clip_config c = tiny(3, 2);
    c.width = 64;
    rc = model_open(&M, SD_FAMILY_SD1, c, "cond_stage_model.transformer", s1, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "shape"));
    model_close(&M);
    /* bad inputs */
    rc = model_open(&M, SD_FAMILY_SD1, tiny(3, 2), "", NULL, SD_LAYOUT_NONE);
    T_CHECK(rc == SD_OK);
    sd_tensor ids, y;
    sd_tensor_alloc(&ids, SD_I32, 2, (int64_t[]){ 1, 78 });
    sd_tensor_alloc(&y, SD_F32, 3, (int64_t[]){ 1, 78, 32 });
    T_CHECK(sd_clip_forward(&g_ctx, &M.m, NULL, &y, &ids, 0) == SD_EINVAL);
    sd_tensor_free(&ids);
    sd_tensor_free(&y);
    sd_tensor_alloc(&ids, SD_I32, 2, (int64_t[]){ 1, 5 });
    sd_tensor_alloc(&y, SD_F32, 3, (int64_t[]){ 1, 5, 32 });
    ((int32_t *)ids.data)[2] = 1000;
    T_CHECK(sd_clip_forward(&g_ctx, &M.m, NULL, &y, &ids, 0) == SD_ERANGE);
    ((int32_t *)ids.data)[2] = 7;
    T_CHECK(sd_clip_forward(&g_ctx, &M.m, NULL, &y, &ids, 4) == SD_EINVAL);
    T_CHECK(sd_clip_forward(&g_ctx, &M.m, NULL, &y, &ids, 3) == SD_OK);
    T_CHECK(sd_clip_backward(&g_ctx, &M.m, NULL, &y) == SD_ESTATE);
    sd_tensor_free(&ids);
    sd_tensor_free(&y);
    model_close(&M);
    sd_safetensors_close(s1);
    sd_safetensors_close(s2);
}

static int count_linear(void *user, const char *name, sd_linear *l)
{
    int *n = user;
    char want[512];
    snprintf(want, sizeof want, "te.%s.weight", name);
    if (strcmp(l->w->key, want)) return printf("#   %s vs %s\n", l->w->key, want), -1;
    (*n)++;
    return 0;
}

typedef struct lora_set {
    sd_params reg;
    sd_lora mods[32];
    int n;
} lora_set;

static int add_lora(void *user, const char *name, sd_linear *l)
{
    lora_set *S = user;
    char key[256];
    snprintf(key, sizeof key, "lora_te_%s", name);
    for (char *c = key; *c; c++)
        if (*c == '.') *c = '_';
    sd_lora *lo = &S->mods[S->n];
    int rc = sd_lora_init(lo, &S->reg, key, l->in, l->out, 4, 1.0f, 0, 1, 1, sd_conv2d_geom_make(1, 0), 0);
    if (!rc) lo->id = (uint32_t)S->n;
    if (!rc) rc = sd_linear_set_lora(l, lo);
    S->n++;
    return rc;
}

/* LoRA on every targeted linear: names match the registry keys, a fresh LoRA (up = 0) leaves the
 * output unchanged, a trained one changes it, the backward reaches the LoRA weights only (base
 * frozen), and the plan still matches the arena use. */
static void test_lora_targets(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_clip_sd2.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model M;
    sd_params_init(&M.r);
    sd_clip_config cfg = tiny(4, 4);
    rc = sd_clip_init(&M.m, &M.r, "te", &cfg, SD_FAMILY_SD2);
    int n = 0;
    if (!rc) T_EQ_INT(sd_clip_each_linear(&M.m, count_linear, &n), 0);
    T_EQ_INT(n, 6 * 3);
    if (!rc) sd_params_set_trainable(&M.r, "", 0);
    if (!rc) rc = sd_params_alloc(&M.r, SD_DEV_CPU);
    if (!rc) rc = sd_clip_load(&M.m, &M.r, st, SD_LAYOUT_NONE);
    sd_tensor ids, y0, y1, r;
    if (!rc) rc = golden(st, "golden.ids", &ids, SD_I32);
    if (!rc) rc = golden(st, "golden.r", &r, SD_F32);
    if (!rc) rc = sd_tensor_alloc(&y0, SD_F32, r.ndim, r.shape);
    if (!rc) rc = sd_tensor_alloc(&y1, SD_F32, r.ndim, r.shape);
    if (!rc) rc = sd_clip_forward(&g_ctx, &M.m, NULL, &y0, &ids, 0);
    static lora_set S;
    memset(&S, 0, sizeof S);
    sd_params_init(&S.reg);
    if (!rc) rc = sd_clip_each_linear(&M.m, add_lora, &S);
    if (!rc) rc = sd_params_alloc(&S.reg, SD_DEV_CPU);
    for (int i = 0; i < S.n && !rc; i++) rc = sd_lora_init_weights(&g_ctx, &S.mods[i], 5);
    if (!rc) rc = sd_clip_forward(&g_ctx, &M.m, NULL, &y1, &ids, 0);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) goto done;
    T_CHECK(!memcmp(y0.data, y1.data, sd_tensor_nbytes(&y0)));
    T_CHECK(sd_params_find(&S.reg, "lora_te_text_model_encoder_layers_2_mlp_fc2.lora_up.weight") != NULL);
    for (int i = 0; i < S.n; i++) sd_op_fill(&g_ctx, &S.mods[i].up->value, 0.01f);
    sd_params_zero_grad(&g_ctx, &S.reg);
    sd_arena_reset(&g_act, 0);
    rc = sd_clip_forward(&g_ctx, &M.m, &g_act, &y1, &ids, 0);
    if (!rc) rc = sd_clip_backward(&g_ctx, &M.m, NULL, &r);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    sd_nn_plan p = sd_clip_plan(&M.m, 2, 77, 0);
    T_CHECKF(g_act.used <= p.saved && p.saved - g_act.used < 64, "arena %zu, plan %zu", g_act.used, p.saved);
    T_CHECK(memcmp(y0.data, y1.data, sd_tensor_nbytes(&y0)));
    T_CHECK(M.m.tok.w->grad.data == NULL);
    int nonzero = 0;
    for (int i = 0; i < S.n; i++) {
        const float *g = S.mods[i].down->grad.data;
        for (int64_t j = 0; j < sd_tensor_numel(&S.mods[i].down->grad); j++)
            if (g[j] != 0.0f) { nonzero++; break; }
    }
    T_EQ_INT(nonzero, S.n);
    sd_tensor_free(&ids); sd_tensor_free(&r); sd_tensor_free(&y0); sd_tensor_free(&y1);
done:
    for (int i = 0; i < S.n; i++) sd_lora_free(&S.mods[i]);
    sd_params_free(&S.reg);
    model_close(&M);
    sd_safetensors_close(st);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0) || sd_nn_arena_init(&g_act, SD_DEV_CPU, (size_t)64 << 20)) {
        printf("not ok init: %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_sd1);
    T_RUN(test_sd2);
    T_RUN(test_sd2_half);
    T_RUN(test_hf_layout);
    T_RUN(test_errors);
    T_RUN(test_lora_targets);
    printf("# worst max|diff|/max|ref| %.3g\n", g_worst);
    sd_arena_free(&g_act);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
