/* llm.h — the Llama-family transformer forward pass (RMSNorm, RoPE, GQA,
 * SwiGLU), shared by run, eval and train.
 *
 * An llm is a set of weight views into an av_model (GGUF names and layout,
 * as llama.cpp's `llama` architecture); it owns nothing but small tables and
 * the f32 A/B of LoRA pairs (llm_add_lora), so the model must outlive it. An llm_ctx holds one sequence's state: a static
 * KV cache [n_layer][n_ctx][n_head_kv*head_dim] allocated once, plus scratch. */
#ifndef AV_LLM_H
#define AV_LLM_H

#include <stdint.h>

#include "err.h"
#include "model.h"

typedef struct llm_hparams {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_ctx_train;  /* llama.context_length */
    float rope_base;  /* llama.rope.freq_base (10000 when absent) */
    float rms_eps;    /* llama.attention.layer_norm_rms_epsilon */
    int rope_mode;    /* OPS_ROPE_NORM for GGUF layout */
} llm_hparams;

/* A LoRA pair applied at run time: a product through W becomes
 * X W^T + factor (X A^T) B^T, W itself untouched (any type, still mmap'd). */
typedef struct llm_lora {
    float *a, *b; /* A [rank, cols], B [rows, rank]: f32, owned by the llm */
    int rank;
    float factor;
    struct llm_lora *next; /* the weight's next pair; pairs add up */
} llm_lora;

typedef struct llm_weight {
    const char *name; /* the tensor's name in the model */
    const void *data; /* view into the model's mmap or buffer */
    av_dtype type;    /* F32, F16, BF16 or a quantized type (ops_weight_supported) */
    int64_t rows, cols;
    llm_lora *lora;   /* adapters (llm_add_lora), or NULL */
} llm_weight;

typedef struct llm_layer {
    const float *attn_norm, *ffn_norm; /* [n_embd] f32 */
    llm_weight wq, wk, wv, wo;         /* [n_head*hd, n_embd] [n_kv*hd, n_embd] x2, [n_embd, n_head*hd] */
    llm_weight w_gate, w_up, w_down;   /* [n_ff, n_embd] x2, [n_embd, n_ff] */
} llm_layer;

typedef struct llm {
    llm_hparams hp;
    llm_weight tok_embd;     /* [n_vocab, n_embd] */
    const float *out_norm;   /* [n_embd] */
    llm_weight output;       /* [n_vocab, n_embd]; = tok_embd when tied */
    llm_layer *layers;       /* [n_layer] */
    int64_t weight_bytes;    /* bytes of weights read per decoded token (LoRA included) */
    int lora_rank_max;       /* largest rank of one pair (context scratch) */
    float *owned_f32;        /* norms widened to f32 when stored as f16/bf16 */
} llm;

/* Build an llm over m (architecture `llama`: hyper-parameters from GGUF
 * metadata, tensors by GGUF name). `name` is used in messages. Every missing
 * key, missing tensor or wrong shape is reported by name.
 * Errors: AV_EUNSUPPORTED (architecture, weight type), AV_EFORMAT, AV_ENOMEM. */
int llm_new(const av_model *m, const char *name, llm **out, av_err *err);
void llm_free(llm *l); /* NULL-safe */

/* Apply a LoRA pair at run time to every weight named target (a tied output
 * shares token_embd.weight's name; the embedding lookup adds factor B[t] A).
 * A [rank, cols] and B [rows, rank] f32 are copied. Pairs on one weight add
 * up; factor 0 adds nothing. Call before llm_ctx_new (contexts size their
 * scratch by the ranks). Errors: AV_ENOTFOUND (no weight of that name),
 * AV_EINVAL (rank < 1), AV_ENOMEM; on error l is unchanged. */
int llm_add_lora(llm *l, const char *target, const float *A, const float *B, int rank, float factor,
                 av_err *err);

typedef struct llm_ctx llm_ctx;

/* State for one sequence of up to n_ctx tokens, evaluating at most n_batch
 * tokens per llm_eval call. Errors: AV_EINVAL, AV_ENOMEM. */
int llm_ctx_new(const llm *l, int n_ctx, int n_batch, llm_ctx **out, av_err *err);
void llm_ctx_free(llm_ctx *c); /* NULL-safe */
int llm_ctx_n_ctx(const llm_ctx *c);

/* Run tokens[0..n) at positions [pos, pos+n) (n <= n_batch; earlier
 * positions must already be in the cache). n > 1 goes through cblas_sgemm,
 * n == 1 through the mat-vec kernels. logits receives [n_vocab] floats for
 * the last token, or [n][n_vocab] when all_logits. n_threads <= 0 means all.
 * Errors: AV_EINVAL (token id out of range, pos+n > n_ctx, n > n_batch). */
int llm_eval(llm_ctx *c, const int32_t *tokens, int n, int pos, float *logits, int all_logits,
             int n_threads, av_err *err);

/* Observer of every matrix product's input (importance matrices): called as
 * fn(ud, w, X, n) with X [n, w->cols] the activations multiplied by weight w,
 * before the product. NULL removes it. Tied output/embedding included. */
typedef void (*llm_observer)(void *ud, const llm_weight *w, const float *X, int n);
void llm_ctx_set_observer(llm_ctx *c, llm_observer fn, void *ud);

/* Copy positions [0, n_pos) of src's KV cache into dst (same llm, n_ctx). */
int llm_ctx_copy(llm_ctx *dst, const llm_ctx *src, int n_pos, av_err *err);

#endif
