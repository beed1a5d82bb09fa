#include "io/zip.h"

#include "base/error.h"
#include "base/hash.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define DOS_TIME 0x0000   /* 00:00:00 */
#define DOS_DATE 0x0021   /* 1980-01-01 */
#define EXTRA_ALIGN_ID 0xD935
#define UNIX_MODE 0100644u
#define EXTRA_ZIP64_ID 0x0001
#define MAX32 0xFFFFFFFFu

void sd_zip_writer_init(sd_zip_writer *zw, FILE *fp, int zstd_level)
{
    memset(zw, 0, sizeof *zw);
    zw->fp = fp;
    zw->level = zstd_level ? zstd_level : 3;
}

void sd_zip_writer_free(sd_zip_writer *zw)
{
    if (!zw) return;
    for (int i = 0; i < zw->nents; i++) free(zw->ents[i].name);
    free(zw->ents);
    free(zw->buf);
    ZSTD_freeCCtx(zw->cctx);
    FILE *fp = zw->fp;
    memset(zw, 0, sizeof *zw);
    zw->fp = fp;
    zw->failed = 1;
}

static int emit(sd_zip_writer *zw, const void *p, size_t n)
{
    if (zw->failed) return SD_ESTATE;
    if (!n) return SD_OK;
    if (zw->fp) {
        if (fwrite(p, 1, n, zw->fp) != n) {
            zw->failed = 1;
            return sd_err(SD_EIO, "zip: write failed");
        }
    } else {
        if (zw->len + n > zw->cap) {
            size_t nc = zw->cap ? zw->cap : 4096;
            while (nc < zw->len + n) nc *= 2;
            unsigned char *nb = realloc(zw->buf, nc);
            if (!nb) {
                zw->failed = 1;
                return sd_err(SD_ENOMEM, "zip: out of memory");
            }
            zw->buf = nb;
            zw->cap = nc;
        }
        memcpy(zw->buf + zw->len, p, n);
        zw->len += n;
    }
    zw->pos += n;
    return SD_OK;
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* 6.3 (zstd) or 4.5 (Zip64) or 2.0 */
static unsigned version_needed(int method, int zip64)
{
    return method == SD_ZIP_ZSTD ? 63 : zip64 ? 45 : 20;
}

/* Which fields of an entry go to its central Zip64 extra (APPNOTE 4.5.3: only those whose
 * header field is 0xFFFFFFFF, in the order usize, csize, offset). */
static int central64(const sd_zip_writer *zw, const sd_zip_entry *e, int *u, int *c, int *o)
{
    *u = zw->force_zip64 || e->usize >= MAX32;
    *c = zw->force_zip64 || e->csize >= MAX32;
    *o = zw->force_zip64 || e->offset >= MAX32;
    return *u || *c || *o;
}

int sd_zip_add(sd_zip_writer *zw, const char *name, int method, const sd_zip_part *parts, int nparts)
{
    if (zw->failed) return sd_err(SD_ESTATE, "zip: writer has failed");
    if (method != SD_ZIP_STORE && method != SD_ZIP_ZSTD)
        return sd_err(SD_EINVAL, "zip: unsupported method %d", method);
    size_t nl = strlen(name);
    if (!nl || nl > 1024) return sd_err(SD_EINVAL, "zip: bad member name length %zu", nl);
    if (zw->nents >= INT_MAX - 1) return sd_err(SD_EUNSUPPORTED, "zip: too many members");
    uint64_t usize = 0;
    uint32_t crc = 0;
    for (int i = 0; i < nparts; i++) {
        usize += parts[i].n;
        crc = sd_crc32(crc, parts[i].data, parts[i].n);
    }

    unsigned char *cbuf = NULL;
    size_t csize = (size_t)usize;
    if (method == SD_ZIP_ZSTD) {
        if (!zw->cctx && !(zw->cctx = ZSTD_createCCtx())) return sd_err(SD_ENOMEM, "zip: out of memory");
        ZSTD_CCtx *cc = zw->cctx;
        ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, zw->level);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 0);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1);
        ZSTD_CCtx_setPledgedSrcSize(cc, usize);
        size_t cap = ZSTD_compressBound((size_t)usize);
        cbuf = malloc(cap ? cap : 1);
        if (!cbuf) return sd_err(SD_ENOMEM, "zip: out of memory for %zu bytes", cap);
        ZSTD_outBuffer ob = {cbuf, cap, 0};
        for (int i = 0; i <= nparts; i++) {
            ZSTD_inBuffer ib = {i < nparts ? parts[i].data : NULL, i < nparts ? parts[i].n : 0, 0};
            ZSTD_EndDirective end = i < nparts ? ZSTD_e_continue : ZSTD_e_end;
            size_t r;
            do {
                r = ZSTD_compressStream2(cc, &ob, &ib, end);
                if (ZSTD_isError(r)) {
                    free(cbuf);
                    return sd_err(SD_EIO, "zip: zstd compression of %s failed: %s", name, ZSTD_getErrorName(r));
                }
                if (ob.pos == ob.size && (end == ZSTD_e_end ? r != 0 : ib.pos < ib.size)) {
                    free(cbuf);
                    return sd_err(SD_EIO, "zip: zstd output of %s exceeds its bound", name);
                }
            } while (end == ZSTD_e_end ? r != 0 : ib.pos < ib.size);
        }
        csize = ob.pos;
    }

    /* Zip64 local extra (both sizes, APPNOTE 4.5.3) when a size needs it, then the alignment
       extra so that the data starts at a multiple of SD_ZIP_ALIGN. */
    uint64_t off = zw->pos;
    int z64 = zw->force_zip64 || usize >= MAX32 || csize >= MAX32;
    size_t x64 = z64 ? 20 : 0;
    size_t extra = 6;
    size_t mis = (size_t)((off + 30 + nl + x64 + extra) % SD_ZIP_ALIGN);
    if (mis) extra += SD_ZIP_ALIGN - mis;
    if (zw->nents == zw->capents) {
        int nc = zw->capents ? zw->capents * 2 : 8;
        sd_zip_entry *ne = realloc(zw->ents, (size_t)nc * sizeof *ne);
        if (!ne) {
            free(cbuf);
            return sd_err(SD_ENOMEM, "zip: out of memory");
        }
        zw->ents = ne;
        zw->capents = nc;
    }
    sd_zip_entry *e = &zw->ents[zw->nents];
    if (!(e->name = strdup(name))) {
        free(cbuf);
        return sd_err(SD_ENOMEM, "zip: out of memory");
    }
    e->crc = crc;
    e->csize = csize;
    e->usize = usize;
    e->offset = off;
    e->method = (uint16_t)method;
    e->zip64 = (uint8_t)z64;
    zw->nents++;

    unsigned char h[30 + SD_ZIP_ALIGN + 6];
    put32(h, 0x04034b50);
    put16(h + 4, version_needed(method, z64));
    put16(h + 6, 0);
    put16(h + 8, (unsigned)method);
    put16(h + 10, DOS_TIME);
    put16(h + 12, DOS_DATE);
    put32(h + 14, crc);
    put32(h + 18, z64 ? MAX32 : (uint32_t)csize);
    put32(h + 22, z64 ? MAX32 : (uint32_t)usize);
    put16(h + 26, (unsigned)nl);
    put16(h + 28, (unsigned)(x64 + extra));
    int rc = emit(zw, h, 30);
    if (!rc) rc = emit(zw, name, nl);
    if (z64) {
        put16(h, EXTRA_ZIP64_ID);
        put16(h + 2, 16);
        put64(h + 4, usize);
        put64(h + 12, csize);
        if (!rc) rc = emit(zw, h, 20);
    }
    memset(h, 0, sizeof h);
    put16(h, EXTRA_ALIGN_ID);
    put16(h + 2, (unsigned)(extra - 4));
    put16(h + 4, SD_ZIP_ALIGN);
    if (!rc) rc = emit(zw, h, extra);
    if (method == SD_ZIP_ZSTD) {
        if (!rc) rc = emit(zw, cbuf, csize);
    } else {
        for (int i = 0; i < nparts && !rc; i++) rc = emit(zw, parts[i].data, parts[i].n);
    }
    free(cbuf);
    return rc;
}

