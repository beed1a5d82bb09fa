/* sd-tag: WD14-style tagger (SmilingWolf wd-vit-tagger-v3 / wd-convnext-tagger-v3 / wd-swinv2-tagger-v3 /
 * wd-eva02-large-tagger-v3, timm safetensors; or any SmilingWolf model.onnx, v1-v3, on the CPU through
 * models/onnx_run.h) -> tags (sd-tag(1)).
 *
 * Records (JSON lines with "image") or image folders in; each record gets "tags" and, unless
 * --no-sidecar, the image gets a <stem><caption_extension> sidecar as kohya-ss/sd-scripts'
 * tag_images_by_wd14_tagger.py writes it. Images of a batch are decoded and preprocessed in
 * parallel (plain structs, no jv), the model runs on the batch, records are written in order. */
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
#include "base/strbuf.h"
#include "base/threads.h"
#include "data/image_jobs.h"
#include "data/images.h"
#include "data/metadata.h"
#include "data/wdtags.h"
#include "io/cmdline.h"
#include "io/image.h"
#include "io/jsonl.h"
#include "io/tags_csv.h"
#include "models/onnx_run.h"
#include "models/tagger.h"
#include "models/tagger_convnext.h"
#include "models/tagger_eva02.h"
#include "models/tagger_swinv2.h"
#include "tensor/device.h"

#define TOOL "sd-tag"

static struct {
    const char *model, *tags_csv, *device;
    int preset;
    double thresh, general_threshold, character_threshold;
    int character_tags_first, use_rating_tags, use_rating_tags_as_last_tag;
    const char *caption_separator, *undesired_tags, *always_first_tags, *tag_replacement;
    int remove_underscore, character_tag_expand, append_tags, sidecar, recursive, frequency_tags, debug;
    const char *caption_extension;
    int batch_size, workers, threads;
    int onnx;
    /* refused */
    int force_download, use_quality_tags, use_quality_tags_as_last_tag;
    const char *repo_id, *model_dir, *output_path;
    double meta_threshold, model_threshold, copyright_threshold, artist_threshold;
} a = {.workers = -1};

#define G_M "Model"
#define G_T "Tags"
#define G_O "Output"
#define G_X "Reference options that are refused"

