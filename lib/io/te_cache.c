/* kohya SDXL text-encoder output cache files (see te_cache.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"
#include "io/npy.h"
#include "io/npz.h"
#include "io/te_cache.h"
#include "io/zip.h"

#define TE_MAX_MEMBER ((size_t)1 << 30)

enum { M_H1, M_H2, M_POOL, M_N };
static const char *const member_names[M_N] = { "hidden_state1.npy", "hidden_state2.npy", "pool2.npy" };

int sd_te_cache_name(char *out, size_t cap, const char *image_path)
{
    const char *base = strrchr(image_path, '/');
    base = base ? base + 1 : image_path;
    const char *dot = strrchr(base, '.');
    size_t stem = strlen(image_path);
    if (dot) {
        const char *b = base;
        while (*b == '.') b++;
        if (dot > b) stem = (size_t)(dot - image_path);
    }
    int n = snprintf(out, cap, "%.*s_te_outputs.npz", (int)stem, image_path);
    if (n < 0 || (size_t)n >= cap) return sd_err(SD_ERANGE, "text-encoder cache name too long for %s", image_path);
    return n;
}

void sd_te_cache_free(sd_te_cache *c)
{
    free(c->hidden1);
    free(c->hidden2);
    free(c->pool2);
    memset(c, 0, sizeof *c);
}

static int read_archive(struct archive *a, const char *name, sd_te_cache *c)
{
    sd_npy_array m[M_N];
    int have[M_N] = { 0 }, rc = SD_OK;
    memset(m, 0, sizeof m);
    memset(c, 0, sizeof *c);
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_OK) {
            char mb[512];
            rc = sd_err(SD_EFORMAT, "%s", sd_npz_archive_msg(a, mb, sizeof mb));
            goto out;
        }
        const char *pn = archive_entry_pathname(e);
        int k = -1;
        for (int i = 0; i < M_N && pn; i++)
            if (!strcmp(pn, member_names[i])) k = i;
        if (k < 0) continue;
        if (have[k]) {
            rc = sd_err(SD_EFORMAT, "duplicate member %s", pn);
            goto out;
        }
        have[k] = 1;
        unsigned char *buf = NULL;
        size_t n = 0;
        if ((rc = sd_npz_read_member(a, e, member_names[k], TE_MAX_MEMBER, &buf, &n))) goto out;
        rc = sd_npy_load(buf, n, &m[k]);
        free(buf);
        if (rc) {
            sd_err_prefix(rc, "member %s", member_names[k]);
            goto out;
        }
    }
    for (int i = 0; i < M_N; i++)
        if (!have[i]) {
            rc = sd_err(SD_EFORMAT, "missing member %s", member_names[i]);
            goto out;
        }
    if (m[M_H1].ndim != 2 || m[M_H2].ndim != 2 || m[M_POOL].ndim != 1 || m[M_H1].shape[0] != m[M_H2].shape[0] ||
        m[M_H1].shape[0] < 1) {
        rc = sd_err(SD_EFORMAT, "members must be hidden_state1 [T, W1], hidden_state2 [T, W2], pool2 [P]");
        goto out;
    }
    c->tokens = m[M_H1].shape[0];
    c->w1 = m[M_H1].shape[1];
    c->w2 = m[M_H2].shape[1];
    c->pool = m[M_POOL].shape[0];
    if ((rc = sd_npy_take_f32(&m[M_H1], member_names[M_H1], &c->hidden1))) goto out;
    if ((rc = sd_npy_take_f32(&m[M_H2], member_names[M_H2], &c->hidden2))) goto out;
    rc = sd_npy_take_f32(&m[M_POOL], member_names[M_POOL], &c->pool2);
out:
    for (int i = 0; i < M_N; i++) sd_npy_array_free(&m[i]);
    if (rc) {
        sd_te_cache_free(c);
        sd_err_prefix(rc, "%s", name);
    }
    return rc;
}

int sd_te_cache_read_memory(const void *buf, size_t n, const char *name, sd_te_cache *c)
{
    if (!name) name = "<memory>";
    memset(c, 0, sizeof *c);
    struct archive *a;
    int rc = sd_npz_open_memory(buf, n, name, &a);
    if (rc) return rc;
    rc = read_archive(a, name, c);
    archive_read_free(a);
    return rc;
}

int sd_te_cache_read(const char *path, sd_te_cache *c)
{
    memset(c, 0, sizeof *c);
    struct archive *a;
    int rc = sd_npz_open_file(path, &a);
    if (rc) return rc;
    rc = read_archive(a, path, c);
    archive_read_free(a);
    return rc;
}

static int add_f32(sd_zip_writer *zw, const char *mname, const float *x, int ndim, const int64_t *shape)
{
    void *npy = NULL;
    size_t n;
    int rc = sd_npy_encode(SD_NPY_F4, ndim, shape, x, &npy, &n);
    if (rc) return rc;
    sd_zip_part p = { npy, n };
    rc = sd_zip_add(zw, mname, SD_ZIP_STORE, &p, 1);
    free(npy);
    return rc;
}

static int write_members(sd_zip_writer *zw, const sd_te_cache *c)
{
    if (!c->hidden1 || !c->hidden2 || !c->pool2 || c->tokens < 1 || c->w1 < 1 || c->w2 < 1 || c->pool < 1)
        return sd_err(SD_EINVAL, "text-encoder cache: missing arrays or sizes");
    int rc = add_f32(zw, member_names[M_H1], c->hidden1, 2, (const int64_t[]){ c->tokens, c->w1 });
    if (!rc) rc = add_f32(zw, member_names[M_H2], c->hidden2, 2, (const int64_t[]){ c->tokens, c->w2 });
    if (!rc) rc = add_f32(zw, member_names[M_POOL], c->pool2, 1, &c->pool);
    if (!rc) rc = sd_zip_writer_finish(zw, NULL, NULL);
    return rc;
}

int sd_te_cache_write_memory(const sd_te_cache *c, void **out, size_t *n)
{
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    int rc = write_members(&zw, c);
    if (!rc) {
        *out = zw.buf;
        *n = zw.len;
        zw.buf = NULL;
    }
    sd_zip_writer_free(&zw);
    return rc;
}

int sd_te_cache_write(const char *path, const sd_te_cache *c)
{
    sd_atomic_file af;
    int rc = sd_atomic_open(&af, path);
    if (rc) return rc;
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, af.fp, 0);
    rc = write_members(&zw, c);
    sd_zip_writer_free(&zw);
    if (rc) {
        sd_atomic_abort(&af);
        return sd_err_prefix(rc, "%s", path);
    }
    return sd_atomic_commit(&af);
}
