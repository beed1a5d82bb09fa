/* Command line + config file overlay for the tools (the option tables are base/opts.h).
 *
 *   sd_opts o;
 *   sd_opts_init(&o, "sd-train", table);
 *   o.flags = SD_OPTS_CONFIG;  o.usage = "[OPTIONS]";  o.description = "...";
 *   int ex = sd_cmdline_main(&o, argc, argv);     // prints help/version/errors itself
 *   if (ex >= 0) { sd_opts_free(&o); return ex; }
 *   sd_threads_init(threads); ...
 *
 * --config_file FILE (with SD_OPTS_CONFIG), the reference's semantics (reference-behaviour §6.4)
 * plus checking:
 *   - ".toml" is appended unless the name ends in ".toml" or ".json"; a ".json" name is read as
 *     JSON (our extension), anything else as TOML (io/toml.h).
 *   - every table is flattened (later keys win), precedence command line > config file > defaults;
 *   - values are type/range-checked: "cfg.toml: learning_rate: invalid number 'abc'";
 *   - unknown keys are an error unless the table is lenient (base/opts.h explains why).
 * --output_config: writes every option whose value differs from its default (except the
 *   built-ins and SD_OPTF_NO_OUTPUT options) to the --config_file path (".toml" appended as above;
 *   a ".json" path gets JSON), refuses to overwrite an existing file, and the tool exits 0.
 *   The file is complete when it appears (temporary file + link()).
 */
#ifndef SD_IO_CMDLINE_H
#define SD_IO_CMDLINE_H

#include "base/opts.h"

/* Parse argv, then (SD_OPTS_CONFIG) load --config_file under it or write --output_config.
 * Returns SD_OK (run the tool), SD_OPTS_HELP / SD_OPTS_VERSION (caller prints), SD_OPTS_EXIT
 * (--output_config written: exit 0), or a negative error: SD_EUSAGE for bad options or config
 * values, SD_ENOTFOUND/SD_EIO/SD_EFORMAT for a missing, unreadable or malformed config file. */
int sd_cmdline_parse(sd_opts *o, int argc, char **argv);

/* The tool's main() in one call: sd_cmdline_parse(), then prints --help / --version to stdout,
 * or the error to stderr as "prog: message" (usage errors add "Try 'prog --help'.").
 * Returns -1 to go on, else the exit status (0 after help/version/output_config, 2 for usage
 * errors, 1 for other errors). */
int sd_cmdline_main(sd_opts *o, int argc, char **argv);

/* A usage error the tool finds after parsing (a missing or conflicting option): prints
 * "prog: message" and "Try 'prog --help'." to stderr and returns SD_EXIT_USAGE. */
int sd_cmdline_usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "cfg" → "cfg.toml"; "x.toml" and "x.json" unchanged. Caller frees; NULL on ENOMEM. */
char *sd_cmdline_config_path(const char *name);
/* Load a config file (TOML or JSON by name, as given: no extension is added) and apply it. */
int sd_cmdline_load_config(sd_opts *o, const char *path);
/* The non-default options as TOML text (caller frees *out). */
int sd_cmdline_config_toml(const sd_opts *o, char **out);
/* Write them to `path` (TOML, or JSON for ".json"); SD_EIO "path: already exists" if it does. */
int sd_cmdline_write_config(const sd_opts *o, const char *path);

#endif
