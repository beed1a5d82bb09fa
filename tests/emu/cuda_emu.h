/* A CPU emulation of the small part of CUDA C++ that lib/tensor/cuda/flash_attn.cuh uses, so that g++
 * compiles the kernel header as plain C++ and tests/emu/ runs its kernels on the CPU.
 *
 *   - __global__ / __device__ / __host__ / __forceinline__ / __launch_bounds__ vanish; __shared__
 *     becomes `static thread_local`: an OS thread runs one block at a time, so a function-static
 *     is the block's shared memory. Dynamic shared memory (SD_FA_DYNAMIC_SMEM) is a buffer of exactly the launch's size.
 *   - threadIdx/blockIdx/blockDim/gridDim are thread_local; every CUDA thread of a block is a fiber
 *     (own stack, hand-written x86-64 context switch, ucontext elsewhere) on one OS thread, blocks
 *     spread over the OpenMP threads; __shared__ is `static thread_local`. __syncthreads() is a barrier of the block's threads,
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
 *   - emu_launch(grid, block, smem_bytes, kernel, args...) runs the grid (tests); the emulated
 *     CUDA build launches through tests/emu/include/cuda_runtime.h (SD_CU_KERNEL), with
 *     cudaGetLastError semantics for bad configurations.
 * Only one launch at a time per process. */
#ifndef SD_TESTS_CUDA_EMU_H
#define SD_TESTS_CUDA_EMU_H

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmath>
#include <cstddef>
#include <functional>
#include <type_traits>

#include <omp.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local
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

/* ---- the running block: CUDA threads as fibers ---- */

/* Every CUDA thread of a block is a fiber (its own stack, a hand-written x86-64 context switch;
 * ucontext elsewhere) on one OS thread: a fiber runs until it reaches a barrier, then the next
 * one runs; when all the threads the barrier waits for have arrived, they go on. Deterministic and
 * cheap (a switch is a few ns, where a futex wake-up of a pthread costs microseconds). Blocks of a
 * launch are spread over the OpenMP threads (each with its own fibers and shared memory). A
 * barrier that can never complete (threads of the block exited or wait at another barrier) is
 * reported as a deadlock and aborts. */
struct emu_fiber;
struct emu_barrier {
    unsigned count = 0, gen = 0, n = 0;
    void wait();
};

struct emu_block {
    unsigned nthreads, nwarps;
    bool direct;              /* threads run as plain calls one after another: no barrier allowed */
    emu_barrier bar;
    emu_barrier *warp_bar;
    unsigned *warp_size;      /* threads in each warp (the last may be partial) */
    float *shfl;              /* [nwarps][32] slots of __shfl_xor_sync */
    unsigned char *dyn_smem;  /* dynamic shared memory of the launch */
    size_t dyn_bytes;
    const char *kernel;       /* for messages */
};
extern __thread emu_block *emu_cur;  /* __thread: no TLS wrapper call across translation units */
extern __thread unsigned emu_tid;  /* linear thread index in the block */

struct emu_fiber {
    void *sp;
    emu_barrier *wait_bar;
    unsigned wait_gen;
    bool done;
    unsigned char *stack;
    size_t stack_size;
};
extern thread_local emu_fiber *emu_fib_cur;
extern thread_local void *emu_sched_sp;
extern thread_local const void *emu_sched_stack;
extern thread_local size_t emu_sched_stack_size;

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

#if defined(__x86_64__)
/* emu_ctx_switch(save, to): save the callee-saved registers, MXCSR and the x87 control word on the
 * current stack, store its pointer in *save, continue on the stack `to`. */
extern "C" void emu_ctx_switch(void **save, void *to);
#define EMU_CTX_ASM                                                                                  \
    __asm__(".text\n.globl emu_ctx_switch\n.type emu_ctx_switch,@function\nemu_ctx_switch:\n"        \
            "push %rbp\npush %rbx\npush %r12\npush %r13\npush %r14\npush %r15\n"                      \
            "sub $8, %rsp\nstmxcsr (%rsp)\nfnstcw 4(%rsp)\n"                                          \
            "mov %rsp, (%rdi)\nmov %rsi, %rsp\n"                                                       \
            "ldmxcsr (%rsp)\nfldcw 4(%rsp)\nadd $8, %rsp\n"                                            \
            "pop %r15\npop %r14\npop %r13\npop %r12\npop %rbx\npop %rbp\nret\n"                       \
            ".size emu_ctx_switch,.-emu_ctx_switch\n"                                                  \
            ".globl emu_fiber_tramp\n.type emu_fiber_tramp,@function\nemu_fiber_tramp:\n"              \
            "mov %r12, %rdi\ncall *%r13\nud2\n.size emu_fiber_tramp,.-emu_fiber_tramp\n");
