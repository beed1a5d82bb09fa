/* Textual-inversion embedding files for SD 1.x / 2.x text encoders: what sd-sample's
 * --textual_inversion_embeddings and sd-train --method ti's --weights read.
 *
 * Formats:
 *   .safetensors   kohya's {"emb_params": [n, D]} (train_textual_inversion.py), or a file with one
 *                  tensor (diffusers / A1111 exports);
 *   .pt / .ckpt / .bin (torch.save, read by the safe reader of io/ckpt.h): A1111's
 *                  {"string_to_param": {"*": t}, ...} (its first tensor), kohya's {"emb_params": t},
 *                  or a file with one tensor.
 * The tensor is [n, D] (1 ≤ n ≤ 75) or [D] (one vector), any float dtype, read as f32.
 * Errors, one line naming the file: SD_EUNSUPPORTED for an SDXL embedding (clip_l / clip_g) in
 * sd_embedding_read;
 * SD_EFORMAT when no tensor qualifies ("no textual-inversion embedding"), for a wrong shape
 * (naming the width the text encoder needs) or a non-float tensor; the readers' own errors. */
#ifndef SD_IO_EMBEDDING_H
#define SD_IO_EMBEDDING_H

#include <stdint.h>

/* *vecs: malloc'd [*count, D] floats (caller frees); NULL and 0 on error. */
int sd_embedding_read(const char *path, int64_t D, float **vecs, int64_t *count);

/* SDXL embeddings (kohya's sdxl_train_textual_inversion.py): {"clip_l": [n, D1], "clip_g": [n, D2]}
 * in .safetensors or torch.save files. sd_embedding_read_key reads one named tensor; a file
 * without it is SD_EUNSUPPORTED ("not an SDXL embedding", when it has other tensors, e.g. an
 * SD1.x/SD2.x emb_params) or SD_EFORMAT (empty). sd_embedding_read_sdxl reads both (the counts
 * must agree): *v1 [n, D1], *v2 [n, D2], malloc'd. */
int sd_embedding_read_key(const char *path, const char *key, int64_t D, float **vecs, int64_t *count);
int sd_embedding_read_sdxl(const char *path, int64_t D1, int64_t D2, float **v1, float **v2, int64_t *count);

#endif
