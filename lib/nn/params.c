/* Parameter registry (see params.h). */
#include "nn/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "tensor/device.h"
#include "tensor/ops.h"

#define ALIGN64(n) (((n) + 63) & ~(size_t)63)

static uint64_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

void sd_params_init(sd_params *r)
{
    memset(r, 0, sizeof *r);
    r->frozen_dtype = SD_F32;
}

static void free_mem(uint8_t device, void *p)
{
    if (!p) return;
    if (device == SD_DEV_CUDA) sd_device_free(p);
    else free(p);
}

void sd_params_free(sd_params *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        if (r->items[i]->pool) free_mem(r->items[i]->grad.device, r->items[i]->grad.data);   /* lazy gradients still held
                                                                                              (an error stopped) */
        free(r->items[i]->key);
        free(r->items[i]);
    }
    free(r->items);
    free(r->hash);
    free_mem(r->device, r->value_mem);
    free_mem(r->device, r->grad_mem);
    sd_params_init(r);
}

static int hash_insert(sd_params *r, size_t idx)
{
    if ((r->n + 1) * 2 > r->hcap) {
        size_t nc = r->hcap ? r->hcap * 2 : 64;
        size_t *nh = calloc(nc, sizeof *nh);
        if (!nh) return sd_err(SD_ENOMEM, "parameter registry: out of memory");
        for (size_t i = 0; i < r->n; i++) {
            size_t h = key_hash(r->items[i]->key) & (nc - 1);
            while (nh[h]) h = (h + 1) & (nc - 1);
            nh[h] = i + 1;
        }
        free(r->hash);
        r->hash = nh;
        r->hcap = nc;
    }
    size_t h = key_hash(r->items[idx]->key) & (r->hcap - 1);
    while (r->hash[h]) h = (h + 1) & (r->hcap - 1);
    r->hash[h] = idx + 1;
    return SD_OK;
}

sd_param *sd_params_find(const sd_params *r, const char *key)
{
    if (!r->hcap) return NULL;
    size_t h = key_hash(key) & (r->hcap - 1);
    while (r->hash[h]) {
        sd_param *p = r->items[r->hash[h] - 1];
        if (!strcmp(p->key, key)) return p;
        h = (h + 1) & (r->hcap - 1);
    }
    return NULL;
}

int sd_params_add(sd_params *r, const char *prefix, const char *name, int ndim,
                  const int64_t *shape, unsigned flags, sd_param **out)
{
    if (out) *out = NULL;
    if (r->allocated) return sd_err(SD_ESTATE, "parameter registry: '%s' registered after allocation", name);
    size_t lp = prefix ? strlen(prefix) : 0, ln = strlen(name);
    char *key = malloc(lp + ln + 2);
    if (!key) return sd_err(SD_ENOMEM, "parameter registry: out of memory");
    if (lp) {
        memcpy(key, prefix, lp);
        key[lp] = '.';
        memcpy(key + lp + 1, name, ln + 1);
    } else {
        memcpy(key, name, ln + 1);
    }
    sd_tensor t = sd_tensor_wrap(NULL, SD_F32, ndim, shape);
    if (!sd_tensor_valid(&t)) {
        int rc = sd_err(SD_EINVAL, "parameter '%s': bad shape", key);
        free(key);
        return rc;
    }
    if (sd_params_find(r, key)) {
        int rc = sd_err(SD_EINVAL, "parameter '%s' registered twice", key);
        free(key);
        return rc;
    }
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 64;
        sd_param **ni = realloc(r->items, nc * sizeof *ni);
        if (!ni) { free(key); return sd_err(SD_ENOMEM, "parameter registry: out of memory"); }
        r->items = ni;
        r->cap = nc;
    }
    sd_param *p = calloc(1, sizeof *p);
    if (!p) { free(key); return sd_err(SD_ENOMEM, "parameter registry: out of memory"); }
    p->key = key;
    p->value = t;
    p->grad = t;
    p->flags = flags;
    p->index = r->n;
    r->items[r->n] = p;
    int rc = hash_insert(r, r->n);
    if (rc) { free(key); free(p); return rc; }
    r->n++;
    if (out) *out = p;
    return SD_OK;
}

size_t sd_params_count(const sd_params *r) { return r->n; }
sd_param *sd_params_at(const sd_params *r, size_t i) { return i < r->n ? r->items[i] : NULL; }

