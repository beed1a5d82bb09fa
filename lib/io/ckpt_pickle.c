/* The minimal pickle interpreter behind io/ckpt.h: builds plain values (None, bool, int, float,
 * str, bytes, tuple, list, dict) plus storages and tensors through an allowlist of callables. */
#include "io/ckpt_internal.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"

#define MAX_STACK (1u << 20)
#define MAX_MARKS (1u << 16)
#define MAX_MEMO (1u << 24)
#define MAX_GLOBAL_LINE 512

/* ---------------------------------------------------------------------------------------------
 * Arena */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
} arena_chunk;

void *ck_alloc(ck_parser *p, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n > p->arena_limit || p->arena_total > p->arena_limit - n) {
        p->alloc_rc = sd_err(SD_EFORMAT, "%s: pickle needs more than %zu MiB of memory", p->name,
                             p->arena_limit >> 20);
        return NULL;
    }
    arena_chunk *c = p->arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        c = malloc(sizeof *c + cap);
        if (!c) { p->alloc_rc = sd_err(SD_ENOMEM, "out of memory"); return NULL; }
        c->next = p->arena;
        c->used = 0;
        c->cap = cap;
        p->arena = c;
    }
    void *r = (char *)c->data + c->used;
    c->used += n;
    p->arena_total += n;
    memset(r, 0, n);
    return r;
}

void ck_arena_free(ck_parser *p)
{
    for (arena_chunk *c = p->arena, *nx; c; c = nx) { nx = c->next; free(c); }
    p->arena = NULL;
}

static ck_val *new_val(ck_parser *p, ck_type t)
{
    ck_val *v = ck_alloc(p, sizeof *v);
    if (v) v->t = t;
    return v;
}

/* Append to a tuple/list/dict's item array (dicts store key, value pairs). */
static int seq_push(ck_parser *p, ck_val *s, ck_val *x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        ck_val **items = ck_alloc(p, cap * sizeof *items);
        if (!items) return -1;
        if (s->n) memcpy(items, s->items, s->n * sizeof *items);
        s->items = items;
        s->cap = cap;
    }
    s->items[s->n++] = x;
    return 0;
}

const char *ck_type_name(const ck_val *v)
{
    static const char *const names[] = {
        "None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict", "callable",
        "storage", "tensor", "numpy.dtype",
    };
    return v && v->t < sizeof names / sizeof *names ? names[v->t] : "?";
}

/* ---------------------------------------------------------------------------------------------
 * Allowlisted callables */

