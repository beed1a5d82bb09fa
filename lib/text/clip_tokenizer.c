/* CLIP byte-level BPE tokenizer; see clip_tokenizer.h. */
#include "text/clip_tokenizer.h"

#include <archive.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fileio.h"
#include "base/share.h"
#include "base/strbuf.h"
#include "text/ftfy.h"
#include "text/unicode_tables.h"

#define CACHE_SLOTS 8192          /* direct-mapped BPE cache, by word hash */
#define CACHE_MAX_WORD 64         /* longer words are not cached */
#define MAX_VOCAB_BYTES (64u << 20)

/* ---------------------------------------------------------------------------------------------
 * Unicode helpers */

static int is_regex_space(uint32_t c)
{
    if (c < 0x80) return c == ' ' || (c >= 9 && c <= 13);
    return sd_uc_in(sd_uc_regex_space, sd_uc_regex_space_n, c);
}
static int is_py_space(uint32_t c)
{
    if (c < 0x80) return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
    return sd_uc_in(sd_uc_py_space, sd_uc_py_space_n, c);
}

enum { CL_NONE, CL_LETTER, CL_NUMBER, CL_OTHER };

static int clip_class(uint32_t c)
{
    if (c < 0x80) {
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CL_LETTER;
        if (c >= '0' && c <= '9') return CL_NUMBER;
        if (c == ' ' || (c >= 9 && c <= 13)) return CL_NONE;
        return CL_OTHER;
    }
    if (sd_uc_in(sd_uc_clip_letter, sd_uc_clip_letter_n, c)) return CL_LETTER;
    if (sd_uc_in(sd_uc_clip_number, sd_uc_clip_number_n, c)) return CL_NUMBER;
    if (sd_uc_in(sd_uc_clip_other, sd_uc_clip_other_n, c)) return CL_OTHER;
    return CL_NONE;
}

static uint32_t lower1(uint32_t c)
{
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    size_t lo = 0, hi = sd_uc_lower_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sd_uc_lower[mid][0]) hi = mid;
        else if (c > sd_uc_lower[mid][0]) lo = mid + 1;
        else return sd_uc_lower[mid][1];
    }
    return c;
}

static int is_case_ignorable(uint32_t c)
{
    return sd_uc_in(sd_uc_case_ignorable, sd_uc_case_ignorable_n, c);
}
/* Cased and not Case_Ignorable (the only cased code points the sigma rule can stop at). */
static int is_cased(uint32_t c)
{
    return sd_uc_in(sd_uc_cased, sd_uc_cased_n, c);
}

#define utf8_decode sd_utf8_decode
#define utf8_put sd_utf8_put

/* fix_text + whitespace_clean + lower(): text -> code points (malloc'd *out, *m of them). */
static int normalize_cps(const char *text, size_t len, uint32_t **out, size_t *m)
{
    *out = NULL;
    *m = 0;
    if (len > (SIZE_MAX / sizeof(uint32_t)) / 8) return sd_err(SD_ERANGE, "text too long");
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    if (!cp) return sd_err(SD_ENOMEM, "out of memory");
    size_t n = utf8_decode((const unsigned char *)text, len, cp);
    int rc = sd_ftfy_fix_cps(&cp, &n);
    if (rc) { free(cp); return rc; }
    uint32_t *lo = malloc((2 * n + 1) * sizeof *lo);
    if (!lo) { free(cp); return sd_err(SD_ENOMEM, "out of memory"); }
    /* runs of \s -> ' ' */
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        if (is_regex_space(cp[i])) {
            while (i < n && is_regex_space(cp[i])) i++;
            cp[w++] = ' ';
        } else cp[w++] = cp[i++];
    }
    n = w;
    /* strip() */
    size_t a = 0, b = n;
    while (a < b && is_py_space(cp[a])) a++;
    while (b > a && is_py_space(cp[b - 1])) b--;
    /* lower() */
    size_t k = 0;
    for (size_t i = a; i < b; i++) {
        uint32_t c = cp[i];
        if (c == 0x130) { lo[k++] = 0x69; lo[k++] = 0x307; continue; }
        if (c == 0x3A3) {
            size_t j = i;
            uint32_t p = 0;
            while (j > a) { p = cp[j - 1]; if (!is_case_ignorable(p)) break; j--; }
            int fin = j > a && is_cased(p);
            if (fin && i + 1 < b) {
                size_t q = i + 1;
                while (q < b && is_case_ignorable(cp[q])) q++;
                fin = q == b || !is_cased(cp[q]);
            }
            lo[k++] = fin ? 0x3C2 : 0x3C3;
            continue;
        }
        lo[k++] = lower1(c);
    }
    free(cp);
    *out = lo;
    *m = k;
    return SD_OK;
}

