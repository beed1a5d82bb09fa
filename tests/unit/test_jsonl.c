/* JSON lines: strict line parser, streaming reader (line numbers, long lines, CRLF, blank lines,
 * per-record errors), writer (key order, unknown keys, numbers), field getters. */
#include "base/error.h"
#include "io/jsonl.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <locale.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

static char *dump(jv v) /* borrowed v; malloc'd compact text from our serialiser */
{
    char *r = NULL;
    size_t n;
    if (sd_json_dump(jv_copy(v), &r, &n) != SD_OK) return NULL;
    return r;
}

/* Parse one line and return its re-serialisation (malloc'd) or NULL with the error set. */
static char *roundtrip(const char *line)
{
    jv v;
    if (sd_jsonl_parse_line(line, strlen(line), &v) != SD_OK) return NULL;
    char *r = dump(v);
    jv_free(v);
    return r;
}

static void test_parse_valid(void)
{
    static const struct { const char *in, *out; } cases[] = {
        {"{}", "{}"},
        {"  { }  ", "{}"},
        {"{\"a\":1}", "{\"a\":1}"},
        {"{\"z\":1,\"a\":2,\"m\":3}", "{\"z\":1,\"a\":2,\"m\":3}"},
        {"{\"a\" : [1, 2.5, -3e2, true, false, null, \"s\", {}, []]}",
         "{\"a\":[1,2.5,-300,true,false,null,\"s\",{},[]]}"},
        {"{\"e\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "{\"e\":\"\\\"\\\\/\\b\\f\\n\\r\\t\"}"},
        {"{\"u\":\"\\u00e9\\u4e2d\\ud83d\\ude00\"}", "{\"u\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"}"},
        {"{\"raw\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"}", "{\"raw\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"}"},
        {"{\"nul\":\"a\\u0000b\"}", "{\"nul\":\"a\\u0000b\"}"},
        {"{\"dup\":1,\"x\":2,\"dup\":3}", "{\"dup\":3,\"x\":2}"},
        {"{\"n\":0,\"m\":-0,\"f\":1.0,\"g\":1E+2,\"h\":1e-2}", "{\"n\":0,\"m\":-0,\"f\":1,\"g\":100,\"h\":0.01}"},
        {"{\"big\":12345678901234567890}", "{\"big\":1.2345678901234567e+19}"},
        {"{\"i\":[99999999999999999,100000000000000000,-7,1e16,2.5e-3,1e21,1e-7]}",
         "{\"i\":[1e+17,1e+17,-7,10000000000000000,0.0025,1e+21,1e-07]}"},
        {"{\"ctl\":\"\\u0001\\u001f\\u007f\\u0000\\b\"}", "{\"ctl\":\"\\u0001\\u001f\\u007f\\u0000\\b\"}"},
        {"{\"tiny\":1e-400}", "{\"tiny\":0}"},
        {"\t{\"a\":{\"b\":{\"c\":[[]]}}}\r", "{\"a\":{\"b\":{\"c\":[[]]}}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *r = roundtrip(cases[i].in);
        T_CHECKF(r && strcmp(r, cases[i].out) == 0, "case %zu: %s -> %s (%s)", i, cases[i].in,
                 r ? r : "(error)", r ? "" : sd_errmsg());
        free(r);
    }
    /* sd_json_parse takes any value */
    jv v;
    T_EQ_INT(sd_json_parse("[1,2]", 5, &v), SD_OK);
    T_EQ_INT(jv_get_kind(v), JV_KIND_ARRAY);
    jv_free(v);
    T_EQ_INT(sd_json_parse(" 42 ", 4, &v), SD_OK);
    T_CHECK(jv_get_kind(v) == JV_KIND_NUMBER && jv_number_value(v) == 42);
    jv_free(v);
    /* not NUL-terminated input: only n bytes are read */
    const char buf[] = "{\"a\":1}GARBAGE";
    T_EQ_INT(sd_jsonl_parse_line(buf, 7, &v), SD_OK);
    jv_free(v);
    /* nesting up to the limit is fine */
    char deep[2 * SD_JSONL_MAX_DEPTH + 8];
    size_t n = 0;
    deep[n++] = '{';
    memcpy(deep + n, "\"a\":", 4);
    n += 4;
    for (int i = 0; i < SD_JSONL_MAX_DEPTH - 1; i++) deep[n++] = '[';
    for (int i = 0; i < SD_JSONL_MAX_DEPTH - 1; i++) deep[n++] = ']';
    deep[n++] = '}';
    T_EQ_INT(sd_jsonl_parse_line(deep, n, &v), SD_OK);
    jv_free(v);
}

/* Each malformed line gives SD_EFORMAT and a message containing `want`. */
static void test_parse_malformed(void)
{
    static const struct { const char *in; size_t len; const char *want; } cases[] = {
        {"{", 0, "column 1: unterminated object"},
        {"{\"a\":1", 0, "unterminated object"},
        {"{\"a\":1,", 0, "column 1: unterminated object"},
        {"{\"a\":1, 2}", 0, "column 9: expected a string key in object, got '2'"},
        {"{\"a\":1}}", 0, "column 8: unexpected '}' after the JSON value"},
        {"{} {}", 0, "unexpected '{' after the JSON value"},
        {"[1,2]", 0, "expected a JSON object, got array"},
        {"\"str\"", 0, "expected a JSON object, got string"},
        {"42", 0, "expected a JSON object, got number"},
        {"null", 0, "expected a JSON object, got null"},
        {"true", 0, "expected a JSON object, got boolean"},
        {"{'a':1}", 0, "column 2: expected a string key in object, got '''"},
        {"{a:1}", 0, "expected a string key in object, got 'a'"},
        {"{\"a\" 1}", 0, "column 6: expected ':' after object key, got '1'"},
        {"{\"a\":}", 0, "column 6: expected a value, got '}'"},
        {"{\"a\":1,}", 0, "trailing ',' in object"},
        {"{\"a\":[1,]}", 0, "trailing ',' in array"},
        {"{\"a\":[1 2]}", 0, "expected ',' or ']' in array, got '2'"},
        {"{\"a\":[1}", 0, "expected ',' or ']' in array, got '}'"},
        {"{\"a\":1 \"b\":2}", 0, "expected ',' or '}' in object, got '\"'"},
        {"{\"a\":\"abc}", 0, "column 6: unterminated string"},
        {"{\"a\":\"x\ty\"}", 0, "control character 0x09 in string"},
        {"{\"a\":\"\\x\"}", 0, "invalid escape"},
        {"{\"a\":\"\\u12\"}", 0, "invalid \\u escape"},
        {"{\"a\":\"\\u12G4\"}", 0, "invalid \\u escape"},
        {"{\"a\":\"\\ud800\"}", 0, "high surrogate \\ud800 without a low one"},
        {"{\"a\":\"\\ud800\\u0041\"}", 0, "high surrogate"},
        {"{\"a\":\"\\udc00\"}", 0, "lone low surrogate \\udc00"},
        {"{\"a\":nan}", 0, "invalid literal"},
        {"{\"a\":NaN}", 0, "expected a value, got 'N'"},
        {"{\"a\":infinity}", 0, "expected a value, got 'i'"},
        {"{\"a\":-Infinity}", 0, "invalid number"},
        {"{\"a\":+1}", 0, "expected a value, got '+'"},
        {"{\"a\":.5}", 0, "expected a value, got '.'"},
        {"{\"a\":01}", 0, "leading zero"},
        {"{\"a\":1.}", 0, "no digit after '.'"},
        {"{\"a\":1e}", 0, "no digit in exponent"},
        {"{\"a\":1e+}", 0, "no digit in exponent"},
        {"{\"a\":-}", 0, "invalid number"},
        {"{\"a\":0x10}", 0, "got 'x'"},
        {"{\"a\":1e400}", 0, "number out of range"},
        {"{\"a\":-1e400}", 0, "number out of range"},
        {"{\"a\":tru}", 0, "invalid literal"},
        {"{\"a\":truex}", 0, "invalid literal"},
        {"{\"a\":nul}", 0, "invalid literal"},
        {"{\"a\":True}", 0, "expected a value, got 'T'"},
        {"{\"a\":\"\xff\"}", 0, "invalid UTF-8 (byte 0xff) at column 7"},
        {"{\"a\":\"\xc0\xaf\"}", 0, "invalid UTF-8 (byte 0xc0)"},          /* overlong '/' */
        {"{\"a\":\"\xe0\x80\xaf\"}", 0, "invalid UTF-8 (byte 0xe0)"},      /* overlong */
        {"{\"a\":\"\xed\xa0\x80\"}", 0, "invalid UTF-8 (byte 0xed)"},      /* surrogate D800 */
        {"{\"a\":\"\xf4\x90\x80\x80\"}", 0, "invalid UTF-8 (byte 0xf4)"},  /* > U+10FFFF */
        {"{\"a\":\"\xe4\xb8\"}", 0, "invalid UTF-8"},                      /* truncated */
        {"{\"a\":\"\x80\"}", 0, "invalid UTF-8 (byte 0x80)"},              /* lone continuation */
        {"{\"a\":\"x\"}\xc3", 0, "invalid UTF-8"},                         /* truncated at end */
        {"{\"a\":\"x\0y\"}", 11, "NUL byte at column 8"},
        {"\0", 1, "NUL byte at column 1"},
        {"", 0, "empty line"},
        {"   ", 0, "empty line"},
        {"}", 0, "expected a value, got '}'"},
        {"]", 0, "expected a value, got ']'"},
        {"{,}", 0, "expected a string key in object, got ','"},
        {"{\"a\"}", 0, "expected ':' after object key, got '}'"},
        {"{\"a\":1}\x7f", 0, "unexpected byte 0x7f"},
        {"\xef\xbb\xbf{}", 0, "expected a value, got byte 0xef"}, /* BOM only accepted by the reader on line 1 */
        {"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 0, "column 54: expected a value, got end of line"},
        {"{\"a\":[1,[2]", 0, "column 6: unterminated array"},
        {"/* c */{}", 0, "expected a value, got '/'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = cases[i].len ? cases[i].len : strlen(cases[i].in);
        jv v = jv_null();
        int rc = sd_jsonl_parse_line(cases[i].in, n, &v);
        T_CHECKF(rc == SD_EFORMAT, "case %zu (%s): rc %d", i, cases[i].in, rc);
        T_CHECKF(strstr(sd_errmsg(), cases[i].want) != NULL, "case %zu: message '%s' lacks '%s'", i,
                 sd_errmsg(), cases[i].want);
        T_CHECK(jv_get_kind(v) == JV_KIND_INVALID);
        jv_free(v);
    }
    T_CHECK(sizeof cases / sizeof *cases >= 30);
    /* too deep */
    char deep[2 * SD_JSONL_MAX_DEPTH + 16];
    size_t n = 0;
    deep[n++] = '{';
    memcpy(deep + n, "\"a\":", 4);
    n += 4;
    for (int i = 0; i < SD_JSONL_MAX_DEPTH; i++) deep[n++] = '[';
    for (int i = 0; i < SD_JSONL_MAX_DEPTH; i++) deep[n++] = ']';
    deep[n++] = '}';
    jv v;
    T_EQ_INT(sd_jsonl_parse_line(deep, n, &v), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "nesting deeper than 256") != NULL);
}

/* A reader over an in-memory text. */
static sd_jsonl_reader *mem_reader(const char *text, size_t n, FILE **fp)
{
    *fp = fmemopen((void *)text, n, "r");
    return sd_jsonl_open(*fp, "mem");
}

static void test_reader_lines(void)
{
    const char text[] =
        "{\"a\":1}\n"            /* 1 */
        "\n"                     /* 2 blank */
        "   \t \r\n"             /* 3 blank */
        "{\"b\":2}\r\n"          /* 4 CRLF */
        "{\"c\":\n"              /* 5 invalid */
        "[1,2]\n"                /* 6 not an object */
        "{\"d\":\"\xff\"}\n"     /* 7 invalid UTF-8 */
        "{\"e\":\"x\0\"}\n"      /* 8 NUL */
        "{\"f\":4}\n"            /* 9 */
        "{\"g\":5}";             /* 10, no final newline */
    FILE *fp;
    sd_jsonl_reader *r = mem_reader(text, sizeof text - 1, &fp);
    T_CHECK(r != NULL);
    jv rec;
    long line = 0;
    struct { int rc; long line; const char *key; const char *msg; } want[] = {
        {1, 1, "a", NULL},
        {1, 4, "b", NULL},
        {SD_EFORMAT, 5, NULL, "mem:5: invalid JSON at column 6: expected a value, got end of line"},
        {SD_EFORMAT, 6, NULL, "mem:6: expected a JSON object, got array"},
        {SD_EFORMAT, 7, NULL, "mem:7: invalid UTF-8 (byte 0xff) at column 7"},
        {SD_EFORMAT, 8, NULL, "mem:8: NUL byte at column 8"},
        {1, 9, "f", NULL},
        {1, 10, "g", NULL},
        {0, 10, NULL, NULL},
        {0, 10, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int rc = sd_jsonl_next(r, &rec, &line);
        T_CHECKF(rc == want[i].rc, "step %zu: rc %d want %d (%s)", i, rc, want[i].rc, sd_errmsg());
        if (want[i].rc != 0) T_CHECKF(line == want[i].line, "step %zu: line %ld want %ld", i, line, want[i].line);
        if (rc == 1 && want[i].key) {
            T_CHECK(jv_get_kind(rec) == JV_KIND_OBJECT);
            T_CHECK(jv_object_has(jv_copy(rec), jv_string(want[i].key)));
        }
        if (rc < 0) {
            T_CHECK(jv_get_kind(rec) == JV_KIND_INVALID);
            T_CHECKF(strcmp(sd_errmsg(), want[i].msg) == 0, "step %zu: '%s'", i, sd_errmsg());
        }
        jv_free(rec);
    }
    T_EQ_INT(sd_jsonl_errors(r), 4);
    T_EQ_STR(sd_jsonl_name(r), "mem");
    sd_jsonl_close(r);
    fclose(fp);
}

static void test_reader_bom_and_empty(void)
{
    const char text[] = "\xef\xbb\xbf{\"a\":1}\n\xef\xbb\xbf{\"b\":1}\n";
    FILE *fp;
    sd_jsonl_reader *r = mem_reader(text, sizeof text - 1, &fp);
    jv rec;
    long line;
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 1);
    jv_free(rec);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), SD_EFORMAT); /* BOM on line 2 is not accepted */
    T_EQ_INT(line, 2);
    T_EQ_INT(sd_jsonl_next(r, &rec, NULL), 0);
    sd_jsonl_close(r);
    fclose(fp);
    /* empty input, only blank lines */
    r = mem_reader("\n\n  \n", 5, &fp);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 0);
    T_EQ_INT(sd_jsonl_errors(r), 0);
    sd_jsonl_close(r);
    fclose(fp);
    FILE *e = tmpfile();
    r = sd_jsonl_open(e, "empty");
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 0);
    sd_jsonl_close(r);
    fclose(e);
}

