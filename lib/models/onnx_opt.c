/* ONNX runtime: the graph-optimisation pass run at open (models/onnx_run.h) and its fused steps.
 *
 * 1. Constant folding: a node whose inputs are all initializers (or folded values), Constant nodes
 *    included, is evaluated once here; its outputs become constants (the shrunken test graphs' Casts of
 *    float16 weights, torch's weight reshapes). Not folded: Conv, and ConstantOfShape, Expand, Tile,
 *    Range and Pad, whose output sizes come from values rather than input sizes.
 * 2. Patterns, each a chain of nodes whose intermediate values nothing else reads (not the graph
 *    output either): a value read by a node outside the chain stops the fusion.
 *      LAYERNORM  ReduceMean(x) -> Sub(x, ·) -> Pow(·, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Div
 *                 [-> Mul(gamma) [-> Add(beta)]] (torch's opset < 17 export, tf2onnx) -> layer_norm
 *      ACT        Erf GELU  (Div(x, √2) | Mul(x, 1/√2)) -> Erf -> Add(1) -> Mul(x, ·) -> Mul(0.5)
 *                 (or Mul(Mul(x, 0.5), ·)); Tanh GELU  x + 0.044715·x³ (Pow(x,3) or Mul(x, Mul(x,x)))
 *                 -> Mul(√(2/π)) -> Tanh -> Add(1) -> the same tail; SiLU  Mul(x, Sigmoid(x))
 *      LINEAR     MatMul(x, W constant 2-D) [-> Add(bias constant [N])] [-> Relu | an ACT above]:
 *                 one sgemm and one pass for bias and activation
 *      MATMUL_T   MatMul(a, Transpose(b) swapping the last two axes) [a = Mul(a', scalar constant)]:
 *                 sgemm with b transposed and alpha (attention scores q·kᵀ·scale)
 *      CONV       Conv(x, W, B constant) [-> BatchNormalization (constants: folded into W, B)]
 *                 [-> Relu | an ACT above]
 *      ATTN       MatMul(Softmax(MatMul([Mul(q, scalar)], Transpose(k) of the last two axes)), v)
 *                 (torch's scaled dot-product attention, q, k, v [..., T, d]): the attention kernel
 *                 of tensor/ops.h (one head per leading index), no score matrix stored
 *    The fused step runs at its last node's place. When it runs, it checks the shapes it was built
 *    for (the last axis for a LayerNorm, the inner size of a MatMul, ...) and otherwise runs its
 *    member nodes as written, so a fusion never changes which graphs run. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tensor/ops.h"
#include "models/onnx_ops.h" /* last: it defines short internal names */

typedef struct G {
    sd_onnx_run *r;
    int *prod;            /* value -> producing node (-1) */
    int *cstart, *clist;  /* value -> consuming nodes (with repeats) */
    int *pos;             /* node -> position in r->order */
    int *owner;           /* node -> fused step (-1) */
} G;

static const sd_onnx_node *node(G *g, int i) { return &g->r->m.nodes[i]; }

/* node i, still a plain node, of type op */
static int is(G *g, int i, const char *op)
{
    return i >= 0 && g->owner[i] < 0 && g->r->step[i] == -1 && !strcmp(node(g, i)->op_type, op);
}
static int in_of(G *g, int i, int k) { return k < node(g, i)->nin ? g->r->nin[i][k] : -1; }
static int out_of(G *g, int i) { return g->r->nout[i][0]; }
static int prod_of(G *g, int v) { return v >= 0 ? g->prod[v] : -1; }

/* the one node that reads v (possibly in two of its inputs), else -1; never for the graph output */
static int only_cons(G *g, int v)
{
    if (v < 0 || v == g->r->output) return -1;
    int c = -1;
    for (int k = g->cstart[v]; k < g->cstart[v + 1]; k++) {
        if (c >= 0 && g->clist[k] != c) return -1;
        c = g->clist[k];
    }
    return c;
}

static int konst_f32(G *g, int v) { return v >= 0 && g->r->vals[v].konst && g->r->vals[v].dt == SD_OV_F32; }

/* a constant of one element and rank 0 or 1 (it broadcasts without raising an input's rank) */
static int konst_scalar(G *g, int v, float *f)
{
    if (v < 0 || !g->r->vals[v].konst || g->r->vals[v].n != 1 || g->r->vals[v].nd > 1) return 0;
    const val *x = &g->r->vals[v];
    *f = x->dt == SD_OV_F32 ? F(x)[0] : (float)IV(x)[0];
    return 1;
}

static int near(float a, double b) { return fabs(a - b) <= 1e-6 * fabs(b) + 1e-7; }

/* binary node i reading v: its other operand (-1 when v is not an operand or both are v) */
static int other(G *g, int i, int v)
{
    int a = in_of(g, i, 0), b = in_of(g, i, 1);
    if (node(g, i)->nin != 2 || a == b) return -1;
    return a == v ? b : b == v ? a : -1;
}

/* binary node i = op(v, scalar constant) in either order (Sub/Div: v first): the constant */
static int with_scalar(G *g, int i, int v, float *c)
{
    int o = other(g, i, v);
    if (o < 0 || !konst_scalar(g, o, c)) return 0;
    if ((!strcmp(node(g, i)->op_type, "Div") || !strcmp(node(g, i)->op_type, "Sub") ||
         !strcmp(node(g, i)->op_type, "Pow")) &&
        in_of(g, i, 0) != v)
        return 0;
    return 1;
}

