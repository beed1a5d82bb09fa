#include "base/error.h"

#include <stdio.h>
#include <string.h>

#define SD_ERRMSG_MAX 1024
static _Thread_local char errmsg[SD_ERRMSG_MAX];

/* Errors are one line whatever the input put into them (a key or value quoted from a file may hold
 * a newline or other control byte): those bytes are shown as '?'. */
static void one_line(void)
{
    for (unsigned char *p = (unsigned char *)errmsg; *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = '?';
}

int sd_verr(int code, const char *fmt, va_list ap)
{
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    one_line();
    return code;
}

int sd_err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sd_verr(code, fmt, ap);
    va_end(ap);
    return code;
}

int sd_err_prefix(int code, const char *fmt, ...)
{
    char old[SD_ERRMSG_MAX], pre[SD_ERRMSG_MAX / 2];
    va_list ap;
    memcpy(old, errmsg, sizeof old);
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (old[0]) {
        size_t n = strlen(pre);
        memcpy(errmsg, pre, n);
        errmsg[n] = ':';
        errmsg[n + 1] = ' ';
        size_t room = sizeof errmsg - n - 3, m = strlen(old);
        if (m > room) m = room;
        memcpy(errmsg + n + 2, old, m);
        errmsg[n + 2 + m] = 0;
    }
    else
        snprintf(errmsg, sizeof errmsg, "%s", pre);
    one_line();
    return code;
}

const char *sd_errmsg(void) { return errmsg; }
void sd_err_clear(void) { errmsg[0] = 0; }

const char *sd_strerror(int code)
{
    switch (code) {
    case SD_OK: return "success";
    case SD_EINVAL: return "invalid argument";
    case SD_EIO: return "I/O error";
    case SD_ENOMEM: return "out of memory";
    case SD_EFORMAT: return "malformed input";
    case SD_ERANGE: return "value out of range";
    case SD_EUNSUPPORTED: return "not supported";
    case SD_ENOTFOUND: return "not found";
    case SD_EUSAGE: return "usage error";
    case SD_EINTR: return "interrupted";
    case SD_EDEVICE: return "device error";
    case SD_ESTATE: return "invalid state";
    default: return "unknown error";
    }
}
