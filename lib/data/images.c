/* Image discovery and sidecar captions; see images.h. */
#include "data/images.h"

#include "base/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const exts[] = {".png", ".jpg", ".jpeg", ".webp", ".bmp"};

int sd_img_is_image_name(const char *name, unsigned flags)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) {
        /* ".png" alone is a hidden file with no stem: Python's glob "*.png" skips it, but
         * pathlib matches it; treat it as an image only with SD_IMG_HIDDEN */
        if (!dot || !(flags & SD_IMG_HIDDEN)) return 0;
    }
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        if (flags & SD_IMG_ANY_CASE) {
            if (!strcasecmp(dot, exts[i])) return 1;
            continue;
        }
        if (!strcmp(dot, exts[i])) return 1;
        size_t l = strlen(exts[i]);
        if (strlen(dot) != l) continue;
        int up = 1;
        for (size_t k = 0; k < l && up; k++) up = dot[k] == (exts[i][k] >= 'a' && exts[i][k] <= 'z' ? exts[i][k] - 32 : exts[i][k]);
        if (up) return 1;
    }
    return 0;
}

int sd_path_list_add(sd_path_list *l, const char *path)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char **p = realloc(l->paths, nc * sizeof *p);
        if (!p) return sd_err(SD_ENOMEM, "out of memory");
        l->paths = p;
        l->cap = nc;
    }
    l->paths[l->n] = strdup(path);
    if (!l->paths[l->n]) return sd_err(SD_ENOMEM, "out of memory");
    l->n++;
    return SD_OK;
}

void sd_path_list_free(sd_path_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    memset(l, 0, sizeof *l);
}

/* component-wise comparison ("a/b" < "a-c": the component "a" sorts before "a-c") */
static int cmp_path(const void *pa, const void *pb)
{
    const unsigned char *a = *(const unsigned char *const *)pa, *b = *(const unsigned char *const *)pb;
    for (;;) {
        unsigned ca = *a == '/' ? 0 : *a, cb = *b == '/' ? 0 : *b;
        if (!*a && !*b) return 0;
        if (!*a) return -1;
        if (!*b) return 1;
        if (ca != cb) {
            /* the end of a component sorts before any character */
            return ca < cb ? -1 : 1;
        }
        a++;
        b++;
    }
}

void sd_path_list_sort(sd_path_list *l)
{
    if (l->n > 1) qsort(l->paths, l->n, sizeof *l->paths, cmp_path);
}

static char *join(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    int sep = dl && dir[dl - 1] != '/';
    char *p = malloc(dl + nl + 2);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    if (sep) p[dl++] = '/';
    memcpy(p + dl, name, nl + 1);
    return p;
}

static int list_rec(const char *dir, unsigned flags, sd_path_list *out, int top, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (!top) return SD_OK;
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", dir, strerror(e));
    }
    struct dirent *de;
    int rc = SD_OK;
    while (rc == SD_OK && (de = readdir(d))) {
        const char *nm = de->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, "..")) continue;
        if (nm[0] == '.' && !(flags & SD_IMG_HIDDEN)) continue;
        int is_img = sd_img_is_image_name(nm, flags);
        int want_dir = (flags & SD_IMG_RECURSIVE) && depth < 64;
        if (!is_img && !want_dir) continue;
        char *p = join(dir, nm);
        if (!p) { rc = sd_err(SD_ENOMEM, "out of memory"); break; }
        unsigned char type = de->d_type;
        struct stat st;
        if (type == DT_UNKNOWN || type == DT_LNK) {
            if (stat(p, &st) == 0) type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
            if (de->d_type == DT_LNK && type == DT_DIR) type = DT_UNKNOWN;   /* no symlinked dirs */
        }
        if (type == DT_DIR) {
            if (want_dir) rc = list_rec(p, flags, out, 0, depth + 1);
        } else if (is_img && type == DT_REG) {
            rc = sd_path_list_add(out, p);
        }
        free(p);
    }
    closedir(d);
    return rc;
}

int sd_img_list(const char *dir, unsigned flags, sd_path_list *out)
{
    size_t first = out->n;
    struct stat st;
    if (stat(dir, &st) < 0) {
        int e = errno;
        return sd_err(e == ENOENT ? SD_ENOTFOUND : SD_EIO, "%s: %s", dir, strerror(e));
    }
    if (!S_ISDIR(st.st_mode)) return sd_err(SD_EINVAL, "%s: not a directory", dir);
    int rc = list_rec(dir, flags, out, 1, 0);
    if (rc < 0) return rc;
    if (out->n - first > 1) qsort(out->paths + first, out->n - first, sizeof *out->paths, cmp_path);
    return SD_OK;
}

char *sd_img_stem(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    return strndup(b, n);
}

char *sd_img_sidecar_path(const char *image, const char *ext)
{
    const char *b = strrchr(image, '/');
    b = b ? b + 1 : image;
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot != b ? (size_t)(dot - image) : strlen(image);
    size_t el = strlen(ext);
    char *p = malloc(n + el + 1);
    if (!p) return NULL;
    memcpy(p, image, n);
    memcpy(p + n, ext, el + 1);
    return p;
}

/* ---- UTF-8, Python whitespace ---- */

