/* Op benchmarks at SD1.5 shapes. Prints one JSON object per line:
 *   {"name":…, "shape":…, "seconds":…, "gflops":…, "threads":N, "runs":R}
 * seconds = median wall time of R runs (after one warm-up), min_seconds the fastest run,
 * cpu_seconds the median process CPU time (all threads; on a shared host it shows the work
 * done, independent of time spent descheduled). gflops counts the matrix-product FLOPs of the op
 * (forward: 2·MNK per product; backward of conv/linear/attention: 2× forward, i.e. dX and dW /
 * dQ,dK,dV without the recomputed scores) and is null for memory-bound ops, which report
 * "gbps" (bytes read + written per second) instead. Convolutions count direct-convolution FLOPs, so
 * with Winograd (3×3 stride 1, 4× fewer multiplications) the effective rate exceeds sgemm's; conv
 * items are _fwd, _fwdbwd (dX, dW, db) and _fwddx (dX only: a frozen conv under LoRA). The first line is OpenBLAS sgemm on a large
 * square product with the same thread count, as the reference peak; before it fma_peak (and
 * bf16_dot_peak where the CPU has AVX512-BF16), the hardware's arithmetic ceiling.
 *   SD_THREADS (default: all CPUs), BENCH_RUNS (default 5), BENCH_FILTER (substring of names). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "tensor/ops.h"

static int g_runs = 5, g_threads = 1;
static const char *g_filter;
static sd_ctx g_ctx;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double median(double *t, int n);

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static sd_tensor T(int nd, const int64_t *sh, float scale)
{
    sd_tensor t;
    if (sd_tensor_alloc(&t, SD_F32, nd, sh)) { fprintf(stderr, "bench_ops: %s\n", sd_errmsg()); exit(1); }
    float *p = t.data;
    uint32_t s = 12345;
    int64_t n = sd_tensor_numel(&t);
    for (int64_t i = 0; i < n; i++) { s = s * 1664525u + 1013904223u; p[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f); }
    return t;
}

typedef void (*run_fn)(void *st);

/* sorts t */
static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof(double), cmpd);
    return n & 1 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static int want(const char *name)
{
    return !g_filter || strstr(name, g_filter);
}

static void bench(const char *name, const char *shape, run_fn fn, void *st, double flops, double bytes)
{
    if (!want(name)) return;
    double t[64], c[64];
    int runs = g_runs > 64 ? 64 : g_runs;
    fn(st);   /* warm-up: faults in pages, scratch */
    for (int i = 0; i < runs; i++) {
        double c0 = cpu_now(), t0 = now();
        fn(st);
        t[i] = now() - t0;
        c[i] = cpu_now() - c0;
    }
    double med = median(t, runs), cmed = median(c, runs);
    printf("{\"name\":\"%s\",\"shape\":\"%s\",\"seconds\":%.6f,\"min_seconds\":%.6f,\"cpu_seconds\":%.6f,",
           name, shape, med, t[0], cmed);
    if (flops > 0) printf("\"gflops\":%.1f", flops / med * 1e-9);
    else printf("\"gflops\":null,\"gbps\":%.1f", bytes / med * 1e-9);
    printf(",\"threads\":%d,\"runs\":%d}\n", g_threads, runs);
    fflush(stdout);
}

#define CHECK(call) do { int rc_ = (call); if (rc_) { fprintf(stderr, "bench_ops: %s: %s\n", #call, sd_errmsg()); exit(1); } } while (0)

/* ---- sgemm peak ----------------------------------------------------------------------------- */

typedef struct { float *a, *b, *c; int n; } st_gemm;
static void run_gemm(void *p)
{
    st_gemm *s = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1, s->a, s->n, s->b, s->n, 0, s->c, s->n);
}

