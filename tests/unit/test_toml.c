/* TOML reader: kohya dataset configs, every TOML 1.0 feature, semantic rules, malformed input
 * with exact positions, limits, and a deterministic mutation run (no crash, no leak). */
#include "base/error.h"
#include "io/toml.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <unistd.h>

/* Compact JSON of a parse result, or "ERR <message>". Caller frees. */
static char *parse_dump(const char *text, size_t n)
{
    jv v;
    int rc = sd_toml_parse(text, n, "t.toml", &v);
    if (rc) {
        jv_free(v);
        const char *m = sd_errmsg();
        char *r = malloc(strlen(m) + 8);
        sprintf(r, "ERR %s", m);
        return r;
    }
    jv s = jv_dump_string(v, 0);
    char *r = strdup(jv_string_value(s));
    jv_free(s);
    return r;
}

static void ok_n(int line, const char *text, size_t n, const char *json)
{
    char *got = parse_dump(text, n);
    if (strcmp(got, json)) {
        printf("#   line %d: got  %s\n#   line %d: want %s\n", line, got, line, json);
        t_cur_fail++;
    }
    free(got);
}
#define OK(text, json) ok_n(__LINE__, text, strlen(text), json)

static void bad_n(int line, const char *text, size_t n, int el, int ec, const char *frag)
{
    jv v;
    int rc = sd_toml_parse(text, n, "t.toml", &v);
    char pre[64];
    snprintf(pre, sizeof pre, "t.toml:%d:%d: ", el, ec);
    const char *m = sd_errmsg();
    if (rc != SD_EFORMAT || strncmp(m, pre, strlen(pre)) || !strstr(m, frag) || strchr(m, '\n') ||
        jv_is_valid(v)) {
        printf("#   line %d: rc %d, message \"%s\"; want %s...%s\n", line, rc, m, pre, frag);
        t_cur_fail++;
    }
    jv_free(v);
}
#define BAD(text, l, c, frag) bad_n(__LINE__, text, strlen(text), l, c, frag)
#define BADN(text, l, c, frag) bad_n(__LINE__, text, sizeof(text) - 1, l, c, frag)

static jv get(jv v, const char *path) /* path like "datasets.0.subsets.1.is_reg"; consumes v */
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok && jv_is_valid(v); tok = strtok(NULL, ".")) {
        if (jv_get_kind(v) == JV_KIND_ARRAY) v = jv_array_get(v, atoi(tok));
        else if (jv_get_kind(v) == JV_KIND_OBJECT) v = jv_object_get(v, jv_string(tok));
        else {
            jv_free(v);
            return jv_invalid();
        }
    }
    return v;
}

static const char kohya[] =
    "[general]\n"
    "caption_extension = \".txt\"     # DreamBooth key allowed in [general]\n"
    "shuffle_caption = true\n"
    "keep_tokens = 1\n"
    "enable_bucket = true           # dataset key allowed in [general]\n"
    "\n"
    "[[datasets]]                   # DreamBooth-style dataset at 512\n"
    "resolution = 512\n"
    "batch_size = 4\n"
    "  [[datasets.subsets]]\n"
    "  image_dir = \"/data/chara\"\n"
    "  class_tokens = \"chara girl\"  # used only where no .txt exists\n"
    "  num_repeats = 10\n"
    "  [[datasets.subsets]]\n"
    "  image_dir = 'C:\\data\\reg_girl'\n"
    "  is_reg = true\n"
    "  class_tokens = \"girl\"\n"
    "\n"
    "[[datasets]]                   # fine-tuning dataset at 768x768\n"
    "resolution = [768, 768]\n"
    "batch_size = 2\n"
    "caption_dropout_rate = 0.05    # float, not 0\n"
    "  [[datasets.subsets]]\n"
    "  image_dir = \"/data/ft\"\n"
    "  metadata_file = \"/data/ft/meta.json\"\n";

