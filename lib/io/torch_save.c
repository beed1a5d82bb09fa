/* torch.save writer (see torch_save.h). */
#include "io/torch_save.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "io/zip.h"

enum { E_TENSOR, E_INT, E_DICT, E_END };

typedef struct ts_entry {
    int kind;
    char *key;
    int64_t v;                       /* E_INT */
    sd_st_dtype dtype;               /* E_TENSOR */
    int ndim;
    int64_t shape[SD_ST_MAX_DIMS];
    int64_t numel;
    const void *data;
} ts_entry;

struct sd_torch_save {
    ts_entry *e;
    size_t n, cap;
    int depth;
    int force_zip64;
};

int sd_torch_save_new(sd_torch_save **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
}

void sd_torch_save_free(sd_torch_save *ts)
{
    if (!ts) return;
    for (size_t i = 0; i < ts->n; i++) free(ts->e[i].key);
    free(ts->e);
    free(ts);
}

void sd_torch_save_force_zip64(sd_torch_save *ts, int on) { ts->force_zip64 = on; }

static const char *storage_type(sd_st_dtype t)
{
    switch (t) {
    case SD_ST_F32: return "FloatStorage";
    case SD_ST_F16: return "HalfStorage";
    case SD_ST_BF16: return "BFloat16Storage";
    case SD_ST_F64: return "DoubleStorage";
    case SD_ST_I64: return "LongStorage";
    case SD_ST_I32: return "IntStorage";
    case SD_ST_I16: return "ShortStorage";
    case SD_ST_I8: return "CharStorage";
    case SD_ST_U8: return "ByteStorage";
    case SD_ST_BOOL: return "BoolStorage";
    default: return NULL;
    }
}

static int add(sd_torch_save *ts, int kind, const char *key, ts_entry **out)
{
    if (ts->n == ts->cap) {
        size_t nc = ts->cap ? ts->cap * 2 : 64;
        ts_entry *ne = realloc(ts->e, nc * sizeof *ne);
        if (!ne) return sd_err(SD_ENOMEM, "out of memory");
        ts->e = ne;
        ts->cap = nc;
    }
    ts_entry *e = &ts->e[ts->n];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    if (key && !(e->key = strdup(key))) return sd_err(SD_ENOMEM, "out of memory");
    ts->n++;
    *out = e;
    return SD_OK;
}

int sd_torch_save_tensor(sd_torch_save *ts, const char *key, sd_st_dtype dtype, int ndim, const int64_t *shape,
                         const void *data)
{
    if (!storage_type(dtype))
        return sd_err(SD_EUNSUPPORTED, "tensor '%s': dtype %s has no torch storage type", key,
                      sd_st_dtype_name(dtype));
    if (ndim < 0 || ndim > SD_ST_MAX_DIMS)
        return sd_err(SD_EUNSUPPORTED, "tensor '%s': %d dimensions (at most %d)", key, ndim, SD_ST_MAX_DIMS);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] && numel > INT64_MAX / 16 / shape[d]))
            return sd_err(SD_EINVAL, "tensor '%s': bad shape", key);
        numel *= shape[d];
    }
    if (numel && !data) return sd_err(SD_EINVAL, "tensor '%s': no data", key);
    ts_entry *e;
    int rc = add(ts, E_TENSOR, key, &e);
    if (rc) return rc;
    e->dtype = dtype;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->numel = numel;
    e->data = data;
    return SD_OK;
}

int sd_torch_save_int(sd_torch_save *ts, const char *key, int64_t v)
{
    ts_entry *e;
    int rc = add(ts, E_INT, key, &e);
    if (!rc) e->v = v;
    return rc;
}

int sd_torch_save_dict_begin(sd_torch_save *ts, const char *key)
{
    ts_entry *e;
    int rc = add(ts, E_DICT, key, &e);
    if (!rc) ts->depth++;
    return rc;
}

