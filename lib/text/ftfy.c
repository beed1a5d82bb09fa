/* ftfy 6.1.1 fix_text() and NFC; see ftfy.h (fix_encoding is in ftfy_encoding.c). */
#include "text/ftfy.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "text/unicode_tables.h"

#define MAX_SEGMENT 1000000
#define MAX_ROUNDS 10000

/* ---------------------------------------------------------------------------------------------
 * UTF-8 */

int sd_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int need;
    uint32_t v;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) { need = 1; v = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2; v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3; v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
    } else return -1;
    int k;
    for (k = 1; k <= need; k++) {
        if ((size_t)k >= n) return -k;
        unsigned b = s[k];
        if (b < lo || b > hi) return -k;
        lo = 0x80; hi = 0xBF;
        v = (v << 6) | (b & 0x3F);
    }
    *cp = v;
    return k;
}

/* UTF-8 decoding with U+FFFD for each maximal ill-formed subpart (Python's errors="replace"). */
size_t sd_utf8_decode(const unsigned char *s, size_t n, uint32_t *out)
{
    size_t i = 0, m = 0;
    while (i < n) {
        uint32_t cp;
        int r = sd_utf8_next(s + i, n - i, &cp);
        out[m++] = r > 0 ? cp : 0xFFFD;
        i += (size_t)(r > 0 ? r : -r);
    }
    return m;
}

size_t sd_utf8_put(uint32_t c, unsigned char *o)
{
    if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { o[0] = (unsigned char)(0xC0 | (c >> 6)); o[1] = (unsigned char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12)); o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F)); return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18)); o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---------------------------------------------------------------------------------------------
 * Table lookups */

static const sd_ftfy_map *map_find(const sd_ftfy_map *m, size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < m[mid].cp) hi = mid;
        else if (c > m[mid].cp) lo = mid + 1;
        else return &m[mid];
    }
    return NULL;
}

static int u32_in(const uint32_t *a, size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < a[mid]) hi = mid;
        else if (c > a[mid]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int ccc(uint32_t c)
{
    if (c < 0x300) return 0;
    size_t lo = 0, hi = sd_uc_ccc_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sd_uc_ccc[mid][0]) hi = mid;
        else if (c > sd_uc_ccc[mid][1]) lo = mid + 1;
        else return (int)sd_uc_ccc[mid][2];
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * NFC */

#define SBASE 0xAC00u
#define LBASE 0x1100u
#define VBASE 0x1161u
#define TBASE 0x11A7u
#define LCOUNT 19u
#define VCOUNT 21u
#define TCOUNT 28u
#define NCOUNT (VCOUNT * TCOUNT)
#define SCOUNT (LCOUNT * NCOUNT)

static size_t decompose(uint32_t c, uint32_t *out, int depth)
{
    if (c >= SBASE && c < SBASE + SCOUNT) {
        uint32_t s = c - SBASE;
        out[0] = LBASE + s / NCOUNT;
        out[1] = VBASE + (s % NCOUNT) / TCOUNT;
        if (s % TCOUNT) { out[2] = TBASE + s % TCOUNT; return 3; }
        return 2;
    }
    if (c >= 0xC0 && depth < 8) {
        size_t lo = 0, hi = sd_uc_decomp_n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (c < sd_uc_decomp[mid][0]) hi = mid;
            else if (c > sd_uc_decomp[mid][0]) lo = mid + 1;
            else {
                size_t k = decompose(sd_uc_decomp[mid][1], out, depth + 1);
                if (sd_uc_decomp[mid][2]) k += decompose(sd_uc_decomp[mid][2], out + k, depth + 1);
                return k;
            }
        }
    }
    out[0] = c;
    return 1;
}

static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = sd_uc_compose_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = sd_uc_compose[mid];
        if (a < e[0] || (a == e[0] && b < e[1])) hi = mid;
        else if (a > e[0] || b > e[1]) lo = mid + 1;
        else return e[2];
    }
    return 0;
}