static void test_kohya_config(void)
{
    jv v;
    T_EQ_INT(sd_toml_parse(kohya, strlen(kohya), "dataset.toml", &v), SD_OK);
    T_CHECK(jv_get_kind(v) == JV_KIND_OBJECT);
    jv x = get(jv_copy(v), "general.shuffle_caption");
    T_CHECK(jv_get_kind(x) == JV_KIND_TRUE);
    jv_free(x);
    x = get(jv_copy(v), "general.caption_extension");
    T_EQ_STR(jv_get_kind(x) == JV_KIND_STRING ? jv_string_value(x) : NULL, ".txt");
    jv_free(x);
    x = get(jv_copy(v), "datasets");
    T_EQ_INT(jv_get_kind(x) == JV_KIND_ARRAY ? jv_array_length(jv_copy(x)) : -1, 2);
    jv_free(x);
    x = get(jv_copy(v), "datasets.0.subsets");
    T_EQ_INT(jv_get_kind(x) == JV_KIND_ARRAY ? jv_array_length(jv_copy(x)) : -1, 2);
    jv_free(x);
    x = get(jv_copy(v), "datasets.0.subsets.1.image_dir");
    T_EQ_STR(jv_get_kind(x) == JV_KIND_STRING ? jv_string_value(x) : NULL, "C:\\data\\reg_girl");
    jv_free(x);
    x = get(jv_copy(v), "datasets.0.subsets.1.is_reg");
    T_CHECK(jv_get_kind(x) == JV_KIND_TRUE);
    jv_free(x);
    x = get(jv_copy(v), "datasets.0.subsets.0.num_repeats");
    T_CHECK(jv_get_kind(x) == JV_KIND_NUMBER && jv_number_value(x) == 10);
    jv_free(x);
    x = get(jv_copy(v), "datasets.1.caption_dropout_rate");
    T_CHECK(jv_get_kind(x) == JV_KIND_NUMBER && jv_number_value(x) == 0.05);
    jv_free(x);
    x = get(jv_copy(v), "datasets.1.subsets.0.metadata_file");
    T_EQ_STR(jv_get_kind(x) == JV_KIND_STRING ? jv_string_value(x) : NULL, "/data/ft/meta.json");
    jv_free(x);
    jv_free(v);
    OK(kohya,
       "{\"general\":{\"caption_extension\":\".txt\",\"shuffle_caption\":true,\"keep_tokens\":1,"
       "\"enable_bucket\":true},\"datasets\":[{\"resolution\":512,\"batch_size\":4,\"subsets\":["
       "{\"image_dir\":\"/data/chara\",\"class_tokens\":\"chara girl\",\"num_repeats\":10},"
       "{\"image_dir\":\"C:\\\\data\\\\reg_girl\",\"is_reg\":true,\"class_tokens\":\"girl\"}]},"
       "{\"resolution\":[768,768],\"batch_size\":2,\"caption_dropout_rate\":0.05,\"subsets\":["
       "{\"image_dir\":\"/data/ft\",\"metadata_file\":\"/data/ft/meta.json\"}]}]}");
}

static void test_file_io(void)
{
    const char *p = t_path("cfg.toml");
    const char crlf[] = "# cfg\r\n[general]\r\nshuffle_caption = true\r\ns = \"\"\"\r\na\r\nb\"\"\"\r\n";
    T_EQ_INT(t_write_file(p, crlf, strlen(crlf)), 0);
    jv v;
    T_EQ_INT(sd_toml_parse_file(p, &v), SD_OK);
    jv s = jv_dump_string(v, 0);
    T_EQ_STR(jv_string_value(s), "{\"general\":{\"shuffle_caption\":true,\"s\":\"a\\nb\"}}");
    jv_free(s);
    /* errors name the file */
    T_EQ_INT(t_write_file(p, "a = 1\nb = \n", 11), 0);
    T_EQ_INT(sd_toml_parse_file(p, &v), SD_EFORMAT);
    char want[600];
    snprintf(want, sizeof want, "%s:2:5: expected a value, found end of line", p);
    T_EQ_STR(sd_errmsg(), want);
    jv_free(v);
    /* missing file */
    const char *m = t_path("no-such.toml");
    T_EQ_INT(sd_toml_parse_file(m, &v), SD_ENOTFOUND);
    snprintf(want, sizeof want, "%s: No such file or directory", m);
    T_EQ_STR(sd_errmsg(), want);
    T_CHECK(!jv_is_valid(v));
    /* a directory */
    T_CHECK(sd_toml_parse_file(t_tmpdir(), &v) == SD_EIO);
    /* size bound: a sparse file just over 64 MiB */
    const char *big = t_path("big.toml");
    FILE *f = fopen(big, "wb");
    T_CHECK(f && ftruncate(fileno(f), ((off_t)64 << 20) + 1) == 0);
    if (f) fclose(f);
    T_EQ_INT(sd_toml_parse_file(big, &v), SD_ERANGE);
    T_CHECK(strstr(sd_errmsg(), "file too large") != NULL);
    unlink(big);
    /* empty file and empty input */
    T_EQ_INT(t_write_file(p, "", 0), 0);
    T_EQ_INT(sd_toml_parse_file(p, &v), SD_OK);
    T_CHECK(jv_get_kind(v) == JV_KIND_OBJECT);
    jv_free(v);
    OK("", "{}");
    OK("\n\n  # only comments\n\t\n", "{}");
    T_EQ_INT(sd_toml_parse(NULL, 0, NULL, &v), SD_OK);
    jv_free(v);
}

static void test_keys(void)
{
    OK("key = 1\nbare_key-2 = 2\n1234 = 3", "{\"key\":1,\"bare_key-2\":2,\"1234\":3}");
    OK("\"127.0.0.1\" = 1\n\"character encoding\" = 2\n'quoted \"value\"' = 3\n\"ʎǝʞ\" = 4",
       "{\"127.0.0.1\":1,\"character encoding\":2,\"quoted \\\"value\\\"\":3,\"ʎǝʞ\":4}");
    OK("\"\" = 1", "{\"\":1}");
    OK("'' = 'blank'", "{\"\":\"blank\"}");
    OK("a.b.c = 1\na . b . d = 2\n\"x.y\".'z' = 3",
       "{\"a\":{\"b\":{\"c\":1,\"d\":2}},\"x.y\":{\"z\":3}}");
    OK("3.14159 = \"pi\"", "{\"3\":{\"14159\":\"pi\"}}");
    OK("\"a\\u0000b\" = 1", "{\"a\\u0000b\":1}");
    OK("a=1#c\nb\t=\t2\t# c", "{\"a\":1,\"b\":2}");
    OK("true = 1\nfalse = 2\ninf = 3\nnan = 4", "{\"true\":1,\"false\":2,\"inf\":3,\"nan\":4}");
}

