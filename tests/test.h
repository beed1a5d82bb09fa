/* Minimal test harness. Each test program prints TAP-like lines that tests/run counts:
 *   ok NAME            a passing test
 *   ok NAME # SKIP why a skipped test (counted as passed, listed separately)
 *   not ok NAME        a failing test (the failed checks are printed before it as "# ..." lines)
 * A program that crashes or exits non-zero without a "not ok" line counts as one failure. */
#ifndef SD_TEST_H
#define SD_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_cur_fail, t_npass, t_nfail;

#define T_CHECK(c) do { if (!(c)) { \
    printf("#   %s:%d: check failed: %s\n", __FILE__, __LINE__, #c); t_cur_fail++; } } while (0)
#define T_CHECKF(c, ...) do { if (!(c)) { \
    printf("#   %s:%d: check failed: %s: ", __FILE__, __LINE__, #c); printf(__VA_ARGS__); \
    printf("\n"); t_cur_fail++; } } while (0)
#define T_EQ_INT(a, b) do { long long t_a_ = (long long)(a), t_b_ = (long long)(b); \
    if (t_a_ != t_b_) { printf("#   %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
    #a, #b, t_a_, t_b_); t_cur_fail++; } } while (0)
#define T_EQ_STR(a, b) do { const char *t_a_ = (a), *t_b_ = (b); \
    if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_)) { printf("#   %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", \
    __FILE__, __LINE__, #a, #b, t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)"); t_cur_fail++; } } while (0)
#define T_NEAR(a, b, tol) do { double t_a_ = (a), t_b_ = (b); \
    if (!(fabs(t_a_ - t_b_) <= (tol))) { printf("#   %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", \
    __FILE__, __LINE__, #a, #b, (double)(tol), t_a_, t_b_); t_cur_fail++; } } while (0)

#define T_RUN(fn) do { t_cur_fail = 0; fn(); \
    if (t_cur_fail) { printf("not ok %s\n", #fn); t_nfail++; } \
    else { printf("ok %s\n", #fn); t_npass++; } fflush(stdout); } while (0)
#define T_SKIP(name, why) do { printf("ok %s # SKIP %s\n", name, why); fflush(stdout); } while (0)
#define T_DONE() return t_nfail ? 1 : 0

/* Scratch directory for a test program: $SD_TEST_TMP (set by tests/run) or /tmp. */
static inline const char *t_tmpdir(void)
{
    const char *d = getenv("SD_TEST_TMP");
    return d && *d ? d : "/tmp";
}
/* Path under the scratch directory; returns a static buffer (one of 8 rotating). */
static inline const char *t_path(const char *name)
{
    static char bufs[8][512];
    static int i;
    char *b = bufs[i++ & 7];
    snprintf(b, 512, "%s/%s", t_tmpdir(), name);
    return b;
}
/* A 32-bit integer hash (lowbias32, as the generators' deterministic inputs use it). */
static inline uint32_t t_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* "$SD_ROOT/" (tests/run sets it; "./" without) followed by the printf-formatted rest: a repository
 * file; returns a static buffer (one of 8 rotating). */
static inline __attribute__((format(printf, 1, 2))) const char *t_root_pathf(const char *fmt, ...)
{
    static char bufs[8][1024];
    static int i;
    char *b = bufs[i++ & 7];
    const char *root = getenv("SD_ROOT");
    int n = snprintf(b, 1024, "%s/", root && *root ? root : ".");
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < 1024) vsnprintf(b + n, 1024 - (size_t)n, fmt, ap);
    va_end(ap);
    return b;
}
static inline int t_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

#endif
