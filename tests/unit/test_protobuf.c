/* Protocol Buffers wire-format reader (io/protobuf.h) and the ONNX message parser (io/onnx.h) on
 * hand-encoded bytes: varints (1..10 bytes, too long, truncated, over 64 bits), keys (field 0,
 * group and reserved wire types), lengths past the end, fixed32/64, skipping, packed and unpacked
 * repeated fields; ONNX: a model with an initializer in raw_data / float_data / int64_data /
 * float16 raw, attributes of each kind, value infos with dim_value and dim_param; malformed
 * models (wrong wire type for a known field, truncated inside a nested message, a NUL in a string,
 * a tensor whose data does not match its dims) refused with SD_EFORMAT and a message naming the
 * buffer. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/error.h"
#include "io/onnx.h"
#include "io/protobuf.h"
#include "test.h"

static void pb_varints(void)
{
    uint64_t v;
    sd_pb r = sd_pb_make("\x00", 1);
    T_CHECK(sd_pb_varint(&r, &v) == 0 && v == 0 && !sd_pb_more(&r));
    r = sd_pb_make("\xac\x02", 2);
    T_CHECK(sd_pb_varint(&r, &v) == 0 && v == 300);
    static const uint8_t max[10] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    r = sd_pb_make(max, 10);
    T_CHECK(sd_pb_varint(&r, &v) == 0 && v == UINT64_MAX);
    static const uint8_t over[10] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02 };
    r = sd_pb_make(over, 10);
    T_EQ_INT(sd_pb_varint(&r, &v), SD_EFORMAT);
    T_CHECKF(strstr(sd_errmsg(), "bad varint (over 64 bits) at byte 0"), "%s", sd_errmsg());
    static const uint8_t eleven[11] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
    r = sd_pb_make(eleven, 11);
    T_EQ_INT(sd_pb_varint(&r, &v), SD_EFORMAT);
    r = sd_pb_make("\x01\x80\x80", 3);
    T_CHECK(sd_pb_varint(&r, &v) == 0 && v == 1);
    T_EQ_INT(sd_pb_varint(&r, &v), SD_EFORMAT);
    T_CHECKF(strstr(sd_errmsg(), "truncated varint at byte 1"), "%s", sd_errmsg());
    r = sd_pb_make("", 0);
    T_EQ_INT(sd_pb_varint(&r, &v), SD_EFORMAT);
}

static void pb_keys_and_skips(void)
{
    uint32_t f;
    int w;
    sd_pb r = sd_pb_make("\x08\x96\x01\x12\x03"
                         "abc"
                         "\x1d\x01\x02\x03\x04"
                         "\x21"
                         "12345678",
                         3 + 5 + 5 + 9);
    T_CHECK(sd_pb_key(&r, &f, &w) == 0 && f == 1 && w == SD_PB_VARINT);
    T_CHECK(sd_pb_skip(&r, w) == 0);
    T_CHECK(sd_pb_key(&r, &f, &w) == 0 && f == 2 && w == SD_PB_LEN);
    sd_pb sub;
    T_CHECK(sd_pb_len(&r, &sub) == 0 && sub.end - sub.p == 3 && !memcmp(sub.p, "abc", 3));
    T_CHECK(sd_pb_key(&r, &f, &w) == 0 && f == 3 && w == SD_PB_I32);
    uint32_t x;
    T_CHECK(sd_pb_fixed32(&r, &x) == 0 && x == 0x04030201u);
    T_CHECK(sd_pb_key(&r, &f, &w) == 0 && f == 4 && w == SD_PB_I64);
    T_CHECK(sd_pb_skip(&r, w) == 0 && !sd_pb_more(&r));
    /* field 0, groups (3, 4), reserved (6, 7) */
    static const char *bad[] = { "\x00", "\x0b", "\x0c", "\x0e", "\x0f" };
    for (int i = 0; i < 5; i++) {
        r = sd_pb_make(bad[i], 1);
        T_EQ_INT(sd_pb_key(&r, &f, &w), SD_EFORMAT);
    }
    T_CHECKF(strstr(sd_errmsg(), "wire type 7"), "%s", sd_errmsg());
    /* lengths and fixed values past the end */
    r = sd_pb_make("\x05"
                   "abcd",
                   5);
    T_EQ_INT(sd_pb_len(&r, &sub), SD_EFORMAT);
    T_CHECKF(strstr(sd_errmsg(), "length 5 at byte 0 runs past the end (4 bytes left)"), "%s", sd_errmsg());
    r = sd_pb_make("\xff\xff\xff\xff\x0f", 5);
    T_EQ_INT(sd_pb_len(&r, &sub), SD_EFORMAT);
    r = sd_pb_make("abc", 3);
    T_EQ_INT(sd_pb_fixed32(&r, &x), SD_EFORMAT);
    uint64_t y;
    r = sd_pb_make("abcdefg", 7);
    T_EQ_INT(sd_pb_fixed64(&r, &y), SD_EFORMAT);
    T_CHECK(r.p == r.base); /* nothing consumed */
}

