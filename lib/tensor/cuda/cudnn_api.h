// Internal to lib/tensor/cuda/ (conv_cudnn.cu) and tests/emu/lib/cudnn_emu.cpp: the part of cuDNN 9's
// legacy convolution API that SD_CUDA_CONV=cudnn uses, declared here so that nothing is built
// against cudnn.h: the library is loaded at run time (dlopen "libcudnn.so.9"), the functions are
// reached through sd_cudnn_api. The emulated build (SD_CUDA_EMU) takes the table from
// tests/emu/lib/cudnn_emu.cpp instead.
//
// Values copied from cuDNN 9.19.0's headers (/usr/local/cuda/include): cudnnStatus_t,
// cudnnDataType_t, cudnnMathType_t, cudnnTensorFormat_t, cudnnConvolutionMode_t from
// cudnn_graph_v9.h; cudnnDeterminism_t and the three algorithm enums from cudnn_ops_v9.h; the
// algorithm-performance structs (cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t, one layout,
// sd_cudnn_perf here) and the function prototypes from cudnn_cnn_v9.h / cudnn_ops_v9.h /
// cudnn_graph_v9.h. Only the enumerators used are listed.
#ifndef SD_TENSOR_CUDA_CUDNN_API_H
#define SD_TENSOR_CUDA_CUDNN_API_H

#include <stddef.h>

#include <cuda_runtime.h>

// cudnn_graph_v9.h: typedef struct cudnnContext *cudnnHandle_t; cudnn_ops_v9.h / cudnn_cnn_v9.h:
// the descriptor handles.
typedef struct cudnnContext *cudnnHandle_t;
typedef struct cudnnTensorStruct *cudnnTensorDescriptor_t;
typedef struct cudnnFilterStruct *cudnnFilterDescriptor_t;
typedef struct cudnnConvolutionStruct *cudnnConvolutionDescriptor_t;

// cudnn_graph_v9.h (subset). Codes are grouped by thousands: 3000..3999 are the NOT_SUPPORTED family.
typedef enum {
    CUDNN_STATUS_SUCCESS = 0,
    CUDNN_STATUS_NOT_INITIALIZED = 1001,
    CUDNN_STATUS_BAD_PARAM = 2000,
    CUDNN_STATUS_BAD_PARAM_NULL_POINTER = 2002,
    CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER = 2003,
    CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH = 2008,
    CUDNN_STATUS_NOT_SUPPORTED = 3000,
    CUDNN_STATUS_NOT_SUPPORTED_SHAPE = 3002,
    CUDNN_STATUS_INTERNAL_ERROR = 4000,
    CUDNN_STATUS_EXECUTION_FAILED = 5000,
} cudnnStatus_t;
#define SD_CUDNN_NOT_SUPPORTED_FAMILY(s) ((int)(s) >= 3000 && (int)(s) < 4000)

typedef enum { CUDNN_DATA_FLOAT = 0 } cudnnDataType_t;  // cudnn_graph_v9.h
typedef enum {                                           // cudnn_graph_v9.h
    CUDNN_DEFAULT_MATH = 0,
    CUDNN_TENSOR_OP_MATH = 1,
    CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION = 2,
    CUDNN_FMA_MATH = 3,
} cudnnMathType_t;
typedef enum { CUDNN_TENSOR_NCHW = 0 } cudnnTensorFormat_t;                           // cudnn_graph_v9.h
typedef enum { CUDNN_CONVOLUTION = 0, CUDNN_CROSS_CORRELATION = 1 } cudnnConvolutionMode_t;  // cudnn_graph_v9.h
typedef enum { CUDNN_NON_DETERMINISTIC = 0, CUDNN_DETERMINISTIC = 1 } cudnnDeterminism_t;  // cudnn_ops_v9.h

typedef enum {  // cudnn_ops_v9.h
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM = 0,
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM = 1,
    CUDNN_CONVOLUTION_FWD_ALGO_GEMM = 2,
    CUDNN_CONVOLUTION_FWD_ALGO_DIRECT = 3,
    CUDNN_CONVOLUTION_FWD_ALGO_COUNT = 8,
} cudnnConvolutionFwdAlgo_t;
typedef enum {  // cudnn_ops_v9.h
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 = 0,  // non-deterministic
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 = 1,
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT = 6,
} cudnnConvolutionBwdDataAlgo_t;
typedef enum {  // cudnn_ops_v9.h
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 = 0,  // non-deterministic
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 = 1,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 = 3,  // non-deterministic
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT = 7,
} cudnnConvolutionBwdFilterAlgo_t;

// cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionBwdDataAlgoPerf_t and cudnnConvolutionBwdFilterAlgoPerf_t
// (cudnn_cnn_v9.h) have this one layout: { algo enum; status; float time; size_t memory;
// determinism; mathType; int reserved[3]; }.
typedef struct sd_cudnn_perf {
    int algo;
    cudnnStatus_t status;
    float time;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t mathType;
    int reserved[3];
} sd_cudnn_perf;
static_assert(sizeof(sd_cudnn_perf) == 48, "the layout of cudnnConvolution*AlgoPerf_t");

