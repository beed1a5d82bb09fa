/* BERT WordPiece tokenizer (text/bert_tokenizer.h) on a small hand-written vocabulary: basic
 * tokenisation (lower case, accents, punctuation, CJK, control characters), greedy longest-match
 * WordPiece with ## continuations, [UNK], decoding with special tokens skipped and HF's
 * clean_up_tokenization_spaces, malformed vocabularies. */
#include "base/error.h"
#include "text/bert_tokenizer.h"
#include "test.h"

static const char VOCAB[] =
    "[PAD]\n[unused0]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"   /* 0..5 */
    "a\npicture\nof\ncat\n"                           /* 6..9 */
    "the\nplay\n##ing\n##in\n##g\n"                   /* 10..14 */
    ".\n,\n'\ns\nt\ndon\n"                            /* 15..20 */
    "cafe\n!\n\xe4\xb8\xad\nun\n##able\nunable\n"       /* 21..26 */
    "##s\ncats\n?\nn\n";                              /* 27..30 */

static sd_bert_vocab *vocab(void)
{
    sd_bert_vocab *v = NULL;
    T_CHECK(sd_bert_vocab_parse(VOCAB, sizeof VOCAB - 1, "vocab", &v) == 0);
    return v;
}

static int enc(sd_bert_vocab *v, const char *s, const int32_t *want, size_t nw)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = sd_bert_encode(v, s, strlen(s), &ids, &n);
    int ok = rc == 0 && n == nw && (!n || !memcmp(ids, want, n * sizeof *ids));
    if (!ok) {
        printf("#   '%s': rc %d, %zu ids:", s, rc, n);
        for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
        printf("\n");
    }
    free(ids);
    return ok;
}

#define ENC(v, s, ...) enc(v, s, (const int32_t[]){ __VA_ARGS__ }, sizeof((const int32_t[]){ __VA_ARGS__ }) / 4)

static void bert_vocab_basics(void)
{
    sd_bert_vocab *v = vocab();
    if (!v) return;
    T_EQ_INT(sd_bert_vocab_size(v), 31);
    T_EQ_INT(sd_bert_token_id(v, "picture"), 7);
    T_EQ_INT(sd_bert_token_id(v, "##ing"), 12);
    T_EQ_INT(sd_bert_token_id(v, "dog"), -1);
    T_EQ_STR(sd_bert_token(v, 3), "[CLS]");
    T_CHECK(sd_bert_token(v, 31) == NULL && sd_bert_token(v, -1) == NULL);
    sd_bert_vocab_free(v);
}

static void bert_encode_prompt(void)
{
    sd_bert_vocab *v = vocab();
    if (!v) return;
    T_CHECK(ENC(v, "a picture of ", 6, 7, 8));
    T_CHECK(ENC(v, "  A  PICTURE\tof\n", 6, 7, 8));
    sd_bert_vocab_free(v);
}

static void bert_encode_wordpiece(void)
{
    sd_bert_vocab *v = vocab();
    if (!v) return;
    /* longest match first: "playing" -> play ##ing (not ##in ##g) */
    T_CHECK(ENC(v, "playing", 11, 12));
    /* "unable" is a whole token; "unables" -> unable ##s */
    T_CHECK(ENC(v, "unables", 26, 27));
    T_CHECK(ENC(v, "cats", 28));
    /* no full match -> one [UNK] for the whole word */
    T_CHECK(ENC(v, "catx the", 2, 10));
    /* a word over 100 characters is [UNK] */
    char lng[128];
    memset(lng, 'a', 101);
    lng[101] = 0;
    T_CHECK(ENC(v, lng, 2));
    sd_bert_vocab_free(v);
}

