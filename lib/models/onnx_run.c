/* ONNX graph interpreter (models/onnx_run.h). */
#include "models/onnx_run.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/kern.h" /* the kernels' fast expf/erff/tanhf (|error| < 2e-7) */
#include "tensor/ops.h"

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
} ectx;

typedef int (*opfn)(ectx *e);

/* ---- values ----------------------------------------------------------------------------------- */

static void val_free(val *v)
{
    if (v->konst) return;
    free(v->p);
    memset(v, 0, sizeof *v);
}

static int64_t prod(const int64_t *d, int a, int b)
{
    int64_t p = 1;
    for (int i = a; i < b; i++) p *= d[i];
    return p;
}

static int val_alloc(val *v, int dt, int nd, const int64_t *d)
{
    if (nd < 0 || nd > MAXD) return sd_err(SD_EUNSUPPORTED, "%d dimensions (at most %d)", nd, MAXD);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) {
        if (d[i] < 0 || (d[i] && n > ((int64_t)1 << 32) / d[i]))
            return sd_err(SD_ERANGE, "bad or too large shape (over 2^32 elements)");
        n *= d[i];
    }
    free(v->p);
    memset(v, 0, sizeof *v);
    v->dt = dt;
    v->nd = nd;
    for (int i = 0; i < nd; i++) v->d[i] = d[i];
    v->n = n;
    v->p = malloc((size_t)(n ? n : 1) * (dt == SD_OV_F32 ? 4 : 8));
    if (!v->p) return sd_err(SD_ENOMEM, "out of memory (%lld elements)", (long long)n);
    return SD_OK;
}

static size_t esz(const val *v) { return v->dt == SD_OV_F32 ? 4 : 8; }
#define F(v) ((float *)(v)->p)
#define IV(v) ((int64_t *)(v)->p)

/* copy of `a` with another shape (Reshape, Squeeze, ...) */
static int val_copy_shape(val *o, const val *a, int nd, const int64_t *d)
{
    int rc = val_alloc(o, a->dt, nd, d);
    if (rc) return rc;
    if (o->n != a->n)
        return sd_err(SD_EFORMAT, "cannot reshape %lld elements to %lld", (long long)a->n, (long long)o->n);
    memcpy(o->p, a->p, (size_t)a->n * esz(a));
    return SD_OK;
}

/* an int64 list from a 0-D/1-D tensor */
static int ints_of(const val *v, int64_t *out, int max, int *n, const char *what)
{
    if (!v || v->dt != SD_OV_I64) return sd_err(SD_EFORMAT, "%s must be an int64 tensor", what);
    if (v->nd > 1 || v->n > max) return sd_err(SD_EFORMAT, "%s must be a list of at most %d", what, max);
    for (int64_t i = 0; i < v->n; i++) out[i] = IV(v)[i];
    *n = (int)v->n;
    return SD_OK;
}

static double scalar_of(const val *v) { return v->dt == SD_OV_F32 ? (double)F(v)[0] : (double)IV(v)[0]; }

/* ---- attributes ---------------------------------------------------------------------------- */

static int64_t ai(ectx *e, const char *name, int64_t def)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    return a && a->type == SD_ONNX_ATTR_INT ? a->i : def;
}
static float af(ectx *e, const char *name, float def)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    return a && a->type == SD_ONNX_ATTR_FLOAT ? a->f : def;
}
static const char *as(ectx *e, const char *name, const char *def)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    return a && a->type == SD_ONNX_ATTR_STRING ? a->s : def;
}
/* INTS attribute: count (-1 absent) */
static int aints(ectx *e, const char *name, int64_t *out, int max)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    if (!a || a->type != SD_ONNX_ATTR_INTS) return -1;
    int n = a->n < max ? a->n : max;
    for (int i = 0; i < n; i++) out[i] = a->ints[i];
    return a->n > max ? -2 : n;
}

static int need_in(ectx *e, int k, int dt)
{
    if (k >= e->nin || !e->in[k]) return sd_err(SD_EFORMAT, "input %d is missing", k);
    if (dt && e->in[k]->dt != dt)
        return sd_err(SD_EUNSUPPORTED, "input %d is %s, expected %s", k,
                      e->in[k]->dt == SD_OV_F32 ? "float" : "integer", dt == SD_OV_F32 ? "float" : "integer");
    return SD_OK;
}
static val *opt_in(ectx *e, int k) { return k < e->nin ? e->in[k] : NULL; }

static int norm_axis(int64_t ax, int nd, int64_t *out)
{
    *out = 0;
    if (ax < -nd || ax >= (nd ? nd : 1))
        return sd_err(SD_EFORMAT, "axis %lld out of range for %d dimensions", (long long)ax, nd);
    *out = ax < 0 ? ax + nd : ax;
    return SD_OK;
}

/* ---- broadcasting ------------------------------------------------------------------------- */

typedef struct bplan {
    int nd;
    int64_t d[MAXD];
    int64_t st[3][MAXD]; /* element strides of each operand (0 on broadcast axes) */
    int nop;
} bplan;

static int bshape(const val **ops, int nop, int *nd, int64_t *d)
{
    int r = 0;
    for (int k = 0; k < nop; k++)
        if (ops[k]->nd > r) r = ops[k]->nd;
    for (int i = 0; i < r; i++) {
        int64_t dim = 1;
        for (int k = 0; k < nop; k++) {
            int j = i - (r - ops[k]->nd);
            int64_t x = j >= 0 ? ops[k]->d[j] : 1;
            if (x == dim || x == 1) continue;
            if (dim == 1)
                dim = x;
            else
                return sd_err(SD_EFORMAT, "shapes cannot broadcast (%lld vs %lld on axis %d)", (long long)dim,
                              (long long)x, i);
        }
        d[i] = dim;
    }
    *nd = r;
    return SD_OK;
}

static void bplan_make(bplan *p, const val **ops, int nop, int nd, const int64_t *d)
{
    int64_t st[3][MAXD];
    for (int k = 0; k < nop; k++) {
        int64_t s = 1;
        for (int i = nd - 1; i >= 0; i--) {
            int j = i - (nd - ops[k]->nd);
            int64_t x = j >= 0 ? ops[k]->d[j] : 1;
            st[k][i] = x == 1 ? 0 : s;
            s *= x;
        }
    }
    /* coalesce adjacent axes that are contiguous for every operand; drop size-1 axes */
    p->nd = 0;
    p->nop = nop;
    for (int i = 0; i < nd; i++) {
        if (d[i] == 1) continue;
        int q = p->nd;
        if (q > 0) {
            int ok = 1;
            for (int k = 0; k < nop; k++)
                if (p->st[k][q - 1] != st[k][i] * d[i]) ok = 0;
            if (ok) {
                p->d[q - 1] *= d[i];
                for (int k = 0; k < nop; k++) p->st[k][q - 1] = st[k][i];
                continue;
            }
        }
        p->d[q] = d[i];
        for (int k = 0; k < nop; k++) p->st[k][q] = st[k][i];
        p->nd++;
    }
    if (p->nd == 0) {
        p->nd = 1;
        p->d[0] = 1;
        for (int k = 0; k < nop; k++) p->st[k][0] = 0;
    }
}

/* offsets of each operand at the start of outer row `row` (all axes but the last) */
static void bplan_row(const bplan *p, int64_t row, int64_t *off)
{
    for (int k = 0; k < p->nop; k++) off[k] = 0;
    for (int i = p->nd - 2; i >= 0; i--) {
        int64_t c = row % p->d[i];
        row /= p->d[i];
        for (int k = 0; k < p->nop; k++) off[k] += c * p->st[k][i];
    }
}

enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN, B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND, B_OR, B_MOD };

static inline float fbin(int op, float a, float b)
{
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_POW: return b == 2.0f ? a * a : b == 0.5f ? sqrtf(a) : b == 1.0f ? a : b == 3.0f ? a * a * a : powf(a, b);
    case B_MAX: return a > b || isnan(a) ? a : b;
    case B_MIN: return a < b || isnan(a) ? a : b;
    case B_MOD: return fmodf(a, b);
    }
    return 0;
}

static inline int64_t ibin(int op, int64_t a, int64_t b, int *bad)
{
    switch (op) {
    case B_ADD: return (int64_t)((uint64_t)a + (uint64_t)b);
    case B_SUB: return (int64_t)((uint64_t)a - (uint64_t)b);
    case B_MUL: return (int64_t)((uint64_t)a * (uint64_t)b);
    case B_DIV:
    case B_MOD:
        if (b == 0 || (a == INT64_MIN && b == -1)) {
            *bad = 1;
            return 0;
        }
        if (op == B_DIV) return a / b;
        {
            int64_t m = a % b;
            return m && ((m < 0) != (b < 0)) ? m + b : m;
        }
    case B_POW: {
        int64_t r = 1;
        for (int64_t i = 0; i < b && i < 64; i++) r = (int64_t)((uint64_t)r * (uint64_t)a);
        return r;
    }
    case B_MAX: return a > b ? a : b;
    case B_MIN: return a < b ? a : b;
    case B_AND: return a && b;
    case B_OR: return a || b;
    }
    return 0;
}

static inline int64_t cmp(int op, double a, double b)
{
    switch (op) {
    case B_EQ: return a == b;
    case B_LT: return a < b;
    case B_GT: return a > b;
    case B_LE: return a <= b;
    case B_GE: return a >= b;
    }
    return 0;
}

static int binary(ectx *e, int op, val *o, const val *a, const val *b)
{
    if (a->dt != b->dt) return sd_err(SD_EFORMAT, "operands of different types");
    const val *ops[2] = { a, b };
    int nd;
    int64_t d[MAXD];
    int rc = bshape(ops, 2, &nd, d);
    if (rc) return rc;
    int is_cmp = op >= B_EQ && op <= B_GE, is_logic = op == B_AND || op == B_OR;
    if (is_logic && a->dt != SD_OV_I64) return sd_err(SD_EFORMAT, "And/Or need bool inputs");
    val t = { 0 };
    rc = val_alloc(&t, is_cmp ? SD_OV_I64 : a->dt, nd, d);
    if (rc) return rc;
    bplan p;
    bplan_make(&p, ops, 2, nd, d);
    int64_t inner = p.d[p.nd - 1], rows = t.n / (inner ? inner : 1), sa = p.st[0][p.nd - 1], sb = p.st[1][p.nd - 1];
    int bad = 0;
    if (t.n) {
#pragma omp parallel for schedule(static) if (t.n > 65536) reduction(| : bad)
        for (int64_t row = 0; row < rows; row++) {
            int64_t off[3];
            bplan_row(&p, row, off);
            int64_t base = row * inner;
            if (a->dt == SD_OV_F32) {
                const float *x = F(a) + off[0], *y = F(b) + off[1];
                if (is_cmp) {
                    for (int64_t j = 0; j < inner; j++) IV(&t)[base + j] = cmp(op, x[j * sa], y[j * sb]);
                } else {
                    float *z = F(&t) + base;
                    if (sa == 1 && sb == 1) {
                        switch (op) {
                        case B_ADD:
                            for (int64_t j = 0; j < inner; j++) z[j] = x[j] + y[j];
                            break;
                        case B_MUL:
                            for (int64_t j = 0; j < inner; j++) z[j] = x[j] * y[j];
                            break;
                        case B_SUB:
                            for (int64_t j = 0; j < inner; j++) z[j] = x[j] - y[j];
                            break;
                        default:
                            for (int64_t j = 0; j < inner; j++) z[j] = fbin(op, x[j], y[j]);
                        }
                    } else if (sa == 1 && sb == 0) {
                        float c = y[0];
                        switch (op) {
                        case B_ADD:
                            for (int64_t j = 0; j < inner; j++) z[j] = x[j] + c;
                            break;
                        case B_MUL:
                            for (int64_t j = 0; j < inner; j++) z[j] = x[j] * c;
                            break;
                        default:
                            for (int64_t j = 0; j < inner; j++) z[j] = fbin(op, x[j], c);
                        }
                    } else {
                        for (int64_t j = 0; j < inner; j++) z[j] = fbin(op, x[j * sa], y[j * sb]);
                    }
                }
            } else {
                const int64_t *x = IV(a) + off[0], *y = IV(b) + off[1];
                int64_t *z = IV(&t) + base;
                int lb = 0;
                for (int64_t j = 0; j < inner; j++)
                    z[j] = is_cmp ? cmp(op, (double)x[j * sa], (double)y[j * sb]) : ibin(op, x[j * sa], y[j * sb], &lb);
                bad |= lb;
            }
        }
    }
    (void)e;
    if (bad) {
        free(t.p);
        return sd_err(SD_EFORMAT, "integer division by zero");
    }
    free(o->p);
    *o = t;
    return SD_OK;
}

static int op_binary(ectx *e, int op)
{
    int rc = need_in(e, 0, 0);
    if (!rc) rc = need_in(e, 1, 0);
    if (rc) return rc;
    if (op == B_POW && e->in[0]->dt == SD_OV_F32 && e->in[1]->dt == SD_OV_I64) {
        val c = { 0 };
        rc = val_alloc(&c, SD_OV_F32, e->in[1]->nd, e->in[1]->d);
        if (rc) return rc;
        for (int64_t i = 0; i < c.n; i++) F(&c)[i] = (float)IV(e->in[1])[i];
        rc = binary(e, op, e->out[0], e->in[0], &c);
        free(c.p);
        return rc;
    }
    return binary(e, op, e->out[0], e->in[0], e->in[1]);
}

