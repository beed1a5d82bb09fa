/* kohya's WD14 tag selection and post-processing (see wdtags.h). */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/strbuf.h"
#include "data/images.h"
#include "data/wdtags.h"

static char *dupn(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        if (n) memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}

static size_t u8len(const char *s)
{
    size_t k = 0;
    for (; *s; s++) k += ((unsigned char)*s & 0xc0) != 0x80;
    return k;
}

/* replace every occurrence of `a` by `b` in s (a non-empty), malloc'd */
static char *replace_all(const char *s, const char *a, const char *b)
{
    sd_strbuf o = {0};
    size_t la = strlen(a);
    const char *p;
    while ((p = strstr(s, a))) {
        sd_strbuf_add(&o, s, (size_t)(p - s));
        sd_strbuf_puts(&o, b);
        s = p + la;
    }
    sd_strbuf_puts(&o, s);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    return o.p;
}

/* split `s` on `sep` (non-empty), strip items, drop empty ones */
static int split_list(const char *s, const char *sep, char ***out, int *n)
{
    *out = NULL;
    *n = 0;
    if (!s) return SD_OK;
    size_t ls = strlen(sep);
    const char *p = s;
    for (;;) {
        const char *e = strstr(p, sep);
        size_t len = e ? (size_t)(e - p) : strlen(p), st;
        size_t sl = sd_py_strip(p, len, &st);
        if (sl) {
            char **nl = realloc(*out, (size_t)(*n + 1) * sizeof *nl);
            if (!nl) return sd_err(SD_ENOMEM, "out of memory");
            *out = nl;
            if (!(nl[*n] = dupn(p + st, sl))) return sd_err(SD_ENOMEM, "out of memory");
            (*n)++;
        }
        if (!e) break;
        p = e + ls;
    }
    return SD_OK;
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

void sd_wdtags_free(sd_wdtags *w)
{
    if (w->label) free_list(w->label, w->n);
    free(w->category);
    free(w->sep);
    free_list(w->undesired, w->nundesired);
    free_list(w->first, w->nfirst);
    memset(w, 0, sizeof *w);
}

static int apply_replacements(sd_wdtags *w, const char *spec)
{
    /* "\," and "\;" are literal: protect them with bytes that cannot occur in UTF-8 text */
    char *t = replace_all(spec, "\\,", "\x01");
    char *u = t ? replace_all(t, "\\;", "\x02") : NULL;
    free(t);
    if (!u) return sd_err(SD_ENOMEM, "out of memory");
    int rc = SD_OK;
    char *copy = strdup(u);
    /* split on ';' keeping empty items (Python split) */
    char *p = copy;
    for (;;) {
        char *e = strchr(p, ';');
        if (e) *e = 0;
        char *comma = strchr(p, ',');
        if (!comma || strchr(comma + 1, ',')) {
            rc = sd_err(SD_EINVAL, "--tag_replacement: '%s' is not source,target (escape literal commas and "
                                   "semicolons as \\, and \\;)", p);
            break;
        }
        *comma = 0;
        char *a1 = replace_all(p, "\x01", ","), *a2 = a1 ? replace_all(a1, "\x02", ";") : NULL;
        char *b1 = replace_all(comma + 1, "\x01", ","), *b2 = b1 ? replace_all(b1, "\x02", ";") : NULL;
        free(a1);
        free(b1);
        if (!a2 || !b2) {
            free(a2);
            free(b2);
            rc = sd_err(SD_ENOMEM, "out of memory");
            break;
        }
        static const int order[3] = { SD_TAG_GENERAL, SD_TAG_CHARACTER, SD_TAG_RATING };
        int done = 0;
        for (int k = 0; k < 3 && !done; k++)
            for (int i = 0; i < w->n && !done; i++)
                if (w->category[i] == order[k] && !strcmp(w->label[i], a2)) {
                    free(w->label[i]);
                    w->label[i] = b2;
                    b2 = NULL;
                    done = 1;
                }
        free(a2);
        free(b2);
        if (!e) break;
        p = e + 1;
    }
    free(copy);
    free(u);
    return rc;
}

int sd_wdtags_init(sd_wdtags *w, const sd_tag_table *t, const sd_wdtags_opts *o)
{
    memset(w, 0, sizeof *w);
    w->o = *o;
    const char *sep = o->separator ? o->separator : ", ";
    size_t st, sl = sd_py_strip(sep, strlen(sep), &st);
    if (!sl) return sd_err(SD_EINVAL, "--caption_separator '%s' is empty after stripping whitespace", sep);
    w->sep = strdup(sep);
    char *ssep = dupn(sep + st, sl);
    w->label = calloc((size_t)t->n, sizeof *w->label);
    w->category = malloc((size_t)t->n * sizeof *w->category);
    int rc = SD_OK;
    if (!w->sep || !ssep || !w->label || !w->category) rc = sd_err(SD_ENOMEM, "out of memory");
    w->n = rc ? 0 : t->n;
    for (int i = 0; !rc && i < t->n; i++) {
        const char *name = t->name[i];
        size_t L = strlen(name);
        w->category[i] = t->category[i];
        char *lab = NULL;
        if (o->character_expand && t->category[i] == SD_TAG_CHARACTER && L && name[L - 1] == ')') {
            const char *lp = strrchr(name, '(');
            if (lp) {
                size_t cl = (size_t)(lp - name);
                if (cl && name[cl - 1] == '_') cl--;
                char *series = replace_all(lp + 1, ")", "");
                sd_strbuf b = {0};
                sd_strbuf_add(&b, name, cl);
                sd_strbuf_puts(&b, sep);
                if (series) sd_strbuf_puts(&b, series);
                free(series);
                if (b.oom || !series) free(b.p);
                else lab = b.p;
            } else {
                lab = strdup(name);
            }
        } else {
            lab = strdup(name);
        }
        if (lab && o->remove_underscore && u8len(lab) > 3) {
            char *r = replace_all(lab, "_", " ");
            free(lab);
            lab = r;
        }
        if (!lab) rc = sd_err(SD_ENOMEM, "out of memory");
        w->label[i] = lab;
    }
    if (!rc && o->replacement) rc = apply_replacements(w, o->replacement);
    if (!rc) rc = split_list(o->undesired, ssep, &w->undesired, &w->nundesired);
    if (!rc) rc = split_list(o->always_first, ssep, &w->first, &w->nfirst);
    free(ssep);
    if (rc) sd_wdtags_free(w);
    return rc;
}

static int undesired(const sd_wdtags *w, const char *s)
{
    for (int i = 0; i < w->nundesired; i++)
        if (!strcmp(w->undesired[i], s)) return 1;
    return 0;
}

int sd_wdtags_select(const sd_wdtags *w, const float *prob, const char ***out, int *n)
{
    const char **l = malloc((size_t)(w->n + 1) * sizeof *l);
    if (!l) return sd_err(SD_ENOMEM, "out of memory");
    int k = 0, rating = -1;
    for (int i = 0; i < w->n; i++) {
        int c = w->category[i];
        double p = prob[i];
        if (c == SD_TAG_RATING) {
            if (rating < 0 || prob[i] > prob[rating]) rating = i;
            continue;
        }
        int keep = (c == SD_TAG_GENERAL && p >= w->o.general_threshold) ||
                   (c == SD_TAG_CHARACTER && p >= w->o.character_threshold);
        if (!keep || undesired(w, w->label[i])) continue;
        if (c == SD_TAG_CHARACTER && w->o.character_first) {
            memmove(l + 1, l, (size_t)k * sizeof *l);
            l[0] = w->label[i];
        } else {
            l[k] = w->label[i];
        }
        k++;
    }
    if ((w->o.rating_first || w->o.rating_last) && rating >= 0 && !undesired(w, w->label[rating])) {
        if (w->o.rating_first) {
            memmove(l + 1, l, (size_t)k * sizeof *l);
            l[0] = w->label[rating];
        } else {
            l[k] = w->label[rating];
        }
        k++;
    }
    for (int f = 0; f < w->nfirst; f++)
        for (int j = 0; j < k; j++)
            if (!strcmp(l[j], w->first[f])) {
                const char *t = l[j];
                memmove(l + 1, l, (size_t)j * sizeof *l);
                l[0] = t;
                break;
            }
    *out = l;
    *n = k;
    return SD_OK;
}

char *sd_wdtags_join(const sd_wdtags *w, const char *const *tags, int n)
{
    sd_strbuf b = {0};
    sd_strbuf_add(&b, "", 0);
    for (int i = 0; i < n; i++) {
        if (i) sd_strbuf_puts(&b, w->sep);
        sd_strbuf_puts(&b, tags[i]);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *sd_wdtags_append(const sd_wdtags *w, const char *existing, const char *const *tags, int n)
{
    if (!existing) return sd_wdtags_join(w, tags, n);
    size_t a = 0, e = strlen(existing);
    while (a < e && existing[a] == '\n') a++;
    while (e > a && existing[e - 1] == '\n') e--;
    char *body = dupn(existing + a, e - a);
    size_t st, sl = sd_py_strip(w->sep, strlen(w->sep), &st);
    char *ssep = dupn(w->sep + st, sl);
    char **old = NULL;
    int nold = 0;
    char *res = NULL;
    if (body && ssep && split_list(body, ssep, &old, &nold) == SD_OK) {
        const char **all = malloc((size_t)(nold + n + 1) * sizeof *all);
        if (all) {
            int k = 0;
            for (int i = 0; i < nold; i++) all[k++] = old[i];
            for (int i = 0; i < n; i++) {
                int dup = 0;
                for (int j = 0; j < nold && !dup; j++) dup = !strcmp(old[j], tags[i]);
                if (!dup) all[k++] = tags[i];
            }
            res = sd_wdtags_join(w, all, k);
            free(all);
        }
    }
    free_list(old, nold);
    free(body);
    free(ssep);
    return res;
}
