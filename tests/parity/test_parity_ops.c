/* CPU vs CUDA parity of every op of lib/tensor/ops.h, forward and backward.
 *
 * Each check builds the same random inputs on the host (CPU context) and on the device (CUDA
 * context), runs the op on both, downloads the device result and reports, per output,
 *   max_abs = max |gpu − cpu|,  max_ref = max |cpu|,  rel = max_abs / max_ref
 * (a norm-relative metric: matrix products reduce in different orders on the two backends).
 * Tolerance: rel ≤ 1e-5 for every f32 result (cuBLAS runs with CUBLAS_COMPUTE_32F, no TF32);
 * f16/bf16 weights are converted exactly to f32 on both backends before use, so they get the same
 * tolerance. Bit-exact checks where both sides do the same arithmetic (fill, convert, permute,
 * upsample, concat, embedding). Backward ops accumulate into gradients that start from the same
 * random values on both sides. Also: the CUDA results are the same bytes on a second run
 * (determinism), attention and conv2d with a tiny scratch arena (several query / image chunks),
 * and an SD-sized attention (T = 4096, 8 heads) forward and backward; and the fused attention of
 * SD_CUDA_ATTN=flash with the bf16/fp16 GEMM math (its own tolerance, see test_attention_flash);
 * and the 16-bit operands of the bf16/fp16 GEMM math against a CPU reference on rounded operands
 * (see test_gemm16); f8_e4m3fn (--fp8_base) weights widened bit for bit as on the CPU (see
 * test_f8_weights).
 *
 * Without a CUDA device (or in a build without CUDA) every test prints "ok NAME # SKIP no CUDA
 * device". Runs in a few seconds on an H100 (most of it the CPU reference).
 * SD_PARITY_SELFTEST=1 runs the "device" side on a second CPU context (a check of this program
 * without a GPU: every difference is then 0). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/device.h"
#include "tensor/ops.h"
#include "test.h"
#include "train/optim8bit.h"
#ifdef SD_CUDA
#include "tensor/cuda/cuda.h" /* the conv path counters; sd_cuda_gemm_count16 / count32: which operands the products took */
#endif

#define TOL 1e-5

static sd_ctx cpu, gpu;

/* ---- random numbers ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rnd64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return rng_state = x;
}
static float rndf(void) { return (float)((double)(rnd64() >> 11) * 0x1p-53 * 2.0 - 1.0); }

/* ---- host/device tensor pairs ---- */

typedef struct pair {
    sd_tensor h, d;
} pair;

#define MAXP 256
static pair *pool[MAXP];
static int npool;

/* SD_PARITY_SELFTEST=1: the "device" side is a second CPU context with host copies (checks this
 * program without a GPU: every difference must be 0). */
static int g_selftest;
static const sd_devkind DEV_SIDE_CUDA = SD_DEV_CUDA;
#define DEV_SIDE (g_selftest ? SD_DEV_CPU : DEV_SIDE_CUDA)

static void dev_upload(pair *p)
{
    size_t nb = sd_tensor_nbytes(&p->h);
    p->d = p->h;
    p->d.data = NULL;
    p->d.device = (uint8_t)DEV_SIDE;
    if (g_selftest) {
        p->d.data = aligned_alloc(64, (nb + 63) / 64 * 64 + 64);
        memcpy(p->d.data, p->h.data, nb);
    } else if (sd_device_alloc(&p->d.data, nb ? nb : 4)) printf("# device alloc failed: %s\n", sd_errmsg());
    else if (nb && sd_tensor_upload(&p->d, p->h.data, nb)) printf("# upload failed: %s\n", sd_errmsg());
}

static int dsync(void) { return g_selftest ? SD_OK : sd_device_sync(); }

/* A context on the device side with the given scratch size. */
static int dev_ctx(sd_ctx *c, size_t scratch)
{
    /* the CPU kernels size their scratch differently: the self-test gives them room */
    return sd_ctx_init(c, DEV_SIDE, 1, g_selftest && scratch < ((size_t)64 << 20) ? (size_t)64 << 20 : scratch);
}

/* Random tensor (uniform in [off - scale, off + scale]); f16/bf16 hold the rounded values. */
static pair *mk(sd_dtype dt, int nd, const int64_t *sh, float scale, float off)
{
    pair *p = calloc(1, sizeof *p);
    if (sd_tensor_alloc(&p->h, dt, nd, sh)) { printf("# alloc: %s\n", sd_errmsg()); exit(1); }
    int64_t n = sd_tensor_numel(&p->h);
    for (int64_t i = 0; i < n; i++) {
        float v = off + scale * rndf();
        if (dt == SD_F32) ((float *)p->h.data)[i] = v;
        else if (dt == SD_F16) ((uint16_t *)p->h.data)[i] = sd_f32_to_f16(v);
        else if (dt == SD_BF16) ((uint16_t *)p->h.data)[i] = sd_f32_to_bf16(v);
        else ((int32_t *)p->h.data)[i] = (int32_t)(rnd64() % 1000);
    }
    dev_upload(p);
    if (npool < MAXP) pool[npool++] = p;
    return p;
}
#define MK(dt, scale, off, ...) mk(dt, SD_DIMS(__VA_ARGS__), scale, off)
#define R(...) mk(SD_F32, SD_DIMS(__VA_ARGS__), 1.0f, 0.0f)

static void pool_free(void)
{
    for (int i = 0; i < npool; i++) {
        sd_tensor_free(&pool[i]->h);
        sd_tensor_free(&pool[i]->d);
        free(pool[i]);
    }
    npool = 0;
}

/* ---- comparison ---- */

static double worst_rel;
static char worst_name[96];

/* Compare device result with host result (f32): rel = max|Δ| / max|ref|. */
static void cmp(const char *name, const pair *p, double tol)
{
    int64_t n = sd_tensor_numel(&p->h);
    float *g = malloc((size_t)(n ? n : 1) * 4);
    int rc = sd_tensor_download(&p->d, g, sd_tensor_nbytes(&p->h));
    T_CHECKF(rc == SD_OK, "%s: download: %s", name, sd_errmsg());
    const float *c = p->h.data;
    double md = 0, mr = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(c[i]) != isnan(g[i])) bad = 1;
        if (isnan(c[i]) || isnan(g[i])) continue;
        double d = fabs((double)g[i] - (double)c[i]);
        if (d > md) md = d;
        if (fabs(c[i]) > mr) mr = fabs(c[i]);
    }
    double rel = mr > 0 ? md / mr : md;
    printf("# %-34s max_abs %.3e  max_ref %.3e  rel %.3e%s\n", name, md, mr, rel, rel <= tol && !bad ? "" : "  <-- FAIL");
    if (rel > worst_rel) { worst_rel = rel; snprintf(worst_name, sizeof worst_name, "%s", name); }
    T_CHECKF(!bad && rel <= tol, "%s: rel %.3e > %.1e (or NaN mismatch)", name, rel, tol);
    free(g);
}

/* Bit-exact comparison (any dtype). */
static void cmp_exact(const char *name, const pair *p)
{
    size_t nb = sd_tensor_nbytes(&p->h);
    unsigned char *g = malloc(nb ? nb : 1);
    int rc = sd_tensor_download(&p->d, g, nb);
    T_CHECKF(rc == SD_OK, "%s: download: %s", name, sd_errmsg());
    int same = memcmp(g, p->h.data, nb) == 0;
    printf("# %-34s %s\n", name, same ? "bit-exact" : "DIFFERENT  <-- FAIL");
    T_CHECKF(same, "%s: not bit-exact", name);
    free(g);
}

/* Device bytes of a result (for the determinism checks). */
static unsigned char *dev_bytes(const pair *p)
{
    size_t nb = sd_tensor_nbytes(&p->d);
    unsigned char *g = malloc(nb ? nb : 1);
    if (sd_tensor_download(&p->d, g, nb)) printf("# download failed: %s\n", sd_errmsg());
    return g;
}

static void same_bytes(const char *name, const pair *p, const unsigned char *before)
{
    unsigned char *now = dev_bytes(p);
    int same = memcmp(now, before, sd_tensor_nbytes(&p->d)) == 0;
    printf("# %-34s %s\n", name, same ? "same bytes on a second run" : "DIFFERENT on a second run  <-- FAIL");
    T_CHECKF(same, "%s: not deterministic", name);
    free(now);
}

