/* Resumable training state (see state.h). */
#include "train/state.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jv.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/hash.h"
#include "io/jsonl.h"
#include "io/safetensors.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* ---- helpers ------------------------------------------------------------------------------------ */

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc && !(dir && (e == EINVAL || e == ENOTSUP)))
        return sd_err(SD_EIO, "%s: fsync: %s", path, strerror(e));
    return SD_OK;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int sd_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? SD_OK : sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    if (nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return sd_err(SD_EIO, "cannot remove %s: %s", path, strerror(errno));
    return SD_OK;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Trainable parameters of a registry (and of a second one: a full model's text encoder), in
 * registration order. */
static size_t trainable2(const sd_params *r, const sd_params *r2, sd_param **out)
{
    size_t k = 0;
    for (int j = 0; j < 2; j++) {
        const sd_params *q = j ? r2 : r;
        for (size_t i = 0; q && i < sd_params_count(q); i++) {
            sd_param *p = sd_params_at(q, i);
            if (p->flags & SD_PARAM_TRAINABLE) {
                if (out) out[k] = p;
                k++;
            }
        }
    }
    return k;
}
#define trainable(s_, out_) trainable2((s_)->net, (s_)->net2, out_)

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void json_shape(FILE *f, const sd_tensor *t)
{
    fputc('[', f);
    for (int d = 0; d < t->ndim; d++) fprintf(f, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    fputc(']', f);
}

/* ---- save --------------------------------------------------------------------------------------- */

static int write_tensors(const char *tmp, const sd_train_state_in *s, char wsha[65], char osha[65])
{
    sd_safetensors_writer *w = NULL;
    int64_t *steps = NULL;
    char *wp = path_join(tmp, "weights.safetensors"), *op = path_join(tmp, "optimizer.safetensors");
    char **names = NULL;
    size_t nnames = 0;
    int rc = wp && op ? sd_safetensors_writer_new(&w) : sd_err(SD_ENOMEM, "out of memory");
    size_t np = trainable(s, NULL);
    sd_param **ps = calloc(np + 1, sizeof *ps);
    if (!rc && !ps) rc = sd_err(SD_ENOMEM, "out of memory");
    if (!rc) trainable(s, ps);
    for (size_t i = 0; i < np && !rc; i++) {
        sd_param *p = ps[i];
        if (p->value.dtype != SD_F32 || p->value.device != SD_DEV_CPU || !p->value.data)
            rc = sd_err(SD_EINVAL, "state: parameter %s is not an allocated f32 host tensor", p->key);
        else
            rc = sd_safetensors_writer_add(w, p->key, SD_ST_F32, p->value.ndim, p->value.shape, p->value.data);
    }
    if (!rc) rc = sd_safetensors_writer_write(w, wp);
    sd_safetensors_writer_free(w);
    w = NULL;
    if (!rc) rc = sd_sha256_file(wp, wsha);
    if (!rc) rc = sd_safetensors_writer_new(&w);
    /* the optimizer: per parameter its state tensors (<key>.<state name>), <key>.step and, but for
     * AdamW, <key>.initialized; then the optimizer-wide scalars (optimizer.<name>, F64) */
    sd_optim *o = (sd_optim *)s->opt;
    size_t no = o ? o->nparams : 0;
    const int with_init = o && o->cfg.kind != SD_OPTIM_ADAMW;
    const int per = SD_OPTIM_MAX_BUFS + 2;
    const char *snames[6];
    double *svals[6];
    int nsc = o ? sd_optim_scalars(o, snames, svals) : 0;
    if (!rc) {
        steps = calloc(2 * no + 1, sizeof *steps);
        names = calloc((size_t)per * no + (size_t)nsc + 1, sizeof *names);
        if (!steps || !names) rc = sd_err(SD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < no && !rc; i++) {
        const sd_optim_param *q = &o->params[i];
        sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
        int nb = sd_optim_param_bufs(o, i, bi);
        for (int k = 0; k < nb + 1 + with_init && !rc; k++) {
            const char *suf = k < nb ? bi[k].name : k == nb ? "step" : "initialized";
            size_t L = strlen(q->p->key) + strlen(suf) + 2;
            names[nnames] = malloc(L);
            if (!names[nnames]) { rc = sd_err(SD_ENOMEM, "out of memory"); break; }
            snprintf(names[nnames], L, "%s.%s", q->p->key, suf);
            if (k < nb)
                rc = sd_safetensors_writer_add(w, names[nnames], SD_ST_F32, bi[k].ndim, bi[k].shape, bi[k].data);
            else if (k == nb)
                steps[2 * i] = q->step, rc = sd_safetensors_writer_add(w, names[nnames], SD_ST_I64, 0, NULL, &steps[2 * i]);
            else
                steps[2 * i + 1] = q->initialized,
                rc = sd_safetensors_writer_add(w, names[nnames], SD_ST_I64, 0, NULL, &steps[2 * i + 1]);
            nnames++;
        }
        if (!rc) rc = sd_optim_param_save_extra(o, i, w, q->p->key);   /* AdamW8bit's arrays */
    }
    for (int k = 0; k < nsc && !rc; k++) {
        size_t L = strlen(snames[k]) + 16;
        names[nnames] = malloc(L);
        if (!names[nnames]) { rc = sd_err(SD_ENOMEM, "out of memory"); break; }
        snprintf(names[nnames], L, "optimizer.%s", snames[k]);
        rc = sd_safetensors_writer_add(w, names[nnames++], SD_ST_F64, 0, NULL, svals[k]);
    }
    if (!rc && s->loss_window_n)
        rc = sd_safetensors_writer_add(w, "loss_window", SD_ST_F64, 1, (int64_t[]){ (int64_t)s->loss_window_n },
                                       s->loss_window);
    if (!rc) rc = sd_safetensors_writer_add(w, "loss_total", SD_ST_F64, 0, NULL, &s->loss_total);
    if (!rc) rc = sd_safetensors_writer_write(w, op);
    if (!rc) rc = sd_sha256_file(op, osha);
    sd_safetensors_writer_free(w);
    for (size_t i = 0; i < nnames; i++) free(names[i]);
    free(names);
    free(steps);
    free(ps);
    free(wp);
    free(op);
    return rc;
}

static int write_json(const char *tmp, const sd_train_state_in *s, const char *wsha, const char *osha)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return sd_err(SD_ENOMEM, "out of memory");
    const sd_train_progress *p = &s->prog;
    fprintf(f, "{\"format\":\"sd-train-state\",\"version\":%d,\n", SD_TRAIN_STATE_VERSION);
    fprintf(f, "\"current_epoch\":%lld,\"current_step\":%lld,\n", (long long)p->epoch + 1, (long long)p->global_step);
    fprintf(f, "\"global_step\":%lld,\"epoch\":%lld,\"step_in_epoch\":%lld,\"sched_step\":%lld,\"seed\":\"%llu\",\n",
            (long long)p->global_step, (long long)p->epoch, (long long)p->step_in_epoch, (long long)p->sched_step,
            (unsigned long long)p->seed);
    fprintf(f, "\"files\":{\"weights.safetensors\":\"%s\",\"optimizer.safetensors\":\"%s\"},\n", wsha, osha);
    fputs("\"params\":[", f);
    size_t np = trainable(s, NULL);
    sd_param **ps = calloc(np + 1, sizeof *ps);
    if (!ps) { fclose(f); free(buf); return sd_err(SD_ENOMEM, "out of memory"); }
    trainable(s, ps);
    for (size_t i = 0; i < np; i++) {
        fputs(i ? ",\n [" : "\n [", f);
        json_str(f, ps[i]->key);
        fputc(',', f);
        json_shape(f, &ps[i]->value);
        fputc(']', f);
    }
    free(ps);
    fputs("],\n", f);
    if (s->opt) {
        const sd_optim *o = s->opt;
        fprintf(f, "\"optimizer\":{\"kind\":\"%s\",\"beta1\":%.17g,\"beta2\":%.17g,\"eps\":%.17g,"
                   "\"weight_decay\":%.17g,\"groups\":[", sd_optim_kind_name(o->cfg.kind), o->cfg.beta1, o->cfg.beta2,
                o->cfg.eps, o->cfg.weight_decay);
        for (int g = 0; g < o->ngroups; g++) {
            fputs(g ? ",{\"name\":" : "{\"name\":", f);
            json_str(f, o->groups[g].name);
            fprintf(f, ",\"lr\":%.17g,\"params\":%zu}", o->groups[g].lr, o->groups[g].count);
        }
        fputs("]},\n", f);
    } else {
        fputs("\"optimizer\":null,\n", f);
    }
    if (s->scaler && s->scaler->enabled) {
        const sd_loss_scaler *g = s->scaler;
        /* %.9g: a float survives the round trip; the factors as doubles */
        fprintf(f, "\"grad_scaler\":{\"scale\":%.9g,\"growth_factor\":%.17g,\"backoff_factor\":%.17g,"
                   "\"growth_interval\":%lld,\"growth_tracker\":%lld},\n", (double)g->scale, g->growth_factor,
                g->backoff_factor, (long long)g->growth_interval, (long long)g->growth_tracker);
    } else {
        fputs("\"grad_scaler\":null,\n", f);
    }
    fputs("\"options\":", f);
    fputs(s->options_json && *s->options_json ? s->options_json : "{}", f);
    fputs("}\n", f);
    if (fclose(f) != 0) { free(buf); return sd_err(SD_ENOMEM, "out of memory"); }
    /* the options must be valid JSON: check by parsing the whole document */
    jv v;
    int rc = sd_json_parse(buf, len, &v);
    if (rc) { free(buf); return sd_err_prefix(SD_EINVAL, "state: options snapshot is not valid JSON"); }
    jv_free(v);
    char *sp = path_join(tmp, "state.json");
    rc = sp ? sd_write_file_atomic(sp, buf, len) : sd_err(SD_ENOMEM, "out of memory");
    free(sp);
    free(buf);
    return rc;
}

int sd_train_state_save(const char *dir, const sd_train_state_in *s)
{
    size_t L = strlen(dir);
    while (L > 1 && dir[L - 1] == '/') L--;
    char *final = strndup(dir, L);
    char *tmp = malloc(L + 32);
    if (!final || !tmp) { free(final); free(tmp); return sd_err(SD_ENOMEM, "out of memory"); }
    const char *slash = strrchr(final, '/');
    if (slash) snprintf(tmp, L + 32, "%.*s/.%s.tmp.XXXXXX", (int)(slash - final), final, slash + 1);
    else snprintf(tmp, L + 32, ".%s.tmp.XXXXXX", final);
    if (!mkdtemp(tmp)) {
        int rc = sd_err(SD_EIO, "cannot create a temporary directory for %s: %s", final, strerror(errno));
        free(final);
        free(tmp);
        return rc;
    }
    char wsha[65], osha[65];
    int rc = write_tensors(tmp, s, wsha, osha);
    if (!rc) rc = write_json(tmp, s, wsha, osha);
    if (!rc) rc = fsync_path(tmp, 1);
    if (!rc) {
        struct stat st;
        if (stat(final, &st) == 0) {
            if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
                rc = sd_remove_tree(tmp);     /* the old state, now under the temporary name */
            } else {
                /* no RENAME_EXCHANGE (old kernel or file system): move the old one aside first */
                char *old = malloc(strlen(tmp) + 8);
                if (!old) rc = sd_err(SD_ENOMEM, "out of memory");
                else {
                    snprintf(old, strlen(tmp) + 8, "%s.old", tmp);
                    if (rename(final, old) != 0 || rename(tmp, final) != 0)
                        rc = sd_err(SD_EIO, "cannot replace %s: %s", final, strerror(errno));
                    else
                        rc = sd_remove_tree(old);
                    free(old);
                }
            }
        } else if (rename(tmp, final) != 0) {
            rc = sd_err(SD_EIO, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
        }
    }
    if (!rc) {
        char *parent = strdup(final);
        char *sl = parent ? strrchr(parent, '/') : NULL;
        if (parent) {
            if (sl) *sl = 0;
            fsync_path(sl ? (*parent ? parent : "/") : ".", 1);
            sd_err_clear();
        }
        free(parent);
    } else {
        sd_remove_tree(tmp);
    }
    free(final);
    free(tmp);
    return rc;
}

/* ---- load --------------------------------------------------------------------------------------- */

static jv get(jv obj, const char *key)   /* borrowed obj; returns a new reference (invalid if absent) */
{
    if (jv_get_kind(obj) != JV_KIND_OBJECT) return jv_invalid();
    jv v = jv_object_get(jv_copy(obj), jv_string(key));
    return v;
}

static int get_i64(jv obj, const char *key, int64_t *out)
{
    jv v = get(obj, key);
    int ok = jv_get_kind(v) == JV_KIND_NUMBER;
    if (ok) *out = (int64_t)jv_number_value(v);
    jv_free(v);
    return ok ? 0 : -1;
}

void sd_train_state_out_free(sd_train_state_out *o)
{
    free(o->options_json);
    free(o->loss_window);
    memset(o, 0, sizeof *o);
}

static int shape_eq(jv arr, const sd_tensor *t)
{
    if (jv_get_kind(arr) != JV_KIND_ARRAY || jv_array_length(jv_copy(arr)) != t->ndim) return 0;
    for (int d = 0; d < t->ndim; d++) {
        jv x = jv_array_get(jv_copy(arr), d);
        int ok = jv_get_kind(x) == JV_KIND_NUMBER && (int64_t)jv_number_value(x) == t->shape[d];
        jv_free(x);
        if (!ok) return 0;
    }
    return 1;
}

static void shape_of_jv(jv arr, char *buf, size_t n)
{
    jv s = jv_dump_string(jv_copy(arr), 0);
    snprintf(buf, n, "%s", jv_string_value(s));
    jv_free(s);
}

int sd_train_state_load(const char *dir, sd_params *net, sd_optim *opt, sd_train_state_out *out)
{
    return sd_train_state_load2(dir, net, NULL, opt, out);
}

int sd_train_state_load2(const char *dir, sd_params *net, sd_params *net2, sd_optim *opt, sd_train_state_out *out)
{
    memset(out, 0, sizeof *out);
    char *sp = path_join(dir, "state.json"), *wp = path_join(dir, "weights.safetensors"),
         *op = path_join(dir, "optimizer.safetensors");
    char *text = NULL;
    size_t tn = 0;
    jv doc = jv_invalid();
    sd_safetensors *ws = NULL, *os = NULL;
    sd_param **ps = NULL;
    int rc = sp && wp && op ? SD_OK : sd_err(SD_ENOMEM, "out of memory");
    struct stat st;
    if (!rc && stat(dir, &st) != 0) rc = sd_err(SD_ENOTFOUND, "cannot resume from %s: %s", dir, strerror(errno));
    if (!rc) {
        rc = sd_read_file(sp, 64u << 20, &text, &tn);
        if (rc) rc = sd_err_prefix(rc == SD_ENOTFOUND ? SD_EFORMAT : rc, "cannot resume from %s: not a state directory", dir);
    }
    if (!rc) {
        rc = sd_json_parse(text, tn, &doc);
        if (rc || jv_get_kind(doc) != JV_KIND_OBJECT)
            rc = sd_err(SD_EFORMAT, "%s: not a valid state file (%s)", sp, rc ? sd_errmsg() : "not an object");
    }
    if (!rc) {
        jv f = get(doc, "format");
        int okf = jv_get_kind(f) == JV_KIND_STRING && !strcmp(jv_string_value(f), "sd-train-state");
        jv_free(f);
        int64_t ver = -1;
        get_i64(doc, "version", &ver);
        if (!okf) rc = sd_err(SD_EFORMAT, "%s: not an sd-train state", sp);
        else if (ver != SD_TRAIN_STATE_VERSION)
            rc = sd_err(SD_EUNSUPPORTED, "%s: state version %lld, this sd-train reads version %d", sp, (long long)ver,
                        SD_TRAIN_STATE_VERSION);
    }
    if (!rc) {
        if (get_i64(doc, "global_step", &out->prog.global_step) || get_i64(doc, "epoch", &out->prog.epoch) ||
            get_i64(doc, "step_in_epoch", &out->prog.step_in_epoch) || get_i64(doc, "sched_step", &out->prog.sched_step))
            rc = sd_err(SD_EFORMAT, "%s: missing progress fields", sp);
        jv seed = get(doc, "seed");
        if (!rc && jv_get_kind(seed) == JV_KIND_STRING) out->prog.seed = strtoull(jv_string_value(seed), NULL, 10);
        else if (!rc) rc = sd_err(SD_EFORMAT, "%s: missing seed", sp);
        jv_free(seed);
        if (!rc && (out->prog.global_step < 0 || out->prog.epoch < 0 || out->prog.step_in_epoch < 0 ||
                    out->prog.sched_step < 0))
            rc = sd_err(SD_EFORMAT, "%s: negative progress values", sp);
    }
    /* the fp16 loss scaler (absent in states written before it existed) */
    if (!rc) {
        jv g = get(doc, "grad_scaler");
        if (jv_get_kind(g) == JV_KIND_OBJECT) {
            sd_loss_scaler *sc = &out->scaler;
            sd_loss_scaler_init(sc, 1);
            double v[5];
            static const char *const dk[5] = { "scale", "growth_factor", "backoff_factor", "growth_interval",
                                               "growth_tracker" };
            for (int k = 0; k < 5 && !rc; k++) {
                jv x = get(g, dk[k]);
                if (jv_get_kind(x) == JV_KIND_NUMBER) v[k] = jv_number_value(x);
                else rc = sd_err(SD_EFORMAT, "%s: grad_scaler has no %s", sp, dk[k]);
                jv_free(x);
            }
            /* counts: integers within int32 (torch keeps them as int) */
            for (int k = 3; k < 5 && !rc; k++)
                if (!(v[k] >= 0 && v[k] <= 2147483647.0) || v[k] != floor(v[k]))
                    rc = sd_err(SD_EFORMAT, "%s: grad_scaler %s %g is not a count", sp, dk[k], v[k]);
            if (!rc) {
                sc->scale = fabs(v[0]) < 1e39 ? (float)v[0] : INFINITY;
                sc->growth_factor = v[1];
                sc->backoff_factor = v[2];
                sc->growth_interval = (int64_t)v[3];
                sc->growth_tracker = (int64_t)v[4];
                rc = sd_loss_scaler_validate(sc, sp);
            }
            if (!rc) out->has_scaler = 1;
        } else if (jv_is_valid(g) && jv_get_kind(g) != JV_KIND_NULL) {
            rc = sd_err(SD_EFORMAT, "%s: grad_scaler is not an object", sp);
        }
        jv_free(g);
    }
    /* file integrity */
    static const char *const fnames[2] = { "weights.safetensors", "optimizer.safetensors" };
    for (int k = 0; k < 2 && !rc; k++) {
        jv files = get(doc, "files");
        jv h = get(files, fnames[k]);
        char have[65];
        if (jv_get_kind(h) != JV_KIND_STRING) rc = sd_err(SD_EFORMAT, "%s: no hash for %s", sp, fnames[k]);
        else if ((rc = sd_sha256_file(k ? op : wp, have)) != SD_OK)
            rc = sd_err_prefix(SD_EFORMAT, "cannot resume from %s", dir);
        else if (strcmp(have, jv_string_value(h)))
            rc = sd_err(SD_EFORMAT, "cannot resume from %s: %s is corrupted (its SHA-256 differs from the one "
                        "recorded when it was saved)", dir, fnames[k]);
        jv_free(h);
        jv_free(files);
    }
    if (!rc) rc = sd_safetensors_open(wp, &ws);
    if (!rc) rc = sd_safetensors_open(op, &os);
    /* parameters: exactly the network's trainable ones, same shapes */
    size_t np = trainable2(net, net2, NULL);
    if (!rc) {
        ps = calloc(np + 1, sizeof *ps);
        if (!ps) rc = sd_err(SD_ENOMEM, "out of memory");
        else trainable2(net, net2, ps);
    }
    if (!rc) {
        jv params = get(doc, "params");
        int n = jv_get_kind(params) == JV_KIND_ARRAY ? jv_array_length(jv_copy(params)) : -1;
        if (n < 0) rc = sd_err(SD_EFORMAT, "%s: no parameter list", sp);
        for (int i = 0; i < n && !rc; i++) {
            jv e = jv_array_get(jv_copy(params), i);
            jv k = jv_array_get(jv_copy(e), 0), s = jv_array_get(jv_copy(e), 1);
            if (jv_get_kind(k) != JV_KIND_STRING) rc = sd_err(SD_EFORMAT, "%s: bad parameter entry %d", sp, i);
            else {
                sd_param *p = sd_params_find(net, jv_string_value(k));
                if (!p && net2) p = sd_params_find(net2, jv_string_value(k));
                char a[128], b[128];
                if (!p || !(p->flags & SD_PARAM_TRAINABLE)) {
                    rc = sd_err(SD_EINVAL, "cannot resume from %s: it holds %s, which this run does not train "
                                "(different network options?)", dir, jv_string_value(k));
                } else if (!shape_eq(s, &p->value)) {
                    shape_of_jv(s, a, sizeof a);
                    sd_st_shape_str(p->value.ndim, p->value.shape, b, sizeof b);
                    rc = sd_err(SD_EINVAL, "cannot resume from %s: it holds %s as %s, this run has %s (different "
                                "network_dim/conv_dim?)", dir, jv_string_value(k), a, b);
                } else {
                    rc = sd_safetensors_check_shape(ws, p->key, p->value.ndim, p->value.shape);
                    if (rc) rc = sd_err_prefix(SD_EFORMAT, "cannot resume from %s", dir);
                }
            }
            jv_free(k);
            jv_free(s);
            jv_free(e);
        }
        if (!rc && (size_t)n != np) {
            /* same count is required; name the first parameter the state lacks */
            for (size_t i = 0; i < np; i++)
                if (!sd_safetensors_find(ws, ps[i]->key)) {
                    rc = sd_err(SD_EINVAL, "cannot resume from %s: it has no %s (the state has %d trained "
                                "tensors, this run %zu)", dir, ps[i]->key, n, np);
                    break;
                }
            if (!rc) rc = sd_err(SD_EINVAL, "cannot resume from %s: %d trained tensors, this run %zu", dir, n, np);
        }
        jv_free(params);
    }
    /* optimizer */
    if (!rc && opt) {
        jv o = get(doc, "optimizer");
        jv groups = get(o, "groups"), kind = get(o, "kind");
        int ng = jv_get_kind(groups) == JV_KIND_ARRAY ? jv_array_length(jv_copy(groups)) : -1;
        const char *want = sd_optim_kind_name(opt->cfg.kind);
        if (jv_get_kind(o) != JV_KIND_OBJECT)
            rc = sd_err(SD_EINVAL, "cannot resume from %s: it has no optimizer state", dir);
        else if (jv_get_kind(kind) != JV_KIND_STRING || strcmp(jv_string_value(kind), want))
            rc = sd_err(SD_EINVAL, "cannot resume from %s: its optimizer state is %s's, this run uses %s "
                        "(--optimizer_type)", dir, jv_get_kind(kind) == JV_KIND_STRING ? jv_string_value(kind) : "?",
                        want);
        else if (ng != opt->ngroups)
            rc = sd_err(SD_EINVAL, "cannot resume from %s: %d optimizer parameter groups, this run has %d "
                        "(different learning-rate options?)", dir, ng, opt->ngroups);
        for (int g = 0; g < ng && !rc; g++) {
            jv e = jv_array_get(jv_copy(groups), g);
            int64_t cnt = -1;
            get_i64(e, "params", &cnt);
            if ((size_t)cnt != opt->groups[g].count)
                rc = sd_err(SD_EINVAL, "cannot resume from %s: optimizer group %d has %lld parameters, this run %zu",
                            dir, g, (long long)cnt, opt->groups[g].count);
            jv_free(e);
        }
        jv_free(kind);
        jv_free(groups);
        jv_free(o);
        char key[1024];
        const int with_init = opt->cfg.kind != SD_OPTIM_ADAMW;
        for (size_t i = 0; i < opt->nparams && !rc; i++) {
            const sd_param *p = opt->params[i].p;
            sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
            int nb = sd_optim_param_bufs(opt, i, bi);
            for (int k = 0; k < nb && !rc; k++) {
                snprintf(key, sizeof key, "%s.%s", p->key, bi[k].name);
                rc = sd_safetensors_check_shape(os, key, bi[k].ndim, bi[k].shape);
            }
            for (int k = 0; k < 1 + with_init && !rc; k++) {
                snprintf(key, sizeof key, "%s.%s", p->key, k ? "initialized" : "step");
                const sd_st_tensor *t = sd_safetensors_find(os, key);
                if (!t || t->dtype != SD_ST_I64 || t->numel != 1) rc = sd_err(SD_EFORMAT, "%s: bad or missing %s", op, key);
            }
            if (!rc) rc = sd_optim_param_load_extra(opt, i, os, p->key);   /* AdamW8bit: checked and loaded */
            if (rc) rc = sd_err_prefix(SD_EFORMAT, "cannot resume from %s", dir);
        }
        const char *snames[6];
        double *svals[6];
        int nsc = sd_optim_scalars(opt, snames, svals);
        for (int k = 0; k < nsc && !rc; k++) {
            snprintf(key, sizeof key, "optimizer.%s", snames[k]);
            const sd_st_tensor *t = sd_safetensors_find(os, key);
            if (!t || t->dtype != SD_ST_F64 || t->numel != 1)
                rc = sd_err(SD_EFORMAT, "cannot resume from %s: %s: bad or missing %s", dir, op, key);
        }
    }
    /* all checked: load */
    for (size_t i = 0; i < np && !rc; i++)
        rc = sd_safetensors_read_f32(ws, ps[i]->key, ps[i]->value.data, (size_t)sd_tensor_numel(&ps[i]->value));
    char key[1024];
    for (size_t i = 0; opt && i < opt->nparams && !rc; i++) {
        sd_optim_param *q = &opt->params[i];
        sd_optim_buf_info bi[SD_OPTIM_MAX_BUFS];
        int nb = sd_optim_param_bufs(opt, i, bi);
        for (int k = 0; k < nb && !rc; k++) {
            snprintf(key, sizeof key, "%s.%s", q->p->key, bi[k].name);
            rc = sd_safetensors_read_f32(os, key, bi[k].data, bi[k].n);
        }
        snprintf(key, sizeof key, "%s.step", q->p->key);
        const sd_st_tensor *t = sd_safetensors_find(os, key);
        if (!rc) rc = sd_safetensors_read(os, t, SD_ST_I64, &q->step, 1);
        int64_t init = q->step > 0;
        if (!rc && opt->cfg.kind != SD_OPTIM_ADAMW) {
            snprintf(key, sizeof key, "%s.initialized", q->p->key);
            rc = sd_safetensors_read(os, sd_safetensors_find(os, key), SD_ST_I64, &init, 1);
        }
        q->initialized = init != 0;
    }
    if (opt && !rc) {
        const char *snames[6];
        double *svals[6];
        int nsc = sd_optim_scalars(opt, snames, svals);
        for (int k = 0; k < nsc && !rc; k++) {
            snprintf(key, sizeof key, "optimizer.%s", snames[k]);
            rc = sd_safetensors_read(os, sd_safetensors_find(os, key), SD_ST_F64, svals[k], 1);
        }
        if (!rc) sd_optim_after_load(opt);   /* ScheduleFree: the groups' weight_sum / lr_max */
    }
    if (!rc) {
        const sd_st_tensor *lw = sd_safetensors_find(os, "loss_window"), *lt = sd_safetensors_find(os, "loss_total");
        if (lw && (lw->ndim != 1 || lw->dtype != SD_ST_F64)) rc = sd_err(SD_EFORMAT, "%s: bad loss_window", op);
        else if (lw && lw->numel > 0) {
            out->loss_window = malloc((size_t)lw->numel * sizeof(double));
            if (!out->loss_window) rc = sd_err(SD_ENOMEM, "out of memory");
            else {
                out->loss_window_n = (size_t)lw->numel;
                memcpy(out->loss_window, lw->data, (size_t)lw->nbytes);
            }
        }
        if (!rc && lt && lt->dtype == SD_ST_F64 && lt->numel == 1) memcpy(&out->loss_total, lt->data, 8);
        else if (!rc) rc = sd_err(SD_EFORMAT, "%s: bad or missing loss_total", op);
    }
    if (!rc) {
        jv opts = get(doc, "options");
        if (jv_get_kind(opts) != JV_KIND_OBJECT) { jv_free(opts); opts = jv_object(); }
        char *s = NULL;
        size_t sn = 0;
        rc = sd_json_dump(opts, &s, &sn);
        out->options_json = s;
    }
    if (rc) sd_train_state_out_free(out);
    jv_free(doc);
    sd_safetensors_close(ws);
    sd_safetensors_close(os);
    free(ps);
    free(text);
    free(sp);
    free(wp);
    free(op);
    return rc;
}

/* The value an option takes effect with. --text_encoder_lr is a list of which LoRA uses the first
 * value (none: unset); states written before it was a list record a number. */
static jv effective(const char *key, jv v)
{
    /* --network_module networks.lora is the default */
    if (!strcmp(key, "network_module") && jv_is_valid(v) && jv_get_kind(v) == JV_KIND_STRING &&
        !strcmp(jv_string_value(v), "networks.lora")) {
        jv_free(v);
        return jv_null();
    }
    if (strcmp(key, "text_encoder_lr") || !jv_is_valid(v) || jv_get_kind(v) != JV_KIND_ARRAY) return v;
    jv r = jv_array_length(jv_copy(v)) > 0 ? jv_array_get(jv_copy(v), 0) : jv_null();
    jv_free(v);
    return r;
}

int sd_train_state_check_options(const char *dir, const char *saved_json, const char *current_json,
                                 const char *const *keys, size_t nkeys)
{
    jv a, b;
    int rc = sd_json_parse(saved_json ? saved_json : "{}", saved_json ? strlen(saved_json) : 2, &a);
    if (rc) return sd_err_prefix(SD_EFORMAT, "%s: options snapshot", dir);
    rc = sd_json_parse(current_json ? current_json : "{}", current_json ? strlen(current_json) : 2, &b);
    if (rc) { jv_free(a); return sd_err_prefix(SD_EINVAL, "options"); }
    for (size_t i = 0; i < nkeys && !rc; i++) {
        jv x = effective(keys[i], get(a, keys[i])), y = effective(keys[i], get(b, keys[i]));
        int xa = jv_is_valid(x) ? jv_get_kind(x) != JV_KIND_NULL : 0;
        int ya = jv_is_valid(y) ? jv_get_kind(y) != JV_KIND_NULL : 0;
        int same = (!xa && !ya) || (xa && ya && jv_equal(jv_copy(x), jv_copy(y)));
        if (!same) {
            jv xs = xa ? jv_dump_string(jv_copy(x), 0) : jv_string("(unset)");
            jv ys = ya ? jv_dump_string(jv_copy(y), 0) : jv_string("(unset)");
            rc = sd_err(SD_EINVAL, "cannot resume from %s: it was saved with %s=%s, this run has %s=%s", dir,
                        keys[i], jv_string_value(xs), keys[i], jv_string_value(ys));
            jv_free(xs);
            jv_free(ys);
        }
        jv_free(x);
        jv_free(y);
    }
    jv_free(a);
    jv_free(b);
    return rc;
}

/* ---- names and retention ------------------------------------------------------------------------ */

int sd_save_name(char *out, size_t n, sd_save_kind kind, const char *output_name, int64_t no, const char *ext)
{
    static const char *const defaults[3] = { "epoch", "at", "last" };
    const char *name = output_name ? output_name : defaults[kind];
    int k;
    if (ext) {
        if (kind == SD_SAVE_EPOCH) k = snprintf(out, n, "%s-%06lld%s", name, (long long)no, ext);
        else if (kind == SD_SAVE_STEP) k = snprintf(out, n, "%s-step%08lld%s", name, (long long)no, ext);
        else k = snprintf(out, n, "%s%s", name, ext);
    } else {
        if (kind == SD_SAVE_EPOCH) k = snprintf(out, n, "%s-%06lld-state", name, (long long)no);
        else if (kind == SD_SAVE_STEP) k = snprintf(out, n, "%s-step%08lld-state", name, (long long)no);
        else k = snprintf(out, n, "%s-state", name);
    }
    return k >= 0 && (size_t)k < n ? SD_OK : sd_err(SD_ERANGE, "output name too long");
}

int sd_should_save_epoch(int64_t epoch1, int every, int64_t num_epochs)
{
    return every > 0 && epoch1 % every == 0 && epoch1 < num_epochs;
}

int sd_should_save_step(int64_t global_step, int every)
{
    return every > 0 && global_step > 0 && global_step % every == 0;
}

int64_t sd_remove_epoch_no(int64_t epoch1, int every, int last_n, int state)
{
    (void)state;
    if (last_n <= 0 || every <= 0) return -1;
    int64_t r = epoch1 - (int64_t)every * last_n;
    return r >= 0 ? r : -1;
}

int64_t sd_remove_step_no(int64_t step, int every, int last_n, int state)
{
    if (last_n <= 0 || every <= 0) return -1;
    int64_t r = step - last_n - 1;
    int64_t m = ((r % every) + every) % every;   /* Python's floor modulo */
    r -= m;
    if (state) return r > 0 ? r : -1;
    return r >= 0 ? r : -1;
}

int sd_prune_after_save(const char *output_dir, const char *output_name, sd_save_kind kind, int64_t no,
                        int every, int last_n, int last_n_state, const char *ext, int64_t *removed)
{
    int state = ext == NULL;
    int keep = state && last_n_state > 0 ? last_n_state : last_n;
    int64_t r = kind == SD_SAVE_EPOCH ? sd_remove_epoch_no(no, every, keep, state)
              : kind == SD_SAVE_STEP ? sd_remove_step_no(no, every, keep, state) : -1;
    if (removed) *removed = r;
    if (r < 0) return SD_OK;
    char name[512];
    int rc = sd_save_name(name, sizeof name, kind, output_name, r, ext);
    if (rc) return rc;
    char *path = path_join(output_dir, name);
    if (!path) return sd_err(SD_ENOMEM, "out of memory");
    rc = sd_remove_tree(path);
    free(path);
    return rc;
}