static void test_tables(void)
{
    OK("[a]\nx = 1\n[b.c]\ny = 2\n[b]\nz = 3", "{\"a\":{\"x\":1},\"b\":{\"c\":{\"y\":2},\"z\":3}}");
    OK("[ a . \"b c\" . 'd' ]\n", "{\"a\":{\"b c\":{\"d\":{}}}}");
    OK("[x.y.z.w]\n[x]\n", "{\"x\":{\"y\":{\"z\":{\"w\":{}}}}}");
    OK("[[p]]\nn = 1\n[[p]]\n[[p]]\nn = 3", "{\"p\":[{\"n\":1},{},{\"n\":3}]}");
    OK("[[f]]\nname = 'apple'\n[f.physical]\ncolor = 'red'\n[[f.variety]]\nname = 'red'\n"
       "[[f.variety]]\nname = 'gs'\n[[f]]\nname = 'banana'\n[[f.variety]]\nname = 'pl'",
       "{\"f\":[{\"name\":\"apple\",\"physical\":{\"color\":\"red\"},\"variety\":[{\"name\":\"red\"},"
       "{\"name\":\"gs\"}]},{\"name\":\"banana\",\"variety\":[{\"name\":\"pl\"}]}]}");
    OK("[a.b]\n[[a.c]]\n[a]\nd = 1", "{\"a\":{\"b\":{},\"c\":[{}],\"d\":1}}");
    OK("x = 1\n[t]\nx = 2", "{\"x\":1,\"t\":{\"x\":2}}");
    /* dotted keys define tables inside a section; sub-tables may be added by headers */
    OK("[fruit]\napple.color = 'red'\napple.taste.sweet = true\n[fruit.apple.texture]\nsmooth = true",
       "{\"fruit\":{\"apple\":{\"color\":\"red\",\"taste\":{\"sweet\":true},\"texture\":{\"smooth\":true}}}}");
    /* a table created implicitly by a header may later be filled with dotted keys */
    OK("[a.b.c]\nz = 1\n[a]\nb.y = 2", "{\"a\":{\"b\":{\"c\":{\"z\":1},\"y\":2}}}");
    OK("a.b = 1\n[a.c]\nd = 2", "{\"a\":{\"b\":1,\"c\":{\"d\":2}}}");
    OK("[t]\na.b = 1\n[t.u]\n[t.a.c]\nx = 1\n", "{\"t\":{\"a\":{\"b\":1,\"c\":{\"x\":1}},\"u\":{}}}");
    OK("t.a.b = 1\n[t.c]\n[u]\n", "{\"t\":{\"a\":{\"b\":1},\"c\":{}},\"u\":{}}");
    /* an inline table between dotted keys does not end the section */
    OK("[t]\na.b = 1\nx = {y = 1}\na.c = 2\nz = [{}]\na.d.e = 3",
       "{\"t\":{\"a\":{\"b\":1,\"c\":2,\"d\":{\"e\":3}},\"x\":{\"y\":1},\"z\":[{}]}}");
    OK("a.b = 1\nc = {d = 1}\na.e = 2", "{\"a\":{\"b\":1,\"e\":2},\"c\":{\"d\":1}}");
    /* each [[x]] element is a fresh namespace */
    OK("[[a]]\n[a.b]\nx = 1\n[[a]]\n[a.b]\nx = 2", "{\"a\":[{\"b\":{\"x\":1}},{\"b\":{\"x\":2}}]}");
}

static void test_strings(void)
{
    OK("s = \"b\\b t\\t n\\n f\\f r\\r q\\\" bs\\\\ u\\u00e9 U\\U0001F600\"",
       "{\"s\":\"b\\b t\\t n\\n f\\f r\\r q\\\" bs\\\\ ué U😀\"}");
    OK("s = \"\\u0000\\u001f\\u007F\"", "{\"s\":\"\\u0000\\u001f\\u007f\"}");
    OK("s = \"tab\there é 日本\"", "{\"s\":\"tab\\there é 日本\"}");
    OK("w = 'C:\\hoge'\nu = '\\\\ServerX\\admin$\\system32\\'\nr = '<\\i\\c*\\s*>'",
       "{\"w\":\"C:\\\\hoge\",\"u\":\"\\\\\\\\ServerX\\\\admin$\\\\system32\\\\\",\"r\":\"<\\\\i\\\\c*\\\\s*>\"}");
    OK("q = 'Tom \"Dubs\" Preston-Werner'", "{\"q\":\"Tom \\\"Dubs\\\" Preston-Werner\"}");
    /* multi-line basic: first newline trimmed, line-ending backslash, quotes */
    OK("s = \"\"\"\nRoses\nViolets\"\"\"", "{\"s\":\"Roses\\nViolets\"}");
    OK("s = \"\"\"\nThe quick \\\n\n\n  brown \\   \n   fox.\"\"\"", "{\"s\":\"The quick brown fox.\"}");
    OK("s = \"\"\"Here are two quotation marks: \"\". Simple enough.\"\"\"",
       "{\"s\":\"Here are two quotation marks: \\\"\\\". Simple enough.\"}");
    OK("s = \"\"\"\"This,\" she said, \"is just a pointless statement.\"\"\"\"",
       "{\"s\":\"\\\"This,\\\" she said, \\\"is just a pointless statement.\\\"\"}");
    OK("a = \"\"\"x\"\"\"\"\"\nb = \"\"\"\"\"\"", "{\"a\":\"x\\\"\\\"\",\"b\":\"\"}");
    OK("s = \"\"\"\ttab \\t esc \\u0041\r\nline2\"\"\"", "{\"s\":\"\\ttab \\t esc A\\nline2\"}");
    /* multi-line literal */
    OK("re = '''I [dw]on't need \\d{2} apples'''", "{\"re\":\"I [dw]on't need \\\\d{2} apples\"}");
    OK("l = '''\nThe first newline is\ntrimmed in raw strings.\n   All other whitespace\n   is preserved.\n'''",
       "{\"l\":\"The first newline is\\ntrimmed in raw strings.\\n   All other whitespace\\n   is preserved.\\n\"}");
    OK("q = ''''That,' she said, 'is still pointless.''''",
       "{\"q\":\"'That,' she said, 'is still pointless.'\"}");
    OK("e = ''''''\nb = '''\\'''", "{\"e\":\"\",\"b\":\"\\\\\"}");
    OK("s = \"\"", "{\"s\":\"\"}");
}