/* Run an op on both backends: CALL(ctx, H_or_D) where field is h or d. */
#define BOTH(call_h, call_d) do { \
    int rc_h_ = (call_h); T_CHECKF(rc_h_ == SD_OK, "CPU %s: %s", #call_h, sd_errmsg()); \
    int rc_d_ = (call_d); T_CHECKF(rc_d_ == SD_OK, "CUDA %s: %s", #call_d, sd_errmsg()); \
    int rc_s_ = dsync(); T_CHECKF(rc_s_ == SD_OK, "CUDA sync after %s: %s", #call_d, sd_errmsg()); \
} while (0)

/* ---- tests ---- */

static void test_fill_convert(void)
{
    sd_dtype dts[3] = { SD_F32, SD_F16, SD_BF16 };
    const char *nm[3] = { "f32", "f16", "bf16" };
    char name[96];
    for (int i = 0; i < 3; i++) {
        pair *y = MK(dts[i], 1, 0, 3, 1000);
        BOTH(sd_op_fill(&cpu, &y->h, -1.3f), sd_op_fill(&gpu, &y->d, -1.3f));
        snprintf(name, sizeof name, "fill %s", nm[i]);
        cmp_exact(name, y);
        for (int j = 0; j < 3; j++) {
            pair *x = MK(dts[i], 3.0f, 0, 7, 333), *z = MK(dts[j], 1, 0, 7, 333);
            BOTH(sd_op_convert(&cpu, &z->h, &x->h), sd_op_convert(&gpu, &z->d, &x->d));
            snprintf(name, sizeof name, "convert %s -> %s", nm[i], nm[j]);
            cmp_exact(name, z);
        }
    }
    pool_free();
}

static void test_permute(void)
{
    pair *x = R(2, 3, 4, 5), *y = R(3, 5, 2, 4), *dx = R(2, 3, 4, 5);
    int perm[4] = { 1, 3, 0, 2 };
    BOTH(sd_op_permute(&cpu, &y->h, &x->h, perm), sd_op_permute(&gpu, &y->d, &x->d, perm));
    cmp_exact("permute", y);
    BOTH(sd_op_permute_bwd(&cpu, &dx->h, &y->h, perm), sd_op_permute_bwd(&gpu, &dx->d, &y->d, perm));
    cmp("permute_bwd", dx, 0);
    pool_free();
}

static void test_binary(void)
{
    /* b shapes broadcast against a [2, 3, 4, 5] */
    int64_t bs[][4] = { { 2, 3, 4, 5 }, { 5, 0, 0, 0 }, { 2, 3, 1, 1 }, { 1, 0, 0, 0 }, { 3, 1, 5, 0 }, { 2, 1, 4, 1 } };
    int bnd[] = { 4, 1, 4, 1, 3, 4 };
    char name[96];
    for (int t = 0; t < 6; t++) {
        pair *a = R(2, 3, 4, 5), *y = R(2, 3, 4, 5), *b = mk(SD_F32, bnd[t], bs[t], 1, 0);
        pair *dy = R(2, 3, 4, 5), *da = R(2, 3, 4, 5), *db = mk(SD_F32, bnd[t], bs[t], 1, 0);
        snprintf(name, sizeof name, "add (b case %d)", t);
        BOTH(sd_op_add(&cpu, &y->h, &a->h, &b->h), sd_op_add(&gpu, &y->d, &a->d, &b->d));
        cmp(name, y, 0);
        snprintf(name, sizeof name, "mul (b case %d)", t);
        BOTH(sd_op_mul(&cpu, &y->h, &a->h, &b->h), sd_op_mul(&gpu, &y->d, &a->d, &b->d));
        cmp(name, y, 0);
        BOTH(sd_op_mul_bwd(&cpu, &da->h, &db->h, &dy->h, &a->h, &b->h),
             sd_op_mul_bwd(&gpu, &da->d, &db->d, &dy->d, &a->d, &b->d));
        snprintf(name, sizeof name, "mul_bwd da (b case %d)", t);
        cmp(name, da, TOL);
        snprintf(name, sizeof name, "mul_bwd db (b case %d)", t);
        cmp(name, db, TOL);
        pair *s = mk(SD_F32, bnd[t], bs[t], 1, 0);
        BOTH(sd_op_sum_to(&cpu, &s->h, 0.7f, &dy->h), sd_op_sum_to(&gpu, &s->d, 0.7f, &dy->d));
        snprintf(name, sizeof name, "sum_to (case %d)", t);
        cmp(name, s, TOL);
    }
    /* sum_to with many reduced positions (block reduction path): [8, 64, 32, 32] → [64, 1, 1] */
    pair *x = R(8, 64, 32, 32), *s = R(64, 1, 1);
    BOTH(sd_op_sum_to(&cpu, &s->h, 1.0f, &x->h), sd_op_sum_to(&gpu, &s->d, 1.0f, &x->d));
    cmp("sum_to [8,64,32,32]->[64,1,1]", s, TOL);
    pair *y = R(8, 64, 32, 32);
    BOTH(sd_op_axpby(&cpu, &y->h, 0.3f, &x->h, 0.0f), sd_op_axpby(&gpu, &y->d, 0.3f, &x->d, 0.0f));
    cmp("axpby beta=0", y, TOL);
    BOTH(sd_op_axpby(&cpu, &y->h, -1.5f, &x->h, 0.9f), sd_op_axpby(&gpu, &y->d, -1.5f, &x->d, 0.9f));
    cmp("axpby", y, TOL);
    pool_free();
}

static void test_activations(void)
{
    const char *nm[] = { "none", "silu", "gelu", "gelu_tanh", "quick_gelu" };
    char name[96];
    for (int a = SD_ACT_NONE; a <= SD_ACT_QUICK_GELU; a++) {
        pair *x = MK(SD_F32, 4.0f, 0, 3, 1000), *y = R(3, 1000), *dy = R(3, 1000), *dx = R(3, 1000);
        BOTH(sd_op_act(&cpu, (sd_act)a, &y->h, &x->h), sd_op_act(&gpu, (sd_act)a, &y->d, &x->d));
        snprintf(name, sizeof name, "act %s", nm[a]);
        cmp(name, y, TOL);
        BOTH(sd_op_act_bwd(&cpu, (sd_act)a, &dx->h, &dy->h, &x->h), sd_op_act_bwd(&gpu, (sd_act)a, &dx->d, &dy->d, &x->d));
        snprintf(name, sizeof name, "act_bwd %s", nm[a]);
        cmp(name, dx, TOL);
    }
    pair *x = MK(SD_F32, 3.0f, 0, 2, 7, 2 * 96), *y = R(2, 7, 96), *dy = R(2, 7, 96), *dx = R(2, 7, 2 * 96);
    BOTH(sd_op_geglu(&cpu, &y->h, &x->h), sd_op_geglu(&gpu, &y->d, &x->d));
    cmp("geglu", y, TOL);
    BOTH(sd_op_geglu_bwd(&cpu, &dx->h, &dy->h, &x->h), sd_op_geglu_bwd(&gpu, &dx->d, &dy->d, &x->d));
    cmp("geglu_bwd", dx, TOL);
    pair *s = MK(SD_F32, 5.0f, 0, 6, 77), *sy = R(6, 77), *sdy = R(6, 77), *sdx = R(6, 77);
    BOTH(sd_op_softmax(&cpu, &sy->h, &s->h), sd_op_softmax(&gpu, &sy->d, &s->d));
    cmp("softmax", sy, TOL);
    BOTH(sd_op_softmax_bwd(&cpu, &sdx->h, &sdy->h, &sy->h), sd_op_softmax_bwd(&gpu, &sdx->d, &sdy->d, &sy->d));
    cmp("softmax_bwd", sdx, TOL);
    pair *l = MK(SD_F32, 5.0f, 0, 3, 1000), *ly = R(3, 1000);
    BOTH(sd_op_softmax(&cpu, &ly->h, &l->h), sd_op_softmax(&gpu, &ly->d, &l->d));
    cmp("softmax (rows of 1000)", ly, TOL);
    /* RoPE (EVA02): [2, 1+196, 4 heads of 64] with one class token; table [196, 128]; in place too */
    pair *rx = MK(SD_F32, 2.0f, 0, 2, 197, 256), *rt = MK(SD_F32, 1.0f, 0, 196, 128), *ry = R(2, 197, 256);
    pair *rdy = R(2, 197, 256), *rdx = R(2, 197, 256);
    BOTH(sd_op_rope(&cpu, &ry->h, &rx->h, &rt->h), sd_op_rope(&gpu, &ry->d, &rx->d, &rt->d));
    cmp("rope", ry, TOL);
    BOTH(sd_op_rope_bwd(&cpu, &rdx->h, &rdy->h, &rt->h), sd_op_rope_bwd(&gpu, &rdx->d, &rdy->d, &rt->d));
    cmp("rope_bwd", rdx, TOL);
    BOTH(sd_op_rope(&cpu, &rx->h, &rx->h, &rt->h), sd_op_rope(&gpu, &rx->d, &rx->d, &rt->d));
    cmp("rope in place", rx, TOL);
    pool_free();
}

static void test_linear_matmul(void)
{
    sd_dtype dts[3] = { SD_F32, SD_F16, SD_BF16 };
    const char *nm[3] = { "f32", "f16", "bf16" };
    char name[96];
    for (int i = 0; i < 3; i++) {
        pair *x = R(2, 37, 96), *w = MK(dts[i], 0.2f, 0, 80, 96), *b = R(80), *y = R(2, 37, 80);
        BOTH(sd_op_linear(&cpu, &y->h, &x->h, &w->h, &b->h), sd_op_linear(&gpu, &y->d, &x->d, &w->d, &b->d));
        snprintf(name, sizeof name, "linear w %s + bias", nm[i]);
        cmp(name, y, TOL);
        BOTH(sd_op_linear(&cpu, &y->h, &x->h, &w->h, NULL), sd_op_linear(&gpu, &y->d, &x->d, &w->d, NULL));
        snprintf(name, sizeof name, "linear w %s", nm[i]);
        cmp(name, y, TOL);
        pair *dy = R(2, 37, 80), *dx = R(2, 37, 96), *db = R(80);
        pair *dw = i == 0 ? R(80, 96) : NULL;
        BOTH(sd_op_linear_bwd(&cpu, &dx->h, dw ? &dw->h : NULL, &db->h, &dy->h, &x->h, &w->h),
             sd_op_linear_bwd(&gpu, &dx->d, dw ? &dw->d : NULL, &db->d, &dy->d, &x->d, &w->d));
        snprintf(name, sizeof name, "linear_bwd dx (w %s)", nm[i]);
        cmp(name, dx, TOL);
        if (dw) cmp("linear_bwd dw", dw, TOL);
        snprintf(name, sizeof name, "linear_bwd db (w %s)", nm[i]);
        cmp(name, db, TOL);
    }
    /* bias gradient over many rows (several partial blocks) */
    pair *x = R(1100, 48), *w = R(40, 48), *dy = R(1100, 40), *db = R(40), *dw = R(40, 48);
    BOTH(sd_op_linear_bwd(&cpu, NULL, &dw->h, &db->h, &dy->h, &x->h, &w->h),
         sd_op_linear_bwd(&gpu, NULL, &dw->d, &db->d, &dy->d, &x->d, &w->d));
    cmp("linear_bwd dw (1100 rows)", dw, TOL);
    cmp("linear_bwd db (1100 rows)", db, TOL);
    /* matmul: every transpose combination, batched, shared b, alpha/beta */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t M = 33, N = 45, K = 70;
            pair *a = ta ? R(3, K, M) : R(3, M, K);
            pair *bb = tb ? R(3, N, K) : R(3, K, N);
            pair *c = R(3, M, N);
            BOTH(sd_op_matmul(&cpu, &c->h, &a->h, ta, &bb->h, tb, 0.7f, 0.5f),
                 sd_op_matmul(&gpu, &c->d, &a->d, ta, &bb->d, tb, 0.7f, 0.5f));
            snprintf(name, sizeof name, "matmul ta=%d tb=%d batched", ta, tb);
            cmp(name, c, TOL);
            pair *b2 = tb ? R(N, K) : R(K, N);
            BOTH(sd_op_matmul(&cpu, &c->h, &a->h, ta, &b2->h, tb, 1.0f, 0.0f),
                 sd_op_matmul(&gpu, &c->d, &a->d, ta, &b2->d, tb, 1.0f, 0.0f));
            snprintf(name, sizeof name, "matmul ta=%d tb=%d shared b", ta, tb);
            cmp(name, c, TOL);
        }
    pair *a = R(64, 300), *b = R(300, 50), *c = R(64, 50);
    BOTH(sd_op_matmul(&cpu, &c->h, &a->h, 0, &b->h, 0, 1.0f, 0.0f), sd_op_matmul(&gpu, &c->d, &a->d, 0, &b->d, 0, 1.0f, 0.0f));
    cmp("matmul 2-d", c, TOL);
    pool_free();
}

typedef struct conv_case {
    const char *name;
    int cin, cout, h, w, kh, kw;
    sd_conv2d_geom g;
} conv_case;

/* The tolerance of conv_one's comparisons (TOL; the cuDNN TF32 runs raise it). */
static double g_conv_tol = TOL;

/* tiny: 3 images and a scratch arena that holds the backward's two im2col buffers of one image
 * only (forward: 2 images per chunk, backward: 1), so the chunk loops run several times. */
/* The output size of cc; tiny: *small becomes a context whose scratch holds two fp32 im2col
 * buffers of one image only (returned), else the shared GPU context. NULL: no small context. */
static sd_ctx *conv_setup(const conv_case *cc, int tiny, sd_ctx *small, int64_t *ho, int64_t *wo)
{
    sd_conv2d_geom g = cc->g;
    *ho = (cc->h + g.pad_t + g.pad_b - cc->kh) / g.stride + 1;
    *wo = (cc->w + g.pad_l + g.pad_r - cc->kw) / g.stride + 1;
    if (!tiny) return &gpu;
    size_t kp = (size_t)(cc->cin * cc->kh * cc->kw) * (size_t)(*ho * *wo) * 4;
    if (dev_ctx(small, 2 * kp + 512)) {
        T_CHECKF(0, "small context: %s", sd_errmsg());
        return NULL;
    }
    return small;
}

static void conv_one(const conv_case *cc, sd_dtype wdt, int tiny, const char *tag, int bias)
{
    char name[128];
    int n = tiny ? 3 : 2;
    sd_conv2d_geom g = cc->g;
    int64_t ho, wo;
    sd_ctx small, *gctx = conv_setup(cc, tiny, &small, &ho, &wo);
    if (!gctx) return;
    pair *x = R(n, cc->cin, cc->h, cc->w), *w = MK(wdt, 0.3f, 0, cc->cout, cc->cin, cc->kh, cc->kw), *b = R(cc->cout);
    pair *y = R(n, cc->cout, ho, wo);
    BOTH(sd_op_conv2d(&cpu, &y->h, &x->h, &w->h, bias ? &b->h : NULL, g),
         sd_op_conv2d(gctx, &y->d, &x->d, &w->d, bias ? &b->d : NULL, g));
    snprintf(name, sizeof name, "conv2d %s%s", cc->name, tag);
    cmp(name, y, g_conv_tol);
    pair *dy = R(n, cc->cout, ho, wo), *dx = R(n, cc->cin, cc->h, cc->w), *db = R(cc->cout);
    pair *dw = wdt == SD_F32 ? R(cc->cout, cc->cin, cc->kh, cc->kw) : NULL;
    BOTH(sd_op_conv2d_bwd(&cpu, &dx->h, dw ? &dw->h : NULL, &db->h, &dy->h, &x->h, &w->h, g),
         sd_op_conv2d_bwd(gctx, &dx->d, dw ? &dw->d : NULL, &db->d, &dy->d, &x->d, &w->d, g));
    snprintf(name, sizeof name, "conv2d_bwd dx %s%s", cc->name, tag);
    cmp(name, dx, g_conv_tol);
    if (dw) {
        snprintf(name, sizeof name, "conv2d_bwd dw %s%s", cc->name, tag);
        cmp(name, dw, g_conv_tol);
    }
    snprintf(name, sizeof name, "conv2d_bwd db %s%s", cc->name, tag);
    cmp(name, db, g_conv_tol);
    if (tiny) sd_ctx_free(&small);
}

static void test_conv2d(void)
{
    conv_case cs[] = {
        { "3x3 s1 p1", 8, 12, 9, 10, 3, 3, { 1, 1, 1, 1, 1 } },
        { "3x3 s2 p1", 8, 6, 9, 10, 3, 3, { 2, 1, 1, 1, 1 } },
        { "3x3 s2 pad 0,1,0,1", 6, 8, 8, 8, 3, 3, { 2, 0, 0, 1, 1 } },
        { "1x1", 16, 8, 7, 9, 1, 1, { 1, 0, 0, 0, 0 } },
        { "1x3 s1 pad 0,1,0,1", 4, 5, 6, 7, 1, 3, { 1, 0, 1, 0, 1 } },
        { "4x4 s2 p0", 3, 4, 10, 10, 4, 4, { 2, 0, 0, 0, 0 } },
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        conv_one(&cs[i], SD_F32, 0, "", 1);
        conv_one(&cs[i], SD_F32, 1, " (tiny scratch)", 0);
        pool_free();
    }
    conv_one(&cs[0], SD_BF16, 0, " (w bf16)", 1);
    conv_one(&cs[0], SD_F16, 0, " (w f16)", 1);
    conv_one(&cs[3], SD_BF16, 0, " (w bf16)", 0);
    pool_free();
    /* determinism of the backward (dw accumulates over images in order) */
    conv_case c = { "3x3", 32, 32, 16, 16, 3, 3, { 1, 1, 1, 1, 1 } };
    pair *x = R(4, 32, 16, 16), *w = MK(SD_F32, 0.1f, 0, 32, 32, 3, 3), *dy = R(4, 32, 16, 16);
    pair *dx = R(4, 32, 16, 16), *dw = R(32, 32, 3, 3), *db = R(32);
    (void)c;
    sd_op_fill(&gpu, &dx->d, 0); sd_op_fill(&gpu, &dw->d, 0); sd_op_fill(&gpu, &db->d, 0);
    T_EQ_INT(sd_op_conv2d_bwd(&gpu, &dx->d, &dw->d, &db->d, &dy->d, &x->d, &w->d, c.g), SD_OK);
    unsigned char *b1 = dev_bytes(dx), *b2 = dev_bytes(dw), *b3 = dev_bytes(db);
    sd_op_fill(&gpu, &dx->d, 0); sd_op_fill(&gpu, &dw->d, 0); sd_op_fill(&gpu, &db->d, 0);
    T_EQ_INT(sd_op_conv2d_bwd(&gpu, &dx->d, &dw->d, &db->d, &dy->d, &x->d, &w->d, c.g), SD_OK);
    same_bytes("conv2d_bwd dx", dx, b1);
    same_bytes("conv2d_bwd dw", dw, b2);
    same_bytes("conv2d_bwd db", db, b3);
    free(b1); free(b2); free(b3);
    pool_free();
}

/* SD_CUDA_CONV=cudnn (lib/tensor/cuda/conv_cudnn.cu): the conv2d cases through cuDNN against the CPU,
 * with SD_CUDA_MATH fp32 (CUDNN_FMA_MATH: TOL) and tf32 (CUDNN_TENSOR_OP_MATH: the TF32 tolerance of
 * test_cuda_basic, 2e-3), forward with and without bias, backward dx only / dw only / both from
 * random starting gradients (+=), a tiny scratch arena (the algorithm without workspace), bf16
 * weights, the backward's determinism; the counters prove that cuDNN ran each part, and asymmetric
 * padding falls back to im2col (same results). In the emulated build (tests/emu/lib/cudnn_emu.cpp)
 * also: SD_EMU_CUDNN=missing / unsupported / nondet, and wsonly with a tiny scratch arena, fall back
 * with the same results, and a cuDNN execution failure is SD_EDEVICE with cuDNN's error string. On
 * a GPU without libcudnn.so.9 the cases run through the fallback and the counter checks are
 * skipped (said so). */
#ifdef SD_CUDA
static sd_cuda_conv_stats g_cst;
static void cst_snap(void) { sd_cuda_conv_stats_get(&g_cst); }
/* the counters moved by exactly (fwd, bwd_data, bwd_filter, fallback) since cst_snap() */
static void cst_expect(const char *name, long f, long bd, long bf, long fb)
{
    sd_cuda_conv_stats now;
    sd_cuda_conv_stats_get(&now);
    long df = now.fwd - g_cst.fwd, dd = now.bwd_data - g_cst.bwd_data, dw = now.bwd_filter - g_cst.bwd_filter,
         dfb = now.fallback - g_cst.fallback;
    int ok = df == f && dd == bd && dw == bf && dfb == fb;
    printf("# %-34s cuDNN fwd %ld, bwd data %ld, bwd filter %ld, fallbacks %ld%s\n", name, df, dd, dw, dfb,
           ok ? "" : "  <-- FAIL");
    T_CHECKF(ok, "%s: cuDNN calls fwd %ld bwd_data %ld bwd_filter %ld fallback %ld, expected %ld %ld %ld %ld", name, df,
             dd, dw, dfb, f, bd, bf, fb);
}

/* backward with dx only, dw only, both (db NULL), from random starting values */
static void conv_parts(const conv_case *cc, const char *tag, int check_counts)
{
    char name[160];
    sd_conv2d_geom g = cc->g;
    int64_t ho, wo;
    conv_setup(cc, 0, NULL, &ho, &wo);
    pair *x = R(2, cc->cin, cc->h, cc->w), *w = MK(SD_F32, 0.3f, 0, cc->cout, cc->cin, cc->kh, cc->kw);
    pair *dy = R(2, cc->cout, ho, wo);
    static const char *const pn[4] = { "", "dx only", "dw only", "dx+dw" };
    for (int parts = 1; parts <= 3; parts++) {
        pair *dx = R(2, cc->cin, cc->h, cc->w), *dw = R(cc->cout, cc->cin, cc->kh, cc->kw);
        cst_snap();
        BOTH(sd_op_conv2d_bwd(&cpu, parts & 1 ? &dx->h : NULL, parts & 2 ? &dw->h : NULL, NULL, &dy->h, &x->h, &w->h, g),
             sd_op_conv2d_bwd(&gpu, parts & 1 ? &dx->d : NULL, parts & 2 ? &dw->d : NULL, NULL, &dy->d, &x->d, &w->d, g));
        if (parts & 1) { snprintf(name, sizeof name, "cudnn bwd %s dx %s%s", pn[parts], cc->name, tag); cmp(name, dx, g_conv_tol); }
        if (parts & 2) { snprintf(name, sizeof name, "cudnn bwd %s dw %s%s", pn[parts], cc->name, tag); cmp(name, dw, g_conv_tol); }
        snprintf(name, sizeof name, "cudnn bwd %s %s", pn[parts], cc->name);
        if (check_counts) cst_expect(name, 0, parts & 1, (parts & 2) >> 1, 0);
    }
}

#ifdef SD_CUDA_EMU
/* one 3x3 case with SD_EMU_CUDNN=knob: falls back (counted), same results as the CPU; tiny: in a
 * scratch arena too small for the workspace of every algorithm offered */
static void emu_knob(const char *knob, int reset, int tiny)
{
    char tag[64];
    conv_case c = { "3x3 s1 p1", 8, 12, 9, 10, 3, 3, { 1, 1, 1, 1, 1 } };
    setenv("SD_EMU_CUDNN", knob, 1);
    if (reset) sd_cuda_conv_reset();
    snprintf(tag, sizeof tag, " (SD_EMU_CUDNN=%s%s)", knob, tiny ? ", tiny scratch" : "");
    cst_snap();
    conv_one(&c, SD_F32, tiny, tag, !tiny);
    snprintf(tag, sizeof tag, "SD_EMU_CUDNN=%s", knob);
    cst_expect(tag, 0, 0, 0, 2);
    unsetenv("SD_EMU_CUDNN");
    if (reset) sd_cuda_conv_reset();
    pool_free();
}
#endif
#endif

static void test_conv2d_cudnn(void)
{
#ifndef SD_CUDA
    printf("# (no CUDA backend in this build)\n");
#else
    if (g_selftest) {
        printf("# (self-test: no cuDNN on the CPU side; nothing to compare)\n");
        return;
    }
    char *old = getenv("SD_CUDA_CONV") ? strdup(getenv("SD_CUDA_CONV")) : NULL;
    setenv("SD_CUDA_CONV", "cudnn", 1);
    sd_cuda_conv_reset();
    conv_case cs[] = {
        { "1x1", 16, 8, 7, 9, 1, 1, { 1, 0, 0, 0, 0 } },
        { "3x3 s1 p1", 8, 12, 9, 10, 3, 3, { 1, 1, 1, 1, 1 } },
        { "3x3 s2 p1 (SD downsample)", 8, 6, 9, 10, 3, 3, { 2, 1, 1, 1, 1 } },
        { "4x4 s2 p0", 3, 4, 10, 10, 4, 4, { 2, 0, 0, 0, 0 } },
    };
    /* a first call loads the library (or finds that it cannot) */
    {
        pair *x = R(1, 4, 5, 5), *w = R(4, 4, 3, 3), *y = R(1, 4, 5, 5);
        T_EQ_INT(sd_op_conv2d(&gpu, &y->d, &x->d, &w->d, NULL, sd_conv2d_geom_make(1, 1)), SD_OK);
        pool_free();
    }
    sd_cuda_conv_stats st;
    sd_cuda_conv_stats_get(&st);
    int have = st.loaded == 1;
    printf("# cuDNN %s\n", have ? "loaded: the counters must show it ran" : "NOT loaded: every case falls back to im2col");
#ifdef SD_CUDA_EMU
    T_CHECKF(have, "the emulated cuDNN did not load");
#endif
    static const struct { sd_gemm_math m; const char *name; double tol; } ms[2] = {
        { SD_GEMM_FP32, "", TOL }, { SD_GEMM_TF32, " tf32", 2e-3 } };
    char tag[64];
    for (int mi = 0; mi < 2; mi++) {
        T_EQ_INT(sd_device_set_gemm_math(ms[mi].m), SD_OK);
        g_conv_tol = ms[mi].tol;
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
            for (int v = 0; v < 3; v++) {  /* bias / no bias / tiny scratch without bias */
                snprintf(tag, sizeof tag, " cudnn%s%s", ms[mi].name, v == 0 ? "" : v == 1 ? " (no bias)" : " (tiny scratch)");
                cst_snap();
                conv_one(&cs[i], SD_F32, v == 2, tag, v == 0);
                char cn[128];
                snprintf(cn, sizeof cn, "%s%s", cs[i].name, tag);
                if (have) cst_expect(cn, 1, 1, 1, 0);
            }
            snprintf(tag, sizeof tag, " cudnn%s", ms[mi].name);
            conv_parts(&cs[i], tag, have);
            pool_free();
        }
        snprintf(tag, sizeof tag, " cudnn%s (w bf16)", ms[mi].name);
        cst_snap();
        conv_one(&cs[1], SD_BF16, 0, tag, 1);
        if (have) cst_expect("3x3 s1 p1 (w bf16)", 1, 1, 0, 0);
        pool_free();
    }
    T_EQ_INT(sd_device_set_gemm_math(SD_GEMM_FP32), SD_OK);
    g_conv_tol = TOL;
    /* asymmetric padding (the VAE's downsample): not expressible in cuDNN, falls back */
    conv_case asym = { "3x3 s2 pad 0,1,0,1", 6, 8, 8, 8, 3, 3, { 2, 0, 0, 1, 1 } };
    cst_snap();
    conv_one(&asym, SD_F32, 0, " cudnn (falls back)", 1);
    cst_expect("asymmetric padding", 0, 0, 0, 2);
    pool_free();
    /* determinism of the backward through cuDNN */
    {
        pair *x = R(4, 32, 16, 16), *w = MK(SD_F32, 0.1f, 0, 32, 32, 3, 3), *dy = R(4, 32, 16, 16);
        pair *dx = R(4, 32, 16, 16), *dw = R(32, 32, 3, 3);
        sd_conv2d_geom g = sd_conv2d_geom_make(1, 1);
        sd_op_fill(&gpu, &dx->d, 0); sd_op_fill(&gpu, &dw->d, 0);
        T_EQ_INT(sd_op_conv2d_bwd(&gpu, &dx->d, &dw->d, NULL, &dy->d, &x->d, &w->d, g), SD_OK);
        unsigned char *b1 = dev_bytes(dx), *b2 = dev_bytes(dw);
        sd_op_fill(&gpu, &dx->d, 0); sd_op_fill(&gpu, &dw->d, 0);
        T_EQ_INT(sd_op_conv2d_bwd(&gpu, &dx->d, &dw->d, NULL, &dy->d, &x->d, &w->d, g), SD_OK);
        same_bytes("cudnn conv2d_bwd dx", dx, b1);
        same_bytes("cudnn conv2d_bwd dw", dw, b2);
        free(b1); free(b2);
        pool_free();
    }
#ifdef SD_CUDA_EMU
    emu_knob("unsupported", 0, 0);
    emu_knob("nondet", 1, 0);
    emu_knob("missing", 1, 0);
    emu_knob("wsonly", 1, 1);
    /* an execution failure is an error, not a fallback */
    {
        pair *x = R(2, 4, 5, 5), *w = R(4, 4, 3, 3), *y = R(2, 4, 5, 5);
        setenv("SD_EMU_CUDNN", "fail", 1);
        int rc = sd_op_conv2d(&gpu, &y->d, &x->d, &w->d, NULL, sd_conv2d_geom_make(1, 1));
        unsetenv("SD_EMU_CUDNN");
        printf("# cuDNN execution failure: %s\n", sd_errmsg());
        T_EQ_INT(rc, SD_EDEVICE);
        T_CHECKF(strstr(sd_errmsg(), "cuDNN") && strstr(sd_errmsg(), "CUDNN_STATUS_EXECUTION_FAILED"), "%s", sd_errmsg());
        pool_free();
    }
#endif
    if (old) setenv("SD_CUDA_CONV", old, 1);
    else unsetenv("SD_CUDA_CONV");
    free(old);
    sd_cuda_conv_reset();
#endif
}

