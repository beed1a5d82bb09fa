/* ftfy 6.1.1 fix_text with fix_encoding: byte-for-byte against ftfy itself on a corpus of awkward
 * strings (tests/golden/gen/make_ftfy_golden.py), the badness heuristic on its own, and a few
 * direct checks (fix_encoding alone, code point API, a long text). */
#include <stdint.h>
#include <time.h>

#include "base/error.h"
#include "test.h"
#include "text/ftfy.h"

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/ftfy/%s", name);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Undo the generator's escaping ("\\\\", "\\xHH") of s[0..n) into out; returns the length. */
static size_t unesc(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\\') { out[k++] = '\\'; i++; }
        else if (s[i] == '\\' && i + 3 < n && s[i + 1] == 'x' && hexval(s[i + 2]) >= 0 && hexval(s[i + 3]) >= 0) {
            out[k++] = (char)(hexval(s[i + 2]) * 16 + hexval(s[i + 3]));
            i += 3;
        } else out[k++] = s[i];
    }
    out[k] = 0;
    return k;
}

/* Reads "<a>\t<b>\n" lines; calls fn for each. Returns the number of lines. */
static int each_line(const char *name, void (*fn)(const char *a, size_t na, const char *b, size_t nb, void *),
                     void *ctx)
{
    FILE *f = fopen(data_path(name), "r");
    T_CHECKF(f != NULL, "%s", data_path(name));
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int n = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] == '\n') line[--len] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) { T_CHECK(0); continue; }
        char *a = malloc((size_t)len + 1), *b = malloc((size_t)len + 1);
        size_t na = unesc(line, (size_t)(tab - line), a);
        size_t nb = unesc(tab + 1, (size_t)(line + len - tab - 1), b);
        fn(a, na, b, nb, ctx);
        free(a);
        free(b);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

static void show(const char *what, const char *s, size_t n)
{
    printf("#   %s: ", what);
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else putchar(c);
    }
    printf("\n");
}

typedef struct {
    int n, bad;
} counts;

static void check_fix(const char *in, size_t nin, const char *want, size_t nwant, void *ctx)
{
    counts *c = ctx;
    char *got = NULL;
    int rc = sd_ftfy_fix_text(in, nin, &got);
    int ok = rc == SD_OK && got && strlen(got) == nwant && !memcmp(got, want, nwant);
    if (!ok && c->bad++ < 8) {
        printf("# fix_text case %d differs\n", c->n);
        show("in  ", in, nin);
        show("got ", got ? got : "", got ? strlen(got) : 0);
        show("want", want, nwant);
    }
    /* fix_text output is a fixed point: fixing it again changes nothing */
    if (ok) {
        char *again = NULL;
        if (sd_ftfy_fix_text(got, nwant, &again) == SD_OK && strcmp(again, got) && c->bad++ < 8)
            printf("# fix_text case %d: output not stable\n", c->n);
        free(again);
    }
    free(got);
    c->n++;
}

static void test_fix_text_golden(void)
{
    counts c = {0, 0};
    int n = each_line("fix_text.tsv", check_fix, &c);
    printf("# %d fix_text cases, %d mismatches\n", n, c.bad);
    T_CHECK(n >= 500);
    T_EQ_INT(c.bad, 0);
}

static uint32_t *to_cps(const char *s, size_t n, size_t *m)
{
    uint32_t *cp = malloc((n + 1) * sizeof *cp);
    *m = sd_utf8_decode((const unsigned char *)s, n, cp);
    return cp;
}

static void check_bad(const char *s, size_t n, const char *want, size_t nwant, void *ctx)
{
    counts *c = ctx;
    size_t m;
    uint32_t *cp = to_cps(s, n, &m);
    int got = sd_ftfy_is_bad(cp, m);
    int ok = nwant == 1 && got == want[0] - '0';
    if (!ok && c->bad++ < 8) {
        printf("# is_bad case %d: got %d want %s\n", c->n, got, want);
        show("text", s, n);
    }
    free(cp);
    c->n++;
}

static void test_is_bad_golden(void)
{
    counts c = {0, 0};
    int n = each_line("is_bad.tsv", check_bad, &c);
    printf("# %d is_bad strings, %d mismatches\n", n, c.bad);
    T_CHECK(n >= 1000);
    T_EQ_INT(c.bad, 0);
}

static void expect_fix(const char *in, const char *want)
{
    char *got = NULL;
    T_EQ_INT(sd_ftfy_fix_text(in, strlen(in), &got), SD_OK);
    T_EQ_STR(got, want);
    free(got);
}

