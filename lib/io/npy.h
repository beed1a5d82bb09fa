/* NumPy .npy arrays (NEP-1 format versions 1.0, 2.0 and 3.0) over memory buffers.
 *
 * Reading: sd_npy_parse_header() validates the magic, the version, the header length and the
 * Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...)} (exactly these three
 * keys, any order, single or double quotes, trailing commas), and checks that the element count
 * times the item size does not overflow. sd_npy_load() also copies the data out in native byte
 * order and C order: big-endian ('>') data is byte-swapped, Fortran-order data is transposed.
 *
 * Writing: sd_npy_header_format() produces the header numpy 1.24 writes, byte for byte (keys
 * sorted, repr() of the shape, 21-digit growth spaces, space padding and a final '\n' so that
 * the data starts at a multiple of 64); version 1.0 unless the header needs 2.0. Data is
 * written little-endian, C order. */
#ifndef SD_IO_NPY_H
#define SD_IO_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SD_NPY_MAX_DIMS 32          /* numpy's NPY_MAXDIMS */
#define SD_NPY_MAX_HEADER 10000     /* numpy 1.24's max_header_size (without allow_pickle) */
#define SD_NPY_ALIGN 64             /* numpy's ARRAY_ALIGN */

typedef enum sd_npy_dtype {
    SD_NPY_F4 = 0,  /* '<f4' float32 */
    SD_NPY_F2,      /* '<f2' float16 (IEEE binary16) */
    SD_NPY_F8,      /* '<f8' float64 */
    SD_NPY_I8,      /* '<i8' int64 */
    SD_NPY_I4,      /* '<i4' int32 */
    SD_NPY_I2,      /* '<i2' int16 */
    SD_NPY_I1,      /* '|i1' int8 */
    SD_NPY_U1,      /* '|u1' uint8 */
    SD_NPY_B1,      /* '|b1' bool (one byte each) */
    SD_NPY_U2,      /* '<u2' uint16 (also how bfloat16 is stored, numpy has no bf16 descr) */
    SD_NPY_NDTYPES
} sd_npy_dtype;

typedef struct sd_npy_header {
    int version;                      /* 1, 2 or 3 (minor is always 0) */
    sd_npy_dtype dtype;
    int big_endian;                   /* data is big-endian ('>' in descr) */
    int fortran_order;
    int ndim;                         /* 0 = scalar, shape () */
    int64_t shape[SD_NPY_MAX_DIMS];
    size_t count;                     /* product of shape (1 for a scalar) */
    size_t data_offset;               /* bytes before the data: 10 or 12 + header length */
    size_t data_size;                 /* count * item size */
} sd_npy_header;

typedef struct sd_npy_array {
    sd_npy_dtype dtype;
    int ndim;
    int64_t shape[SD_NPY_MAX_DIMS];
    size_t count;
    size_t nbytes;
    void *data;                       /* malloc'd, native byte order, C order (NULL if nbytes 0) */
} sd_npy_array;

/* Item size in bytes, numpy descr ("<f4", "|u1", ...) and short name ("float32", ...). */
size_t sd_npy_itemsize(sd_npy_dtype t);
const char *sd_npy_descr(sd_npy_dtype t);
const char *sd_npy_dtype_name(sd_npy_dtype t);

/* Parse and validate the header at the start of buf (n bytes available; the data need not
 * be). SD_EFORMAT for a malformed header or a truncated one, SD_EUNSUPPORTED for a valid but
 * unsupported descr (structured, strings, objects, ...), SD_ERANGE for a header longer than
 * SD_NPY_MAX_HEADER or a size that overflows. */
int sd_npy_parse_header(const void *buf, size_t n, sd_npy_header *h);

/* Parse a whole .npy image of exactly n bytes (trailing bytes are an error) and copy the data
 * into `a` (native order, C order). Free with sd_npy_array_free(). */
int sd_npy_load(const void *buf, size_t n, sd_npy_array *a);
void sd_npy_array_free(sd_npy_array *a);

/* Format the numpy-1.24 header for (dtype, ndim, shape), little-endian, C order, into out
 * (cap bytes). Returns the header length (a multiple of 64, equal to the data offset) or a
 * negative SD_E* code. A buffer of SD_NPY_HEADER_CAP bytes always suffices. */
#define SD_NPY_HEADER_CAP 1024
long sd_npy_header_format(char *out, size_t cap, sd_npy_dtype dtype, int ndim, const int64_t *shape);

/* Encode a whole .npy image (header + data, data given in native order, C order) into a
 * malloc'd buffer. */
int sd_npy_encode(sd_npy_dtype dtype, int ndim, const int64_t *shape, const void *data,
                  void **out, size_t *n);
/* Write a whole .npy image to fp. */
int sd_npy_write(FILE *fp, sd_npy_dtype dtype, int ndim, const int64_t *shape, const void *data);

#endif
