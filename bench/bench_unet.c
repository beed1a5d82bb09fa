/* UNet benchmarks: forward (inference) and a LoRA-style training step (frozen weights, forward into
 * the planned activation arena + backward with the gradient flowing to the input latents and
 * through every layer, no weight gradients) on the 104 M-parameter configuration of
 * doc/performance.md (model_channels 128, mult 1,2,4, 2 res blocks, attention at all levels,
 * 8 heads, context 768) at 64×64 latents, batch 1, 77 context tokens. Weights are random.
 * Prints one JSON object per line:
 *   {"name":…, "seconds":…, "min_seconds":…, "cpu_seconds":…, "gflops":…, "peak_rss_mib":…, "threads":N, "runs":R}
 * unet_*_full_step is a full fine-tune step: every weight trainable, its gradient computed (zeroed,
 * forward, backward into the input and every weight; no optimizer).
 * seconds = median of R runs after one warm-up; gflops uses the network's matrix-product FLOPs
 * (counted from the layer shapes: 2·MNK per product; the LoRA step counts dX only for frozen layers,
 * i.e. ≈ 2× forward, the full step adds the weight products once more for dW; the recomputed
 * attention scores in the backward are not counted). peak_rss_mib is the
 * process's peak resident set after that measurement. bench/torch_unet.py runs the same network
 * in PyTorch with the same names.
 *   SD_THREADS (default: all CPUs), BENCH_RUNS (default 3), BENCH_FILTER (substring of names),
 *   BENCH_UNET_SD15=1 also runs the SD1.5 shape (slow: about 10× the small one). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/error.h"
#include "models/unet.h"

static int g_runs = 3, g_threads = 1;
static const char *g_filter;
static sd_ctx g_ctx;

#define CHECK(call) do { int rc_ = (call); if (rc_) { fprintf(stderr, "bench_unet: %s: %s\n", #call, sd_errmsg()); exit(1); } } while (0)

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

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void fill(sd_tensor *t, float scale, uint32_t seed)
{
    float *p = t->data;
    uint32_t s = seed;
    for (int64_t i = 0; i < sd_tensor_numel(t); i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
    }
}

/* Forward matrix-product FLOPs of the UNet for x [1,C,H,W] and S context tokens (2 per multiply-add
 * of every conv, linear and attention product; norms and elementwise work not counted). */
static int want(const char *name) { return !g_filter || strstr(name, g_filter); }

typedef struct bench_state {
    sd_unet *u;
    sd_params *reg;
    sd_tensor x, t, c, y, dy, dx;
    sd_arena act;
} bench_state;

static void run_fwd(bench_state *s) { CHECK(sd_unet_forward(&g_ctx, s->u, NULL, &s->y, &s->x, &s->t, &s->c, NULL)); }

static void run_step(bench_state *s)
{
    sd_arena_reset(&s->act, 0);
    CHECK(sd_unet_forward(&g_ctx, s->u, &s->act, &s->y, &s->x, &s->t, &s->c, NULL));
    CHECK(sd_op_fill(&g_ctx, &s->dx, 0.0f));
    CHECK(sd_unet_backward(&g_ctx, s->u, &s->dx, NULL, NULL, &s->dy));
}

static void run_full_step(bench_state *s)
{
    CHECK(sd_params_zero_grad(&g_ctx, s->reg));
    run_step(s);
}

static void timed(const char *name, const char *shape, void (*fn)(bench_state *), bench_state *s, double flops)
{
    double t[32], c[32];
    int runs = g_runs > 32 ? 32 : g_runs;
    fn(s);   /* warm-up: faults in the arenas */
    for (int i = 0; i < runs; i++) {
        double c0 = cpu_now(), t0 = now();
        fn(s);
        t[i] = now() - t0;
        c[i] = cpu_now() - c0;
    }
    qsort(t, (size_t)runs, sizeof *t, cmpd);
    qsort(c, (size_t)runs, sizeof *c, cmpd);
    double med = runs & 1 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]);
    double cmed = runs & 1 ? c[runs / 2] : 0.5 * (c[runs / 2 - 1] + c[runs / 2]);
    printf("{\"name\":\"%s\",\"shape\":\"%s\",\"seconds\":%.4f,\"min_seconds\":%.4f,\"cpu_seconds\":%.4f,"
           "\"gflops\":%.1f,\"peak_rss_mib\":%.0f,\"threads\":%d,\"runs\":%d}\n",
           name, shape, med, t[0], cmed, flops / med * 1e-9, peak_rss_mib(), g_threads, runs);
    fflush(stdout);
}

