/* libFuzzer target for the ONNX reader (io/protobuf.h, io/onnx.h) and the graph set-up of the runtime
 * (models/onnx_run.h: name resolution, operator check, topological order): any input is parsed to a
 * model or refused with a message naming the buffer; a parsed model is opened as a graph or refused
 * the same way. Nothing is run (a graph may ask for any amount of memory). */
#include "base/error.h"
#include "io/onnx.h"
#include "models/onnx_run.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_onnx_model m;
    if (sd_onnx_parse(data, size, "fuzz.onnx", &m) != SD_OK) {
        if (strncmp(sd_errmsg(), "fuzz.onnx: ", 11)) abort();
        return 0;
    }
    sd_onnx_run r;
    if (sd_onnx_run_open_model(&r, &m, "fuzz.onnx") == SD_OK) {
        if (r.input < 0 || r.output < 0 || r.output >= r.nvals) abort();
        sd_onnx_run_close(&r);
    } else if (strncmp(sd_errmsg(), "fuzz.onnx: ", 11)) {
        abort();
    }
    return 0;
}
