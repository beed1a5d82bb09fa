/* TOML 1.0 reader producing a libjq jv object.
 *
 * The document is first parsed into a small tree of our own (tables remember how they were
 * defined, which TOML's redefinition rules need), then converted to jv in one pass. The rules
 * for headers and dotted keys follow the TOML 1.0 spec as implemented by Python's tomllib
 * (the reference toolkit reads configs with it):
 *   - a table may be defined once: by a [header], or by dotted keys within one section;
 *   - tables created implicitly (intermediate names of a header) may be defined later;
 *   - dotted keys may not extend a table defined by a header, nor one defined by dotted keys in
 *     an earlier section;
 *   - inline tables and arrays given as values are immutable; [[x]] appends only to arrays that
 *     were created by [[x]].
 * See toml.h for the value mapping and the limits. */
#include "io/toml.h"

#include "base/error.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_TABLE, N_ARRAY, N_LEAF };
enum { DEF_IMPLICIT, DEF_HEADER, DEF_DOTTED };

typedef struct tnode tnode;
typedef struct {
    char *key;
    size_t klen;
    tnode *val;
} tentry;

struct tnode {
    int type;
    int depth;      /* root = 0 */
    /* tables */
    int def;        /* DEF_* */
    unsigned sec;   /* section that defined it with dotted keys (DEF_DOTTED) */
    int frozen;     /* inline table: immutable */
    tentry *ents;
    size_t n, cap;
    uint32_t *idx;  /* open-addressing index (entry + 1), built once a table grows */
    size_t icap;
    /* arrays */
    int aot;        /* created by [[x]] */
    tnode **items;
    size_t nitems, itcap;
    /* leaves */
    jv leaf;
};

typedef struct {
    char *s;
    size_t n, at;
} kpart;

typedef struct {
    kpart *v;
    int n, cap;
    size_t at;  /* start of the whole key */
} tkey;

typedef struct {
    char *b;
    size_t n, cap;
} sbuf;

typedef struct {
    const char *s;
    size_t n, pos;
    const char *name;
    unsigned nsec;  /* sections counter (headers and inline tables) */
    tnode *root;
    sbuf buf;
} tparser;

/* ------------------------------------------------------------------------------------------ */
/* errors */

static void pos_of(const tparser *p, size_t at, int *line, int *col)
{
    size_t ls = 0;
    long ln = 1, c = 1;
    if (at > p->n) at = p->n;
    for (size_t i = 0; i < at; i++)
        if (p->s[i] == '\n') { ln++; ls = i + 1; }
    for (size_t i = ls; i < at; i++)
        if (((unsigned char)p->s[i] & 0xC0) != 0x80) c++;
    *line = ln > INT_MAX ? INT_MAX : (int)ln;
    *col = c > INT_MAX ? INT_MAX : (int)c;
}

__attribute__((format(printf, 3, 4)))
static int perr(const tparser *p, size_t at, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    int line, col;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pos_of(p, at, &line, &col);
    return sd_err(SD_EFORMAT, "%s:%d:%d: %s", p->name, line, col, msg);
}

static int oom(const tparser *p)
{
    return sd_err(SD_ENOMEM, "%s: out of memory", p->name);
}

