/* Parameter registry: registration, lookup, trainable/frozen dtypes, allocation, zero_grad,
 * totals, the load hook, and strict safetensors loading (missing/unexpected keys, shapes,
 * dtypes, key maps, 1×1 squeeze, half storage), f32 weights stored in half precision after loading. */
#include "base/error.h"
#include "base/half.h"
#include "nn/params.h"
#include "tensor/ops.h"
#include "tensor/device.h"
#include "test.h"

static sd_ctx g_ctx;

static void test_register(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *a, *b, *c;
    T_CHECK(sd_params_add(&r, "blk", "weight", 2, (int64_t[]){ 4, 3 }, SD_PARAM_TRAINABLE | SD_PARAM_HALF_OK, &a) == SD_OK);
    T_CHECK(sd_params_add(&r, "blk", "bias", 1, (int64_t[]){ 4 }, SD_PARAM_TRAINABLE, &b) == SD_OK);
    T_CHECK(sd_params_add(&r, "", "scale", 0, NULL, 0, &c) == SD_OK);
    T_EQ_STR(a->key, "blk.weight");
    T_EQ_STR(c->key, "scale");
    T_EQ_INT(sd_params_add(&r, "blk", "weight", 1, (int64_t[]){ 2 }, 0, NULL), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "blk.weight") != NULL);
    T_EQ_INT(sd_params_add(&r, "x", "y", 2, (int64_t[]){ -1, 2 }, 0, NULL), SD_EINVAL);
    /* many keys: the hash table grows, every key is found, order is kept */
    for (int i = 0; i < 300; i++) {
        char n[32];
        snprintf(n, sizeof n, "p%d", i);
        T_CHECK(sd_params_add(&r, "many", n, 1, (int64_t[]){ i + 1 }, i % 2 ? SD_PARAM_TRAINABLE : 0, NULL) == SD_OK);
    }
    T_EQ_INT(sd_params_count(&r), 303);
    T_CHECK(sd_params_find(&r, "many.p299") == sd_params_at(&r, 302));
    T_CHECK(sd_params_find(&r, "many.p300") == NULL);
    T_CHECK(sd_params_find(&r, "blk.bias") == b && b->index == 1);
    /* trainable by prefix, frozen half storage */
    T_EQ_INT(sd_params_set_trainable(&r, "many.", 0), 150);
    T_EQ_INT(sd_params_set_trainable(&r, "blk.w", 0), 1);
    T_CHECK(sd_params_set_frozen_dtype(&r, SD_BF16) == SD_OK);
    T_EQ_INT(sd_params_set_frozen_dtype(&r, SD_I32), SD_EINVAL);
    sd_params_totals t;
    sd_params_get_totals(&r, &t);
    T_EQ_INT(t.count, 303);
    T_EQ_INT(t.trainable_count, 1);
    T_EQ_INT(t.trainable_numel, 4);
    T_EQ_INT(t.numel, 12 + 4 + 1 + 300 * 301 / 2);
    T_CHECK(sd_params_alloc(&r, SD_DEV_CPU) == SD_OK);
    T_EQ_INT(a->value.dtype, SD_BF16);
    T_CHECK(a->grad.data == NULL && b->grad.data != NULL && b->value.dtype == SD_F32);
    T_EQ_INT(r.value_bytes, t.value_bytes);
    T_EQ_INT(r.grad_bytes, t.grad_bytes);
    T_EQ_INT(((uintptr_t)sd_params_find(&r, "many.p7")->value.data) % 64, 0);
    T_EQ_INT(sd_params_add(&r, "late", "w", 1, (int64_t[]){ 1 }, 0, NULL), SD_ESTATE);
    T_EQ_INT(sd_params_set_trainable(&r, "", 1), SD_ESTATE);
    /* zero_grad */
    float *g = b->grad.data;
    for (int i = 0; i < 4; i++) g[i] = 3.0f;
    T_CHECK(sd_params_zero_grad(&g_ctx, &r) == SD_OK);
    T_CHECK(g[0] == 0 && g[3] == 0);
    sd_params_free(&r);
    T_EQ_INT(sd_params_count(&r), 0);
}

static int hook_fill(void *user, sd_param *p)
{
    int *calls = user;
    (*calls)++;
    if (!strcmp(p->key, "b")) return SD_ENOTFOUND;
    if (!strcmp(p->key, "bad")) return sd_err(SD_EFORMAT, "hook: bad tensor");
    return sd_op_fill(&g_ctx, &p->value, 2.5f);
}

