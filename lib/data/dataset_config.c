/* Dataset configuration: schema, validation, fallback resolution, folder convention.
 * See dataset_config.h and reference-behaviour.md §1. */
#include "data/dataset_config.h"

#include "base/error.h"
#include "base/fileio.h"
#include "io/jsonl.h"
#include "io/toml.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- schema ---- */

enum { T_BOOL, T_INT, T_NUM, T_FLOAT, T_STR, T_RESO, T_FPAIR, T_TABLE, T_INTERP };

/* categories, as the reference's schema dictionaries */
enum {
    C_DATASET = 1,   /* DATASET_ASCENDABLE: G, D */
    C_SUB = 2,       /* SUBSET_ASCENDABLE: G, D, S */
    C_DO = 4,        /* caption dropout: G, D, S */
    C_DB_ASC = 8,    /* DreamBooth ascendable: G, D, S (DreamBooth datasets) */
    C_DB_DIST = 16,  /* DreamBooth subset only */
    C_FT_DIST = 32,  /* fine-tuning subset only */
    C_CN_ASC = 64,   /* ControlNet ascendable */
    C_CN_DIST = 128, /* ControlNet subset only */
};

typedef struct key_def {
    const char *name;
    int type;
    unsigned cats;
    const char *def;   /* JSON text of the default; NULL = None */
    int record;        /* carried in records */
} key_def;

static const key_def keys[] = {
    /* dataset level */
    {"resolution", T_RESO, C_DATASET, NULL, 1},
    {"batch_size", T_INT, C_DATASET, "1", 1},
    {"enable_bucket", T_BOOL, C_DATASET, "false", 1},
    {"min_bucket_reso", T_INT, C_DATASET, "256", 1},
    {"max_bucket_reso", T_INT, C_DATASET, "1024", 1},
    {"bucket_reso_steps", T_INT, C_DATASET, "64", 1},
    {"bucket_no_upscale", T_BOOL, C_DATASET, "false", 1},
    {"validation_split", T_FLOAT, C_DATASET, "0", 1},
    {"validation_seed", T_INT, C_DATASET, NULL, 1},
    {"network_multiplier", T_FLOAT, C_DATASET, "1", 1},
    {"resize_interpolation", T_INTERP, C_DATASET | C_SUB, NULL, 1},
    /* subset level, common */
    {"num_repeats", T_INT, C_SUB, "1", 1},
    {"shuffle_caption", T_BOOL, C_SUB, "false", 1},
    {"caption_separator", T_STR, C_SUB, "\",\"", 1},
    {"keep_tokens", T_INT, C_SUB, "0", 1},
    {"keep_tokens_separator", T_STR, C_SUB, "\"\"", 1},
    {"secondary_separator", T_STR, C_SUB, NULL, 1},
    {"enable_wildcard", T_BOOL, C_SUB, "false", 1},
    {"caption_prefix", T_STR, C_SUB, NULL, 1},
    {"caption_suffix", T_STR, C_SUB, NULL, 1},
    {"color_aug", T_BOOL, C_SUB, "false", 1},
    {"flip_aug", T_BOOL, C_SUB, "false", 1},
    {"random_crop", T_BOOL, C_SUB, "false", 1},
    {"face_crop_aug_range", T_FPAIR, C_SUB, NULL, 1},
    {"token_warmup_min", T_INT, C_SUB, "1", 1},
    {"token_warmup_step", T_NUM, C_SUB, "0", 1},
    {"custom_attributes", T_TABLE, C_SUB, "{}", 1},
    /* caption dropout */
    {"caption_dropout_rate", T_NUM, C_DO, "0", 1},
    {"caption_dropout_every_n_epochs", T_INT, C_DO, "0", 1},
    {"caption_tag_dropout_rate", T_NUM, C_DO, "0", 1},
    /* method specific */
    {"is_reg", T_BOOL, C_DB_DIST, "false", 1},
    {"class_tokens", T_STR, C_DB_ASC, NULL, 1},
    {"alpha_mask", T_BOOL, C_DB_DIST | C_FT_DIST, "false", 1},
    {"image_dir", T_STR, C_DB_DIST | C_FT_DIST | C_CN_DIST, NULL, 0},
    {"caption_extension", T_STR, C_DB_ASC | C_CN_ASC, "\".caption\"", 0},
    {"cache_info", T_BOOL, C_DB_ASC | C_CN_ASC, "false", 0},
    {"metadata_file", T_STR, C_FT_DIST, NULL, 0},
    {"conditioning_data_dir", T_STR, C_CN_DIST, NULL, 0},
};
#define NKEYS ((int)(sizeof keys / sizeof *keys))

static const char *const interp_names[] = {"lanczos", "nearest", "bilinear", "linear",
                                           "bicubic", "cubic", "area", "box"};