int sd_clip_normalize(const char *text, size_t len, char **out)
{
    *out = NULL;
    uint32_t *cp;
    size_t n;
    int rc = normalize_cps(text, len, &cp, &n);
    if (rc) return rc;
    char *s = malloc(4 * n + 1);
    if (!s) { free(cp); return sd_err(SD_ENOMEM, "out of memory"); }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += utf8_put(cp[i], (unsigned char *)s + k);
    s[k] = 0;
    free(cp);
    *out = s;
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Vocabulary */

typedef struct {
    uint64_t key;      /* (a << 32 | b) + 1; 0 = empty */
    int32_t rank, id;
} merge_slot;

typedef struct {
    char *words[CACHE_SLOTS];   /* key: length byte + word bytes */
    int32_t *ids[CACHE_SLOTS];  /* [0] = count */
    pthread_mutex_t lock;
} bpe_cache;

struct sd_clip_tokenizer {
    /* token strings in their vocab form (the byte->unicode symbols, UTF-8) */
    char *pool;
    size_t pool_len, pool_cap;
    uint32_t off[SD_CLIP_VOCAB_SIZE], len[SD_CLIP_VOCAB_SIZE];
    /* the same as raw bytes + end-of-word flag, for decoding */
    unsigned char *raw;
    uint32_t roff[SD_CLIP_VOCAB_SIZE], rlen[SD_CLIP_VOCAB_SIZE];
    unsigned char eow[SD_CLIP_VOCAB_SIZE];
    /* string -> id (last wins, like dict(zip(vocab, range))) */
    int32_t *strmap;
    size_t strmap_n;             /* power of two */
    merge_slot *merges;
    size_t merges_n;             /* power of two */
    int32_t byte_id[256], byte_eow_id[256];
    bpe_cache cache;
    int cache_ready;
};

static const int32_t NO_ID = -1;

/* GPT-2/CLIP bytes_to_unicode: returns the code point for byte b, and order[] the vocab order. */
static void bytes_to_unicode(uint32_t cp_of[256], int order[256])
{
    int n = 0, k = 0;
    int used[256] = {0};
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
            cp_of[b] = (uint32_t)b; used[b] = 1; order[k++] = b;
        }
    for (int b = 0; b < 256; b++)
        if (!used[b]) { cp_of[b] = 256u + (uint32_t)n++; order[k++] = b; }
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ull; }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

static int pool_add(sd_clip_tokenizer *t, int32_t id, const char *s, size_t n)
{
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 20;
        while (cap < t->pool_len + n) cap *= 2;
        char *p = realloc(t->pool, cap);
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        t->pool = p; t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s, n);
    t->off[id] = (uint32_t)t->pool_len;
    t->len[id] = (uint32_t)n;
    t->pool_len += n;
    return SD_OK;
}

static int32_t strmap_find(const sd_clip_tokenizer *t, const char *s, size_t n)
{
    size_t mask = t->strmap_n - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->strmap[i];
        if (id == NO_ID) return NO_ID;
        if (t->len[id] == n && !memcmp(t->pool + t->off[id], s, n)) return id;
    }
}

/* Insert id under its string; an earlier id with the same string is replaced (last wins). */
static void strmap_put(sd_clip_tokenizer *t, int32_t id)
{
    size_t mask = t->strmap_n - 1;
    const char *s = t->pool + t->off[id];
    size_t n = t->len[id];
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t o = t->strmap[i];
        if (o == NO_ID) { t->strmap[i] = id; return; }
        if (t->len[o] == n && !memcmp(t->pool + t->off[o], s, n)) { t->strmap[i] = id; return; }
    }
}

static merge_slot *merge_slot_for(const sd_clip_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t mask = t->merges_n - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        merge_slot *m = &t->merges[i];
        if (m->key == key || m->key == 0) return m;
    }
}

static int merge_lookup(const sd_clip_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t mask = t->merges_n - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        const merge_slot *m = &t->merges[i];
        if (m->key == 0) return 0;
        if (m->key == key) { *rank = m->rank; *id = m->id; return 1; }
    }
}

