/* Test-only double-precision backend for the op API (used by tests/grad/test_nn_layers.c).
 *
 * The program defines every sd_cpu_* entry point itself, so the linker takes these instead of
 * lib/tensor/cpu_elem.o and cpu_nn.o: ops.c validates as usual and then lands here, where each
 * f32 tensor's numbers live in a double "shadow" of its memory region (element i of a float at
 * address p is the double at shadow(p)). The entry points are the library's own
 * (lib/tensor/cpu_wrap_elem.h and cpu_wrap_nn.h) and so are the kernels (kern_*.h), both
 * instantiated in double (SD_KERN_F64): only fill, convert, FP() and the weight view are
 * defined here, so every layer in lib/nn runs unchanged in double precision. Regions
 * (parameter blocks, arenas, the ctx scratch) are registered with shadow_add(); half-precision
 * tensors and host uploads are not shadowed. */
#ifndef TEST_NN_F64_H
#define TEST_NN_F64_H

#define SD_KERN_F64
#include "tensor/kern_attn.h"
#include "tensor/kern_conv.h"
#include "tensor/kern_dwconv.h"
#include "tensor/kern_elem.h"
#include "tensor/kern_linear.h"
#include "tensor/kern_norm.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "base/half.h"
#include "tensor/backend.h"

typedef struct { const unsigned char *base; size_t cap; double *shadow; } shadow_region;
static shadow_region g_shadow[32];
static int g_nshadow;

static void shadow_add(const void *base, size_t cap)
{
    if (!base || !cap) return;
    if (g_nshadow == 32) { fprintf(stderr, "shadow_add: too many regions\n"); abort(); }
    void *s = mmap(NULL, cap * 2 + 64, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) { fprintf(stderr, "shadow_add: mmap failed\n"); abort(); }
    g_shadow[g_nshadow].base = base;
    g_shadow[g_nshadow].cap = cap;
    g_shadow[g_nshadow].shadow = s;
    g_nshadow++;
}

static void shadow_remove(const void *base)
{
    for (int i = 0; i < g_nshadow; i++)
        if (g_shadow[i].base == base) {
            munmap(g_shadow[i].shadow, g_shadow[i].cap * 2 + 64);
            memmove(&g_shadow[i], &g_shadow[i + 1], (size_t)(g_nshadow - i - 1) * sizeof *g_shadow);
            g_nshadow--;
            return;
        }
}

static void shadow_clear(void)
{
    for (int i = 0; i < g_nshadow; i++) munmap(g_shadow[i].shadow, g_shadow[i].cap * 2 + 64);
    g_nshadow = 0;
}

static double *shadow_of(const void *p)
{
    const unsigned char *c = p;
    for (int i = g_nshadow - 1; i >= 0; i--)
        if (c >= g_shadow[i].base && c < g_shadow[i].base + g_shadow[i].cap)
            return g_shadow[i].shadow + (c - g_shadow[i].base) / 4;
    fprintf(stderr, "shadow_of: %p is in no registered region\n", p);
    abort();
}

#define FP(t) ((t) ? shadow_of((t)->data) : NULL)

int sd_cpu_fill(sd_ctx *ctx, sd_tensor *y, float value)
{
    if (y->dtype != SD_F32) return sd_err(SD_EUNSUPPORTED, "f64 test backend: fill of a half tensor");
    double *p = FP(y);
    int64_t n = sd_tensor_numel(y);
    for (int64_t i = 0; i < n; i++) p[i] = value;
    return SD_OK;
}

int sd_cpu_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    if (x->dtype == SD_F16 && y->dtype == SD_F32) {
        /* half tensors are not shadowed: read their host bits (the layers' uploaded dropout flags) */
        const uint16_t *h = x->data;
        double *o = shadow_of(y->data);
        for (int64_t i = 0, n = sd_tensor_numel(x); i < n; i++) o[i] = sd_f16_to_f32(h[i]);
        return SD_OK;
    }
    if (x->dtype != SD_F32 || y->dtype != SD_F32) return sd_err(SD_EUNSUPPORTED, "f64 test backend: half conversion");
    memmove(shadow_of(y->data), shadow_of(x->data), (size_t)sd_tensor_numel(x) * sizeof(double));
    return SD_OK;
}

#include "tensor/cpu_wrap_elem.h"

static const real *weight_real(sd_ctx *ctx, const sd_tensor *w, int *rc)
{
    (void)ctx;
    *rc = SD_OK;
    if (w->dtype == SD_F32) return FP(w);
    *rc = sd_err(SD_EUNSUPPORTED, "f64 test backend: half weight");
    return NULL;
}

#include "tensor/cpu_wrap_nn.h"

#endif