typedef struct mem {
    int n, m[FUSED_MAXMEM];
} mem;

static void add(mem *s, int i)
{
    if (s->n < FUSED_MAXMEM) s->m[s->n] = i;
    s->n++;
}

/* every value the members produce, but `out`, is read only by members and is not the graph output;
 * members have one output each */
static int closed(G *g, const mem *s, int out)
{
    if (s->n > FUSED_MAXMEM || out < 0 || g->prod[out] < 0) return 0;
    int last = g->pos[g->prod[out]];
    for (int a = 0; a < s->n; a++) {
        int i = s->m[a];
        if (g->owner[i] >= 0 || g->r->step[i] != -1 || g->pos[i] > last) return 0;
        for (int k = 1; k < node(g, i)->nout; k++)
            if (g->r->nout[i][k] >= 0 && (g->cstart[g->r->nout[i][k] + 1] > g->cstart[g->r->nout[i][k]] ||
                                          g->r->nout[i][k] == g->r->output))
                return 0;
        int v = out_of(g, i);
        if (v == out) continue;
        if (v < 0 || v == g->r->output) return 0;
        for (int k = g->cstart[v]; k < g->cstart[v + 1]; k++) {
            int c = g->clist[k], found = 0;
            for (int b = 0; b < s->n; b++) found |= s->m[b] == c;
            if (!found) return 0;
        }
    }
    return 1;
}

/* a new fused step of kind k over the members of s (sorted into execution order) */
static sd_onnx_fused *new_fused(G *g, int kind, const mem *s, int out)
{
    sd_onnx_run *r = g->r;
    if ((r->nfused & (r->nfused - 1)) == 0) {
        sd_onnx_fused *t = realloc(r->fused, sizeof *t * (size_t)(r->nfused ? 2 * r->nfused : 16));
        if (!t) return NULL;
        r->fused = t;
    }
    sd_onnx_fused *f = &r->fused[r->nfused];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->out = out;
    f->in[0] = f->in[1] = f->in[2] = -1;
    f->nmem = s->n;
    memcpy(f->mem, s->m, sizeof(int) * (size_t)s->n);
    for (int a = 1; a < f->nmem; a++) /* insertion sort by position */
        for (int b = a; b > 0 && g->pos[f->mem[b]] < g->pos[f->mem[b - 1]]; b--) {
            int t = f->mem[b];
            f->mem[b] = f->mem[b - 1];
            f->mem[b - 1] = t;
        }
    f->anchor = f->mem[f->nmem - 1];
    for (int a = 0; a < f->nmem; a++) g->owner[f->mem[a]] = r->nfused;
    r->nfused++;
    return f;
}

/* a fused step no longer used (absorbed into a bigger one): its members become free again */
static void release(G *g, int k)
{
    sd_onnx_fused *f = &g->r->fused[k];
    for (int a = 0; a < f->nmem; a++) g->owner[f->mem[a]] = -1;
    f->kind = FK_NONE;
    f->nmem = 0;
}

/* ---- patterns ---------------------------------------------------------------------------------- */

/* the GELU tail from t (output of Tanh/Erf): Add(t, 1) -> Mul(x, ·) -> Mul(0.5) or Mul(Mul(x,0.5), ·);
 * returns the final value, members added */
static int gelu_tail(G *g, int t, int x, mem *s)
{
    float c;
    int a1 = only_cons(g, t);
    if (!is(g, a1, "Add") || !with_scalar(g, a1, t, &c) || !near(c, 1.0)) return -1;
    add(s, a1);
    int h = out_of(g, a1), m1 = only_cons(g, h);
    if (!is(g, m1, "Mul")) return -1;
    add(s, m1);
    int q = other(g, m1, h);
    if (q == x) {
        int m2 = only_cons(g, out_of(g, m1));
        if (!is(g, m2, "Mul") || !with_scalar(g, m2, out_of(g, m1), &c) || c != 0.5f) return -1;
        add(s, m2);
        return out_of(g, m2);
    }
    int mh = prod_of(g, q);
    if (!is(g, mh, "Mul") || other(g, mh, x) < 0 || !with_scalar(g, mh, x, &c) || c != 0.5f) return -1;
    add(s, mh);
    return out_of(g, m1);
}

