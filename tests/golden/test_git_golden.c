/* GIT captioner (models/git.h) against tests/golden/gen/make_git_golden.py: a PyTorch
 * transcription of transformers' modeling_git.py (GitForCausalLM) on a tiny model under its key
 * names. Checks: sizes from the shapes, the vision tower and visual projection, the decoder
 * logits (one token at a time through the key/value cache) within max|Δ| <= 1e-4 · max|ref|,
 * greedy ids equal to the reference's, thread-count independence, the GIT processor
 * (CLIPImageProcessor: shortest edge, centre crop) on the tagger test images, kohya's
 * --remove_words regexes against Python's re, and files that are not GIT. */
#include <stdint.h>

#include "base/error.h"
#include "io/image.h"
#include "models/git.h"
#include "test.h"

static const char *data_path(const char *dir, const char *name)
{
    return t_root_pathf("tests/data/%s/%s", dir, name);
}

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

static int open_model(const char *path, sd_git *m)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(path, &st);
    if (!rc) rc = sd_git_open(m, st, SD_DEV_CPU);
    if (rc) printf("#   %s\n", sd_errmsg());
    sd_safetensors_close(st);
    return rc;
}

static void git_sizes(void)
{
    sd_git m;
    if (open_model(data_path("git", "git_tiny.safetensors"), &m)) {
        T_CHECK(0);
        return;
    }
    T_EQ_INT(m.vwidth, 32);
    T_EQ_INT(m.vheads, 2);
    T_EQ_INT(m.vdepth, 2);
    T_EQ_INT(m.vmlp, 64);
    T_EQ_INT(m.patch, 8);
    T_EQ_INT(m.grid, 4);
    T_EQ_INT(m.size, 32);
    T_EQ_INT(m.vtokens, 17);
    T_EQ_INT(m.twidth, 32);
    T_EQ_INT(m.theads, 2);
    T_EQ_INT(m.tdepth, 2);
    T_EQ_INT(m.tinter, 64);
    T_EQ_INT(m.vocab, 200);
    T_EQ_INT(m.positions, 64);
    sd_git_free(&m);
}

static void git_forward_and_generate(void)
{
    sd_git m;
    if (open_model(data_path("git", "git_tiny.safetensors"), &m)) {
        T_CHECK(0);
        return;
    }
    sd_tensor x = { 0 }, rvis = { 0 }, rfeat = { 0 }, vis = { 0 }, feat = { 0 }, feat1 = { 0 }, seq = { 0 }, rl = { 0 };
    T_CHECK(read_f32("golden.x", &x) == 0 && read_f32("golden.vis", &rvis) == 0 &&
            read_f32("golden.feat", &rfeat) == 0 && read_f32("golden.seq", &seq) == 0 &&
            read_f32("golden.logits", &rl) == 0);
    T_CHECK(sd_tensor_alloc(&vis, SD_F32, 3, rvis.shape) == 0 && sd_tensor_alloc(&feat, SD_F32, 3, rfeat.shape) == 0 &&
            sd_tensor_alloc(&feat1, SD_F32, 3, rfeat.shape) == 0);
    int rc = sd_git_encode_image(&g_ctx, &m, &feat, &vis, &x);
    if (rc) printf("#   %s\n", sd_errmsg());
    T_CHECK(rc == 0);
    double ev = rel_err(vis.data, rvis.data, sd_tensor_numel(&rvis)),
           ef = rel_err(feat.data, rfeat.data, sd_tensor_numel(&rfeat));
    printf("#   vision tower rel %.3g, visual projection rel %.3g\n", ev, ef);
    T_CHECK(ev <= 1e-4 && ef <= 1e-4);
    /* thread-count independence of the encoder */
    sd_ctx_set_threads(&g_ctx, 1);
    T_CHECK(sd_git_encode_image(&g_ctx, &m, &feat1, NULL, &x) == 0);
    sd_ctx_set_threads(&g_ctx, 2);
    T_CHECK(!memcmp(feat.data, feat1.data, sd_tensor_nbytes(&feat)));
    /* decoder logits, one token at a time */
    sd_git_state s;
    T_CHECK(sd_git_state_init(&s, &m, 50, SD_DEV_CPU) == 0);
    sd_tensor e0, e1;
    T_CHECK(sd_tensor_narrow0(&feat, 0, 1, &e0) == 0 && sd_tensor_narrow0(&feat, 1, 1, &e1) == 0);
    T_CHECK(sd_git_state_set_image(&g_ctx, &m, &s, &e0) == 0);
    const int64_t V = m.vocab, n = seq.shape[0];
    float *lg = malloc(sizeof(float) * (size_t)V);
    double worst = 0;
    for (int64_t p = 0; p < n; p++) {
        T_CHECK(sd_git_decode(&g_ctx, &m, &s, (int32_t)((float *)seq.data)[p], lg) == 0);
        worst = fmax(worst, rel_err(lg, (float *)rl.data + p * V, V));
    }
    printf("#   decoder logits (%lld positions) rel %.3g\n", (long long)n, worst);
    T_CHECK(worst <= 1e-4);
    /* greedy, max_length 50 */
    for (int k = 0; k < 2; k++) {
        sd_tensor want = { 0 };
        char key[32];
        snprintf(key, sizeof key, "golden.greedy.%d", k);
        T_CHECK(read_f32(key, &want) == 0);
        int32_t *ids = NULL;
        int nids = 0;
        T_CHECK(sd_git_state_set_image(&g_ctx, &m, &s, k ? &e1 : &e0) == 0);
        T_CHECK(sd_git_generate(&g_ctx, &m, &s, 2, 3, 50, &ids, &nids) == 0);
        int same = want.data && nids == want.shape[0];
        for (int i = 0; same && i < nids; i++) same = ids[i] == (int32_t)((float *)want.data)[i];
        printf("#   image %d greedy: %d ids, %s\n", k, nids, same ? "same" : "DIFFERENT");
        T_CHECK(same);
        free(ids);
        sd_tensor_free(&want);
    }
    /* past the cache: SD_ERANGE */
    sd_git_state s2;
    T_CHECK(sd_git_state_init(&s2, &m, 2, SD_DEV_CPU) == 0);
    T_CHECK(sd_git_state_set_image(&g_ctx, &m, &s2, &e0) == 0);
    T_CHECK(sd_git_decode(&g_ctx, &m, &s2, 2, lg) == 0 && sd_git_decode(&g_ctx, &m, &s2, 5, lg) == 0);
    T_EQ_INT(sd_git_decode(&g_ctx, &m, &s2, 5, lg), SD_ERANGE);
    T_EQ_INT(sd_git_decode(&g_ctx, &m, &s, 200, lg), SD_ERANGE);
    sd_git_state_free(&s2);
    sd_git_state_free(&s);
    free(lg);
    sd_tensor *all[] = { &x, &rvis, &rfeat, &vis, &feat, &feat1, &seq, &rl };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sd_tensor_free(all[i]);
    sd_git_free(&m);
}

