/* .npy reader/writer: numpy-1.24 byte-exact headers, every dtype round trip, v1/v2/v3 headers,
 * header literal variants, Fortran order, big-endian, and malformed inputs. */
#include "base/error.h"
#include "io/npy.h"
#include "test.h"

#include <stdint.h>

/* Build a .npy image from a raw header dict text (padded numpy-style unless raw_len is set)
 * plus data. Returns the length. */
static size_t mk(unsigned char *out, int version, const char *dict, const void *data, size_t dn)
{
    size_t pre = version == 1 ? 10 : 12, dl = strlen(dict);
    size_t hl = dl + 1, pad = 64 - (pre + hl) % 64;
    size_t hlen = hl + pad;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)version;
    out[7] = 0;
    out[8] = (unsigned char)hlen;
    out[9] = (unsigned char)(hlen >> 8);
    if (version > 1) {
        out[10] = (unsigned char)(hlen >> 16);
        out[11] = (unsigned char)(hlen >> 24);
    }
    memcpy(out + pre, dict, dl);
    memset(out + pre + dl, ' ', pad);
    out[pre + hlen - 1] = '\n';
    if (dn) memcpy(out + pre + hlen, data, dn);
    return pre + hlen + dn;
}

/* The header numpy 1.24 writes: dict, 21-digit growth spaces, padding to `total`, '\n'. */
static void check_header(sd_npy_dtype t, int ndim, const int64_t *shape, const char *dict, size_t total)
{
    char got[SD_NPY_HEADER_CAP], want[SD_NPY_HEADER_CAP];
    long n = sd_npy_header_format(got, sizeof got, t, ndim, shape);
    T_EQ_INT(n, (long)total);
    memcpy(want, "\x93NUMPY\x01\x00", 8);
    want[8] = (char)((total - 10) & 0xff);
    want[9] = (char)((total - 10) >> 8);
    memset(want + 10, ' ', total - 10);
    memcpy(want + 10, dict, strlen(dict));
    want[total - 1] = '\n';
    T_CHECKF(n == (long)total && !memcmp(got, want, total), "header for %s differs", dict);
}

static void test_header_numpy_bytes(void)
{
    int64_t s1[] = {4, 64, 64}, s2[] = {2}, s4[] = {0, 3}, s5[] = {12345678901LL, 1}, s6[32];
    for (int i = 0; i < 32; i++) s6[i] = 1;
    check_header(SD_NPY_F4, 3, s1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 64, 64), }", 128);
    check_header(SD_NPY_I8, 1, s2, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 128);
    check_header(SD_NPY_F2, 0, NULL, "{'descr': '<f2', 'fortran_order': False, 'shape': (), }", 128);
    check_header(SD_NPY_U1, 2, s4, "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 3), }", 128);
    check_header(SD_NPY_B1, 2, s5, "{'descr': '|b1', 'fortran_order': False, 'shape': (12345678901, 1), }", 128);
    check_header(SD_NPY_F8, 32, s6,
                 "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, "
                 "1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), }", 192);
    char small[64];
    T_EQ_INT(sd_npy_header_format(small, sizeof small, SD_NPY_F4, 3, s1), SD_ERANGE);
    T_EQ_INT(sd_npy_header_format(small, sizeof small, SD_NPY_NDTYPES, 3, s1), SD_EINVAL);
    int64_t neg[] = {-1};
    T_EQ_INT(sd_npy_header_format(small, sizeof small, SD_NPY_F4, 1, neg), SD_EINVAL);
}

static void test_roundtrip_all_dtypes(void)
{
    unsigned char src[8 * 24];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (unsigned char)(i * 37 + 11);
    for (int t = 0; t < SD_NPY_NDTYPES; t++) {
        int64_t shape[3] = {2, 3, 4};
        void *buf;
        size_t n;
        T_EQ_INT(sd_npy_encode((sd_npy_dtype)t, 3, shape, src, &buf, &n), SD_OK);
        T_EQ_INT(n % 64, (24 * sd_npy_itemsize((sd_npy_dtype)t)) % 64);
        sd_npy_header h;
        T_EQ_INT(sd_npy_parse_header(buf, n, &h), SD_OK);
        T_EQ_INT(h.data_offset, 128);
        T_EQ_INT(h.dtype, t);
        T_EQ_INT(h.count, 24);
        sd_npy_array a;
        T_EQ_INT(sd_npy_load(buf, n, &a), SD_OK);
        T_EQ_INT(a.dtype, t);
        T_EQ_INT(a.ndim, 3);
        T_EQ_INT(a.shape[2], 4);
        T_EQ_INT(a.nbytes, 24 * sd_npy_itemsize((sd_npy_dtype)t));
        T_CHECK(a.data && !memcmp(a.data, src, a.nbytes));
        sd_npy_array_free(&a);
        free(buf);
    }
    T_EQ_STR(sd_npy_descr(SD_NPY_B1), "|b1");
    T_EQ_STR(sd_npy_dtype_name(SD_NPY_F2), "float16");
}

