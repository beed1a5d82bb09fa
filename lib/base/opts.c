/* Option tables: parsing, range checks, config values, --help. See opts.h. */
#include "base/opts.h"
#include "base/error.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef SD_VERSION
#define SD_VERSION "unknown"
#endif

#define NAME_MAX_LEN 128
#define HELP_WIDTH 79
#define HELP_COL 30

/* ---------------------------------------------------------------- memory owned by the sd_opts */

static void *arena_alloc(sd_opts *o, size_t n)
{
    if (o->nmem == o->capmem) {
        int cap = o->capmem ? o->capmem * 2 : 32;
        void **m = realloc(o->mem, (size_t)cap * sizeof *m);
        if (!m) return NULL;
        o->mem = m;
        o->capmem = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (p) o->mem[o->nmem++] = p;
    return p;
}

static char *arena_strndup(sd_opts *o, const char *s, size_t n)
{
    char *p = arena_alloc(o, n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

static char *arena_strdup(sd_opts *o, const char *s) { return arena_strndup(o, s, strlen(s)); }

/* ---------------------------------------------------------------- names */

/* Canonical form: '-' → '_'. Returns 0 if too long. */
static int norm_name(const char *s, size_t n, char *out)
{
    if (n >= NAME_MAX_LEN) return 0;
    for (size_t i = 0; i < n; i++) out[i] = s[i] == '-' ? '_' : s[i];
    out[n] = 0;
    return 1;
}

static int find_idx(const sd_opts *o, const char *name, size_t len)
{
    char nm[NAME_MAX_LEN];
    if (!norm_name(name, len, nm)) return -1;
    for (int i = 0; i < o->n; i++) {
        const sd_opt *p = o->all[i];
        if (!strcmp(p->name, nm) || (p->alias && !strcmp(p->alias, nm))) return i;
    }
    return -1;
}

static int is_builtin(const sd_opts *o, int i) { return i >= o->n - 4; }

/* Builtins that are not active are invisible. */
static int active(const sd_opts *o, int i)
{
    if (!is_builtin(o, i)) return 1;
    const sd_opt *p = o->all[i];
    if (p->dest == &o->config_file || p->dest == &o->output_config) return (o->flags & SD_OPTS_CONFIG) != 0;
    return 1;
}

static int lookup(const sd_opts *o, const char *name, size_t len)
{
    int i = find_idx(o, name, len);
    return i >= 0 && active(o, i) ? i : -1;
}

/* Optimal string alignment distance (three rolling rows). */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la >= NAME_MAX_LEN || lb >= NAME_MAX_LEN) return 1000;
    int rows[3][NAME_MAX_LEN + 1];
    int *pp = rows[0], *pr = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++) pr[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int c = a[i - 1] != b[j - 1];
            int v = pr[j] + 1;
            if (cur[j - 1] + 1 < v) v = cur[j - 1] + 1;
            if (pr[j - 1] + c < v) v = pr[j - 1] + c;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < v)
                v = pp[j - 2] + 1;
            cur[j] = v;
        }
        int *t = pp;
        pp = pr;
        pr = cur;
        cur = t;
    }
    return pr[lb];
}

/* Closest option name to `name` (already normalised), or NULL. */
static const char *suggest(const sd_opts *o, const char *name)
{
    size_t len = strlen(name);
    int best = -1, bestd = 1000, nprefix = 0, prefix_i = -1;
    for (int i = 0; i < o->n; i++) {
        if (!active(o, i) || (o->all[i]->flags & SD_OPTF_HIDDEN)) continue;
        const char *cand = o->all[i]->name;
        if (len >= 3 && !strncmp(cand, name, len)) { nprefix++; prefix_i = i; }
        int d = edit_distance(name, cand);
        if (d < bestd) { bestd = d; best = i; }
    }
    int limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    if (best >= 0 && bestd <= limit) return o->all[best]->name;
    if (nprefix == 1) return o->all[prefix_i]->name;
    return NULL;
}

/* ---------------------------------------------------------------- text → value */

typedef struct val {
    int64_t i;
    double d;
    const char *s;
    int n;                 /* list */
    const char **ls;
    int64_t *li;
    double *ld;
} val;

static int is_list(sd_opt_type t) { return t == SD_OPT_STRINGS || t == SD_OPT_INTS || t == SD_OPT_DOUBLES; }

static int parse_bool(const char *s, int *b)
{
    static const char *yes[] = { "1", "true", "yes", "on" }, *no[] = { "0", "false", "no", "off" };
    for (int k = 0; k < 4; k++) {
        if (!strcasecmp(s, yes[k])) { *b = 1; return SD_OK; }
        if (!strcasecmp(s, no[k])) { *b = 0; return SD_OK; }
    }
    return sd_err(SD_EUSAGE, "invalid boolean '%s' (use true or false)", s);
}

static int parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return sd_err(SD_EUSAGE, "invalid integer '%s'", s);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end) return sd_err(SD_EUSAGE, "invalid integer '%s'", s);
    if (errno == ERANGE || v < lo || v > hi)
        return sd_err(SD_EUSAGE, "value %s is out of range [%lld, %lld]", s, (long long)lo, (long long)hi);
    *out = v;
    return SD_OK;
}