static void bench_sgemm(void)
{
    if (!want("sgemm_peak")) return;
    st_gemm s = { .n = 2048 };
    sd_tensor a = T(SD_DIMS(2048, 2048), 1), b = T(SD_DIMS(2048, 2048), 1), c = T(SD_DIMS(2048, 2048), 0);
    s.a = a.data; s.b = b.data; s.c = c.data;
    openblas_set_num_threads(g_threads);
    bench("sgemm_peak", "2048x2048x2048", run_gemm, &s, 2.0 * 2048 * 2048 * 2048, 0);
    sd_tensor_free(&a); sd_tensor_free(&b); sd_tensor_free(&c);
}

/* The machine's arithmetic ceiling: fp32 FMA throughput (and AVX512-BF16 dot products where the
 * CPU has them), 12 independent accumulator chains per thread, all threads. sgemm_peak divided by
 * fma_peak is how close OpenBLAS runs to the hardware (a GEMM-bound layer cannot beat another
 * program's sgemm by more than that headroom at the same precision). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define PEAK_ITERS 20000000L
__attribute__((target("avx512f"))) static float peak_fma_thread(void)
{
    __m512 x = _mm512_set1_ps(0.9999f), y = _mm512_set1_ps(1e-6f);
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2), a3 = _mm512_set1_ps(3),
           a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5), a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7),
           a8 = _mm512_set1_ps(8), a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
    for (long i = 0; i < PEAK_ITERS; i++) {
#define PF(j) a##j = _mm512_fmadd_ps(a##j, x, y);
        PF(0) PF(1) PF(2) PF(3) PF(4) PF(5) PF(6) PF(7) PF(8) PF(9) PF(10) PF(11)
#undef PF
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx512f,avx512bf16"))) static float peak_bf16_thread(void)
{
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3000);
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2), a3 = _mm512_set1_ps(3),
           a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5), a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7),
           a8 = _mm512_set1_ps(8), a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
    for (long i = 0; i < PEAK_ITERS; i++) {
#define PB(j) a##j = _mm512_dpbf16_ps(a##j, x, y);
        PB(0) PB(1) PB(2) PB(3) PB(4) PB(5) PB(6) PB(7) PB(8) PB(9) PB(10) PB(11)
#undef PB
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
static volatile float g_sink;
static void run_peak_fma(void *p)
{
    (void)p;
#pragma omp parallel num_threads(g_threads)
    g_sink = peak_fma_thread();
}
static void run_peak_bf16(void *p)
{
    (void)p;
#pragma omp parallel num_threads(g_threads)
    g_sink = peak_bf16_thread();
}
static void bench_peak(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return;
    double ops = (double)g_threads * PEAK_ITERS * 12;
    bench("fma_peak", "avx512 fp32 FMA, 12 chains per thread", run_peak_fma, NULL, ops * 32, 0);
    if (__builtin_cpu_supports("avx512bf16"))
        bench("bf16_dot_peak", "avx512 vdpbf16ps, 12 chains per thread", run_peak_bf16, NULL, ops * 64, 0);
}
#else
static void bench_peak(void) {}
#endif

/* ---- conv ----------------------------------------------------------------------------------- */

typedef struct { sd_tensor x, w, b, y, dy, dx, dw, db; sd_conv2d_geom g; } st_conv;
static void conv_fwd(void *p) { st_conv *s = p; CHECK(sd_op_conv2d(&g_ctx, &s->y, &s->x, &s->w, &s->b, s->g)); }
static void conv_fb(void *p)
{
    st_conv *s = p;
    CHECK(sd_op_conv2d(&g_ctx, &s->y, &s->x, &s->w, &s->b, s->g));
    CHECK(sd_op_conv2d_bwd(&g_ctx, &s->dx, &s->dw, &s->db, &s->dy, &s->x, &s->w, s->g));
}
/* forward + input gradient only: a frozen conv under LoRA training */
static void conv_fdx(void *p)
{
    st_conv *s = p;
    CHECK(sd_op_conv2d(&g_ctx, &s->y, &s->x, &s->w, &s->b, s->g));
    CHECK(sd_op_conv2d_bwd(&g_ctx, &s->dx, NULL, NULL, &s->dy, &s->x, &s->w, s->g));
}

