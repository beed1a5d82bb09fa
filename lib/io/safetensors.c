/* safetensors reader (mmap, strict validation) and streaming writer. See safetensors.h. */
#include "io/safetensors.h"

#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"

#include <errno.h>
#include <fcntl.h>
#include <jv.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define MAX_EXACT 9007199254740992.0   /* 2^53: larger integers are not exact in a double */
#define MAX_EXACT_U 9007199254740992ull
#define MAX_JSON_DEPTH 64

/* ---------------------------------------------------------------------------------------------
 * Dtypes */

static const struct {
    const char *name;
    unsigned char size, is_float;
} dt_info[SD_ST_NDTYPES] = {
    [SD_ST_BOOL] = {"BOOL", 1, 0},       [SD_ST_U8] = {"U8", 1, 0},
    [SD_ST_I8] = {"I8", 1, 0},           [SD_ST_F8_E5M2] = {"F8_E5M2", 1, 1},
    [SD_ST_F8_E4M3] = {"F8_E4M3", 1, 1}, [SD_ST_I16] = {"I16", 2, 0},
    [SD_ST_U16] = {"U16", 2, 0},         [SD_ST_F16] = {"F16", 2, 1},
    [SD_ST_BF16] = {"BF16", 2, 1},       [SD_ST_I32] = {"I32", 4, 0},
    [SD_ST_U32] = {"U32", 4, 0},         [SD_ST_F32] = {"F32", 4, 1},
    [SD_ST_F64] = {"F64", 8, 1},         [SD_ST_I64] = {"I64", 8, 0},
    [SD_ST_U64] = {"U64", 8, 0},
};

