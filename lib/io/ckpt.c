/* PyTorch zip checkpoints: archive reading, flattening to named tensors, reads, conversion. */
#include "io/ckpt.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "io/ckpt_internal.h"

#define MAX_DEPTH 64
#define MAX_NAME 4096
#define MAX_META 100000

struct sd_ckpt {
    char *name;
    void *map;                 /* our mmap (sd_ckpt_open) */
    size_t map_len;
    sd_ckpt_storage *sto;      /* sorted by key; keys owned */
    size_t nsto;
    void **copies;             /* storage bytes we had to copy */
    size_t ncopies;
    sd_ckpt_tensor *t;
    size_t nt, capt;
    size_t *by_name;           /* tensor indices sorted by name */
    char **mk, **mv;
    size_t nmeta, capmeta;
    size_t skipped;
    int wrapped;
};

/* ---------------------------------------------------------------------------------------------
 * Storages */

static int sto_cmp(const void *a, const void *b)
{
    return strcmp(((const sd_ckpt_storage *)a)->key, ((const sd_ckpt_storage *)b)->key);
}

const sd_ckpt_storage *ck_find_storage(const ck_parser *p, const char *key, size_t n)
{
    if (memchr(key, 0, n)) return NULL;
    size_t lo = 0, hi = p->nstorages;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *k = p->storages[mid].key;
        int c = strncmp(key, k, n);
        if (c == 0) c = k[n] ? -1 : 0;
        if (c < 0) hi = mid;
        else if (c > 0) lo = mid + 1;
        else return &p->storages[mid];
    }
    return NULL;
}

static int add_storage(sd_ckpt *ck, const char *key, size_t kn, const void *data, uint64_t nbytes, size_t *cap)
{
    if (ck->nsto == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        sd_ckpt_storage *s = realloc(ck->sto, nc * sizeof *s);
        if (!s) return sd_err(SD_ENOMEM, "out of memory");
        ck->sto = s;
        *cap = nc;
    }
    char *k = malloc(kn + 1);
    if (!k) return sd_err(SD_ENOMEM, "out of memory");
    memcpy(k, key, kn);
    k[kn] = 0;
    ck->sto[ck->nsto].key = k;
    ck->sto[ck->nsto].data = data;
    ck->sto[ck->nsto].nbytes = nbytes;
    ck->nsto++;
    return SD_OK;
}

