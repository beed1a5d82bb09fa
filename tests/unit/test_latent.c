/* Latent files (sd-latent(5)): both forms round trip bit-exact, the zip layout (alignment,
 * methods, fixed timestamps), kohya naming, files written by libarchive (deflate, data
 * descriptors, Zip64 extras), and malformed archives.
 *
 * Also a helper for tests/cli/latent_numpy.sh:
 *   test_latent --write DIR    writes DIR/store.npz, DIR/zstd.npz, DIR/half.npz (fixture values)
 *   test_latent --check FILE   reads FILE and compares it with the fixture values (exit 0/1) */
#include "base/error.h"
#include "base/half.h"
#include "io/latent.h"
#include "io/npy.h"
#include "io/zip.h"
#include "test.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdint.h>

/* ---- fixture: exactly representable values that a numpy script can recompute ------------- */

enum { FC = 4, FH = 3, FW = 5 };

static float fx_lat(size_t i) { return (float)((double)((long)(i * 37 % 1001) - 500) / 64.0); }
static float fx_flip(size_t i) { return (float)((double)((long)(i * 53 % 999) - 499) / 32.0); }
static float fx_mask(size_t i) { return (float)((double)(i % 256) / 255.0); }

static const char fx_meta[] = "{\"format\":1,\"tool\":\"test_latent\",\"vae_sha256\":\"00ff\",\"bucket\":[40,24],"
                              "\"flip\":true,\"dtype\":\"float32\",\"latent_mode\":\"sample\",\"note\":\"caf\xc3\xa9\"}";

static void fixture(sd_latent_file *lf, int flip, int mask)
{
    memset(lf, 0, sizeof *lf);
    lf->c = FC, lf->h = FH, lf->w = FW;
    size_t n = FC * FH * FW;
    lf->latents = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) lf->latents[i] = fx_lat(i);
    if (flip) {
        lf->latents_flipped = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) lf->latents_flipped[i] = fx_flip(i);
    }
    if (mask) {
        lf->mask_h = FH * 8, lf->mask_w = FW * 8;
        lf->alpha_mask = malloc((size_t)lf->mask_h * lf->mask_w * sizeof(float));
        for (size_t i = 0; i < (size_t)lf->mask_h * lf->mask_w; i++) lf->alpha_mask[i] = fx_mask(i);
    }
    lf->original_size[0] = 1000, lf->original_size[1] = 600;
    lf->crop_ltrb[0] = 0, lf->crop_ltrb[1] = 2, lf->crop_ltrb[2] = 40, lf->crop_ltrb[3] = 26;
    lf->meta_json = strdup(fx_meta);
}

static int same_floats(const float *a, const float *b, size_t n)
{
    if (!a || !b) return a == b;
    return !memcmp(a, b, n * sizeof(float));
}

/* Bit-exact equality of two latent files. */
static int same_file(const sd_latent_file *a, const sd_latent_file *b)
{
    size_t n = (size_t)a->c * a->h * a->w;
    return a->c == b->c && a->h == b->h && a->w == b->w && same_floats(a->latents, b->latents, n) &&
           same_floats(a->latents_flipped, b->latents_flipped, n) && a->mask_h == b->mask_h &&
           a->mask_w == b->mask_w && same_floats(a->alpha_mask, b->alpha_mask, (size_t)a->mask_h * a->mask_w) &&
           !memcmp(a->original_size, b->original_size, sizeof a->original_size) &&
           !memcmp(a->crop_ltrb, b->crop_ltrb, sizeof a->crop_ltrb) &&
           ((!a->meta_json && !b->meta_json) || (a->meta_json && b->meta_json && !strcmp(a->meta_json, b->meta_json)));
}

/* Compare with the fixture values (f16 latents compared after rounding to f16). */
static int check_fixture(const sd_latent_file *lf, int want_flip, int want_mask)
{
    if (lf->c != FC || lf->h != FH || lf->w != FW) return 0;
    for (size_t i = 0; i < FC * FH * FW; i++) {
        float a = fx_lat(i), b = fx_flip(i);
        if (lf->half) a = sd_f16_to_f32(sd_f32_to_f16(a)), b = sd_f16_to_f32(sd_f32_to_f16(b));
        if (memcmp(&lf->latents[i], &a, 4)) return 0;
        if (want_flip && (!lf->latents_flipped || memcmp(&lf->latents_flipped[i], &b, 4))) return 0;
    }
    if (!want_flip && lf->latents_flipped) return 0;
    if (want_mask) {
        if (!lf->alpha_mask || lf->mask_h != FH * 8 || lf->mask_w != FW * 8) return 0;
        for (size_t i = 0; i < (size_t)FH * 8 * FW * 8; i++) {
            float m = fx_mask(i);
            if (memcmp(&lf->alpha_mask[i], &m, 4)) return 0;
        }
    } else if (lf->alpha_mask) {
        return 0;
    }
    return lf->original_size[0] == 1000 && lf->original_size[1] == 600 && lf->crop_ltrb[0] == 0 &&
           lf->crop_ltrb[1] == 2 && lf->crop_ltrb[2] == 40 && lf->crop_ltrb[3] == 26;
}

