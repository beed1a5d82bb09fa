/* Layer block weights of svd_merge_lora.py / sdxl_merge_lora.py --lbws (see lora_lbw.h). */
#include "train/lora_lbw.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/jq.h"
#include "io/jsonl.h"

/* LAYER12 / LAYER17 / LAYER20 / LAYER26 of svd_merge_lora.py: BASE, IN00..IN11, MID, OUT00..OUT11 */
static const char layer12[SD_LBW_BLOCKS + 1] = "1" "000011011000" "1" "111111000000";
static const char layer17[SD_LBW_BLOCKS + 1] = "1" "011011011000" "1" "000111111111";
static const char layer20[SD_LBW_BLOCKS + 1] = "1" "111111111000" "1" "111111111000";
static const char layer26[SD_LBW_BLOCKS + 1] = "1" "111111111111" "1" "111111111111";

void sd_lora_lbws_free(sd_lora_lbws *l)
{
    free(l->w);
    memset(l, 0, sizeof *l);
}

int sd_lora_lbws_parse(sd_lora_lbws *l, const char *const *strs, int n)
{
    memset(l, 0, sizeof *l);
    if (n < 1) return SD_OK;
    l->w = calloc((size_t)n, sizeof *l->w);
    if (!l->w) return sd_err(SD_ENOMEM, "out of memory");
    l->n = n;
    int rc = SD_OK;
    double vals[SD_LBW_BLOCKS];
    for (int i = 0; i < n && !rc; i++) {
        jv v;
        if (sd_json_parse(strs[i], strlen(strs[i]), &v)) {
            rc = sd_err(SD_EUSAGE, "--lbws %d '%s': format of lbws must be JSON (%s)", i + 1, strs[i], sd_errmsg());
            break;
        }
        if (jv_get_kind(v) != JV_KIND_ARRAY) {
            rc = sd_err(SD_EUSAGE, "--lbws %d '%s': lbws must be lists", i + 1, strs[i]);
            jv_free(v);
            break;
        }
        int len = jv_array_length(jv_copy(v));
        /* format_lbws: the same length for all lists first, then the length in ACCEPTABLE */
        if (i == 0) l->len = len;
        else if (len != l->len) rc = sd_err(SD_EUSAGE, "--lbws: all lbws should have the same length (%d has %d values, "
                                             "1 has %d)", i + 1, len, l->len);
        if (!rc && len != 12 && len != 17 && len != 20 && len != 26)
            rc = sd_err(SD_EUSAGE, "--lbws %d: length of lbw must be 12, 17, 20 or 26 (it has %d values)", i + 1, len);
        for (int j = 0; j < len && !rc; j++) {
            jv x = jv_array_get(jv_copy(v), j);
            jv_kind k = jv_get_kind(x);
            if (k == JV_KIND_NUMBER) vals[j] = jv_number_value(x);
            else if (k == JV_KIND_TRUE || k == JV_KIND_FALSE) vals[j] = k == JV_KIND_TRUE;   /* bool is an int */
            else rc = sd_err(SD_EUSAGE, "--lbws %d '%s': values of lbws must be numbers (value %d is not)", i + 1,
                             strs[i], j + 1);
            if (!rc && !isfinite(vals[j]))
                rc = sd_err(SD_EUSAGE, "--lbws %d: value %d is not a finite number", i + 1, j + 1);
            jv_free(x);
        }
        jv_free(v);
        if (rc) break;
        const char *flags = len == 12 ? layer12 : len == 17 ? layer17 : len == 20 ? layer20 : layer26;
        for (int b = 0, j = 0; b < SD_LBW_BLOCKS; b++) {
            l->target[b] = flags[b] == '1';
            l->w[i][b] = l->target[b] ? vals[j++] : 1.0;
        }
    }
    if (rc) {
        sd_lora_lbws_free(l);
        return rc;
    }
    l->sdxl_names = l->len == 12 || l->len == 20;
    return SD_OK;
}

/* the digits at s (at least one): value, and *end past them; -1 if none */
static long digits(const char *s, const char **end)
{
    if (!isdigit((unsigned char)*s)) return -1;
    long v = 0;
    while (isdigit((unsigned char)*s)) {
        if (v < 100000000) v = v * 10 + (*s - '0');
        s++;
    }
    *end = s;
    return v;
}

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* RE_UPDOWN.search: (up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_ */
static int re_updown(const char *name, int *up, long *i, int *kind, long *j)
{
    static const char *const kinds[4] = { "resnets", "upsamplers", "downsamplers", "attentions" };
    for (const char *p = name; *p; p++) {
        for (int a = 0; a < 2; a++) {
            const char *q = p, *pre = a == 0 ? "up_blocks_" : "down_blocks_";
            if (!starts(q, pre)) continue;
            q += strlen(pre);
            const char *e;
            long vi = digits(q, &e);
            if (vi < 0 || *e != '_') continue;
            q = e + 1;
            int k = -1;
            for (int t = 0; t < 4 && k < 0; t++)
                if (starts(q, kinds[t]) && q[strlen(kinds[t])] == '_') k = t;
            if (k < 0) continue;
            q += strlen(kinds[k]) + 1;
            long vj = digits(q, &e);
            if (vj < 0 || *e != '_') continue;
            *up = a == 0, *i = vi, *kind = k, *j = vj;
            return 1;
        }
    }
    return 0;
}

int sd_lora_lbw_block_index(const char *name, int is_sdxl)
{
    if (strstr(name, "text_model_encoder_")) return 0;
    if (!is_sdxl) {
        int up, kind;
        long i, j;
        if (re_updown(name, &up, &i, &kind, &j)) {
            long idx;
            if (!up) {
                if (kind == 0 || kind == 3) idx = 3 * i + j + 1;
                else if (kind == 2) idx = 3 * (i + 1);
                else return -1;
                return (int)(1 + idx);
            }
            if (kind == 0 || kind == 3) idx = 3 * i + j;
            else if (kind == 1) idx = 3 * i + 2;
            else return -1;
            return (int)(1 + 12 + 1 + idx);
        }
        if (strstr(name, "mid_block_")) return 1 + 12;
        return -1;
    }
    if (!starts(name, "lora_unet_")) return -1;
    const char *s = name + strlen("lora_unet_"), *e;
    if (starts(s, "time_embed_") || starts(s, "label_emb_")) return 1;
    if (starts(s, "middle_block_")) return 13;
    if (starts(s, "out_")) return 23;
    /* int(name.split("_")[2]) */
    int base = starts(s, "input_blocks_") ? 1 : starts(s, "output_blocks_") ? 14 : -1;
    if (base < 0) return -1;
    long n = digits(strchr(s, '_') + strlen("_blocks_"), &e);
    if (n < 0 || (*e && *e != '_' && *e != '.')) return -1;
    return (int)(base + n);
}

double sd_lora_lbw_weight(const sd_lora_lbws *l, int i, const char *name, int is_sdxl)
{
    if (!l || i < 0 || i >= l->n) return 1.0;
    int b = sd_lora_lbw_block_index(name, is_sdxl);
    if (b < 0 || b >= SD_LBW_BLOCKS || !l->target[b]) return 1.0;
    return l->w[i][b];
}
