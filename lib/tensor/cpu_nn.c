/* CPU backend: linear, matmul, conv2d, group/layer norm, attention: the float instantiation of
 * the kern_*.h templates and of their entry points (cpu_wrap_nn.h). Arguments were validated by
 * ops.c. Weights in f16/bf16/f8_e4m3fn are converted into scratch per call. */
#include "tensor/kern_attn.h"
#include "tensor/kern_conv.h"
#include "tensor/kern_dwconv.h"
#include "tensor/kern_linear.h"
#include "tensor/kern_norm.h"

#include "base/half.h"
#include "tensor/backend.h"

#define FP(t) ((t) ? (float *)(t)->data : NULL)

/* f32 view of a weight: the data itself, or a converted copy in scratch. */
static const real *weight_real(sd_ctx *ctx, const sd_tensor *w, int *rc)
{
    *rc = SD_OK;
    if (w->dtype == SD_F32) return w->data;
    int64_t n = sd_tensor_numel(w);
    float *p = sd_arena_alloc(&ctx->scratch, (size_t)n * 4);
    if (!p) {
        *rc = sd_err(SD_ENOMEM, "op scratch arena exhausted converting a %s weight (%lld elements)",
                     sd_dtype_name((sd_dtype)w->dtype), (long long)n);
        return NULL;
    }
    if (w->dtype == SD_F16) sd_f16_to_f32_n(w->data, p, (size_t)n);
    else if (w->dtype == SD_F8E4M3) sd_f8e4m3_to_f32_n(w->data, p, (size_t)n);   /* exact, as its bf16/f16 upcast */
    else sd_bf16_to_f32_n(w->data, p, (size_t)n);
    return p;
}

#include "tensor/cpu_wrap_nn.h"
