/* fuzz_hfjson.c — libFuzzer target for the tokenizer.json reader.
 * Every input must either load into a tokenizer that encodes and decodes a
 * short text, or fail with a one-line error; never crash, leak or hang. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tok *t = NULL;
    av_err err;
    if (tok_load_hfjson_mem((const char *)data, size, "fuzz.json", &t, &err) != 0) {
        assert(t == NULL && !strchr(err.msg, '\n'));
        return 0;
    }
    static const char text[] = "Hello world! <s> 123 caf\xc3\xa9 \xff [CLS]\n";
    tok_opts o = { 1, 1 };
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(t, text, sizeof text - 1, &o, &ids, &n, &err) == 0) {
        char *s = NULL;
        size_t len;
        for (size_t i = 0; i < n; i++) assert(ids[i] >= 0 && ids[i] < tok_n_vocab(t));
        if (tok_decode(t, ids, n, 1, &s, &len, &err) == 0) free(s);
        free(ids);
    }
    tok_free(t);
    return 0;
}