static void test_numbers(void)
{
    OK("a = +99\nb = 42\nc = 0\nd = -17\ne = 1_000\nf = 5_349_221\ng = 1_2_3_4_5\nh = -0\ni = +0",
       "{\"a\":99,\"b\":42,\"c\":0,\"d\":-17,\"e\":1000,\"f\":5349221,\"g\":12345,\"h\":0,\"i\":0}");
    OK("h1 = 0xDEADBEEF\nh2 = 0xdeadbeef\nh3 = 0xdead_beef\no1 = 0o01234567\no2 = 0o755\nb1 = 0b11010110\nz = 0x0",
       "{\"h1\":3735928559,\"h2\":3735928559,\"h3\":3735928559,\"o1\":342391,\"o2\":493,\"b1\":214,\"z\":0}");
    OK("max = 9007199254740992\nmin = -9007199254740992\nh = 0x20000000000000",
       "{\"max\":9007199254740992,\"min\":-9007199254740992,\"h\":9007199254740992}");
    OK("a = +1.0\nb = 3.1415\nc = -0.01\nd = 5e+22\ne = 1e06\nf = -2E-2\ng = 6.626e-34\nh = 224_617.445_991_228\ni = 9_224_617.445_991_228e1_0",
       "{\"a\":1,\"b\":3.1415,\"c\":-0.01,\"d\":5e+22,\"e\":1000000,\"f\":-0.02,\"g\":6.626e-34,"
       "\"h\":224617.445991228,\"i\":92246174459912290}");
    OK("z = 0.0\nn = -0.0\np = +0.0\nu = 1e-400\nx = 0e0", "{\"z\":0,\"n\":-0,\"p\":0,\"u\":0,\"x\":0}");
    OK("f = 0.05\ng = 1.7976931348623157e308", "{\"f\":0.05,\"g\":1.7976931348623157e+308}");
    jv v;
    const char *t = "a = inf\nb = +inf\nc = -inf\nd = nan\ne = +nan\nf = -nan";
    T_EQ_INT(sd_toml_parse(t, strlen(t), "t", &v), SD_OK);
    jv x;
    x = jv_object_get(jv_copy(v), jv_string("a")); T_CHECK(isinf(jv_number_value(x)) && jv_number_value(x) > 0); jv_free(x);
    x = jv_object_get(jv_copy(v), jv_string("b")); T_CHECK(isinf(jv_number_value(x)) && jv_number_value(x) > 0); jv_free(x);
    x = jv_object_get(jv_copy(v), jv_string("c")); T_CHECK(isinf(jv_number_value(x)) && jv_number_value(x) < 0); jv_free(x);
    x = jv_object_get(jv_copy(v), jv_string("d")); T_CHECK(isnan(jv_number_value(x))); jv_free(x);
    x = jv_object_get(jv_copy(v), jv_string("e")); T_CHECK(isnan(jv_number_value(x))); jv_free(x);
    x = jv_object_get(jv_copy(v), jv_string("f")); T_CHECK(isnan(jv_number_value(x))); jv_free(x);
    jv_free(v);
}

