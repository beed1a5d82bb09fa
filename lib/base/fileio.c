/* File helpers: atomic writes (mkstemp next to the target, fsync, rename, fsync of the
 * directory), bounded whole-file reads, mkdir -p.
 *
 * Error codes: a missing file or directory gives SD_ENOTFOUND, every other system failure
 * SD_EIO, an over-long file SD_ERANGE; the message is always "path: strerror(errno)". */
#include "base/fileio.h"

#include <stdatomic.h>

#include "base/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int errno_code(int e)
{
    return e == ENOENT ? SD_ENOTFOUND : e == ENOMEM ? SD_ENOMEM : SD_EIO;
}

static int sys_err(const char *path)
{
    int e = errno;
    return sd_err(errno_code(e), "%s: %s", path, strerror(e));
}

/* The process umask without changing it (umask() itself is racy with other threads creating
 * files): Linux reports it in /proc/self/status since 4.7. Falls back to 022. */
static mode_t current_umask(void)
{
    mode_t m = 022;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return m;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "Umask:", 6) == 0) {
            char *end;
            unsigned long v = strtoul(line + 6, &end, 8);
            if (end != line + 6) m = (mode_t)(v & 0777);
            break;
        }
    }
    fclose(f);
    return m;
}

/* Directory part of path ("." when there is none) and the base name; the caller frees *dir. */
static int split_path(const char *path, char **dir, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        *dir = strdup(".");
        *base = path;
    } else {
        size_t n = (size_t)(slash - path);
        if (n == 0) n = 1; /* "/file" -> "/" */
        *dir = strndup(path, n);
        *base = slash + 1;
    }
    if (!*dir) return sd_err(SD_ENOMEM, "%s: out of memory", path);
    return SD_OK;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sys_err(dir);
    /* Some file systems do not support fsync on directories; that is not a failure. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP && errno != EROFS) {
        int e = errno;
        close(fd);
        errno = e;
        return sys_err(dir);
    }
    close(fd);
    return SD_OK;
}

static void af_clear(sd_atomic_file *af)
{
    free(af->path);
    free(af->tmp);
    af->fp = NULL;
    af->path = NULL;
    af->tmp = NULL;
}

int sd_atomic_open(sd_atomic_file *af, const char *path)
{
    af->fp = NULL;
    af->path = af->tmp = NULL;
    if (!path || !*path) return sd_err(SD_EINVAL, "atomic write: empty path");
    char *dir;
    const char *base;
    int rc = split_path(path, &dir, &base);
    if (rc) return rc;
    if (!*base) {
        free(dir);
        return sd_err(SD_EINVAL, "%s: %s", path, strerror(EISDIR));
    }
    size_t n = strlen(dir) + strlen(base) + 16;
    af->tmp = malloc(n);
    af->path = strdup(path);
    if (!af->tmp || !af->path) {
        free(dir);
        af_clear(af);
        return sd_err(SD_ENOMEM, "%s: out of memory", path);
    }
    snprintf(af->tmp, n, "%s/.%s.tmp.XXXXXX", dir, base);
    free(dir);
    int fd = mkostemp(af->tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = sys_err(path);
        af_clear(af);
        return rc;
    }
    /* mkstemp creates mode 0600; give the file the mode a plain fopen() would. */
    if (fchmod(fd, 0666 & ~current_umask()) != 0) {
        rc = sys_err(af->tmp);
        close(fd);
        unlink(af->tmp);
        af_clear(af);
        return rc;
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        rc = sys_err(af->tmp);
        close(fd);
        unlink(af->tmp);
        af_clear(af);
        return rc;
    }
    return SD_OK;
}

static _Atomic int durable = 1;

void sd_fileio_set_durable(int on) { durable = on != 0; }
int sd_fileio_durable(void) { return durable; }