/* Names newer versions of the reference know and we do not read (sub-byte or complex types). */
static const char *const dt_unsupported[] = {"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "C64", NULL};

size_t sd_st_dtype_size(sd_st_dtype t)
{
    return (unsigned)t < SD_ST_NDTYPES ? dt_info[t].size : 0;
}

const char *sd_st_dtype_name(sd_st_dtype t)
{
    return (unsigned)t < SD_ST_NDTYPES ? dt_info[t].name : NULL;
}

int sd_st_dtype_is_float(sd_st_dtype t)
{
    return (unsigned)t < SD_ST_NDTYPES && dt_info[t].is_float;
}

int sd_st_dtype_parse(const char *s, sd_st_dtype *t)
{
    for (int i = 0; i < SD_ST_NDTYPES; i++)
        if (!strcmp(s, dt_info[i].name)) {
            *t = (sd_st_dtype)i;
            return SD_OK;
        }
    for (int i = 0; dt_unsupported[i]; i++)
        if (!strcmp(s, dt_unsupported[i])) return SD_EUNSUPPORTED;
    return SD_EFORMAT;
}

/* ---------------------------------------------------------------------------------------------
 * Conversions */

static float f8e4m3_to_f32(uint8_t b)
{
    int e = (b >> 3) & 0xf, m = b & 7;
    float v;
    if (e == 15 && m == 7) v = NAN;
    else if (e == 0) v = ldexpf((float)m, -9);
    else v = ldexpf((float)(8 + m), e - 10);   /* (1 + m/8) * 2^(e-7) */
    return (b & 0x80) ? -v : v;
}

/* Round-to-odd conversions to f32: truncate, then set the last mantissa bit if inexact. A value
 * rounded to odd with >= 2 extra bits rounds correctly (once) to a narrower format afterwards. */
static float odd_u64(uint64_t u)
{
    if (u < (1u << 24)) return (float)u;
    int shift = 64 - __builtin_clzll(u) - 24;
    uint64_t m = u >> shift;
    if (u & ((1ull << shift) - 1)) m |= 1;
    return ldexpf((float)m, shift);
}

static float odd_i64(int64_t x)
{
    return x < 0 ? -odd_u64((uint64_t)0 - (uint64_t)x) : odd_u64((uint64_t)x);
}

static float odd_f64(double d)
{
    float f = (float)d;
    if (isnan(d) || isinf(d) || (double)f == d) return f;
    if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
    uint32_t u;
    memcpy(&u, &f, 4);
    u |= 1;
    memcpy(&f, &u, 4);
    return f;
}

#define CHUNK 1024

/* k elements of type t at `src` (aligned scratch) to f32. odd: round to odd (for a later narrowing). */
static void block_to_f32(sd_st_dtype t, const void *src, float *out, size_t k, int odd)
{
    size_t i;
    switch (t) {
    case SD_ST_BOOL: for (i = 0; i < k; i++) out[i] = ((const uint8_t *)src)[i] != 0; break;
    case SD_ST_U8: for (i = 0; i < k; i++) out[i] = ((const uint8_t *)src)[i]; break;
    case SD_ST_I8: for (i = 0; i < k; i++) out[i] = ((const int8_t *)src)[i]; break;
    case SD_ST_F8_E5M2:
        for (i = 0; i < k; i++) out[i] = sd_f16_to_f32((uint16_t)(((const uint8_t *)src)[i] << 8));
        break;
    case SD_ST_F8_E4M3: for (i = 0; i < k; i++) out[i] = f8e4m3_to_f32(((const uint8_t *)src)[i]); break;
    case SD_ST_I16: for (i = 0; i < k; i++) out[i] = ((const int16_t *)src)[i]; break;
    case SD_ST_U16: for (i = 0; i < k; i++) out[i] = ((const uint16_t *)src)[i]; break;
    case SD_ST_F16: sd_f16_to_f32_n(src, out, k); break;
    case SD_ST_BF16: sd_bf16_to_f32_n(src, out, k); break;
    case SD_ST_I32:
        for (i = 0; i < k; i++) {
            int32_t x = ((const int32_t *)src)[i];
            out[i] = odd ? odd_i64(x) : (float)x;
        }
        break;
    case SD_ST_U32:
        for (i = 0; i < k; i++) {
            uint32_t x = ((const uint32_t *)src)[i];
            out[i] = odd ? odd_u64(x) : (float)x;
        }
        break;
    case SD_ST_F32: memcpy(out, src, k * 4); break;
    case SD_ST_F64:
        for (i = 0; i < k; i++) {
            double x = ((const double *)src)[i];
            out[i] = odd ? odd_f64(x) : (float)x;
        }
        break;
    case SD_ST_I64:
        for (i = 0; i < k; i++) {
            int64_t x = ((const int64_t *)src)[i];
            out[i] = odd ? odd_i64(x) : (float)x;
        }
        break;
    case SD_ST_U64:
        for (i = 0; i < k; i++) {
            uint64_t x = ((const uint64_t *)src)[i];
            out[i] = odd ? odd_u64(x) : (float)x;
        }
        break;
    default: break;
    }
}

int sd_st_convert(sd_st_dtype src_t, const void *src, sd_st_dtype dst_t, void *dst, size_t n)
{
    if ((unsigned)src_t >= SD_ST_NDTYPES || (unsigned)dst_t >= SD_ST_NDTYPES)
        return sd_err(SD_EINVAL, "safetensors: invalid dtype %d -> %d", (int)src_t, (int)dst_t);
    size_t ssz = dt_info[src_t].size, dsz = dt_info[dst_t].size;
    if (n && (!src || !dst)) return sd_err(SD_EINVAL, "safetensors: NULL buffer");
    if (src_t == dst_t) {
        if (n) memcpy(dst, src, n * ssz);
        return SD_OK;
    }
    if (dst_t != SD_ST_F32 && dst_t != SD_ST_F16 && dst_t != SD_ST_BF16 && dst_t != SD_ST_F8_E4M3)
        return sd_err(SD_EINVAL, "safetensors: cannot convert %s to %s", dt_info[src_t].name,
                      dt_info[dst_t].name);
    /* Exact in f32: everything except wide integers and F64, which round to odd before a
     * narrowing to F16/BF16/F8_E4M3 (F8_E4M3: PyTorch's rounding, sd_f32_to_f8e4m3). */
    int odd = dst_t != SD_ST_F32;
    uint64_t scratch[CHUNK];
    float f[CHUNK];
    uint16_t h[CHUNK];
    uint8_t q[CHUNK];
    const unsigned char *s = src;
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        memcpy(scratch, s + i * ssz, k * ssz);
        block_to_f32(src_t, scratch, f, k, odd);
        if (dst_t == SD_ST_F32) {
            memcpy(d + i * 4, f, k * 4);
            continue;
        }
        if (dst_t == SD_ST_F8_E4M3) {
            sd_f32_to_f8e4m3_n(f, q, k);
            memcpy(d + i, q, k);
            continue;
        }
        if (dst_t == SD_ST_F16) sd_f32_to_f16_n(f, h, k);
        else sd_f32_to_bf16_n(f, h, k);
        memcpy(d + i * dsz, h, k * 2);
    }
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * UTF-8 */

/* Length of the valid UTF-8 sequence at p (p < end), or 0 if invalid (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if ((size_t)(end - p) < len) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return len;
}

/* Offset of the first invalid byte, or (size_t)-1 if all valid. */
static size_t utf8_check(const unsigned char *p, size_t n)
{
    const unsigned char *s = p, *end = p + n;
    while (s < end) {
        if (*s < 0x80) { s++; continue; }
        size_t l = utf8_seq(s, end);
        if (!l) return (size_t)(s - p);
        s += l;
    }
    return (size_t)-1;
}

/* A name from the file made safe for a one-line message: control characters become '?', long
 * names are cut (at a character boundary) and end in "...". Use as disp(name).s inside the
 * sd_err() call (the temporary lives until the end of that full expression). */
typedef struct {
    char s[132];
} dname;

static dname disp(const char *name)
{
    dname d;
    size_t i = 0, o = 0;
    while (name[i] && o < 120) {
        unsigned char c = (unsigned char)name[i++];
        d.s[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (name[i]) {
        while (o > 0 && ((unsigned char)d.s[o - 1] & 0xc0) == 0x80) o--;   /* continuation bytes */
        if (o > 0 && (unsigned char)d.s[o - 1] >= 0xc0) o--;                  /* the lead byte */
        memcpy(d.s + o, "...", 3);
        o += 3;
    }
    d.s[o] = 0;
    return d;
}

/* ---------------------------------------------------------------------------------------------
 * Strict JSON scan of the header: RFC 8259 syntax, no duplicate keys in any object, no \u0000,
 * lone surrogates rejected, and the integers of shape/data_offsets written as plain integers
 * <= 2^53. Keys are decoded into an arena; the top-level keys stay there in file order (they
 * become the tensor names). Values are then taken from libjq's parse of the same bytes. */

typedef struct {
    size_t off, len;   /* decoded key in the arena (NUL-terminated) */
} keyref;

typedef struct {
    const unsigned char *base, *p, *end;
    const char *path;
    char *arena;
    size_t alen, acap;
    keyref *keys;
    size_t nkeys, kcap;
    size_t curkey[MAX_JSON_DEPTH + 2];   /* key index being parsed at each object depth */
    char is_obj[MAX_JSON_DEPTH + 2];     /* container at each depth is an object (else array) */
    int depth;
} jscan;

static const char *scan_key(const jscan *s, int depth)
{
    return s->arena + s->keys[s->curkey[depth]].off;
}

static int scan_err(const jscan *s, const char *what)
{
    return sd_err(SD_EFORMAT, "%s: invalid JSON in header at byte %zu: %s", s->path,
                  (size_t)(s->p - s->base), what);
}

static void skip_ws(jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static int arena_put(jscan *s, const void *b, size_t n)
{
    if (s->alen + n + 1 > s->acap) {
        size_t cap = s->acap ? s->acap : 256;
        while (cap < s->alen + n + 1) cap *= 2;
        char *a = realloc(s->arena, cap);
        if (!a) return sd_err(SD_ENOMEM, "%s: out of memory", s->path);
        s->arena = a;
        s->acap = cap;
    }
    memcpy(s->arena + s->alen, b, n);
    s->alen += n;
    return SD_OK;
}

static int hex4(const unsigned char *p, unsigned *v)
{
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        x = x << 4 | d;
    }
    *v = x;
    return 0;
}

/* String at s->p (the opening quote). decode: append decoded bytes + NUL to the arena. */
static int scan_string(jscan *s, int decode)
{
    s->p++;
    for (;;) {
        const unsigned char *run = s->p;
        while (s->p < s->end && *s->p != '"' && *s->p != '\\' && *s->p >= 0x20) s->p++;
        if (decode && s->p > run && arena_put(s, run, (size_t)(s->p - run))) return SD_ENOMEM;
        if (s->p >= s->end) return scan_err(s, "unterminated string");
        unsigned c = *s->p;
        if (c == '"') {
            s->p++;
            if (decode) {
                if (arena_put(s, "", 0)) return SD_ENOMEM;
                s->arena[s->alen++] = 0;
            }
            return SD_OK;
        }
        if (c < 0x20) return scan_err(s, "control character in string");
        /* escape */
        if (s->end - s->p < 2) return scan_err(s, "unterminated string");
        unsigned char e = s->p[1], out[4];
        size_t nout = 1;
        switch (e) {
        case '"': out[0] = '"'; break;
        case '\\': out[0] = '\\'; break;
        case '/': out[0] = '/'; break;
        case 'b': out[0] = '\b'; break;
        case 'f': out[0] = '\f'; break;
        case 'n': out[0] = '\n'; break;
        case 'r': out[0] = '\r'; break;
        case 't': out[0] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (s->end - s->p < 6 || hex4(s->p + 2, &cp)) return scan_err(s, "bad \\u escape");
            if (cp == 0) return scan_err(s, "\\u0000 (NUL) in a string is not supported");
            if (cp >= 0xdc00 && cp <= 0xdfff) return scan_err(s, "lone low surrogate in \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (s->end - s->p < 12 || s->p[6] != '\\' || s->p[7] != 'u' || hex4(s->p + 8, &lo) ||
                    lo < 0xdc00 || lo > 0xdfff)
                    return scan_err(s, "lone high surrogate in \\u escape");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                s->p += 6;
            }
            if (cp < 0x80) out[0] = (unsigned char)cp;
            else if (cp < 0x800) {
                out[0] = (unsigned char)(0xc0 | cp >> 6);
                out[1] = (unsigned char)(0x80 | (cp & 0x3f));
                nout = 2;
            } else if (cp < 0x10000) {
                out[0] = (unsigned char)(0xe0 | cp >> 12);
                out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                out[2] = (unsigned char)(0x80 | (cp & 0x3f));
                nout = 3;
            } else {
                out[0] = (unsigned char)(0xf0 | cp >> 18);
                out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
                out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                out[3] = (unsigned char)(0x80 | (cp & 0x3f));
                nout = 4;
            }
            s->p += 4;
            break;
        }
        default: return scan_err(s, "bad escape in string");
        }
        s->p += 2;
        if (decode && arena_put(s, out, nout)) return SD_ENOMEM;
    }
}

/* Inside a tensor's shape or data_offsets array? Returns the field name, or NULL. */
static const char *int_field(const jscan *s)
{
    if (s->depth != 3 || !s->is_obj[1] || !s->is_obj[2] || s->is_obj[3]) return NULL;
    if (!strcmp(scan_key(s, 1), "__metadata__")) return NULL;
    const char *f = scan_key(s, 2);
    return !strcmp(f, "shape") || !strcmp(f, "data_offsets") ? f : NULL;
}

static int scan_number(jscan *s)
{
    const unsigned char *start = s->p;
    int neg = 0, frac = 0;
    if (*s->p == '-') { neg = 1; s->p++; }
    if (s->p >= s->end || *s->p < '0' || *s->p > '9') return scan_err(s, "bad number");
    if (*s->p == '0') s->p++;
    else while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    if (s->p < s->end && *s->p == '.') {
        frac = 1;
        s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9') return scan_err(s, "bad number");
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        frac = 1;
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9') return scan_err(s, "bad number");
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    }
    const char *field = int_field(s);
    if (!field) return SD_OK;
    int len = (int)(s->p - start > 40 ? 40 : s->p - start);
    if (neg)
        return sd_err(SD_EFORMAT, "%s: tensor '%s': %s has a negative value %.*s", s->path,
                      disp(scan_key(s, 1)).s, field, len, (const char *)start);
    if (frac)
        return sd_err(SD_EFORMAT, "%s: tensor '%s': %s has a non-integer value %.*s", s->path,
                      disp(scan_key(s, 1)).s, field, len, (const char *)start);
    uint64_t v = 0;
    for (const unsigned char *q = start; q < s->p; q++) {
        v = v * 10 + (uint64_t)(*q - '0');
        if (v > MAX_EXACT_U)
            return sd_err(SD_EFORMAT, "%s: tensor '%s': %s value %.*s is larger than 2^53", s->path,
                          disp(scan_key(s, 1)).s, field, len, (const char *)start);
    }
    return SD_OK;
}

static int keycmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Duplicate check of the keys [first, s->nkeys) of the object just closed at depth d. */
static int check_dups(jscan *s, size_t first, int d)
{
    size_t n = s->nkeys - first;
    if (n < 2) return SD_OK;
    const char **v = malloc(n * sizeof *v);
    if (!v) return sd_err(SD_ENOMEM, "%s: out of memory", s->path);
    for (size_t i = 0; i < n; i++) v[i] = s->arena + s->keys[first + i].off;
    qsort(v, n, sizeof *v, keycmp);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (!strcmp(v[i - 1], v[i])) dup = v[i];
    int rc = SD_OK;
    if (dup) {
        if (d == 1 && !strcmp(dup, "__metadata__"))
            rc = sd_err(SD_EFORMAT, "%s: duplicate key '__metadata__' in header", s->path);
        else if (d == 1)
            rc = sd_err(SD_EFORMAT, "%s: duplicate tensor name '%s' in header", s->path, disp(dup).s);
        else if (d == 2 && !strcmp(scan_key(s, 1), "__metadata__"))
            rc = sd_err(SD_EFORMAT, "%s: __metadata__: duplicate key '%s'", s->path, disp(dup).s);
        else if (d == 2)
            rc = sd_err(SD_EFORMAT, "%s: tensor '%s': duplicate field '%s'", s->path, disp(scan_key(s, 1)).s,
                        disp(dup).s);
        else
            rc = sd_err(SD_EFORMAT, "%s: duplicate key '%s' in header", s->path, disp(dup).s);
    }
    free(v);
    return rc;
}

static int scan_value(jscan *s);

static int scan_object(jscan *s)
{
    if (s->depth >= MAX_JSON_DEPTH) return scan_err(s, "nested too deeply");
    s->depth++;
    s->is_obj[s->depth] = 1;
    int d = s->depth;
    size_t first = s->nkeys, amark = s->alen;
    int rc;
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return SD_OK;
    }
    for (;;) {
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"') return scan_err(s, "expected a string key");
        if (s->nkeys == s->kcap) {
            size_t cap = s->kcap ? s->kcap * 2 : 64;
            keyref *k = realloc(s->keys, cap * sizeof *k);
            if (!k) return sd_err(SD_ENOMEM, "%s: out of memory", s->path);
            s->keys = k;
            s->kcap = cap;
        }
        size_t off = s->alen;
        if ((rc = scan_string(s, 1))) return rc;
        s->keys[s->nkeys] = (keyref){off, s->alen - off - 1};
        s->curkey[d] = s->nkeys++;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':') return scan_err(s, "expected ':'");
        s->p++;
        if ((rc = scan_value(s))) return rc;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') { s->p++; continue; }
        if (s->p < s->end && *s->p == '}') { s->p++; break; }
        return scan_err(s, "expected ',' or '}'");
    }
    if ((rc = check_dups(s, first, d))) return rc;
    if (d > 1) {   /* keep only the top-level keys */
        s->nkeys = first;
        s->alen = amark;
    }
    s->depth--;
    return SD_OK;
}

