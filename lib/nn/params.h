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
    struct sd_grad_pool *pool;   /* lazy gradient (sd_params_set_grad_pool): grad.data is NULL until a
                                    backward asks for it (sd_param_grad), and again once released */
    uint64_t pool_pass, pool_done;   /* the pool's pass / step that last touched / released it */
} sd_param;

typedef struct sd_params {
    sd_param **items;
    struct sd_grad_pool *pool;   /* lazy gradients (NULL: one gradient block) */
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

/* ---- lazy gradients (optimizer steps inside the backward) -----------------------------------
 *
 * A registry given a pool before sd_params_alloc gets no gradient block: the gradient of a trainable
 * parameter is allocated (zeroed, f32, where its value lives) when a backward first asks for it through
 * sd_param_grad(), and the owner's `done` hook is called once it is complete, so the owner can use it
 * (clip it, step the optimizer) and release it (sd_grad_pool_release). "Complete" is decided by the
 * order of the backward: the layers' backward functions write every gradient of one module
 * (a key without its last component: "...attn1.to_q") together, and never come back to a module
 * once they have left it within one backward pass, so when a pass asks for a parameter of another
 * module, the gradients touched since the last change are complete. A parameter asked for again
 * after its release in the same step is an error (SD_ESTATE, kept in pool->rc; the layer then gets
 * no gradient and the caller must check pool->rc after the backward).
 * hold: nothing is complete (gradient accumulation's micro batches before the last one): gradients
 * stay allocated and accumulate. */
typedef int (*sd_grad_done_fn)(void *user, sd_param *p);

typedef struct sd_grad_pool {
    sd_grad_done_fn done;
    void *user;
    sd_param **pend;        /* touched in this pass since the last module change */
    size_t npend, cap;
    const char *mod;        /* key of the current module's first parameter; modlen: its module part */
    size_t modlen;
    uint64_t pass, step;    /* pass: one per sd_grad_pool_begin_pass; step: one per sd_grad_pool_begin_step */
    int hold;
    int rc;                 /* first error (sticky until sd_grad_pool_begin_step) */
    size_t bytes, peak;     /* gradient bytes allocated now / at most */
} sd_grad_pool;

void sd_grad_pool_init(sd_grad_pool *g, sd_grad_done_fn done, void *user);
void sd_grad_pool_free(sd_grad_pool *g);   /* the list only: release the parameters first */
/* Before sd_params_alloc: the registry's trainable parameters get lazy gradients from g. */
int sd_params_set_grad_pool(sd_params *r, sd_grad_pool *g);
/* A new optimizer step (releases are counted per step) / a new backward pass (hold: keep all). */
void sd_grad_pool_begin_step(sd_grad_pool *g);
void sd_grad_pool_begin_pass(sd_grad_pool *g, int hold);
/* After the backward pass: the gradients touched since the last module change are complete (does
 * nothing while holding). Returns pool->rc or the hook's error. */
int sd_grad_pool_end_pass(sd_grad_pool *g);
/* Free p's gradient (grad.data = NULL); asking for it again this step is an error. */
void sd_grad_pool_release(sd_grad_pool *g, sd_param *p);

/* The gradient a backward accumulates into: NULL when p is frozen (or absent); a lazy gradient is
 * allocated here (see above). */
sd_tensor *sd_param_grad(sd_param *p);
/* Whether p gets a gradient (frozen: no), without allocating it. */
static inline int sd_param_has_grad(const sd_param *p)
{
    return p && (p->grad.data || (p->pool && (p->flags & SD_PARAM_TRAINABLE)));
}

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
