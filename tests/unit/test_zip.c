/* lib/io/zip.h: the plain layout is unchanged (hash of a fixed archive), Zip64 records (forced on
 * small archives) read back by libarchive (latent reader), Python's zipfile and our checks of
 * the record layout. */
#include "io/zip.h"

#include <stdint.h>
#include <unistd.h>

#include "base/error.h"
#include "base/hash.h"
#include "io/latent.h"
#include "io/npy.h"
#include "test.h"

static uint32_t rd32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static unsigned rd16(const unsigned char *p) { return p[0] | p[1] << 8; }
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* A small latent-style archive: one zstd member, one stored member in two parts, an empty one
 * (and crop_ltrb.npy with Zip64). */
static void *fixed_archive(int force64, size_t *n)
{
    float lat[24];
    for (int i = 0; i < 24; i++) lat[i] = (float)i * 0.5f - 3.0f;
    int64_t s3[3] = {4, 2, 3}, s1 = 2;
    int64_t orig[2] = {640, 480};
    void *a, *b;
    size_t an, bn;
    sd_npy_encode(SD_NPY_F4, 3, s3, lat, &a, &an);
    sd_npy_encode(SD_NPY_I8, 1, &s1, orig, &b, &bn);
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    zw.force_zip64 = force64;
    sd_zip_part p1 = {a, an}, p2[2] = {{b, 10}, {(char *)b + 10, bn - 10}};
    int rc = sd_zip_add(&zw, "latents.npy", SD_ZIP_ZSTD, &p1, 1);
    if (!rc) rc = sd_zip_add(&zw, "original_size.npy", SD_ZIP_STORE, p2, 2);
    if (!rc) rc = sd_zip_add(&zw, "empty", SD_ZIP_STORE, NULL, 0);
    if (!rc && force64) {   /* the latent reader wants this one too */
        int64_t s4 = 4, crop[4] = {1, 2, 3, 4};
        void *c;
        size_t cn;
        sd_npy_encode(SD_NPY_I8, 1, &s4, crop, &c, &cn);
        sd_zip_part p3 = {c, cn};
        rc = sd_zip_add(&zw, "crop_ltrb.npy", SD_ZIP_STORE, &p3, 1);
        free(c);
    }
    void *out = NULL;
    if (!rc) rc = sd_zip_writer_finish(&zw, &out, n);
    sd_zip_writer_free(&zw);
    free(a);
    free(b);
    return rc ? NULL : out;
}

