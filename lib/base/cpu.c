#include "base/cpu.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *openblas_get_corename(void);

const char *sd_cpu_blas_core(void) { return openblas_get_corename(); }

const char *sd_cpu_blas_better_core(void)
{
    const char *core = openblas_get_corename();
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                          "Sandybridge", "Katmai", "Coppermine", "Northwood",
                                          "Banias", "Atom", "Barcelona"};
    int is_generic = 0;
    for (size_t i = 0; core && i < sizeof generic / sizeof *generic; i++)
        if (!strcmp(core, generic[i])) is_generic = 1;
    if (!is_generic) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

void sd_cpu_blas_setup(int argc, char **argv)
{
    (void)argc;
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *no = getenv("SD_NO_REEXEC");
    if (no && !strcmp(no, "1")) return;
    const char *better = sd_cpu_blas_better_core();
    if (!better) return;
    if (setenv("OPENBLAS_CORETYPE", better, 1) != 0) return;
    setenv("SD_NO_REEXEC", "1", 1);   /* never loop */
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the generic kernels */
    unsetenv("SD_NO_REEXEC");
}
