/* libFuzzer target for the .ckpt reader. An input starting with "PK" is a whole checkpoint (zip
 * read by libarchive from memory); anything else is run as a bare pickle with four fixed storages
 * "0".."3" (f32 x 6, 24, 64 and 0 bytes). Every input either loads or fails with a negative code
 * and a one-line message; a loaded checkpoint's tensors are all read (strided gathers stay inside
 * their storages, checked by ASan) and converted to f16. */
#include "base/error.h"
#include "io/ckpt.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned char s0[6 * 4], s1[24], s2[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_ckpt *ck = (sd_ckpt *)1;
    int rc;
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
        rc = sd_ckpt_open_mem(data, size, "fuzz.ckpt", &ck);
    } else {
        const sd_ckpt_storage st[4] = {{"0", s0, sizeof s0}, {"1", s1, sizeof s1}, {"2", s2, sizeof s2},
                                       {"3", s2, 0}};
        rc = sd_ckpt_open_pickle(data, size, st, 4, "fuzz.pkl", &ck);
    }
    if (rc != SD_OK) {
        const char *m = sd_errmsg();
        if (rc >= 0 || !*m || strchr(m, '\n') || ck) abort();
        return 0;
    }
    for (size_t i = 0; i < sd_ckpt_count(ck); i++) {
        const sd_ckpt_tensor *t = sd_ckpt_at(ck, i);
        if (!t->name || t->numel < 0 || (t->contiguous && t->nbytes > t->storage_nbytes)) abort();
        if (t->numel > (1 << 20)) continue;
        uint16_t *h = malloc(((size_t)t->numel + 1) * sizeof *h);
        if (sd_ckpt_read(ck, t, SD_ST_F16, h, (size_t)t->numel) != SD_OK) abort();
        free(h);
    }
    for (size_t i = 0; i < sd_ckpt_meta_count(ck); i++) {
        const char *k, *v;
        sd_ckpt_meta_at(ck, i, &k, &v);
        if (!k || !v) abort();
    }
    sd_ckpt_close(ck);
    return 0;
}
