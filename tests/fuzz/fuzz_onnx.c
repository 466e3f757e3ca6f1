/* libFuzzer target: the ONNX reader (nesting pre-check, protobuf-c decoding,
 * tensor validation), the description and the Llama graph mapping. */
#include <stdint.h>
#include <stdlib.h>

#include "onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    av_err err;
    onnx_model *m = NULL;
    if (onnx_open_mem(data, size, "fuzz.onnx", &m, &err) == 0) {
        json_t *j = NULL;
        if (onnx_describe(m, &j, &err) == 0) json_decref(j);
        av_model *am = NULL;
        if (onnx_to_model(m, &am, &err) == 0) av_model_free(am);
    }
    onnx_free(m);
    return 0;
}