/* Depthwise conv (w [C,1,kh,kw]): the ConvNeXt 7×7 pad 3, a strided one, f32/bf16/f16 weights; the
 * backward's determinism on the device (fixed-tree dW/db). */
static void dw_one(int n, int c, int h, int w, int k, sd_conv2d_geom g, sd_dtype wdt, const char *tag)
{
    char name[128];
    int64_t ho = (h + g.pad_t + g.pad_b - k) / g.stride + 1, wo = (w + g.pad_l + g.pad_r - k) / g.stride + 1;
    pair *x = R(n, c, h, w), *wt = MK(wdt, 0.3f, 0, c, 1, k, k), *b = R(c), *y = R(n, c, ho, wo);
    BOTH(sd_op_conv2d_dw(&cpu, &y->h, &x->h, &wt->h, &b->h, g), sd_op_conv2d_dw(&gpu, &y->d, &x->d, &wt->d, &b->d, g));
    snprintf(name, sizeof name, "conv2d_dw %s", tag);
    cmp(name, y, TOL);
    pair *dy = R(n, c, ho, wo), *dx = R(n, c, h, w), *db = R(c);
    pair *dw = wdt == SD_F32 ? R(c, 1, k, k) : NULL;
    BOTH(sd_op_conv2d_dw_bwd(&cpu, &dx->h, dw ? &dw->h : NULL, &db->h, &dy->h, &x->h, &wt->h, g),
         sd_op_conv2d_dw_bwd(&gpu, &dx->d, dw ? &dw->d : NULL, &db->d, &dy->d, &x->d, &wt->d, g));
    snprintf(name, sizeof name, "conv2d_dw_bwd dx %s", tag);
    cmp(name, dx, TOL);
    if (dw) {
        snprintf(name, sizeof name, "conv2d_dw_bwd dw %s", tag);
        cmp(name, dw, TOL);
    }
    snprintf(name, sizeof name, "conv2d_dw_bwd db %s", tag);
    cmp(name, db, TOL);
}

static void test_conv2d_dw(void)
{
    dw_one(2, 16, 28, 28, 7, sd_conv2d_geom_make(1, 3), SD_F32, "7x7 p3");
    dw_one(3, 5, 9, 10, 3, sd_conv2d_geom_make(2, 1), SD_F32, "3x3 s2 p1");
    dw_one(1, 4, 3, 5, 7, sd_conv2d_geom_make(1, 3), SD_F32, "7x7 p3 on 3x5");
    dw_one(2, 8, 14, 14, 7, sd_conv2d_geom_make(1, 3), SD_BF16, "7x7 (w bf16)");
    dw_one(2, 8, 14, 14, 7, sd_conv2d_geom_make(1, 3), SD_F16, "7x7 (w f16)");
    pool_free();
    sd_conv2d_geom g = sd_conv2d_geom_make(1, 3);
    pair *x = R(4, 32, 20, 20), *w = MK(SD_F32, 0.1f, 0, 32, 1, 7, 7), *dy = R(4, 32, 20, 20);
    pair *dx = R(4, 32, 20, 20), *dw = R(32, 1, 7, 7), *db = R(32);
    sd_op_fill(&gpu, &dx->d, 0); sd_op_fill(&gpu, &dw->d, 0); sd_op_fill(&gpu, &db->d, 0);
    T_EQ_INT(sd_op_conv2d_dw_bwd(&gpu, &dx->d, &dw->d, &db->d, &dy->d, &x->d, &w->d, g), SD_OK);
    unsigned char *b1 = dev_bytes(dx), *b2 = dev_bytes(dw), *b3 = dev_bytes(db);
    sd_op_fill(&gpu, &dx->d, 0); sd_op_fill(&gpu, &dw->d, 0); sd_op_fill(&gpu, &db->d, 0);
    T_EQ_INT(sd_op_conv2d_dw_bwd(&gpu, &dx->d, &dw->d, &db->d, &dy->d, &x->d, &w->d, g), SD_OK);
    same_bytes("conv2d_dw_bwd dx", dx, b1);
    same_bytes("conv2d_dw_bwd dw", dw, b2);
    same_bytes("conv2d_dw_bwd db", db, b3);
    free(b1); free(b2); free(b3);
    pool_free();
}

