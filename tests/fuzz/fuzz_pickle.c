/* fuzz_pickle.c — libFuzzer target for the restricted unpickler (core/pickle.c).
 * Every input must unpickle or fail with an error message; never crash,
 * leak, recurse without bound or read out of bounds. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pk_result *r = NULL;
    av_err err = {0};
    size_t used = 0;
    if (pk_load(data, size, "fuzz.pkl", &r, &used, &err) == 0) {
        assert(used <= size && pk_root(r));
        (void)pk_dict_get(pk_root(r), "state_dict");
        for (size_t i = 0; i < pk_n_storages(r); i++) assert(pk_storage_at(r, i)->type == PK_STORAGE);
        pk_result_free(r);
    } else {
        assert(err.code != 0 && err.msg[0]);
    }
    return 0;
}