int sd_params_set_trainable(sd_params *r, const char *prefix, int trainable)
{
    if (r->allocated) return sd_err(SD_ESTATE, "parameter registry: trainable set changed after allocation");
    size_t lp = prefix ? strlen(prefix) : 0;
    int changed = 0;
    for (size_t i = 0; i < r->n; i++) {
        sd_param *p = r->items[i];
        if (lp && strncmp(p->key, prefix, lp)) continue;
        unsigned f = trainable ? (p->flags | SD_PARAM_TRAINABLE) : (p->flags & ~(unsigned)SD_PARAM_TRAINABLE);
        if (f != p->flags) changed++;
        p->flags = f;
    }
    return changed;
}

int sd_params_set_frozen_dtype(sd_params *r, sd_dtype dt)
{
    if (r->allocated) return sd_err(SD_ESTATE, "parameter registry: dtype changed after allocation");
    if (dt != SD_F32 && dt != SD_F16 && dt != SD_BF16 && dt != SD_F8E4M3)
        return sd_err(SD_EINVAL, "parameter registry: storage dtype must be f32, f16, bf16 or f8_e4m3fn");
    r->frozen_dtype = dt;
    return SD_OK;
}

static sd_dtype storage_dtype(const sd_params *r, const sd_param *p)
{
    if (p->flags & SD_PARAM_TRAINABLE) return SD_F32;
    return (p->flags & SD_PARAM_HALF_OK) ? r->frozen_dtype : SD_F32;
}

int sd_params_alloc(sd_params *r, sd_devkind device)
{
    if (r->allocated) return sd_err(SD_ESTATE, "parameter registry: already allocated");
    size_t vb = 0, gb = 0;
    for (size_t i = 0; i < r->n; i++) {
        sd_param *p = r->items[i];
        p->value.dtype = (uint8_t)storage_dtype(r, p);
        vb += ALIGN64(sd_tensor_nbytes(&p->value));
        if ((p->flags & SD_PARAM_TRAINABLE) && !r->pool) gb += ALIGN64(sd_tensor_nbytes(&p->grad));
    }
    void *vm = NULL, *gm = NULL;
    size_t vsz = vb ? vb : 64, gsz = gb ? gb : 64;
    if (device == SD_DEV_CUDA) {
        int rc = sd_device_alloc(&vm, vsz);
        if (!rc) rc = sd_device_memset(vm, 0, vsz);
        if (!rc && gb) {
            rc = sd_device_alloc(&gm, gsz);
            if (!rc) rc = sd_device_memset(gm, 0, gsz);
        }
        if (rc) {
            sd_device_free(vm);
            sd_device_free(gm);
            return sd_err_prefix(rc, "parameters (%zu + %zu bytes)", vb, gb);
        }
    } else {
        vm = aligned_alloc(64, vsz);
        gm = gb ? aligned_alloc(64, gsz) : NULL;
        if (!vm || (gb && !gm)) {
            free(vm);
            free(gm);
            return sd_err(SD_ENOMEM, "parameters: out of memory (%zu + %zu bytes)", vb, gb);
        }
        memset(vm, 0, vsz);
        if (gm) memset(gm, 0, gsz);
    }
    size_t vo = 0, go = 0;
    for (size_t i = 0; i < r->n; i++) {
        sd_param *p = r->items[i];
        p->value.data = (uint8_t *)vm + vo;
        p->value.device = (uint8_t)device;
        vo += ALIGN64(sd_tensor_nbytes(&p->value));
        p->grad.dtype = SD_F32;
        p->grad.device = (uint8_t)device;
        p->grad.data = NULL;
        p->pool = (p->flags & SD_PARAM_TRAINABLE) ? r->pool : NULL;
        if ((p->flags & SD_PARAM_TRAINABLE) && !r->pool) {
            p->grad.data = (uint8_t *)gm + go;
            go += ALIGN64(sd_tensor_nbytes(&p->grad));
        } else {
            p->grad.data = NULL;
        }
    }
    r->value_mem = vm;
    r->grad_mem = gm;
    r->value_bytes = vb;
    r->grad_bytes = gb;
    r->device = (uint8_t)device;
    r->allocated = 1;
    return SD_OK;
}

