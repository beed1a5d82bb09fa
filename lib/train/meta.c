/* Training metadata (see meta.h). */
#include "train/meta.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/error.h"
#include "base/fileio.h"
#include "train/pyfmt.h"

/* ---- sd_kv ------------------------------------------------------------------------------------ */

void sd_kv_init(sd_kv *m) { memset(m, 0, sizeof *m); }

void sd_kv_free(sd_kv *m)
{
    for (size_t i = 0; i < m->n; i++) { free(m->keys[i]); free(m->vals[i]); }
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

const char *sd_kv_get(const sd_kv *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) return m->vals[i];
    return NULL;
}

int sd_kv_set(sd_kv *m, const char *key, const char *val)
{
    char *v = strdup(val);
    if (!v) return sd_err(SD_ENOMEM, "out of memory");
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) { free(m->vals[i]); m->vals[i] = v; return SD_OK; }
    if (m->n == m->cap) {
        size_t nc = m->cap ? 2 * m->cap : 32;
        char **k = realloc(m->keys, nc * sizeof *k);
        if (k) m->keys = k;
        char **vv = realloc(m->vals, nc * sizeof *vv);
        if (vv) m->vals = vv;
        if (!k || !vv) { free(v); return sd_err(SD_ENOMEM, "out of memory"); }
        m->cap = nc;
    }
    m->keys[m->n] = strdup(key);
    if (!m->keys[m->n]) { free(v); return sd_err(SD_ENOMEM, "out of memory"); }
    m->vals[m->n++] = v;
    return SD_OK;
}

int sd_kv_setf(sd_kv *m, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int k = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (k < 0) return sd_err(SD_ENOMEM, "out of memory");
    int rc = sd_kv_set(m, key, s);
    free(s);
    return rc;
}

int sd_kv_copy(sd_kv *dst, const sd_kv *src)
{
    sd_kv_init(dst);
    for (size_t i = 0; i < src->n; i++) {
        int rc = sd_kv_set(dst, src->keys[i], src->vals[i]);
        if (rc) { sd_kv_free(dst); return rc; }
    }
    return SD_OK;
}

/* ---- Python values -------------------------------------------------------------------------- */

char *sd_pyv_str_of(const sd_pyv *v, char *out, size_t n)
{
    switch (v->kind) {
    case SD_PYV_BOOL: snprintf(out, n, "%s", sd_py_bool((int)v->i)); break;
    case SD_PYV_INT: snprintf(out, n, "%lld", (long long)v->i); break;
    case SD_PYV_FLOAT: sd_py_float(v->f, out, n); break;
    case SD_PYV_STR: snprintf(out, n, "%s", v->s); break;
    default: snprintf(out, n, "None"); break;
    }
    return out;
}

/* ---- ss_* ------------------------------------------------------------------------------------- */

static const char *const ss_names[SD_SS_COUNT] = {
    "ss_session_id", "ss_training_started_at", "ss_output_name", "ss_learning_rate",
    "ss_text_encoder_lr", "ss_unet_lr", "ss_num_train_images", "ss_num_validation_images",
    "ss_num_reg_images", "ss_num_batches_per_epoch", "ss_num_epochs", "ss_gradient_checkpointing",
    "ss_gradient_accumulation_steps", "ss_max_train_steps", "ss_lr_warmup_steps", "ss_lr_scheduler",
    "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_dropout",
    "ss_mixed_precision", "ss_full_fp16", "ss_v2", "ss_base_model_version", "ss_clip_skip",
    "ss_max_token_length", "ss_cache_latents", "ss_seed", "ss_lowram", "ss_noise_offset",
    "ss_multires_noise_iterations", "ss_multires_noise_discount", "ss_adaptive_noise_scale",
    "ss_zero_terminal_snr", "ss_training_comment", "ss_sd_scripts_commit_hash", "ss_optimizer",
    "ss_max_grad_norm", "ss_caption_dropout_rate", "ss_caption_dropout_every_n_epochs",
    "ss_caption_tag_dropout_rate", "ss_face_crop_aug_range", "ss_prior_loss_weight",
    "ss_min_snr_gamma", "ss_scale_weight_norms", "ss_ip_noise_gamma", "ss_debiased_estimation",
    "ss_noise_offset_random_strength", "ss_ip_noise_gamma_random_strength", "ss_loss_type",
    "ss_huber_schedule", "ss_huber_scale", "ss_huber_c", "ss_fp8_base", "ss_fp8_base_unet",
    "ss_validation_seed", "ss_validation_split", "ss_max_validation_steps",
    "ss_validate_every_n_epochs", "ss_validate_every_n_steps", "ss_resize_interpolation",
    "ss_datasets", "ss_tag_frequency", "ss_dataset_dirs",
    "ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_color_aug",
    "ss_flip_aug", "ss_random_crop", "ss_shuffle_caption", "ss_enable_bucket",
    "ss_bucket_no_upscale", "ss_min_bucket_reso", "ss_max_bucket_reso", "ss_keep_tokens",
    "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency", "ss_bucket_info",
    "ss_network_args", "ss_sd_model_hash", "ss_new_sd_model_hash", "ss_sd_model_name",
    "ss_vae_hash", "ss_new_vae_hash", "ss_vae_name",
};