extern "C" void emu_fiber_tramp(void);
#else
#include <ucontext.h>
#define EMU_CTX_ASM
#endif

void emu_fiber_main(emu_fiber *f);
void emu_fiber_switch(emu_fiber *f, bool to_fiber);

inline void emu_barrier::wait()
{
    if (emu_cur->direct) {
        fprintf(stderr, "cuda_emu: kernel %s synchronises its block, but was launched as one that does not "
                "(SD_CU_GRID / SD_CU_KERNEL_NOSYNC)\n", emu_cur->kernel);
        abort();
    }
    if (++count == n) {
        count = 0;
        gen++;
        return;
    }
    emu_fiber *f = emu_fib_cur;
    f->wait_bar = this;
    f->wait_gen = gen;
    emu_fiber_switch(f, false);
}

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

/* ---- intrinsics ---- */

static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fmul_rn(float a, float b)
{
    volatile float r = a * b;  /* never contracted into an fma */
    return r;
}
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }

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

static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline __half __ushort_as_half(unsigned short u) { __half h; h.x = u; return h; }

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

/* Launch configuration limits of compute capability 9.0 (cudaErrorInvalidConfiguration when
 * exceeded; dynamic shared memory above 48 KiB needs cudaFuncSetAttribute, up to 227 KiB). */
static const size_t EMU_SMEM_DEFAULT = 48u << 10, EMU_SMEM_OPTIN = 227u << 10;
static const size_t EMU_STACK = 256u << 10;  /* per fiber */

/* 0 = launchable; else 1 (invalid configuration) or 2 (too much dynamic shared memory) */
static inline int emu_check_config(dim3 grid, dim3 block, size_t smem, size_t smem_max)
{
    unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    if (!block.x || !block.y || !block.z || nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
        return 1;
    if (!grid.x || !grid.y || !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) return 1;
    if (smem > smem_max) return 2;
    return 0;
}

/* Run body() as every thread of every block of the grid (direct: plain calls, no barriers). */
void emu_run(dim3 grid, dim3 block, size_t smem_bytes, bool direct, const char *kernel,
             const std::function<void()> &body);

/* Run kernel(args...) over the grid (the tests' direct entry point; no error reporting: a bad
 * configuration aborts). */
template <class... KArgs, class... Args>
static inline void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, void (*kernel)(KArgs...), Args... args)
{
    if (emu_check_config(grid, block, smem_bytes, EMU_SMEM_OPTIN)) emu_die("launch: bad configuration");
    emu_run(grid, block, smem_bytes, false, "(test kernel)", [&]() { kernel(args...); });
}

/* The engine; in exactly one translation unit. */
#define CUDA_EMU_DEFINE_ENGINE                                                                               \
    EMU_CTX_ASM                                                                                               \
    thread_local emu_fiber *emu_fib_cur;                                                                      \
    thread_local void *emu_sched_sp;                                                                          \
    thread_local const void *emu_sched_stack;                                                                 \
    thread_local size_t emu_sched_stack_size;                                                                 \
    static thread_local const std::function<void()> *emu_body;                                                \
    EMU_UCONTEXT_DEFS                                                                                         \
    void emu_fiber_switch(emu_fiber *f, bool to_fiber)                                                        \
    {                                                                                                         \
        void *fake = NULL;                                                                                    \
        (void)fake;                                                                                           \
        if (EMU_ASAN) {                                                                                       \
            if (to_fiber) EMU_SAN_START(&fake, f->stack, f->stack_size);                                      \
            else EMU_SAN_START(f->done ? NULL : &fake, emu_sched_stack, emu_sched_stack_size);                \
        }                                                                                                     \
        EMU_SWITCH(to_fiber, f);                                                                              \
        if (EMU_ASAN) EMU_SAN_FINISH(fake, NULL, NULL);                                                       \
    }                                                                                                         \
    void emu_fiber_main(emu_fiber *f)                                                                         \
    {                                                                                                         \
        if (EMU_ASAN) EMU_SAN_FINISH(NULL, &emu_sched_stack, &emu_sched_stack_size);                          \
        (*emu_body)();                                                                                        \
        f->done = true;                                                                                       \
        emu_fiber_switch(f, false);                                                                           \
        abort();                                                                                              \
    }                                                                                                         \
    EMU_RUN_DEF

