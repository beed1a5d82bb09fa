/* Python-compatible formatting and literal parsing (see pyfmt.h). */
#include "train/pyfmt.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

char *sd_py_float(double v, char *out, size_t n)
{
    if (isnan(v)) { snprintf(out, n, "nan"); return out; }
    if (isinf(v)) { snprintf(out, n, v < 0 ? "-inf" : "inf"); return out; }
    char e[40];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    /* e = [-]d[.ddd]e[+-]XX */
    const char *s = e;
    int neg = 0;
    if (*s == '-') { neg = 1; s++; }
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (isdigit((unsigned char)*s)) digits[nd++] = *s;
    int exp10 = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int decpt = exp10 + 1;          /* value = 0.digits × 10^decpt */
    char buf[64];
    size_t k = 0;
    if (neg) buf[k++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            buf[k++] = '0'; buf[k++] = '.';
            for (int i = 0; i < -decpt; i++) buf[k++] = '0';
            for (int i = 0; i < nd; i++) buf[k++] = digits[i];
        } else {
            for (int i = 0; i < decpt; i++) buf[k++] = i < nd ? digits[i] : '0';
            buf[k++] = '.';
            if (nd > decpt) for (int i = decpt; i < nd; i++) buf[k++] = digits[i];
            else buf[k++] = '0';
        }
        buf[k] = 0;
    } else {
        buf[k++] = digits[0];
        if (nd > 1) {
            buf[k++] = '.';
            for (int i = 1; i < nd; i++) buf[k++] = digits[i];
        }
        int x = decpt - 1;
        snprintf(buf + k, sizeof buf - k, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    }
    snprintf(out, n, "%s", buf);
    return out;
}

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

/* One scalar at *ps: number, True/False/None. Returns 0 or -1. */
static int parse_scalar(const char **ps, sd_py_kind *kind, double *f, int64_t *iv)
{
    const char *s = skip_ws(*ps);
    static const struct { const char *w; sd_py_kind k; int v; } words[] = {
        { "True", SD_PY_BOOL, 1 }, { "False", SD_PY_BOOL, 0 }, { "None", SD_PY_NONE, 0 } };
    for (size_t i = 0; i < 3; i++) {
        size_t L = strlen(words[i].w);
        if (!strncmp(s, words[i].w, L) && !isalnum((unsigned char)s[L]) && s[L] != '_') {
            *kind = words[i].k; *iv = words[i].v; *f = words[i].v;
            *ps = s + L;
            return 0;
        }
    }
    const char *t = s;
    int sign = 1;
    while (*t == '-' || *t == '+') { if (*t == '-') sign = -sign; t = skip_ws(t + 1); }
    if (!isdigit((unsigned char)*t) && !(*t == '.' && isdigit((unsigned char)t[1]))) return -1;
    const char *u = t;
    int isfloat = 0;
    while (isdigit((unsigned char)*u)) u++;
    if (*u == '.') { isfloat = 1; u++; while (isdigit((unsigned char)*u)) u++; }
    if (*u == 'e' || *u == 'E') {
        const char *w = u + 1;
        if (*w == '+' || *w == '-') w++;
        if (!isdigit((unsigned char)*w)) return -1;
        while (isdigit((unsigned char)*w)) w++;
        u = w;
        isfloat = 1;
    }
    if (isalpha((unsigned char)*u) || *u == '_' || *u == '.') return -1;
    char num[64];
    size_t L = (size_t)(u - t);
    if (L >= sizeof num) return -1;
    memcpy(num, t, L);
    num[L] = 0;
    if (!isfloat) {
        if (L > 1 && num[0] == '0') {   /* "010" is a SyntaxError; "00" is 0 */
            for (size_t i = 0; i < L; i++) if (num[i] != '0') return -1;
        }
        *kind = SD_PY_INT;
        *iv = sign * strtoll(num, NULL, 10);
        *f = (double)*iv;
    } else {
        *kind = SD_PY_FLOAT;
        *f = sign * strtod(num, NULL);
    }
    *ps = u;
    return 0;
}

static void scalar_repr(sd_py_kind k, double f, int64_t iv, char *out, size_t n)
{
    switch (k) {
    case SD_PY_NONE: snprintf(out, n, "None"); break;
    case SD_PY_BOOL: snprintf(out, n, "%s", sd_py_bool((int)iv)); break;
    case SD_PY_INT: snprintf(out, n, "%lld", (long long)iv); break;
    default: sd_py_float(f, out, n); break;
    }
}

