/* ONNX ModelProto reader (io/onnx.h). Field numbers from onnx/onnx.proto3. */
#include "io/onnx.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"
#include "io/protobuf.h"

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        int rc_ = (x);                                                                                                 \
        if (rc_ < 0) return rc_;                                                                                       \
    } while (0)

/* a growing array (element size es) */
static int grow(void **arr, int *n, int *cap, size_t es)
{
    if (*n < *cap) return SD_OK;
    int nc = *cap ? *cap * 2 : 8;
    if (nc > (1 << 28)) return sd_err(SD_EFORMAT, "too many entries");
    void *p = realloc(*arr, (size_t)nc * es);
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    memset((char *)p + (size_t)*cap * es, 0, (size_t)(nc - *cap) * es);
    *arr = p;
    *cap = nc;
    return SD_OK;
}

static int read_string(sd_pb *r, char **out)
{
    sd_pb s;
    TRY(sd_pb_len(r, &s));
    size_t n = (size_t)(s.end - s.p);
    char *c = malloc(n + 1);
    if (!c) return sd_err(SD_ENOMEM, "out of memory");
    memcpy(c, s.p, n);
    c[n] = 0;
    if (memchr(c, 0, n)) {
        free(c);
        return sd_err(SD_EFORMAT, "string with a NUL byte at byte %ld", (long)(s.p - s.base));
    }
    free(*out);
    *out = c;
    return SD_OK;
}

/* append one occurrence of a repeated scalar field (packed or not) */
typedef struct numlist {
    void *v;
    int n, cap;
} numlist;

static int read_nums(sd_pb *r, int wire, int elem, int kind, numlist *l)
{
    /* kind: 0 int64 from varint, 1 int32 from varint (sign-extended), 2 float from fixed32,
     * 3 double from fixed64, 4 uint64 from varint */
    size_t cnt;
    TRY(sd_pb_count(r, wire, elem, &cnt));
    if (cnt > (size_t)(1 << 30) - (size_t)l->n) return sd_err(SD_EFORMAT, "repeated field too long");
    size_t es = kind == 2 ? sizeof(float) : kind == 3 ? sizeof(double) : sizeof(int64_t);
    if (l->n + (int)cnt > l->cap) {
        int nc = l->n + (int)cnt;
        void *p = realloc(l->v, (size_t)(nc ? nc : 1) * es);
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        l->v = p;
        l->cap = nc;
    }
    sd_pb sub, *s = r;
    if (wire == SD_PB_LEN) {
        TRY(sd_pb_len(r, &sub));
        s = &sub;
    }
    for (size_t k = 0; k < cnt; k++) {
        uint64_t u;
        uint32_t w;
        switch (kind) {
        case 0:
            TRY(sd_pb_varint(s, &u));
            ((int64_t *)l->v)[l->n++] = (int64_t)u;
            break;
        case 1:
            TRY(sd_pb_varint(s, &u));
            ((int64_t *)l->v)[l->n++] = (int32_t)(uint32_t)u;
            break;
        case 4:
            TRY(sd_pb_varint(s, &u));
            ((int64_t *)l->v)[l->n++] = (int64_t)u;
            break;
        case 2: {
            TRY(sd_pb_fixed32(s, &w));
            float f;
            memcpy(&f, &w, 4);
            ((float *)l->v)[l->n++] = f;
            break;
        }
        case 3: {
            TRY(sd_pb_fixed64(s, &u));
            double d;
            memcpy(&d, &u, 8);
            ((double *)l->v)[l->n++] = d;
            break;
        }
        }
    }
    return SD_OK;
}

static int wire_is(int wire, int want, uint32_t f, const char *msg)
{
    if (wire != want)
        return sd_err(SD_EFORMAT, "%s: field %u has wire type %d, expected %d", msg, (unsigned)f, wire, want);
    return SD_OK;
}

const char *sd_onnx_dtype_name(int t)
{
    static const char *names[] = { "undefined", "float",  "uint8",     "int8",       "uint16",  "int16",
                                   "int32",     "int64",  "string",    "bool",       "float16", "double",
                                   "uint32",    "uint64", "complex64", "complex128", "bfloat16" };
    if (t >= 0 && t < (int)(sizeof names / sizeof *names)) return names[t];
    return "unknown type";
}