static int op_add(ectx *e) { return op_binary(e, B_ADD); }
static int op_sub(ectx *e) { return op_binary(e, B_SUB); }
static int op_mul(ectx *e) { return op_binary(e, B_MUL); }
static int op_div(ectx *e) { return op_binary(e, B_DIV); }
static int op_pow(ectx *e) { return op_binary(e, B_POW); }
static int op_eq(ectx *e) { return op_binary(e, B_EQ); }
static int op_lt(ectx *e) { return op_binary(e, B_LT); }
static int op_gt(ectx *e) { return op_binary(e, B_GT); }
static int op_le(ectx *e) { return op_binary(e, B_LE); }
static int op_ge(ectx *e) { return op_binary(e, B_GE); }
static int op_and(ectx *e) { return op_binary(e, B_AND); }
static int op_or(ectx *e) { return op_binary(e, B_OR); }
static int op_mod(ectx *e)
{
    if (ai(e, "fmod", 0) == 0 && e->nin > 0 && e->in[0] && e->in[0]->dt == SD_OV_F32)
        return sd_err(SD_EUNSUPPORTED, "float Mod needs fmod=1");
    return op_binary(e, B_MOD);
}

/* variadic Max/Min/Sum/Mean: fold pairwise */
static int variadic(ectx *e, int op, int mean)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    val acc = { 0 };
    rc = val_alloc(&acc, e->in[0]->dt, e->in[0]->nd, e->in[0]->d);
    if (rc) return rc;
    memcpy(acc.p, e->in[0]->p, (size_t)acc.n * esz(&acc));
    for (int k = 1; !rc && k < e->nin; k++) {
        if (!e->in[k]) continue;
        val t = { 0 };
        rc = binary(e, op, &t, &acc, e->in[k]);
        free(acc.p);
        acc = t;
    }
    if (!rc && mean) {
        if (acc.dt != SD_OV_F32) rc = sd_err(SD_EUNSUPPORTED, "integer Mean");
        for (int64_t i = 0; !rc && i < acc.n; i++) F(&acc)[i] /= (float)e->nin;
    }
    if (rc) {
        free(acc.p);
        return rc;
    }
    free(e->out[0]->p);
    *e->out[0] = acc;
    return SD_OK;
}
static int op_max(ectx *e) { return variadic(e, B_MAX, 0); }
static int op_min(ectx *e) { return variadic(e, B_MIN, 0); }
static int op_sum(ectx *e) { return variadic(e, B_ADD, 0); }
static int op_mean(ectx *e) { return variadic(e, B_ADD, 1); }

static int op_where(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_I64);
    if (!rc) rc = need_in(e, 1, 0);
    if (!rc) rc = need_in(e, 2, 0);
    if (rc) return rc;
    const val *ops[3] = { e->in[0], e->in[1], e->in[2] };
    if (ops[1]->dt != ops[2]->dt) return sd_err(SD_EFORMAT, "Where: X and Y of different types");
    int nd;
    int64_t d[MAXD];
    if ((rc = bshape(ops, 3, &nd, d))) return rc;
    if ((rc = val_alloc(e->out[0], ops[1]->dt, nd, d))) return rc;
    bplan p;
    bplan_make(&p, ops, 3, nd, d);
    int64_t inner = p.d[p.nd - 1], rows = e->out[0]->n / (inner ? inner : 1);
    size_t es = esz(ops[1]);
    for (int64_t row = 0; row < rows && inner; row++) {
        int64_t off[3];
        bplan_row(&p, row, off);
        for (int64_t j = 0; j < inner; j++) {
            int c = IV(ops[0])[off[0] + j * p.st[0][p.nd - 1]] != 0;
            const val *s = c ? ops[1] : ops[2];
            int64_t so = c ? off[1] + j * p.st[1][p.nd - 1] : off[2] + j * p.st[2][p.nd - 1];
            memcpy((char *)e->out[0]->p + (size_t)(row * inner + j) * es, (const char *)s->p + (size_t)so * es, es);
        }
    }
    return SD_OK;
}

/* ---- unary ------------------------------------------------------------------------------- */

enum {
    U_SQRT,
    U_ERF,
    U_TANH,
    U_SIGMOID,
    U_RELU,
    U_EXP,
    U_LOG,
    U_NEG,
    U_RECIP,
    U_ABS,
    U_FLOOR,
    U_CEIL,
    U_ROUND,
    U_SIN,
    U_COS,
    U_SIGN,
    U_SOFTPLUS,
    U_LEAKY,
    U_ELU,
    U_HSIG,
    U_HSWISH,
    U_GELU,
    U_GELU_TANH,
    U_CLIP,
    U_NOT
};

static int unary(ectx *e, int op, float p1, float p2)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const val *a = e->in[0];
    val *o = e->out[0];
    if (a->dt == SD_OV_I64) {
        if (op != U_NEG && op != U_ABS && op != U_NOT && op != U_RELU && op != U_SIGN && op != U_CLIP)
            return sd_err(SD_EUNSUPPORTED, "integer input");
        if ((rc = val_alloc(o, SD_OV_I64, a->nd, a->d))) return rc;
        for (int64_t i = 0; i < a->n; i++) {
            int64_t x = IV(a)[i];
            IV(o)
            [i] = op == U_NEG    ? (int64_t)(0 - (uint64_t)x)
                  : op == U_ABS  ? (x < 0 ? (int64_t)(0 - (uint64_t)x) : x)
                  : op == U_NOT  ? !x
                  : op == U_RELU ? (x > 0 ? x : 0)
                  : op == U_SIGN ? (x > 0) - (x < 0)
                                 : (x < p1   ? (int64_t)p1
                                    : x > p2 ? (int64_t)p2
                                             : x);
        }
        return SD_OK;
    }
    if (op == U_NOT) return sd_err(SD_EFORMAT, "Not needs a bool input");
    if ((rc = val_alloc(o, SD_OV_F32, a->nd, a->d))) return rc;
    const float *x = F(a);
    float *y = F(o);
    int64_t n = a->n;
    /* the hot ones of the tagger graphs (GELUs, sigmoids) in loops the compiler vectorises */
    switch (op) {
    case U_TANH:
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) y[i] = sd_fast_tanhf(x[i]);
        return SD_OK;
    case U_ERF:
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) y[i] = sd_fast_erff(x[i]);
        return SD_OK;
    case U_EXP:
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) y[i] = sd_fast_expf(x[i]);
        return SD_OK;
    case U_SIGMOID:
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + sd_fast_expf(-x[i]));
        return SD_OK;
    }
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], r = 0;
        switch (op) {
        case U_SQRT: r = sqrtf(v); break;
        case U_RELU: r = v > 0 ? v : 0; break;
        case U_LOG: r = logf(v); break;
        case U_NEG: r = -v; break;
        case U_RECIP: r = 1.0f / v; break;
        case U_ABS: r = fabsf(v); break;
        case U_FLOOR: r = floorf(v); break;
        case U_CEIL: r = ceilf(v); break;
        case U_ROUND: r = nearbyintf(v); break;
        case U_SIN: r = sinf(v); break;
        case U_COS: r = cosf(v); break;
        case U_SIGN: r = (float)((v > 0) - (v < 0)); break;
        case U_SOFTPLUS: r = v > 20 ? v : log1pf(expf(v)); break;
        case U_LEAKY: r = v >= 0 ? v : p1 * v; break;
        case U_ELU: r = v >= 0 ? v : p1 * (expf(v) - 1); break;
        case U_HSIG: r = fmaxf(0, fminf(1, p1 * v + p2)); break;
        case U_HSWISH: r = v * fmaxf(0, fminf(1, v / 6.0f + 0.5f)); break;
        case U_GELU: r = 0.5f * v * (1.0f + sd_fast_erff(v * 0.70710678118654752f)); break;
        case U_GELU_TANH:
            r = 0.5f * v * (1.0f + sd_fast_tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
            break;
        case U_CLIP: r = v < p1 ? p1 : v > p2 ? p2 : v; break;
        }
        y[i] = r;
    }
    return SD_OK;
}

static int op_sqrt(ectx *e) { return unary(e, U_SQRT, 0, 0); }
static int op_erf(ectx *e) { return unary(e, U_ERF, 0, 0); }
static int op_tanh(ectx *e) { return unary(e, U_TANH, 0, 0); }
static int op_sigmoid(ectx *e) { return unary(e, U_SIGMOID, 0, 0); }
static int op_relu(ectx *e) { return unary(e, U_RELU, 0, 0); }
static int op_exp(ectx *e) { return unary(e, U_EXP, 0, 0); }
static int op_log(ectx *e) { return unary(e, U_LOG, 0, 0); }
static int op_neg(ectx *e) { return unary(e, U_NEG, 0, 0); }
static int op_recip(ectx *e) { return unary(e, U_RECIP, 0, 0); }
static int op_abs(ectx *e) { return unary(e, U_ABS, 0, 0); }
static int op_floor(ectx *e) { return unary(e, U_FLOOR, 0, 0); }
static int op_ceil(ectx *e) { return unary(e, U_CEIL, 0, 0); }
static int op_round(ectx *e) { return unary(e, U_ROUND, 0, 0); }
static int op_sin(ectx *e) { return unary(e, U_SIN, 0, 0); }
static int op_cos(ectx *e) { return unary(e, U_COS, 0, 0); }
static int op_sign(ectx *e) { return unary(e, U_SIGN, 0, 0); }
static int op_not(ectx *e) { return unary(e, U_NOT, 0, 0); }
static int op_softplus(ectx *e) { return unary(e, U_SOFTPLUS, 0, 0); }
static int op_leaky(ectx *e) { return unary(e, U_LEAKY, af(e, "alpha", 0.01f), 0); }
static int op_elu(ectx *e) { return unary(e, U_ELU, af(e, "alpha", 1.0f), 0); }
static int op_hsig(ectx *e) { return unary(e, U_HSIG, af(e, "alpha", 0.2f), af(e, "beta", 0.5f)); }
static int op_hswish(ectx *e) { return unary(e, U_HSWISH, 0, 0); }
static int op_gelu(ectx *e)
{
    const char *ap = as(e, "approximate", "none");
    if (strcmp(ap, "none") && strcmp(ap, "tanh")) return sd_err(SD_EUNSUPPORTED, "Gelu approximate='%s'", ap);
    return unary(e, strcmp(ap, "tanh") ? U_GELU : U_GELU_TANH, 0, 0);
}
static int op_clip(ectx *e)
{
    float lo = -INFINITY, hi = INFINITY;
    if (e->opset < 11) {
        lo = af(e, "min", lo);
        hi = af(e, "max", hi);
    } else {
        val *a = opt_in(e, 1), *b = opt_in(e, 2);
        if (a && a->n) lo = (float)scalar_of(a);
        if (b && b->n) hi = (float)scalar_of(b);
    }
    if (e->nin > 0 && e->in[0] && e->in[0]->dt == SD_OV_I64) {
        if (lo < -9e18f) lo = -9e18f;
        if (hi > 9e18f) hi = 9e18f;
    }
    return unary(e, U_CLIP, lo, hi);
}

/* Identity, Dropout (inference), CastLike's data path */
static int op_identity(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    if (!strcmp(e->n->op_type, "Dropout") && e->nout > 1 && e->out[1]) {
        rc = val_alloc(e->out[1], SD_OV_I64, e->in[0]->nd, e->in[0]->d);
        if (!rc)
            for (int64_t i = 0; i < e->out[1]->n; i++) IV(e->out[1])[i] = 1;
        if (rc) return rc;
    }
    return val_copy_shape(e->out[0], e->in[0], e->in[0]->nd, e->in[0]->d);
}

/* ---- casts and constants --------------------------------------------------------------------- */

static int cast_to(val *o, const val *a, int64_t to)
{
    int isf = to == SD_ONNX_FLOAT || to == SD_ONNX_FLOAT16 || to == SD_ONNX_BFLOAT16 || to == SD_ONNX_DOUBLE;
    int isi = to == SD_ONNX_INT64 || to == SD_ONNX_INT32 || to == SD_ONNX_INT16 || to == SD_ONNX_INT8 ||
              to == SD_ONNX_UINT8 || to == SD_ONNX_UINT16 || to == SD_ONNX_UINT32 || to == SD_ONNX_UINT64 ||
              to == SD_ONNX_BOOL;
    if (!isf && !isi) return sd_err(SD_EUNSUPPORTED, "Cast to %s", sd_onnx_dtype_name((int)to));
    int rc = val_alloc(o, isf ? SD_OV_F32 : SD_OV_I64, a->nd, a->d);
    if (rc) return rc;
    for (int64_t i = 0; i < a->n; i++) {
        if (isf) {
            float v = a->dt == SD_OV_F32 ? F(a)[i] : (float)IV(a)[i];
            if (to == SD_ONNX_FLOAT16)
                v = sd_round_f16(v);
            else if (to == SD_ONNX_BFLOAT16)
                v = sd_round_bf16(v);
            F(o)[i] = v;
        } else {
            int64_t v;
            if (a->dt == SD_OV_F32) {
                float f = F(a)[i];
                v = to == SD_ONNX_BOOL ? f != 0
                    : isnan(f)         ? 0
                    : f >= 9.2e18f     ? INT64_MAX
                    : f <= -9.2e18f    ? INT64_MIN
                                       : (int64_t)f;
            } else {
                v = IV(a)[i];
            }
            switch (to) {
            case SD_ONNX_BOOL: v = v != 0; break;
            case SD_ONNX_INT32: v = (int32_t)(uint32_t)(uint64_t)v; break;
            case SD_ONNX_INT16: v = (int16_t)(uint16_t)(uint64_t)v; break;
            case SD_ONNX_INT8: v = (int8_t)(uint8_t)(uint64_t)v; break;
            case SD_ONNX_UINT8: v = (uint8_t)(uint64_t)v; break;
            case SD_ONNX_UINT16: v = (uint16_t)(uint64_t)v; break;
            case SD_ONNX_UINT32: v = (uint32_t)(uint64_t)v; break;
            }
            IV(o)[i] = v;
        }
    }
    return SD_OK;
}

