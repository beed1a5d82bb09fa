/* CLIP tokenizer: ids against the reference oracle (tests/golden/gen/clip_tokenizer_ref.py) on a
 * corpus of awkward strings, kohya framing, normalisation details, vocabulary errors, threads. */
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "base/error.h"
#include "test.h"
#include "text/clip_tokenizer.h"
#include "text/ftfy.h"

static sd_clip_tokenizer *tok;

typedef struct {
    unsigned char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} tcase;

static tcase cases[1024];
static int ncases;

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/clip_tokenizer/%s", name);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Parse space-separated ints from s into a malloc'd array. */
static int32_t *parse_ids(const char *s, size_t *n)
{
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    while (*s) {
        while (*s == ' ') s++;
        if (!*s || *s == '\n') break;
        char *e;
        long x = strtol(s, &e, 10);
        if (e == s) break;
        if (k == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[k++] = (int32_t)x;
        s = e;
    }
    *n = k;
    return v;
}

static void load_corpus(void)
{
    FILE *f = fopen(data_path("corpus.tsv"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    static char line[1 << 16];
    while (fgets(line, sizeof line, f) && ncases < 1024) {
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        tcase *c = &cases[ncases++];
        size_t hl = (size_t)(tab - line);
        c->len = hl / 2;
        c->text = malloc(c->len + 1);
        for (size_t i = 0; i < c->len; i++)
            c->text[i] = (unsigned char)(hexval(line[2 * i]) * 16 + hexval(line[2 * i + 1]));
        c->text[c->len] = 0;
        c->ids = parse_ids(tab + 1, &c->n);
    }
    fclose(f);
}

static void test_load(void)
{
    int rc = sd_clip_tokenizer_load(NULL, &tok);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    char p[512];
    T_EQ_INT(sd_clip_vocab_path(p, sizeof p), SD_OK);
    T_CHECK(strstr(p, "clip/bpe_simple_vocab_16e6.txt.gz") != NULL);
    T_EQ_INT(sd_clip_vocab_path(p, 8), SD_ERANGE);
}

static void test_known_ids(void)
{
    if (!tok) return;
    int32_t *ids;
    size_t n;
    T_EQ_INT(sd_clip_tokenizer_encode(tok, "a photo of a cat", 16, 0, &ids, &n), SD_OK);
    static const int32_t want[] = {320, 1125, 539, 320, 2368};
    T_EQ_INT(n, 5);
    for (size_t i = 0; i < n && i < 5; i++) T_EQ_INT(ids[i], want[i]);
    free(ids);
    int32_t row[3 * 77];
    int nch;
    T_EQ_INT(sd_clip_tokenizer_frame(tok, "a photo of a cat", 16, 0, SD_CLIP_PAD_SD1, row, &nch), SD_OK);
    T_EQ_INT(nch, 1);
    T_EQ_INT(row[0], 49406);
    T_EQ_INT(row[1], 320);
    T_EQ_INT(row[5], 2368);
    T_EQ_INT(row[6], 49407);
    T_EQ_INT(row[76], 49407);
    T_EQ_INT(sd_clip_tokenizer_frame(tok, "a photo of a cat", 16, 75, SD_CLIP_PAD_SD2, row, &nch), SD_OK);
    T_EQ_INT(row[6], 49407);
    T_EQ_INT(row[7], 0);
    T_EQ_INT(row[76], 0);
    /* single symbols: "!" = 0, "!</w>" = 256 */
    size_t len;
    int eow;
    const char *s = sd_clip_tokenizer_token(tok, 0, &len, &eow);
    T_CHECK(s && len == 1 && s[0] == '!' && !eow);
    s = sd_clip_tokenizer_token(tok, 256, &len, &eow);
    T_CHECK(s && len == 1 && s[0] == '!' && eow);
    s = sd_clip_tokenizer_token(tok, 49406, &len, &eow);
    T_CHECK(s && len == 15 && !memcmp(s, "<|startoftext|>", 15));
    T_CHECK(sd_clip_tokenizer_token(tok, 49408, NULL, NULL) == NULL);
    T_CHECK(sd_clip_tokenizer_token(tok, -1, NULL, NULL) == NULL);
}

static void test_corpus(void)
{
    if (!tok) return;
    load_corpus();
    T_CHECK(ncases >= 300);
    int bad = 0;
    for (int k = 0; k < ncases; k++) {
        int32_t *ids;
        size_t n;
        int rc = sd_clip_tokenizer_encode(tok, (const char *)cases[k].text, cases[k].len, 0, &ids, &n);
        int ok = rc == SD_OK && n == cases[k].n && (n == 0 || !memcmp(ids, cases[k].ids, n * sizeof *ids));
        if (!ok && bad++ < 5) {
            printf("# case %d (%zu bytes): got %zu ids, want %zu\n#  got :", k, cases[k].len, n, cases[k].n);
            for (size_t i = 0; i < n && i < 30; i++) printf(" %d", ids[i]);
            printf("\n#  want:");
            for (size_t i = 0; i < cases[k].n && i < 30; i++) printf(" %d", cases[k].ids[i]);
            printf("\n");
        }
        T_CHECK(ok);
        /* a limit gives a prefix of the full result */
        if (rc == SD_OK && n > 3) {
            int32_t *p;
            size_t pn;
            T_EQ_INT(sd_clip_tokenizer_encode(tok, (const char *)cases[k].text, cases[k].len, 3, &p, &pn), SD_OK);
            T_CHECK(pn >= 3 && pn <= n && !memcmp(p, ids, pn * sizeof *p));
            free(p);
        }
        free(ids);
    }
    printf("# %d corpus cases, %d mismatches\n", ncases, bad);
}

static void test_framed(void)
{
    if (!tok || !ncases) return;
    FILE *f = fopen(data_path("framed.tsv"), "r");
    T_CHECK(f != NULL);
    if (!f) return;
    static char line[1 << 16];
    int nrows = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        int k, mtl, pad;
        if (sscanf(line, "%d\t%d\t%d\t", &k, &mtl, &pad) != 3 || k < 0 || k >= ncases) { T_CHECK(0); continue; }
        char *p = strchr(line, '\t');
        p = strchr(p + 1, '\t');
        p = strchr(p + 1, '\t');
        size_t n;
        int32_t *want = parse_ids(p + 1, &n);
        int32_t out[3 * 77];
        int nch = 0;
        int rc = sd_clip_tokenizer_frame(tok, (const char *)cases[k].text, cases[k].len, mtl, pad, out, &nch);
        int ok = rc == SD_OK && (size_t)nch * 77 == n && !memcmp(out, want, n * sizeof *out);
        if (!ok && bad++ < 3) printf("# framed case %d mtl %d pad %d: rc %d nch %d\n", k, mtl, pad, rc, nch);
        T_CHECK(ok);
        /* the same through sd_clip_frame_ids on the full id list */
        int32_t out2[3 * 77];
        int nch2 = 0, trunc = -1;
        T_EQ_INT(sd_clip_frame_ids(cases[k].ids, cases[k].n, mtl, pad, out2, &nch2, &trunc), SD_OK);
        T_CHECK(nch2 == nch && !memcmp(out, out2, (size_t)nch * 77 * sizeof *out));
        T_EQ_INT(trunc, cases[k].n > (size_t)mtl);
        free(want);
        nrows++;
    }
    fclose(f);
    T_CHECK(nrows >= 60);
    printf("# %d framed rows\n", nrows);
}

/* ftfy.fix_text(text) outputs from ftfy 6.1.1 itself (fix_encoding included) */
static void test_ftfy(void)
{
    FILE *f = fopen(data_path("ftfy.tsv"), "r");
    T_CHECK(f != NULL);
    if (!f || !ncases) { if (f) fclose(f); return; }
    static char line[1 << 16];
    static unsigned char want[1 << 15];
    char listed[1024] = {0};
    int n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        int k = atoi(line);
        char *h = strchr(line, '\t');
        if (!h || k < 0 || k >= ncases) { T_CHECK(0); continue; }
        h++;
        size_t wl = 0;
        while (hexval(h[2 * wl]) >= 0 && hexval(h[2 * wl + 1]) >= 0) {
            want[wl] = (unsigned char)(hexval(h[2 * wl]) * 16 + hexval(h[2 * wl + 1]));
            wl++;
        }
        want[wl] = 0;
        listed[k] = 1;
        char *got;
        T_EQ_INT(sd_ftfy_fix_text((const char *)cases[k].text, cases[k].len, &got), SD_OK);
        int ok = got && strlen(got) == wl && !memcmp(got, want, wl);
        if (!ok && bad++ < 5) printf("# ftfy case %d: got '%s' want '%s'\n", k, got, (char *)want);
        T_CHECK(ok);
        free(got);
        n++;
    }
    fclose(f);
    /* unlisted cases are unchanged by ftfy (valid UTF-8 ones) */
    for (int k = 0; k < ncases; k++) {
        if (listed[k]) continue;
        char *got;
        T_EQ_INT(sd_ftfy_fix_text((const char *)cases[k].text, cases[k].len, &got), SD_OK);
        int valid = 1;
        for (size_t i = 0; i < cases[k].len; i++) if (cases[k].text[i] >= 0x80) valid = 0;
        if (valid) T_CHECKF(got && !strcmp(got, (const char *)cases[k].text), "case %d changed", k);
        free(got);
    }
    printf("# %d ftfy outputs, %d mismatches\n", n, bad);
    T_CHECK(n >= 150);
    /* NFC alone */
    uint32_t in[] = {0x41, 0x30A, 0x1100, 0x1161, 0x11A8, 0x71, 0x307, 0x323, 0x344}, out[64];
    size_t k = sd_unicode_nfc(in, 9, out);
    uint32_t want_nfc[] = {0xC5, 0xAC01, 0x71, 0x323, 0x307, 0x308, 0x301};
    T_EQ_INT(k, 7);
    T_CHECK(k == 7 && !memcmp(out, want_nfc, sizeof want_nfc));
}

/* Token ids of mojibake captions through the full fix_text, from the oracle
 * (tests/golden/gen/make_ftfy_golden.py; a backslash is escaped as two, control bytes as \xHH) */
static void test_mojibake_ids(void)
{
    if (!tok) return;
    const char *root = getenv("SD_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/ftfy/clip_ids.tsv", root && *root ? root : ".");
    FILE *f = fopen(path, "r");
    T_CHECKF(f != NULL, "%s", path);
    if (!f) return;
    static char line[1 << 14], text[1 << 14];
    int n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (!tab) { T_CHECK(0); continue; }
        size_t k = 0;
        for (char *p = line; p < tab; p++) {
            if (p[0] == '\\' && p[1] == '\\') { text[k++] = '\\'; p++; }
            else if (p[0] == '\\' && p[1] == 'x' && hexval(p[2]) >= 0 && hexval(p[3]) >= 0) {
                text[k++] = (char)(hexval(p[2]) * 16 + hexval(p[3]));
                p += 3;
            } else text[k++] = *p;
        }
        size_t nw;
        int32_t *want = parse_ids(tab + 1, &nw), *ids = NULL;
        size_t ni;
        int ok = sd_clip_tokenizer_encode(tok, text, k, 0, &ids, &ni) == SD_OK && ni == nw &&
                 (!ni || !memcmp(ids, want, ni * sizeof *ids));
        if (!ok && bad++ < 3) printf("# mojibake caption %d: ids differ\n", n);
        T_CHECK(ok);
        free(ids);
        free(want);
        n++;
    }
    fclose(f);
    printf("# %d mojibake captions\n", n);
    T_CHECK(n >= 10);
}