static void test_reader_long_lines(void)
{
    /* a 3 MiB caption, then a normal line */
    size_t big = 3u << 20;
    char *text = malloc(big + 100);
    size_t n = 0;
    n += (size_t)sprintf(text + n, "{\"caption\":\"");
    memset(text + n, 'x', big);
    n += big;
    n += (size_t)sprintf(text + n, "\",\"k\":1}\n{\"next\":2}\n");
    FILE *fp;
    sd_jsonl_reader *r = mem_reader(text, n, &fp);
    jv rec;
    long line;
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 1);
    const char *cap = NULL;
    T_EQ_INT(sd_jsonl_get_str(rec, "caption", &cap), 1);
    T_CHECK(cap && strlen(cap) == big && cap[0] == 'x' && cap[big - 1] == 'x');
    jv_free(rec);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 1);
    T_EQ_INT(line, 2);
    jv_free(rec);
    sd_jsonl_close(r);
    fclose(fp);
    /* with a 1 MiB bound the long line is a per-record error and the next line still reads */
    r = mem_reader(text, n, &fp);
    sd_jsonl_set_max_line(r, 1u << 20);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), SD_ERANGE);
    T_EQ_INT(line, 1);
    T_EQ_STR(sd_errmsg(), "mem:1: line longer than 1048576 bytes");
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 1);
    T_EQ_INT(line, 2);
    T_CHECK(jv_object_has(jv_copy(rec), jv_string("next")));
    jv_free(rec);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 0);
    T_EQ_INT(sd_jsonl_errors(r), 1);
    sd_jsonl_close(r);
    fclose(fp);
    /* exactly at the bound is fine */
    r = mem_reader("{\"a\":1}\n{\"ab\":1}\n", 17, &fp);
    sd_jsonl_set_max_line(r, 7);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 1);
    jv_free(rec);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), SD_ERANGE);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), 0);
    sd_jsonl_close(r);
    fclose(fp);
    free(text);
}