/* Read the whole (possibly gzip-compressed) file with libarchive's raw format. */
static int read_vocab_file(const char *path, char **data, size_t *n)
{
    *data = NULL;
    *n = 0;
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "cannot open %s: %s", path, strerror(e));
    }
    fclose(probe);
    struct archive *a = archive_read_new();
    if (!a) return sd_err(SD_ENOMEM, "out of memory");
    archive_read_support_filter_gzip(a);
    archive_read_support_format_raw(a);
    struct archive_entry *e;
    int rc = SD_OK;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK ||
        archive_read_next_header(a, &e) != ARCHIVE_OK) {
        rc = sd_err(SD_EFORMAT, "%s: cannot read: %s", path, archive_error_string(a) ? archive_error_string(a) : "unknown error");
        goto done;
    }
    for (;;) {
        if (cap - len < 65536) {
            size_t nc = cap ? cap * 2 : 4u << 20;
            if (nc > MAX_VOCAB_BYTES + 65536) {
                rc = sd_err(SD_EFORMAT, "%s: larger than %u MiB uncompressed", path, MAX_VOCAB_BYTES >> 20);
                goto done;
            }
            char *p = realloc(buf, nc);
            if (!p) { rc = sd_err(SD_ENOMEM, "out of memory"); goto done; }
            buf = p; cap = nc;
        }
        la_ssize_t r = archive_read_data(a, buf + len, cap - len - 1);
        if (r < 0) {
            rc = sd_err(SD_EFORMAT, "%s: cannot read: %s", path, archive_error_string(a) ? archive_error_string(a) : "unknown error");
            goto done;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    buf[len] = 0;
done:
    archive_read_free(a);
    if (rc) { free(buf); return rc; }
    *data = buf;
    *n = len;
    return SD_OK;
}

int sd_clip_vocab_path(char *buf, size_t size)
{
    return sd_share_path(SD_CLIP_VOCAB_FILE, buf, size);
}

/* Convert a vocab-form string (byte->unicode symbols, optional trailing "</w>") to raw bytes. */
static int vocab_to_raw(const uint32_t byte_of_cp[512], const char *s, size_t n, unsigned char *out,
                        size_t *m, int *eow)
{
    *eow = 0;
    if (n >= 4 && !memcmp(s + n - 4, "</w>", 4)) { *eow = 1; n -= 4; }
    uint32_t cps[256];
    if (n > 256) return -1;
    size_t k = utf8_decode((const unsigned char *)s, n, cps);
    for (size_t i = 0; i < k; i++) {
        if (cps[i] >= 512 || byte_of_cp[cps[i]] > 255) return -1;
        out[i] = (unsigned char)byte_of_cp[cps[i]];
    }
    *m = k;
    return 0;
}

int sd_clip_tokenizer_load(const char *path, sd_clip_tokenizer **out)
{
    *out = NULL;
    char pbuf[4096];
    if (!path) {
        int rc = sd_clip_vocab_path(pbuf, sizeof pbuf);
        if (rc) return rc;
        path = pbuf;
    }
    char *data;
    size_t n;
    int rc = read_vocab_file(path, &data, &n);
    if (rc) return rc;
    sd_clip_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { free(data); return sd_err(SD_ENOMEM, "out of memory"); }
    t->strmap_n = 1 << 17;
    t->merges_n = 1 << 17;
    t->strmap = malloc(t->strmap_n * sizeof *t->strmap);
    t->merges = calloc(t->merges_n, sizeof *t->merges);
    if (!t->strmap || !t->merges) { rc = sd_err(SD_ENOMEM, "out of memory"); goto fail; }
    for (size_t i = 0; i < t->strmap_n; i++) t->strmap[i] = NO_ID;
    if (pthread_mutex_init(&t->cache.lock, NULL)) { rc = sd_err(SD_ENOMEM, "cannot create a mutex"); goto fail; }
    t->cache_ready = 1;

    uint32_t cp_of[256];
    int order[256];
    uint32_t byte_of_cp[512];
    bytes_to_unicode(cp_of, order);
    for (int i = 0; i < 512; i++) byte_of_cp[i] = 0xFFFF;
    for (int b = 0; b < 256; b++) byte_of_cp[cp_of[b]] = (uint32_t)b;
    /* base symbols */
    for (int i = 0; i < 512; i++) {
        unsigned char s[8];
        size_t k = utf8_put(cp_of[order[i & 255]], s);
        if (i >= 256) { memcpy(s + k, "</w>", 4); k += 4; }
        if ((rc = pool_add(t, i, (const char *)s, k))) goto fail;
        strmap_put(t, i);
    }
    /* merges: lines 1 .. 48894 of the file (line 0 is the header) */
    char *p = data, *end = data + n;
    char *nl = memchr(p, '\n', n);
    if (!nl) { rc = sd_err(SD_EFORMAT, "%s: no merges after the header line", path); goto fail; }
    p = nl + 1;
    int32_t *sa = malloc(2 * SD_CLIP_NMERGES * sizeof *sa);
    if (!sa) { rc = sd_err(SD_ENOMEM, "out of memory"); goto fail; }
    for (int i = 0; i < SD_CLIP_NMERGES; i++) {
        int line = i + 2;
        if (p >= end) { free(sa); rc = sd_err(SD_EFORMAT, "%s: only %d merges (need %d)", path, i, SD_CLIP_NMERGES); goto fail; }
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        /* split on ASCII whitespace (str.split()); exactly two parts */
        const char *part[3];
        size_t plen[3];
        int np = 0;
        for (char *q = p; q < e;) {
            while (q < e && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\f' || *q == '\v')) q++;
            if (q >= e) break;
            char *s0 = q;
            while (q < e && !(*q == ' ' || *q == '\t' || *q == '\r' || *q == '\f' || *q == '\v')) q++;
            if (np < 3) { part[np] = s0; plen[np] = (size_t)(q - s0); }
            np++;
        }
        if (np != 2) { free(sa); rc = sd_err(SD_EFORMAT, "%s: line %d: expected two symbols, got %d", path, line, np); goto fail; }
        int32_t a = strmap_find(t, part[0], plen[0]), b = strmap_find(t, part[1], plen[1]);
        if (a == NO_ID || b == NO_ID) {
            free(sa);
            rc = sd_err(SD_EFORMAT, "%s: line %d: merge of a symbol not in the vocabulary", path, line);
            goto fail;
        }
        char tmp[1024];
        if (plen[0] + plen[1] > sizeof tmp) { free(sa); rc = sd_err(SD_EFORMAT, "%s: line %d: symbol too long", path, line); goto fail; }
        memcpy(tmp, part[0], plen[0]);
        memcpy(tmp + plen[0], part[1], plen[1]);
        int32_t id = 512 + i;
        if ((rc = pool_add(t, id, tmp, plen[0] + plen[1]))) { free(sa); goto fail; }
        strmap_put(t, id);
        /* string ids of the parts as they are at this point; re-resolved below once all
           strings are known (dict semantics: the final id of a string is its last occurrence) */
        sa[2 * i] = a;
        sa[2 * i + 1] = b;
        p = e < end ? e + 1 : end;
    }
    if ((rc = pool_add(t, SD_CLIP_BOS, "<|startoftext|>", 15))) { free(sa); goto fail; }
    strmap_put(t, SD_CLIP_BOS);
    if ((rc = pool_add(t, SD_CLIP_EOS, "<|endoftext|>", 13))) { free(sa); goto fail; }
    strmap_put(t, SD_CLIP_EOS);
    /* ranks keyed by final (canonical) ids; a repeated pair keeps its last rank */
    for (int i = 0; i < SD_CLIP_NMERGES; i++) {
        int32_t a = sa[2 * i], b = sa[2 * i + 1];
        a = strmap_find(t, t->pool + t->off[a], t->len[a]);
        b = strmap_find(t, t->pool + t->off[b], t->len[b]);
        int32_t m = strmap_find(t, t->pool + t->off[512 + i], t->len[512 + i]);
        merge_slot *s = merge_slot_for(t, a, b);
        s->key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
        s->rank = i;
        s->id = m;
    }
    free(sa);
    for (int b = 0; b < 256; b++) {
        unsigned char s[8];
        size_t k = utf8_put(cp_of[b], s);
        t->byte_id[b] = strmap_find(t, (const char *)s, k);
        memcpy(s + k, "</w>", 4);
        t->byte_eow_id[b] = strmap_find(t, (const char *)s, k + 4);
    }
    /* raw bytes per token, for decoding */
    t->raw = malloc(t->pool_len);
    if (!t->raw) { rc = sd_err(SD_ENOMEM, "out of memory"); goto fail; }
    size_t rl = 0;
    for (int i = 0; i < SD_CLIP_VOCAB_SIZE; i++) {
        size_t m;
        int eow;
        const char *s = t->pool + t->off[i];
        if (i >= SD_CLIP_BOS) { memcpy(t->raw + rl, s, t->len[i]); m = t->len[i]; eow = 0; }
        else if (vocab_to_raw(byte_of_cp, s, t->len[i], t->raw + rl, &m, &eow)) {
            rc = sd_err(SD_EFORMAT, "%s: line %d: symbol outside the byte alphabet", path, i - 510);
            goto fail;
        }
        t->roff[i] = (uint32_t)rl;
        t->rlen[i] = (uint32_t)m;
        t->eow[i] = (unsigned char)eow;
        rl += m;
    }
    free(data);
    *out = t;
    return SD_OK;
fail:
    free(data);
    if (t->cache_ready) pthread_mutex_destroy(&t->cache.lock);
    free(t->pool);
    free(t->raw);
    free(t->strmap);
    free(t->merges);
    free(t);
    return rc;
}

void sd_clip_tokenizer_free(sd_clip_tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < CACHE_SLOTS; i++) { free(t->cache.words[i]); free(t->cache.ids[i]); }
    pthread_mutex_destroy(&t->cache.lock);
    free(t->pool);
    free(t->raw);
    free(t->strmap);
    free(t->merges);
    free(t);
}

/* ---------------------------------------------------------------------------------------------
 * Encoding */

typedef struct {
    int32_t *v;
    size_t n, cap;
} idvec;

static int idvec_push(idvec *v, int32_t x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 128;
        int32_t *p = realloc(v->v, cap * sizeof *p);
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        v->v = p; v->cap = cap;
    }
    v->v[v->n++] = x;
    return SD_OK;
}

