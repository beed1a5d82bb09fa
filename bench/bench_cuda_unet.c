/* UNet on the GPU: the SD1.5 UNet (lib/models/unet, the same model code as the CPU) at 64×64
 * latents (512 px), 77 context tokens, batch 1, 4 and 16: inference forward, and a LoRA-style
 * training step without LoRA modules (frozen weights: forward into the planned activation arena,
 * backward with the gradient flowing to the input through every layer, no weight gradients; the
 * LoRA branches themselves are small), and a full fine-tune step (cuda_unet_sd15_full_step: every
 * weight trainable in fp32, gradients zeroed, forward, backward into the input and every weight;
 * no optimizer). Random weights. fp32 activations and fp32 cuBLAS products
 * (CUBLAS_COMPUTE_32F, no TF32); BENCH_WEIGHTS=bf16 or f16 stores the frozen weights in half
 * precision (converted to f32 per use, as the ops do). SD_CUDA_MATH=tf32|bf16|fp16 runs every
 * matrix product on the tensor cores with those operands (fp32 accumulation; norms, softmax and
 * element-wise ops stay fp32); the "math" field says which. SD_CUDA_ATTN=flash with bf16/fp16 runs
 * the fused attention kernels (lib/tensor/cuda/flash_attn.cuh); the "attn" field says which.
 *
 * One JSON object per line:
 *   {"name":"cuda_unet_sd15_fwd","batch":B,"seconds":…,"min_seconds":…,"samples_per_s":…,
 *    "tflops":…,"params_mib":…,"activations_mib":…,"scratch_peak_mib":…,"gpu_used_mib":…,"device":…}
 * seconds = median of BENCH_RUNS (default 3) runs after one warm-up, each ended by a device
 * synchronisation; tflops counts the matrix-product FLOPs of the shapes (2·MNK; the frozen step as
 * 2× the forward, the full step adds the weight products once more for dW; the recomputed
 * attention scores are not counted); params_mib counts weights and gradients; gpu_used_mib is
 * total − free device memory while the batch's buffers are allocated.
 *   BENCH_BATCHES (default "1,4,16"), BENCH_RUNS, BENCH_FILTER (substring of names),
 *   BENCH_SCRATCH_MIB (op scratch beyond the layers' planned scratch, default 2048),
 *   BENCH_WEIGHTS (f32|bf16|f16), BENCH_MODEL (sd15, or sdxl: the SDXL base UNet at 128×128 latents with
 *   its pooled-text and size vector; names cuda_unet_sdxl_*).
 * Without a CUDA device it prints {"name":"cuda_unet","skipped":"…"} and exits 0.
 * bench/torch_cuda_unet.py runs the same network and work in PyTorch on the same GPU (fp32 with
 * TF32 off, fp32 + SDPA, bf16 autocast + SDPA) for the ratios. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "models/model_config_core.h"
#include "models/unet.h"
#include "tensor/device.h"

static int g_runs = 3;

/* the "attn" field: "flash" when SD_CUDA_ATTN=flash takes effect (bf16/fp16 math; ops_attn.cu
 * falls back per call for geometry the fused kernels do not cover), else "cublas" */
static const char *attn_mode(void)
{
    const char *e = getenv("SD_CUDA_ATTN");
    sd_gemm_math m = sd_device_gemm_math();
    return e && !strcmp(e, "flash") && (m == SD_GEMM_BF16 || m == SD_GEMM_FP16) ? "flash" : "cublas";
}
static const char *g_filter;
static sd_ctx g_ctx;
static char g_dev[300];

#define CHECK(call) do { int rc_ = (call); if (rc_) { fprintf(stderr, "bench_cuda_unet: %s: %s\n", #call, sd_errmsg()); exit(1); } } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A JSON string body: quotes, backslashes and control characters escaped (error messages quote). */
static const char *json_esc(const char *s)
{
    static char buf[1024];
    size_t j = 0;
    for (; s && *s && j + 7 < sizeof buf; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[j++] = '\\';
            buf[j++] = (char)ch;
        } else if (ch < 0x20) {
            j += (size_t)snprintf(buf + j, sizeof buf - j, "\\u%04x", ch);
        } else {
            buf[j++] = (char)ch;
        }
    }
    buf[j] = 0;
    return buf;
}

