/* models/sd_model: whole-model loading from single files, ckpt files and Diffusers folders, the
 * writer back to ldm single-file names (SD2: OpenCLIP names as kohya saves them), hashes.
 *
 * Without arguments: the unit tests. With arguments it is also the helper of tests/cli/sd_model.sh
 * (tiny models are built from the golden files of tests/data/golden/):
 *   combine OUT.safetensors IN.safetensors...   every tensor but golden.* / grad.* into one file
 *   drop OUT.safetensors IN.safetensors NAME    IN without tensor NAME
 *   golden FILE NAME OUT.npy                    a golden tensor as .npy (f32 or i32)
 *   cmp OUT.npy FILE NAME [IDX...]              max|Δ| ≤ 1e-4·max|ref| (flat indices IDX ignored)
 *   same A B PREFIX                             every A tensor under PREFIX is in B, equal as f32
 *   expect FILE.safetensors FILE.expect         tensors and metadata equal a tests/data/ckpt .expect
 *   dtypes FILE                                 "name dtype" per tensor
 *   mkckpt OUT.ckpt IN.safetensors              a torch-zip checkpoint {"state_dict": ..., "global_step": 1234}
 *   mkdiffusers DIR                             an SD2 tiny Diffusers folder (unet/ text_encoder/ vae/)
 *   mkclip sd1|sd2 OUT.safetensors              a text encoder with the real vocabulary (49408 tokens),
 *                                               width 32, 2 heads, 2 layers run, random weights
 *                                               (sd1: single-file names; sd2: Diffusers names)
 *   ids OUT.npy ID...                           int64 ids as [1,77] or [1,n,77]
 *   cmpcat OUT.npy FILE A B                     cmp against cat(A, B) on the last axis
 *   slice IN.npy OUT.npy LO HI                  OUT = IN[..., LO:HI]
 *   arr OUT.npy SCALE PHASE D...                f32 [D...] = SCALE·sin(0.37·i + PHASE)
 *   mkdiffusersxl SINGLE CFG DIR                an SDXL Diffusers folder (unet/ text_encoder/
 *                                               text_encoder_2/, config.json files) from a tiny SDXL
 *                                               single file described by CFG
 *   samemodel A CFG_A B CFG_B                   UNet + text encoders of A and B (CFG "" = none):
 *                                               the same parameters, bitwise */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/hash.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "io/zip.h"
#include "models/diffusers_write.h"
#include "models/sd_model.h"
#include "train/full.h"
#include "train/lora_file.h"
#include "test.h"

static const char *root_path(const char *rel)
{
    return t_root_pathf("%s", rel);
}

#define G_UNET1 "tests/data/golden/unet/sd1_tiny.safetensors"
#define G_UNET2 "tests/data/golden/unet/sd2_tiny.safetensors"
#define G_UNET2D "tests/data/golden/unet/sd2_tiny_diffusers.safetensors"
#define G_CLIP1 "tests/data/golden/clip/golden_clip_sd1.safetensors"
#define G_CLIP2 "tests/data/golden/clip/golden_clip_sd2.safetensors"
#define G_VAE "tests/data/golden/vae/golden_vae_a.safetensors"
#define G_VAE_KEYS "tests/data/golden/vae/vae_diffusers_keys_a.txt"

static const char SD1_CFG[] =
    "family = \"sd1\"\n"
    "[unet]\nmodel_channels = 32\nchannel_mult = [1, 2]\nnum_res_blocks = 1\nattention_resolutions = [1]\n"
    "num_heads = 2\ntransformer_depth = 2\ncontext_dim = 32\n"
    "[clip]\nwidth = 32\nlayers = 3\nheads = 2\nvocab_size = 1000\n"
    "[vae]\nch = 32\nch_mult = [1, 2]\nnum_res_blocks = 1\nattn_resolutions = []\nresolution = 32\n";
static const char SD2_CFG[] =
    "family = \"sd2\"\nparameterization = \"v\"\n"
    "[unet]\nmodel_channels = 32\nchannel_mult = [1, 1]\nnum_res_blocks = 1\nattention_resolutions = [2]\n"
    "num_head_channels = 16\ncontext_dim = 48\nuse_linear_in_transformer = true\n"
    "[clip]\nwidth = 32\nlayers = 4\nheads = 4\nvocab_size = 1000\n"
    "[vae]\nch = 32\nch_mult = [1, 2]\nnum_res_blocks = 1\nattn_resolutions = []\nresolution = 32\n";

/* ---- helpers shared by the tests and the CLI helper ------------------------------------------ */

static int combine(const char *out, char **in, int n)
{
    sd_safetensors *st[8] = { 0 };
    sd_safetensors_writer *w = NULL;
    int rc = n > 8 ? sd_err(SD_EINVAL, "too many inputs") : sd_safetensors_writer_new(&w);
    for (int i = 0; i < n && !rc; i++) {
        rc = sd_safetensors_open(in[i], &st[i]);
        for (size_t k = 0; !rc && k < sd_safetensors_count(st[i]); k++) {
            const sd_st_tensor *t = sd_safetensors_at(st[i], k);
            if (!strncmp(t->name, "golden.", 7) || !strncmp(t->name, "grad.", 5)) continue;
            rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL);
        }
    }
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    sd_safetensors_writer_free(w);
    for (int i = 0; i < n; i++) sd_safetensors_close(st[i]);
    return rc;
}

static int drop(const char *out, const char *in, const char *name)
{
    sd_safetensors *st = NULL;
    sd_safetensors_writer *w = NULL;
    int rc = sd_safetensors_open(in, &st), found = 0;
    if (!rc) rc = sd_safetensors_writer_new(&w);
    for (size_t k = 0; !rc && k < sd_safetensors_count(st); k++) {
        const sd_st_tensor *t = sd_safetensors_at(st, k);
        if (!strcmp(t->name, name)) { found = 1; continue; }
        rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL);
    }
    if (!rc && !found) rc = sd_err(SD_ENOTFOUND, "%s: no tensor %s", in, name);
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    sd_safetensors_writer_free(w);
    sd_safetensors_close(st);
    return rc;
}

static int read_npy_f32(const char *path, sd_npy_array *a)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = sd_read_file(path, 0, &buf, &n);
    if (!rc) rc = sd_npy_load(buf, n, a);
    free(buf);
    if (!rc && a->dtype != SD_NPY_F4) rc = sd_err(SD_EFORMAT, "%s: not float32", path);
    return rc;
}

static int golden_f32(const char *file, const char *name, float **out, int64_t *numel, int *ndim, int64_t *shape)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(file, &st);
    if (rc) return rc;
    const sd_st_tensor *t;
    rc = sd_safetensors_get(st, name, &t);
    if (!rc) {
        *out = malloc((size_t)t->numel * 4 + 4);
        *numel = t->numel;
        if (ndim) *ndim = t->ndim;
        if (shape) memcpy(shape, t->shape, sizeof t->shape);
        rc = sd_safetensors_read(st, t, SD_ST_F32, *out, (size_t)t->numel);
    }
    sd_safetensors_close(st);
    return rc;
}

static double rel_diff(const float *a, const float *b, int64_t n, const char *ignore)
{
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ignore && ignore[i]) continue;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || d != d) md = d;
        if (fabs((double)b[i]) > mr) mr = fabs((double)b[i]);
    }
    return mr > 0 ? md / mr : md;
}

static int cmd_golden(const char *file, const char *name, const char *out)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(file, &st);
    if (rc) return rc;
    const sd_st_tensor *t;
    rc = sd_safetensors_get(st, name, &t);
    void *buf = NULL, *enc = NULL;
    size_t n = 0;
    if (!rc) {
        int is_int = t->dtype == SD_ST_I32 || t->dtype == SD_ST_I64;
        buf = malloc((size_t)t->numel * 4 + 4);
        rc = sd_safetensors_read(st, t, is_int ? SD_ST_I32 : SD_ST_F32, buf, (size_t)t->numel);
        if (!rc) rc = sd_npy_encode(is_int ? SD_NPY_I4 : SD_NPY_F4, t->ndim, t->shape, buf, &enc, &n);
        if (!rc) rc = sd_write_file_atomic(out, enc, n);
    }
    free(buf);
    free(enc);
    sd_safetensors_close(st);
    return rc;
}

