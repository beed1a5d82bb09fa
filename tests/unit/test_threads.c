#include "test.h"
#include "base/error.h"
#include "base/opts.h"
#include "base/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

static void test_cpus(void)
{
    cpu_set_t set;
    T_EQ_INT(sched_getaffinity(0, sizeof set, &set), 0);
    int n = sd_threads_cpus();
    T_CHECK(n >= 1);
    T_CHECK(n <= CPU_COUNT(&set));
}

static void test_default_env(void)
{
    setenv("SD_THREADS", "3", 1);
    T_EQ_INT(sd_threads_default(), 3);
    const char *bad[] = { "", "0", "-2", "abc", "4x", "100000", " 2" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("SD_THREADS", bad[i], 1);
        T_EQ_INT(sd_threads_default(), sd_threads_cpus());
    }
    unsetenv("SD_THREADS");
    T_EQ_INT(sd_threads_default(), sd_threads_cpus());
}

static void test_init(void)
{
    T_EQ_INT(sd_threads_init(3), SD_OK);
    T_EQ_INT(sd_threads_get(), 3);
    T_EQ_INT(omp_get_max_threads(), 3);
    T_EQ_INT(openblas_get_num_threads(), 3);
    T_EQ_INT(omp_get_max_active_levels(), 1);
    int team = 0;
    #pragma omp parallel
    {
        #pragma omp single
        team = omp_get_num_threads();
    }
    T_EQ_INT(team, 3);

    T_EQ_INT(sd_threads_init(1), SD_OK);
    T_EQ_INT(openblas_get_num_threads(), 1);
    T_EQ_INT(omp_get_max_threads(), 1);

    setenv("SD_THREADS", "2", 1);
    T_EQ_INT(sd_threads_init(0), SD_OK);
    T_EQ_INT(sd_threads_get(), 2);
    T_EQ_INT(openblas_get_num_threads(), 2);
    unsetenv("SD_THREADS");
    T_EQ_INT(sd_threads_init(-1), SD_OK);
    T_EQ_INT(sd_threads_get(), sd_threads_cpus());

    T_EQ_INT(sd_threads_init(SD_THREADS_MAX + 1), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "maximum") != NULL);
    T_EQ_INT(sd_threads_get(), sd_threads_cpus());   /* unchanged */
}

static void test_blas_serial(void)
{
    T_EQ_INT(sd_threads_init(2), SD_OK);
    int prev = sd_threads_blas_serial_begin();
    T_EQ_INT(prev, 2);
    T_EQ_INT(openblas_get_num_threads(), 1);
    T_EQ_INT(sd_threads_blas_serial_begin(), SD_ESTATE);   /* never nest */
    T_EQ_INT(openblas_get_num_threads(), 1);
    /* per-item single-threaded BLAS inside the OpenMP loop */
    float res[8];
    #pragma omp parallel for
    for (int i = 0; i < 8; i++) {
        float x[4] = { 1, 2, 3, (float)i };
        res[i] = cblas_sdot(4, x, 1, x, 1);
    }
    for (int i = 0; i < 8; i++) T_NEAR(res[i], 14 + i * i, 0);
    sd_threads_blas_serial_end(prev);
    T_EQ_INT(openblas_get_num_threads(), 2);
    sd_threads_blas_serial_end(prev);   /* unmatched end: no effect */
    T_EQ_INT(openblas_get_num_threads(), 2);
    T_EQ_INT(sd_threads_get(), 2);

    int rc_in = 0, rc_init = 0;
    #pragma omp parallel num_threads(2)
    {
        #pragma omp master
        {
            rc_in = sd_threads_blas_serial_begin();
            rc_init = sd_threads_init(4);
        }
    }
    T_EQ_INT(rc_in, SD_ESTATE);
    T_EQ_INT(rc_init, SD_ESTATE);
    T_EQ_INT(sd_threads_get(), 2);
}

static void test_option_entry(void)
{
    int threads = -5;
    static const char *argv[] = { "t", "--threads", "2", NULL };
    sd_opt table[] = { SD_OPT_THREADS(&threads), SD_OPT_END };
    sd_opts o;
    T_EQ_INT(sd_opts_init(&o, "t", table), SD_OK);
    T_EQ_INT(threads, 0);
    T_EQ_INT(sd_opts_parse(&o, 3, (char **)argv), SD_OK);
    T_EQ_INT(threads, 2);
    T_EQ_INT(sd_threads_init(threads), SD_OK);
    T_EQ_INT(sd_threads_get(), 2);
    T_EQ_INT(sd_opts_set(&o, "threads", "-1", SD_SRC_CODE), SD_EUSAGE);
    T_EQ_INT(sd_opts_set(&o, "threads", "100000", SD_SRC_CODE), SD_EUSAGE);
    sd_opts_free(&o);
}

int main(void)
{
    T_RUN(test_cpus);
    T_RUN(test_default_env);
    T_RUN(test_init);
    T_RUN(test_blas_serial);
    T_RUN(test_option_entry);
    T_DONE();
}
