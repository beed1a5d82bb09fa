/* safetensors files: strict mmap reader with dtype conversion, and a streaming atomic writer.
 *
 * Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON object (possibly padded with
 * trailing spaces), then the data buffer. Each key except "__metadata__" maps to
 * {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, offsets relative to the data
 * buffer; "__metadata__" maps to an object of string -> string.
 *
 * Reading validates strictly and accepts exactly what the reference library (huggingface
 * safetensors) accepts, plus a few checks it lacks: header length <= 100,000,000 and within the
 * file; the header is valid UTF-8 (checked here: libjq 1.6 silently replaces bad bytes), strict
 * RFC 8259 JSON starting with '{' (trailing whitespace allowed), no duplicate keys in any object,
 * no "\u0000" in any string; each tensor entry has exactly the fields dtype (a known name),
 * shape (array of at most SD_ST_MAX_DIMS integers 0..2^53, written as plain integers: no
 * fraction, exponent or sign) and data_offsets (two such integers, begin <= end <= data size);
 * end - begin == product(shape) * dtype size with overflow checks; and, like the reference, the
 * tensors sorted by offset tile the data buffer exactly: no overlap, no gap, no trailing bytes.
 * "__metadata__" values must all be strings. Any violation is SD_EFORMAT with a one-line message
 * naming the file and the problem ("m.safetensors: tensor 'a': data_offsets [0,8] overlap tensor
 * 'b'"); a known but unsupported dtype (F4, F6_*, F8_E8M0, C64) or more than SD_ST_MAX_DIMS
 * dimensions is SD_EUNSUPPORTED.
 *
 * Threads: sd_safetensors_open*() uses libjq, so call it from the thread that does all jq work;
 * once open, the handle holds no jv and every query/read function may run on any thread.
 *
 * The host must be little-endian (checked at compile time). */
#ifndef SD_IO_SAFETENSORS_H
#define SD_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SD_ST_MAX_DIMS 8
#define SD_ST_MAX_HEADER 100000000u   /* the reference's MAX_HEADER_SIZE */

/* Dtypes in the reference's enum order (increasing alignment). The writer sorts tensors by this
 * order descending, then by name, exactly as the reference's serializer does. */
typedef enum sd_st_dtype {
    SD_ST_BOOL = 0,
    SD_ST_U8,
    SD_ST_I8,
    SD_ST_F8_E5M2,   /* torch.float8_e5m2 (IEEE-like, has inf) */
    SD_ST_F8_E4M3,   /* torch.float8_e4m3fn (no inf; 0x7f/0xff are NaN) */
    SD_ST_I16,
    SD_ST_U16,
    SD_ST_F16,
    SD_ST_BF16,
    SD_ST_I32,
    SD_ST_U32,
    SD_ST_F32,
    SD_ST_F64,
    SD_ST_I64,
    SD_ST_U64,
    SD_ST_NDTYPES
} sd_st_dtype;

/* Element size in bytes (0 for an invalid value). */
size_t sd_st_dtype_size(sd_st_dtype t);
/* The header spelling: "F32", "BF16", ... (NULL for an invalid value). */
const char *sd_st_dtype_name(sd_st_dtype t);
/* Parse a header spelling. SD_OK; SD_EUNSUPPORTED for names the reference knows that we do not
 * (F4, F6_E2M3, F6_E3M2, F8_E8M0, C64); SD_EFORMAT otherwise. Sets no message. */
int sd_st_dtype_parse(const char *s, sd_st_dtype *t);
/* 1 for floating dtypes (F8_*, F16, BF16, F32, F64). */
int sd_st_dtype_is_float(sd_st_dtype t);

/* Convert n elements. `src` and `dst` need no particular alignment. `dst_t` is SD_ST_F32,
 * SD_ST_F16 or SD_ST_BF16 (from any dtype), or equal to `src_t` (a plain copy). Float conversions
 * round to nearest even, once: F64 and wide integers go through a round-to-odd f32 step, so
 * F64 -> F16/BF16 has no double-rounding error. BOOL reads as 0/1 (any non-zero byte is 1).
 * Returns SD_EINVAL (with message) for an unsupported pair. */
