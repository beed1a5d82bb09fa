/* Caption processing (see caption.h). */
#include "text/caption.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/strbuf.h"

void sd_caption_opts_default(sd_caption_opts *o)
{
    memset(o, 0, sizeof *o);
    o->separator = ",";
    o->token_warmup_min = 1;
}

/* ---- small string helpers ---------------------------------------------------------------------- */

static void sb_str(sd_strbuf *b, const char *s) { sd_strbuf_add(b, s, strlen(s)); }

/* Length of a Python str.isspace() character at s (UTF-8), 0 if none. */
static size_t space_len(const unsigned char *s, size_t n)
{
    if (!n) return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (c == 0xe1 && n >= 3 && s[1] == 0x9a && s[2] == 0x80) return 3;            /* U+1680 */
    if (c == 0xe2 && n >= 3 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8a) || s[2] == 0xa8 ||
                                                s[2] == 0xa9 || s[2] == 0xaf))
        return 3;                                                                    /* U+2000-200A, 2028, 2029, 202F */
    if (c == 0xe2 && n >= 3 && s[1] == 0x81 && s[2] == 0x9f) return 3;              /* U+205F */
    if (c == 0xe3 && n >= 3 && s[1] == 0x80 && s[2] == 0x80) return 3;              /* U+3000 */
    return 0;
}

/* Python strip(): [*start, *start + return) of s[0..n). */
static size_t py_strip(const char *s, size_t n, size_t *start)
{
    size_t a = 0, b = n, k;
    while (a < b && (k = space_len((const unsigned char *)s + a, b - a))) a += k;
    /* from the right: step back over whole characters */
    for (;;) {
        if (a >= b) break;
        size_t q = b - 1;
        while (q > a && ((unsigned char)s[q] & 0xc0) == 0x80) q--;
        if (space_len((const unsigned char *)s + q, b - q) == b - q) b = q;
        else break;
    }
    *start = a;
    return b - a;
}

typedef struct strv {
    char **v;
    size_t n, cap;
    int oom;
} strv;

static void sv_push(strv *a, const char *s, size_t n)
{
    if (a->oom) return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        char **q = realloc(a->v, cap * sizeof *q);
        if (!q) {
            a->oom = 1;
            return;
        }
        a->v = q;
        a->cap = cap;
    }
    char *c = malloc(n + 1);
    if (!c) {
        a->oom = 1;
        return;
    }
    memcpy(c, s, n);
    c[n] = 0;
    a->v[a->n++] = c;
}