static const key_def *find_key(const char *name)
{
    for (int i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

const char *sd_dc_method_name(int m)
{
    return m == SD_DC_FINETUNE ? "fine_tuning" : m == SD_DC_CONTROLNET ? "controlnet" : "dreambooth";
}

int sd_dc_is_param(const char *key) { return find_key(key) != NULL; }

const char *const *sd_dc_record_keys(void)
{
    static const char *list[NKEYS + 1];
    if (!list[0]) {
        int n = 0;
        for (int i = 0; i < NKEYS; i++)
            if (keys[i].record) list[n++] = keys[i].name;
        list[n] = NULL;
    }
    return list;
}

/* levels */
enum { L_GENERAL, L_DATASET, L_SUBSET };

static unsigned allowed_cats(int level, int method, int cn_ok)
{
    switch (level) {
    case L_GENERAL: return C_DATASET | C_SUB | C_DO | C_DB_ASC | (cn_ok ? C_CN_ASC : 0);
    case L_DATASET:
        return C_DATASET | C_SUB | C_DO |
               (method == SD_DC_DREAMBOOTH ? C_DB_ASC : method == SD_DC_CONTROLNET ? C_CN_ASC : 0);
    default:
        return C_SUB | C_DO |
               (method == SD_DC_DREAMBOOTH ? C_DB_ASC | C_DB_DIST
                : method == SD_DC_CONTROLNET ? C_CN_ASC | C_CN_DIST
                                             : C_FT_DIST);
    }
}

/* ---- line locator (messages only) ---- */

typedef struct locator {
    const char *text;
    size_t n;
    int is_toml;
} locator;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r')) s[--l] = 0;
    return s;
}

/* TOML: the line of key `key` (NULL: of the table itself) in [general] (ds < 0), in dataset ds
 * (sub < 0) or in its subset sub. Best effort: plain `[[datasets]]` headers and `key =` lines. */
static int toml_line(const locator *L, int ds, int sub, const char *key)
{
    int line = 0, cur_ds = -1, cur_sub = -1, ctx = -1, nested = 0, found = 0;
    const char *p = L->text, *end = L->text + L->n;
    while (p < end && !found) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line++;
        char buf[512];
        if (len >= sizeof buf) len = sizeof buf - 1;
        memcpy(buf, p, len);
        buf[len] = 0;
        char *s = trim(buf);
        if (s[0] == '[') {
            int dbl = s[1] == '[';
            char name[256];
            size_t k = 0;
            for (char *q = s + 1 + dbl; *q && *q != ']' && k + 1 < sizeof name; q++)
                if (*q != ' ' && *q != '\t' && *q != '"' && *q != '\'') name[k++] = *q;
            name[k] = 0;
            nested = 0;
            if (dbl && !strcmp(name, "datasets")) { cur_ds++; cur_sub = -1; ctx = L_DATASET; }
            else if (dbl && !strcmp(name, "datasets.subsets")) { cur_sub++; ctx = L_SUBSET; }
            else if (!dbl && !strcmp(name, "general")) ctx = L_GENERAL;
            else nested = 1;
            if (!key && !nested) {
                if (ds < 0 && ctx == L_GENERAL) found = line;
                else if (ds == cur_ds && ((sub < 0 && ctx == L_DATASET) || (sub >= 0 && ctx == L_SUBSET && sub == cur_sub)))
                    found = line;
            }
        } else if (key && !nested && s[0] && s[0] != '#') {
            char *eq = strchr(s, '=');
            if (eq) {
                *eq = 0;
                char *k = trim(s);
                size_t kl = strlen(k);
                if (kl >= 2 && (k[0] == '"' || k[0] == '\'') && k[kl - 1] == k[0]) { k[kl - 1] = 0; k++; }
                char *dot = strchr(k, '.');
                if (dot) *dot = 0;
                if (!strcmp(k, key)) {
                    if (ds < 0 && ctx == L_GENERAL) found = line;
                    else if (ds >= 0 && ds == cur_ds && ((sub < 0 && ctx == L_DATASET) || (sub >= 0 && ctx == L_SUBSET && sub == cur_sub)))
                        found = line;
                }
            }
        }
        p = nl ? nl + 1 : end;
    }
    return found;
}

/* JSON: walk the text keeping the path of the current element; report the line where the
 * target key (or, for key == NULL, the target table's value) appears. */
typedef struct jframe { int is_obj; int index; char key[64]; } jframe;
typedef struct pel { const char *k; int i; } pel;

static int target_path(int ds, int sub, const char *key, pel *t)
{
    int n = 0;
    if (ds < 0) t[n++] = (pel){"general", 0};
    else {
        t[n++] = (pel){"datasets", 0};
        t[n++] = (pel){NULL, ds};
        if (sub >= 0) { t[n++] = (pel){"subsets", 0}; t[n++] = (pel){NULL, sub}; }
    }
    if (key) t[n++] = (pel){key, 0};
    return n;
}

static int frames_match(const jframe *st, int depth, const pel *t, int n)
{
    if (depth != n) return 0;
    for (int i = 0; i < depth; i++) {
        if (st[i].is_obj != (t[i].k != NULL)) return 0;
        if (t[i].k ? strcmp(st[i].key, t[i].k) != 0 : st[i].index != t[i].i) return 0;
    }
    return 1;
}

