/* safetensors reader/writer, dtype conversions and the f16/bf16 helpers of base/half.h. */
#include "base/error.h"
#include "base/fileio.h"
#include "base/half.h"
#include "io/safetensors.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/safetensors/%s", name);
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int f16_isnan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }
static int bf16_isnan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f); }

/* 8-byte length + header + dlen data bytes (0x5a), in an exactly sized buffer. */
static unsigned char *build(const char *hdr, size_t hlen, size_t dlen, size_t *n)
{
    *n = 8 + hlen + dlen;
    unsigned char *b = malloc(*n);
    uint64_t l = hlen;
    memcpy(b, &l, 8);
    memcpy(b + 8, hdr, hlen);
    memset(b + 8 + hlen, 0x5a, dlen);
    return b;
}

/* ---------------------------------------------------------------------------------------------
 * base/half.h */

/* Independent value of an f16 bit pattern. */
static double f16_ref(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_half_f16_to_f32_all(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_f16_to_f32((uint16_t)h);
        double r = f16_ref((uint16_t)h);
        if (isnan(r) ? !isnan(f) : (f != r || !signbit(f) != !signbit(r))) bad++;
        /* every non-NaN value converts back exactly */
        if (!isnan(r) && sd_f32_to_f16(f) != h) bad++;
        if (isnan(r) && !f16_isnan(sd_f32_to_f16(f))) bad++;
    }
    T_EQ_INT(bad, 0);
}

/* Midpoints between neighbouring f16 values round to the even one; a hair off rounds to the
 * nearer. Covers every subnormal and normal binade. */
static void test_half_f32_to_f16_ties(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        for (int s = 0; s < 2; s++) {
            uint16_t lo = (uint16_t)(h | (s ? 0x8000 : 0)), hi = (uint16_t)(lo + 1);
            double a = f16_ref(lo), b = h + 1 == 0x7c00 ? (s ? -65536.0 : 65536.0) : f16_ref(hi);
            float mid = (float)((a + b) / 2);   /* exact: 12 significant bits */
            uint16_t even = (lo & 1) ? hi : lo;
            if (h + 1 == 0x7c00) even = (uint16_t)(0x7c00 | (s ? 0x8000 : 0));   /* 65520 -> inf */
            if (sd_f32_to_f16(mid) != even) bad++;
            float below = nextafterf(mid, (float)a), above = nextafterf(mid, (float)b);
            if (sd_f32_to_f16(below) != lo) bad++;
            if (h + 1 != 0x7c00 && sd_f32_to_f16(above) != hi) bad++;
        }
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(sd_f32_to_f16(65519.996f), 0x7bff);
    T_EQ_INT(sd_f32_to_f16(65520.0f), 0x7c00);
    T_EQ_INT(sd_f32_to_f16(1e10f), 0x7c00);
    T_EQ_INT(sd_f32_to_f16(-1e10f), 0xfc00);
    T_EQ_INT(sd_f32_to_f16(INFINITY), 0x7c00);
    T_EQ_INT(sd_f32_to_f16(-INFINITY), 0xfc00);
    T_CHECK(f16_isnan(sd_f32_to_f16(NAN)));
    T_CHECK(f16_isnan(sd_f32_to_f16(u2f(0x7f800001))));   /* signalling NaN with a low payload */
    T_EQ_INT(sd_f32_to_f16(-0.0f), 0x8000);
    T_EQ_INT(sd_f32_to_f16(ldexpf(1, -24)), 0x0001);         /* smallest subnormal */
    T_EQ_INT(sd_f32_to_f16(ldexpf(1, -25)), 0x0000);         /* tie to even: 0 */
    T_EQ_INT(sd_f32_to_f16(nextafterf(ldexpf(1, -25), 1)), 0x0001);
    T_EQ_INT(sd_f32_to_f16(ldexpf(3, -25)), 0x0002);         /* 1.5 ulp: tie to even (2) */
    T_EQ_INT(sd_f32_to_f16(ldexpf(1, -14)), 0x0400);         /* smallest normal */
    T_EQ_INT(sd_f32_to_f16(ldexpf(1023, -24)), 0x03ff);      /* largest subnormal */
    T_EQ_INT(sd_f32_to_f16(u2f(1)), 0x0000);                 /* f32 subnormal */
    T_EQ_INT(sd_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);  /* tie down to even */
    T_EQ_INT(sd_f32_to_f16(1.0f + ldexpf(3, -11)), 0x3c02);  /* tie up to even */
}

#ifdef __FLT16_MANT_DIG__
/* Random f32 bit patterns against the compiler's _Float16 conversion. */
static void test_half_f32_to_f16_random(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int bad = 0;
    for (int i = 0; i < 1000000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        float f = u2f((uint32_t)x);
        if (i & 1) f = ldexpf(f, -(int)((x >> 40) % 100));   /* bias towards the f16 range */
        volatile _Float16 r = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, (const void *)&r, 2);
        uint16_t h = sd_f32_to_f16(f);
        if (isnan(f) ? !f16_isnan(h) : h != rb) {
            if (bad++ < 5) printf("#   f32 %08x -> %04x, want %04x\n", f2u(f), h, rb);
        }
    }
    T_EQ_INT(bad, 0);
}
#endif

static void test_half_bf16(void)
{
    int bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float f = sd_bf16_to_f32((uint16_t)b);
        if (f2u(f) != b << 16) bad++;
        if (!isnan(f) && sd_f32_to_bf16(f) != b) bad++;
        if (isnan(f) && !bf16_isnan(sd_f32_to_bf16(f))) bad++;
        if ((b & 0x7f80) == 0x7f80 || (b & 0x7fff) == 0x7f7f) continue;   /* no finite upper neighbour */
        /* midpoint to the next bf16 (towards larger magnitude) ties to even */
        uint32_t mid = b << 16 | 0x8000;
        uint16_t even = (b & 1) ? (uint16_t)(b + 1) : (uint16_t)b;
        if (sd_f32_to_bf16(u2f(mid)) != even) bad++;
        if (sd_f32_to_bf16(u2f(mid - 1)) != b) bad++;
        if (sd_f32_to_bf16(u2f(mid + 1)) != b + 1) bad++;
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(sd_f32_to_bf16(u2f(0x7f7fffff)), 0x7f80);   /* FLT_MAX rounds to inf */
    T_EQ_INT(sd_f32_to_bf16(u2f(0x7f7f7fff)), 0x7f7f);
    T_EQ_INT(sd_f32_to_bf16(INFINITY), 0x7f80);
    T_EQ_INT(sd_f32_to_bf16(-INFINITY), 0xff80);
    T_CHECK(bf16_isnan(sd_f32_to_bf16(u2f(0x7f800001))));  /* NaN stays NaN (not inf) */
    T_CHECK(bf16_isnan(sd_f32_to_bf16(u2f(0xffffffff))));
    T_EQ_INT(sd_f32_to_bf16(u2f(0x00008000)), 0x0000);     /* subnormal tie to even */
    T_EQ_INT(sd_f32_to_bf16(u2f(0x00018000)), 0x0002);
    T_EQ_INT(sd_f32_to_bf16(-0.0f), 0x8000);
    /* the _n variants agree with the scalar ones */
    float f[7] = {1, -2.5f, 1e-40f, 65519.996f, INFINITY, 3.14159f, -1e30f}, g[7];
    uint16_t h[7], bb[7];
    sd_f32_to_f16_n(f, h, 7);
    sd_f32_to_bf16_n(f, bb, 7);
    for (int i = 0; i < 7; i++) {
        T_EQ_INT(h[i], sd_f32_to_f16(f[i]));
        T_EQ_INT(bb[i], sd_f32_to_bf16(f[i]));
    }
    sd_f16_to_f32_n(h, g, 7);
    for (int i = 0; i < 7; i++) T_EQ_INT(f2u(g[i]), f2u(sd_f16_to_f32(h[i])));
    sd_bf16_to_f32_n(bb, g, 7);
    for (int i = 0; i < 7; i++) T_EQ_INT(f2u(g[i]), f2u(sd_bf16_to_f32(bb[i])));
}

