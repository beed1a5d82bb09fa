/* Tag selection and post-processing of kohya's tag_images_by_wd14_tagger.py (SmilingWolf
 * layout; reference-behaviour.md §5.3), on the rows of selected_tags.csv (io/tags_csv.h).
 *
 * Labels are prepared once (sd_wdtags_init), in the reference's order:
 *   1. character_tag_expand: a character name ending in ')' is split at its last '(':
 *      "name_(series)" -> "name" + separator + "series" (one trailing '_' removed);
 *   2. remove_underscore: '_' -> ' ' in every label longer than 3 characters (code points);
 *   3. tag_replacement "src,dst;src2,dst2" ("\," and "\;" are literal): the first label equal to
 *      src among the general rows, else the character rows, else the rating rows, becomes dst
 *      (the working pre-2026 behaviour; HEAD's rewrite no longer replaces for this layout).
 * undesired_tags and always_first_tags are split on the separator stripped of surrounding
 * whitespace, each item stripped, empty items dropped. A separator that is only whitespace is
 * SD_EINVAL (the reference fails on it: Python's split("") raises).
 *
 * Selection for one image (sd_wdtags_select), probabilities p = sigmoid(logit) per row:
 *   rows in file order: general (category 0) kept when p >= general_threshold, appended;
 *   character (4) when p >= character_threshold, appended, or inserted at the front with
 *   character_first (so characters come first, in reverse order); labels in undesired are
 *   skipped; rows of other categories are never output. Rating (9): with rating_first or
 *   rating_last, the first rating row with the largest p (numpy argmax) is inserted at the front
 *   (rating_first wins when both are set) or appended, unless undesired. Then for each
 *   always_first tag in list order: if present, its first occurrence moves to the front. */
#ifndef SD_DATA_WDTAGS_H
#define SD_DATA_WDTAGS_H

#include "io/tags_csv.h"

typedef struct sd_wdtags_opts {
    double general_threshold, character_threshold;
    int character_first, rating_first, rating_last;
    int remove_underscore, character_expand;
    const char *separator;     /* NULL: ", " */
    const char *undesired;     /* may be NULL */
    const char *always_first;  /* may be NULL */
    const char *replacement;   /* may be NULL */
} sd_wdtags_opts;

typedef struct sd_wdtags {
    sd_wdtags_opts o;
    int n;
    char **label;      /* per row, after expansion, underscores, replacement */
    int *category;
    char *sep;         /* the separator (owned) */
    char **undesired, **first;
    int nundesired, nfirst;
} sd_wdtags;

/* SD_EINVAL with a message for a bad tag_replacement or separator. */
int sd_wdtags_init(sd_wdtags *w, const sd_tag_table *t, const sd_wdtags_opts *o);
void sd_wdtags_free(sd_wdtags *w);

/* The selected labels (pointers into w->label) in output order: *out (malloc'd, free it) holds
 * *n entries. `prob` has w->n values. */
int sd_wdtags_select(const sd_wdtags *w, const float *prob, const char ***out, int *n);
/* Join with the separator (malloc'd). */
char *sd_wdtags_join(const sd_wdtags *w, const char *const *tags, int n);
/* --append_tags: `existing` (a sidecar's text; NULL = none) with '\n' stripped from both ends,
 * split on the stripped separator, items stripped, empty ones dropped; then the new tags not
 * already present; joined with the separator (malloc'd). */
char *sd_wdtags_append(const sd_wdtags *w, const char *existing, const char *const *tags, int n);

#endif
