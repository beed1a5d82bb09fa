/* A CPU emulation of the small part of CUDA C++ that lib/tensor/cuda/flash_attn.cuh uses, so that g++
 * compiles the kernel header as plain C++ and tests/emu/ runs its kernels on the CPU.
 *
 *   - __global__ / __device__ / __host__ / __forceinline__ / __launch_bounds__ vanish; __shared__
 *     becomes `static`: blocks run one at a time, so a function-static is the block's shared
 *     memory. Dynamic shared memory (SD_FA_DYNAMIC_SMEM) is a buffer of exactly the launch's size.
 *   - threadIdx/blockIdx/blockDim/gridDim are thread_local; every block is run by
 *     blockDim.x·y·z real pthreads. __syncthreads() is a barrier of the block's threads,
 *     __syncwarp() one of the warp (32 consecutive threads), __shfl_xor_sync() goes through a slot
 *     array of the warp between two warp barriers.
 *   - __nv_bfloat16 / __half: 16-bit storage with round-to-nearest-even conversions (fp16 with
 *     subnormals, overflow to infinity and NaN kept).
 *   - nvcuda::wmma: fragments of m16n16k16 (bf16/half operands, float accumulator) as the CUDA C++
 *     Programming Guide specifies them, without any element layout: every emulated lane holds the
 *     whole 16×16 tile. The operations that write (fill_fragment, store_matrix_sync) are
 *     warp-collective: all lanes of the warp meet at a warp barrier on entry (the PTX .sync
 *     semantics); store_matrix_sync then writes the tile with each lane writing a disjoint 1/32
 *     share (race-free), with no barrier after it, so a lane that reads the stored tile without a
 *     __syncwarp() races as it would on a GPU. load_matrix_sync (reads the tile, row or column
 *     major, ldm) and mma_sync (D = A·B + C, fp32 products and sums in k order) are lane-local in
 *     effect and take no barrier: a barrier there would order memory that the GPU does not order
 *     (hiding a missing __syncwarp() before a load), and would cost most of the run time (2 CPUs
 *     for 64-128 threads). The Programming Guide's preconditions are checked and abort: pointers
 *     256-bit aligned, ldm a multiple of 8 elements for 16-bit types and of 4 for float, a fragment
 *     used before it was filled.
 *   - emu_launch(grid, block, smem_bytes, kernel, args...) runs the blocks in order (the same
 *     blockDim.x·y·z threads run every block, block barriers between blocks).
 * Only one launch at a time per process. */
#ifndef SD_TESTS_CUDA_EMU_H
#define SD_TESTS_CUDA_EMU_H

#include <pthread.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)
#define __restrict__ __restrict

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
typedef dim3 uint3;

extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

[[noreturn]] static inline void emu_die(const char *what)
{
    fprintf(stderr, "cuda_emu: %s\n", what);
    fflush(stderr);
    abort();
}

/* ---- the running block ---- */

/* A barrier of n threads: spin briefly, then sleep on a futex of the generation counter (the test
 * machines have 2 CPUs for 64-128 threads: pthread barriers and yield loops spent most of the time
 * in the kernel). */
