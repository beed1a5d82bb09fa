/* lib/train/tboard: CRC-32C vectors, record framing byte for byte against hand-computed records
 * (Python struct + crcmod's crc-32c; the image record from a hand-written Python varint/protobuf
 * encoder), event files decoded back with a mini protobuf reader (scalars and images),
 * JSON-lines log. (No tensorboard/tensorflow in /usr/bin/python3 to cross-check with.) */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>

#include "base/error.h"
#include "test.h"
#include "train/tboard.h"

static void test_crc32c(void)
{
    T_EQ_INT(sd_crc32c(0, "123456789", 9), 0xE3069283u);
    T_EQ_INT(sd_crc32c(0, "", 0), 0);
    uint8_t z[32] = { 0 };
    T_EQ_INT(sd_crc32c(0, z, 32), 0x8A9136AAu);          /* RFC 3720 B.4: 32 bytes of zeros */
    uint8_t f[32];
    memset(f, 0xff, 32);
    T_EQ_INT(sd_crc32c(0, f, 32), 0x62A8AB43u);          /* 32 bytes of 0xff */
    uint8_t inc[32];
    for (int i = 0; i < 32; i++) inc[i] = (uint8_t)i;
    T_EQ_INT(sd_crc32c(0, inc, 32), 0x46DD794Eu);        /* incrementing */
    /* chaining */
    T_EQ_INT(sd_crc32c(sd_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static const uint8_t rec_scalar[] = {
    0x22, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x78, 0x11, 0x3d, 0xfd, 0x09, 0x00, 0x00, 0x20,
    0x40, 0xfc, 0x54, 0xd9, 0x41, 0x10, 0x0c, 0x2a, 0x15, 0x0a, 0x13, 0x0a, 0x0c, 0x6c, 0x6f, 0x73,
    0x73, 0x2f, 0x63, 0x75, 0x72, 0x72, 0x65, 0x6e, 0x74, 0x15, 0x00, 0x00, 0x80, 0x3e, 0x7e, 0xb8,
    0xf5, 0x39 };
static const uint8_t rec_version[] = {
    0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa3, 0x7f, 0x4b, 0x22, 0x09, 0x00, 0x00, 0x20,
    0x40, 0xfc, 0x54, 0xd9, 0x41, 0x1a, 0x0d, 0x62, 0x72, 0x61, 0x69, 0x6e, 0x2e, 0x45, 0x76, 0x65,
    0x6e, 0x74, 0x3a, 0x32, 0x2b, 0x35, 0x31, 0x10 };

static void test_framing(void)
{
    uint8_t ev[128], rec[160];
    size_t n = sd_tb_encode_scalar_event(ev, sizeof ev, 1700000000.5, 12, "loss/current", 0.25f);
    T_EQ_INT(n, sizeof rec_scalar - 16);
    size_t L = sd_tb_frame(rec, sizeof rec, ev, n);
    T_EQ_INT(L, sizeof rec_scalar);
    T_CHECK(L == sizeof rec_scalar && !memcmp(rec, rec_scalar, L));
    n = sd_tb_encode_version_event(ev, sizeof ev, 1700000000.5);
    L = sd_tb_frame(rec, sizeof rec, ev, n);
    T_EQ_INT(L, sizeof rec_version);
    T_CHECK(L == sizeof rec_version && !memcmp(rec, rec_version, L));
    /* too small buffers */
    T_EQ_INT(sd_tb_encode_scalar_event(ev, 10, 1.0, 1, "x", 1.0f), 0);
    T_EQ_INT(sd_tb_frame(rec, n + 15, ev, n), 0);
    /* step 0 is omitted (proto3 default) */
    n = sd_tb_encode_scalar_event(ev, sizeof ev, 1.0, 0, "a", 1.0f);
    T_EQ_INT(ev[9], 0x2a);
}

/* ---- a mini protobuf reader ------------------------------------------------------------------ */

typedef struct rd { const uint8_t *p, *end; int bad; } rd;

static uint64_t rd_varint(rd *r)
{
    uint64_t v = 0;
    for (int s = 0; s < 64; s += 7) {
        if (r->p >= r->end) { r->bad = 1; return 0; }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return v;
    }
    r->bad = 1;
    return 0;
}

typedef struct event {
    double wall;
    int64_t step;
    char version[32];
    char tag[64];
    float value;
    int has_value;
    int has_image;
    int64_t height, width, colorspace;
    uint8_t img[1024];
    size_t img_n;
} event;

/* parse Value / Summary / Event */
static void parse_msg(rd r, event *e, int level)
{
    while (r.p < r.end && !r.bad) {
        uint64_t key = rd_varint(&r);
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if (wt == 1) {
            if (r.end - r.p < 8) { r.bad = 1; break; }
            if (level == 0 && field == 1) memcpy(&e->wall, r.p, 8);
            r.p += 8;
        } else if (wt == 5) {
            if (r.end - r.p < 4) { r.bad = 1; break; }
            if (level == 2 && field == 2) { memcpy(&e->value, r.p, 4); e->has_value = 1; }
            r.p += 4;
        } else if (wt == 0) {
            uint64_t v = rd_varint(&r);
            if (level == 0 && field == 2) e->step = (int64_t)v;
            if (level == 3 && field == 1) e->height = (int64_t)v;
            if (level == 3 && field == 2) e->width = (int64_t)v;
            if (level == 3 && field == 3) e->colorspace = (int64_t)v;
        } else if (wt == 2) {
            uint64_t L = rd_varint(&r);
            if ((uint64_t)(r.end - r.p) < L) { r.bad = 1; break; }
            rd sub = { r.p, r.p + L, 0 };
            if (level == 0 && field == 3) snprintf(e->version, sizeof e->version, "%.*s", (int)L, (const char *)r.p);
            else if (level == 0 && field == 5) parse_msg(sub, e, 1);
            else if (level == 1 && field == 1) parse_msg(sub, e, 2);
            else if (level == 2 && field == 1) snprintf(e->tag, sizeof e->tag, "%.*s", (int)L, (const char *)r.p);
            else if (level == 2 && field == 4) { e->has_image = 1; parse_msg(sub, e, 3); }
            else if (level == 3 && field == 4 && L <= sizeof e->img) { memcpy(e->img, r.p, L); e->img_n = L; }
            r.p += L;
        } else {
            r.bad = 1;
        }
    }
    T_CHECK(!r.bad);
}

/* Read all records of a file, checking lengths and CRCs. */
static int read_events(const char *path, event *evs, int max)
{
    FILE *f = fopen(path, "rb");
    T_CHECK(f != NULL);
    if (!f) return 0;
    int n = 0;
    uint8_t hdr[12];
    while (fread(hdr, 1, 12, f) == 12 && n < max) {
        uint64_t L = 0;
        for (int i = 0; i < 8; i++) L |= (uint64_t)hdr[i] << (8 * i);
        uint32_t c = (uint32_t)hdr[8] | (uint32_t)hdr[9] << 8 | (uint32_t)hdr[10] << 16 | (uint32_t)hdr[11] << 24;
        T_EQ_INT(c, sd_tb_masked_crc(hdr, 8));
        uint8_t *d = malloc(L + 4);
        T_CHECK(fread(d, 1, L + 4, f) == L + 4);
        uint32_t dc = (uint32_t)d[L] | (uint32_t)d[L + 1] << 8 | (uint32_t)d[L + 2] << 16 | (uint32_t)d[L + 3] << 24;
        T_EQ_INT(dc, sd_tb_masked_crc(d, L));
        memset(&evs[n], 0, sizeof evs[n]);
        rd r = { d, d + L, 0 };
        parse_msg(r, &evs[n], 0);
        free(d);
        n++;
    }
    fclose(f);
    return n;
}

static void test_event_file(void)
{
    char dir[512];
    T_EQ_INT(sd_tb_run_dir(dir, sizeof dir, t_path("logs"), "lora_", (time_t)1700000000), 0);
    T_CHECK(strstr(dir, "/logs/lora_2023111") != NULL);  /* local time: 14 digits after the prefix */
    T_EQ_INT(strlen(strstr(dir, "lora_") + 5), 14);
    char run[600];
    snprintf(run, sizeof run, "%s/network_train", dir);
    sd_tb_writer w;
    T_EQ_INT(sd_tb_open(&w, run, 1700000000.25), 0);
    T_CHECK(strstr(w.path, "/events.out.tfevents.1700000000.") != NULL);
    T_EQ_INT(sd_tb_scalar(&w, "loss/current", 0.5f, 1, 1700000001.0), 0);
    T_EQ_INT(sd_tb_scalar(&w, "lr/unet", 1e-4f, 1, 1700000001.0), 0);
    char longtag[300];
    memset(longtag, 'x', sizeof longtag - 1);
    longtag[sizeof longtag - 1] = 0;
    T_EQ_INT(sd_tb_scalar(&w, longtag, -2.0f, 123456789012LL, 1700000002.0), 0);
    char path[700];
    snprintf(path, sizeof path, "%s", w.path);
    /* flushed per write: readable before close */
    event evs[8];
    T_EQ_INT(read_events(path, evs, 8), 4);
    T_EQ_INT(sd_tb_close(&w), 0);
    T_EQ_INT(sd_tb_close(&w), 0);
    int n = read_events(path, evs, 8);
    T_EQ_INT(n, 4);
    T_EQ_STR(evs[0].version, "brain.Event:2");
    T_NEAR(evs[0].wall, 1700000000.25, 0);
    T_EQ_INT(evs[0].has_value, 0);
    T_EQ_STR(evs[1].tag, "loss/current");
    T_EQ_INT(evs[1].step, 1);
    T_CHECK(evs[1].value == 0.5f);
    T_EQ_STR(evs[2].tag, "lr/unet");
    T_CHECK(evs[2].value == 1e-4f);
    T_EQ_INT(evs[3].step, 123456789012LL);
    T_CHECK(evs[3].value == -2.0f);
    T_EQ_INT(strlen(evs[3].tag), 63);   /* truncated by our reader's buffer */
    T_EQ_INT(sd_tb_scalar(&w, "x", 1, 1, 1), SD_ESTATE);
}

/* An image record byte for byte (hand-computed with Python), then a file with images decoded. */
static const uint8_t rec_image[] = {
    0x2f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6d, 0x5d, 0x1d, 0x50, 0x09, 0x00, 0x00, 0x20, 0x40, 0xfc,
    0x54, 0xd9, 0x41, 0x10, 0x0c, 0x2a, 0x22, 0x0a, 0x20, 0x0a, 0x08, 0x73, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x5f,
    0x30, 0x22, 0x14, 0x08, 0x02, 0x10, 0x03, 0x18, 0x03, 0x22, 0x0c, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a,
    0x0a, 0x49, 0x48, 0x44, 0x52, 0x13, 0x91, 0x3c, 0x49 };

static void test_image_event(void)
{
    static const uint8_t png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 'I', 'H', 'D', 'R' };
    uint8_t ev[256], rec[300];
    size_t cap = sd_tb_image_event_size("sample_0", sizeof png);
    T_CHECK(cap <= sizeof ev);
    size_t n = sd_tb_encode_image_event(ev, cap, 1700000000.5, 12, "sample_0", 2, 3, 3, png, sizeof png);
    T_EQ_INT(n, sizeof rec_image - 16);
    size_t L = sd_tb_frame(rec, sizeof rec, ev, n);
    T_EQ_INT(L, sizeof rec_image);
    T_CHECK(L == sizeof rec_image && !memcmp(rec, rec_image, L));
    /* refused: a buffer one byte short, bad sizes */
    T_EQ_INT(sd_tb_encode_image_event(ev, n - 1, 1700000000.5, 12, "sample_0", 2, 3, 3, png, sizeof png), 0);
    T_EQ_INT(sd_tb_encode_image_event(ev, cap, 1.0, 1, "s", 0, 3, 3, png, sizeof png), 0);
    T_EQ_INT(sd_tb_encode_image_event(ev, cap, 1.0, 1, "s", 2, 3, 0, png, sizeof png), 0);
    /* a file: a scalar, a big image (multi-byte lengths and dimensions), a step-0 image */
    sd_tb_writer w;
    T_EQ_INT(sd_tb_open(&w, t_path("imglogs"), 1700000000.0), 0);
    uint8_t big[1000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7 + 1);
    T_EQ_INT(sd_tb_scalar(&w, "loss/current", 0.5f, 3, 1700000001.0), 0);
    T_EQ_INT(sd_tb_image(&w, "sample_1", 3, 1700000001.5, 512, 768, 3, big, sizeof big), 0);
    T_EQ_INT(sd_tb_image(&w, "sample_0", 0, 1700000002.0, 64, 64, 4, png, sizeof png), 0);
    T_EQ_INT(sd_tb_image(&w, "x", 1, 1.0, 64, -1, 3, png, sizeof png), SD_EINVAL);
    char path[700];
    snprintf(path, sizeof path, "%s", w.path);
    T_EQ_INT(sd_tb_close(&w), 0);
    T_EQ_INT(sd_tb_image(&w, "x", 1, 1.0, 64, 64, 3, png, sizeof png), SD_ESTATE);
    static event evs[8];
    T_EQ_INT(read_events(path, evs, 8), 4);
    T_EQ_INT(evs[1].has_image, 0);
    T_EQ_STR(evs[2].tag, "sample_1");
    T_EQ_INT(evs[2].step, 3);
    T_NEAR(evs[2].wall, 1700000001.5, 0);
    T_EQ_INT(evs[2].has_image, 1);
    T_EQ_INT(evs[2].has_value, 0);
    T_EQ_INT(evs[2].height, 512);
    T_EQ_INT(evs[2].width, 768);
    T_EQ_INT(evs[2].colorspace, 3);
    T_EQ_INT(evs[2].img_n, sizeof big);
    T_CHECK(!memcmp(evs[2].img, big, sizeof big));
    T_EQ_STR(evs[3].tag, "sample_0");
    T_EQ_INT(evs[3].step, 0);
    T_EQ_INT(evs[3].colorspace, 4);
    T_EQ_INT(evs[3].img_n, sizeof png);
}

static void test_jsonl(void)
{
    const char *p = t_path("train.jsonl");
    FILE *f = fopen(p, "w+");
    static const char *const names[] = { "textencoder", "unet" };
    static const double lrs[] = { 5e-5, 1e-4 };
    sd_trainlog_rec r = { 12, 1, 0.125, 0.1, 2, names, lrs, 0.5, 0.25, 1700000000.5, 0, 0 };
    T_EQ_INT(sd_trainlog_write(f, &r), 0);
    r.grad_norm = NAN;
    r.loss = INFINITY;
    T_EQ_INT(sd_trainlog_write(f, &r), 0);
    /* with a loss scaler (--mixed_precision fp16): the scale the step used and whether it was skipped */
    r.loss = 0.125;
    r.grad_norm = INFINITY;
    r.loss_scale = 65536;
    r.skipped = 1;
    T_EQ_INT(sd_trainlog_write(f, &r), 0);
    r.grad_norm = 0.5;
    r.loss_scale = 32768;
    r.skipped = 0;
    T_EQ_INT(sd_trainlog_write(f, &r), 0);
    rewind(f);
    char line[512];
    T_CHECK(fgets(line, sizeof line, f) != NULL);
    T_EQ_STR(line, "{\"step\":12,\"epoch\":1,\"loss\":0.125,\"avr_loss\":0.1,\"lr\":{\"textencoder\":5e-05,"
                   "\"unet\":0.0001},\"grad_norm\":0.5,\"sec_per_step\":0.25,\"time\":1700000000.5}\n");
    T_CHECK(fgets(line, sizeof line, f) != NULL);
    T_EQ_STR(line, "{\"step\":12,\"epoch\":1,\"loss\":null,\"avr_loss\":0.1,\"lr\":{\"textencoder\":5e-05,"
                   "\"unet\":0.0001},\"sec_per_step\":0.25,\"time\":1700000000.5}\n");
    T_CHECK(fgets(line, sizeof line, f) != NULL);
    T_EQ_STR(line, "{\"step\":12,\"epoch\":1,\"loss\":0.125,\"avr_loss\":0.1,\"lr\":{\"textencoder\":5e-05,"
                   "\"unet\":0.0001},\"grad_norm\":null,\"loss_scale\":65536.0,\"skipped\":true,\"sec_per_step\":0.25,"
                   "\"time\":1700000000.5}\n");
    T_CHECK(fgets(line, sizeof line, f) != NULL);
    T_EQ_STR(line, "{\"step\":12,\"epoch\":1,\"loss\":0.125,\"avr_loss\":0.1,\"lr\":{\"textencoder\":5e-05,"
                   "\"unet\":0.0001},\"grad_norm\":0.5,\"loss_scale\":32768.0,\"skipped\":false,\"sec_per_step\":0.25,"
                   "\"time\":1700000000.5}\n");
    fclose(f);
}

static void test_loss_recorder(void)
{
    sd_loss_recorder r;
    sd_loss_recorder_init(&r);
    T_NEAR(sd_loss_recorder_average(&r), 0, 0);
    for (int i = 0; i < 3; i++) T_EQ_INT(sd_loss_recorder_add(&r, 0, i, i + 1), 0);
    T_NEAR(sd_loss_recorder_average(&r), 2.0, 0);
    T_EQ_INT(sd_loss_recorder_add(&r, 1, 0, 4.0), 0);      /* replaces 1 */
    T_NEAR(sd_loss_recorder_average(&r), 3.0, 0);
    T_EQ_INT(sd_loss_recorder_add(&r, 1, 4, 5.0), 0);      /* a longer epoch: zeros fill index 3 */
    T_EQ_INT(r.n, 5);
    T_NEAR(r.list[3], 0, 0);
    T_NEAR(sd_loss_recorder_average(&r), 14.0 / 5, 1e-15);
    /* the running total is kept as Python does (not re-summed) */
    sd_loss_recorder q;
    sd_loss_recorder_init(&q);
    sd_loss_recorder_add(&q, 0, 0, 0.1);
    sd_loss_recorder_add(&q, 0, 1, 0.2);
    sd_loss_recorder_add(&q, 1, 0, 0.7);
    T_CHECK(q.total == 0.1 + 0.2 - 0.1 + 0.7);
    T_EQ_INT(sd_loss_recorder_set(&q, r.list, r.n, r.total), 0);
    T_CHECK(sd_loss_recorder_average(&q) == sd_loss_recorder_average(&r));
    T_EQ_INT(sd_loss_recorder_add(&q, 0, -1, 1.0), SD_EINVAL);
    sd_loss_recorder_free(&q);
    sd_loss_recorder_free(&r);
}

int main(void)
{
    T_RUN(test_crc32c);
    T_RUN(test_framing);
    T_RUN(test_event_file);
    T_RUN(test_image_event);
    T_RUN(test_jsonl);
    T_RUN(test_loss_recorder);
    T_DONE();
}