static void test_bools_dates(void)
{
    OK("t = true\nf = false", "{\"t\":true,\"f\":false}");
    OK("odt1 = 1979-05-27T07:32:00Z\nodt2 = 1979-05-27T00:32:00-07:00\n"
       "odt3 = 1979-05-27T00:32:00.999999+07:00\nodt4 = 1979-05-27 07:32:00z\n"
       "ldt1 = 1979-05-27T07:32:00\nldt2 = 1979-05-27t00:32:00.5\nld = 1979-05-27\n"
       "lt1 = 07:32:00\nlt2 = 00:32:00.999999\nleap = 2000-02-29\nsec60 = 1990-12-31T23:59:60Z",
       "{\"odt1\":\"1979-05-27T07:32:00Z\",\"odt2\":\"1979-05-27T00:32:00-07:00\","
       "\"odt3\":\"1979-05-27T00:32:00.999999+07:00\",\"odt4\":\"1979-05-27 07:32:00z\","
       "\"ldt1\":\"1979-05-27T07:32:00\",\"ldt2\":\"1979-05-27t00:32:00.5\",\"ld\":\"1979-05-27\","
       "\"lt1\":\"07:32:00\",\"lt2\":\"00:32:00.999999\",\"leap\":\"2000-02-29\","
       "\"sec60\":\"1990-12-31T23:59:60Z\"}");
    OK("d = 1979-05-27 # comment\na = [1979-05-27, 07:32:00]",
       "{\"d\":\"1979-05-27\",\"a\":[\"1979-05-27\",\"07:32:00\"]}");
}

static void test_arrays(void)
{
    OK("a = [1, 2, 3]\nb = [\"red\", 'yellow']\nc = [[1, 2], [3, 4, 5]]\nd = []\ne = [ ]",
       "{\"a\":[1,2,3],\"b\":[\"red\",\"yellow\"],\"c\":[[1,2],[3,4,5]],\"d\":[],\"e\":[]}");
    OK("m = [0.1, 0.2, 0.5, 1, 2, 5, \"x\", true, {a = 1}, [ ]]",
       "{\"m\":[0.1,0.2,0.5,1,2,5,\"x\",true,{\"a\":1},[]]}");
    OK("a = [\n  1, # one\n  2,\n\n  # nothing\n  3,   # trailing comma\n]",
       "{\"a\":[1,2,3]}");
    OK("a = [\r\n1,\r\n2\r\n]\r\n", "{\"a\":[1,2]}");
    OK("c = [ { x = 1, y = 2 }, { x = 7, y = 8, z = 9 } ]",
       "{\"c\":[{\"x\":1,\"y\":2},{\"x\":7,\"y\":8,\"z\":9}]}");
    OK("r = [768, 768]\ns = [\"\"\"a\nb\"\"\", '''c''']", "{\"r\":[768,768],\"s\":[\"a\\nb\",\"c\"]}");
}

static void test_inline_tables(void)
{
    OK("name = { first = \"Tom\", last = \"Preston-Werner\" }",
       "{\"name\":{\"first\":\"Tom\",\"last\":\"Preston-Werner\"}}");
    OK("point = {x=1,y=2}\nempty = {}\nsp = {  }", "{\"point\":{\"x\":1,\"y\":2},\"empty\":{},\"sp\":{}}");
    OK("animal = { type.name = \"pug\", type.k = 1 }", "{\"animal\":{\"type\":{\"name\":\"pug\",\"k\":1}}}");
    OK("a = { b = { c = { d = [1, {e = 2}] } } }", "{\"a\":{\"b\":{\"c\":{\"d\":[1,{\"e\":2}]}}}}");
    OK("a = { s = \"\"\"x\ny\"\"\" }", "{\"a\":{\"s\":\"x\\ny\"}}");
    OK("a = { l = [\n1,\n2] }", "{\"a\":{\"l\":[1,2]}}");
    OK("[t]\ni = {a = 1}\n[t.j]\nb = 2", "{\"t\":{\"i\":{\"a\":1},\"j\":{\"b\":2}}}");
}

static void test_utf8(void)
{
    OK("\xEF\xBB\xBF" "a = 1", "{\"a\":1}");
    BADN("a = \"\xC0\x80\"", 1, 6, "invalid UTF-8 (byte 0xC0)");       /* overlong */
    BADN("a = \"\xED\xA0\x80\"", 1, 6, "invalid UTF-8 (byte 0xED)");   /* surrogate */
    BADN("a = \"\xF5\x80\x80\x80\"", 1, 6, "invalid UTF-8 (byte 0xF5)");
    BADN("a = \"\xF4\x90\x80\x80\"", 1, 6, "invalid UTF-8 (byte 0xF4)"); /* > U+10FFFF */
    BADN("a = \"\xE6\x97\"", 1, 6, "invalid UTF-8");                     /* truncated */
    BADN("# \xFF comment", 1, 3, "invalid UTF-8 (byte 0xFF)");
    BADN("k\xE2\x82\xAC = 1", 1, 2, "expected '=' after key 'k', found U+20AC");
    BADN("\xE6\x97\xA5 = 1", 1, 1, "expected a key, found U+65E5");
    BADN("a = \"\xE6\x97\xA5\" x", 1, 9, "found 'x'"); /* column counts characters */
    BADN("a = 1\nb = 2\xEF\xBB\xBF", 2, 6, "found U+FEFF");
    BADN("a = 1\0", 1, 6, "expected end of line after value, found U+0000");
}

