/* libFuzzer target: the token shard reader on arbitrary bytes. When a file
 * opens, read every id (small shards) and a few windows through the loader,
 * so a bounds check that lets a frame or index read escape shows under ASan. */
#include <stdint.h>
#include <stdlib.h>

#include "shard.h"

static volatile int32_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    shard *sh = NULL;
    av_err err;
    if (shard_open_mem(data, size, "fuzz.bin", &sh, &err) != 0) return 0;
    uint64_t n = shard_n_tokens(sh);
    if (n > 0 && n <= (1u << 20)) {
        int32_t *ids = malloc(n * sizeof *ids);
        if (ids && shard_read(sh, 0, n, ids, &err) == 0) sink ^= ids[0] ^ ids[n - 1];
        free(ids);
        shard_loader *l = NULL;
        int32_t in[4 * 8], tg[4 * 8];
        if (n > 8 && shard_loader_new(sh, n, &l, &err) == 0)
            for (int i = 0; i < 3; i++)
                if (shard_next_batch(l, 4, 8, in, tg, &err) == 0) sink ^= in[0] ^ tg[31];
        shard_loader_free(l);
    }
    shard_free(sh);
    return 0;
}