/* Decode one UTF-8 sequence (input already validated). */
static uint32_t utf8_at(const tparser *p, size_t at, size_t *len)
{
    const unsigned char *u = (const unsigned char *)p->s + at;
    size_t left = p->n - at;
    if (u[0] < 0x80 || left < 2) { *len = 1; return u[0]; }
    if (u[0] < 0xE0) { *len = 2; return (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F); }
    if (u[0] < 0xF0 || left < 4) {
        *len = 3;
        if (left < 3) return u[0];
        return (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
    }
    *len = 4;
    return (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
           (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
}

/* Human description of the character at `at`: 'x', U+0001, end of line, end of input. */
static const char *desc(const tparser *p, size_t at, char buf[32])
{
    if (at >= p->n) return "end of input";
    unsigned char c = (unsigned char)p->s[at];
    if (c == '\n' || c == '\r') return "end of line";
    if (c >= 0x20 && c < 0x7F) {
        snprintf(buf, 32, "'%c'", c);
        return buf;
    }
    size_t len;
    snprintf(buf, 32, "U+%04X", (unsigned)utf8_at(p, at, &len));
    return buf;
}

static int is_dig(int c) { return c >= '0' && c <= '9'; }

static int is_bare(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

/* Key parts [0, upto) for messages: bare parts as is, others quoted with escapes. */
static const char *key_str(const tkey *k, int upto, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < upto && o + 8 < cap; i++) {
        const kpart *kp = &k->v[i];
        int bare = kp->n > 0;
        for (size_t j = 0; j < kp->n; j++)
            if (!is_bare((unsigned char)kp->s[j])) bare = 0;
        if (i) out[o++] = '.';
        if (!bare) out[o++] = '"';
        for (size_t j = 0; j < kp->n && o + 8 < cap; j++) {
            unsigned char c = (unsigned char)kp->s[j];
            if (c < 0x20 || c == 0x7F || c == '"' || c == '\\')
                o += (size_t)snprintf(out + o, cap - o, c == '"' || c == '\\' ? "\\%c" : "\\x%02X", c);
            else
                out[o++] = (char)c;
        }
        if (!bare && o + 1 < cap) out[o++] = '"';
        out[o] = 0;
    }
    if (o + 8 >= cap) snprintf(out + cap - 8, 8, "...");
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* tree */

static tnode *node_new(int type, int depth)
{
    tnode *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->type = type;
    x->depth = depth;
    x->leaf = jv_invalid();
    return x;
}

static void node_free(tnode *x)
{
    if (!x) return;
    for (size_t i = 0; i < x->n; i++) {
        free(x->ents[i].key);
        node_free(x->ents[i].val);
    }
    for (size_t i = 0; i < x->nitems; i++) node_free(x->items[i]);
    free(x->ents);
    free(x->idx);
    free(x->items);
    jv_free(x->leaf);
    free(x);
}

static uint64_t khash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static tnode *tbl_get(const tnode *t, const char *k, size_t kn)
{
    if (!t->idx) {
        for (size_t i = 0; i < t->n; i++)
            if (t->ents[i].klen == kn && !memcmp(t->ents[i].key, k, kn)) return t->ents[i].val;
        return NULL;
    }
    for (size_t h = (size_t)khash(k, kn) & (t->icap - 1);; h = (h + 1) & (t->icap - 1)) {
        uint32_t e = t->idx[h];
        if (!e) return NULL;
        const tentry *te = &t->ents[e - 1];
        if (te->klen == kn && !memcmp(te->key, k, kn)) return te->val;
    }
}

static int tbl_reindex(tnode *t)
{
    size_t cap = 64;
    while (cap < t->n * 4) cap *= 2;
    uint32_t *idx = calloc(cap, sizeof *idx);
    if (!idx) return -1;
    for (size_t i = 0; i < t->n; i++) {
        size_t h = (size_t)khash(t->ents[i].key, t->ents[i].klen) & (cap - 1);
        while (idx[h]) h = (h + 1) & (cap - 1);
        idx[h] = (uint32_t)(i + 1);
    }
    free(t->idx);
    t->idx = idx;
    t->icap = cap;
    return 0;
}

/* Add an entry (the key is copied); takes ownership of `val`, also on failure. */
static int tbl_put(tparser *p, tnode *t, const char *k, size_t klen, tnode *val)
{
    char *key = malloc(klen + 1);
    if (!key) {
        node_free(val);
        return oom(p);
    }
    memcpy(key, k, klen);
    key[klen] = 0;
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 8;
        tentry *e = nc < UINT32_MAX / 4 ? realloc(t->ents, nc * sizeof *e) : NULL;
        if (!e) {
            free(key);
            node_free(val);
            return oom(p);
        }
        t->ents = e;
        t->cap = nc;
    }
    t->ents[t->n].key = key;
    t->ents[t->n].klen = klen;
    t->ents[t->n].val = val;
    t->n++;
    if (t->n >= 16 && t->n * 2 > t->icap) {
        if (tbl_reindex(t)) return oom(p);
    } else if (t->idx) {
        size_t h = (size_t)khash(key, klen) & (t->icap - 1);
        while (t->idx[h]) h = (h + 1) & (t->icap - 1);
        t->idx[h] = (uint32_t)t->n;
    }
    return SD_OK;
}

static int arr_push(tparser *p, tnode *a, tnode *v)
{
    if (a->nitems == a->itcap) {
        size_t nc = a->itcap ? a->itcap * 2 : 4;
        tnode **it = realloc(a->items, nc * sizeof *it);
        if (!it) {
            node_free(v);
            return oom(p);
        }
        a->items = it;
        a->itcap = nc;
    }
    a->items[a->nitems++] = v;
    return SD_OK;
}

static jv node_to_jv(tnode *x)
{
    if (x->type == N_LEAF) {
        jv r = x->leaf;
        x->leaf = jv_invalid();
        return r;
    }
    if (x->type == N_ARRAY) {
        jv a = jv_array_sized(x->nitems > INT_MAX ? INT_MAX : (int)x->nitems);
        for (size_t i = 0; i < x->nitems; i++) a = jv_array_append(a, node_to_jv(x->items[i]));
        return a;
    }
    jv o = jv_object();
    for (size_t i = 0; i < x->n; i++)
        o = jv_object_set(o, jv_string_sized(x->ents[i].key, (int)x->ents[i].klen),
                          node_to_jv(x->ents[i].val));
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* scanning helpers */

static int sb_put(tparser *p, const char *d, size_t n)
{
    sbuf *b = &p->buf;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + n + 1) nc *= 2;
        char *nb = realloc(b->b, nc);
        if (!nb) return oom(p);
        b->b = nb;
        b->cap = nc;
    }
    memcpy(b->b + b->n, d, n);
    b->n += n;
    b->b[b->n] = 0;
    return SD_OK;
}

static int sb_putc(tparser *p, char c) { return sb_put(p, &c, 1); }

static int peek(const tparser *p, size_t off)
{
    return p->pos + off < p->n ? (unsigned char)p->s[p->pos + off] : -1;
}

static void skip_ws(tparser *p)
{
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t')) p->pos++;
}

/* End of line: LF, CRLF (a bare CR was rejected up front) or end of input. */
static int at_eol(const tparser *p)
{
    return p->pos >= p->n || p->s[p->pos] == '\n' || p->s[p->pos] == '\r';
}

static void skip_nl(tparser *p)
{
    if (p->pos < p->n && p->s[p->pos] == '\r') p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '\n') p->pos++;
}

static int is_ctrl(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7F; }

static int skip_comment(tparser *p)
{
    if (p->pos >= p->n || p->s[p->pos] != '#') return SD_OK;
    for (p->pos++; !at_eol(p); p->pos++) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (is_ctrl(c)) return perr(p, p->pos, "control character U+%04X in comment", c);
    }
    return SD_OK;
}

