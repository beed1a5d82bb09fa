/* libFuzzer target for JSON lines: the streaming reader over arbitrary bytes, the writer, the
 * field getters, and two differential checks on every accepted line:
 *   - write(parse(line)) parses back (with ours and libjq's parser) to an equal value with the
 *     same key order, and writes the same bytes again;
 *   - libjq 1.6's own parser accepts the line too and gives an equal value (our parser is
 *     stricter, never more lenient). */
#include "base/error.h"
#include "io/jsonl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_line(const char *line, size_t n)
{
    jv v;
    if (sd_jsonl_parse_line(line, n, &v) != SD_OK) return;
    /* jq agrees */
    char *z = malloc(n + 1);
    memcpy(z, line, n);
    z[n] = 0;
    jv j = jv_parse_sized(z, (int)n);
    free(z);
    if (!jv_is_valid(j) || !jv_equal(jv_copy(v), jv_copy(j))) {
        fprintf(stderr, "libjq disagrees on: %.*s\n", (int)(n > 300 ? 300 : n), line);
        abort();
    }
    jv_free(j);
    /* write -> parse -> write is stable */
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (sd_jsonl_write(m, jv_copy(v)) != SD_OK) abort();
    fclose(m);
    if (len == 0 || buf[len - 1] != '\n') abort();
    jv back;
    if (sd_jsonl_parse_line(buf, len - 1, &back) != SD_OK) {
        fprintf(stderr, "cannot re-read own output: %s\n", sd_errmsg());
        abort();
    }
    if (!jv_equal(jv_copy(v), jv_copy(back))) abort();
    /* same key order: libjq's printer gives the same text for both */
    jv d1 = jv_dump_string(jv_copy(v), 0), d2 = jv_dump_string(jv_copy(back), 0);
    if (strcmp(jv_string_value(d1), jv_string_value(d2)) != 0) abort();
    jv_free(d1);
    jv_free(d2);
    /* libjq's parser reads our output to the same value */
    jv j2 = jv_parse_sized(buf, (int)(len - 1));
    if (!jv_is_valid(j2) || !jv_equal(jv_copy(v), j2)) abort();
    /* writing again gives the same bytes */
    char *buf2;
    size_t len2;
    if (sd_json_dump(back, &buf2, &len2) != SD_OK) abort();
    if (len2 != len - 1 || memcmp(buf, buf2, len2) != 0) abort();
    free(buf2);
    free(buf);
    jv_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. every line on its own, with the differential checks */
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            size_t n = i - start;
            if (n && data[start + n - 1] == '\r') n--;
            check_line((const char *)data + start, n);
            start = i + 1;
        }
    }
    /* 2. the streaming reader, with a small line bound when the first byte says so */
    if (size == 0) return 0;
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f) return 0;
    sd_jsonl_reader *r = sd_jsonl_open(f, "fuzz");
    if (data[0] & 1) sd_jsonl_set_max_line(r, 64);
    jv rec;
    long line = 0, prev = 0;
    int rc;
    while ((rc = sd_jsonl_next(r, &rec, &line)) != 0) {
        if (line <= prev) abort(); /* line numbers strictly increase */
        prev = line;
        if (rc == 1) {
            const char *s;
            double d;
            long long ll;
            int b, wh[2], c4[4];
            sd_jsonl_get_str(rec, "image", &s);
            sd_jsonl_get_str(rec, "caption", &s);
            sd_jsonl_get_num(rec, "a", &d);
            sd_jsonl_get_int(rec, "a", &ll);
            sd_jsonl_get_bool(rec, "b", &b);
            sd_jsonl_get_size2(rec, "image_size", wh);
            sd_jsonl_get_ints(rec, "crop", c4, 4);
        } else if (rc != SD_EFORMAT && rc != SD_ERANGE) {
            abort();
        } else if (strncmp(sd_errmsg(), "fuzz:", 5) != 0) {
            abort();
        }
        jv_free(rec);
    }
    sd_jsonl_close(r);
    fclose(f);
    return 0;
}
