/* ftfy 6.1.1's fix_encoding (mojibake detection and re-decoding), default configuration; see
 * ftfy.h. Written from ftfy's description of its steps (ftfy/__init__.py, fixes.py, badness.py,
 * chardata.py, bad_codecs/); the character tables come from ftfy itself (ftfy_tables.c). */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "text/ftfy.h"
#include "text/unicode_tables.h"

/* fix_encoding_and_explain repeats one step until the text stops changing; ftfy has no limit
 * (each successful step shortens or settles the text in practice). */
#define MAX_STEPS 1000
/* decode_inconsistent_utf8 calls fix_encoding on shorter pieces; deeper than this, the piece
 * is left as it is (real text needs one or two levels). */
#define MAX_DEPTH 48

enum { ENC_LATIN1 = 0, ENC_SLOPPY_FIRST = 1, ENC_SLOPPY_LAST = 5 };

/* ---------------------------------------------------------------------------------------------
 * Growable arrays */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} cvec;

typedef struct {
    unsigned char *v;
    size_t n, cap;
} bvec;

static int cv_reserve(cvec *o, size_t extra)
{
    if (o->n + extra <= o->cap) return SD_OK;
    size_t cap = o->cap ? o->cap : 64;
    while (cap < o->n + extra) cap *= 2;
    uint32_t *p = realloc(o->v, cap * sizeof *p);
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    o->v = p;
    o->cap = cap;
    return SD_OK;
}

static int cv_put(cvec *o, uint32_t c)
{
    if (o->n == o->cap && cv_reserve(o, 1)) return SD_ENOMEM;
    o->v[o->n++] = c;
    return SD_OK;
}

static int cv_append(cvec *o, const uint32_t *s, size_t n)
{
    if (cv_reserve(o, n)) return SD_ENOMEM;
    if (n) memcpy(o->v + o->n, s, n * sizeof *s);
    o->n += n;
    return SD_OK;
}

static int bv_put(bvec *o, unsigned char c)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        unsigned char *p = realloc(o->v, cap);
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        o->v = p;
        o->cap = cap;
    }
    o->v[o->n++] = c;
    return SD_OK;
}

static int same(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
    return na == nb && (!na || !memcmp(a, b, na * sizeof *a));
}

/* ---------------------------------------------------------------------------------------------
 * Character classes */

static uint32_t cls(uint32_t c)
{
    size_t lo = 0, hi = sd_ftfy_classes_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sd_ftfy_classes[mid][0]) hi = mid;
        else if (c > sd_ftfy_classes[mid][1]) lo = mid + 1;
        else return sd_ftfy_classes[mid][2];
    }
    return 0;
}

/* re's \s and \w in str patterns */
static int py_space(uint32_t c) { return sd_uc_in(sd_uc_py_space, sd_uc_py_space_n, c); }
static int py_word(uint32_t c) { return sd_uc_in(sd_ftfy_word, sd_ftfy_word_n, c); }
static int az(uint32_t c) { return c >= 'a' && c <= 'z'; }
static int az_any(uint32_t c) { return az(c) || (c >= 'A' && c <= 'Z'); }

static int one_of(uint32_t c, const uint32_t *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == c) return 1;
    return 0;
}
#define ONE_OF(c, ...) one_of((c), (const uint32_t[]){__VA_ARGS__}, \
                              sizeof((const uint32_t[]){__VA_ARGS__}) / sizeof(uint32_t))

/* ---------------------------------------------------------------------------------------------
 * ftfy.badness.is_bad: BADNESS_RE.search(text), the alternatives tested at every position */

enum {
    COM = SD_FTFY_COMMON, C1 = SD_FTFY_C1, BAD = SD_FTFY_BAD, CUR = SD_FTFY_CURRENCY,
    SP = SD_FTFY_START_PUNCT, EP = SD_FTFY_END_PUNCT, NUM = SD_FTFY_NUMERIC,
    KAO = SD_FTFY_KAOMOJI, UA = SD_FTFY_UPPER_ACC, LA = SD_FTFY_LOWER_ACC,
    UC = SD_FTFY_UPPER_COMMON, LC = SD_FTFY_LOWER_COMMON, BOX = SD_FTFY_BOX
};