/* Whitespace, comments and newlines (inside arrays). */
static int skip_ws_nl(tparser *p)
{
    for (;;) {
        skip_ws(p);
        int rc = skip_comment(p);
        if (rc) return rc;
        if (p->pos >= p->n || !at_eol(p)) return SD_OK;
        skip_nl(p);
    }
}

/* Whole-input checks: valid UTF-8 and no CR outside CRLF. */
static int check_input(tparser *p)
{
    const unsigned char *u = (const unsigned char *)p->s;
    size_t n = p->n;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c < 0x80) {
            if (c == '\r' && (i + 1 >= n || u[i + 1] != '\n'))
                return perr(p, i, "bare carriage return (CR not followed by LF)");
            i++;
            continue;
        }
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        int ok = len != 0 && i + len <= n;
        for (size_t j = 1; ok && j < len; j++) {
            unsigned b = u[i + j];
            if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) ok = 0;
        }
        if (!ok) return perr(p, i, "invalid UTF-8 (byte 0x%02X)", c);
        i += len;
    }
    return SD_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* strings */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int put_utf8(tparser *p, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xC0 | cp >> 6); b[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | cp >> 12); b[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        b[0] = (char)(0xF0 | cp >> 18); b[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3F)); b[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return sb_put(p, b, n);
}

/* Escape sequence at p->pos (a backslash). */
static int parse_escape(tparser *p)
{
    size_t at = p->pos;
    int e = peek(p, 1);
    char c;
    char d[32];
    switch (e) {
    case 'b': c = '\b'; break;
    case 't': c = '\t'; break;
    case 'n': c = '\n'; break;
    case 'f': c = '\f'; break;
    case 'r': c = '\r'; break;
    case '"': c = '"'; break;
    case '\\': c = '\\'; break;
    case 'u':
    case 'U': {
        int nd = e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int i = 0; i < nd; i++) {
            int h = hexval(peek(p, 2 + (size_t)i));
            if (h < 0)
                return perr(p, at, "invalid escape '\\%c': expected %d hex digits", e, nd);
            cp = cp << 4 | (uint32_t)h;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF)
            return perr(p, at, "invalid escape '\\%c%.*s': surrogate code point", e, nd,
                        p->s + at + 2);
        if (cp > 0x10FFFF)
            return perr(p, at, "invalid escape '\\%c%.*s': beyond U+10FFFF", e, nd, p->s + at + 2);
        p->pos += 2 + (size_t)nd;
        return put_utf8(p, cp);
    }
    default:
        if (e >= 0x20 && e < 0x7F) return perr(p, at, "invalid escape '\\%c'", e);
        return perr(p, at, "invalid escape: '\\' followed by %s", desc(p, at + 1, d));
    }
    p->pos += 2;
    return sb_putc(p, c);
}

/* Count quote characters q at p->pos. */
static size_t count_q(const tparser *p, char q)
{
    size_t k = 0;
    while (p->pos + k < p->n && p->s[p->pos + k] == q) k++;
    return k;
}

