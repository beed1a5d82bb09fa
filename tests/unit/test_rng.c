#include "test.h"
#include "base/error.h"
#include "base/rng.h"

#include <stdint.h>

/* Known-answer vectors of Random123 (kat_vectors: "philox4x32 10 ctr[4] key[2] out[4]"). */
static void test_kat(void)
{
    static const uint32_t v[3][10] = {
        { 0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 },
        { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
          0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd },
        { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
          0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 },
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        sd_philox4x32_10(v[t], v[t] + 4, out);
        for (int k = 0; k < 4; k++) T_CHECKF(out[k] == v[t][6 + k], "vector %d word %d: %08x", t, k, out[k]);
    }
}

/* The stream layout documented in rng.h: block b of (seed, step, sample, purpose) is
 * philox(ctr = {b, sample, step, purpose}, key = {seed_lo, seed_hi}). */
static void test_layout(void)
{
    uint64_t seed = 0x123456789abcdef0ull;
    sd_rng r = sd_rng_key(seed, 7, 3, SD_RNG_NOISE);
    uint32_t ctr[4] = { 5, 3, 7, SD_RNG_NOISE }, key[2] = { 0x9abcdef0u, 0x12345678u }, w[4];
    sd_philox4x32_10(ctr, key, w);
    uint32_t got[4];
    T_EQ_INT(sd_rng_fill_u32(&r, 20, got, 4), SD_OK);
    for (int k = 0; k < 4; k++) T_EQ_INT(got[k], w[k]);
    T_EQ_INT(sd_rng_u32_at(&r, 22), w[2]);
    T_NEAR(sd_rng_uniform_at(&r, 21), (w[1] >> 8) / 16777216.0, 0);
}

static void moments(const float *x, size_t n, double *mean, double *var, double *kurt)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = s / n, m2 = 0, m4 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m;
        m2 += d * d;
        m4 += d * d * d * d;
    }
    m2 /= n;
    m4 /= n;
    *mean = m;
    *var = m2;
    *kurt = m4 / (m2 * m2);
}

#define NS 1000000

