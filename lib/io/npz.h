/* npz files (zip archives of .npy members, numpy's savez) read through libarchive: the pieces the
 * latent files (io/latent.h) and kohya's text-encoder output caches (io/te_cache.h) share. Only
 * libarchive's seekable zip reader is used: it reads the central directory, so a truncated file or a
 * missing end record is an error (the streaming reader would accept a file cut short after the
 * last member's data). */
#ifndef SD_IO_NPZ_H
#define SD_IO_NPZ_H

#include <archive.h>
#include <archive_entry.h>
#include <stddef.h>

#include "io/npy.h"

/* Open the file `path`, or the n bytes at buf (messages call it `name`), for reading its members
 * with archive_read_next_header(); the caller frees *out with archive_read_free(). Errors name the
 * source: SD_ENOTFOUND / SD_EIO when the file cannot be opened, SD_EFORMAT when it is not a zip
 * archive. */
int sd_npz_open_file(const char *path, struct archive **out);
int sd_npz_open_memory(const void *buf, size_t n, const char *name, struct archive **out);

/* libarchive's last message as one line (some end with a newline), in buf. */
const char *sd_npz_archive_msg(struct archive *a, char *buf, size_t cap);

/* The current member's data (entry e) into a malloc'd, NUL-terminated buffer of at most `max`
 * bytes: a larger member (declared or actual) is SD_ERANGE, a size differing from the header's
 * SD_EFORMAT; messages name the member `mname`. */
int sd_npz_read_member(struct archive *a, struct archive_entry *e, const char *mname, size_t max,
                       unsigned char **out, size_t *outn);

/* A float32 or float16 member → a malloc'd float array (takes over or frees x->data); other dtypes
 * and non-finite values are SD_EFORMAT naming the member. */
int sd_npy_take_f32(sd_npy_array *x, const char *mname, float **out);

#endif
