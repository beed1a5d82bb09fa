/* Philox4x32-10; see rng.h for the stream layout and value kinds. */
#include "base/rng.h"
#include "base/error.h"

#include <math.h>
#include <string.h>
#include <omp.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

#define PAR_MIN 65536   /* values per fill below which no threads are used */

void sd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

sd_rng sd_rng_key(uint64_t seed, uint32_t step, uint32_t sample, uint32_t purpose)
{
    sd_rng r;
    r.key[0] = (uint32_t)seed;
    r.key[1] = (uint32_t)(seed >> 32);
    r.ctr[0] = sample;
    r.ctr[1] = step;
    r.ctr[2] = purpose;
    r.pos = 0;
    return r;
}

static inline void block(const sd_rng *r, uint64_t b, uint32_t out[4])
{
    uint32_t c[4] = { (uint32_t)b, r->ctr[0], r->ctr[1], r->ctr[2] };
    sd_philox4x32_10(c, r->key, out);
}

static inline float u32_to_uniform(uint32_t x)
{
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

static inline void box_muller(uint32_t a, uint32_t b, float *z0, float *z1)
{
    double u1 = ((double)a + 0.5) * (1.0 / 4294967296.0);
    double u2 = (double)b * (1.0 / 4294967296.0);
    double rad = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925286766559 * u2;
    *z0 = (float)(rad * cos(th));
    *z1 = (float)(rad * sin(th));
}

static inline void block_normals(const sd_rng *r, uint64_t b, float z[4])
{
    uint32_t w[4];
    block(r, b, w);
    box_muller(w[0], w[1], &z[0], &z[1]);
    box_muller(w[2], w[3], &z[2], &z[3]);
}

enum { K_U32, K_UNIFORM, K_NORMAL };

/* Four values of one kind from block b, written as 16 bytes to dst (any alignment). */
static void block_values(const sd_rng *r, int kind, uint64_t b, void *dst)
{
    uint32_t w[4];
    float f[4];
    switch (kind) {
    case K_U32:
        block(r, b, w);
        memcpy(dst, w, sizeof w);
        return;
    case K_UNIFORM:
        block(r, b, w);
        for (int k = 0; k < 4; k++) f[k] = u32_to_uniform(w[k]);
        break;
    default:
        block_normals(r, b, f);
        break;
    }
    memcpy(dst, f, sizeof f);
}

/* Generic fill: values [offset, offset+n) of one kind, 4-byte elements. Whole blocks are written
 * straight into out; the partial blocks at both ends go through a temporary. */
static int fill(const sd_rng *r, int kind, uint64_t offset, void *outv, size_t n)
{
    if (n == 0) return SD_OK;
    if (offset > SD_RNG_MAX_INDEX || n > SD_RNG_MAX_INDEX - offset)
        return sd_err(SD_ERANGE, "rng: values %llu..%llu pass the stream length 2^34",
                      (unsigned long long)offset, (unsigned long long)(offset + n - 1));
    unsigned char *out = outv;   /* 4-byte elements (float or uint32_t), copied as bytes */
    uint64_t end = offset + n;
    uint64_t b0 = offset / 4, b1 = (end + 3) / 4;                  /* blocks [b0, b1) */
    uint64_t first_full = (offset + 3) / 4, last_full = end / 4;   /* full blocks */
    int64_t nfull = last_full > first_full ? (int64_t)(last_full - first_full) : 0;
    uint64_t ends[2] = { b0, b1 - 1 };
    for (int e = 0; e < (b1 - 1 > b0 ? 2 : 1); e++) {
        uint64_t b = ends[e];
        if (nfull && b >= first_full && b < last_full) continue;
        unsigned char tmp[16];
        block_values(r, kind, b, tmp);
        for (int k = 0; k < 4; k++) {
            uint64_t i = b * 4 + (uint64_t)k;
            if (i >= offset && i < end) memcpy(out + (i - offset) * 4, tmp + k * 4, 4);
        }
    }
    int par = n >= PAR_MIN && !omp_in_parallel();
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t j = 0; j < nfull; j++) {
        uint64_t b = first_full + (uint64_t)j;
        block_values(r, kind, b, out + (b * 4 - offset) * 4);
    }
    return SD_OK;
}

int sd_rng_fill_u32(const sd_rng *r, uint64_t offset, uint32_t *out, size_t n)
{
    return fill(r, K_U32, offset, out, n);
}

int sd_rng_fill_uniform(const sd_rng *r, uint64_t offset, float *out, size_t n)
{
    return fill(r, K_UNIFORM, offset, out, n);
}

int sd_rng_fill_normal(const sd_rng *r, uint64_t offset, float *out, size_t n)
{
    return fill(r, K_NORMAL, offset, out, n);
}

uint32_t sd_rng_u32_at(const sd_rng *r, uint64_t i)
{
    uint32_t w[4];
    block(r, i / 4, w);
    return w[i % 4];
}

float sd_rng_uniform_at(const sd_rng *r, uint64_t i)
{
    return u32_to_uniform(sd_rng_u32_at(r, i));
}

float sd_rng_normal_at(const sd_rng *r, uint64_t i)
{
    float z[4];
    block_normals(r, i / 4, z);
    return z[i % 4];
}

uint64_t sd_rng_below_at(const sd_rng *r, uint64_t i, uint64_t n)
{
    uint64_t x = (uint64_t)sd_rng_u32_at(r, 2 * i) | (uint64_t)sd_rng_u32_at(r, 2 * i + 1) << 32;
    return (uint64_t)(((unsigned __int128)x * n) >> 64);
}

uint32_t sd_rng_next_u32(sd_rng *r) { return sd_rng_u32_at(r, r->pos++); }
float sd_rng_next_uniform(sd_rng *r) { return sd_rng_uniform_at(r, r->pos++); }
float sd_rng_next_normal(sd_rng *r) { return sd_rng_normal_at(r, r->pos++); }

uint64_t sd_rng_next_below(sd_rng *r, uint64_t n)
{
    /* values 2*(pos/2)... would collide with odd cursors; use the pair at [pos, pos+1] */
    uint64_t x = (uint64_t)sd_rng_u32_at(r, r->pos) | (uint64_t)sd_rng_u32_at(r, r->pos + 1) << 32;
    r->pos += 2;
    return (uint64_t)(((unsigned __int128)x * n) >> 64);
}

void sd_rng_shuffle_i64(const sd_rng *r, int64_t *v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)sd_rng_below_at(r, i - 1, i);
        int64_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}
