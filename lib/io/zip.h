/* A small zip writer: members are STORED (method 0) or Zstandard (method 93, one zstd frame
 * per member), written in one pass to a FILE* or a growing memory buffer.
 *
 * Layout per member: local file header (no data descriptor: sizes and CRC-32 are known before
 * the header is written), the name, an alignment extra field (id 0xD935, Android zipalign's
 * layout: u16 alignment, then zero bytes) sized so the member's data starts at a multiple of
 * SD_ZIP_ALIGN from the start of the archive, then the data. After the members: the central
 * directory and the end-of-central-directory record. Timestamps are fixed (1980-01-01 00:00)
 * so the same input gives the same bytes.
 *
 * Zip64 (PKWARE APPNOTE 6.3, 4.5.3 and 4.3.14-4.3.15) only where it is needed: a member of
 * 4 GiB or more gets a Zip64 extra field (id 1, both sizes) in its local header, placed before
 * the alignment extra, with 0xFFFFFFFF in the header's size fields; a central directory entry
 * gets one holding those of its sizes and local header offset that do not fit 32 bits (the
 * header fields read 0xFFFFFFFF); when the entry count reaches 65535 or the central directory's
 * size or offset does not fit 32 bits, a Zip64 end of central directory record and its locator
 * come before the end record, whose fields that overflow read 0xFFFF / 0xFFFFFFFF. Archives that
 * need none of this have no Zip64 records at all (the bytes are those of a plain zip).
 * force_zip64 (set by tests after init) writes every Zip64 record on a small archive.
 *
 * libarchive 3.6 cannot write method 93, hence this writer; libarchive reads both methods and
 * Zip64. A member is held in memory (its parts) while it is written. */
#ifndef SD_IO_ZIP_H
#define SD_IO_ZIP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SD_ZIP_ALIGN 64
#define SD_ZIP_STORE 0
#define SD_ZIP_ZSTD 93

typedef struct sd_zip_entry {
    char *name;
    uint64_t csize, usize, offset;
    uint32_t crc;
    uint16_t method;
    uint8_t zip64;         /* its local header carries a Zip64 extra */
} sd_zip_entry;

typedef struct sd_zip_writer {
    FILE *fp;              /* sink, or NULL to write into buf */
    unsigned char *buf;    /* memory sink (when fp is NULL) */
    size_t len, cap;
    uint64_t pos;          /* bytes written so far */
    sd_zip_entry *ents;
    int nents, capents;
    int level;             /* zstd level (default 3) */
    void *cctx;            /* ZSTD_CCtx, created on first use */
    int failed;            /* a write failed; every later call fails */
    int force_zip64;       /* tests only: write the Zip64 records even where they are not needed */
} sd_zip_writer;

/* One contiguous piece of a member's data (a member may be given in several pieces). */
typedef struct sd_zip_part {
    const void *data;
    size_t n;
} sd_zip_part;

/* fp NULL: write into memory (take it with sd_zip_writer_finish). zstd_level 0 = default (3). */
void sd_zip_writer_init(sd_zip_writer *zw, FILE *fp, int zstd_level);
/* Add a member made of the concatenated parts, with method SD_ZIP_STORE or SD_ZIP_ZSTD. */
int sd_zip_add(sd_zip_writer *zw, const char *name, int method, const sd_zip_part *parts, int nparts);
/* Write the central directory and end record. With a memory sink, *out and *n receive the
 * malloc'd archive (the caller frees it); with a FILE* sink, out and n may be NULL. */
int sd_zip_writer_finish(sd_zip_writer *zw, void **out, size_t *n);
/* Free everything (also after a failure; safe after finish). */
void sd_zip_writer_free(sd_zip_writer *zw);

#endif