/* full = 0: forward and the LoRA step over frozen weights; 1: the full fine-tune step */
static void bench_config(const char *tag, const sd_unet_config *cfg, int64_t hw, int64_t seq, int full)
{
    char n_fwd[64], n_step[64], shape[160];
    snprintf(n_fwd, sizeof n_fwd, "unet_%s_fwd", tag);
    snprintf(n_step, sizeof n_step, full ? "unet_%s_full_step" : "unet_%s_lora_step", tag);
    if (full) n_fwd[0] = 0;
    if (!(n_fwd[0] && want(n_fwd)) && !want(n_step)) return;
    sd_params reg;
    sd_unet u;
    sd_params_init(&reg);
    CHECK(sd_unet_init(&u, &reg, "model.diffusion_model", cfg));
    sd_params_set_trainable(&reg, "", full);
    CHECK(sd_params_alloc(&reg, SD_DEV_CPU));
    for (size_t i = 0; i < sd_params_count(&reg); i++) {
        sd_param *p = sd_params_at(&reg, i);
        int64_t fan = p->value.ndim >= 2 ? sd_tensor_numel(&p->value) / p->value.shape[0] : 1;
        if (p->value.ndim >= 2) fill(&p->value, 1.7f / sqrtf((float)fan), (uint32_t)i * 7919u + 1);
        else if (strstr(p->key, "norm") || strstr(p->key, "layers.0.")) CHECK(sd_op_fill(&g_ctx, &p->value, 1.0f));
        else fill(&p->value, 0.05f, (uint32_t)i + 3);
    }
    sd_params_totals tot;
    sd_params_get_totals(&reg, &tot);
    bench_state s = { .u = &u, .reg = &reg };
    CHECK(sd_tensor_alloc(&s.x, SD_F32, 4, (int64_t[]){ 1, cfg->in_channels, hw, hw }));
    CHECK(sd_tensor_alloc(&s.y, SD_F32, 4, (int64_t[]){ 1, cfg->out_channels, hw, hw }));
    CHECK(sd_tensor_alloc(&s.dy, SD_F32, 4, (int64_t[]){ 1, cfg->out_channels, hw, hw }));
    CHECK(sd_tensor_alloc(&s.dx, SD_F32, 4, (int64_t[]){ 1, cfg->in_channels, hw, hw }));
    CHECK(sd_tensor_alloc(&s.t, SD_F32, 1, (int64_t[]){ 1 }));
    CHECK(sd_tensor_alloc(&s.c, SD_F32, 3, (int64_t[]){ 1, seq, cfg->context_dim }));
    fill(&s.x, 1.0f, 11);
    fill(&s.dy, 1e-3f, 12);
    fill(&s.c, 1.0f, 13);
    ((float *)s.t.data)[0] = 500.0f;
    sd_nn_plan p = sd_unet_plan(&u, 1, hw, hw, seq);
    CHECK(sd_nn_arena_init(&s.act, SD_DEV_CPU, p.saved));
    double f = sd_unet_forward_flops(&u, hw, hw, seq);
    snprintf(shape, sizeof shape, "%.1fM params, x 1x%dx%lldx%lld, context 1x%lldx%d, activations %.0f MiB",
             (double)tot.numel / 1e6, cfg->in_channels, (long long)hw, (long long)hw, (long long)seq,
             cfg->context_dim, (double)p.saved / 1048576.0);
    if (n_fwd[0] && want(n_fwd)) timed(n_fwd, shape, run_fwd, &s, f);
    if (want(n_step))
        timed(n_step, shape, full ? run_full_step : run_step, &s,
              2.0 * f + (full ? sd_unet_weight_flops(&u, hw, hw, seq) : 0.0));
    sd_arena_free(&s.act);
    sd_tensor_free(&s.x);
    sd_tensor_free(&s.y);
    sd_tensor_free(&s.dy);
    sd_tensor_free(&s.dx);
    sd_tensor_free(&s.t);
    sd_tensor_free(&s.c);
    sd_unet_free(&u);
    sd_params_free(&reg);
}

int main(void)
{
    const char *e = getenv("SD_THREADS");
    g_threads = e && atoi(e) > 0 ? atoi(e) : omp_get_num_procs();
    e = getenv("BENCH_RUNS");
    if (e && atoi(e) > 0) g_runs = atoi(e);
    g_filter = getenv("BENCH_FILTER");
    if (g_filter && !*g_filter) g_filter = NULL;
    CHECK(sd_ctx_init(&g_ctx, SD_DEV_CPU, g_threads, (size_t)8 << 30));
    sd_model_config m;
    sd_model_config_preset(SD_FAMILY_SD1, &m);
    sd_unet_config small = m.unet;
    small.model_channels = 128;
    small.n_levels = 3;
    small.channel_mult[0] = 1;
    small.channel_mult[1] = 2;
    small.channel_mult[2] = 4;
    small.n_attn = 3;
    small.attention_resolutions[0] = 1;
    small.attention_resolutions[1] = 2;
    small.attention_resolutions[2] = 4;
    e = getenv("BENCH_UNET_SD15");
    int sd15 = e && *e == '1';
    for (int full = 0; full < 2; full++) {
        bench_config("104m", &small, 64, 77, full);
        if (sd15) bench_config("sd15", &m.unet, 64, 77, full);
    }
    sd_ctx_free(&g_ctx);
    return 0;
}
