/* Command line + config overlay; see cmdline.h. */
#include "io/cmdline.h"
#include "base/error.h"
#include "base/fileio.h"
#include "io/toml.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (64u << 20)

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

char *sd_cmdline_config_path(const char *name)
{
    size_t n = strlen(name);
    char *p = malloc(n + 6);
    if (!p) return NULL;
    memcpy(p, name, n + 1);
    if (!ends_with(name, ".toml") && !ends_with(name, ".json")) memcpy(p + n, ".toml", 6);
    return p;
}

int sd_cmdline_load_config(sd_opts *o, const char *path)
{
    jv cfg;
    int rc;
    if (ends_with(path, ".json")) {
        char *text = NULL;
        size_t n = 0;
        rc = sd_read_file(path, CONFIG_MAX_BYTES, &text, &n);
        if (rc) return rc;
        cfg = jv_parse_sized(text, (int)n);
        free(text);
        if (!jv_is_valid(cfg)) {
            jv msg = jv_invalid_get_msg(cfg);
            rc = sd_err(SD_EFORMAT, "%s: invalid JSON: %s", path,
                        jv_get_kind(msg) == JV_KIND_STRING ? jv_string_value(msg) : "parse error");
            jv_free(msg);
            return rc;
        }
    } else {
        rc = sd_toml_parse_file(path, &cfg);
        if (rc) return rc;
    }
    rc = sd_opts_apply_config(o, cfg, path);
    jv_free(cfg);
    return rc;
}

int sd_cmdline_parse(sd_opts *o, int argc, char **argv)
{
    int rc = sd_opts_parse(o, argc, argv);
    if (rc || !(o->flags & SD_OPTS_CONFIG)) return rc;
    if (o->output_config && !o->config_file)
        return sd_err(SD_EUSAGE, "option '--output_config' needs --config_file FILE (the file to write)");
    if (!o->config_file) return SD_OK;
    if (!*o->config_file) return sd_err(SD_EUSAGE, "option '--config_file': empty file name");
    char *path = sd_cmdline_config_path(o->config_file);
    if (!path) return sd_err(SD_ENOMEM, "out of memory");
    if (o->output_config) {
        rc = sd_cmdline_write_config(o, path);
        free(path);
        return rc ? rc : SD_OPTS_EXIT;
    }
    rc = sd_cmdline_load_config(o, path);
    free(path);
    return rc;
}

int sd_cmdline_main(sd_opts *o, int argc, char **argv)
{
    int rc = sd_cmdline_parse(o, argc, argv);
    switch (rc) {
    case SD_OK: return -1;
    case SD_OPTS_HELP: sd_opts_help(o, stdout); fflush(stdout); return 0;
    case SD_OPTS_VERSION: sd_opts_version(o, stdout); fflush(stdout); return 0;
    case SD_OPTS_EXIT: return 0;
    default: break;
    }
    fprintf(stderr, "%s: %s\n", o->prog, sd_errmsg());
    if (rc == SD_EUSAGE) {
        fprintf(stderr, "Try '%s --help' for more information.\n", o->prog);
        return SD_EXIT_USAGE;
    }
    return SD_EXIT_FATAL;
}

int sd_cmdline_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    return SD_EXIT_USAGE;
}

/* ---------------------------------------------------------------- writing */

static void toml_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\b': fputs("\\b", f); break;
        case '\t': fputs("\\t", f); break;
        case '\n': fputs("\\n", f); break;
        case '\f': fputs("\\f", f); break;
        case '\r': fputs("\\r", f); break;
        default:
            if (*c < 0x20 || *c == 0x7f) fprintf(f, "\\u%04x", *c);
            else fputc(*c, f);
        }
    }
    fputc('"', f);
}

static void toml_float(FILE *f, double d)
{
    if (isnan(d)) { fputs("nan", f); return; }
    if (isinf(d)) { fputs(d < 0 ? "-inf" : "inf", f); return; }
    char b[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, d);
        if (strtod(b, NULL) == d) break;
    }
    fputs(b, f);
    if (!strpbrk(b, ".eE")) fputs(".0", f);
}

