/* CUDA backend basics (lib/tensor/device.h) against the CPU: device selection and errors,
 * memory and copies, axpy (bit-exact), bf16 <-> f32 conversion (bit-exact), sgemm through cuBLAS
 * (fp32, within 1e-5 of a double-precision reference, relative to sum |a||b|).
 * Compiles in both builds; the GPU tests print "# SKIP" without a CUDA device. */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/device.h"
#include "test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return rng_state = x;
}
static float rndf(void) { return (float)((double)(rnd64() >> 11) * 0x1p-53 * 2.0 - 1.0); }

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* ---- tests that run everywhere ---- */

static void test_parse(void)
{
    int idx = 123;
    T_EQ_INT(sd_device_parse("cpu", &idx), SD_OK);
    T_EQ_INT(idx, SD_DEVICE_CPU);
    T_EQ_INT(sd_device_parse("cuda", &idx), SD_OK);
    T_EQ_INT(idx, 0);
    T_EQ_INT(sd_device_parse("cuda:0", &idx), SD_OK);
    T_EQ_INT(idx, 0);
    T_EQ_INT(sd_device_parse("cuda:7", &idx), SD_OK);
    T_EQ_INT(idx, 7);
    T_EQ_INT(sd_device_parse("cuda:12", &idx), SD_OK);
    T_EQ_INT(idx, 12);
    const char *bad[] = {"", "gpu", "CUDA", "cuda:", "cuda:-1", "cuda:+1", "cuda:x", "cuda:1x",
                         "cuda: 1", "cuda:99999999999", "cpu:0", "cuda0", " cuda"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        idx = 123;
        T_EQ_INT(sd_device_parse(bad[i], &idx), SD_EINVAL);
        T_EQ_INT(idx, 123);
        T_CHECKF(has(sd_errmsg(), "--device") && has(sd_errmsg(), "cuda:N"), "'%s': %s", bad[i],
                 sd_errmsg());
    }
    T_EQ_INT(sd_device_parse(NULL, &idx), SD_EINVAL);
    T_EQ_INT(sd_device_parse("cpu", NULL), SD_EINVAL);
}

/* The fail-fast memory check of sd-train / sd-sample: decision and message, no GPU needed. */
static void test_fit_check(void)
{
    const size_t gib = (size_t)1 << 30, mib = (size_t)1 << 20;
    T_EQ_INT(sd_device_fit_check(2 * gib, 8 * gib, "GPU X", "job", NULL, NULL), SD_OK);
    /* the 256 MiB margin counts: exactly free - margin fits, one byte more does not */
    T_EQ_INT(sd_device_fit_check(8 * gib - 256 * mib, 8 * gib, "GPU X", "job", NULL, NULL), SD_OK);
    T_EQ_INT(sd_device_fit_check(8 * gib - 256 * mib + 1, 8 * gib, "GPU X", "job", NULL, NULL), SD_ENOMEM);
    T_EQ_INT(sd_device_fit_check(9 * gib, 8 * gib, "NVIDIA T4", "--device cuda:0: training",
                                 "weights 3.00 GiB, activations 6.00 GiB", "lower --train_batch_size"),
             SD_ENOMEM);
    T_EQ_STR(sd_errmsg(), "--device cuda:0: training needs about 9.00 GiB of GPU memory (weights 3.00 GiB, "
                          "activations 6.00 GiB), 8.00 GiB free on NVIDIA T4; lower --train_batch_size");
    T_EQ_INT(sd_device_fit_check(3 * gib / 2, gib, NULL, NULL, "", NULL), SD_ENOMEM);
    T_EQ_STR(sd_errmsg(), "this job needs about 1.50 GiB of GPU memory, 1.00 GiB free on the GPU");
    sd_device_info di;
    if (!sd_device_built_with_cuda()) {
        T_EQ_INT(sd_device_fit(0, 1, "job", NULL, NULL, &di), SD_EUNSUPPORTED);
    }
}

