/* test_tok_bpe.c — byte-level BPE: tiktoken parity, the tiktoken loader's
 * validation, and pre-tokenizer properties.
 *
 * References: token ids from npm tiktoken@1.0.22 for gpt2, r50k_base,
 * cl100k_base and o200k_base (shared/reference/tokenizer/tiktoken, listed in
 * its manifest.json); the ggml-vocab BPE suites (llama.cpp / HF) are run by
 * test_tok_vocab.c. Pre-split tests only assert properties (pieces tile the
 * input, none empty), never splits produced by this code. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "tok_impl.h"
#include "tokenizer.h"
#include "testutil.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ids JSON array -> malloc'd int32 array */
static int32_t *load_ids(const char *path, size_t *n) {
    json_error_t je;
    json_t *a = json_load_file(path, 0, &je);
    cr_assert(json_is_array(a), "%s: %s", path, je.text);
    *n = json_array_size(a);
    int32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    json_decref(a);
    return v;
}

/* Run every manifest result for one encoding; returns the number checked. */
static int run_encoding(const char *enc) {
    json_error_t je;
    json_t *m = json_load_file(shared_path("reference/tokenizer/tiktoken/manifest.json"), 0, &je);
    cr_assert(m, "manifest: %s", je.text);
    json_t *e = json_object_get(json_object_get(m, "encodings"), enc);
    cr_assert(e, "no encoding %s in manifest", enc);
    const char *tf = json_string_value(json_object_get(e, "tiktoken_file"));
    tok *t = NULL;
    av_err err = {0};
    int rc = tok_load_tiktoken(shared_path(tf), &t, &err);
    cr_assert_eq(rc, 0, "%s: %s", tf, err.msg);
    cr_assert_eq(tok_n_vocab(t), (int32_t)json_integer_value(json_object_get(e, "n_vocab")));
    cr_assert_eq(tok_get_kind(t), TOK_BPE);

    int checked = 0;
    size_t k;
    json_t *r;
    json_array_foreach(json_object_get(m, "results"), k, r) {
        if (strcmp(json_string_value(json_object_get(r, "encoding")), enc)) continue;
        const char *in = json_string_value(json_object_get(r, "input_path"));
        const char *mode = json_string_value(json_object_get(r, "mode"));
        size_t used = (size_t)json_integer_value(json_object_get(r, "input_bytes"));
        size_t len;
        unsigned char *text = slurp(shared_path(in), &len);
        cr_assert(text && len >= used, "%s", in);
        size_t n_exp;
        int32_t *exp = load_ids(shared_path(json_string_value(json_object_get(r, "ids_file"))), &n_exp);
        cr_assert_eq(n_exp, (size_t)json_integer_value(json_object_get(r, "n_tokens")));

        tok_opts o = {.add_special = 0, .parse_special = !strcmp(mode, "special")};
        int32_t *ids = NULL;
        size_t n = 0;
        double t0 = now_s();
        rc = tok_encode(t, (const char *)text, used, &o, &ids, &n, &err);
        double dt = now_s() - t0;
        cr_assert_eq(rc, 0, "%s", err.msg);
        size_t first = 0;
        while (first < n && first < n_exp && ids[first] == exp[first]) first++;
        cr_expect(n == n_exp && first == n, "%s %s %s: %zu ids, expected %zu; first difference at %zu (got %d, want %d)",
                  enc, in, mode, n, n_exp, first, first < n ? ids[first] : -1, first < n_exp ? exp[first] : -1);
        if (used >= 100000) cr_expect(dt < 1.0, "%s %s: encoding %zu bytes took %.3f s", enc, in, used, dt);

        char *dec = NULL;
        size_t dl = 0;
        rc = tok_decode(t, exp, n_exp, 1, &dec, &dl, &err);
        cr_assert_eq(rc, 0, "%s", err.msg);
        cr_expect(dl == used && !memcmp(dec, text, used), "%s %s %s: decode(ids) != input", enc, in, mode);
        free(dec);
        free(ids);
        free(exp);
        free(text);
        checked++;
    }
    json_decref(m);
    tok_free(t);
    return checked;
}