static const sd_opt table[] = {
    {.name = "model", .type = SD_OPT_STRING, .dest = &a.model, .metavar = "DIR|FILE", .group = G_M,
     .help = "a folder with model.safetensors and selected_tags.csv (a Hugging Face SmilingWolf/wd-vit-tagger-v3, "
             "wd-convnext-tagger-v3, wd-swinv2-tagger-v3 or wd-eva02-large-tagger-v3 download), or the model.safetensors "
             "file itself; a folder with only model.onnx (v1/v2 repos such as wd-v1-4-convnext-tagger-v2), or a .onnx "
             "file, runs the ONNX graph (see --onnx)"},
    {.name = "tags_csv", .type = SD_OPT_STRING, .dest = &a.tags_csv, .metavar = "FILE", .group = G_M,
     .help = "selected_tags.csv (default: the one beside the model file)"},
    {.name = "preprocess", .type = SD_OPT_ENUM, .dest = &a.preset, .def = "kohya", .choices = "kohya|wd",
     .group = G_M,
     .help = "kohya: OpenCV INTER_AREA when the padded square is larger than the input, PIL LANCZOS when "
             "smaller (tag_images_by_wd14_tagger.py); wd: PIL BICUBIC (SmilingWolf's scripts)"},
    {.name = "batch_size", .type = SD_OPT_INT, .dest = &a.batch_size, .def = "1", SD_OPT_RANGE(1, 256),
     .group = G_M, .help = "images per model run"},
    {.name = "device", .type = SD_OPT_STRING, .dest = &a.device, .def = "cpu", .metavar = "cpu|cuda[:N]",
     .group = G_M, .help = "where the model runs: the CPU, or CUDA GPU N (a build with CUDA=1)"},
    {.name = "max_data_loader_n_workers", .type = SD_OPT_INT, .dest = &a.workers, SD_OPT_RANGE(0, 1024),
     .group = G_M, .help = "accepted for scripts written for the reference; images are decoded by --threads threads"},
    {.name = "thresh", .type = SD_OPT_DOUBLE, .dest = &a.thresh, .def = "0.35", SD_OPT_ATLEAST(0), .group = G_T,
     .help = "threshold of confidence to add a tag (p >= t)"},
    {.name = "general_threshold", .type = SD_OPT_DOUBLE, .dest = &a.general_threshold, SD_OPT_ATLEAST(0),
     .group = G_T, .help = "threshold for general tags (default: --thresh)"},
    {.name = "character_threshold", .type = SD_OPT_DOUBLE, .dest = &a.character_threshold, SD_OPT_ATLEAST(0),
     .group = G_T, .help = "threshold for character tags (default: --thresh; above 1 disables them)"},
    {.name = "character_tags_first", .type = SD_OPT_FLAG, .dest = &a.character_tags_first, .def = "false",
     .group = G_T, .help = "character tags before the general tags"},
    {.name = "use_rating_tags", .type = SD_OPT_FLAG, .dest = &a.use_rating_tags, .def = "false", .group = G_T,
     .help = "put the most likely rating tag first"},
    {.name = "use_rating_tags_as_last_tag", .type = SD_OPT_FLAG, .dest = &a.use_rating_tags_as_last_tag,
     .def = "false", .group = G_T, .help = "put the most likely rating tag last"},
    {.name = "character_tag_expand", .type = SD_OPT_FLAG, .dest = &a.character_tag_expand, .def = "false",
     .group = G_T, .help = "name_(series) -> name, series"},
    {.name = "remove_underscore", .type = SD_OPT_FLAG, .dest = &a.remove_underscore, .def = "false",
     .group = G_T, .help = "'_' -> ' ' in tags longer than 3 characters"},
    {.name = "undesired_tags", .type = SD_OPT_STRING, .dest = &a.undesired_tags, .def = "", .metavar = "LIST",
     .group = G_T, .help = "tags never written (separated by the caption separator)"},
    {.name = "always_first_tags", .type = SD_OPT_STRING, .dest = &a.always_first_tags, .metavar = "LIST",
     .group = G_T, .help = "tags moved to the front when present (the last listed ends up first)"},
    {.name = "tag_replacement", .type = SD_OPT_STRING, .dest = &a.tag_replacement, .metavar = "S,D;S2,D2",
     .group = G_T, .help = "rename tags (\\, and \\; are literal)"},
    {.name = "caption_separator", .type = SD_OPT_STRING, .dest = &a.caption_separator, .def = ", ",
     .metavar = "SEP", .group = G_T, .help = "separator between tags"},
    {.name = "caption_extension", .alias = "caption_extention", .type = SD_OPT_STRING, .dest = &a.caption_extension,
     .def = ".txt", .metavar = "EXT", .group = G_O, .help = "extension of the sidecar files"},
    {.name = "sidecar", .type = SD_OPT_FLAG, .dest = &a.sidecar, .def = "true", .group = G_O,
     .help = "write <stem><caption_extension> beside each image (--no-sidecar: records only)"},
    {.name = "append_tags", .type = SD_OPT_FLAG, .dest = &a.append_tags, .def = "false", .group = G_O,
     .help = "keep the tags of an existing sidecar (or the record's 'tags') and add only new ones"},
    {.name = "recursive", .type = SD_OPT_FLAG, .dest = &a.recursive, .def = "false", .group = G_O,
     .help = "folder arguments: include subfolders"},
    {.name = "frequency_tags", .type = SD_OPT_FLAG, .dest = &a.frequency_tags, .def = "false", .group = G_O,
     .help = "print tag frequencies (most frequent first) to stderr at the end"},
    {.name = "debug", .type = SD_OPT_FLAG, .dest = &a.debug, .def = "false", .group = G_O,
     .help = "print each image's rating, character and general tags to stderr"},
    SD_OPT_THREADS(&a.threads),
    {.name = "onnx", .type = SD_OPT_FLAG, .dest = &a.onnx, .flags = SD_OPTF_NO_NEGATE, .group = G_M,
     .help = "run the folder's model.onnx (SmilingWolf v1/v2/v3 layout) with sd-tag's own ONNX interpreter, "
             "on the CPU only (no onnxruntime); a fixed batch size in the model overrides --batch_size"},
    {.name = "repo_id", .type = SD_OPT_STRING, .dest = &a.repo_id, .group = G_X, .help = "refused: no downloads; give --model"},
    {.name = "model_dir", .type = SD_OPT_STRING, .dest = &a.model_dir, .group = G_X, .help = "refused: give --model"},
    {.name = "force_download", .type = SD_OPT_FLAG, .dest = &a.force_download, .flags = SD_OPTF_NO_NEGATE,
     .group = G_X, .help = "refused: no downloads"},
    {.name = "output_path", .type = SD_OPT_STRING, .dest = &a.output_path, .metavar = "FILE", .group = G_O,
     .help = "instead of sidecars: FILE.jsonl (image_path, caption, image_size per line) or FILE.json "
             "({path: {tags, image_size}}), as the reference writes them"},
    {.name = "use_quality_tags", .type = SD_OPT_FLAG, .dest = &a.use_quality_tags, .flags = SD_OPTF_NO_NEGATE,
     .group = G_X, .help = "refused: only for tag_mapping.json models"},
    {.name = "use_quality_tags_as_last_tag", .type = SD_OPT_FLAG, .dest = &a.use_quality_tags_as_last_tag,
     .flags = SD_OPTF_NO_NEGATE, .group = G_X, .help = "refused: only for tag_mapping.json models"},
    {.name = "meta_threshold", .type = SD_OPT_DOUBLE, .dest = &a.meta_threshold, .group = G_X,
     .help = "refused: only for tag_mapping.json models"},
    {.name = "model_threshold", .type = SD_OPT_DOUBLE, .dest = &a.model_threshold, .group = G_X,
     .help = "refused: only for tag_mapping.json models"},
    {.name = "copyright_threshold", .type = SD_OPT_DOUBLE, .dest = &a.copyright_threshold, .group = G_X,
     .help = "refused: only for tag_mapping.json models"},
    {.name = "artist_threshold", .type = SD_OPT_DOUBLE, .dest = &a.artist_threshold, .group = G_X,
     .help = "refused: only for tag_mapping.json models"},
    SD_OPT_END};

