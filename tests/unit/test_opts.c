#include "test.h"
#include "base/error.h"
#include "base/opts.h"
#include "io/cmdline.h"

#include <stdint.h>
#include <unistd.h>

static struct {
    int flag, on, noneg, boolv, batch, prec, seed;
    int64_t big;
    float lrf;
    double lr, noise;
    const char *out, *secret;
    sd_opt_list reso, nargs, tags, csv, ws;
    int hidden;
} a;

static const sd_opt table[] = {
    { .name = "train_batch_size", .short_name = 'b', .type = SD_OPT_INT, .dest = &a.batch, .def = "1",
      SD_OPT_RANGE(1, 4096), .group = "Training", .help = "images per step" },
    { .name = "learning_rate", .type = SD_OPT_DOUBLE, .dest = &a.lr, .def = "2e-6", SD_OPT_POSITIVE,
      .group = "Training", .help = "base learning rate" },
    { .name = "unet_lr", .type = SD_OPT_FLOAT, .dest = &a.lrf, .group = "Training" },
    { .name = "noise_offset", .type = SD_OPT_DOUBLE, .dest = &a.noise, .def = "0", SD_OPT_RANGE(-1, 1) },
    { .name = "seed", .short_name = 's', .type = SD_OPT_INT, .dest = &a.seed, .help = "random seed" },
    { .name = "max_steps", .type = SD_OPT_INT64, .dest = &a.big, .def = "1600", SD_OPT_ATLEAST(0) },
    { .name = "mixed_precision", .type = SD_OPT_ENUM, .dest = &a.prec, .def = "no", .choices = "no|fp16|bf16",
      .help = "mixed precision" },
    { .name = "output_dir", .short_name = 'o', .type = SD_OPT_STRING, .dest = &a.out, .metavar = "DIR",
      .group = "Output", .help = "where to write" },
    { .name = "flag", .short_name = 'f', .type = SD_OPT_FLAG, .dest = &a.flag, .help = "a flag" },
    { .name = "on", .type = SD_OPT_FLAG, .dest = &a.on, .def = "true", .help = "on by default" },
    { .name = "noneg", .short_name = 'q', .type = SD_OPT_FLAG, .dest = &a.noneg, .flags = SD_OPTF_NO_NEGATE },
    { .name = "use_bool", .type = SD_OPT_BOOL, .dest = &a.boolv, .def = "false" },
    { .name = "resolution", .type = SD_OPT_INTS, .dest = &a.reso, .def = "512", .nmin = 1, .nmax = 2,
      SD_OPT_ATLEAST(64), .help = "WIDTH[,HEIGHT]" },
    { .name = "network_args", .type = SD_OPT_STRINGS, .dest = &a.nargs, .flags = SD_OPTF_NARGS },
    { .name = "tag", .type = SD_OPT_STRINGS, .dest = &a.tags, .flags = SD_OPTF_APPEND, .alias = "tags" },
    { .name = "keep", .type = SD_OPT_STRINGS, .dest = &a.csv, .flags = SD_OPTF_COMMA },
    { .name = "weights", .type = SD_OPT_DOUBLES, .dest = &a.ws, SD_OPT_UNIT },
    { .name = "wandb_api_key", .type = SD_OPT_STRING, .dest = &a.secret, .flags = SD_OPTF_NO_OUTPUT },
    { .name = "secret_hidden", .type = SD_OPT_FLAG, .dest = &a.hidden, .flags = SD_OPTF_HIDDEN },
    SD_OPT_END
};

static int run_parse(sd_opts *o, const char **args, int cmdline)
{
    static char *argv[64];
    int n = 0;
    argv[n++] = "sd-test";
    while (args[n - 1] && n < 63) { argv[n] = (char *)args[n - 1]; n++; }
    argv[n] = NULL;
    return cmdline ? sd_cmdline_parse(o, n, argv) : sd_opts_parse(o, n, argv);
}
#define ARGS(...) ((const char *[]){ __VA_ARGS__, NULL })
#define PARSE(o, ...) run_parse(o, ARGS(__VA_ARGS__), 0)
#define CMDLINE(o, ...) run_parse(o, ARGS(__VA_ARGS__), 1)

static void fresh(sd_opts *o)
{
    memset(&a, 0, sizeof a);
    a.seed = -1;
    int rc = sd_opts_init(o, "sd-test", table);
    if (rc) printf("#   init: %s\n", sd_errmsg());
}

#define HAS(s) T_CHECKF(strstr(sd_errmsg(), s) != NULL, "message '%s' lacks '%s'", sd_errmsg(), s)

static void test_defaults(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(a.batch, 1);
    T_NEAR(a.lr, 2e-6, 0);
    T_EQ_INT(a.prec, 0);
    T_EQ_INT(a.on, 1);
    T_EQ_INT(a.big, 1600);
    T_EQ_INT(a.reso.n, 1);
    T_EQ_INT(a.reso.i[0], 512);
    T_CHECK(a.out == NULL);
    T_EQ_INT(a.seed, -1);   /* None: untouched */
    T_EQ_INT(sd_opts_source(&o, "train_batch_size"), SD_SRC_DEFAULT);
    T_EQ_INT(sd_opts_source(&o, "seed"), SD_SRC_NONE);
    T_EQ_INT(sd_opts_source(&o, "output-dir"), SD_SRC_NONE);
    T_EQ_INT(sd_opts_source(&o, "nope"), -1);
    T_CHECK(!sd_opts_is_set(&o, &a.batch));
    T_EQ_INT(PARSE(&o, "--seed", "5"), SD_OK);
    T_EQ_INT(a.seed, 5);
    T_CHECK(sd_opts_is_set(&o, &a.seed));
    T_EQ_INT(sd_opts_source_of(&o, &a.seed), SD_SRC_CMDLINE);
    T_EQ_STR(sd_opts_source_name(SD_SRC_CMDLINE), "command line");
    T_CHECK(sd_opts_find(&o, "train-batch-size") == &table[0]);
    T_CHECK(sd_opts_find_dest(&o, &a.lr) == &table[1]);
    T_EQ_INT(o.npos, 0);
    sd_opts_free(&o);
}