const char *sd_ss_key_name(sd_ss_key k)
{
    return (unsigned)k < SD_SS_COUNT ? ss_names[k] : NULL;
}

void sd_ss_facts_init(sd_ss_facts *f)
{
    memset(f, 0, sizeof *f);
    f->v[SD_SS_SD_SCRIPTS_COMMIT_HASH] = sd_pyv_str("(unknown)");
}

static int put(sd_kv *m, const sd_ss_facts *f, sd_ss_key k)
{
    char buf[128];
    const sd_pyv *v = &f->v[k];
    if (v->kind == SD_PYV_STR) return sd_kv_set(m, ss_names[k], v->s);
    return sd_kv_set(m, ss_names[k], sd_pyv_str_of(v, buf, sizeof buf));
}

int sd_ss_metadata(const sd_ss_facts *f, int no_metadata, sd_kv *out)
{
    int rc = SD_OK;
    if (no_metadata) {
        static const sd_ss_key min[] = { SD_SS_V2, SD_SS_BASE_MODEL_VERSION, SD_SS_NETWORK_MODULE,
                                         SD_SS_NETWORK_DIM, SD_SS_NETWORK_ALPHA, SD_SS_NETWORK_ARGS };
        for (size_t i = 0; i < sizeof min / sizeof *min && !rc; i++)
            if (min[i] != SD_SS_NETWORK_ARGS || f->v[min[i]].kind != SD_PYV_UNSET) rc = put(out, f, min[i]);
        return rc;
    }
    for (int k = 0; k < SD_SS_ALWAYS_END && !rc; k++) rc = put(out, f, (sd_ss_key)k);
    if (f->use_dataset_config) {
        for (int k = SD_SS_DATASETS; k <= SD_SS_DATASET_DIRS_CFG && !rc; k++) rc = put(out, f, (sd_ss_key)k);
    } else {
        for (int k = SD_SS_BATCH_SIZE_PER_DEVICE; k <= SD_SS_BUCKET_INFO && !rc; k++) rc = put(out, f, (sd_ss_key)k);
    }
    for (int k = SD_SS_NETWORK_ARGS; k < SD_SS_COUNT && !rc; k++)
        if (f->v[k].kind != SD_PYV_UNSET) rc = put(out, f, (sd_ss_key)k);
    return rc;
}

int sd_ss_metadata_at_save(sd_kv *m, double finished_at, int64_t steps, int64_t epoch, int no_metadata)
{
    if (no_metadata) return SD_OK;
    char b[48];
    int rc = sd_kv_set(m, "ss_training_finished_at", sd_py_float(finished_at, b, sizeof b));
    if (!rc) rc = sd_kv_setf(m, "ss_steps", "%lld", (long long)steps);
    if (!rc) rc = sd_kv_setf(m, "ss_epoch", "%lld", (long long)epoch);
    return rc;
}

