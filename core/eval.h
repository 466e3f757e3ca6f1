/* eval.h — perplexity and model-vs-model agreement, computed the way
 * llama.cpp's llama-perplexity does so the numbers compare 1:1.
 *
 * The token stream (BOS first) is cut into floor(n_tokens / n_ctx) disjoint
 * chunks; each chunk's first token is replaced by BOS, the chunk is
 * evaluated from position 0, and positions n_ctx/2 .. n_ctx-2 predict their
 * next token (n_ctx/2 - 1 scored tokens per chunk). */
#ifndef AV_EVAL_H
#define AV_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "llm.h"

typedef struct ev_opts {
    int n_ctx;     /* chunk length (>= 4, even) */
    int n_batch;   /* tokens per llm_eval call (<= n_ctx; 0 = n_ctx) */
    int n_threads; /* <= 0: all */
    int32_t bos;   /* replaces each chunk's first token; -1 keeps it */
    int max_chunks; /* 0 = all */
    /* called after every chunk with the running PPL (may be NULL) */
    void (*progress)(void *ud, int chunk, int n_chunks, double running_ppl);
    void *ud;
} ev_opts;

typedef struct ev_ppl {
    int n_chunks;
    int64_t n_scored;
    double nll, nll2;  /* sums of -log p and (log p)^2 over scored tokens */
    double ppl, ppl_stderr;
} ev_ppl;

/* Perplexity of l on tokens[0..n). Errors: AV_EINVAL (fewer than 2*n_ctx
 * tokens, bad options), AV_ENOMEM, what llm_eval reports. */
int ev_perplexity(const llm *l, const int32_t *tokens, size_t n, const ev_opts *o, ev_ppl *out,
                  av_err *err);

typedef struct ev_compare {
    ev_ppl base, test;
    double kld_mean, kld_stderr, kld_median, kld_p99, kld_max;
    double top1;        /* fraction of scored positions where the argmaxes agree */
    double ppl_ratio;   /* test.ppl / base.ppl */
} ev_compare;

/* Both models over the same chunks: per scored position, KL(base || test)
 * of the next-token distributions and whether the top tokens agree, plus
 * both perplexities. The vocabularies must have the same size.
 * Errors: as ev_perplexity, AV_EINVAL (vocabulary sizes differ). */
int ev_compare_models(const llm *base, const llm *test, const int32_t *tokens, size_t n,
                      const ev_opts *o, ev_compare *out, av_err *err);

/* Importance matrix as llama-imatrix collects it: over every token of
 * floor(n/n_ctx) BOS-led chunks, the per-column sum of squared inputs of
 * each layer weight (output and embeddings excluded, as llama-imatrix does
 * by default) and the number of rows summed. *out is a new model in
 * llama.cpp's imatrix GGUF form (general.type "imatrix", imatrix.datasets /
 * chunk_count / chunk_size, tensors "<weight>.in_sum2" [cols] and
 * "<weight>.counts" [1], sorted by name) ready for gguf_write; dataset names
 * the text. Errors: as ev_perplexity. */
int ev_imatrix(const llm *l, const int32_t *tokens, size_t n, const ev_opts *o, const char *dataset,
               av_model **out, av_err *err);

/* log softmax(logits)[tok] the way llama.cpp computes it (max-subtracted,
 * sum of expf in double). */
double ev_log_softmax(const float *logits, int n_vocab, int32_t tok);

#endif
