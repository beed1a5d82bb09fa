/* lib/train/optim8bit: bitsandbytes' AdamW8bit against the numpy transcription of its CUDA
 * kernels (tests/golden/gen/make_optim8bit_golden.py -> tests/data/optim8bit/adamw8bit.safetensors),
 * the quantisation maps, zero gradients, serialisation, thread-count independence and the
 * constructor's arguments. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "optim8bit_golden.h"
#include "test.h"
#include "train/optim8bit.h"
#include "train/pyfmt.h"

#define GOLDEN "tests/data/optim8bit/adamw8bit.safetensors"

typedef struct gcase {
    const char *name;
    int n;
    int64_t min8;
    double lrscale, beta1, beta2, eps, wd;
    int span, special;
} gcase;

static const gcase CASES[4] = {
    { "a", 1000, 4096, 1.0, 0.9, 0.999, 1e-8, 1e-2, 8, 0 },
    { "b", 5000, 4096, 1.0, 0.9, 0.999, 1e-8, 1e-2, 6, 0 },
    { "c", 4096, 4096, 1.0, 0.9, 0.99, 1e-6, 0.0, 12, 1 },
    { "d", 600, 512, 10.0, 0.8, 0.95, 1e-8, 0.1, 4, 1 },
};

static void specials(const char *name, int n, int step, float *g)
{
    if (!strcmp(name, "d")) {
        if (step == 6)
            for (int i = 512; i < n; i++) g[i] = NAN;
        return;
    }
    for (int i = 3 * 256; i < 4 * 256; i++) g[i] = 0.0f;
    if (step >= 3)
        for (int i = 5 * 256; i < 6 * 256; i++) g[i] = 0.0f;
    if (step == 1) g[103] = -0.0f;
    if (step == 2) g[100] = NAN;
    if (step == 4) g[101] = INFINITY, g[102] = -INFINITY;
}

static int64_t ulp_diff(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - (long long)ib);
}

/* ---- quantisation maps ----------------------------------------------------------------------- */

static void test_qmap_construction(void)
{
    const float *s = sd_bnb_qmap_signed(), *u = sd_bnb_qmap_unsigned();
    float s2[256], u2[256];
    sd_bnb_dynamic_map(1, s2);
    sd_bnb_dynamic_map(0, u2);
    T_CHECK(!memcmp(s, s2, sizeof s2));
    T_CHECK(!memcmp(u, u2, sizeof u2));
    for (int i = 1; i < 256; i++) {
        T_CHECKF(s[i - 1] < s[i], "signed map not increasing at %d", i);
        T_CHECKF(u[i - 1] < u[i], "unsigned map not increasing at %d", i);
    }
    /* ends and middle: 127 negatives, 0, 127 positives below 1, then 1 */
    T_CHECK(s[127] == 0.0f && !signbit(s[127]));
    T_CHECK(s[255] == 1.0f && u[255] == 1.0f);
    T_CHECK(u[0] == 0.0f);
    T_CHECK(s[126] < 0.0f && s[128] > 0.0f);
    /* the extremes of the decades: 1e-6·0.55 (the mean of linspace(0.1, 1, 2)), 1·(1 - 0.9/128) */
    T_CHECK(ulp_diff(s[128], 5.5e-7f) <= 1);
    T_CHECK(s[126] == -s[128]);
    T_CHECK(ulp_diff(s[254], 0.99296875f) <= 1);
    T_CHECK(ulp_diff(s[0], -0.99296875f) <= 1);
    /* unsigned: 1e-6·(0.1 + 0.55)/2 = 3.25e-7 first, 1 - 0.9/256 last below 1 */
    T_CHECK(ulp_diff(u[1], 3.25e-7f) <= 1);
    T_CHECK(ulp_diff(u[254], 0.996484375f) <= 2);
    /* symmetry of the signed map */
    for (int i = 0; i < 127; i++) T_CHECKF(s[i] == -s[254 - i], "signed map not symmetric at %d", i);
    /* entries per decade: signed 2^i positives in [10^(i-6)·0.1, 10^(i-6)), unsigned 2^(i+1) */
    for (int i = 0; i < 7; i++) {
        double lo = pow(10.0, i - 6) * 0.1, hi = pow(10.0, i - 6);
        int ns = 0, nu = 0;
        for (int k = 0; k < 256; k++) {
            if (s[k] > lo && s[k] < hi) ns++;
            if (u[k] > lo && u[k] < hi) nu++;
        }
        T_EQ_INT(ns, 1 << i);
        T_EQ_INT(nu, 1 << (i + 1));
    }

    /* against the generator: bitwise; against torch 1.13's own create_dynamic_map: <= 2 ulp */
    sd_safetensors *st = NULL;
    if (sd_safetensors_open(GOLDEN, &st) < 0) {
        printf("#   %s\n", sd_errmsg());
        T_CHECK(0);
        return;
    }
    float gs[256], gu[256], ts[256], tu[256];
    T_CHECK(o8_read_golden(st, "qmap_signed", SD_ST_F32, gs, 256) == 0);
    T_CHECK(o8_read_golden(st, "qmap_unsigned", SD_ST_F32, gu, 256) == 0);
    T_CHECK(o8_read_golden(st, "qmap_signed_torch", SD_ST_F32, ts, 256) == 0);
    T_CHECK(o8_read_golden(st, "qmap_unsigned_torch", SD_ST_F32, tu, 256) == 0);
    T_CHECK(!memcmp(s, gs, sizeof gs));
    T_CHECK(!memcmp(u, gu, sizeof gu));
    int nd = 0;
    int64_t worst = 0;
    for (int i = 0; i < 256; i++) {
        int64_t a = ulp_diff(s[i], ts[i]), b = ulp_diff(u[i], tu[i]);
        nd += (a != 0) + (b != 0);
        if (a > worst) worst = a;
        if (b > worst) worst = b;
    }
    printf("# maps vs torch 1.13's create_dynamic_map: %d of 512 entries differ, by <= %lld ulp\n", nd,
           (long long)worst);
    T_CHECK(worst <= 2);
    sd_safetensors_close(st);
}