/* ---- ModelSpec ------------------------------------------------------------------------------ */

static char *data_url(const char *path)
{
    char *data;
    size_t n;
    if (sd_read_file(path, 64u << 20, &data, &n)) return NULL;
    const char *ext = strrchr(path, '.');
    const char *mime = "application/octet-stream";
    if (ext) {
        if (!strcasecmp(ext, ".png")) mime = "image/png";
        else if (!strcasecmp(ext, ".jpg") || !strcasecmp(ext, ".jpeg")) mime = "image/jpeg";
        else if (!strcasecmp(ext, ".webp")) mime = "image/webp";
        else if (!strcasecmp(ext, ".gif")) mime = "image/gif";
        else if (!strcasecmp(ext, ".bmp")) mime = "image/bmp";
    }
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t L = strlen(mime) + 14 + 4 * ((n + 2) / 3) + 1;
    char *out = malloc(L);
    if (!out) { free(data); return NULL; }
    size_t k = (size_t)sprintf(out, "data:%s;base64,", mime);
    const uint8_t *p = (const uint8_t *)data;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        out[k++] = b64[v >> 18 & 63];
        out[k++] = b64[v >> 12 & 63];
        out[k++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[k++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[k] = 0;
    free(data);
    return out;
}

int sd_modelspec_metadata(const sd_modelspec_args *a, sd_kv *out)
{
    char arch[96], title[160], reso[48], date[40], b[48];
    const char *base = a->sdxl ? "stable-diffusion-xl-v1-base"
                     : a->v2 ? (a->v_parameterization ? "stable-diffusion-v2-768-v" : "stable-diffusion-v2-512")
                             : "stable-diffusion-v1";
    snprintf(arch, sizeof arch, "%s%s", base, a->lora ? "/lora" : a->textual_inversion ? "/textual-inversion" : "");
    const char *impl = (a->lora && a->sdxl) || a->textual_inversion || (!a->lora && !a->textual_inversion)
                           ? "https://github.com/Stability-AI/generative-models" : "diffusers";
    if (a->title) snprintf(title, sizeof title, "%s", a->title);
    else snprintf(title, sizeof title, "%s@%s", a->lora ? "LoRA" : a->textual_inversion ? "TextualInversion" : "Checkpoint",
                  sd_py_float(a->timestamp, b, sizeof b));
    int w = a->reso_w, h = a->reso_h;
    if (w <= 0) {
        w = h = a->sdxl ? 1024 : (a->v2 && a->v_parameterization) ? 768 : 512;
    } else if (h <= 0) {
        h = w;
    }
    snprintf(reso, sizeof reso, "%dx%d", w, h);
    time_t t = (time_t)(long long)a->timestamp;
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    int rc = sd_kv_set(out, "modelspec.architecture", arch);
    if (!rc) rc = sd_kv_set(out, "modelspec.implementation", impl);
    if (!rc) rc = sd_kv_set(out, "modelspec.title", title);
    if (!rc) rc = sd_kv_set(out, "modelspec.resolution", reso);
    if (!rc) rc = sd_kv_set(out, "modelspec.sai_model_spec", "1.0.1");
    if (!rc && a->description) rc = sd_kv_set(out, "modelspec.description", a->description);
    if (!rc && a->author) rc = sd_kv_set(out, "modelspec.author", a->author);
    if (!rc) rc = sd_kv_set(out, "modelspec.date", date);
    if (!rc && a->license) rc = sd_kv_set(out, "modelspec.license", a->license);
    if (!rc && a->tags) rc = sd_kv_set(out, "modelspec.tags", a->tags);
    if (!rc) rc = sd_kv_set(out, "modelspec.prediction_type", a->v_parameterization ? "v" : "epsilon");
    if (!rc && a->has_timesteps) rc = sd_kv_setf(out, "modelspec.timestep_range", "%d,%d", a->min_timestep, a->max_timestep);
    if (!rc && a->clip_skip >= 0) rc = sd_kv_setf(out, "modelspec.encoder_layer", "%d", a->clip_skip);
    /* additional fields: the --metadata_* extras in dir(args) (alphabetical) order */
    if (!rc && a->is_negative_embedding) rc = sd_kv_set(out, "modelspec.is_negative_embedding", a->is_negative_embedding);
    if (!rc && a->merged_from) rc = sd_kv_set(out, "modelspec.merged_from", a->merged_from);
    if (!rc && a->preprocessor) rc = sd_kv_set(out, "modelspec.preprocessor", a->preprocessor);
    if (!rc && a->thumbnail) {   /* "" stays "" (the reference converts only a true value) */
        if (!*a->thumbnail || !strncmp(a->thumbnail, "data:", 5)) {
            rc = sd_kv_set(out, "modelspec.thumbnail", a->thumbnail);
        } else {
            char *u = data_url(a->thumbnail);
            if (u) rc = sd_kv_set(out, "modelspec.thumbnail", u);
            free(u);
            sd_err_clear();
        }
    }
    if (!rc && a->trigger_phrase) rc = sd_kv_set(out, "modelspec.trigger_phrase", a->trigger_phrase);
    if (!rc && a->usage_hint) rc = sd_kv_set(out, "modelspec.usage_hint", a->usage_hint);
    if (!rc) rc = sd_kv_set(out, "modelspec.implementation_version",
                            a->implementation_version ? a->implementation_version : "sd-scripts/unknown");
    return rc;
}

/* ---- json.dumps ------------------------------------------------------------------------------ */

int sd_py_json_string(const char *s, char *buf, size_t cap, size_t *len)
{
    size_t k = *len;
#define PUT(c) do { if (k + 1 >= cap) return sd_err(SD_ERANGE, "JSON string too long"); buf[k++] = (char)(c); } while (0)
    PUT('"');
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        int extra;
        if (*p < 0x80) { cp = *p; extra = 0; }
        else if ((*p & 0xe0) == 0xc0) { cp = *p & 0x1f; extra = 1; }
        else if ((*p & 0xf0) == 0xe0) { cp = *p & 0x0f; extra = 2; }
        else if ((*p & 0xf8) == 0xf0) { cp = *p & 0x07; extra = 3; }
        else return sd_err(SD_EINVAL, "invalid UTF-8 in a metadata string");
        p++;
        for (int i = 0; i < extra; i++, p++) {
            if ((*p & 0xc0) != 0x80) return sd_err(SD_EINVAL, "invalid UTF-8 in a metadata string");
            cp = cp << 6 | (*p & 0x3f);
        }
        char esc[16];
        const char *e = NULL;
        switch (cp) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default:
            if (cp < 0x20 || cp >= 0x7f) {
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
                } else {
                    snprintf(esc, sizeof esc, "\\u%04x", cp);
                }
                e = esc;
            }
        }
        if (e) { for (; *e; e++) PUT(*e); }
        else PUT(cp);
    }
    PUT('"');
