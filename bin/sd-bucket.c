/* sd-bucket: aspect-ratio buckets and the resize/crop plan for each record (sd-bucket(1)).
 *
 * Records are read in batches on the main thread (libjq is not thread-safe: every jv stays
 * here); the per-image work of a batch (header probe, then decode + resize + crop + encode +
 * write) runs in OpenMP loops over plain C structs; the records are then written in input
 * order. Bucket selection itself (lib/data/bucket.h) is cheap and runs on the main thread. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/progress.h"
#include "base/threads.h"
#include "data/bucket.h"
#include "data/bucket_record.h"
#include "io/cmdline.h"
#include "io/image.h"
#include "io/jsonl.h"
#include "io/resample.h"

/* ---- options --------------------------------------------------------------------------------- */

static struct {
    sd_bucket_opts bk;
    const char *interpolation;
    const char *write_images;
    int image_format, jpeg_quality;
    const char *stats;
    int reprobe;
    int threads;
} a;

static const sd_opt table[] = {
    {.name = "resolution", .type = SD_OPT_INTS, .dest = &a.bk.resolution, .nmin = 1, .nmax = 2,
     SD_OPT_RANGE(1, 1 << 16), .metavar = "W[,H]", .group = "Buckets",
     .help = "training resolution (the area budget); one number means square. A record's own "
             "'resolution' wins"},
    {.name = "enable_bucket", .type = SD_OPT_FLAG, .dest = &a.bk.enable_bucket, .def = "true",
     .group = "Buckets",
     .help = "aspect-ratio bucketing (on by default here; off: one bucket = resolution, mode C)"},
    {.name = "no_bucket", .type = SD_OPT_FLAG, .dest = &a.bk.no_bucket, .def = "false",
     .flags = SD_OPTF_NO_NEGATE, .group = "Buckets",
     .help = "bucketing off: every image is resized to cover the resolution and centre-cropped"},
    {.name = "min_bucket_reso", .type = SD_OPT_INT, .dest = &a.bk.min_reso, .def = "256",
     SD_OPT_RANGE(0, 1 << 16), .group = "Buckets", .help = "smallest bucket side"},
    {.name = "max_bucket_reso", .type = SD_OPT_INT, .dest = &a.bk.max_reso, .def = "1024",
     SD_OPT_RANGE(1, 1 << 16), .group = "Buckets", .help = "largest bucket side"},
    {.name = "bucket_reso_steps", .type = SD_OPT_INT, .dest = &a.bk.steps, .def = "64",
     SD_OPT_RANGE(1, 4096), .group = "Buckets",
     .help = "bucket side granularity (SD1/2 trainers need a multiple of 64, SDXL 32)"},
    {.name = "bucket_no_upscale", .type = SD_OPT_FLAG, .dest = &a.bk.no_upscale, .def = "false",
     .group = "Buckets", .help = "never enlarge: a bucket per image shape, within the area budget"},
    {.name = "interpolation", .alias = "resize_interpolation", .type = SD_OPT_STRING,
     .dest = &a.interpolation, .metavar = "NAME", .group = "Images",
     .help = "force one filter for --write-images: lanczos, box (PIL), nearest, bilinear, linear, "
             "bicubic, cubic, area (OpenCV) (default: OpenCV INTER_AREA when shrinking, PIL "
             "LANCZOS otherwise)"},
    {.name = "write_images", .type = SD_OPT_STRING, .dest = &a.write_images, .metavar = "DIR",
     .group = "Images",
     .help = "resize and crop every image into its bucket and write it under DIR (the source "
             "path mirrored); 'image' then names the new file, 'source_image' the original"},
    {.name = "image_format", .type = SD_OPT_ENUM, .dest = &a.image_format, .def = "png",
     .choices = "png|jpeg", .group = "Images", .help = "format of --write-images files"},
    {.name = "jpeg_quality", .type = SD_OPT_INT, .dest = &a.jpeg_quality, .def = "95",
     SD_OPT_RANGE(1, 100), .group = "Images", .help = "JPEG quality for --image_format jpeg"},
    {.name = "stats", .type = SD_OPT_STRING, .dest = &a.stats, .metavar = "FILE",
     .group = "Output", .help = "write the bucket table and mean AR error as JSON"},
    {.name = "reprobe", .type = SD_OPT_FLAG, .dest = &a.reprobe, .def = "false", .group = "Input",
     .help = "read each image's size from its header even when the record has 'image_size'"},
    SD_OPT_THREADS(&a.threads),
    SD_OPT_END};