static int parse_num(const char *s, int is_float, double *out)
{
    const char *p = s;
    while (*p == '+' || *p == '-') p++;
    /* strtod accepts leading space and hex; the reference (Python float) does not take hex */
    if (!*s || isspace((unsigned char)*s) || (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')))
        return sd_err(SD_EUSAGE, "invalid number '%s'", s);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end) return sd_err(SD_EUSAGE, "invalid number '%s'", s);
    int literal_inf = isinf(v) && errno != ERANGE;
    if ((errno == ERANGE && isinf(v)) || (is_float && !literal_inf && isfinite(v) && fabs(v) > FLT_MAX))
        return sd_err(SD_EUSAGE, "value %s is out of range for a %s", s, is_float ? "float" : "double");
    *out = v;
    return SD_OK;
}

static void fmt_bound(double v, char *buf, size_t n)
{
    snprintf(buf, n, "%.10g", v);
}

/* "[1, 4096]", "(0, 1]", ">= 0", "> 0", "<= 1"; empty when unbounded. */
static void range_text(const sd_opt *p, char *buf, size_t n)
{
    char a[40], b[40];
    fmt_bound(p->min, a, sizeof a);
    fmt_bound(p->max, b, sizeof b);
    int lo = p->bounds & SD_OPT_HAS_MIN, hi = p->bounds & SD_OPT_HAS_MAX;
    if (lo && hi)
        snprintf(buf, n, "%c%s, %s%c", p->bounds & SD_OPT_MIN_EXCL ? '(' : '[', a, b,
                 p->bounds & SD_OPT_MAX_EXCL ? ')' : ']');
    else if (lo)
        snprintf(buf, n, "%s %s", p->bounds & SD_OPT_MIN_EXCL ? ">" : ">=", a);
    else if (hi)
        snprintf(buf, n, "%s %s", p->bounds & SD_OPT_MAX_EXCL ? "<" : "<=", b);
    else
        buf[0] = 0;
}

static int check_range(const sd_opt *p, double v, const char *text)
{
    if (!p->bounds) return SD_OK;
    int ok = !isnan(v);
    if (ok && (p->bounds & SD_OPT_HAS_MIN)) ok = p->bounds & SD_OPT_MIN_EXCL ? v > p->min : v >= p->min;
    if (ok && (p->bounds & SD_OPT_HAS_MAX)) ok = p->bounds & SD_OPT_MAX_EXCL ? v < p->max : v <= p->max;
    if (ok) return SD_OK;
    char r[96];
    range_text(p, r, sizeof r);
    if (r[0] == '[' || r[0] == '(') return sd_err(SD_EUSAGE, "value %s is out of range %s", text, r);
    return sd_err(SD_EUSAGE, "value %s is out of range (must be %s)", text, r);
}

static int enum_index(const sd_opt *p, const char *s, size_t len)
{
    const char *c = p->choices;
    for (int k = 0; c && *c; k++) {
        const char *e = strchr(c, '|');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        if (l == len && !strncmp(c, s, len)) return k;
        if (!e) break;
        c = e + 1;
    }
    return -1;
}

const char *sd_opts_enum_name(const sd_opt *p, int index)
{
    static _Thread_local char buf[8][128];
    static _Thread_local int slot;
    const char *c = p ? p->choices : NULL;
    for (int k = 0; c && *c; k++) {
        const char *e = strchr(c, '|');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        if (k == index) {
            char *b = buf[slot++ & 7];
            snprintf(b, 128, "%.*s", (int)l, c);
            return b;
        }
        if (!e) break;
        c = e + 1;
    }
    return NULL;
}

static void choices_text(const sd_opt *p, const char *sep, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    for (const char *c = p->choices; c && *c && o + 1 < n; c++) {
        if (*c == '|') o += (size_t)snprintf(buf + o, n - o, "%s", sep);
        else buf[o++] = *c, buf[o] = 0;
        if (o >= n) { buf[n - 1] = 0; break; }
    }
}

/* One scalar value from text. */
static int scalar_from_text(sd_opts *o, const sd_opt *p, const char *s, val *v)
{
    int rc, b;
    switch (p->type) {
    case SD_OPT_FLAG:
    case SD_OPT_BOOL:
        if ((rc = parse_bool(s, &b))) return rc;
        v->i = b;
        return SD_OK;
    case SD_OPT_INT:
    case SD_OPT_INT64:
    case SD_OPT_INTS:
        if ((rc = parse_int(s, p->type == SD_OPT_INT ? INT_MIN : INT64_MIN,
                            p->type == SD_OPT_INT ? INT_MAX : INT64_MAX, &v->i)))
            return rc;
        return check_range(p, (double)v->i, s);
    case SD_OPT_FLOAT:
    case SD_OPT_DOUBLE:
    case SD_OPT_DOUBLES:
        if ((rc = parse_num(s, p->type == SD_OPT_FLOAT, &v->d))) return rc;
        return check_range(p, v->d, s);
    case SD_OPT_STRING:
    case SD_OPT_STRINGS:
        v->s = arena_strdup(o, s);
        return v->s ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    case SD_OPT_ENUM: {
        int k = enum_index(p, s, strlen(s));
        if (k < 0) {
            char c[512];
            choices_text(p, ", ", c, sizeof c);
            return sd_err(SD_EUSAGE, "invalid choice '%s' (choose from %s)", s, c);
        }
        v->i = k;
        return SD_OK;
    }
    }
    return sd_err(SD_ESTATE, "bad option type");
}

/* Append one list element (already parsed into e) to v. */
static int list_push(sd_opts *o, const sd_opt *p, val *v, const val *e)
{
    int n = v->n + 1;
    if (p->type == SD_OPT_STRINGS) {
        const char **a = arena_alloc(o, (size_t)n * sizeof *a);
        if (!a) return sd_err(SD_ENOMEM, "out of memory");
        if (v->n) memcpy(a, v->ls, (size_t)v->n * sizeof *a);
        a[v->n] = e->s;
        v->ls = a;
    } else if (p->type == SD_OPT_INTS) {
        int64_t *a = arena_alloc(o, (size_t)n * sizeof *a);
        if (!a) return sd_err(SD_ENOMEM, "out of memory");
        if (v->n) memcpy(a, v->li, (size_t)v->n * sizeof *a);
        a[v->n] = e->i;
        v->li = a;
    } else {
        double *a = arena_alloc(o, (size_t)n * sizeof *a);
        if (!a) return sd_err(SD_ENOMEM, "out of memory");
        if (v->n) memcpy(a, v->ld, (size_t)v->n * sizeof *a);
        a[v->n] = e->d;
        v->ld = a;
    }
    v->n = n;
    return SD_OK;
}

/* Add the elements of one text to a list value (split at commas for numbers / SD_OPTF_COMMA). */
static int list_add_text(sd_opts *o, const sd_opt *p, const char *s, val *v)
{
    int split = p->type != SD_OPT_STRINGS || (p->flags & SD_OPTF_COMMA);
    const char *c = s;
    for (;;) {
        const char *e = split ? strchr(c, ',') : NULL;
        size_t l = e ? (size_t)(e - c) : strlen(c);
        char *piece = arena_strndup(o, c, l);
        if (!piece) return sd_err(SD_ENOMEM, "out of memory");
        val el = { 0 };
        int rc = scalar_from_text(o, p, piece, &el);
        if (rc) return rc;
        if ((rc = list_push(o, p, v, &el))) return rc;
        if (!e) break;
        c = e + 1;
    }
    return SD_OK;
}

static int check_count(const sd_opt *p, int n)
{
    if ((p->nmin && n < p->nmin) || (p->nmax && n > p->nmax)) {
        if (p->nmin && p->nmax && p->nmin == p->nmax)
            return sd_err(SD_EUSAGE, "expected %d value%s, got %d", p->nmin, p->nmin == 1 ? "" : "s", n);
        if (p->nmin && p->nmax)
            return sd_err(SD_EUSAGE, "expected %d to %d values, got %d", p->nmin, p->nmax, n);
        if (p->nmin) return sd_err(SD_EUSAGE, "expected at least %d value%s, got %d", p->nmin,
                                   p->nmin == 1 ? "" : "s", n);
        return sd_err(SD_EUSAGE, "expected at most %d value%s, got %d", p->nmax, p->nmax == 1 ? "" : "s", n);
    }
    return SD_OK;
}

/* Store a parsed value into the destination. For lists with append, v is added to the current
 * list. The count check is done here, on the final list. */
static int commit(sd_opts *o, int idx, val *v, int append, int source)
{
    const sd_opt *p = o->all[idx];
    if (is_list(p->type)) {
        sd_opt_list *l = p->dest;
        if (append && l->n > 0) {
            val all = { 0 };
            for (int k = 0; k < l->n; k++) {
                val e = { .s = l->s ? l->s[k] : NULL, .i = l->i ? l->i[k] : 0, .d = l->d ? l->d[k] : 0 };
                int rc = list_push(o, p, &all, &e);
                if (rc) return rc;
            }
            for (int k = 0; k < v->n; k++) {
                val e = { .s = v->ls ? v->ls[k] : NULL, .i = v->li ? v->li[k] : 0, .d = v->ld ? v->ld[k] : 0 };
                int rc = list_push(o, p, &all, &e);
                if (rc) return rc;
            }
            *v = all;
        }
        int rc = check_count(p, v->n);
        if (rc) return rc;
        l->n = v->n;
        l->s = p->type == SD_OPT_STRINGS ? v->ls : NULL;
        l->i = p->type == SD_OPT_INTS ? v->li : NULL;
        l->d = p->type == SD_OPT_DOUBLES ? v->ld : NULL;
    } else {
        switch (p->type) {
        case SD_OPT_FLAG: case SD_OPT_BOOL: case SD_OPT_INT: case SD_OPT_ENUM:
            *(int *)p->dest = (int)v->i; break;
        case SD_OPT_INT64: *(int64_t *)p->dest = v->i; break;
        case SD_OPT_FLOAT: *(float *)p->dest = (float)v->d; break;
        case SD_OPT_DOUBLE: *(double *)p->dest = v->d; break;
        case SD_OPT_STRING: *(const char **)p->dest = v->s; break;
        default: break;
        }
    }
    o->src[idx] = (unsigned char)source;
    return SD_OK;
}

/* Set option idx from n texts (n > 1 only for NARGS lists). */
static int set_texts(sd_opts *o, int idx, const char **texts, int n, int source, int dry)
{
    const sd_opt *p = o->all[idx];
    val v = { 0 };
    int rc;
    if (is_list(p->type)) {
        for (int k = 0; k < n; k++)
            if ((rc = list_add_text(o, p, texts[k], &v))) return rc;
        if (dry) return check_count(p, v.n);
        return commit(o, idx, &v, (p->flags & SD_OPTF_APPEND) && source == o->src[idx], source);
    }
    if ((rc = scalar_from_text(o, p, texts[0], &v))) return rc;
    return dry ? SD_OK : commit(o, idx, &v, 0, source);
}

/* ---------------------------------------------------------------- init / free */

int sd_opts_init(sd_opts *o, const char *prog, const sd_opt *table)
{
    memset(o, 0, sizeof *o);
    o->prog = prog ? prog : "sd";
    o->table = table;
    int nt = 0;
    while (table && table[nt].name) nt++;
    o->builtin[0] = (sd_opt){ .name = "help", .short_name = 'h', .type = SD_OPT_FLAG, .dest = &o->help_flag,
                              .group = "General", .help = "show this help and exit",
                              .flags = SD_OPTF_NO_NEGATE | SD_OPTF_NO_CONFIG | SD_OPTF_NO_OUTPUT };
    o->builtin[1] = (sd_opt){ .name = "version", .type = SD_OPT_FLAG, .dest = &o->version_flag,
                              .group = "General", .help = "show the version and exit",
                              .flags = SD_OPTF_NO_NEGATE | SD_OPTF_NO_CONFIG | SD_OPTF_NO_OUTPUT };
    o->builtin[2] = (sd_opt){ .name = "config_file", .type = SD_OPT_STRING, .dest = &o->config_file,
                              .metavar = "FILE", .group = "General",
                              .help = "read options from a TOML file (.toml is appended if missing; "
                                      "JSON if the name ends in .json); the command line wins",
                              .flags = SD_OPTF_NO_CONFIG | SD_OPTF_NO_OUTPUT };
    o->builtin[3] = (sd_opt){ .name = "output_config", .type = SD_OPT_FLAG, .dest = &o->output_config,
                              .group = "General",
                              .help = "write the options that differ from their defaults to the "
                                      "--config_file path (never overwrites) and exit",
                              .flags = SD_OPTF_NO_NEGATE | SD_OPTF_NO_CONFIG | SD_OPTF_NO_OUTPUT };
    o->n = nt + 4;
    o->all = calloc((size_t)o->n, sizeof *o->all);
    o->src = calloc((size_t)o->n, 1);
    o->initial = calloc((size_t)o->n, sizeof *o->initial);
    if (!o->all || !o->src || !o->initial) {
        free(o->all); free(o->src); free(o->initial);
        memset(o, 0, sizeof *o);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < nt; i++) o->all[i] = &table[i];
    for (int i = 0; i < 4; i++) o->all[nt + i] = &o->builtin[i];
    for (int i = 0; i < o->n; i++) o->initial[i] = jv_null();

    /* validate */
    for (int i = 0; i < o->n; i++) {
        const sd_opt *p = o->all[i];
        const char *names[2] = { p->name, p->alias };
        for (int k = 0; k < 2; k++) {
            const char *nm = names[k];
            if (!nm) continue;
            if (!*nm || strlen(nm) >= NAME_MAX_LEN) goto bad_name;
            for (const char *c = nm; *c; c++)
                if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_')) goto bad_name;
            for (int j = 0; j < i; j++) {
                const sd_opt *q = o->all[j];
                if (!strcmp(q->name, nm) || (q->alias && !strcmp(q->alias, nm))) {
                    sd_err(SD_ESTATE, "option table: '%s' is defined twice", nm);
                    goto fail;
                }
            }
            if (k == 1 && !strcmp(p->name, nm)) {
                sd_err(SD_ESTATE, "option table: '%s' is its own alias", nm);
                goto fail;
            }
            continue;
        bad_name:
            sd_err(SD_ESTATE, "option table: bad option name '%s' (use lower-case snake_case)", nm);
            goto fail;
        }
        if (p->short_name) {
            if (!isalpha((unsigned char)p->short_name) && !isdigit((unsigned char)p->short_name)) {
                sd_err(SD_ESTATE, "option table: %s: bad short name", p->name);
                goto fail;
            }
            for (int j = 0; j < i; j++)
                if (o->all[j]->short_name == p->short_name) {
                    sd_err(SD_ESTATE, "option table: short option -%c is used by '%s' and '%s'",
                           p->short_name, o->all[j]->name, p->name);
                    goto fail;
                }
        }
        if (!p->dest || (unsigned)p->type > SD_OPT_DOUBLES) {
            sd_err(SD_ESTATE, "option table: %s: no destination or bad type", p->name);
            goto fail;
        }
        if (p->type == SD_OPT_ENUM && (!p->choices || !*p->choices)) {
            sd_err(SD_ESTATE, "option table: %s: enum without choices", p->name);
            goto fail;
        }
        if ((p->flags & (SD_OPTF_NARGS | SD_OPTF_APPEND | SD_OPTF_COMMA)) && !is_list(p->type)) {
            sd_err(SD_ESTATE, "option table: %s: list flags on a non-list option", p->name);
            goto fail;
        }
        if (p->def) {
            const char *t[1] = { p->def };
            int rc = set_texts(o, i, t, 1, SD_SRC_DEFAULT, 0);
            if (rc) {
                sd_err_prefix(SD_ESTATE, "option table: %s: bad default '%s'", p->name, p->def);
                goto fail;
            }
        }
    }
    for (int i = 0; i < o->n; i++) o->initial[i] = sd_opts_value_jv(o, i);
    return SD_OK;
fail:
    sd_opts_free(o);
    return SD_ESTATE;
}

void sd_opts_free(sd_opts *o)
{
    for (int i = 0; i < o->nmem; i++) free(o->mem[i]);
    free(o->mem);
    if (o->initial)
        for (int i = 0; i < o->n; i++) jv_free(o->initial[i]);
    free(o->initial);
    free(o->all);
    free(o->src);
    free(o->pos);
    for (int i = 0; i < o->nunknown; i++) {
        free(o->unknown[i]);
        jv_free(o->unknown_value[i]);
    }
    free(o->unknown);
    free(o->unknown_value);
    memset(o, 0, sizeof *o);
}

/* ---------------------------------------------------------------- command line */

static int looks_negative_number(const char *s)
{
    if (s[0] != '-') return 0;
    char *end;
    errno = 0;
    (void)strtod(s, &end);
    return end != s && !*end && (isdigit((unsigned char)s[1]) || s[1] == '.');
}

/* An argument that can be a value (not an option). */
static int value_like(const char *s)
{
    return s[0] != '-' || !s[1] || looks_negative_number(s);
}

static int add_pos(sd_opts *o, char *arg)
{
    if (o->flags & SD_OPTS_NO_POSITIONAL) return sd_err(SD_EUSAGE, "unexpected argument '%s'", arg);
    char **p = realloc(o->pos, (size_t)(o->npos + 2) * sizeof *p);
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    o->pos = p;
    o->pos[o->npos++] = arg;
    o->pos[o->npos] = NULL;
    return SD_OK;
}

/* Handle option idx spelt `spelt` (for messages), with an inline value (or NULL); may consume
 * following arguments via *k. */
static int take_option(sd_opts *o, int idx, const char *spelt, const char *inl, int negated,
                       int argc, char **argv, int *k)
{
    const sd_opt *p = o->all[idx];
    int rc;
    if (p->type == SD_OPT_FLAG) {
        if (negated && inl) return sd_err(SD_EUSAGE, "option '%s' takes no value", spelt);
        const char *t[1] = { negated ? "0" : inl ? inl : "1" };
        rc = set_texts(o, idx, t, 1, SD_SRC_CMDLINE, 0);
        return rc ? sd_err_prefix(rc, "option '%s'", spelt) : SD_OK;
    }
    const char *texts_buf[64];
    const char **texts = texts_buf;
    int n = 0, cap = 64;
    if (inl) {
        texts[n++] = inl;
    } else if (p->flags & SD_OPTF_NARGS) {
        while (*k + 1 < argc && value_like(argv[*k + 1])) {
            if (n == cap) {
                const char **t = arena_alloc(o, (size_t)cap * 2 * sizeof *t);
                if (!t) return sd_err(SD_ENOMEM, "out of memory");
                memcpy(t, texts, (size_t)n * sizeof *t);
                texts = t;
                cap *= 2;
            }
            texts[n++] = argv[++*k];
        }
    } else {
        if (*k + 1 >= argc || !value_like(argv[*k + 1]))
            return sd_err(SD_EUSAGE, "option '%s' needs a value", spelt);
        texts[n++] = argv[++*k];
    }
    if (n == 0) {
        if (p->nmin > 0) return sd_err(SD_EUSAGE, "option '%s' needs a value", spelt);
        val v = { 0 };
        rc = commit(o, idx, &v, 0, SD_SRC_CMDLINE);
    } else {
        rc = set_texts(o, idx, texts, n, SD_SRC_CMDLINE, 0);
    }
    return rc ? sd_err_prefix(rc, "option '%s'", spelt) : SD_OK;
}

static int parse_long(sd_opts *o, int argc, char **argv, int *k)
{
    const char *arg = argv[*k];
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const char *inl = eq ? eq + 1 : NULL;
    char spelt[NAME_MAX_LEN + 4];
    snprintf(spelt, sizeof spelt, "--%.*s", (int)(len < NAME_MAX_LEN ? len : NAME_MAX_LEN), name);
    int idx = lookup(o, name, len), negated = 0;
    if (idx < 0 && len > 3 && !strncmp(name, "no", 2) && (name[2] == '-' || name[2] == '_')) {
        int j = lookup(o, name + 3, len - 3);
        if (j >= 0 && o->all[j]->type == SD_OPT_FLAG && !(o->all[j]->flags & SD_OPTF_NO_NEGATE)) {
            idx = j;
            negated = 1;
        }
    }
    if (idx < 0) {
        char nm[NAME_MAX_LEN];
        const char *s = norm_name(name, len, nm) ? suggest(o, nm) : NULL;
        if (s) return sd_err(SD_EUSAGE, "unknown option '%s' (did you mean '--%s'?)", spelt, s);
        return sd_err(SD_EUSAGE, "unknown option '%s'", spelt);
    }
    return take_option(o, idx, spelt, inl, negated, argc, argv, k);
}

static int parse_short(sd_opts *o, int argc, char **argv, int *k)
{
    const char *arg = argv[*k];
    for (const char *c = arg + 1; *c; c++) {
        int idx = -1;
        for (int i = 0; i < o->n; i++)
            if (o->all[i]->short_name == *c && active(o, i)) { idx = i; break; }
        char spelt[3] = { '-', *c, 0 };
        if (idx < 0) {
            if (c == arg + 1) return sd_err(SD_EUSAGE, "unknown option '%s'", spelt);
            return sd_err(SD_EUSAGE, "unknown option '%s' in '%s'", spelt, arg);
        }
        if (o->all[idx]->type == SD_OPT_FLAG) {
            int rc = take_option(o, idx, spelt, NULL, 0, argc, argv, k);
            if (rc) return rc;
            continue;
        }
        /* option with a value: the rest of this argument, or the next one */
        return take_option(o, idx, spelt, c[1] ? c + 1 : NULL, 0, argc, argv, k);
    }
    return SD_OK;
}

int sd_opts_parse(sd_opts *o, int argc, char **argv)
{
    if (!o->all) return sd_err(SD_ESTATE, "sd_opts_parse before sd_opts_init");
    o->help_flag = o->version_flag = 0;
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        if (!strcmp(a, "--")) break;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return SD_OPTS_HELP;
    }
    for (int k = 1; k < argc; k++)
        if (!strcmp(argv[k], "--")) break;
        else if (!strcmp(argv[k], "--version")) return SD_OPTS_VERSION;
    for (int k = 1; k < argc; k++) {
        char *a = argv[k];
        int rc;
        if (!strcmp(a, "--")) {
            for (k++; k < argc; k++)
                if ((rc = add_pos(o, argv[k]))) return rc;
            break;
        }
        if (a[0] == '-' && a[1] == '-') rc = parse_long(o, argc, argv, &k);
        else if (a[0] == '-' && a[1] && !looks_negative_number(a)) rc = parse_short(o, argc, argv, &k);
        else rc = add_pos(o, a);
        if (rc) return rc;
    }
    /* -h / --version inside a cluster of short flags ("-vh") */
    if (o->help_flag) return SD_OPTS_HELP;
    if (o->version_flag) return SD_OPTS_VERSION;
    return SD_OK;
}

