/* run.h — pieces of `anvil run` shared between its files (tool-private).
 *
 * main.c parses arguments, loads the model and prints; gen.c generates
 * (sampling or beam search) into a run_result; bench.c is --bench. */
#ifndef ANVIL_RUN_H
#define ANVIL_RUN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "llm.h"
#include "sample.h"
#include "tokenizer.h"

typedef struct run_opts {
    const char *model, *tokenizer;
    const char *prompt;      /* -p, or the contents of -f */
    size_t prompt_len;
    int n_predict;           /* -1: until the context is full */
    int n_threads, n_ctx, n_batch;
    int json, quiet, ignore_eos;
    int beams;               /* 0: sampling; >= 1: beam search */
    float length_penalty;
    int has_seed;
    uint64_t seed;
    smp_params sp;
    smp_bias *bias;
    int n_bias;
    const char **stops;
    int n_stops;
    int bench, bench_pp, bench_tg, reps;
    const char *lora[16];    /* --lora ADAPTER[:SCALE], merged in memory */
    int n_lora;
} run_opts;

/* A growable byte string. */
typedef struct run_buf { char *s; size_t n, cap; } run_buf;
int run_buf_add(run_buf *b, const char *s, size_t n); /* 0 or AV_ENOMEM */

typedef struct run_result {
    int32_t *ids;            /* generated ids (EOS excluded) */
    float *logprobs;         /* [n] log p of each id under the model */
    int n, cap;
    run_buf text;            /* printed text (stop string excluded) */
    const char *stop_reason; /* "eos", "length", "stop", "context" */
    double prompt_s, gen_s;  /* wall time: prompt evaluation, generation */
    int n_eval;              /* single-token evaluations during generation */
} run_result;

void run_result_release(run_result *r);

/* The text llama.cpp prints for token id following prev (llama_token_to_piece
 * with special=true, no lstrip), appended to b. Errors: AV_EINVAL, AV_ENOMEM. */
int run_piece(const tok *t, int32_t prev, int32_t id, run_buf *b, av_err *err);

/* Evaluate prompt[0..n_prompt) and generate per o into r. `out` (may be NULL)
 * receives the text as it is produced, flushed per token. Errors: from the
 * model, sampler and tokenizer. */
int run_generate(const run_opts *o, const llm *l, const tok *t, const int32_t *prompt,
                 int n_prompt, int n_ctx, FILE *out, run_result *r, av_err *err);

/* --bench PP,TG: prints (or --json) pp and tg tokens/s; returns an exit code. */
int run_bench(const run_opts *o, const llm *l, double load_ms);

#endif
