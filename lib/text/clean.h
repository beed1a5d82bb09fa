/* Caption and tag cleaning exactly as kohya-ss/sd-scripts' finetune/clean_captions_and_tags.py
 * (reference-behaviour.md §4.4). Pure text functions on UTF-8 strings; used by sd-merge-meta
 * --clean.
 *
 * Tags (sd_clean_tags), in the reference's order:
 *   1. '_' becomes ' ' except inside the emoticon "^_^";
 *   2. everything from the first ", rating" on is dropped (DeepDanbooru appends rating tags);
 *   3. the text is padded to ", t1, , t2, , t3, " so that patterns match whole tags only;
 *   4. when the text contains "girls" or "boys" anywhere: for each group (hair length, haircut,
 *      "<w> eyes", "<w> sleeves"/"sleeveless", hairstyles), if two or more tags of the group are
 *      present, all of them are removed; then the hair-length tags are set aside, and if two or
 *      more "<w> hair" tags remain they are all removed; the set-aside places get the FIRST
 *      hair-length tag back (a reference quirk, kept);
 *   5. a single-word tag X (or "hair ornament") is removed when another tag is one or more words
 *      followed by " X" ("white shirt" removes "shirt");
 *   6. the padding is undone.
 * "<w>" is [\w-]+ and "words" in step 5 are \w+ as Python 3's re module defines \w on str:
 * '_' and every letter (L*) and number (N*) of any script, from the Unicode tables of
 * text/unicode_tables.h.
 *
 * Captions (sd_clean_caption): 27 plain substring replacements, each repeated until the text
 * stops changing, in the reference's order ("anime girl" -> "girl", "woman" -> "girl", ...). */
#ifndef SD_TEXT_CLEAN_H
#define SD_TEXT_CLEAN_H

/* Clean a tag string. On success *out is a malloc'd string and SD_OK is returned; *nratings (may
 * be NULL) gets the number of ", rating" pieces after the first (the reference logs "multiple
 * ratings" when it is 2 or more). When cleaning removes every tag the reference fails an
 * assertion; here the result is "" and SD_OK is returned with *emptied = 1 (may be NULL).
 * SD_ENOMEM on allocation failure. */
int sd_clean_tags(const char *tags, char **out, int *nratings, int *emptied);
/* Clean a caption; *out malloc'd. */
int sd_clean_caption(const char *caption, char **out);

/* Python's str.replace(old, new) (all non-overlapping occurrences, left to right); returns a
 * malloc'd string or NULL when out of memory. `old` must not be empty. */
char *sd_str_replace(const char *s, const char *old, const char *rep);

#endif
