/* libFuzzer target for the .npy reader: any input either loads or fails with a negative code and
 * a one-line message; a loaded array is consistent (nbytes = count * itemsize, shape product =
 * count), its data is touched, and re-encoding it with sd_npy_encode gives an image that loads
 * back to the same array (C order, native bytes). */
#include "base/error.h"
#include "io/npy.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_npy_header h;
    int hrc = sd_npy_parse_header(data, size, &h);
    if (hrc == SD_OK && (h.data_offset > size || h.ndim < 0 || h.ndim > SD_NPY_MAX_DIMS)) abort();
    sd_npy_array a;
    int rc = sd_npy_load(data, size, &a);
    if (rc != SD_OK) {
        const char *m = sd_errmsg();
        if (rc >= 0 || !*m || strchr(m, '\n') || a.data) abort();
        if (hrc == SD_OK && rc != SD_EFORMAT) abort();  /* only the data size can be wrong then */
        return 0;
    }
    if (hrc != SD_OK) abort();
    size_t count = 1;
    for (int i = 0; i < a.ndim; i++) count *= (size_t)a.shape[i];
    if (count != a.count || a.nbytes != count * sd_npy_itemsize(a.dtype)) abort();
    unsigned sum = 0;
    for (size_t i = 0; i < a.nbytes; i++) sum += ((unsigned char *)a.data)[i];
    if (sum > 255u * a.nbytes) abort();  /* touches every byte (ASan checks the bounds) */
    void *enc;
    size_t n;
    if (sd_npy_encode(a.dtype, a.ndim, a.shape, a.data, &enc, &n) != SD_OK) abort();
    sd_npy_array b;
    if (sd_npy_load(enc, n, &b) != SD_OK) abort();
    if (b.dtype != a.dtype || b.ndim != a.ndim || memcmp(b.shape, a.shape, sizeof a.shape) ||
        b.nbytes != a.nbytes || (a.nbytes && memcmp(a.data, b.data, a.nbytes)))
        abort();
    if (((n - a.nbytes) % 64) != 0) abort();  /* our headers keep the data 64-aligned */
    sd_npy_array_free(&b);
    free(enc);
    sd_npy_array_free(&a);
    return 0;
}