/* ---------------------------------------------------------------------------------------------
 * sd_st_convert */

static void test_dtype_names(void)
{
    for (int i = 0; i < SD_ST_NDTYPES; i++) {
        sd_st_dtype t;
        T_EQ_INT(sd_st_dtype_parse(sd_st_dtype_name((sd_st_dtype)i), &t), SD_OK);
        T_EQ_INT(t, i);
        T_CHECK(sd_st_dtype_size((sd_st_dtype)i) >= 1);
    }
    sd_st_dtype t;
    T_EQ_INT(sd_st_dtype_parse("C64", &t), SD_EUNSUPPORTED);
    T_EQ_INT(sd_st_dtype_parse("F8_E8M0", &t), SD_EUNSUPPORTED);
    T_EQ_INT(sd_st_dtype_parse("f32", &t), SD_EFORMAT);
    T_EQ_INT(sd_st_dtype_parse("", &t), SD_EFORMAT);
    T_EQ_INT(sd_st_dtype_size(SD_ST_BF16), 2);
    T_EQ_INT(sd_st_dtype_size(SD_ST_NDTYPES), 0);
    T_CHECK(sd_st_dtype_is_float(SD_ST_F8_E4M3) && !sd_st_dtype_is_float(SD_ST_I64));
}

static void test_convert(void)
{
    /* unaligned source and destination, more than one internal chunk */
    enum { N = 5000 };
    unsigned char *src = malloc(N * 2 + 1), *dst = malloc(N * 4 + 3);
    uint16_t hv[N];
    for (int i = 0; i < N; i++) hv[i] = (uint16_t)(i * 13 + 7);
    memcpy(src + 1, hv, sizeof hv);
    T_EQ_INT(sd_st_convert(SD_ST_F16, src + 1, SD_ST_F32, dst + 3, N), SD_OK);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        float f;
        memcpy(&f, dst + 3 + 4 * i, 4);
        float want = sd_f16_to_f32(hv[i]);
        if (isnan(want) ? !isnan(f) : f2u(f) != f2u(want)) bad++;
    }
    T_EQ_INT(bad, 0);
    /* F16 -> BF16 via f32 */
    T_EQ_INT(sd_st_convert(SD_ST_F16, src + 1, SD_ST_BF16, dst + 1, N), SD_OK);
    bad = 0;
    for (int i = 0; i < N; i++) {
        uint16_t b;
        memcpy(&b, dst + 1 + 2 * i, 2);
        if (b != sd_f32_to_bf16(sd_f16_to_f32(hv[i]))) bad++;
    }
    T_EQ_INT(bad, 0);
    free(src);
    free(dst);

    /* same dtype: plain copy for any dtype */
    int64_t a[3] = {INT64_MIN, -1, INT64_MAX}, b[3] = {0};
    T_EQ_INT(sd_st_convert(SD_ST_I64, a, SD_ST_I64, b, 3), SD_OK);
    T_CHECK(!memcmp(a, b, sizeof a));
    /* integer outputs other than a copy are not supported */
    T_EQ_INT(sd_st_convert(SD_ST_F32, a, SD_ST_I32, b, 1), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "cannot convert F32 to I32") != NULL);
    T_EQ_INT(sd_st_convert(SD_ST_F32, NULL, SD_ST_F16, NULL, 0), SD_OK);

    /* double rounding traps: F64 and I64 go to F16/BF16 with a single rounding */
    double d[4] = {1 + ldexp(1, -11) + ldexp(1, -40), 1 + ldexp(1, -8) + ldexp(1, -40),
                   -(1 + ldexp(1, -11) + ldexp(1, -40)), 65520.0 - ldexp(1, -30)};
    uint16_t h[4];
    T_EQ_INT(sd_st_convert(SD_ST_F64, d, SD_ST_F16, h, 4), SD_OK);
    T_EQ_INT(h[0], 0x3c01);
    T_EQ_INT(h[2], 0xbc01);
    T_EQ_INT(h[3], 0x7bff);
    T_EQ_INT(sd_st_convert(SD_ST_F64, d, SD_ST_BF16, h, 4), SD_OK);
    T_EQ_INT(h[1], 0x3f81);
    int64_t iv[2] = {(1 << 24) + (1 << 16) + 1, -((1 << 24) + (1 << 16) + 1)};
    T_EQ_INT(sd_st_convert(SD_ST_I64, iv, SD_ST_BF16, h, 2), SD_OK);
    T_EQ_INT(h[0], 0x4b81);
    T_EQ_INT(h[1], 0xcb81);
    float f[2];
    T_EQ_INT(sd_st_convert(SD_ST_I64, iv, SD_ST_F32, f, 2), SD_OK);
    T_EQ_INT(f2u(f[0]), 0x4b808000);
    uint32_t u32v[1] = {(1u << 24) + (1u << 16) + 1};
    T_EQ_INT(sd_st_convert(SD_ST_U32, u32v, SD_ST_BF16, h, 1), SD_OK);
    T_EQ_INT(h[0], 0x4b81);
    /* F8 */
    uint8_t e4[4] = {0x7e, 0xfe, 0x08, 0x7f}, e5[3] = {0x7b, 0xfc, 0x02};
    float g[4];
    T_EQ_INT(sd_st_convert(SD_ST_F8_E4M3, e4, SD_ST_F32, g, 4), SD_OK);
    T_EQ_INT((int)g[0], 448);
    T_EQ_INT((int)g[1], -448);
    T_CHECK(g[2] == ldexpf(1, -6) && isnan(g[3]));
    T_EQ_INT(sd_st_convert(SD_ST_F8_E5M2, e5, SD_ST_F32, g, 3), SD_OK);
    T_CHECK(g[0] == 57344.0f && isinf(g[1]) && g[1] < 0 && g[2] == ldexpf(1, -15));
    /* BOOL: any non-zero byte is 1 */
    uint8_t bo[3] = {0, 1, 7};
    T_EQ_INT(sd_st_convert(SD_ST_BOOL, bo, SD_ST_F32, g, 3), SD_OK);
    T_CHECK(g[0] == 0 && g[1] == 1 && g[2] == 1);
}

/* ---------------------------------------------------------------------------------------------
 * Golden file written by tests/golden/gen/make_safetensors.py */

