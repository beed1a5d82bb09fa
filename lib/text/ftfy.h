/* The text fixes of ftfy 6.1.1's fix_text() (default configuration, as Hugging Face's
 * CLIPTokenizer applies it when ftfy is installed, which kohya-ss/sd-scripts' requirements
 * ensure), except fix_encoding: the mojibake detector and re-decoder (a heuristic over a large
 * "badness" pattern) is not implemented, so text that ftfy would re-decode (like "CafÃ©") is left
 * as it is. Everything else is reproduced exactly, verified against ftfy itself:
 *
 *   the text is cut into segments after each "\n" (and every 1,000,000 code points); HTML
 *   unescaping is on until the first segment containing '<' (and off from then on); each segment
 *   is fixed repeatedly until it stops changing, one pass being:
 *     unescape_html (entities "&name;" of HTML5 and their all-caps Latin forms, "&#...;" numeric
 *     references as html.unescape decodes them, at most 24 characters between '&' and ';'),
 *     fix_c1_controls (U+0080..U+009F as Windows-1252), fix_latin_ligatures, fix_character_width
 *     (full/half-width forms, U+3000 -> ' '), uncurl_quotes, fix_line_breaks (CRLF, CR, U+2028,
 *     U+2029, U+0085 -> "\n"), remove_terminal_escapes (ESC '[' digits/';' letter), and
 *     remove_control_chars, then NFC normalisation (Unicode 14, Python 3.11's unicodedata).
 *   (fix_surrogates has nothing to do: decoded UTF-8 holds no surrogates.)
 *
 * The passes stop after 10,000 rounds on one segment (ftfy has no limit; only adversarial text
 * like "&amp;amp;amp;..." needs more than a few). */
#ifndef SD_TEXT_FTFY_H
#define SD_TEXT_FTFY_H

#include <stddef.h>
#include <stdint.h>

/* Fix n code points in *cps (malloc'd; may be reallocated, *n updated). */
int sd_ftfy_fix_cps(uint32_t **cps, size_t *n);
/* UTF-8 in (invalid sequences become U+FFFD), malloc'd UTF-8 out. */
int sd_ftfy_fix_text(const char *text, size_t len, char **out);
/* UTF-8 decoding with one U+FFFD per maximal ill-formed subpart (Python's errors="replace");
 * out needs room for n code points; returns the count. */
size_t sd_utf8_decode(const unsigned char *s, size_t n, uint32_t *out);
/* Encode one code point (< 0x110000) into o (room for 4 bytes); returns the byte count. */
size_t sd_utf8_put(uint32_t c, unsigned char *o);
/* NFC alone on code points (out needs room for 4 * n code points); returns the count. */
size_t sd_unicode_nfc(const uint32_t *in, size_t n, uint32_t *out);

/* Tables (lib/text/ftfy_tables.c, generated). */
typedef struct {
    uint32_t cp;
    uint32_t n;
    uint32_t out[3];
} sd_ftfy_map;
typedef struct {
    const char *name;   /* "&amp;" */
    uint32_t n;
    uint32_t out[3];
} sd_ftfy_entity;
extern const sd_ftfy_map sd_ftfy_ligatures[], sd_ftfy_width[], sd_ftfy_c1[];
extern const size_t sd_ftfy_ligatures_n, sd_ftfy_width_n, sd_ftfy_c1_n;
extern const uint32_t sd_ftfy_control[];
extern const size_t sd_ftfy_control_n;
extern const sd_ftfy_entity sd_ftfy_entities[];   /* sorted by name (strcmp) */
extern const size_t sd_ftfy_entities_n;
/* html.unescape's numeric-reference fixups: replacements for some numbers, and numbers that
 * decode to nothing. */
extern const sd_ftfy_map sd_html_invalid_charrefs[];
extern const size_t sd_html_invalid_charrefs_n;
extern const uint32_t sd_html_invalid_codepoints[];
extern const size_t sd_html_invalid_codepoints_n;

#endif