static void bench_conv(const char *name, int64_t cin, int64_t cout, int64_t h, int64_t k, int stride)
{
    char n1[96], n2[96], n3[96], shape[128];
    snprintf(n1, sizeof n1, "%s_fwd", name);
    snprintf(n2, sizeof n2, "%s_fwdbwd", name);
    snprintf(n3, sizeof n3, "%s_fwddx", name);
    if (!want(n1) && !want(n2) && !want(n3)) return;
    st_conv s;
    int pad = (int)(k / 2);
    s.g = sd_conv2d_geom_make(stride, pad);
    int64_t ho = (h + 2 * pad - k) / stride + 1;
    s.x = T(SD_DIMS(1, cin, h, h), 1); s.w = T(SD_DIMS(cout, cin, k, k), 0.05f); s.b = T(SD_DIMS(cout), 1);
    s.y = T(SD_DIMS(1, cout, ho, ho), 0); s.dy = T(SD_DIMS(1, cout, ho, ho), 1);
    s.dx = T(SD_DIMS(1, cin, h, h), 0); s.dw = T(SD_DIMS(cout, cin, k, k), 0); s.db = T(SD_DIMS(cout), 0);
    snprintf(shape, sizeof shape, "x 1x%lldx%lldx%lld, w %lldx%lldx%lldx%lld, stride %d", (long long)cin, (long long)h,
             (long long)h, (long long)cout, (long long)cin, (long long)k, (long long)k, stride);
    double f = 2.0 * (double)(cout * cin * k * k * ho * ho);
    bench(n1, shape, conv_fwd, &s, f, 0);
    bench(n2, shape, conv_fb, &s, 3 * f, 0);
    bench(n3, shape, conv_fdx, &s, 2 * f, 0);
    sd_tensor *all[] = { &s.x, &s.w, &s.b, &s.y, &s.dy, &s.dx, &s.dw, &s.db };
    for (int i = 0; i < 8; i++) sd_tensor_free(all[i]);
}

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct { sd_tensor q, k, v, o, lse, dout, dq, dk, dv; sd_attn_args a; } st_attn;
static void attn_fwd(void *p) { st_attn *s = p; CHECK(sd_op_attention(&g_ctx, &s->o, &s->lse, &s->q, &s->k, &s->v, s->a)); }
static void attn_fb(void *p)
{
    st_attn *s = p;
    CHECK(sd_op_attention(&g_ctx, &s->o, &s->lse, &s->q, &s->k, &s->v, s->a));
    CHECK(sd_op_attention_bwd(&g_ctx, &s->dq, &s->dk, &s->dv, &s->dout, &s->q, &s->k, &s->v, &s->o, &s->lse, s->a));
}

static void bench_attn(const char *name, int64_t b, int heads, int64_t tq, int64_t tk, int64_t d)
{
    char n1[96], n2[96], shape[128];
    snprintf(n1, sizeof n1, "%s_fwd", name);
    snprintf(n2, sizeof n2, "%s_fwdbwd", name);
    if (!want(n1) && !want(n2)) return;
    st_attn s = { .a = { heads, 0, 0 } };
    int64_t c = heads * d;
    s.q = T(SD_DIMS(b, tq, c), 1); s.k = T(SD_DIMS(b, tk, c), 1); s.v = T(SD_DIMS(b, tk, c), 1);
    s.o = T(SD_DIMS(b, tq, c), 0); s.lse = T(SD_DIMS(b, heads, tq), 0); s.dout = T(SD_DIMS(b, tq, c), 1);
    s.dq = T(SD_DIMS(b, tq, c), 0); s.dk = T(SD_DIMS(b, tk, c), 0); s.dv = T(SD_DIMS(b, tk, c), 0);
    snprintf(shape, sizeof shape, "batch %lld, q %lld tokens, kv %lld tokens, %d heads x %lld", (long long)b,
             (long long)tq, (long long)tk, heads, (long long)d);
    double f = 4.0 * (double)(b * heads * tq * tk * d);
    bench(n1, shape, attn_fwd, &s, f, 0);
    bench(n2, shape, attn_fb, &s, 3 * f, 0);
    sd_tensor *all[] = { &s.q, &s.k, &s.v, &s.o, &s.lse, &s.dout, &s.dq, &s.dk, &s.dv };
    for (int i = 0; i < 9; i++) sd_tensor_free(all[i]);
}

