/* ControlNet against the PyTorch transcription of diffusers' ControlNetModel.from_unet and of the
 * UNet's additional residuals (tests/golden/gen/make_controlnet_golden.py): the tiny SD1-shaped
 * UNet of the UNet golden (frozen, f16 weights), a ControlNet whose encoder half is its copy
 * (sd_controlnet_init_from_unet) and whose own tensors come from the generator's file (ldm names).
 * Checked within max|Δ| ≤ 1e-4·max|ref|: the ControlNet's outputs, the UNet output with them, the
 * residuals' gradients (the UNet's backward stopped at its skips), the ControlNet's parameter
 * gradients; exact activation plans; checkpointing and --threads 1/2 bit-identical; save →
 * strict load round trip with exactly the reference's saved names; the same file under
 * Diffusers names (the generator's table) loads to the same values; from_unet's zero convs and
 * conditioning-embedding init; misuse. */
#include <math.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "models/controlnet.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "test.h"

static sd_ctx g_ctx;

#define CK(x) do { int rc_ = (x); if (rc_) { printf("#   %s:%d: %s: %s\n", __FILE__, __LINE__, #x, sd_errmsg()); \
    t_cur_fail++; goto done; } } while (0)

#define TOL 1e-4

static int golden(const sd_safetensors *st, const char *name, sd_tensor *t)
{
    const sd_st_tensor *g = sd_safetensors_find(st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden tensor %s missing", name);
    int rc = sd_tensor_alloc(t, SD_F32, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(st, g, SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

static double rel_diff(const float *a, const float *b, int64_t n)
{
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || d != d) md = d;
        if (fabs((double)b[i]) > mr) mr = fabs((double)b[i]);
    }
    return mr > 0 ? md / mr : md;
}

static const char *sd1_cfg(void)
{
    const char *p = t_path("sd1_tiny.toml");
    const char *text = "family = \"sd1\"\n"
                       "[unet]\nmodel_channels = 32\nchannel_mult = [1, 2]\nnum_res_blocks = 1\n"
                       "attention_resolutions = [1]\nnum_heads = 2\ntransformer_depth = 2\ncontext_dim = 32\n";
    t_write_file(p, text, strlen(text));
    return p;
}

typedef struct fixture {
    sd_model_config cfg;
    sd_params ureg, creg;
    sd_unet u;
    sd_controlnet cn;
    int have_u, have_cn;
    sd_safetensors *gst;
    sd_tensor x, t, c, cond, dy, y;
    sd_tensor *ddown;        /* n_res gradients of the residuals */
    sd_arena ca, ua;         /* the last step's activations (cn.res lives in ca) */
} fixture;

static void fixture_free(fixture *f)
{
    for (int i = 0; f->ddown && i < f->cn.n_res; i++) sd_tensor_free(&f->ddown[i]);
    free(f->ddown);
    f->ddown = NULL;
    if (f->have_cn) sd_controlnet_free(&f->cn);
    if (f->have_u) sd_unet_free(&f->u);
    sd_params_free(&f->ureg);
    sd_params_free(&f->creg);
    if (f->gst) sd_safetensors_close(f->gst);
    sd_tensor_free(&f->x);
    sd_tensor_free(&f->t);
    sd_tensor_free(&f->c);
    sd_tensor_free(&f->cond);
    sd_tensor_free(&f->dy);
    sd_tensor_free(&f->y);
    sd_arena_free(&f->ca);
    sd_arena_free(&f->ua);
}

/* the frozen UNet and the ControlNet (encoder from the UNet, own tensors from the golden file) */
static int fixture_open(fixture *f)
{
    memset(f, 0, sizeof *f);
    sd_params_init(&f->ureg);
    sd_params_init(&f->creg);
    int rc = sd_model_config_load(sd1_cfg(), &f->cfg);
    if (!rc) rc = sd_unet_init(&f->u, &f->ureg, "model.diffusion_model", &f->cfg.unet);
    if (rc) return rc;
    f->have_u = 1;
    sd_params_set_trainable(&f->ureg, "", 0);
    sd_params_set_frozen_dtype(&f->ureg, SD_F16);
    if ((rc = sd_params_alloc(&f->ureg, SD_DEV_CPU))) return rc;
    sd_safetensors *st = NULL;
    if ((rc = sd_safetensors_open(t_root_pathf("tests/data/golden/unet/sd1_tiny.safetensors"), &st))) return rc;
    rc = sd_unet_load(&f->u, st, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL);
    sd_safetensors_close(st);
    if (rc) return rc;
    if ((rc = sd_controlnet_init(&f->cn, &f->creg, &f->cfg.unet))) return rc;
    f->have_cn = 1;
    if ((rc = sd_params_alloc(&f->creg, SD_DEV_CPU))) return rc;
    if ((rc = sd_controlnet_init_from_unet(&g_ctx, &f->cn, &f->u, 7))) return rc;
    if ((rc = sd_safetensors_open(t_root_pathf("tests/data/golden/controlnet/sd1_tiny_cn.safetensors"), &st))) return rc;
    sd_load_report rep;
    rc = sd_params_load_safetensors(&f->creg, st, NULL, 0, SD_LOAD_ALLOW_MISSING, &rep);
    sd_safetensors_close(st);
    if (rc) return rc;
    size_t loaded = rep.loaded;
    sd_load_report_free(&rep);
    if (loaded != 2 * (SD_CONTROLNET_HINT_CONVS + (size_t)f->cn.n_res))
        return sd_err(SD_EFORMAT, "%zu tensors loaded from sd1_tiny_cn.safetensors", loaded);
    if ((rc = sd_safetensors_open(t_root_pathf("tests/data/golden/controlnet/sd1_tiny_cn_golden.safetensors"),
                                  &f->gst)))
        return rc;
    if ((rc = golden(f->gst, "x", &f->x)) || (rc = golden(f->gst, "t", &f->t)) || (rc = golden(f->gst, "context", &f->c)) ||
        (rc = golden(f->gst, "cond", &f->cond)) || (rc = golden(f->gst, "dy", &f->dy)))
        return rc;
    if ((rc = sd_tensor_alloc(&f->y, SD_F32, 4, f->dy.shape))) return rc;
    f->ddown = calloc((size_t)f->cn.n_res, sizeof *f->ddown);
    return f->ddown ? SD_OK : SD_ENOMEM;
}

/* One training step: ControlNet forward, UNet forward with its residuals, UNet backward to the
 * residuals, ControlNet backward; *exact: both plans are exact. */
static int step(fixture *f, int *exact)
{
    sd_controlnet *cn = &f->cn;
    int n_in = cn->enc.n_in;
    int64_t N = f->x.shape[0], H = f->x.shape[2], W = f->x.shape[3], S = f->c.shape[1];
    sd_arena_free(&f->ca);
    sd_arena_free(&f->ua);
    sd_arena *ca = &f->ca, *ua = &f->ua;
    sd_unet_control ctl = { 0 };
    ctl.down = cn->res;
    ctl.mid = &cn->res[n_in];
    ctl.ddown = f->ddown;
    ctl.dmid = &f->ddown[n_in];
    ctl.stop_at_residuals = 1;
    sd_unet_set_control(&f->u, &ctl);
    sd_nn_plan pc = sd_controlnet_plan(cn, N, H, W, S), pu = sd_unet_plan(&f->u, N, H, W, S);
    int rc = sd_nn_arena_init(ca, SD_DEV_CPU, pc.saved);
    if (!rc) rc = sd_nn_arena_init(ua, SD_DEV_CPU, pu.saved);
    if (!rc) rc = sd_params_zero_grad(&g_ctx, &f->creg);
    size_t s0 = g_ctx.scratch.used;
    if (!rc) rc = sd_controlnet_forward(&g_ctx, cn, ca, &f->x, &f->t, &f->c, &f->cond);
    if (!rc) rc = sd_unet_forward(&g_ctx, &f->u, ua, &f->y, &f->x, &f->t, &f->c, NULL);
    if (!rc && exact) *exact = ca->used == pc.saved && ua->used == pu.saved;
    for (int i = 0; !rc && i <= n_in; i++) {
        sd_tensor_free(&f->ddown[i]);
        rc = sd_tensor_alloc(&f->ddown[i], SD_F32, 4, cn->res[i].shape);
    }
    if (!rc) rc = sd_unet_backward(&g_ctx, &f->u, NULL, NULL, NULL, &f->dy);
    if (!rc) rc = sd_controlnet_backward(&g_ctx, cn, f->ddown);
    if (!rc && g_ctx.scratch.used != s0) rc = sd_err(SD_ESTATE, "scratch not released");
    sd_unet_set_control(&f->u, NULL);
    return rc;
}

static double cmp(const sd_safetensors *st, const char *name, const sd_tensor *t)
{
    sd_tensor ref = { 0 };
    if (golden(st, name, &ref) || sd_tensor_numel(&ref) != sd_tensor_numel(t)) {
        sd_tensor_free(&ref);
        return INFINITY;
    }
    double d = rel_diff(t->data, ref.data, sd_tensor_numel(&ref));
    sd_tensor_free(&ref);
    return d;
}

static void test_controlnet_golden(void)
{
    fixture f;
    float *grads = NULL, *res0 = NULL;
    char name[64];
    CK(fixture_open(&f));
    sd_controlnet *cn = &f.cn;
    int exact = 0;
    g_ctx.scratch.peak = 0;
    CK(step(&f, &exact));
    T_CHECK(exact);
    printf("# scratch peak %zu bytes in a training step\n", g_ctx.scratch.peak);
    double worst = 0, d;
    for (int i = 0; i < cn->n_res; i++) {
        snprintf(name, sizeof name, "res.%d", i);
        d = cmp(f.gst, name, &cn->res[i]);
        T_CHECKF(d <= TOL, "%s %.3g", name, d);
        worst = fmax(worst, d);
    }
    printf("# ControlNet outputs: max rel diff %.3g\n", worst);
    d = cmp(f.gst, "y", &f.y);
    printf("# UNet output with the residuals: max rel diff %.3g\n", d);
    T_CHECKF(d <= TOL, "y %.3g", d);
    worst = 0;
    for (int i = 0; i < cn->n_res; i++) {
        snprintf(name, sizeof name, "dres.%d", i);
        d = cmp(f.gst, name, &f.ddown[i]);
        T_CHECKF(d <= TOL, "%s %.3g", name, d);
        worst = fmax(worst, d);
    }
    printf("# residual gradients: max rel diff %.3g\n", worst);
    worst = 0;
    int ng = 0;
    for (size_t i = 0; i < sd_safetensors_count(f.gst); i++) {
        const sd_st_tensor *g = sd_safetensors_at(f.gst, i);
        if (strncmp(g->name, "grad.", 5)) continue;
        sd_param *p = sd_params_find(&f.creg, g->name + 5);
        T_CHECKF(p != NULL, "no parameter %s", g->name + 5);
        if (!p) continue;
        d = cmp(f.gst, g->name, &p->grad);
        T_CHECKF(d <= TOL, "%s %.3g", g->name, d);
        worst = fmax(worst, d);
        ng++;
    }
    printf("# %d ControlNet parameter gradients: max rel diff %.3g\n", ng, worst);
    T_CHECK(ng >= 16);
    /* the UNet stays frozen */
    T_EQ_INT(f.ureg.grad_bytes, 0);
    /* checkpointing and one thread: the same bytes */
    grads = malloc(f.creg.grad_bytes);
    res0 = malloc(sd_tensor_nbytes(&f.y));
    CK(grads && res0 ? SD_OK : SD_ENOMEM);
    memcpy(grads, f.creg.grad_mem, f.creg.grad_bytes);
    memcpy(res0, f.y.data, sd_tensor_nbytes(&f.y));
    T_CHECK(sd_unet_set_checkpoint(&cn->enc, NULL, 1) == cn->enc.nblocks);
    sd_unet_set_checkpoint(&f.u, NULL, 1);
    exact = 0;
    CK(step(&f, &exact));
    T_CHECK(exact);
    T_CHECK(!memcmp(grads, f.creg.grad_mem, f.creg.grad_bytes));
    T_CHECK(!memcmp(res0, f.y.data, sd_tensor_nbytes(&f.y)));
    sd_unet_set_checkpoint(&cn->enc, NULL, 0);
    sd_unet_set_checkpoint(&f.u, NULL, 0);
    sd_ctx_set_threads(&g_ctx, 1);
    int rc1 = step(&f, NULL);
    sd_ctx_set_threads(&g_ctx, 2);
    CK(rc1);
    T_CHECK(!memcmp(grads, f.creg.grad_mem, f.creg.grad_bytes));
    T_CHECK(!memcmp(res0, f.y.data, sd_tensor_nbytes(&f.y)));
    /* backward twice / without a forward */
    T_EQ_INT(sd_controlnet_backward(&g_ctx, cn, f.ddown), SD_ESTATE);
done:
    free(grads);
    free(res0);
    fixture_free(&f);
}

/* from_unet: the encoder half equals the UNet's, conv_out / zero convs / middle_block_out zero,
 * the other conditioning-embedding convs U(±1/sqrt(fan_in)) and not constant */
static void test_from_unet(void)
{
    fixture f;
    memset(&f, 0, sizeof f);
    sd_params_init(&f.ureg);
    sd_params_init(&f.creg);
    CK(sd_model_config_load(sd1_cfg(), &f.cfg));
    CK(sd_unet_init(&f.u, &f.ureg, "model.diffusion_model", &f.cfg.unet));
    f.have_u = 1;
    CK(sd_params_alloc(&f.ureg, SD_DEV_CPU));
    sd_safetensors *st = NULL;
    CK(sd_safetensors_open(t_root_pathf("tests/data/golden/unet/sd1_tiny.safetensors"), &st));
    int rc = sd_unet_load(&f.u, st, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL);
    sd_safetensors_close(st);
    CK(rc);
    CK(sd_controlnet_init(&f.cn, &f.creg, &f.cfg.unet));
    f.have_cn = 1;
    CK(sd_params_alloc(&f.creg, SD_DEV_CPU));
    CK(sd_controlnet_init_from_unet(&g_ctx, &f.cn, &f.u, 7));
    size_t copied = 0, zero = 0, rnd = 0;
    for (size_t i = 0; i < sd_params_count(&f.creg); i++) {
        sd_param *p = sd_params_at(&f.creg, i);
        const float *v = p->value.data;
        int64_t n = sd_tensor_numel(&p->value);
        char key[256];
        snprintf(key, sizeof key, "model.diffusion_model.%s", p->key);
        sd_param *q = sd_params_find(&f.ureg, key);
        if (q) {
            T_CHECKF(!memcmp(v, q->value.data, (size_t)n * 4), "%s differs from the UNet's", p->key);
            copied++;
            continue;
        }
        int allzero = 1;
        for (int64_t j = 0; j < n; j++) allzero &= v[j] == 0.0f;
        if (!strncmp(p->key, "zero_convs.", 11) || !strncmp(p->key, "middle_block_out.", 17) ||
            !strncmp(p->key, "input_hint_block.14.", 20)) {
            T_CHECKF(allzero, "%s is not zero", p->key);
            zero++;
            continue;
        }
        T_CHECKF(!strncmp(p->key, "input_hint_block.", 17), "unexpected %s", p->key);
        const sd_param *w = sd_params_find(&f.creg, p->key);
        int64_t fan_in = 0;
        for (int k = 0; k < SD_CONTROLNET_HINT_CONVS; k++)
            if (f.cn.hint[k].w == w || f.cn.hint[k].b == w) fan_in = f.cn.hint[k].cin * 9;
        double bound = 1.0 / sqrt((double)fan_in), mx = 0;
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, fabs(v[j]));
        T_CHECKF(!allzero && mx <= bound && mx > 0.5 * bound, "%s: max %.4g, bound %.4g", p->key, mx, bound);
        rnd++;
    }
    T_EQ_INT(zero, 2 * (1 + (size_t)f.cn.n_res));
    T_EQ_INT(rnd, 2 * (SD_CONTROLNET_HINT_CONVS - 1));
    T_EQ_INT(copied + zero + rnd, sd_params_count(&f.creg));
    printf("# from_unet: %zu tensors copied, %zu zero, %zu random\n", copied, zero, rnd);
done:
    fixture_free(&f);
}

/* The names of the reference's saved file (generator's table: ldm name, Diffusers name) */
static int read_names(char ***ldm, char ***diff, size_t *n)
{
    FILE *fp = fopen(t_root_pathf("tests/data/golden/controlnet/sd1_tiny_cn_names.txt"), "r");
    if (!fp) return sd_err(SD_EIO, "names file");
    char a[256], b[256];
    *n = 0;
    *ldm = *diff = NULL;
    while (fscanf(fp, "%255s %255s", a, b) == 2) {
        *ldm = realloc(*ldm, (*n + 1) * sizeof **ldm);
        *diff = realloc(*diff, (*n + 1) * sizeof **diff);
        (*ldm)[*n] = strdup(a);
        (*diff)[*n] = strdup(b);
        (*n)++;
    }
    fclose(fp);
    return SD_OK;
}

/* save: exactly the reference's names; strict load back (ldm, A1111's control_model. prefix is
 * covered by the loader's prefix detection, Diffusers names by renaming) gives the same values */
static void test_save_load(void)
{
    fixture f;
    char **ldm = NULL, **diff = NULL;
    size_t nn = 0;
    sd_params r2;
    sd_controlnet c2;
    int have2 = 0;
    sd_safetensors *st = NULL;
    sd_params_init(&r2);
    CK(fixture_open(&f));
    CK(read_names(&ldm, &diff, &nn));
    T_EQ_INT(nn, sd_params_count(&f.creg));
    const char *path = t_path("cn_saved.safetensors");
    CK(sd_controlnet_save(&f.cn, path, SD_ST_F32));
    CK(sd_safetensors_open(path, &st));
    T_EQ_INT(sd_safetensors_count(st), nn);
    T_EQ_INT(sd_safetensors_meta_count(st), 0);
    for (size_t i = 0; i < nn; i++) {
        const sd_st_tensor *t;
        T_CHECKF(sd_safetensors_get(st, ldm[i], &t) == SD_OK, "saved file lacks %s", ldm[i]);
        char d[256];
        CK(sd_controlnet_name_to_diffusers(&f.cn, ldm[i], d, sizeof d));
        T_EQ_STR(d, diff[i]);
    }
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {   /* the same file under Diffusers names */
            size_t nt = sd_safetensors_count(st);
            const char **names = calloc(nt, sizeof *names);
            CK(names ? SD_OK : SD_ENOMEM);
            for (size_t i = 0; i < nt; i++)
                for (size_t j = 0; j < nn; j++)
                    if (!strcmp(sd_safetensors_at(st, i)->name, ldm[j])) names[i] = diff[j];
            int rc = SD_OK;
            for (size_t i = 0; i < nt; i++)
                if (!names[i]) rc = SD_EFORMAT;
            if (!rc) rc = sd_safetensors_rename(st, names);
            free(names);
            CK(rc);
        }
        CK(sd_controlnet_init(&c2, &r2, &f.cfg.unet));
        have2 = 1;
        CK(sd_params_alloc(&r2, SD_DEV_CPU));
        CK(sd_controlnet_load(&c2, st));
        T_CHECK(!memcmp(r2.value_mem, f.creg.value_mem, f.creg.value_bytes));
        sd_controlnet_free(&c2);
        have2 = 0;
        sd_params_free(&r2);
        sd_params_init(&r2);
    }
done:
    if (have2) sd_controlnet_free(&c2);
    sd_params_free(&r2);
    if (st) sd_safetensors_close(st);
    for (size_t i = 0; i < nn; i++) free(ldm[i]), free(diff[i]);
    free(ldm);
    free(diff);
    fixture_free(&f);
}

static void test_misuse(void)
{
    sd_model_config cfg;
    sd_params r;
    sd_controlnet cn;
    sd_params_init(&r);
    CK(sd_model_config_load(sd1_cfg(), &cfg));
    cfg.unet.adm_in_channels = 16;
    T_EQ_INT(sd_controlnet_init(&cn, &r, &cfg.unet), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "not supported yet") != NULL);
done:
    sd_params_free(&r);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_controlnet_golden);
    T_RUN(test_from_unet);
    T_RUN(test_save_load);
    T_RUN(test_misuse);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