Test(tiktoken, gpt2) { cr_expect_eq(run_encoding("gpt2"), 10); }
Test(tiktoken, r50k_base) { cr_expect_eq(run_encoding("r50k_base"), 10); }
Test(tiktoken, cl100k_base) { cr_expect_eq(run_encoding("cl100k_base"), 10); }
Test(tiktoken, o200k_base) { cr_expect_eq(run_encoding("o200k_base"), 10); }

/* Ordinary encoding through tok_bpe_encode directly agrees with tok_encode,
 * and a special token's text is plain text there. */
Test(tiktoken, direct_encoder) {
    tok *t = NULL;
    av_err err = {0};
    cr_assert_eq(tok_load_tiktoken(shared_path("vocab/tiktoken/cl100k_base.tiktoken"), &t, &err), 0, "%s", err.msg);
    const char *s = "hello <|endoftext|> world  \n\n";
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0, cap = 0;
    cr_assert_eq(tok_bpe_encode(t, s, strlen(s), &a, &na, &cap), 0);
    tok_opts o = {0, 0};
    cr_assert_eq(tok_encode(t, s, strlen(s), &o, &b, &nb, &err), 0);
    cr_assert_eq(na, nb);
    cr_assert(!memcmp(a, b, na * sizeof *a));
    for (size_t i = 0; i < na; i++) cr_expect(a[i] < 100256, "special id %d from ordinary text", a[i]);
    o.parse_special = 1;
    free(b);
    cr_assert_eq(tok_encode(t, s, strlen(s), &o, &b, &nb, &err), 0);
    int found = 0;
    for (size_t i = 0; i < nb; i++) found |= b[i] == 100257;
    cr_expect(found, "<|endoftext|> not recognised with parse_special");
    free(a);
    free(b);
    tok_free(t);
}

/* ---- loader validation ---- */

static int load_pair(const char *tiktoken, const char *json, av_err *err) {
    char dir[] = "/tmp/anvil-tt-XXXXXX";
    cr_assert(mkdtemp(dir));
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/x.tiktoken", dir);
    snprintf(p2, sizeof p2, "%s/x.json", dir);
    cr_assert_eq(write_bytes(p1, tiktoken, strlen(tiktoken)), 0);
    if (json) cr_assert_eq(write_bytes(p2, json, strlen(json)), 0);
    tok *t = NULL;
    int rc = tok_load_tiktoken(p1, &t, err);
    if (rc == 0) {
        /* "ab" = rank 2 merges from "a" + "b" */
        int32_t *ids = NULL;
        size_t n = 0;
        tok_opts o = {0, 0};
        cr_assert_eq(tok_encode(t, "ab", 2, &o, &ids, &n, err), 0);
        cr_expect(n == 1 && ids[0] == 2);
        free(ids);
    }
    tok_free(t);
    unlink(p1);
    unlink(p2);
    rmdir(dir);
    return rc;
}

static const char *ok_json = "{\"pat_str\": \"\\\\S+|\\\\s+\", \"special_tokens\": {\"<|end|>\": 5}}";

Test(tiktoken_loader, minimal_ok) {
    av_err err = {0};
    cr_expect_eq(load_pair("YQ== 0\nYg== 1\nYWI= 2\n", ok_json, &err), 0, "%s", err.msg);
}

Test(tiktoken_loader, bad_base64) {
    av_err err = {0};
    cr_expect_eq(load_pair("YQ== 0\nY!== 1\nYWI= 2\n", ok_json, &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, "line 2") && strstr(err.msg, "base64"), "%s", err.msg);
}

Test(tiktoken_loader, duplicate_rank) {
    av_err err = {0};
    cr_expect_eq(load_pair("YQ== 0\nYg== 0\nYWI= 2\n", ok_json, &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, "duplicate rank") && strstr(err.msg, "x.tiktoken"), "%s", err.msg);
}

Test(tiktoken_loader, duplicate_token) {
    av_err err = {0};
    cr_expect_eq(load_pair("YQ== 0\nYQ== 1\nYWI= 2\n", ok_json, &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, "line 2") && strstr(err.msg, "duplicate token"), "%s", err.msg);
}

Test(tiktoken_loader, gap_in_ranks) {
    av_err err = {0};
    cr_expect_eq(load_pair("YQ== 0\nYg== 1\nYWI= 3\n", ok_json, &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, "line 3") && strstr(err.msg, "dense"), "%s", err.msg);
}