static int bad_at(const uint32_t *s, size_t n, size_t i, const uint32_t *m)
{
    /* m[k] = class mask of s[i + k] (0 past the end); k < 4 */
    size_t left = n - i;
    uint32_t c0 = s[i], c1 = left > 1 ? s[i + 1] : 0, c2 = left > 2 ? s[i + 2] : 0;
    uint32_t m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];

    /* [c1] */
    if (m0 & C1) return 1;
    /* every other alternative needs a classed character among the first three (the letters,
     * spaces and punctuation some start with are followed by one) */
    if (left < 2 || !(m0 | m1 | m2)) return 0;
    /* [bad lower_accented upper_accented box start_punct end_punct currency numeric] [bad] */
    if ((m0 & (BAD | LA | UA | BOX | SP | EP | CUR | NUM)) && (m1 & BAD)) return 1;
    /* [a-zA-Z] [lower_common upper_common] [bad] */
    if (left > 2 && az_any(c0) && (m1 & (LC | UC)) && (m2 & BAD)) return 1;
    /* [bad] [lower_accented upper_accented box start_punct end_punct currency numeric] */
    if ((m0 & BAD) && (m1 & (LA | UA | BOX | SP | EP | CUR | NUM))) return 1;
    /* [lower_accented lower_common box end_punct currency numeric] [upper_accented] */
    if ((m0 & (LA | LC | BOX | EP | CUR | NUM)) && (m1 & UA)) return 1;
    /* [box end_punct currency numeric] [lower_accented] */
    if ((m0 & (BOX | EP | CUR | NUM)) && (m1 & LA)) return 1;
    /* [lower_accented box end_punct] [currency] */
    if ((m0 & (LA | BOX | EP)) && (m1 & CUR)) return 1;
    /* \s [upper_accented] [currency] */
    if (left > 2 && (m1 & UA) && (m2 & CUR) && py_space(c0)) return 1;
    /* [upper_accented box] [numeric] */
    if ((m0 & (UA | BOX)) && (m1 & NUM)) return 1;
    /* [lower_accented upper_accented box currency end_punct] [start_punct] [numeric] */
    if (left > 2 && (m0 & (LA | UA | BOX | CUR | EP)) && (m1 & SP) && (m2 & NUM)) return 1;
    /* [lower_accented upper_accented currency numeric box] [end_punct] [start_punct] */
    if (left > 2 && (m0 & (LA | UA | CUR | NUM | BOX)) && (m1 & EP) && (m2 & SP)) return 1;
    /* [currency numeric box] [start_punct] */
    if ((m0 & (CUR | NUM | BOX)) && (m1 & SP)) return 1;
    /* [a-z] [upper_accented] [start_punct currency] */
    if (left > 2 && az(c0) && (m1 & UA) && (m2 & (SP | CUR))) return 1;
    /* [box] [kaomoji] */
    if ((m0 & BOX) && (m1 & KAO)) return 1;
    /* [lower_accented upper_accented currency numeric start_punct end_punct] [box] */
    if ((m0 & (LA | UA | CUR | NUM | SP | EP)) && (m1 & BOX)) return 1;
    /* [box] [end_punct] */
    if ((m0 & BOX) && (m1 & EP)) return 1;
    /* [lower_accented upper_accented] [end_punct] \w */
    if (left > 2 && (m0 & (LA | UA)) && (m1 & EP) && py_word(c2)) return 1;
    /* [Œœ][^A-Za-z] */
    if ((c0 == 0x152 || c0 == 0x153) && !az_any(c1)) return 1;
    /* [ÂÃÎÐ][€Šš¢£Ÿž\xa0\xad®©°·» start_punct end_punct –—´] */
    if (ONE_OF(c0, 0xC2, 0xC3, 0xCE, 0xD0) &&
        ((m1 & (SP | EP)) || ONE_OF(c1, 0x20AC, 0x160, 0x161, 0xA2, 0xA3, 0x178, 0x17E, 0xA0, 0xAD,
                                    0xAE, 0xA9, 0xB0, 0xB7, 0xBB, 0x2013, 0x2014, 0xB4)))
        return 1;
    /* × [²³] */
    if (c0 == 0xD7 && (c1 == 0xB2 || c1 == 0xB3)) return 1;
    /* ([ØÙ] [common currency bad numeric start_punct ŸŠ®°µ»]){2} */
    if (left > 3 && (c0 == 0xD8 || c0 == 0xD9) && (c2 == 0xD8 || c2 == 0xD9)) {
        uint32_t c3 = s[i + 3];
        int x1 = (m1 & (COM | CUR | BAD | NUM | SP)) || ONE_OF(c1, 0x178, 0x160, 0xAE, 0xB0, 0xB5, 0xBB);
        int x3 = (m3 & (COM | CUR | BAD | NUM | SP)) || ONE_OF(c3, 0x178, 0x160, 0xAE, 0xB0, 0xB5, 0xBB);
        if (x1 && x3) return 1;
    }
    /* à[²µ¹¼½¾] */
    if (c0 == 0xE0 && ONE_OF(c1, 0xB2, 0xB5, 0xB9, 0xBC, 0xBD, 0xBE)) return 1;
    /* √[±∂†≠®™´≤≥¥µø] */
    if (c0 == 0x221A && ONE_OF(c1, 0xB1, 0x2202, 0x2020, 0x2260, 0xAE, 0x2122, 0xB4, 0x2264, 0x2265,
                               0xA5, 0xB5, 0xF8))
        return 1;
    /* ≈[°¢] */
    if (c0 == 0x2248 && (c1 == 0xB0 || c1 == 0xA2)) return 1;
    /* ‚Ä[ìîïòôúùû†°¢π] and ‚[âó][àä°ê] */
    if (c0 == 0x201A && left > 2) {
        if (c1 == 0xC4 && ONE_OF(c2, 0xEC, 0xEE, 0xEF, 0xF2, 0xF4, 0xFA, 0xF9, 0xFB, 0x2020, 0xB0,
                                 0xA2, 0x3C0))
            return 1;
        if ((c1 == 0xE2 || c1 == 0xF3) && ONE_OF(c2, 0xE0, 0xE4, 0xB0, 0xEA)) return 1;
    }
    /* вЂ */
    if (c0 == 0x432 && c1 == 0x402) return 1;
    /* [ВГРС][c1 bad start_punct end_punct currency °µ][ВГРС] */
    if (left > 2 && ONE_OF(c0, 0x412, 0x413, 0x420, 0x421) && ONE_OF(c2, 0x412, 0x413, 0x420, 0x421) &&
        ((m1 & (C1 | BAD | SP | EP | CUR)) || c1 == 0xB0 || c1 == 0xB5))
        return 1;
    /* ГўВЂВ.[A-Za-z ] */
    if (left > 6 && c0 == 0x413 && c1 == 0x45E && c2 == 0x412 && s[i + 3] == 0x402 && s[i + 4] == 0x412 &&
        s[i + 5] != '\n' && (az_any(s[i + 6]) || s[i + 6] == ' '))
        return 1;
    /* Ã[\xa0¡] */
    if (c0 == 0xC3 && (c1 == 0xA0 || c1 == 0xA1)) return 1;
    /* [a-z]\s?[ÃÂ][ ] */
    if (az(c0) && left > 2) {
        if ((c1 == 0xC3 || c1 == 0xC2) && c2 == ' ') return 1;
        if (left > 3 && (c2 == 0xC3 || c2 == 0xC2) && s[i + 3] == ' ' && py_space(c1)) return 1;
    }
    /* ^[ÃÂ][ ] */
    if (i == 0 && (c0 == 0xC3 || c0 == 0xC2) && c1 == ' ') return 1;
    /* [a-z.,?! end_punct] Â [ start_punct end_punct] */
    if (left > 2 && (az(c0) || ONE_OF(c0, '.', ',', '?', '!') || (m0 & EP)) && c1 == 0xC2 &&
        (c2 == ' ' || (m2 & (SP | EP))))
        return 1;
    /* β€[™\xa0Ά\xad®°] */
    if (left > 2 && c0 == 0x3B2 && c1 == 0x20AC && ONE_OF(c2, 0x2122, 0xA0, 0x386, 0xAD, 0xAE, 0xB0)) return 1;
    /* [ΒΓΞΟ][c1 bad start_punct end_punct currency °][ΒΓΞΟ] */
    if (left > 2 && ONE_OF(c0, 0x392, 0x393, 0x39E, 0x39F) && ONE_OF(c2, 0x392, 0x393, 0x39E, 0x39F) &&
        ((m1 & (C1 | BAD | SP | EP | CUR)) || c1 == 0xB0))
        return 1;
    return 0;
}

