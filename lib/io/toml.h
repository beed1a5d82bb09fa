/* TOML 1.0 reader producing a libjq jv object. Errors carry "file:line:column: message". */
#ifndef SD_IO_TOML_H
#define SD_IO_TOML_H

#include <jv.h>
#include <stddef.h>

/* Parse `n` bytes of TOML text; `name` is used in error messages. On success *out is a jv
 * object (caller owns it). On failure returns SD_EFORMAT with sd_errmsg() =
 * "name:line:col: what". Dates/times come back as strings. */
int sd_toml_parse(const char *text, size_t n, const char *name, jv *out);
int sd_toml_parse_file(const char *path, jv *out);

#endif
