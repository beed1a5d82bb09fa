/* The fused flash-attention CUDA kernels (lib/tensor/cuda/flash_attn.cuh) run on the CPU through the
 * CUDA emulation of tests/emu/cuda_emu.h, against the project's CPU attention (sd_op_attention /
 * sd_op_attention_bwd on a CPU context).
 *
 * The reference gets the kernels' operand rounding: q, k, v and dO rounded to bf16 (or fp16) before
 * the CPU op, which then computes in fp32 from there; what remains is the rounding of P and dS to the
 * 16-bit type inside the kernels. Metric per output as in tests/parity: rel = max|Δ| / max|ref|.
 * The backward kernels get the reference's o and lse (so their error is their own). The gradients
 * start from random values (the kernels accumulate). Shapes: head dims 40, 64, 80, 160 (padded to
 * 48/64/80/160 in shared memory), Tq/Tk not multiples of the tiles (37, 77, 130), cross attention
 * (Tk = 77), causal with Tq = Tk and Tq ≠ Tk, an explicit scale, B = 2, H = 2..3; bf16 and fp16.
 * Also: the emulator's bf16/fp16 conversions against lib/base/half.h (every rounding case), and that
 * the results are the same bytes on a second run. Run time: seconds (each block is 64–128 threads). */
#include "cuda_emu.h"

#include "tensor/cuda/flash_attn.cuh"

extern "C" {
#include "base/error.h"
#include "base/half.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
}

#include <vector>

#include "test.h"

CUDA_EMU_DEFINE_GLOBALS

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return rng_state = x;
}
static float rndf(void) { return (float)((double)(rnd64() >> 11) * 0x1p-53 * 2.0 - 1.0); }

/* ---- the emulator's 16-bit conversions ---- */

static void test_emu_half_conversions(void)
{
    int bad_h = 0, bad_b = 0;
    /* every rounding case: random bit patterns over the whole float range, plus the edges */
    std::vector<uint32_t> pats;
    for (int i = 0; i < 2000000; i++) pats.push_back((uint32_t)rnd64());
    /* around the fp16 subnormal / normal / overflow boundaries and every exponent's halfway points */
    for (uint32_t e = 100; e <= 145; e++)
        for (uint32_t m = 0; m < 64; m++) {
            uint32_t base = e << 23;
            uint32_t v[] = { base | m, base | (0x1000u + m - 32), base | (0x2000u - m), base | (0x7fffffu - m),
                             base | (0x400000u >> (m % 24)) };
            for (uint32_t x : v) { pats.push_back(x); pats.push_back(x | 0x80000000u); }
        }
    uint32_t special[] = { 0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x477fe000u, 0x477ff000u, 0x477fefffu, 0x33000000u,
                           0x33000001u, 0x33400000u, 0x33c00000u, 0x38800000u, 0x387fffffu, 0x3f801000u, 0x3f803000u,
                           0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x7f7f8000u };
    for (uint32_t x : special) pats.push_back(x);
    for (uint32_t u : pats) {
        float f = emu_bitsf(u);
        uint16_t h = __float2half(f).x, hr = sd_f32_to_f16(f);
        uint16_t bb = __float2bfloat16(f).x, br = sd_f32_to_bf16(f);
        if (std::isnan(f)) {
            bad_h += (h & 0x7c00) != 0x7c00 || !(h & 0x3ff);
            bad_b += (bb & 0x7f80) != 0x7f80 || !(bb & 0x7f);
            continue;
        }
        if (h != hr && bad_h++ < 5) printf("#   half(%a) = %04x, half.h %04x\n", (double)f, h, hr);
        if (bb != br && bad_b++ < 5) printf("#   bf16(%a) = %04x, half.h %04x\n", (double)f, bb, br);
        __half hh;
        hh.x = h;
        float back = __half2float(hh), ref = sd_f16_to_f32(h);
        if (memcmp(&back, &ref, 4) && bad_h++ < 5) printf("#   half2float(%04x) = %a, half.h %a\n", h, (double)back, (double)ref);
    }
    /* a few by hand */
    T_EQ_INT(__float2half(65504.0f).x, 0x7bff);
    T_EQ_INT(__float2half(65519.0f).x, 0x7bff);
    T_EQ_INT(__float2half(65520.0f).x, 0x7c00);
    T_EQ_INT(__float2half(0x1p-24f).x, 0x0001);
    T_EQ_INT(__float2half(0x1p-25f).x, 0x0000);          /* tie to even 0 */
    T_EQ_INT(__float2half(0x1.8p-25f).x, 0x0001);
    T_EQ_INT(__float2half(0x3p-25f).x, 0x0002);          /* 1.5 ulp: tie to even 2 */
    T_EQ_INT(__float2half(-0x1.ffcp-15f).x, 0x8400);     /* 1023.5 subnormal ulps: up into the normals */
    T_EQ_INT(__float2half(1.0f + 0x1p-11f).x, 0x3c00);   /* tie to even */
    T_EQ_INT(__float2half(1.0f + 0x3p-11f).x, 0x3c02);
    T_EQ_INT(__float2bfloat16(1.0f + 0x1p-8f).x, 0x3f80);
    T_EQ_INT(__float2bfloat16(1.0f + 0x3p-8f).x, 0x3f82);
    T_EQ_INT(__float2bfloat16(3.4e38f).x, 0x7f80);
    __half s;
    s.x = 0x0001;
    T_CHECK(__half2float(s) == 0x1p-24f);
    T_CHECKF(bad_h == 0 && bad_b == 0, "%d fp16 and %d bf16 mismatches of %zu", bad_h, bad_b, pats.size());
    printf("# %zu floats: fp16 and bf16 conversions as lib/base/half.h\n", pats.size());
}