static int cmd_cmp(const char *npy, const char *file, const char *name, char **ign, int nign)
{
    sd_npy_array a;
    float *ref = NULL;
    int64_t n = 0, shape[SD_ST_MAX_DIMS];
    int nd = 0;
    int rc = read_npy_f32(npy, &a);
    if (rc) return rc;
    rc = golden_f32(file, name, &ref, &n, &nd, shape);
    if (!rc && ((int64_t)a.count != n || a.ndim != nd || memcmp(a.shape, shape, (size_t)nd * sizeof *shape)))
        rc = sd_err(SD_EFORMAT, "%s: shape differs from %s", npy, name);
    char *ignore = NULL;
    if (!rc && nign) {
        ignore = calloc((size_t)n, 1);
        for (int i = 0; i < nign; i++) {
            long k = atol(ign[i]);
            if (k >= 0 && k < n) ignore[k] = 1;
        }
    }
    if (!rc) {
        double d = rel_diff(a.data, ref, n, ignore);
        printf("%s vs %s: max rel diff %.3g\n", npy, name, d);
        if (!(d <= 1e-4)) rc = sd_err(SD_ERANGE, "%s: max rel diff %.3g > 1e-4", npy, d);
    }
    free(ignore);
    free(ref);
    sd_npy_array_free(&a);
    return rc;
}

static int cmd_same(const char *fa, const char *fb, const char *prefix)
{
    sd_safetensors *A = NULL, *B = NULL;
    int rc = sd_safetensors_open(fa, &A);
    if (!rc) rc = sd_safetensors_open(fb, &B);
    size_t count = 0;
    for (size_t i = 0; !rc && i < sd_safetensors_count(A); i++) {
        const sd_st_tensor *t = sd_safetensors_at(A, i);
        if (strncmp(t->name, prefix, strlen(prefix))) continue;
        const sd_st_tensor *u = sd_safetensors_find(B, t->name);
        if (!u) { rc = sd_err(SD_ENOTFOUND, "%s: no tensor %s", fb, t->name); break; }
        /* 1×1-conv and linear spellings are the same numbers */
        if (u->numel != t->numel) { rc = sd_err(SD_EFORMAT, "%s: %s has another size", fb, t->name); break; }
        float *x = malloc((size_t)t->numel * 4 + 4), *y = malloc((size_t)t->numel * 4 + 4);
        rc = sd_safetensors_read(A, t, SD_ST_F32, x, (size_t)t->numel);
        if (!rc) rc = sd_safetensors_read(B, u, SD_ST_F32, y, (size_t)t->numel);
        if (!rc && memcmp(x, y, (size_t)t->numel * 4)) rc = sd_err(SD_EFORMAT, "%s: values differ", t->name);
        free(x);
        free(y);
        count++;
    }
    if (!rc && !count) rc = sd_err(SD_ENOTFOUND, "%s: no tensor under '%s'", fa, prefix);
    if (!rc) printf("%zu tensors under '%s' equal\n", count, prefix);
    sd_safetensors_close(A);
    sd_safetensors_close(B);
    return rc;
}

static int cmd_expect(const char *file, const char *expect)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(file, &st);
    if (rc) return rc;
    FILE *f = fopen(expect, "r");
    if (!f) {
        sd_safetensors_close(st);
        return sd_err(SD_EIO, "%s: cannot open", expect);
    }
    char line[8192];
    size_t nt = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        char kind[4], name[512], dt[16], shape[256], hex[4096];
        if (line[0] == 'M') {
            char *k = line + 2, *v = strchr(k, ' ');
            if (!v) continue;
            *v++ = 0;
            v[strcspn(v, "\n")] = 0;
            const char *got = sd_safetensors_meta_get(st, k);
            if (!got || strcmp(got, v)) rc = sd_err(SD_EFORMAT, "metadata %s: '%s', expected '%s'", k, got ? got : "(none)", v);
            continue;
        }
        if (sscanf(line, "%3s %511s %15s %255s %4095s", kind, name, dt, shape, hex) != 5) continue;
        nt++;
        const sd_st_tensor *t = sd_safetensors_find(st, name);
        if (!t) { rc = sd_err(SD_ENOTFOUND, "no tensor %s", name); break; }
        if (strcmp(sd_st_dtype_name(t->dtype), dt)) { rc = sd_err(SD_EFORMAT, "%s: dtype %s, expected %s", name, sd_st_dtype_name(t->dtype), dt); break; }
        char sh[256] = "";
        for (int d = 0; d < t->ndim; d++) snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%s%lld", d ? "," : "", (long long)t->shape[d]);
        if (!t->ndim) strcpy(sh, "-");
        if (strcmp(sh, shape)) { rc = sd_err(SD_EFORMAT, "%s: shape %s, expected %s", name, sh, shape); break; }
        char *h = malloc(t->nbytes * 2 + 2);
        sd_hex(t->data, t->nbytes, h);
        if (!t->nbytes) strcpy(h, "-");
        if (strcmp(h, hex)) rc = sd_err(SD_EFORMAT, "%s: bytes differ", name);
        free(h);
    }
    fclose(f);
    if (!rc && nt != sd_safetensors_count(st))
        rc = sd_err(SD_EFORMAT, "%s: %zu tensors, expected %zu", file, sd_safetensors_count(st), nt);
    if (!rc) printf("%zu tensors as expected\n", nt);
    sd_safetensors_close(st);
    return rc;
}

static int cmd_dtypes(const char *file)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(file, &st);
    if (rc) return rc;
    for (size_t i = 0; i < sd_safetensors_count(st); i++)
        printf("%s %s\n", sd_safetensors_at(st, i)->name, sd_st_dtype_name(sd_safetensors_at(st, i)->dtype));
    sd_safetensors_close(st);
    return SD_OK;
}

/* ---- a torch.save zip written by hand (protocol 2, as torch 1.13 writes it) ------------------ */

typedef struct pk {
    unsigned char *b;
    size_t n, cap;
} pk;

static void pk_put(pk *p, const void *d, size_t n)
{
    if (p->n + n > p->cap) {
        p->cap = (p->n + n) * 2 + 256;
        p->b = realloc(p->b, p->cap);
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static void pk_op(pk *p, char c) { pk_put(p, &c, 1); }
static void pk_str(pk *p, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    pk_op(p, 'X');
    pk_put(p, &n, 4);
    pk_put(p, s, n);
}
static void pk_int(pk *p, int64_t v)
{
    int32_t x = (int32_t)v;
    pk_op(p, 'J');
    pk_put(p, &x, 4);
}
static void pk_global(pk *p, const char *mod, const char *name)
{
    pk_op(p, 'c');
    pk_put(p, mod, strlen(mod));
    pk_op(p, '\n');
    pk_put(p, name, strlen(name));
    pk_op(p, '\n');
}

static int mkckpt(const char *out, const char *in)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(in, &st);
    if (rc) return rc;
    size_t n = sd_safetensors_count(st);
    pk p = { 0 };
    pk_put(&p, "\x80\x02", 2);
    pk_op(&p, '}');
    pk_op(&p, '(');
    pk_str(&p, "state_dict");
    pk_op(&p, '}');
    pk_op(&p, '(');
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        const char *storage = t->dtype == SD_ST_F16 ? "HalfStorage" : t->dtype == SD_ST_BF16 ? "BFloat16Storage"
                              : t->dtype == SD_ST_I32 ? "IntStorage" : t->dtype == SD_ST_I64 ? "LongStorage" : "FloatStorage";
        char key[32];
        snprintf(key, sizeof key, "%zu", i);
        pk_str(&p, t->name);
        pk_global(&p, "torch._utils", "_rebuild_tensor_v2");
        pk_op(&p, '(');
        pk_op(&p, '(');
        pk_str(&p, "storage");
        pk_global(&p, "torch", storage);
        pk_str(&p, key);
        pk_str(&p, "cpu");
        pk_int(&p, t->numel);
        pk_op(&p, 't');
        pk_op(&p, 'Q');
        pk_int(&p, 0);
        pk_op(&p, '(');
        for (int d = 0; d < t->ndim; d++) pk_int(&p, t->shape[d]);
        pk_op(&p, 't');
        pk_op(&p, '(');
        int64_t stride = 1, strides[SD_ST_MAX_DIMS];
        for (int d = t->ndim - 1; d >= 0; d--) strides[d] = stride, stride *= t->shape[d];
        for (int d = 0; d < t->ndim; d++) pk_int(&p, strides[d]);
        pk_op(&p, 't');
        pk_op(&p, (char)0x89);
        pk_global(&p, "collections", "OrderedDict");
        pk_op(&p, ')');
        pk_op(&p, 'R');
        pk_op(&p, 't');
        pk_op(&p, 'R');
    }
    pk_op(&p, 'u');
    pk_str(&p, "global_step");
    pk_int(&p, 1234);
    pk_op(&p, 'u');
    pk_op(&p, '.');
    FILE *fp = fopen(out, "wb");
    if (!fp) {
        free(p.b);
        sd_safetensors_close(st);
        return sd_err(SD_EIO, "%s: cannot create", out);
    }
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, fp, 0);
    sd_zip_part part = { p.b, p.n };
    rc = sd_zip_add(&zw, "archive/data.pkl", SD_ZIP_STORE, &part, 1);
    for (size_t i = 0; i < n && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        char name[64];
        snprintf(name, sizeof name, "archive/data/%zu", i);
        sd_zip_part dp = { t->data, t->nbytes };
        rc = sd_zip_add(&zw, name, SD_ZIP_STORE, &dp, 1);
    }
    sd_zip_part vp = { "3\n", 2 };
    if (!rc) rc = sd_zip_add(&zw, "archive/version", SD_ZIP_STORE, &vp, 1);
    if (!rc) rc = sd_zip_writer_finish(&zw, NULL, NULL);
    sd_zip_writer_free(&zw);
    if (fclose(fp) && !rc) rc = sd_err(SD_EIO, "%s: write error", out);
    free(p.b);
    sd_safetensors_close(st);
    return rc;
}

