/* ONNX runtime: value helpers, broadcasting, elementwise and unary operators, casts and
 * constants, shape operators (models/onnx_ops.h, models/onnx_run.h). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/kern.h" /* the kernels' fast expf/erff/tanhf (|error| < 2e-7) */
#include "models/onnx_ops.h" /* last: it defines short internal names */

/* ---- values ----------------------------------------------------------------------------------- */

/* ---- buffer pool: the running graph's freed intermediates, reused by its next allocations ---- */

static _Thread_local sd_onnx_pool *cur_pool;

void sd_onnx_pool_use(sd_onnx_pool *p) { cur_pool = p; }

void sd_onnx_pool_free(sd_onnx_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->p[i]);
    p->n = 0;
    p->bytes = 0;
}

/* give back a buffer of `cap` bytes (0: unknown size, freed) */
static void pool_put(void *ptr, int64_t cap)
{
    sd_onnx_pool *p = cur_pool;
    if (!ptr) return;
    if (!p || cap <= 0 || (size_t)cap > SD_ONNX_POOL_MAX_BYTES) {
        free(ptr);
        return;
    }
    while (p->n > 0 && (p->n == SD_ONNX_POOL_N || p->bytes + (size_t)cap > SD_ONNX_POOL_MAX_BYTES)) {
        /* drop the oldest */
        free(p->p[0]);
        p->bytes -= p->cap[0];
        memmove(p->p, p->p + 1, sizeof(void *) * (size_t)(p->n - 1));
        memmove(p->cap, p->cap + 1, sizeof(size_t) * (size_t)(p->n - 1));
        p->n--;
    }
    p->p[p->n] = ptr;
    p->cap[p->n++] = (size_t)cap;
    p->bytes += (size_t)cap;
}

/* a pooled buffer of at least `bytes` (and at most a quarter more, plus 64 kB), else NULL */
static void *pool_get(size_t bytes, int64_t *cap)
{
    sd_onnx_pool *p = cur_pool;
    if (!p) return NULL;
    int best = -1;
    for (int i = 0; i < p->n; i++)
        if (p->cap[i] >= bytes && p->cap[i] <= bytes + bytes / 4 + 65536 && (best < 0 || p->cap[i] < p->cap[best]))
            best = i;
    if (best < 0) return NULL;
    void *r = p->p[best];
    *cap = (int64_t)p->cap[best];
    p->bytes -= p->cap[best];
    p->p[best] = p->p[p->n - 1];
    p->cap[best] = p->cap[p->n - 1];
    p->n--;
    return r;
}

void val_free(val *v)
{
    if (v->konst) return;
    pool_put(v->p, v->cap);
    memset(v, 0, sizeof *v);
}

int64_t prod(const int64_t *d, int a, int b)
{
    int64_t p = 1;
    for (int i = a; i < b; i++) p *= d[i];
    return p;
}

int val_alloc(val *v, int dt, int nd, const int64_t *d)
{
    if (nd < 0 || nd > MAXD) return sd_err(SD_EUNSUPPORTED, "%d dimensions (at most %d)", nd, MAXD);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) {
        if (d[i] < 0 || (d[i] && n > ((int64_t)1 << 32) / d[i]))
            return sd_err(SD_ERANGE, "bad or too large shape (over 2^32 elements)");
        n *= d[i];
    }
    pool_put(v->p, v->cap);
    memset(v, 0, sizeof *v);
    v->dt = dt;
    v->nd = nd;
    for (int i = 0; i < nd; i++) v->d[i] = d[i];
    v->n = n;
    size_t bytes = (size_t)(n ? n : 1) * (dt == SD_OV_F32 ? 4 : 8);
    v->p = pool_get(bytes, &v->cap);
    if (!v->p) {
        v->p = malloc(bytes);
        v->cap = (int64_t)bytes;
    }
    if (!v->p) return sd_err(SD_ENOMEM, "out of memory (%lld elements)", (long long)n);
    return SD_OK;
}

