/* The emulated cuDNN of the emulated build (tests/emu): the legacy convolution API that
 * lib/tensor/cuda/conv_cudnn.cu reaches through sd_cudnn_api (lib/tensor/cuda/cudnn_api.h), implemented
 * from cuDNN's documented semantics with plain direct-convolution loops (not the backend's im2col):
 *
 *   forward          y  = alpha·conv(x, w) + beta·y
 *   backward data    dx = alpha·conv_bwd_data(w, dy) + beta·dx
 *   backward filter  dw = alpha·conv_bwd_filter(x, dy) + beta·dw
 *
 * NCHW fp32 tensors, KCRS filters, CUDNN_CROSS_CORRELATION or CUDNN_CONVOLUTION (flipped filter),
 * any padding, stride and dilation; beta = 0 does not read the output (it may hold NaN). Each output
 * element is one float sum in a fixed order (deterministic, like the algorithms the backend picks).
 * The math type set on the convolution descriptor at the call decides the operands:
 * CUDNN_TENSOR_OP_MATH (and CUDNN_DEFAULT_MATH, which permits TF32 on A100 and newer) round x, w and
 * dy to TF32 exactly as the emulated cuBLAS does (10-bit mantissa, nearest, ties away;
 * SD_EMU_GEMM_EXACT=1 turns it off); CUDNN_FMA_MATH: exact fp32 operands, float accumulation.
 *
 * Checked, as the library would refuse: live handles and descriptors (created, set, not destroyed),
 * float data type / NCHW format / float compute type, the shapes against each other (x's channels =
 * w's, y = the convolution's output shape), every operand inside one device allocation, the
 * workspace inside an allocation, 16-byte aligned and at least the algorithm's requirement, an
 * algorithm the emulation offers. Statuses and error strings are cuDNN 9's.
 *
 * The algorithm lists (cudnnGet*Algorithm_v7) put a non-deterministic algorithm first (the backend
 * must skip it), then a deterministic one that needs a workspace of 8 × the first input's bytes
 * (it copies its rounded first input into the workspace, filled with NaN bytes first, and reads it
 * from there), then a deterministic one without workspace (for a small scratch arena).
 *
 * SD_EMU_CUDNN (read at each call): "missing" — the library cannot be loaded (sd_cudnn_emu_api
 * returns NULL); "unsupported" — every algorithm is CUDNN_STATUS_NOT_SUPPORTED and so are the
 * convolution calls; "nondet" — only non-deterministic algorithms are offered; "fail" — the
 * convolution calls return CUDNN_STATUS_EXECUTION_FAILED; "wsonly" — the deterministic algorithms
 * without workspace are not offered. SD_EMU_TRACE=1 prints each convolution call
 * (direction, algorithm, workspace). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <set>
#include <vector>

#include "cuda_runtime.h"
#include "tensor/cuda/cudnn_api.h"

struct cudnnContext {
    cudaStream_t stream;
};
struct cudnnTensorStruct {
    int set;
    cudnnDataType_t dt;
    cudnnTensorFormat_t fmt;
    int n, c, h, w;
};
struct cudnnFilterStruct {
    int set;
    cudnnDataType_t dt;
    cudnnTensorFormat_t fmt;
    int k, c, r, s;
};
struct cudnnConvolutionStruct {
    int set;
    int pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

static std::mutex g_mu;
static std::set<const void *> g_live;  /* handles and descriptors */

static void live_add(const void *p)
{
    std::lock_guard<std::mutex> l(g_mu);
    g_live.insert(p);
}
static bool live(const void *p)
{
    std::lock_guard<std::mutex> l(g_mu);
    return p && g_live.count(p);
}
static bool live_del(const void *p)
{
    std::lock_guard<std::mutex> l(g_mu);
    return g_live.erase(p) > 0;
}

static int knob(const char *v)
{
    const char *e = getenv("SD_EMU_CUDNN");
    return e && !strcmp(e, v);
}

/* ---- library, handle, descriptors ---- */

static size_t e_version(void) { return 91900; }

