/* SDXL's text encoders (CLIP ViT-L TE1, OpenCLIP bigG TE2 with text_projection) and size
 * embedding against PyTorch transcriptions of HF CLIPTextModel(WithProjection), kohya's OpenCLIP
 * conversion, SdxlTextEncodingStrategy (hidden_states[-2], pool_workaround at the first EOS,
 * chunk reassembly, pool of the first chunk) and get_size_embeddings (tests/golden/gen/
 * make_sdxl_clip_golden.py). Weights come through sd_clip_load[_prefix]() from the SDXL single
 * file (conditioner.embedders.{0,1}.*) and the Diffusers files; outputs and gradients are
 * compared with max|Δ| <= 1e-4 · max|ref|. */
#include "base/error.h"
#include "models/clip.h"
#include "models/sdxl.h"
#include "test.h"

static sd_ctx g_ctx;
static sd_arena g_act;
static double g_worst;

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/golden/sdxl/%s", name);
}

static int golden(const sd_safetensors *st, const char *name, sd_tensor *t, sd_dtype dt)
{
    const sd_st_tensor *g = sd_safetensors_find(st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden file has no '%s'", name);
    int rc = sd_tensor_alloc(t, dt, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(st, g, dt == SD_I32 ? SD_ST_I32 : SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

static int close_to(const char *what, const float *a, const sd_tensor *ref, double tol)
{
    const float *r = ref->data;
    double m = 0, e = 0;
    for (int64_t i = 0; i < sd_tensor_numel(ref); i++) {
        m = fmax(m, fabs(r[i]));
        e = fmax(e, fabs((double)a[i] - r[i]));
    }
    if (m > 0 && e / m > g_worst) g_worst = e / m;
    if (!(e <= tol * m)) {
        printf("#   %s: max|diff| %.3g, max|ref| %.3g\n", what, e, m);
        return 0;
    }
    return 1;
}

/* r[k] = sin(0.7 k + 0.3) (the generator's loss weights) */
static void rfill(sd_tensor *t)
{
    float *p = t->data;
    for (int64_t k = 0; k < sd_tensor_numel(t); k++) p[k] = (float)sin(0.7 * (double)k + 0.3);
}

static sd_clip_config te1_cfg(void) { return (sd_clip_config){ 8, 3, 2, 77, 64, 0 }; }
static sd_clip_config te2_cfg(void) { return (sd_clip_config){ 16, 3, 2, 77, 64, 12 }; }

typedef struct model {
    sd_params r;
    sd_clip m;
} model;

static int model_open(model *M, sd_clip_config cfg, const char *prefix, const sd_safetensors *st, sd_layout layout,
                      const char *file_prefix)
{
    sd_params_init(&M->r);
    int rc = sd_clip_init(&M->m, &M->r, prefix, &cfg, SD_FAMILY_SDXL);
    if (!rc) rc = sd_params_alloc(&M->r, SD_DEV_CPU);
    if (!rc && st)
        rc = file_prefix ? sd_clip_load_prefix(&M->m, &M->r, st, layout, file_prefix)
                         : sd_clip_load(&M->m, &M->r, st, layout);
    return rc;
}

static void model_close(model *M)
{
    sd_clip_free(&M->m);
    sd_params_free(&M->r);
}

static sd_param *param(model *M, const char *hf)
{
    char key[512];
    snprintf(key, sizeof key, "%s%s%s", M->m.prefix, *M->m.prefix ? "." : "", hf);
    return sd_params_find(&M->r, key);
}

/* Forward (inference and training) of one encoder vs the goldens; pool_name NULL for TE1. */
static void check_forward(model *M, const sd_safetensors *st, const char *ids_name, const char *h_name,
                          const char *pool_name)
{
    sd_tensor ids, href, pref = { 0 }, h, pool = { 0 }, h2, pool2 = { 0 };
    int rc = golden(st, ids_name, &ids, SD_I32);
    if (!rc) rc = golden(st, h_name, &href, SD_F32);
    if (!rc && pool_name) rc = golden(st, pool_name, &pref, SD_F32);
    if (!rc) rc = sd_tensor_alloc(&h, SD_F32, 3, href.shape);
    if (!rc) rc = sd_tensor_alloc(&h2, SD_F32, 3, href.shape);
    if (!rc && pool_name) rc = sd_tensor_alloc(&pool, SD_F32, 2, pref.shape);
    if (!rc && pool_name) rc = sd_tensor_alloc(&pool2, SD_F32, 2, pref.shape);
    if (!rc) rc = sd_clip_forward_sdxl(&g_ctx, &M->m, NULL, &h, pool_name ? &pool : NULL, &ids);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    T_CHECK(close_to(h_name, h.data, &href, 1e-4));
    if (pool_name) T_CHECK(close_to(pool_name, pool.data, &pref, 1e-4));
    sd_arena_reset(&g_act, 0);
    rc = sd_clip_forward_sdxl(&g_ctx, &M->m, &g_act, &h2, pool_name ? &pool2 : NULL, &ids);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    T_CHECK(!memcmp(h.data, h2.data, sd_tensor_nbytes(&h)));
    if (pool_name) T_CHECK(!memcmp(pool.data, pool2.data, sd_tensor_nbytes(&pool)));
    sd_nn_plan p = sd_clip_plan_sdxl(&M->m, ids.shape[0], 1, ids.shape[1], pool_name != NULL);
    T_CHECKF(g_act.used <= p.saved && p.saved - g_act.used < 64, "arena %zu, plan %zu", g_act.used, p.saved);
    T_CHECK(p.scratch > 0);
    sd_tensor_free(&ids); sd_tensor_free(&href); sd_tensor_free(&h); sd_tensor_free(&h2);
    if (pool_name) { sd_tensor_free(&pref); sd_tensor_free(&pool); sd_tensor_free(&pool2); }
}

/* Backward for L = sum(r·h) (+ sum(r·pool)); grads vs `gpre`<hf name> for the listed names. */
static void check_backward(model *M, const sd_safetensors *st, const char *ids_name, int with_h, int with_pool,
                           const char *gpre, const char *const *names, int nn)
{
    sd_tensor ids, h, dh, pool = { 0 }, dp = { 0 }, dtok;
    int rc = golden(st, ids_name, &ids, SD_I32);
    const int64_t W = M->m.cfg.width, P = M->m.cfg.projection_dim;
    const int64_t hs[3] = { ids.shape[0], ids.shape[1], W }, ps[2] = { ids.shape[0], P };
    if (!rc) rc = sd_tensor_alloc(&h, SD_F32, 3, hs);
    if (!rc) rc = sd_tensor_alloc(&dh, SD_F32, 3, hs);
    if (!rc) rc = sd_tensor_alloc(&dtok, SD_F32, 3, hs);
    if (!rc && P) rc = sd_tensor_alloc(&pool, SD_F32, 2, ps);
    if (!rc && P) rc = sd_tensor_alloc(&dp, SD_F32, 2, ps);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    rfill(&dh);
    if (P) rfill(&dp);
    sd_arena_reset(&g_act, 0);
    rc = sd_params_zero_grad(&g_ctx, &M->r);
    if (!rc) rc = sd_clip_forward_sdxl(&g_ctx, &M->m, &g_act, &h, P ? &pool : NULL, &ids);
    if (!rc) rc = sd_clip_backward_sdxl(&g_ctx, &M->m, &dtok, with_h ? &dh : NULL, with_pool ? &dp : NULL);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    for (int i = 0; !rc && i < nn; i++) {
        char name[512];
        snprintf(name, sizeof name, "%s%s", gpre, names[i]);
        sd_tensor g;
        sd_param *p = param(M, names[i]);
        if (!p || golden(st, name, &g, SD_F32)) { T_CHECKF(0, "%s", name); continue; }
        T_CHECK(close_to(name, p->grad.data, &g, 1e-4));
        sd_tensor_free(&g);
    }
    /* d_tokens scattered by id is the token table's gradient */
    if (!rc) {
        sd_param *tok = M->m.tok.w;
        float *tab = calloc((size_t)sd_tensor_numel(&tok->grad), sizeof(float));
        const int32_t *id = ids.data;
        for (int64_t i = 0; i < sd_tensor_numel(&ids); i++)
            for (int64_t c = 0; c < W; c++) tab[id[i] * W + c] += ((float *)dtok.data)[i * W + c];
        double e = 0;
        for (int64_t i = 0; i < sd_tensor_numel(&tok->grad); i++)
            e = fmax(e, fabs(tab[i] - ((float *)tok->grad.data)[i]));
        T_CHECKF(e < 1e-5, "d_tokens vs token table gradient: %g", e);
        free(tab);
    }
    sd_tensor_free(&ids); sd_tensor_free(&h); sd_tensor_free(&dh); sd_tensor_free(&dtok);
    if (P) { sd_tensor_free(&pool); sd_tensor_free(&dp); }
}

static int all_zero(const sd_param *p)
{
    for (int64_t i = 0; i < sd_tensor_numel(&p->grad); i++)
        if (((float *)p->grad.data)[i] != 0.0f) return 0;
    return 1;
}

static void test_single_file(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_sdxl_clip.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model A, B;
    rc = model_open(&A, te1_cfg(), "te1", st, SD_LAYOUT_NONE, NULL);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(A.m.n_run, 3);
        T_CHECK(A.m.proj.w == NULL);
        T_CHECK(param(&A, "text_model.final_layer_norm.weight") != NULL);
        check_forward(&A, st, "golden.ids1", "golden.h1", NULL);
        static const char *const n1[] = { "text_model.encoder.layers.0.self_attn.q_proj.weight",
                                          "text_model.encoder.layers.1.mlp.fc2.weight",
                                          "text_model.embeddings.token_embedding.weight",
                                          "text_model.embeddings.position_embedding.weight" };
        check_backward(&A, st, "golden.ids1", 1, 0, "grad1.", n1, 4);
        /* the last layer and the final LN never run */
        T_CHECK(all_zero(param(&A, "text_model.encoder.layers.2.mlp.fc1.weight")));
        T_CHECK(all_zero(param(&A, "text_model.final_layer_norm.weight")));
        /* TE1 has no pooled output */
        sd_tensor ids, h, pool;
        golden(st, "golden.ids1", &ids, SD_I32);
        sd_tensor_alloc(&h, SD_F32, 3, (int64_t[]){ 4, 77, 8 });
        sd_tensor_alloc(&pool, SD_F32, 2, (int64_t[]){ 4, 12 });
        T_EQ_INT(sd_clip_forward_sdxl(&g_ctx, &A.m, NULL, &h, &pool, &ids), SD_EINVAL);
        sd_tensor_free(&ids); sd_tensor_free(&h); sd_tensor_free(&pool);
    }
    rc = model_open(&B, te2_cfg(), "te2", st, SD_LAYOUT_LDM, "conditioner.embedders.1.model.");
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(B.m.n_run, 3);
        T_CHECK(B.m.proj.w && !B.m.proj.b);
        check_forward(&B, st, "golden.ids2", "golden.h2", "golden.pool");
        static const char *const n2[] = { "text_projection.weight", "text_model.final_layer_norm.weight",
                                          "text_model.encoder.layers.2.mlp.fc1.weight",
                                          "text_model.encoder.layers.0.self_attn.q_proj.weight",
                                          "text_model.encoder.layers.1.self_attn.v_proj.bias",
                                          "text_model.embeddings.token_embedding.weight" };
        check_backward(&B, st, "golden.ids2", 1, 1, "grad2.", n2, 6);
        static const char *const n2p[] = { "text_model.encoder.layers.2.mlp.fc1.weight" };
        check_backward(&B, st, "golden.ids2", 0, 1, "grad2p.", n2p, 1);
        /* TE2 without a pooled output skips its last layer; hidden is the same */
        sd_tensor ids, h, ref;
        golden(st, "golden.ids2", &ids, SD_I32);
        golden(st, "golden.h2", &ref, SD_F32);
        sd_tensor_alloc(&h, SD_F32, 3, ref.shape);
        rc = sd_clip_forward_sdxl(&g_ctx, &B.m, NULL, &h, NULL, &ids);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        T_CHECK(close_to("h2 without pool", h.data, &ref, 1e-4));
        /* a plain forward does not leave SDXL state behind */
        sd_tensor y;
        sd_tensor_alloc(&y, SD_F32, 3, ref.shape);
        sd_arena_reset(&g_act, 0);
        rc = sd_clip_forward(&g_ctx, &B.m, &g_act, &y, &ids, 0);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        T_EQ_INT(sd_clip_backward_sdxl(&g_ctx, &B.m, NULL, &h, NULL), SD_ESTATE);
        sd_tensor_free(&ids); sd_tensor_free(&h); sd_tensor_free(&ref); sd_tensor_free(&y);
        model_close(&B);
    }
    if (!rc) model_close(&A);
    sd_safetensors_close(st);
}

static void test_long(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_sdxl_clip.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model A, B;
    rc = model_open(&A, te1_cfg(), "", st, SD_LAYOUT_LDM, NULL);
    if (!rc) rc = model_open(&B, te2_cfg(), "", st, SD_LAYOUT_LDM, NULL);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    sd_tensor ids1, ids2, r1, r2, rp, h1, h2, pool, w1, w2, dh, dp;
    rc = golden(st, "golden.long_ids1", &ids1, SD_I32);
    if (!rc) rc = golden(st, "golden.long_ids2", &ids2, SD_I32);
    if (!rc) rc = golden(st, "golden.long_h1", &r1, SD_F32);
    if (!rc) rc = golden(st, "golden.long_h2", &r2, SD_F32);
    if (!rc) rc = golden(st, "golden.long_pool", &rp, SD_F32);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    sd_tensor_alloc(&h1, SD_F32, 3, r1.shape);
    sd_tensor_alloc(&h2, SD_F32, 3, r2.shape);
    sd_tensor_alloc(&dh, SD_F32, 3, r2.shape);
    sd_tensor_alloc(&pool, SD_F32, 2, rp.shape);
    sd_tensor_alloc(&dp, SD_F32, 2, rp.shape);
    sd_tensor_alloc(&w1, SD_F32, 3, (int64_t[]){ 4, 77, 8 });
    sd_tensor_alloc(&w2, SD_F32, 3, (int64_t[]){ 4, 77, 16 });
    rc = sd_clip_forward_sdxl_chunks(&g_ctx, &A.m, NULL, &h1, NULL, &w1, &ids1);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) T_CHECK(close_to("long_h1", h1.data, &r1, 1e-4));
    sd_arena_reset(&g_act, 0);
    rc = sd_params_zero_grad(&g_ctx, &B.r);
    if (!rc) rc = sd_clip_forward_sdxl_chunks(&g_ctx, &B.m, &g_act, &h2, &pool, &w2, &ids2);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_CHECK(close_to("long_h2", h2.data, &r2, 1e-4));
        T_CHECK(close_to("long_pool", pool.data, &rp, 1e-4));
        sd_nn_plan p = sd_clip_plan_sdxl(&B.m, 2, 2, 77, 1);
        T_CHECKF(g_act.used <= p.saved && p.saved - g_act.used < 64, "arena %zu, plan %zu", g_act.used, p.saved);
        rfill(&dh);
        rfill(&dp);
        rc = sd_clip_backward_sdxl_chunks(&g_ctx, &B.m, NULL, &dh, &dp);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        /* the unchunked backward refuses a chunked forward */
        T_EQ_INT(sd_clip_backward_sdxl(&g_ctx, &B.m, NULL, &w2, NULL), SD_ESTATE);
        static const char *const n[] = { "text_projection.weight", "text_model.embeddings.token_embedding.weight" };
        for (int i = 0; !rc && i < 2; i++) {
            char name[256];
            snprintf(name, sizeof name, "long_grad2.%s", n[i]);
            sd_tensor g;
            if (golden(st, name, &g, SD_F32)) { T_CHECKF(0, "%s", sd_errmsg()); continue; }
            T_CHECK(close_to(name, param(&B, n[i])->grad.data, &g, 1e-4));
            sd_tensor_free(&g);
        }
    }
    sd_tensor *all[] = { &ids1, &ids2, &r1, &r2, &rp, &h1, &h2, &pool, &w1, &w2, &dh, &dp };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) sd_tensor_free(all[i]);
    model_close(&A);
    model_close(&B);
    sd_safetensors_close(st);
}

