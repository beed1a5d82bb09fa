/* libFuzzer target for sample-prompt files: the first byte picks the format (.txt, .toml, .json),
 * the rest is the file. Any input either parses into prompts that satisfy the documented
 * invariants or fails with a one-line message that starts with the file name; no crash, no leak. */
#include "base/error.h"
#include "diffusion/prompt_file.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const char *names[3] = {"fuzz.txt", "fuzz.toml", "fuzz.json"};
    const char *name = names[data[0] % 3];
    sd_prompt_list l;
    int rc = sd_prompt_file_parse((const char *)data + 1, size - 1, name, &l);
    if (rc == SD_OK) {
        for (size_t i = 0; i < l.n; i++) {
            const sd_sample_prompt *p = &l.items[i];
            if (!p->prompt || p->index != (int)i) abort();
            if (p->width < 64 || p->width % 8 || p->height < 64 || p->height % 8) abort();
            if (p->steps < 1 || p->steps > 1000) abort();
        }
        sd_prompt_list_free(&l);
    } else {
        const char *m = sd_errmsg();
        if ((rc != SD_EFORMAT && rc != SD_ERANGE) || strncmp(m, name, strlen(name)) || strchr(m, '\n')) abort();
        if (l.n || l.items) abort();
    }
    return 0;
}
