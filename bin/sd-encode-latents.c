/* sd-encode-latents: VAE latents for every record, never stale (sd-encode-latents(1)).
 *
 * Threads. The main thread owns every jv (libjq is not thread-safe), runs the VAE (OpenMP inside
 * the ops, OpenBLAS pinned per op) and writes the latent files. A pool of producer threads
 * (pthreads, each with a one-thread OpenMP team and no BLAS) reads each image file, hashes it,
 * plans it when the record has no plan, checks an existing cache file (--skip_existing) and
 * otherwise decodes, resizes, crops, flips and normalises the pixels; so image work overlaps the
 * VAE. Records travel through a window of bounded size in input order; prepared images wait in
 * per-bucket groups until a group holds --vae_batch_size images (or the window cannot grow), and
 * records leave in input order.
 *
 * Determinism: the pixels of an image depend only on the file and the plan; the VAE ops give the
 * same bytes for any thread count and the sampling noise is keyed by the image's hash (never by
 * its position or batch), so --threads and --vae_batch_size do not change a latent. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/progress.h"
#include "base/threads.h"
#include "data/bucket.h"
#include "data/bucket_record.h"
#include "data/latent_cache.h"
#include "io/cmdline.h"
#include "io/image.h"
#include "io/jsonl.h"
#include "io/latent.h"
#include "io/resample.h"
#include "io/safetensors.h"
#include "models/detect.h"
#include "models/model_config.h"
#include "models/sd_model.h"
#include "models/vae.h"
#include "tensor/device.h"

#define TOOL "sd-encode-latents"
#define VAE_PREFIX "first_stage_model"

/* ---- options --------------------------------------------------------------------------------- */

static struct {
    const char *model, *vae, *model_config, *out;
    int v2, v_param;
    int kohya_names, sdxl, compress, latent_mode, dtype, batch, flip, alpha, skip_existing;
    int64_t seed;
    sd_bucket_opts bk;
    const char *interpolation;
    int threads;
    const char *device;
    int dev_index;   /* from --device: SD_DEVICE_CPU or a CUDA ordinal */
} a;

static const sd_opt table[] = {
    SD_MODEL_OPT_ENTRIES(&a.model, &a.vae, &a.model_config, &a.v2, &a.v_param),
    {.name = "out", .alias = "output_dir", .type = SD_OPT_STRING, .dest = &a.out, .metavar = "DIR",
     .group = "Output", .help = "directory of the latent files, named by the hash of their inputs"},
    {.name = "kohya_names", .type = SD_OPT_FLAG, .dest = &a.kohya_names, .def = "false", .group = "Output",
     .help = "write <image stem>_<WWWW>x<HHHH>_sd.npz beside each image (kohya's cache name; implies "
             "--compress store unless given)"},
    {.name = "sdxl", .type = SD_OPT_FLAG, .dest = &a.sdxl, .def = "false", .group = "Output",
     .help = "with --kohya_names: the _sdxl.npz suffix (read by kohya's SDXL scripts, train_db.py and "
             "fine_tune.py); default: _sdxl.npz for an SDXL model, _sd.npz otherwise; --no-sdxl forces _sd"},
    {.name = "compress", .type = SD_OPT_ENUM, .dest = &a.compress, .def = "zstd", .choices = "zstd|store",
     .group = "Output", .help = "zip members: zstd (sd-latent(5)) or store (plain .npz any numpy loads)"},
    {.name = "latent_dtype", .type = SD_OPT_ENUM, .dest = &a.dtype, .def = "float32", .choices = "float32|float16",
     .group = "Output", .help = "storage of latents and latents_flipped"},
    {.name = "latent_mode", .type = SD_OPT_ENUM, .dest = &a.latent_mode, .def = "sample", .choices = "sample|mean",
     .group = "Latents", .help = "posterior sample (the reference's behaviour) or its mean"},
    {.name = "seed", .type = SD_OPT_INT64, .dest = &a.seed, .def = "0", SD_OPT_RANGE(0, 9007199254740992.0),
     .group = "Latents", .help = "seed of the posterior samples (Philox, keyed per image by its hash)"},
    {.name = "vae_batch_size", .type = SD_OPT_INT, .dest = &a.batch, .def = "1", SD_OPT_RANGE(1, 256),
     .group = "Latents", .help = "images of one bucket encoded together"},
    {.name = "flip_aug", .type = SD_OPT_FLAG, .dest = &a.flip, .def = "false", .group = "Latents",
     .help = "also encode the mirrored image (latents_flipped)"},
    {.name = "alpha_mask", .type = SD_OPT_FLAG, .dest = &a.alpha, .def = "false", .group = "Latents",
     .help = "store the image's alpha (0..1) at bucket size as alpha_mask; a record's alpha_mask key wins"},
    {.name = "skip_existing", .type = SD_OPT_FLAG, .dest = &a.skip_existing, .def = "false", .group = "Latents",
     .help = "reuse a latent file whose sd_meta.json matches the image, VAE and settings"},
    {.name = "resolution", .type = SD_OPT_INTS, .dest = &a.bk.resolution, .nmin = 1, .nmax = 2,
     SD_OPT_RANGE(1, 1 << 16), .metavar = "W[,H]", .group = "Buckets (records without a plan)",
     .help = "training resolution; a record's own 'resolution' wins"},
    {.name = "enable_bucket", .type = SD_OPT_FLAG, .dest = &a.bk.enable_bucket, .def = "true",
     .group = "Buckets (records without a plan)", .help = "aspect-ratio bucketing (off: mode C)"},
    {.name = "no_bucket", .type = SD_OPT_FLAG, .dest = &a.bk.no_bucket, .def = "false", .flags = SD_OPTF_NO_NEGATE,
     .group = "Buckets (records without a plan)", .help = "bucketing off"},
    {.name = "min_bucket_reso", .type = SD_OPT_INT, .dest = &a.bk.min_reso, .def = "256", SD_OPT_RANGE(0, 1 << 16),
     .group = "Buckets (records without a plan)", .help = "smallest bucket side"},
    {.name = "max_bucket_reso", .type = SD_OPT_INT, .dest = &a.bk.max_reso, .def = "1024", SD_OPT_RANGE(1, 1 << 16),
     .group = "Buckets (records without a plan)", .help = "largest bucket side"},
    {.name = "bucket_reso_steps", .type = SD_OPT_INT, .dest = &a.bk.steps, .def = "64", SD_OPT_RANGE(1, 4096),
     .group = "Buckets (records without a plan)", .help = "bucket side granularity"},
    {.name = "bucket_no_upscale", .type = SD_OPT_FLAG, .dest = &a.bk.no_upscale, .def = "false",
     .group = "Buckets (records without a plan)", .help = "never enlarge"},
    {.name = "resize_interpolation", .alias = "interpolation", .type = SD_OPT_STRING, .dest = &a.interpolation,
     .metavar = "NAME", .group = "Images",
     .help = "force one filter: lanczos, box (PIL), nearest, bilinear, linear, bicubic, cubic, area (OpenCV) "
             "(default: OpenCV INTER_AREA when shrinking, PIL LANCZOS otherwise); a record's "
             "resize_interpolation wins"},
    {.name = "device", .type = SD_OPT_STRING, .dest = &a.device, .def = "cpu", .metavar = "cpu|cuda[:N]",
     .group = "Latents",
     .help = "where the VAE runs: the CPU, or CUDA GPU N (a build with CUDA=1); images are decoded and "
             "resized on the CPU either way"},
    SD_OPT_THREADS(&a.threads),
    SD_OPT_END};

