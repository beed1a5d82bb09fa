/* Fine-tuning metadata JSON / JSONL and Python-compatible JSON output; see metadata.h. */
#include "data/metadata.h"

#include "base/error.h"
#include "base/fileio.h"
#include "io/jsonl.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- string map ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int map_grow(sd_strmap *m)
{
    size_t nc = m->cap ? m->cap * 2 : 256;
    char **k = calloc(nc, sizeof *k);
    size_t *v = calloc(nc, sizeof *v);
    if (!k || !v) { free(k); free(v); return sd_err(SD_ENOMEM, "out of memory"); }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = hash_str(m->keys[i]) & (nc - 1);
        while (k[j]) j = (j + 1) & (nc - 1);
        k[j] = m->keys[i];
        v[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = k;
    m->vals = v;
    m->cap = nc;
    return SD_OK;
}

int sd_strmap_put(sd_strmap *m, const char *key, size_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        int rc = map_grow(m);
        if (rc < 0) return rc;
    }
    size_t j = hash_str(key) & (m->cap - 1);
    while (m->keys[j]) {
        if (!strcmp(m->keys[j], key)) { m->vals[j] = val; return SD_OK; }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = strdup(key);
    if (!m->keys[j]) return sd_err(SD_ENOMEM, "out of memory");
    m->vals[j] = val;
    m->n++;
    return SD_OK;
}

int sd_strmap_get(const sd_strmap *m, const char *key, size_t *val)
{
    if (!m->cap) return 0;
    size_t j = hash_str(key) & (m->cap - 1);
    while (m->keys[j]) {
        if (!strcmp(m->keys[j], key)) { if (val) *val = m->vals[j]; return 1; }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

void sd_strmap_free(sd_strmap *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- loading ---- */

static int add_entry(sd_meta *m, const char *key, jv value, long line, char *err)
{
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        sd_meta_entry *e = realloc(m->e, nc * sizeof *e);
        if (!e) { jv_free(value); free(err); return sd_err(SD_ENOMEM, "out of memory"); }
        m->e = e;
        m->cap = nc;
    }
    sd_meta_entry *e = &m->e[m->n];
    e->key = strdup(key ? key : "");
    e->value = value;
    e->line = line;
    e->err = err;
    if (!e->key) { jv_free(value); free(err); return sd_err(SD_ENOMEM, "out of memory"); }
    m->n++;
    return SD_OK;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static int ends_ci(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

void sd_meta_free(sd_meta *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].key);
        jv_free(m->e[i].value);
        free(m->e[i].err);
    }
    free(m->e);
    memset(m, 0, sizeof *m);
}

int sd_meta_load(const char *path, sd_meta *m)
{
    memset(m, 0, sizeof *m);
    char *text = NULL;
    size_t n = 0;
    int rc = sd_read_file(path, 0, &text, &n);
    if (rc < 0) return rc;
    m->jsonl = ends_ci(path, ".jsonl");
    if (m->jsonl) {
        size_t i = 0;
        long line = 0;
        while (i < n && rc == SD_OK) {
            size_t j = i;
            while (j < n && text[j] != '\n') j++;
            line++;
            size_t len = j - i;
            if (len && text[i + len - 1] == '\r') len--;
            size_t k = 0;
            while (k < len && (text[i + k] == ' ' || text[i + k] == '\t')) k++;
            if (line == 1 && len >= 3 && !memcmp(text + i, "\xEF\xBB\xBF", 3)) { i += 3; len -= 3; }
            if (k < len) {
                jv rec;
                if (sd_jsonl_parse_line(text + i, len, &rec) < 0) {
                    rc = add_entry(m, "", jv_invalid(), line, fmt("%s:%ld: %s", path, line, sd_errmsg()));
                } else {
                    const char *ip = NULL;
                    int g = sd_jsonl_get_str(rec, "image_path", &ip);
                    if (g <= 0) {
                        char *e = g < 0 ? fmt("%s:%ld: %s", path, line, sd_errmsg())
                                        : fmt("%s:%ld: no 'image_path'", path, line);
                        jv_free(rec);
                        rc = add_entry(m, "", jv_invalid(), line, e);
                    } else {
                        char *key = strdup(ip);
                        if (!key) { jv_free(rec); rc = sd_err(SD_ENOMEM, "out of memory"); break; }
                        rec = jv_object_delete(rec, jv_string("image_path"));
                        rc = add_entry(m, key, rec, line, NULL);
                        free(key);
                    }
                }
            }
            i = j + 1;
        }
        free(text);
        if (rc < 0) sd_meta_free(m);
        return rc;
    }
    jv v;
    rc = sd_json_parse(text, n, &v);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sd_errmsg());
        const char *at = strstr(msg, "at column ");
        if (at) {
            size_t col = strtoul(at + 10, NULL, 10), line = 1, lc = 1;
            for (size_t i = 0; i + 1 < col && i < n; i++) {
                if (text[i] == '\n') { line++; lc = 1; } else lc++;
            }
            const char *rest = strchr(at, ':');
            char head[64];
            size_t hl = (size_t)(at - msg);
            if (hl >= sizeof head) hl = sizeof head - 1;
            memcpy(head, msg, hl);
            while (hl && head[hl - 1] == ' ') hl--;
            head[hl] = 0;
            rc = sd_err(SD_EFORMAT, "%s:%zu:%zu: %s%s", path, line, lc, head, rest ? rest : "");
        } else rc = sd_err_prefix(SD_EFORMAT, "%s", path);
        free(text);
        return rc;
    }
    free(text);
    if (jv_get_kind(v) != JV_KIND_OBJECT) {
        rc = sd_err(SD_EFORMAT, "%s: expected a JSON object keyed by image, got %s", path, sd_jv_kind_name(v));
        jv_free(v);
        return rc;
    }
    int it = jv_object_iter(v);
    while (jv_object_iter_valid(v, it) && rc == SD_OK) {
        jv k = jv_object_iter_key(v, it);
        jv val = jv_object_iter_value(v, it);
        it = jv_object_iter_next(v, it);
        if (jv_get_kind(val) != JV_KIND_OBJECT) {
            char *e = fmt("%s: entry '%s': expected an object, got %s", path, jv_string_value(k), sd_jv_kind_name(val));
            jv_free(val);
            rc = add_entry(m, jv_string_value(k), jv_invalid(), 0, e);
        } else rc = add_entry(m, jv_string_value(k), val, 0, NULL);
        jv_free(k);
    }
    jv_free(v);
    if (rc < 0) sd_meta_free(m);
    return rc;
}

