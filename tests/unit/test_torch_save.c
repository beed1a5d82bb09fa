/* lib/io/torch_save.h: the pickle is byte for byte torch 1.13's (golden data.pkl members written
 * by tests/golden/gen/make_torch_save.py), the archive reads back through io/ckpt.h, Python's
 * zipfile and torch.load (when /usr/bin/python3 has torch), also with forced Zip64 records. */
#include "io/torch_save.h"

#include <stdint.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "io/ckpt.h"
#include "test.h"

#define DATA "tests/data/torch_save/"

/* arange(n) as dtype (exact for these small values) */
static void *ar(int64_t n, sd_st_dtype dt)
{
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    void *o = malloc((size_t)(n ? n : 1) * 8);
    for (int64_t i = 0; i < n; i++) f[i] = (float)i;
    if (dt == SD_ST_F32 || dt == SD_ST_F16 || dt == SD_ST_BF16 || dt == SD_ST_F64) {
        sd_st_convert(SD_ST_F32, f, dt, o, (size_t)n);
    } else {
        for (int64_t i = 0; i < n; i++) {
            switch (dt) {
            case SD_ST_I64: ((int64_t *)o)[i] = i; break;
            case SD_ST_I32: ((int32_t *)o)[i] = (int32_t)i; break;
            case SD_ST_I16: ((int16_t *)o)[i] = (int16_t)i; break;
            case SD_ST_I8: ((int8_t *)o)[i] = (int8_t)i; break;
            case SD_ST_U8: ((uint8_t *)o)[i] = (uint8_t)i; break;
            case SD_ST_BOOL: ((uint8_t *)o)[i] = i == 0; break;   /* [True, False] */
            default: break;
            }
        }
    }
    free(f);
    return o;
}

typedef struct bufs {
    void *p[64];
    int n;
} bufs;

static const void *keep(bufs *b, void *p)
{
    b->p[b->n++] = p;
    return p;
}

static void bufs_free(bufs *b)
{
    for (int i = 0; i < b->n; i++) free(b->p[i]);
    b->n = 0;
}

static int add(sd_torch_save *ts, bufs *b, const char *k, sd_st_dtype dt, int nd, int64_t s0, int64_t s1, int64_t s2,
               int64_t s3)
{
    int64_t sh[4] = {s0, s1, s2, s3}, n = 1;
    for (int d = 0; d < nd; d++) n *= sh[d];
    return sd_torch_save_tensor(ts, k, dt, nd, sh, n ? keep(b, ar(n, dt)) : NULL);
}

static sd_torch_save *build_emb(bufs *b)
{
    sd_torch_save *ts;
    if (sd_torch_save_new(&ts)) return NULL;
    add(ts, b, "emb_params", SD_ST_F32, 2, 2, 3, 0, 0);
    return ts;
}

static sd_torch_save *build_ckpt(bufs *b)
{
    sd_torch_save *ts;
    if (sd_torch_save_new(&ts)) return NULL;
    int rc = sd_torch_save_dict_begin(ts, "state_dict");
    rc |= add(ts, b, "model.a.weight", SD_ST_F32, 3, 2, 3, 4, 0);
    rc |= add(ts, b, "model.b.bias", SD_ST_F16, 1, 5, 0, 0, 0);
    rc |= add(ts, b, "model.c", SD_ST_BF16, 2, 2, 3, 0, 0);
    rc |= add(ts, b, "model.conv.weight", SD_ST_F32, 4, 2, 1, 1, 3);
    float *sc = malloc(4);
    *sc = 2.5f;
    rc |= sd_torch_save_tensor(ts, "scalar", SD_ST_F32, 0, NULL, keep(b, sc));
    rc |= add(ts, b, "empty", SD_ST_F32, 1, 0, 0, 0, 0);
    rc |= add(ts, b, "steps", SD_ST_I64, 1, 3, 0, 0, 0);
    rc |= add(ts, b, "d", SD_ST_F64, 1, 2, 0, 0, 0);
    rc |= add(ts, b, "i32", SD_ST_I32, 1, 2, 0, 0, 0);
    rc |= add(ts, b, "i16", SD_ST_I16, 1, 2, 0, 0, 0);
    rc |= add(ts, b, "i8", SD_ST_I8, 1, 2, 0, 0, 0);
    rc |= add(ts, b, "u8", SD_ST_U8, 1, 2, 0, 0, 0);
    rc |= add(ts, b, "b", SD_ST_BOOL, 1, 2, 0, 0, 0);
    rc |= add(ts, b, "model.b.weight", SD_ST_F16, 1, 5, 0, 0, 0);
    rc |= sd_torch_save_dict_end(ts);
    rc |= sd_torch_save_int(ts, "epoch", 3);
    rc |= sd_torch_save_int(ts, "global_step", 70000);
    if (rc) {
        sd_torch_save_free(ts);
        return NULL;
    }
    return ts;
}