static int op_cast(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const sd_onnx_attr *t = sd_onnx_attr_find(e->n, "to");
    if (!t || t->type != SD_ONNX_ATTR_INT) return sd_err(SD_EFORMAT, "Cast without 'to'");
    return cast_to(e->out[0], e->in[0], t->i);
}

static int op_castlike(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (!rc) rc = need_in(e, 1, 0);
    if (rc) return rc;
    return cast_to(e->out[0], e->in[0], e->in[1]->dt == SD_OV_F32 ? SD_ONNX_FLOAT : SD_ONNX_INT64);
}

static int val_from_tensor(val *o, const sd_onnx_tensor *t)
{
    int isf = t->dtype == SD_ONNX_FLOAT || t->dtype == SD_ONNX_FLOAT16 || t->dtype == SD_ONNX_BFLOAT16 ||
              t->dtype == SD_ONNX_DOUBLE;
    int rc = val_alloc(o, isf ? SD_OV_F32 : SD_OV_I64, t->ndim, t->dims);
    if (rc) return rc;
    if (t->count) memcpy(o->p, t->data, (size_t)t->count * esz(o));
    return SD_OK;
}

static int op_constant(ectx *e)
{
    const sd_onnx_attr *a = NULL;
    for (int i = 0; i < e->n->nattr; i++)
        if (strcmp(e->n->attrs[i].name, "doc_string")) a = &e->n->attrs[i];
    if (!a) return sd_err(SD_EFORMAT, "Constant without a value");
    if (!strcmp(a->name, "value") && a->t) return val_from_tensor(e->out[0], a->t);
    int rc;
    int64_t one = 1;
    if (!strcmp(a->name, "value_float")) {
        if ((rc = val_alloc(e->out[0], SD_OV_F32, 0, NULL))) return rc;
        F(e->out[0])[0] = a->f;
    } else if (!strcmp(a->name, "value_int")) {
        if ((rc = val_alloc(e->out[0], SD_OV_I64, 0, NULL))) return rc;
        IV(e->out[0])[0] = a->i;
    } else if (!strcmp(a->name, "value_floats")) {
        one = a->n;
        if ((rc = val_alloc(e->out[0], SD_OV_F32, 1, &one))) return rc;
        for (int i = 0; i < a->n; i++) F(e->out[0])[i] = a->floats[i];
    } else if (!strcmp(a->name, "value_ints")) {
        one = a->n;
        if ((rc = val_alloc(e->out[0], SD_OV_I64, 1, &one))) return rc;
        for (int i = 0; i < a->n; i++) IV(e->out[0])[i] = a->ints[i];
    } else {
        return sd_err(SD_EUNSUPPORTED, "Constant attribute '%s'", a->name);
    }
    return SD_OK;
}

static int op_constant_of_shape(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_I64);
    int64_t d[MAXD];
    int nd;
    if (!rc) rc = ints_of(e->in[0], d, MAXD, &nd, "ConstantOfShape shape");
    if (rc) return rc;
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, "value");
    val v = { 0 };
    if (a && a->t) {
        if ((rc = val_from_tensor(&v, a->t))) return rc;
        if (v.n != 1) {
            free(v.p);
            return sd_err(SD_EFORMAT, "ConstantOfShape value must have one element");
        }
    }
    rc = val_alloc(e->out[0], a && a->t ? v.dt : SD_OV_F32, nd, d);
    for (int64_t i = 0; !rc && i < e->out[0]->n; i++) {
        if (e->out[0]->dt == SD_OV_F32)
            F(e->out[0])[i] = a && a->t ? F(&v)[0] : 0.0f;
        else
            IV(e->out[0])[i] = IV(&v)[0];
    }
    free(v.p);
    return rc;
}

static int op_shape(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    int nd = e->in[0]->nd;
    int64_t s = ai(e, "start", 0), en = ai(e, "end", nd);
    if (s < 0) s += nd;
    if (en < 0) en += nd;
    s = s < 0 ? 0 : s > nd ? nd : s;
    en = en < 0 ? 0 : en > nd ? nd : en;
    int64_t n = en > s ? en - s : 0;
    if ((rc = val_alloc(e->out[0], SD_OV_I64, 1, &n))) return rc;
    for (int64_t i = 0; i < n; i++) IV(e->out[0])[i] = e->in[0]->d[s + i];
    return SD_OK;
}

static int op_size(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (!rc) rc = val_alloc(e->out[0], SD_OV_I64, 0, NULL);
    if (!rc) IV(e->out[0])[0] = e->in[0]->n;
    return rc;
}

static int op_range(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (!rc) rc = need_in(e, 1, 0);
    if (!rc) rc = need_in(e, 2, 0);
    if (rc) return rc;
    double s = scalar_of(e->in[0]), l = scalar_of(e->in[1]), d = scalar_of(e->in[2]);
    if (d == 0) return sd_err(SD_EFORMAT, "Range with delta 0");
    double c = ceil((l - s) / d);
    int64_t n = c > 0 ? (int64_t)c : 0;
    if (n > ((int64_t)1 << 32)) return sd_err(SD_ERANGE, "Range of %lld elements", (long long)n);
    int dt = e->in[0]->dt;
    if ((rc = val_alloc(e->out[0], dt, 1, &n))) return rc;
    for (int64_t i = 0; i < n; i++) {
        if (dt == SD_OV_F32)
            F(e->out[0])[i] = (float)(s + (double)i * d);
        else
            IV(e->out[0])[i] = (int64_t)((uint64_t)IV(e->in[0])[0] + (uint64_t)i * (uint64_t)IV(e->in[2])[0]);
    }
    return SD_OK;
}

/* ---- shape ops ----------------------------------------------------------------------------- */

static int op_reshape(ectx *e)
{
    int rc = need_in(e, 0, 0);
    int64_t d[MAXD];
    int nd;
    if (!rc) rc = need_in(e, 1, SD_OV_I64);
    if (!rc) rc = ints_of(e->in[1], d, MAXD, &nd, "Reshape shape");
    if (rc) return rc;
    const val *a = e->in[0];
    int allowzero = (int)ai(e, "allowzero", 0), neg = -1;
    int64_t known = 1;
    for (int i = 0; i < nd; i++) {
        if (d[i] == 0 && !allowzero) {
            if (i >= a->nd) return sd_err(SD_EFORMAT, "Reshape copies axis %d of a %d-D input", i, a->nd);
            d[i] = a->d[i];
        }
        if (d[i] == -1) {
            if (neg >= 0) return sd_err(SD_EFORMAT, "Reshape with two -1");
            neg = i;
        } else if (d[i] < 0) {
            return sd_err(SD_EFORMAT, "Reshape to a negative size");
        } else {
            if (d[i] > ((int64_t)1 << 32) || (d[i] && known > ((int64_t)1 << 32) / d[i]))
                return sd_err(SD_ERANGE, "Reshape to a too large shape");
            known *= d[i];
        }
    }
    if (neg >= 0) {
        if (known == 0 || a->n % known) return sd_err(SD_EFORMAT, "cannot reshape %lld elements", (long long)a->n);
        d[neg] = a->n / known;
    }
    return val_copy_shape(e->out[0], a, nd, d);
}

static int op_flatten(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t ax = ai(e, "axis", 1); /* in [-r, r] */
    if (ax < -a->nd || ax > a->nd)
        return sd_err(SD_EFORMAT, "Flatten axis %lld for a %d-D input", (long long)ax, a->nd);
    if (ax < 0) ax += a->nd;
    int64_t d[2] = { prod(a->d, 0, (int)ax), prod(a->d, (int)ax, a->nd) };
    return val_copy_shape(e->out[0], a, 2, d);
}

static int axes_list(ectx *e, int inp, int64_t *ax, int *nax, int *given)
{
    *nax = 0;
    *given = 0;
    val *v = opt_in(e, inp);
    if (v && e->opset >= 13) {
        *given = 1;
        return ints_of(v, ax, MAXD, nax, "axes");
    }
    int n = aints(e, "axes", ax, MAXD);
    if (n == -2) return sd_err(SD_EFORMAT, "too many axes");
    if (n >= 0) {
        *nax = n;
        *given = 1;
    }
    return SD_OK;
}

static int op_squeeze(ectx *e)
{
    int rc = need_in(e, 0, 0);
    int64_t ax[MAXD];
    int nax, given;
    if (!rc) rc = axes_list(e, 1, ax, &nax, &given);
    if (rc) return rc;
    const val *a = e->in[0];
    int drop[MAXD] = { 0 };
    for (int i = 0; i < nax; i++) {
        int64_t x;
        if ((rc = norm_axis(ax[i], a->nd, &x))) return rc;
        if (a->d[x] != 1)
            return sd_err(SD_EFORMAT, "Squeeze of axis %lld of size %lld", (long long)x, (long long)a->d[x]);
        drop[x] = 1;
    }
    if (!given)
        for (int i = 0; i < a->nd; i++) drop[i] = a->d[i] == 1;
    int64_t d[MAXD];
    int nd = 0;
    for (int i = 0; i < a->nd; i++)
        if (!drop[i]) d[nd++] = a->d[i];
    return val_copy_shape(e->out[0], a, nd, d);
}

static int op_unsqueeze(ectx *e)
{
    int rc = need_in(e, 0, 0);
    int64_t ax[MAXD];
    int nax, given;
    if (!rc) rc = axes_list(e, 1, ax, &nax, &given);
    if (rc) return rc;
    const val *a = e->in[0];
    int nd = a->nd + nax;
    if (!given || nd > MAXD) return sd_err(SD_EFORMAT, "Unsqueeze needs axes (at most %d dimensions)", MAXD);
    int ins[MAXD] = { 0 };
    for (int i = 0; i < nax; i++) {
        int64_t x;
        if ((rc = norm_axis(ax[i], nd, &x))) return rc;
        if (ins[x]) return sd_err(SD_EFORMAT, "Unsqueeze with a repeated axis");
        ins[x] = 1;
    }
    int64_t d[MAXD];
    for (int i = 0, j = 0; i < nd; i++) d[i] = ins[i] ? 1 : a->d[j++];
    return val_copy_shape(e->out[0], a, nd, d);
}

/* general permutation copy */
static void permute(void *dst, const void *src, size_t es, int nd, const int64_t *d, const int *perm)
{
    int64_t st[MAXD], od[MAXD], ost[MAXD], n = prod(d, 0, nd);
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= d[i];
    }
    for (int i = 0; i < nd; i++) {
        od[i] = d[perm[i]];
        ost[i] = st[perm[i]];
    }
    if (n == 0) return;
    int64_t inner = nd ? od[nd - 1] : 1, istr = nd ? ost[nd - 1] : 1, rows = n / inner;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t row = 0; row < rows; row++) {
        int64_t off = 0, r = row;
        for (int i = nd - 2; i >= 0; i--) {
            off += (r % od[i]) * ost[i];
            r /= od[i];
        }
        if (es == 4) {
            const float *x = (const float *)src + off;
            float *y = (float *)dst + row * inner;
            for (int64_t j = 0; j < inner; j++) y[j] = x[j * istr];
        } else {
            const int64_t *x = (const int64_t *)src + off;
            int64_t *y = (int64_t *)dst + row * inner;
            for (int64_t j = 0; j < inner; j++) y[j] = x[j * istr];
        }
    }
}

static int op_transpose(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t pl[MAXD];
    int perm[MAXD], seen[MAXD] = { 0 };
    int np = aints(e, "perm", pl, MAXD);
    if (np < 0)
        for (int i = 0; i < a->nd; i++) perm[i] = a->nd - 1 - i;
    else {
        if (np != a->nd) return sd_err(SD_EFORMAT, "Transpose perm of %d axes for a %d-D input", np, a->nd);
        for (int i = 0; i < np; i++) {
            if (pl[i] < 0 || pl[i] >= a->nd || seen[pl[i]]++) return sd_err(SD_EFORMAT, "bad Transpose perm");
            perm[i] = (int)pl[i];
        }
    }
    int64_t d[MAXD];
    for (int i = 0; i < a->nd; i++) d[i] = a->d[perm[i]];
    if ((rc = val_alloc(e->out[0], a->dt, a->nd, d))) return rc;
    permute(e->out[0]->p, a->p, esz(a), a->nd, a->d, perm);
    return SD_OK;
}

