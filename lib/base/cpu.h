/* CPU setup for the BLAS library.
 *
 * OpenBLAS picks its kernels when it is loaded (before main) from the CPU model. Debian's
 * OpenBLAS 0.3.21 does not know recent Xeons (e.g. family 6 model 207) and falls back to its
 * generic "Prescott" kernels, 3-4x slower than its AVX-512 "SkylakeX" ones on the same CPU.
 * The choice can only be changed through OPENBLAS_CORETYPE before the library loads, so
 * sd_cpu_blas_setup() re-executes the program once with OPENBLAS_CORETYPE set when OpenBLAS
 * chose a generic core on a CPU with AVX-512 (→ SkylakeX) or AVX2+FMA (→ Haswell).
 * Nothing happens when OPENBLAS_CORETYPE is already set (the user's choice wins) or SD_NO_REEXEC=1. */
#ifndef SD_BASE_CPU_H
#define SD_BASE_CPU_H

/* Call first thing in main(). Returns only if no re-exec was needed or it failed. */
void sd_cpu_blas_setup(int argc, char **argv);
/* The OpenBLAS core in use ("SkylakeX", "Haswell", "Prescott", ...). */
const char *sd_cpu_blas_core(void);
/* The core sd_cpu_blas_setup() would choose for this CPU, or NULL to keep OpenBLAS's choice. */
const char *sd_cpu_blas_better_core(void);

#endif