/* Diffusers text_encoder/ and text_encoder_2/ give the same registry values as the single file. */
static void test_diffusers(void)
{
    sd_safetensors *st = NULL, *d1 = NULL, *d2 = NULL;
    int rc = sd_safetensors_open(data_path("golden_sdxl_clip.safetensors"), &st);
    if (!rc) rc = sd_safetensors_open(data_path("golden_sdxl_te1_diffusers.safetensors"), &d1);
    if (!rc) rc = sd_safetensors_open(data_path("golden_sdxl_te2_diffusers.safetensors"), &d2);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    for (int e = 0; e < 2; e++) {
        model A, B;
        sd_clip_config cfg = e ? te2_cfg() : te1_cfg();
        rc = model_open(&A, cfg, "x", st, SD_LAYOUT_LDM, NULL);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        int rc2 = model_open(&B, cfg, "x", e ? d2 : d1, SD_LAYOUT_NONE, NULL);
        T_CHECKF(rc2 == SD_OK, "%s", sd_errmsg());
        if (!rc && !rc2) {
            int same = 1;
            for (size_t i = 0; i < sd_params_count(&A.r); i++) {
                const sd_param *p = sd_params_at(&A.r, i), *q = sd_params_at(&B.r, i);
                if (memcmp(p->value.data, q->value.data, sd_tensor_nbytes(&p->value))) {
                    printf("#   %s differs\n", p->key);
                    same = 0;
                }
            }
            T_CHECK(same);
        }
        model_close(&A);
        model_close(&B);
    }
    /* a TE2-shaped model on the TE1 Diffusers file: shapes and text_projection.weight missing */
    model C;
    rc = model_open(&C, te2_cfg(), "", d1, SD_LAYOUT_DIFFUSERS, "");
    T_CHECK(rc == SD_EFORMAT);
    model_close(&C);
    sd_safetensors_close(st);
    sd_safetensors_close(d1);
    sd_safetensors_close(d2);
}