size_t sd_unicode_nfc(const uint32_t *in, size_t n, uint32_t *out)
{
    /* full canonical decomposition (at most 4 code points per input one in Unicode 14) */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += decompose(in[i], out + k, 0);
    /* canonical ordering: stable insertion sort of each run of non-starters */
    for (size_t i = 1; i < k; i++) {
        int ci = ccc(out[i]);
        if (!ci) continue;
        size_t j = i;
        uint32_t c = out[i];
        while (j > 0) {
            int cj = ccc(out[j - 1]);
            if (cj <= ci) break;
            out[j] = out[j - 1];
            j--;
        }
        out[j] = c;
    }
    /* canonical composition */
    size_t w = 0;
    long si = -1;
    int prev = 0;   /* ccc of the last code point kept after the starter */
    for (size_t i = 0; i < k; i++) {
        uint32_t c = out[i];
        int cc = ccc(c);
        if (si >= 0 && ((long)w - 1 == si || (prev != 0 && prev < cc))) {
            uint32_t m = compose(out[si], c);
            if (m) { out[si] = m; continue; }
        }
        if (cc == 0) si = (long)w;
        prev = cc;
        out[w++] = c;
    }
    return w;
}

/* ---------------------------------------------------------------------------------------------
 * One pass of the fixes over a segment */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} vec;

static int vput(vec *o, uint32_t c)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        uint32_t *p = realloc(o->v, cap * sizeof *p);
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        o->v = p;
        o->cap = cap;
    }
    o->v[o->n++] = c;
    return SD_OK;
}

static int is_alnum_ascii(uint32_t c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

static int is_hex(uint32_t c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static int entity_cmp(const void *key, const void *e)
{
    return strcmp(key, ((const sd_ftfy_entity *)e)->name);
}

/* "&#...;" (body = s[0..n), the part after "&#") as html.unescape decodes it; returns the
 * number of code points written to out (0..2), or -1 to keep the text unchanged. */
static int numeric_ref(const uint32_t *s, size_t n, uint32_t *out)
{
    size_t i = 0;
    int hex = 0;
    if (s[0] == 'x' || s[0] == 'X') { hex = 1; i = 1; }
    if (i >= n) return -1;
    uint64_t num = 0;
    for (; i < n; i++) {
        if (hex ? !is_hex(s[i]) : !(s[i] >= '0' && s[i] <= '9')) return -1;   /* partial match: kept */
        uint32_t d = s[i] <= '9' ? s[i] - '0' : (s[i] | 0x20) - 'a' + 10;
        num = num * (hex ? 16 : 10) + d;
        if (num > 0x10FFFFu) num = 0x110000u;   /* saturate: all such numbers give U+FFFD */
    }
    const sd_ftfy_map *m = map_find(sd_html_invalid_charrefs, sd_html_invalid_charrefs_n, (uint32_t)num);
    uint32_t c;
    if (m) {
        for (uint32_t k = 0; k < m->n; k++) {
            if (m->out[k] == ';') return -1;
            out[k] = m->out[k];
        }
        return (int)m->n;
    }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) c = 0xFFFD;
    else if (u32_in(sd_html_invalid_codepoints, sd_html_invalid_codepoints_n, (uint32_t)num)) return 0;
    else c = (uint32_t)num;
    if (c == ';') return -1;   /* ftfy keeps the reference when the result holds a ';' */
    out[0] = c;
    return 1;
}

static int unescape_html(const uint32_t *s, size_t n, vec *o)
{
    for (size_t i = 0; i < n;) {
        if (s[i] == '&') {
            size_t j = i + 1;
            int hash = j < n && s[j] == '#';
            if (hash) j++;
            size_t r = 0;
            while (j + r < n && r < 25 && is_alnum_ascii(s[j + r])) r++;
            if (r >= 1 && r <= 24 && j + r < n && s[j + r] == ';') {
                size_t end = j + r + 1;
                char key[32];
                for (size_t k = i; k < end; k++) key[k - i] = (char)s[k];
                key[end - i] = 0;
                const sd_ftfy_entity *e = bsearch(key, sd_ftfy_entities, sd_ftfy_entities_n, sizeof *e, entity_cmp);
                uint32_t rep[3];
                int nr = -1;
                if (e) {
                    for (uint32_t k = 0; k < e->n; k++) rep[k] = e->out[k];
                    nr = (int)e->n;
                } else if (hash) {
                    nr = numeric_ref(s + j, r, rep);
                }
                if (nr >= 0) {
                    for (int k = 0; k < nr; k++)
                        if (vput(o, rep[k])) return SD_ENOMEM;
                    i = end;
                    continue;
                }
            }
        }
        if (vput(o, s[i++])) return SD_ENOMEM;
    }
    return SD_OK;
}

/* The per-character fixes after fix_encoding, in ftfy's order, fused into one scan where the
 * order allows: c1 -> ligatures -> width -> quotes are one-to-few maps applied in sequence. */
static int char_fixes(const uint32_t *s, size_t n, vec *o)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            if (vput(o, s[i])) return SD_ENOMEM;
            continue;
        }
        uint32_t a[16];
        size_t na = 1;
        a[0] = s[i];
        if (a[0] >= 0x80 && a[0] <= 0x9F) {
            const sd_ftfy_map *m = map_find(sd_ftfy_c1, sd_ftfy_c1_n, a[0]);
            if (m) a[0] = m->out[0];
        }
        /* ligatures (their outputs are plain letters, never width or quote forms except U+02BC) */
        uint32_t b[16];
        size_t nb = 0;
        for (size_t k = 0; k < na; k++) {
            const sd_ftfy_map *m = map_find(sd_ftfy_ligatures, sd_ftfy_ligatures_n, a[k]);
            if (m) for (uint32_t q = 0; q < m->n; q++) b[nb++] = m->out[q];
            else b[nb++] = a[k];
        }
        na = 0;
        for (size_t k = 0; k < nb; k++) {
            uint32_t c = b[k];
            const sd_ftfy_map *m = (c == 0x3000 || (c >= 0xFF01 && c < 0xFFF0))
                                       ? map_find(sd_ftfy_width, sd_ftfy_width_n, c) : NULL;
            if (m) for (uint32_t q = 0; q < m->n; q++) a[na++] = m->out[q];
            else a[na++] = c;
        }
        for (size_t k = 0; k < na; k++) {
            uint32_t c = a[k];
            if (c >= 0x201C && c <= 0x201F) c = '"';
            else if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
            if (vput(o, c)) return SD_ENOMEM;
        }
    }
    return SD_OK;
}

