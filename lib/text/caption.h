/* Per-sample caption processing of the reference (reference-behaviour.md §3.1, kohya
 * BaseDataset.process_caption), applied every time a sample is drawn:
 *
 *   1. caption_prefix + " " + caption, caption + " " + caption_suffix;
 *   2. whole-caption dropout: U < caption_dropout_rate, or caption_dropout_every_n_epochs > 0 and
 *      epoch % n == 0 (epoch 1-based) → "" and nothing else happens;
 *   3. enable_wildcard: one line of a multi-line caption chosen uniformly, then {a|b|c} choices
 *      ({{ and }} are literal braces); otherwise only the first line is kept;
 *   4. only if shuffle_caption, token warm-up or caption_tag_dropout_rate is active: split into
 *      fixed / flex / fixed-suffix parts (keep_tokens_separator, else the first keep_tokens
 *      tokens of a split on caption_separator), warm-up prefix, shuffle, tag dropout, join with
 *      ", ";
 *   5. secondary_separator → caption_separator.
 * Python's str.strip() semantics on the pieces (ASCII and Unicode white space).
 *
 * Randomness: the reference uses Python's global `random`; we draw from the caller's Philox
 * cursor (base/rng.h), so a resumed run draws the same choices. Thread-safe (no global state). */
#ifndef SD_TEXT_CAPTION_H
#define SD_TEXT_CAPTION_H

#include <stdint.h>

#include "base/rng.h"

typedef struct sd_caption_opts {
    const char *prefix, *suffix;             /* NULL = None */
    double dropout_rate;                     /* caption_dropout_rate */
    int dropout_every_n_epochs;              /* caption_dropout_every_n_epochs */
    double tag_dropout_rate;                 /* caption_tag_dropout_rate */
    int shuffle;                             /* shuffle_caption */
    int keep_tokens;
    const char *keep_tokens_separator;       /* "" / NULL = none */
    const char *separator;                   /* caption_separator; NULL = "," */
    const char *secondary_separator;         /* NULL = none */
    int enable_wildcard;
    int64_t token_warmup_step;               /* resolved (a fraction × max_train_steps done by the caller) */
    int token_warmup_min;                    /* default 1 */
} sd_caption_opts;

/* Defaults of the reference (separator ",", token_warmup_min 1, everything else off). */
void sd_caption_opts_default(sd_caption_opts *o);

/* Process `caption` for a sample drawn in 1-based epoch `epoch1` at optimizer step `step`
 * (token warm-up). *out is malloc'd. SD_ENOMEM only. */
int sd_caption_process(const sd_caption_opts *o, const char *caption, int64_t epoch1, int64_t step,
                       sd_rng *rng, char **out);

/* ---- weighted captions (§3.4, A1111 attention syntax) ---------------------------------------- */

typedef struct sd_weighted_piece {
    char *text;
    float weight;
} sd_weighted_piece;

/* Parse "a (b:1.2) [c]" into runs of text with weights (adjacent equal weights merged; an empty
 * result is one piece "" with weight 1). Caller frees with sd_weighted_free(). */
int sd_weighted_parse(const char *text, sd_weighted_piece **pieces, int *n);
void sd_weighted_free(sd_weighted_piece *pieces, int n);

#endif
