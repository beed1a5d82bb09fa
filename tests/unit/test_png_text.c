/* io/png_text: tEXt/iTXt insertion (PIL's add_text rules) and reading; malformed streams. */
#include <stdint.h>

#include "base/error.h"
#include "base/hash.h"
#include "io/image.h"
#include "io/png_text.h"
#include "test.h"

static int make_png(uint8_t **png, size_t *n)
{
    sd_image im;
    if (sd_image_alloc(&im, 5, 3, 3)) return -1;
    for (int i = 0; i < 5 * 3 * 3; i++) im.px[i] = (uint8_t)(i * 7);
    int rc = sd_image_encode_png(&im, png, n);
    sd_image_free(&im);
    return rc;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* chunk types in order, "IHDR,tEXt,IDAT,IEND" */
static void chunk_list(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t off = 8, o = 0;
    out[0] = 0;
    while (off + 12 <= n && o + 6 < cap) {
        uint32_t l = rd32(p + off);
        if (o) out[o++] = ',';
        memcpy(out + o, p + off + 4, 4);
        o += 4;
        out[o] = 0;
        off += 12 + (size_t)l;
    }
}

static void test_insert_and_read(void)
{
    uint8_t *png = NULL, *out = NULL;
    size_t n = 0, on = 0;
    T_CHECK(make_png(&png, &n) == 0);
    sd_png_text t[3] = { { "parameters", "a cat\nNegative prompt: x\nSteps: 20, Seed: 1" },
                         { "Comment", "caf\xc3\xa9" },                 /* Latin-1 → tEXt */
                         { "prompt", "\xe7\x8c\xab \xe2\x98\x95" } };  /* not Latin-1 → iTXt */
    T_EQ_INT(sd_png_add_text(png, n, t, 3, &out, &on), SD_OK);
    char list[256];
    chunk_list(out, on, list, sizeof list);
    T_CHECKF(!strncmp(list, "IHDR,", 5) && strstr(list, "tEXt,tEXt,iTXt,IDAT") && strstr(list, ",IEND"), "%s", list);
    /* tEXt holds Latin-1 bytes: "Comment\0caf\xe9" */
    const uint8_t *c = memmem(out, on, "tEXtComment", 11);
    T_CHECK(c && rd32(c - 4) == 12 && !memcmp(c + 4, "Comment\0caf\xe9", 12));
    /* iTXt: keyword\0 0 0 \0 \0 UTF-8 */
    const uint8_t *it = memmem(out, on, "iTXtprompt", 10);
    T_CHECK(it && !memcmp(it + 4, "prompt\0\0\0\0\0\xe7\x8c\xab \xe2\x98\x95", 18));
    /* CRCs valid and the image decodes the same */
    sd_image a, b;
    T_EQ_INT(sd_image_decode(png, n, "a", SD_ALPHA_DROP, &a, NULL), SD_OK);
    T_EQ_INT(sd_image_decode(out, on, "b", SD_ALPHA_DROP, &b, NULL), SD_OK);
    T_CHECK(a.w == b.w && a.h == b.h && !memcmp(a.px, b.px, 45));
    sd_image_free(&a);
    sd_image_free(&b);
    sd_png_text_list l;
    T_EQ_INT(sd_png_read_text(out, on, &l), SD_OK);
    T_EQ_INT(l.n, 3);
    if (l.n == 3) {
        T_EQ_STR(l.keys[0], "parameters");
        T_EQ_STR(l.values[0], t[0].value);
        T_EQ_STR(sd_png_text_get(&l, "Comment"), "caf\xc3\xa9");
        T_EQ_STR(sd_png_text_get(&l, "prompt"), t[2].value);
        T_CHECK(sd_png_text_get(&l, "nothing") == NULL);
    }
    sd_png_text_list_free(&l);
    /* deterministic */
    uint8_t *out2 = NULL;
    size_t on2 = 0;
    T_EQ_INT(sd_png_add_text(png, n, t, 3, &out2, &on2), SD_OK);
    T_CHECK(on2 == on && !memcmp(out, out2, on));
    free(out2);
    /* no text: the stream unchanged */
    T_EQ_INT(sd_png_add_text(png, n, NULL, 0, &out2, &on2), SD_OK);
    T_CHECK(on2 == n && !memcmp(out2, png, n));
    free(out2);
    free(out);
    free(png);
}

static void test_bad_keys_values(void)
{
    uint8_t *png = NULL, *out = NULL;
    size_t n = 0, on = 0;
    T_CHECK(make_png(&png, &n) == 0);
    const char *bad_keys[] = { "", " lead", "trail ", "dou  ble", "\xe7\x8c\xab", "tab\tkey",
                               "0123456789012345678901234567890123456789012345678901234567890123456789012345678901" };
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        sd_png_text t = { bad_keys[i], "v" };
        T_EQ_INT(sd_png_add_text(png, n, &t, 1, &out, &on), SD_EINVAL);
        T_CHECK(out == NULL);
    }
    sd_png_text ok79 = { "012345678901234567890123456789012345678901234567890123456789012345678901234567x", "v" };
    T_EQ_INT(sd_png_add_text(png, n, &ok79, 1, &out, &on), SD_OK);
    free(out);
    sd_png_text badv = { "k", "a\xff" };
    T_EQ_INT(sd_png_add_text(png, n, &badv, 1, &out, &on), SD_EINVAL);
    sd_png_text surrogate = { "k", "\xed\xa0\x80" };
    T_EQ_INT(sd_png_add_text(png, n, &surrogate, 1, &out, &on), SD_EINVAL);
    free(png);
}

