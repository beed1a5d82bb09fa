/* Safe reader for PyTorch `.ckpt`/`.pt`/`.pth` files written by torch.save (the zip format of
 * torch >= 1.6) and a converter to safetensors.
 *
 * The file is a zip (read with libarchive) holding <dir>/data.pkl (a pickle), <dir>/data/<key>
 * (one member per storage, raw little-endian bytes) and <dir>/version; <dir> may be any name but
 * must be the same for every member that matters. The pickle is run by a minimal interpreter that
 * builds plain data only: it knows the opcodes torch.save emits (protocols 2-5) and accepts exactly
 * these callables:
 *   collections.OrderedDict, torch._utils._rebuild_tensor, _rebuild_tensor_v2,
 *   _rebuild_parameter, _rebuild_parameter_with_state, torch.<Type>Storage (as persistent-id
 *   storage types), _codecs.encode (bytes in protocol 2), builtins.set (read as a list), and
 *   numpy.dtype + numpy.core.multiarray.scalar for numpy scalars of bool/int/uint/float dtypes
 *   (read as numbers; some checkpoints store "global_step" that way).
 * Any other GLOBAL / STACK_GLOBAL, and INST / OBJ / NEWOBJ / EXT*, is refused when it is read:
 * "m.ckpt: refusing to load: pickle references builtins.exec (only tensor data is allowed)".
 * Nothing from the file is ever executed; unknown callables are refused, never skipped.
 *
 * Result: the tensors of the checkpoint's state dict, flattened to dotted names like
 * state_dict keys. If the top-level dict has a "state_dict" entry that is a dict (Lightning / SD
 * checkpoints), its tensors are listed without the prefix and tensors elsewhere in the file
 * (optimizer state, callbacks) are not listed (sd_ckpt_skipped() counts them); other top-level
 * scalars ("global_step": 470000, "epoch": 6) become metadata entries under their dotted names.
 * Without that wrapper every tensor of the file is listed ("a.b.0.c" for nested dicts/lists).
 *
 * Checks (SD_EFORMAT, one line naming the file): zip structure, exactly one data.pkl, pickle
 * opcodes and their operands (truncation, string lengths, memo indexes, stack and mark depth,
 * container types), storage keys present in the archive with exactly numel*element-size bytes,
 * shape/stride/offset inside the storage (overflow-checked), duplicate names, nesting depth.
 * Tensors may be views (any non-negative strides, storage offsets, shared storages); the data
 * pointer is set only for contiguous ones and sd_ckpt_read() gathers the others.
 * Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. A pre-1.6 (non-zip) torch.save file or a
 * big-endian byteorder record is SD_EUNSUPPORTED.
 *
 * Storage bytes are used in place when libarchive hands out the stored (uncompressed) member
 * inside the file mapping (the way torch writes them); otherwise they are copied. */
#ifndef SD_IO_CKPT_H
#define SD_IO_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

#define SD_CKPT_MAX_DIMS SD_ST_MAX_DIMS

typedef struct sd_ckpt_tensor {
    const char *name;          /* NUL-terminated, owned by the handle */
    sd_st_dtype dtype;
    int ndim;
    int64_t shape[SD_CKPT_MAX_DIMS];
    int64_t stride[SD_CKPT_MAX_DIMS];   /* in elements */
    int64_t numel;
    int64_t storage_offset;    /* in elements */
    uint64_t nbytes;           /* numel * element size */
    int contiguous;            /* C-contiguous (the view is one dense run of the storage) */
    const void *data;          /* contiguous: the tensor's first byte; NULL otherwise */
    const void *storage;       /* the whole storage */
    uint64_t storage_nbytes;
    const char *storage_key;   /* archive member name under data/ */
    int requires_grad;
} sd_ckpt_tensor;

typedef struct sd_ckpt sd_ckpt;

/* Open and parse. SD_ENOTFOUND / SD_EIO when the file cannot be read; *ck = NULL on failure. */
int sd_ckpt_open(const char *path, sd_ckpt **ck);
/* The same over a caller's buffer (must outlive the handle); name (NULL: "<memory>") for messages. */
int sd_ckpt_open_mem(const void *buf, size_t n, const char *name, sd_ckpt **ck);

/* Run the interpreter on a bare pickle (no zip) whose storages are given by key: for tests,
 * fuzzing and tools. Storage bytes are referenced, not copied. */
typedef struct sd_ckpt_storage {
    const char *key;
    const void *data;
    uint64_t nbytes;
} sd_ckpt_storage;
int sd_ckpt_open_pickle(const void *pkl, size_t n, const sd_ckpt_storage *storages, size_t nstorages,
                        const char *name, sd_ckpt **ck);

void sd_ckpt_close(sd_ckpt *ck);

const char *sd_ckpt_name(const sd_ckpt *ck);
/* Tensors in pickle order. */
size_t sd_ckpt_count(const sd_ckpt *ck);
const sd_ckpt_tensor *sd_ckpt_at(const sd_ckpt *ck, size_t i);
const sd_ckpt_tensor *sd_ckpt_find(const sd_ckpt *ck, const char *name);
/* SD_ENOTFOUND "m.ckpt: no tensor 'x'" when absent. */
int sd_ckpt_get(const sd_ckpt *ck, const char *name, const sd_ckpt_tensor **t);
/* Tensors present in the file but outside the "state_dict" wrapper (not listed). */
size_t sd_ckpt_skipped(const sd_ckpt *ck);
/* 1 if the top-level dict had a "state_dict" dict. */
int sd_ckpt_wrapped(const sd_ckpt *ck);

/* Scalars outside the state dict, as text: ints in decimal, floats as repr() would print them
 * (shortest round-trip), True/False, None, strings as they are. Pickle order. */
size_t sd_ckpt_meta_count(const sd_ckpt *ck);
void sd_ckpt_meta_at(const sd_ckpt *ck, size_t i, const char **key, const char **value);
const char *sd_ckpt_meta_get(const sd_ckpt *ck, const char *key);

/* Copy tensor t into dst (C order) converted to dst_t (as sd_st_convert: F32/F16/BF16 from any
 * dtype, or the same dtype). n must equal t->numel (SD_EINVAL otherwise). */
int sd_ckpt_read(const sd_ckpt *ck, const sd_ckpt_tensor *t, sd_st_dtype dst_t, void *dst, size_t n);
int sd_ckpt_read_f32(const sd_ckpt *ck, const char *name, float *dst, size_t n);

/* Write every listed tensor to a safetensors file (atomically). dtype: SD_ST_NDTYPES keeps each
 * tensor's dtype; SD_ST_F32 / SD_ST_F16 / SD_ST_BF16 converts floating tensors (integer and bool
 * tensors are kept). Views are written densely. With SD_CKPT_META the metadata entries go to
 * __metadata__. */
#define SD_CKPT_META 1
int sd_ckpt_to_safetensors(const sd_ckpt *ck, const char *path, sd_st_dtype dtype, int flags);

#endif
