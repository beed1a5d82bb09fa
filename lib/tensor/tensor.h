/* sd_tensor: a descriptor of a contiguous n-d array, and sd_ctx: where ops run.
 *
 * A tensor is a small value struct (pass it by pointer, copy it freely): a data pointer, a shape
 * in PyTorch axis order (N,C,H,W for images, [B,T,C] for token sequences), a dtype and the
 * device that holds the data. Tensors are always contiguous (row-major, last axis fastest).
 * The descriptor never owns its memory: data comes from sd_tensor_alloc() (host heap),
 * from an arena (sd_arena_tensor()), from an mmap'ed checkpoint, or from the device allocator.
 * Views and reshapes only make new descriptors (no copies).
 *
 * Layer and model code must not read or write `data` directly (it may be device memory): use the
 * ops in tensor/ops.h and the explicit copies below. */
#ifndef SD_TENSOR_TENSOR_H
#define SD_TENSOR_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define SD_MAX_DIMS 8

typedef enum sd_dtype {
    SD_F32 = 0,
    SD_F16 = 1,   /* IEEE binary16 */
    SD_BF16 = 2,  /* bfloat16 */
    SD_I32 = 3,   /* token ids / indices */
    SD_F8E4M3 = 4, /* float8_e4m3fn: storage of frozen linear/conv weights only (--fp8_base) */
} sd_dtype;

typedef enum sd_devkind {
    SD_DEV_CPU = 0,
    SD_DEV_CUDA = 1,
} sd_devkind;

typedef struct sd_tensor {
    void *data;
    int64_t shape[SD_MAX_DIMS];
    int32_t ndim;          /* 0 = scalar (numel 1) */
    uint8_t dtype;         /* sd_dtype */
    uint8_t device;        /* sd_devkind */
    int16_t device_index;  /* CUDA ordinal; 0 on CPU */
} sd_tensor;

/* Shape literal helper: sd_tensor_wrap(p, SD_F32, SD_DIMS(2, 4, 8, 8)). */
#define SD_DIMS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))), \
                     ((const int64_t[]){__VA_ARGS__})

size_t sd_dtype_size(sd_dtype dt);
const char *sd_dtype_name(sd_dtype dt);   /* "f32", "f16", "bf16", "i32", "f8_e4m3fn" */

/* Descriptor of existing host memory (device = CPU). ndim > SD_MAX_DIMS or a negative size gives
 * a tensor with ndim = -1 (sd_tensor_valid() is false). */
sd_tensor sd_tensor_wrap(void *data, sd_dtype dt, int ndim, const int64_t *shape);
int sd_tensor_valid(const sd_tensor *t);
int64_t sd_tensor_numel(const sd_tensor *t);
size_t sd_tensor_nbytes(const sd_tensor *t);
/* Size of axis `axis` (negative counts from the end, as in PyTorch). */
int64_t sd_tensor_dim(const sd_tensor *t, int axis);
int sd_tensor_same_shape(const sd_tensor *a, const sd_tensor *b);
/* "[2, 4, 8, 8] f32" into buf; returns buf. */
const char *sd_tensor_describe(const sd_tensor *t, char *buf, size_t bufsize);

/* Reshape (same numel, no copy). One size may be -1 (inferred). SD_EINVAL on mismatch. */
int sd_tensor_reshape(const sd_tensor *t, int ndim, const int64_t *shape, sd_tensor *out);
/* Rows [start, start+count) of axis 0 (a contiguous slice, no copy). */
int sd_tensor_narrow0(const sd_tensor *t, int64_t start, int64_t count, sd_tensor *out);
/* Element `i` of axis 0, with that axis removed (e.g. one image of a batch). */
int sd_tensor_index0(const sd_tensor *t, int64_t i, sd_tensor *out);

/* Host heap tensors (64-byte aligned, zeroed). sd_tensor_free() frees data and clears t. */
int sd_tensor_alloc(sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape);
void sd_tensor_free(sd_tensor *t);
/* The same on `dev` (CUDA: device memory, zeroed; needs sd_device_init()). sd_tensor_free() frees
 * either. */
