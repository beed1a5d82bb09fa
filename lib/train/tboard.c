/* TensorBoard event files and the JSON-lines step log (see tboard.h). */
#include "train/tboard.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fileio.h"
#include "train/pyfmt.h"

static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = 1;
}

uint32_t sd_crc32c(uint32_t crc, const void *data, size_t n)
{
    if (!crc_ready) crc_init();   /* idempotent: a race writes the same values */
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t sd_tb_masked_crc(const void *data, size_t n)
{
    uint32_t c = sd_crc32c(0, data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

/* ---- protobuf encoding ---------------------------------------------------------------------- */

typedef struct pb { uint8_t *b; size_t n, cap; int over; } pb;

static void pb_byte(pb *w, uint8_t v)
{
    if (w->n < w->cap) w->b[w->n] = v; else w->over = 1;
    w->n++;
}
static void pb_varint(pb *w, uint64_t v)
{
    while (v >= 0x80) { pb_byte(w, (uint8_t)(v | 0x80)); v >>= 7; }
    pb_byte(w, (uint8_t)v);
}
static void pb_bytes(pb *w, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++) pb_byte(w, ((const uint8_t *)p)[i]);
}
static void pb_fixed64(pb *w, uint64_t v) { for (int i = 0; i < 8; i++) pb_byte(w, (uint8_t)(v >> (8 * i))); }
static void pb_fixed32(pb *w, uint32_t v) { for (int i = 0; i < 4; i++) pb_byte(w, (uint8_t)(v >> (8 * i))); }
static void pb_double(pb *w, int field, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    pb_varint(w, (uint64_t)field << 3 | 1);
    pb_fixed64(w, u);
}

size_t sd_tb_encode_version_event(uint8_t *buf, size_t cap, double wall_time)
{
    pb w = { buf, 0, cap, 0 };
    static const char ver[] = "brain.Event:2";
    pb_double(&w, 1, wall_time);
    pb_varint(&w, 3 << 3 | 2);
    pb_varint(&w, sizeof ver - 1);
    pb_bytes(&w, ver, sizeof ver - 1);
    return w.over ? 0 : w.n;
}

size_t sd_tb_encode_scalar_event(uint8_t *buf, size_t cap, double wall_time, int64_t step,
                                 const char *tag, float value)
{
    size_t tl = strlen(tag);
    if (tl > 4096) return 0;
    /* Value = tag (1) + simple_value (2) */
    size_t vlen = 1 + (tl < 128 ? 1 : 2) + tl + 5;
    size_t slen = 1 + (vlen < 128 ? 1 : 2) + vlen;   /* Summary = value (1) */
    pb w = { buf, 0, cap, 0 };
    pb_double(&w, 1, wall_time);
    if (step != 0) {
        pb_varint(&w, 2 << 3 | 0);
        pb_varint(&w, (uint64_t)step);
    }
    pb_varint(&w, 5 << 3 | 2);
    pb_varint(&w, slen);
    pb_varint(&w, 1 << 3 | 2);
    pb_varint(&w, vlen);
    pb_varint(&w, 1 << 3 | 2);
    pb_varint(&w, tl);
    pb_bytes(&w, tag, tl);
    uint32_t u;
    memcpy(&u, &value, 4);
    pb_varint(&w, 2 << 3 | 5);
    pb_fixed32(&w, u);
    return w.over ? 0 : w.n;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

/* a length-delimited field's key + length prefix + payload */
static size_t ld_len(size_t payload) { return 1 + varint_len(payload) + payload; }

size_t sd_tb_image_event_size(const char *tag, size_t n)
{
    /* wall (9) + step (≤ 11) + summary/value/image keys and lengths (3 × ≤ 11) + three int32 fields
       (3 × ≤ 11) + tag and image keys/lengths (2 × ≤ 11) */
    return strlen(tag) + n + 9 + 11 + 33 + 33 + 22;
}

size_t sd_tb_encode_image_event(uint8_t *buf, size_t cap, double wall_time, int64_t step, const char *tag,
                                int height, int width, int colorspace, const uint8_t *png, size_t n)
{
    size_t tl = strlen(tag);
    if (tl > 4096 || height <= 0 || width <= 0 || colorspace <= 0) return 0;
    size_t ilen = 1 + varint_len((uint64_t)height) + 1 + varint_len((uint64_t)width) + 1 +
                  varint_len((uint64_t)colorspace) + ld_len(n);           /* Image */
    size_t vlen = ld_len(tl) + ld_len(ilen);                             /* Value = tag (1) + image (4) */
    size_t slen = ld_len(vlen);                                          /* Summary = value (1) */
    pb w = { buf, 0, cap, 0 };
    pb_double(&w, 1, wall_time);
    if (step != 0) {
        pb_varint(&w, 2 << 3 | 0);
        pb_varint(&w, (uint64_t)step);
    }
    pb_varint(&w, 5 << 3 | 2);
    pb_varint(&w, slen);
    pb_varint(&w, 1 << 3 | 2);
    pb_varint(&w, vlen);
    pb_varint(&w, 1 << 3 | 2);
    pb_varint(&w, tl);
    pb_bytes(&w, tag, tl);
    pb_varint(&w, 4 << 3 | 2);
    pb_varint(&w, ilen);
    pb_varint(&w, 1 << 3 | 0);
    pb_varint(&w, (uint64_t)height);
    pb_varint(&w, 2 << 3 | 0);
    pb_varint(&w, (uint64_t)width);
    pb_varint(&w, 3 << 3 | 0);
    pb_varint(&w, (uint64_t)colorspace);
    pb_varint(&w, 4 << 3 | 2);
    pb_varint(&w, n);
    if (w.over || w.n + n > cap) return 0;
    memcpy(buf + w.n, png, n);
    return w.n + n;
}

size_t sd_tb_frame(uint8_t *out, size_t cap, const uint8_t *data, size_t n)
{
    if (cap < n + 16) return 0;
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)n >> (8 * i));
    uint32_t c = sd_tb_masked_crc(out, 8);
    for (int i = 0; i < 4; i++) out[8 + i] = (uint8_t)(c >> (8 * i));
    memmove(out + 12, data, n);
    c = sd_tb_masked_crc(out + 12, n);
    for (int i = 0; i < 4; i++) out[12 + n + i] = (uint8_t)(c >> (8 * i));
    return n + 16;
}

int sd_tb_run_dir(char *out, size_t n, const char *logging_dir, const char *log_prefix, time_t t)
{
    struct tm tm;
    if (!localtime_r(&t, &tm)) return sd_err(SD_EINVAL, "logging dir: bad time");
    char ts[32];
    strftime(ts, sizeof ts, "%Y%m%d%H%M%S", &tm);
    int k = snprintf(out, n, "%s/%s%s", logging_dir, log_prefix ? log_prefix : "", ts);
    return k >= 0 && (size_t)k < n ? SD_OK : sd_err(SD_ERANGE, "logging dir: path too long");
}

double sd_wall_time(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

static int write_record(sd_tb_writer *w, const uint8_t *data, size_t n)
{
    uint8_t stackbuf[512];
    uint8_t *buf = n + 16 <= sizeof stackbuf ? stackbuf : malloc(n + 16);
    if (!buf) return sd_err(SD_ENOMEM, "%s: out of memory", w->path);
    size_t L = sd_tb_frame(buf, n + 16, data, n);
    int ok = fwrite(buf, 1, L, w->fp) == L && fflush(w->fp) == 0;
    int e = errno;
    if (buf != stackbuf) free(buf);
    return ok ? SD_OK : sd_err(SD_EIO, "%s: %s", w->path, strerror(e));
}

int sd_tb_open(sd_tb_writer *w, const char *dir, double wall_time)
{
    memset(w, 0, sizeof *w);
    int rc = sd_mkdirs(dir);
    if (rc) return rc;
    static int uid;
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    size_t n = strlen(dir) + strlen(host) + 96;
    w->path = malloc(n);
    if (!w->path) return sd_err(SD_ENOMEM, "out of memory");
    snprintf(w->path, n, "%s/events.out.tfevents.%010lld.%s.%d.%d", dir, (long long)wall_time, host,
             (int)getpid(), __atomic_fetch_add(&uid, 1, __ATOMIC_RELAXED));
    w->fp = fopen(w->path, "wb");
    if (!w->fp) {
        rc = sd_err(errno == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", w->path, strerror(errno));
        free(w->path);
        w->path = NULL;
        return rc;
    }
    uint8_t ev[64];
    size_t L = sd_tb_encode_version_event(ev, sizeof ev, wall_time);
    rc = write_record(w, ev, L);
    if (rc) sd_tb_close(w);
    return rc;
}

int sd_tb_scalar(sd_tb_writer *w, const char *tag, float value, int64_t step, double wall_time)
{
    if (!w->fp) return sd_err(SD_ESTATE, "event file is not open");
    size_t cap = strlen(tag) + 64;
    uint8_t stackbuf[256];
    uint8_t *ev = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    if (!ev) return sd_err(SD_ENOMEM, "out of memory");
    size_t L = sd_tb_encode_scalar_event(ev, cap, wall_time, step, tag, value);
    int rc = L ? write_record(w, ev, L) : sd_err(SD_EINVAL, "%s: tag too long", w->path);
    if (ev != stackbuf) free(ev);
    return rc;
}

int sd_tb_image(sd_tb_writer *w, const char *tag, int64_t step, double wall_time, int height, int width,
                int colorspace, const uint8_t *png, size_t n)
{
    if (!w->fp) return sd_err(SD_ESTATE, "event file is not open");
    size_t cap = sd_tb_image_event_size(tag, n);
    uint8_t *ev = malloc(cap);
    if (!ev) return sd_err(SD_ENOMEM, "out of memory");
    size_t L = sd_tb_encode_image_event(ev, cap, wall_time, step, tag, height, width, colorspace, png, n);
    int rc = L ? write_record(w, ev, L)
               : sd_err(SD_EINVAL, "%s: image event '%.64s' %dx%d, colorspace %d: bad tag or size", w->path, tag, width,
                        height, colorspace);
    free(ev);
    return rc;
}

int sd_tb_close(sd_tb_writer *w)
{
    int rc = SD_OK;
    if (w->fp && fclose(w->fp) != 0) rc = sd_err(SD_EIO, "%s: %s", w->path, strerror(errno));
    free(w->path);
    w->fp = NULL;
    w->path = NULL;
    return rc;
}

/* ---- loss recorder ------------------------------------------------------------------------------ */

void sd_loss_recorder_init(sd_loss_recorder *r) { memset(r, 0, sizeof *r); }

void sd_loss_recorder_free(sd_loss_recorder *r)
{
    free(r->list);
    memset(r, 0, sizeof *r);
}

static int rec_grow(sd_loss_recorder *r, size_t need)
{
    if (need <= r->cap) return SD_OK;
    size_t nc = r->cap ? r->cap : 64;
    while (nc < need) nc *= 2;
    double *l = realloc(r->list, nc * sizeof *l);
    if (!l) return sd_err(SD_ENOMEM, "out of memory");
    r->list = l;
    r->cap = nc;
    return SD_OK;
}

int sd_loss_recorder_add(sd_loss_recorder *r, int64_t epoch, int64_t step, double loss)
{
    if (step < 0) return sd_err(SD_EINVAL, "loss recorder: negative step");
    if (epoch == 0) {
        int rc = rec_grow(r, r->n + 1);
        if (rc) return rc;
        r->list[r->n++] = loss;
    } else {
        int rc = rec_grow(r, (size_t)step + 1);
        if (rc) return rc;
        while (r->n <= (size_t)step) r->list[r->n++] = 0.0;
        r->total -= r->list[step];
        r->list[step] = loss;
    }
    r->total += loss;
    return SD_OK;
}

double sd_loss_recorder_average(const sd_loss_recorder *r)
{
    return r->n ? r->total / (double)r->n : 0.0;
}

int sd_loss_recorder_set(sd_loss_recorder *r, const double *list, size_t n, double total)
{
    int rc = rec_grow(r, n ? n : 1);
    if (rc) return rc;
    if (n) memcpy(r->list, list, n * sizeof *list);
    r->n = n;
    r->total = total;
    return SD_OK;
}

/* ---- JSON lines ----------------------------------------------------------------------------- */

static void json_num(FILE *fp, double v)
{
    char b[40];
    if (!isfinite(v)) { fputs("null", fp); return; }
    fputs(sd_py_float(v, b, sizeof b), fp);
}

static void json_str(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(fp, "\\%c", *p);
        else if (*p < 0x20) fprintf(fp, "\\u%04x", *p);
        else fputc(*p, fp);
    }
    fputc('"', fp);
}

int sd_trainlog_write(FILE *fp, const sd_trainlog_rec *r)
{
    fprintf(fp, "{\"step\":%lld,\"epoch\":%lld,\"loss\":", (long long)r->step, (long long)r->epoch);
    json_num(fp, r->loss);
    fputs(",\"avr_loss\":", fp);
    json_num(fp, r->avr_loss);
    fputs(",\"lr\":{", fp);
    for (int i = 0, first = 1; i < r->ngroups; i++) {
        const char *nm = r->lr_names && r->lr_names[i] ? r->lr_names[i] : "";
        /* an object has one value per name: of groups with one name (LoRA-FA's "unet"), the last, as the
           reference's logs dict keeps it */
        int later = 0;
        for (int j = i + 1; j < r->ngroups && !later; j++)
            later = !strcmp(nm, r->lr_names && r->lr_names[j] ? r->lr_names[j] : "");
        if (later) continue;
        if (!first) fputc(',', fp);
        first = 0;
        json_str(fp, nm);
        fputc(':', fp);
        json_num(fp, r->lrs[i]);
    }
    fputc('}', fp);
    if (!isnan(r->grad_norm)) {
        fputs(",\"grad_norm\":", fp);
        json_num(fp, r->grad_norm);
    }
    if (r->loss_scale > 0) {
        fputs(",\"loss_scale\":", fp);
        json_num(fp, r->loss_scale);
        fputs(r->skipped ? ",\"skipped\":true" : ",\"skipped\":false", fp);
    }
    fputs(",\"sec_per_step\":", fp);
    json_num(fp, r->sec_per_step);
    fputs(",\"time\":", fp);
    json_num(fp, r->wall_time);
    fputs("}\n", fp);
    if (fflush(fp) != 0 || ferror(fp)) return sd_err(SD_EIO, "training log: %s", strerror(errno));
    return SD_OK;
}
