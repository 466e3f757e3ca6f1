/* fuzz_torchpt.c — libFuzzer target for the PyTorch checkpoint reader: the
 * zip layer (libarchive, entry names, bombs), the legacy stream, storage
 * views. Every tensor of an accepted input is read whole (ASan checks the
 * views); rejected inputs must carry a message. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "torchpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    av_model *m = NULL;
    av_err err = {0};
    if (pt_read_mem(data, size, "fuzz.pt", NULL, &m, &err) == 0) {
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < m->n_tensors; i++) {
            int ok;
            size_t nb = av_tensor_nbytes(&m->tensors[i], &ok);
            assert(ok);
            const uint8_t *p = m->tensors[i].data;
            for (size_t k = 0; k < nb; k++) sum ^= p[k];
        }
        (void)sum;
        av_model_free(m);
    } else {
        assert(err.code != 0 && err.msg[0]);
    }
    return 0;
}
