/* lib/train/optim8bit's 1-state optimizers (bitsandbytes Lion8bit / PagedLion8bit and SGD8bit)
 * against the numpy transcription of bnb 0.49.2's CUDA kernels
 * (tests/golden/gen/make_optim8bit1_golden.py -> tests/data/optim8bit/bnb1state.safetensors):
 * parameters, 8-bit codes and absmax blocks bit for bit; thread-count independence; state
 * save/load/continue; the constructors' arguments and messages. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "io/safetensors.h"
#include "optim8bit_golden.h"
#include "test.h"
#include "train/optim8bit.h"
#include "train/pyfmt.h"

#define GOLDEN "tests/data/optim8bit/bnb1state.safetensors"

typedef struct gcase {
    const char *name;
    sd_bnb1_optimizer opt;
    int n;
    int64_t min8;
    double lrscale, beta1, beta2, wd;
    int span, special;
    int half;   /* 0 f32, 1 f16, 2 bf16 parameters and gradients */
} gcase;

#define NCASES 13
static const gcase CASES[NCASES] = {
    { "la", SD_BNB1_LION, 1000, 4096, 0.1, 0.9, 0.99, 0.0, 8, 0, 0 },
    { "lb", SD_BNB1_LION, 4196, 4096, 0.1, 0.9, 0.99, 1e-2, 6, 0, 0 },
    { "lc", SD_BNB1_LION, 4096, 4096, 0.1, 0.95, 0.98, 0.0, 12, 1, 0 },
    { "ld", SD_BNB1_LION, 600, 512, 1.0, 0.8, 0.95, 0.1, 4, 0, 0 },
    { "le", SD_BNB1_LION, 700, 4096, 0.1, 0.9, 0.99, 0.5, 4, 0, 0 },
    { "ma", SD_BNB1_MOMENTUM, 1000, 4096, 10.0, 0.9, 0.0, 0.0, 8, 0, 0 },
    { "mb", SD_BNB1_MOMENTUM, 4196, 4096, 10.0, 0.9, 0.0, 1e-2, 6, 0, 0 },
    { "mc", SD_BNB1_MOMENTUM, 4096, 4096, 10.0, 0.8, 0.0, 0.0, 12, 1, 0 },
    { "md", SD_BNB1_MOMENTUM, 600, 512, 10.0, 0.5, 0.0, 0.1, 4, 0, 0 },
    { "hl8", SD_BNB1_LION, 1000, 512, 1.0, 0.9, 0.99, 0.1, 4, 0, 1 },
    { "hl32", SD_BNB1_LION, 700, 4096, 1.0, 0.9, 0.99, 0.1, 4, 0, 2 },
    { "hm8", SD_BNB1_MOMENTUM, 1000, 512, 10.0, 0.9, 0.0, 0.1, 4, 0, 2 },
    { "hm32", SD_BNB1_MOMENTUM, 700, 4096, 10.0, 0.9, 0.0, 0.1, 4, 0, 1 },
};

static void specials(int step, float *g)
{
    for (int i = 3 * 256; i < 4 * 256; i++) g[i] = 0.0f;
    if (step >= 3)
        for (int i = 5 * 256; i < 6 * 256; i++) g[i] = 0.0f;
    if (step == 1) g[103] = -0.0f;
}

static void run_golden_case(const sd_safetensors *st, int ci, int nthreads)
{
    const gcase *c = &CASES[ci];
    const int n = c->n;
    float *p = malloc((size_t)n * 4), *g = malloc((size_t)n * 4), *want = malloc((size_t)n * 4);
    sd_adamw8bit_state s;
    T_CHECK(sd_bnb1_state_init(&s, n, c->min8) == SD_OK);
    T_EQ_INT(s.nstates, 1);
    T_CHECK(s.v32 == NULL && s.v8 == NULL && s.absmax2 == NULL);
    uint32_t seed = 31u + (uint32_t)ci;
    o8_gen_params(seed, p, n);
    if (c->half) sd_round_half_n(p, (size_t)n, c->half == 2);
    omp_set_num_threads(nthreads);
    for (int step = 1; step <= 6; step++) {
        o8_gen_grads(seed, step, c->span, g, n);
        if (c->special) specials(step, g);
        if (c->half) sd_round_half_n(g, (size_t)n, c->half == 2);
        T_CHECK(sd_bnb1_step(&s, c->opt, p, g, O8_LRS[step - 1] * c->lrscale, c->beta1, c->beta2, c->wd, step,
                             c->half) == SD_OK);
        if (step == 1 && (!strcmp(c->name, "ld") || !strcmp(c->name, "md"))) o8_check_p1(st, c->name, p, want, n);
    }
    omp_set_num_threads(1);
    double worst = 0;
    int nbits = 0;
    if (o8_param_err(st, c->name, p, want, n, &worst, &nbits) == 0)
        T_CHECKF(nbits == 0, "case %s: %d parameters not bitwise equal (worst rel. %g)", c->name, nbits, worst);
    if (s.mode == SD_BNB_STATE_U8) {
        o8_check_u8(st, c->name, "state1", s.m8, n);
        o8_check_absmax(st, c->name, "absmax1", s.absmax1, s.nblocks);
    } else {
        o8_check_f32(st, c->name, "state1", s.m32, want, n);
    }
    printf("# case %s (%s%s, %d elements, %s, %d threads): worst parameter rel. error %.3g, %d not bitwise equal\n",
           c->name, c->opt == SD_BNB1_LION ? "lion" : "momentum", c->half == 1 ? " f16" : c->half == 2 ? " bf16" : "", n, s.mode == SD_BNB_STATE_U8 ? "8-bit" : "32-bit",
           nthreads, worst, nbits);
    sd_adamw8bit_state_free(&s);
    free(p), free(g), free(want);
}

