/* anvil train prepare — tokenize text files into DIR/train.bin, DIR/val.bin
 * (token shards, core/shard.h) and DIR/meta.json. */
#include "prepare.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io.h"
#include "progress.h"
#include "shard.h"
#include "tokenizer.h"

#define PFX "anvil train prepare"

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil train prepare --tokenizer FILE TEXT... -o DIR [--val-fraction F | --val FILE...]\n"
            "                           [--bos] [--no-special] [--frame-tokens N] [-t THREADS] [--json] [-q]\n"
            "\n"
            "Tokenizes the TEXT files (each one a document) into token shards:\n"
            "  DIR/train.bin, DIR/val.bin  zstd-compressed ids, seekable by frame (format: core/shard.h)\n"
            "  DIR/meta.json               tokenizer, vocabulary hash, counts, where validation starts\n"
            "The ids are those `anvil tokenizer encode` gives for each whole file (no BOS/EOS added,\n"
            "special-token text parsed); text is streamed in line-aligned chunks.\n"
            "\n"
            "  --tokenizer FILE    .gguf, tokenizer.json, llama2.c tokenizer.bin or .tiktoken\n"
            "  -o, --output DIR    created if missing\n"
            "  --val-fraction F    the last F of the text (by bytes, moved on to the next line start)\n"
            "                      is the validation set (default 0.1; 0: no val.bin)\n"
            "  --val FILE          validation text from separate files instead (repeatable)\n"
            "  --bos               put BOS before every document\n"
            "  --no-special        treat special-token text as plain text\n"
            "  --frame-tokens N    ids per zstd frame (default %u): smaller = cheaper random windows\n"
            "  -t, --threads N     encode chunks in parallel (default: all cores)\n"
            "  --json              print the summary (meta.json plus timing) on stdout\n"
            "  -q, --quiet         no progress bar or summary\n"
            "\n"
            "Exit codes: 0 ok, 1 failure, 2 usage error.\n",
            SHARD_FRAME_TOKENS);
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, PFX ": %s wants an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static json_t *sources(const char *const *files, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_string(files[i]));
    return a;
}

static const char *kind_name(tok_kind k) { return k == TOK_SPM ? "spm" : k == TOK_BPE ? "bpe" : "wpm"; }