/* ---- the emulator's wmma against plain loops ---- */

__global__ void k_wmma_probe(const __nv_bfloat16 *a, const __nv_bfloat16 *b, float *c, float *c2)
{
    /* two warps: warp w computes C_w = A·B (+ C_w) with (a) row/col major B, (b) a col-major store */
    namespace wmma = nvcuda::wmma;
    int w = threadIdx.x / 32;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fbt;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(fa, a, 24);
    if (w == 0) wmma::load_matrix_sync(fb, b, 24), wmma::load_matrix_sync(acc, c, 20, wmma::mem_row_major);
    else wmma::fill_fragment(acc, 0.0f), wmma::load_matrix_sync(fbt, b, 24);
    if (w == 0) wmma::mma_sync(acc, fa, fb, acc), wmma::store_matrix_sync(c, acc, 20, wmma::mem_row_major);
    else wmma::mma_sync(acc, fa, fbt, acc), wmma::store_matrix_sync(c2, acc, 20, wmma::mem_col_major);
}

static void test_emu_wmma(void)
{
    alignas(32) __nv_bfloat16 a[16 * 24], b[16 * 24];
    alignas(32) float c[16 * 20], c2[16 * 20], c0[16 * 20];
    for (int i = 0; i < 16 * 24; i++) a[i] = __float2bfloat16(rndf()), b[i] = __float2bfloat16(rndf());
    for (int i = 0; i < 16 * 20; i++) c[i] = c0[i] = rndf(), c2[i] = 0;
    emu_launch(dim3(1), dim3(64), 0, k_wmma_probe, (const __nv_bfloat16 *)a, (const __nv_bfloat16 *)b, c, c2);
    double e1 = 0, e2 = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            double s = c0[i * 20 + j], t = 0;
            for (int k = 0; k < 16; k++) {
                s += (double)__bfloat162float(a[i * 24 + k]) * __bfloat162float(b[k * 24 + j]);
                t += (double)__bfloat162float(a[i * 24 + k]) * __bfloat162float(b[j * 24 + k]);
            }
            e1 = fmax(e1, fabs(s - c[i * 20 + j]));
            e2 = fmax(e2, fabs(t - c2[j * 20 + i]));  /* stored column major */
        }
    printf("# wmma emulation vs double loops: row-major B %.2e, col-major B + col-major store %.2e\n", e1, e2);
    T_CHECK(e1 < 1e-5 && e2 < 1e-5);
}

/* ---- attention ---- */

