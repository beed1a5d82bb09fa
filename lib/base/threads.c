/* Thread policy (see threads.h). */
#include "base/threads.h"
#include "base/error.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int cur_threads;      /* 0 = not initialised */
static int serial_depth;     /* 1 while inside blas_serial_begin/end */

/* cgroup v2 quota "max 100000" or "200000 100000" → ceil(quota/period); 0 = no limit. */
static int cgroup_cpus(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (!f) return 0;
    char q[32] = "";
    long long period = 0;
    int n = fscanf(f, "%31s %lld", q, &period);
    fclose(f);
    if (n != 2 || period <= 0) return 0;
    char *end;
    errno = 0;
    long long quota = strtoll(q, &end, 10);
    if (errno || *end || quota <= 0) return 0;   /* "max" */
    long long c = (quota + period - 1) / period;
    return c > SD_THREADS_MAX ? SD_THREADS_MAX : (int)c;
}

int sd_threads_cpus(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    int q = cgroup_cpus();
    if (q > 0 && q < n) n = q;
    if (n > SD_THREADS_MAX) n = SD_THREADS_MAX;
    return n;
}

int sd_threads_default(void)
{
    const char *e = getenv("SD_THREADS");
    if (e && *e) {
        char *end;
        errno = 0;
        long v = strtol(e, &end, 10);
        if (!errno && !*end && v >= 1 && v <= SD_THREADS_MAX) return (int)v;
    }
    return sd_threads_cpus();
}

int sd_threads_init(int n)
{
    if (omp_in_parallel()) return sd_err(SD_ESTATE, "threads: sd_threads_init inside a parallel region");
    if (n > SD_THREADS_MAX)
        return sd_err(SD_EINVAL, "threads: %d threads is more than the maximum %d", n, SD_THREADS_MAX);
    if (n <= 0) n = sd_threads_default();
    omp_set_max_active_levels(1);
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    cur_threads = n;
    return SD_OK;
}

int sd_threads_get(void)
{
    return cur_threads > 0 ? cur_threads : sd_threads_default();
}

int sd_threads_blas_serial_begin(void)
{
    if (omp_in_parallel())
        return sd_err(SD_ESTATE, "threads: sd_threads_blas_serial_begin inside a parallel region");
    if (serial_depth) return sd_err(SD_ESTATE, "threads: sd_threads_blas_serial_begin nested");
    serial_depth = 1;
    int prev = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return prev;
}

void sd_threads_blas_serial_end(int prev)
{
    if (prev <= 0 || !serial_depth || omp_in_parallel()) return;
    serial_depth = 0;
    openblas_set_num_threads(prev);
}
