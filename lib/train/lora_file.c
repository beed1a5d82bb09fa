/* kohya-format LoRA files (see lora_file.h). */
#include "train/lora_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/hash.h"

int sd_lora_kohya_name(const char *prefix, const char *path, char *out, size_t n)
{
    int k = snprintf(out, n, "%s.%s", prefix, path);
    if (k < 0 || (size_t)k >= n) return sd_err(SD_ERANGE, "LoRA name too long: %s.%s", prefix, path);
    for (char *p = out; *p; p++)
        if (*p == '.') *p = '_';
    return SD_OK;
}

/* ---- saving ----------------------------------------------------------------------------------- */

typedef struct save_ctx {
    char **names;          /* 3 per module */
    float *alpha_f;        /* per module */
    int64_t *alpha_i;
    size_t n;
} save_ctx;

static void save_ctx_free(save_ctx *c)
{
    if (c->names)
        for (size_t i = 0; i < 4 * c->n; i++) free(c->names[i]);
    free(c->names);
    free(c->alpha_f);
    free(c->alpha_i);
    memset(c, 0, sizeof *c);
}

/* Add the tensors of every module to a new writer. */
static int build_writer(const sd_lora_ref *mods, size_t n, const sd_lora_save_opts *o, save_ctx *c,
                        sd_safetensors_writer **out)
{
    *out = NULL;
    memset(c, 0, sizeof *c);
    if (o->dtype != SD_ST_F32 && o->dtype != SD_ST_F16 && o->dtype != SD_ST_BF16)
        return sd_err(SD_EINVAL, "LoRA save: dtype must be float, fp16 or bf16");
    c->n = n;
    c->names = calloc(4 * n + 1, sizeof *c->names);
    c->alpha_f = calloc(n + 1, sizeof *c->alpha_f);
    c->alpha_i = calloc(n + 1, sizeof *c->alpha_i);
    if (!c->names || !c->alpha_f || !c->alpha_i) { save_ctx_free(c); return sd_err(SD_ENOMEM, "out of memory"); }
    sd_safetensors_writer *w;
    int rc = sd_safetensors_writer_new(&w);
    if (rc) { save_ctx_free(c); return rc; }
    for (size_t i = 0; i < n && !rc; i++) {
        const sd_lora *l = mods[i].lora;
        if (!l || !l->down || !l->up || !l->down->value.data || l->down->value.dtype != SD_F32 ||
            l->down->value.device != SD_DEV_CPU) {
            rc = sd_err(SD_EINVAL, "LoRA save: module %s has no f32 host weights", mods[i].name);
            break;
        }
        size_t L = strlen(mods[i].name) + 24;
        for (int k = 0; k < 4; k++) {
            c->names[4 * i + k] = malloc(L);
            if (!c->names[4 * i + k]) { rc = sd_err(SD_ENOMEM, "out of memory"); break; }
        }
        if (rc) break;
        snprintf(c->names[4 * i], L, "%s.lora_down.weight", mods[i].name);
        snprintf(c->names[4 * i + 1], L, "%s.lora_up.weight", mods[i].name);
        snprintf(c->names[4 * i + 2], L, "%s.alpha", mods[i].name);
        snprintf(c->names[4 * i + 3], L, "%s.lora_mid.weight", mods[i].name);
        rc = sd_safetensors_writer_add_f32(w, c->names[4 * i], o->dtype, l->down->value.ndim,
                                           l->down->value.shape, (const float *)l->down->value.data);
        if (!rc) rc = sd_safetensors_writer_add_f32(w, c->names[4 * i + 1], o->dtype, l->up->value.ndim,
                                                    l->up->value.shape, (const float *)l->up->value.data);
        if (!rc && l->mid) {
            if (l->mid->value.dtype != SD_F32 || l->mid->value.device != SD_DEV_CPU)
                rc = sd_err(SD_EINVAL, "LoRA save: module %s has no f32 host weights", mods[i].name);
            else rc = sd_safetensors_writer_add_f32(w, c->names[4 * i + 3], o->dtype, l->mid->value.ndim,
                                                    l->mid->value.shape, (const float *)l->mid->value.data);
        }
        if (rc) break;
        c->alpha_f[i] = l->alpha;
        if (o->precision_given || !o->alpha_int) {
            rc = sd_safetensors_writer_add_f32(w, c->names[4 * i + 2], o->dtype, 0, NULL, &c->alpha_f[i]);
        } else {
            if (l->alpha != floorf(l->alpha)) {
                rc = sd_err(SD_EINVAL, "LoRA save: %s: alpha %g is not an integer", mods[i].name, (double)l->alpha);
                break;
            }
            c->alpha_i[i] = (int64_t)l->alpha;
            rc = sd_safetensors_writer_add(w, c->names[4 * i + 2], SD_ST_I64, 0, NULL, &c->alpha_i[i]);
        }
    }
    if (rc) { sd_safetensors_writer_free(w); save_ctx_free(c); return rc; }
    *out = w;
    return SD_OK;
}

