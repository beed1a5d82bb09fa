/* Atomic writes, bounded whole-file reads, mkdir -p. */
#include "base/error.h"
#include "base/fileio.h"
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

/* Number of entries in dir whose name contains `part`. */
static int count_entries(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

static int file_equals(const char *path, const char *want)
{
    char *d;
    size_t n;
    if (sd_read_file(path, 0, &d, &n)) return 0;
    int ok = n == strlen(want) && memcmp(d, want, n) == 0;
    free(d);
    return ok;
}

static void test_atomic_write(void)
{
    const char *dir = t_path("aw");
    T_EQ_INT(sd_mkdirs(dir), SD_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    T_EQ_INT(sd_write_file_atomic(path, "hello\n", 6), SD_OK);
    T_CHECK(file_equals(path, "hello\n"));
    T_EQ_INT(count_entries(dir, ".tmp."), 0);
    /* overwrite */
    T_EQ_INT(sd_write_file_atomic(path, "second", 6), SD_OK);
    T_CHECK(file_equals(path, "second"));
    /* empty */
    T_EQ_INT(sd_write_file_atomic(path, NULL, 0), SD_OK);
    T_CHECK(file_equals(path, ""));
    T_EQ_INT(count_entries(dir, ".tmp."), 0);
    /* mode follows the umask like fopen, not mkstemp's 0600 */
    mode_t old = umask(022);
    T_EQ_INT(sd_write_file_atomic(path, "m", 1), SD_OK);
    struct stat st;
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_mode & 0777, 0644);
    umask(old);
}

static void test_atomic_stream_and_abort(void)
{
    const char *dir = t_path("aw2");
    T_EQ_INT(sd_mkdirs(dir), SD_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/data.bin", dir);
    T_EQ_INT(sd_write_file_atomic(path, "original", 8), SD_OK);

    sd_atomic_file af;
    T_EQ_INT(sd_atomic_open(&af, path), SD_OK);
    T_CHECK(af.fp != NULL);
    T_CHECK(strstr(af.tmp, "/.data.bin.tmp.") != NULL);
    fprintf(af.fp, "partial");
    fflush(af.fp);
    /* while open, the final name still has the old content and a temp exists */
    T_CHECK(file_equals(path, "original"));
    T_EQ_INT(count_entries(dir, ".tmp."), 1);
    sd_atomic_abort(&af);
    T_CHECK(af.fp == NULL && af.tmp == NULL && af.path == NULL);
    T_CHECK(file_equals(path, "original"));
    T_EQ_INT(count_entries(dir, ".tmp."), 0);
    sd_atomic_abort(&af); /* twice is harmless */

    /* streaming write + commit */
    T_EQ_INT(sd_atomic_open(&af, path), SD_OK);
    for (int i = 0; i < 1000; i++) fprintf(af.fp, "%04d", i);
    T_EQ_INT(sd_atomic_commit(&af), SD_OK);
    T_CHECK(af.fp == NULL && af.tmp == NULL);
    char *d;
    size_t n;
    T_EQ_INT(sd_read_file(path, 0, &d, &n), SD_OK);
    T_EQ_INT(n, 4000);
    T_CHECK(n == 4000 && memcmp(d + 3996, "0999", 4) == 0);
    free(d);
    /* commit twice: state error, nothing touched */
    T_EQ_INT(sd_atomic_commit(&af), SD_ESTATE);
    sd_atomic_abort(&af);

    /* a relative name without a directory part */
    char cwd[600];
    T_CHECK(getcwd(cwd, sizeof cwd) != NULL);
    T_EQ_INT(chdir(dir), 0);
    T_EQ_INT(sd_write_file_atomic("rel.txt", "r", 1), SD_OK);
    T_CHECK(file_equals("rel.txt", "r"));
    T_EQ_INT(count_entries(".", ".tmp."), 0);
    T_EQ_INT(chdir(cwd), 0);
}

static void test_atomic_errors(void)
{
    const char *dir = t_path("aw3");
    T_EQ_INT(sd_mkdirs(dir), SD_OK);
    char path[600];
    sd_atomic_file af;
    /* missing directory */
    snprintf(path, sizeof path, "%s/nodir/x.bin", dir);
    T_EQ_INT(sd_atomic_open(&af, path), SD_ENOTFOUND);
    T_CHECK(strstr(sd_errmsg(), "nodir/x.bin: No such file or directory") != NULL);
    T_CHECK(af.fp == NULL && af.tmp == NULL && af.path == NULL);
    sd_atomic_abort(&af);
    T_EQ_INT(sd_write_file_atomic(path, "x", 1), SD_ENOTFOUND);
    /* empty path and a path naming a directory */
    T_EQ_INT(sd_atomic_open(&af, ""), SD_EINVAL);
    snprintf(path, sizeof path, "%s/", dir);
    T_EQ_INT(sd_atomic_open(&af, path), SD_EINVAL);
    T_CHECK(strstr(sd_errmsg(), "Is a directory") != NULL);
    /* rename over an existing directory fails at commit; the temp is removed */
    snprintf(path, sizeof path, "%s/sub", dir);
    T_EQ_INT(sd_mkdirs(path), SD_OK);
    T_EQ_INT(sd_atomic_open(&af, path), SD_OK);
    fputs("data", af.fp);
    T_EQ_INT(sd_atomic_commit(&af), SD_EIO);
    T_CHECK(strstr(sd_errmsg(), "sub: Is a directory") != NULL);
    T_EQ_INT(count_entries(dir, ".tmp."), 0);
    sd_atomic_abort(&af); /* safe after a failed commit */
    /* a stream error during writing makes commit fail and keeps the old file */
    snprintf(path, sizeof path, "%s/keep.txt", dir);
    T_EQ_INT(sd_write_file_atomic(path, "keep", 4), SD_OK);
    T_EQ_INT(sd_atomic_open(&af, path), SD_OK);
    fputs("new", af.fp);
    char c;
    T_CHECK(fread(&c, 1, 1, af.fp) == 0); /* reading a write-only stream sets the error flag */
    T_CHECK(ferror(af.fp));
    T_EQ_INT(sd_atomic_commit(&af), SD_EIO);
    T_CHECK(file_equals(path, "keep"));
    T_EQ_INT(count_entries(dir, ".tmp."), 0);
}

static void test_read_file(void)
{
    const char *p = t_path("rf.bin");
    char data[10000];
    for (int i = 0; i < 10000; i++) data[i] = (char)(i % 251);
    T_EQ_INT(t_write_file(p, data, sizeof data), 0);
    char *d;
    size_t n;
    T_EQ_INT(sd_read_file(p, 0, &d, &n), SD_OK);
    T_EQ_INT(n, 10000);
    T_CHECK(n == 10000 && memcmp(d, data, n) == 0 && d[n] == 0);
    free(d);
    /* bound exactly at the size passes, one below fails */
    T_EQ_INT(sd_read_file(p, 10000, &d, &n), SD_OK);
    free(d);
    T_EQ_INT(sd_read_file(p, 9999, &d, &n), SD_ERANGE);
    T_CHECK(d == NULL && n == 0);
    T_CHECK(strstr(sd_errmsg(), "rf.bin: file is larger than 9999 bytes") != NULL);
    /* empty file */
    p = t_path("rf_empty.bin");
    T_EQ_INT(t_write_file(p, "", 0), 0);
    T_EQ_INT(sd_read_file(p, 0, &d, &n), SD_OK);
    T_CHECK(n == 0 && d && d[0] == 0);
    free(d);
    /* files whose stat size is 0 but which have content (procfs) */
    T_EQ_INT(sd_read_file("/proc/self/status", 0, &d, &n), SD_OK);
    T_CHECK(n > 0 && strstr(d, "Name:") != NULL);
    free(d);
    T_EQ_INT(sd_read_file("/proc/self/status", 10, &d, &n), SD_ERANGE);
    /* missing, directory */
    p = t_path("rf_missing.bin");
    T_EQ_INT(sd_read_file(p, 0, &d, &n), SD_ENOTFOUND);
    T_CHECK(strstr(sd_errmsg(), "rf_missing.bin: No such file or directory") != NULL);
    T_EQ_INT(sd_read_file(t_tmpdir(), 0, &d, &n), SD_EIO);
    T_CHECK(strstr(sd_errmsg(), ": Is a directory") != NULL);
}

static void test_mkdirs(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s/a/b//c/d/", t_tmpdir());
    T_EQ_INT(sd_mkdirs(p), SD_OK);
    struct stat st;
    snprintf(p, sizeof p, "%s/a/b/c/d", t_tmpdir());
    T_CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
    T_EQ_INT(sd_mkdirs(p), SD_OK); /* exists */
    T_EQ_INT(sd_mkdirs("/"), SD_OK);
    T_EQ_INT(sd_mkdirs("."), SD_OK);
    T_EQ_INT(sd_mkdirs(""), SD_EINVAL);
    /* a component that is a file */
    snprintf(p, sizeof p, "%s/a/file", t_tmpdir());
    T_EQ_INT(t_write_file(p, "x", 1), 0);
    snprintf(p, sizeof p, "%s/a/file/sub", t_tmpdir());
    T_EQ_INT(sd_mkdirs(p), SD_EIO);
    T_CHECK(strstr(sd_errmsg(), "a/file: Not a directory") != NULL);
    snprintf(p, sizeof p, "%s/a/file", t_tmpdir());
    T_EQ_INT(sd_mkdirs(p), SD_EIO);
    /* relative */
    char cwd[600];
    T_CHECK(getcwd(cwd, sizeof cwd) != NULL);
    T_EQ_INT(chdir(t_tmpdir()), 0);
    T_EQ_INT(sd_mkdirs("rel/x/y"), SD_OK);
    T_CHECK(stat("rel/x/y", &st) == 0 && S_ISDIR(st.st_mode));
    T_EQ_INT(chdir(cwd), 0);
    /* permission denied (not as root) */
    if (geteuid() != 0) {
        T_EQ_INT(sd_mkdirs("/proc/sd-no-such/x"), SD_ENOTFOUND);
    }
}

/* Non-durable commits (batch writers): still atomic renames with the full content, no temp
 * file left behind; sd_fileio_sync_all flushes the file system once. */
static void test_non_durable(void)
{
    T_CHECK(sd_fileio_durable() == 1);
    sd_fileio_set_durable(0);
    T_CHECK(sd_fileio_durable() == 0);
    char name[64];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "nd_%02d.bin", i);
        char data[32];
        snprintf(data, sizeof data, "payload %d", i);
        T_EQ_INT(sd_write_file_atomic(t_path(name), data, strlen(data)), SD_OK);
        char *back = NULL;
        size_t n = 0;
        T_EQ_INT(sd_read_file(t_path(name), 0, &back, &n), SD_OK);
        T_CHECK(back && n == strlen(data) && !memcmp(back, data, n));
        free(back);
    }
    T_EQ_INT(sd_fileio_sync_all(t_tmpdir()), SD_OK);
    T_CHECK(sd_fileio_sync_all("/nonexistent/dir") == SD_ENOTFOUND);
    sd_fileio_set_durable(1);
    /* no temp files left */
    int temps = 0;
    DIR *d = opendir(t_tmpdir());
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) temps++;
    if (d) closedir(d);
    T_EQ_INT(temps, 0);
}

int main(void)
{
    T_RUN(test_non_durable);
    T_RUN(test_atomic_write);
    T_RUN(test_atomic_stream_and_abort);
    T_RUN(test_atomic_errors);
    T_RUN(test_read_file);
    T_RUN(test_mkdirs);
    T_DONE();
}
