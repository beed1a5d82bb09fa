/* selected_tags.csv reader (see tags_csv.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "io/tags_csv.h"

#define MAX_TEXT ((size_t)256 << 20)
#define MAX_ROWS (1 << 22)

void sd_tag_table_free(sd_tag_table *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) free(t->name[i]);
    free(t->name);
    free(t->category);
    memset(t, 0, sizeof *t);
}

/* offset of the first invalid UTF-8 byte (or NUL), or n */
static size_t utf8_bad(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c == 0) return i;
        if (c < 0x80) { i++; continue; }
        int k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { k = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { k = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { k = 3; cp = c & 0x07; }
        else return i;
        for (int j = 1; j <= k; j++) {
            if (i + (size_t)j >= n || (s[i + j] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return i;
        i += (size_t)k + 1;
    }
    return n;
}

typedef struct { char **f; int n, cap; } row;

static void row_clear(row *r)
{
    for (int i = 0; i < r->n; i++) free(r->f[i]);
    r->n = 0;
}

static int row_push(row *r, const char *s, size_t n)
{
    if (r->n == r->cap) {
        int nc = r->cap ? r->cap * 2 : 8;
        char **nf = realloc(r->f, (size_t)nc * sizeof *nf);
        if (!nf) return sd_err(SD_ENOMEM, "out of memory");
        r->f = nf;
        r->cap = nc;
    }
    char *c = malloc(n + 1);
    if (!c) return sd_err(SD_ENOMEM, "out of memory");
    if (n) memcpy(c, s, n);
    c[n] = 0;
    r->f[r->n++] = c;
    return SD_OK;
}

/* One record starting at *pos; *line is updated for every line break consumed. Returns 1 with
 * a row (possibly 0 fields for a blank line), 0 at the end, or an error. */
static int next_row(const char *s, size_t n, size_t *pos, long *line, row *r, char **buf, size_t *cap,
                    const char *src)
{
    size_t i = *pos;
    row_clear(r);
    if (i >= n) return 0;
    if (s[i] == '\n' || s[i] == '\r') { /* blank line */
        i += (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
        (*line)++;
        *pos = i;
        return 1;
    }
    long start_line = *line;
    for (;;) {
        size_t len = 0;
        if (i < n && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= n)
                    return sd_err(SD_EFORMAT, "%s:%ld: unterminated quoted field", src, start_line);
                if (len + 1 > *cap) {
                    size_t nc = *cap ? *cap * 2 : 256;
                    char *nb = realloc(*buf, nc);
                    if (!nb) return sd_err(SD_ENOMEM, "out of memory");
                    *buf = nb;
                    *cap = nc;
                }
                if (s[i] == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        (*buf)[len++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                if (s[i] == '\n' || (s[i] == '\r' && !(i + 1 < n && s[i + 1] == '\n'))) (*line)++;
                (*buf)[len++] = s[i++];
            }
            if (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r')
                return sd_err(SD_EFORMAT, "%s:%ld: unexpected character after a closing quote", src, *line);
            int rc = row_push(r, *buf, len);
            if (rc) return rc;
        } else {
            size_t b = i;
            while (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r') i++;
            int rc = row_push(r, s + b, i - b);
            if (rc) return rc;
        }
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i < n) { /* line end */
            i += (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
            (*line)++;
        }
        *pos = i;
        return 1;
    }
}

static int parse_int(const char *s, int *v)
{
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    if (!*p || strlen(p) > 9) return 0;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return 0;
    *v = atoi(s);
    return 1;
}

int sd_tags_csv_parse(const char *data, size_t n, const char *src, sd_tag_table *out)
{
    memset(out, 0, sizeof *out);
    if (!src) src = "selected_tags.csv";
    if (n > MAX_TEXT) return sd_err(SD_EFORMAT, "%s: file too large (over 256 MiB)", src);
    size_t pos = 0;
    if (n >= 3 && !memcmp(data, "\xef\xbb\xbf", 3)) pos = 3;
    size_t bad = utf8_bad((const unsigned char *)data, n);
    if (bad < n) {
        long ln = 1;
        for (size_t i = 0; i < bad; i++) ln += data[i] == '\n';
        return sd_err(SD_EFORMAT, "%s:%ld: %s (byte 0x%02x at offset %zu)", src, ln,
                      data[bad] ? "not valid UTF-8" : "NUL byte", (unsigned char)data[bad], bad);
    }
    row r = {0};
    char *buf = NULL;
    size_t cap = 0;
    long line = 1;
    int rc, have_header = 0, capn = 0;
    for (;;) {
        long this_line = line;
        rc = next_row(data, n, &pos, &line, &r, &buf, &cap, src);
        if (rc <= 0) break;
        if (r.n == 0) continue;
        if (!have_header) {
            if (r.n < 3 || strcmp(r.f[0], "tag_id") || strcmp(r.f[1], "name") || strcmp(r.f[2], "category")) {
                rc = sd_err(SD_EFORMAT, "%s:%ld: the header must start with tag_id,name,category", src, this_line);
                break;
            }
            have_header = 1;
            continue;
        }
        int cat;
        if (r.n < 3) {
            rc = sd_err(SD_EFORMAT, "%s:%ld: %d field%s, expected tag_id,name,category[,count]", src, this_line, r.n,
                        r.n == 1 ? "" : "s");
            break;
        }
        if (!*r.f[1]) {
            rc = sd_err(SD_EFORMAT, "%s:%ld: empty tag name", src, this_line);
            break;
        }
        if (!parse_int(r.f[2], &cat)) {
            rc = sd_err(SD_EFORMAT, "%s:%ld: category '%.40s' is not an integer", src, this_line, r.f[2]);
            break;
        }
        if (out->n == MAX_ROWS) {
            rc = sd_err(SD_EFORMAT, "%s:%ld: more than %d rows", src, this_line, MAX_ROWS);
            break;
        }
        if (out->n == capn) {
            int nc = capn ? capn * 2 : 1024;
            char **nn = realloc(out->name, (size_t)nc * sizeof *nn);
            if (nn) out->name = nn;
            int *nk = nn ? realloc(out->category, (size_t)nc * sizeof *nk) : NULL;
            if (nk) out->category = nk;
            if (!nn || !nk) {
                rc = sd_err(SD_ENOMEM, "out of memory");
                break;
            }
            capn = nc;
        }
        out->name[out->n] = r.f[1];
        r.f[1] = NULL;
        out->category[out->n++] = cat;
    }
    if (!rc && !have_header) rc = sd_err(SD_EFORMAT, "%s: empty file (no tag_id,name,category header)", src);
    if (!rc && out->n == 0) rc = sd_err(SD_EFORMAT, "%s: no tag rows", src);
    row_clear(&r);
    free(r.f);
    free(buf);
    if (rc) sd_tag_table_free(out);
    return rc;
}

int sd_tags_csv_load(const char *path, sd_tag_table *out)
{
    char *data = NULL;
    size_t n = 0;
    memset(out, 0, sizeof *out);
    int rc = sd_read_file(path, MAX_TEXT + 1, &data, &n);
    if (rc) return rc;
    rc = sd_tags_csv_parse(data, n, path, out);
    free(data);
    return rc;
}
