/* libFuzzer target: the GGUF reader on arbitrary bytes. Also walks what it
 * returned (all metadata and tensor bytes) so a bad bounds check that lets a
 * view escape the buffer shows up under ASan. */
#include <stdint.h>
#include <string.h>

#include "gguf.h"

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    av_model *m = NULL;
    av_err err;
    if (gguf_read_mem(data, size, "fuzz.gguf", &m, &err) == 0) {
        for (size_t i = 0; i < m->n_tensors; i++) {
            int ok;
            size_t n = av_tensor_nbytes(&m->tensors[i], &ok);
            const uint8_t *p = m->tensors[i].data;
            if (ok && n) sink ^= p[0] ^ p[n - 1];
        }
        for (size_t i = 0; i < m->kv.n; i++)
            if (m->kv.items[i].val.type == AV_KV_STRING && m->kv.items[i].val.str.len)
                sink ^= (uint8_t)m->kv.items[i].val.str.s[m->kv.items[i].val.str.len - 1];
    }
    av_model_free(m);
    return 0;
}