/* String at p->pos ('"' or '\''), single- or multi-line; result in p->buf. */
static int parse_string(tparser *p, int allow_ml)
{
    size_t start = p->pos;
    char q = p->s[p->pos];
    int ml = count_q(p, q) >= 3;
    int rc;
    p->buf.n = 0;
    if (p->buf.b) p->buf.b[0] = 0;
    if (ml && !allow_ml) return perr(p, start, "multi-line string cannot be used as a key");
    p->pos += ml ? 3 : 1;
    if (ml) skip_nl(p); /* a newline right after the opening delimiter is trimmed */
    for (;;) {
        if (p->pos >= p->n)
            return perr(p, start, ml ? "unterminated multi-line string" : "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == (unsigned char)q) {
            if (!ml) {
                p->pos++;
                break;
            }
            size_t k = count_q(p, q);
            if (k >= 3) {
                if (k > 5)
                    return perr(p, p->pos, "too many quotes at the end of a multi-line string");
                if ((rc = sb_put(p, p->s + p->pos, k - 3))) return rc;
                p->pos += k;
                break;
            }
            if ((rc = sb_put(p, p->s + p->pos, k))) return rc;
            p->pos += k;
            continue;
        }
        if (c == '\n' || c == '\r') {
            if (!ml) return perr(p, start, "unterminated string");
            skip_nl(p);
            if ((rc = sb_putc(p, '\n'))) return rc;
            continue;
        }
        if (c == '\\' && q == '"') {
            if (ml) {
                size_t j = p->pos + 1;
                while (j < p->n && (p->s[j] == ' ' || p->s[j] == '\t')) j++;
                if (j < p->n && (p->s[j] == '\n' || p->s[j] == '\r')) {
                    /* line-ending backslash: drop whitespace and newlines up to the next text */
                    while (j < p->n && (p->s[j] == ' ' || p->s[j] == '\t' || p->s[j] == '\n' ||
                                        p->s[j] == '\r'))
                        j++;
                    p->pos = j;
                    continue;
                }
            }
            if ((rc = parse_escape(p))) return rc;
            continue;
        }
        if (is_ctrl(c))
            return perr(p, p->pos, "control character U+%04X in string%s", c,
                        q == '"' ? " (use an escape)" : "");
        size_t run = p->pos + 1;
        while (run < p->n && (unsigned char)p->s[run] >= 0x20 && p->s[run] != q &&
               p->s[run] != '\\' && p->s[run] != 0x7F)
            run++;
        if ((rc = sb_put(p, p->s + p->pos, run - p->pos))) return rc;
        p->pos = run;
    }
    return SD_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* keys */

static void key_free(tkey *k)
{
    for (int i = 0; i < k->n; i++) free(k->v[i].s);
    free(k->v);
    k->v = NULL;
    k->n = k->cap = 0;
}

#define TOML_MAX_DEPTH 128

static int parse_key(tparser *p, tkey *k, const char *what)
{
    char d[32];
    int rc;
    k->at = p->pos;
    for (;;) {
        skip_ws(p);
        size_t at = p->pos;
        int c = peek(p, 0);
        const char *src;
        size_t len;
        if (c >= 0 && is_bare((unsigned char)c)) {
            size_t e = p->pos;
            while (e < p->n && is_bare((unsigned char)p->s[e])) e++;
            src = p->s + p->pos;
            len = e - p->pos;
            p->pos = e;
        } else if (c == '"' || c == '\'') {
            if ((rc = parse_string(p, 0))) return rc;
            src = p->buf.b ? p->buf.b : "";
            len = p->buf.n;
        } else {
            return perr(p, at, "expected %s, found %s", what, desc(p, at, d));
        }
        if (k->n >= TOML_MAX_DEPTH)
            return perr(p, at, "key has too many parts (more than %d)", TOML_MAX_DEPTH);
        if (k->n == k->cap) {
            int nc = k->cap ? k->cap * 2 : 4;
            kpart *nv = realloc(k->v, (size_t)nc * sizeof *nv);
            if (!nv) return oom(p);
            k->v = nv;
            k->cap = nc;
        }
        char *s = malloc(len + 1);
        if (!s) return oom(p);
        memcpy(s, src, len);
        s[len] = 0;
        k->v[k->n].s = s;
        k->v[k->n].n = len;
        k->v[k->n].at = at;
        k->n++;
        skip_ws(p);
        if (peek(p, 0) != '.') return SD_OK;
        p->pos++;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* numbers and dates */

#define TOML_MAX_INT ((uint64_t)1 << 53) /* larger integers are not exact in a double */

/* Digits of `base` with single underscores between digits. */
static int digits_ok(const char *s, size_t n, int base)
{
    if (!n) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_') {
            if (i == 0 || i + 1 == n || s[i - 1] == '_') return 0;
            continue;
        }
        int h = hexval((unsigned char)s[i]);
        if (h < 0 || h >= base) return 0;
    }
    return 1;
}

static double c_strtod(const char *s)
{
    static locale_t cloc;
    if (!cloc) cloc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    return cloc ? strtod_l(s, NULL, cloc) : strtod(s, NULL);
}

static int parse_number(tparser *p, tnode *v)
{
    size_t start = p->pos, e = p->pos;
    while (e < p->n && (is_bare((unsigned char)p->s[e]) || p->s[e] == '+' || p->s[e] == '.')) e++;
    const char *t = p->s + start;
    size_t n = e - start;
    int tn = n > 64 ? 64 : (int)n;
    p->pos = e;
    size_t o = (t[0] == '+' || t[0] == '-') ? 1 : 0;
    int neg = t[0] == '-';
    if (n - o == 3 && (!memcmp(t + o, "inf", 3) || !memcmp(t + o, "nan", 3))) {
        double d = t[o] == 'i' ? INFINITY : NAN;
        v->leaf = jv_number(neg ? -d : d);
        return SD_OK;
    }
    if (n - o >= 2 && t[o] == '0' && (t[o + 1] == 'x' || t[o + 1] == 'o' || t[o + 1] == 'b')) {
        int base = t[o + 1] == 'x' ? 16 : t[o + 1] == 'o' ? 8 : 2;
        if (o) return perr(p, start, "sign not allowed on a hex, octal or binary integer '%.*s'", tn, t);
        if (!digits_ok(t + 2, n - 2, base)) return perr(p, start, "invalid integer '%.*s'", tn, t);
        uint64_t val = 0;
        for (size_t i = 2; i < n; i++) {
            if (t[i] == '_') continue;
            val = val * (uint64_t)base + (uint64_t)hexval((unsigned char)t[i]);
            if (val > TOML_MAX_INT)
                return perr(p, start, "integer '%.*s' out of range: beyond +-2^53, jq numbers "
                            "are doubles", tn, t);
        }
        v->leaf = jv_number((double)val);
        return SD_OK;
    }
    /* decimal integer or float: int-part [. frac] [e exp] */
    size_t i = o, ie, fs, fe;
    while (i < n && (is_dig(t[i]) || t[i] == '_')) i++;
    ie = i;
    int isfloat = 0;
    if (i < n && t[i] == '.') {
        isfloat = 1;
        fs = ++i;
        while (i < n && (is_dig(t[i]) || t[i] == '_')) i++;
        fe = i;
        if (fe == fs || !digits_ok(t + fs, fe - fs, 10))
            return perr(p, start, "invalid float '%.*s'", tn, t);
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        isfloat = 1;
        ++i;
        if (i < n && (t[i] == '+' || t[i] == '-')) i++;
        size_t ds = i;
        while (i < n && (is_dig(t[i]) || t[i] == '_')) i++;
        if (!digits_ok(t + ds, i - ds, 10)) return perr(p, start, "invalid float '%.*s'", tn, t);
    }
    if (i != n || !digits_ok(t + o, ie - o, 10))
        return perr(p, start, "invalid %s '%.*s'", isfloat ? "float" : "number", tn, t);
    if (t[o] == '0' && ie - o > 1)
        return perr(p, start, "leading zeros are not allowed in '%.*s'", tn, t);
    if (!isfloat) {
        uint64_t val = 0;
        for (size_t j = o; j < ie; j++) {
            if (t[j] == '_') continue;
            val = val * 10 + (uint64_t)(t[j] - '0');
            if (val > TOML_MAX_INT)
                return perr(p, start, "integer '%.*s' out of range: beyond +-2^53, jq numbers "
                            "are doubles", tn, t);
        }
        v->leaf = jv_number(neg && val ? -(double)val : (double)val); /* integers have no -0 */
        return SD_OK;
    }
    char tmp[128];
    if (n >= sizeof tmp) return perr(p, start, "float '%.*s...' is too long", tn, t);
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (t[j] != '_') tmp[k++] = t[j];
    tmp[k] = 0;
    double d = c_strtod(tmp);
    if (isinf(d)) return perr(p, start, "float '%.*s' out of range", tn, t);
    v->leaf = jv_number(d);
    return SD_OK;
}

static int ndig(const tparser *p, size_t at, int k)
{
    for (int i = 0; i < k; i++)
        if (at + (size_t)i >= p->n || !is_dig(p->s[at + (size_t)i])) return 0;
    return 1;
}

static int num2(const tparser *p, size_t at) { return (p->s[at] - '0') * 10 + (p->s[at + 1] - '0'); }

/* HH:MM:SS[.frac] at p->pos; 0 if malformed or out of range. */
static int scan_time(tparser *p)
{
    size_t a = p->pos;
    if (!ndig(p, a, 2) || a + 2 >= p->n || p->s[a + 2] != ':' || !ndig(p, a + 3, 2) ||
        a + 5 >= p->n || p->s[a + 5] != ':' || !ndig(p, a + 6, 2))
        return 0;
    if (num2(p, a) > 23 || num2(p, a + 3) > 59 || num2(p, a + 6) > 60) return 0;
    p->pos = a + 8;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        size_t j = p->pos + 1;
        while (j < p->n && is_dig(p->s[j])) j++;
        if (j == p->pos + 1) return 0;
        p->pos = j;
    }
    return 1;
}