static int scan_array(jscan *s)
{
    if (s->depth >= MAX_JSON_DEPTH) return scan_err(s, "nested too deeply");
    s->depth++;
    s->is_obj[s->depth] = 0;
    int rc;
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        s->depth--;
        return SD_OK;
    }
    for (;;) {
        if ((rc = scan_value(s))) return rc;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') { s->p++; continue; }
        if (s->p < s->end && *s->p == ']') { s->p++; break; }
        return scan_err(s, "expected ',' or ']'");
    }
    s->depth--;
    return SD_OK;
}

static int scan_lit(jscan *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n)) return scan_err(s, "unexpected character");
    s->p += n;
    return SD_OK;
}

static int scan_value(jscan *s)
{
    skip_ws(s);
    if (s->p >= s->end) return scan_err(s, "unexpected end of header");
    switch (*s->p) {
    case '{': return scan_object(s);
    case '[': return scan_array(s);
    case '"': return scan_string(s, 0);
    case 't': return scan_lit(s, "true");
    case 'f': return scan_lit(s, "false");
    case 'n': return scan_lit(s, "null");
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) return scan_number(s);
        return scan_err(s, "unexpected character");
    }
}

/* ---------------------------------------------------------------------------------------------
 * Reader */

typedef struct {
    char *key, *value;
} meta_kv;