/* ---- Python json.dumps(indent=N) / json.dumps() ---- */

typedef struct sbuf { char *p; size_t n, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_s(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
/* before an item or a closing bracket: newline + indentation, or nothing when compact (indent < 0) */
static void sb_indent(sbuf *b, int level, int indent)
{
    if (indent < 0) return;
    sb_put(b, "\n", 1);
    for (int i = 0; i < level * indent; i++) sb_put(b, " ", 1);
}

static void dump_string(sbuf *b, const char *s, size_t n, int ascii)
{
    sb_put(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = u[i];
        const char *esc = NULL;
        char tmp[16];
        size_t adv = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20 || (ascii && c == 0x7F)) { snprintf(tmp, sizeof tmp, "\\u%04x", c); esc = tmp; }
        else if (c >= 0x80 && ascii) {
            size_t l = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            uint32_t cp = c & (0x3F >> (l - 1));
            for (size_t k = 1; k < l && i + k < n; k++) cp = (cp << 6) | (u[i + k] & 0x3F);
            adv = l;
            if (cp >= 0x10000) {
                uint32_t v = cp - 0x10000;
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else snprintf(tmp, sizeof tmp, "\\u%04x", cp);
            esc = tmp;
        }
        if (esc) {
            if (run) sb_put(b, s + i - run, run);
            run = 0;
            sb_s(b, esc);
            i += adv;
        } else { run++; i++; }
    }
    if (run) sb_put(b, s + i - run, run);
    sb_put(b, "\"", 1);
}

/* Python repr(float) for finite doubles */
static void dump_number(sbuf *b, double x)
{
    char out[64];
    if (x == floor(x) && fabs(x) < 1e16) {
        if (x == 0) { sb_s(b, signbit(x) ? "-0.0" : "0"); return; }   /* -0.0 stays a float */
        snprintf(out, sizeof out, "%.0f", x);
        sb_s(b, out);
        return;
    }
    if (!isfinite(x)) { sb_s(b, isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity"); return; }
    char e[40];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, x);
        if (strtod(e, NULL) == x) break;
    }
    /* e = [-]d[.ddd]e[+-]XX -> digits and decimal exponent */
    const char *p = e;
    int neg = *p == '-';
    if (neg) p++;
    char digits[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    digits[nd] = 0;
    while (nd > 1 && digits[nd - 1] == '0') digits[--nd] = 0;
    int exp10 = atoi(p + 1);
    int decpt = exp10 + 1;
    char *w = out;
    if (neg) *w++ = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            *w++ = '0'; *w++ = '.';
            for (int k = 0; k < -decpt; k++) *w++ = '0';
            for (int k = 0; k < nd; k++) *w++ = digits[k];
        } else {
            for (int k = 0; k < decpt; k++) *w++ = k < nd ? digits[k] : '0';
            *w++ = '.';
            if (nd > decpt) for (int k = decpt; k < nd; k++) *w++ = digits[k];
            else *w++ = '0';
        }
        *w = 0;
    } else {
        *w++ = digits[0];
        if (nd > 1) { *w++ = '.'; for (int k = 1; k < nd; k++) *w++ = digits[k]; }
        snprintf(w, sizeof out - (size_t)(w - out), "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    sb_s(b, out);
}

static void dump_value(sbuf *b, jv v, int level, int ascii, int indent)
{
    const char *sep = indent < 0 ? ", " : ",";
    switch (jv_get_kind(v)) {
    case JV_KIND_NULL: sb_s(b, "null"); break;
    case JV_KIND_TRUE: sb_s(b, "true"); break;
    case JV_KIND_FALSE: sb_s(b, "false"); break;
    case JV_KIND_NUMBER: dump_number(b, jv_number_value(v)); break;
    case JV_KIND_STRING:
        dump_string(b, jv_string_value(v), (size_t)jv_string_length_bytes(jv_copy(v)), ascii);
        break;
    case JV_KIND_ARRAY: {
        int n = jv_array_length(jv_copy(v));
        if (!n) { sb_s(b, "[]"); break; }
        sb_s(b, "[");
        for (int i = 0; i < n; i++) {
            sb_indent(b, level + 1, indent);
            jv x = jv_array_get(jv_copy(v), i);
            dump_value(b, x, level + 1, ascii, indent);
            jv_free(x);
            if (i + 1 < n) sb_s(b, sep);
        }
        sb_indent(b, level, indent);
        sb_s(b, "]");
        break;
    }
    case JV_KIND_OBJECT: {
        if (!jv_object_length(jv_copy(v))) { sb_s(b, "{}"); break; }
        sb_s(b, "{");
        int first = 1;
        int it = jv_object_iter(v);
        while (jv_object_iter_valid(v, it)) {
            jv k = jv_object_iter_key(v, it);
            jv x = jv_object_iter_value(v, it);
            if (!first) sb_s(b, sep);
            first = 0;
            sb_indent(b, level + 1, indent);
            dump_string(b, jv_string_value(k), (size_t)jv_string_length_bytes(jv_copy(k)), ascii);
            sb_s(b, ": ");
            dump_value(b, x, level + 1, ascii, indent);
            jv_free(k);
            jv_free(x);
            it = jv_object_iter_next(v, it);
        }
        sb_indent(b, level, indent);
        sb_s(b, "}");
        break;
    }
    default: sb_s(b, "null"); break;
    }
}

int sd_json_dump_py(jv v, int ensure_ascii, char **out, size_t *n)
{
    return sd_json_dump_py_indent(v, ensure_ascii, 2, out, n);
}

int sd_json_dump_py_indent(jv v, int ensure_ascii, int indent, char **out, size_t *n)
{
    sbuf b = {0};
    dump_value(&b, v, 0, ensure_ascii, indent);
    if (!b.p && !b.oom) sb_s(&b, "");
    if (b.oom) { free(b.p); *out = NULL; return sd_err(SD_ENOMEM, "out of memory"); }
    *out = b.p;
    if (n) *n = b.n;
    return SD_OK;
}

/* ---- key -> image ---- */

static int exists_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && !S_ISDIR(st.st_mode);
}

int sd_meta_find_image(const char *key, const char *image_dir, char **path)
{
    *path = NULL;
    if (!*key) return 0;
    if (key[0] != '/' && image_dir) {
        static const char *const ext[] = {"", ".png", ".jpg", ".jpeg", ".webp", ".bmp",
                                          ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"};
        size_t dl = strlen(image_dir), kl = strlen(key);
        char *p = malloc(dl + kl + 8);
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        int sep = dl && image_dir[dl - 1] != '/';
        sprintf(p, "%s%s%s", image_dir, sep ? "/" : "", key);
        size_t base = strlen(p);
        for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
            if (i == 1 && exists_file(key)) break;   /* legacy: the key itself, as a path */
            strcpy(p + base, ext[i]);
            if (exists_file(p)) { *path = p; return 1; }
        }
        free(p);
    }
    if (exists_file(key)) {
        *path = strdup(key);
        return *path ? 1 : sd_err(SD_ENOMEM, "out of memory");
    }
    return 0;
}