static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned), "futex word");
struct emu_barrier {
    std::atomic<unsigned> count{ 0 }, gen{ 0 };
    unsigned n = 0;
    void wait()
    {
        unsigned g = gen.load(std::memory_order_acquire);
        if (count.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
            count.store(0, std::memory_order_relaxed);
            gen.fetch_add(1, std::memory_order_release);
            syscall(SYS_futex, (unsigned *)&gen, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
            return;
        }
        for (int spin = 0; gen.load(std::memory_order_acquire) == g; spin++)
            if (spin > 64) syscall(SYS_futex, (unsigned *)&gen, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
    }
};

struct emu_block {
    unsigned nthreads, nwarps;
    emu_barrier bar;
    emu_barrier *warp_bar;
    unsigned *warp_size;      /* threads in each warp (the last may be partial) */
    float *shfl;              /* [nwarps][32] slots of __shfl_xor_sync */
    unsigned char *dyn_smem;  /* dynamic shared memory of the launch */
    size_t dyn_bytes;
};
extern emu_block *emu_cur;
extern thread_local unsigned emu_tid;  /* linear thread index in the block */

static inline void __syncthreads(void) { emu_cur->bar.wait(); }
static inline void emu_warp_barrier(void) { emu_cur->warp_bar[emu_tid / 32].wait(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    if (mask != 0xffffffffu) emu_die("__syncwarp: only the full mask is emulated");
    emu_warp_barrier();
}
static inline float __shfl_xor_sync(unsigned mask, float v, int lanemask, int width = 32)
{
    if (mask != 0xffffffffu || width != 32) emu_die("__shfl_xor_sync: only the full mask and width 32 are emulated");
    unsigned lane = emu_tid % 32, w = emu_tid / 32;
    if (emu_cur->warp_size[w] != 32) emu_die("__shfl_xor_sync in a partial warp");
    float *slot = emu_cur->shfl + (size_t)w * 32;
    slot[lane] = v;
    emu_warp_barrier();
    float r = slot[(lane ^ (unsigned)lanemask) & 31];
    emu_warp_barrier();
    return r;
}
static inline unsigned char *emu_dynamic_smem(void) { return emu_cur->dyn_smem; }
#define SD_FA_DYNAMIC_SMEM(name) unsigned char *name = emu_dynamic_smem()

static inline float atomicAdd(float *p, float v)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    float old = *p;
    *p = old + v;
    pthread_mutex_unlock(&mu);
    return old;
}

/* ---- 16-bit floats ---- */

struct __nv_bfloat16 { uint16_t x; };
struct __half { uint16_t x; };

static inline uint32_t emu_fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float emu_bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline __nv_bfloat16 __float2bfloat16(float f)
{
    uint32_t u = emu_fbits(f);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) h.x = (uint16_t)((u >> 16) | 0x40);  /* NaN stays NaN (quiet) */
    else h.x = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);               /* RNE; overflow gives inf */
    return h;
}
static inline float __bfloat162float(__nv_bfloat16 h) { return emu_bitsf((uint32_t)h.x << 16); }

static inline __half __float2half(float f)
{
    uint32_t u = emu_fbits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    __half h;
    if (a > 0x7f800000u) { h.x = (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); return h; }  /* NaN */
    if (a >= 0x477ff000u) { h.x = (uint16_t)(sign | 0x7c00u); return h; }  /* ≥ 65520 rounds to inf */
    if (a < 0x38800000u) {  /* below 2^-14: subnormal half (or zero), value = m·2^-24 */
        if (a < 0x33000000u) { h.x = (uint16_t)sign; return h; }  /* < 2^-25: rounds to 0 (2^-25 ties to even 0) */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;   /* value = m·2^(e-150) */
        unsigned shift = 126 - e;                                 /* m·2^(e-150) / 2^-24 = m >> (126-e) */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        h.x = (uint16_t)(sign | q);
        return h;
    }
    /* normal: rebias the exponent, round the mantissa from 23 to 10 bits (a carry into the exponent
     * is correct, up to 0x7c00 = inf, excluded above) */
    uint32_t r = a - 0x38000000u;  /* exponent 127 → 15 */
    uint32_t q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++;
    h.x = (uint16_t)(sign | q);
    return h;
}
static inline float __half2float(__half h)
{
    uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1f, m = h.x & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) return emu_bitsf(sign | 0x7f800000u | (m << 13));
    return emu_bitsf(sign | ((e + 112) << 23) | (m << 13));
}

/* ---- nvcuda::wmma (m16n16k16, 16-bit operands, float accumulators) ---- */

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

static inline float emu_tof(float v) { return v; }
static inline float emu_tof(__nv_bfloat16 v) { return __bfloat162float(v); }
static inline float emu_tof(__half v) { return __half2float(v); }

static inline void emu_check_ptr(const void *p, unsigned ldm, unsigned esize)
{
    if ((uintptr_t)p % 32) emu_die("wmma: pointer not 256-bit aligned");
    if (esize == 2 ? ldm % 8 : ldm % 4) emu_die("wmma: ldm not a multiple of 16 bytes");
    if (ldm < 16) emu_die("wmma: ldm smaller than the tile");
}

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "only m16n16k16 is emulated");
    float v[16][16];  /* the tile's values, exactly as the fragment's type holds them */
    bool set = false;
};

static inline void fill_fragment(fragment<accumulator, 16, 16, 16, float> &f, float x)
{
    emu_warp_barrier();
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) f.v[i][j] = x;
    f.set = true;
}

/* matrix_a / matrix_b: element (r, c) of the 16×16 tile at p[r·ldm + c] (row_major) or
 * p[c·ldm + r] (col_major). */
