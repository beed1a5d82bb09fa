/* Option tables: one static table per tool drives command-line parsing, range checks, config-file
 * values and --help.
 *
 *   static struct { int batch; double lr; int prec; const char *out; sd_opt_list reso; } a;
 *   static const sd_opt table[] = {
 *       { .name = "train_batch_size", .short_name = 'b', .type = SD_OPT_INT, .dest = &a.batch,
 *         .def = "1", SD_OPT_RANGE(1, 4096), .group = "Training", .help = "images per step" },
 *       { .name = "learning_rate", .type = SD_OPT_DOUBLE, .dest = &a.lr, .def = "2e-6",
 *         SD_OPT_POSITIVE, .help = "base learning rate" },
 *       { .name = "mixed_precision", .type = SD_OPT_ENUM, .dest = &a.prec, .def = "no",
 *         .choices = "no|fp16|bf16" },
 *       { .name = "output_dir", .type = SD_OPT_STRING, .dest = &a.out, .metavar = "DIR" },
 *       { .name = "resolution", .type = SD_OPT_INTS, .dest = &a.reso, .def = "512",
 *         .nmin = 1, .nmax = 2, SD_OPT_ATLEAST(64) },
 *       SD_OPT_END
 *   };
 *   sd_opts o;
 *   sd_opts_init(&o, "sd-train", table);          // applies defaults
 *   rc = sd_cmdline_parse(&o, argc, argv);         // io/cmdline.h: argv + --config_file overlay
 *
 * Names are snake_case as the reference spells them. On the command line every option is accepted
 * as --snake_case and --kebab-case (also mixed), with the value as `--opt=value` or `--opt value`;
 * short options as `-b 4`, `-b4`, and clusters of flags `-vq`. `--` ends the options; everything
 * else not starting with `-` (and `-` itself, and negative numbers) is a positional argument,
 * collected in o->pos. Options and positionals may be interleaved. Unique prefixes are NOT
 * accepted (argparse accepts them; we do not, so adding an option never breaks a script) but an
 * unknown option gets a "did you mean" suggestion.
 *
 * Types and destinations:
 *   SD_OPT_FLAG     int*     `--x` sets 1; `--no-x`/`--no_x` sets 0 (unless SD_OPTF_NO_NEGATE);
 *                            `--x=BOOL` also works. Config: true/false.
 *   SD_OPT_BOOL     int*     needs a value: true/false, yes/no, on/off, 1/0 (any case).
 *   SD_OPT_INT      int*     decimal integer, optional sign; "12abc", "", "1.0", overflow: errors.
 *   SD_OPT_INT64    int64_t*
 *   SD_OPT_FLOAT    float*   strtod syntax incl. 1e-4, inf, nan (nan fails any range check);
 *   SD_OPT_DOUBLE   double*  overflow (1e400, or > FLT_MAX for float) is an error.
 *   SD_OPT_STRING   const char**  (NULL when unset)
 *   SD_OPT_ENUM     int*     index of the value in .choices = "a|b|c" (exact, case-sensitive).
 *   SD_OPT_STRINGS  sd_opt_list* (.s)  one value per occurrence; split at commas with SD_OPTF_COMMA
 *   SD_OPT_INTS     sd_opt_list* (.i)  values split at commas: `--resolution 512,768`
 *   SD_OPT_DOUBLES  sd_opt_list* (.d)
 * Lists: by default the last occurrence replaces the list; SD_OPTF_APPEND makes each occurrence
 * append; SD_OPTF_NARGS also takes the following arguments up to the next one starting with `-`
 * (argparse nargs="*"/"+": `--network_args a=1 b=2`; with `--x=v` only v is taken). .nmin/.nmax
 * bound the final count (0 = no bound); .min/.max bound each element.
 *
 * Defaults: .def is text parsed exactly like a command-line value when sd_opts_init() runs (so
 * --help shows it verbatim). .def == NULL means "None": the destination keeps whatever the tool
 * put there and the option's source stays SD_SRC_NONE until something sets it.
 *
 * Sources: each option remembers where its value came from (sd_opts_source()): SD_SRC_NONE (no
 * default, never set), SD_SRC_DEFAULT, SD_SRC_CONFIG, SD_SRC_CMDLINE, SD_SRC_CODE (sd_opts_set by
 * the tool). Precedence: command line > config file > defaults. sd_opts_apply_config() never
 * overrides a value from the command line (it still checks it).
 *
 * Config files (sd_opts_apply_config(); the file loader is io/cmdline.h): keys are option names
 * (snake or kebab, aliases). Every table is flattened, recursively; later keys win, like the
 * reference. Unlike the reference, values ARE type- and range-checked, with errors
 * "FILE: KEY: problem". Accepted value kinds: booleans for flags; numbers or numeric strings for
 * numbers ("1e-4" works); strings or numbers for strings; for lists an array, a single value, or a
 * string in command-line syntax ("512,768"); null (JSON) is skipped. Unknown keys are an ERROR
 * ("FILE: unknown key 'x' (did you mean 'y'?)") because a misspelt key silently doing nothing is
 * the commonest config bug; a tool that reads configs written for other programs sets
 * SD_OPTS_LENIENT, and unknown keys are then collected in o->unknown with their values in
 * o->unknown_value (the tool may warn, or refuse some).
 * Options with SD_OPTF_NO_CONFIG and the built-ins config_file/output_config/help/version may not
 * appear in a config file.
 *
 * Built-in options (not in the tool's table, listed under "General" in --help): -h/--help,
 * --version, and with SD_OPTS_CONFIG: --config_file FILE, --output_config (io/cmdline.h).
 *
 * Errors: every parse problem is SD_EUSAGE with a one-line message naming the option as the user
 * spelt it and the value, e.g. "option '--train-batch-size': value 0 is out of range [1, 4096]",
 * "unknown option '--lerning_rate' (did you mean '--learning_rate'?)", "option '--seed' needs a
 * value", "option '--mixed_precision': invalid choice 'fp32' (choose from no, fp16, bf16)".
 * A malformed table is SD_ESTATE from sd_opts_init() (a programming error).
 *
 * Memory: strings and lists set by parsing are owned by the sd_opts (argv strings are copied too)
 * and stay valid until sd_opts_free(). The sd_opts must not be moved or copied after init.
 */
