/* PNG tEXt / iTXt chunks (see png_text.h). */
#include "io/png_text.h"

#include <stdlib.h>
#include <string.h>

#include <stb_image.h>

#include "base/error.h"
#include "base/hash.h"

static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Walk the chunks: calls fn for each; stops at IEND. Checks lengths and CRCs. */
typedef int (*chunk_fn)(void *user, const uint8_t *chunk, uint32_t len, size_t off);

static int walk(const uint8_t *png, size_t len, chunk_fn fn, void *user)
{
    if (len < 8 || memcmp(png, png_sig, 8)) return sd_err(SD_EFORMAT, "not a PNG stream (bad signature)");
    size_t off = 8;
    int first = 1;
    for (;;) {
        if (len - off < 12) return sd_err(SD_EFORMAT, "PNG stream truncated at byte %zu", off);
        uint32_t n = rd32(png + off);
        if (n > 0x7fffffffu || (size_t)n > len - off - 12)
            return sd_err(SD_EFORMAT, "PNG chunk at byte %zu: length %u runs past the end", off, n);
        const uint8_t *type = png + off + 4;
        for (int i = 0; i < 4; i++)
            if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z')))
                return sd_err(SD_EFORMAT, "PNG chunk at byte %zu: invalid chunk type", off);
        uint32_t crc = sd_crc32(0, type, (size_t)n + 4);
        if (crc != rd32(png + off + 8 + n))
            return sd_err(SD_EFORMAT, "PNG chunk '%.4s' at byte %zu: CRC mismatch", (const char *)type, off);
        if (first && memcmp(type, "IHDR", 4)) return sd_err(SD_EFORMAT, "PNG stream does not start with IHDR");
        first = 0;
        int rc = fn(user, png + off, n, off);
        if (rc < 0) return rc;
        if (rc > 0) return SD_OK;            /* callback asked to stop */
        off += (size_t)n + 12;
        if (!memcmp(type, "IEND", 4)) return SD_OK;
    }
}

/* ---- UTF-8 <-> Latin-1 ---------------------------------------------------------------------- */

/* Decode one UTF-8 code point (strict: no overlongs, surrogates or > U+10FFFF). -1 if invalid. */
static long utf8_next(const unsigned char **p)
{
    const unsigned char *s = *p;
    unsigned c = s[0];
    long cp;
    int n;
    if (c < 0x80) { *p = s + 1; return c; }
    if (c >= 0xc2 && c <= 0xdf) { cp = c & 0x1f; n = 1; }
    else if (c >= 0xe0 && c <= 0xef) { cp = c & 0x0f; n = 2; }
    else if (c >= 0xf0 && c <= 0xf4) { cp = c & 0x07; n = 3; }
    else return -1;
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xc0) != 0x80) return -1;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *p = s + n + 1;
    return cp;
}

/* Validate UTF-8; *latin1 = 1 when every code point is < 256. */
static int utf8_check(const char *s, int *latin1)
{
    const unsigned char *p = (const unsigned char *)s;
    *latin1 = 1;
    while (*p) {
        long cp = utf8_next(&p);
        if (cp < 0) return -1;
        if (cp > 0xff) *latin1 = 0;
    }
    return 0;
}

/* UTF-8 (all code points < 256) → Latin-1 bytes; returns the length. */
static size_t to_latin1(const char *s, uint8_t *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p) out[n++] = (uint8_t)utf8_next(&p);
    return n;
}

/* Latin-1 bytes → malloc'd UTF-8. */
static char *from_latin1(const uint8_t *s, size_t n)
{
    char *o = malloc(2 * n + 1), *q = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) *q++ = (char)s[i];
        else {
            *q++ = (char)(0xc0 | s[i] >> 6);
            *q++ = (char)(0x80 | (s[i] & 0x3f));
        }
    }
    *q = 0;
    return o;
}