static double used_mib(void)
{
    sd_device_info info;
    if (sd_device_query(sd_device_current(), &info)) return -1;
    return (double)(info.total_bytes - info.free_bytes) / 1048576.0;
}

/* Upload n generated values (f32, or converted to the tensor's half dtype on the device). */
static int fill(sd_tensor *t, float scale, float off, uint32_t seed)
{
    int64_t n = sd_tensor_numel(t);
    float *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    if (!h) return sd_err(SD_ENOMEM, "out of memory");
    uint32_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        h[i] = off + scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
    }
    int rc;
    if (t->dtype == SD_F32) {
        rc = sd_tensor_upload(t, h, (size_t)n * sizeof *h);
    } else {
        sd_tensor tmp = *t;
        tmp.dtype = SD_F32;
        tmp.data = NULL;
        rc = sd_device_alloc(&tmp.data, (size_t)n * sizeof *h);
        if (!rc) rc = sd_tensor_upload(&tmp, h, (size_t)n * sizeof *h);
        if (!rc) rc = sd_op_convert(&g_ctx, t, &tmp);
        if (!rc) rc = sd_device_sync();
        sd_device_free(tmp.data);
    }
    free(h);
    return rc;
}

static int dev_tensor(sd_tensor *t, int nd, const int64_t *sh)
{
    return sd_tensor_alloc_on(t, SD_DEV_CUDA, SD_F32, nd, sh);
}

/* Matrix-product FLOPs of one forward (see bench_unet.c; same counting). */
typedef struct state {
    sd_unet *u;
    sd_params *reg;
    sd_tensor x, t, c, y, dy, dx, v;
    sd_arena act;
} state;

/* BENCH_MODEL: sd15 (default; 64×64 latents) or sdxl (the SDXL base UNet at 128×128 latents, 1024 px,
 * with its pooled-text and size vector) */
static const char *g_model = "sd15";

static const sd_tensor *vec_of(const state *s) { return s->v.data ? &s->v : NULL; }

static int run_fwd(state *s) { return sd_unet_forward(&g_ctx, s->u, NULL, &s->y, &s->x, &s->t, &s->c, vec_of(s)); }

static int run_step(state *s);
/* full fine-tune step: every weight trainable, gradients zeroed, forward, backward into all */
static int run_full_step(state *s)
{
    int rc = sd_params_zero_grad(&g_ctx, s->reg);
    return rc ? rc : run_step(s);
}

static int run_step(state *s)
{
    sd_arena_reset(&s->act, 0);
    int rc = sd_unet_forward(&g_ctx, s->u, &s->act, &s->y, &s->x, &s->t, &s->c, vec_of(s));
    if (!rc) rc = sd_op_fill(&g_ctx, &s->dx, 0.0f);
    if (!rc) rc = sd_unet_backward(&g_ctx, s->u, &s->dx, NULL, NULL, &s->dy);
    return rc;
}

static void timed(const char *name, int64_t batch, int (*fn)(state *), state *s, double flops, double params_mib,
                  double act_mib)
{
    double t[32];
    int runs = g_runs > 32 ? 32 : g_runs;
    g_ctx.scratch.peak = 0;
    int rc = fn(s);
    if (!rc) rc = sd_device_sync();
    for (int i = 0; !rc && i < runs; i++) {
        double t0 = now();
        rc = fn(s);
        if (!rc) rc = sd_device_sync();
        t[i] = now() - t0;
    }
    if (rc) {
        printf("{\"name\":\"%s\",\"batch\":%lld,\"error\":\"%s\"}\n", name, (long long)batch, json_esc(sd_errmsg()));
        fflush(stdout);
        return;
    }
    qsort(t, (size_t)runs, sizeof *t, cmpd);
    double med = runs & 1 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]);
    printf("{\"name\":\"%s\",\"batch\":%lld,\"seconds\":%.4f,\"min_seconds\":%.4f,\"samples_per_s\":%.2f,"
           "\"tflops\":%.2f,\"params_mib\":%.0f,\"activations_mib\":%.0f,\"scratch_peak_mib\":%.0f,"
           "\"gpu_used_mib\":%.0f,\"runs\":%d,\"math\":\"%s\",\"attn\":\"%s\",\"device\":\"%s\"}\n",
           name, (long long)batch, med, t[0], (double)batch / med, flops / med * 1e-12, params_mib, act_mib,
           (double)g_ctx.scratch.peak / 1048576.0, used_mib(), runs,
           (const char *[]){ "fp32", "tf32", "bf16", "fp16" }[sd_device_gemm_math()], attn_mode(), json_esc(g_dev));
    fflush(stdout);
}