static void test_reader_many_lines(void)
{
    /* 20000 records through a real file, every 7th line broken: line numbers stay right */
    const char *p = t_path("many.jsonl");
    FILE *f = fopen(p, "w");
    for (int i = 1; i <= 20000; i++) {
        if (i % 7 == 0) fprintf(f, "{\"i\":%d,\n", i);
        else fprintf(f, "{\"i\":%d,\"s\":\"v%d\"}\n", i, i);
    }
    fclose(f);
    f = fopen(p, "r");
    sd_jsonl_reader *r = sd_jsonl_open(f, p);
    jv rec;
    long line;
    int rc, good = 0, bad = 0, wrong = 0;
    while ((rc = sd_jsonl_next(r, &rec, &line)) != 0) {
        if (rc == 1) {
            long long i = 0;
            if (sd_jsonl_get_int(rec, "i", &i) != 1 || i != line || line % 7 == 0) wrong++;
            good++;
        } else {
            if (rc != SD_EFORMAT || line % 7 != 0) wrong++;
            bad++;
        }
        jv_free(rec);
    }
    T_EQ_INT(good, 20000 - 20000 / 7);
    T_EQ_INT(bad, 20000 / 7);
    T_EQ_INT(wrong, 0);
    sd_jsonl_close(r);
    fclose(f);
}