static size_t elem_size(int t)
{
    switch (t) {
    case SD_ONNX_FLOAT:
    case SD_ONNX_INT32:
    case SD_ONNX_UINT32: return 4;
    case SD_ONNX_UINT8:
    case SD_ONNX_INT8:
    case SD_ONNX_BOOL: return 1;
    case SD_ONNX_UINT16:
    case SD_ONNX_INT16:
    case SD_ONNX_FLOAT16:
    case SD_ONNX_BFLOAT16: return 2;
    case SD_ONNX_INT64:
    case SD_ONNX_UINT64:
    case SD_ONNX_DOUBLE: return 8;
    }
    return 0;
}

static int is_float_type(int t)
{
    return t == SD_ONNX_FLOAT || t == SD_ONNX_FLOAT16 || t == SD_ONNX_BFLOAT16 || t == SD_ONNX_DOUBLE;
}

static void tensor_free(sd_onnx_tensor *t)
{
    if (!t) return;
    free(t->name);
    free(t->data);
    memset(t, 0, sizeof *t);
}

static int parse_tensor(sd_pb *r, sd_onnx_tensor *t)
{
    numlist dims = { 0 }, fl = { 0 }, i32 = { 0 }, i64 = { 0 }, dbl = { 0 }, u64 = { 0 };
    const uint8_t *raw = NULL;
    size_t rawn = 0;
    int has_raw = 0, external = 0, rc = SD_OK;
    int64_t dt = 0;
    long at = (long)(r->p - r->base);
    while (!rc && sd_pb_more(r)) {
        uint32_t f;
        int w;
        uint64_t u;
        sd_pb s;
        if ((rc = sd_pb_key(r, &f, &w))) break;
        switch (f) {
        case 1: rc = read_nums(r, w, SD_PB_VARINT, 0, &dims); break;
        case 2:
            if (!(rc = wire_is(w, SD_PB_VARINT, f, "tensor"))) {
                rc = sd_pb_varint(r, &u);
                dt = (int64_t)u;
            }
            break;
        case 4: rc = read_nums(r, w, SD_PB_I32, 2, &fl); break;
        case 5: rc = read_nums(r, w, SD_PB_VARINT, 1, &i32); break;
        case 7: rc = read_nums(r, w, SD_PB_VARINT, 0, &i64); break;
        case 8:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "tensor"))) rc = read_string(r, &t->name);
            break;
        case 9:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "tensor")) && !(rc = sd_pb_len(r, &s))) {
                raw = s.p;
                rawn = (size_t)(s.end - s.p);
                has_raw = 1;
            }
            break;
        case 10: rc = read_nums(r, w, SD_PB_I64, 3, &dbl); break;
        case 11: rc = read_nums(r, w, SD_PB_VARINT, 4, &u64); break;
        case 13:
            external = 1;
            rc = sd_pb_skip(r, w);
            break;
        case 14:
            if (!(rc = wire_is(w, SD_PB_VARINT, f, "tensor"))) {
                rc = sd_pb_varint(r, &u);
                if (u == 1) external = 1;
            }
            break;
        case 6: rc = sd_err(SD_EUNSUPPORTED, "string tensors are not supported"); break;
        default: rc = sd_pb_skip(r, w);
        }
    }
    const char *nm = t->name ? t->name : "";
    if (!rc && external)
        rc = sd_err(SD_EUNSUPPORTED,
                    "tensor '%s' is stored in an external data file (models over 2 GB, "
                    "onnx save_as_external_data); not supported: save the model with its data inside",
                    nm);
    if (!rc && dims.n > SD_ONNX_MAX_DIMS)
        rc = sd_err(SD_EUNSUPPORTED, "tensor '%s' has %d dimensions (at most %d)", nm, dims.n, SD_ONNX_MAX_DIMS);
    int64_t count = 1;
    for (int i = 0; !rc && i < dims.n; i++) {
        int64_t d = ((int64_t *)dims.v)[i];
        if (d < 0 || (d && count > ((int64_t)1 << 40) / d))
            rc = sd_err(SD_EFORMAT, "tensor '%s' has a bad dimension %lld", nm, (long long)d);
        else
            count *= d;
        t->dims[i] = d;
    }
    t->ndim = dims.n;
    t->count = count;
    t->dtype = (int)dt;
    size_t es = elem_size((int)dt);
    if (!rc && !es)
        rc = sd_err(SD_EUNSUPPORTED, "tensor '%s' has element type %s, not supported", nm, sd_onnx_dtype_name((int)dt));
    /* the data present must match the dims before anything is allocated (dims alone can claim terabytes) */
    numlist *src = dt == SD_ONNX_FLOAT                              ? &fl
                   : dt == SD_ONNX_DOUBLE                           ? &dbl
                   : dt == SD_ONNX_INT64                            ? &i64
                   : (dt == SD_ONNX_UINT32 || dt == SD_ONNX_UINT64) ? &u64
                                                                    : &i32;
    if (!rc && count && has_raw && rawn != (size_t)count * es)
        rc = sd_err(SD_EFORMAT, "tensor '%s': raw_data has %zu bytes, dims and type need %lld", nm, rawn,
                    (long long)count * (long long)es);
    if (!rc && count && !has_raw && src->n != count)
        rc = sd_err(SD_EFORMAT, "tensor '%s' has %d data values, dims need %lld", nm, src->n, (long long)count);
    if (!rc && count) {
        int isf = is_float_type((int)dt);
        t->data = malloc((size_t)count * (isf ? sizeof(float) : sizeof(int64_t)));
        if (!t->data) rc = sd_err(SD_ENOMEM, "out of memory");
    }
    if (!rc && count) {
        float *fo = t->data;
        int64_t *io = t->data;
        if (has_raw) {
            int64_t slow = count; /* elements converted one by one */
            if (!rc && dt == SD_ONNX_FLOAT) { /* little-endian host (io/safetensors.h checks it) */
                memcpy(fo, raw, rawn);
                slow = 0;
            }
            for (int64_t k = 0; !rc && k < slow; k++) {
                const uint8_t *p = raw + (size_t)k * es;
                uint64_t v = 0;
                for (size_t b = 0; b < es; b++) v |= (uint64_t)p[b] << (8 * b);
                switch (dt) {
                case SD_ONNX_FLOAT: {
                    uint32_t w = (uint32_t)v;
                    memcpy(&fo[k], &w, 4);
                    break;
                }
                case SD_ONNX_FLOAT16: fo[k] = sd_f16_to_f32((uint16_t)v); break;
                case SD_ONNX_BFLOAT16: fo[k] = sd_bf16_to_f32((uint16_t)v); break;
                case SD_ONNX_DOUBLE: {
                    double d;
                    memcpy(&d, &v, 8);
                    fo[k] = (float)d;
                    break;
                }
                case SD_ONNX_INT8: io[k] = (int8_t)v; break;
                case SD_ONNX_INT16: io[k] = (int16_t)v; break;
                case SD_ONNX_INT32: io[k] = (int32_t)v; break;
                case SD_ONNX_BOOL: io[k] = v != 0; break;
                default: io[k] = (int64_t)v;
                }
            }
        } else {
            for (int64_t k = 0; !rc && k < count; k++) {
                if (dt == SD_ONNX_FLOAT)
                    fo[k] = ((float *)src->v)[k];
                else if (dt == SD_ONNX_DOUBLE)
                    fo[k] = (float)((double *)src->v)[k];
                else if (dt == SD_ONNX_FLOAT16)
                    fo[k] = sd_f16_to_f32((uint16_t)((int64_t *)src->v)[k]);
                else if (dt == SD_ONNX_BFLOAT16)
                    fo[k] = sd_bf16_to_f32((uint16_t)((int64_t *)src->v)[k]);
                else if (dt == SD_ONNX_BOOL)
                    io[k] = ((int64_t *)src->v)[k] != 0;
                else
                    io[k] = ((int64_t *)src->v)[k];
            }
        }
    }
    free(dims.v);
    free(fl.v);
    free(i32.v);
    free(i64.v);
    free(dbl.v);
    free(u64.v);
    if (rc) {
        tensor_free(t);
        return sd_err_prefix(rc, "tensor at byte %ld", at);
    }
    if (!t->name) t->name = strdup("");
    if (!t->name) return sd_err(SD_ENOMEM, "out of memory");
    return SD_OK;
}