size_t esz(const val *v) { return v->dt == SD_OV_F32 ? 4 : 8; }

/* copy of `a` with another shape (Reshape, Squeeze, ...) */
int val_copy_shape(val *o, const val *a, int nd, const int64_t *d)
{
    int rc = val_alloc(o, a->dt, nd, d);
    if (rc) return rc;
    if (o->n != a->n)
        return sd_err(SD_EFORMAT, "cannot reshape %lld elements to %lld", (long long)a->n, (long long)o->n);
    memcpy(o->p, a->p, (size_t)a->n * esz(a));
    return SD_OK;
}

int val_view(ectx *e, int nd, const int64_t *d)
{
    val *a = e->in[0], *o = e->out[0];
    if (!e->steal || a->konst || a == o) return val_copy_shape(o, a, nd, d);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= d[i] < 0 ? 0 : d[i];
    for (int i = 0; i < nd; i++)
        if (d[i] < 0) n = -1;
    if (nd < 0 || nd > MAXD || n != a->n) return val_copy_shape(o, a, nd, d); /* its error message */
    val t = *a;
    t.nd = nd;
    for (int i = 0; i < nd; i++) t.d[i] = d[i];
    memset(a, 0, sizeof *a);
    val_free(o);
    *o = t;
    return SD_OK;
}

/* an int64 list from a 0-D/1-D tensor */
int ints_of(const val *v, int64_t *out, int max, int *n, const char *what)
{
    if (!v || v->dt != SD_OV_I64) return sd_err(SD_EFORMAT, "%s must be an int64 tensor", what);
    if (v->nd > 1 || v->n > max) return sd_err(SD_EFORMAT, "%s must be a list of at most %d", what, max);
    for (int64_t i = 0; i < v->n; i++) out[i] = IV(v)[i];
    *n = (int)v->n;
    return SD_OK;
}

double scalar_of(const val *v) { return v->dt == SD_OV_F32 ? (double)F(v)[0] : (double)IV(v)[0]; }

/* ---- attributes ---------------------------------------------------------------------------- */

int64_t ai(ectx *e, const char *name, int64_t def)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    return a && a->type == SD_ONNX_ATTR_INT ? a->i : def;
}
float af(ectx *e, const char *name, float def)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    return a && a->type == SD_ONNX_ATTR_FLOAT ? a->f : def;
}
const char *as(ectx *e, const char *name, const char *def)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    return a && a->type == SD_ONNX_ATTR_STRING ? a->s : def;
}
/* INTS attribute: count (-1 absent) */
int aints(ectx *e, const char *name, int64_t *out, int max)
{
    const sd_onnx_attr *a = sd_onnx_attr_find(e->n, name);
    if (!a || a->type != SD_ONNX_ATTR_INTS) return -1;
    int n = a->n < max ? a->n : max;
    for (int i = 0; i < n; i++) out[i] = a->ints[i];
    return a->n > max ? -2 : n;
}

int need_in(ectx *e, int k, int dt)
{
    if (k >= e->nin || !e->in[k]) return sd_err(SD_EFORMAT, "input %d is missing", k);
    if (dt && e->in[k]->dt != dt)
        return sd_err(SD_EUNSUPPORTED, "input %d is %s, expected %s", k,
                      e->in[k]->dt == SD_OV_F32 ? "float" : "integer", dt == SD_OV_F32 ? "float" : "integer");
    return SD_OK;
}
val *opt_in(ectx *e, int k) { return k < e->nin ? e->in[k] : NULL; }

int norm_axis(int64_t ax, int nd, int64_t *out)
{
    *out = 0;
    if (ax < -nd || ax >= (nd ? nd : 1))
        return sd_err(SD_EFORMAT, "axis %lld out of range for %d dimensions", (long long)ax, nd);
    *out = ax < 0 ? ax + nd : ax;
    return SD_OK;
}