static void test_golden_steps(void)
{
    sd_safetensors *st = NULL;
    if (sd_safetensors_open(GOLDEN, &st) < 0) {
        printf("#   %s\n", sd_errmsg());
        T_CHECK(0);
        return;
    }
    for (int ci = 0; ci < NCASES; ci++) run_golden_case(st, ci, 1);
    run_golden_case(st, 1, 2);
    run_golden_case(st, 6, 2);
    sd_safetensors_close(st);
}

/* Hand-checked facts: Lion moves every element by exactly ±lr (0 where the interpolation is 0);
 * a tensor below min_8bit_size adds wd·p to the gradient (coupled), the 8-bit path decays p. */
static void test_lion_facts(void)
{
    float p[4] = { 1.0f, -1.0f, 0.5f, 0.25f }, g[4] = { 0.5f, 0.5f, -0.25f, 0.0f };
    sd_adamw8bit_state s;
    T_CHECK(sd_bnb1_state_init(&s, 4, 0) == SD_OK);
    T_EQ_INT(s.mode, SD_BNB_STATE_F32);
    T_CHECK(sd_bnb1_step(&s, SD_BNB1_LION, p, g, 0.125, 0.9, 0.99, 0.0, 1, 0) == SD_OK);
    T_CHECK(p[0] == 0.875f && p[1] == -1.125f && p[2] == 0.625f && p[3] == 0.25f);
    /* coupled decay on the 32-bit path: g = 0 + p·wd > 0 for p > 0 */
    float q[1] = { 1.0f }, z[1] = { 0.0f };
    sd_adamw8bit_state t;
    T_CHECK(sd_bnb1_state_init(&t, 1, 0) == SD_OK);
    T_CHECK(sd_bnb1_step(&t, SD_BNB1_LION, q, z, 0.125, 0.9, 0.99, 0.5, 1, 0) == SD_OK);
    T_CHECK(q[0] == 0.875f);
    T_CHECK(t.m32[0] == (1.0f - 0.99f) * 0.5f);
    sd_adamw8bit_state_free(&s);
    sd_adamw8bit_state_free(&t);
    /* the wrong state kinds are refused */
    sd_adamw8bit_state a;
    T_CHECK(sd_adamw8bit_state_init(&a, 8, 0) == SD_OK);
    T_EQ_INT(sd_bnb1_step(&a, SD_BNB1_LION, p, g, 0.1, 0.9, 0.99, 0, 1, 0), SD_ESTATE);
    sd_adamw8bit_state_free(&a);
    T_CHECK(sd_bnb1_state_init(&a, 4, 0) == SD_OK);
    T_EQ_INT(sd_adamw8bit_step(&a, p, g, 0.1, 0.9, 0.99, 1e-8, 0, 1), SD_ESTATE);
    T_EQ_INT(sd_bnb1_step(&a, SD_BNB1_LION, p, g, 0.1, 0.9, 0.99, 0, 0, 0), SD_ERANGE);
    /* bnb has no bfloat16 32-bit momentum kernel */
    T_EQ_INT(sd_bnb1_step(&a, SD_BNB1_MOMENTUM, p, g, 0.1, 0.9, 0, 0, 1, 2), SD_EUSAGE);
    T_CHECK(strstr(sd_errmsg(), "Gradient+optimizer bit data type combination not supported") != NULL);
    T_EQ_INT(sd_bnb1_step(&a, SD_BNB1_MOMENTUM, p, g, 0.1, 0.9, 0, 0, 1, 1), SD_OK);
    sd_adamw8bit_state_free(&a);
}