static void attr_free(sd_onnx_attr *a)
{
    free(a->name);
    free(a->s);
    free(a->floats);
    free(a->ints);
    if (a->t) {
        tensor_free(a->t);
        free(a->t);
    }
}

static int parse_attr(sd_pb *r, sd_onnx_attr *a)
{
    numlist fl = { 0 }, il = { 0 };
    int rc = SD_OK, type = 0;
    while (!rc && sd_pb_more(r)) {
        uint32_t f;
        int w;
        uint64_t u;
        uint32_t x;
        sd_pb s;
        if ((rc = sd_pb_key(r, &f, &w))) break;
        switch (f) {
        case 1:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "attribute"))) rc = read_string(r, &a->name);
            break;
        case 2:
            if (!(rc = wire_is(w, SD_PB_I32, f, "attribute")) && !(rc = sd_pb_fixed32(r, &x))) memcpy(&a->f, &x, 4);
            break;
        case 3:
            if (!(rc = wire_is(w, SD_PB_VARINT, f, "attribute")) && !(rc = sd_pb_varint(r, &u))) a->i = (int64_t)u;
            break;
        case 4:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "attribute"))) rc = read_string(r, &a->s);
            break;
        case 5:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "attribute")) && !(rc = sd_pb_len(r, &s))) {
                if (a->t) {
                    tensor_free(a->t);
                    free(a->t);
                }
                a->t = calloc(1, sizeof *a->t);
                rc = a->t ? parse_tensor(&s, a->t) : sd_err(SD_ENOMEM, "out of memory");
                if (rc) {
                    free(a->t);
                    a->t = NULL;
                }
            }
            break;
        case 7: rc = read_nums(r, w, SD_PB_I32, 2, &fl); break;
        case 8: rc = read_nums(r, w, SD_PB_VARINT, 0, &il); break;
        case 20:
            if (!(rc = wire_is(w, SD_PB_VARINT, f, "attribute")) && !(rc = sd_pb_varint(r, &u))) type = (int)u;
            break;
        default: rc = sd_pb_skip(r, w); /* g, graphs, strings, tensors: only the type is kept */
        }
    }
    a->type = type;
    if (type == SD_ONNX_ATTR_FLOATS) {
        a->floats = fl.v;
        a->n = fl.n;
        fl.v = NULL;
    }
    if (type == SD_ONNX_ATTR_INTS) {
        a->ints = il.v;
        a->n = il.n;
        il.v = NULL;
    }
    free(fl.v);
    free(il.v);
    if (!rc && !a->name) rc = sd_err(SD_EFORMAT, "attribute without a name");
    if (!rc && type == SD_ONNX_ATTR_TENSOR && !a->t)
        rc = sd_err(SD_EFORMAT, "tensor attribute '%s' without a tensor", a->name);
    return rc;
}

