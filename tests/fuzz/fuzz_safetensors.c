/* fuzz_safetensors.c — libFuzzer target for the safetensors reader.
 * Every input must either parse into a model whose tensor views lie inside
 * the input, or fail with an error; never crash, leak or read out of bounds. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    av_model *m = NULL;
    av_err err;
    if (st_read_mem(data, size, "fuzz.safetensors", &m, &err) == 0) {
        for (size_t i = 0; i < m->n_tensors; i++) {
            int ok;
            size_t nb = av_tensor_nbytes(&m->tensors[i], &ok);
            const uint8_t *p = m->tensors[i].data;
            assert(ok && p >= data && nb <= size && p - data <= (ptrdiff_t)(size - nb));
        }
        av_model_free(m);
    }
    return 0;
}
