/* JSON lines (one JSON object per line) read into and written from libjq 1.6 `jv` values.
 *
 * Reading: each line is parsed on its own by a strict RFC 8259 parser of ours that builds `jv`
 * directly (libjq 1.6's own parser accepts nan, infinity, +1, .5, 01 and 1., and silently turns
 * invalid UTF-8 and lone low surrogates into U+FFFD; ours rejects all of these with a message
 * naming the column). A bad line is a per-record error: sd_jsonl_next() returns a negative
 * code with sd_errmsg() = "NAME:LINE: message" and the next call reads the next line.
 * Accepted: CRLF line ends, a UTF-8 byte order mark at the start of line 1, blank
 * (whitespace-only) lines, which are skipped, a last line without '\n'. Rejected per line: invalid
 * JSON, more than one value, a value that is not an object, invalid UTF-8 (overlong forms,
 * surrogates, > U+10FFFF), NUL bytes, nesting deeper than 256 (libjq's own parser limit),
 * numbers that overflow a double, lines longer than the bound (256 MiB by default).
 *
 * Numbers: libjq 1.6 keeps every number as a double. 1.0 is written back as 1, integers beyond
 * 2^53 lose precision (12345678901234567890 comes back as 1.2345678901234567e+19), every double
 * round-trips exactly (integers below 1e17 as integers, others with the fewest of 15, 16 or 17
 * significant digits that read back to the same bits; -0 stays -0). Output does not depend on
 * the locale.
 *
 * Writing (our own serialiser; ~2x faster than jv_dump_string) keeps the insertion order of keys (jv objects iterate in insertion order; replacing a
 * key's value keeps its position, a new key goes last) and every key, so records pass through
 * a tool with unknown keys untouched.
 *
 * libjq 1.6 is not thread-safe: use all of this from one thread (architecture.md §3). Reference
 * counting: functions documented as "consumes" take over the caller's reference (jv.h rules);
 * "borrows" leaves it with the caller. */
#ifndef SD_IO_JSONL_H
#define SD_IO_JSONL_H

#include <jv.h>
#include <stddef.h>
#include <stdio.h>

#define SD_JSONL_MAX_LINE_DEFAULT ((size_t)256 << 20)
#define SD_JSONL_MAX_DEPTH 256

typedef struct sd_jsonl_reader sd_jsonl_reader;

/* A reader over `fp` (not closed by sd_jsonl_close); `name` ("stdin", a path) prefixes error
 * messages. NULL (with sd_errmsg set) only when out of memory. */
sd_jsonl_reader *sd_jsonl_open(FILE *fp, const char *name);
/* A reader over the file `path` ("-": stdin, named "stdin"), which sd_jsonl_close closes (never
 * stdin). NULL with sd_errmsg "PATH: <strerror>" (SD_ENOTFOUND / SD_EIO) or out of memory. */
sd_jsonl_reader *sd_jsonl_open_path(const char *path);
/* Bound on the bytes of one line (without its '\n'); longer lines are per-record errors. */
void sd_jsonl_set_max_line(sd_jsonl_reader *r, size_t max_bytes);
/* Next record. Returns 1 with *rec an object (caller owns it) and *lineno its line (1-based);
 * 0 at end of input; SD_EFORMAT (bad line) or SD_ERANGE (line too long): a per-record error,
 * *lineno set, *rec = jv_invalid(); call again for the next line. SD_EIO (read error) or
 * SD_ENOMEM: fatal, and every later call returns the same code. `lineno` may be NULL. */
int sd_jsonl_next(sd_jsonl_reader *r, jv *rec, long *lineno);
/* Number of per-record errors returned so far (a tool exits 3 when non-zero). */
long sd_jsonl_errors(const sd_jsonl_reader *r);
const char *sd_jsonl_name(const sd_jsonl_reader *r);
void sd_jsonl_close(sd_jsonl_reader *r);

/* Parse one line of `n` bytes (no '\n'; it need not be NUL-terminated) the way the reader
 * does, with the same checks. On success *out is the object (caller owns it) and SD_OK is
 * returned; on failure SD_EFORMAT with the message (no name/line prefix) and *out = jv_invalid().
 * A blank line is an error here ("empty line"). */
int sd_jsonl_parse_line(const char *s, size_t n, jv *out);
/* Parse any JSON value (same strict grammar, no object requirement). */
int sd_json_parse(const char *s, size_t n, jv *out);

/* Compact JSON text of any value (consumed) into a malloc'd NUL-terminated buffer (*n excludes
 * the NUL). Same form as sd_jsonl_write. */
int sd_json_dump(jv v, char **out, size_t *n);
/* Write `rec` (consumed; must be an object) as one compact line + '\n' and flush. Returns SD_OK,
 * SD_EINVAL for a non-object, or SD_EIO ("write error: Broken pipe", ...) when the write or
 * flush fails. */
int sd_jsonl_write(FILE *fp, jv rec);

/* Field access for tools. `rec` is borrowed. Each returns 1 when the key holds a value of the
 * right type (stored in *out), 0 when the key is absent or null (*out untouched), and
 * SD_EFORMAT with a message such as "key 'image_size': expected [w,h] integers, got string"
 * when it holds something else. */
/* A string without NUL characters; *out is borrowed from `rec`: valid while `rec` lives and the
 * key is not replaced. */
int sd_jsonl_get_str(jv rec, const char *key, const char **out);
int sd_jsonl_get_num(jv rec, const char *key, double *out);
/* An integral number in [-2^53, 2^53]. */
int sd_jsonl_get_int(jv rec, const char *key, long long *out);
/* An integer in [lo, hi]; outside it SD_EFORMAT "key 'num_repeats': -1 is out of range [0, 9]". */
int sd_jsonl_get_int_range(jv rec, const char *key, int lo, int hi, int *out);
int sd_jsonl_get_bool(jv rec, const char *key, int *out);
/* An array of exactly `n` integers that fit in int. */
int sd_jsonl_get_ints(jv rec, const char *key, int *out, int n);
/* [w,h]: two integers >= 1 ("key 'image_size': expected [w,h] integers"). */
int sd_jsonl_get_size2(jv rec, const char *key, int out[2]);

/* Name of a kind for messages: "null", "boolean", "number", "string", "array", "object". */
const char *sd_jv_kind_name(jv v);

#endif
