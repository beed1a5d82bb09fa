/* The ONNX runtime's optimisation pass (models/onnx_opt.c) against
 * tests/golden/gen/make_onnx_fuse_golden.py and against itself with the pass off (SD_ONNX_NO_OPT=1):
 *  - fuse.onnx: one case per pattern (decomposed LayerNorm, Erf/Tanh GELU, SiLU, MatMul + bias +
 *    activation, Conv + BatchNormalization + Relu, scaled MatMul with a transposed operand, attention, constant
 *    folding) and cases that must not fuse (an intermediate value with another reader) or that fuse but
 *    must fall back at run time (a LayerNorm over a middle axis): the pass reports exactly the
 *    expected fusions, and the output matches numpy (float64) with the pass on and off;
 *  - every golden graph of tests/data/onnx (torch-exported ConvNeXt and SwinV2 taggers, the tf2onnx-style
 *    graph, the operator graph): the fused run equals the unfused one within 2e-5 and fuses what it
 *    should (the ConvNeXt's MatMul+bias+GELU, the SwinV2's decomposed LayerNorms, the tf2onnx Conv+BN);
 *  - a second run on the same runtime (buffers from the pool) gives the same bytes as the first, and
 *    1 thread the same bytes as 2. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "models/onnx_run.h"
#include "test.h"

static sd_ctx g_ctx;

static const char *data_path(const char *name) { return t_root_pathf("tests/data/onnx/%s", name); }

static float *pattern(int n, int s)
{
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)s * (size_t)s * 3);
    for (int b = 0; b < n; b++)
        for (int h = 0; h < s; h++)
            for (int w = 0; w < s; w++)
                for (int c = 0; c < 3; c++)
                    x[(((size_t)b * s + h) * s + w) * 3 + c] =
                        (float)((b * 97 + h * 31 + w * 17 + c * 71 + (h * w) % 13 * 11) % 256);
    return x;
}

static int read_golden(const char *key, float **out, int64_t *n)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(data_path("onnx_fuse_golden.safetensors"), &st);
    const sd_st_tensor *t = NULL;
    if (!rc) rc = sd_safetensors_get(st, key, &t);
    if (!rc) {
        *n = t->numel;
        *out = malloc(sizeof(float) * (size_t)t->numel);
        rc = sd_safetensors_read(st, t, SD_ST_F32, *out, (size_t)t->numel);
    }
    sd_safetensors_close(st);
    return rc;
}

/* open `file` with the pass on (opt = 1) or off, run it on pattern(n, s) `runs` times (every run
 * must give the same bytes); output count to *cnt, the stats to stats[] */
static float *run(const char *file, int opt, int n, int s, int runs, int64_t *cnt, int *stats)
{
    setenv("SD_ONNX_NO_OPT", opt ? "0" : "1", 1);
    sd_onnx_run r;
    int rc = sd_onnx_run_open(&r, data_path(file));
    unsetenv("SD_ONNX_NO_OPT");
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return NULL;
    T_EQ_INT(r.opt, opt);
    if (stats) memcpy(stats, r.stats, sizeof(int) * SD_ONNX_OPT_NKINDS);
    float *x = pattern(n, s), *y = NULL;
    int64_t ys[SD_ONNX_MAX_DIMS];
    int ynd = 0;
    for (int k = 0; k < runs; k++) {
        float *yk = NULL;
        rc = sd_onnx_run_forward(&r, &g_ctx, x, 4, (int64_t[]){ n, s, s, 3 }, &yk, &ynd, ys);
        T_CHECKF(rc == 0, "%s: %s", file, sd_errmsg());
        if (rc) break;
        *cnt = 1;
        for (int d = 0; d < ynd; d++) *cnt *= ys[d];
        if (!y) {
            y = yk;
        } else {
            T_CHECKF(!memcmp(y, yk, sizeof(float) * (size_t)*cnt), "%s: run %d differs from run 1", file, k + 1);
            free(yk);
        }
    }
    free(x);
    sd_onnx_run_close(&r);
    return y;
}

/* max |a - b| / max(1, |b|) */
static double rel_err(const float *a, const float *b, int64_t n)
{
    double w = 0;
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i])));
    return w;
}

