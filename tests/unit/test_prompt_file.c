/* lib/diffusion/prompt_file: the reference's sample-prompt formats (.txt lines with " --" options,
 * .toml [prompt] + [[prompt.subset]], .json lists) and our line-numbered errors. */
#include "test.h"

#include "base/error.h"
#include "diffusion/prompt_file.h"

static int parse(const char *name, const char *text, sd_prompt_list *l)
{
    return sd_prompt_file_parse(text, strlen(text), name, l);
}

static void test_txt(void)
{
    const char *txt =
        "\xef\xbb\xbf# a comment\n"
        "\n"
        "a cat, masterpiece --n lowres, bad hands --w 768 --h 512 --d 42 --s 20 --l 5.5\r\n"
        "   \t  \n"
        "  # not a comment: the reference only tests the first character\n"
        "dog --W 640 --H 448 --D 18446744073709551615 --S 0 --ss k_euler_a\r"
        "plain prompt   \n"
        "bird --s 5000 --cn ctrl.png --ctr 0.25 --rcfg 1 --fs 3.0 --g 3.5 --n  two spaces\n";
    sd_prompt_list l;
    T_EQ_INT(parse("p.txt", txt, &l), SD_OK);
    T_EQ_INT(l.n, 5);
    if (l.n != 5) { sd_prompt_list_free(&l); return; }
    sd_sample_prompt *p = &l.items[0];
    T_EQ_STR(p->prompt, "a cat, masterpiece");
    T_EQ_STR(p->negative_prompt, "lowres, bad hands");
    T_EQ_INT(p->width, 768);
    T_EQ_INT(p->height, 512);
    T_CHECK(p->has_seed && p->seed == 42);
    T_EQ_INT(p->steps, 20);
    T_NEAR(p->scale, 5.5, 0);
    T_EQ_INT(p->line, 3);
    T_EQ_INT(p->index, 0);
    T_CHECK(p->sampler == NULL && p->controlnet_image == NULL);
    p = &l.items[1];
    T_EQ_STR(p->prompt, "# not a comment: the reference only tests the first character");
    T_EQ_INT(p->width, 512);
    T_EQ_INT(p->height, 512);
    T_EQ_INT(p->steps, 30);
    T_NEAR(p->scale, 7.5, 0);
    T_CHECK(!p->has_seed && p->negative_prompt == NULL);
    T_EQ_INT(p->line, 5);
    p = &l.items[2];
    T_EQ_STR(p->prompt, "dog");
    T_EQ_INT(p->width, 640);
    T_EQ_INT(p->height, 448);
    T_CHECK(p->has_seed && p->seed == UINT64_MAX);
    T_EQ_INT(p->steps, 1); /* clamped like the reference */
    T_EQ_STR(p->sampler, "k_euler_a");
    T_EQ_INT(p->line, 6);
    p = &l.items[3];
    T_EQ_STR(p->prompt, "plain prompt");
    T_EQ_INT(p->line, 7);
    T_EQ_INT(p->index, 3);
    p = &l.items[4];
    T_EQ_STR(p->prompt, "bird");
    T_EQ_INT(p->steps, 1000);
    T_EQ_STR(p->controlnet_image, "ctrl.png");
    T_CHECK(p->has_cfg_trunc_ratio && p->cfg_trunc_ratio == 0.25);
    T_CHECK(p->has_renorm_cfg && p->renorm_cfg == 1);
    T_EQ_STR(p->flow_shift, "3.0");
    T_CHECK(p->has_guidance_scale && p->guidance_scale == 3.5);
    T_EQ_STR(p->negative_prompt, " two spaces");
    T_EQ_INT(p->line, 8);
    sd_prompt_list_free(&l);
    /* the last line without newline; a negative prompt keeps its trailing spaces as the
     * reference's split does */
    T_EQ_INT(parse("p.txt", "x --n trailing  --w 64", &l), SD_OK);
    T_EQ_INT(l.n, 1);
    if (l.n == 1) {
        T_EQ_STR(l.items[0].negative_prompt, "trailing ");
        T_EQ_INT(l.items[0].width, 64);
    }
    sd_prompt_list_free(&l);
    /* empty file / only comments */
    T_EQ_INT(parse("p.txt", "", &l), SD_OK);
    T_EQ_INT(l.n, 0);
    T_EQ_INT(parse("p.txt", "#x\n\n#y", &l), SD_OK);
    T_EQ_INT(l.n, 0);
    sd_prompt_list_free(&l);
}