int sd_ftfy_is_bad(const uint32_t *s, size_t n)
{
    uint32_t m[4] = {0, 0, 0, 0};
    for (size_t k = 0; k < 3 && k < n; k++) m[k + 1] = cls(s[k]);
    for (size_t i = 0; i < n; i++) {
        m[0] = m[1];
        m[1] = m[2];
        m[2] = m[3];
        m[3] = i + 3 < n ? cls(s[i + 3]) : 0;
        if (bad_at(s, n, i, m)) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Single-byte encodings */

static const sd_ftfy_enc_row *enc_row(uint32_t c)
{
    size_t lo = 0, hi = sd_ftfy_enc_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sd_ftfy_enc[mid].cp) hi = mid;
        else if (c > sd_ftfy_enc[mid].cp) lo = mid + 1;
        else return &sd_ftfy_enc[mid];
    }
    return NULL;
}

/* Bit k set: the text can be encoded in encoding k (chardata.possible_encoding). */
static unsigned possible_encodings(const uint32_t *s, size_t n)
{
    unsigned mask = (1u << SD_FTFY_NENC) - 1;
    for (size_t i = 0; i < n && mask; i++) {
        uint32_t c = s[i];
        if (c < 0x80 && c != 0x1A) continue;
        const sd_ftfy_enc_row *r = enc_row(c);
        if (!r) return 0;
        for (int k = 0; k < SD_FTFY_NENC; k++)
            if (!r->b[k]) mask &= ~(1u << k);
    }
    return mask;
}

