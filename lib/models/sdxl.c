/* SDXL conditioning helpers (see sdxl.h). */
#include <math.h>

#include "base/error.h"
#include "models/sdxl.h"

/* exp in float as PyTorch's CPU kernel computes it (SLEEF's expf_u10: Cody-Waite reduction by
 * ln 2 in two parts, a degree-6 polynomial, 1 + (s²·u + s), scaling by 2^q); correctly rounded
 * expf differs from it by one ulp for 15 of the 128 frequencies, which moves t·f_i by up to
 * 6e-5 for t ≈ 1000. Used for |d| < 104 only (here d ∈ [-9.3, 0]). */
static float torch_expf(float d)
{
    const int q = (int)rintf(d * 1.442695040888963407359924681001892137426645954152985934135449406931f);
    float s = (float)q * -0.693145751953125f + d;
    s = (float)q * -1.428606765330187045e-06f + s;
    float u = 0.000198527617612853646278381f;
    u = u * s + 0.00139304355252534151077271f;
    u = u * s + 0.00833336077630519866943359f;
    u = u * s + 0.0416664853692054748535156f;
    u = u * s + 0.166666671633720397949219f;
    u = u * s + 0.5f;
    u = 1.0f + ((s * s) * u + s);
    return ldexpf(u, q);
}

void sd_sdxl_size_embedding(float out[SD_SDXL_SIZE_EMB_DIM], double orig_h, double orig_w, double crop_top,
                            double crop_left, double target_h, double target_w)
{
    enum { HALF = 128 };
    const double v[6] = { orig_h, orig_w, crop_top, crop_left, target_h, target_w };
    /* torch: exp(-math.log(10000) * arange(0, 128, float32) / 128): a float32 product with the
     * scalar rounded to float, an exact division by 128, torch's expf */
    const float c = (float)-log(10000.0);
    float f[HALF];
    for (int i = 0; i < HALF; i++) {
        volatile float a = c * (float)i;   /* one float rounding, as the f32 kernel */
        f[i] = torch_expf(a / (float)HALF);
    }
    for (int k = 0; k < 6; k++) {
        const float t = (float)v[k];
        float *o = out + k * 2 * HALF;
        for (int i = 0; i < HALF; i++) {
            volatile float arg = t * f[i];
            o[i] = (float)cos((double)arg);
            o[HALF + i] = (float)sin((double)arg);
        }
    }
}

int sd_sdxl_vector(sd_ctx *ctx, sd_tensor *y, const sd_tensor *pooled, const sd_tensor *size_emb)
{
    if (pooled->ndim != 2 || size_emb->ndim != 2 || size_emb->shape[1] != SD_SDXL_SIZE_EMB_DIM ||
        size_emb->shape[0] != pooled->shape[0] || y->ndim != 2 || y->shape[0] != pooled->shape[0] ||
        y->shape[1] != pooled->shape[1] + SD_SDXL_SIZE_EMB_DIM)
        return sd_err(SD_EINVAL, "SDXL vector: need y [B, P + %d] = pooled [B, P] ++ size embedding [B, %d]",
                      SD_SDXL_SIZE_EMB_DIM, SD_SDXL_SIZE_EMB_DIM);
    const sd_tensor *xs[2] = { pooled, size_emb };
    return sd_op_concat(ctx, y, xs, 2, 1);
}

int sd_sdxl_vector_backward(sd_ctx *ctx, sd_tensor *dpooled, const sd_tensor *dy)
{
    if (dpooled->ndim != 2 || dy->ndim != 2 || dy->shape[0] != dpooled->shape[0] ||
        dy->shape[1] != dpooled->shape[1] + SD_SDXL_SIZE_EMB_DIM)
        return sd_err(SD_EINVAL, "SDXL vector backward: need dy [B, P + %d] and dpooled [B, P]", SD_SDXL_SIZE_EMB_DIM);
    sd_tensor *dxs[2] = { dpooled, NULL };
    return sd_op_concat_bwd(ctx, dxs, 2, dy, 1);
}