static int op_concat(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t ax;
    if ((rc = norm_axis(ai(e, "axis", 0), a->nd, &ax))) return rc;
    int64_t d[MAXD];
    for (int i = 0; i < a->nd; i++) d[i] = a->d[i];
    d[ax] = 0;
    for (int k = 0; k < e->nin; k++) {
        const val *b = e->in[k];
        if (!b) continue;
        if (b->dt != a->dt || b->nd != a->nd) return sd_err(SD_EFORMAT, "Concat inputs of different types or ranks");
        for (int i = 0; i < a->nd; i++)
            if (i != ax && b->d[i] != a->d[i]) return sd_err(SD_EFORMAT, "Concat inputs of different shapes");
        d[ax] += b->d[ax];
    }
    if ((rc = val_alloc(e->out[0], a->dt, a->nd, d))) return rc;
    int64_t outer = prod(d, 0, (int)ax), inner = prod(d, (int)ax + 1, a->nd), off = 0;
    size_t es = esz(a);
    for (int k = 0; k < e->nin; k++) {
        const val *b = e->in[k];
        if (!b) continue;
        int64_t blk = b->d[ax] * inner;
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)e->out[0]->p + (size_t)(o * d[ax] * inner + off) * es,
                   (const char *)b->p + (size_t)(o * blk) * es, (size_t)blk * es);
        off += blk;
    }
    return SD_OK;
}

static int op_split(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t ax;
    if ((rc = norm_axis(ai(e, "axis", 0), a->nd, &ax))) return rc;
    int64_t sp[64];
    int ns = -1;
    val *s = opt_in(e, 1);
    if (s && e->opset >= 13) {
        if ((rc = ints_of(s, sp, 64, &ns, "Split split"))) return rc;
    } else {
        ns = aints(e, "split", sp, 64);
        if (ns == -2) return sd_err(SD_EUNSUPPORTED, "Split into over 64 parts");
    }
    if (e->nout > 64) return sd_err(SD_EUNSUPPORTED, "Split into over 64 parts");
    if (ns < 0) {
        int64_t k = e->nout, dim = a->d[ax], part = (dim + k - 1) / k;
        for (int i = 0; i < k; i++) {
            int64_t rem = dim - part * i;
            sp[i] = rem < 0 ? 0 : rem < part ? rem : part;
        }
        ns = e->nout;
    }
    if (ns != e->nout) return sd_err(SD_EFORMAT, "Split into %d parts for %d outputs", ns, e->nout);
    int64_t tot = 0;
    for (int i = 0; i < ns; i++) {
        if (sp[i] < 0) return sd_err(SD_EFORMAT, "negative Split size");
        if (sp[i] > a->d[ax]) return sd_err(SD_EFORMAT, "Split size %lld larger than the axis", (long long)sp[i]);
        tot += sp[i];
    }
    if (tot != a->d[ax])
        return sd_err(SD_EFORMAT, "Split sizes sum to %lld, axis has %lld", (long long)tot, (long long)a->d[ax]);
    int64_t outer = prod(a->d, 0, (int)ax), inner = prod(a->d, (int)ax + 1, a->nd), off = 0;
    size_t es = esz(a);
    for (int k = 0; k < ns; k++) {
        int64_t d[MAXD];
        for (int i = 0; i < a->nd; i++) d[i] = a->d[i];
        d[ax] = sp[k];
        if (e->out[k]) {
            if ((rc = val_alloc(e->out[k], a->dt, a->nd, d))) return rc;
            int64_t blk = sp[k] * inner;
            for (int64_t o = 0; o < outer; o++)
                memcpy((char *)e->out[k]->p + (size_t)(o * blk) * es,
                       (const char *)a->p + (size_t)(o * a->d[ax] * inner + off) * es, (size_t)blk * es);
        }
        off += sp[k] * inner;
    }
    return SD_OK;
}

static int op_slice(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t st[MAXD], en[MAXD], ax[MAXD], sp[MAXD];
    int ns, ne, na = -1, nsp = -1;
    if (e->opset >= 10) {
        if ((rc = need_in(e, 1, SD_OV_I64)) || (rc = need_in(e, 2, SD_OV_I64))) return rc;
        if ((rc = ints_of(e->in[1], st, MAXD, &ns, "Slice starts")) ||
            (rc = ints_of(e->in[2], en, MAXD, &ne, "Slice ends")))
            return rc;
        if (opt_in(e, 3) && (rc = ints_of(e->in[3], ax, MAXD, &na, "Slice axes"))) return rc;
        if (opt_in(e, 4) && (rc = ints_of(e->in[4], sp, MAXD, &nsp, "Slice steps"))) return rc;
    } else {
        ns = aints(e, "starts", st, MAXD);
        ne = aints(e, "ends", en, MAXD);
        na = aints(e, "axes", ax, MAXD);
        if (ns < 0 || ne < 0) return sd_err(SD_EFORMAT, "Slice without starts/ends");
    }
    if (ns != ne || (na >= 0 && na != ns) || (nsp >= 0 && nsp != ns))
        return sd_err(SD_EFORMAT, "Slice lists of different lengths");
    int64_t b[MAXD], step[MAXD], d[MAXD];
    for (int i = 0; i < a->nd; i++) {
        b[i] = 0;
        step[i] = 1;
        d[i] = a->d[i];
    }
    int used[MAXD] = { 0 };
    for (int k = 0; k < ns; k++) {
        int64_t x;
        if ((rc = norm_axis(na >= 0 ? ax[k] : k, a->nd, &x))) return rc;
        if (used[x]++) return sd_err(SD_EFORMAT, "Slice with a repeated axis");
        int64_t dim = a->d[x], s = st[k], t = en[k], p = nsp >= 0 ? sp[k] : 1;
        if (p == 0) return sd_err(SD_EFORMAT, "Slice step 0");
        if (s < 0) s += dim;
        if (t < 0 && t > INT64_MIN / 2) t += dim;
        if (p > 0) {
            s = s < 0 ? 0 : s > dim ? dim : s;
            t = t < 0 ? 0 : t > dim ? dim : t;
            d[x] = t > s ? (t - s - 1) / p + 1 : 0;
        } else {
            s = s < 0 ? -1 : s > dim - 1 ? dim - 1 : s;
            t = t < -1 ? -1 : t > dim - 1 ? dim - 1 : t;
            if (p == INT64_MIN) p = INT64_MIN + 1;   /* any step past the axis takes one element */
            d[x] = s > t ? (s - t - 1) / (-p) + 1 : 0;
        }
        b[x] = s;
        step[x] = p;
    }
    if ((rc = val_alloc(e->out[0], a->dt, a->nd, d))) return rc;
    int64_t ist[MAXD], s = 1, n = e->out[0]->n;
    for (int i = a->nd - 1; i >= 0; i--) {
        ist[i] = s;
        s *= a->d[i];
    }
    size_t es = esz(a);
    for (int64_t o = 0; o < n; o++) {
        int64_t r = o, off = 0;
        for (int i = a->nd - 1; i >= 0; i--) {
            off += (b[i] + (r % d[i]) * step[i]) * ist[i];
            r /= d[i];
        }
        memcpy((char *)e->out[0]->p + (size_t)o * es, (const char *)a->p + (size_t)off * es, es);
    }
    return SD_OK;
}

static int op_gather(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (!rc) rc = need_in(e, 1, SD_OV_I64);
    if (rc) return rc;
    const val *a = e->in[0], *ix = e->in[1];
    int64_t ax;
    if ((rc = norm_axis(ai(e, "axis", 0), a->nd, &ax))) return rc;
    int nd = a->nd - 1 + ix->nd;
    if (nd > MAXD) return sd_err(SD_EUNSUPPORTED, "Gather result over %d dimensions", MAXD);
    int64_t d[MAXD];
    int k = 0;
    for (int i = 0; i < ax; i++) d[k++] = a->d[i];
    for (int i = 0; i < ix->nd; i++) d[k++] = ix->d[i];
    for (int i = (int)ax + 1; i < a->nd; i++) d[k++] = a->d[i];
    if ((rc = val_alloc(e->out[0], a->dt, nd, d))) return rc;
    int64_t outer = prod(a->d, 0, (int)ax), inner = prod(a->d, (int)ax + 1, a->nd), dim = a->d[ax];
    size_t es = esz(a);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < ix->n; j++) {
            int64_t q = IV(ix)[j];
            if (q < 0) q += dim;
            if (q < 0 || q >= dim)
                return sd_err(SD_EFORMAT, "Gather index %lld out of range [0,%lld)", (long long)IV(ix)[j],
                              (long long)dim);
            memcpy((char *)e->out[0]->p + (size_t)((o * ix->n + j) * inner) * es,
                   (const char *)a->p + (size_t)((o * dim + q) * inner) * es, (size_t)inner * es);
        }
    return SD_OK;
}

/* y = x broadcast to shape d (Expand, Tile helper) */
static int expand_to(val *o, const val *a, int nd, const int64_t *d)
{
    val one = { 0 };
    one.nd = nd;
    for (int i = 0; i < nd; i++) one.d[i] = d[i];
    const val *ops[2] = { a, &one };
    int rnd;
    int64_t rd[MAXD];
    int rc = bshape(ops, 2, &rnd, rd);
    if (rc) return rc;
    if ((rc = val_alloc(o, a->dt, rnd, rd))) return rc;
    bplan p;
    bplan_make(&p, ops, 1, rnd, rd);
    int64_t inner = p.d[p.nd - 1], rows = o->n / (inner ? inner : 1), sa = p.st[0][p.nd - 1];
    size_t es = esz(a);
    for (int64_t row = 0; row < rows && inner; row++) {
        int64_t off[3];
        bplan_row(&p, row, off);
        for (int64_t j = 0; j < inner; j++)
            memcpy((char *)o->p + (size_t)(row * inner + j) * es, (const char *)a->p + (size_t)(off[0] + j * sa) * es,
                   es);
    }
    return SD_OK;
}

static int op_expand(ectx *e)
{
    int rc = need_in(e, 0, 0);
    int64_t d[MAXD];
    int nd;
    if (!rc) rc = need_in(e, 1, SD_OV_I64);
    if (!rc) rc = ints_of(e->in[1], d, MAXD, &nd, "Expand shape");
    if (rc) return rc;
    return expand_to(e->out[0], e->in[0], nd, d);
}

static int op_tile(ectx *e)
{
    int rc = need_in(e, 0, 0);
    int64_t rep[MAXD];
    int nr;
    if (!rc) rc = need_in(e, 1, SD_OV_I64);
    if (!rc) rc = ints_of(e->in[1], rep, MAXD, &nr, "Tile repeats");
    if (rc) return rc;
    const val *a = e->in[0];
    if (nr != a->nd) return sd_err(SD_EFORMAT, "Tile repeats of length %d for a %d-D input", nr, a->nd);
    int64_t d[MAXD];
    for (int i = 0; i < a->nd; i++) {
        if (rep[i] < 0) return sd_err(SD_EFORMAT, "negative Tile repeat");
        if (rep[i] > ((int64_t)1 << 32)) return sd_err(SD_ERANGE, "Tile repeat %lld too large", (long long)rep[i]);
        d[i] = a->d[i] * rep[i];
    }
    if ((rc = val_alloc(e->out[0], a->dt, a->nd, d))) return rc;
    int64_t ist[MAXD], s = 1;
    for (int i = a->nd - 1; i >= 0; i--) {
        ist[i] = s;
        s *= a->d[i];
    }
    size_t es = esz(a);
    for (int64_t o = 0; o < e->out[0]->n; o++) {
        int64_t r = o, off = 0;
        for (int i = a->nd - 1; i >= 0; i--) {
            off += ((r % d[i]) % a->d[i]) * ist[i];
            r /= d[i];
        }
        memcpy((char *)e->out[0]->p + (size_t)o * es, (const char *)a->p + (size_t)off * es, es);
    }
    return SD_OK;
}

static int op_pad(ectx *e)
{
    int rc = need_in(e, 0, 0);
    if (rc) return rc;
    const val *a = e->in[0];
    const char *mode = as(e, "mode", "constant");
    if (strcmp(mode, "constant")) return sd_err(SD_EUNSUPPORTED, "Pad mode '%s' (only constant)", mode);
    int64_t pads[2 * MAXD];
    int np;
    double cv = 0;
    if (e->opset >= 11) {
        if ((rc = need_in(e, 1, SD_OV_I64)) || (rc = ints_of(e->in[1], pads, 2 * MAXD, &np, "Pad pads"))) return rc;
        if (opt_in(e, 2) && e->in[2]->n) cv = scalar_of(e->in[2]);
        if (opt_in(e, 3)) return sd_err(SD_EUNSUPPORTED, "Pad with axes");
    } else {
        np = aints(e, "pads", pads, 2 * MAXD);
        cv = af(e, "value", 0);
    }
    if (np != 2 * a->nd) return sd_err(SD_EFORMAT, "Pad pads of length %d for a %d-D input", np, a->nd);
    int64_t d[MAXD];
    for (int i = 0; i < a->nd; i++) {
        if (pads[i] > ((int64_t)1 << 32) || pads[i] < -((int64_t)1 << 32) || pads[i + a->nd] > ((int64_t)1 << 32) ||
            pads[i + a->nd] < -((int64_t)1 << 32))
            return sd_err(SD_ERANGE, "Pad pads out of range");
        d[i] = a->d[i] + pads[i] + pads[i + a->nd];
        if (d[i] < 0) return sd_err(SD_EFORMAT, "Pad to a negative size");
    }
    if ((rc = val_alloc(e->out[0], a->dt, a->nd, d))) return rc;
    int64_t ist[MAXD], s = 1;
    for (int i = a->nd - 1; i >= 0; i--) {
        ist[i] = s;
        s *= a->d[i];
    }
    for (int64_t o = 0; o < e->out[0]->n; o++) {
        int64_t r = o, off = 0;
        int in = 1;
        for (int i = a->nd - 1; i >= 0; i--) {
            int64_t c = r % d[i] - pads[i];
            r /= d[i];
            if (c < 0 || c >= a->d[i])
                in = 0;
            else
                off += c * ist[i];
        }
        if (a->dt == SD_OV_F32)
            F(e->out[0])[o] = in ? F(a)[off] : (float)cv;
        else
            IV(e->out[0])[o] = in ? IV(a)[off] : (int64_t)cv;
    }
    return SD_OK;
}

