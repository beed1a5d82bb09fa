/* bitsandbytes' AdamW8bit (see optim8bit.h for the semantics and the sources followed). */
#include "train/optim8bit.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "train/pyfmt.h"

/* ---- quantisation maps --------------------------------------------------------------------- */

/* torch.linspace(0.1, 1, k, dtype=float32) on the CPU: the scalar code of torch >= 2.1
 * (RangeFactoriesKernel.cpp linspace_kernel), evaluated in IEEE float without contraction:
 *     step = (end - start) / (k - 1);  x[i] = i < k/2 ? start + step·i : end - step·(k - 1 - i). */
static void linspace01(int k, float *out)
{
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / (float)(k - 1);
    int half = k / 2;
    for (int i = 0; i < k; i++) {
        if (i < half) {
            float t = step * (float)i;
            out[i] = start + t;
        } else {
            float t = step * (float)(k - 1 - i);
            out[i] = end - t;
        }
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void sd_bnb_dynamic_map(int is_signed, float out[SD_BNB_QMAP_SIZE])
{
    /* create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): non_sign_bits = 7, no
     * additional items; for i = 0..6, fraction_items = 2^i + 1 (signed) or 2^(i+1) + 1. The scale
     * 10 ** (i - 6) is a Python float that torch rounds to float before the multiply. */
    static const double scale[7] = { 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0 };
    float lin[130];
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int k = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        linspace01(k, lin);
        float sc = (float)scale[i];
        for (int j = 0; j + 1 < k; j++) {
            float mean = (lin[j] + lin[j + 1]) / 2.0f;
            out[n++] = sc * mean;
        }
        if (is_signed) {
            for (int j = 0; j + 1 < k; j++) {
                float mean = (lin[j] + lin[j + 1]) / 2.0f;
                out[n++] = -sc * mean;
            }
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    /* n == 256 for both maps (127·2 + 2 signed, 254 + 2 unsigned); values are distinct */
    qsort(out, (size_t)n, sizeof(float), cmp_float);
}

static sd_bnb_qmaps g_qmaps;
static pthread_once_t g_qmap_once = PTHREAD_ONCE_INIT;

static void qmap_init(void)
{
    sd_bnb_dynamic_map(1, g_qmaps.q1);
    sd_bnb_dynamic_map(0, g_qmaps.q2);
}

const float *sd_bnb_qmap_signed(void)
{
    pthread_once(&g_qmap_once, qmap_init);
    return g_qmaps.q1;
}

const float *sd_bnb_qmap_unsigned(void)
{
    pthread_once(&g_qmap_once, qmap_init);
    return g_qmaps.q2;
}

const sd_bnb_qmaps *sd_bnb_qmaps_get(void)
{
    pthread_once(&g_qmap_once, qmap_init);
    return &g_qmaps;
}

_Static_assert(SD_BNB_BLOCK == SD_BNB_BLOCKSIZE && SD_BNB_QMAP_SIZE == 256, "optim8_elem.h's block and maps");

/* kernels.cu quantize_2D<SIGNED>: the first probe is quadrants[1] = code[127], the next
 * quadrants[0|2] = code[63|191], then code[pivot]; the same as probing code[pivot] throughout. */
uint8_t sd_bnb_quantize(const float *code, int is_signed, float x)
{
    return sd_bnb_quantize_el(code, is_signed, x);
}

/* ---- constructor arguments ----------------------------------------------------------------- */

const char *const sd_adamw8bit_arg_names[] = {
    "lr", "betas", "eps", "weight_decay", "amsgrad", "optim_bits", "args", "min_8bit_size",
    "percentile_clipping", "block_wise", "is_paged", NULL,
};

int sd_adamw8bit_arg_known(const char *key)
{
    for (int i = 0; sd_adamw8bit_arg_names[i]; i++)
        if (!strcmp(key, sd_adamw8bit_arg_names[i])) return 1;
    return 0;
}

void sd_adamw8bit_config_default(sd_adamw8bit_config *c)
{
    memset(c, 0, sizeof *c);
    c->lr = SD_BNB_DEFAULT_LR;
    c->beta1 = SD_BNB_DEFAULT_BETA1;
    c->beta2 = SD_BNB_DEFAULT_BETA2;
    c->eps = SD_BNB_DEFAULT_EPS;
    c->weight_decay = SD_BNB_DEFAULT_WD;
    c->min_8bit_size = SD_BNB_MIN_8BIT_SIZE;
    c->amsgrad = 0;
    c->optim_bits = 32;
    c->percentile_clipping = 100;
    c->block_wise = 1;
    c->is_paged = 0;
}

static int py_is_number(const sd_py_value *v)
{
    return v->kind == SD_PY_INT || v->kind == SD_PY_FLOAT || v->kind == SD_PY_BOOL;
}

/* Python truthiness of a literal. */
static int py_truthy(const sd_py_value *v)
{
    switch (v->kind) {
    case SD_PY_NONE: return 0;
    case SD_PY_BOOL:
    case SD_PY_INT: return v->i != 0;
    case SD_PY_FLOAT: return v->f != 0.0;
    case SD_PY_STR: return v->s[0] != 0;
    case SD_PY_TUPLE:
    case SD_PY_LIST: return v->nitems != 0;
    }
    return 1;
}

/* bnb's string form of betas: s.replace("(", "").replace(")", "").strip().split(","), float()
 * of each part (Python's float() accepts surrounding whitespace). */
static int betas_from_string(sd_adamw8bit_config *c, const char *s)
{
    char buf[256];
    size_t n = 0;
    for (const char *q = s; *q && n + 1 < sizeof buf; q++)
        if (*q != '(' && *q != ')') buf[n++] = *q;
    buf[n] = 0;
    double b[3];
    int nb = 0;
    /* split(",") keeps empty parts; each must parse as a float */
    char *part = buf;
    for (;;) {
        char *comma = strchr(part, ',');
        if (comma) *comma = 0;
        char *end;
        while (*part == ' ' || *part == '\t') part++;
        double x = strtod(part, &end);
        while (*end == ' ' || *end == '\t') end++;
        if (end == part || *end) return sd_err(SD_EUSAGE, "AdamW8bit: could not convert string to float: '%s'", part);
        if (nb == 3) return sd_err(SD_EUSAGE, "AdamW8bit: betas '%s' has more than 3 values", s);
        b[nb++] = x;
        if (!comma) break;
        part = comma + 1;
    }
    if (nb < 2) return sd_err(SD_EUSAGE, "AdamW8bit: betas '%s' needs 2 values (tuple index out of range)", s);
    c->beta1 = b[0];
    c->beta2 = b[1];
    for (int i = 0; i < nb; i++)
        if (!(b[i] >= 0.0 && b[i] < 1.0)) {
            char f[40];
            return sd_err(SD_EUSAGE, "Invalid beta parameter at index %d: %s", i, sd_py_float(b[i], f, sizeof f));
        }
    return SD_OK;
}

int sd_adamw8bit_config_set(sd_adamw8bit_config *c, const char *key, const struct sd_py_value *v)
{
    if (!strcmp(key, "lr"))
        return sd_err(SD_EUSAGE, "bitsandbytes.optim.adamw.AdamW8bit() got multiple values for keyword "
                                 "argument 'lr'");
    if (!strcmp(key, "params"))
        return sd_err(SD_EUSAGE, "AdamW8bit.__init__() got multiple values for argument 'params'");
    if (!sd_adamw8bit_arg_known(key))
        return sd_err(SD_EUSAGE, "AdamW8bit.__init__() got an unexpected keyword argument '%s'", key);

    if (!strcmp(key, "betas")) {
        if (v->kind == SD_PY_STR) return betas_from_string(c, v->s);
        if (v->kind != SD_PY_TUPLE && v->kind != SD_PY_LIST)
            return sd_err(SD_EUSAGE, "AdamW8bit: betas must be a tuple of 2 numbers, got %s", v->repr);
        for (int i = 0; i < v->nitems; i++)
            if (v->item_kind[i] != SD_PY_INT && v->item_kind[i] != SD_PY_FLOAT && v->item_kind[i] != SD_PY_BOOL)
                return sd_err(SD_EUSAGE, "AdamW8bit: betas must be numbers, got %s", v->repr);
        if (v->nitems < 2 || v->nitems > 3)
            return sd_err(SD_EUSAGE, "AdamW8bit: betas must have 2 values (a third is AdEMAMix's), got %s", v->repr);
        for (int i = 0; i < v->nitems; i++)
            if (!(v->items[i] >= 0.0 && v->items[i] < 1.0)) {
                char f[40];
                return sd_err(SD_EUSAGE, "Invalid beta parameter at index %d: %s", i,
                              sd_py_float(v->items[i], f, sizeof f));
            }
        c->beta1 = v->items[0];
        c->beta2 = v->items[1];
        return SD_OK;
    }
    if (!strcmp(key, "args")) {
        if (v->kind != SD_PY_NONE)
            return sd_err(SD_EUNSUPPORTED, "AdamW8bit: args=%s is not supported (only None)", v->repr);
        return SD_OK;
    }
    if (!strcmp(key, "amsgrad")) { c->amsgrad = py_truthy(v); return SD_OK; }
    if (!strcmp(key, "block_wise")) { c->block_wise = py_truthy(v); return SD_OK; }
    if (!strcmp(key, "is_paged")) { c->is_paged = py_truthy(v); return SD_OK; }

    /* numbers */
    if (!py_is_number(v)) return sd_err(SD_EUSAGE, "AdamW8bit: %s must be a number, got %s", key, v->repr);
    double x = v->kind == SD_PY_FLOAT ? v->f : (double)v->i;
    if (!strcmp(key, "eps")) c->eps = x;
    else if (!strcmp(key, "weight_decay")) c->weight_decay = x;
    else if (!strcmp(key, "optim_bits")) c->optim_bits = (x == 32.0) ? 32 : (x == 8.0 ? 8 : 0);
    else if (!strcmp(key, "percentile_clipping")) c->percentile_clipping = x >= 100.0 ? 100 : (int)floor(x);
    else if (!strcmp(key, "min_8bit_size")) {
        double m = ceil(x);
        c->min_8bit_size = m > 9.0e18 ? INT64_MAX : (m < 0 ? 0 : (int64_t)m);
    }
    return SD_OK;
}

int sd_adamw8bit_config_check(const sd_adamw8bit_config *c)
{
    char f[40];
    if (c->amsgrad) return sd_err(SD_EUSAGE, "AdamW8bit does not support amsgrad=True");
    if (c->optim_bits != 32)
        return sd_err(SD_EUSAGE, "AdamW8bit only supports optim_bits=32 (default value for compatibility)");
    if (!(0.0 <= c->lr)) return sd_err(SD_EUSAGE, "Invalid learning rate: %s", sd_py_float(c->lr, f, sizeof f));
    if (!(0.0 <= c->eps)) return sd_err(SD_EUSAGE, "Invalid epsilon value: %s", sd_py_float(c->eps, f, sizeof f));
    if (!(0.0 <= c->beta1 && c->beta1 < 1.0))
        return sd_err(SD_EUSAGE, "Invalid beta parameter at index 0: %s", sd_py_float(c->beta1, f, sizeof f));
    if (!(0.0 <= c->beta2 && c->beta2 < 1.0))
        return sd_err(SD_EUSAGE, "Invalid beta parameter at index 1: %s", sd_py_float(c->beta2, f, sizeof f));
    if (!(0.0 <= c->weight_decay))
        return sd_err(SD_EUSAGE, "Invalid weight_decay value: %s", sd_py_float(c->weight_decay, f, sizeof f));
    if (c->percentile_clipping < 100)
        return sd_err(SD_EUNSUPPORTED, "AdamW8bit: percentile_clipping=%d is not supported (only 100, off)",
                      c->percentile_clipping);
    if (!c->block_wise)
        return sd_err(SD_EUNSUPPORTED, "AdamW8bit: block_wise=False (one absmax per tensor) is not supported");
    return SD_OK;
}

/* ---- state ----------------------------------------------------------------------------------- */

sd_bnb_state_mode sd_adamw8bit_mode_for(int64_t numel, int64_t min_8bit_size)
{
    if (min_8bit_size <= 0) min_8bit_size = SD_BNB_MIN_8BIT_SIZE;
    return numel < min_8bit_size ? SD_BNB_STATE_F32 : SD_BNB_STATE_U8;
}

static int state_init(sd_adamw8bit_state *st, int64_t numel, int64_t min_8bit_size, int nstates)
{
    memset(st, 0, sizeof *st);
    if (numel <= 0) return sd_err(SD_EINVAL, "AdamW8bit: tensor of %lld elements", (long long)numel);
    if (numel > INT32_MAX)
        return sd_err(SD_ERANGE, "AdamW8bit: tensor of %lld elements (bitsandbytes' kernels take an int32 count)",
                      (long long)numel);
    st->numel = numel;
    st->nstates = nstates;
    st->mode = sd_adamw8bit_mode_for(numel, min_8bit_size);
    size_t n = (size_t)numel, bytes, ns = (size_t)nstates;
    if (st->mode == SD_BNB_STATE_F32) {
        bytes = ns * n * sizeof(float);
    } else {
        st->nblocks = (numel + SD_BNB_BLOCKSIZE - 1) / SD_BNB_BLOCKSIZE;
        bytes = ns * (size_t)st->nblocks * sizeof(float) + ns * n;
    }
    st->mem = calloc(1, bytes);
    if (!st->mem) {
        memset(st, 0, sizeof *st);
        return sd_err(SD_ENOMEM, "AdamW8bit: cannot allocate %zu bytes of optimizer state", bytes);
    }
    if (st->mode == SD_BNB_STATE_F32) {
        st->m32 = (float *)st->mem;
        st->v32 = nstates == 2 ? st->m32 + n : NULL;
    } else {
        st->absmax1 = (float *)st->mem;
        st->absmax2 = nstates == 2 ? st->absmax1 + st->nblocks : NULL;
        st->m8 = (uint8_t *)(st->absmax1 + ns * (size_t)st->nblocks);
        st->v8 = nstates == 2 ? st->m8 + n : NULL;
        (void)sd_bnb_qmap_signed(); /* build the maps outside any parallel region */
    }
    return SD_OK;
}

int sd_adamw8bit_state_init(sd_adamw8bit_state *st, int64_t numel, int64_t min_8bit_size)
{
    return state_init(st, numel, min_8bit_size, 2);
}

int sd_bnb1_state_init(sd_adamw8bit_state *st, int64_t numel, int64_t min_8bit_size)
{
    return state_init(st, numel, min_8bit_size, 1);
}

void sd_adamw8bit_state_free(sd_adamw8bit_state *st)
{
    if (!st) return;
    free(st->mem);
    memset(st, 0, sizeof *st);
}

size_t sd_adamw8bit_state_bytes(const sd_adamw8bit_state *st)
{
    size_t n = (size_t)st->numel, ns = (size_t)st->nstates;
    if (!st->mem) return 0;
    return st->mode == SD_BNB_STATE_F32 ? ns * n * sizeof(float) : ns * n + ns * (size_t)st->nblocks * sizeof(float);
}

/* ---- the step -------------------------------------------------------------------------------- */

void sd_bnb2_scalars_make(sd_bnb2_scalars *s, double lr, double beta1, double beta2, double eps, double wd,
                          int64_t step)
{
    s->beta1 = (float)beta1;
    s->beta2 = (float)beta2;
    s->eps = (float)eps;
    s->lr = (float)lr;
    s->wd = (float)wd;
    s->omb1 = 1.0f - s->beta1;
    s->omb2 = 1.0f - s->beta2;
    float fstep = (float)(int32_t)step;
    float c1 = 1.0f - powf(s->beta1, fstep);
    float c2 = sqrtf(1.0f - powf(s->beta2, fstep));
    s->c2 = c2;
    float neg_lr_c2 = -s->lr * c2;
    s->step_size = neg_lr_c2 / c1;
    float lw = s->lr * s->wd;
    s->decay = 1.0f - lw;
}

/* Elements per OpenMP chunk below which the step runs on one thread. */
#define PAR_MIN 65536

sd_bnb_state_ptrs sd_bnb_state_ptrs_of(const sd_adamw8bit_state *st)
{
    sd_bnb_state_ptrs r = { .numel = st->numel, .mode8 = st->mode == SD_BNB_STATE_U8, .m32 = st->m32, .v32 = st->v32,
                            .m8 = st->m8, .v8 = st->v8, .absmax1 = st->absmax1, .absmax2 = st->absmax2 };
    return r;
}

static int adamw8bit_prepare(const sd_adamw8bit_state *st, int64_t step)
{
    if (!st->mem || st->nstates != 2) return sd_err(SD_ESTATE, "AdamW8bit: step on an uninitialised state");
    if (step < 1 || step > INT32_MAX)
        return sd_err(SD_ERANGE, "AdamW8bit: step %lld out of range 1..2^31-1", (long long)step);
    return SD_OK;
}

int sd_adamw8bit_step(sd_adamw8bit_state *st, float *p, const float *g, double lr, double beta1,
                      double beta2, double eps, double weight_decay, int64_t step)
{
    int rc = adamw8bit_prepare(st, step);
    if (rc) return rc;
    sd_bnb2_scalars s;
    sd_bnb2_scalars_make(&s, lr, beta1, beta2, eps, weight_decay, step);
    const int64_t n = st->numel;
    if (st->mode == SD_BNB_STATE_F32) {
        float *m = st->m32, *v = st->v32;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++) sd_bnb2_elem32(&s, &p[i], g[i], &m[i], &v[i]);
        return SD_OK;
    }
    const sd_bnb_qmaps *q = sd_bnb_qmaps_get();
    const int64_t nb = st->nblocks;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i = b * SD_BNB_BLOCKSIZE;
        int valid = (int)(n - i >= SD_BNB_BLOCKSIZE ? SD_BNB_BLOCKSIZE : n - i);
        sd_bnb2_block8(&s, q, p + i, g + i, st->m8 + i, st->v8 + i, st->absmax1, st->absmax2, b, valid);
    }
    return SD_OK;
}

int sd_adamw8bit_step_op(sd_ctx *ctx, sd_adamw8bit_state *st, sd_tensor *p, const sd_tensor *g, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int64_t step)
{
    int rc = adamw8bit_prepare(st, step);
    if (rc) return rc;
    sd_bnb2_scalars s;
    sd_bnb2_scalars_make(&s, lr, beta1, beta2, eps, weight_decay, step);
    sd_bnb_state_ptrs sp = sd_bnb_state_ptrs_of(st);
    return sd_op_bnb2_step(ctx, p, g, &sp, &s, sd_bnb_qmaps_get());
}

void sd_adamw8bit_moments(const sd_adamw8bit_state *st, float *m, float *v)
{
    size_t n = (size_t)st->numel;
    if (st->nstates != 2) v = NULL;
    if (st->mode == SD_BNB_STATE_F32) {
        if (m) memcpy(m, st->m32, n * sizeof(float));
        if (v) memcpy(v, st->v32, n * sizeof(float));
        return;
    }
    const float *q1 = sd_bnb_qmap_signed(), *q2 = sd_bnb_qmap_unsigned();
    for (size_t i = 0; i < n; i++) {
        size_t b = i / SD_BNB_BLOCKSIZE;
        if (m) m[i] = q1[st->m8[i]] * st->absmax1[b];
        if (v) v[i] = q2[st->v8[i]] * st->absmax2[b];
    }
}

/* ---- serialisation --------------------------------------------------------------------------- */

int sd_adamw8bit_arrays(sd_adamw8bit_state *st, sd_bnb_state_array out[SD_BNB_MAX_ARRAYS])
{
    if (st->nstates == 1) {
        if (st->mode == SD_BNB_STATE_F32) {
            out[0] = (sd_bnb_state_array){ "state1", SD_ST_F32, st->numel, st->m32 };
            return 1;
        }
        out[0] = (sd_bnb_state_array){ "state1", SD_ST_U8, st->numel, st->m8 };
        out[1] = (sd_bnb_state_array){ "absmax1", SD_ST_F32, st->nblocks, st->absmax1 };
        return 2;
    }
    if (st->mode == SD_BNB_STATE_F32) {
        out[0] = (sd_bnb_state_array){ "state1", SD_ST_F32, st->numel, st->m32 };
        out[1] = (sd_bnb_state_array){ "state2", SD_ST_F32, st->numel, st->v32 };
        return 2;
    }
    out[0] = (sd_bnb_state_array){ "state1", SD_ST_U8, st->numel, st->m8 };
    out[1] = (sd_bnb_state_array){ "state2", SD_ST_U8, st->numel, st->v8 };
    out[2] = (sd_bnb_state_array){ "absmax1", SD_ST_F32, st->nblocks, st->absmax1 };
    out[3] = (sd_bnb_state_array){ "absmax2", SD_ST_F32, st->nblocks, st->absmax2 };
    return 4;
}

int sd_adamw8bit_save(sd_adamw8bit_state *st, sd_safetensors_writer *w, const char *prefix)
{
    if (!st->mem) return sd_err(SD_ESTATE, "AdamW8bit: saving an uninitialised state");
    sd_bnb_state_array a[SD_BNB_MAX_ARRAYS];
    int na = sd_adamw8bit_arrays(st, a);
    for (int i = 0; i < na; i++) {
        char name[512];
        int len = snprintf(name, sizeof name, "%s.%s", prefix, a[i].name);
        if (len < 0 || (size_t)len >= sizeof name)
            return sd_err(SD_EINVAL, "AdamW8bit: state name '%s.%s' too long", prefix, a[i].name);
        int64_t shape[1] = { a[i].numel };
        int rc = sd_safetensors_writer_add(w, name, a[i].dtype, 1, shape, a[i].data);
        if (rc < 0) return rc;
    }
    return SD_OK;
}

int sd_adamw8bit_load(sd_adamw8bit_state *st, const sd_safetensors *f, const char *prefix)
{
    if (!st->mem) return sd_err(SD_ESTATE, "AdamW8bit: loading into an uninitialised state");
    const char *fname = sd_safetensors_path(f);
    char name[512];
    /* the other mode's arrays must not be there */
    if (st->mode == SD_BNB_STATE_F32) {
        snprintf(name, sizeof name, "%s.absmax1", prefix);
        if (sd_safetensors_find(f, name))
            return sd_err(SD_EFORMAT, "%s: '%s' holds 8-bit optimizer state but the tensor (%lld elements) "
                          "uses 32-bit states", fname, prefix, (long long)st->numel);
    }
    sd_bnb_state_array a[SD_BNB_MAX_ARRAYS];
    int na = sd_adamw8bit_arrays(st, a);
    int rc = SD_OK;
    for (int i = 0; i < na && rc == SD_OK; i++) {
        int len = snprintf(name, sizeof name, "%s.%s", prefix, a[i].name);
        if (len < 0 || (size_t)len >= sizeof name) {
            rc = sd_err(SD_EINVAL, "AdamW8bit: state name '%s.%s' too long", prefix, a[i].name);
            break;
        }
        const sd_st_tensor *t = sd_safetensors_find(f, name);
        if (!t) {
            rc = sd_err(SD_EFORMAT, "%s: missing optimizer state '%s'", fname, name);
            break;
        }
        if (t->dtype != a[i].dtype) {
            if (!strncmp(a[i].name, "state", 5) && st->mode == SD_BNB_STATE_U8 && t->dtype == SD_ST_F32)
                rc = sd_err(SD_EFORMAT, "%s: '%s' holds 32-bit optimizer state but the tensor (%lld elements) "
                            "uses 8-bit states", fname, prefix, (long long)st->numel);
            else if (!strncmp(a[i].name, "state", 5) && st->mode == SD_BNB_STATE_F32 && t->dtype == SD_ST_U8)
                rc = sd_err(SD_EFORMAT, "%s: '%s' holds 8-bit optimizer state but the tensor (%lld elements) "
                            "uses 32-bit states", fname, prefix, (long long)st->numel);
            else
                rc = sd_err(SD_EFORMAT, "%s: optimizer state '%s' is %s, expected %s", fname, name,
                            sd_st_dtype_name(t->dtype), sd_st_dtype_name(a[i].dtype));
            break;
        }
        int64_t cnt = t->numel;
        if (cnt != a[i].numel) {
            rc = sd_err(SD_EFORMAT, "%s: optimizer state '%s' has %lld elements, expected %lld", fname, name,
                        (long long)cnt, (long long)a[i].numel);
            break;
        }
        rc = sd_safetensors_read(f, t, a[i].dtype, a[i].data, (size_t)a[i].numel);
    }
    if (rc < 0) memset(st->mem, 0, sd_adamw8bit_state_bytes(st));
    return rc;
}

/* ---- the 1-state optimizers (Lion8bit, PagedLion8bit, SGD8bit) -------------------------------- */

static int bnb1_prepare(const sd_adamw8bit_state *st, sd_bnb1_optimizer opt, double lr, double beta1, double beta2,
                        double weight_decay, int64_t step, int half, sd_bnb1_scalars *s)
{
    if (half == 2 && opt == SD_BNB1_MOMENTUM && st->mode == SD_BNB_STATE_F32)
        return sd_err(SD_EUSAGE, "Gradient+optimizer bit data type combination not supported: grad torch.bfloat16, "
                      "optimizer torch.float32 (bitsandbytes' 32-bit momentum kernel has no bfloat16 version)");
    if (!st->mem || st->nstates != 1) return sd_err(SD_ESTATE, "bitsandbytes 1-state step on a wrong state");
    if (opt != SD_BNB1_LION && opt != SD_BNB1_MOMENTUM) return sd_err(SD_EINVAL, "bitsandbytes: bad optimizer %d", (int)opt);
    if (step < 1 || step > INT32_MAX)
        return sd_err(SD_ERANGE, "bitsandbytes: step %lld out of range 1..2^31-1", (long long)step);
    s->beta1 = (float)beta1;
    s->beta2 = (float)beta2;
    s->lr = (float)lr;
    s->wd = (float)weight_decay;
    s->omb1 = 1.0f - s->beta1;
    s->omb2 = 1.0f - s->beta2;
    float lw = s->lr * s->wd;
    s->decay = 1.0f - lw;
    s->first = step == 1;
    s->half = half == 1 || half == 2 ? half : 0;
    s->lion = opt == SD_BNB1_LION;
    return SD_OK;
}

int sd_bnb1_step(sd_adamw8bit_state *st, sd_bnb1_optimizer opt, float *p, const float *g, double lr,
                 double beta1, double beta2, double weight_decay, int64_t step, int half)
{
    sd_bnb1_scalars s;
    int rc = bnb1_prepare(st, opt, lr, beta1, beta2, weight_decay, step, half, &s);
    if (rc) return rc;
    const int64_t n = st->numel;
    if (st->mode == SD_BNB_STATE_F32) {
        float *m = st->m32;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++) sd_bnb1_elem32(&s, &p[i], g[i], &m[i]);
        return SD_OK;
    }
    const sd_bnb_qmaps *q = sd_bnb_qmaps_get();
    const int64_t nb = st->nblocks;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i = b * SD_BNB_BLOCKSIZE;
        int valid = (int)(n - i >= SD_BNB_BLOCKSIZE ? SD_BNB_BLOCKSIZE : n - i);
        sd_bnb1_block8(&s, q, p + i, g + i, st->m8 + i, st->absmax1, b, valid);
    }
    return SD_OK;
}