int sd_params_convert_frozen(sd_params *r, sd_dtype dt)
{
    if (!r->allocated || r->device != SD_DEV_CPU || r->frozen_dtype != SD_F32)
        return sd_err(SD_ESTATE, "parameter registry: convert needs f32 values on the host");
    if (dt == SD_F32) return SD_OK;
    if (dt != SD_F16 && dt != SD_BF16 && dt != SD_F8E4M3)
        return sd_err(SD_EINVAL, "parameter registry: storage dtype must be f16, bf16 or f8_e4m3fn");
    r->frozen_dtype = dt;
    size_t vb = 0;
    for (size_t i = 0; i < r->n; i++) {
        sd_tensor v = r->items[i]->value;
        v.dtype = (uint8_t)storage_dtype(r, r->items[i]);
        vb += ALIGN64(sd_tensor_nbytes(&v));
    }
    uint8_t *vm = aligned_alloc(64, vb ? vb : 64);
    if (!vm) {
        r->frozen_dtype = SD_F32;
        return sd_err(SD_ENOMEM, "parameters: out of memory (%zu bytes)", vb);
    }
    size_t vo = 0;
    for (size_t i = 0; i < r->n; i++) {
        sd_param *p = r->items[i];
        sd_dtype to = storage_dtype(r, p);
        size_t n = (size_t)sd_tensor_numel(&p->value);
        if (to == SD_F16) sd_f32_to_f16_n(p->value.data, (uint16_t *)(vm + vo), n);
        else if (to == SD_BF16) sd_f32_to_bf16_n(p->value.data, (uint16_t *)(vm + vo), n);
        else if (to == SD_F8E4M3) sd_f32_to_f8e4m3_n(p->value.data, vm + vo, n);
        else memcpy(vm + vo, p->value.data, n * sizeof(float));
        p->value.data = vm + vo;
        p->value.dtype = (uint8_t)to;
        vo += ALIGN64(sd_tensor_nbytes(&p->value));
    }
    free(r->value_mem);
    r->value_mem = vm;
    r->value_bytes = vb;
    return SD_OK;
}

/* A copy of `bytes` at src (on `from`) in fresh memory on `to`; *dst NULL for 0 bytes. */
static int move_block(void **dst, const void *src, size_t bytes, sd_devkind from, sd_devkind to)
{
    *dst = NULL;
    if (!src) return SD_OK;
    size_t sz = bytes ? bytes : 64;
    if (to == SD_DEV_CUDA) {
        int rc = sd_device_alloc(dst, sz);
        if (!rc) rc = sd_device_copy_to_device(*dst, src, sz);
        if (rc) { sd_device_free(*dst); *dst = NULL; }
        return rc;
    }
    *dst = aligned_alloc(64, sz);
    if (!*dst) return sd_err(SD_ENOMEM, "parameters: out of memory (%zu bytes)", sz);
    int rc = from == SD_DEV_CUDA ? sd_device_copy_to_host(*dst, src, sz) : (memcpy(*dst, src, sz), SD_OK);
    if (rc) { free(*dst); *dst = NULL; }
    return rc;
}

int sd_params_move(sd_params *r, sd_devkind device)
{
    if (!r->allocated) return sd_err(SD_ESTATE, "parameter registry: move before allocation");
    if (r->device == device) return SD_OK;
    for (size_t i = 0; r->pool && i < r->n; i++)
        if (r->items[i]->pool && r->items[i]->grad.data)
            return sd_err(SD_ESTATE, "parameter registry: moved while lazy gradients are held (%s)", r->items[i]->key);
    void *vm = NULL, *gm = NULL;
    sd_devkind from = (sd_devkind)r->device;
    int rc = move_block(&vm, r->value_mem, r->value_bytes, from, device);
    if (!rc) rc = move_block(&gm, r->grad_mem, r->grad_bytes, from, device);
    if (rc) {
        free_mem(device, vm);
        return sd_err_prefix(rc, "moving parameters (%zu + %zu bytes)", r->value_bytes, r->grad_bytes);
    }
    for (size_t i = 0; i < r->n; i++) {
        sd_param *p = r->items[i];
        p->value.data = (uint8_t *)vm + ((uint8_t *)p->value.data - (uint8_t *)r->value_mem);
        p->value.device = (uint8_t)device;
        if (p->grad.data) p->grad.data = (uint8_t *)gm + ((uint8_t *)p->grad.data - (uint8_t *)r->grad_mem);
        p->grad.device = (uint8_t)device;
    }
    free_mem(from, r->value_mem);
    free_mem(from, r->grad_mem);
    r->value_mem = vm;
    r->grad_mem = gm;
    r->device = (uint8_t)device;
    return SD_OK;
}

