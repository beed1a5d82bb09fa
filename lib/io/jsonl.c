/* JSON lines through libjq 1.6's jv: strict line parser, streaming reader, writer, field
 * getters. See jsonl.h for the rules. */
#include "io/jsonl.h"

#include "base/error.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 validation ---- */

/* Offset of the first byte that is not part of valid UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or n when all is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* bounds of the second byte */
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) len = 3, lo = 0xA0;
        else if (c == 0xED) len = 3, hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF) len = 3;
        else if (c == 0xF0) len = 4, lo = 0x90;
        else if (c == 0xF4) len = 4, hi = 0x8F;
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else return i;
        if (i + len > n) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

/* ---- strict JSON parser producing jv ---- */

typedef struct {
    const char *s;
    size_t n, i;
    int depth;
    char err[160];
    size_t errpos;
    char *buf; /* scratch for unescaped strings and number text */
    size_t cap;
} parser;

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static jv fail(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static jv fail(parser *p, size_t pos, const char *fmt, ...)
{
    if (!p->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, sizeof p->err, fmt, ap);
        va_end(ap);
        p->errpos = pos;
    }
    return jv_invalid();
}

static int buf_reserve(parser *p, size_t need)
{
    if (need <= p->cap) return 0;
    size_t c = p->cap ? p->cap : 256;
    while (c < need) c *= 2;
    char *b = realloc(p->buf, c);
    if (!b) return -1;
    p->buf = b;
    p->cap = c;
    return 0;
}

static void skip_ws(parser *p)
{
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') break;
        p->i++;
    }
}