static sd_torch_save *build_many(void)
{
    static float data[40 * 41 / 2];
    sd_torch_save *ts;
    if (sd_torch_save_new(&ts)) return NULL;
    int rc = sd_torch_save_dict_begin(ts, "state_dict");
    char k[32];
    for (int i = 0, o = 0; i < 40; o += i + 1, i++) {
        for (int j = 0; j <= i; j++) data[o + j] = (float)j;
        snprintf(k, sizeof k, "t%d", i);
        rc |= sd_torch_save_tensor(ts, k, SD_ST_F32, 1, (int64_t[]){i + 1}, data + o);
    }
    rc |= sd_torch_save_dict_end(ts);
    rc |= sd_torch_save_dict_begin(ts, "ints");
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "k%d", i);
        rc |= sd_torch_save_int(ts, k, (int64_t)i * 1000 - 500000);
    }
    rc |= sd_torch_save_dict_end(ts);
    rc |= sd_torch_save_dict_begin(ts, "one");
    rc |= sd_torch_save_int(ts, "x", 1);
    rc |= sd_torch_save_dict_end(ts);
    rc |= sd_torch_save_dict_begin(ts, "none");
    rc |= sd_torch_save_dict_end(ts);
    rc |= sd_torch_save_int(ts, "big", (int64_t)1 << 40);
    rc |= sd_torch_save_int(ts, "neg", -5);
    rc |= sd_torch_save_int(ts, "min", INT64_MIN);
    rc |= sd_torch_save_int(ts, "max", INT64_MAX);
    rc |= sd_torch_save_int(ts, "m32", INT32_MIN);
    rc |= sd_torch_save_int(ts, "m32b", (int64_t)INT32_MIN - 1);
    rc |= sd_torch_save_int(ts, "p32", (int64_t)1 << 31);
    rc |= sd_torch_save_int(ts, "u16", 65535);
    rc |= sd_torch_save_int(ts, "u16b", 65536);
    if (rc) {
        sd_torch_save_free(ts);
        return NULL;
    }
    return ts;
}

static void check_golden(sd_torch_save *ts, const char *file)
{
    T_CHECK(ts != NULL);
    if (!ts) return;
    void *p = NULL;
    char *g = NULL;
    size_t n = 0, gn = 0;
    T_EQ_INT(sd_torch_save_pickle(ts, &p, &n), SD_OK);
    T_EQ_INT(sd_read_file(file, 1 << 20, &g, &gn), SD_OK);
    T_EQ_INT(n, gn);
    if (p && g && n == gn) {
        size_t i = 0;
        while (i < n && ((unsigned char *)p)[i] == ((unsigned char *)g)[i]) i++;
        T_CHECKF(i == n, "%s: first difference at byte %zu", file, i);
    }
    free(p);
    free(g);
}

static void test_torch_save_pickle_golden(void)
{
    bufs b = {0};
    sd_torch_save *ts = build_emb(&b);
    check_golden(ts, DATA "emb.pkl");
    sd_torch_save_free(ts);
    ts = build_ckpt(&b);
    check_golden(ts, DATA "ckpt.pkl");
    sd_torch_save_free(ts);
    ts = build_many();
    check_golden(ts, DATA "many.pkl");
    sd_torch_save_free(ts);
    bufs_free(&b);
}

static void test_torch_save_errors(void)
{
    sd_torch_save *ts;
    T_EQ_INT(sd_torch_save_new(&ts), SD_OK);
    T_EQ_INT(sd_torch_save_tensor(ts, "u", SD_ST_U16, 1, (int64_t[]){1}, "ab"), SD_EUNSUPPORTED);
    T_EQ_INT(sd_torch_save_tensor(ts, "n", SD_ST_F32, 1, (int64_t[]){2}, NULL), SD_EINVAL);
    T_EQ_INT(sd_torch_save_dict_end(ts), SD_ESTATE);
    T_EQ_INT(sd_torch_save_dict_begin(ts, "open"), SD_OK);
    void *p = NULL;
    size_t n;
    T_EQ_INT(sd_torch_save_pickle(ts, &p, &n), SD_ESTATE);
    T_EQ_INT(sd_torch_save_write(ts, t_path("never.pt")), SD_ESTATE);
    T_CHECK(access(t_path("never.pt"), F_OK) != 0);
    sd_torch_save_free(ts);
}

static int have_torch(void)
{
    return access("/usr/bin/python3", X_OK) == 0 &&
           system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") == 0;
}

/* Write the ckpt case (plain, then with Zip64 records) and read it with io/ckpt.h, Python's
 * zipfile and torch.load. */