static void test_malformed(void)
{
    /* syntax */
    BAD("key", 1, 4, "expected '=' after key 'key', found end of input");
    BAD("key value", 1, 5, "expected '=' after key 'key', found 'v'");
    BAD("= 1", 1, 1, "expected a key, found '='");
    BAD("a = ", 1, 5, "expected a value, found end of input");
    BAD("a = 1\nb =\n", 2, 4, "expected a value, found end of line");
    BAD("a = 1 b = 2", 1, 7, "expected end of line after value, found 'b'");
    BAD("a = # c", 1, 5, "expected a value, found '#'");
    BAD("a. = 1", 1, 4, "expected a key, found '='");
    BAD(".a = 1", 1, 1, "expected a key, found '.'");
    BAD("a..b = 1", 1, 3, "expected a key, found '.'");
    BAD("a = hello", 1, 5, "invalid value 'hello' (strings must be quoted)");
    BAD("a = True", 1, 5, "invalid value 'True'");
    BAD("\"\"\"k\"\"\" = 1", 1, 1, "multi-line string cannot be used as a key");
    /* headers */
    BAD("[a", 1, 3, "expected ']' after table name 'a', found end of input");
    BAD("[a\n", 1, 3, "expected ']' after table name 'a', found end of line");
    BAD("[]", 1, 2, "expected a table name, found ']'");
    BAD("[a]b = 1", 1, 4, "expected end of line after table header, found 'b'");
    BAD("[[a]\n", 1, 5, "expected ']]' after table name 'a', found end of line");
    BAD("[[a] ]", 1, 5, "expected ']]' after table name 'a', found ' '");
    BAD("[a.]", 1, 4, "expected a table name, found ']'");
    BAD("[a b]", 1, 4, "expected ']' after table name 'a', found 'b'");
    /* strings */
    BAD("a = \"abc", 1, 5, "unterminated string");
    BAD("a = \"abc\nb = 1\"", 1, 5, "unterminated string");
    BAD("a = 'abc", 1, 5, "unterminated string");
    BAD("x = 1\na = \"\"\"abc\"\"", 2, 5, "unterminated multi-line string");
    BAD("a = '''abc\n", 1, 5, "unterminated multi-line string");
    BAD("a = \"\\q\"", 1, 6, "invalid escape '\\q'");
    BAD("a = \"\\x41\"", 1, 6, "invalid escape '\\x'");
    BAD("a = \"\\e\"", 1, 6, "invalid escape '\\e'");
    BAD("a = \"x\\ y\"", 1, 7, "invalid escape '\\ '");
    BAD("a = \"\\u12\"", 1, 6, "invalid escape '\\u': expected 4 hex digits");
    BAD("a = \"\\uD800\"", 1, 6, "invalid escape '\\uD800': surrogate code point");
    BAD("a = \"\\U00110000\"", 1, 6, "invalid escape '\\U00110000': beyond U+10FFFF");
    BAD("a = \"\\UDFFF\"", 1, 6, "expected 8 hex digits");
    BAD("a = \"a\x01" "b\"", 1, 7, "control character U+0001 in string (use an escape)");
    BAD("a = 'a\x7f'", 1, 7, "control character U+007F in string");
    BAD("a = \"\"\"a\x1b\"\"\"", 1, 9, "control character U+001B in string");
    BAD("a = \"\"\"a\"\"\"\"\"\"", 1, 9, "too many quotes");
    BAD("# bell \x07\n", 1, 8, "control character U+0007 in comment");
    BAD("a = 1\rb = 2", 1, 6, "bare carriage return");
    BAD("a = 'x'\r", 1, 8, "bare carriage return");
    /* integers and floats */
    BAD("a = 01", 1, 5, "leading zeros are not allowed in '01'");
    BAD("a = 1__0", 1, 5, "invalid number '1__0'");
    BAD("a = _1", 1, 5, "invalid value '_1'");
    BAD("a = 1_", 1, 5, "invalid number '1_'");
    BAD("a = 0x", 1, 5, "invalid integer '0x'");
    BAD("a = 0xG1", 1, 5, "invalid integer '0xG1'");
    BAD("a = 0o8", 1, 5, "invalid integer '0o8'");
    BAD("a = 0b102", 1, 5, "invalid integer '0b102'");
    BAD("a = 0X1F", 1, 5, "invalid number '0X1F'");
    BAD("a = -0x1", 1, 5, "sign not allowed on a hex, octal or binary integer '-0x1'");
    BAD("a = 9007199254740993", 1, 5, "integer '9007199254740993' out of range: beyond +-2^53");
    BAD("a = -9223372036854775808", 1, 5, "out of range");
    BAD("a = 99999999999999999999999", 1, 5, "out of range");
    BAD("a = 0xffffffffffffffffff", 1, 5, "out of range");
    BAD("a = 1.", 1, 5, "invalid float '1.'");
    BAD("a = .5", 1, 5, "expected a value, found '.'");
    BAD("a = 1.e5", 1, 5, "invalid float '1.e5'");
    BAD("a = 1e", 1, 5, "invalid float '1e'");
    BAD("a = 1e5.5", 1, 5, "invalid float '1e5.5'");
    BAD("a = 1_.5", 1, 5, "invalid float '1_.5'");
    BAD("a = 03.14", 1, 5, "leading zeros are not allowed in '03.14'");
    BAD("a = 1e400", 1, 5, "float '1e400' out of range");
    BAD("a = +", 1, 5, "invalid number '+'");
    BAD("a = Inf", 1, 5, "invalid value 'Inf'");
    BAD("a = +nan1", 1, 5, "invalid number '+nan1'");
    BAD("a = 1+2", 1, 5, "invalid number '1+2'");
    /* dates */
    BAD("a = 1979-13-01", 1, 5, "invalid date '1979-13-01': day or month out of range");
    BAD("a = 2001-02-29", 1, 5, "day or month out of range");
    BAD("a = 1979-05-27T25:00:00", 1, 5, "invalid time in date-time");
    BAD("a = 1979-05-27T07:32", 1, 5, "invalid time in date-time");
    BAD("a = 1979-05-27T07:32:00+1:00", 1, 24, "invalid time offset");
    BAD("a = 1979-5-27", 1, 5, "invalid date (expected YYYY-MM-DD)");
    BAD("a = 07:32", 1, 5, "invalid time (expected HH:MM:SS)");
    BAD("a = 07:32:00.", 1, 5, "invalid time");
    BAD("a = 07:32:00Z", 1, 13, "expected end of line after value, found 'Z'");
    /* arrays and inline tables */
    BAD("a = [1, 2", 1, 5, "unterminated array");
    BAD("a = [1 2]", 1, 8, "expected ',' or ']' in array, found '2'");
    BAD("a = [,]", 1, 6, "expected a value, found ','");
    BAD("a = [1,,2]", 1, 8, "expected a value, found ','");
    BAD("a = {x = 1", 1, 5, "unterminated inline table");
    BAD("a = {x = 1,}", 1, 12, "trailing comma in an inline table");
    BAD("a = {x = 1\n}", 1, 11, "newline inside an inline table");
    BAD("a = {\nx = 1}", 1, 6, "newline inside an inline table");
    BAD("a = {x = 1 y = 2}", 1, 12, "expected ',' or '}' in inline table, found 'y'");
    BAD("a = {x = 1, x = 2}", 1, 13, "duplicate key 'x'");
    BAD("a = {x = 1 # c\n}", 1, 12, "found '#'");
    BAD("a = {", 1, 5, "unterminated inline table");
    /* semantics */
    BAD("a = 1\na = 2", 2, 1, "duplicate key 'a'");
    BAD("a = 1\n\"a\" = 2", 2, 1, "duplicate key 'a'");
    BAD("'a b' = 1\n\"a b\" = 2", 2, 1, "duplicate key '\"a b\"'");
    BAD("a.b = 1\na.b = 2", 2, 1, "duplicate key 'a.b'");
    BAD("a = 1\na.b = 2", 2, 1, "key 'a' is already defined as a value");
    BAD("[a]\n[a]", 2, 2, "table 'a' defined twice");
    BAD("[a]\nb = 1\n[a.b]", 3, 2, "key 'a.b' is already defined as a value");
    BAD("[a.b]\n[a]\n[a.b]", 3, 2, "table 'a.b' defined twice");
    BAD("[fruit]\napple.color = 'red'\n[fruit.apple]", 3, 2,
        "table 'fruit.apple' defined twice (first with dotted keys)");
    BAD("a.b = 1\n[a]", 2, 2, "table 'a' defined twice (first with dotted keys)");
    BAD("[a.b.c]\nz = 1\n[a]\nb.c.t = 2", 4, 1, "cannot extend table 'b.c' with dotted keys: it has its own [header]");
    BAD("[x]\na.b = 1\n[y]\n[x.a.c]\n[x]\na.d = 2", 5, 2, "table 'x' defined twice");
    BAD("a = {x = 1}\na.y = 2", 2, 1, "cannot extend inline table 'a'");
    BAD("a = {x = 1}\n[a]", 2, 2, "cannot extend inline table 'a'");
    BAD("a = {x = 1}\n[a.b]", 2, 2, "cannot extend inline table 'a'");
    BAD("a = {b = {c = 1}, b.d = 2}", 1, 19, "cannot extend inline table 'b'");
    BAD("a = [1]\n[[a]]", 2, 3, "cannot extend array 'a' (arrays given as values are immutable)");
    BAD("a = [{}]\n[a.b]", 2, 2, "cannot extend array 'a'");
    BAD("a = [1]\na.b = 2", 2, 1, "cannot add keys to array 'a'");
    BAD("[[a]]\n[a]", 2, 2, "table 'a' is already defined as an array of tables");
    BAD("[a]\n[[a]]", 2, 3, "key 'a' is already defined as a table");
    BAD("[a.b]\n[[a]]", 2, 3, "key 'a' is already defined as a table");
    BAD("a = 1\n[[a]]", 2, 3, "key 'a' is already defined as a value");
    BAD("a = 1\n[a.b]", 2, 2, "key 'a' is already defined as a value");
    BAD("[t]\n[[t.arr]]\n[t]", 3, 2, "table 't' defined twice");
    BAD("[[t.arr]]\n[t]\narr.y = 2", 3, 1, "cannot add keys to array 'arr'");
}