/* ---- state ----------------------------------------------------------------------------------- */

typedef sd_image_job item;   /* w, h: the image's size (for --output_path) */

static sd_tagger model;
static sd_onnx_run onnx;         /* the ONNX graph (use_onnx) */
static int use_onnx;
static int64_t onnx_batch;       /* the graph's fixed batch size, or 0 (dynamic) */
static sd_wdtags wt;
static sd_ctx ctx;
static int dev_index = SD_DEVICE_CPU;   /* --device */
static long n_done, n_skipped;
static jv results;    /* --output_path: {image path: {"tags", "image_size"}} in the reference's order */

/* --frequency_tags: counts in order of first appearance */
static struct { char **tag; long *count; int n, cap; } freq;

static void freq_add(const char *t)
{
    for (int i = 0; i < freq.n; i++)
        if (!strcmp(freq.tag[i], t)) {
            freq.count[i]++;
            return;
        }
    if (freq.n == freq.cap) {
        freq.cap = freq.cap ? freq.cap * 2 : 256;
        char **nt = realloc(freq.tag, (size_t)freq.cap * sizeof *nt);
        long *nc = nt ? realloc(freq.count, (size_t)freq.cap * sizeof *nc) : NULL;
        if (!nt || !nc) {
            sd_error("out of memory");
            exit(1);
        }
        freq.tag = nt;
        freq.count = nc;
    }
    freq.tag[freq.n] = strdup(t);
    freq.count[freq.n++] = 1;
}

/* worker thread: decode and preprocess */
static void load_one(item *it, void *user)
{
    (void)user;
    sd_image rgb, sq;
    if (sd_image_load(it->image, SD_ALPHA_WHITE, &rgb, NULL) < 0) {
        sd_image_job_fail(it, sd_errmsg());
        return;
    }
    it->w = rgb.w;
    it->h = rgb.h;
    int rc = sd_tagger_prepare_image(&rgb, (int)model.size, a.preset, &sq);
    sd_image_free(&rgb);
    if (rc < 0) {
        sd_err_prefix(rc, "%s", it->image);
        sd_image_job_fail(it, sd_errmsg());
        return;
    }
    it->input = malloc(sizeof(float) * 3 * (size_t)sq.w * (size_t)sq.h);
    if (it->input && use_onnx) sd_tagger_image_to_nhwc_bgr(&sq, it->input);   /* the [3,S,S] slot holds [S,S,3] */
    else if (it->input) sd_tagger_image_to_input(&sq, it->input);
    else sd_image_job_fail(it, "out of memory");
    sd_image_free(&sq);
}

/* text of the existing sidecar for --append_tags: 1 with *text, 0 when absent, <0 error */
static int read_existing(const char *path, char **text)
{
    size_t n;
    int rc = sd_read_file(path, (size_t)64 << 20, text, &n);
    if (rc == SD_ENOTFOUND) return 0;
    if (rc < 0) return rc;
    if (memchr(*text, 0, n)) {
        free(*text);
        return sd_err(SD_EFORMAT, "%s: contains a NUL byte", path);
    }
    /* Python text mode: "\r\n" and "\r" are line ends */
    char *w = *text;
    for (size_t i = 0; i < n; i++) {
        if ((*text)[i] == '\r') {
            *w++ = '\n';
            if (i + 1 < n && (*text)[i + 1] == '\n') i++;
        } else {
            *w++ = (*text)[i];
        }
    }
    *w = 0;
    return 1;
}

