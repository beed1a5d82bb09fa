/* BERT WordPiece tokenizer (see bert_tokenizer.h). */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/strbuf.h"
#include "text/bert_tokenizer.h"
#include "text/unicode_tables.h"

#define MAX_TOKENS (1 << 24)
#define MAX_WORD_CHARS 100

struct sd_bert_vocab {
    char **tok;
    int32_t n;
    int32_t *hash;   /* id + 1, 0 = empty */
    size_t hcap;
    int32_t unk;
    int32_t special[5];
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int32_t lookup(const sd_bert_vocab *v, const char *s, size_t n)
{
    size_t i = (size_t)fnv(s, n) & (v->hcap - 1);
    for (;;) {
        int32_t e = v->hash[i];
        if (!e) return -1;
        const char *t = v->tok[e - 1];
        if (strlen(t) == n && !memcmp(t, s, n)) return e - 1;
        i = (i + 1) & (v->hcap - 1);
    }
}

void sd_bert_vocab_free(sd_bert_vocab *v)
{
    if (!v) return;
    for (int32_t i = 0; i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->hash);
    free(v);
}

int sd_bert_vocab_parse(const char *text, size_t n, const char *name, sd_bert_vocab **out)
{
    *out = NULL;
    if (memchr(text, 0, n)) return sd_err(SD_EFORMAT, "%s: contains a NUL byte", name);
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
    if (n && text[n - 1] != '\n') lines++;
    if (!lines) return sd_err(SD_EFORMAT, "%s: empty vocabulary", name);
    if (lines > MAX_TOKENS) return sd_err(SD_EFORMAT, "%s: more than %d tokens", name, MAX_TOKENS);
    sd_bert_vocab *v = calloc(1, sizeof *v);
    if (!v) return sd_err(SD_ENOMEM, "out of memory");
    v->tok = calloc(lines, sizeof *v->tok);
    v->hcap = 16;
    while (v->hcap < lines * 2) v->hcap *= 2;
    v->hash = calloc(v->hcap, sizeof *v->hash);
    if (!v->tok || !v->hash) {
        sd_bert_vocab_free(v);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    size_t p = 0;
    while (p < n) {
        const char *e = memchr(text + p, '\n', n - p);
        size_t L = e ? (size_t)(e - (text + p)) : n - p;
        size_t k = L;
        if (k && text[p + k - 1] == '\r') k--;
        if (lookup(v, text + p, k) >= 0) {
            int rc = sd_err(SD_EFORMAT, "%s: line %d: duplicate token '%.*s'", name, (int)v->n + 1, (int)(k > 60 ? 60 : k),
                            text + p);
            sd_bert_vocab_free(v);
            return rc;
        }
        char *t = malloc(k + 1);
        if (!t) {
            sd_bert_vocab_free(v);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        memcpy(t, text + p, k);
        t[k] = 0;
        v->tok[v->n] = t;
        size_t i = (size_t)fnv(t, k) & (v->hcap - 1);
        while (v->hash[i]) i = (i + 1) & (v->hcap - 1);
        v->hash[i] = ++v->n;
        p += L + 1;
    }
    v->unk = lookup(v, "[UNK]", 5);
    static const char *sp[5] = { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
    for (int i = 0; i < 5; i++) v->special[i] = lookup(v, sp[i], strlen(sp[i]));
    *out = v;
    return SD_OK;
}

int sd_bert_vocab_load(const char *path, sd_bert_vocab **out)
{
    char *text = NULL;
    size_t n = 0;
    *out = NULL;
    int rc = sd_read_file(path, (size_t)256 << 20, &text, &n);
    if (rc < 0) return rc;
    rc = sd_bert_vocab_parse(text, n, path, out);
    free(text);
    return rc;
}

int32_t sd_bert_vocab_size(const sd_bert_vocab *v) { return v->n; }
int32_t sd_bert_token_id(const sd_bert_vocab *v, const char *token) { return lookup(v, token, strlen(token)); }
const char *sd_bert_token(const sd_bert_vocab *v, int32_t id) { return id >= 0 && id < v->n ? v->tok[id] : NULL; }

/* ---- characters ------------------------------------------------------------------------------ */

/* next code point; invalid sequences give U+FFFD for one byte */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned c = s[*i];
    size_t need = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 9;
    if (need == 0) {
        (*i)++;
        return c;
    }
    if (need == 9 || *i + need >= n) {
        (*i)++;
        return 0xFFFD;
    }
    uint32_t cp = c & (0x3F >> need);
    for (size_t k = 1; k <= need; k++) {
        unsigned b = s[*i + k];
        if ((b & 0xC0) != 0x80) {
            (*i)++;
            return 0xFFFD;
        }
        cp = cp << 6 | (b & 0x3F);
    }
    static const uint32_t minv[4] = { 0, 0x80, 0x800, 0x10000 };
    if (cp < minv[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        (*i)++;
        return 0xFFFD;
    }
    *i += need + 1;
    return cp;
}

static void utf8_put(sd_strbuf *b, uint32_t c)
{
    char s[4];
    size_t n;
    if (c < 0x80) s[0] = (char)c, n = 1;
    else if (c < 0x800) s[0] = (char)(0xC0 | c >> 6), s[1] = (char)(0x80 | (c & 0x3F)), n = 2;
    else if (c < 0x10000)
        s[0] = (char)(0xE0 | c >> 12), s[1] = (char)(0x80 | (c >> 6 & 0x3F)), s[2] = (char)(0x80 | (c & 0x3F)), n = 3;
    else
        s[0] = (char)(0xF0 | c >> 18), s[1] = (char)(0x80 | (c >> 12 & 0x3F)), s[2] = (char)(0x80 | (c >> 6 & 0x3F)),
        s[3] = (char)(0x80 | (c & 0x3F)), n = 4;
    sd_strbuf_add(b, s, n);
}

static int is_control(uint32_t c)
{
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    if (c < 32 || (c >= 0x7F && c <= 0x9F)) return 1;
    static const uint32_t cf[][2] = {
        { 0xAD, 0xAD },       { 0x600, 0x605 },     { 0x61C, 0x61C },     { 0x6DD, 0x6DD },   { 0x70F, 0x70F },
        { 0x890, 0x891 },     { 0x8E2, 0x8E2 },     { 0x180E, 0x180E },   { 0x200B, 0x200F }, { 0x202A, 0x202E },
        { 0x2060, 0x2064 },   { 0x2066, 0x206F },   { 0xD800, 0xF8FF },   { 0xFEFF, 0xFEFF }, { 0xFFF9, 0xFFFB },
        { 0x110BD, 0x110BD }, { 0x110CD, 0x110CD }, { 0x13430, 0x1343F }, { 0x1BCA0, 0x1BCA3 }, { 0x1D173, 0x1D17A },
        { 0xE0001, 0xE0001 }, { 0xE0020, 0xE007F }, { 0xF0000, 0x10FFFF },
    };
    return sd_uc_in(cf, sizeof cf / sizeof cf[0], c);
}

static int is_space(uint32_t c) { return sd_uc_in(sd_uc_py_space, sd_uc_py_space_n, c); }

static int is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int ccc(uint32_t c)
{
    size_t lo = 0, hi = sd_uc_ccc_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sd_uc_ccc[mid][0]) hi = mid;
        else if (c > sd_uc_ccc[mid][1]) lo = mid + 1;
        else return (int)sd_uc_ccc[mid][2];
    }
    return 0;
}

static int is_punct(uint32_t c)
{
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return 1;
    if (c < 128) return 0;
    if (sd_uc_in(sd_uc_clip_letter, sd_uc_clip_letter_n, c) || sd_uc_in(sd_uc_clip_number, sd_uc_clip_number_n, c) ||
        is_space(c) || is_control(c) || ccc(c))
        return 0;
    return 1;
}

static uint32_t lower1(uint32_t c)
{
    if (c == 0x3A3) return 0x3C3;
    size_t lo = 0, hi = sd_uc_lower_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sd_uc_lower[mid][0]) hi = mid;
        else if (c > sd_uc_lower[mid][0]) lo = mid + 1;
        else return sd_uc_lower[mid][1];
    }
    return c;
}