/* BPE of one word (its UTF-8 bytes), appending ids to out. sym is scratch for n ids. */
static int bpe_word(sd_clip_tokenizer *t, const unsigned char *w, size_t n, int32_t *sym, idvec *out)
{
    if (n == 15 && !memcmp(w, "<|startoftext|>", 15)) return idvec_push(out, SD_CLIP_BOS);
    if (n == 13 && !memcmp(w, "<|endoftext|>", 13)) return idvec_push(out, SD_CLIP_EOS);
    size_t slot = 0;
    int cacheable = n <= CACHE_MAX_WORD;
    if (cacheable) {
        slot = hash_bytes(w, n) & (CACHE_SLOTS - 1);
        pthread_mutex_lock(&t->cache.lock);
        const char *k = t->cache.words[slot];
        if (k && (unsigned char)k[0] == n && !memcmp(k + 1, w, n)) {
            const int32_t *ids = t->cache.ids[slot];
            int rc = SD_OK;
            for (int32_t i = 0; i < ids[0] && !rc; i++) rc = idvec_push(out, ids[1 + i]);
            pthread_mutex_unlock(&t->cache.lock);
            return rc;
        }
        pthread_mutex_unlock(&t->cache.lock);
    }
    size_t m = n;
    for (size_t i = 0; i + 1 < n; i++) sym[i] = t->byte_id[w[i]];
    sym[n - 1] = t->byte_eow_id[w[n - 1]];
    while (m > 1) {
        int32_t best = INT32_MAX, bid = 0, ba = 0, bb = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            int32_t r, id;
            if (merge_lookup(t, sym[i], sym[i + 1], &r, &id) && r < best) {
                best = r; bid = id; ba = sym[i]; bb = sym[i + 1];
            }
        }
        if (best == INT32_MAX) break;
        size_t k = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && sym[i] == ba && sym[i + 1] == bb) { sym[k++] = bid; i += 2; }
            else sym[k++] = sym[i++];
        }
        m = k;
    }
    for (size_t i = 0; i < m; i++) {
        int rc = idvec_push(out, sym[i]);
        if (rc) return rc;
    }
    if (cacheable) {
        char *key = malloc(n + 1);
        int32_t *ids = malloc((m + 1) * sizeof *ids);
        if (!key || !ids) { free(key); free(ids); return SD_OK; }   /* caching is optional */
        key[0] = (char)(unsigned char)n;
        memcpy(key + 1, w, n);
        ids[0] = (int32_t)m;
        memcpy(ids + 1, sym, m * sizeof *ids);
        pthread_mutex_lock(&t->cache.lock);
        free(t->cache.words[slot]);
        free(t->cache.ids[slot]);
        t->cache.words[slot] = key;
        t->cache.ids[slot] = ids;
        pthread_mutex_unlock(&t->cache.lock);
    }
    return SD_OK;
}