static int line_breaks(const uint32_t *s, size_t n, vec *o)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c == '\r') {
            if (i + 1 < n && s[i + 1] == '\n') i++;
            c = '\n';
        } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
            c = '\n';
        }
        if (vput(o, c)) return SD_ENOMEM;
    }
    return SD_OK;
}

static int is_decimal(uint32_t c)
{
    if (c < 0x80) return c >= '0' && c <= '9';
    return sd_uc_in(sd_uc_decimal, sd_uc_decimal_n, c);
}

/* remove_terminal_escapes (ESC '[' (\d|;)* [a-zA-Z]) and remove_control_chars */
static int escapes_controls(const uint32_t *s, size_t n, vec *o)
{
    vec t = {0};
    for (size_t i = 0; i < n;) {
        if (s[i] == 0x1B && i + 1 < n && s[i + 1] == '[') {
            size_t j = i + 2;
            while (j < n && (s[j] == ';' || is_decimal(s[j]))) j++;
            if (j < n && s[j] < 0x80 && (s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z') { i = j + 1; continue; }
        }
        if (vput(&t, s[i++])) { free(t.v); return SD_ENOMEM; }
    }
    for (size_t i = 0; i < t.n; i++)
        if (!u32_in(sd_ftfy_control, sd_ftfy_control_n, t.v[i]) && vput(o, t.v[i])) { free(t.v); return SD_ENOMEM; }
    free(t.v);
    return SD_OK;
}

/* One round; *out gets a malloc'd array. */
static int fix_round(const uint32_t *s, size_t n, int html, uint32_t **out, size_t *on)
{
    vec a = {0}, b = {0};
    int rc = SD_OK;
    if (html) rc = unescape_html(s, n, &a);
    else for (size_t i = 0; i < n && !rc; i++) rc = vput(&a, s[i]);
    if (!rc && a.n) {
        rc = sd_ftfy_fix_encoding(&a.v, &a.n);
        a.cap = a.n;
    }
    if (!rc) rc = char_fixes(a.v, a.n, &b);
    a.n = 0;
    if (!rc) rc = line_breaks(b.v, b.n, &a);
    b.n = 0;
    if (!rc) rc = escapes_controls(a.v, a.n, &b);
    if (!rc) {
        int need = 0;
        for (size_t i = 0; i < b.n && !need; i++) need = b.v[i] >= 0xC0;   /* below: NFC is the identity */
        if (need) {
            uint32_t *nf = malloc((4 * b.n + 16) * sizeof *nf);
            if (!nf) rc = sd_err(SD_ENOMEM, "out of memory");
            else {
                size_t k = sd_unicode_nfc(b.v, b.n, nf);
                free(b.v);
                b.v = nf;
                b.n = k;
            }
        }
    }
    free(a.v);
    if (rc) { free(b.v); return rc; }
    *out = b.v;
    *on = b.n;
    return SD_OK;
}

/* 1 if some fix could change this segment (otherwise a round is the identity). */
static int needs_fixing(const uint32_t *s, size_t n, int html)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c >= 0x7F || (c < 0x20 && c != '\t' && c != '\n' && c != '\f') || (c == '&' && html)) return 1;
    }
    return 0;
}