/* ---- per-record work ------------------------------------------------------------------------- */

typedef struct item {
    jv rec;
    long line;
    char *image;       /* source path */
    int have_size;     /* image_size known before the probe */
    int w, h;
    const sd_bucket_set_entry *set; /* its bucket set, NULL = none */
    int filter;        /* -1 = the reference's automatic choice */
    int alpha;         /* keep alpha (record alpha_mask) */
    int repeats;
    long long dataset; /* "dataset" key, -1 when absent */
    sd_bucket_plan plan;
    char *out;         /* --write-images path */
    int write;         /* this item writes `out` (not a duplicate of an earlier one) */
    int dup_of;        /* index in the batch of the item that writes the same file, or -1 */
    char *err;         /* per-record error message */
} item;

static void item_fail(item *it, const char *msg)
{
    if (!it->err) it->err = strdup(msg && *msg ? msg : "error");
}

/* Bucket sets, one per distinct configuration; a new one is described (and warned about as the
 * reference does) once. */
static sd_bucket_sets sets;

static const sd_bucket_set_entry *get_set(const sd_bucket_cfg *c)
{
    int created;
    const sd_bucket_set_entry *e = sd_bucket_sets_get(&sets, c, &created);
    if (e && created && e->ok) {
        const sd_bucket_set *s = &e->set;
        char what[64];
        if (s->mode == SD_BUCKET_MODE_C)
            snprintf(what, sizeof what, "bucketing off");
        else
            snprintf(what, sizeof what, "%s, steps %d", s->mode == SD_BUCKET_MODE_B ? "no upscale" : "buckets",
                     c->steps);
        sd_debug("configuration %d: resolution %dx%d, %s", e->index, c->res_w, c->res_h, what);
        if (s->mode != SD_BUCKET_MODE_C) {
            if (s->min_adjusted)
                sd_warn("min_bucket_reso is adjusted to be multiple of bucket_reso_steps: %d -> %d",
                        c->min_reso, s->min_reso);
            if (s->max_adjusted)
                sd_warn("max_bucket_reso is adjusted to be multiple of bucket_reso_steps: %d -> %d",
                        c->max_reso, s->max_reso);
            if (c->steps % 32)
                sd_warn("bucket_reso_steps %d is not a multiple of 32 (SDXL trainers need 32, SD1/2 "
                        "trainers 64)%s",
                        c->steps, c->steps % 8 ? "; bucket sides are not multiples of 8, so latents "
                                                 "would not match the bucket" : "");
            if (s->mode == SD_BUCKET_MODE_B && (c->min_reso != 256 || c->max_reso != 1024))
                sd_warn("min_bucket_reso and max_bucket_reso are ignored if bucket_no_upscale is set, "
                        "because bucket reso is defined by image size automatically");
        }
    }
    return e;
}

/* "a/b/../c.png" under DIR with the new extension: leading '/', '.' and empty components are
 * dropped, '..' becomes '__', so every source maps below DIR. */
static char *mirror_path(const char *dir, const char *src, const char *ext)
{
    size_t n = strlen(dir) + strlen(src) * 2 + strlen(ext) + 8;
    char *o = malloc(n);
    if (!o) return NULL;
    size_t k = (size_t)snprintf(o, n, "%s", dir);
    while (k > 1 && o[k - 1] == '/') o[--k] = 0;
    const char *p = src;
    const char *last_slash_in_out = NULL;
    while (*p) {
        while (*p == '/') p++;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) break;
        if (!(len == 1 && p[0] == '.')) {
            o[k++] = '/';
            last_slash_in_out = o + k - 1;
            if (len == 2 && p[0] == '.' && p[1] == '.') {
                memcpy(o + k, "__", 2);
                k += 2;
            } else {
                memcpy(o + k, p, len);
                k += len;
            }
        }
        p += len;
    }
    o[k] = 0;
    if (!last_slash_in_out) { /* nothing left of the name */
        free(o);
        return NULL;
    }
    char *dot = strrchr(o, '.');
    if (dot && dot > last_slash_in_out + 1) *dot = 0;
    strcat(o, ext);
    return o;
}