int sd_opts_set(sd_opts *o, const char *name, const char *value, int source)
{
    int idx = find_idx(o, name, strlen(name));
    if (idx < 0) return sd_err(SD_ENOTFOUND, "unknown option '%s'", name);
    const char *t[1] = { value };
    int rc = set_texts(o, idx, t, 1, source, 0);
    return rc ? sd_err_prefix(rc, "option '--%s'", o->all[idx]->name) : SD_OK;
}

/* ---------------------------------------------------------------- jv values (config files) */

static const char *kind_text(jv v)
{
    switch (jv_get_kind(v)) {
    case JV_KIND_NULL: return "null";
    case JV_KIND_TRUE: case JV_KIND_FALSE: return "a boolean";
    case JV_KIND_NUMBER: return "a number";
    case JV_KIND_STRING: return "a string";
    case JV_KIND_ARRAY: return "an array";
    case JV_KIND_OBJECT: return "a table";
    default: return "an invalid value";
    }
}

static const char *want_text(const sd_opt *p)
{
    switch (p->type) {
    case SD_OPT_FLAG: case SD_OPT_BOOL: return "true or false";
    case SD_OPT_INT: case SD_OPT_INT64: return "an integer";
    case SD_OPT_FLOAT: case SD_OPT_DOUBLE: return "a number";
    case SD_OPT_STRING: case SD_OPT_ENUM: return "a string";
    case SD_OPT_STRINGS: return "an array of strings";
    case SD_OPT_INTS: return "an array of integers";
    default: return "an array of numbers";
    }
}

