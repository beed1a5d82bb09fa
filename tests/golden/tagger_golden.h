/* Shared by the WD tagger golden tests (test_tagger_golden.c, test_tagger_swinv2_golden.c): the
 * paths of tests/data/tagger/, a golden tensor read as F32, copies of a tiny model changed on purpose
 * (other dtype, a tensor dropped, added or grown, other metadata), and the logits of golden.x
 * compared with a reference, a damaged copy's refusal checked. Uses test.h's T_* macros. */
#ifndef SD_TESTS_TAGGER_GOLDEN_H
#define SD_TESTS_TAGGER_GOLDEN_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "models/tagger.h"
#include "st_rewrite.h"
#include "test.h"

/* $SD_ROOT/tests/data/tagger/NAME; a static buffer, one of 8 rotating. */
static inline const char *tag_data_path(const char *name)
{
    return t_root_pathf("tests/data/tagger/%s", name);
}

static inline int tag_read_f32(const sd_safetensors *st, const char *name, sd_tensor *t)
{
    const sd_st_tensor *g = sd_safetensors_find(st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden file has no '%s'", name);
    int rc = sd_tensor_alloc(t, SD_F32, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(st, g, SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

/* How tag_copy changes a file. */
typedef struct tag_copy_spec {
    const char *drop;                  /* left out */
    const char *extra;                 /* added, zeros of shape extra_shape (ndim extra_nd) */
    int extra_nd;
    int64_t extra_shape[4];
    const char *reshape;               /* its last axis grows by one (the new tail is 0) */
    const char *meta[4][2];            /* metadata key, value; a NULL value: not written */
} tag_copy_spec;

/* A copy of `src` at `dst`, every tensor as `dt`, changed as `c` says. */
static inline int tag_copy(const char *src, const char *dst, sd_st_dtype dt, const tag_copy_spec *c)
{
    st_rewrite r;
    int rc = st_rewrite_begin(&r, src);
    for (size_t i = 0; !rc && i < r.n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(r.src, i);
        if (c->drop && !strcmp(t->name, c->drop)) continue;
        int64_t sh[8], numel = 1;
        memcpy(sh, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        if (c->reshape && !strcmp(t->name, c->reshape)) sh[t->ndim - 1]++;
        for (int d = 0; d < t->ndim; d++) numel *= sh[d];
        float *v;
        rc = st_rewrite_read(&r, t, numel, &v);
        if (!rc) rc = sd_safetensors_writer_add_f32(r.w, t->name, dt, t->ndim, sh, v);
    }
    if (!rc && c->extra) {
        int64_t ne = 1;
        for (int d = 0; d < c->extra_nd; d++) ne *= c->extra_shape[d];
        float *zeros = st_rewrite_buf(&r, ne);
        rc = zeros ? sd_safetensors_writer_add_f32(r.w, c->extra, dt, c->extra_nd, c->extra_shape, zeros)
                   : sd_err(SD_ENOMEM, "out of memory");
    }
    for (int k = 0; !rc && k < 4; k++)
        if (c->meta[k][0] && c->meta[k][1]) rc = sd_safetensors_writer_set_meta(r.w, c->meta[k][0], c->meta[k][1]);
    return st_rewrite_end(&r, rc, dst);
}

/* Logits of golden.x of `golden` by the model at `path` (`threads` threads) against the golden's
 * `key`: max|Δ|/max|ref|, -1 on error (message printed; *rc_out, when given, gets the open/forward
 * status). The logits go to out when they fit its nout floats. */
static inline double tag_run(sd_ctx *ctx, const char *path, const char *golden, const char *key, int threads,
                            float *out, size_t nout, int *rc_out)
{
    sd_safetensors *st = NULL, *gs = NULL;
    sd_tagger m;
    sd_tensor x = {0}, ref = {0}, y = {0};
    double worst = -1;
    int rc = sd_safetensors_open(path, &st);
    if (!rc) rc = sd_tagger_open(&m, st, SD_DEV_CPU);
    if (rc_out) *rc_out = rc;
    if (rc) {
        printf("#   %s\n", sd_errmsg());
        sd_safetensors_close(st);
        return -1;
    }
    rc = sd_safetensors_open(golden, &gs);
    if (!rc) rc = tag_read_f32(gs, "golden.x", &x);
    if (!rc) rc = tag_read_f32(gs, key, &ref);
    if (!rc) rc = sd_tensor_alloc(&y, SD_F32, 2, ref.shape);
    sd_ctx_set_threads(ctx, threads);
    if (!rc) rc = sd_tagger_forward(ctx, &m, &y, &x);
    if (rc_out) *rc_out = rc;
    if (rc) {
        printf("#   %s\n", sd_errmsg());
    } else {
        const float *a = y.data, *r = ref.data;
        double mx = 0, e = 0;
        for (int64_t i = 0; i < sd_tensor_numel(&ref); i++) {
            mx = fmax(mx, fabs(r[i]));
            e = fmax(e, fabs((double)a[i] - r[i]));
        }
        worst = e / mx;
        if (out && (size_t)sd_tensor_numel(&ref) <= nout) memcpy(out, a, sizeof(float) * (size_t)sd_tensor_numel(&ref));
    }
    sd_tensor_free(&x);
    sd_tensor_free(&ref);
    sd_tensor_free(&y);
    sd_tagger_free(&m);
    sd_safetensors_close(st);
    sd_safetensors_close(gs);
    return worst;
}

/* The damaged copy at `path` (case `i`) is refused with `want_rc` and a message naming `msg` and `file`. */
static inline void tag_check_refused(const char *path, const char *file, size_t i, int want_rc, const char *msg)
{
    sd_safetensors *st = NULL;
    T_CHECK(sd_safetensors_open(path, &st) == 0);
    if (!st) return;
    sd_tagger m;
    int rc = sd_tagger_open(&m, st, SD_DEV_CPU);
    T_CHECKF(rc == want_rc, "case %zu: rc %d: %s", i, rc, sd_errmsg());
    T_CHECKF(strstr(sd_errmsg(), msg) && strstr(sd_errmsg(), file), "case %zu: %s", i, sd_errmsg());
    if (!rc) sd_tagger_free(&m);
    sd_safetensors_close(st);
}

#endif
