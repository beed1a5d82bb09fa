/* UNet against the PyTorch transcription of ldm's UNetModel (tests/golden/gen/make_unet_golden.py):
 * tiny SD1- and SD2-shaped checkpoints loaded through the real loaders (single-file ldm names with
 * f16 weights; a Diffusers-named file), output and gradients (input, context, parameters) within
 * max|Δ| ≤ 1e-4·max|ref|; exact activation plans; inference = training forward; gradient
 * checkpointing and frozen (half-stored) weights give the same gradients; ldm ↔ Diffusers names
 * equal kohya's table for every key; LoRA hook points match the reference's module counts.
 * SDXL (make_unet_sdxl_golden.py): a tiny SDXL-shaped UNet (per-level transformer depth, no
 * attention on level 0, label_emb on a vector input) whose weights come from a formula both sides
 * evaluate: output, dx, dcontext, dvec and parameter gradients, both loaders (ldm / Diffusers names
 * of the generator's table), misuse of the vector input; the real SDXL base's hook points. */
#include "base/error.h"
#include "io/safetensors.h"
#include "models/model_config.h"
#include "models/unet.h"
#include "test.h"
#include "sdxl_tiny_model.h"

static sd_ctx g_ctx;

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/golden/unet/%s", name);
}

#define CK(x) do { int rc_ = (x); if (rc_) { printf("#   %s:%d: %s: %s\n", __FILE__, __LINE__, #x, sd_errmsg()); \
    t_cur_fail++; goto done; } } while (0)