/* What a build without CUDA, or a CUDA build on a machine without a GPU, must say. */
static void test_unavailable(void)
{
    void *p = (void *)1;
    sd_device_info info;
    T_EQ_INT(sd_device_current(), SD_DEVICE_CPU);
    if (!sd_device_built_with_cuda()) {
        T_EQ_INT(sd_device_count(), 0);
        T_EQ_INT(sd_device_init(0), SD_EUNSUPPORTED);
        T_CHECKF(has(sd_errmsg(), "built without CUDA support (make CUDA=1)"), "%s", sd_errmsg());
        T_EQ_INT(sd_device_query(0, &info), SD_EUNSUPPORTED);
        T_EQ_INT(sd_device_alloc(&p, 16), SD_EUNSUPPORTED);
        T_CHECK(p == NULL);
        T_EQ_INT(sd_device_sync(), SD_EUNSUPPORTED);
        T_EQ_INT(sd_device_axpy_f32(4, 1.0f, NULL, NULL), SD_EUNSUPPORTED);
        T_EQ_INT(sd_device_sgemm(0, 0, 2, 2, 2, 1, NULL, 2, NULL, 2, 0, NULL, 2), SD_EUNSUPPORTED);
    } else {
        /* Before sd_device_init, device work is an API misuse, GPU or not. */
        T_EQ_INT(sd_device_alloc(&p, 16), SD_ESTATE);
        T_CHECK(p == NULL);
        T_CHECKF(has(sd_errmsg(), "not initialised"), "%s", sd_errmsg());
        T_EQ_INT(sd_device_sync(), SD_ESTATE);
        if (sd_device_count() == 0) {
            T_EQ_INT(sd_device_init(0), SD_EDEVICE);
            T_CHECKF(has(sd_errmsg(), "CUDA: no device"), "%s", sd_errmsg());
            T_EQ_INT(sd_device_query(0, &info), SD_EDEVICE);
            T_EQ_INT(sd_device_current(), SD_DEVICE_CPU);
        }
    }
    T_EQ_INT(sd_device_init(-1), sd_device_built_with_cuda() ? SD_EINVAL : SD_EUNSUPPORTED);
    sd_device_shutdown();  /* harmless when not initialised */
    sd_device_free(NULL);
}

/* ---- GPU tests ---- */

static void test_init(void)
{
    int n = sd_device_count();
    sd_device_info info;
    T_EQ_INT(sd_device_query(0, &info), SD_OK);
    printf("# device 0 of %d: %s, sm_%d%d, %d SMs, %.1f GiB (%.1f free), runtime %d, driver %d\n", n,
           info.name, info.cc_major, info.cc_minor, info.sm_count, info.total_bytes / 1073741824.0,
           info.free_bytes / 1073741824.0, info.runtime_version, info.driver_version);
    T_CHECK(info.name[0] && info.sm_count > 0 && info.total_bytes > 0);
    T_CHECK(info.free_bytes > 0 && info.free_bytes <= info.total_bytes);
    T_EQ_INT(sd_device_query(n, &info), SD_EINVAL);
    T_CHECKF(has(sd_errmsg(), "no device cuda:"), "%s", sd_errmsg());
    T_EQ_INT(sd_device_init(n), SD_EINVAL);
    T_EQ_INT(sd_device_init(0), SD_OK);
    T_EQ_INT(sd_device_current(), 0);
    T_EQ_INT(sd_device_init(0), SD_OK);  /* again: no-op */
    if (n > 1) T_EQ_INT(sd_device_init(1), SD_ESTATE);
    /* Shut down and up again. */
    sd_device_shutdown();
    T_EQ_INT(sd_device_current(), SD_DEVICE_CPU);
    T_EQ_INT(sd_device_init(0), SD_OK);
}

static void test_memory(void)
{
    enum { N = 1 << 20 };
    uint8_t *h = malloc(N), *back = malloc(N);
    void *d1 = NULL, *d2 = NULL, *zero = (void *)1;
    for (int i = 0; i < N; i++) h[i] = (uint8_t)rnd64();
    T_EQ_INT(sd_device_alloc(&zero, 0), SD_OK);
    T_CHECK(zero == NULL);
    T_EQ_INT(sd_device_alloc(&d1, N), SD_OK);
    T_EQ_INT(sd_device_alloc(&d2, N), SD_OK);
    T_EQ_INT(sd_device_copy_to_device(d1, h, N), SD_OK);
    T_EQ_INT(sd_device_copy_device(d2, d1, N), SD_OK);
    T_EQ_INT(sd_device_copy_to_host(back, d2, N), SD_OK);
    T_CHECK(!memcmp(h, back, N));
    T_EQ_INT(sd_device_memset(d2, 0xab, N / 2), SD_OK);
    T_EQ_INT(sd_device_copy_to_host(back, d2, N), SD_OK);
    int ok = 1;
    for (int i = 0; i < N; i++) ok &= back[i] == (i < N / 2 ? 0xab : h[i]);
    T_CHECK(ok);
    T_EQ_INT(sd_device_copy_to_device(NULL, h, 4), SD_EINVAL);
    T_EQ_INT(sd_device_copy_to_device(d1, h, 0), SD_OK);
    /* Out of memory: SD_EDEVICE naming the size, and the device stays usable afterwards. */
    void *huge = (void *)1;
    T_EQ_INT(sd_device_alloc(&huge, (size_t)1 << 52), SD_EDEVICE);
    T_CHECK(huge == NULL);
    T_CHECKF(has(sd_errmsg(), "out of memory allocating"), "%s", sd_errmsg());
    T_EQ_INT(sd_device_copy_to_host(back, d1, N), SD_OK);
    T_CHECK(!memcmp(h, back, N));
    T_EQ_INT(sd_device_sync(), SD_OK);
    sd_device_free(d1);
    sd_device_free(d2);
    free(h);
    free(back);
}

