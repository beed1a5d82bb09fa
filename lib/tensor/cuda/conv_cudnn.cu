// CUDA backend: conv2d forward and backward (dx, dw) through cuDNN's implicit-GEMM convolutions, opt-in
// with SD_CUDA_CONV=cudnn (read once; unset or "im2col": the im2col + cuBLAS path of ops_nn.cu).
//
// cuDNN is never a build or run-time requirement: libcudnn.so.9 (then libcudnn.so) is loaded with
// dlopen on the first convolution that wants it and the legacy API's functions are looked up with
// dlsym (cudnn_api.h declares them; cudnn.h is not included). The emulated build (SD_CUDA_EMU) takes
// the table of tests/emu/lib/cudnn_emu.cpp instead. When the library cannot be loaded, the padding
// is asymmetric (cuDNN pads both sides alike), a size does not fit cuDNN's int dimensions, cuDNN
// answers NOT_SUPPORTED for the geometry or no deterministic algorithm's workspace fits the scratch
// arena, the call falls back to im2col (one warning per reason on stderr, through base/log.h).
// Other cuDNN errors are SD_EDEVICE with cuDNN's error string.
//
// Semantics as ops_nn.cu's: NCHW fp32, filter KCRS, cross-correlation, dilation 1; f16/bf16
// weights through sd_cu_weight_f32's converted copy. y = bias then conv with beta = 1 (beta = 0
// without bias), dx += conv_bwd_data (beta = 1), dw += conv_bwd_filter (beta = 1); the bias
// gradient stays in ops_nn.cu. SD_CUDA_MATH fp32: CUDNN_FMA_MATH (no TF32); any other GEMM math:
// CUDNN_TENSOR_OP_MATH (TF32). Only algorithms that cuDNN reports as CUDNN_DETERMINISTIC are used
// (the same bytes on every run), in cuDNN's heuristic order (cudnnGet*Algorithm_v7), the first whose
// workspace fits the free scratch. Descriptors and the candidate lists are cached per geometry and
// math (a small table: the UNet repeats its shapes every step). Single-threaded, like the backend.
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef SD_CUDA_EMU
#include <dlfcn.h>
#endif

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/cudnn_api.h"
extern "C" {
#include "base/log.h"
}

#define FP(t) ((t) ? (float *)(t)->data : (float *)NULL)
#define CFP(t) ((t) ? (const float *)(t)->data : (const float *)NULL)

static sd_cudnn_api g_api;
static int g_loaded;              // 0 not tried, 1 loaded, -1 not available
static cudnnHandle_t g_handle;
static cudaStream_t g_handle_stream;
static int g_mode = -1;           // SD_CUDA_CONV: -1 not read, 0 im2col, 1 cudnn
static sd_cuda_conv_stats g_stats;

// Fallback reasons, each warned about once.
enum { W_LOAD, W_PAD, W_SIZE, W_UNSUP, W_WORKSPACE, W_ENV, W_N };
static int g_warned[W_N];