static void test_uniform_stats(void)
{
    float *x = malloc(NS * sizeof *x);
    sd_rng r = sd_rng_key(42, 0, 0, SD_RNG_USER);
    T_EQ_INT(sd_rng_fill_uniform(&r, 0, x, NS), SD_OK);
    float lo = 1, hi = 0;
    for (size_t i = 0; i < NS; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    T_CHECK(lo >= 0.0f && hi < 1.0f);
    T_CHECK(lo < 1e-4f && hi > 1 - 1e-4f);
    double m, v, k;
    moments(x, NS, &m, &v, &k);
    T_NEAR(m, 0.5, 0.002);            /* sd 0.00029 */
    T_NEAR(v, 1.0 / 12, 0.0005);
    T_NEAR(k, 1.8, 0.01);             /* uniform kurtosis 9/5 */
    /* 16 equal bins, chi-square with 15 dof; p = 0.001 at 37.7 */
    long bins[16] = { 0 };
    for (size_t i = 0; i < NS; i++) bins[(int)(x[i] * 16)]++;
    double chi = 0, e = NS / 16.0;
    for (int b = 0; b < 16; b++) chi += (bins[b] - e) * (bins[b] - e) / e;
    T_CHECKF(chi < 37.7, "chi2 %g", chi);
    free(x);
}

static void test_normal_stats(void)
{
    float *x = malloc(NS * sizeof *x);
    sd_rng r = sd_rng_key(1234, 5, 6, SD_RNG_NOISE);
    T_EQ_INT(sd_rng_fill_normal(&r, 0, x, NS), SD_OK);
    double m, v, k;
    moments(x, NS, &m, &v, &k);
    T_NEAR(m, 0.0, 0.005);    /* sd 0.001 */
    T_NEAR(v, 1.0, 0.01);     /* sd 0.0014 */
    T_NEAR(k, 3.0, 0.05);     /* sd 0.005 */
    long in1 = 0, in2 = 0;
    float amax = 0;
    for (size_t i = 0; i < NS; i++) {
        float a = fabsf(x[i]);
        in1 += a < 1;
        in2 += a < 2;
        if (a > amax) amax = a;
    }
    T_NEAR(in1 / (double)NS, 0.682689, 0.003);
    T_NEAR(in2 / (double)NS, 0.954500, 0.002);
    T_CHECK(amax < 6.7f && amax > 4.0f);
    /* neighbours are uncorrelated (the two outputs of one Box–Muller pair and across pairs) */
    double c01 = 0, c12 = 0;
    for (size_t i = 0; i + 4 <= NS; i += 4) {
        c01 += (double)x[i] * x[i + 1];
        c12 += (double)x[i + 1] * x[i + 2];
    }
    T_NEAR(c01 / (NS / 4), 0.0, 0.01);
    T_NEAR(c12 / (NS / 4), 0.0, 0.01);
    free(x);
}

/* Filling [0, n) at once equals any split into pieces, for every offset alignment, and the
 * scalar accessors agree; the threaded path (n >= 64k) gives the same bytes. */
static void test_chunking(void)
{
    enum { N = 200003 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    uint32_t *ua = malloc(N * sizeof *ua), *ub = malloc(N * sizeof *ub);
    sd_rng r = sd_rng_key(99, 1, 2, SD_RNG_NOISE);
    T_EQ_INT(sd_rng_fill_normal(&r, 0, a, N), SD_OK);
    T_EQ_INT(sd_rng_fill_u32(&r, 0, ua, N), SD_OK);
    size_t cuts[] = { 0, 1, 2, 3, 5, 6, 7, 13, 65536 + 3, N - 1, N };
    for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
        size_t k = cuts[c];
        memset(b, 0, N * sizeof *b);
        T_EQ_INT(sd_rng_fill_normal(&r, 0, b, k), SD_OK);
        T_EQ_INT(sd_rng_fill_normal(&r, k, b + k, N - k), SD_OK);
        T_CHECKF(!memcmp(a, b, N * sizeof *a), "normal split at %zu", k);
        T_EQ_INT(sd_rng_fill_u32(&r, 0, ub, k), SD_OK);
        T_EQ_INT(sd_rng_fill_u32(&r, k, ub + k, N - k), SD_OK);
        T_CHECKF(!memcmp(ua, ub, N * sizeof *ua), "u32 split at %zu", k);
    }
    /* small pieces of every length at every alignment */
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len < 11; len++) {
            float t[16];
            T_EQ_INT(sd_rng_fill_normal(&r, off, t, len), SD_OK);
            T_CHECKF(!memcmp(t, a + off, len * sizeof *t), "off %zu len %zu", off, len);
        }
    for (size_t i = 0; i < 100; i++) {
        T_CHECK(sd_rng_normal_at(&r, i * 1999) == a[i * 1999]);
        T_CHECK(sd_rng_u32_at(&r, i * 1999) == ua[i * 1999]);
    }
    float u[10];
    T_EQ_INT(sd_rng_fill_uniform(&r, 7, u, 10), SD_OK);
    for (int i = 0; i < 10; i++) T_CHECK(u[i] == sd_rng_uniform_at(&r, 7 + i));
    sd_rng c = r;
    for (int i = 0; i < 10; i++) T_CHECK(sd_rng_next_normal(&c) == a[i]);
    T_EQ_INT(c.pos, 10);
    free(a); free(b); free(ua); free(ub);
}