/* canonical decomposition (recursive, Hangul algorithmic) with combining marks dropped */
static void put_stripped(sd_strbuf *b, uint32_t c, int depth)
{
    if (c >= 0xAC00 && c <= 0xD7A3) {
        uint32_t s = c - 0xAC00;
        utf8_put(b, 0x1100 + s / 588);
        utf8_put(b, 0x1161 + (s % 588) / 28);
        if (s % 28) utf8_put(b, 0x11A7 + s % 28);
        return;
    }
    if (depth < 8) {
        size_t lo = 0, hi = sd_uc_decomp_n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (c < sd_uc_decomp[mid][0]) hi = mid;
            else if (c > sd_uc_decomp[mid][0]) lo = mid + 1;
            else {
                put_stripped(b, sd_uc_decomp[mid][1], depth + 1);
                if (sd_uc_decomp[mid][2]) put_stripped(b, sd_uc_decomp[mid][2], depth + 1);
                return;
            }
        }
    }
    if (ccc(c)) return;
    utf8_put(b, c);
}

/* ---- encoding -------------------------------------------------------------------------------- */

typedef struct ids_buf {
    int32_t *p;
    size_t n, cap;
    int oom;
} ids_buf;

static void ids_push(ids_buf *b, int32_t id)
{
    if (b->oom) return;
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 16;
        int32_t *np = realloc(b->p, nc * sizeof *np);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    b->p[b->n++] = id;
}