static void warn_once(int why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn_once(int why, const char *fmt, ...)
{
    if (g_warned[why]) return;
    g_warned[why] = 1;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sd_warn("%s", buf);
}

extern "C" int sd_cu_conv_cudnn_wanted(void)
{
    if (g_mode < 0) {
        const char *e = getenv("SD_CUDA_CONV");
        g_mode = e && !strcmp(e, "cudnn") ? 1 : 0;
        if (e && *e && strcmp(e, "cudnn") && strcmp(e, "im2col"))
            warn_once(W_ENV, "SD_CUDA_CONV=%s: not im2col or cudnn: convolutions use im2col", e);
    }
    return g_mode;
}

static int cudnn_fail(cudnnStatus_t s, const char *what)
{
    const char *msg = g_api.cudnnGetErrorString ? g_api.cudnnGetErrorString(s) : NULL;
    return sd_err(SD_EDEVICE, "cuDNN: %s: %s (status %d)", what, msg ? msg : "unknown error", (int)s);
}

// ---- loading -------------------------------------------------------------------------------------

static int load_library(void)
{
    if (g_loaded) return g_loaded > 0;
    g_loaded = -1;
    g_stats.loaded = -1;
#ifdef SD_CUDA_EMU
    const sd_cudnn_api *t = sd_cudnn_emu_api();
    if (!t) {
        warn_once(W_LOAD, "SD_CUDA_CONV=cudnn: cannot load cuDNN (emulated: SD_EMU_CUDNN=missing): "
                          "convolutions use im2col");
        return 0;
    }
    g_api = *t;
#else
    const char *names[2] = { "libcudnn.so.9", "libcudnn.so" };
    void *lib = NULL;
    char first_err[256] = "";
    for (int i = 0; i < 2 && !lib; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!lib && i == 0) {
            const char *e = dlerror();
            snprintf(first_err, sizeof first_err, "%s", e ? e : "?");
        }
    }
    if (!lib) {
        warn_once(W_LOAD, "SD_CUDA_CONV=cudnn: cannot load cuDNN (%s): convolutions use im2col", first_err);
        return 0;
    }
    const char *missing = NULL;
#define SD_CUDNN_SYM(ret, name, params) \
    g_api.name = (ret(*) params)dlsym(lib, #name); \
    if (!g_api.name && !missing) missing = #name;
    SD_CUDNN_FUNCS(SD_CUDNN_SYM)
#undef SD_CUDNN_SYM
    if (missing) {
        warn_once(W_LOAD, "SD_CUDA_CONV=cudnn: the loaded cuDNN has no %s: convolutions use im2col", missing);
        memset(&g_api, 0, sizeof g_api);
        return 0;
    }
    // the enum values and structs of cudnn_api.h are cuDNN 9's (version = major·10000 + minor·100 + patch)
    size_t v = g_api.cudnnGetVersion();
    if (v < 90000 || v >= 100000) {
        warn_once(W_LOAD, "SD_CUDA_CONV=cudnn: the loaded cuDNN is version %zu, not 9.x: convolutions use im2col", v);
        memset(&g_api, 0, sizeof g_api);
        return 0;
    }
#endif
    g_loaded = 1;
    g_stats.loaded = 1;
    return 1;
}

// The handle on the backend's stream; NULL when it cannot be made (warned: fall back).
static cudnnHandle_t handle(int *rc)
{
    *rc = SD_OK;
    if (!g_handle) {
        cudnnStatus_t s = g_api.cudnnCreate(&g_handle);
        if (s != CUDNN_STATUS_SUCCESS) {
            g_handle = NULL;
            const char *msg = g_api.cudnnGetErrorString(s);
            warn_once(W_LOAD, "SD_CUDA_CONV=cudnn: cudnnCreate: %s: convolutions use im2col", msg ? msg : "?");
            g_loaded = -1;
            g_stats.loaded = -1;
            return NULL;
        }
        g_handle_stream = NULL;
    }
    if (g_handle_stream != sd_cuda_stream() || !g_handle_stream) {
        cudnnStatus_t s = g_api.cudnnSetStream(g_handle, sd_cuda_stream());
        if (s != CUDNN_STATUS_SUCCESS) {
            *rc = cudnn_fail(s, "cudnnSetStream");
            return NULL;
        }
        g_handle_stream = sd_cuda_stream();
    }
    return g_handle;
}

// ---- plans: descriptors and deterministic algorithm candidates per geometry ---------------------

enum { K_FWD, K_BWD_DATA, K_BWD_FILTER };
static const char *const kind_name[3] = { "forward", "backward data", "backward filter" };

struct cand {
    int algo;
    cudnnMathType_t math;
    size_t ws;
};

struct plan_key {
    int n, c, h, w, k, r, s, stride, pad_h, pad_w, tensor_op;
};

#define PLAN_MAX_CAND 16
struct plan {
    plan_key key;
    int valid;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int state[3];  // 0 not queried, 1 candidates known, -1 not supported
    int ncand[3];
    cand c[3][PLAN_MAX_CAND];
};

#define NPLANS 64
static plan g_plans[NPLANS];
static int g_next_evict;

static void plan_destroy(plan *p)
{
    if (p->cd) g_api.cudnnDestroyConvolutionDescriptor(p->cd);
    if (p->wd) g_api.cudnnDestroyFilterDescriptor(p->wd);
    if (p->yd) g_api.cudnnDestroyTensorDescriptor(p->yd);
    if (p->xd) g_api.cudnnDestroyTensorDescriptor(p->xd);
    memset(p, 0, sizeof *p);
}

static int key_eq(const plan_key &a, const plan_key &b) { return !memcmp(&a, &b, sizeof a); }

// The cached plan of the key (descriptors made on first use); NULL with *rc set on a cuDNN error.
static plan *plan_get(const plan_key &k, int *rc)
{
    *rc = SD_OK;
    for (int i = 0; i < NPLANS; i++)
        if (g_plans[i].valid && key_eq(g_plans[i].key, k)) return &g_plans[i];
    plan *p = NULL;
    for (int i = 0; i < NPLANS && !p; i++)
        if (!g_plans[i].valid) p = &g_plans[i];
    if (!p) {
        p = &g_plans[g_next_evict];
        g_next_evict = (g_next_evict + 1) % NPLANS;
        plan_destroy(p);
    }
    memset(p, 0, sizeof *p);
    p->key = k;
    int ho = (k.h + 2 * k.pad_h - k.r) / k.stride + 1, wo = (k.w + 2 * k.pad_w - k.s) / k.stride + 1;
    cudnnStatus_t s = g_api.cudnnCreateTensorDescriptor(&p->xd);
    const char *what = "cudnnCreateTensorDescriptor";
#define STEP(call) if (s == CUDNN_STATUS_SUCCESS) { what = #call; s = (call); }
    STEP(g_api.cudnnCreateTensorDescriptor(&p->yd));
    STEP(g_api.cudnnCreateFilterDescriptor(&p->wd));
    STEP(g_api.cudnnCreateConvolutionDescriptor(&p->cd));
    STEP(g_api.cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, k.n, k.c, k.h, k.w));
    STEP(g_api.cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, k.n, k.k, ho, wo));
    STEP(g_api.cudnnSetFilter4dDescriptor(p->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k.k, k.c, k.r, k.s));
    STEP(g_api.cudnnSetConvolution2dDescriptor(p->cd, k.pad_h, k.pad_w, k.stride, k.stride, 1, 1,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    STEP(g_api.cudnnSetConvolutionMathType(p->cd, k.tensor_op ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
#undef STEP
    if (s != CUDNN_STATUS_SUCCESS) {
        plan_destroy(p);
        if (SD_CUDNN_NOT_SUPPORTED_FAMILY(s)) return NULL;  // *rc = SD_OK: fall back
        *rc = cudnn_fail(s, what);
        return NULL;
    }
    p->valid = 1;
    return p;
}

// Is the math type of a candidate allowed? Never down-conversion to fp16/bf16. fp32 math: the
// candidates cuDNN lists for the descriptor's CUDNN_FMA_MATH (PyTorch asserts they say FMA; DEFAULT
// is accepted too) and they always run with CUDNN_FMA_MATH set: no TF32. TF32: any other, run with
// the math type cuDNN listed it with (as PyTorch does).
static int math_ok(cudnnMathType_t m, int tensor_op)
{
    if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return 0;
    if (!tensor_op) return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
}

static cudnnStatus_t set_math(plan *p, cudnnMathType_t m) { return g_api.cudnnSetConvolutionMathType(p->cd, m); }

static cudnnStatus_t workspace_size(plan *p, int kind, int algo, size_t *ws)
{
    switch (kind) {
    case K_FWD:
        return g_api.cudnnGetConvolutionForwardWorkspaceSize(g_handle, p->xd, p->wd, p->cd, p->yd,
                                                             (cudnnConvolutionFwdAlgo_t)algo, ws);
    case K_BWD_DATA:
        return g_api.cudnnGetConvolutionBackwardDataWorkspaceSize(g_handle, p->wd, p->yd, p->cd, p->xd,
                                                                  (cudnnConvolutionBwdDataAlgo_t)algo, ws);
    default:
        return g_api.cudnnGetConvolutionBackwardFilterWorkspaceSize(g_handle, p->xd, p->yd, p->cd, p->wd,
                                                                    (cudnnConvolutionBwdFilterAlgo_t)algo, ws);
    }
}

// The deterministic candidates of one direction, in cuDNN's order, with their workspace sizes.
static int plan_query(plan *p, int kind)
{
    if (p->state[kind]) return SD_OK;
    const int tensor_op = p->key.tensor_op;
    const cudnnMathType_t base = tensor_op ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    sd_cudnn_perf perf[PLAN_MAX_CAND];
    memset(perf, 0, sizeof perf);
    int cnt = 0;
    cudnnStatus_t s = set_math(p, base);
    if (s != CUDNN_STATUS_SUCCESS) return cudnn_fail(s, "cudnnSetConvolutionMathType");
    const char *what;
    switch (kind) {
    case K_FWD:
        what = "cudnnGetConvolutionForwardAlgorithm_v7";
        s = g_api.cudnnGetConvolutionForwardAlgorithm_v7(g_handle, p->xd, p->wd, p->cd, p->yd, PLAN_MAX_CAND, &cnt, perf);
        break;
    case K_BWD_DATA:
        what = "cudnnGetConvolutionBackwardDataAlgorithm_v7";
        s = g_api.cudnnGetConvolutionBackwardDataAlgorithm_v7(g_handle, p->wd, p->yd, p->cd, p->xd, PLAN_MAX_CAND,
                                                              &cnt, perf);
        break;
    default:
        what = "cudnnGetConvolutionBackwardFilterAlgorithm_v7";
        s = g_api.cudnnGetConvolutionBackwardFilterAlgorithm_v7(g_handle, p->xd, p->yd, p->cd, p->wd, PLAN_MAX_CAND,
                                                                &cnt, perf);
        break;
    }
    if (SD_CUDNN_NOT_SUPPORTED_FAMILY(s)) {
        p->state[kind] = -1;
        return SD_OK;
    }
    if (s != CUDNN_STATUS_SUCCESS) return cudnn_fail(s, what);
    if (cnt > PLAN_MAX_CAND) cnt = PLAN_MAX_CAND;
    int nc = 0;
    for (int i = 0; i < cnt; i++) {
        const sd_cudnn_perf &r = perf[i];
        if (r.status != CUDNN_STATUS_SUCCESS || r.determinism != CUDNN_DETERMINISTIC || !math_ok(r.mathType, tensor_op))
            continue;
        int dup = 0;
        for (int j = 0; j < nc; j++) dup |= p->c[kind][j].algo == r.algo && p->c[kind][j].math == r.mathType;
        if (dup) continue;
        // the workspace of the algorithm with the math type it runs with (at least what v7 reported)
        cudnnMathType_t m = tensor_op ? r.mathType : CUDNN_FMA_MATH;
        size_t ws = 0;
        s = set_math(p, m);
        if (s == CUDNN_STATUS_SUCCESS) s = workspace_size(p, kind, r.algo, &ws);
        if (SD_CUDNN_NOT_SUPPORTED_FAMILY(s)) continue;
        if (s != CUDNN_STATUS_SUCCESS) return cudnn_fail(s, "cudnnGetConvolution*WorkspaceSize");
        p->c[kind][nc].algo = r.algo;
        p->c[kind][nc].math = m;
        p->c[kind][nc].ws = ws > r.memory ? ws : r.memory;
        nc++;
    }
    p->ncand[kind] = nc;
    p->state[kind] = nc ? 1 : -1;
    return SD_OK;
}

// ---- the calls -----------------------------------------------------------------------------------

__global__ void k_cudnn_bias_chan(size_t n, int64_t c, int64_t p, float *y, const float *b)
{
    SD_CU_LOOP(i, n) y[i] = b[((int64_t)i / p) % c];
}

// Geometry cuDNN can express: symmetric padding, dimensions and element counts in int range.
// 0: fall back (warned).
static int geom_ok(const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, sd_conv2d_geom g, plan_key *k)
{
    if (g.pad_t != g.pad_b || g.pad_l != g.pad_r) {
        warn_once(W_PAD, "SD_CUDA_CONV=cudnn: asymmetric padding (t %d, l %d, b %d, r %d) is not expressible in cuDNN: "
                  "this convolution uses im2col", g.pad_t, g.pad_l, g.pad_b, g.pad_r);
        return 0;
    }
    const int64_t lim = INT32_MAX;
    int64_t v[9] = { x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2], w->shape[3],
                     y->shape[2], y->shape[3] };
    int fits = sd_tensor_numel(x) < lim && sd_tensor_numel(y) < lim && sd_tensor_numel(w) < lim;
    for (int i = 0; i < 9; i++) fits &= v[i] > 0 && v[i] < lim;
    if (fits) {  // the output size cuDNN derives (symmetric padding) must be the op's
        int64_t ho = (v[2] + 2 * g.pad_t - v[5]) / g.stride + 1, wo = (v[3] + 2 * g.pad_l - v[6]) / g.stride + 1;
        fits = ho == v[7] && wo == v[8];
    }
    if (!fits) {
        warn_once(W_SIZE, "SD_CUDA_CONV=cudnn: a conv2d of %lldx%lldx%lldx%lld is outside cuDNN's int sizes: "
                  "it uses im2col", (long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3]);
        return 0;
    }
    k->n = (int)v[0]; k->c = (int)v[1]; k->h = (int)v[2]; k->w = (int)v[3];
    k->k = (int)v[4]; k->r = (int)v[5]; k->s = (int)v[6];
    k->stride = g.stride; k->pad_h = g.pad_t; k->pad_w = g.pad_l;
    k->tensor_op = sd_cuda_gemm_math != 0;
    return 1;
}

static void warn_unsupported(const plan_key &k, int kind)
{
    warn_once(W_UNSUP, "SD_CUDA_CONV=cudnn: cuDNN does not support the %s convolution of x %dx%dx%dx%d, w %dx%dx%dx%d, "
              "stride %d, pad %d,%d (or has no deterministic algorithm for it): it uses im2col (further such "
              "cases silently)", kind_name[kind], k.n, k.c, k.h, k.w, k.k, k.c, k.r, k.s, k.stride, k.pad_h, k.pad_w);
}

// Prepared plan and handle for a call; NULL: fall back (or *rc an error).
static plan *prepare(const plan_key &k, int *rc)
{
    *rc = SD_OK;
    if (!load_library()) return NULL;
    if (!handle(rc)) return NULL;
    plan *p = plan_get(k, rc);
    if (!p && !*rc) warn_unsupported(k, K_FWD);
    return p;
}

// Run one direction with the first candidate whose workspace fits the free scratch. SD_CU_FALLBACK
// when none (warned), SD_OK, or an error.
static int run_kind(sd_ctx *ctx, plan *p, int kind, const float *in1, const float *in2, float *out, float beta)
{
    int rc = plan_query(p, kind);
    if (rc) return rc;
    if (p->state[kind] < 0) {
        warn_unsupported(p->key, kind);
        return SD_CU_FALLBACK;
    }
    // the workspace 256-byte aligned (the arena aligns to 64)
    size_t fr = sd_cu_scratch_free(ctx), slack = 256;
    for (int i = 0; i < p->ncand[kind]; i++) {
        const cand &c = p->c[kind][i];
        if (c.ws && c.ws + slack > fr) continue;
        size_t mark = sd_arena_mark(&ctx->scratch);
        void *ws = NULL;
        if (c.ws) {
            char *raw = (char *)sd_arena_alloc(&ctx->scratch, c.ws + slack);
            if (!raw) continue;
            ws = (void *)(((uintptr_t)raw + slack - 1) & ~(uintptr_t)(slack - 1));
        }
        const float alpha = 1.0f;
        cudnnStatus_t s = set_math(p, c.math);
        if (s == CUDNN_STATUS_SUCCESS) {
            switch (kind) {
            case K_FWD:  // in1 x, in2 w, out y
                s = g_api.cudnnConvolutionForward(g_handle, &alpha, p->xd, in1, p->wd, in2, p->cd,
                                                  (cudnnConvolutionFwdAlgo_t)c.algo, ws, c.ws, &beta, p->yd, out);
                break;
            case K_BWD_DATA:  // in1 w, in2 dy, out dx
                s = g_api.cudnnConvolutionBackwardData(g_handle, &alpha, p->wd, in1, p->yd, in2, p->cd,
                                                       (cudnnConvolutionBwdDataAlgo_t)c.algo, ws, c.ws, &beta, p->xd,
                                                       out);
                break;
            default:  // in1 x, in2 dy, out dw
                s = g_api.cudnnConvolutionBackwardFilter(g_handle, &alpha, p->xd, in1, p->yd, in2, p->cd,
                                                         (cudnnConvolutionBwdFilterAlgo_t)c.algo, ws, c.ws, &beta,
                                                         p->wd, out);
                break;
            }
        }
        sd_arena_reset(&ctx->scratch, mark);
        if (SD_CUDNN_NOT_SUPPORTED_FAMILY(s)) {
            // this algorithm refuses after all: forget it and try the next
            for (int j = i; j + 1 < p->ncand[kind]; j++) p->c[kind][j] = p->c[kind][j + 1];
            p->ncand[kind]--;
            i--;
            continue;
        }
        if (s != CUDNN_STATUS_SUCCESS) {
            static const char *const calls[3] = { "cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                                  "cudnnConvolutionBackwardFilter" };
            return cudnn_fail(s, calls[kind]);
        }
        if (kind == K_FWD) g_stats.fwd++;
        else if (kind == K_BWD_DATA) g_stats.bwd_data++;
        else g_stats.bwd_filter++;
        return SD_OK;
    }
    if (p->ncand[kind] == 0) {
        p->state[kind] = -1;
        warn_unsupported(p->key, kind);
    } else {
        size_t least = p->c[kind][0].ws;
        for (int i = 1; i < p->ncand[kind]; i++)
            if (p->c[kind][i].ws < least) least = p->c[kind][i].ws;
        warn_once(W_WORKSPACE, "SD_CUDA_CONV=cudnn: no deterministic cuDNN %s algorithm's workspace fits the free "
                  "scratch (%zu bytes; the smallest needs %zu): this convolution uses im2col", kind_name[kind], fr,
                  least + slack);
    }
    return SD_CU_FALLBACK;
}

extern "C" int sd_cu_conv2d_cudnn(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w,
                                  const sd_tensor *b, sd_conv2d_geom gg)
{
    if (sd_tensor_numel(y) == 0) return SD_CU_FALLBACK;  // nothing to compute: the im2col path's early exit
    plan_key k;
    memset(&k, 0, sizeof k);
    int rc;
    plan *p = geom_ok(x, w, y, gg, &k) ? prepare(k, &rc) : (rc = SD_OK, (plan *)NULL);
    if (!p) {
        if (!rc) g_stats.fallback++;
        return rc ? rc : SD_CU_FALLBACK;
    }
    size_t mark = sd_arena_mark(&ctx->scratch);
    const float *wf = sd_cu_weight_f32(ctx, w, &rc);
    if (!wf) return rc;
    if (b) {
        size_t n = (size_t)sd_tensor_numel(y);
        SD_CU_KERNEL_NOSYNC(sd_cuda_blocks(n, SD_CU_THREADS), SD_CU_THREADS, 0, sd_cuda_stream(), k_cudnn_bias_chan)(
            n, (int64_t)k.k, y->shape[2] * y->shape[3], FP(y), CFP(b));
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) {
            sd_arena_reset(&ctx->scratch, mark);
            return sd_cuda_fail(e, "launching the conv2d bias");
        }
    }
    rc = run_kind(ctx, p, K_FWD, CFP(x), wf, FP(y), b ? 1.0f : 0.0f);
    sd_arena_reset(&ctx->scratch, mark);
    if (rc == SD_CU_FALLBACK) g_stats.fallback++;  // the im2col path rewrites y (bias included)
    return rc;
}

extern "C" int sd_cu_conv2d_bwd_cudnn(sd_ctx *ctx, sd_tensor **dx, sd_tensor **dw, const sd_tensor *dy,
                                      const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom gg)
{
    if ((!*dx && !*dw) || sd_tensor_numel(dy) == 0) return SD_OK;
    plan_key k;
    memset(&k, 0, sizeof k);
    int rc;
    plan *p = geom_ok(x, w, dy, gg, &k) ? prepare(k, &rc) : (rc = SD_OK, (plan *)NULL);
    if (!p) {
        if (!rc) g_stats.fallback++;
        return rc;
    }
    int fell = 0;
    if (*dx) {
        size_t mark = sd_arena_mark(&ctx->scratch);
        const float *wf = sd_cu_weight_f32(ctx, w, &rc);
        if (!wf) return rc;
        rc = run_kind(ctx, p, K_BWD_DATA, wf, CFP(dy), FP(*dx), 1.0f);
        sd_arena_reset(&ctx->scratch, mark);
        if (rc == SD_OK) *dx = NULL;
        else if (rc == SD_CU_FALLBACK) fell = 1;
        else return rc;
    }
    if (*dw) {
        rc = run_kind(ctx, p, K_BWD_FILTER, CFP(x), CFP(dy), FP(*dw), 1.0f);
        if (rc == SD_OK) *dw = NULL;
        else if (rc == SD_CU_FALLBACK) fell = 1;
        else return rc;
    }
    if (fell) g_stats.fallback++;
    return SD_OK;
}

// ---- state ---------------------------------------------------------------------------------------

void sd_cu_conv_cudnn_release(void)
{
    if (g_loaded > 0) {
        for (int i = 0; i < NPLANS; i++)
            if (g_plans[i].valid) plan_destroy(&g_plans[i]);
        if (g_handle) g_api.cudnnDestroy(g_handle);
    }
    memset(g_plans, 0, sizeof g_plans);
    g_next_evict = 0;
    g_handle = NULL;
    g_handle_stream = NULL;
}

extern "C" void sd_cuda_conv_stats_get(sd_cuda_conv_stats *s) { *s = g_stats; }

extern "C" void sd_cuda_conv_reset(void)
{
    sd_cu_conv_cudnn_release();
    g_loaded = 0;
    memset(&g_api, 0, sizeof g_api);
    g_mode = -1;
    memset(g_warned, 0, sizeof g_warned);
    memset(&g_stats, 0, sizeof g_stats);
}