/* Reverse names: every TE2 registry value rebuilt into its OpenCLIP tensor equals the file's. */
static void test_openclip_names(void)
{
    char name[256];
    int how = -1;
    T_EQ_INT(sd_clip_openclip_name("text_model.encoder.layers.31.self_attn.k_proj.bias", "conditioner.embedders.1.model.",
                                   name, sizeof name, &how), SD_OK);
    T_EQ_STR(name, "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_bias");
    T_EQ_INT(how, SD_CLIP_OC_QKV);
    T_EQ_INT(sd_clip_openclip_name("text_projection.weight", "p.", name, sizeof name, &how), SD_OK);
    T_EQ_STR(name, "p.text_projection");
    T_EQ_INT(how, SD_CLIP_OC_TRANSPOSE);
    T_EQ_INT(sd_clip_openclip_name("text_model.embeddings.position_ids", "p.", name, sizeof name, &how), SD_ENOTFOUND);
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_sdxl_clip.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model B;
    rc = model_open(&B, te2_cfg(), "", st, SD_LAYOUT_LDM, NULL);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    size_t seen = 0;
    for (size_t i = 0; !rc && i < sd_params_count(&B.r); i++) {
        const sd_param *p = sd_params_at(&B.r, i);
        rc = sd_clip_openclip_name(p->key, "conditioner.embedders.1.model.", name, sizeof name, &how);
        T_CHECKF(rc == SD_OK, "%s: %s", p->key, sd_errmsg());
        if (rc) break;
        sd_tensor f;
        if (golden(st, name, &f, SD_F32)) { T_CHECKF(0, "%s", sd_errmsg()); continue; }
        const float *v = p->value.data, *fv = f.data;
        int64_t n = sd_tensor_numel(&p->value), bad = 0;
        if (how == SD_CLIP_OC_COPY) {
            bad = memcmp(v, fv, (size_t)n * sizeof(float)) != 0;
        } else if (how == SD_CLIP_OC_QKV) {
            int part = strstr(p->key, "q_proj") ? 0 : strstr(p->key, "k_proj") ? 1 : 2;
            bad = sd_tensor_numel(&f) != 3 * n || memcmp(v, fv + part * n, (size_t)n * sizeof(float)) != 0;
        } else {
            int64_t P = p->value.shape[0], W = p->value.shape[1];
            for (int64_t a = 0; a < P; a++)
                for (int64_t b = 0; b < W; b++) bad |= v[a * W + b] != fv[b * P + a];
        }
        T_CHECKF(!bad, "%s -> %s", p->key, name);
        seen++;
        sd_tensor_free(&f);
    }
    T_EQ_INT(seen, sd_params_count(&B.r));
    model_close(&B);
    sd_safetensors_close(st);
}