/* ---- an SD2 tiny Diffusers folder ------------------------------------------------------------ */

static int copy_file(const char *from, const char *to)
{
    char *d = NULL;
    size_t n = 0;
    int rc = sd_read_file(from, 0, &d, &n);
    if (!rc) rc = sd_write_file_atomic(to, d, n);
    free(d);
    return rc;
}

static int mkdiffusers(const char *dir)
{
    char p[1024];
    int rc = SD_OK;
    const char *sub[3] = { "unet", "text_encoder", "vae" };
    for (int i = 0; i < 3 && !rc; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, sub[i]);
        rc = sd_mkdirs(p);
    }
    if (rc) return rc;
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    if ((rc = copy_file(root_path(G_UNET2D), p))) return rc;
    /* the config.json files Diffusers writes (the keys that matter) */
    static const char *const cj[3] = {
        "{\"_class_name\": \"UNet2DConditionModel\", \"block_out_channels\": [32, 32], \"layers_per_block\": 1,\n"
        " \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\"], \"cross_attention_dim\": 48,\n"
        " \"attention_head_dim\": [2, 2], \"use_linear_projection\": true, \"in_channels\": 4, \"out_channels\": 4}\n",
        "{\"architectures\": [\"CLIPTextModel\"], \"hidden_size\": 32, \"num_hidden_layers\": 3, \"num_attention_heads\": 4,\n"
        " \"max_position_embeddings\": 77, \"vocab_size\": 1000, \"hidden_act\": \"gelu\"}\n",
        "{\"_class_name\": \"AutoencoderKL\", \"block_out_channels\": [32, 64], \"layers_per_block\": 1,\n"
        " \"latent_channels\": 4, \"in_channels\": 3, \"out_channels\": 3, \"scaling_factor\": 0.18215}\n",
    };
    for (int i = 0; i < 3 && !rc; i++) {
        snprintf(p, sizeof p, "%s/%s/config.json", dir, sub[i]);
        rc = sd_write_file_atomic(p, cj[i], strlen(cj[i]));
    }
    if (rc) return rc;
    /* text encoder: the SD2 golden one loaded (OpenCLIP names) and saved with HF names */
    const char *cfg = t_path("mkdiffusers_sd2.toml");
    t_write_file(cfg, SD2_CFG, strlen(SD2_CFG));
    sd_model m;
    sd_model_opts o = { .parts = SD_MODEL_TE, .config = cfg, .v_param = -1 };
    rc = sd_model_open(&m, root_path(G_CLIP2), &o);
    if (!rc) rc = sd_model_load(&m, SD_DEV_CPU);
    sd_safetensors_writer *w = NULL;
    if (!rc) rc = sd_safetensors_writer_new(&w);
    for (size_t i = 0; !rc && i < sd_params_count(&m.te_params); i++) {
        const sd_param *q = sd_params_at(&m.te_params, i);
        rc = sd_safetensors_writer_add_f32(w, q->key + strlen("cond_stage_model.transformer."), SD_ST_F32,
                                           q->value.ndim, q->value.shape, q->value.data);
    }
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", dir);
    if (!rc) rc = sd_safetensors_writer_write(w, p);
    sd_safetensors_writer_free(w);
    sd_model_close(&m);
    if (rc) return rc;
    /* VAE: the golden ldm tensors under their Diffusers names (kohya's table, new attention names) */
    sd_safetensors *st;
    if ((rc = sd_safetensors_open(root_path(G_VAE), &st))) return rc;
    FILE *kf = fopen(root_path(G_VAE_KEYS), "r");
    if (!kf) rc = sd_err(SD_EIO, "cannot open %s", G_VAE_KEYS);
    if (!rc) rc = sd_safetensors_writer_new(&w);
    char line[1024];
    size_t used = 0;
    while (!rc && kf && fgets(line, sizeof line, kf)) {
        char ldm[400], dif[400], old[400], full[512];
        if (sscanf(line, "%399s %399s %399s", ldm, dif, old) != 3) continue;
        snprintf(full, sizeof full, "first_stage_model.%s", ldm);
        const sd_st_tensor *t = sd_safetensors_find(st, full);
        if (!t) { rc = sd_err(SD_ENOTFOUND, "no %s", full); break; }
        rc = sd_safetensors_writer_add(w, dif, t->dtype, t->ndim, t->shape, t->data);
        used++;
    }
    if (kf) fclose(kf);
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", dir);
    if (!rc) rc = sd_safetensors_writer_write(w, p);
    sd_safetensors_writer_free(w);
    sd_safetensors_close(st);
    return rc;
}

static int mkclip(const char *fam, const char *out)
{
    int sd2 = !strcmp(fam, "sd2");
    sd_clip_config cfg = { 32, sd2 ? 3 : 2, 2, 77, 49408, 0 };
    sd_params r;
    sd_clip m;
    sd_params_init(&r);
    int rc = sd_clip_init(&m, &r, sd2 ? "" : "cond_stage_model.transformer", &cfg, sd2 ? SD_FAMILY_SD2 : SD_FAMILY_SD1);
    if (!rc) rc = sd_params_alloc(&r, SD_DEV_CPU);
    sd_safetensors_writer *w = NULL;
    if (!rc) rc = sd_safetensors_writer_new(&w);
    uint64_t x = 12345;
    for (size_t i = 0; !rc && i < sd_params_count(&r); i++) {
        sd_param *p = sd_params_at(&r, i);
        float *v = p->value.data;
        int norm_w = strstr(p->key, "norm") && strstr(p->key, ".weight");
        for (int64_t k = 0; k < sd_tensor_numel(&p->value); k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            float u = (float)((x >> 40) & 0xffff) / 65536.0f - 0.5f;
            v[k] = norm_w ? 1.0f + 0.2f * u : 0.2f * u;
        }
        rc = sd_safetensors_writer_add_f32(w, p->key, SD_ST_F32, p->value.ndim, p->value.shape, v);
    }
    if (!rc) rc = sd_safetensors_writer_write(w, out);
    sd_safetensors_writer_free(w);
    sd_clip_free(&m);
    sd_params_free(&r);
    return rc;
}