static int encode(const uint32_t *s, size_t n, int k, bvec *o)
{
    o->n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        unsigned char b = (unsigned char)c;
        if (c >= 0x80 || c == 0x1A) b = enc_row(c)->b[k];   /* known encodable */
        if (bv_put(o, b)) return SD_ENOMEM;
    }
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Byte fixes: restore_byte_a0, replace_lossy_sequences */

static int cont_not_85_a0(unsigned char b) { return b >= 0x80 && b <= 0xBF && b != 0x85 && b != 0xA0; }
static int cont(unsigned char b) { return b >= 0x80 && b <= 0xBF; }

/* ALTERED_UTF8_RE at position i: match length or 0 (the alternatives cannot overlap). */
static size_t altered_at(const unsigned char *b, size_t n, size_t i)
{
    size_t left = n - i;
    unsigned char c = b[i];
    if (left >= 2 && (c == 0xC2 || c == 0xC3 || c == 0xC5 || c == 0xCE || c == 0xD0 || c == 0xD9) && b[i + 1] == ' ')
        return 2;
    if (left >= 3 && (c == 0xE2 || c == 0xE3) && b[i + 1] == ' ' && cont_not_85_a0(b[i + 2])) return 3;
    if (left >= 3 && c >= 0xE0 && c <= 0xE3 && cont_not_85_a0(b[i + 1]) && b[i + 2] == ' ') return 3;
    if (left >= 4 && c == 0xF0) {
        unsigned char x = b[i + 1], y = b[i + 2], z = b[i + 3];
        if (x == ' ' && cont(y) && cont(z)) return 4;
        if (cont(x) && y == ' ' && cont(z)) return 4;
        if (cont(x) && cont(y) && z == ' ') return 4;
    }
    return 0;
}

static int altered_search(const bvec *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (altered_at(b->v, b->n, i)) return 1;
    return 0;
}

static int restore_byte_a0(const bvec *in, bvec *o)
{
    const unsigned char *b = in->v;
    size_t n = in->n;
    bvec t = {0};
    o->n = 0;
    /* A_GRAVE_WORD_RE: b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 " */
    for (size_t i = 0; i < n;) {
        if (b[i] == 0xC3 && i + 1 < n && b[i + 1] == ' ') {
            const unsigned char *r = b + i + 2;
            size_t rl = n - i - 2;
            int keep = (rl >= 1 && r[0] == ' ') || (rl >= 2 && r[0] == 's' && r[1] == ' ') ||
                       (rl >= 5 && (!memcmp(r, "quele", 5) || !memcmp(r, "quela", 5) || !memcmp(r, "quilo", 5)));
            if (!keep) {
                if (bv_put(&t, 0xC3) || bv_put(&t, 0xA0) || bv_put(&t, ' ')) { free(t.v); return SD_ENOMEM; }
                i += 2;
                continue;
            }
        }
        if (bv_put(&t, b[i++])) { free(t.v); return SD_ENOMEM; }
    }
    /* ALTERED_UTF8_RE matches get their spaces turned into 0xA0 */
    for (size_t i = 0; i < t.n;) {
        size_t l = altered_at(t.v, t.n, i);
        if (l) {
            for (size_t k = 0; k < l; k++)
                if (bv_put(o, t.v[i + k] == ' ' ? 0xA0 : t.v[i + k])) { free(t.v); return SD_ENOMEM; }
            i += l;
        } else if (bv_put(o, t.v[i++])) {
            free(t.v);
            return SD_ENOMEM;
        }
    }
    free(t.v);
    return SD_OK;
}