/* Describes the character at p->i for messages. */
static const char *what_here(parser *p, char tmp[16])
{
    if (p->i >= p->n) return "end of line";
    unsigned char c = (unsigned char)p->s[p->i];
    if (c >= 0x21 && c < 0x7f) snprintf(tmp, 16, "'%c'", c);
    else snprintf(tmp, 16, "byte 0x%02x", c);
    return tmp;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* p->i is on the opening quote. */
static jv parse_string(parser *p)
{
    size_t start = ++p->i;
    /* fast path: no escapes */
    size_t j = start;
    while (j < p->n) {
        unsigned char c = (unsigned char)p->s[j];
        if (c == '"' || c == '\\' || c < 0x20) break;
        j++;
    }
    if (j < p->n && p->s[j] == '"') {
        p->i = j + 1;
        return jv_string_sized(p->s + start, (int)(j - start));
    }
    size_t len = 0;
    if (buf_reserve(p, j - start + 64)) return fail(p, start, "out of memory");
    memcpy(p->buf, p->s + start, j - start);
    len = j - start;
    for (;;) {
        if (j >= p->n) return fail(p, start - 1, "unterminated string");
        unsigned char c = (unsigned char)p->s[j];
        if (c == '"') break;
        if (c < 0x20)
            return fail(p, j, "control character 0x%02x in string (must be escaped)", c);
        if (buf_reserve(p, len + 8)) return fail(p, j, "out of memory");
        if (c != '\\') {
            p->buf[len++] = (char)c;
            j++;
            continue;
        }
        if (j + 1 >= p->n) return fail(p, start - 1, "unterminated string");
        char e = p->s[j + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            p->buf[len++] = map[simple - "\"\\/bfnrt"];
            j += 2;
            continue;
        }
        if (e != 'u') {
            char tmp[16];
            p->i = j + 1;
            return fail(p, j, "invalid escape '\\' followed by %s", what_here(p, tmp));
        }
        unsigned cp;
        if (j + 6 > p->n || hex4(p->s + j + 2, &cp)) return fail(p, j, "invalid \\u escape");
        j += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return fail(p, j - 6, "invalid \\u escape: lone low surrogate \\u%04x", cp);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (j + 6 > p->n || p->s[j] != '\\' || p->s[j + 1] != 'u' || hex4(p->s + j + 2, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return fail(p, j - 6, "invalid \\u escape: high surrogate \\u%04x without a low one",
                            cp);
            j += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp < 0x80) {
            p->buf[len++] = (char)cp;
        } else if (cp < 0x800) {
            p->buf[len++] = (char)(0xC0 | cp >> 6);
            p->buf[len++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            p->buf[len++] = (char)(0xE0 | cp >> 12);
            p->buf[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            p->buf[len++] = (char)(0x80 | (cp & 0x3F));
        } else {
            p->buf[len++] = (char)(0xF0 | cp >> 18);
            p->buf[len++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            p->buf[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            p->buf[len++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    p->i = j + 1;
    return jv_string_sized(p->buf, (int)len);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static jv parse_number(parser *p)
{
    size_t start = p->i, j = p->i;
    if (j < p->n && p->s[j] == '-') j++;
    if (j >= p->n || !is_digit(p->s[j])) return fail(p, start, "invalid number");
    if (p->s[j] == '0') {
        j++;
        if (j < p->n && is_digit(p->s[j])) return fail(p, start, "invalid number (leading zero)");
    } else {
        while (j < p->n && is_digit(p->s[j])) j++;
    }
    if (j < p->n && p->s[j] == '.') {
        j++;
        if (j >= p->n || !is_digit(p->s[j]))
            return fail(p, start, "invalid number (no digit after '.')");
        while (j < p->n && is_digit(p->s[j])) j++;
    }
    if (j < p->n && (p->s[j] == 'e' || p->s[j] == 'E')) {
        j++;
        if (j < p->n && (p->s[j] == '+' || p->s[j] == '-')) j++;
        if (j >= p->n || !is_digit(p->s[j]))
            return fail(p, start, "invalid number (no digit in exponent)");
        while (j < p->n && is_digit(p->s[j])) j++;
    }
    size_t len = j - start;
    if (buf_reserve(p, len + 1)) return fail(p, start, "out of memory");
    memcpy(p->buf, p->s + start, len);
    p->buf[len] = 0;
    pthread_once(&c_locale_once, c_locale_init);
    double d = c_locale ? strtod_l(p->buf, NULL, c_locale) : strtod(p->buf, NULL);
    if (isinf(d)) return fail(p, start, "number out of range: %.40s", p->buf);
    p->i = j;
    return jv_number(d);
}

static jv parse_value(parser *p);

static jv parse_array(parser *p)
{
    size_t open = p->i++;
    if (++p->depth > SD_JSONL_MAX_DEPTH)
        return fail(p, open, "nesting deeper than %d", SD_JSONL_MAX_DEPTH);
    jv a = jv_array();
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == ']') {
        p->i++;
        p->depth--;
        return a;
    }
    for (;;) {
        jv v = parse_value(p);
        if (!jv_is_valid(v)) {
            jv_free(a);
            return v;
        }
        a = jv_array_append(a, v);
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            skip_ws(p);
            if (p->i < p->n && p->s[p->i] == ']') {
                jv_free(a);
                return fail(p, p->i, "trailing ',' in array");
            }
            continue;
        }
        if (p->i < p->n && p->s[p->i] == ']') {
            p->i++;
            p->depth--;
            return a;
        }
        jv_free(a);
        char tmp[16];
        if (p->i >= p->n) return fail(p, open, "unterminated array");
        return fail(p, p->i, "expected ',' or ']' in array, got %s", what_here(p, tmp));
    }
}

static jv parse_object(parser *p)
{
    size_t open = p->i++;
    if (++p->depth > SD_JSONL_MAX_DEPTH)
        return fail(p, open, "nesting deeper than %d", SD_JSONL_MAX_DEPTH);
    jv o = jv_object();
    char tmp[16];
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == '}') {
        p->i++;
        p->depth--;
        return o;
    }
    for (;;) {
        if (p->i >= p->n) {
            jv_free(o);
            return fail(p, open, "unterminated object");
        }
        if (p->s[p->i] != '"') {
            jv_free(o);
            return fail(p, p->i, "expected a string key in object, got %s", what_here(p, tmp));
        }
        jv k = parse_string(p);
        if (!jv_is_valid(k)) {
            jv_free(o);
            return k;
        }
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') {
            jv_free(k);
            jv_free(o);
            return fail(p, p->i, "expected ':' after object key, got %s", what_here(p, tmp));
        }
        p->i++;
        jv v = parse_value(p);
        if (!jv_is_valid(v)) {
            jv_free(k);
            jv_free(o);
            return v;
        }
        o = jv_object_set(o, k, v);
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            skip_ws(p);
            if (p->i < p->n && p->s[p->i] == '}') {
                jv_free(o);
                return fail(p, p->i, "trailing ',' in object");
            }
            continue;
        }
        if (p->i < p->n && p->s[p->i] == '}') {
            p->i++;
            p->depth--;
            return o;
        }
        jv_free(o);
        if (p->i >= p->n) return fail(p, open, "unterminated object");
        return fail(p, p->i, "expected ',' or '}' in object, got %s", what_here(p, tmp));
    }
}

static jv parse_literal(parser *p, const char *word, jv value)
{
    size_t len = strlen(word);
    if (p->n - p->i >= len && memcmp(p->s + p->i, word, len) == 0) {
        p->i += len;
        /* "truex", "null1": the literal must end here */
        if (p->i < p->n && (isalnum((unsigned char)p->s[p->i]) || p->s[p->i] == '_'))
            return fail(p, p->i - len, "invalid literal");
        return value;
    }
    return fail(p, p->i, "invalid literal");
}

static jv parse_value(parser *p)
{
    skip_ws(p);
    char tmp[16];
    if (p->i >= p->n) return fail(p, p->i, "expected a value, got end of line");
    char c = p->s[p->i];
    switch (c) {
    case '{': return parse_object(p);
    case '[': return parse_array(p);
    case '"': return parse_string(p);
    case 't': return parse_literal(p, "true", jv_true());
    case 'f': return parse_literal(p, "false", jv_false());
    case 'n': return parse_literal(p, "null", jv_null());
    default:
        if (c == '-' || is_digit(c)) return parse_number(p);
        return fail(p, p->i, "expected a value, got %s", what_here(p, tmp));
    }
}

/* Shared by sd_json_parse and the line reader: checks NUL and UTF-8, parses one value that
 * must fill the text (whitespace aside). Message without prefix. */
static int parse_text(const char *s, size_t n, jv *out, int want_object)
{
    *out = jv_invalid();
    if (n > INT_MAX) return sd_err(SD_ERANGE, "text longer than %d bytes", INT_MAX);
    const char *nul = memchr(s, 0, n);
    if (nul) return sd_err(SD_EFORMAT, "NUL byte at column %zu", (size_t)(nul - s) + 1);
    size_t bad = utf8_invalid_at((const unsigned char *)s, n);
    if (bad < n)
        return sd_err(SD_EFORMAT, "invalid UTF-8 (byte 0x%02x) at column %zu",
                      (unsigned char)s[bad], bad + 1);
    parser p = {.s = s, .n = n};
    skip_ws(&p);
    if (p.i >= n) return sd_err(SD_EFORMAT, "empty line");
    jv v = parse_value(&p);
    if (jv_is_valid(v)) {
        skip_ws(&p);
        if (p.i < n) {
            jv_free(v);
            char tmp[16];
            fail(&p, p.i, "unexpected %s after the JSON value", what_here(&p, tmp));
            v = jv_invalid();
        }
    }
    free(p.buf);
    if (!jv_is_valid(v)) {
        jv_free(v);
        return sd_err(SD_EFORMAT, "invalid JSON at column %zu: %s", p.errpos + 1, p.err);
    }
    if (want_object && jv_get_kind(v) != JV_KIND_OBJECT) {
        int rc = sd_err(SD_EFORMAT, "expected a JSON object, got %s", sd_jv_kind_name(v));
        jv_free(v);
        return rc;
    }
    *out = v;
    return SD_OK;
}

int sd_json_parse(const char *s, size_t n, jv *out) { return parse_text(s, n, out, 0); }
int sd_jsonl_parse_line(const char *s, size_t n, jv *out) { return parse_text(s, n, out, 1); }

const char *sd_jv_kind_name(jv v)
{
    switch (jv_get_kind(v)) {
    case JV_KIND_NULL: return "null";
    case JV_KIND_TRUE:
    case JV_KIND_FALSE: return "boolean";
    case JV_KIND_NUMBER: return "number";
    case JV_KIND_STRING: return "string";
    case JV_KIND_ARRAY: return "array";
    case JV_KIND_OBJECT: return "object";
    default: return "invalid";
    }
}

/* ---- reader ---- */

struct sd_jsonl_reader {
    FILE *fp;
    char *name;
    char *line;
    size_t cap;
    size_t max_line;
    long lineno;
    long nerrors;
    int fatal; /* sticky SD_EIO / SD_ENOMEM */
    int eof;
    int owns_fp; /* opened by sd_jsonl_open_path: closed by sd_jsonl_close */
};

sd_jsonl_reader *sd_jsonl_open(FILE *fp, const char *name)
{
    sd_jsonl_reader *r = calloc(1, sizeof *r);
    if (r) r->name = strdup(name ? name : "input");
    if (!r || !r->name) {
        free(r);
        sd_err(SD_ENOMEM, "%s: out of memory", name ? name : "input");
        return NULL;
    }
    r->fp = fp;
    r->max_line = SD_JSONL_MAX_LINE_DEFAULT;
    return r;
}

sd_jsonl_reader *sd_jsonl_open_path(const char *path)
{
    if (!strcmp(path, "-")) return sd_jsonl_open(stdin, "stdin");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        sd_err(errno == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    sd_jsonl_reader *r = sd_jsonl_open(fp, path);
    if (!r) fclose(fp);
    else r->owns_fp = 1;
    return r;
}

void sd_jsonl_set_max_line(sd_jsonl_reader *r, size_t max_bytes) { r->max_line = max_bytes; }
long sd_jsonl_errors(const sd_jsonl_reader *r) { return r->nerrors; }
const char *sd_jsonl_name(const sd_jsonl_reader *r) { return r->name; }

void sd_jsonl_close(sd_jsonl_reader *r)
{
    if (!r) return;
    if (r->owns_fp) fclose(r->fp);
    free(r->line);
    free(r->name);
    free(r);
}

/* Reads one line into r->line (without '\n', NUL-terminated). Returns 1 line, 0 EOF,
 * SD_ERANGE too long (rest of the line consumed), SD_EIO, SD_ENOMEM. */
static int read_line(sd_jsonl_reader *r, size_t *len)
{
    size_t n = 0;
    int toolong = 0, c = EOF;
    flockfile(r->fp);
    for (;;) {
        c = getc_unlocked(r->fp);
        if (c == EOF || c == '\n') break;
        if (toolong) continue;
        if (n >= r->max_line) {
            toolong = 1;
            continue;
        }
        if (n + 1 >= r->cap) {
            size_t ncap = r->cap ? r->cap * 2 : 4096;
            if (ncap > r->max_line + 1) ncap = r->max_line + 1;
            if (ncap < n + 2) ncap = n + 2;
            char *b = realloc(r->line, ncap);
            if (!b) {
                funlockfile(r->fp);
                return sd_err(SD_ENOMEM, "%s:%ld: out of memory for a line of %zu bytes", r->name,
                              r->lineno + 1, n);
            }
            r->line = b;
            r->cap = ncap;
        }
        r->line[n++] = (char)c;
    }
    int err = c == EOF && ferror_unlocked(r->fp);
    int e = errno;
    funlockfile(r->fp);
    if (err) return sd_err(SD_EIO, "%s: read error: %s", r->name, strerror(e));
    if (c == EOF && n == 0 && !toolong) return 0;
    if (c == EOF) r->eof = 1;
    r->lineno++;
    if (toolong)
        return sd_err(SD_ERANGE, "%s:%ld: line longer than %zu bytes", r->name, r->lineno,
                      r->max_line);
    if (!r->line) { /* empty line before any allocation */
        r->line = malloc(16);
        if (!r->line) return sd_err(SD_ENOMEM, "%s: out of memory", r->name);
        r->cap = 16;
    }
    r->line[n] = 0;
    *len = n;
    return 1;
}

int sd_jsonl_next(sd_jsonl_reader *r, jv *rec, long *lineno)
{
    *rec = jv_invalid();
    if (r->fatal) return r->fatal; /* message still set from the first failure, unless cleared */
    for (;;) {
        if (r->eof) return 0;
        size_t n = 0;
        int rc = read_line(r, &n);
        if (lineno) *lineno = r->lineno;
        if (rc == 0) return 0;
        if (rc == SD_ERANGE) {
            r->nerrors++;
            return rc;
        }
        if (rc < 0) {
            r->fatal = rc;
            return rc;
        }
        char *s = r->line;
        if (n && s[n - 1] == '\r') s[--n] = 0;
        if (r->lineno == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
            s += 3;
            n -= 3;
        }
        size_t k = 0;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
        if (k == n) continue; /* blank line */
        rc = sd_jsonl_parse_line(s, n, rec);
        if (rc == SD_OK) return 1;
        r->nerrors++;
        sd_err_prefix(rc, "%s:%ld", r->name, r->lineno);
        if (rc == SD_ENOMEM) r->fatal = rc;
        return rc;
    }
}

/* ---- writer ----
 * Our own serialiser: libjq 1.6's jv_dump_string takes ~13 us for a 170-byte record (it
 * appends piece by piece to a jv string); this one takes ~1 us. Same key order (jv object
 * iteration order, which jv_dump uses too), same escapes, numbers in a form that reads back to
 * the same double. */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} outbuf;

static void ob_reserve(outbuf *b, size_t more)
{
    if (b->oom || b->n + more <= b->cap) return;
    size_t c = b->cap ? b->cap : 1024;
    while (c < b->n + more) c *= 2;
    char *q = realloc(b->p, c);
    if (!q) {
        b->oom = 1;
        return;
    }
    b->p = q;
    b->cap = c;
}

static void ob_put(outbuf *b, const char *s, size_t n)
{
    ob_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put_number(outbuf *b, double d)
{
    char tmp[40];
    int len;
    if (isnan(d)) { /* not produced by our parser; jq writes null */
        ob_put(b, "null", 4);
        return;
    }
    if (d > DBL_MAX) d = DBL_MAX; /* as jq: infinities become the largest double */
    if (d < -DBL_MAX) d = -DBL_MAX;
    if (d == 0) {
        ob_put(b, signbit(d) ? "-0" : "0", signbit(d) ? 2 : 1);
        return;
    }
    if (d == floor(d) && fabs(d) < 1e17) {
        len = snprintf(tmp, sizeof tmp, "%lld", (long long)d);
    } else {
        pthread_once(&c_locale_once, c_locale_init);
        locale_t old = c_locale ? uselocale(c_locale) : (locale_t)0;
        len = 0;
        for (int prec = 15; prec <= 17; prec++) {
            len = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
            if (prec == 17 || strtod(tmp, NULL) == d) break;
        }
        if (old) uselocale(old);
    }
    ob_put(b, tmp, (size_t)len);
}

static void put_string(outbuf *b, jv s)
{
    const unsigned char *p = (const unsigned char *)jv_string_value(s);
    size_t n = (size_t)jv_string_length_bytes(jv_copy(s));
    ob_reserve(b, n + 2);
    if (b->oom) return;
    b->p[b->n++] = '"';
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) continue;
        ob_put(b, (const char *)p + run, i - run);
        run = i + 1;
        char e[8];
        switch (c) {
        case '"': ob_put(b, "\\\"", 2); break;
        case '\\': ob_put(b, "\\\\", 2); break;
        case '\b': ob_put(b, "\\b", 2); break;
        case '\f': ob_put(b, "\\f", 2); break;
        case '\n': ob_put(b, "\\n", 2); break;
        case '\r': ob_put(b, "\\r", 2); break;
        case '\t': ob_put(b, "\\t", 2); break;
        default:
            snprintf(e, sizeof e, "\\u%04x", c);
            ob_put(b, e, 6);
        }
    }
    ob_put(b, (const char *)p + run, n - run);
    ob_put(b, "\"", 1);
}

static void put_value(outbuf *b, jv v) /* borrows v */
{
    switch (jv_get_kind(v)) {
    case JV_KIND_NULL: ob_put(b, "null", 4); break;
    case JV_KIND_TRUE: ob_put(b, "true", 4); break;
    case JV_KIND_FALSE: ob_put(b, "false", 5); break;
    case JV_KIND_NUMBER: put_number(b, jv_number_value(v)); break;
    case JV_KIND_STRING: put_string(b, v); break;
    case JV_KIND_ARRAY: {
        ob_put(b, "[", 1);
        int n = jv_array_length(jv_copy(v));
        for (int i = 0; i < n; i++) {
            if (i) ob_put(b, ",", 1);
            jv e = jv_array_get(jv_copy(v), i);
            put_value(b, e);
            jv_free(e);
        }
        ob_put(b, "]", 1);
        break;
    }
    case JV_KIND_OBJECT: {
        ob_put(b, "{", 1);
        int first = 1;
        for (int it = jv_object_iter(v); jv_object_iter_valid(v, it); it = jv_object_iter_next(v, it)) {
            jv k = jv_object_iter_key(v, it), e = jv_object_iter_value(v, it);
            if (!first) ob_put(b, ",", 1);
            first = 0;
            put_string(b, k);
            ob_put(b, ":", 1);
            put_value(b, e);
            jv_free(k);
            jv_free(e);
        }
        ob_put(b, "}", 1);
        break;
    }
    default: ob_put(b, "null", 4); break;
    }
}

int sd_json_dump(jv v, char **out, size_t *n)
{
    outbuf b = {0};
    put_value(&b, v);
    ob_put(&b, "", 1);
    jv_free(v);
    if (b.oom) {
        free(b.p);
        *out = NULL;
        *n = 0;
        return sd_err(SD_ENOMEM, "cannot serialise JSON: out of memory");
    }
    *out = b.p;
    *n = b.n - 1;
    return SD_OK;
}

int sd_jsonl_write(FILE *fp, jv rec)
{
    if (jv_get_kind(rec) != JV_KIND_OBJECT) {
        int rc = sd_err(SD_EINVAL, "write: a record must be a JSON object, got %s",
                        sd_jv_kind_name(rec));
        jv_free(rec);
        return rc;
    }
    static _Thread_local outbuf b; /* reused: no allocation per record */
    b.n = 0;
    b.oom = 0;
    put_value(&b, rec);
    ob_put(&b, "\n", 1);
    jv_free(rec);
    if (b.oom) {
        free(b.p);
        b = (outbuf){0};
        return sd_err(SD_ENOMEM, "write: out of memory");
    }
    errno = 0;
    int ok = fwrite(b.p, 1, b.n, fp) == b.n && fflush(fp) == 0;
    if (b.cap > (1u << 20)) { /* do not keep a huge buffer after a huge record */
        free(b.p);
        b = (outbuf){0};
    }
    if (!ok) {
        int e = errno ? errno : EIO;
        return sd_err(SD_EIO, "write error: %s", strerror(e));
    }
    return SD_OK;
}

/* ---- field getters ---- */

/* The value under key (new reference) or jv_null() when absent. */
static jv field(jv rec, const char *key)
{
    if (jv_get_kind(rec) != JV_KIND_OBJECT) return jv_null();
    jv v = jv_object_get(jv_copy(rec), jv_string(key));
    if (!jv_is_valid(v)) {
        jv_free(v);
        return jv_null();
    }
    return v;
}

static int type_err(jv v, const char *key, const char *want)
{
    int rc = sd_err(SD_EFORMAT, "key '%s': expected %s, got %s", key, want, sd_jv_kind_name(v));
    jv_free(v);
    return rc;
}

int sd_jsonl_get_str(jv rec, const char *key, const char **out)
{
    jv v = field(rec, key);
    jv_kind k = jv_get_kind(v);
    if (k == JV_KIND_NULL) return 0;
    if (k != JV_KIND_STRING) return type_err(v, key, "a string");
    const char *s = jv_string_value(v);
    if ((size_t)jv_string_length_bytes(jv_copy(v)) != strlen(s)) {
        jv_free(v);
        return sd_err(SD_EFORMAT, "key '%s': string contains a NUL character", key);
    }
    jv_free(v); /* rec still holds the string, so s stays valid */
    *out = s;
    return 1;
}

int sd_jsonl_get_num(jv rec, const char *key, double *out)
{
    jv v = field(rec, key);
    jv_kind k = jv_get_kind(v);
    if (k == JV_KIND_NULL) return 0;
    if (k != JV_KIND_NUMBER) return type_err(v, key, "a number");
    *out = jv_number_value(v);
    jv_free(v);
    return 1;
}

static int int_value(double d, long long *out)
{
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != floor(d)) return 0;
    *out = (long long)d;
    return 1;
}

int sd_jsonl_get_int(jv rec, const char *key, long long *out)
{
    jv v = field(rec, key);
    jv_kind k = jv_get_kind(v);
    if (k == JV_KIND_NULL) return 0;
    if (k != JV_KIND_NUMBER) return type_err(v, key, "an integer");
    double d = jv_number_value(v);
    jv_free(v);
    if (!int_value(d, out))
        return sd_err(SD_EFORMAT, "key '%s': expected an integer, got %.17g", key, d);
    return 1;
}

int sd_jsonl_get_int_range(jv rec, const char *key, int lo, int hi, int *out)
{
    long long v;
    int rc = sd_jsonl_get_int(rec, key, &v);
    if (rc == 1 && (v < lo || v > hi)) return sd_err(SD_EFORMAT, "key '%s': %lld is out of range [%d, %d]", key, v, lo, hi);
    if (rc == 1) *out = (int)v;
    return rc;
}

int sd_jsonl_get_bool(jv rec, const char *key, int *out)
{
    jv v = field(rec, key);
    jv_kind k = jv_get_kind(v);
    if (k == JV_KIND_NULL) return 0;
    if (k != JV_KIND_TRUE && k != JV_KIND_FALSE) return type_err(v, key, "true or false");
    *out = k == JV_KIND_TRUE;
    jv_free(v);
    return 1;
}

static int get_ints(jv rec, const char *key, int *out, int n, const char *want, int min)
{
    jv v = field(rec, key);
    jv_kind k = jv_get_kind(v);
    if (k == JV_KIND_NULL) return 0;
    if (k != JV_KIND_ARRAY) return type_err(v, key, want);
    int len = jv_array_length(jv_copy(v));
    if (len != n) {
        jv_free(v);
        return sd_err(SD_EFORMAT, "key '%s': expected %s, got an array of %d", key, want, len);
    }
    int tmp[64];
    int *dst = n <= 64 ? tmp : out; /* out is only written when everything is valid */
    for (int i = 0; i < n; i++) {
        jv e = jv_array_get(jv_copy(v), i);
        long long x;
        int ok = jv_get_kind(e) == JV_KIND_NUMBER && int_value(jv_number_value(e), &x) &&
                 x >= min && x <= INT_MAX;
        jv_free(e);
        if (!ok) {
            jv_free(v);
            return sd_err(SD_EFORMAT, "key '%s': expected %s (element %d is not)", key, want, i);
        }
        dst[i] = (int)x;
    }
    jv_free(v);
    if (dst != out) memcpy(out, dst, (size_t)n * sizeof *out);
    return 1;
}

int sd_jsonl_get_ints(jv rec, const char *key, int *out, int n)
{
    char want[48];
    snprintf(want, sizeof want, "an array of %d integers", n);
    return get_ints(rec, key, out, n, want, INT_MIN);
}

int sd_jsonl_get_size2(jv rec, const char *key, int out[2])
{
    return get_ints(rec, key, out, 2, "[w,h] integers", 1);
}