/* ---- reductions and normalisations --------------------------------------------------------- */

enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L2, R_SUMSQ };

static int reduce(ectx *e, int kind)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t ax[MAXD];
    int nax = 0, given = 0;
    int axes_input = e->opset >= 18 || (kind == R_SUM && e->opset >= 13);
    val *v = opt_in(e, 1);
    if (axes_input) {
        if (v) {
            if ((rc = ints_of(v, ax, MAXD, &nax, "axes"))) return rc;
            given = nax > 0;
        }
    } else {
        int n = aints(e, "axes", ax, MAXD);
        if (n == -2) return sd_err(SD_EFORMAT, "too many axes");
        if (n >= 0) {
            nax = n;
            given = 1;
        }
    }
    int red[MAXD] = { 0 };
    if (!given) {
        if (axes_input && ai(e, "noop_with_empty_axes", 0)) return val_copy_shape(e->out[0], a, a->nd, a->d);
        for (int i = 0; i < a->nd; i++) red[i] = 1;
    }
    for (int i = 0; i < nax; i++) {
        int64_t x;
        if ((rc = norm_axis(ax[i], a->nd, &x))) return rc;
        red[x] = 1;
    }
    int keep = (int)ai(e, "keepdims", 1);
    /* reduce one axis at a time, from the last */
    val cur = { 0 };
    if ((rc = val_copy_shape(&cur, a, a->nd, a->d))) return rc;
    int64_t count = 1;
    int first = 1;
    for (int x = a->nd - 1; x >= 0; x--) {
        if (!red[x]) continue;
        int64_t outer = prod(cur.d, 0, x), R = cur.d[x], inner = prod(cur.d, x + 1, cur.nd);
        count *= R;
        int64_t d[MAXD];
        for (int i = 0; i < cur.nd; i++) d[i] = cur.d[i];
        d[x] = 1;
        val nx = { 0 };
        if ((rc = val_alloc(&nx, SD_OV_F32, cur.nd, d))) break;
        int op = kind;
        int sq = first && (kind == R_L2 || kind == R_SUMSQ);
        if (kind == R_MEAN || kind == R_L2 || kind == R_SUMSQ) op = R_SUM;
        if ((op == R_MAX || op == R_MIN) && R == 0) {
            free(nx.p);
            free(cur.p);
            return sd_err(SD_EFORMAT, "ReduceMax/Min over an empty axis");
        }
#pragma omp parallel for collapse(2) schedule(static) if (outer * inner > 4096)
        for (int64_t o = 0; o < outer; o++)
            for (int64_t i = 0; i < inner; i++) {
                const float *s = F(&cur) + o * R * inner + i;
                double acc = op == R_PROD ? 1.0 : op == R_MAX ? -INFINITY : op == R_MIN ? INFINITY : 0.0;
                for (int64_t k = 0; k < R; k++) {
                    double t = s[k * inner];
                    if (sq) t *= t;
                    if (op == R_SUM)
                        acc += t;
                    else if (op == R_PROD)
                        acc *= t;
                    else if (op == R_MAX)
                        acc = t > acc || isnan(t) ? t : acc;
                    else
                        acc = t < acc || isnan(t) ? t : acc;
                }
                F(&nx)[o * inner + i] = (float)acc;
            }
        free(cur.p);
        cur = nx;
        first = 0;
    }
    if (rc) {
        free(cur.p);
        return rc;
    }
    if (first && (kind == R_L2 || kind == R_SUMSQ))
        for (int64_t i = 0; i < cur.n; i++) F(&cur)[i] *= F(&cur)[i];
    for (int64_t i = 0; i < cur.n; i++) {
        if (kind == R_MEAN) F(&cur)[i] = count ? F(&cur)[i] / (float)count : NAN;
        if (kind == R_L2) F(&cur)[i] = sqrtf(F(&cur)[i]);
    }
    if (!keep) {
        int nd = 0;
        for (int i = 0; i < cur.nd; i++)
            if (!red[i]) cur.d[nd++] = cur.d[i];
        cur.nd = nd;
    }
    free(e->out[0]->p);
    *e->out[0] = cur;
    return SD_OK;
}

static int op_rmean(ectx *e) { return reduce(e, R_MEAN); }
static int op_rsum(ectx *e) { return reduce(e, R_SUM); }
static int op_rmax(ectx *e) { return reduce(e, R_MAX); }
static int op_rmin(ectx *e) { return reduce(e, R_MIN); }
static int op_rprod(ectx *e) { return reduce(e, R_PROD); }
static int op_rl2(ectx *e) { return reduce(e, R_L2); }
static int op_rsumsq(ectx *e) { return reduce(e, R_SUMSQ); }

static int softmax(ectx *e, int logsm)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (rc) return rc;
    const val *a = e->in[0];
    int64_t ax;
    if ((rc = norm_axis(ai(e, "axis", e->opset >= 13 ? -1 : 1), a->nd, &ax))) return rc;
    int64_t outer, R, inner;
    if (e->opset >= 13) {
        outer = prod(a->d, 0, (int)ax);
        R = a->d[ax];
        inner = prod(a->d, (int)ax + 1, a->nd);
    } else {
        outer = prod(a->d, 0, (int)ax);
        R = prod(a->d, (int)ax, a->nd);
        inner = 1;
    }
    if ((rc = val_alloc(e->out[0], SD_OV_F32, a->nd, a->d))) return rc;
#pragma omp parallel for collapse(2) schedule(static) if (outer * inner * R > 65536)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *x = F(a) + o * R * inner + i;
            float *y = F(e->out[0]) + o * R * inner + i;
            float m = -INFINITY;
            for (int64_t k = 0; k < R; k++) m = fmaxf(m, x[k * inner]);
            double s = 0;
            for (int64_t k = 0; k < R; k++) {
                float t = expf(x[k * inner] - m);
                if (!logsm) y[k * inner] = t;
                s += t;
            }
            float ls = (float)log(s), inv = (float)(1.0 / s);
            for (int64_t k = 0; k < R; k++) y[k * inner] = logsm ? x[k * inner] - m - ls : y[k * inner] * inv;
        }
    return SD_OK;
}
static int op_softmax(ectx *e) { return softmax(e, 0); }
static int op_logsoftmax(ectx *e) { return softmax(e, 1); }

static int op_layernorm(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    const val *a = e->in[0], *g = e->in[1], *b = opt_in(e, 2);
    if (b && b->dt != SD_OV_F32) return sd_err(SD_EFORMAT, "LayerNormalization bias is not float");
    int64_t ax;
    if ((rc = norm_axis(ai(e, "axis", -1), a->nd, &ax))) return rc;
    float eps = af(e, "epsilon", 1e-5f);
    int64_t outer = prod(a->d, 0, (int)ax), D = prod(a->d, (int)ax, a->nd);
    if ((g->n != D && g->n != 1) || (b && b->n != D && b->n != 1))
        return sd_err(SD_EUNSUPPORTED, "LayerNormalization scale/bias of %lld elements for a normalised size %lld",
                      (long long)g->n, (long long)D);
    if ((rc = val_alloc(e->out[0], SD_OV_F32, a->nd, a->d))) return rc;
    int64_t sd[MAXD];
    for (int i = 0; i < a->nd; i++) sd[i] = i < ax ? a->d[i] : 1;
    float *mo = NULL, *io = NULL;
    if (e->nout > 1 && e->out[1]) {
        if ((rc = val_alloc(e->out[1], SD_OV_F32, a->nd, sd))) return rc;
        mo = F(e->out[1]);
    }
    if (e->nout > 2 && e->out[2]) {
        if ((rc = val_alloc(e->out[2], SD_OV_F32, a->nd, sd))) return rc;
        io = F(e->out[2]);
    }
#pragma omp parallel for schedule(static) if (outer * D > 65536)
    for (int64_t o = 0; o < outer; o++) {
        const float *x = F(a) + o * D;
        float *y = F(e->out[0]) + o * D;
        double s = 0, ss = 0;
        for (int64_t k = 0; k < D; k++) s += x[k];
        double mean = s / (double)D;
        for (int64_t k = 0; k < D; k++) ss += (x[k] - mean) * (x[k] - mean);
        float inv = (float)(1.0 / sqrt(ss / (double)D + eps)), m = (float)mean;
        for (int64_t k = 0; k < D; k++)
            y[k] = (x[k] - m) * inv * F(g)[g->n == 1 ? 0 : k] + (b ? F(b)[b->n == 1 ? 0 : k] : 0.0f);
        if (mo) mo[o] = m;
        if (io) io[o] = inv;
    }
    return SD_OK;
}

static int op_batchnorm(ectx *e)
{
    int rc = 0;
    for (int k = 0; k < 5 && !rc; k++) rc = need_in(e, k, SD_OV_F32);
    if (rc) return rc;
    if (ai(e, "training_mode", 0)) return sd_err(SD_EUNSUPPORTED, "BatchNormalization training_mode");
    const val *a = e->in[0];
    if (a->nd < 2) return sd_err(SD_EFORMAT, "BatchNormalization of a %d-D input", a->nd);
    int64_t C = a->d[1], N = a->d[0], inner = prod(a->d, 2, a->nd);
    for (int k = 1; k < 5; k++)
        if (e->in[k]->n != C)
            return sd_err(SD_EFORMAT, "BatchNormalization parameter %d has %lld elements, expected %lld", k,
                          (long long)e->in[k]->n, (long long)C);
    float eps = af(e, "epsilon", 1e-5f);
    if ((rc = val_alloc(e->out[0], SD_OV_F32, a->nd, a->d))) return rc;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            float sc = F(e->in[1])[c] / sqrtf(F(e->in[4])[c] + eps), sh = F(e->in[2])[c] - F(e->in[3])[c] * sc;
            const float *x = F(a) + (n * C + c) * inner;
            float *y = F(e->out[0]) + (n * C + c) * inner;
            for (int64_t i = 0; i < inner; i++) y[i] = x[i] * sc + sh;
        }
    return SD_OK;
}

/* ---- matrix products ----------------------------------------------------------------------- */

static int op_matmul(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    val A = *e->in[0], B = *e->in[1]; /* shape views */
    if (A.nd == 0 || B.nd == 0) return sd_err(SD_EFORMAT, "MatMul of a scalar");
    int a1 = A.nd == 1, b1 = B.nd == 1;
    if (a1) {
        A.nd = 2;
        A.d[1] = A.d[0];
        A.d[0] = 1;
    }
    if (b1) {
        B.nd = 2;
        B.d[1] = 1;
    }
    int64_t M = A.d[A.nd - 2], K = A.d[A.nd - 1], K2 = B.d[B.nd - 2], N = B.d[B.nd - 1];
    if (K != K2)
        return sd_err(SD_EFORMAT, "MatMul of [..,%lld,%lld] by [..,%lld,%lld]", (long long)M, (long long)K,
                      (long long)K2, (long long)N);
    /* batch shapes */
    val ba = { 0 }, bb = { 0 };
    ba.nd = A.nd - 2;
    bb.nd = B.nd - 2;
    for (int i = 0; i < ba.nd; i++) ba.d[i] = A.d[i];
    for (int i = 0; i < bb.nd; i++) bb.d[i] = B.d[i];
    const val *ops[2] = { &ba, &bb };
    int nb;
    int64_t bd[MAXD];
    if ((rc = bshape(ops, 2, &nb, bd))) return rc;
    int64_t od[MAXD];
    int ond = 0;
    for (int i = 0; i < nb; i++) od[ond++] = bd[i];
    if (!a1) od[ond++] = M;
    if (!b1) od[ond++] = N;
    if (ond > MAXD) return sd_err(SD_EUNSUPPORTED, "MatMul result over %d dimensions", MAXD);
    val o = { 0 };
    if ((rc = val_alloc(&o, SD_OV_F32, ond, od))) return rc;
    int64_t nbatch = prod(bd, 0, nb), bbn = prod(bb.d, 0, bb.nd);
    if (nbatch * M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
        free(o.p);
        return sd_err(SD_EUNSUPPORTED, "MatMul sizes beyond 2^31");
    }
    if (bbn == 1 && nb == ba.nd && prod(ba.d, 0, ba.nd) == nbatch) {
        /* B shared: one sgemm over all rows of A */
        if (nbatch * M > 0 && N > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(nbatch * M), (int)N, (int)K, 1.0f, F(&A),
                        (int)K, F(&B), (int)N, 0.0f, F(&o), (int)N);
    } else {
        bplan p;
        bplan_make(&p, ops, 2, nb, bd);
        for (int64_t bi = 0; bi < nbatch; bi++) {
            /* batch offsets: decompose bi over the full (uncoalesced) broadcast shape */
            int64_t r = bi, oa = 0, ob = 0, sa = 1, sb = 1;
            for (int i = nb - 1; i >= 0; i--) {
                int64_t c = r % bd[i];
                r /= bd[i];
                int ja = i - (nb - ba.nd), jb = i - (nb - bb.nd);
                int64_t da = ja >= 0 ? ba.d[ja] : 1, db = jb >= 0 ? bb.d[jb] : 1;
                if (da != 1) oa += c * sa;
                if (db != 1) ob += c * sb;
                sa *= da;
                sb *= db;
            }
            if (M && N)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, F(&A) + oa * M * K,
                            (int)K, F(&B) + ob * K * N, (int)N, 0.0f, F(&o) + bi * M * N, (int)N);
        }
        (void)p;
    }
    free(e->out[0]->p);
    *e->out[0] = o;
    return SD_OK;
}

