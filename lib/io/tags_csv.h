/* selected_tags.csv of the WD taggers (models-and-formats.md §A.4): one row per model output.
 *
 * CSV as Python's csv module reads it with the default dialect (what kohya's
 * tag_images_by_wd14_tagger.py uses): fields separated by ',', a field starting with '"' is
 * quoted ("" inside is one quote; commas and line breaks are literal), a '"' inside an unquoted
 * field is literal; rows end with "\n", "\r\n" or "\r". Stricter than Python where Python would
 * silently mangle data: text between a closing quote and the next separator, and an unterminated
 * quote, are errors. Blank lines are skipped (Python yields an empty row, kohya then fails).
 * A UTF-8 byte order mark is skipped. The file must be valid UTF-8 without NUL bytes.
 *
 * The header must start with tag_id,name,category (kohya asserts the same); each row needs at
 * least those three fields, a non-empty name and an integer category (9 rating, 0 general,
 * 4 character; others are kept and reported as is). Errors: SD_EFORMAT "NAME:LINE: problem".
 * Limits: 256 MiB of text, 4,194,304 rows. */
#ifndef SD_IO_TAGS_CSV_H
#define SD_IO_TAGS_CSV_H

#include <stddef.h>

enum { SD_TAG_GENERAL = 0, SD_TAG_CHARACTER = 4, SD_TAG_RATING = 9 };

typedef struct sd_tag_table {
    int n;            /* rows = model outputs, in file order */
    char **name;      /* UTF-8, owned */
    int *category;
} sd_tag_table;

int sd_tags_csv_parse(const char *data, size_t n, const char *src, sd_tag_table *out);
/* Read and parse a file (SD_ENOTFOUND / SD_EIO "PATH: reason" when it cannot be read). */
int sd_tags_csv_load(const char *path, sd_tag_table *out);
void sd_tag_table_free(sd_tag_table *t);

#endif
