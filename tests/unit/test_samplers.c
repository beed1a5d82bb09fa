/* lib/diffusion/samplers: every sampler's timestep/sigma sequence and its trajectory on a fixed
 * fake model against diffusers 0.32.1's own scheduler code as the reference drives it
 * (tests/data/diffusion/samplers.json from tests/golden/gen/make_diffusion_golden.py), plus the
 * API's error paths and the Philox-driven sampling loop. */
#include "test.h"

#include "base/error.h"
#include "diffusion/samplers.h"
#include "diffusion_golden.h"

#define N 18 /* golden sample shape [1, 2, 3, 3] */

/* the generator's fake_model: which 0: 0.1x + 0.2 sin(0.01t + 0.5i); 1: 0.3 cos(0.013t + 0.25i) − 0.05x */
static void fake(const float *x, int n, double t, int which, float *out)
{
    for (int i = 0; i < n; i++) {
        double v = which == 0 ? 0.1 * (double)x[i] + 0.2 * sin(0.01 * t + 0.5 * i)
                              : 0.3 * cos(0.013 * t + 0.25 * i) - 0.05 * (double)x[i];
        out[i] = (float)v;
    }
}

static void fed_noise(int k, int n, float *out)
{
    for (int i = 0; i < n; i++) out[i] = (float)(1.5 * sin(1.3 * k + 0.7 * i + 0.2));
}

static double worst_traj, worst_final, worst_ts, worst_sig;
static char worst_name[64];

static double arr_err(const float *got, jv arr, int n, double floor_)
{
    int m = 0;
    double *w = g_arr_v(arr, &m);
    double e = m == n ? g_relerr(got, w, n, floor_) : 1e9;
    free(w);
    return e;
}

