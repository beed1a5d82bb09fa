/* BERT WordPiece tokenizer (bert-base-uncased rules, as Hugging Face's BertTokenizer runs them with
 * do_lower_case=True), for the BLIP captioner's prompt and its generated ids (models-and-formats.md
 * §C.3).
 *
 * Encoding (no [CLS]/[SEP] added; the caller frames the ids):
 *   1. clean: U+0000, U+FFFD and control characters (Cc/Cf other than \t \n \r) are removed,
 *      whitespace (Python str.isspace()) becomes ' '; invalid UTF-8 becomes U+FFFD first (and so
 *      is removed);
 *   2. CJK ideographs (the ranges of BertTokenizer._is_chinese_char) get spaces around them;
 *   3. whitespace split; each word lower-cased (Python str.lower(), one-to-one mappings; U+0130
 *      becomes "i̇") and its accents stripped (canonical decomposition, then combining marks
 *      dropped: characters with a non-zero canonical combining class);
 *   4. punctuation splits words: ASCII 33-47, 58-64, 91-96, 123-126, and non-ASCII characters
 *      that are neither letters, numbers, spaces nor combining marks (an approximation of
 *      Unicode category P*: non-ASCII symbols of category S* split as well);
 *   5. WordPiece: greedy longest match from the left, continuations as "##piece"; a word with no
 *      match, or longer than 100 code points, is [UNK].
 * Decoding: special ids skipped ([PAD] [UNK] [CLS] [SEP] [MASK] and every id >= the vocabulary
 * size, i.e. BLIP's added [DEC] [ENC]), tokens joined with ' ', " ##" removed, then
 * clean_up_tokenization_spaces (" ." "?" "!" "," -> no space; " ' " -> "'"; " n't" " 'm" " 's"
 * " 've" " 're" lose their space).
 *
 * A loaded vocabulary is read-only and may be shared by threads. */
#ifndef SD_TEXT_BERT_TOKENIZER_H
#define SD_TEXT_BERT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_bert_vocab sd_bert_vocab;

/* vocab.txt: one token per line (id = line number from 0; "\r\n" accepted; a final line without
 * a newline counts). SD_ENOTFOUND / SD_EIO / SD_EFORMAT ("path: line N: ...": empty file, NUL
 * byte, duplicate token, more than 1<<24 tokens). */
int sd_bert_vocab_load(const char *path, sd_bert_vocab **out);
/* The same from memory (`name` is used in messages). */
int sd_bert_vocab_parse(const char *text, size_t n, const char *name, sd_bert_vocab **out);
void sd_bert_vocab_free(sd_bert_vocab *v);

int32_t sd_bert_vocab_size(const sd_bert_vocab *v);
/* Id of a token, -1 when absent. */
int32_t sd_bert_token_id(const sd_bert_vocab *v, const char *token);
/* Token of an id, NULL outside [0, size). */
const char *sd_bert_token(const sd_bert_vocab *v, int32_t id);

/* Token ids of `text` (len bytes, UTF-8) into a malloc'd array (*ids NULL when *n is 0).
 * SD_EFORMAT when the vocabulary has no [UNK] and one is needed. */
int sd_bert_encode(const sd_bert_vocab *v, const char *text, size_t len, int32_t **ids, size_t *n);
/* Text of ids (rules above) into a malloc'd string. */
int sd_bert_decode(const sd_bert_vocab *v, const int32_t *ids, size_t n, char **text);

#endif