static int same_file(const char *x, const char *y)
{
    struct stat s1, s2;
    return stat(x, &s1) == 0 && stat(y, &s2) == 0 && s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino;
}

/* ---- the batch ------------------------------------------------------------------------------- */

typedef struct { int w, h; long long count; long images; } bucket_count;

/* One bucket table: the whole run, or one dataset (records with a "dataset" key, as
 * sd-merge-meta writes them from a dataset config; the reference keeps one table per dataset). */
typedef struct {
    long long dataset; /* -1: all records */
    bucket_count *b;
    int n, cap;
    double *ar;        /* |ar_error| per image, in input order */
    size_t nar, capar;
} group;

static struct {
    group all;
    group *ds;         /* per dataset, in order of first appearance */
    int nds, capds;
    long done, skipped;
} st = {.all = {.dataset = -1}};

static void *grow(void *p, size_t n, size_t size)
{
    void *q = realloc(p, n * size);
    if (!q) {
        sd_error("out of memory");
        exit(1);
    }
    return q;
}

static void group_add(group *g, const sd_bucket_plan *p, int repeats)
{
    int i;
    for (i = 0; i < g->n; i++)
        if (g->b[i].w == p->bucket_w && g->b[i].h == p->bucket_h) break;
    if (i == g->n) {
        if (g->n == g->cap) {
            g->cap = g->cap ? g->cap * 2 : 32;
            g->b = grow(g->b, (size_t)g->cap, sizeof *g->b);
        }
        g->b[g->n++] = (bucket_count){p->bucket_w, p->bucket_h, 0, 0};
    }
    g->b[i].count += repeats;
    g->b[i].images++;
    if (g->nar == g->capar) {
        g->capar = g->capar ? g->capar * 2 : 1024;
        g->ar = grow(g->ar, g->capar, sizeof *g->ar);
    }
    g->ar[g->nar++] = fabs(p->ar_error);
}

static void stats_add(const sd_bucket_plan *p, int repeats, long long dataset)
{
    group_add(&st.all, p, repeats);
    if (dataset < 0) return;
    int i;
    for (i = 0; i < st.nds; i++)
        if (st.ds[i].dataset == dataset) break;
    if (i == st.nds) {
        if (st.nds == st.capds) {
            st.capds = st.capds ? st.capds * 2 : 8;
            st.ds = grow(st.ds, (size_t)st.capds, sizeof *st.ds);
        }
        memset(&st.ds[i], 0, sizeof st.ds[i]);
        st.ds[i].dataset = dataset;
        st.nds++;
    }
    group_add(&st.ds[i], p, repeats);
}

static int cmp_bucket(const void *x, const void *y)
{
    const bucket_count *a1 = x, *b1 = y;
    if (a1->w != b1->w) return a1->w < b1->w ? -1 : 1;
    return (a1->h > b1->h) - (a1->h < b1->h);
}

/* Shortest decimal that reads back to the same double (Python's repr for these values). */
static void fmt_double(double v, char *buf, size_t n)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strchr(buf, '.') && !strchr(buf, 'e') && !strchr(buf, 'n') && !strchr(buf, 'i'))
        strncat(buf, ".0", n - strlen(buf) - 1);
}

static jv ints2(int64_t x, int64_t y) { return JV_ARRAY(jv_number((double)x), jv_number((double)y)); }

/* {"buckets":{"0":{"resolution":[w,h],"count":n,"images":m},...},"mean_img_ar_error":x,
 *  "images":m,"images_with_repeats":n}: the reference's bucket_info plus counts; buckets sorted already */
static jv group_json(const group *g)
{
    jv bk = jv_object();
    long long total = 0;
    for (int i = 0; i < g->n; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        bk = jv_object_set(bk, jv_string(key),
                           JV_OBJECT(jv_string("resolution"), ints2(g->b[i].w, g->b[i].h), jv_string("count"),
                                     jv_number((double)g->b[i].count), jv_string("images"),
                                     jv_number((double)g->b[i].images)));
        total += g->b[i].count;
    }
    return JV_OBJECT(jv_string("buckets"), bk, jv_string("mean_img_ar_error"),
                     jv_number(sd_bucket_mean(g->ar, g->nar)), jv_string("images"), jv_number((double)g->nar),
                     jv_string("images_with_repeats"), jv_number((double)total));
}