/* main thread: tags of one image, the sidecar, the record */
static int finish(item *it, const float *logits, const char *src)
{
    float *p = malloc(sizeof(float) * (size_t)wt.n);
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    for (int i = 0; i < wt.n; i++)   /* ONNX graphs have the sigmoid inside */
        p[i] = use_onnx ? logits[i] : 1.0f / (1.0f + expf(-logits[i]));
    const char **tags = NULL;
    int nt = 0, rc = sd_wdtags_select(&wt, p, &tags, &nt);
    char *text = NULL, *side = NULL;
    if (rc == SD_OK && a.debug) {
        sd_strbuf r = {0}, c = {0}, g = {0};
        sd_strbuf_add(&r, "", 0);
        sd_strbuf_add(&c, "", 0);
        sd_strbuf_add(&g, "", 0);
        int best = -1;
        for (int i = 0; i < wt.n; i++) {
            int cat = wt.category[i];
            if (cat == SD_TAG_RATING && (best < 0 || p[i] > p[best])) best = i;
            sd_strbuf *b = cat == SD_TAG_GENERAL && p[i] >= a.general_threshold     ? &g
                           : cat == SD_TAG_CHARACTER && p[i] >= a.character_threshold ? &c
                                                                                       : NULL;
            if (!b) continue;
            if (b->n) sd_strbuf_puts(b, wt.sep);
            sd_strbuf_puts(b, wt.label[i]);
        }
        if (best >= 0) sd_strbuf_puts(&r, wt.label[best]);
        sd_info("%s:", it->image);
        sd_info("\tRating tags: %s", r.p ? r.p : "");
        sd_info("\tCharacter tags: %s", c.p ? c.p : "");
        sd_info("\tGeneral tags: %s", g.p ? g.p : "");
        free(r.p);
        free(c.p);
        free(g.p);
    }
    if (rc == SD_OK && (a.sidecar || a.output_path)) {   /* --output_path: read for --append_tags only */
        side = sd_img_sidecar_path(it->image, a.caption_extension);
        if (!side) rc = sd_err(SD_ENOMEM, "out of memory");
    }
    if (rc == SD_OK) {
        char *existing = NULL;
        if (a.append_tags) {
            int e = side ? read_existing(side, &existing) : 0;
            if (e < 0) rc = e;
            if (e == 0 && !side) { /* records only: the record's tags are the existing ones */
                const char *t = NULL;
                if (sd_jsonl_get_str(it->rec, "tags", &t) == 1) existing = strdup(t);
            }
        }
        if (rc == SD_OK) {
            text = a.append_tags ? sd_wdtags_append(&wt, existing, tags, nt) : sd_wdtags_join(&wt, tags, nt);
            if (!text) rc = sd_err(SD_ENOMEM, "out of memory");
        }
        free(existing);
    }
    if (rc == SD_OK && a.output_path) {
        jv e = jv_object_set(jv_object(), jv_string("tags"), jv_string(text));
        e = jv_object_set(e, jv_string("image_size"), JV_ARRAY(jv_number(it->w), jv_number(it->h)));
        results = jv_object_set(results, jv_string(it->image), e);
    } else if (rc == SD_OK && side) {
        size_t L = strlen(text);
        char *line = malloc(L + 2);
        if (!line) {
            rc = sd_err(SD_ENOMEM, "out of memory");
        } else {
            memcpy(line, text, L);
            line[L] = '\n';
            rc = sd_write_file_atomic(side, line, L + 1);
            free(line);
        }
    }
    if (rc == SD_OK) {
        if (a.frequency_tags)
            for (int i = 0; i < nt; i++) freq_add(tags[i]);
        jv rec = jv_object_set(it->rec, jv_string("tags"), jv_string(text));
        it->rec = jv_invalid();
        n_done++;
        if (sd_jsonl_write(stdout, rec) < 0) {
            sd_error("stdout: %s", sd_errmsg());
            rc = 1; /* fatal */
        }
    } else {
        sd_record_error(src, it->line, "%s", sd_errmsg());
        n_skipped++;
        rc = SD_OK;
    }
    free(tags);
    free(text);
    free(side);
    free(p);
    return rc;
}

/* --output_path as the reference writes it: .jsonl = one json.dumps({"image_path", "caption",
 * "image_size"}) per image (ASCII-escaped), else json.dump(results, indent=4, ensure_ascii=False) */
static int write_results(const char *path)
{
    size_t L = strlen(path);
    int jsonl = L >= 6 && !strcmp(path + L - 6, ".jsonl");
    char *text = NULL;
    size_t n = 0;
    int rc = SD_OK;
    if (!jsonl) {
        rc = sd_json_dump_py_indent(results, 0, 4, &text, &n);
    } else {
        sd_strbuf b = {0};
        sd_strbuf_add(&b, "", 0);
        jv_object_foreach(results, k, e) {
            jv line = jv_object_set(jv_object(), jv_string("image_path"), k);
            line = jv_object_set(line, jv_string("caption"), jv_object_get(jv_copy(e), jv_string("tags")));
            line = jv_object_set(line, jv_string("image_size"), jv_object_get(e, jv_string("image_size")));
            char *one = NULL;
            if (rc == SD_OK) rc = sd_json_dump_py_indent(line, 1, -1, &one, NULL);
            jv_free(line);
            if (one) {
                sd_strbuf_puts(&b, one);
                sd_strbuf_puts(&b, "\n");
            }
            free(one);
        }
        text = b.p;
        n = b.n;
    }
    if (rc == SD_OK) rc = sd_write_file_atomic(path, text ? text : "", n);
    free(text);
    return rc < 0 ? sd_err_prefix(rc, "%s", path) : SD_OK;
}

/* decode the batch in parallel, run the model, write the records in order; 1 = fatal */
static sd_tensor logits;   /* the batch's [good, classes] on the host */

/* the ONNX graph on x's images (NHWC in the [N,3,S,S] buffer); a batch smaller than the model's
 * fixed batch is padded with white images, whose outputs are dropped */
static int forward_onnx(const sd_tensor *x)
{
    int64_t n = x->shape[0], S = model.size, run_n = onnx_batch > 0 ? onnx_batch : n;
    size_t per = (size_t)(S * S * 3);
    float *in = (float *)x->data, *pad = NULL, *y = NULL;
    int rc = SD_OK;
    if (run_n != n) {
        pad = malloc(sizeof(float) * per * (size_t)run_n);
        if (!pad) return sd_err(SD_ENOMEM, "out of memory");
        memcpy(pad, x->data, sizeof(float) * per * (size_t)n);
        for (size_t i = per * (size_t)n; i < per * (size_t)run_n; i++) pad[i] = 255.0f;
        in = pad;
    }
    int ynd = 0;
    int64_t ys[SD_ONNX_MAX_DIMS];
    rc = sd_onnx_run_forward(&onnx, &ctx, in, 4, (int64_t[]){ run_n, S, S, 3 }, &y, &ynd, ys);
    if (!rc && (ynd != 2 || ys[0] != run_n || ys[1] != model.classes))
        rc = sd_err(SD_EFORMAT, "%s: output of shape [%lld%s%lld], expected [%lld, %lld] (one probability per tag)", onnx.path,
                    (long long)(ynd > 0 ? ys[0] : 0), ynd > 1 ? ", " : "", (long long)(ynd > 1 ? ys[1] : 0), (long long)run_n,
                    (long long)model.classes);
    if (!rc) memcpy(logits.data, y, sizeof(float) * (size_t)(n * model.classes));
    free(y);
    free(pad);
    return rc;
}

