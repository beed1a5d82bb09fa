#include "io/npy.h"

#include "base/error.h"

#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SD_HOST_BE 1
#else
#define SD_HOST_BE 0
#endif

static const struct {
    const char *code;   /* descr without the byte-order character */
    size_t size;
    const char *descr;  /* what we write (and what numpy writes) */
    const char *name;
} dtypes[SD_NPY_NDTYPES] = {
    [SD_NPY_F4] = {"f4", 4, "<f4", "float32"},
    [SD_NPY_F2] = {"f2", 2, "<f2", "float16"},
    [SD_NPY_F8] = {"f8", 8, "<f8", "float64"},
    [SD_NPY_I8] = {"i8", 8, "<i8", "int64"},
    [SD_NPY_I4] = {"i4", 4, "<i4", "int32"},
    [SD_NPY_I2] = {"i2", 2, "<i2", "int16"},
    [SD_NPY_I1] = {"i1", 1, "|i1", "int8"},
    [SD_NPY_U1] = {"u1", 1, "|u1", "uint8"},
    [SD_NPY_B1] = {"b1", 1, "|b1", "bool"},
    [SD_NPY_U2] = {"u2", 2, "<u2", "uint16"},
};

size_t sd_npy_itemsize(sd_npy_dtype t)
{
    return (unsigned)t < SD_NPY_NDTYPES ? dtypes[t].size : 0;
}

const char *sd_npy_descr(sd_npy_dtype t)
{
    return (unsigned)t < SD_NPY_NDTYPES ? dtypes[t].descr : "?";
}

const char *sd_npy_dtype_name(sd_npy_dtype t)
{
    return (unsigned)t < SD_NPY_NDTYPES ? dtypes[t].name : "?";
}

/* ---- header dict literal parser ---------------------------------------------------------- */

typedef struct {
    const char *p, *end;
} lex;

static void skip_ws(lex *l)
{
    while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r' ||
                             *l->p == '\f' || *l->p == '\v'))
        l->p++;
}

static int peek(lex *l)
{
    skip_ws(l);
    return l->p < l->end ? (unsigned char)*l->p : -1;
}

static int expect(lex *l, char c)
{
    if (peek(l) != (unsigned char)c) return 0;
    l->p++;
    return 1;
}

/* Python string literal with single or double quotes, no escapes, no prefixes; copied into
 * buf (NUL-terminated). */
static int parse_str(lex *l, char *buf, size_t cap)
{
    int q = peek(l);
    if (q != '\'' && q != '"') return sd_err(SD_EFORMAT, "expected a string literal");
    l->p++;
    size_t k = 0;
    while (l->p < l->end && *l->p != q) {
        unsigned char c = (unsigned char)*l->p;
        if (c == '\\') return sd_err(SD_EUNSUPPORTED, "escape sequences in header strings are not supported");
        if (c < 0x20 || c >= 0x7f) return sd_err(SD_EFORMAT, "invalid character 0x%02x in header string", c);
        if (k + 1 >= cap) return sd_err(SD_EFORMAT, "header string too long");
        buf[k++] = (char)c;
        l->p++;
    }
    if (l->p >= l->end) return sd_err(SD_EFORMAT, "unterminated string in header");
    l->p++;
    buf[k] = 0;
    return SD_OK;
}

static int parse_int(lex *l, int64_t *v)
{
    int c = peek(l);
    if (c == '-' || c == '+') return sd_err(SD_EFORMAT, "signed dimension in shape");
    if (c < '0' || c > '9') return sd_err(SD_EFORMAT, "expected an integer in shape");
    const char *s = l->p;
    int64_t x = 0;
    while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
        int d = *l->p - '0';
        if (x > (INT64_MAX - d) / 10) return sd_err(SD_ERANGE, "dimension too large in shape");
        x = x * 10 + d;
        l->p++;
    }
    if (*s == '0' && l->p - s > 1) {
        for (const char *t = s; t < l->p; t++)
            if (*t != '0') return sd_err(SD_EFORMAT, "integer with leading zero in shape");
    }
    if (l->p < l->end && (*l->p == 'L' || *l->p == 'l' || *l->p == '_' || *l->p == '.' ||
                          *l->p == 'e' || *l->p == 'E' || *l->p == 'x' || *l->p == 'j'))
        return sd_err(SD_EFORMAT, "shape dimension is not a plain integer");
    *v = x;
    return SD_OK;
}