static int json_line(const locator *L, int ds, int sub, const char *key)
{
    jframe st[64];
    pel t[6];
    int n = target_path(ds, sub, key, t);
    int depth = 0, line = 1, expect_key = 0;
    for (size_t i = 0; i < L->n; i++) {
        char c = L->text[i];
        if (c == '\n') { line++; continue; }
        if (c == '"') {
            size_t j = i + 1;
            while (j < L->n && L->text[j] != '"') { if (L->text[j] == '\\') j++; j++; }
            if (expect_key && depth > 0) {
                jframe *f = &st[depth - 1];
                size_t kl = j - i - 1;
                if (kl >= sizeof f->key) kl = sizeof f->key - 1;
                memcpy(f->key, L->text + i + 1, kl);
                f->key[kl] = 0;
                expect_key = 0;
                if (key && frames_match(st, depth, t, n)) return line;
            }
            i = j;
            continue;
        }
        if (c == '{' || c == '[') {
            if (!key && frames_match(st, depth, t, n)) return line;
            if (depth >= 64) return 0;
            st[depth].is_obj = c == '{';
            st[depth].index = 0;
            st[depth].key[0] = 0;
            depth++;
            expect_key = c == '{';
        } else if (c == '}' || c == ']') {
            if (depth) depth--;
            expect_key = 0;
        } else if (c == ',' && depth) {
            if (st[depth - 1].is_obj) expect_key = 1;
            else st[depth - 1].index++;
        }
    }
    return 0;
}

static int locate(const locator *L, int ds, int sub, const char *key)
{
    if (!L || !L->text) return 0;
    return L->is_toml ? toml_line(L, ds, sub, key) : json_line(L, ds, sub, key);
}

/* ---- messages ---- */

typedef struct ctx {
    const char *name;
    const locator *loc;
    unsigned flags;
    sd_dataset_config *out;
} ctx;

static void path_str(char *buf, size_t cap, int ds, int sub, const char *key)
{
    int n;
    if (ds < 0) n = snprintf(buf, cap, "general");
    else if (sub < 0) n = snprintf(buf, cap, "datasets[%d]", ds);
    else n = snprintf(buf, cap, "datasets[%d].subsets[%d]", ds, sub);
    if (key && n >= 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, ".%s", key);
}

