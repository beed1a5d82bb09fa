/* libFuzzer target for the CLIP tokenizer's text path: ftfy fixes, whitespace_clean + lower, and
 * (when the vocabulary is found: $SD_SHARE, else share/sd under the current directory) encoding
 * and framing. Every input gives SD_OK, valid UTF-8 text, ids in range and well-formed rows. */
#include "base/error.h"
#include "text/clip_tokenizer.h"
#include "text/ftfy.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static sd_clip_tokenizer *tok;
static int tried;

/* valid UTF-8: decoding and re-encoding gives the same bytes */
static void check_utf8(const char *s)
{
    size_t n = strlen(s), k = 0;
    uint32_t *cp = malloc((n + 1) * sizeof *cp);
    unsigned char *b = malloc(4 * n + 4);
    size_t m = sd_utf8_decode((const unsigned char *)s, n, cp);
    for (size_t i = 0; i < m; i++) k += sd_utf8_put(cp[i], b + k);
    if (k != n || memcmp(b, s, n)) abort();
    free(cp);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tried) {
        tried = 1;
        if (sd_clip_tokenizer_load(NULL, &tok) != SD_OK)
            sd_clip_tokenizer_load("share/sd/" SD_CLIP_VOCAB_FILE, &tok);
    }
    char *out;
    if (sd_ftfy_fix_text((const char *)data, size, &out) != SD_OK) abort();
    check_utf8(out);
    free(out);
    if (sd_clip_normalize((const char *)data, size, &out) != SD_OK) abort();
    free(out);
    if (!tok) return 0;
    int32_t *ids;
    size_t n;
    if (sd_clip_tokenizer_encode(tok, (const char *)data, size, 0, &ids, &n) != SD_OK) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= SD_CLIP_VOCAB_SIZE) abort();
    int32_t rows[SD_CLIP_MAX_CHUNKS * SD_CLIP_CTX];
    int nch;
    for (int mtl = 75; mtl <= 225; mtl += 75) {
        int32_t pad = mtl == 150 ? SD_CLIP_PAD_SD2 : SD_CLIP_PAD_SD1;
        if (sd_clip_tokenizer_frame(tok, (const char *)data, size, mtl, pad, rows, &nch) != SD_OK) abort();
        if (nch != mtl / 75) abort();
        for (int c = 0; c < nch; c++)
            if (rows[c * 77] != SD_CLIP_BOS) abort();
        /* the first row's tokens are the first ids (SD1 rule; the SD2 rule turns a leading "!",
           id 0 = pad, into EOS as kohya does) */
        if (pad == SD_CLIP_PAD_SD1)
            for (size_t i = 0; i < n && i < 75; i++)
                if (rows[1 + i] != ids[i]) abort();
    }
    free(ids);
    return 0;
}