static void test_norms(void)
{
    char name[128];
    for (int v = 0; v < 4; v++) {
        int silu = v & 1, affine = !(v & 2);
        const char *tag = silu ? (affine ? " +silu" : " +silu no affine") : (affine ? "" : " no affine");
        pair *x = MK(SD_F32, 2.0f, 0.5f, 2, 12, 5, 7), *ga = MK(SD_F32, 0.5f, 1.0f, 12), *be = R(12);
        pair *y = R(2, 12, 5, 7), *mean = R(2, 4), *rstd = R(2, 4);
        sd_act act = silu ? SD_ACT_SILU : SD_ACT_NONE;
        BOTH(sd_op_group_norm(&cpu, &y->h, &mean->h, &rstd->h, &x->h, affine ? &ga->h : NULL, affine ? &be->h : NULL, 4,
                              1e-5f, act),
             sd_op_group_norm(&gpu, &y->d, &mean->d, &rstd->d, &x->d, affine ? &ga->d : NULL, affine ? &be->d : NULL, 4,
                              1e-5f, act));
        snprintf(name, sizeof name, "group_norm y%s", tag); cmp(name, y, TOL);
        snprintf(name, sizeof name, "group_norm mean%s", tag); cmp(name, mean, TOL);
        snprintf(name, sizeof name, "group_norm rstd%s", tag); cmp(name, rstd, TOL);
        pair *dy = R(2, 12, 5, 7), *dx = R(2, 12, 5, 7), *dga = R(12), *dbe = R(12);
        BOTH(sd_op_group_norm_bwd(&cpu, &dx->h, affine ? &dga->h : NULL, affine ? &dbe->h : NULL, &dy->h, &x->h, &mean->h,
                                  &rstd->h, affine ? &ga->h : NULL, affine ? &be->h : NULL, 4, act),
             sd_op_group_norm_bwd(&gpu, &dx->d, affine ? &dga->d : NULL, affine ? &dbe->d : NULL, &dy->d, &x->d, &mean->d,
                                  &rstd->d, affine ? &ga->d : NULL, affine ? &be->d : NULL, 4, act));
        snprintf(name, sizeof name, "group_norm_bwd dx%s", tag); cmp(name, dx, TOL);
        if (affine) {
            snprintf(name, sizeof name, "group_norm_bwd dgamma%s", tag); cmp(name, dga, TOL);
            snprintf(name, sizeof name, "group_norm_bwd dbeta%s", tag); cmp(name, dbe, TOL);
        }
        /* gradients of the parameters only (dx NULL) */
        if (affine) {
            BOTH(sd_op_group_norm_bwd(&cpu, NULL, &dga->h, &dbe->h, &dy->h, &x->h, &mean->h, &rstd->h, &ga->h, &be->h, 4, act),
                 sd_op_group_norm_bwd(&gpu, NULL, &dga->d, &dbe->d, &dy->d, &x->d, &mean->d, &rstd->d, &ga->d, &be->d, 4, act));
            snprintf(name, sizeof name, "group_norm_bwd dgamma, dx NULL%s", tag); cmp(name, dga, TOL);
        }
        pair *lx = MK(SD_F32, 2.0f, 0.3f, 3, 7, 96), *lg = MK(SD_F32, 0.5f, 1.0f, 96), *lb = R(96);
        pair *ly = R(3, 7, 96), *lm = R(3, 7), *lr = R(3, 7);
        BOTH(sd_op_layer_norm(&cpu, &ly->h, &lm->h, &lr->h, &lx->h, affine ? &lg->h : NULL, affine ? &lb->h : NULL, 1e-5f),
             sd_op_layer_norm(&gpu, &ly->d, &lm->d, &lr->d, &lx->d, affine ? &lg->d : NULL, affine ? &lb->d : NULL, 1e-5f));
        if (silu) continue;  /* layer norm has no activation: once per affine setting */
        snprintf(name, sizeof name, "layer_norm y%s", tag); cmp(name, ly, TOL);
        snprintf(name, sizeof name, "layer_norm mean%s", tag); cmp(name, lm, TOL);
        snprintf(name, sizeof name, "layer_norm rstd%s", tag); cmp(name, lr, TOL);
        pair *ldy = R(3, 7, 96), *ldx = R(3, 7, 96), *ldg = R(96), *ldb = R(96);
        BOTH(sd_op_layer_norm_bwd(&cpu, &ldx->h, &ldg->h, &ldb->h, &ldy->h, &lx->h, &lm->h, &lr->h, affine ? &lg->h : NULL),
             sd_op_layer_norm_bwd(&gpu, &ldx->d, &ldg->d, &ldb->d, &ldy->d, &lx->d, &lm->d, &lr->d, affine ? &lg->d : NULL));
        snprintf(name, sizeof name, "layer_norm_bwd dx%s", tag); cmp(name, ldx, TOL);
        snprintf(name, sizeof name, "layer_norm_bwd dgamma%s", tag); cmp(name, ldg, TOL);
        snprintf(name, sizeof name, "layer_norm_bwd dbeta%s", tag); cmp(name, ldb, TOL);
        pool_free();
    }
    /* many rows (several row blocks in the parameter gradients), SD-like widths */
    pair *lx = MK(SD_F32, 2.0f, 0.3f, 2, 300, 320), *lg = MK(SD_F32, 0.5f, 1.0f, 320), *lb = R(320);
    pair *ly = R(2, 300, 320), *lm = R(2, 300), *lr = R(2, 300);
    BOTH(sd_op_layer_norm(&cpu, &ly->h, &lm->h, &lr->h, &lx->h, &lg->h, &lb->h, 1e-5f),
         sd_op_layer_norm(&gpu, &ly->d, &lm->d, &lr->d, &lx->d, &lg->d, &lb->d, 1e-5f));
    cmp("layer_norm y [2,300,320]", ly, TOL);
    pair *ldy = R(2, 300, 320), *ldx = R(2, 300, 320), *ldg = R(320), *ldb = R(320);
    BOTH(sd_op_layer_norm_bwd(&cpu, &ldx->h, &ldg->h, &ldb->h, &ldy->h, &lx->h, &lm->h, &lr->h, &lg->h),
         sd_op_layer_norm_bwd(&gpu, &ldx->d, &ldg->d, &ldb->d, &ldy->d, &lx->d, &lm->d, &lr->d, &lg->d));
    cmp("layer_norm_bwd dx [2,300,320]", ldx, TOL);
    cmp("layer_norm_bwd dgamma [2,300,320]", ldg, TOL);
    cmp("layer_norm_bwd dbeta [2,300,320]", ldb, TOL);
    pair *x = MK(SD_F32, 2.0f, 0.5f, 2, 64, 16, 16), *ga = MK(SD_F32, 0.5f, 1.0f, 64), *be = R(64);
    pair *y = R(2, 64, 16, 16), *mean = R(2, 32), *rstd = R(2, 32);
    BOTH(sd_op_group_norm(&cpu, &y->h, &mean->h, &rstd->h, &x->h, &ga->h, &be->h, 32, 1e-6f, SD_ACT_SILU),
         sd_op_group_norm(&gpu, &y->d, &mean->d, &rstd->d, &x->d, &ga->d, &be->d, 32, 1e-6f, SD_ACT_SILU));
    cmp("group_norm+silu [2,64,16,16] g32", y, TOL);
    pair *dy = R(2, 64, 16, 16), *dx = R(2, 64, 16, 16), *dga = R(64), *dbe = R(64);
    BOTH(sd_op_group_norm_bwd(&cpu, &dx->h, &dga->h, &dbe->h, &dy->h, &x->h, &mean->h, &rstd->h, &ga->h, &be->h, 32, SD_ACT_SILU),
         sd_op_group_norm_bwd(&gpu, &dx->d, &dga->d, &dbe->d, &dy->d, &x->d, &mean->d, &rstd->d, &ga->d, &be->d, 32, SD_ACT_SILU));
    cmp("group_norm_bwd dx [2,64,16,16]", dx, TOL);
    cmp("group_norm_bwd dgamma [2,64,16,16]", dga, TOL);
    cmp("group_norm_bwd dbeta [2,64,16,16]", dbe, TOL);
    pool_free();
}

typedef struct attn_case {
    const char *name;
    int b, tq, tk, h, dk, dv, causal;
    float scale;
} attn_case;

/* tiny: a scratch arena for about 16 query rows in the backward (32 in the forward). */
static void attn_one(const attn_case *ac, int tiny, const char *tag, int determinism)
{
    char name[128];
    sd_ctx small, *gctx = &gpu;
    if (tiny) {
        size_t row = (size_t)(2 * ac->h * ac->tk + ac->h) * 4;
        if (dev_ctx(&small, 16 * row + 512)) { T_CHECKF(0, "small context: %s", sd_errmsg()); return; }
        gctx = &small;
    }
    sd_attn_args a = { ac->h, ac->scale, ac->causal };
    pair *q = MK(SD_F32, 1.5f, 0, ac->b, ac->tq, ac->h * ac->dk), *k = MK(SD_F32, 1.5f, 0, ac->b, ac->tk, ac->h * ac->dk);
    pair *v = R(ac->b, ac->tk, ac->h * ac->dv), *o = R(ac->b, ac->tq, ac->h * ac->dv), *lse = R(ac->b, ac->h, ac->tq);
    BOTH(sd_op_attention(&cpu, &o->h, &lse->h, &q->h, &k->h, &v->h, a), sd_op_attention(gctx, &o->d, &lse->d, &q->d, &k->d, &v->d, a));
    snprintf(name, sizeof name, "attention o %s%s", ac->name, tag); cmp(name, o, TOL);
    snprintf(name, sizeof name, "attention lse %s%s", ac->name, tag); cmp(name, lse, TOL);
    pair *dout = R(ac->b, ac->tq, ac->h * ac->dv);
    pair *dq = R(ac->b, ac->tq, ac->h * ac->dk), *dk = R(ac->b, ac->tk, ac->h * ac->dk), *dv = R(ac->b, ac->tk, ac->h * ac->dv);
    unsigned char *b1 = determinism ? dev_bytes(dq) : NULL, *b2 = determinism ? dev_bytes(dk) : NULL;
    unsigned char *b3 = determinism ? dev_bytes(dv) : NULL;
    BOTH(sd_op_attention_bwd(&cpu, &dq->h, &dk->h, &dv->h, &dout->h, &q->h, &k->h, &v->h, &o->h, &lse->h, a),
         sd_op_attention_bwd(gctx, &dq->d, &dk->d, &dv->d, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a));
    snprintf(name, sizeof name, "attention_bwd dq %s%s", ac->name, tag); cmp(name, dq, TOL);
    snprintf(name, sizeof name, "attention_bwd dk %s%s", ac->name, tag); cmp(name, dk, TOL);
    snprintf(name, sizeof name, "attention_bwd dv %s%s", ac->name, tag); cmp(name, dv, TOL);
    if (determinism) {
        unsigned char *r1 = dev_bytes(dq), *r2 = dev_bytes(dk), *r3 = dev_bytes(dv);
        /* again from the same starting gradients */
        T_EQ_INT(sd_tensor_upload(&dq->d, b1, sd_tensor_nbytes(&dq->d)), SD_OK);
        T_EQ_INT(sd_tensor_upload(&dk->d, b2, sd_tensor_nbytes(&dk->d)), SD_OK);
        T_EQ_INT(sd_tensor_upload(&dv->d, b3, sd_tensor_nbytes(&dv->d)), SD_OK);
        T_EQ_INT(sd_op_attention_bwd(gctx, &dq->d, &dk->d, &dv->d, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a), SD_OK);
        snprintf(name, sizeof name, "attention_bwd dq %s", ac->name); same_bytes(name, dq, r1);
        snprintf(name, sizeof name, "attention_bwd dk %s", ac->name); same_bytes(name, dk, r2);
        snprintf(name, sizeof name, "attention_bwd dv %s", ac->name); same_bytes(name, dv, r3);
        free(r1); free(r2); free(r3);
        free(b1); free(b2); free(b3);
    }
    /* only some gradients */
    BOTH(sd_op_attention_bwd(&cpu, NULL, &dk->h, NULL, &dout->h, &q->h, &k->h, &v->h, &o->h, &lse->h, a),
         sd_op_attention_bwd(gctx, NULL, &dk->d, NULL, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a));
    snprintf(name, sizeof name, "attention_bwd dk only %s%s", ac->name, tag); cmp(name, dk, TOL);
    pool_free();
    if (tiny) sd_ctx_free(&small);
}

static void test_attention(void)
{
    attn_case cs[] = {
        { "self T=70 h=2 d=16", 2, 70, 70, 2, 16, 16, 0, 0 },
        { "cross Tq=70 Tk=77 dk=16 dv=8", 2, 70, 77, 2, 16, 8, 0, 0 },
        { "causal T=77 h=3 d=8", 2, 77, 77, 3, 8, 8, 1, 0 },
        { "causal Tq=50 Tk=77 scale=0.3", 1, 50, 77, 2, 12, 12, 1, 0.3f },
        { "single key", 2, 9, 1, 2, 8, 8, 0, 0 },
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        attn_one(&cs[i], 0, "", i == 0);
        attn_one(&cs[i], 1, " (tiny scratch)", 0);
    }
}

/* SD1.5 at 512 px, the first block: T = 4096 tokens, 8 heads of 40 (memory stays bounded). */
static void test_attention_big(void)
{
#ifdef SD_CUDA_EMU /* the emulated build (tests/emu): the same code paths, a size the CPU runs in seconds */
    attn_case big = { "T=1024 h=2 d=40 (emulated build: smaller than SD's 4096)", 1, 1024, 1024, 2, 40, 40, 0, 0 };
#else
    attn_case big = { "T=4096 h=8 d=40", 1, 4096, 4096, 8, 40, 40, 0, 0 };
#endif
    attn_one(&big, 0, "", 1);
}

/* SD_CUDA_ATTN=flash with the bf16 / fp16 GEMM math: the fused kernels of
 * lib/tensor/cuda/flash_attn.cuh (so far verified only in the CPU emulation of tests/emu). The
 * inputs are rounded to the 16-bit type on both sides, so the CPU's fp32 attention sees the
 * kernels' operands and what remains is P and dS held in 16 bits inside the kernels: rel ≤ 1e-2
 * (bf16) / 2e-3 (fp16) for o and the gradients (emulation: at most 1.7e-3 / 2.1e-4 for o and
 * 4.7e-3 / 4e-4 for the gradients). The fused result must differ from the cuBLAS path's bytes (so
 * the fused kernels ran), and be the same bytes on a second run. dk ≠ dv falls back to the cuBLAS
 * path with the same math (same tolerance, no difference check). */
static float round_to(sd_dtype dt, float x) { return dt == SD_BF16 ? sd_round_bf16(x) : sd_round_f16(x); }

static void round_pair(pair *p, sd_dtype dt)
{
    float *h = p->h.data;
    for (int64_t i = 0; i < sd_tensor_numel(&p->h); i++) h[i] = round_to(dt, h[i]);
    T_EQ_INT(sd_tensor_upload(&p->d, p->h.data, sd_tensor_nbytes(&p->h)), SD_OK);
}