static void test_malformed(void)
{
    uint8_t *png = NULL, *out = NULL;
    size_t n = 0, on = 0;
    T_CHECK(make_png(&png, &n) == 0);
    sd_png_text t = { "k", "v" };
    sd_png_text_list l;
    /* not a PNG */
    T_EQ_INT(sd_png_add_text((const uint8_t *)"hello", 5, &t, 1, &out, &on), SD_EFORMAT);
    T_EQ_INT(sd_png_read_text((const uint8_t *)"hello", 5, &l), SD_EFORMAT);
    /* every truncation fails cleanly (after the IDAT the insertion point is known, reading needs IEND) */
    for (size_t k = 0; k < n; k++) {
        int rc = sd_png_read_text(png, k, &l);
        T_CHECKF(rc == SD_EFORMAT, "truncated at %zu: %d", k, rc);
        if (!rc) sd_png_text_list_free(&l);
    }
    /* a flipped byte in a chunk: CRC mismatch */
    uint8_t *cp = malloc(n);
    memcpy(cp, png, n);
    cp[20] ^= 1;
    T_EQ_INT(sd_png_add_text(cp, n, &t, 1, &out, &on), SD_EFORMAT);
    T_CHECKF(strstr(sd_errmsg(), "CRC") != NULL, "%s", sd_errmsg());
    /* huge chunk length */
    memcpy(cp, png, n);
    cp[8] = 0x7f;
    T_EQ_INT(sd_png_read_text(cp, n, &l), SD_EFORMAT);
    free(cp);
    /* a zTXt chunk (zlib "v") is read; a broken one is an error */
    static const uint8_t z[] = { 0x78, 0x9c, 0x2b, 0x03, 0x00, 0x00, 0x77, 0x00, 0x77 };
    uint8_t chunk[64];
    size_t cl = 0;
    memcpy(chunk + 4, "zTXtkey\0\0", 9);
    memcpy(chunk + 13, z, sizeof z);
    cl = 9 + sizeof z;
    chunk[0] = 0, chunk[1] = 0, chunk[2] = 0, chunk[3] = (uint8_t)(cl - 4);
    uint32_t crc = sd_crc32(0, chunk + 4, cl);
    chunk[4 + cl] = (uint8_t)(crc >> 24), chunk[5 + cl] = (uint8_t)(crc >> 16), chunk[6 + cl] = (uint8_t)(crc >> 8),
    chunk[7 + cl] = (uint8_t)crc;
    size_t ihdr_end = 8 + 25;
    uint8_t *zp = malloc(n + cl + 8);
    memcpy(zp, png, ihdr_end);
    memcpy(zp + ihdr_end, chunk, cl + 8);
    memcpy(zp + ihdr_end + cl + 8, png + ihdr_end, n - ihdr_end);
    int rc = sd_png_read_text(zp, n + cl + 8, &l);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(l.n, 1);
        if (l.n) T_EQ_STR(sd_png_text_get(&l, "key"), "v");
        sd_png_text_list_free(&l);
    }
    free(zp);
    free(png);
}

int main(void)
{
    T_RUN(test_insert_and_read);
    T_RUN(test_bad_keys_values);
    T_RUN(test_malformed);
    T_DONE();
}
