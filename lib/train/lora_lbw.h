/* Layer block weights ("LBW") of kohya-ss networks/svd_merge_lora.py --lbws, also used by
 * sdxl_merge_lora.py --lbws: one JSON list of numbers per LoRA file, multiplying the scale of the
 * file's modules block by block.
 *
 * A list has 12, 17, 20 or 26 entries (ACCEPTABLE); all lists of one command have the same length.
 * The length picks which of the 26 LBW blocks BASE, IN00..IN11, MID, OUT00..OUT11 the entries go to,
 * in order (the reference's LAYER12/17/20/26 tables); the other blocks keep weight 1:
 *   12: BASE IN04 IN05 IN07 IN08 MID OUT00..OUT05               (SDXL)
 *   17: BASE IN01 IN02 IN04 IN05 IN07 IN08 MID OUT03..OUT11     (SD1/SD2)
 *   20: BASE IN00..IN08 MID OUT00..OUT08                        (SDXL)
 *   26: all                                                     (SD1/SD2)
 * svd_merge_lora.py reads the module names as SDXL ones when the length is 12 or 20, else as SD1/SD2
 * ones; sdxl_merge_lora.py always as SDXL ones. A module whose block (sd_lora_lbw_block_index) is
 * not one of the length's blocks keeps weight 1; so does a name with no block (-1).
 *
 * Parsing follows format_lbws: json.loads of each string (a list of numbers; true/false count as
 * 1/0 as Python's isinstance(x, int) admits them), the same length for all, the length in
 * ACCEPTABLE. NaN/Infinity (Python's json extensions) are refused. */
#ifndef SD_TRAIN_LORA_LBW_H
#define SD_TRAIN_LORA_LBW_H

#define SD_LBW_BLOCKS 26

typedef struct sd_lora_lbws {
    int n;                       /* lists (one per model); 0: no --lbws */
    int len;                     /* entries per list */
    int sdxl_names;              /* svd_merge_lora.py's is_sdxl: len 12 or 20 */
    int target[SD_LBW_BLOCKS];   /* the block is one of the length's blocks */
    double (*w)[SD_LBW_BLOCKS];  /* n × 26 weights (1 outside the targets) */
} sd_lora_lbws;

/* Parse n strings (n ≥ 1). SD_EUSAGE naming the list (1-based) and the problem. */
int sd_lora_lbws_parse(sd_lora_lbws *l, const char *const *strs, int n);
void sd_lora_lbws_free(sd_lora_lbws *l);

/* get_lbw_block_index(key, is_sdxl): 0 for a text-encoder module (the name contains
 * "text_model_encoder_"); SD1/SD2 (the Diffusers names): down_blocks_<i>_(resnets|attentions)_<j>_ →
 * 2 + 3i + j, down_blocks_<i>_downsamplers_ → 4 + 3i, up_blocks_<i>_(resnets|attentions)_<j>_ →
 * 14 + 3i + j, up_blocks_<i>_upsamplers_ → 16 + 3i, mid_block_ → 13; SDXL (names starting
 * lora_unet_): time_embed_/label_emb_ → 1, input_blocks_<n> → 1 + n, middle_block_ → 13,
 * output_blocks_<n> → 14 + n, out_ → 23; else -1. */
int sd_lora_lbw_block_index(const char *name, int is_sdxl);

/* The weight of model `i`'s module `name` (1.0 when the block is not a target). */
double sd_lora_lbw_weight(const sd_lora_lbws *l, int i, const char *name, int is_sdxl);

#endif
