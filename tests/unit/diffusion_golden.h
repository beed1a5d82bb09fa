/* Shared by test_schedule.c, test_objective.c and test_samplers.c: loading the JSON goldens of
 * tests/golden/gen/make_diffusion_golden.py (tests/data/diffusion/NAME.json) and comparing arrays. */
#ifndef SD_TEST_DIFFUSION_GOLDEN_H
#define SD_TEST_DIFFUSION_GOLDEN_H

#include <jv.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/fileio.h"

static inline jv g_load(const char *name)
{
    const char *root = getenv("SD_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/diffusion/%s", root && *root ? root : ".", name);
    char *text = NULL;
    size_t n = 0;
    if (sd_read_file(path, 0, &text, &n)) {
        printf("# cannot read %s\n", path);
        return jv_invalid();
    }
    jv v = jv_parse_sized(text, (int)n);
    free(text);
    return v;
}

/* borrowed field of an object (caller keeps ownership of o) */
static inline jv g_get(jv o, const char *key)
{
    return jv_object_get(jv_copy(o), jv_string(key));
}

static inline double g_num(jv o, const char *key)
{
    jv v = g_get(o, key);
    double d = jv_get_kind(v) == JV_KIND_NUMBER ? jv_number_value(v) : NAN;
    jv_free(v);
    return d;
}

static inline int g_len(jv o, const char *key)
{
    jv v = g_get(o, key);
    int n = jv_get_kind(v) == JV_KIND_ARRAY ? jv_array_length(jv_copy(v)) : -1;
    jv_free(v);
    return n;
}

/* numbers of array v (consumed) into a malloc'd double array; *n = count */
static inline double *g_arr_v(jv v, int *n)
{
    if (jv_get_kind(v) != JV_KIND_ARRAY) {
        jv_free(v);
        *n = 0;
        return NULL;
    }
    int len = jv_array_length(jv_copy(v));
    double *d = malloc(sizeof(double) * (size_t)(len > 0 ? len : 1));
    for (int i = 0; i < len; i++) {
        jv e = jv_array_get(jv_copy(v), i);
        d[i] = jv_get_kind(e) == JV_KIND_NUMBER ? jv_number_value(e) : NAN;
        jv_free(e);
    }
    jv_free(v);
    *n = len;
    return d;
}

static inline double *g_arr(jv o, const char *key, int *n)
{
    return g_arr_v(g_get(o, key), n);
}

static inline float *g_farr(jv o, const char *key, int *n)
{
    double *d = g_arr(o, key, n);
    float *f = malloc(sizeof(float) * (size_t)(*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++) f[i] = (float)d[i];
    free(d);
    return f;
}

/* max relative error of got vs want (float32 values, written as their shortest decimal: rounded
 * back to float32 here) with a floor on the denominator: |got − want| / max(|want|, floor) */
static inline double g_relerr(const float *got, const double *want, int n, double floor_)
{
    double m = 0;
    for (int i = 0; i < n; i++) {
        double w = (double)(float)want[i];
        double den = fabs(w) > floor_ ? fabs(w) : floor_;
        double e = fabs((double)got[i] - w) / den;
        if (!(e <= m)) m = e; /* NaN propagates */
    }
    return m;
}

#endif
