/* CPU backend: elementwise, shape, embedding and loss ops: the float instantiation of kern_elem.h
 * and of its entry points (cpu_wrap_elem.h), plus fill and convert (which handle f16/bf16).
 * Arguments were validated by ops.c. */
#include "tensor/kern_elem.h"

#include "base/half.h"
#include "tensor/backend.h"

#define FP(t) ((t) ? (float *)(t)->data : NULL)

int sd_cpu_fill(sd_ctx *ctx, sd_tensor *y, float value)
{
    int64_t n = sd_tensor_numel(y);
    if (y->dtype == SD_F32) {
        float *p = y->data;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n > SD_K_CHUNK)
        for (int64_t i = 0; i < n; i++) p[i] = value;
    } else {
        uint16_t h = y->dtype == SD_F16 ? sd_f32_to_f16(value) : sd_f32_to_bf16(value);
        uint16_t *p = y->data;
        for (int64_t i = 0; i < n; i++) p[i] = h;
    }
    return SD_OK;
}

int sd_cpu_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = sd_tensor_numel(x), nc = (n + SD_K_CHUNK - 1) / SD_K_CHUNK;
    if (x->dtype == y->dtype) {
        if (y->data != x->data) memmove(y->data, x->data, sd_tensor_nbytes(x));
        return SD_OK;
    }
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (nc > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t s = c * SD_K_CHUNK, m = n - s < SD_K_CHUNK ? n - s : SD_K_CHUNK;
        float tmp[SD_K_CHUNK];
        const float *src;
        if (x->dtype == SD_F32) src = (const float *)x->data + s;
        else if (x->dtype == SD_F16) { sd_f16_to_f32_n((const uint16_t *)x->data + s, tmp, (size_t)m); src = tmp; }
        else { sd_bf16_to_f32_n((const uint16_t *)x->data + s, tmp, (size_t)m); src = tmp; }
        if (y->dtype == SD_F32) memcpy((float *)y->data + s, src, (size_t)m * 4);
        else if (y->dtype == SD_F16) sd_f32_to_f16_n(src, (uint16_t *)y->data + s, (size_t)m);
        else sd_f32_to_bf16_n(src, (uint16_t *)y->data + s, (size_t)m);
    }
    return SD_OK;
}

#include "tensor/cpu_wrap_elem.h"