int cmd_prepare(int argc, char **argv) {
    const char **texts = calloc((size_t)argc + 1, sizeof *texts);
    const char **vals = calloc((size_t)argc + 1, sizeof *vals);
    int n_texts = 0, n_vals = 0, as_json = 0, quiet = 0, rc = 2, frac_given = 0;
    const char *tok_path = NULL, *dir = NULL;
    char *train_out = NULL, *val_out = NULL, *meta_out = NULL, *meta = NULL;
    tok *t = NULL;
    json_t *j = NULL;
    shard_prep_opts o = { .parse_special = 1, .val_fraction = 0.1 };
    if (!texts || !vals) { fprintf(stderr, PFX ": out of memory\n"); rc = 1; goto done; }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        long v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); rc = 0; goto done; }
        else if (!strcmp(a, "--tokenizer") && has) tok_path = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has) dir = argv[++i];
        else if (!strcmp(a, "--val") && has) vals[n_vals++] = argv[++i];
        else if (!strcmp(a, "--val-fraction") && has) {
            char *end;
            const char *s = argv[++i];
            errno = 0;
            o.val_fraction = strtod(s, &end);
            if (errno || end == s || *end || !(o.val_fraction >= 0 && o.val_fraction < 1)) {
                fprintf(stderr, PFX ": --val-fraction wants a number in [0, 1), got '%s'\n", s);
                goto done;
            }
            frac_given = 1;
        } else if (!strcmp(a, "--frame-tokens") && has) {
            if (parse_long(a, argv[++i], 1, SHARD_MAX_FRAME_TOKENS, &v)) goto done;
            o.frame_tokens = (uint32_t)v;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && has) {
            if (parse_long(a, argv[++i], 1, 1024, &v)) goto done;
            o.n_threads = (int)v;
        } else if (!strcmp(a, "--bos")) o.bos = 1;
        else if (!strcmp(a, "--no-special")) o.parse_special = 0;
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, PFX ": unknown option or missing value: '%s'\n", a);
            usage(stderr);
            goto done;
        } else texts[n_texts++] = a;
    }
    if (!tok_path) { fprintf(stderr, PFX ": --tokenizer FILE is required\n"); goto done; }
    if (!dir) { fprintf(stderr, PFX ": -o DIR is required\n"); goto done; }
    if (!n_texts) { fprintf(stderr, PFX ": no TEXT files given\n"); goto done; }
    if (n_vals && frac_given) { fprintf(stderr, PFX ": --val and --val-fraction exclude each other\n"); goto done; }
    rc = 1;
    size_t dl = strlen(dir) + 16;
    train_out = malloc(dl), val_out = malloc(dl), meta_out = malloc(dl);
    if (!train_out || !val_out || !meta_out) { fprintf(stderr, PFX ": out of memory\n"); goto done; }
    snprintf(train_out, dl, "%s/train.bin", dir);
    snprintf(val_out, dl, "%s/val.bin", dir);
    snprintf(meta_out, dl, "%s/meta.json", dir);
    int want_val = n_vals > 0 || o.val_fraction > 0;

    av_err err = { 0 };
    if (tok_load(tok_path, &t, &err)) { fprintf(stderr, PFX ": %s\n", err.msg); goto done; }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, PFX ": %s: cannot create folder: %s\n", dir, strerror(errno));
        goto done;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) { fprintf(stderr, PFX ": %s: not a folder\n", dir); goto done; }

    av_bar bar;
    av_bar_init(&bar, quiet || as_json ? NULL : stderr, "prepare", 0);
    o.progress = av_bar_update;
    o.progress_ud = &bar;
    shard_prep_stats st;
    double t0 = av_now();
    if (shard_prepare(t, texts, n_texts, vals, n_vals, train_out, want_val ? val_out : NULL, &o, &st, &err)) {
        av_bar_done(&bar);
        fprintf(stderr, PFX ": %s\n", err.msg);
        goto done;
    }
    av_bar_done(&bar);
    double secs = av_now() - t0;

    int32_t vocab = tok_n_vocab(t);
    char hash[17];
    snprintf(hash, sizeof hash, "%016" PRIx64, shard_vocab_hash(t));
    j = json_object();
    json_object_set_new(j, "format", json_string("anvil token shards"));
    json_object_set_new(j, "version", json_integer(SHARD_VERSION));
    json_t *jt = json_object();
    char *abs_tok = realpath(tok_path, NULL); /* the trainer runs from anywhere */
    json_object_set_new(jt, "path", json_string(abs_tok ? abs_tok : tok_path));
    free(abs_tok);
    json_object_set_new(jt, "kind", json_string(kind_name(tok_get_kind(t))));
    json_object_set_new(jt, "vocab_hash", json_string(hash));
    json_object_set_new(jt, "bos", json_integer(tok_bos(t)));
    json_object_set_new(jt, "eos", json_integer(tok_eos(t)));
    json_object_set_new(j, "tokenizer", jt);
    json_object_set_new(j, "vocab_size", json_integer(vocab));
    json_object_set_new(j, "token_bytes", json_integer(vocab <= 65536 ? 2 : 4));
    json_object_set_new(j, "frame_tokens", json_integer(o.frame_tokens ? o.frame_tokens : SHARD_FRAME_TOKENS));
    json_object_set_new(j, "bos_per_document", json_boolean(o.bos));
    json_object_set_new(j, "parse_special", json_boolean(o.parse_special));
    json_t *jtr = json_object();
    json_object_set_new(jtr, "file", json_string("train.bin"));
    json_object_set_new(jtr, "tokens", json_integer((json_int_t)st.train_tokens));
    json_object_set_new(jtr, "text_bytes", json_integer((json_int_t)st.train_text_bytes));
    json_object_set_new(jtr, "file_bytes", json_integer((json_int_t)st.train_file_bytes));
    json_object_set_new(jtr, "sources", sources(texts, n_texts));
    json_object_set_new(j, "train", jtr);
    if (want_val) {
        json_t *jv = json_object();
        json_object_set_new(jv, "file", json_string("val.bin"));
        json_object_set_new(jv, "tokens", json_integer((json_int_t)st.val_tokens));
        json_object_set_new(jv, "text_bytes", json_integer((json_int_t)st.val_text_bytes));
        json_object_set_new(jv, "file_bytes", json_integer((json_int_t)st.val_file_bytes));
        if (n_vals) {
            json_object_set_new(jv, "sources", sources(vals, n_vals));
        } else {
            json_t *sp = json_object();
            json_object_set_new(sp, "fraction", json_real(o.val_fraction));
            json_object_set_new(sp, "file", json_string(texts[st.split_file]));
            json_object_set_new(sp, "offset", json_integer((json_int_t)st.split_offset));
            json_object_set_new(jv, "split", sp);
        }
        json_object_set_new(j, "val", jv);
    }
    meta = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (!meta) { fprintf(stderr, PFX ": out of memory\n"); goto done; }
    size_t ml = strlen(meta);
    char *m2 = realloc(meta, ml + 2);
    if (!m2) { fprintf(stderr, PFX ": out of memory\n"); goto done; }
    meta = m2;
    memcpy(meta + ml, "\n", 2);
    if (av_write_atomic(meta_out, meta, strlen(meta), &err)) { fprintf(stderr, PFX ": %s\n", err.msg); goto done; }

    double mbs = secs > 0 ? (double)st.text_bytes / secs / 1e6 : 0;
    if (as_json) {
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "mb_per_s", json_real(mbs));
        json_object_set_new(j, "output", json_string(dir));
        json_dumpf(j, stdout, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        putchar('\n');
        if (fflush(stdout)) { fprintf(stderr, PFX ": cannot write output\n"); goto done; }
    } else if (!quiet) {
        fprintf(stderr, PFX ": %" PRIu64 " bytes of text -> %" PRIu64 " train tokens", st.text_bytes, st.train_tokens);
        if (want_val) fprintf(stderr, " + %" PRIu64 " val tokens", st.val_tokens);
        fprintf(stderr, " (vocab %d, %s) in %.2f s, %.1f MB/s -> %s/\n", (int)vocab, vocab <= 65536 ? "u16" : "u32",
                secs, mbs, dir);
    }
    rc = 0;
done:
    json_decref(j);
    free(meta);
    tok_free(t);
    free(train_out);
    free(val_out);
    free(meta_out);
    free(texts);
    free(vals);
    return rc;
}