/* The two hashes computed while the serialisation streams through a FILE (fopencookie), so no
 * copy of the file is held in memory: SHA-256 of every byte after 8 + header length, and SHA-256
 * of bytes [0x100000, 0x110000). */
typedef struct hash_sink {
    uint64_t off;             /* bytes seen */
    uint8_t len8[8];
    uint64_t data_start;      /* 8 + N once the length is known */
    sd_sha256_ctx data, legacy;
} hash_sink;

static ssize_t hash_write(void *cookie, const char *buf, size_t n)
{
    hash_sink *h = cookie;
    const uint8_t *p = (const uint8_t *)buf;
    for (size_t i = 0; i < n; i++, h->off++) {
        if (h->off < 8) {
            h->len8[h->off] = p[i];
            if (h->off == 7) {
                uint64_t L = 0;
                for (int k = 0; k < 8; k++) L |= (uint64_t)h->len8[k] << (8 * k);
                h->data_start = 8 + L;
            }
        }
        /* bulk paths below would be faster; LoRA files are small enough for a byte loop over
         * the header, and the data part goes through the run below */
        if (h->off >= 8 && h->off >= h->data_start) {
            size_t run = n - i;
            uint64_t lo = 0x100000, hi = 0x110000;
            sd_sha256_update(&h->data, p + i, run);
            uint64_t a = h->off, b = h->off + run;
            if (b > lo && a < hi) {
                uint64_t s0 = a > lo ? a : lo, s1 = b < hi ? b : hi;
                sd_sha256_update(&h->legacy, p + i + (s0 - a), (size_t)(s1 - s0));
            }
            h->off += run;
            return (ssize_t)n;
        }
        if (h->off >= 0x100000 && h->off < 0x110000) sd_sha256_update(&h->legacy, p + i, 1);
    }
    return (ssize_t)n;
}

static int hashes_with_writer(sd_safetensors_writer *w, const sd_kv *meta, char model_hash[65],
                              char legacy_hash[9])
{
    int rc = SD_OK;
    if (meta)
        for (size_t i = 0; i < meta->n && !rc; i++)
            if (!strncmp(meta->keys[i], "ss_", 3)) rc = sd_safetensors_writer_set_meta(w, meta->keys[i], meta->vals[i]);
    if (rc) return rc;
    hash_sink h;
    memset(&h, 0, sizeof h);
    h.data_start = UINT64_MAX;
    sd_sha256_init(&h.data);
    sd_sha256_init(&h.legacy);
    cookie_io_functions_t io = { NULL, hash_write, NULL, NULL };
    FILE *fp = fopencookie(&h, "w", io);
    if (!fp) return sd_err(SD_ENOMEM, "out of memory");
    rc = sd_safetensors_writer_write_fp(w, fp, "<hash>");
    if (fclose(fp) != 0 && !rc) rc = sd_err(SD_EIO, "hashing the LoRA file failed");
    if (rc) return rc;
    uint8_t d[32];
    sd_sha256_final(&h.data, d);
    sd_hex(d, 32, model_hash);
    char full[65];
    sd_sha256_final(&h.legacy, d);
    sd_hex(d, 32, full);
    memcpy(legacy_hash, full, 8);
    legacy_hash[8] = 0;
    return SD_OK;
}

