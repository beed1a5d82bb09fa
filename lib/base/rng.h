/* Philox4x32-10 counter-based random numbers (Salmon, Moraes, Dror, Shaw: "Parallel random
 * numbers: as easy as 1, 2, 3", SC'11; the generator of Random123 and curand).
 *
 * A stream is identified by a 64-bit key (the user's seed) and a 96-bit stream id made of
 * (step, sample, purpose). Inside a stream, value number i is a pure function of the key, the
 * stream id and i: nothing depends on thread count, chunking or call order, so a resumed training
 * run draws exactly the numbers an uninterrupted one would have drawn.
 *
 * Counter layout of one Philox block (4 x 32-bit words, each block gives 4 x 32 random bits):
 *   ctr[0] = block index inside the stream (values 4b .. 4b+3 come from block b)
 *   ctr[1] = sample, ctr[2] = step, ctr[3] = purpose
 *   key    = { seed & 0xffffffff, seed >> 32 }
 * so one stream holds 2^34 values (SD_RNG_MAX_INDEX); fills beyond it fail with SD_ERANGE.
 *
 * Value kinds (element i of a fill uses block i/4):
 *   u32      word i%4 of block i/4
 *   uniform  (u32 >> 8) * 2^-24: 24-bit float in [0, 1), exactly representable
 *   normal   Box–Muller on the word pairs (0,1) and (2,3) of block i/4, in double, rounded to
 *            float: u1 = (w0 + 0.5) 2^-32 in (0,1), u2 = w1 2^-32, r = sqrt(-2 ln u1),
 *            z[4b] = r cos(2 pi u2), z[4b+1] = r sin(2 pi u2) (same for words 2,3). |z| < 6.7.
 * The kinds share blocks, so uniforms and normals drawn with the same indices from one stream are
 * correlated: give each use its own purpose (or disjoint index ranges).
 *
 * Fills of more than 64k values run on the OpenMP team unless already inside a parallel region.
 */
#ifndef SD_BASE_RNG_H
#define SD_BASE_RNG_H

#include <stddef.h>
#include <stdint.h>

#define SD_RNG_MAX_INDEX (UINT64_C(1) << 34)

/* Purposes used across the suite; numbers >= SD_RNG_USER are free for tools. Never renumber:
 * the values are part of the reproducibility contract of saved runs. */
enum sd_rng_purpose {
    SD_RNG_NOISE = 1,          /* diffusion noise epsilon */
    SD_RNG_TIMESTEP = 2,       /* timestep sampling */
    SD_RNG_NOISE_OFFSET = 3,   /* noise offset / its random strength */
    SD_RNG_MULTIRES = 4,       /* pyramid noise */
    SD_RNG_IP_NOISE = 5,       /* input perturbation noise */
    SD_RNG_SHUFFLE = 6,        /* dataset order */
    SD_RNG_CAPTION = 7,        /* caption shuffle / tag dropout */
    SD_RNG_AUGMENT = 8,        /* flips, random crops, color aug */
    SD_RNG_DROPOUT = 9,        /* network / neuron dropout */
    SD_RNG_INIT = 10,          /* parameter initialisation */
    SD_RNG_SAMPLER = 11,       /* sampling (image generation) noise */
    SD_RNG_LATENT = 12,        /* VAE latent_dist.sample() */
    SD_RNG_DYLORA = 13,        /* DyLoRA's trained rank rows per module call */
    SD_RNG_USER = 1000,
};

typedef struct sd_rng {
    uint32_t key[2];   /* seed */
    uint32_t ctr[3];   /* sample, step, purpose: counter words 1..3 */
    uint64_t pos;      /* cursor for the sd_rng_next_* functions */
} sd_rng;

/* The bare bijection: out = Philox4x32-10(ctr, key). */
void sd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Stream for (seed, step, sample, purpose); the cursor starts at 0. */
sd_rng sd_rng_key(uint64_t seed, uint32_t step, uint32_t sample, uint32_t purpose);

/* Fill out[0..n) with values offset .. offset+n-1 of the stream. SD_ERANGE if the range passes
 * SD_RNG_MAX_INDEX. The cursor is not used. */
int sd_rng_fill_u32(const sd_rng *r, uint64_t offset, uint32_t *out, size_t n);
int sd_rng_fill_uniform(const sd_rng *r, uint64_t offset, float *out, size_t n);
int sd_rng_fill_normal(const sd_rng *r, uint64_t offset, float *out, size_t n);

/* Single values by index (index < SD_RNG_MAX_INDEX; larger indices wrap). */
uint32_t sd_rng_u32_at(const sd_rng *r, uint64_t i);
float sd_rng_uniform_at(const sd_rng *r, uint64_t i);
float sd_rng_normal_at(const sd_rng *r, uint64_t i);
/* Integer in [0, n) from the 64 bits of values 2i and 2i+1 (multiply-shift; bias < n / 2^64).
 * n == 0 gives 0. */
uint64_t sd_rng_below_at(const sd_rng *r, uint64_t i, uint64_t n);

/* Cursor versions: use index r->pos and advance it by one (sd_rng_next_below uses the values
 * pos and pos+1 and advances by two). */
uint32_t sd_rng_next_u32(sd_rng *r);
float sd_rng_next_uniform(sd_rng *r);
float sd_rng_next_normal(sd_rng *r);
uint64_t sd_rng_next_below(sd_rng *r, uint64_t n);

/* Fisher–Yates shuffle of v[0..n) (swap i with sd_rng_below_at(r, i, i + 1), i = n-1 .. 1). */
void sd_rng_shuffle_i64(const sd_rng *r, int64_t *v, size_t n);

#endif