static void attn_flash_one(const attn_case *ac, sd_dtype dt, double tol, int fused)
{
    char name[160];
    const char *tn = dt == SD_BF16 ? "bf16" : "fp16";
    sd_attn_args a = { ac->h, ac->scale, ac->causal };
    pair *q = MK(SD_F32, 1.5f, 0, ac->b, ac->tq, ac->h * ac->dk), *k = MK(SD_F32, 1.5f, 0, ac->b, ac->tk, ac->h * ac->dk);
    pair *v = R(ac->b, ac->tk, ac->h * ac->dv), *dout = R(ac->b, ac->tq, ac->h * ac->dv);
    round_pair(q, dt), round_pair(k, dt), round_pair(v, dt), round_pair(dout, dt);
    pair *o = R(ac->b, ac->tq, ac->h * ac->dv), *lse = R(ac->b, ac->h, ac->tq);
    pair *dq = R(ac->b, ac->tq, ac->h * ac->dk), *dk = R(ac->b, ac->tk, ac->h * ac->dk), *dv = R(ac->b, ac->tk, ac->h * ac->dv);
    unsigned char *g0[3] = { dev_bytes(dq), dev_bytes(dk), dev_bytes(dv) };
    pair *grads[3] = { dq, dk, dv };
    /* the cuBLAS path with the same math, for the difference check */
    unsetenv("SD_CUDA_ATTN");
    T_EQ_INT(sd_op_attention(&gpu, &o->d, &lse->d, &q->d, &k->d, &v->d, a), SD_OK);
    T_EQ_INT(sd_op_attention_bwd(&gpu, &dq->d, &dk->d, &dv->d, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a), SD_OK);
    T_EQ_INT(dsync(), SD_OK);
    unsigned char *cub[4] = { dev_bytes(o), dev_bytes(dq), dev_bytes(dk), dev_bytes(dv) };
    for (int i = 0; i < 3; i++) T_EQ_INT(sd_tensor_upload(&grads[i]->d, g0[i], sd_tensor_nbytes(&grads[i]->d)), SD_OK);
    setenv("SD_CUDA_ATTN", "flash", 1);
    BOTH(sd_op_attention(&cpu, &o->h, &lse->h, &q->h, &k->h, &v->h, a), sd_op_attention(&gpu, &o->d, &lse->d, &q->d, &k->d, &v->d, a));
    snprintf(name, sizeof name, "flash %s o %s", tn, ac->name); cmp(name, o, tol);
    snprintf(name, sizeof name, "flash %s lse %s", tn, ac->name); cmp(name, lse, tol);
    BOTH(sd_op_attention_bwd(&cpu, &dq->h, &dk->h, &dv->h, &dout->h, &q->h, &k->h, &v->h, &o->h, &lse->h, a),
         sd_op_attention_bwd(&gpu, &dq->d, &dk->d, &dv->d, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a));
    const char *gn[3] = { "dq", "dk", "dv" };
    for (int i = 0; i < 3; i++) { snprintf(name, sizeof name, "flash %s %s %s", tn, gn[i], ac->name); cmp(name, grads[i], tol); }
    if (fused) {
        unsigned char *now = dev_bytes(o);
        int d[4];
        d[0] = memcmp(now, cub[0], sd_tensor_nbytes(&o->d)) != 0;
        free(now);
        for (int i = 0; i < 3; i++) {
            now = dev_bytes(grads[i]);
            d[1 + i] = memcmp(now, cub[1 + i], sd_tensor_nbytes(&grads[i]->d)) != 0;
            free(now);
        }
#ifdef SD_CUDA_EMU
        /* Emulated build: dv = Pᵀ·dO sums products of 16-bit values, exact in fp32, in k order in both the
         * emulated wmma and the reference GEMM, and P rounded to 16 bits hides the small differences of S:
         * dv may be the same bytes on both paths. o, dq and dk must still differ. */
        d[3] = 1;
#endif
        int differs = d[0] && d[1] && d[2] && d[3];
        printf("# %-34s %s (o %s, dq %s, dk %s, dv %s)\n", "flash vs cuBLAS path",
               differs ? "different bytes (the fused kernels ran)" : "SAME bytes  <-- FAIL", d[0] ? "differs" : "same",
               d[1] ? "differs" : "same", d[2] ? "differs" : "same", d[3] ? "differs" : "same");
        T_CHECKF(differs, "flash %s %s: the results are the cuBLAS path's bytes: the fused kernels did not run", tn, ac->name);
        /* again from the same starting gradients: the same bytes */
        unsigned char *r[3] = { dev_bytes(dq), dev_bytes(dk), dev_bytes(dv) };
        for (int i = 0; i < 3; i++) T_EQ_INT(sd_tensor_upload(&grads[i]->d, g0[i], sd_tensor_nbytes(&grads[i]->d)), SD_OK);
        T_EQ_INT(sd_op_attention_bwd(&gpu, &dq->d, &dk->d, &dv->d, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a), SD_OK);
        T_EQ_INT(dsync(), SD_OK);
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "flash %s %s %s", tn, gn[i], ac->name);
            same_bytes(name, grads[i], r[i]);
            free(r[i]);
        }
        /* only dk (dq and dv NULL) */
        BOTH(sd_op_attention_bwd(&cpu, NULL, &dk->h, NULL, &dout->h, &q->h, &k->h, &v->h, &o->h, &lse->h, a),
             sd_op_attention_bwd(&gpu, NULL, &dk->d, NULL, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a));
        snprintf(name, sizeof name, "flash %s dk only %s", tn, ac->name); cmp(name, dk, tol);
    }
    unsetenv("SD_CUDA_ATTN");
    for (int i = 0; i < 4; i++) free(cub[i]);
    for (int i = 0; i < 3; i++) free(g0[i]);
    pool_free();
}

static void test_attention_flash(void)
{
    if (g_selftest) {
        printf("# (self-test: no tensor-core GEMM math on the CPU; nothing to compare)\n");
        return;
    }
    attn_case cs[] = {
        { "self T=130 h=2 d=40", 2, 130, 130, 2, 40, 40, 0, 0 },
        { "cross Tq=130 Tk=77 h=3 d=80", 2, 130, 77, 3, 80, 80, 0, 0 },
        { "causal T=77 h=2 d=64", 2, 77, 77, 2, 64, 64, 1, 0 },
        { "causal Tq=37 Tk=77 d=160 scale=0.1", 2, 37, 77, 2, 160, 160, 1, 0.1f },
#ifdef SD_CUDA_EMU
        { "T=512 h=2 d=40 (emulated build: smaller than SD1.5's 4096)", 1, 512, 512, 2, 40, 40, 0, 0 },
#else
        { "T=4096 h=8 d=40 (SD1.5 64x64)", 1, 4096, 4096, 8, 40, 40, 0, 0 },
#endif
        { "dk=16 dv=8 (cuBLAS fallback)", 2, 70, 77, 2, 16, 8, 0, 0 },
    };
    static const struct { sd_gemm_math m; sd_dtype dt; double tol; } ms[2] = {
        { SD_GEMM_BF16, SD_BF16, 1e-2 }, { SD_GEMM_FP16, SD_F16, 2e-3 } };
    for (int mi = 0; mi < 2; mi++) {
        T_EQ_INT(sd_device_set_gemm_math(ms[mi].m), SD_OK);
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
            if (mi == 1 && i == 4) continue;  /* the big case once */
            attn_flash_one(&cs[i], ms[mi].dt, ms[mi].tol, cs[i].dk == cs[i].dv);
        }
    }
    T_EQ_INT(sd_device_set_gemm_math(SD_GEMM_FP32), SD_OK);
}

/* The bf16 / fp16 GEMM math takes real 16-bit operands (activations rounded to nearest even per
 * product, weights stored in the math's type used as they are, the im2col matrix written in 16
 * bits) with fp32 accumulation. The reference: the CPU op (fp32) on the operands rounded to the
 * math's type, so the only difference left is the summation order: rel ≤ 2e-6. Biases and the bias
 * gradient stay fp32 (the reference gets the unrounded values there). Also checks which path the
 * products took (sd_cuda_gemm_count16/32): 16-bit operands with the normal scratch; with a scratch
 * too small for the converted copies, fp32 operands with the FAST_16BF/16F compute type (the same
 * rounding, so the same tolerance). Cases: linear with f32, bf16 and f16 weights (a bf16 weight is
 * used directly under bf16), forward and backward; matmul with every transpose combination,
 * batched and with a shared (stride 0) b, alpha/beta, K = 70 (16-bit rows padded to 72); conv2d
 * 3×3 pad 1, 3×3 stride 2, 1×1, a bf16 weight, several image chunks (tiny scratch), forward and
 * backward; attention (see g16_attn). */
#define TOL16 2e-6

/* f32 pair whose host data are p's values rounded to dt (its device side is not used) */
static pair *rounded_copy(const pair *p, sd_dtype dt)
{
    pair *r = mk(SD_F32, p->h.ndim, p->h.shape, 1, 0);
    float *o = r->h.data;
    for (int64_t i = 0; i < sd_tensor_numel(&p->h); i++) {
        float v = p->h.dtype == SD_F32 ? ((const float *)p->h.data)[i]
                : p->h.dtype == SD_BF16 ? sd_bf16_to_f32(((const uint16_t *)p->h.data)[i])
                : sd_f16_to_f32(((const uint16_t *)p->h.data)[i]);
        o[i] = round_to(dt, v);
    }
    return r;
}

#ifdef SD_CUDA
static unsigned long long g16_c16, g16_c32;
#endif
static void path_mark(void)
{
#ifdef SD_CUDA
    g16_c16 = sd_cuda_gemm_count16, g16_c32 = sd_cuda_gemm_count32;
#endif
}

/* The products since path_mark(): all with 16-bit operands (want16) or all with fp32 ones. */
static void path_check(const char *name, int want16)
{
#ifdef SD_CUDA
    unsigned long long d16 = sd_cuda_gemm_count16 - g16_c16, d32 = sd_cuda_gemm_count32 - g16_c32;
    int ok = want16 ? d16 > 0 && d32 == 0 : d32 > 0 && d16 == 0;
    printf("# %-34s %llu products with 16-bit operands, %llu with fp32 (want %s)%s\n", name, d16, d32,
           want16 ? "16-bit" : "the fp32 fallback", ok ? "" : "  <-- FAIL");
    T_CHECKF(ok, "%s: %llu 16-bit / %llu fp32 products, want %s", name, d16, d32, want16 ? "16-bit" : "fp32");
#else
    (void)name, (void)want16;
#endif
}

static void g16_linear(sd_dtype mt, const char *mn, sd_dtype wdt, sd_ctx *gctx, int want16, const char *tag)
{
    char name[128];
    const char *wn = wdt == SD_F32 ? "f32" : wdt == SD_BF16 ? "bf16" : "f16";
    pair *x = R(2, 37, 96), *w = MK(wdt, 0.2f, 0, 80, 96), *b = R(80), *y = R(2, 37, 80);
    pair *xr = rounded_copy(x, mt), *wr = rounded_copy(w, mt);
    path_mark();
    BOTH(sd_op_linear(&cpu, &y->h, &xr->h, &wr->h, &b->h), sd_op_linear(gctx, &y->d, &x->d, &w->d, &b->d));
    snprintf(name, sizeof name, "%s linear w %s%s", mn, wn, tag);
    cmp(name, y, TOL16);
    pair *dy = R(2, 37, 80), *dyr = rounded_copy(dy, mt), *dx = R(2, 37, 96), *db = R(80);
    pair *dw = wdt == SD_F32 ? R(80, 96) : NULL;
    BOTH(sd_op_linear_bwd(&cpu, &dx->h, dw ? &dw->h : NULL, NULL, &dyr->h, &xr->h, &wr->h),
         sd_op_linear_bwd(gctx, &dx->d, dw ? &dw->d : NULL, &db->d, &dy->d, &x->d, &w->d));
    T_EQ_INT(sd_op_linear_bwd(&cpu, NULL, NULL, &db->h, &dy->h, &x->h, &w->h), SD_OK);
    snprintf(name, sizeof name, "%s linear_bwd dx w %s%s", mn, wn, tag);
    cmp(name, dx, TOL16);
    if (dw) {
        snprintf(name, sizeof name, "%s linear_bwd dw%s", mn, tag);
        cmp(name, dw, TOL16);
    }
    snprintf(name, sizeof name, "%s linear_bwd db w %s%s", mn, wn, tag);
    cmp(name, db, TOL16);
    snprintf(name, sizeof name, "%s linear w %s%s", mn, wn, tag);
    path_check(name, want16);
}

static void g16_conv(sd_dtype mt, const char *mn, const conv_case *cc, sd_dtype wdt, int tiny)
{
    char name[160];
    const char *wn = wdt == SD_F32 ? "f32" : wdt == SD_BF16 ? "bf16" : "f16";
    int n = tiny ? 3 : 2;
    sd_conv2d_geom g = cc->g;
    int64_t ho, wo;
    sd_ctx small, *gctx = conv_setup(cc, tiny, &small, &ho, &wo);
    if (!gctx) return;
    pair *x = R(n, cc->cin, cc->h, cc->w), *w = MK(wdt, 0.3f, 0, cc->cout, cc->cin, cc->kh, cc->kw), *b = R(cc->cout);
    pair *xr = rounded_copy(x, mt), *wr = rounded_copy(w, mt), *y = R(n, cc->cout, ho, wo);
    path_mark();
    BOTH(sd_op_conv2d(&cpu, &y->h, &xr->h, &wr->h, &b->h, g), sd_op_conv2d(gctx, &y->d, &x->d, &w->d, &b->d, g));
    snprintf(name, sizeof name, "%s conv2d %s w %s%s", mn, cc->name, wn, tiny ? " (tiny scratch)" : "");
    cmp(name, y, TOL16);
    pair *dy = R(n, cc->cout, ho, wo), *dyr = rounded_copy(dy, mt), *dx = R(n, cc->cin, cc->h, cc->w), *db = R(cc->cout);
    pair *dw = wdt == SD_F32 ? R(cc->cout, cc->cin, cc->kh, cc->kw) : NULL;
    BOTH(sd_op_conv2d_bwd(&cpu, &dx->h, dw ? &dw->h : NULL, NULL, &dyr->h, &xr->h, &wr->h, g),
         sd_op_conv2d_bwd(gctx, &dx->d, dw ? &dw->d : NULL, &db->d, &dy->d, &x->d, &w->d, g));
    T_EQ_INT(sd_op_conv2d_bwd(&cpu, NULL, NULL, &db->h, &dy->h, &x->h, &w->h, g), SD_OK);
    snprintf(name, sizeof name, "%s conv2d_bwd dx %s w %s%s", mn, cc->name, wn, tiny ? " (tiny)" : "");
    cmp(name, dx, TOL16);
    if (dw) {
        snprintf(name, sizeof name, "%s conv2d_bwd dw %s%s", mn, cc->name, tiny ? " (tiny)" : "");
        cmp(name, dw, TOL16);
    }
    snprintf(name, sizeof name, "%s conv2d_bwd db %s w %s", mn, cc->name, wn);
    cmp(name, db, TOL16);
    snprintf(name, sizeof name, "%s conv2d %s w %s%s", mn, cc->name, wn, tiny ? " (tiny)" : "");
    path_check(name, 1);
    if (tiny) sd_ctx_free(&small);
}

/* Attention (the cuBLAS path, not SD_CUDA_ATTN=flash) under the 16-bit math: q, k, v, dO rounded on
 * both sides; P and dS are rounded inside (as with the fused kernels), so the flash tolerances
 * apply (1e-2 bf16, 2e-3 fp16). Every product must take 16-bit operands, with the normal scratch and
 * with a scratch of a few query rows (several chunks, the 16-bit copies' room kept). */
static void g16_attn(sd_dtype mt, const char *mn, const attn_case *ac, int tiny, double tol)
{
    char name[160];
    sd_ctx small, *gctx = &gpu;
    if (tiny) {
        size_t dmax = (size_t)(ac->dk > ac->dv ? ac->dk : ac->dv) + 8;
        size_t row = (size_t)(2 * ac->h * ac->tk + ac->h) * 4 + (size_t)ac->h * ((size_t)ac->tk + dmax) * 2 + 128;
        size_t fixed = (size_t)ac->tk * (size_t)ac->h * dmax * 2 + 256;
        if (dev_ctx(&small, fixed + 4 * row + 1024)) { T_CHECKF(0, "small context: %s", sd_errmsg()); return; }
        gctx = &small;
    }
    unsetenv("SD_CUDA_ATTN");
    sd_attn_args a = { ac->h, ac->scale, ac->causal };
    pair *q = MK(SD_F32, 1.5f, 0, ac->b, ac->tq, ac->h * ac->dk), *k = MK(SD_F32, 1.5f, 0, ac->b, ac->tk, ac->h * ac->dk);
    pair *v = R(ac->b, ac->tk, ac->h * ac->dv), *dout = R(ac->b, ac->tq, ac->h * ac->dv);
    round_pair(q, mt), round_pair(k, mt), round_pair(v, mt), round_pair(dout, mt);
    pair *o = R(ac->b, ac->tq, ac->h * ac->dv), *lse = R(ac->b, ac->h, ac->tq);
    pair *dq = R(ac->b, ac->tq, ac->h * ac->dk), *dk = R(ac->b, ac->tk, ac->h * ac->dk), *dv = R(ac->b, ac->tk, ac->h * ac->dv);
    path_mark();
    BOTH(sd_op_attention(&cpu, &o->h, &lse->h, &q->h, &k->h, &v->h, a),
         sd_op_attention(gctx, &o->d, &lse->d, &q->d, &k->d, &v->d, a));
    const char *tg = tiny ? " (tiny scratch)" : "";
    snprintf(name, sizeof name, "%s attention o %s%s", mn, ac->name, tg); cmp(name, o, tol);
    snprintf(name, sizeof name, "%s attention lse %s%s", mn, ac->name, tg); cmp(name, lse, tol);
    BOTH(sd_op_attention_bwd(&cpu, &dq->h, &dk->h, &dv->h, &dout->h, &q->h, &k->h, &v->h, &o->h, &lse->h, a),
         sd_op_attention_bwd(gctx, &dq->d, &dk->d, &dv->d, &dout->d, &q->d, &k->d, &v->d, &o->d, &lse->d, a));
    snprintf(name, sizeof name, "%s attention dq %s%s", mn, ac->name, tg); cmp(name, dq, tol);
    snprintf(name, sizeof name, "%s attention dk %s%s", mn, ac->name, tg); cmp(name, dk, tol);
    snprintf(name, sizeof name, "%s attention dv %s%s", mn, ac->name, tg); cmp(name, dv, tol);
    snprintf(name, sizeof name, "%s attention %s%s", mn, ac->name, tg);
    path_check(name, 1);
    if (tiny) sd_ctx_free(&small);
}