#if EMU_ASAN
#define EMU_SAN_START __sanitizer_start_switch_fiber
#define EMU_SAN_FINISH __sanitizer_finish_switch_fiber
#define EMU_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#include <sanitizer/asan_interface.h>
#else
#define EMU_UNPOISON(p, n) ((void)0)
#define EMU_SAN_START(...) ((void)0)
#define EMU_SAN_FINISH(...) ((void)0)
#endif

#if defined(__x86_64__)
#define EMU_UCONTEXT_DEFS
#define EMU_SWITCH(to_fiber, f) ((to_fiber) ? emu_ctx_switch(&emu_sched_sp, (f)->sp) : emu_ctx_switch(&(f)->sp, emu_sched_sp))
/* A new fiber's stack: the saved registers (r12 = f, r13 = emu_fiber_main), MXCSR / x87 control
 * word of the current thread, and emu_fiber_tramp as the return address. */
#define EMU_FIBER_INIT(f)                                                                              \
    do {                                                                                               \
        uintptr_t top = ((uintptr_t)(f)->stack + (f)->stack_size) & ~(uintptr_t)15;                    \
        uint64_t *s = (uint64_t *)(top - 80);                                                          \
        uint32_t csr;                                                                                  \
        uint16_t cw;                                                                                   \
        __asm__ volatile("stmxcsr %0" : "=m"(csr));                                                    \
        __asm__ volatile("fnstcw %0" : "=m"(cw));                                                      \
        s[0] = (uint64_t)csr | (uint64_t)cw << 32;                                                     \
        s[1] = 0, s[2] = 0, s[3] = (uint64_t)(uintptr_t)&emu_fiber_main, s[4] = (uint64_t)(uintptr_t)(f); \
        s[5] = 0, s[6] = 0, s[7] = (uint64_t)(uintptr_t)&emu_fiber_tramp;                              \
        (f)->sp = s;                                                                                   \
    } while (0)
#else
#define EMU_UCONTEXT_DEFS                                                                              \
    static thread_local ucontext_t emu_sched_uc;                                                      \
    static thread_local ucontext_t *emu_fib_uc;                                                       \
    static void emu_uc_entry(unsigned lo, unsigned hi)                                                \
    {                                                                                                 \
        emu_fiber_main((emu_fiber *)(((uintptr_t)hi << 32) | lo));                                    \
    }
#define EMU_SWITCH(to_fiber, f) ((to_fiber) ? swapcontext(&emu_sched_uc, (ucontext_t *)(f)->sp) \
                                            : swapcontext((ucontext_t *)(f)->sp, &emu_sched_uc))
#define EMU_FIBER_INIT(f)                                                                              \
    do {                                                                                               \
        ucontext_t *uc = &emu_fib_uc[(f) - fibers];                                                    \
        getcontext(uc);                                                                                \
        uc->uc_stack.ss_sp = (f)->stack;                                                               \
        uc->uc_stack.ss_size = (f)->stack_size;                                                        \
        uc->uc_link = NULL;                                                                            \
        makecontext(uc, (void (*)())emu_uc_entry, 2, (unsigned)(uintptr_t)(f),                         \
                    (unsigned)((uintptr_t)(f) >> 32));                                                 \
        (f)->sp = uc;                                                                                  \
    } while (0)
#endif