static void test_axpy(void)
{
    const size_t n = (1 << 20) + 7;
    float *x = malloc(n * 4), *y = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = rndf() * 100, y[i] = rndf();
    const float a = -1.37f;
    for (size_t i = 0; i < n; i++) ref[i] = fmaf(a, x[i], y[i]);
    float *dx, *dy;
    T_EQ_INT(sd_device_alloc((void **)&dx, n * 4), SD_OK);
    T_EQ_INT(sd_device_alloc((void **)&dy, n * 4), SD_OK);
    T_EQ_INT(sd_device_copy_to_device(dx, x, n * 4), SD_OK);
    T_EQ_INT(sd_device_copy_to_device(dy, y, n * 4), SD_OK);
    T_EQ_INT(sd_device_axpy_f32(n, a, dx, dy), SD_OK);
    T_EQ_INT(sd_device_copy_to_host(got, dy, n * 4), SD_OK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&got[i], &ref[i], 4) != 0;
    T_CHECKF(bad == 0, "%zu of %zu differ", bad, n);
    T_EQ_INT(sd_device_axpy_f32(0, a, NULL, NULL), SD_OK);
    T_EQ_INT(sd_device_axpy_f32(4, a, NULL, dy), SD_EINVAL);
    sd_device_free(dx);
    sd_device_free(dy);
    free(x), free(y), free(ref), free(got);
}

static void test_bf16(void)
{
    /* Every bf16 bit pattern → f32, bit-exact (NaN payloads included). */
    const size_t n = 65536;
    uint16_t *h = malloc(n * 2), *back = malloc(n * 2);
    float *got = malloc(n * 4);
    for (size_t i = 0; i < n; i++) h[i] = (uint16_t)i;
    uint16_t *dh;
    float *df;
    T_EQ_INT(sd_device_alloc((void **)&dh, n * 2), SD_OK);
    T_EQ_INT(sd_device_alloc((void **)&df, n * 4), SD_OK);
    T_EQ_INT(sd_device_copy_to_device(dh, h, n * 2), SD_OK);
    T_EQ_INT(sd_device_bf16_to_f32(n, dh, df), SD_OK);
    T_EQ_INT(sd_device_copy_to_host(got, df, n * 4), SD_OK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float r = sd_bf16_to_f32(h[i]);
        bad += memcmp(&r, &got[i], 4) != 0;
    }
    T_CHECKF(bad == 0, "bf16→f32: %zu of %zu differ", bad, n);
    /* ... and back: f32 → bf16 is the identity on them. */
    T_EQ_INT(sd_device_f32_to_bf16(n, df, dh), SD_OK);
    T_EQ_INT(sd_device_copy_to_host(back, dh, n * 2), SD_OK);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += back[i] != sd_f32_to_bf16(got[i]);
    T_CHECKF(bad == 0, "bf16→f32→bf16: %zu of %zu differ", bad, n);
    sd_device_free(dh);
    sd_device_free(df);
    free(h), free(back), free(got);
}

static void test_f32_to_bf16(void)
{
    /* Random bit patterns (every exponent: subnormals, inf, NaN) plus rounding ties. */
    const size_t n = (1 << 20) + 3;
    uint32_t *u = malloc(n * 4);
    uint16_t *got = malloc(n * 2);
    for (size_t i = 0; i < n; i++) u[i] = (uint32_t)rnd64();
    const uint32_t special[] = {0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                                0xffffffffu, 0x7f7fffffu, 0x00008000u, 0x00018000u, 0x3f808000u,
                                0x3f818000u, 0x3f807fffu, 0x00000001u, 0x807fffffu};
    memcpy(u, special, sizeof special);
    float *df;
    uint16_t *dh;
    T_EQ_INT(sd_device_alloc((void **)&df, n * 4), SD_OK);
    T_EQ_INT(sd_device_alloc((void **)&dh, n * 2), SD_OK);
    T_EQ_INT(sd_device_copy_to_device(df, u, n * 4), SD_OK);
    T_EQ_INT(sd_device_f32_to_bf16(n, df, dh), SD_OK);
    T_EQ_INT(sd_device_copy_to_host(got, dh, n * 2), SD_OK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, &u[i], 4);
        uint16_t r = sd_f32_to_bf16(f);
        if (got[i] != r && bad++ < 5) printf("#   f32 %08x: got %04x want %04x\n", u[i], got[i], r);
    }
    T_CHECKF(bad == 0, "%zu of %zu differ", bad, n);
    sd_device_free(df);
    sd_device_free(dh);
    free(u), free(got);
}

