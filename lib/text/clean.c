/* Caption and tag cleaning of kohya-ss/sd-scripts' clean_captions_and_tags.py (see clean.h).
 *
 * The reference runs Python regular expressions over the padded tag text ", a, , b, , c, ".
 * Every pattern there has the shape ", INNER, " where INNER cannot contain a comma, so a match
 * starting at a ", " always ends at the first comma after it; the matchers below therefore take
 * the text between a ", " and the next comma (which must be followed by a space) and test it
 * against INNER as a whole. This reproduces Python's findall/sub/search results (leftmost,
 * non-overlapping, scanning on after each match) exactly. */
#include "text/clean.h"

#include "base/error.h"
#include "text/unicode_tables.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- strings ---- */

char *sd_str_replace(const char *s, const char *old, const char *rep)
{
    size_t ls = strlen(s), lo = strlen(old), lr = strlen(rep), count = 0;
    if (lo == 0) return NULL;
    for (const char *p = strstr(s, old); p; p = strstr(p + lo, old)) count++;
    size_t n = ls - count * lo + count * lr;
    char *out = malloc(n + 1);
    if (!out) return NULL;
    char *w = out;
    const char *p = s;
    for (const char *q = strstr(p, old); q; q = strstr(p, old)) {
        memcpy(w, p, (size_t)(q - p));
        w += q - p;
        memcpy(w, rep, lr);
        w += lr;
        p = q + lo;
    }
    memcpy(w, p, strlen(p) + 1);
    return out;
}

/* Replace in place (frees the old string); NULL stays NULL. */
static char *repl(char *s, const char *old, const char *rep)
{
    if (!s) return NULL;
    char *r = sd_str_replace(s, old, rep);
    free(s);
    return r;
}

/* ---- \w for UTF-8 ---- */

static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned c = s[*i];
    if (c < 0x80) { (*i)++; return c; }
    int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (len == 1 || *i + (size_t)len > n) { (*i)++; return 0xFFFD; }
    uint32_t cp = c & (0x3F >> (len - 1));
    for (int k = 1; k < len; k++) cp = (cp << 6) | (s[*i + (size_t)k] & 0x3F);
    *i += (size_t)len;
    return cp;
}

/* Python 3 `\w` on str: '_' and the characters str.isalnum() accepts (letters and numbers;
 * the Unicode tables of text/unicode_tables.h, generated from Python 3.11). */
static int is_word_cp(uint32_t c)
{
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    return sd_uc_in(sd_uc_clip_letter, sd_uc_clip_letter_n, c) || sd_uc_in(sd_uc_clip_number, sd_uc_clip_number_n, c);
}

/* s[0..n) is [\w-]+ (hyphen: allow_hyphen) and non-empty. */
static int all_word(const char *s, size_t n, int allow_hyphen)
{
    if (n == 0) return 0;
    size_t i = 0;
    while (i < n) {
        if (allow_hyphen && s[i] == '-') { i++; continue; }
        uint32_t c = utf8_next((const unsigned char *)s, n, &i);
        if (!is_word_cp(c)) return 0;
    }
    return 1;
}

static int eq(const char *t, size_t n, const char *lit) { return strlen(lit) == n && memcmp(t, lit, n) == 0; }

/* t = [\w-]+ + suffix */
static int word_then(const char *t, size_t n, const char *suffix)
{
    size_t ls = strlen(suffix);
    return n > ls && memcmp(t + n - ls, suffix, ls) == 0 && all_word(t, n - ls, 1);
}

/* ---- the reference's patterns, as predicates on the inner text ---- */

enum { P_HAIR_LENGTH, P_HAIR_CUT, P_EYES, P_SLEEVES, P_STYLE, P_HAIR, P_WORD };

static int inner_match(int pat, const char *t, size_t n)
{
    switch (pat) {
    case P_HAIR_LENGTH: return eq(t, n, "long hair") || eq(t, n, "short hair") || eq(t, n, "medium hair");
    case P_HAIR_CUT: return eq(t, n, "bob cut") || eq(t, n, "hime cut");
    case P_EYES: return word_then(t, n, " eyes");
    case P_SLEEVES: return word_then(t, n, " sleeves") || eq(t, n, "sleeveless");
    case P_STYLE: {
        static const char *const lits[] = {"ponytail", "braid", "ahoge", "twintails", "single hair bun",
                                           "single side bun", "two side up", "two tails", "sidelocks"};
        for (size_t k = 0; k < sizeof lits / sizeof *lits; k++)
            if (eq(t, n, lits[k])) return 1;
        return word_then(t, n, " bun") || word_then(t, n, " braid");
    }
    case P_HAIR: return word_then(t, n, " hair");
    case P_WORD: return all_word(t, n, 1) || eq(t, n, "hair ornament");
    }
    return 0;
}