static void free_fixture(sd_latent_file *lf) { sd_latent_free(lf); }

/* ---- zip inspection helpers --------------------------------------------------------------- */

static unsigned rd16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static void wr32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8), p[2] = (unsigned char)(v >> 16), p[3] = (unsigned char)(v >> 24); }

/* Offset of the local header / the central header of member `name`, or -1. */
static long find_local(const unsigned char *z, size_t n, const char *name)
{
    size_t off = 0, nl = strlen(name);
    while (off + 30 <= n && rd32(z + off) == 0x04034b50) {
        unsigned fnl = rd16(z + off + 26), xl = rd16(z + off + 28);
        if (fnl == nl && !memcmp(z + off + 30, name, nl)) return (long)off;
        off += 30 + fnl + xl + rd32(z + off + 18);
    }
    return -1;
}

static long find_central(const unsigned char *z, size_t n, const char *name)
{
    if (n < 22) return -1;
    size_t cd = rd32(z + n - 22 + 16), cnt = rd16(z + n - 22 + 10), nl = strlen(name);
    for (size_t i = 0; i < cnt && cd + 46 <= n; i++) {
        unsigned fnl = rd16(z + cd + 28), xl = rd16(z + cd + 30), cl = rd16(z + cd + 32);
        if (fnl == nl && !memcmp(z + cd + 46, name, nl)) return (long)cd;
        cd += 46 + fnl + xl + cl;
    }
    return -1;
}