int sd_ftfy_fix_cps(uint32_t **cps, size_t *n)
{
    const uint32_t *s = *cps;
    vec o = {0};
    int html = 1;
    for (size_t pos = 0; pos < *n;) {
        size_t end = pos;
        while (end < *n && s[end] != '\n' && end - pos < MAX_SEGMENT) end++;
        if (end < *n && s[end] == '\n' && end - pos < MAX_SEGMENT) end++;
        for (size_t i = pos; i < end && html; i++)
            if (s[i] == '<') html = 0;
        if (!needs_fixing(s + pos, end - pos, html)) {
            for (size_t i = pos; i < end; i++)
                if (vput(&o, s[i])) { free(o.v); return SD_ENOMEM; }
            pos = end;
            continue;
        }
        uint32_t *cur = malloc((end - pos + 1) * sizeof *cur);
        if (!cur) { free(o.v); return sd_err(SD_ENOMEM, "out of memory"); }
        memcpy(cur, s + pos, (end - pos) * sizeof *cur);
        size_t cn = end - pos;
        for (int round = 0; round < MAX_ROUNDS; round++) {
            uint32_t *nx;
            size_t nn;
            int rc = fix_round(cur, cn, html, &nx, &nn);
            if (rc) { free(cur); free(o.v); return rc; }
            int same = nn == cn && (!cn || !memcmp(nx, cur, cn * sizeof *cur));
            free(cur);
            cur = nx;
            cn = nn;
            if (same) break;
        }
        for (size_t i = 0; i < cn; i++)
            if (vput(&o, cur[i])) { free(cur); free(o.v); return SD_ENOMEM; }
        free(cur);
        pos = end;
    }
    free(*cps);
    *cps = o.v;
    *n = o.n;
    return SD_OK;
}

int sd_ftfy_fix_text(const char *text, size_t len, char **out)
{
    *out = NULL;
    if (len > (SIZE_MAX / sizeof(uint32_t)) / 8) return sd_err(SD_ERANGE, "text too long");
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    if (!cp) return sd_err(SD_ENOMEM, "out of memory");
    size_t n = sd_utf8_decode((const unsigned char *)text, len, cp);
    int rc = sd_ftfy_fix_cps(&cp, &n);
    if (rc) { free(cp); return rc; }
    char *s = malloc(4 * n + 1);
    if (!s) { free(cp); return sd_err(SD_ENOMEM, "out of memory"); }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += sd_utf8_put(cp[i], (unsigned char *)s + k);
    s[k] = 0;
    free(cp);
    *out = s;
    return SD_OK;
}
