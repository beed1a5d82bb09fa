/* Textual-inversion embedding files (see embedding.h). */
#include "io/embedding.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/ckpt.h"
#include "io/safetensors.h"

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* The vector count of a tensor of this shape, or an error naming the width needed. */
static int vec_count(const char *path, const char *name, int ndim, const int64_t *shape, int64_t D, int64_t *count)
{
    if (ndim == 1 && shape[0] == D) *count = 1;
    else if (ndim == 2 && shape[1] == D && shape[0] >= 1 && shape[0] <= 75) *count = shape[0];
    else {
        char sh[64];
        sd_st_shape_str(ndim, shape, sh, sizeof sh);
        return sd_err(SD_EFORMAT, "%s: tensor '%s' has shape %s; this text encoder needs [n, %lld] (n <= 75) or [%lld]",
                      path, name, sh, (long long)D, (long long)D);
    }
    return SD_OK;
}

static int no_embedding(const char *path, int64_t D)
{
    return sd_err(SD_EFORMAT, "%s: no textual-inversion embedding (expected a tensor 'emb_params' [n, %lld], "
                  "A1111's string_to_param, or a file with one tensor)", path, (long long)D);
}

int sd_embedding_read(const char *path, int64_t D, float **vecs, int64_t *count)
{
    *vecs = NULL;
    *count = 0;
    int rc;
    if (ends_with(path, ".safetensors")) {
        sd_safetensors *st = NULL;
        if ((rc = sd_safetensors_open(path, &st))) return rc;
        const sd_st_tensor *t = sd_safetensors_find(st, "emb_params");
        if (!t && (sd_safetensors_find(st, "clip_l") || sd_safetensors_find(st, "clip_g")))
            rc = sd_err(SD_EUNSUPPORTED, "%s: an SDXL embedding (clip_l/clip_g); an SD1.x/SD2.x model needs an "
                        "SD1.x/SD2.x embedding (emb_params)", path);
        else if (!t && sd_safetensors_count(st) == 1) t = sd_safetensors_at(st, 0);
        if (!rc && !t) rc = no_embedding(path, D);
        if (!rc && !sd_st_dtype_is_float(t->dtype)) rc = sd_err(SD_EFORMAT, "%s: tensor '%s' is not floating point", path, t->name);
        if (!rc) rc = vec_count(path, t->name, t->ndim, t->shape, D, count);
        if (!rc) {
            *vecs = malloc((size_t)(*count * D) * sizeof(float));
            rc = *vecs ? sd_safetensors_read_f32(st, t->name, *vecs, (size_t)(*count * D)) : sd_err(SD_ENOMEM, "out of memory");
        }
        sd_safetensors_close(st);
    } else {
        sd_ckpt *ck = NULL;
        if ((rc = sd_ckpt_open(path, &ck))) return rc;
        const sd_ckpt_tensor *t = NULL;
        for (size_t i = 0; i < sd_ckpt_count(ck) && !t; i++)
            if (!strncmp(sd_ckpt_at(ck, i)->name, "string_to_param.", 16)) t = sd_ckpt_at(ck, i);
        if (!t) t = sd_ckpt_find(ck, "emb_params");
        if (!t && (sd_ckpt_find(ck, "clip_l") || sd_ckpt_find(ck, "clip_g")))
            rc = sd_err(SD_EUNSUPPORTED, "%s: an SDXL embedding (clip_l/clip_g); an SD1.x/SD2.x model needs an "
                        "SD1.x/SD2.x embedding (emb_params)", path);
        else if (!t && sd_ckpt_count(ck) == 1) t = sd_ckpt_at(ck, 0);
        if (!rc && !t) rc = no_embedding(path, D);
        if (!rc && !sd_st_dtype_is_float(t->dtype)) rc = sd_err(SD_EFORMAT, "%s: tensor '%s' is not floating point", path, t->name);
        if (!rc) rc = vec_count(path, t->name, t->ndim, t->shape, D, count);
        if (!rc) {
            *vecs = malloc((size_t)(*count * D) * sizeof(float));
            rc = *vecs ? sd_ckpt_read(ck, t, SD_ST_F32, *vecs, (size_t)(*count * D)) : sd_err(SD_ENOMEM, "out of memory");
        }
        sd_ckpt_close(ck);
    }
    if (rc) {
        free(*vecs);
        *vecs = NULL;
        *count = 0;
    }
    return rc;
}

int sd_embedding_read_key(const char *path, const char *key, int64_t D, float **vecs, int64_t *count)
{
    *vecs = NULL;
    *count = 0;
    int rc = SD_OK, ndim = 0, other = 0;
    const int64_t *shape = NULL;
    sd_safetensors *st = NULL;
    sd_ckpt *ck = NULL;
    const sd_st_tensor *ts = NULL;
    const sd_ckpt_tensor *tc = NULL;
    if (ends_with(path, ".safetensors")) {
        if ((rc = sd_safetensors_open(path, &st))) return rc;
        ts = sd_safetensors_find(st, key);
        if (ts) ndim = ts->ndim, shape = ts->shape;
        other = !ts && sd_safetensors_count(st) > 0;
        if (ts && !sd_st_dtype_is_float(ts->dtype)) rc = sd_err(SD_EFORMAT, "%s: tensor '%s' is not floating point", path, key);
    } else {
        if ((rc = sd_ckpt_open(path, &ck))) return rc;
        tc = sd_ckpt_find(ck, key);
        if (tc) ndim = tc->ndim, shape = tc->shape;
        other = !tc && sd_ckpt_count(ck) > 0;
        if (tc && !sd_st_dtype_is_float(tc->dtype)) rc = sd_err(SD_EFORMAT, "%s: tensor '%s' is not floating point", path, key);
    }
    if (!rc && !ts && !tc)
        rc = other ? sd_err(SD_EUNSUPPORTED, "%s: not an SDXL embedding (no '%s'; an SD1.x/SD2.x embedding?); an SDXL "
                            "model needs an SDXL embedding (clip_l/clip_g)", path, key)
                   : sd_err(SD_EFORMAT, "%s: no textual-inversion embedding (expected '%s' [n, %lld])", path, key,
                            (long long)D);
    if (!rc) rc = vec_count(path, key, ndim, shape, D, count);
    if (!rc) {
        *vecs = malloc((size_t)(*count * D) * sizeof(float));
        if (!*vecs) rc = sd_err(SD_ENOMEM, "out of memory");
        else if (ts) rc = sd_safetensors_read_f32(st, key, *vecs, (size_t)(*count * D));
        else rc = sd_ckpt_read(ck, tc, SD_ST_F32, *vecs, (size_t)(*count * D));
    }
    if (st) sd_safetensors_close(st);
    if (ck) sd_ckpt_close(ck);
    if (rc) {
        free(*vecs);
        *vecs = NULL;
        *count = 0;
    }
    return rc;
}

int sd_embedding_read_sdxl(const char *path, int64_t D1, int64_t D2, float **v1, float **v2, int64_t *count)
{
    int64_t c1 = 0, c2 = 0;
    *v2 = NULL;
    int rc = sd_embedding_read_key(path, "clip_l", D1, v1, &c1);
    if (!rc) rc = sd_embedding_read_key(path, "clip_g", D2, v2, &c2);
    if (!rc && c1 != c2)
        rc = sd_err(SD_EFORMAT, "%s: clip_l has %lld vectors, clip_g %lld", path, (long long)c1, (long long)c2);
    if (rc) {
        free(*v1);
        free(*v2);
        *v1 = *v2 = NULL;
        c1 = 0;
    }
    *count = c1;
    return rc;
}