static void fuse_patterns(void)
{
    float *ref = NULL, *st = NULL;
    int64_t nref = 0, nst = 0, c1 = 0, c0 = 0;
    int s1[SD_ONNX_OPT_NKINDS], s0[SD_ONNX_OPT_NKINDS];
    int rc = read_golden("fuse.y", &ref, &nref);
    if (!rc) rc = read_golden("fuse.stats", &st, &nst);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return;
    T_EQ_INT(nst, SD_ONNX_OPT_NKINDS);
    float *y1 = run("fuse.onnx", 1, 1, 8, 2, &c1, s1), *y0 = run("fuse.onnx", 0, 1, 8, 1, &c0, s0);
    for (int k = 0; k < SD_ONNX_OPT_NKINDS && k < nst; k++) {
        T_CHECKF(s1[k] == (int)st[k], "kind %d: %d fused, expected %d", k, s1[k], (int)st[k]);
        T_CHECKF(s0[k] == 0, "kind %d: %d with the pass off", k, s0[k]);
    }
    T_EQ_INT(c1, nref);
    T_EQ_INT(c0, nref);
    if (y1 && y0 && c1 == nref && c0 == nref) {
        double e1 = rel_err(y1, ref, nref), e0 = rel_err(y0, ref, nref), e10 = rel_err(y1, y0, nref);
        printf("#   fuse.onnx: %lld values; fused vs numpy %.3g, unfused vs numpy %.3g, fused vs unfused %.3g\n",
               (long long)nref, e1, e0, e10);
        T_CHECKF(e1 <= 2e-5, "fused vs numpy %g", e1);
        T_CHECKF(e0 <= 2e-5, "unfused vs numpy %g", e0);
        T_CHECKF(e10 <= 2e-5, "fused vs unfused %g", e10);
    }
    /* the fused kernels give the same bytes on 1 thread as on 2 */
    int64_t ct = 0;
    sd_ctx_set_threads(&g_ctx, 1);
    float *yt = run("fuse.onnx", 1, 1, 8, 1, &ct, NULL);
    sd_ctx_set_threads(&g_ctx, 2);
    T_CHECKF(yt && y1 && ct == c1 && !memcmp(yt, y1, sizeof(float) * (size_t)c1), "fuse.onnx: 1 vs 2 threads differ");
    free(yt);
    free(y1);
    free(y0);
    free(ref);
    free(st);
}

/* the golden graphs, pass on vs off; `kind` must have fused at least once */
static void same_unfused(const char *file, int n, int s, int kind)
{
    int64_t c1 = 0, c0 = 0;
    int s1[SD_ONNX_OPT_NKINDS];
    float *y1 = run(file, 1, n, s, 2, &c1, s1), *y0 = run(file, 0, n, s, 1, &c0, NULL);
    T_CHECKF(s1[kind] > 0, "%s: nothing of kind %d fused", file, kind);
    T_EQ_INT(c1, c0);
    if (y1 && y0 && c1 == c0) {
        double e = 0;
        for (int64_t i = 0; i < c1; i++) e = fmax(e, fabs((double)y1[i] - y0[i]));
        printf("#   %s: folded %d, LayerNorm %d, act %d, linear %d, MatMul-T %d, Conv %d, attention %d; "
               "max|fused - unfused| = %.3g\n",
               file, s1[0], s1[1], s1[2], s1[3], s1[4], s1[5], s1[6], e);
        T_CHECKF(e <= 2e-5, "%s: %g", file, e);
    }
    free(y1);
    free(y0);
}

static void fuse_goldens(void)
{
    same_unfused("convnext.onnx", 2, 64, SD_ONNX_OPT_LINEAR);
    same_unfused("swinv2.onnx", 1, 64, SD_ONNX_OPT_LAYERNORM);
    same_unfused("tf2onnx.onnx", 1, 16, SD_ONNX_OPT_CONV);
    same_unfused("ops.onnx", 1, 6, SD_ONNX_OPT_FOLDED);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0)) {
        printf("not ok ctx\n");
        return 1;
    }
    T_RUN(fuse_patterns);
    T_RUN(fuse_goldens);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
