/* A torch.save writer (torch ≥ 1.6 zip format, pickle protocol 2), the counterpart of the safe
 * reader io/ckpt.h. It writes the dicts that sd-train saves: a top-level dict whose values are
 * tensors, ints and dicts of the same (sd-train uses one level: {"state_dict": {...}, "epoch":
 * e, "global_step": s} for full checkpoints, {"emb_params": t} for textual inversion).
 *
 * The pickle is byte for byte the one torch 1.13's torch.save writes for the same Python dict
 * (plain dicts, every tensor contiguous with its own storage, on the CPU, requires_grad False):
 * memo puts (BINPUT / LONG_BINPUT) and gets (BINGET / LONG_BINGET) where Python's pickler
 * memoizes and reuses objects ("storage", "cpu", the globals), SETITEM for one item, MARK ...
 * SETITEMS in batches of 1000 otherwise, ints as BININT1/BININT2/BININT/LONG1, tensors as
 * torch._utils._rebuild_tensor_v2(persistent storage ('storage', torch.<T>Storage, key, 'cpu',
 * numel), 0, size, stride, False, collections.OrderedDict()), storage keys "0", "1", ... in the
 * order the tensors are pickled.
 *
 * The archive (io/zip.h, stored members, data aligned to 64 bytes) holds <stem>/data.pkl, then
 * <stem>/data/<key> in sorted key order (as torch 1.13), then <stem>/version ("3\n"); <stem> is
 * the file name without directory and extension ("archive" when that is empty), as torch's
 * writer names it. Zip64 records appear where the archive needs them (over 4 GiB). The file is
 * written under a temporary name and renamed (base/fileio.h).
 *
 * Tensor data is borrowed: it must stay valid until sd_torch_save_write returns. */
#ifndef SD_IO_TORCH_SAVE_H
#define SD_IO_TORCH_SAVE_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

typedef struct sd_torch_save sd_torch_save;

int sd_torch_save_new(sd_torch_save **out);
void sd_torch_save_free(sd_torch_save *ts);

/* Add an entry to the dict being built: the top level, or the nested dict opened by
 * sd_torch_save_dict_begin until sd_torch_save_dict_end. Keys are UTF-8; entries keep their order.
 * A tensor: dtype with a torch storage type (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL),
 * C-contiguous data of numel × dtype size bytes (NULL when numel is 0). */
int sd_torch_save_tensor(sd_torch_save *ts, const char *key, sd_st_dtype dtype, int ndim, const int64_t *shape,
                         const void *data);
int sd_torch_save_int(sd_torch_save *ts, const char *key, int64_t v);
int sd_torch_save_dict_begin(sd_torch_save *ts, const char *key);
int sd_torch_save_dict_end(sd_torch_save *ts);

/* Write the file (atomically). Errors name the path. */
int sd_torch_save_write(sd_torch_save *ts, const char *path);

/* The pickle alone (malloc'd; for tests). */
int sd_torch_save_pickle(const sd_torch_save *ts, void **out, size_t *n);
/* Tests only: write the Zip64 records even on a small archive (io/zip.h force_zip64). */
void sd_torch_save_force_zip64(sd_torch_save *ts, int on);

#endif