static void node_free(sd_onnx_node *n)
{
    free(n->name);
    free(n->op_type);
    free(n->domain);
    for (int i = 0; i < n->nin; i++) free(n->in[i]);
    for (int i = 0; i < n->nout; i++) free(n->out[i]);
    free(n->in);
    free(n->out);
    for (int i = 0; i < n->nattr; i++) attr_free(&n->attrs[i]);
    free(n->attrs);
}

static int parse_node(sd_pb *r, sd_onnx_node *n)
{
    int capi = 0, capo = 0, capa = 0, rc = SD_OK;
    while (!rc && sd_pb_more(r)) {
        uint32_t f;
        int w;
        sd_pb s;
        if ((rc = sd_pb_key(r, &f, &w))) break;
        if ((f >= 1 && f <= 5) || f == 7) {
            if ((rc = wire_is(w, SD_PB_LEN, f, "node"))) break;
        }
        switch (f) {
        case 1:
            if (!(rc = grow((void **)&n->in, &n->nin, &capi, sizeof(char *)))) rc = read_string(r, &n->in[n->nin++]);
            break;
        case 2:
            if (!(rc = grow((void **)&n->out, &n->nout, &capo, sizeof(char *))))
                rc = read_string(r, &n->out[n->nout++]);
            break;
        case 3: rc = read_string(r, &n->name); break;
        case 4: rc = read_string(r, &n->op_type); break;
        case 7: rc = read_string(r, &n->domain); break;
        case 5:
            if (!(rc = grow((void **)&n->attrs, &n->nattr, &capa, sizeof *n->attrs)) && !(rc = sd_pb_len(r, &s)))
                rc = parse_attr(&s, &n->attrs[n->nattr++]);
            break;
        default: rc = sd_pb_skip(r, w);
        }
    }
    if (!rc && !n->op_type) rc = sd_err(SD_EFORMAT, "node '%s' without an op_type", n->name ? n->name : "");
    if (!rc && !n->name && !(n->name = strdup(""))) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc && !n->domain && !(n->domain = strdup(""))) rc = sd_err(SD_ENOMEM, "out of memory");
    return rc;
}