static void test_reader_read_error(void)
{
    /* a write-only stream: reading fails with an I/O error, which is sticky */
    FILE *f = fopen(t_path("wo.jsonl"), "w");
    sd_jsonl_reader *r = sd_jsonl_open(f, "wo");
    jv rec;
    long line;
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), SD_EIO);
    T_CHECK(strstr(sd_errmsg(), "wo: read error") != NULL);
    T_EQ_INT(sd_jsonl_next(r, &rec, &line), SD_EIO);
    sd_jsonl_close(r);
    fclose(f);
}

static void test_write_roundtrip(void)
{
    /* unknown keys and key order survive read → modify → write */
    const char *in = "{\"zeta\":1,\"image\":\"a.png\",\"extra\":{\"y\":[1,{\"q\":null}],\"x\":\"\xc3\xa9\"},"
                     "\"caption\":\"c\",\"alpha\":true}";
    jv rec;
    T_EQ_INT(sd_jsonl_parse_line(in, strlen(in), &rec), SD_OK);
    rec = jv_object_set(rec, jv_string("caption"), jv_string("new")); /* replace keeps position */
    rec = jv_object_set(rec, jv_string("tags"), jv_string("a, b"));   /* new key goes last */
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    T_EQ_INT(sd_jsonl_write(m, rec), SD_OK);
    T_EQ_INT(sd_jsonl_write(m, jv_object()), SD_OK);
    fclose(m);
    T_EQ_STR(buf, "{\"zeta\":1,\"image\":\"a.png\",\"extra\":{\"y\":[1,{\"q\":null}],\"x\":\"\xc3\xa9\"},"
                  "\"caption\":\"new\",\"alpha\":true,\"tags\":\"a, b\"}\n{}\n");
    free(buf);
    /* many keys (the jv object rehashes as it grows) keep their order */
    char line[8192];
    size_t n = 0;
    n += (size_t)sprintf(line + n, "{");
    for (int i = 0; i < 300; i++)
        n += (size_t)sprintf(line + n, "%s\"k%d\":%d", i ? "," : "", (i * 7919) % 1000, i);
    n += (size_t)sprintf(line + n, "}");
    T_EQ_INT(sd_jsonl_parse_line(line, n, &rec), SD_OK);
    char *out = dump(rec);
    T_EQ_STR(out, line);
    free(out);
    /* deleting a key and re-adding it moves it last */
    rec = jv_object_delete(rec, jv_string("k0"));
    rec = jv_object_set(rec, jv_string("k0"), jv_number(0));
    out = dump(rec);
    T_CHECK(strstr(out, ",\"k0\":0}") != NULL && strncmp(out, "{\"k919\":1,", 10) == 0);
    free(out);
    jv_free(rec);
    /* non-object */
    m = open_memstream(&buf, &len);
    T_EQ_INT(sd_jsonl_write(m, jv_array()), SD_EINVAL);
    fclose(m);
    free(buf);
}

