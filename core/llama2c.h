/* llama2c.h — Karpathy's llama2.c checkpoints (legacy v0) and tokenizer.bin.
 *
 * checkpoint: 7 x i32 header {dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len} (vocab_size < 0: separate classifier), then f32 arrays:
 * token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim],
 * wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim],
 * w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
 * freq_cis_real/imag [seq_len, head_size/2] (skipped), wcls [vocab, dim] if untied.
 *
 * tokenizer.bin: i32 max_token_length, then per token f32 score, i32 len, bytes. */
#ifndef AV_LLAMA2C_H
#define AV_LLAMA2C_H

#include "model.h"

typedef struct l2c_config {
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier; /* vocab_size was positive */
} l2c_config;

/* Read a checkpoint (and, if tokenizer_path is non-NULL, its tokenizer.bin)
 * into a model with GGUF llama tensor names and llama.* / tokenizer.ggml.*
 * metadata, laid out as llama.cpp's convert-llama2c-to-ggml does. Tensors are
 * views into the mmap (no copy). Errors: AV_EIO, AV_EFORMAT. */
int l2c_read(const char *path, const char *tokenizer_path, av_model **out, av_err *err);

/* Parse and validate just the header (file size must match it exactly). */
int l2c_read_config(const void *buf, size_t size, const char *name, l2c_config *cfg, av_err *err);

/* Read tokenizer.bin into kv as tokenizer.ggml.{model,tokens,scores,token_type,...}
 * for a vocabulary of n_vocab tokens. Errors: AV_EIO, AV_EFORMAT. */
int l2c_read_tokenizer(const char *path, int32_t n_vocab, av_kvs *kv, av_err *err);

#endif
