/* Internal to the ONNX runtime (models/onnx_run.c, onnx_ops.c: elementwise, casts, shape ops;
 * onnx_ops_nn.c: reductions, normalisations, matrix products, convolution, pooling): the value
 * helpers, the node context and the operator tables. Not an API. */
#ifndef SD_MODELS_ONNX_OPS_H
#define SD_MODELS_ONNX_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "models/onnx_run.h"

#define MAXD SD_ONNX_MAX_DIMS

typedef sd_onnx_val val;
typedef struct ectx {
    sd_onnx_run *r;
    sd_ctx *ctx;
    const sd_onnx_node *n;
    val **in; /* NULL for an omitted input */
    int nin;
    val **out; /* NULL for an omitted output */
    int nout;
    int opset;
    int steal; /* input 0 is read by no later step: a reshaping op may take its buffer */
} ectx;

typedef int (*opfn)(ectx *e);
typedef struct sd_onnx_opdef {
    const char *name;
    opfn fn;
} sd_onnx_opdef;

/* the operators of onnx_ops.c and onnx_ops_nn.c, each table ended by { NULL, NULL } */
extern const sd_onnx_opdef sd_onnx_ops_elem[], sd_onnx_ops_nn[];

#define F(v) ((float *)(v)->p)
#define IV(v) ((int64_t *)(v)->p)

/* broadcast iteration over up to 3 operands: coalesced axes, element strides (0 on broadcast axes) */
typedef struct bplan {
    int nd;
    int64_t d[MAXD];
    int64_t st[3][MAXD]; /* element strides of each operand (0 on broadcast axes) */
    int nop;
} bplan;

/* the helpers of onnx_ops.c, under internal names */
#define val_free sd_onnx_i_val_free
#define prod sd_onnx_i_prod
#define val_alloc sd_onnx_i_val_alloc
#define esz sd_onnx_i_esz
#define val_copy_shape sd_onnx_i_val_copy_shape
#define ints_of sd_onnx_i_ints_of
#define scalar_of sd_onnx_i_scalar_of
#define ai sd_onnx_i_ai
#define af sd_onnx_i_af
#define as sd_onnx_i_as
#define aints sd_onnx_i_aints
#define need_in sd_onnx_i_need_in
#define opt_in sd_onnx_i_opt_in
#define norm_axis sd_onnx_i_norm_axis
#define bshape sd_onnx_i_bshape
#define bplan_make sd_onnx_i_bplan_make
#define bplan_row sd_onnx_i_bplan_row
#define permute sd_onnx_i_permute
#define expand_to sd_onnx_i_expand_to
#define val_from_tensor sd_onnx_i_val_from_tensor
#define val_view sd_onnx_i_val_view

void val_free(val *v);
int64_t prod(const int64_t *d, int a, int b);
int val_alloc(val *v, int dt, int nd, const int64_t *d);
size_t esz(const val *v);
int val_copy_shape(val *o, const val *a, int nd, const int64_t *d);
int ints_of(const val *v, int64_t *out, int max, int *n, const char *what);
double scalar_of(const val *v);
int64_t ai(ectx *e, const char *name, int64_t def);
float af(ectx *e, const char *name, float def);
const char *as(ectx *e, const char *name, const char *def);
int aints(ectx *e, const char *name, int64_t *out, int max);
int need_in(ectx *e, int k, int dt);
val *opt_in(ectx *e, int k);
int norm_axis(int64_t ax, int nd, int64_t *out);
int bshape(const val **ops, int nop, int *nd, int64_t *d);
void bplan_make(bplan *p, const val **ops, int nop, int nd, const int64_t *d);
void bplan_row(const bplan *p, int64_t row, int64_t *off);
void permute(void *dst, const void *src, size_t es, int nd, const int64_t *d, const int *perm);
int expand_to(val *o, const val *a, int nd, const int64_t *d);
int val_from_tensor(val *o, const sd_onnx_tensor *t);
/* out 0 = input 0 with dims d (same count): the buffer moved when e->steal, else copied */
int val_view(ectx *e, int nd, const int64_t *d);
/* the pool that val_alloc/val_free use on this thread (NULL: plain malloc/free) */
void sd_onnx_pool_use(sd_onnx_pool *p);
void sd_onnx_pool_free(sd_onnx_pool *p);

/* ---- the optimisation pass (onnx_opt.c) ------------------------------------------------------ */

enum { FK_NONE = 0, FK_LAYERNORM, FK_ACT, FK_LINEAR, FK_MATMUL_T, FK_CONV, FK_ATTN };
#define FUSED_MAXMEM 32

/* One fused step: runs in place of its last member node (`anchor`); its members are the nodes it
 * replaces, in execution order, which run as written when a shape does not fit the fused kernel. */
typedef struct sd_onnx_fused {
    int kind;
    int in[3];               /* value indices (-1 none): LAYERNORM x, gamma, beta; ACT x; LINEAR x, W, bias;
                                MATMUL_T a, b-before-the-transpose; CONV x, W, B (of the Conv node);
                                ATTN q (before the scale), k (before the transpose), v */
    int out;
    int act;                 /* sd_act, or FUSED_RELU */
    float alpha, eps;
    int64_t axis;            /* LAYERNORM: the ReduceMean axis as written; MATMUL_T: the rank; ATTN: the
                                Softmax axis as written */
    int conv;                /* CONV: the Conv node (its attributes) */
    val w, b;                /* CONV with a BatchNormalization: the folded weight and bias */
    int folded;              /* CONV: w, b hold folded weights */
    int nmem, mem[FUSED_MAXMEM];
    int anchor;
} sd_onnx_fused;
#define FUSED_RELU 100

/* run the pass over an opened graph (r->order, nin, nout set): fills r->step, r->fused, r->stats */
int sd_onnx_opt_run(sd_onnx_run *r);
void sd_onnx_opt_free(sd_onnx_run *r);
/* one fused step; SD_OK with *fallback set when it must run its member nodes instead */
int sd_onnx_fused_exec(sd_onnx_run *r, sd_ctx *ctx, sd_onnx_fused *f, int *fallback);
/* one node of the graph (onnx_run.c): steal = its input 0 may be moved */
int sd_onnx_i_run_node(sd_onnx_run *r, sd_ctx *ctx, int i, int steal);
opfn sd_onnx_i_find_op(const char *name);

#endif
