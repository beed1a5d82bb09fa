/* File helpers: whole-file read, atomic writes (temp name in the same directory, fsync, rename),
 * so a crash never leaves a half-written output file. */
#ifndef SD_BASE_FILEIO_H
#define SD_BASE_FILEIO_H

#include <stddef.h>
#include <stdio.h>

typedef struct sd_atomic_file {
    FILE *fp;        /* write here */
    char *path;      /* final name */
    char *tmp;       /* temporary name: "<dir>/.<base>.tmp.XXXXXX" */
} sd_atomic_file;

/* Open a temporary file next to `path` for writing. */
int sd_atomic_open(sd_atomic_file *af, const char *path);
/* Flush, fsync, close and rename over `path`. On failure the temp file is removed. */
int sd_atomic_commit(sd_atomic_file *af);
/* Close and remove the temp file; `path` is untouched. Safe to call after a failed commit. */
void sd_atomic_abort(sd_atomic_file *af);
/* Durability (default on): commit fsyncs the file and its directory, so a committed file
 * survives a power loss. A tool writing thousands of files may turn it off and call
 * sd_fileio_sync_all() once at the end: commits stay atomic (rename: a crash never leaves a half
 * file under the final name), only the on-disk flush is batched. Process-wide. */
void sd_fileio_set_durable(int on);
int sd_fileio_durable(void);
/* syncfs() of the file system holding `path` (for the end of a non-durable batch). */
int sd_fileio_sync_all(const char *path);
/* Write a whole buffer atomically. */
int sd_write_file_atomic(const char *path, const void *data, size_t n);
/* Read a whole file into a malloc'd buffer (NUL-terminated for convenience; *n excludes it).
 * `max` bounds the size (0 = no bound); larger files fail with SD_ERANGE. */
int sd_read_file(const char *path, size_t max, char **data, size_t *n);
/* mkdir -p */
int sd_mkdirs(const char *dir);

#endif
