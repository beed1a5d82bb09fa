/* The ONNX runtime (io/onnx.h, models/onnx_run.h) against tests/golden/gen/make_onnx_golden.py:
 *  - convnext.onnx (torch-exported tiny ConvNeXt tagger, opset 17, dynamic batch, run at batch 2)
 *    and swinv2.onnx (tiny SwinV2, opset 13, batch fixed to 1): the probabilities match torch's
 *    (max|Δ| <= 2e-5) and the sigmoid of our safetensors path on the same weights
 *    (tests/data/tagger/convnext_tiny.safetensors, tests/data/onnx/swinv2_w4.safetensors);
 *  - tf2onnx.onnx (a hand-built graph in the tf2onnx style): the numpy reference (max|Δ| <= 2e-5);
 *  - ops.onnx (the remaining operators, each on the input, flattened into one output): numpy;
 *  - 1 vs 2 threads give identical outputs;
 *  - hostile but valid graphs (huge shapes, out-of-range indices, mixed types) fail in the node, named;
 *  - graphs with an unsupported operator, an operator of another domain, external data, a cycle or
 *    an input nothing produces are refused at open with messages naming the file, the op and node.
 * The inputs are the generator's pattern(): NHWC 0..255 integers computed here too.
 * One-off: SD_ONNX_FULL=DIR checks a full-size graph (see onnx_full).
 * One-off: SD_ONNX_VIT=/tmp also checks the torch-exported tiny ViT tagger (VIT=1 make_onnx_golden.py). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "models/onnx_run.h"
#include "models/tagger.h"
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

static const char *g_golden; /* the golden file */