static void expect_err(const char *name, const char *text, int code, const char *msg)
{
    sd_prompt_list l;
    int rc = parse(name, text, &l);
    T_CHECKF(rc == code, "%s: got %d want %d", text, rc, code);
    T_CHECKF(rc && strstr(sd_errmsg(), msg), "message '%s' lacks '%s'", sd_errmsg(), msg);
    T_CHECK(l.n == 0 && l.items == NULL);
    if (!rc) sd_prompt_list_free(&l);
}

static void test_txt_errors(void)
{
    expect_err("p.txt", "ok\nfine --w 512\ncat --x 3\n", SD_EFORMAT, "p.txt:3: unknown option '--x 3'");
    expect_err("p.txt", "cat --w abc", SD_EFORMAT, "p.txt:1: --w 'abc' is not a whole number");
    expect_err("p.txt", "cat --w 512px", SD_EFORMAT, "not a whole number");
    expect_err("p.txt", "cat --h 500", SD_EFORMAT, "p.txt:1: height 500 must be a multiple of 8");
    expect_err("p.txt", "cat --w 32", SD_EFORMAT, "width 32 must be a multiple of 8 from 64");
    expect_err("p.txt", "cat --w 99999999", SD_EFORMAT, "width");
    expect_err("p.txt", "cat --l 1.2.3", SD_EFORMAT, "--l '1.2.3' is not a number");
    expect_err("p.txt", "cat --l -1", SD_EFORMAT, "is not a number");
    expect_err("p.txt", "cat --l .", SD_EFORMAT, "is not a number");
    expect_err("p.txt", "cat --d -5", SD_EFORMAT, "is not a seed");
    expect_err("p.txt", "cat --d 18446744073709551616", SD_EFORMAT, "is not a seed");
    expect_err("p.txt", "cat --s", SD_EFORMAT, "option --s needs a value");
    expect_err("p.txt", "cat --n ", SD_EFORMAT, "needs a value"); /* stripped line: "cat --n" */
    expect_err("p.txt", "cat --ss euler_b", SD_EFORMAT, "p.txt:1: unknown sampler 'euler_b'");
    expect_err("p.txt", "cat --ctr x", SD_EFORMAT, "--ctr 'x' is not a number");
    expect_err("p.txt", "a\ncat \xff\xfe", SD_EFORMAT, "p.txt:2: invalid UTF-8 at byte 5");
    expect_err("p.csv", "cat", SD_EINVAL, "must end in .txt, .toml or .json");
    /* the option name is matched exactly (the reference's regexes need "NAME VALUE") */
    expect_err("p.txt", "cat --width 512", SD_EFORMAT, "unknown option '--width 512'");
}

static void test_toml(void)
{
    const char *t =
        "[prompt]\n"
        "negative_prompt = \"lowres\"\n"
        "width = 640\n"
        "sample_steps = 25\n"
        "scale = 6\n"
        "\n"
        "[[prompt.subset]]\n"
        "prompt = \"a cat\"\n"
        "seed = 7\n"
        "\n"
        "[[prompt.subset]]\n"
        "prompt = \"a dog\"\n"
        "height = 768\n"
        "sample_sampler = \"dpmsolver++\"\n";
    sd_prompt_list l;
    T_EQ_INT(parse("p.toml", t, &l), SD_OK);
    T_EQ_INT(l.n, 2);
    if (l.n == 2) {
        T_EQ_STR(l.items[0].prompt, "a cat");
        T_EQ_STR(l.items[0].negative_prompt, "lowres");
        T_EQ_INT(l.items[0].width, 640);
        T_EQ_INT(l.items[0].height, 512);
        T_EQ_INT(l.items[0].steps, 25);
        T_NEAR(l.items[0].scale, 6, 0);
        T_CHECK(l.items[0].has_seed && l.items[0].seed == 7);
        T_EQ_STR(l.items[1].prompt, "a dog");
        T_EQ_INT(l.items[1].height, 768);
        T_CHECK(!l.items[1].has_seed);
        T_EQ_STR(l.items[1].sampler, "dpmsolver++");
        T_EQ_INT(l.items[1].index, 1);
        T_EQ_INT(l.items[1].line, 0);
    }
    sd_prompt_list_free(&l);
    expect_err("p.toml", "[prompt]\nwidth = 512\n[[prompt.subset]]\nwidth = 768\n", SD_EFORMAT,
               "p.toml: prompt.subset entry 1: key 'width' is also in [prompt]");
    expect_err("p.toml", "[prompt]\n[[prompt.subset]]\nprompt = \"x\"\nsteps = 3\n", SD_EFORMAT,
               "p.toml: entry 1: unknown key 'steps'");
    expect_err("p.toml", "[prompt]\n[[prompt.subset]]\nprompt = 3\n", SD_EFORMAT, "'prompt' must be a string");
    expect_err("p.toml", "[prompt]\n[[prompt.subset]]\nwidth = 513\n", SD_EFORMAT, "width 513 must be a multiple of 8");
    expect_err("p.toml", "[prompt]\n[[prompt.subset]]\nsample_steps = 0\n", SD_EFORMAT, "'sample_steps' 0 must be a whole number from 1 to 1000");
    expect_err("p.toml", "[prompt]\n[[prompt.subset]]\nscale = \"7\"\n", SD_EFORMAT, "'scale' must be a number");
    expect_err("p.toml", "[other]\n", SD_EFORMAT, "no [prompt] table");
    expect_err("p.toml", "[prompt]\nwidth = 512\n", SD_EFORMAT, "no [[prompt.subset]] tables");
    expect_err("p.toml", "[prompt\n", SD_EFORMAT, "p.toml:1:");
}