static void check_run(jv r)
{
    jv namev = g_get(r, "name");
    char name[32];
    snprintf(name, sizeof name, "%s", jv_string_value(namev));
    jv_free(namev);
    int steps = (int)g_num(r, "steps"), v = (int)g_num(r, "v");
    double cfg = g_num(r, "cfg");
    sd_sampler_kind kind;
    T_EQ_INT(sd_sampler_parse(name, &kind), SD_OK);
    sd_sampler_config c;
    sd_sampler_config_default(&c);
    c.v_prediction = v;
    jv fst = g_get(r, "final_sigmas_type");
    if (jv_get_kind(fst) == JV_KIND_STRING && !strcmp(jv_string_value(fst), "sigma_min")) c.final_sigma_zero = 0;
    jv_free(fst);
    sd_sampler s;
    jv err = g_get(r, "error");
    int rc = sd_sampler_init(&s, kind, steps, &c, N);
    if (jv_get_kind(err) == JV_KIND_STRING) {
        T_CHECKF(rc == SD_EUNSUPPORTED, "%s %d steps: the reference fails, we returned %d", name, steps, rc);
        jv_free(err);
        if (rc == SD_OK) sd_sampler_free(&s);
        return;
    }
    jv_free(err);
    T_CHECKF(rc == SD_OK, "%s %d: %s", name, steps, sd_errmsg());
    if (rc) return;
    char tag[64];
    snprintf(tag, sizeof tag, "%s/%d/%s%s%s", name, steps, v ? "v" : "eps", cfg == cfg ? "/cfg" : "",
             c.final_sigma_zero == 0 ? "/sigma_min" : "");

    /* timesteps and sigmas */
    int nts = 0;
    double *ts = g_arr(r, "timesteps", &nts);
    T_CHECKF(nts == s.nt, "%s: %d timesteps, reference %d", tag, s.nt, nts);
    double e = 0;
    for (int i = 0; i < nts && i < s.nt; i++) {
        double d = fabs(s.timesteps[i] - ts[i]) / (fabs(ts[i]) > 1 ? fabs(ts[i]) : 1);
        if (d > e) e = d;
    }
    T_CHECKF(e < 1e-6, "%s: timesteps max rel err %g", tag, e);
    if (e > worst_ts) worst_ts = e;
    int nsig = g_len(r, "sigmas");
    if (nsig > 0) {
        T_CHECKF(nsig == s.ns, "%s: %d sigmas, reference %d", tag, s.ns, nsig);
        double es = nsig == s.ns ? arr_err(s.sigmas, g_get(r, "sigmas"), nsig, 1e-3) : 1;
        T_CHECKF(es < 1e-6, "%s: sigmas max rel err %g", tag, es);
        if (es > worst_sig) worst_sig = es;
    }
    T_CHECKF(fabs(s.init_noise_sigma - g_num(r, "init_noise_sigma")) < 1e-6 * (1 + s.init_noise_sigma),
             "%s: init_noise_sigma %g vs %g", tag, s.init_noise_sigma, g_num(r, "init_noise_sigma"));

    /* the pipeline loop */
    float x[N], in[2 * N], out[2 * N], noise[N];
    for (int i = 0; i < N; i++) x[i] = (float)(cos(0.37 * i + 0.1) * 1.2);
    for (int i = 0; i < N; i++) x[i] = x[i] * s.init_noise_sigma;
    jv traj = g_get(r, "trajectory");
    int have_traj = jv_get_kind(traj) == JV_KIND_ARRAY;
    int k = 0, calls = 0;
    double et = 0;
    while (!sd_sampler_done(&s)) {
        double t = sd_sampler_timestep(&s);
        if (cfg == cfg) {
            memcpy(in, x, sizeof x);
            memcpy(in + N, x, sizeof x);
            sd_sampler_scale_model_input(&s, in, in, 2 * N);
            fake(in, N, t, 0, out);
            fake(in + N, N, t, 1, out + N);
            sd_cfg_combine(out, out + N, cfg, N, out);
        } else {
            sd_sampler_scale_model_input(&s, x, in, N);
            fake(in, N, t, 0, out);
        }
        const float *nz = NULL;
        if (sd_sampler_step_needs_noise(&s)) {
            fed_noise(k++, N, noise);
            nz = noise;
        }
        T_EQ_INT(sd_sampler_step(&s, out, x, nz), SD_OK);
        if (have_traj) {
            double ei = arr_err(x, jv_array_get(jv_copy(traj), calls), N, 0.1);
            if (ei > et) et = ei;
        }
        calls++;
    }
    jv_free(traj);
    T_EQ_INT(calls, nts);
    T_CHECKF(k == (int)g_num(r, "noise_used"), "%s: used %d noises, reference %d", tag, k, (int)g_num(r, "noise_used"));
    double ef = arr_err(x, g_get(r, "final"), N, 0.1);
    T_CHECKF(ef < 1e-5, "%s: final max rel err %g", tag, ef);
    T_CHECKF(et < 1e-5, "%s: trajectory max rel err %g", tag, et);
    if (et > worst_traj) worst_traj = et;
    if (ef > worst_final) {
        worst_final = ef;
        snprintf(worst_name, sizeof worst_name, "%s", tag);
    }
    /* after the last step */
    T_EQ_INT(sd_sampler_step(&s, out, x, noise), SD_ESTATE);
    free(ts);
    sd_sampler_free(&s);
}

static void test_golden(void)
{
    jv g = g_load("samplers.json");
    T_CHECK(jv_is_valid(g));
    if (!jv_is_valid(g)) return;
    jv runs = g_get(g, "runs");
    int nr = jv_array_length(jv_copy(runs));
    T_CHECK(nr >= 50);
    int seen[SD_SAMPLER_COUNT] = {0};
    for (int i = 0; i < nr; i++) {
        jv r = jv_array_get(jv_copy(runs), i);
        jv nm = g_get(r, "name");
        sd_sampler_kind k;
        if (!sd_sampler_parse(jv_string_value(nm), &k)) seen[k]++;
        jv_free(nm);
        check_run(r);
        jv_free(r);
    }
    for (int k = 0; k < SD_SAMPLER_COUNT; k++) T_CHECKF(seen[k] >= 4, "sampler %s not covered", sd_sampler_name(k));
    printf("#   %d runs: max rel err timesteps %.3g, sigmas %.3g, trajectories %.3g, final %.3g (%s)\n",
           nr, worst_ts, worst_sig, worst_traj, worst_final, worst_name);
    jv_free(runs);
    jv_free(g);
}