/* Python tuple of ints: (), (4,), (4, 64, 64), (4, 64, 64,). (4) is an int, not a tuple. */
static int parse_shape(lex *l, sd_npy_header *h)
{
    if (!expect(l, '(')) {
        if (peek(l) == '[') return sd_err(SD_EFORMAT, "shape is a list, not a tuple");
        return sd_err(SD_EFORMAT, "shape is not a tuple");
    }
    int n = 0, comma = 0;
    if (expect(l, ')')) {
        h->ndim = 0;
        return SD_OK;
    }
    for (;;) {
        if (n >= SD_NPY_MAX_DIMS) return sd_err(SD_EUNSUPPORTED, "shape has more than %d dimensions", SD_NPY_MAX_DIMS);
        int rc = parse_int(l, &h->shape[n]);
        if (rc) return rc;
        n++;
        comma = expect(l, ',');
        if (expect(l, ')')) break;
        if (!comma) return sd_err(SD_EFORMAT, "expected ',' or ')' in shape");
    }
    if (n == 1 && !comma) return sd_err(SD_EFORMAT, "shape (%lld) is not a tuple (needs a trailing comma)", (long long)h->shape[0]);
    h->ndim = n;
    return SD_OK;
}

static int parse_descr(const char *d, sd_npy_header *h)
{
    const char *s = d;
    int order = 0;  /* 0 native/not applicable, 1 little, 2 big */
    if (*s == '<') order = 1, s++;
    else if (*s == '>') order = 2, s++;
    else if (*s == '=' || *s == '|') s++;
    for (int t = 0; t < SD_NPY_NDTYPES; t++) {
        if (strcmp(s, dtypes[t].code)) continue;
        h->dtype = (sd_npy_dtype)t;
        h->big_endian = dtypes[t].size > 1 && (order == 2 || (order == 0 && SD_HOST_BE));
        return SD_OK;
    }
    return sd_err(SD_EUNSUPPORTED, "unsupported descr '%s'", d);
}

static int parse_dict(lex *l, sd_npy_header *h)
{
    int seen_descr = 0, seen_fo = 0, seen_shape = 0, rc;
    if (!expect(l, '{')) return sd_err(SD_EFORMAT, "header is not a dict literal");
    for (;;) {
        if (expect(l, '}')) break;
        char key[32], val[64];
        if ((rc = parse_str(l, key, sizeof key))) return rc;
        if (!expect(l, ':')) return sd_err(SD_EFORMAT, "expected ':' after '%s' in header", key);
        if (!strcmp(key, "descr")) {
            if (seen_descr++) return sd_err(SD_EFORMAT, "duplicate key 'descr' in header");
            if (peek(l) == '[') return sd_err(SD_EUNSUPPORTED, "structured descr is not supported");
            if ((rc = parse_str(l, val, sizeof val))) return rc;
            if ((rc = parse_descr(val, h))) return rc;
        } else if (!strcmp(key, "fortran_order")) {
            if (seen_fo++) return sd_err(SD_EFORMAT, "duplicate key 'fortran_order' in header");
            skip_ws(l);
            size_t left = (size_t)(l->end - l->p);
            if (left >= 4 && !memcmp(l->p, "True", 4)) h->fortran_order = 1, l->p += 4;
            else if (left >= 5 && !memcmp(l->p, "False", 5)) h->fortran_order = 0, l->p += 5;
            else return sd_err(SD_EFORMAT, "fortran_order is not True or False");
            if (l->p < l->end && (*l->p == '_' || (*l->p >= '0' && *l->p <= '9') ||
                                  ((*l->p | 0x20) >= 'a' && (*l->p | 0x20) <= 'z')))
                return sd_err(SD_EFORMAT, "fortran_order is not True or False");
        } else if (!strcmp(key, "shape")) {
            if (seen_shape++) return sd_err(SD_EFORMAT, "duplicate key 'shape' in header");
            if ((rc = parse_shape(l, h))) return rc;
        } else {
            return sd_err(SD_EFORMAT, "unexpected key '%s' in header", key);
        }
        if (expect(l, ',')) continue;
        if (expect(l, '}')) break;
        return sd_err(SD_EFORMAT, "expected ',' or '}' in header");
    }
    if (!seen_descr || !seen_fo || !seen_shape)
        return sd_err(SD_EFORMAT, "header lacks key '%s'",
                      !seen_descr ? "descr" : !seen_fo ? "fortran_order" : "shape");
    skip_ws(l);
    if (l->p != l->end) return sd_err(SD_EFORMAT, "trailing characters after the header dict");
    return SD_OK;
}

