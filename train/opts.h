/* opts.h — `anvil train` settings: one table of options read from a JSON
 * config file (keys = long flag names with '-' -> '_') and then from flags,
 * which override it; checked as a whole before any data or model is touched. */
#ifndef ANVIL_TRAIN_OPTS_H
#define ANVIL_TRAIN_OPTS_H

#include <stdint.h>
#include <stdio.h>

typedef struct train_opts {
    /* model (0 = not given: from --init, the checkpoint, or the default) */
    int dim, layers, heads, kv_heads, ffn, seq, vocab;
    int untied;
    double dropout;
    double rope_base;
    const char *init; /* --init MODEL (the frozen base with --lora) */
    /* LoRA (0 / NULL = not given: the checkpoint's, or r 8, alpha 16, all seven targets) */
    int lora, lora_r;
    double lora_alpha, lora_dropout;
    const char *lora_targets, *adapter_out;
    /* data */
    const char *data;      /* DIR from `anvil train prepare` */
    const char *tokenizer; /* overrides meta.json's */
    /* batch */
    int batch, accum;
    /* optimizer and schedule */
    double lr, min_lr, weight_decay, beta1, beta2, eps, clip;
    int no_decay_embedding;
    int warmup, steps;
    int64_t seed;
    /* evaluation, checkpoints, output */
    int eval_every, eval_batches, ckpt_every, log_every;
    int resume, no_hf;
    const char *out; /* -o DIR */
    /* run */
    int threads, json, quiet;
    int recompute;
    int bench, bench_warmup;
    const char *config; /* --config FILE (for messages) */
} train_opts;

/* Defaults (the demo's small model; see train/main.c --help). */
void train_opts_defaults(train_opts *o);

/* Parse argv (after "train"): --config is read first wherever it appears,
 * then the flags in order. Returns 0, 1 (--help printed: exit 0), or -1
 * (error printed to stderr with the flag or config key: exit 2). Strings
 * point into argv or into *keep (config file contents; caller frees). */
int train_opts_parse(train_opts *o, int argc, char **argv, void **keep);

/* Defaults that depend on the mode (LoRA: weight decay 0, beta2 0.999, as
 * PEFT/HF Trainer; else 0.1 and 0.95), where not given. */
void train_opts_resolve(train_opts *o);

/* The options as a JSON object text (malloc'd), for checkpoints and --json. */
char *train_opts_json(const train_opts *o);

void train_usage(FILE *f);

#endif
