#include "diffusion/prompt_file.h"

#include <ctype.h>
#include <errno.h>
#include <jv.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "base/fileio.h"
#include "diffusion/samplers.h"
#include "io/jsonl.h"
#include "io/toml.h"

#define MAX_FILE (16u << 20)

int sd_sample_prompt_init(sd_sample_prompt *p)
{
    memset(p, 0, sizeof *p);
    p->width = p->height = 512;
    p->steps = 30;
    p->scale = 7.5;
    p->prompt = strdup("");
    return p->prompt ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
}

void sd_sample_prompt_free(sd_sample_prompt *p)
{
    if (!p) return;
    free(p->prompt);
    free(p->negative_prompt);
    free(p->sampler);
    free(p->controlnet_image);
    free(p->flow_shift);
    memset(p, 0, sizeof *p);
}

void sd_prompt_list_free(sd_prompt_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) sd_sample_prompt_free(&l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int set_str(char **dst, const char *s, size_t n)
{
    char *d = dupn(s, n);
    if (!d) return sd_err(SD_ENOMEM, "out of memory");
    free(*dst);
    *dst = d;
    return SD_OK;
}

/* ---- UTF-8 and Python's str.strip() --------------------------------------------------------- */

/* decode one code point at s (n bytes left); returns its length, 0 if invalid */
static int utf8_cp(const unsigned char *s, size_t n, unsigned *cp)
{
    if (s[0] < 0x80) { *cp = s[0]; return 1; }
    int len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (!len || s[0] > 0xf4 || (size_t)len > n) return 0;
    unsigned c = s[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static int utf8_valid(const char *s, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        unsigned cp;
        int l = utf8_cp((const unsigned char *)s + i, n - i, &cp);
        if (!l) {
            *bad = i;
            return 0;
        }
        i += (size_t)l;
    }
    return 1;
}

static int py_space(unsigned c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* strip Python whitespace from both ends of valid UTF-8 [*s, *s + *n) */
static void py_strip(const char **s, size_t *n)
{
    const unsigned char *p = (const unsigned char *)*s;
    size_t a = 0, b = *n;
    while (a < b) {
        unsigned cp;
        int l = utf8_cp(p + a, b - a, &cp);
        if (!l || !py_space(cp)) break;
        a += (size_t)l;
    }
    while (b > a) {
        size_t k = b - 1;
        while (k > a && (p[k] & 0xc0) == 0x80) k--;
        unsigned cp;
        int l = utf8_cp(p + k, b - k, &cp);
        if (!l || (size_t)l != b - k || !py_space(cp)) break;
        b = k;
    }
    *s += a;
    *n = b - a;
}

/* ---- one line -------------------------------------------------------------------------------- */

/* user text for a one-line message: at most 40 bytes, control characters as '?' */
static const char *show(char *buf, const char *s, size_t n)
{
    size_t k = n < 40 ? n : 40;
    for (size_t i = 0; i < k; i++) buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    buf[k] = 0;
    return buf;
}

static int parse_uint(const char *v, size_t n, uint64_t max, uint64_t *out)
{
    size_t i = 0;
    uint64_t x = 0;
    if (!n || !isdigit((unsigned char)v[0])) return 0;
    for (; i < n && isdigit((unsigned char)v[i]); i++) {
        unsigned d = (unsigned)(v[i] - '0');
        if (x > (max - d) / 10) return 0;
        x = x * 10 + d;
    }
    for (; i < n; i++)
        if (!isspace((unsigned char)v[i])) return 0;
    *out = x;
    return 1;
}

/* the reference's ([\d\.]+) then float(): digits and dots, a valid decimal number */
static int parse_float(const char *v, size_t n, double *out)
{
    size_t e = 0;
    while (e < n && (isdigit((unsigned char)v[e]) || v[e] == '.')) e++;
    for (size_t i = e; i < n; i++)
        if (!isspace((unsigned char)v[i])) return 0;
    if (!e) return 0;
    char buf[64];
    if (e >= sizeof buf) return 0;
    memcpy(buf, v, e);
    buf[e] = 0;
    int dots = 0, digits = 0;
    for (size_t i = 0; i < e; i++) dots += buf[i] == '.', digits += buf[i] != '.';
    if (dots > 1 || !digits) return 0;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (*end || errno || !isfinite(d)) return 0;
    *out = d;
    return 1;
}

static int check_size(const char *where, const char *what, uint64_t v)
{
    if (v < 64 || v % 8 != 0 || v > 16384)
        return sd_err(SD_EFORMAT, "%s: %s %llu must be a multiple of 8 from 64 to 16384", where, what,
                      (unsigned long long)v);
    return SD_OK;
}

static int check_sampler(const char *where, const char *name_)
{
    sd_sampler_kind k;
    char sb[48];
    const char *name = show(sb, name_, strlen(name_));
    if (sd_sampler_parse(name_, &k) != SD_OK)
        return sd_err(SD_EFORMAT, "%s: unknown sampler '%s' (ddim, pndm, lms, euler, euler_a, heun, dpm_2, "
                      "dpm_2_a, dpmsolver, dpmsolver++, dpmsingle, k_lms, k_euler, k_euler_a, k_dpm_2, k_dpm_2_a)",
                      where, name);
    return SD_OK;
}

static int parse_option(const char *pc, size_t n, const char *where, sd_sample_prompt *p)
{
    size_t sp = 0;
    while (sp < n && pc[sp] != ' ') sp++;
    char name[16];
    size_t nl = sp < sizeof name - 1 ? sp : sizeof name - 1;
    memcpy(name, pc, nl);
    name[nl] = 0;
    static const char *known[] = {"w", "h", "d", "s", "l", "g", "n", "ss", "cn", "ctr", "rcfg", "fs"};
    int opt = -1;
    if (sp < sizeof name - 1)
        for (int i = 0; i < (int)(sizeof known / sizeof known[0]); i++)
            if (!strcasecmp(name, known[i])) opt = i;
    char sb[48];
    if (opt < 0) return sd_err(SD_EFORMAT, "%s: unknown option '--%s'", where, show(sb, pc, n));
    const char *v = sp < n ? pc + sp + 1 : pc + n;
    size_t vn = sp < n ? n - sp - 1 : 0;
    if (!vn) return sd_err(SD_EFORMAT, "%s: option --%s needs a value", where, known[opt]);
    uint64_t u;
    double d;
    switch (opt) {
    case 0:
    case 1:
        if (!parse_uint(v, vn, 1u << 30, &u))
            return sd_err(SD_EFORMAT, "%s: --%s '%s' is not a whole number", where, known[opt], show(sb, v, vn));
        if (check_size(where, opt == 0 ? "width" : "height", u)) return SD_EFORMAT;
        if (opt == 0) p->width = (int)u, p->has_width = 1;
        else p->height = (int)u, p->has_height = 1;
        return SD_OK;
    case 2:
        if (!parse_uint(v, vn, UINT64_MAX, &u))
            return sd_err(SD_EFORMAT, "%s: --d '%s' is not a seed (a whole number below 2^64)", where, show(sb, v, vn));
        p->has_seed = 1;
        p->seed = u;
        return SD_OK;
    case 3:
        if (!parse_uint(v, vn, UINT64_MAX, &u))
            return sd_err(SD_EFORMAT, "%s: --s '%s' is not a whole number", where, show(sb, v, vn));
        p->steps = u < 1 ? 1 : u > 1000 ? 1000 : (int)u;
        return SD_OK;
    case 4:
    case 5:
        if (!parse_float(v, vn, &d))
            return sd_err(SD_EFORMAT, "%s: --%s '%s' is not a number", where, known[opt], show(sb, v, vn));
        if (opt == 4) p->scale = d;
        else p->has_guidance_scale = 1, p->guidance_scale = d;
        return SD_OK;
    case 6: return set_str(&p->negative_prompt, v, vn);
    case 7: {
        int rc = set_str(&p->sampler, v, vn);
        return rc ? rc : check_sampler(where, p->sampler);
    }
    case 8: return set_str(&p->controlnet_image, v, vn);
    case 9:
    case 10: {
        char buf[64];
        size_t k = vn < sizeof buf - 1 ? vn : sizeof buf - 1;
        memcpy(buf, v, k);
        buf[k] = 0;
        char *end;
        errno = 0;
        d = strtod(buf, &end);
        while (*end && isspace((unsigned char)*end)) end++;
        if (end == buf || *end || errno || !isfinite(d) || vn >= sizeof buf)
            return sd_err(SD_EFORMAT, "%s: --%s '%s' is not a number", where, known[opt], show(sb, v, vn));
        if (opt == 9) p->has_cfg_trunc_ratio = 1, p->cfg_trunc_ratio = d;
        else p->has_renorm_cfg = 1, p->renorm_cfg = d;
        return SD_OK;
    }
    default: return set_str(&p->flow_shift, v, vn);
    }
}

static int parse_line_n(const char *line, size_t n, const char *where, sd_sample_prompt *out)
{
    int rc = sd_sample_prompt_init(out);
    if (rc) return rc;
    size_t bad;
    if (!utf8_valid(line, n, &bad)) {
        sd_sample_prompt_free(out);
        return sd_err(SD_EFORMAT, "%s: invalid UTF-8 at byte %zu", where, bad + 1);
    }
    /* split on " --" */
    const char *p = line, *end = line + n;
    const char *sep = memmem(p, (size_t)(end - p), " --", 3);
    size_t first = sep ? (size_t)(sep - p) : n;
    rc = set_str(&out->prompt, p, first);
    while (!rc && sep) {
        p = sep + 3;
        sep = memmem(p, (size_t)(end - p), " --", 3);
        size_t len = sep ? (size_t)(sep - p) : (size_t)(end - p);
        rc = parse_option(p, len, where, out);
    }
    if (rc) sd_sample_prompt_free(out);
    return rc;
}

int sd_prompt_line_parse(const char *line, const char *where, sd_sample_prompt *out)
{
    return parse_line_n(line, strlen(line), where ? where : "prompt", out);
}

/* ---- files ----------------------------------------------------------------------------------- */

static int push(sd_prompt_list *l, size_t *cap, sd_sample_prompt *p)
{
    if (l->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        sd_sample_prompt *ni = realloc(l->items, nc * sizeof *ni);
        if (!ni) {
            sd_sample_prompt_free(p);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        l->items = ni;
        *cap = nc;
    }
    p->index = (int)l->n;
    l->items[l->n++] = *p;
    return SD_OK;
}

static int parse_txt(const char *text, size_t n, const char *name, sd_prompt_list *out)
{
    size_t cap = 0, i = 0;
    int lineno = 0;
    if (n >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) i = 3;
    while (i < n) {
        /* universal newlines: \n, \r\n, \r */
        size_t s = i;
        while (i < n && text[i] != '\n' && text[i] != '\r') i++;
        size_t e = i;
        if (i < n && text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') i += 2;
        else if (i < n) i++;
        lineno++;
        const char *l = text + s;
        size_t ln = e - s;
        char where[300];
        snprintf(where, sizeof where, "%s:%d", name, lineno);
        size_t bad;
        if (!utf8_valid(l, ln, &bad)) return sd_err(SD_EFORMAT, "%s: invalid UTF-8 at byte %zu", where, bad + 1);
        if (ln && l[0] == '#') continue; /* the reference tests the unstripped line */
        py_strip(&l, &ln);
        if (!ln) continue;
        sd_sample_prompt p;
        int rc = parse_line_n(l, ln, where, &p);
        if (rc) return rc;
        p.line = lineno;
        if ((rc = push(out, &cap, &p))) return rc;
    }
    return SD_OK;
}

static const char *const obj_keys[] = {
    "prompt", "negative_prompt", "width", "height", "seed", "sample_steps", "scale", "guidance_scale",
    "sample_sampler", "controlnet_image", "cfg_trunc_ratio", "renorm_cfg", "flow_shift", "enum", "subset",
};

static int get_int(jv v, const char *where, const char *key, double lo, double hi, double *out)
{
    if (jv_get_kind(v) != JV_KIND_NUMBER)
        return sd_err(SD_EFORMAT, "%s: '%s' must be a number", where, key);
    double d = jv_number_value(v);
    if (d != floor(d) || !(d >= lo && d <= hi))
        return sd_err(SD_EFORMAT, "%s: '%s' %g must be a whole number from %.0f to %.0f", where, key, d, lo, hi);
    *out = d;
    return SD_OK;
}

/* one object entry (consumes nothing; o is borrowed) */
static int parse_obj(jv o, const char *where, sd_sample_prompt *p)
{
    int rc = sd_sample_prompt_init(p);
    if (rc) return rc;
    int it = jv_object_iter(o);
    while (!rc && jv_object_iter_valid(o, it)) {
        jv k = jv_object_iter_key(o, it);
        jv v = jv_object_iter_value(o, it);
        char kb[48];
        const char *key = show(kb, jv_string_value(k), (size_t)jv_string_length_bytes(jv_copy(k)));
        int idx = -1;
        for (int i = 0; i < (int)(sizeof obj_keys / sizeof obj_keys[0]); i++)
            if (!strcmp(jv_string_value(k), obj_keys[i])) idx = i;
        double d = 0;
        jv_kind kind = jv_get_kind(v);
        if (idx < 0) {
            rc = sd_err(SD_EFORMAT, "%s: unknown key '%s'", where, key);
        } else if (idx == 0 || idx == 1 || idx == 8 || idx == 9 || idx == 12) {
            if (kind != JV_KIND_STRING && !(idx == 12 && kind == JV_KIND_NUMBER)) {
                rc = sd_err(SD_EFORMAT, "%s: '%s' must be a string", where, key);
            } else {
                char num[64];
                const char *s = kind == JV_KIND_STRING ? jv_string_value(v) : num;
                size_t sl = kind == JV_KIND_STRING ? (size_t)jv_string_length_bytes(jv_copy(v)) : 0;
                if (kind != JV_KIND_STRING) sl = (size_t)snprintf(num, sizeof num, "%.17g", jv_number_value(v));
                char **dst[] = {&p->prompt, &p->negative_prompt, NULL, NULL, NULL, NULL, NULL, NULL,
                                &p->sampler, &p->controlnet_image, NULL, NULL, &p->flow_shift};
                rc = set_str(dst[idx], s, sl);
                if (!rc && idx == 8) rc = check_sampler(where, p->sampler);
            }
        } else if (idx == 2 || idx == 3) {
            rc = get_int(v, where, key, 0, 16384, &d);
            if (!rc && check_size(where, key, (uint64_t)d)) rc = SD_EFORMAT;
            if (!rc) {
                *(idx == 2 ? &p->width : &p->height) = (int)d;
                *(idx == 2 ? &p->has_width : &p->has_height) = 1;
            }
        } else if (idx == 4) {
            rc = get_int(v, where, key, 0, 9007199254740992.0, &d);
            if (!rc) p->has_seed = 1, p->seed = (uint64_t)d;
        } else if (idx == 5) {
            rc = get_int(v, where, key, 1, 1000, &d);
            if (!rc) p->steps = (int)d;
        } else if (idx == 6 || idx == 7 || idx == 10 || idx == 11) {
            if (kind != JV_KIND_NUMBER || !isfinite(jv_number_value(v))) {
                rc = sd_err(SD_EFORMAT, "%s: '%s' must be a number", where, key);
            } else {
                d = jv_number_value(v);
                if (idx == 6) p->scale = d;
                else if (idx == 7) p->has_guidance_scale = 1, p->guidance_scale = d;
                else if (idx == 10) p->has_cfg_trunc_ratio = 1, p->cfg_trunc_ratio = d;
                else p->has_renorm_cfg = 1, p->renorm_cfg = d;
            }
        }
        jv_free(k);
        jv_free(v);
        it = jv_object_iter_next(o, it);
    }
    if (rc) sd_sample_prompt_free(p);
    return rc;
}

static int parse_entries(jv arr, const char *name, int strings_ok, sd_prompt_list *out)
{
    size_t cap = 0;
    int n = jv_array_length(jv_copy(arr));
    for (int i = 0; i < n; i++) {
        jv e = jv_array_get(jv_copy(arr), i);
        char where[300];
        snprintf(where, sizeof where, "%s: entry %d", name, i + 1);
        sd_sample_prompt p;
        int rc;
        if (jv_get_kind(e) == JV_KIND_STRING && strings_ok)
            rc = parse_line_n(jv_string_value(e), (size_t)jv_string_length_bytes(jv_copy(e)), where, &p);
        else if (jv_get_kind(e) == JV_KIND_OBJECT)
            rc = parse_obj(e, where, &p);
        else
            rc = sd_err(SD_EFORMAT, "%s: must be %s", where, strings_ok ? "a string or an object" : "a table");
        jv_free(e);
        if (!rc) rc = push(out, &cap, &p);
        if (rc) return rc;
    }
    return SD_OK;
}

static int parse_toml(const char *text, size_t n, const char *name, sd_prompt_list *out)
{
    jv root;
    int rc = sd_toml_parse(text, n, name, &root);
    if (rc) return rc;
    jv pr = jv_object_get(jv_copy(root), jv_string("prompt"));
    if (jv_get_kind(pr) != JV_KIND_OBJECT) {
        rc = sd_err(SD_EFORMAT, "%s: no [prompt] table", name);
        goto done;
    }
    jv subs = jv_object_get(jv_copy(pr), jv_string("subset"));
    if (jv_get_kind(subs) != JV_KIND_ARRAY) {
        jv_free(subs);
        rc = sd_err(SD_EFORMAT, "%s: no [[prompt.subset]] tables", name);
        goto done;
    }
    /* merge: dict(**prompt, **subset) — a key in both is an error */
    jv merged = jv_array();
    int ns = jv_array_length(jv_copy(subs));
    for (int i = 0; i < ns && !rc; i++) {
        jv s = jv_array_get(jv_copy(subs), i);
        if (jv_get_kind(s) != JV_KIND_OBJECT) {
            rc = sd_err(SD_EFORMAT, "%s: prompt.subset entry %d must be a table", name, i + 1);
            jv_free(s);
            break;
        }
        jv m = jv_copy(pr);
        int it = jv_object_iter(s);
        while (jv_object_iter_valid(s, it)) {
            jv k = jv_object_iter_key(s, it);
            if (jv_object_has(jv_copy(pr), jv_copy(k))) {
                char kb[48];
                rc = sd_err(SD_EFORMAT, "%s: prompt.subset entry %d: key '%s' is also in [prompt]", name, i + 1,
                            show(kb, jv_string_value(k), strlen(jv_string_value(k))));
                jv_free(k);
                break;
            }
            m = jv_object_set(m, k, jv_object_iter_value(s, it));
            it = jv_object_iter_next(s, it);
        }
        jv_free(s);
        merged = jv_array_append(merged, m);
    }
    jv_free(subs);
    if (!rc) rc = parse_entries(merged, name, 0, out);
    jv_free(merged);
done:
    jv_free(pr);
    jv_free(root);
    return rc;
}

static int parse_json(const char *text, size_t n, const char *name, sd_prompt_list *out)
{
    jv v;
    int rc = sd_json_parse(text, n, &v); /* the suite's strict parser (libjq 1.6's leaks on errors) */
    if (rc) {
        char mb[200];
        snprintf(mb, sizeof mb, "%s", sd_errmsg());
        for (char *c = mb; *c; c++)
            if ((unsigned char)*c < 0x20) *c = ' ';
        jv_free(v);
        return sd_err(SD_EFORMAT, "%s: %s", name, mb);
    }
    if (jv_get_kind(v) != JV_KIND_ARRAY) rc = sd_err(SD_EFORMAT, "%s: must be a JSON list of prompts", name);
    else rc = parse_entries(v, name, 1, out);
    jv_free(v);
    return rc;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int sd_prompt_file_parse(const char *text, size_t n, const char *name, sd_prompt_list *out)
{
    out->items = NULL;
    out->n = 0;
    if (n > MAX_FILE) return sd_err(SD_ERANGE, "%s: larger than %u bytes", name, MAX_FILE);
    int rc;
    if (ends_with(name, ".txt")) rc = parse_txt(text, n, name, out);
    else if (ends_with(name, ".toml")) rc = parse_toml(text, n, name, out);
    else if (ends_with(name, ".json")) rc = parse_json(text, n, name, out);
    else rc = sd_err(SD_EINVAL, "%s: prompt files must end in .txt, .toml or .json", name);
    if (rc) sd_prompt_list_free(out);
    return rc;
}

int sd_prompt_file_load(const char *path, sd_prompt_list *out)
{
    out->items = NULL;
    out->n = 0;
    if (!ends_with(path, ".txt") && !ends_with(path, ".toml") && !ends_with(path, ".json"))
        return sd_err(SD_EINVAL, "%s: prompt files must end in .txt, .toml or .json", path);
    char *text = NULL;
    size_t n = 0;
    int rc = sd_read_file(path, MAX_FILE, &text, &n);
    if (rc) return rc;
    rc = sd_prompt_file_parse(text, n, path, out);
    free(text);
    return rc;
}