int sd_st_convert(sd_st_dtype src_t, const void *src, sd_st_dtype dst_t, void *dst, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Reader */

typedef struct sd_st_tensor {
    const char *name;         /* NUL-terminated UTF-8, owned by the handle */
    sd_st_dtype dtype;
    int ndim;                 /* 0 = scalar */
    int64_t shape[SD_ST_MAX_DIMS];
    int64_t numel;            /* product of shape (1 for a scalar, 0 if a dimension is 0) */
    uint64_t offset;          /* byte offset of the data from the start of the file */
    uint64_t nbytes;
    const void *data;         /* the bytes in the mapping; aligned to the element size only if
                                 the writer aligned it (ours and the reference's do) */
} sd_st_tensor;

typedef struct sd_safetensors sd_safetensors;

/* Map `path` read-only (MAP_PRIVATE) and validate it. On failure *st is NULL and the message
 * names the file. Open failures: SD_ENOTFOUND (no such file) or SD_EIO. */
int sd_safetensors_open(const char *path, sd_safetensors **st);
/* The same over a caller's buffer (not copied: it must outlive the handle). `name` is used in
 * messages (NULL: "<memory>"). */
int sd_safetensors_open_mem(const void *buf, size_t n, const char *name, sd_safetensors **st);
/* Unmap and free; NULL is fine. */
void sd_safetensors_close(sd_safetensors *st);

const char *sd_safetensors_path(const sd_safetensors *st);
size_t sd_safetensors_header_len(const sd_safetensors *st);    /* N */
uint64_t sd_safetensors_file_size(const sd_safetensors *st);

/* Tensors in file order (by data offset). All sd_st_tensor pointers from _at/_find/_get point
 * into one array in that order, so `t - sd_safetensors_at(st, 0)` is t's file index. */
size_t sd_safetensors_count(const sd_safetensors *st);
const sd_st_tensor *sd_safetensors_at(const sd_safetensors *st, size_t i);
/* Lookup by exact name (binary search); NULL if absent (sets no message). */
const sd_st_tensor *sd_safetensors_find(const sd_safetensors *st, const char *name);
/* The same, but SD_ENOTFOUND with "path: no tensor 'name'" when absent. */
int sd_safetensors_get(const sd_safetensors *st, const char *name, const sd_st_tensor **t);
/* Rename tensors in the handle (not the file): names[i] (NULL: keep) becomes the name of file-order
 * tensor i (sd_safetensors_at). Two tensors ending up with one name is SD_EFORMAT naming both
 * original names; the handle is then unchanged. Earlier sd_st_tensor pointers stay valid (their
 * names change). */
int sd_safetensors_rename(sd_safetensors *st, const char *const *names);

/* __metadata__, sorted by key. meta_get returns NULL if the key is absent. */
size_t sd_safetensors_meta_count(const sd_safetensors *st);
void sd_safetensors_meta_at(const sd_safetensors *st, size_t i, const char **key, const char **value);
const char *sd_safetensors_meta_get(const sd_safetensors *st, const char *key);

/* Copy tensor `t` into `dst` converted to `dst_t` (as sd_st_convert). `n` must equal t->numel
 * (SD_EINVAL otherwise: "path: tensor 'x' has 12 elements, buffer holds 10"). */
int sd_safetensors_read(const sd_safetensors *st, const sd_st_tensor *t, sd_st_dtype dst_t,
                        void *dst, size_t n);
/* By name (SD_ENOTFOUND if absent). */
int sd_safetensors_read_f32(const sd_safetensors *st, const char *name, float *dst, size_t n);
int sd_safetensors_read_f16(const sd_safetensors *st, const char *name, uint16_t *dst, size_t n);
int sd_safetensors_read_bf16(const sd_safetensors *st, const char *name, uint16_t *dst, size_t n);

/* Check that tensor `name` exists and has exactly this shape: SD_ENOTFOUND if absent; SD_EFORMAT
 * "path: tensor 'x': expected shape [320,4,3,3], got [320,4,1,1]" otherwise. */
int sd_safetensors_check_shape(const sd_safetensors *st, const char *name, int ndim,
                               const int64_t *shape);
/* Tensor `name` with `ndim` dimensions of 1..2^24 each (sizes a model takes from a file): SD_EFORMAT
 * "path: no tensor 'x' (not a <what>)" when absent (no parenthesis when what is NULL), "path: tensor
 * 'x' has shape [..], expected N dimensions", "path: tensor 'x': dimension i is out of range". */
int sd_safetensors_get_dims(const sd_safetensors *st, const char *name, int ndim, const char *what,
                            const sd_st_tensor **t);
/* Format "[320,4,3,3]" into buf (always NUL-terminated, truncated if needed). */
void sd_st_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);