static void test_frame_rules(void)
{
    int32_t toks[300], out[3 * 77];
    int nch;
    for (int i = 0; i < 300; i++) toks[i] = 1000 + i;
    T_EQ_INT(sd_clip_frame_ids(toks, 300, 100, 0, out, &nch, NULL), SD_EINVAL);
    T_EQ_INT(sd_clip_frame_ids(toks, 300, 75, 49408, out, &nch, NULL), SD_EINVAL);
    T_EQ_INT(sd_clip_frame_ids(toks, 300, 75, -1, out, &nch, NULL), SD_EINVAL);
    /* SD1, 225: three full chunks, the last ends with EOS (row[L-1]) */
    T_EQ_INT(sd_clip_frame_ids(toks, 300, 225, SD_CLIP_PAD_SD1, out, &nch, NULL), SD_OK);
    T_EQ_INT(nch, 3);
    for (int c = 0; c < 3; c++) {
        T_EQ_INT(out[c * 77], SD_CLIP_BOS);
        T_EQ_INT(out[c * 77 + 1], 1000 + 75 * c);
        T_EQ_INT(out[c * 77 + 75], 1000 + 75 * c + 74);
        T_EQ_INT(out[c * 77 + 76], SD_CLIP_EOS);
    }
    /* SD2, 150, 80 tokens: chunk 0 full (text continues: EOS forced), chunk 1 = 5 tokens, EOS, pads */
    T_EQ_INT(sd_clip_frame_ids(toks, 80, 150, SD_CLIP_PAD_SD2, out, &nch, NULL), SD_OK);
    T_EQ_INT(nch, 2);
    T_EQ_INT(out[75], 1074);
    T_EQ_INT(out[76], SD_CLIP_EOS);
    T_EQ_INT(out[77 + 1], 1075);
    T_EQ_INT(out[77 + 6], SD_CLIP_EOS);
    T_EQ_INT(out[77 + 7], 0);
    T_EQ_INT(out[77 + 76], 0);
    /* SD2, 150, 10 tokens: chunk 1 is empty: BOS EOS pad... */
    T_EQ_INT(sd_clip_frame_ids(toks, 10, 150, SD_CLIP_PAD_SD2, out, &nch, NULL), SD_OK);
    T_EQ_INT(out[77], SD_CLIP_BOS);
    T_EQ_INT(out[78], SD_CLIP_EOS);
    T_EQ_INT(out[79], 0);
    T_EQ_INT(out[76], 0);
    /* SD1, 150, 10 tokens: chunk 1 is BOS + 75 x EOS(pad) + EOS */
    T_EQ_INT(sd_clip_frame_ids(toks, 10, 150, SD_CLIP_PAD_SD1, out, &nch, NULL), SD_OK);
    T_EQ_INT(out[78], SD_CLIP_EOS);
    T_EQ_INT(out[11], SD_CLIP_EOS);
    /* empty */
    T_EQ_INT(sd_clip_frame_ids(NULL, 0, 0, SD_CLIP_PAD_SD2, out, &nch, NULL), SD_OK);
    T_EQ_INT(nch, 1);
    T_EQ_INT(out[1], SD_CLIP_EOS);
    T_EQ_INT(out[2], 0);
    if (tok) T_EQ_INT(sd_clip_tokenizer_frame(tok, "x", 1, 76, 0, out, &nch), SD_EINVAL);
    /* kohya's SD2 quirk: a leading "!" (id 0 = pad) becomes EOS in chunked framing */
    int32_t bang[2] = {0, 500};
    T_EQ_INT(sd_clip_frame_ids(bang, 2, 150, SD_CLIP_PAD_SD2, out, &nch, NULL), SD_OK);
    T_EQ_INT(out[1], SD_CLIP_EOS);
    T_EQ_INT(out[2], 500);
    T_EQ_INT(sd_clip_frame_ids(bang, 2, 75, SD_CLIP_PAD_SD2, out, &nch, NULL), SD_OK);
    T_EQ_INT(out[1], 0);   /* not in the single-row case */
}