static void test_quantize(void)
{
    const float *s = sd_bnb_qmap_signed(), *u = sd_bnb_qmap_unsigned();
    for (int i = 0; i < 256; i++) {
        T_EQ_INT(sd_bnb_quantize(s, 1, s[i]), i);
        T_EQ_INT(sd_bnb_quantize(u, 0, u[i]), i);
    }
    /* nearest code: just below / above the float midpoint of neighbours */
    for (int i = 0; i < 255; i++) {
        float mid = (s[i] + s[i + 1]) * 0.5f;
        T_EQ_INT(sd_bnb_quantize(s, 1, nextafterf(mid, -2.0f)), i);
        T_EQ_INT(sd_bnb_quantize(s, 1, nextafterf(mid, 2.0f)), i + 1);
        float mu = (u[i] + u[i + 1]) * 0.5f;
        T_EQ_INT(sd_bnb_quantize(u, 0, nextafterf(mu, -2.0f)), i);
        T_EQ_INT(sd_bnb_quantize(u, 0, nextafterf(mu, 2.0f)), i + 1);
    }
    /* a value exactly on the float midpoint goes to the last probe, always an even index
     * (127 ± 64 ± … ± 1) */
    for (int i = 0; i < 254; i++) {
        float mid = (s[i] + s[i + 1]) * 0.5f;
        T_EQ_INT(sd_bnb_quantize(s, 1, mid), i + (i & 1));
        float mu = (u[i] + u[i + 1]) * 0.5f;
        T_EQ_INT(sd_bnb_quantize(u, 0, mu), i + (i & 1));
    }
    /* out of range and NaN (all comparisons false: the search runs down to code 0) */
    T_EQ_INT(sd_bnb_quantize(s, 1, 1.5f), 255);
    T_EQ_INT(sd_bnb_quantize(s, 1, -1.5f), 0);
    T_EQ_INT(sd_bnb_quantize(u, 0, -0.5f), 0);
    T_EQ_INT(sd_bnb_quantize(s, 1, NAN), 0);
    T_EQ_INT(sd_bnb_quantize(u, 0, NAN), 0);
    /* tiny magnitudes round to zero's code */
    T_EQ_INT(sd_bnb_quantize(s, 1, 1e-9f), 127);
    T_EQ_INT(sd_bnb_quantize(s, 1, -1e-9f), 127);
    T_EQ_INT(sd_bnb_quantize(u, 0, 1e-9f), 0);
}