static int match_act(G *g, int i)
{
    mem s = { 0 };
    float c;
    int x = -1, y = -1, act = 0;
    const char *op = node(g, i)->op_type;
    add(&s, i);
    if (!strcmp(op, "Sigmoid")) {
        x = in_of(g, i, 0);
        int m = only_cons(g, out_of(g, i));
        if (!is(g, m, "Mul") || other(g, m, out_of(g, i)) != x) return 0;
        add(&s, m);
        y = out_of(g, m);
        act = SD_ACT_SILU;
    } else if (!strcmp(op, "Erf")) {
        int u = in_of(g, i, 0), pu = prod_of(g, u);
        if (is(g, pu, "Div")) {
            x = in_of(g, pu, 0);
            if (!with_scalar(g, pu, x, &c) || !near(c, 1.4142135623730951)) return 0;
        } else if (is(g, pu, "Mul")) {
            x = konst_scalar(g, in_of(g, pu, 0), &c) ? in_of(g, pu, 1) : in_of(g, pu, 0);
            if (!with_scalar(g, pu, x, &c) || !near(c, 0.7071067811865476)) return 0;
        } else {
            return 0;
        }
        add(&s, pu);
        y = gelu_tail(g, out_of(g, i), x, &s);
        act = SD_ACT_GELU;
    } else { /* Tanh */
        int u = in_of(g, i, 0), pu = prod_of(g, u);
        if (!is(g, pu, "Mul")) return 0;
        int sv = konst_scalar(g, in_of(g, pu, 0), &c) ? in_of(g, pu, 1) : in_of(g, pu, 0);
        if (!with_scalar(g, pu, sv, &c) || !near(c, 0.7978845608028654)) return 0;
        add(&s, pu);
        int ps = prod_of(g, sv);
        if (!is(g, ps, "Add")) return 0;
        add(&s, ps);
        /* which operand of the Add is 0.044715·x³ */
        int w = -1;
        for (int k = 0; k < 2; k++) {
            int cand = in_of(g, ps, k), pw = prod_of(g, cand);
            if (!is(g, pw, "Mul")) continue;
            int p3 = konst_scalar(g, in_of(g, pw, 0), &c) ? in_of(g, pw, 1) : in_of(g, pw, 0);
            if (with_scalar(g, pw, p3, &c) && near(c, 0.044715)) {
                w = cand;
                x = in_of(g, ps, 1 - k);
                add(&s, pw);
                int pp = prod_of(g, p3);
                if (is(g, pp, "Pow") && in_of(g, pp, 0) == x && with_scalar(g, pp, x, &c) && c == 3.0f) {
                    add(&s, pp);
                } else if (is(g, pp, "Mul") && other(g, pp, x) >= 0) {
                    int q = other(g, pp, x), pq = prod_of(g, q);
                    if (!is(g, pq, "Mul") || in_of(g, pq, 0) != x || in_of(g, pq, 1) != x) return 0;
                    add(&s, pp);
                    add(&s, pq);
                } else {
                    return 0;
                }
                break;
            }
        }
        if (w < 0) return 0;
        y = gelu_tail(g, out_of(g, i), x, &s);
        act = SD_ACT_GELU_TANH;
    }
    if (y < 0 || x < 0 || !closed(g, &s, y)) return 0;
    sd_onnx_fused *f = new_fused(g, FK_ACT, &s, y);
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    f->in[0] = x;
    f->act = act;
    g->r->stats[SD_ONNX_OPT_ACT]++;
    return 0;
}

/* ReduceMean's single axis and keepdims = 1 */
static int reduce_axis(G *g, int i, int64_t *ax)
{
    ectx e = { g->r, NULL, node(g, i), NULL, 0, NULL, 0, g->r->m.opset ? (int)g->r->m.opset : 1, 0 };
    if (ai(&e, "keepdims", 1) != 1) return 0;
    int64_t a[2];
    int n = aints(&e, "axes", a, 2);
    if (n == -1 && node(g, i)->nin > 1) { /* opset 18: axes input */
        int v = in_of(g, i, 1);
        if (v < 0 || !g->r->vals[v].konst || g->r->vals[v].dt != SD_OV_I64 || g->r->vals[v].n != 1) return 0;
        a[0] = IV(&g->r->vals[v])[0];
        n = 1;
    }
    if (n != 1) return 0;
    *ax = a[0];
    return 1;
}

static int match_layernorm(G *g, int i)
{
    mem s = { 0 };
    float c, eps;
    int64_t ax, ax2;
    if (!reduce_axis(g, i, &ax)) return 0;
    int x = in_of(g, i, 0), m = out_of(g, i);
    add(&s, i);
    int sub = only_cons(g, m);
    if (!is(g, sub, "Sub") || in_of(g, sub, 0) != x || in_of(g, sub, 1) != m) return 0;
    add(&s, sub);
    int d = out_of(g, sub), pw = -1, dv = -1;
    for (int k = g->cstart[d]; k < g->cstart[d + 1]; k++) {
        int c2 = g->clist[k];
        if (is(g, c2, "Pow") && in_of(g, c2, 0) == d && with_scalar(g, c2, d, &c) && c == 2.0f)
            pw = c2;
        else if (is(g, c2, "Mul") && in_of(g, c2, 0) == d && in_of(g, c2, 1) == d)
            pw = c2;
        else if (is(g, c2, "Div") && in_of(g, c2, 0) == d)
            dv = c2;
    }
    if (pw < 0 || dv < 0) return 0;
    add(&s, pw);
    int rm2 = only_cons(g, out_of(g, pw));
    if (!is(g, rm2, "ReduceMean") || !reduce_axis(g, rm2, &ax2) || ax2 != ax) return 0;
    add(&s, rm2);
    int ad = only_cons(g, out_of(g, rm2));
    if (!is(g, ad, "Add") || !with_scalar(g, ad, out_of(g, rm2), &eps)) return 0;
    add(&s, ad);
    int sq = only_cons(g, out_of(g, ad));
    if (!is(g, sq, "Sqrt") || only_cons(g, out_of(g, sq)) != dv || in_of(g, dv, 1) != out_of(g, sq)) return 0;
    add(&s, sq);
    add(&s, dv);
    int y = out_of(g, dv), gam = -1, bet = -1;
    int mu = only_cons(g, y);
    if (is(g, mu, "Mul") && konst_f32(g, other(g, mu, y))) {
        gam = other(g, mu, y);
        add(&s, mu);
        y = out_of(g, mu);
        int ab = only_cons(g, y);
        if (is(g, ab, "Add") && konst_f32(g, other(g, ab, y))) {
            bet = other(g, ab, y);
            add(&s, ab);
            y = out_of(g, ab);
        }
    }
    if (!closed(g, &s, y)) return 0;
    sd_onnx_fused *f = new_fused(g, FK_LAYERNORM, &s, y);
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    f->in[0] = x;
    f->in[1] = gam;
    f->in[2] = bet;
    f->eps = eps;
    f->axis = ax;
    g->r->stats[SD_ONNX_OPT_LAYERNORM]++;
    return 0;
}