static long data_offset(const unsigned char *z, size_t n, const char *name)
{
    long o = find_local(z, n, name);
    return o < 0 ? -1 : o + 30 + (long)rd16(z + o + 26) + (long)rd16(z + o + 28);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_roundtrip_both_forms(void)
{
    for (int form = 0; form < 2; form++)
        for (int opt = 0; opt < 4; opt++) {
            sd_latent_file lf, back;
            fixture(&lf, opt & 1, opt & 2);
            sd_latent_write_opts o = {.compress = form ? SD_LATENT_STORE : SD_LATENT_ZSTD};
            void *buf;
            size_t n;
            T_EQ_INT(sd_latent_write_memory(&lf, &o, &buf, &n), SD_OK);
            int rc = sd_latent_read_memory(buf, n, "mem", NULL, &back);
            T_CHECKF(rc == SD_OK, "form %d opt %d: %s", form, opt, sd_errmsg());
            T_CHECKF(rc == SD_OK && same_file(&lf, &back) && check_fixture(&back, opt & 1, opt & 2) && !back.half,
                     "form %d opt %d differs", form, opt);
            sd_latent_free(&back);
            /* The file path gives the same bytes as memory. */
            const char *p = t_path(form ? "rt_store.npz" : "rt_zstd.npz");
            T_EQ_INT(sd_latent_write(p, &lf, &o), SD_OK);
            char *fb = NULL;
            size_t fn = 0;
            FILE *f = fopen(p, "rb");
            if (f) {
                fb = malloc(n + 16);
                fn = fread(fb, 1, n + 16, f);
                fclose(f);
            }
            T_CHECK(fb && fn == n && !memcmp(fb, buf, n));
            free(fb);
            T_EQ_INT(sd_latent_read(p, NULL, &back), SD_OK);
            T_CHECK(same_file(&lf, &back));
            sd_latent_free(&back);
            free(buf);
            free_fixture(&lf);
        }
}

static void test_layout(void)
{
    sd_latent_file lf;
    fixture(&lf, 1, 1);
    static const char *names[] = {"latents.npy", "original_size.npy", "crop_ltrb.npy", "latents_flipped.npy",
                                  "alpha_mask.npy", "sd_meta.json"};
    for (int form = 0; form < 2; form++) {
        sd_latent_write_opts o = {.compress = form ? SD_LATENT_STORE : SD_LATENT_ZSTD};
        void *buf, *buf2;
        size_t n, n2;
        T_EQ_INT(sd_latent_write_memory(&lf, &o, &buf, &n), SD_OK);
        T_EQ_INT(sd_latent_write_memory(&lf, &o, &buf2, &n2), SD_OK);
        T_CHECK(n == n2 && !memcmp(buf, buf2, n));  /* deterministic bytes */
        const unsigned char *z = buf;
        long prev = -1;
        for (int i = 0; i < 6; i++) {
            long lo = find_local(z, n, names[i]), co = find_central(z, n, names[i]);
            T_CHECKF(lo > prev && co > 0, "%s missing or out of order", names[i]);
            if (lo < 0 || co < 0) continue;
            prev = lo;
            T_EQ_INT(data_offset(z, n, names[i]) % 64, 0);
            T_EQ_INT(rd16(z + lo + 8), form ? 0 : 93);              /* method */
            T_EQ_INT(rd16(z + lo + 4), form ? 20 : 63);             /* version needed */
            T_EQ_INT(rd16(z + lo + 6), 0);                          /* no data descriptor */
            T_EQ_INT(rd16(z + lo + 12), 0x21);                      /* 1980-01-01 */
            T_EQ_INT(rd32(z + co + 42), lo);                        /* central → local */
            T_EQ_INT(rd32(z + co + 16), rd32(z + lo + 14));         /* same CRC */
            T_EQ_INT(rd16(z + lo + 30 + rd16(z + lo + 26)), 0xD935); /* alignment extra */
            if (form && i < 5) {  /* stored: the .npy data itself is 64-aligned in the file */
                sd_npy_header h;
                long d = data_offset(z, n, names[i]);
                T_EQ_INT(sd_npy_parse_header(z + d, n - (size_t)d, &h), SD_OK);
                T_EQ_INT((d + (long)h.data_offset) % 64, 0);
            }
        }
        T_EQ_INT(rd16(z + n - 22 + 10), 6);
        free(buf);
        free(buf2);
    }
    free_fixture(&lf);
}

static void test_half_and_defaults(void)
{
    sd_latent_file lf, back;
    fixture(&lf, 1, 1);
    free(lf.meta_json);
    lf.meta_json = NULL;
    sd_latent_write_opts o = {.compress = SD_LATENT_STORE, .half = 1};
    void *buf;
    size_t n;
    T_EQ_INT(sd_latent_write_memory(&lf, &o, &buf, &n), SD_OK);
    T_EQ_INT(sd_latent_read_memory(buf, n, "half", NULL, &back), SD_OK);
    T_EQ_INT(back.half, 1);
    T_CHECK(check_fixture(&back, 1, 1));
    T_EQ_STR(back.meta_json, "{\"format\":1}");
    long d = data_offset(buf, n, "latents.npy");
    sd_npy_header h;
    T_CHECK(d > 0 && sd_npy_parse_header((unsigned char *)buf + d, n - (size_t)d, &h) == SD_OK && h.dtype == SD_NPY_F2);
    d = data_offset(buf, n, "alpha_mask.npy");
    T_CHECK(d > 0 && sd_npy_parse_header((unsigned char *)buf + d, n - (size_t)d, &h) == SD_OK && h.dtype == SD_NPY_F4);
    sd_latent_free(&back);
    free(buf);
    /* zstd level is honoured and still reads back. */
    o.compress = SD_LATENT_ZSTD, o.half = 0, o.zstd_level = 19;
    T_EQ_INT(sd_latent_write_memory(&lf, &o, &buf, &n), SD_OK);
    T_EQ_INT(sd_latent_read_memory(buf, n, NULL, NULL, &back), SD_OK);
    T_CHECK(check_fixture(&back, 1, 1));
    sd_latent_free(&back);
    free(buf);
    free_fixture(&lf);
}

static void test_write_errors(void)
{
    sd_latent_file lf;
    fixture(&lf, 0, 1);
    void *buf;
    size_t n;
    lf.mask_w = 39;
    T_EQ_INT(sd_latent_write_memory(&lf, NULL, &buf, &n), SD_EINVAL);
    lf.mask_w = 40;
    free(lf.meta_json);
    lf.meta_json = strdup("{\"a\":1");
    T_EQ_INT(sd_latent_write_memory(&lf, NULL, &buf, &n), SD_EFORMAT);
    free(lf.meta_json);
    lf.meta_json = strdup("[1]");
    T_EQ_INT(sd_latent_write_memory(&lf, NULL, &buf, &n), SD_EFORMAT);
    lf.c = 0;
    T_EQ_INT(sd_latent_write_memory(&lf, NULL, &buf, &n), SD_EINVAL);
    lf.c = FC;
    float *l = lf.latents;
    lf.latents = NULL;
    T_EQ_INT(sd_latent_write_memory(&lf, NULL, &buf, &n), SD_EINVAL);
    lf.latents = l;
    /* A directory that does not exist: the atomic open fails, nothing is left behind. */
    T_CHECK(sd_latent_write(t_path("no/such/dir/x.npz"), &lf, NULL) < 0);
    T_CHECK(*sd_errmsg());
    free_fixture(&lf);
}

static void test_meta_validate(void)
{
    static const char *good[] = {"{}", " {\"a\": [1, -2.5e+3, 0, 0.5, true, false, null, {\"b\": \"\\u00e9\\n\"}]} ",
                                 "{\"\xe2\x82\xac\": \"\xf0\x9f\x98\x80\"}"};
    static const char *bad[] = {"", "[]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{a:1}", "{\"a\":01}",
                                "{\"a\":1.}", "{\"a\":\"\\x\"}", "{\"a\":\"\x01\"}", "{\"a\":\"\xc0\xaf\"}",
                                "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xff\"}", "{\"a\":tru}", "{} {}",
                                "{\"a\":\"\\u12\"}", "{\"a\":-}", "{\"a\":1e}"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        T_CHECKF(sd_latent_meta_validate(good[i], strlen(good[i])) == SD_OK, "good %zu: %s", i, sd_errmsg());
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        T_CHECKF(sd_latent_meta_validate(bad[i], strlen(bad[i])) == SD_EFORMAT, "bad %zu accepted", i);
    char deep[300];
    memset(deep, '[', 150);
    memset(deep + 150, ']', 149);
    deep[0] = '{';
    deep[299] = 0;
    T_EQ_INT(sd_latent_meta_validate(deep, strlen(deep)), SD_EFORMAT);
}

static void test_kohya_name(void)
{
    char b[256];
    T_CHECK(sd_latent_kohya_name(b, sizeof b, "data/img/cat.png", 1024, 768, 0) > 0);
    T_EQ_STR(b, "data/img/cat_1024x0768_sd.npz");
    sd_latent_kohya_name(b, sizeof b, "a.b/c", 64, 8, 1);
    T_EQ_STR(b, "a.b/c_0064x0008_sdxl.npz");
    sd_latent_kohya_name(b, sizeof b, "x/.hidden", 12345, 1, 0);
    T_EQ_STR(b, "x/.hidden_12345x0001_sd.npz");
    sd_latent_kohya_name(b, sizeof b, "..a.tar.gz", 1, 1, 0);
    T_EQ_STR(b, "..a.tar_0001x0001_sd.npz");
    T_EQ_INT(sd_latent_kohya_name(b, 10, "data/img/cat.png", 1, 1, 0), SD_ERANGE);
}

/* Files written by libarchive's zip writer, like np.savez / np.savez_compressed / kohya do:
 * deflate or store, sizes known or not (data descriptors and Zip64 extras). */
static void test_read_libarchive_written(void)
{
    sd_latent_file lf;
    fixture(&lf, 1, 0);
    int64_t ls[3] = {FC, FH, FW}, two = 2, four = 4;
    void *m[4];
    size_t mn[4];
    sd_npy_encode(SD_NPY_F4, 3, ls, lf.latents, &m[0], &mn[0]);
    sd_npy_encode(SD_NPY_I8, 1, &two, lf.original_size, &m[1], &mn[1]);
    sd_npy_encode(SD_NPY_I8, 1, &four, lf.crop_ltrb, &m[2], &mn[2]);
    sd_npy_encode(SD_NPY_F4, 3, ls, lf.latents_flipped, &m[3], &mn[3]);
    static const char *names[] = {"latents.npy", "original_size.npy", "crop_ltrb.npy", "latents_flipped.npy"};
    for (int variant = 0; variant < 4; variant++) {
        size_t cap = 1 << 16, used = 0;
        unsigned char *z = malloc(cap);
        struct archive *a = archive_write_new();
        archive_write_set_format_zip(a);
        if (variant & 1) archive_write_zip_set_compression_deflate(a);
        else archive_write_zip_set_compression_store(a);
        archive_write_open_memory(a, z, cap, &used);
        for (int i = 0; i < 4; i++) {
            struct archive_entry *e = archive_entry_new();
            archive_entry_set_pathname(e, names[i]);
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            if (variant & 2) archive_entry_unset_size(e);
            else archive_entry_set_size(e, (la_int64_t)mn[i]);
            archive_write_header(a, e);
            archive_write_data(a, m[i], mn[i]);
            archive_entry_free(e);
        }
        archive_write_close(a);
        archive_write_free(a);
        sd_latent_file back;
        int rc = sd_latent_read_memory(z, used, "libarchive.npz", NULL, &back);
        T_CHECKF(rc == SD_OK, "variant %d: %s", variant, sd_errmsg());
        T_CHECKF(rc == SD_OK && check_fixture(&back, 1, 0) && !back.meta_json, "variant %d differs", variant);
        sd_latent_free(&back);
        free(z);
    }
    for (int i = 0; i < 4; i++) free(m[i]);
    free_fixture(&lf);
}

/* ---- malformed archives ------------------------------------------------------------------- */

typedef struct {
    const char *name;
    sd_npy_dtype dt;
    int ndim;
    int64_t shape[3];
    int raw;           /* 1: `rawdata` instead of an encoded array */
    const char *rawdata;
    size_t rawlen;     /* 0: strlen(rawdata) */
} member;

/* Build a stored zip from members (encoded with zeros, or raw bytes). */
static void *build(const member *ms, int n, int method, size_t *len)
{
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    for (int i = 0; i < n; i++) {
        void *d;
        size_t dn;
        if (ms[i].raw) {
            dn = ms[i].rawlen ? ms[i].rawlen : strlen(ms[i].rawdata);
            d = malloc(dn);
            memcpy(d, ms[i].rawdata, dn);
        } else {
            size_t cnt = 1;
            for (int k = 0; k < ms[i].ndim; k++) cnt *= (size_t)ms[i].shape[k];
            void *zeros = calloc(cnt ? cnt : 1, 8);
            sd_npy_encode(ms[i].dt, ms[i].ndim, ms[i].shape, zeros, &d, &dn);
            free(zeros);
        }
        sd_zip_part p = {d, dn};
        sd_zip_add(&zw, ms[i].name, method, &p, 1);
        free(d);
    }
    void *out = NULL;
    sd_zip_writer_finish(&zw, &out, len);
    sd_zip_writer_free(&zw);
    return out;
}

/* An encoded array of zeros / raw bytes (len 0: strlen). */
#define A(nm, ty, nd, s0, s1, s2) {.name = nm, .dt = ty, .ndim = nd, .shape = {s0, s1, s2}}
#define R(nm, data, len) {.name = nm, .raw = 1, .rawdata = data, .rawlen = len}
#define LAT A("latents.npy", SD_NPY_F4, 3, 4, 2, 3)
#define ORIG A("original_size.npy", SD_NPY_I8, 1, 2, 0, 0)
#define CROP A("crop_ltrb.npy", SD_NPY_I8, 1, 4, 0, 0)

typedef struct {
    const char *what;
    member ms[5];
    int n;
    int code;
    const char *msg;  /* substring expected in the message */
} bad_zip;

static void test_malformed_members(void)
{
    static const bad_zip cases[] = {
        {"missing latents", {ORIG, CROP}, 2, SD_EFORMAT, "missing member latents.npy"},
        {"missing original_size", {LAT, CROP}, 2, SD_EFORMAT, "missing member original_size.npy"},
        {"missing crop_ltrb", {LAT, ORIG}, 2, SD_EFORMAT, "missing member crop_ltrb.npy"},
        {"old arr_0 format", {A("arr_0.npy", SD_NPY_F4, 3, 4, 2, 3)}, 1, SD_EUNSUPPORTED, "arr_0"},
        {"latents int", {A("latents.npy", SD_NPY_I4, 3, 4, 2, 3), ORIG, CROP}, 3, SD_EFORMAT, "expected float32"},
        {"latents f64", {A("latents.npy", SD_NPY_F8, 3, 4, 2, 3), ORIG, CROP}, 3, SD_EFORMAT, "float64"},
        {"control", {A("latents.npy", SD_NPY_F4, 3, 1, 4, 2), ORIG, CROP}, 3, SD_OK, NULL},
        {"latents 2-D", {A("latents.npy", SD_NPY_F4, 2, 4, 2, 0), ORIG, CROP}, 3, SD_EFORMAT, "3-D"},
        {"latents empty axis", {A("latents.npy", SD_NPY_F4, 3, 4, 0, 3), ORIG, CROP}, 3, SD_EFORMAT, "empty"},
        {"original_size f4", {LAT, A("original_size.npy", SD_NPY_F4, 1, 2, 0, 0), CROP}, 3, SD_EFORMAT, "expected int64"},
        {"original_size [3]", {LAT, A("original_size.npy", SD_NPY_I8, 1, 3, 0, 0), CROP}, 3, SD_EFORMAT, "(2,)"},
        {"crop_ltrb [2,2]", {LAT, ORIG, A("crop_ltrb.npy", SD_NPY_I8, 2, 2, 2, 0)}, 3, SD_EFORMAT, "(4,)"},
        {"flipped shape", {LAT, ORIG, CROP, A("latents_flipped.npy", SD_NPY_F4, 3, 4, 3, 2)}, 4, SD_EFORMAT, "like latents"},
        {"flipped u1", {LAT, ORIG, CROP, A("latents_flipped.npy", SD_NPY_U1, 3, 4, 2, 3)}, 4, SD_EFORMAT, "uint8"},
        {"mask shape", {LAT, ORIG, CROP, A("alpha_mask.npy", SD_NPY_F4, 2, 16, 23, 0)}, 4, SD_EFORMAT, "(16, 24)"},
        {"mask 3-D", {LAT, ORIG, CROP, A("alpha_mask.npy", SD_NPY_F4, 3, 1, 16, 24)}, 4, SD_EFORMAT, "alpha_mask"},
        {"mask u1", {LAT, ORIG, CROP, A("alpha_mask.npy", SD_NPY_U1, 2, 16, 24, 0)}, 4, SD_EFORMAT, "uint8"},
        {"duplicate latents", {LAT, LAT, ORIG, CROP}, 4, SD_EFORMAT, "duplicate member latents.npy"},
        {"latents not npy", {R("latents.npy", "hello", 0), ORIG, CROP}, 3, SD_EFORMAT, "latents.npy"},
        {"latents bad header", {R("latents.npy", "\x93NUMPY\x01\x00\x08\x00{'a': 1}", 18), ORIG, CROP}, 3, SD_EFORMAT, "unexpected key"},
        {"latents short data", {R("latents.npy", "\x93NUMPY\x01\x00\x3b\x00{'descr':'<f4','fortran_order':False,'shape':(1,1,2)}     \n\1\2\3\4", 73), ORIG, CROP}, 3, SD_EFORMAT, "truncated .npy data"},
        {"meta not json", {LAT, ORIG, CROP, R("sd_meta.json", "{format: 1}", 0)}, 4, SD_EFORMAT, "sd_meta.json"},
        {"meta array", {LAT, ORIG, CROP, R("sd_meta.json", "[1]", 0)}, 4, SD_EFORMAT, "not a JSON object"},
        {"meta bad utf8", {LAT, ORIG, CROP, R("sd_meta.json", "{\"a\":\"\xfe\"}", 0)}, 4, SD_EFORMAT, "invalid JSON"},
    };
    for (int method = 0; method < 2; method++)
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            const bad_zip *c = &cases[i];
            size_t n;
            void *z = build(c->ms, c->n, method ? SD_ZIP_ZSTD : SD_ZIP_STORE, &n);
            sd_latent_file lf;
            sd_err_clear();
            int rc = sd_latent_read_memory(z, n, "bad.npz", NULL, &lf);
            if (c->code == SD_OK) {  /* control case: well-formed */
                T_CHECKF(rc == SD_OK, "%s: %s", c->what, sd_errmsg());
            } else {
                T_CHECKF(rc == c->code, "%s: got %d (%s)", c->what, rc, sd_errmsg());
                T_CHECKF(strstr(sd_errmsg(), c->msg) && !strncmp(sd_errmsg(), "bad.npz: ", 9),
                         "%s: message \"%s\" lacks \"%s\"", c->what, sd_errmsg(), c->msg);
                T_CHECK(lf.latents == NULL);
            }
            sd_latent_free(&lf);
            free(z);
        }
}

static void test_accepted_variants(void)
{
    /* f16 latents, int32 sizes (numpy 1.x on Windows), big-endian and Fortran-order latents,
     * unknown members are skipped. */
    uint16_t h[24];
    float want[24];
    for (int i = 0; i < 24; i++) want[i] = (float)(i - 12) * 0.25f, h[i] = sd_f32_to_f16(want[i]);
    int32_t o32[2] = {640, 480}, c32[4] = {1, 2, 3, 4};
    int64_t s3[3] = {4, 2, 3}, s1 = 2, s4 = 4;
    void *m[4];
    size_t mn[4];
    sd_npy_encode(SD_NPY_F2, 3, s3, h, &m[0], &mn[0]);
    sd_npy_encode(SD_NPY_I4, 1, &s1, o32, &m[1], &mn[1]);
    sd_npy_encode(SD_NPY_I4, 1, &s4, c32, &m[2], &mn[2]);
    sd_npy_encode(SD_NPY_U1, 1, &s4, "abcd", &m[3], &mn[3]);
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    sd_zip_part p[4] = {{m[0], mn[0]}, {m[1], mn[1]}, {m[2], mn[2]}, {m[3], mn[3]}};
    sd_zip_add(&zw, "latents_64x64.npy", SD_ZIP_STORE, &p[3], 1);
    sd_zip_add(&zw, "latents.npy", SD_ZIP_ZSTD, &p[0], 1);
    sd_zip_add(&zw, "original_size.npy", SD_ZIP_STORE, &p[1], 1);
    sd_zip_add(&zw, "crop_ltrb.npy", SD_ZIP_ZSTD, &p[2], 1);
    void *z;
    size_t n;
    T_EQ_INT(sd_zip_writer_finish(&zw, &z, &n), SD_OK);
    sd_zip_writer_free(&zw);
    sd_latent_file lf;
    T_EQ_INT(sd_latent_read_memory(z, n, "v.npz", NULL, &lf), SD_OK);
    T_CHECK(lf.half && lf.latents && !memcmp(lf.latents, want, sizeof want));
    T_CHECK(lf.original_size[0] == 640 && lf.original_size[1] == 480 && lf.crop_ltrb[3] == 4);
    sd_latent_free(&lf);
    free(z);
    for (int i = 0; i < 4; i++) free(m[i]);

    /* Big-endian Fortran-order latents, hand-built. */
    char hdr[128];
    const char *dict = "{'descr': '>f4', 'fortran_order': True, 'shape': (4, 2, 3), }";
    memset(hdr, ' ', sizeof hdr);
    memcpy(hdr, "\x93NUMPY\x01\x00\x76\x00", 10);
    memcpy(hdr + 10, dict, strlen(dict));
    hdr[127] = '\n';
    unsigned char data[96];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++) {
                float v = want[(i * 2 + j) * 3 + k];
                uint32_t u;
                memcpy(&u, &v, 4);
                unsigned char *d = data + 4 * (i + 4 * (j + 2 * k));
                d[0] = (unsigned char)(u >> 24), d[1] = (unsigned char)(u >> 16), d[2] = (unsigned char)(u >> 8), d[3] = (unsigned char)u;
            }
    int64_t o64[2] = {1, 2}, c64[4] = {0, 0, 1, 2};
    sd_npy_encode(SD_NPY_I8, 1, &s1, o64, &m[1], &mn[1]);
    sd_npy_encode(SD_NPY_I8, 1, &s4, c64, &m[2], &mn[2]);
    sd_zip_writer_init(&zw, NULL, 0);
    sd_zip_part lp[2] = {{hdr, 128}, {data, 96}};
    sd_zip_add(&zw, "latents.npy", SD_ZIP_STORE, lp, 2);
    sd_zip_part q1 = {m[1], mn[1]}, q2 = {m[2], mn[2]};
    sd_zip_add(&zw, "original_size.npy", SD_ZIP_STORE, &q1, 1);
    sd_zip_add(&zw, "crop_ltrb.npy", SD_ZIP_STORE, &q2, 1);
    T_EQ_INT(sd_zip_writer_finish(&zw, &z, &n), SD_OK);
    sd_zip_writer_free(&zw);
    T_EQ_INT(sd_latent_read_memory(z, n, "be.npz", NULL, &lf), SD_OK);
    T_CHECK(!lf.half && lf.latents && !memcmp(lf.latents, want, sizeof want));
    sd_latent_free(&lf);
    free(z);
    free(m[1]);
    free(m[2]);
}

