/* .ckpt reader: golden files written by torch 1.13 (tests/golden/gen/make_ckpt.py), views,
 * Lightning wrapping, protocol 4, deflated members, hostile and malformed files, mutation sweeps,
 * conversion to safetensors. */
#include <stdint.h>

#include "base/error.h"
#include "io/ckpt.h"
#include "io/safetensors.h"
#include "test.h"

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/ckpt/%s", name);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Check every T/M line of an .expect file against the open checkpoint; returns tensors checked. */
static int check_expect(const sd_ckpt *ck, const char *expect, int *nmeta)
{
    FILE *f = fopen(data_path(expect), "r");
    T_CHECK(f != NULL);
    if (!f) return 0;
    static char line[1 << 16];
    int nt = 0;
    *nmeta = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == 'M') {
            char *k = line + 2, *v = strchr(k, ' ');
            *v++ = 0;
            const char *got = sd_ckpt_meta_get(ck, k);
            T_CHECKF(got && !strcmp(got, v), "meta %s: got %s want %s", k, got ? got : "(none)", v);
            (*nmeta)++;
            continue;
        }
        char *name = strtok(line + 2, " "), *dt = strtok(NULL, " "), *shape = strtok(NULL, " "),
             *hex = strtok(NULL, " ");
        if (!name || !dt || !shape || !hex) { T_CHECK(0); continue; }
        const sd_ckpt_tensor *t = sd_ckpt_find(ck, name);
        T_CHECKF(t != NULL, "tensor %s missing", name);
        if (!t) continue;
        nt++;
        T_EQ_STR(sd_st_dtype_name(t->dtype), dt);
        int nd = 0;
        int64_t sh[8];
        if (strcmp(shape, "-"))
            for (char *s = shape; *s;) {
                sh[nd++] = strtoll(s, &s, 10);
                if (*s == ',') s++;
            }
        T_EQ_INT(t->ndim, nd);
        for (int i = 0; i < nd && i < t->ndim; i++) T_EQ_INT(t->shape[i], sh[i]);
        size_t hn = strcmp(hex, "-") ? strlen(hex) / 2 : 0;
        T_EQ_INT(t->nbytes, hn);
        unsigned char *want = malloc(hn + 1), *got = malloc(hn + 1);
        for (size_t i = 0; i < hn; i++) want[i] = (unsigned char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
        int rc = sd_ckpt_read(ck, t, t->dtype, got, (size_t)t->numel);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        T_CHECKF(rc == SD_OK && !memcmp(got, want, hn), "tensor %s bytes differ", name);
        if (t->contiguous && hn) T_CHECK(t->data && !memcmp(t->data, want, hn));
        if (!t->contiguous) T_CHECK(t->data == NULL);
        free(want);
        free(got);
    }
    fclose(f);
    return nt;
}

static void test_basic(void)
{
    sd_ckpt *ck;
    int rc = sd_ckpt_open(data_path("basic.ckpt"), &ck);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    int nm;
    T_EQ_INT(check_expect(ck, "basic.expect", &nm), 17);
    T_EQ_INT(nm, 8);
    T_EQ_INT(sd_ckpt_count(ck), 17);
    T_EQ_INT(sd_ckpt_meta_count(ck), 8);
    T_EQ_INT(sd_ckpt_wrapped(ck), 0);
    T_EQ_INT(sd_ckpt_skipped(ck), 0);
    /* pickle order */
    T_EQ_STR(sd_ckpt_at(ck, 0)->name, "f32");
    T_EQ_STR(sd_ckpt_at(ck, 16)->name, "param");
    T_CHECK(sd_ckpt_at(ck, 17) == NULL);
    T_EQ_INT(sd_ckpt_find(ck, "param")->requires_grad, 1);
    T_EQ_INT(sd_ckpt_find(ck, "f32")->requires_grad, 0);
    const sd_ckpt_tensor *t = sd_ckpt_find(ck, "scalar");
    T_CHECK(t && t->ndim == 0 && t->numel == 1 && t->contiguous);
    t = sd_ckpt_find(ck, "empty");
    T_CHECK(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0);
    float f[6];
    T_EQ_INT(sd_ckpt_read_f32(ck, "bf16", f, 6), SD_OK);
    T_EQ_INT(sd_ckpt_read_f32(ck, "bf16", f, 5), SD_EINVAL);
    T_EQ_INT(sd_ckpt_read_f32(ck, "nope", f, 6), SD_ENOTFOUND);
    T_CHECK(strstr(sd_errmsg(), "no tensor 'nope'") != NULL);
    T_EQ_INT(sd_ckpt_read_f32(ck, "i64", f, 3), SD_OK);
    T_NEAR(f[0], 1.0, 0);
    T_NEAR(f[1], -2.0, 0);
    T_NEAR(f[2], 3298534883328.0, 0);
    const char *k, *v;
    sd_ckpt_meta_at(ck, 0, &k, &v);
    T_EQ_STR(k, "int");
    T_EQ_STR(v, "5");
    sd_ckpt_close(ck);
}