int sd_params_zero_grad(sd_ctx *ctx, sd_params *r)
{
    if (!r->allocated) return sd_err(SD_ESTATE, "parameter registry: zero_grad before allocation");
    if (!r->grad_mem) return SD_OK;
    int64_t n = (int64_t)(r->grad_bytes / sizeof(float));
    sd_tensor g = sd_tensor_wrap(r->grad_mem, SD_F32, 1, &n);
    g.device = r->device;
    return sd_op_fill(ctx, &g, 0.0f);
}

void sd_params_get_totals(const sd_params *r, sd_params_totals *t)
{
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < r->n; i++) {
        const sd_param *p = r->items[i];
        sd_tensor v = p->value;
        v.dtype = (uint8_t)storage_dtype(r, p);
        int64_t ne = sd_tensor_numel(&v);
        t->count++;
        t->numel += ne;
        t->value_bytes += ALIGN64(sd_tensor_nbytes(&v));
        if (p->flags & SD_PARAM_TRAINABLE) {
            t->trainable_count++;
            t->trainable_numel += ne;
            t->grad_bytes += ALIGN64((size_t)ne * sizeof(float));
        }
    }
}

/* ---- loading -------------------------------------------------------------------------------- */

int sd_params_load(sd_params *r, sd_params_load_fn fn, void *user, size_t *missing)
{
    if (missing) *missing = 0;
    if (!r->allocated) return sd_err(SD_ESTATE, "parameter registry: load before allocation");
    for (size_t i = 0; i < r->n; i++) {
        int rc = fn(user, r->items[i]);
        if (rc == SD_ENOTFOUND) {
            if (missing) (*missing)++;
            continue;
        }
        if (rc) return rc;
    }
    return SD_OK;
}

void sd_load_report_free(sd_load_report *rep)
{
    if (!rep) return;
    for (size_t i = 0; i < rep->missing; i++) free(rep->missing_keys[i]);
    for (size_t i = 0; i < rep->unexpected; i++) free(rep->unexpected_keys[i]);
    free(rep->missing_keys);
    free(rep->unexpected_keys);
    memset(rep, 0, sizeof *rep);
}

static int push_key(char ***list, size_t *n, const char *key)
{
    char **nl = realloc(*list, (*n + 1) * sizeof *nl);
    if (!nl) return sd_err(SD_ENOMEM, "load report: out of memory");
    *list = nl;
    nl[*n] = strdup(key);
    if (!nl[*n]) return sd_err(SD_ENOMEM, "load report: out of memory");
    (*n)++;
    return SD_OK;
}

/* File key for our key; NULL when no map entry matches and SD_LOAD_MAPPED_ONLY is set. */
static const char *map_key(const char *key, const sd_key_map *map, size_t nmap, unsigned flags,
                           char *buf, size_t bufsize)
{
    for (size_t m = 0; m < nmap; m++) {
        size_t lo = strlen(map[m].ours);
        if (strncmp(key, map[m].ours, lo)) continue;
        int n = snprintf(buf, bufsize, "%s%s", map[m].file, key + lo);
        return n >= 0 && (size_t)n < bufsize ? buf : NULL;
    }
    return (flags & SD_LOAD_MAPPED_ONLY) ? NULL : key;
}

static int shape_ok(const sd_tensor *v, const sd_st_tensor *t, unsigned flags)
{
    if (t->ndim == v->ndim) {
        for (int d = 0; d < v->ndim; d++)
            if (v->shape[d] != t->shape[d]) return 0;
        return 1;
    }
    if (!(flags & SD_LOAD_SQUEEZE_1X1)) return 0;
    /* [o,i] vs [o,i,1,1] in either direction */
    const int64_t *a = v->ndim == 2 ? v->shape : t->shape, *b = v->ndim == 2 ? t->shape : v->shape;
    int na = v->ndim == 2 ? v->ndim : t->ndim, nb = v->ndim == 2 ? t->ndim : v->ndim;
    return na == 2 && nb == 4 && a[0] == b[0] && a[1] == b[1] && b[2] == 1 && b[3] == 1;
}

static void append_list(char *msg, size_t size, const char *what, char **keys, size_t n)
{
    size_t len = strlen(msg);
    snprintf(msg + len, size - len, "%s%zu %s key%s: ", len ? "; " : "", n, what, n == 1 ? "" : "s");
    for (size_t i = 0; i < n && i < 5; i++) {
        len = strlen(msg);
        snprintf(msg + len, size - len, "%s%s", i ? ", " : "", keys[i]);
    }
    if (n > 5) {
        len = strlen(msg);
        snprintf(msg + len, size - len, ", ... (%zu more)", n - 5);
    }
}

