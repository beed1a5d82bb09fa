/* BLIP captioner (models/blip.h) against tests/golden/gen/make_blip_golden.py: a PyTorch
 * transcription of BLIP's vit.py + med.py on a tiny model saved under transformers' key names
 * (tied decoder weight, bias as decoder.bias, an I64 position_ids buffer). Checks: sizes from the
 * shapes, image features and decoder logits (incremental, with the key/value cache) within
 * max|Δ| <= 1e-4 · max|ref|, greedy and 3-beam search ids equal to the reference's (HF
 * transformers 4.44 beam-search rules, finishing by EOS and by max_length), the same model
 * rewritten under BLIP's own key names, broken files, the sampling processors (repetition
 * penalty, min length, top-k, top-p) on random logits, preprocessing (PIL BICUBIC squash + CLIP
 * normalisation) against torchvision, thread-count independence. */
#include <stdint.h>

#include "base/error.h"
#include "io/image.h"
#include "models/blip.h"
#include "st_rewrite.h"
#include "test.h"

static const char *data_path(const char *dir, const char *name)
{
    return t_root_pathf("tests/data/%s/%s", dir, name);
}
#define BLIP_FILE data_path("blip", "blip_tiny_hf.safetensors")

static sd_ctx g_ctx;
static sd_safetensors *g_gold;

