/* mkgguf — write the synthetic f32 GGUF that `make bench` converts.
 *
 *   mkgguf OUT.gguf [N_LAYERS]
 *
 * A plausible llama model (TinyLlama-1.1B shapes: n_embd 2048, n_ff 5632,
 * 32 heads, 4 KV heads, vocab 32000) cut to N_LAYERS blocks (default 2) with
 * tied output, so llama-quantize accepts it too. With 2 layers the tensor data
 * are 611 MB (583 MiB) of f32. Values are normal-ish (sum of four uniforms,
 * sd 0.02; norms around 1), from a seeded counter-based PRNG: the file is the
 * same bytes on every run and any thread count. Written with the core API
 * (gguf_write: temp file, fsync, rename), so a cached file is never partial.
 *
 * Build: cc -O2 -std=c11 -fopenmp -Icore scripts/bench/mkgguf.c build/libanvil.a -ljansson -lm */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"

enum { N_EMBD = 2048, N_FF = 5632, N_HEAD = 32, N_HEAD_KV = 4, N_VOCAB = 32000, N_CTX = 2048 };
#define BLOCK 4096 /* elements per PRNG stream */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n floats ~ mean + sd * N(0,1) (Irwin-Hall of four 16-bit uniforms), stream `seed`. */
static void fill(float *x, int64_t n, uint64_t seed, float mean, float sd) {
    const float inv = 1.0f / 37837.23f; /* sd of a sum of four U{0..65535}: 65536/sqrt(3) */
    int64_t nb = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        uint64_t s = seed * 0x100000001b3ull + (uint64_t)b;
        int64_t i1 = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        for (int64_t i = b * BLOCK; i < i1; i++) {
            uint64_t r = splitmix64(&s);
            int32_t sum = (int32_t)(r & 0xffff) + (int32_t)((r >> 16) & 0xffff) + (int32_t)((r >> 32) & 0xffff) +
                          (int32_t)(r >> 48) - 131070;
            x[i] = mean + sd * (float)sum * inv;
        }
    }
}

static int add(av_model *m, const char *name, int n_dims, int64_t d0, int64_t d1, float mean, float sd) {
    int64_t shape[2] = { d0, d1 };
    int64_t n = n_dims == 1 ? d0 : d0 * d1;
    float *x = malloc((size_t)n * sizeof *x);
    if (!x) { fprintf(stderr, "mkgguf: out of memory for %s\n", name); return 1; }
    fill(x, n, (uint64_t)m->n_tensors + 1, mean, sd);
    if (!av_model_add_tensor(m, name, AV_F32, n_dims, shape, x, x)) {
        free(x);
        fprintf(stderr, "mkgguf: out of memory adding %s\n", name);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: mkgguf OUT.gguf [N_LAYERS]\n");
        return 2;
    }
    int n_layer = argc == 3 ? atoi(argv[2]) : 2;
    if (n_layer < 1 || n_layer > 64) { fprintf(stderr, "mkgguf: N_LAYERS must be 1..64\n"); return 2; }
    av_model *m = av_model_new();
    if (!m) return 1;
    av_kvs *kv = &m->kv;
    const int n_embd_kv = N_EMBD / N_HEAD * N_HEAD_KV;
    int rc = av_kvs_set_str(kv, "general.architecture", "llama") ||
             av_kvs_set_str(kv, "general.name", "anvil bench synthetic (TinyLlama shapes)") ||
             av_kvs_set_u32(kv, "general.file_type", 0) || /* ALL_F32 */
             av_kvs_set_u32(kv, "llama.context_length", N_CTX) ||
             av_kvs_set_u32(kv, "llama.embedding_length", N_EMBD) ||
             av_kvs_set_u32(kv, "llama.block_count", (uint32_t)n_layer) ||
             av_kvs_set_u32(kv, "llama.feed_forward_length", N_FF) ||
             av_kvs_set_u32(kv, "llama.rope.dimension_count", N_EMBD / N_HEAD) ||
             av_kvs_set_u32(kv, "llama.attention.head_count", N_HEAD) ||
             av_kvs_set_u32(kv, "llama.attention.head_count_kv", N_HEAD_KV) ||
             av_kvs_set_f32(kv, "llama.attention.layer_norm_rms_epsilon", 1e-5f) ||
             av_kvs_set_u32(kv, "llama.vocab_size", N_VOCAB);
    if (rc) { fprintf(stderr, "mkgguf: out of memory\n"); av_model_free(m); return 1; }

    /* llama.cpp's tensor order; shapes in PyTorch order ([out, in]) */
    rc = add(m, "token_embd.weight", 2, N_VOCAB, N_EMBD, 0.0f, 0.02f);
    for (int l = 0; l < n_layer && !rc; l++) {
        char nm[64];
#define T(suffix, nd, a, b, mean, sd) (snprintf(nm, sizeof nm, "blk.%d." suffix, l), add(m, nm, nd, a, b, mean, sd))
        rc = T("attn_norm.weight", 1, N_EMBD, 0, 1.0f, 0.05f) || T("attn_q.weight", 2, N_EMBD, N_EMBD, 0.0f, 0.02f) ||
             T("attn_k.weight", 2, n_embd_kv, N_EMBD, 0.0f, 0.02f) || T("attn_v.weight", 2, n_embd_kv, N_EMBD, 0.0f, 0.02f) ||
             T("attn_output.weight", 2, N_EMBD, N_EMBD, 0.0f, 0.02f) || T("ffn_norm.weight", 1, N_EMBD, 0, 1.0f, 0.05f) ||
             T("ffn_gate.weight", 2, N_FF, N_EMBD, 0.0f, 0.02f) || T("ffn_up.weight", 2, N_FF, N_EMBD, 0.0f, 0.02f) ||
             T("ffn_down.weight", 2, N_EMBD, N_FF, 0.0f, 0.02f);
#undef T
    }
    if (!rc) rc = add(m, "output_norm.weight", 1, N_EMBD, 0, 1.0f, 0.05f);
    if (rc) { av_model_free(m); return 1; }

    av_err err = { 0 };
    if (gguf_write(m, argv[1], NULL, NULL, &err)) {
        fprintf(stderr, "mkgguf: %s\n", err.msg);
        av_model_free(m);
        return 1;
    }
    av_model_free(m);
    return 0;
}