/* ---- run state ------------------------------------------------------------------------------- */

enum { ST_QUEUED, ST_READY, ST_GROUPED, ST_DONE };

typedef struct item {
    /* main thread */
    jv rec;
    long line;
    const char *src;
    char *image;
    int have_plan, have_size, rec_w, rec_h;
    const sd_bucket_set *set;  /* planning here: the record's configuration */
    int filter, alpha;
    int group;
    /* worker results */
    int state;
    sd_bucket_plan plan;
    sd_latent_key key;
    char *path;
    float *x;                  /* [flip ? 2 : 1][3][H][W], normalised */
    float *mask;               /* [H][W] */
    int reused;
    char *why;                 /* why an existing file was not reused */
    char *err;
} item;

static void item_fail(item *it, const char *msg)
{
    if (!it->err) it->err = strdup(msg && *msg ? msg : "error");
}

static struct {
    pthread_mutex_t mu;
    pthread_cond_t job_cv, ready_cv;
    item **jobs;               /* FIFO of queued work */
    int njobs, jhead, jcap;
    item **ready;
    int nready, rcap;
    int quit;
    int pending;               /* items handed to workers and not yet collected */
} q = {.mu = PTHREAD_MUTEX_INITIALIZER, .job_cv = PTHREAD_COND_INITIALIZER, .ready_cv = PTHREAD_COND_INITIALIZER};

static struct {
    char vae_sha[65];
    int channels, factor;
    int sdxl_names;            /* --kohya_names suffix _sdxl.npz */
    float lut[256];
} g;

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

/* ---- producer side (no jv here) -------------------------------------------------------------- */

static void prepare_pixels(item *it, const uint8_t *buf, size_t n)
{
    sd_image im = {0}, out = {0};
    const sd_bucket_plan *p = &it->plan;
    if (sd_image_decode(buf, n, it->image, it->alpha ? SD_ALPHA_KEEP : SD_ALPHA_DROP, &im, NULL) < 0) {
        item_fail(it, sd_errmsg());
        return;
    }
    if (im.w != p->image_w || im.h != p->image_h) {
        char m[4200];
        snprintf(m, sizeof m, "%s: the image is %dx%d but the record's image_size is [%d,%d] (run sd-bucket --reprobe)",
                 it->image, im.w, im.h, p->image_w, p->image_h);
        item_fail(it, m);
        sd_image_free(&im);
        return;
    }
    int rc = sd_bucket_apply(&im, p, it->filter, 0, &out);
    sd_image_free(&im);
    if (rc < 0) {
        sd_err_prefix(rc, "%s", it->image);
        item_fail(it, sd_errmsg());
        return;
    }
    size_t W = (size_t)out.w, H = (size_t)out.h, hw = W * H, c = (size_t)out.c;
    int nf = it->key.flip ? 2 : 1;
    it->x = malloc((size_t)nf * 3 * hw * sizeof(float));
    if (it->alpha) it->mask = malloc(hw * sizeof(float));
    if (!it->x || (it->alpha && !it->mask)) {
        item_fail(it, "out of memory");
        sd_image_free(&out);
        return;
    }
    /* HWC uint8 → CHW float: torchvision ToTensor (÷255 in f32) + Normalize(0.5, 0.5) */
    for (size_t y = 0; y < H; y++)
        for (size_t xx = 0; xx < W; xx++) {
            const uint8_t *px = out.px + (y * W + xx) * c;
            for (size_t ch = 0; ch < 3; ch++) it->x[ch * hw + y * W + xx] = g.lut[px[ch]];
            if (it->alpha) it->mask[y * W + xx] = (float)px[3] / 255.0f;
        }
    if (nf == 2) { /* img[:, ::-1, :] of the trimmed image */
        float *f = it->x + 3 * hw;
        for (size_t ch = 0; ch < 3; ch++)
            for (size_t y = 0; y < H; y++) {
                const float *s = it->x + ch * hw + y * W;
                float *d = f + ch * hw + y * W;
                for (size_t xx = 0; xx < W; xx++) d[xx] = s[W - 1 - xx];
            }
    }
    sd_image_free(&out);
}

