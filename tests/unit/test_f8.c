/* float8_e4m3fn storage (--fp8_base): decode of all 256 codes and f32 -> code rounding against the
 * table of tests/golden/gen/make_f8_golden.py (PyTorch's c10 rounding from the format definition);
 * linear and conv2d forward/backward with f8 weights equal the same ops on the f32 weights rounded
 * to f8 (bit for bit); a registry with f8 frozen storage counts one byte per weight element. */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "nn/params.h"
#include "tensor/ops.h"
#include "test.h"
#include "f8_golden.h"

static uint64_t g_rng = 99;
static float frand(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static void test_decode(void)
{
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        float f = sd_f8e4m3_to_f32((uint8_t)c);
        uint32_t u;
        memcpy(&u, &f, 4);
        if (u != f8_decode_bits[c]) {
            if (bad++ < 5) printf("#   code 0x%02x: 0x%08x, expected 0x%08x\n", c, u, f8_decode_bits[c]);
        }
    }
    T_EQ_INT(bad, 0);
    /* every code but NaN encodes back to itself */
    bad = 0;
    for (int c = 0; c < 256; c++) bad += sd_f32_to_f8e4m3(sd_f8e4m3_to_f32((uint8_t)c)) != c;
    T_EQ_INT(bad, 0);
    uint8_t codes[256];
    float vals[256];
    for (int c = 0; c < 256; c++) codes[c] = (uint8_t)c;
    sd_f8e4m3_to_f32_n(codes, vals, 256);
    T_CHECK(vals[0x7e] == 448.0f && vals[0x01] == ldexpf(1, -9) && isnan(vals[0xff]) && vals[0x38] == 1.0f);
}

static void test_encode(void)
{
    size_t n = sizeof f8_encode_cases / sizeof f8_encode_cases[0], bad = 0;
    for (size_t i = 0; i < n; i++) {
        float f;
        uint32_t u = f8_encode_cases[i].f;
        memcpy(&f, &u, 4);
        uint8_t c = sd_f32_to_f8e4m3(f);
        if (c != f8_encode_cases[i].code && bad++ < 5)
            printf("#   f32 0x%08x (%g): 0x%02x, expected 0x%02x\n", u, (double)f, c, f8_encode_cases[i].code);
    }
    T_EQ_INT(bad, 0);
    T_CHECK(n > 1000);
    /* the hand cases: saturation is NaN past 464, ties to even */
    T_EQ_INT(sd_f32_to_f8e4m3(448.0f), 0x7e);
    T_EQ_INT(sd_f32_to_f8e4m3(464.0f), 0x7e);
    T_EQ_INT(sd_f32_to_f8e4m3(470.0f), 0x7f);
    T_EQ_INT(sd_f32_to_f8e4m3(-480.0f), 0xff);
    T_EQ_INT(sd_f32_to_f8e4m3(INFINITY), 0x7f);
    T_EQ_INT(sd_f32_to_f8e4m3(1e-9f), 0x00);
    T_EQ_INT(sd_f32_to_f8e4m3(ldexpf(1, -9)), 0x01);
    T_EQ_INT(sd_f32_to_f8e4m3(ldexpf(3, -10)), 0x02);
}

static sd_tensor rt(int nd, const int64_t *sh, float scale)
{
    sd_tensor t;
    sd_tensor_alloc(&t, SD_F32, nd, sh);
    for (int64_t i = 0; i < sd_tensor_numel(&t); i++) ((float *)t.data)[i] = frand() * scale;
    return t;
}

/* w8: w in f8; wr: f32 copy of the f8 values */
static void to_f8(const sd_tensor *w, sd_tensor *w8, sd_tensor *wr)
{
    size_t n = (size_t)sd_tensor_numel(w);
    sd_tensor_alloc(w8, SD_F8E4M3, w->ndim, w->shape);
    sd_tensor_alloc(wr, SD_F32, w->ndim, w->shape);
    sd_f32_to_f8e4m3_n(w->data, w8->data, n);
    sd_f8e4m3_to_f32_n(w8->data, wr->data, n);
}

static int same(const sd_tensor *a, const sd_tensor *b) { return !memcmp(a->data, b->data, sd_tensor_nbytes(a)); }

