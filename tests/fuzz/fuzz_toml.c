/* libFuzzer target for the TOML reader: any input either parses to a jv object or fails with
 * SD_EFORMAT and a one-line "name:line:col: message"; no crash, no leaked jv (LeakSanitizer
 * checks every input, and a successful result is walked by jv_dump_string before it is freed). */
#include "base/error.h"
#include "io/toml.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jv v;
    int rc = sd_toml_parse((const char *)data, size, "fuzz.toml", &v);
    if (rc == SD_OK) {
        if (jv_get_kind(v) != JV_KIND_OBJECT) abort();
        jv s = jv_dump_string(v, 0); /* consumes v */
        if (jv_get_kind(s) != JV_KIND_STRING) abort();
        jv_free(s);
    } else {
        const char *m = sd_errmsg();
        if ((rc != SD_EFORMAT && rc != SD_ERANGE) || strncmp(m, "fuzz.toml", 9) || strchr(m, '\n'))
            abort();
        if (jv_is_valid(v)) abort();
        jv_free(v);
    }
    return 0;
}