/* Number → text the scalar parser accepts, exact for integers. */
static void num_text(double d, char *buf, size_t n)
{
    if (d == floor(d) && fabs(d) < 9.007199254740992e15) snprintf(buf, n, "%.0f", d);
    else snprintf(buf, n, "%.17g", d);
}

/* One scalar (or list element) from a jv value; p->type decides, lists use element rules. */
static int scalar_from_jv(sd_opts *o, const sd_opt *p, jv x, val *v)
{
    jv_kind kd = jv_get_kind(x);
    char buf[64];
    switch (p->type) {
    case SD_OPT_FLAG: case SD_OPT_BOOL:
        if (kd == JV_KIND_TRUE || kd == JV_KIND_FALSE) { v->i = kd == JV_KIND_TRUE; return SD_OK; }
        break;
    case SD_OPT_INT: case SD_OPT_INT64: case SD_OPT_INTS:
        if (kd == JV_KIND_NUMBER) {
            double d = jv_number_value(x);
            if (d != floor(d) || isinf(d)) {
                snprintf(buf, sizeof buf, "%.17g", d);
                return sd_err(SD_EUSAGE, "expected an integer, got %s", buf);
            }
            num_text(d, buf, sizeof buf);
            return scalar_from_text(o, p, buf, v);
        }
        if (kd == JV_KIND_STRING) return scalar_from_text(o, p, jv_string_value(x), v);
        break;
    case SD_OPT_FLOAT: case SD_OPT_DOUBLE: case SD_OPT_DOUBLES:
        if (kd == JV_KIND_NUMBER) {
            double d = jv_number_value(x);
            snprintf(buf, sizeof buf, "%.17g", d);
            if (p->type == SD_OPT_FLOAT && isfinite(d) && fabs(d) > FLT_MAX)
                return sd_err(SD_EUSAGE, "value %s is out of range for a float", buf);
            v->d = d;
            return check_range(p, d, buf);
        }
        if (kd == JV_KIND_STRING) return scalar_from_text(o, p, jv_string_value(x), v);
        break;
    case SD_OPT_STRING: case SD_OPT_STRINGS:
        if (kd == JV_KIND_STRING) return scalar_from_text(o, p, jv_string_value(x), v);
        if (kd == JV_KIND_NUMBER) {
            num_text(jv_number_value(x), buf, sizeof buf);
            return scalar_from_text(o, p, buf, v);
        }
        break;
    case SD_OPT_ENUM:
        if (kd == JV_KIND_STRING) return scalar_from_text(o, p, jv_string_value(x), v);
        break;
    }
    const char *w = want_text(p);
    if (is_list(p->type)) w = p->type == SD_OPT_STRINGS ? "a string" : p->type == SD_OPT_INTS ? "an integer" : "a number";
    return sd_err(SD_EUSAGE, "expected %s, got %s", w, kind_text(x));
}