static void test_golden_read(void)
{
    sd_safetensors *st;
    int rc = sd_safetensors_open(data_path("dtypes.safetensors"), &st);
    T_EQ_INT(rc, SD_OK);
    if (rc) {
        printf("#   %s\n", sd_errmsg());
        return;
    }
    char *ex;
    size_t exn;
    T_EQ_INT(sd_read_file(data_path("dtypes.expect"), 0, &ex, &exn), SD_OK);
    if (!ex) {
        sd_safetensors_close(st);
        return;
    }
    size_t idx = 0, nchecked = 0;
    const sd_st_tensor *cur = NULL;
    char *save = NULL;
    for (char *line = strtok_r(ex, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        char *tsave = NULL, *kind = strtok_r(line, " ", &tsave), *name = strtok_r(NULL, " ", &tsave);
        if (!kind || !name) continue;
        if (!strcmp(kind, "tensor")) {
            cur = sd_safetensors_find(st, name);
            T_CHECKF(cur != NULL, "tensor %s", name);
            if (!cur) continue;
            T_CHECK(sd_safetensors_at(st, idx) == cur);   /* file order */
            idx++;
            T_EQ_STR(sd_st_dtype_name(cur->dtype), strtok_r(NULL, " ", &tsave));
            int nd = atoi(strtok_r(NULL, " ", &tsave));
            T_EQ_INT(cur->ndim, nd);
            int64_t numel = 1;
            for (int i = 0; i < nd; i++) {
                int64_t d = atoll(strtok_r(NULL, " ", &tsave));
                T_EQ_INT(cur->shape[i], d);
                numel *= d;
            }
            T_EQ_INT(cur->numel, numel);
            T_EQ_INT(cur->nbytes, (uint64_t)numel * sd_st_dtype_size(cur->dtype));
            continue;
        }
        if (!cur) continue;
        size_t n = (size_t)cur->numel;
        uint32_t *got = calloc(n + 1, 4);
        float *gf = calloc(n + 1, 4);
        uint16_t *gh = calloc(n + 1, 2);
        int is32 = !strcmp(kind, "f32"), is16 = !strcmp(kind, "f16");
        if (is32) T_EQ_INT(sd_safetensors_read_f32(st, name, gf, n), SD_OK);
        else if (is16) T_EQ_INT(sd_safetensors_read_f16(st, name, gh, n), SD_OK);
        else T_EQ_INT(sd_safetensors_read_bf16(st, name, gh, n), SD_OK);
        for (size_t i = 0; i < n; i++) got[i] = is32 ? f2u(gf[i]) : gh[i];
        for (size_t i = 0; i < n; i++) {
            char *tok = strtok_r(NULL, " ", &tsave);
            T_CHECK(tok != NULL);
            if (!tok) break;
            int isnan_got = is32 ? isnan(gf[i]) : is16 ? f16_isnan(gh[i]) : bf16_isnan(gh[i]);
            if (!strcmp(tok, "nan")) T_CHECKF(isnan_got, "%s %s[%zu] should be NaN", kind, name, i);
            else
                T_CHECKF(got[i] == strtoul(tok, NULL, 16), "%s %s[%zu] = %x, want %s", kind, name, i,
                         got[i], tok);
            nchecked++;
        }
        T_CHECK(strtok_r(NULL, " ", &tsave) == NULL);
        free(got);
        free(gf);
        free(gh);
    }
    T_EQ_INT(idx, sd_safetensors_count(st));
    T_EQ_INT(idx, 18);
    T_CHECK(nchecked > 200);
    /* scalar and empty tensors */
    const sd_st_tensor *t = sd_safetensors_find(st, "scalar");
    T_CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
    t = sd_safetensors_find(st, "empty");
    T_CHECK(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0);
    float dummy;
    T_EQ_INT(sd_safetensors_read_f32(st, "empty", &dummy, 0), SD_OK);
    /* metadata */
    T_EQ_INT(sd_safetensors_meta_count(st), 3);
    T_EQ_STR(sd_safetensors_meta_get(st, "format"), "pt");
    T_EQ_STR(sd_safetensors_meta_get(st, "ss_network_dim"), "4");
    T_EQ_STR(sd_safetensors_meta_get(st, "ss_note"),
             "\xc3\xbcn\xc3\xaf" "c\xc3\xb8" "d\xc3\xa9 \"q\" \\ line\nbreak\ttab\x01 \xf0\x9f\x98\x80");
    T_CHECK(sd_safetensors_meta_get(st, "nope") == NULL);
    const char *k, *v;
    sd_safetensors_meta_at(st, 0, &k, &v);
    T_EQ_STR(k, "format");
    /* data pointers are aligned (reference ordering + 8-byte header padding) */
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        t = sd_safetensors_at(st, i);
        T_CHECK((uintptr_t)t->data % sd_st_dtype_size(t->dtype) == 0);
    }
    T_EQ_INT(sd_safetensors_header_len(st) % 8, 0);
    free(ex);
    sd_safetensors_close(st);
}

/* Our writer reproduces the golden file byte for byte from its own tensors and metadata. */
static void test_golden_write_bytes(void)
{
    sd_safetensors *st;
    T_EQ_INT(sd_safetensors_open(data_path("dtypes.safetensors"), &st), SD_OK);
    if (!st) return;
    sd_safetensors_writer *w;
    T_EQ_INT(sd_safetensors_writer_new(&w), SD_OK);
    /* add in reverse file order: the writer sorts */
    for (size_t i = sd_safetensors_count(st); i-- > 0;) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        T_EQ_INT(sd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), SD_OK);
    }
    for (size_t i = 0; i < sd_safetensors_meta_count(st); i++) {
        const char *k, *v;
        sd_safetensors_meta_at(st, i, &k, &v);
        T_EQ_INT(sd_safetensors_writer_set_meta(w, k, v), SD_OK);
    }
    void *buf;
    size_t n;
    T_EQ_INT(sd_safetensors_writer_write_mem(w, &buf, &n), SD_OK);
    char *file;
    size_t fn;
    T_EQ_INT(sd_read_file(data_path("dtypes.safetensors"), 0, &file, &fn), SD_OK);
    T_EQ_INT(n, fn);
    T_CHECK(n == fn && !memcmp(buf, file, n));
    free(buf);
    free(file);
    sd_safetensors_writer_free(w);
    sd_safetensors_close(st);
}

/* Byte vectors from the reference implementation's own unit tests (safetensors/src/tensor.rs). */
static void check_bytes(sd_safetensors_writer *w, const char *hdr, size_t hlen_padded,
                        const void *data, size_t dlen)
{
    void *buf;
    size_t n;
    T_EQ_INT(sd_safetensors_writer_write_mem(w, &buf, &n), SD_OK);
    unsigned char want[256];
    uint64_t l = hlen_padded;
    memcpy(want, &l, 8);
    memset(want + 8, ' ', hlen_padded);
    memcpy(want + 8, hdr, strlen(hdr));
    if (dlen) memcpy(want + 8 + hlen_padded, data, dlen);
    T_EQ_INT(n, 8 + hlen_padded + dlen);
    T_CHECK(n == 8 + hlen_padded + dlen && !memcmp(buf, want, n));
    free(buf);
}

