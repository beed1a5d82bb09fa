/* kohya's SDXL text-encoder output cache (<stem>_te_outputs.npz): the name, round trips through
 * our writer (file and memory), files written by numpy (np.savez, np.savez_compressed; fixtures
 * from tests/golden/gen/make_te_cache_fixtures.py), missing or ill-shaped members. */
#include "base/error.h"
#include "io/npy.h"
#include "io/te_cache.h"
#include "io/zip.h"
#include "test.h"

static const char *data_path(const char *name)
{
    return t_root_pathf("tests/data/te_cache/%s", name);
}

static float fx(size_t k) { return (float)((double)((long)(k % 97) - 48) / 16.0); }

static void check_fixture(const sd_te_cache *c)
{
    T_EQ_INT(c->tokens, 3);
    T_EQ_INT(c->w1, 4);
    T_EQ_INT(c->w2, 5);
    T_EQ_INT(c->pool, 6);
    int ok = 1;
    for (size_t i = 0; i < 12 && c->hidden1; i++) ok &= c->hidden1[i] == fx(i);
    for (size_t i = 0; i < 15 && c->hidden2; i++) ok &= c->hidden2[i] == fx(100 + i);
    for (size_t i = 0; i < 6 && c->pool2; i++) ok &= c->pool2[i] == fx(200 + i);
    T_CHECK(ok && c->hidden1 && c->hidden2 && c->pool2);
}

static void test_name(void)
{
    char buf[256];
    T_EQ_INT(sd_te_cache_name(buf, sizeof buf, "data/img.v1.png"), (int)strlen("data/img.v1_te_outputs.npz"));
    T_EQ_STR(buf, "data/img.v1_te_outputs.npz");
    sd_te_cache_name(buf, sizeof buf, "dir.x/.hidden");
    T_EQ_STR(buf, "dir.x/.hidden_te_outputs.npz");
    sd_te_cache_name(buf, sizeof buf, "noext");
    T_EQ_STR(buf, "noext_te_outputs.npz");
    T_EQ_INT(sd_te_cache_name(buf, 8, "data/img.png"), SD_ERANGE);
}

static void test_numpy_files(void)
{
    static const char *const ok_files[] = { "img_te_outputs.npz", "deflate_te_outputs.npz" };
    for (int i = 0; i < 2; i++) {
        sd_te_cache c;
        int rc = sd_te_cache_read(data_path(ok_files[i]), &c);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        if (!rc) check_fixture(&c);
        sd_te_cache_free(&c);
    }
    sd_te_cache c;
    T_EQ_INT(sd_te_cache_read(data_path("nopool_te_outputs.npz"), &c), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "pool2") != NULL);
    T_EQ_INT(sd_te_cache_read(data_path("absent_te_outputs.npz"), &c), SD_ENOTFOUND);
}

static void test_round_trip(void)
{
    sd_te_cache c = { 3, 4, 5, 6, NULL, NULL, NULL }, d;
    c.hidden1 = malloc(12 * sizeof(float));
    c.hidden2 = malloc(15 * sizeof(float));
    c.pool2 = malloc(6 * sizeof(float));
    for (size_t i = 0; i < 12; i++) c.hidden1[i] = fx(i);
    for (size_t i = 0; i < 15; i++) c.hidden2[i] = fx(100 + i);
    for (size_t i = 0; i < 6; i++) c.pool2[i] = fx(200 + i);
    char path[1024];
    snprintf(path, sizeof path, "%s/te_cache_rt_te_outputs.npz", t_tmpdir());
    int rc = sd_te_cache_write(path, &c);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    rc = sd_te_cache_read(path, &d);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) check_fixture(&d);
    sd_te_cache_free(&d);
    remove(path);
    /* memory: the same bytes as numpy's member layout (STORED .npy members named like savez's) */
    void *buf = NULL;
    size_t n = 0;
    rc = sd_te_cache_write_memory(&c, &buf, &n);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    if (!rc) {
        rc = sd_te_cache_read_memory(buf, n, "mem", &d);
        T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
        if (!rc) check_fixture(&d);
        sd_te_cache_free(&d);
        /* truncated archive */
        T_EQ_INT(sd_te_cache_read_memory(buf, n / 2, "cut", &d), SD_EFORMAT);
    }
    free(buf);
    /* nothing to write */
    sd_te_cache e = c;
    e.pool2 = NULL;
    T_EQ_INT(sd_te_cache_write_memory(&e, &buf, &n), SD_EINVAL);
    sd_te_cache_free(&c);
}

/* hidden_state1 and hidden_state2 with different token counts are refused */
static void test_bad_shapes(void)
{
    sd_zip_writer zw;
    sd_zip_writer_init(&zw, NULL, 0);
    float z[64] = { 0 };
    const int64_t s1[2] = { 3, 4 }, s2[2] = { 2, 5 }, s3[1] = { 6 };
    const int64_t *shapes[3] = { s1, s2, s3 };
    const char *names[3] = { "hidden_state1.npy", "hidden_state2.npy", "pool2.npy" };
    int rc = SD_OK;
    for (int i = 0; i < 3 && !rc; i++) {
        void *npy;
        size_t n;
        rc = sd_npy_encode(SD_NPY_F4, i == 2 ? 1 : 2, shapes[i], z, &npy, &n);
        sd_zip_part p = { npy, n };
        if (!rc) rc = sd_zip_add(&zw, names[i], SD_ZIP_STORE, &p, 1);
        free(npy);
    }
    void *buf = NULL;
    size_t n = 0;
    if (!rc) rc = sd_zip_writer_finish(&zw, &buf, &n);
    T_CHECKF(rc == SD_OK, "%s", sd_errmsg());
    sd_te_cache c;
    if (!rc) T_EQ_INT(sd_te_cache_read_memory(buf, n, "bad", &c), SD_EFORMAT);
    free(buf);
    sd_zip_writer_free(&zw);
}

int main(void)
{
    T_RUN(test_name);
    T_RUN(test_numpy_files);
    T_RUN(test_round_trip);
    T_RUN(test_bad_shapes);
    T_DONE();
}