static void test_spellings(void)
{
    const char *forms[][3] = {
        { "--train_batch_size", "4", NULL }, { "--train-batch-size", "4", NULL },
        { "--train-batch_size", "4", NULL }, { "--train_batch_size=4", NULL, NULL },
        { "--train-batch-size=4", NULL, NULL }, { "-b", "4", NULL }, { "-b4", NULL, NULL },
    };
    for (size_t k = 0; k < sizeof forms / sizeof *forms; k++) {
        sd_opts o;
        fresh(&o);
        int rc = run_parse(&o, forms[k], 0);
        T_CHECKF(rc == SD_OK && a.batch == 4, "form %zu: rc %d batch %d %s", k, rc, a.batch, sd_errmsg());
        T_EQ_INT(sd_opts_source(&o, "train_batch_size"), SD_SRC_CMDLINE);
        sd_opts_free(&o);
    }
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "-b", "2", "--train-batch-size", "3", "--learning-rate=1e-4"), SD_OK);
    T_EQ_INT(a.batch, 3);   /* last wins */
    T_NEAR(a.lr, 1e-4, 0);
    T_EQ_INT(PARSE(&o, "--tags", "x", "--tag=y"), SD_OK);   /* alias */
    T_EQ_INT(a.tags.n, 2);
    sd_opts_free(&o);
}

static void test_flags(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "--flag"), SD_OK);
    T_EQ_INT(a.flag, 1);
    T_EQ_INT(PARSE(&o, "--no-flag"), SD_OK);
    T_EQ_INT(a.flag, 0);
    T_EQ_INT(PARSE(&o, "--flag=yes"), SD_OK);
    T_EQ_INT(a.flag, 1);
    T_EQ_INT(PARSE(&o, "--no_flag"), SD_OK);
    T_EQ_INT(a.flag, 0);
    T_EQ_INT(PARSE(&o, "--flag=TRUE"), SD_OK);
    T_EQ_INT(a.flag, 1);
    T_EQ_INT(PARSE(&o, "--flag=off"), SD_OK);
    T_EQ_INT(a.flag, 0);
    T_EQ_INT(PARSE(&o, "--no-on"), SD_OK);
    T_EQ_INT(a.on, 0);
    T_EQ_INT(PARSE(&o, "-fq"), SD_OK);   /* cluster */
    T_EQ_INT(a.flag, 1);
    T_EQ_INT(a.noneg, 1);
    T_EQ_INT(PARSE(&o, "--flag", "pos"), SD_OK);   /* a flag does not take the next argument */
    T_EQ_INT(o.npos, 1);
    T_EQ_INT(PARSE(&o, "--flag=maybe"), SD_EUSAGE);
    HAS("option '--flag'");
    HAS("invalid boolean 'maybe'");
    T_EQ_INT(PARSE(&o, "--flag="), SD_EUSAGE);
    T_EQ_INT(PARSE(&o, "--no-flag=1"), SD_EUSAGE);
    HAS("takes no value");
    T_EQ_INT(PARSE(&o, "--no-noneg"), SD_EUSAGE);
    HAS("unknown option '--no-noneg'");
    T_EQ_INT(PARSE(&o, "--no-seed"), SD_EUSAGE);   /* only flags negate */
    T_EQ_INT(PARSE(&o, "--use_bool", "true"), SD_OK);
    T_EQ_INT(a.boolv, 1);
    T_EQ_INT(PARSE(&o, "--use-bool=0"), SD_OK);
    T_EQ_INT(a.boolv, 0);
    T_EQ_INT(PARSE(&o, "--use_bool"), SD_EUSAGE);
    HAS("option '--use_bool' needs a value");
    T_EQ_INT(PARSE(&o, "--use_bool", "2"), SD_EUSAGE);
    sd_opts_free(&o);
}