static int op_gemm(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    const val *A = e->in[0], *B = e->in[1], *C = opt_in(e, 2);
    if (A->nd != 2 || B->nd != 2) return sd_err(SD_EFORMAT, "Gemm needs 2-D inputs");
    int ta = (int)ai(e, "transA", 0), tb = (int)ai(e, "transB", 0);
    float alpha = af(e, "alpha", 1.0f), beta = af(e, "beta", 1.0f);
    int64_t M = ta ? A->d[1] : A->d[0], K = ta ? A->d[0] : A->d[1], K2 = tb ? B->d[1] : B->d[0],
            N = tb ? B->d[0] : B->d[1];
    if (K != K2) return sd_err(SD_EFORMAT, "Gemm inner sizes %lld and %lld", (long long)K, (long long)K2);
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return sd_err(SD_EUNSUPPORTED, "Gemm sizes beyond 2^31");
    int64_t od[2] = { M, N };
    val o = { 0 };
    if (C && C->n && beta != 0) {
        if (C->dt != SD_OV_F32) return sd_err(SD_EFORMAT, "Gemm C is not float");
        if ((rc = expand_to(&o, C, 2, od))) return rc;
        if (o.nd != 2 || o.d[0] != M || o.d[1] != N) {
            free(o.p);
            return sd_err(SD_EFORMAT, "Gemm C does not broadcast to [%lld,%lld]", (long long)M, (long long)N);
        }
    } else {
        if ((rc = val_alloc(&o, SD_OV_F32, 2, od))) return rc;
        memset(o.p, 0, (size_t)o.n * 4);
        beta = 0;
    }
    if (M && N)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                    (int)K, alpha, F(A), (int)A->d[1], F(B), (int)B->d[1], beta, F(&o), (int)N);
    free(e->out[0]->p);
    *e->out[0] = o;
    return SD_OK;
}

/* Einsum with one or two operands, explicit ("ab,bc->ac") or implicit output, letters only (no
 * ellipsis, no label repeated within an operand): labels only one operand has and the output lacks
 * are summed first; then out = batched sgemm over [batch, kept-A, contracted] x [batch, contracted,
 * kept-B], permuted to the output's order. */
static int sum_label(val *v, char *lab, int ax)
{
    int nd = v->nd;
    int64_t outer = prod(v->d, 0, ax), R = v->d[ax], inner = prod(v->d, ax + 1, nd), d[MAXD];
    for (int i = 0, k = 0; i < nd; i++)
        if (i != ax) d[k++] = v->d[i];
    val t = { 0 };
    int rc = val_alloc(&t, SD_OV_F32, nd - 1, d);
    if (rc) return rc;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double acc = 0;
            for (int64_t k = 0; k < R; k++) acc += F(v)[(o * R + k) * inner + i];
            F(&t)[o * inner + i] = (float)acc;
        }
    free(v->p);
    *v = t;
    memmove(lab + ax, lab + ax + 1, strlen(lab + ax + 1) + 1);
    return SD_OK;
}

/* copy of v permuted so that its labels read `want` (a permutation of lab) */
static int permute_to(val *v, const char *lab, const char *want)
{
    int perm[MAXD], nd = v->nd;
    int64_t d[MAXD];
    for (int i = 0; i < nd; i++) {
        perm[i] = (int)(strchr(lab, want[i]) - lab);
        d[i] = v->d[perm[i]];
    }
    val t = { 0 };
    int rc = val_alloc(&t, SD_OV_F32, nd, d);
    if (rc) return rc;
    permute(t.p, v->p, 4, nd, v->d, perm);
    free(v->p);
    *v = t;
    return SD_OK;
}

static int op_einsum(ectx *e)
{
    const char *eq = as(e, "equation", NULL);
    if (!eq) return sd_err(SD_EFORMAT, "Einsum without an equation");
    char in[2][MAXD + 1], out[MAXD + 1];
    int nops = 0, n = 0, explicit_out = 0, no = 0;
    in[0][0] = in[1][0] = out[0] = 0;
    for (const char *c = eq;; c++) {
        if (*c == ' ') continue;
        if (*c == ',' || *c == '-' || !*c) {
            if (!explicit_out) {
                if (nops >= 2) return sd_err(SD_EUNSUPPORTED, "Einsum with more than two operands");
                in[nops][n] = 0;
                nops++;
                n = 0;
            }
            if (*c == '-') {
                if (c[1] != '>') return sd_err(SD_EFORMAT, "bad Einsum equation '%s'", eq);
                c++;
                explicit_out = 1;
            }
            if (!*c) break;
            continue;
        }
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')))
            return sd_err(SD_EUNSUPPORTED, "Einsum equation '%s' (letters only, no ellipsis)", eq);
        if (explicit_out) {
            if (no >= MAXD || strchr(out, *c)) return sd_err(SD_EUNSUPPORTED, "Einsum output labels in '%s'", eq);
            out[no++] = *c;
            out[no] = 0;
        } else {
            if (n >= MAXD) return sd_err(SD_EUNSUPPORTED, "Einsum operand of over %d labels", MAXD);
            in[nops][n] = 0;
            if (strchr(in[nops], *c)) return sd_err(SD_EUNSUPPORTED, "Einsum with a repeated label in '%s'", eq);
            in[nops][n++] = *c;
            in[nops][n] = 0;
        }
    }
    out[no] = 0;
    if (nops != e->nin) return sd_err(SD_EFORMAT, "Einsum '%s' for %d inputs", eq, e->nin);
    if (!explicit_out) { /* implicit: the labels seen once, in alphabetical order */
        for (int ch = 'A'; ch <= 'z'; ch++) {
            int cnt = 0;
            for (int k = 0; k < nops; k++) cnt += strchr(in[k], ch) != NULL && ch;
            if (cnt == 1 && no < MAXD) out[no++] = (char)ch;
        }
        out[no] = 0;
    }
    val v[2] = { { 0 }, { 0 } };
    int rc = SD_OK;
    for (int k = 0; k < nops && !rc; k++) {
        rc = need_in(e, k, SD_OV_F32);
        if (!rc && (int)strlen(in[k]) != e->in[k]->nd)
            rc = sd_err(SD_EFORMAT, "Einsum operand %d has %d axes, '%s' names %zu", k, e->in[k]->nd, in[k],
                        strlen(in[k]));
        if (!rc) rc = val_copy_shape(&v[k], e->in[k], e->in[k]->nd, e->in[k]->d);
    }
    for (int i = 0; !rc && out[i]; i++)
        if (!strchr(in[0], out[i]) && (nops < 2 || !strchr(in[1], out[i])))
            rc = sd_err(SD_EFORMAT, "Einsum output label '%c' is in no input", out[i]);
    /* sum the labels only one operand has and the output lacks */
    for (int k = 0; k < nops && !rc; k++)
        for (int i = (int)strlen(in[k]) - 1; i >= 0 && !rc; i--) {
            char l = in[k][i];
            if (!strchr(out, l) && (nops < 2 || !strchr(in[1 - k], l))) rc = sum_label(&v[k], in[k], i);
        }
    val res = { 0 };
    if (!rc && nops == 1) {
        rc = permute_to(&v[0], in[0], out);
        if (!rc) {
            res = v[0];
            v[0].p = NULL;
        }
    } else if (!rc) {
        char bl[MAXD + 1] = "", al[MAXD + 1] = "", cl[MAXD + 1] = "", bo[MAXD + 1] = "";
        int nb = 0, na = 0, nc = 0, nbo = 0;
        for (const char *c = in[0]; *c; c++) {
            int inb = strchr(in[1], *c) != NULL, ino = strchr(out, *c) != NULL;
            if (inb && ino)
                bl[nb++] = *c;
            else if (inb)
                cl[nc++] = *c;
            else
                al[na++] = *c;
        }
        for (const char *c = in[1]; *c; c++)
            if (!strchr(in[0], *c)) bo[nbo++] = *c;
        bl[nb] = al[na] = cl[nc] = bo[nbo] = 0;
        for (const char *c = in[0]; *c && !rc; c++) {
            const char *q = strchr(in[1], *c);
            if (q && v[0].d[c - in[0]] != v[1].d[q - in[1]])
                rc = sd_err(SD_EFORMAT, "Einsum label '%c' has sizes %lld and %lld", *c, (long long)v[0].d[c - in[0]],
                            (long long)v[1].d[q - in[1]]);
        }
        char wa[2 * MAXD + 2], wb[2 * MAXD + 2], wr[3 * MAXD + 3];
        snprintf(wa, sizeof wa, "%s%s%s", bl, al, cl);
        snprintf(wb, sizeof wb, "%s%s%s", bl, cl, bo);
        snprintf(wr, sizeof wr, "%s%s%s", bl, al, bo);
        int64_t Bt = 1, M = 1, K = 1, N = 1, rd[MAXD];
        for (int i = 0; i < nb; i++) Bt *= v[0].d[strchr(in[0], bl[i]) - in[0]];
        for (int i = 0; i < na; i++) M *= v[0].d[strchr(in[0], al[i]) - in[0]];
        for (int i = 0; i < nc; i++) K *= v[0].d[strchr(in[0], cl[i]) - in[0]];
        for (int i = 0; i < nbo; i++) N *= v[1].d[strchr(in[1], bo[i]) - in[1]];
        if (nb + na + nbo > MAXD) rc = sd_err(SD_EUNSUPPORTED, "Einsum result over %d axes", MAXD);
        if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) rc = sd_err(SD_EUNSUPPORTED, "Einsum sizes beyond 2^31");
        if (!rc) rc = permute_to(&v[0], in[0], wa);
        if (!rc) rc = permute_to(&v[1], in[1], wb);
        int k = 0;
        for (int i = 0; i < nb + na; i++) rd[k++] = v[0].d[i];
        for (int i = 0; i < nbo; i++) rd[k++] = v[1].d[nb + nc + i];
        if (!rc) rc = val_alloc(&res, SD_OV_F32, k, rd);
        for (int64_t b = 0; !rc && b < Bt; b++)
            if (M > 0 && N > 0 && K > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f,
                            F(&v[0]) + b * M * K, (int)K, F(&v[1]) + b * K * N, (int)N, 0.0f, F(&res) + b * M * N,
                            (int)N);
            else
                memset(F(&res) + b * M * N, 0, sizeof(float) * (size_t)(M * N));
        if (!rc) rc = permute_to(&res, wr, out);
    }
    free(v[0].p);
    free(v[1].p);
    if (rc) {
        free(res.p);
        return rc;
    }
    free(e->out[0]->p);
    *e->out[0] = res;
    return SD_OK;
}

/* ---- convolution and pooling ------------------------------------------------------------- */

typedef struct geo2 {
    int64_t k[2], s[2], dl[2], p0[2], p1[2], in[2], out[2];
} geo2;