int sd_lora_file_hashes(const sd_lora_ref *mods, size_t n, const sd_lora_save_opts *o,
                        char model_hash[65], char legacy_hash[9])
{
    save_ctx c;
    sd_safetensors_writer *w;
    int rc = build_writer(mods, n, o, &c, &w);
    if (rc) return rc;
    rc = hashes_with_writer(w, o->meta, model_hash, legacy_hash);
    sd_safetensors_writer_free(w);
    save_ctx_free(&c);
    return rc;
}

int sd_lora_file_save(const char *path, const sd_lora_ref *mods, size_t n, const sd_lora_save_opts *o,
                      char model_hash[65], char legacy_hash[9])
{
    char mh[65] = "", lh[9] = "";
    int rc = SD_OK;
    if (!o->no_hashes) {
        rc = sd_lora_file_hashes(mods, n, o, mh, lh);
        if (rc) return sd_err_prefix(rc, "%s", path);
    }
    save_ctx c;
    sd_safetensors_writer *w;
    rc = build_writer(mods, n, o, &c, &w);
    if (rc) return sd_err_prefix(rc, "%s", path);
    if (o->meta)
        for (size_t i = 0; i < o->meta->n && !rc; i++)
            rc = sd_safetensors_writer_set_meta(w, o->meta->keys[i], o->meta->vals[i]);
    if (!rc && !o->no_hashes) {
        rc = sd_safetensors_writer_set_meta(w, "sshs_model_hash", mh);
        if (!rc) rc = sd_safetensors_writer_set_meta(w, "sshs_legacy_hash", lh);
    }
    if (!rc) rc = sd_safetensors_writer_write(w, path);
    sd_safetensors_writer_free(w);
    save_ctx_free(&c);
    if (!rc) {
        if (model_hash) memcpy(model_hash, mh, 65);
        if (legacy_hash) memcpy(legacy_hash, lh, 9);
    }
    return rc;
}

