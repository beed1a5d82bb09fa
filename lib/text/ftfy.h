/* ftfy 6.1.1's fix_text() in its default configuration, as Hugging Face's CLIPTokenizer applies it
 * when ftfy is installed (kohya-ss/sd-scripts' requirements pin that version). Reproduced exactly,
 * verified byte for byte against ftfy itself (tests/unit/test_ftfy.c, test_clip_tokenizer.c;
 * golden data from tests/golden/gen/make_ftfy_golden.py and clip_tokenizer_ref.py):
 *
 *   the text is cut into segments after each "\n" (and every 1,000,000 code points); HTML
 *   unescaping is on until the first segment containing '<' (and off from then on); each segment
 *   is fixed repeatedly until it stops changing, one pass being:
 *     unescape_html (entities "&name;" of HTML5 and their all-caps Latin forms, "&#...;" numeric
 *     references as html.unescape decodes them, at most 24 characters between '&' and ';'),
 *     fix_encoding (below), fix_c1_controls (U+0080..U+009F as Windows-1252),
 *     fix_latin_ligatures, fix_character_width (full/half-width forms, U+3000 -> ' '),
 *     uncurl_quotes, fix_line_breaks (CRLF, CR, U+2028, U+2029, U+0085 -> "\n"),
 *     remove_terminal_escapes (ESC '[' digits/';' letter), and remove_control_chars, then NFC
 *     normalisation (Unicode 14, Python 3.11's unicodedata).
 *   (fix_surrogates has nothing to do: decoded UTF-8 holds no surrogates, and no step makes any.)
 *
 * fix_encoding (lib/text/ftfy_encoding.c) repairs mojibake ("CafÃ©" -> "Café"): it repeats one
 * step until the text stops changing. A step leaves ASCII text, and text the badness heuristic
 * (ftfy.badness.is_bad, a pattern of ~35 unlikely character sequences over ftfy's character
 * categories) does not flag, alone. Otherwise each of latin-1, sloppy-windows-1252, -1251, -1250,
 * -1253, -1254, iso-8859-2, macroman and cp437 that can represent the text, in that order, turns
 * it back into bytes, applies restore_byte_a0 (a space that stood for byte A0 inside a UTF-8
 * sequence; "Ã " as "à ") and, for the sloppy codecs, replace_lossy_sequences (sequences broken
 * by U+FFFD or '?' become U+FFFD), and decodes them as UTF-8, or as ftfy's utf-8-variants
 * (CESU-8 surrogate pairs, Java's C0 80 for U+0000) when they hold ED or C0; the first that
 * decodes wins. Failing that: decode_inconsistent_utf8
 * (pieces that look like UTF-8 mojibake are fixed on their own), then Latin-1 C1 controls read
 * as Windows-1252, then fix_c1_controls. Quirks kept: the utf-8-variants pattern's `$` also
 * matches before a final newline, so "Ã©À\n" gives "é" (C0 and the newline become U+0000, later
 * removed) and a CESU-8 pair cut short by the final newline takes it as its last byte.
 *
 * Limits ftfy does not have (never reached by real text): the passes stop after 10,000 rounds on
 * one segment (only adversarial text like "&amp;amp;amp;..." needs more than a few),
 * fix_encoding after 1,000 steps, and decode_inconsistent_utf8 leaves a piece alone when fixing
 * it would nest more than 48 levels deep. */
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
/* One UTF-8 sequence at s (n ≥ 1 bytes): its length (> 0) with *cp set, or minus the length of the
 * maximal ill-formed subpart there (what one U+FFFD replaces). */
int sd_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
/* Encode one code point (< 0x110000) into o (room for 4 bytes); returns the byte count. */
size_t sd_utf8_put(uint32_t c, unsigned char *o);
/* NFC alone on code points (out needs room for 4 * n code points); returns the count. */
size_t sd_unicode_nfc(const uint32_t *in, size_t n, uint32_t *out);

/* fix_encoding alone (lib/text/ftfy_encoding.c): ftfy.fix_encoding() with its default
 * configuration, on n code points in *cps (malloc'd; may be reallocated, *n updated). */
int sd_ftfy_fix_encoding(uint32_t **cps, size_t *n);
/* ftfy.badness.is_bad(): 1 if some sequence of s matches the mojibake heuristic. */
int sd_ftfy_is_bad(const uint32_t *s, size_t n);

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

/* fix_encoding: character classes of ftfy.badness (MOJIBAKE_CATEGORIES) and of
 * chardata.UTF8_CLUES, as masks over {first, last, mask} runs (code points in none not listed). */
enum {
    SD_FTFY_COMMON = 1 << 0, SD_FTFY_C1 = 1 << 1, SD_FTFY_BAD = 1 << 2, SD_FTFY_CURRENCY = 1 << 3,
    SD_FTFY_START_PUNCT = 1 << 4, SD_FTFY_END_PUNCT = 1 << 5, SD_FTFY_NUMERIC = 1 << 6,
    SD_FTFY_KAOMOJI = 1 << 7, SD_FTFY_UPPER_ACC = 1 << 8, SD_FTFY_LOWER_ACC = 1 << 9,
    SD_FTFY_UPPER_COMMON = 1 << 10, SD_FTFY_LOWER_COMMON = 1 << 11, SD_FTFY_BOX = 1 << 12,
    SD_FTFY_U8_FIRST2 = 1 << 13, SD_FTFY_U8_FIRST3 = 1 << 14, SD_FTFY_U8_FIRST4 = 1 << 15,
    SD_FTFY_U8_CONT = 1 << 16, SD_FTFY_U8_CONT_STRICT = 1 << 17
};
extern const uint32_t sd_ftfy_classes[][3];
extern const size_t sd_ftfy_classes_n;
/* Python's \w (str.isalnum() or '_') as [first, last] ranges. */
extern const uint32_t sd_ftfy_word[][2];
extern const size_t sd_ftfy_word_n;
/* The single-byte encodings fix_encoding tries, in ftfy's order: latin-1, sloppy-windows-1252,
 * -1251, -1250, -1253, -1254, iso-8859-2, macroman, cp437. A row gives a code point's byte in
 * each (0: not encodable); ASCII other than U+001A encodes to itself in all and is not listed
 * (the sloppy codecs encode U+FFFD as 0x1A and cannot encode U+001A). Sorted by cp. */
#define SD_FTFY_NENC 9
typedef struct {
    uint16_t cp;
    uint8_t b[SD_FTFY_NENC];
} sd_ftfy_enc_row;
extern const sd_ftfy_enc_row sd_ftfy_enc[];
extern const size_t sd_ftfy_enc_n;

#endif