static void test_write_errors(void)
{
    /* EPIPE: the reading end is closed */
    int fds[2];
    T_EQ_INT(pipe(fds), 0);
    close(fds[0]);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    FILE *w = fdopen(fds[1], "w");
    int rc = sd_jsonl_write(w, jv_object_set(jv_object(), jv_string("a"), jv_number(1)));
    T_EQ_INT(rc, SD_EIO);
    T_EQ_STR(sd_errmsg(), "write error: Broken pipe");
    fclose(w);
    signal(SIGPIPE, old);
    /* ENOSPC */
    FILE *full = fopen("/dev/full", "w");
    if (full) {
        T_EQ_INT(sd_jsonl_write(full, jv_object()), SD_EIO);
        T_CHECK(strstr(sd_errmsg(), "No space left on device") != NULL);
        fclose(full);
    }
}

static void test_numbers(void)
{
    /* every double round-trips through write + read bit-exactly */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        uint64_t bits = x;
        memcpy(&d, &bits, 8);
        if (!isfinite(d)) continue;
        if (i % 4 == 1) d = (double)(int64_t)(x >> 11) / 1e6; /* "ordinary" decimals */
        jv rec = jv_object_set(jv_object(), jv_string("v"), jv_number(d));
        char *s = dump(rec);
        jv back;
        double got = NAN;
        if (sd_jsonl_parse_line(s, strlen(s), &back) == SD_OK) {
            sd_jsonl_get_num(back, "v", &got);
            jv_free(back);
        }
        if (memcmp(&got, &d, 8) != 0) {
            if (bad++ < 5) printf("#   %.17g -> %s -> %.17g\n", d, s, got);
        }
        free(s);
        jv_free(rec);
    }
    T_EQ_INT(bad, 0);
    static const char *const exact[] = {"0.1", "0.30000000000000004", "5e-324", "1.7976931348623157e+308",
                                        "-2.2250738585072014e-308", "9007199254740993", "1e+21", "1e-07"};
    static const double vals[] = {0.1, 0.30000000000000004, 5e-324, 1.7976931348623157e308,
                                  -2.2250738585072014e-308, 9007199254740992.0, 1e21, 1e-7};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        char line[80];
        snprintf(line, sizeof line, "{\"v\":%s}", exact[i]);
        jv rec;
        double got = 0;
        T_EQ_INT(sd_jsonl_parse_line(line, strlen(line), &rec), SD_OK);
        T_EQ_INT(sd_jsonl_get_num(rec, "v", &got), 1);
        T_CHECKF(got == vals[i], "%s -> %.17g", exact[i], got);
        jv_free(rec);
    }
}

