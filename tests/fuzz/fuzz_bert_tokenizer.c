/* libFuzzer target for the BERT WordPiece tokenizer (text/bert_tokenizer.h): the first input byte
 * picks vocabulary parsing (the rest is a vocab.txt) or encoding/decoding (the rest is text, with a
 * small fixed vocabulary). Encoding never fails, every id is in range, decoding gives a string. */
#include "base/error.h"
#include "text/bert_tokenizer.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\npicture\nof\n##s\n##ing\nthe\ncat\n.\n,\n'\n"
                            "\xc3\xa9\n\xe4\xb8\xad\nplay\n##a\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    sd_bert_vocab *v = NULL;
    if (data[0] & 1) {
        if (sd_bert_vocab_parse((const char *)data + 1, size - 1, "fuzz", &v) == SD_OK) {
            int32_t n = sd_bert_vocab_size(v);
            for (int32_t i = 0; i < n; i++)
                if (sd_bert_token_id(v, sd_bert_token(v, i)) != i) abort();
        }
        sd_bert_vocab_free(v);
        return 0;
    }
    if (sd_bert_vocab_parse(VOCAB, sizeof VOCAB - 1, "vocab", &v) != SD_OK) abort();
    int32_t *ids = NULL;
    size_t n = 0;
    if (sd_bert_encode(v, (const char *)data + 1, size - 1, &ids, &n) != SD_OK) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= sd_bert_vocab_size(v)) abort();
    char *s = NULL;
    if (sd_bert_decode(v, ids, n, &s) != SD_OK || !s) abort();
    free(s);
    /* arbitrary ids (out of range ones are skipped as special) */
    size_t k = (size - 1) / 4;
    int32_t *raw = malloc((k ? k : 1) * sizeof *raw);
    memcpy(raw, data + 1, k * sizeof *raw);
    if (sd_bert_decode(v, raw, k, &s) != SD_OK) abort();
    free(s);
    free(raw);
    free(ids);
    sd_bert_vocab_free(v);
    return 0;
}