static void test_limits(void)
{
    char *s = malloc(20000);
    /* arrays nested 128 deep are fine, 129 are not */
    int n = 0;
    n += sprintf(s + n, "a = ");
    for (int i = 0; i < 128; i++) s[n++] = '[';
    for (int i = 0; i < 128; i++) s[n++] = ']';
    s[n] = 0;
    jv v;
    T_EQ_INT(sd_toml_parse(s, (size_t)n, "t.toml", &v), SD_OK);
    jv_free(v);
    n = sprintf(s, "a = ");
    for (int i = 0; i < 5000; i++) s[n++] = '[';
    s[n] = 0;
    bad_n(__LINE__, s, (size_t)n, 1, 133, "nesting too deep (more than 128 levels)");
    n = sprintf(s, "a = ");
    for (int i = 0; i < 5000; i++) n += sprintf(s + n, "{b=");
    bad_n(__LINE__, s, (size_t)n, 1, 5 + 3 * 128, "nesting too deep");
    /* dotted keys and headers */
    n = 0;
    for (int i = 0; i < 200; i++) n += sprintf(s + n, "k.");
    n += sprintf(s + n, "k = 1");
    bad_n(__LINE__, s, (size_t)n, 1, 257, "key has too many parts (more than 128)");
    n = sprintf(s, "[");
    for (int i = 0; i < 127; i++) n += sprintf(s + n, "k.");
    n += sprintf(s + n, "k]\nx = {y = 1}");
    bad_n(__LINE__, s, (size_t)n, 2, 5, "nesting too deep");
    /* many keys in one table (hash index), long strings */
    n = 0;
    for (int i = 0; i < 1500; i++) n += sprintf(s + n, "k%d = %d\n", i, i);
    T_EQ_INT(sd_toml_parse(s, (size_t)n, "t.toml", &v), SD_OK);
    jv x = jv_object_get(jv_copy(v), jv_string("k1499"));
    T_CHECK(jv_get_kind(x) == JV_KIND_NUMBER && jv_number_value(x) == 1499);
    jv_free(x);
    T_EQ_INT(jv_object_length(v), 1500);
    n += sprintf(s + n, "k777 = 1\n");
    bad_n(__LINE__, s, (size_t)n, 1501, 1, "duplicate key 'k777'");
    n = sprintf(s, "s = \"");
    for (int i = 0; i < 15000; i++) s[n++] = 'a' + i % 26;
    n += sprintf(s + n, "\"");
    T_EQ_INT(sd_toml_parse(s, (size_t)n, "t.toml", &v), SD_OK);
    x = jv_object_get(v, jv_string("s"));
    T_EQ_INT(jv_string_length_bytes(x), 15000);
    free(s);
}