static void test_numbers(void)
{
    sd_opts o;
    fresh(&o);
    struct { const char *opt, *val, *msg; } bad[] = {
        { "--train_batch_size", "12abc", "invalid integer '12abc'" },
        { "--train_batch_size", "", "invalid integer ''" },
        { "--train_batch_size", "1.5", "invalid integer '1.5'" },
        { "--train_batch_size", "0x10", "invalid integer '0x10'" },
        { "--train_batch_size", " 5", "invalid integer ' 5'" },
        { "--train_batch_size", "5 ", "invalid integer '5 '" },
        { "--train_batch_size", "+", "invalid integer '+'" },
        { "--train_batch_size", "99999999999", "out of range [-2147483648, 2147483647]" },
        { "--train_batch_size", "0", "value 0 is out of range [1, 4096]" },
        { "--train_batch_size", "4097", "value 4097 is out of range [1, 4096]" },
        { "--train_batch_size", "-3", "value -3 is out of range [1, 4096]" },
        { "--max_steps", "9223372036854775808", "out of range" },
        { "--max_steps", "-1", "value -1 is out of range (must be >= 0)" },
        { "--learning_rate", "abc", "invalid number 'abc'" },
        { "--learning_rate", "", "invalid number ''" },
        { "--learning_rate", "1e-4x", "invalid number '1e-4x'" },
        { "--learning_rate", "0x1p3", "invalid number '0x1p3'" },
        { "--learning_rate", "1e400", "out of range for a double" },
        { "--learning_rate", "0", "value 0 is out of range (must be > 0)" },
        { "--learning_rate", "-1e-4", "value -1e-4 is out of range (must be > 0)" },
        { "--learning_rate", "nan", "value nan is out of range" },
        { "--unet_lr", "1e39", "out of range for a float" },
        { "--noise_offset", "1.5", "value 1.5 is out of range [-1, 1]" },
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int rc = PARSE(&o, bad[k].opt, bad[k].val);
        T_CHECKF(rc == SD_EUSAGE, "%s %s: rc %d", bad[k].opt, bad[k].val, rc);
        char want[64];
        snprintf(want, sizeof want, "option '%s'", bad[k].opt);
        HAS(want);
        HAS(bad[k].msg);
    }
    T_EQ_INT(a.batch, 1);   /* failed values leave the destination alone */
    T_EQ_INT(PARSE(&o, "--train_batch_size", "+7", "--max_steps", "9223372036854775807"), SD_OK);
    T_EQ_INT(a.batch, 7);
    T_CHECK(a.big == INT64_MAX);
    T_EQ_INT(PARSE(&o, "--noise_offset", "-0.5", "--unet_lr", "1e-4", "--learning_rate", ".5"), SD_OK);
    T_NEAR(a.noise, -0.5, 0);
    T_CHECK(a.lrf == 1e-4f);
    T_NEAR(a.lr, 0.5, 0);
    T_EQ_INT(PARSE(&o, "--learning_rate", "inf", "--unet_lr=-inf", "--noise_offset=1e-400"), SD_OK);
    T_CHECK(isinf(a.lr) && isinf(a.lrf) && a.lrf < 0);
    T_NEAR(a.noise, 0, 0);   /* underflow to 0 is fine, as in Python */
    T_EQ_INT(PARSE(&o, "--seed", "-7"), SD_OK);   /* negative number as a value */
    T_EQ_INT(a.seed, -7);
    sd_opts_free(&o);
}

static void test_enum_string(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "--mixed_precision", "bf16"), SD_OK);
    T_EQ_INT(a.prec, 2);
    T_EQ_STR(sd_opts_enum_name(&table[6], a.prec), "bf16");
    T_CHECK(sd_opts_enum_name(&table[6], 3) == NULL);
    T_EQ_INT(PARSE(&o, "--mixed-precision=fp32"), SD_EUSAGE);
    HAS("option '--mixed-precision': invalid choice 'fp32' (choose from no, fp16, bf16)");
    T_EQ_INT(PARSE(&o, "--mixed_precision", "BF16"), SD_EUSAGE);
    T_EQ_INT(PARSE(&o, "--mixed_precision", "fp"), SD_EUSAGE);
    T_EQ_INT(a.prec, 2);
    T_EQ_INT(PARSE(&o, "-o", "out dir/x"), SD_OK);
    T_EQ_STR(a.out, "out dir/x");
    T_EQ_INT(PARSE(&o, "--output_dir", "-"), SD_OK);
    T_EQ_STR(a.out, "-");
    T_EQ_INT(PARSE(&o, "--output_dir", "-x"), SD_EUSAGE);
    HAS("option '--output_dir' needs a value");
    T_EQ_INT(PARSE(&o, "--output_dir=-x"), SD_OK);
    T_EQ_STR(a.out, "-x");
    T_EQ_INT(PARSE(&o, "--output_dir="), SD_OK);
    T_EQ_STR(a.out, "");
    T_EQ_INT(PARSE(&o, "-ofoo"), SD_OK);
    T_EQ_STR(a.out, "foo");
    T_EQ_INT(PARSE(&o, "-fo", "bar"), SD_OK);
    T_EQ_STR(a.out, "bar");
    T_EQ_INT(PARSE(&o, "--output_dir"), SD_EUSAGE);
    HAS("needs a value");
    T_EQ_INT(PARSE(&o, "--seed", "--flag"), SD_EUSAGE);
    HAS("option '--seed' needs a value");
    sd_opts_free(&o);
}