static void work(item *it)
{
    char *buf = NULL;
    size_t n = 0;
    if (sd_read_file(it->image, (size_t)1 << 31, &buf, &n) < 0) {
        item_fail(it, sd_errmsg());
        return;
    }
    uint8_t d[32];
    sd_sha256(buf, n, d);
    sd_hex(d, 32, it->key.source_sha256);
    if (!it->have_plan) {
        int w, h;
        if (sd_image_probe_mem(buf, n, it->image, &w, &h, NULL) < 0) {
            item_fail(it, sd_errmsg());
            goto out;
        }
        if (it->have_size && (w != it->rec_w || h != it->rec_h)) {
            char m[4200];
            snprintf(m, sizeof m, "%s: the image is %dx%d but the record's image_size is [%d,%d]", it->image, w, h,
                     it->rec_w, it->rec_h);
            item_fail(it, m);
            goto out;
        }
        if (sd_bucket_select(it->set, w, h, &it->plan) < 0) {
            sd_err_prefix(SD_EINVAL, "%s", it->image);
            item_fail(it, sd_errmsg());
            goto out;
        }
    }
    const sd_bucket_plan *p = &it->plan;
    if (p->bucket_w % g.factor || p->bucket_h % g.factor) {
        char m[4200];
        snprintf(m, sizeof m, "%s: bucket %dx%d is not a multiple of the VAE's factor %d", it->image, p->bucket_w,
                 p->bucket_h, g.factor);
        item_fail(it, m);
        goto out;
    }
    sd_latent_key *k = &it->key;
    memcpy(k->vae_sha256, g.vae_sha, sizeof k->vae_sha256);
    k->bucket_w = p->bucket_w;
    k->bucket_h = p->bucket_h;
    k->resized_w = p->resized_w;
    k->resized_h = p->resized_h;
    memcpy(k->crop_ltrb, p->crop_ltrb, sizeof k->crop_ltrb);
    k->filter = it->filter;
    k->flip = a.flip;
    k->alpha_mask = it->alpha;
    k->mean = a.latent_mode == 1;
    k->seed = (uint64_t)a.seed;
    k->half = a.dtype == 1;
    char path[8192];
    int rc = a.kohya_names ? sd_latent_kohya_name(path, sizeof path, it->image, p->image_w, p->image_h, g.sdxl_names)
                           : sd_latent_key_path(path, sizeof path, a.out, k);
    if (rc < 0 || !(it->path = strdup(path))) {
        item_fail(it, rc < 0 ? sd_errmsg() : "out of memory");
        goto out;
    }
    if (a.skip_existing) {
        char why[512];
        if (sd_latent_cache_check_file(path, k, g.channels, g.factor, why, sizeof why)) {
            it->reused = 1;
            goto out;
        }
        it->why = strdup(why);
    }
    prepare_pixels(it, (const uint8_t *)buf, n);
out:
    free(buf);
}

static void *producer(void *arg)
{
    (void)arg;
    omp_set_num_threads(1);
    pthread_mutex_lock(&q.mu);
    for (;;) {
        while (!q.quit && q.njobs == 0) pthread_cond_wait(&q.job_cv, &q.mu);
        if (q.quit) break;
        item *it = q.jobs[q.jhead];
        q.jhead = (q.jhead + 1) % q.jcap;
        q.njobs--;
        pthread_mutex_unlock(&q.mu);
        work(it);
        pthread_mutex_lock(&q.mu);
        q.ready[q.nready++] = it;
        pthread_cond_signal(&q.ready_cv);
    }
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

static void submit(item *it)
{
    pthread_mutex_lock(&q.mu);
    q.jobs[(q.jhead + q.njobs) % q.jcap] = it;
    q.njobs++;
    q.pending++;
    pthread_cond_signal(&q.job_cv);
    pthread_mutex_unlock(&q.mu);
}

/* ---- bucket-set cache (main thread) ---------------------------------------------------------- */

static sd_bucket_sets sets; /* entries never move: items point at their set */

/* ---- groups of prepared images (main thread) ------------------------------------------------- */

typedef struct group {
    int w, h;
    item **it;
    int n;
} group;

static group *groups;
static int ngroups;

static struct {
    sd_ctx ctx;
    size_t scratch_cap;
    sd_model m;
    int m_open;
    sd_devkind dev;   /* where the VAE runs */
    float *xbuf, *mbuf, *zbuf;
    size_t xcap, mcap, zcap;
    long encoded, reused, failed;
    sd_latent_write_opts wopts;
} r;

static int ensure(float **p, size_t *cap, size_t n)
{
    if (n <= *cap) return 0;
    float *np = realloc(*p, n * sizeof(float));
    if (!np) return -1;
    *p = np;
    *cap = n;
    return 0;
}

/* Output paths written or reused in this run: path hash → key hash, so two records never claim
 * one file with different contents (e.g. --kohya_names and one image in two resolutions). */
typedef struct { uint64_t path, key; long line; } claim;
static struct { claim *e; size_t cap, n; } claims;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ? h : 1;
}