int sd_npy_parse_header(const void *buf, size_t n, sd_npy_header *h)
{
    const unsigned char *b = buf;
    memset(h, 0, sizeof *h);
    if (n < 10) return sd_err(SD_EFORMAT, "truncated .npy (%zu bytes)", n);
    if (memcmp(b, "\x93NUMPY", 6)) return sd_err(SD_EFORMAT, "not a .npy array (bad magic)");
    if (b[6] < 1 || b[6] > 3 || b[7] != 0)
        return sd_err(SD_EUNSUPPORTED, ".npy format version %u.%u is not supported", b[6], b[7]);
    h->version = b[6];
    size_t hlen, pre;
    if (h->version == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        pre = 10;
    } else {
        if (n < 12) return sd_err(SD_EFORMAT, "truncated .npy (%zu bytes)", n);
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        pre = 12;
    }
    if (hlen > SD_NPY_MAX_HEADER)
        return sd_err(SD_ERANGE, ".npy header length %zu exceeds %d", hlen, SD_NPY_MAX_HEADER);
    if (n - pre < hlen) return sd_err(SD_EFORMAT, "truncated .npy header (%zu of %zu bytes)", n - pre, hlen);
    for (size_t i = 0; i < hlen; i++)
        if (b[pre + i] == 0) return sd_err(SD_EFORMAT, "NUL byte in .npy header");
    lex l = {(const char *)b + pre, (const char *)b + pre + hlen};
    int rc = parse_dict(&l, h);
    if (rc) return sd_err_prefix(rc, ".npy header");
    h->data_offset = pre + hlen;
    size_t count = 1, isz = dtypes[h->dtype].size;
    for (int i = 0; i < h->ndim; i++) {
        uint64_t d = (uint64_t)h->shape[i];
        if (d && count > SIZE_MAX / d) return sd_err(SD_ERANGE, ".npy shape overflows the element count");
        count *= (size_t)d;
    }
    if (count > (SIZE_MAX - h->data_offset) / isz) return sd_err(SD_ERANGE, ".npy data size overflows");
    h->count = count;
    h->data_size = count * isz;
    return SD_OK;
}

static void swap_bytes(unsigned char *p, size_t count, size_t isz)
{
    for (size_t i = 0; i < count; i++, p += isz)
        for (size_t a = 0, z = isz - 1; a < z; a++, z--) {
            unsigned char t = p[a];
            p[a] = p[z];
            p[z] = t;
        }
}

/* Fortran order (first index fastest) → C order (last index fastest). */
static void fortran_to_c(unsigned char *dst, const unsigned char *src, int ndim, const int64_t *shape,
                         size_t count, size_t isz)
{
    size_t fstride[SD_NPY_MAX_DIMS], idx[SD_NPY_MAX_DIMS] = {0}, off = 0;
    size_t s = 1;
    for (int i = 0; i < ndim; i++) {
        fstride[i] = s;
        s *= (size_t)shape[i];
    }
    for (size_t k = 0; k < count; k++) {
        memcpy(dst + k * isz, src + off * isz, isz);
        for (int i = ndim - 1; i >= 0; i--) {  /* increment the C-order index */
            off += fstride[i];
            if (++idx[i] < (size_t)shape[i]) break;
            off -= fstride[i] * idx[i];
            idx[i] = 0;
        }
    }
}

int sd_npy_load(const void *buf, size_t n, sd_npy_array *a)
{
    sd_npy_header h;
    memset(a, 0, sizeof *a);
    int rc = sd_npy_parse_header(buf, n, &h);
    if (rc) return rc;
    if (n - h.data_offset != h.data_size) {
        if (n - h.data_offset < h.data_size)
            return sd_err(SD_EFORMAT, "truncated .npy data: %zu of %zu bytes for shape and dtype %s",
                          n - h.data_offset, h.data_size, dtypes[h.dtype].name);
        return sd_err(SD_EFORMAT, ".npy has %zu bytes after the data", n - h.data_offset - h.data_size);
    }
    const unsigned char *src = (const unsigned char *)buf + h.data_offset;
    size_t isz = dtypes[h.dtype].size;
    void *data = NULL;
    if (h.data_size) {
        data = malloc(h.data_size);
        if (!data) return sd_err(SD_ENOMEM, "out of memory for %zu bytes of .npy data", h.data_size);
        if (h.fortran_order && h.ndim > 1) fortran_to_c(data, src, h.ndim, h.shape, h.count, isz);
        else memcpy(data, src, h.data_size);
        if (h.big_endian != SD_HOST_BE && isz > 1) swap_bytes(data, h.count, isz);
    }
    a->dtype = h.dtype;
    a->ndim = h.ndim;
    memcpy(a->shape, h.shape, sizeof a->shape);
    a->count = h.count;
    a->nbytes = h.data_size;
    a->data = data;
    return SD_OK;
}

