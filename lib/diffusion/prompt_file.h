/* Sample-prompt files (--sample_prompts; spec §6.13): the reference's load_prompts and
 * line_to_prompt_dict (kohya-ss sd-scripts train_util.py), with its defaults, but strict: where
 * the reference silently ignores a bad option or guesses, we stop with an error naming the file,
 * the line (or entry) and the problem (issue 9).
 *
 * Formats, chosen by the file name's extension as in the reference:
 *   .txt   one prompt per line; a line whose FIRST character is '#' and blank lines are skipped
 *          (the reference's test is on the unstripped line: "  # x" is a prompt "# x"). A UTF-8
 *          byte order mark at the start is skipped (the reference would keep it in the prompt).
 *   .toml  [prompt] with shared keys and [[prompt.subset]] tables; each subset merged with the
 *          shared keys (a key in both is an error, as in the reference).
 *   .json  a list of strings (each parsed like a .txt line, but as the reference does not strip
 *          them or skip '#' comments) or objects.
 *   Any other extension is an error (the reference crashes).
 *
 * Line syntax: the line (whitespace-stripped) is split on " --"; the first piece is the prompt,
 * every further piece is an option "NAME VALUE" (NAME case-insensitive):
 *   --w N --h N   width/height (default 512): must be multiples of 8 and >= 64 (the reference
 *                 floors them to max(64, v − v % 8); we reject them instead)
 *   --d N         seed (default: none, i.e. a fresh random seed each time)
 *   --s N         steps, clamped to 1..1000 as the reference does (default 30)
 *   --l X         CFG scale (default 7.5; digits and dots as in the reference)
 *   --g X         guidance_scale (embedded guidance of other architectures; stored, unused)
 *   --n TEXT      negative prompt (rest of the piece)
 *   --ss NAME     sampler for this prompt (must be a known name; the reference would fall back
 *                 to DDIM)
 *   --cn PATH     ControlNet image (stored; ControlNet is not supported by this suite)
 *   --ctr X --rcfg X --fs X   options of other architectures (stored, unused)
 * Unknown options, options without a value, malformed numbers, a size that is not a multiple
 * of 8 and invalid UTF-8 are errors. (The reference also matches the FIRST piece against the
 * options, so a prompt that starts with e.g. "w 512" sets the width: we treat the first piece
 * as the prompt only.)
 *
 * Object keys (.toml/.json): prompt, negative_prompt, width, height, seed, sample_steps (1..1000,
 * not clamped), scale, guidance_scale, sample_sampler, controlnet_image, cfg_trunc_ratio,
 * renorm_cfg, flow_shift; "enum" and "subset" are ignored (the loader sets/removes them); any
 * other key is an error. */
#ifndef SD_DIFFUSION_PROMPT_FILE_H
#define SD_DIFFUSION_PROMPT_FILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_sample_prompt {
    char *prompt;           /* never NULL */
    char *negative_prompt;  /* NULL: none (the pipeline then conditions on "") */
    int width, height;      /* default 512 */
    int has_width, has_height; /* given by the entry (--w/--h, width/height keys) */
    int has_seed;
    uint64_t seed;
    int steps;              /* default 30 */
    double scale;           /* default 7.5 */
    int has_guidance_scale;
    double guidance_scale;
    char *sampler;          /* NULL: the run's --sample_sampler */
    char *controlnet_image; /* NULL unless given */
    int has_cfg_trunc_ratio, has_renorm_cfg;
    double cfg_trunc_ratio, renorm_cfg;
    char *flow_shift;       /* NULL unless given (the reference keeps it a string) */
    int index;              /* position in the file's prompt list ("enum", used in file names) */
    int line;               /* 1-based source line for .txt, 0 otherwise */
} sd_sample_prompt;

typedef struct sd_prompt_list {
    sd_sample_prompt *items;
    size_t n;
} sd_prompt_list;

/* Defaults above, prompt "" (allocated). */
int sd_sample_prompt_init(sd_sample_prompt *p);
void sd_sample_prompt_free(sd_sample_prompt *p);

/* Parse one (already stripped) line. `where` prefixes error messages ("file.txt:12"). */
int sd_prompt_line_parse(const char *line, const char *where, sd_sample_prompt *out);

/* Parse the text of a prompt file; `name` decides the format by its extension and appears in
 * messages. SD_EFORMAT for a malformed file ("name:LINE: problem" / "name: entry N: problem"),
 * SD_EINVAL for an unsupported extension, SD_ENOMEM. On error *out is empty. */
int sd_prompt_file_parse(const char *text, size_t n, const char *name, sd_prompt_list *out);
/* Read and parse a file (SD_ENOTFOUND / SD_EIO for read errors; at most 16 MiB). */
int sd_prompt_file_load(const char *path, sd_prompt_list *out);
void sd_prompt_list_free(sd_prompt_list *l);

#endif
