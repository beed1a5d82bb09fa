/* User jq filters over records: map, drop, duplicate, runtime and compile errors. */
#include "base/error.h"
#include "io/jq.h"
#include "io/jsonl.h"
#include "test.h"

static jv obj(const char *text)
{
    jv v;
    if (sd_json_parse(text, strlen(text), &v) != SD_OK) {
        printf("# bad test JSON: %s\n", sd_errmsg());
        return jv_null();
    }
    return v;
}

/* Run prog on input; returns the outputs as compact JSON text ("[...]") or NULL on error. */
static char *run(sd_jq *q, const char *input, int *rc)
{
    jv outs;
    *rc = sd_jq_run(q, obj(input), &outs);
    if (*rc != SD_OK) {
        T_CHECK(jv_get_kind(outs) == JV_KIND_INVALID);
        return NULL;
    }
    jv s = jv_dump_string(outs, 0);
    char *r = strdup(jv_string_value(s));
    jv_free(s);
    return r;
}

static void expect(const char *prog, const char *input, const char *want)
{
    sd_jq *q;
    int rc = sd_jq_compile(prog, jv_null(), &q);
    T_CHECKF(rc == SD_OK, "compile %s: %s", prog, sd_errmsg());
    if (rc) return;
    char *got = run(q, input, &rc);
    T_CHECKF(got && strcmp(got, want) == 0, "%s on %s: got %s want %s (%s)", prog, input,
             got ? got : "(error)", want, got ? "" : sd_errmsg());
    free(got);
    sd_jq_free(q);
}

static void test_map_drop_duplicate(void)
{
    expect(".", "{\"a\":1}", "[{\"a\":1}]");
    expect(".caption |= ascii_downcase", "{\"image\":\"x\",\"caption\":\"A Cat\",\"z\":0}",
           "[{\"image\":\"x\",\"caption\":\"a cat\",\"z\":0}]");
    expect(".n = 3", "{\"a\":1}", "[{\"a\":1,\"n\":3}]");
    expect("del(.a)", "{\"a\":1,\"b\":2}", "[{\"b\":2}]");
    expect("select(.w > 512)", "{\"w\":256}", "[]");
    expect("select(.w > 512)", "{\"w\":1024}", "[{\"w\":1024}]");
    expect("empty", "{}", "[]");
    expect("., (.flip = true)", "{\"a\":1}", "[{\"a\":1},{\"a\":1,\"flip\":true}]");
    expect(".tags | split(\", \") | .[]", "{\"tags\":\"a, b, c\"}", "[\"a\",\"b\",\"c\"]");
    expect("[limit(3; repeat(1))]", "{}", "[[1,1,1]]");
    expect("error(null)", "{}", "[]"); /* jq 1.6: behaves like empty */
    expect("halt", "{\"a\":1}", "[]");
    expect("input_filename", "{}", "[null]");
    expect("debug", "{\"d\":1}", "[{\"d\":1}]");
    expect("$__loc__.line", "{}", "[1]");
}

static void test_reuse_and_args(void)
{
    sd_jq *q;
    T_EQ_INT(sd_jq_compile(".image = $dir + \"/\" + .image | .k = $k",
                           jv_object_set(jv_object_set(jv_object(), jv_string("dir"), jv_string("data")),
                                         jv_string("k"), jv_number(7)),
                           &q),
             SD_OK);
    int rc;
    for (int i = 0; i < 1000; i++) {
        char in[64], want[96];
        snprintf(in, sizeof in, "{\"image\":\"%d.png\"}", i);
        snprintf(want, sizeof want, "[{\"image\":\"data/%d.png\",\"k\":7}]", i);
        char *got = run(q, in, &rc);
        T_CHECKF(got && strcmp(got, want) == 0, "%d: %s", i, got ? got : sd_errmsg());
        free(got);
    }
    sd_jq_free(q);
    /* bad args */
    T_EQ_INT(sd_jq_compile(".", jv_array(), &q), SD_EINVAL);
    T_CHECK(q == NULL);
}

