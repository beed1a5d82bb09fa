/* Reader for the golden text files of tests/data/train (make_train_golden.py): lines
 * "name count hex-float..." (and other lines, ignored by tg_get). */
#ifndef SD_TESTS_TRAIN_GOLDEN_H
#define SD_TESTS_TRAIN_GOLDEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tg_file {
    char *text;
    size_t n;
} tg_file;

static inline int tg_open(tg_file *g, const char *rel)
{
    char path[1024];
    const char *root = getenv("SD_ROOT");
    snprintf(path, sizeof path, "%s/tests/data/train/%s", root && *root ? root : ".", rel);
    FILE *f = fopen(path, "rb");
    if (!f) { printf("# cannot open %s\n", path); return -1; }
    fseek(f, 0, SEEK_END);
    long L = ftell(f);
    fseek(f, 0, SEEK_SET);
    g->text = malloc((size_t)L + 1);
    g->n = fread(g->text, 1, (size_t)L, f);
    g->text[g->n] = 0;
    fclose(f);
    return 0;
}

static inline void tg_close(tg_file *g) { free(g->text); g->text = NULL; }

/* Values of line `name` (after position *from if from != NULL, which is advanced), into a
 * malloc'd array; *count gets their number. NULL if absent. */
static inline double *tg_get_from(const tg_file *g, const char *name, size_t *count, const char **from)
{
    size_t L = strlen(name);
    const char *p = from && *from ? *from : g->text;
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        if (!strncmp(p, name, L) && p[L] == ' ') {
            char *q;
            long n = strtol(p + L + 1, &q, 10);
            double *v = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
            for (long i = 0; i < n; i++) v[i] = strtod(q, &q);
            *count = (size_t)n;
            if (from) *from = eol ? eol + 1 : p + strlen(p);
            return v;
        }
        p = eol ? eol + 1 : NULL;
    }
    return NULL;
}
static inline double *tg_get(const tg_file *g, const char *name, size_t *count)
{
    return tg_get_from(g, name, count, NULL);
}

#endif