static void test_streams_differ(void)
{
    enum { N = 64 };
    uint32_t base[N], o[N];
    sd_rng r0 = sd_rng_key(5, 10, 20, SD_RNG_NOISE);
    sd_rng_fill_u32(&r0, 0, base, N);
    sd_rng vars[] = {
        sd_rng_key(5, 10, 20, SD_RNG_TIMESTEP), sd_rng_key(5, 11, 20, SD_RNG_NOISE),
        sd_rng_key(5, 10, 21, SD_RNG_NOISE), sd_rng_key(6, 10, 20, SD_RNG_NOISE),
        sd_rng_key(5 + (1ull << 32), 10, 20, SD_RNG_NOISE), sd_rng_key(5, 20, 10, SD_RNG_NOISE),
    };
    for (size_t v = 0; v < sizeof vars / sizeof *vars; v++) {
        sd_rng_fill_u32(&vars[v], 0, o, N);
        int same = 0;
        for (int i = 0; i < N; i++) same += o[i] == base[i];
        T_CHECKF(same <= 1, "variant %zu shares %d of %d words", v, same, N);
    }
    /* same key → same numbers */
    sd_rng r1 = sd_rng_key(5, 10, 20, SD_RNG_NOISE);
    sd_rng_fill_u32(&r1, 0, o, N);
    T_CHECK(!memcmp(o, base, sizeof o));
}

static void test_below_shuffle(void)
{
    sd_rng r = sd_rng_key(7, 0, 0, SD_RNG_TIMESTEP);
    long cnt[10] = { 0 };
    for (uint64_t i = 0; i < 100000; i++) {
        uint64_t x = sd_rng_below_at(&r, i, 10);
        T_CHECK(x < 10);
        if (x < 10) cnt[x]++;
    }
    for (int k = 0; k < 10; k++) T_NEAR(cnt[k], 10000, 500);
    T_EQ_INT(sd_rng_below_at(&r, 3, 0), 0);
    T_EQ_INT(sd_rng_below_at(&r, 3, 1), 0);
    sd_rng c = r;
    uint64_t a = sd_rng_next_below(&c, 1000);
    T_EQ_INT(c.pos, 2);
    T_EQ_INT(a, sd_rng_below_at(&r, 0, 1000));

    int64_t v[100], w[100];
    for (int i = 0; i < 100; i++) v[i] = w[i] = i;
    sd_rng_shuffle_i64(&r, v, 100);
    sd_rng_shuffle_i64(&r, w, 100);
    T_CHECK(!memcmp(v, w, sizeof v));
    int seen[100] = { 0 }, fixed = 0;
    for (int i = 0; i < 100; i++) {
        T_CHECK(v[i] >= 0 && v[i] < 100);
        if (v[i] >= 0 && v[i] < 100) seen[v[i]]++;
        fixed += v[i] == i;
    }
    for (int i = 0; i < 100; i++) T_EQ_INT(seen[i], 1);
    T_CHECK(fixed < 10);
    sd_rng_shuffle_i64(&r, v, 0);
    sd_rng_shuffle_i64(&r, v, 1);
}

static void test_limits(void)
{
    sd_rng r = sd_rng_key(1, 2, 3, 4);
    float x[8];
    T_EQ_INT(sd_rng_fill_uniform(&r, SD_RNG_MAX_INDEX - 4, x, 4), SD_OK);
    T_EQ_INT(sd_rng_fill_uniform(&r, SD_RNG_MAX_INDEX - 4, x, 5), SD_ERANGE);
    T_CHECK(strstr(sd_errmsg(), "2^34") != NULL);
    T_EQ_INT(sd_rng_fill_uniform(&r, UINT64_MAX, x, 1), SD_ERANGE);
    T_EQ_INT(sd_rng_fill_normal(&r, SD_RNG_MAX_INDEX, x, 0), SD_OK);
}

int main(void)
{
    T_RUN(test_kat);
    T_RUN(test_layout);
    T_RUN(test_uniform_stats);
    T_RUN(test_normal_stats);
    T_RUN(test_chunking);
    T_RUN(test_streams_differ);
    T_RUN(test_below_shuffle);
    T_RUN(test_limits);
    T_DONE();
}