static const struct {
    const char *mod, *name;
    ck_kind kind;
    sd_st_dtype dtype;
} allowed[] = {
    {"collections", "OrderedDict", CK_ODICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", CK_REBUILD_V2, 0},
    {"torch._utils", "_rebuild_tensor", CK_REBUILD, 0},
    {"torch._utils", "_rebuild_parameter", CK_PARAM, 0},
    {"torch._utils", "_rebuild_parameter_with_state", CK_PARAM_STATE, 0},
    {"_codecs", "encode", CK_ENCODE, 0},
    /* numpy scalars (np.int64(5), np.float64(0.5)) as some checkpoints store step counts and scores */
    {"numpy", "dtype", CK_NP_DTYPE, 0},
    {"numpy.core.multiarray", "scalar", CK_NP_SCALAR, 0},
    {"numpy._core.multiarray", "scalar", CK_NP_SCALAR, 0},
    {"builtins", "set", CK_SET, 0},
    {"__builtin__", "set", CK_SET, 0},
    {"torch", "DoubleStorage", CK_STORAGE_TYPE, SD_ST_F64},
    {"torch", "FloatStorage", CK_STORAGE_TYPE, SD_ST_F32},
    {"torch", "HalfStorage", CK_STORAGE_TYPE, SD_ST_F16},
    {"torch", "BFloat16Storage", CK_STORAGE_TYPE, SD_ST_BF16},
    {"torch", "LongStorage", CK_STORAGE_TYPE, SD_ST_I64},
    {"torch", "IntStorage", CK_STORAGE_TYPE, SD_ST_I32},
    {"torch", "ShortStorage", CK_STORAGE_TYPE, SD_ST_I16},
    {"torch", "CharStorage", CK_STORAGE_TYPE, SD_ST_I8},
    {"torch", "ByteStorage", CK_STORAGE_TYPE, SD_ST_U8},
    {"torch", "BoolStorage", CK_STORAGE_TYPE, SD_ST_BOOL},
};

/* Copy a name from the file for a message: printable ASCII kept, others '?', cut at 80. */
void ck_show(char *out, size_t size, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < size; i++) {
        if (k >= 80) { memcpy(out + k, "...", 3); k += 3; break; }
        unsigned char c = (unsigned char)s[i];
        out[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[k] = 0;
}

static int make_global(ck_parser *p, const char *mod, size_t ml, const char *name, size_t nl, ck_val **out)
{
    char smod[100], sname[100];
    ck_show(smod, sizeof smod, mod, ml);
    ck_show(sname, sizeof sname, name, nl);
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        if (strlen(allowed[i].mod) == ml && !memcmp(allowed[i].mod, mod, ml) &&
            strlen(allowed[i].name) == nl && !memcmp(allowed[i].name, name, nl)) {
            ck_val *v = new_val(p, CK_GLOBAL);
            if (!v) return p->alloc_rc;
            v->kind = allowed[i].kind;
            v->dtype = allowed[i].dtype;
            v->gname = allowed[i].name;
            *out = v;
            return SD_OK;
        }
    if (ml == 5 && !memcmp(mod, "torch", 5) && nl > 7 && !memcmp(name + nl - 7, "Storage", 7))
        return sd_err(SD_EUNSUPPORTED, "%s: storage type torch.%s is not supported", p->name, sname);
    return sd_err(SD_EFORMAT, "%s: refusing to load: pickle references %s.%s (only tensor data is allowed)",
                  p->name, smod, sname);
}

/* ---------------------------------------------------------------------------------------------
 * Helpers for REDUCE */

static int get_int(const ck_val *v, int64_t *x)
{
    if (!v || (v->t != CK_INT && v->t != CK_BOOL)) return -1;
    *x = v->i;
    return 0;
}

static int get_dims(ck_parser *p, const ck_val *v, const char *what, int *nd, int64_t *d)
{
    if (!v || (v->t != CK_TUPLE && v->t != CK_LIST))
        return sd_err(SD_EFORMAT, "%s: tensor %s is a %s, not a tuple", p->name, what, ck_type_name(v));
    if (v->n > SD_CKPT_MAX_DIMS)
        return sd_err(SD_EUNSUPPORTED, "%s: tensor with %zu dimensions (at most %d supported)", p->name,
                      v->n, SD_CKPT_MAX_DIMS);
    for (size_t i = 0; i < v->n; i++) {
        int64_t x;
        if (get_int(v->items[i], &x) || x < 0 || x > ((int64_t)1 << 53))
            return sd_err(SD_EFORMAT, "%s: tensor %s[%zu] is not an integer in 0..2^53", p->name, what, i);
        d[i] = x;
    }
    *nd = (int)v->n;
    return SD_OK;
}

static int build_tensor(ck_parser *p, ck_val *st, ck_val *off, ck_val *size, ck_val *stride, ck_val **out)
{
    if (!st || st->t != CK_STORAGE)
        return sd_err(SD_EFORMAT, "%s: tensor storage is a %s", p->name, ck_type_name(st));
    ck_val *tv = new_val(p, CK_TENSOR);
    ck_tensor *t = tv ? ck_alloc(p, sizeof *t) : NULL;
    if (!t) return p->alloc_rc;
    tv->tn = t;
    char key[100];
    ck_show(key, sizeof key, st->s, st->n);
    int64_t o;
    if (get_int(off, &o) || o < 0 || o > ((int64_t)1 << 53))
        return sd_err(SD_EFORMAT, "%s: tensor storage offset is not an integer in 0..2^53", p->name);
    int nd, nds;
    int rc = get_dims(p, size, "size", &nd, t->shape);
    if (rc) return rc;
    if ((rc = get_dims(p, stride, "stride", &nds, t->stride))) return rc;
    if (nds != nd)
        return sd_err(SD_EFORMAT, "%s: tensor size has %d dimensions, stride %d", p->name, nd, nds);
    t->ndim = nd;
    t->storage = st;
    t->offset = o;
    /* numel and the largest element index, overflow-checked */
    uint64_t numel = 1, last = (uint64_t)o;
    for (int i = 0; i < nd; i++) {
        uint64_t s = (uint64_t)t->shape[i];
        if (s && numel > (UINT64_C(1) << 62) / s)
            return sd_err(SD_EFORMAT, "%s: tensor has too many elements", p->name);
        numel *= s;
    }
    if (numel) {
        for (int i = 0; i < nd; i++) {
            uint64_t s = (uint64_t)t->shape[i] - 1, d = (uint64_t)t->stride[i];
            if (d && s > ((UINT64_C(1) << 62) - last) / d)
                return sd_err(SD_EFORMAT, "%s: tensor view extends past any storage", p->name);
            last += s * d;
        }
        if (last >= (uint64_t)st->numel)
            return sd_err(SD_EFORMAT, "%s: tensor view (offset %lld, last element %llu) is outside storage "
                          "'%s' of %lld elements", p->name, (long long)o, (unsigned long long)last,
                          key, (long long)st->numel);
    } else if ((uint64_t)o > (uint64_t)st->numel) {
        return sd_err(SD_EFORMAT, "%s: tensor storage offset %lld is past the end of storage '%s'", p->name,
                      (long long)o, key);
    }
    t->numel = (int64_t)numel;
    *out = tv;
    return SD_OK;
}

static int call(ck_parser *p, ck_val *fn, ck_val *args, ck_val **out)
{
    if (!fn || fn->t != CK_GLOBAL)
        return sd_err(SD_EFORMAT, "%s: REDUCE calls a %s", p->name, ck_type_name(fn));
    if (!args || args->t != CK_TUPLE)
        return sd_err(SD_EFORMAT, "%s: REDUCE arguments are a %s, not a tuple", p->name, ck_type_name(args));
    ck_val **a = args->items;
    size_t n = args->n;
    switch (fn->kind) {
    case CK_ODICT: {
        ck_val *d = new_val(p, CK_DICT);
        if (!d) return p->alloc_rc;
        if (n == 1 && (a[0]->t == CK_LIST || a[0]->t == CK_TUPLE)) {
            for (size_t i = 0; i < a[0]->n; i++) {
                ck_val *kv = a[0]->items[i];
                if ((kv->t != CK_TUPLE && kv->t != CK_LIST) || kv->n != 2)
                    return sd_err(SD_EFORMAT, "%s: OrderedDict item %zu is not a pair", p->name, i);
                if (seq_push(p, d, kv->items[0]) || seq_push(p, d, kv->items[1])) return p->alloc_rc;
            }
        } else if (n != 0) {
            return sd_err(SD_EFORMAT, "%s: OrderedDict called with %zu arguments", p->name, n);
        }
        *out = d;
        return SD_OK;
    }
    case CK_REBUILD_V2:
        if (n != 6 && n != 7)
            return sd_err(SD_EFORMAT, "%s: _rebuild_tensor_v2 called with %zu arguments", p->name, n);
        if (a[4]->t != CK_BOOL && a[4]->t != CK_INT)
            return sd_err(SD_EFORMAT, "%s: _rebuild_tensor_v2 requires_grad is a %s", p->name, ck_type_name(a[4]));
        if (a[5]->t != CK_DICT)
            return sd_err(SD_EFORMAT, "%s: _rebuild_tensor_v2 backward_hooks is a %s", p->name, ck_type_name(a[5]));
        if (n == 7 && a[6]->t != CK_DICT && a[6]->t != CK_NONE)
            return sd_err(SD_EFORMAT, "%s: _rebuild_tensor_v2 metadata is a %s", p->name, ck_type_name(a[6]));
        {
            int rc = build_tensor(p, a[0], a[1], a[2], a[3], out);
            if (!rc) (*out)->tn->requires_grad = a[4]->i != 0;
            return rc;
        }
    case CK_REBUILD:
        if (n != 4) return sd_err(SD_EFORMAT, "%s: _rebuild_tensor called with %zu arguments", p->name, n);
        return build_tensor(p, a[0], a[1], a[2], a[3], out);
    case CK_PARAM:
    case CK_PARAM_STATE:
        if (n != (fn->kind == CK_PARAM ? 3u : 4u))
            return sd_err(SD_EFORMAT, "%s: %s called with %zu arguments", p->name, fn->gname, n);
        if (a[0]->t != CK_TENSOR)
            return sd_err(SD_EFORMAT, "%s: %s of a %s", p->name, fn->gname, ck_type_name(a[0]));
        if ((a[1]->t != CK_BOOL && a[1]->t != CK_INT) || a[2]->t != CK_DICT)
            return sd_err(SD_EFORMAT, "%s: %s: bad requires_grad or backward_hooks", p->name, fn->gname);
        {
            ck_val *t = new_val(p, CK_TENSOR);
            ck_tensor *tn = t ? ck_alloc(p, sizeof *tn) : NULL;
            if (!tn) return p->alloc_rc;
            *tn = *a[0]->tn;
            tn->requires_grad = a[1]->i != 0;
            t->tn = tn;
            *out = t;
        }
        return SD_OK;
    case CK_ENCODE: {
        if (n != 2 || a[0]->t != CK_STR || a[1]->t != CK_STR ||
            !((a[1]->n == 6 && !memcmp(a[1]->s, "latin1", 6)) || (a[1]->n == 7 && !memcmp(a[1]->s, "latin-1", 7))))
            return sd_err(SD_EFORMAT, "%s: _codecs.encode is only allowed as encode(str, 'latin1')", p->name);
        ck_val *b = new_val(p, CK_BYTES);
        if (!b || !(b->s = ck_alloc(p, a[0]->n + 1))) return p->alloc_rc;
        const unsigned char *s = (const unsigned char *)a[0]->s;
        size_t k = 0;
        for (size_t i = 0; i < a[0]->n;) {
            unsigned c = s[i];
            if (c < 0x80) { b->s[k++] = (char)c; i++; }
            else if ((c == 0xC2 || c == 0xC3) && i + 1 < a[0]->n) {
                b->s[k++] = (char)(((c & 3) << 6) | (s[i + 1] & 0x3F));
                i += 2;
            } else return sd_err(SD_EFORMAT, "%s: _codecs.encode: text is not latin-1", p->name);
        }
        b->n = k;
        *out = b;
        return SD_OK;
    }
    case CK_STORAGE_TYPE:
        return sd_err(SD_EFORMAT, "%s: refusing to load: pickle calls torch.%s", p->name, fn->gname);
    case CK_SET: {
        ck_val *l = new_val(p, CK_LIST);
        if (!l) return p->alloc_rc;
        if (n == 1 && (a[0]->t == CK_LIST || a[0]->t == CK_TUPLE)) {
            for (size_t i = 0; i < a[0]->n; i++)
                if (seq_push(p, l, a[0]->items[i])) return p->alloc_rc;
        } else if (n != 0) {
            return sd_err(SD_EFORMAT, "%s: set() called with %zu arguments", p->name, n);
        }
        *out = l;
        return SD_OK;
    }
    case CK_NP_DTYPE: {
        static const char *const ok[] = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"};
        if (n != 3 || a[0]->t != CK_STR)
            return sd_err(SD_EFORMAT, "%s: numpy.dtype called with %zu arguments", p->name, n);
        for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
            if (a[0]->n == 2 && !memcmp(a[0]->s, ok[i], 2)) {
                ck_val *d = new_val(p, CK_NPDTYPE);
                if (!d) return p->alloc_rc;
                d->s = (char *)ok[i];
                d->n = 2;
                *out = d;
                return SD_OK;
            }
        char show[40];
        ck_show(show, sizeof show, a[0]->s, a[0]->n);
        return sd_err(SD_EUNSUPPORTED, "%s: numpy dtype '%s' is not supported", p->name, show);
    }
    case CK_NP_SCALAR: {
        if (n != 2 || a[0]->t != CK_NPDTYPE || (a[1]->t != CK_BYTES && a[1]->t != CK_STR))
            return sd_err(SD_EFORMAT, "%s: numpy scalar() needs a dtype and bytes", p->name);
        char kind = a[0]->s[0];
        size_t sz = (size_t)(a[0]->s[1] - '0');
        if (a[1]->n != sz)
            return sd_err(SD_EFORMAT, "%s: numpy scalar of %zu bytes for dtype %s", p->name, a[1]->n, a[0]->s);
        const unsigned char *b = (const unsigned char *)a[1]->s;
        uint64_t x = 0;
        for (size_t i = sz; i-- > 0;) x = (x << 8) | b[i];
        ck_val *v = new_val(p, kind == 'f' ? CK_FLOAT : kind == 'b' ? CK_BOOL : CK_INT);
        if (!v) return p->alloc_rc;
        if (kind == 'f') {
            if (sz == 2) v->f = sd_f16_to_f32((uint16_t)x);
            else if (sz == 4) { uint32_t u = (uint32_t)x; float f; memcpy(&f, &u, 4); v->f = f; }
            else memcpy(&v->f, &x, 8);
        } else if (kind == 'b') {
            v->i = x != 0;
        } else if (kind == 'i') {
            if (sz < 8 && (x >> (8 * sz - 1)) & 1) x |= ~UINT64_C(0) << (8 * sz);
            v->i = (int64_t)x;
        } else {
            if (x > INT64_MAX) return sd_err(SD_EFORMAT, "%s: numpy uint64 scalar too large", p->name);
            v->i = (int64_t)x;
        }
        *out = v;
        return SD_OK;
    }
    }
    return sd_err(SD_EFORMAT, "%s: bad callable", p->name);
}

/* BINPERSID: ('storage', <storage type>, key, location, numel) */
static int persistent_load(ck_parser *p, ck_val *pid, ck_val **out)
{
    if (!pid || pid->t != CK_TUPLE || pid->n != 5 || pid->items[0]->t != CK_STR ||
        pid->items[0]->n != 7 || memcmp(pid->items[0]->s, "storage", 7))
        return sd_err(SD_EFORMAT, "%s: persistent id is not ('storage', type, key, location, numel)", p->name);
    ck_val *ty = pid->items[1], *key = pid->items[2], *loc = pid->items[3], *num = pid->items[4];
    if (ty->t != CK_GLOBAL || ty->kind != CK_STORAGE_TYPE)
        return sd_err(SD_EFORMAT, "%s: persistent id storage type is a %s", p->name, ck_type_name(ty));
    if (key->t != CK_STR || loc->t != CK_STR)
        return sd_err(SD_EFORMAT, "%s: persistent id key/location is not a string", p->name);
    int64_t numel;
    if (get_int(num, &numel) || numel < 0 || numel > ((int64_t)1 << 53))
        return sd_err(SD_EFORMAT, "%s: persistent id numel is not an integer in 0..2^53", p->name);
    ck_val *st = new_val(p, CK_STORAGE);
    if (!st) return p->alloc_rc;
    st->s = key->s;
    st->n = key->n;
    char show[100];
    ck_show(show, sizeof show, key->s, key->n);
    const sd_ckpt_storage *s = ck_find_storage(p, key->s, key->n);
    if (!s) return sd_err(SD_EFORMAT, "%s: storage '%s' is missing from the archive", p->name, show);
    uint64_t want = (uint64_t)numel * sd_st_dtype_size(ty->dtype);
    if (s->nbytes != want)
        return sd_err(SD_EFORMAT, "%s: storage '%s' has %llu bytes, the pickle says %lld x %zu = %llu", p->name,
                      show, (unsigned long long)s->nbytes, (long long)numel, sd_st_dtype_size(ty->dtype),
                      (unsigned long long)want);
    st->dtype = ty->dtype;
    st->numel = numel;
    st->sto = s;
    *out = st;
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * The interpreter */

static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; }   /* surrogates allowed (surrogatepass) */
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; else if (c == 0xF4) hi = 0x8F; }
        else return 0;
        if (n - i <= (size_t)need) return 0;
        for (int k = 1; k <= need; k++) {
            unsigned b = s[i + k];
            if (b < lo || b > hi) return 0;
            lo = 0x80; hi = 0xBF;
        }
        i += (size_t)need + 1;
    }
    return 1;
}