static size_t utf8_bad(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return i;
        if (i + len > n) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

/* Python str.isspace() code point at s (length in *len), or 0. */
static int py_space_at(const unsigned char *s, size_t n, size_t *len)
{
    unsigned c = s[0];
    *len = 1;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
    if (c < 0x80) return 0;
    uint32_t cp;
    size_t l = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (l == 1 || l > n) return 0;
    cp = c & (0x3F >> (l - 1));
    for (size_t k = 1; k < l; k++) cp = (cp << 6) | (s[k] & 0x3F);
    *len = l;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

size_t sd_py_strip(const char *s, size_t n, size_t *start)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, len;
    while (a < n && py_space_at(u + a, n - a, &len)) a += len;
    size_t e = n;
    while (e > a) {
        /* step back one code point */
        size_t b = e - 1;
        while (b > a && (u[b] & 0xC0) == 0x80) b--;
        if (!py_space_at(u + b, e - b, &len) || b + len != e) break;
        e = b;
    }
    *start = a;
    return e - a;
}

int sd_sidecar_read(const char *path, int mode, char **text)
{
    *text = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        return sd_err(SD_EIO, "%s: %s", path, strerror(errno));
    }
    struct stat st0;
    if (fstat(fd, &st0) == 0 && !S_ISREG(st0.st_mode)) { close(fd); return 0; }   /* os.path.isfile */
    char stackbuf[4096];
    char *buf = stackbuf;
    size_t cap = sizeof stackbuf, n = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= ((size_t)64 << 20)) { if (buf != stackbuf) free(buf); close(fd); return sd_err(SD_ERANGE, "%s: larger than 64 MiB", path); }
            size_t nc = cap * 2;
            char *nb = buf == stackbuf ? malloc(nc) : realloc(buf, nc);
            if (!nb) { if (buf != stackbuf) free(buf); close(fd); return sd_err(SD_ENOMEM, "out of memory"); }
            if (buf == stackbuf) memcpy(nb, stackbuf, n);
            buf = nb;
            cap = nc;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            if (buf != stackbuf) free(buf);
            close(fd);
            return sd_err(SD_EIO, "%s: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
        /* a short read of a regular file is its end: saves the read() that returns 0 */
        if ((size_t)r < cap - (n - (size_t)r) && S_ISREG(st0.st_mode) && (off_t)n >= st0.st_size) break;
    }
    close(fd);
    int rc = SD_OK;
    size_t bad = utf8_bad((const unsigned char *)buf, n);
    if (bad < n) rc = sd_err(SD_EFORMAT, "%s: not valid UTF-8 (byte 0x%02x at offset %zu)", path, (unsigned char)buf[bad], bad);
    else if (memchr(buf, 0, n)) rc = sd_err(SD_EFORMAT, "%s: contains a NUL byte", path);
    else if (n == 0 && mode != SD_SIDECAR_STRIP) rc = sd_err(SD_EFORMAT, "%s: caption file is empty", path);
    char *out = NULL;
    if (rc == SD_OK) {
        out = malloc(n + 1);
        if (!out) rc = sd_err(SD_ENOMEM, "out of memory");
    }
    if (rc == SD_OK) {
        size_t w = 0, st, l;
        if (mode == SD_SIDECAR_STRIP) {
            l = sd_py_strip(buf, n, &st);
            memcpy(out, buf + st, l);
            w = l;
        } else {
            /* lines end at \n, \r\n or \r (universal newlines) */
            size_t i = 0;
            int first = 1;
            while (i < n) {
                size_t j = i;
                while (j < n && buf[j] != '\n' && buf[j] != '\r') j++;
                l = sd_py_strip(buf + i, j - i, &st);
                if (mode == SD_SIDECAR_FIRST_LINE) {
                    memcpy(out, buf + i + st, l);
                    w = l;
                    break;
                }
                if (l) {
                    if (!first) out[w++] = '\n';
                    memcpy(out + w, buf + i + st, l);
                    w += l;
                    first = 0;
                }
                if (j < n && buf[j] == '\r' && j + 1 < n && buf[j + 1] == '\n') j++;
                i = j + 1;
            }
        }
        out[w] = 0;
    }
    if (buf != stackbuf) free(buf);
    if (rc < 0) { free(out); return rc; }
    *text = out;
    return 1;
}

int sd_db_caption(const char *image, const char *ext, int wildcard, char **caption, char **used)
{
    *caption = NULL;
    *used = NULL;
    int mode = wildcard ? SD_SIDECAR_WILDCARD : SD_SIDECAR_FIRST_LINE;
    char *p = sd_img_sidecar_path(image, ext);
    if (!p) return sd_err(SD_ENOMEM, "out of memory");
    int rc = sd_sidecar_read(p, mode, caption);
    if (rc != 0) {
        if (rc == 1) *used = p; else free(p);
        return rc;
    }
    free(p);
    /* face-crop naming: the reference splits the whole path without its extension (directory
     * included) at '_' and, with 5 or more fields, drops the last four */
    char *base = sd_img_sidecar_path(image, "");
    if (!base) return sd_err(SD_ENOMEM, "out of memory");
    int fields = 1;
    for (const char *q = base; *q; q++) fields += *q == '_';
    if (fields < 5) { free(base); return 0; }
    char *cut = base + strlen(base);
    for (int k = 0; k < 4; k++) {
        while (cut > base && *--cut != '_') {}
    }
    *cut = 0;
    p = malloc(strlen(base) + strlen(ext) + 1);
    if (!p) { free(base); return sd_err(SD_ENOMEM, "out of memory"); }
    strcpy(p, base);
    strcat(p, ext);
    free(base);
    rc = sd_sidecar_read(p, mode, caption);
    if (rc == 1) *used = p; else free(p);
    return rc;
}
