/* lib/train/lora_extract: torch.quantile's linear interpolation, and the LAPACK factorisation with
 * the reference's clamp (row-major layout of both shapes, rank truncation, clamping at the quantile
 * of the signed values). The whole extraction is checked against numpy in tests/cli/sd_model_extract.sh. */
#include <math.h>

#include "test.h"
#include "train/lora_extract.h"

static void test_quantile(void)
{
    float a[4] = { 3, 1, 2, 4 };
    T_NEAR(sd_quantile_f32(a, 4, 0.5f), 2.5, 0);
    T_NEAR(sd_quantile_f32(a, 4, 0.0f), 1, 0);
    T_NEAR(sd_quantile_f32(a, 4, 1.0f), 4, 0);
    float b[2] = { 10, 0 };
    T_NEAR(sd_quantile_f32(b, 2, 0.75f), 7.5, 0);   /* the weight >= 0.5 branch of torch's lerp */
    float c[1] = { -5 };
    T_NEAR(sd_quantile_f32(c, 1, 0.99f), -5, 0);
    float d[100];
    for (int i = 0; i < 100; i++) d[i] = (float)(99 - i);
    T_NEAR(sd_quantile_f32(d, 100, 0.99f), 98.01, 1e-4);   /* rank 0.99 * 99 */
}

/* up.down [m,n] */
static void product(const float *up, const float *down, int m, int r, int n, float *out)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += (double)up[i * r + k] * down[k * n + j];
            out[i * n + j] = (float)s;
        }
}

/* a sign-symmetric rank-1 matrix a.b^T: with quantile 1 nothing is clamped, whatever the signs */
static void check_rank1(int m, int n, int rank)
{
    float M[64], W[64], up[64], down[64], P[64];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) M[i * n + j] = (float)((i / 2 + 1) * (i % 2 ? -1 : 1) * (j % 2 ? -0.5 : 0.5));
    memcpy(W, M, sizeof(float) * (size_t)(m * n));
    T_EQ_INT(sd_lora_svd_factor(W, m, n, rank, 1.0, up, down), 0);
    product(up, down, m, rank, n, P);
    double err = 0;
    for (int i = 0; i < m * n; i++) err = fmax(err, fabs(P[i] - M[i]));
    T_CHECKF(err < 1e-5, "%dx%d rank %d: max error %g", m, n, rank, err);
}

static void test_svd_layout(void)
{
    check_rank1(4, 6, 1);
    check_rank1(6, 4, 1);
    check_rank1(6, 4, 3);
}

static void test_svd_clamp(void)
{
    enum { M = 8, N = 6, R = 3 };
    float W[M * N], up[M * R], down[R * N];
    for (int i = 0; i < M * N; i++) W[i] = (float)(t_mix32((uint32_t)i + 7) % 2001) / 1000.0f - 1.0f;
    T_EQ_INT(sd_lora_svd_factor(W, M, N, R, 0.5, up, down), 0);
    /* hi = the median of the 42 signed values (its sign depends on the singular vectors' signs):
     * hi >= 0: about half of them now equal hi, none is outside [-hi, hi]; hi < 0: clamp(x, -hi, hi)
     * with min > max gives hi everywhere, as torch.clamp does */
    float hi = -INFINITY;
    for (int i = 0; i < M * R; i++) hi = fmaxf(hi, up[i]);
    for (int i = 0; i < R * N; i++) hi = fmaxf(hi, down[i]);
    int at = 0, out = 0;
    for (int i = 0; i < M * R; i++) at += up[i] == hi, out += up[i] < -hi;
    for (int i = 0; i < R * N; i++) at += down[i] == hi, out += down[i] < -hi;
    if (hi >= 0) T_CHECKF(at >= 15 && out == 0, "hi %g reached %d times, %d below -hi", hi, at, out);
    else T_CHECKF(at == M * R + R * N, "hi %g < 0 reached %d times (want all %d)", hi, at, M * R + R * N);
    float X[4] = { 1, 2, 3, 4 };
    T_CHECK(sd_lora_svd_factor(X, 2, 2, 3, 0.99, up, down) != 0);   /* rank > min(m, n) */
}

int main(void)
{
    T_RUN(test_quantile);
    T_RUN(test_svd_layout);
    T_RUN(test_svd_clamp);
    T_DONE();
}
