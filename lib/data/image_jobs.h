/* The input side of an image-model tool (sd-tag, sd-caption): every argument (standard input when
 * there is none, or "-") is a folder of images (sorted as the reference sorts them, subfolders
 * with `recursive`), an image file, or a file of records (JSON lines with "image"). Records go to
 * the tool in batches of up to `batch`, in input order: the images are decoded and preprocessed by
 * the tool's `load` on the --threads threads, the good ones are stacked into one host tensor
 * [good, 3, size, size] for the tool's `forward`, then `finish` sees each good record in order.
 * Records without a usable image (no "image" key, unreadable file, a `load` failure) and malformed
 * lines are reported with sd_record_error (source:line: why) and counted as skipped; a bad line
 * first flushes the records read before it, so reports keep the input order.
 *
 * Errors: a non-zero return of `forward` or `finish`, an unreadable argument or a read error stops
 * the run (the tool or this module has already reported it; the return is 1). */
#ifndef SD_DATA_IMAGE_JOBS_H
#define SD_DATA_IMAGE_JOBS_H

#include <stdint.h>

#include <jv.h>
#include "tensor/tensor.h"

typedef struct sd_image_job {
    jv rec;            /* the record ({"image": path} for folder and image arguments); freed after finish */
    long line;         /* its line (record files) or position in the listing, from 1 */
    uint64_t ordinal;  /* position in the whole input, malformed lines counted (per-record random streams) */
    char *image;       /* the image path */
    float *input;      /* [3, size, size], set by `load` (malloc'd; freed by this module) */
    int w, h;          /* the decoded image's size, for the tool (set by `load` if it wants them) */
    char *err;         /* why the record is skipped (sd_image_job_fail) */
} sd_image_job;

typedef struct sd_image_jobs {
    int batch;          /* records per forward (>= 1) */
    int recursive;      /* folder arguments: include subfolders */
    int64_t size;       /* model input side */
    const char *verb;   /* progress label ("tagging") */
    /* worker threads: decode and preprocess j->image into j->input, or sd_image_job_fail */
    void (*load)(sd_image_job *j, void *user);
    /* main thread: the model on x [good, 3, size, size] (host memory); 0, or non-zero after reporting */
    int (*forward)(const sd_tensor *x, void *user);
    /* main thread: the k-th good record of the batch; 0, or non-zero (a fatal error, reported) */
    int (*finish)(sd_image_job *j, int k, const char *src, void *user);
    void *user;
    long skipped;       /* out: records skipped (reported) */
} sd_image_jobs;

/* Record the first reason a record is skipped (thread-safe per job). */
void sd_image_job_fail(sd_image_job *j, const char *msg);

/* Run every argument (nargs 0: standard input). Returns 0, or 1 after a fatal error. */
int sd_image_jobs_run(sd_image_jobs *t, char **args, int nargs);

#endif