int sd_py_literal(const char *text, sd_py_value *v)
{
    memset(v, 0, sizeof *v);
    const char *s = skip_ws(text);
    size_t tl = strlen(s);
    while (tl && (s[tl - 1] == ' ' || s[tl - 1] == '\t')) tl--;
    if (tl == 0) goto bad;
    if (s[0] == '\'' || s[0] == '"') {
        char q = s[0];
        size_t k = 0;
        size_t i;
        for (i = 1; i < tl && s[i] != q; i++) {
            char c = s[i];
            if (c == '\\' && i + 1 < tl) {
                c = s[++i];
                if (c == 'n') c = '\n'; else if (c == 't') c = '\t';
            }
            if (k + 1 >= sizeof v->s) goto bad;
            v->s[k++] = c;
        }
        if (i != tl - 1) goto bad;
        v->s[k] = 0;
        v->kind = SD_PY_STR;
        snprintf(v->repr, sizeof v->repr, "%s", v->s);
        return SD_OK;
    }
    char open = 0, close = 0;
    const char *p = s, *end = s + tl;
    if (*p == '(' || *p == '[') {
        open = *p;
        close = open == '(' ? ')' : ']';
        if (end[-1] != close) goto bad;
        p++;
        end--;
    }
    /* items separated by commas */
    int n = 0, trailing = 0;
    sd_py_kind kinds[SD_PY_MAX_ITEMS];
    double fs[SD_PY_MAX_ITEMS];
    int64_t is[SD_PY_MAX_ITEMS];
    p = skip_ws(p);
    while (p < end) {
        if (n == SD_PY_MAX_ITEMS) goto bad;
        const char *q = p;
        if (parse_scalar(&q, &kinds[n], &fs[n], &is[n])) goto bad;
        if (q > end) goto bad;
        n++;
        q = skip_ws(q);
        trailing = 0;
        if (q < end) {
            if (*q != ',') goto bad;
            q = skip_ws(q + 1);
            trailing = 1;
        }
        p = q;
    }
    if (!open && n == 1 && !trailing) {
        v->kind = kinds[0]; v->f = fs[0]; v->i = is[0];
        scalar_repr(v->kind, v->f, v->i, v->repr, sizeof v->repr);
        return SD_OK;
    }
    if (!open && n == 0) goto bad;
    if (open == '(' && n == 1 && !trailing) {   /* (x) is just x */
        v->kind = kinds[0]; v->f = fs[0]; v->i = is[0];
        scalar_repr(v->kind, v->f, v->i, v->repr, sizeof v->repr);
        return SD_OK;
    }
    v->kind = open == '[' ? SD_PY_LIST : SD_PY_TUPLE;
    v->nitems = n;
    size_t k = 0;
    v->repr[k++] = v->kind == SD_PY_LIST ? '[' : '(';
    for (int i = 0; i < n; i++) {
        v->item_kind[i] = kinds[i];
        v->items[i] = fs[i];
        char r[40];
        scalar_repr(kinds[i], fs[i], is[i], r, sizeof r);
        int w = snprintf(v->repr + k, sizeof v->repr - k, "%s%s", i ? ", " : "", r);
        if (w < 0 || (size_t)w >= sizeof v->repr - k) goto bad;
        k += (size_t)w;
    }
    if (v->kind == SD_PY_TUPLE && n == 1) v->repr[k++] = ',';
    if (k + 2 > sizeof v->repr) goto bad;
    v->repr[k++] = v->kind == SD_PY_LIST ? ']' : ')';
    v->repr[k] = 0;
    return SD_OK;
bad:
    return sd_err(SD_EUSAGE, "`%s`: malformed literal (numbers, True/False/None, quoted strings or "
                  "comma lists of numbers)", text);
}

int sd_py_split_kv(const char *item, char *key, size_t nkey, const char **value)
{
    const char *eq = strchr(item, '=');
    if (!eq || strchr(eq + 1, '=')) return sd_err(SD_EUSAGE, "`%s`: expected key=value", item);
    size_t L = (size_t)(eq - item);
    if (L == 0 || L >= nkey) return sd_err(SD_EUSAGE, "`%s`: expected key=value", item);
    memcpy(key, item, L);
    key[L] = 0;
    *value = eq + 1;
    return SD_OK;
}

int sd_py_kwargs_parse(sd_py_kwargs *kw, const char *const *items, int n, const char *what)
{
    kw->n = 0;
    for (int i = 0; i < n; i++) {
        char key[64];
        const char *val;
        int rc = sd_py_split_kv(items[i], key, sizeof key, &val);
        if (rc) return sd_err_prefix(rc, "%s", what);
        int slot = kw->n;
        for (int j = 0; j < kw->n; j++)
            if (!strcmp(kw->key[j], key)) slot = j;
        if (slot == kw->n) {
            if (kw->n == SD_PY_MAX_KWARGS) return sd_err(SD_EUSAGE, "%s: too many items", what);
            kw->n++;
        }
        snprintf(kw->key[slot], sizeof kw->key[slot], "%s", key);
        kw->val[slot] = val;
    }
    return SD_OK;
}
