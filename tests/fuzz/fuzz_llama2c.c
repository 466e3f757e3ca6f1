/* libFuzzer target: the llama2.c header validation on arbitrary bytes. */
#include <stdint.h>

#include "llama2c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    l2c_config c;
    av_err err;
    l2c_read_config(data, size, "fuzz.bin", &c, &err);
    return 0;
}
