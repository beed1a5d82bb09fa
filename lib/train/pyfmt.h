/* Python-compatible formatting and literal parsing, for the strings the reference writes into
 * metadata (str() of Python values) and the "key=value" lists it parses with ast.literal_eval
 * (--optimizer_args, --lr_scheduler_args, --network_args). */
#ifndef SD_TRAIN_PYFMT_H
#define SD_TRAIN_PYFMT_H

#include <stddef.h>
#include <stdint.h>

/* repr(float) / str(float) of Python 3: the shortest digits that read back to the same double;
 * fixed notation when the decimal exponent is in [-4, 16) ("0.0001", "123.0", "1e-05",
 * "1e+16"), "inf", "-inf", "nan". Returns out. */
char *sd_py_float(double v, char *out, size_t n);
/* str(bool) */
static inline const char *sd_py_bool(int b) { return b ? "True" : "False"; }

/* A parsed literal. */
typedef enum sd_py_kind {
    SD_PY_NONE = 0, SD_PY_BOOL, SD_PY_INT, SD_PY_FLOAT, SD_PY_STR, SD_PY_TUPLE, SD_PY_LIST
} sd_py_kind;

#define SD_PY_MAX_ITEMS 32

typedef struct sd_py_value {
    sd_py_kind kind;
    int64_t i;                   /* BOOL (0/1), INT */
    double f;                    /* FLOAT; INT and BOOL also set it */
    char s[256];                 /* STR */
    int nitems;                  /* TUPLE/LIST: numbers (or bools/None) only */
    sd_py_kind item_kind[SD_PY_MAX_ITEMS];
    double items[SD_PY_MAX_ITEMS];
    char repr[512];              /* Python str() of the value */
} sd_py_value;

/* ast.literal_eval for the subset the reference's option lists use: int, float (with exponent,
 * inf/nan are NOT literals), True/False/None, '…' or "…" strings (simple escapes), and flat
 * tuples/lists of numbers/bools/None ("0.9,0.999", "(0.9, 0.999)", "[1, 2]"; a trailing comma
 * makes a 1-tuple). Unary minus/plus on numbers. SD_EUSAGE with "`text`: malformed literal"
 * otherwise (a bare word such as cosine is malformed, as in Python). */
int sd_py_literal(const char *text, sd_py_value *v);

/* Split "key=value" as the reference does (arg.split("=") must give exactly two parts). */
int sd_py_split_kv(const char *item, char *key, size_t nkey, const char **value);

/* "key=value" items into a dict as Python builds kwargs from them: a repeated key keeps its first
 * place and takes the last value. Values point into the items. Errors (SD_EUSAGE) start with `what`. */
#define SD_PY_MAX_KWARGS 64
typedef struct sd_py_kwargs {
    char key[SD_PY_MAX_KWARGS][64];
    const char *val[SD_PY_MAX_KWARGS];
    int n;
} sd_py_kwargs;
int sd_py_kwargs_parse(sd_py_kwargs *kw, const char *const *items, int n, const char *what);

#endif
