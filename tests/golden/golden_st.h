/* Golden-file helpers shared by the layer goldens (test_oft_golden.c, test_lycoris_train_golden.c,
 * test_lycoris_train2_golden.c): g_st is the open golden safetensors file (the test opens and closes it). */
#ifndef SD_TESTS_GOLDEN_ST_H
#define SD_TESTS_GOLDEN_ST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "tensor/tensor.h"

#define GOLDEN_UNUSED __attribute__((unused))

static sd_safetensors *g_st;

/* The golden tensor `name` as a new f32 tensor. */
static GOLDEN_UNUSED int golden(const char *name, sd_tensor *t)
{
    const sd_st_tensor *g = sd_safetensors_find(g_st, name);
    if (!g) return sd_err(SD_ENOTFOUND, "golden file has no '%s'", name);
    int rc = sd_tensor_alloc(t, SD_F32, g->ndim, g->shape);
    if (!rc) rc = sd_safetensors_read(g_st, g, SD_ST_F32, t->data, (size_t)g->numel);
    return rc;
}

/* The golden tensor `name` copied into dst (same element count). */
static GOLDEN_UNUSED int load_into(const char *name, sd_tensor *dst)
{
    sd_tensor t;
    int rc = golden(name, &t);
    if (rc) return rc;
    if (sd_tensor_numel(&t) != sd_tensor_numel(dst)) rc = sd_err(SD_EINVAL, "%s: size", name);
    else memcpy(dst->data, t.data, sd_tensor_nbytes(dst));
    sd_tensor_free(&t);
    return rc;
}

/* max|a - ref| <= tol · max|ref| (and max|ref| > 0); *diff gets max|a - ref| / max|ref|, or, when diff is
 * NULL, both maxima are printed. */
static GOLDEN_UNUSED int close_to_d(const char *what, const float *a, const char *ref_name, double tol, double *diff)
{
    sd_tensor ref;
    if (golden(ref_name, &ref)) {
        printf("# %s\n", sd_errmsg());
        return 0;
    }
    const float *r = ref.data;
    double m = 0, e = 0;
    for (int64_t i = 0; i < sd_tensor_numel(&ref); i++) {
        m = fmax(m, fabs(r[i]));
        e = fmax(e, fabs((double)a[i] - r[i]));
    }
    sd_tensor_free(&ref);
    if (diff) *diff = m > 0 ? e / m : INFINITY;
    else printf("#   %s: max|diff| %.3g, max|ref| %.3g\n", what, e, m);
    return e <= tol * m && m > 0;
}

static GOLDEN_UNUSED int close_to(const char *what, const float *a, const char *ref_name, double tol)
{
    return close_to_d(what, a, ref_name, tol, NULL);
}

#endif