static int read_f32(const char *name, sd_tensor *t)
{
    const sd_st_tensor *g = sd_safetensors_find(g_gold, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden file has no '%s'", name);
    int rc = sd_tensor_alloc(t, SD_F32, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(g_gold, g, SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

static double rel_err(const float *a, const float *r, int64_t n)
{
    double mx = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(r[i]));
        e = fmax(e, fabs((double)a[i] - r[i]));
    }
    return mx > 0 ? e / mx : e;
}

static int open_model(const char *path, sd_blip *m)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(path, &st);
    if (!rc) rc = sd_blip_open(m, st, SD_DEV_CPU);
    if (rc) printf("#   %s\n", sd_errmsg());
    sd_safetensors_close(st);
    return rc;
}

static void blip_sizes(void)
{
    sd_blip m;
    if (open_model(BLIP_FILE, &m)) {
        T_CHECK(0);
        return;
    }
    T_EQ_INT(m.layout, SD_BLIP_LAYOUT_HF);
    T_EQ_INT(m.vwidth, 64);
    T_EQ_INT(m.vheads, 4);
    T_EQ_INT(m.vdepth, 2);
    T_EQ_INT(m.vmlp, 128);
    T_EQ_INT(m.patch, 8);
    T_EQ_INT(m.grid, 4);
    T_EQ_INT(m.size, 32);
    T_EQ_INT(m.vtokens, 17);
    T_EQ_INT(m.twidth, 64);
    T_EQ_INT(m.theads, 4);
    T_EQ_INT(m.tdepth, 2);
    T_EQ_INT(m.tinter, 128);
    T_EQ_INT(m.vocab, 202);
    T_EQ_INT(m.positions, 40);
    sd_blip_free(&m);
}

/* image features of golden.x into *emb (allocated); returns rel. error or -1 */
static double encode(sd_blip *m, sd_tensor *emb, int threads)
{
    sd_tensor x = { 0 }, ref = { 0 };
    double w = -1;
    int rc = read_f32("golden.x", &x);
    if (!rc) rc = read_f32("golden.emb", &ref);
    if (!rc) rc = sd_tensor_alloc(emb, SD_F32, 3, ref.shape);
    sd_ctx_set_threads(&g_ctx, threads);
    if (!rc) rc = sd_blip_encode_image(&g_ctx, m, emb, &x);
    if (rc) printf("#   %s\n", sd_errmsg());
    else w = rel_err(emb->data, ref.data, sd_tensor_numel(&ref));
    sd_tensor_free(&x);
    sd_tensor_free(&ref);
    return w;
}

/* logits of golden.seq (image 0), fed as the 4-token prompt then one token at a time */
static double decoder_logits(sd_blip *m, const sd_tensor *emb)
{
    sd_tensor seq = { 0 }, ref = { 0 }, e0;
    sd_blip_state s;
    double worst = -1;
    int rc = read_f32("golden.seq", &seq);
    if (!rc) rc = read_f32("golden.logits", &ref);
    if (!rc) rc = sd_blip_state_init(&s, m, 1, 20, SD_DEV_CPU);
    if (rc) {
        printf("#   %s\n", sd_errmsg());
        return -1;
    }
    rc = sd_tensor_narrow0(emb, 0, 1, &e0);
    if (!rc) rc = sd_blip_state_set_image(&g_ctx, m, &s, &e0);
    const int64_t n = seq.shape[0], V = m->vocab;
    int32_t ids[64];
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((float *)seq.data)[i];
    float *lg = malloc(sizeof(float) * (size_t)V);
    worst = 0;
    for (int64_t p = 3; !rc && p < n; p++) {
        rc = p == 3 ? sd_blip_decode(&g_ctx, m, &s, ids, 4, lg) : sd_blip_decode(&g_ctx, m, &s, &ids[p], 1, lg);
        if (!rc) worst = fmax(worst, rel_err(lg, (float *)ref.data + p * V, V));
    }
    if (rc) {
        printf("#   %s\n", sd_errmsg());
        worst = -1;
    }
    /* past the cache: SD_ERANGE */
    if (!rc) {
        sd_blip_state s2;
        T_CHECK(sd_blip_state_init(&s2, m, 1, 4, SD_DEV_CPU) == 0);
        T_CHECK(sd_blip_state_set_image(&g_ctx, m, &s2, &e0) == 0);
        T_CHECK(sd_blip_decode(&g_ctx, m, &s2, ids, 4, lg) == 0);
        T_EQ_INT(sd_blip_decode(&g_ctx, m, &s2, ids, 1, lg), SD_ERANGE);
        sd_blip_state_free(&s2);
    }
    free(lg);
    sd_blip_state_free(&s);
    sd_tensor_free(&seq);
    sd_tensor_free(&ref);
    return worst;
}

static const int32_t PROMPT[4] = { 200, 5, 6, 7 };

/* generated ids equal golden.<what>.<n>? */
static int gen_matches(sd_blip *m, const sd_tensor *emb, int n, const char *what, int beams, int maxlen)
{
    char key[64];
    snprintf(key, sizeof key, "golden.%s.%d", what, n);
    sd_tensor ref = { 0 }, e;
    if (read_f32(key, &ref)) {
        printf("#   %s\n", sd_errmsg());
        return 0;
    }
    sd_blip_state s;
    sd_blip_gen g = { .beam_search = 1, .num_beams = beams, .top_k = 50, .top_p = 1.0, .temperature = 1.0f,
                      .repetition_penalty = 1.0f, .min_length = 5, .max_length = maxlen, .eos = 3 };
    int32_t *out = NULL;
    int nout = 0, ok = 0;
    int rc = sd_blip_state_init(&s, m, beams, maxlen, SD_DEV_CPU);
    if (!rc) rc = sd_tensor_narrow0(emb, n, 1, &e);
    if (!rc) rc = sd_blip_state_set_image(&g_ctx, m, &s, &e);
    if (!rc) rc = sd_blip_generate(&g_ctx, m, &s, PROMPT, 4, &g, NULL, &out, &nout);
    if (rc) {
        printf("#   %s\n", sd_errmsg());
    } else {
        ok = nout == ref.shape[0];
        for (int i = 0; ok && i < nout; i++) ok = out[i] == (int32_t)((float *)ref.data)[i];
        if (!ok) {
            printf("#   %s: got", key);
            for (int i = 0; i < nout; i++) printf(" %d", out[i]);
            printf("\n#   want");
            for (int i = 0; i < ref.shape[0]; i++) printf(" %d", (int)((float *)ref.data)[i]);
            printf("\n");
        }
    }
    free(out);
    sd_blip_state_free(&s);
    sd_tensor_free(&ref);
    return ok;
}

static void blip_forward_and_generate(void)
{
    sd_blip m;
    if (open_model(BLIP_FILE, &m)) {
        T_CHECK(0);
        return;
    }
    sd_tensor emb = { 0 }, emb1 = { 0 };
    double w = encode(&m, &emb, 2);
    printf("#   image features: max|diff|/max|ref| = %.3g\n", w);
    T_CHECK(w >= 0 && w <= 1e-4);
    /* thread-count independence: bit-identical */
    T_CHECK(encode(&m, &emb1, 1) >= 0);
    T_CHECK(emb1.data && !memcmp(emb.data, emb1.data, sd_tensor_nbytes(&emb)));
    sd_ctx_set_threads(&g_ctx, 2);
    double d = decoder_logits(&m, &emb);
    printf("#   decoder logits: max|diff|/max|ref| = %.3g\n", d);
    T_CHECK(d >= 0 && d <= 1e-4);
    for (int n = 0; n < 2; n++) {
        T_CHECK(gen_matches(&m, &emb, n, "greedy", 1, 20));
        T_CHECK(gen_matches(&m, &emb, n, "beam3", 3, 20));
        T_CHECK(gen_matches(&m, &emb, n, "beam3short", 3, 8));
    }
    T_CHECK(gen_matches(&m, &emb, 0, "beam17", 17, 20));
    sd_tensor_free(&emb);
    sd_tensor_free(&emb1);
    sd_blip_free(&m);
}

/* ---- the same model under BLIP's own key names, and broken copies ----------------------------- */

static const char *blip_name(const char *k, char *buf, size_t n)
{
    static const char *ren[][2] = {
        { "vision_model.embeddings.class_embedding", "visual_encoder.cls_token" },
        { "vision_model.embeddings.position_embedding", "visual_encoder.pos_embed" },
        { "vision_model.embeddings.patch_embedding", "visual_encoder.patch_embed.proj" },
        { "vision_model.post_layernorm", "visual_encoder.norm" },
        { "vision_model.encoder.layers", "visual_encoder.blocks" },
        { ".self_attn.projection.", ".attn.proj." },
        { ".self_attn.qkv.", ".attn.qkv." },
        { ".layer_norm1.", ".norm1." },
        { ".layer_norm2.", ".norm2." },
        { "cls.predictions.decoder.bias", "cls.predictions.bias" },
    };
    snprintf(buf, n, "%s", k);
    for (size_t i = 0; i < sizeof ren / sizeof ren[0]; i++) {
        char *p = strstr(buf, ren[i][0]);
        if (!p) continue;
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%.*s%s%s", (int)(p - buf), buf, ren[i][1], p + strlen(ren[i][0]));
        snprintf(buf, n, "%s", tmp);
    }
    return buf;
}

/* rewrite the tiny model: mode 0 BLIP names (+ decoder.weight, no position_ids); 1 drop a layer
 * tensor; 2 a wrong shape; 3 an unexpected tensor; 4 HF names without the metadata */
static int rewrite(const char *dst, int mode)
{
    st_rewrite r;
    int rc = st_rewrite_begin(&r, BLIP_FILE);
    char name[256];
    for (size_t i = 0; !rc && i < r.n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(r.src, i);
        if (t->dtype == SD_ST_I64) continue;
        float *v;
        rc = st_rewrite_read(&r, t, t->numel, &v);
        const char *nm = mode == 0 ? blip_name(t->name, name, sizeof name) : t->name;
        if (mode == 1 && !strcmp(nm, "text_decoder.bert.encoder.layer.1.crossattention.self.key.bias")) continue;
        int64_t shape[4];
        memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        if (mode == 2 && !strcmp(nm, "text_decoder.bert.encoder.layer.0.output.dense.weight")) shape[0] = 32;
        if (!rc) rc = sd_safetensors_writer_add_f32(r.w, nm, SD_ST_F32, t->ndim, shape, v);
        if (!rc && mode == 0 && !strcmp(nm, "text_decoder.bert.embeddings.word_embeddings.weight"))
            rc = sd_safetensors_writer_add_f32(r.w, "text_decoder.cls.predictions.decoder.weight", SD_ST_F32, t->ndim,
                                               t->shape, v);
        if (!rc && mode == 3 && !strcmp(nm, "vision_model.post_layernorm.bias"))
            rc = sd_safetensors_writer_add_f32(r.w, "vision_model.encoder.layers.7.extra", SD_ST_F32, t->ndim,
                                               t->shape, v);
    }
    if (!rc && mode != 4) rc = sd_safetensors_writer_set_meta(r.w, "vision_heads", "4");
    if (!rc && mode != 4) rc = sd_safetensors_writer_set_meta(r.w, "text_heads", "4");
    rc = st_rewrite_end(&r, rc, dst);
    if (rc) printf("#   %s\n", sd_errmsg());
    return rc;
}

static void blip_original_layout(void)
{
    const char *p = t_path("blip_orig.safetensors");
    T_CHECK(rewrite(p, 0) == 0);
    sd_blip a, b;
    if (open_model(p, &a)) {
        T_CHECK(0);
        return;
    }
    T_EQ_INT(a.layout, SD_BLIP_LAYOUT_BLIP);
    if (open_model(BLIP_FILE, &b)) {
        T_CHECK(0);
        sd_blip_free(&a);
        return;
    }
    /* every parameter equal (the HF file's tied/renamed head resolved the same way) */
    T_EQ_INT(sd_params_count(&a.r), sd_params_count(&b.r));
    int same = 1;
    for (size_t i = 0; i < sd_params_count(&a.r) && i < sd_params_count(&b.r); i++) {
        const sd_tensor *x = &sd_params_at(&a.r, i)->value, *y = &sd_params_at(&b.r, i)->value;
        same &= sd_tensor_nbytes(x) == sd_tensor_nbytes(y) && !memcmp(x->data, y->data, sd_tensor_nbytes(x));
    }
    T_CHECK(same);
    sd_tensor emb = { 0 };
    double w = encode(&a, &emb, 2);
    T_CHECK(w >= 0 && w <= 1e-4);
    T_CHECK(gen_matches(&a, &emb, 1, "beam3", 3, 20));
    sd_tensor_free(&emb);
    sd_blip_free(&a);
    sd_blip_free(&b);
}

static void blip_rejects_broken(void)
{
    sd_blip m;
    sd_safetensors *st = NULL;
    const char *p = t_path("blip_bad.safetensors");
    T_CHECK(rewrite(p, 1) == 0);
    T_CHECK(sd_safetensors_open(p, &st) == 0);
    T_EQ_INT(sd_blip_open(&m, st, SD_DEV_CPU), SD_EFORMAT);
    printf("#   %s\n", sd_errmsg());
    T_CHECK(strstr(sd_errmsg(), "1 missing tensor: text_decoder.bert.encoder.layer.1.crossattention.self.key.bias"));
    sd_safetensors_close(st);
    T_CHECK(rewrite(p, 2) == 0);
    T_CHECK(sd_safetensors_open(p, &st) == 0);
    T_EQ_INT(sd_blip_open(&m, st, SD_DEV_CPU), SD_EFORMAT);
    printf("#   %s\n", sd_errmsg());
    T_CHECK(strstr(sd_errmsg(), "layer.0.output.dense.weight"));
    sd_safetensors_close(st);
    T_CHECK(rewrite(p, 3) == 0);
    T_CHECK(sd_safetensors_open(p, &st) == 0);
    T_EQ_INT(sd_blip_open(&m, st, SD_DEV_CPU), SD_EFORMAT);
    printf("#   %s\n", sd_errmsg());
    T_CHECK(strstr(sd_errmsg(), "unexpected tensor: vision_model.encoder.layers.7.extra"));
    sd_safetensors_close(st);
    /* no head counts in the metadata: width 64 / 64 = 1 head (loads; different numbers) */
    T_CHECK(rewrite(p, 4) == 0);
    T_CHECK(sd_safetensors_open(p, &st) == 0);
    T_EQ_INT(sd_blip_open(&m, st, SD_DEV_CPU), 0);
    T_EQ_INT(m.vheads, 1);
    T_EQ_INT(m.theads, 1);
    sd_blip_free(&m);
    sd_safetensors_close(st);
    /* another model: the tagger */
    T_CHECK(sd_safetensors_open(data_path("tagger", "tagger_tiny.safetensors"), &st) == 0);
    T_EQ_INT(sd_blip_open(&m, st, SD_DEV_CPU), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "not a BLIP captioning model"));
    printf("#   %s\n", sd_errmsg());
    sd_safetensors_close(st);
}

