/* Protocol Buffers wire format: a bounds-checked reader over a byte range (no schema, no
 * allocation). Every read checks the remaining length first; a truncated or malformed encoding
 * (a varint longer than 10 bytes or past the end, a length past the end, wire types 3/4 (groups)
 * or 6/7) is SD_EFORMAT with a message giving the byte offset from the start of the outermost
 * buffer ("truncated varint at byte 12"); callers prefix the file name. */
#ifndef SD_IO_PROTOBUF_H
#define SD_IO_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

enum { SD_PB_VARINT = 0, SD_PB_I64 = 1, SD_PB_LEN = 2, SD_PB_I32 = 5 };

typedef struct sd_pb {
    const uint8_t *p, *end;   /* the unread bytes */
    const uint8_t *base;      /* start of the outermost buffer (offsets in messages) */
} sd_pb;

static inline sd_pb sd_pb_make(const void *data, size_t n)
{
    sd_pb r = { (const uint8_t *)data, (const uint8_t *)data + n, (const uint8_t *)data };
    return r;
}
static inline int sd_pb_more(const sd_pb *r) { return r->p < r->end; }

int sd_pb_varint(sd_pb *r, uint64_t *v);
/* a field key: field number >= 1 and a supported wire type */
int sd_pb_key(sd_pb *r, uint32_t *field, int *wire);
/* a length-delimited field's bytes; *sub reads them (same base) */
int sd_pb_len(sd_pb *r, sd_pb *sub);
int sd_pb_fixed32(sd_pb *r, uint32_t *v);
int sd_pb_fixed64(sd_pb *r, uint64_t *v);
/* skip a field's value of wire type `wire` */
int sd_pb_skip(sd_pb *r, int wire);
/* a scalar field that may be packed (SD_PB_LEN) or not: count the values of one occurrence
 * (`wire` as read by sd_pb_key; elem = SD_PB_VARINT, SD_PB_I32 or SD_PB_I64) without consuming */
int sd_pb_count(const sd_pb *r, int wire, int elem, size_t *n);

#endif