/* 1 claimed (or already ours), 0 taken by another key (message in m) */
static int claim_path(item *it, char *m, size_t mcap)
{
    if (2 * (claims.n + 1) > claims.cap) {
        size_t nc = claims.cap ? claims.cap * 2 : 1024;
        claim *ne = calloc(nc, sizeof *ne);
        if (!ne) {
            snprintf(m, mcap, "out of memory");
            return 0;
        }
        for (size_t i = 0; i < claims.cap; i++)
            if (claims.e[i].path) {
                size_t j = claims.e[i].path & (nc - 1);
                while (ne[j].path) j = (j + 1) & (nc - 1);
                ne[j] = claims.e[i];
            }
        free(claims.e);
        claims.e = ne;
        claims.cap = nc;
    }
    char kh[65];
    sd_latent_key_hash(&it->key, kh);
    uint64_t ph = fnv(it->path, strlen(it->path)), khv = fnv(kh, 64);
    size_t j = ph & (claims.cap - 1);
    while (claims.e[j].path && claims.e[j].path != ph) j = (j + 1) & (claims.cap - 1);
    if (!claims.e[j].path) {
        claims.e[j] = (claim){ph, khv, it->line};
        claims.n++;
        return 1;
    }
    if (claims.e[j].key == khv) return 1;
    snprintf(m, mcap, "%s: already written for line %ld with a different image or settings", it->path,
             claims.e[j].line);
    return 0;
}

static int write_latent(item *it, const float *lat, const float *latf)
{
    char m[8400];
    if (!claim_path(it, m, sizeof m)) {
        item_fail(it, m);
        return -1;
    }
    char *slash = strrchr(it->path, '/');
    if (slash && slash != it->path) {
        *slash = 0;
        int rc = sd_mkdirs(it->path);
        *slash = '/';
        if (rc < 0) {
            item_fail(it, sd_errmsg());
            return -1;
        }
    }
    sd_latent_file lf;
    memset(&lf, 0, sizeof lf);
    lf.latents = (float *)lat;
    lf.latents_flipped = (float *)latf;
    lf.c = g.channels;
    lf.h = it->plan.bucket_h / g.factor;
    lf.w = it->plan.bucket_w / g.factor;
    lf.original_size[0] = it->plan.image_w;
    lf.original_size[1] = it->plan.image_h;
    for (int i = 0; i < 4; i++) lf.crop_ltrb[i] = (int64_t)it->plan.crop_ltrb[i]; /* Python int(): truncation */
    if (it->alpha) {
        lf.alpha_mask = it->mask;
        lf.mask_h = it->plan.bucket_h;
        lf.mask_w = it->plan.bucket_w;
    }
    int rc = sd_latent_key_meta(&it->key, TOOL, SD_VERSION, &lf.meta_json);
    if (rc >= 0) rc = sd_latent_write(it->path, &lf, &r.wopts);
    free(lf.meta_json);
    if (rc < 0) {
        item_fail(it, sd_errmsg());
        return -1;
    }
    return 0;
}

/* GPU memory for a batch of nb images of W×H: the planned buffers, the batch in and out, the ops'
 * lowering buffers (the fail-fast check at start and each batch's context use the same sum) */
static size_t gpu_batch_bytes(int64_t nb, int64_t H, int64_t W)
{
    size_t need = sd_vae_scratch_bytes(&r.m.vae, nb, H, W, 0);
    size_t io = (size_t)nb * (size_t)(3 * H * W + 2 * g.channels * (H / g.factor) * (W / g.factor)) * sizeof(float);
    return 2 * need + io + ((size_t)256 << 20);
}

static int ensure_scratch(int64_t nb, int64_t H, int64_t W)
{
    size_t want;
    if (r.dev == SD_DEV_CUDA) {
        want = gpu_batch_bytes(nb, H, W);
    } else {
        size_t need = sd_vae_scratch_bytes(&r.m.vae, nb, H, W, 0);
        /* the ops' own lowering buffers come on top; the arena is reserved address space */
        want = 4 * need + ((size_t)1 << 30);
        if (want < ((size_t)8 << 30)) want = (size_t)8 << 30;
    }
    if (want <= r.scratch_cap) return 0;
    if (r.scratch_cap) sd_ctx_free(&r.ctx);
    r.scratch_cap = 0;
    if (sd_ctx_init(&r.ctx, r.dev, sd_threads_get(), want) < 0) {
        if (r.dev == SD_DEV_CUDA)
            sd_err_prefix(SD_ENOMEM, "GPU memory for a VAE batch of %lld at %lldx%lld (lower --vae_batch_size, or "
                          "--device cpu)", (long long)nb, (long long)W, (long long)H);
        return -1;
    }
    r.scratch_cap = want;
    return 0;
}