static const char *e_error_string(cudnnStatus_t s)
{
    switch ((int)s) {
    case 0: return "CUDNN_STATUS_SUCCESS";
    case 1001: return "CUDNN_STATUS_NOT_INITIALIZED";
    case 2000: return "CUDNN_STATUS_BAD_PARAM";
    case 2002: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case 2003: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case 2008: return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
    case 3000: return "CUDNN_STATUS_NOT_SUPPORTED";
    case 3002: return "CUDNN_STATUS_NOT_SUPPORTED_SHAPE";
    case 4000: return "CUDNN_STATUS_INTERNAL_ERROR";
    case 5000: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_UNKNOWN_STATUS_FOUND";
}

static cudnnStatus_t e_create(cudnnHandle_t *h)
{
    if (!h) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *h = new cudnnContext{ NULL };
    live_add(*h);
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t e_destroy(cudnnHandle_t h)
{
    if (!live_del(h)) return CUDNN_STATUS_BAD_PARAM;
    delete h;
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t e_set_stream(cudnnHandle_t h, cudaStream_t s)
{
    if (!live(h) || !emu_stream_ok(s)) return CUDNN_STATUS_BAD_PARAM;
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}

template <class T> static cudnnStatus_t e_create_desc(T **d)
{
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *d = new T();
    live_add(*d);
    return CUDNN_STATUS_SUCCESS;
}
template <class T> static cudnnStatus_t e_destroy_desc(T *d)
{
    if (!d) return CUDNN_STATUS_SUCCESS;
    if (!live_del(d)) return CUDNN_STATUS_BAD_PARAM;
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t e_create_tensor(cudnnTensorDescriptor_t *d) { return e_create_desc(d); }
static cudnnStatus_t e_destroy_tensor(cudnnTensorDescriptor_t d) { return e_destroy_desc(d); }
static cudnnStatus_t e_create_filter(cudnnFilterDescriptor_t *d) { return e_create_desc(d); }
static cudnnStatus_t e_destroy_filter(cudnnFilterDescriptor_t d) { return e_destroy_desc(d); }
static cudnnStatus_t e_create_conv(cudnnConvolutionDescriptor_t *d) { return e_create_desc(d); }
static cudnnStatus_t e_destroy_conv(cudnnConvolutionDescriptor_t d) { return e_destroy_desc(d); }

static cudnnStatus_t e_set_tensor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f, cudnnDataType_t dt, int n, int c,
                                  int h, int w)
{
    if (!live(d)) return CUDNN_STATUS_BAD_PARAM;
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if ((long long)n * c * h * w > INT32_MAX) return CUDNN_STATUS_NOT_SUPPORTED;
    *d = cudnnTensorStruct{ 1, dt, f, n, c, h, w };
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t e_set_filter(cudnnFilterDescriptor_t d, cudnnDataType_t dt, cudnnTensorFormat_t f, int k, int c,
                                  int r, int s)
{
    if (!live(d)) return CUDNN_STATUS_BAD_PARAM;
    if (k <= 0 || c <= 0 || r <= 0 || s <= 0) return CUDNN_STATUS_BAD_PARAM;
    *d = cudnnFilterStruct{ 1, dt, f, k, c, r, s };
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t e_set_conv(cudnnConvolutionDescriptor_t d, int ph, int pw, int u, int v, int dh, int dw,
                                cudnnConvolutionMode_t mode, cudnnDataType_t compute)
{
    if (!live(d)) return CUDNN_STATUS_BAD_PARAM;
    if (ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh <= 0 || dw <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) return CUDNN_STATUS_BAD_PARAM;
    cudnnMathType_t m = d->set ? d->math : CUDNN_DEFAULT_MATH;
    *d = cudnnConvolutionStruct{ 1, ph, pw, u, v, dh, dw, mode, compute, m };
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t e_set_math(cudnnConvolutionDescriptor_t d, cudnnMathType_t m)
{
    if (!live(d)) return CUDNN_STATUS_BAD_PARAM;
    if ((int)m < 0 || (int)m > 3) return CUDNN_STATUS_BAD_PARAM;
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- geometry and algorithms ---- */

struct geom {
    int n, c, h, w, k, r, s, ho, wo, ph, pw, u, v, dh, dw, flip;
};

/* The descriptors of one convolution, checked against each other. */
static cudnnStatus_t check(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t f,
                           cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t y, geom *g)
{
    if (!live(h)) return CUDNN_STATUS_BAD_PARAM;
    if (!live(x) || !live(f) || !live(cd) || !live(y) || !x->set || !f->set || !cd->set || !y->set)
        return CUDNN_STATUS_BAD_PARAM;
    if (x->dt != CUDNN_DATA_FLOAT || y->dt != CUDNN_DATA_FLOAT || f->dt != CUDNN_DATA_FLOAT ||
        cd->compute != CUDNN_DATA_FLOAT)
        return CUDNN_STATUS_NOT_SUPPORTED;  /* this emulation: fp32 only */
    if (x->fmt != CUDNN_TENSOR_NCHW || y->fmt != CUDNN_TENSOR_NCHW || f->fmt != CUDNN_TENSOR_NCHW)
        return CUDNN_STATUS_NOT_SUPPORTED;
    int er = (f->r - 1) * cd->dil_h + 1, es = (f->s - 1) * cd->dil_w + 1;
    int hp = x->h + 2 * cd->pad_h, wp = x->w + 2 * cd->pad_w;
    if (x->c != f->c || hp < er || wp < es) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
    int ho = (hp - er) / cd->u + 1, wo = (wp - es) / cd->v + 1;
    if (y->n != x->n || y->c != f->k || y->h != ho || y->w != wo) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
    *g = geom{ x->n, x->c, x->h, x->w, f->k, f->r, f->s, ho, wo, cd->pad_h, cd->pad_w, cd->u, cd->v, cd->dil_h,
               cd->dil_w, cd->mode == CUDNN_CONVOLUTION };
    return CUDNN_STATUS_SUCCESS;
}

enum { K_FWD, K_BD, K_BF };
struct ealgo {
    int algo;
    int det;
    int ws_mult;  /* workspace: ws_mult × the first input's bytes */
};
/* forward: GEMM (listed non-deterministic here to exercise the choice), IMPLICIT_PRECOMP_GEMM,
 * IMPLICIT_GEMM; backward data: ALGO_0 (non-deterministic, as in cuDNN), ALGO_1, FFT_TILING (3);
 * backward filter: ALGO_0 and ALGO_3 (non-deterministic, as in cuDNN), ALGO_1, FFT_TILING (6). */
static const ealgo g_algos[3][4] = {
    { { 2, 0, 0 }, { 1, 1, 8 }, { 0, 1, 0 }, { -1, 0, 0 } },
    { { 0, 0, 0 }, { 1, 1, 8 }, { 3, 1, 0 }, { -1, 0, 0 } },
    { { 0, 0, 0 }, { 3, 0, 1 }, { 1, 1, 8 }, { 6, 1, 0 } },
};

static size_t first_input_bytes(int kind, const geom &g)
{
    if (kind == K_BD) return (size_t)g.n * g.k * g.ho * g.wo * 4;  /* dy */
    return (size_t)g.n * g.c * g.h * g.w * 4;                      /* x */
}

static const ealgo *find_algo(int kind, int algo)
{
    if (knob("unsupported")) return NULL;
    for (int i = 0; i < 4; i++)
        if (g_algos[kind][i].algo == algo && g_algos[kind][i].algo >= 0) {
            if (knob("nondet") && g_algos[kind][i].det) return NULL;
            if (knob("wsonly") && g_algos[kind][i].det && !g_algos[kind][i].ws_mult) return NULL;
            return &g_algos[kind][i];
        }
    return NULL;
}

static cudnnStatus_t list(int kind, const geom &g, cudnnMathType_t math, int req, int *ret, sd_cudnn_perf *perf)
{
    if (!ret || !perf || req <= 0) return CUDNN_STATUS_BAD_PARAM;
    int n = 0;
    for (int i = 0; i < 4 && n < req; i++) {
        const ealgo &a = g_algos[kind][i];
        if (a.algo < 0) break;
        if (knob("nondet") && a.det) continue;
        if (knob("wsonly") && a.det && !a.ws_mult) continue;
        sd_cudnn_perf p;
        memset(&p, 0, sizeof p);
        p.algo = a.algo;
        p.status = knob("unsupported") ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
        p.time = knob("unsupported") ? -1.0f : 0.1f * (float)(i + 1);
        p.memory = knob("unsupported") ? 0 : (size_t)a.ws_mult * first_input_bytes(kind, g);
        p.determinism = a.det ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        p.mathType = math;
        perf[n++] = p;
    }
    *ret = n;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t e_fwd_algos(cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t f,
                                 const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t y, const int req,
                                 int *ret, sd_cudnn_perf *perf)
{
    geom g;
    cudnnStatus_t s = check(h, x, f, cd, y, &g);
    return s ? s : list(K_FWD, g, cd->math, req, ret, perf);
}
static cudnnStatus_t e_bd_algos(cudnnHandle_t h, const cudnnFilterDescriptor_t f, const cudnnTensorDescriptor_t dy,
                                const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t dx, const int req,
                                int *ret, sd_cudnn_perf *perf)
{
    geom g;
    cudnnStatus_t s = check(h, dx, f, cd, dy, &g);
    return s ? s : list(K_BD, g, cd->math, req, ret, perf);
}
static cudnnStatus_t e_bf_algos(cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
                                const cudnnConvolutionDescriptor_t cd, const cudnnFilterDescriptor_t dw, const int req,
                                int *ret, sd_cudnn_perf *perf)
{
    geom g;
    cudnnStatus_t s = check(h, x, dw, cd, dy, &g);
    return s ? s : list(K_BF, g, cd->math, req, ret, perf);
}

static cudnnStatus_t ws_size(int kind, const geom &g, int algo, size_t *sz)
{
    if (!sz) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    const ealgo *a = find_algo(kind, algo);
    if (!a) return CUDNN_STATUS_NOT_SUPPORTED;
    *sz = (size_t)a->ws_mult * first_input_bytes(kind, g);
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t e_fwd_ws(cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t f,
                              const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t y,
                              cudnnConvolutionFwdAlgo_t algo, size_t *sz)
{
    geom g;
    cudnnStatus_t s = check(h, x, f, cd, y, &g);
    return s ? s : ws_size(K_FWD, g, (int)algo, sz);
}
static cudnnStatus_t e_bd_ws(cudnnHandle_t h, const cudnnFilterDescriptor_t f, const cudnnTensorDescriptor_t dy,
                             const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t dx,
                             cudnnConvolutionBwdDataAlgo_t algo, size_t *sz)
{
    geom g;
    cudnnStatus_t s = check(h, dx, f, cd, dy, &g);
    return s ? s : ws_size(K_BD, g, (int)algo, sz);
}
static cudnnStatus_t e_bf_ws(cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
                             const cudnnConvolutionDescriptor_t cd, const cudnnFilterDescriptor_t dw,
                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *sz)
{
    geom g;
    cudnnStatus_t s = check(h, x, dw, cd, dy, &g);
    return s ? s : ws_size(K_BF, g, (int)algo, sz);
}

/* ---- the convolutions ---- */

static float round_op(float v, cudnnMathType_t m)
{
    static const bool exact = getenv("SD_EMU_GEMM_EXACT") && *getenv("SD_EMU_GEMM_EXACT") == '1';
    if (exact || m == CUDNN_FMA_MATH) return v;
    /* TENSOR_OP / DEFAULT (TF32 permitted on A100 and newer): as the emulated cuBLAS's TF32 */
    uint32_t u = __float_as_uint(v);
    if ((u & 0x7f800000u) == 0x7f800000u) return v;
    return __uint_as_float((u + 0x1000u) & ~0x1fffu);
}

/* A rounded host copy of an operand; placed in the workspace when the algorithm has one. */
static const float *operand(const float *p, size_t n, cudnnMathType_t m, float *ws, std::vector<float> &tmp)
{
    float *dst = ws;
    if (!dst) {
        tmp.resize(n ? n : 1);
        dst = tmp.data();
    }
    for (size_t i = 0; i < n; i++) dst[i] = round_op(p[i], m);
    return dst;
}

/* The common checks of a convolution call; *wsp: the workspace the algorithm reads (NULL: none). */
static cudnnStatus_t call_checks(cudnnHandle_t h, int kind, int algo, const geom &g, const void *const *ops,
                                 const size_t *bytes, int nops, void *ws, size_t ws_bytes, const void *alpha,
                                 const void *beta, float **wsp)
{
    if (!live(h) || !emu_stream_ok(h->stream)) return CUDNN_STATUS_BAD_PARAM;
    if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    const ealgo *a = find_algo(kind, algo);
    if (!a) return CUDNN_STATUS_NOT_SUPPORTED;
    if (knob("fail")) return CUDNN_STATUS_EXECUTION_FAILED;
    for (int i = 0; i < nops; i++) {
        if (!ops[i]) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
        if ((uintptr_t)ops[i] % 4) return CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER;
        if (!emu_on_device(ops[i], bytes[i])) return CUDNN_STATUS_BAD_PARAM;
    }
    size_t need = (size_t)a->ws_mult * first_input_bytes(kind, g);
    static const bool trace = getenv("SD_EMU_TRACE") && *getenv("SD_EMU_TRACE");
    if (trace) {
        static const char *const kn[3] = { "forward", "backward data", "backward filter" };
        fprintf(stderr, "cudnn_emu: %s algo %d (workspace %zu of %zu bytes) x %dx%dx%dx%d w %dx%dx%dx%d\n", kn[kind],
                algo, need, ws_bytes, g.n, g.c, g.h, g.w, g.k, g.c, g.r, g.s);
    }
    *wsp = NULL;
    if (need) {
        if (!ws) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
        if ((uintptr_t)ws % 16) return CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER;
        if (ws_bytes < need || !emu_on_device(ws, ws_bytes)) return CUDNN_STATUS_BAD_PARAM;
        memset(ws, 0xff, ws_bytes);  /* whatever was there: NaN */
        *wsp = (float *)ws;
    } else if (ws_bytes && (!ws || !emu_on_device(ws, ws_bytes))) {
        return CUDNN_STATUS_BAD_PARAM;
    }
    return CUDNN_STATUS_SUCCESS;
}

static inline void store(float *o, float acc, float al, float be)
{
    *o = be == 0.f ? al * acc : al * acc + be * *o;  /* beta = 0: the output is not read */
}

static cudnnStatus_t e_forward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd, const void *x,
                               const cudnnFilterDescriptor_t wd, const void *w, const cudnnConvolutionDescriptor_t cd,
                               cudnnConvolutionFwdAlgo_t algo, void *ws, size_t wsb, const void *beta,
                               const cudnnTensorDescriptor_t yd, void *y)
{
    geom g;
    cudnnStatus_t s = check(h, xd, wd, cd, yd, &g);
    if (s) return s;
    size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.k * g.c * g.r * g.s, ny = (size_t)g.n * g.k * g.ho * g.wo;
    const void *ops[3] = { x, w, y };
    size_t bytes[3] = { nx * 4, nw * 4, ny * 4 };
    float *wsp;
    s = call_checks(h, K_FWD, (int)algo, g, ops, bytes, 3, ws, wsb, alpha, beta, &wsp);
    if (s) return s;
    std::vector<float> tx, tw;
    const float *X = operand((const float *)x, nx, cd->math, wsp, tx), *W = operand((const float *)w, nw, cd->math, NULL, tw);
    float al = *(const float *)alpha, be = *(const float *)beta, *Y = (float *)y;
#pragma omp parallel for schedule(static)
    for (long long nk = 0; nk < (long long)g.n * g.k; nk++) {
        int n = (int)(nk / g.k), k = (int)(nk % g.k);
        for (int oh = 0; oh < g.ho; oh++)
            for (int ow = 0; ow < g.wo; ow++) {
                float acc = 0.f;
                for (int c = 0; c < g.c; c++)
                    for (int r = 0; r < g.r; r++) {
                        int ih = oh * g.u - g.ph + r * g.dh;
                        if (ih < 0 || ih >= g.h) continue;
                        for (int q = 0; q < g.s; q++) {
                            int iw = ow * g.v - g.pw + q * g.dw;
                            if (iw < 0 || iw >= g.w) continue;
                            int fr = g.flip ? g.r - 1 - r : r, fs = g.flip ? g.s - 1 - q : q;
                            acc += X[(((size_t)n * g.c + c) * g.h + ih) * g.w + iw] *
                                   W[(((size_t)k * g.c + c) * g.r + fr) * g.s + fs];
                        }
                    }
                store(&Y[(((size_t)n * g.k + k) * g.ho + oh) * g.wo + ow], acc, al, be);
            }
    }
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t e_backward_data(cudnnHandle_t h, const void *alpha, const cudnnFilterDescriptor_t wd,
                                     const void *w, const cudnnTensorDescriptor_t dyd, const void *dy,
                                     const cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdDataAlgo_t algo,
                                     void *ws, size_t wsb, const void *beta, const cudnnTensorDescriptor_t dxd,
                                     void *dx)
{
    geom g;
    cudnnStatus_t s = check(h, dxd, wd, cd, dyd, &g);
    if (s) return s;
    size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.k * g.c * g.r * g.s, ny = (size_t)g.n * g.k * g.ho * g.wo;
    const void *ops[3] = { dy, w, dx };
    size_t bytes[3] = { ny * 4, nw * 4, nx * 4 };
    float *wsp;
    s = call_checks(h, K_BD, (int)algo, g, ops, bytes, 3, ws, wsb, alpha, beta, &wsp);
    if (s) return s;
    std::vector<float> tdy, tww;
    const float *DY = operand((const float *)dy, ny, cd->math, wsp, tdy), *W = operand((const float *)w, nw, cd->math, NULL, tww);
    float al = *(const float *)alpha, be = *(const float *)beta, *DX = (float *)dx;
    /* dx[n,c,ih,iw] = Σ_{k,r,q} w[k,c,r,q]·dy[n,k,oh,ow] where ih = oh·u − ph + r·dh (and so for w) */
#pragma omp parallel for schedule(static)
    for (long long nc = 0; nc < (long long)g.n * g.c; nc++) {
        int n = (int)(nc / g.c), c = (int)(nc % g.c);
        for (int ih = 0; ih < g.h; ih++)
            for (int iw = 0; iw < g.w; iw++) {
                float acc = 0.f;
                for (int k = 0; k < g.k; k++)
                    for (int r = 0; r < g.r; r++) {
                        int th = ih + g.ph - r * g.dh;
                        if (th < 0 || th % g.u || th / g.u >= g.ho) continue;
                        int oh = th / g.u;
                        for (int q = 0; q < g.s; q++) {
                            int tw = iw + g.pw - q * g.dw;
                            if (tw < 0 || tw % g.v || tw / g.v >= g.wo) continue;
                            int ow = tw / g.v;
                            int fr = g.flip ? g.r - 1 - r : r, fs = g.flip ? g.s - 1 - q : q;
                            acc += W[(((size_t)k * g.c + c) * g.r + fr) * g.s + fs] *
                                   DY[(((size_t)n * g.k + k) * g.ho + oh) * g.wo + ow];
                        }
                    }
                store(&DX[(((size_t)n * g.c + c) * g.h + ih) * g.w + iw], acc, al, be);
            }
    }
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t e_backward_filter(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                       const void *x, const cudnnTensorDescriptor_t dyd, const void *dy,
                                       const cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdFilterAlgo_t algo,
                                       void *ws, size_t wsb, const void *beta, const cudnnFilterDescriptor_t dwd,
                                       void *dw)
{
    geom g;
    cudnnStatus_t s = check(h, xd, dwd, cd, dyd, &g);
    if (s) return s;
    size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.k * g.c * g.r * g.s, ny = (size_t)g.n * g.k * g.ho * g.wo;
    const void *ops[3] = { x, dy, dw };
    size_t bytes[3] = { nx * 4, ny * 4, nw * 4 };
    float *wsp;
    s = call_checks(h, K_BF, (int)algo, g, ops, bytes, 3, ws, wsb, alpha, beta, &wsp);
    if (s) return s;
    std::vector<float> tx, tdy;
    const float *X = operand((const float *)x, nx, cd->math, wsp, tx), *DY = operand((const float *)dy, ny, cd->math, NULL, tdy);
    float al = *(const float *)alpha, be = *(const float *)beta, *DW = (float *)dw;
#pragma omp parallel for schedule(static)
    for (long long kc = 0; kc < (long long)g.k * g.c; kc++) {
        int k = (int)(kc / g.c), c = (int)(kc % g.c);
        for (int r = 0; r < g.r; r++)
            for (int q = 0; q < g.s; q++) {
                float acc = 0.f;
                for (int n = 0; n < g.n; n++)
                    for (int oh = 0; oh < g.ho; oh++) {
                        int ih = oh * g.u - g.ph + r * g.dh;
                        if (ih < 0 || ih >= g.h) continue;
                        for (int ow = 0; ow < g.wo; ow++) {
                            int iw = ow * g.v - g.pw + q * g.dw;
                            if (iw < 0 || iw >= g.w) continue;
                            acc += X[(((size_t)n * g.c + c) * g.h + ih) * g.w + iw] *
                                   DY[(((size_t)n * g.k + k) * g.ho + oh) * g.wo + ow];
                        }
                    }
                int fr = g.flip ? g.r - 1 - r : r, fs = g.flip ? g.s - 1 - q : q;
                store(&DW[(((size_t)k * g.c + c) * g.r + fr) * g.s + fs], acc, al, be);
            }
    }
    return CUDNN_STATUS_SUCCESS;
}

/* ---- the table ---- */

const sd_cudnn_api *sd_cudnn_emu_api(void)
{
    static const sd_cudnn_api api = {
        e_version, e_error_string, e_create, e_destroy, e_set_stream,
        e_create_tensor, e_set_tensor, e_destroy_tensor,
        e_create_filter, e_set_filter, e_destroy_filter,
        e_create_conv, e_set_conv, e_set_math, e_destroy_conv,
        e_fwd_algos, e_bd_algos, e_bf_algos,
        e_fwd_ws, e_bd_ws, e_bf_ws,
        e_forward, e_backward_data, e_backward_filter,
    };
    if (knob("missing")) return NULL;
    return &api;
}