/* main thread: the tagger on a batch (on --device cuda the batch goes up, the logits come back; an
 * ONNX graph gives probabilities) */
static int forward(const sd_tensor *x, void *user)
{
    (void)user;
    sd_tensor_free(&logits);
    if (use_onnx) {
        int rc = sd_tensor_alloc(&logits, SD_F32, 2, (int64_t[]){ x->shape[0], model.classes });
        if (!rc) rc = forward_onnx(x);
        if (rc) sd_error("%s", sd_errmsg());
        return rc;
    }
    int rc = sd_tensor_alloc(&logits, SD_F32, 2, (int64_t[]){ x->shape[0], model.classes });
    if (!rc && ctx.backend != SD_DEV_CPU) {
        sd_tensor xd = {0}, yd = {0};
        rc = sd_tensor_alloc_on(&xd, ctx.backend, SD_F32, 4, x->shape);
        if (!rc) rc = sd_tensor_alloc_on(&yd, ctx.backend, SD_F32, 2, logits.shape);
        if (!rc) rc = sd_tensor_upload(&xd, x->data, sd_tensor_nbytes(x));
        if (!rc) rc = sd_tagger_forward(&ctx, &model, &yd, &xd);
        if (!rc) rc = sd_tensor_download(&yd, logits.data, sd_tensor_nbytes(&logits));
        sd_tensor_free(&xd);
        sd_tensor_free(&yd);
    } else if (!rc) {
        rc = sd_tagger_forward(&ctx, &model, &logits, x);
    }
    if (rc) sd_error("%s", sd_errmsg());
    return rc;
}

static int finish_k(item *it, int k, const char *src, void *user)
{
    (void)user;
    return finish(it, (const float *)logits.data + (size_t)k * (size_t)model.classes, src) != SD_OK;
}

/* model and tag list from --model / --tags_csv */
/* The op context on --device with scratch for one --batch_size run of the loaded model (its
 * activations: for the ViT about 10 token×width and 2 token×MLP arrays per image, for the ConvNeXt
 * 4 arrays of the largest stage and its MLP hidden array, for the SwinV2 4 stage arrays, the qkv /
 * MLP hidden buffer and the largest stage's attention scores, for the EVA02 8 token×width and 3
 * token×MLP arrays; at least the 1 GiB default); on a GPU the
 * weights move there first, after checking that they and the scratch fit. */
static int open_context(void)
{
    if (use_onnx) return sd_ctx_init(&ctx, SD_DEV_CPU, sd_threads_get(), 0);
    const int64_t T = model.tokens, D = model.width;
    size_t per = model.cnx    ? sd_tagger_convnext_scratch_per_image(model.cnx) + ((size_t)4 << 20)
                 : model.swin ? sd_tagger_swinv2_scratch_per_image(model.swin) + ((size_t)4 << 20)
                 : model.eva  ? sd_tagger_eva02_scratch_per_image(model.eva) + ((size_t)4 << 20)
                              : (size_t)(T * (10 * D + 2 * model.mlp + 2 * model.heads)) * sizeof(float) + ((size_t)4 << 20);
    size_t scratch = (size_t)a.batch_size * per * 3 / 2;
    if (scratch < SD_CTX_DEFAULT_SCRATCH) scratch = SD_CTX_DEFAULT_SCRATCH;
    if (dev_index == SD_DEVICE_CPU) return sd_ctx_init(&ctx, SD_DEV_CPU, sd_threads_get(), scratch);
    int rc = sd_device_init(dev_index);
    sd_device_info di;
    if (!rc) {
        sd_params_totals tot;
        sd_params_get_totals(&model.r, &tot);
        if (model.swin) tot.value_bytes += (size_t)model.swin->nderived * sizeof(float);   /* its position biases */
        const double gib = 1024.0 * 1024 * 1024;
        char what[64], parts[160];
        snprintf(what, sizeof what, "--device %s", a.device);
        snprintf(parts, sizeof parts, "weights %.2f GiB, working memory %.2f GiB for --batch_size %d",
                 (double)tot.value_bytes / gib, (double)scratch / gib, a.batch_size);
        rc = sd_device_fit(dev_index, tot.value_bytes + scratch, what, parts,
                           "lower --batch_size, or run with --device cpu", &di);
    }
    if (!rc) rc = sd_tagger_move(&model, SD_DEV_CUDA);
    if (!rc) rc = sd_ctx_init(&ctx, SD_DEV_CUDA, sd_threads_get(), scratch);
    if (!rc) sd_info("running on %s (cuda:%d)", di.name, dev_index);
    return rc;
}