static void test_write_file(void)
{
    const char *p = t_path("w.npy");
    FILE *f = fopen(p, "wb");
    float x[5] = {1, 2, 3, 4.5f, -0.0f};
    int64_t shape[1] = {5};
    T_EQ_INT(sd_npy_write(f, SD_NPY_F4, 1, shape, x), SD_OK);
    fclose(f);
    unsigned char buf[256];
    f = fopen(p, "rb");
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    T_EQ_INT(n, 128 + 20);
    sd_npy_array a;
    T_EQ_INT(sd_npy_load(buf, n, &a), SD_OK);
    T_CHECK(a.ndim == 1 && a.count == 5 && !memcmp(a.data, x, 20));
    sd_npy_array_free(&a);
}

static void test_scalar_and_empty(void)
{
    unsigned char b[512];
    double v = 3.25;
    size_t n = mk(b, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &v, 8);
    sd_npy_array a;
    T_EQ_INT(sd_npy_load(b, n, &a), SD_OK);
    T_EQ_INT(a.ndim, 0);
    T_EQ_INT(a.count, 1);
    T_CHECK(a.data && *(double *)a.data == 3.25);
    sd_npy_array_free(&a);
    n = mk(b, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 7), }", NULL, 0);
    T_EQ_INT(sd_npy_load(b, n, &a), SD_OK);
    T_EQ_INT(a.count, 0);
    T_CHECK(a.data == NULL);
    sd_npy_array_free(&a);
}

static void test_versions_and_literals(void)
{
    unsigned char b[512];
    int32_t v[3] = {7, -8, 9};
    const char *dicts[] = {
        "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }",
        "{'shape': (3,), 'fortran_order': False, 'descr': '<i4'}",
        "{\"descr\":\"<i4\",\"fortran_order\":False,\"shape\":(3, )}",
        "{ 'fortran_order' : False , 'shape' : ( 3 , ) , 'descr' : '=i4' , }",
        "{'descr': 'i4', 'fortran_order': False, 'shape': (3,),}\t\r",
        "{'descr': '|i4', 'fortran_order': False, 'shape': (3,)}",
    };
    for (int ver = 1; ver <= 3; ver++)
        for (size_t i = 0; i < sizeof dicts / sizeof *dicts; i++) {
            size_t n = mk(b, ver, dicts[i], v, sizeof v);
            sd_npy_array a;
            int rc = sd_npy_load(b, n, &a);
            T_CHECKF(rc == SD_OK, "v%d %s: %s", ver, dicts[i], sd_errmsg());
            if (rc) continue;
            T_CHECK(a.dtype == SD_NPY_I4 && a.ndim == 1 && a.shape[0] == 3 && !memcmp(a.data, v, sizeof v));
            sd_npy_array_free(&a);
        }
    /* Shapes with several axes and trailing commas; 0-padded "00" is a valid Python int. */
    size_t n = mk(b, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 3, 1, 00,), }", NULL, 0);
    sd_npy_header h;
    T_EQ_INT(sd_npy_parse_header(b, n, &h), SD_OK);
    T_EQ_INT(h.ndim, 4);
    T_EQ_INT(h.count, 0);
}

static void test_fortran_order(void)
{
    /* numpy: np.asfortranarray(np.arange(24, dtype='<i2').reshape(2, 3, 4)) stores the
     * elements with the first index fastest. */
    int16_t fdata[24], want[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++) {
                int c = (i * 3 + j) * 4 + k;
                want[c] = (int16_t)c;
                fdata[i + 2 * (j + 3 * k)] = (int16_t)c;
            }
    unsigned char b[512];
    size_t n = mk(b, 1, "{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3, 4), }", fdata, sizeof fdata);
    sd_npy_array a;
    T_EQ_INT(sd_npy_load(b, n, &a), SD_OK);
    T_CHECK(a.data && !memcmp(a.data, want, sizeof want));
    sd_npy_array_free(&a);
    /* 1-D Fortran is the same as C. */
    n = mk(b, 1, "{'descr': '<i2', 'fortran_order': True, 'shape': (24,), }", want, sizeof want);
    T_EQ_INT(sd_npy_load(b, n, &a), SD_OK);
    T_CHECK(a.data && !memcmp(a.data, want, sizeof want));
    sd_npy_array_free(&a);
}