Test(tiktoken_loader, bad_rank_and_json) {
    av_err err = {0};
    cr_expect_eq(load_pair("YQ== 0\nYg== x1\n", ok_json, &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, "bad rank"), "%s", err.msg);
    cr_expect_eq(load_pair("YQ== 0\nYg== 1\nYWI= 2\n", NULL, &err), AV_EIO);
    cr_expect(strstr(err.msg, "x.json"), "%s", err.msg);
    cr_expect_eq(load_pair("YQ== 0\nYg== 1\nYWI= 2\n", "{\"special_tokens\": {}}", &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, "pat_str"), "%s", err.msg);
    cr_expect_eq(load_pair("YQ== 0\nYg== 1\nYWI= 2\n", "{\"pat_str\": \"\\\\S+\", \"special_tokens\": {\"<s>\": 1}}",
                           &err), AV_EFORMAT);
    cr_expect_eq(load_pair("YQ== 0\nYg== 1\nYWI= 2\n", "{\"pat_str\": \"(\"}", &err), AV_EFORMAT);
}

/* ---- pre-tokenizer properties ---- */

typedef struct { const char *base; size_t pos; int bad; size_t n; } tiling;

static int on_piece(void *ud, const char *s, size_t n) {
    tiling *ti = ud;
    if (n == 0 || s != ti->base + ti->pos) ti->bad = 1;
    ti->pos += n;
    ti->n++;
    return 0;
}

static const char *tricky[] = {
    "don't I'LL we've they're she'd it's I'm", "1234567 12345678901234567890 3.14159 \xd9\xa1\xd9\xa2\xd9\xa3",
    "a  b   c    d\t\t\n\n\r\n   \n  ", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad"
    "\xe3\x82\xb9\xe3\x83\x88 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
    "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 \xf0\x9f\x87\xa9\xf0\x9f\x87\xaa 1\xef\xb8\x8f\xe2\x83\xa3",
    "NEL a\xc2\x85" "b NBSP a\xc2\xa0" "b", "   ", "x", "", "Caf\x65\xcc\x81 \xe1\xba\x9e stra\xc3\x9f" "e <|endoftext|>",
};

static const char *pre_names[] = {"default", "gpt-2", "llama-bpe", "qwen2", "falcon", "starcoder", "refact",
                                  "deepseek-llm", "deepseek-coder", "deepseek-v3", "mpt", "gpt-4o", "tekken",
                                  "chameleon", "superbpe", "bloom", "viking", "seed-coder", "bailingmoe"};

Test(tok_pre, pieces_tile_input) {
    for (size_t a = 0; a < sizeof pre_names / sizeof pre_names[0]; a++) {
        tok_pre *p = NULL;
        av_err err = {0};
        cr_assert_eq(tok_pre_new(pre_names[a], &p, &err), 0, "%s: %s", pre_names[a], err.msg);
        for (size_t i = 0; i < sizeof tricky / sizeof tricky[0]; i++) {
            tiling ti = {tricky[i], 0, 0, 0};
            cr_assert_eq(tok_pre_split(p, tricky[i], strlen(tricky[i]), on_piece, &ti), 0);
            cr_expect(!ti.bad && ti.pos == strlen(tricky[i]), "%s on '%s': pieces do not tile the input",
                      pre_names[a], tricky[i]);
        }
        tok_pre_free(p);
    }
}

Test(tok_pre, unknown_name_and_bad_pattern) {
    tok_pre *p = NULL;
    av_err err = {0};
    cr_expect_eq(tok_pre_new("no-such-pre", &p, &err), AV_EUNSUPPORTED);
    cr_expect(strstr(err.msg, "no-such-pre"), "%s", err.msg);
    const char *bad = "(?<";
    cr_expect_eq(tok_pre_new_patterns(&bad, 1, &p, &err), AV_EFORMAT);
    cr_expect_null(p);
}

/* Empty matches (superbpe's lookahead) split without producing empty pieces;
 * a callback's non-zero return stops the split and is passed through. */
static int stop_at_2(void *ud, const char *s, size_t n) {
    (void)s; (void)n;
    return ++*(int *)ud == 2 ? 7 : 0;
}