static void test_reference_vectors(void)
{
    float v[6] = {0, 1, 2, 3, 4, 5};
    sd_safetensors_writer *w;
    sd_safetensors_writer_new(&w);
    sd_safetensors_writer_add(w, "attn.0", SD_ST_F32, 3, (int64_t[]){1, 2, 3}, v);
    check_bytes(w, "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}", 64, v, 24);
    sd_safetensors_writer_free(w);

    sd_safetensors_writer_new(&w);
    sd_safetensors_writer_add(w, "attn0", SD_ST_F32, 4, (int64_t[]){1, 1, 2, 3}, v);
    check_bytes(w, "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}", 72, v, 24);
    sd_safetensors_writer_free(w);

    sd_safetensors_writer_new(&w);
    check_bytes(w, "{}", 8, NULL, 0);
    sd_safetensors_writer_set_meta(w, "framework", "pt");
    check_bytes(w, "{\"__metadata__\":{\"framework\":\"pt\"}}", 40, NULL, 0);
    sd_safetensors_writer_free(w);

    /* and they read back */
    unsigned char *b;
    size_t n;
    b = build("{}      ", 8, 0, &n);
    sd_safetensors *st;
    T_EQ_INT(sd_safetensors_open_mem(b, n, "e", &st), SD_OK);
    T_EQ_INT(sd_safetensors_count(st), 0);
    T_EQ_INT(sd_safetensors_meta_count(st), 0);
    sd_safetensors_close(st);
    free(b);
}

/* ---------------------------------------------------------------------------------------------
 * Writer round trips */

typedef struct {
    const unsigned char *p;
    size_t n, step;
} chunk_src;

static int chunked_fn(void *ctx, const char *name, sd_st_sink *sink)
{
    chunk_src *c = ctx;
    for (size_t i = 0; i < c->n; i += c->step) {
        int rc = sd_st_sink_write(sink, c->p + i, c->n - i < c->step ? c->n - i : c->step);
        if (rc) return rc;
    }
    return SD_OK;
}

static void test_roundtrip_all_dtypes(void)
{
    sd_safetensors_writer *w;
    T_EQ_INT(sd_safetensors_writer_new(&w), SD_OK);
    unsigned char bytes[SD_ST_NDTYPES][15 * 8];
    uint64_t x = 12345;
    for (int d = 0; d < SD_ST_NDTYPES; d++) {
        for (size_t i = 0; i < sizeof bytes[d]; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            bytes[d][i] = (unsigned char)(x >> 56);
        }
        char name[32];
        snprintf(name, sizeof name, "t.%s", sd_st_dtype_name((sd_st_dtype)d));
        T_EQ_INT(sd_safetensors_writer_add(w, name, (sd_st_dtype)d, 2, (int64_t[]){3, 5}, bytes[d]), SD_OK);
    }
    float sc = 7.25f;
    T_EQ_INT(sd_safetensors_writer_add(w, "scalar", SD_ST_F32, 0, NULL, &sc), SD_OK);
    T_EQ_INT(sd_safetensors_writer_add(w, "empty", SD_ST_BF16, 3, (int64_t[]){2, 0, 3}, NULL), SD_OK);
    unsigned char big[3000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 7);
    chunk_src cs = {big, sizeof big, 77};
    T_EQ_INT(sd_safetensors_writer_add_fn(w, "streamed", SD_ST_I16, 2, (int64_t[]){30, 50}, chunked_fn, &cs),
             SD_OK);
    float fv[5000];
    for (int i = 0; i < 5000; i++) fv[i] = sinf((float)i) * 1000.0f;
    T_EQ_INT(sd_safetensors_writer_add_f32(w, "as_f16", SD_ST_F16, 1, (int64_t[]){5000}, fv), SD_OK);
    T_EQ_INT(sd_safetensors_writer_add_f32(w, "as_bf16", SD_ST_BF16, 2, (int64_t[]){50, 100}, fv), SD_OK);
    T_EQ_INT(sd_safetensors_writer_add_f32(w, "as_f32", SD_ST_F32, 1, (int64_t[]){5000}, fv), SD_OK);
    T_EQ_INT(sd_safetensors_writer_set_meta(w, "ss_a", "1"), SD_OK);
    T_EQ_INT(sd_safetensors_writer_set_meta(w, "ss_b", "x\"y\\z\n\x1f"), SD_OK);
    T_EQ_INT(sd_safetensors_writer_set_meta(w, "ss_a", "replaced"), SD_OK);
    const char *path = t_path("rt.safetensors");
    T_EQ_INT(sd_safetensors_writer_write(w, path), SD_OK);
    sd_safetensors_writer_free(w);

    sd_safetensors *st;
    int rc = sd_safetensors_open(path, &st);
    T_EQ_INT(rc, SD_OK);
    if (rc) {
        printf("#   %s\n", sd_errmsg());
        return;
    }
    T_EQ_INT(sd_safetensors_count(st), SD_ST_NDTYPES + 6);
    for (int d = 0; d < SD_ST_NDTYPES; d++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", sd_st_dtype_name((sd_st_dtype)d));
        const sd_st_tensor *t = sd_safetensors_find(st, name);
        T_CHECKF(t != NULL, "%s", name);
        if (!t) continue;
        T_CHECK(t->dtype == (sd_st_dtype)d && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 5);
        T_CHECK(t->nbytes == 15 * sd_st_dtype_size(t->dtype) && !memcmp(t->data, bytes[d], t->nbytes));
        T_CHECK((uintptr_t)t->data % sd_st_dtype_size(t->dtype) == 0);
        /* every dtype converts to f32 like the element-wise path */
        float f[15];
        T_EQ_INT(sd_safetensors_read(st, t, SD_ST_F32, f, 15), SD_OK);
    }
    /* file order = reference order: dtype descending, then name */
    for (size_t i = 1; i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *a = sd_safetensors_at(st, i - 1), *b = sd_safetensors_at(st, i);
        T_CHECK(a->dtype > b->dtype || (a->dtype == b->dtype && strcmp(a->name, b->name) < 0));
    }
    float s;
    T_EQ_INT(sd_safetensors_read_f32(st, "scalar", &s, 1), SD_OK);
    T_CHECK(s == 7.25f);
    const sd_st_tensor *t = sd_safetensors_find(st, "empty");
    T_CHECK(t && t->numel == 0 && t->ndim == 3 && t->shape[1] == 0);
    t = sd_safetensors_find(st, "streamed");
    T_CHECK(t && t->nbytes == sizeof big && !memcmp(t->data, big, sizeof big));
    static uint16_t h[5000];
    static float g[5000];
    T_EQ_INT(sd_safetensors_read_f16(st, "as_f16", h, 5000), SD_OK);
    int bad = 0;
    for (int i = 0; i < 5000; i++) bad += h[i] != sd_f32_to_f16(fv[i]);
    T_EQ_INT(sd_safetensors_read_bf16(st, "as_bf16", h, 5000), SD_OK);
    for (int i = 0; i < 5000; i++) bad += h[i] != sd_f32_to_bf16(fv[i]);
    T_EQ_INT(sd_safetensors_read_f32(st, "as_f32", g, 5000), SD_OK);
    for (int i = 0; i < 5000; i++) bad += f2u(g[i]) != f2u(fv[i]);
    T_EQ_INT(sd_safetensors_read_f32(st, "as_bf16", g, 5000), SD_OK);
    for (int i = 0; i < 5000; i++) bad += f2u(g[i]) != f2u(sd_bf16_to_f32(sd_f32_to_bf16(fv[i])));
    T_EQ_INT(bad, 0);
    T_EQ_INT(sd_safetensors_meta_count(st), 2);
    T_EQ_STR(sd_safetensors_meta_get(st, "ss_a"), "replaced");
    T_EQ_STR(sd_safetensors_meta_get(st, "ss_b"), "x\"y\\z\n\x1f");
    /* wrong element count, unknown tensor */
    T_EQ_INT(sd_safetensors_read_f32(st, "as_f32", g, 4999), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "tensor 'as_f32' has 5000 elements, buffer holds 4999") != NULL);
    T_EQ_INT(sd_safetensors_read_f32(st, "missing", g, 1), SD_ENOTFOUND);
    T_CHECK(strstr(sd_errmsg(), "rt.safetensors: no tensor 'missing'") != NULL);
    /* shape check */
    T_EQ_INT(sd_safetensors_check_shape(st, "as_bf16", 2, (int64_t[]){50, 100}), SD_OK);
    T_EQ_INT(sd_safetensors_check_shape(st, "as_bf16", 4, (int64_t[]){320, 4, 3, 3}), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "tensor 'as_bf16': expected shape [320,4,3,3], got [50,100]") != NULL);
    T_EQ_INT(sd_safetensors_check_shape(st, "scalar", 1, (int64_t[]){1}), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "expected shape [1], got []") != NULL);
    T_EQ_INT(sd_safetensors_check_shape(st, "nope", 0, NULL), SD_ENOTFOUND);
    sd_safetensors_close(st);
}