/* ---- golden steps ---------------------------------------------------------------------------- */

static void run_golden_case(const sd_safetensors *st, int ci, int nthreads)
{
    const gcase *c = &CASES[ci];
    int n = c->n;
    float *p = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float));
    float *want = malloc((size_t)n * sizeof(float));
    sd_adamw8bit_state s;
    T_CHECK(sd_adamw8bit_state_init(&s, n, c->min8) == SD_OK);
    T_EQ_INT(s.mode, n >= c->min8 ? SD_BNB_STATE_U8 : SD_BNB_STATE_F32);
    uint32_t seed = 17u + (uint32_t)ci;
    o8_gen_params(seed, p, n);
    omp_set_num_threads(nthreads);
    double worst = 0;
    for (int step = 1; step <= 6; step++) {
        o8_gen_grads(seed, step, c->span, g, n);
        if (c->special) specials(c->name, n, step, g);
        T_CHECK(sd_adamw8bit_step(&s, p, g, O8_LRS[step - 1] * c->lrscale, c->beta1, c->beta2, c->eps, c->wd,
                                  step) == SD_OK);
        if (step == 1 && !strcmp(c->name, "d")) o8_check_p1(st, c->name, p, want, n);
    }
    omp_set_num_threads(1);

    /* parameters: within 1e-6 relative (bitwise expected: the same IEEE operations in order) */
    int nbits = 0;
    if (o8_param_err(st, c->name, p, want, n, &worst, &nbits) == 0)
        T_CHECKF(worst <= 1e-6, "case %s: worst relative parameter error %g", c->name, worst);
    if (s.mode == SD_BNB_STATE_U8) {
        o8_check_u8(st, c->name, "state1", s.m8, n);
        o8_check_u8(st, c->name, "state2", s.v8, n);
        o8_check_absmax(st, c->name, "absmax1", s.absmax1, s.nblocks);
        o8_check_absmax(st, c->name, "absmax2", s.absmax2, s.nblocks);
    } else {
        o8_check_f32(st, c->name, "state1", s.m32, want, n);
        o8_check_f32(st, c->name, "state2", s.v32, want, n);
    }
    printf("# case %s (%d elements, %s, %d threads): worst parameter rel. error %.3g, %d not bitwise equal\n",
           c->name, n, s.mode == SD_BNB_STATE_U8 ? "8-bit" : "32-bit", nthreads, worst, nbits);
    sd_adamw8bit_state_free(&s);
    free(p);
    free(g);
    free(want);
}

static void test_golden_steps(void)
{
    sd_safetensors *st = NULL;
    if (sd_safetensors_open(GOLDEN, &st) < 0) {
        printf("#   %s\n", sd_errmsg());
        T_CHECK(0);
        return;
    }
    for (int ci = 0; ci < 4; ci++) run_golden_case(st, ci, 1);
    run_golden_case(st, 1, 2);
    sd_safetensors_close(st);
}

/* The special cases of tensor c, by hand: an all-zero block stores absmax 0, codes 255 (m = +0:
 * 0/0 is NaN -> code 0 = -0.99, the sign fix moves it down to 255) and 0; NaN/inf gradients leave
 * the parameter alone and zero both moments. */