static int read_bad(const void *z, size_t n, const sd_latent_read_opts *o)
{
    sd_latent_file lf;
    sd_err_clear();
    int rc = sd_latent_read_memory(z, n, "bad.npz", o, &lf);
    if (rc == SD_OK) sd_latent_free(&lf);
    else if (lf.latents || !*sd_errmsg() || strchr(sd_errmsg(), '\n')) return 999;  /* clean, one line */
    if (getenv("TEST_LATENT_VERBOSE")) printf("#   %d: %s\n", rc, sd_errmsg());
    return rc;
}

static void test_malformed_containers(void)
{
    sd_latent_file lf;
    fixture(&lf, 1, 1);
    for (int form = 0; form < 2; form++) {
        sd_latent_write_opts o = {.compress = form ? SD_LATENT_STORE : SD_LATENT_ZSTD};
        unsigned char *z;
        size_t n;
        T_EQ_INT(sd_latent_write_memory(&lf, &o, (void **)&z, &n), SD_OK);
        unsigned char *c = malloc(n);
        /* Every truncation fails cleanly (libarchive needs the central directory). */
        int trunc_ok = 1;
        for (size_t k = 0; k < n; k += (k < 200 ? 1 : 7)) {
            int rc = read_bad(z, k, NULL);
            if (rc >= 0 || rc == 999) trunc_ok = 0, printf("#   form %d: truncation at %zu: %d %s\n", form, k, rc, sd_errmsg());
        }
        T_CHECK(trunc_ok);
        /* Bad CRC: one flipped bit in the latents data. */
        memcpy(c, z, n);
        long d = data_offset(z, n, "latents.npy");
        c[d + 200] ^= 0x10;
        T_EQ_INT(read_bad(c, n, NULL), SD_EFORMAT);
        T_CHECKF(strstr(sd_errmsg(), "latents.npy"), "%s", sd_errmsg());
        /* CRC field wrong in both headers (data intact). */
        memcpy(c, z, n);
        long lo = find_local(z, n, "crop_ltrb.npy"), co = find_central(z, n, "crop_ltrb.npy");
        wr32(c + lo + 14, rd32(c + lo + 14) ^ 1);
        wr32(c + co + 16, rd32(c + co + 16) ^ 1);
        T_EQ_INT(read_bad(c, n, NULL), SD_EFORMAT);
        T_CHECKF(strstr(sd_errmsg(), "CRC"), "%s", sd_errmsg());
        /* Declared uncompressed size huge (zip-bomb-like) in both headers. */
        memcpy(c, z, n);
        lo = find_local(z, n, "latents.npy"), co = find_central(z, n, "latents.npy");
        wr32(c + lo + 22, 0xFFFFFFF0u);
        wr32(c + co + 24, 0xFFFFFFF0u);
        sd_latent_read_opts small = {.max_member = 1 << 20};
        int rc = read_bad(c, n, &small);
        T_CHECKF(rc == SD_ERANGE || rc == SD_EFORMAT, "bomb: %d %s", rc, sd_errmsg());
        rc = read_bad(c, n, NULL);
        T_CHECKF(rc == SD_ERANGE || rc == SD_EFORMAT, "bomb default: %d %s", rc, sd_errmsg());
        /* Declared size smaller than the data. */
        memcpy(c, z, n);
        wr32(c + lo + 22, rd32(z + lo + 22) - 4);
        wr32(c + co + 24, rd32(z + co + 24) - 4);
        if (form) wr32(c + lo + 18, rd32(z + lo + 18) - 4), wr32(c + co + 20, rd32(z + co + 20) - 4);
        T_EQ_INT(read_bad(c, n, NULL), SD_EFORMAT);
        /* Member above the reader's bound. */
        sd_latent_read_opts tiny = {.max_member = 1000};
        T_EQ_INT(read_bad(z, n, &tiny), SD_ERANGE);
        T_CHECKF(strstr(sd_errmsg(), "alpha_mask.npy") && strstr(sd_errmsg(), "limit"), "%s", sd_errmsg());
        /* Unsupported method id in both headers. */
        memcpy(c, z, n);
        lo = find_local(z, n, "latents.npy"), co = find_central(z, n, "latents.npy");
        c[lo + 8] = 99, c[co + 10] = 99;
        T_EQ_INT(read_bad(c, n, NULL), SD_EFORMAT);
        /* Central directory offset pointing outside the file. */
        memcpy(c, z, n);
        wr32(c + n - 22 + 16, 0x7FFFFFF0u);
        T_CHECK(read_bad(c, n, NULL) < 0 && read_bad(c, n, NULL) != 999);
        /* Local header signature destroyed. */
        memcpy(c, z, n);
        c[find_local(z, n, "original_size.npy")] = 'X';
        T_EQ_INT(read_bad(c, n, NULL), SD_EFORMAT);
        /* Garbage in the middle of the zstd frame / the stored npy header. */
        memcpy(c, z, n);
        d = data_offset(z, n, "latents.npy");
        memset(c + d, 0xAB, 16);
        T_EQ_INT(read_bad(c, n, NULL), SD_EFORMAT);
        free(c);
        free(z);
    }
    /* Not a zip at all, an empty zip, a tar, nothing. */
    T_EQ_INT(read_bad("\x93NUMPY\x01\x00", 8, NULL), SD_EFORMAT);
    T_EQ_INT(read_bad("PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 22, NULL), SD_EFORMAT);
    T_EQ_INT(read_bad("", 0, NULL), SD_EFORMAT);
    char tar[1024] = "latents.npy";
    memcpy(tar + 257, "ustar", 6);
    T_EQ_INT(read_bad(tar, sizeof tar, NULL), SD_EFORMAT);
    sd_latent_file x;
    T_EQ_INT(sd_latent_read(t_path("does-not-exist.npz"), NULL, &x), SD_ENOTFOUND);
    T_CHECK(strstr(sd_errmsg(), "does-not-exist.npz"));
    T_EQ_INT(t_write_file(t_path("junk.npz"), "junk junk junk", 14), 0);
    T_EQ_INT(sd_latent_read(t_path("junk.npz"), NULL, &x), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "junk.npz: "));
    /* NaN in latents. */
    lf.latents[7] = NAN;
    void *z;
    size_t n;
    T_EQ_INT(sd_latent_write_memory(&lf, NULL, &z, &n), SD_OK);
    T_EQ_INT(read_bad(z, n, NULL), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "non-finite"));
    free(z);
    free_fixture(&lf);
}