static void test_load_hook(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *a;
    sd_params_add(&r, NULL, "a", 1, (int64_t[]){ 3 }, 0, &a);
    sd_params_add(&r, NULL, "b", 1, (int64_t[]){ 3 }, 0, NULL);
    size_t missing = 9;
    int calls = 0;
    T_EQ_INT(sd_params_load(&r, hook_fill, &calls, &missing), SD_ESTATE);
    sd_params_alloc(&r, SD_DEV_CPU);
    T_CHECK(sd_params_load(&r, hook_fill, &calls, &missing) == SD_OK);
    T_EQ_INT(calls, 2);
    T_EQ_INT(missing, 1);
    T_CHECK(((float *)a->value.data)[2] == 2.5f);
    sd_params_free(&r);
    sd_params_init(&r);
    sd_params_add(&r, NULL, "bad", 1, (int64_t[]){ 3 }, 0, NULL);
    sd_params_alloc(&r, SD_DEV_CPU);
    T_EQ_INT(sd_params_load(&r, hook_fill, &calls, NULL), SD_EFORMAT);
    sd_params_free(&r);
}

/* A file with model.diffusion_model.{a [2,3] f32, b [4] f16, c [2,3,1,1] f32, d [2] i32} and
 * first_stage_model.e [1] f32. */
static sd_safetensors *make_file(void)
{
    static float a[6] = { 1, 2, 3, 4, 5, 6 }, c[6] = { -1, -2, -3, -4, -5, -6 }, e[1] = { 9 };
    static uint16_t b[4] = { 0x3c00, 0x4000, 0x4200, 0x4400 };   /* 1 2 3 4 */
    static int32_t d[2] = { 7, 8 };
    sd_safetensors_writer *w;
    sd_safetensors_writer_new(&w);
    sd_safetensors_writer_add(w, "model.diffusion_model.a", SD_ST_F32, 2, (int64_t[]){ 2, 3 }, a);
    sd_safetensors_writer_add(w, "model.diffusion_model.b", SD_ST_F16, 1, (int64_t[]){ 4 }, b);
    sd_safetensors_writer_add(w, "model.diffusion_model.c", SD_ST_F32, 4, (int64_t[]){ 2, 3, 1, 1 }, c);
    sd_safetensors_writer_add(w, "model.diffusion_model.d", SD_ST_I32, 1, (int64_t[]){ 2 }, d);
    sd_safetensors_writer_add(w, "first_stage_model.e", SD_ST_F32, 1, (int64_t[]){ 1 }, e);
    const char *path = t_path("nn_params.safetensors");
    int rc = sd_safetensors_writer_write(w, path);
    sd_safetensors_writer_free(w);
    sd_safetensors *st = NULL;
    if (!rc) rc = sd_safetensors_open(path, &st);
    if (rc) printf("# %s\n", sd_errmsg());
    return st;
}

typedef struct { const char *name; int ndim; int64_t shape[4]; } pdesc;

static void make_reg(sd_params *r, const pdesc *d, int n, sd_dtype frozen)
{
    sd_params_init(r);
    for (int i = 0; i < n; i++) sd_params_add(r, "unet", d[i].name, d[i].ndim, d[i].shape, SD_PARAM_HALF_OK, NULL);
    sd_params_set_frozen_dtype(r, frozen);
    sd_params_alloc(r, SD_DEV_CPU);
}