/* Deterministic mutations of valid documents: the parser must never crash or leak. */
static void test_mutations(void)
{
    static const char *docs[] = {
        kohya,
        "a = [1, 2.5, \"x\", {b = 'c'}, [true, 1979-05-27T07:32:00Z]]\n[t.u]\nv.w = \"\"\"x\\\n y\"\"\"\n",
        "[[a]]\nb = 0x1F\n[[a.c]]\nd = '''e'''\n[a.f]\ng = -inf\nh = 07:32:00.5\n",
    };
    uint64_t st = 12345;
    char buf[2048];
    int nok = 0, nerr = 0;
    for (int it = 0; it < 6000; it++) {
        const char *d = docs[it % 3];
        size_t n = strlen(d);
        if (n > sizeof buf) n = sizeof buf;
        memcpy(buf, d, n);
        int k = 1 + it % 4;
        for (int j = 0; j < k; j++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(st >> 33) % n;
            int op = (int)(st >> 20) % 4;
            static const char pool[] = "[]{}\"'\\=.,#\n\r\t 0x_e+-:Tz\x80\xff\x00";
            char c = pool[(st >> 40) % (sizeof pool - 1)];
            if (op == 0) buf[pos] = c;
            else if (op == 1 && n < sizeof buf) {
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = c;
                n++;
            } else if (op == 2 && n > 1) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1);
                n--;
            } else n = pos + 1; /* truncate */
        }
        jv v;
        int rc = sd_toml_parse(buf, n, "m.toml", &v);
        if (rc == SD_OK) {
            nok++;
            T_CHECK(jv_get_kind(v) == JV_KIND_OBJECT);
        } else {
            nerr++;
            T_CHECK(rc == SD_EFORMAT && !strncmp(sd_errmsg(), "m.toml:", 7) && !strchr(sd_errmsg(), '\n'));
        }
        jv_free(v);
    }
    T_CHECK(nok > 100 && nerr > 100);
}

/* The fuzz seeds parse (or fail cleanly), so the fuzz target starts from real documents. */
static void test_fuzz_seeds(void)
{
    const char *root = getenv("SD_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/seeds/toml", root && *root ? root : ".");
    DIR *d = opendir(dir);
    T_CHECK(d != NULL);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        jv v;
        int rc = sd_toml_parse_file(p, &v);
        T_CHECKF(rc == SD_OK || strstr(e->d_name, "bad"), "%s: %s", e->d_name, sd_errmsg());
        jv_free(v);
        n++;
    }
    closedir(d);
    T_CHECK(n >= 3);
}

int main(void)
{
    T_RUN(test_kohya_config);
    T_RUN(test_file_io);
    T_RUN(test_keys);
    T_RUN(test_tables);
    T_RUN(test_strings);
    T_RUN(test_numbers);
    T_RUN(test_bools_dates);
    T_RUN(test_arrays);
    T_RUN(test_inline_tables);
    T_RUN(test_utf8);
    T_RUN(test_malformed);
    T_RUN(test_limits);
    T_RUN(test_mutations);
    T_RUN(test_fuzz_seeds);
    T_DONE();
}
