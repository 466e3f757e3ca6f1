/* anvil train options: flags and JSON config from one table. */
#include "opts.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define PFX "anvil train"

typedef enum { O_INT, O_I64, O_DBL, O_STR, O_FLAG } otype;

typedef struct opt {
    const char *name; /* long flag without "--"; config key with '-' -> '_' */
    char shortc;
    otype type;
    size_t off;
    double lo, hi; /* numeric range */
    const char *help;
} opt;

#define F(field) offsetof(train_opts, field)
static const opt OPTS[] = {
    { "dim", 0, O_INT, F(dim), 1, 65536, "model width (default 256)" },
    { "layers", 0, O_INT, F(layers), 1, 1024, "transformer blocks (default 4)" },
    { "heads", 0, O_INT, F(heads), 1, 4096, "attention heads (default 8)" },
    { "kv-heads", 0, O_INT, F(kv_heads), 1, 4096, "key/value heads, divides heads (default: heads)" },
    { "ffn", 0, O_INT, F(ffn), 1, 1 << 20, "SwiGLU hidden size (default 768)" },
    { "seq", 0, O_INT, F(seq), 2, 1 << 20, "context length = training window (default 128)" },
    { "vocab", 0, O_INT, F(vocab), 2, 1 << 24, "vocabulary size (default: the dataset's)" },
    { "untied", 0, O_FLAG, F(untied), 0, 0, "separate output head (default: tied to the embedding)" },
    { "dropout", 0, O_DBL, F(dropout), 0, 0.95, "dropout on attention outputs and SwiGLU activations (default 0)" },
    { "rope-base", 0, O_DBL, F(rope_base), 1, 1e9, "RoPE base (default 10000)" },
    { "init", 0, O_STR, F(init), 0, 0, "start from MODEL (.gguf/.pt/.safetensors/HF folder/llama2.c .bin)" },
    { "lora", 0, O_FLAG, F(lora), 0, 0, "LoRA fine-tuning of the --init base (kept frozen, any dtype incl. quantized)" },
    { "lora-r", 0, O_INT, F(lora_r), 1, 65536, "LoRA rank (default 8)" },
    { "lora-alpha", 0, O_DBL, F(lora_alpha), 1e-9, 1e9, "LoRA alpha; updates are scaled by alpha/r (default 16)" },
    { "lora-targets", 0, O_STR, F(lora_targets), 0, 0, "attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down (default: all; HF names too)" },
    { "lora-dropout", 0, O_DBL, F(lora_dropout), 0, 0.95, "dropout on the LoRA inputs, as PEFT's lora_dropout (default 0)" },
    { "adapter-out", 0, O_STR, F(adapter_out), 0, 0, "also write the adapter to X: X.gguf (llama.cpp) or a PEFT folder" },
    { "data", 0, O_STR, F(data), 0, 0, "DIR made by `anvil train prepare` (train.bin, val.bin, meta.json)" },
    { "tokenizer", 0, O_STR, F(tokenizer), 0, 0, "vocabulary for the exported GGUF (default: meta.json's)" },
    { "batch", 'b', O_INT, F(batch), 1, 1 << 16, "sequences per micro-batch (default 16)" },
    { "accum", 0, O_INT, F(accum), 1, 1 << 16, "micro-batches per step (gradient accumulation, default 1)" },
    { "lr", 0, O_DBL, F(lr), 0, 1e30, "peak learning rate (default 1e-3)" },
    { "min-lr", 0, O_DBL, F(min_lr), 0, 1e30, "cosine floor (default lr/10)" },
    { "warmup", 0, O_INT, F(warmup), 0, 1 << 30, "linear warmup steps (default 20)" },
    { "steps", 'n', O_INT, F(steps), 1, 1 << 30, "optimizer steps (default 1000)" },
    { "weight-decay", 0, O_DBL, F(weight_decay), 0, 10, "AdamW decoupled decay on matrices (default 0.1; LoRA 0)" },
    { "no-decay-embedding", 0, O_FLAG, F(no_decay_embedding), 0, 0, "no weight decay on the token embedding (norms never decay)" },
    { "beta1", 0, O_DBL, F(beta1), 0, 0.999999, "AdamW beta1 (default 0.9)" },
    { "beta2", 0, O_DBL, F(beta2), 0, 0.999999, "AdamW beta2 (default 0.95; LoRA 0.999)" },
    { "eps", 0, O_DBL, F(eps), 0, 1, "AdamW epsilon (default 1e-8)" },
    { "clip", 0, O_DBL, F(clip), 0, 1e9, "global gradient-norm clip, 0 = off (default 1)" },
    { "seed", 0, O_I64, F(seed), 0, 9.2e18, "initialization and data order (default 1)" },
    { "eval-every", 0, O_INT, F(eval_every), 0, 1 << 30, "validation every N steps, 0 = only at the end (default 100)" },
    { "eval-batches", 0, O_INT, F(eval_batches), 1, 1 << 20, "validation batches (default 20)" },
    { "ckpt-every", 0, O_INT, F(ckpt_every), 0, 1 << 30, "checkpoint every N steps, 0 = only at the end (default 200)" },
    { "log-every", 0, O_INT, F(log_every), 0, 1 << 30, "plain progress line every N steps off a TTY (default: steps/20)" },
    { "resume", 0, O_FLAG, F(resume), 0, 0, "continue from OUT/checkpoint.safetensors" },
    { "no-hf", 0, O_FLAG, F(no_hf), 0, 0, "do not export OUT/hf (HF folder)" },
    { "output", 'o', O_STR, F(out), 0, 0, "output DIR (default train-out)" },
    { "recompute", 0, O_FLAG, F(recompute), 0, 0, "keep one block's activations, recompute in the backward (less memory, ~1 more forward)" },
    { "threads", 't', O_INT, F(threads), 0, 1024, "threads, 0 = all cores (default 0)" },
    { "json", 0, O_FLAG, F(json), 0, 0, "print the summary as JSON on stdout" },
    { "quiet", 'q', O_FLAG, F(quiet), 0, 0, "no progress output" },
    { "bench", 0, O_FLAG, F(bench), 0, 0, "time --steps steps on random tokens; no files; JSON on stdout" },
    { "bench-warmup", 0, O_INT, F(bench_warmup), 0, 1 << 20, "untimed steps before --bench timing (default 2)" },
};
#define N_OPTS (sizeof OPTS / sizeof OPTS[0])