static void test_many_tensors_lookup(void)
{
    enum { N = 2000 };
    sd_safetensors_writer *w;
    sd_safetensors_writer_new(&w);
    static float vals[N];
    for (int i = 0; i < N; i++) {
        int j = (i * 7919) % N;   /* permuted insertion order */
        char name[32];
        snprintf(name, sizeof name, "layer.%d.weight", j);
        vals[j] = (float)j;
        T_EQ_INT(sd_safetensors_writer_add(w, name, SD_ST_F32, 1, (int64_t[]){1}, &vals[j]), SD_OK);
    }
    void *buf;
    size_t n;
    T_EQ_INT(sd_safetensors_writer_write_mem(w, &buf, &n), SD_OK);
    sd_safetensors_writer_free(w);
    sd_safetensors *st;
    T_EQ_INT(sd_safetensors_open_mem(buf, n, "many", &st), SD_OK);
    if (!st) return;
    int bad = 0;
    for (int j = 0; j < N; j++) {
        char name[32];
        snprintf(name, sizeof name, "layer.%d.weight", j);
        float f;
        if (sd_safetensors_read_f32(st, name, &f, 1) || f != (float)j) bad++;
    }
    T_EQ_INT(bad, 0);
    T_CHECK(sd_safetensors_find(st, "layer.2000.weight") == NULL);
    T_CHECK(sd_safetensors_find(st, "") == NULL);
    sd_safetensors_close(st);
    free(buf);
}

/* sd_safetensors_rename: new names found, old ones gone, data unchanged; a clash names both originals and
 * leaves the handle as it was */
static void test_rename(void)
{
    sd_safetensors_writer *w;
    sd_safetensors_writer_new(&w);
    static const float v[3] = { 1, 2, 3 };
    T_EQ_INT(sd_safetensors_writer_add(w, "a.x", SD_ST_F32, 1, (int64_t[]){1}, &v[0]), SD_OK);
    T_EQ_INT(sd_safetensors_writer_add(w, "b.x", SD_ST_F32, 1, (int64_t[]){1}, &v[1]), SD_OK);
    T_EQ_INT(sd_safetensors_writer_add(w, "c.x", SD_ST_F32, 1, (int64_t[]){1}, &v[2]), SD_OK);
    void *buf;
    size_t n;
    T_EQ_INT(sd_safetensors_writer_write_mem(w, &buf, &n), SD_OK);
    sd_safetensors_writer_free(w);
    sd_safetensors *st;
    T_EQ_INT(sd_safetensors_open_mem(buf, n, "ren", &st), SD_OK);
    if (!st) return;
    const char *names[3] = { NULL, NULL, NULL };
    for (size_t i = 0; i < 3; i++) {
        const char *nm = sd_safetensors_at(st, i)->name;
        if (!strcmp(nm, "a.x")) names[i] = "z.x";
        if (!strcmp(nm, "c.x")) names[i] = "b.x";   /* clashes with b.x */
    }
    T_EQ_INT(sd_safetensors_rename(st, names), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "'b.x'") && strstr(sd_errmsg(), "'c.x'"));
    T_CHECK(sd_safetensors_find(st, "c.x") && sd_safetensors_find(st, "a.x") && !sd_safetensors_find(st, "z.x"));
    for (size_t i = 0; i < 3; i++)
        if (names[i] && !strcmp(names[i], "b.x")) names[i] = "0.x";
    T_EQ_INT(sd_safetensors_rename(st, names), SD_OK);
    float f[3] = { 0, 0, 0 };
    T_EQ_INT(sd_safetensors_read_f32(st, "z.x", &f[0], 1), SD_OK);
    T_EQ_INT(sd_safetensors_read_f32(st, "b.x", &f[1], 1), SD_OK);
    T_EQ_INT(sd_safetensors_read_f32(st, "0.x", &f[2], 1), SD_OK);
    T_CHECK(f[0] == 1 && f[1] == 2 && f[2] == 3);
    T_CHECK(!sd_safetensors_find(st, "a.x") && !sd_safetensors_find(st, "c.x"));
    sd_safetensors_close(st);
    free(buf);
}

static int failing_fn(void *ctx, const char *name, sd_st_sink *sink)
{
    return sd_err(SD_EDEVICE, "device copy of '%s' failed", name);
}

static int short_fn(void *ctx, const char *name, sd_st_sink *sink)
{
    return sd_st_sink_write(sink, "abc", 3);
}

static int long_fn(void *ctx, const char *name, sd_st_sink *sink)
{
    return sd_st_sink_write(sink, "0123456789", 10);
}