static int sort_storages(sd_ckpt *ck)
{
    if (ck->nsto) qsort(ck->sto, ck->nsto, sizeof *ck->sto, sto_cmp);
    for (size_t i = 1; i < ck->nsto; i++)
        if (!strcmp(ck->sto[i - 1].key, ck->sto[i].key)) {
            char show[100];
            ck_show(show, sizeof show, ck->sto[i].key, strlen(ck->sto[i].key));
            return sd_err(SD_EFORMAT, "%s: storage '%s' appears twice in the archive", ck->name, show);
        }
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Zip */

/* libarchive's message as one line (its zip messages may contain newlines). */
static const char *la_msg(struct archive *a, char *buf, size_t size)
{
    const char *m = archive_error_string(a);
    if (!m) m = "unknown error";
    size_t k = 0;
    for (; m[k] && k + 1 < size; k++) buf[k] = (unsigned char)m[k] < 0x20 ? ' ' : m[k];
    while (k && buf[k - 1] == ' ') k--;
    buf[k] = 0;
    return buf;
}

/* Read the current member. Stored members come back from libarchive as blocks inside buf (we
 * opened the archive over it): those are used in place. Anything else is copied block by block
 * (a block pointer is only valid until the next read). */
static int read_member(sd_ckpt *ck, struct archive *a, const unsigned char *buf, size_t n, size_t *copied,
                       const void **out, uint64_t *len, int *own)
{
    const unsigned char *zc = NULL;    /* zero-copy run inside buf */
    size_t zn = 0;
    unsigned char *cp = NULL;          /* copy mode */
    size_t cpn = 0, cpcap = 0;
    int copying = 0;
    size_t limit = (n > (SIZE_MAX - (64u << 20)) / 4) ? SIZE_MAX : 4 * n + (64u << 20);
    *own = 0;
    for (;;) {
        const void *blk;
        size_t sz;
        la_int64_t off;
        int r = archive_read_data_block(a, &blk, &sz, &off);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK) {
            char lm[256];
            free(cp);
            return sd_err(SD_EFORMAT, "%s: cannot read archive member: %s", ck->name,
                          la_msg(a, lm, sizeof lm));
        }
        if (!sz) continue;
        size_t pos = copying ? cpn : zn;
        if (off < 0 || (uint64_t)off != pos) {
            free(cp);
            return sd_err(SD_EFORMAT, "%s: archive member has holes", ck->name);
        }
        const unsigned char *bp = blk;
        int inside = bp >= buf && bp <= buf + n && sz <= (size_t)(buf + n - bp);
        if (!copying && inside && (!zc || bp == zc + zn)) {
            if (!zc) zc = bp;
            zn += sz;
            continue;
        }
        if (!copying) {   /* switch to copy mode; the run so far is in buf and still valid */
            copying = 1;
            cpn = zn;
        }
        if (sz > limit - cpn || *copied > limit - cpn - sz) {
            free(cp);
            return sd_err(SD_EFORMAT, "%s: archive member expands past %zu MiB", ck->name, limit >> 20);
        }
        if (cpn + sz > cpcap) {
            size_t nc = cpcap ? cpcap : 1 << 16;
            while (nc < cpn + sz) nc *= 2;
            unsigned char *np = realloc(cp, nc);
            if (!np) { free(cp); return sd_err(SD_ENOMEM, "out of memory"); }
            if (!cp && zn) memcpy(np, zc, zn);
            cp = np;
            cpcap = nc;
        }
        memcpy(cp + cpn, bp, sz);
        cpn += sz;
    }
    if (!copying) {
        *out = zn ? (const void *)zc : (const void *)buf;
        *len = zn;
        return SD_OK;
    }
    *copied += cpn;
    *out = cp;
    *len = cpn;
    *own = 1;
    return SD_OK;
}

static int keep_copy(sd_ckpt *ck, void *p)
{
    void **c = realloc(ck->copies, (ck->ncopies + 1) * sizeof *c);
    if (!c) { free(p); return sd_err(SD_ENOMEM, "out of memory"); }
    ck->copies = c;
    ck->copies[ck->ncopies++] = p;
    return SD_OK;
}