static int mkids(const char *out, char **v, int n)
{
    if (n < 77 || n % 77) return sd_err(SD_EINVAL, "ids: %d ids, need a multiple of 77", n);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = atoll(v[i]);
    void *enc = NULL;
    size_t len = 0;
    int rc = n == 77 ? sd_npy_encode(SD_NPY_I8, 2, (int64_t[]){ 1, 77 }, ids, &enc, &len)
                     : sd_npy_encode(SD_NPY_I8, 3, (int64_t[]){ 1, n / 77, 77 }, ids, &enc, &len);
    if (!rc) rc = sd_write_file_atomic(out, enc, len);
    free(enc);
    free(ids);
    return rc;
}

/* ---- SDXL helpers ------------------------------------------------------------------------------ */

/* npy vs cat(golden A, golden B) on the last axis, max|Δ| ≤ 1e-4·max|ref| */
static int cmd_cmpcat(const char *npy, const char *file, const char *na, const char *nb)
{
    sd_npy_array a;
    float *ra = NULL, *rb = NULL, *ref = NULL;
    int64_t n1 = 0, n2 = 0, s1[SD_ST_MAX_DIMS], s2[SD_ST_MAX_DIMS];
    int d1 = 0, d2 = 0;
    int rc = read_npy_f32(npy, &a);
    if (rc) return rc;
    if (!(rc = golden_f32(file, na, &ra, &n1, &d1, s1))) rc = golden_f32(file, nb, &rb, &n2, &d2, s2);
    if (!rc && (d1 != d2 || d1 < 1 || memcmp(s1, s2, (size_t)(d1 - 1) * sizeof *s1)))
        rc = sd_err(SD_EFORMAT, "%s and %s: shapes do not concatenate", na, nb);
    int64_t w1 = rc ? 1 : s1[d1 - 1], w2 = rc ? 1 : s2[d1 - 1], rows = rc ? 0 : n1 / w1;
    if (!rc && ((int64_t)a.count != n1 + n2 || a.ndim != d1 || memcmp(a.shape, s1, (size_t)(d1 - 1) * sizeof *s1) ||
                a.shape[d1 - 1] != w1 + w2))
        rc = sd_err(SD_EFORMAT, "%s: shape differs from cat(%s, %s)", npy, na, nb);
    if (!rc) {
        ref = malloc((size_t)(n1 + n2) * sizeof *ref);
        for (int64_t r = 0; r < rows; r++) {
            memcpy(ref + r * (w1 + w2), ra + r * w1, (size_t)w1 * sizeof *ref);
            memcpy(ref + r * (w1 + w2) + w1, rb + r * w2, (size_t)w2 * sizeof *ref);
        }
        double d = rel_diff(a.data, ref, n1 + n2, NULL);
        printf("%s vs cat(%s, %s): max rel diff %.3g\n", npy, na, nb, d);
        if (!(d <= 1e-4)) rc = sd_err(SD_ERANGE, "%s: max rel diff %.3g > 1e-4", npy, d);
    }
    free(ra);
    free(rb);
    free(ref);
    sd_npy_array_free(&a);
    return rc;
}

/* OUT.npy: f32 array of shape D... with v[i] = scale·sin(0.37·i + phase) */
static int cmd_arr(const char *out, double scale, double phase, char **dims, int nd)
{
    int64_t sh[8], n = 1;
    if (nd < 1 || nd > 8) return sd_err(SD_EINVAL, "arr: 1 to 8 dimensions");
    for (int i = 0; i < nd; i++) n *= sh[i] = atoll(dims[i]);
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)(scale * sin(0.37 * (double)i + phase));
    void *enc = NULL;
    size_t len = 0;
    int rc = sd_npy_encode(SD_NPY_F4, nd, sh, v, &enc, &len);
    if (!rc) rc = sd_write_file_atomic(out, enc, len);
    free(enc);
    free(v);
    return rc;
}

/* OUT.npy = IN.npy[..., LO:HI] (f32) */
static int cmd_slice(const char *in, const char *out, int64_t lo, int64_t hi)
{
    sd_npy_array a;
    int rc = read_npy_f32(in, &a);
    if (rc) return rc;
    int64_t w = a.shape[a.ndim - 1], rows = w ? (int64_t)a.count / w : 0;
    if (!(lo >= 0 && lo < hi && hi <= w)) rc = sd_err(SD_EINVAL, "slice %" PRId64 ":%" PRId64 " of %" PRId64, lo, hi, w);
    float *v = rc ? NULL : malloc((size_t)(rows * (hi - lo)) * sizeof *v);
    for (int64_t r = 0; !rc && r < rows; r++)
        memcpy(v + r * (hi - lo), (const float *)a.data + r * w + lo, (size_t)(hi - lo) * sizeof *v);
    int64_t sh[8];
    memcpy(sh, a.shape, (size_t)a.ndim * sizeof *sh);
    sh[a.ndim - 1] = hi - lo;
    void *enc = NULL;
    size_t len = 0;
    if (!rc) rc = sd_npy_encode(SD_NPY_F4, a.ndim, sh, v, &enc, &len);
    if (!rc) rc = sd_write_file_atomic(out, enc, len);
    free(enc);
    free(v);
    sd_npy_array_free(&a);
    return rc;
}

/* An SDXL Diffusers folder (unet/, text_encoder/, text_encoder_2/ with Diffusers / HF names and
 * config.json files as Diffusers and transformers write them) from the tiny SDXL single file of
 * examples/tiny_sdxl.toml. No vae/: lib/models/vae.h has no public ldm → Diffusers name map. */
