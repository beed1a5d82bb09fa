#include "base/log.h"
#include "base/error.h"
#include "base/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char progname[64] = "sd";
static int level = SD_LOG_INFO;

void sd_log_init(const char *name)
{
    const char *b = name ? strrchr(name, '/') : NULL;
    b = b ? b + 1 : (name ? name : "sd");
    snprintf(progname, sizeof progname, "%s", b);
    const char *env = getenv("SD_LOG");
    if (env) {
        if (!strcmp(env, "error")) level = SD_LOG_ERROR;
        else if (!strcmp(env, "warn")) level = SD_LOG_WARN;
        else if (!strcmp(env, "info")) level = SD_LOG_INFO;
        else if (!strcmp(env, "debug")) level = SD_LOG_DEBUG;
    }
}

const char *sd_progname(void) { return progname; }
void sd_log_set_level(int l) { level = l; }
int sd_log_level(void) { return level; }

static void vlog(const char *prefix, const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    sd_progress_clear_line();
    fprintf(stderr, "%s: %s%s\n", progname, prefix, buf);
    fflush(stderr);
}

void sd_log(int l, const char *fmt, ...)
{
    if (l > level) return;
    static const char *pfx[] = {"", "warning: ", "", "debug: "};
    va_list ap;
    va_start(ap, fmt);
    vlog(pfx[l < 0 ? 0 : l > 3 ? 3 : l], fmt, ap);
    va_end(ap);
}

int sd_fatal(int exit_code)
{
    sd_progress_clear_line();
    fprintf(stderr, "%s: %s\n", progname, sd_errmsg()[0] ? sd_errmsg() : "unknown error");
    fflush(stderr);
    return exit_code;
}

void sd_record_error(const char *source, long line, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sd_progress_clear_line();
    if (line > 0)
        fprintf(stderr, "%s: error (at %s:%ld): %s\n", progname, source, line, buf);
    else
        fprintf(stderr, "%s: error (at %s): %s\n", progname, source, buf);
    fflush(stderr);
}