static void test_writer_errors(void)
{
    sd_safetensors_writer *w;
    sd_safetensors_writer_new(&w);
    float f[4] = {0};
    T_EQ_INT(sd_safetensors_writer_add(w, "__metadata__", SD_ST_F32, 1, (int64_t[]){1}, f), SD_EINVAL);
    T_EQ_INT(sd_safetensors_writer_add(w, "bad\xff", SD_ST_F32, 1, (int64_t[]){1}, f), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "UTF-8") != NULL);
    T_EQ_INT(sd_safetensors_writer_add(w, "neg", SD_ST_F32, 1, (int64_t[]){-1}, f), SD_EINVAL);
    T_EQ_INT(sd_safetensors_writer_add(w, "nine", SD_ST_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, f),
             SD_EINVAL);
    T_EQ_INT(sd_safetensors_writer_add(w, "null", SD_ST_F32, 1, (int64_t[]){4}, NULL), SD_EINVAL);
    T_EQ_INT(sd_safetensors_writer_add(w, "dt", (sd_st_dtype)99, 1, (int64_t[]){4}, f), SD_EINVAL);
    T_EQ_INT(sd_safetensors_writer_add(w, "huge", SD_ST_F64, 2, (int64_t[]){1ll << 40, 1ll << 40}, f), SD_EINVAL);
    T_EQ_INT(sd_safetensors_writer_add_f32(w, "i32", SD_ST_I32, 1, (int64_t[]){4}, f), SD_EINVAL);
    T_EQ_INT(sd_safetensors_writer_set_meta(w, "k", "\xc0\xaf"), SD_EINVAL);
    /* duplicates are found at write time; nothing is left behind */
    T_EQ_INT(sd_safetensors_writer_add(w, "a", SD_ST_F32, 1, (int64_t[]){4}, f), SD_OK);
    T_EQ_INT(sd_safetensors_writer_add(w, "a", SD_ST_F16, 1, (int64_t[]){4}, f), SD_OK);
    const char *path = t_path("dup.safetensors");
    T_EQ_INT(sd_safetensors_writer_write(w, path), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "duplicate tensor name 'a'") != NULL);
    T_CHECK(access(path, F_OK) != 0);
    sd_safetensors_writer_free(w);

    /* callback failures abort the write and leave no file */
    sd_st_write_fn fns[3] = {failing_fn, short_fn, long_fn};
    int codes[3] = {SD_EDEVICE, SD_ESTATE, SD_ESTATE};
    const char *msgs[3] = {"device copy of 'x' failed", "callback wrote 3 of 8 bytes",
                           "callback wrote more than"};
    for (int i = 0; i < 3; i++) {
        sd_safetensors_writer_new(&w);
        T_EQ_INT(sd_safetensors_writer_add(w, "y", SD_ST_F32, 1, (int64_t[]){1}, f), SD_OK);
        T_EQ_INT(sd_safetensors_writer_add_fn(w, "x", SD_ST_F32, 1, (int64_t[]){2}, fns[i], NULL), SD_OK);
        path = t_path("cb.safetensors");
        T_EQ_INT(sd_safetensors_writer_write(w, path), codes[i]);
        T_CHECKF(strstr(sd_errmsg(), msgs[i]) != NULL, "%s", sd_errmsg());
        T_CHECK(access(path, F_OK) != 0);
        sd_safetensors_writer_free(w);
    }
    /* unwritable destination */
    sd_safetensors_writer_new(&w);
    T_CHECK(sd_safetensors_writer_write(w, t_path("no/such/dir/x.safetensors")) < 0);
    T_CHECK(strstr(sd_errmsg(), "no/such/dir") != NULL);
    sd_safetensors_writer_free(w);
}

/* ---------------------------------------------------------------------------------------------
 * Reading odd but valid files */

/* A header of odd length puts the data at odd addresses: conversions must not assume alignment
 * (UBSan checks this). Also: tensors listed out of offset order, whitespace in the header,
 * escaped names. */
static void test_unaligned_and_odd_layout(void)
{
    const char *hdr = "{ \"d\" : {\"data_offsets\":[4,12],\"shape\":[1],\"dtype\":\"F64\"},\n"
                      "\"h\\u00e9\\ud83d\\ude00\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                      "\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[12,20]}}\t\r\n ";
    size_t hl = strlen(hdr);
    if (hl % 2 == 0) hl--;   /* drop the final space: odd length */
    size_t n;
    unsigned char *b = build(hdr, hl, 20, &n);
    uint16_t hv[2] = {0x3c00, 0xc000};
    double dv = -0.375;
    int64_t iv = -123456789012345ll;
    memcpy(b + 8 + hl, hv, 4);
    memcpy(b + 8 + hl + 4, &dv, 8);
    memcpy(b + 8 + hl + 12, &iv, 8);
    /* and at an odd address */
    unsigned char *odd = malloc(n + 1);
    memcpy(odd + 1, b, n);
    sd_safetensors *st;
    int rc = sd_safetensors_open_mem(odd + 1, n, "odd", &st);
    T_EQ_INT(rc, SD_OK);
    if (rc) printf("#   %s\n", sd_errmsg());
    if (st) {
        float f[2];
        T_EQ_INT(sd_safetensors_read_f32(st, "h\xc3\xa9\xf0\x9f\x98\x80", f, 2), SD_OK);
        T_CHECK(f[0] == 1.0f && f[1] == -2.0f);
        T_EQ_INT(sd_safetensors_read_f32(st, "d", f, 1), SD_OK);
        T_CHECK(f[0] == -0.375f);
        uint16_t h;
        T_EQ_INT(sd_safetensors_read_f16(st, "d", &h, 1), SD_OK);
        T_EQ_INT(h, 0xb600);
        T_EQ_INT(sd_safetensors_read_f32(st, "i", f, 1), SD_OK);
        T_CHECK(f[0] == (float)iv);
        int64_t back;
        T_EQ_INT(sd_safetensors_read(st, sd_safetensors_find(st, "i"), SD_ST_I64, &back, 1), SD_OK);
        T_EQ_INT(back, iv);
        T_EQ_STR(sd_safetensors_at(st, 0)->name, "h\xc3\xa9\xf0\x9f\x98\x80");
        T_EQ_STR(sd_safetensors_at(st, 1)->name, "d");
        T_EQ_INT(sd_safetensors_header_len(st), hl);
        T_EQ_INT(sd_safetensors_file_size(st), n);
        sd_safetensors_close(st);
    }
    free(odd);
    free(b);

    /* zero-size tensors anywhere, including at the same offset, and an all-empty file */
    const char *h2 = "{\"z1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                     "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                     "\"z2\":{\"dtype\":\"BOOL\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
                     "\"z0\":{\"dtype\":\"F64\",\"shape\":[0,5],\"data_offsets\":[0,0]}}";
    b = build(h2, strlen(h2), 4, &n);
    T_EQ_INT(sd_safetensors_open_mem(b, n, "z", &st), SD_OK);
    if (st) {
        T_EQ_INT(sd_safetensors_count(st), 4);
        T_EQ_STR(sd_safetensors_at(st, 0)->name, "z0");
        T_EQ_STR(sd_safetensors_at(st, 1)->name, "a");
        sd_safetensors_close(st);
    }
    free(b);
    /* metadata only, empty metadata */
    const char *h3 = "{\"__metadata__\":{}}";
    b = build(h3, strlen(h3), 0, &n);
    T_EQ_INT(sd_safetensors_open_mem(b, n, "m", &st), SD_OK);
    if (st) T_EQ_INT(sd_safetensors_meta_count(st), 0);
    sd_safetensors_close(st);
    free(b);
}

/* ---------------------------------------------------------------------------------------------
 * Malformed files: each gives one clear error, no crash */

static int expect_fail(const unsigned char *buf, size_t n, int code, const char *substr, const char *what)
{
    sd_safetensors *st = (sd_safetensors *)&st;
    sd_err_clear();
    int rc = sd_safetensors_open_mem(buf, n, "bad.safetensors", &st);
    const char *msg = sd_errmsg();
    int ok = rc == code && st == NULL && strstr(msg, substr) && !strncmp(msg, "bad.safetensors: ", 17) &&
             !strchr(msg, '\n');
    if (!ok) printf("#   case '%s': rc=%d (want %d) msg=%s\n", what, rc, code, msg);
    if (rc == SD_OK) sd_safetensors_close(st);
    return ok;
}