static int mkdiffusersxl(const char *single, const char *cfg, const char *dir)
{
    static const char *const sub[3] = { "unet", "text_encoder", "text_encoder_2" };
    static const char *const cj[3] = {
        "{\"_class_name\": \"UNet2DConditionModel\", \"_diffusers_version\": \"0.19.0.dev0\", \"act_fn\": \"silu\",\n"
        " \"addition_embed_type\": \"text_time\", \"addition_embed_type_num_heads\": 64, \"addition_time_embed_dim\": 256,\n"
        " \"attention_head_dim\": [2, 4], \"block_out_channels\": [32, 64], \"center_input_sample\": false,\n"
        " \"class_embed_type\": null, \"class_embeddings_concat\": false, \"conv_in_kernel\": 3, \"conv_out_kernel\": 3,\n"
        " \"cross_attention_dim\": 64, \"cross_attention_norm\": null,\n"
        " \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\"], \"downsample_padding\": 1,\n"
        " \"dual_cross_attention\": false, \"encoder_hid_dim\": null, \"encoder_hid_dim_type\": null,\n"
        " \"flip_sin_to_cos\": true, \"freq_shift\": 0, \"in_channels\": 4, \"layers_per_block\": 1,\n"
        " \"mid_block_only_cross_attention\": null, \"mid_block_scale_factor\": 1, \"mid_block_type\": \"UNetMidBlock2DCrossAttn\",\n"
        " \"norm_eps\": 1e-05, \"norm_num_groups\": 32, \"num_attention_heads\": null, \"num_class_embeds\": null,\n"
        " \"only_cross_attention\": false, \"out_channels\": 4, \"projection_class_embeddings_input_dim\": 1552,\n"
        " \"resnet_out_scale_factor\": 1.0, \"resnet_skip_time_act\": false, \"resnet_time_scale_shift\": \"default\",\n"
        " \"sample_size\": 128, \"time_cond_proj_dim\": null, \"time_embedding_act_fn\": null, \"time_embedding_dim\": null,\n"
        " \"time_embedding_type\": \"positional\", \"timestep_post_act\": null, \"transformer_layers_per_block\": [1, 2],\n"
        " \"up_block_types\": [\"CrossAttnUpBlock2D\", \"UpBlock2D\"], \"upcast_attention\": null, \"use_linear_projection\": true}\n",
        "{\"architectures\": [\"CLIPTextModel\"], \"attention_dropout\": 0.0, \"bos_token_id\": 0, \"dropout\": 0.0,\n"
        " \"eos_token_id\": 2, \"hidden_act\": \"quick_gelu\", \"hidden_size\": 32, \"initializer_factor\": 1.0,\n"
        " \"initializer_range\": 0.02, \"intermediate_size\": 128, \"layer_norm_eps\": 1e-05,\n"
        " \"max_position_embeddings\": 77, \"model_type\": \"clip_text_model\", \"num_attention_heads\": 2,\n"
        " \"num_hidden_layers\": 2, \"pad_token_id\": 1, \"projection_dim\": 768, \"torch_dtype\": \"float16\",\n"
        " \"transformers_version\": \"4.32.0.dev0\", \"vocab_size\": 49408}\n",
        "{\"architectures\": [\"CLIPTextModelWithProjection\"], \"attention_dropout\": 0.0, \"bos_token_id\": 0,\n"
        " \"dropout\": 0.0, \"eos_token_id\": 2, \"hidden_act\": \"gelu\", \"hidden_size\": 32, \"initializer_factor\": 1.0,\n"
        " \"initializer_range\": 0.02, \"intermediate_size\": 128, \"layer_norm_eps\": 1e-05,\n"
        " \"max_position_embeddings\": 77, \"model_type\": \"clip_text_model\", \"num_attention_heads\": 2,\n"
        " \"num_hidden_layers\": 3, \"pad_token_id\": 1, \"projection_dim\": 16, \"torch_dtype\": \"float16\",\n"
        " \"transformers_version\": \"4.32.0.dev0\", \"vocab_size\": 49408}\n",
    };
    static const char *const te_prefix[2] = { "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model." };
    char p[1024];
    int rc = SD_OK;
    for (int i = 0; i < 3 && !rc; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, sub[i]);
        if (!(rc = sd_mkdirs(p))) {
            snprintf(p, sizeof p, "%s/%s/config.json", dir, sub[i]);
            rc = sd_write_file_atomic(p, cj[i], strlen(cj[i]));
        }
    }
    if (rc) return rc;
    sd_model m;
    sd_model_opts o = { .parts = SD_MODEL_UNET | SD_MODEL_TE, .config = cfg, .v_param = -1 };
    if ((rc = sd_model_open(&m, single, &o)) || (rc = sd_model_load(&m, SD_DEV_CPU))) {
        sd_model_close(&m);
        return rc;
    }
    sd_safetensors_writer *w[3] = { NULL, NULL, NULL };
    for (int i = 0; i < 3 && !rc; i++) rc = sd_safetensors_writer_new(&w[i]);
    const char *up = "model.diffusion_model.";
    for (size_t i = 0; !rc && i < sd_params_count(&m.unet_params); i++) {
        const sd_param *q = sd_params_at(&m.unet_params, i);
        char dn[512];
        if (strncmp(q->key, up, strlen(up))) rc = sd_err(SD_EINVAL, "UNet key %s", q->key);
        if (!rc) rc = sd_unet_name_to_diffusers(&m.unet, q->key + strlen(up), dn, sizeof dn);
        if (!rc) rc = sd_safetensors_writer_add_f32(w[0], dn, SD_ST_F32, q->value.ndim, q->value.shape, q->value.data);
    }
    for (size_t i = 0; !rc && i < sd_params_count(&m.te_params); i++) {
        const sd_param *q = sd_params_at(&m.te_params, i);
        int k = !strncmp(q->key, te_prefix[0], strlen(te_prefix[0])) ? 0
              : !strncmp(q->key, te_prefix[1], strlen(te_prefix[1])) ? 1 : -1;
        if (k < 0) rc = sd_err(SD_EINVAL, "text encoder key %s", q->key);
        else rc = sd_safetensors_writer_add_f32(w[1 + k], q->key + strlen(te_prefix[k]), SD_ST_F32, q->value.ndim,
                                                q->value.shape, q->value.data);
    }
    static const char *const file[3] = { "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                                         "text_encoder_2/model.safetensors" };
    for (int i = 0; i < 3 && !rc; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, file[i]);
        rc = sd_safetensors_writer_write(w[i], p);
    }
    for (int i = 0; i < 3; i++) sd_safetensors_writer_free(w[i]);
    sd_model_close(&m);
    return rc;
}

/* Both models opened (UNet + text encoders; B without --model_config when CFG_B is "") and every
 * registered parameter compared: the same keys, shapes and f32 values. */
static int cmd_samemodel(const char *pa, const char *cfg_a, const char *pb, const char *cfg_b)
{
    sd_model A, B;
    memset(&A, 0, sizeof A);
    memset(&B, 0, sizeof B);
    sd_model_opts oa = { .parts = SD_MODEL_UNET | SD_MODEL_TE, .config = *cfg_a ? cfg_a : NULL, .v_param = -1 };
    sd_model_opts ob = { .parts = SD_MODEL_UNET | SD_MODEL_TE, .config = *cfg_b ? cfg_b : NULL, .v_param = -1 };
    int rc = sd_model_open(&A, pa, &oa);
    if (!rc) rc = sd_model_open(&B, pb, &ob);
    if (!rc) rc = sd_model_load(&A, SD_DEV_CPU);
    if (!rc) rc = sd_model_load(&B, SD_DEV_CPU);
    size_t count = 0;
    const sd_params *ra[2] = { &A.unet_params, &A.te_params }, *rb[2] = { &B.unet_params, &B.te_params };
    for (int c = 0; c < 2 && !rc; c++) {
        if (sd_params_count(ra[c]) != sd_params_count(rb[c]))
            rc = sd_err(SD_EFORMAT, "%zu vs %zu parameters", sd_params_count(ra[c]), sd_params_count(rb[c]));
        for (size_t i = 0; !rc && i < sd_params_count(ra[c]); i++) {
            const sd_param *p = sd_params_at(ra[c], i), *q = sd_params_at(rb[c], i);
            if (strcmp(p->key, q->key)) rc = sd_err(SD_EFORMAT, "parameter %zu: %s vs %s", i, p->key, q->key);
            else if (p->value.dtype != SD_F32 || q->value.dtype != SD_F32 || p->value.ndim != q->value.ndim ||
                     memcmp(p->value.shape, q->value.shape, (size_t)p->value.ndim * sizeof *p->value.shape) ||
                     memcmp(p->value.data, q->value.data, (size_t)sd_tensor_numel(&p->value) * 4))
                rc = sd_err(SD_EFORMAT, "%s differs", p->key);
            count++;
        }
    }
    if (!rc && (A.cfg.family != B.cfg.family || !B.have_clip2))
        rc = sd_err(SD_EFORMAT, "family %d vs %d, clip2 %d", A.cfg.family, B.cfg.family, B.have_clip2);
    if (!rc) printf("%zu parameters equal\n", count);
    sd_model_close(&A);
    sd_model_close(&B);
    return rc;
}

/* ---- unit tests ------------------------------------------------------------------------------- */

static const char *cfg_file(const char *name, const char *text)
{
    const char *p = t_path(name);
    t_write_file(p, text, strlen(text));
    return p;
}

static const char *sd1_full(void)
{
    static char path[512];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s", t_path("sd1_full.safetensors"));
        char *in[3] = { (char *)root_path(G_UNET1), (char *)root_path(G_CLIP1), (char *)root_path(G_VAE) };
        if (combine(path, in, 3)) printf("# combine: %s\n", sd_errmsg());
    }
    return path;
}

#define CK(x) do { int rc_ = (x); if (rc_) { printf("#   %s:%d: %s: %s\n", __FILE__, __LINE__, #x, sd_errmsg()); \
    t_cur_fail++; goto done; } } while (0)

/* clip forward of the loaded model against a golden output */
static void check_clip(sd_model *m, const char *gfile, const char *name, int skip)
{
    float *ref = NULL;
    int64_t n, shape[SD_ST_MAX_DIMS];
    int nd;
    sd_ctx ctx;
    sd_tensor ids = { 0 }, y = { 0 };
    int have_ctx = 0;
    float *fid = NULL;
    int64_t nid, ish[SD_ST_MAX_DIMS];
    int ind;
    CK(golden_f32(root_path(gfile), name, &ref, &n, &nd, shape));
    CK(golden_f32(root_path(gfile), "golden.ids", &fid, &nid, &ind, ish));
    CK(sd_tensor_alloc(&ids, SD_I32, ind, ish));
    for (int64_t i = 0; i < nid; i++) ((int32_t *)ids.data)[i] = (int32_t)fid[i];
    CK(sd_tensor_alloc(&y, SD_F32, nd, shape));
    CK(sd_ctx_init(&ctx, SD_DEV_CPU, 1, 0));
    have_ctx = 1;
    CK(sd_clip_forward(&ctx, &m->clip, NULL, &y, &ids, skip));
    double d = rel_diff(y.data, ref, n, NULL);
    T_CHECKF(d <= 1e-4, "%s: %.3g", name, d);
done:
    if (have_ctx) sd_ctx_free(&ctx);
    sd_tensor_free(&ids);
    sd_tensor_free(&y);
    free(ref);
    free(fid);
}