static int parse_datetime(tparser *p, tnode *v)
{
    size_t start = p->pos;
    const char *s = p->s;
    if (ndig(p, start, 4) && start + 4 < p->n && s[start + 4] == '-') {
        if (!ndig(p, start + 5, 2) || start + 7 >= p->n || s[start + 7] != '-' ||
            !ndig(p, start + 8, 2))
            return perr(p, start, "invalid date (expected YYYY-MM-DD)");
        int y = (s[start] - '0') * 1000 + (s[start + 1] - '0') * 100 + num2(p, start + 2);
        int mo = num2(p, start + 5), dd = num2(p, start + 8);
        static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (mo < 1 || mo > 12 || dd < 1 || dd > mdays[mo - 1] || (mo == 2 && dd == 29 && !leap))
            return perr(p, start, "invalid date '%.10s': day or month out of range", s + start);
        p->pos = start + 10;
        int c = peek(p, 0);
        if (c == 'T' || c == 't' || (c == ' ' && ndig(p, p->pos + 1, 2) && peek(p, 3) == ':')) {
            p->pos++;
            if (!scan_time(p)) return perr(p, start, "invalid time in date-time");
            c = peek(p, 0);
            if (c == 'Z' || c == 'z') {
                p->pos++;
            } else if (c == '+' || c == '-') {
                size_t a = p->pos + 1;
                if (!ndig(p, a, 2) || a + 2 >= p->n || s[a + 2] != ':' || !ndig(p, a + 3, 2) ||
                    num2(p, a) > 23 || num2(p, a + 3) > 59)
                    return perr(p, p->pos, "invalid time offset in date-time");
                p->pos = a + 5;
            }
        }
    } else if (!scan_time(p)) {
        return perr(p, start, "invalid time (expected HH:MM:SS)");
    }
    v->leaf = jv_string_sized(s + start, (int)(p->pos - start));
    return SD_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* values, tables */

static int parse_value(tparser *p, int depth, tnode **out);
static int keyval(tparser *p, tnode *t, unsigned sec);

static int parse_array(tparser *p, int depth, tnode *a)
{
    size_t start = p->pos;
    char d[32];
    int rc;
    p->pos++;
    for (;;) {
        if ((rc = skip_ws_nl(p))) return rc;
        if (p->pos >= p->n) return perr(p, start, "unterminated array");
        if (p->s[p->pos] == ']') break;
        tnode *v;
        if ((rc = parse_value(p, depth + 1, &v))) return rc;
        if ((rc = arr_push(p, a, v))) return rc;
        if ((rc = skip_ws_nl(p))) return rc;
        if (p->pos >= p->n) return perr(p, start, "unterminated array");
        if (p->s[p->pos] == ']') break;
        if (p->s[p->pos] != ',')
            return perr(p, p->pos, "expected ',' or ']' in array, found %s", desc(p, p->pos, d));
        p->pos++;
    }
    p->pos++;
    return SD_OK;
}

static int parse_inline(tparser *p, tnode *t)
{
    size_t start = p->pos;
    unsigned sec = ++p->nsec;
    char d[32];
    int rc;
    p->pos++;
    skip_ws(p);
    if (peek(p, 0) == '}') {
        p->pos++;
        t->frozen = 1;
        return SD_OK;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->n) return perr(p, start, "unterminated inline table");
        if (at_eol(p)) return perr(p, p->pos, "newline inside an inline table");
        if (p->s[p->pos] == '}') return perr(p, p->pos, "trailing comma in an inline table");
        if ((rc = keyval(p, t, sec))) return rc;
        skip_ws(p);
        if (p->pos >= p->n) return perr(p, start, "unterminated inline table");
        if (at_eol(p)) return perr(p, p->pos, "newline inside an inline table");
        if (p->s[p->pos] == '}') break;
        if (p->s[p->pos] != ',')
            return perr(p, p->pos, "expected ',' or '}' in inline table, found %s",
                        desc(p, p->pos, d));
        p->pos++;
    }
    p->pos++;
    t->frozen = 1;
    return SD_OK;
}

