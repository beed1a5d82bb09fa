/* selected_tags.csv reader (io/tags_csv.h) and kohya's WD14 tag selection (data/wdtags.h). */
#include "base/error.h"
#include "data/wdtags.h"
#include "io/tags_csv.h"
#include "test.h"

#define P(s, t) sd_tags_csv_parse(s, strlen(s), "t.csv", t)

static void csv_quoted_fields(void)
{
    sd_tag_table t;
    const char *s = "\xef\xbb\xbftag_id,name,category,count\r\n"
                    "1,general,9,5\r\n"
                    "\n"
                    "2,\"a, b\",0,1\n"
                    "3,\"say \"\"hi\"\"\",0,1\n"
                    "4,\"multi\nline\",4,1\r"
                    "5,>_<,0,\n"
                    "6,x\"y,0";
    T_EQ_INT(P(s, &t), 0);
    T_EQ_INT(t.n, 6);
    if (t.n == 6) {
        T_EQ_STR(t.name[0], "general");
        T_EQ_INT(t.category[0], 9);
        T_EQ_STR(t.name[1], "a, b");
        T_EQ_STR(t.name[2], "say \"hi\"");
        T_EQ_STR(t.name[3], "multi\nline");
        T_EQ_INT(t.category[3], 4);
        T_EQ_STR(t.name[4], ">_<");
        T_EQ_STR(t.name[5], "x\"y");
    }
    sd_tag_table_free(&t);
}

static void csv_errors(void)
{
    static const struct { const char *s, *msg; } bad[] = {
        {"", "empty file"},
        {"id,name,category\n1,a,0\n", "header"},
        {"tag_id,name,category\n", "no tag rows"},
        {"tag_id,name,category\n1,a\n", "t.csv:2: 2 fields"},
        {"tag_id,name,category\n1,a,x\n", "t.csv:2: category 'x'"},
        {"tag_id,name,category\n1,,0\n", "empty tag name"},
        {"tag_id,name,category\n1,\"a\nb,0\n", "t.csv:2: unterminated"},
        {"tag_id,name,category\n1,\"a\"b,0\n", "after a closing quote"},
        {"tag_id,name,category\n1,a\xff,0\n", "t.csv:2: not valid UTF-8"},
        {"tag_id,name,category\n1,a\xc0\xaf,0\n", "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sd_tag_table t;
        T_EQ_INT(P(bad[i].s, &t), SD_EFORMAT);
        T_CHECKF(strstr(sd_errmsg(), bad[i].msg) != NULL, "case %zu: %s", i, sd_errmsg());
        T_EQ_INT(t.n, 0);
    }
    sd_tag_table t;
    char nul[] = "tag_id,name,category\n1,a\0b,0\n";
    T_EQ_INT(sd_tags_csv_parse(nul, sizeof nul - 1, "t.csv", &t), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "NUL") != NULL);
    T_EQ_INT(sd_tags_csv_load(t_path("missing.csv"), &t), SD_ENOTFOUND);
}

static sd_tag_table table6(void)
{
    sd_tag_table t;
    const char *s = "tag_id,name,category,count\n"
                    "1,general,9,0\n2,sensitive,9,0\n3,questionable,9,0\n4,explicit,9,0\n"
                    "5,1girl,0,0\n6,long_hair,0,0\n7,^_^,0,0\n8,1boy,0,0\n"
                    "9,mash_kyrielight_(swimsuit)_(fate),4,0\n10,c_c,4,0\n11,hatsune_miku,4,0\n";
    if (P(s, &t)) memset(&t, 0, sizeof t);
    return t;
}

static char *run(const sd_tag_table *t, sd_wdtags_opts *o, const float *p)
{
    sd_wdtags w;
    if (sd_wdtags_init(&w, t, o)) return strdup(sd_errmsg());
    const char **l;
    int n;
    char *s = NULL;
    if (!sd_wdtags_select(&w, p, &l, &n)) {
        s = sd_wdtags_join(&w, l, n);
        free(l);
    }
    sd_wdtags_free(&w);
    return s;
}

