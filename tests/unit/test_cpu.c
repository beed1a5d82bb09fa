/* base/cpu: the OpenBLAS core fix-up. tests/run exports OPENBLAS_CORETYPE the way
 * sd_cpu_blas_setup() would, so here OpenBLAS must already run a non-generic core when the CPU
 * has AVX2/AVX-512; and a child run without the variable must be re-executed with it. */
#include "base/cpu.h"
#include "test.h"

#include <sys/wait.h>
#include <unistd.h>

static void test_core_not_generic(void)
{
    const char *core = sd_cpu_blas_core();
    printf("# OpenBLAS core: %s (OPENBLAS_CORETYPE=%s)\n", core ? core : "?",
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");
    T_CHECK(core != NULL);
    /* with the variable set as tests/run sets it, nothing better is left to choose */
    if (getenv("OPENBLAS_CORETYPE")) T_CHECK(sd_cpu_blas_better_core() == NULL);
}

/* Child mode: print the core after sd_cpu_blas_setup(). */
static int child(int argc, char **argv)
{
    sd_cpu_blas_setup(argc, argv);
    printf("%s %s\n", sd_cpu_blas_core(), sd_cpu_blas_better_core() ? "generic" : "good");
    return 0;
}

static void test_reexec(void)
{
    int fd[2];
    T_CHECK(pipe(fd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("SD_NO_REEXEC");
        execl("/proc/self/exe", "test_cpu", "--child", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char buf[128] = "";
    ssize_t n = read(fd[0], buf, sizeof buf - 1);
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    T_CHECK(n > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    printf("# child without OPENBLAS_CORETYPE: %s", buf);
    /* after setup the child never runs a generic core on a CPU that has a better one */
    T_CHECKF(strstr(buf, " good") != NULL, "child reported: %s", buf);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--child")) return child(argc, argv);
    T_RUN(test_core_not_generic);
    T_RUN(test_reexec);
    T_DONE();
}