void train_opts_defaults(train_opts *o) {
    memset(o, 0, sizeof *o);
    o->rope_base = 10000;
    o->batch = 16; o->accum = 1;
    o->lr = 1e-3; o->min_lr = -1; o->warmup = 20; o->steps = 1000;
    o->weight_decay = -1; o->beta1 = 0.9; o->beta2 = -1; /* resolved by train_opts_resolve */ o->eps = 1e-8; o->clip = 1.0;
    o->seed = 1;
    o->eval_every = 100; o->eval_batches = 20; o->ckpt_every = 200; o->log_every = -1;
    o->out = "train-out";
    o->bench_warmup = 2;
}

void train_opts_resolve(train_opts *o) {
    if (o->weight_decay < 0) o->weight_decay = o->lora ? 0.0 : 0.1;
    if (o->beta2 < 0) o->beta2 = o->lora ? 0.999 : 0.95;
}

void train_usage(FILE *f) {
    fprintf(f,
            "usage: anvil train [--config FILE.json] --data DIR [-o OUT] [options]\n"
            "       anvil train --bench --vocab N [model options] [-t N]\n"
            "       anvil train prepare|plot ...   (see `anvil train prepare --help`)\n"
            "\n"
            "Pretrains a Llama model (RMSNorm, RoPE, GQA, SwiGLU) on token shards, in f32 with\n"
            "OpenBLAS + OpenMP. Writes OUT/metrics.jsonl (one line per step, and validation),\n"
            "OUT/checkpoint.safetensors (parameters, AdamW moments, step, data-loader state,\n"
            "settings; atomically, every --ckpt-every steps and on SIGINT/SIGTERM), and at the\n"
            "end OUT/model.gguf (tokenizer embedded: `anvil run OUT/model.gguf`) and OUT/hf/.\n"
            "With --lora --init BASE: only the adapters train (A kaiming-uniform, B zero, as PEFT);\n"
            "checkpoints hold them and their AdamW state; the end writes OUT/adapter.gguf\n"
            "(`anvil run BASE --lora OUT/adapter.gguf`) and, with --adapter-out DIR, a PEFT folder.\n"
            "--resume continues bit-exactly (same thread count). A non-finite loss stops the run.\n"
            "\n"
            "  --config FILE       JSON object of the options below (\"kv_heads\": 4, ...); flags override\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *p = &OPTS[i];
        char left[64];
        snprintf(left, sizeof left, "%s%c%s--%s%s", p->shortc ? "-" : "", p->shortc ? p->shortc : ' ',
                 p->shortc ? ", " : "", p->name,
                 p->type == O_FLAG ? "" : p->type == O_STR ? " X" : " N");
        fprintf(f, "  %-22s%s\n", left[0] == ' ' ? left + 1 : left, p->help);
    }
    fprintf(f,
            "\nFLOPs/token = 6*N + 12*layers*dim*seq (N: matmul parameters incl. the head); MFU is\n"
            "against this machine's sgemm peak at the same thread count, measured at start.\n"
            "Exit codes: 0 ok, 1 failure (bad data/checkpoint, non-finite loss), 2 usage error,\n"
            "130/143 interrupted by SIGINT/SIGTERM (checkpoint saved).\n");
}

static const opt *find_long(const char *name, size_t n) {
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(OPTS[i].name) == n && !strncmp(OPTS[i].name, name, n)) return &OPTS[i];
    return NULL;
}