/* f32 host tensor read from the golden file */
static int golden(const sd_safetensors *st, const char *name, sd_tensor *t)
{
    const sd_st_tensor *g = sd_safetensors_find(st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden tensor %s missing", name);
    int rc = sd_tensor_alloc(t, SD_F32, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(st, g, SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

/* max|a - b| / max|b| */
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

#define TOL 1e-4

typedef struct model {
    sd_params reg;
    sd_unet u;
    sd_model_config cfg;
    int ok;
} model;

static int model_open(model *m, const char *cfg_path, int trainable, sd_dtype frozen)
{
    memset(m, 0, sizeof *m);
    int rc = sd_model_config_load(cfg_path, &m->cfg);
    if (rc) return rc;
    sd_params_init(&m->reg);
    if ((rc = sd_unet_init(&m->u, &m->reg, "model.diffusion_model", &m->cfg.unet))) return rc;
    if (!trainable) {
        sd_params_set_trainable(&m->reg, "", 0);
        sd_params_set_frozen_dtype(&m->reg, frozen);
    }
    if ((rc = sd_params_alloc(&m->reg, SD_DEV_CPU))) return rc;
    m->ok = 1;
    return SD_OK;
}

static void model_close(model *m)
{
    sd_unet_free(&m->u);
    sd_params_free(&m->reg);
}

static const char *write_cfg(const char *name, const char *text)
{
    const char *p = t_path(name);
    t_write_file(p, text, strlen(text));
    return p;
}

/* The tiny configs, once as TOML and once as JSON (the generator's parameters). */
static const char *sd1_cfg(void)
{
    return write_cfg("sd1_tiny.toml",
                     "family = \"sd1\"\n"
                     "[unet]\nmodel_channels = 32\nchannel_mult = [1, 2]\nnum_res_blocks = 1\n"
                     "attention_resolutions = [1]\nnum_heads = 2\ntransformer_depth = 2\ncontext_dim = 32\n");
}

static const char *sd2_cfg(void)
{
    return write_cfg("sd2_tiny.json",
                     "{\"family\": \"sd2\", \"parameterization\": \"v\", \"unet\": {\"model_channels\": 32, "
                     "\"channel_mult\": [1, 1], \"num_res_blocks\": 1, \"attention_resolutions\": [2], "
                     "\"num_head_channels\": 16, \"context_dim\": 48, \"use_linear_in_transformer\": true}}");
}

typedef struct run {
    sd_tensor x, t, c, dy, y, dx, dc;
    float *grads;
} run;

static void run_free(run *r)
{
    sd_tensor_free(&r->x);
    sd_tensor_free(&r->t);
    sd_tensor_free(&r->c);
    sd_tensor_free(&r->dy);
    sd_tensor_free(&r->y);
    sd_tensor_free(&r->dx);
    sd_tensor_free(&r->dc);
    free(r->grads);
}

/* One training step: forward into a planned arena, backward; checks the plan is exact. */
static int step(model *m, run *r, const sd_safetensors *st, int *plan_exact)
{
    int rc;
    if (!r->x.data) {
        if ((rc = golden(st, "golden.x", &r->x)) || (rc = golden(st, "golden.t", &r->t)) ||
            (rc = golden(st, "golden.context", &r->c)) || (rc = golden(st, "golden.dy", &r->dy)))
            return rc;
    }
    sd_tensor_free(&r->y);
    sd_tensor_free(&r->dx);
    sd_tensor_free(&r->dc);
    if ((rc = sd_tensor_alloc(&r->y, SD_F32, 4, r->dy.shape)) || (rc = sd_tensor_alloc(&r->dx, SD_F32, 4, r->x.shape)) ||
        (rc = sd_tensor_alloc(&r->dc, SD_F32, 3, r->c.shape)))
        return rc;
    sd_nn_plan p = sd_unet_plan(&m->u, r->x.shape[0], r->x.shape[2], r->x.shape[3], r->c.shape[1]);
    sd_arena act;
    if ((rc = sd_nn_arena_init(&act, SD_DEV_CPU, p.saved))) return rc;
    if (m->reg.grad_bytes) sd_params_zero_grad(&g_ctx, &m->reg);
    size_t s0 = g_ctx.scratch.used;
    rc = sd_unet_forward(&g_ctx, &m->u, &act, &r->y, &r->x, &r->t, &r->c, NULL);
    if (!rc && plan_exact) *plan_exact = act.used == p.saved;
    if (!rc) rc = sd_unet_backward(&g_ctx, &m->u, &r->dx, &r->dc, NULL, &r->dy);
    if (!rc && g_ctx.scratch.used != s0) rc = sd_err(SD_ESTATE, "scratch not released");
    sd_arena_free(&act);
    if (!rc && m->reg.grad_bytes) {
        free(r->grads);
        r->grads = malloc(m->reg.grad_bytes);
        memcpy(r->grads, m->reg.grad_mem, m->reg.grad_bytes);
    }
    return rc;
}

static void check_golden_file(const char *path, const char *name, const char *cfg_path)
{
    sd_safetensors *st = NULL;
    model m = { 0 }, f = { 0 };
    run r = { 0 }, r2 = { 0 }, rf = { 0 };
    sd_tensor yi = { 0 }, ref = { 0 };
    CK(sd_safetensors_open(path, &st));
    CK(model_open(&m, cfg_path, 1, SD_F32));
    sd_load_report rep;
    CK(sd_unet_load(&m.u, st, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, &rep));
    T_EQ_INT(rep.loaded, sd_params_count(&m.reg));
    sd_load_report_free(&rep);
    int exact = 0, rc1;
    g_ctx.scratch.peak = 0;
    CK(step(&m, &r, st, &exact));
    T_CHECK(exact);
    printf("# %s: scratch peak %zu bytes in a training step\n", name, g_ctx.scratch.peak);
    /* output and input/context gradients */
    CK(golden(st, "golden.y", &ref));
    double d = rel_diff(r.y.data, ref.data, sd_tensor_numel(&ref));
    printf("# %s: output max rel diff %.3g\n", name, d);
    T_CHECKF(d <= TOL, "%s output %.3g", name, d);
    sd_tensor_free(&ref);
    CK(golden(st, "golden.dx", &ref));
    d = rel_diff(r.dx.data, ref.data, sd_tensor_numel(&ref));
    printf("# %s: d x max rel diff %.3g\n", name, d);
    T_CHECKF(d <= TOL, "%s dx %.3g", name, d);
    sd_tensor_free(&ref);
    CK(golden(st, "golden.dcontext", &ref));
    d = rel_diff(r.dc.data, ref.data, sd_tensor_numel(&ref));
    printf("# %s: d context max rel diff %.3g\n", name, d);
    T_CHECKF(d <= TOL, "%s dcontext %.3g", name, d);
    sd_tensor_free(&ref);
    /* parameter gradients */
    double worst = 0;
    int ngrads = 0;
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *g = sd_safetensors_at(st, i);
        if (strncmp(g->name, "golden.grad.", 12)) continue;
        char key[256];
        snprintf(key, sizeof key, "model.diffusion_model.%s", g->name + 12);
        sd_param *p = sd_params_find(&m.reg, key);
        T_CHECKF(p != NULL, "no parameter %s", key);
        if (!p) continue;
        CK(golden(st, g->name, &ref));
        T_EQ_INT(sd_tensor_numel(&ref), sd_tensor_numel(&p->grad));
        d = rel_diff(p->grad.data, ref.data, sd_tensor_numel(&ref));
        T_CHECKF(d <= TOL, "%s grad %s %.3g", name, key, d);
        if (d > worst) worst = d;
        ngrads++;
        sd_tensor_free(&ref);
    }
    printf("# %s: %d parameter gradients, max rel diff %.3g\n", name, ngrads, worst);
    T_CHECK(ngrads >= 10);
    /* inference forward = training forward, bit for bit */
    CK(sd_tensor_alloc(&yi, SD_F32, 4, r.y.shape));
    g_ctx.scratch.peak = 0;
    CK(sd_unet_forward(&g_ctx, &m.u, NULL, &yi, &r.x, &r.t, &r.c, NULL));
    T_CHECK(!memcmp(yi.data, r.y.data, sd_tensor_nbytes(&yi)));
    T_EQ_INT(g_ctx.scratch.used, 0);
    {
        sd_nn_plan p = sd_unet_plan(&m.u, r.x.shape[0], r.x.shape[2], r.x.shape[3], r.c.shape[1]);
        printf("# %s: scratch peak %zu bytes in inference (plan bound without op temporaries %zu)\n", name,
               g_ctx.scratch.peak, p.scratch);
    }
    /* backward without a training forward is refused */
    T_EQ_INT(sd_unet_backward(&g_ctx, &m.u, NULL, NULL, NULL, &r.dy), SD_ESTATE);
    /* gradient checkpointing: identical gradients */
    T_CHECK(sd_unet_set_checkpoint(&m.u, NULL, 1) == m.u.nblocks);
    sd_nn_plan pc = sd_unet_plan(&m.u, r.x.shape[0], r.x.shape[2], r.x.shape[3], r.c.shape[1]);
    sd_unet_set_checkpoint(&m.u, NULL, 0);
    sd_nn_plan pn = sd_unet_plan(&m.u, r.x.shape[0], r.x.shape[2], r.x.shape[3], r.c.shape[1]);
    T_CHECK(pc.saved < pn.saved);
    printf("# %s: activations %zu bytes, %zu with checkpointing\n", name, pn.saved, pc.saved);
    sd_unet_set_checkpoint(&m.u, NULL, 1);
    exact = 0;
    CK(step(&m, &r2, st, &exact));
    T_CHECK(exact);
    T_CHECK(!memcmp(r2.y.data, r.y.data, sd_tensor_nbytes(&r.y)));
    T_CHECK(!memcmp(r2.dx.data, r.dx.data, sd_tensor_nbytes(&r.dx)));
    T_CHECK(!memcmp(r2.dc.data, r.dc.data, sd_tensor_nbytes(&r.dc)));
    T_CHECK(!memcmp(r2.grads, r.grads, m.reg.grad_bytes));
    /* --threads 1 gives the same bytes as 2 */
    sd_unet_set_checkpoint(&m.u, NULL, 0);
    sd_ctx_set_threads(&g_ctx, 1);
    rc1 = step(&m, &r2, st, NULL);
    sd_ctx_set_threads(&g_ctx, 2);
    CK(rc1);
    T_CHECK(!memcmp(r2.y.data, r.y.data, sd_tensor_nbytes(&r.y)));
    T_CHECK(!memcmp(r2.dx.data, r.dx.data, sd_tensor_nbytes(&r.dx)));
    T_CHECK(!memcmp(r2.dc.data, r.dc.data, sd_tensor_nbytes(&r.dc)));
    T_CHECK(!memcmp(r2.grads, r.grads, m.reg.grad_bytes));
    T_EQ_INT(sd_unet_set_checkpoint(&m.u, "middle_block", 0), 1);
    T_EQ_INT(sd_unet_set_checkpoint(&m.u, "no_block", 0), SD_ENOTFOUND);
    /* frozen base stored in f16 (LoRA style): no parameter gradients, the same dx / dcontext
     * (the weights are exact in f16) */
    CK(model_open(&f, cfg_path, 0, SD_F16));
    CK(sd_unet_load(&f.u, st, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL));
    T_EQ_INT(f.reg.grad_bytes, 0);
    CK(step(&f, &rf, st, NULL));
    T_CHECK(!memcmp(rf.y.data, r.y.data, sd_tensor_nbytes(&r.y)));
    T_CHECK(!memcmp(rf.dx.data, r.dx.data, sd_tensor_nbytes(&r.dx)));
    T_CHECK(!memcmp(rf.dc.data, r.dc.data, sd_tensor_nbytes(&r.dc)));
    /* only the context gradient (text-encoder training through a frozen UNet): dx = NULL */
    {
        sd_nn_plan p = sd_unet_plan(&f.u, r.x.shape[0], r.x.shape[2], r.x.shape[3], r.c.shape[1]);
        sd_arena act;
        CK(sd_nn_arena_init(&act, SD_DEV_CPU, p.saved));
        sd_op_fill(&g_ctx, &rf.dc, 0.0f);
        rc1 = sd_unet_forward(&g_ctx, &f.u, &act, &rf.y, &r.x, &r.t, &r.c, NULL);
        int rc2 = rc1 ? rc1 : sd_unet_backward(&g_ctx, &f.u, NULL, &rf.dc, NULL, &r.dy);
        sd_arena_free(&act);
        CK(rc2);
        T_CHECK(!memcmp(rf.dc.data, r.dc.data, sd_tensor_nbytes(&r.dc)));
    }
done:
    sd_tensor_free(&yi);
    sd_tensor_free(&ref);
    run_free(&r);
    run_free(&r2);
    run_free(&rf);
    if (m.ok) model_close(&m);
    if (f.ok) model_close(&f);
    sd_safetensors_close(st);
}

static void check_golden(const char *name, const char *cfg_path)
{
    char file[64];
    snprintf(file, sizeof file, "%s.safetensors", name);
    check_golden_file(data_path(file), name, cfg_path);
}

static void test_sd1_tiny_golden(void) { check_golden("sd1_tiny", sd1_cfg()); }
static void test_sd2_tiny_golden(void) { check_golden("sd2_tiny", sd2_cfg()); }

/* The larger configuration (not committed; make_unet_golden.py --large DIR, then
 * SD_UNET_LARGE_GOLDEN=DIR): 3 levels, 2 res blocks, attention everywhere, context 768, 32×32. */
static void test_sd1_large_golden(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/sd1_large.safetensors", getenv("SD_UNET_LARGE_GOLDEN"));
    const char *cfg = write_cfg("sd1_large.toml", "[unet]\nmodel_channels = 64\nchannel_mult = [1, 2, 4]\n"
                                "attention_resolutions = [1, 2, 4]\n");
    check_golden_file(path, "sd1_large", cfg);
}

/* Every ldm key ↔ its Diffusers name as in kohya's table (the generator's _names.txt). */
static void check_names(const char *name, const char *cfg_path)
{
    char file[64];
    snprintf(file, sizeof file, "%s_names.txt", name);
    model m = { 0 };
    FILE *fp = fopen(data_path(file), "r");
    T_CHECK(fp != NULL);
    if (!fp) return;
    CK(model_open(&m, cfg_path, 1, SD_F32));
    char a[256], b[256], out[256];
    size_t n = 0;
    while (fscanf(fp, "%255s %255s", a, b) == 2) {
        n++;
        T_CHECKF(!sd_unet_name_to_diffusers(&m.u, a, out, sizeof out) && !strcmp(out, b), "%s -> %s, want %s", a, out, b);
        T_CHECKF(!sd_unet_name_from_diffusers(&m.u, b, out, sizeof out) && !strcmp(out, a), "%s -> %s, want %s", b, out, a);
        char full[300];
        snprintf(full, sizeof full, "model.diffusion_model.%s", a);
        T_CHECKF(sd_params_find(&m.reg, full) != NULL, "%s not registered", full);
    }
    T_EQ_INT(n, sd_params_count(&m.reg));
    T_EQ_INT(sd_unet_name_to_diffusers(&m.u, "input_blocks.99.0.x", out, sizeof out), SD_ENOTFOUND);
    T_EQ_INT(sd_unet_name_to_diffusers(&m.u, "time_embed.0.weight", out, 8), SD_ERANGE);
done:
    if (m.ok) model_close(&m);
    fclose(fp);
}

static void test_diffusers_names(void)
{
    check_names("sd1_tiny", sd1_cfg());
    check_names("sd2_tiny", sd2_cfg());
}

/* The Diffusers-named file loads into the same values as the single-file checkpoint. */
static void test_diffusers_load(void)
{
    sd_safetensors *st = NULL, *sd = NULL;
    model a = { 0 }, b = { 0 };
    CK(sd_safetensors_open(data_path("sd2_tiny.safetensors"), &st));
    CK(sd_safetensors_open(data_path("sd2_tiny_diffusers.safetensors"), &sd));
    CK(model_open(&a, sd2_cfg(), 1, SD_F32));
    CK(model_open(&b, sd2_cfg(), 1, SD_F32));
    T_EQ_INT(a.cfg.parameterization, SD_PRED_V);
    CK(sd_unet_load(&a.u, st, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL));
    sd_load_report rep;
    CK(sd_unet_load(&b.u, sd, SD_UNET_NAMES_DIFFUSERS, NULL, 0, &rep));
    T_EQ_INT(rep.loaded, sd_params_count(&b.reg));
    T_EQ_INT(rep.unexpected, 0);
    sd_load_report_free(&rep);
    T_CHECK(a.reg.value_bytes == b.reg.value_bytes && !memcmp(a.reg.value_mem, b.reg.value_mem, a.reg.value_bytes));
    /* the wrong naming or the wrong prefix is refused with the missing keys named */
    T_EQ_INT(sd_unet_load(&b.u, st, SD_UNET_NAMES_DIFFUSERS, NULL, 0, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "missing") != NULL);
    T_EQ_INT(sd_unet_load(&b.u, sd, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL), SD_EFORMAT);
    /* an SD1-shaped UNet refuses the SD2 file (shape mismatch, named) */
    sd_params_free(&b.reg);
    sd_unet_free(&b.u);
    b.ok = 0;
    CK(model_open(&b, sd1_cfg(), 1, SD_F32));
    T_EQ_INT(sd_unet_load(&b.u, st, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL), SD_EFORMAT);
    printf("# %s\n", sd_errmsg());
done:
    if (a.ok) model_close(&a);
    if (b.ok) model_close(&b);
    sd_safetensors_close(st);
    sd_safetensors_close(sd);
}

/* LoRA hook points: the reference's module counts (spec §7.1) on the real SD1/SD2 shapes, names
 * and roles. Registration only: no parameter memory. */
static void test_lora_layers(void)
{
    for (int fam = SD_FAMILY_SD1; fam <= SD_FAMILY_SD2; fam++) {
        sd_model_config cfg;
        sd_params reg;
        sd_unet u;
        sd_model_config_preset((sd_family)fam, &cfg);
        sd_params_init(&reg);
        if (sd_unet_init(&u, &reg, "model.diffusion_model", &cfg.unet)) {
            printf("# %s\n", sd_errmsg());
            T_CHECK(0);
            sd_params_free(&reg);
            continue;
        }
        size_t tr = 0, conv = 0, other = 0, c1 = 0;
        for (size_t i = 0; i < sd_unet_layer_count(&u); i++) {
            const sd_unet_layer *l = sd_unet_layer_at(&u, i);
            if (l->role == SD_UNET_ROLE_TRANSFORMER) tr++;
            else if (l->role == SD_UNET_ROLE_OTHER) other++;
            else conv++;
            c1 += l->conv1x1;
            T_CHECK((l->linear != NULL) != (l->conv != NULL));
        }
        T_EQ_INT(tr, 192);          /* LierLa: 16 transformers × 12 */
        T_EQ_INT(tr + conv, 278);   /* C3Lier (SD1 count; SD2 has the same structure) */
        T_EQ_INT(other, 4);         /* time_embed.0/2, conv_in, conv_out */
        T_EQ_INT(c1, fam == SD_FAMILY_SD1 ? 32 : 0);
        const sd_unet_layer *l = sd_unet_layer_find(&u, "input_blocks.1.1.transformer_blocks.0.attn2.to_k");
        T_CHECK(l && l->linear && !strcmp(l->diffusers, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"));
        if (l) T_EQ_INT(l->in, fam == SD_FAMILY_SD1 ? 768 : 1024);
        l = sd_unet_layer_find(&u, "output_blocks.2.1.conv");
        T_CHECK(l && l->conv && l->role == SD_UNET_ROLE_SAMPLER && !strcmp(l->diffusers, "up_blocks.0.upsamplers.0.conv"));
        l = sd_unet_layer_find(&u, "output_blocks.5.2.conv");
        T_CHECK(l && !strcmp(l->diffusers, "up_blocks.1.upsamplers.0.conv"));
        l = sd_unet_layer_find(&u, "input_blocks.4.0.skip_connection");
        T_CHECK(l && l->kh == 1 && !strcmp(l->diffusers, "down_blocks.1.resnets.0.conv_shortcut"));
        l = sd_unet_layer_find(&u, "middle_block.2.in_layers.2");
        T_CHECK(l && l->kh == 3 && !strcmp(l->diffusers, "mid_block.resnets.1.conv1"));
        l = sd_unet_layer_find(&u, "input_blocks.1.1.proj_in");
        T_CHECK(l && l->conv1x1 == (fam == SD_FAMILY_SD1) && l->out == 320);
        sd_params_totals tot;
        sd_params_get_totals(&reg, &tot);
        printf("# %s UNet: %lld parameters in %zu tensors\n", sd_family_name((sd_family)fam), (long long)tot.numel, tot.count);
        T_EQ_INT(tot.numel, fam == SD_FAMILY_SD1 ? 859520964LL : 865910724LL);
        sd_unet_free(&u);
        sd_params_free(&reg);
    }
}

/* LoRA modules attached through the hook list (transformer linears, and 3×3/1×1 convs as with
 * conv_dim) on a frozen UNet: the activation plan stays exact, up = 0 leaves the output unchanged,
 * only LoRA weights get gradients, and a non-zero up changes the output. */
static void test_lora_attach(void)
{
    sd_safetensors *st = NULL;
    model m = { 0 };
    run r = { 0 }, rl = { 0 };
    sd_params lreg;
    sd_params_init(&lreg);
    sd_lora *mods = NULL;
    size_t nm = 0;
    sd_tensor yi = { 0 };
    CK(sd_safetensors_open(data_path("sd1_tiny.safetensors"), &st));
    CK(model_open(&m, sd1_cfg(), 0, SD_F32));
    CK(sd_unet_load(&m.u, st, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL));
    CK(step(&m, &r, st, NULL));
    size_t nl = sd_unet_layer_count(&m.u);
    mods = calloc(nl, sizeof *mods);
    for (size_t i = 0; i < nl; i++) {
        const sd_unet_layer *l = sd_unet_layer_at(&m.u, i);
        if (l->role == SD_UNET_ROLE_OTHER) continue;
        char name[300];
        snprintf(name, sizeof name, "lora_unet_%s", l->diffusers);
        for (char *c = name; *c; c++)
            if (*c == '.') *c = '_';
        sd_lora *lo = &mods[nm];
        if (l->linear) {
            CK(sd_lora_init(lo, &lreg, name, l->in, l->out, 4, 2.0f, 0, 1, 1, sd_conv2d_geom_make(1, 0), l->conv1x1));
            CK(sd_linear_set_lora(l->linear, lo));
        } else {
            CK(sd_lora_init(lo, &lreg, name, l->in, l->out, 2, 1.0f, 1, l->kh, l->kw, l->conv->g, 0));
            CK(sd_conv2d_set_lora(l->conv, lo));
        }
        lo->id = (uint32_t)nm;
        nm++;
    }
    CK(sd_params_alloc(&lreg, SD_DEV_CPU));
    for (size_t i = 0; i < nm; i++) CK(sd_lora_init_weights(&g_ctx, &mods[i], 42));
    int exact = 0;
    CK(step(&m, &rl, st, &exact));
    T_CHECK(exact);
    T_CHECK(!memcmp(rl.y.data, r.y.data, sd_tensor_nbytes(&r.y)));   /* up = 0 */
    T_EQ_INT(m.reg.grad_bytes, 0);
    double gup = 0, gdown = 0;
    for (size_t i = 0; i < nm; i++) {
        const float *u = mods[i].up->grad.data, *d = mods[i].down->grad.data;
        for (int64_t j = 0; j < sd_tensor_numel(&mods[i].up->grad); j++) gup = fmax(gup, fabs(u[j]));
        for (int64_t j = 0; j < sd_tensor_numel(&mods[i].down->grad); j++) gdown = fmax(gdown, fabs(d[j]));
    }
    T_CHECK(gup > 0);
    T_CHECK(gdown == 0);   /* d down = upᵀ·… = 0 while up = 0 */
    printf("# %zu LoRA modules attached, max |d up| %.3g\n", nm, gup);
    /* a non-zero up changes the output; inference forward = training forward with LoRA */
    for (size_t i = 0; i < nm; i++) sd_op_fill(&g_ctx, &mods[i].up->value, 0.01f);
    sd_params_zero_grad(&g_ctx, &lreg);
    CK(step(&m, &rl, st, &exact));
    T_CHECK(exact);
    T_CHECK(memcmp(rl.y.data, r.y.data, sd_tensor_nbytes(&r.y)) != 0);
    CK(sd_tensor_alloc(&yi, SD_F32, 4, r.y.shape));
    CK(sd_unet_forward(&g_ctx, &m.u, NULL, &yi, &rl.x, &rl.t, &rl.c, NULL));
    T_CHECK(!memcmp(yi.data, rl.y.data, sd_tensor_nbytes(&yi)));
done:
    for (size_t i = 0; i < nl && mods; i++) {
        const sd_unet_layer *l = sd_unet_layer_at(&m.u, i);
        if (l->linear) l->linear->lora = NULL;
        if (l->conv) l->conv->lora = NULL;
    }
    for (size_t i = 0; i < nm; i++) sd_lora_free(&mods[i]);
    free(mods);
    sd_params_free(&lreg);
    sd_tensor_free(&yi);
    run_free(&r);
    run_free(&rl);
    if (m.ok) model_close(&m);
    sd_safetensors_close(st);
}

/* Bad inputs are refused with a message, never crash. */
static void test_unet_misuse(void)
{
    model m = { 0 };
    sd_tensor x = { 0 }, y = { 0 }, t = { 0 }, c = { 0 };
    CK(model_open(&m, sd2_cfg(), 1, SD_F32));
    CK(sd_tensor_alloc(&x, SD_F32, 4, (int64_t[]){ 1, 4, 6, 8 }));
    CK(sd_tensor_alloc(&y, SD_F32, 4, (int64_t[]){ 1, 4, 6, 8 }));
    CK(sd_tensor_alloc(&t, SD_F32, 1, (int64_t[]){ 1 }));
    CK(sd_tensor_alloc(&c, SD_F32, 3, (int64_t[]){ 1, 3, 48 }));
    T_EQ_INT(sd_unet_forward(&g_ctx, &m.u, NULL, &y, &x, &t, &c, NULL), SD_OK);
    sd_tensor bad = c;
    bad.shape[2] = 47;
    T_EQ_INT(sd_unet_forward(&g_ctx, &m.u, NULL, &y, &x, &t, &bad, NULL), SD_EINVAL);
    bad = x;
    bad.shape[2] = 7;
    T_EQ_INT(sd_unet_forward(&g_ctx, &m.u, NULL, &y, &bad, &t, &c, NULL), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "multiple") != NULL);
    bad = x;
    bad.shape[1] = 3;
    T_EQ_INT(sd_unet_forward(&g_ctx, &m.u, NULL, &y, &bad, &t, &c, NULL), SD_EINVAL);
    /* a too small activation arena is an error, not a crash */
    sd_arena small;
    CK(sd_nn_arena_init(&small, SD_DEV_CPU, 4096));
    T_EQ_INT(sd_unet_forward(&g_ctx, &m.u, &small, &y, &x, &t, &c, NULL), SD_ENOMEM);
    sd_arena_free(&small);
    T_EQ_INT(g_ctx.scratch.used, 0);
done:
    sd_tensor_free(&x);
    sd_tensor_free(&y);
    sd_tensor_free(&t);
    sd_tensor_free(&c);
    if (m.ok) model_close(&m);
}

/* ---- SDXL ------------------------------------------------------------------------------------ */

/* The tiny SDXL-shaped UNet of tests/golden/gen/make_unet_sdxl_golden.py: the SDXL preset with
 * model_channels 32, channel_mult [1, 2, 2], transformer_depth [0, 1, 2], middle 3, head width 16,
 * context 80, adm 40 (attention on levels 1 and 2, linear proj, num_res_blocks 2 as in SDXL). */
static void sdxl_tiny_cfg(sd_unet_config *u)
{
    sd_model_config mc;
    sd_model_config_preset(SD_FAMILY_SDXL, &mc);
    *u = mc.unet;
    u->model_channels = 32;
    u->n_levels = 3;
    static const int mult[3] = { 1, 2, 2 }, depth[3] = { 0, 1, 2 };
    for (int l = 0; l < 3; l++) {
        u->channel_mult[l] = mult[l];
        u->num_res_blocks[l] = 2;
        u->transformer_depth[l] = depth[l];
    }
    u->transformer_depth_middle = 3;
    u->num_heads = -1;
    u->num_head_channels = 16;
    u->context_dim = 80;
    u->adm_in_channels = 40;
}

/* The generator's weight formula (sdxl_weight there, sdxl_tiny_model.h's formula), bit for bit. */
static void sdxl_fill(sd_params *reg, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (size_t k = 0; k < sd_params_count(reg); k++) {
        sd_param *p = sd_params_at(reg, k);
        formula(p->key + pl, &p->value);
    }
}

typedef struct xl_model {
    sd_params reg;
    sd_unet u;
    int ok;
} xl_model;

static int xl_open(xl_model *m, int trainable)
{
    memset(m, 0, sizeof *m);
    sd_unet_config cfg;
    sdxl_tiny_cfg(&cfg);
    sd_params_init(&m->reg);
    int rc = sd_unet_init(&m->u, &m->reg, "model.diffusion_model", &cfg);
    if (rc) {
        sd_params_free(&m->reg);
        return rc;
    }
    m->ok = 1;
    if (!trainable) {
        sd_params_set_trainable(&m->reg, "", 0);
        sd_params_set_frozen_dtype(&m->reg, SD_F32);
    }
    return sd_params_alloc(&m->reg, SD_DEV_CPU);
}

static void xl_close(xl_model *m)
{
    if (!m->ok) return;
    sd_unet_free(&m->u);
    sd_params_free(&m->reg);
    m->ok = 0;
}

typedef struct xl_run {
    sd_tensor y, dx, dc, dv;
    float *grads;
} xl_run;

static void xl_run_free(xl_run *r)
{
    sd_tensor_free(&r->y);
    sd_tensor_free(&r->dx);
    sd_tensor_free(&r->dc);
    sd_tensor_free(&r->dv);
    free(r->grads);
    memset(r, 0, sizeof *r);
}

/* One training step with the golden inputs; dx/dc/dv as asked (NULL when 0). */
static int xl_step(xl_model *m, xl_run *r, const sd_tensor *in, int want_dx, int want_dc, int want_dv, int *exact)
{
    const sd_tensor *x = &in[0], *t = &in[1], *c = &in[2], *v = &in[3], *dy = &in[4];
    xl_run_free(r);
    int rc;
    if ((rc = sd_tensor_alloc(&r->y, SD_F32, 4, dy->shape)) || (rc = sd_tensor_alloc(&r->dx, SD_F32, 4, x->shape)) ||
        (rc = sd_tensor_alloc(&r->dc, SD_F32, 3, c->shape)) || (rc = sd_tensor_alloc(&r->dv, SD_F32, 2, v->shape)))
        return rc;
    sd_op_fill(&g_ctx, &r->dx, 0.0f);
    sd_op_fill(&g_ctx, &r->dc, 0.0f);
    sd_op_fill(&g_ctx, &r->dv, 0.0f);
    sd_nn_plan p = sd_unet_plan(&m->u, x->shape[0], x->shape[2], x->shape[3], c->shape[1]);
    sd_arena act;
    if ((rc = sd_nn_arena_init(&act, SD_DEV_CPU, p.saved))) return rc;
    if (m->reg.grad_bytes) sd_params_zero_grad(&g_ctx, &m->reg);
    size_t s0 = g_ctx.scratch.used;
    rc = sd_unet_forward(&g_ctx, &m->u, &act, &r->y, x, t, c, v);
    if (!rc && exact) *exact = act.used == p.saved;
    if (!rc)
        rc = sd_unet_backward(&g_ctx, &m->u, want_dx ? &r->dx : NULL, want_dc ? &r->dc : NULL,
                              want_dv ? &r->dv : NULL, dy);
    if (!rc && g_ctx.scratch.used != s0) rc = sd_err(SD_ESTATE, "scratch not released");
    sd_arena_free(&act);
    if (!rc && m->reg.grad_bytes) {
        r->grads = malloc(m->reg.grad_bytes);
        memcpy(r->grads, m->reg.grad_mem, m->reg.grad_bytes);
    }
    return rc;
}

static int same(const sd_tensor *a, const sd_tensor *b)
{
    return !memcmp(a->data, b->data, sd_tensor_nbytes(a));
}

/* Forward, dx, dcontext, dvec and parameter gradients (label_emb included) against PyTorch; the
 * weights through both loaders (ldm single-file names, Diffusers names from the generator's table);
 * exact plan; inference = training; checkpointing, a frozen UNet and dvec alone give the same bits. */
static void test_sdxl_tiny_golden(void)
{
    sd_safetensors *st = NULL, *f1 = NULL, *f2 = NULL;
    sd_safetensors_writer *w1 = NULL, *w2 = NULL;
    xl_model a = { 0 }, b = { 0 }, c = { 0 }, fz = { 0 };
    xl_run r = { 0 }, r2 = { 0 }, rf = { 0 };
    sd_tensor in[5] = { { 0 } }, ref = { 0 }, yi = { 0 };
    FILE *fp = NULL;
    CK(sd_safetensors_open(data_path("sdxl_tiny.safetensors"), &st));
    static const char *const inputs[5] = { "golden.x", "golden.t", "golden.context", "golden.vec", "golden.dy" };
    for (int i = 0; i < 5; i++) CK(golden(st, inputs[i], &in[i]));
    CK(xl_open(&a, 1));
    sdxl_fill(&a.reg, "model.diffusion_model.");
    /* the C formula = the generator's */
    static const char *const wref[2] = { "label_emb.0.2.bias", "out.2.weight" };
    for (int i = 0; i < 2; i++) {
        char gname[128], key[160];
        snprintf(gname, sizeof gname, "golden.w.%s", wref[i]);
        snprintf(key, sizeof key, "model.diffusion_model.%s", wref[i]);
        CK(golden(st, gname, &ref));
        sd_param *p = sd_params_find(&a.reg, key);
        T_CHECKF(p && sd_tensor_numel(&p->value) == sd_tensor_numel(&ref) && same(&ref, &p->value),
                 "weight formula differs on %s", wref[i]);
        sd_tensor_free(&ref);
    }
    /* ldm single-file and Diffusers files of the same weights (Diffusers names: the generator's) */
    fp = fopen(data_path("sdxl_tiny_names.txt"), "r");
    T_CHECK(fp != NULL);
    if (!fp) goto done;
    CK(sd_safetensors_writer_new(&w1));
    CK(sd_safetensors_writer_new(&w2));
    char ln[256], dn[256], out[256], full[300];
    size_t nnames = 0;
    while (fscanf(fp, "%255s %255s", ln, dn) == 2) {
        nnames++;
        T_CHECKF(!sd_unet_name_to_diffusers(&a.u, ln, out, sizeof out) && !strcmp(out, dn), "%s -> %s, want %s", ln,
                 out, dn);
        T_CHECKF(!sd_unet_name_from_diffusers(&a.u, dn, out, sizeof out) && !strcmp(out, ln), "%s -> %s, want %s", dn,
                 out, ln);
        snprintf(full, sizeof full, "model.diffusion_model.%s", ln);
        sd_param *p = sd_params_find(&a.reg, full);
        T_CHECKF(p != NULL, "%s not registered", full);
        if (!p) continue;
        CK(sd_safetensors_writer_add(w1, full, SD_ST_F32, p->value.ndim, p->value.shape, p->value.data));
        CK(sd_safetensors_writer_add(w2, dn, SD_ST_F32, p->value.ndim, p->value.shape, p->value.data));
    }
    T_EQ_INT(nnames, sd_params_count(&a.reg));
    const char *p1 = t_path("sdxl_tiny_ldm.safetensors"), *p2 = t_path("sdxl_tiny_diffusers.safetensors");
    CK(sd_safetensors_writer_write(w1, p1));
    CK(sd_safetensors_writer_write(w2, p2));
    CK(sd_safetensors_open(p1, &f1));
    CK(sd_safetensors_open(p2, &f2));
    CK(xl_open(&b, 1));
    CK(xl_open(&c, 1));
    sd_load_report rep;
    CK(sd_unet_load(&b.u, f1, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, &rep));
    T_EQ_INT(rep.loaded, sd_params_count(&b.reg));
    sd_load_report_free(&rep);
    CK(sd_unet_load(&c.u, f2, SD_UNET_NAMES_DIFFUSERS, NULL, 0, &rep));
    T_EQ_INT(rep.loaded, sd_params_count(&c.reg));
    T_EQ_INT(rep.unexpected, 0);
    sd_load_report_free(&rep);
    T_CHECK(!memcmp(a.reg.value_mem, b.reg.value_mem, a.reg.value_bytes));
    T_CHECK(!memcmp(a.reg.value_mem, c.reg.value_mem, a.reg.value_bytes));
    /* training step against PyTorch */
    int exact = 0;
    CK(xl_step(&c, &r, in, 1, 1, 1, &exact));
    T_CHECK(exact);
    static const char *const outs[4] = { "golden.y", "golden.dx", "golden.dcontext", "golden.dvec" };
    sd_tensor *mine[4] = { &r.y, &r.dx, &r.dc, &r.dv };
    for (int i = 0; i < 4; i++) {
        CK(golden(st, outs[i], &ref));
        T_EQ_INT(sd_tensor_numel(&ref), sd_tensor_numel(mine[i]));
        double d = rel_diff(mine[i]->data, ref.data, sd_tensor_numel(&ref));
        printf("# sdxl_tiny: %s max rel diff %.3g\n", outs[i] + 7, d);
        T_CHECKF(d <= 2e-5, "sdxl %s %.3g", outs[i], d);
        sd_tensor_free(&ref);
    }
    double worst = 0;
    int ngrads = 0;
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *g = sd_safetensors_at(st, i);
        if (strncmp(g->name, "golden.grad.", 12)) continue;
        snprintf(full, sizeof full, "model.diffusion_model.%s", g->name + 12);
        sd_param *p = sd_params_find(&c.reg, full);
        T_CHECKF(p != NULL, "no parameter %s", full);
        if (!p) continue;
        CK(golden(st, g->name, &ref));
        T_EQ_INT(sd_tensor_numel(&ref), sd_tensor_numel(&p->grad));
        double d = rel_diff(p->grad.data, ref.data, sd_tensor_numel(&ref));
        T_CHECKF(d <= 2e-5, "sdxl grad %s %.3g", full, d);
        if (d > worst) worst = d;
        ngrads++;
        sd_tensor_free(&ref);
    }
    printf("# sdxl_tiny: %d parameter gradients, max rel diff %.3g\n", ngrads, worst);
    T_CHECK(ngrads >= 12);
    /* the ldm-loaded copy gives the same bits */
    CK(xl_step(&b, &r2, in, 1, 1, 1, NULL));
    T_CHECK(same(&r2.y, &r.y) && same(&r2.dx, &r.dx) && same(&r2.dc, &r.dc) && same(&r2.dv, &r.dv));
    /* inference = training forward */
    CK(sd_tensor_alloc(&yi, SD_F32, 4, r.y.shape));
    CK(sd_unet_forward(&g_ctx, &c.u, NULL, &yi, &in[0], &in[1], &in[2], &in[3]));
    T_CHECK(same(&yi, &r.y));
    T_EQ_INT(g_ctx.scratch.used, 0);
    /* gradient checkpointing: identical gradients, dvec included */
    sd_unet_set_checkpoint(&c.u, NULL, 1);
    exact = 0;
    CK(xl_step(&c, &r2, in, 1, 1, 1, &exact));
    sd_unet_set_checkpoint(&c.u, NULL, 0);
    T_CHECK(exact);
    T_CHECK(same(&r2.y, &r.y) && same(&r2.dx, &r.dx) && same(&r2.dc, &r.dc) && same(&r2.dv, &r.dv));
    T_CHECK(!memcmp(r2.grads, r.grads, c.reg.grad_bytes));
    /* a frozen UNet: dvec alone (text encoder 2 training through the pooled vector) and dcontext */
    CK(xl_open(&fz, 0));
    CK(sd_unet_load(&fz.u, f1, SD_UNET_NAMES_LDM, "model.diffusion_model.", 0, NULL));
    T_EQ_INT(fz.reg.grad_bytes, 0);
    CK(xl_step(&fz, &rf, in, 0, 0, 1, &exact));
    T_CHECK(exact);
    T_CHECK(same(&rf.y, &r.y) && same(&rf.dv, &r.dv));
    CK(xl_step(&fz, &rf, in, 0, 1, 0, NULL));
    T_CHECK(same(&rf.dc, &r.dc));
    /* misuse: the vector is required, and its gradient needs it */
    T_EQ_INT(sd_unet_forward(&g_ctx, &c.u, NULL, &yi, &in[0], &in[1], &in[2], NULL), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "vector") != NULL);
    {
        sd_tensor bad = in[3];
        bad.shape[1] = 39;
        T_EQ_INT(sd_unet_forward(&g_ctx, &c.u, NULL, &yi, &in[0], &in[1], &in[2], &bad), SD_EINVAL);
    }
    T_EQ_INT(g_ctx.scratch.used, 0);
done:
    if (fp) fclose(fp);
    for (int i = 0; i < 5; i++) sd_tensor_free(&in[i]);
    sd_tensor_free(&ref);
    sd_tensor_free(&yi);
    xl_run_free(&r);
    xl_run_free(&r2);
    xl_run_free(&rf);
    xl_close(&a);
    xl_close(&b);
    xl_close(&c);
    xl_close(&fz);
    sd_safetensors_writer_free(w1);
    sd_safetensors_writer_free(w2);
    sd_safetensors_close(st);
    sd_safetensors_close(f1);
    sd_safetensors_close(f2);
}

/* A vector given to a UNet without label_emb, or dvec without a vector, is refused. */
static void test_sdxl_vec_misuse(void)
{
    model m = { 0 };
    sd_tensor x = { 0 }, y = { 0 }, t = { 0 }, c = { 0 }, v = { 0 }, dy = { 0 };
    sd_arena act = { 0 };
    CK(model_open(&m, sd2_cfg(), 1, SD_F32));
    CK(sd_tensor_alloc(&x, SD_F32, 4, (int64_t[]){ 1, 4, 8, 8 }));
    CK(sd_tensor_alloc(&y, SD_F32, 4, (int64_t[]){ 1, 4, 8, 8 }));
    CK(sd_tensor_alloc(&dy, SD_F32, 4, (int64_t[]){ 1, 4, 8, 8 }));
    CK(sd_tensor_alloc(&t, SD_F32, 1, (int64_t[]){ 1 }));
    CK(sd_tensor_alloc(&c, SD_F32, 3, (int64_t[]){ 1, 3, 48 }));
    CK(sd_tensor_alloc(&v, SD_F32, 2, (int64_t[]){ 1, 16 }));
    T_EQ_INT(sd_unet_forward(&g_ctx, &m.u, NULL, &y, &x, &t, &c, &v), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "label_emb") != NULL);
    sd_nn_plan p = sd_unet_plan(&m.u, 1, 8, 8, 3);
    CK(sd_nn_arena_init(&act, SD_DEV_CPU, p.saved));
    CK(sd_unet_forward(&g_ctx, &m.u, &act, &y, &x, &t, &c, NULL));
    T_EQ_INT(sd_unet_backward(&g_ctx, &m.u, NULL, NULL, &v, &dy), SD_EINVAL);
    T_EQ_INT(g_ctx.scratch.used, 0);
done:
    sd_arena_free(&act);
    sd_tensor_free(&x);
    sd_tensor_free(&y);
    sd_tensor_free(&dy);
    sd_tensor_free(&t);
    sd_tensor_free(&c);
    sd_tensor_free(&v);
    if (m.ok) model_close(&m);
}

/* LoRA hook points of the real SDXL base UNet (registration only): kohya's module counts (722
 * transformer linears; 788 with the ResBlock/sampler convs of conv_dim), roles, ldm keys (kohya's
 * SDXL LoRA names) and Diffusers names, parameter count. */
static void test_sdxl_layers(void)
{
    sd_model_config cfg;
    sd_params reg;
    sd_unet u;
    sd_model_config_preset(SD_FAMILY_SDXL, &cfg);
    sd_params_init(&reg);
    if (sd_unet_init(&u, &reg, "model.diffusion_model", &cfg.unet)) {
        printf("# %s\n", sd_errmsg());
        T_CHECK(0);
        sd_params_free(&reg);
        return;
    }
    size_t tr = 0, conv = 0, other = 0, c1 = 0;
    for (size_t i = 0; i < sd_unet_layer_count(&u); i++) {
        const sd_unet_layer *l = sd_unet_layer_at(&u, i);
        if (l->role == SD_UNET_ROLE_TRANSFORMER) tr++;
        else if (l->role == SD_UNET_ROLE_OTHER) other++;
        else conv++;
        c1 += l->conv1x1;
    }
    T_EQ_INT(tr, 722);
    T_EQ_INT(tr + conv, 788);
    T_EQ_INT(other, 6);   /* time_embed.0/2, label_emb.0.0/0.2, conv_in, conv_out */
    T_EQ_INT(c1, 0);
    const sd_unet_layer *l = sd_unet_layer_find(&u, "input_blocks.4.1.transformer_blocks.0.attn1.to_q");
    T_CHECK(l && l->role == SD_UNET_ROLE_TRANSFORMER && l->in == 640 &&
            !strcmp(l->diffusers, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"));
    l = sd_unet_layer_find(&u, "input_blocks.8.1.transformer_blocks.9.attn2.to_k");
    T_CHECK(l && l->in == 2048 && l->out == 1280 &&
            !strcmp(l->diffusers, "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k"));
    l = sd_unet_layer_find(&u, "middle_block.1.transformer_blocks.9.ff.net.2");
    T_CHECK(l && !strcmp(l->diffusers, "mid_block.attentions.0.transformer_blocks.9.ff.net.2"));
    T_CHECK(sd_unet_layer_find(&u, "middle_block.1.transformer_blocks.10.ff.net.2") == NULL);
    T_CHECK(sd_unet_layer_find(&u, "input_blocks.1.1.proj_in") == NULL);   /* no attention at level 0 */
    l = sd_unet_layer_find(&u, "output_blocks.2.2.conv");
    T_CHECK(l && l->role == SD_UNET_ROLE_SAMPLER && !strcmp(l->diffusers, "up_blocks.0.upsamplers.0.conv"));
    l = sd_unet_layer_find(&u, "output_blocks.5.2.conv");
    T_CHECK(l && !strcmp(l->diffusers, "up_blocks.1.upsamplers.0.conv"));
    l = sd_unet_layer_find(&u, "output_blocks.8.0.skip_connection");
    T_CHECK(l && l->role == SD_UNET_ROLE_RESBLOCK && !strcmp(l->diffusers, "up_blocks.2.resnets.2.conv_shortcut"));
    l = sd_unet_layer_find(&u, "output_blocks.3.1.transformer_blocks.1.attn1.to_out.0");
    T_CHECK(l && !strcmp(l->diffusers, "up_blocks.1.attentions.0.transformer_blocks.1.attn1.to_out.0"));
    l = sd_unet_layer_find(&u, "label_emb.0.0");
    T_CHECK(l && l->role == SD_UNET_ROLE_OTHER && l->in == 2816 && l->out == 1280 &&
            !strcmp(l->diffusers, "add_embedding.linear_1"));
    l = sd_unet_layer_find(&u, "label_emb.0.2");
    T_CHECK(l && !strcmp(l->diffusers, "add_embedding.linear_2"));
    sd_params_totals tot;
    sd_params_get_totals(&reg, &tot);
    printf("# SDXL UNet: %lld parameters in %zu tensors, %.4g GFLOP per 128x128 forward\n", (long long)tot.numel,
           tot.count, sd_unet_forward_flops(&u, 128, 128, 77) * 1e-9);
    T_EQ_INT(tot.numel, 2567463684LL);
    T_CHECK(sd_unet_weight_flops(&u, 128, 128, 77) < sd_unet_forward_flops(&u, 128, 128, 77));
    sd_unet_free(&u);
    sd_params_free(&reg);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0)) {
        printf("# %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_sd1_tiny_golden);
    T_RUN(test_sd2_tiny_golden);
    if (getenv("SD_UNET_LARGE_GOLDEN")) T_RUN(test_sd1_large_golden);
    else T_SKIP("test_sd1_large_golden", "SD_UNET_LARGE_GOLDEN not set (make_unet_golden.py --large DIR)");
    T_RUN(test_diffusers_names);
    T_RUN(test_diffusers_load);
    T_RUN(test_lora_layers);
    T_RUN(test_lora_attach);
    T_RUN(test_unet_misuse);
    T_RUN(test_sdxl_tiny_golden);
    T_RUN(test_sdxl_vec_misuse);
    T_RUN(test_sdxl_layers);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