struct sd_safetensors {
    char *path;
    const unsigned char *base;
    size_t size;
    int mapped;
    size_t hlen;
    sd_st_tensor *t;          /* file order */
    size_t n;
    const sd_st_tensor **by_name;
    char *names;              /* arena holding the tensor names */
    meta_kv *meta;            /* sorted by key */
    size_t nmeta;
};

static int tensor_offset_cmp(const void *a, const void *b)
{
    const sd_st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int tensor_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const sd_st_tensor *const *)a)->name, (*(const sd_st_tensor *const *)b)->name);
}

static int meta_cmp(const void *a, const void *b)
{
    return strcmp(((const meta_kv *)a)->key, ((const meta_kv *)b)->key);
}

void sd_st_shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t o = 0;
    if (!size) return;
    buf[0] = 0;
    o += (size_t)snprintf(buf + o, size - o, "[");
    for (int i = 0; i < ndim && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < size) snprintf(buf + o, size - o, "]");
}

/* Non-negative integer (<= 2^53) from a jv number (already checked by the scan). */
static int jv_uint(jv v, uint64_t *out)
{
    if (jv_get_kind(v) != JV_KIND_NUMBER) return -1;
    double d = jv_number_value(v);
    if (!(d >= 0) || d > MAX_EXACT || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(sd_safetensors *st, const char *name, jv e, sd_st_tensor *t, uint64_t dsize)
{
    const char *path = st->path;
    dname dn = disp(name);
    jv_kind k = jv_get_kind(e);
    if (k != JV_KIND_OBJECT)
        return sd_err(SD_EFORMAT, "%s: tensor '%s': entry must be an object, not %s", path, dn.s,
                      jv_kind_name(k));
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    int it = jv_object_iter(e);
    while (jv_object_iter_valid(e, it)) {
        jv key = jv_object_iter_key(e, it);
        const char *ks = jv_string_value(key);
        int known = !strcmp(ks, fields[0]) || !strcmp(ks, fields[1]) || !strcmp(ks, fields[2]);
        if (!known) {
            int rc = sd_err(SD_EFORMAT, "%s: tensor '%s': unknown field '%s'", path, dn.s, disp(ks).s);
            jv_free(key);
            return rc;
        }
        jv_free(key);
        it = jv_object_iter_next(e, it);
    }
    for (int i = 0; i < 3; i++)
        if (!jv_object_has(jv_copy(e), jv_string(fields[i])))
            return sd_err(SD_EFORMAT, "%s: tensor '%s': missing field '%s'", path, dn.s, fields[i]);

    int rc = SD_OK;
    jv dt = jv_object_get(jv_copy(e), jv_string("dtype"));
    jv sh = jv_object_get(jv_copy(e), jv_string("shape"));
    jv of = jv_object_get(jv_copy(e), jv_string("data_offsets"));
    t->name = name;
    if (jv_get_kind(dt) != JV_KIND_STRING) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': dtype must be a string, not %s", path, dn.s,
                    jv_kind_name(jv_get_kind(dt)));
        goto out;
    }
    rc = sd_st_dtype_parse(jv_string_value(dt), &t->dtype);
    if (rc == SD_EUNSUPPORTED) {
        rc = sd_err(rc, "%s: tensor '%s': dtype '%s' is not supported", path, dn.s, jv_string_value(dt));
        goto out;
    }
    if (rc) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': unknown dtype '%.40s'", path, dn.s, jv_string_value(dt));
        goto out;
    }
    if (jv_get_kind(sh) != JV_KIND_ARRAY) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': shape must be an array, not %s", path, dn.s,
                    jv_kind_name(jv_get_kind(sh)));
        goto out;
    }
    int nd = jv_array_length(jv_copy(sh));
    if (nd > SD_ST_MAX_DIMS) {
        rc = sd_err(SD_EUNSUPPORTED, "%s: tensor '%s': %d dimensions (at most %d are supported)", path,
                    dn.s, nd, SD_ST_MAX_DIMS);
        goto out;
    }
    t->ndim = nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        jv x = jv_array_get(jv_copy(sh), i);
        int bad = jv_uint(x, &v);
        jv_free(x);
        if (bad) {
            rc = sd_err(SD_EFORMAT, "%s: tensor '%s': shape must hold non-negative integers", path, dn.s);
            goto out;
        }
        t->shape[i] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel)) overflow = 1;
    }
    char shs[200];
    sd_st_shape_str(t->ndim, t->shape, shs, sizeof shs);
    if (jv_get_kind(of) != JV_KIND_ARRAY || jv_array_length(jv_copy(of)) != 2) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': data_offsets must be an array of two integers", path, dn.s);
        goto out;
    }
    uint64_t b = 0, en = 0;
    {
        jv x0 = jv_array_get(jv_copy(of), 0), x1 = jv_array_get(jv_copy(of), 1);
        int bad = jv_uint(x0, &b) | jv_uint(x1, &en);
        jv_free(x0);
        jv_free(x1);
        if (bad) {
            rc = sd_err(SD_EFORMAT, "%s: tensor '%s': data_offsets must be an array of two integers",
                        path, dn.s);
            goto out;
        }
    }
    if (b > en) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] begin after they end", path,
                    dn.s, (unsigned long long)b, (unsigned long long)en);
        goto out;
    }
    if (en > dsize) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] extend beyond the %llu-byte "
                    "data buffer", path, dn.s, (unsigned long long)b, (unsigned long long)en,
                    (unsigned long long)dsize);
        goto out;
    }
    uint64_t nbytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)dt_info[t->dtype].size, &nbytes)) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': shape %s is too large (size overflows)", path, dn.s, shs);
        goto out;
    }
    if (nbytes != en - b) {
        rc = sd_err(SD_EFORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] hold %llu bytes but shape %s "
                    "of %s needs %llu", path, dn.s, (unsigned long long)b, (unsigned long long)en,
                    (unsigned long long)(en - b), shs, dt_info[t->dtype].name, (unsigned long long)nbytes);
        goto out;
    }
    t->numel = (int64_t)numel;
    t->offset = 8 + st->hlen + b;
    t->nbytes = nbytes;
    t->data = st->base + t->offset;