Test(tok_pre, empty_matches_and_abort) {
    tok_pre *p = NULL;
    av_err err = {0};
    cr_assert_eq(tok_pre_new("superbpe", &p, &err), 0, "%s", err.msg);
    const char *s = "1234567 89";
    tiling ti = {s, 0, 0, 0};
    cr_assert_eq(tok_pre_split(p, s, strlen(s), on_piece, &ti), 0);
    cr_expect(!ti.bad && ti.pos == strlen(s));
    int calls = 0;
    cr_expect_eq(tok_pre_split(p, s, strlen(s), stop_at_2, &calls), 7);
    cr_expect_eq(calls, 2);
    tok_pre_free(p);
}

/* Long runs (whitespace, digits, one letter, punctuation) must not blow the
 * JIT stack nor take quadratic time. superbpe's "(?=(\\d{3})+(?!\\d))" is
 * quadratic in a digit run by construction (as in llama.cpp), so it is skipped
 * for digits. */
Test(tok_pre, long_runs) {
    size_t n = 1 << 18;
    char *s = malloc(n);
    const char fill[] = {' ', '7', 'a', '!'};
    for (size_t f = 0; f < 4; f++) {
        memset(s, fill[f], n);
        s[n - 1] = 'x';
        for (size_t a = 0; a < sizeof pre_names / sizeof pre_names[0]; a++) {
            if (fill[f] == '7' && !strcmp(pre_names[a], "superbpe")) continue;
            tok_pre *p = NULL;
            av_err err = {0};
            cr_assert_eq(tok_pre_new(pre_names[a], &p, &err), 0);
            tiling ti = {s, 0, 0, 0};
            cr_assert_eq(tok_pre_split(p, s, n, on_piece, &ti), 0, "%s fill '%c'", pre_names[a], fill[f]);
            cr_expect(!ti.bad && ti.pos == n);
            tok_pre_free(p);
        }
    }
    free(s);
}

/* Invalid UTF-8 never reaches PCRE2 unchecked: bytes become U+FFFD as in
 * llama.cpp, so encoding still succeeds and decodes to valid text. */
Test(tiktoken, invalid_utf8_input) {
    tok *t = NULL;
    av_err err = {0};
    cr_assert_eq(tok_load_tiktoken(shared_path("vocab/tiktoken/gpt2.tiktoken"), &t, &err), 0, "%s", err.msg);
    const char s[] = "ok \xff\xfe bad \xc3 trunc \xed\xa0\x80 surrogate \xe2\x82";
    int32_t *ids = NULL;
    size_t n = 0;
    tok_opts o = {0, 0};
    cr_assert_eq(tok_encode(t, s, sizeof s - 1, &o, &ids, &n, &err), 0, "%s", err.msg);
    char *dec = NULL;
    size_t dl;
    cr_assert_eq(tok_decode(t, ids, n, 1, &dec, &dl, &err), 0);
    cr_expect(strstr(dec, "\xef\xbf\xbd\xef\xbf\xbd bad \xef\xbf\xbd trunc"), "%s", dec);
    free(dec);
    free(ids);
    tok_free(t);
}

/* One tok used from several threads at once gives the serial results. */
Test(tiktoken, concurrent_encode) {
    tok *t = NULL;
    av_err err = {0};
    cr_assert_eq(tok_load_tiktoken(shared_path("vocab/tiktoken/o200k_base.tiktoken"), &t, &err), 0, "%s", err.msg);
    size_t len;
    unsigned char *text = slurp(shared_path("reference/tokenizer/inputs/tokenizer_edge_cases.txt"), &len);
    cr_assert(text);
    enum { NT = 16 };
    int32_t *ids[NT] = {0};
    size_t n[NT] = {0};
    int rcs[NT];
    tok_opts o = {0, 1};
#pragma omp parallel for num_threads(8)
    for (int i = 0; i < NT; i++) {
        av_err e;
        rcs[i] = tok_encode(t, (const char *)text, len, &o, &ids[i], &n[i], &e);
    }
    for (int i = 0; i < NT; i++) {
        cr_expect_eq(rcs[i], 0);
        cr_expect(n[i] == n[0] && !memcmp(ids[i], ids[0], n[0] * sizeof *ids[0]), "thread %d differs", i);
    }
    for (int i = 0; i < NT; i++) free(ids[i]);
    free(text);
    tok_free(t);
}
