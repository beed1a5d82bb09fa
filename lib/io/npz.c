/* npz files read through libarchive (see npz.h). */
#include "io/npz.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"

const char *sd_npz_archive_msg(struct archive *a, char *buf, size_t cap)
{
    const char *m = archive_error_string(a);
    if (!m) return "cannot read the zip archive";
    if (!strcmp(m, "Unrecognized archive format"))
        return "not a zip archive, or truncated (no end of central directory record)";
    snprintf(buf, cap, "%s", m);
    size_t n = strlen(buf);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t') buf[i] = ' ';
    while (n && buf[n - 1] == ' ') buf[--n] = 0;
    return buf;
}

int sd_npz_read_member(struct archive *a, struct archive_entry *e, const char *mname, size_t max,
                       unsigned char **out, size_t *outn)
{
    int64_t declared = archive_entry_size_is_set(e) ? (int64_t)archive_entry_size(e) : -1;
    if (declared > 0 && (uint64_t)declared > max)
        return sd_err(SD_ERANGE, "member %s declares %lld bytes, more than the limit of %zu", mname,
                      (long long)declared, max);
    /* Start small and grow: a declared size is only a hint (it may lie), and cap never
     * exceeds max + 1, so reading max + 1 bytes is how an oversized member is detected. */
    size_t cap = declared >= 0 && (uint64_t)declared < ((size_t)1 << 20) ? (size_t)declared + 1 : (size_t)1 << 20;
    if (cap > max + 1) cap = max + 1;
    size_t len = 0;
    unsigned char *buf = malloc(cap + 1);
    if (!buf) return sd_err(SD_ENOMEM, "out of memory reading member %s", mname);
    for (;;) {
        if (len == cap) {
            if (cap > max) {
                free(buf);
                return sd_err(SD_ERANGE, "member %s is larger than the limit of %zu bytes", mname, max);
            }
            size_t nc = cap > SIZE_MAX / 4 ? SIZE_MAX / 2 : cap * 2;
            if (nc > max + 1) nc = max + 1;
            unsigned char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                return sd_err(SD_ENOMEM, "out of memory reading member %s", mname);
            }
            buf = nb;
            cap = nc;
        }
        la_ssize_t r = archive_read_data(a, buf + len, cap - len);
        if (r < 0) {
            char mb[512];
            int rc = sd_err(SD_EFORMAT, "member %s: %s", mname, sd_npz_archive_msg(a, mb, sizeof mb));
            free(buf);
            return rc;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    if (declared >= 0 && (uint64_t)declared != len) {
        free(buf);
        return sd_err(SD_EFORMAT, "member %s: %zu bytes of data, header says %lld", mname, len, (long long)declared);
    }
    buf[len] = 0;
    *out = buf;
    *outn = len;
    return SD_OK;
}

int sd_npy_take_f32(sd_npy_array *x, const char *mname, float **out)
{
    if (x->dtype == SD_NPY_F4) {
        *out = x->data;
        x->data = NULL;
    } else if (x->dtype == SD_NPY_F2) {
        float *f = malloc(x->count ? x->count * sizeof *f : 1);
        if (!f) return sd_err(SD_ENOMEM, "out of memory converting %s", mname);
        sd_f16_to_f32_n(x->data, f, x->count);
        *out = f;
    } else {
        return sd_err(SD_EFORMAT, "member %s has dtype %s, expected float32 or float16", mname,
                      sd_npy_dtype_name(x->dtype));
    }
    for (size_t i = 0; i < x->count; i++)
        if (!isfinite((*out)[i])) {
            free(*out);
            *out = NULL;
            return sd_err(SD_EFORMAT, "member %s holds a non-finite value at index %zu", mname, i);
        }
    return SD_OK;
}

static struct archive *new_reader(void)
{
    struct archive *a = archive_read_new();
    if (!a) return NULL;
    /* The seekable reader only: it reads the central directory, so a truncated file or a
     * missing end record is an error (the streaming reader would accept a file cut short
     * after the last member's data). Both our sources (files, memory) can seek. */
    archive_read_support_format_zip_seekable(a);
    return a;
}


/* A reader over an opened source, or the open error naming `name`. */
static int opened(struct archive *a, int r, const char *name, struct archive **out)
{
    if (r != ARCHIVE_OK) {
        char mb[512];
        int rc = sd_err(SD_EFORMAT, "%s: %s", name, sd_npz_archive_msg(a, mb, sizeof mb));
        archive_read_free(a);
        return rc;
    }
    *out = a;
    return SD_OK;
}

int sd_npz_open_file(const char *path, struct archive **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return sd_err(errno == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", path, strerror(errno));
    fclose(fp);
    struct archive *a = new_reader();
    if (!a) return sd_err(SD_ENOMEM, "%s: out of memory", path);
    return opened(a, archive_read_open_filename(a, path, 65536), path, out);
}

int sd_npz_open_memory(const void *buf, size_t n, const char *name, struct archive **out)
{
    *out = NULL;
    struct archive *a = new_reader();
    if (!a) return sd_err(SD_ENOMEM, "%s: out of memory", name);
    return opened(a, archive_read_open_memory(a, buf, n), name, out);
}