/* A match of ", INNER, " at s+i: returns its length (0 = none) and the inner span. */
static size_t match_at(const char *s, size_t i, int pat, size_t *ib, size_t *in_n)
{
    if (s[i] != ',' || s[i + 1] != ' ') return 0;
    const char *c = strchr(s + i + 2, ',');
    if (!c || c[1] != ' ') return 0;
    size_t b = i + 2, e = (size_t)(c - s);
    if (!inner_match(pat, s + b, e - b)) return 0;
    if (ib) *ib = b;
    if (in_n) *in_n = e - b;
    return e + 2 - i;
}

static size_t findall_count(const char *s, int pat)
{
    size_t count = 0, n = strlen(s);
    for (size_t i = 0; i + 1 < n;) {
        size_t m = match_at(s, i, pat, NULL, NULL);
        if (m) { count++; i += m; } else i++;
    }
    return count;
}

/* pat.sub(rep, s); frees s. */
static char *sub_all(char *s, int pat, const char *rep)
{
    if (!s) return NULL;
    size_t n = strlen(s), lr = strlen(rep);
    char *out = malloc(n * (lr > 4 ? lr : 4) + 1);   /* each match is >= 4 bytes long */
    if (!out) { free(s); return NULL; }
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t m = i + 1 < n ? match_at(s, i, pat, NULL, NULL) : 0;
        if (m) { memcpy(out + w, rep, lr); w += lr; i += m; }
        else out[w++] = s[i++];
    }
    out[w] = 0;
    free(s);
    return out;
}

/* re.search(", ((\w+) )+WORD, ", s): some ", T, " where T = one or more "\w+ " then WORD. */
static int redundant(const char *s, const char *word)
{
    size_t n = strlen(s), lw = strlen(word);
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != ',' || s[i + 1] != ' ') continue;
        const char *c = strchr(s + i + 2, ',');
        if (!c || c[1] != ' ') continue;
        const char *t = s + i + 2;
        size_t tn = (size_t)(c - t);
        if (tn <= lw + 1 || memcmp(t + tn - lw, word, lw) != 0) continue;
        size_t pn = tn - lw;   /* prefix, must be (\w+ )+ */
        if (t[pn - 1] != ' ') continue;
        int ok = 1;
        size_t a = 0;
        while (a < pn && ok) {
            const char *sp = memchr(t + a, ' ', pn - a);
            size_t wl = (size_t)(sp - (t + a));
            ok = all_word(t + a, wl, 0);
            a += wl + 1;
        }
        if (ok) return 1;
    }
    return 0;
}

