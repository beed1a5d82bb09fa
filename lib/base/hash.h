/* SHA-256 (FIPS 180-4) and CRC-32 (zip/zlib polynomial 0xEDB88320). */
#ifndef SD_BASE_HASH_H
#define SD_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Streaming state (the type is sd_sha256_ctx: C forbids a typedef and a function both named
 * sd_sha256). */
typedef struct sd_sha256_ctx {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} sd_sha256_ctx;

void sd_sha256_init(sd_sha256_ctx *s);
void sd_sha256_update(sd_sha256_ctx *s, const void *data, size_t n);
void sd_sha256_final(sd_sha256_ctx *s, uint8_t out[32]);
void sd_sha256(const void *data, size_t n, uint8_t out[32]);
/* Lower-case hex of `n` bytes into out (2n+1 bytes). */
void sd_hex(const uint8_t *bytes, size_t n, char *out);
/* SHA-256 of a whole file, as 64 hex chars + NUL. */
int sd_sha256_file(const char *path, char out_hex[65]);

/* CRC-32 as zip uses it; start with crc = 0 and chain: crc = sd_crc32(crc, p, n). */
uint32_t sd_crc32(uint32_t crc, const void *data, size_t n);

#endif