/* Parse x into v for option idx. */
static int val_from_jv(sd_opts *o, int idx, jv x, val *v)
{
    const sd_opt *p = o->all[idx];
    jv_kind kd = jv_get_kind(x);
    if (!is_list(p->type)) {
        if (kd == JV_KIND_ARRAY || kd == JV_KIND_OBJECT)
            return sd_err(SD_EUSAGE, "expected %s, got %s", want_text(p), kind_text(x));
        return scalar_from_jv(o, p, x, v);
    }
    int rc;
    if (kd == JV_KIND_STRING) {
        rc = list_add_text(o, p, jv_string_value(x), v);
    } else if (kd == JV_KIND_ARRAY) {
        int n = jv_array_length(jv_copy(x));
        rc = SD_OK;
        for (int k = 0; k < n && !rc; k++) {
            jv e = jv_array_get(jv_copy(x), k);
            val el = { 0 };
            rc = scalar_from_jv(o, p, e, &el);
            if (rc) sd_err_prefix(rc, "element %d", k + 1);
            else rc = list_push(o, p, v, &el);
            jv_free(e);
        }
    } else if (kd == JV_KIND_NUMBER) {
        val el = { 0 };
        rc = scalar_from_jv(o, p, x, &el);
        if (!rc) rc = list_push(o, p, v, &el);
    } else {
        return sd_err(SD_EUSAGE, "expected %s, got %s", want_text(p), kind_text(x));
    }
    return rc ? rc : check_count(p, v->n);
}