int sd_torch_save_dict_end(sd_torch_save *ts)
{
    if (ts->depth <= 0) return sd_err(SD_ESTATE, "torch.save: no open dict to end");
    ts_entry *e;
    int rc = add(ts, E_END, NULL, &e);
    if (!rc) ts->depth--;
    return rc;
}

/* ---- pickle ---------------------------------------------------------------------------------- */

typedef struct pk {
    unsigned char *b;
    size_t n, cap;
    int oom;
    uint32_t memo;              /* next memo index */
    int64_t m_storage, m_cpu, m_rebuild, m_odict, m_stype[SD_ST_U64 + 1];
    int64_t nstorage;           /* storage keys given so far */
} pk;

static void put(pk *p, const void *d, size_t n)
{
    if (p->oom || !n) return;
    if (p->n + n > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4096;
        while (cap < p->n + n) cap *= 2;
        unsigned char *q = realloc(p->b, cap);
        if (!q) {
            p->oom = 1;
            return;
        }
        p->b = q;
        p->cap = cap;
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

static void op(pk *p, unsigned char c) { put(p, &c, 1); }

static void le32(unsigned char *h, uint32_t v)
{
    for (int i = 0; i < 4; i++) h[i] = (unsigned char)(v >> (8 * i));
}

/* BINPUT / LONG_BINPUT of the next memo index; returns it */
static int64_t memo_put(pk *p)
{
    unsigned char h[5];
    uint32_t i = p->memo++;
    if (i < 256) {
        h[0] = 'q', h[1] = (unsigned char)i;
        put(p, h, 2);
    } else {
        h[0] = 'r';
        le32(h + 1, i);
        put(p, h, 5);
    }
    return i;
}

static void memo_get(pk *p, int64_t i)
{
    unsigned char h[5];
    if (i < 256) {
        h[0] = 'h', h[1] = (unsigned char)i;
        put(p, h, 2);
    } else {
        h[0] = 'j';
        le32(h + 1, (uint32_t)i);
        put(p, h, 5);
    }
}

static void pk_str(pk *p, const char *s)   /* BINUNICODE, memoized */
{
    size_t n = strlen(s);
    unsigned char h[5];
    h[0] = 'X';
    le32(h + 1, (uint32_t)n);
    put(p, h, 5);
    put(p, s, n);
    memo_put(p);
}

/* A string or global Python reuses (the same object): written once, then fetched from the memo. */
static void pk_shared_str(pk *p, int64_t *m, const char *s)
{
    if (*m >= 0) memo_get(p, *m);
    else pk_str(p, s), *m = p->memo - 1;
}

static void pk_global(pk *p, int64_t *m, const char *mod, const char *name)
{
    if (*m >= 0) {
        memo_get(p, *m);
        return;
    }
    op(p, 'c');
    put(p, mod, strlen(mod));
    op(p, '\n');
    put(p, name, strlen(name));
    op(p, '\n');
    *m = memo_put(p);
}

/* Python's save_long for protocol 2 */
static void pk_int(pk *p, int64_t v)
{
    unsigned char h[11];
    if (v >= 0 && v < 256) {
        h[0] = 'K', h[1] = (unsigned char)v;
        put(p, h, 2);
    } else if (v >= 0 && v < 65536) {
        h[0] = 'M', h[1] = (unsigned char)v, h[2] = (unsigned char)(v >> 8);
        put(p, h, 3);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        h[0] = 'J';
        le32(h + 1, (uint32_t)(int32_t)v);
        put(p, h, 5);
    } else {
        /* LONG1: little-endian two's complement, (bits of |v|) / 8 + 1 bytes, one less when
           that leaves a redundant 0xff sign byte */
        uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        int bits = 0;
        while (bits < 64 && mag >> bits) bits++;
        int nb = bits / 8 + 1;
        uint64_t u = (uint64_t)v;
        unsigned char d[9];
        for (int i = 0; i < 9; i++) d[i] = i < 8 ? (unsigned char)(u >> (8 * i)) : (v < 0 ? 0xff : 0);
        if (v < 0 && nb > 1 && d[nb - 1] == 0xff && (d[nb - 2] & 0x80)) nb--;
        h[0] = 0x8a, h[1] = (unsigned char)nb;
        memcpy(h + 2, d, (size_t)nb);
        put(p, h, 2 + (size_t)nb);
    }
}

/* A tuple of ints (tuple(t.size()), t.stride()): EMPTY_TUPLE, TUPLE1..3 or MARK ... TUPLE */
static void pk_tuple(pk *p, const int64_t *v, int n)
{
    if (!n) {
        op(p, ')');
        return;
    }
    if (n > 3) op(p, '(');
    for (int i = 0; i < n; i++) pk_int(p, v[i]);
    op(p, n == 1 ? 0x85 : n == 2 ? 0x86 : n == 3 ? 0x87 : 't');
    memo_put(p);
}

static void pk_tensor(pk *p, const ts_entry *e)
{
    pk_global(p, &p->m_rebuild, "torch._utils", "_rebuild_tensor_v2");
    op(p, '(');                                  /* the arguments */
    op(p, '(');                                  /* the persistent id */
    pk_shared_str(p, &p->m_storage, "storage");
    pk_global(p, &p->m_stype[e->dtype], "torch", storage_type(e->dtype));
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)p->nstorage++);
    pk_str(p, key);
    pk_shared_str(p, &p->m_cpu, "cpu");
    pk_int(p, e->numel);
    op(p, 't');
    memo_put(p);
    op(p, 'Q');                                  /* BINPERSID */
    pk_int(p, 0);                                /* storage offset */
    int64_t stride[SD_ST_MAX_DIMS], s = 1;
    for (int d = e->ndim - 1; d >= 0; d--) stride[d] = s, s *= e->shape[d];
    pk_tuple(p, e->shape, e->ndim);
    pk_tuple(p, stride, e->ndim);
    op(p, 0x89);                                 /* NEWFALSE: requires_grad */
    pk_global(p, &p->m_odict, "collections", "OrderedDict");
    op(p, ')');
    op(p, 'R');
    memo_put(p);                                 /* backward hooks: OrderedDict() */
    op(p, 't');
    memo_put(p);
    op(p, 'R');
    memo_put(p);                                 /* the tensor */
}