static void test_layers(void)
{
    sd_ctx ctx;
    T_EQ_INT(sd_ctx_init(&ctx, SD_DEV_CPU, 2, 0), SD_OK);
    T_CHECK(sd_dtype_size(SD_F8E4M3) == 1 && !strcmp(sd_dtype_name(SD_F8E4M3), "f8_e4m3fn"));
    /* linear: y = x W^T + b; backward dx (no dW: frozen), db */
    sd_tensor x = rt(SD_DIMS(5, 24), 1), w = rt(SD_DIMS(13, 24), 0.5f), b = rt(SD_DIMS(13), 1), w8, wr;
    to_f8(&w, &w8, &wr);
    sd_tensor y1, y2, dy = rt(SD_DIMS(5, 13), 1), dx1, dx2, db1, db2;
    sd_tensor_alloc(&y1, SD_F32, SD_DIMS(5, 13)); sd_tensor_alloc(&y2, SD_F32, SD_DIMS(5, 13));
    sd_tensor_alloc(&dx1, SD_F32, SD_DIMS(5, 24)); sd_tensor_alloc(&dx2, SD_F32, SD_DIMS(5, 24));
    sd_tensor_alloc(&db1, SD_F32, SD_DIMS(13)); sd_tensor_alloc(&db2, SD_F32, SD_DIMS(13));
    T_EQ_INT(sd_op_linear(&ctx, &y1, &x, &w8, &b), SD_OK);
    T_EQ_INT(sd_op_linear(&ctx, &y2, &x, &wr, &b), SD_OK);
    T_CHECK(same(&y1, &y2));
    T_EQ_INT(sd_op_linear_bwd(&ctx, &dx1, NULL, &db1, &dy, &x, &w8), SD_OK);
    T_EQ_INT(sd_op_linear_bwd(&ctx, &dx2, NULL, &db2, &dy, &x, &wr), SD_OK);
    T_CHECK(same(&dx1, &dx2) && same(&db1, &db2));
    /* the rounding changed the weights: a different product from the f32 weights */
    T_EQ_INT(sd_op_linear(&ctx, &y2, &x, &w, &b), SD_OK);
    T_CHECK(!same(&y1, &y2));
    /* conv2d 3x3, padding 1 */
    sd_tensor cx = rt(SD_DIMS(2, 3, 6, 5), 1), cw = rt(SD_DIMS(4, 3, 3, 3), 0.5f), cw8, cwr;
    to_f8(&cw, &cw8, &cwr);
    sd_tensor cy1, cy2, cdy = rt(SD_DIMS(2, 4, 6, 5), 1), cdx1, cdx2;
    sd_tensor_alloc(&cy1, SD_F32, SD_DIMS(2, 4, 6, 5)); sd_tensor_alloc(&cy2, SD_F32, SD_DIMS(2, 4, 6, 5));
    sd_tensor_alloc(&cdx1, SD_F32, SD_DIMS(2, 3, 6, 5)); sd_tensor_alloc(&cdx2, SD_F32, SD_DIMS(2, 3, 6, 5));
    sd_conv2d_geom g = sd_conv2d_geom_make(1, 1);
    T_EQ_INT(sd_op_conv2d(&ctx, &cy1, &cx, &cw8, NULL, g), SD_OK);
    T_EQ_INT(sd_op_conv2d(&ctx, &cy2, &cx, &cwr, NULL, g), SD_OK);
    T_CHECK(same(&cy1, &cy2));
    T_EQ_INT(sd_op_conv2d_bwd(&ctx, &cdx1, NULL, NULL, &cdy, &cx, &cw8, g), SD_OK);
    T_EQ_INT(sd_op_conv2d_bwd(&ctx, &cdx2, NULL, NULL, &cdy, &cx, &cwr, g), SD_OK);
    T_CHECK(same(&cdx1, &cdx2));
    /* f8 is a weight storage only: not an activation dtype */
    sd_tensor x8;
    sd_tensor_alloc(&x8, SD_F8E4M3, SD_DIMS(5, 24));
    T_EQ_INT(sd_op_linear(&ctx, &y1, &x8, &w8, NULL), SD_EINVAL);
    sd_tensor *all[] = { &x, &w, &b, &w8, &wr, &y1, &y2, &dy, &dx1, &dx2, &db1, &db2, &cx, &cw, &cw8, &cwr, &cy1,
                         &cy2, &cdy, &cdx1, &cdx2, &x8 };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sd_tensor_free(all[i]);
    sd_ctx_free(&ctx);
}

static void test_registry(void)
{
    sd_params r;
    sd_params_init(&r);
    sd_param *a, *bb;
    T_EQ_INT(sd_params_add(&r, "l", "weight", 2, (int64_t[]){ 64, 32 }, SD_PARAM_TRAINABLE | SD_PARAM_HALF_OK, &a), SD_OK);
    T_EQ_INT(sd_params_add(&r, "l", "bias", 1, (int64_t[]){ 64 }, SD_PARAM_TRAINABLE, &bb), SD_OK);
    sd_params_set_trainable(&r, "", 0);
    T_EQ_INT(sd_params_set_frozen_dtype(&r, SD_F8E4M3), SD_OK);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), SD_OK);
    T_EQ_INT(a->value.dtype, SD_F8E4M3);
    T_EQ_INT(bb->value.dtype, SD_F32);
    T_EQ_INT(r.value_bytes, 64 * 32 + 256);   /* 1 byte per weight element, the bias f32 */
    sd_params_free(&r);
    /* f32 registry converted after loading (--base_weights merges first) */
    sd_params_init(&r);
    T_EQ_INT(sd_params_add(&r, "l", "weight", 2, (int64_t[]){ 4, 4 }, SD_PARAM_HALF_OK, &a), SD_OK);
    T_EQ_INT(sd_params_alloc(&r, SD_DEV_CPU), SD_OK);
    for (int i = 0; i < 16; i++) ((float *)a->value.data)[i] = 1.0f + (float)i / 64;
    T_EQ_INT(sd_params_convert_frozen(&r, SD_F8E4M3), SD_OK);
    T_EQ_INT(a->value.dtype, SD_F8E4M3);
    T_EQ_INT(((uint8_t *)a->value.data)[2], sd_f32_to_f8e4m3(1.0f + 2.0f / 64));
    sd_params_free(&r);
}

int main(void)
{
    T_RUN(test_decode);
    T_RUN(test_encode);
    T_RUN(test_layers);
    T_RUN(test_registry);
    T_DONE();
}