static int set_jv_idx(sd_opts *o, int idx, jv value, int source)
{
    if (jv_get_kind(value) == JV_KIND_NULL) return SD_OK;   /* JSON null: keep the default */
    val v = { 0 };
    int rc = val_from_jv(o, idx, value, &v);
    if (rc) return rc;
    if (o->src[idx] > source && o->src[idx] != SD_SRC_CODE) return SD_OK;   /* higher precedence */
    return commit(o, idx, &v, 0, source);
}

int sd_opts_set_jv(sd_opts *o, const char *name, jv value, int source)
{
    int idx = find_idx(o, name, strlen(name));
    if (idx < 0 || !active(o, idx)) {
        char nm[NAME_MAX_LEN];
        const char *s = norm_name(name, strlen(name), nm) ? suggest(o, nm) : NULL;
        if (s) return sd_err(SD_ENOTFOUND, "unknown key '%s' (did you mean '%s'?)", name, s);
        return sd_err(SD_ENOTFOUND, "unknown key '%s'", name);
    }
    int rc = set_jv_idx(o, idx, value, source);
    return rc ? sd_err_prefix(rc, "%s", name) : SD_OK;
}

static int add_unknown(sd_opts *o, const char *key, jv value)
{
    char **u = realloc(o->unknown, (size_t)(o->nunknown + 1) * sizeof *u);
    if (!u) return sd_err(SD_ENOMEM, "out of memory");
    o->unknown = u;
    jv *uv = realloc(o->unknown_value, (size_t)(o->nunknown + 1) * sizeof *uv);
    if (!uv) return sd_err(SD_ENOMEM, "out of memory");
    o->unknown_value = uv;
    if (!(u[o->nunknown] = strdup(key))) return sd_err(SD_ENOMEM, "out of memory");
    uv[o->nunknown] = jv_copy(value);
    o->nunknown++;
    return SD_OK;
}