/* Work done on worker threads: only plain memory, no jv. */
static void probe_one(item *it)
{
    int fmt;
    if (sd_image_probe(it->image, &it->w, &it->h, &fmt) < 0) item_fail(it, sd_errmsg());
}

static void write_one(item *it)
{
    sd_image im = {0}, out = {0};
    if (same_file(it->image, it->out)) {
        char m[4200];
        snprintf(m, sizeof m, "%s: --write-images would overwrite the source image", it->out);
        item_fail(it, m);
        return;
    }
    if (sd_image_load(it->image, it->alpha ? SD_ALPHA_KEEP : SD_ALPHA_DROP, &im, NULL) < 0) {
        item_fail(it, sd_errmsg());
        return;
    }
    if (im.w != it->plan.image_w || im.h != it->plan.image_h) {
        char m[4200];
        snprintf(m, sizeof m, "%s: the image is %dx%d but the record's image_size is [%d,%d] (use --reprobe)",
                 it->image, im.w, im.h, it->plan.image_w, it->plan.image_h);
        item_fail(it, m);
        sd_image_free(&im);
        return;
    }
    int rc = sd_bucket_apply(&im, &it->plan, it->filter, 0, &out);
    sd_image_free(&im);
    if (rc < 0) {
        sd_err_prefix(rc, "%s", it->image);
        item_fail(it, sd_errmsg());
        return;
    }
    char *slash = strrchr(it->out, '/');
    if (slash && slash != it->out) {
        *slash = 0;
        rc = sd_mkdirs(it->out);
        *slash = '/';
    }
    if (rc >= 0) {
        size_t L = strlen(it->out);
        if (L > 4 && !strcmp(it->out + L - 4, ".jpg"))
            rc = sd_image_write_jpeg(it->out, &out, a.jpeg_quality);
        else
            rc = sd_image_write_png(it->out, &out);
    }
    if (rc < 0) item_fail(it, sd_errmsg());
    sd_image_free(&out);
}

static int global_filter = -1;
/* --write-images: the output files of this run, as 64-bit hashes of the path -> hash of the
 * source and plan that wrote it, and that record's line. 24 bytes per image, so millions of
 * images stay cheap. sig 0 = the writer failed: the next record may claim the name. */
typedef struct { uint64_t key, sig; long line; } out_entry;
static struct { out_entry *e; size_t cap, n; } outs;

static uint64_t hash_str(const char *str, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ULL; /* splitmix64 finaliser */
    h ^= h >> 27; h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h ? h : 1;
}

/* The entry for `key`, inserted empty (sig 0, line 0) when new. */
static out_entry *outs_get(uint64_t key)
{
    if (2 * (outs.n + 1) > outs.cap) {
        size_t nc = outs.cap ? outs.cap * 2 : 1024;
        out_entry *ne = calloc(nc, sizeof *ne);
        if (!ne) {
            sd_error("out of memory");
            exit(1);
        }
        for (size_t i = 0; i < outs.cap; i++)
            if (outs.e[i].key) {
                size_t j = outs.e[i].key & (nc - 1);
                while (ne[j].key) j = (j + 1) & (nc - 1);
                ne[j] = outs.e[i];
            }
        free(outs.e);
        outs.e = ne;
        outs.cap = nc;
    }
    size_t j = key & (outs.cap - 1);
    while (outs.e[j].key && outs.e[j].key != key) j = (j + 1) & (outs.cap - 1);
    if (!outs.e[j].key) {
        outs.e[j].key = key;
        outs.n++;
    }
    return &outs.e[j];
}