static void test_gemm16(void)
{
    if (g_selftest) {
        printf("# (self-test: no tensor-core GEMM math on the CPU; nothing to compare)\n");
        return;
    }
    static const struct { sd_gemm_math m; sd_dtype dt; const char *n; } ms[2] = {
        { SD_GEMM_BF16, SD_BF16, "bf16" }, { SD_GEMM_FP16, SD_F16, "fp16" } };
    conv_case cs[] = {
        { "3x3 s1 p1", 8, 12, 9, 10, 3, 3, { 1, 1, 1, 1, 1 } },
        { "3x3 s2 p1", 8, 6, 9, 10, 3, 3, { 2, 1, 1, 1, 1 } },
        { "1x1", 16, 8, 7, 9, 1, 1, { 1, 0, 0, 0, 0 } },
    };
    char name[128];
    for (int mi = 0; mi < 2; mi++) {
        sd_dtype mt = ms[mi].dt;
        const char *mn = ms[mi].n;
        T_EQ_INT(sd_device_set_gemm_math(ms[mi].m), SD_OK);
        g16_linear(mt, mn, SD_F32, &gpu, 1, "");
        g16_linear(mt, mn, SD_BF16, &gpu, 1, "");
        g16_linear(mt, mn, SD_F16, &gpu, 1, "");
        /* a scratch too small for any converted copy: the fp32 operands with the FAST compute type */
        sd_ctx small;
        if (dev_ctx(&small, 1024)) T_CHECKF(0, "small context: %s", sd_errmsg());
        else {
            g16_linear(mt, mn, SD_F32, &small, 0, " (scratch 1 KiB: fallback)");
            sd_ctx_free(&small);
        }
        /* SD_CUDA_GEMM16=0 (sd(7)): the fp32 operands with the FAST compute type on purpose */
        setenv("SD_CUDA_GEMM16", "0", 1);
        g16_linear(mt, mn, SD_BF16, &gpu, 0, " (SD_CUDA_GEMM16=0)");
        unsetenv("SD_CUDA_GEMM16");
        pool_free();
        path_mark();
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int64_t M = 33, N = 45, K = 70;
                pair *a = ta ? R(3, K, M) : R(3, M, K), *bb = tb ? R(3, N, K) : R(3, K, N), *c = R(3, M, N);
                pair *ar = rounded_copy(a, mt), *br = rounded_copy(bb, mt);
                BOTH(sd_op_matmul(&cpu, &c->h, &ar->h, ta, &br->h, tb, 0.7f, 0.5f),
                     sd_op_matmul(&gpu, &c->d, &a->d, ta, &bb->d, tb, 0.7f, 0.5f));
                snprintf(name, sizeof name, "%s matmul ta=%d tb=%d batched", mn, ta, tb);
                cmp(name, c, TOL16);
                pair *b2 = tb ? R(N, K) : R(K, N), *b2r = rounded_copy(b2, mt);
                BOTH(sd_op_matmul(&cpu, &c->h, &ar->h, ta, &b2r->h, tb, 1.0f, 0.0f),
                     sd_op_matmul(&gpu, &c->d, &a->d, ta, &b2->d, tb, 1.0f, 0.0f));
                snprintf(name, sizeof name, "%s matmul ta=%d tb=%d shared b", mn, ta, tb);
                cmp(name, c, TOL16);
            }
        snprintf(name, sizeof name, "%s matmul", mn);
        path_check(name, 1);
        pool_free();
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
            g16_conv(mt, mn, &cs[i], SD_F32, 0);
            g16_conv(mt, mn, &cs[i], SD_F32, 1);
            pool_free();
        }
        g16_conv(mt, mn, &cs[0], SD_BF16, 0);
        g16_conv(mt, mn, &cs[0], SD_F16, 0);
        g16_conv(mt, mn, &cs[2], SD_BF16, 0);
        pool_free();
        attn_case ac[] = {
            { "cross Tq=130 Tk=77 h=3 d=80", 2, 130, 77, 3, 80, 80, 0, 0 },
            { "causal T=70 h=2 d=68", 2, 70, 70, 2, 68, 68, 1, 0 },
            { "dk=16 dv=8", 2, 70, 77, 2, 16, 8, 0, 0 },
        };
        for (size_t i = 0; i < sizeof ac / sizeof ac[0]; i++)
            for (int tiny = 0; tiny < 2; tiny++) {
                g16_attn(mt, mn, &ac[i], tiny, mi == 0 ? 1e-2 : 2e-3);
                pool_free();
            }
    }
    T_EQ_INT(sd_device_set_gemm_math(SD_GEMM_FP32), SD_OK);
}

static void test_shapes(void)
{
    pair *x = R(2, 3, 5, 6), *y = R(2, 3, 10, 12), *dx = R(2, 3, 5, 6);
    BOTH(sd_op_upsample_nearest(&cpu, &y->h, &x->h), sd_op_upsample_nearest(&gpu, &y->d, &x->d));
    cmp_exact("upsample_nearest x2", y);
    BOTH(sd_op_upsample_nearest_bwd(&cpu, &dx->h, &y->h), sd_op_upsample_nearest_bwd(&gpu, &dx->d, &y->d));
    cmp("upsample_nearest_bwd x2", dx, TOL);
    pair *y3 = R(2, 3, 15, 18), *dx3 = R(2, 3, 5, 6);
    BOTH(sd_op_upsample_nearest(&cpu, &y3->h, &x->h), sd_op_upsample_nearest(&gpu, &y3->d, &x->d));
    cmp_exact("upsample_nearest x3", y3);
    BOTH(sd_op_upsample_nearest_bwd(&cpu, &dx3->h, &y3->h), sd_op_upsample_nearest_bwd(&gpu, &dx3->d, &y3->d));
    cmp("upsample_nearest_bwd x3", dx3, TOL);
    /* concat along channels (UNet skip) and along the last axis */
    for (int ax = 1; ax <= 3; ax += 2) {
        pair *a = ax == 1 ? R(2, 3, 4, 5) : R(2, 4, 4, 3), *b = ax == 1 ? R(2, 6, 4, 5) : R(2, 4, 4, 7);
        pair *c = ax == 1 ? R(2, 9, 4, 5) : R(2, 4, 4, 10);
        const sd_tensor *xh[2] = { &a->h, &b->h }, *xd[2] = { &a->d, &b->d };
        BOTH(sd_op_concat(&cpu, &c->h, xh, 2, ax), sd_op_concat(&gpu, &c->d, xd, 2, ax));
        cmp_exact(ax == 1 ? "concat axis 1" : "concat axis 3", c);
        pair *da = ax == 1 ? R(2, 3, 4, 5) : R(2, 4, 4, 3), *db = ax == 1 ? R(2, 6, 4, 5) : R(2, 4, 4, 7);
        sd_tensor *dh[2] = { &da->h, &db->h }, *dd[2] = { &da->d, &db->d };
        BOTH(sd_op_concat_bwd(&cpu, dh, 2, &c->h, ax), sd_op_concat_bwd(&gpu, dd, 2, &c->d, ax));
        cmp(ax == 1 ? "concat_bwd part 0 axis 1" : "concat_bwd part 0 axis 3", da, TOL);
        cmp(ax == 1 ? "concat_bwd part 1 axis 1" : "concat_bwd part 1 axis 3", db, TOL);
        sd_tensor *nh[2] = { NULL, &db->h }, *nd[2] = { NULL, &db->d };
        BOTH(sd_op_concat_bwd(&cpu, nh, 2, &c->h, -1 - (3 - ax)), sd_op_concat_bwd(&gpu, nd, 2, &c->d, -1 - (3 - ax)));
        cmp("concat_bwd with a NULL part", db, TOL);
    }
    pool_free();
}

static void test_embeddings(void)
{
    pair *table = R(50, 24), *y = R(2, 9, 24), *dy = R(2, 9, 24), *dt = R(50, 24);
    pair *ids = MK(SD_I32, 0, 0, 2, 9);
    int32_t *ip = ids->h.data;
    for (int i = 0; i < 18; i++) ip[i] = (int32_t)((i * 7) % 50);
    ip[3] = ip[4] = ip[11] = 5;  /* repeated ids: summed in position order */
    T_EQ_INT(sd_tensor_upload(&ids->d, ids->h.data, sd_tensor_nbytes(&ids->h)), SD_OK);
    BOTH(sd_op_embedding(&cpu, &y->h, &table->h, &ids->h), sd_op_embedding(&gpu, &y->d, &table->d, &ids->d));
    cmp_exact("embedding", y);
    BOTH(sd_op_embedding_bwd(&cpu, &dt->h, &dy->h, &ids->h), sd_op_embedding_bwd(&gpu, &dt->d, &dy->d, &ids->d));
    cmp("embedding_bwd", dt, TOL);
    /* an id out of range on a device tensor: SD_ERANGE before anything is written */
    ip[7] = 50;
    T_EQ_INT(sd_tensor_upload(&ids->d, ids->h.data, sd_tensor_nbytes(&ids->h)), SD_OK);
    T_EQ_INT(sd_op_embedding(&gpu, &y->d, &table->d, &ids->d), SD_ERANGE);
    T_CHECKF(strstr(sd_errmsg(), "position 7") != NULL, "%s", sd_errmsg());
    /* timestep embedding: SD (flip, shift 0) and diffusers defaults (no flip, shift 1), odd dim */
    pair *t = R(5), *e = R(5, 320), *e2 = R(5, 33);
    float *tp = t->h.data;
    for (int i = 0; i < 5; i++) tp[i] = (float)(i * 249) + 0.5f;
    T_EQ_INT(sd_tensor_upload(&t->d, t->h.data, sd_tensor_nbytes(&t->h)), SD_OK);
    BOTH(sd_op_timestep_embedding(&cpu, &e->h, &t->h, 1, 0, 10000), sd_op_timestep_embedding(&gpu, &e->d, &t->d, 1, 0, 10000));
    cmp("timestep_embedding flip", e, TOL);
    BOTH(sd_op_timestep_embedding(&cpu, &e2->h, &t->h, 0, 1, 10000), sd_op_timestep_embedding(&gpu, &e2->d, &t->d, 0, 1, 10000));
    cmp("timestep_embedding odd dim", e2, TOL);
    pool_free();
}

static void test_losses(void)
{
    const char *nm[] = { "l2", "l1", "huber", "smooth_l1" };
    char name[96];
    for (int k = SD_LOSS_L2; k <= SD_LOSS_SMOOTH_L1; k++) {
        for (int weighted = 0; weighted < 2; weighted++) {
            pair *p = R(3, 4, 16, 16), *t = R(3, 4, 16, 16), *w = MK(SD_F32, 0.5f, 1.0f, 3), *c = MK(SD_F32, 0.05f, 0.1f, 3);
            pair *loss = R(1), *per = R(3), *dp = R(3, 4, 16, 16);
            sd_tensor *wh = weighted ? &w->h : NULL, *wd = weighted ? &w->d : NULL;
            sd_tensor *ch = weighted ? &c->h : NULL, *cd = weighted ? &c->d : NULL;
            BOTH(sd_op_loss(&cpu, &loss->h, &per->h, &p->h, &t->h, wh, ch, (sd_loss_kind)k),
                 sd_op_loss(&gpu, &loss->d, &per->d, &p->d, &t->d, wd, cd, (sd_loss_kind)k));
            snprintf(name, sizeof name, "loss %s%s", nm[k], weighted ? " weighted" : ""); cmp(name, loss, TOL);
            snprintf(name, sizeof name, "loss per_sample %s%s", nm[k], weighted ? " weighted" : ""); cmp(name, per, TOL);
            BOTH(sd_op_loss_bwd(&cpu, &dp->h, &p->h, &t->h, wh, ch, (sd_loss_kind)k, 2.0f),
                 sd_op_loss_bwd(&gpu, &dp->d, &p->d, &t->d, wd, cd, (sd_loss_kind)k, 2.0f));
            snprintf(name, sizeof name, "loss_bwd %s%s", nm[k], weighted ? " weighted" : ""); cmp(name, dp, TOL);
            BOTH(sd_op_loss(&cpu, &loss->h, NULL, &p->h, &t->h, wh, ch, (sd_loss_kind)k),
                 sd_op_loss(&gpu, &loss->d, NULL, &p->d, &t->d, wd, cd, (sd_loss_kind)k));
            snprintf(name, sizeof name, "loss %s%s (no per_sample)", nm[k], weighted ? " weighted" : ""); cmp(name, loss, TOL);
            pool_free();
        }
    }
}

/* The optimizer ops: AdamW (f32 and the f16/bf16 rounding of --full_fp16/--full_bf16) is the same
 * element code on both sides: bit-exact; the sum of squares (double, different orders) within
 * 1e-12 relative; scale_round bit-exact with the same non-finite flag. */