/* LOSSY_UTF8_RE at position i: match length or 0, alternatives in the pattern's order. */
static size_t lossy_at(const unsigned char *b, size_t n, size_t i)
{
    size_t left = n - i;
    unsigned char c = b[i];
#define SUBQ(x) ((x) == 0x1A || (x) == '?')
#define SUBC(x) ((x) == 0x1A || cont(x))
#define ANY(x) ((x) == 0x1A || (x) == '?' || cont(x))
    if (left >= 2 && c >= 0xC2 && c <= 0xDF && b[i + 1] == 0x1A) return 2;
    if (left >= 2 && (c == 0xC2 || c == 0xC3) && b[i + 1] == '?') return 2;
    if (left >= 6 && c == 0xED && b[i + 1] >= 0xA0 && b[i + 1] <= 0xAF && b[i + 3] == 0xED && b[i + 4] >= 0xB0 &&
        b[i + 4] <= 0xBF) {
        if (SUBQ(b[i + 2]) && ANY(b[i + 5])) return 6;
        if (ANY(b[i + 2]) && SUBQ(b[i + 5])) return 6;
    }
    if (left >= 3 && c >= 0xE0 && c <= 0xEF) {
        if (SUBQ(b[i + 1]) && SUBC(b[i + 2])) return 3;
        if (SUBC(b[i + 1]) && SUBQ(b[i + 2])) return 3;
    }
    if (left >= 4 && c >= 0xF0 && c <= 0xF4) {
        unsigned char x = b[i + 1], y = b[i + 2], z = b[i + 3];
        if (SUBQ(x) && SUBC(y) && SUBC(z)) return 4;
        if (SUBC(x) && SUBQ(y) && SUBC(z)) return 4;
        if (SUBC(x) && SUBC(y) && SUBQ(z)) return 4;
    }
    if (c == 0x1A) return 1;
#undef SUBQ
#undef SUBC
#undef ANY
    return 0;
}

static int replace_lossy(const bvec *in, bvec *o)
{
    o->n = 0;
    for (size_t i = 0; i < in->n;) {
        size_t l = lossy_at(in->v, in->n, i);
        if (l) {
            if (bv_put(o, 0xEF) || bv_put(o, 0xBF) || bv_put(o, 0xBD)) return SD_ENOMEM;
            i += l;
        } else if (bv_put(o, in->v[i++])) {
            return SD_ENOMEM;
        }
    }
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding: strict UTF-8, and ftfy's utf-8-variants (CESU-8 surrogate pairs, Java's C0 80) */

/* Strict UTF-8 of b[0..n) appended to o; 1 on success, 0 on a decoding error, <0 on ENOMEM. */
static int utf8_strict(const unsigned char *b, size_t n, cvec *o)
{
    if (cv_reserve(o, n)) return SD_ENOMEM;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int r = sd_utf8_next(b + i, n - i, &cp);
        if (r <= 0) return 0;
        o->v[o->n++] = cp;
        i += (size_t)r;
    }
    return 1;
}

/* `$` of a bytes pattern without MULTILINE: the end, or just before a final b"\n". */
static int dollar(const unsigned char *b, size_t n, size_t i)
{
    return i == n || (i + 1 == n && b[i] == '\n');
}

/* SPECIAL_BYTES_RE (NULL_EXPR | CESU8_EXPR | SURROGATE_EXPR) matches at i. A CESU8_EXPR match
 * implies a SURROGATE_EXPR one, so the latter decides for 0xED. */