/* Output does not depend on LC_NUMERIC (a tool may call setlocale). */
static void test_locale(void)
{
    const char *locs[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "ru_RU.UTF-8"};
    const char *got = NULL;
    for (size_t i = 0; i < 4 && !got; i++) got = setlocale(LC_NUMERIC, locs[i]);
    if (!got) {
        printf("# no comma-decimal locale installed; checked with C only\n");
    } else {
        char tmp[16];
        snprintf(tmp, sizeof tmp, "%.1f", 0.5);
        T_EQ_STR(tmp, "0,5"); /* the locale is really active */
    }
    jv v;
    T_EQ_INT(sd_jsonl_parse_line("{\"a\":0.35,\"b\":1e-300}", 21, &v), SD_OK);
    char *s = dump(v);
    T_EQ_STR(s, "{\"a\":0.35,\"b\":1e-300}");
    free(s);
    jv_free(v);
    setlocale(LC_NUMERIC, "C");
}

static void test_getters(void)
{
    const char *in = "{\"image\":\"dir/a b.png\",\"caption\":null,\"w\":512,\"f\":0.5,\"big\":1e300,"
                     "\"flag\":false,\"image_size\":[640,480],\"crop\":[0,-2,3,4],\"bad\":[1.5,2],"
                     "\"zero\":[0,1],\"three\":[1,2,3],\"nul\":\"a\\u0000b\",\"s\":\"x\"}";
    jv rec;
    T_EQ_INT(sd_jsonl_parse_line(in, strlen(in), &rec), SD_OK);
    const char *s = NULL;
    T_EQ_INT(sd_jsonl_get_str(rec, "image", &s), 1);
    T_EQ_STR(s, "dir/a b.png");
    s = "untouched";
    T_EQ_INT(sd_jsonl_get_str(rec, "caption", &s), 0); /* null = absent */
    T_EQ_INT(sd_jsonl_get_str(rec, "missing", &s), 0);
    T_EQ_STR(s, "untouched");
    T_EQ_INT(sd_jsonl_get_str(rec, "w", &s), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'w': expected a string, got number");
    T_EQ_INT(sd_jsonl_get_str(rec, "nul", &s), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'nul': string contains a NUL character");

    double d;
    T_EQ_INT(sd_jsonl_get_num(rec, "f", &d), 1);
    T_CHECK(d == 0.5);
    T_EQ_INT(sd_jsonl_get_num(rec, "s", &d), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 's': expected a number, got string");

    long long i;
    T_EQ_INT(sd_jsonl_get_int(rec, "w", &i), 1);
    T_EQ_INT(i, 512);
    T_EQ_INT(sd_jsonl_get_int(rec, "f", &i), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'f': expected an integer, got 0.5");
    T_EQ_INT(sd_jsonl_get_int(rec, "big", &i), SD_EFORMAT);
    T_EQ_INT(sd_jsonl_get_int(rec, "flag", &i), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'flag': expected an integer, got boolean");
    int r = -1;
    T_EQ_INT(sd_jsonl_get_int_range(rec, "w", 1, 512, &r), 1);
    T_EQ_INT(r, 512);
    T_EQ_INT(sd_jsonl_get_int_range(rec, "w", 0, 511, &r), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'w': 512 is out of range [0, 511]");
    T_EQ_INT(sd_jsonl_get_int_range(rec, "f", 0, 1, &r), SD_EFORMAT);
    T_EQ_INT(sd_jsonl_get_int_range(rec, "missing", 0, 1, &r), 0);
    T_EQ_INT(r, 512);

    int b = -1;
    T_EQ_INT(sd_jsonl_get_bool(rec, "flag", &b), 1);
    T_EQ_INT(b, 0);
    T_EQ_INT(sd_jsonl_get_bool(rec, "w", &b), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'w': expected true or false, got number");

    int wh[2] = {0, 0};
    T_EQ_INT(sd_jsonl_get_size2(rec, "image_size", wh), 1);
    T_CHECK(wh[0] == 640 && wh[1] == 480);
    T_EQ_INT(sd_jsonl_get_size2(rec, "missing", wh), 0);
    T_EQ_INT(sd_jsonl_get_size2(rec, "image", wh), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'image': expected [w,h] integers, got string");
    T_EQ_INT(sd_jsonl_get_size2(rec, "bad", wh), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'bad': expected [w,h] integers (element 0 is not)");
    T_EQ_INT(sd_jsonl_get_size2(rec, "zero", wh), SD_EFORMAT);
    T_EQ_INT(sd_jsonl_get_size2(rec, "three", wh), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'three': expected [w,h] integers, got an array of 3");
    T_CHECK(wh[0] == 640 && wh[1] == 480); /* untouched on error */
    int c4[4];
    T_EQ_INT(sd_jsonl_get_ints(rec, "crop", c4, 4), 1);
    T_CHECK(c4[0] == 0 && c4[1] == -2 && c4[2] == 3 && c4[3] == 4);
    T_EQ_INT(sd_jsonl_get_ints(rec, "image_size", c4, 4), SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "key 'image_size': expected an array of 4 integers, got an array of 2");
    /* a non-object record: every key is absent */
    T_EQ_INT(sd_jsonl_get_str(jv_null(), "x", &s), 0);
    T_EQ_STR(sd_jv_kind_name(rec), "object");
    jv_free(rec);
}

/* sd_jsonl_open_path: a file's reader owns it; a missing file is an error naming it */
static void test_open_path(void)
{
    const char *p = t_path("open_path.jsonl");
    FILE *f = fopen(p, "w");
    T_CHECK(f != NULL);
    if (!f) return;
    fputs("{\"a\":1}\n{\"a\":2}\n", f);
    fclose(f);
    sd_jsonl_reader *r = sd_jsonl_open_path(p);
    T_CHECK(r != NULL);
    if (!r) return;
    T_EQ_STR(sd_jsonl_name(r), p);
    jv rec;
    int n = 0;
    while (sd_jsonl_next(r, &rec, NULL) == 1) {
        n++;
        jv_free(rec);
    }
    T_EQ_INT(n, 2);
    sd_jsonl_close(r);   /* closes the file (ASan/valgrind would report the leak otherwise) */
    const char *missing = t_path("no_such_records.jsonl");
    T_CHECK(sd_jsonl_open_path(missing) == NULL);
    T_CHECKF(strstr(sd_errmsg(), "no_such_records.jsonl: No such file") != NULL, "%s", sd_errmsg());
    r = sd_jsonl_open_path("-");
    T_CHECK(r != NULL);
    if (r) T_EQ_STR(sd_jsonl_name(r), "stdin");
    sd_jsonl_close(r);   /* never closes stdin */
    T_CHECK(fileno(stdin) == 0 && fcntl(0, F_GETFD) != -1);
}

int main(void)
{
    T_RUN(test_parse_valid);
    T_RUN(test_parse_malformed);
    T_RUN(test_reader_lines);
    T_RUN(test_reader_bom_and_empty);
    T_RUN(test_reader_long_lines);
    T_RUN(test_reader_many_lines);
    T_RUN(test_reader_read_error);
    T_RUN(test_write_roundtrip);
    T_RUN(test_write_errors);
    T_RUN(test_numbers);
    T_RUN(test_locale);
    T_RUN(test_getters);
    T_RUN(test_open_path);
    T_DONE();
}
