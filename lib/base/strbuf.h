/* A growable, NUL-terminated string buffer. Zero-initialise ({ 0 }), append, take .p (malloc'd;
 * the caller frees it). Out of memory sets .oom and makes later appends no-ops, so a builder can
 * append freely and check once at the end. */
#ifndef SD_BASE_STRBUF_H
#define SD_BASE_STRBUF_H

#include <stddef.h>
#include <string.h>

typedef struct sd_strbuf {
    char *p;      /* NULL until the first append */
    size_t n, cap;
    int oom;
} sd_strbuf;

/* Append n bytes of s (n may be 0: the buffer then exists and holds ""). */
void sd_strbuf_add(sd_strbuf *b, const char *s, size_t n);
static inline void sd_strbuf_puts(sd_strbuf *b, const char *s) { sd_strbuf_add(b, s, strlen(s)); }

#endif