static int special_at(const unsigned char *b, size_t n, size_t i)
{
    if (b[i] == 0xC0) return (i + 1 < n && b[i + 1] == 0x80) || dollar(b, n, i + 1);
    if (b[i] != 0xED) return 0;
    size_t j = i + 1;
    if (j < n && b[j] >= 0xA0 && b[j] <= 0xBF) j++;
    else if (!dollar(b, n, j)) return 0;
    return (j < n && cont(b[j])) || dollar(b, n, j);
}

/* CESU8_RE.match at i, with at least 6 bytes left (only the last group can match `$` then). */
static int cesu_at(const unsigned char *b, size_t n, size_t i)
{
    return b[i] == 0xED && b[i + 1] >= 0xA0 && b[i + 1] <= 0xAF && cont(b[i + 2]) && b[i + 3] == 0xED &&
           b[i + 4] >= 0xB0 && b[i + 4] <= 0xBF && (cont(b[i + 5]) || dollar(b, n, i + 5));
}

/* The utf-8-variants decoder (bad_codecs/utf8_variants.py), final, errors="strict": plain UTF-8
 * up to each special sequence; C0 80 (or C0 before a final newline, which the pattern's `$`
 * lets through) is U+0000; six bytes ED A0..AF xx ED B0..BF xx are one supplementary code point;
 * anything else there is an error. */