static void encode_group(int gi)
{
    group *gr = &groups[gi];
    int n = gr->n, nf = a.flip ? 2 : 1;
    int64_t nb = (int64_t)n * nf, H = gr->h, W = gr->w, E = g.channels, f = g.factor;
    int64_t h = H / f, w = W / f;
    size_t img = (size_t)(3 * H * W);
    const char *fail = NULL;
    char msg[1024];
    if (ensure(&r.xbuf, &r.xcap, (size_t)nb * img) || ensure(&r.mbuf, &r.mcap, (size_t)(nb * 2 * E * h * w)) ||
        ensure(&r.zbuf, &r.zcap, (size_t)(2 * E * h * w))) {
        fail = "out of memory";
    } else if (ensure_scratch(nb, H, W) < 0) {
        snprintf(msg, sizeof msg, "%s", sd_errmsg());
        fail = msg;
    }
    if (!fail) {
        for (int i = 0; i < n; i++) memcpy(r.xbuf + (size_t)i * nf * img, gr->it[i]->x, (size_t)nf * img * sizeof(float));
        sd_tensor x = sd_tensor_wrap(r.xbuf, SD_F32, SD_DIMS(nb, 3, H, W));
        sd_tensor m = sd_tensor_wrap(r.mbuf, SD_F32, SD_DIMS(nb, 2 * E, h, w));
        int rc = SD_OK;
        size_t mark = sd_arena_mark(&r.ctx.scratch);
        if (r.dev == SD_DEV_CUDA) {   /* the batch through GPU buffers from the arena */
            sd_tensor xd, md;
            rc = sd_arena_tensor(&r.ctx.scratch, &xd, SD_F32, SD_DIMS(nb, 3, H, W));
            if (!rc) rc = sd_arena_tensor(&r.ctx.scratch, &md, SD_F32, SD_DIMS(nb, 2 * E, h, w));
            if (!rc) rc = sd_tensor_upload(&xd, r.xbuf, sd_tensor_nbytes(&xd));
            if (!rc) rc = sd_vae_encode(&r.ctx, &r.m.vae, &md, &xd);
            if (!rc) rc = sd_tensor_download(&md, r.mbuf, sd_tensor_nbytes(&md));
        } else {
            rc = sd_vae_encode(&r.ctx, &r.m.vae, &m, &x);
        }
        sd_arena_reset(&r.ctx.scratch, mark);
        if (rc < 0) {
            snprintf(msg, sizeof msg, "VAE encode of a %lldx%lld batch of %lld: %s", (long long)W, (long long)H,
                     (long long)nb, sd_errmsg());
            fail = msg;
        }
    }
    size_t lat_n = (size_t)(E * h * w);
    for (int i = 0; i < n; i++) {
        item *it = gr->it[i];
        if (fail) {
            item_fail(it, fail);
        } else {
            int bad = 0;
            for (int k = 0; k < nf && !bad; k++) {
                sd_tensor mj, z = sd_tensor_wrap(r.zbuf + (size_t)k * lat_n, SD_F32, SD_DIMS(1, E, h, w));
                sd_tensor m = sd_tensor_wrap(r.mbuf, SD_F32, SD_DIMS(nb, 2 * E, h, w));
                sd_tensor_narrow0(&m, (int64_t)i * nf + k, 1, &mj);
                int rc;
                if (it->key.mean) {
                    rc = sd_vae_latent(&r.ctx, &z, &mj, NULL);
                } else {
                    uint32_t step, sample;
                    sd_latent_noise_ids(&it->key, k, &step, &sample);
                    float *noise = malloc(lat_n * sizeof(float));
                    rc = noise ? sd_vae_noise(noise, lat_n, it->key.seed, step, sample) : sd_err(SD_ENOMEM, "out of memory");
                    sd_tensor nt = sd_tensor_wrap(noise, SD_F32, SD_DIMS(1, E, h, w));
                    if (rc >= 0) rc = sd_vae_latent(&r.ctx, &z, &mj, &nt);
                    free(noise);
                }
                if (rc < 0) {
                    item_fail(it, sd_errmsg());
                    bad = 1;
                }
                for (size_t j = 0; j < lat_n && !bad; j++)
                    if (!isfinite(r.zbuf[k * lat_n + j])) {
                        char e[4200];
                        snprintf(e, sizeof e, "%s: the VAE produced NaN or infinite latents", it->image);
                        item_fail(it, e);
                        bad = 1;
                    }
            }
            if (!bad && write_latent(it, r.zbuf, nf == 2 ? r.zbuf + lat_n : NULL) == 0) r.encoded++;
        }
        free(it->x);
        free(it->mask);
        it->x = it->mask = NULL;
        it->state = ST_DONE;
    }
    gr->n = 0;
}

static void add_to_group(item *it)
{
    int gi;
    for (gi = 0; gi < ngroups; gi++)
        if (groups[gi].w == it->plan.bucket_w && groups[gi].h == it->plan.bucket_h) break;
    if (gi == ngroups) {
        group *ng = realloc(groups, (size_t)(ngroups + 1) * sizeof *ng);
        item **arr = malloc((size_t)a.batch * sizeof *arr);
        if (!ng || !arr) {
            free(arr);
            if (ng) groups = ng;
            item_fail(it, "out of memory");
            it->state = ST_DONE;
            return;
        }
        groups = ng;
        groups[gi] = (group){it->plan.bucket_w, it->plan.bucket_h, arr, 0};
        ngroups++;
    }
    group *gr = &groups[gi];
    gr->it[gr->n++] = it;
    it->group = gi;
    it->state = ST_GROUPED;
    if (gr->n == a.batch) encode_group(gi);
}