static void hex(const void *p, size_t n, char out[65])
{
    uint8_t h[32];
    sd_sha256(p, n, h);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* The bytes of an archive that needs no Zip64 are those the writer gave before Zip64 existed. */
static void test_zip_plain_unchanged(void)
{
    size_t n = 0;
    void *z = fixed_archive(0, &n);
    T_CHECK(z != NULL);
    if (!z) return;
    char h[65];
    hex(z, n, h);
    T_EQ_STR(h, "fbdd478b43ce029e840994e90de064ffd063421d79010d80e8d41c522817a469");
    T_EQ_INT(n, 705);
    free(z);
}

static void test_zip64_forced_layout(void)
{
    size_t n = 0;
    void *zp = fixed_archive(1, &n);
    T_CHECK(zp != NULL);
    if (!zp) return;
    const unsigned char *z = zp;
    /* end record: counts / size / offset all 0xFFFF(FFFF); locator before it; Zip64 record */
    const unsigned char *eocd = z + n - 22, *loc = eocd - 20;
    T_EQ_INT(rd32(eocd), 0x06054b50);
    T_EQ_INT(rd16(eocd + 8), 0xFFFF);
    T_EQ_INT(rd32(eocd + 12), 0xFFFFFFFFu);
    T_EQ_INT(rd32(eocd + 16), 0xFFFFFFFFu);
    T_EQ_INT(rd32(loc), 0x07064b50);
    if (rd32(loc) != 0x07064b50 || rd64(loc + 8) + 56 > n) {
        free(zp);
        return;
    }
    uint64_t ro = rd64(loc + 8);
    T_CHECK(ro + 56 == (uint64_t)(loc - z));
    const unsigned char *rec = z + ro;
    T_EQ_INT(rd32(rec), 0x06064b50);
    T_EQ_INT(rd64(rec + 4), 44);
    T_EQ_INT(rd64(rec + 24), 4);
    T_EQ_INT(rd64(rec + 32), 4);
    uint64_t cd_size = rd64(rec + 40), cd_off = rd64(rec + 48);
    T_CHECK(cd_off + cd_size == ro);
    /* every central entry: sizes and offset in a Zip64 extra; its local header has one with both
       sizes, and the data stays aligned */
    const unsigned char *c = z + cd_off;
    for (int i = 0; i < 4 && c < z + ro; i++) {
        T_EQ_INT(rd32(c), 0x02014b50);
        T_EQ_INT(rd32(c + 20), 0xFFFFFFFFu);
        T_EQ_INT(rd32(c + 24), 0xFFFFFFFFu);
        T_EQ_INT(rd32(c + 42), 0xFFFFFFFFu);
        unsigned nl = rd16(c + 28), xl = rd16(c + 30);
        T_EQ_INT(xl, 28);
        const unsigned char *x = c + 46 + nl;
        T_EQ_INT(rd16(x), 1);
        T_EQ_INT(rd16(x + 2), 24);
        uint64_t us = rd64(x + 4), cs = rd64(x + 12), off = rd64(x + 20);
        const unsigned char *l = z + off;
        T_EQ_INT(rd32(l), 0x04034b50);
        T_EQ_INT(rd32(l + 18), 0xFFFFFFFFu);
        T_EQ_INT(rd32(l + 22), 0xFFFFFFFFu);
        unsigned lnl = rd16(l + 26), lxl = rd16(l + 28);
        const unsigned char *lx = l + 30 + lnl;
        T_EQ_INT(rd16(lx), 1);
        T_EQ_INT(rd16(lx + 2), 16);
        T_EQ_INT(rd64(lx + 4), us);
        T_EQ_INT(rd64(lx + 12), cs);
        T_EQ_INT(rd16(lx + 20), 0xD935);
        T_EQ_INT((off + 30 + lnl + lxl) % SD_ZIP_ALIGN, 0);
        c += 46 + nl + xl;
    }
    T_CHECK(c == z + ro);
    /* libarchive (the latent reader) reads it */
    sd_latent_file lf;
    int rc = sd_latent_read_memory(z, n, "z64.npz", NULL, &lf);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_CHECK(lf.latents && lf.latents[0] == -3.0f && lf.latents[23] == 8.5f);
        T_CHECK(lf.original_size[0] == 640 && lf.original_size[1] == 480 && lf.crop_ltrb[3] == 4);
        sd_latent_free(&lf);
    }
    /* Python's zipfile (stored members only: it has no zstd) */
    free(zp);
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    zw.force_zip64 = 1;
    sd_zip_part p = {"hello zip64", 11};
    rc = sd_zip_add(&zw, "a/hello.txt", SD_ZIP_STORE, &p, 1);
    if (!rc) rc = sd_zip_add(&zw, "a/empty", SD_ZIP_STORE, NULL, 0);
    void *out = NULL;
    if (!rc) rc = sd_zip_writer_finish(&zw, &out, &n);
    sd_zip_writer_free(&zw);
    T_EQ_INT(rc, SD_OK);
    const char *path = t_path("test_zip64.zip");
    T_CHECK(out && !t_write_file(path, out, n));
    free(out);
    if (system("python3 -c 'import zipfile' > /dev/null 2>&1") != 0) {
        T_SKIP("test_zip64_python_zipfile", "no python3");
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); "
             "assert z.testzip() is None; assert z.read(\"a/hello.txt\") == b\"hello zip64\"; "
             "assert [i.file_size for i in z.infolist()] == [11, 0]' '%s'", path);
    T_EQ_INT(system(cmd), 0);
}

/* Offsets past 4 GiB without writing 4 GiB: the writer's position starts just below 4 GiB (the
 * memory buffer holds only what follows, so only the records are checked). */