/* One sgemm case: random A, B, C with padded row strides, GPU vs double reference.
 * Error measure: |gpu - ref| / (|alpha|·Σ|a||b| + |beta|·|c|), which fp32 accumulation keeps
 * near sqrt(k)·2^-24 whatever the cancellation; the bound is 1e-5. */
static double sgemm_case(int ta, int tb, int m, int n, int k, float alpha, float beta, int pad,
                         double *ms)
{
    int arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;
    int lda = acols + pad, ldb = bcols + pad, ldc = n + pad;
    size_t asz = (size_t)arows * lda, bsz = (size_t)brows * ldb, csz = (size_t)m * ldc;
    float *a = malloc(asz * 4), *b = malloc(bsz * 4), *c = malloc(csz * 4), *got = malloc(csz * 4);
    double *ref = calloc((size_t)m * n, 8), *scale = calloc((size_t)m * n, 8);
    for (size_t i = 0; i < asz; i++) a[i] = rndf();
    for (size_t i = 0; i < bsz; i++) b[i] = rndf();
    for (size_t i = 0; i < csz; i++) c[i] = rndf();
    float *da = NULL, *db = NULL, *dc = NULL;
    double worst = 1e30;
    if (sd_device_alloc((void **)&da, asz * 4) || sd_device_alloc((void **)&db, bsz * 4) ||
        sd_device_alloc((void **)&dc, csz * 4) || sd_device_copy_to_device(da, a, asz * 4) ||
        sd_device_copy_to_device(db, b, bsz * 4) || sd_device_copy_to_device(dc, c, csz * 4)) {
        printf("#   setup: %s\n", sd_errmsg());
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = sd_device_sgemm(ta, tb, m, n, k, alpha, da, lda, db, ldb, beta, dc, ldc);
    if (!rc) rc = sd_device_sync();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (ms) *ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (!rc) rc = sd_device_copy_to_host(got, dc, csz * 4);
    if (rc) {
        printf("#   sgemm: %s\n", sd_errmsg());
        goto out;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *r = ref + (size_t)i * n, *s = scale + (size_t)i * n;
        for (int p = 0; p < k; p++) {
            double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
            for (int j = 0; j < n; j++) {
                double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                r[j] += av * bv;
                s[j] += fabs(av * bv);
            }
        }
        for (int j = 0; j < n; j++) {
            double c0 = c[(size_t)i * ldc + j];
            r[j] = alpha * r[j] + beta * c0;
            s[j] = fabs(alpha) * s[j] + fabs(beta) * fabs(c0);
        }
    }
    worst = 0;
    int pad_ok = 1;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double e = fabs(got[(size_t)i * ldc + j] - ref[(size_t)i * n + j]);
            double s = scale[(size_t)i * n + j];
            e = s > 0 ? e / s : e;
            if (!(e <= worst)) worst = e;  /* NaN propagates as a failure */
        }
        for (int j = n; j < ldc; j++) pad_ok &= !memcmp(&got[(size_t)i * ldc + j], &c[(size_t)i * ldc + j], 4);
    }
    if (!pad_ok) {
        printf("#   sgemm wrote outside C's columns\n");
        worst = 1e30;
    }
out:
    sd_device_free(da), sd_device_free(db), sd_device_free(dc);
    free(a), free(b), free(c), free(got), free(ref), free(scale);
    return worst;
}