static void test_size_embedding(void)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_sdxl_clip.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    sd_tensor sizes, ref;
    rc = golden(st, "golden.sizes", &sizes, SD_I32);
    if (!rc) rc = golden(st, "golden.size_emb", &ref, SD_F32);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    const int32_t *s = sizes.data;
    double worst = 0;
    int64_t nexact = 0;
    for (int64_t b = 0; b < sizes.shape[0]; b++) {
        float out[SD_SDXL_SIZE_EMB_DIM];
        sd_sdxl_size_embedding(out, s[6 * b], s[6 * b + 1], s[6 * b + 2], s[6 * b + 3], s[6 * b + 4], s[6 * b + 5]);
        const float *r = (const float *)ref.data + b * SD_SDXL_SIZE_EMB_DIM;
        for (int i = 0; i < SD_SDXL_SIZE_EMB_DIM; i++) {
            worst = fmax(worst, fabs((double)out[i] - r[i]));
            nexact += out[i] == r[i];
        }
    }
    printf("# size embedding: max|diff| %.3g, %lld of %lld bit-exact\n", worst, (long long)nexact,
           (long long)sd_tensor_numel(&ref));
    T_CHECKF(worst <= 2.5e-7, "size embedding max|diff| %g", worst);
    /* the y vector and its backward */
    sd_tensor pooled, semb, y, dp;
    sd_tensor_alloc(&pooled, SD_F32, 2, (int64_t[]){ 2, 3 });
    sd_tensor_alloc(&semb, SD_F32, 2, (int64_t[]){ 2, SD_SDXL_SIZE_EMB_DIM });
    sd_tensor_alloc(&y, SD_F32, 2, (int64_t[]){ 2, 3 + SD_SDXL_SIZE_EMB_DIM });
    sd_tensor_alloc(&dp, SD_F32, 2, (int64_t[]){ 2, 3 });
    rfill(&pooled);
    rfill(&semb);
    rc = sd_sdxl_vector(&g_ctx, &y, &pooled, &semb);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    const float *yv = y.data, *pv = pooled.data, *sv = semb.data;
    int ok = 1;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 3 + SD_SDXL_SIZE_EMB_DIM; i++)
            ok &= yv[b * (3 + SD_SDXL_SIZE_EMB_DIM) + i] == (i < 3 ? pv[b * 3 + i] : sv[b * SD_SDXL_SIZE_EMB_DIM + i - 3]);
    T_CHECK(ok);
    for (int i = 0; i < 6; i++) ((float *)dp.data)[i] = 1.0f;
    rc = sd_sdxl_vector_backward(&g_ctx, &dp, &y);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 3; i++) T_NEAR(((float *)dp.data)[b * 3 + i], 1.0f + pv[b * 3 + i], 1e-6);
    T_EQ_INT(sd_sdxl_vector(&g_ctx, &dp, &pooled, &semb), SD_EINVAL);
    sd_tensor *all[] = { &sizes, &ref, &pooled, &semb, &y, &dp };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) sd_tensor_free(all[i]);
    sd_safetensors_close(st);
}