static void toml_scalar(FILE *f, sd_opt_type t, jv v)
{
    switch (jv_get_kind(v)) {
    case JV_KIND_TRUE: fputs("true", f); break;
    case JV_KIND_FALSE: fputs("false", f); break;
    case JV_KIND_STRING: toml_string(f, jv_string_value(v)); break;
    case JV_KIND_NUMBER:
        if (t == SD_OPT_INT || t == SD_OPT_INT64 || t == SD_OPT_INTS)
            fprintf(f, "%.0f", jv_number_value(v));
        else
            toml_float(f, jv_number_value(v));
        break;
    default: fputs("\"\"", f); break;
    }
}

static int wanted(const sd_opts *o, int i)
{
    const sd_opt *p = sd_opts_at(o, i);
    if (p->flags & (SD_OPTF_NO_OUTPUT | SD_OPTF_NO_CONFIG)) return 0;
    if (sd_opts_is_default_at(o, i)) return 0;
    jv v = sd_opts_value_jv(o, i);
    int ok = jv_get_kind(v) != JV_KIND_NULL;
    jv_free(v);
    return ok;
}

int sd_cmdline_config_toml(const sd_opts *o, char **out)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < sd_opts_count(o); i++) {
        if (!wanted(o, i)) continue;
        const sd_opt *p = sd_opts_at(o, i);
        jv v = sd_opts_value_jv(o, i);
        fprintf(f, "%s = ", p->name);
        if (jv_get_kind(v) == JV_KIND_ARRAY) {
            fputc('[', f);
            int len = jv_array_length(jv_copy(v));
            for (int k = 0; k < len; k++) {
                jv e = jv_array_get(jv_copy(v), k);
                if (k) fputs(", ", f);
                toml_scalar(f, p->type, e);
                jv_free(e);
            }
            fputc(']', f);
        } else {
            toml_scalar(f, p->type, v);
        }
        fputc('\n', f);
        jv_free(v);
    }
    if (fclose(f) != 0) {
        free(buf);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    *out = buf;
    return SD_OK;
}

static int config_json(const sd_opts *o, char **out)
{
    jv obj = jv_object();
    for (int i = 0; i < sd_opts_count(o); i++)
        if (wanted(o, i)) obj = jv_object_set(obj, jv_string(sd_opts_at(o, i)->name), sd_opts_value_jv(o, i));
    jv s = jv_dump_string(obj, JV_PRINT_PRETTY | JV_PRINT_SPACE1);
    size_t n = (size_t)jv_string_length_bytes(jv_copy(s));
    *out = malloc(n + 2);
    if (*out) {
        memcpy(*out, jv_string_value(s), n);
        (*out)[n] = '\n';
        (*out)[n + 1] = 0;
    }
    jv_free(s);
    return *out ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
}

/* Create `path` with `text`, never replacing an existing file: write a temporary file in the same
 * directory, then link() it to the final name (fails with EEXIST). */
static int write_new_file(const char *path, const char *text)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return sd_err(SD_ENOMEM, "out of memory");
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    snprintf(tmp, plen + 32, "%.*s.sd-config.XXXXXX", (int)dlen, path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return sd_err(SD_EIO, "%s: %s", path, strerror(e));
    }
    size_t n = strlen(text), off = 0;
    int rc = SD_OK;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { rc = sd_err(SD_EIO, "%s: %s", path, strerror(errno)); break; }
        off += (size_t)w;
    }
    if (!rc && fsync(fd) != 0) rc = sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    /* mkstemp makes 0600; a config is an ordinary file: 0666 & ~umask */
    mode_t um = umask(0);
    umask(um);
    if (!rc && fchmod(fd, 0666 & ~um) != 0) rc = sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    if (close(fd) != 0 && !rc) rc = sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    if (!rc && link(tmp, path) != 0) {
        int e = errno;
        if (e == EEXIST) rc = sd_err(SD_EIO, "%s: already exists; not overwritten", path);
        else rc = sd_err(SD_EIO, "%s: %s", path, strerror(e));
    }
    unlink(tmp);
    free(tmp);
    return rc;
}

int sd_cmdline_write_config(const sd_opts *o, const char *path)
{
    if (access(path, F_OK) == 0) return sd_err(SD_EIO, "%s: already exists; not overwritten", path);
    char *text = NULL;
    int rc = ends_with(path, ".json") ? config_json(o, &text) : sd_cmdline_config_toml(o, &text);
    if (rc) return rc;
    rc = write_new_file(path, text);
    free(text);
    return rc;
}