static void test_optim(void)
{
    static const sd_dtype modes[3] = { SD_F32, SD_BF16, SD_F16 };
    char name[96];
    for (int k = 0; k < 3; k++) {
        pair *p = R(3, 70001), *g = R(3, 70001), *m = MK(SD_F32, 0.1f, 0.0f, 3, 70001), *v = MK(SD_F32, 0.01f, 0.02f, 3, 70001);
        for (int step = 1; step <= 3; step++) {
            sd_adamw_scalars sc = { .decay = 1.0f - 1e-4f, .beta1 = 0.9f, .omb1 = 0.1f, .beta2 = 0.999f, .omb2 = 0.001f,
                                    .bc2_sqrt = sqrtf(1.0f - powf(0.999f, (float)step)), .eps = 1e-8f,
                                    .neg_step = -1e-3f / (1.0f - powf(0.9f, (float)step)) };
            BOTH(sd_op_adamw(&cpu, &p->h, &g->h, &m->h, &v->h, &sc, modes[k]),
                 sd_op_adamw(&gpu, &p->d, &g->d, &m->d, &v->d, &sc, modes[k]));
        }
        snprintf(name, sizeof name, "adamw %s p", sd_dtype_name(modes[k])); cmp_exact(name, p);
        snprintf(name, sizeof name, "adamw %s exp_avg", sd_dtype_name(modes[k])); cmp_exact(name, m);
        snprintf(name, sizeof name, "adamw %s exp_avg_sq", sd_dtype_name(modes[k])); cmp_exact(name, v);
        int fh = 0, fd = 0;
        BOTH(sd_op_scale_round(&cpu, &g->h, 0.37f, modes[k], &fh), sd_op_scale_round(&gpu, &g->d, 0.37f, modes[k], &fd));
        snprintf(name, sizeof name, "scale_round %s", sd_dtype_name(modes[k])); cmp_exact(name, g);
        T_CHECK(fh == 0 && fd == 0);
        pool_free();
    }
    pair *x = MK(SD_F32, 3.0f, 0.5f, 1000003);
    double sh = 0, sdv = 0;
    BOTH(sd_op_sumsq(&cpu, &x->h, &sh), sd_op_sumsq(&gpu, &x->d, &sdv));
    printf("# %-34s cpu %.17g gpu %.17g rel %.3e\n", "sumsq", sh, sdv, fabs(sh - sdv) / sh);
    T_CHECKF(fabs(sh - sdv) <= 1e-12 * sh, "sumsq %.17g vs %.17g", sh, sdv);
    /* a non-finite element: flagged on both sides, the others scaled */
    ((float *)x->h.data)[0] = INFINITY;
    T_CHECK(sd_tensor_upload(&x->d, x->h.data, sd_tensor_nbytes(&x->h)) == SD_OK);
    int fh = 0, fd = 0;
    BOTH(sd_op_scale_round(&cpu, &x->h, 0.5f, SD_F32, &fh), sd_op_scale_round(&gpu, &x->d, 0.5f, SD_F32, &fd));
    T_CHECKF(fh == 1 && fd == 1, "non-finite flag cpu %d gpu %d", fh, fd);
    cmp_exact("scale_round with inf", x);
    pool_free();
}

/* Lion, SGDNesterov and Adafactor (optim_elem.h on both sides): bit-exact over 3 steps with a new
 * gradient each step, weight decay on and off, SGD's first step (buffer = d) and later ones, then the
 * --full_bf16 / --full_fp16 rounding of the parameter and state (sd_op_scale_round) as
 * train/optim.c applies it. Adafactor: factored (a matrix wider than one block of threads, a conv
 * weight of 3x3 matrices, a stack of 3 matrices) and unfactored (a vector), its row / column / row-mean
 * reductions and update u exact; RMS(u) through sd_op_sumsq within 1e-12 relative (CUDA's tree
 * order), the apply step then given the same den on both sides: exact, with and without β1. */
static void test_optim_kinds(void)
{
    static const sd_dtype modes[3] = { SD_F32, SD_BF16, SD_F16 };
    char name[96];
    for (int k = 0; k < 3; k++) {
        for (int wd = 0; wd < 2; wd++) {
            pair *p = R(3, 70001), *m = MK(SD_F32, 0.1f, 0.0f, 3, 70001);
            pair *q = R(3, 70001), *b = MK(SD_F32, 0.1f, 0.0f, 3, 70001);
            for (int step = 1; step <= 3; step++) {
                pair *g = R(3, 70001);
                sd_lion_scalars ls = { .decay = wd ? 1.0f - 1e-4f : 1.0f, .beta1 = 0.9f, .omb1 = 0.1f, .beta2 = 0.99f,
                                       .omb2 = 0.01f, .neg_lr = -1e-4f * (float)step };
                BOTH(sd_op_lion(&cpu, &p->h, &g->h, &m->h, &ls), sd_op_lion(&gpu, &p->d, &g->d, &m->d, &ls));
                sd_sgd_scalars gs = { .wd = wd ? 0.01f : 0.0f, .momentum = 0.9f, .damp1 = wd ? 1.0f : 0.9f,
                                      .neg_lr = -1e-2f / (float)step, .decay = wd, .first = step == 1 };
                BOTH(sd_op_sgd(&cpu, &q->h, &g->h, &b->h, &gs), sd_op_sgd(&gpu, &q->d, &g->d, &b->d, &gs));
                pair *rt[4] = { p, m, q, b };
                for (int j = 0; j < 4 && modes[k] != SD_F32; j++)
                    BOTH(sd_op_scale_round(&cpu, &rt[j]->h, 1.0f, modes[k], NULL),
                         sd_op_scale_round(&gpu, &rt[j]->d, 1.0f, modes[k], NULL));
            }
            snprintf(name, sizeof name, "lion %s wd %d p", sd_dtype_name(modes[k]), wd); cmp_exact(name, p);
            snprintf(name, sizeof name, "lion %s wd %d exp_avg", sd_dtype_name(modes[k]), wd); cmp_exact(name, m);
            snprintf(name, sizeof name, "sgd nesterov %s wd %d p", sd_dtype_name(modes[k]), wd); cmp_exact(name, q);
            snprintf(name, sizeof name, "sgd nesterov %s wd %d buf", sd_dtype_name(modes[k]), wd); cmp_exact(name, b);
            pool_free();
        }
    }
    static const int nds[4] = { 2, 4, 3, 1 };
    static const int64_t shs[4][4] = { { 64, 1100 }, { 8, 4, 3, 3 }, { 3, 17, 33 }, { 70001 } };
    for (int c = 0; c < 4; c++) {
        for (int k = 0; k < 3; k += 2) {   /* f32, f16 */
            const int nd = nds[c], fact = nd >= 2, beta1 = c % 2 == 0;
            const int64_t *sh = shs[c];
            int64_t n = 1;
            for (int i = 0; i < nd; i++) n *= sh[i];
            const int64_t C = fact ? sh[nd - 1] : 0, Rr = fact ? sh[nd - 2] : 0, B = fact ? n / (C * Rr) : 0;
            pair *p = mk(SD_F32, nd, sh, 1.0f, 0.0f), *u = mk(SD_F32, nd, sh, 1.0f, 0.0f);
            pair *m = mk(SD_F32, nd, sh, 0.1f, 0.0f), *v = fact ? NULL : MK(SD_F32, 0.01f, 0.02f, n);
            pair *row = fact ? MK(SD_F32, 0.01f, 0.02f, B * Rr) : NULL, *col = fact ? MK(SD_F32, 0.01f, 0.02f, B * C) : NULL;
            pair *rm = fact ? MK(SD_F32, 0.0f, 0.0f, B) : NULL;
            for (int step = 1; step <= 3; step++) {
                pair *g = mk(SD_F32, nd, sh, 0.05f, 0.0f);
                double b2 = 1.0 - pow((double)step, -0.8);
                sd_adafactor_scalars as = { .beta2t = (float)b2, .omb2t = (float)(1.0 - b2), .eps1 = 1e-30f, .den = 1.0f,
                                            .alpha = 1e-3f * (float)step, .beta1 = 0.9f, .omb1 = 0.1f,
                                            .wda = -1e-5f, .decay = c != 1 };
                if (fact)
                    BOTH(sd_op_adafactor_sq(&cpu, &g->h, &row->h, &col->h, &rm->h, NULL, &u->h, &as),
                         sd_op_adafactor_sq(&gpu, &g->d, &row->d, &col->d, &rm->d, NULL, &u->d, &as));
                else
                    BOTH(sd_op_adafactor_sq(&cpu, &g->h, NULL, NULL, NULL, &v->h, &u->h, &as),
                         sd_op_adafactor_sq(&gpu, &g->d, NULL, NULL, NULL, &v->d, &u->d, &as));
                double sh_ = 0, sd_ = 0;
                BOTH(sd_op_sumsq(&cpu, &u->h, &sh_), sd_op_sumsq(&gpu, &u->d, &sd_));
                T_CHECKF(fabs(sh_ - sd_) <= 1e-12 * sh_, "adafactor RMS(u) %.17g vs %.17g", sh_, sd_);
                float den = ((float)sqrt(sh_) / (float)sqrt((double)n)) / 1.0f;
                as.den = den < 1.0f ? 1.0f : den;
                BOTH(sd_op_adafactor_apply(&cpu, &p->h, &u->h, beta1 ? &m->h : NULL, &as),
                     sd_op_adafactor_apply(&gpu, &p->d, &u->d, beta1 ? &m->d : NULL, &as));
                if (modes[k] != SD_F32)
                    BOTH(sd_op_scale_round(&cpu, &p->h, 1.0f, modes[k], NULL), sd_op_scale_round(&gpu, &p->d, 1.0f, modes[k], NULL));
            }
            const char *dn = sd_dtype_name(modes[k]);
            snprintf(name, sizeof name, "adafactor %dd %s u", nd, dn); cmp_exact(name, u);
            snprintf(name, sizeof name, "adafactor %dd %s p", nd, dn); cmp_exact(name, p);
            if (beta1) { snprintf(name, sizeof name, "adafactor %dd %s exp_avg", nd, dn); cmp_exact(name, m); }
            if (fact) {
                snprintf(name, sizeof name, "adafactor %dd %s exp_avg_sq_row", nd, dn); cmp_exact(name, row);
                snprintf(name, sizeof name, "adafactor %dd %s exp_avg_sq_col", nd, dn); cmp_exact(name, col);
                snprintf(name, sizeof name, "adafactor %dd %s row mean", nd, dn); cmp_exact(name, rm);
            } else {
                snprintf(name, sizeof name, "adafactor %dd %s exp_avg_sq", nd, dn); cmp_exact(name, v);
            }
            pool_free();
        }
    }
}

/* bitsandbytes' steps (optim8_elem.h on both sides): AdamW8bit and Lion8bit / SGD8bit on 8-bit
 * blockwise codes (a partial last block) and on f32 states, 3 steps with a new gradient each,
 * weight decay on, Lion's T rounding of bf16: the parameters, codes, absmax and f32 states bit-exact. */
static void test_optim_bnb(void)
{
    sd_bnb_qmaps q;
    sd_bnb_dynamic_map(1, q.q1);
    sd_bnb_dynamic_map(0, q.q2);
    const int64_t n = 70001, nb = (n + 255) / 256;
    char name[96];
    for (int mode8 = 0; mode8 < 2; mode8++) {
        for (int kind = 0; kind < 3; kind++) {   /* AdamW8bit, Lion8bit (bf16 T), SGD8bit */
            pair *p = R(n), *m32 = MK(SD_F32, 0.01f, 0.0f, n), *v32 = MK(SD_F32, 0.001f, 0.001f, n);
            pair *a1 = MK(SD_F32, 0.01f, 0.02f, nb), *a2 = MK(SD_F32, 0.001f, 0.002f, nb);
            /* the codes: random bytes in an f32 tensor of n/4 (+1) values on both sides */
            pair *c1 = MK(SD_F32, 1.0f, 0.0f, (n + 3) / 4), *c2 = MK(SD_F32, 1.0f, 0.0f, (n + 3) / 4);
            sd_bnb_state_ptrs sh = { .numel = n, .mode8 = mode8 }, sdv = sh;
            if (mode8) {
                sh.m8 = c1->h.data, sh.v8 = kind == 0 ? c2->h.data : NULL, sh.absmax1 = a1->h.data;
                sh.absmax2 = kind == 0 ? a2->h.data : NULL;
                sdv.m8 = c1->d.data, sdv.v8 = kind == 0 ? c2->d.data : NULL, sdv.absmax1 = a1->d.data;
                sdv.absmax2 = kind == 0 ? a2->d.data : NULL;
            } else {
                sh.m32 = m32->h.data, sh.v32 = kind == 0 ? v32->h.data : NULL;
                sdv.m32 = m32->d.data, sdv.v32 = kind == 0 ? v32->d.data : NULL;
            }
            for (int step = 1; step <= 3; step++) {
                pair *g = MK(SD_F32, 0.05f, 0.0f, n);
                if (kind == 0) {
                    float c2s = sqrtf(1.0f - powf(0.999f, (float)step)), c1s = 1.0f - powf(0.9f, (float)step);
                    sd_bnb2_scalars s = { .beta1 = 0.9f, .beta2 = 0.999f, .omb1 = 0.1f, .omb2 = 1.0f - 0.999f, .eps = 1e-8f,
                                          .lr = 1e-3f, .wd = 0.01f, .decay = 1.0f - 1e-5f, .c2 = c2s,
                                          .step_size = -1e-3f * c2s / c1s };
                    BOTH(sd_op_bnb2_step(&cpu, &p->h, &g->h, &sh, &s, &q), sd_op_bnb2_step(&gpu, &p->d, &g->d, &sdv, &s, &q));
                } else {
                    sd_bnb1_scalars s = { .beta1 = 0.9f, .beta2 = 0.99f, .omb1 = 0.1f, .omb2 = 1.0f - 0.99f, .lr = 1e-3f,
                                          .wd = 0.1f, .decay = 1.0f - 1e-4f, .first = step == 1, .half = kind == 1 ? 2 : 0,
                                          .lion = kind == 1 };
                    BOTH(sd_op_bnb1_step(&cpu, &p->h, &g->h, &sh, &s, &q), sd_op_bnb1_step(&gpu, &p->d, &g->d, &sdv, &s, &q));
                }
            }
            static const char *kn[3] = { "AdamW8bit", "Lion8bit bf16", "SGD8bit" };
            snprintf(name, sizeof name, "%s %s p", kn[kind], mode8 ? "8-bit" : "f32"); cmp_exact(name, p);
            if (mode8) {
                snprintf(name, sizeof name, "%s 8-bit codes1", kn[kind]); cmp_exact(name, c1);
                snprintf(name, sizeof name, "%s 8-bit absmax1", kn[kind]); cmp_exact(name, a1);
                if (kind == 0) { snprintf(name, sizeof name, "%s 8-bit codes2", kn[kind]); cmp_exact(name, c2); }
                if (kind == 0) { snprintf(name, sizeof name, "%s 8-bit absmax2", kn[kind]); cmp_exact(name, a2); }
            } else {
                snprintf(name, sizeof name, "%s f32 state1", kn[kind]); cmp_exact(name, m32);
                if (kind == 0) { snprintf(name, sizeof name, "%s f32 state2", kn[kind]); cmp_exact(name, v32); }
            }
            pool_free();
        }
    }
}

/* SwinV2 ops: L2 normalisation of rows (the q/k of the cosine attention, rows of 32 and of 7 with
 * a large eps), window partition / merge with a shift (exact: a permutation), their backwards. */
