/* kohya's SDXL text-encoder output cache (--cache_text_encoder_outputs_to_disk; spec §4.8):
 * `<image path without extension>_te_outputs.npz`, a numpy savez archive with the float32
 * members hidden_state1 [T, W1] (TE1 layer 11, 768 wide), hidden_state2 [T, W2] (TE2 penultimate,
 * 1280) and pool2 [P] (1280), T = 77 or n·75+2, no batch axis.
 *
 * Reading accepts any zip method libarchive reads (numpy writes STORED, savez_compressed deflate)
 * and <f4 or <f2 data (converted to float); other members are ignored; the three keys must all be
 * there with consistent shapes (this is also kohya's validity check). Writing produces STORED
 * <f4 members like np.savez, through a temporary name renamed over the final one. */
#ifndef SD_IO_TE_CACHE_H
#define SD_IO_TE_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_te_cache {
    int64_t tokens;          /* T */
    int64_t w1, w2, pool;    /* widths of hidden_state1, hidden_state2 and pool2 */
    float *hidden1;          /* [T, w1] */
    float *hidden2;          /* [T, w2] */
    float *pool2;            /* [pool] */
} sd_te_cache;

/* "<image path without extension>_te_outputs.npz" (os.path.splitext). Returns the length or a
 * negative SD_E* code (SD_ERANGE when cap is too small). */
int sd_te_cache_name(char *out, size_t cap, const char *image_path);

/* Read `path` (malloc'd arrays, free with sd_te_cache_free). SD_ENOTFOUND when the file does not
 * exist, SD_EFORMAT for a broken archive or a missing/ill-shaped member. */
int sd_te_cache_read(const char *path, sd_te_cache *c);
int sd_te_cache_read_memory(const void *buf, size_t n, const char *name, sd_te_cache *c);
void sd_te_cache_free(sd_te_cache *c);

/* Write atomically (temp name + rename). */
int sd_te_cache_write(const char *path, const sd_te_cache *c);
/* The same archive into a malloc'd buffer. */
int sd_te_cache_write_memory(const sd_te_cache *c, void **out, size_t *n);

#endif