static void test_big_endian(void)
{
    unsigned char be[12] = {0x3f, 0x80, 0, 0, 0xc0, 0x20, 0, 0, 0x7f, 0x80, 0, 0};  /* 1, -2.5, inf */
    unsigned char b[512];
    size_t n = mk(b, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", be, sizeof be);
    sd_npy_array a;
    T_EQ_INT(sd_npy_load(b, n, &a), SD_OK);
    float *f = a.data;
    T_CHECK(f && f[0] == 1.0f && f[1] == -2.5f && isinf(f[2]));
    sd_npy_array_free(&a);
    unsigned char be64[8] = {0, 0, 0, 0, 0, 0, 0x01, 0x02};
    n = mk(b, 1, "{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }", be64, 8);
    T_EQ_INT(sd_npy_load(b, n, &a), SD_OK);
    T_CHECK(a.data && *(int64_t *)a.data == 0x102);
    sd_npy_array_free(&a);
    /* '>' on one-byte types is meaningless and harmless. */
    n = mk(b, 1, "{'descr': '>u1', 'fortran_order': False, 'shape': (2,), }", "ab", 2);
    T_EQ_INT(sd_npy_load(b, n, &a), SD_OK);
    T_CHECK(a.data && !memcmp(a.data, "ab", 2));
    sd_npy_array_free(&a);
}

/* Malformed inputs: each fails with the given code, a message, and no crash. */
typedef struct {
    const char *name;
    int version;
    const char *dict;
    size_t data;   /* bytes of data appended */
    int code;
} bad_case;

static void test_malformed_headers(void)
{
    static const bad_case cases[] = {
        {"unknown descr", 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 8, SD_EUNSUPPORTED},
        {"object descr", 1, "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", 8, SD_EUNSUPPORTED},
        {"string descr", 1, "{'descr': '<U5', 'fortran_order': False, 'shape': (1,), }", 20, SD_EUNSUPPORTED},
        {"structured descr", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4, SD_EUNSUPPORTED},
        {"empty descr", 1, "{'descr': '', 'fortran_order': False, 'shape': (1,), }", 4, SD_EUNSUPPORTED},
        {"descr not a string", 1, "{'descr': 4, 'fortran_order': False, 'shape': (1,), }", 4, SD_EFORMAT},
        {"missing shape", 1, "{'descr': '<f4', 'fortran_order': False, }", 4, SD_EFORMAT},
        {"missing descr", 1, "{'fortran_order': False, 'shape': (1,), }", 4, SD_EFORMAT},
        {"missing fortran_order", 1, "{'descr': '<f4', 'shape': (1,), }", 4, SD_EFORMAT},
        {"extra key", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1, }", 4, SD_EFORMAT},
        {"duplicate key", 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4, SD_EFORMAT},
        {"fortran_order int", 1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", 4, SD_EFORMAT},
        {"fortran_order lower", 1, "{'descr': '<f4', 'fortran_order': false, 'shape': (1,), }", 4, SD_EFORMAT},
        {"fortran_order Truex", 1, "{'descr': '<f4', 'fortran_order': Truex, 'shape': (1,), }", 4, SD_EFORMAT},
        {"shape list", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [1], }", 4, SD_EFORMAT},
        {"shape int", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': 1, }", 4, SD_EFORMAT},
        {"shape (1) no comma", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1), }", 4, SD_EFORMAT},
        {"negative dim", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 4, SD_EFORMAT},
        {"float dim", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,), }", 4, SD_EFORMAT},
        {"long suffix", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1L,), }", 4, SD_EFORMAT},
        {"leading zero", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (01,), }", 4, SD_EFORMAT},
        {"dim overflow", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 4, SD_ERANGE},
        {"count overflow", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 4, SD_ERANGE},
        {"bytes overflow", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }", 4, SD_ERANGE},
        {"33 dims", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1), }", 4, SD_EUNSUPPORTED},
        {"unterminated string", 1, "{'fortran_order': False, 'shape': (1,), 'descr': '<f4", 4, SD_EFORMAT},
        {"unterminated key", 1, "{'descr': '<f4', 'fortran_order': False, 'shape", 4, SD_EFORMAT},
        {"unclosed dict", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", 4, SD_EFORMAT},
        {"unclosed tuple", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, }", 4, SD_EFORMAT},
        {"not a dict", 1, "['descr', '<f4']", 4, SD_EFORMAT},
        {"trailing garbage", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", 4, SD_EFORMAT},
        {"missing colon", 1, "{'descr' '<f4', 'fortran_order': False, 'shape': (1,), }", 4, SD_EFORMAT},
        {"missing comma", 1, "{'descr': '<f4' 'fortran_order': False, 'shape': (1,), }", 4, SD_EFORMAT},
        {"escape in string", 1, "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1,), }", 4, SD_EUNSUPPORTED},
        {"non-ascii", 1, "{'descr': '<f4\xe9', 'fortran_order': False, 'shape': (1,), }", 4, SD_EFORMAT},
        {"empty header", 1, "", 4, SD_EFORMAT},
        {"data short", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 4, SD_EFORMAT},
        {"data long", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 8, SD_EFORMAT},
        {"data short v3", 3, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 3), }", 71, SD_EFORMAT},
    };
    unsigned char b[1024] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bad_case *c = &cases[i];
        static const unsigned char zeros[128];
        size_t n = mk(b, c->version, c->dict, zeros, c->data);
        sd_err_clear();
        sd_npy_array a;
        int rc = sd_npy_load(b, n, &a);
        T_CHECKF(rc == c->code, "%s: got %d (%s), want %d", c->name, rc, sd_errmsg(), c->code);
        T_CHECKF(*sd_errmsg(), "%s: no message", c->name);
        T_CHECK(a.data == NULL);
    }
}