int sd_atomic_commit(sd_atomic_file *af)
{
    if (!af->fp || !af->tmp || !af->path)
        return sd_err(SD_ESTATE, "atomic write: commit without an open file");
    int rc = SD_OK;
    if (ferror(af->fp)) {
        errno = EIO;
        rc = sys_err(af->path);
    } else if (fflush(af->fp) != 0 || (durable && fsync(fileno(af->fp)) != 0)) {
        rc = sys_err(af->path);
    }
    int e = errno;
    if (fclose(af->fp) != 0 && rc == SD_OK) rc = sys_err(af->path);
    errno = e;
    af->fp = NULL;
    if (rc == SD_OK && rename(af->tmp, af->path) != 0) rc = sys_err(af->path);
    if (rc != SD_OK) {
        unlink(af->tmp);
        af_clear(af);
        return rc;
    }
    char *dir;
    const char *base;
    rc = split_path(af->path, &dir, &base);
    if (rc == SD_OK) {
        if (durable) rc = fsync_dir(dir);
        free(dir);
    }
    af_clear(af);
    return rc;
}

void sd_atomic_abort(sd_atomic_file *af)
{
    if (af->fp) fclose(af->fp);
    if (af->tmp) unlink(af->tmp);
    af_clear(af);
}

int sd_write_file_atomic(const char *path, const void *data, size_t n)
{
    sd_atomic_file af;
    int rc = sd_atomic_open(&af, path);
    if (rc) return rc;
    if (n && fwrite(data, 1, n, af.fp) != n) {
        rc = sys_err(path);
        sd_atomic_abort(&af);
        return rc;
    }
    return sd_atomic_commit(&af);
}

int sd_read_file(const char *path, size_t max, char **data, size_t *n)
{
    *data = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_err(path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = sys_err(path);
        close(fd);
        return rc;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        errno = EISDIR;
        return sys_err(path);
    }
    size_t cap = 4096;
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
        if (max && (uint64_t)st.st_size > max) {
            close(fd);
            return sd_err(SD_ERANGE, "%s: file is larger than %zu bytes", path, max);
        }
        if ((uint64_t)st.st_size >= SIZE_MAX) {
            close(fd);
            return sd_err(SD_ERANGE, "%s: file too large", path);
        }
        cap = (size_t)st.st_size + 1; /* +1 so EOF is seen without a realloc */
    }
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return sd_err(SD_ENOMEM, "%s: out of memory", path);
    }
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            if (max && len > max) break;
            size_t ncap = cap * 2;
            if (ncap < cap) {
                free(buf);
                close(fd);
                return sd_err(SD_ERANGE, "%s: file too large", path);
            }
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return sd_err(SD_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR) continue;
            int rc = sys_err(path);
            free(buf);
            close(fd);
            return rc;
        }
        if (r == 0) break;
        len += (size_t)r;
        if (max && len > max) break;
    }
    close(fd);
    if (max && len > max) {
        free(buf);
        return sd_err(SD_ERANGE, "%s: file is larger than %zu bytes", path, max);
    }
    buf[len] = 0;
    *data = buf;
    *n = len;
    return SD_OK;
}

int sd_mkdirs(const char *dir)
{
    if (!dir || !*dir) return sd_err(SD_EINVAL, "mkdir: empty path");
    char *p = strdup(dir);
    if (!p) return sd_err(SD_ENOMEM, "%s: out of memory", dir);
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/') p[--len] = 0;
    /* Create each prefix that ends before a '/', then the whole path. */
    for (size_t i = 1; i <= len; i++) {
        if (i < len && p[i] != '/') continue;
        char save = p[i];
        p[i] = 0;
        if (p[i - 1] != '/' && mkdir(p, 0777) != 0) {
            int e = errno;
            struct stat st;
            if (e != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
                if (e == EEXIST) e = ENOTDIR;
                int rc = sd_err(errno_code(e), "%s: %s", p, strerror(e));
                free(p);
                return rc;
            }
        }
        p[i] = save;
    }
    free(p);
    return SD_OK;
}

int sd_fileio_sync_all(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_err(path);
    int rc = syncfs(fd) == 0 ? SD_OK : sys_err(path);
    close(fd);
    return rc;
}