/* Main thread: fields, configuration and (after the probe) the plan of one record. */
static void prepare(item *it)
{
    jv rec = it->rec;
    int rc;
    if (sd_bucket_record_image(rec, &it->image) < 0) goto bad;
    int sz[2];
    if (!a.reprobe) {
        if ((rc = sd_jsonl_get_size2(rec, "image_size", sz)) < 0) goto bad;
        if (rc == 1) {
            it->have_size = 1;
            it->w = sz[0];
            it->h = sz[1];
        }
    }
    sd_bucket_cfg c;
    int have_res = sd_bucket_record_cfg_opts(rec, &a.bk, &c);
    if (have_res < 0) goto bad;
    it->repeats = 1;
    if ((rc = sd_jsonl_get_int_range(rec, "num_repeats", 0, 1 << 30, &it->repeats)) < 0) goto bad;
    it->dataset = -1;
    int ds = 0, b;
    if ((rc = sd_jsonl_get_int_range(rec, "dataset", 0, 1 << 30, &ds)) < 0) goto bad;
    if (rc == 1) it->dataset = ds;
    if ((rc = sd_jsonl_get_bool(rec, "alpha_mask", &b)) < 0) goto bad;
    if (rc == 1) it->alpha = b;
    it->filter = global_filter;
    /* the record's filter wins, like its other settings */
    if (a.write_images && sd_bucket_record_filter(rec, &it->filter) < 0) goto bad;
    if (!have_res) {
        item_fail(it, "no resolution: give --resolution or a 'resolution' key");
        return;
    }
    if (!(it->set = get_set(&c))) goto bad;
    if (!it->set->ok) item_fail(it, it->set->err);
    return;
bad:
    item_fail(it, sd_errmsg());
}