static void test_single_file(void)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    const char *cfg = cfg_file("sd1.toml", SD1_CFG);
    sd_model_opts o = { .config = cfg, .v_param = -1 };
    CK(sd_model_open(&m, sd1_full(), &o));
    T_EQ_INT(m.format, SD_MODEL_FMT_SAFETENSORS);
    T_EQ_INT(m.present, SD_MODEL_ALL);
    T_EQ_INT(m.parts, SD_MODEL_ALL);
    T_EQ_INT(m.unet_layout, SD_LAYOUT_LDM);
    T_EQ_INT(m.te_layout, SD_LAYOUT_LDM);
    T_EQ_INT(m.vae_layout, SD_LAYOUT_LDM);
    T_EQ_INT(m.detected, 0);
    T_EQ_INT(m.cfg.family, SD_FAMILY_SD1);
    CK(sd_model_load(&m, SD_DEV_CPU));
    sd_model_release_source(&m);
    check_clip(&m, G_CLIP1, "golden.y", 0);
    check_clip(&m, G_CLIP1, "golden.y_skip2", 2);
    /* without a config the tiny shapes are refused, naming the way out */
    sd_model_close(&m);
    o.config = NULL;
    T_CHECK(sd_model_open(&m, sd1_full(), &o) == SD_EUNSUPPORTED);
    T_CHECKF(strstr(sd_errmsg(), "--model_config") != NULL, "%s", sd_errmsg());
done:
    sd_model_close(&m);
}

static void test_inference_setup(void)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    const char *cfg = cfg_file("sd1.toml", SD1_CFG);
    sd_model_opts o = { .config = cfg, .v_param = -1 };
    CK(sd_model_open(&m, sd1_full(), &o));
    T_EQ_INT(sd_model_source_dtype(&m, SD_MODEL_UNET), SD_ST_F16);
    T_EQ_INT(sd_model_source_dtype(&m, SD_MODEL_TE), SD_ST_F32);
    T_EQ_INT(sd_model_source_dtype(&m, SD_MODEL_VAE), SD_ST_F16);
    CK(sd_model_set_inference(&m));
    CK(sd_model_load(&m, SD_DEV_CPU));
    T_EQ_INT(m.unet_params.grad_bytes + m.te_params.grad_bytes + m.vae_params.grad_bytes, 0);
    const sd_param *p = sd_params_find(&m.unet_params, "model.diffusion_model.input_blocks.0.0.weight");
    T_CHECK(p && p->value.dtype == SD_F16);
    p = sd_params_find(&m.te_params, "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight");
    T_CHECK(p && p->value.dtype == SD_F32);
    /* the outputs do not change */
    check_clip(&m, G_CLIP1, "golden.y", 0);
done:
    sd_model_close(&m);
}

static void test_missing_component(void)
{
    sd_model m;
    const char *cfg = cfg_file("sd1.toml", SD1_CFG);
    sd_model_opts o = { .parts = SD_MODEL_UNET, .config = cfg, .v_param = -1 };
    T_EQ_INT(sd_model_open(&m, root_path(G_VAE), &o), SD_ENOTFOUND);
    T_CHECKF(strstr(sd_errmsg(), "no UNet in this model") != NULL, "%s", sd_errmsg());
    sd_model_close(&m);
    o.parts = SD_MODEL_VAE;
    T_EQ_INT(sd_model_open(&m, root_path(G_CLIP1), &o), SD_ENOTFOUND);
    T_CHECKF(strstr(sd_errmsg(), "--vae") != NULL, "%s", sd_errmsg());
    sd_model_close(&m);
    /* ... which --vae supplies */
    o.vae = root_path(G_VAE);
    T_EQ_INT(sd_model_open(&m, root_path(G_CLIP1), &o), SD_OK);
    T_EQ_INT(m.vae_layout, SD_LAYOUT_LDM);
    T_EQ_INT(sd_model_load(&m, SD_DEV_CPU), SD_OK);
    sd_model_close(&m);
}

static void test_sdxl_refiner_refused(void)
{
    sd_safetensors_writer *w;
    float z[4] = { 0 };
    const char *p = t_path("sdxl_stub.safetensors");
    sd_model m;
    CK(sd_safetensors_writer_new(&w));
    /* the SDXL refiner (OpenCLIP bigG as embedder 0) */
    sd_safetensors_writer_add(w, "conditioner.embedders.0.model.ln_final.weight", SD_ST_F32, 1, (int64_t[]){ 4 }, z);
    sd_safetensors_writer_add(w, "model.diffusion_model.label_emb.0.0.weight", SD_ST_F32, 2, (int64_t[]){ 2, 2 }, z);
    CK(sd_safetensors_writer_write(w, p));
    sd_safetensors_writer_free(w);
    sd_model_opts o = { .v_param = -1, .inspect = 1 };
    T_EQ_INT(sd_model_open(&m, p, &o), SD_EUNSUPPORTED);
    T_CHECKF(strstr(sd_errmsg(), "SDXL refiner") != NULL, "%s", sd_errmsg());
    sd_model_close(&m);
    /* a --model_config does not make it loadable */
    o.config = cfg_file("sd1.toml", SD1_CFG);
    T_EQ_INT(sd_model_open(&m, p, &o), SD_EUNSUPPORTED);
done:
    sd_model_close(&m);
}

/* The sshs_* pair streamed here equals train/lora_file.h's in-memory computation. */
static void test_hashes(void)
{
    const char *files[2] = { G_CLIP1, G_UNET1 };   /* < 1 MiB and > 1.1 MiB */
    for (int i = 0; i < 2; i++) {
        sd_safetensors *st = NULL;
        sd_model_hashes h;
        char mh[65], lh[9], full[65];
        CK(sd_safetensors_open(root_path(files[i]), &st));
        CK(sd_model_file_hashes(root_path(files[i]), st, &h));
        CK(sd_lora_file_hashes_of(st, mh, lh));
        T_EQ_STR(h.sshs_model_hash, mh);
        T_EQ_STR(h.sshs_legacy_hash, lh);
        CK(sd_sha256_file(root_path(files[i]), full));
        T_EQ_STR(h.sha256, full);
        T_EQ_INT(strlen(h.shorthash), 10);
        T_CHECK(!strncmp(h.shorthash, full, 10));
        sd_safetensors_close(st);
    }
    /* A1111's legacy hash of a short file: the hash of nothing */
    sd_model_hashes h;
    CK(sd_model_file_hashes(root_path(G_CLIP1), NULL, &h));
    T_EQ_STR(h.a1111_legacy, "e3b0c442");
    T_EQ_INT(h.have_sshs, 0);
done:;
}

/* registry → writer → file → registry: same numbers (SD1: the names of the source file) */
static void test_writer_roundtrip(void)
{
    sd_model m, r;
    memset(&m, 0, sizeof m);
    memset(&r, 0, sizeof r);
    sd_safetensors_writer *w = NULL;
    const char *cfg = cfg_file("sd1.toml", SD1_CFG);
    const char *out = t_path("sd1_written.safetensors");
    sd_model_opts o = { .config = cfg, .v_param = -1 };
    CK(sd_model_open(&m, sd1_full(), &o));
    CK(sd_model_load(&m, SD_DEV_CPU));
    CK(sd_safetensors_writer_new(&w));
    CK(sd_model_add_to_writer(&m, SD_MODEL_ALL, w, SD_ST_F32));
    CK(sd_safetensors_writer_write(w, out));
    CK(sd_model_open(&r, out, &o));
    CK(sd_model_load(&r, SD_DEV_CPU));
    sd_params *a[3] = { &m.unet_params, &m.te_params, &m.vae_params }, *b[3] = { &r.unet_params, &r.te_params, &r.vae_params };
    for (int k = 0; k < 3; k++) {
        T_EQ_INT(sd_params_count(a[k]), sd_params_count(b[k]));
        for (size_t i = 0; i < sd_params_count(a[k]); i++) {
            const sd_param *p = sd_params_at(a[k], i), *q = sd_params_find(b[k], p->key);
            T_CHECKF(q && !memcmp(p->value.data, q->value.data, sd_tensor_nbytes(&p->value)), "%s", p->key);
        }
    }
    /* every written name is a source name with the source's element count */
    CK(cmd_same(out, sd1_full(), "") );
done:
    sd_safetensors_writer_free(w);
    sd_model_close(&m);
    sd_model_close(&r);
}