static int apply_obj(sd_opts *o, jv obj, const char *name, int depth)
{
    if (depth > 64) return sd_err(SD_EUSAGE, "%s: tables nested too deeply", name);
    int rc = SD_OK;
    jv_object_foreach(obj, key, value) {
        if (!rc) {
            const char *ks = jv_string_value(key);
            if (jv_get_kind(value) == JV_KIND_OBJECT) {
                rc = apply_obj(o, value, name, depth + 1);
            } else {
                int idx = find_idx(o, ks, strlen(ks));
                if (idx >= 0 && active(o, idx) && (o->all[idx]->flags & SD_OPTF_NO_CONFIG)) {
                    rc = sd_err(SD_EUSAGE, "%s: %s: not allowed in a config file", name, ks);
                } else if (idx < 0 || !active(o, idx)) {
                    if (o->flags & SD_OPTS_LENIENT) {
                        rc = add_unknown(o, ks, value);
                    } else {
                        sd_opts_set_jv(o, ks, value, SD_SRC_CONFIG);   /* builds the message */
                        rc = sd_err_prefix(SD_EUSAGE, "%s", name);
                    }
                } else {
                    rc = set_jv_idx(o, idx, value, SD_SRC_CONFIG);
                    if (rc) rc = sd_err_prefix(rc, "%s: %s", name, ks);
                }
            }
        }
        jv_free(key);
        jv_free(value);
    }
    return rc;
}

int sd_opts_apply_config(sd_opts *o, jv cfg, const char *name)
{
    if (!name) name = "config";
    if (jv_get_kind(cfg) != JV_KIND_OBJECT)
        return sd_err(SD_EUSAGE, "%s: expected a table of options, got %s", name, kind_text(cfg));
    return apply_obj(o, cfg, name, 0);
}

/* ---------------------------------------------------------------- queries */

const sd_opt *sd_opts_find(const sd_opts *o, const char *name)
{
    int i = find_idx(o, name, strlen(name));
    return i >= 0 ? o->all[i] : NULL;
}

static int dest_idx(const sd_opts *o, const void *dest)
{
    for (int i = 0; i < o->n; i++)
        if (o->all[i]->dest == dest) return i;
    return -1;
}

const sd_opt *sd_opts_find_dest(const sd_opts *o, const void *dest)
{
    int i = dest_idx(o, dest);
    return i >= 0 ? o->all[i] : NULL;
}

int sd_opts_source(const sd_opts *o, const char *name)
{
    int i = find_idx(o, name, strlen(name));
    return i >= 0 ? o->src[i] : -1;
}

int sd_opts_source_of(const sd_opts *o, const void *dest)
{
    int i = dest_idx(o, dest);
    return i >= 0 ? o->src[i] : -1;
}

int sd_opts_is_set(const sd_opts *o, const void *dest)
{
    int s = sd_opts_source_of(o, dest);
    return s == SD_SRC_CONFIG || s == SD_SRC_CMDLINE || s == SD_SRC_CODE;
}

const char *sd_opts_source_name(int s)
{
    switch (s) {
    case SD_SRC_NONE: return "none";
    case SD_SRC_DEFAULT: return "default";
    case SD_SRC_CONFIG: return "config";
    case SD_SRC_CMDLINE: return "command line";
    case SD_SRC_CODE: return "program";
    default: return "unknown";
    }
}

int sd_opts_count(const sd_opts *o) { return o->n; }
const sd_opt *sd_opts_at(const sd_opts *o, int i) { return i >= 0 && i < o->n ? o->all[i] : NULL; }
int sd_opts_source_at(const sd_opts *o, int i) { return i >= 0 && i < o->n ? o->src[i] : -1; }

jv sd_opts_value_jv(const sd_opts *o, int i)
{
    if (i < 0 || i >= o->n) return jv_null();
    const sd_opt *p = o->all[i];
    switch (p->type) {
    case SD_OPT_FLAG: case SD_OPT_BOOL: return jv_bool(*(int *)p->dest != 0);
    case SD_OPT_INT: return jv_number(*(int *)p->dest);
    case SD_OPT_INT64: return jv_number((double)*(int64_t *)p->dest);
    case SD_OPT_FLOAT: {
        /* the float's shortest decimal, not its binary expansion (1e-4f, not 9.99999974e-05) */
        char b[32];
        snprintf(b, sizeof b, "%.9g", (double)*(float *)p->dest);
        for (int prec = 1; prec <= 9; prec++) {
            snprintf(b, sizeof b, "%.*g", prec, (double)*(float *)p->dest);
            if ((float)strtod(b, NULL) == *(float *)p->dest) break;
        }
        return jv_number(strtod(b, NULL));
    }
    case SD_OPT_DOUBLE: return jv_number(*(double *)p->dest);
    case SD_OPT_STRING: {
        const char *s = *(const char **)p->dest;
        return s ? jv_string(s) : jv_null();
    }
    case SD_OPT_ENUM: {
        const char *s = sd_opts_enum_name(p, *(int *)p->dest);
        return s ? jv_string(s) : jv_null();
    }
    default: {
        const sd_opt_list *l = p->dest;
        jv a = jv_array();
        for (int k = 0; k < l->n; k++) {
            if (p->type == SD_OPT_STRINGS) a = jv_array_append(a, l->s && l->s[k] ? jv_string(l->s[k]) : jv_null());
            else if (p->type == SD_OPT_INTS) a = jv_array_append(a, jv_number(l->i ? (double)l->i[k] : 0));
            else a = jv_array_append(a, jv_number(l->d ? l->d[k] : 0));
        }
        return a;
    }
    }
}

int sd_opts_is_default_at(const sd_opts *o, int i)
{
    if (i < 0 || i >= o->n) return 0;
    jv cur = sd_opts_value_jv(o, i);
    int eq = jv_equal(cur, jv_copy(o->initial[i]));
    return eq;
}

/* ---------------------------------------------------------------- help */

static void metavar_text(const sd_opt *p, char *buf, size_t n)
{
    if (p->metavar) { snprintf(buf, n, "%s", p->metavar); return; }
    char c[256];
    switch (p->type) {
    case SD_OPT_FLAG: buf[0] = 0; break;
    case SD_OPT_BOOL: snprintf(buf, n, "BOOL"); break;
    case SD_OPT_INT: case SD_OPT_INT64: snprintf(buf, n, "N"); break;
    case SD_OPT_FLOAT: case SD_OPT_DOUBLE: snprintf(buf, n, "X"); break;
    case SD_OPT_STRING: snprintf(buf, n, "STR"); break;
    case SD_OPT_ENUM: choices_text(p, ",", c, sizeof c); snprintf(buf, n, "{%s}", c); break;
    case SD_OPT_STRINGS:
        snprintf(buf, n, "%s", p->flags & SD_OPTF_NARGS ? "STR [STR ...]" : p->flags & SD_OPTF_COMMA ? "STR[,STR...]" : "STR");
        break;
    case SD_OPT_INTS: snprintf(buf, n, "%s", p->flags & SD_OPTF_NARGS ? "N [N ...]" : "N[,N...]"); break;
    case SD_OPT_DOUBLES: snprintf(buf, n, "%s", p->flags & SD_OPTF_NARGS ? "X [X ...]" : "X[,X...]"); break;
    }
}