out:
    jv_free(dt);
    jv_free(sh);
    jv_free(of);
    return rc;
}

static int parse_meta(sd_safetensors *st, jv m)
{
    jv_kind k = jv_get_kind(m);
    if (k != JV_KIND_OBJECT)
        return sd_err(SD_EFORMAT, "%s: __metadata__ must be an object, not %s", st->path, jv_kind_name(k));
    int n = jv_object_length(jv_copy(m));
    if (!n) return SD_OK;
    st->meta = calloc((size_t)n, sizeof *st->meta);
    if (!st->meta) return sd_err(SD_ENOMEM, "%s: out of memory", st->path);
    int it = jv_object_iter(m), rc = SD_OK;
    while (jv_object_iter_valid(m, it) && !rc) {
        jv key = jv_object_iter_key(m, it), val = jv_object_iter_value(m, it);
        if (jv_get_kind(val) != JV_KIND_STRING)
            rc = sd_err(SD_EFORMAT, "%s: __metadata__ key '%s': value must be a string, not %s",
                        st->path, disp(jv_string_value(key)).s, jv_kind_name(jv_get_kind(val)));
        else if (st->nmeta < (size_t)n) {
            meta_kv *kv = &st->meta[st->nmeta++];
            kv->key = strdup(jv_string_value(key));
            kv->value = strdup(jv_string_value(val));
            if (!kv->key || !kv->value) rc = sd_err(SD_ENOMEM, "%s: out of memory", st->path);
        }
        jv_free(key);
        jv_free(val);
        it = jv_object_iter_next(m, it);
    }
    if (!rc) qsort(st->meta, st->nmeta, sizeof *st->meta, meta_cmp);
    return rc;
}

static int validate(sd_safetensors *st)
{
    const char *path = st->path;
    if (st->size < 8)
        return sd_err(SD_EFORMAT, "%s: file too short for a safetensors header (%zu bytes)", path, st->size);
    uint64_t hl;
    memcpy(&hl, st->base, 8);
    if (hl > SD_ST_MAX_HEADER)
        return sd_err(SD_EFORMAT, "%s: header length %llu exceeds the limit of %u bytes (not a "
                      "safetensors file?)", path, (unsigned long long)hl, SD_ST_MAX_HEADER);
    if (hl > st->size - 8)
        return sd_err(SD_EFORMAT, "%s: header length %llu exceeds the file (%zu bytes; truncated?)",
                      path, (unsigned long long)hl, st->size);
    st->hlen = (size_t)hl;
    const unsigned char *h = st->base + 8;
    if (hl < 2 || h[0] != '{')
        return sd_err(SD_EFORMAT, "%s: header does not start with '{' (not a safetensors file?)", path);
    size_t bad = utf8_check(h, st->hlen);
    if (bad != (size_t)-1)
        return sd_err(SD_EFORMAT, "%s: header is not valid UTF-8 (byte 0x%02x at offset %zu)", path,
                      h[bad], bad);

    jscan s = {.base = h, .p = h, .end = h + st->hlen, .path = path};
    int rc = scan_value(&s);
    if (!rc) {
        skip_ws(&s);
        if (s.p != s.end) rc = scan_err(&s, "trailing characters after the header object");
    }
    if (rc) {
        free(s.arena);
        free(s.keys);
        return rc;
    }
    st->names = s.arena;   /* top-level keys, NUL-separated, in file order */
    size_t ntop = s.nkeys;
    keyref *keys = s.keys;

    jv root = jv_parse_sized((const char *)h, (int)st->hlen);
    if (jv_get_kind(root) != JV_KIND_OBJECT) {
        if (jv_get_kind(root) == JV_KIND_INVALID && jv_invalid_has_msg(jv_copy(root))) {
            jv msg = jv_invalid_get_msg(root);
            rc = sd_err(SD_EFORMAT, "%s: invalid JSON in header: %s", path, jv_string_value(msg));
            jv_free(msg);
        } else {
            rc = sd_err(SD_EFORMAT, "%s: header is not a JSON object", path);
            jv_free(root);
        }
        free(keys);
        return rc;
    }
    if ((size_t)jv_object_length(jv_copy(root)) != ntop) {   /* cannot happen after the scan */
        jv_free(root);
        free(keys);
        return sd_err(SD_EFORMAT, "%s: header keys are inconsistent", path);
    }
    st->t = calloc(ntop ? ntop : 1, sizeof *st->t);
    if (!st->t) rc = sd_err(SD_ENOMEM, "%s: out of memory", path);
    uint64_t dsize = st->size - 8 - st->hlen;
    for (size_t i = 0; i < ntop && !rc; i++) {
        const char *name = st->names + keys[i].off;
        jv v = jv_object_get(jv_copy(root), jv_string_sized(name, (int)keys[i].len));
        if (!strcmp(name, "__metadata__")) rc = parse_meta(st, v);
        else rc = parse_entry(st, name, v, &st->t[st->n++], dsize);
        jv_free(v);
    }
    jv_free(root);
    free(keys);
    if (rc) return rc;

    /* Tensors sorted by offset must tile the data buffer exactly (as the reference requires). */
    qsort(st->t, st->n, sizeof *st->t, tensor_offset_cmp);
    uint64_t end = 8 + st->hlen;
    const sd_st_tensor *prev = NULL;
    for (size_t i = 0; i < st->n; i++) {
        const sd_st_tensor *t = &st->t[i];
        uint64_t b = t->offset - 8 - st->hlen, e = b + t->nbytes;
        if (t->offset < end)
            return sd_err(SD_EFORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] overlap tensor '%s'", path,
                          disp(t->name).s, (unsigned long long)b, (unsigned long long)e,
                          disp(prev->name).s);
        if (t->offset > end)
            return sd_err(SD_EFORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] leave a gap of %llu bytes "
                          "before them", path, disp(t->name).s, (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)(t->offset - end));
        if (t->nbytes) {
            end += t->nbytes;
            prev = t;
        }
    }
    if (end != st->size)
        return sd_err(SD_EFORMAT, "%s: %llu bytes after the last tensor's data (the data buffer has %llu "
                      "bytes, tensors cover %llu)", path, (unsigned long long)(st->size - end),
                      (unsigned long long)dsize, (unsigned long long)(end - 8 - st->hlen));

    st->by_name = malloc((st->n ? st->n : 1) * sizeof *st->by_name);
    if (!st->by_name) return sd_err(SD_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < st->n; i++) st->by_name[i] = &st->t[i];
    qsort(st->by_name, st->n, sizeof *st->by_name, tensor_name_cmp);
    return SD_OK;
}

