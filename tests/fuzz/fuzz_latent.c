/* libFuzzer target for the latent-file reader (zip through libarchive, .npy members, sd_meta.json):
 * any input either reads or fails with a negative code and a one-line message naming the input;
 * a file that reads satisfies the sd-latent(5) invariants and survives a write/read round trip
 * in both forms bit-exact. Members are bounded to 4 MiB here. */
#include "base/error.h"
#include "io/latent.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int same(const sd_latent_file *a, const sd_latent_file *b)
{
    size_t n = (size_t)a->c * a->h * a->w, m = (size_t)a->mask_h * a->mask_w;
    if (a->c != b->c || a->h != b->h || a->w != b->w || a->mask_h != b->mask_h || a->mask_w != b->mask_w)
        return 0;
    if (memcmp(a->latents, b->latents, n * 4)) return 0;
    if (!a->latents_flipped != !b->latents_flipped || (a->latents_flipped && memcmp(a->latents_flipped, b->latents_flipped, n * 4)))
        return 0;
    if (!a->alpha_mask != !b->alpha_mask || (a->alpha_mask && memcmp(a->alpha_mask, b->alpha_mask, m * 4))) return 0;
    if (memcmp(a->original_size, b->original_size, sizeof a->original_size) ||
        memcmp(a->crop_ltrb, b->crop_ltrb, sizeof a->crop_ltrb))
        return 0;
    return a->meta_json && b->meta_json ? !strcmp(a->meta_json, b->meta_json) : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_latent_read_opts o = {.max_member = 4u << 20};
    sd_latent_file lf;
    int rc = sd_latent_read_memory(data, size, "fuzz.npz", &o, &lf);
    if (rc != SD_OK) {
        const char *m = sd_errmsg();
        if (rc >= 0 || strncmp(m, "fuzz.npz: ", 10) || strchr(m, '\n') || lf.latents) abort();
        return 0;
    }
    if (!lf.latents || lf.c <= 0 || lf.h <= 0 || lf.w <= 0) abort();
    if (lf.alpha_mask && (lf.mask_h != lf.h * 8 || lf.mask_w != lf.w * 8)) abort();
    if (lf.meta_json && sd_latent_meta_validate(lf.meta_json, strlen(lf.meta_json))) abort();
    for (int form = 0; form < 2; form++) {
        sd_latent_write_opts w = {.compress = form ? SD_LATENT_STORE : SD_LATENT_ZSTD, .zstd_level = 1};
        void *buf;
        size_t n;
        if (sd_latent_write_memory(&lf, &w, &buf, &n) != SD_OK) abort();
        sd_latent_file back;
        if (sd_latent_read_memory(buf, n, "rt", NULL, &back) != SD_OK) abort();
        if (!same(&lf, &back)) abort();
        sd_latent_free(&back);
        free(buf);
    }
    sd_latent_free(&lf);
    return 0;
}