static void test_swin(void)
{
    pair *x = MK(SD_F32, 3.0f, 0, 2, 4, 50, 32), *y = R(2, 4, 50, 32), *dy = R(2, 4, 50, 32), *dx = R(2, 4, 50, 32);
    BOTH(sd_op_l2_normalize(&cpu, &y->h, &x->h, 1e-12f), sd_op_l2_normalize(&gpu, &y->d, &x->d, 1e-12f));
    cmp("l2_normalize", y, TOL);
    BOTH(sd_op_l2_normalize_bwd(&cpu, &dx->h, &dy->h, &x->h, 1e-12f),
         sd_op_l2_normalize_bwd(&gpu, &dx->d, &dy->d, &x->d, 1e-12f));
    cmp("l2_normalize_bwd", dx, TOL);
    pair *s = MK(SD_F32, 0.3f, 0, 9, 7), *sy = R(9, 7), *sdy = R(9, 7), *sdx = R(9, 7);
    BOTH(sd_op_l2_normalize(&cpu, &sy->h, &s->h, 1.0f), sd_op_l2_normalize(&gpu, &sy->d, &s->d, 1.0f));
    cmp("l2_normalize (eps branch)", sy, TOL);
    BOTH(sd_op_l2_normalize_bwd(&cpu, &sdx->h, &sdy->h, &s->h, 1.0f),
         sd_op_l2_normalize_bwd(&gpu, &sdx->d, &sdy->d, &s->d, 1.0f));
    cmp("l2_normalize_bwd (eps branch)", sdx, TOL);
    /* 2 maps of 28x28x16 in 4x4 windows of 7, shift 3 */
    pair *m = R(2, 28, 28, 16), *w = R(32, 49, 16), *mb = R(2, 28, 28, 16), *gw = R(32, 49, 16), *gm = R(2, 28, 28, 16);
    BOTH(sd_op_window_partition(&cpu, &w->h, &m->h, 7, 3), sd_op_window_partition(&gpu, &w->d, &m->d, 7, 3));
    cmp_exact("window_partition", w);
    BOTH(sd_op_window_merge(&cpu, &mb->h, &w->h, 7, 3), sd_op_window_merge(&gpu, &mb->d, &w->d, 7, 3));
    cmp_exact("window_merge", mb);
    BOTH(sd_op_window_partition_bwd(&cpu, &gm->h, &gw->h, 7, 3), sd_op_window_partition_bwd(&gpu, &gm->d, &gw->d, 7, 3));
    cmp_exact("window_partition_bwd", gm);
    BOTH(sd_op_window_merge_bwd(&cpu, &gw->h, &gm->h, 7, 0), sd_op_window_merge_bwd(&gpu, &gw->d, &gm->d, 7, 0));
    cmp_exact("window_merge_bwd", gw);
    pool_free();
}

/* ---- float8_e4m3fn frozen weights (--fp8_base) ----
 * The device widens an f8 weight to the GEMM math's type (f32, or bf16 / f16 under the 16-bit math)
 * right before the product, as the CPU widens it to f32: exactly, since every f8_e4m3fn value is a
 * bf16 and an f16 value. Checked: (1) the widening itself, bit for bit, through linear with x = [[1]]
 * over all 256 codes (y = the widened codes; NaN codes give NaN) in every math; (2) linear and conv2d,
 * forward and dx, with a random f8 weight: the same bytes as the device op on the weight widened on
 * the host to the math's type (f32 / bf16 / f16), and within TOL of the CPU under the fp32 math. */
static pair *mk_f8(int nd, const int64_t *sh, float scale)
{
    pair *p = calloc(1, sizeof *p);
    if (sd_tensor_alloc(&p->h, SD_F8E4M3, nd, sh)) { printf("# alloc: %s\n", sd_errmsg()); exit(1); }
    uint8_t *b = p->h.data;
    for (int64_t i = 0, n = sd_tensor_numel(&p->h); i < n; i++) b[i] = sd_f32_to_f8e4m3(scale * rndf());
    dev_upload(p);
    if (npool < MAXP) pool[npool++] = p;
    return p;
}

/* The f8 weight widened on the host to dt (f32 / bf16 / f16), exact. */
static pair *widened(const pair *w8, sd_dtype dt)
{
    pair *p = calloc(1, sizeof *p);
    if (sd_tensor_alloc(&p->h, dt, w8->h.ndim, w8->h.shape)) { printf("# alloc: %s\n", sd_errmsg()); exit(1); }
    const uint8_t *b = w8->h.data;
    for (int64_t i = 0, n = sd_tensor_numel(&p->h); i < n; i++) {
        float v = sd_f8e4m3_to_f32(b[i]);
        if (dt == SD_F32) ((float *)p->h.data)[i] = v;
        else if (dt == SD_BF16) ((uint16_t *)p->h.data)[i] = sd_f32_to_bf16(v);
        else ((uint16_t *)p->h.data)[i] = sd_f32_to_f16(v);
    }
    dev_upload(p);
    if (npool < MAXP) pool[npool++] = p;
    return p;
}

/* An f32 pair holding p's starting values (the backward ops accumulate into dx). */
static pair *same_start(const pair *p)
{
    pair *r = mk(SD_F32, p->h.ndim, p->h.shape, 1, 0);
    memcpy(r->h.data, p->h.data, sd_tensor_nbytes(&p->h));
    if (sd_tensor_upload(&r->d, r->h.data, sd_tensor_nbytes(&r->h))) printf("# upload failed: %s\n", sd_errmsg());
    return r;
}

/* Device bytes of a and b equal. */
static void dev_same(const char *name, const pair *a, const pair *b)
{
    unsigned char *x = dev_bytes(a), *y = dev_bytes(b);
    int same = memcmp(x, y, sd_tensor_nbytes(&a->d)) == 0;
    printf("# %-34s %s\n", name, same ? "bit-exact" : "DIFFERENT  <-- FAIL");
    T_CHECKF(same, "%s: not bit-exact", name);
    free(x);
    free(y);
}

static void test_f8_weights(void)
{
    static const struct { sd_gemm_math m; sd_dtype dt; const char *n; } ms[3] = {
        { SD_GEMM_FP32, SD_F32, "fp32" }, { SD_GEMM_BF16, SD_BF16, "bf16" }, { SD_GEMM_FP16, SD_F16, "fp16" } };
    conv_case cc = { "3x3 s1 p1", 8, 12, 9, 10, 3, 3, { 1, 1, 1, 1, 1 } };
    char name[128];
    for (int mi = 0; mi < 3; mi++) {
        if (g_selftest && mi) break;   /* no 16-bit GEMM math on the CPU */
        T_EQ_INT(sd_device_set_gemm_math(ms[mi].m), SD_OK);
        const char *mn = ms[mi].n;
        /* (1) every code: y[0][j] = 1 · w[j][0] */
        pair *one = R(1, 1), *w = mk_f8(SD_DIMS(256, 1), 1), *y = R(1, 256);
        ((float *)one->h.data)[0] = 1.0f;
        T_EQ_INT(sd_tensor_upload(&one->d, one->h.data, 4), SD_OK);
        for (int c = 0; c < 256; c++) ((uint8_t *)w->h.data)[c] = (uint8_t)c;
        T_EQ_INT(sd_tensor_upload(&w->d, w->h.data, 256), SD_OK);
        BOTH(sd_op_linear(&cpu, &y->h, &one->h, &w->h, NULL), sd_op_linear(&gpu, &y->d, &one->d, &w->d, NULL));
        float g[256];
        T_EQ_INT(sd_tensor_download(&y->d, g, sizeof g), SD_OK);
        int bad = 0;
        for (int c = 0; c < 256; c++) {
            float want = sd_f8e4m3_to_f32((uint8_t)c), hc = ((const float *)y->h.data)[c];
            if (isnan(want)) bad += !isnan(g[c]) || !isnan(hc);
            else if (want == 0) bad += g[c] != 0 || hc != 0;   /* -0: the sum starts at +0 */
            else bad += memcmp(&g[c], &want, 4) != 0 || memcmp(&hc, &want, 4) != 0;
        }
        printf("# %s f8 widening (256 codes)%*s %s\n", mn, 8, "", bad ? "DIFFERENT  <-- FAIL" : "bit-exact");
        T_CHECKF(!bad, "%s f8 widening: %d codes differ", mn, bad);
        /* (2) linear */
        pair *x = R(2, 37, 96), *w8 = mk_f8(SD_DIMS(80, 96), 0.5f), *wm = widened(w8, ms[mi].dt), *b = R(80);
        pair *y8 = R(2, 37, 80), *ym = R(2, 37, 80);
        BOTH(sd_op_linear(&cpu, &y8->h, &x->h, &w8->h, &b->h), sd_op_linear(&gpu, &y8->d, &x->d, &w8->d, &b->d));
        T_EQ_INT(sd_op_linear(&gpu, &ym->d, &x->d, &wm->d, &b->d), SD_OK);
        snprintf(name, sizeof name, "%s linear w f8 = w widened", mn);
        dev_same(name, y8, ym);
        if (!mi) cmp("fp32 linear w f8 vs CPU", y8, TOL);
        pair *dy = R(2, 37, 80), *dx8 = R(2, 37, 96), *dxm = same_start(dx8);
        BOTH(sd_op_linear_bwd(&cpu, &dx8->h, NULL, NULL, &dy->h, &x->h, &w8->h),
             sd_op_linear_bwd(&gpu, &dx8->d, NULL, NULL, &dy->d, &x->d, &w8->d));
        T_EQ_INT(sd_op_linear_bwd(&gpu, &dxm->d, NULL, NULL, &dy->d, &x->d, &wm->d), SD_OK);
        snprintf(name, sizeof name, "%s linear_bwd dx w f8 = widened", mn);
        dev_same(name, dx8, dxm);
        if (!mi) cmp("fp32 linear_bwd dx w f8 vs CPU", dx8, TOL);
        /* (3) conv2d */
        int64_t ho = cc.h, wo = cc.w;
        pair *cx = R(2, cc.cin, cc.h, cc.w), *cw8 = mk_f8(SD_DIMS(cc.cout, cc.cin, cc.kh, cc.kw), 0.5f);
        pair *cwm = widened(cw8, ms[mi].dt), *cb = R(cc.cout);
        pair *cy8 = R(2, cc.cout, ho, wo), *cym = R(2, cc.cout, ho, wo);
        BOTH(sd_op_conv2d(&cpu, &cy8->h, &cx->h, &cw8->h, &cb->h, cc.g),
             sd_op_conv2d(&gpu, &cy8->d, &cx->d, &cw8->d, &cb->d, cc.g));
        T_EQ_INT(sd_op_conv2d(&gpu, &cym->d, &cx->d, &cwm->d, &cb->d, cc.g), SD_OK);
        snprintf(name, sizeof name, "%s conv2d w f8 = widened", mn);
        dev_same(name, cy8, cym);
        if (!mi) cmp("fp32 conv2d w f8 vs CPU", cy8, TOL);
        pair *cdy = R(2, cc.cout, ho, wo), *cdx8 = R(2, cc.cin, cc.h, cc.w), *cdxm = same_start(cdx8);
        BOTH(sd_op_conv2d_bwd(&cpu, &cdx8->h, NULL, NULL, &cdy->h, &cx->h, &cw8->h, cc.g),
             sd_op_conv2d_bwd(&gpu, &cdx8->d, NULL, NULL, &cdy->d, &cx->d, &cw8->d, cc.g));
        T_EQ_INT(sd_op_conv2d_bwd(&gpu, &cdxm->d, NULL, NULL, &cdy->d, &cx->d, &cwm->d, cc.g), SD_OK);
        snprintf(name, sizeof name, "%s conv2d_bwd dx w f8 = widened", mn);
        dev_same(name, cdx8, cdxm);
        if (!mi) cmp("fp32 conv2d_bwd dx w f8 vs CPU", cdx8, TOL);
        pool_free();
    }
    T_EQ_INT(sd_device_set_gemm_math(SD_GEMM_FP32), SD_OK);
}

static const struct { const char *name; void (*fn)(void); } tests[] = {
    { "parity_fill_convert", test_fill_convert },
    { "parity_permute", test_permute },
    { "parity_add_mul_sum_to_axpby", test_binary },
    { "parity_activations_geglu_softmax_rope", test_activations },
    { "parity_linear_matmul", test_linear_matmul },
    { "parity_conv2d", test_conv2d },
    { "parity_conv2d_cudnn", test_conv2d_cudnn },
    { "parity_conv2d_dw", test_conv2d_dw },
    { "parity_group_layer_norm", test_norms },
    { "parity_attention", test_attention },
    { "parity_attention_sd_size", test_attention_big },
    { "parity_attention_flash", test_attention_flash },
    { "parity_upsample_concat", test_shapes },
    { "parity_swin_l2_normalize_windows", test_swin },
    { "parity_embeddings", test_embeddings },
    { "parity_losses", test_losses },
    { "parity_optimizer", test_optim },
    { "parity_optimizer_kinds", test_optim_kinds },
    { "parity_optimizer_bnb", test_optim_bnb },
    { "parity_gemm_16bit_operands", test_gemm16 },  /* last: the random inputs of the others stay */
    { "parity_f8_weights", test_f8_weights },       /* after: the others' random inputs stay */
};

int main(void)
{
    int nt = (int)(sizeof tests / sizeof tests[0]);
    const char *why = NULL;
    const char *st = getenv("SD_PARITY_SELFTEST");
    g_selftest = st && *st == '1';
    if (g_selftest) printf("# self-test: both sides on the CPU\n");
    else if (!sd_device_built_with_cuda()) why = "no CUDA device (built without CUDA)";
    else if (sd_device_count() == 0) why = "no CUDA device";
    else if (sd_device_init(0)) {
        printf("# sd_device_init: %s\n", sd_errmsg());
        why = "no CUDA device (init failed)";
    }
    if (why) {
        for (int i = 0; i < nt; i++) T_SKIP(tests[i].name, why);
        return 0;
    }
    sd_device_info info;
    if (!g_selftest && sd_device_query(0, &info) == SD_OK)
        printf("# device: %s (cc %d.%d, %d SMs, %zu MiB)\n", info.name, info.cc_major, info.cc_minor, info.sm_count,
               info.total_bytes >> 20);
    if (sd_ctx_init(&cpu, SD_DEV_CPU, 0, 0) || dev_ctx(&gpu, (size_t)1 << 30)) {
        printf("# context: %s\n", sd_errmsg());
        printf("not ok parity_context\n");
        return 1;
    }
    printf("# tolerance: rel = max|gpu - cpu| / max|cpu| <= %g (f32; f16/bf16 weights are converted exactly)\n", TOL);
    const char *only = getenv("SD_PARITY_ONLY");  /* run only the tests whose name contains this */
    for (int i = 0; i < nt; i++) {
        struct timespec t0, t1;
        if (only && *only && !strstr(tests[i].name, only)) continue;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        t_cur_fail = 0;
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("# %s: %.2f s\n", tests[i].name, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
        if (t_cur_fail) { printf("not ok %s\n", tests[i].name); t_nfail++; }
        else { printf("ok %s\n", tests[i].name); t_npass++; }
        fflush(stdout);
    }
    printf("# largest relative difference: %.3e (%s); scratch peak %zu MiB\n", worst_rel, worst_name,
           gpu.scratch.peak >> 20);
    sd_ctx_free(&gpu);
    sd_ctx_free(&cpu);
    sd_device_shutdown();
    T_DONE();
}