/* full = 0: forward and the frozen-weight step; 1: the full fine-tune step */
static void bench_batch(sd_unet *u, sd_params *reg, int64_t b, double params_mib, int full)
{
    const sd_unet_config *cfg = &u->cfg;
    int64_t hw = cfg->adm_in_channels ? 128 : 64, seq = 77;
    char n_fwd[64], n_step[64];
    snprintf(n_fwd, sizeof n_fwd, "cuda_unet_%s_fwd", g_model);
    snprintf(n_step, sizeof n_step, full ? "cuda_unet_%s_full_step" : "cuda_unet_%s_step", g_model);
    int want_f = !full && (!g_filter || strstr(n_fwd, g_filter)), want_s = !g_filter || strstr(n_step, g_filter);
    if (!want_f && !want_s) return;
    state s = { .u = u, .reg = reg };
    int rc = dev_tensor(&s.x, SD_DIMS(b, cfg->in_channels, hw, hw));
    if (!rc) rc = dev_tensor(&s.y, SD_DIMS(b, cfg->out_channels, hw, hw));
    if (!rc) rc = dev_tensor(&s.dy, SD_DIMS(b, cfg->out_channels, hw, hw));
    if (!rc) rc = dev_tensor(&s.dx, SD_DIMS(b, cfg->in_channels, hw, hw));
    if (!rc) rc = dev_tensor(&s.t, SD_DIMS(b));
    if (!rc) rc = dev_tensor(&s.c, SD_DIMS(b, seq, cfg->context_dim));
    if (!rc) rc = fill(&s.x, 1.0f, 0, 11);
    if (!rc) rc = fill(&s.dy, 1e-3f, 0, 12);
    if (!rc) rc = fill(&s.c, 1.0f, 0, 13);
    if (!rc) rc = fill(&s.t, 400.0f, 500.0f, 14);
    if (!rc && cfg->adm_in_channels) rc = dev_tensor(&s.v, SD_DIMS(b, cfg->adm_in_channels));
    if (!rc && cfg->adm_in_channels) rc = fill(&s.v, 1.0f, 0, 15);
    sd_nn_plan p = sd_unet_plan(u, b, hw, hw, seq);
    if (!rc && want_s) rc = sd_nn_arena_init(&s.act, SD_DEV_CUDA, p.saved);
    if (rc) {
        printf("{\"name\":\"cuda_unet_%s\",\"batch\":%lld,\"error\":\"%s\",\"activations_mib\":%.0f}\n", g_model,
               (long long)b, json_esc(sd_errmsg()), (double)p.saved / 1048576.0);
    } else {
        double f = sd_unet_forward_flops(u, hw, hw, seq) * (double)b;
        if (want_f) timed(n_fwd, b, run_fwd, &s, f, params_mib, 0);
        if (full) f = 2.0 * f + sd_unet_weight_flops(u, hw, hw, seq) * (double)b;
        else f = 2.0 * f;
        if (want_s) timed(n_step, b, full ? run_full_step : run_step, &s, f, params_mib, (double)p.saved / 1048576.0);
    }
    sd_arena_free(&s.act);
    sd_tensor *ts[] = { &s.x, &s.y, &s.dy, &s.dx, &s.t, &s.c, &s.v };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) sd_tensor_free(ts[i]);
}

/* Build the SD1.5 UNet on the GPU (frozen weights, or every weight trainable with its gradient)
 * and run every batch size of `batches`. */