static int parse_value(tparser *p, int depth, tnode **out)
{
    char d[32];
    int c = peek(p, 0), rc;
    size_t at = p->pos;
    *out = NULL;
    int type = c == '[' ? N_ARRAY : c == '{' ? N_TABLE : N_LEAF;
    if (type != N_LEAF && depth > TOML_MAX_DEPTH)
        return perr(p, at, "nesting too deep (more than %d levels)", TOML_MAX_DEPTH);
    tnode *v = node_new(type, depth);
    if (!v) return oom(p);
    if (c == '"' || c == '\'') {
        rc = parse_string(p, 1);
        if (!rc) v->leaf = jv_string_sized(p->buf.b ? p->buf.b : "", (int)p->buf.n);
    } else if (c == '[') {
        rc = parse_array(p, depth, v);
    } else if (c == '{') {
        v->def = DEF_HEADER;
        rc = parse_inline(p, v);
    } else if (is_dig(c) &&
               ((ndig(p, at, 4) && peek(p, 4) == '-') || (ndig(p, at, 2) && peek(p, 2) == ':'))) {
        rc = parse_datetime(p, v);
    } else if (is_dig(c) || c == '+' || c == '-') {
        rc = parse_number(p, v);
    } else if (c >= 0 && is_bare((unsigned char)c)) {
        size_t e = at;
        while (e < p->n && is_bare((unsigned char)p->s[e])) e++;
        size_t wl = e - at;
        rc = SD_OK;
        if (wl == 4 && !memcmp(p->s + at, "true", 4)) v->leaf = jv_true();
        else if (wl == 5 && !memcmp(p->s + at, "false", 5)) v->leaf = jv_false();
        else if (wl == 3 && !memcmp(p->s + at, "inf", 3)) v->leaf = jv_number(INFINITY);
        else if (wl == 3 && !memcmp(p->s + at, "nan", 3)) v->leaf = jv_number(NAN);
        else
            rc = perr(p, at, "invalid value '%.*s' (strings must be quoted)", wl > 40 ? 40 : (int)wl,
                      p->s + at);
        p->pos = e;
    } else {
        rc = perr(p, at, "expected a value, found %s", desc(p, at, d));
    }
    if (rc) {
        node_free(v);
        return rc;
    }
    *out = v;
    return SD_OK;
}