struct host_t {
    sd_tensor t;
    std::vector<float> v;
};
static void mk(host_t &h, int64_t a, int64_t b, int64_t c, float scale)
{
    int64_t sh[3] = { a, b, c };
    h.v.resize((size_t)(a * b * c));
    for (float &x : h.v) x = scale * rndf();
    h.t = sd_tensor_wrap(h.v.data(), SD_F32, 3, sh);
}
template <class T> static float round16(float x);
template <> float round16<__nv_bfloat16>(float x) { return __bfloat162float(__float2bfloat16(x)); }
template <> float round16<__half>(float x) { return __half2float(__float2half(x)); }

static double rel_diff(const std::vector<float> &got, const std::vector<float> &ref, int *nan)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!std::isfinite(got[i])) { (*nan)++; continue; }
        md = fmax(md, fabs((double)got[i] - ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
    }
    return mr > 0 ? md / mr : md;
}

struct acase {
    int b, h, tq, tk, d, causal;
    float scale;
};

static double worst[2][5];  /* [fp16/bf16][o, lse, dq, dk, dv] */
static const char *wname[5] = { "o", "lse", "dq", "dk", "dv" };

template <class T, int DP> static void run_case(const acase &ac, const char *tname, double tol_o, double tol_g, int kind, int rerun)
{
    typedef sd_fa::fa_cfg<DP> C;
    const int B = ac.b, H = ac.h, tq = ac.tq, tk = ac.tk, d = ac.d;
    const float scale = ac.scale != 0 ? ac.scale : 1.0f / sqrtf((float)d);
    host_t q, k, v, dout, dq, dk, dv;
    mk(q, B, tq, H * d, 1.5f), mk(k, B, tk, H * d, 1.5f), mk(v, B, tk, H * d, 1.0f), mk(dout, B, tq, H * d, 1.0f);
    mk(dq, B, tq, H * d, 1.0f), mk(dk, B, tk, H * d, 1.0f), mk(dv, B, tk, H * d, 1.0f);
    /* the reference on the rounded operands */
    host_t qr = q, kr = k, vr = v, dor = dout, dqr = dq, dkr = dk, dvr = dv;
    host_t *fix[] = { &qr, &kr, &vr, &dor, &dqr, &dkr, &dvr };
    for (host_t *p : fix) p->t.data = p->v.data();
    for (float &x : qr.v) x = round16<T>(x);
    for (float &x : kr.v) x = round16<T>(x);
    for (float &x : vr.v) x = round16<T>(x);
    for (float &x : dor.v) x = round16<T>(x);
    std::vector<float> oref((size_t)B * tq * H * d), lref((size_t)B * H * tq);
    int64_t osh[3] = { B, tq, H * d }, lsh[3] = { B, H, tq };
    sd_tensor ot = sd_tensor_wrap(oref.data(), SD_F32, 3, osh), lt = sd_tensor_wrap(lref.data(), SD_F32, 3, lsh);
    sd_ctx cpu;
    T_EQ_INT(sd_ctx_init(&cpu, SD_DEV_CPU, 1, 0), SD_OK);
    sd_attn_args a = { H, ac.scale, ac.causal };
    T_EQ_INT(sd_op_attention(&cpu, &ot, &lt, &qr.t, &kr.t, &vr.t, a), SD_OK);
    T_EQ_INT(sd_op_attention_bwd(&cpu, &dqr.t, &dkr.t, &dvr.t, &dor.t, &qr.t, &kr.t, &vr.t, &ot, &lt, a), SD_OK);
    sd_ctx_free(&cpu);

    /* the kernels (unrounded fp32 inputs, as on the GPU) */
    std::vector<float> o(oref.size(), NAN), lse(lref.size(), NAN), delta(lref.size(), NAN);
    emu_launch(dim3((tq + C::F_BQ - 1) / C::F_BQ, H, B), dim3(C::F_NT), C::F_BYTES, sd_fa::fa_fwd<T, DP>,
               (const float *)q.v.data(), (const float *)k.v.data(), (const float *)v.v.data(), o.data(), lse.data(),
               H, tq, tk, d, scale, ac.causal);
    emu_launch(dim3(3), dim3(32), 0, sd_fa::fa_bwd_delta, (const float *)dout.v.data(), (const float *)oref.data(),
               delta.data(), (int64_t)B, H, tq, d);
    std::vector<float> dqk = dq.v, dkk = dk.v, dvk = dv.v;
    emu_launch(dim3((tk + C::B_BK - 1) / C::B_BK, H, B), dim3(C::B_NT), C::B_BYTES, sd_fa::fa_bwd_dkdv<T, DP>,
               (const float *)q.v.data(), (const float *)k.v.data(), (const float *)v.v.data(),
               (const float *)dout.v.data(), (const float *)lref.data(), (const float *)delta.data(), dkk.data(),
               dvk.data(), H, tq, tk, d, scale, ac.causal);
    emu_launch(dim3((tq + C::Q_BQ - 1) / C::Q_BQ, H, B), dim3(C::Q_NT), C::Q_BYTES, sd_fa::fa_bwd_dq<T, DP>,
               (const float *)q.v.data(), (const float *)k.v.data(), (const float *)v.v.data(),
               (const float *)dout.v.data(), (const float *)lref.data(), (const float *)delta.data(), dqk.data(), H, tq,
               tk, d, scale, ac.causal);

    int nan = 0;
    double r[5] = { rel_diff(o, oref, &nan), rel_diff(lse, lref, &nan), rel_diff(dqk, dqr.v, &nan),
                    rel_diff(dkk, dkr.v, &nan), rel_diff(dvk, dvr.v, &nan) };
    /* the gradients relative to their own change (the starting values are O(1) random) */
    for (int g = 0; g < 3; g++) {
        const std::vector<float> &st = g == 0 ? dq.v : g == 1 ? dk.v : dv.v;
        const std::vector<float> &rf = g == 0 ? dqr.v : g == 1 ? dkr.v : dvr.v;
        const std::vector<float> &gt = g == 0 ? dqk : g == 1 ? dkk : dvk;
        double md = 0, mr = 0;
        for (size_t i = 0; i < st.size(); i++) {
            md = fmax(md, fabs((double)gt[i] - rf[i]));
            mr = fmax(mr, fabs((double)rf[i] - st[i]));
        }
        r[2 + g] = mr > 0 ? md / mr : md;
    }
    char name[160];
    snprintf(name, sizeof name, "%s d=%d(DP %d) B=%d H=%d Tq=%d Tk=%d%s%s", tname, d, DP, B, H, tq, tk,
             ac.causal ? " causal" : "", ac.scale != 0 ? " scale" : "");
    printf("# %-46s o %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", name, r[0], r[1], r[2], r[3], r[4]);
    T_CHECKF(nan == 0, "%s: %d non-finite results", name, nan);
    for (int i = 0; i < 5; i++) {
        double tol = i < 2 ? tol_o : tol_g;
        T_CHECKF(r[i] <= tol, "%s: %s rel %.3e > %.1e", name, wname[i], r[i], tol);
        if (r[i] > worst[kind][i]) worst[kind][i] = r[i];
    }

    if (!rerun) return;
    /* deterministic: the same bytes again */
    std::vector<float> o2(o.size()), l2(lse.size()), dk2 = dk.v, dv2 = dv.v, dq2 = dq.v;
    emu_launch(dim3((tq + C::F_BQ - 1) / C::F_BQ, H, B), dim3(C::F_NT), C::F_BYTES, sd_fa::fa_fwd<T, DP>,
               (const float *)q.v.data(), (const float *)k.v.data(), (const float *)v.v.data(), o2.data(), l2.data(),
               H, tq, tk, d, scale, ac.causal);
    emu_launch(dim3((tk + C::B_BK - 1) / C::B_BK, H, B), dim3(C::B_NT), C::B_BYTES, sd_fa::fa_bwd_dkdv<T, DP>,
               (const float *)q.v.data(), (const float *)k.v.data(), (const float *)v.v.data(),
               (const float *)dout.v.data(), (const float *)lref.data(), (const float *)delta.data(), dk2.data(),
               (float *)NULL, H, tq, tk, d, scale, ac.causal);  /* dv NULL: dk alone */
    emu_launch(dim3((tk + C::B_BK - 1) / C::B_BK, H, B), dim3(C::B_NT), C::B_BYTES, sd_fa::fa_bwd_dkdv<T, DP>,
               (const float *)q.v.data(), (const float *)k.v.data(), (const float *)v.v.data(),
               (const float *)dout.v.data(), (const float *)lref.data(), (const float *)delta.data(), (float *)NULL,
               dv2.data(), H, tq, tk, d, scale, ac.causal);
    emu_launch(dim3((tq + C::Q_BQ - 1) / C::Q_BQ, H, B), dim3(C::Q_NT), C::Q_BYTES, sd_fa::fa_bwd_dq<T, DP>,
               (const float *)q.v.data(), (const float *)k.v.data(), (const float *)v.v.data(),
               (const float *)dout.v.data(), (const float *)lref.data(), (const float *)delta.data(), dq2.data(), H,
               tq, tk, d, scale, ac.causal);
    T_CHECKF(!memcmp(o2.data(), o.data(), o.size() * 4) && !memcmp(l2.data(), lse.data(), lse.size() * 4) &&
                 !memcmp(dk2.data(), dkk.data(), dkk.size() * 4) && !memcmp(dv2.data(), dvk.data(), dvk.size() * 4) &&
                 !memcmp(dq2.data(), dqk.data(), dqk.size() * 4),
             "%s: a second run (dk and dv separately) gave other bytes", name);
}