int sd_lora_file_hashes_of(const sd_safetensors *st, char model_hash[65], char legacy_hash[9])
{
    sd_safetensors_writer *w;
    int rc = sd_safetensors_writer_new(&w);
    if (rc) return rc;
    size_t nt = sd_safetensors_count(st);
    for (size_t i = 0; i < nt && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        rc = sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    if (!rc) {
        sd_kv meta;
        sd_kv_init(&meta);
        size_t nm = sd_safetensors_meta_count(st);
        for (size_t i = 0; i < nm && !rc; i++) {
            const char *k, *v;
            sd_safetensors_meta_at(st, i, &k, &v);
            if (!strncmp(k, "ss_", 3)) rc = sd_kv_set(&meta, k, v);
        }
        if (!rc) rc = hashes_with_writer(w, &meta, model_hash, legacy_hash);
        sd_kv_free(&meta);
    }
    sd_safetensors_writer_free(w);
    return rc;
}

int sd_lora_writer_add_hashes(sd_safetensors_writer *w, const char *name)
{
    void *buf = NULL;
    char mh[65], lh[9];
    size_t nb = 0;
    sd_safetensors *mem = NULL;
    int rc = sd_safetensors_writer_write_mem(w, &buf, &nb);
    if (!rc) rc = sd_safetensors_open_mem(buf, nb, name, &mem);
    if (!rc) rc = sd_lora_file_hashes_of(mem, mh, lh);
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "sshs_model_hash", mh);
    if (!rc) rc = sd_safetensors_writer_set_meta(w, "sshs_legacy_hash", lh);
    sd_safetensors_close(mem);
    free(buf);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------------------- */

static int cmp_mod(const void *a, const void *b)
{
    return strcmp(((const sd_lora_file_module *)a)->name, ((const sd_lora_file_module *)b)->name);
}

void sd_lora_file_info_free(sd_lora_file_info *info)
{
    for (size_t i = 0; i < info->n; i++) free(info->mods[i].name);
    free(info->mods);
    info->mods = NULL;
    info->n = 0;
}

static const char *foreign_kind(const char *suffix)
{
    static const struct { const char *s, *what; } k[] = {
        { "hada_", "LyCORIS LoHa" }, { "lokr_", "LyCORIS LoKr" }, { "lora_mid", "LyCORIS LoCon/Tucker" },
        { "dora_scale", "DoRA" }, { "lora_A", "Diffusers/PEFT" }, { "lora_B", "Diffusers/PEFT" },
        { "lora.down", "Diffusers" }, { "lora.up", "Diffusers" }, { "diff_b", "LyCORIS full-diff" },
        { "oft_", "OFT" }, { "ia3", "LyCORIS (IA)^3" },
    };
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (strstr(suffix, k[i].s)) return k[i].what;
    if (!strcmp(suffix, "diff")) return "LyCORIS full-diff";
    return NULL;
}

static int scan(const sd_safetensors *st, sd_lora_file_info *info, int allow_mid);

int sd_lora_file_scan(const sd_safetensors *st, sd_lora_file_info *info) { return scan(st, info, 0); }

/* allow_mid: LyCORIS's Tucker LoCon key <name>.lora_mid.weight is accepted (module flag tucker) */
static int scan(const sd_safetensors *st, sd_lora_file_info *info, int allow_mid)
{
    memset(info, 0, sizeof *info);
    const char *path = sd_safetensors_path(st);
    size_t nt = sd_safetensors_count(st);
    info->mods = calloc(nt + 1, sizeof *info->mods);
    if (!info->mods) return sd_err(SD_ENOMEM, "out of memory");
    int rc = SD_OK;
    /* first pass: names of lora_down tensors define the modules */
    for (size_t i = 0; i < nt && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        const char *dot = strchr(t->name, '.');
        if (!dot) { rc = sd_err(SD_EFORMAT, "%s: tensor '%s' is not a LoRA key (<module>.lora_down.weight, "
                                ".lora_up.weight, .alpha)", path, t->name); break; }
        const char *suf = dot + 1;
        if (strcmp(suf, "lora_down.weight") && strcmp(suf, "lora_up.weight") && strcmp(suf, "alpha") &&
            !(allow_mid && !strcmp(suf, "lora_mid.weight"))) {
            const char *what = foreign_kind(suf);
            if (what) rc = sd_err(SD_EUNSUPPORTED, "%s: tensor '%s' belongs to a %s network, which is not "
                                  "supported (kohya LoRA/LoCon keys are)", path, t->name, what);
            else rc = sd_err(SD_EFORMAT, "%s: tensor '%s' is not a LoRA key (<module>.lora_down.weight, "
                             ".lora_up.weight, .alpha)", path, t->name);
            break;
        }
        if (strcmp(suf, "lora_down.weight")) continue;
        if (!sd_st_dtype_is_float(t->dtype) || (t->ndim != 2 && t->ndim != 4) || t->shape[0] < 1) {
            char s[96];
            sd_st_shape_str(t->ndim, t->shape, s, sizeof s);
            rc = sd_err(SD_EFORMAT, "%s: '%s' must be a 2-d or 4-d floating tensor, got %s %s", path,
                        t->name, sd_st_dtype_name(t->dtype), s);
            break;
        }
        sd_lora_file_module *m = &info->mods[info->n];
        m->name = strndup(t->name, (size_t)(dot - t->name));
        if (!m->name) { rc = sd_err(SD_ENOMEM, "out of memory"); break; }
        info->n++;
        m->rank = (int)t->shape[0];
        m->in = t->shape[1];
        m->conv4d = t->ndim == 4;
        m->kh = m->conv4d ? (int)t->shape[2] : 1;
        m->kw = m->conv4d ? (int)t->shape[3] : 1;
    }
    if (!rc) qsort(info->mods, info->n, sizeof *info->mods, cmp_mod);
    /* second pass: up and alpha of each module; orphans */
    char key[1024];
    for (size_t i = 0; i < info->n && !rc; i++) {
        sd_lora_file_module *m = &info->mods[i];
        snprintf(key, sizeof key, "%s.lora_up.weight", m->name);
        const sd_st_tensor *u = sd_safetensors_find(st, key);
        if (!u) { rc = sd_err(SD_EFORMAT, "%s: module %s has lora_down but no lora_up", path, m->name); break; }
        int ok = sd_st_dtype_is_float(u->dtype) && u->ndim == (m->conv4d ? 4 : 2) && u->shape[1] == m->rank &&
                 (!m->conv4d || (u->shape[2] == 1 && u->shape[3] == 1));
        if (!ok) {
            char s[96];
            sd_st_shape_str(u->ndim, u->shape, s, sizeof s);
            rc = sd_err(SD_EFORMAT, "%s: '%s' has shape %s %s, expected [out,%d%s]", path, key,
                        sd_st_dtype_name(u->dtype), s, m->rank, m->conv4d ? ",1,1" : "");
            break;
        }
        m->out = u->shape[0];
        snprintf(key, sizeof key, "%s.lora_mid.weight", m->name);
        m->tucker = allow_mid && sd_safetensors_find(st, key) != NULL;
        snprintf(key, sizeof key, "%s.alpha", m->name);
        const sd_st_tensor *a = sd_safetensors_find(st, key);
        m->alpha = (float)m->rank;
        if (a) {
            if (a->numel != 1 || a->ndim > 1 || a->dtype == SD_ST_BOOL) {
                rc = sd_err(SD_EFORMAT, "%s: '%s' must be a scalar number", path, key);
                break;
            }
            float v;
            rc = sd_safetensors_read(st, a, SD_ST_F32, &v, 1);
            if (rc) break;
            if (!isfinite(v)) { rc = sd_err(SD_EFORMAT, "%s: '%s' is not finite", path, key); break; }
            m->alpha = v;
            m->has_alpha = 1;
        }
    }
    for (size_t i = 0; i < nt && !rc; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        const char *dot = strchr(t->name, '.');
        sd_lora_file_module probe = { 0 };
        char nm[1024];
        snprintf(nm, sizeof nm, "%.*s", (int)(dot - t->name), t->name);
        probe.name = nm;
        if (!bsearch(&probe, info->mods, info->n, sizeof *info->mods, cmp_mod))
            rc = sd_err(SD_EFORMAT, "%s: '%s' has no matching %s.lora_down.weight", path, t->name, nm);
    }
    if (rc) sd_lora_file_info_free(info);
    return rc;
}

/* Same element layout: equal shapes, or [a,b] vs [a,b,1,1]. */
static int same_layout(const sd_tensor *p, const sd_st_tensor *t)
{
    if (p->ndim == t->ndim) {
        for (int i = 0; i < p->ndim; i++)
            if (p->shape[i] != t->shape[i]) return 0;
        return 1;
    }
    const int64_t *a = p->ndim == 4 ? p->shape : t->shape;
    const int64_t *b = p->ndim == 4 ? t->shape : p->shape;
    int na = p->ndim == 4 ? t->ndim : p->ndim;
    return (p->ndim == 4 || t->ndim == 4) && na == 2 && a[2] == 1 && a[3] == 1 && a[0] == b[0] && a[1] == b[1];
}

static void list_names(char *buf, size_t cap, const char *const *names, size_t n)
{
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n && i < 3; i++)
        k += (size_t)snprintf(buf + k, k < cap ? cap - k : 0, "%s%s", i ? ", " : "", names[i]);
    if (n > 3 && k < cap) snprintf(buf + k, cap - k, ", ... (%zu in all)", n);
}