int sd_bnb1_step_op(sd_ctx *ctx, sd_adamw8bit_state *st, sd_bnb1_optimizer opt, sd_tensor *p, const sd_tensor *g,
                    double lr, double beta1, double beta2, double weight_decay, int64_t step, int half)
{
    sd_bnb1_scalars s;
    int rc = bnb1_prepare(st, opt, lr, beta1, beta2, weight_decay, step, half, &s);
    if (rc) return rc;
    sd_bnb_state_ptrs sp = sd_bnb_state_ptrs_of(st);
    return sd_op_bnb1_step(ctx, p, g, &sp, &s, sd_bnb_qmaps_get());
}

void sd_bnb1_config_default(sd_adamw8bit_config *c, int sgd)
{
    sd_adamw8bit_config_default(c);
    c->eps = 0.0;
    c->weight_decay = 0.0;
    if (sgd) {
        c->lr = 1e-3;          /* SGD8bit's lr is required; kohya always passes it */
        c->beta1 = 0.9;        /* momentum: kohya's default for SGDNesterov8bit */
        c->beta2 = 0.0;        /* dampening */
    } else {
        c->lr = 1e-4;
        c->beta1 = 0.9;
        c->beta2 = 0.99;
    }
}

static int bnb1_known(int sgd, int has_is_paged, const char *key)
{
    static const char *const lion[] = { "betas", "weight_decay", "args", "min_8bit_size", "percentile_clipping",
                                        "block_wise", NULL };
    static const char *const sgdk[] = { "momentum", "dampening", "weight_decay", "nesterov", "args", "min_8bit_size",
                                        "percentile_clipping", "block_wise", NULL };
    const char *const *k = sgd ? sgdk : lion;
    for (int i = 0; k[i]; i++)
        if (!strcmp(key, k[i])) return 1;
    return !sgd && has_is_paged && !strcmp(key, "is_paged");
}

