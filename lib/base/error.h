/* Error codes and the thread-local detail message.
 *
 * Library functions return SD_OK (0) or a negative SD_E* code and set a detail message with
 * sd_err(); they never print or exit. The tool decides what to do (see sd_exit_code()). */
#ifndef SD_BASE_ERROR_H
#define SD_BASE_ERROR_H

#include <stdarg.h>

enum sd_status {
    SD_OK = 0,
    SD_EINVAL = -1,      /* bad argument or option value */
    SD_EIO = -2,         /* read/write/open failed (errno text in the message) */
    SD_ENOMEM = -3,      /* allocation failed */
    SD_EFORMAT = -4,     /* malformed input file or record */
    SD_ERANGE = -5,      /* value out of range, size overflow */
    SD_EUNSUPPORTED = -6,/* valid but not supported (yet) */
    SD_ENOTFOUND = -7,   /* missing file, key or tensor */
    SD_EUSAGE = -8,      /* command-line usage error */
    SD_EINTR = -9,       /* interrupted by a signal */
    SD_EDEVICE = -10,    /* accelerator error */
    SD_ESTATE = -11,     /* API misuse / invalid state */
};

/* Exit statuses shared by every tool (architecture.md §4). */
enum sd_exit {
    SD_EXIT_OK = 0,        /* all records done */
    SD_EXIT_FATAL = 1,     /* fatal error */
    SD_EXIT_USAGE = 2,     /* usage error */
    SD_EXIT_PARTIAL = 3,   /* finished, some records skipped */
    SD_EXIT_SIGINT = 130,
    SD_EXIT_SIGTERM = 143,
};

/* Set the detail message (printf-style) and return `code`, so callers can write
 * `return sd_err(SD_EFORMAT, "%s: bad header", path);`. */
int sd_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sd_verr(int code, const char *fmt, va_list ap);
/* Prefix the current detail message: "prefix: old message". Returns `code`. */
int sd_err_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Detail message of the last error on this thread ("" if none). */
const char *sd_errmsg(void);
void sd_err_clear(void);
/* Short name of a code: "invalid argument", "I/O error", ... */
const char *sd_strerror(int code);

#endif