static void bert_encode_basic(void)
{
    sd_bert_vocab *v = vocab();
    if (!v) return;
    /* punctuation splits, contractions split at the apostrophe */
    T_CHECK(ENC(v, "cat.the,cat!", 9, 15, 10, 16, 9, 22));
    T_CHECK(ENC(v, "don't", 20, 17, 19));
    /* accents stripped after lower-casing: "Café" (composed and decomposed) */
    T_CHECK(ENC(v, "Caf\xc3\xa9", 21));
    T_CHECK(ENC(v, "CAFE\xcc\x81", 21));
    T_CHECK(ENC(v, "CAF\xc3\x89", 21));
    /* CJK characters are words of their own */
    T_CHECK(ENC(v, "cat\xe4\xb8\xad" "cat", 9, 23, 9));
    /* control characters removed, NUL and invalid UTF-8 dropped */
    T_CHECK(ENC(v, "c\x01" "at", 9));
    T_CHECK(ENC(v, "ca\xfft", 9));
    int32_t *ids = NULL;
    size_t n = 5;
    T_CHECK(sd_bert_encode(v, "  \t ", 4, &ids, &n) == 0 && n == 0 && ids == NULL);
    sd_bert_vocab_free(v);
}

static void dec(sd_bert_vocab *v, const int32_t *ids, size_t n, const char *want)
{
    char *s = NULL;
    T_CHECK(sd_bert_decode(v, ids, n, &s) == 0);
    T_EQ_STR(s, want);
    free(s);
}

static void bert_decode(void)
{
    sd_bert_vocab *v = vocab();
    if (!v) return;
    /* BLIP: [DEC] (= vocab size) a picture of the cat playing . [SEP] */
    dec(v, (const int32_t[]){ 31, 6, 7, 8, 10, 9, 11, 12, 15, 4 }, 10, "a picture of the cat playing.");
    /* specials skipped anywhere, [ENC] and [UNK] too; " ," " !" " ?" cleaned */
    dec(v, (const int32_t[]){ 3, 9, 16, 2, 32, 10, 22, 0, 29 }, 9, "cat, the!?");
    /* contractions: don ' t -> "don't"; " 's" -> "'s" */
    dec(v, (const int32_t[]){ 20, 17, 19 }, 3, "don't");
    dec(v, (const int32_t[]){ 9, 17, 18 }, 3, "cat's");
    /* n't */
    dec(v, (const int32_t[]){ 20, 30, 17, 19 }, 4, "donn't"); /* HF replaces " n't" too */
    dec(v, NULL, 0, "");
    dec(v, (const int32_t[]){ 12, 9 }, 2, "##ing cat");
    sd_bert_vocab_free(v);
}

static void bert_vocab_malformed(void)
{
    sd_bert_vocab *v = NULL;
    T_EQ_INT(sd_bert_vocab_parse("", 0, "e", &v), SD_EFORMAT);
    T_CHECK(v == NULL);
    T_EQ_INT(sd_bert_vocab_parse("a\nb\na\n", 6, "d", &v), SD_EFORMAT);
    T_CHECK(strstr(sd_errmsg(), "line 3") != NULL);
    T_EQ_INT(sd_bert_vocab_parse("a\0b\n", 4, "z", &v), SD_EFORMAT);
    T_EQ_INT(sd_bert_vocab_load("/nonexistent/vocab.txt", &v), SD_ENOTFOUND);
    /* CRLF and a last line without a newline */
    T_CHECK(sd_bert_vocab_parse("x\r\ny", 4, "c", &v) == 0);
    if (v) {
        T_EQ_INT(sd_bert_vocab_size(v), 2);
        T_EQ_INT(sd_bert_token_id(v, "x"), 0);
        T_EQ_INT(sd_bert_token_id(v, "y"), 1);
        /* no [UNK] in the vocabulary and one is needed */
        int32_t *ids = NULL;
        size_t n;
        T_EQ_INT(sd_bert_encode(v, "q", 1, &ids, &n), SD_EFORMAT);
        sd_bert_vocab_free(v);
    }
}

int main(void)
{
    T_RUN(bert_vocab_basics);
    T_RUN(bert_encode_prompt);
    T_RUN(bert_encode_wordpiece);
    T_RUN(bert_encode_basic);
    T_RUN(bert_decode);
    T_RUN(bert_vocab_malformed);
    T_DONE();
}