/* an activation after value y: a Relu node or an ACT step reading y; members added, the new output */
static int match_epilogue(G *g, int y, mem *s, int *act, int *absorbed)
{
    *absorbed = -1;
    if (y == g->r->output || g->cstart[y + 1] == g->cstart[y]) return y;
    int c = only_cons(g, y);
    if (is(g, c, "Relu")) {
        add(s, c);
        *act = FUSED_RELU;
        return out_of(g, c);
    }
    /* every reader of y a member of one ACT step whose input is y */
    int k = g->owner[g->clist[g->cstart[y]]];
    if (k < 0 || g->r->fused[k].kind != FK_ACT || g->r->fused[k].in[0] != y) return y;
    for (int q = g->cstart[y]; q < g->cstart[y + 1]; q++)
        if (g->owner[g->clist[q]] != k) return y;
    sd_onnx_fused *f = &g->r->fused[k];
    for (int a = 0; a < f->nmem; a++) add(s, f->mem[a]);
    *act = f->act;
    *absorbed = k;
    return f->out;
}

/* the members of an absorbed ACT step are owned by it still: closed() must see them as free */
static int closed_absorbing(G *g, const mem *s, int out, int absorbed)
{
    if (absorbed < 0) return closed(g, s, out);
    sd_onnx_fused *f = &g->r->fused[absorbed];
    for (int a = 0; a < f->nmem; a++) g->owner[f->mem[a]] = -1;
    int ok = closed(g, s, out);
    for (int a = 0; a < f->nmem; a++) g->owner[f->mem[a]] = absorbed;
    return ok;
}

static int match_linear(G *g, int i)
{
    mem s = { 0 };
    int x = in_of(g, i, 0), w = in_of(g, i, 1);
    if (!konst_f32(g, w) || g->r->vals[w].nd != 2 || x == w) return 0;
    int64_t N = g->r->vals[w].d[1];
    add(&s, i);
    int y = out_of(g, i), b = -1, act = SD_ACT_NONE, absorbed = -1;
    int ad = only_cons(g, y);
    if (is(g, ad, "Add") && konst_f32(g, other(g, ad, y))) {
        const val *bv = &g->r->vals[other(g, ad, y)];
        int ok = bv->n == N && bv->nd >= 1 && bv->d[bv->nd - 1] == N;
        if (ok) {
            b = other(g, ad, y);
            add(&s, ad);
            y = out_of(g, ad);
        }
    }
    int y2 = match_epilogue(g, y, &s, &act, &absorbed);
    if (b < 0 && y2 == y) return 0; /* a plain MatMul: nothing to gain */
    if (!closed_absorbing(g, &s, y2, absorbed)) return 0;
    if (absorbed >= 0) release(g, absorbed);
    sd_onnx_fused *f = new_fused(g, FK_LINEAR, &s, y2);
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    f->in[0] = x;
    f->in[1] = w;
    f->in[2] = b;
    f->act = act;
    g->r->stats[SD_ONNX_OPT_LINEAR]++;
    return 0;
}

/* a Transpose node swapping the last two axes (and nothing else): its rank, else 0 */
static int swap_last2(G *g, int t)
{
    if (!is(g, t, "Transpose")) return 0;
    ectx e = { g->r, NULL, node(g, t), NULL, 0, NULL, 0, 1, 0 };
    int64_t perm[MAXD];
    int np = aints(&e, "perm", perm, MAXD);
    if (np < 2) return 0;
    for (int k = 0; k < np - 2; k++)
        if (perm[k] != k) return 0;
    return perm[np - 2] == np - 1 && perm[np - 1] == np - 2 ? np : 0;
}

