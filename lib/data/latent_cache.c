/* Latent cache keys and validity rules (see latent_cache.h). */
#include "data/latent_cache.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/hash.h"
#include "io/resample.h"

/* ---- canonical text ---------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 512;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A double as the project's JSON writer spells it: integers below 1e17 as integers, others with
 * the fewest of 15..17 significant digits that read back to the same value. */
static void fmt_num(double v, char *buf, size_t n)
{
    if (v == floor(v) && fabs(v) < 1e17) {
        if (v == 0 && signbit(v))
            snprintf(buf, n, "-0");
        else
            snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
}

/* The fields of the key, each as ,"name":value (the first without the comma). */
enum { F_VAE, F_SOURCE, F_BUCKET, F_RESIZED, F_CROP, F_INTERP, F_FLIP, F_ALPHA, F_DTYPE, F_MODE, F_SEED, F_N };
static const char *const field_name[F_N] = {"vae_sha256", "source_sha256", "bucket", "resized", "crop_ltrb",
                                            "interpolation", "flip", "alpha_mask", "dtype", "latent_mode", "seed"};
static const char *const field_reason[F_N] = {"the VAE changed", "the source image changed", "the bucket differs",
                                              "the resize differs", "the crop differs", "the interpolation differs",
                                              "flip_aug differs", "alpha_mask differs", "the dtype differs",
                                              "the latent mode differs", "the seed differs"};

/* Value text of field f (compact JSON), into buf. 0 when the field is not written (seed in mean mode). */
static int field_value(const sd_latent_key *k, int f, char *buf, size_t n)
{
    char a[40], b[40], c[40], d[40];
    switch (f) {
    case F_VAE: snprintf(buf, n, "\"%s\"", k->vae_sha256); break;
    case F_SOURCE: snprintf(buf, n, "\"%s\"", k->source_sha256); break;
    case F_BUCKET: snprintf(buf, n, "[%d,%d]", k->bucket_w, k->bucket_h); break;
    case F_RESIZED: snprintf(buf, n, "[%lld,%lld]", (long long)k->resized_w, (long long)k->resized_h); break;
    case F_CROP:
        fmt_num(k->crop_ltrb[0], a, sizeof a);
        fmt_num(k->crop_ltrb[1], b, sizeof b);
        fmt_num(k->crop_ltrb[2], c, sizeof c);
        fmt_num(k->crop_ltrb[3], d, sizeof d);
        snprintf(buf, n, "[%s,%s,%s,%s]", a, b, c, d);
        break;
    case F_INTERP: {
        const char *nm = k->filter < 0 ? "auto" : sd_resample_filter_name(k->filter);
        snprintf(buf, n, "\"%s\"", nm ? nm : "unknown");
        break;
    }
    case F_FLIP: snprintf(buf, n, "%s", k->flip ? "true" : "false"); break;
    case F_ALPHA: snprintf(buf, n, "%s", k->alpha_mask ? "true" : "false"); break;
    case F_DTYPE: snprintf(buf, n, "\"%s\"", k->half ? "float16" : "float32"); break;
    case F_MODE: snprintf(buf, n, "\"%s\"", k->mean ? "mean" : "sample"); break;
    case F_SEED:
        if (k->mean) return 0;
        snprintf(buf, n, "%llu", (unsigned long long)k->seed);
        break;
    default: return 0;
    }
    return 1;
}

static void put_fields(sbuf *b, const sd_latent_key *k)
{
    char v[256];
    for (int f = 0; f < F_N; f++) {
        if (!field_value(k, f, v, sizeof v)) continue;
        sb_fmt(b, ",\"%s\":", field_name[f]);
        sb_str(b, v);
    }
}

int sd_latent_key_meta(const sd_latent_key *k, const char *tool, const char *version, char **out)
{
    sbuf b = {0};
    sb_fmt(&b, "{\"format\":%d", SD_LATENT_CACHE_FORMAT);
    /* tool and version are ours (no characters that need escaping) */
    sb_fmt(&b, ",\"tool\":\"%s\",\"version\":\"%s\"", tool ? tool : "", version ? version : "");
    put_fields(&b, k);
    sb_str(&b, ",\"scaled\":false}");
    if (b.oom) {
        free(b.p);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    *out = b.p;
    return SD_OK;
}

void sd_latent_key_hash(const sd_latent_key *k, char hex[65])
{
    sbuf b = {0};
    sb_fmt(&b, "{\"format\":%d", SD_LATENT_CACHE_FORMAT);
    put_fields(&b, k);
    sb_str(&b, "}");
    uint8_t d[32];
    sd_sha256(b.p ? b.p : "", b.p ? b.n : 0, d);
    sd_hex(d, 32, hex);
    free(b.p);
}

int sd_latent_key_path(char *out, size_t cap, const char *dir, const sd_latent_key *k)
{
    char hex[65];
    sd_latent_key_hash(k, hex);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    int n = snprintf(out, cap, "%.*s/%.2s/%s.npz", (int)dl, dir, hex, hex);
    if (n < 0 || (size_t)n >= cap) return sd_err(SD_ERANGE, "%s: output path too long", dir);
    return n;
}

/* ---- reading sd_meta.json without libjq ---------------------------------------------------------- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* End of the string starting at the quote p (pointer after the closing quote), or NULL. */
static const char *skip_string(const char *p)
{
    for (p++; *p; p++) {
        if (*p == '\\') {
            if (!*++p) return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* End of the value starting at p, or NULL. */
static const char *skip_value(const char *p)
{
    if (*p == '"') return skip_string(p);
    int depth = 0;
    for (; *p; p++) {
        if (*p == '"') {
            p = skip_string(p);
            if (!p) return NULL;
            p--;
        } else if (*p == '[' || *p == '{') {
            depth++;
        } else if (*p == ']' || *p == '}') {
            if (depth == 0) return p;
            if (--depth == 0) return p + 1;
        } else if (*p == ',' && depth == 0) {
            return p;
        }
    }
    return depth == 0 ? p : NULL;
}

/* The value of top-level key `key` in the object text `json`, compacted (whitespace outside
 * strings removed) into buf. 1 found, 0 absent or malformed / too long. */
static int meta_get(const char *json, const char *key, char *buf, size_t cap)
{
    const char *p = skip_ws(json);
    if (*p++ != '{') return 0;
    size_t kl = strlen(key);
    for (;;) {
        p = skip_ws(p);
        if (*p == '}') return 0;
        if (*p != '"') return 0;
        const char *ks = p + 1, *ke = skip_string(p);
        if (!ke) return 0;
        int match = (size_t)(ke - 1 - ks) == kl && !memcmp(ks, key, kl);
        p = skip_ws(ke);
        if (*p++ != ':') return 0;
        p = skip_ws(p);
        const char *ve = skip_value(p);
        if (!ve || ve == p) return 0;
        if (match) {
            size_t n = 0;
            for (const char *q = p; q < ve; q++) {
                if (*q == '"') {
                    const char *e = skip_string(q);
                    if (!e || n + (size_t)(e - q) >= cap) return 0;
                    memcpy(buf + n, q, (size_t)(e - q));
                    n += (size_t)(e - q);
                    q = e - 1;
                } else if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
                    if (n + 1 >= cap) return 0;
                    buf[n++] = *q;
                }
            }
            buf[n] = 0;
            return 1;
        }
        p = skip_ws(ve);
        if (*p == ',') {
            p++;
            continue;
        }
        return 0;
    }
}

static int stale(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int stale(char *why, size_t cap, const char *fmt, ...)
{
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return 0;
}

int sd_latent_cache_valid(const sd_latent_file *lf, const sd_latent_key *k, int channels, int factor,
                          char *why, size_t whycap)
{
    if (!lf->meta_json) return stale(why, whycap, "no sd_meta.json (not written by sd-encode-latents)");
    char got[256], want[256];
    if (!meta_get(lf->meta_json, "format", got, sizeof got)) return stale(why, whycap, "sd_meta.json has no format");
    snprintf(want, sizeof want, "%d", SD_LATENT_CACHE_FORMAT);
    if (strcmp(got, want)) return stale(why, whycap, "format %s is not %s", got, want);
    for (int f = 0; f < F_N; f++) {
        if (!field_value(k, f, want, sizeof want)) continue;
        if (!meta_get(lf->meta_json, field_name[f], got, sizeof got))
            return stale(why, whycap, "sd_meta.json has no %s", field_name[f]);
        if (strcmp(got, want)) return stale(why, whycap, "%s", field_reason[f]);
    }
    if (factor < 1 || k->bucket_w % factor || k->bucket_h % factor)
        return stale(why, whycap, "bucket %dx%d is not a multiple of the VAE factor %d", k->bucket_w, k->bucket_h, factor);
    if (lf->c != channels || lf->h != k->bucket_h / factor || lf->w != k->bucket_w / factor)
        return stale(why, whycap, "latents are [%d,%d,%d], expected [%d,%d,%d]", lf->c, lf->h, lf->w, channels,
                     k->bucket_h / factor, k->bucket_w / factor);
    if (!!lf->latents_flipped != !!k->flip) return stale(why, whycap, "latents_flipped %s", k->flip ? "missing" : "unexpected");
    if (!!lf->alpha_mask != !!k->alpha_mask) return stale(why, whycap, "alpha_mask %s", k->alpha_mask ? "missing" : "unexpected");
    if (lf->alpha_mask && (lf->mask_w != k->bucket_w || lf->mask_h != k->bucket_h))
        return stale(why, whycap, "alpha_mask is %dx%d, not the bucket's", lf->mask_w, lf->mask_h);
    if (!!lf->half != !!k->half) return stale(why, whycap, "stored as %s", lf->half ? "float16" : "float32");
    return 1;
}

int sd_latent_cache_check_file(const char *path, const sd_latent_key *k, int channels, int factor, char *why,
                               size_t whycap)
{
    sd_latent_file lf;
    int rc = sd_latent_read(path, NULL, &lf);
    if (rc == SD_ENOTFOUND) return stale(why, whycap, "absent");
    if (rc < 0) return stale(why, whycap, "unreadable: %s", sd_errmsg());
    int ok = sd_latent_cache_valid(&lf, k, channels, factor, why, whycap);
    sd_latent_free(&lf);
    return ok;
}

/* ---- VAE hash ------------------------------------------------------------------------------------- */

typedef struct { const char *name; const sd_param *p; uint8_t d[32]; } hitem;

static int cmp_hitem(const void *x, const void *y)
{
    return strcmp(((const hitem *)x)->name, ((const hitem *)y)->name);
}

int sd_latent_vae_hash(const sd_params *r, const char *prefix, char hex[65])
{
    size_t pl = prefix && *prefix ? strlen(prefix) : 0;
    size_t n = sd_params_count(r), m = 0;
    hitem *it = calloc(n ? n : 1, sizeof *it);
    if (!it) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const sd_param *p = sd_params_at(r, i);
        const char *k = p->key;
        if (pl) {
            if (strncmp(k, prefix, pl) || k[pl] != '.') continue;
            k += pl + 1;
        }
        if (strncmp(k, "encoder.", 8) && strncmp(k, "quant_conv.", 11)) continue;
        if (p->value.device != SD_DEV_CPU || p->value.dtype != SD_F32 || !p->value.data) {
            free(it);
            return sd_err(SD_EUNSUPPORTED, "VAE hash: parameter '%s' is not f32 host memory", p->key);
        }
        it[m].name = k;
        it[m].p = p;
        m++;
    }
    if (!m) {
        free(it);
        return sd_err(SD_EINVAL, "VAE hash: no encoder parameters under '%s'", prefix ? prefix : "");
    }
    qsort(it, m, sizeof *it, cmp_hitem);
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < (long)m; i++)
        sd_sha256(it[i].p->value.data, sd_tensor_nbytes(&it[i].p->value), it[i].d);
    sd_sha256_ctx s;
    sd_sha256_init(&s);
    for (size_t i = 0; i < m; i++) {
        const sd_tensor *t = &it[i].p->value;
        char shape[160];
        size_t o = 0;
        shape[o++] = '[';
        for (int a = 0; a < t->ndim && o < sizeof shape - 24; a++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", a ? "," : "", (long long)t->shape[a]);
        shape[o++] = ']';
        shape[o] = 0;
        sd_sha256_update(&s, it[i].name, strlen(it[i].name) + 1);
        sd_sha256_update(&s, shape, o + 1);
        sd_sha256_update(&s, it[i].d, 32);
    }
    uint8_t d[32];
    sd_sha256_final(&s, d);
    sd_hex(d, 32, hex);
    free(it);
    return SD_OK;
}

void sd_latent_noise_ids(const sd_latent_key *k, int flipped, uint32_t *step, uint32_t *sample)
{
    uint32_t w[2] = {0, 0};
    for (int i = 0; i < 16 && k->source_sha256[i]; i++) {
        char c = k->source_sha256[i];
        uint32_t v = (uint32_t)(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0);
        w[i / 8] = (w[i / 8] << 4) | v;
    }
    *step = w[0];
    *sample = (w[1] & ~1u) | (flipped ? 1u : 0u);
}