/* key = value into table t; `sec` is the current section (header or inline table). */
static int keyval(tparser *p, tnode *t, unsigned sec)
{
    tkey k = {0};
    char ks[160], d[32];
    int rc = parse_key(p, &k, "a key");
    if (rc) goto out;
    skip_ws(p);
    if (peek(p, 0) != '=') {
        rc = perr(p, p->pos, "expected '=' after key '%s', found %s",
                  key_str(&k, k.n, ks, sizeof ks), desc(p, p->pos, d));
        goto out;
    }
    p->pos++;
    skip_ws(p);
    for (int i = 0; i < k.n - 1; i++) {
        tnode *c = tbl_get(t, k.v[i].s, k.v[i].n);
        if (!c) {
            if (t->depth + 1 > TOML_MAX_DEPTH) {
                rc = perr(p, k.at, "nesting too deep (more than %d levels)", TOML_MAX_DEPTH);
                goto out;
            }
            if (!(c = node_new(N_TABLE, t->depth + 1))) { rc = oom(p); goto out; }
            c->def = DEF_DOTTED;
            c->sec = sec;
            if ((rc = tbl_put(p, t, k.v[i].s, k.v[i].n, c))) goto out;
        } else if (c->type == N_LEAF) {
            rc = perr(p, k.at, "key '%s' is already defined as a value", key_str(&k, i + 1, ks, sizeof ks));
            goto out;
        } else if (c->type == N_ARRAY) {
            rc = perr(p, k.at, "cannot add keys to array '%s'", key_str(&k, i + 1, ks, sizeof ks));
            goto out;
        } else if (c->frozen) {
            rc = perr(p, k.at, "cannot extend inline table '%s'", key_str(&k, i + 1, ks, sizeof ks));
            goto out;
        } else if (c->def == DEF_HEADER) {
            rc = perr(p, k.at, "cannot extend table '%s' with dotted keys: it has its own [header]",
                      key_str(&k, i + 1, ks, sizeof ks));
            goto out;
        } else if (c->def == DEF_DOTTED && c->sec != sec) {
            rc = perr(p, k.at, "cannot extend table '%s': it was defined earlier with dotted keys",
                      key_str(&k, i + 1, ks, sizeof ks));
            goto out;
        } else {
            c->def = DEF_DOTTED;
            c->sec = sec;
        }
        t = c;
    }
    kpart *last = &k.v[k.n - 1];
    if (tbl_get(t, last->s, last->n)) {
        rc = perr(p, k.at, "duplicate key '%s'", key_str(&k, k.n, ks, sizeof ks));
        goto out;
    }
    tnode *v;
    if ((rc = parse_value(p, t->depth + 1, &v))) goto out;
    rc = tbl_put(p, t, last->s, last->n, v);
out:
    key_free(&k);
    return rc;
}