static int match_matmul_t(G *g, int i)
{
    mem s = { 0 };
    float c = 1.0f;
    int a = in_of(g, i, 0), t = in_of(g, i, 1), pt = prod_of(g, t), np = swap_last2(g, pt);
    if (!np || a == t) return 0;
    add(&s, pt);
    add(&s, i);
    int pa = prod_of(g, a);
    if (is(g, pa, "Mul") && only_cons(g, a) == i) {
        int q = konst_scalar(g, in_of(g, pa, 0), &c) ? in_of(g, pa, 1) : in_of(g, pa, 0);
        if (with_scalar(g, pa, q, &c) && g->r->vals[other(g, pa, q)].dt == SD_OV_F32) {
            add(&s, pa);
            a = q;
        } else {
            c = 1.0f;
        }
    }
    if (!closed(g, &s, out_of(g, i))) return 0;
    sd_onnx_fused *f = new_fused(g, FK_MATMUL_T, &s, out_of(g, i));
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    f->in[0] = a;
    f->in[1] = in_of(g, pt, 0);
    f->alpha = c;
    f->axis = np;
    g->r->stats[SD_ONNX_OPT_MATMUL_T]++;
    return 0;
}

static int match_attention(G *g, int sm)
{
    mem s = { 0 };
    float c = 1.0f;
    ectx e = { g->r, NULL, node(g, sm), NULL, 0, NULL, 0, 1, 0 };
    int opset = g->r->m.opset ? (int)g->r->m.opset : 1;
    int64_t axis = ai(&e, "axis", opset >= 13 ? -1 : 1);
    int sc = in_of(g, sm, 0), mm1 = prod_of(g, sc);
    if (!is(g, mm1, "MatMul") || only_cons(g, sc) != sm) return 0;
    int a = in_of(g, mm1, 0), t = in_of(g, mm1, 1), pt = prod_of(g, t), np = swap_last2(g, pt);
    if (!np || only_cons(g, t) != mm1 || a == t) return 0;
    int mm2 = only_cons(g, out_of(g, sm));
    if (!is(g, mm2, "MatMul") || in_of(g, mm2, 0) != out_of(g, sm) || in_of(g, mm2, 1) == out_of(g, sm)) return 0;
    add(&s, pt);
    add(&s, mm1);
    add(&s, sm);
    add(&s, mm2);
    int pa = prod_of(g, a);
    if (is(g, pa, "Mul") && only_cons(g, a) == mm1) {
        int q = konst_scalar(g, in_of(g, pa, 0), &c) ? in_of(g, pa, 1) : in_of(g, pa, 0);
        if (with_scalar(g, pa, q, &c) && g->r->vals[other(g, pa, q)].dt == SD_OV_F32 && c != 0.0f) {
            add(&s, pa);
            a = q;
        } else {
            c = 1.0f;
        }
    }
    if (!closed(g, &s, out_of(g, mm2))) return 0;
    sd_onnx_fused *f = new_fused(g, FK_ATTN, &s, out_of(g, mm2));
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    f->in[0] = a;
    f->in[1] = in_of(g, pt, 0);
    f->in[2] = in_of(g, mm2, 1);
    f->alpha = c;
    f->axis = axis;
    g->r->stats[SD_ONNX_OPT_ATTENTION]++;
    return 0;
}

static int match_conv(G *g, int i)
{
    mem s = { 0 };
    int x = in_of(g, i, 0), w = in_of(g, i, 1), b = in_of(g, i, 2);
    if (!konst_f32(g, w) || (b >= 0 && !konst_f32(g, b))) return 0;
    add(&s, i);
    int y = out_of(g, i), bn = only_cons(g, y), act = SD_ACT_NONE, absorbed = -1;
    int64_t M = g->r->vals[w].d[0];
    if (g->r->vals[w].nd < 3 || (b >= 0 && g->r->vals[b].n != M)) return 0;
    const val *bp[4] = { NULL };
    float eps = 0;
    if (is(g, bn, "BatchNormalization") && in_of(g, bn, 0) == y && node(g, bn)->nin == 5) {
        ectx e = { g->r, NULL, node(g, bn), NULL, 0, NULL, 0, 1, 0 };
        int ok = ai(&e, "training_mode", 0) == 0;
        for (int k = 0; k < 4 && ok; k++) {
            int v = in_of(g, bn, k + 1);
            ok = konst_f32(g, v) && g->r->vals[v].n == M;
            if (ok) bp[k] = &g->r->vals[v];
        }
        if (ok) {
            eps = af(&e, "epsilon", 1e-5f);
            add(&s, bn);
            y = out_of(g, bn);
        } else {
            bp[0] = NULL;
        }
    }
    int y2 = match_epilogue(g, y, &s, &act, &absorbed);
    if (!bp[0] && y2 == y) return 0;
    if (!closed_absorbing(g, &s, y2, absorbed)) return 0;
    if (absorbed >= 0) release(g, absorbed);
    sd_onnx_fused *f = new_fused(g, FK_CONV, &s, y2);
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    f->in[0] = x;
    f->in[1] = w;
    f->in[2] = b;
    f->conv = i;
    f->act = act;
    if (bp[0]) { /* W' = W·s, B' = (B - mean)·s + beta, s = scale / sqrt(var + eps) */
        const val *wv = &g->r->vals[w];
        int rc = val_alloc(&f->w, SD_OV_F32, wv->nd, wv->d);
        if (!rc) rc = val_alloc(&f->b, SD_OV_F32, 1, &M);
        if (rc) return rc;
        f->w.konst = f->b.konst = 1;
        f->folded = 1;
        int64_t per = wv->n / M;
        for (int64_t m = 0; m < M; m++) {
            float sc = F(bp[0])[m] / sqrtf(F(bp[3])[m] + eps);
            for (int64_t k = 0; k < per; k++) F(&f->w)[m * per + k] = F(wv)[m * per + k] * sc;
            F(&f->b)[m] = ((b >= 0 ? F(&g->r->vals[b])[m] : 0.0f) - F(bp[2])[m]) * sc + F(bp[1])[m];
        }
    }
    g->r->stats[SD_ONNX_OPT_CONV]++;
    return 0;
}