int sd_params_load_safetensors(sd_params *r, const sd_safetensors *st, const sd_key_map *map,
                               size_t nmap, unsigned flags, sd_load_report *rep)
{
    sd_load_report local;
    sd_load_report *R = rep ? rep : &local;
    memset(R, 0, sizeof *R);
    const char *path = sd_safetensors_path(st);
    if (!r->allocated) return sd_err(SD_ESTATE, "%s: parameters not allocated before loading", path);
    size_t nt = sd_safetensors_count(st);
    unsigned char *claimed = calloc(nt ? nt : 1, 1);
    if (!claimed) return sd_err(SD_ENOMEM, "%s: out of memory", path);
    int rc = SD_OK;
    char fk[1024];
    void *host = NULL;
    size_t host_cap = 0;
    for (size_t i = 0; i < r->n && !rc; i++) {
        sd_param *p = r->items[i];
        const char *k = map_key(p->key, map, nmap, flags, fk, sizeof fk);
        if (!k) continue;
        const sd_st_tensor *t = sd_safetensors_find(st, k);
        if (!t) {
            rc = push_key(&R->missing_keys, &R->missing, p->key);
            continue;
        }
        claimed[t - sd_safetensors_at(st, 0)] = 1;
        if (!shape_ok(&p->value, t, flags)) {
            char want[128], got[128];
            sd_st_shape_str(p->value.ndim, p->value.shape, want, sizeof want);
            sd_st_shape_str(t->ndim, t->shape, got, sizeof got);
            rc = sd_err(SD_EFORMAT, "%s: tensor '%s': expected shape %s, got %s", path, k, want, got);
            break;
        }
        if (!sd_st_dtype_is_float(t->dtype)) {
            rc = sd_err(SD_EFORMAT, "%s: tensor '%s': dtype %s is not a floating type", path, k,
                        sd_st_dtype_name(t->dtype));
            break;
        }
        sd_st_dtype dt = p->value.dtype == SD_F16 ? SD_ST_F16 : p->value.dtype == SD_BF16 ? SD_ST_BF16
                         : p->value.dtype == SD_F8E4M3 ? SD_ST_F8_E4M3 : SD_ST_F32;
        size_t nb = sd_tensor_nbytes(&p->value);
        void *dst = p->value.data;
        if (p->value.device != SD_DEV_CPU) {
            if (nb > host_cap) {
                free(host);
                host = malloc(nb);
                host_cap = host ? nb : 0;
                if (!host) { rc = sd_err(SD_ENOMEM, "%s: out of memory", path); break; }
            }
            dst = host;
        }
        rc = sd_safetensors_read(st, t, dt, dst, (size_t)sd_tensor_numel(&p->value));
        if (!rc && dst == host) rc = sd_tensor_upload(&p->value, host, nb);
        if (!rc) R->loaded++;
    }
    /* Unexpected: file tensors under a mapped prefix (or any, without a map) nobody claimed. */
    for (size_t i = 0; i < nt && !rc; i++) {
        if (claimed[i]) continue;
        const char *name = sd_safetensors_at(st, i)->name;
        int under = nmap == 0;
        for (size_t m = 0; m < nmap && !under; m++)
            under = !strncmp(name, map[m].file, strlen(map[m].file));
        if (under) rc = push_key(&R->unexpected_keys, &R->unexpected, name);
    }
    free(host);
    free(claimed);
    if (!rc) {
        size_t bad_m = (flags & SD_LOAD_ALLOW_MISSING) ? 0 : R->missing;
        size_t bad_u = (flags & SD_LOAD_ALLOW_UNEXPECTED) ? 0 : R->unexpected;
        if (bad_m || bad_u) {
            char msg[2048] = "";
            if (bad_m) append_list(msg, sizeof msg, "missing", R->missing_keys, R->missing);
            if (bad_u) append_list(msg, sizeof msg, "unexpected", R->unexpected_keys, R->unexpected);
            rc = sd_err(SD_EFORMAT, "%s: %s", path, msg);
        }
    }
    if (!rep) sd_load_report_free(&local);
    return rc;
}

/* ---- lazy gradients ------------------------------------------------------------------------------ */

void sd_grad_pool_init(sd_grad_pool *g, sd_grad_done_fn done, void *user)
{
    memset(g, 0, sizeof *g);
    g->done = done;
    g->user = user;
    g->pass = g->step = 1;
}

