/* TOML 1.0 reader producing a libjq jv object. Errors carry "file:line:column: message".
 *
 * Value mapping:
 *   table, inline table  -> object (keys in document order)
 *   array, array of tables -> array
 *   string               -> string (multi-line strings: CRLF inside is normalised to LF)
 *   integer              -> number; integers beyond +-2^53 are REJECTED with an error, because
 *                           jq 1.6 numbers are doubles and could not hold them exactly
 *   float                -> number; inf/-inf/nan become +-inf/NaN doubles (jv_dump prints them as
 *                           +-1.797e308 and null); finite literals that overflow a double
 *                           (1e400) are rejected
 *   boolean              -> true/false
 *   offset/local date-time, local date, local time -> string, verbatim as written
 *                           ("1979-05-27 07:32:00Z" keeps its space and Z)
 *
 * Positions are 1-based; the column counts characters (UTF-8 code points, a tab is one).
 * A leading UTF-8 byte order mark is skipped. Nesting (arrays, inline tables, tables, dotted
 * keys) is limited to 128 levels; sd_toml_parse_file reads at most 64 MiB. */
#ifndef SD_IO_TOML_H
#define SD_IO_TOML_H

#include <jv.h>
#include <stddef.h>

/* Parse `n` bytes of TOML text; `name` is used in error messages. On success *out is a jv
 * object (caller owns it). On failure returns SD_EFORMAT with sd_errmsg() =
 * "name:line:col: what" and sets *out to jv_invalid() (jv_free on it is harmless). */
int sd_toml_parse(const char *text, size_t n, const char *name, jv *out);
/* Read and parse a file. A missing file gives SD_ENOTFOUND ("path: No such file or
 * directory"), other read errors SD_EIO, a file over 64 MiB SD_ERANGE. */
int sd_toml_parse_file(const char *path, jv *out);

#endif