static void test_lists(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "--resolution", "512,768"), SD_OK);
    T_EQ_INT(a.reso.n, 2);
    T_EQ_INT(a.reso.i[0], 512);
    T_EQ_INT(a.reso.i[1], 768);
    T_EQ_INT(PARSE(&o, "--resolution=1024"), SD_OK);   /* replaces */
    T_EQ_INT(a.reso.n, 1);
    T_EQ_INT(a.reso.i[0], 1024);
    T_EQ_INT(PARSE(&o, "--resolution", "512,768,1024"), SD_EUSAGE);
    HAS("option '--resolution': expected 1 to 2 values, got 3");
    T_EQ_INT(PARSE(&o, "--resolution", "512,abc"), SD_EUSAGE);
    HAS("invalid integer 'abc'");
    T_EQ_INT(PARSE(&o, "--resolution", "512,"), SD_EUSAGE);
    HAS("invalid integer ''");
    T_EQ_INT(PARSE(&o, "--resolution", "32"), SD_EUSAGE);
    HAS("value 32 is out of range (must be >= 64)");
    T_EQ_INT(a.reso.n, 1);
    T_EQ_INT(a.reso.i[0], 1024);

    T_EQ_INT(PARSE(&o, "--network_args", "conv_dim=4", "conv_alpha=1,2", "-f", "pos"), SD_OK);
    T_EQ_INT(a.nargs.n, 2);
    T_EQ_STR(a.nargs.s[0], "conv_dim=4");
    T_EQ_STR(a.nargs.s[1], "conv_alpha=1,2");   /* strings are not split */
    T_EQ_INT(o.npos, 1);
    T_EQ_INT(PARSE(&o, "--network_args"), SD_OK);   /* nargs="*": may be empty */
    T_EQ_INT(a.nargs.n, 0);
    T_EQ_INT(PARSE(&o, "--network-args=a", "b"), SD_OK);   /* = form takes one */
    T_EQ_INT(a.nargs.n, 1);
    T_EQ_INT(o.npos, 2);

    T_EQ_INT(PARSE(&o, "--tag", "x", "--tag", "y,z"), SD_OK);   /* append */
    T_EQ_INT(a.tags.n, 2);
    T_EQ_STR(a.tags.s[1], "y,z");
    T_EQ_INT(PARSE(&o, "--keep", "a,b,,c"), SD_OK);
    T_EQ_INT(a.csv.n, 4);
    T_EQ_STR(a.csv.s[3], "c");
    T_EQ_STR(a.csv.s[2], "");
    T_EQ_INT(PARSE(&o, "--weights", "0.5,1,0"), SD_OK);
    T_EQ_INT(a.ws.n, 3);
    T_NEAR(a.ws.d[0], 0.5, 0);
    T_EQ_INT(PARSE(&o, "--weights", "0.5,1.5"), SD_EUSAGE);
    HAS("value 1.5 is out of range [0, 1]");
    sd_opts_free(&o);
}

static void test_positionals(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "a.png", "--flag", "b.png", "-", "-5", "--", "--c", "-d"), SD_OK);
    T_EQ_INT(o.npos, 6);
    const char *want[] = { "a.png", "b.png", "-", "-5", "--c", "-d" };
    for (int k = 0; k < 6 && k < o.npos; k++) T_EQ_STR(o.pos[k], want[k]);
    T_CHECK(o.pos[o.npos] == NULL);
    sd_opts_free(&o);
    fresh(&o);
    o.flags = SD_OPTS_NO_POSITIONAL;
    T_EQ_INT(PARSE(&o, "--flag", "extra"), SD_EUSAGE);
    HAS("unexpected argument 'extra'");
    sd_opts_free(&o);
}

static void test_unknown(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "--lerning_rate", "1"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "unknown option '--lerning_rate' (did you mean '--learning_rate'?)");
    T_EQ_INT(PARSE(&o, "--learning-rat=1"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "unknown option '--learning-rat' (did you mean '--learning_rate'?)");
    T_EQ_INT(PARSE(&o, "--resolutoin", "1"), SD_EUSAGE);   /* transposition */
    HAS("did you mean '--resolution'");
    T_EQ_INT(PARSE(&o, "--train_batch"), SD_EUSAGE);   /* unique prefix: suggested, not accepted */
    HAS("did you mean '--train_batch_size'");
    T_EQ_INT(PARSE(&o, "--zzzzzz"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "unknown option '--zzzzzz'");
    T_EQ_INT(PARSE(&o, "--secret_hidde"), SD_EUSAGE);   /* hidden options are not suggested */
    T_EQ_STR(sd_errmsg(), "unknown option '--secret_hidde'");
    T_EQ_INT(PARSE(&o, "--secret_hidden"), SD_OK);       /* but work */
    T_EQ_INT(PARSE(&o, "-z"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "unknown option '-z'");
    T_EQ_INT(PARSE(&o, "-fz"), SD_EUSAGE);
    T_EQ_STR(sd_errmsg(), "unknown option '-z' in '-fz'");
    T_EQ_INT(PARSE(&o, "--config_file", "x"), SD_EUSAGE);   /* built-in off without SD_OPTS_CONFIG */
    T_EQ_INT(PARSE(&o, "---x"), SD_EUSAGE);
    char longopt[400];
    memset(longopt, 'a', sizeof longopt - 1);
    longopt[0] = longopt[1] = '-';
    longopt[sizeof longopt - 1] = 0;
    T_EQ_INT(PARSE(&o, longopt), SD_EUSAGE);
    HAS("unknown option '--aaaa");
    T_CHECK(strlen(sd_errmsg()) < 200);
    T_CHECK(sd_opts_find(&o, longopt + 2) == NULL);
    T_EQ_INT(sd_opts_set_jv(&o, longopt + 2, jv_true(), SD_SRC_CONFIG), SD_ENOTFOUND);
    T_EQ_INT(PARSE(&o, "--"), SD_OK);
    sd_opts_free(&o);
}

static void test_help_version(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "--bogus", "--help"), SD_OPTS_HELP);
    T_EQ_INT(PARSE(&o, "--seed", "x", "-h"), SD_OPTS_HELP);
    T_EQ_INT(PARSE(&o, "-fh"), SD_OPTS_HELP);
    T_EQ_INT(PARSE(&o, "--version"), SD_OPTS_VERSION);
    T_EQ_INT(PARSE(&o, "--", "--help"), SD_OK);
    T_EQ_INT(PARSE(&o, "--help=1"), SD_OPTS_HELP);

    o.usage = "[OPTIONS] [IMAGE...]";
    o.description = "Test tool.";
    o.epilog = "Exit status: 0 ok.";
    o.version = "9.9";
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    sd_opts_help(&o, f);
    sd_opts_version(&o, f);
    fclose(f);
    const char *want[] = {
        "Usage: sd-test [OPTIONS] [IMAGE...]\n\nTest tool.\n",
        "\nTraining:\n  -b, --train_batch_size N    images per step (default: 1; range [1, 4096])\n",
        "      --learning_rate X       base learning rate (default: 2e-6; range > 0)\n",
        "\nOutput:\n  -o, --output_dir DIR        where to write\n",
        "      --mixed_precision {no,fp16,bf16}\n                              mixed precision (default: no)\n",
        "      --on                    on by default (default: on; --no-on turns it off)\n",
        "      --resolution N[,N...]   WIDTH[,HEIGHT] (default: 512; range >= 64; 1 to 2\n"
        "                              values)\n",
        "      --network_args STR [STR ...]\n",
        "      --tag STR               (also --tags)\n",
        "      --weights X[,X...]      (range [0, 1])\n",
        "\nGeneral:\n  -h, --help                  show this help and exit\n",
        "--kebab-case",
        "\nExit status: 0 ok.\n",
        "sd-test 9.9\n",
    };
    for (size_t k = 0; k < sizeof want / sizeof *want; k++)
        T_CHECKF(strstr(buf, want[k]) != NULL, "help lacks [%s]:\n%s", want[k], buf);
    T_CHECK(strstr(buf, "secret_hidden") == NULL);
    T_CHECK(strstr(buf, "config_file") == NULL);
    /* groups appear once each, Training before Options before Output */
    char *tr = strstr(buf, "\nTraining:"), *op = strstr(buf, "\nOptions:"), *ou = strstr(buf, "\nOutput:");
    T_CHECK(tr && op && ou && tr < op && op < ou);
    T_CHECK(tr && !strstr(tr + 1, "\nTraining:"));
    /* no line longer than 79 columns unless it is one long word */
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        T_CHECKF(len <= 79, "long line: %.*s", (int)len, line);
        line = nl ? nl + 1 : NULL;
    }
    free(buf);

    o.flags = SD_OPTS_CONFIG;
    buf = NULL;
    f = open_memstream(&buf, &n);
    sd_opts_help(&o, f);
    fclose(f);
    T_CHECK(strstr(buf, "      --config_file FILE      read options from a TOML file") != NULL);
    T_CHECK(strstr(buf, "      --output_config ") != NULL);
    free(buf);
    sd_opts_free(&o);
}