static void plan(item *it, int idx, item *batch)
{
    if (sd_bucket_select(&it->set->set, it->w, it->h, &it->plan) < 0) {
        sd_err_prefix(SD_EINVAL, "%s", it->image);
        item_fail(it, sd_errmsg());
        return;
    }
    if (!a.write_images) return;
    const char *ext = a.image_format == 1 && !it->alpha ? ".jpg" : ".png";
    it->out = mirror_path(a.write_images, it->image, ext);
    if (!it->out) {
        item_fail(it, "cannot make an output name from the image path");
        return;
    }
    char sig[4400];
    snprintf(sig, sizeof sig, "%s|%dx%d|%d|%d|%lld|%lld|%d|%d", it->image, it->w, it->h, it->plan.bucket_w,
             it->plan.bucket_h, (long long)it->plan.resized_w, (long long)it->plan.resized_h, it->filter,
             it->alpha);
    uint64_t sh = hash_str(sig, 1);
    out_entry *e = outs_get(hash_str(it->out, 0));
    if (e->sig == 0) { /* new name (or its writer failed): this record writes it */
        e->sig = sh;
        e->line = it->line;
        it->write = 1;
    } else if (e->sig != sh) {
        char m[4400];
        snprintf(m, sizeof m, "%s: output file already written for line %ld with a different "
                 "source or bucket", it->out, e->line);
        item_fail(it, m);
    } else {
        /* the same file with the same content: share it; if its writer is in this batch, this
         * record's fate follows that writer's */
        for (int j = 0; j < idx; j++)
            if (batch[j].write && !strcmp(batch[j].out, it->out)) it->dup_of = j;
    }
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    sd_log_init("sd-bucket");
    sd_opts o;
    if (sd_opts_init(&o, "sd-bucket", table) < 0) return sd_fatal(1);
    /* lenient: the reference's training config files (--config_file) hold many options that do
     * not concern this tool; they are listed in a warning */
    o.flags = SD_OPTS_CONFIG | SD_OPTS_LENIENT;
    o.usage = "[OPTIONS] [RECORDS.jsonl ...]";
    o.description =
        "Reads records (JSON lines; stdin when no file is named), finds each image's size from its "
        "header and adds image_size, bucket, resized, crop_ltrb and ar_error as kohya-ss/sd-scripts "
        "computes them. With --write-images also resizes and crops each image into its bucket.";
    o.epilog = "Exit status: 0 all records done, 1 fatal error, 2 usage error, 3 some records skipped.\n"
               "See sd-bucket(1).";
    int ex = sd_cmdline_main(&o, argc, argv);
    if (ex >= 0) {
        sd_opts_free(&o);
        return ex;
    }
    if (o.nunknown) {
        char list[512] = "";
        for (int i = 0; i < o.nunknown && strlen(list) < 400; i++) {
            if (i) strcat(list, ", ");
            strncat(list, o.unknown[i], 100);
        }
        sd_warn("%s: %d key%s not used by sd-bucket: %s%s", o.config_file, o.nunknown,
                o.nunknown == 1 ? "" : "s", list, strlen(list) >= 400 ? ", ..." : "");
    }
    if (a.interpolation && sd_bucket_interp_from_name(a.interpolation, &global_filter) < 0) {
        sd_cmdline_usage_error("sd-bucket", "option '--interpolation': %s", sd_errmsg());
        sd_opts_free(&o);
        return SD_EXIT_USAGE;
    }
    if (sd_threads_init(a.threads) < 0) {
        sd_opts_free(&o);
        return sd_fatal(1);
    }
    int nthreads = sd_threads_get();
    /* thousands of small images: every file is still committed atomically (temp name + rename),
     * but flushed to disk once at the end (one syncfs) instead of two fsyncs per image */
    if (a.write_images) sd_fileio_set_durable(0);
    /* records per batch: enough work per parallel region to amortise waking the team (a header
     * probe takes microseconds), few enough to keep memory and latency small */
    int B = a.write_images ? nthreads * 16 : nthreads * 256;
    if (B > 4096) B = 4096;
    item *batch = calloc((size_t)B, sizeof *batch);
    if (!batch) return sd_fatal(1);

    int nfiles = o.npos ? o.npos : 1;
    int fatal = 0;
    sd_progress prog;
    sd_progress_begin(&prog, a.write_images ? "resizing" : "bucketing", 0);
    for (int fi = 0; fi < nfiles && !fatal; fi++) {
        const char *name = o.npos ? o.pos[fi] : "-";
        sd_jsonl_reader *r = sd_jsonl_open_path(name);
        if (!r) {
            fatal = 1;
            sd_fatal(1);
            break;
        }
        const char *src = sd_jsonl_name(r);
        int eof = 0;
        while (!eof && !fatal) {
            int n = 0;
            while (n < B) {
                jv rec;
                long line;
                int rc = sd_jsonl_next(r, &rec, &line);
                if (rc == 0) {
                    eof = 1;
                    break;
                }
                if (rc == SD_EFORMAT || rc == SD_ERANGE) {
                    /* the message is "NAME:LINE: problem"; reported in order with the others */
                    const char *m = sd_errmsg();
                    char pre[64];
                    snprintf(pre, sizeof pre, ":%ld: ", line);
                    const char *q = strstr(m, pre);
                    item *it = &batch[n++];
                    memset(it, 0, sizeof *it);
                    it->rec = jv_null();
                    it->line = line;
                    it->set = NULL;
                    it->dup_of = -1;
                    item_fail(it, q ? q + strlen(pre) : m);
                    continue;
                }
                if (rc < 0) {
                    sd_error("%s", sd_errmsg());
                    fatal = 1;
                    break;
                }
                item *it = &batch[n++];
                memset(it, 0, sizeof *it);
                it->rec = rec;
                it->line = line;
                it->set = NULL;
                it->dup_of = -1;
                prepare(it);
            }
            /* 1: probe sizes, in parallel when there are enough of them */
            int nprobe = 0;
            for (int i = 0; i < n; i++) nprobe += !batch[i].err && !batch[i].have_size;
#pragma omp parallel for schedule(dynamic, 16) if (nprobe >= 128 && nthreads > 1)
            for (int i = 0; i < n; i++)
                if (!batch[i].err && !batch[i].have_size) probe_one(&batch[i]);
            /* 2: plans, output names (main thread: jv) */
            for (int i = 0; i < n; i++)
                if (!batch[i].err) plan(&batch[i], i, batch);
            /* 3: decode, resize, crop, write in parallel */
            if (a.write_images) {
                int prev = sd_threads_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
                for (int i = 0; i < n; i++)
                    if (!batch[i].err && batch[i].write) write_one(&batch[i]);
                sd_threads_blas_serial_end(prev);
            }
            /* 4: records out, in order */
            for (int i = 0; i < n; i++) {
                item *it = &batch[i];
                if (!it->err && it->dup_of >= 0 && batch[it->dup_of].err) {
                    char m[256];
                    snprintf(m, sizeof m, "the same output file failed for line %ld", batch[it->dup_of].line);
                    item_fail(it, m);
                }
                if (it->err) {
                    if (it->write && it->out) outs_get(hash_str(it->out, 0))->sig = 0;
                    sd_record_error(src, it->line, "%s", it->err);
                    st.skipped++;
                    jv_free(it->rec);
                } else if (!fatal) {
                    const sd_bucket_plan *p = &it->plan;
                    jv rec = it->rec;
                    rec = jv_object_set(rec, jv_string("image_size"), ints2(p->image_w, p->image_h));
                    rec = jv_object_set(rec, jv_string("bucket"), ints2(p->bucket_w, p->bucket_h));
                    rec = jv_object_set(rec, jv_string("resized"), ints2(p->resized_w, p->resized_h));
                    rec = jv_object_set(rec, jv_string("crop_ltrb"),
                                        JV_ARRAY(jv_number(p->crop_ltrb[0]), jv_number(p->crop_ltrb[1]),
                                                 jv_number(p->crop_ltrb[2]), jv_number(p->crop_ltrb[3])));
                    rec = jv_object_set(rec, jv_string("ar_error"), jv_number(p->ar_error));
                    if (a.write_images) {
                        jv s = jv_object_get(jv_copy(rec), jv_string("source_image"));
                        int has = jv_get_kind(s) == JV_KIND_STRING;
                        jv_free(s);
                        if (!has) rec = jv_object_set(rec, jv_string("source_image"), jv_string(it->image));
                        rec = jv_object_set(rec, jv_string("image"), jv_string(it->out));
                    }
                    stats_add(p, it->repeats, it->dataset);
                    st.done++;
                    if (sd_jsonl_write(stdout, rec) < 0) {
                        sd_error("stdout: %s", sd_errmsg());
                        fatal = 1;
                    }
                } else {
                    jv_free(it->rec);
                }
                free(it->image);
                free(it->out);
                free(it->err);
            }
            sd_progress_update(&prog, n);
        }
        sd_jsonl_close(r);
    }
    sd_progress_end(&prog);
    if (a.write_images && st.done > 0 && sd_fileio_sync_all(a.write_images) < 0) {
        sd_error("%s", sd_errmsg());
        fatal = 1;
    }

    /* summary, as the reference logs it (per dataset when the records name their dataset) */
    sd_info("%ld records done, %ld skipped", st.done, st.skipped);
    group *gs = st.nds ? st.ds : &st.all;
    int ng = st.nds ? st.nds : 1;
    for (int gi = 0; gi < ng; gi++) {
        group *g = &gs[gi];
        if (!g->n) continue;
        qsort(g->b, (size_t)g->n, sizeof *g->b, cmp_bucket);
        char mbuf[64];
        fmt_double(sd_bucket_mean(g->ar, g->nar), mbuf, sizeof mbuf);
        if (st.nds) sd_info("[Dataset %lld]", g->dataset);
        sd_info("number of images (including repeats)");
        for (int i = 0; i < g->n; i++)
            sd_info("bucket %d: resolution (%d, %d), count: %lld", i, g->b[i].w, g->b[i].h, g->b[i].count);
        sd_info("mean ar error (without repeats): %s", mbuf);
    }
    if (a.stats && !fatal) {
        if (st.nds && st.all.n) qsort(st.all.b, (size_t)st.all.n, sizeof *st.all.b, cmp_bucket);
        jv sj = group_json(&st.all);
        sj = jv_object_set(sj, jv_string("skipped"), jv_number((double)st.skipped));
        if (st.nds) {
            jv arr = jv_array();
            for (int gi = 0; gi < st.nds; gi++)
                arr = jv_array_append(arr, jv_object_set(group_json(&st.ds[gi]), jv_string("dataset"),
                                                         jv_number((double)st.ds[gi].dataset)));
            sj = jv_object_set(sj, jv_string("datasets"), arr);
        }
        char *buf = NULL;
        size_t len = 0;
        FILE *mf = open_memstream(&buf, &len);
        int rc = mf ? sd_jsonl_write(mf, sj) : sd_err(SD_ENOMEM, "out of memory");
        if (mf) fclose(mf);
        if (rc >= 0) rc = sd_write_file_atomic(a.stats, buf, len);
        free(buf);
        if (rc < 0) {
            sd_error("%s", sd_errmsg());
            fatal = 1;
        }
    }
    free(outs.e);
    sd_bucket_sets_free(&sets);
    free(st.all.b);
    free(st.all.ar);
    for (int i = 0; i < st.nds; i++) {
        free(st.ds[i].b);
        free(st.ds[i].ar);
    }
    free(st.ds);
    free(batch);
    sd_opts_free(&o);
    if (fatal) return 1;
    return st.skipped ? 3 : 0;
}