static void test_malformed_prefix(void)
{
    unsigned char b[256];
    size_t n = mk(b, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "abcd", 4);
    sd_npy_header h;
    /* Every truncation of the prefix and the header fails cleanly. */
    for (size_t k = 0; k < 128; k++) T_CHECKF(sd_npy_parse_header(b, k, &h) == SD_EFORMAT, "truncated at %zu", k);
    T_EQ_INT(sd_npy_parse_header(b, 128, &h), SD_OK);  /* header complete, data may be missing */
    sd_npy_array a;
    T_EQ_INT(sd_npy_load(b, 128 + 3, &a), SD_EFORMAT);
    unsigned char c[256];
    memcpy(c, b, n);
    c[0] = 0x92;
    T_EQ_INT(sd_npy_parse_header(c, n, &h), SD_EFORMAT);  /* bad magic */
    memcpy(c, b, n);
    c[6] = 4;
    T_EQ_INT(sd_npy_parse_header(c, n, &h), SD_EUNSUPPORTED);  /* version 4.0 */
    c[6] = 0;
    T_EQ_INT(sd_npy_parse_header(c, n, &h), SD_EUNSUPPORTED);  /* version 0.0 */
    memcpy(c, b, n);
    c[7] = 1;
    T_EQ_INT(sd_npy_parse_header(c, n, &h), SD_EUNSUPPORTED);  /* version 1.1 */
    memcpy(c, b, n);
    c[8] = 0xff, c[9] = 0xff;
    T_EQ_INT(sd_npy_parse_header(c, n, &h), SD_ERANGE);  /* header length 65535 > 10000 */
    memcpy(c, b, n);
    c[8] = 0x10, c[9] = 0x27;  /* 10000: allowed length, but past the end */
    T_EQ_INT(sd_npy_parse_header(c, n, &h), SD_EFORMAT);
    unsigned char v2[16] = "\x93NUMPY\x02\x00\xff\xff\xff\x7f";
    T_EQ_INT(sd_npy_parse_header(v2, 12, &h), SD_ERANGE);  /* v2 huge length */
    T_EQ_INT(sd_npy_parse_header(v2, 11, &h), SD_EFORMAT);  /* v2 truncated length */
    memcpy(c, b, n);
    c[20] = 0;
    T_EQ_INT(sd_npy_parse_header(c, n, &h), SD_EFORMAT);  /* NUL in header */
    T_EQ_INT(sd_npy_parse_header("PK\3\4xxxxxxxxxxxxxxxx", 20, &h), SD_EFORMAT);  /* a zip, not npy */
}

int main(void)
{
    T_RUN(test_header_numpy_bytes);
    T_RUN(test_roundtrip_all_dtypes);
    T_RUN(test_write_file);
    T_RUN(test_scalar_and_empty);
    T_RUN(test_versions_and_literals);
    T_RUN(test_fortran_order);
    T_RUN(test_big_endian);
    T_RUN(test_malformed_headers);
    T_RUN(test_malformed_prefix);
    T_DONE();
}
