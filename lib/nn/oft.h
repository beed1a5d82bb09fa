/* OFT module on a linear or conv layer (kohya-ss networks/oft.py OFTModule, Orthogonal Finetuning).
 *
 * The host weight W [out, ...] is split into k = dim blocks of n = out/k output rows (out must be
 * divisible by k: the reference's einops rearrange fails otherwise). The trained parameter is
 * `blocks` [k, n, n] (zero-initialised). Per step:
 *
 *   Q0 = B − Bᵀ (per block)          ‖Q0‖ = Frobenius norm over all k blocks together
 *   Q  = Q0 · (min(‖Q0‖, c) + 1e-8) / (‖Q0‖ + 1e-8)      c = alpha · out (the "constraint")
 *   R  = (I + Q)(I − Q)⁻¹             (Cayley transform; orthogonal for antisymmetric Q)
 *   Rw = multiplier · (R − I) + I
 *   RW_k = Rw_kᵀ · W_k                (einsum "k n m, k n ... -> k m ...": block k of the rows)
 *
 * and the host runs its linear/conv with RW instead of W (bias unchanged). RW is rounded to the
 * host weight's dtype when that is f16/bf16 (the reference's RW.to(org_dtype)).
 *
 * The k small n×n problems run on the host in double precision (LAPACK dgetrf/dgetri for the
 * inverse, BLAS dgemm for the products) from a downloaded copy of the blocks; Rw is uploaded as
 * f32 to the blocks' device and cached until the blocks change (compared with the copy the cache
 * was built from). The big products (RW and dL/dRw = Σ_p W[n,p]·dRW[m,p]) use the ops, so they
 * run on the backend of the tensors.
 *
 * Backward (the host layer's backward calls sd_oft_weight_backward with dL/dRW): dL/dRw from the
 * product above, then through Rw, the Cayley transform (d(I−Q)⁻¹ = −(I−Q)⁻¹ d(I−Q) (I−Q)⁻¹), the
 * norm clamp (torch.clamp passes the gradient where ‖Q0‖ <= c; the norm's gradient Q0/‖Q0‖ is 0 at
 * ‖Q0‖ = 0 as torch's) and Q0 = B − Bᵀ; ACCUMULATED into blocks->grad. */
#ifndef SD_NN_OFT_H
#define SD_NN_OFT_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"
#include "tensor/ops.h"

typedef struct sd_oft {
    sd_param *blocks;         /* [k, n, n], f32, trainable */
    int k, n;                 /* num_blocks (dim), block_size */
    int64_t out, row;         /* host output rows; elements per row (in·kh·kw) */
    double alpha;             /* constraint = alpha · out */
    float multiplier;
    /* cache of the last rotation */
    sd_tensor r;              /* Rw [k, n, n] f32 on the blocks' device (allocated on first use) */
    float *hb, *hb_last;      /* host copies of the blocks: current, and the one r was built from */
    int have_r;
    /* host buffers of the backward (allocated with hb, reused every step) */
    float *hf;                /* f32 staging (Rw up, dL/dRw down, dL/dB up) */
    double *dd;               /* 4 · k·n·n doubles */
    void *ws;
} sd_oft;

/* Register `name.oft_blocks` [dim, out/dim, out/dim] (trainable) in `reg` for a host with `out`
 * output rows of `row` elements. SD_EINVAL (naming the module) when out is not divisible by dim. */
int sd_oft_init(sd_oft *o, sd_params *reg, const char *name, int64_t out, int64_t row, int dim, double alpha);
void sd_oft_free(sd_oft *o);

/* Host maths over k blocks of n×n (row-major), in double: Rw from the blocks (`rw` k·n·n), and the
 * gradient of the blocks from dL/dRw, ACCUMULATED into `dblocks`. constraint = alpha · out. */
int sd_oft_rotation(const double *blocks, int k, int n, double constraint, double multiplier, double *rw);
int sd_oft_rotation_backward(const double *blocks, int k, int n, double constraint, double multiplier,
                             const double *drw, double *dblocks);

/* rw = RW for the host weight w ([out, ...], any dtype): rw has w's shape and dtype (scratch of
 * the caller). Refreshes the cached Rw when the blocks changed. */
int sd_oft_weight(sd_ctx *ctx, sd_oft *o, const sd_tensor *w, sd_tensor *rw);
/* blocks->grad += dL/dblocks from drw = dL/dRW (f32, w's shape), for the w of the last
 * sd_oft_weight (blocks unchanged since). No-op when the blocks get no gradient. */
int sd_oft_weight_backward(sd_ctx *ctx, sd_oft *o, const sd_tensor *w, const sd_tensor *drw);
/* Scratch bytes sd_oft_weight / sd_oft_weight_backward take at most from ctx->scratch, besides the
 * caller's rw / drw. */
size_t sd_oft_scratch_bytes(const sd_oft *o);

#endif