typedef struct {
    ck_val **v;
    size_t n, cap;
    size_t *marks;
    size_t nmarks, capmarks;
    ck_val **memo;
    size_t nmemo, memo_count;
} vm;

static int push(ck_parser *p, vm *m, ck_val *v)
{
    if (!v) return p->alloc_rc;
    if (m->n == m->cap) {
        if (m->cap >= MAX_STACK) return sd_err(SD_EFORMAT, "%s: pickle stack deeper than %u", p->name, MAX_STACK);
        size_t cap = m->cap ? m->cap * 2 : 256;
        ck_val **nv = realloc(m->v, cap * sizeof *nv);
        if (!nv) return sd_err(SD_ENOMEM, "out of memory");
        m->v = nv;
        m->cap = cap;
    }
    m->v[m->n++] = v;
    return SD_OK;
}

static size_t base(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

#define NEED(k) do { if (m.n - base(&m) < (size_t)(k)) { \
    rc = sd_err(SD_EFORMAT, "%s: pickle stack underflow at offset %zu (opcode 0x%02x)", p->name, at, op); goto out; } } while (0)
#define READ(k) do { if (n - pos < (size_t)(k)) { \
    rc = sd_err(SD_EFORMAT, "%s: pickle truncated at offset %zu (opcode 0x%02x)", p->name, at, op); goto out; } } while (0)