static void test_special_values(void)
{
    const int n = 4096;
    float *p = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float)), *p0 = malloc(n * sizeof(float));
    float *m = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    sd_adamw8bit_state s;
    T_CHECK(sd_adamw8bit_state_init(&s, n, 0) == SD_OK);
    o8_gen_params(5, p, n);
    for (int step = 1; step <= 2; step++) {
        o8_gen_grads(5, step, 6, g, n);
        for (int i = 256; i < 512; i++) g[i] = 0.0f;
        if (step == 2) g[7] = NAN, g[8] = INFINITY, g[9] = -INFINITY;
        memcpy(p0, p, n * sizeof(float));
        T_CHECK(sd_adamw8bit_step(&s, p, g, 1e-3, 0.9, 0.999, 1e-8, 0.0, step) == SD_OK);
    }
    T_CHECK(s.absmax1[1] == 0.0f && s.absmax2[1] == 0.0f);
    int ok = 1;
    for (int i = 256; i < 512; i++) ok &= s.m8[i] == 255 && s.v8[i] == 0 && o8_bits_eq(p[i], p0[i]);
    T_CHECK(ok);
    sd_adamw8bit_moments(&s, m, v);
    for (int i = 7; i <= 9; i++) {
        T_CHECK(o8_bits_eq(p[i], p0[i]));
        T_CHECK(m[i] == 0.0f && v[i] == 0.0f);
    }
    T_CHECK(!o8_bits_eq(p[10], p0[10]));
    sd_adamw8bit_state_free(&s);
    free(p), free(g), free(p0), free(m), free(v);
}

/* Zero gradients: the moments stay zero (32-bit), p only decays (p·(1 - lr·wd) in float). */
static void test_zero_grad(void)
{
    for (int mode = 0; mode < 2; mode++) {
        int n = mode ? 4100 : 100;
        float *p = malloc((size_t)n * sizeof(float)), *g = calloc((size_t)n, sizeof(float));
        float *p0 = malloc((size_t)n * sizeof(float)), *m = malloc((size_t)n * sizeof(float)),
              *v = malloc((size_t)n * sizeof(float));
        sd_adamw8bit_state s;
        T_CHECK(sd_adamw8bit_state_init(&s, n, 0) == SD_OK);
        T_EQ_INT(s.mode, mode ? SD_BNB_STATE_U8 : SD_BNB_STATE_F32);
        o8_gen_params(9, p, n);
        memcpy(p0, p, (size_t)n * sizeof(float));
        T_CHECK(sd_adamw8bit_step(&s, p, g, 1e-2, 0.9, 0.999, 1e-8, 0.0, 1) == SD_OK);
        int same = 1;
        for (int i = 0; i < n; i++) same &= o8_bits_eq(p[i], p0[i]);
        T_CHECK(same);
        T_CHECK(sd_adamw8bit_step(&s, p, g, 1e-2, 0.9, 0.999, 1e-8, 0.5, 2) == SD_OK);
        float decay = 1.0f - (float)1e-2 * 0.5f;
        same = 1;
        for (int i = 0; i < n; i++) same &= o8_bits_eq(p[i], p0[i] * decay);
        T_CHECK(same);
        sd_adamw8bit_moments(&s, m, v);
        int zero = 1;
        for (int i = 0; i < n; i++) zero &= m[i] == 0.0f && v[i] == 0.0f;
        T_CHECK(zero);
        sd_adamw8bit_state_free(&s);
        free(p), free(g), free(p0), free(m), free(v);
    }
}