// The functions, with cuDNN's prototypes (cudnn_graph_v9.h, cudnn_ops_v9.h, cudnn_cnn_v9.h); the perf
// arrays as sd_cudnn_perf. X(return, name, parameters).
#define SD_CUDNN_FUNCS(X)                                                                                          \
    X(size_t, cudnnGetVersion, (void))                                                                             \
    X(const char *, cudnnGetErrorString, (cudnnStatus_t status))                                                  \
    X(cudnnStatus_t, cudnnCreate, (cudnnHandle_t * handle))                                                        \
    X(cudnnStatus_t, cudnnDestroy, (cudnnHandle_t handle))                                                         \
    X(cudnnStatus_t, cudnnSetStream, (cudnnHandle_t handle, cudaStream_t streamId))                               \
    X(cudnnStatus_t, cudnnCreateTensorDescriptor, (cudnnTensorDescriptor_t * tensorDesc))                          \
    X(cudnnStatus_t, cudnnSetTensor4dDescriptor, (cudnnTensorDescriptor_t tensorDesc, cudnnTensorFormat_t format,   \
                                                  cudnnDataType_t dataType, int n, int c, int h, int w))           \
    X(cudnnStatus_t, cudnnDestroyTensorDescriptor, (cudnnTensorDescriptor_t tensorDesc))                           \
    X(cudnnStatus_t, cudnnCreateFilterDescriptor, (cudnnFilterDescriptor_t * filterDesc))                          \
    X(cudnnStatus_t, cudnnSetFilter4dDescriptor, (cudnnFilterDescriptor_t filterDesc, cudnnDataType_t dataType,     \
                                                  cudnnTensorFormat_t format, int k, int c, int h, int w))         \
    X(cudnnStatus_t, cudnnDestroyFilterDescriptor, (cudnnFilterDescriptor_t filterDesc))                           \
    X(cudnnStatus_t, cudnnCreateConvolutionDescriptor, (cudnnConvolutionDescriptor_t * convDesc))                  \
    X(cudnnStatus_t, cudnnSetConvolution2dDescriptor,                                                              \
      (cudnnConvolutionDescriptor_t convDesc, int pad_h, int pad_w, int u, int v, int dilation_h, int dilation_w,  \
       cudnnConvolutionMode_t mode, cudnnDataType_t computeType))                                                  \
    X(cudnnStatus_t, cudnnSetConvolutionMathType, (cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t mathType)) \
    X(cudnnStatus_t, cudnnDestroyConvolutionDescriptor, (cudnnConvolutionDescriptor_t convDesc))                   \
    X(cudnnStatus_t, cudnnGetConvolutionForwardAlgorithm_v7,                                                       \
      (cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc,      \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc,                        \
       const int requestedAlgoCount, int *returnedAlgoCount, sd_cudnn_perf *perfResults))                          \
    X(cudnnStatus_t, cudnnGetConvolutionBackwardDataAlgorithm_v7,                                                  \
      (cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc, const cudnnTensorDescriptor_t diffDesc,     \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t gradDesc,                        \
       const int requestedAlgoCount, int *returnedAlgoCount, sd_cudnn_perf *perfResults))                          \
    X(cudnnStatus_t, cudnnGetConvolutionBackwardFilterAlgorithm_v7,                                                \
      (cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnTensorDescriptor_t diffDesc,        \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,                        \
       const int requestedAlgoCount, int *returnedAlgoCount, sd_cudnn_perf *perfResults))                          \
    X(cudnnStatus_t, cudnnGetConvolutionForwardWorkspaceSize,                                                      \
      (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,             \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,                           \
       cudnnConvolutionFwdAlgo_t algo, size_t *sizeInBytes))                                                       \
    X(cudnnStatus_t, cudnnGetConvolutionBackwardDataWorkspaceSize,                                                 \
      (cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,            \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,                          \
       cudnnConvolutionBwdDataAlgo_t algo, size_t *sizeInBytes))                                                   \
    X(cudnnStatus_t, cudnnGetConvolutionBackwardFilterWorkspaceSize,                                               \
      (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,            \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,                        \
       cudnnConvolutionBwdFilterAlgo_t algo, size_t *sizeInBytes))                                                 \
    X(cudnnStatus_t, cudnnConvolutionForward,                                                                      \
      (cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc, const void *x,                \
       const cudnnFilterDescriptor_t wDesc, const void *w, const cudnnConvolutionDescriptor_t convDesc,            \
       cudnnConvolutionFwdAlgo_t algo, void *workSpace, size_t workSpaceSizeInBytes, const void *beta,             \
       const cudnnTensorDescriptor_t yDesc, void *y))                                                              \
    X(cudnnStatus_t, cudnnConvolutionBackwardData,                                                                 \
      (cudnnHandle_t handle, const void *alpha, const cudnnFilterDescriptor_t wDesc, const void *w,                \
       const cudnnTensorDescriptor_t dyDesc, const void *dy, const cudnnConvolutionDescriptor_t convDesc,          \
       cudnnConvolutionBwdDataAlgo_t algo, void *workSpace, size_t workSpaceSizeInBytes, const void *beta,         \
       const cudnnTensorDescriptor_t dxDesc, void *dx))                                                            \
    X(cudnnStatus_t, cudnnConvolutionBackwardFilter,                                                               \
      (cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc, const void *x,                \
       const cudnnTensorDescriptor_t dyDesc, const void *dy, const cudnnConvolutionDescriptor_t convDesc,          \
       cudnnConvolutionBwdFilterAlgo_t algo, void *workSpace, size_t workSpaceSizeInBytes, const void *beta,       \
       const cudnnFilterDescriptor_t dwDesc, void *dw))

#define SD_CUDNN_FIELD(ret, name, params) ret(*name) params;
struct sd_cudnn_api {
    SD_CUDNN_FUNCS(SD_CUDNN_FIELD)
};
#undef SD_CUDNN_FIELD

#ifdef SD_CUDA_EMU
// tests/emu/lib/cudnn_emu.cpp: the emulated library's table; NULL when SD_EMU_CUDNN=missing (the
// library "cannot be loaded").
const sd_cudnn_api *sd_cudnn_emu_api(void);
#endif

#endif
