#include "test.h"
#include "base/progress.h"

static sd_progress mk(const char *desc, int64_t total, int64_t count)
{
    sd_progress p;
    memset(&p, 0, sizeof p);
    snprintf(p.desc, sizeof p.desc, "%s", desc);
    p.total = total;
    p.count = count;
    p.t_start = 100.0;
    return p;
}

#define HAS(buf, s) T_CHECKF(strstr(buf, s) != NULL, "'%s' lacks '%s'", buf, s)

static void test_known_total(void)
{
    sd_progress p = mk("steps", 1000, 450);
    snprintf(p.postfix, sizeof p.postfix, "avr_loss=0.123");
    char buf[512];
    sd_progress_format(&p, 110.0, 100, buf, sizeof buf);
    HAS(buf, "steps:  45%|");
    HAS(buf, "| 450/1000 [00:10<00:12, 45.00it/s, avr_loss=0.123]");
    T_CHECK(strlen(buf) <= 100);
    /* bar: 45% of its width filled with '#', rest spaces */
    const char *b0 = strchr(buf, '|'), *b1 = b0 ? strchr(b0 + 1, '|') : NULL;
    T_CHECK(b0 && b1);
    if (b0 && b1) {
        int w = (int)(b1 - b0 - 1), fill = 0;
        for (const char *c = b0 + 1; c < b1; c++) fill += *c == '#';
        T_EQ_INT(fill, (int)(0.45 * w));
        T_CHECK(w >= 1 && w <= 60);
    }
    /* no postfix: no trailing comma */
    p.postfix[0] = 0;
    sd_progress_format(&p, 110.0, 100, buf, sizeof buf);
    HAS(buf, "[00:10<00:12, 45.00it/s]");
}

static void test_rates_times(void)
{
    char buf[512];
    sd_progress p = mk("", 10, 2);
    sd_progress_format(&p, 104.0, 80, buf, sizeof buf);   /* 0.5 it/s → shown as s/it */
    HAS(buf, " 20%|");
    T_CHECK(buf[0] == ' ');   /* no "desc: " */
    HAS(buf, "2.00s/it");
    HAS(buf, "[00:04<00:16,");
    p = mk("x", 100, 100);
    sd_progress_format(&p, 100.0 + 3725, 80, buf, sizeof buf);   /* 1:02:05 elapsed, done */
    HAS(buf, "100%|");
    HAS(buf, "[1:02:05<00:00,");
    p = mk("x", 100, 150);   /* over-count clamps the bar */
    sd_progress_format(&p, 101.0, 80, buf, sizeof buf);
    HAS(buf, "150/100");
    p = mk("x", 100, 0);     /* no rate yet: ETA unknown */
    sd_progress_format(&p, 100.0, 80, buf, sizeof buf);
    HAS(buf, "  0%|");
    HAS(buf, "0/100 [00:00<?, 0.00it/s]");
}

static void test_unknown_total(void)
{
    char buf[512];
    sd_progress p = mk("records", 0, 1234);
    snprintf(p.postfix, sizeof p.postfix, "skipped=2");
    sd_progress_format(&p, 110.0, 100, buf, sizeof buf);
    T_EQ_STR(buf, "records: 1234 [00:10, 123.40it/s, skipped=2]");
    T_CHECK(strchr(buf, '%') == NULL);
}

static void test_small_buffers(void)
{
    sd_progress p = mk("a long description for the bar", 1000, 450);
    snprintf(p.postfix, sizeof p.postfix, "avr_loss=0.123");
    char buf[16];
    memset(buf, 'Z', sizeof buf);
    sd_progress_format(&p, 110.0, 100, buf, sizeof buf);
    T_CHECK(memchr(buf, 0, sizeof buf) != NULL);
    char wide[512];
    sd_progress_format(&p, 110.0, 20, wide, sizeof wide);   /* narrow terminal: still well-formed */
    HAS(wide, "450/1000");
}

static void test_disabled(void)
{
    setenv("SD_PROGRESS", "0", 1);
    sd_progress p;
    sd_progress_begin(&p, "d", 10);
    T_EQ_INT(p.enabled, 0);
    sd_progress_update(&p, 3);
    sd_progress_update(&p, 4);
    T_EQ_INT(p.count, 7);
    sd_progress_postfix(&p, "loss=%.3f", 0.5);
    T_EQ_STR(p.postfix, "loss=0.500");
    sd_progress_end(&p);
    sd_progress_clear_line();
}

int main(void)
{
    T_RUN(test_known_total);
    T_RUN(test_rates_times);
    T_RUN(test_unknown_total);
    T_RUN(test_small_buffers);
    T_RUN(test_disabled);
    T_DONE();
}
