/* libFuzzer target: safetensors reader over arbitrary bytes, then on every accepted file:
 *   - every tensor converts to f32/f16/bf16, is found by name, and passes its own shape check;
 *   - metadata lookups agree with iteration;
 *   - writing the tensors and metadata back gives a file that reads back to the same tensors
 *     (names, dtypes, shapes, bytes) and metadata, and that writing it again is byte-identical.
 * Errors must name the input and be one line. */
#include "base/error.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(int cond)
{
    if (!cond) abort();
}

static void *write_back(const sd_safetensors *st, size_t *n)
{
    sd_safetensors_writer *w;
    check(sd_safetensors_writer_new(&w) == SD_OK);
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        check(sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data) == SD_OK);
    }
    for (size_t i = 0; i < sd_safetensors_meta_count(st); i++) {
        const char *k, *v;
        sd_safetensors_meta_at(st, i, &k, &v);
        check(sd_safetensors_writer_set_meta(w, k, v) == SD_OK);
    }
    void *buf;
    check(sd_safetensors_writer_write_mem(w, &buf, n) == SD_OK);
    sd_safetensors_writer_free(w);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open_mem(data, size, "fuzz", &st);
    if (rc != SD_OK) {
        check(st == NULL);
        check(rc == SD_EFORMAT || rc == SD_EUNSUPPORTED);
        check(!strncmp(sd_errmsg(), "fuzz: ", 6) && !strchr(sd_errmsg(), '\n'));
        return 0;
    }
    size_t n = sd_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        check(sd_safetensors_find(st, t->name) == t);
        check(sd_safetensors_check_shape(st, t->name, t->ndim, t->shape) == SD_OK);
        check((const uint8_t *)t->data >= data && t->offset + t->nbytes <= size);
        size_t k = (size_t)t->numel;
        float *f = malloc(k * 4 + 4);
        uint16_t *h = malloc(k * 2 + 2);
        check(sd_safetensors_read_f32(st, t->name, f, k) == SD_OK);
        check(sd_safetensors_read_f16(st, t->name, h, k) == SD_OK);
        check(sd_safetensors_read_bf16(st, t->name, h, k) == SD_OK);
        free(f);
        free(h);
    }
    for (size_t i = 0; i < sd_safetensors_meta_count(st); i++) {
        const char *k, *v;
        sd_safetensors_meta_at(st, i, &k, &v);
        check(sd_safetensors_meta_get(st, k) == v);
    }

    size_t n1, n2;
    void *b1 = write_back(st, &n1);
    sd_safetensors *st2;
    check(sd_safetensors_open_mem(b1, n1, "again", &st2) == SD_OK);
    check(sd_safetensors_count(st2) == n && sd_safetensors_meta_count(st2) == sd_safetensors_meta_count(st));
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *a = sd_safetensors_at(st, i), *b = sd_safetensors_find(st2, a->name);
        check(b && b->dtype == a->dtype && b->ndim == a->ndim && b->nbytes == a->nbytes);
        check(!memcmp(a->shape, b->shape, sizeof a->shape[0] * (size_t)a->ndim));
        check(!a->nbytes || !memcmp(a->data, b->data, a->nbytes));
    }
    for (size_t i = 0; i < sd_safetensors_meta_count(st); i++) {
        const char *k, *v;
        sd_safetensors_meta_at(st, i, &k, &v);
        const char *v2 = sd_safetensors_meta_get(st2, k);
        check(v2 && !strcmp(v, v2));
    }
    void *b2 = write_back(st2, &n2);
    check(n1 == n2 && !memcmp(b1, b2, n1));
    sd_safetensors_close(st2);
    free(b1);
    free(b2);
    sd_safetensors_close(st);
    return 0;
}