static size_t skip_value(const sd_torch_save *ts, size_t i);

/* The dict whose entries start at i; returns the index after it (past its E_END, if any). */
static size_t pk_dict(pk *p, const sd_torch_save *ts, size_t i);

static size_t pk_item(pk *p, const sd_torch_save *ts, size_t i)
{
    const ts_entry *e = &ts->e[i];
    pk_str(p, e->key);
    if (e->kind == E_INT) {
        pk_int(p, e->v);
        return i + 1;
    }
    if (e->kind == E_TENSOR) {
        pk_tensor(p, e);
        return i + 1;
    }
    op(p, '}');
    memo_put(p);
    return pk_dict(p, ts, i + 1);
}

static size_t skip_value(const sd_torch_save *ts, size_t i)
{
    if (ts->e[i].kind != E_DICT) return i + 1;
    i++;
    while (i < ts->n && ts->e[i].kind != E_END) i = skip_value(ts, i);
    return i < ts->n ? i + 1 : i;
}

static size_t pk_dict(pk *p, const sd_torch_save *ts, size_t i)
{
    size_t count = 0, j = i;
    while (j < ts->n && ts->e[j].kind != E_END) j = skip_value(ts, j), count++;
    size_t end = j < ts->n ? j + 1 : j;
    if (count == 1) {               /* save_dict: one item is SETITEM */
        pk_item(p, ts, i);
        op(p, 's');
        return end;
    }
    if (!count) return end;
    size_t k;
    do {                            /* batches of 1000 (and an empty one after a full last one) */
        op(p, '(');
        for (k = 0; k < 1000 && i < ts->n && ts->e[i].kind != E_END; k++) i = pk_item(p, ts, i);
        op(p, 'u');
    } while (k == 1000);
    return end;
}