static void test_names(void)
{
    sd_sampler_kind k;
    const char *ok[] = {"ddim", "pndm", "lms", "k_lms", "euler", "k_euler", "euler_a", "k_euler_a", "heun",
                        "dpm_2", "k_dpm_2", "dpm_2_a", "k_dpm_2_a", "dpmsolver", "dpmsolver++", "dpmsingle"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) T_EQ_INT(sd_sampler_parse(ok[i], &k), SD_OK);
    T_EQ_INT(sd_sampler_parse("k_euler_a", &k), SD_OK);
    T_EQ_STR(sd_sampler_name(k), "euler_a");
    T_EQ_INT(sd_sampler_parse("DDIM", &k), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "unknown sampler 'DDIM'") != NULL);
    T_EQ_INT(sd_sampler_parse(NULL, &k), SD_EINVAL);
    T_EQ_INT(sd_sampler_parse_reference("ddpm", &k), 1);
    T_EQ_INT(k, SD_SAMPLER_DDIM);
    T_EQ_INT(sd_sampler_parse_reference("heun", &k), 0);
    T_EQ_INT(k, SD_SAMPLER_HEUN);
    T_EQ_STR(sd_sampler_name((sd_sampler_kind)99), "?");
}

static void test_errors(void)
{
    sd_sampler s;
    sd_sampler_config c;
    sd_sampler_config_default(&c);
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_EULER, 0, &c, 4), SD_EINVAL);
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_EULER, 1001, &c, 4), SD_EINVAL);
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_EULER, 10, &c, 0), SD_EINVAL);
    T_EQ_INT(sd_sampler_init(&s, (sd_sampler_kind)42, 10, &c, 4), SD_EINVAL);
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_PNDM, 3, &c, 4), SD_EUNSUPPORTED);
    T_CHECK(strstr(sd_errmsg(), "at least 4") != NULL);
    c.final_sigma_zero = 1;
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_DPMSOLVER, 10, &c, 4), SD_EUNSUPPORTED);
    sd_sampler_config_default(&c);
    c.eta = -1;
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_DDIM, 10, &c, 4), SD_EINVAL);
    /* ancestral noise is required */
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_EULER_A, 5, NULL, 4), SD_OK);
    float x[4] = {1, 2, 3, 4}, m[4] = {0};
    T_CHECK(sd_sampler_step_needs_noise(&s));
    T_EQ_INT(sd_sampler_step(&s, m, x, NULL), SD_ESTATE);
    sd_sampler_free(&s);
    sd_sampler_free(&s); /* idempotent */
    /* DDIM with eta > 0 draws noise; eta 0 does not */
    sd_sampler_config_default(&c);
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_DDIM, 5, &c, 4), SD_OK);
    T_CHECK(!sd_sampler_step_needs_noise(&s));
    sd_sampler_free(&s);
    c.eta = 0.5;
    T_EQ_INT(sd_sampler_init(&s, SD_SAMPLER_DDIM, 5, &c, 4), SD_OK);
    T_CHECK(sd_sampler_step_needs_noise(&s));
    sd_sampler_free(&s);
}