/* ---- constant folding ---------------------------------------------------------------------------- */

static void fold_constants(sd_onnx_run *r)
{
    for (int p = 0; p < r->m.nnodes; p++) {
        int i = r->order[p];
        const sd_onnx_node *n = &r->m.nodes[i];
        /* Conv needs a ctx; the generators (an output size from a value, not from the input sizes) stay
         * for the run, so that opening a hostile graph never allocates what its data claims */
        static const char *const skip[] = { "Conv", "ConstantOfShape", "Expand", "Tile", "Range", "Pad", NULL };
        int sk = n->nin > 16 || n->nout > 16;
        for (int k = 0; skip[k] && !sk; k++) sk = !strcmp(n->op_type, skip[k]);
        if (sk) continue;
        if (n->nin == 0 && strcmp(n->op_type, "Constant")) continue;
        int ok = 1;
        for (int k = 0; k < n->nin && ok; k++) {
            int v = r->nin[i][k];
            ok = v < 0 || (r->vals[v].konst && v != r->input);
        }
        for (int k = 0; k < n->nout && ok; k++) ok = r->nout[i][k] < 0 || !r->vals[r->nout[i][k]].dt;
        if (!ok) continue;
        val *argv[16], *outv[16];
        for (int k = 0; k < n->nin; k++) argv[k] = r->nin[i][k] >= 0 ? &r->vals[r->nin[i][k]] : NULL;
        for (int k = 0; k < n->nout; k++) outv[k] = r->nout[i][k] >= 0 ? &r->vals[r->nout[i][k]] : NULL;
        if (n->nout < 1 || !outv[0]) continue;
        ectx e = { r, NULL, n, argv, n->nin, outv, n->nout, (int)(r->m.opset ? r->m.opset : 1), 0 };
        int rc = sd_onnx_i_find_op(n->op_type)(&e);
        int computed = !rc;
        for (int k = 0; k < n->nout; k++)
            if (outv[k] && !outv[k]->p) computed = 0;
        if (!computed) { /* left to the run, which reports it */
            for (int k = 0; k < n->nout; k++)
                if (outv[k]) val_free(outv[k]);
            sd_err_clear();
            continue;
        }
        for (int k = 0; k < n->nout; k++)
            if (outv[k]) outv[k]->konst = 1;
        r->step[i] = -2;
        r->stats[SD_ONNX_OPT_FOLDED]++;
    }
}

/* ---- the pass --------------------------------------------------------------------------------- */

void sd_onnx_opt_free(sd_onnx_run *r)
{
    for (int k = 0; k < r->nfused; k++) {
        sd_onnx_fused *f = &r->fused[k];
        f->w.konst = f->b.konst = 0;
        val_free(&f->w);
        val_free(&f->b);
    }
    free(r->fused);
    r->fused = NULL;
    r->nfused = 0;
}

int sd_onnx_opt_run(sd_onnx_run *r)
{
    int nn = r->m.nnodes, nv = r->nvals, rc = SD_OK;
    fold_constants(r);
    G g = { r, NULL, NULL, NULL, NULL, NULL };
    g.prod = malloc(sizeof(int) * ((size_t)nv + 1));
    g.cstart = calloc((size_t)nv + 2, sizeof(int));
    g.pos = malloc(sizeof(int) * ((size_t)nn + 1));
    g.owner = malloc(sizeof(int) * ((size_t)nn + 1));
    int64_t tot = 0;
    for (int i = 0; i < nn; i++) tot += r->m.nodes[i].nin;
    g.clist = malloc(sizeof(int) * ((size_t)tot + 1));
    if (!g.prod || !g.cstart || !g.pos || !g.owner || !g.clist) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc) {
        for (int v = 0; v < nv; v++) g.prod[v] = -1;
        for (int p = 0; p < nn; p++) {
            int i = r->order[p];
            g.pos[i] = p;
            g.owner[i] = -1;
            if (r->step[i] != -1) continue; /* folded: reads nothing at run time */
            for (int k = 0; k < r->m.nodes[i].nout; k++)
                if (r->nout[i][k] >= 0) g.prod[r->nout[i][k]] = i;
            for (int k = 0; k < r->m.nodes[i].nin; k++)
                if (r->nin[i][k] >= 0) g.cstart[r->nin[i][k] + 1]++;
        }
        for (int v = 0; v < nv; v++) g.cstart[v + 1] += g.cstart[v];
        int *fill = calloc((size_t)nv + 1, sizeof(int));
        if (!fill) rc = sd_err(SD_ENOMEM, "out of memory");
        for (int p = 0; !rc && p < nn; p++) {
            int i = r->order[p];
            if (r->step[i] != -1) continue;
            for (int k = 0; k < r->m.nodes[i].nin; k++) {
                int v = r->nin[i][k];
                if (v >= 0) g.clist[g.cstart[v] + fill[v]++] = i;
            }
        }
        free(fill);
    }
    /* activations first (LINEAR and CONV absorb them), then the rest, in execution order */
    for (int p = 0; !rc && p < nn; p++) {
        int i = r->order[p];
        if (is(&g, i, "Tanh") || is(&g, i, "Erf") || is(&g, i, "Sigmoid")) rc = match_act(&g, i);
    }
    for (int p = 0; !rc && p < nn; p++) {
        int i = r->order[p];
        if (is(&g, i, "ReduceMean"))
            rc = match_layernorm(&g, i);
        else if (is(&g, i, "Conv"))
            rc = match_conv(&g, i);
        else if (is(&g, i, "Softmax"))
            rc = match_attention(&g, i);
    }
    for (int p = 0; !rc && p < nn; p++) {
        int i = r->order[p];
        if (is(&g, i, "MatMul")) {
            rc = match_linear(&g, i);
            if (!rc && is(&g, i, "MatMul")) rc = match_matmul_t(&g, i);
        }
    }
    if (!rc)
        for (int k = 0; k < r->nfused; k++) {
            sd_onnx_fused *f = &r->fused[k];
            if (f->kind == FK_NONE) continue;
            for (int a = 0; a < f->nmem; a++) r->step[f->mem[a]] = -2;
            r->step[f->anchor] = k;
        }
    free(g.prod);
    free(g.cstart);
    free(g.clist);
    free(g.pos);
    free(g.owner);
    return rc;
}