/* ValueInfoProto { name 1, type 2: TypeProto { tensor_type 1: { elem_type 1, shape 2: { dim 1:
 * { dim_value 1, dim_param 2 } } } } } */
static int parse_value_info(sd_pb *r, sd_onnx_value_info *v)
{
    int rc = SD_OK;
    v->ndim = -1;
    while (!rc && sd_pb_more(r)) {
        uint32_t f;
        int w;
        sd_pb ty;
        if ((rc = sd_pb_key(r, &f, &w))) break;
        if (f == 1) {
            if (!(rc = wire_is(w, SD_PB_LEN, f, "value info"))) rc = read_string(r, &v->name);
        } else if (f == 2) {
            if ((rc = wire_is(w, SD_PB_LEN, f, "value info")) || (rc = sd_pb_len(r, &ty))) break;
            while (!rc && sd_pb_more(&ty)) {
                sd_pb tt;
                if ((rc = sd_pb_key(&ty, &f, &w))) break;
                if (f != 1 || w != SD_PB_LEN) {
                    rc = sd_pb_skip(&ty, w);
                    continue;
                }
                if ((rc = sd_pb_len(&ty, &tt))) break;
                while (!rc && sd_pb_more(&tt)) {
                    uint64_t u;
                    sd_pb sh;
                    if ((rc = sd_pb_key(&tt, &f, &w))) break;
                    if (f == 1 && w == SD_PB_VARINT) {
                        if (!(rc = sd_pb_varint(&tt, &u))) v->dtype = (int)u;
                    } else if (f == 2 && w == SD_PB_LEN) {
                        if ((rc = sd_pb_len(&tt, &sh))) break;
                        v->ndim = 0;
                        while (!rc && sd_pb_more(&sh)) {
                            sd_pb dm;
                            if ((rc = sd_pb_key(&sh, &f, &w))) break;
                            if (f != 1 || w != SD_PB_LEN) {
                                rc = sd_pb_skip(&sh, w);
                                continue;
                            }
                            if ((rc = sd_pb_len(&sh, &dm))) break;
                            if (v->ndim >= SD_ONNX_MAX_DIMS) {
                                rc = sd_err(SD_EUNSUPPORTED, "value with over %d dimensions", SD_ONNX_MAX_DIMS);
                                break;
                            }
                            int64_t d = -1;
                            while (!rc && sd_pb_more(&dm)) {
                                if ((rc = sd_pb_key(&dm, &f, &w))) break;
                                if (f == 1 && w == SD_PB_VARINT) {
                                    if (!(rc = sd_pb_varint(&dm, &u))) d = (int64_t)u >= 0 ? (int64_t)u : -1;
                                } else
                                    rc = sd_pb_skip(&dm, w);
                            }
                            v->dims[v->ndim++] = d;
                        }
                    } else
                        rc = sd_pb_skip(&tt, w);
                }
            }
        } else
            rc = sd_pb_skip(r, w);
    }
    if (!rc && !v->name) rc = sd_err(SD_EFORMAT, "graph input/output without a name");
    return rc;
}

static int parse_graph(sd_pb *r, sd_onnx_model *m)
{
    int capn = 0, capt = 0, capi = 0, capo = 0, rc = SD_OK;
    while (!rc && sd_pb_more(r)) {
        uint32_t f;
        int w;
        sd_pb s;
        if ((rc = sd_pb_key(r, &f, &w))) break;
        if (f == 1 || f == 5 || f == 11 || f == 12) {
            if ((rc = wire_is(w, SD_PB_LEN, f, "graph")) || (rc = sd_pb_len(r, &s))) break;
        }
        switch (f) {
        case 1:
            if (!(rc = grow((void **)&m->nodes, &m->nnodes, &capn, sizeof *m->nodes))) {
                rc = parse_node(&s, &m->nodes[m->nnodes]);
                m->nnodes++;
                if (rc) rc = sd_err_prefix(rc, "node %d", m->nnodes - 1);
            }
            break;
        case 5:
            if (!(rc = grow((void **)&m->inits, &m->ninits, &capt, sizeof *m->inits))) {
                rc = parse_tensor(&s, &m->inits[m->ninits]);
                if (!rc)
                    m->ninits++;
                else
                    rc = sd_err_prefix(rc, "initializer %d", m->ninits);
            }
            break;
        case 11:
            if (!(rc = grow((void **)&m->inputs, &m->ninputs, &capi, sizeof *m->inputs)))
                rc = parse_value_info(&s, &m->inputs[m->ninputs++]);
            break;
        case 12:
            if (!(rc = grow((void **)&m->outputs, &m->noutputs, &capo, sizeof *m->outputs)))
                rc = parse_value_info(&s, &m->outputs[m->noutputs++]);
            break;
        case 15: rc = sd_err(SD_EUNSUPPORTED, "sparse initializers are not supported"); break;
        default: rc = sd_pb_skip(r, w);
        }
    }
    return rc;
}