int sd_tensor_alloc_on(sd_tensor *t, sd_devkind dev, sd_dtype dt, int ndim, const int64_t *shape);

/* Explicit copies between host memory and a tensor on any device (the only way layer code moves
 * numbers in or out). `bytes` must equal sd_tensor_nbytes(t). */
int sd_tensor_upload(sd_tensor *t, const void *host, size_t bytes);
int sd_tensor_download(const sd_tensor *t, void *host, size_t bytes);

/* ---- arena: one block reserved once, handed out by bump allocation, reset by mark ---------- */

typedef struct sd_arena {
    uint8_t *base;
    size_t cap, used, peak;
    uint8_t device;   /* sd_devkind of the memory */
    uint8_t mapped;   /* host block from mmap (pages touched only when first used) */
} sd_arena;

/* Reserve `cap` bytes on `device` (host: an mmap'ed region, faulted in on first use and then
 * reused; CUDA: sd_device_alloc()). */
int sd_arena_init(sd_arena *a, sd_devkind device, size_t cap);
void sd_arena_free(sd_arena *a);
/* 64-byte aligned block, or NULL when the arena is exhausted (no error message set). */
void *sd_arena_alloc(sd_arena *a, size_t bytes);
static inline size_t sd_arena_mark(const sd_arena *a) { return a->used; }
static inline void sd_arena_reset(sd_arena *a, size_t mark) { a->used = mark; }
/* Tensor whose data lives in the arena; SD_ENOMEM with "arena exhausted (need N, have M)". */
int sd_arena_tensor(sd_arena *a, sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape);

/* ---- execution context ---------------------------------------------------------------------- */

/* Every op takes an sd_ctx. It says where the op runs (backend), with how many CPU threads, on
 * which stream (CUDA), and provides scratch memory. Ops take their temporary buffers from
 * `scratch` and give them back before returning (stack discipline), so the scratch arena's peak
 * is the largest single op's need. Layer code may also take scratch between ops as long as it
 * releases it in reverse order (sd_arena_mark/reset).
 *
 * CPU: kernels use an OpenMP team of `threads` (never nested); during an op OpenBLAS is pinned to
 * one thread (the process's setting is restored afterwards) and called on fixed partitions of
 * each product, so the bytes of every result are the same for any thread count. Tools set
 * threads from --threads (base/threads.h: sd_threads_get()). */
typedef struct sd_ctx {
    sd_devkind backend;
    int device_index;
    void *stream;          /* cudaStream_t for CUDA; NULL on CPU (placeholder until issue 10) */
    int threads;           /* CPU threads (≥ 1) */
    int conv_algo;         /* CPU 3×3 stride-1 conv: SD_CONV_AUTO, SD_CONV_IM2COL, SD_CONV_WINOGRAD */
    sd_arena scratch;
} sd_ctx;

/* 3×3 stride-1 convolutions on the CPU (forward and input gradient): Winograd F(4×4,3×3) where
 * the shape pays for its weight transform, im2col + GEMM otherwise (AUTO); or always one of the
 * two. sd_ctx_init sets it from the environment variable SD_CONV_ALGO (auto|im2col|winograd). */
enum { SD_CONV_AUTO = 0, SD_CONV_IM2COL = 1, SD_CONV_WINOGRAD = 2 };

#define SD_CTX_DEFAULT_SCRATCH ((size_t)1 << 30)   /* reserved address space, not memory */

/* backend CPU: threads ≤ 0 means omp_get_max_threads(); scratch_bytes 0 means the default.
 * CUDA without a CUDA build: SD_EUNSUPPORTED. */
int sd_ctx_init(sd_ctx *ctx, sd_devkind backend, int threads, size_t scratch_bytes);
void sd_ctx_free(sd_ctx *ctx);
/* Change the CPU thread count (e.g. from --threads). */
void sd_ctx_set_threads(sd_ctx *ctx, int threads);

#endif