static void test_errors(void)
{
    sd_params r;
    sd_clip m;
    sd_params_init(&r);
    sd_clip_config c = te1_cfg();
    c.layers = 1;
    T_EQ_INT(sd_clip_init(&m, &r, "", &c, SD_FAMILY_SDXL), SD_EINVAL);
    sd_params_free(&r);
    /* a TE2 model on a file whose OpenCLIP tower has fewer layers */
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("golden_sdxl_clip.safetensors"), &st);
    if (rc) { T_CHECKF(0, "%s", sd_errmsg()); return; }
    model B;
    sd_clip_config c2 = te2_cfg();
    c2.layers = 4;
    rc = model_open(&B, c2, "", st, SD_LAYOUT_LDM, NULL);
    T_CHECK(rc == SD_EFORMAT);
    model_close(&B);
    c2.layers = 2;   /* resblocks.2 is not in a 2-layer config */
    rc = model_open(&B, c2, "", st, SD_LAYOUT_LDM, NULL);
    T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "resblocks.2"));
    model_close(&B);
    c2 = te2_cfg();
    c2.projection_dim = 8;   /* text_projection shape */
    rc = model_open(&B, c2, "", st, SD_LAYOUT_LDM, NULL);
    T_CHECK(rc == SD_EFORMAT && strstr(sd_errmsg(), "text_projection"));
    model_close(&B);
    sd_safetensors_close(st);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0) || sd_nn_arena_init(&g_act, SD_DEV_CPU, (size_t)16 << 20)) {
        printf("not ok init: %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_single_file);
    T_RUN(test_long);
    T_RUN(test_diffusers);
    T_RUN(test_openclip_names);
    T_RUN(test_size_embedding);
    T_RUN(test_errors);
    printf("# worst max|diff|/max|ref| %.3g\n", g_worst);
    sd_arena_free(&g_act);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