/* ---------------------------------------------------------------------------------------------
 * Writer: collect tensors and metadata, then write in one pass. Output matches the reference
 * serializer byte for byte: "__metadata__" first (keys in insertion order; omitted if none),
 * tensors sorted by dtype (descending enum order) then name (bytewise), compact JSON with the
 * fields dtype, shape, data_offsets, header padded with spaces to a multiple of 8, data in the
 * same order. Written through a temporary file and renamed (sd_atomic_*). */

typedef struct sd_safetensors_writer sd_safetensors_writer;
/* Where a callback streams a tensor's bytes. */
typedef struct sd_st_sink sd_st_sink;
/* Append n bytes of the current tensor. Writing more than its size is SD_ESTATE. */
int sd_st_sink_write(sd_st_sink *sink, const void *p, size_t n);
/* Produce exactly the tensor's bytes through sd_st_sink_write(); return SD_OK or an error
 * (with a message) that aborts the whole write. */
typedef int (*sd_st_write_fn)(void *ctx, const char *name, sd_st_sink *sink);

int sd_safetensors_writer_new(sd_safetensors_writer **w);
void sd_safetensors_writer_free(sd_safetensors_writer *w);
/* Add a tensor whose bytes (numel * dtype size, little-endian, C order) are at `data`; the
 * pointer is only read by write() and must stay valid until then. Names must be valid UTF-8,
 * unique, and not "__metadata__" (SD_EINVAL). `data` may be NULL only for an empty tensor. */
int sd_safetensors_writer_add(sd_safetensors_writer *w, const char *name, sd_st_dtype dtype,
                              int ndim, const int64_t *shape, const void *data);
/* Add a tensor whose bytes are produced at write time by fn(ctx, name, sink). */
int sd_safetensors_writer_add_fn(sd_safetensors_writer *w, const char *name, sd_st_dtype dtype,
                                 int ndim, const int64_t *shape, sd_st_write_fn fn, void *ctx);
/* Add f32 data stored as `dtype` (F32, F16 or BF16), converted in chunks at write time. */
int sd_safetensors_writer_add_f32(sd_safetensors_writer *w, const char *name, sd_st_dtype dtype,
                                  int ndim, const int64_t *shape, const float *data);
/* Set a metadata key (replacing an earlier value for the same key). Both valid UTF-8. */
int sd_safetensors_writer_set_meta(sd_safetensors_writer *w, const char *key, const char *value);
/* Write atomically to `path`. The writer can be written again or freed afterwards. */
int sd_safetensors_writer_write(sd_safetensors_writer *w, const char *path);
/* Write to an open stream (no atomicity); `name` is used in messages. */
int sd_safetensors_writer_write_fp(sd_safetensors_writer *w, FILE *fp, const char *name);
/* Write to a malloc'd buffer (*buf to be freed by the caller). */
int sd_safetensors_writer_write_mem(sd_safetensors_writer *w, void **buf, size_t *n);

#endif