/* determinism: rerun (dk and dv separately) and compare bytes */
template <class T> static void run_all(const char *tname, double tol_o, double tol_g, int kind, const int *which, int n,
                                       int rerun_mask)
{
    static const acase cs[] = {
        { 2, 2, 37, 37, 40, 0, 0 },     /* SD1.5 head dim 40, self attention, one partial tile */
        { 2, 3, 130, 77, 40, 0, 0 },    /* cross attention, Tk = 77 */
        { 2, 2, 77, 77, 64, 1, 0 },     /* SD2 head dim 64, causal (text encoder) */
        { 2, 2, 130, 130, 64, 0, 0.3f },
        { 2, 2, 37, 77, 80, 0, 0 },     /* head dim 80 */
        { 2, 3, 37, 130, 80, 1, 0 },    /* causal with Tq < Tk */
        { 2, 2, 37, 77, 160, 1, 0 },    /* head dim 160, causal, Tq < Tk */
        { 2, 2, 130, 77, 160, 0, 0 },
    };
    for (int w = 0; w < n; w++) {
        const acase &c = cs[which[w]];
        int rr = rerun_mask >> which[w] & 1;
        if (c.d == 40) run_case<T, 48>(c, tname, tol_o, tol_g, kind, rr);
        else if (c.d == 64) run_case<T, 64>(c, tname, tol_o, tol_g, kind, rr);
        else if (c.d == 80) run_case<T, 80>(c, tname, tol_o, tol_g, kind, rr);
        else run_case<T, 160>(c, tname, tol_o, tol_g, kind, rr);
    }
}

/* bf16 keeps 8 significant bits (P and dS rounded to 2^-9 relative), fp16 11. */
static void test_flash_attn_bf16(void)
{
    static const int all[] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    run_all<__nv_bfloat16>("bf16", 1e-2, 2e-2, 1, all, 8, 1 << 1 | 1 << 6);
}
static void test_flash_attn_fp16(void)
{
    static const int some[] = { 0, 2, 5, 6 };
    run_all<__half>("fp16", 2e-3, 4e-3, 0, some, 4, 0);
}

int main(void)
{
    T_RUN(test_emu_half_conversions);
    T_RUN(test_emu_wmma);
    T_RUN(test_flash_attn_bf16);
    T_RUN(test_flash_attn_fp16);
    for (int k = 1; k >= 0; k--)
        printf("# worst %s: o %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", k ? "bf16" : "fp16", worst[k][0], worst[k][1],
               worst[k][2], worst[k][3], worst[k][4]);
    T_DONE();
}