static void test_zip64_offsets_needed(void)
{
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    const uint64_t base = 0xFFFFFFC0u;
    zw.pos = base;
    sd_zip_part p = {"0123456789abcdef0123456789abcdef", 32};
    int rc = sd_zip_add(&zw, "a", SD_ZIP_STORE, &p, 1);   /* starts below 4 GiB, ends above */
    if (!rc) rc = sd_zip_add(&zw, "b", SD_ZIP_STORE, &p, 1);  /* starts above */
    void *zp = NULL;
    size_t n = 0;
    if (!rc) rc = sd_zip_writer_finish(&zw, &zp, &n);
    sd_zip_writer_free(&zw);
    T_EQ_INT(rc, SD_OK);
    if (!zp) return;
    const unsigned char *z = zp;
    /* no local header has a Zip64 extra (sizes are small) */
    T_EQ_INT(rd32(z), 0x04034b50);
    T_EQ_INT(rd32(z + 18), 32);
    T_EQ_INT(rd16(z + 30 + 1), 0xD935);
    const unsigned char *eocd = z + n - 22, *loc = eocd - 20;
    T_EQ_INT(rd32(eocd), 0x06054b50);
    T_EQ_INT(rd16(eocd + 8), 2);                 /* the count fits */
    T_EQ_INT(rd32(eocd + 16), 0xFFFFFFFFu);      /* the offset does not */
    T_EQ_INT(rd32(loc), 0x07064b50);
    if (rd32(loc) != 0x07064b50 || rd64(loc + 8) < base || rd64(loc + 8) - base + 56 > n) {
        free(zp);
        return;
    }
    const unsigned char *rec = z + (rd64(loc + 8) - base);
    T_EQ_INT(rd32(rec), 0x06064b50);
    T_EQ_INT(rd64(rec + 32), 2);
    uint64_t cd_off = rd64(rec + 48);
    T_CHECK(cd_off > 0xFFFFFFFFu && cd_off - base + 2 * 47 + 12 <= n);
    if (cd_off < base || cd_off - base + 2 * 47 + 12 > n) {
        free(zp);
        return;
    }
    T_EQ_INT(rd32(eocd + 12), rd64(rec + 40));   /* the size fits: given in both */
    const unsigned char *c = z + (cd_off - base);
    /* "a": offset below 4 GiB, no extra; "b": only its offset in a Zip64 extra */
    T_EQ_INT(rd32(c), 0x02014b50);
    T_EQ_INT(rd16(c + 30), 0);
    T_EQ_INT(rd32(c + 42), base);
    T_EQ_INT(rd16(c + 6), 20);
    c += 46 + 1;
    T_EQ_INT(rd32(c), 0x02014b50);
    T_EQ_INT(rd16(c + 6), 45);
    T_EQ_INT(rd32(c + 20), 32);
    T_EQ_INT(rd32(c + 42), 0xFFFFFFFFu);
    T_EQ_INT(rd16(c + 30), 12);
    T_EQ_INT(rd16(c + 47), 1);
    T_EQ_INT(rd16(c + 49), 8);
    uint64_t boff = rd64(c + 51);
    T_CHECK(boff > 0xFFFFFFFFu && boff - base + 4 <= n && rd32(z + (boff - base)) == 0x04034b50);
    free(zp);
}

/* 65535 members or more: a real Zip64 end record (read back by libarchive and Python). */
static void test_zip64_many_members(void)
{
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    int rc = SD_OK;
    char name[32];
    sd_zip_part p = {"x", 1};
    for (int i = 0; i < 65536 && !rc; i++) {
        snprintf(name, sizeof name, "m%d", i);
        rc = sd_zip_add(&zw, name, SD_ZIP_STORE, &p, 1);
    }
    void *zp = NULL;
    size_t n = 0;
    if (!rc) rc = sd_zip_writer_finish(&zw, &zp, &n);
    sd_zip_writer_free(&zw);
    T_EQ_INT(rc, SD_OK);
    if (!zp) return;
    const unsigned char *z = zp, *eocd = z + n - 22;
    T_EQ_INT(rd16(eocd + 8), 0xFFFF);
    T_CHECK(rd32(eocd + 12) != 0xFFFFFFFFu && rd32(eocd + 16) != 0xFFFFFFFFu);
    T_EQ_INT(rd32(eocd - 20), 0x07064b50);
    if (rd32(eocd - 20) == 0x07064b50 && rd64(eocd - 20 + 8) + 56 <= n)
        T_EQ_INT(rd64(z + rd64(eocd - 20 + 8) + 32), 65536);
    const char *path = t_path("test_zip64_many.zip");
    T_CHECK(!t_write_file(path, zp, n));
    free(zp);
    if (system("python3 -c 'import zipfile' > /dev/null 2>&1") != 0) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); "
             "i = z.infolist(); assert len(i) == 65536 and z.read(\"m65535\") == b\"x\"' '%s'", path);
    T_EQ_INT(system(cmd), 0);
}

int main(void)
{
    T_RUN(test_zip_plain_unchanged);
    T_RUN(test_zip64_forced_layout);
    T_RUN(test_zip64_offsets_needed);
    T_RUN(test_zip64_many_members);
    T_DONE();
}