/* The ONNX graph at `path`: a float input [N,S,S,3] (N fixed or symbolic), output [N, classes] */
static int open_onnx(const char *path)
{
    int rc = sd_onnx_run_open(&onnx, path);
    if (rc) return rc;
    const sd_onnx_value_info *in = &onnx.in_info, *out = &onnx.out_info;
    if (in->ndim != 4 || in->dims[3] != 3 || in->dims[1] <= 0 || in->dims[1] != in->dims[2] || in->dims[1] > 4096 ||
        (in->dtype && in->dtype != SD_ONNX_FLOAT)) {
        char sh[128] = "";
        for (int i = 0; i < in->ndim && i < 8; i++)
            snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%s%lld", i ? "," : "", (long long)in->dims[i]);
        return sd_err(SD_EUNSUPPORTED, "%s: input '%s' is %s [%s]; sd-tag runs WD14 graphs whose input is float "
                      "[N,S,S,3] (NHWC, BGR 0..255; -1 = not fixed)", path, in->name, sd_onnx_dtype_name(in->dtype), sh);
    }
    model.size = in->dims[1];
    onnx_batch = in->dims[0] > 0 ? in->dims[0] : 0;
    model.classes = out->ndim == 2 && out->dims[1] > 0 ? out->dims[1] : 0;   /* 0: from the tag list */
    if (onnx_batch && onnx_batch != a.batch_size) {
        sd_warn("Batch size %d doesn't match onnx model batch size %lld, use model batch size %lld", a.batch_size,
                (long long)onnx_batch, (long long)onnx_batch);
        if (onnx_batch > 256) return sd_err(SD_EUNSUPPORTED, "%s: fixed batch size %lld (at most 256)", path, (long long)onnx_batch);
        a.batch_size = (int)onnx_batch;
    }
    return SD_OK;
}

static int exists(const char *dir, const char *name)
{
    struct stat s;
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    if (!p) return 0;
    sprintf(p, "%s/%s", dir, name);
    int r = stat(p, &s) == 0;
    free(p);
    return r;
}