static void test_sd2_text_encoder(void)
{
    sd_model m, r;
    memset(&m, 0, sizeof m);
    memset(&r, 0, sizeof r);
    sd_safetensors_writer *w = NULL;
    sd_safetensors *st = NULL;
    const char *cfg = cfg_file("sd2.toml", SD2_CFG);
    const char *out = t_path("sd2_te.safetensors");
    sd_model_opts o = { .parts = SD_MODEL_TE, .config = cfg, .v_param = -1 };
    CK(sd_model_open(&m, root_path(G_CLIP2), &o));
    T_EQ_INT(m.cfg.family, SD_FAMILY_SD2);
    T_EQ_INT(m.cfg.parameterization, SD_PRED_V);
    CK(sd_model_load(&m, SD_DEV_CPU));
    check_clip(&m, G_CLIP2, "golden.y", 0);
    char name[256];
    CK(sd_model_te_file_name(&m, "cond_stage_model.transformer.text_model.encoder.layers.2.mlp.fc1.weight", name, sizeof name));
    T_EQ_STR(name, "cond_stage_model.model.transformer.resblocks.2.mlp.c_fc.weight");
    CK(sd_model_te_file_name(&m, "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", name, sizeof name));
    T_EQ_STR(name, "cond_stage_model.model.positional_embedding");
    CK(sd_model_te_file_name(&m, "cond_stage_model.transformer.text_model.final_layer_norm.bias", name, sizeof name));
    T_EQ_STR(name, "cond_stage_model.model.ln_final.bias");
    CK(sd_safetensors_writer_new(&w));
    CK(sd_model_add_to_writer(&m, SD_MODEL_ALL, w, SD_ST_F32));
    CK(sd_safetensors_writer_write(w, out));
    /* kohya's layout: in_proj merged, the dropped layer 3 = a copy of layer 2, text_projection, logit_scale */
    CK(sd_safetensors_open(out, &st));
    const sd_st_tensor *t = sd_safetensors_find(st, "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight");
    T_CHECK(t && t->ndim == 2 && t->shape[0] == 96 && t->shape[1] == 32);
    const sd_st_tensor *l2 = sd_safetensors_find(st, "cond_stage_model.model.transformer.resblocks.2.mlp.c_fc.weight");
    const sd_st_tensor *l3 = sd_safetensors_find(st, "cond_stage_model.model.transformer.resblocks.3.mlp.c_fc.weight");
    T_CHECK(l2 && l3 && l2->nbytes == l3->nbytes && !memcmp(l2->data, l3->data, l2->nbytes));
    t = sd_safetensors_find(st, "cond_stage_model.model.logit_scale");
    T_CHECK(t && t->dtype == SD_ST_I64 && t->ndim == 0);
    t = sd_safetensors_find(st, "cond_stage_model.model.text_projection");
    T_CHECK(t && t->ndim == 2 && t->shape[0] == 32);
    /* and it loads back to the same outputs */
    CK(sd_model_open(&r, out, &o));
    CK(sd_model_load(&r, SD_DEV_CPU));
    check_clip(&r, G_CLIP2, "golden.y", 0);
done:
    sd_safetensors_close(st);
    sd_safetensors_writer_free(w);
    sd_model_close(&m);
    sd_model_close(&r);
}

static void test_ckpt_source(void)
{
    sd_model m, r;
    memset(&m, 0, sizeof m);
    memset(&r, 0, sizeof r);
    const char *ck = t_path("sd1_full.ckpt");
    const char *cfg = cfg_file("sd1.toml", SD1_CFG);
    sd_model_opts o = { .config = cfg, .v_param = -1 };
    CK(mkckpt(ck, sd1_full()));
    CK(sd_model_open(&m, ck, &o));
    T_EQ_INT(m.format, SD_MODEL_FMT_CKPT);
    T_EQ_STR(sd_safetensors_meta_get(m.files[0].st, "global_step"), "1234");
    T_EQ_STR(sd_safetensors_path(m.files[0].st), ck);
    CK(sd_model_load(&m, SD_DEV_CPU));
    CK(sd_model_open(&r, sd1_full(), &o));
    CK(sd_model_load(&r, SD_DEV_CPU));
    sd_params *a[3] = { &m.unet_params, &m.te_params, &m.vae_params }, *b[3] = { &r.unet_params, &r.te_params, &r.vae_params };
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < sd_params_count(a[k]); i++) {
            const sd_param *p = sd_params_at(a[k], i), *q = sd_params_find(b[k], p->key);
            T_CHECKF(q && !memcmp(p->value.data, q->value.data, sd_tensor_nbytes(&p->value)), "%s", p->key);
        }
    sd_model_close(&m);
    /* a hostile pickle is refused with the reader's message */
    T_CHECK(sd_model_open(&m, root_path("tests/data/ckpt/hostile/os_system.ckpt"), &o) == SD_EFORMAT);
    T_CHECKF(strstr(sd_errmsg(), "refusing to load") != NULL, "%s", sd_errmsg());
done:
    sd_model_close(&m);
    sd_model_close(&r);
}

static void test_diffusers_folder(void)
{
    sd_model m;
    memset(&m, 0, sizeof m);
    const char *dir = t_path("sd2_diffusers");
    const char *cfg = cfg_file("sd2.toml", SD2_CFG);
    sd_model_opts o = { .config = cfg, .v_param = -1 };
    CK(mkdiffusers(dir));
    CK(sd_model_open(&m, dir, &o));
    T_EQ_INT(m.format, SD_MODEL_FMT_DIFFUSERS);
    T_EQ_INT(m.present, SD_MODEL_ALL);
    T_EQ_INT(m.unet_layout, SD_LAYOUT_DIFFUSERS);
    T_EQ_INT(m.te_layout, SD_LAYOUT_DIFFUSERS);
    T_EQ_INT(m.vae_layout, SD_LAYOUT_DIFFUSERS);
    T_EQ_INT(m.nfiles, 3);
    CK(sd_model_load(&m, SD_DEV_CPU));
    check_clip(&m, G_CLIP2, "golden.y", 0);
    sd_model_close(&m);
    /* without --model_config: the config.json files describe the same model */
    sd_model_opts o2 = { .v_param = -1 };
    CK(sd_model_open(&m, dir, &o2));
    T_EQ_STR(m.family_from, "diffusers_config");
    T_EQ_INT(m.cfg.family, SD_FAMILY_SD2);
    T_EQ_INT(m.cfg.unet.num_head_channels, 16);
    T_EQ_INT(m.cfg.unet.n_attn, 1);
    T_EQ_INT(m.cfg.unet.attention_resolutions[0], 2);
    T_EQ_INT(m.cfg.clip.layers, 4);
    T_EQ_INT(m.cfg.vae.ch_mult[1], 2);
    CK(sd_model_load(&m, SD_DEV_CPU));
    check_clip(&m, G_CLIP2, "golden.y", 0);
done:
    sd_model_close(&m);
}

static int no_tokenizer(const char *vocab, const char *dir, int32_t pad)
{
    (void)vocab;
    char p[4096];
    snprintf(p, sizeof p, "%s/pad.txt", dir);
    return sd_write_file_atomic(p, pad ? "49407" : "0", pad ? 5 : 1);
}

/* models/diffusers_write.h: a loaded model written as a Diffusers folder and opened again (its
 * config.json files alone) has every parameter bitwise equal; the VAE names; the output rules */