void sd_onnx_free(sd_onnx_model *m)
{
    for (int i = 0; i < m->nnodes; i++) node_free(&m->nodes[i]);
    for (int i = 0; i < m->ninits; i++) tensor_free(&m->inits[i]);
    for (int i = 0; i < m->ninputs; i++) free(m->inputs[i].name);
    for (int i = 0; i < m->noutputs; i++) free(m->outputs[i].name);
    free(m->nodes);
    free(m->inits);
    free(m->inputs);
    free(m->outputs);
    free(m->producer);
    memset(m, 0, sizeof *m);
}

int sd_onnx_parse(const void *data, size_t n, const char *name, sd_onnx_model *m)
{
    memset(m, 0, sizeof *m);
    sd_pb r = sd_pb_make(data, n);
    int rc = SD_OK, graphs = 0;
    while (!rc && sd_pb_more(&r)) {
        uint32_t f;
        int w;
        uint64_t u;
        sd_pb s;
        if ((rc = sd_pb_key(&r, &f, &w))) break;
        switch (f) {
        case 1:
            if (!(rc = wire_is(w, SD_PB_VARINT, f, "model"))) {
                rc = sd_pb_varint(&r, &u);
                m->ir_version = (int64_t)u;
            }
            break;
        case 2:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "model"))) rc = read_string(&r, &m->producer);
            break;
        case 7:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "model")) && !(rc = sd_pb_len(&r, &s))) {
                if (graphs++)
                    rc = sd_err(SD_EFORMAT, "more than one graph");
                else
                    rc = parse_graph(&s, m);
            }
            break;
        case 8:
            if (!(rc = wire_is(w, SD_PB_LEN, f, "model")) && !(rc = sd_pb_len(&r, &s))) {
                char *dom = NULL;
                int64_t ver = 0;
                while (!rc && sd_pb_more(&s)) {
                    if ((rc = sd_pb_key(&s, &f, &w))) break;
                    if (f == 1 && w == SD_PB_LEN)
                        rc = read_string(&s, &dom);
                    else if (f == 2 && w == SD_PB_VARINT) {
                        rc = sd_pb_varint(&s, &u);
                        ver = (int64_t)u;
                    } else
                        rc = sd_pb_skip(&s, w);
                }
                if (!rc && (!dom || !*dom || !strcmp(dom, "ai.onnx"))) m->opset = ver;
                free(dom);
            }
            break;
        default: rc = sd_pb_skip(&r, w);
        }
    }
    if (!rc && !graphs) rc = sd_err(SD_EFORMAT, "no graph (not an ONNX model file?)");
    if (!rc && m->ir_version <= 0) rc = sd_err(SD_EFORMAT, "no ir_version (not an ONNX model file?)");
    if (rc) {
        sd_onnx_free(m);
        return sd_err_prefix(rc, "%s", name);
    }
    return SD_OK;
}

int sd_onnx_load(const char *path, sd_onnx_model *m)
{
    char *data = NULL;
    size_t n = 0;
    memset(m, 0, sizeof *m);
    int rc = sd_read_file(path, (size_t)1 << 34, &data, &n);
    if (rc < 0) return rc;
    rc = sd_onnx_parse(data, n, path, m);
    free(data);
    return rc;
}

const sd_onnx_attr *sd_onnx_attr_find(const sd_onnx_node *n, const char *name)
{
    for (int i = 0; i < n->nattr; i++)
        if (!strcmp(n->attrs[i].name, name)) return &n->attrs[i];
    return NULL;
}
