/* libjq 1.6 wrapper: compile once, run per record. See jq.h. */
#include "io/jq.h"

#include "base/error.h"

#include <jq.h>
#include <stdlib.h>
#include <string.h>

struct sd_jq {
    jq_state *jq;
    char *prog;
    jv args;
    size_t max_outputs;
    jv errors; /* compile messages collected by the error callback (array of strings) */
};

/* Compile errors arrive as strings like "jq: error: syntax error, ... line 1:\n.a |   " followed
 * by "jq: 1 compile error". Keep the first kind, one line each. */
static void error_cb(void *data, jv msg)
{
    sd_jq *q = data;
    jv s = jq_format_error(msg);
    if (jv_get_kind(s) != JV_KIND_STRING) {
        jv_free(s);
        return;
    }
    const char *t = jv_string_value(s);
    if (strncmp(t, "jq: error: ", 11) == 0) t += 11;
    else if (strncmp(t, "jq: ", 4) == 0 && strstr(t, "compile error")) {
        jv_free(s);
        return;
    }
    size_t n = strlen(t);
    char *line = malloc(n + 1);
    if (line) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            char c = t[i] == '\n' || t[i] == '\r' || t[i] == '\t' ? ' ' : t[i];
            if (c == ' ' && (k == 0 || line[k - 1] == ' ')) continue;
            line[k++] = c;
        }
        while (k && line[k - 1] == ' ') k--;
        line[k] = 0;
        q->errors = jv_array_append(q->errors, jv_string(line));
        free(line);
    }
    jv_free(s);
}

static void debug_cb(void *data, jv msg) { jv_free(msg); }

static jv input_cb(jq_state *jq, void *data) { return jv_invalid_with_msg(jv_string("No more inputs")); }

/* A fresh jq_state with the program compiled (q->prog, q->args). */
static int build(sd_jq *q)
{
    if (!(q->jq = jq_init())) return sd_err(SD_ENOMEM, "jq filter: out of memory");
    jv_free(q->errors);
    q->errors = jv_array();
    jq_set_error_cb(q->jq, error_cb, q);
    jq_set_debug_cb(q->jq, debug_cb, NULL);
    /* jq 1.6's jq_init leaves the input callback unset; `input_filename` reads it. */
    jq_set_input_cb(q->jq, input_cb, NULL);
    jq_set_attr(q->jq, jv_string("JQ_LIBRARY_PATH"), jv_array());
    jq_set_attr(q->jq, jv_string("JQ_ORIGIN"), jv_string("."));
    jq_set_attr(q->jq, jv_string("PROGRAM_ORIGIN"), jv_string("."));
    if (!jq_compile_args(q->jq, q->prog, jv_copy(q->args))) {
        jv msg = jv_string("");
        int n = jv_array_length(jv_copy(q->errors));
        for (int i = 0; i < n; i++) {
            if (i) msg = jv_string_append_str(msg, "; ");
            msg = jv_string_concat(msg, jv_array_get(jv_copy(q->errors), i));
        }
        if (n == 0) msg = jv_string_append_str(msg, "compile error");
        int rc = sd_err(SD_EUSAGE, "jq filter: %s", jv_string_value(msg));
        jv_free(msg);
        return rc;
    }
    return SD_OK;
}

int sd_jq_compile(const char *prog, jv args, sd_jq **out)
{
    *out = NULL;
    if (jv_get_kind(args) == JV_KIND_NULL) {
        jv_free(args);
        args = jv_object();
    }
    if (jv_get_kind(args) != JV_KIND_OBJECT) {
        jv_free(args);
        return sd_err(SD_EINVAL, "jq filter: arguments must be an object");
    }
    sd_jq *q = calloc(1, sizeof *q);
    if (q) q->prog = strdup(prog ? prog : "");
    if (!q || !q->prog) {
        free(q);
        jv_free(args);
        return sd_err(SD_ENOMEM, "jq filter: out of memory");
    }
    q->args = args;
    q->errors = jv_array();
    q->max_outputs = 100000;
    int rc = build(q);
    if (rc) {
        sd_jq_free(q);
        return rc;
    }
    *out = q;
    return SD_OK;
}

void sd_jq_set_max_outputs(sd_jq *q, size_t max) { q->max_outputs = max; }

/* Message text of an error value: strings as they are, anything else as JSON. */
static int run_error(jv v)
{
    if (jv_get_kind(v) == JV_KIND_STRING) {
        const char *s = jv_string_value(v);
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
        int rc = sd_err(SD_EFORMAT, "jq filter: %.*s", (int)n, s);
        jv_free(v);
        return rc;
    }
    jv d = jv_dump_string(v, 0);
    int rc = sd_err(SD_EFORMAT, "jq filter: %s", jv_is_valid(d) ? jv_string_value(d) : "error");
    jv_free(d);
    return rc;
}

int sd_jq_run(sd_jq *q, jv input, jv *outputs)
{
    *outputs = jv_invalid();
    jq_start(q->jq, input, 0);
    jv res = jv_array();
    size_t n = 0;
    for (;;) {
        jv r = jq_next(q->jq);
        if (jv_is_valid(r)) {
            if (++n > q->max_outputs) {
                jv_free(r);
                jv_free(res);
                return sd_err(SD_ERANGE, "jq filter: more than %zu outputs for one record",
                              q->max_outputs);
            }
            res = jv_array_append(res, r);
            continue;
        }
        if (jv_invalid_has_msg(jv_copy(r))) {
            jv_free(res);
            return run_error(jv_invalid_get_msg(r));
        }
        jv_free(r);
        break;
    }
    if (jq_halted(q->jq)) {
        /* `halt` ends normally; `halt_error` (exit code set and non-zero) is an error */
        jv code = jq_get_exit_code(q->jq);
        int failed = jv_is_valid(code) &&
                     !(jv_get_kind(code) == JV_KIND_NUMBER && jv_number_value(code) == 0);
        jv_free(code);
        jv msg = failed ? jq_get_error_message(q->jq) : jv_invalid();
        /* jq 1.6's jq_reset frees the halt message without clearing it, so the second reset
         * after a halt (next jq_start, then teardown) frees it twice: never reuse a halted
         * state. Tear it down now (one reset) and compile the program again. */
        jq_teardown(&q->jq);
        int rc = build(q);
        if (rc) {
            jv_free(msg);
            jv_free(res);
            return rc;
        }
        if (failed) {
            jv_free(res);
            if (!jv_is_valid(msg)) {
                jv_free(msg);
                msg = jv_string("halt_error");
            }
            return run_error(msg);
        }
        jv_free(msg);
    }
    *outputs = res;
    return SD_OK;
}

void sd_jq_free(sd_jq *q)
{
    if (!q) return;
    if (q->jq) jq_teardown(&q->jq);
    jv_free(q->errors);
    jv_free(q->args);
    free(q->prog);
    free(q);
}