int sd_clean_tags(const char *tags, char **out, int *nratings, int *emptied)
{
    *out = NULL;
    if (nratings) *nratings = 0;
    if (emptied) *emptied = 0;
    char *s = strdup(tags);
    s = repl(s, "^_^", "^@@@^");
    s = repl(s, "_", " ");
    s = repl(s, "^@@@^", "^_^");
    if (!s) return sd_err(SD_ENOMEM, "out of memory");

    char *r = strstr(s, ", rating");
    if (r) {
        int k = 0;
        for (const char *p = r; p; p = strstr(p + 8, ", rating")) k++;
        if (nratings) *nratings = k;
        *r = 0;
    }

    char *dbl = sd_str_replace(s, ", ", ", , ");
    free(s);
    if (!dbl) return sd_err(SD_ENOMEM, "out of memory");
    size_t ld = strlen(dbl);
    char *t = malloc(ld + 5);
    if (!t) { free(dbl); return sd_err(SD_ENOMEM, "out of memory"); }
    memcpy(t, ", ", 2);
    memcpy(t + 2, dbl, ld);
    memcpy(t + 2 + ld, ", ", 3);
    free(dbl);

    if (strstr(t, "girls") || strstr(t, "boys")) {
        static const int multi[] = {P_HAIR_LENGTH, P_HAIR_CUT, P_EYES, P_SLEEVES, P_STYLE};
        for (size_t k = 0; k < sizeof multi / sizeof *multi && t; k++)
            if (findall_count(t, multi[k]) > 1) t = sub_all(t, multi[k], "");
        char *org = NULL;
        if (t) {
            size_t n = strlen(t);
            for (size_t i = 0; i + 1 < n; i++) {
                size_t m = match_at(t, i, P_HAIR_LENGTH, NULL, NULL);
                if (m) { org = strndup(t + i, m); if (!org) { free(t); t = NULL; } break; }
            }
        }
        if (org) t = sub_all(t, P_HAIR_LENGTH, ", @@@, ");
        if (t && findall_count(t, P_HAIR) > 1) t = sub_all(t, P_HAIR, "");
        if (org) { t = repl(t, ", @@@, ", org); free(org); }
        if (!t) return sd_err(SD_ENOMEM, "out of memory");
    }

    /* single words (or "hair ornament") made redundant by a longer tag ending in them */
    size_t n = strlen(t), nw = 0;
    char **words = malloc((n / 4 + 1) * sizeof *words);
    if (!words) { free(t); return sd_err(SD_ENOMEM, "out of memory"); }
    for (size_t i = 0; i + 1 < n;) {
        size_t b, wl, m = match_at(t, i, P_WORD, &b, &wl);
        if (m) { words[nw++] = strndup(t + b, wl); i += m; } else i++;
    }
    for (size_t k = 0; k < nw; k++) {
        if (t && words[k] && redundant(t, words[k])) {
            size_t lw = strlen(words[k]);
            char *pat = malloc(lw + 5);
            if (pat) {
                memcpy(pat, ", ", 2); memcpy(pat + 2, words[k], lw); memcpy(pat + 2 + lw, ", ", 3);
                t = repl(t, pat, "");
            } else { free(t); t = NULL; }
            free(pat);
        } else if (!words[k]) { free(t); t = NULL; }
        free(words[k]);
    }
    free(words);
    t = repl(t, ", , ", ", ");
    if (!t) return sd_err(SD_ENOMEM, "out of memory");
    n = strlen(t);
    if (n >= 2 && memcmp(t, ", ", 2) == 0 && memcmp(t + n - 2, ", ", 2) == 0) {
        size_t keep = n >= 4 ? n - 4 : 0;
        memmove(t, t + 2, keep);
        t[keep] = 0;
    } else {
        t[0] = 0;
        if (emptied) *emptied = 1;
    }
    *out = t;
    return SD_OK;
}

static const char *const caption_repl[][2] = {
    {"anime anime", "anime"}, {"young ", ""}, {"anime girl", "girl"}, {"cartoon female", "girl"},
    {"cartoon lady", "girl"}, {"cartoon character", "girl"}, {"cartoon woman", "girl"},
    {"cartoon women", "girls"}, {"cartoon girl", "girl"}, {"anime female", "girl"},
    {"anime lady", "girl"}, {"anime character", "girl"}, {"anime woman", "girl"},
    {"anime women", "girls"}, {"lady", "girl"}, {"female", "girl"}, {"woman", "girl"},
    {"women", "girls"}, {"people", "girls"}, {"person", "girl"}, {"a cartoon figure", "a figure"},
    {"a cartoon image", "an image"}, {"a cartoon picture", "a picture"},
    {"an anime cartoon image", "an image"}, {"a cartoon anime drawing", "a drawing"},
    {"a cartoon drawing", "a drawing"}, {"girl girl", "girl"},
};

int sd_clean_caption(const char *caption, char **out)
{
    char *s = strdup(caption);
    for (size_t k = 0; s && k < sizeof caption_repl / sizeof *caption_repl; k++) {
        while (s && strstr(s, caption_repl[k][0])) {
            /* "young " -> "" and similar shrink the text, so the loop ends; a replacement that
             * re-creates its own pattern ("girl girl" from "girl girl girl") also shrinks. */
            s = repl(s, caption_repl[k][0], caption_repl[k][1]);
        }
    }
    if (!s) { *out = NULL; return sd_err(SD_ENOMEM, "out of memory"); }
    *out = s;
    return SD_OK;
}