/* ---- linear --------------------------------------------------------------------------------- */

typedef struct { sd_tensor x, w, b, y, dy, dx, dw, db; } st_lin;
static void lin_fwd(void *p) { st_lin *s = p; CHECK(sd_op_linear(&g_ctx, &s->y, &s->x, &s->w, &s->b)); }
static void lin_fb(void *p)
{
    st_lin *s = p;
    CHECK(sd_op_linear(&g_ctx, &s->y, &s->x, &s->w, &s->b));
    CHECK(sd_op_linear_bwd(&g_ctx, &s->dx, &s->dw, &s->db, &s->dy, &s->x, &s->w));
}

static void bench_linear(const char *name, int64_t rows, int64_t in, int64_t out)
{
    char n1[96], n2[96], shape[128];
    snprintf(n1, sizeof n1, "%s_fwd", name);
    snprintf(n2, sizeof n2, "%s_fwdbwd", name);
    if (!want(n1) && !want(n2)) return;
    st_lin s;
    s.x = T(SD_DIMS(1, rows, in), 1); s.w = T(SD_DIMS(out, in), 0.05f); s.b = T(SD_DIMS(out), 1);
    s.y = T(SD_DIMS(1, rows, out), 0); s.dy = T(SD_DIMS(1, rows, out), 1);
    s.dx = T(SD_DIMS(1, rows, in), 0); s.dw = T(SD_DIMS(out, in), 0); s.db = T(SD_DIMS(out), 0);
    snprintf(shape, sizeof shape, "x %lldx%lld, w %lldx%lld", (long long)rows, (long long)in, (long long)out, (long long)in);
    double f = 2.0 * (double)(rows * in * out);
    bench(n1, shape, lin_fwd, &s, f, 0);
    bench(n2, shape, lin_fb, &s, 3 * f, 0);
    sd_tensor *all[] = { &s.x, &s.w, &s.b, &s.y, &s.dy, &s.dx, &s.dw, &s.db };
    for (int i = 0; i < 8; i++) sd_tensor_free(all[i]);
}

/* ---- norms and elementwise ------------------------------------------------------------------ */

typedef struct { sd_tensor x, y, m, r, g, b, dy, dx, dg, db; sd_act act; } st_norm;
static void gn_fwd(void *p) { st_norm *s = p; CHECK(sd_op_group_norm(&g_ctx, &s->y, &s->m, &s->r, &s->x, &s->g, &s->b, 32, 1e-5f, s->act)); }
static void gn_fb(void *p)
{
    st_norm *s = p;
    gn_fwd(p);
    CHECK(sd_op_group_norm_bwd(&g_ctx, &s->dx, &s->dg, &s->db, &s->dy, &s->x, &s->m, &s->r, &s->g, &s->b, 32, s->act));
}
static void ln_fwd(void *p) { st_norm *s = p; CHECK(sd_op_layer_norm(&g_ctx, &s->y, &s->m, &s->r, &s->x, &s->g, &s->b, 1e-5f)); }
static void ln_fb(void *p)
{
    st_norm *s = p;
    ln_fwd(p);
    CHECK(sd_op_layer_norm_bwd(&g_ctx, &s->dx, &s->dg, &s->db, &s->dy, &s->x, &s->m, &s->r, &s->g));
}
static void act_fwd(void *p) { st_norm *s = p; CHECK(sd_op_act(&g_ctx, s->act, &s->y, &s->x)); }
static void act_fb(void *p) { st_norm *s = p; act_fwd(p); CHECK(sd_op_act_bwd(&g_ctx, s->act, &s->dx, &s->dy, &s->x)); }