static void pb_packed(void)
{
    size_t n;
    sd_pb r = sd_pb_make("\x04\x01\x96\x01\x05", 5);
    T_CHECK(sd_pb_count(&r, SD_PB_LEN, SD_PB_VARINT, &n) == 0 && n == 3);
    r = sd_pb_make("\x03\x01\x96\x81", 4); /* the last varint runs off the field */
    T_EQ_INT(sd_pb_count(&r, SD_PB_LEN, SD_PB_VARINT, &n), SD_EFORMAT);
    r = sd_pb_make("\x08"
                   "12345678",
                   9);
    T_CHECK(sd_pb_count(&r, SD_PB_LEN, SD_PB_I32, &n) == 0 && n == 2);
    r = sd_pb_make("\x06"
                   "123456",
                   7);
    T_EQ_INT(sd_pb_count(&r, SD_PB_LEN, SD_PB_I32, &n), SD_EFORMAT);
    T_CHECKF(strstr(sd_errmsg(), "not a multiple of 4"), "%s", sd_errmsg());
    r = sd_pb_make("\x01", 1);
    T_CHECK(sd_pb_count(&r, SD_PB_VARINT, SD_PB_VARINT, &n) == 0 && n == 1);
    T_EQ_INT(sd_pb_count(&r, SD_PB_I64, SD_PB_VARINT, &n), SD_EFORMAT);
}

/* ---- an encoder for the ONNX cases ------------------------------------------------------------ */

typedef struct buf {
    uint8_t b[2048];
    size_t n;
} buf;