static void test_load_safetensors(void)
{
    sd_safetensors *st = make_file();
    T_CHECK(st != NULL);
    if (!st) return;
    sd_key_map map[] = { { "unet.", "model.diffusion_model." } };
    pdesc full[] = { { "a", 2, { 2, 3 } }, { "b", 1, { 4 } }, { "c", 4, { 2, 3, 1, 1 } } };
    sd_params r;
    sd_load_report rep;

    /* strict: d (i32) is claimed by nobody under the mapped prefix → unexpected */
    make_reg(&r, full, 3, SD_F32);
    T_EQ_INT(sd_params_load_safetensors(&r, st, map, 1, 0, &rep), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "1 unexpected key: model.diffusion_model.d") != NULL);
    T_EQ_INT(rep.loaded, 3);
    T_EQ_INT(rep.unexpected, 1);
    sd_load_report_free(&rep);
    T_CHECK(sd_params_load_safetensors(&r, st, map, 1, SD_LOAD_ALLOW_UNEXPECTED, &rep) == SD_OK);
    T_EQ_INT(rep.missing, 0);
    T_CHECK(((float *)sd_params_find(&r, "unet.a")->value.data)[5] == 6.0f);
    T_CHECK(((float *)sd_params_find(&r, "unet.b")->value.data)[3] == 4.0f);   /* f16 → f32 */
    sd_load_report_free(&rep);
    sd_params_free(&r);

    /* missing keys are listed by our name; allowed with the flag */
    pdesc more[] = { { "a", 2, { 2, 3 } }, { "b", 1, { 4 } }, { "c", 4, { 2, 3, 1, 1 } }, { "x", 1, { 1 } }, { "y", 1, { 1 } } };
    make_reg(&r, more, 5, SD_F32);
    T_EQ_INT(sd_params_load_safetensors(&r, st, map, 1, SD_LOAD_ALLOW_UNEXPECTED, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "2 missing keys: unet.x, unet.y") != NULL);
    T_CHECK(strstr(sd_errmsg(), "nn_params.safetensors") != NULL);
    T_CHECK(sd_params_load_safetensors(&r, st, map, 1, SD_LOAD_ALLOW_UNEXPECTED | SD_LOAD_ALLOW_MISSING, &rep) == SD_OK);
    T_EQ_INT(rep.missing, 2);
    T_EQ_STR(rep.missing_keys[1], "unet.y");
    sd_load_report_free(&rep);
    sd_params_free(&r);

    /* shape mismatch */
    pdesc wrong[] = { { "a", 2, { 3, 2 } } };
    make_reg(&r, wrong, 1, SD_F32);
    T_EQ_INT(sd_params_load_safetensors(&r, st, map, 1, SD_LOAD_ALLOW_UNEXPECTED, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "tensor 'model.diffusion_model.a': expected shape [3,2], got [2,3]") != NULL);
    sd_params_free(&r);

    /* integer dtype refused */
    pdesc di[] = { { "d", 1, { 2 } } };
    make_reg(&r, di, 1, SD_F32);
    T_EQ_INT(sd_params_load_safetensors(&r, st, map, 1, SD_LOAD_ALLOW_UNEXPECTED, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "not a floating type") != NULL);
    sd_params_free(&r);

    /* 1×1 squeeze in both directions; half storage */
    pdesc sq[] = { { "a", 4, { 2, 3, 1, 1 } }, { "c", 2, { 2, 3 } } };
    make_reg(&r, sq, 2, SD_F16);
    T_EQ_INT(sd_params_load_safetensors(&r, st, map, 1, SD_LOAD_ALLOW_UNEXPECTED, NULL), SD_EFORMAT);
    T_CHECK(sd_params_load_safetensors(&r, st, map, 1, SD_LOAD_ALLOW_UNEXPECTED | SD_LOAD_SQUEEZE_1X1, NULL) == SD_OK);
    sd_param *pc = sd_params_find(&r, "unet.c");
    T_EQ_INT(pc->value.dtype, SD_F16);
    T_EQ_INT(((uint16_t *)pc->value.data)[1], 0xc000);   /* -2 in f16 */
    sd_params_free(&r);

    /* no map: every file tensor must be claimed */
    sd_params_init(&r);
    sd_params_add(&r, "first_stage_model", "e", 1, (int64_t[]){ 1 }, 0, NULL);
    sd_params_alloc(&r, SD_DEV_CPU);
    T_EQ_INT(sd_params_load_safetensors(&r, st, NULL, 0, 0, &rep), SD_EFORMAT);
    T_EQ_INT(rep.unexpected, 4);
    T_CHECK(strstr(sd_errmsg(), "4 unexpected keys") != NULL);
    sd_load_report_free(&rep);
    sd_params_free(&r);
    /* a map limits the unexpected check to its file prefixes; MAPPED_ONLY skips our other keys */
    sd_params_init(&r);
    sd_params_add(&r, "vae", "e", 1, (int64_t[]){ 1 }, 0, NULL);
    sd_params_add(&r, "te", "z", 1, (int64_t[]){ 1 }, 0, NULL);
    sd_params_alloc(&r, SD_DEV_CPU);
    sd_key_map other[] = { { "vae.", "first_stage_model." } };
    T_EQ_INT(sd_params_load_safetensors(&r, st, other, 1, 0, NULL), SD_EFORMAT);   /* te.z missing */
    T_CHECK(sd_params_load_safetensors(&r, st, other, 1, SD_LOAD_MAPPED_ONLY, &rep) == SD_OK);
    T_EQ_INT(rep.loaded, 1);
    T_EQ_INT(rep.unexpected, 0);
    T_CHECK(((float *)sd_params_find(&r, "vae.e")->value.data)[0] == 9.0f);
    sd_load_report_free(&rep);
    sd_params_free(&r);

    /* not allocated */
    sd_params_init(&r);
    T_EQ_INT(sd_params_load_safetensors(&r, st, NULL, 0, 0, NULL), SD_ESTATE);
    sd_params_free(&r);
    sd_safetensors_close(st);
}

