/* ONNX model files (onnx.proto3 ModelProto), read with io/protobuf.h into plain structs.
 *
 * Read: ir_version, producer_name, opset_import (the default domain's version), and of the main
 * graph: nodes (name, op_type, domain, inputs, outputs, attributes of type FLOAT, INT, STRING,
 * TENSOR, FLOATS, INTS; a GRAPH attribute (If/Loop bodies) is recorded as such and refused by
 * the runtime), initializers (TensorProto with raw_data, or float_data / int32_data / int64_data /
 * double_data), and the inputs/outputs with their tensor element types and shapes (dim_value, or
 * -1 for a dim_param or unknown dimension). Unknown fields are skipped, as protobuf requires.
 *
 * Errors (the message names the file): SD_EFORMAT for a malformed encoding or inconsistent
 * message (truncated data, a tensor whose data size does not match its dims and type, more
 * than SD_ONNX_MAX_DIMS dimensions); SD_EUNSUPPORTED for tensors stored as external data
 * (data_location EXTERNAL: "model.onnx: initializer 3: tensor at byte 1234: tensor 'w' is stored
 * in an external data file (…); not supported: …"), string tensors, sparse initializers and element
 * types other than float,
 * float16, bfloat16, double, int8/16/32/64, uint8/16/32/64 and bool. */
#ifndef SD_IO_ONNX_H
#define SD_IO_ONNX_H

#include <stddef.h>
#include <stdint.h>

#define SD_ONNX_MAX_DIMS 8

enum sd_onnx_dtype {
    SD_ONNX_FLOAT = 1, SD_ONNX_UINT8 = 2, SD_ONNX_INT8 = 3, SD_ONNX_UINT16 = 4, SD_ONNX_INT16 = 5,
    SD_ONNX_INT32 = 6, SD_ONNX_INT64 = 7, SD_ONNX_STRING = 8, SD_ONNX_BOOL = 9, SD_ONNX_FLOAT16 = 10,
    SD_ONNX_DOUBLE = 11, SD_ONNX_UINT32 = 12, SD_ONNX_UINT64 = 13, SD_ONNX_BFLOAT16 = 16,
};

/* attribute types (AttributeProto.AttributeType) */
enum { SD_ONNX_ATTR_FLOAT = 1, SD_ONNX_ATTR_INT = 2, SD_ONNX_ATTR_STRING = 3, SD_ONNX_ATTR_TENSOR = 4,
       SD_ONNX_ATTR_GRAPH = 5, SD_ONNX_ATTR_FLOATS = 6, SD_ONNX_ATTR_INTS = 7, SD_ONNX_ATTR_STRINGS = 8 };

typedef struct sd_onnx_tensor {
    char *name;
    int dtype;                          /* sd_onnx_dtype */
    int ndim;
    int64_t dims[SD_ONNX_MAX_DIMS];
    int64_t count;                      /* product of dims */
    /* the elements: float for FLOAT/FLOAT16/BFLOAT16/DOUBLE (converted), int64_t for every integer
     * type and BOOL (converted); malloc'd (NULL when count is 0) */
    void *data;
} sd_onnx_tensor;

typedef struct sd_onnx_attr {
    char *name;
    int type;
    float f;
    int64_t i;
    char *s;                 /* STRING (NUL-terminated copy) */
    float *floats;
    int64_t *ints;
    int n;                   /* elements of floats/ints */
    sd_onnx_tensor *t;       /* TENSOR */
} sd_onnx_attr;

typedef struct sd_onnx_node {
    char *name, *op_type, *domain;
    char **in, **out;        /* "" for an omitted optional input/output */
    int nin, nout;
    sd_onnx_attr *attrs;
    int nattr;
} sd_onnx_node;

typedef struct sd_onnx_value_info {
    char *name;
    int dtype;               /* 0 when not a tensor type */
    int ndim;                /* -1 when the shape is not given */
    int64_t dims[SD_ONNX_MAX_DIMS];   /* -1: symbolic (dim_param) or unknown */
} sd_onnx_value_info;

typedef struct sd_onnx_model {
    int64_t ir_version, opset;   /* opset: the default domain's ("" or "ai.onnx"); 0 if not imported */
    char *producer;
    sd_onnx_node *nodes;
    sd_onnx_tensor *inits;
    sd_onnx_value_info *inputs, *outputs;
    int nnodes, ninits, ninputs, noutputs;
} sd_onnx_model;

/* Parse a whole file / a buffer (`name` names it in messages). On error *m is left empty. */
int sd_onnx_load(const char *path, sd_onnx_model *m);
int sd_onnx_parse(const void *data, size_t n, const char *name, sd_onnx_model *m);
void sd_onnx_free(sd_onnx_model *m);

const char *sd_onnx_dtype_name(int dtype);
/* the attribute `name` of a node, or NULL */
const sd_onnx_attr *sd_onnx_attr_find(const sd_onnx_node *n, const char *name);

#endif