/* ---- running a fused step ------------------------------------------------------------------------- */

static void act_inplace(sd_ctx *ctx, int act, float *y, int64_t n)
{
    if (act == SD_ACT_NONE || !n) return;
    if (act == FUSED_RELU) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t k = 0; k < n; k++) y[k] = y[k] > 0 ? y[k] : 0;
        return;
    }
    sd_tensor t = sd_tensor_wrap(y, SD_F32, 1, &n);
    sd_op_act(ctx, (sd_act)act, &t, &t);
}

/* gamma/beta broadcast only along the last axis (size D), else not fusable here */
static int last_axis_param(const val *p, int64_t D)
{
    if (!p) return 1;
    if (p->n != D || p->nd < 1 || p->d[p->nd - 1] != D) return 0;
    return 1;
}

int sd_onnx_fused_exec(sd_onnx_run *r, sd_ctx *ctx, sd_onnx_fused *f, int *fallback)
{
    val *o = &r->vals[f->out], *x = &r->vals[f->in[0]];
    int rc;
    *fallback = 1;
    if (x->dt != SD_OV_F32 || x->nd < 1) return SD_OK;
    switch (f->kind) {
    case FK_LAYERNORM: {
        const val *gm = f->in[1] >= 0 ? &r->vals[f->in[1]] : NULL, *bt = f->in[2] >= 0 ? &r->vals[f->in[2]] : NULL;
        if (x->nd < 1 || (f->axis != -1 && f->axis != x->nd - 1)) return SD_OK;
        int64_t D = x->d[x->nd - 1], rows = D ? x->n / D : 0;
        if (!D || !last_axis_param(gm, D) || !last_axis_param(bt, D)) return SD_OK;
        if ((gm && gm->nd > x->nd) || (bt && bt->nd > x->nd)) return SD_OK; /* would raise the rank */
        *fallback = 0;
        val st = { 0 };
        int64_t sd2 = 2 * rows;
        if ((rc = val_alloc(&st, SD_OV_F32, 1, &sd2))) return rc;
        if ((rc = val_alloc(o, SD_OV_F32, x->nd, x->d))) {
            val_free(&st);
            return rc;
        }
        sd_tensor tx = sd_tensor_wrap(x->p, SD_F32, 2, (int64_t[]){ rows, D }),
                  ty = sd_tensor_wrap(o->p, SD_F32, 2, (int64_t[]){ rows, D }),
                  tm = sd_tensor_wrap(F(&st), SD_F32, 1, &rows), ts = sd_tensor_wrap(F(&st) + rows, SD_F32, 1, &rows),
                  tg = gm ? sd_tensor_wrap(gm->p, SD_F32, 1, &D) : tx, tb = bt ? sd_tensor_wrap(bt->p, SD_F32, 1, &D) : tx;
        rc = sd_op_layer_norm(ctx, &ty, &tm, &ts, &tx, gm ? &tg : NULL, bt ? &tb : NULL, f->eps);
        val_free(&st);
        return rc;
    }
    case FK_ACT:
        *fallback = 0;
        if ((rc = val_alloc(o, SD_OV_F32, x->nd, x->d))) return rc;
        if (x->n) {
            sd_tensor tx = sd_tensor_wrap(x->p, SD_F32, 1, &x->n), ty = sd_tensor_wrap(o->p, SD_F32, 1, &x->n);
            rc = sd_op_act(ctx, (sd_act)f->act, &ty, &tx);
        }
        return rc;
    case FK_LINEAR: {
        const val *w = &r->vals[f->in[1]], *b = f->in[2] >= 0 ? &r->vals[f->in[2]] : NULL;
        int64_t K = w->d[0], N = w->d[1];
        if (x->nd < 1 || x->d[x->nd - 1] != K || K > INT32_MAX || N > INT32_MAX) return SD_OK;
        int64_t M = K ? x->n / K : 0, od[MAXD];
        if (M > INT32_MAX) return SD_OK;
        int ond = x->nd == 1 ? 1 : x->nd;
        for (int k = 0; k < x->nd; k++) od[k] = x->d[k];
        od[ond - 1] = N;
        if (b && b->nd > ond) return SD_OK;
        *fallback = 0;
        if ((rc = val_alloc(o, SD_OV_F32, ond, od))) return rc;
        if (M && N) {
            if (K)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, F(x), (int)K,
                            F(w), (int)N, 0.0f, F(o), (int)N);
            else
                memset(o->p, 0, sizeof(float) * (size_t)(M * N));
            if (b) {
                float *y = F(o);
                const float *bb = F(b);
#pragma omp parallel for schedule(static) if (M * N > 65536)
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) y[m * N + n] = bb[n] + y[m * N + n];
            }
            act_inplace(ctx, f->act, F(o), M * N);
        }
        return SD_OK;
    }
    case FK_MATMUL_T: {
        const val *bsrc = &r->vals[f->in[1]];
        int nd = x->nd;
        if (bsrc->dt != SD_OV_F32 || nd < 2 || bsrc->nd != nd || nd != (int)f->axis) return SD_OK;
        for (int k = 0; k < nd - 2; k++)
            if (x->d[k] != bsrc->d[k]) return SD_OK;
        int64_t M = x->d[nd - 2], K = x->d[nd - 1], N = bsrc->d[nd - 2];
        if (bsrc->d[nd - 1] != K || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return SD_OK;
        int64_t batch = prod(x->d, 0, nd - 2), od[MAXD];
        for (int k = 0; k < nd; k++) od[k] = x->d[k];
        od[nd - 1] = N;
        *fallback = 0;
        if ((rc = val_alloc(o, SD_OV_F32, nd, od))) return rc;
        for (int64_t bi = 0; bi < batch && M && N; bi++) {
            if (K)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, f->alpha,
                            F(x) + bi * M * K, (int)K, F(bsrc) + bi * N * K, (int)K, 0.0f, F(o) + bi * M * N, (int)N);
            else
                memset(F(o) + bi * M * N, 0, sizeof(float) * (size_t)(M * N));
        }
        return SD_OK;
    }
    case FK_ATTN: {
        const val *k = &r->vals[f->in[1]], *v = &r->vals[f->in[2]];
        int nd = x->nd;
        if (k->dt != SD_OV_F32 || v->dt != SD_OV_F32 || nd < 2 || k->nd != nd || v->nd != nd) return SD_OK;
        if (f->axis != -1 && f->axis != nd - 1) return SD_OK;
        for (int d = 0; d < nd - 2; d++)
            if (k->d[d] != x->d[d] || v->d[d] != x->d[d]) return SD_OK;
        int64_t Tq = x->d[nd - 2], D = x->d[nd - 1], Tk = k->d[nd - 2], Dv = v->d[nd - 1];
        if (k->d[nd - 1] != D || v->d[nd - 2] != Tk || Tk < 1 || !D || !Tq || !Dv) return SD_OK;
        int64_t batch = prod(x->d, 0, nd - 2), od[MAXD], ld[3] = { batch, 1, Tq };
        if (!batch) return SD_OK;
        for (int d = 0; d < nd; d++) od[d] = x->d[d];
        od[nd - 1] = Dv;
        *fallback = 0;
        val lse = { 0 };
        if ((rc = val_alloc(&lse, SD_OV_F32, 3, ld))) return rc;
        if ((rc = val_alloc(o, SD_OV_F32, nd, od))) {
            val_free(&lse);
            return rc;
        }
        sd_tensor tq = sd_tensor_wrap(x->p, SD_F32, 3, (int64_t[]){ batch, Tq, D }),
                  tk = sd_tensor_wrap(k->p, SD_F32, 3, (int64_t[]){ batch, Tk, D }),
                  tv = sd_tensor_wrap(v->p, SD_F32, 3, (int64_t[]){ batch, Tk, Dv }),
                  to = sd_tensor_wrap(o->p, SD_F32, 3, (int64_t[]){ batch, Tq, Dv }),
                  tl = sd_tensor_wrap(lse.p, SD_F32, 3, ld);
        sd_attn_args aa = { 1, f->alpha, 0 };
        rc = sd_op_attention(ctx, &to, &tl, &tq, &tk, &tv, aa);
        val_free(&lse);
        return rc;
    }
    case FK_CONV: {
        val *argv[3] = { x, f->folded ? &f->w : &r->vals[f->in[1]],
                         f->folded ? &f->b : f->in[2] >= 0 ? &r->vals[f->in[2]] : NULL };
        val *outv[1] = { o };
        const sd_onnx_node *n = &r->m.nodes[f->conv];
        ectx e = { r, ctx, n, argv, argv[2] ? 3 : 2, outv, 1, (int)(r->m.opset ? r->m.opset : 1), 0 };
        *fallback = 0;
        rc = sd_onnx_i_find_op("Conv")(&e);
        if (!rc && o->dt == SD_OV_F32) act_inplace(ctx, f->act, F(o), o->n);
        return rc ? sd_err_prefix(rc, "node '%s' (Conv)", n->name) : SD_OK;
    }
    }
    return SD_OK;
}