int sd_bnb1_config_set(sd_adamw8bit_config *c, const char *cls, const char *qualname, int sgd, int has_is_paged,
                       const char *key, const struct sd_py_value *v)
{
    if (!strcmp(key, "lr") || (sgd && !strcmp(key, "nesterov")))
        return sd_err(SD_EUSAGE, "%s() got multiple values for keyword argument '%s'", qualname, key);
    if (!strcmp(key, "params"))
        return sd_err(SD_EUSAGE, "%s.__init__() got multiple values for argument 'params'", cls);
    if (!bnb1_known(sgd, has_is_paged, key))
        return sd_err(SD_EUSAGE, "%s.__init__() got an unexpected keyword argument '%s'", cls, key);
    if (!strcmp(key, "betas")) {
        if (v->kind != SD_PY_TUPLE && v->kind != SD_PY_LIST)
            return sd_err(SD_EUSAGE, "%s: betas must be a tuple of 2 numbers, got %s", cls, v->repr);
        for (int i = 0; i < v->nitems; i++)
            if (v->item_kind[i] != SD_PY_INT && v->item_kind[i] != SD_PY_FLOAT && v->item_kind[i] != SD_PY_BOOL)
                return sd_err(SD_EUSAGE, "%s: betas must be numbers, got %s", cls, v->repr);
        if (v->nitems < 2)
            return sd_err(SD_EUSAGE, "%s: betas must have 2 values, got %s (tuple index out of range)", cls, v->repr);
        for (int i = 0; i < v->nitems; i++)
            if (!(v->items[i] >= 0.0 && v->items[i] < 1.0)) {
                char f[40];
                return sd_err(SD_EUSAGE, "Invalid beta parameter at index %d: %s", i,
                              sd_py_float(v->items[i], f, sizeof f));
            }
        c->beta1 = v->items[0];
        c->beta2 = v->items[1];
        return SD_OK;
    }
    if (!strcmp(key, "args")) {
        if (v->kind != SD_PY_NONE)
            return sd_err(SD_EUNSUPPORTED, "%s: args=%s is not supported (only None)", cls, v->repr);
        return SD_OK;
    }
    if (!strcmp(key, "block_wise")) { c->block_wise = py_truthy(v); return SD_OK; }
    if (!strcmp(key, "is_paged")) { c->is_paged = py_truthy(v); return SD_OK; }
    if (!py_is_number(v)) return sd_err(SD_EUSAGE, "%s: %s must be a number, got %s", cls, key, v->repr);
    double x = v->kind == SD_PY_FLOAT ? v->f : (double)v->i;
    if (!strcmp(key, "momentum")) c->beta1 = x;
    else if (!strcmp(key, "dampening")) c->beta2 = x;
    else if (!strcmp(key, "weight_decay")) c->weight_decay = x;
    else if (!strcmp(key, "percentile_clipping")) c->percentile_clipping = x >= 100.0 ? 100 : (int)floor(x);
    else if (!strcmp(key, "min_8bit_size")) {
        double m = ceil(x);
        c->min_8bit_size = m > 9.0e18 ? INT64_MAX : (m < 0 ? 0 : (int64_t)m);
    }
    return SD_OK;
}

