/* Records and image folders through an image model in batches (data/image_jobs.h). */
#include "data/image_jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/threads.h"
#include "data/bucket_record.h"
#include "data/images.h"
#include "io/jsonl.h"

void sd_image_job_fail(sd_image_job *j, const char *msg)
{
    if (!j->err) j->err = strdup(msg && *msg ? msg : "error");
}

static int is_dir(const char *p)
{
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

static void drop(sd_image_job *b, int n)
{
    for (int i = 0; i < n; i++) {
        jv_free(b[i].rec);
        free(b[i].image);
        free(b[i].input);
        free(b[i].err);
        memset(&b[i], 0, sizeof b[i]);
    }
}

/* One batch: decode in parallel, the model on the good images, then each record in order. */
static int run_batch(sd_image_jobs *t, sd_image_job *b, int n, const char *src)
{
    int nthreads = sd_threads_get();
    int prev = sd_threads_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1) if (n > 1 && nthreads > 1)
    for (int i = 0; i < n; i++)
        if (!b[i].err) t->load(&b[i], t->user);
    sd_threads_blas_serial_end(prev);
    int good = 0;
    for (int i = 0; i < n; i++) good += !b[i].err;
    const int64_t S = t->size;
    const size_t per = 3 * (size_t)S * (size_t)S;
    sd_tensor x = {0};
    int fatal = 0;
    if (good) {
        int rc = sd_tensor_alloc(&x, SD_F32, 4, (int64_t[]){ good, 3, S, S });
        if (rc) sd_error("%s", sd_errmsg());
        for (int i = 0, k = 0; !rc && i < n; i++)
            if (!b[i].err) memcpy((float *)x.data + per * (size_t)k++, b[i].input, per * sizeof(float));
        fatal = rc || t->forward(&x, t->user) != 0;
    }
    for (int i = 0, k = 0; i < n; i++) {
        sd_image_job *j = &b[i];
        if (!fatal) {
            if (j->err) {
                sd_record_error(src, j->line, "%s", j->err);
                t->skipped++;
            } else if (t->finish(j, k++, src, t->user)) {
                fatal = 1;
            }
        }
    }
    drop(b, n);
    sd_tensor_free(&x);
    return fatal;
}

int sd_image_jobs_run(sd_image_jobs *t, char **args, int nargs)
{
    sd_image_job *batch = calloc((size_t)t->batch, sizeof *batch);
    if (!batch) {
        sd_error("out of memory");
        return 1;
    }
    uint64_t seen = 0;
    int fatal = 0, nin = nargs ? nargs : 1;
    sd_progress prog;
    sd_progress_begin(&prog, t->verb, 0);
    for (int fi = 0; fi < nin && !fatal; fi++) {
        const char *name = nargs ? args[fi] : "-";
        int n = 0;
        int dir = strcmp(name, "-") && is_dir(name);
        if (dir || sd_img_is_image_name(name, SD_IMG_ANY_CASE)) {
            sd_path_list l = {0};
            if (!dir ? sd_path_list_add(&l, name) < 0 : sd_img_list(name, t->recursive ? SD_IMG_RECURSIVE : 0, &l) < 0) {
                sd_error("%s", sd_errmsg());
                fatal = 1;
                break;
            }
            if (dir) sd_info("%s: found %zu images", name, l.n);
            for (size_t i = 0; i < l.n && !fatal; i++) {
                sd_image_job *j = &batch[n++];
                j->rec = JV_OBJECT(jv_string("image"), jv_string(l.paths[i]));
                j->line = (long)i + 1;
                j->ordinal = seen++;
                j->image = strdup(l.paths[i]);
                if (!j->image) sd_image_job_fail(j, "out of memory");
                if (n == t->batch || i + 1 == l.n) {
                    fatal = run_batch(t, batch, n, name);
                    sd_progress_update(&prog, n);
                    n = 0;
                }
            }
            sd_path_list_free(&l);
            continue;
        }
        sd_jsonl_reader *r = sd_jsonl_open_path(name);
        if (!r) {
            fatal = sd_fatal(1);
            break;
        }
        const char *src = sd_jsonl_name(r);
        for (;;) {
            jv rec;
            long line;
            int rc = sd_jsonl_next(r, &rec, &line);
            if (rc == 0) break;
            if (rc == SD_EFORMAT || rc == SD_ERANGE) {
                /* bad line: report it now (earlier records of the batch go first) */
                if (n) {
                    fatal = run_batch(t, batch, n, src);
                    sd_progress_update(&prog, n);
                    n = 0;
                }
                const char *m = sd_errmsg();
                char pre[64];
                snprintf(pre, sizeof pre, ":%ld: ", line);
                const char *q = strstr(m, pre);
                sd_record_error(src, line, "%s", q ? q + strlen(pre) : m);
                t->skipped++;
                seen++;
                if (fatal) break;
                continue;
            }
            if (rc < 0) {
                sd_error("%s", sd_errmsg());
                fatal = 1;
                break;
            }
            sd_image_job *j = &batch[n++];
            j->rec = rec;
            j->line = line;
            j->ordinal = seen++;
            if (sd_bucket_record_image(rec, &j->image) < 0) sd_image_job_fail(j, sd_errmsg());
            if (n == t->batch) {
                fatal = run_batch(t, batch, n, src);
                sd_progress_update(&prog, n);
                n = 0;
                if (fatal) break;
            }
        }
        if (n && !fatal) {
            fatal = run_batch(t, batch, n, src);
            sd_progress_update(&prog, n);
        } else {
            drop(batch, n);   /* after a read error: dropped unreported */
        }
        sd_jsonl_close(r);
    }
    sd_progress_end(&prog);
    free(batch);
    return fatal;
}