#undef PUT
    buf[k] = 0;
    *len = k;
    return SD_OK;
}

int sd_py_json_str_dict(const char *const *keys, const char *const *vals, size_t n, char **out)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) cap += 12 * (strlen(keys[i]) + strlen(vals[i])) + 8;
    char *buf = malloc(cap);
    if (!buf) return sd_err(SD_ENOMEM, "out of memory");
    size_t k = 0;
    buf[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) { buf[k++] = ','; buf[k++] = ' '; }
        int rc = sd_py_json_string(keys[i], buf, cap, &k);
        if (!rc) { buf[k++] = ':'; buf[k++] = ' '; rc = sd_py_json_string(vals[i], buf, cap, &k); }
        if (rc) { free(buf); return rc; }
    }
    buf[k++] = '}';
    buf[k] = 0;
    *out = buf;
    return SD_OK;
}

/* ---- json.dumps of a jv ------------------------------------------------------------------------ */

typedef struct jbuf { char *b; size_t n, cap; int err; } jbuf;

static void jb_put(jbuf *j, const char *s, size_t n)
{
    if (j->err) return;
    if (j->n + n + 1 > j->cap) {
        size_t nc = j->cap ? j->cap : 256;
        while (nc < j->n + n + 1) nc *= 2;
        char *b = realloc(j->b, nc);
        if (!b) { j->err = SD_ENOMEM; return; }
        j->b = b;
        j->cap = nc;
    }
    memcpy(j->b + j->n, s, n);
    j->n += n;
    j->b[j->n] = 0;
}
static void jb_str(jbuf *j, const char *s) { jb_put(j, s, strlen(s)); }

