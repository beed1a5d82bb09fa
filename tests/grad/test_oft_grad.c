/* Gradient check of the OFT rotation (nn/oft.h sd_oft_rotation_backward): dL/dB of L = Σ r·Rw(B)
 * against central finite differences in double precision, with the norm clamp inactive, active
 * (‖B − Bᵀ‖ above the constraint) and at B = 0 (the reference's initialisation), for several block
 * counts and a multiplier ≠ 1; the checker itself is shown to catch a wrong gradient. Also: Rw is
 * orthogonal when multiplier = 1, and the identity at B = 0. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "nn/oft.h"
#include "test.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double urand(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1;
}

static double loss(const double *b, const double *r, int k, int n, double c, double m)
{
    size_t bn = (size_t)k * n * n;
    double *rw = malloc(bn * sizeof *rw);
    if (sd_oft_rotation(b, k, n, c, m, rw)) abort();
    double l = 0;
    for (size_t i = 0; i < bn; i++) l += r[i] * rw[i];
    free(rw);
    return l;
}

/* Max relative error of the analytic gradient (optionally perturbed by `bug` at element 0). */
static double check(int k, int n, double scale, double c, double m, double bug)
{
    size_t bn = (size_t)k * n * n;
    double *b = malloc(bn * sizeof *b), *r = malloc(bn * sizeof *r), *g = calloc(bn, sizeof *g);
    for (size_t i = 0; i < bn; i++) b[i] = scale * urand();
    for (size_t i = 0; i < bn; i++) r[i] = urand();
    /* accumulation: start from 1 and subtract it */
    for (size_t i = 0; i < bn; i++) g[i] = 1.0;
    if (sd_oft_rotation_backward(b, k, n, c, m, r, g)) abort();
    for (size_t i = 0; i < bn; i++) g[i] -= 1.0;
    g[0] += bug;
    double maxerr = 0, gmax = 1e-12;
    for (size_t i = 0; i < bn; i++) gmax = fmax(gmax, fabs(g[i]));
    const double eps = 1e-6;
    for (size_t i = 0; i < bn; i++) {
        double keep = b[i];
        b[i] = keep + eps;
        double lp = loss(b, r, k, n, c, m);
        b[i] = keep - eps;
        double lm = loss(b, r, k, n, c, m);
        b[i] = keep;
        double fd = (lp - lm) / (2 * eps);
        maxerr = fmax(maxerr, fabs(fd - g[i]) / gmax);
    }
    free(b);
    free(r);
    free(g);
    return maxerr;
}

static double qnorm(int k, int n, double scale)
{
    /* the norm the same random draw will give (peek with a copy of the generator) */
    uint64_t keep = g_rng;
    double acc = 0;
    size_t bn = (size_t)k * n * n;
    double *b = malloc(bn * sizeof *b);
    for (size_t i = 0; i < bn; i++) b[i] = scale * urand();
    for (int kk = 0; kk < k; kk++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double q = b[(size_t)kk * n * n + i * n + j] - b[(size_t)kk * n * n + j * n + i];
                acc += q * q;
            }
    free(b);
    g_rng = keep;
    return sqrt(acc);
}

static void test_unclamped(void)
{
    double e1 = check(1, 5, 0.3, 1e9, 1.0, 0);
    double e2 = check(3, 4, 0.2, 1e9, 0.7, 0);
    double e3 = check(4, 2, 0.5, 1e9, 1.0, 0);
    printf("# unclamped: max rel err %.2e %.2e %.2e\n", e1, e2, e3);
    T_CHECKF(e1 < 1e-7 && e2 < 1e-7 && e3 < 1e-7, "errors %g %g %g", e1, e2, e3);
}

static void test_clamped(void)
{
    double nq = qnorm(2, 4, 0.4);
    double c = 0.5 * nq;   /* clamp active: the norm is scaled down to c */
    double e = check(2, 4, 0.4, c, 1.0, 0);
    double nq2 = qnorm(3, 3, 0.3);
    double e2 = check(3, 3, 0.3, 0.25 * nq2, 0.6, 0);
    printf("# clamped: max rel err %.2e %.2e\n", e, e2);
    T_CHECKF(e < 1e-7 && e2 < 1e-7, "errors %g %g", e, e2);
}

static void test_at_zero(void)
{
    /* B = 0: R = I, the gradient of the first step (the norm's gradient is 0 there, as torch's) */
    int k = 2, n = 3;
    size_t bn = (size_t)k * n * n;
    double b[18] = { 0 }, r[18], g[18] = { 0 }, rw[18];
    for (size_t i = 0; i < bn; i++) r[i] = urand();
    T_CHECK(sd_oft_rotation(b, k, n, 1e-3 * 6, 1.0, rw) == SD_OK);
    int ident = 1;
    for (int kk = 0; kk < k; kk++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) ident &= rw[kk * n * n + i * n + j] == (i == j);
    T_CHECK(ident);
    T_CHECK(sd_oft_rotation_backward(b, k, n, 1e-3 * 6, 1.0, r, g) == SD_OK);
    /* R = I + 2Q + O(Q²) and Q = B − Bᵀ: dL/dB = 2(G − Gᵀ) */
    double maxerr = 0;
    for (int kk = 0; kk < k; kk++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double want = 2 * (r[kk * n * n + i * n + j] - r[kk * n * n + j * n + i]);
                maxerr = fmax(maxerr, fabs(g[kk * n * n + i * n + j] - want));
            }
    T_CHECKF(maxerr < 1e-12, "at zero: %g", maxerr);
}

static void test_orthogonal(void)
{
    int k = 2, n = 6;
    size_t bn = (size_t)k * n * n;
    double *b = malloc(bn * sizeof *b), *rw = malloc(bn * sizeof *rw);
    for (size_t i = 0; i < bn; i++) b[i] = 0.4 * urand();
    T_CHECK(sd_oft_rotation(b, k, n, 1e9, 1.0, rw) == SD_OK);
    double maxerr = 0;
    for (int kk = 0; kk < k; kk++) {
        const double *R = rw + (size_t)kk * n * n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double d = 0;
                for (int t = 0; t < n; t++) d += R[t * n + i] * R[t * n + j];
                maxerr = fmax(maxerr, fabs(d - (i == j)));
            }
    }
    T_CHECKF(maxerr < 1e-12, "RᵀR − I: %g", maxerr);
    free(b);
    free(rw);
}

static void test_checker_catches(void)
{
    double e = check(2, 3, 0.3, 1e9, 1.0, 1e-3);
    T_CHECKF(e > 1e-5, "a wrong gradient passed (err %g)", e);
}

int main(void)
{
    T_RUN(test_unclamped);
    T_RUN(test_clamped);
    T_RUN(test_at_zero);
    T_RUN(test_orthogonal);
    T_RUN(test_checker_catches);
    T_DONE();
}