static void test_runtime_errors(void)
{
    sd_jq *q;
    int rc;
    char *got;
    T_EQ_INT(sd_jq_compile("if .bad then .x[0] else . end", jv_null(), &q), SD_OK);
    got = run(q, "{\"bad\":true,\"x\":{}}", &rc);
    T_CHECK(got == NULL);
    T_EQ_INT(rc, SD_EFORMAT);
    T_EQ_STR(sd_errmsg(), "jq filter: Cannot index object with number");
    /* the next record runs normally */
    got = run(q, "{\"bad\":false}", &rc);
    T_EQ_STR(got, "[{\"bad\":false}]");
    free(got);
    sd_jq_free(q);

    T_EQ_INT(sd_jq_compile("1, error(\"late\")", jv_null(), &q), SD_OK);
    got = run(q, "{}", &rc);
    T_CHECK(got == NULL); /* outputs before the error are discarded */
    T_EQ_STR(sd_errmsg(), "jq filter: late");
    sd_jq_free(q);

    T_EQ_INT(sd_jq_compile("error({code: 1})", jv_null(), &q), SD_OK);
    got = run(q, "{}", &rc);
    T_EQ_STR(sd_errmsg(), "jq filter: {\"code\":1}");
    sd_jq_free(q);

    T_EQ_INT(sd_jq_compile("if .n == 1 then \"bye\\n\" | halt_error(1) else . end", jv_null(), &q), SD_OK);
    got = run(q, "{\"n\":1}", &rc);
    T_CHECK(got == NULL);
    T_EQ_STR(sd_errmsg(), "jq filter: bye");
    for (int i = 0; i < 3; i++) { /* the state is usable again after a halt (jq 1.6 bug) */
        got = run(q, "{\"n\":2}", &rc);
        T_EQ_STR(got, "[{\"n\":2}]");
        free(got);
        got = run(q, "{\"n\":1}", &rc);
        T_CHECK(got == NULL && rc == SD_EFORMAT);
    }
    sd_jq_free(q);

    T_EQ_INT(sd_jq_compile("input", jv_null(), &q), SD_OK);
    got = run(q, "{}", &rc);
    T_EQ_STR(sd_errmsg(), "jq filter: No more inputs");
    sd_jq_free(q);

    T_EQ_INT(sd_jq_compile("repeat(.)", jv_null(), &q), SD_OK);
    sd_jq_set_max_outputs(q, 100);
    got = run(q, "{}", &rc);
    T_EQ_INT(rc, SD_ERANGE);
    T_EQ_STR(sd_errmsg(), "jq filter: more than 100 outputs for one record");
    sd_jq_free(q);
}

static void test_compile_errors(void)
{
    static const struct { const char *prog, *want; } cases[] = {
        {".a |", "jq filter: syntax error, unexpected $end"},
        {".a | nosuchfn", "jq filter: nosuchfn/0 is not defined at <top-level>, line 1: .a | nosuchfn"},
        {"}", "syntax error"},
        {"$undefined", "$undefined is not defined"},
        {"import \"m\" as m; .", "module not found: m"},
        {"include \"m\"; .", "module not found: m"},
        {"(.a", "syntax error"},
        {"foo | bar", "foo | bar; bar/0 is not defined"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sd_jq *q = (sd_jq *)1;
        int rc = sd_jq_compile(cases[i].prog, jv_null(), &q);
        T_CHECKF(rc == SD_EUSAGE, "%s: rc %d", cases[i].prog, rc);
        T_CHECK(q == NULL);
        T_CHECKF(strstr(sd_errmsg(), cases[i].want) != NULL, "%s: '%s'", cases[i].prog, sd_errmsg());
        T_CHECKF(strchr(sd_errmsg(), '\n') == NULL, "%s: multi-line message", cases[i].prog);
    }
}

int main(void)
{
    T_RUN(test_map_drop_duplicate);
    T_RUN(test_reuse_and_args);
    T_RUN(test_runtime_errors);
    T_RUN(test_compile_errors);
    T_DONE();
}