static int open_common(sd_safetensors *st, sd_safetensors **out)
{
    int rc = validate(st);
    if (rc) {
        sd_safetensors_close(st);
        return rc;
    }
    *out = st;
    return SD_OK;
}

int sd_safetensors_open_mem(const void *buf, size_t n, const char *name, sd_safetensors **out)
{
    *out = NULL;
    if (!buf && n) return sd_err(SD_EINVAL, "safetensors: NULL buffer");
    sd_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(name ? name : "<memory>"))) {
        free(st);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    st->base = buf;
    st->size = n;
    return open_common(st, out);
}

int sd_safetensors_open(const char *path, sd_safetensors **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return sd_err(SD_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sd_err(SD_EIO, "%s: not a regular file", path);
    }
    sd_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        close(fd);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    st->size = (size_t)sb.st_size;
    if (st->size >= 8) {
        void *m = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            sd_safetensors_close(st);
            return sd_err(e == ENOMEM ? SD_ENOMEM : SD_EIO, "%s: mmap: %s", path, strerror(e));
        }
        st->base = m;
        st->mapped = 1;
    } else st->base = (const unsigned char *)"";
    close(fd);
    return open_common(st, out);
}

void sd_safetensors_close(sd_safetensors *st)
{
    if (!st) return;
    if (st->mapped) munmap((void *)st->base, st->size);
    for (size_t i = 0; i < st->nmeta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->meta);
    free(st->t);
    free(st->by_name);
    free(st->names);
    free(st->path);
    free(st);
}

const char *sd_safetensors_path(const sd_safetensors *st) { return st->path; }
size_t sd_safetensors_header_len(const sd_safetensors *st) { return st->hlen; }
uint64_t sd_safetensors_file_size(const sd_safetensors *st) { return st->size; }
size_t sd_safetensors_count(const sd_safetensors *st) { return st->n; }

const sd_st_tensor *sd_safetensors_at(const sd_safetensors *st, size_t i)
{
    return i < st->n ? &st->t[i] : NULL;
}

