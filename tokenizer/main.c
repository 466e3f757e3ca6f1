/* anvil tokenizer — encode / decode text with any supported vocabulary, and
 * train byte-level BPE tokenizers. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil tokenizer encode --tokenizer FILE [--json] [--bos|--no-bos] [--no-special] < text\n"
            "       anvil tokenizer decode --tokenizer FILE [--render-special] < ids\n"
            "       anvil tokenizer train CORPUS... --vocab-size N [--special TOK]... [--pattern gpt2|gpt4|llama3|REGEX]\n"
            "                             [--min-frequency K] [-t THREADS] -o tokenizer.json [--gguf OUT.gguf]\n"
            "\n"
            "FILE: a .gguf model or vocabulary, HF tokenizer.json, llama2.c tokenizer.bin, or a\n"
            "tiktoken .tiktoken rank file (its NAME.json beside it gives the regex and specials).\n"
            "\n"
            "encode  reads text on stdin, prints ids separated by single spaces on one line.\n"
            "        Default as llama.cpp's test-tokenizer-0: no BOS/EOS added, special tokens parsed.\n"
            "  --bos         add BOS/EOS as the vocabulary asks (llama.cpp add_special)\n"
            "  --no-bos      never add BOS/EOS (default)\n"
            "  --no-special  treat special-token text as plain text\n"
            "  --json        print {\"ids\":[...],\"tokens\":[...]}\n"
            "decode  reads whitespace-separated ids on stdin, prints the text.\n"
            "  --render-special  print control tokens (<s>, <|endoftext|>) as text\n"
            "train   byte-level BPE on the corpus files (streamed; specials never merged).\n"
            "\n"
            "Exit codes: 0 ok, 1 failure, 2 usage error.\n");
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    if (!b) return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) { free(b); return NULL; }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) break;
    }
    if (ferror(stdin)) { free(b); return NULL; }
    b[n] = '\0';
    *len = n;
    return b;
}

static json_t *json_token(const tok *t, int32_t id) {
    size_t n;
    const char *s = tok_token_text(t, id, &n);
    json_t *j = s ? json_stringn(s, n) : NULL;
    return j ? j : json_null();
}

static int cmd_encode(int argc, char **argv) {
    const char *path = NULL;
    int as_json = 0;
    tok_opts o = { .add_special = 0, .parse_special = 1 };
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--json")) as_json = 1;
        else if (!strcmp(argv[i], "--bos")) o.add_special = 1;
        else if (!strcmp(argv[i], "--no-bos")) o.add_special = 0;
        else if (!strcmp(argv[i], "--no-special")) o.parse_special = 0;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return 0; }
        else { fprintf(stderr, "anvil tokenizer encode: unexpected argument '%s'\n", argv[i]); usage(stderr); return 2; }
    }
    if (!path) { fprintf(stderr, "anvil tokenizer encode: --tokenizer FILE is required\n"); return 2; }
    av_err err = { 0 };
    tok *t;
    if (tok_load(path, &t, &err)) { fprintf(stderr, "anvil tokenizer: %s\n", err.msg); return 1; }
    size_t len;
    char *text = read_stdin(&len);
    if (!text) { fprintf(stderr, "anvil tokenizer encode: cannot read stdin\n"); tok_free(t); return 1; }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tok_encode(t, text, len, &o, &ids, &n, &err);
    free(text);
    if (rc) { fprintf(stderr, "anvil tokenizer encode: %s\n", err.msg); tok_free(t); return 1; }
    if (as_json) {
        json_t *root = json_object(), *ja = json_array(), *jt = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(ja, json_integer(ids[i]));
            json_array_append_new(jt, json_token(t, ids[i]));
        }
        json_object_set_new(root, "ids", ja);
        json_object_set_new(root, "tokens", jt);
        json_dumpf(root, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(root);
    } else {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    }
    putchar('\n');
    free(ids);
    tok_free(t);
    if (fflush(stdout)) { fprintf(stderr, "anvil tokenizer encode: cannot write output\n"); return 1; }
    return 0;
}

static int cmd_decode(int argc, char **argv) {
    const char *path = NULL;
    int render = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--render-special")) render = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return 0; }
        else { fprintf(stderr, "anvil tokenizer decode: unexpected argument '%s'\n", argv[i]); usage(stderr); return 2; }
    }
    if (!path) { fprintf(stderr, "anvil tokenizer decode: --tokenizer FILE is required\n"); return 2; }
    av_err err = { 0 };
    tok *t;
    if (tok_load(path, &t, &err)) { fprintf(stderr, "anvil tokenizer: %s\n", err.msg); return 1; }
    size_t len, n = 0, cap = 1024;
    char *in = read_stdin(&len);
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!in || !ids) { fprintf(stderr, "anvil tokenizer decode: cannot read stdin\n"); free(in); free(ids); tok_free(t); return 1; }
    int rc = 0;
    for (char *p = in, *end; *p;) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') p++;
        if (!*p) break;
        long v = strtol(p, &end, 10);
        if (end == p || v < INT32_MIN || v > INT32_MAX) {
            fprintf(stderr, "anvil tokenizer decode: stdin: '%.20s' is not a token id\n", p);
            rc = 1;
            goto done;
        }
        if (n == cap) {
            int32_t *ni = realloc(ids, cap * 2 * sizeof *ids);
            if (!ni) { rc = 1; goto done; }
            ids = ni;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    char *text;
    size_t tl;
    if (tok_decode(t, ids, n, render, &text, &tl, &err)) {
        fprintf(stderr, "anvil tokenizer decode: %s\n", err.msg);
        rc = 1;
        goto done;
    }
    fwrite(text, 1, tl, stdout);
    free(text);
    if (fflush(stdout)) { fprintf(stderr, "anvil tokenizer decode: cannot write output\n"); rc = 1; }
done:
    free(in);
    free(ids);
    tok_free(t);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "encode")) return cmd_encode(argc - 2, argv + 2);
    if (!strcmp(cmd, "decode")) return cmd_decode(argc - 2, argv + 2);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2);
    fprintf(stderr, "anvil tokenizer: unknown command '%s' (encode, decode, train)\n", cmd);
    usage(stderr);
    return 2;
}