/* WordPiece of one word (UTF-8, no spaces) */
static int wordpiece(const sd_bert_vocab *v, const char *w, size_t n, ids_buf *out)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) chars += ((unsigned char)w[i] & 0xC0) != 0x80;
    size_t mark = out->n;
    if (chars <= MAX_WORD_CHARS) {
        char *tmp = malloc(n + 3);
        if (!tmp) return sd_err(SD_ENOMEM, "out of memory");
        size_t start = 0;
        int bad = 0;
        while (start < n) {
            size_t end = n;
            int32_t cur = -1;
            while (start < end) {
                size_t k = 0;
                if (start > 0) tmp[k++] = '#', tmp[k++] = '#';
                memcpy(tmp + k, w + start, end - start);
                k += end - start;
                cur = lookup(v, tmp, k);
                if (cur >= 0) break;
                do end--; while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80);
            }
            if (cur < 0) {
                bad = 1;
                break;
            }
            ids_push(out, cur);
            start = end;
        }
        free(tmp);
        if (!bad) return SD_OK;
        out->n = mark;
    }
    if (v->unk < 0) return sd_err(SD_EFORMAT, "the vocabulary has no [UNK] token");
    ids_push(out, v->unk);
    return SD_OK;
}

int sd_bert_encode(const sd_bert_vocab *v, const char *text, size_t len, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    /* steps 1-4 into a string of words separated by single spaces */
    sd_strbuf words = { 0 };
    const unsigned char *s = (const unsigned char *)text;
    int in_word = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c = utf8_next(s, len, &i);
        if (c == 0 || c == 0xFFFD || is_control(c)) continue;
        if (is_space(c)) {
            in_word = 0;
            continue;
        }
        if (is_cjk(c)) {
            if (words.n) sd_strbuf_add(&words, " ", 1);
            utf8_put(&words, c);
            in_word = 0;
            continue;
        }
        /* lower-case, strip accents, then split punctuation (per resulting character) */
        sd_strbuf one = { 0 };
        if (c == 0x130) {
            put_stripped(&one, 'i', 0);
            put_stripped(&one, 0x307, 0);
        } else {
            put_stripped(&one, lower1(c), 0);
        }
        const unsigned char *o = (const unsigned char *)one.p;
        for (size_t j = 0; j < one.n;) {
            size_t j0 = j;
            uint32_t d = utf8_next(o, one.n, &j);
            if (is_punct(d)) {
                if (words.n) sd_strbuf_add(&words, " ", 1);
                sd_strbuf_add(&words, (const char *)o + j0, j - j0);
                in_word = 0;
            } else {
                if (!in_word && words.n) sd_strbuf_add(&words, " ", 1);
                sd_strbuf_add(&words, (const char *)o + j0, j - j0);
                in_word = 1;
            }
        }
        if (one.oom) words.oom = 1;
        free(one.p);
    }
    if (words.oom) {
        free(words.p);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    ids_buf out = { 0 };
    int rc = SD_OK;
    for (size_t p = 0; p < words.n && rc == SD_OK;) {
        const char *e = memchr(words.p + p, ' ', words.n - p);
        size_t L = e ? (size_t)(e - (words.p + p)) : words.n - p;
        if (L) rc = wordpiece(v, words.p + p, L, &out);
        p += L + 1;
    }
    free(words.p);
    if (rc == SD_OK && out.oom) rc = sd_err(SD_ENOMEM, "out of memory");
    if (rc) {
        free(out.p);
        return rc;
    }
    *ids = out.p;
    *n = out.n;
    return SD_OK;
}

/* ---- decoding -------------------------------------------------------------------------------- */

static int is_special(const sd_bert_vocab *v, int32_t id)
{
    if (id < 0 || id >= v->n) return 1;
    for (int i = 0; i < 5; i++)
        if (v->special[i] == id) return 1;
    return 0;
}

/* in-place replace-all of `from` by `to` (to no longer than from) */
static void replace_all(char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    char *r = s, *w = s;
    while (*r) {
        if (!strncmp(r, from, fl)) {
            memcpy(w, to, tl);
            w += tl;
            r += fl;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
}

int sd_bert_decode(const sd_bert_vocab *v, const int32_t *ids, size_t n, char **text)
{
    sd_strbuf b = { 0 };
    sd_strbuf_add(&b, "", 0);
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        if (is_special(v, ids[i])) continue;
        const char *t = v->tok[ids[i]];
        if (!first) sd_strbuf_add(&b, " ", 1);
        sd_strbuf_puts(&b, t);
        first = 0;
    }
    if (b.oom) {
        free(b.p);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    char *s = b.p;
    replace_all(s, " ##", "");
    /* strip() */
    size_t L = strlen(s), a = 0;
    while (a < L && (s[a] == ' ' || s[a] == '\t' || s[a] == '\n' || s[a] == '\r')) a++;
    while (L > a && (s[L - 1] == ' ' || s[L - 1] == '\t' || s[L - 1] == '\n' || s[L - 1] == '\r')) L--;
    memmove(s, s + a, L - a);
    s[L - a] = 0;
    static const char *cl[][2] = { { " .", "." },    { " ?", "?" },    { " !", "!" },    { " ,", "," },
                                   { " ' ", "'" },   { " n't", "n't" }, { " 'm", "'m" }, { " 's", "'s" },
                                   { " 've", "'ve" }, { " 're", "'re" } };
    for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++) replace_all(s, cl[i][0], cl[i][1]);
    *text = s;
    return SD_OK;
}
