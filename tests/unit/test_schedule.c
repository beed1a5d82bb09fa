/* lib/diffusion/schedule: the DDPM tables, add_noise, velocity and the zero-terminal-SNR rescale
 * against diffusers/kohya in PyTorch (tests/data/diffusion/schedule.json from
 * tests/golden/gen/make_diffusion_golden.py). */
#include "test.h"

#include "base/error.h"
#include "diffusion/schedule.h"
#include "diffusion_golden.h"

static double max_err_table(const float *table, jv g, const char *key, const double *idx, int nidx, double floor_)
{
    int n = 0;
    double *want = g_arr(g, key, &n);
    double m = -1;
    if (n == nidx) {
        m = 0;
        for (int i = 0; i < n; i++) {
            float v = table[(int)idx[i]];
            double w = (double)(float)want[i];
            double den = fabs(w) > floor_ ? fabs(w) : floor_;
            double e = fabs(v - w) / den;
            if (!(e <= m)) m = e;
        }
    }
    free(want);
    printf("#   %-18s max rel err %.3g\n", key, m);
    return m;
}

static void test_tables(void)
{
    jv g = g_load("schedule.json");
    T_CHECK(jv_is_valid(g));
    if (!jv_is_valid(g)) return;
    sd_ddpm s;
    sd_ddpm_init(&s);
    T_EQ_INT(s.n, 1000);
    int nidx = 0;
    double *idx = g_arr(g, "table_index", &nidx);
    T_CHECK(nidx > 100);
    double e;
    e = max_err_table(s.betas, g, "betas", idx, nidx, 0);
    T_CHECK(e == 0);
    e = max_err_table(s.alphas_cumprod, g, "alphas_cumprod", idx, nidx, 0);
    T_CHECK(e == 0); /* bit-identical to torch */
    e = max_err_table(s.all_snr, g, "all_snr", idx, nidx, 0);
    T_CHECK(e == 0); /* bit-identical to torch */
    sd_ddpm z = s;
    sd_ddpm_rescale_zero_terminal_snr(&z);
    T_CHECK(z.zero_terminal_snr);
    T_CHECK(z.alphas_cumprod[999] == 0.0f);
    T_CHECK(z.betas[999] == 1.0f);
    e = max_err_table(z.betas, g, "zt_betas", idx, nidx, 1e-3);
    T_CHECK(e == 0); /* bit-identical to torch */
    e = max_err_table(z.alphas_cumprod, g, "zt_alphas_cumprod", idx, nidx, 1e-3);
    T_CHECK(e == 0); /* bit-identical to torch */
    /* all_snr stays the original table; applying twice changes nothing */
    T_CHECK(!memcmp(z.all_snr, s.all_snr, sizeof s.all_snr));
    sd_ddpm z2 = z;
    sd_ddpm_rescale_zero_terminal_snr(&z2);
    T_CHECK(!memcmp(&z2, &z, sizeof z));
    free(idx);
    jv_free(g);
}

static void check_noise(const sd_ddpm *s, jv g, const char *tkey, const char *nkey, const char *vkey)
{
    int n = 0, nn = 0, nt = 0;
    float *x = g_farr(g, "x", &n), *e = g_farr(g, "noise", &nn);
    double *tt = g_arr(g, tkey, &nt);
    int t[3];
    for (int i = 0; i < 3 && i < nt; i++) t[i] = (int)tt[i];
    T_EQ_INT(nt, 3);
    T_EQ_INT(n, 3 * 24);
    float *out = malloc(sizeof(float) * (size_t)n);
    int nw = 0;
    double *want = g_arr(g, nkey, &nw);
    T_EQ_INT(sd_ddpm_add_noise(s, x, e, t, 3, 24, out), SD_OK);
    double err = g_relerr(out, want, n, 1e-2);
    printf("#   %-18s max rel err %.3g\n", nkey, err);
    T_CHECK(err < 1e-6);
    free(want);
    want = g_arr(g, vkey, &nw);
    T_EQ_INT(sd_ddpm_velocity(s, x, e, t, 3, 24, out), SD_OK);
    err = g_relerr(out, want, n, 1e-2);
    printf("#   %-18s max rel err %.3g\n", vkey, err);
    T_CHECK(err < 1e-6);
    /* in place (out aliases x0) */
    memcpy(out, x, sizeof(float) * (size_t)n);
    T_EQ_INT(sd_ddpm_velocity(s, out, e, t, 3, 24, out), SD_OK);
    T_CHECK(g_relerr(out, want, n, 1e-2) < 1e-5);
    free(want);
    free(x);
    free(e);
    free(tt);
    free(out);
}

static void test_add_noise_velocity(void)
{
    jv g = g_load("schedule.json");
    if (!jv_is_valid(g)) { T_CHECK(0); return; }
    sd_ddpm s;
    sd_ddpm_init(&s);
    check_noise(&s, g, "t", "noisy", "v");
    sd_ddpm_rescale_zero_terminal_snr(&s);
    check_noise(&s, g, "tz", "zt_noisy", "zt_v");
    jv_free(g);
}

static void test_errors(void)
{
    sd_ddpm s;
    T_EQ_INT(sd_ddpm_init_ex(&s, 1, 0.1, 0.2, SD_BETA_LINEAR), SD_EINVAL);
    T_EQ_INT(sd_ddpm_init_ex(&s, 1001, 0.1, 0.2, SD_BETA_LINEAR), SD_EINVAL);
    T_EQ_INT(sd_ddpm_init_ex(&s, 10, 0.2, 0.1, SD_BETA_LINEAR), SD_EINVAL);
    T_EQ_INT(sd_ddpm_init_ex(&s, 10, 0.0, 0.1, SD_BETA_LINEAR), SD_EINVAL);
    T_EQ_INT(sd_ddpm_init_ex(&s, 10, 0.1, 0.2, (sd_beta_schedule)7), SD_EINVAL);
    T_EQ_INT(sd_ddpm_init_ex(&s, 10, 0.1, 0.2, SD_BETA_LINEAR), SD_OK);
    T_NEAR(s.betas[0], 0.1, 1e-8);
    T_NEAR(s.betas[9], 0.2, 1e-8);
    T_NEAR(s.betas[3], 0.1 + 0.1 * 3 / 9, 1e-8);
    float x[2] = {1, 2}, e[2] = {0, 0}, o[2];
    int bad[2] = {0, 10};
    T_EQ_INT(sd_ddpm_add_noise(&s, x, e, bad, 2, 1, o), SD_ERANGE);
    T_CHECK(strstr(sd_errmsg(), "timestep 10") != NULL);
    bad[1] = -1;
    T_EQ_INT(sd_ddpm_velocity(&s, x, e, bad, 2, 1, o), SD_ERANGE);
    /* t = 0 of the SD schedule: almost no noise */
    sd_ddpm_init(&s);
    int t0 = 0;
    float one = 1.0f, zero = 0.0f, out = 0;
    T_EQ_INT(sd_ddpm_add_noise(&s, &one, &zero, &t0, 1, 1, &out), SD_OK);
    T_NEAR(out, sqrt(1 - 0.00085), 1e-7);
    T_NEAR(sd_ddpm_snr(&s, 0), (1 - 0.00085) / 0.00085, 0.05); /* float32 table */
}

int main(void)
{
    T_RUN(test_tables);
    T_RUN(test_add_noise_velocity);
    T_RUN(test_errors);
    T_DONE();
}