static void test_modes_and_sizes(void)
{
    T_EQ_INT(sd_adamw8bit_mode_for(4095, 0), SD_BNB_STATE_F32);
    T_EQ_INT(sd_adamw8bit_mode_for(4096, 0), SD_BNB_STATE_U8);
    T_EQ_INT(sd_adamw8bit_mode_for(100, 100), SD_BNB_STATE_U8);
    T_EQ_INT(sd_adamw8bit_mode_for(99, 100), SD_BNB_STATE_F32);
    sd_adamw8bit_state s;
    T_CHECK(sd_adamw8bit_state_init(&s, 4097, 0) == SD_OK);
    T_EQ_INT(s.nblocks, 17);
    T_EQ_INT(sd_adamw8bit_state_bytes(&s), 2 * 4097 + 2 * 17 * 4);
    int zero = 1;
    for (int i = 0; i < 4097; i++) zero &= s.m8[i] == 0 && s.v8[i] == 0;
    for (int b = 0; b < 17; b++) zero &= s.absmax1[b] == 0.0f && s.absmax2[b] == 0.0f;
    T_CHECK(zero);
    sd_bnb_state_array a[SD_BNB_MAX_ARRAYS];
    T_EQ_INT(sd_adamw8bit_arrays(&s, a), 4);
    T_EQ_STR(a[0].name, "state1");
    T_EQ_STR(a[3].name, "absmax2");
    T_EQ_INT(a[2].numel, 17);
    T_EQ_INT(a[1].dtype, SD_ST_U8);
    sd_adamw8bit_state_free(&s);
    T_CHECK(sd_adamw8bit_state_init(&s, 256, 0) == SD_OK);
    T_EQ_INT(s.nblocks, 0);
    T_EQ_INT(sd_adamw8bit_state_bytes(&s), 2 * 256 * 4);
    T_EQ_INT(sd_adamw8bit_arrays(&s, a), 2);
    T_EQ_INT(a[0].dtype, SD_ST_F32);
    float p = 0, g = 1;
    T_CHECK(sd_adamw8bit_step(&s, &p, &g, 1e-3, 0.9, 0.999, 1e-8, 0, 0) == SD_ERANGE);
    sd_adamw8bit_state_free(&s);
    T_CHECK(sd_adamw8bit_state_init(&s, 0, 0) == SD_EINVAL);
}

/* Save after three steps, load into a fresh state, and continue both: identical bytes. */
static void test_roundtrip(void)
{
    const int sizes[2] = { 3000, 5000 };
    for (int k = 0; k < 2; k++) {
        int n = sizes[k];
        float *p = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float));
        float *p2 = malloc((size_t)n * sizeof(float));
        sd_adamw8bit_state a, b;
        T_CHECK(sd_adamw8bit_state_init(&a, n, 0) == SD_OK);
        o8_gen_params(3, p, n);
        for (int step = 1; step <= 3; step++) {
            o8_gen_grads(3, step, 6, g, n);
            T_CHECK(sd_adamw8bit_step(&a, p, g, 1e-3, 0.9, 0.999, 1e-8, 1e-2, step) == SD_OK);
        }
        sd_safetensors_writer *w = NULL;
        T_CHECK(sd_safetensors_writer_new(&w) == SD_OK);
        T_CHECK(sd_adamw8bit_save(&a, w, "lora_unet_x.weight") == SD_OK);
        void *buf = NULL;
        size_t len = 0;
        T_CHECK(sd_safetensors_writer_write_mem(w, &buf, &len) == SD_OK);
        sd_safetensors_writer_free(w);
        sd_safetensors *f = NULL;
        T_CHECK(sd_safetensors_open_mem(buf, len, "opt.safetensors", &f) == SD_OK);
        T_EQ_INT(sd_safetensors_count(f), k ? 4 : 2);
        T_CHECK(sd_adamw8bit_state_init(&b, n, 0) == SD_OK);
        T_CHECK(sd_adamw8bit_load(&b, f, "lora_unet_x.weight") == SD_OK);
        T_CHECK(!memcmp(a.mem, b.mem, sd_adamw8bit_state_bytes(&a)));
        memcpy(p2, p, (size_t)n * sizeof(float));
        for (int step = 4; step <= 5; step++) {
            o8_gen_grads(3, step, 6, g, n);
            T_CHECK(sd_adamw8bit_step(&a, p, g, 1e-3, 0.9, 0.999, 1e-8, 1e-2, step) == SD_OK);
            T_CHECK(sd_adamw8bit_step(&b, p2, g, 1e-3, 0.9, 0.999, 1e-8, 1e-2, step) == SD_OK);
        }
        T_CHECK(!memcmp(p, p2, (size_t)n * sizeof(float)));
        T_CHECK(!memcmp(a.mem, b.mem, sd_adamw8bit_state_bytes(&a)));

        /* mismatches: wrong prefix, the other mode, a different element count */
        sd_adamw8bit_state c;
        T_CHECK(sd_adamw8bit_load(&b, f, "nope") == SD_EFORMAT);
        T_CHECK(strstr(sd_errmsg(), "opt.safetensors") && strstr(sd_errmsg(), "nope.state1"));
        T_CHECK(sd_adamw8bit_state_bytes(&b) > 0 && b.mem);
        int zero = 1;
        for (size_t i = 0; i < sd_adamw8bit_state_bytes(&b); i++) zero &= ((uint8_t *)b.mem)[i] == 0;
        T_CHECK(zero);
        /* the same element count read under the other mode (min_8bit_size moved) */
        T_CHECK(sd_adamw8bit_state_init(&c, n, k ? 8192 : 1024) == SD_OK);
        T_CHECK(sd_adamw8bit_load(&c, f, "lora_unet_x.weight") == SD_EFORMAT);
        T_CHECK(strstr(sd_errmsg(), k ? "8-bit optimizer state" : "32-bit optimizer state") != NULL);
        sd_adamw8bit_state_free(&c);
        T_CHECK(sd_adamw8bit_state_init(&c, n + 1, 0) == SD_OK);
        T_CHECK(sd_adamw8bit_load(&c, f, "lora_unet_x.weight") == SD_EFORMAT);
        T_CHECK(strstr(sd_errmsg(), "elements") != NULL);
        sd_adamw8bit_state_free(&c);

        sd_safetensors_close(f);
        free(buf);
        sd_adamw8bit_state_free(&a);
        sd_adamw8bit_state_free(&b);
        free(p), free(g), free(p2);
    }
}