static int is_float_key(const char *const *fk, const char *k)
{
    for (; fk && *fk; fk++)
        if (!strcmp(*fk, k)) return 1;
    return 0;
}

static void dump_rec(jbuf *j, jv v, const char *const *fk, int as_float, int depth)
{
    if (j->err) return;
    if (depth > 256) { j->err = SD_ERANGE; return; }
    switch (jv_get_kind(v)) {
    case JV_KIND_NULL: jb_str(j, "null"); break;
    case JV_KIND_TRUE: jb_str(j, "true"); break;
    case JV_KIND_FALSE: jb_str(j, "false"); break;
    case JV_KIND_NUMBER: {
        double d = jv_number_value(v);
        char b[48];
        if (isnan(d)) jb_str(j, "NaN");
        else if (isinf(d)) jb_str(j, d < 0 ? "-Infinity" : "Infinity");
        else if (!as_float && d == floor(d) && fabs(d) <= 9007199254740992.0) {
            snprintf(b, sizeof b, "%.0f", d);
            jb_str(j, !strcmp(b, "-0") ? "0" : b);
        } else {
            jb_str(j, sd_py_float(d, b, sizeof b));
        }
        break;
    }
    case JV_KIND_STRING: {
        const char *s = jv_string_value(v);
        size_t cap = 12 * strlen(s) + 3, len = 0;
        char *b = malloc(cap);
        if (!b) { j->err = SD_ENOMEM; break; }
        int rc = sd_py_json_string(s, b, cap, &len);
        if (rc) j->err = rc;
        else jb_put(j, b, len);
        free(b);
        break;
    }
    case JV_KIND_ARRAY: {
        jb_str(j, "[");
        int n = jv_array_length(jv_copy(v));
        for (int i = 0; i < n; i++) {
            if (i) jb_str(j, ", ");
            jv e = jv_array_get(jv_copy(v), i);
            dump_rec(j, e, fk, as_float, depth + 1);
            jv_free(e);
        }
        jb_str(j, "]");
        break;
    }
    case JV_KIND_OBJECT: {
        jb_str(j, "{");
        int first = 1;
        jv obj = jv_copy(v);
        jv_object_foreach(obj, key, val) {
            if (!first) jb_str(j, ", ");
            first = 0;
            const char *k = jv_string_value(key);
            size_t cap = 12 * strlen(k) + 3, len = 0;
            char *b = malloc(cap);
            if (!b) j->err = SD_ENOMEM;
            else {
                int rc = sd_py_json_string(k, b, cap, &len);
                if (rc) j->err = rc;
                else jb_put(j, b, len);
                free(b);
            }
            jb_str(j, ": ");
            dump_rec(j, val, fk, is_float_key(fk, k), depth + 1);
            jv_free(key);
            jv_free(val);
        }
        jv_free(obj);
        jb_str(j, "}");
        break;
    }
    default:
        j->err = SD_EINVAL;
    }
}

int sd_py_json_dump(jv v, const char *const *float_keys, char **out)
{
    jbuf j = { 0 };
    dump_rec(&j, v, float_keys, 0, 0);
    if (j.err) {
        free(j.b);
        *out = NULL;
        return j.err == SD_ENOMEM ? sd_err(SD_ENOMEM, "out of memory")
                                  : sd_err(j.err, "json.dumps: value not representable (%s)", sd_errmsg());
    }
    if (!j.b) { j.b = strdup(""); if (!j.b) return sd_err(SD_ENOMEM, "out of memory"); }
    *out = j.b;
    return SD_OK;
}
