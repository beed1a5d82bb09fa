/* libFuzzer target for the selected_tags.csv reader (io/tags_csv.h) and the tag selection that
 * consumes it (data/wdtags.h): any input either parses to a table of non-empty UTF-8 names or
 * fails with SD_EFORMAT and a one-line message starting with the file name; a parsed table then
 * goes through every label transform and one selection with probabilities from the input. */
#include "base/error.h"
#include "data/wdtags.h"
#include "io/tags_csv.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_tag_table t;
    int rc = sd_tags_csv_parse((const char *)data, size, "fuzz.csv", &t);
    if (rc != SD_OK) {
        const char *m = sd_errmsg();
        if (rc != SD_EFORMAT || strncmp(m, "fuzz.csv", 8) || strchr(m, '\n') || t.n) abort();
        return 0;
    }
    if (t.n < 1) abort();
    for (int i = 0; i < t.n; i++)
        if (!t.name[i] || !t.name[i][0]) abort();
    sd_wdtags_opts o = {.general_threshold = 0.3, .character_threshold = 0.3, .character_first = size & 1,
                        .rating_first = (size >> 1) & 1, .rating_last = 1, .remove_underscore = 1,
                        .character_expand = 1, .separator = ", ", .undesired = "a, b_c",
                        .always_first = "1girl", .replacement = "x,y;\\,,\\;"};
    sd_wdtags w;
    if (sd_wdtags_init(&w, &t, &o) == SD_OK) {
        float *p = malloc(sizeof(float) * (size_t)t.n);
        for (int i = 0; i < t.n; i++) p[i] = (float)data[(size_t)i % size] / 255.0f;
        const char **l;
        int n;
        if (sd_wdtags_select(&w, p, &l, &n) == SD_OK) {
            char *s = sd_wdtags_join(&w, l, n);
            char *s2 = sd_wdtags_append(&w, s, l, n);
            free(s);
            free(s2);
            free(l);
        }
        free(p);
        sd_wdtags_free(&w);
    }
    sd_tag_table_free(&t);
    return 0;
}