static void test_in_place(void)
{
    /* from memory: stored storages are used in place (inside the buffer) */
    size_t n;
    unsigned char *b = slurp(data_path("basic.ckpt"), &n);
    T_CHECK(b != NULL);
    if (!b) return;
    sd_ckpt *ck;
    T_EQ_INT(sd_ckpt_open_mem(b, n, "basic", &ck), SD_OK);
    if (ck) {
        for (size_t i = 0; i < sd_ckpt_count(ck); i++) {
            const sd_ckpt_tensor *t = sd_ckpt_at(ck, i);
            if (t->storage_nbytes)
                T_CHECKF((const unsigned char *)t->storage >= b && (const unsigned char *)t->storage < b + n,
                         "%s copied", t->name);
        }
        sd_ckpt_close(ck);
    }
    free(b);
    /* deflated members are copied and give the same tensors */
    T_EQ_INT(sd_ckpt_open(data_path("deflate.ckpt"), &ck), SD_OK);
    if (ck) {
        int nm;
        T_EQ_INT(check_expect(ck, "basic.expect", &nm), 17);
        sd_ckpt_close(ck);
    }
}

static void test_proto4(void)
{
    sd_ckpt *ck;
    int rc = sd_ckpt_open(data_path("proto4.ckpt"), &ck);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    int nm;
    T_EQ_INT(check_expect(ck, "basic.expect", &nm), 17);
    T_EQ_INT(sd_ckpt_count(ck), 17);
    sd_ckpt_close(ck);
}

static void test_views(void)
{
    sd_ckpt *ck;
    int rc = sd_ckpt_open(data_path("views.ckpt"), &ck);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    int nm;
    T_EQ_INT(check_expect(ck, "views.expect", &nm), 10);
    const sd_ckpt_tensor *base = sd_ckpt_find(ck, "base"), *tt = sd_ckpt_find(ck, "t"),
                         *off = sd_ckpt_find(ck, "flat_off"), *ex = sd_ckpt_find(ck, "expand"),
                         *el = sd_ckpt_find(ck, "elem");
    T_CHECK(base && base->contiguous);
    T_CHECK(tt && !tt->contiguous && tt->stride[0] == 1 && tt->stride[1] == 6);
    T_CHECK(off && off->contiguous && off->storage_offset == 5);
    T_CHECK(off && base && off->data == (const char *)base->data + 20);
    T_CHECK(base && tt && base->storage == tt->storage && !strcmp(base->storage_key, tt->storage_key));
    T_CHECK(ex && !ex->contiguous && ex->stride[1] == 0);
    T_CHECK(el && el->ndim == 0 && el->contiguous && el->storage_offset == 15);
    /* strided read converted to f16 equals contiguous read then conversion */
    uint16_t h1[24], h2[24];
    float f[24];
    T_EQ_INT(sd_ckpt_read(ck, tt, SD_ST_F16, h1, 24), SD_OK);
    T_EQ_INT(sd_ckpt_read(ck, tt, SD_ST_F32, f, 24), SD_OK);
    T_EQ_INT(sd_st_convert(SD_ST_F32, f, SD_ST_F16, h2, 24), SD_OK);
    T_CHECK(!memcmp(h1, h2, sizeof h1));
    T_NEAR(f[1], 6.0, 0);   /* t[0][1] = base[1][0] */
    sd_ckpt_close(ck);
}

static void test_wrapped(void)
{
    sd_ckpt *ck;
    int rc = sd_ckpt_open(data_path("wrapped.ckpt"), &ck);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    int nm;
    T_EQ_INT(check_expect(ck, "wrapped.expect", &nm), 4);
    T_EQ_INT(nm, 3);
    T_EQ_INT(sd_ckpt_count(ck), 4);
    T_EQ_INT(sd_ckpt_wrapped(ck), 1);
    T_EQ_INT(sd_ckpt_skipped(ck), 2);   /* optimizer exp_avg, callback best_model_score */
    T_EQ_INT(sd_ckpt_meta_count(ck), 3);
    T_CHECK(sd_ckpt_find(ck, "model.diffusion_model.0.weight") != NULL);
    T_CHECK(sd_ckpt_find(ck, "state_dict.model.diffusion_model.0.weight") == NULL);
    sd_ckpt_close(ck);
}

