/* SHA-256 against the FIPS 180-4 / NIST example vectors, CRC-32 check value, chaining. */
#include "base/error.h"
#include "base/hash.h"
#include "test.h"

#include <stdint.h>

static void hex_of(const void *d, size_t n, char out[65])
{
    uint8_t h[32];
    sd_sha256(d, n, h);
    sd_hex(h, 32, out);
}

static void test_sha256_nist(void)
{
    char hex[65];
    hex_of("", 0, hex);
    T_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, hex);
    T_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    T_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(m896, strlen(m896), hex);
    T_EQ_STR(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_sha256_million_a(void)
{
    sd_sha256_ctx s;
    uint8_t h[32];
    char hex[65];
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    sd_sha256_init(&s);
    for (int i = 0; i < 1000; i++) sd_sha256_update(&s, chunk, sizeof chunk);
    sd_sha256_final(&s, h);
    sd_hex(h, 32, hex);
    T_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* the same in one call */
    char *big = malloc(1000000);
    memset(big, 'a', 1000000);
    hex_of(big, 1000000, hex);
    T_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(big);
}

/* Feeding any split of the message gives the digest of the whole; covers the padding edge
 * lengths 55, 56, 63, 64, 65. */
static void test_sha256_chaining(void)
{
    uint8_t msg[300];
    for (int i = 0; i < 300; i++) msg[i] = (uint8_t)(i * 7 + 3);
    size_t lens[] = {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        size_t n = lens[li];
        uint8_t ref[32];
        sd_sha256(msg, n, ref);
        for (size_t split = 0; split <= n; split += (n > 20 ? 7 : 1)) {
            sd_sha256_ctx s;
            uint8_t h[32];
            sd_sha256_init(&s);
            sd_sha256_update(&s, msg, split);
            sd_sha256_update(&s, msg + split, 0);
            sd_sha256_update(&s, msg + split, n - split);
            sd_sha256_final(&s, h);
            T_CHECKF(memcmp(h, ref, 32) == 0, "len %zu split %zu", n, split);
        }
        /* byte by byte */
        sd_sha256_ctx s;
        uint8_t h[32];
        sd_sha256_init(&s);
        for (size_t i = 0; i < n; i++) sd_sha256_update(&s, msg + i, 1);
        sd_sha256_final(&s, h);
        T_CHECKF(memcmp(h, ref, 32) == 0, "len %zu bytewise", n);
    }
    /* 55/56/64 'a's: independently known digests */
    char hex[65], a[64];
    memset(a, 'a', sizeof a);
    hex_of(a, 55, hex);
    T_EQ_STR(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    hex_of(a, 56, hex);
    T_EQ_STR(hex, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    hex_of(a, 64, hex);
    T_EQ_STR(hex, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

static void test_sha256_file(void)
{
    const char *p = t_path("hash_abc.bin");
    T_EQ_INT(t_write_file(p, "abc", 3), 0);
    char hex[65];
    T_EQ_INT(sd_sha256_file(p, hex), SD_OK);
    T_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* a file larger than the internal read buffer */
    size_t n = 200000;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)(i * 31);
    p = t_path("hash_big.bin");
    T_EQ_INT(t_write_file(p, big, n), 0);
    char ref[65];
    hex_of(big, n, ref);
    T_EQ_INT(sd_sha256_file(p, hex), SD_OK);
    T_EQ_STR(hex, ref);
    free(big);
    p = t_path("hash_empty.bin");
    T_EQ_INT(t_write_file(p, "", 0), 0);
    T_EQ_INT(sd_sha256_file(p, hex), SD_OK);
    T_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* errors */
    p = t_path("hash_missing.bin");
    T_EQ_INT(sd_sha256_file(p, hex), SD_ENOTFOUND);
    T_CHECK(strstr(sd_errmsg(), "hash_missing.bin: No such file or directory") != NULL);
    T_EQ_INT(sd_sha256_file(t_tmpdir(), hex), SD_EIO);
    T_CHECK(strstr(sd_errmsg(), "Is a directory") != NULL);
}

static void test_hex(void)
{
    uint8_t b[] = {0x00, 0x01, 0xab, 0xff};
    char out[9];
    sd_hex(b, 4, out);
    T_EQ_STR(out, "0001abff");
    sd_hex(b, 0, out);
    T_EQ_STR(out, "");
}

static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    return ~crc;
}

static void test_crc32(void)
{
    T_EQ_INT(sd_crc32(0, "123456789", 9), 0xCBF43926u);
    T_EQ_INT(sd_crc32(0, "", 0), 0);
    T_EQ_INT(sd_crc32(0, "a", 1), 0xE8B7BE43u);
    T_EQ_INT(sd_crc32(0, "The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
    /* chaining: every split and every alignment equals the bitwise reference */
    uint8_t buf[1100];
    for (int i = 0; i < 1100; i++) buf[i] = (uint8_t)(i * 131 + (i >> 3));
    for (size_t off = 0; off < 9; off++) {
        for (size_t n = 0; n < 80; n++) {
            uint32_t ref = crc_bitwise(0, buf + off, n);
            T_CHECKF(sd_crc32(0, buf + off, n) == ref, "off %zu n %zu", off, n);
        }
    }
    uint32_t whole = sd_crc32(0, buf, sizeof buf);
    T_EQ_INT(whole, crc_bitwise(0, buf, sizeof buf));
    for (size_t split = 0; split <= sizeof buf; split += 37) {
        uint32_t c = sd_crc32(0, buf, split);
        c = sd_crc32(c, buf + split, sizeof buf - split);
        T_CHECKF(c == whole, "split %zu", split);
    }
    uint32_t c = 0;
    for (size_t i = 0; i < sizeof buf; i++) c = sd_crc32(c, buf + i, 1);
    T_EQ_INT(c, whole);
}

int main(void)
{
    T_RUN(test_sha256_nist);
    T_RUN(test_sha256_million_a);
    T_RUN(test_sha256_chaining);
    T_RUN(test_sha256_file);
    T_RUN(test_hex);
    T_RUN(test_crc32);
    T_DONE();
}