template <class Use, class T, class L>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm)
{
    emu_check_ptr(p, ldm, sizeof(T));
    const bool row = std::is_same<L, row_major>::value;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.v[r][c] = emu_tof(row ? p[r * ldm + c] : p[c * ldm + r]);
    f.set = true;
}
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm,
                                    layout_t l)
{
    emu_check_ptr(p, ldm, 4);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.v[r][c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
    f.set = true;
}
static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm,
                                     layout_t l)
{
    emu_warp_barrier();
    emu_check_ptr(p, ldm, 4);
    if (!f.set) emu_die("wmma: store of an accumulator never filled");
    unsigned lane = emu_tid % 32;
    for (unsigned e = lane; e < 256; e += 32) {
        unsigned r = e / 16, c = e % 16;
        if (l == mem_row_major) p[r * ldm + c] = f.v[r][c];
        else p[c * ldm + r] = f.v[r][c];
    }
}
/* d = a·b + c, fp32 products and sums in k order (may alias c) */
template <class T, class LA, class LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, T, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, T, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float> &c)
{
    if (!a.set || !b.set || !c.set) emu_die("wmma: mma_sync on a fragment never filled");
    float out[16][16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = c.v[i][j];
            for (int k = 0; k < 16; k++) s += a.v[i][k] * b.v[k][j];
            out[i][j] = s;
        }
    memcpy(d.v, out, sizeof out);
    d.set = true;
}

}  // namespace wmma
}  // namespace nvcuda

/* ---- launches ---- */

struct emu_thread_arg {
    unsigned tid;
    dim3 bdim, gdim;
    const std::function<void()> *body;
};

/* One thread of the block, for every block of the grid in turn: the threads persist from block
 * to block (creating 64-128 threads per block costs more than the blocks' work); two block
 * barriers separate the blocks, the dynamic shared memory is refilled with garbage in between. */
static inline void *emu_thread_main(void *p)
{
    emu_thread_arg *a = (emu_thread_arg *)p;
    emu_tid = a->tid;
    threadIdx = uint3(a->tid % a->bdim.x, a->tid / a->bdim.x % a->bdim.y, a->tid / (a->bdim.x * a->bdim.y));
    blockDim = a->bdim;
    gridDim = a->gdim;
    for (unsigned bz = 0; bz < a->gdim.z; bz++)
        for (unsigned by = 0; by < a->gdim.y; by++)
            for (unsigned bx = 0; bx < a->gdim.x; bx++) {
                blockIdx = uint3(bx, by, bz);
                if (a->tid == 0 && emu_cur->dyn_smem)
                    memset(emu_cur->dyn_smem, 0xa5, emu_cur->dyn_bytes);  /* garbage, as on a GPU (not 0) */
                emu_cur->bar.wait();  /* the previous block is done everywhere, the memory is refilled */
                (*a->body)();
                emu_cur->bar.wait();
            }
    return NULL;
}

/* Run kernel(args...) over the grid, one block after another, each by blockDim.x·y·z threads. */
template <class... KArgs, class... Args>
static inline void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, void (*kernel)(KArgs...), Args... args)
{
    unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > 1024) emu_die("launch: bad block size");
    if (!grid.x || !grid.y || !grid.z) return;
    emu_block b;
    b.nthreads = nt;
    b.nwarps = (nt + 31) / 32;
    b.dyn_bytes = smem_bytes;
    b.dyn_smem = smem_bytes ? (unsigned char *)aligned_alloc(128, (smem_bytes + 127) / 128 * 128) : NULL;
    b.warp_bar = new emu_barrier[b.nwarps];
    b.warp_size = new unsigned[b.nwarps];
    b.shfl = new float[b.nwarps * 32];
    b.bar.n = nt;
    for (unsigned w = 0; w < b.nwarps; w++) {
        b.warp_size[w] = nt - w * 32 < 32 ? nt - w * 32 : 32;
        b.warp_bar[w].n = b.warp_size[w];
    }
    emu_cur = &b;
    std::function<void()> body = [&]() { kernel(args...); };
    pthread_t *th = new pthread_t[nt];
    emu_thread_arg *ta = new emu_thread_arg[nt];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    for (unsigned t = 0; t < nt; t++) {
        ta[t] = emu_thread_arg{ t, block, grid, &body };
        if (pthread_create(&th[t], &attr, emu_thread_main, &ta[t])) emu_die("pthread_create failed");
    }
    for (unsigned t = 0; t < nt; t++) pthread_join(th[t], NULL);
    pthread_attr_destroy(&attr);
    emu_cur = NULL;
    delete[] th;
    delete[] ta;
    delete[] b.warp_bar;
    delete[] b.warp_size;
    delete[] b.shfl;
    free(b.dyn_smem);
}

/* Define the emulator's globals in exactly one translation unit. */
#define CUDA_EMU_DEFINE_GLOBALS                                  \
    thread_local uint3 threadIdx, blockIdx;                      \
    thread_local dim3 blockDim, gridDim;                         \
    thread_local unsigned emu_tid;                               \
    emu_block *emu_cur;

#endif
