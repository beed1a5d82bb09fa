/* libFuzzer target for dataset configs and cleaning: the input is parsed as a TOML dataset config
 * (validated and resolved, with the text used for line numbers) and as JSON, and cleaned as a
 * tag string and a caption. Any input either resolves or fails with one line naming the file;
 * no crash, no leak; cleaned captions never grow (every replacement keeps or shrinks the length;
 * tags can grow: a literal "@@@" tag takes the reference's hair-length placeholder back). */
#include "base/error.h"
#include "data/dataset_config.h"
#include "io/jsonl.h"
#include "io/toml.h"
#include "text/clean.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_cfg(jv cfg, const char *text, int is_toml)
{
    sd_dataset_config c;
    jv cli = JV_OBJECT(jv_string("resolution"), jv_number(512));
    int rc = sd_dataset_config_from_jv(cfg, "fuzz.cfg", text, is_toml, cli, SD_DC_CONTROLNET_OK, &c);
    jv_free(cli);
    if (rc == SD_OK) {
        for (int i = 0; i < c.ndatasets; i++)
            for (int j = 0; j < c.datasets[i].nsubsets; j++)
                if (jv_get_kind(c.datasets[i].subsets[j].params) != JV_KIND_OBJECT) abort();
    } else if (strncmp(sd_errmsg(), "fuzz.cfg", 8) || strchr(sd_errmsg(), '\n')) abort();
    sd_dataset_config_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    jv v;
    if (sd_toml_parse(text, size, "fuzz.cfg", &v) == SD_OK) check_cfg(v, text, 1);
    jv_free(v);
    if (sd_json_parse(text, size, &v) == SD_OK) check_cfg(v, text, 0);
    jv_free(v);
    if (!memchr(data, 0, size)) {
        char *out = NULL;
        if (sd_clean_tags(text, &out, NULL, NULL) == SD_OK) free(out);
        if (sd_clean_caption(text, &out) == SD_OK) {
            if (strlen(out) > size) abort();
            free(out);
        }
    }
    free(text);
    return 0;
}