static void bench_norms(void)
{
    st_norm s;
    s.x = T(SD_DIMS(1, 320, 64, 64), 1); s.y = T(SD_DIMS(1, 320, 64, 64), 0); s.dy = T(SD_DIMS(1, 320, 64, 64), 1);
    s.dx = T(SD_DIMS(1, 320, 64, 64), 0); s.m = T(SD_DIMS(1, 32), 0); s.r = T(SD_DIMS(1, 32), 0);
    s.g = T(SD_DIMS(320), 1); s.b = T(SD_DIMS(320), 1); s.dg = T(SD_DIMS(320), 0); s.db = T(SD_DIMS(320), 0);
    double nb = 320.0 * 64 * 64 * 4;
    s.act = SD_ACT_NONE;
    bench("groupnorm_fwd", "x 1x320x64x64, 32 groups", gn_fwd, &s, 0, 2 * nb);
    bench("groupnorm_fwdbwd", "x 1x320x64x64, 32 groups", gn_fb, &s, 0, 6 * nb);
    s.act = SD_ACT_SILU;
    bench("groupnorm_silu_fwd", "x 1x320x64x64, 32 groups, fused SiLU", gn_fwd, &s, 0, 2 * nb);
    bench("groupnorm_silu_fwdbwd", "x 1x320x64x64, 32 groups, fused SiLU", gn_fb, &s, 0, 6 * nb);
    bench("silu_fwd", "1x320x64x64", act_fwd, &s, 0, 2 * nb);
    bench("silu_fwdbwd", "1x320x64x64", act_fb, &s, 0, 5 * nb);
    s.act = SD_ACT_GELU;
    bench("gelu_fwd", "1x320x64x64", act_fwd, &s, 0, 2 * nb);
    bench("gelu_fwdbwd", "1x320x64x64", act_fb, &s, 0, 5 * nb);
    sd_tensor *all[] = { &s.x, &s.y, &s.dy, &s.dx, &s.m, &s.r, &s.g, &s.b, &s.dg, &s.db };
    for (int i = 0; i < 10; i++) sd_tensor_free(all[i]);

    st_norm l;
    l.x = T(SD_DIMS(1, 4096, 320), 1); l.y = T(SD_DIMS(1, 4096, 320), 0); l.dy = T(SD_DIMS(1, 4096, 320), 1);
    l.dx = T(SD_DIMS(1, 4096, 320), 0); l.m = T(SD_DIMS(1, 4096), 0); l.r = T(SD_DIMS(1, 4096), 0);
    l.g = T(SD_DIMS(320), 1); l.b = T(SD_DIMS(320), 1); l.dg = T(SD_DIMS(320), 0); l.db = T(SD_DIMS(320), 0);
    nb = 4096.0 * 320 * 4;
    bench("layernorm_fwd", "x 1x4096x320", ln_fwd, &l, 0, 2 * nb);
    bench("layernorm_fwdbwd", "x 1x4096x320", ln_fb, &l, 0, 6 * nb);
    sd_tensor *alll[] = { &l.x, &l.y, &l.dy, &l.dx, &l.m, &l.r, &l.g, &l.b, &l.dg, &l.db };
    for (int i = 0; i < 10; i++) sd_tensor_free(alll[i]);
}

typedef struct { sd_tensor x, y, dy, dx; } st_un;
static void geglu_fwd(void *p) { st_un *s = p; CHECK(sd_op_geglu(&g_ctx, &s->y, &s->x)); }
static void geglu_fb(void *p) { st_un *s = p; geglu_fwd(p); CHECK(sd_op_geglu_bwd(&g_ctx, &s->dx, &s->dy, &s->x)); }
static void up_fwd(void *p) { st_un *s = p; CHECK(sd_op_upsample_nearest(&g_ctx, &s->y, &s->x)); }
static void up_fb(void *p) { st_un *s = p; up_fwd(p); CHECK(sd_op_upsample_nearest_bwd(&g_ctx, &s->dx, &s->dy)); }

