/* CLIP byte-level BPE tokenizer (SD1.x CLIP ViT-L/14 and SD2.x OpenCLIP ViT-H/14 share it), as
 * openai/CLIP's SimpleTokenizer and Hugging Face's CLIPTokenizer compute it, plus the framing of
 * kohya-ss/sd-scripts (BOS/EOS, truncation, padding, 75/150/225-token chunks; spec
 * reference-behaviour.md §3.2, models-and-formats.md §D).
 *
 * Pipeline for a caption (UTF-8; invalid sequences become U+FFFD, one per maximal ill-formed
 * subpart, as Python's bytes.decode(errors="replace")), as HF's CLIPTokenizer runs it with ftfy
 * installed (kohya's requirements pin ftfy 6.1.1): whitespace_clean(fix_text(text)).lower(), then
 * the pattern and BPE:
 *   0. ftfy.fix_text (text/ftfy.h): HTML entities, mojibake re-decoding (fix_encoding),
 *      C1 controls, Latin ligatures, full/half-width forms, curly quotes, line breaks, terminal
 *      escapes, control characters, NFC;
 *   1. whitespace_clean: every run of `regex` \s (Unicode White_Space) becomes one ' ', then
 *      characters Python's str.isspace() accepts are stripped from both ends;
 *   2. str.lower() exactly as Python 3.11 (full mappings: U+0130 -> "i\u0307"; Final_Sigma);
 *   3. the pre-tokenisation pattern
 *        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      with re.IGNORECASE (so "'ſ" is a contraction too), scanned like re.findall;
 *   4. each piece's UTF-8 bytes go through BPE (the GPT-2 bytes->unicode symbols, "</w>" on the
 *      last symbol, lowest-rank pair merged everywhere left to right, repeated); the literal pieces
 *      "<|startoftext|>" / "<|endoftext|>" map straight to 49406 / 49407.
 * Ids equal the reference's for every caption, mojibake that ftfy re-decodes ("CafÃ©" ->
 * "Café") included.
 *
 * Vocabulary: bpe_simple_vocab_16e6.txt.gz (or an uncompressed merges.txt of the same form: one
 * header line, then "a b" merges); the first 48,894 merges are used. Ids: 0..255 byte symbols,
 * 256..511 the same + "</w>", 512.. merges, 49406 <|startoftext|>, 49407 <|endoftext|>.
 *
 * Threads: a loaded tokenizer may be used from several threads at once (the BPE cache is locked). */
#ifndef SD_TEXT_CLIP_TOKENIZER_H
#define SD_TEXT_CLIP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define SD_CLIP_VOCAB_SIZE 49408
#define SD_CLIP_NMERGES 48894
#define SD_CLIP_BOS 49406
#define SD_CLIP_EOS 49407
#define SD_CLIP_CTX 77              /* BOS + 75 + EOS */
#define SD_CLIP_CHUNK 75
#define SD_CLIP_PAD_SD1 49407       /* openai/clip-vit-large-patch14: pad = EOS */
#define SD_CLIP_PAD_SD2 0           /* stabilityai/stable-diffusion-2: pad = "!" */
#define SD_CLIP_MAX_CHUNKS 3
#define SD_CLIP_VOCAB_FILE "clip/bpe_simple_vocab_16e6.txt.gz"

typedef struct sd_clip_tokenizer sd_clip_tokenizer;

/* Default vocabulary path: clip/bpe_simple_vocab_16e6.txt.gz found by sd_share_path() ($SD_SHARE,
 * the installed layout next to the executable, the source tree, the compiled-in SD_SHAREDIR).
 * SD_ENOTFOUND if none has it, SD_ERANGE if the path does not fit in buf. */
int sd_clip_vocab_path(char *buf, size_t size);

/* Load a vocabulary (gzip or plain text); path NULL = sd_clip_vocab_path(). SD_ENOTFOUND /
 * SD_EIO / SD_EFORMAT ("path: line 12: ...") on failure, *tok = NULL. */
int sd_clip_tokenizer_load(const char *path, sd_clip_tokenizer **tok);
void sd_clip_tokenizer_free(sd_clip_tokenizer *tok);

/* Token ids of `text` (len bytes; no BOS/EOS, no truncation) into a malloc'd array (*ids may be
 * NULL when *n is 0). `max` > 0 stops after the piece that brings the count to `max` or more
 * (the first `max` ids are the same as without a limit); 0 = no limit. */
int sd_clip_tokenizer_encode(sd_clip_tokenizer *tok, const char *text, size_t len, size_t max,
                             int32_t **ids, size_t *n);

/* The reference's token rows for one caption. max_token_length: 0 or 75 (one row of 77), 150 or
 * 225 (2 or 3 chunks); anything else is SD_EINVAL. pad: SD_CLIP_PAD_SD1 or SD_CLIP_PAD_SD2 (any
 * id < 49408 is accepted; pad == EOS selects the SD1 chunk rule). out receives nchunks*77 ids
 * (room for SD_CLIP_MAX_CHUNKS*77 is always enough). The SD2 rule has kohya's quirk: a chunk
 * whose first token is "!" (id 0 = the pad id) gets EOS there instead. */
int sd_clip_tokenizer_frame(sd_clip_tokenizer *tok, const char *text, size_t len,
                            int max_token_length, int32_t pad, int32_t *out, int *nchunks);

/* The framing alone, for callers that build the id list themselves (weighted captions): `toks`
 * (n ids, no BOS/EOS) is truncated to L-2 = max_token_length, framed as BOS + toks + EOS + pad to
 * L, and cut into chunks of 77 with BOS/EOS per chunk as §3.2 describes. Returns SD_EINVAL for a
 * bad max_token_length. *truncated (may be NULL) is set when toks did not fit. */
int sd_clip_frame_ids(const int32_t *toks, size_t n, int max_token_length, int32_t pad,
                      int32_t *out, int *nchunks, int *truncated);

/* Text of a token: its bytes (not NUL-terminated) and whether it ends a word ("</w>").
 * NULL for an id outside 0..49407. Special tokens give their literal text. */
const char *sd_clip_tokenizer_token(const sd_clip_tokenizer *tok, int32_t id, size_t *len,
                                    int *end_of_word);
/* Decode ids to a malloc'd UTF-8 string like the reference's decode(): bytes joined, "</w>" as a
 * space, invalid UTF-8 replaced by U+FFFD. Ids out of range are SD_EINVAL. */
int sd_clip_tokenizer_decode(const sd_clip_tokenizer *tok, const int32_t *ids, size_t n, char **text);

/* Steps 0-2 alone (fix_text + whitespace_clean + lower) into a malloc'd UTF-8 string. */
int sd_clip_normalize(const char *text, size_t len, char **out);

/* Write the Hugging Face CLIPTokenizer files of this vocabulary into the existing folder `dir`, as
 * transformers' save_pretrained writes them (a Diffusers tokenizer/ folder): vocab.json
 * (json.dumps(indent=2, sort_keys=True, ensure_ascii=False): 49,408 entries), merges.txt
 * ("#version: 0.2" + the 48,894 merges), special_tokens_map.json and tokenizer_config.json
 * (CLIPTokenizer, model_max_length 77, pad_token "<|endoftext|>" for pad SD_CLIP_PAD_SD1 or "!"
 * for SD_CLIP_PAD_SD2: SD2's tokenizer and SDXL's tokenizer_2). vocab_path NULL =
 * sd_clip_vocab_path(). Each file is written atomically. */
int sd_clip_tokenizer_write_hf(const char *vocab_path, const char *dir, int32_t pad);

#endif