int sd_zip_writer_finish(sd_zip_writer *zw, void **out, size_t *n)
{
    if (zw->failed) return sd_err(SD_ESTATE, "zip: writer has failed");
    uint64_t cd_off = zw->pos;
    int rc = SD_OK;
    for (int i = 0; i < zw->nents && !rc; i++) {
        sd_zip_entry *e = &zw->ents[i];
        unsigned char c[46 + 28];
        size_t nl = strlen(e->name);
        int zu, zc, zo, z64 = central64(zw, e, &zu, &zc, &zo);
        size_t x64 = z64 ? 4 + 8 * (size_t)(zu + zc + zo) : 0;
        unsigned ver = version_needed(e->method, z64 || e->zip64);
        put32(c, 0x02014b50);
        put16(c + 4, 0x0300 | ver);  /* made by: Unix */
        put16(c + 6, ver);
        put16(c + 8, 0);
        put16(c + 10, e->method);
        put16(c + 12, DOS_TIME);
        put16(c + 14, DOS_DATE);
        put32(c + 16, e->crc);
        put32(c + 20, zc ? MAX32 : (uint32_t)e->csize);
        put32(c + 24, zu ? MAX32 : (uint32_t)e->usize);
        put16(c + 28, (unsigned)nl);
        put16(c + 30, (unsigned)x64);   /* extra */
        put16(c + 32, 0);       /* comment */
        put16(c + 34, 0);       /* disk */
        put16(c + 36, 0);       /* internal attributes */
        put32(c + 38, (uint32_t)UNIX_MODE << 16);
        put32(c + 42, zo ? MAX32 : (uint32_t)e->offset);
        rc = emit(zw, c, 46);
        if (!rc) rc = emit(zw, e->name, nl);
        if (z64) {
            unsigned char *x = c + 46;
            put16(x, EXTRA_ZIP64_ID);
            put16(x + 2, (unsigned)(x64 - 4));
            x += 4;
            if (zu) put64(x, e->usize), x += 8;
            if (zc) put64(x, e->csize), x += 8;
            if (zo) put64(x, e->offset), x += 8;
            if (!rc) rc = emit(zw, c + 46, x64);
        }
    }
    if (rc) return rc;
    uint64_t cd_size = zw->pos - cd_off;
    uint64_t count = (uint64_t)zw->nents;
    int f = zw->force_zip64;
    int zn = f || count >= 0xFFFF, zs = f || cd_size >= MAX32, zo = f || cd_off >= MAX32;
    if (zn || zs || zo) {
        /* Zip64 end of central directory record (APPNOTE 4.3.14) and its locator (4.3.15) */
        uint64_t rec_off = zw->pos;
        unsigned char z[56 + 20];
        put32(z, 0x06064b50);
        put64(z + 4, 44);                 /* size of the rest of the record */
        put16(z + 12, 0x0300 | 45);       /* made by: Unix, 4.5 */
        put16(z + 14, 45);
        put32(z + 16, 0);                 /* this disk */
        put32(z + 20, 0);                 /* disk with the central directory */
        put64(z + 24, count);
        put64(z + 32, count);
        put64(z + 40, cd_size);
        put64(z + 48, cd_off);
        put32(z + 56, 0x07064b50);
        put32(z + 60, 0);                 /* disk with the Zip64 end record */
        put64(z + 64, rec_off);
        put32(z + 72, 1);                 /* total disks */
        if ((rc = emit(zw, z, sizeof z))) return rc;
    }
    unsigned char r[22];
    put32(r, 0x06054b50);
    put16(r + 4, 0);
    put16(r + 6, 0);
    put16(r + 8, zn ? 0xFFFF : (unsigned)count);
    put16(r + 10, zn ? 0xFFFF : (unsigned)count);
    put32(r + 12, zs ? MAX32 : (uint32_t)cd_size);
    put32(r + 16, zo ? MAX32 : (uint32_t)cd_off);
    put16(r + 20, 0);
    if ((rc = emit(zw, r, 22))) return rc;
    if (!zw->fp) {
        if (out) {
            *out = zw->buf;
            zw->buf = NULL;
        }
        if (n) *n = zw->len;
    } else if (n) {
        *n = (size_t)zw->pos;
    }
    return SD_OK;
}