static int load_model(void)
{
    struct stat s;
    char *mpath = NULL, *cpath = NULL;
    if (stat(a.model, &s) != 0) return sd_err(SD_ENOTFOUND, "%s: %s", a.model, strerror(errno));
    if (S_ISDIR(s.st_mode)) {
        mpath = malloc(strlen(a.model) + 32);
        cpath = malloc(strlen(a.model) + 32);
        if (!mpath || !cpath) {
            free(mpath);
            free(cpath);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        sprintf(cpath, "%s/selected_tags.csv", a.model);
        int have_st = exists(a.model, "model.safetensors"), have_onnx = exists(a.model, "model.onnx");
        if (a.onnx || !have_st) {
            if (!have_onnx) {
                int other = exists(a.model, "model_optimized.onnx") || exists(a.model, "tag_mapping.json");
                int rc = other ? sd_err(SD_EUNSUPPORTED, "%s: model_optimized.onnx/tag_mapping.json (cl_tagger layout) is not "
                                        "supported; only SmilingWolf's model.onnx + selected_tags.csv", a.model)
                       : a.onnx ? sd_err(SD_ENOTFOUND, "%s: no model.onnx in this folder (--onnx)", a.model)
                                : sd_err(SD_ENOTFOUND, "%s: no model.safetensors or model.onnx in this folder", a.model);
                free(mpath);
                free(cpath);
                return rc;
            }
            sprintf(mpath, "%s/model.onnx", a.model);
            use_onnx = 1;
        } else {
            sprintf(mpath, "%s/model.safetensors", a.model);
        }
    } else {
        size_t ml = strlen(a.model);
        use_onnx = ml > 5 && !strcmp(a.model + ml - 5, ".onnx");
        if (a.onnx && !use_onnx)
            return sd_err(SD_EINVAL, "--onnx: %s is not a .onnx file; give the folder with model.onnx or the .onnx file", a.model);
        mpath = strdup(a.model);
        const char *sl = strrchr(a.model, '/');
        size_t dl = sl ? (size_t)(sl - a.model) + 1 : 0;
        cpath = malloc(dl + 32);
        if (!mpath || !cpath) {
            free(mpath);
            free(cpath);
            return sd_err(SD_ENOMEM, "out of memory");
        }
        memcpy(cpath, a.model, dl);
        strcpy(cpath + dl, "selected_tags.csv");
    }
    if (use_onnx && dev_index != SD_DEVICE_CPU) {
        free(mpath);
        free(cpath);
        return sd_err(SD_EINVAL, "--device %s: ONNX models run on the CPU only (give --device cpu, or the model.safetensors "
                      "of a v3 repo)", a.device);
    }
    if (a.tags_csv) {
        free(cpath);
        cpath = strdup(a.tags_csv);
    }
    int rc;
    if (use_onnx) {
        rc = open_onnx(mpath);
    } else {
        sd_safetensors *st = NULL;
        rc = sd_safetensors_open(mpath, &st);
        if (!rc) rc = sd_tagger_open(&model, st, SD_DEV_CPU);
        sd_safetensors_close(st);
    }
    if (!rc) rc = open_context();
    sd_tag_table t = {0};
    if (!rc) rc = sd_tags_csv_load(cpath, &t);
    if (!rc && use_onnx && !model.classes) model.classes = t.n;   /* checked against each run's output */
    if (!rc && t.n != model.classes)
        rc = sd_err(SD_EFORMAT, "%s has %d tags but %s has %lld outputs", cpath, t.n, mpath, (long long)model.classes);
    if (!rc) {
        sd_wdtags_opts wo = {
            .general_threshold = a.general_threshold,
            .character_threshold = a.character_threshold,
            .character_first = a.character_tags_first,
            .rating_first = a.use_rating_tags,
            .rating_last = a.use_rating_tags_as_last_tag,
            .remove_underscore = a.remove_underscore,
            .character_expand = a.character_tag_expand,
            .separator = a.caption_separator,
            .undesired = a.undesired_tags,
            .always_first = a.always_first_tags,
            .replacement = a.tag_replacement,
        };
        rc = sd_wdtags_init(&wt, &t, &wo);
    }
    if (!rc && use_onnx) {
        char nb[24] = "N";
        if (onnx_batch) snprintf(nb, sizeof nb, "%lld", (long long)onnx_batch);
        sd_info("%s%s: ONNX graph (%s%sopset %lld, %d nodes), input [%s,%lld,%lld,3], %lld tags, on the CPU", mpath,
                a.onnx || !S_ISDIR(s.st_mode) ? "" : " (no model.safetensors)",
                onnx.m.producer && *onnx.m.producer ? onnx.m.producer : "", onnx.m.producer && *onnx.m.producer ? ", " : "",
                (long long)onnx.m.opset, onnx.m.nnodes, nb, (long long)model.size, (long long)model.size,
                (long long)model.classes);
        if (onnx_batch) sd_info("the model's batch size is fixed to %lld", (long long)onnx_batch);
        const int *st = onnx.stats;
        if (onnx.opt)
            sd_info("graph optimised: %d nodes folded to constants, fused: %d LayerNorm, %d activation, %d linear, "
                    "%d transposed MatMul, %d Conv, %d attention",
                    st[SD_ONNX_OPT_FOLDED], st[SD_ONNX_OPT_LAYERNORM], st[SD_ONNX_OPT_ACT], st[SD_ONNX_OPT_LINEAR],
                    st[SD_ONNX_OPT_MATMUL_T], st[SD_ONNX_OPT_CONV], st[SD_ONNX_OPT_ATTENTION]);
        else
            sd_info("graph optimisation off (SD_ONNX_NO_OPT): every node runs as written");
    } else if (!rc && model.cnx) {
        const sd_tagger_convnext *c = model.cnx;
        char dims[96] = "", depths[96] = "";
        for (int i = 0; i < c->nstages; i++) {
            snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? "/" : "", (long long)c->stages[i].dim);
            snprintf(depths + strlen(depths), sizeof depths - strlen(depths), "%s%lld", i ? "/" : "",
                     (long long)c->stages[i].depth);
        }
        sd_info("%s: ConvNeXt tagger, %lldx%lld input, widths %s, blocks %s, %lld tags", mpath, (long long)model.size,
                (long long)model.size, dims, depths, (long long)model.classes);
    } else if (!rc && model.eva) {
        const sd_tagger_eva02 *e = model.eva;
        sd_info("%s: EVA02 tagger, %lldx%lld input, width %lld, %lld blocks, %lld heads, MLP %lld, RoPE reference "
                "%lldx%lld, %lld tags", mpath, (long long)model.size, (long long)model.size, (long long)e->width,
                (long long)e->depth, (long long)e->heads, (long long)e->mlp, (long long)e->ref_h, (long long)e->ref_w,
                (long long)model.classes);
    } else if (!rc && model.swin) {
        const sd_tagger_swinv2 *c = model.swin;
        char dims[96] = "", depths[96] = "", heads[96] = "";
        for (int i = 0; i < c->nstages; i++) {
            snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? "/" : "", (long long)c->stages[i].dim);
            snprintf(depths + strlen(depths), sizeof depths - strlen(depths), "%s%lld", i ? "/" : "",
                     (long long)c->stages[i].depth);
            snprintf(heads + strlen(heads), sizeof heads - strlen(heads), "%s%lld", i ? "/" : "",
                     (long long)c->stages[i].heads);
        }
        sd_info("%s: SwinV2 tagger, %lldx%lld input, window %lld, widths %s, blocks %s, heads %s, %lld tags", mpath,
                (long long)model.size, (long long)model.size, (long long)c->window, dims, depths, heads,
                (long long)model.classes);
    } else if (!rc) {
        sd_info("%s: ViT tagger, %lldx%lld input, width %lld, %lld blocks, %lld heads, %lld tags", mpath,
                (long long)model.size, (long long)model.size, (long long)model.width, (long long)model.depth,
                (long long)model.heads, (long long)model.classes);
    }
    sd_tag_table_free(&t);
    free(mpath);
    free(cpath);
    return rc;
}