static int read_zip(sd_ckpt *ck, const unsigned char *buf, size_t n, const unsigned char **pkl, size_t *pkl_n)
{
    *pkl = NULL;
    *pkl_n = 0;
    if (n >= 2 && buf[0] == 0x80 && buf[1] <= 5)
        return sd_err(SD_EUNSUPPORTED, "%s: legacy (pre-1.6) torch.save format is not supported; "
                      "re-save it with a newer PyTorch", ck->name);
    if (n < 4 || memcmp(buf, "PK", 2))
        return sd_err(SD_EFORMAT, "%s: not a PyTorch checkpoint (not a zip archive)", ck->name);
    struct archive *a = archive_read_new();
    if (!a) return sd_err(SD_ENOMEM, "out of memory");
    archive_read_support_format_zip_seekable(a);
    char lm[256];
    int rc = SD_OK;
    size_t cap = 0, copied = 0;
    char *prefix = NULL;
    size_t plen = 0;
    if (archive_read_open_memory(a, buf, n) != ARCHIVE_OK) {
        rc = sd_err(SD_EFORMAT, "%s: not a readable zip archive: %s", ck->name,
                    la_msg(a, lm, sizeof lm));
        goto done;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            rc = sd_err(SD_EFORMAT, "%s: bad zip archive: %s", ck->name,
                        la_msg(a, lm, sizeof lm));
            goto done;
        }
        const char *path = archive_entry_pathname(e);
        if (!path || archive_entry_filetype(e) == AE_IFDIR) continue;
        const char *slash = strchr(path, '/');
        if (!slash || slash == path) continue;
        size_t pl = (size_t)(slash - path);
        const char *rest = slash + 1;
        int is_pkl = !strcmp(rest, "data.pkl");
        int is_data = !strncmp(rest, "data/", 5) && rest[5] && !strchr(rest + 5, '/');
        int is_order = !strcmp(rest, "byteorder");
        if (!is_pkl && !is_data && !is_order) continue;
        if (!prefix) {
            prefix = malloc(pl + 1);
            if (!prefix) { rc = sd_err(SD_ENOMEM, "out of memory"); goto done; }
            memcpy(prefix, path, pl);
            prefix[pl] = 0;
            plen = pl;
        } else if (pl != plen || memcmp(prefix, path, pl)) {
            char s1[100], s2[100];
            ck_show(s1, sizeof s1, prefix, plen);
            ck_show(s2, sizeof s2, path, pl);
            rc = sd_err(SD_EFORMAT, "%s: archive has members under both '%s/' and '%s/'", ck->name, s1, s2);
            goto done;
        }
        const void *data = NULL;
        uint64_t len = 0;
        int own = 0;
        if ((rc = read_member(ck, a, buf, n, &copied, &data, &len, &own))) goto done;
        if (own && (rc = keep_copy(ck, (void *)data))) goto done;
        if (is_pkl) {
            if (*pkl) { rc = sd_err(SD_EFORMAT, "%s: archive has two data.pkl members", ck->name); goto done; }
            *pkl = data;
            *pkl_n = (size_t)len;
        } else if (is_order) {
            if (!(len == 6 && !memcmp(data, "little", 6))) {
                rc = sd_err(SD_EUNSUPPORTED, "%s: byteorder is not 'little'", ck->name);
                goto done;
            }
        } else if ((rc = add_storage(ck, rest + 5, strlen(rest + 5), data, len, &cap))) {
            goto done;
        }
    }
    if (!*pkl) { rc = sd_err(SD_EFORMAT, "%s: no data.pkl in the archive (not a torch.save file)", ck->name); goto done; }
    rc = sort_storages(ck);
done:
    free(prefix);
    archive_read_free(a);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Flattening */