/* the sampling processors on random logits against transformers' (PROC_CASES of the generator) */
static void blip_sampling_processors(void)
{
    static const struct {
        int tail[4], ntail, min_length, top_k;
        double top_p;
        float rep;
    } cases[4] = {
        { { 9, 9, 20 }, 3, 5, 50, 0.9, 1.1f },
        { { 0 }, 0, 5, 50, 0.9, 1.1f },
        { { 30, 31, 32, 33 }, 4, 5, 10, 1.0, 1.1f },
        { { 40, 41 }, 2, 5, 50, 0.5, 1.3f },
    };
    sd_tensor in = { 0 }, want = { 0 };
    T_CHECK(read_f32("golden.proc.in", &in) == 0 && read_f32("golden.proc.out", &want) == 0);
    if (!in.data || !want.data) return;
    const int64_t V = in.shape[1];
    float *row = malloc(sizeof(float) * (size_t)V);
    unsigned char *seen = calloc((size_t)V, 1);
    for (int c = 0; c < 4; c++) {
        memset(seen, 0, (size_t)V);
        for (int i = 0; i < 4; i++) seen[PROMPT[i]] = 1;
        for (int i = 0; i < cases[c].ntail; i++) seen[cases[c].tail[i]] = 1;
        sd_blip_gen g = { .beam_search = 0, .num_beams = 1, .top_k = cases[c].top_k, .top_p = cases[c].top_p,
                          .temperature = 1.0f, .repetition_penalty = cases[c].rep, .min_length = cases[c].min_length,
                          .max_length = 20, .eos = 3 };
        memcpy(row, (float *)in.data + c * V, sizeof(float) * (size_t)V);
        T_CHECK(sd_blip_process_logits(row, V, &g, seen, 4 + cases[c].ntail) == 0);
        const float *w = (float *)want.data + c * V;
        int kept = 0, bad = 0;
        for (int64_t i = 0; i < V; i++) {
            kept += isfinite(w[i]);
            if (isfinite(w[i]) != isfinite(row[i]) || (isfinite(w[i]) && fabsf(w[i] - row[i]) > 1e-6f * fabsf(w[i]))) bad++;
        }
        printf("#   case %d: %d tokens kept, %d differ\n", c, kept, bad);
        T_CHECK(bad == 0 && kept > 0);
    }
    free(row);
    free(seen);
    sd_tensor_free(&in);
    sd_tensor_free(&want);
}