void sd_npy_array_free(sd_npy_array *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---- writing ----------------------------------------------------------------------------- */

long sd_npy_header_format(char *out, size_t cap, sd_npy_dtype dtype, int ndim, const int64_t *shape)
{
    if ((unsigned)dtype >= SD_NPY_NDTYPES) return sd_err(SD_EINVAL, "npy: bad dtype %d", (int)dtype);
    if (ndim < 0 || ndim > SD_NPY_MAX_DIMS) return sd_err(SD_EINVAL, "npy: bad ndim %d", ndim);
    char dict[SD_NPY_HEADER_CAP];
    size_t k = 0;
    k += (size_t)snprintf(dict + k, sizeof dict - k, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                          dtypes[dtype].descr);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return sd_err(SD_EINVAL, "npy: negative dimension");
        k += (size_t)snprintf(dict + k, sizeof dict - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    }
    k += (size_t)snprintf(dict + k, sizeof dict - k, "%s), }", ndim == 1 ? "," : "");
    if (ndim > 0) {  /* numpy ≥1.24: room to grow the first axis in place */
        char tmp[24];
        int dl = snprintf(tmp, sizeof tmp, "%lld", (long long)shape[0]);
        for (int i = dl; i < 21; i++) dict[k++] = ' ';
    }
    /* version 1.0: 10-byte prefix; hlen = dict + padding + '\n', padlen in 1..64 as numpy. */
    size_t pre = 10, hl = k + 1;
    size_t pad = SD_NPY_ALIGN - ((pre + hl) % SD_NPY_ALIGN);
    int version = 1;
    if (hl + pad > 65535) {  /* cannot happen with ≤32 dims, kept for completeness */
        pre = 12;
        pad = SD_NPY_ALIGN - ((pre + hl) % SD_NPY_ALIGN);
        version = 2;
    }
    size_t total = pre + hl + pad;
    if (total > cap) return sd_err(SD_ERANGE, "npy: header buffer too small");
    unsigned char *o = (unsigned char *)out;
    memcpy(o, "\x93NUMPY", 6);
    o[6] = (unsigned char)version;
    o[7] = 0;
    size_t hlen = hl + pad;
    o[8] = (unsigned char)hlen;
    o[9] = (unsigned char)(hlen >> 8);
    if (version == 2) {
        o[10] = (unsigned char)(hlen >> 16);
        o[11] = (unsigned char)(hlen >> 24);
    }
    memcpy(o + pre, dict, k);
    memset(o + pre + k, ' ', pad);
    o[total - 1] = '\n';
    return (long)total;
}

static int data_size(sd_npy_dtype dtype, int ndim, const int64_t *shape, size_t *size)
{
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d && count > SIZE_MAX / d) return sd_err(SD_ERANGE, "npy: shape overflows");
        count *= (size_t)d;
    }
    size_t isz = dtypes[dtype].size;
    if (count > (SIZE_MAX - SD_NPY_HEADER_CAP) / isz) return sd_err(SD_ERANGE, "npy: size overflows");
    *size = count * isz;
    return SD_OK;
}

/* Copy native-order data as little-endian. */
static void put_le(unsigned char *dst, const void *src, size_t nbytes, size_t isz)
{
    memcpy(dst, src, nbytes);
    if (SD_HOST_BE && isz > 1) swap_bytes(dst, nbytes / isz, isz);
}

int sd_npy_encode(sd_npy_dtype dtype, int ndim, const int64_t *shape, const void *data, void **out, size_t *n)
{
    char hdr[SD_NPY_HEADER_CAP];
    long hl = sd_npy_header_format(hdr, sizeof hdr, dtype, ndim, shape);
    if (hl < 0) return (int)hl;
    size_t ds;
    int rc = data_size(dtype, ndim, shape, &ds);
    if (rc) return rc;
    unsigned char *b = malloc((size_t)hl + ds);
    if (!b) return sd_err(SD_ENOMEM, "npy: out of memory for %zu bytes", (size_t)hl + ds);
    memcpy(b, hdr, (size_t)hl);
    if (ds) put_le(b + hl, data, ds, dtypes[dtype].size);
    *out = b;
    *n = (size_t)hl + ds;
    return SD_OK;
}

int sd_npy_write(FILE *fp, sd_npy_dtype dtype, int ndim, const int64_t *shape, const void *data)
{
    char hdr[SD_NPY_HEADER_CAP];
    long hl = sd_npy_header_format(hdr, sizeof hdr, dtype, ndim, shape);
    if (hl < 0) return (int)hl;
    size_t ds;
    int rc = data_size(dtype, ndim, shape, &ds);
    if (rc) return rc;
    if (fwrite(hdr, 1, (size_t)hl, fp) != (size_t)hl) return sd_err(SD_EIO, "npy: write failed");
    if (!ds) return SD_OK;
    if (!SD_HOST_BE || dtypes[dtype].size == 1) {
        if (fwrite(data, 1, ds, fp) != ds) return sd_err(SD_EIO, "npy: write failed");
        return SD_OK;
    }
    void *tmp = malloc(ds);
    if (!tmp) return sd_err(SD_ENOMEM, "npy: out of memory");
    put_le(tmp, data, ds, dtypes[dtype].size);
    size_t w = fwrite(tmp, 1, ds, fp);
    free(tmp);
    return w == ds ? SD_OK : sd_err(SD_EIO, "npy: write failed");
}