static void test_diffusers_write(void)
{
    sd_model m, r;
    memset(&m, 0, sizeof m);
    memset(&r, 0, sizeof r);
    const char *src = t_path("sd2_diffusers_w");
    const char *cfg = cfg_file("sd2.toml", SD2_CFG);
    const char *out = t_path("sd2_written");
    sd_model_opts o = { .config = cfg, .v_param = 1 };
    CK(mkdiffusers(src));
    CK(sd_model_open(&m, src, &o));
    CK(sd_model_load(&m, SD_DEV_CPU));
    sd_diffusers_write_opts wo = { .dtype = { SD_ST_F32, SD_ST_F32, SD_ST_F32 }, .tokenizer = no_tokenizer };
    CK(sd_model_write_diffusers(&m, out, &wo));
    char buf[4096], *text = NULL;
    size_t n;
    snprintf(buf, sizeof buf, "%s/tokenizer/pad.txt", out);
    CK(sd_read_file(buf, 0, &text, &n));
    T_EQ_STR(text, "0");   /* SD2 pads with "!" */
    free(text);
    snprintf(buf, sizeof buf, "%s/scheduler/scheduler_config.json", out);
    CK(sd_read_file(buf, 0, &text, &n));
    T_CHECKF(strstr(text, "\"prediction_type\": \"v_prediction\"") != NULL, "%s", text);
    free(text);
    sd_model_opts o2 = { .v_param = 1 };
    CK(sd_model_open(&r, out, &o2));
    T_EQ_STR(r.family_from, "diffusers_config");
    CK(sd_model_load(&r, SD_DEV_CPU));
    sd_params *a[3] = { &m.unet_params, &m.te_params, &m.vae_params }, *b[3] = { &r.unet_params, &r.te_params, &r.vae_params };
    for (int k = 0; k < 3; k++) {
        T_EQ_INT(sd_params_count(a[k]), sd_params_count(b[k]));
        for (size_t i = 0; i < sd_params_count(a[k]); i++) {
            const sd_param *p = sd_params_at(a[k], i), *q = sd_params_find(b[k], p->key);
            T_CHECKF(q && p->value.dtype == q->value.dtype &&
                     !memcmp(p->value.data, q->value.data, sd_tensor_nbytes(&p->value)), "%s", p->key);
        }
    }
    /* VAE names (diffusers >= 0.14 attention names) */
    char name[256];
    CK(sd_vae_name_to_diffusers(&m.vae, "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight", name, sizeof name));
    T_EQ_STR(name, "decoder.up_blocks.0.resnets.0.conv_shortcut.weight");
    CK(sd_vae_name_to_diffusers(&m.vae, "first_stage_model.encoder.mid.attn_1.proj_out.bias", name, sizeof name));
    T_EQ_STR(name, "encoder.mid_block.attentions.0.to_out.0.bias");
    CK(sd_vae_name_to_diffusers(&m.vae, "first_stage_model.post_quant_conv.weight", name, sizeof name));
    T_EQ_STR(name, "post_quant_conv.weight");
    T_CHECK(sd_vae_name_to_diffusers(&m.vae, "model.diffusion_model.out.2.weight", name, sizeof name) == SD_ENOTFOUND);
    /* rewriting replaces the folder whole; a file in the way is refused and left alone */
    snprintf(buf, sizeof buf, "%s/stray", out);
    CK(sd_write_file_atomic(buf, "x", 1));
    CK(sd_model_write_diffusers(&m, out, &wo));
    struct stat sb;
    T_CHECK(stat(buf, &sb) != 0);
    const char *file = t_path("diffusers_is_file");
    CK(sd_write_file_atomic(file, "x", 1));
    T_CHECK(sd_model_write_diffusers(&m, file, &wo) == SD_EIO);
    T_CHECKF(strstr(sd_errmsg(), "exists and is not a folder") != NULL, "%s", sd_errmsg());
    T_CHECK(stat(file, &sb) == 0 && S_ISREG(sb.st_mode));
    /* the trainer's formats */
    sd_full_format f;
    CK(sd_full_format_choose("diffusers", 0, SD_MODEL_FMT_SAFETENSORS, &f));
    T_EQ_INT(f, SD_FULL_DIFFUSERS);
    CK(sd_full_format_choose("diffusers_safetensors", 0, SD_MODEL_FMT_CKPT, &f));
    T_EQ_INT(f, SD_FULL_DIFFUSERS);
    CK(sd_full_format_choose(NULL, 0, SD_MODEL_FMT_DIFFUSERS, &f));
    T_EQ_INT(f, SD_FULL_DIFFUSERS);
    T_EQ_STR(sd_full_format_ext(f), "");
    CK(sd_full_format_choose(NULL, 1, SD_MODEL_FMT_CKPT, &f));
    T_EQ_INT(f, SD_FULL_SAFETENSORS);
    T_CHECK(sd_full_format_choose("bin", 0, SD_MODEL_FMT_CKPT, &f) == SD_EUSAGE);
    T_CHECK(sd_full_saves_diffusers(NULL, src) && !sd_full_saves_diffusers(NULL, file) &&
            sd_full_saves_diffusers("diffusers", file) && !sd_full_saves_diffusers("safetensors", src));
done:
    sd_model_close(&m);
    sd_model_close(&r);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        int rc = SD_EINVAL;
        const char *c = argv[1];
        if (!strcmp(c, "combine") && argc >= 4) rc = combine(argv[2], argv + 3, argc - 3);
        else if (!strcmp(c, "drop") && argc == 5) rc = drop(argv[2], argv[3], argv[4]);
        else if (!strcmp(c, "golden") && argc == 5) rc = cmd_golden(argv[2], argv[3], argv[4]);
        else if (!strcmp(c, "cmp") && argc >= 5) rc = cmd_cmp(argv[2], argv[3], argv[4], argv + 5, argc - 5);
        else if (!strcmp(c, "same") && argc == 5) rc = cmd_same(argv[2], argv[3], argv[4]);
        else if (!strcmp(c, "expect") && argc == 4) rc = cmd_expect(argv[2], argv[3]);
        else if (!strcmp(c, "dtypes") && argc == 3) rc = cmd_dtypes(argv[2]);
        else if (!strcmp(c, "mkckpt") && argc == 4) rc = mkckpt(argv[2], argv[3]);
        else if (!strcmp(c, "mkdiffusers") && argc == 3) rc = mkdiffusers(argv[2]);
        else if (!strcmp(c, "mkclip") && argc == 4) rc = mkclip(argv[2], argv[3]);
        else if (!strcmp(c, "ids") && argc >= 4) rc = mkids(argv[2], argv + 3, argc - 3);
        else if (!strcmp(c, "cmpcat") && argc == 6) rc = cmd_cmpcat(argv[2], argv[3], argv[4], argv[5]);
        else if (!strcmp(c, "slice") && argc == 6) rc = cmd_slice(argv[2], argv[3], atoll(argv[4]), atoll(argv[5]));
        else if (!strcmp(c, "arr") && argc >= 6) rc = cmd_arr(argv[2], atof(argv[3]), atof(argv[4]), argv + 5, argc - 5);
        else if (!strcmp(c, "mkdiffusersxl") && argc == 5) rc = mkdiffusersxl(argv[2], argv[3], argv[4]);
        else if (!strcmp(c, "samemodel") && argc == 6) rc = cmd_samemodel(argv[2], argv[3], argv[4], argv[5]);
        else sd_err(SD_EINVAL, "usage: see the comment at the top of tests/unit/test_sd_model.c");
        if (rc) fprintf(stderr, "test_sd_model %s: %s\n", c, sd_errmsg());
        return rc ? 1 : 0;
    }
    T_RUN(test_single_file);
    T_RUN(test_inference_setup);
    T_RUN(test_missing_component);
    T_RUN(test_sdxl_refiner_refused);
    T_RUN(test_hashes);
    T_RUN(test_writer_roundtrip);
    T_RUN(test_sd2_text_encoder);
    T_RUN(test_ckpt_source);
    T_RUN(test_diffusers_folder);
    T_RUN(test_diffusers_write);
    T_DONE();
}