static void check_norm(const char *in, const char *want)
{
    char *out = NULL;
    T_EQ_INT(sd_clip_normalize(in, strlen(in), &out), SD_OK);
    T_EQ_STR(out, want);
    free(out);
}

static void test_normalize(void)
{
    check_norm("  Hello\t\n World  ", "hello world");
    check_norm("\x1c x \x1f", "x");                          /* ftfy drops \x1c..\x1f */
    check_norm("a\x1c\x1d" "b", "ab");
    check_norm("&amp;amp; &lt;b&gt;", "& <b>");               /* unescaped until stable */
    check_norm("<b> &amp;", "<b> &amp;");                     /* not with '<' in the line */
    check_norm("Don\xe2\x80\x99t \xef\xac\x81", "don't fi");
    check_norm("e\xcc\x81", "\xc3\xa9");                      /* NFC */
    check_norm("\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82");   /* ΟΔΟΣ -> οδος */
    check_norm("\xce\xa3", "\xcf\x83");                      /* lone Σ -> σ */
    check_norm("\xce\x91\xce\xa3\xce\x91", "\xce\xb1\xcf\x83\xce\xb1");                   /* medial */
    check_norm("\xc4\xb0", "i\xcc\x87");                      /* İ -> i + U+0307 */
    check_norm("\xc3\x89\xc3\x80\xc3\x96", "\xc3\xa9\xc3\xa0\xc3\xb6");
    check_norm("a\xffz", "a\xef\xbf\xbdz");                   /* invalid byte -> U+FFFD */
    check_norm("\xe3\x80\x80x\xe2\x80\xa8y\xc2\x85", "x y\xe2\x80\xa6");  /* U+3000, LS; NEL is C1 -> "…" */
    check_norm("", "");
}