static void test_numpy(void)
{
    sd_ckpt *ck;
    int rc = sd_ckpt_open(data_path("numpy.ckpt"), &ck);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    int nm;
    T_EQ_INT(check_expect(ck, "numpy.expect", &nm), 1);
    T_EQ_INT(nm, 8);
    T_EQ_INT(sd_ckpt_meta_count(ck), 8);
    T_EQ_INT(sd_ckpt_count(ck), 1);
    sd_ckpt_close(ck);
}

static int code_of(const char *s)
{
    if (!strcmp(s, "EFORMAT")) return SD_EFORMAT;
    if (!strcmp(s, "EUNSUPPORTED")) return SD_EUNSUPPORTED;
    return 1;
}

static void test_hostile(void)
{
    FILE *f = fopen(data_path("hostile.tsv"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *file = strtok(line, "\t"), *code = strtok(NULL, "\t"), *msg = strtok(NULL, "\t");
        if (!file || !code) { T_CHECK(0); continue; }
        char rel[512];
        snprintf(rel, sizeof rel, "hostile/%s", file);
        sd_ckpt *ck = (sd_ckpt *)1;
        int rc = sd_ckpt_open(data_path(rel), &ck);
        const char *m = sd_errmsg();
        T_CHECKF(rc == code_of(code), "%s: rc %d (%s)", file, rc, m);
        T_CHECK(ck == NULL);
        T_CHECKF(!msg || strstr(m, msg), "%s: message '%s' lacks '%s'", file, m, msg);
        T_CHECKF(strstr(m, file) != NULL, "%s: message does not name the file: %s", file, m);
        T_CHECK(strchr(m, '\n') == NULL);
        n++;
    }
    fclose(f);
    printf("# %d hostile/malformed files refused\n", n);
    T_CHECK(n >= 30);
    /* missing files */
    sd_ckpt *ck;
    T_EQ_INT(sd_ckpt_open(t_path("no-such.ckpt"), &ck), SD_ENOTFOUND);
    T_CHECK(t_write_file(t_path("empty.ckpt"), "", 0) == 0);
    T_EQ_INT(sd_ckpt_open(t_path("empty.ckpt"), &ck), SD_EFORMAT);
}

/* Truncations and byte flips of real files: every outcome is OK or a one-line error. */
static void sweep(const char *file)
{
    size_t n;
    unsigned char *b = slurp(data_path(file), &n);
    T_CHECK(b != NULL);
    if (!b) return;
    unsigned char *m = malloc(n);
    int ok = 0, err = 0;
    for (size_t cut = 0; cut < n; cut += 7) {
        sd_ckpt *ck;
        int rc = sd_ckpt_open_mem(b, cut, file, &ck);
        if (rc == SD_OK) { ok++; sd_ckpt_close(ck); }
        else { err++; T_CHECK(strchr(sd_errmsg(), '\n') == NULL); }
    }
    uint64_t s = 88172645463325252ull;
    for (int it = 0; it < 1500; it++) {
        memcpy(m, b, n);
        for (int k = 0; k < 1 + it % 4; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            m[s % n] = (unsigned char)(s >> 32);
        }
        sd_ckpt *ck;
        int rc = sd_ckpt_open_mem(m, n, file, &ck);
        if (rc == SD_OK) {
            ok++;
            for (size_t i = 0; i < sd_ckpt_count(ck); i++) {   /* reads stay in bounds */
                const sd_ckpt_tensor *t = sd_ckpt_at(ck, i);
                float *f = malloc(((size_t)t->numel + 1) * sizeof *f);
                sd_ckpt_read(ck, t, SD_ST_F32, f, (size_t)t->numel);
                free(f);
            }
            sd_ckpt_close(ck);
        } else {
            err++;
            T_CHECK(strchr(sd_errmsg(), '\n') == NULL);
        }
    }
    printf("# %s: %d mutated files accepted, %d refused\n", file, ok, err);
    free(m);
    free(b);
}

static void test_mutations(void)
{
    sweep("basic.ckpt");
    sweep("views.ckpt");
}

/* The pickle alone, with storages given by the caller. */
static void test_pickle_api(void)
{
    static const unsigned char pkl[] =
        "\x80\x02}X\x01\x00\x00\x00" "xctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00" "storage"
        "ctorch\nHalfStorage\nX\x01\x00\x00\x00" "kX\x03\x00\x00\x00" "cpuK\x04tQK\x01K\x03\x85K\x01\x85"
        "\x89" "ccollections\nOrderedDict\n)RtRs.";
    uint16_t h[4] = {0x3c00, 0x4000, 0x4200, 0x4400};   /* 1 2 3 4 */
    sd_ckpt_storage st = {"k", h, sizeof h};
    sd_ckpt *ck;
    int rc = sd_ckpt_open_pickle(pkl, sizeof pkl - 1, &st, 1, "p.pkl", &ck);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (rc) return;
    const sd_ckpt_tensor *t;
    T_EQ_INT(sd_ckpt_get(ck, "x", &t), SD_OK);
    float f[3];
    T_EQ_INT(sd_ckpt_read(ck, t, SD_ST_F32, f, 3), SD_OK);
    T_NEAR(f[0], 2.0, 0);
    T_NEAR(f[2], 4.0, 0);
    T_CHECK(t->data == (const void *)(h + 1));
    sd_ckpt_close(ck);
    /* every prefix of the pickle is refused cleanly */
    for (size_t cut = 0; cut + 1 < sizeof pkl - 1; cut++) {
        rc = sd_ckpt_open_pickle(pkl, cut, &st, 1, "p.pkl", &ck);
        T_CHECKF(rc == SD_EFORMAT, "cut %zu: rc %d", cut, rc);
        if (!rc) sd_ckpt_close(ck);
    }
    /* storage too small for the pickle's numel */
    st.nbytes = 6;
    T_EQ_INT(sd_ckpt_open_pickle(pkl, sizeof pkl - 1, &st, 1, "p.pkl", &ck), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "storage 'k' has 6 bytes") != NULL);
}