const sd_st_tensor *sd_safetensors_find(const sd_safetensors *st, const char *name)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->by_name[mid]->name);
        if (!c) return st->by_name[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

static int rename_cmp(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    int c = strcmp(x[0], y[0]);
    return c ? c : strcmp(x[1], y[1]);
}

int sd_safetensors_rename(sd_safetensors *st, const char *const *names)
{
    size_t total = 1;
    for (size_t i = 0; i < st->n; i++) total += strlen(names[i] ? names[i] : st->t[i].name) + 1;
    char *arena = malloc(total);
    const char **pairs = malloc((st->n ? st->n : 1) * 2 * sizeof *pairs);   /* {new, old} */
    if (!arena || !pairs) {
        free(arena);
        free(pairs);
        return sd_err(SD_ENOMEM, "%s: out of memory", st->path);
    }
    size_t o = 0;
    for (size_t i = 0; i < st->n; i++) {
        const char *nm = names[i] ? names[i] : st->t[i].name;
        size_t l = strlen(nm) + 1;
        memcpy(arena + o, nm, l);
        pairs[2 * i] = arena + o;
        pairs[2 * i + 1] = st->t[i].name;
        o += l;
    }
    qsort(pairs, st->n, 2 * sizeof *pairs, rename_cmp);
    for (size_t i = 1; i < st->n; i++) {
        if (!strcmp(pairs[2 * i], pairs[2 * i - 2])) {
            int rc = sd_err(SD_EFORMAT, "%s: tensors '%s' and '%s' both stand for '%s'", st->path,
                            disp(pairs[2 * i - 1]).s, disp(pairs[2 * i + 1]).s, disp(pairs[2 * i]).s);
            free(arena);
            free(pairs);
            return rc;
        }
    }
    free(pairs);
    o = 0;
    for (size_t i = 0; i < st->n; i++) {
        st->t[i].name = arena + o;
        o += strlen(arena + o) + 1;
    }
    free(st->names);
    st->names = arena;
    qsort(st->by_name, st->n, sizeof *st->by_name, tensor_name_cmp);
    return SD_OK;
}

int sd_safetensors_get(const sd_safetensors *st, const char *name, const sd_st_tensor **t)
{
    *t = sd_safetensors_find(st, name);
    return *t ? SD_OK : sd_err(SD_ENOTFOUND, "%s: no tensor '%s'", st->path, disp(name).s);
}

size_t sd_safetensors_meta_count(const sd_safetensors *st) { return st->nmeta; }

void sd_safetensors_meta_at(const sd_safetensors *st, size_t i, const char **key, const char **value)
{
    *key = i < st->nmeta ? st->meta[i].key : NULL;
    *value = i < st->nmeta ? st->meta[i].value : NULL;
}

const char *sd_safetensors_meta_get(const sd_safetensors *st, const char *key)
{
    size_t lo = 0, hi = st->nmeta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta[mid].key);
        if (!c) return st->meta[mid].value;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

int sd_safetensors_read(const sd_safetensors *st, const sd_st_tensor *t, sd_st_dtype dst_t, void *dst,
                        size_t n)
{
    if (n != (uint64_t)t->numel)
        return sd_err(SD_EINVAL, "%s: tensor '%s' has %lld elements, buffer holds %zu", st->path, disp(t->name).s,
                      (long long)t->numel, n);
    int rc = sd_st_convert(t->dtype, t->data, dst_t, dst, n);
    return rc ? sd_err_prefix(rc, "%s: tensor '%s'", st->path, disp(t->name).s) : SD_OK;
}

static int read_named(const sd_safetensors *st, const char *name, sd_st_dtype dt, void *dst, size_t n)
{
    const sd_st_tensor *t;
    int rc = sd_safetensors_get(st, name, &t);
    return rc ? rc : sd_safetensors_read(st, t, dt, dst, n);
}

int sd_safetensors_read_f32(const sd_safetensors *st, const char *name, float *dst, size_t n)
{
    return read_named(st, name, SD_ST_F32, dst, n);
}

int sd_safetensors_read_f16(const sd_safetensors *st, const char *name, uint16_t *dst, size_t n)
{
    return read_named(st, name, SD_ST_F16, dst, n);
}

int sd_safetensors_read_bf16(const sd_safetensors *st, const char *name, uint16_t *dst, size_t n)
{
    return read_named(st, name, SD_ST_BF16, dst, n);
}

int sd_safetensors_check_shape(const sd_safetensors *st, const char *name, int ndim, const int64_t *shape)
{
    const sd_st_tensor *t;
    int rc = sd_safetensors_get(st, name, &t);
    if (rc) return rc;
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (same) return SD_OK;
    char want[200], got[200];
    sd_st_shape_str(ndim, shape, want, sizeof want);
    sd_st_shape_str(t->ndim, t->shape, got, sizeof got);
    return sd_err(SD_EFORMAT, "%s: tensor '%s': expected shape %s, got %s", st->path, disp(name).s, want, got);
}

int sd_safetensors_get_dims(const sd_safetensors *st, const char *name, int ndim, const char *what,
                            const sd_st_tensor **t)
{
    const sd_st_tensor *x = sd_safetensors_find(st, name);
    if (!x)
        return sd_err(SD_EFORMAT, "%s: no tensor '%s'%s%s%s", st->path, disp(name).s, what ? " (not a " : "",
                      what ? what : "", what ? ")" : "");
    if (x->ndim != ndim) {
        char b[200];
        sd_st_shape_str(x->ndim, x->shape, b, sizeof b);
        return sd_err(SD_EFORMAT, "%s: tensor '%s' has shape %s, expected %d dimensions", st->path, disp(name).s, b,
                      ndim);
    }
    for (int i = 0; i < ndim; i++)
        if (x->shape[i] < 1 || x->shape[i] > (1 << 24))
            return sd_err(SD_EFORMAT, "%s: tensor '%s': dimension %d is out of range", st->path, disp(name).s, i);
    *t = x;
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Writer */

typedef struct {
    char *name;
    sd_st_dtype dtype;
    int ndim;
    int64_t shape[SD_ST_MAX_DIMS];
    uint64_t nbytes;
    const void *data;
    const float *f32;
    sd_st_write_fn fn;
    void *ctx;
} wtensor;

struct sd_safetensors_writer {
    wtensor *t;
    size_t n, cap;
    meta_kv *meta;            /* insertion order */
    size_t nmeta, mcap;
};

struct sd_st_sink {
    FILE *fp;
    const char *path, *tensor;
    uint64_t left;
};

int sd_safetensors_writer_new(sd_safetensors_writer **w)
{
    *w = calloc(1, sizeof **w);
    return *w ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
}

void sd_safetensors_writer_free(sd_safetensors_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->meta);
    free(w);
}

static int add_common(sd_safetensors_writer *w, const char *name, sd_st_dtype dtype, int ndim,
                      const int64_t *shape, wtensor **out)
{
    if (!name) return sd_err(SD_EINVAL, "safetensors writer: NULL tensor name");
    if (utf8_check((const unsigned char *)name, strlen(name)) != (size_t)-1)
        return sd_err(SD_EINVAL, "safetensors writer: tensor name is not valid UTF-8");
    if (!strcmp(name, "__metadata__"))
        return sd_err(SD_EINVAL, "safetensors writer: '__metadata__' cannot be a tensor name");
    if ((unsigned)dtype >= SD_ST_NDTYPES)
        return sd_err(SD_EINVAL, "safetensors writer: tensor '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > SD_ST_MAX_DIMS || (ndim && !shape))
        return sd_err(SD_EINVAL, "safetensors writer: tensor '%s': bad number of dimensions %d", name, ndim);
    uint64_t numel = 1, nbytes;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > MAX_EXACT_U ||
            __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
            return sd_err(SD_EINVAL, "safetensors writer: tensor '%s': bad shape", name);
    }
    if (__builtin_mul_overflow(numel, (uint64_t)dt_info[dtype].size, &nbytes) || nbytes > MAX_EXACT_U)
        return sd_err(SD_EINVAL, "safetensors writer: tensor '%s': too large", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) return sd_err(SD_ENOMEM, "out of memory");
        w->t = t;
        w->cap = cap;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return sd_err(SD_ENOMEM, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    w->n++;
    *out = t;
    return SD_OK;
}

int sd_safetensors_writer_add(sd_safetensors_writer *w, const char *name, sd_st_dtype dtype, int ndim,
                              const int64_t *shape, const void *data)
{
    wtensor *t = NULL;
    int rc = add_common(w, name, dtype, ndim, shape, &t);
    if (rc) return rc;
    if (!data && t->nbytes) {
        free(t->name);
        w->n--;
        return sd_err(SD_EINVAL, "safetensors writer: tensor '%s': NULL data", name);
    }
    t->data = data;
    return SD_OK;
}

int sd_safetensors_writer_add_fn(sd_safetensors_writer *w, const char *name, sd_st_dtype dtype, int ndim,
                                 const int64_t *shape, sd_st_write_fn fn, void *ctx)
{
    if (!fn) return sd_err(SD_EINVAL, "safetensors writer: NULL callback");
    wtensor *t = NULL;
    int rc = add_common(w, name, dtype, ndim, shape, &t);
    if (rc) return rc;
    t->fn = fn;
    t->ctx = ctx;
    return SD_OK;
}

int sd_safetensors_writer_add_f32(sd_safetensors_writer *w, const char *name, sd_st_dtype dtype, int ndim,
                                  const int64_t *shape, const float *data)
{
    if (dtype != SD_ST_F32 && dtype != SD_ST_F16 && dtype != SD_ST_BF16)
        return sd_err(SD_EINVAL, "safetensors writer: f32 data can be stored as F32, F16 or BF16 only");
    wtensor *t = NULL;
    int rc = add_common(w, name, dtype, ndim, shape, &t);
    if (rc) return rc;
    if (!data && t->nbytes) {
        free(t->name);
        w->n--;
        return sd_err(SD_EINVAL, "safetensors writer: tensor '%s': NULL data", name);
    }
    t->f32 = data;
    return SD_OK;
}

int sd_safetensors_writer_set_meta(sd_safetensors_writer *w, const char *key, const char *value)
{
    if (!key || !value) return sd_err(SD_EINVAL, "safetensors writer: NULL metadata key or value");
    if (utf8_check((const unsigned char *)key, strlen(key)) != (size_t)-1 ||
        utf8_check((const unsigned char *)value, strlen(value)) != (size_t)-1)
        return sd_err(SD_EINVAL, "safetensors writer: metadata '%.60s' is not valid UTF-8", key);
    char *v = strdup(value);
    if (!v) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < w->nmeta; i++)
        if (!strcmp(w->meta[i].key, key)) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return SD_OK;
        }
    if (w->nmeta == w->mcap) {
        size_t cap = w->mcap ? w->mcap * 2 : 16;
        meta_kv *m = realloc(w->meta, cap * sizeof *m);
        if (!m) {
            free(v);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        w->meta = m;
        w->mcap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    w->meta[w->nmeta++] = (meta_kv){k, v};
    return SD_OK;
}

/* Growable byte buffer for the header. */
typedef struct {
    char *b;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *s, const void *p, size_t n)
{
    if (s->oom) return;
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->n + n) cap *= 2;
        char *b = realloc(s->b, cap);
        if (!b) {
            s->oom = 1;
            return;
        }
        s->b = b;
        s->cap = cap;
    }
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void sb_str(sbuf *s, const char *str) { sb_put(s, str, strlen(str)); }

static void sb_u64(sbuf *s, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(s, tmp, (size_t)n);
}

/* A JSON string as serde_json writes it: escapes ", \, and control characters only. */
static void sb_jstr(sbuf *s, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    sb_put(s, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        const unsigned char *run = p;
        while (*p && *p >= 0x20 && *p != '"' && *p != '\\') p++;
        if (p > run) sb_put(s, run, (size_t)(p - run));
        if (!*p) break;
        char e[6] = {'\\', 0};
        size_t n = 2;
        switch (*p) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u'; e[2] = '0'; e[3] = '0'; e[4] = hex[*p >> 4]; e[5] = hex[*p & 15];
            n = 6;
        }
        sb_put(s, e, n);
    }
    sb_put(s, "\"", 1);
}