/* A tensor large enough to be split over the team: 1 and 2 threads give the same bytes. */
static void test_threads(void)
{
    const int n = 300000 + 77;
    for (int mode = 0; mode < 2; mode++) {
        float *p[2], *g = malloc((size_t)n * sizeof(float));
        sd_adamw8bit_state s[2];
        for (int t = 0; t < 2; t++) {
            p[t] = malloc((size_t)n * sizeof(float));
            o8_gen_params(11, p[t], n);
            T_CHECK(sd_adamw8bit_state_init(&s[t], n, mode ? 0 : INT64_MAX) == SD_OK);
            omp_set_num_threads(t + 1);
            for (int step = 1; step <= 2; step++) {
                o8_gen_grads(11, step, 6, g, n);
                T_CHECK(sd_adamw8bit_step(&s[t], p[t], g, 1e-3, 0.9, 0.999, 1e-8, 1e-2, step) == SD_OK);
            }
        }
        omp_set_num_threads(1);
        T_EQ_INT(s[0].mode, mode ? SD_BNB_STATE_U8 : SD_BNB_STATE_F32);
        T_CHECK(!memcmp(p[0], p[1], (size_t)n * sizeof(float)));
        T_CHECK(!memcmp(s[0].mem, s[1].mem, sd_adamw8bit_state_bytes(&s[0])));
        for (int t = 0; t < 2; t++) sd_adamw8bit_state_free(&s[t]), free(p[t]);
        free(g);
    }
}

static int set_arg(sd_adamw8bit_config *c, const char *key, const char *lit)
{
    sd_py_value v;
    int rc = sd_py_literal(lit, &v);
    if (rc < 0) return rc;
    return sd_adamw8bit_config_set(c, key, &v);
}