/* Python repr() of a float. */
static void py_repr(double x, char *out, size_t size)
{
    if (isnan(x)) { snprintf(out, size, "nan"); return; }
    if (isinf(x)) { snprintf(out, size, x < 0 ? "-inf" : "inf"); return; }
    char e[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, x);
        if (strtod(e, NULL) == x) break;
    }
    /* e = [-]d.ddde[+-]XX */
    const char *s = e;
    int neg = *s == '-';
    if (neg) s++;
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') digits[nd++] = *s;
    int ex = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    size_t k = 0;
    char b[64];
    if (neg) b[k++] = '-';
    if (ex >= -5 + 1 && ex < 16) {
        if (ex < 0) {
            b[k++] = '0'; b[k++] = '.';
            for (int i = 0; i < -ex - 1; i++) b[k++] = '0';
            for (int i = 0; i < nd; i++) b[k++] = digits[i];
        } else {
            for (int i = 0; i <= ex; i++) b[k++] = i < nd ? digits[i] : '0';
            b[k++] = '.';
            if (nd > ex + 1) for (int i = ex + 1; i < nd; i++) b[k++] = digits[i];
            else b[k++] = '0';
        }
        b[k] = 0;
    } else {
        b[k++] = digits[0];
        if (nd > 1) { b[k++] = '.'; for (int i = 1; i < nd; i++) b[k++] = digits[i]; }
        b[k] = 0;
        snprintf(b + k, sizeof b - k, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    snprintf(out, size, "%s", b);
}

typedef struct {
    sd_ckpt *ck;
    ck_parser *p;
    char path[MAX_NAME + 1];
    size_t visits, budget;
} flat;

static int add_meta(sd_ckpt *ck, const char *key, const char *val, size_t vn)
{
    if (ck->nmeta >= MAX_META) return SD_OK;
    if (ck->nmeta == ck->capmeta) {
        size_t nc = ck->capmeta ? ck->capmeta * 2 : 16;
        char **a = realloc(ck->mk, nc * sizeof *a);
        if (!a) return sd_err(SD_ENOMEM, "out of memory");
        ck->mk = a;
        char **b = realloc(ck->mv, nc * sizeof *b);
        if (!b) return sd_err(SD_ENOMEM, "out of memory");
        ck->mv = b;
        ck->capmeta = nc;
    }
    char *k = strdup(key);
    char *v = malloc(vn + 1);
    if (!k || !v) { free(k); free(v); return sd_err(SD_ENOMEM, "out of memory"); }
    memcpy(v, val, vn);
    v[vn] = 0;
    ck->mk[ck->nmeta] = k;
    ck->mv[ck->nmeta] = v;
    ck->nmeta++;
    return SD_OK;
}

static int add_tensor(flat *f, const ck_val *v)
{
    sd_ckpt *ck = f->ck;
    const ck_tensor *tn = v->tn;
    if (ck->nt == ck->capt) {
        size_t nc = ck->capt ? ck->capt * 2 : 64;
        sd_ckpt_tensor *t = realloc(ck->t, nc * sizeof *t);
        if (!t) return sd_err(SD_ENOMEM, "out of memory");
        ck->t = t;
        ck->capt = nc;
    }
    sd_ckpt_tensor *t = &ck->t[ck->nt];
    memset(t, 0, sizeof *t);
    t->name = strdup(f->path);
    if (!t->name) return sd_err(SD_ENOMEM, "out of memory");
    ck->nt++;
    const ck_val *st = tn->storage;
    size_t es = sd_st_dtype_size(st->dtype);
    t->dtype = st->dtype;
    t->ndim = tn->ndim;
    for (int i = 0; i < tn->ndim; i++) { t->shape[i] = tn->shape[i]; t->stride[i] = tn->stride[i]; }
    t->numel = tn->numel;
    t->storage_offset = tn->offset;
    t->nbytes = (uint64_t)tn->numel * es;
    t->storage = st->sto->data;
    t->storage_nbytes = st->sto->nbytes;
    t->storage_key = st->sto->key;
    t->requires_grad = tn->requires_grad;
    int contig = 1;
    int64_t expect = 1;
    for (int i = tn->ndim - 1; i >= 0; i--) {
        if (tn->shape[i] != 1 && tn->stride[i] != expect) contig = 0;
        expect *= tn->shape[i];
    }
    t->contiguous = contig;
    t->data = contig ? (const char *)st->sto->data + (size_t)tn->offset * es : NULL;
    return SD_OK;
}

/* mode: 1 = list tensors and record scalars, 0 = count tensors only (outside the state_dict),
 * 2 = top-level extras of a wrapped file: scalars recorded, tensors counted, nothing deeper. */
static int walk(flat *f, const ck_val *v, size_t plen, int depth, int mode)
{
    if (++f->visits > f->budget)
        return sd_err(SD_EFORMAT, "%s: pickle structure too large (shared references)", f->p->name);
    if (depth > MAX_DEPTH) return sd_err(SD_EFORMAT, "%s: pickle data nested more than %d levels", f->p->name, MAX_DEPTH);
    char num[64];
    switch (v->t) {
    case CK_TENSOR:
        if (mode == 1) return add_tensor(f, v);
        f->ck->skipped++;
        return SD_OK;
    case CK_NONE: case CK_BOOL: case CK_INT: case CK_FLOAT: case CK_STR:
        if (mode == 0 || plen == 0) return SD_OK;
        if (v->t == CK_STR) {
            if (memchr(v->s, 0, v->n)) return SD_OK;
            return add_meta(f->ck, f->path, v->s, v->n);
        }
        if (v->t == CK_NONE) snprintf(num, sizeof num, "None");
        else if (v->t == CK_BOOL) snprintf(num, sizeof num, v->i ? "True" : "False");
        else if (v->t == CK_INT) snprintf(num, sizeof num, "%lld", (long long)v->i);
        else py_repr(v->f, num, sizeof num);
        return add_meta(f->ck, f->path, num, strlen(num));
    case CK_TUPLE: case CK_LIST: case CK_DICT: {
        if (mode == 2) mode = 0;
        int dict = v->t == CK_DICT;
        size_t step = dict ? 2 : 1;
        for (size_t i = 0; i + step <= v->n; i += step) {
            const ck_val *val = v->items[i + step - 1];
            const char *seg;
            size_t sl;
            if (dict) {
                const ck_val *k = v->items[i];
                if (k->t == CK_STR) {
                    if (memchr(k->s, 0, k->n)) return sd_err(SD_EFORMAT, "%s: dict key contains NUL", f->p->name);
                    seg = k->s;
                    sl = k->n;
                } else if (k->t == CK_INT) {
                    snprintf(num, sizeof num, "%lld", (long long)k->i);
                    seg = num;
                    sl = strlen(num);
                } else if (mode == 0) {
                    seg = "?";
                    sl = 1;
                } else {
                    return sd_err(SD_EFORMAT, "%s: dict key is a %s", f->p->name, ck_type_name(k));
                }
            } else {
                snprintf(num, sizeof num, "%zu", i);
                seg = num;
                sl = strlen(num);
            }
            size_t nl = plen + (plen ? 1 : 0) + sl;
            if (nl > MAX_NAME) return sd_err(SD_EFORMAT, "%s: tensor name longer than %d bytes", f->p->name, MAX_NAME);
            size_t q = plen;
            if (plen) f->path[q++] = '.';
            memcpy(f->path + q, seg, sl);
            f->path[nl] = 0;
            int rc = walk(f, val, nl, depth + 1, mode);
            f->path[plen] = 0;
            if (rc) return rc;
        }
        return SD_OK;
    }
    default:
        return SD_OK;   /* bytes, storages, callables: not data we list */
    }
}

typedef struct {
    const char *name;
    size_t i;
} name_ix;

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

static int flatten(sd_ckpt *ck, ck_parser *p, const ck_val *root)
{
    if (root->t != CK_DICT)
        return sd_err(SD_EFORMAT, "%s: the checkpoint holds a %s, not a dict of tensors", ck->name, ck_type_name(root));
    flat *f = calloc(1, sizeof *f);
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    f->ck = ck;
    f->p = p;
    f->budget = p->arena_total / 8 + 1000;
    const ck_val *sd = NULL;
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        const ck_val *k = root->items[i];
        if (k->t == CK_STR && k->n == 10 && !memcmp(k->s, "state_dict", 10) && root->items[i + 1]->t == CK_DICT)
            sd = root->items[i + 1];
    }
    int rc = SD_OK;
    if (!sd) rc = walk(f, root, 0, 0, 1);
    else {
        ck->wrapped = 1;
        rc = walk(f, sd, 0, 1, 1);
        for (size_t i = 0; i + 1 < root->n && !rc; i += 2) {
            if (root->items[i + 1] == sd) continue;
            const ck_val *k = root->items[i];
            char num[32];
            const char *seg = num;
            size_t sl;
            if (k->t == CK_STR && !memchr(k->s, 0, k->n) && k->n <= MAX_NAME) { seg = k->s; sl = k->n; }
            else if (k->t == CK_INT) { snprintf(num, sizeof num, "%lld", (long long)k->i); sl = strlen(num); }
            else { num[0] = '?'; num[1] = 0; sl = 1; }
            memcpy(f->path, seg, sl);
            f->path[sl] = 0;
            rc = walk(f, root->items[i + 1], sl, 1, 2);
        }
    }
    free(f);
    if (rc) return rc;
    ck->by_name = malloc((ck->nt ? ck->nt : 1) * sizeof *ck->by_name);
    name_ix *ix = malloc((ck->nt ? ck->nt : 1) * sizeof *ix);
    if (!ck->by_name || !ix) { free(ix); return sd_err(SD_ENOMEM, "out of memory"); }
    for (size_t i = 0; i < ck->nt; i++) { ix[i].name = ck->t[i].name; ix[i].i = i; }
    if (ck->nt) qsort(ix, ck->nt, sizeof *ix, name_cmp);
    for (size_t i = 0; i < ck->nt; i++) ck->by_name[i] = ix[i].i;
    free(ix);
    for (size_t i = 1; i < ck->nt; i++)
        if (!strcmp(ck->t[ck->by_name[i - 1]].name, ck->t[ck->by_name[i]].name)) {
            char show[100];
            const char *nm = ck->t[ck->by_name[i]].name;
            ck_show(show, sizeof show, nm, strlen(nm));
            return sd_err(SD_EFORMAT, "%s: tensor name '%s' appears twice", ck->name, show);
        }
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Opening */

static int parse(sd_ckpt *ck, const unsigned char *pkl, size_t n)
{
    ck_parser p = {0};
    p.name = ck->name;
    p.storages = ck->sto;
    p.nstorages = ck->nsto;
    p.arena_limit = (64u << 20) + (n < (SIZE_MAX >> 8) ? 128 * n : SIZE_MAX >> 1);
    ck_val *root = NULL;
    int rc = ck_unpickle(&p, pkl, n, &root);
    if (!rc) rc = flatten(ck, &p, root);
    ck_arena_free(&p);
    return rc;
}

static sd_ckpt *new_ck(const char *name)
{
    sd_ckpt *ck = calloc(1, sizeof *ck);
    if (!ck) return NULL;
    ck->name = strdup(name ? name : "<memory>");
    if (!ck->name) { free(ck); return NULL; }
    return ck;
}

int sd_ckpt_open_mem(const void *buf, size_t n, const char *name, sd_ckpt **out)
{
    *out = NULL;
    sd_ckpt *ck = new_ck(name);
    if (!ck) return sd_err(SD_ENOMEM, "out of memory");
    const unsigned char *pkl;
    size_t pn;
    int rc = read_zip(ck, buf, n, &pkl, &pn);
    if (!rc) rc = parse(ck, pkl, pn);
    if (rc) { sd_ckpt_close(ck); return rc; }
    *out = ck;
    return SD_OK;
}

int sd_ckpt_open(const char *path, sd_ckpt **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "cannot open %s: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sd_err(SD_EIO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) { close(fd); return sd_err(SD_EFORMAT, "%s: empty file", path); }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return sd_err(SD_EIO, "cannot map %s: %s", path, strerror(e));
    sd_ckpt *ck = new_ck(path);
    if (!ck) { munmap(map, (size_t)sb.st_size); return sd_err(SD_ENOMEM, "out of memory"); }
    ck->map = map;
    ck->map_len = (size_t)sb.st_size;
    const unsigned char *pkl;
    size_t pn;
    int rc = read_zip(ck, map, ck->map_len, &pkl, &pn);
    if (!rc) rc = parse(ck, pkl, pn);
    if (rc) { sd_ckpt_close(ck); return rc; }
    *out = ck;
    return SD_OK;
}

int sd_ckpt_open_pickle(const void *pkl, size_t n, const sd_ckpt_storage *storages, size_t nstorages,
                        const char *name, sd_ckpt **out)
{
    *out = NULL;
    sd_ckpt *ck = new_ck(name);
    if (!ck) return sd_err(SD_ENOMEM, "out of memory");
    size_t cap = 0;
    int rc = SD_OK;
    for (size_t i = 0; i < nstorages && !rc; i++)
        rc = add_storage(ck, storages[i].key, strlen(storages[i].key), storages[i].data, storages[i].nbytes, &cap);
    if (!rc) rc = sort_storages(ck);
    if (!rc) rc = parse(ck, pkl, n);
    if (rc) { sd_ckpt_close(ck); return rc; }
    *out = ck;
    return SD_OK;
}

void sd_ckpt_close(sd_ckpt *ck)
{
    if (!ck) return;
    for (size_t i = 0; i < ck->nt; i++) free((char *)ck->t[i].name);
    free(ck->t);
    free(ck->by_name);
    for (size_t i = 0; i < ck->nmeta; i++) { free(ck->mk[i]); free(ck->mv[i]); }
    free(ck->mk);
    free(ck->mv);
    for (size_t i = 0; i < ck->nsto; i++) free((char *)ck->sto[i].key);
    free(ck->sto);
    for (size_t i = 0; i < ck->ncopies; i++) free(ck->copies[i]);
    free(ck->copies);
    if (ck->map) munmap(ck->map, ck->map_len);
    free(ck->name);
    free(ck);
}

/* ---------------------------------------------------------------------------------------------
 * Queries */

const char *sd_ckpt_name(const sd_ckpt *ck) { return ck->name; }
size_t sd_ckpt_count(const sd_ckpt *ck) { return ck->nt; }
const sd_ckpt_tensor *sd_ckpt_at(const sd_ckpt *ck, size_t i) { return i < ck->nt ? &ck->t[i] : NULL; }
size_t sd_ckpt_skipped(const sd_ckpt *ck) { return ck->skipped; }
int sd_ckpt_wrapped(const sd_ckpt *ck) { return ck->wrapped; }
size_t sd_ckpt_meta_count(const sd_ckpt *ck) { return ck->nmeta; }

void sd_ckpt_meta_at(const sd_ckpt *ck, size_t i, const char **key, const char **value)
{
    *key = i < ck->nmeta ? ck->mk[i] : NULL;
    *value = i < ck->nmeta ? ck->mv[i] : NULL;
}

const char *sd_ckpt_meta_get(const sd_ckpt *ck, const char *key)
{
    for (size_t i = 0; i < ck->nmeta; i++)
        if (!strcmp(ck->mk[i], key)) return ck->mv[i];
    return NULL;
}

const sd_ckpt_tensor *sd_ckpt_find(const sd_ckpt *ck, const char *name)
{
    size_t lo = 0, hi = ck->nt;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, ck->t[ck->by_name[mid]].name);
        if (c < 0) hi = mid;
        else if (c > 0) lo = mid + 1;
        else return &ck->t[ck->by_name[mid]];
    }
    return NULL;
}

