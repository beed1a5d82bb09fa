/* ONNX graph interpreter (models/onnx_run.h): graph set-up (names, operator check, topological
 * order), the optimisation pass's plan (last uses, the free lists) and the run; the operators are in
 * onnx_ops.c and onnx_ops_nn.c, the pass and its fused steps in onnx_opt.c. */
#include "models/onnx_run.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "models/onnx_ops.h" /* last: it defines short internal names */

opfn sd_onnx_i_find_op(const char *name)
{
    for (const sd_onnx_opdef *t = sd_onnx_ops_elem; t->name; t++)
        if (!strcmp(t->name, name)) return t->fn;
    for (const sd_onnx_opdef *t = sd_onnx_ops_nn; t->name; t++)
        if (!strcmp(t->name, name)) return t->fn;
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
    free(r->step);
    free(r->fstart);
    free(r->flist);
    sd_onnx_opt_free(r);
    sd_onnx_pool_free(r->pool);
    free(r->pool);
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
        else if (!sd_onnx_i_find_op(n->op_type))
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
        r->last = malloc(sizeof(int) * ((size_t)r->nvals + 1)); /* filled by plan() */
        if (!r->last) return sd_err(SD_ENOMEM, "out of memory");
    }
    return rc;
}

/* the values each step reads (a fused step: what its members read from outside) */
static int step_inputs(const sd_onnx_run *r, int i, int *buf, int max)
{
    int n = 0;
    if (r->step[i] >= 0) {
        const sd_onnx_fused *f = &r->fused[r->step[i]];
        for (int a = 0; a < f->nmem; a++) {
            int j = f->mem[a];
            for (int k = 0; k < r->m.nodes[j].nin; k++) {
                int v = r->nin[j][k], inner = 0;
                if (v < 0) continue;
                for (int b = 0; b < f->nmem && !inner; b++)
                    for (int q = 0; q < r->m.nodes[f->mem[b]].nout; q++) inner |= r->nout[f->mem[b]][q] == v;
                if (!inner && n < max) buf[n++] = v;
            }
        }
    } else {
        for (int k = 0; k < r->m.nodes[i].nin; k++)
            if (r->nin[i][k] >= 0 && n < max) buf[n++] = r->nin[i][k];
    }
    return n;
}

/* the optimisation pass (unless SD_ONNX_NO_OPT) and the last-use plan: after step p the runtime frees
 * flist[fstart[p] .. fstart[p+1]) (values no later step reads, outputs nothing reads included) */
static int plan(sd_onnx_run *r)
{
    int nn = r->m.nnodes, rc = SD_OK;
    const char *no = getenv("SD_ONNX_NO_OPT");
    r->opt = !(no && *no && strcmp(no, "0"));
    r->step = malloc(sizeof(int) * ((size_t)nn + 1));
    r->pool = calloc(1, sizeof *r->pool);
    if (!r->step || !r->pool) return sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < nn; i++) r->step[i] = -1;
    if (r->opt && (rc = sd_onnx_opt_run(r))) return rc;
    int buf[512];
    for (int v = 0; v < r->nvals; v++) r->last[v] = -1;
    for (int p = 0; p < nn; p++) {
        int i = r->order[p];
        if (r->step[i] == -2) continue;
        int n = step_inputs(r, i, buf, 512);
        if (n == 512) return sd_err(SD_EUNSUPPORTED, "node '%s' reads too many values", r->m.nodes[i].name);
        for (int k = 0; k < n; k++) r->last[buf[k]] = p;
    }
    for (int p = 0; p < nn; p++) { /* outputs nothing reads: freed at once */
        int i = r->order[p];
        if (r->step[i] == -2) continue;
        if (r->step[i] >= 0) {
            int v = r->fused[r->step[i]].out;
            if (r->last[v] < p) r->last[v] = p;
        } else {
            for (int k = 0; k < r->m.nodes[i].nout; k++) {
                int v = r->nout[i][k];
                if (v >= 0 && r->last[v] < p) r->last[v] = p;
            }
        }
    }
    r->last[r->output] = nn; /* kept */
    r->fstart = calloc((size_t)nn + 2, sizeof(int));
    r->flist = malloc(sizeof(int) * ((size_t)r->nvals + 1));
    if (!r->fstart || !r->flist) return sd_err(SD_ENOMEM, "out of memory");
    for (int v = 0; v < r->nvals; v++)
        if (r->last[v] >= 0 && r->last[v] < nn && !r->vals[v].konst) r->fstart[r->last[v] + 1]++;
    for (int p = 0; p < nn; p++) r->fstart[p + 1] += r->fstart[p];
    int *fill = calloc((size_t)nn + 1, sizeof(int));
    if (!fill) return sd_err(SD_ENOMEM, "out of memory");
    for (int v = 0; v < r->nvals; v++)
        if (r->last[v] >= 0 && r->last[v] < nn && !r->vals[v].konst) r->flist[r->fstart[r->last[v]] + fill[r->last[v]]++] = v;
    free(fill);
    return SD_OK;
}