/* Reference order: dtype descending (enum order), then name bytewise. */
static int wt_order_cmp(const void *a, const void *b)
{
    const wtensor *x = *(const wtensor *const *)a, *y = *(const wtensor *const *)b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int wt_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const wtensor *const *)a)->name, (*(const wtensor *const *)b)->name);
}

int sd_st_sink_write(sd_st_sink *sink, const void *p, size_t n)
{
    if (n > sink->left)
        return sd_err(SD_ESTATE, "%s: tensor '%s': callback wrote more than the tensor's size", sink->path,
                      sink->tensor);
    if (n && fwrite(p, 1, n, sink->fp) != n)
        return sd_err(SD_EIO, "%s: write failed: %s", sink->path, strerror(errno));
    sink->left -= n;
    return SD_OK;
}

static int write_tensor(FILE *fp, const char *path, const wtensor *t)
{
    if (t->data) {
        if (t->nbytes && fwrite(t->data, 1, t->nbytes, fp) != t->nbytes)
            return sd_err(SD_EIO, "%s: write failed: %s", path, strerror(errno));
        return SD_OK;
    }
    if (t->f32) {
        enum { N = 4096 };
        uint16_t buf[N];
        size_t n = t->nbytes / dt_info[t->dtype].size;
        for (size_t i = 0; i < n; i += N) {
            size_t k = n - i < N ? n - i : N;
            const void *src = t->f32 + i;
            if (t->dtype != SD_ST_F32) {
                sd_st_convert(SD_ST_F32, t->f32 + i, t->dtype, buf, k);
                src = buf;
            }
            size_t bytes = k * dt_info[t->dtype].size;
            if (fwrite(src, 1, bytes, fp) != bytes)
                return sd_err(SD_EIO, "%s: write failed: %s", path, strerror(errno));
        }
        return SD_OK;
    }
    if (t->fn) {
        sd_st_sink sink = {fp, path, t->name, t->nbytes};
        int rc = t->fn(t->ctx, t->name, &sink);
        if (rc) return rc;
        if (sink.left)
            return sd_err(SD_ESTATE, "%s: tensor '%s': callback wrote %llu of %llu bytes", path, t->name,
                          (unsigned long long)(t->nbytes - sink.left), (unsigned long long)t->nbytes);
    }
    return SD_OK;
}

int sd_safetensors_writer_write_fp(sd_safetensors_writer *w, FILE *fp, const char *path)
{
    if (!path) path = "<stream>";
    const wtensor **ord = malloc((w->n ? w->n : 1) * sizeof *ord);
    if (!ord) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < w->n; i++) ord[i] = &w->t[i];
    qsort(ord, w->n, sizeof *ord, wt_name_cmp);
    for (size_t i = 1; i < w->n; i++)
        if (!strcmp(ord[i - 1]->name, ord[i]->name)) {
            int rc = sd_err(SD_EINVAL, "%s: duplicate tensor name '%s'", path, ord[i]->name);
            free(ord);
            return rc;
        }
    qsort(ord, w->n, sizeof *ord, wt_order_cmp);

    sbuf h = {0};
    sb_put(&h, "{", 1);
    int first = 1;
    if (w->nmeta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) sb_put(&h, ",", 1);
            sb_jstr(&h, w->meta[i].key);
            sb_put(&h, ":", 1);
            sb_jstr(&h, w->meta[i].value);
        }
        sb_put(&h, "}", 1);
        first = 0;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const wtensor *t = ord[i];
        if (!first) sb_put(&h, ",", 1);
        first = 0;
        sb_jstr(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, dt_info[t->dtype].name);
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_put(&h, ",", 1);
            sb_u64(&h, (uint64_t)t->shape[d]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        sb_u64(&h, off);
        sb_put(&h, ",", 1);
        off += t->nbytes;
        sb_u64(&h, off);
        sb_str(&h, "]}");
    }
    sb_put(&h, "}", 1);
    while (h.n % 8) sb_put(&h, " ", 1);
    int rc = SD_OK;
    if (h.oom) rc = sd_err(SD_ENOMEM, "%s: out of memory", path);
    else if (h.n > SD_ST_MAX_HEADER)
        rc = sd_err(SD_ERANGE, "%s: header of %zu bytes exceeds the %u-byte limit", path, h.n, SD_ST_MAX_HEADER);
    if (!rc) {
        uint64_t n64 = h.n;
        if (fwrite(&n64, 8, 1, fp) != 1 || fwrite(h.b, 1, h.n, fp) != h.n)
            rc = sd_err(SD_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    for (size_t i = 0; i < w->n && !rc; i++) rc = write_tensor(fp, path, ord[i]);
    if (!rc && (fflush(fp) != 0 || ferror(fp)))
        rc = sd_err(SD_EIO, "%s: write failed: %s", path, strerror(errno));
    free(h.b);
    free(ord);
    return rc;
}

int sd_safetensors_writer_write(sd_safetensors_writer *w, const char *path)
{
    sd_atomic_file af;
    int rc = sd_atomic_open(&af, path);
    if (rc) return rc;
    rc = sd_safetensors_writer_write_fp(w, af.fp, path);
    if (rc) {
        sd_atomic_abort(&af);
        return rc;
    }
    return sd_atomic_commit(&af);
}

int sd_safetensors_writer_write_mem(sd_safetensors_writer *w, void **buf, size_t *n)
{
    char *p = NULL;
    size_t sz = 0;
    *buf = NULL;
    *n = 0;
    FILE *fp = open_memstream(&p, &sz);
    if (!fp) return sd_err(SD_ENOMEM, "open_memstream: %s", strerror(errno));
    int rc = sd_safetensors_writer_write_fp(w, fp, "<memory>");
    if (fclose(fp) != 0 && !rc) rc = sd_err(SD_EIO, "<memory>: write failed");
    if (rc) {
        free(p);
        return rc;
    }
    *buf = p;
    *n = sz;
    return SD_OK;
}