/* Set option p from text s; where names the source for messages. */
static int set_text(train_opts *o, const opt *p, const char *s, const char *where) {
    char *base = (char *)o + p->off;
    if (p->type == O_STR) { *(const char **)base = s; return 0; }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < p->lo || v > p->hi ||
        (p->type != O_DBL && v != floor(v))) {
        fprintf(stderr, PFX ": %s wants %s in [%g, %g], got '%s'\n", where,
                p->type == O_DBL ? "a number" : "an integer", p->lo, p->hi, s);
        return -1;
    }
    if (p->type == O_INT) *(int *)base = (int)v;
    else if (p->type == O_I64) *(int64_t *)base = (int64_t)v;
    else *(double *)base = v;
    return 0;
}

static int load_config(train_opts *o, const char *path, void **keep) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        fprintf(stderr, PFX ": %s:%d: %s\n", path, je.line, je.text);
        return -1;
    }
    if (!json_is_object(root)) {
        fprintf(stderr, PFX ": %s: the config must be a JSON object\n", path);
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        char name[64];
        size_t n = strlen(key);
        if (n >= sizeof name) n = sizeof name - 1;
        for (size_t i = 0; i < n; i++) name[i] = key[i] == '_' ? '-' : key[i];
        name[n] = 0;
        const opt *p = find_long(name, n);
        char where[160];
        snprintf(where, sizeof where, "%s: key \"%s\"", path, key);
        if (!p || !strcmp(name, "config")) {
            fprintf(stderr, PFX ": %s: unknown key \"%s\"\n", path, key);
            json_decref(root);
            return -1;
        }
        char num[64];
        const char *s = NULL;
        if (p->type == O_FLAG) {
            if (!json_is_boolean(val)) {
                fprintf(stderr, PFX ": %s wants true or false\n", where);
                json_decref(root);
                return -1;
            }
            *(int *)((char *)o + p->off) = json_is_true(val);
            continue;
        }
        if (p->type == O_STR) {
            if (!json_is_string(val)) {
                fprintf(stderr, PFX ": %s wants a string\n", where);
                json_decref(root);
                return -1;
            }
            s = json_string_value(val); /* lives as long as root, kept below */
        } else if (json_is_integer(val)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(val));
            s = num;
        } else if (json_is_real(val)) {
            snprintf(num, sizeof num, "%.17g", json_real_value(val));
            s = num;
        } else {
            fprintf(stderr, PFX ": %s wants a number\n", where);
            json_decref(root);
            return -1;
        }
        if (set_text(o, p, s, where)) { json_decref(root); return -1; }
    }
    *keep = root;
    return 0;
}

int train_opts_parse(train_opts *o, int argc, char **argv, void **keep) {
    *keep = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { train_usage(stdout); return 1; }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) { fprintf(stderr, PFX ": --config wants a FILE\n"); return -1; }
            if (*keep) { fprintf(stderr, PFX ": --config given twice\n"); return -1; }
            o->config = argv[i + 1];
            if (load_config(o, argv[i + 1], keep)) return -1;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) { i++; continue; }
        const opt *p = NULL;
        const char *val = NULL;
        if (a[0] == '-' && a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            p = find_long(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
            if (eq) val = eq + 1;
        } else if (a[0] == '-' && a[1] && !a[2]) {
            for (size_t k = 0; k < N_OPTS; k++)
                if (OPTS[k].shortc == a[1]) p = &OPTS[k];
        } else {
            fprintf(stderr, PFX ": unexpected argument '%s' (options start with --; see --help)\n", a);
            return -1;
        }
        if (!p) { fprintf(stderr, PFX ": unknown option '%s' (see --help)\n", a); return -1; }
        if (p->type == O_FLAG) {
            if (val) { fprintf(stderr, PFX ": %s takes no value\n", a); return -1; }
            *(int *)((char *)o + p->off) = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) { fprintf(stderr, PFX ": %s wants a value\n", a); return -1; }
            val = argv[++i];
        }
        char where[80];
        snprintf(where, sizeof where, "--%s", p->name);
        if (set_text(o, p, val, where)) return -1;
    }
    return 0;
}

char *train_opts_json(const train_opts *o) {
    json_t *j = json_object();
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *p = &OPTS[i];
        const char *base = (const char *)o + p->off;
        char key[64];
        size_t n = strlen(p->name);
        for (size_t k = 0; k <= n; k++) key[k] = p->name[k] == '-' ? '_' : p->name[k];
        json_t *v = NULL;
        switch (p->type) {
        case O_INT: v = json_integer(*(const int *)base); break;
        case O_I64: v = json_integer((json_int_t) * (const int64_t *)base); break;
        case O_DBL: v = json_real(*(const double *)base); break;
        case O_FLAG: v = json_boolean(*(const int *)base); break;
        case O_STR: v = *(const char *const *)base ? json_string(*(const char *const *)base) : json_null(); break;
        }
        json_object_set_new(j, key, v);
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}