#ifndef SD_BASE_OPTS_H
#define SD_BASE_OPTS_H

#include <jv.h>
#include <stdint.h>
#include <stdio.h>

typedef enum sd_opt_type {
    SD_OPT_FLAG,
    SD_OPT_BOOL,
    SD_OPT_INT,
    SD_OPT_INT64,
    SD_OPT_FLOAT,
    SD_OPT_DOUBLE,
    SD_OPT_STRING,
    SD_OPT_ENUM,
    SD_OPT_STRINGS,
    SD_OPT_INTS,
    SD_OPT_DOUBLES,
} sd_opt_type;

typedef struct sd_opt_list {
    int n;
    const char **s;   /* SD_OPT_STRINGS */
    int64_t *i;       /* SD_OPT_INTS */
    double *d;        /* SD_OPT_DOUBLES */
} sd_opt_list;

/* .bounds bits */
enum { SD_OPT_HAS_MIN = 1, SD_OPT_HAS_MAX = 2, SD_OPT_MIN_EXCL = 4, SD_OPT_MAX_EXCL = 8 };
#define SD_OPT_RANGE(lo, hi) .min = (lo), .max = (hi), .bounds = SD_OPT_HAS_MIN | SD_OPT_HAS_MAX
#define SD_OPT_ATLEAST(lo) .min = (lo), .bounds = SD_OPT_HAS_MIN
#define SD_OPT_ATMOST(hi) .max = (hi), .bounds = SD_OPT_HAS_MAX
#define SD_OPT_POSITIVE .min = 0, .bounds = SD_OPT_HAS_MIN | SD_OPT_MIN_EXCL
#define SD_OPT_UNIT .min = 0, .max = 1, .bounds = SD_OPT_HAS_MIN | SD_OPT_HAS_MAX   /* [0, 1] */
#define SD_OPT_END { .name = NULL }

/* .flags bits */
enum sd_opt_flags {
    SD_OPTF_NARGS = 1,       /* list: also take following non-option arguments */
    SD_OPTF_APPEND = 2,      /* list: each occurrence appends */
    SD_OPTF_COMMA = 4,       /* string list: split values at commas */
    SD_OPTF_HIDDEN = 8,      /* not listed in --help */
    SD_OPTF_NO_NEGATE = 16,  /* flag: no --no-NAME form */
    SD_OPTF_NO_CONFIG = 32,  /* may not be set from a config file */
    SD_OPTF_NO_OUTPUT = 64,  /* never written by --output_config (secrets) */
};

typedef struct sd_opt {
    const char *name;        /* snake_case long name; NULL ends the table */
    char short_name;         /* 0 = none ('h' is taken by --help) */
    sd_opt_type type;
    void *dest;
    const char *def;         /* default as command-line text; NULL = None */
    const char *help;
    const char *metavar;     /* NULL: N, X, STR, {a,b}, ... */
    const char *group;       /* --help heading; NULL = "Options" */
    const char *choices;     /* SD_OPT_ENUM: "a|b|c" */
    const char *alias;       /* another accepted long name (e.g. a deprecated spelling) */
    double min, max;         /* per value, with .bounds */
    unsigned bounds;
    int nmin, nmax;          /* list length limits, 0 = none */
    unsigned flags;
} sd_opt;