int sd_onnx_run_open_model(sd_onnx_run *r, sd_onnx_model *m, const char *name)
{
    memset(r, 0, sizeof *r);
    r->m = *m;
    memset(m, 0, sizeof *m);
    r->path = strdup(name);
    int rc = r->path ? open_graph(r) : sd_err(SD_ENOMEM, "out of memory");
    if (!rc) rc = plan(r);
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

int sd_onnx_i_run_node(sd_onnx_run *r, sd_ctx *ctx, int i, int steal)
{
    const sd_onnx_node *n = &r->m.nodes[i];
    val *argv[256], *outv[256];
    if (n->nin > 256 || n->nout > 256) return sd_err(SD_EUNSUPPORTED, "node with over 256 inputs or outputs");
    for (int k = 0; k < n->nin; k++) argv[k] = r->nin[i][k] >= 0 ? &r->vals[r->nin[i][k]] : NULL;
    for (int k = 0; k < n->nout; k++) outv[k] = r->nout[i][k] >= 0 ? &r->vals[r->nout[i][k]] : NULL;
    if (n->nout < 1 || !outv[0]) return sd_err(SD_EFORMAT, "node without an output");
    ectx e = { r, ctx, n, argv, n->nin, outv, n->nout, (int)(r->m.opset ? r->m.opset : 1), steal };
    int rc = sd_onnx_i_find_op(n->op_type)(&e);
    if (rc) return sd_err_prefix(rc, "node '%s' (%s)", n->name, n->op_type);
    for (int k = 0; k < n->nout; k++)
        if (outv[k] && !outv[k]->p) outv[k]->dt = 0;
    return SD_OK;
}

static int run_step(sd_onnx_run *r, sd_ctx *ctx, int p)
{
    int i = r->order[p], rc;
    if (r->step[i] == -2) return SD_OK;
    if (r->step[i] >= 0) {
        sd_onnx_fused *f = &r->fused[r->step[i]];
        int fb = 0;
        rc = sd_onnx_fused_exec(r, ctx, f, &fb);
        if (rc || !fb) return rc;
        /* the shapes do not fit: the member nodes as written, their intermediates freed after */
        for (int a = 0; a < f->nmem && !rc; a++) rc = sd_onnx_i_run_node(r, ctx, f->mem[a], 0);
        for (int a = 0; a < f->nmem; a++)
            for (int k = 0; k < r->m.nodes[f->mem[a]].nout; k++) {
                int v = r->nout[f->mem[a]][k];
                if (v >= 0 && v != f->out && v != r->output) val_free(&r->vals[v]);
            }
        return rc;
    }
    const sd_onnx_node *n = &r->m.nodes[i];
    int v0 = n->nin > 0 ? r->nin[i][0] : -1, steal = r->opt && v0 >= 0 && r->last[v0] == p && v0 != r->output;
    for (int k = 1; k < n->nin && steal; k++) steal = r->nin[i][k] != v0;
    return sd_onnx_i_run_node(r, ctx, i, steal);
}

int sd_onnx_run_forward(sd_onnx_run *r, sd_ctx *ctx, const float *x, int nd, const int64_t *shape, float **y, int *ynd,
                        int64_t *yshape)
{
    *y = NULL;
    sd_onnx_pool_use(r->opt ? r->pool : NULL);
    val *in = &r->vals[r->input];
    int rc = val_alloc(in, SD_OV_F32, nd, shape);
    if (rc) {
        sd_onnx_pool_use(NULL);
        return sd_err_prefix(rc, "%s", r->path);
    }
    memcpy(in->p, x, (size_t)in->n * sizeof(float));
    for (int p = 0; !rc && p < r->m.nnodes; p++) {
        rc = run_step(r, ctx, p);
        /* free what no later step reads */
        for (int k = r->fstart[p]; !rc && k < r->fstart[p + 1]; k++) val_free(&r->vals[r->flist[k]]);
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
    /* everything but the initializers goes (into the pool, for the next run) */
    for (int v = 0; v < r->nvals; v++) val_free(&r->vals[v]);
    sd_onnx_pool_use(NULL);
    return rc ? sd_err_prefix(rc, "%s", r->path) : SD_OK;
}