int sd_ckpt_get(const sd_ckpt *ck, const char *name, const sd_ckpt_tensor **t)
{
    *t = sd_ckpt_find(ck, name);
    if (!*t) return sd_err(SD_ENOTFOUND, "%s: no tensor '%s'", ck->name, name);
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Reading */

int sd_ckpt_read(const sd_ckpt *ck, const sd_ckpt_tensor *t, sd_st_dtype dst_t, void *dst, size_t n)
{
    if ((int64_t)n != t->numel)
        return sd_err(SD_EINVAL, "%s: tensor '%s' has %lld elements, buffer holds %zu", ck->name, t->name,
                      (long long)t->numel, n);
    if (!n) return SD_OK;
    if (t->contiguous) return sd_st_convert(t->dtype, t->data, dst_t, dst, n);
    size_t es = sd_st_dtype_size(t->dtype), ds = sd_st_dtype_size(dst_t);
    if (!ds) return sd_err(SD_EINVAL, "bad destination dtype");
    int nd = t->ndim;
    int64_t inner = t->shape[nd - 1], istride = t->stride[nd - 1];
    unsigned char *tmp = NULL;
    if (istride != 1) {
        tmp = malloc((size_t)inner * es);
        if (!tmp) return sd_err(SD_ENOMEM, "out of memory");
    }
    int64_t idx[SD_CKPT_MAX_DIMS] = {0};
    const unsigned char *base = t->storage;
    unsigned char *o = dst;
    int rc = SD_OK;
    for (int64_t done = 0; done < t->numel && !rc; done += inner) {
        int64_t off = t->storage_offset;
        for (int i = 0; i < nd - 1; i++) off += idx[i] * t->stride[i];
        const unsigned char *src = base + (size_t)off * es;
        if (tmp) {
            for (int64_t j = 0; j < inner; j++) memcpy(tmp + (size_t)j * es, base + (size_t)(off + j * istride) * es, es);
            src = tmp;
        }
        rc = sd_st_convert(t->dtype, src, dst_t, o, (size_t)inner);
        o += (size_t)inner * ds;
        for (int i = nd - 2; i >= 0; i--) {
            if (++idx[i] < t->shape[i]) break;
            idx[i] = 0;
        }
    }
    free(tmp);
    return rc;
}

int sd_ckpt_read_f32(const sd_ckpt *ck, const char *name, float *dst, size_t n)
{
    const sd_ckpt_tensor *t;
    int rc = sd_ckpt_get(ck, name, &t);
    if (rc) return rc;
    return sd_ckpt_read(ck, t, SD_ST_F32, dst, n);
}

/* ---------------------------------------------------------------------------------------------
 * Conversion */

typedef struct {
    const sd_ckpt *ck;
    const sd_ckpt_tensor *t;
    sd_st_dtype out;
} conv_ctx;

static int conv_write(void *ctx, const char *name, sd_st_sink *sink)
{
    (void)name;
    conv_ctx *c = ctx;
    size_t n = (size_t)c->t->numel, sz = n * sd_st_dtype_size(c->out);
    void *buf = malloc(sz ? sz : 1);
    if (!buf) return sd_err(SD_ENOMEM, "out of memory");
    int rc = sd_ckpt_read(c->ck, c->t, c->out, buf, n);
    if (!rc) rc = sd_st_sink_write(sink, buf, sz);
    free(buf);
    return rc;
}

int sd_ckpt_to_safetensors(const sd_ckpt *ck, const char *path, sd_st_dtype dtype, int flags)
{
    if (dtype != SD_ST_NDTYPES && dtype != SD_ST_F32 && dtype != SD_ST_F16 && dtype != SD_ST_BF16)
        return sd_err(SD_EINVAL, "conversion dtype must be F32, F16 or BF16");
    sd_safetensors_writer *w;
    int rc = sd_safetensors_writer_new(&w);
    if (rc) return rc;
    conv_ctx *ctx = calloc(ck->nt ? ck->nt : 1, sizeof *ctx);
    if (!ctx) { sd_safetensors_writer_free(w); return sd_err(SD_ENOMEM, "out of memory"); }
    for (size_t i = 0; i < ck->nt && !rc; i++) {
        const sd_ckpt_tensor *t = &ck->t[i];
        sd_st_dtype out = (dtype != SD_ST_NDTYPES && sd_st_dtype_is_float(t->dtype)) ? dtype : t->dtype;
        if (t->contiguous && out == t->dtype) {
            rc = sd_safetensors_writer_add(w, t->name, out, t->ndim, t->shape, t->numel ? t->data : NULL);
        } else {
            ctx[i].ck = ck;
            ctx[i].t = t;
            ctx[i].out = out;
            rc = sd_safetensors_writer_add_fn(w, t->name, out, t->ndim, t->shape, conv_write, &ctx[i]);
        }
    }
    if (!rc && (flags & SD_CKPT_META))
        for (size_t i = 0; i < ck->nmeta && !rc; i++) rc = sd_safetensors_writer_set_meta(w, ck->mk[i], ck->mv[i]);
    if (!rc) rc = sd_safetensors_writer_write(w, path);
    sd_safetensors_writer_free(w);
    free(ctx);
    return rc;
}