static void test_bad_tables(void)
{
    int x = 0, y = 0;
    struct { sd_opt t[3]; const char *msg; } cases[] = {
        { { { .name = "a", .type = SD_OPT_INT, .dest = &x }, { .name = "a", .type = SD_OPT_INT, .dest = &y } },
          "'a' is defined twice" },
        { { { .name = "Bad-Name", .type = SD_OPT_INT, .dest = &x } }, "bad option name 'Bad-Name'" },
        { { { .name = "a", .short_name = 'x', .type = SD_OPT_INT, .dest = &x },
            { .name = "b", .short_name = 'x', .type = SD_OPT_INT, .dest = &y } }, "-x is used by 'a' and 'b'" },
        { { { .name = "a", .short_name = 'h', .type = SD_OPT_FLAG, .dest = &x } }, "-h is used by" },
        { { { .name = "help", .type = SD_OPT_FLAG, .dest = &x } }, "'help' is defined twice" },
        { { { .name = "a", .type = SD_OPT_INT, .dest = &x, .def = "abc" } }, "a: bad default 'abc': invalid integer" },
        { { { .name = "a", .type = SD_OPT_INT, .dest = &x, .def = "0", SD_OPT_ATLEAST(1) } }, "bad default '0'" },
        { { { .name = "a", .type = SD_OPT_ENUM, .dest = &x } }, "enum without choices" },
        { { { .name = "a", .type = SD_OPT_INT } }, "no destination" },
        { { { .name = "a", .type = SD_OPT_INT, .dest = &x, .flags = SD_OPTF_NARGS } }, "list flags" },
        { { { .name = "a", .type = SD_OPT_INT, .dest = &x, .alias = "b" },
            { .name = "b", .type = SD_OPT_INT, .dest = &y } }, "'b' is defined twice" },
        { { { .name = "", .type = SD_OPT_INT, .dest = &x } }, "bad option name ''" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        sd_opts o;
        int rc = sd_opts_init(&o, "t", cases[k].t);
        T_CHECKF(rc == SD_ESTATE, "case %zu: rc %d", k, rc);
        T_CHECKF(strstr(sd_errmsg(), cases[k].msg) != NULL, "case %zu: '%s'", k, sd_errmsg());
        T_CHECK(o.all == NULL);
        sd_opts_free(&o);   /* harmless after a failed init */
    }
    sd_opts o;
    T_EQ_INT(sd_opts_init(&o, "t", NULL), SD_OK);   /* built-ins only */
    T_EQ_INT(sd_opts_count(&o), 4);
    sd_opts_free(&o);
}

static jv J(const char *text)
{
    jv v = jv_parse(text);
    if (!jv_is_valid(v)) printf("#   bad JSON in test: %s\n", text);
    return v;
}

static int apply(sd_opts *o, const char *json)
{
    jv v = J(json);
    int rc = sd_opts_apply_config(o, v, "cfg.toml");
    jv_free(v);
    return rc;
}

static void test_config_values(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(apply(&o, "{\"train_batch_size\": 8, \"model\": {\"learning_rate\": 1e-4, \"mixed-precision\": \"fp16\"},"
                       " \"x\": {\"y\": {\"resolution\": \"512,768\", \"flag\": true}}, \"output_dir\": \"o\","
                       " \"seed\": \"42\", \"unet_lr\": \"5e-5\", \"weights\": [0, 0.25, \"1\"], \"tag\": \"one\","
                       " \"max_steps\": 1e6, \"keep\": 12, \"noise_offset\": null, \"on\": false}"),
             SD_OK);
    if (*sd_errmsg()) printf("#   %s\n", sd_errmsg());
    T_EQ_INT(a.batch, 8);
    T_NEAR(a.lr, 1e-4, 0);
    T_EQ_INT(a.prec, 1);
    T_EQ_INT(a.reso.n, 2);
    T_EQ_INT(a.reso.i[1], 768);
    T_EQ_INT(a.flag, 1);
    T_EQ_INT(a.on, 0);
    T_EQ_STR(a.out, "o");
    T_EQ_INT(a.seed, 42);
    T_CHECK(a.lrf == 5e-5f);
    T_EQ_INT(a.ws.n, 3);
    T_NEAR(a.ws.d[2], 1, 0);
    T_EQ_INT(a.tags.n, 1);
    T_EQ_INT(a.big, 1000000);
    T_EQ_INT(a.csv.n, 1);
    T_EQ_STR(a.csv.s[0], "12");
    T_NEAR(a.noise, 0, 0);
    T_EQ_INT(sd_opts_source(&o, "noise_offset"), SD_SRC_DEFAULT);   /* null: skipped */
    T_EQ_INT(sd_opts_source(&o, "train_batch_size"), SD_SRC_CONFIG);
    T_EQ_INT(sd_opts_source(&o, "learning_rate"), SD_SRC_CONFIG);

    o.flags = SD_OPTS_CONFIG;
    /* later wins across tables */
    T_EQ_INT(apply(&o, "{\"a\": {\"seed\": 1}, \"b\": {\"seed\": 2}}"), SD_OK);
    T_EQ_INT(a.seed, 2);

    struct { const char *json, *msg; } bad[] = {
        { "{\"train_batch_size\": \"abc\"}", "cfg.toml: train_batch_size: invalid integer 'abc'" },
        { "{\"train_batch_size\": 2.5}", "cfg.toml: train_batch_size: expected an integer, got 2.5" },
        { "{\"train_batch_size\": 0}", "cfg.toml: train_batch_size: value 0 is out of range [1, 4096]" },
        { "{\"train_batch_size\": true}", "cfg.toml: train_batch_size: expected an integer, got a boolean" },
        { "{\"train_batch_size\": [1]}", "cfg.toml: train_batch_size: expected an integer, got an array" },
        { "{\"seed\": 1e10}", "cfg.toml: seed: value 10000000000 is out of range" },
        { "{\"flag\": 1}", "cfg.toml: flag: expected true or false, got a number" },
        { "{\"flag\": \"true\"}", "cfg.toml: flag: expected true or false, got a string" },
        { "{\"learning_rate\": -1}", "cfg.toml: learning_rate: value -1 is out of range (must be > 0)" },
        { "{\"learning_rate\": \"fast\"}", "cfg.toml: learning_rate: invalid number 'fast'" },
        { "{\"unet_lr\": 1e300}", "cfg.toml: unet_lr: value 1.0000000000000001e+300 is out of range for a float" },
        { "{\"mixed_precision\": \"fp8\"}", "cfg.toml: mixed_precision: invalid choice 'fp8'" },
        { "{\"mixed_precision\": 16}", "cfg.toml: mixed_precision: expected a string, got a number" },
        { "{\"output_dir\": false}", "cfg.toml: output_dir: expected a string, got a boolean" },
        { "{\"resolution\": [512, \"x\"]}", "cfg.toml: resolution: element 2: invalid integer 'x'" },
        { "{\"resolution\": [512, 512, 512]}", "cfg.toml: resolution: expected 1 to 2 values, got 3" },
        { "{\"resolution\": [512, true]}", "cfg.toml: resolution: element 2: expected an integer, got a boolean" },
        { "{\"resolution\": []}", "cfg.toml: resolution: expected 1 to 2 values, got 0" },
        { "{\"resolution\": true}", "cfg.toml: resolution: expected an array of integers, got a boolean" },
        { "{\"weights\": [2]}", "cfg.toml: weights: element 1: value 2 is out of range [0, 1]" },
        { "{\"lerning_rate\": 1}", "cfg.toml: unknown key 'lerning_rate' (did you mean 'learning_rate'?)" },
        { "{\"s\": {\"t\": {\"qqqqqqq\": 1}}}", "cfg.toml: unknown key 'qqqqqqq'" },
        { "{\"config_file\": \"x\"}", "cfg.toml: config_file: not allowed in a config file" },
        { "{\"help\": true}", "cfg.toml: help: not allowed in a config file" },
        { "[1, 2]", "cfg.toml: expected a table of options, got an array" },
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int rc = apply(&o, bad[k].json);
        T_CHECKF(rc == SD_EUSAGE, "%s: rc %d", bad[k].json, rc);
        T_CHECKF(strstr(sd_errmsg(), bad[k].msg) != NULL, "%s: got '%s' want '%s'", bad[k].json, sd_errmsg(),
                 bad[k].msg);
    }
    T_EQ_INT(a.batch, 8);   /* unchanged by failures */
    sd_opts_free(&o);

    /* lenient tables collect unknown keys */
    fresh(&o);
    o.flags = SD_OPTS_LENIENT;
    T_EQ_INT(apply(&o, "{\"foo\": 1, \"t\": {\"bar\": [1], \"seed\": 3}}"), SD_OK);
    T_EQ_INT(o.nunknown, 2);
    if (o.nunknown == 2) {
        T_EQ_STR(o.unknown[0], "foo");
        T_EQ_STR(o.unknown[1], "bar");
        T_EQ_INT(jv_get_kind(o.unknown_value[0]), JV_KIND_NUMBER);   /* with their values */
        T_CHECK(jv_get_kind(o.unknown_value[1]) == JV_KIND_ARRAY && jv_array_length(jv_copy(o.unknown_value[1])) == 1);
    }
    T_EQ_INT(a.seed, 3);
    /* sd_opts_set / sd_opts_set_jv directly */
    T_EQ_INT(sd_opts_set(&o, "train-batch-size", "16", SD_SRC_CODE), SD_OK);
    T_EQ_INT(a.batch, 16);
    T_EQ_INT(sd_opts_source(&o, "train_batch_size"), SD_SRC_CODE);
    T_EQ_INT(sd_opts_set(&o, "nope", "1", SD_SRC_CODE), SD_ENOTFOUND);
    T_EQ_INT(sd_opts_set(&o, "seed", "x", SD_SRC_CODE), SD_EUSAGE);
    HAS("option '--seed': invalid integer 'x'");
    T_EQ_INT(sd_opts_set_jv(&o, "seed", jv_number(9), SD_SRC_CONFIG), SD_OK);
    T_EQ_INT(a.seed, 9);
    T_EQ_INT(sd_opts_set_jv(&o, "seeds", jv_number(9), SD_SRC_CONFIG), SD_ENOTFOUND);
    HAS("unknown key 'seeds' (did you mean 'seed'?)");
    sd_opts_free(&o);
}

/* Command line > config > defaults, with a config that also checks overridden values. */
static void test_config_precedence(void)
{
    sd_opts o;
    fresh(&o);
    T_EQ_INT(PARSE(&o, "--train_batch_size", "3", "--tag", "cli"), SD_OK);
    T_EQ_INT(apply(&o, "{\"train_batch_size\": 8, \"learning_rate\": 0.5, \"tag\": [\"cfg\"]}"), SD_OK);
    T_EQ_INT(a.batch, 3);
    T_EQ_INT(sd_opts_source(&o, "train_batch_size"), SD_SRC_CMDLINE);
    T_NEAR(a.lr, 0.5, 0);
    T_EQ_INT(a.tags.n, 1);
    T_EQ_STR(a.tags.s[0], "cli");
    T_EQ_INT(apply(&o, "{\"train_batch_size\": \"many\"}"), SD_EUSAGE);   /* checked though overridden */
    T_EQ_INT(a.batch, 3);
    sd_opts_free(&o);
}

static void write_text(const char *path, const char *text)
{
    T_EQ_INT(t_write_file(path, text, strlen(text)), 0);
}

static void test_cmdline_files(void)
{
    sd_opts o;
    const char *toml = "# training\nseed = 10\n[model]\nlearning_rate = 1e-4\nmixed_precision = \"bf16\"\n"
                       "[dataset]\nresolution = \"640,512\"\ntrain_batch_size = 2\n[later]\nseed = 11\n";
    write_text(t_path("cfg.toml"), toml);
    /* ".toml" appended, tables flattened, later wins, command line wins */
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    char base[512];
    snprintf(base, sizeof base, "%s", t_path("cfg"));
    T_EQ_INT(CMDLINE(&o, "--config_file", base, "--train-batch-size", "6"), SD_OK);
    if (*sd_errmsg()) printf("#   %s\n", sd_errmsg());
    T_EQ_STR(o.config_file, base);
    T_EQ_INT(a.seed, 11);
    T_NEAR(a.lr, 1e-4, 0);
    T_EQ_INT(a.prec, 2);
    T_EQ_INT(a.reso.n, 2);
    T_EQ_INT(a.batch, 6);
    T_EQ_INT(sd_opts_source(&o, "seed"), SD_SRC_CONFIG);
    T_EQ_INT(sd_opts_source(&o, "train_batch_size"), SD_SRC_CMDLINE);
    T_EQ_INT(sd_opts_source(&o, "noise_offset"), SD_SRC_DEFAULT);
    sd_opts_free(&o);

    /* full name with .toml works too; errors name the file and the key */
    write_text(t_path("bad.toml"), "[a]\ntrain_batch_size = \"lots\"\n");
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--config-file", t_path("bad.toml")), SD_EUSAGE);
    char want[600];
    snprintf(want, sizeof want, "%s: train_batch_size: invalid integer 'lots'", t_path("bad.toml"));
    T_EQ_STR(sd_errmsg(), want);
    sd_opts_free(&o);

    /* TOML syntax errors keep file:line:col, missing files say so */
    write_text(t_path("syntax.toml"), "seed = 1\nseed = = 2\n");
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--config_file", t_path("syntax.toml")), SD_EFORMAT);
    snprintf(want, sizeof want, "%s:2:", t_path("syntax.toml"));
    HAS(want);
    T_EQ_INT(CMDLINE(&o, "--config_file", t_path("missing")), SD_ENOTFOUND);
    HAS("missing.toml");
    T_EQ_INT(CMDLINE(&o, "--config_file="), SD_EUSAGE);
    sd_opts_free(&o);

    /* JSON when the name ends in .json */
    write_text(t_path("cfg.json"), "{\"seed\": 77, \"sub\": {\"flag\": true}}");
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--config_file", t_path("cfg.json")), SD_OK);
    T_EQ_INT(a.seed, 77);
    T_EQ_INT(a.flag, 1);
    write_text(t_path("broken.json"), "{\"seed\": ");
    T_EQ_INT(CMDLINE(&o, "--config_file", t_path("broken.json")), SD_EFORMAT);
    HAS("invalid JSON");
    sd_opts_free(&o);

    char *p = sd_cmdline_config_path("a/b");
    T_EQ_STR(p, "a/b.toml");
    free(p);
    p = sd_cmdline_config_path("x.toml");
    T_EQ_STR(p, "x.toml");
    free(p);
    p = sd_cmdline_config_path("x.json");
    T_EQ_STR(p, "x.json");
    free(p);
}

static void test_output_config(void)
{
    sd_opts o;
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    char base[512];
    snprintf(base, sizeof base, "%s", t_path("saved"));
    unlink(t_path("saved.toml"));
    T_EQ_INT(CMDLINE(&o, "--output_config", "--config_file", base, "--seed", "5", "--learning_rate", "1e-4",
                     "--train_batch_size", "1", "--mixed_precision", "fp16", "--output_dir", "a \"q\"\\b",
                     "--resolution", "640,512", "--weights", "0.5,1", "--flag", "--no-on", "--wandb_api_key", "k",
                     "--unet_lr", "1e-4", "--network_args", "x=1", "y=2"),
             SD_OPTS_EXIT);
    if (*sd_errmsg()) printf("#   %s\n", sd_errmsg());
    char *text = NULL;
    T_EQ_INT(sd_cmdline_config_toml(&o, &text), SD_OK);
    const char *want =
        "learning_rate = 0.0001\nunet_lr = 0.0001\nseed = 5\nmixed_precision = \"fp16\"\n"
        "output_dir = \"a \\\"q\\\"\\\\b\"\nflag = true\non = false\nresolution = [640, 512]\n"
        "network_args = [\"x=1\", \"y=2\"]\nweights = [0.5, 1.0]\n";
    T_EQ_STR(text, want);
    free(text);
    FILE *f = fopen(t_path("saved.toml"), "r");
    T_CHECK(f != NULL);
    if (f) {
        char buf[1024] = "";
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        T_EQ_STR(buf, want);
    }
    /* refuses to overwrite */
    T_EQ_INT(CMDLINE(&o, "--output_config", "--config_file", base), SD_EIO);
    HAS("already exists");
    sd_opts_free(&o);
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--output_config"), SD_EUSAGE);
    HAS("--config_file");
    sd_opts_free(&o);

    /* reading it back gives the same values */
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--config_file", base), SD_OK);
    if (*sd_errmsg()) printf("#   %s\n", sd_errmsg());
    T_EQ_INT(a.seed, 5);
    T_NEAR(a.lr, 1e-4, 0);
    T_CHECK(a.lrf == 1e-4f);
    T_EQ_INT(a.prec, 1);
    T_EQ_STR(a.out, "a \"q\"\\b");
    T_EQ_INT(a.flag, 1);
    T_EQ_INT(a.on, 0);
    T_EQ_INT(a.reso.n, 2);
    T_EQ_INT(a.ws.n, 2);
    T_EQ_INT(a.nargs.n, 2);
    T_CHECK(a.secret == NULL);
    sd_opts_free(&o);

    /* JSON output */
    unlink(t_path("saved.json"));
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--output_config", "--config_file", t_path("saved.json"), "--seed", "3"), SD_OPTS_EXIT);
    sd_opts_free(&o);
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--config_file", t_path("saved.json")), SD_OK);
    T_EQ_INT(a.seed, 3);
    T_EQ_INT(sd_opts_source(&o, "seed"), SD_SRC_CONFIG);
    sd_opts_free(&o);

    /* nothing changed: an empty file */
    unlink(t_path("empty.toml"));
    fresh(&o);
    o.flags = SD_OPTS_CONFIG;
    T_EQ_INT(CMDLINE(&o, "--output_config", "--config_file", t_path("empty"), "--train_batch_size", "1"),
             SD_OPTS_EXIT);
    T_EQ_INT(access(t_path("empty.toml"), F_OK), 0);
    sd_opts_free(&o);
}

static void test_main_exit_codes(void)
{
    sd_opts o;
    fresh(&o);
    char *argv_bad[] = { "sd-test", "--seed", "x", NULL };
    T_EQ_INT(sd_cmdline_main(&o, 3, argv_bad), SD_EXIT_USAGE);
    char *argv_ok[] = { "sd-test", "--seed", "4", NULL };
    T_EQ_INT(sd_cmdline_main(&o, 3, argv_ok), -1);
    o.flags = SD_OPTS_CONFIG;
    char *argv_missing[] = { "sd-test", "--config_file", (char *)t_path("nothere.toml"), NULL };
    T_EQ_INT(sd_cmdline_main(&o, 3, argv_missing), SD_EXIT_FATAL);
    sd_opts_free(&o);
    /* a tool's own usage error: two lines on stderr, exit status 2 */
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(t_path("usage_err.txt"), "w+");
    T_CHECK(saved >= 0 && f != NULL);
    if (saved < 0 || !f) return;
    dup2(fileno(f), 2);
    int ex = sd_cmdline_usage_error("sd-test", "give --%s", "model");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    T_EQ_INT(ex, SD_EXIT_USAGE);
    char buf[128] = "";
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    T_EQ_STR(buf, "sd-test: give --model\nTry 'sd-test --help'.\n");
}

int main(void)
{
    T_RUN(test_defaults);
    T_RUN(test_spellings);
    T_RUN(test_flags);
    T_RUN(test_numbers);
    T_RUN(test_enum_string);
    T_RUN(test_lists);
    T_RUN(test_positionals);
    T_RUN(test_unknown);
    T_RUN(test_help_version);
    T_RUN(test_bad_tables);
    T_RUN(test_config_values);
    T_RUN(test_config_precedence);
    T_RUN(test_cmdline_files);
    T_RUN(test_output_config);
    T_RUN(test_main_exit_codes);
    T_DONE();
}