/* Case-insensitive match of an ASCII literal at cp[i] (IGNORECASE: 'ſ' matches 's'). */
static size_t match_lit(const uint32_t *cp, size_t i, size_t n, const char *lit)
{
    size_t k = 0;
    for (; lit[k]; k++) {
        if (i + k >= n) return 0;
        uint32_t c = cp[i + k], l = (unsigned char)lit[k];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c == 0x17F) c = 's';
        if (c != l) return 0;
    }
    return k;
}

int sd_clip_tokenizer_encode(sd_clip_tokenizer *t, const char *text, size_t len, size_t max,
                             int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    uint32_t *cp;
    size_t m;
    int rc = normalize_cps(text ? text : "", text ? len : 0, &cp, &m);
    if (rc) return rc;
    unsigned char *word = malloc(4 * m + 1);
    int32_t *sym = malloc((4 * m + 1) * sizeof *sym);
    idvec out = {0};
    if (!word || !sym) { rc = sd_err(SD_ENOMEM, "out of memory"); goto done; }
    static const char *const contr[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (size_t i = 0; i < m && !(max && out.n >= max);) {
        size_t e = 0;
        if (cp[i] == '<') {
            if ((e = match_lit(cp, i, m, "<|startoftext|>")) || (e = match_lit(cp, i, m, "<|endoftext|>")))
                e += i;
        } else if (cp[i] == '\'') {
            for (int k = 0; k < 7 && !e; k++)
                if ((e = match_lit(cp, i, m, contr[k]))) e += i;
        }
        if (!e) {
            int cl = clip_class(cp[i]);
            if (cl == CL_NONE) { i++; continue; }
            e = i + 1;
            if (cl != CL_NUMBER)
                while (e < m && clip_class(cp[e]) == cl) e++;
        }
        size_t wn = 0;
        for (size_t k = i; k < e; k++) wn += utf8_put(cp[k], word + wn);
        if ((rc = bpe_word(t, word, wn, sym, &out))) goto done;
        i = e;
    }
done:
    free(cp);
    free(word);
    free(sym);
    if (rc) { free(out.v); return rc; }
    *ids = out.v;
    *n = out.n;
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Framing */

int sd_clip_frame_ids(const int32_t *toks, size_t n, int max_token_length, int32_t pad,
                      int32_t *out, int *nchunks, int *truncated)
{
    if (max_token_length == 0) max_token_length = SD_CLIP_CHUNK;
    if (max_token_length != 75 && max_token_length != 150 && max_token_length != 225)
        return sd_err(SD_EINVAL, "max_token_length must be 75, 150 or 225, not %d", max_token_length);
    if (pad < 0 || pad >= SD_CLIP_VOCAB_SIZE) return sd_err(SD_EINVAL, "pad id %d out of range", (int)pad);
    int L = max_token_length + 2;
    int32_t row[227];
    size_t k = n < (size_t)(L - 2) ? n : (size_t)(L - 2);
    if (truncated) *truncated = n > k;
    row[0] = SD_CLIP_BOS;
    for (size_t i = 0; i < k; i++) row[1 + i] = toks[i];
    row[1 + k] = SD_CLIP_EOS;
    for (int i = (int)k + 2; i < L; i++) row[i] = pad;
    if (L == SD_CLIP_CTX) {
        memcpy(out, row, SD_CLIP_CTX * sizeof *out);
        *nchunks = 1;
        return SD_OK;
    }
    int c = 0;
    for (int i = 1; i < L - SD_CLIP_CTX + 2; i += SD_CLIP_CHUNK, c++) {
        int32_t *ch = out + c * SD_CLIP_CTX;
        ch[0] = row[0];
        memcpy(ch + 1, row + i, SD_CLIP_CHUNK * sizeof *ch);
        ch[76] = row[L - 1];
        if (pad != SD_CLIP_EOS) {
            if (ch[75] != SD_CLIP_EOS && ch[75] != pad) ch[76] = SD_CLIP_EOS;
            if (ch[1] == pad) ch[1] = SD_CLIP_EOS;
        }
    }
    *nchunks = c;
    return SD_OK;
}

int sd_clip_tokenizer_frame(sd_clip_tokenizer *t, const char *text, size_t len,
                            int max_token_length, int32_t pad, int32_t *out, int *nchunks)
{
    int mtl = max_token_length ? max_token_length : SD_CLIP_CHUNK;
    if (mtl != 75 && mtl != 150 && mtl != 225)
        return sd_err(SD_EINVAL, "max_token_length must be 75, 150 or 225, not %d", max_token_length);
    int32_t *ids;
    size_t n;
    int rc = sd_clip_tokenizer_encode(t, text, len, (size_t)mtl + 1, &ids, &n);
    if (rc) return rc;
    rc = sd_clip_frame_ids(ids, n, mtl, pad, out, nchunks, NULL);
    free(ids);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding */

const char *sd_clip_tokenizer_token(const sd_clip_tokenizer *t, int32_t id, size_t *len, int *eow)
{
    if (id < 0 || id >= SD_CLIP_VOCAB_SIZE) return NULL;
    if (len) *len = t->rlen[id];
    if (eow) *eow = t->eow[id];
    return (const char *)t->raw + t->roff[id];
}

int sd_clip_tokenizer_decode(const sd_clip_tokenizer *t, const int32_t *ids, size_t n, char **text)
{
    *text = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= SD_CLIP_VOCAB_SIZE)
            return sd_err(SD_EINVAL, "token id %ld out of range", (long)ids[i]);
        total += t->rlen[ids[i]] + 1;
    }
    unsigned char *b = malloc(total + 1);
    uint32_t *cp = malloc((total + 1) * sizeof *cp);
    char *s = malloc(3 * total + 1);
    if (!b || !cp || !s) { free(b); free(cp); free(s); return sd_err(SD_ENOMEM, "out of memory"); }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(b + k, t->raw + t->roff[ids[i]], t->rlen[ids[i]]);
        k += t->rlen[ids[i]];
        if (t->eow[ids[i]]) b[k++] = ' ';
    }
    size_t m = utf8_decode(b, k, cp), w = 0;
    for (size_t i = 0; i < m; i++) w += utf8_put(cp[i], (unsigned char *)s + w);
    s[w] = 0;
    free(b);
    free(cp);
    *text = s;
    return SD_OK;
}

