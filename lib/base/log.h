/* Logging for tools: every line goes to stderr prefixed with the program name.
 * Library code does not log; it returns errors (base/error.h). */
#ifndef SD_BASE_LOG_H
#define SD_BASE_LOG_H

enum sd_log_level { SD_LOG_ERROR = 0, SD_LOG_WARN = 1, SD_LOG_INFO = 2, SD_LOG_DEBUG = 3 };

void sd_log_init(const char *progname);   /* basename of argv[0] is fine */
const char *sd_progname(void);
void sd_log_set_level(int level);          /* default SD_LOG_INFO; SD_LOG env var overrides */
int sd_log_level(void);
void sd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define sd_error(...) sd_log(SD_LOG_ERROR, __VA_ARGS__)
#define sd_warn(...) sd_log(SD_LOG_WARN, __VA_ARGS__)
#define sd_info(...) sd_log(SD_LOG_INFO, __VA_ARGS__)
#define sd_debug(...) sd_log(SD_LOG_DEBUG, __VA_ARGS__)

/* "prog: <message from sd_errmsg()>" on stderr; returns `exit_code` for `return sd_fatal(1);`. */
int sd_fatal(int exit_code);
/* Per-record error: "prog: error (at SOURCE:LINE): message". */
void sd_record_error(const char *source, long line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