int sd_lora_file_load(const sd_safetensors *st, const sd_lora_ref *mods, size_t n, unsigned flags,
                      size_t *loaded)
{
    const char *path = sd_safetensors_path(st);
    sd_lora_file_info info;
    int tucker = 0;
    for (size_t i = 0; i < n; i++) tucker |= mods[i].lora->mid != NULL;
    int rc = scan(st, &info, tucker);
    if (rc) return rc;
    uint8_t *used = calloc(info.n + 1, 1);
    const char **missing = calloc(n + 1, sizeof *missing);
    const char **unexpected = calloc(info.n + 1, sizeof *unexpected);
    sd_lora_file_module **match = calloc(n + 1, sizeof *match);
    if (!used || !missing || !unexpected || !match) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
    size_t nmiss = 0, nunexp = 0, nload = 0;
    char key[1024];
    for (size_t i = 0; i < n; i++) {
        sd_lora_file_module probe = { 0 };
        probe.name = (char *)mods[i].name;
        sd_lora_file_module *m = bsearch(&probe, info.mods, info.n, sizeof *info.mods, cmp_mod);
        if (!m) { missing[nmiss++] = mods[i].name; continue; }
        used[m - info.mods] = 1;
        const sd_lora *l = mods[i].lora;
        if (m->rank != l->rank) {
            rc = sd_err(SD_EFORMAT, "%s: %s: rank %d in the file, %d in the network; use --dim_from_weights "
                        "to take the file's ranks", path, m->name, m->rank, l->rank);
            goto out;
        }
        if (!(flags & SD_LORA_LOAD_IGNORE_ALPHA) && m->alpha != l->alpha) {
            rc = sd_err(SD_EFORMAT, "%s: %s: alpha %g in the file, %g in the network (--network_alpha); "
                        "use --dim_from_weights to take the file's alphas", path, m->name, (double)m->alpha,
                        (double)l->alpha);
            goto out;
        }
        if (m->tucker != (l->mid != NULL)) {
            rc = sd_err(SD_EFORMAT, "%s: %s: %s Tucker module (lora_mid) in the file, %s in the network "
                        "(use_tucker)", path, m->name, m->tucker ? "a" : "not a", l->mid ? "one" : "none");
            goto out;
        }
        for (int k = 0; k < 3; k++) {
            sd_param *p = k == 2 ? l->mid : k ? l->up : l->down;
            if (!p) continue;
            snprintf(key, sizeof key, "%s.%s", m->name, k == 2 ? "lora_mid.weight" : k ? "lora_up.weight" : "lora_down.weight");
            const sd_st_tensor *t = sd_safetensors_find(st, key);
            if (!same_layout(&p->value, t)) {
                char a[96], b[96];
                sd_st_shape_str(t->ndim, t->shape, a, sizeof a);
                sd_st_shape_str(p->value.ndim, p->value.shape, b, sizeof b);
                rc = sd_err(SD_EFORMAT, "%s: '%s' has shape %s, the network's is %s", path, key, a, b);
                goto out;
            }
            if (p->value.dtype != SD_F32 || p->value.device != SD_DEV_CPU) {
                rc = sd_err(SD_EINVAL, "LoRA load: %s is not an f32 host parameter", p->key);
                goto out;
            }
        }
        match[i] = m;
        nload++;
    }
    for (size_t i = 0; i < info.n; i++)
        if (!used[i]) unexpected[nunexp++] = info.mods[i].name;
    char lst[512];
    if (nmiss && !(flags & SD_LORA_LOAD_ALLOW_MISSING)) {
        list_names(lst, sizeof lst, missing, nmiss);
        rc = sd_err(SD_EFORMAT, "%s: %zu module%s of the network %s missing from the file: %s", path, nmiss,
                    nmiss == 1 ? "" : "s", nmiss == 1 ? "is" : "are", lst);
        goto out;
    }
    if (nunexp && !(flags & SD_LORA_LOAD_ALLOW_UNEXPECTED)) {
        list_names(lst, sizeof lst, unexpected, nunexp);
        rc = sd_err(SD_EFORMAT, "%s: %zu module%s in the file %s not in the network (other targets, conv_dim "
                    "or block dims?): %s", path, nunexp, nunexp == 1 ? "" : "s", nunexp == 1 ? "is" : "are", lst);
        goto out;
    }
    /* everything checked: now read (a failed load leaves the network as it was, short of I/O errors) */
    for (size_t i = 0; i < n; i++) {
        if (!match[i]) continue;
        for (int k = 0; k < 3; k++) {
            sd_param *p = k == 2 ? mods[i].lora->mid : k ? mods[i].lora->up : mods[i].lora->down;
            if (!p) continue;
            snprintf(key, sizeof key, "%s.%s", match[i]->name,
                     k == 2 ? "lora_mid.weight" : k ? "lora_up.weight" : "lora_down.weight");
            rc = sd_safetensors_read(st, sd_safetensors_find(st, key), SD_ST_F32, p->value.data,
                                     (size_t)sd_tensor_numel(&p->value));
            if (rc) goto out;
        }
    }
    if (loaded) *loaded = nload;
out:
    free(match);
    free(used);
    free(missing);
    free(unexpected);
    sd_lora_file_info_free(&info);
    return rc;
}