#define EMU_RUN_DEF                                                                                          \
    void emu_run(dim3 grid, dim3 block, size_t smem_bytes, bool direct, const char *kernel,                   \
                 const std::function<void()> &body)                                                           \
    {                                                                                                         \
        unsigned nt = block.x * block.y * block.z;                                                            \
        unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;                            \
        const int par = nblocks > 1 && !omp_in_parallel();                                                    \
        _Pragma("omp parallel if (par)")                                                                      \
        {                                                                                                     \
            static thread_local unsigned char *stacks;                                                        \
            static thread_local emu_fiber *fibers;                                                            \
            static thread_local unsigned nfib;                                                                \
            if (!direct && nfib < nt) {                                                                       \
                if (stacks) munmap(stacks, (size_t)nfib * EMU_STACK);                                         \
                delete[] fibers;                                                                              \
                EMU_UC_REALLOC                                                                                \
                stacks = (unsigned char *)mmap(NULL, (size_t)nt * EMU_STACK, PROT_READ | PROT_WRITE,          \
                                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);           \
                if (stacks == MAP_FAILED) emu_die("cannot map the fiber stacks");                             \
                fibers = new emu_fiber[nt];                                                                   \
                nfib = nt;                                                                                    \
            }                                                                                                 \
            emu_block b;                                                                                      \
            b.nthreads = nt;                                                                                  \
            b.nwarps = (nt + 31) / 32;                                                                        \
            b.direct = direct;                                                                                \
            b.kernel = kernel;                                                                                \
            b.dyn_bytes = smem_bytes;                                                                         \
            b.dyn_smem = smem_bytes ? (unsigned char *)aligned_alloc(128, (smem_bytes + 127) / 128 * 128) : NULL; \
            b.warp_bar = new emu_barrier[b.nwarps];                                                           \
            b.warp_size = new unsigned[b.nwarps];                                                             \
            b.shfl = new float[b.nwarps * 32];                                                                \
            b.bar.n = nt;                                                                                     \
            for (unsigned w = 0; w < b.nwarps; w++) {                                                         \
                b.warp_size[w] = nt - w * 32 < 32 ? nt - w * 32 : 32;                                         \
                b.warp_bar[w].n = b.warp_size[w];                                                             \
            }                                                                                                 \
            emu_cur = &b;                                                                                     \
            emu_body = &body;                                                                                 \
            blockDim = block;                                                                                 \
            gridDim = grid;                                                                                   \
            _Pragma("omp for schedule(dynamic, 1)")                                                           \
            for (unsigned long long lb = 0; lb < nblocks; lb++) {                                             \
                blockIdx = uint3((unsigned)(lb % grid.x), (unsigned)(lb / grid.x % grid.y),                   \
                                 (unsigned)(lb / ((unsigned long long)grid.x * grid.y)));                     \
                if (b.dyn_smem) memset(b.dyn_smem, 0xa5, b.dyn_bytes); /* garbage, as on a GPU (not 0) */    \
                if (direct) {                                                                                 \
                    for (unsigned t = 0; t < nt; t++) {                                                       \
                        emu_tid = t;                                                                          \
                        threadIdx = uint3(t % block.x, t / block.x % block.y, t / (block.x * block.y));       \
                        body();                                                                               \
                    }                                                                                         \
                    continue;                                                                                 \
                }                                                                                             \
                for (unsigned t = 0; t < nt; t++) {                                                           \
                    emu_fiber *f = &fibers[t];                                                                \
                    f->stack = stacks + (size_t)t * EMU_STACK;                                                \
                    f->stack_size = EMU_STACK;                                                                \
                    f->done = false;                                                                          \
                    f->wait_bar = NULL;                                                                       \
                    EMU_UNPOISON(f->stack + EMU_STACK - 8192, 8192); /* frames of the last fiber there */     \
                    EMU_FIBER_INIT(f);                                                                        \
                }                                                                                             \
                b.bar.count = 0;                                                                              \
                for (unsigned w = 0; w < b.nwarps; w++) b.warp_bar[w].count = 0;                              \
                for (unsigned left = nt; left;) {                                                             \
                    bool progress = false;                                                                    \
                    for (unsigned t = 0; t < nt; t++) {                                                       \
                        emu_fiber *f = &fibers[t];                                                            \
                        if (f->done || (f->wait_bar && f->wait_bar->gen == f->wait_gen)) continue;            \
                        f->wait_bar = NULL;                                                                   \
                        emu_fib_cur = f;                                                                      \
                        emu_tid = t;                                                                          \
                        threadIdx = uint3(t % block.x, t / block.x % block.y, t / (block.x * block.y));       \
                        emu_fiber_switch(f, true);                                                            \
                        progress = true;                                                                      \
                        if (f->done) left--;                                                                  \
                    }                                                                                         \
                    if (!progress) {                                                                          \
                        fprintf(stderr, "cuda_emu: kernel %s, block (%u,%u,%u): deadlock, %u of %u threads "   \
                                "wait at a barrier the others never reach (or exited before)\n", kernel,      \
                                blockIdx.x, blockIdx.y, blockIdx.z, left, nt);                                \
                        abort();                                                                              \
                    }                                                                                         \
                }                                                                                             \
            }                                                                                                 \
            emu_cur = NULL;                                                                                   \
            delete[] b.warp_bar;                                                                              \
            delete[] b.warp_size;                                                                             \
            delete[] b.shfl;                                                                                  \
            free(b.dyn_smem);                                                                                 \
        }                                                                                                     \
    }

#if defined(__x86_64__)
#define EMU_UC_REALLOC
#else
#define EMU_UC_REALLOC delete[] emu_fib_uc; emu_fib_uc = new ucontext_t[nt];
#endif

/* Define the emulator's globals and engine in exactly one translation unit. */
#define CUDA_EMU_DEFINE_GLOBALS                                  \
    thread_local uint3 threadIdx, blockIdx;                      \
    thread_local dim3 blockDim, gridDim;                         \
    __thread unsigned emu_tid;                                   \
    __thread emu_block *emu_cur;                                 \
    CUDA_EMU_DEFINE_ENGINE

#endif