static void test_json(void)
{
    const char *j = "[\"a cat --w 768 --n ugly\", {\"prompt\": \"a dog\", \"seed\": 3, \"scale\": 4.5, \"enum\": 9},"
                    " \"# not skipped in json\"]";
    sd_prompt_list l;
    T_EQ_INT(parse("p.json", j, &l), SD_OK);
    T_EQ_INT(l.n, 3);
    if (l.n == 3) {
        T_EQ_STR(l.items[0].prompt, "a cat");
        T_EQ_INT(l.items[0].width, 768);
        T_EQ_STR(l.items[0].negative_prompt, "ugly");
        T_EQ_STR(l.items[1].prompt, "a dog");
        T_CHECK(l.items[1].seed == 3);
        T_NEAR(l.items[1].scale, 4.5, 0);
        T_EQ_INT(l.items[1].index, 1); /* "enum" is the loader's, not the file's */
        T_EQ_STR(l.items[2].prompt, "# not skipped in json");
    }
    sd_prompt_list_free(&l);
    expect_err("p.json", "{\"prompt\": \"x\"}", SD_EFORMAT, "must be a JSON list");
    expect_err("p.json", "[1]", SD_EFORMAT, "p.json: entry 1: must be a string or an object");
    expect_err("p.json", "[\"ok\", \"bad --q 1\"]", SD_EFORMAT, "p.json: entry 2: unknown option '--q 1'");
    expect_err("p.json", "[", SD_EFORMAT, "p.json:");
    expect_err("p.json", "[{\"seed\": 1.5}]", SD_EFORMAT, "'seed' 1.5 must be a whole number");
}

static void test_load(void)
{
    const char *path = t_path("prompts.txt");
    const char *txt = "one --s 12\n# skip\ntwo\n";
    T_CHECK(t_write_file(path, txt, strlen(txt)) == 0);
    sd_prompt_list l;
    T_EQ_INT(sd_prompt_file_load(path, &l), SD_OK);
    T_EQ_INT(l.n, 2);
    if (l.n == 2) {
        T_EQ_INT(l.items[0].steps, 12);
        T_EQ_INT(l.items[1].line, 3);
    }
    sd_prompt_list_free(&l);
    sd_prompt_list_free(&l);
    T_EQ_INT(sd_prompt_file_load(t_path("missing.txt"), &l), SD_ENOTFOUND);
    T_EQ_INT(sd_prompt_file_load(t_path("x.yaml"), &l), SD_EINVAL);
    sd_sample_prompt p;
    T_EQ_INT(sd_prompt_line_parse("solo --h 1024", NULL, &p), SD_OK);
    T_EQ_INT(p.height, 1024);
    sd_sample_prompt_free(&p);
    T_EQ_INT(sd_prompt_line_parse("solo --zz 1", "cmdline", &p), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "cmdline: unknown option") != NULL);
}

int main(void)
{
    T_RUN(test_txt);
    T_RUN(test_txt_errors);
    T_RUN(test_toml);
    T_RUN(test_json);
    T_RUN(test_load);
    T_DONE();
}
