/* Image discovery and caption sidecars as kohya-ss/sd-scripts finds them
 * (reference-behaviour.md §1.9, §1.10, §4.2).
 *
 * Image names: extensions .png .jpg .jpeg .webp .bmp. The reference's dataset loaders match
 * the all-lower-case and all-upper-case spellings only (".Jpg" is not an image to them);
 * SD_IMG_ANY_CASE accepts any case (sd-merge-meta's directory arguments).
 * Listing: the directory's entries (SD_IMG_RECURSIVE: and its subdirectories', not following
 * symbolic links to directories), sorted as the reference sorts them (component by component,
 * byte order = Python's code point order); names starting with '.' are skipped unless
 * SD_IMG_HIDDEN (Python's glob module skips them, pathlib's glob does not).
 * Paths are `dir + "/" + name` (no '/' doubled), as os.path.join builds them. */
#ifndef SD_DATA_IMAGES_H
#define SD_DATA_IMAGES_H

#include <stddef.h>

enum sd_img_flags { SD_IMG_RECURSIVE = 1, SD_IMG_ANY_CASE = 2, SD_IMG_HIDDEN = 4 };

int sd_img_is_image_name(const char *name, unsigned flags);

typedef struct sd_path_list {
    char **paths;
    size_t n, cap;
} sd_path_list;

/* Append the images under `dir` (sorted) to *out. SD_ENOTFOUND / SD_EIO ("DIR: reason") when
 * `dir` cannot be listed; unreadable subdirectories in recursive mode are skipped. */
int sd_img_list(const char *dir, unsigned flags, sd_path_list *out);
int sd_path_list_add(sd_path_list *l, const char *path);
void sd_path_list_free(sd_path_list *l);
/* Sort as the reference sorts Path objects (component-wise). */
void sd_path_list_sort(sd_path_list *l);

/* The path with its extension replaced by `ext` (pathlib's with_suffix, os.path.splitext):
 * "d/a.b.png" + ".txt" -> "d/a.b.txt". `ext` should start with '.'. malloc'd. */
char *sd_img_sidecar_path(const char *image, const char *ext);
/* File stem: "d/a.b.png" -> "a.b" (malloc'd). */
char *sd_img_stem(const char *path);

enum sd_sidecar_mode {
    SD_SIDECAR_STRIP = 0,      /* the whole text, stripped (merge_captions/merge_dd_tags) */
    SD_SIDECAR_FIRST_LINE = 1, /* DreamBooth: the first line, stripped; empty file = error */
    SD_SIDECAR_WILDCARD = 2,   /* DreamBooth with enable_wildcard: non-blank lines stripped,
                                  joined with '\n'; empty file = error */
};

/* Read a sidecar as UTF-8 text (Python's text mode: "\r\n" and "\r" end lines; whitespace per
 * str.strip(), Unicode spaces included; a byte order mark is kept, as Python's "utf-8" codec
 * keeps it). Returns 1 with *text (malloc'd), 0 when the file does not exist, or SD_EIO
 * ("PATH: reason"), SD_EFORMAT ("PATH: not valid UTF-8 (byte 0xff at offset 12)",
 * "PATH: contains a NUL byte", "PATH: caption file is empty"). */
int sd_sidecar_read(const char *path, int mode, char **text);

/* DreamBooth caption lookup (§1.9): `<dir>/<stem><ext>`, then (when the stem has 5 or more
 * '_'-fields) the stem without its last four fields. Returns 1 with *caption and *used (the
 * file read; both malloc'd), 0 when neither exists, or a negative error from sd_sidecar_read. */
int sd_db_caption(const char *image, const char *ext, int wildcard, char **caption, char **used);

/* Python str.strip() on UTF-8 text: returns the length of the stripped text and *start. */
size_t sd_py_strip(const char *s, size_t n, size_t *start);

#endif