int sd_bnb1_config_check(const sd_adamw8bit_config *c, const char *cls, int sgd)
{
    char f[40];
    if (sgd && c->beta1 == 0.0) return sd_err(SD_EUSAGE, "SGD without momentum is not supported!");
    if (!(0.0 <= c->lr)) return sd_err(SD_EUSAGE, "Invalid learning rate: %s", sd_py_float(c->lr, f, sizeof f));
    if (!(0.0 <= c->beta1 && c->beta1 < 1.0))
        return sd_err(SD_EUSAGE, "Invalid beta parameter at index 0: %s", sd_py_float(c->beta1, f, sizeof f));
    if (!(0.0 <= c->beta2 && c->beta2 < 1.0))
        return sd_err(SD_EUSAGE, "Invalid beta parameter at index 1: %s", sd_py_float(c->beta2, f, sizeof f));
    if (!(0.0 <= c->weight_decay))
        return sd_err(SD_EUSAGE, "Invalid weight_decay value: %s", sd_py_float(c->weight_decay, f, sizeof f));
    if (c->percentile_clipping < 100)
        return sd_err(SD_EUNSUPPORTED, "%s: percentile_clipping=%d is not supported (only 100, off)", cls,
                      c->percentile_clipping);
    if (!c->block_wise)
        return sd_err(SD_EUNSUPPORTED, "%s: block_wise=False (one absmax per tensor) is not supported", cls);
    return SD_OK;
}
