/* Masked loss (spec §1.11; kohya custom_train_functions.apply_masked_loss): sd_mask_area_resize
 * (F.interpolate mode="area", flipped samples) and the trainer's sd_tobj_loss with a mask, against
 * PyTorch (tests/data/diffusion/masked_loss.json from tests/golden/gen/make_masked_loss_golden.py):
 * the resized masks, per-sample losses, batch loss and gradient w.r.t. the prediction; plus the
 * gradient against central differences of the loss and all-ones masks giving the unmasked bytes;
 * the conditioning-image mask value of every red byte (sd_mask_cond_value) bit for bit. */
#include "test.h"

#include <string.h>

#include "base/error.h"
#include "diffusion/objective.h"
#include "diffusion_golden.h"
#include "train/objective_step.h"

static jv G;

/* the mask of each sample as the trainer builds it (loop_latents.c batch_mask) */
static void build_mask(jv c, int B, int C, int h, int w, int mh, int mw, float *mask)
{
    int n = 0, nh = 0, nf = 0;
    double *alpha = g_arr(c, "alpha", &n), *has = g_arr(c, "has", &nh), *fl = g_arr(c, "flipped", &nf);
    float *plane = malloc(sizeof(float) * (size_t)(mh * mw));
    int per = C * h * w;
    for (int b = 0; b < B; b++) {
        float *m = mask + b * per;
        if (!has[b]) {
            for (int i = 0; i < per; i++) m[i] = 1.0f;
            continue;
        }
        for (int i = 0; i < mh * mw; i++) plane[i] = (float)alpha[b * mh * mw + i] / 255.0f;
        sd_mask_area_resize(plane, mh, mw, fl[b] != 0, m, h, w);
        for (int i = h * w; i < per; i++) m[i] = m[i % (h * w)];
    }
    free(plane), free(alpha), free(has), free(fl);
}

static void test_golden(void)
{
    jv cases = g_get(G, "cases");
    int nc = jv_array_length(jv_copy(cases));
    T_CHECK(nc == 3);
    for (int k = 0; k < nc; k++) {
        jv c = jv_array_get(jv_copy(cases), k);
        int B = (int)g_num(c, "B"), C = (int)g_num(c, "C"), h = (int)g_num(c, "h"), w = (int)g_num(c, "w");
        int mh = (int)g_num(c, "mh"), mw = (int)g_num(c, "mw"), per = C * h * w, n = 0;
        jv lt = g_get(c, "loss_type");
        int huber = !strcmp(jv_string_value(lt), "huber");
        jv_free(lt);
        float *mask = malloc(sizeof(float) * (size_t)(B * per));
        build_mask(c, B, C, h, w, mh, mw, mask);
        /* the resized mask: torch's [B,1,h,w] against our channel 0 */
        double *wm = g_arr(c, "mask", &n);
        double em = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < h * w; i++) {
                double e = fabs((double)mask[b * per + i] - (double)(float)wm[b * h * w + i]);
                if (!(e <= em)) em = e;
            }
        T_CHECKF(n == B * h * w && em <= 1e-7, "case %d: mask max error %g", k, em);
        free(wm);
        float *pred = g_farr(c, "pred", &n), *target = g_farr(c, "target", &n), *lw = g_farr(c, "loss_weights", &n);
        sd_tobj o;
        sd_tobj_opts to = { .loss_type = huber ? "huber" : "l2", .huber_schedule = "constant", .huber_c = 0.1,
                            .huber_scale = 1.0, .min_timestep = -1, .max_timestep = -1 };
        T_EQ_INT(sd_tobj_init(&o, &to), SD_OK);
        int t[3] = { 10, 500, 990 };
        float hc[3], lossv[3], *grad = malloc(sizeof(float) * (size_t)(B * per));
        double factor[3];
        double L = sd_tobj_loss(&o, pred, target, B, per, t, lw, mask, hc, factor, lossv, 1.0, grad);
        double *ws = g_arr(c, "per_sample", &n);
        double es = g_relerr(lossv, ws, B, 1e-6);
        double wl = g_num(c, "loss"), el = fabs(L - wl) / fabs(wl);
        double *wg = g_arr(c, "grad", &n);
        double eg = g_relerr(grad, wg, B * per, 1e-4);
        printf("# case %d (%s, mask %dx%d -> %dx%d): mask %.2g, per-sample %.2g, loss %.2g, grad %.2g (rel)\n", k,
               huber ? "huber" : "l2", mh, mw, h, w, em, es, el, eg);
        T_CHECKF(es < 1e-6 && el < 1e-6 && eg < 1e-6, "case %d: per-sample %g loss %g grad %g", k, es, el, eg);
        /* the masked loss differs from the unmasked one; all-ones masks give the unmasked bytes */
        float lv0[3], *g0 = malloc(sizeof(float) * (size_t)(B * per)), *g1 = malloc(sizeof(float) * (size_t)(B * per));
        float lv1[3], *ones = malloc(sizeof(float) * (size_t)(B * per));
        for (int i = 0; i < B * per; i++) ones[i] = 1.0f;
        double L0 = sd_tobj_loss(&o, pred, target, B, per, t, lw, NULL, hc, factor, lv0, 1.0, g0);
        double L1 = sd_tobj_loss(&o, pred, target, B, per, t, lw, ones, hc, factor, lv1, 1.0, g1);
        T_CHECK(L0 != L);
        T_CHECK(L0 == L1 && !memcmp(lv0, lv1, sizeof lv0) && !memcmp(g0, g1, sizeof(float) * (size_t)(B * per)));
        /* forward and backward agree: central differences of L in double steps */
        double maxe = 0;
        for (int i = 0; i < B * per; i += 7) {
            float keep = pred[i], hstep = 1e-2f;
            pred[i] = keep + hstep;
            double Lp = sd_tobj_loss(&o, pred, target, B, per, t, lw, mask, hc, factor, lv1, 1.0, g1);
            pred[i] = keep - hstep;
            double Lm = sd_tobj_loss(&o, pred, target, B, per, t, lw, mask, hc, factor, lv1, 1.0, g1);
            pred[i] = keep;
            double fd = (Lp - Lm) / (2.0 * (double)hstep);
            double e = fabs(fd - grad[i]) / (fabs(fd) + 1e-4);
            if (e > maxe) maxe = e;
        }
        T_CHECKF(maxe < 2e-2, "case %d: gradient vs central differences %g", k, maxe);
        free(g0), free(g1), free(ones), free(ws), free(wg), free(grad), free(pred), free(target), free(lw), free(mask);
        jv_free(c);
    }
    jv_free(cases);
}

