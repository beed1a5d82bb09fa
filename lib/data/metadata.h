/* The fine-tuning metadata of kohya-ss/sd-scripts (reference-behaviour.md §4.1): a JSON object
 * keyed by image key (the file stem, or the path with --full_path) whose values are objects
 * (`caption`, `tags`, `train_resolution`, `image_size`, ...), or its JSON Lines form (one object
 * per line with `image_path`, `caption`, optional `tags` and `image_size`).
 *
 * Writing reproduces Python's json.dump(obj, f, indent=2) byte for byte: two-space indentation,
 * ", " never used (items end in ",\n"), ": " after keys, "{}"/"[]" for empty containers, no
 * final newline, non-ASCII escaped as \uXXXX (lower-case hex, surrogate pairs) when
 * `ensure_ascii`, DEL and controls escaped, '/' not escaped. Numbers: jv holds doubles, so an
 * integral value below 1e16 is written as an integer and any other as Python's repr(float)
 * (shortest round-trip digits; exponent form below 1e-4 and from 1e16: 1e-05, 1.5e+16); a float
 * such as 512.0 therefore comes back as 512. */
#ifndef SD_DATA_METADATA_H
#define SD_DATA_METADATA_H

#include <jv.h>
#include <stddef.h>

typedef struct sd_meta_entry {
    char *key;    /* the image key (JSONL: image_path) */
    jv value;     /* the entry object without image_path; jv_invalid() when `err` is set */
    long line;    /* JSONL line (0 for the JSON form) */
    char *err;    /* per-entry problem, or NULL */
} sd_meta_entry;

typedef struct sd_meta {
    sd_meta_entry *e;
    size_t n, cap;
    int jsonl;
} sd_meta;

/* Read PATH: JSON Lines when the name ends in ".jsonl" (case-insensitive), else one JSON
 * object. Fatal problems (missing/unreadable file, malformed JSON with "PATH:LINE:COL", a top
 * level that is not an object) return SD_ENOTFOUND / SD_EIO / SD_EFORMAT; per-entry problems
 * (a value that is not an object, a bad JSONL line, a line without a string image_path) are
 * kept in the entry's `err` ("PATH:LINE: ..." or "PATH: entry 'KEY': ..."). */
int sd_meta_load(const char *path, sd_meta *m);
void sd_meta_free(sd_meta *m);

/* Serialise `v` (borrowed) as Python's json.dumps(v, indent=2, ensure_ascii=...). *out is
 * malloc'd (NUL-terminated, *n bytes). */
int sd_json_dump_py(jv v, int ensure_ascii, char **out, size_t *n);
/* The same with json.dumps's indent=`indent` (≥ 0), or its default compact form for indent < 0
 * (one line, ", " and ": " separators). */
int sd_json_dump_py_indent(jv v, int ensure_ascii, int indent, char **out, size_t *n);

/* Find the image of a metadata key (§4.6, HEAD and legacy rules together): an absolute key that
 * exists; `image_dir/key`; the key relative to the working directory; `image_dir/key.EXT` for
 * the image extensions (the legacy stem keys). Returns 1 with *path (malloc'd) or 0 (not found;
 * *path = NULL); SD_ENOMEM. `image_dir` may be NULL. */
int sd_meta_find_image(const char *key, const char *image_dir, char **path);

/* A string -> index hash map (keys copied). */
typedef struct sd_strmap {
    char **keys;
    size_t *vals;
    size_t cap, n;
} sd_strmap;
int sd_strmap_put(sd_strmap *m, const char *key, size_t val);   /* replaces */
int sd_strmap_get(const sd_strmap *m, const char *key, size_t *val);   /* 1 found, 0 not */
void sd_strmap_free(sd_strmap *m);

#endif