#define expect_enc(in, want) expect_enc_n(in, want, sizeof(want) - 1)
static void expect_enc_n(const char *in, const char *want, size_t wl)
{
    size_t n;
    uint32_t *cp = to_cps(in, strlen(in), &n);
    T_EQ_INT(sd_ftfy_fix_encoding(&cp, &n), SD_OK);
    char *s = malloc(4 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += sd_utf8_put(cp[i], (unsigned char *)s + k);
    s[k] = 0;
    T_CHECKF(k == wl && !memcmp(s, want, wl), "'%s' -> '%s', want '%s'", in, s, want);
    free(s);
    free(cp);
}

/* The examples of ftfy's docstrings, and the quirks of its codecs. */
static void test_examples(void)
{
    expect_fix("CafÃ©", "Café");
    expect_fix("â€œquotedâ€\xc2\x9d", "\"quoted\"");
    expect_fix("âœ” No problems", "✔ No problems");
    expect_fix("&macr;\\_(ã\xc2\x83\xc2\x84)_/&macr;", "¯\\_(ツ)_/¯");
    expect_fix("voilÃ le travail", "voilà le travail");
    expect_fix("â€œ like this â€�", "\" like this �");
    /* fix_encoding alone keeps curly quotes and C0 80's U+0000 (remove_control_chars drops it) */
    expect_enc("sÃ³", "só");
    expect_enc("Ã³", "ó");
    expect_enc("&ATILDE;&SUP3;", "&ATILDE;&SUP3;");
    expect_enc("â€œ like this â€�", "“ like this �");
    expect_enc("Ã©À\xc2\x80 x", "é\0 x");
    /* the utf-8-variants codec's `$` lets C0 and a CESU-8 pair end in the final newline */
    expect_fix("Ã©À\n", "é");
    expect_fix("Ã©í\xc2\xa0½í¸\n", "é😊");
    /* looks odd, is left alone */
    expect_fix("(╯°□°）╯︵ ┻━┻", "(╯°□°)╯︵ ┻━┻");
    expect_fix("naïve café", "naïve café");
    expect_fix("", "");
    /* invalid UTF-8 in: U+FFFD, and lossy mojibake then decodes */
    expect_fix("caf\xc3\xa9 \xff", "café �");
    /* empty and ASCII code point arrays */
    size_t n = 0;
    uint32_t *cp = malloc(4);
    T_EQ_INT(sd_ftfy_fix_encoding(&cp, &n), SD_OK);
    T_EQ_INT(n, 0);
    T_EQ_INT(sd_ftfy_is_bad(cp, 0), 0);
    free(cp);
}

/* A long text of mojibake lines and one long line: right, and in reasonable time. */
static void test_long(void)
{
    const char *unit = "CafÃ© â€œcrÃ¨me brÃ»lÃ©eâ€\xc2\x9d ", *fixed = "Café \"crème brûlée\" ";
    size_t ul = strlen(unit), fl = strlen(fixed), reps = 4000;
    char *in = malloc(ul * reps + reps + 1), *want = malloc(fl * reps + reps + 1);
    size_t a = 0, b = 0;
    for (size_t i = 0; i < reps; i++) {
        memcpy(in + a, unit, ul); a += ul;
        memcpy(want + b, fixed, fl); b += fl;
        if (i % 40 == 39) { in[a++] = '\n'; want[b++] = '\n'; }
    }
    in[a] = want[b] = 0;
    clock_t t0 = clock();
    char *got = NULL;
    T_EQ_INT(sd_ftfy_fix_text(in, a, &got), SD_OK);
    T_CHECK(got && !strcmp(got, want));
    free(got);
    /* the same as one segment (no newlines) */
    size_t w = 0;
    for (size_t i = 0; i < a; i++) if (in[i] != '\n') in[w++] = in[i];
    in[w] = 0;
    b = 0;
    for (size_t i = 0; want[i]; i++) if (want[i] != '\n') want[b++] = want[i];
    want[b] = 0;
    T_EQ_INT(sd_ftfy_fix_text(in, w, &got), SD_OK);
    T_CHECK(got && !strcmp(got, want));
    free(got);
    double s = (double)(clock() - t0) / CLOCKS_PER_SEC;
    printf("# %zu + %zu bytes in %.3f s\n", a, w, s);
    T_CHECK(s < 10);
    free(in);
    free(want);
}

int main(void)
{
    T_RUN(test_fix_text_golden);
    T_RUN(test_is_bad_golden);
    T_RUN(test_examples);
    T_RUN(test_long);
    T_DONE();
}