static int utf8_variants(const unsigned char *b, size_t n, cvec *o)
{
    size_t pos = 0;
    while (pos < n) {
        size_t p = pos;
        while (p < n && !special_at(b, n, p)) p++;
        if (p > pos) {
            int r = utf8_strict(b + pos, p - pos, o);
            if (r <= 0) return r;
            pos = p;
            continue;
        }
        if (b[pos] == 0xC0) {
            if (n - pos < 2) return utf8_strict(b + pos, n - pos, o);
            if (cv_put(o, 0)) return SD_ENOMEM;
            pos += 2;
        } else if (n - pos < 6) {
            return utf8_strict(b + pos, n - pos, o);
        } else if (cesu_at(b, n, pos)) {
            const unsigned char *q = b + pos;
            uint32_t cp = ((uint32_t)(q[1] & 0x0F) << 16) + ((uint32_t)(q[2] & 0x3F) << 10) +
                          ((uint32_t)(q[4] & 0x0F) << 6) + (q[5] & 0x3F) + 0x10000;
            if (cv_put(o, cp)) return SD_ENOMEM;
            pos += 6;
        } else {
            return 0;   /* ED A0..BF starts no valid UTF-8 */
        }
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * decode_inconsistent_utf8 */

/* UTF8_DETECTOR_RE at i: (?<![continuation_strict]) ([first_of_2][cont] | [first_of_3][cont]{2}
 * | [first_of_4][cont]{3})+ ; returns the match end, or i when there is none. The greedy repeat
 * has nothing after it, so each round takes the first alternative that matches. */
static int conts_after(const uint32_t *s, size_t n, size_t j, size_t k)
{
    if (n - j - 1 < k) return 0;
    for (size_t q = 1; q <= k; q++)
        if (!(cls(s[j + q]) & SD_FTFY_U8_CONT)) return 0;
    return 1;
}

static size_t detector_at(const uint32_t *s, size_t n, size_t i)
{
    if (i > 0 && (cls(s[i - 1]) & SD_FTFY_U8_CONT_STRICT)) return i;
    size_t j = i;
    while (j < n) {
        uint32_t m = cls(s[j]);
        if ((m & SD_FTFY_U8_FIRST2) && conts_after(s, n, j, 1)) j += 2;
        else if ((m & SD_FTFY_U8_FIRST3) && conts_after(s, n, j, 2)) j += 3;
        else if ((m & SD_FTFY_U8_FIRST4) && conts_after(s, n, j, 3)) j += 4;
        else break;
    }
    return j;
}

static int fix_encoding_rec(const uint32_t *s, size_t n, cvec *out, int depth);

static int decode_inconsistent(const uint32_t *s, size_t n, cvec *o, int depth)
{
    o->n = 0;
    for (size_t i = 0; i < n;) {
        size_t e = detector_at(s, n, i);
        if (e > i) {
            int rc;
            if (e - i < n && depth < MAX_DEPTH && sd_ftfy_is_bad(s + i, e - i)) {
                cvec t = {0};
                rc = fix_encoding_rec(s + i, e - i, &t, depth + 1);
                if (!rc) rc = cv_append(o, t.v, t.n);
                free(t.v);
            } else {
                rc = cv_append(o, s + i, e - i);
            }
            if (rc) return rc;
            i = e;
        } else if (cv_put(o, s[i++])) {
            return SD_ENOMEM;
        }
    }
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * One step of fix_encoding_and_explain (_fix_encoding_one_step_and_explain) */

static int fix_c1(const uint32_t *s, size_t n, cvec *o)
{
    o->n = 0;
    if (cv_reserve(o, n)) return SD_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c >= 0x80 && c <= 0x9F) c = sd_ftfy_c1[c - 0x80].out[0];
        o->v[o->n++] = c;
    }
    return SD_OK;
}

static int one_step(const uint32_t *s, size_t n, cvec *o, int depth)
{
    int ascii = 1;
    for (size_t i = 0; i < n && ascii; i++) ascii = s[i] < 0x80;
    o->n = 0;
    if (ascii || !sd_ftfy_is_bad(s, n)) return cv_append(o, s, n);

    unsigned poss = possible_encodings(s, n);
    bvec b = {0}, t = {0};
    int rc = SD_OK;
    for (int k = 0; k < SD_FTFY_NENC; k++) {
        if (!(poss & (1u << k))) continue;
        if ((rc = encode(s, n, k, &b))) break;
        if (altered_search(&b)) {
            if ((rc = restore_byte_a0(&b, &t))) break;
            bvec x = b; b = t; t = x;
        }
        if (k >= ENC_SLOPPY_FIRST && k <= ENC_SLOPPY_LAST) {
            if ((rc = replace_lossy(&b, &t))) break;
            bvec x = b; b = t; t = x;
        }
        int variants = memchr(b.v, 0xED, b.n) || memchr(b.v, 0xC0, b.n);
        o->n = 0;
        int r = variants ? utf8_variants(b.v, b.n, o) : utf8_strict(b.v, b.n, o);
        if (r < 0) { rc = r; break; }
        if (r == 1) { free(b.v); free(t.v); return SD_OK; }
    }
    free(b.v);
    free(t.v);
    if (rc) return rc;

    /* embedded UTF-8 mojibake, fixed piece by piece */
    if ((rc = decode_inconsistent(s, n, o, depth))) return rc;
    if (!same(o->v, o->n, s, n)) return SD_OK;

    /* Latin-1 meant as Windows-1252 (its C1 controls) */
    if (poss & (1u << ENC_LATIN1)) {
        int ok = 1, changed = 0;
        for (size_t i = 0; i < n && ok; i++)
            if (s[i] >= 0x80 && s[i] <= 0x9F) {
                changed = 1;
                ok = sd_ftfy_c1[s[i] - 0x80].out[0] != s[i];   /* the five holes fail to decode */
            }
        if (ok && changed) return fix_c1(s, n, o);
    }
    int c1 = 0;
    for (size_t i = 0; i < n && !c1; i++) c1 = s[i] >= 0x80 && s[i] <= 0x9F;
    if (c1) return fix_c1(s, n, o);
    o->n = 0;
    return cv_append(o, s, n);
}

static int fix_encoding_rec(const uint32_t *s, size_t n, cvec *out, int depth)
{
    cvec cur = {0}, nxt = {0};
    int rc = cv_append(&cur, s, n);
    for (int step = 0; !rc && step < MAX_STEPS; step++) {
        if ((rc = one_step(cur.v, cur.n, &nxt, depth))) break;
        int done = same(cur.v, cur.n, nxt.v, nxt.n);
        cvec x = cur; cur = nxt; nxt = x;
        if (done) break;
    }
    free(nxt.v);
    if (rc) { free(cur.v); return rc; }
    *out = cur;
    return SD_OK;
}

int sd_ftfy_fix_encoding(uint32_t **cps, size_t *n)
{
    cvec o = {0};
    int rc = fix_encoding_rec(*cps, *n, &o, 0);
    if (rc) return rc;
    if (!o.v && !(o.v = malloc(sizeof *o.v))) return sd_err(SD_ENOMEM, "out of memory");
    free(*cps);
    *cps = o.v;
    *n = o.n;
    return SD_OK;
}