static void test_torch_save_roundtrip(void)
{
    for (int z64 = 0; z64 < 2; z64++) {
        bufs b = {0};
        sd_torch_save *ts = build_ckpt(&b);
        T_CHECK(ts != NULL);
        if (!ts) return;
        sd_torch_save_force_zip64(ts, z64);
        const char *path = t_path(z64 ? "ts_z64.ckpt" : "ts_plain.ckpt");
        int rc = sd_torch_save_write(ts, path);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        sd_torch_save_free(ts);
        bufs_free(&b);
        sd_ckpt *ck = NULL;
        rc = sd_ckpt_open(path, &ck);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        if (!rc) {
            T_CHECK(sd_ckpt_wrapped(ck));
            T_EQ_STR(sd_ckpt_meta_get(ck, "global_step"), "70000");
            T_EQ_STR(sd_ckpt_meta_get(ck, "epoch"), "3");
            const sd_ckpt_tensor *t = sd_ckpt_find(ck, "model.a.weight");
            T_CHECK(t && t->dtype == SD_ST_F32 && t->ndim == 3 && t->shape[2] == 4 && t->data &&
                    ((const float *)t->data)[23] == 23.0f);
            t = sd_ckpt_find(ck, "model.conv.weight");
            T_CHECK(t && t->ndim == 4 && t->stride[0] == 3 && ((const float *)t->data)[5] == 5.0f);
            t = sd_ckpt_find(ck, "scalar");
            T_CHECK(t && t->ndim == 0 && ((const float *)t->data)[0] == 2.5f);
            t = sd_ckpt_find(ck, "empty");
            T_CHECK(t && t->numel == 0);
            t = sd_ckpt_find(ck, "steps");
            T_CHECK(t && t->dtype == SD_ST_I64 && ((const int64_t *)t->data)[2] == 2);
            sd_ckpt_close(ck);
        }
        char cmd[1536];
        snprintf(cmd, sizeof cmd, "python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); "
                 "assert z.testzip() is None; n = z.namelist(); "
                 "assert n[0] == \"ts_%s/data.pkl\" and n[-1] == \"ts_%s/version\" and len(n) == 16, n' '%s'",
                 z64 ? "z64" : "plain", z64 ? "z64" : "plain", path);
        T_EQ_INT(system(cmd), 0);
        if (!have_torch()) {
            T_SKIP(z64 ? "test_torch_save_torch_load_zip64" : "test_torch_save_torch_load", "no PyTorch");
            continue;
        }
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c 'import sys, torch; c = torch.load(sys.argv[1]); "
                 "s = c[\"state_dict\"]; assert (c[\"epoch\"], c[\"global_step\"]) == (3, 70000); "
                 "assert torch.equal(s[\"model.a.weight\"], torch.arange(24.).reshape(2, 3, 4)); "
                 "assert s[\"model.c\"].dtype == torch.bfloat16 and s[\"model.c\"][1, 2] == 5; "
                 "assert s[\"b\"].tolist() == [True, False] and s[\"scalar\"].item() == 2.5; "
                 "assert s[\"empty\"].shape == (0,) and s[\"model.conv.weight\"].shape == (2, 1, 1, 3)' '%s'",
                 path);
        T_EQ_INT(system(cmd), 0);
    }
}

/* The TI .pt holds byte for byte the members torch.save writes: pickle, storage and version
 * (live torch; the zip framing differs: torch pads with its own extra field). */
static void test_torch_save_matches_torch(void)
{
    if (!have_torch()) {
        T_SKIP("test_torch_save_matches_torch", "no PyTorch");
        return;
    }
    bufs b = {0};
    sd_torch_save *ts = build_emb(&b);
    const char *path = t_path("emb.pt"), *ref = t_path("emb_ref.pt");
    T_EQ_INT(sd_torch_save_write(ts, path), SD_OK);
    sd_torch_save_free(ts);
    bufs_free(&b);
    char cmd[1536];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c 'import sys, torch, zipfile; "
             "torch.save({\"emb_params\": torch.arange(6.).reshape(2, 3)}, sys.argv[2]); "
             "a, b = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2]); "
             "na, nb = a.namelist(), b.namelist(); "
             "assert [n.replace(\"emb/\", \"emb_ref/\", 1) for n in na] == nb, (na, nb); "
             "assert all(a.read(x) == b.read(y) for x, y in zip(na, nb))' '%s' '%s'", path, ref);
    T_EQ_INT(system(cmd), 0);
}

int main(void)
{
    T_RUN(test_torch_save_pickle_golden);
    T_RUN(test_torch_save_errors);
    T_RUN(test_torch_save_roundtrip);
    T_RUN(test_torch_save_matches_torch);
    T_DONE();
}