static void test_config(void)
{
    sd_adamw8bit_config c;
    sd_adamw8bit_config_default(&c);
    T_CHECK(c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8 && c.weight_decay == 1e-2);
    T_CHECK(c.min_8bit_size == 4096 && c.optim_bits == 32 && c.percentile_clipping == 100 && c.block_wise);
    T_CHECK(sd_adamw8bit_config_check(&c) == SD_OK);
    T_CHECK(sd_adamw8bit_arg_known("min_8bit_size") && sd_adamw8bit_arg_known("is_paged"));
    T_CHECK(!sd_adamw8bit_arg_known("foreach") && !sd_adamw8bit_arg_known("lr ") &&
            !sd_adamw8bit_arg_known("max_unorm"));

    T_CHECK(set_arg(&c, "betas", "0.9,0.99") == SD_OK && c.beta1 == 0.9 && c.beta2 == 0.99);
    T_CHECK(set_arg(&c, "betas", "[0.8, 0.9]") == SD_OK && c.beta1 == 0.8 && c.beta2 == 0.9);
    T_CHECK(set_arg(&c, "betas", "'(0.85, 0.95)'") == SD_OK && c.beta1 == 0.85 && c.beta2 == 0.95);
    T_CHECK(set_arg(&c, "betas", "(0.9, 0.99, 0.9999)") == SD_OK && c.beta2 == 0.99);
    T_CHECK(set_arg(&c, "betas", "(0.9, 1.0)") == SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "Invalid beta parameter at index 1: 1.0");
    T_CHECK(set_arg(&c, "betas", "0.9") == SD_EUSAGE);
    T_CHECK(set_arg(&c, "weight_decay", "0.1") == SD_OK && c.weight_decay == 0.1);
    T_CHECK(set_arg(&c, "weight_decay", "0") == SD_OK && c.weight_decay == 0.0);
    T_CHECK(set_arg(&c, "eps", "1e-6") == SD_OK && c.eps == 1e-6);
    T_CHECK(set_arg(&c, "min_8bit_size", "16384") == SD_OK && c.min_8bit_size == 16384);
    T_CHECK(set_arg(&c, "min_8bit_size", "100.5") == SD_OK && c.min_8bit_size == 101);
    T_CHECK(set_arg(&c, "is_paged", "True") == SD_OK && c.is_paged);
    T_CHECK(set_arg(&c, "args", "None") == SD_OK);
    T_CHECK(set_arg(&c, "args", "1") == SD_EUNSUPPORTED);
    T_CHECK(set_arg(&c, "eps", "'x'") == SD_EUSAGE);
    T_CHECK(sd_adamw8bit_config_check(&c) == SD_OK);

    T_CHECK(set_arg(&c, "foreach", "True") == SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "AdamW8bit.__init__() got an unexpected keyword argument 'foreach'");
    T_CHECK(set_arg(&c, "lr", "0.1") == SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "bitsandbytes.optim.adamw.AdamW8bit() got multiple values for keyword argument 'lr'");
    T_CHECK(set_arg(&c, "params", "1") == SD_EUSAGE);

    sd_adamw8bit_config d;
    sd_adamw8bit_config_default(&d);
    T_CHECK(set_arg(&d, "amsgrad", "True") == SD_OK);
    T_CHECK(sd_adamw8bit_config_check(&d) == SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "AdamW8bit does not support amsgrad=True");
    sd_adamw8bit_config_default(&d);
    T_CHECK(set_arg(&d, "optim_bits", "8") == SD_OK);
    T_CHECK(sd_adamw8bit_config_check(&d) == SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "AdamW8bit only supports optim_bits=32 (default value for compatibility)");
    sd_adamw8bit_config_default(&d);
    T_CHECK(set_arg(&d, "optim_bits", "32.0") == SD_OK && sd_adamw8bit_config_check(&d) == SD_OK);
    T_CHECK(set_arg(&d, "weight_decay", "-0.5") == SD_OK);
    T_CHECK(sd_adamw8bit_config_check(&d) == SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "Invalid weight_decay value: -0.5");
    sd_adamw8bit_config_default(&d);
    d.lr = -1e-4;
    T_CHECK(sd_adamw8bit_config_check(&d) == SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "Invalid learning rate: -0.0001");
    sd_adamw8bit_config_default(&d);
    T_CHECK(set_arg(&d, "percentile_clipping", "5") == SD_OK);
    T_CHECK(sd_adamw8bit_config_check(&d) == SD_EUNSUPPORTED);
    sd_adamw8bit_config_default(&d);
    T_CHECK(set_arg(&d, "block_wise", "False") == SD_OK);
    T_CHECK(sd_adamw8bit_config_check(&d) == SD_EUNSUPPORTED);
}

int main(void)
{
    omp_set_num_threads(1);
    T_RUN(test_qmap_construction);
    T_RUN(test_quantize);
    T_RUN(test_golden_steps);
    T_RUN(test_special_values);
    T_RUN(test_zero_grad);
    T_RUN(test_modes_and_sizes);
    T_RUN(test_roundtrip);
    T_RUN(test_threads);
    T_RUN(test_config);
    T_DONE();
}