static int make_pickle(const sd_torch_save *ts, pk *p)
{
    memset(p, 0, sizeof *p);
    p->m_storage = p->m_cpu = p->m_rebuild = p->m_odict = -1;
    for (int i = 0; i <= SD_ST_U64; i++) p->m_stype[i] = -1;
    if (ts->depth) return sd_err(SD_ESTATE, "torch.save: a nested dict was not ended");
    put(p, "\x80\x02}", 3);
    memo_put(p);
    pk_dict(p, ts, 0);
    op(p, '.');
    if (p->oom) {
        free(p->b);
        p->b = NULL;
        return sd_err(SD_ENOMEM, "out of memory");
    }
    return SD_OK;
}

int sd_torch_save_pickle(const sd_torch_save *ts, void **out, size_t *n)
{
    pk p;
    int rc = make_pickle(ts, &p);
    if (rc) return rc;
    *out = p.b;
    *n = p.n;
    return SD_OK;
}

/* ---- archive --------------------------------------------------------------------------------- */

typedef struct ts_storage {
    const ts_entry *e;
    char key[24];
} ts_storage;

static int cmp_storage(const void *a, const void *b)
{
    return strcmp(((const ts_storage *)a)->key, ((const ts_storage *)b)->key);
}

/* torch's archive name: the file name without directory and extension, or "archive" */
static void archive_stem(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    for (size_t i = n; i > 0; i--)
        if (base[i - 1] == '.') {
            n = i - 1;
            break;
        }
    if (!n) snprintf(out, cap, "archive");
    else snprintf(out, cap, "%.*s", (int)(n < cap - 1 ? n : cap - 1), base);
}

int sd_torch_save_write(sd_torch_save *ts, const char *path)
{
    pk p;
    int rc = make_pickle(ts, &p);
    if (rc) return sd_err_prefix(rc, "%s", path);
    size_t ns = 0;
    for (size_t i = 0; i < ts->n; i++) ns += ts->e[i].kind == E_TENSOR;
    ts_storage *st = calloc(ns + 1, sizeof *st);
    if (!st) {
        free(p.b);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    ns = 0;
    for (size_t i = 0; i < ts->n; i++)
        if (ts->e[i].kind == E_TENSOR) {
            st[ns].e = &ts->e[i];
            snprintf(st[ns].key, sizeof st[ns].key, "%zu", ns);
            ns++;
        }
    qsort(st, ns, sizeof *st, cmp_storage);   /* torch writes data/<key> in sorted key order */
    char stem[256], name[300];
    archive_stem(path, stem, sizeof stem);
    sd_atomic_file af;
    rc = sd_atomic_open(&af, path);
    if (!rc) {
        sd_zip_writer zw;
        sd_zip_writer_init(&zw, af.fp, 0);
        zw.force_zip64 = ts->force_zip64;
        snprintf(name, sizeof name, "%s/data.pkl", stem);
        rc = sd_zip_add(&zw, name, SD_ZIP_STORE, &(sd_zip_part){ p.b, p.n }, 1);
        for (size_t i = 0; i < ns && !rc; i++) {
            const ts_entry *e = st[i].e;
            size_t nb = (size_t)e->numel * sd_st_dtype_size(e->dtype);
            snprintf(name, sizeof name, "%s/data/%s", stem, st[i].key);
            rc = sd_zip_add(&zw, name, SD_ZIP_STORE, &(sd_zip_part){ e->data, nb }, nb ? 1 : 0);
        }
        snprintf(name, sizeof name, "%s/version", stem);
        if (!rc) rc = sd_zip_add(&zw, name, SD_ZIP_STORE, &(sd_zip_part){ "3\n", 2 }, 1);
        if (!rc) rc = sd_zip_writer_finish(&zw, NULL, NULL);
        sd_zip_writer_free(&zw);
        if (rc) {
            sd_atomic_abort(&af);
            rc = sd_err_prefix(rc, "%s: cannot write", path);
        } else {
            rc = sd_atomic_commit(&af);
        }
    }
    free(st);
    free(p.b);
    return rc;
}
