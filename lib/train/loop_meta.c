/* The data-derived ss_* metadata of sd-train (see loop.h: sd_train_data_dirs_json). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "train/loop.h"
#include "train/meta.h"

/* ---- ss_dataset_dirs / ss_reg_dataset_dirs / ss_tag_frequency (legacy metadata block) ---------- */

typedef struct jbuf {
    char *p;
    size_t n, cap;
    int err;
} jbuf;

static void jb_add(jbuf *b, const char *s, size_t n)
{
    if (b->err) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->err = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void jb_str(jbuf *b, const char *s)
{
    size_t need = strlen(s) * 12 + 3, len = 0;
    char *t = malloc(need);
    if (!t || sd_py_json_string(s, t, need, &len)) {
        free(t);
        b->err = 1;
        return;
    }
    jb_add(b, t, len);
    free(t);
}

/* The directory name of an image ("" without one), as the reference's os.path.basename(image_dir). */
static void dir_of(const sd_train_sample *s, char *out, size_t n)
{
    out[0] = 0;
    const char *path = s->image ? s->image : s->latents;
    if (!path) return;
    const char *sl = strrchr(path, '/');
    if (!sl) return;
    const char *st = sl;
    while (st > path && st[-1] != '/') st--;
    size_t L = (size_t)(sl - st);
    if (L >= n) L = n - 1;
    memcpy(out, st, L);
    out[L] = 0;
}

/* {"dir": {"n_repeats": r, "img_count": n}, ...} for reg = 0/1, and {"dir": {"tag": count, ...}, ...}
 * over the stored captions split at commas (the reference's tag frequency), dirs in first-seen order;
 * reg < 0: every image (the tag frequency covers regularisation folders too). */
int sd_train_data_dirs_json(const sd_train_data *d, int reg, char **dirs_out, char **tags_out)
{
    jbuf bd = { 0 }, bt = { 0 };
    jb_add(&bd, "{", 1);
    jb_add(&bt, "{", 1);
    size_t n = d->n;
    char (*names)[256] = calloc(n ? n : 1, sizeof *names);
    uint8_t *done = calloc(n ? n : 1, 1);
    if (!names || !done) {
        free(names), free(done);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) dir_of(&d->s[i], names[i], sizeof names[i]);
    int ndirs = 0, ntagdirs = 0;
    for (size_t i = 0; i < n; i++) {
        if (done[i] || (reg >= 0 && !d->s[i].is_reg != !reg)) continue;
        int64_t cnt = 0, rep = d->s[i].num_repeats;
        /* tags of this dir, counted in first-seen order */
        char **tags = NULL;
        int64_t *tc = NULL;
        size_t nt = 0, ct = 0;
        for (size_t j = i; j < n; j++) {
            if (done[j] || (reg >= 0 && !d->s[j].is_reg != !reg) || strcmp(names[j], names[i])) continue;
            done[j] = 1;
            cnt++;
            const char *cp = d->s[j].caption ? d->s[j].caption : "";
            while (*cp) {
                const char *e = strchr(cp, ',');
                size_t L = e ? (size_t)(e - cp) : strlen(cp);
                const char *a = cp;
                size_t m = L;
                while (m && (*a == ' ' || *a == '\t' || *a == '\n' || *a == '\r')) a++, m--;
                while (m && (a[m - 1] == ' ' || a[m - 1] == '\t' || a[m - 1] == '\n' || a[m - 1] == '\r')) m--;
                if (m) {
                    size_t k;
                    for (k = 0; k < nt; k++)
                        if (strlen(tags[k]) == m && !memcmp(tags[k], a, m)) break;
                    if (k == nt) {
                        if (nt == ct) {
                            ct = ct ? ct * 2 : 16;
                            char **q = realloc(tags, ct * sizeof *q);
                            int64_t *qc = realloc(tc, ct * sizeof *qc);
                            if (q) tags = q;
                            if (qc) tc = qc;
                            if (!q || !qc) {
                                bt.err = 1;
                                break;
                            }
                        }
                        tags[nt] = strndup(a, m);
                        tc[nt++] = 0;
                    }
                    tc[k]++;
                }
                cp += L + (e ? 1 : 0);
                if (!e) break;
            }
        }
        char num[64];
        if (ndirs++) jb_add(&bd, ", ", 2);
        jb_str(&bd, names[i]);
        snprintf(num, sizeof num, ": {\"n_repeats\": %lld, \"img_count\": %lld}", (long long)rep, (long long)cnt);
        jb_add(&bd, num, strlen(num));
        if (ntagdirs++) jb_add(&bt, ", ", 2);
        jb_str(&bt, names[i]);
        jb_add(&bt, ": {", 3);
        for (size_t k = 0; k < nt; k++) {
            if (k) jb_add(&bt, ", ", 2);
            jb_str(&bt, tags[k] ? tags[k] : "");
            snprintf(num, sizeof num, ": %lld", (long long)tc[k]);
            jb_add(&bt, num, strlen(num));
            free(tags[k]);
        }
        jb_add(&bt, "}", 1);
        free(tags);
        free(tc);
    }
    jb_add(&bd, "}", 1);
    jb_add(&bt, "}", 1);
    free(names);
    free(done);
    if (bd.err || bt.err) {
        free(bd.p), free(bt.p);
        return sd_err(SD_ENOMEM, "out of memory building the metadata");
    }
    *dirs_out = bd.p;
    if (tags_out) *tags_out = bt.p;
    else free(bt.p);
    return SD_OK;
}