static int check_key(const char *key)
{
    int l1;
    if (!key || !*key) return sd_err(SD_EINVAL, "PNG text key is empty");
    if (utf8_check(key, &l1) || !l1) return sd_err(SD_EINVAL, "PNG text key '%s': not Latin-1", key);
    uint8_t buf[80 * 2];
    size_t kl = strlen(key);
    if (kl > 158) return sd_err(SD_EINVAL, "PNG text key '%.20s...': longer than 79 characters", key);
    size_t n = to_latin1(key, buf);
    if (n > 79) return sd_err(SD_EINVAL, "PNG text key '%.20s...': longer than 79 characters", key);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = buf[i];
        if (!((c >= 32 && c <= 126) || c >= 161))
            return sd_err(SD_EINVAL, "PNG text key '%s': character %zu is not printable Latin-1", key, i + 1);
        if (c == ' ' && (i == 0 || i + 1 == n || buf[i + 1] == ' '))
            return sd_err(SD_EINVAL, "PNG text key '%s': leading, trailing or double space", key);
    }
    return SD_OK;
}

/* ---- insertion -------------------------------------------------------------------------------- */

struct find_idat {
    size_t off;
    int found;
};

static int find_idat_fn(void *user, const uint8_t *chunk, uint32_t len, size_t off)
{
    (void)len;
    struct find_idat *f = user;
    if (!memcmp(chunk + 4, "IDAT", 4)) {
        f->off = off;
        f->found = 1;
        return 1;
    }
    return 0;
}

int sd_png_add_text(const uint8_t *png, size_t len, const sd_png_text *t, size_t n, uint8_t **out,
                    size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    struct find_idat f = { 0 };
    int rc = walk(png, len, find_idat_fn, &f);
    if (rc) return rc;
    if (!f.found) return sd_err(SD_EFORMAT, "PNG stream has no IDAT chunk");
    /* sizes */
    size_t extra = 0;
    int *latin = calloc(n ? n : 1, sizeof *latin);
    if (!latin) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        rc = check_key(t[i].key);
        if (rc) goto fail;
        if (!t[i].value || utf8_check(t[i].value, &latin[i])) {
            rc = sd_err(SD_EINVAL, "PNG text '%s': value is not valid UTF-8", t[i].key);
            goto fail;
        }
        size_t kl = strlen(t[i].key), vl = strlen(t[i].value);
        extra += 12 + kl + 1 + vl + (latin[i] ? 0 : 4);
        if (extra > 0x7fffffffu) {
            rc = sd_err(SD_ERANGE, "PNG text '%s': too long", t[i].key);
            goto fail;
        }
    }
    uint8_t *o = malloc(len + extra);
    if (!o) {
        rc = sd_err(SD_ENOMEM, "out of memory");
        goto fail;
    }
    memcpy(o, png, f.off);
    size_t p = f.off;
    for (size_t i = 0; i < n; i++) {
        uint8_t *c = o + p;
        size_t d = 8;
        memcpy(c + 4, latin[i] ? "tEXt" : "iTXt", 4);
        d += to_latin1(t[i].key, c + d);
        c[d++] = 0;
        if (latin[i]) {
            d += to_latin1(t[i].value, c + d);
        } else {
            c[d++] = 0;   /* compression flag */
            c[d++] = 0;   /* compression method */
            c[d++] = 0;   /* language tag "" */
            c[d++] = 0;   /* translated keyword "" */
            size_t vl = strlen(t[i].value);
            memcpy(c + d, t[i].value, vl);
            d += vl;
        }
        wr32(c, (uint32_t)(d - 8));
        wr32(c + d, sd_crc32(0, c + 4, d - 4));
        p += d + 4;
    }
    memcpy(o + p, png + f.off, len - f.off);
    p += len - f.off;
    *out = o;
    *out_len = p;
    rc = SD_OK;
fail:
    free(latin);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------------------- */

struct reader {
    sd_png_text_list *l;
    size_t cap;
};