static void bench_misc(void)
{
    st_un g;
    g.x = T(SD_DIMS(1, 4096, 2560), 1); g.y = T(SD_DIMS(1, 4096, 1280), 0); g.dy = T(SD_DIMS(1, 4096, 1280), 1);
    g.dx = T(SD_DIMS(1, 4096, 2560), 0);
    double nb = 4096.0 * 1280 * 4;
    bench("geglu_fwd", "x 1x4096x2560", geglu_fwd, &g, 0, 3 * nb);
    bench("geglu_fwdbwd", "x 1x4096x2560", geglu_fb, &g, 0, 10 * nb);
    sd_tensor *all[] = { &g.x, &g.y, &g.dy, &g.dx };
    for (int i = 0; i < 4; i++) sd_tensor_free(all[i]);
    st_un u;
    u.x = T(SD_DIMS(1, 1280, 16, 16), 1); u.y = T(SD_DIMS(1, 1280, 32, 32), 0); u.dy = T(SD_DIMS(1, 1280, 32, 32), 1);
    u.dx = T(SD_DIMS(1, 1280, 16, 16), 0);
    nb = 1280.0 * 32 * 32 * 4;
    bench("upsample2x_fwd", "x 1x1280x16x16", up_fwd, &u, 0, 1.25 * nb);
    bench("upsample2x_fwdbwd", "x 1x1280x16x16", up_fb, &u, 0, 2.75 * nb);
    sd_tensor *allu[] = { &u.x, &u.y, &u.dy, &u.dx };
    for (int i = 0; i < 4; i++) sd_tensor_free(allu[i]);
}

int main(void)
{
    const char *e = getenv("BENCH_RUNS");
    if (e && atoi(e) > 0) g_runs = atoi(e);
    g_filter = getenv("BENCH_FILTER");
    if (g_filter && !*g_filter) g_filter = NULL;
    e = getenv("SD_THREADS");
    g_threads = e && atoi(e) > 0 ? atoi(e) : omp_get_num_procs();
    omp_set_max_active_levels(1);
    if (sd_ctx_init(&g_ctx, SD_DEV_CPU, g_threads, 0)) { fprintf(stderr, "bench_ops: %s\n", sd_errmsg()); return 1; }

    bench_peak();
    bench_sgemm();
    bench_conv("conv3x3_320_64x64", 320, 320, 64, 3, 1);
    bench_conv("conv3x3_640_32x32", 640, 640, 32, 3, 1);
    bench_conv("conv3x3_1280_16x16", 1280, 1280, 16, 3, 1);
    bench_conv("conv3x3_s2_320_64x64", 320, 320, 64, 3, 2);
    bench_conv("conv1x1_640to320_64x64", 640, 320, 64, 1, 1);
    bench_attn("attn_self_4096_8x16", 1, 8, 4096, 4096, 16);
    bench_attn("attn_self_4096_8x32", 1, 8, 4096, 4096, 32);
    bench_attn("attn_self_4096_8x40", 1, 8, 4096, 4096, 40);
    bench_attn("attn_self_4096_8x64", 1, 8, 4096, 4096, 64);
    bench_attn("attn_cross_4096x77_8x16", 1, 8, 4096, 77, 16);
    bench_attn("attn_cross_4096x77_8x40", 1, 8, 4096, 77, 40);
    bench_attn("attn_self_1024_8x80", 1, 8, 1024, 1024, 80);
    bench_linear("linear_4096x320to1280", 4096, 320, 1280);
    bench_linear("linear_geglu_proj_4096x320to2560", 4096, 320, 2560);
    bench_linear("linear_to_k_77x768to320", 77, 768, 320);
    bench_norms();
    bench_misc();
    sd_ctx_free(&g_ctx);
    return 0;
}