/* Write `text` wrapped to HELP_WIDTH, first line continuing at column `col0`, others at HELP_COL. */
static void wrap(FILE *f, const char *text, int col0)
{
    int col = col0;
    const char *w = text;
    int first = 1;
    while (*w) {
        while (*w == ' ') w++;
        if (!*w) break;
        const char *e = w;
        while (*e && *e != ' ' && *e != '\n') e++;
        int len = (int)(e - w);
        if (!first && col + 1 + len > HELP_WIDTH) {
            fprintf(f, "\n%*s", HELP_COL, "");
            col = HELP_COL;
        } else if (!first) {
            fputc(' ', f);
            col++;
        }
        fwrite(w, 1, (size_t)len, f);
        col += len;
        first = 0;
        w = e;
        if (*w == '\n') {
            w++;
            fprintf(f, "\n%*s", HELP_COL, "");
            col = HELP_COL;
            first = 1;
        }
    }
    fputc('\n', f);
}

static void help_entry(const sd_opts *o, const sd_opt *p, FILE *f)
{
    char mv[300], left[512], extra[600] = "", r[96];
    metavar_text(p, mv, sizeof mv);
    if (p->short_name)
        snprintf(left, sizeof left, "  -%c, --%s%s%s", p->short_name, p->name, mv[0] ? " " : "", mv);
    else
        snprintf(left, sizeof left, "      --%s%s%s", p->name, mv[0] ? " " : "", mv);
    size_t e = 0;
    if (p->def && p->type != SD_OPT_FLAG)
        e += (size_t)snprintf(extra + e, sizeof extra - e, "default: %s", p->def);
    else if (p->def && p->type == SD_OPT_FLAG) {
        int b = 0;
        if (parse_bool(p->def, &b) == SD_OK && b)
            e += (size_t)snprintf(extra + e, sizeof extra - e, "default: on; --no-%s turns it off", p->name);
    }
    range_text(p, r, sizeof r);
    if (r[0] && e < sizeof extra)
        e += (size_t)snprintf(extra + e, sizeof extra - e, "%srange %s", e ? "; " : "", r);
    if ((p->nmin || p->nmax) && e < sizeof extra) {
        if (p->nmin == p->nmax)
            e += (size_t)snprintf(extra + e, sizeof extra - e, "%s%d values", e ? "; " : "", p->nmin);
        else if (p->nmin && p->nmax)
            e += (size_t)snprintf(extra + e, sizeof extra - e, "%s%d to %d values", e ? "; " : "", p->nmin, p->nmax);
        else if (p->nmin)
            e += (size_t)snprintf(extra + e, sizeof extra - e, "%sat least %d value%s", e ? "; " : "", p->nmin,
                                  p->nmin == 1 ? "" : "s");
        else
            e += (size_t)snprintf(extra + e, sizeof extra - e, "%sat most %d values", e ? "; " : "", p->nmax);
    }
    if (p->alias && e < sizeof extra)
        snprintf(extra + e, sizeof extra - e, "%salso --%s", e ? "; " : "", p->alias);
    size_t hl = (p->help ? strlen(p->help) : 0) + strlen(extra) + 8;
    char *text = malloc(hl);
    if (!text) return;
    snprintf(text, hl, "%s%s%s%s", p->help ? p->help : "", extra[0] && p->help ? " " : "",
             extra[0] ? "(" : "", extra);
    if (extra[0]) strcat(text, ")");
    fputs(left, f);
    int col = (int)strlen(left);
    if (!text[0]) {
        fputc('\n', f);
    } else if (col + 2 > HELP_COL) {
        fprintf(f, "\n%*s", HELP_COL, "");
        wrap(f, text, HELP_COL);
    } else {
        fprintf(f, "%*s", HELP_COL - col, "");
        wrap(f, text, HELP_COL);
    }
    free(text);
    (void)o;
}

void sd_opts_usage(const sd_opts *o, FILE *f)
{
    fprintf(f, "Usage: %s %s\n", o->prog, o->usage ? o->usage : "[OPTIONS]");
}

void sd_opts_version(const sd_opts *o, FILE *f)
{
    fprintf(f, "%s %s\n", o->prog, o->version ? o->version : SD_VERSION);
}

void sd_opts_help(const sd_opts *o, FILE *f)
{
    sd_opts_usage(o, f);
    if (o->description) {
        fputc('\n', f);
        fprintf(f, "%s\n", o->description);
    }
    fprintf(f, "\nOptions are spelt --snake_case as in sd-scripts or --kebab-case; flags can be\n"
               "turned off with --no-NAME.\n");
    /* groups in order of first appearance; NULL group = "Options" */
    const char *groups[256];
    int ng = 0;
    for (int i = 0; i < o->n; i++) {
        if (!active(o, i) || (o->all[i]->flags & SD_OPTF_HIDDEN)) continue;
        const char *g = o->all[i]->group ? o->all[i]->group : "Options";
        int seen = 0;
        for (int k = 0; k < ng; k++) seen |= !strcmp(groups[k], g);
        if (!seen && ng < 256) groups[ng++] = g;
    }
    for (int k = 0; k < ng; k++) {
        fprintf(f, "\n%s:\n", groups[k]);
        for (int i = 0; i < o->n; i++) {
            const sd_opt *p = o->all[i];
            if (!active(o, i) || (p->flags & SD_OPTF_HIDDEN)) continue;
            if (strcmp(p->group ? p->group : "Options", groups[k])) continue;
            help_entry(o, p, f);
        }
    }
    if (o->epilog) fprintf(f, "\n%s\n", o->epilog);
}