static void test_sgemm(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            double e = sgemm_case(ta, tb, 128, 96, 64, 0.75f, -0.5f, 3, NULL);
            printf("#   sgemm %s%s 128x96x64: max rel err %.3g\n", ta ? "A^T" : "A", tb ? "B^T" : "B", e);
            T_CHECKF(e <= 1e-5, "trans %d %d: %g", ta, tb, e);
        }
    double e = sgemm_case(0, 0, 37, 1, 129, 1.0f, 0.0f, 0, NULL);  /* odd shapes, matrix·vector */
    T_CHECKF(e <= 1e-5, "37x1x129: %g", e);
    e = sgemm_case(0, 1, 5, 7, 0, 2.0f, 0.5f, 1, NULL);  /* k = 0: C = beta·C */
    T_CHECKF(e <= 1e-6, "k=0: %g", e);
    double ms = 0;
    sgemm_case(0, 0, 1024, 1024, 1024, 1.0f, 0.0f, 0, NULL);  /* warm-up (cuBLAS heuristics) */
    e = sgemm_case(0, 0, 1024, 1024, 1024, 1.0f, 0.0f, 0, &ms);
    printf("#   sgemm 1024x1024x1024: max rel err %.3g, %.3f ms (%.0f GFLOP/s)\n", e, ms,
           2.0 * 1024 * 1024 * 1024 / (ms * 1e6));
    T_CHECKF(e <= 1e-5, "1024^3: %g", e);
    e = sgemm_case(1, 0, 1000, 1056, 1040, 1.0f, 1.0f, 5, NULL);
    printf("#   sgemm A^T 1000x1056x1040: max rel err %.3g\n", e);
    T_CHECKF(e <= 1e-5, "1000x1056x1040: %g", e);
    /* Argument checks. */
    T_EQ_INT(sd_device_sgemm(0, 0, 4, 4, 4, 1, NULL, 3, NULL, 4, 0, NULL, 4), SD_EINVAL);
    T_CHECKF(has(sd_errmsg(), "lda=3"), "%s", sd_errmsg());
    T_EQ_INT(sd_device_sgemm(0, 0, (int64_t)1 << 31, 4, 4, 1, NULL, 4, NULL, 4, 0, NULL, 4), SD_ERANGE);
    T_EQ_INT(sd_device_sgemm(0, 0, 0, 4, 4, 1, NULL, 4, NULL, 4, 0, NULL, 4), SD_OK);
}

/* The tensor-core GEMM modes (sd_device_set_gemm_math): each within its operand rounding of the
 * double reference (relative to Σ|a||b|), and less exact than fp32 (so the mode took effect). */
static void test_gemm_math(void)
{
    static const struct { sd_gemm_math m; const char *name; double tol; } ms[] = {
        { SD_GEMM_TF32, "tf32", 2e-3 }, { SD_GEMM_BF16, "bf16", 1e-2 }, { SD_GEMM_FP16, "fp16", 2e-3 } };
    for (int i = 0; i < 3; i++) {
        T_EQ_INT(sd_device_set_gemm_math(ms[i].m), SD_OK);
        T_CHECK(sd_device_gemm_math() == ms[i].m);
        double e = sgemm_case(0, 1, 256, 192, 512, 1.0f, 0.0f, 7, NULL);
        printf("#   gemm math %s 256x192x512: max rel err %.3g\n", ms[i].name, e);
        T_CHECKF(e <= ms[i].tol && e > 1e-6, "%s: %g", ms[i].name, e);
    }
    T_EQ_INT(sd_device_set_gemm_math(SD_GEMM_FP32), SD_OK);
    double e = sgemm_case(0, 1, 256, 192, 512, 1.0f, 0.0f, 7, NULL);
    T_CHECKF(e <= 1e-5, "back to fp32: %g", e);
    sd_gemm_math m;
    T_EQ_INT(sd_gemm_math_parse("bf16", &m), SD_OK);
    T_CHECK(m == SD_GEMM_BF16);
    T_EQ_INT(sd_gemm_math_parse("fp8", &m), SD_EINVAL);
}

int main(void)
{
    T_RUN(test_parse);
    T_RUN(test_fit_check);
    T_RUN(test_unavailable);
    int n = sd_device_count();
    if (n == 0) {
        printf("# %s\n", sd_errmsg());
        const char *why = sd_device_built_with_cuda() ? "no CUDA device"
                                                      : "no CUDA device (built without CUDA support)";
        T_SKIP("test_init", why);
        T_SKIP("test_memory", why);
        T_SKIP("test_axpy", why);
        T_SKIP("test_bf16", why);
        T_SKIP("test_f32_to_bf16", why);
        T_SKIP("test_sgemm", why);
        T_SKIP("test_gemm_math", why);
        T_DONE();
    }
    T_RUN(test_init);
    if (sd_device_current() != 0) {
        printf("# cannot initialise cuda:0: %s\n", sd_errmsg());
        return 1;
    }
    T_RUN(test_memory);
    T_RUN(test_axpy);
    T_RUN(test_bf16);
    T_RUN(test_f32_to_bf16);
    T_RUN(test_sgemm);
    T_RUN(test_gemm_math);
    sd_device_shutdown();
    T_DONE();
}