#define FAIL(...) do { rc = sd_err(SD_EFORMAT, __VA_ARGS__); goto out; } while (0)
#define CHECK(x) do { if ((rc = (x))) goto out; } while (0)

static uint64_t le(const unsigned char *b, int k)
{
    uint64_t x = 0;
    for (int i = k - 1; i >= 0; i--) x = (x << 8) | b[i];
    return x;
}

int ck_unpickle(ck_parser *p, const unsigned char *b, size_t n, ck_val **root)
{
    vm m = {0};
    int rc = SD_OK;
    size_t pos = 0, at = 0;
    unsigned op = 0;
    *root = NULL;
    for (;;) {
        at = pos;
        if (pos >= n) FAIL("%s: pickle ends without STOP", p->name);
        op = b[pos++];
        switch (op) {
        case 0x80:   /* PROTO */
            READ(1);
            if (b[pos] > 5) FAIL("%s: unsupported pickle protocol %u", p->name, b[pos]);
            pos++;
            break;
        case 0x95:   /* FRAME */
            READ(8);
            pos += 8;
            break;
        case '}': CHECK(push(p, &m, new_val(p, CK_DICT))); break;
        case ']': CHECK(push(p, &m, new_val(p, CK_LIST))); break;
        case ')': CHECK(push(p, &m, new_val(p, CK_TUPLE))); break;
        case 'N': CHECK(push(p, &m, new_val(p, CK_NONE))); break;
        case 0x88:
        case 0x89: {
            ck_val *v = new_val(p, CK_BOOL);
            if (v) v->i = op == 0x88;
            CHECK(push(p, &m, v));
            break;
        }
        case '(':
            if (m.nmarks == m.capmarks) {
                if (m.capmarks >= MAX_MARKS) FAIL("%s: pickle nests more than %u marks", p->name, MAX_MARKS);
                size_t cap = m.capmarks ? m.capmarks * 2 : 64;
                size_t *nm = realloc(m.marks, cap * sizeof *nm);
                if (!nm) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
                m.marks = nm;
                m.capmarks = cap;
            }
            m.marks[m.nmarks++] = m.n;
            break;
        case 'X': case 0x8c: case 0x8d:   /* BINUNICODE, SHORT_BINUNICODE, BINUNICODE8 */
        case 'B': case 'C': case 0x8e:    /* BINBYTES, SHORT_BINBYTES, BINBYTES8 */
        case 'U': case 'T': {             /* SHORT_BINSTRING, BINSTRING */
            int lb = (op == 0x8c || op == 'C' || op == 'U') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            READ(lb);
            uint64_t len = le(b + pos, lb);
            if (op == 'T' && len > 0x7fffffffu) FAIL("%s: negative BINSTRING length at offset %zu", p->name, at);
            pos += (size_t)lb;
            READ(len);
            int text = op == 'X' || op == 0x8c || op == 0x8d || op == 'U' || op == 'T';
            if ((op == 'X' || op == 0x8c || op == 0x8d) && !utf8_valid(b + pos, (size_t)len))
                FAIL("%s: invalid UTF-8 in a pickle string at offset %zu", p->name, at);
            ck_val *v = new_val(p, text ? CK_STR : CK_BYTES);
            if (!v || !(v->s = ck_alloc(p, (size_t)len + 1))) { rc = p->alloc_rc; goto out; }
            memcpy(v->s, b + pos, (size_t)len);
            v->n = (size_t)len;
            pos += (size_t)len;
            CHECK(push(p, &m, v));
            break;
        }
        case 'J': case 'K': case 'M': {   /* BININT, BININT1, BININT2 */
            int k = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            READ(k);
            ck_val *v = new_val(p, CK_INT);
            if (v) v->i = op == 'J' ? (int64_t)(int32_t)(uint32_t)le(b + pos, 4) : (int64_t)le(b + pos, k);
            pos += (size_t)k;
            CHECK(push(p, &m, v));
            break;
        }
        case 0x8a: case 0x8b: {           /* LONG1, LONG4 */
            int lb = op == 0x8a ? 1 : 4;
            READ(lb);
            uint64_t len = le(b + pos, lb);
            pos += (size_t)lb;
            if (op == 0x8b && len > 0x7fffffffu) FAIL("%s: negative LONG4 length at offset %zu", p->name, at);
            READ(len);
            if (len > 8) FAIL("%s: integer of %llu bytes at offset %zu (at most 64-bit supported)", p->name,
                              (unsigned long long)len, at);
            uint64_t x = le(b + pos, (int)len);
            if (len && len < 8 && (b[pos + len - 1] & 0x80)) x |= ~UINT64_C(0) << (8 * len);
            ck_val *v = new_val(p, CK_INT);
            if (v) v->i = (int64_t)x;
            pos += (size_t)len;
            CHECK(push(p, &m, v));
            break;
        }
        case 'G': {                       /* BINFLOAT, big-endian */
            READ(8);
            uint64_t x = 0;
            for (int i = 0; i < 8; i++) x = (x << 8) | b[pos + i];
            pos += 8;
            ck_val *v = new_val(p, CK_FLOAT);
            if (v) memcpy(&v->f, &x, 8);
            CHECK(push(p, &m, v));
            break;
        }
        case 't': case 'l': case 'd': {   /* TUPLE, LIST, DICT (from the mark) */
            if (!m.nmarks) FAIL("%s: pickle opcode '%c' without MARK at offset %zu", p->name, op, at);
            size_t b0 = m.marks[--m.nmarks];
            size_t k = m.n - b0;
            if (op == 'd' && k % 2) FAIL("%s: DICT with an odd number of items at offset %zu", p->name, at);
            ck_val *v = new_val(p, op == 't' ? CK_TUPLE : op == 'l' ? CK_LIST : CK_DICT);
            if (!v) { rc = p->alloc_rc; goto out; }
            for (size_t i = 0; i < k; i++)
                if (seq_push(p, v, m.v[b0 + i])) { rc = p->alloc_rc; goto out; }
            m.n = b0;
            CHECK(push(p, &m, v));
            break;
        }
        case 0x85: case 0x86: case 0x87: {   /* TUPLE1..3 */
            size_t k = op - 0x84u;
            NEED(k);
            ck_val *v = new_val(p, CK_TUPLE);
            if (!v) { rc = p->alloc_rc; goto out; }
            for (size_t i = 0; i < k; i++)
                if (seq_push(p, v, m.v[m.n - k + i])) { rc = p->alloc_rc; goto out; }
            m.n -= k;
            CHECK(push(p, &m, v));
            break;
        }
        case 's': {                       /* SETITEM */
            NEED(3);
            ck_val *d = m.v[m.n - 3];
            if (d->t != CK_DICT) FAIL("%s: SETITEM on a %s at offset %zu", p->name, ck_type_name(d), at);
            if (seq_push(p, d, m.v[m.n - 2]) || seq_push(p, d, m.v[m.n - 1])) { rc = p->alloc_rc; goto out; }
            m.n -= 2;
            break;
        }
        case 'u': case 'e': {             /* SETITEMS, APPENDS */
            if (!m.nmarks) FAIL("%s: pickle opcode '%c' without MARK at offset %zu", p->name, op, at);
            size_t b0 = m.marks[--m.nmarks];
            if (b0 < base(&m) + 1 || b0 == 0)
                FAIL("%s: pickle stack underflow at offset %zu (opcode 0x%02x)", p->name, at, op);
            ck_val *c = m.v[b0 - 1];
            size_t k = m.n - b0;
            if (op == 'u' && (c->t != CK_DICT || k % 2))
                FAIL("%s: SETITEMS on a %s with %zu items at offset %zu", p->name, ck_type_name(c), k, at);
            if (op == 'e' && c->t != CK_LIST) FAIL("%s: APPENDS on a %s at offset %zu", p->name, ck_type_name(c), at);
            for (size_t i = 0; i < k; i++)
                if (seq_push(p, c, m.v[b0 + i])) { rc = p->alloc_rc; goto out; }
            m.n = b0;
            break;
        }
        case 'a': {                       /* APPEND */
            NEED(2);
            ck_val *l = m.v[m.n - 2];
            if (l->t != CK_LIST) FAIL("%s: APPEND on a %s at offset %zu", p->name, ck_type_name(l), at);
            if (seq_push(p, l, m.v[m.n - 1])) { rc = p->alloc_rc; goto out; }
            m.n--;
            break;
        }
        case 'q': case 'r': case 0x94: {  /* BINPUT, LONG_BINPUT, MEMOIZE */
            size_t idx;
            if (op == 0x94) idx = m.memo_count;
            else {
                int k = op == 'q' ? 1 : 4;
                READ(k);
                idx = (size_t)le(b + pos, k);
                pos += (size_t)k;
            }
            NEED(1);
            if (idx >= MAX_MEMO || idx > n)
                FAIL("%s: memo index %zu out of range at offset %zu", p->name, idx, at);
            if (idx >= m.nmemo) {
                size_t nn = m.nmemo ? m.nmemo : 64;
                while (nn <= idx) nn *= 2;
                ck_val **nm = realloc(m.memo, nn * sizeof *nm);
                if (!nm) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
                memset(nm + m.nmemo, 0, (nn - m.nmemo) * sizeof *nm);
                m.memo = nm;
                m.nmemo = nn;
            }
            if (!m.memo[idx]) m.memo_count++;
            m.memo[idx] = m.v[m.n - 1];
            break;
        }
        case 'h': case 'j': {             /* BINGET, LONG_BINGET */
            int k = op == 'h' ? 1 : 4;
            READ(k);
            size_t idx = (size_t)le(b + pos, k);
            pos += (size_t)k;
            if (idx >= m.nmemo || !m.memo[idx])
                FAIL("%s: memo index %zu not set at offset %zu", p->name, idx, at);
            CHECK(push(p, &m, m.memo[idx]));
            break;
        }
        case 'c': {                       /* GLOBAL "module\nname\n" */
            const char *l1 = (const char *)b + pos;
            const char *e1 = memchr(l1, '\n', n - pos < MAX_GLOBAL_LINE ? n - pos : MAX_GLOBAL_LINE);
            if (!e1) FAIL("%s: bad GLOBAL at offset %zu", p->name, at);
            size_t p2 = pos + (size_t)(e1 - l1) + 1;
            const char *l2 = (const char *)b + p2;
            const char *e2 = p2 < n ? memchr(l2, '\n', n - p2 < MAX_GLOBAL_LINE ? n - p2 : MAX_GLOBAL_LINE) : NULL;
            if (!e2) FAIL("%s: bad GLOBAL at offset %zu", p->name, at);
            ck_val *g = NULL;
            CHECK(make_global(p, l1, (size_t)(e1 - l1), l2, (size_t)(e2 - l2), &g));
            pos = p2 + (size_t)(e2 - l2) + 1;
            CHECK(push(p, &m, g));
            break;
        }
        case 0x93: {                      /* STACK_GLOBAL */
            NEED(2);
            ck_val *mo = m.v[m.n - 2], *na = m.v[m.n - 1];
            if (mo->t != CK_STR || na->t != CK_STR) FAIL("%s: STACK_GLOBAL of non-strings at offset %zu", p->name, at);
            ck_val *g = NULL;
            CHECK(make_global(p, mo->s, mo->n, na->s, na->n, &g));
            m.n -= 2;
            CHECK(push(p, &m, g));
            break;
        }
        case 'R': {                       /* REDUCE */
            NEED(2);
            ck_val *r = NULL;
            CHECK(call(p, m.v[m.n - 2], m.v[m.n - 1], &r));
            m.n -= 2;
            CHECK(push(p, &m, r));
            break;
        }
        case 'b': {                       /* BUILD: OrderedDict attributes (ignored), numpy dtype state */
            NEED(2);
            ck_val *obj = m.v[m.n - 2], *state = m.v[m.n - 1];
            if (obj->t == CK_NPDTYPE) {
                /* (version, byte order, subarray, names, fields, elsize, alignment, flags) */
                if (state->t != CK_TUPLE || state->n < 2 || state->items[1]->t != CK_STR || state->items[1]->n != 1)
                    FAIL("%s: bad numpy dtype state at offset %zu", p->name, at);
                if (state->items[1]->s[0] == '>') {
                    rc = sd_err(SD_EUNSUPPORTED, "%s: big-endian numpy scalars are not supported", p->name);
                    goto out;
                }
                m.n--;
                break;
            }
            if (obj->t != CK_DICT || (state->t != CK_DICT && state->t != CK_NONE && state->t != CK_TUPLE))
                FAIL("%s: refusing to load: BUILD sets the state of a %s at offset %zu", p->name, ck_type_name(obj), at);
            m.n--;
            break;
        }
        case 'Q': {                       /* BINPERSID */
            NEED(1);
            ck_val *st = NULL;
            CHECK(persistent_load(p, m.v[m.n - 1], &st));
            m.v[m.n - 1] = st;
            break;
        }
        case '0':                         /* POP */
            if (m.n > base(&m)) m.n--;
            else if (m.nmarks) m.nmarks--;   /* Python pops the mark then */
            else FAIL("%s: pickle stack underflow at offset %zu (opcode 0x%02x)", p->name, at, op);
            break;
        case '1':                         /* POP_MARK */
            if (!m.nmarks) FAIL("%s: POP_MARK without MARK at offset %zu", p->name, at);
            m.n = m.marks[--m.nmarks];
            break;
        case '2':                         /* DUP */
            NEED(1);
            CHECK(push(p, &m, m.v[m.n - 1]));
            break;
        case '.':                         /* STOP */
            NEED(1);
            *root = m.v[m.n - 1];
            goto out;
        case 'i': case 'o': case 0x81: case 0x92: case 0x82: case 0x83: case 0x84:
            FAIL("%s: refusing to load: pickle opcode 0x%02x (%s) creates arbitrary objects", p->name, op,
                 op == 'i' ? "INST" : op == 'o' ? "OBJ" : op == 0x81 ? "NEWOBJ" : op == 0x92 ? "NEWOBJ_EX" : "EXT");
        default:
            if (op >= 0x20 && op < 0x7f)
                FAIL("%s: unsupported pickle opcode '%c' (0x%02x) at offset %zu", p->name, op, op, at);
            FAIL("%s: unsupported pickle opcode 0x%02x at offset %zu", p->name, op, at);
        }
    }
out:
    free(m.v);
    free(m.marks);
    free(m.memo);
    return rc;
}
