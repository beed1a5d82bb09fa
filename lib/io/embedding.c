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
            rc = sd_err(SD_EUNSUPPORTED, "%s: an SDXL embedding (clip_l/clip_g): only SD1.x/SD2.x embeddings are supported",
                        path);
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
            rc = sd_err(SD_EUNSUPPORTED, "%s: an SDXL embedding (clip_l/clip_g): only SD1.x/SD2.x embeddings are supported",
                        path);
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
