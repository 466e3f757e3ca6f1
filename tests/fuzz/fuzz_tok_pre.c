/* fuzz_tok_pre.c — pre-tokenizers on arbitrary bytes: pieces must tile the
 * input (no gaps, no overlaps, none empty); invalid UTF-8 is refused with
 * AV_EINVAL, never read by PCRE2 unchecked. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

typedef struct { const char *base; size_t pos; } tiling;

static int on_piece(void *ud, const char *s, size_t n) {
    tiling *t = ud;
    if (n == 0 || s != t->base + t->pos) abort();
    t->pos += n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const names[] = {"default", "gpt-2", "llama-bpe", "qwen2", "falcon", "starcoder",
                                        "deepseek-llm", "deepseek-coder", "deepseek-v3", "gpt-4o", "chameleon"};
    static tok_pre *pre[sizeof names / sizeof names[0]];
    static int init;
    if (!init) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            av_err err;
            if (tok_pre_new(names[i], &pre[i], &err)) abort();
        }
        init = 1;
    }
    if (size == 0) return 0;
    size_t which = data[0] % (sizeof names / sizeof names[0]);
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    tiling t = {s, 0};
    int rc = tok_pre_split(pre[which], s, n, on_piece, &t);
    if (rc == 0 && t.pos != n) abort();
    if (rc != 0 && rc != AV_EINVAL) abort();
    return 0;
}