#define EXPECT(o, str) do { char *s_ = run(&t, &(o), p); T_EQ_STR(s_, str); free(s_); } while (0)

static void wdtags_selection(void)
{
    sd_tag_table t = table6();
    T_EQ_INT(t.n, 11);
    /* ratings            general                    characters */
    float p[11] = {0.1f, 0.6f, 0.6f, 0.2f, 0.9f, 0.36f, 0.5f, 0.35f, 0.8f, 0.4f, 0.9f};
    /* p >= t compared in double, as numpy compares a float32 with a Python float: 0.35f < 0.35, so
     * 1boy (0.35f) is out at 0.35 and ^_^ (0.5f) is in at 0.5 */
    sd_wdtags_opts o = {.general_threshold = 0.35, .character_threshold = 0.35};
    EXPECT(o, "1girl, long_hair, ^_^, mash_kyrielight_(swimsuit)_(fate), c_c, hatsune_miku");
    o.character_threshold = 0.85;
    EXPECT(o, "1girl, long_hair, ^_^, hatsune_miku");
    o.character_first = 1;
    o.character_threshold = 0.35;
    EXPECT(o, "hatsune_miku, c_c, mash_kyrielight_(swimsuit)_(fate), 1girl, long_hair, ^_^");
    o.character_first = 0;
    o.rating_last = 1; /* argmax: first of the equal maxima (sensitive) */
    o.general_threshold = 0.5;
    o.character_threshold = 1.5;
    EXPECT(o, "1girl, ^_^, sensitive");
    o.rating_first = 1;
    EXPECT(o, "sensitive, 1girl, ^_^");
    o.rating_first = o.rating_last = 0;
    o.general_threshold = 0.35;
    o.character_threshold = 0.35;
    o.remove_underscore = 1;
    o.character_expand = 1;
    EXPECT(o, "1girl, long hair, ^_^, mash kyrielight (swimsuit), fate, c_c, hatsune miku");
    o.undesired = "long hair ||  c_c |";
    o.separator = " | ";
    EXPECT(o, "1girl | ^_^ | mash kyrielight (swimsuit) | fate | hatsune miku");
    o.undesired = NULL;
    o.separator = ", ";
    o.always_first = "hatsune miku, ^_^, nothing";
    EXPECT(o, "^_^, hatsune miku, 1girl, long hair, mash kyrielight (swimsuit), fate, c_c");
    o.always_first = NULL;
    o.replacement = "long hair,very long hair;c_c,C\\,C\\;;sensitive,safe";
    o.rating_last = 1;
    EXPECT(o, "1girl, very long hair, ^_^, mash kyrielight (swimsuit), fate, C,C;, hatsune miku, safe");
    o.replacement = "a,b,c";
    char *s = run(&t, &o, p);
    T_CHECK(s && strstr(s, "--tag_replacement") != NULL);
    free(s);
    o.replacement = NULL;
    o.separator = "  ";
    s = run(&t, &o, p);
    T_CHECK(s && strstr(s, "--caption_separator") != NULL);
    free(s);
    sd_tag_table_free(&t);
}

static void wdtags_append(void)
{
    sd_tag_table t = table6();
    sd_wdtags w;
    sd_wdtags_opts o = {.general_threshold = 0.35, .character_threshold = 0.35};
    T_EQ_INT(sd_wdtags_init(&w, &t, &o), 0);
    const char *tags[3] = {"1girl", "solo", "smile"};
    char *s = sd_wdtags_append(&w, "\n\nsmile ,  old tag,,1girl\n", tags, 3);
    T_EQ_STR(s, "smile, old tag, 1girl, solo");
    free(s);
    s = sd_wdtags_append(&w, NULL, tags, 3);
    T_EQ_STR(s, "1girl, solo, smile");
    free(s);
    s = sd_wdtags_append(&w, "", tags, 0);
    T_EQ_STR(s, "");
    free(s);
    sd_wdtags_free(&w);
    sd_tag_table_free(&t);
}

int main(void)
{
    T_RUN(csv_quoted_fields);
    T_RUN(csv_errors);
    T_RUN(wdtags_selection);
    T_RUN(wdtags_append);
    T_DONE();
}