static int cfg_err(const ctx *c, int ds, int sub, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int cfg_err(const ctx *c, int ds, int sub, const char *key, const char *fmt, ...)
{
    char path[256], msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    path_str(path, sizeof path, ds, sub, key);
    int line = locate(c->loc, ds, sub, key);
    if (!line && key) line = locate(c->loc, ds, sub, NULL);
    if (line) return sd_err(SD_EFORMAT, "%s:%d: %s: %s", c->name, line, path, msg);
    return sd_err(SD_EFORMAT, "%s: %s: %s", c->name, path, msg);
}

static void warn(sd_dataset_config *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(sd_dataset_config *out, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char **w = realloc(out->warnings, (size_t)(out->nwarnings + 1) * sizeof *w);
    if (!w) return;
    out->warnings = w;
    w[out->nwarnings] = strdup(msg);
    if (w[out->nwarnings]) out->nwarnings++;
}

static int lev(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            d[i][j] = v;
        }
    return d[la][lb];
}

/* ---- type checks ---- */

static int is_int(jv v, double *out)
{
    if (jv_get_kind(v) != JV_KIND_NUMBER) return 0;
    double x = jv_number_value(v);
    if (!(x == floor(x)) || fabs(x) > 2147483647.0) return 0;
    if (out) *out = x;
    return 1;
}

static const char *type_desc(int t)
{
    switch (t) {
    case T_BOOL: return "a boolean (true/false)";
    case T_INT: return "an integer";
    case T_NUM: return "a number";
    case T_FLOAT: return "a number";
    case T_STR: return "a string";
    case T_RESO: return "an integer or [width, height] integers";
    case T_FPAIR: return "[low, high] numbers";
    case T_TABLE: return "a table";
    case T_INTERP: return "one of lanczos, nearest, bilinear, linear, bicubic, cubic, area, box";
    }
    return "?";
}

/* Check v against k's type; returns the normalised value (consumes nothing; new ref) or
 * jv_invalid() when the type is wrong. */
static jv check_type(const key_def *k, jv v)
{
    jv_kind kind = jv_get_kind(v);
    switch (k->type) {
    case T_BOOL: if (kind == JV_KIND_TRUE || kind == JV_KIND_FALSE) return jv_copy(v); break;
    case T_INT: if (is_int(v, NULL)) return jv_copy(v); break;
    case T_NUM:
    case T_FLOAT:
        if (kind == JV_KIND_NUMBER && isfinite(jv_number_value(v))) return jv_copy(v);
        break;
    case T_STR: if (kind == JV_KIND_STRING) return jv_copy(v); break;
    case T_TABLE: if (kind == JV_KIND_OBJECT) return jv_copy(v); break;
    case T_INTERP:
        if (kind == JV_KIND_STRING)
            for (size_t i = 0; i < sizeof interp_names / sizeof *interp_names; i++)
                if (!strcmp(jv_string_value(v), interp_names[i])) return jv_copy(v);
        break;
    case T_RESO:
        if (is_int(v, NULL)) return JV_ARRAY(jv_copy(v), jv_copy(v));
        if (kind == JV_KIND_ARRAY && jv_array_length(jv_copy(v)) == 2) {
            jv a = jv_array_get(jv_copy(v), 0), b = jv_array_get(jv_copy(v), 1);
            int ok = is_int(a, NULL) && is_int(b, NULL);
            jv_free(a);
            jv_free(b);
            if (ok) return jv_copy(v);
        }
        break;
    case T_FPAIR:
        if (kind == JV_KIND_ARRAY && jv_array_length(jv_copy(v)) == 2) {
            jv a = jv_array_get(jv_copy(v), 0), b = jv_array_get(jv_copy(v), 1);
            int ok = jv_get_kind(a) == JV_KIND_NUMBER && jv_get_kind(b) == JV_KIND_NUMBER;
            jv_free(a);
            jv_free(b);
            if (ok) return jv_copy(v);
        }
        break;
    }
    return jv_invalid();
}

/* Validate the keys of one table at `level` for `method`. Returns a normalised copy. */
static int check_table(const ctx *c, jv tbl, int level, int method, int ds, int sub, jv *out)
{
    *out = jv_object();
    unsigned ok_cats = allowed_cats(level, method, c->flags & SD_DC_CONTROLNET_OK);
    int iter = jv_object_iter(tbl);
    while (jv_object_iter_valid(tbl, iter)) {
        jv kj = jv_object_iter_key(tbl, iter);
        jv v = jv_object_iter_value(tbl, iter);
        const char *name = jv_string_value(kj);
        iter = jv_object_iter_next(tbl, iter);
        int rc = SD_OK;
        if (level == L_DATASET && !strcmp(name, "subsets")) { jv_free(kj); jv_free(v); continue; }
        const key_def *k = find_key(name);
        if (!k) {
            const char *best = NULL;
            int bd = 4;
            for (int i = 0; i < NKEYS; i++) {
                int d = lev(name, keys[i].name);
                if (d < bd) { bd = d; best = keys[i].name; }
            }
            if (level != L_DATASET && lev(name, "subsets") < bd) best = NULL;
            rc = best ? cfg_err(c, ds, sub, name, "unknown key (did you mean '%s'?)", best)
                      : cfg_err(c, ds, sub, name, "unknown key");
        } else if (!(k->cats & ok_cats)) {
            if (k->cats == C_CN_DIST && !(c->flags & SD_DC_CONTROLNET_OK))
                rc = cfg_err(c, ds, sub, name, "key not allowed (conditioning images need --masked_loss)");
            else if ((k->cats & (C_DB_DIST | C_FT_DIST | C_CN_DIST)) && level != L_SUBSET)
                rc = cfg_err(c, ds, sub, name, "key allowed only in a subset ([[datasets.subsets]])");
            else if (k->cats == C_DATASET && level == L_SUBSET)
                rc = cfg_err(c, ds, sub, name, "key allowed only in [general] and [[datasets]]");
            else
                rc = cfg_err(c, ds, sub, name, "key not allowed in a %s %s", sd_dc_method_name(method),
                             level == L_SUBSET ? "subset" : "dataset");
        } else if (jv_get_kind(v) == JV_KIND_NULL) {
            /* JSON null: None, as the reference (it is skipped by the fallback) */
        } else {
            jv nv = check_type(k, v);
            if (!jv_is_valid(nv)) {
                jv_free(nv);
                const char *got = sd_jv_kind_name(v);
                if (k->type == T_INTERP && jv_get_kind(v) == JV_KIND_STRING)
                    rc = cfg_err(c, ds, sub, name, "invalid value '%s' (expected %s)", jv_string_value(v),
                                 type_desc(k->type));
                else rc = cfg_err(c, ds, sub, name, "expected %s, got %s", type_desc(k->type), got);
            } else *out = jv_object_set(*out, jv_copy(kj), nv);
        }
        jv_free(kj);
        jv_free(v);
        if (rc < 0) { jv_free(*out); *out = jv_invalid(); return rc; }
    }
    return SD_OK;
}

/* First non-null of the chain, then the default; new reference. */
static jv resolve(const key_def *k, const jv *chain, int n)
{
    for (int i = 0; i < n; i++) {
        if (jv_get_kind(chain[i]) != JV_KIND_OBJECT) continue;
        jv v = jv_object_get(jv_copy(chain[i]), jv_string(k->name));
        if (jv_is_valid(v) && jv_get_kind(v) != JV_KIND_NULL) return v;
        jv_free(v);
    }
    if (!k->def) return jv_null();
    jv v;
    if (sd_json_parse(k->def, strlen(k->def), &v) < 0) return jv_null();
    return v;
}

/* The command-line object with types checked and resolutions normalised. */
static int check_cli(jv cli, jv *out)
{
    *out = jv_object();
    if (jv_get_kind(cli) != JV_KIND_OBJECT) return SD_OK;
    int iter = jv_object_iter(cli);
    while (jv_object_iter_valid(cli, iter)) {
        jv kj = jv_object_iter_key(cli, iter);
        jv v = jv_object_iter_value(cli, iter);
        iter = jv_object_iter_next(cli, iter);
        const key_def *k = find_key(jv_string_value(kj));
        if (k && jv_get_kind(v) != JV_KIND_NULL) {
            jv nv = check_type(k, v);
            if (!jv_is_valid(nv)) {
                int rc = sd_err(SD_EUSAGE, "option --%s: expected %s, got %s", k->name, type_desc(k->type),
                                sd_jv_kind_name(v));
                jv_free(nv); jv_free(kj); jv_free(v); jv_free(*out);
                *out = jv_invalid();
                return rc;
            }
            *out = jv_object_set(*out, jv_copy(kj), nv);
        }
        jv_free(kj);
        jv_free(v);
    }
    return SD_OK;
}

static int has_key(jv obj, const char *k)
{
    jv v = jv_object_get(jv_copy(obj), jv_string(k));
    int r = jv_is_valid(v) && jv_get_kind(v) != JV_KIND_NULL;
    jv_free(v);
    return r;
}

static const char *str_of(jv obj, const char *k)
{
    jv v = jv_object_get(jv_copy(obj), jv_string(k));
    const char *s = jv_get_kind(v) == JV_KIND_STRING ? jv_string_value(v) : NULL;
    jv_free(v);   /* the string stays alive inside obj */
    return s;
}

static double num_of(jv obj, const char *k, double dflt)
{
    jv v = jv_object_get(jv_copy(obj), jv_string(k));
    double x = jv_get_kind(v) == JV_KIND_NUMBER ? jv_number_value(v) : dflt;
    jv_free(v);
    return x;
}

static int bool_of(jv obj, const char *k)
{
    jv v = jv_object_get(jv_copy(obj), jv_string(k));
    int b = jv_get_kind(v) == JV_KIND_TRUE;
    jv_free(v);
    return b;
}

void sd_dataset_config_free(sd_dataset_config *c)
{
    if (!c) return;
    for (int i = 0; i < c->ndatasets; i++) {
        sd_dc_dataset *d = &c->datasets[i];
        for (int j = 0; j < d->nsubsets; j++) jv_free(d->subsets[j].params);
        free(d->subsets);
        jv_free(d->params);
    }
    free(c->datasets);
    for (int i = 0; i < c->nwarnings; i++) free(c->warnings[i]);
    free(c->warnings);
    free(c->name);
    memset(c, 0, sizeof *c);
}

/* Dataset-level checks of §1.5 (bucket rounding, resolution bounds). */
static int dataset_checks(const ctx *c, sd_dc_dataset *d)
{
    jv p = d->params;
    int ds = d->index;
    double steps = num_of(p, "bucket_reso_steps", 64);
    if (steps < 1) return cfg_err(c, ds, -1, "bucket_reso_steps", "must be positive, got %g", steps);
    if (bool_of(p, "enable_bucket")) {
        double mn = num_of(p, "min_bucket_reso", 256), mx = num_of(p, "max_bucket_reso", 1024);
        if (fmod(mn, steps) != 0) {
            double r = mn - fmod(mn, steps);
            warn(c->out, "%s: datasets[%d]: min_bucket_reso %g is not a multiple of bucket_reso_steps %g; rounded down to %g",
                 c->name, ds, mn, steps, r);
            mn = r;
            d->params = p = jv_object_set(p, jv_string("min_bucket_reso"), jv_number(mn));
        }
        if (fmod(mx, steps) != 0) {
            double r = mx + steps - fmod(mx, steps);
            warn(c->out, "%s: datasets[%d]: max_bucket_reso %g is not a multiple of bucket_reso_steps %g; rounded up to %g",
                 c->name, ds, mx, steps, r);
            mx = r;
            d->params = p = jv_object_set(p, jv_string("max_bucket_reso"), jv_number(mx));
        }
        jv reso = jv_object_get(jv_copy(p), jv_string("resolution"));
        if (jv_get_kind(reso) == JV_KIND_ARRAY) {
            jv a = jv_array_get(jv_copy(reso), 0), b = jv_array_get(jv_copy(reso), 1);
            double w = jv_number_value(a), h = jv_number_value(b);
            jv_free(a);
            jv_free(b);
            double lo = w < h ? w : h, hi = w < h ? h : w;
            if (lo < mn || hi > mx) {
                jv_free(reso);
                return cfg_err(c, ds, -1, "resolution",
                               "resolution %gx%g must lie within min_bucket_reso %g and max_bucket_reso %g",
                               w, h, mn, mx);
            }
        }
        jv_free(reso);
    }
    double vs = num_of(p, "validation_split", 0);
    if (vs < 0 || vs > 1)
        warn(c->out, "%s: datasets[%d]: validation_split %g is outside [0, 1]; no validation set", c->name, ds, vs);
    return SD_OK;
}

static int same_str(jv a, jv b, const char *k)
{
    const char *x = str_of(a, k), *y = str_of(b, k);
    return x && y && !strcmp(x, y);
}

int sd_dataset_config_from_jv(jv cfg, const char *name, const char *text, int is_toml, jv cli_in,
                              unsigned flags, sd_dataset_config *out)
{
    memset(out, 0, sizeof *out);
    out->name = strdup(name ? name : "dataset config");
    if (!out->name) return sd_err(SD_ENOMEM, "out of memory");
    locator L = {text, text ? strlen(text) : 0, is_toml};
    ctx c = {out->name, text ? &L : NULL, flags, out};
    jv cli = jv_invalid(), general = jv_invalid(), datasets = jv_invalid();
    int rc = SD_OK;

    if (jv_get_kind(cfg) != JV_KIND_OBJECT) {
        rc = sd_err(SD_EFORMAT, "%s: expected a table at the top level, got %s", out->name, sd_jv_kind_name(cfg));
        goto fail;
    }
    int iter = jv_object_iter(cfg);
    while (jv_object_iter_valid(cfg, iter)) {
        jv kj = jv_object_iter_key(cfg, iter);
        const char *k = jv_string_value(kj);
        int bad = strcmp(k, "general") && strcmp(k, "datasets");
        if (bad) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown top-level key '%s' (only [general] and [[datasets]] are allowed)", k);
            /* find the line: a "k =" or "[k]" line */
            int ln = 0;
            if (text) {
                const char *p = text;
                int l = 1;
                size_t kl = strlen(k);
                while (*p) {
                    const char *s = p;
                    while (*s == ' ' || *s == '\t' || *s == '[' || *s == '"') s++;
                    if (!strncmp(s, k, kl) && (s[kl] == ' ' || s[kl] == '=' || s[kl] == ']' || s[kl] == '"' || s[kl] == '.')) { ln = l; break; }
                    const char *nl = strchr(p, '\n');
                    if (!nl) break;
                    p = nl + 1;
                    l++;
                }
            }
            rc = ln ? sd_err(SD_EFORMAT, "%s:%d: %s", out->name, ln, msg) : sd_err(SD_EFORMAT, "%s: %s", out->name, msg);
            jv_free(kj);
            goto fail;
        }
        jv_free(kj);
        iter = jv_object_iter_next(cfg, iter);
    }
    if ((rc = check_cli(cli_in, &cli)) < 0) goto fail;

    jv graw = jv_object_get(jv_copy(cfg), jv_string("general"));
    if (jv_is_valid(graw) && jv_get_kind(graw) != JV_KIND_NULL && jv_get_kind(graw) != JV_KIND_OBJECT) {
        rc = cfg_err(&c, -1, -1, NULL, "expected a table, got %s", sd_jv_kind_name(graw));
        jv_free(graw);
        goto fail;
    }
    if (jv_get_kind(graw) == JV_KIND_OBJECT) rc = check_table(&c, graw, L_GENERAL, SD_DC_DREAMBOOTH, -1, -1, &general);
    else general = jv_object();
    jv_free(graw);
    if (rc < 0) goto fail;

    datasets = jv_object_get(jv_copy(cfg), jv_string("datasets"));
    if (!jv_is_valid(datasets) || jv_get_kind(datasets) == JV_KIND_NULL) {
        jv_free(datasets);
        datasets = jv_array();
    }
    if (jv_get_kind(datasets) != JV_KIND_ARRAY) {
        rc = sd_err(SD_EFORMAT, "%s: datasets: expected an array of tables ([[datasets]]), got %s", out->name,
                    sd_jv_kind_name(datasets));
        goto fail;
    }
    int nds = jv_array_length(jv_copy(datasets));
    out->datasets = calloc((size_t)(nds ? nds : 1), sizeof *out->datasets);
    if (!out->datasets) { rc = sd_err(SD_ENOMEM, "out of memory"); goto fail; }
    for (int i = 0; i < nds; i++) {
        jv draw = jv_array_get(jv_copy(datasets), i);
        sd_dc_dataset *d = &out->datasets[out->ndatasets++];
        d->index = i;
        d->params = jv_null();
        if (jv_get_kind(draw) != JV_KIND_OBJECT) {
            rc = cfg_err(&c, i, -1, NULL, "expected a table, got %s", sd_jv_kind_name(draw));
            jv_free(draw);
            goto fail;
        }
        jv subs = jv_object_get(jv_copy(draw), jv_string("subsets"));
        if (!jv_is_valid(subs) || jv_get_kind(subs) == JV_KIND_NULL) { jv_free(subs); subs = jv_array(); }
        if (jv_get_kind(subs) != JV_KIND_ARRAY) {
            rc = cfg_err(&c, i, -1, "subsets", "expected an array of tables ([[datasets.subsets]]), got %s",
                         sd_jv_kind_name(subs));
            jv_free(subs); jv_free(draw);
            goto fail;
        }
        int ns = jv_array_length(jv_copy(subs));
        /* method detection (§1.4) */
        int all_cn = 1, all_md = 1, any_md = 0;
        for (int j = 0; j < ns; j++) {
            jv s = jv_array_get(jv_copy(subs), j);
            if (jv_get_kind(s) != JV_KIND_OBJECT) {
                rc = cfg_err(&c, i, j, NULL, "expected a table, got %s", sd_jv_kind_name(s));
                jv_free(s); jv_free(subs); jv_free(draw);
                goto fail;
            }
            int md = jv_object_has(jv_copy(s), jv_string("metadata_file"));
            int cn = jv_object_has(jv_copy(s), jv_string("conditioning_data_dir"));
            all_md &= md;
            any_md |= md;
            all_cn &= cn;
            jv_free(s);
        }
        if ((flags & SD_DC_CONTROLNET_OK) && all_cn) d->method = SD_DC_CONTROLNET;
        else if (all_md) d->method = SD_DC_FINETUNE;
        else if (!any_md) d->method = SD_DC_DREAMBOOTH;
        else {
            rc = cfg_err(&c, i, -1, NULL,
                         "DreamBooth subsets (without metadata_file) and fine-tuning subsets (with metadata_file) "
                         "cannot be mixed in one dataset; split them into separate datasets");
            jv_free(subs); jv_free(draw);
            goto fail;
        }
        if (ns == 0) warn(out, "%s: datasets[%d] has no subsets", out->name, i);
        jv dchk;
        rc = check_table(&c, draw, L_DATASET, d->method, i, -1, &dchk);
        if (rc < 0) { jv_free(subs); jv_free(draw); goto fail; }
        jv dchain[3] = {dchk, general, cli};
        d->params = jv_object();
        for (int k = 0; k < NKEYS; k++)
            if (keys[k].cats & C_DATASET) d->params = jv_object_set(d->params, jv_string(keys[k].name), resolve(&keys[k], dchain, 3));
        d->subsets = calloc((size_t)(ns ? ns : 1), sizeof *d->subsets);
        if (!d->subsets) { jv_free(dchk); jv_free(subs); jv_free(draw); rc = sd_err(SD_ENOMEM, "out of memory"); goto fail; }
        for (int j = 0; j < ns && rc == SD_OK; j++) {
            jv s = jv_array_get(jv_copy(subs), j), schk;
            rc = check_table(&c, s, L_SUBSET, d->method, i, j, &schk);
            jv_free(s);
            if (rc < 0) break;
            const char *req[2] = {d->method == SD_DC_FINETUNE ? "metadata_file" : "image_dir",
                                  d->method == SD_DC_CONTROLNET ? "conditioning_data_dir" : NULL};
            for (int r = 0; r < 2 && rc == SD_OK; r++)
                if (req[r] && !has_key(schk, req[r]))
                    rc = cfg_err(&c, i, j, NULL, "required key '%s' is missing", req[r]);
            if (rc < 0) { jv_free(schk); break; }
            jv chain[4] = {schk, dchk, general, cli};
            jv p = jv_object();
            for (int k = 0; k < NKEYS; k++) {
                const key_def *kd = &keys[k];
                int in_sub = (kd->cats & (C_SUB | C_DO)) ||
                             (kd->cats & allowed_cats(L_SUBSET, d->method, 1) & ~(unsigned)(C_SUB | C_DO));
                if (!in_sub) continue;
                p = jv_object_set(p, jv_string(kd->name), resolve(kd, chain, 4));
            }
            /* a leading dot for caption_extension */
            const char *ext = str_of(p, "caption_extension");
            if (ext && ext[0] != '.') {
                char *e2 = malloc(strlen(ext) + 2);
                if (e2) {
                    e2[0] = '.';
                    strcpy(e2 + 1, ext);
                    p = jv_object_set(p, jv_string("caption_extension"), jv_string(e2));
                    free(e2);
                }
            }
            jv_free(schk);
            /* drops: repeats < 1, duplicates */
            double rep = num_of(p, "num_repeats", 1);
            if (rep < 1) {
                warn(out, "%s: datasets[%d].subsets[%d]: num_repeats %g < 1; subset ignored", out->name, i, j, rep);
                jv_free(p);
                continue;
            }
            int dup = 0;
            for (int q = 0; q < d->nsubsets && !dup; q++) {
                jv o = d->subsets[q].params;
                if (d->method == SD_DC_DREAMBOOTH) dup = same_str(o, p, "image_dir");
                else if (d->method == SD_DC_FINETUNE) dup = same_str(o, p, "metadata_file");
                else dup = same_str(o, p, "image_dir") && same_str(o, p, "conditioning_data_dir");
            }
            if (dup) {
                warn(out, "%s: datasets[%d].subsets[%d]: duplicate of an earlier subset (same %s); ignored", out->name,
                     i, j, d->method == SD_DC_FINETUNE ? "metadata_file" : "image_dir");
                jv_free(p);
                continue;
            }
            sd_dc_subset *sb = &d->subsets[d->nsubsets++];
            sb->params = p;
            sb->index = j;
            sb->line = locate(&L, i, j, NULL);
        }
        jv_free(dchk);
        jv_free(subs);
        jv_free(draw);
        if (rc < 0) goto fail;
        if ((rc = dataset_checks(&c, d)) < 0) goto fail;
    }
    jv_free(cli);
    jv_free(general);
    jv_free(datasets);
    return SD_OK;
fail:
    jv_free(cli);
    jv_free(general);
    jv_free(datasets);
    {
        /* keep the message, free the rest */
        char *msg = strdup(sd_errmsg());
        sd_dataset_config_free(out);
        if (msg) { sd_err(rc, "%s", msg); free(msg); }
    }
    return rc;
}