/* kernel/strides/dilations/pads/auto_pad for 1-D (as 2-D with H = 1) and 2-D */
static int geometry(ectx *e, int sp, const int64_t *in, const int64_t *kdef, int ceil_mode, geo2 *g)
{
    int64_t k[2], s[2] = { 1, 1 }, dl[2] = { 1, 1 }, pads[4] = { 0, 0, 0, 0 };
    int nk = aints(e, "kernel_shape", k, 2);
    if (nk < 0) {
        if (!kdef) return sd_err(SD_EFORMAT, "no kernel_shape");
        for (int i = 0; i < sp; i++) k[i] = kdef[i];
    } else if (nk != sp)
        return sd_err(SD_EFORMAT, "kernel_shape of %d axes for %d spatial axes", nk, sp);
    int ns = aints(e, "strides", s, 2), nd = aints(e, "dilations", dl, 2), np = aints(e, "pads", pads, 4);
    if ((ns >= 0 && ns != sp) || (nd >= 0 && nd != sp) || (np >= 0 && np != 2 * sp) || ns == -2 || nd == -2 || np == -2)
        return sd_err(SD_EFORMAT, "strides/dilations/pads of the wrong length");
    const char *ap = as(e, "auto_pad", "NOTSET");
    memset(g, 0, sizeof *g);
    for (int i = 0; i < sp; i++) {
        int j = sp == 1 ? 1 : i; /* 1-D: the W axis */
        if (k[i] < 1 || s[i] < 1 || dl[i] < 1) return sd_err(SD_EFORMAT, "bad kernel, stride or dilation");
        g->k[j] = k[i];
        g->s[j] = s[i];
        g->dl[j] = dl[i];
        g->in[j] = in[i];
        int64_t ek = (k[i] - 1) * dl[i] + 1;
        if (!strcmp(ap, "NOTSET")) {
            g->p0[j] = pads[i];
            g->p1[j] = pads[i + sp];
        } else if (!strcmp(ap, "VALID")) {
        } else if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
            int64_t o = (in[i] + s[i] - 1) / s[i], tot = (o - 1) * s[i] + ek - in[i];
            if (tot < 0) tot = 0;
            g->p0[j] = !strcmp(ap, "SAME_UPPER") ? tot / 2 : tot - tot / 2;
            g->p1[j] = tot - g->p0[j];
        } else {
            return sd_err(SD_EFORMAT, "unknown auto_pad '%s'", ap);
        }
        if (g->p0[j] < 0 || g->p1[j] < 0) return sd_err(SD_EUNSUPPORTED, "negative pads");
        int64_t span = in[i] + g->p0[j] + g->p1[j] - ek;
        if (span < 0) return sd_err(SD_EFORMAT, "kernel larger than the padded input");
        g->out[j] = (ceil_mode ? (span + s[i] - 1) / s[i] : span / s[i]) + 1;
        if (ceil_mode && (g->out[j] - 1) * s[i] >= in[i] + g->p0[j]) g->out[j]--;
    }
    if (sp == 1) { g->k[0] = g->s[0] = g->dl[0] = g->in[0] = g->out[0] = 1; }
    return SD_OK;
}

static int op_conv(ectx *e)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (!rc) rc = need_in(e, 1, SD_OV_F32);
    if (rc) return rc;
    const val *x = e->in[0], *w = e->in[1], *b = opt_in(e, 2);
    int sp = x->nd - 2;
    if (sp != 1 && sp != 2) return sd_err(SD_EUNSUPPORTED, "Conv with %d spatial axes (1 or 2 supported)", sp);
    if (w->nd != x->nd) return sd_err(SD_EFORMAT, "Conv weight of rank %d for an input of rank %d", w->nd, x->nd);
    int64_t G = ai(e, "group", 1), N = x->d[0], C = x->d[1], M = w->d[0];
    if (G < 1 || C % G || M % G || w->d[1] != C / G)
        return sd_err(SD_EFORMAT, "Conv weight [%lld,%lld,..] does not fit %lld input channels in %lld groups",
                      (long long)M, (long long)w->d[1], (long long)C, (long long)G);
    if (b && (b->dt != SD_OV_F32 || b->n != M))
        return sd_err(SD_EFORMAT, "Conv bias of %lld elements for %lld outputs", (long long)(b ? b->n : 0),
                      (long long)M);
    geo2 g;
    if ((rc = geometry(e, sp, x->d + 2, w->d + 2, 0, &g))) return rc;
    int64_t od[4] = { N, M, g.out[0], g.out[1] };
    int64_t od1[3] = { N, M, g.out[1] };
    if ((rc = val_alloc(e->out[0], SD_OV_F32, x->nd, sp == 2 ? od : od1))) return rc;
    float *y = F(e->out[0]);
    int fast = g.dl[0] == 1 && g.dl[1] == 1 && g.s[0] == g.s[1] && sp == 2 && g.p0[0] < (1 << 20) &&
               g.p1[0] < (1 << 20) && g.p0[1] < (1 << 20) && g.p1[1] < (1 << 20);
    if (fast && (G == 1 || (G == C && M == C))) {
        sd_tensor tx = sd_tensor_wrap(x->p, SD_F32, 4, x->d), tw = sd_tensor_wrap(w->p, SD_F32, 4, w->d),
                  ty = sd_tensor_wrap(y, SD_F32, 4, od), tb;
        if (b) tb = sd_tensor_wrap(b->p, SD_F32, 1, &M);
        sd_conv2d_geom cg = { (int)g.s[0], (int)g.p0[0], (int)g.p0[1], (int)g.p1[0], (int)g.p1[1] };
        rc = G == 1 ? sd_op_conv2d(e->ctx, &ty, &tx, &tw, b ? &tb : NULL, cg)
                    : sd_op_conv2d_dw(e->ctx, &ty, &tx, &tw, b ? &tb : NULL, cg);
        return rc;
    }
    /* generic: im2col per image and group + sgemm */
    int64_t H = g.in[0], W = g.in[1], Ho = g.out[0], Wo = g.out[1], Cg = C / G, Mg = M / G, kh = g.k[0], kw = g.k[1];
    int64_t rows = Cg * kh * kw, cols = Ho * Wo;
    if (rows > INT32_MAX || cols > INT32_MAX || rows * cols > ((int64_t)1 << 32))
        return sd_err(SD_EUNSUPPORTED, "Conv im2col buffer beyond 2^32 elements");
    float *col = malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * sizeof(float));
    if (!col) return sd_err(SD_ENOMEM, "out of memory");
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < G; gi++) {
            const float *xs = F(x) + (n * C + gi * Cg) * H * W;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
            for (int64_t r = 0; r < rows; r++) {
                int64_t c = r / (kh * kw), ki = (r / kw) % kh, kj = r % kw;
                float *dst = col + r * cols;
                for (int64_t oi = 0; oi < Ho; oi++) {
                    int64_t ii = oi * g.s[0] - g.p0[0] + ki * g.dl[0];
                    for (int64_t oj = 0; oj < Wo; oj++) {
                        int64_t jj = oj * g.s[1] - g.p0[1] + kj * g.dl[1];
                        dst[oi * Wo + oj] = ii >= 0 && ii < H && jj >= 0 && jj < W ? xs[(c * H + ii) * W + jj] : 0.0f;
                    }
                }
            }
            float *ys = y + (n * M + gi * Mg) * cols;
            if (Mg && cols)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Mg, (int)cols, (int)rows, 1.0f,
                            F(w) + gi * Mg * rows, (int)rows, col, (int)cols, 0.0f, ys, (int)cols);
            if (b)
                for (int64_t m = 0; m < Mg; m++)
                    for (int64_t q = 0; q < cols; q++) ys[m * cols + q] += F(b)[gi * Mg + m];
        }
    free(col);
    return SD_OK;
}

static int pool(ectx *e, int avg, int global)
{
    int rc = need_in(e, 0, SD_OV_F32);
    if (rc) return rc;
    const val *x = e->in[0];
    int sp = x->nd - 2;
    if (global) {
        if (sp < 1) return sd_err(SD_EFORMAT, "global pool of a %d-D input", x->nd);
        int64_t d[MAXD], inner = prod(x->d, 2, x->nd), rows = x->d[0] * x->d[1];
        for (int i = 0; i < x->nd; i++) d[i] = i < 2 ? x->d[i] : 1;
        if ((rc = val_alloc(e->out[0], SD_OV_F32, x->nd, d))) return rc;
        for (int64_t r = 0; r < rows; r++) {
            const float *s = F(x) + r * inner;
            double acc = avg ? 0.0 : -INFINITY;
            for (int64_t i = 0; i < inner; i++) acc = avg ? acc + s[i] : (s[i] > acc ? s[i] : acc);
            F(e->out[0])[r] = (float)(avg ? acc / (double)inner : acc);
        }
        return SD_OK;
    }
    if (sp != 1 && sp != 2) return sd_err(SD_EUNSUPPORTED, "pooling with %d spatial axes (1 or 2 supported)", sp);
    geo2 g;
    if ((rc = geometry(e, sp, x->d + 2, NULL, (int)ai(e, "ceil_mode", 0), &g))) return rc;
    if (avg && (g.dl[0] != 1 || g.dl[1] != 1)) return sd_err(SD_EUNSUPPORTED, "AveragePool with dilations");
    if (!avg && e->nout > 1 && e->out[1]) return sd_err(SD_EUNSUPPORTED, "MaxPool Indices output");
    int cip = (int)ai(e, "count_include_pad", 0);
    int64_t od[4] = { x->d[0], x->d[1], g.out[0], g.out[1] }, od1[3] = { x->d[0], x->d[1], g.out[1] };
    if ((rc = val_alloc(e->out[0], SD_OV_F32, x->nd, sp == 2 ? od : od1))) return rc;
    int64_t H = g.in[0], W = g.in[1], rows = x->d[0] * x->d[1];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t oi = 0; oi < g.out[0]; oi++)
            for (int64_t oj = 0; oj < g.out[1]; oj++) {
                double acc = avg ? 0.0 : -INFINITY;
                int64_t cnt = 0, cntp = 0;
                for (int64_t ki = 0; ki < g.k[0]; ki++)
                    for (int64_t kj = 0; kj < g.k[1]; kj++) {
                        int64_t ii = oi * g.s[0] - g.p0[0] + ki * g.dl[0], jj = oj * g.s[1] - g.p0[1] + kj * g.dl[1];
                        if (ii < H + g.p1[0] && jj < W + g.p1[1]) cntp++;
                        if (ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                        float v = F(x)[(r * H + ii) * W + jj];
                        if (avg)
                            acc += v;
                        else if (v > acc)
                            acc = v;
                        cnt++;
                    }
                if (avg) acc = (cip ? cntp : cnt) ? acc / (double)(cip ? cntp : cnt) : 0.0;
                F(e->out[0])[(r * g.out[0] + oi) * g.out[1] + oj] = (float)acc;
            }
    return SD_OK;
}
static int op_avgpool(ectx *e) { return pool(e, 1, 0); }
static int op_maxpool(ectx *e) { return pool(e, 0, 0); }
static int op_gavgpool(ectx *e) { return pool(e, 1, 1); }
static int op_gmaxpool(ectx *e) { return pool(e, 0, 1); }

/* ---- registry ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    opfn fn;
} ops[] = {
    { "Add", op_add },
    { "Sub", op_sub },
    { "Mul", op_mul },
    { "Div", op_div },
    { "Pow", op_pow },
    { "Mod", op_mod },
    { "Max", op_max },
    { "Min", op_min },
    { "Sum", op_sum },
    { "Mean", op_mean },
    { "Equal", op_eq },
    { "Less", op_lt },
    { "Greater", op_gt },
    { "LessOrEqual", op_le },
    { "GreaterOrEqual", op_ge },
    { "And", op_and },
    { "Or", op_or },
    { "Not", op_not },
    { "Where", op_where },
    { "Sqrt", op_sqrt },
    { "Erf", op_erf },
    { "Tanh", op_tanh },
    { "Sigmoid", op_sigmoid },
    { "Relu", op_relu },
    { "LeakyRelu", op_leaky },
    { "Elu", op_elu },
    { "Gelu", op_gelu },
    { "HardSigmoid", op_hsig },
    { "HardSwish", op_hswish },
    { "Softplus", op_softplus },
    { "Exp", op_exp },
    { "Log", op_log },
    { "Neg", op_neg },
    { "Abs", op_abs },
    { "Floor", op_floor },
    { "Ceil", op_ceil },
    { "Round", op_round },
    { "Sin", op_sin },
    { "Cos", op_cos },
    { "Sign", op_sign },
    { "Reciprocal", op_recip },
    { "Clip", op_clip },
    { "ReduceMean", op_rmean },
    { "ReduceSum", op_rsum },
    { "ReduceMax", op_rmax },
    { "ReduceMin", op_rmin },
    { "ReduceProd", op_rprod },
    { "ReduceL2", op_rl2 },
    { "ReduceSumSquare", op_rsumsq },
    { "Softmax", op_softmax },
    { "LogSoftmax", op_logsoftmax },
    { "LayerNormalization", op_layernorm },
    { "BatchNormalization", op_batchnorm },
    { "MatMul", op_matmul },
    { "Gemm", op_gemm },
    { "Einsum", op_einsum },
    { "Conv", op_conv },
    { "GlobalAveragePool", op_gavgpool },
    { "GlobalMaxPool", op_gmaxpool },
    { "AveragePool", op_avgpool },
    { "MaxPool", op_maxpool },
    { "Transpose", op_transpose },
    { "Reshape", op_reshape },
    { "Flatten", op_flatten },
    { "Squeeze", op_squeeze },
    { "Unsqueeze", op_unsqueeze },
    { "Concat", op_concat },
    { "Split", op_split },
    { "Slice", op_slice },
    { "Gather", op_gather },
    { "Tile", op_tile },
    { "Pad", op_pad },
    { "Shape", op_shape },
    { "Size", op_size },
    { "Cast", op_cast },
    { "CastLike", op_castlike },
    { "Constant", op_constant },
    { "ConstantOfShape", op_constant_of_shape },
    { "Expand", op_expand },
    { "Range", op_range },
    { "Identity", op_identity },
    { "Dropout", op_identity },
};

static opfn find_op(const char *name)
{
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (!strcmp(ops[i].name, name)) return ops[i].fn;
    return NULL;
}

/* ---- graph --------------------------------------------------------------------------------- */