static int push(struct reader *r, char *k, char *v)
{
    if (!k || !v) {
        free(k);
        free(v);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    if (r->l->n == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 8;
        char **nk = realloc(r->l->keys, nc * sizeof *nk);
        if (nk) r->l->keys = nk;
        char **nv = nk ? realloc(r->l->values, nc * sizeof *nv) : NULL;
        if (nv) r->l->values = nv;
        if (!nk || !nv) {
            free(k);
            free(v);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        r->cap = nc;
    }
    r->l->keys[r->l->n] = k;
    r->l->values[r->l->n] = v;
    r->l->n++;
    return SD_OK;
}

static char *inflate_z(const uint8_t *d, size_t n, size_t *outn)
{
    if (n > 0x7fffffff) return NULL;
    int ol = 0;
    char *o = stbi_zlib_decode_malloc((const char *)d, (int)n, &ol);
    if (!o) return NULL;
    char *r = malloc((size_t)ol + 1);
    if (r) {
        memcpy(r, o, (size_t)ol);
        r[ol] = 0;
        *outn = (size_t)ol;
    }
    free(o);
    return r;
}

static int read_fn(void *user, const uint8_t *chunk, uint32_t len, size_t off)
{
    struct reader *r = user;
    const uint8_t *d = chunk + 8;
    int text = !memcmp(chunk + 4, "tEXt", 4), ztxt = !memcmp(chunk + 4, "zTXt", 4),
        itxt = !memcmp(chunk + 4, "iTXt", 4);
    if (!text && !ztxt && !itxt) return 0;
    const uint8_t *z = memchr(d, 0, len);
    if (!z || z == d || z - d > 79)
        return sd_err(SD_EFORMAT, "PNG chunk '%.4s' at byte %zu: bad keyword", (const char *)chunk + 4, off);
    size_t kl = (size_t)(z - d), rest = len - kl - 1;
    const uint8_t *v = z + 1;
    char *key = from_latin1(d, kl), *val = NULL;
    if (text) {
        val = from_latin1(v, rest);
    } else if (ztxt) {
        if (rest < 1 || v[0] != 0) {
            free(key);
            return sd_err(SD_EFORMAT, "PNG zTXt at byte %zu: unknown compression method", off);
        }
        size_t zl = 0;
        char *raw = inflate_z(v + 1, rest - 1, &zl);
        if (!raw) {
            free(key);
            return sd_err(SD_EFORMAT, "PNG zTXt at byte %zu: corrupt compressed text", off);
        }
        val = from_latin1((const uint8_t *)raw, zl);
        free(raw);
    } else {
        /* flag, method, language\0, translated keyword\0, text */
        if (rest < 2) goto bad_itxt;
        int flag = v[0], method = v[1];
        const uint8_t *q = v + 2, *end = v + rest;
        const uint8_t *z1 = memchr(q, 0, (size_t)(end - q));
        if (!z1) goto bad_itxt;
        const uint8_t *z2 = memchr(z1 + 1, 0, (size_t)(end - z1 - 1));
        if (!z2) goto bad_itxt;
        q = z2 + 1;
        size_t tl = (size_t)(end - q);
        if (flag == 0) {
            val = malloc(tl + 1);
            if (val) {
                memcpy(val, q, tl);
                val[tl] = 0;
            }
        } else if (flag == 1 && method == 0) {
            size_t zl = 0;
            val = inflate_z(q, tl, &zl);
            if (!val) {
                free(key);
                return sd_err(SD_EFORMAT, "PNG iTXt at byte %zu: corrupt compressed text", off);
            }
        } else {
            goto bad_itxt;
        }
    }
    return push(r, key, val);
bad_itxt:
    free(key);
    return sd_err(SD_EFORMAT, "PNG iTXt chunk at byte %zu is malformed", off);
}

int sd_png_read_text(const uint8_t *png, size_t len, sd_png_text_list *out)
{
    memset(out, 0, sizeof *out);
    struct reader r = { out, 0 };
    int rc = walk(png, len, read_fn, &r);
    if (rc) sd_png_text_list_free(out);
    return rc;
}

void sd_png_text_list_free(sd_png_text_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->keys[i]);
        free(l->values[i]);
    }
    free(l->keys);
    free(l->values);
    memset(l, 0, sizeof *l);
}

const char *sd_png_text_get(const sd_png_text_list *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->keys[i], key)) return l->values[i];
    return NULL;
}
