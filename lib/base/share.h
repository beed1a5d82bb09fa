/* Where the runtime data (share/sd: tokenizer vocabularies, tag lists, presets) is found. */
#ifndef SD_BASE_SHARE_H
#define SD_BASE_SHARE_H

#include <stddef.h>

/* Full path of `rel` (e.g. "clip/bpe_simple_vocab_16e6.txt.gz") in the first of these that has it:
 * $SD_SHARE; <dir of the executable>/../share/sd (installed layout); the source tree's share/sd
 * when the executable runs from a build directory (<exe>/../../share/sd or ../../../share/sd);
 * the compiled-in SD_SHAREDIR. SD_ENOTFOUND (message lists the places tried) if none has it. */
int sd_share_path(const char *rel, char *out, size_t outsize);

#endif
