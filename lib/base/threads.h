/* Thread policy: one number N drives both our OpenMP team and OpenBLAS.
 *
 *   N = --threads N                     when the tool's option is given and > 0, else
 *       SD_THREADS                      when the environment variable is a positive integer, else
 *       the CPUs this process may use   (sched_getaffinity, further limited by a cgroup v2 CPU
 *                                        quota in /sys/fs/cgroup/cpu.max, rounded up).
 * OMP_NUM_THREADS / OPENBLAS_NUM_THREADS are overridden by sd_threads_init(): set SD_THREADS or
 * --threads instead.
 *
 * Never nest. There are two kinds of parallel work and they must not run inside each other:
 *   - big BLAS calls (sgemm) from the main thread: OpenBLAS uses its own N threads;
 *   - OpenMP loops (`#pragma omp parallel for`, N threads) over elementwise work or independent
 *     items (images, records). Inside such a loop every BLAS call must be single-threaded:
 *     bracket the loop with sd_threads_blas_serial_begin()/end(), which pin OpenBLAS to 1 thread
 *     and restore it afterwards. Nested OpenMP is disabled (max active levels = 1).
 * Determinism: results must not depend on N (fixed reduction partitions; see architecture.md §4),
 * so --threads 1 and --threads 8 give identical bytes.
 *
 * These functions are not thread-safe: call them from the main thread, outside parallel regions
 * (they return SD_ESTATE when called inside one). */
#ifndef SD_BASE_THREADS_H
#define SD_BASE_THREADS_H

/* Most threads accepted from --threads / SD_THREADS. */
#define SD_THREADS_MAX 1024

/* The --threads entry every tool puts in its option table (base/opts.h), so the option is spelt,
 * bounded and documented the same everywhere; `dst` is an int*, 0 = default:
 *   static const sd_opt table[] = { ..., SD_OPT_THREADS(&threads), SD_OPT_END };
 *   ... sd_threads_init(threads); */
#define SD_OPT_THREADS(dst)                                                                      \
    { .name = "threads", .type = SD_OPT_INT, .dest = (dst), .def = "0", .min = 0,                \
      .max = SD_THREADS_MAX, .bounds = SD_OPT_HAS_MIN | SD_OPT_HAS_MAX, .metavar = "N",            \
      .group = "General",                                                                         \
      .help = "threads for OpenMP and OpenBLAS together; 0 = $SD_THREADS, else the usable CPUs" }

/* CPUs usable by this process (affinity mask, cgroup quota); at least 1. */
int sd_threads_cpus(void);
/* Default N: SD_THREADS if it is an integer in 1..SD_THREADS_MAX, else sd_threads_cpus(). */
int sd_threads_default(void);
/* Apply N (n <= 0: sd_threads_default()) to OpenMP and OpenBLAS and disable nested OpenMP.
 * SD_EINVAL if n > SD_THREADS_MAX. Tools call it once after option parsing:
 *   sd_threads_init(opt_threads);   // opt_threads = 0 when --threads was not given */
int sd_threads_init(int n);
/* Current N (sd_threads_default() if sd_threads_init() was never called). */
int sd_threads_get(void);

/* Pin OpenBLAS to one thread for an OpenMP region over independent items; returns the previous
 * OpenBLAS thread count to pass to _end(). Calls may not be nested (SD_ESTATE from a second
 * begin before end; the count is then left alone). */
int sd_threads_blas_serial_begin(void);
void sd_threads_blas_serial_end(int prev);

#endif