/* ---- records (main thread) ------------------------------------------------------------------- */

static int global_filter = -1;

static void prepare(item *it)
{
    jv rec = it->rec;
    int rc;
    if (sd_bucket_record_image(rec, &it->image) < 0) goto bad;
    int b;
    it->alpha = a.alpha;
    if ((rc = sd_jsonl_get_bool(rec, "alpha_mask", &b)) < 0) goto bad;
    if (rc == 1) it->alpha = b;
    it->filter = global_filter;
    if (sd_bucket_record_filter(rec, &it->filter) < 0) goto bad;
    if ((rc = sd_bucket_record_plan(rec, &it->plan)) < 0) goto bad;
    if (rc == 1) {
        it->have_plan = 1;
        return;
    }
    int sz[2];
    if ((rc = sd_jsonl_get_size2(rec, "image_size", sz)) < 0) goto bad;
    if (rc == 1) {
        it->have_size = 1;
        it->rec_w = sz[0];
        it->rec_h = sz[1];
    }
    sd_bucket_cfg c;
    if ((rc = sd_bucket_record_cfg_opts(rec, &a.bk, &c)) < 0) goto bad;
    if (rc == 0) {
        item_fail(it, "no bucket plan and no resolution: run sd-bucket first, or give --resolution");
        return;
    }
    const sd_bucket_set_entry *e = sd_bucket_sets_get(&sets, &c, NULL);
    if (!e) goto bad;
    if (!e->ok) {
        item_fail(it, e->err);
        return;
    }
    it->set = &e->set;
    return;
bad:
    item_fail(it, sd_errmsg());
}

static jv ints2(int64_t x, int64_t y) { return JV_ARRAY(jv_number((double)x), jv_number((double)y)); }

/* Emit a finished record (consumes it). Returns -1 on a write error (fatal). */
static int emit(item *it)
{
    int rc = 0;
    if (it->err) {
        sd_record_error(it->src, it->line, "%s", it->err);
        r.failed++;
        jv_free(it->rec);
    } else {
        jv rec = it->rec;
        if (!it->have_plan) {
            const sd_bucket_plan *p = &it->plan;
            rec = jv_object_set(rec, jv_string("image_size"), ints2(p->image_w, p->image_h));
            rec = jv_object_set(rec, jv_string("bucket"), ints2(p->bucket_w, p->bucket_h));
            rec = jv_object_set(rec, jv_string("resized"), ints2(p->resized_w, p->resized_h));
            rec = jv_object_set(rec, jv_string("crop_ltrb"),
                                JV_ARRAY(jv_number(p->crop_ltrb[0]), jv_number(p->crop_ltrb[1]),
                                         jv_number(p->crop_ltrb[2]), jv_number(p->crop_ltrb[3])));
            rec = jv_object_set(rec, jv_string("ar_error"), jv_number(p->ar_error));
        }
        rec = jv_object_set(rec, jv_string("latents"), jv_string(it->path));
        if (sd_jsonl_write(stdout, rec) < 0) {
            sd_error("stdout: %s", sd_errmsg());
            rc = -1;
        }
    }
    free(it->image);
    free(it->path);
    free(it->x);
    free(it->mask);
    free(it->why);
    free(it->err);
    free(it);
    return rc;
}

/* Main-thread handling of an item a worker finished. */
static void collect(item *it)
{
    q.pending--;
    if (it->why) sd_debug("%s: re-encoding %s: %s", it->image, it->path, it->why);
    if (it->err) {
        it->state = ST_DONE;
    } else if (it->reused) {
        char m[8400];
        if (!claim_path(it, m, sizeof m))
            item_fail(it, m);
        else
            r.reused++;
        it->state = ST_DONE;
    } else {
        add_to_group(it);
    }
}

/* ---- model ----------------------------------------------------------------------------------- */

/* The VAE through models/sd_model.h: .safetensors, legacy .ckpt (safe reader) or a Diffusers folder,
 * and --vae replacements of every kind; only the VAE is built. */