static int ends_with_ci(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

/* "invalid JSON at column N: ..." (N counted over the whole text) -> "line:col: ..." */
static int json_file_error(const char *path, const char *text, size_t n)
{
    char m[1024];
    snprintf(m, sizeof m, "%s", sd_errmsg());
    const char *at = strstr(m, "at column ");
    if (at) {
        size_t col = strtoul(at + 10, NULL, 10);
        const char *rest = strchr(at, ':');
        size_t line = 1, lc = 1;
        for (size_t i = 0; i + 1 < col && i < n; i++) {
            if (text[i] == '\n') { line++; lc = 1; } else lc++;
        }
        char head[128];
        size_t hl = (size_t)(at - m);
        if (hl >= sizeof head) hl = sizeof head - 1;
        memcpy(head, m, hl);
        head[hl] = 0;
        while (hl && head[hl - 1] == ' ') head[--hl] = 0;
        return sd_err(SD_EFORMAT, "%s:%zu:%zu: %s%s", path, line, lc, head, rest ? rest : "");
    }
    return sd_err_prefix(SD_EFORMAT, "%s", path);
}

int sd_dataset_config_load(const char *path, jv cli, unsigned flags, sd_dataset_config *out)
{
    memset(out, 0, sizeof *out);
    int is_toml = ends_with_ci(path, ".toml");
    if (!is_toml && !ends_with_ci(path, ".json"))
        return sd_err(SD_EFORMAT, "%s: not a supported config file format (the name must end in .toml or .json)", path);
    char *text = NULL;
    size_t n = 0;
    int rc = sd_read_file(path, (size_t)64 << 20, &text, &n);
    if (rc < 0) return rc;
    jv cfg;
    if (is_toml) rc = sd_toml_parse(text, n, path, &cfg);
    else {
        rc = sd_json_parse(text, n, &cfg);
        if (rc < 0) rc = json_file_error(path, text, n);
    }
    if (rc < 0) { free(text); return rc; }
    rc = sd_dataset_config_from_jv(cfg, path, text, is_toml, cli, flags, out);
    jv_free(cfg);
    free(text);
    return rc;
}

int sd_dc_parse_folder_name(const char *name, char **class_tokens)
{
    *class_tokens = NULL;
    const char *us = strchr(name, '_');
    size_t fl = us ? (size_t)(us - name) : strlen(name);
    /* Python int(): optional surrounding whitespace and sign, decimal digits */
    char buf[32];
    if (fl == 0 || fl >= sizeof buf) return 0;
    memcpy(buf, name, fl);
    buf[fl] = 0;
    char *s = buf;
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
    const char *d = s;
    if (*d == '+' || *d == '-') d++;
    if (!*d) return 0;
    for (const char *q = d; *q; q++)
        if (*q < '0' || *q > '9') return 0;
    long v = strtol(s, NULL, 10);
    if (v > 1000000000L) v = 1000000000L;
    *class_tokens = strdup(us ? us + 1 : "");
    if (!*class_tokens) return 0;
    return v < 0 ? -1 : (int)v;
}

static int add_folder_subsets(sd_dataset_config *out, const char *base, int is_reg, jv *subsets)
{
    struct stat st;
    if (stat(base, &st) < 0) return sd_err(errno == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", base, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return sd_err(SD_EINVAL, "%s: not a directory", base);
    DIR *dir = opendir(base);
    if (!dir) return sd_err(SD_EIO, "%s: %s", base, strerror(errno));
    struct dirent *de;
    size_t bl = strlen(base);
    int sep = bl && base[bl - 1] != '/';
    while ((de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = malloc(bl + strlen(de->d_name) + 2);
        if (!p) { closedir(dir); return sd_err(SD_ENOMEM, "out of memory"); }
        sprintf(p, "%s%s%s", base, sep ? "/" : "", de->d_name);
        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode)) { free(p); continue; }
        char *ct = NULL;
        int rep = sd_dc_parse_folder_name(de->d_name, &ct);
        if (!ct) {
            warn(out, "%s: ignoring directory without repeats (name it <repeats>_<class tokens>)", p);
            free(p);
            continue;
        }
        if (rep < 1) {
            warn(out, "%s: repeats %d < 1; directory ignored", p, rep);
            free(ct);
            free(p);
            continue;
        }
        jv s = jv_object();
        s = jv_object_set(s, jv_string("image_dir"), jv_string(p));
        s = jv_object_set(s, jv_string("num_repeats"), jv_number(rep));
        s = jv_object_set(s, jv_string("is_reg"), jv_bool(is_reg));
        s = jv_object_set(s, jv_string("class_tokens"), jv_string(ct));
        *subsets = jv_array_append(*subsets, s);
        free(ct);
        free(p);
    }
    closedir(dir);
    return SD_OK;
}

int sd_dataset_config_folders(const char *train_data_dir, const char *reg_data_dir, const char *in_json,
                              jv cli, unsigned flags, sd_dataset_config *out)
{
    memset(out, 0, sizeof *out);
    sd_dataset_config tmp;
    memset(&tmp, 0, sizeof tmp);
    jv subsets = jv_array();
    char name[1024];
    int rc = SD_OK;
    if (in_json) {
        jv s = jv_object();
        if (train_data_dir) s = jv_object_set(s, jv_string("image_dir"), jv_string(train_data_dir));
        s = jv_object_set(s, jv_string("metadata_file"), jv_string(in_json));
        subsets = jv_array_append(subsets, s);
        snprintf(name, sizeof name, "--in_json %s", in_json);
    } else {
        if (train_data_dir) rc = add_folder_subsets(&tmp, train_data_dir, 0, &subsets);
        if (rc == SD_OK && reg_data_dir) rc = add_folder_subsets(&tmp, reg_data_dir, 1, &subsets);
        snprintf(name, sizeof name, "--train_data_dir %s", train_data_dir ? train_data_dir : "(none)");
    }
    if (rc < 0) {
        jv_free(subsets);
        char *msg = strdup(sd_errmsg());
        sd_dataset_config_free(&tmp);
        if (msg) { sd_err(rc, "%s", msg); free(msg); }
        return rc;
    }
    jv cfg = JV_OBJECT(jv_string("datasets"), JV_ARRAY(JV_OBJECT(jv_string("subsets"), subsets)));
    rc = sd_dataset_config_from_jv(cfg, name, NULL, 0, cli, flags, out);
    jv_free(cfg);
    if (rc == SD_OK && tmp.nwarnings) {
        /* folder warnings first */
        char **w = realloc(tmp.warnings, (size_t)(tmp.nwarnings + out->nwarnings) * sizeof *w);
        if (w) {
            if (out->nwarnings) memcpy(w + tmp.nwarnings, out->warnings, (size_t)out->nwarnings * sizeof *w);
            free(out->warnings);
            out->warnings = w;
            out->nwarnings += tmp.nwarnings;
            tmp.warnings = NULL;
            tmp.nwarnings = 0;
        }
    }
    sd_dataset_config_free(&tmp);
    return rc;
}