static void bench_mode(const sd_unet_config *ucfg, const char *batches, int full)
{
    sd_params reg;
    sd_unet u;
    sd_params_init(&reg);
    CHECK(sd_unet_init(&u, &reg, "model.diffusion_model", ucfg));
    char buf[128], plan_buf[128];
    snprintf(buf, sizeof buf, "%s", batches);
    /* scratch: the layers' planned need for the largest batch + headroom for the ops' own */
    size_t layer_scratch = 0;
    snprintf(plan_buf, sizeof plan_buf, "%s", buf);
    for (char *tok = strtok(plan_buf, ","); tok; tok = strtok(NULL, ",")) {
        int64_t b = atoll(tok);
        int64_t hw = ucfg->adm_in_channels ? 128 : 64;
        sd_nn_plan p = b > 0 ? sd_unet_plan(&u, b, hw, hw, 77) : (sd_nn_plan){ 0, 0 };
        if (p.scratch > layer_scratch) layer_scratch = p.scratch;
    }
    const char *e = getenv("BENCH_SCRATCH_MIB");
    size_t scratch = layer_scratch + ((size_t)(e && atoi(e) > 0 ? atoi(e) : 2048) << 20);
    CHECK(sd_ctx_init(&g_ctx, SD_DEV_CUDA, 1, scratch));
    sd_params_set_trainable(&reg, "", full);
    e = getenv("BENCH_WEIGHTS");
    if (e && !strcmp(e, "bf16")) CHECK(sd_params_set_frozen_dtype(&reg, SD_BF16));
    else if (e && !strcmp(e, "f16")) CHECK(sd_params_set_frozen_dtype(&reg, SD_F16));
    CHECK(sd_params_alloc(&reg, SD_DEV_CUDA));
    for (size_t i = 0; i < sd_params_count(&reg); i++) {
        sd_param *p = sd_params_at(&reg, i);
        int64_t fan = p->value.ndim >= 2 ? sd_tensor_numel(&p->value) / p->value.shape[0] : 1;
        if (p->value.ndim >= 2) CHECK(fill(&p->value, 1.7f / sqrtf((float)fan), 0, (uint32_t)i * 7919u + 1));
        else if (strstr(p->key, "norm") || strstr(p->key, "layers.0.")) CHECK(fill(&p->value, 0, 1.0f, 0));
        else CHECK(fill(&p->value, 0.05f, 0, (uint32_t)i + 3));
    }
    sd_params_totals tot;
    sd_params_get_totals(&reg, &tot);
    double params_mib = (double)(tot.value_bytes + tot.grad_bytes) / 1048576.0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int64_t b = atoll(tok);
        if (b > 0) bench_batch(&u, &reg, b, params_mib, full);
    }
    sd_unet_free(&u);
    sd_params_free(&reg);
    sd_ctx_free(&g_ctx);
}

int main(void)
{
    const char *e = getenv("BENCH_RUNS");
    if (e && atoi(e) > 0) g_runs = atoi(e);
    g_filter = getenv("BENCH_FILTER");
    if (g_filter && !*g_filter) g_filter = NULL;
    if (!sd_device_built_with_cuda() || sd_device_count() == 0 || sd_device_init(0)) {
        printf("{\"name\":\"cuda_unet\",\"skipped\":\"no CUDA device (%s)\"}\n",
               sd_device_built_with_cuda() ? "none found" : "built without CUDA");
        return 0;
    }
    sd_device_info info;
    if (sd_device_query(0, &info) == SD_OK) snprintf(g_dev, sizeof g_dev, "%s", info.name);
    sd_model_config m;
    e = getenv("BENCH_MODEL");
    if (e && !strcmp(e, "sdxl")) g_model = "sdxl";
    else if (e && *e && strcmp(e, "sd15")) {
        fprintf(stderr, "bench_cuda_unet: BENCH_MODEL must be sd15 or sdxl\n");
        return 2;
    }
    sd_model_config_preset(strcmp(g_model, "sdxl") ? SD_FAMILY_SD1 : SD_FAMILY_SDXL, &m);
    e = getenv("BENCH_BATCHES");
    char batches[128];
    snprintf(batches, sizeof batches, "%s", e && *e ? e : "1,4,16");
    for (int full = 0; full < 2; full++) {
        char want_name[64], fwd_name[64];
        snprintf(want_name, sizeof want_name, full ? "cuda_unet_%s_full_step" : "cuda_unet_%s_step", g_model);
        snprintf(fwd_name, sizeof fwd_name, "cuda_unet_%s_fwd", g_model);
        if (full && g_filter && !strstr(want_name, g_filter)) continue;
        if (!full && g_filter && !strstr(fwd_name, g_filter) && !strstr(want_name, g_filter)) continue;
        bench_mode(&m.unet, batches, full);
    }
    sd_device_shutdown();
    return 0;
}