/* [a.b.c] or [[a.b.c]] at p->pos; sets *cur to the table that the following keys go into. */
static int header(tparser *p, tnode **cur)
{
    int aot = peek(p, 1) == '[';
    tkey k = {0};
    char ks[160], d[32];
    int rc;
    p->pos += aot ? 2 : 1;
    if ((rc = parse_key(p, &k, "a table name"))) goto out;
    skip_ws(p);
    if (peek(p, 0) != ']' || (aot && peek(p, 1) != ']')) {
        size_t at = p->pos + (aot && peek(p, 0) == ']');
        rc = perr(p, at, "expected '%s' after table name '%s', found %s", aot ? "]]" : "]",
                  key_str(&k, k.n, ks, sizeof ks), desc(p, at, d));
        goto out;
    }
    p->pos += aot ? 2 : 1;
    p->nsec++;
    tnode *t = p->root;
    for (int i = 0; i < k.n; i++) {
        int last = i == k.n - 1;
        tnode *c = tbl_get(t, k.v[i].s, k.v[i].n);
#define kd key_str(&k, i + 1, ks, sizeof ks)
        if (t->depth + 1 + (last && aot) > TOML_MAX_DEPTH) {
            rc = perr(p, k.at, "nesting too deep (more than %d levels)", TOML_MAX_DEPTH);
            goto out;
        }
        if (!c) {
            int arr = last && aot;
            if (!(c = node_new(arr ? N_ARRAY : N_TABLE, t->depth + 1))) { rc = oom(p); goto out; }
            c->aot = arr;
            if (last && !aot) c->def = DEF_HEADER;
            if ((rc = tbl_put(p, t, k.v[i].s, k.v[i].n, c))) goto out;
        } else if (c->type == N_LEAF) {
            rc = perr(p, k.at, "key '%s' is already defined as a value", kd);
            goto out;
        } else if (c->type == N_ARRAY && !c->aot) {
            rc = perr(p, k.at, "cannot extend array '%s' (arrays given as values are immutable)", kd);
            goto out;
        } else if (c->type == N_TABLE && c->frozen) {
            rc = perr(p, k.at, "cannot extend inline table '%s'", kd);
            goto out;
        } else if (last && !aot && c->type == N_ARRAY) {
            rc = perr(p, k.at, "table '%s' is already defined as an array of tables", kd);
            goto out;
        } else if (last && aot && c->type == N_TABLE) {
            rc = perr(p, k.at, "key '%s' is already defined as a table", kd);
            goto out;
        } else if (last && !aot) {
            if (c->def != DEF_IMPLICIT) {
                rc = perr(p, k.at, "table '%s' defined twice%s", kd,
                          c->def == DEF_DOTTED ? " (first with dotted keys)" : "");
                goto out;
            }
            c->def = DEF_HEADER;
        }
        if (last && aot) {
            tnode *e = node_new(N_TABLE, c->depth + 1);
            if (!e) { rc = oom(p); goto out; }
            e->def = DEF_HEADER;
            if ((rc = arr_push(p, c, e))) goto out;
            c = e;
        } else if (c->type == N_ARRAY) {
            c = c->items[c->nitems - 1];
        }
        t = c;
    }
#undef kd
    *cur = t;
out:
    key_free(&k);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* entry points */

int sd_toml_parse(const char *text, size_t n, const char *name, jv *out)
{
    tparser P = {0}, *p = &P;
    int rc;
    *out = jv_invalid();
    p->s = text;
    p->n = n;
    p->name = name ? name : "<toml>";
    if (!text && n) return sd_err(SD_EINVAL, "%s: no input", p->name);
    if (n > (size_t)INT_MAX) return sd_err(SD_ERANGE, "%s: input too large", p->name);
    if (!text) p->s = "";
    if ((rc = check_input(p))) return rc;
    if (!(p->root = node_new(N_TABLE, 0))) return oom(p);
    if (p->n >= 3 && !memcmp(p->s, "\xEF\xBB\xBF", 3)) p->pos = 3; /* UTF-8 byte order mark */
    tnode *cur = p->root;
    unsigned sec = 0; /* current section; inline tables draw their own ids from p->nsec */
    char d[32];
    while (!rc) {
        skip_ws(p);
        if (p->pos >= p->n) break;
        int c = p->s[p->pos];
        const char *after = NULL;
        if (c == '[') {
            rc = header(p, &cur);
            sec = p->nsec;
            after = "table header";
        } else if (c != '#' && !at_eol(p)) {
            rc = keyval(p, cur, sec);
            after = "value";
        }
        if (rc) break;
        skip_ws(p);
        if ((rc = skip_comment(p))) break;
        if (!at_eol(p)) {
            rc = perr(p, p->pos, "expected end of line after %s, found %s", after ? after : "comment",
                      desc(p, p->pos, d));
            break;
        }
        skip_nl(p);
    }
    if (!rc) *out = node_to_jv(p->root);
    node_free(p->root);
    free(p->buf.b);
    return rc;
}

#define TOML_MAX_FILE ((size_t)64 << 20)

int sd_toml_parse_file(const char *path, jv *out)
{
    *out = jv_invalid();
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", path, strerror(e));
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = SD_OK;
    for (;;) {
        if (n == cap) {
            if (n > TOML_MAX_FILE) {
                rc = sd_err(SD_ERANGE, "%s: file too large (limit %zu MiB)", path, TOML_MAX_FILE >> 20);
                break;
            }
            size_t nc = cap ? cap * 2 : 65536;
            if (nc > TOML_MAX_FILE + 1) nc = TOML_MAX_FILE + 1;
            char *nb = realloc(buf, nc);
            if (!nb) {
                rc = sd_err(SD_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) rc = sd_err(SD_EIO, "%s: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!rc) rc = sd_toml_parse(buf, n, path, out);
    free(buf);
    return rc;
}