/* sd_params_move: a no-op to the same device; to CUDA and back the bytes round-trip (with a GPU),
 * without one the error leaves the registry on the host, intact. */
static void test_move(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *w, *b;
    T_EQ_INT(sd_params_move(&r, SD_DEV_CUDA), SD_ESTATE);
    T_CHECK(sd_params_add(&r, "l", "weight", 2, (int64_t[]){ 5, 7 }, SD_PARAM_TRAINABLE, &w) == SD_OK);
    T_CHECK(sd_params_add(&r, "l", "bias", 1, (int64_t[]){ 5 }, 0, &b) == SD_OK);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), SD_OK);
    float *wv = w->value.data, *bv = b->value.data, *wg = w->grad.data;
    for (int i = 0; i < 35; i++) { wv[i] = (float)i * 0.5f; wg[i] = (float)-i; }
    for (int i = 0; i < 5; i++) bv[i] = (float)i + 100;
    T_EQ_INT(sd_params_move(&r, SD_DEV_CPU), SD_OK);
    T_CHECK(w->value.data == wv);
    if (sd_device_count() > 0) T_EQ_INT(sd_device_init(0), SD_OK);
    int rc = sd_params_move(&r, SD_DEV_CUDA);
    if (rc == SD_OK) {
        T_CHECK(w->value.device == SD_DEV_CUDA && b->grad.data == NULL && w->grad.device == SD_DEV_CUDA);
        T_EQ_INT(sd_params_move(&r, SD_DEV_CPU), SD_OK);
        wv = w->value.data; bv = b->value.data; wg = w->grad.data;
    } else {
        T_CHECK(rc < 0 && sd_device_count() == 0);
        T_CHECK(w->value.data == wv && r.device == SD_DEV_CPU);
    }
    T_CHECK(w->value.device == SD_DEV_CPU && b->value.device == SD_DEV_CPU);
    int same = 1;
    for (int i = 0; i < 35; i++) same &= wv[i] == (float)i * 0.5f && wg[i] == (float)-i;
    for (int i = 0; i < 5; i++) same &= bv[i] == (float)i + 100;
    T_CHECK(same);
    sd_params_free(&r);
    sd_device_shutdown();
}

/* f32 values edited after loading, then stored f16/bf16: frozen half-OK weights rounded to nearest
 * even as loading does, trainable and other parameters kept f32, the layout and pointers valid */
static void test_convert_frozen(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *w, *b, *t;
    T_CHECK(sd_params_add(&r, "l", "weight", 2, (int64_t[]){ 3, 5 }, SD_PARAM_HALF_OK, &w) == SD_OK);
    T_CHECK(sd_params_add(&r, "l", "bias", 1, (int64_t[]){ 3 }, 0, &b) == SD_OK);
    T_CHECK(sd_params_add(&r, "m", "weight", 2, (int64_t[]){ 2, 2 }, SD_PARAM_HALF_OK | SD_PARAM_TRAINABLE, &t) == SD_OK);
    T_EQ_INT(sd_params_convert_frozen(&r, SD_BF16), SD_ESTATE);   /* not allocated */
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), SD_OK);
    float *wv = w->value.data, *bv = b->value.data;
    for (int i = 0; i < 15; i++) wv[i] = 1.0f + (float)i / 3.0f;
    for (int i = 0; i < 3; i++) bv[i] = 0.1f * (float)i;
    ((float *)t->value.data)[0] = 0.3f;
    T_EQ_INT(sd_params_convert_frozen(&r, SD_F16), SD_OK);
    T_CHECK(w->value.dtype == SD_F16 && b->value.dtype == SD_F32 && t->value.dtype == SD_F32);
    T_CHECK(t->grad.data != NULL && ((float *)t->value.data)[0] == 0.3f);
    int same = 1;
    for (int i = 0; i < 15; i++) same &= ((uint16_t *)w->value.data)[i] == sd_f32_to_f16(1.0f + (float)i / 3.0f);
    for (int i = 0; i < 3; i++) same &= ((float *)b->value.data)[i] == 0.1f * (float)i;
    T_CHECK(same);
    T_EQ_INT(sd_params_convert_frozen(&r, SD_BF16), SD_ESTATE);   /* already converted */
    sd_params_totals tt;
    sd_params_get_totals(&r, &tt);
    T_CHECK(tt.value_bytes == r.value_bytes);
    T_EQ_INT(sd_params_move(&r, SD_DEV_CPU), SD_OK);
    sd_params_free(&r);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 1, (size_t)16 << 20)) return 1;
    T_RUN(test_register);
    T_RUN(test_load_hook);
    T_RUN(test_load_safetensors);
    T_RUN(test_move);
    T_RUN(test_convert_frozen);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
