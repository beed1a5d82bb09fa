/* Protocol Buffers wire-format reader (io/protobuf.h). */
#include "io/protobuf.h"

#include "base/error.h"

static long off(const sd_pb *r) { return (long)(r->p - r->base); }

int sd_pb_varint(sd_pb *r, uint64_t *v)
{
    uint64_t x = 0;
    const uint8_t *p = r->p;
    for (int i = 0; i < 10; i++) {
        if (p >= r->end) return sd_err(SD_EFORMAT, "truncated varint at byte %ld", off(r));
        uint8_t b = *p++;
        if (i == 9 && b > 1) return sd_err(SD_EFORMAT, "bad varint (over 64 bits) at byte %ld", off(r));
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            r->p = p;
            *v = x;
            return SD_OK;
        }
    }
    return sd_err(SD_EFORMAT, "bad varint (over 10 bytes) at byte %ld", off(r));
}

int sd_pb_key(sd_pb *r, uint32_t *field, int *wire)
{
    long at = off(r);
    uint64_t k;
    int rc = sd_pb_varint(r, &k);
    if (rc) return rc;
    uint64_t f = k >> 3;
    int w = (int)(k & 7);
    if (f == 0 || f > 536870911u)
        return sd_err(SD_EFORMAT, "bad field number %llu at byte %ld", (unsigned long long)f, at);
    if (w != SD_PB_VARINT && w != SD_PB_I64 && w != SD_PB_LEN && w != SD_PB_I32)
        return sd_err(SD_EFORMAT, "unsupported wire type %d (field %u) at byte %ld", w, (unsigned)f, at);
    *field = (uint32_t)f;
    *wire = w;
    return SD_OK;
}

int sd_pb_len(sd_pb *r, sd_pb *sub)
{
    long at = off(r);
    uint64_t n;
    int rc = sd_pb_varint(r, &n);
    if (rc) return rc;
    if (n > (uint64_t)(r->end - r->p))
        return sd_err(SD_EFORMAT, "length %llu at byte %ld runs past the end (%ld bytes left)", (unsigned long long)n,
                      at, (long)(r->end - r->p));
    sub->base = r->base;
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return SD_OK;
}

int sd_pb_fixed32(sd_pb *r, uint32_t *v)
{
    if (r->end - r->p < 4) return sd_err(SD_EFORMAT, "truncated fixed32 at byte %ld", off(r));
    const uint8_t *p = r->p;
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    r->p += 4;
    return SD_OK;
}

int sd_pb_fixed64(sd_pb *r, uint64_t *v)
{
    uint32_t lo, hi;
    if (r->end - r->p < 8) return sd_err(SD_EFORMAT, "truncated fixed64 at byte %ld", off(r));
    sd_pb_fixed32(r, &lo);
    sd_pb_fixed32(r, &hi);
    *v = (uint64_t)hi << 32 | lo;
    return SD_OK;
}

int sd_pb_skip(sd_pb *r, int wire)
{
    uint64_t v;
    sd_pb sub;
    switch (wire) {
    case SD_PB_VARINT: return sd_pb_varint(r, &v);
    case SD_PB_I64: return sd_pb_fixed64(r, &v);
    case SD_PB_I32: {
        uint32_t u;
        return sd_pb_fixed32(r, &u);
    }
    case SD_PB_LEN: return sd_pb_len(r, &sub);
    }
    return sd_err(SD_EFORMAT, "unsupported wire type %d at byte %ld", wire, off(r));
}

int sd_pb_count(const sd_pb *r, int wire, int elem, size_t *n)
{
    if (wire == elem) {
        *n = 1;
        return SD_OK;
    }
    if (wire != SD_PB_LEN)
        return sd_err(SD_EFORMAT, "wrong wire type %d for a numeric field at byte %ld", wire, off(r));
    sd_pb c = *r, sub;
    int rc = sd_pb_len(&c, &sub);
    if (rc) return rc;
    size_t len = (size_t)(sub.end - sub.p);
    if (elem == SD_PB_I32 || elem == SD_PB_I64) {
        size_t w = elem == SD_PB_I32 ? 4 : 8;
        if (len % w)
            return sd_err(SD_EFORMAT, "packed field of %zu bytes is not a multiple of %zu at byte %ld", len, w, off(r));
        *n = len / w;
        return SD_OK;
    }
    size_t k = 0;
    for (const uint8_t *p = sub.p; p < sub.end; p++) k += !(*p & 0x80);
    if (len && (sub.end[-1] & 0x80))
        return sd_err(SD_EFORMAT, "truncated varint in a packed field at byte %ld", off(r));
    *n = k;
    return SD_OK;
}
