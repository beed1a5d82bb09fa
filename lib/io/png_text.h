/* PNG text chunks: insert tEXt / iTXt chunks into an encoded PNG byte stream, and read them back.
 *
 * Writing follows PIL's PngInfo.add_text(key, value) as A1111 and the reference's gen_img.py use
 * it: a value whose characters all fit in Latin-1 is stored as tEXt (Latin-1 bytes); any other
 * value as an uncompressed iTXt chunk (compression flag 0, empty language tag and translated
 * keyword, UTF-8 text). The chunks go right before the first IDAT chunk, in the order given, as
 * PIL writes them. Keys must be 1..79 printable Latin-1 characters without leading, trailing or
 * double spaces (the PNG rule); values must be valid UTF-8 without NUL. Everything else of the
 * stream is copied unchanged.
 *
 * Reading returns tEXt, uncompressed iTXt (and zTXt / compressed iTXt through zlib) chunks as
 * UTF-8 key/value pairs in file order; chunk CRCs are checked. */
#ifndef SD_IO_PNG_TEXT_H
#define SD_IO_PNG_TEXT_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_png_text {
    const char *key;     /* UTF-8 (must be Latin-1 representable) */
    const char *value;   /* UTF-8 */
} sd_png_text;

/* New malloc'd stream = png with the n text chunks inserted before the first IDAT.
 * SD_EFORMAT for a stream that is not a PNG (bad signature, truncated or corrupt chunk, no IHDR
 * first, no IDAT), SD_EINVAL for a bad key or value (the message names it). */
int sd_png_add_text(const uint8_t *png, size_t len, const sd_png_text *t, size_t n, uint8_t **out,
                    size_t *out_len);

/* Text chunks read back: keys and values are malloc'd UTF-8 strings. */
typedef struct sd_png_text_list {
    char **keys, **values;
    size_t n;
} sd_png_text_list;

int sd_png_read_text(const uint8_t *png, size_t len, sd_png_text_list *out);
void sd_png_text_list_free(sd_png_text_list *l);
/* The value of the first chunk named `key`, or NULL. */
const char *sd_png_text_get(const sd_png_text_list *l, const char *key);

#endif