static void test_convert(void)
{
    sd_ckpt *ck;
    T_EQ_INT(sd_ckpt_open(data_path("views.ckpt"), &ck), SD_OK);
    if (!ck) return;
    const char *out = t_path("views.safetensors");
    T_EQ_INT(sd_ckpt_to_safetensors(ck, out, SD_ST_NDTYPES, 0), SD_OK);
    sd_safetensors *st;
    int rc = sd_safetensors_open(out, &st);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(sd_safetensors_count(st), sd_ckpt_count(ck));
        for (size_t i = 0; i < sd_ckpt_count(ck); i++) {
            const sd_ckpt_tensor *t = sd_ckpt_at(ck, i);
            const sd_st_tensor *s = sd_safetensors_find(st, t->name);
            T_CHECKF(s != NULL, "%s missing", t->name);
            if (!s) continue;
            T_EQ_INT(s->dtype, t->dtype);
            T_EQ_INT(s->ndim, t->ndim);
            unsigned char *b = malloc(t->nbytes + 1);
            T_EQ_INT(sd_ckpt_read(ck, t, t->dtype, b, (size_t)t->numel), SD_OK);
            T_CHECKF(s->nbytes == t->nbytes && !memcmp(b, s->data, t->nbytes), "%s differs", t->name);
            free(b);
        }
        sd_safetensors_close(st);
    }
    sd_ckpt_close(ck);
    /* basic to f16 with metadata: float tensors become F16, integers stay */
    T_EQ_INT(sd_ckpt_open(data_path("basic.ckpt"), &ck), SD_OK);
    if (!ck) return;
    T_EQ_INT(sd_ckpt_to_safetensors(ck, out, SD_ST_I32, 0), SD_EINVAL);
    T_EQ_INT(sd_ckpt_to_safetensors(ck, out, SD_ST_F16, SD_CKPT_META), SD_OK);
    rc = sd_safetensors_open(out, &st);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        T_EQ_INT(sd_safetensors_find(st, "f32")->dtype, SD_ST_F16);
        T_EQ_INT(sd_safetensors_find(st, "bf16")->dtype, SD_ST_F16);
        T_EQ_INT(sd_safetensors_find(st, "i64")->dtype, SD_ST_I64);
        T_EQ_INT(sd_safetensors_find(st, "bool")->dtype, SD_ST_BOOL);
        T_EQ_STR(sd_safetensors_meta_get(st, "global_step") ? "x" : "none", "none");
        T_EQ_STR(sd_safetensors_meta_get(st, "str"), "hello");
        uint16_t h[6], g[6];
        T_EQ_INT(sd_safetensors_read_f16(st, "f32", h, 6), SD_OK);
        T_EQ_INT(sd_ckpt_read(ck, sd_ckpt_find(ck, "f32"), SD_ST_F16, g, 6), SD_OK);
        T_CHECK(!memcmp(h, g, sizeof h));
        sd_safetensors_close(st);
    }
    sd_ckpt_close(ck);
}

int main(void)
{
    T_RUN(test_basic);
    T_RUN(test_in_place);
    T_RUN(test_proto4);
    T_RUN(test_views);
    T_RUN(test_wrapped);
    T_RUN(test_numpy);
    T_RUN(test_hostile);
    T_RUN(test_mutations);
    T_RUN(test_pickle_api);
    T_RUN(test_convert);
    T_DONE();
}