/* ---- Hugging Face tokenizer files (Diffusers tokenizer/ folders) -------------------------------- */

static const sd_clip_tokenizer *sort_tok;

static int cmp_vocab(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = sort_tok->len[x], ly = sort_tok->len[y];
    int c = memcmp(sort_tok->pool + sort_tok->off[x], sort_tok->pool + sort_tok->off[y], lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* JSON string body as Python's json.dumps(ensure_ascii=False) writes it */
static void json_str(sd_strbuf *b, const char *s, size_t n)
{
    sd_strbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        if (c == '"' || c == '\\') { e[0] = '\\'; e[1] = (char)c; sd_strbuf_add(b, e, 2); }
        else if (c == '\n') sd_strbuf_puts(b, "\\n");
        else if (c == '\t') sd_strbuf_puts(b, "\\t");
        else if (c == '\r') sd_strbuf_puts(b, "\\r");
        else if (c < 0x20) { snprintf(e, sizeof e, "\\u%04x", c); sd_strbuf_puts(b, e); }
        else sd_strbuf_add(b, (const char *)&s[i], 1);
    }
    sd_strbuf_add(b, "\"", 1);
}

static int write_buf(const char *dir, const char *name, sd_strbuf *b)
{
    if (b->oom) { free(b->p); return sd_err(SD_ENOMEM, "out of memory"); }
    size_t L = strlen(dir) + strlen(name) + 2;
    char *p = malloc(L);
    if (!p) { free(b->p); return sd_err(SD_ENOMEM, "out of memory"); }
    snprintf(p, L, "%s/%s", dir, name);
    int rc = sd_write_file_atomic(p, b->p ? b->p : "", b->n);
    free(p);
    free(b->p);
    memset(b, 0, sizeof *b);
    return rc;
}

static const char *const added_token =
    "{\n    \"content\": \"%s\",\n    \"lstrip\": false,\n    \"normalized\": %s,\n    \"rstrip\": false,\n"
    "    \"single_word\": false%s\n  }";

int sd_clip_tokenizer_write_hf(const char *vocab_path, const char *dir, int32_t pad)
{
    if (pad != SD_CLIP_PAD_SD1 && pad != SD_CLIP_PAD_SD2)
        return sd_err(SD_EINVAL, "sd_clip_tokenizer_write_hf: pad must be %d or %d", SD_CLIP_PAD_SD1, SD_CLIP_PAD_SD2);
    char pbuf[4096];
    if (!vocab_path) {
        int rc = sd_clip_vocab_path(pbuf, sizeof pbuf);
        if (rc) return rc;
        vocab_path = pbuf;
    }
    sd_clip_tokenizer *t = NULL;
    int rc = sd_clip_tokenizer_load(vocab_path, &t);
    if (rc) return rc;
    char *data = NULL;
    size_t n = 0;
    int32_t *ids = malloc(SD_CLIP_VOCAB_SIZE * sizeof *ids);
    sd_strbuf b = { 0 };
    if (!ids) { rc = sd_err(SD_ENOMEM, "out of memory"); goto out; }
    /* vocab.json: json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"; a string
       that occurs twice keeps its last id (dict(zip(vocab, range(len(vocab))))) */
    for (int32_t i = 0; i < SD_CLIP_VOCAB_SIZE; i++) ids[i] = i;
    sort_tok = t;
    qsort(ids, SD_CLIP_VOCAB_SIZE, sizeof *ids, cmp_vocab);
    sd_strbuf_puts(&b, "{");
    int first = 1;
    for (int32_t k = 0; k < SD_CLIP_VOCAB_SIZE; k++) {
        int32_t id = ids[k];
        if (k + 1 < SD_CLIP_VOCAB_SIZE && t->len[id] == t->len[ids[k + 1]] &&
            !memcmp(t->pool + t->off[id], t->pool + t->off[ids[k + 1]], t->len[id]))
            continue;   /* the later id of the same string wins */
        sd_strbuf_puts(&b, first ? "\n  " : ",\n  ");
        first = 0;
        json_str(&b, t->pool + t->off[id], t->len[id]);
        char num[24];
        snprintf(num, sizeof num, ": %d", (int)id);
        sd_strbuf_puts(&b, num);
    }
    sd_strbuf_puts(&b, "\n}\n");
    if ((rc = write_buf(dir, "vocab.json", &b))) goto out;
    /* merges.txt: "#version: 0.2" then the merges in rank order (lines 1..48894 of the file) */
    if ((rc = read_vocab_file(vocab_path, &data, &n))) goto out;
    sd_strbuf_puts(&b, "#version: 0.2\n");
    char *p = memchr(data, '\n', n), *end = data + n;
    p = p ? p + 1 : end;
    for (int i = 0; i < SD_CLIP_NMERGES && p < end; i++) {
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        size_t l = (size_t)(e - p);
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' ')) l--;
        sd_strbuf_add(&b, p, l);
        sd_strbuf_add(&b, "\n", 1);
        p = e + 1;
    }
    if ((rc = write_buf(dir, "merges.txt", &b))) goto out;
    const char *pads = pad == SD_CLIP_PAD_SD1 ? "<|endoftext|>" : "!";
    char tok[3][512];
    snprintf(tok[0], sizeof tok[0], added_token, "<|startoftext|>", "true", "");
    snprintf(tok[1], sizeof tok[1], added_token, "<|endoftext|>", "true", "");
    /* special_tokens_map.json (transformers' save_pretrained layout) */
    sd_strbuf_puts(&b, "{\n  \"bos_token\": ");
    sd_strbuf_puts(&b, tok[0]);
    sd_strbuf_puts(&b, ",\n  \"eos_token\": ");
    sd_strbuf_puts(&b, tok[1]);
    sd_strbuf_puts(&b, ",\n  \"pad_token\": \"");
    sd_strbuf_puts(&b, pads);
    sd_strbuf_puts(&b, "\",\n  \"unk_token\": ");
    sd_strbuf_puts(&b, tok[1]);
    sd_strbuf_puts(&b, "\n}\n");
    if ((rc = write_buf(dir, "special_tokens_map.json", &b))) goto out;
    /* tokenizer_config.json */
    snprintf(tok[0], sizeof tok[0], added_token, "<|startoftext|>", "true", ",\n    \"special\": true");
    snprintf(tok[1], sizeof tok[1], added_token, "<|endoftext|>", "false", ",\n    \"special\": true");
    for (char *q = tok[0]; *q; q++) if (*q == '\n') { memmove(q + 3, q + 1, strlen(q + 1) + 1); q[1] = q[2] = ' '; q += 2; }
    for (char *q = tok[1]; *q; q++) if (*q == '\n') { memmove(q + 3, q + 1, strlen(q + 1) + 1); q[1] = q[2] = ' '; q += 2; }
    sd_strbuf_puts(&b, "{\n  \"add_prefix_space\": false,\n  \"added_tokens_decoder\": {\n    \"49406\": ");
    sd_strbuf_puts(&b, tok[0]);
    sd_strbuf_puts(&b, ",\n    \"49407\": ");
    sd_strbuf_puts(&b, tok[1]);
    sd_strbuf_puts(&b, "\n  },\n  \"bos_token\": \"<|startoftext|>\",\n  \"clean_up_tokenization_spaces\": true,\n"
                       "  \"do_lower_case\": true,\n  \"eos_token\": \"<|endoftext|>\",\n  \"errors\": \"replace\",\n"
                       "  \"model_max_length\": 77,\n  \"pad_token\": \"");
    sd_strbuf_puts(&b, pads);
    sd_strbuf_puts(&b, "\",\n  \"tokenizer_class\": \"CLIPTokenizer\",\n  \"unk_token\": \"<|endoftext|>\"\n}\n");
    rc = write_buf(dir, "tokenizer_config.json", &b);
out:
    free(b.p);
    free(data);
    free(ids);
    sd_clip_tokenizer_free(t);
    return rc;
}