static void test_decode(void)
{
    if (!tok) return;
    int32_t *ids;
    size_t n;
    const char *s = "a photo of a cat, (masterpiece:1.2) caf\xc3\xa9 \xf0\x9f\x98\x80";
    T_EQ_INT(sd_clip_tokenizer_encode(tok, s, strlen(s), 0, &ids, &n), SD_OK);
    char *d;
    T_EQ_INT(sd_clip_tokenizer_decode(tok, ids, n, &d), SD_OK);
    T_EQ_STR(d, "a photo of a cat , ( masterpiece : 1 . 2 ) caf\xc3\xa9 \xf0\x9f\x98\x80 ");
    free(d);
    free(ids);
    int32_t bad[] = {5, 49408};
    T_EQ_INT(sd_clip_tokenizer_decode(tok, bad, 2, &d), SD_EINVAL);
    /* the literal special tokens inside text */
    T_EQ_INT(sd_clip_tokenizer_encode(tok, "<|endoftext|>", 13, 0, &ids, &n), SD_OK);
    T_CHECK(n == 1 && ids[0] == SD_CLIP_EOS);
    free(ids);
}

static void test_vocab_errors(void)
{
    sd_clip_tokenizer *t = (sd_clip_tokenizer *)1;
    T_EQ_INT(sd_clip_tokenizer_load(t_path("no-such-vocab.txt.gz"), &t), SD_ENOTFOUND);
    T_CHECK(t == NULL);
    T_CHECK(strstr(sd_errmsg(), "no-such-vocab") != NULL);
    const char *p = t_path("vocab-bad.txt");
    static const char *bad[] = {
        "",                                   /* no merges */
        "#version: 0.2\n",                    /* no merges */
        "#version: 0.2\ni n\nt h\n",          /* too few */
        "#version: 0.2\ni n x\n",             /* three parts */
        "#version: 0.2\nzz q\n",              /* unknown symbol */
        "#version: 0.2\n\n",                  /* empty merge line */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        T_CHECK(t_write_file(p, bad[i], strlen(bad[i])) == 0);
        t = (sd_clip_tokenizer *)1;
        int rc = sd_clip_tokenizer_load(p, &t);
        T_EQ_INT(rc, SD_EFORMAT);
        T_CHECK(t == NULL);
        T_CHECK(strstr(sd_errmsg(), "vocab-bad.txt") != NULL);
        T_CHECK(strchr(sd_errmsg(), '\n') == NULL);
    }
    /* a truncated gzip stream */
    const char *vp = getenv("SD_SHARE");
    if (vp) {
        char src[1024];
        snprintf(src, sizeof src, "%s/%s", vp, SD_CLIP_VOCAB_FILE);
        FILE *f = fopen(src, "rb");
        T_CHECK(f != NULL);
        if (f) {
            static unsigned char buf[200000];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            const char *q = t_path("vocab-trunc.txt.gz");
            T_CHECK(t_write_file(q, buf, n) == 0);
            T_EQ_INT(sd_clip_tokenizer_load(q, &t), SD_EFORMAT);
            T_CHECK(t == NULL);
        }
    }
}