static void blip_preprocess(void)
{
    static const char *imgs[3] = { "a_97x61.png", "b_203x150_rgba.png", "c_640x480.png" };
    float *chw = malloc(sizeof(float) * 3 * 32 * 32);
    for (int k = 0; k < 3; k++) {
        sd_image im;
        sd_tensor ref = { 0 };
        char key[32];
        snprintf(key, sizeof key, "golden.prep.%d", k);
        T_CHECK(read_f32(key, &ref) == 0);
        T_CHECK(sd_image_load(data_path("tagger", imgs[k]), SD_ALPHA_DROP, &im, NULL) == 0);
        T_CHECK(sd_blip_prepare_image(&im, 32, chw) == 0);
        double e = 0;
        for (int i = 0; i < 3 * 32 * 32 && ref.data; i++) e = fmax(e, fabs(chw[i] - ((float *)ref.data)[i]));
        printf("#   %s: max|diff| = %.3g\n", imgs[k], e);
        T_CHECK(ref.data && e <= 1e-6);
        sd_image_free(&im);
        sd_tensor_free(&ref);
    }
    free(chw);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0) || sd_safetensors_open(data_path("blip", "blip_golden.safetensors"), &g_gold)) {
        printf("#   %s\nnot ok blip_setup\n", sd_errmsg());
        return 1;
    }
    T_RUN(blip_sizes);
    T_RUN(blip_forward_and_generate);
    T_RUN(blip_original_layout);
    T_RUN(blip_rejects_broken);
    T_RUN(blip_sampling_processors);
    T_RUN(blip_preprocess);
    sd_safetensors_close(g_gold);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