/* ---- helper modes for tests/cli/latent_numpy.sh ------------------------------------------- */

static int cli_write(const char *dir)
{
    char p[4096];
    sd_latent_file lf;
    fixture(&lf, 1, 1);
    sd_latent_write_opts st = {.compress = SD_LATENT_STORE}, zs = {.compress = SD_LATENT_ZSTD},
                         hf = {.compress = SD_LATENT_STORE, .half = 1};
    int rc = 0;
    snprintf(p, sizeof p, "%s/store.npz", dir);
    rc |= sd_latent_write(p, &lf, &st);
    snprintf(p, sizeof p, "%s/zstd.npz", dir);
    rc |= sd_latent_write(p, &lf, &zs);
    snprintf(p, sizeof p, "%s/half.npz", dir);
    rc |= sd_latent_write(p, &lf, &hf);
    if (rc) fprintf(stderr, "test_latent: %s\n", sd_errmsg());
    free_fixture(&lf);
    return rc ? 1 : 0;
}

static int cli_check(const char *path)
{
    sd_latent_file lf;
    if (sd_latent_read(path, NULL, &lf)) {
        fprintf(stderr, "test_latent: %s\n", sd_errmsg());
        return 1;
    }
    int ok = check_fixture(&lf, lf.latents_flipped != NULL, lf.alpha_mask != NULL);
    printf("%s: %dx%dx%d flip=%d mask=%d half=%d meta=%s values=%s\n", path, lf.c, lf.h, lf.w,
           lf.latents_flipped != NULL, lf.alpha_mask != NULL, lf.half, lf.meta_json ? "yes" : "no",
           ok ? "match" : "DIFFER");
    sd_latent_free(&lf);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--write")) return cli_write(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--check")) return cli_check(argv[2]);
    T_RUN(test_roundtrip_both_forms);
    T_RUN(test_layout);
    T_RUN(test_half_and_defaults);
    T_RUN(test_write_errors);
    T_RUN(test_meta_validate);
    T_RUN(test_kohya_name);
    T_RUN(test_read_libarchive_written);
    T_RUN(test_malformed_members);
    T_RUN(test_accepted_variants);
    T_RUN(test_malformed_containers);
    T_DONE();
}