static int read_golden(const char *key, float **out, int64_t *n)
{
    sd_safetensors *st = NULL;
    int rc = sd_safetensors_open(g_golden, &st);
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

/* run `file` on pattern(n, size): max|Δ| against golden `name`.y; the output to *y (caller frees) */
static double run_one(const char *file, const char *name, int n, int size, int threads, float **yout, int64_t *ycount)
{
    sd_onnx_run r;
    int rc = sd_onnx_run_open(&r, strchr(file, '/') ? file : data_path(file));
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return 1e9;
    float *x = pattern(n, size), *y = NULL, *ref = NULL;
    int64_t shape[4] = { n, size, size, 3 }, ys[SD_ONNX_MAX_DIMS], nref = 0;
    int ynd = 0;
    sd_ctx_set_threads(&g_ctx, threads);
    rc = sd_onnx_run_forward(&r, &g_ctx, x, 4, shape, &y, &ynd, ys);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    char key[64];
    snprintf(key, sizeof key, "%s.y", name);
    double worst = 1e9;
    if (!rc && read_golden(key, &ref, &nref) == 0) {
        T_EQ_INT(ynd, 2);
        int64_t cnt = ynd == 2 ? ys[0] * ys[1] : 0;
        T_EQ_INT(cnt, nref);
        if (cnt == nref) {
            worst = 0;
            for (int64_t i = 0; i < cnt; i++) worst = fmax(worst, fabs((double)y[i] - ref[i]));
        }
        *ycount = cnt;
    }
    free(ref);
    free(x);
    if (yout)
        *yout = y;
    else
        free(y);
    sd_onnx_run_close(&r);
    return worst;
}

/* the safetensors path on the same input: sigmoid(logits) */
static float *st_probs(const char *path, int n, int size, int64_t *count)
{
    sd_safetensors *st = NULL;
    sd_tagger m;
    float *p = NULL;
    int rc = sd_safetensors_open(path, &st);
    if (!rc) rc = sd_tagger_open(&m, st, SD_DEV_CPU);
    sd_safetensors_close(st);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return NULL;
    float *x = pattern(n, size);
    sd_tensor xt = { 0 }, yt = { 0 };
    rc = sd_tensor_alloc(&xt, SD_F32, 4, (int64_t[]){ n, 3, size, size });
    if (!rc) rc = sd_tensor_alloc(&yt, SD_F32, 2, (int64_t[]){ n, m.classes });
    if (!rc) {
        float *c = xt.data;
        for (int b = 0; b < n; b++)
            for (int ch = 0; ch < 3; ch++)
                for (int i = 0; i < size * size; i++)
                    c[((size_t)b * 3 + ch) * size * size + i] =
                        x[((size_t)b * size * size + i) * 3 + ch] / 127.5f - 1.0f;
        rc = sd_tagger_forward(&g_ctx, &m, &yt, &xt);
    }
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (!rc) {
        *count = n * m.classes;
        p = malloc(sizeof(float) * (size_t)*count);
        for (int64_t i = 0; i < *count; i++) p[i] = 1.0f / (1.0f + expf(-((float *)yt.data)[i]));
    }
    sd_tensor_free(&xt);
    sd_tensor_free(&yt);
    sd_tagger_free(&m);
    free(x);
    return p;
}

static void check_tagger(const char *file, const char *name, int n, const char *st_path)
{
    float *y = NULL, *y2 = NULL;
    int64_t cnt = 0, cnt2 = 0, cs = 0;
    double e = run_one(file, name, n, 64, 2, &y, &cnt);
    printf("#   %s: max|onnx - torch| = %.3g\n", file, e);
    T_CHECKF(e <= 2e-5, "%s: %g", file, e);
    double e1 = run_one(file, name, n, 64, 1, &y2, &cnt2);
    T_CHECK(e1 <= 2e-5);
    T_CHECK(y && y2 && cnt == cnt2 && !memcmp(y, y2, sizeof(float) * (size_t)cnt));
    float *p = st_probs(st_path, n, 64, &cs);
    if (p && y && cs == cnt) {
        double d = 0;
        for (int64_t i = 0; i < cnt; i++) d = fmax(d, fabs((double)p[i] - y[i]));
        printf("#   %s: max|onnx - safetensors path| = %.3g\n", file, d);
        T_CHECKF(d <= 2e-5, "%g", d);
    } else {
        T_CHECKF(0, "safetensors path: %lld vs %lld outputs", (long long)cs, (long long)cnt);
    }
    free(p);
    free(y);
    free(y2);
}

static void onnx_convnext(void)
{
    check_tagger("convnext.onnx", "convnext", 2, t_root_pathf("tests/data/tagger/convnext_tiny.safetensors"));
}
static void onnx_swinv2(void) { check_tagger("swinv2.onnx", "swinv2", 1, data_path("swinv2_w4.safetensors")); }

/* One-off (not part of make check): SD_ONNX_VIT=DIR checks DIR/vit.onnx against
 * DIR/onnx_golden_vit.safetensors (VIT=1 make_onnx_golden.py writes both to /tmp). */
static const char *g_vit;
static void onnx_vit(void)
{
    static char onnx_path[512], golden[512];
    snprintf(onnx_path, sizeof onnx_path, "%s/vit.onnx", g_vit);
    snprintf(golden, sizeof golden, "%s/onnx_golden_vit.safetensors", g_vit);
    const char *keep = g_golden;
    g_golden = golden;
    check_tagger(onnx_path, "vit", 2, t_root_pathf("tests/data/tagger/tagger_tiny.safetensors"));
    g_golden = keep;
}

/* One-off: SD_ONNX_FULL=DIR runs DIR/model.onnx (a full-size tagger graph) on pattern(1, S) against
 * DIR/golden.safetensors "full.y" (max|Δ| <= 1e-4). */
static const char *g_full;
static void onnx_full(void)
{
    static char onnx_path[512], golden[512];
    snprintf(onnx_path, sizeof onnx_path, "%s/model.onnx", g_full);
    snprintf(golden, sizeof golden, "%s/golden.safetensors", g_full);
    sd_onnx_run r;
    int rc = sd_onnx_run_open(&r, onnx_path);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return;
    int size = (int)r.in_info.dims[1];
    sd_onnx_run_close(&r);
    const char *keep = g_golden;
    g_golden = golden;
    int64_t cnt = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double e = run_one(onnx_path, "full", 1, size, 2, NULL, &cnt);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("#   %s: %lld outputs, max|onnx - torch| = %.3g, %.1f s (open + run)\n", onnx_path, (long long)cnt, e,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    T_CHECKF(e <= 1e-4, "%g", e);
    g_golden = keep;
}

static void onnx_tf2onnx(void)
{
    int64_t cnt = 0;
    double e = run_one("tf2onnx.onnx", "tf2onnx", 1, 16, 2, NULL, &cnt);
    printf("#   tf2onnx.onnx: max|onnx - numpy| = %.3g\n", e);
    T_CHECKF(e <= 2e-5, "%g", e);
    T_EQ_INT(cnt, 12);
}

/* ops.onnx: the operators the taggers leave out, each result flattened into one output */
static void onnx_ops(void)
{
    sd_onnx_run r;
    int rc = sd_onnx_run_open(&r, data_path("ops.onnx"));
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return;
    float *x = pattern(1, 6), *y = NULL, *ref = NULL;
    int64_t ys[SD_ONNX_MAX_DIMS], nref = 0;
    int ynd = 0;
    rc = sd_onnx_run_forward(&r, &g_ctx, x, 4, (int64_t[]){ 1, 6, 6, 3 }, &y, &ynd, ys);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    int grc = rc ? rc : read_golden("ops.y", &ref, &nref);
    T_CHECKF(grc == 0, "%s", sd_errmsg());
    if (!grc) {
        T_CHECKF(ynd == 2 && ys[0] == 1 && ys[1] == nref, "output %d-D [%lld, %lld], golden %lld", ynd, (long long)ys[0],
                 (long long)ys[1], (long long)nref);
        double worst = 0;
        int64_t at = -1;
        for (int64_t i = 0; ynd == 2 && ys[1] == nref && i < nref; i++) {
            double d = fabs((double)y[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
            if (d > worst) {
                worst = d;
                at = i;
            }
        }
        printf("#   ops.onnx: %lld values, max relative |onnx - numpy| = %.3g (at %lld)\n", (long long)nref, worst,
               (long long)at);
        T_CHECKF(worst <= 2e-5, "value %lld: %g vs %g", (long long)at, at >= 0 ? y[at] : 0.0, at >= 0 ? ref[at] : 0.0);
    }
    free(ref);
    free(y);
    free(x);
    sd_onnx_run_close(&r);
}

static void onnx_info(void)
{
    sd_onnx_run r;
    int rc = sd_onnx_run_open(&r, data_path("swinv2.onnx"));
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return;
    T_EQ_INT(r.m.opset, 13);
    T_EQ_INT(r.in_info.ndim, 4);
    T_EQ_INT(r.in_info.dims[0], 1);
    T_EQ_INT(r.in_info.dims[1], 64);
    T_EQ_INT(r.in_info.dims[3], 3);
    sd_onnx_run_close(&r);
    rc = sd_onnx_run_open(&r, data_path("convnext.onnx"));
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return;
    T_EQ_INT(r.m.opset, 17);
    T_EQ_INT(r.in_info.dims[0], -1); /* dim_param "batch" */
    /* a wrong input shape fails in a node, naming the file */
    float x[3 * 8 * 8] = { 0 };
    float *y = NULL;
    int ynd;
    int64_t ys[8];
    rc = sd_onnx_run_forward(&r, &g_ctx, x, 4, (int64_t[]){ 1, 8, 8, 3 }, &y, &ynd, ys);
    T_CHECK(rc < 0);
    T_CHECKF(strstr(sd_errmsg(), "convnext.onnx: node '"), "%s", sd_errmsg());
    free(y);
    sd_onnx_run_close(&r);
}

/* ---- hand-encoded models for the refusals ------------------------------------------------- */

typedef struct buf {
    uint8_t b[4096];
    size_t n;
} buf;

static void put_varint(buf *o, uint64_t v)
{
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        o->b[o->n++] = c | (v ? 0x80 : 0);
    } while (v);
}
static void put_key(buf *o, int f, int w) { put_varint(o, (uint64_t)f << 3 | (uint64_t)w); }
static void put_bytes(buf *o, int f, const void *p, size_t n)
{
    put_key(o, f, 2);
    put_varint(o, n);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put_str(buf *o, int f, const char *s) { put_bytes(o, f, s, strlen(s)); }
static void put_msg(buf *o, int f, const buf *m) { put_bytes(o, f, m->b, m->n); }
static void put_int(buf *o, int f, uint64_t v)
{
    put_key(o, f, 0);
    put_varint(o, v);
}

/* ModelProto { ir_version 7, opset 13, graph { nodes, input "x", output "y", initializers } } */
static void model(buf *out, const buf *nodes, const buf *inits, const char *outname)
{
    buf g = { 0 }, vi = { 0 }, vo = { 0 }, op = { 0 };
    memcpy(g.b, nodes->b, nodes->n);
    g.n = nodes->n;
    if (inits) {
        memcpy(g.b + g.n, inits->b, inits->n);
        g.n += inits->n;
    }
    put_str(&vi, 1, "x");
    put_msg(&g, 11, &vi);
    put_str(&vo, 1, outname);
    put_msg(&g, 12, &vo);
    out->n = 0;
    put_int(out, 1, 7);
    put_int(&op, 2, 13);
    put_msg(out, 8, &op);
    put_msg(out, 7, &g);
}

static void node(buf *g, const char *op, const char *domain, const char *name, const char *in, const char *in2,
                 const char *out)
{
    buf n = { 0 };
    put_str(&n, 1, in);
    if (in2) put_str(&n, 1, in2);
    put_str(&n, 2, out);
    put_str(&n, 3, name);
    put_str(&n, 4, op);
    if (domain) put_str(&n, 7, domain);
    put_msg(g, 1, &n);
}

static void refused(const char *what, const buf *m, int want, const char *a, const char *b)
{
    const char *p = t_path("refused.onnx");
    T_CHECK(t_write_file(p, m->b, m->n) == 0);
    sd_onnx_run r;
    int rc = sd_onnx_run_open(&r, p);
    T_CHECKF(rc == want, "%s: rc %d: %s", what, rc, sd_errmsg());
    T_CHECKF(strstr(sd_errmsg(), "refused.onnx: ") && strstr(sd_errmsg(), a) && (!b || strstr(sd_errmsg(), b)),
             "%s: %s", what, sd_errmsg());
    if (!rc) sd_onnx_run_close(&r);
}

static void onnx_refusals(void)
{
    buf g = { 0 }, m = { 0 };
    node(&g, "Relu", NULL, "ok", "x", NULL, "y");
    model(&m, &g, NULL, "y");
    const char *p = t_path("ok.onnx");
    T_CHECK(t_write_file(p, m.b, m.n) == 0);
    sd_onnx_run r;
    T_CHECKF(sd_onnx_run_open(&r, p) == 0, "%s", sd_errmsg());
    sd_onnx_run_close(&r);

    g.n = 0;
    node(&g, "Relu", NULL, "first", "x", NULL, "a");
    node(&g, "NonMaxSuppression", NULL, "the_nms", "a", NULL, "y");
    model(&m, &g, NULL, "y");
    refused("unsupported op", &m, SD_EUNSUPPORTED, "operator NonMaxSuppression", "node 'the_nms'");

    g.n = 0;
    node(&g, "FusedMatMul", "com.microsoft", "fused", "x", NULL, "y");
    model(&m, &g, NULL, "y");
    refused("other domain", &m, SD_EUNSUPPORTED, "com.microsoft", "node 'fused'");

    g.n = 0;
    node(&g, "Add", NULL, "a1", "x", "b", "a");
    node(&g, "Add", NULL, "a2", "a", "a", "b");
    node(&g, "Relu", NULL, "r", "b", NULL, "y");
    model(&m, &g, NULL, "y");
    refused("cycle", &m, SD_EFORMAT, "cycle", NULL);

    g.n = 0;
    node(&g, "Add", NULL, "lost", "x", "nowhere", "y");
    model(&m, &g, NULL, "y");
    refused("dangling input", &m, SD_EFORMAT, "'nowhere'", "node 'lost'");

    /* an initializer stored in an external file */
    buf t = { 0 }, in = { 0 }, ext = { 0 };
    put_int(&t, 1, 2);
    put_int(&t, 2, 1);
    put_str(&t, 8, "w");
    put_str(&ext, 1, "location");
    put_str(&ext, 2, "weights.bin");
    put_msg(&t, 13, &ext);
    put_int(&t, 14, 1);
    put_msg(&in, 5, &t);
    g.n = 0;
    node(&g, "Add", NULL, "add", "x", "w", "y");
    model(&m, &g, &in, "y");
    refused("external data", &m, SD_EUNSUPPORTED, "'w' is stored in an external data file", NULL);

    /* raw_data of the wrong size */
    buf t2 = { 0 }, in2 = { 0 };
    put_int(&t2, 1, 3);
    put_int(&t2, 2, 1);
    put_str(&t2, 8, "w");
    put_bytes(&t2, 9, "\0\0\0\0\0\0\0\0", 8);
    put_msg(&in2, 5, &t2);
    model(&m, &g, &in2, "y");
    refused("raw_data size", &m, SD_EFORMAT, "raw_data has 8 bytes", "need 12");

    /* the graph output not produced */
    g.n = 0;
    node(&g, "Relu", NULL, "r", "x", NULL, "a");
    model(&m, &g, NULL, "y");
    refused("no output", &m, SD_EFORMAT, "graph output 'y'", NULL);
}

/* an int64 initializer */
static void init_i64(buf *in, const char *name, const int64_t *v, int n)
{
    buf t = {0}, pk = {0};
    put_int(&t, 1, (uint64_t)n);
    put_int(&t, 2, 7);
    put_str(&t, 8, name);
    for (int i = 0; i < n; i++) put_varint(&pk, (uint64_t)v[i]);
    put_msg(&t, 7, &pk);
    put_msg(in, 5, &t);
}

/* hostile but well-formed graphs: each node fails at run time with a message naming it, no crash */
static void run_fails(const char *what, const char *op, const int64_t *c, int nc, const char *attr_name, int64_t attr,
                      const char *msg)
{
    buf g = {0}, m = {0}, in = {0}, n = {0}, a = {0};
    init_i64(&in, "c", c, nc);
    put_str(&n, 1, "x");
    put_str(&n, 1, "c");
    if (!strcmp(op, "Slice")) {   /* starts c, ends c, axes, steps */
        put_str(&n, 1, "c");
        put_str(&n, 1, "zero");
        put_str(&n, 1, "c");
        int64_t z = 0;
        init_i64(&in, "zero", &z, 1);
    }
    put_str(&n, 2, "y");
    put_str(&n, 3, "hostile");
    put_str(&n, 4, op);
    if (attr_name) {
        put_str(&a, 1, attr_name);
        put_int(&a, 3, (uint64_t)attr);
        put_int(&a, 20, 2);
        put_msg(&n, 5, &a);
    }
    put_msg(&g, 1, &n);
    model(&m, &g, &in, "y");
    const char *p = t_path("hostile.onnx");
    T_CHECK(t_write_file(p, m.b, m.n) == 0);
    sd_onnx_run r;
    int rc = sd_onnx_run_open(&r, p);
    T_CHECKF(rc == 0, "%s: %s", what, sd_errmsg());
    if (rc) return;
    float x[4] = { 1, 2, 3, 4 }, *y = NULL;
    int ynd;
    int64_t ys[8];
    rc = sd_onnx_run_forward(&r, &g_ctx, x, 1, (int64_t[]){ 4 }, &y, &ynd, ys);
    if (!msg) {
        T_CHECKF(rc == 0, "%s: %s", what, sd_errmsg());
    } else {
        T_CHECKF(rc < 0 && strstr(sd_errmsg(), "hostile.onnx: node 'hostile'") && strstr(sd_errmsg(), msg), "%s: rc %d: %s",
                 what, rc, sd_errmsg());
    }
    free(y);
    sd_onnx_run_close(&r);
}

static void onnx_hostile(void)
{
    int64_t big[2] = { (int64_t)1 << 40, (int64_t)1 << 40 }, huge = INT64_MAX, neg = -5, idx = 7;
    run_fails("reshape huge", "Reshape", big, 2, NULL, 0, "too large");
    run_fails("reshape mismatch", "Reshape", (int64_t[]){ 3 }, 1, NULL, 0, "cannot reshape");
    run_fails("tile huge", "Tile", &huge, 1, NULL, 0, "too large");
    run_fails("expand huge", "Expand", (int64_t[]){ (int64_t)1 << 40, 1 }, 2, NULL, 0, "too large");
    run_fails("expand mismatch", "Expand", big, 2, NULL, 0, "cannot broadcast");
    run_fails("gather out of range", "Gather", &idx, 1, NULL, 0, "Gather index 7 out of range");
    run_fails("gather bad axis", "Gather", &neg, 1, "axis", 3, "axis 3 out of range");
    run_fails("pad negative", "Pad", (int64_t[]){ -9, 0 }, 2, NULL, 0, "negative size");
    run_fails("unsqueeze bad axis", "Unsqueeze", &idx, 1, NULL, 0, "out of range");
    run_fails("split too large", "Split", &huge, 1, NULL, 0, "larger than the axis");
    run_fails("slice extreme step", "Slice", (int64_t[]){ INT64_MIN }, 1, NULL, 0, NULL);   /* one element: fine */
    run_fails("add int and float", "Add", &idx, 1, NULL, 0, "different types");
    run_fails("matmul int", "MatMul", &idx, 1, NULL, 0, "integer");
}

/* every prefix and many one-byte corruptions of tf2onnx.onnx: an error or a model, never a crash */
static void onnx_truncated_and_corrupt(void)
{
    FILE *f = fopen(data_path("tf2onnx.onnx"), "rb");
    T_CHECK(f != NULL);
    if (!f) return;
    static uint8_t d[16384];
    size_t n = fread(d, 1, sizeof d, f);
    fclose(f);
    T_CHECK(n > 1000 && n < sizeof d);
    int errors = 0, trunc_msgs = 0;
    for (size_t k = 0; k < n; k++) {
        sd_onnx_model m;
        int rc = sd_onnx_parse(d, k, "cut.onnx", &m);
        if (rc) {
            errors++;
            if (strstr(sd_errmsg(), "cut.onnx: ") &&
                (strstr(sd_errmsg(), "truncated") || strstr(sd_errmsg(), "past the end")))
                trunc_msgs++;
        } else {
            sd_onnx_free(&m);
        }
    }
    printf("#   %zu prefixes: %d refused, %d as truncated\n", n, errors, trunc_msgs);
    T_CHECK(errors > (int)n / 2);
    T_CHECK(trunc_msgs > (int)n / 4);
    uint8_t *c = malloc(n);
    for (size_t k = 0; k < n; k += 3) {
        memcpy(c, d, n);
        c[k] ^= (uint8_t)(t_mix32((uint32_t)k) | 1);
        sd_onnx_model m;
        if (sd_onnx_parse(c, n, "bad.onnx", &m) == 0)
            sd_onnx_free(&m);
        else
            T_CHECKF(strstr(sd_errmsg(), "bad.onnx: ") != NULL, "%s", sd_errmsg());
    }
    free(c);
}

int main(void)
{
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, 2, 0)) {
        printf("not ok ctx\n");
        return 1;
    }
    static char golden[1024];   /* data_path's buffers rotate */
    snprintf(golden, sizeof golden, "%s", data_path("onnx_golden.safetensors"));
    g_golden = golden;
    T_RUN(onnx_convnext);
    T_RUN(onnx_swinv2);
    T_RUN(onnx_tf2onnx);
    T_RUN(onnx_ops);
    T_RUN(onnx_info);
    T_RUN(onnx_refusals);
    T_RUN(onnx_hostile);
    T_RUN(onnx_truncated_and_corrupt);
    g_vit = getenv("SD_ONNX_VIT");
    if (g_vit && *g_vit) T_RUN(onnx_vit);
    g_full = getenv("SD_ONNX_FULL");
    if (g_full && *g_full) T_RUN(onnx_full);
    sd_ctx_free(&g_ctx);
    T_DONE();
}