static int load_vae(void)
{
    sd_model_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.parts = SD_MODEL_VAE;
    mo.vae = a.model ? a.vae : NULL;
    mo.config = a.model_config;
    mo.v2 = a.v2;
    mo.v_param = -1;
    const char *path = a.model ? a.model : a.vae;
    int rc = sd_model_open(&r.m, path, &mo);
    if (rc < 0) return rc;
    r.m_open = 1;
    if (r.m.warning[0]) sd_warn("%s", r.m.warning);
    rc = sd_model_load(&r.m, SD_DEV_CPU);
    sd_model_release_source(&r.m);
    if (rc < 0) return rc;
    g.channels = r.m.cfg.vae.embed_dim;
    g.factor = (int)r.m.vae.factor;
    double t0 = sd_now();
    rc = sd_latent_vae_hash(&r.m.vae_params, VAE_PREFIX, g.vae_sha);   /* on the host */
    if (rc >= 0) sd_debug("VAE hash %s (%.2f s)", g.vae_sha, sd_now() - t0);
    if (rc >= 0 && r.dev == SD_DEV_CUDA) {
        /* fail fast: the weights and a --vae_batch_size batch at --resolution (every bucket of it
         * has at most that area) must fit in what is free; records that bring larger plans or
         * their own resolution are checked per batch */
        const double gib = 1024.0 * 1024 * 1024;
        size_t weights = r.m.vae_params.value_bytes, work = 0;
        int64_t nb = (int64_t)a.batch * (a.flip ? 2 : 1);
        char what[96], parts[256];
        snprintf(what, sizeof what, "--device %s", a.device);
        if (a.bk.resolution.n) {
            int64_t rw = a.bk.resolution.i[0], rh = a.bk.resolution.n > 1 ? a.bk.resolution.i[1] : rw;
            work = gpu_batch_bytes(nb, rh, rw);
            snprintf(parts, sizeof parts, "VAE weights %.2f GiB, working memory %.2f GiB for %lld image%s of %lldx%lld",
                     (double)weights / gib, (double)work / gib, (long long)nb, nb == 1 ? "" : "s", (long long)rw,
                     (long long)rh);
        } else {
            snprintf(parts, sizeof parts, "VAE weights %.2f GiB; without --resolution each batch is checked as it comes",
                     (double)weights / gib);
        }
        sd_device_info di;
        rc = sd_device_fit(a.dev_index, weights + work, what, parts,
                           "lower --vae_batch_size or --resolution, or run with --device cpu", &di);
        if (rc >= 0) rc = sd_params_move(&r.m.vae_params, SD_DEV_CUDA);
        if (rc >= 0) sd_info("VAE on %s (cuda:%d)", di.name, a.dev_index);
    }
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    sd_log_init(TOOL);
    sd_opts o;
    if (sd_opts_init(&o, TOOL, table) < 0) return sd_fatal(1);
    o.flags = SD_OPTS_CONFIG | SD_OPTS_LENIENT;
    o.usage = "--model FILE [--vae FILE] (--out DIR | --kohya_names) [OPTIONS] [RECORDS.jsonl ...]";
    o.description =
        "Reads records (JSON lines; stdin when no file is named), resizes and crops each image as its "
        "bucket plan says (planning it with sd-bucket's rules when the record has none), encodes it with "
        "the VAE and writes one latent file per image; each record gains 'latents', the file's path.";
    o.epilog = "Exit status: 0 all records done, 1 fatal error, 2 usage error, 3 some records skipped, "
               "130/143 interrupted.\nSee sd-encode-latents(1), sd-latent(5).";
    int ex = sd_cmdline_main(&o, argc, argv);
    if (ex >= 0) {
        sd_opts_free(&o);
        return ex;
    }
    if (o.nunknown) sd_warn("%s: %d key%s not used by " TOOL, o.config_file, o.nunknown, o.nunknown == 1 ? "" : "s");
    const char *usage = NULL;
    if (!a.model && !a.vae) usage = "give --model or --vae";
    else if (!a.out && !a.kohya_names) usage = "give --out DIR or --kohya_names";
    else if (a.out && a.kohya_names) usage = "--out and --kohya_names exclude each other";
    else if (!a.kohya_names && sd_opts_is_set(&o, &a.sdxl)) usage = "--sdxl names kohya cache files: give --kohya_names";
    if (!usage && a.interpolation && sd_bucket_interp_from_name(a.interpolation, &global_filter) < 0)
        usage = sd_errmsg();
    if (!usage && sd_device_parse(a.device, &a.dev_index) < 0) usage = sd_errmsg();
    if (usage) {
        sd_cmdline_usage_error(TOOL, "%s", usage);
        sd_opts_free(&o);
        return SD_EXIT_USAGE;
    }
    if (a.kohya_names && !sd_opts_is_set(&o, &a.compress)) a.compress = 1;
    r.wopts.compress = a.compress == 1 ? SD_LATENT_STORE : SD_LATENT_ZSTD;
    r.wopts.half = a.dtype == 1;
    for (int i = 0; i < 256; i++) g.lut[i] = ((float)i / 255.0f - 0.5f) / 0.5f;

    if (sd_threads_init(a.threads) < 0) return sd_fatal(1);
    int nthreads = sd_threads_get();
    r.dev = a.dev_index == SD_DEVICE_CPU ? SD_DEV_CPU : SD_DEV_CUDA;
    if (r.dev == SD_DEV_CUDA && sd_device_init(a.dev_index) < 0) return sd_fatal(1);
    if (load_vae() < 0) return sd_fatal(1);
    g.sdxl_names = sd_opts_is_set(&o, &a.sdxl) ? a.sdxl : r.m.cfg.family == SD_FAMILY_SDXL;
    if (a.out && sd_mkdirs(a.out) < 0) return sd_fatal(1);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int nprod = nthreads >= 4 ? nthreads / 2 : 1;
    if (nprod > 8) nprod = 8;
    int window = 2 * a.batch + 2 * nprod + 2;
    q.jcap = window + 1;
    q.jobs = calloc((size_t)q.jcap, sizeof *q.jobs);
    q.rcap = window + 1;
    q.ready = calloc((size_t)q.rcap, sizeof *q.ready);
    item **fifo = calloc((size_t)window, sizeof *fifo);
    pthread_t *th = calloc((size_t)nprod, sizeof *th);
    if (!q.jobs || !q.ready || !fifo || !th) return sd_fatal(1);
    for (int i = 0; i < nprod; i++)
        if (pthread_create(&th[i], NULL, producer, NULL)) {
            sd_error("cannot start threads: %s", strerror(errno));
            return 1;
        }
    sd_debug("%d threads, %d image producers, window %d", nthreads, nprod, window);

    int nfiles = o.npos ? o.npos : 1, fi = 0, eof = 0, fatal = 0;
    sd_jsonl_reader *rd = NULL;
    const char *src = NULL;
    int fhead = 0, nfifo = 0;
    sd_progress prog;
    sd_progress_begin(&prog, "encoding", 0);
    double t_start = sd_now();
    while (!fatal) {
        if (g_signal) break;
        /* 1. fill the window */
        while (!eof && nfifo < window && !fatal) {
            if (!rd) {
                if (fi == nfiles) {
                    eof = 1;
                    break;
                }
                const char *name = o.npos ? o.pos[fi] : "-";
                rd = sd_jsonl_open_path(name);
                if (!rd) {
                    fatal = 1;
                    sd_fatal(1);
                    break;
                }
                src = strcmp(name, "-") ? name : "stdin";   /* outlives the reader: records in the window keep it */
            }
            jv rec;
            long line;
            int rc = sd_jsonl_next(rd, &rec, &line);
            if (rc == 0) {
                sd_jsonl_close(rd);
                rd = NULL;
                fi++;
                continue;
            }
            if (rc < 0 && rc != SD_EFORMAT && rc != SD_ERANGE) {
                sd_error("%s", sd_errmsg());
                fatal = 1;
                break;
            }
            item *it = calloc(1, sizeof *it);
            if (!it) {
                sd_error("out of memory");
                fatal = 1;
                break;
            }
            it->line = line;
            it->src = src;
            it->group = -1;
            if (rc < 0) {
                const char *m = sd_errmsg();
                char pre[64];
                snprintf(pre, sizeof pre, ":%ld: ", line);
                const char *p = strstr(m, pre);
                it->rec = jv_null();
                item_fail(it, p ? p + strlen(pre) : m);
            } else {
                it->rec = rec;
                prepare(it);
            }
            fifo[(fhead + nfifo) % window] = it;
            nfifo++;
            if (it->err)
                it->state = ST_DONE;
            else
                submit(it);
        }
        /* 2. collect what the producers finished */
        int progress = 0;
        pthread_mutex_lock(&q.mu);
        int nr = q.nready;
        item *got[512];
        if (nr > 512) nr = 512;
        memcpy(got, q.ready + q.nready - nr, (size_t)nr * sizeof *got);
        q.nready -= nr;
        pthread_mutex_unlock(&q.mu);
        for (int i = 0; i < nr; i++) collect(got[i]);
        progress += nr;
        /* 3. records out, in order */
        while (nfifo && fifo[fhead]->state == ST_DONE && !fatal) {
            if (emit(fifo[fhead]) < 0) fatal = 1;
            fhead = (fhead + 1) % window;
            nfifo--;
            progress++;
            sd_progress_update(&prog, 1);
        }
        if (fatal) break;
        if (!nfifo && eof) break;
        if (progress) continue;
        /* 4. nothing moved: encode the oldest record's group once no producer can add to it */
        if (nfifo && fifo[fhead]->state == ST_GROUPED && q.pending == 0) {
            encode_group(fifo[fhead]->group);
            continue;
        }
        pthread_mutex_lock(&q.mu);
        if (!q.nready && !g_signal) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&q.ready_cv, &q.mu, &ts);
        }
        pthread_mutex_unlock(&q.mu);
    }
    sd_progress_end(&prog);

    pthread_mutex_lock(&q.mu);
    q.quit = 1;
    pthread_cond_broadcast(&q.job_cv);
    pthread_mutex_unlock(&q.mu);
    for (int i = 0; i < nprod; i++) pthread_join(th[i], NULL);
    /* whatever is left (interrupt or fatal error) is dropped without output */
    for (int i = 0; i < nfifo; i++) {
        item *it = fifo[(fhead + i) % window];
        jv_free(it->rec);
        free(it->image);
        free(it->path);
        free(it->x);
        free(it->mask);
        free(it->why);
        free(it->err);
        free(it);
    }
    if (rd) {
        sd_jsonl_close(rd);
    }
    long left = nfifo;
    double dt = sd_now() - t_start;
    sd_info("%ld encoded, %ld reused, %ld failed in %.2f s (%.3f images/s)%s", r.encoded, r.reused, r.failed, dt,
            dt > 0 ? (double)(r.encoded + r.reused) / dt : 0.0, g_signal ? " (interrupted)" : "");
    if (g_signal && left) sd_info("%ld records in flight were dropped", left);

    for (int i = 0; i < ngroups; i++) free(groups[i].it);
    free(groups);
    free(claims.e);
    free(r.xbuf);
    free(r.mbuf);
    free(r.zbuf);
    if (r.scratch_cap) sd_ctx_free(&r.ctx);
    if (r.m_open) sd_model_close(&r.m);
    sd_device_shutdown();
    sd_bucket_sets_free(&sets);
    free(q.jobs);
    free(q.ready);
    free(fifo);
    free(th);
    sd_opts_free(&o);
    if (g_signal) return g_signal == SIGINT ? 130 : 143;
    if (fatal) return 1;
    return r.failed ? 3 : 0;
}