enum sd_opt_source { SD_SRC_NONE = 0, SD_SRC_DEFAULT, SD_SRC_CONFIG, SD_SRC_CMDLINE, SD_SRC_CODE };

/* sd_opts.flags */
enum sd_opts_flags {
    SD_OPTS_CONFIG = 1,         /* enable --config_file / --output_config */
    SD_OPTS_LENIENT = 2,        /* unknown config keys are collected, not errors */
    SD_OPTS_NO_POSITIONAL = 4,  /* positional arguments are a usage error */
};

/* Positive results of sd_opts_parse() / sd_cmdline_parse(). */
enum { SD_OPTS_HELP = 1, SD_OPTS_VERSION = 2, SD_OPTS_EXIT = 3 };

typedef struct sd_opts {
    /* set by the tool (after sd_opts_init, before parsing) */
    const char *prog;         /* "sd-train" */
    const char *usage;        /* after the program name in the usage line; default "[OPTIONS]" */
    const char *description;  /* paragraph under the usage line */
    const char *epilog;       /* text after the option list (exit status, examples) */
    const char *version;      /* default SD_VERSION */
    unsigned flags;           /* SD_OPTS_* */
    /* results */
    int npos;                 /* positional arguments (pointers into argv) */
    char **pos;
    const char *config_file;  /* --config_file as given, or NULL */
    int output_config;        /* --output_config given */
    int nunknown;             /* SD_OPTS_LENIENT: unknown config keys (owned) */
    char **unknown;
    jv *unknown_value;        /* their values (owned; unknown_value[i] belongs to unknown[i]) */
    /* private */
    const sd_opt *table;
    int n;                    /* table entries + built-ins */
    const sd_opt **all;
    unsigned char *src;
    jv *initial;              /* value after defaults, for "non-default" tests */
    void **mem;
    int nmem, capmem;
    int help_flag, version_flag;
    sd_opt builtin[4];
} sd_opts;

/* Validate the table, apply defaults. SD_ESTATE (message names the option) on a bad table. */
int sd_opts_init(sd_opts *o, const char *prog, const sd_opt *table);
void sd_opts_free(sd_opts *o);

/* Parse argv[1..argc). Returns SD_OK, SD_OPTS_HELP or SD_OPTS_VERSION (when -h/--help or
 * --version appears anywhere before `--`; nothing else is parsed then), or SD_EUSAGE. */
int sd_opts_parse(sd_opts *o, int argc, char **argv);

/* Set one option from text as if given on the command line, recording `source`. */
int sd_opts_set(sd_opts *o, const char *name, const char *value, int source);
/* Set one option from a jv value (borrowed, not freed) with the config rules above. Returns
 * SD_ENOTFOUND for an unknown name, SD_EUSAGE for a bad value ("KEY: problem"). An option already
 * set from a higher-precedence source is checked but left unchanged. */
int sd_opts_set_jv(sd_opts *o, const char *name, jv value, int source);
/* Apply a parsed config (a jv object, borrowed) as SD_SRC_CONFIG; `name` (the file) prefixes
 * messages: "cfg.toml: learning_rate: invalid number 'abc'". */
int sd_opts_apply_config(sd_opts *o, jv cfg, const char *name);

/* Lookup by long name (snake, kebab or alias), by destination pointer; NULL if none. */
const sd_opt *sd_opts_find(const sd_opts *o, const char *name);
const sd_opt *sd_opts_find_dest(const sd_opts *o, const void *dest);
/* Source of an option (SD_SRC_*; -1 if unknown), by name or by destination. */
int sd_opts_source(const sd_opts *o, const char *name);
int sd_opts_source_of(const sd_opts *o, const void *dest);
/* 1 if set from a config file, the command line or code (not a default, not None). */
int sd_opts_is_set(const sd_opts *o, const void *dest);
const char *sd_opts_source_name(int source);   /* "none", "default", "config", ... */

/* All entries, the tool's first, then the built-ins. */
int sd_opts_count(const sd_opts *o);
const sd_opt *sd_opts_at(const sd_opts *o, int i);
int sd_opts_source_at(const sd_opts *o, int i);
/* Current value as jv (caller frees): bool, number, string (enum: its name), array, or null for
 * an unset string. */
jv sd_opts_value_jv(const sd_opts *o, int i);
/* 1 if the current value equals the value after defaults were applied. */
int sd_opts_is_default_at(const sd_opts *o, int i);
/* Name of an enum value ("fp16"), or NULL. */
const char *sd_opts_enum_name(const sd_opt *opt, int index);

/* --help text (grouped, aligned, defaults and ranges), the usage line, the version line. */
void sd_opts_help(const sd_opts *o, FILE *f);
void sd_opts_usage(const sd_opts *o, FILE *f);
void sd_opts_version(const sd_opts *o, FILE *f);

#endif
