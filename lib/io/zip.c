#include "io/zip.h"

#include "base/error.h"
#include "base/hash.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define DOS_TIME 0x0000   /* 00:00:00 */
#define DOS_DATE 0x0021   /* 1980-01-01 */
#define EXTRA_ALIGN_ID 0xD935
#define UNIX_MODE 0100644u

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

static unsigned version_needed(int method)
{
    return method == SD_ZIP_ZSTD ? 63 : 20;
}

int sd_zip_add(sd_zip_writer *zw, const char *name, int method, const sd_zip_part *parts, int nparts)
{
    if (zw->failed) return sd_err(SD_ESTATE, "zip: writer has failed");
    if (method != SD_ZIP_STORE && method != SD_ZIP_ZSTD)
        return sd_err(SD_EINVAL, "zip: unsupported method %d", method);
    size_t nl = strlen(name);
    if (!nl || nl > 1024) return sd_err(SD_EINVAL, "zip: bad member name length %zu", nl);
    if (zw->nents >= 65535) return sd_err(SD_EUNSUPPORTED, "zip: more than 65535 members (no Zip64)");
    uint64_t usize = 0;
    uint32_t crc = 0;
    for (int i = 0; i < nparts; i++) {
        usize += parts[i].n;
        crc = sd_crc32(crc, parts[i].data, parts[i].n);
    }
    if (usize >= 0xFFFFFFFFu)
        return sd_err(SD_EUNSUPPORTED, "zip: member %s is %llu bytes; members of 4 GiB or more need Zip64, "
                      "which is not supported", name, (unsigned long long)usize);

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

    /* Extra field so that the data starts at a multiple of SD_ZIP_ALIGN. */
    uint64_t off = zw->pos;
    size_t extra = 6;
    size_t mis = (size_t)((off + 30 + nl + extra) % SD_ZIP_ALIGN);
    if (mis) extra += SD_ZIP_ALIGN - mis;
    if (off + 30 + nl + extra + csize >= 0xFFFFFFFFu) {
        free(cbuf);
        return sd_err(SD_EUNSUPPORTED, "zip: archive would exceed 4 GiB (no Zip64)");
    }
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
    e->csize = (uint32_t)csize;
    e->usize = (uint32_t)usize;
    e->offset = (uint32_t)off;
    e->method = (uint16_t)method;
    zw->nents++;

    unsigned char h[30 + SD_ZIP_ALIGN + 6];
    put32(h, 0x04034b50);
    put16(h + 4, version_needed(method));
    put16(h + 6, 0);
    put16(h + 8, (unsigned)method);
    put16(h + 10, DOS_TIME);
    put16(h + 12, DOS_DATE);
    put32(h + 14, crc);
    put32(h + 18, e->csize);
    put32(h + 22, e->usize);
    put16(h + 26, (unsigned)nl);
    put16(h + 28, (unsigned)extra);
    int rc = emit(zw, h, 30);
    if (!rc) rc = emit(zw, name, nl);
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
        unsigned char c[46];
        size_t nl = strlen(e->name);
        put32(c, 0x02014b50);
        put16(c + 4, 0x0300 | version_needed(e->method));  /* made by: Unix */
        put16(c + 6, version_needed(e->method));
        put16(c + 8, 0);
        put16(c + 10, e->method);
        put16(c + 12, DOS_TIME);
        put16(c + 14, DOS_DATE);
        put32(c + 16, e->crc);
        put32(c + 20, e->csize);
        put32(c + 24, e->usize);
        put16(c + 28, (unsigned)nl);
        put16(c + 30, 0);       /* extra */
        put16(c + 32, 0);       /* comment */
        put16(c + 34, 0);       /* disk */
        put16(c + 36, 0);       /* internal attributes */
        put32(c + 38, (uint32_t)UNIX_MODE << 16);
        put32(c + 42, e->offset);
        rc = emit(zw, c, 46);
        if (!rc) rc = emit(zw, e->name, nl);
    }
    if (rc) return rc;
    uint64_t cd_size = zw->pos - cd_off;
    if (zw->pos + 22 >= 0xFFFFFFFFu) return sd_err(SD_EUNSUPPORTED, "zip: archive would exceed 4 GiB (no Zip64)");
    unsigned char r[22];
    put32(r, 0x06054b50);
    put16(r + 4, 0);
    put16(r + 6, 0);
    put16(r + 8, (unsigned)zw->nents);
    put16(r + 10, (unsigned)zw->nents);
    put32(r + 12, (uint32_t)cd_size);
    put32(r + 16, (uint32_t)cd_off);
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
