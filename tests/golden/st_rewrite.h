/* Shared by the golden tests that write changed copies of a model file (tagger_golden.h,
 * test_blip_golden.c): the source open, a writer, and the f32 buffers handed to it kept until the
 * copy is written. */
#ifndef SD_TESTS_ST_REWRITE_H
#define SD_TESTS_ST_REWRITE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"

typedef struct st_rewrite {
    sd_safetensors *src;
    sd_safetensors_writer *w;
    size_t n;              /* tensors in src */
    float **bufs;          /* what the writer reads at write time */
    size_t nbufs;
} st_rewrite;

/* Opens `src` and a writer; on error st_rewrite_end still cleans up. */
static inline int st_rewrite_begin(st_rewrite *r, const char *src)
{
    memset(r, 0, sizeof *r);
    int rc = sd_safetensors_open(src, &r->src);
    if (!rc) rc = sd_safetensors_writer_new(&r->w);
    r->n = r->src ? sd_safetensors_count(r->src) : 0;
    return rc;
}

/* `numel` zeroed floats that stay valid until st_rewrite_end (NULL when out of memory). */
static inline float *st_rewrite_buf(st_rewrite *r, int64_t numel)
{
    float **b = realloc(r->bufs, (r->nbufs + 1) * sizeof *b);
    if (!b) return NULL;
    r->bufs = b;
    return b[r->nbufs++] = calloc((size_t)(numel > 0 ? numel : 1), sizeof(float));
}

/* Tensor `t` of src as f32 in a new buffer of `numel` (>= t->numel; the rest stays 0). */
static inline int st_rewrite_read(st_rewrite *r, const sd_st_tensor *t, int64_t numel, float **out)
{
    *out = st_rewrite_buf(r, numel);
    if (!*out) return sd_err(SD_ENOMEM, "out of memory");
    return sd_safetensors_read(r->src, t, SD_ST_F32, *out, (size_t)t->numel);
}

/* Writes the copy to `dst` unless rc (an earlier error) is set, frees everything; the status. */
static inline int st_rewrite_end(st_rewrite *r, int rc, const char *dst)
{
    if (!rc) rc = sd_safetensors_writer_write(r->w, dst);
    for (size_t i = 0; i < r->nbufs; i++) free(r->bufs[i]);
    free(r->bufs);
    sd_safetensors_writer_free(r->w);
    sd_safetensors_close(r->src);
    memset(r, 0, sizeof *r);
    return rc;
}

#endif