void sd_grad_pool_free(sd_grad_pool *g)
{
    free(g->pend);
    g->pend = NULL;
    g->npend = g->cap = 0;
}

int sd_params_set_grad_pool(sd_params *r, sd_grad_pool *g)
{
    if (r->allocated) return sd_err(SD_ESTATE, "parameter registry: grad pool after allocation");
    r->pool = g;
    return SD_OK;
}

void sd_grad_pool_begin_step(sd_grad_pool *g)
{
    g->step++;
    g->rc = SD_OK;
}

void sd_grad_pool_begin_pass(sd_grad_pool *g, int hold)
{
    g->pass++;
    g->npend = 0;
    g->mod = NULL;
    g->modlen = 0;
    g->hold = hold;
}

static size_t module_len(const char *key)
{
    const char *d = strrchr(key, '.');
    return d ? (size_t)(d - key) : 0;
}

/* The pending gradients are complete: hand them to the owner. */
static int pool_flush(sd_grad_pool *g)
{
    size_t n = g->npend;
    g->npend = 0;
    if (g->hold) return SD_OK;
    for (size_t i = 0; i < n && !g->rc; i++) {
        int rc = g->done(g->user, g->pend[i]);
        if (rc && !g->rc) g->rc = rc;
    }
    return g->rc;
}

int sd_grad_pool_end_pass(sd_grad_pool *g)
{
    int rc = pool_flush(g);
    g->mod = NULL;
    return rc ? rc : g->rc;
}

void sd_grad_pool_release(sd_grad_pool *g, sd_param *p)
{
    if (!p->grad.data) return;
    free_mem(p->grad.device, p->grad.data);
    p->grad.data = NULL;
    g->bytes -= sd_tensor_nbytes(&p->grad);
    p->pool_done = g->step;
}

sd_tensor *sd_param_grad(sd_param *p)
{
    if (!p) return NULL;
    if (!p->pool) return p->grad.data ? &p->grad : NULL;
    sd_grad_pool *g = p->pool;
    if (g->rc) return NULL;
    if (p->pool_pass != g->pass) {
        /* first use in this pass: a module change completes the pending ones */
        size_t ml = module_len(p->key);
        if (g->mod && (ml != g->modlen || strncmp(p->key, g->mod, ml)) && pool_flush(g)) return NULL;
        if (!g->mod || ml != g->modlen || strncmp(p->key, g->mod, ml)) {
            g->mod = p->key;
            g->modlen = ml;
        }
        if (p->pool_done == g->step) {
            g->rc = sd_err(SD_ESTATE, "%s: gradient asked for after its optimizer step (a module used twice in one "
                           "backward: not supported with fused optimizer steps)", p->key);
            return NULL;
        }
        if (g->npend == g->cap) {
            size_t nc = g->cap ? 2 * g->cap : 64;
            sd_param **np = realloc(g->pend, nc * sizeof *np);
            if (!np) {
                g->rc = sd_err(SD_ENOMEM, "gradients: out of memory");
                return NULL;
            }
            g->pend = np;
            g->cap = nc;
        }
        g->pend[g->npend++] = p;
        p->pool_pass = g->pass;
    } else if (g->mod && (module_len(p->key) != g->modlen || strncmp(p->key, g->mod, g->modlen))) {
        /* back in a module this pass already left */
        g->rc = sd_err(SD_ESTATE, "%s: gradient written again after the backward left its module (not supported "
                       "with fused optimizer steps)", p->key);
        return NULL;
    }
    if (!p->grad.data) {
        /* zeroed, where the value lives */
        size_t nb = sd_tensor_nbytes(&p->grad);
        if (p->value.device == SD_DEV_CUDA) {
            void *d = NULL;
            int rc = sd_device_alloc(&d, nb ? nb : 64);
            if (!rc) rc = sd_device_memset(d, 0, nb ? nb : 64);
            if (rc) {
                sd_device_free(d);
                g->rc = sd_err_prefix(rc, "%s: its gradient (%zu bytes)", p->key, nb);
                return NULL;
            }
            p->grad.data = d;
        } else if (!(p->grad.data = calloc(1, nb ? nb : 1))) {
            g->rc = sd_err(SD_ENOMEM, "%s: out of memory for its gradient (%zu bytes)", p->key, nb);
            return NULL;
        }
        p->grad.device = p->value.device;
        g->bytes += nb;
        if (g->bytes > g->peak) g->peak = g->bytes;
    }
    return &p->grad;
}