typedef struct {
    int from, to, bad;
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    for (int r = 0; r < 3; r++)
        for (int k = a->from; k < a->to; k++) {
            int32_t *ids;
            size_t n;
            if (sd_clip_tokenizer_encode(tok, (const char *)cases[k].text, cases[k].len, 0, &ids, &n) ||
                n != cases[k].n || (n && memcmp(ids, cases[k].ids, n * sizeof *ids)))
                a->bad++;
            free(ids);
        }
    return NULL;
}

static void test_threads(void)
{
    if (!tok || ncases < 4) return;
    pthread_t th[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].from = 0;      /* every thread does all cases: shared cache slots collide */
        a[i].to = ncases;
        a[i].bad = 0;
        pthread_create(&th[i], NULL, thr_main, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        T_EQ_INT(a[i].bad, 0);
    }
}

static void test_speed(void)
{
    if (!tok || !ncases) return;
    struct timespec t0, t1;
    size_t bytes = 0, ntok = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < ncases; k++) {
            int32_t *ids;
            size_t n;
            if (sd_clip_tokenizer_encode(tok, (const char *)cases[k].text, cases[k].len, 0, &ids, &n) == SD_OK) {
                bytes += cases[k].len;
                ntok += n;
                free(ids);
            }
        }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("# speed, awkward corpus: %.1f MB/s, %.0f ktokens/s (cache warm)\n", bytes / s / 1e6, ntok / s / 1e3);
    const char *cap = "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile, open mouth, "
                      "blue eyes, outdoors, sky, cloud, day, blue sky, white dress, sun hat, holding flower";
    size_t cl = strlen(cap);
    ntok = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < 5000; r++) {
        int32_t out[3 * 77];
        int nch;
        if (sd_clip_tokenizer_frame(tok, cap, cl, 225, SD_CLIP_PAD_SD1, out, &nch) == SD_OK) ntok++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("# speed, ASCII captions framed to 3x77: %.0f captions/s (%.1f us each)\n", ntok / s, 1e6 * s / ntok);
    struct timespec l0, l1;
    sd_clip_tokenizer *t2;
    clock_gettime(CLOCK_MONOTONIC, &l0);
    T_EQ_INT(sd_clip_tokenizer_load(NULL, &t2), SD_OK);
    clock_gettime(CLOCK_MONOTONIC, &l1);
    printf("# load: %.1f ms\n", 1e3 * ((double)(l1.tv_sec - l0.tv_sec) + 1e-9 * (double)(l1.tv_nsec - l0.tv_nsec)));
    sd_clip_tokenizer_free(t2);
}

int main(void)
{
    T_RUN(test_load);
    T_RUN(test_known_ids);
    T_RUN(test_corpus);
    T_RUN(test_framed);
    T_RUN(test_ftfy);
    T_RUN(test_mojibake_ids);
    T_RUN(test_frame_rules);
    T_RUN(test_normalize);
    T_RUN(test_decode);
    T_RUN(test_vocab_errors);
    T_RUN(test_threads);
    T_RUN(test_speed);
    sd_clip_tokenizer_free(tok);
    for (int k = 0; k < ncases; k++) { free(cases[k].text); free(cases[k].ids); }
    T_DONE();
}
