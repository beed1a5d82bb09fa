/* A small ONNX graph interpreter for CPU inference of the WD14 tagger graphs (SmilingWolf's
 * tf2onnx-converted Keras v1/v2 models and torch-exported v3 models; sd-tag --onnx).
 *
 * The model is read with io/onnx.h; the nodes run in a topological order computed at open (the
 * graph's own order is not trusted); values are float32 or int64 tensors (every integer type and
 * bool is held as int64; float16/bfloat16/double as float32; Cast to float16/bfloat16 rounds);
 * intermediate values are freed after their last use. Elementwise ops broadcast as numpy does.
 *
 * Operators (default domain, opsets 1..21; the attribute- and input- forms of the opset changes):
 *   Add Sub Mul Div Pow Max Min Sum Mean Equal Less Greater LessOrEqual GreaterOrEqual And Or Not
 *   Where, Sqrt Erf Tanh Sigmoid Relu LeakyRelu Elu Gelu HardSigmoid HardSwish Softplus Exp Log
 *   Neg Abs Floor Ceil Round Sin Cos Reciprocal Clip Sign, ReduceMean ReduceSum ReduceMax ReduceMin
 *   ReduceProd ReduceL2 ReduceSumSquare, Softmax LogSoftmax, LayerNormalization
 *   BatchNormalization, MatMul Gemm, Einsum (one or two operands, letters only: Keras
 *   MultiHeadAttention's equations), Conv (any groups, pads, strides, dilations, auto_pad; 1-D
 *   and 2-D), GlobalAveragePool GlobalMaxPool AveragePool MaxPool (2-D), Transpose Reshape
 *   Flatten Squeeze Unsqueeze Concat Split Slice Gather Tile Pad (constant mode) Shape Size Cast
 *   CastLike Constant ConstantOfShape Expand Range Identity Dropout.
 * Anything else (another op, another domain such as com.microsoft, a graph attribute) is
 * SD_EUNSUPPORTED at open: "model.onnx: operator Resize (node 'x') is not supported".
 *
 * Convolutions with one group (or depthwise), no dilation and equal strides use the op API's
 * CPU kernels (tensor/ops.h); others run as im2col + OpenBLAS sgemm, as MatMul and Gemm do. */
#ifndef SD_MODELS_ONNX_RUN_H
#define SD_MODELS_ONNX_RUN_H

#include <stdint.h>
#include <stddef.h>

#include "io/onnx.h"
#include "tensor/tensor.h"

typedef struct sd_onnx_val {
    int dt;                  /* 0 unset, SD_OV_F32, SD_OV_I64 */
    int nd;
    int64_t d[SD_ONNX_MAX_DIMS];
    int64_t n;
    void *p;
    int konst;               /* initializer (or folded constant): kept for the life of the runtime */
    int64_t cap;             /* bytes the buffer holds (0: unknown, never pooled) */
} sd_onnx_val;

enum { SD_OV_F32 = 1, SD_OV_I64 = 2 };

#define SD_ONNX_POOL_N 64
#define SD_ONNX_POOL_MAX_BYTES ((size_t)1 << 30)
typedef struct sd_onnx_pool {
    int n;
    void *p[SD_ONNX_POOL_N];
    size_t cap[SD_ONNX_POOL_N];
    size_t bytes;
} sd_onnx_pool;

typedef struct sd_onnx_run {
    char *path;
    sd_onnx_model m;
    int nvals;
    char **names;            /* value names (pointing into m) */
    sd_onnx_val *vals;
    int *hash, hcap;         /* name -> value index */
    int *order;              /* node indices in execution order */
    int **nin, **nout;       /* per node: value indices of inputs/outputs (-1 for "") */
    int *last;               /* per value: last position in `order` whose step reads it (-1 none) */
    int input, output;       /* the graph input (first non-initializer) and output 0 */
    sd_onnx_value_info in_info, out_info;
    /* the optimisation pass (models/onnx_opt.c) and the run's plan */
    int opt;                 /* the pass ran (SD_ONNX_NO_OPT not set) */
    int *fstart, *flist;     /* after step p, free the values flist[fstart[p] .. fstart[p+1]) */
    int *step;               /* per node: -1 run it, -2 skipped (folded), k >= 0 run fused[k] in its place */
    struct sd_onnx_fused *fused;
    int nfused;
    int stats[16];           /* what the pass did, by SD_ONNX_OPT_* kind */
    struct sd_onnx_pool *pool; /* freed intermediates' buffers, reused by the next run's allocations */
} sd_onnx_run;

/* Kinds of rewrite the optimisation pass counts in sd_onnx_run.stats. */
enum {
    SD_ONNX_OPT_FOLDED = 0,  /* nodes evaluated at open (constant folding of initializer-only subgraphs) */
    SD_ONNX_OPT_LAYERNORM,   /* decomposed LayerNorms -> one layer_norm */
    SD_ONNX_OPT_ACT,         /* Erf/Tanh GELU and Sigmoid·Mul SiLU patterns -> one activation */
    SD_ONNX_OPT_LINEAR,      /* MatMul(x, W) + bias [+ activation] -> one sgemm + epilogue */
    SD_ONNX_OPT_MATMUL_T,    /* [Mul(scalar)] + Transpose(last two axes) folded into a MatMul */
    SD_ONNX_OPT_CONV,        /* Conv + BatchNormalization (weights folded) [+ activation] */
    SD_ONNX_OPT_ATTENTION,   /* MatMul(Softmax(MatMul([Mul(q, s)], Transpose(k))), v) -> one attention kernel */
    SD_ONNX_OPT_NKINDS
};

/* Load `path`, resolve the graph, check every operator. Errors name the file. */
int sd_onnx_run_open(sd_onnx_run *r, const char *path);
/* Opening runs a graph-optimisation pass (models/onnx_opt.c): constant folding, the fusions counted
 * in `stats`, a last-use plan that frees or reuses each intermediate buffer (a pool kept across runs)
 * and moves (not copies) the data of a Reshape/Flatten/Squeeze/Unsqueeze/Identity whose input is not
 * read again. Every fused step checks its shapes when it runs and falls back to its original nodes
 * where they do not fit. The environment variable SD_ONNX_NO_OPT (set, not "0") turns the pass off:
 * every node runs as written (the reference the fused runs are tested against). */
/* The same for a parsed model (io/onnx.h), which *r takes over (freed by sd_onnx_run_close, or here on
 * an error); `name` names it in messages. */
int sd_onnx_run_open_model(sd_onnx_run *r, sd_onnx_model *m, const char *name);
void sd_onnx_run_close(sd_onnx_run *r);
/* Run on input x (float32, `nd` dims `shape`), y = output 0 converted to float32 (malloc'd,
 * *ynd dims in yshape). ctx: a CPU op context (convolutions). Errors name the file and node. */
int sd_onnx_run_forward(sd_onnx_run *r, sd_ctx *ctx, const float *x, int nd, const int64_t *shape, float **y,
                        int *ynd, int64_t *yshape);

#endif
