/* Parameter registry: every weight of a model (or of a LoRA network) under its canonical
 * checkpoint key.
 *
 * Life cycle
 *   1. sd_params_init(), then layers register their parameters (sd_params_add(), usually through
 *      the layer's init function with a key prefix such as "model.diffusion_model.input_blocks.1.1").
 *      Registration records key, shape and flags only; no tensor memory exists yet.
 *   2. Optionally choose what trains (sd_params_set_trainable()) and the storage dtype of frozen
 *      matrices (sd_params_set_frozen_dtype(): f16/bf16/f8_e4m3fn linear and conv weights, converted per use
 *      by the ops).
 *   3. sd_params_alloc(): one zeroed block for all values, one for the gradients of the trainable
 *      parameters (f32). From now on value/grad descriptors are valid and the set is fixed.
 *   4. Fill the values: sd_params_load() with a hook, sd_params_load_safetensors(), or uploads.
 *
 * Layers keep `sd_param *` pointers (stable for the registry's lifetime) and read p->value and
 * p->grad at forward/backward time. A parameter with grad.data == NULL is frozen: backward passes
 * skip its weight gradient (the ops get dw = NULL). */
#ifndef SD_NN_PARAMS_H
#define SD_NN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "tensor/tensor.h"

enum {
    SD_PARAM_TRAINABLE = 1u << 0,   /* gets an f32 gradient; always stored as f32 */
    SD_PARAM_HALF_OK = 1u << 1,     /* a linear/conv weight: may be stored f16/bf16 when frozen */
};

typedef struct sd_param {
    char *key;          /* canonical checkpoint key (owned) */
    sd_tensor value;    /* storage dtype; data valid after sd_params_alloc() */
    sd_tensor grad;     /* f32, same shape; data NULL when frozen */
    unsigned flags;     /* SD_PARAM_* */
    size_t index;       /* position in registration order */
    void *user;         /* free for the owner (optimizer state, LoRA module, ...) */
} sd_param;

typedef struct sd_params {
    sd_param **items;
    size_t n, cap;
    size_t *hash;       /* open addressing: index + 1, 0 = empty */
    size_t hcap;
    int allocated;
    sd_dtype frozen_dtype;
    uint8_t device;     /* sd_devkind of value/grad memory */
    void *value_mem, *grad_mem;
    size_t value_bytes, grad_bytes;
} sd_params;

typedef struct sd_params_totals {
    size_t count, trainable_count;       /* parameters (tensors) */
    int64_t numel, trainable_numel;      /* elements */
    size_t value_bytes, grad_bytes;      /* allocated (or to be allocated) bytes, 64-aligned */
} sd_params_totals;

void sd_params_init(sd_params *r);
void sd_params_free(sd_params *r);

/* Register `prefix.name` (just `name` when prefix is NULL or ""). Duplicate keys, a bad shape or
 * registration after sd_params_alloc() are errors. *out (may be NULL) receives the parameter. */
int sd_params_add(sd_params *r, const char *prefix, const char *name, int ndim,
                  const int64_t *shape, unsigned flags, sd_param **out);

size_t sd_params_count(const sd_params *r);
sd_param *sd_params_at(const sd_params *r, size_t i);
/* Exact key lookup; NULL when absent (no message). */
sd_param *sd_params_find(const sd_params *r, const char *key);

/* Before alloc: mark every parameter whose key starts with `prefix` ("" = all) trainable or
 * frozen. Returns the number of parameters changed, or SD_ESTATE after alloc. */
int sd_params_set_trainable(sd_params *r, const char *prefix, int trainable);
/* Before alloc: storage dtype of frozen SD_PARAM_HALF_OK parameters (SD_F32 default; f16, bf16, f8_e4m3fn). */
int sd_params_set_frozen_dtype(sd_params *r, sd_dtype dt);

/* After loading, on the host: store the frozen SD_PARAM_HALF_OK values of a registry allocated with
 * frozen dtype f32 in `dt` instead (f16/bf16, round to nearest even as loading does; new memory,
 * the old freed; sd_param pointers stay valid). For weights edited in f32 after loading (LoRA
 * files merged into a model before training). SD_ESTATE unless allocated on the CPU with f32. */
int sd_params_convert_frozen(sd_params *r, sd_dtype dt);
/* Allocate values (zeroed) and gradients of trainable parameters on `device` (CPU or CUDA). */
int sd_params_alloc(sd_params *r, sd_devkind device);
/* Move the allocated values and gradients to `device` (CPU <-> CUDA): one block copy each, the
 * same layout, the old memory freed; sd_param pointers stay valid and their tensors point to the
 * new memory. A no-op when already there. Used to load and edit weights on the host (hashing,
 * merging networks) before running on a GPU. */
int sd_params_move(sd_params *r, sd_devkind device);
/* grad = 0 for every trainable parameter (one fill over the gradient block). */
int sd_params_zero_grad(sd_ctx *ctx, sd_params *r);
void sd_params_get_totals(const sd_params *r, sd_params_totals *t);

/* ---- loading -------------------------------------------------------------------------------- */

/* Load hook: fill p->value (already allocated, storage dtype, on the registry's device) for one
 * parameter. Return SD_OK, SD_ENOTFOUND when the source has no such key (the caller decides if
 * that is fatal), or another error with a message. */
typedef int (*sd_params_load_fn)(void *user, sd_param *p);
/* Call fn for every parameter in registration order; stops at the first error other than
 * SD_ENOTFOUND. *missing (may be NULL) counts SD_ENOTFOUND answers. */
int sd_params_load(sd_params *r, sd_params_load_fn fn, void *user, size_t *missing);

/* Prefix rewrite from our keys to the file's: a key starting with `ours` is looked up as
 * `file` + the rest. The first matching entry wins; keys matching none are looked up as is
 * (unless SD_LOAD_MAPPED_ONLY). */
typedef struct sd_key_map {
    const char *ours;
    const char *file;
} sd_key_map;

enum {
    SD_LOAD_ALLOW_MISSING = 1u << 0,     /* parameters absent from the file keep their values */
    SD_LOAD_ALLOW_UNEXPECTED = 1u << 1,  /* file tensors nobody claimed are ignored */
    SD_LOAD_SQUEEZE_1X1 = 1u << 2,       /* accept [o,i] for [o,i,1,1] and the reverse */
    SD_LOAD_MAPPED_ONLY = 1u << 3,       /* only parameters matching a map entry are loaded */
};

typedef struct sd_load_report {
    size_t loaded, missing, unexpected;
    char **missing_keys;       /* our keys (malloc'd; free with sd_load_report_free) */
    char **unexpected_keys;    /* file keys */
} sd_load_report;
void sd_load_report_free(sd_load_report *rep);

/* Fill the values from an open safetensors file. Strict by default: every parameter must be in
 * the file with exactly its shape (SD_EFORMAT "file: tensor 'k': expected shape [..], got [..]")
 * and a floating dtype (F64/F32/F16/BF16/F8 are converted to the storage dtype; integer or bool
 * tensors are SD_EFORMAT), and every file tensor under a mapped file prefix (all tensors when
 * nmap is 0) must belong to a parameter. Missing and unexpected keys are listed in the message
 * ("file: 2 missing keys: a, b") and, when `rep` is given, in full in the report. */
int sd_params_load_safetensors(sd_params *r, const sd_safetensors *st, const sd_key_map *map,
                               size_t nmap, unsigned flags, sd_load_report *rep);

#endif