/* area resize: exact 8×8 means, identity, and a flip that is the mirror of the unflipped result
 * only when the bins are symmetric */
static void test_area(void)
{
    float in[16 * 24], out[2 * 3], out2[2 * 3], back[16 * 24];
    for (int i = 0; i < 16 * 24; i++) in[i] = (float)((i * 37) % 256) / 255.0f;
    sd_mask_area_resize(in, 16, 24, 0, out, 2, 3);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double s = 0;
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) s += in[(i * 8 + y) * 24 + j * 8 + x];
            T_NEAR(out[i * 3 + j], s / 64, 1e-6);
        }
    sd_mask_area_resize(in, 16, 24, 1, out2, 2, 3);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) T_NEAR(out2[i * 3 + j], out[i * 3 + 2 - j], 1e-6);
    sd_mask_area_resize(in, 16, 24, 0, back, 16, 24);
    T_CHECK(!memcmp(back, in, sizeof in));
}

/* a conditioning image's red byte → mask value, every byte against torch's ToTensor/Normalize/
 * apply_masked_loss chain (golden cond_mask), bit for bit; 63 of them are not r/255 */
static void test_cond_values(void)
{
    int n = 0, differ = 0;
    double *v = g_arr(G, "cond_mask", &n);
    T_CHECK(n == 256);
    for (int r = 0; r < 256 && r < n; r++) {
        float m = sd_mask_cond_value((uint8_t)r), want = (float)v[r];
        T_CHECKF(!memcmp(&m, &want, sizeof m), "r %d: %.9g, torch %.9g", r, m, want);
        differ += m != (float)r / 255.0f;
    }
    T_CHECKF(differ == 63, "%d values differ from r/255", differ);
    free(v);
}

int main(void)
{
    G = g_load("masked_loss.json");
    if (!jv_is_valid(G)) {
        printf("not ok load_golden\n");
        return 1;
    }
    T_RUN(test_area);
    T_RUN(test_golden);
    T_RUN(test_cond_values);
    jv_free(G);
    T_DONE();
}