static void git_preprocess(void)
{
    static const char *imgs[5] = { "a_97x61.png", "b_203x150_rgba.png", "c_640x480.png", "d_50x33_la.png",
                                   "e_33x517.png" };
    float *chw = malloc(sizeof(float) * 3 * 32 * 32);
    for (int k = 0; k < 5; k++) {
        sd_image im;
        sd_tensor ref = { 0 };
        char key[32];
        snprintf(key, sizeof key, "golden.prep.%d", k);
        T_CHECK(read_f32(key, &ref) == 0);
        T_CHECK(sd_image_load(data_path("tagger", imgs[k]), SD_ALPHA_DROP, &im, NULL) == 0);
        T_CHECK(sd_git_prepare_image(&im, 32, chw) == 0);
        double e = 0;
        for (int i = 0; i < 3 * 32 * 32 && ref.data; i++) e = fmax(e, fabs(chw[i] - ((float *)ref.data)[i]));
        printf("#   %s: max|diff| = %.3g\n", imgs[k], e);
        T_CHECK(ref.data && e <= 1e-5);
        sd_image_free(&im);
        sd_tensor_free(&ref);
    }
    free(chw);
}

/* kohya's PATTERN_REPLACE against Python's re (remove_words.txt: input TAB output) */
static void git_remove_words(void)
{
    FILE *f = fopen(data_path("git", "remove_words.txt"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    char line[2048];
    int n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        size_t L = strlen(line);
        if (L && line[L - 1] == '\n') line[--L] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        char *got = sd_git_remove_words(line);
        n++;
        if (!got || strcmp(got, tab + 1)) {
            bad++;
            printf("#   '%s' -> '%s', Python '%s'\n", line, got ? got : "(null)", tab + 1);
        }
        free(got);
    }
    fclose(f);
    printf("#   %d sentences, %d differ\n", n, bad);
    T_CHECK(n >= 20 && bad == 0);
}

static void git_rejects_other(void)
{
    sd_safetensors *st = NULL;
    sd_git m;
    T_CHECK(sd_safetensors_open(data_path("blip", "blip_tiny_hf.safetensors"), &st) == 0);
    T_EQ_INT(sd_git_detect(st), 0);
    T_EQ_INT(sd_git_open(&m, st, SD_DEV_CPU), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "not a GIT model") != NULL);
    printf("#   %s\n", sd_errmsg());
    sd_safetensors_close(st);
    T_CHECK(sd_safetensors_open(data_path("git", "git_tiny.safetensors"), &st) == 0);
    T_EQ_INT(sd_git_detect(st), 1);
    sd_safetensors_close(st);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0) || sd_safetensors_open(data_path("git", "git_golden.safetensors"), &g_gold)) {
        printf("#   %s\nnot ok git_setup\n", sd_errmsg());
        return 1;
    }
    T_RUN(git_sizes);
    T_RUN(git_forward_and_generate);
    T_RUN(git_preprocess);
    T_RUN(git_remove_words);
    T_RUN(git_rejects_other);
    sd_safetensors_close(g_gold);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