/* ---- broadcasting ------------------------------------------------------------------------- */


int bshape(const val **ops, int nop, int *nd, int64_t *d)
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

void bplan_make(bplan *p, const val **ops, int nop, int nd, const int64_t *d)
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
void bplan_row(const bplan *p, int64_t row, int64_t *off)
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
    return val_view(e, e->in[0]->nd, e->in[0]->d);
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

int val_from_tensor(val *o, const sd_onnx_tensor *t)
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
    return val_view(e, nd, d);
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
    return val_view(e, 2, d);
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
    return val_view(e, nd, d);
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
    return val_view(e, nd, d);
}

/* general permutation copy */
/* float [batch, R, C] -> [batch, C, R] in 32x32 tiles (both sides stay in cache) */
static void transpose_tiled(float *dst, const float *src, int64_t batch, int64_t R, int64_t C)
{
    int64_t tr = (R + 31) / 32, tc = (C + 31) / 32;
#pragma omp parallel for collapse(2) schedule(static) if (batch * R * C > 65536)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t < tr * tc; t++) {
            int64_t r0 = t / tc * 32, c0 = t % tc * 32, r1 = r0 + 32 < R ? r0 + 32 : R, c1 = c0 + 32 < C ? c0 + 32 : C;
            const float *x = src + b * R * C;
            float *y = dst + b * R * C;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++) y[c * R + r] = x[r * C + c];
        }
}

/* a permutation that is, once size-1 axes are dropped and axes that stay adjacent are merged, a
 * transpose of the last two axes under unchanged leading ones ([batch, R, C] -> [batch, C, R]): 1 and
 * the three sizes, else 0 */
static int as_batched_transpose(int nd, const int64_t *d, const int *perm, int64_t *batch, int64_t *R, int64_t *C)
{
    int map[MAXD], n2 = 0, p2[MAXD], np = 0;
    int64_t d2[MAXD];
    for (int i = 0; i < nd; i++) {
        map[i] = d[i] != 1 ? n2 : -1;
        if (d[i] != 1) d2[n2++] = d[i];
    }
    for (int i = 0; i < nd; i++)
        if (map[perm[i]] >= 0) p2[np++] = map[perm[i]];
    /* groups (output order) of input axes that stay consecutive */
    int gs[MAXD], gl[MAXD], ng = 0;
    for (int i = 0; i < np; i++) {
        if (ng && p2[i] == p2[i - 1] + 1) {
            gl[ng - 1]++;
        } else {
            gs[ng] = p2[i];
            gl[ng++] = 1;
        }
    }
    if (ng < 2) return 0;
    /* rank of each group among the groups in input order */
    for (int g = 0; g < ng; g++) {
        int rank = 0;
        for (int h = 0; h < ng; h++) rank += gs[h] < gs[g];
        int want = g < ng - 2 ? g : g == ng - 2 ? ng - 1 : ng - 2;
        if (rank != want) return 0;
    }
    *batch = 1;
    for (int g = 0; g < ng - 2; g++) *batch *= prod(d2, gs[g], gs[g] + gl[g]);
    *R = prod(d2, gs[ng - 1], gs[ng - 1] + gl[ng - 1]);
    *C = prod(d2, gs[ng - 2], gs[ng - 2] + gl[ng - 2]);
    return 1;
}

void permute(void *dst, const void *src, size_t es, int nd, const int64_t *d, const int *perm)
{
    int64_t tb, tR, tC;
    if (es == 4 && nd <= MAXD && as_batched_transpose(nd, d, perm, &tb, &tR, &tC) && tb * tR * tC == prod(d, 0, nd) &&
        tR > 1 && tC > 1) {
        transpose_tiled(dst, src, tb, tR, tC);
        return;
    }
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
int expand_to(val *o, const val *a, int nd, const int64_t *d)
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

const sd_onnx_opdef sd_onnx_ops_elem[] = {
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
    { NULL, NULL },
};