static uint32_t hstr(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* value index of `name`, added when `add` */
static int value_id(sd_onnx_run *r, char *name, int add)
{
    uint32_t h = hstr(name) & (uint32_t)(r->hcap - 1);
    while (r->hash[h] >= 0) {
        if (!strcmp(r->names[r->hash[h]], name)) return r->hash[h];
        h = (h + 1) & (uint32_t)(r->hcap - 1);
    }
    if (!add) return -1;
    r->names[r->nvals] = name;
    r->hash[h] = r->nvals;
    return r->nvals++;
}

void sd_onnx_run_close(sd_onnx_run *r)
{
    if (r->vals)
        for (int i = 0; i < r->nvals; i++) {
            r->vals[i].konst = 0;
            val_free(&r->vals[i]);
        }
    if (r->nin)
        for (int i = 0; i < r->m.nnodes; i++) {
            free(r->nin[i]);
            free(r->nout[i]);
        }
    free(r->nin);
    free(r->nout);
    free(r->vals);
    free(r->names);
    free(r->hash);
    free(r->order);
    free(r->last);
    free(r->path);
    sd_onnx_free(&r->m);
    memset(r, 0, sizeof *r);
}

static int open_graph(sd_onnx_run *r)
{
    sd_onnx_model *m = &r->m;
    int64_t cap = m->ninits + m->ninputs + m->noutputs;
    for (int i = 0; i < m->nnodes; i++) cap += m->nodes[i].nin + m->nodes[i].nout;
    if (cap > (1 << 26)) return sd_err(SD_EUNSUPPORTED, "graph too large");
    r->hcap = 16;
    while (r->hcap < 2 * cap) r->hcap *= 2;
    r->hash = malloc(sizeof(int) * (size_t)r->hcap);
    r->names = calloc((size_t)cap + 1, sizeof(char *));
    r->vals = calloc((size_t)cap + 1, sizeof(val));
    r->nin = calloc((size_t)m->nnodes + 1, sizeof(int *));
    r->nout = calloc((size_t)m->nnodes + 1, sizeof(int *));
    r->order = malloc(sizeof(int) * ((size_t)m->nnodes + 1));
    if (!r->hash || !r->names || !r->vals || !r->nin || !r->nout || !r->order)
        return sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < r->hcap; i++) r->hash[i] = -1;
    char *empty = "";
    (void)empty;
    for (int i = 0; i < m->ninits; i++) {
        int id = value_id(r, m->inits[i].name, 1);
        if (r->vals[id].dt) return sd_err(SD_EFORMAT, "initializer '%s' appears twice", m->inits[i].name);
        /* the parsed data (float or int64, as values hold them) becomes the value's */
        const sd_onnx_tensor *t = &m->inits[i];
        val *v = &r->vals[id];
        int isf = t->dtype == SD_ONNX_FLOAT || t->dtype == SD_ONNX_FLOAT16 || t->dtype == SD_ONNX_BFLOAT16 ||
                  t->dtype == SD_ONNX_DOUBLE;
        int rc = val_alloc(v, isf ? SD_OV_F32 : SD_OV_I64, t->ndim, t->dims);
        if (rc) return sd_err_prefix(rc, "initializer '%s'", t->name);
        if (t->data) {
            free(v->p);
            v->p = t->data;
            m->inits[i].data = NULL;
        }
        v->konst = 1;
    }
    r->input = -1;
    for (int i = 0; i < m->ninputs; i++) {
        int id = value_id(r, m->inputs[i].name, 1);
        if (r->vals[id].konst) continue;
        if (r->input >= 0)
            return sd_err(SD_EUNSUPPORTED, "the graph has more than one input ('%s', '%s')", r->names[r->input],
                          m->inputs[i].name);
        r->input = id;
        r->in_info = m->inputs[i];
    }
    if (r->input < 0) return sd_err(SD_EFORMAT, "the graph has no input");
    if (m->noutputs < 1) return sd_err(SD_EFORMAT, "the graph has no output");
    r->out_info = m->outputs[0];
    /* producers */
    int *producer = NULL, *pending = calloc((size_t)m->nnodes + 1, sizeof(int));
    int rc = pending ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < m->nnodes; i++) {
        sd_onnx_node *n = &m->nodes[i];
        if (*n->domain && strcmp(n->domain, "ai.onnx"))
            rc = sd_err(SD_EUNSUPPORTED, "operator %s of domain %s (node '%s') is not supported", n->op_type, n->domain,
                        n->name);
        else if (!find_op(n->op_type))
            rc = sd_err(SD_EUNSUPPORTED, "operator %s (node '%s') is not supported", n->op_type, n->name);
        for (int k = 0; !rc && k < n->nattr; k++)
            if (n->attrs[k].type == SD_ONNX_ATTR_GRAPH || n->attrs[k].type == 10 /* GRAPHS */)
                rc = sd_err(SD_EUNSUPPORTED, "operator %s (node '%s') has a subgraph; not supported", n->op_type,
                            n->name);
        if (rc) break;
        r->nin[i] = malloc(sizeof(int) * ((size_t)n->nin + 1));
        r->nout[i] = malloc(sizeof(int) * ((size_t)n->nout + 1));
        if (!r->nin[i] || !r->nout[i]) rc = sd_err(SD_ENOMEM, "out of memory");
        for (int k = 0; !rc && k < n->nout; k++) r->nout[i][k] = *n->out[k] ? value_id(r, n->out[k], 1) : -1;
    }
    if (!rc) {
        producer = malloc(sizeof(int) * ((size_t)r->nvals + 1));
        if (!producer) rc = sd_err(SD_ENOMEM, "out of memory");
    }
    if (!rc) {
        for (int i = 0; i < r->nvals; i++) producer[i] = -1;
        for (int i = 0; !rc && i < m->nnodes; i++)
            for (int k = 0; k < m->nodes[i].nout; k++) {
                int v = r->nout[i][k];
                if (v < 0) continue;
                if (producer[v] >= 0 || r->vals[v].konst || v == r->input) {
                    rc = sd_err(SD_EFORMAT, "value '%s' is produced twice (node '%s')", r->names[v], m->nodes[i].name);
                    break;
                }
                producer[v] = i;
            }
    }
    for (int i = 0; !rc && i < m->nnodes; i++) {
        sd_onnx_node *n = &m->nodes[i];
        for (int k = 0; k < n->nin; k++) {
            if (!*n->in[k]) {
                r->nin[i][k] = -1;
                continue;
            }
            int v = value_id(r, n->in[k], 0);
            if (v < 0 || (!r->vals[v].konst && v != r->input && producer[v] < 0)) {
                rc = sd_err(SD_EFORMAT, "node '%s' (%s) reads '%s', which nothing produces", n->name, n->op_type,
                            n->in[k]);
                break;
            }
            r->nin[i][k] = v;
            if (producer[v] >= 0) pending[i]++;
        }
    }
    /* Kahn's algorithm, stable in the file's order */
    int done = 0;
    if (!rc) {
        int *ready = malloc(sizeof(int) * ((size_t)m->nnodes + 1));
        int *cons_cnt = calloc((size_t)r->nvals + 1, sizeof(int));
        if (!ready || !cons_cnt) rc = sd_err(SD_ENOMEM, "out of memory");
        int head = 0, tail = 0;
        for (int i = 0; !rc && i < m->nnodes; i++)
            if (!pending[i]) ready[tail++] = i;
        /* consumers lists via counting */
        int *cstart = NULL, *clist = NULL;
        if (!rc) {
            cstart = calloc((size_t)r->nvals + 2, sizeof(int));
            int64_t tot = 0;
            for (int i = 0; i < m->nnodes; i++) tot += m->nodes[i].nin;
            clist = malloc(sizeof(int) * ((size_t)tot + 1));
            if (!cstart || !clist) rc = sd_err(SD_ENOMEM, "out of memory");
        }
        if (!rc) {
            for (int i = 0; i < m->nnodes; i++)
                for (int k = 0; k < m->nodes[i].nin; k++)
                    if (r->nin[i][k] >= 0) cstart[r->nin[i][k] + 1]++;
            for (int v = 0; v < r->nvals; v++) cstart[v + 1] += cstart[v];
            for (int i = 0; i < m->nnodes; i++)
                for (int k = 0; k < m->nodes[i].nin; k++) {
                    int v = r->nin[i][k];
                    if (v >= 0) clist[cstart[v] + cons_cnt[v]++] = i;
                }
            while (head < tail) {
                int i = ready[head++];
                r->order[done++] = i;
                for (int k = 0; k < m->nodes[i].nout; k++) {
                    int v = r->nout[i][k];
                    if (v < 0) continue;
                    for (int c = cstart[v]; c < cstart[v + 1]; c++)
                        if (--pending[clist[c]] == 0) ready[tail++] = clist[c];
                }
            }
            if (done != m->nnodes) rc = sd_err(SD_EFORMAT, "the graph has a cycle");
        }
        free(ready);
        free(cons_cnt);
        free(cstart);
        free(clist);
    }
    free(pending);
    if (!rc) {
        r->output = value_id(r, r->out_info.name, 0);
        if (r->output < 0 || (producer[r->output] < 0 && !r->vals[r->output].konst && r->output != r->input))
            rc = sd_err(SD_EFORMAT, "graph output '%s' is not produced", r->out_info.name);
    }
    free(producer);
    if (!rc) {
        r->last = malloc(sizeof(int) * ((size_t)r->nvals + 1));
        if (!r->last) return sd_err(SD_ENOMEM, "out of memory");
        for (int v = 0; v < r->nvals; v++) r->last[v] = -1;
        for (int p = 0; p < m->nnodes; p++) {
            int i = r->order[p];
            for (int k = 0; k < m->nodes[i].nin; k++)
                if (r->nin[i][k] >= 0) r->last[r->nin[i][k]] = p;
        }
        r->last[r->output] = m->nnodes; /* kept */
    }
    return rc;
}

int sd_onnx_run_open_model(sd_onnx_run *r, sd_onnx_model *m, const char *name)
{
    memset(r, 0, sizeof *r);
    r->m = *m;
    memset(m, 0, sizeof *m);
    r->path = strdup(name);
    int rc = r->path ? open_graph(r) : sd_err(SD_ENOMEM, "out of memory");
    if (rc) {
        rc = r->path ? sd_err_prefix(rc, "%s", name) : rc;
        sd_onnx_run_close(r);
    }
    return rc;
}

int sd_onnx_run_open(sd_onnx_run *r, const char *path)
{
    sd_onnx_model m;
    memset(r, 0, sizeof *r);
    int rc = sd_onnx_load(path, &m);
    if (rc) return rc;
    return sd_onnx_run_open_model(r, &m, path);
}

int sd_onnx_run_forward(sd_onnx_run *r, sd_ctx *ctx, const float *x, int nd, const int64_t *shape, float **y, int *ynd,
                        int64_t *yshape)
{
    *y = NULL;
    val *in = &r->vals[r->input];
    int rc = val_alloc(in, SD_OV_F32, nd, shape);
    if (rc) return sd_err_prefix(rc, "%s", r->path);
    memcpy(in->p, x, (size_t)in->n * sizeof(float));
    val *argv[256], *outv[256];
    for (int p = 0; !rc && p < r->m.nnodes; p++) {
        int i = r->order[p];
        const sd_onnx_node *n = &r->m.nodes[i];
        if (n->nin > 256 || n->nout > 256) {
            rc = sd_err(SD_EUNSUPPORTED, "node with over 256 inputs or outputs");
            break;
        }
        for (int k = 0; k < n->nin; k++) argv[k] = r->nin[i][k] >= 0 ? &r->vals[r->nin[i][k]] : NULL;
        for (int k = 0; k < n->nout; k++) outv[k] = r->nout[i][k] >= 0 ? &r->vals[r->nout[i][k]] : NULL;
        if (n->nout < 1 || !outv[0]) {
            rc = sd_err(SD_EFORMAT, "node without an output");
            break;
        }
        ectx e = { r, ctx, n, argv, n->nin, outv, n->nout, (int)(r->m.opset ? r->m.opset : 1) };
        rc = find_op(n->op_type)(&e);
        if (rc) {
            rc = sd_err_prefix(rc, "node '%s' (%s)", n->name, n->op_type);
            break;
        }
        for (int k = 0; k < n->nout; k++)
            if (outv[k] && !outv[k]->p) outv[k]->dt = 0;
        /* free what no later node reads */
        for (int k = 0; k < n->nin; k++) {
            int v = r->nin[i][k];
            if (v >= 0 && r->last[v] == p && v != r->output) val_free(&r->vals[v]);
        }
        for (int k = 0; k < n->nout; k++) {
            int v = r->nout[i][k];
            if (v >= 0 && r->last[v] < 0 && v != r->output) val_free(&r->vals[v]);
        }
    }
    val *o = &r->vals[r->output];
    if (!rc && !o->dt) rc = sd_err(SD_EFORMAT, "the output was not computed");
    if (!rc) {
        *y = malloc((size_t)(o->n ? o->n : 1) * sizeof(float));
        if (!*y) rc = sd_err(SD_ENOMEM, "out of memory");
    }
    if (!rc) {
        for (int64_t k = 0; k < o->n; k++) (*y)[k] = o->dt == SD_OV_F32 ? F(o)[k] : (float)IV(o)[k];
        *ynd = o->nd;
        for (int k = 0; k < o->nd; k++) yshape[k] = o->d[k];
    }
    /* everything but the initializers goes */
    for (int v = 0; v < r->nvals; v++) val_free(&r->vals[v]);
    return rc ? sd_err_prefix(rc, "%s", r->path) : SD_OK;
}
