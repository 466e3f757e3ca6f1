/* anvil tokenizer train — byte-level BPE on corpus files, written as an HF
 * tokenizer.json (and optionally as GGUF vocabulary metadata). */
#include "train.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_train.h"
#include "gguf.h"
#include "progress.h"
#include "tok_impl.h"

typedef struct train_progress {
    av_bar bar;
    int phase;
} train_progress;

static void on_progress(void *ud, int phase, uint64_t done, uint64_t total) {
    train_progress *p = ud;
    if (phase != p->phase) {
        av_bar_done(&p->bar);
        av_bar_init(&p->bar, p->bar.f, phase ? "merge" : "count", total);
        p->phase = phase;
    }
    av_bar_update(&p->bar, done, total);
}

static int parse_int(const char *opt, const char *v, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < 0 || x > 100000000) {
        fprintf(stderr, "anvil tokenizer train: %s '%s' is not a non-negative integer\n", opt, v);
        return 2;
    }
    *out = (int)x;
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    const char **specials = calloc((size_t)argc + 1, sizeof *specials);
    size_t n_files = 0, n_specials = 0;
    const char *out = NULL, *gguf_out = NULL;
    int as_json = 0, quiet = 0, rc = 2;
    bpe_train_opts o;
    bpe_train_opts_init(&o);
    if (!files || !specials) { fprintf(stderr, "anvil tokenizer train: out of memory\n"); rc = 1; goto done; }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: anvil tokenizer train CORPUS... --vocab-size N [--special TOK]... [--pattern gpt2|gpt4|llama3|REGEX]\n"
                   "                             [--min-frequency K] [-t THREADS] -o tokenizer.json [--gguf OUT.gguf] [--json] [-q]\n");
            rc = 0;
            goto done;
        } else if (!strcmp(a, "--vocab-size") && has_val) { if (parse_int(a, argv[++i], &o.vocab_size)) goto done; }
        else if (!strcmp(a, "--min-frequency") && has_val) { if (parse_int(a, argv[++i], &o.min_frequency)) goto done; }
        else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && has_val) { if (parse_int(a, argv[++i], &o.n_threads)) goto done; }
        else if (!strcmp(a, "--special") && has_val) specials[n_specials++] = argv[++i];
        else if (!strcmp(a, "--pattern") && has_val) o.pattern = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has_val) out = argv[++i];
        else if (!strcmp(a, "--gguf") && has_val) gguf_out = argv[++i];
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "anvil tokenizer train: unknown option or missing value: '%s'\n", a);
            goto done;
        } else files[n_files++] = a;
    }
    if (!n_files || !out) {
        fprintf(stderr, "anvil tokenizer train: need CORPUS files and -o tokenizer.json\n");
        goto done;
    }
    o.specials = specials;
    o.n_specials = n_specials;
    train_progress tp = { .phase = 0 };
    av_bar_init(&tp.bar, quiet ? NULL : stderr, "count", 0);
    o.progress = on_progress;
    o.progress_ud = &tp;
    av_err err = { 0 };
    bpe_result *r = NULL;
    double t0 = av_now();
    rc = 1;
    if (bpe_train_files(files, n_files, &o, &r, &err)) { fprintf(stderr, "anvil tokenizer train: %s\n", err.msg); goto done; }
    av_bar_done(&tp.bar);
    double secs = av_now() - t0;
    if (tok_write_hfjson(r, &o, out, &err)) { fprintf(stderr, "anvil tokenizer train: %s\n", err.msg); bpe_result_free(r); goto done; }
    if (gguf_out) {
        av_model *m = av_model_new();
        int grc = !m ? AV_ENOMEM : bpe_result_to_kv(r, &o, &m->kv, &err);
        if (!grc) grc = gguf_write(m, gguf_out, NULL, NULL, &err);
        av_model_free(m);
        if (grc) { fprintf(stderr, "anvil tokenizer train: %s\n", err.msg); bpe_result_free(r); goto done; }
    }
    if (as_json) {
        json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:I, s:I, s:f}", "output", out, "vocab_size", r->n_vocab,
                              "n_merges", r->n_merges, "n_special", r->n_special, "corpus_bytes", (json_int_t)r->n_bytes,
                              "distinct_pretokens", (json_int_t)r->n_words, "seconds", secs);
        json_dumpf(j, stdout, JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
    } else if (!quiet) {
        fprintf(stderr, "anvil tokenizer train: %llu bytes, %llu distinct pre-tokens -> %d tokens (%d merges) in %.2f s -> %s\n",
                (unsigned long long)r->n_bytes, (unsigned long long)r->n_words, r->n_vocab, r->n_merges, secs, out);
    }
    bpe_result_free(r);
    rc = 0;
done:
    free(files);
    free(specials);
    return rc;
}
