/* Internal to io/ckpt.c and io/ckpt_pickle.c: the pickle value model and parser state. */
#ifndef SD_IO_CKPT_INTERNAL_H
#define SD_IO_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "io/ckpt.h"

typedef enum {
    CK_NONE, CK_BOOL, CK_INT, CK_FLOAT, CK_STR, CK_BYTES, CK_TUPLE, CK_LIST, CK_DICT, CK_GLOBAL,
    CK_STORAGE, CK_TENSOR, CK_NPDTYPE
} ck_type;

typedef enum {
    CK_ODICT = 1, CK_REBUILD_V2, CK_REBUILD, CK_PARAM, CK_PARAM_STATE, CK_ENCODE, CK_STORAGE_TYPE,
    CK_NP_DTYPE, CK_NP_SCALAR, CK_SET
} ck_kind;

typedef struct ck_val ck_val;

typedef struct ck_tensor {
    ck_val *storage;
    int64_t offset, numel;
    int ndim;
    int64_t shape[SD_CKPT_MAX_DIMS], stride[SD_CKPT_MAX_DIMS];
    int requires_grad;
} ck_tensor;

struct ck_val {
    ck_type t;
    union {
        int64_t i;             /* BOOL, INT */
        double f;              /* FLOAT */
    };
    char *s;                   /* STR (UTF-8), BYTES, NPDTYPE ("f8"); NUL-terminated */
    size_t n;                  /* STR/BYTES length; TUPLE/LIST/DICT item count (dict: 2 per entry) */
    ck_val **items;
    size_t cap;
    /* GLOBAL */
    ck_kind kind;
    const char *gname;
    /* GLOBAL (storage type), STORAGE */
    sd_st_dtype dtype;
    /* STORAGE */
    int64_t numel;
    const sd_ckpt_storage *sto;
    /* TENSOR */
    ck_tensor *tn;
};

typedef struct arena_chunk arena_chunk;

typedef struct ck_parser {
    const char *name;
    const sd_ckpt_storage *storages;   /* sorted by key */
    size_t nstorages;
    arena_chunk *arena;
    size_t arena_total, arena_limit;
    int alloc_rc;
} ck_parser;

void *ck_alloc(ck_parser *p, size_t n);
void ck_arena_free(ck_parser *p);
const char *ck_type_name(const ck_val *v);
void ck_show(char *out, size_t size, const char *s, size_t n);
const sd_ckpt_storage *ck_find_storage(const ck_parser *p, const char *key, size_t n);
/* Run the pickle; *root is its result (arena-allocated). */
int ck_unpickle(ck_parser *p, const unsigned char *b, size_t n, ck_val **root);

#endif