#define E "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static const struct bad_case {
    const char *what, *hdr;
    size_t dlen;
    int code;
    const char *msg;
} bad_cases[] = {
    {"header length 0", "", 0, SD_EFORMAT, "does not start with '{'"},
    {"array header", "[1,2]", 0, SD_EFORMAT, "does not start with '{'"},
    {"leading space", " {}", 0, SD_EFORMAT, "does not start with '{'"},
    {"string header", "\"abc\"", 0, SD_EFORMAT, "does not start with '{'"},
    {"missing value", "{\"a\":}", 0, SD_EFORMAT, "invalid JSON in header at byte 5"},
    {"unterminated string", "{\"a", 0, SD_EFORMAT, "unterminated string"},
    {"unterminated object", "{\"a\":" E, 8, SD_EFORMAT, "expected ',' or '}'"},
    {"trailing garbage", "{}x", 0, SD_EFORMAT, "trailing characters"},
    {"trailing comma", "{\"a\":" E ",}", 8, SD_EFORMAT, "expected a string key"},
    {"single quotes", "{'a':1}", 0, SD_EFORMAT, "expected a string key"},
    {"bad literal", "{\"__metadata__\":{\"a\":tru}}", 0, SD_EFORMAT, "unexpected character"},
    {"NaN literal", "{\"__metadata__\":{\"a\":NaN}}", 0, SD_EFORMAT, "unexpected character"},
    {"leading zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "expected ',' or ']'"},
    {"invalid UTF-8 byte", "{\"\xff\":" E "}", 8, SD_EFORMAT, "not valid UTF-8 (byte 0xff at offset 2)"},
    {"overlong UTF-8", "{\"\xc0\xaf\":" E "}", 8, SD_EFORMAT, "not valid UTF-8"},
    {"UTF-8 surrogate", "{\"\xed\xa0\x80\":" E "}", 8, SD_EFORMAT, "not valid UTF-8"},
    {"truncated UTF-8", "{\"a\":" E "}\xe2\x82", 8, SD_EFORMAT, "not valid UTF-8"},
    {"above U+10FFFF", "{\"\xf4\x90\x80\x80\":" E "}", 8, SD_EFORMAT, "not valid UTF-8"},
    {"lone high surrogate", "{\"\\ud800\":" E "}", 8, SD_EFORMAT, "lone high surrogate"},
    {"lone low surrogate", "{\"\\udc00x\":" E "}", 8, SD_EFORMAT, "lone low surrogate"},
    {"NUL escape", "{\"a\\u0000b\":" E "}", 8, SD_EFORMAT, "NUL"},
    {"raw control char", "{\"a\tb\":" E "}", 8, SD_EFORMAT, "control character in string"},
    {"bad escape", "{\"a\\qb\":" E "}", 8, SD_EFORMAT, "bad escape"},
    {"bad \\u escape", "{\"a\\u12g4\":" E "}", 8, SD_EFORMAT, "bad \\u escape"},
    {"entry not object", "{\"a\":[1]}", 0, SD_EFORMAT, "tensor 'a': entry must be an object, not array"},
    {"entry null", "{\"a\":null}", 0, SD_EFORMAT, "tensor 'a': entry must be an object, not null"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "tensor 'a': unknown dtype 'F33'"},
    {"lowercase dtype", "{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "unknown dtype 'f32'"},
    {"dtype not string", "{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "dtype must be a string, not number"},
    {"unsupported dtype", "{\"a\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
     SD_EUNSUPPORTED, "tensor 'a': dtype 'C64' is not supported"},
    {"shape not array", "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "shape must be an array, not number"},
    {"shape string element", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
     SD_EFORMAT, "shape must hold non-negative integers"},
    {"shape nested array", "{\"a\":{\"dtype\":\"F32\",\"shape\":[[2]],\"data_offsets\":[0,8]}}", 8,
     SD_EFORMAT, "shape must hold non-negative integers"},
    {"negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "tensor 'a': shape has a negative value -2"},
    {"fractional dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "shape has a non-integer value 2.5"},
    {"dim 2.0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "non-integer value 2.0"},
    {"dim with exponent", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "non-integer value 2e0"},
    {"dim > 2^53", "{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740993],\"data_offsets\":[0,8]}}", 8,
     SD_EFORMAT, "shape value 9007199254740993 is larger than 2^53"},
    {"shape overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
     SD_EFORMAT, "is too large"},
    {"size overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0,
     SD_EFORMAT, "larger than 2^53"},
    {"bytes overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
     0, SD_EFORMAT, "is too large"},
    {"9 dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     SD_EUNSUPPORTED, "9 dimensions"},
    {"offsets one number", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8, SD_EFORMAT,
     "data_offsets must be an array of two integers"},
    {"offsets three numbers", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
     SD_EFORMAT, "data_offsets must be an array of two integers"},
    {"offsets strings", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 8,
     SD_EFORMAT, "data_offsets must be an array of two integers"},
    {"offsets object", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"b\":0}}}", 8, SD_EFORMAT,
     "data_offsets must be an array of two integers"},
    {"negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, SD_EFORMAT,
     "data_offsets has a negative value -8"},
    {"fractional offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", 8, SD_EFORMAT,
     "data_offsets has a non-integer value 8.5"},
    {"begin > end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, SD_EFORMAT,
     "tensor 'a': data_offsets [8,0] begin after they end"},
    {"end beyond data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, SD_EFORMAT,
     "data_offsets [0,16] extend beyond the 8-byte data buffer"},
    {"huge end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9007199254740992]}}", 8,
     SD_EFORMAT, "extend beyond"},
    {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "tensor 'a': data_offsets [0,8] hold 8 bytes but shape [3] of F32 needs 12"},
    {"scalar size mismatch", "{\"a\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, SD_EFORMAT,
     "hold 4 bytes but shape [] of F16 needs 2"},
    {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, SD_EFORMAT,
     "tensor 'b': data_offsets [4,12] overlap tensor 'a'"},
    {"identical offsets", "{\"b\":" E ",\"a\":" E "}", 8, SD_EFORMAT, "tensor 'b': data_offsets [0,8] overlap tensor 'a'"},
    {"empty inside other", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                           "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8, SD_EFORMAT,
     "tensor 'e': data_offsets [4,4] overlap tensor 'a'"},
    {"gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, SD_EFORMAT,
     "tensor 'b': data_offsets [8,12] leave a gap of 4 bytes"},
    {"gap at start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, SD_EFORMAT,
     "leave a gap of 4 bytes"},
    {"trailing data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, SD_EFORMAT,
     "4 bytes after the last tensor's data"},
    {"data but no tensors", "{}", 3, SD_EFORMAT, "3 bytes after the last tensor's data"},
    {"duplicate tensor", "{\"a\":" E ",\"a\":" E "}", 16, SD_EFORMAT, "duplicate tensor name 'a'"},
    {"duplicate via escape", "{\"a\":" E ",\"\\u0061\":" E "}", 16, SD_EFORMAT, "duplicate tensor name 'a'"},
    {"duplicate field", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     8, SD_EFORMAT, "tensor 'a': duplicate field 'dtype'"},
    {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, SD_EFORMAT,
     "__metadata__: duplicate key 'k'"},
    {"duplicate __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, SD_EFORMAT,
     "duplicate key '__metadata__'"},
    {"metadata not object", "{\"__metadata__\":\"x\"}", 0, SD_EFORMAT, "__metadata__ must be an object, not string"},
    {"metadata number", "{\"__metadata__\":{\"k\":1}}", 0, SD_EFORMAT,
     "__metadata__ key 'k': value must be a string, not number"},
    {"metadata null", "{\"__metadata__\":{\"k\":null}}", 0, SD_EFORMAT, "value must be a string, not null"},
    {"metadata object", "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, SD_EFORMAT, "not object"},
    {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, SD_EFORMAT,
     "tensor 'a': missing field 'dtype'"},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, SD_EFORMAT, "missing field 'shape'"},
    {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, SD_EFORMAT, "missing field 'data_offsets'"},
    {"extra field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"foo\":1}}", 8, SD_EFORMAT,
     "tensor 'a': unknown field 'foo'"},
    {"empty entry", "{\"a\":{}}", 0, SD_EFORMAT, "missing field 'dtype'"},
    {"name with newline", "{\"a\\nb\\u0007\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
     SD_EFORMAT, "tensor 'a?b?': data_offsets [0,4] hold 4 bytes"},
    {"long name",
     "{\"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
     "0123456789012345678\u00e9xyz\":{}}", 0, SD_EFORMAT,
     "tensor '0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
     "0123456789012345678...': missing field 'dtype'"},
    {"deep nesting",
     "{\"__metadata__\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
     0, SD_EFORMAT, "nested too deeply"},
};

static void test_malformed_table(void)
{
    size_t ncases = sizeof bad_cases / sizeof bad_cases[0];
    int bad = 0;
    for (size_t i = 0; i < ncases; i++) {
        const struct bad_case *c = &bad_cases[i];
        size_t n;
        unsigned char *b = build(c->hdr, strlen(c->hdr), c->dlen, &n);
        if (!expect_fail(b, n, c->code, c->msg, c->what)) bad++;
        free(b);
    }
    T_EQ_INT(bad, 0);
    T_CHECK(ncases >= 60);
    printf("# %zu malformed headers\n", ncases);
}

static void test_malformed_lengths(void)
{
    /* raw sizes and header lengths */
    unsigned char b[32] = {0};
    T_CHECK(expect_fail(b, 0, SD_EFORMAT, "file too short for a safetensors header (0 bytes)", "empty"));
    T_CHECK(expect_fail((const unsigned char *)"abc", 3, SD_EFORMAT, "file too short", "3 bytes"));
    memset(b, 0xff, 8);
    T_CHECK(expect_fail(b, 16, SD_EFORMAT, "header length 18446744073709551615 exceeds the limit", "u64 max"));
    uint64_t l = SD_ST_MAX_HEADER + 1ull;
    memcpy(b, &l, 8);
    T_CHECK(expect_fail(b, 16, SD_EFORMAT, "exceeds the limit of 100000000 bytes", "limit + 1"));
    l = 9;
    memcpy(b, &l, 8);
    memcpy(b + 8, "{}      ", 8);
    T_CHECK(expect_fail(b, 16, SD_EFORMAT, "header length 9 exceeds the file (16 bytes; truncated?)", "len > file"));
    /* NUL padding instead of spaces */
    l = 8;
    memcpy(b, &l, 8);
    memcpy(b + 8, "{}\0\0\0\0\0\0", 8);
    T_CHECK(expect_fail(b, 16, SD_EFORMAT, "trailing characters", "NUL padding"));
    /* an embedded NUL inside a key */
    const char hdr[] = "{\"a\0b\":{}}";
    size_t n;
    unsigned char *p = build(hdr, sizeof hdr - 1, 0, &n);
    T_CHECK(expect_fail(p, n, SD_EFORMAT, "control character", "raw NUL"));
    free(p);
}

/* Every prefix of a valid file fails cleanly; so does a file with an extra byte. */
static void test_truncation_everywhere(void)
{
    char *file;
    size_t n;
    T_EQ_INT(sd_read_file(data_path("dtypes.safetensors"), 0, &file, &n), SD_OK);
    if (!file) return;
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned char *b = malloc(k ? k : 1);
        memcpy(b, file, k);
        sd_safetensors *st;
        int rc = sd_safetensors_open_mem(b, k, "cut", &st);
        if (rc != SD_EFORMAT || st) {
            if (bad++ < 5) printf("#   prefix %zu: rc %d %s\n", k, rc, sd_errmsg());
            sd_safetensors_close(st);
        }
        free(b);
    }
    T_EQ_INT(bad, 0);
    unsigned char *b = malloc(n + 1);
    memcpy(b, file, n);
    b[n] = 0;
    T_CHECK(expect_fail(b, n + 1, SD_EFORMAT, "1 bytes after the last tensor's data", "appended byte"));
    /* every header byte replaced by a few nasty values: never a crash, error or success */
    memcpy(b, file, n);
    uint64_t hl;
    memcpy(&hl, b, 8);
    static const unsigned char vals[] = {0, '"', '\\', '{', '}', '[', ']', ',', ':', '-', '9', 0x80, 0xff, ' '};
    int nok = 0, nerr = 0;
    for (size_t i = 0; i < 8 + hl; i++) {
        unsigned char keep = b[i];
        for (size_t v = 0; v < sizeof vals; v++) {
            b[i] = vals[v];
            sd_safetensors *st;
            int rc = sd_safetensors_open_mem(b, n, "mut", &st);
            if (rc == SD_OK) {
                nok++;
                sd_safetensors_close(st);
            } else {
                nerr++;
                if (strchr(sd_errmsg(), '\n') || strncmp(sd_errmsg(), "mut: ", 5)) bad++;
            }
        }
        b[i] = keep;
    }
    T_EQ_INT(bad, 0);
    T_CHECK(nerr > nok);
    printf("# header mutations: %d accepted, %d rejected\n", nok, nerr);
    free(b);
    free(file);
}

static void test_open_errors(void)
{
    sd_safetensors *st = (sd_safetensors *)&st;
    T_EQ_INT(sd_safetensors_open(t_path("does-not-exist.safetensors"), &st), SD_ENOTFOUND);
    T_CHECK(st == NULL);
    T_CHECK(strstr(sd_errmsg(), "does-not-exist.safetensors: No such file or directory") != NULL);
    T_EQ_INT(sd_safetensors_open(t_tmpdir(), &st), SD_EIO);
    T_CHECK(strstr(sd_errmsg(), "not a regular file") != NULL);
    /* a malformed file on disk: the message names the path */
    const char *p = t_path("bad-on-disk.safetensors");
    size_t n;
    unsigned char *b = build("{\"a\":" E ",\"b\":" E "}", strlen("{\"a\":" E ",\"b\":" E "}"), 8, &n);
    T_EQ_INT(t_write_file(p, b, n), 0);
    T_EQ_INT(sd_safetensors_open(p, &st), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "bad-on-disk.safetensors: tensor 'b': data_offsets [0,8] overlap tensor 'a'") != NULL);
    free(b);
    /* short files on disk (no mmap of < 8 bytes) */
    T_EQ_INT(t_write_file(p, "", 0), 0);
    T_EQ_INT(sd_safetensors_open(p, &st), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "file too short") != NULL);
    sd_safetensors_close(NULL);
}

int main(void)
{
    T_RUN(test_half_f16_to_f32_all);
    T_RUN(test_half_f32_to_f16_ties);
#ifdef __FLT16_MANT_DIG__
    T_RUN(test_half_f32_to_f16_random);
#else
    T_SKIP("test_half_f32_to_f16_random", "compiler has no _Float16");
#endif
    T_RUN(test_half_bf16);
    T_RUN(test_dtype_names);
    T_RUN(test_convert);
    T_RUN(test_golden_read);
    T_RUN(test_golden_write_bytes);
    T_RUN(test_reference_vectors);
    T_RUN(test_roundtrip_all_dtypes);
    T_RUN(test_many_tensors_lookup);
    T_RUN(test_rename);
    T_RUN(test_writer_errors);
    T_RUN(test_unaligned_and_odd_layout);
    T_RUN(test_malformed_table);
    T_RUN(test_malformed_lengths);
    T_RUN(test_truncation_everywhere);
    T_RUN(test_open_errors);
    T_DONE();
}