int main(int argc, char **argv)
{
    sd_log_init(TOOL);
    sd_opts o;
    if (sd_opts_init(&o, TOOL, table) < 0) return sd_fatal(1);
    o.flags = SD_OPTS_CONFIG;
    o.usage = "--model DIR|FILE [OPTIONS] [RECORDS.jsonl | IMAGE_DIR | IMAGE ...]";
    o.description =
        "Tags images with a WD14-style tagger (SmilingWolf wd-vit-tagger-v3, wd-convnext-tagger-v3, "
        "wd-swinv2-tagger-v3 or wd-eva02-large-tagger-v3, "
        "model.safetensors + selected_tags.csv; or any SmilingWolf model.onnx, v1/v2/v3, on the CPU with --onnx) "
        "as kohya-ss/sd-scripts' tag_images_by_wd14_tagger.py does. Reads records (JSON lines with 'image'; stdin "
        "when nothing is named), image folders or image files, writes each record with 'tags' added to stdout and a "
        "<stem>.txt sidecar beside each image.";
    o.epilog = "Exit status: 0 all records done, 1 fatal error, 2 usage error, 3 some records skipped.\n"
               "See sd-tag(1).";
    int ex = sd_cmdline_main(&o, argc, argv);
    if (ex >= 0) {
        sd_opts_free(&o);
        return ex;
    }
    const char *usage = NULL;
    static char ubuf[256];
    if (a.repo_id || a.model_dir || a.force_download)
        usage = "--repo_id/--model_dir/--force_download: sd-tag downloads nothing; give --model with a folder "
                "holding model.safetensors and selected_tags.csv";
    else if (a.use_quality_tags || a.use_quality_tags_as_last_tag || sd_opts_is_set(&o, &a.meta_threshold) ||
             sd_opts_is_set(&o, &a.model_threshold) || sd_opts_is_set(&o, &a.copyright_threshold) ||
             sd_opts_is_set(&o, &a.artist_threshold))
        usage = "quality/meta/model/copyright/artist options apply to tag_mapping.json (cl_tagger) models, which "
                "are not supported";
    else if (!a.model) usage = "give --model DIR (with model.safetensors and selected_tags.csv) or --model FILE";
    else if (sd_device_parse(a.device, &dev_index)) {
        snprintf(ubuf, sizeof ubuf, "%.200s", sd_errmsg());
        usage = ubuf;
    }
    if (usage) {
        sd_cmdline_usage_error(TOOL, "%s", usage);
        sd_opts_free(&o);
        return SD_EXIT_USAGE;
    }
    if (!sd_opts_is_set(&o, &a.general_threshold)) a.general_threshold = a.thresh;
    if (!sd_opts_is_set(&o, &a.character_threshold)) a.character_threshold = a.thresh;
    if (sd_opts_is_set(&o, &a.workers))
        sd_info("--max_data_loader_n_workers has no effect: images are decoded by the --threads threads");
    if (sd_threads_init(a.threads) < 0) {
        sd_opts_free(&o);
        return sd_fatal(1);
    }
    int lrc = load_model();   /* and the op context (open_context) */
    if (lrc < 0) {
        int early = lrc == SD_EINVAL ? sd_cmdline_usage_error(TOOL, "%s", sd_errmsg()) : sd_fatal(1);
        sd_wdtags_free(&wt);
        sd_tagger_free(&model);
        sd_onnx_run_close(&onnx);
        sd_ctx_free(&ctx);
        if (dev_index != SD_DEVICE_CPU) sd_device_shutdown();
        sd_opts_free(&o);
        return early;
    }
    results = jv_object();
    sd_image_jobs jobs = {
        .batch = a.batch_size, .recursive = a.recursive, .size = model.size, .verb = "tagging",
        .load = load_one, .forward = forward, .finish = finish_k,
    };
    int fatal = sd_image_jobs_run(&jobs, o.pos, o.npos);
    n_skipped += jobs.skipped;
    sd_tensor_free(&logits);
    if (!fatal && a.output_path && write_results(a.output_path) < 0) {
        sd_error("%s", sd_errmsg());
        fatal = 1;
    }
    jv_free(results);
    sd_info("%ld images tagged, %ld skipped", n_done, n_skipped);
    if (a.frequency_tags) {
        /* stable sort by count, descending (Python's sorted(..., reverse=True) keeps ties in order) */
        for (int i = 1; i < freq.n; i++) {
            char *t = freq.tag[i];
            long c = freq.count[i];
            int j = i;
            while (j > 0 && freq.count[j - 1] < c) {
                freq.tag[j] = freq.tag[j - 1];
                freq.count[j] = freq.count[j - 1];
                j--;
            }
            freq.tag[j] = t;
            freq.count[j] = c;
        }
        fprintf(stderr, "Tag frequencies:\n");
        for (int i = 0; i < freq.n; i++) fprintf(stderr, "%s: %ld\n", freq.tag[i], freq.count[i]);
    }
    for (int i = 0; i < freq.n; i++) free(freq.tag[i]);
    free(freq.tag);
    free(freq.count);
    sd_wdtags_free(&wt);
    sd_tagger_free(&model);
    sd_onnx_run_close(&onnx);
    sd_ctx_free(&ctx);
    if (dev_index != SD_DEVICE_CPU) sd_device_shutdown();
    sd_opts_free(&o);
    if (fatal) return 1;
    return n_skipped ? SD_EXIT_PARTIAL : 0;
}