static void sv_free(strv *a)
{
    for (size_t i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* s[0..n).split(sep) with each piece stripped; empty pieces dropped when drop_empty. */
static void split_strip(const char *s, size_t n, const char *sep, int drop_empty, strv *out)
{
    size_t L = strlen(sep);
    size_t i = 0;
    for (;;) {
        const char *hit = NULL;
        if (L) {
            for (size_t j = i; j + L <= n; j++)
                if (!memcmp(s + j, sep, L)) {
                    hit = s + j;
                    break;
                }
        }
        size_t end = hit ? (size_t)(hit - s) : n, st;
        size_t len = py_strip(s + i, end - i, &st);
        if (len || !drop_empty) sv_push(out, s + i + st, len);
        if (!hit) break;
        i = end + L;
    }
}

static const char *find_sub(const char *s, size_t n, const char *sub)
{
    size_t L = strlen(sub);
    if (!L) return NULL;
    for (size_t j = 0; j + L <= n; j++)
        if (!memcmp(s + j, sub, L)) return s + j;
    return NULL;
}

/* Python str.replace into a new buffer. */
static char *replace_all(const char *s, const char *old, const char *rep)
{
    sd_strbuf b = { 0 };
    size_t L = strlen(old);
    const char *p = s;
    if (!L) {
        sb_str(&b, s);
    } else {
        const char *q;
        while ((q = strstr(p, old))) {
            sd_strbuf_add(&b, p, (size_t)(q - p));
            sb_str(&b, rep);
            p = q + L;
        }
        sb_str(&b, p);
    }
    if (!b.p && !b.oom) sd_strbuf_add(&b, "", 0);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* {a|b|c} choices with {{ }} protection (enable_wildcard). */
static char *wildcards(const char *s, sd_rng *rng)
{
    /* Work on a copy where "{{" / "}}" are replaced by the bytes \x01 / \x02 (cannot occur in a
     * caption: the reference picks placeholder characters absent from it). */
    char *a = replace_all(s, "{{", "\x01");
    if (!a) return NULL;
    char *c = replace_all(a, "}}", "\x02");
    free(a);
    if (!c) return NULL;
    sd_strbuf b = { 0 };
    sd_strbuf_add(&b, "", 0);
    const char *p = c;
    while (*p) {
        const char *close;
        if (*p == '{' && (close = strchr(p + 1, '}')) && close > p + 1) {
            /* regex {([^}]+)}: the shortest run up to the first '}' (a '{' inside is allowed) */
            const char *body = p + 1;
            size_t blen = (size_t)(close - body);
            size_t nalt = 1;
            for (size_t i = 0; i < blen; i++) nalt += body[i] == '|';
            uint64_t pick = sd_rng_next_below(rng, nalt);
            const char *st = body;
            for (size_t i = 0, k = 0; i <= blen; i++) {
                if (i == blen || body[i] == '|') {
                    if (k == pick) {
                        sd_strbuf_add(&b, st, (size_t)(body + i - st));
                        break;
                    }
                    k++;
                    st = body + i + 1;
                }
            }
            p = close + 1;
        } else {
            sd_strbuf_add(&b, p, 1);
            p++;
        }
    }
    free(c);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    char *r1 = replace_all(b.p, "\x01", "{");
    free(b.p);
    if (!r1) return NULL;
    char *r2 = replace_all(r1, "\x02", "}");
    free(r1);
    return r2;
}

int sd_caption_process(const sd_caption_opts *o, const char *caption, int64_t epoch1, int64_t step,
                       sd_rng *rng, char **out)
{
    *out = NULL;
    const char *sep = o->separator && *o->separator ? o->separator : ",";
    sd_strbuf c = { 0 };
    if (o->prefix) {
        sb_str(&c, o->prefix);
        sb_str(&c, " ");
    }
    sb_str(&c, caption ? caption : "");
    if (o->suffix) {
        sb_str(&c, " ");
        sb_str(&c, o->suffix);
    }
    if (!c.p && !c.oom) sd_strbuf_add(&c, "", 0);
    if (c.oom) goto oom;

    /* 2. dropout: the draw happens only when the rate is set, as in the reference */
    int drop = 0;
    if (o->dropout_rate > 0 && sd_rng_next_uniform(rng) < o->dropout_rate) drop = 1;
    if (o->dropout_every_n_epochs > 0 && epoch1 % o->dropout_every_n_epochs == 0) drop = 1;
    if (drop) {
        c.p[0] = 0;
        *out = c.p;
        return SD_OK;
    }

    /* 3. lines / wildcards */
    if (o->enable_wildcard) {
        if (strchr(c.p, '\n')) {
            strv lines = { 0 };
            split_strip(c.p, c.n, "\n", 0, &lines);
            if (lines.oom) {
                sv_free(&lines);
                goto oom;
            }
            /* random.choice over caption.split("\n") (unstripped lines in the reference; ours were
             * made of stripped non-blank lines already by the sidecar reader) */
            uint64_t k = sd_rng_next_below(rng, lines.n);
            char *line = strdup(lines.v[k]);
            sv_free(&lines);
            if (!line) goto oom;
            free(c.p);
            c.p = line;
            c.n = strlen(line);
        }
        char *w = wildcards(c.p, rng);
        if (!w) goto oom;
        free(c.p);
        c.p = w;
        c.n = strlen(w);
    } else {
        char *nl = strchr(c.p, '\n');
        if (nl) {
            *nl = 0;
            c.n = (size_t)(nl - c.p);
        }
    }

    /* 4. tags */
    int warm = o->token_warmup_step > 0;
    if (o->shuffle || warm || o->tag_dropout_rate > 0) {
        strv fixed = { 0 }, flex = { 0 }, suffix = { 0 };
        const char *kts = o->keep_tokens_separator;
        const char *hit = kts && *kts ? find_sub(c.p, c.n, kts) : NULL;
        if (hit) {
            size_t L = strlen(kts);
            split_strip(c.p, (size_t)(hit - c.p), sep, 1, &fixed);
            const char *rest = hit + L;
            size_t rn = c.n - (size_t)(rest - c.p);
            const char *hit2 = find_sub(rest, rn, kts);
            if (hit2) {
                split_strip(rest, (size_t)(hit2 - rest), sep, 1, &flex);
                const char *r2 = hit2 + L;
                split_strip(r2, c.n - (size_t)(r2 - c.p), sep, 1, &suffix);
            } else {
                split_strip(rest, rn, sep, 1, &flex);
            }
        } else {
            size_t st, len = py_strip(c.p, c.n, &st);
            strv all = { 0 };
            split_strip(c.p + st, len, sep, 0, &all);
            size_t k = o->keep_tokens > 0 ? (size_t)o->keep_tokens : 0;
            for (size_t i = 0; i < all.n; i++) {
                if (i < k) sv_push(&fixed, all.v[i], strlen(all.v[i]));
                else sv_push(&flex, all.v[i], strlen(all.v[i]));
            }
            if (all.oom) fixed.oom = 1;
            sv_free(&all);
        }
        if (fixed.oom || flex.oom || suffix.oom) {
            sv_free(&fixed), sv_free(&flex), sv_free(&suffix);
            goto oom;
        }
        /* token warm-up: keep a prefix of flex */
        if (warm && step < o->token_warmup_step) {
            int64_t m = o->token_warmup_min;
            /* math.floor(step * ((len(flex) - min) / warmup_step)) + min; slice [:keep] */
            double fk = (double)step * ((double)((int64_t)flex.n - m) / (double)o->token_warmup_step);
            int64_t fl = (int64_t)fk;
            if ((double)fl > fk) fl--;
            int64_t keep = fl + m;
            if (keep < 0) keep = (int64_t)flex.n + keep < 0 ? 0 : (int64_t)flex.n + keep;
            if (keep < (int64_t)flex.n) {
                for (size_t i = (size_t)keep; i < flex.n; i++) free(flex.v[i]);
                flex.n = (size_t)keep;
            }
        }
        if (o->shuffle && flex.n > 1) {
            /* random.shuffle: Fisher-Yates from the end */
            for (size_t i = flex.n - 1; i > 0; i--) {
                size_t j = (size_t)sd_rng_next_below(rng, i + 1);
                char *t = flex.v[i];
                flex.v[i] = flex.v[j];
                flex.v[j] = t;
            }
        }
        if (o->tag_dropout_rate > 0) {
            size_t w = 0;
            for (size_t i = 0; i < flex.n; i++) {
                if (sd_rng_next_uniform(rng) >= o->tag_dropout_rate) flex.v[w++] = flex.v[i];
                else free(flex.v[i]);
            }
            flex.n = w;
        }
        sd_strbuf j = { 0 };
        sd_strbuf_add(&j, "", 0);
        size_t cnt = 0;
        strv *parts[3] = { &fixed, &flex, &suffix };
        for (int pi = 0; pi < 3; pi++)
            for (size_t i = 0; i < parts[pi]->n; i++) {
                if (cnt++) sb_str(&j, ", ");
                sb_str(&j, parts[pi]->v[i]);
            }
        sv_free(&fixed), sv_free(&flex), sv_free(&suffix);
        if (j.oom) {
            free(j.p);
            goto oom;
        }
        free(c.p);
        c = j;
    }

    /* 5. secondary separator */
    if (o->secondary_separator && *o->secondary_separator) {
        char *r = replace_all(c.p, o->secondary_separator, sep);
        if (!r) goto oom;
        free(c.p);
        c.p = r;
    }
    *out = c.p;
    return SD_OK;
oom:
    free(c.p);
    return sd_err(SD_ENOMEM, "out of memory processing a caption");
}

/* ---- weighted captions ---------------------------------------------------------------------------- */

typedef struct wlist {
    sd_weighted_piece *v;
    double *w;
    int n, cap;
    int oom;
} wlist;

static void wl_push(wlist *l, const char *s, size_t n, double w)
{
    if (l->oom) return;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        sd_weighted_piece *q = realloc(l->v, (size_t)cap * sizeof *q);
        if (!q) {
            l->oom = 1;
            return;
        }
        l->v = q;
        double *qw = realloc(l->w, (size_t)cap * sizeof *qw);
        if (!qw) {
            l->oom = 1;
            return;
        }
        l->w = qw;
        l->cap = cap;
    }
    char *t = malloc(n + 1);
    if (!t) {
        l->oom = 1;
        return;
    }
    memcpy(t, s, n);
    t[n] = 0;
    l->v[l->n].text = t;
    l->w[l->n] = w;
    l->n++;
}

static void mul_range(wlist *l, int start, double m)
{
    for (int p = start; p < l->n; p++) l->w[p] *= m;
}

int sd_weighted_parse(const char *text, sd_weighted_piece **pieces, int *n)
{
    *pieces = NULL;
    *n = 0;
    wlist l = { 0 };
    int *round = NULL, *square = NULL;
    int nr = 0, ns = 0;
    size_t tl = strlen(text);
    round = malloc((tl + 1) * sizeof *round);
    square = malloc((tl + 1) * sizeof *square);
    if (!round || !square) {
        free(round), free(square);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    const double rm = 1.1, sm = 1 / 1.1;
    const char *p = text;
    while (*p) {
        if (p[0] == '\\' && p[1] && strchr("()[]\\", p[1])) {
            wl_push(&l, p + 1, 1, 1.0);
            p += 2;
        } else if (*p == '\\') {
            /* lone backslash: text[1:] is "" */
            wl_push(&l, "", 0, 1.0);
            p++;
        } else if (*p == '(') {
            round[nr++] = l.n;
            p++;
        } else if (*p == '[') {
            square[ns++] = l.n;
            p++;
        } else if (*p == ':') {
            /* :([+-]?[.\d]+)\) */
            const char *q = p + 1;
            if (*q == '+' || *q == '-') q++;
            const char *d0 = q;
            while (*q == '.' || (*q >= '0' && *q <= '9')) q++;
            if (q > d0 && *q == ')') {
                char buf[64];
                size_t L = (size_t)(q - (p + 1));
                double w = 0;
                int ok = 0;
                if (L < sizeof buf) {
                    memcpy(buf, p + 1, L);
                    buf[L] = 0;
                    char *end;
                    w = strtod(buf, &end);
                    ok = *end == 0;
                }
                if (ok && nr > 0) {
                    mul_range(&l, round[--nr], w);
                } else {
                    wl_push(&l, p, (size_t)(q + 1 - p), 1.0);
                }
                p = q + 1;
            } else {
                wl_push(&l, p, 1, 1.0);
                p++;
            }
        } else if (*p == ')' && nr > 0) {
            mul_range(&l, round[--nr], rm);
            p++;
        } else if (*p == ']' && ns > 0) {
            mul_range(&l, square[--ns], sm);
            p++;
        } else if (*p == ')' || *p == ']') {
            wl_push(&l, p, 1, 1.0);
            p++;
        } else {
            const char *q = p;
            while (*q && !strchr("\\()[]:", *q)) q++;
            wl_push(&l, p, (size_t)(q - p), 1.0);
            p = q;
        }
    }
    for (int i = 0; i < nr; i++) mul_range(&l, round[i], rm);
    for (int i = 0; i < ns; i++) mul_range(&l, square[i], sm);
    free(round);
    free(square);
    if (!l.oom && l.n == 0) wl_push(&l, "", 0, 1.0);
    /* merge runs of equal weight */
    for (int i = 0; !l.oom && i + 1 < l.n;) {
        if (l.w[i] == l.w[i + 1]) {
            size_t a = strlen(l.v[i].text), b = strlen(l.v[i + 1].text);
            char *t = realloc(l.v[i].text, a + b + 1);
            if (!t) {
                l.oom = 1;
                break;
            }
            memcpy(t + a, l.v[i + 1].text, b + 1);
            l.v[i].text = t;
            free(l.v[i + 1].text);
            memmove(l.v + i + 1, l.v + i + 2, (size_t)(l.n - i - 2) * sizeof *l.v);
            memmove(l.w + i + 1, l.w + i + 2, (size_t)(l.n - i - 2) * sizeof *l.w);
            l.n--;
        } else {
            i++;
        }
    }
    if (l.oom) {
        for (int i = 0; i < l.n; i++) free(l.v[i].text);
        free(l.v);
        free(l.w);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < l.n; i++) l.v[i].weight = (float)l.w[i];
    free(l.w);
    *pieces = l.v;
    *n = l.n;
    return SD_OK;
}

void sd_weighted_free(sd_weighted_piece *pieces, int n)
{
    for (int i = 0; i < n; i++) free(pieces[i].text);
    free(pieces);
}