/* a model that pulls x towards 0.3: ε = (x − 0.3·a)/b-ish; only needs to be deterministic */
struct fm { int calls; int64_t last_batch; };
static int model_fn(void *user, const float *x, int64_t batch, double t, float *out)
{
    struct fm *f = user;
    f->calls++;
    f->last_batch = batch;
    int64_t per = 8;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < per; i++) out[b * per + i] = 0.5f * x[b * per + i] + (float)(0.01 * sin(t * 0.001 + (double)i));
    return SD_OK;
}
static int failing_fn(void *user, const float *x, int64_t batch, double t, float *out)
{
    (void)user; (void)x; (void)batch; (void)t; (void)out;
    return sd_err(SD_EIO, "model failed");
}

static void test_run_loop(void)
{
    uint64_t seeds[2] = {42, 7};
    float lat[16], lat2[16], one[8];
    for (int k = 0; k < SD_SAMPLER_COUNT; k++) {
        sd_sampler s;
        int steps = k == SD_SAMPLER_PNDM ? 6 : 5;
        T_EQ_INT(sd_sampler_init(&s, (sd_sampler_kind)k, steps, NULL, 16), SD_OK);
        struct fm f = {0, 0};
        T_EQ_INT(sd_sampler_initial_noise(2, 8, seeds, lat), SD_OK);
        T_EQ_INT(sd_sampler_run(&s, 2, 8, seeds, 7.5, model_fn, &f, lat), SD_OK);
        T_EQ_INT(f.calls, s.nt);
        T_EQ_INT(f.last_batch, 4); /* doubled for guidance */
        int finite = 1;
        for (int i = 0; i < 16; i++) finite &= isfinite(lat[i]);
        T_CHECKF(finite, "%s produced non-finite latents", sd_sampler_name(k));
        /* reuse: same result; image 1 alone gives the same bytes as in the batch of two */
        T_EQ_INT(sd_sampler_initial_noise(2, 8, seeds, lat2), SD_OK);
        T_EQ_INT(sd_sampler_run(&s, 2, 8, seeds, 7.5, model_fn, &f, lat2), SD_OK);
        T_CHECK(!memcmp(lat, lat2, sizeof lat));
        sd_sampler_free(&s);
        T_EQ_INT(sd_sampler_init(&s, (sd_sampler_kind)k, steps, NULL, 8), SD_OK);
        T_EQ_INT(sd_sampler_initial_noise(1, 8, seeds + 1, one), SD_OK);
        T_EQ_INT(sd_sampler_run(&s, 1, 8, seeds + 1, 7.5, model_fn, &f, one), SD_OK);
        T_CHECKF(!memcmp(one, lat + 8, sizeof one), "%s: batch composition changed an image", sd_sampler_name(k));
        /* no guidance: model sees the plain batch */
        T_EQ_INT(sd_sampler_run(&s, 1, 8, seeds + 1, 1.0, model_fn, &f, one), SD_OK);
        T_EQ_INT(f.last_batch, 1);
        T_EQ_INT(sd_sampler_run(&s, 2, 8, seeds, 1.0, model_fn, &f, lat), SD_EINVAL);
        T_EQ_INT(sd_sampler_run(&s, 1, 8, seeds, 1.0, failing_fn, NULL, one), SD_EIO);
        sd_sampler_free(&s);
    }
}

static void test_cfg(void)
{
    float u[3] = {1, 2, 3}, c[3] = {2, 2, 0}, o[3];
    sd_cfg_combine(u, c, 7.5, 3, o);
    T_NEAR(o[0], 8.5, 1e-6);
    T_NEAR(o[1], 2, 1e-6);
    T_NEAR(o[2], 3 - 22.5, 1e-5);
    sd_cfg_combine(u, c, 1.0, 3, u); /* aliasing */
    T_NEAR(u[0], 2, 0);
    T_NEAR(u[2], 0, 0);
}

int main(void)
{
    T_RUN(test_golden);
    T_RUN(test_names);
    T_RUN(test_errors);
    T_RUN(test_run_loop);
    T_RUN(test_cfg);
    T_DONE();
}