static void test_roundtrip(void)
{
    const int sizes[2] = { 3000, 5000 };
    for (int o = 0; o < 2; o++)
        for (int k = 0; k < 2; k++) {
            sd_bnb1_optimizer opt = o ? SD_BNB1_MOMENTUM : SD_BNB1_LION;
            int n = sizes[k];
            float *p = malloc((size_t)n * 4), *g = malloc((size_t)n * 4), *p2 = malloc((size_t)n * 4);
            sd_adamw8bit_state a, b;
            T_CHECK(sd_bnb1_state_init(&a, n, 0) == SD_OK);
            o8_gen_params(3, p, n);
            for (int step = 1; step <= 3; step++) {
                o8_gen_grads(3, step, 6, g, n);
                T_CHECK(sd_bnb1_step(&a, opt, p, g, 1e-3, 0.9, 0.99, 1e-2, step, 0) == SD_OK);
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
            T_EQ_INT(sd_safetensors_count(f), k ? 2 : 1);
            T_CHECK(sd_safetensors_find(f, "lora_unet_x.weight.state2") == NULL);
            T_CHECK(sd_bnb1_state_init(&b, n, 0) == SD_OK);
            T_CHECK(sd_adamw8bit_load(&b, f, "lora_unet_x.weight") == SD_OK);
            T_EQ_INT((int)sd_adamw8bit_state_bytes(&a), k ? n + 20 * 4 : n * 4);
            T_CHECK(!memcmp(a.mem, b.mem, sd_adamw8bit_state_bytes(&a)));
            memcpy(p2, p, (size_t)n * 4);
            for (int step = 4; step <= 5; step++) {
                o8_gen_grads(3, step, 6, g, n);
                T_CHECK(sd_bnb1_step(&a, opt, p, g, 1e-3, 0.9, 0.99, 1e-2, step, 0) == SD_OK);
                T_CHECK(sd_bnb1_step(&b, opt, p2, g, 1e-3, 0.9, 0.99, 1e-2, step, 0) == SD_OK);
            }
            T_CHECK(!memcmp(p, p2, (size_t)n * 4));
            T_CHECK(!memcmp(a.mem, b.mem, sd_adamw8bit_state_bytes(&a)));
            /* the other mode's arrays are refused */
            sd_adamw8bit_state c;
            T_CHECK(sd_bnb1_state_init(&c, n, k ? 8192 : 1024) == SD_OK);
            T_CHECK(sd_adamw8bit_load(&c, f, "lora_unet_x.weight") == SD_EFORMAT);
            T_CHECK(strstr(sd_errmsg(), k ? "8-bit optimizer state" : "32-bit optimizer state") != NULL);
            sd_adamw8bit_state_free(&c);
            sd_safetensors_close(f);
            free(buf);
            sd_adamw8bit_state_free(&a);
            sd_adamw8bit_state_free(&b);
            free(p), free(g), free(p2);
        }
}

static void test_threads(void)
{
    const int n = 300000 + 77;
    for (int o = 0; o < 2; o++)
        for (int mode = 0; mode < 2; mode++) {
            float *p[2], *g = malloc((size_t)n * 4);
            sd_adamw8bit_state s[2];
            for (int t = 0; t < 2; t++) {
                p[t] = malloc((size_t)n * 4);
                o8_gen_params(11, p[t], n);
                T_CHECK(sd_bnb1_state_init(&s[t], n, mode ? 0 : INT64_MAX) == SD_OK);
                omp_set_num_threads(t + 1);
                for (int step = 1; step <= 2; step++) {
                    o8_gen_grads(11, step, 6, g, n);
                    T_CHECK(sd_bnb1_step(&s[t], o ? SD_BNB1_MOMENTUM : SD_BNB1_LION, p[t], g, 1e-3, 0.9, 0.99, 1e-2,
                                         step, 0) == SD_OK);
                }
            }
            omp_set_num_threads(1);
            T_CHECK(!memcmp(p[0], p[1], (size_t)n * 4));
            T_CHECK(!memcmp(s[0].mem, s[1].mem, sd_adamw8bit_state_bytes(&s[0])));
            for (int t = 0; t < 2; t++) sd_adamw8bit_state_free(&s[t]), free(p[t]);
            free(g);
        }
}

static int set_arg(sd_adamw8bit_config *c, int sgd, int paged, const char *key, const char *lit)
{
    sd_py_value v;
    int rc = sd_py_literal(lit, &v);
    if (rc < 0) return rc;
    return sd_bnb1_config_set(c, sgd ? "SGD8bit" : paged ? "PagedLion8bit" : "Lion8bit",
                              sgd ? "bitsandbytes.optim.sgd.SGD8bit" : "bitsandbytes.optim.lion.Lion8bit", sgd,
                              !sgd && !paged, key, &v);
}

static void test_config(void)
{
    sd_adamw8bit_config c;
    sd_bnb1_config_default(&c, 0);
    T_CHECK(c.lr == 1e-4 && c.beta1 == 0.9 && c.beta2 == 0.99 && c.weight_decay == 0 && c.min_8bit_size == 4096);
    T_EQ_INT(sd_bnb1_config_check(&c, "Lion8bit", 0), SD_OK);
    T_EQ_INT(set_arg(&c, 0, 0, "betas", "0.95,0.98"), SD_OK);
    T_CHECK(c.beta1 == 0.95 && c.beta2 == 0.98);
    T_EQ_INT(set_arg(&c, 0, 0, "betas", "(0.9, 1.0)"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "Invalid beta parameter at index 1: 1.0");
    T_EQ_INT(set_arg(&c, 0, 0, "betas", "(0.9,)"), SD_EUSAGE);
    T_EQ_INT(set_arg(&c, 0, 0, "weight_decay", "0.1"), SD_OK);
    T_CHECK(c.weight_decay == 0.1);
    T_EQ_INT(set_arg(&c, 0, 0, "min_8bit_size", "16"), SD_OK);
    T_CHECK(c.min_8bit_size == 16);
    T_EQ_INT(set_arg(&c, 0, 0, "is_paged", "True"), SD_OK);
    T_EQ_INT(set_arg(&c, 0, 1, "is_paged", "True"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "PagedLion8bit.__init__() got an unexpected keyword argument 'is_paged'");
    T_EQ_INT(set_arg(&c, 0, 0, "eps", "1e-8"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "Lion8bit.__init__() got an unexpected keyword argument 'eps'");
    T_EQ_INT(set_arg(&c, 0, 0, "lr", "0.1"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "bitsandbytes.optim.lion.Lion8bit() got multiple values for keyword argument 'lr'");
    T_EQ_INT(set_arg(&c, 0, 0, "args", "1"), SD_EUNSUPPORTED);
    T_EQ_INT(set_arg(&c, 0, 0, "weight_decay", "-1"), SD_OK);
    T_EQ_INT(sd_bnb1_config_check(&c, "Lion8bit", 0), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "Invalid weight_decay value: -1.0");
    sd_bnb1_config_default(&c, 0);
    T_EQ_INT(set_arg(&c, 0, 0, "percentile_clipping", "90"), SD_OK);
    T_EQ_INT(sd_bnb1_config_check(&c, "Lion8bit", 0), SD_EUNSUPPORTED);
    sd_bnb1_config_default(&c, 0);
    T_EQ_INT(set_arg(&c, 0, 0, "block_wise", "False"), SD_OK);
    T_EQ_INT(sd_bnb1_config_check(&c, "Lion8bit", 0), SD_EUNSUPPORTED);

    sd_bnb1_config_default(&c, 1);
    T_CHECK(c.beta1 == 0.9 && c.beta2 == 0.0 && c.weight_decay == 0);
    T_EQ_INT(sd_bnb1_config_check(&c, "SGD8bit", 1), SD_OK);
    T_EQ_INT(set_arg(&c, 1, 0, "nesterov", "True"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "bitsandbytes.optim.sgd.SGD8bit() got multiple values for keyword argument 'nesterov'");
    T_EQ_INT(set_arg(&c, 1, 0, "betas", "0.9,0.99"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "SGD8bit.__init__() got an unexpected keyword argument 'betas'");
    T_EQ_INT(set_arg(&c, 1, 0, "momentum", "0.8"), SD_OK);
    T_EQ_INT(set_arg(&c, 1, 0, "dampening", "0.1"), SD_OK);
    T_CHECK(c.beta1 == 0.8 && c.beta2 == 0.1);
    T_EQ_INT(set_arg(&c, 1, 0, "momentum", "0"), SD_OK);
    T_EQ_INT(sd_bnb1_config_check(&c, "SGD8bit", 1), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "SGD without momentum is not supported!");
    T_EQ_INT(set_arg(&c, 1, 0, "momentum", "1.5"), SD_OK);
    T_EQ_INT(sd_bnb1_config_check(&c, "SGD8bit", 1), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "Invalid beta parameter at index 0: 1.5");
}

int main(void)
{
    omp_set_num_threads(1);
    T_RUN(test_golden_steps);
    T_RUN(test_lion_facts);
    T_RUN(test_roundtrip);
    T_RUN(test_threads);
    T_RUN(test_config);
    T_DONE();
}