static void pv(buf *o, uint64_t v)
{
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        o->b[o->n++] = c | (v ? 0x80 : 0);
    } while (v);
}
static void pk(buf *o, int f, int w) { pv(o, (uint64_t)f << 3 | (uint64_t)w); }
static void pbytes(buf *o, int f, const void *p, size_t n)
{
    pk(o, f, 2);
    pv(o, n);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void pstr(buf *o, int f, const char *s) { pbytes(o, f, s, strlen(s)); }
static void pmsg(buf *o, int f, const buf *m) { pbytes(o, f, m->b, m->n); }
static void pint(buf *o, int f, uint64_t v)
{
    pk(o, f, 0);
    pv(o, v);
}
static void pf32(buf *o, int f, float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    pk(o, f, 5);
    for (int i = 0; i < 4; i++) o->b[o->n++] = (uint8_t)(u >> (8 * i));
}

static void build_model(buf *m, buf *graph)
{
    buf op = { 0 };
    m->n = 0;
    pint(m, 1, 8);
    pstr(m, 2, "test");
    pint(&op, 2, 17);
    pmsg(m, 8, &op);
    pmsg(m, 7, graph);
}

static void onnx_parse_ok(void)
{
    buf g = { 0 }, m = { 0 }, t = { 0 }, n = { 0 }, a = { 0 }, vi = { 0 }, ty = { 0 }, tt = { 0 }, sh = { 0 },
        d = { 0 };
    /* initializer "w" [2,2] float raw */
    pint(&t, 1, 2);
    pint(&t, 1, 2);
    pint(&t, 2, SD_ONNX_FLOAT);
    pstr(&t, 8, "w");
    float raw[4] = { 1, -2, 3.5f, 4 };
    pbytes(&t, 9, raw, 16);
    pmsg(&g, 5, &t);
    /* "f" [3] float_data, unpacked */
    t.n = 0;
    pint(&t, 1, 3);
    pint(&t, 2, SD_ONNX_FLOAT);
    pstr(&t, 8, "f");
    pf32(&t, 4, 0.5f);
    pf32(&t, 4, 1.5f);
    pf32(&t, 4, -2.0f);
    pmsg(&g, 5, &t);
    /* "i" [2] int64_data packed, one negative */
    t.n = 0;
    pint(&t, 1, 2);
    pint(&t, 2, SD_ONNX_INT64);
    pstr(&t, 8, "i");
    buf pk2 = { 0 };
    pv(&pk2, 7);
    pv(&pk2, (uint64_t)(int64_t)-3);
    pmsg(&t, 7, &pk2);
    pmsg(&g, 5, &t);
    /* "h" [2] float16 raw */
    t.n = 0;
    pint(&t, 1, 2);
    pint(&t, 2, SD_ONNX_FLOAT16);
    pstr(&t, 8, "h");
    pbytes(&t, 9, "\x00\x3c\x00\xc0", 4); /* 1.0, -2.0 */
    pmsg(&g, 5, &t);
    /* "s" scalar int32 via int32_data */
    t.n = 0;
    pint(&t, 2, SD_ONNX_INT32);
    pstr(&t, 8, "s");
    pint(&t, 5, (uint64_t)(int64_t)-5);
    pmsg(&g, 5, &t);
    /* node with attributes */
    pstr(&n, 1, "x");
    pstr(&n, 1, "");
    pstr(&n, 2, "y");
    pstr(&n, 3, "node0");
    pstr(&n, 4, "Conv");
    pstr(&a, 1, "alpha");
    pf32(&a, 2, 0.25f);
    pint(&a, 20, SD_ONNX_ATTR_FLOAT);
    pmsg(&n, 5, &a);
    a.n = 0;
    pstr(&a, 1, "pads");
    buf ints = { 0 };
    pv(&ints, 1);
    pv(&ints, 2);
    pv(&ints, 3);
    pmsg(&a, 8, &ints);
    pint(&a, 20, SD_ONNX_ATTR_INTS);
    pmsg(&n, 5, &a);
    a.n = 0;
    pstr(&a, 1, "mode");
    pstr(&a, 4, "constant");
    pint(&a, 20, SD_ONNX_ATTR_STRING);
    pmsg(&n, 5, &a);
    pmsg(&g, 1, &n);
    /* input x: float [batch, 448, 448, 3] */
    pstr(&d, 2, "batch");
    pmsg(&sh, 1, &d);
    int64_t dims[3] = { 448, 448, 3 };
    for (int i = 0; i < 3; i++) {
        d.n = 0;
        pint(&d, 1, (uint64_t)dims[i]);
        pmsg(&sh, 1, &d);
    }
    pint(&tt, 1, SD_ONNX_FLOAT);
    pmsg(&tt, 2, &sh);
    pmsg(&ty, 1, &tt);
    pstr(&vi, 1, "x");
    pmsg(&vi, 2, &ty);
    pmsg(&g, 11, &vi);
    vi.n = 0;
    pstr(&vi, 1, "y");
    pmsg(&g, 12, &vi);
    pstr(&g, 99, "an unknown field is skipped");
    build_model(&m, &g);

    sd_onnx_model om;
    int rc = sd_onnx_parse(m.b, m.n, "m.onnx", &om);
    T_CHECKF(rc == 0, "%s", sd_errmsg());
    if (rc) return;
    T_EQ_INT(om.ir_version, 8);
    T_EQ_INT(om.opset, 17);
    T_EQ_STR(om.producer, "test");
    T_EQ_INT(om.ninits, 5);
    if (om.ninits == 5) {
        const float *w = om.inits[0].data, *f = om.inits[1].data, *h = om.inits[3].data;
        const int64_t *i = om.inits[2].data, *s = om.inits[4].data;
        T_CHECK(om.inits[0].ndim == 2 && om.inits[0].count == 4 && w[2] == 3.5f && w[1] == -2);
        T_CHECK(om.inits[1].count == 3 && f[0] == 0.5f && f[2] == -2.0f);
        T_CHECK(om.inits[2].count == 2 && i[0] == 7 && i[1] == -3);
        T_CHECK(om.inits[3].dtype == SD_ONNX_FLOAT16 && h[0] == 1.0f && h[1] == -2.0f);
        T_CHECK(om.inits[4].ndim == 0 && om.inits[4].count == 1 && s[0] == -5);
    }
    T_EQ_INT(om.nnodes, 1);
    if (om.nnodes == 1) {
        const sd_onnx_node *nd = &om.nodes[0];
        T_EQ_STR(nd->op_type, "Conv");
        T_EQ_STR(nd->name, "node0");
        T_EQ_STR(nd->domain, "");
        T_CHECK(nd->nin == 2 && !strcmp(nd->in[1], "") && nd->nout == 1);
        const sd_onnx_attr *al = sd_onnx_attr_find(nd, "alpha"), *pd = sd_onnx_attr_find(nd, "pads"),
                           *mo = sd_onnx_attr_find(nd, "mode");
        T_CHECK(al && al->type == SD_ONNX_ATTR_FLOAT && al->f == 0.25f);
        T_CHECK(pd && pd->type == SD_ONNX_ATTR_INTS && pd->n == 3 && pd->ints[2] == 3);
        T_CHECK(mo && mo->type == SD_ONNX_ATTR_STRING && !strcmp(mo->s, "constant"));
        T_CHECK(!sd_onnx_attr_find(nd, "nothing"));
    }
    T_CHECK(om.ninputs == 1 && om.inputs[0].dtype == SD_ONNX_FLOAT && om.inputs[0].ndim == 4 &&
            om.inputs[0].dims[0] == -1 && om.inputs[0].dims[1] == 448 && om.inputs[0].dims[3] == 3);
    T_CHECK(om.noutputs == 1 && om.outputs[0].ndim == -1);
    sd_onnx_free(&om);

    /* every truncation of this model is refused or parsed, never read past the end */
    int refused = 0;
    for (size_t k = 0; k < m.n; k++) {
        if (sd_onnx_parse(m.b, k, "cut.onnx", &om) == 0)
            sd_onnx_free(&om);
        else
            refused += strncmp(sd_errmsg(), "cut.onnx: ", 10) == 0;
    }
    T_CHECKF(refused > (int)m.n / 2, "%d of %zu", refused, m.n);
}

static void expect_bad(const buf *m, int want, const char *msg)
{
    sd_onnx_model om;
    int rc = sd_onnx_parse(m->b, m->n, "bad.onnx", &om);
    T_CHECKF(rc == want, "%s: rc %d (%s)", msg, rc, sd_errmsg());
    T_CHECKF(!strncmp(sd_errmsg(), "bad.onnx: ", 10) && strstr(sd_errmsg(), msg), "want '%s': %s", msg, sd_errmsg());
    if (!rc) sd_onnx_free(&om);
}

static void onnx_parse_bad(void)
{
    buf g = { 0 }, m = { 0 }, t = { 0 }, n = { 0 };
    /* not a model at all */
    m.n = 0;
    expect_bad(&m, SD_EFORMAT, "no graph (not an ONNX model file?)");
    /* the graph field with a varint wire type */
    pint(&m, 1, 8);
    pint(&m, 7, 3);
    expect_bad(&m, SD_EFORMAT, "wire type 0, expected 2");
    /* a bad varint inside the node */
    n.n = 0;
    pstr(&n, 4, "Relu");
    pk(&n, 1, 2);
    for (int i = 0; i < 11; i++) n.b[n.n++] = 0xff;
    g.n = 0;
    pmsg(&g, 1, &n);
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "varint");
    /* a NUL in a name */
    n.n = 0;
    pbytes(&n, 4, "Re\0lu", 5);
    g.n = 0;
    pmsg(&g, 1, &n);
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "NUL byte");
    /* a node without an op_type */
    n.n = 0;
    pstr(&n, 3, "anonymous");
    g.n = 0;
    pmsg(&g, 1, &n);
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "without an op_type");
    /* tensor data that does not match its dims */
    t.n = 0;
    pint(&t, 1, 3);
    pint(&t, 2, SD_ONNX_FLOAT);
    pstr(&t, 8, "w");
    pf32(&t, 4, 1.0f);
    g.n = 0;
    pmsg(&g, 5, &t);
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "tensor 'w' has 1 data values, dims need 3");
    /* dims claiming 2^36 floats over 4 bytes of raw_data, and 2^36 over one typed value: refused before any
       allocation (the fuzzer found the 256 GB malloc this used to attempt) */
    t.n = 0;
    pint(&t, 1, (uint64_t)1 << 18);
    pint(&t, 1, (uint64_t)1 << 18);
    pint(&t, 2, SD_ONNX_FLOAT);
    pstr(&t, 8, "big");
    pbytes(&t, 9, "1234", 4);
    g.n = 0;
    pmsg(&g, 5, &t);
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "tensor 'big': raw_data has 4 bytes, dims and type need 274877906944");
    t.n = 0;
    pint(&t, 1, (uint64_t)1 << 18);
    pint(&t, 1, (uint64_t)1 << 18);
    pint(&t, 2, SD_ONNX_INT64);
    pstr(&t, 8, "big");
    pint(&t, 7, 5);
    g.n = 0;
    pmsg(&g, 5, &t);
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "tensor 'big' has 1 data values, dims need 68719476736");
    /* a negative dimension; a string tensor; an unknown element type */
    t.n = 0;
    pint(&t, 1, (uint64_t)(int64_t)-2);
    pint(&t, 2, SD_ONNX_FLOAT);
    g.n = 0;
    pmsg(&g, 5, &t);
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "bad dimension -2");
    t.n = 0;
    pint(&t, 2, SD_ONNX_STRING);
    pstr(&t, 6, "text");
    g.n = 0;
    pmsg(&g, 5, &t);
    build_model(&m, &g);
    expect_bad(&m, SD_EUNSUPPORTED, "string tensors");
    t.n = 0;
    pint(&t, 2, 14);
    pbytes(&t, 9, "12345678", 8);
    g.n = 0;
    pmsg(&g, 5, &t);
    build_model(&m, &g);
    expect_bad(&m, SD_EUNSUPPORTED, "element type complex64");
    /* nine dimensions */
    t.n = 0;
    for (int i = 0; i < 9; i++) pint(&t, 1, 1);
    pint(&t, 2, SD_ONNX_FLOAT);
    pbytes(&t, 9, "1234", 4);
    g.n = 0;
    pmsg(&g, 5, &t);
    build_model(&m, &g);
    expect_bad(&m, SD_EUNSUPPORTED, "9 dimensions");
    /* a length that runs past the end of the graph message */
    g.n = 0;
    pk(&g, 1, 2);
    pv(&g, 100);
    pstr(&g, 2, "x");
    build_model(&m, &g);
    expect_bad(&m, SD_EFORMAT, "runs past the end");
    /* a sparse initializer */
    g.n = 0;
    pstr(&g, 15, "");
    build_model(&m, &g);
    expect_bad(&m, SD_EUNSUPPORTED, "sparse initializers");
}

int main(void)
{
    T_RUN(pb_varints);
    T_RUN(pb_keys_and_skips);
    T_RUN(pb_packed);
    T_RUN(onnx_parse_ok);
    T_RUN(onnx_parse_bad);
    T_DONE();
}
